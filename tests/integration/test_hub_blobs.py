"""Large blobs over the raw routes of reef-hub: blobs above 1 MiB are streamed out of git
once into DIR/blobcache and sent from there (whole or ranged) without being held in the
hub's memory; corrupted cache files are never served; the cache's size is capped."""

import hashlib
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from conftest import HUB_BIN, Hub, git

BIG = 40 * 2**20 + 12345  # the memory test's blob: far above anything the hub holds
P = "/projects/alice%2Fblobs/repository"


def blob_sha(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def text_blob(n):
    """n bytes of text (no NUL): served as text/plain."""
    rnd = random.Random(7)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"line %d %08x\n" % (i, rnd.getrandbits(32))
        i += 1
    return bytes(out[:n])


class BlobRepo:
    """alice/blobs with files pushed through git over HTTP."""

    def __init__(self, hub, tmp: Path, files):
        self.hub = hub
        self.tok = hub.user("alice")
        hub.project("alice/blobs", "alice")
        self.files = files
        w = tmp / "work"
        w.mkdir()
        git("init", "-q", "-b", "main", cwd=w)
        for name, data in files.items():
            (w / name).write_bytes(data)
        git("add", "-A", cwd=w)
        git("commit", "-q", "-m", "blobs", cwd=w)
        git("push", "-q", hub.git_url("alice/blobs", token=self.tok), "main", cwd=w)

    def get(self, route, method="GET", **kw):
        return self.hub.api(method, P + route, self.tok, **kw)

    def raw(self, name, method="GET", rng=None, via="blobs"):
        headers = {"Range": rng} if rng else {}
        if via == "blobs":
            return self.get(f"/blobs/{blob_sha(self.files[name])}/raw", method,
                            headers=headers)
        return self.get(f"/files/{name}/raw?ref=main", method, headers=headers)


def cache_file(hub, data):
    sha = blob_sha(data)
    return hub.dir / "blobcache" / sha[:2] / sha[2:]


def cached(hub):
    """The cache's files (temporaries excluded)."""
    root = hub.dir / "blobcache"
    return sorted(p for p in root.glob("??/*") if p.is_file())


def proc_status(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if v.strip().endswith("kB"):
            out[k] = int(v.split()[0]) * 1024
    return out


@pytest.fixture
def big(hub, tmp_path):
    rnd = random.Random(1)
    files = {
        "big.bin": rnd.randbytes(BIG),
        "big.txt": text_blob(3 * 2**20 + 17),
        "small.txt": b"small\n",
    }
    return BlobRepo(hub, tmp_path, files)


def check_ranges(br, name, via):
    data = br.files[name]
    n = len(data)
    cases = [("bytes=0-0", 0, 0), (f"bytes={n // 2}-{n // 2 + 99999}", n // 2, n // 2 + 99999),
             ("bytes=-1000", n - 1000, n - 1), (f"bytes={n - 4096}-", n - 4096, n - 1),
             (f"bytes={n - 10}-{n + 50}", n - 10, n - 1)]
    for rng, a, b in cases:
        r = br.raw(name, rng=rng, via=via)
        assert r.status_code == 206, (rng, r.status_code)
        assert r.content == data[a:b + 1], rng
        assert r.headers["Content-Range"] == f"bytes {a}-{b}/{n}"
        assert r.headers["X-Gitlab-Size"] == str(n)
    r = br.raw(name, rng=f"bytes={n}-", via=via)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{n}"


def test_large_raw_whole_and_ranges(hub, big):
    data = big.files["big.bin"]
    r = big.raw("big.bin")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["X-Gitlab-Blob-Id"] == blob_sha(data)
    assert r.headers["X-Gitlab-Size"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    f = cache_file(hub, data)
    assert f.read_bytes() == data
    assert (f.stat().st_mode & 0o777) == 0o600
    assert (f.parent.stat().st_mode & 0o777) == 0o700
    assert (hub.dir / "blobcache").stat().st_mode & 0o777 == 0o700
    check_ranges(big, "big.bin", "blobs")
    check_ranges(big, "big.bin", "files")
    # An abbreviated id resolves to the same cached blob.
    r = big.get(f"/blobs/{blob_sha(data)[:12]}/raw", headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == data[5:10]

    r = big.raw("big.bin", via="files")
    assert r.status_code == 200 and r.content == data
    assert len(r.headers["X-Gitlab-Commit-Id"]) == 40
    text = big.files["big.txt"]
    r = big.raw("big.txt", via="files")
    assert r.content == text
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    check_ranges(big, "big.txt", "blobs")
    # Small blobs keep the in-memory path: nothing cached for them.
    r = big.raw("small.txt", via="files", rng="bytes=1-3")
    assert r.status_code == 206 and r.content == b"mal"
    assert r.headers["X-Gitlab-Size"] == "6"
    assert cached(hub) == sorted([cache_file(hub, data), cache_file(hub, text)])
    assert not list((hub.dir / "blobcache" / "tmp").iterdir())


def test_head_materializes_nothing(hub, big):
    data, text = big.files["big.bin"], big.files["big.txt"]
    for via in ("blobs", "files"):
        r = big.raw("big.bin", "HEAD", via=via)
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["X-Gitlab-Size"] == str(len(data))
        r = big.raw("big.txt", "HEAD", rng="bytes=10-19", via=via)
        assert r.status_code == 206
        assert r.headers["Content-Length"] == "10"
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    r = big.get("/files/big.bin?ref=main", "HEAD")
    assert r.status_code == 200
    assert r.headers["X-Gitlab-Content-Sha256"] == hashlib.sha256(data).hexdigest()
    assert r.headers["X-Gitlab-Size"] == str(len(data))
    r = big.get("/files/big.txt?ref=main")  # the JSON route, under its 100 MiB cap
    assert r.status_code == 200 and r.json()["size"] == len(text)
    r = big.raw("big.bin", rng=f"bytes={len(data) + 1}-")
    assert r.status_code == 416
    assert cached(hub) == []

    # Once cached, HEAD answers from the cached copy: same headers.
    assert big.raw("big.bin").content == data
    r = big.raw("big.bin", "HEAD")
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = big.get("/files/big.bin?ref=main", "HEAD")
    assert r.headers["X-Gitlab-Content-Sha256"] == hashlib.sha256(data).hexdigest()
    assert cached(hub) == [cache_file(hub, data)]


def test_large_raw_memory_stays_bounded(hub, big):
    data = big.files["big.bin"]
    pid = hub.proc.pid
    # Reset the peak RSS (VmHWM) to the current RSS: the push is not what is measured.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = proc_status(pid)
    r = big.raw("big.bin")  # materializes
    assert r.content == data
    assert big.raw("big.bin", via="files", rng="bytes=1000-").content == data[1000:]
    assert big.raw("big.bin", rng=f"bytes=-{2**20}").content == data[-2**20:]
    assert big.raw("big.bin", "HEAD").status_code == 200
    r = big.get("/files/big.bin?ref=main", "HEAD")
    assert r.headers["X-Gitlab-Content-Sha256"] == hashlib.sha256(data).hexdigest()
    after = proc_status(pid)
    grown = after["VmHWM"] - before["VmRSS"]
    print(f"hub VmRSS before {before['VmRSS'] >> 10} KiB, VmHWM after "
          f"{after['VmHWM'] >> 10} KiB, RssAnon {after['RssAnon'] >> 10} KiB, "
          f"blob {len(data) >> 10} KiB")
    # Serving it whole from memory would add at least the blob's size.
    assert grown < 0.4 * len(data), grown
    assert after["RssAnon"] < 0.4 * len(data) + before["RssAnon"], after["RssAnon"]


def test_concurrent_first_gets(hub, big):
    data = big.files["big.bin"]
    n = len(data)
    ranges = [None, None, "bytes=0-99", f"bytes={n // 3}-{n // 3 + 2**20}", "bytes=-5000",
              None, f"bytes={n - 1}-", "bytes=12345-"]
    results = [None] * len(ranges)

    def fetch(i):
        try:
            r = big.raw("big.bin", rng=ranges[i], via="files" if i % 2 else "blobs")
            results[i] = (r.status_code, r.content)
        except Exception as e:  # reported by the assertion below
            results[i] = (0, repr(e).encode())

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(ranges))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rng, (status, body) in zip(ranges, results):
        if rng is None:
            assert status == 200 and body == data
            continue
        spec = rng[6:]
        a, _, b = spec.partition("-")
        if not a:
            a, b = n - int(b), n - 1
        else:
            a, b = int(a), int(b) if b else n - 1
        assert status == 206 and body == data[a:b + 1], rng
    assert cached(hub) == [cache_file(hub, data)]
    assert cache_file(hub, data).read_bytes() == data
    assert not list((hub.dir / "blobcache" / "tmp").iterdir())


def test_corrupt_cache_file_is_never_served(hub, big):
    data = big.files["big.bin"]
    n = len(data)
    assert big.raw("big.bin").content == data
    f = cache_file(hub, data)

    def refusals():
        return hub.log_path.read_text().count("does not hold blob " + blob_sha(data))

    # A byte flipped in place (same size, same inode): re-hashed, refused, made again.
    with open(f, "r+b") as fh:
        fh.seek(n // 2)
        fh.write(bytes([data[n // 2] ^ 0xFF]))
    r = big.raw("big.bin", rng=f"bytes={n // 2}-{n // 2 + 9}")
    assert r.status_code == 206 and r.content == data[n // 2:n // 2 + 10]
    assert f.read_bytes() == data
    assert refusals() == 1

    # Truncated: the size alone refuses it.
    os.truncate(f, n // 3)
    r = big.raw("big.bin", via="files")
    assert r.status_code == 200 and r.content == data
    assert f.read_bytes() == data
    assert refusals() == 2

    # Replaced while the hub is down by same-size garbage: a new process trusts no file
    # it has not verified, so this one is re-hashed and replaced.
    assert hub.stop() == 0
    f.write_bytes(bytes(n))
    hub.start()
    r = big.raw("big.bin", rng="bytes=0-99")
    assert r.status_code == 206 and r.content == data[:100]
    assert f.read_bytes() == data
    assert refusals() == 3

    # An intact file survives a restart: verified once, then served as it is.
    made = f.stat().st_mtime_ns
    assert hub.stop() == 0
    hub.start()
    assert big.raw("big.bin").content == data
    assert big.raw("big.bin", rng="bytes=-10").content == data[-10:]
    assert f.stat().st_mtime_ns == made
    assert refusals() == 3


def test_cache_limit_evicts(tmp_path):
    hub = Hub(tmp_path, ["--blob-cache-limit", "5M"]).start()
    try:
        rnd = random.Random(3)
        files = {k: rnd.randbytes(2 * 2**20 + i) for i, k in enumerate(["a", "b", "c"])}
        files["huge"] = rnd.randbytes(6 * 2**20)
        br = BlobRepo(hub, tmp_path, files)
        for name in ["a", "b", "a", "c"]:  # a is served again after b: b is the oldest
            assert br.raw(name).content == files[name]
        assert cached(hub) == sorted([cache_file(hub, files["a"]), cache_file(hub, files["c"])])
        assert sum(p.stat().st_size for p in cached(hub)) <= 5 * 2**20
        # Larger than the cap: served from an unlinked file, nothing kept.
        r = br.raw("huge", rng="bytes=100-")
        assert r.status_code == 206 and r.content == files["huge"][100:]
        assert br.raw("huge", via="files").content == files["huge"]
        assert cache_file(hub, files["huge"]) not in cached(hub)
        assert len(cached(hub)) == 2
        assert not list((hub.dir / "blobcache" / "tmp").iterdir())
        # An evicted blob comes back on demand.
        assert br.raw("b", rng="bytes=0-9").content == files["b"][:10]
        assert cache_file(hub, files["b"]) in cached(hub)
    finally:
        assert hub.stop() == 0

    # A smaller cap at start trims what an earlier run left; leftovers of writers go.
    stale = hub.dir / "blobcache" / "tmp" / "leftover.XXXXXX"
    stale.write_bytes(b"x")
    hub.serve_args = ["--blob-cache-limit", "3000K"]
    hub.start()
    try:
        assert cached(hub) == [cache_file(hub, files["b"])]  # the newest file stays
        assert not stale.exists()
    finally:
        assert hub.stop() == 0


def test_cache_limit_option_is_checked(tmp_path):
    d = tmp_path / "hub"
    subprocess.run([str(HUB_BIN), "init", str(d)], check=True)
    for bad in ["12X", "-1", "", "5MB", "99999999999999999999"]:
        r = subprocess.run([str(HUB_BIN), "serve", str(d), "--listen", "127.0.0.1:0",
                            "--blob-cache-limit", bad], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 2, (bad, r.stderr)
        assert "--blob-cache-limit" in r.stderr
