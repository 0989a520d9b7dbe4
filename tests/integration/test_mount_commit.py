"""reef commit, status, diff and discard (docs/write.md): a branch view's pending changes
become one commit pushed with receive-pack (checked with git clone, byte for byte and
mode for mode), a branch that moved is either rebuilt on (no overlap) or refused with
the paths named (overlap), permissions are the server's, and the overlay is dropped only
after the branch moved."""

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import REEF_BIN, data_repo, git


def reef(*args, check=True):
    r = subprocess.run([str(REEF_BIN), *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, f"reef {args}: {r.returncode} {r.stderr}"
    return r


@pytest.fixture
def repo(hub, tmp_path):
    files = {
        "README.md": b"# data\n",
        "data/a.csv": b"x,y\n1,2\n",
        "data/b.csv": b"x,y\n3,4\n" * 1000,
        "sub/deep/x.txt": b"deep\n",
        "keep/k.txt": b"kept\n",
        "run.sh": b"#!/bin/sh\necho hi\n",
    }
    return data_repo(hub, tmp_path, files, executable=["run.sh"])


def clone(url, dest):
    git("clone", "-q", url, str(dest))
    return dest


def tree_of(d):
    """path -> (bytes or link target, executable) of a checkout, .git left out."""
    out = {}
    for root, dirs, files in os.walk(d):
        dirs[:] = [x for x in dirs if x != ".git"]
        for f in files + [x for x in dirs if os.path.islink(os.path.join(root, x))]:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, d)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = (open(p, "rb").read(), bool(os.stat(p).st_mode & 0o100))
    return out


def head_of(hub, tok, branch="main"):
    r = hub.api("GET", f"/projects/alice%2Fdata/repository/branches/{branch}", tok)
    return r.json()["commit"]["id"]


def test_commit_round_trip(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    rnd = random.Random(1)
    big = rnd.randbytes(5 << 20)
    (b / "new.csv").write_bytes(b"n\n1\n")
    (b / "big.bin").write_bytes(big)
    with open(b / "data/a.csv", "ab") as f:
        f.write(b"5,6\n")
    os.unlink(b / "README.md")
    os.rename(b / "sub", b / "moved")
    os.rename(b / "data/b.csv", b / "b2.csv")
    os.chmod(b / "run.sh", 0o644)
    os.symlink("new.csv", b / "ln")
    os.makedirs(b / "empty/dir")  # git keeps no empty directory
    (b / "nested/x").mkdir(parents=True)
    (b / "nested/x/y.txt").write_text("y\n")

    st = reef("status", b).stdout
    assert "pending change" in st and "new.csv" in st and "deleted" in st, st
    js = reef("status", "--json", b).stdout
    assert '"renamed"' in js and '"b2.csv"' in js
    diff = reef("diff", b).stdout
    assert "+5,6" in diff and "--- a/data/a.csv" in diff

    expect = tree_of(b)
    r = reef("commit", "-m", "publish from the mount", b)
    new = r.stdout.strip()
    assert len(new) == 40 and new != repo["commit"]
    assert head_of(hub, repo["tok"]) == new
    # the overlay is gone, the view shows the new head with the same content
    assert "0 pending changes" in reef("status", b).stdout
    assert os.getxattr(b, "user.reef.commit").decode() == new
    assert tree_of(b) == {k: v for k, v in expect.items()}
    # git sees exactly what the mount showed
    c = clone(repo["url"], tmp_path / "check")
    got = tree_of(c)
    assert got == expect
    assert "empty" not in os.listdir(c)
    assert git("log", "-1", "--format=%an|%s|%P", cwd=c).stdout.strip() == \
        f"alice|publish from the mount|{repo['commit']}"
    assert git("fsck", "--strict", cwd=c).returncode == 0
    # nothing left to commit
    r = reef("commit", "-m", "again", b, check=False)
    assert r.returncode == 1 and "nothing to commit" in r.stderr


def test_branch_moved_without_overlap(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    with open(b / "data/a.csv", "ab") as f:
        f.write(b"mine\n")
    # someone else pushes a change to another path
    other = clone(repo["url"], tmp_path / "other")
    (other / "README.md").write_text("# theirs\n")
    git("commit", "-qam", "theirs", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other).stdout.strip()
    new = reef("commit", "-m", "mine", b).stdout.strip()
    c = clone(repo["url"], tmp_path / "check")
    assert (c / "README.md").read_text() == "# theirs\n"
    assert (c / "data/a.csv").read_bytes() == b"x,y\n1,2\nmine\n"
    assert git("log", "-1", "--format=%P", cwd=c).stdout.strip() == theirs
    assert git("rev-parse", "HEAD", cwd=c).stdout.strip() == new


def test_branch_moved_with_overlap_is_refused(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    with open(b / "data/a.csv", "ab") as f:
        f.write(b"mine\n")
    (b / "keep/k.txt").write_text("mine too\n")
    other = clone(repo["url"], tmp_path / "other")
    (other / "data/a.csv").write_text("theirs\n")
    git("commit", "-qam", "theirs", cwd=other)
    git("push", "-q", "origin", "main", cwd=other)
    theirs = git("rev-parse", "HEAD", cwd=other).stdout.strip()
    r = reef("commit", "-m", "mine", b, check=False)
    assert r.returncode == 1
    assert "data/a.csv" in r.stderr and "keep" not in r.stderr.split("changed:")[-1], r.stderr
    assert "EBUSY" in r.stderr
    assert head_of(hub, repo["tok"]) == theirs  # nothing lost, nothing committed
    # the overlay is kept: both changes still pending
    st = reef("status", b).stdout
    assert "data/a.csv" in st and "keep/k.txt" in st
    # discarding the conflicting path lets the rest go
    reef("discard", b, b / "data/a.csv")
    assert "data/a.csv" not in reef("status", b).stdout
    new = reef("commit", "-m", "mine", b).stdout.strip()
    c = clone(repo["url"], tmp_path / "check")
    assert (c / "data/a.csv").read_text() == "theirs\n"
    assert (c / "keep/k.txt").read_text() == "mine too\n"
    assert git("rev-parse", "HEAD", cwd=c).stdout.strip() == new


def test_discard_all(hub, repo, mount_factory):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    (b / "x.txt").write_text("x")
    os.unlink(b / "README.md")
    reef("discard", b)
    assert not (b / "x.txt").exists()
    assert (b / "README.md").read_bytes() == b"# data\n"
    assert "0 pending changes" in reef("status", b).stdout
    # status outside a branch view keeps its meaning
    assert "cache:" in reef("status", m.mnt).stdout


def test_permissions(hub, repo, mount_factory):
    bob = hub.user("bob")
    carol = hub.user("carol")
    hub.member("alice/data", "bob", "developer")
    hub.member("alice/data", "carol", "reporter")
    before = head_of(hub, repo["tok"])
    # a developer on the protected default branch: the hook's refusal is shown
    mb = mount_factory(hub, bob, name="bob")
    b = mb.mnt / "alice/data/branches/main"
    (b / "bob.txt").write_text("bob")
    r = reef("commit", "-m", "bob", b, check=False)
    assert r.returncode == 1 and "EACCES" in r.stderr
    assert "protected branch" in r.stderr, r.stderr
    assert (b / "bob.txt").read_text() == "bob"  # kept
    # a reporter may not push at all
    mc = mount_factory(hub, carol, name="carol")
    c = mc.mnt / "alice/data/branches/main"
    (c / "carol.txt").write_text("carol")
    r = reef("commit", "-m", "carol", c, check=False)
    assert r.returncode == 1 and "EACCES" in r.stderr and "may not push" in r.stderr, r.stderr
    assert head_of(hub, repo["tok"]) == before


def test_commit_survives_kill9_before_commit(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    (b / "after-crash.txt").write_text("durable\n")
    m.kill9_restart()
    new = reef("commit", "-m", "after a crash", b).stdout.strip()
    c = clone(repo["url"], tmp_path / "check")
    assert (c / "after-crash.txt").read_text() == "durable\n"
    assert git("rev-parse", "HEAD", cwd=c).stdout.strip() == new


def lfs_env(tmp_path):
    home = tmp_path / "lfshome"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home)}
    git("lfs", "install", "--skip-repo", env=env)
    return env


def lfs_branch(hub, repo, mount_factory, tmp_path, more):
    """The repository with `*.bin` tracked by LFS (plus the files in more) pushed, and a
    mount's view of its main branch; returns git-lfs's environment and that view."""
    env = lfs_env(tmp_path)
    src = repo["src"]
    (src / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    for path, text in more.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(text)
    git("add", "-A", cwd=src)
    git("commit", "-qm", "track bin", cwd=src)
    git("push", "-q", repo["url"], "main", cwd=src)
    m = mount_factory(hub, repo["tok"])
    return env, m.mnt / "alice/data/branches/main"


def test_lfs_by_gitattributes_and_size(hub, repo, mount_factory, tmp_path):
    env, b = lfs_branch(hub, repo, mount_factory, tmp_path, {})
    rnd = random.Random(7)
    binary = rnd.randbytes(3 << 20)
    large = rnd.randbytes((2 << 20) + 5)
    (b / "weights.bin").write_bytes(binary)
    (b / "d").mkdir()
    (b / "d/big table.dat").write_bytes(large)  # not tracked: by its size
    (b / "small.dat").write_bytes(b"small\n")
    reef("commit", "-m", "lfs", "--lfs-above", "1M", b)
    # the branch holds pointers; the mount shows the objects again
    assert (b / "weights.bin").read_bytes() == binary
    assert (b / "d/big table.dat").read_bytes() == large
    assert len(os.getxattr(b / "weights.bin", "user.reef.lfs.oid")) == 64
    ga = (b / ".gitattributes").read_text()
    assert "/d/big[[:space:]]table.dat filter=lfs diff=lfs merge=lfs -text" in ga
    assert ga.startswith("*.bin filter=lfs")
    c = tmp_path / "check"
    git("clone", "-q", repo["url"], str(c), env=env)
    assert (c / "weights.bin").read_bytes() == binary
    assert (c / "d/big table.dat").read_bytes() == large
    assert (c / "small.dat").read_bytes() == b"small\n"
    files = git("lfs", "ls-files", "-n", cwd=c, env=env).stdout.split("\n")
    assert "weights.bin" in files and "d/big table.dat" in files and "small.dat" not in files
    assert git("lfs", "fsck", cwd=c, env=env).returncode == 0
    # the pointer in git is git-lfs's own format
    ptr = git("cat-file", "-p", "HEAD:weights.bin", cwd=c).stdout
    assert ptr.startswith("version https://git-lfs.github.com/spec/v1\noid sha256:")


def hub_git_children(hub):
    """The hub's running `git` descendants (http-backend, receive-pack, index-pack)."""
    found, todo = [], [hub.proc.pid]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{pid}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                continue
            for k in kids:
                todo.append(k)
                try:
                    with open(f"/proc/{k}/comm") as f:
                        if f.read().startswith("git"):
                            found.append(k)
                except FileNotFoundError:
                    pass
    return found


def commit_count(hub, tok):
    r = hub.api("GET", "/projects/alice%2Fdata/repository/commits?ref_name=main&per_page=100",
                tok)
    return len(r.json())


def test_crash_between_push_and_drop_commits_once(hub, repo, mount_factory, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("REEFD_FAULT_AFTER_PUSH", "1")
    m = mount_factory(hub, repo["tok"])
    monkeypatch.delenv("REEFD_FAULT_AFTER_PUSH")
    b = m.mnt / "alice/data/branches/main"
    (b / "once.txt").write_text("once\n")
    before = commit_count(hub, repo["tok"])
    r = reef("commit", "-m", "once", b, check=False)
    assert r.returncode != 0  # the daemon died under it
    m.proc.wait(timeout=10)
    m.kill9_restart()
    # the push landed: the restarted daemon sees its journaled intent on the server
    assert commit_count(hub, repo["tok"]) == before + 1
    assert "0 pending changes" in reef("status", b).stdout
    r = reef("commit", "-m", "twice?", b, check=False)
    assert r.returncode == 1 and "nothing to commit" in r.stderr
    assert commit_count(hub, repo["tok"]) == before + 1
    assert (b / "once.txt").read_text() == "once\n"


def test_kill9_during_upload_moves_at_most_once(hub, repo, mount_factory, tmp_path):
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    data = random.Random(9).randbytes(96 << 20)
    (b / "large.bin").write_bytes(data)
    before = commit_count(hub, repo["tok"])
    p = subprocess.Popen([str(REEF_BIN), "commit", "-m", "large", str(b)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    m.proc.send_signal(signal.SIGKILL)
    m.proc.wait()
    # the hub spools a push's whole body before git sees it: a push whose last byte left
    # before the kill may still land. The restarted reefd decides once whether its
    # journaled commit arrived, so let the hub finish first (bounded).
    deadline = time.monotonic() + 60
    while hub_git_children(hub) and time.monotonic() < deadline:
        time.sleep(0.1)
    m.kill9_restart()
    p.communicate(timeout=60)
    st = reef("status", b).stdout
    moved = commit_count(hub, repo["tok"]) - before
    assert moved in (0, 1)
    if moved == 0:  # the upload did not finish: the change is still pending, intact
        assert "large.bin" in st
        reef("commit", "-m", "large", b)
    else:
        assert "0 pending changes" in st
    assert commit_count(hub, repo["tok"]) == before + 1
    c = clone(repo["url"], tmp_path / "check")
    assert (c / "large.bin").read_bytes() == data


def test_open_descriptor_across_commit_keeps_later_writes(hub, repo, mount_factory, tmp_path):
    """A writer that keeps its file open across reef commit: what it wrote before is in
    the commit, what it writes after is a pending change on the new head (nothing
    acknowledged is lost), as on a local filesystem."""
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    fd = os.open(b / "log.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    fd2 = os.open(b / "data/a.csv", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"first\n")
        os.write(fd2, b"7,8\n")
        first = reef("commit", "-m", "first part", b).stdout.strip()
        assert head_of(hub, repo["tok"]) == first
        os.write(fd, b"second\n")
        os.write(fd2, b"9,10\n")
        # a discard of another path does not detach them either
        (b / "other.txt").write_text("o\n")
        reef("discard", b, "other.txt")
        os.write(fd, b"third\n")
    finally:
        os.close(fd)
        os.close(fd2)
    assert (b / "log.txt").read_bytes() == b"first\nsecond\nthird\n"
    assert (b / "data/a.csv").read_bytes() == b"x,y\n1,2\n7,8\n9,10\n"
    st = reef("status", "--json", b).stdout
    assert '"log.txt"' in st and '"data/a.csv"' in st, st
    second = reef("commit", "-m", "second part", b).stdout.strip()
    c = clone(repo["url"], tmp_path / "check")
    assert git("log", "-1", "--format=%P", cwd=c).stdout.strip() == first
    assert (c / "log.txt").read_bytes() == b"first\nsecond\nthird\n"
    assert (c / "data/a.csv").read_bytes() == b"x,y\n1,2\n7,8\n9,10\n"
    assert head_of(hub, repo["tok"]) == second


def test_open_descriptor_across_discard_of_its_file(hub, repo, mount_factory):
    """A discard of the file itself drops what was written before it; the descriptor's
    later writes go to the dropped copy, as to a file deleted while open."""
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    fd = os.open(b / "gone.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"a\n")
        reef("discard", b, "gone.txt")
        os.write(fd, b"b\n")
    finally:
        os.close(fd)
    assert not (b / "gone.txt").exists()
    assert "0 pending changes" in reef("status", b).stdout


def test_lfs_by_nested_gitattributes(hub, repo, mount_factory, tmp_path):
    """.gitattributes below the root count, as git reads them: patterns relative to their
    directory, deeper files win; one pending in the overlay counts as well."""
    env, b = lfs_branch(hub, repo, mount_factory, tmp_path,
                        {"raw/.gitattributes": "*.bin -filter -diff -merge text\n"})
    rnd = random.Random(11)
    blobs = {p: rnd.randbytes(200_000) for p in
             ("top.bin", "raw/plain.bin", "raw/deep/also.bin", "models/w.pt",
              "models/sub/v.pt", "other/w.pt", "models/x/only.csv")}
    (b / "models/x").mkdir(parents=True)
    (b / "other").mkdir()
    (b / "raw/deep").mkdir()
    (b / "models/sub").mkdir()
    # pending, not in the head: tracks *.pt below models/ and x/*.csv relative to it
    (b / "models/.gitattributes").write_text(
        "*.pt filter=lfs diff=lfs merge=lfs -text\nx/*.csv filter=lfs diff=lfs merge=lfs -text\n")
    for p, data in blobs.items():
        (b / p).write_bytes(data)
    reef("commit", "-m", "nested", b)
    c = tmp_path / "check"
    git("clone", "-q", repo["url"], str(c), env=env)
    files = set(git("lfs", "ls-files", "-n", cwd=c, env=env).stdout.split())
    assert files == {"top.bin", "models/w.pt", "models/sub/v.pt", "models/x/only.csv"}, files
    for p, data in blobs.items():
        assert (c / p).read_bytes() == data, p
        # git's own reading of the attributes agrees with what was committed
        attr = git("check-attr", "filter", "--", p, cwd=c).stdout.strip()
        assert attr.endswith(": lfs") == (p in files), attr
    # (objects only: git-lfs's pointer check ignores "-filter" in raw/.gitattributes)
    assert git("lfs", "fsck", "--objects", cwd=c, env=env).returncode == 0


def test_writer_racing_a_commit_loses_nothing(hub, repo, mount_factory, tmp_path):
    """A writer appending through one descriptor while reef commit runs: every line it
    was acknowledged is in the first commit or pending after it, none lost, none torn."""
    import threading
    m = mount_factory(hub, repo["tok"])
    b = m.mnt / "alice/data/branches/main"
    fd = os.open(b / "stream.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stop = threading.Event()
    written = []

    def writer():
        i = 0
        while not stop.is_set() or i < 50:
            os.write(fd, b"line %06d\n" % i)
            written.append(i)
            i += 1

    t = threading.Thread(target=writer)
    os.write(fd, b"start\n")
    t.start()
    try:
        first = reef("commit", "-m", "while writing", b).stdout.strip()
    finally:
        stop.set()
        t.join()
        os.close(fd)
    want = b"start\n" + b"".join(b"line %06d\n" % i for i in written)
    assert (b / "stream.txt").read_bytes() == want
    c = clone(repo["url"], tmp_path / "first")
    got = (c / "stream.txt").read_bytes()
    assert want.startswith(got) and got.startswith(b"start\n"), got[-40:]
    if got != want:  # what came after the commit's snapshot is pending on top of it
        reef("commit", "-m", "the rest", b)
        c2 = clone(repo["url"], tmp_path / "second")
        assert (c2 / "stream.txt").read_bytes() == want
        assert git("log", "-1", "--format=%P", cwd=c2).stdout.strip() == first
