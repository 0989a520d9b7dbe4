"""A TCP proxy on loopback that counts the bytes it relays, both ways, and the HTTP
requests it carries; it can also add a fixed latency to each direction.

B4 compares the bytes a cold `cat` through reefd moves with the bytes of a `git clone`.
Pointing both clients at this proxy instead of the hub counts every byte on the wire
(HTTP headers included) the same way for both, without trusting either side's own
accounting. Only loopback addresses are accepted, upstream and for listening.

B10 counts requests (request lines in the client's bytes: against a real GitLab, requests
are the cost); B11 adds `delay_s` to every byte each way, as a link with that one-way
latency does (bytes are held, not throttled: a long transfer pays the delay once).

With log=True the proxy also keeps a timeline of the requests (`timeline()`): when each
request line reached the proxy (the client sent it) and when the last byte of its answer
reached the client, and the bytes each way. Without HTTP pipelining (neither git nor
reefd pipelines) the bytes a connection carries between two request lines belong to the
first, which is how answers are matched to requests. B11 uses it to show which requests
wait on which.
"""

import queue
import re
import socket
import threading
import time

REQUEST_LINE = re.compile(rb"(?:GET|POST|HEAD|PUT|PATCH|DELETE) /[!-~]* HTTP/1\.[01]\r\n")


class CountingProxy:
    def __init__(self, upstream_port, upstream_host="127.0.0.1", delay_s=0.0, log=False):
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
        self.requests = 0
        self.delay_s = delay_s
        self.log = [] if log else None
        self.t0 = time.monotonic()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def reset(self):
        with self.lock:
            self.up = self.down = self.conns = self.requests = 0
            if self.log is not None:
                self.log = []
            self.t0 = time.monotonic()

    def snapshot(self):
        with self.lock:
            return {"up": self.up, "down": self.down, "total": self.up + self.down,
                    "requests": self.requests,
                    "connections": self.conns}

    def timeline(self):
        """The requests since the last reset, in the order they started: conn (the
        connection's number), start and end (seconds since the reset: request line seen,
        last answer byte delivered), what (method and path), up and down (bytes)."""
        with self.lock:
            log = list(self.log or [])
            t0 = self.t0
        reqs, last = [], {}
        for kind, conn, t, n, line in sorted(log, key=lambda ev: ev[2]):
            if kind == "req":
                r = {"conn": conn, "start": round(t - t0, 4), "end": round(t - t0, 4),
                     "what": line, "up": 0, "down": 0}
                reqs.append(r)
                last[conn] = r
            elif conn in last:
                r = last[conn]
                r[kind] += n
                if kind == "down":
                    r["end"] = round(t - t0, 4)
        return reqs

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
                conn = self.conns
            for a, b, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump, args=(a, b, way, conn),
                                 daemon=True).start()

    def _count(self, tail, data, conn):
        """Request lines in the client's stream; tail: the end of what came before, so a
        line split across two reads counts once."""
        buf = tail + data
        lines = [m for m in REQUEST_LINE.finditer(buf) if m.end() > len(tail)]
        if lines or self.log is not None:
            now = time.monotonic()
            with self.lock:
                self.requests += len(lines)
                if self.log is not None:
                    # the bytes before the first new request line end the one before
                    first = lines[0].start() - len(tail) if lines else len(data)
                    if first > 0:
                        self.log.append(("up", conn, now, first, None))
                    for k, m in enumerate(lines):
                        end = lines[k + 1].start() if k + 1 < len(lines) else len(buf)
                        what = m.group(0).split(b" ")[:2]
                        self.log.append(("req", conn, now, 0,
                                         b" ".join(what).decode("ascii", "replace")[:200]))
                        self.log.append(("up", conn, now, end - max(m.start(), len(tail)),
                                         None))
        return buf[-2048:]

    def _logged(self, conn, n):
        if self.log is not None:
            now = time.monotonic()
            with self.lock:
                self.log.append(("down", conn, now, n, None))

    def _pump(self, src, dst, way, conn):
        tail = b""
        held = None
        if self.delay_s:
            held = queue.Queue()

            def sender():
                while True:
                    at, data = held.get()
                    if data is None:
                        return
                    wait = at + self.delay_s - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    if way == "down":
                        self._logged(conn, len(data))  # before the client can answer
                    try:
                        dst.sendall(data)
                    except OSError:
                        return

            out = threading.Thread(target=sender, daemon=True)
            out.start()
        try:
            while True:
                data = src.recv(1 << 18)
                if not data:
                    break
                if way == "up":
                    tail = self._count(tail, data, conn)
                if held is not None:
                    held.put((time.monotonic(), data))
                else:
                    if way == "down":
                        self._logged(conn, len(data))
                    dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            if held is not None:
                held.put((0, None))
                out.join(timeout=30)
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
