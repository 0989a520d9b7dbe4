"""An HTTP reverse proxy in front of a real reef-hub that behaves like other GitLab
servers do: one that does not speak git's protocol v2 (drops the Git-Protocol header, as a
proxy or an old GitLab does, so upload-pack answers v0), one without GraphQL (404, as
GitLab before the blobs field), one whose upload-pack answers arrive damaged; one that
ignores Idempotency-Key (as GitLab) and loses or delays answers after the server acted; one without
the management API (/api/v1 is 404, as on GitLab). Tree listings lose the hub's `size` field,
as GitLab sends none. It counts
requests per kind, so tests can assert what reefd asked. Loopback only."""

import http.client
import http.server
import json
import re
import threading
import time


class GitLabProxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.no_v2 = False          # strip Git-Protocol: upload-pack answers protocol v0
        self.no_graphql = False     # /api/graphql answers 404
        self.corrupt_packs = False  # flip a byte in the middle of every upload-pack answer
        self.tree_sizes = False     # GitLab's tree entries carry no size; the hub's do
        self.no_idempotency = False  # strip Idempotency-Key, as GitLab ignores it
        self.no_v1 = False          # /api/v1 answers 404, as on a GitLab without the service
        self.drop = None            # (regex on "METHOD path", n): forward the first n
        #                             matching requests, then close without an answer
        self.delay = None           # (regex on "METHOD path", seconds): hold the answer
        #                             of matching requests that long after the server acted
        self.lock = threading.Lock()
        self.log = []               # (method, path)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy.relay(self)

            def do_HEAD(self):
                proxy.relay(self)

            def do_POST(self):
                proxy.relay(self)

            def do_PUT(self):
                proxy.relay(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, pattern):
        with self.lock:
            return sum(1 for m, p in self.log if re.search(pattern, f"{m} {p}"))

    def reset(self):
        with self.lock:
            self.log.clear()

    def relay(self, h):
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else None
        path = h.path
        with self.lock:
            self.log.append((h.command, path.split("?")[0]))
        if self.no_v1 and path.startswith("/api/v1/"):
            data = b'{"message":"404 Not Found"}'
            h.send_response(404)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if self.no_graphql and path.startswith("/api/graphql"):
            data = b'{"message":"404 Not Found"}'
            h.send_response(404)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in ("host", "connection", "content-length")}
        if self.no_v2:
            headers = {k: v for k, v in headers.items() if k.lower() != "git-protocol"}
        if self.no_idempotency:
            headers = {k: v for k, v in headers.items() if k.lower() != "idempotency-key"}
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        conn.request(h.command, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if self.delay and re.search(self.delay[0], f"{h.command} {path}"):
            time.sleep(self.delay[1])
        with self.lock:
            drop = self.drop and self.drop[1] > 0 and re.search(self.drop[0],
                                                                f"{h.command} {path}")
            if drop:
                self.drop = (self.drop[0], self.drop[1] - 1)
        if drop:  # the server acted; its answer is lost on the way
            h.close_connection = True
            return
        if (not self.tree_sizes and r.status == 200 and
                re.match(r"/api/v4/projects/[^/]+/repository/tree", path)):
            items = json.loads(data)
            for it in items:
                it.pop("size", None)
            data = json.dumps(items).encode()
        if self.corrupt_packs and path.endswith("/git-upload-pack") and len(data) > 64:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0x5A]) + data[mid + 1:]
        h.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)
