"""FUSE passthrough: a file whose object is complete in the cache is opened so that the kernel
reads the cache file itself. Checked through reefd's own counters and through behaviour:
the bytes, mmap, opens that overlap a download (the kernel refuses to mix page-cache and
passthrough opens of one inode, so reefd must not), the mount option that turns it off."""

import hashlib
import mmap
import os
import platform
import random

import pytest

from test_mount_data import push_repo, status


def passthrough_possible():
    if os.getuid() != 0:
        return "registering backing files needs CAP_SYS_ADMIN"
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) < (6, 9):
        return f"kernel {platform.release()} has no FUSE passthrough (6.9+)"
    return None


pytestmark = pytest.mark.skipif(passthrough_possible() is not None,
                                reason=str(passthrough_possible()))


def big_repo(hub, tmp_path, project="alice/pt"):
    tok = hub.user("alice")
    hub.project(project, "alice", "private")
    rnd = random.Random(7)
    files = {"big.bin": rnd.randbytes(3 << 20), "small.txt": b"small\n"}
    push_repo(hub, tok, project, files, tmp_path)
    return tok, files


def test_complete_objects_are_read_by_the_kernel(hub, mount_factory, tmp_path):
    tok, files = big_repo(hub, tmp_path)
    m = mount_factory(hub, tok)
    f = m.mnt / "alice/pt/branches/main/big.bin"
    st0 = status(m)["passthrough"]
    assert st0["on"] is True and st0["refused"] == 0
    # first open: the object streams in, served by reefd (no passthrough)
    assert f.read_bytes() == files["big.bin"]
    assert status(m)["passthrough"]["opens"] == st0["opens"]
    # now complete: the next opens are the kernel's
    for _ in range(3):
        assert hashlib.sha256(f.read_bytes()).digest() == \
            hashlib.sha256(files["big.bin"]).digest()
    assert status(m)["passthrough"]["opens"] == st0["opens"] + 3
    with open(f, "rb") as fh:
        with mmap.mmap(fh.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:4096] == files["big.bin"][:4096]
            assert mm[-4096:] == files["big.bin"][-4096:]
        fh.seek(1 << 20)
        assert fh.read(100) == files["big.bin"][1 << 20:(1 << 20) + 100]
    # a small file is a file of its own too, fetched by its first open (which would
    # wait for it at its first read anyway): even that open is the kernel's
    n = status(m)["passthrough"]["opens"]
    small = m.mnt / "alice/pt/branches/main/small.txt"
    assert small.read_bytes() == b"small\n"
    assert status(m)["passthrough"]["opens"] == n + 1
    assert small.read_bytes() == b"small\n"
    assert status(m)["passthrough"]["opens"] == n + 2


def test_opens_overlapping_a_download_never_mix_modes(hub, mount_factory, tmp_path):
    """An open held from before the object was complete keeps the inode in page-cache mode:
    later opens must be too (the kernel would fail them with EIO otherwise); once it is
    closed, passthrough resumes, and a passthrough open in turn keeps its inode in that
    mode for every open that overlaps it."""
    tok, files = big_repo(hub, tmp_path)
    m = mount_factory(hub, tok)
    f = m.mnt / "alice/pt/branches/main/big.bin"
    data = files["big.bin"]
    first = open(f, "rb")
    try:
        assert first.read(4096) == data[:4096]  # starts the download
        assert f.read_bytes() == data  # a second open; the object completes meanwhile
        n = status(m)["passthrough"]["opens"]
        with open(f, "rb") as again:  # complete now, but `first` is a page-cache open
            assert again.read() == data
        assert status(m)["passthrough"]["opens"] == n
        assert first.read() == data[4096:]
    finally:
        first.close()
    with open(f, "rb") as a:
        with open(f, "rb") as b:
            assert status(m)["passthrough"]["opens"] == n + 2
            assert a.read() == data and b.read() == data
    assert f.read_bytes() == data
    assert status(m)["passthrough"]["opens"] == n + 3


def test_option_turns_it_off(hub, mount_factory, tmp_path):
    tok, files = big_repo(hub, tmp_path)
    m = mount_factory(hub, tok, extra_opts="passthrough=0")
    f = m.mnt / "alice/pt/branches/main/big.bin"
    for _ in range(2):
        assert f.read_bytes() == files["big.bin"]
    st = status(m)["passthrough"]
    assert st == {"on": False, "opens": 0, "refused": 0}


def test_bad_option_value_is_refused(hub, tmp_path):
    from conftest import Mount

    tok = hub.user("alice")
    base = tmp_path / "bad"
    base.mkdir()
    m = Mount(base, hub, tok, "passthrough=yes")
    with pytest.raises(AssertionError):
        m.start()
    assert m.stop() == 2
    assert "passthrough must be 0 or 1" in m.log_path.read_text()
