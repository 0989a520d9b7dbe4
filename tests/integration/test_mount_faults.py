"""reefd under faults, against a real reef-hub: the hub killed (SIGKILL) in the middle of
a large read, reefd itself killed during parallel downloads and restarted on the same
cache (every cached object must verify), and a cache at its size limit during large
reads. Downloads are slowed by a throttling TCP proxy in front of the hub, so that a
fault lands mid-transfer instead of racing a loopback copy."""

import errno
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pytest

from conftest import Mount, git


class SlowProxy:
    """A loopback TCP proxy to 127.0.0.1:upstream passing server-to-client bytes at about
    `rate` bytes per second per connection (None: unthrottled). It connects upstream for
    every client connection, so a hub restarted on the same port is reached again; when
    the upstream dies, the client connection is cut (as a dead server's would be)."""

    def __init__(self, upstream, rate):
        self.upstream = upstream
        self.rate = rate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.closing = False
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
        except OSError:
            c.close()
            return
        u.settimeout(None)
        with self.lock:
            self.conns += [c, u]

        def pipe(src, dst, throttle):
            try:
                while True:
                    data = src.recv(16384)
                    if not data:
                        break
                    dst.sendall(data)
                    if throttle and self.rate:
                        time.sleep(len(data) / self.rate)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        t = threading.Thread(target=pipe, args=(c, u, False), daemon=True)
        t.start()
        pipe(u, c, True)
        t.join(5)
        c.close()
        u.close()

    def close(self):
        self.closing = True
        self.sock.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxies():
    made = []

    def make(upstream, rate):
        p = SlowProxy(upstream, rate)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


class ProxiedHub:
    """What the mount fixtures need of a hub (url), pointing at the proxy."""

    def __init__(self, url):
        self.url = url


def push(hub, tok, project, files, tmp_path):
    src = tmp_path / "src"
    git("init", "-q", "-b", "main", str(src))
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "data", cwd=src)
    git("push", "-q", hub.git_url(project, token=tok), "main", cwd=src)
    return git("rev-parse", "HEAD", cwd=src).stdout.strip()


def drop_kernel_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        pytest.skip(f"cannot drop kernel caches ({e}); this test needs root")


def verify_cache(cache: Path):
    """Every object the cache holds must be what its name says: raw blobs hash (git's
    SHA-1 of "blob <size>\\0" + bytes) to their name, LFS objects (SHA-256) too, and
    every loose object of the ODB inflates and hashes to its name. No download in
    progress may be left. Returns the number of objects checked."""
    checked = 0
    for kind in ("raw", "lfs"):
        for f in sorted((cache / kind).glob("*/*")):
            data = f.read_bytes()
            if kind == "raw":
                h = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            else:
                h = hashlib.sha256(data).hexdigest()
            assert h == f.parent.name + f.name, f"{f} holds other bytes ({h})"
            checked += 1
    for f in sorted((cache / "git/objects").glob("[0-9a-f][0-9a-f]/*")):
        raw = zlib.decompress(f.read_bytes())
        header, _, body = raw.partition(b"\0")
        kind, size = header.split(b" ")
        assert int(size) == len(body), f
        assert hashlib.sha1(raw).hexdigest() == f.parent.name + f.name, f
        checked += 1
    for pack in (cache / "git/objects/pack").glob("*.idx"):
        r = subprocess.run(["git", "verify-pack", str(pack)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        checked += 1
    left = [p for p in (cache / "tmp").iterdir()] if (cache / "tmp").exists() else []
    assert not left, f"downloads left in tmp/: {left}"
    return checked


def cache_bytes(cache: Path):
    """Bytes of cached objects on disk (raw, LFS and the ODB's objects)."""
    total = 0
    for sub in ("raw", "lfs", "git/objects"):
        for dirpath, _, names in os.walk(cache / sub):
            for n in names:
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def test_reads_do_not_wait_for_the_whole_object(hub, mount_factory, proxies, tmp_path):
    """Through a 1 MiB/s link, the first bytes of a 24 MiB file, and bytes far into it
    (a ranged fetch), arrive long before the whole file could have."""
    tok = hub.user("alice")
    hub.project("alice/lazy", "alice", "private")
    big = random.Random(8).randbytes(24 << 20)
    push(hub, tok, "alice/lazy", {"big.bin": big}, tmp_path)
    proxy = proxies(hub.port, 1 << 20)
    m = mount_factory(ProxiedHub(proxy.url), tok)
    f = m.mnt / "alice/lazy/branches/main/big.bin"
    assert os.stat(f).st_size == len(big)
    t0 = time.time()
    with open(f, "rb", buffering=0) as fh:
        assert fh.read(65536) == big[:65536]
        first = time.time() - t0
        fh.seek(20 << 20)
        assert fh.read(65536) == big[20 << 20:(20 << 20) + 65536]
        far = time.time() - t0
    assert first < 6, first
    assert far < 12, far  # the whole file needs 24 s at this rate


def test_hub_killed_mid_read(hub, mount_factory, proxies, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/big", "alice", "private")
    rnd = random.Random(21)
    big = rnd.randbytes(24 << 20)
    cached = rnd.randbytes(3 << 20)
    files = {"big.bin": big, "cached.bin": cached, "small.txt": b"small\n"}
    push(hub, tok, "alice/big", files, tmp_path)
    port = hub.port
    proxy = proxies(port, 3 << 20)  # 24 MiB take ~8 s to come through
    m = mount_factory(ProxiedHub(proxy.url), tok)
    root = m.mnt / "alice/big/branches/main"
    assert (root / "cached.bin").read_bytes() == cached
    assert (root / "small.txt").read_bytes() == b"small\n"
    assert os.stat(root / "big.bin").st_size == len(big)

    got = bytearray()
    result = {}
    started = threading.Event()

    def reader():
        try:
            with open(root / "big.bin", "rb", buffering=0) as f:
                while True:
                    chunk = f.read(256 << 10)
                    if not chunk:
                        break
                    got.extend(chunk)
                    started.set()
                    time.sleep(0.01)
            result["ok"] = True
        except OSError as e:
            result["errno"] = e.errno
            result["at"] = time.time()
        started.set()

    t = threading.Thread(target=reader)
    t.start()
    assert started.wait(30)
    time.sleep(0.5)
    hub.proc.send_signal(signal.SIGKILL)
    killed = time.time()
    hub.proc.wait()
    hub.stop()  # reaps, closes its pipes
    t.join(60)
    assert not t.is_alive()
    assert result.get("errno") == errno.EIO, result
    assert result["at"] - killed < 30
    assert 0 < len(got) < len(big)
    assert bytes(got) == big[:len(got)]  # whatever came before the fault is right
    # cached data keeps serving; the uncached one fails the same way, promptly
    drop_kernel_caches()
    assert (root / "cached.bin").read_bytes() == cached
    assert (root / "small.txt").read_bytes() == b"small\n"
    t0 = time.time()
    with pytest.raises(OSError) as e:
        (root / "big.bin").read_bytes()
    assert e.value.errno == errno.EIO and time.time() - t0 < 30
    # the hub comes back on the same port: the same path reads right, no remount
    hub.start(port=port)
    proxy.rate = None
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            data = (root / "big.bin").read_bytes()
            break
        except OSError:
            time.sleep(0.3)
    assert hashlib.sha256(data).digest() == hashlib.sha256(big).digest()
    st = json.loads((m.mnt / ".reef/status").read_text())
    assert st["cache"]["last_errors"], st["cache"]


def test_reefd_killed_during_downloads(hub, proxies, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/par", "alice", "private")
    rnd = random.Random(33)
    files = {f"f{i}.bin": rnd.randbytes((6 + i) << 20) for i in range(4)}
    files["small.txt"] = b"small\n"
    push(hub, tok, "alice/par", files, tmp_path)
    proxy = proxies(hub.port, 2 << 20)
    base = tmp_path / "m"
    base.mkdir()
    m = Mount(base, ProxiedHub(proxy.url), tok).start()
    killed = False
    try:
        root = m.mnt / "alice/par/branches/main"
        assert (root / "small.txt").read_bytes() == b"small\n"
        errs = []

        def reader(name):
            try:
                (root / name).read_bytes()
            except OSError as e:
                errs.append(e.errno)

        threads = [threading.Thread(target=reader, args=(f"f{i}.bin",)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # all four downloads are under way, none is complete
        assert list((m.cache / "tmp").iterdir()), "no download in progress to interrupt"
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()
        killed = True
        for t in threads:
            t.join(30)
        assert len(errs) == 4, errs  # every reader saw the daemon go
        assert all(e in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO) for e in errs), errs
        subprocess.run(["fusermount3", "-uz", str(m.mnt)], check=True)
        assert not m.mounted()
    finally:
        if not killed:
            m.proc.kill()
        m.proc.wait()
        m.log.close()
        m.proc = None
        if m.mounted():
            subprocess.run(["fusermount3", "-uz", str(m.mnt)], check=False)

    # restarted on the same cache, unthrottled: correct bytes, and every object verifies
    proxy.rate = None
    m2 = Mount(base, ProxiedHub(proxy.url), tok).start()
    try:
        root = m2.mnt / "alice/par/branches/main"
        for name, data in files.items():
            assert (root / name).read_bytes() == data, name
        # a read to the end returns at the verdict; the store (fsync, rename) follows it
        deadline = time.time() + 30
        while any((m2.cache / "tmp").iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        n = verify_cache(m2.cache)
        assert n >= 5
    finally:
        code = m2.stop()
    assert code == 0
    assert verify_cache(m2.cache) >= 5


def test_cache_at_its_limit(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/lim", "alice", "private")
    rnd = random.Random(44)
    files = {f"part{i}.bin": rnd.randbytes(5 << 20) for i in range(6)}
    files["huge.bin"] = rnd.randbytes(24 << 20)  # larger than the whole cache
    push(hub, tok, "alice/lim", files, tmp_path)
    limit = 16 << 20
    m = mount_factory(hub, tok, extra_opts="cache_limit=16M")
    root = m.mnt / "alice/lim/branches/main"
    st = json.loads((m.mnt / ".reef/status").read_text())
    assert st["cache"]["limit"] == limit
    for rnd_pass in range(2):
        for name in sorted(files):
            data = (root / name).read_bytes()
            assert hashlib.sha256(data).digest() == hashlib.sha256(files[name]).digest(), name
            assert cache_bytes(m.cache) <= limit, (name, cache_bytes(m.cache))
        drop_kernel_caches()
    # a reader holding a large file open while others push the cache over its limit
    with open(root / "part0.bin", "rb") as held:
        for name in ("part3.bin", "part4.bin", "part5.bin", "huge.bin"):
            assert (root / name).read_bytes() == files[name]
        assert held.read() == files["part0.bin"]
    st = json.loads((m.mnt / ".reef/status").read_text())
    assert st["cache"]["bytes"] <= limit
    assert cache_bytes(m.cache) <= limit
    verify_cache(m.cache)
