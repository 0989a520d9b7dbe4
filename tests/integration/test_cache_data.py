"""The cache's data path (daemon/cache.c, daemon/stream.c), driven through
tests/unit/store/test_cache_live: Git LFS files shown as their objects (against reef-hub
with real git-lfs pushes, and against a fake server), large objects streamed to their
first reader with HTTP ranges, shared downloads, the bounded cache and its LRU eviction,
SIGKILL during downloads, hostile servers (truncated, wrong, stalled bodies) and branch
polling with backoff. After every test that downloads, a checker hashes every object in
the cache directory: nothing unverified is ever stored."""

import hashlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import zlib
from pathlib import Path
from shutil import which

import pytest

from conftest import git
from test_cache_layer import LIVE_BIN, Live, blob_id, closing, tree_id

TOKEN = "fake-token-abcdefghijklmnop"
MiB = 1 << 20


class Live2(Live):
    """test_cache_live with cache options from the environment."""

    def __init__(self, server, cache_dir, token, ttl_ms=60000, env=None):
        e = dict(os.environ)
        e.pop("REEF_TOKEN", None)
        if token is not None:
            e["REEF_TOKEN"] = token
        e.update(env or {})
        self.token = token
        self.proc = subprocess.Popen([str(LIVE_BIN), server, str(cache_dir), str(ttl_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=e)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def lives():
    yield from closing(Live2)


def check_cache(cache: Path):
    """Hashes every stored object against its name; returns how many were checked."""
    n = 0
    for f in (cache / "raw").glob("*/*"):
        data = f.read_bytes()
        assert blob_id(data) == f.parent.name + f.name, f"corrupt raw object {f}"
        n += 1
    for f in (cache / "lfs").glob("*/*"):
        assert hashlib.sha256(f.read_bytes()).hexdigest() == f.parent.name + f.name, \
            f"corrupt LFS object {f}"
        n += 1
    for f in (cache / "git" / "objects").glob("[0-9a-f][0-9a-f]/*"):
        raw = zlib.decompress(f.read_bytes())
        assert hashlib.sha1(raw).hexdigest() == f.parent.name + f.name, f"corrupt loose {f}"
        n += 1
    return n


def eventually(cond, timeout=5.0):
    """A verified object is stored just after its last byte was served: wait for it."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stored_bytes(cache: Path):
    return sum(f.stat().st_size for d in ("raw", "lfs", "git/objects")
               for f in (cache / d).glob("*/*") if f.is_file())


def lfs_pointer(data: bytes, legacy=False) -> bytes:
    url = "https://hawser.github.com/spec/v1" if legacy else "https://git-lfs.github.com/spec/v1"
    return (f"version {url}\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


def pattern(n: int, seed: int) -> bytes:
    block = hashlib.sha256(b"%d" % seed).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


class DataFake:
    """A GitLab that serves one flat repository of blobs and LFS objects, with HTTP
    ranges (or not), a bandwidth cap, and faults per object."""

    PID = 7
    COMMIT = "d00d" + "1" * 36

    def __init__(self, files, lfs):
        self.files = dict(files)  # name -> blob bytes (pointers included)
        self.lfs = dict(lfs)      # sha256 -> bytes
        self.ids = {n: blob_id(d) for n, d in self.files.items()}
        self.by_id = {i: n for n, i in self.ids.items()}
        self.ranges = True
        self.rate = 0             # bytes per second, 0: unlimited
        self.chunk = 64 * 1024    # bytes per write of a body
        self.fault = {}           # blob id or sha256 -> "truncate" | "corrupt" | "stall"
        self.branch = "ok"        # "ok" | "429"
        self.href_host = None     # another origin for LFS hrefs
        self.log = []             # (method, path, Range header)
        self.auth_seen = []
        self.lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.route(self, "GET")

            def do_HEAD(self):
                fake.route(self, "HEAD")

            def do_POST(self):
                fake.route(self, "POST")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def requests(self, path_part):
        with self.lock:
            return [e for e in self.log if path_part in e[1]]

    def json(self, h, obj, status=200, headers=None, ctype="application/json"):
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def body(self, h, data, key, head=False):
        start = 0
        rng = h.headers.get("Range")
        if self.ranges and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        if start >= len(data) and len(data):
            h.send_response(416)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        fault = self.fault.get(key)
        partial = bool(self.ranges and rng and len(data))
        h.send_response(206 if partial else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(data) - start))
        if self.ranges:
            h.send_header("Accept-Ranges", "bytes")
            if partial:
                h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        if fault == "corrupt":
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
        end = len(data)
        if fault in ("truncate", "stall"):
            end = max(start, len(data) // 2)
        pos, chunk = start, self.chunk
        try:
            while pos < end:
                n = min(chunk, end - pos)
                h.wfile.write(data[pos:pos + n])
                pos += n
                if self.rate:
                    time.sleep(n / self.rate)
            h.wfile.flush()
            if fault == "stall":
                time.sleep(30)
        except (BrokenPipeError, ConnectionResetError):
            pass
        h.close_connection = True

    def route(self, h, method):
        path, _, query = h.path.partition("?")
        with self.lock:
            self.log.append((method, path, h.headers.get("Range")))
        p = f"/api/v4/projects/{self.PID}"
        if path == "/api/v4/user":
            return self.json(h, {"id": 1, "username": "alice"})
        if path in ("/api/v4/projects/acme%2Fdata", p):
            return self.json(h, {"id": self.PID, "path_with_namespace": "acme/data",
                                 "default_branch": "main"})
        if path == p + "/repository/branches/main":
            if self.branch == "429":
                return self.json(h, {"message": "429 Too Many Requests"}, 429,
                                 {"Retry-After": "3"})
            return self.json(h, {"name": "main", "commit": {"id": self.COMMIT}})
        if path == p + "/repository/tree":
            items = [{"id": i, "name": n, "path": n, "type": "blob", "mode": "100644",
                      "size": len(self.files[n])} for n, i in self.ids.items()]
            return self.json(h, items)
        if path.startswith(p + "/repository/files/") and method == "HEAD":
            name = path[len(p + "/repository/files/"):]
            if name in self.files:
                return self.json(h, {}, headers={"X-Gitlab-Blob-Id": self.ids[name],
                                                 "X-Gitlab-Size": str(len(self.files[name]))})
        if path.startswith(p + "/repository/blobs/") and path.endswith("/raw"):
            oid = path.split("/")[-2]
            if oid in self.by_id:
                return self.body(h, self.files[self.by_id[oid]], oid, method == "HEAD")
        if path == "/acme/data.git/info/lfs/objects/batch" and method == "POST":
            req = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
            with self.lock:
                self.auth_seen.append(h.headers.get("Authorization"))
            objs = []
            for o in req["objects"]:
                if o["oid"] not in self.lfs:
                    objs.append({"oid": o["oid"], "size": o["size"],
                                 "error": {"code": 404, "message": "Object does not exist"}})
                    continue
                base = self.href_host or self.url
                objs.append({"oid": o["oid"], "size": o["size"], "authenticated": True,
                             "actions": {"download": {
                                 "href": f"{base}/acme/data.git/gitlab-lfs/objects/{o['oid']}",
                                 "header": {"Authorization": "Basic action-secret"},
                                 "expires_in": 3600}}})
            return self.json(h, {"transfer": "basic", "objects": objs},
                             ctype="application/vnd.git-lfs+json")
        if path.startswith("/acme/data.git/gitlab-lfs/objects/"):
            oid = path.rsplit("/", 1)[1]
            if h.headers.get("Authorization") != "Basic action-secret":
                return self.json(h, {"message": "401 Unauthorized"}, 401)
            if oid in self.lfs:
                return self.body(h, self.lfs[oid], oid)
        if method == "POST":  # GitLab's GraphQL and git routes: not here (read the body
            h.rfile.read(int(h.headers.get("Content-Length", 0)))  # to keep the connection)
        return self.json(h, {"message": "404 Not Found"}, 404)


BIG_LFS = pattern(12 * MiB + 5, 1)
SMALL_LFS = b"the real content of a small LFS object\n"
BIG_BLOB = pattern(16 * MiB + 3, 2)


def data_files():
    files = {
        "big.lfs": lfs_pointer(BIG_LFS),
        "small.lfs": lfs_pointer(SMALL_LFS, legacy=True),
        # looks like a pointer but is not one (keys out of order): shown as itself
        "fake.lfs": (b"version https://git-lfs.github.com/spec/v1\nsize 5\noid sha256:"
                     + b"a" * 64 + b"\n"),
        "missing.lfs": lfs_pointer(b"nobody has this object"),
        "big.bin": BIG_BLOB,
        "plain.txt": b"plain\n",
        # git-lfs smudges only paths with this attribute: without it the pointers are text
        ".gitattributes": b"*.lfs filter=lfs diff=lfs merge=lfs -text\n",
    }
    for i in range(5):
        files[f"part{i}.bin"] = pattern(3 * MiB + i, 10 + i)
    files["huge.bin"] = pattern(14 * MiB, 30)
    lfs = {hashlib.sha256(d).hexdigest(): d for d in (BIG_LFS, SMALL_LFS)}
    return files, lfs


@pytest.fixture
def dfake():
    files, lfs = data_files()
    f = DataFake(files, lfs)
    yield f
    f.close()


def start(dfake, lives, tmp_path, env=None, cache=None):
    live = lives(dfake.url, cache or tmp_path / "cache", TOKEN, env=env)
    commit = live.ok("resolve", DataFake.PID, "branch", "main")
    assert commit == DataFake.COMMIT
    return live, commit


def test_lfs_files_show_their_objects(dfake, lives, tmp_path):
    live, c = start(dfake, lives, tmp_path)
    big_oid = hashlib.sha256(BIG_LFS).hexdigest()
    size, blob_size, oid = live.ok("info", 7, c, "big.lfs").split()
    assert (int(size), int(blob_size), oid) == (len(BIG_LFS), len(dfake.files["big.lfs"]),
                                                big_oid)
    # the legacy version URL is a pointer too
    assert live.ok("info", 7, c, "small.lfs").split()[2] == hashlib.sha256(SMALL_LFS).hexdigest()
    # a malformed pointer is the plain blob it is
    assert live.ok("info", 7, c, "fake.lfs").split() == [str(len(dfake.files["fake.lfs"]))] * 2 + ["-"]
    out = tmp_path / "out"
    assert live.ok("ocat", 7, c, "small.lfs", out).split()[0] == str(len(SMALL_LFS))
    assert out.read_bytes() == SMALL_LFS
    assert live.ok("ocat", 7, c, "fake.lfs", out).split()[0] == str(len(dfake.files["fake.lfs"]))
    assert out.read_bytes() == dfake.files["fake.lfs"]
    assert live.ok("ocat", 7, c, "big.lfs", out) == f"{len(BIG_LFS)} 1"
    assert out.read_bytes() == BIG_LFS
    assert eventually((tmp_path / "cache" / "lfs" / big_oid[:2] / big_oid[2:]).exists)
    # the batch API got Basic auth with the token; the object the action's header
    assert dfake.auth_seen and all(a and a.startswith("Basic ") for a in dfake.auth_seen)
    assert "action-secret" not in dfake.auth_seen[0]
    # cached: read again without the server asked for the object
    n = len(dfake.requests("/gitlab-lfs/objects/"))
    assert live.ok("ocat", 7, c, "big.lfs", out) == f"{len(BIG_LFS)} 1"
    assert len(dfake.requests("/gitlab-lfs/objects/")) == n
    # an object the server lacks: ENOENT, not a pointer's bytes
    assert live.cmd("ocat", 7, c, "missing.lfs", out) == ("err", "ENOENT")
    assert check_cache(tmp_path / "cache") >= 2
    err = live.close()
    assert "action-secret" not in err


def test_lfs_href_elsewhere_is_refused(dfake, lives, tmp_path):
    # plain http to a host that is not the server (and not loopback) is refused;
    # object storage over https or on loopback: tests/integration/test_remote_lfs.py
    dfake.href_host = "http://192.0.2.1:9"
    live, c = start(dfake, lives, tmp_path)
    assert live.cmd("ocat", 7, c, "big.lfs", tmp_path / "out") == ("err", "EIO")
    assert "plain http" in live.close()


def test_far_read_uses_a_range(dfake, lives, tmp_path):
    dfake.rate = 4 * MiB  # the whole blob takes ~4 s
    live, c = start(dfake, lives, tmp_path)
    out = tmp_path / "out"
    t0 = time.monotonic()
    n, _ms = live.ok("oread", 7, c, "big.bin", 15 * MiB, 65536, out).split()
    assert time.monotonic() - t0 < 2.5
    assert out.read_bytes() == BIG_BLOB[15 * MiB:15 * MiB + 65536]
    raw = dfake.requests(f"/blobs/{blob_id(BIG_BLOB)}/raw")
    assert any(r[2] and r[2] != "bytes=0-" for r in raw), raw
    # the whole object then: right bytes, verified and stored, nothing fetched twice
    assert live.ok("ocat", 7, c, "big.bin", out).split()[0] == str(len(BIG_BLOB))
    assert out.read_bytes() == BIG_BLOB
    stats = live.stats()
    assert stats["bytes_fetched"] <= len(BIG_BLOB) + 2 * MiB
    assert check_cache(tmp_path / "cache") >= 1
    live.close()


def test_slow_link_first_bytes_come_early(dfake, lives, tmp_path):
    """A large download is written in 256 KiB blocks, but bytes are not held back longer
    than a few tens of milliseconds: over a slow link (64 KiB/s, 4 KiB at a time) the
    first 4 KiB reach a reader long before a block would have filled (4 s)."""
    dfake.rate = 64 * 1024
    dfake.chunk = 4096
    live, c = start(dfake, lives, tmp_path)
    out = tmp_path / "out"
    t0 = time.monotonic()
    live.ok("oread", 7, c, "big.bin", 0, 4096, out)
    assert time.monotonic() - t0 < 1.5
    assert out.read_bytes() == BIG_BLOB[:4096]
    dfake.rate = 0  # the rest of the download, at full speed: close waits for it
    live.close()


def test_no_ranges_streams_from_the_start(dfake, lives, tmp_path):
    dfake.ranges = False
    dfake.rate = 16 * MiB
    live, c = start(dfake, lives, tmp_path)
    out = tmp_path / "out"
    n, _ms = live.ok("oread", 7, c, "big.bin", 10 * MiB, 4096, out).split()
    assert out.read_bytes() == BIG_BLOB[10 * MiB:10 * MiB + 4096]
    live.ok("ocat", 7, c, "big.bin", out)
    assert out.read_bytes() == BIG_BLOB
    assert len(dfake.requests(f"/blobs/{blob_id(BIG_BLOB)}/raw")) == 1
    live.close()


def test_concurrent_readers_share_one_download(dfake, lives, tmp_path):
    dfake.rate = 16 * MiB
    live, c = start(dfake, lives, tmp_path)
    assert live.ok("ocatn", 7, c, "big.lfs", 8) == hashlib.sha256(BIG_LFS).hexdigest()
    assert len(dfake.requests("/gitlab-lfs/objects/")) == 1
    assert live.ok("ocatn", 7, c, "big.bin", 8) == hashlib.sha256(BIG_BLOB).hexdigest()
    assert len(dfake.requests(f"/blobs/{blob_id(BIG_BLOB)}/raw")) == 1
    live.close()


@pytest.mark.parametrize("fault", ["truncate", "corrupt", "stall"])
def test_hostile_bodies_are_eio_in_bounded_time(dfake, lives, tmp_path, fault):
    big_oid = hashlib.sha256(BIG_LFS).hexdigest()
    dfake.fault[big_oid] = fault
    dfake.fault[blob_id(BIG_BLOB)] = fault
    live, c = start(dfake, lives, tmp_path, env={"REEF_STALL_S": "2"})
    out = tmp_path / "out"
    for name in ("big.lfs", "big.bin"):
        t0 = time.monotonic()
        assert live.cmd("ocat", 7, c, name, out) == ("err", "EIO")
        assert time.monotonic() - t0 < 15
    # one "not cached" per object (the failed requests themselves have their lines too);
    # the download's end notes it just after its reader got EIO: wait for it (bounded)
    deadline = time.monotonic() + 10
    while True:
        msgs = [e["message"] for e in live.stats()["last_errors"]]
        if sum("not cached" in m for m in msgs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum("not cached" in m for m in msgs) >= 2, msgs
    cache = tmp_path / "cache"
    bad = blob_id(BIG_BLOB)
    assert not any((cache / "lfs").glob("*/*"))
    assert not (cache / "raw" / bad[:2] / bad[2:]).exists()
    assert list((cache / "tmp").iterdir()) == []
    # the server mends: the same reads work, without a restart
    dfake.fault.clear()
    assert live.ok("ocat", 7, c, "big.lfs", out).split()[0] == str(len(BIG_LFS))
    assert out.read_bytes() == BIG_LFS
    check_cache(cache)
    err = live.close()
    assert "not cached" in err


def test_limit_evicts_least_recently_used(dfake, lives, tmp_path):
    limit = 10 * MiB
    live, c = start(dfake, lives, tmp_path, env={"REEF_CACHE_LIMIT": "10M"})
    cache = tmp_path / "cache"
    out = tmp_path / "out"

    def raw_has(name):
        oid = dfake.ids[name]
        return (cache / "raw" / oid[:2] / oid[2:]).exists()

    for name in ("part0.bin", "part1.bin", "part2.bin"):
        live.ok("ocat", 7, c, name, out)
        assert out.read_bytes() == dfake.files[name]
    live.ok("ocat", 7, c, "part0.bin", out)  # part1 is now the least recently used
    live.ok("ocat", 7, c, "part3.bin", out)
    assert eventually(lambda: raw_has("part3.bin"))
    assert raw_has("part0.bin") and not raw_has("part1.bin") and raw_has("part2.bin")
    assert stored_bytes(cache) <= limit + 3 * MiB + 4
    for name in ("part4.bin", "part1.bin", "part2.bin"):
        live.ok("ocat", 7, c, name, out)
        assert out.read_bytes() == dfake.files[name]
        assert stored_bytes(cache) <= limit + 3 * MiB + 4
    # larger than the whole cache: streams through, right bytes, not kept
    assert live.ok("ocat", 7, c, "huge.bin", out).split()[0] == str(14 * MiB)
    assert out.read_bytes() == dfake.files["huge.bin"]
    assert not raw_has("huge.bin")
    stats = live.stats()
    assert stats["limit"] == limit and stats["bytes"] <= limit
    check_cache(cache)
    # the index and the objects survive a restart and are used again
    live.close()
    before = len(dfake.requests("/raw"))
    live, c = start(dfake, lives, tmp_path, env={"REEF_CACHE_LIMIT": "10M"})
    live.ok("ocat", 7, c, "part2.bin", out)
    assert len(dfake.requests("/raw")) == before
    live.close()


def test_sigkill_during_parallel_downloads(dfake, lives, tmp_path):
    dfake.rate = 2 * MiB
    cache = tmp_path / "cache"
    live, c = start(dfake, lives, tmp_path)
    live.proc.stdin.write(f"prefetch\t7\t{c}\t/\n")
    live.proc.stdin.flush()
    time.sleep(2.5)
    live.kill()
    partial = list((cache / "tmp").iterdir())
    assert partial, "no download was in flight"
    check_cache(cache)  # nothing partial was ever published
    dfake.rate = 0
    live, c = start(dfake, lives, tmp_path)
    time.sleep(0.2)
    assert not any(p.exists() for p in partial), "stale temp files were not removed"
    out = tmp_path / "out"
    for name in ("big.bin", "big.lfs", "part0.bin"):
        live.ok("ocat", 7, c, name, out)
    assert out.read_bytes() == dfake.files["part0.bin"]
    live.ok("prefetch", 7, c, "/")
    assert live.stats()["in_flight"] == 0
    assert check_cache(cache) >= 8
    live.close()


def test_forget_drops_objects(dfake, lives, tmp_path):
    live, c = start(dfake, lives, tmp_path)
    out = tmp_path / "out"
    live.ok("ocat", 7, c, "big.lfs", out)
    live.ok("ocat", 7, c, "plain.txt", out)
    assert int(live.ok("forget", 7, c, "big.lfs")) == 2  # the LFS object and its pointer
    assert not any((tmp_path / "cache" / "lfs").glob("*/*"))
    assert int(live.ok("forget", 7, c, "/")) >= 1
    assert live.ok("ocat", 7, c, "big.lfs", out).split()[0] == str(len(BIG_LFS))
    live.close()


def test_branch_poll_reports_moves_and_backs_off(dfake, lives, tmp_path):
    live, c = start(dfake, lives, tmp_path, env={"REEF_POLL_MS": "200"})
    assert live.ok("moves") == ""
    dfake.COMMIT = "beef" + "2" * 36
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        moves = live.ok("moves")
        if moves:
            break
        time.sleep(0.1)
    assert moves == f"7:main:{DataFake.COMMIT}:{dfake.COMMIT}"
    # the lookup sees the new head without waiting for its TTL
    assert live.ok("resolve", 7, "branch", "main") == dfake.COMMIT
    # 429 with Retry-After: 3 s: the poller waits instead of hammering
    dfake.branch = "429"
    time.sleep(0.5)
    n0 = len(dfake.requests("/branches/main"))
    time.sleep(2.0)
    assert len(dfake.requests("/branches/main")) - n0 <= 2
    dfake.branch = "ok"
    live.close()


# --- against reef-hub, with objects pushed by the real git-lfs client ---

@pytest.mark.skipif(not which("git-lfs"), reason="git-lfs is not installed")
def test_lfs_through_reef_hub(hub, lives, tmp_path):
    token = hub.user("alice")
    hub.project("acme/models", "alice")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    git("lfs", "install", "--skip-repo", env=env)
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work, env=env)
    git("lfs", "install", "--local", cwd=work, env=env)
    git("lfs", "track", "*.bin", cwd=work, env=env)
    model = pattern(9 * MiB + 7, 42)
    (work / "model.bin").write_bytes(model)
    (work / "notes.txt").write_text("not lfs\n")
    git("add", "-A", cwd=work, env=env)
    git("commit", "-q", "-m", "model", cwd=work, env=env)
    r = git("push", hub.git_url("acme/models", "alice", token), "main", cwd=work, env=env,
            check=False)
    assert r.returncode == 0, r.stderr
    live = lives(hub.url, tmp_path / "cache", token)
    pid = int(live.ok("project", "acme/models").split()[0])
    c = live.ok("resolve", pid, "branch", "main")
    size, _blob, oid = live.ok("info", pid, c, "model.bin").split()
    assert (int(size), oid) == (len(model), hashlib.sha256(model).hexdigest())
    out = tmp_path / "out"
    live.ok("oread", pid, c, "model.bin", 8 * MiB, 65536, out)
    assert out.read_bytes() == model[8 * MiB:8 * MiB + 65536]
    assert live.ok("ocat", pid, c, "model.bin", out).split()[0] == str(len(model))
    assert out.read_bytes() == model
    live.ok("ocat", pid, c, "notes.txt", out)
    assert out.read_bytes() == b"not lfs\n"
    assert check_cache(tmp_path / "cache") >= 2
    live.close()
