"""Git LFS as GitLab serves it (daemon/remote/lfs.c, http.c), through real FUSE mounts of
a real reef-hub project whose LFS bytes live in the object store of tests/integration/
objstore.py: presigned hrefs on another host, GitLab's older 302 from its own LFS route
to the store, actions that expire (announced or not), hrefs on an alias of the server,
and no credential ever sent to a host that is not the server."""

import hashlib
import os
import socket
import time
import types

import pytest

from conftest import Hub, which
from objstore import LfsFront, ObjectStore
from test_mount_data import push_repo

pytestmark = pytest.mark.skipif(not which("git-lfs"), reason="git-lfs is not installed")

MiB = 1 << 20


def pattern(n, seed):
    block = hashlib.sha256(b"%d" % seed).digest() * 2048
    return (block * (n // len(block) + 1))[:n]


SMALL = b"a small LFS object\n"
BIG = pattern(8 * MiB + 3, 7)


@pytest.fixture
def lfs_project(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/lfs", "alice", "private")
    push_repo(hub, tok, "alice/lfs", {"small.bin": SMALL, "big.bin": BIG, "plain.txt": b"x\n"},
              tmp_path, lfs="*.bin")
    return tok


@pytest.fixture
def store():
    s = ObjectStore()
    yield s
    s.close()


@pytest.fixture
def fronts():
    made = []

    def make(*a, **kw):
        f = LfsFront(*a, **kw)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


def no_credentials(store, token):
    """Nothing that reached the store carried a credential, ours or the server's."""
    for h in store.headers_seen():
        assert "authorization" not in h and "private-token" not in h, h
        assert all(token not in v for v in h.values())
    return True


def read_far(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_presigned_href_on_another_host(hub, lfs_project, store, fronts, mount_factory):
    front = fronts(hub.url, store, mode="direct")
    m = mount_factory(types.SimpleNamespace(url=front.url), lfs_project)
    root = m.mnt / "alice/lfs/branches/main"
    assert (root / "small.bin").read_bytes() == SMALL
    assert (root / "big.bin").read_bytes() == BIG
    assert os.stat(root / "big.bin").st_size == len(BIG)
    # the bytes came from the store, with nothing but the presigned query
    got = [e for e in store.log if e[1].startswith("/bucket/")]
    assert {e[1] for e in got} == {f"/bucket/{hashlib.sha256(d).hexdigest()}"
                                   for d in (SMALL, BIG)}
    assert no_credentials(store, lfs_project)
    assert lfs_project not in m.log_path.read_text()
    assert "X-Amz-Signature" not in m.log_path.read_text()


def test_redirect_to_storage_drops_credentials(hub, lfs_project, store, fronts, mount_factory):
    # GitLab before direct downloads: the href is GitLab's own LFS route with the
    # action's Authorization, which answers 302 to the store; the store refuses (400)
    # any request that still carries Authorization, as S3 does
    front = fronts(hub.url, store, mode="redirect")
    m = mount_factory(types.SimpleNamespace(url=front.url), lfs_project)
    root = m.mnt / "alice/lfs/branches/main"
    assert (root / "big.bin").read_bytes() == BIG
    assert (root / "small.bin").read_bytes() == SMALL
    assert [e for e in store.log if e[1].startswith("/bucket/")]
    assert no_credentials(store, lfs_project)


def test_action_that_expired_is_asked_again(hub, lfs_project, store, fronts, mount_factory):
    # the action says it lasts an hour; the store's signature lasts 2 s: a ranged
    # re-fetch after that gets 403 "Request has expired" and must ask the batch again
    store.rate = 1 * MiB  # big.bin takes ~8 s from the start: a far read jumps ahead
    front = fronts(hub.url, store, mode="direct", expires_in=3600, sign_ttl=2)
    m = mount_factory(types.SimpleNamespace(url=front.url), lfs_project)
    path = m.mnt / "alice/lfs/branches/main/big.bin"
    assert read_far(path, 0, 4096) == BIG[:4096]
    asked = len(front.batches)
    time.sleep(2.5)
    off = len(BIG) - 100000
    assert read_far(path, off, 100000) == BIG[off:]
    assert len(front.batches) > asked
    store.rate = 0
    assert path.read_bytes() == BIG
    assert no_credentials(store, lfs_project)


def test_announced_expiry_is_honoured(hub, lfs_project, store, fronts, mount_factory):
    # an action announced to expire at once is never used stale: each fetch asks again
    store.rate = 1 * MiB
    front = fronts(hub.url, store, mode="direct", expires_in=1, sign_ttl=1)
    m = mount_factory(types.SimpleNamespace(url=front.url), lfs_project)
    path = m.mnt / "alice/lfs/branches/main/big.bin"
    assert read_far(path, 0, 4096) == BIG[:4096]
    asked = len(front.batches)
    time.sleep(1.5)
    off = len(BIG) - 4096
    assert read_far(path, off, 4096) == BIG[off:]
    # asked again before the far fetch, not after the store refused it
    assert len(front.batches) > asked
    store.rate = 0
    assert path.read_bytes() == BIG


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_href_on_an_alias_of_the_server(tmp_path, store, mount_factory):
    # the hub calls itself http://localhost:<trap port> (its external URL, as GitLab's
    # external_url): its LFS hrefs name that host. reefd mounts it as 127.0.0.1:<port>
    # and must reach the objects through the server it was given, sending nothing to
    # the alias (here a trap that records every request)
    port = free_port()
    h = Hub(tmp_path)
    h.start(port=port)
    try:
        tok = h.user("alice")
        h.project("alice/lfs", "alice", "private")
        push_repo(h, tok, "alice/lfs", {"small.bin": SMALL, "big.bin": BIG}, tmp_path,
                  lfs="*.bin")
    finally:
        assert h.stop() == 0
    h.serve_args = ["--base-url", f"http://localhost:{store.port}"]
    h.start(port=port)
    try:
        m = mount_factory(h, tok)
        root = m.mnt / "alice/lfs/branches/main"
        assert (root / "small.bin").read_bytes() == SMALL
        assert (root / "big.bin").read_bytes() == BIG
        assert store.log == []
        assert m.stop() == 0
    finally:
        assert h.stop() == 0


def test_plain_http_to_another_host_is_refused(hub, lfs_project, store, fronts,
                                               mount_factory):
    # an href on a non-loopback host over plain http: refused, EIO, nothing sent
    front = fronts(hub.url, store, mode="direct")
    orig = store.presign
    store.presign = lambda name, ttl, base=None: orig(name, ttl, base="http://192.0.2.1:9")
    m = mount_factory(types.SimpleNamespace(url=front.url), lfs_project)
    with pytest.raises(OSError) as e:
        (m.mnt / "alice/lfs/branches/main/small.bin").read_bytes()
    assert e.value.errno == 5
    assert "plain http" in m.log_path.read_text()
