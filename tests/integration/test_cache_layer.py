"""The cache layer of reefd (daemon/cache.c over daemon/gl.c, fs/odb.c, fs/idx.c), driven
through tests/unit/store/test_cache_live against a real reef-hub holding a repository
pushed with real git, and against a small fake GitLab that misbehaves on purpose.

Everything the cache returns is compared with git's own view (ls-tree, a checkout):
listings, modes, ids, sizes and bytes. Damaged cache objects and wrong server bytes must
never come out; with the server gone, cached data keeps serving and the rest is EIO."""

import hashlib
import http.server
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BUILD, git

LIVE_BIN = BUILD / "tests" / "unit" / "store" / "test_cache_live"
BIG = 3 * 1024 * 1024 + 17  # above ODB_RAW_THRESHOLD (1 MiB): stored raw
THRESHOLD = 1 << 20


class Live:
    """One test_cache_live process: a cache over SERVER in CACHE_DIR."""

    def __init__(self, server, cache_dir, token, ttl_ms=60000):
        env = dict(os.environ)
        env.pop("REEF_TOKEN", None)
        if token is not None:
            env["REEF_TOKEN"] = token
        self.token = token
        self.proc = subprocess.Popen([str(LIVE_BIN), server, str(cache_dir), str(ttl_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)

    def cmd(self, *args):
        self.proc.stdin.write("\t".join(str(a) for a in args) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"test_cache_live died: {self.proc.stderr.read()}"
        words = line.rstrip("\n").split(" ", 1)
        if words[0] == "err":
            return ("err", words[1].split()[0])
        rest = words[1] if len(words) > 1 else ""
        if args[0] == "ls":
            entries = []
            for _ in range(int(rest)):
                mode, oid, size, name = self.proc.stdout.readline().rstrip("\n").split(" ", 3)
                entries.append((mode, oid, int(size), name))
            return ("ok", entries)
        return ("ok", rest)

    def ok(self, *args):
        status, value = self.cmd(*args)
        assert status == "ok", f"{args}: {value}"
        return value

    def stats(self):
        return json.loads(self.ok("stats"))

    def close(self):
        self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert code == 0, err
        if self.token:
            assert self.token not in err, "the token was logged"
        return err


def closing(cls):
    """For a fixture: yields a factory of cls (a Live), then closes those still running."""
    procs = []

    def make(*a, **kw):
        p = cls(*a, **kw)
        procs.append(p)
        return p

    yield make
    for p in procs:
        if p.proc.poll() is None:
            p.close()


@pytest.fixture
def live_factory():
    yield from closing(Live)


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_repo(work: Path):
    """A repository with what the cache must get right: nesting, modes, symlinks, odd
    names, an empty file, files around the raw threshold, git's tree order traps, tags."""
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "README.md").write_text("# cats\n")
    (work / "data" / "train").mkdir(parents=True)
    (work / "data" / "train" / "a.csv").write_text("x,y\n1,2\n")
    (work / "data" / "train" / "deep name é.txt").write_text("unicode and spaces\n")
    (work / "data" / "empty").write_bytes(b"")
    (work / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "run.sh").chmod(0o755)
    os.symlink("data/train/a.csv", work / "link")
    # "foo" (dir) sorts after "foo.c" and "foo-bar" in a git tree, before them by name
    (work / "foo").mkdir()
    (work / "foo" / "x").write_text("x\n")
    (work / "foo.c").write_text("int x;\n")
    (work / "foo-bar").write_text("-\n")
    # more entries than one page of the tree API (per_page=100): keyset pagination
    (work / "many").mkdir()
    for i in range(250):
        (work / "many" / f"f{i:03d}.txt").write_text(f"{i}\n")
    big = bytes((i * 131 + (i >> 13)) & 0xFF for i in range(BIG))
    (work / "big.bin").write_bytes(big)
    (work / "at-threshold.bin").write_bytes(big[:THRESHOLD])
    (work / "below-threshold.bin").write_bytes(big[:THRESHOLD - 1])
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("tag", "v1", cwd=work)
    (work / "README.md").write_text("# cats, second\n")
    git("commit", "-q", "-am", "second", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


@pytest.fixture
def repo(hub, tmp_path):
    token = hub.user("alice")
    hub.project("acme/cats", "alice")
    work = tmp_path / "work"
    head = make_repo(work)
    r = git("push", "-q", hub.git_url("acme/cats", "alice", token), "main", "v1", cwd=work)
    assert r.returncode == 0, r.stderr
    return {"token": token, "work": work, "head": head, "cache": tmp_path / "cache"}


def ls_tree(work, rev, path=""):
    """git's listing of one directory: [(mode, id, name)]."""
    spec = f"{rev}:{path}" if path else f"{rev}^{{tree}}"
    out = git("ls-tree", "-z", spec, cwd=work).stdout
    res = []
    for rec in filter(None, out.split("\0")):
        meta, name = rec.split("\t", 1)
        mode, _type, oid = meta.split()
        res.append((mode, oid, name))
    return res


def git_blob(work, oid) -> bytes:
    return subprocess.run(["git", "cat-file", "blob", oid], cwd=work, check=True,
                          capture_output=True).stdout


def compare_commit(live, pid, work, commit, tmp_path):
    """Every directory listed by the cache equals git's; every file's bytes equal git's."""
    assert live.ok("root", pid, commit) == git("rev-parse", f"{commit}^{{tree}}",
                                               cwd=work).stdout.strip()
    todo, files = [""], 0
    while todo:
        d = todo.pop()
        got = live.ok("ls", pid, commit, d or "/")
        want = ls_tree(work, commit, d)
        assert sorted((m, o, n) for m, o, _s, n in got) == sorted(want), d
        for mode, oid, size, name in got:
            path = f"{d}/{name}" if d else name
            if mode == "040000":
                todo.append(path)
                continue
            data = git_blob(work, oid)
            assert size in (-1, len(data)), path
            st = live.ok("stat", pid, commit, path).split()
            assert st == [mode, oid, str(len(data))], path
            out = tmp_path / "out"
            assert live.ok("cat", pid, commit, path, out) == str(len(data))
            assert out.read_bytes() == data, path
            files += 1
    return files


def test_cache_matches_git(hub, repo, live_factory, tmp_path):
    live = live_factory(hub.url, repo["cache"], repo["token"])
    work = repo["work"]
    assert live.ok("user") == "alice"
    assert live.ok("projects") == "acme/cats"
    pid, default = live.ok("project", "acme/cats").split()
    assert default == "main"
    assert set(live.ok("refs", pid, "branch").split()) == {"main"}
    assert set(live.ok("refs", pid, "tag").split()) == {"v1"}
    head = live.ok("resolve", pid, "branch", "main")
    assert head == repo["head"]
    v1 = live.ok("resolve", pid, "tag", "v1")
    assert v1 == git("rev-parse", "v1^{commit}", cwd=work).stdout.strip()
    assert live.ok("resolve", pid, "commit", head[:8]) == head
    assert live.ok("resolve", pid, "commit", head) == head

    n = compare_commit(live, pid, work, head, tmp_path)
    assert n == 12 + 250
    assert len(live.ok("ls", pid, head, "many")) == 250
    compare_commit(live, pid, work, v1, tmp_path)

    # the on-disk layout: every blob a plain file of its bytes (which a passthrough open
    # hands to the kernel), synced and stamped for good from the threshold up, stamped
    # for this reefd's session below it; trees in the git ODB; nothing left in tmp
    cache = repo["cache"]
    big = blob_id((work / "big.bin").read_bytes())
    at = blob_id((work / "at-threshold.bin").read_bytes())
    below_bytes = (work / "below-threshold.bin").read_bytes()
    below = blob_id(below_bytes)
    assert (cache / "raw" / big[:2] / big[2:]).stat().st_size == BIG
    assert (cache / "raw" / at[:2] / at[2:]).stat().st_mtime_ns == 1000000000 * 10**9
    small = cache / "raw" / below[:2] / below[2:]
    assert small.read_bytes() == below_bytes
    assert small.stat().st_mtime_ns // 10**9 == 1000000001
    assert not (cache / "git" / "objects" / below[:2] / below[2:]).exists()
    assert list((cache / "tmp").iterdir()) == []
    # a real git repository: git itself reads back what the cache stored, trees included
    tree = git("rev-parse", f"{head}^{{tree}}", cwd=work).stdout.strip()
    r = subprocess.run(["git", "--git-dir", str(cache / "git"), "ls-tree", tree],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "big.bin" in r.stdout, r.stderr

    # second pass: answered from the index and the store, no request at all
    before = live.stats()
    compare_commit(live, pid, work, head, tmp_path)
    after = live.stats()
    # only the poller of branches in use may have asked (for main's head)
    assert after["requests"] - after["polls"] == before["requests"] - before["polls"]
    assert after["hits"] > before["hits"]
    assert after["objects"] == before["objects"]
    live.close()

    # a new process over the same cache: immutable data needs no request either
    live2 = live_factory(hub.url, cache, repo["token"])
    assert live2.ok("resolve", pid, "commit", head[:8]) == head
    compare_commit(live2, pid, work, head, tmp_path)
    st = live2.stats()
    assert st["requests"] - st["polls"] == 0


def test_errors(hub, repo, live_factory):
    hub.user("bob")
    hub.project("bob/secret", "bob")
    live = live_factory(hub.url, repo["cache"], repo["token"])
    pid = live.ok("project", "acme/cats").split()[0]
    assert live.cmd("project", "acme/nope") == ("err", "ENOENT")
    assert live.cmd("project", "bob/secret") == ("err", "ENOENT")  # private: not leaked
    assert live.cmd("project", "ACME/cats") == ("err", "ENOENT")  # one name per project
    assert live.cmd("project", "acme/../cats") == ("err", "EINVAL")
    assert live.cmd("resolve", pid, "branch", "nope") == ("err", "ENOENT")
    assert live.cmd("resolve", pid, "tag", "nope") == ("err", "ENOENT")
    assert live.cmd("resolve", pid, "commit", "main") == ("err", "ENOENT")  # not a sha
    assert live.cmd("resolve", pid, "commit", "0" * 40) == ("err", "ENOENT")
    head = live.ok("resolve", pid, "branch", "main")
    assert live.cmd("ls", pid, head, "nope") == ("err", "ENOENT")
    live.close()

    bad = live_factory(hub.url, repo["cache"].with_name("c2"), "wrong-token-0123456789")
    assert bad.cmd("user") == ("err", "EACCES")
    assert bad.cmd("projects") == ("err", "EACCES")
    bad.close()


def test_concurrent_misses_share_one_download(hub, repo, live_factory):
    live = live_factory(hub.url, repo["cache"], repo["token"])
    pid = live.ok("project", "acme/cats").split()[0]
    head = live.ok("resolve", pid, "branch", "main")
    live.ok("ls", pid, head, "/")
    before = live.stats()
    assert live.ok("catn", pid, head, "big.bin", 8) == ""
    after = live.stats()
    assert after["requests"] - before["requests"] == 1
    assert after["misses"] - before["misses"] == 1
    assert after["objects"] - before["objects"] == 1
    assert after["bytes"] - before["bytes"] == BIG
    live.close()


def corrupt(path: Path, keep_stamp=False):
    """One byte flipped; keep_stamp puts the mtime back, as a crash can leave an unsynced
    file: other bytes under the stamp its (dead) process gave it."""
    st = path.stat()
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_stamp:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_corrupt_cache_objects_are_never_served(hub, repo, live_factory, tmp_path):
    work, cache = repo["work"], repo["cache"]
    live = live_factory(hub.url, cache, repo["token"])
    pid = live.ok("project", "acme/cats").split()[0]
    head = live.ok("resolve", pid, "branch", "main")
    out = tmp_path / "out"
    for path in ("big.bin", "data/train/a.csv"):
        live.ok("cat", pid, head, path, out)
    live.close()

    big = blob_id((work / "big.bin").read_bytes())
    small = blob_id((work / "data/train/a.csv").read_bytes())
    raw = cache / "raw" / big[:2] / big[2:]
    loose = cache / "raw" / small[:2] / small[2:]

    # damaged on disk, server up: fetched again, right bytes (the small blob's stamp is
    # its dead session's: hashed again by the new process even with the stamp intact)
    corrupt(raw)
    corrupt(loose, keep_stamp=True)
    live = live_factory(hub.url, cache, repo["token"])
    assert live.ok("cat", pid, head, "big.bin", out) == str(BIG)
    assert out.read_bytes() == (work / "big.bin").read_bytes()
    assert live.ok("cat", pid, head, "data/train/a.csv", out) == "8"
    assert out.read_text() == "x,y\n1,2\n"
    assert live.stats()["requests"] == 2 + 0  # the two blobs; listings came from the index
    live.close()

    # damaged again, server gone: EIO, never the damaged bytes
    corrupt(raw)
    corrupt(loose)
    port = hub.port
    assert hub.stop() == 0
    live = live_factory(hub.url, cache, repo["token"])
    out.write_bytes(b"")
    assert live.cmd("cat", pid, head, "big.bin", out) == ("err", "EIO")
    assert live.cmd("cat", pid, head, "data/train/a.csv", out) == ("err", "EIO")
    assert not raw.exists() and not loose.exists()
    # the server is back (same address): the same process reads again, no restart
    hub.start(port=port)
    assert live.ok("cat", pid, head, "big.bin", out) == str(BIG)
    assert out.read_bytes() == (work / "big.bin").read_bytes()
    live.close()


def test_offline_keeps_serving_the_cache(hub, repo, live_factory, tmp_path):
    work, cache = repo["work"], repo["cache"]
    live = live_factory(hub.url, cache, repo["token"], ttl_ms=0)
    pid = live.ok("project", "acme/cats").split()[0]
    head = live.ok("resolve", pid, "branch", "main")
    out = tmp_path / "out"
    live.ok("cat", pid, head, "data/train/a.csv", out)
    live.close()

    port = hub.port
    assert hub.stop() == 0
    t0 = time.monotonic()
    live = live_factory(hub.url, cache, repo["token"], ttl_ms=0)
    assert live.ok("project", "acme/cats").split()[0] == pid
    assert live.ok("resolve", pid, "branch", "main") == head  # last known head
    assert live.ok("cat", pid, head, "data/train/a.csv", out) == "8"
    assert live.cmd("cat", pid, head, "run.sh", out) == ("err", "EIO")
    assert live.cmd("resolve", pid, "tag", "v1") == ("err", "EIO")
    # a directory never listed before (trees come over REST until the commit is walked)
    assert live.cmd("ls", pid, head, "foo") == ("err", "EIO")
    assert time.monotonic() - t0 < 30, "a dead server must fail fast"

    hub.start(port=port)
    assert live.ok("cat", pid, head, "run.sh", out) == str(len("#!/bin/sh\necho hi\n"))
    assert [e[3] for e in live.ok("ls", pid, head, "foo")] == ["x"]
    live.close()


def test_branch_follows_after_ttl(hub, repo, live_factory, tmp_path):
    work = repo["work"]
    ttl = 4000
    live = live_factory(hub.url, repo["cache"], repo["token"], ttl_ms=ttl)
    pid = live.ok("project", "acme/cats").split()[0]
    t0 = time.monotonic()
    first = live.ok("resolve", pid, "branch", "main")
    (work / "new.txt").write_text("new\n")
    git("add", "new.txt", cwd=work)
    git("commit", "-q", "-m", "third", cwd=work)
    r = git("push", "-q", hub.git_url("acme/cats", "alice", repo["token"]), "main", cwd=work)
    assert r.returncode == 0, r.stderr
    second = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    if time.monotonic() - t0 < ttl / 1000 - 0.5:
        assert live.ok("resolve", pid, "branch", "main") == first  # still trusted
    time.sleep(max(0, ttl / 1000 + 0.2 - (time.monotonic() - t0)))
    assert live.ok("resolve", pid, "branch", "main") == second
    names = [e[3] for e in live.ok("ls", pid, second, "/")]
    assert "new.txt" in names
    assert live.ok("cat", pid, second, "new.txt", tmp_path / "o") == "4"
    live.close()


# ---------------------------------------------------------------------------------------
# A fake GitLab that lies: wrong bytes, wrong listings, truncated bodies, huge and deep
# JSON, 429s, silence. Ids are computed here the way git computes them.

def tree_id(entries):
    """entries: [(mode, name, hexid)] -> git tree id."""
    def key(e):
        return e[1].encode() + (b"/" if e[0] == "40000" else b"")
    body = b"".join(f"{m} {n}".encode() + b"\0" + bytes.fromhex(i)
                    for m, n, i in sorted(entries, key=key))
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


class Fake:
    COMMIT = "c0ffee" + "0" * 34

    def __init__(self):
        self.files = {"good.txt": b"good bytes\n", "bad.txt": b"what the tree says\n",
                      "short.txt": b"0123456789" * 210000, "sub/inner.txt": b"inner\n"}
        self.ids = {p: blob_id(d) for p, d in self.files.items()}
        self.sub_entries = [("100644", "inner.txt", self.ids["sub/inner.txt"])]
        self.sub_id = tree_id(self.sub_entries)
        self.behaviour = {}  # route key -> what to do
        self.tokens_seen = []
        self.hits = {}
        self.queries = {}  # path -> the query strings asked
        self.hang = None   # a threading.Event: every request waits for it (a hung server)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, *a):
                pass

            def do_GET(self):
                fake.route(self)

            def do_HEAD(self):
                fake.route(self, head=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def send(self, h, status, body=b"", headers=None, head=False):
        h.send_response(status)
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            h.send_header(k, v)
        h.end_headers()
        if not head and h.command != "HEAD":
            h.wfile.write(body)

    def json(self, h, obj, status=200, headers=None):
        self.send(h, status, json.dumps(obj).encode(), headers)

    def route(self, h, head=False):
        path = h.path.split("?")[0]
        query = h.path.split("?", 1)[1] if "?" in h.path else ""
        self.hits[path] = self.hits.get(path, 0) + 1
        self.queries.setdefault(path, []).append(query)
        how = self.behaviour.get(path)
        if self.hang is not None:
            self.hang.wait(120)  # accepted, never answered (until the test lets go)
            h.close_connection = True
            return
        if how and how.startswith("retry-after:"):
            if self.hits[path] == 1:
                return self.json(h, {"message": "429 Too Many Requests"}, 429,
                                 {"Retry-After": how.split(":", 1)[1]})
            how = None
        if how and how.startswith("ratelimit:"):
            # the quota is spent until RateLimit-Reset (Unix time), as GitLab says it
            reset = int(time.time()) + int(how.split(":", 1)[1])
            self.behaviour[path] = None
            return self.json(h, {"id": 1, "username": "alice"}, 200,
                             {"RateLimit-Limit": "100", "RateLimit-Remaining": "0",
                              "RateLimit-Reset": str(reset)})
        if how == "endless":
            # rel="next" for ever, 100 new items a page
            page = int(dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                       .get("page_token", "0"))
            items = [{"id": self.ids["good.txt"], "name": f"f{page}-{i}.txt",
                      "path": f"f{page}-{i}.txt", "type": "blob", "mode": "100644"}
                     for i in range(100)]
            base = query.split("&page_token=")[0]
            link = (f"<{self.url}{path}?{base}&page_token={page + 1}>; rel=\"next\"")
            return self.json(h, items, headers={"Link": link})
        if how == "stall":
            time.sleep(60)
            return
        if how == "429once" and self.hits[path] == 1:
            return self.json(h, {"message": "429 Too Many Requests"}, 429,
                             {"Retry-After": "1"})
        if how == "huge":
            body = b"[" + b"1," * (17 << 20) + b"1]"
            return self.send(h, 200, body)
        if how == "deep":
            return self.send(h, 200, b"[" * 5000 + b"]" * 5000)
        if how == "500":
            return self.json(h, {"message": "500 Internal Server Error"}, 500)
        if path == "/api/v4/user":
            return self.json(h, {"id": 1, "username": "alice"})
        if path == "/api/v4/projects/acme%2Fcats":
            return self.json(h, {"id": 5, "path_with_namespace": "acme/cats",
                                 "default_branch": "main", "empty_repo": False})
        if path == "/api/v4/projects":
            # simple=true, as GitLab: default_branch_or_main, no empty_repo
            return self.json(h, [{"id": 5, "path_with_namespace": "acme/cats",
                                  "default_branch": "main"},
                                 {"id": 6, "path_with_namespace": "acme/empty",
                                  "default_branch": "main"},
                                 # GitLab paths may start with '.'; a namespace called
                                 # .reef is hidden by the mount's own .reef
                                 {"id": 7, "path_with_namespace": ".hidden/.dotfiles",
                                  "default_branch": "main"},
                                 {"id": 8, "path_with_namespace": ".reef/x",
                                  "default_branch": "main"}])
        if path == "/api/v4/projects/.hidden%2F.dotfiles":
            return self.json(h, {"id": 7, "path_with_namespace": ".hidden/.dotfiles",
                                 "default_branch": "main", "empty_repo": False})
        if path == "/api/v4/projects/acme%2Fempty":
            return self.json(h, {"id": 6, "path_with_namespace": "acme/empty",
                                 "default_branch": "main", "empty_repo": True})
        if path in ("/api/v4/projects/6/repository/branches",
                    "/api/v4/projects/6/repository/tags", "/api/v4/projects/5/repository/tags"):
            return self.json(h, [])
        if path.startswith("/api/v4/projects/5/pipelines") or \
                path.startswith("/api/v4/projects/5/jobs/"):
            return self.ci(h, path)
        if path == f"/api/v4/projects/5/repository/commits/{self.COMMIT}":
            return self.json(h, {"id": self.COMMIT, "short_id": self.COMMIT[:8]})
        if path == "/api/v4/projects/5/repository/branches/main":
            return self.json(h, {"name": "main", "commit": {"id": self.COMMIT}})
        if path == "/api/v4/projects/5/repository/tree":
            sub = "path=sub" in query
            if sub:
                entries = self.sub_entries
                if how == "wrong-listing":
                    entries = [("100755", "inner.txt", self.ids["sub/inner.txt"])]
            else:
                entries = [("100644", p, i) for p, i in self.ids.items() if "/" not in p]
                entries.append(("40000", "sub", self.sub_id))
            items = [{"id": i, "name": n, "path": n, "type": "tree" if m == "40000" else "blob",
                      "mode": m.rjust(6, "0")} for m, n, i in entries]
            if how == "paged" and not sub:
                # two pages; the next link names an external base URL, as a GitLab
                # behind a proxy does: the client must come back to us, token and all
                if "page_token=second" in query:
                    return self.json(h, items[2:])
                self.tokens_seen.append(h.headers.get("PRIVATE-TOKEN"))
                link = ("<http://external.invalid/api/v4/projects/5/repository/tree?"
                        f"{query}&page_token=second>; rel=\"next\"")
                return self.json(h, items[:2], headers={"Link": link})
            return self.json(h, items)
        for p, i in self.ids.items():
            if path == f"/api/v4/projects/5/repository/blobs/{i}/raw":
                data = self.files[p]
                if p == "bad.txt":
                    data = b"WHAT THE TREE SAYS\n"  # same length, other bytes
                if p == "short.txt":
                    # announce everything, send half, hang up
                    h.send_response(200)
                    h.send_header("Content-Type", "application/octet-stream")
                    h.send_header("Content-Length", str(len(data)))
                    h.end_headers()
                    h.wfile.write(data[: len(data) // 2])
                    h.wfile.flush()
                    h.close_connection = True
                    return
                return self.send(h, 200, data, {"Content-Type": "application/octet-stream"})
        return self.json(h, {"message": "404 Not Found"}, 404)


def _fake_ci(self, h, path):
    """One finished pipeline with one job whose artifacts archive is answered 206 to
    "Range: bytes=0-", as GitLab's Workhorse does."""
    import io
    import zipfile
    pipe = {"id": 11, "iid": 1, "project_id": 5, "status": "success", "ref": "main",
            "sha": self.COMMIT, "source": "push", "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z", "web_url": f"{self.url}/acme/cats/-/pipelines/11"}
    job = {"id": 21, "name": "build", "stage": "build", "status": "success", "ref": "main",
           "created_at": "2024-01-01T00:00:00Z", "pipeline": pipe,
           "artifacts_file": {"filename": "artifacts.zip", "size": 1},
           "artifacts": [{"file_type": "archive", "filename": "artifacts.zip", "size": 1}],
           "web_url": f"{self.url}/acme/cats/-/jobs/21"}
    p = "/api/v4/projects/5"
    if path == p + "/pipelines":
        return self.json(h, [pipe])
    if path == p + "/pipelines/11":
        return self.json(h, pipe)
    if path == p + "/pipelines/11/jobs":
        return self.json(h, [job])
    if path == p + "/jobs/21":
        return self.json(h, job)
    if path == p + "/jobs/21/artifacts":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("out/result.txt", "done\n")
        data = buf.getvalue()
        headers = {"Content-Type": "application/zip"}
        if h.headers.get("Range") == "bytes=0-":
            headers["Content-Range"] = f"bytes 0-{len(data) - 1}/{len(data)}"
            return self.send(h, 206, data, headers)
        return self.send(h, 200, data, headers)
    return self.json(h, {"message": "404 Not Found"}, 404)


Fake.ci = _fake_ci


@pytest.fixture
def fake():
    f = Fake()
    yield f
    f.close()


def no_object(cache: Path, oid: str):
    return (not (cache / "raw" / oid[:2] / oid[2:]).exists()
            and not (cache / "git" / "objects" / oid[:2] / oid[2:]).exists())


def test_fake_server_wrong_bytes_and_listings(fake, live_factory, tmp_path):
    cache = tmp_path / "cache"
    live = live_factory(fake.url, cache, "fake-token-abcdefghijklmnop")
    assert live.ok("project", "acme/cats") == "5 main"
    c = live.ok("resolve", 5, "branch", "main")
    assert c == Fake.COMMIT
    out = tmp_path / "out"
    assert live.ok("cat", 5, c, "good.txt", out) == str(len(fake.files["good.txt"]))
    assert out.read_bytes() == fake.files["good.txt"]
    # wrong bytes for the id: EIO, nothing stored, and asked again next time
    assert live.cmd("cat", 5, c, "bad.txt", out) == ("err", "EIO")
    assert no_object(cache, fake.ids["bad.txt"])
    assert live.cmd("cat", 5, c, "bad.txt", out) == ("err", "EIO")
    assert fake.hits[f"/api/v4/projects/5/repository/blobs/{fake.ids['bad.txt']}/raw"] == 2
    # a truncated body: EIO, nothing stored, no temp file left
    assert live.cmd("cat", 5, c, "short.txt", out) == ("err", "EIO")
    assert no_object(cache, fake.ids["short.txt"])
    assert list((cache / "tmp").iterdir()) == []
    # a subtree listing that does not hash to the id its parent gave: EIO, not indexed
    fake.behaviour["/api/v4/projects/5/repository/tree"] = "wrong-listing"
    assert live.cmd("ls", 5, c, "sub") == ("err", "EIO")
    assert live.cmd("ls", 5, c, "sub") == ("err", "EIO")
    del fake.behaviour["/api/v4/projects/5/repository/tree"]
    entries = live.ok("ls", 5, c, "sub")
    assert [(e[0], e[1], e[3]) for e in entries] == [("100644", fake.ids["sub/inner.txt"],
                                                      "inner.txt")]
    err = live.close()
    assert "does not match" in err


def test_fake_server_bad_json_and_retries(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", "fake-token-abcdefghijklmnop")
    fake.behaviour["/api/v4/user"] = "huge"  # more than the 32 MiB cap
    assert live.cmd("user") == ("err", "EIO")
    fake.behaviour["/api/v4/user"] = "deep"
    assert live.cmd("user") == ("err", "EIO")
    fake.behaviour["/api/v4/user"] = "500"
    assert live.cmd("user") == ("err", "EIO")
    fake.behaviour["/api/v4/projects/acme%2Fcats"] = "429once"
    t0 = time.monotonic()
    assert live.ok("project", "acme/cats") == "5 main"
    assert time.monotonic() - t0 >= 0.9  # Retry-After: 1 was honoured
    assert fake.hits["/api/v4/projects/acme%2Fcats"] == 2
    live.close()


def test_fake_server_silence_is_bounded(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", "fake-token-abcdefghijklmnop")
    fake.behaviour["/api/v4/user"] = "stall"
    t0 = time.monotonic()
    assert live.cmd("user") == ("err", "EIO")
    assert time.monotonic() - t0 < 40
    live.close()


def test_fake_server_pagination_stays_on_our_server(fake, live_factory, tmp_path):
    token = "fake-token-abcdefghijklmnop"
    live = live_factory(fake.url, tmp_path / "cache", token)
    fake.behaviour["/api/v4/projects/5/repository/tree"] = "paged"
    c = live.ok("resolve", 5, "branch", "main")
    names = sorted(e[3] for e in live.ok("ls", 5, c, "/"))
    assert names == ["bad.txt", "good.txt", "short.txt", "sub"]
    assert fake.hits["/api/v4/projects/5/repository/tree"] == 2
    assert fake.tokens_seen == [token]
    live.close()
