"""Git LFS as GitLab serves it from object storage, for tests.

ObjectStore: a small S3-like store. Objects are read only through presigned URLs
(/bucket/<key>?X-Amz-Expires=..&X-Amz-Date=..&X-Amz-Signature=<HMAC-SHA256>); an expired
signature is 403 "Request has expired", a wrong one 403; a request carrying an
Authorization header is 400, as S3 refuses a presigned request with a second
authentication mechanism. HTTP ranges; an optional bandwidth cap; every request's headers
are logged so tests can check that no credential ever reached it.

LfsFront: a GitLab in front of a real reef-hub. Everything is passed to the hub, except
the LFS batch API: the hub's answer is taken, each object's bytes are copied from the hub
into the store, and the download action is rewritten the way GitLab answers with object
storage (docs.gitlab.com administration/lfs "Storing LFS objects in remote object
storage", administration/object_storage "Proxy download"):
  mode "direct":   href is a presigned URL on the store, no header (GitLab 16.x+);
  mode "redirect": href stays on GitLab with an Authorization header, and GitLab's
                   /gitlab-lfs/objects/<oid> answers 302 to the presigned URL (older
                   GitLab, proxy_download off);
  expires_in:      what the action announces; sign_ttl: how long the signature really
                   lasts (shorter than announced: the store refuses before the client
                   expected it).
Job artifacts asked with "Range: bytes=0-" are answered 206, as Workhorse does."""

import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import threading
import time
import urllib.parse


class _Server:
    def _serve(self, handler_cls):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _handler(owner):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def log_message(self, *a):
            pass

        def do_GET(self):
            owner.route(self, "GET")

        def do_HEAD(self):
            owner.route(self, "HEAD")

        def do_POST(self):
            owner.route(self, "POST")
    return H


def _send(h, status, body=b"", headers=None, ctype="application/json"):
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


class ObjectStore(_Server):
    def __init__(self):
        self.key = os.urandom(32)
        self.objects = {}
        self.log = []          # (method, path, {header: value})
        self.rate = 0          # bytes per second, 0: unlimited
        self.lock = threading.Lock()
        self._serve(_handler(self))

    def put(self, name, data):
        self.objects[name] = data

    def _sig(self, name, date, expires):
        msg = f"GET\n/bucket/{name}\n{date}\n{expires}".encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def presign(self, name, ttl, base=None):
        date, expires = int(time.time()), int(ttl)
        q = urllib.parse.urlencode({
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256", "X-Amz-Date": date,
            "X-Amz-Expires": expires, "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._sig(name, date, expires)})
        return f"{base or self.url}/bucket/{name}?{q}"

    def headers_seen(self):
        with self.lock:
            return [dict(e[2]) for e in self.log]

    def route(self, h, method):
        path, _, query = h.path.partition("?")
        with self.lock:
            self.log.append((method, path, {k.lower(): v for k, v in h.headers.items()}))
        if h.headers.get("Authorization"):
            return _send(h, 400, b"<Error><Code>InvalidArgument</Code><Message>Only one auth "
                         b"mechanism allowed</Message></Error>", ctype="application/xml")
        m = re.fullmatch(r"/bucket/([0-9a-f]{64})", path)
        q = dict(urllib.parse.parse_qsl(query))
        if not m or method not in ("GET", "HEAD") or m.group(1) not in self.objects:
            return _send(h, 404, b"<Error><Code>NoSuchKey</Code></Error>",
                         ctype="application/xml")
        name = m.group(1)
        try:
            date, expires = int(q["X-Amz-Date"]), int(q["X-Amz-Expires"])
            ok = hmac.compare_digest(q["X-Amz-Signature"], self._sig(name, date, expires))
        except (KeyError, ValueError):
            ok = False
        if not ok:
            return _send(h, 403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>",
                         ctype="application/xml")
        if time.time() > date + expires:
            return _send(h, 403, b"<Error><Code>AccessDenied</Code><Message>Request has "
                         b"expired</Message></Error>", ctype="application/xml")
        data = self.objects[name]
        start, rng = 0, h.headers.get("Range")
        mr = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if mr:
            start = int(mr.group(1))
            if start >= len(data) and data:
                return _send(h, 416, b"")
        h.send_response(206 if mr else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        if mr:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if method == "HEAD":
            return
        pos = start
        try:
            while pos < len(data):
                n = min(64 * 1024, len(data) - pos)
                h.wfile.write(data[pos:pos + n])
                pos += n
                if self.rate:
                    time.sleep(n / self.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True


class LfsFront(_Server):
    """A GitLab whose LFS objects live in store; everything else is the hub's."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}

    def __init__(self, hub_url, store, mode="direct", expires_in=3600, sign_ttl=None):
        self.hub = urllib.parse.urlsplit(hub_url)
        self.store = store
        self.mode = mode
        self.expires_in = expires_in
        self.sign_ttl = sign_ttl
        self.batches = []        # objects asked per batch request
        self.redirect_auth = {}  # oid -> the Authorization its action named
        self.lock = threading.Lock()
        self._serve(_handler(self))

    def _hub(self, method, path, headers, body=None):
        c = http.client.HTTPConnection(self.hub.hostname, self.hub.port, timeout=60)
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, r.getheaders(), data

    def route(self, h, method):
        path, _, _query = h.path.partition("?")
        body = None
        if method == "POST":
            body = h.rfile.read(int(h.headers.get("Content-Length", "0")))
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            return self.batch(h, path, body)
        m = re.fullmatch(r"(/.+\.git)/gitlab-lfs/objects/([0-9a-f]{64})", path)
        if m and self.mode == "redirect":
            want = self.redirect_auth.get(m.group(2))
            if not want or h.headers.get("Authorization") != want:
                return _send(h, 401, b'{"message":"401 Unauthorized"}')
            url = self.store.presign(m.group(2), self.sign_ttl or self.expires_in)
            return _send(h, 302, b"", {"Location": url})
        headers = {k: v for k, v in h.headers.items() if k.lower() not in self.HOP}
        status, rh, data = self._hub(method, h.path, headers, body)
        partial = (re.fullmatch(r"/api/v4/projects/\d+/jobs/\d+/artifacts", path)
                   and h.headers.get("Range") == "bytes=0-" and status == 200 and data)
        h.send_response(206 if partial else status)
        for k, v in rh:
            if k.lower() not in self.HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        if partial:
            h.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def batch(self, h, path, body):
        headers = {k: v for k, v in h.headers.items() if k.lower() not in self.HOP}
        status, rh, data = self._hub("POST", path, headers, body)
        if status != 200:
            return _send(h, status, data, ctype="application/vnd.git-lfs+json")
        answer = json.loads(data)
        with self.lock:
            self.batches.append(len(answer.get("objects", [])))
        for o in answer.get("objects", []):
            dl = o.get("actions", {}).get("download")
            if not dl:
                continue
            if o["oid"] not in self.store.objects:
                u = urllib.parse.urlsplit(dl["href"])
                st, _, blob = self._hub("GET", u.path, dict(dl.get("header", {})))
                assert st == 200 and hashlib.sha256(blob).hexdigest() == o["oid"], st
                self.store.put(o["oid"], blob)
            if self.mode == "redirect":
                auth = dl.get("header", {}).get("Authorization")
                self.redirect_auth[o["oid"]] = auth
                dl["href"] = f"{self.url}{path[:-len('/info/lfs/objects/batch')]}" \
                             f"/gitlab-lfs/objects/{o['oid']}"
                dl["header"] = {"Authorization": auth}
            else:
                dl["href"] = self.store.presign(o["oid"], self.sign_ttl or self.expires_in)
                dl.pop("header", None)
            dl["expires_in"] = self.expires_in
        _send(h, 200, json.dumps(answer).encode(), ctype="application/vnd.git-lfs+json")
