"""reefd's data path against a real reef-hub: Git LFS files pushed with git-lfs shown with
their real bytes, size and xattrs; readdir inode numbers that agree with stat; the
.reef/ctl control file (prefetch, forget, refresh, garbage, oversize) and its error file;
sibling prefetch that stays bounded; a push shown through a mounted branch within the
poll interval by kernel invalidation; odd paths (.., NUL, long names, unicode, spaces)."""

import errno
import hashlib
import json
import os
import random
import re
import stat
import time
from pathlib import Path

import pytest

from conftest import git, which

UNICODE = "d\u00e9j\u00e0 vu \u732b.txt"


def drop_kernel_caches():
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        pytest.skip(f"cannot drop kernel caches ({e}); this test needs root")


def push_repo(hub, tok, project, files, tmp_path, name="src", lfs=None):
    """Commits files (path -> bytes) on main and pushes; lfs: a pattern git-lfs tracks."""
    src = tmp_path / name
    env = None
    if lfs:
        home = tmp_path / f"{name}-home"
        home.mkdir()
        env = {"HOME": str(home)}
        git("lfs", "install", "--skip-repo", env=env)
    git("init", "-q", "-b", "main", str(src), env=env)
    if lfs:
        git("lfs", "install", "--local", cwd=src, env=env)
        git("lfs", "track", lfs, cwd=src, env=env)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    git("add", "-A", cwd=src, env=env)
    git("commit", "-q", "-m", "data", cwd=src, env=env)
    git("push", "-q", hub.git_url(project, token=tok), "main", cwd=src, env=env)
    return src, env


def status(m):
    return json.loads((m.mnt / ".reef/status").read_text())


def ctl(m, text):
    """Writes one request to .reef/ctl; returns 0 or the errno of the write."""
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(m.mnt / ".reef/ctl", os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
    return 0


def wait_idle(m, timeout=60):
    """Waits until no prefetch is queued or running and no download is in flight."""
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        st = status(m)
        busy = st["prefetch"]["queued"] + st["prefetch"]["running"] + \
            st["cache"].get("in_flight", 0) + st["cache"].get("prefetch_pending", 0)
        quiet = quiet + 1 if busy == 0 else 0
        if quiet >= 3:
            return st
        time.sleep(0.2)
    raise AssertionError(f"still busy: {status(m)}")


def read_errno(path):
    try:
        Path(path).read_bytes()
    except OSError as e:
        return e.errno
    return 0


@pytest.mark.skipif(not which("git-lfs"), reason="git-lfs is not installed")
def test_lfs_files_show_real_content(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/lfs", "alice", "private")
    rnd = random.Random(3)
    big = rnd.randbytes(12 << 20)
    small = b"tiny lfs object\n"
    empty = b""
    files = {"data/big.bin": big, "data/small.bin": small, "empty.bin": empty,
             "plain.txt": b"not in lfs\n",
             # looks like a pointer but is not one (a trailing line): shown as it is
             "fake.txt": (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                          f"{hashlib.sha256(small).hexdigest()}\nsize {len(small)}\n"
                          f"extra\n").encode()}
    src, env = push_repo(hub, tok, "alice/lfs", files, tmp_path, lfs="*.bin")
    # git really stored pointers
    blob = git("cat-file", "-p", "HEAD:data/big.bin", cwd=src, env=env).stdout
    assert blob.startswith("version https://git-lfs.github.com/spec/v1")
    m = mount_factory(hub, tok)
    root = m.mnt / "alice/lfs/branches/main"
    for rel, data in files.items():
        st = os.stat(root / rel)
        assert st.st_size == len(data), rel
        assert (root / rel).read_bytes() == data, rel
    for rel in ("data/big.bin", "data/small.bin"):
        oid = hashlib.sha256(files[rel]).hexdigest()
        assert os.getxattr(root / rel, "user.reef.lfs.oid").decode() == oid
        assert sorted(os.listxattr(root / rel)) == ["user.reef.commit", "user.reef.lfs.oid",
                                                    "user.reef.oid"]
        # user.reef.oid stays the git blob: the pointer's id
        assert os.getxattr(root / rel, "user.reef.oid").decode() == \
            git("rev-parse", f"HEAD:{rel}", cwd=src, env=env).stdout.strip()
    for rel in ("plain.txt", "fake.txt"):
        assert "user.reef.lfs.oid" not in os.listxattr(root / rel)
        with pytest.raises(OSError) as e:
            os.getxattr(root / rel, "user.reef.lfs.oid")
        assert e.value.errno == errno.ENODATA
    # reads at offsets of the LFS object
    with open(root / "data/big.bin", "rb") as f:
        for off in (0, 1, (5 << 20) + 7, len(big) - 10):
            f.seek(off)
            assert f.read(4096) == big[off:off + 4096]
    # after the kernel forgot everything, the cache still serves the same bytes
    drop_kernel_caches()
    assert hashlib.sha256((root / "data/big.bin").read_bytes()).digest() == \
        hashlib.sha256(big).digest()
    # the same files by commit
    commit = git("rev-parse", "HEAD", cwd=src, env=env).stdout.strip()
    assert (m.mnt / "alice/lfs/commits" / commit / "data/small.bin").read_bytes() == small

    # .reef/ctl on LFS files: forget drops the LFS object too (with the hub down the next
    # read fails), prefetch of the directory brings it back for an offline read
    assert ctl(m, "forget alice/lfs/branches/main/data/big.bin") == 0
    port = hub.port
    assert hub.stop() == 0
    try:
        assert read_errno(root / "data/big.bin") == errno.EIO
        assert (root / "data/small.bin").read_bytes() == small
    finally:
        hub.start(port=port)
    assert ctl(m, "prefetch alice/lfs/branches/main/data") == 0
    wait_idle(m)
    assert hub.stop() == 0
    try:
        drop_kernel_caches()
        assert (root / "data/big.bin").read_bytes() == big
    finally:
        hub.start(port=port)


def test_readdir_inodes_agree_with_stat(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("acme/team/data", "alice", "private")
    files = {f"d/f{i:03d}.txt": f"{i}\n".encode() for i in range(50)}
    files.update({"README.md": b"hi\n", "sub/x/y.txt": b"y\n", UNICODE: b"u\n"})
    src, _ = push_repo(hub, tok, "acme/team/data", files, tmp_path)
    os.symlink("README.md", src / "link")
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "link", cwd=src)
    git("tag", "v1", cwd=src)
    git("push", "-q", hub.git_url("acme/team/data", token=tok), "main", "v1", cwd=src)
    m = mount_factory(hub, tok)
    proj = m.mnt / "acme/team/data"
    # readdir first, stat later: nothing was looked up before the listings
    dirs = [m.mnt, m.mnt / "acme", m.mnt / "acme/team", proj, m.mnt / ".reef",
            proj / "branches/main", proj / "branches/main/d", proj / "branches/main/sub",
            proj / "tags/v1",
            # branches and tags resolved above (by walking into them) list with their
            # revision roots' numbers too
            proj / "branches", proj / "tags"]
    checked = 0
    for d in dirs:
        entries = list(os.scandir(d))
        assert entries, d
        for e in entries:
            assert e.inode() == os.lstat(e.path).st_ino, e.path
            checked += 1
    assert checked > 60
    # the same names again: still the same numbers
    for e in os.scandir(proj / "branches/main/d"):
        assert e.inode() == os.lstat(e.path).st_ino


def test_ctl_requests_and_errors(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/ctl", "alice", "private")
    rnd = random.Random(5)
    files = {"a/one.bin": rnd.randbytes(3 << 20), "a/two.txt": b"two\n",
             "a/deep/three.txt": b"three\n", "with space/f.txt": b"spaced\n",
             UNICODE: b"unicode\n", "later.bin": rnd.randbytes(2 << 20)}
    push_repo(hub, tok, "alice/ctl", files, tmp_path)
    m = mount_factory(hub, tok)
    base = "alice/ctl/branches/main"
    root = m.mnt / base
    assert {"ctl", "ctl.error", "status"} <= set(os.listdir(m.mnt / ".reef"))
    st = os.stat(m.mnt / ".reef/ctl")
    assert stat.S_IMODE(st.st_mode) == 0o200 and stat.S_ISREG(st.st_mode)
    assert (m.mnt / ".reef/ctl.error").read_text() == ""

    # prefetch a directory, a file (through HEAD), a name with spaces and unicode
    assert ctl(m, f"prefetch {base}/a\n") == 0
    assert ctl(m, "prefetch alice/ctl/HEAD/later.bin") == 0
    assert ctl(m, f"prefetch {base}/with space/f.txt") == 0
    assert ctl(m, f"prefetch {m.mnt}/{base}/{UNICODE}") == 0  # the mount point is accepted
    st = wait_idle(m)
    assert st["ctl"]["requests"] == 4 and st["ctl"]["errors"] == 0
    for k in ("limit", "hit_ratio", "in_flight", "bytes_fetched", "last_errors"):
        assert k in st["cache"], k
    # everything prefetched reads with the hub gone (and the kernel caches dropped)
    port = hub.port
    assert hub.stop() == 0
    drop_kernel_caches()
    try:
        for rel in ("a/one.bin", "a/two.txt", "a/deep/three.txt", "later.bin",
                    "with space/f.txt", UNICODE):
            assert (root / rel).read_bytes() == files[rel], rel
    finally:
        hub.start(port=port)

    # forget drops the object and the kernel's pages: with the hub down, the next read
    # must fail (it really goes to the server), and works again once it is back
    assert ctl(m, f"forget {base}/a/one.bin") == 0
    assert hub.stop() == 0
    try:
        assert read_errno(root / "a/one.bin") == errno.EIO
        assert (root / "a/two.txt").read_bytes() == files["a/two.txt"]  # not forgotten
    finally:
        hub.start(port=port)
    deadline = time.time() + 20
    while read_errno(root / "a/one.bin") and time.time() < deadline:
        time.sleep(0.2)
    assert (root / "a/one.bin").read_bytes() == files["a/one.bin"]
    # forget of a directory
    assert ctl(m, f"forget {base}/a/deep") == 0
    assert ctl(m, "refresh") == 0
    assert ctl(m, f"refresh {base}") == 0

    # refusals, each with its reason in ctl.error
    cases = [
        ("frobnicate x", errno.EINVAL, "unknown command"),
        ("prefetch", errno.EINVAL, "needs a path"),
        (f"prefetch {base}/nope", errno.ENOENT, "ENOENT"),
        ("prefetch alice/nope/branches/main", errno.ENOENT, "ENOENT"),
        (f"forget {base}/../main/a", errno.EINVAL, ".."),
        ("prefetch .reef/status", errno.EINVAL, "inside a revision"),
        ("prefetch alice/ctl/branches", errno.EINVAL, "inside a revision"),
        (b"prefetch \x00\x01\x02", errno.EINVAL, "NUL"),
        (b"\xff\xfe\xfd garbage", errno.EINVAL, "unknown command"),
        ("refresh\nforget x", errno.EINVAL, "one request per write"),
        ("x" * (64 * 1024 + 1), errno.EFBIG, "at most"),
        ("prefetch " + "a/" * 3000, errno.ENAMETOOLONG, "longer"),
    ]
    for req, code, why in cases:
        assert ctl(m, req) == code, req
        err = (m.mnt / ".reef/ctl.error").read_text()
        assert why in err, (req, err)
        assert err.endswith("\n") and err.count("\n") == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ E[A-Z0-9]+: .+: .+\n", err), err
        assert errno.errorcode[code] in err
    assert ctl(m, "refresh") == 0  # a success keeps the last failure readable
    assert "longer" in (m.mnt / ".reef/ctl.error").read_text()
    # exactly 64 KiB is not oversize (it is an unknown command)
    assert ctl(m, "y" * (64 * 1024)) == errno.EINVAL
    # the control file is write-only, the rest of .reef read-only
    for flags in (os.O_RDONLY, os.O_RDWR):
        with pytest.raises(OSError) as e:
            os.open(m.mnt / ".reef/ctl", flags)
        assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        os.open(m.mnt / ".reef/ctl.error", os.O_WRONLY)
    assert e.value.errno == errno.EROFS
    # shell redirection (O_TRUNC|O_CREAT) works too
    with open(m.mnt / ".reef/ctl", "w") as f:
        f.write("refresh\n")
    st = status(m)
    assert st["ctl"]["errors"] == len(cases) + 1
    assert st["ctl"]["requests"] == 8 + len(cases) + 3


def test_ctl_concurrent_writers(hub, mount_factory, tmp_path):
    """Many writers at once, each its own open-write-close: every request is answered on
    its own (valid ones succeed, invalid ones fail), none is lost or merged."""
    from concurrent.futures import ThreadPoolExecutor

    tok = hub.user("alice")
    hub.project("alice/conc", "alice", "private")
    files = {f"d{i}/f.txt": f"{i}\n".encode() for i in range(8)}
    push_repo(hub, tok, "alice/conc", files, tmp_path)
    m = mount_factory(hub, tok)
    base = "alice/conc/branches/main"
    reqs = []
    for i in range(8):
        reqs += [(f"prefetch {base}/d{i}", 0), (f"refresh {base}/d{i}", 0),
                 (f"forget {base}/d{i}/f.txt", 0), (f"prefetch {base}/d{i}/nope", errno.ENOENT),
                 (f"bogus {i}", errno.EINVAL)]
    with ThreadPoolExecutor(max_workers=12) as ex:
        got = list(ex.map(lambda r: ctl(m, r[0]), reqs))
    assert got == [code for _, code in reqs]
    st = wait_idle(m)
    assert st["ctl"]["requests"] == len(reqs)
    assert st["ctl"]["errors"] == 16
    for rel, data in files.items():
        assert (m.mnt / base / rel).read_bytes() == data


def test_sibling_prefetch_is_bounded(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/seq", "alice", "private")
    rnd = random.Random(9)
    n = 32
    # above the raw threshold (1 MiB): a directory's small files come in one batch at
    # the first read (cache_bulk.c), larger ones one by one, which is what this tests
    files = {f"set/f{i:03d}.bin": rnd.randbytes((1 << 20) + 4096) for i in range(n)}
    push_repo(hub, tok, "alice/seq", files, tmp_path)
    m = mount_factory(hub, tok, extra_opts="prefetch=4")
    d = m.mnt / "alice/seq/branches/main/set"
    names = sorted(os.listdir(d))
    assert len(names) == n
    for name in names[:3]:  # three in order: the next four are fetched in the background
        assert (d / name).read_bytes() == files["set/" + name]
    st = wait_idle(m)
    assert st["prefetch"]["done"] >= 4
    port = hub.port
    assert hub.stop() == 0
    drop_kernel_caches()
    try:
        for name in names[3:7]:
            assert (d / name).read_bytes() == files["set/" + name], name
        # no storm: files well beyond the window were never fetched
        for name in names[12:]:
            assert read_errno(d / name) == errno.EIO, name
    finally:
        hub.start(port=port)
    # a directory read out of order does not prefetch
    st0 = status(m)["prefetch"]["done"]
    for name in (names[30], names[20], names[25]):
        assert (d / name).read_bytes() == files["set/" + name]
    time.sleep(0.5)
    assert status(m)["prefetch"]["done"] == st0


def test_push_shown_within_poll_interval(hub, mount_factory, tmp_path):
    """branch_ttl is long, so only the poller and the kernel invalidation it triggers can
    show the push; it must show within the poll interval plus a margin."""
    tok = hub.user("alice")
    hub.project("alice/live", "alice", "private")
    src, _ = push_repo(hub, tok, "alice/live", {"v.txt": b"one\n", "keep.txt": b"k\n"},
                       tmp_path)
    old_commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    poll = 1.0
    m = mount_factory(hub, tok, extra_opts=f"poll={poll:g},branch_ttl=3600")
    root = m.mnt / "alice/live/branches/main"
    assert (root / "v.txt").read_bytes() == b"one\n"
    assert sorted(os.listdir(root)) == ["keep.txt", "v.txt"]
    old_ino = os.stat(root).st_ino
    held = os.open(root, os.O_RDONLY | os.O_DIRECTORY)  # a directory kept open
    old_file = open(root / "v.txt", "rb")  # a file kept open
    try:
        time.sleep(poll * 2)  # let the poller see the branch in use
        (src / "v.txt").write_bytes(b"two\n")
        (src / "new.txt").write_bytes(b"new\n")
        git("add", "-A", cwd=src)
        git("commit", "-q", "-m", "move", cwd=src)
        new_commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
        git("push", "-q", hub.git_url("alice/live", token=tok), "main", cwd=src)
        pushed = time.time()
        seen_ls = seen_read = None
        while time.time() - pushed < poll + 10 and not (seen_ls and seen_read):
            if not seen_ls and "new.txt" in os.listdir(root):
                seen_ls = time.time() - pushed
            if not seen_read and (root / "v.txt").read_bytes() == b"two\n":
                seen_read = time.time() - pushed
            time.sleep(0.05)
        assert seen_ls is not None and seen_read is not None, "the push never showed"
        assert seen_ls < poll + 4 and seen_read < poll + 4, (seen_ls, seen_read)
        assert os.getxattr(root, "user.reef.commit").decode() == new_commit
        assert os.stat(root).st_ino != old_ino
        assert status(m)["invalidations"] >= 1
        # what was open keeps its consistent view of the old commit
        assert old_file.read() == b"one\n"
        assert sorted(os.listdir(held)) == ["keep.txt", "v.txt"]
        # immutable paths: the old commit is unchanged by sha
        assert (m.mnt / "alice/live/commits" / old_commit / "v.txt").read_bytes() == b"one\n"
    finally:
        old_file.close()
        os.close(held)


def test_immutable_paths_never_refetch(hub, mount_factory, tmp_path):
    """commits/ and tags/ are never polled and, once cached, never asked again: after the
    kernel forgot everything, walking and reading them costs no request at all."""
    tok = hub.user("alice")
    hub.project("alice/imm", "alice", "private")
    src, _ = push_repo(hub, tok, "alice/imm", {"a/f.txt": b"f\n", "g.bin": b"g" * 5000},
                       tmp_path)
    git("tag", "v1", cwd=src)
    git("push", "-q", hub.git_url("alice/imm", token=tok), "v1", cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    m = mount_factory(hub, tok, extra_opts="poll=0.5,branch_ttl=3600")
    roots = [m.mnt / "alice/imm/tags/v1", m.mnt / "alice/imm/commits" / commit,
             m.mnt / "alice/imm/commits" / commit[:8]]
    for r in roots:
        assert (r / "a/f.txt").read_bytes() == b"f\n" and (r / "g.bin").read_bytes() == b"g" * 5000
    before = status(m)["cache"]
    time.sleep(2)  # four poll intervals
    drop_kernel_caches()
    for r in roots:
        assert (r / "a/f.txt").read_bytes() == b"f\n" and (r / "g.bin").read_bytes() == b"g" * 5000
        assert sorted(os.listdir(r)) == ["a", "g.bin"]
    after = status(m)["cache"]
    assert after["requests"] == before["requests"], (before, after)
    assert after["polls"] == 0


def read_ahead_kb(mnt):
    # reefd sets it while it answers the kernel's INIT, which a mount can be visible
    # before (under load, seen): a stat of the root is answered only after INIT
    os.stat(mnt)
    with open("/proc/self/mountinfo") as f:
        dev = next(ln.split()[2] for ln in f if ln.split()[4] == str(mnt))
    return int(Path(f"/sys/class/bdi/{dev}/read_ahead_kb").read_text())


def test_readahead_option(hub, mount_factory):
    if os.getuid() != 0:
        pytest.skip("setting a mount's readahead needs root")
    tok = hub.user("alice")
    assert read_ahead_kb(mount_factory(hub, tok).mnt) == 1024
    assert read_ahead_kb(mount_factory(hub, tok, extra_opts="readahead=512", name="m2").mnt) \
        == 512


def test_odd_paths(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/odd", "alice", "private")
    long_ok = "n" * 255
    files = {"dir/a.txt": b"a\n", "with space.txt": b"s\n", UNICODE: b"u\n",
             long_ok: b"long\n", "dir/..x": b"dots\n"}
    push_repo(hub, tok, "alice/odd", files, tmp_path)
    m = mount_factory(hub, tok)
    root = m.mnt / "alice/odd/branches/main"
    for rel, data in files.items():
        assert (root / rel).read_bytes() == data, rel
    # ".." is the kernel's: it walks back up, and never escapes the mount
    assert Path(os.path.join(str(root), "dir", "..", "dir", "a.txt")).read_bytes() == b"a\n"
    assert os.path.realpath(os.path.join(str(m.mnt), "..")) == str(m.mnt.parent)
    assert sorted(os.listdir(os.path.join(str(root), "dir", ".."))) == sorted(os.listdir(root))
    # NUL cannot be passed through the os API at all
    with pytest.raises(ValueError):
        os.stat(str(root) + "/a\0b")
    # names longer than a tree entry may be: ENOENT (or the kernel's ENAMETOOLONG)
    for name in ("n" * 256, "x" * 1000, "y" * 4000):
        with pytest.raises(OSError) as e:
            os.stat(root / name)
        assert e.value.errno in (errno.ENOENT, errno.ENAMETOOLONG), name
    with pytest.raises(OSError) as e:
        os.stat(str(root) + "/" + "/".join(["d"] * 3000))
    assert e.value.errno == errno.ENAMETOOLONG
    # names a lookup refuses without asking anyone
    for rel in ("alice/odd/branches/main/nope", "alice/odd/branches/ma in",
                "alice/odd/commits/ZZZZ", "alice/o dd", "Alice/odd", "alice/odd/branches/..x",
                "alice/odd/tags/\u732b"):
        with pytest.raises(OSError) as e:
            os.stat(m.mnt / rel)
        assert e.value.errno == errno.ENOENT, rel
