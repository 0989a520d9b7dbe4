"""The bulk paths of reefd against a real reef-hub (git http-backend with protocol v2,
partial-clone filters and any id in want; GitLab's GraphQL blobs field): a directory
costs a few requests, not one per file; a server without them, or with damaged answers,
still gets the right bytes through the REST API."""

import hashlib
import os
import re
import subprocess

import pytest

from conftest import Mount, git
from gitlab_proxy import GitLabProxy
from test_mount_data import ctl, push_repo, status, wait_idle


def hub_requests(hub, since):
    """Request lines the hub logged after line `since`."""
    lines = hub.log_path.read_text().splitlines()[since:]
    return [ln for ln in lines if re.search(r"reef-hub info: (GET|HEAD|POST|PUT) /", ln)]


def log_mark(hub):
    return len(hub.log_path.read_text().splitlines())


def many_files(n, prefix="data"):
    return {f"{prefix}/f{i:04d}.csv": f"{i},{i * i},{'x' * (i % 97)}\n".encode()
            for i in range(n)}


def test_ls_and_read_of_1000_files_costs_a_few_requests(hub, tmp_path):
    """Through a proxy that answers tree listings as GitLab does (no sizes)."""
    tok = hub.user("alice")
    hub.project("alice/big", "alice", "private")
    files = many_files(1000)
    files["README.md"] = b"a dataset\n"
    files["nested/a/b/deep.txt"] = b"deep\n"
    push_repo(hub, tok, "alice/big", files, tmp_path)
    proxy = GitLabProxy(hub.port)
    m = mount_through(proxy, hub, tok, tmp_path, "via")
    try:
        d = m.mnt / "alice/big/branches/main/data"
        proxy.reset()
        out = subprocess.run(["ls", "-l", str(d)], capture_output=True, text=True,
                             check=True)
        assert len(out.stdout.splitlines()) == 1001
        for e in os.scandir(d):
            assert e.stat().st_size == len(files["data/" + e.name]), e.name
        for rel, data in files.items():
            if rel.startswith("data/"):
                assert (m.mnt / "alice/big/branches/main" / rel).read_bytes() == data, rel
        # the project, its branch, the root's and data/'s listings (ten pages of 100),
        # ten GraphQL requests of 100 paths, the capability probe, one git fetch of the
        # files: about 25, where a REST size and blob per file would be over 2,000
        total = proxy.count(r".")
        assert total <= 30, proxy.log
        assert proxy.count(r"/repository/files/|/blobs/") == 0
        assert 10 <= proxy.count(r"^POST /api/graphql") <= 12
        st = status(m)["cache"]["remote"]
        assert st["sizes_via"] == "GraphQL" and st["trees_via"] == "git protocol v2", st
        assert 1000 <= st["git_blobs"] <= 1002
        # past a few listings the commit is walked: the rest of its trees in one fetch
        proxy.reset()
        assert (m.mnt / "alice/big/branches/main/nested/a/b/deep.txt").read_bytes() == \
            b"deep\n"
        assert proxy.count(r"/repository/tree") == 0, proxy.log
        assert proxy.count(r"^POST /\S+/git-upload-pack") <= 2
    finally:
        m.stop()
        proxy.close()


def test_lfs_sizes_come_in_bulk_and_verdicts_from_the_pointers(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/lfsdir", "alice", "private")
    objs = {f"set/o{i:02d}.bin": hashlib.sha256(str(i).encode()).digest() * (50 + i)
            for i in range(20)}
    small = b"tiny lfs object\n"
    files = dict(objs)
    files["set/plain.txt"] = b"not in lfs\n"
    # a pointer with a trailing line: GitLab's check calls it LFS, git-lfs does not
    files["set/fake.txt"] = (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                             f"{hashlib.sha256(small).hexdigest()}\nsize {len(small)}\n"
                             f"extra\n").encode()
    push_repo(hub, tok, "alice/lfsdir", files, tmp_path, lfs="*.bin")
    m = mount_factory(hub, tok)
    d = m.mnt / "alice/lfsdir/branches/main/set"
    os.listdir(d.parent)
    mark = log_mark(hub)
    sizes = {e.name: e.stat().st_size for e in os.scandir(d)}
    reqs = hub_requests(hub, mark)
    assert sizes == {rel.split("/")[1]: len(data) for rel, data in files.items()}
    # sizes in one GraphQL request, the pointers in one git fetch, the root's
    # .gitattributes once: none per file
    assert not [r for r in reqs if "/repository/files/" in r], reqs
    assert len([r for r in reqs if "/blobs/" in r]) <= 1, reqs
    assert len(reqs) <= 6, reqs
    for rel, data in files.items():
        assert (d.parent / rel).read_bytes() == data, rel


def mount_through(proxy, hub, tok, tmp_path, name):
    base = tmp_path / name
    base.mkdir()

    class Via:
        url = proxy.url
        log_path = hub.log_path

    return Mount(base, Via, tok).start()


@pytest.fixture
def proxied(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/px", "alice", "private")
    files = many_files(120)
    files["top.txt"] = b"top\n"
    push_repo(hub, tok, "alice/px", files, tmp_path)
    proxy = GitLabProxy(hub.port)
    mounts = []
    yield hub, tok, files, proxy, mounts
    for m in mounts:
        m.stop()
    proxy.close()


def read_all(m, files, project="alice/px"):
    root = m.mnt / project / "branches/main"
    for rel, data in files.items():
        assert os.stat(root / rel).st_size == len(data), rel
        assert (root / rel).read_bytes() == data, rel


def test_server_without_protocol_v2_or_graphql_gets_rest(proxied, tmp_path):
    hub, tok, files, proxy, mounts = proxied
    proxy.no_v2 = True
    proxy.no_graphql = True
    m = mount_through(proxy, hub, tok, tmp_path, "rest")
    mounts.append(m)
    read_all(m, files)
    st = status(m)["cache"]["remote"]
    assert st["trees_via"] == "REST" and st["sizes_via"] == "files API", st
    assert proxy.count(r"^GET /api/v4/projects/\d+/repository/tree") >= 2
    assert proxy.count(r"^POST /\S+/git-upload-pack") == 0  # asked once (info/refs), then not
    assert proxy.count(r"^GET /\S+\.git/info/refs") == 1


def test_damaged_packs_are_never_served(proxied, tmp_path):
    hub, tok, files, proxy, mounts = proxied
    proxy.corrupt_packs = True
    m = mount_through(proxy, hub, tok, tmp_path, "bad")
    mounts.append(m)
    read_all(m, files)  # right bytes: after a damaged pack, one by one over REST
    st = status(m)["cache"]
    assert any("git fetch" in e["message"] for e in st["last_errors"]), st["last_errors"]
    assert proxy.count(r"^POST /\S+/git-upload-pack") >= 1
    # nothing unverified reached the store
    for f in (m.cache / "git" / "objects").glob("[0-9a-f][0-9a-f]/*"):
        import zlib
        raw = zlib.decompress(f.read_bytes())
        assert hashlib.sha1(raw).hexdigest() == f.parent.name + f.name


def test_prefetch_asks_lfs_actions_in_one_batch(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/lfspre", "alice", "private")
    objs = {f"set/o{i:02d}.bin": hashlib.sha256(b"pre%d" % i).digest() * (40 + i)
            for i in range(24)}
    push_repo(hub, tok, "alice/lfspre", objs, tmp_path, lfs="*.bin")
    m = mount_factory(hub, tok)
    d = m.mnt / "alice/lfspre/branches/main/set"
    assert len(os.listdir(d)) == 24
    mark = log_mark(hub)
    assert ctl(m, f"prefetch {d}\n") == 0
    wait_idle(m)
    reqs = hub_requests(hub, mark)
    batches = [r for r in reqs if "/info/lfs/objects/batch" in r]
    gets = [r for r in reqs if "GET /alice/lfspre.git/gitlab-lfs/objects/" in r]
    assert len(batches) == 1, batches     # 24 actions in one batch request
    assert len(gets) == 24, len(gets)     # then each object once
    mark = log_mark(hub)
    for rel, data in objs.items():
        assert (d.parent / rel).read_bytes() == data, rel
    assert not hub_requests(hub, mark)   # all of it was cached


def test_readers_find_the_next_batch_and_round_asked_ahead(hub, tmp_path):
    """A reader going through many directories: sizes come in rounds asked ahead of the
    listing, blobs in batches fetched ahead of the reads; nothing is asked twice and no
    file is fetched on its own once the reader is under way."""
    tok = hub.user("alice")
    hub.project("alice/ahead", "alice", "private")
    rnd = __import__("random").Random(8)
    files = {"a/first.txt": b"the first file read, small\n"}
    for d in range(12):
        for i in range(10):
            # 70-110 KB: over the size a file is streamed alone at, carried by batches
            files[f"d{d:02d}/f{i:02d}.bin"] = rnd.randbytes(rnd.randint(70_000, 110_000))
    sizes_only = {f"s{d:02d}/f{i:03d}.txt": b"%d\n" % (d * 1000 + i)
                  for d in range(20) for i in range(50)}
    files.update(sizes_only)
    push_repo(hub, tok, "alice/ahead", files, tmp_path)
    proxy = GitLabProxy(hub.port)
    m = mount_through(proxy, hub, tok, tmp_path, "ahead")
    try:
        root = m.mnt / "alice/ahead/branches/main"
        # find + stat: sizes in rounds of 400 paths, each round asked ahead of the listing
        proxy.reset()
        out = subprocess.run(["find", str(root), "-path", "*/s*", "-type", "f", "-printf",
                              "%P %s\n"], capture_output=True, text=True, check=True)
        got = dict(ln.rsplit(" ", 1) for ln in out.stdout.splitlines())
        assert {k: int(v) for k, v in got.items() if k.startswith("s")} == \
            {k: len(v) for k, v in sizes_only.items()}
        # 1,121 files: 12 requests of 100 once the commit's trees came over git; before
        # that (8 REST pages) the first directories are sized alone, about one request
        # each. Asking any path twice would cost a dozen more.
        gql = proxy.count(r"^POST /api/graphql")
        assert 12 <= gql <= 20, proxy.log
        # the first rounds are the reader's (each a directory or two, while trees come
        # over REST), the later ones the look-ahead's; the status says which, and how
        # long the reader waited for a round in flight
        sz = status(m)["cache"]["remote"]["sizes"]
        assert sz["reader_rounds"] < sz["rounds"] <= gql, sz
        assert sz["waits"] >= 0 and sz["wait_ms"] >= 0 and sz["reader_round_ms"] >= 0, sz
        proxy.reset()
        subprocess.run(["find", str(root), "-printf", "%s\n"], capture_output=True,
                       check=True)
        assert proxy.count(r"^POST /api/graphql") == 0, proxy.log
        assert proxy.count(r"/repository/files/") == 0
        # reading in tree order: the batches ahead carry the larger files too
        proxy.reset()
        for rel in sorted(k for k in files if not k.startswith("s")):
            assert (root / rel).read_bytes() == files[rel], rel
        # a/first.txt, alone in its directory, is a GET (no pack of one blob); the other
        # 120 files come in batches, but for the odd one a reader reaches between two
        # look-ahead batches while every sibling is in flight: a GET too, not a pack
        assert 1 <= proxy.count(r"/blobs/") <= 3, proxy.log
        packs = proxy.count(r"^POST /\S+/git-upload-pack")
        assert 2 <= packs <= 6, proxy.log  # ~11 MB: a reader's batch, then one or two ahead
        # every blob once (the look-ahead goes on into the s* directories: tree order)
        st = status(m)["cache"]["remote"]
        assert 121 <= st["git_blobs"] <= len(files), st
    finally:
        m.stop()
        proxy.close()


def test_the_look_ahead_starts_a_walks_large_files(hub, tmp_path):
    """Files of 1 MiB and more come in no batch; on a walk, the look-ahead hands them to
    the prefetch workers, so each is on its way (one GET) before the reader gets there;
    one over the look-ahead's cap for a large file is left to its reader."""
    tok = hub.user("alice")
    hub.project("alice/bigahead", "alice", "private")
    rnd = __import__("random").Random(11)
    files = {f"a/f{i:02d}.bin": rnd.randbytes(20_000) for i in range(6)}
    files.update({f"b/f{i:02d}.bin": rnd.randbytes(20_000) for i in range(3)})
    files["b/large.bin"] = rnd.randbytes(2_500_000)
    files["b/huge.bin"] = rnd.randbytes(17 * 1024 * 1024)
    src, _ = push_repo(hub, tok, "alice/bigahead", files, tmp_path)
    large = git("rev-parse", "main:b/large.bin", cwd=src).stdout.strip()
    proxy = GitLabProxy(hub.port)
    m = mount_through(proxy, hub, tok, tmp_path, "bigahead")
    try:
        root = m.mnt / "alice/bigahead/branches/main"
        subprocess.run(["find", str(root)], capture_output=True, check=True)
        proxy.reset()
        for i in range(6):  # a/, in tree order: the second file starts the look-ahead
            assert (root / f"a/f{i:02d}.bin").read_bytes() == files[f"a/f{i:02d}.bin"]
        # b/large.bin streams on a worker without its reader; b/huge.bin does not
        for _ in range(200):
            if any("/blobs/" in what for _, what in proxy.log):
                break
            __import__("time").sleep(0.05)
        gets = [what for _, what in proxy.log if "/blobs/" in what]
        assert len(gets) == 1 and large in gets[0], proxy.log
        wait_idle(m)
        assert (root / "b/large.bin").read_bytes() == files["b/large.bin"]
        assert [w for _, w in proxy.log if "/blobs/" in w] == gets, proxy.log
        assert hashlib.sha256((root / "b/huge.bin").read_bytes()).digest() == \
            hashlib.sha256(files["b/huge.bin"]).digest()
        assert len([w for _, w in proxy.log if "/blobs/" in w]) == 2, proxy.log
    finally:
        m.stop()
        proxy.close()


def test_blobs_the_server_sends_as_deltas_are_stored_right(hub, tmp_path):
    """Similar files: git's upload-pack sends most of a batch's blobs as deltas against
    others of the pack, which reefd applies itself (fs/packstream.c)."""
    tok = hub.user("alice")
    hub.project("alice/deltas", "alice", "private")
    base = [b"line %d of a long shared text, the same in every file\n" % i
            for i in range(150)]
    files = {}
    for i in range(40):
        lines = list(base)
        lines[(i * 7) % 150] = b"file %d changed this line\n" % i
        files[f"txt/f{i:02d}.txt"] = b"".join(lines)
    push_repo(hub, tok, "alice/deltas", files, tmp_path)
    # what upload-pack will send: git's pack-objects over these blobs, in the hub's repo
    src = tmp_path / "src"
    ids = "".join(git("rev-parse", f"HEAD:{rel}", cwd=src).stdout for rel in files)
    repo = next(r for r in (hub.dir / "repos").glob("*.git")
                if subprocess.run(["git", "-C", str(r), "cat-file", "-e", ids.split()[0]],
                                  capture_output=True).returncode == 0)
    pack = subprocess.run(["git", "-C", str(repo), "pack-objects", "-q", "--stdout",
                           "--delta-base-offset"], input=ids.encode(), capture_output=True,
                          check=True).stdout
    (tmp_path / "p.pack").write_bytes(pack)
    git("index-pack", "-o", str(tmp_path / "p.idx"), str(tmp_path / "p.pack"), cwd=src)
    stats = git("verify-pack", "-s", str(tmp_path / "p.idx"), cwd=src).stdout
    assert "chain length" in stats, stats  # deltas in the pack
    proxy = GitLabProxy(hub.port)
    m = mount_through(proxy, hub, tok, tmp_path, "deltas")
    try:
        root = m.mnt / "alice/deltas/branches/main"
        for rel, data in files.items():
            assert (root / rel).read_bytes() == data, rel
        assert proxy.count(r"/blobs/") == 0, proxy.log
        st = status(m)["cache"]["remote"]
        assert st["git_blobs"] == len(files), st
        assert not status(m)["cache"]["last_errors"]
    finally:
        m.stop()
        proxy.close()
