"""reefd against a real reef-hub: a generated repository pushed with git, mounted with
FUSE, compared byte for byte (and with diff -r) with git's own checkouts of a branch, a
nested branch, tags and commits; HEAD, xattrs, .reef/status, EROFS, ENOENT, private
projects, a branch moving under the mount, and the program's option handling."""

import ctypes
import errno
import json
import os
import random
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REEFD_BIN, Hub, Mount, git

PROJECT = "acme/vision/cats"
SUBMODULE_SHA = "1234567890abcdef1234567890abcdef12345678"
NAMES_ODD = ["with space.txt", "unicod\u00e9 \u00f1.txt", "\u65e5\u672c\u8a9e"]
MANY = 1100


def write(path: Path, data, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    if mode is not None:
        path.chmod(mode)


def commit(repo, msg):
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", msg, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).stdout.strip()


def make_repo(d: Path):
    """A repository exercising what the mount must show; returns its commits in order."""
    git("init", "-q", "-b", "main", str(d))
    rnd = random.Random(7)
    write(d / "README.md", "# cats\n")
    write(d / "src/a/b/c/d/deep.txt", "deep down\n")
    write(d / "src/pkg/__init__.py", "")
    write(d / "src/pkg/mod.py", "def f():\n    return 42\n")
    for i in range(MANY):
        write(d / "many" / f"f{i:04d}.txt", f"file {i}\n" * (i % 7))
    write(d / "bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(d / "bin/tool", "#!/bin/sh\nexit 0\n", 0o755)
    write(d / NAMES_ODD[0], "spaces\n")
    write(d / NAMES_ODD[1], "accents\n")
    write(d / NAMES_ODD[2] / "\u30d5\u30a1\u30a4\u30eb.txt", "\u732b\n")
    write(d / "empty", b"")
    write(d / "data/big.bin", rnd.randbytes(10 << 20))
    (d / "links").mkdir()
    os.symlink("../src/a/b/c/d/deep.txt", d / "links/rel")
    os.symlink("../src", d / "links/dirlink")
    os.symlink("../nowhere/missing", d / "links/dangling")
    os.symlink("/nonexistent/absolute", d / "links/abs")
    commits = [commit(d, "initial")]
    git("update-index", "--add", "--cacheinfo", f"160000,{SUBMODULE_SHA},sub", cwd=d)
    git("commit", "-q", "-m", "add a submodule entry", cwd=d)
    (d / "sub").mkdir()  # as a clone leaves it; else "add -A" would stage its removal
    commits.append(git("rev-parse", "HEAD", cwd=d).stdout.strip())
    for i in range(22):
        with open(d / "history.txt", "a") as f:
            f.write(f"change {i}\n")
        write(d / "log" / f"entry-{i:02d}.txt", f"entry {i}\n")
        if i == 10:
            (d / "bin/tool").chmod(0o644)  # a mode change in history
        commits.append(commit(d, f"change {i}"))
    git("tag", "v0.1", commits[5], cwd=d)
    git("tag", "-a", "-m", "release 1.0", "v1.0", cwd=d)
    git("checkout", "-q", "-b", "feature/x", cwd=d)
    write(d / "feature.txt", "a feature\n")
    write(d / "README.md", "# cats, featuring x\n")
    commit(d, "feature x")
    git("checkout", "-q", "main", cwd=d)
    git("branch", "live", cwd=d)
    for c in (commits[-1], "feature/x"):
        assert git("ls-tree", c, "sub", cwd=d).stdout.startswith("160000 commit"), c
    return commits


class World:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("mount")
    hub = Hub(base).start()
    w = World()
    w.hub = hub
    w.base = base
    mounts = []
    try:
        w.alice = hub.user("alice")
        w.bob = hub.user("bob")
        hub.project(PROJECT, "alice", "private")
        hub.project("bob/secret", "bob", "private")
        hub.project("acme/empty", "alice", "private")
        w.src = base / "src"
        w.commits = make_repo(w.src)
        url = hub.git_url(PROJECT, token=w.alice)
        git("push", "-q", url, "--all", cwd=w.src)
        git("push", "-q", url, "--tags", cwd=w.src)
        w.clone = base / "clone"
        git("clone", "-q", url, str(w.clone))
        (base / "m").mkdir()
        w.m = Mount(base / "m", hub, w.alice, extra_opts="branch_ttl=2").start()
        mounts.append(w.m)
        w.proj = w.m.mnt / PROJECT
        w.checkouts = {}
        yield w
    finally:
        codes = [m.stop() for m in mounts]
        left = [m for m in mounts if m.mounted()]
        hub_code = hub.stop()
    assert not left, "mount left behind"
    assert codes == [0] * len(codes), f"reefd exited {codes}; log: {w.m.log_path.read_text()}"
    assert hub_code == 0


def checkout(w, rev):
    """A git worktree of rev (detached), made once per revision."""
    if rev not in w.checkouts:
        path = w.base / "co" / rev.replace("/", "_")
        path.parent.mkdir(exist_ok=True)
        git("worktree", "add", "-q", "--detach", str(path), rev, cwd=w.clone)
        w.checkouts[rev] = path
    return w.checkouts[rev]


def rev_parse(w, what):
    return git("rev-parse", what, cwd=w.clone).stdout.strip()


def compare(mnt_root: Path, ref_root: Path):
    """Walks git's checkout and requires the mount to hold exactly the same names, types,
    modes, sizes, symlink targets and bytes. Returns the number of entries compared."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(ref_root):
        rel = os.path.relpath(dirpath, ref_root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        mdir = mnt_root / rel
        assert sorted(os.listdir(mdir)) == sorted(dirnames + filenames), rel
        for name in dirnames + filenames:
            a, b = Path(dirpath) / name, mdir / name
            sa, sb = os.lstat(a), os.lstat(b)
            what = f"{rel}/{name}"
            assert stat.S_IFMT(sa.st_mode) == stat.S_IFMT(sb.st_mode), what
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b), what
                assert sb.st_size == len(os.fsencode(os.readlink(a))), what
            elif stat.S_ISREG(sa.st_mode):
                want = 0o755 if sa.st_mode & 0o100 else 0o644
                assert stat.S_IMODE(sb.st_mode) == want, what
                assert sb.st_size == sa.st_size, what
                assert b.read_bytes() == a.read_bytes(), what
            else:
                assert stat.S_IMODE(sb.st_mode) == 0o755, what
            assert sb.st_uid == os.getuid() and sb.st_gid == os.getgid(), what
            assert sb.st_nlink >= 1
            count += 1
    return count


def test_namespaces_and_project_layout(world):
    m = world.m.mnt
    assert sorted(os.listdir(m)) == [".reef", "acme"]
    assert sorted(os.listdir(m / "acme")) == ["empty", "vision"]
    assert os.listdir(m / "acme/vision") == ["cats"]
    assert sorted(os.listdir(world.proj)) == ["HEAD", "branches", "commits", "data-pipelines",
                                              "experiments", "pipelines", "tags",
                                              "visualizations"]
    assert os.readlink(world.proj / "HEAD") == "branches/main"
    assert os.path.realpath(world.proj / "HEAD") == str(world.proj / "branches/main")
    assert sorted(os.listdir(world.proj / "HEAD")) == sorted(os.listdir(world.proj /
                                                                       "branches/main"))
    assert sorted(os.listdir(world.proj / "branches")) == ["feature", "live", "main"]
    assert os.listdir(world.proj / "branches/feature") == ["x"]
    assert sorted(os.listdir(world.proj / "tags")) == ["v0.1", "v1.0"]
    assert os.listdir(world.proj / "commits") == []
    for d in [m, m / "acme", world.proj, world.proj / "branches", world.proj / "branches/main"]:
        st = os.stat(d)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


@pytest.mark.parametrize("label", ["main", "feature/x", "v0.1", "v1.0", "full", "short"])
def test_revision_matches_git_checkout(world, label):
    if label in ("main", "feature/x"):
        rev, path = f"origin/{label}", world.proj / "branches" / label
    elif label.startswith("v"):
        rev, path = label, world.proj / "tags" / label
    else:
        rev = world.commits[12]
        path = world.proj / "commits" / (rev if label == "full" else rev[:7])
    n = compare(path, checkout(world, rev))
    assert n > MANY


def test_diff_r_against_checkout(world):
    co = checkout(world, "origin/main")
    r = subprocess.run(["diff", "-r", "--no-dereference", "-x", ".git",
                        str(world.proj / "branches/main"), str(co)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_special_entries(world):
    rev = world.proj / "branches/main"
    big = rev / "data/big.bin"
    assert big.stat().st_size == 10 << 20
    assert (rev / "empty").stat().st_size == 0
    assert (rev / "empty").read_bytes() == b""
    assert os.readlink(rev / "links/dangling") == "../nowhere/missing"
    assert not (rev / "links/dangling").exists()
    assert (rev / "links/rel").read_text() == "deep down\n"
    assert sorted(os.listdir(rev / "links/dirlink")) == ["a", "pkg"]
    assert stat.S_ISDIR(os.lstat(rev / "sub").st_mode) and os.listdir(rev / "sub") == []
    assert len(os.listdir(rev / "many")) == MANY
    assert stat.S_IMODE(os.stat(rev / "bin/run.sh").st_mode) == 0o755
    # the mode change in history shows at the right commits
    assert stat.S_IMODE(os.stat(world.proj / "commits" / world.commits[5] /
                                "bin/tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(rev / "bin/tool").st_mode) == 0o644
    # reading at offsets (pread) gives the right bytes of a large blob
    data = (world.src / "data/big.bin").read_bytes()
    with open(big, "rb") as f:
        for off in (0, 4095, 1 << 20, (10 << 20) - 100):
            f.seek(off)
            assert f.read(300) == data[off:off + 300]
    # inode numbers are stable while a node lives
    assert os.stat(rev / "README.md").st_ino == os.stat(rev / "README.md").st_ino


libc = ctypes.CDLL(None, use_errno=True)
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t


def xattr_size(path, name):
    r = libc.getxattr(os.fsencode(str(path)), name.encode(), None, 0)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(path))
    return r


def test_xattrs(world):
    commit = rev_parse(world, "origin/main")
    for branch_path, rev in [("branches/main", "origin/main"),
                             (f"commits/{world.commits[3][:8]}", world.commits[3]),
                             ("tags/v1.0", "v1.0")]:
        root = world.proj / branch_path
        c = rev_parse(world, rev + "^{commit}")
        assert os.getxattr(root, "user.reef.commit").decode() == c
        assert os.getxattr(root, "user.reef.oid").decode() == rev_parse(world, rev + "^{tree}")
        for rel in ["README.md", "src/a/b/c/d/deep.txt", "many/f0500.txt", NAMES_ODD[1]]:
            assert os.getxattr(root / rel, "user.reef.oid").decode() == \
                rev_parse(world, f"{rev}:{rel}")
            assert os.getxattr(root / rel, "user.reef.commit").decode() == c
        for rel in ["src", "src/a/b"]:
            assert os.getxattr(root / rel, "user.reef.oid").decode() == \
                rev_parse(world, f"{rev}:{rel}")
            assert os.getxattr(root / rel, "user.reef.commit").decode() == c
    f = world.proj / "branches/main/README.md"
    assert sorted(os.listxattr(f)) == ["user.reef.commit", "user.reef.oid"]
    assert sorted(os.listxattr(world.proj / "branches/main")) == ["user.reef.commit",
                                                                  "user.reef.oid"]
    assert xattr_size(f, "user.reef.oid") == 40
    assert xattr_size(world.proj / "branches/main", "user.reef.commit") == 40
    assert os.getxattr(world.proj / "branches/main/sub", "user.reef.oid").decode() == \
        SUBMODULE_SHA
    for path, name in [(f, "user.reef.nope"), (world.proj, "user.reef.oid"),
                       (world.m.mnt, "user.reef.commit")]:
        with pytest.raises(OSError) as e:
            os.getxattr(path, name)
        assert e.value.errno == errno.ENODATA
    assert os.listxattr(world.proj) == []
    assert commit == os.getxattr(world.proj / "HEAD", "user.reef.commit").decode()


def test_status(world):
    st = json.loads((world.m.mnt / ".reef/status").read_text())
    assert st["server"] == world.hub.url
    assert st["user"] == "alice"
    for k in ["bytes", "objects", "hits", "misses", "requests", "errors"]:
        assert isinstance(st["cache"][k], int), k
    assert st["cache"]["objects"] > 0 and st["cache"]["bytes"] > 0
    assert st["version"]
    assert st["mounted_at"].endswith("Z")
    assert sorted(os.listdir(world.m.mnt / ".reef")) == ["cache.json", "ctl", "ctl.error",
                                                          "processors", "status", "usage.json"]


def expect_errno(code, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == code, f"{fn.__name__}{args}: {e.value}"


def test_writes_are_erofs(world):
    """Tags and commits are read-only; branch views are writable
    (test_mount_write.py)."""
    for rev in (world.proj / "tags/v1.0", world.proj / "commits" / world.commits[-1]):
        check_erofs(world, rev)
    expect_errno(errno.EROFS, os.symlink, "x", world.proj / "HEAD2")
    expect_errno(errno.EROFS, os.unlink, world.proj / "HEAD")


def check_erofs(world, rev):
    f = rev / "README.md"
    before = f.read_bytes()
    expect_errno(errno.EROFS, open, f, "wb")
    expect_errno(errno.EROFS, open, f, "ab")
    expect_errno(errno.EROFS, open, f, "r+b")
    expect_errno(errno.EROFS, os.open, f, os.O_RDONLY | os.O_TRUNC)
    expect_errno(errno.EROFS, open, rev / "new-file", "w")
    expect_errno(errno.EROFS, os.mkdir, rev / "newdir")
    expect_errno(errno.EROFS, os.mkdir, world.m.mnt / "newgroup")
    expect_errno(errno.EROFS, os.mkdir, world.proj / "branches/newbranch")
    expect_errno(errno.EROFS, os.unlink, f)
    expect_errno(errno.EROFS, os.rmdir, rev / "sub")
    expect_errno(errno.EROFS, os.rename, f, rev / "README2.md")
    expect_errno(errno.EROFS, os.link, f, rev / "hard")
    expect_errno(errno.EROFS, os.symlink, "x", rev / "sym")
    expect_errno(errno.EROFS, os.chmod, f, 0o600)
    expect_errno(errno.EROFS, os.truncate, f, 0)
    expect_errno(errno.EROFS, os.utime, f, (0, 0))
    expect_errno(errno.EROFS, os.setxattr, f, "user.x", b"1")
    expect_errno(errno.EROFS, os.removexattr, f, "user.reef.oid")
    os.chmod(f, 0o644)  # a no-op change is not an error
    assert f.read_bytes() == before


def test_unknown_paths_are_enoent(world):
    p = world.proj
    for path in [world.m.mnt / "nope", world.m.mnt / "acme/nope", world.m.mnt / ".nope",
                 p / "nope", p / "branches/nope", p / "branches/feature/nope",
                 p / "tags/v9", p / "commits/0000000", p / "commits/zzzz",
                 p / "commits/abc", p / "branches/main/nope", p / "branches/main/src/nope",
                 world.m.mnt / ".reef/nope", p / "branches/main/sub/x"]:
        expect_errno(errno.ENOENT, os.stat, path)
    expect_errno(errno.ENOTDIR, os.stat, p / "branches/main/README.md/x")


def test_private_project_invisible(world):
    import gitlab

    m = world.m.mnt
    assert "bob" not in os.listdir(m)
    expect_errno(errno.ENOENT, os.stat, m / "bob")
    expect_errno(errno.ENOENT, os.stat, m / "bob/secret")
    expect_errno(errno.ENOENT, os.listdir, m / "bob/secret/branches")
    gl = gitlab.Gitlab(world.hub.url, private_token=world.alice)
    with pytest.raises(gitlab.exceptions.GitlabGetError) as e:
        gl.projects.get("bob/secret")
    assert e.value.response_code == 404
    # bob himself sees it through the API, so it exists
    assert gitlab.Gitlab(world.hub.url, private_token=world.bob).projects.get(
        "bob/secret").path_with_namespace == "bob/secret"


def test_push_moves_branch(world):
    live = world.proj / "branches/live"
    old = (live / "history.txt").read_bytes()
    old_ino = os.stat(live).st_ino
    wt = world.base / "pusher"
    git("clone", "-q", "-b", "live", world.hub.git_url(PROJECT, token=world.alice), str(wt))
    with open(wt / "history.txt", "a") as f:
        f.write("moved\n")
    write(wt / "added-later.txt", "later\n")
    new_commit = commit(wt, "move live")
    git("push", "-q", "origin", "live", cwd=wt)
    deadline = time.time() + 30
    while time.time() < deadline:
        if (live / "history.txt").read_bytes() != old:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the mount never showed the pushed commit")
    assert (live / "history.txt").read_bytes() == old + b"moved\n"
    assert (live / "added-later.txt").read_text() == "later\n"
    assert os.getxattr(live, "user.reef.commit").decode() == new_commit
    assert os.stat(live).st_ino != old_ino
    # the old commit is still there, unchanged, by sha
    assert (world.proj / "commits" / world.commits[-1] / "history.txt").read_bytes() == old


def test_readdir_and_find(world):
    rev = world.proj / "branches/main"
    r = subprocess.run(["find", str(rev), "-printf", "%y %P\n"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run(["find", ".", "-path", "./.git", "-prune", "-o", "-printf",
                         "%y %P\n"], cwd=checkout(world, "origin/main"),
                        capture_output=True, text=True, timeout=300)
    assert sorted(r.stdout.splitlines()) == sorted(r2.stdout.splitlines())
    assert len(r.stdout.splitlines()) > MANY
    # reading a big directory in small getdents chunks still yields every name once
    fd = os.open(rev / "many", os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    assert len(names) == len(set(names)) == MANY


def test_statfs(world):
    s = os.statvfs(world.m.mnt)
    assert s.f_namemax == 255 and s.f_bsize > 0
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == str(world.m.mnt))
    assert " fuse.reef " in line and " reef " in line
    assert "allow_other" not in line


def run_reefd(args, env=None, timeout=20):
    e = dict(os.environ)
    e.pop("REEF_TOKEN", None)
    if env:
        e.update(env)
    return subprocess.run([str(REEFD_BIN), *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def test_token_file_readable_by_others_is_refused(world, tmp_path):
    tok = tmp_path / "token"
    tok.write_text(world.alice + "\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for mode in (0o644, 0o640, 0o602):
        tok.chmod(mode)
        r = run_reefd(["-f", "-o", f"server={world.hub.url},token_file={tok},"
                       f"cache={tmp_path}/c", str(mnt)])
        assert r.returncode == 1, r.stderr
        assert "group or others" in r.stderr
        assert world.alice not in r.stderr + r.stdout
        assert not Mount.mounted(type("M", (), {"mnt": mnt})())


def test_usage_errors(world, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    tok = tmp_path / "token"
    tok.write_text(world.alice)
    tok.chmod(0o600)
    for args in [[], ["-f", str(mnt)], ["-f", "-o", f"token_file={tok}", str(mnt)],
                 ["-f", "-o", f"server={world.hub.url}", str(mnt)],
                 ["-f", "-o", f"server={world.hub.url},token_file={tok}"],
                 ["-f", "-o", f"server={world.hub.url},token_file={tok},branch_ttl=x",
                  str(mnt)],
                 ["-f", "-o", f"server={world.hub.url},token_file={tok},bogus=1", str(mnt)]] + \
            [["-f", "-o", f"server={world.hub.url},token_file={tok},{bad}", str(mnt)]
             for bad in ("poll=0", "poll=x", "cache_limit=12Q", "cache_limit=0",
                         "cache_limit=-5M", "prefetch=65", "prefetch=-1", "readahead=x")]:
        r = run_reefd(args)
        assert r.returncode == 2, (args, r.stderr)
        assert "usage" in r.stderr.lower() or "unknown option" in r.stderr.lower() or \
            "must be" in r.stderr, r.stderr


def test_bad_token_is_refused(world, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run_reefd(["-f", "-o", f"server={world.hub.url},cache={tmp_path}/c", str(mnt)],
                  env={"REEF_TOKEN": "not-a-valid-token-at-all"})
    assert r.returncode == 1
    assert "refused the token" in r.stderr
    assert "not-a-valid-token-at-all" not in r.stderr


def find_pid(argv):
    """The pid of the process we started with exactly this argv."""
    want = "\0".join(argv) + "\0"
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_text() == want and alive(int(d.name)):
                    return int(d.name)
            except OSError:
                continue
    raise AssertionError(f"no process {argv}")


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_env_token_background_mount_and_sigterm(world, tmp_path):
    """REEF_TOKEN, the default background mode (the parent returns once mounted), and
    SIGTERM ending the daemon with a clean unmount and exit 0."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    r = run_reefd(["-o", f"server={world.hub.url}", str(mnt)],
                  env={"REEF_TOKEN": world.alice, "HOME": str(home),
                       "XDG_CACHE_HOME": ""})
    assert r.returncode == 0, r.stderr
    fake = type("M", (), {"mnt": mnt})()
    try:
        assert Mount.mounted(fake)
        assert "acme" in os.listdir(mnt)
        assert (mnt / PROJECT / "branches/main/README.md").read_text() == "# cats\n"
        # the default cache directory is per server, under ~/.cache/reef
        host_port = world.hub.url.split("://")[1].replace(":", "_")
        assert (home / ".cache/reef" / host_port).is_dir()
        pid = find_pid([str(REEFD_BIN), "-o", f"server={world.hub.url}", str(mnt)])
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while time.time() < deadline and (Mount.mounted(fake) or alive(pid)):
            time.sleep(0.1)
        assert not alive(pid)
        assert not Mount.mounted(fake)
    finally:
        if Mount.mounted(fake):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)


def test_sigterm_exits_zero(world, tmp_path):
    m = Mount(tmp_path, world.hub, world.alice).start()
    try:
        assert "acme" in os.listdir(m.mnt)
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(timeout=15) == 0
        assert not m.mounted()
    finally:
        code = m.stop()
    assert code == 0


def test_empty_project_has_no_head(world):
    p = world.m.mnt / "acme/empty"
    assert sorted(os.listdir(p)) == ["branches", "commits", "data-pipelines", "experiments",
                                     "pipelines", "tags", "visualizations"]
    expect_errno(errno.ENOENT, os.lstat, p / "HEAD")
    assert os.listdir(p / "branches") == [] and os.listdir(p / "tags") == []


def test_concurrent_reads(world):
    """Many threads through the multithreaded loop at once, on paths never read before:
    every byte must match git's."""
    from concurrent.futures import ThreadPoolExecutor

    rev = world.commits[8]
    root = world.proj / "commits" / rev
    co = checkout(world, rev)
    names = [f"many/f{i:04d}.txt" for i in range(0, MANY, 5)] + ["data/big.bin"] * 4

    def check(name):
        return (root / name).read_bytes() == (co / name).read_bytes()

    with ThreadPoolExecutor(max_workers=16) as ex:
        results = list(ex.map(check, names))
    assert all(results)
