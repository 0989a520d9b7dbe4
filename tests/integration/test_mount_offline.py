"""reefd with its server gone and back: what is cached keeps serving the right bytes,
what is not fails with EIO (never wrong or empty bytes), and once the hub is back on the
same port the same paths read correctly without a remount."""

import errno
import os
import random
import time
from pathlib import Path

import pytest

from conftest import git


def drop_kernel_caches():
    """Makes the kernel forget our pages, dentries and inodes, so the next reads and
    lookups really go through reefd (and its cache) instead of the page cache."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        pytest.skip(f"cannot drop kernel caches ({e}); this test needs root")


def read_errno(path):
    try:
        Path(path).read_bytes()
    except OSError as e:
        return e.errno
    return 0


def test_hub_down_then_back(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/data", "alice", "private")
    rnd = random.Random(11)
    src = tmp_path / "src"
    git("init", "-q", "-b", "main", str(src))
    files = {
        "small.txt": b"small and cached\n",
        "cached.bin": rnd.randbytes(2 << 20),
        "uncached.bin": rnd.randbytes(2 << 20),
        "small-uncached.txt": b"small, never read before the outage\n",
        "dir/other.txt": b"in a directory never listed before the outage\n",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "data", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    git("push", "-q", hub.git_url("alice/data", token=tok), "main", cwd=src)

    m = mount_factory(hub, tok, extra_opts="branch_ttl=1")
    roots = [m.mnt / "alice/data/branches/main", m.mnt / "alice/data/commits" / commit]
    for root in roots:
        assert (root / "small.txt").read_bytes() == files["small.txt"]
        assert (root / "cached.bin").read_bytes() == files["cached.bin"]
        assert (root / "uncached.bin").stat().st_size == len(files["uncached.bin"])
        assert (root / "small-uncached.txt").stat().st_size == len(files["small-uncached.txt"])

    port = hub.port
    assert hub.stop() == 0
    time.sleep(1.5)  # past the branch TTL: the branch head must come from the cache
    drop_kernel_caches()

    for root in roots:
        assert (root / "small.txt").read_bytes() == files["small.txt"]
        assert (root / "cached.bin").read_bytes() == files["cached.bin"]
        assert read_errno(root / "uncached.bin") == errno.EIO
        # a small file came with its directory's small files at the first read there
        assert (root / "small-uncached.txt").read_bytes() == files["small-uncached.txt"]
        # a directory never listed before (a path looked up alone lists over REST)
        with pytest.raises(OSError) as e:
            os.listdir(root / "dir")
        assert e.value.errno == errno.EIO
        # the cached listing still says what does not exist
        with pytest.raises(OSError) as e:
            os.stat(root / "nope")
        assert e.value.errno == errno.ENOENT
    assert (m.mnt / ".reef/status").read_text().startswith("{")

    hub.start(port=port)
    deadline = time.time() + 30
    while time.time() < deadline and read_errno(roots[0] / "uncached.bin") != 0:
        time.sleep(0.2)
    for root in roots:
        assert (root / "uncached.bin").read_bytes() == files["uncached.bin"]
        assert (root / "small-uncached.txt").read_bytes() == files["small-uncached.txt"]
        assert (root / "dir/other.txt").read_bytes() == files["dir/other.txt"]
        assert (root / "cached.bin").read_bytes() == files["cached.bin"]
