"""Writable branch views (docs/write.md): every file operation under branches/<name>/
goes to the branch's overlay, shows at once in that view over the branch's files and
nowhere else, survives kill -9 of reefd, and tags/ and commits/ stay read-only."""

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import time

import pytest

from conftest import data_repo, git


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, f"{fn.__name__}{args}: {e.value}"


@pytest.fixture
def repo(hub, tmp_path):
    files = {
        "README.md": b"# data\n",
        "data/a.csv": b"x,y\n1,2\n",
        "data/b.csv": b"x,y\n3,4\n" * 1000,
        "sub/deep/x.txt": b"deep\n",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    return data_repo(hub, tmp_path, files, executable=["run.sh"],
                     symlinks={"link": "data/a.csv"}, tags=["v1"], branches=["feature"])


def test_create_write_read_truncate(hub, repo, mount_factory):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    other = m.mnt / "alice/data/branches/feature"
    tag = m.mnt / "alice/data/tags/v1"
    assert (b / "README.md").read_bytes() == b"# data\n"
    # a new file, written at several offsets
    p = b / "new.txt"
    with open(p, "wb") as f:
        f.write(b"hello world\n")
        f.seek(6)
        f.write(b"WORLD")
        f.seek(100)
        f.write(b"end")
    want = b"hello WORLD\n" + b"\0" * 88 + b"end"
    assert p.read_bytes() == want
    assert p.stat().st_size == len(want)
    assert "new.txt" in os.listdir(b)
    # invisible in the other branch and the tag
    assert not (other / "new.txt").exists()
    assert not (tag / "new.txt").exists()
    # an existing file: appended (copy-up from the cache), then truncated
    with open(b / "data/a.csv", "ab") as f:
        f.write(b"5,6\n")
    assert (b / "data/a.csv").read_bytes() == b"x,y\n1,2\n5,6\n"
    assert (other / "data/a.csv").read_bytes() == b"x,y\n1,2\n"
    os.truncate(b / "data/a.csv", 4)
    assert (b / "data/a.csv").read_bytes() == b"x,y\n"
    assert (b / "data/a.csv").stat().st_size == 4
    # O_TRUNC open of a base file
    with open(b / "data/b.csv", "wb") as f:
        f.write(b"short\n")
    assert (b / "data/b.csv").read_bytes() == b"short\n"
    # r+ overwrite in the middle
    with open(b / "README.md", "r+b") as f:
        f.seek(2)
        f.write(b"DATA")
    assert (b / "README.md").read_bytes() == b"# DATA"[:6] + b"\n"
    # tags, commits, HEAD stay read-only
    for rev in (tag, m.mnt / "alice/data/commits" / repo["commit"]):
        expect_errno(errno.EROFS, open, rev / "README.md", "ab")
        expect_errno(errno.EROFS, open, rev / "x", "w")
        expect_errno(errno.EROFS, os.mkdir, rev / "d")
        expect_errno(errno.EROFS, os.unlink, rev / "README.md")
    expect_errno(errno.EROFS, os.unlink, m.mnt / "alice/data/HEAD")
    expect_errno(errno.EROFS, os.mkdir, m.mnt / "alice/data/branches/newbranch")
    # the overlay lives in the cache directory
    assert (m.cache / "overlay").is_dir()


def test_namespace_operations(hub, repo, mount_factory):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    # mkdir, nested files, rmdir and ENOTEMPTY
    os.mkdir(b / "new")
    os.makedirs(b / "new/a/b")
    (b / "new/a/b/f.txt").write_text("f\n")
    expect_errno(errno.EEXIST, os.mkdir, b / "new")
    expect_errno(errno.ENOTEMPTY, os.rmdir, b / "new/a")
    expect_errno(errno.ENOTEMPTY, os.rmdir, b / "sub")
    os.unlink(b / "new/a/b/f.txt")
    os.rmdir(b / "new/a/b")
    assert os.listdir(b / "new/a") == []
    # unlink of a branch file, then a new one in its place
    os.unlink(b / "data/a.csv")
    assert not (b / "data/a.csv").exists()
    assert sorted(os.listdir(b / "data")) == ["b.csv"]
    (b / "data/a.csv").write_bytes(b"again\n")
    assert (b / "data/a.csv").read_bytes() == b"again\n"
    # removing every file of a branch directory lets it go
    os.unlink(b / "sub/deep/x.txt")
    os.rmdir(b / "sub/deep")
    os.rmdir(b / "sub")
    assert not (b / "sub").exists()
    assert "sub" not in os.listdir(b)
    # rename a branch file (no byte copied), then a whole branch directory
    os.rename(b / "README.md", b / "READ.md")
    assert (b / "READ.md").read_bytes() == b"# data\n"
    assert not (b / "README.md").exists()
    os.rename(b / "data", b / "moved")
    assert not (b / "data").exists()
    assert sorted(os.listdir(b / "moved")) == ["a.csv", "b.csv"]
    assert (b / "moved/b.csv").read_bytes() == repo["files"]["data/b.csv"]
    assert (b / "moved/a.csv").read_bytes() == b"again\n"
    # a file inside the renamed directory written after the rename
    (b / "moved/c.csv").write_text("c\n")
    os.rename(b / "moved", b / "moved2")
    assert (b / "moved2/c.csv").read_text() == "c\n"
    assert sorted(os.listdir(b / "moved2")) == ["a.csv", "b.csv", "c.csv"]
    # over an existing file; RENAME into a non-empty dir fails
    (b / "t1").write_text("one")
    (b / "t2").write_text("two")
    os.rename(b / "t1", b / "t2")
    assert (b / "t2").read_text() == "one" and not (b / "t1").exists()
    expect_errno(errno.ENOTEMPTY, os.rename, b / "new", b / "moved2")
    expect_errno(errno.EXDEV, os.rename, b / "t2",
                 m.mnt / "alice/data/branches/feature/t2")
    # chmod +x / -x
    os.chmod(b / "t2", 0o755)
    assert stat.S_IMODE((b / "t2").stat().st_mode) == 0o755
    os.chmod(b / "run.sh", 0o644)
    assert stat.S_IMODE((b / "run.sh").stat().st_mode) == 0o644
    assert stat.S_IMODE((m.mnt / "alice/data/branches/feature/run.sh").stat().st_mode) == 0o755
    # symlinks: new, and a branch one moved
    os.symlink("moved2/b.csv", b / "l2")
    assert os.readlink(b / "l2") == "moved2/b.csv"
    assert (b / "l2").read_bytes() == repo["files"]["data/b.csv"]
    os.rename(b / "link", b / "link2")
    assert os.readlink(b / "link2") == "data/a.csv"
    expect_errno(errno.EPERM, os.link, b / "t2", b / "hard")
    assert sorted(os.listdir(b)) == ["READ.md", "l2", "link2", "moved2", "new", "run.sh",
                                     "t2"]
    # the other branch saw none of it
    f = m.mnt / "alice/data/branches/feature"
    assert sorted(os.listdir(f)) == ["README.md", "data", "link", "run.sh", "sub"]


def test_cp_tree(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    tree = tmp_path / "tree"
    rnd = random.Random(5)
    want = {}
    for i in range(20):
        p = tree / f"d{i % 4}" / f"f{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        data = rnd.randbytes(rnd.randrange(0, 300_000))
        p.write_bytes(data)
        want[p.relative_to(tree)] = data
    subprocess.run(["cp", "-r", str(tree), str(b / "tree")], check=True)
    for rel, data in want.items():
        assert (b / "tree" / rel).read_bytes() == data


def test_pandas_to_csv(hub, repo, mount_factory):
    pd = pytest.importorskip("pandas")
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    df = pd.DataFrame({"a": range(1000), "b": [x * 0.5 for x in range(1000)]})
    df.to_csv(b / "frame.csv", index=False)
    back = pd.read_csv(b / "frame.csv")
    assert back.equals(df)


def test_durable_across_kill9(hub, repo, mount_factory):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    data = random.Random(3).randbytes(3 << 20)
    with open(b / "big.bin", "wb") as f:
        f.write(data)
    with open(b / "data/a.csv", "ab") as f:
        f.write(b"7,8\n")
        f.flush()
        os.fsync(f.fileno())
    os.mkdir(b / "d")
    os.rename(b / "sub", b / "d/sub")
    os.unlink(b / "README.md")
    m.kill9_restart()
    assert (b / "big.bin").read_bytes() == data
    assert (b / "data/a.csv").read_bytes() == b"x,y\n1,2\n7,8\n"
    assert (b / "d/sub/deep/x.txt").read_bytes() == b"deep\n"
    assert not (b / "README.md").exists()
    assert not (b / "sub").exists()


def test_enospc_at_the_cache_limit(hub, repo, mount_factory):
    m = mount_factory(hub, repo["tok"], extra_opts="cache_limit=4M")
    b = m.mnt / "alice/data/branches/main"
    with pytest.raises(OSError) as e:
        with open(b / "big.bin", "wb") as f:
            for _ in range(8):
                f.write(b"\0" * (1 << 20))
    assert e.value.errno == errno.ENOSPC
    os.unlink(b / "big.bin")
    (b / "small.bin").write_bytes(b"\1" * (1 << 20))  # the space came back
    assert (b / "small.bin").stat().st_size == 1 << 20


def test_overlay_and_cache_share_the_limit(hub, mount_factory, tmp_path):
    """cache_limit bounds the overlays and the cached objects together: a write evicts
    cached objects to make room (never overlay bytes), and a download evicts or is not
    kept when the overlays hold the space."""
    tok = hub.user("alice")
    hub.project("alice/big", "alice", "private")
    src = tmp_path / "src"
    git("init", "-q", "-b", "main", str(src))
    blob = random.Random(3).randbytes(3 << 20)
    (src / "a.bin").write_bytes(blob)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "a", cwd=src)
    git("push", "-q", hub.git_url("alice/big", token=tok), "main", cwd=src)
    m = mount_factory(hub, tok, extra_opts="cache_limit=4M")
    b = m.mnt / "alice/big/branches/main"
    limit = 4 << 20

    def used():
        st = os.statvfs(b)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def cached():
        return json.loads((m.mnt / ".reef/cache.json").read_text())["bytes"]

    assert (b / "a.bin").read_bytes() == blob  # 3 MiB stored in the cache
    # the stream's last bytes reach the reader before its completion counts them as
    # cached: wait (bounded) for the count to catch up
    deadline = time.monotonic() + 10
    while cached() < 3 << 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cached() >= 3 << 20
    (b / "w.bin").write_bytes(b"\1" * (2 << 20))  # fits only if the cache gives way
    assert cached() < 3 << 20, "the cached object should have been evicted"
    assert used() <= limit, (used(), limit)
    # the overlay holds 2 MiB: the 3 MiB blob can still be read, but not kept beside it
    assert (b / "a.bin").read_bytes() == blob
    assert used() <= limit, (used(), limit)
    assert (b / "w.bin").read_bytes() == b"\1" * (2 << 20)  # overlay bytes never evicted
    with pytest.raises(OSError) as e:
        (b / "x.bin").write_bytes(b"\2" * (3 << 20))  # overlays alone would pass the limit
    assert e.value.errno == errno.ENOSPC
