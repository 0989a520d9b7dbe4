"""A TCP proxy on loopback that counts the bytes it relays, both ways.

B4 compares the bytes a cold `cat` through reefd moves with the bytes of a `git clone`.
Pointing both clients at this proxy instead of the hub counts every byte on the wire
(HTTP headers included) the same way for both, without trusting either side's own
accounting. Only loopback addresses are accepted, upstream and for listening.
"""

import socket
import threading


class CountingProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1"):
        if upstream_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the proxy only relays to loopback")
        self.upstream = (upstream_host, upstream_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.up = 0      # client -> server
        self.down = 0    # server -> client
        self.conns = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def reset(self):
        with self.lock:
            self.up = self.down = self.conns = 0

    def snapshot(self):
        with self.lock:
            return {"up": self.up, "down": self.down, "total": self.up + self.down,
                    "connections": self.conns}

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self.lock:
                self.conns += 1
            for a, b, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(a, b, way), daemon=True).start()

    def _pump(self, src, dst, way):
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            # Half-close so the other direction can finish (HTTP bodies after a request).
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass
            if way == "down":
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
