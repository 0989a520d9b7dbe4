"""What the cache layer asks the server, counted: requests through cache_stats (driven by
tests/unit/store/test_cache_live) and the hub's own log lines (through a real mount).

A file whose size the listing gave costs one request, for its bytes, and none at open; an
object already cached costs none; connections are kept alive; branch and tag listings
record each ref's commit, so the index answers (cache_ref_peek) without a request per
ref; removing the branch-moved callback waits for a call in progress."""

import os
import re
import time
import subprocess
from pathlib import Path

import pytest

from conftest import git
from test_cache_data import lives  # noqa: F401 (a fixture)
from test_cache_layer import blob_id

BIG = 3 * 1024 * 1024 + 5  # streamed (above the 1 MiB raw threshold)
N_SMALL = 40


def push_repo(hub, tmp_path, name="acme/cats"):
    tok = hub.user("alice")
    hub.project(name, "alice")
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    d = work / "data"
    d.mkdir()
    # sizes on both sides of the LFS candidate range (100..1023) and an empty file
    sizes = [0, 7, 99, 100, 500, 1023, 1024, 4096, 70000]
    files = {}
    for i in range(N_SMALL):
        size = sizes[i % len(sizes)]
        data = (f"{i}:".encode() * (size // 2 + 1))[:size]
        (d / f"f{i:03d}.bin").write_bytes(data)
        files[f"data/f{i:03d}.bin"] = data
    big = bytes((i * 7 + (i >> 11)) & 0xFF for i in range(BIG))
    (work / "big.bin").write_bytes(big)
    files["big.bin"] = big
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("tag", "v1", cwd=work)
    git("tag", "-a", "-m", "annotated", "v2", cwd=work)
    git("branch", "dev", cwd=work)
    git("branch", "feature/x", cwd=work)
    r = git("push", "-q", hub.git_url(name, "alice", tok), "main", "dev", "feature/x", "v1",
            "v2", cwd=work)
    assert r.returncode == 0, r.stderr
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    return tok, work, head, files


def requests(live):
    return live.stats()["requests"]


def settled(live, quiet=1.0, bound=15.0):
    """The request count once background work (polls after a refresh) has gone quiet."""
    deadline = time.monotonic() + bound
    n, since = requests(live), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        m = requests(live)
        if m != n:
            n, since = m, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return n


def test_open_of_a_listed_file_costs_one_request_for_its_bytes(hub, lives, tmp_path):
    tok, work, head, files = push_repo(hub, tmp_path)
    for run in range(2):  # a fresh cache each time: the second is a second mount's view
        live = lives(hub.url, tmp_path / f"cache{run}", tok, env={"REEF_POLL_MS": "600000"})
        pid = live.ok("project", "acme/cats").split()[0]
        live.ok("ls", pid, head, "data")
        live.ok("ls", pid, head, "/")
        # an open that is never read asks nothing, whatever the size
        before = requests(live)
        for path, data in files.items():
            assert live.ok("oopen", pid, head, path) == str(len(data)), path
        opened = requests(live) - before
        # trees come over git without sizes: one GraphQL request per directory (the root
        # and data/) gives every file's size; no blob is read to see whether it is an
        # LFS pointer (no .gitattributes names filter=lfs here)
        assert opened <= 2, opened
        remote = live.stats()["remote"]
        assert remote["sizes_via"] == "GraphQL" and remote["graphql_requests"] == opened
        # every byte of every file: the small files of data/ in one git fetch at the first
        # read, big.bin (above the 1 MiB batch threshold) in one request of its own
        before = requests(live)
        for path, data in files.items():
            out = tmp_path / "out"
            assert live.ok("ocat", pid, head, path, out).split()[0] == str(len(data))
            assert out.read_bytes() == data, path
        per_file = requests(live) - before
        # (and the capability probe of git's protocol v2, asked at the first batch)
        assert per_file == 3, per_file
        assert live.stats()["remote"]["git_blobs"] == len({blob_id(d) for d in files.values()
                                                          if d and len(d) < 1 << 20})
        # cached: nothing at all
        before = requests(live)
        for path, data in files.items():
            assert live.ok("oopen", pid, head, path) == str(len(data))
            assert live.ok("ocat", pid, head, path, tmp_path / "out").split()[0] == str(len(data))
        assert requests(live) == before
        st = live.stats()
        # forty files and their listings in a handful of requests, over fewer connections
        assert st["requests"] <= 12, st
        assert 1 <= st["connections"] <= 4, st
        live.close()
    log = hub.log_path.read_text()
    assert not re.search(r"HEAD \S+/repository/files/", log), "a HEAD although sizes were listed"


def test_listings_record_ref_commits(hub, lives, tmp_path):
    tok, work, head, _ = push_repo(hub, tmp_path)
    live = lives(hub.url, tmp_path / "cache", tok, ttl_ms=60000, env={"REEF_POLL_MS": "600000"})
    pid = live.ok("project", "acme/cats").split()[0]
    assert live.cmd("peek", pid, "branch", "main") == ("err", "ENOENT")
    mark = len(hub.log_path.read_text().splitlines())
    assert sorted(live.ok("refs", pid, "branch").split()) == ["dev", "feature/x", "main"]
    assert sorted(live.ok("refs", pid, "tag").split()) == ["v1", "v2"]
    before = requests(live)
    # the two listings and nothing per ref (counted by route in the hub's log: a branch
    # poll of the mount's own may land in between on a loaded machine)
    def listings():
        return [ln for ln in hub.log_path.read_text().splitlines()[mark:]
                if re.search(r"GET /api/v4/projects/\d+/repository/(branches|tags)[ ?]", ln)]

    # the hub writes its log line after the answer went out: wait for it on a loaded machine
    deadline = time.monotonic() + 10
    while len(listings()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(listings()) == 2, listings()
    lines = hub.log_path.read_text().splitlines()[mark:]
    assert not [ln for ln in lines
                if re.search(r"GET /api/v4/projects/\d+/repository/(branches|tags)/", ln)]
    for kind, name in [("branch", "main"), ("branch", "dev"), ("branch", "feature/x"),
                       ("tag", "v1"), ("tag", "v2")]:
        want = git("rev-parse", f"{name}^{{commit}}", cwd=work).stdout.strip()
        assert live.ok("peek", pid, kind, name) == want, name
        # resolving a listed ref needs no request of its own either
        assert live.ok("resolve", pid, kind, name) == want, name
    assert requests(live) == before  # five refs, not one request each
    assert live.cmd("peek", pid, "branch", "nope") == ("err", "ENOENT")
    assert live.cmd("peek", pid, "tag", "main") == ("err", "ENOENT")

    # a branch that moved is seen by the next listing, recorded and reported
    (work / "more").write_text("more\n")
    git("add", "more", cwd=work)
    git("commit", "-q", "-m", "more", cwd=work)
    new = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("push", "-q", hub.git_url("acme/cats", "alice", tok), "main", cwd=work)
    live.ok("moves")
    live.ok("refresh")
    live.ok("refs", pid, "branch")
    assert live.ok("peek", pid, "branch", "main") == new
    assert f"{pid}:main:{head}:{new}" in live.ok("moves")
    # peeking never asks the server, even when what it knows is old
    live.ok("refresh")
    before = settled(live)  # refresh wakes the branch poller, which asks on its own
    assert live.ok("peek", pid, "branch", "main") == new
    assert requests(live) == before
    live.close()


def test_removing_the_moved_callback_waits_for_a_call_in_progress(hub, lives, tmp_path):
    tok, work, head, _ = push_repo(hub, tmp_path)
    # ttl 0: every resolve asks the server, so the one in "unhook" sees the move
    live = lives(hub.url, tmp_path / "cache", tok, ttl_ms=0, env={"REEF_POLL_MS": "600000"})
    pid = live.ok("project", "acme/cats").split()[0]
    assert live.ok("resolve", pid, "branch", "dev") == head
    for i in range(2):
        (work / "x").write_text(f"{i}\n")
        git("add", "x", cwd=work)
        git("commit", "-q", "-m", f"x{i}", cwd=work)
        git("push", "-q", "-f", hub.git_url("acme/cats", "alice", tok), "HEAD:dev", cwd=work)
        # the callback sleeps 400 ms once it runs; cache_on_branch_moved(NULL) must not
        # return before it did
        assert live.ok("unhook", pid, "dev", 400) == "1"
    live.close()


def test_cold_cat_through_a_mount_makes_one_request_per_file(hub, mount_factory, tmp_path):
    tok, work, head, files = push_repo(hub, tmp_path)
    m = mount_factory(hub, tok)
    root = m.mnt / "acme/cats"
    before = len(hub.log_path.read_text().splitlines())
    # readdir of branches/ and tags/ first: numbers that lookups will give, no request per ref
    for sub in ["branches", "tags", "branches/feature"]:
        for e in os.scandir(root / sub):
            assert e.inode() == os.lstat(e.path).st_ino, e.path
    lines = hub.log_path.read_text().splitlines()[before:]
    one_ref = [ln for ln in lines
               if re.search(r"\bGET /api/v4/projects/\d+/repository/(branches|tags)/\S", ln)]
    assert not one_ref, one_ref
    before += len(lines)
    rev = root / "branches/main"
    subprocess.run(f"find '{rev}' -type f -print0 | xargs -0 -r cat > /dev/null", shell=True,
                   check=True)
    for path, data in files.items():
        assert (rev / path).read_bytes() == data, path
    lines = hub.log_path.read_text().splitlines()[before:]
    heads = [ln for ln in lines if re.search(r"\bHEAD /api/v4/\S+/repository/files/", ln)]
    raws = [ln for ln in lines if re.search(r"\bGET /api/v4/\S+/repository/blobs/\w+/raw", ln)]
    packs = [ln for ln in lines if re.search(r"\bPOST /\S+\.git/git-upload-pack", ln)]
    assert not heads, heads[:3]
    # the trees in one git fetch, each directory's small files in one more (root and
    # data/), the big blob on its own (it may use a few ranged requests)
    assert 1 <= len(raws) <= 4, len(raws)
    assert len(packs) <= 3, packs
