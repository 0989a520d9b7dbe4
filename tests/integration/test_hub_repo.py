"""reef-hub's repository routes (/api/v4/projects/:id/repository/...) against a real hub,
repositories pushed with real git, python-gitlab 3.12 and plain HTTP for headers."""

import base64
import hashlib
import os
import random
import subprocess
import urllib.parse
from pathlib import Path

import gitlab
import pytest
import requests

from conftest import git

PROJECT = "alice/cats"
ENC = urllib.parse.quote(PROJECT, safe="")


def api(hub, method, route, token, **kw):
    return hub.api(method, f"/projects/{ENC}/repository{route}", token=token, **kw)


def day(n):
    """Distinct dates, so date orders are deterministic."""
    d = f"2024-01-0{n}T12:00:00+01:00"
    return {"GIT_AUTHOR_DATE": d, "GIT_COMMITTER_DATE": d}


class Repo:
    """alice/cats pushed from a local work tree, plus a bare clone to compare against."""

    def __init__(self, hub, tmp: Path):
        self.hub = hub
        self.token = hub.user("alice")
        hub.project(PROJECT, "alice", "private")
        self.gl = gitlab.Gitlab(hub.url, private_token=self.token)
        self.project = self.gl.projects.get(PROJECT)
        self.work = tmp / "work"
        self.url = hub.git_url(PROJECT, token=self.token)
        self.build()

    def build(self):
        w = self.work
        git("init", "-q", "-b", "main", str(w))
        (w / "README.md").write_text("# cats\n")
        rnd = random.Random(7)
        self.binary = bytes(rnd.randrange(256) for _ in range(5000)) + b"\0\0tail"
        (w / "bin.dat").write_bytes(self.binary)
        (w / "run.sh").write_text("#!/bin/sh\necho hi\n")
        os.chmod(w / "run.sh", 0o755)
        os.symlink("README.md", w / "link")
        (w / "sp ace ünï.txt").write_text("unicode name\n")
        for d in range(12):
            for f in range(25):
                p = w / "data" / f"d{d:02}" / f"f{f:02}.txt"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(f"row {d} {f}\n")
        (w / "data" / "d00" / "deep" / "er").mkdir(parents=True)
        (w / "data" / "d00" / "deep" / "er" / "x.csv").write_text("a,b\n1,2\n")
        git("add", "-A", cwd=w)
        # A submodule entry: the tree lists it as type "commit", mode 160000.
        git("update-index", "--add", "--cacheinfo",
            "160000,1111111111111111111111111111111111111111,sub", cwd=w)
        git("commit", "-q", "-m", "first commit", cwd=w, env=day(1))
        (w / "README.md").write_text("# cats\n\nsecond\n")
        git("commit", "-q", "-m", "second: readme", "README.md", cwd=w, env=day(2))
        (w / "data" / "d03" / "f04.txt").write_text("changed\n")
        git("commit", "-q", "-m", "third: data", "data/d03/f04.txt", cwd=w, env=day(3))
        git("tag", "-a", "v1.0", "-m", "release one", "HEAD~1", cwd=w, env=day(4))
        git("tag", "light", "HEAD~2", cwd=w)
        git("tag", "release/2.0", "HEAD", cwd=w)
        git("branch", "feature/deep/x", "HEAD~1", cwd=w)
        git("push", "-q", self.url, "main", "feature/deep/x", "--tags", cwd=w)

    def rev(self, spec):
        return git("rev-parse", spec, cwd=self.work).stdout.strip()

    def fetch(self):
        git("fetch", "-q", self.url, "+refs/heads/*:refs/remotes/hub/*", cwd=self.work)


@pytest.fixture
def repo(hub, tmp_path):
    yield Repo(hub, tmp_path)
    # every request answered without a server-side failure (500s are logged as errors)
    log = hub.log_path.read_text()
    assert "reef-hub error" not in log and " 500 " not in log, log


def member(hub, name, level):
    token = hub.user(name)
    hub.member(PROJECT, name, level)
    return token


# --- branches -------------------------------------------------------------------------


def test_branches(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    names = [b.name for b in p.branches.list(get_all=True)]
    assert names == ["feature/deep/x", "main"]
    assert [b.name for b in p.branches.list(search="FEAT", get_all=True)] == ["feature/deep/x"]
    assert [b.name for b in p.branches.list(search="^ma", get_all=True)] == ["main"]
    assert [b.name for b in p.branches.list(search="x$", get_all=True)] == ["feature/deep/x"]

    b = p.branches.get("feature/deep/x")
    assert b.commit["id"] == repo.rev("HEAD~1")
    assert b.commit["short_id"] == repo.rev("HEAD~1")[:8]
    assert b.commit["parent_ids"] == [repo.rev("HEAD~2")]
    assert b.commit["title"] == "second: readme"
    assert b.default is False and b.can_push is True and b.merged is False
    assert p.branches.get("main").default is True

    r = api(hub, "HEAD", "/branches/feature%2Fdeep%2Fx", t)
    assert r.status_code == 204
    assert api(hub, "HEAD", "/branches/nope", t).status_code == 404
    r = api(hub, "GET", "/branches/nope", t)
    assert r.status_code == 404 and r.json() == {"message": "404 Branch Not Found"}

    nb = p.branches.create({"branch": "topic/new", "ref": "v1.0"})
    assert nb.name == "topic/new" and nb.commit["id"] == repo.rev("HEAD~1")
    r = api(hub, "POST", "/branches", t, json={"branch": "topic/new", "ref": "main"})
    assert r.status_code == 400 and r.json() == {"message": "Branch already exists"}
    r = api(hub, "POST", "/branches", t, json={"branch": "other", "ref": "no-such-ref"})
    assert r.status_code == 400 and "no-such-ref" in r.json()["message"]
    r = api(hub, "POST", "/branches", t, json={"ref": "main"})
    assert r.status_code == 400 and r.json() == {"error": "branch is missing"}
    r = api(hub, "POST", "/branches", t, json={"branch": "bad..name", "ref": "main"})
    assert r.status_code == 400

    p.branches.delete("topic/new")
    r = api(hub, "GET", "/branches/topic%2Fnew", t)
    assert r.status_code == 404 and r.json() == {"message": "404 Branch Not Found"}
    r = api(hub, "DELETE", "/branches/topic%2Fnew", t)
    assert r.status_code == 404
    r = api(hub, "DELETE", "/branches/main", t)
    assert r.status_code == 405
    # git sees the server-side branch changes
    repo.fetch()
    refs = git("for-each-ref", "--format=%(refname)", "refs/remotes/hub", cwd=repo.work).stdout
    assert "refs/remotes/hub/topic/new" not in refs


def test_branch_pagination(repo):
    p = repo.project
    for i in range(25):
        p.branches.create({"branch": f"b{i:02}", "ref": "main"})
    r = api(repo.hub, "GET", "/branches?per_page=10&page=2", repo.token)
    assert r.status_code == 200
    assert [b["name"] for b in r.json()] == [f"b{i:02}" for i in range(10, 20)]
    assert r.headers["X-Total"] == "27" and r.headers["X-Total-Pages"] == "3"
    assert r.headers["X-Next-Page"] == "3" and r.headers["X-Prev-Page"] == "1"
    assert len(p.branches.list(get_all=True)) == 27


# --- tags -----------------------------------------------------------------------------


def test_tags(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    tags = {x.name: x for x in p.tags.list(get_all=True)}
    assert set(tags) == {"v1.0", "light", "release/2.0"}
    assert p.tags.get("release/2.0").commit["id"] == repo.rev("HEAD")
    # default order: updated (commit date) descending; ties broken by name
    v1 = p.tags.get("v1.0")
    assert v1.message == "release one\n"
    assert v1.target == repo.rev("v1.0") and v1.target != repo.rev("v1.0^{commit}")
    assert v1.commit["id"] == repo.rev("HEAD~1")
    assert v1.created_at == "2024-01-04T12:00:00.000+01:00"
    assert v1.release is None and v1.protected is False
    light = p.tags.get("light")
    assert light.target == repo.rev("HEAD~2") and light.commit["id"] == repo.rev("HEAD~2")
    assert light.message == "" and light.created_at is None
    names = [x["name"] for x in api(hub, "GET", "/tags?order_by=name&sort=asc", t).json()]
    assert names == ["light", "release/2.0", "v1.0"]
    names = [x["name"] for x in api(hub, "GET", "/tags", t).json()]
    assert names[0] == "release/2.0"  # newest commit first
    r = api(hub, "GET", "/tags/nope", t)
    assert r.status_code == 404 and r.json() == {"message": "404 Tag Not Found"}


# --- commits --------------------------------------------------------------------------


def test_commit_get(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    head = repo.rev("HEAD")
    for ref in [head, head[:7], head[:4], "main", "HEAD"]:
        c = p.commits.get(ref)
        assert c.id == head, ref
    assert p.commits.get("v1.0").id == repo.rev("HEAD~1")
    assert p.commits.get("light").id == repo.rev("HEAD~2")
    assert p.commits.get("main~2").id == repo.rev("HEAD~2")
    c = p.commits.get(head)
    assert c.short_id == head[:8]
    assert c.title == "third: data" and c.message == "third: data\n"
    assert c.author_email == "test@reef.invalid" and c.committer_name == "Reef Test"
    assert c.authored_date == "2024-01-03T12:00:00.000+01:00" == c.committed_date == c.created_at
    assert c.parent_ids == [repo.rev("HEAD~1")]
    assert c.stats == {"additions": 1, "deletions": 1, "total": 2}
    assert c.web_url.endswith(f"/{PROJECT}/-/commit/{head}")
    for bad in ["0000000", "nope", "zz", repo.rev("HEAD:README.md"), "main^{tree}", "main~9"]:
        r = api(hub, "GET", f"/commits/{bad}", t)
        assert r.status_code == 404 and r.json() == {"message": "404 Commit Not Found"}, bad


def test_commit_list(repo):
    p, hub, t = repo.project, repo.hub, repo.token

    def log(*args):
        return git("log", "--format=%H", *args, cwd=repo.work).stdout.split()

    assert [c.id for c in p.commits.list(get_all=True)] == log("main")
    assert [c.id for c in p.commits.list(ref_name="feature/deep/x", get_all=True)] == log(
        "feature/deep/x")
    for path in ["README.md", "data/d03", "data/d03/f04.txt", "bin.dat", "nowhere"]:
        # python-gitlab's own "path" keyword overrides the URL: pass it as a query
        got = [c.id for c in p.commits.list(query_parameters={"path": path}, get_all=True)]
        assert got == log("main", "--", path), path
    r = api(hub, "GET", "/commits?per_page=2", t)
    assert [c["id"] for c in r.json()] == log("main")[:2]
    assert r.headers["X-Next-Page"] == "2" and "X-Total" not in r.headers
    assert 'rel="next"' in r.headers["Link"] and "per_page=2" in r.headers["Link"]
    r = api(hub, "GET", "/commits?per_page=2&page=2", t)
    assert [c["id"] for c in r.json()] == log("main")[2:]
    assert r.headers["X-Next-Page"] == "" and 'rel="next"' not in r.headers["Link"]
    r = api(hub, "GET", "/commits?since=2999-01-01T00:00:00Z", t)
    assert r.status_code == 200 and r.json() == []
    r = api(hub, "GET", "/commits?until=2000-01-01", t)
    assert r.json() == []
    r = api(hub, "GET", "/commits?since=2024-01-02T11:00:00Z&until=2024-01-02T11:00:00.000Z", t)
    assert [c["id"] for c in r.json()] == [repo.rev("HEAD~1")]
    r = api(hub, "GET", "/commits?since=2024-01-02T12:00:00%2B01:00", t)
    assert [c["id"] for c in r.json()] == log("main")[:2]
    assert api(hub, "GET", "/commits?since=yesterday", t).status_code == 400
    assert len(api(hub, "GET", "/commits?all=true", t).json()) == 3
    r = api(hub, "GET", "/commits?ref_name=v1.0&order=topo", t)
    assert [c["id"] for c in r.json()] == log("v1.0")
    assert api(hub, "GET", "/commits?ref_name=nope", t).json() == []


def test_commit_create(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    payload = bytes(range(256)) * 3
    c = p.commits.create({
        "branch": "main",
        "commit_message": "api edit\n\nbody",
        "actions": [
            {"action": "create", "file_path": "new/dir/file.bin",
             "content": base64.b64encode(payload).decode(), "encoding": "base64"},
            {"action": "create", "file_path": "tool.sh", "content": "#!/bin/sh\n",
             "execute_filemode": True},
            {"action": "update", "file_path": "README.md", "content": "# updated\n"},
            {"action": "delete", "file_path": "bin.dat"},
            {"action": "move", "previous_path": "data/d01/f01.txt",
             "file_path": "moved/f01.txt"},
            {"action": "chmod", "file_path": "run.sh", "execute_filemode": False},
        ],
    })
    assert c.title == "api edit" and c.message == "api edit\n\nbody"
    assert c.parent_ids == [repo.rev("HEAD")]
    assert c.author_name == "alice" and c.committer_name == "alice"
    repo.fetch()
    assert repo.rev("hub/main") == c.id

    def show(path):
        return subprocess.run(["git", "show", f"hub/main:{path}"], cwd=repo.work,
                              capture_output=True, check=True).stdout

    assert show("new/dir/file.bin") == payload
    assert show("README.md") == b"# updated\n"
    assert show("moved/f01.txt") == b"row 1 1\n"
    modes = {}
    for line in git("ls-tree", "-r", "hub/main", cwd=repo.work).stdout.splitlines():
        meta, path = line.split("\t", 1)
        modes[path] = meta.split()[0]
    assert modes["tool.sh"] == "100755" and modes["run.sh"] == "100644"
    assert "bin.dat" not in modes and "data/d01/f01.txt" not in modes
    assert modes["link"] == "120000" and modes["sub"] == "160000"

    # a new branch from start_branch, with an explicit author
    c2 = p.commits.create({
        "branch": "fromapi", "start_branch": "feature/deep/x", "commit_message": "branch off",
        "author_name": "Someone", "author_email": "someone@example.invalid",
        "actions": [{"action": "create", "file_path": "x.txt", "content": "x"}]})
    assert c2.parent_ids == [repo.rev("feature/deep/x")]
    assert c2.author_name == "Someone" and c2.committer_name == "alice"
    assert p.branches.get("fromapi").commit["id"] == c2.id

    def post(body):
        return api(hub, "POST", "/commits", t, json=body)

    def one(action):
        return post({"branch": "main", "commit_message": "m", "actions": [action]})

    r = one({"action": "create", "file_path": "README.md", "content": "x"})
    assert r.status_code == 400 and "A file with this name already exists" in r.json()["message"]
    r = one({"action": "update", "file_path": "missing.txt", "content": "x"})
    assert r.status_code == 400 and "A file with this name doesn't exist" in r.json()["message"]
    r = one({"action": "delete", "file_path": "missing.txt"})
    assert r.status_code == 400 and "doesn't exist" in r.json()["message"]
    r = one({"action": "create", "file_path": "y.bin", "content": "!!notbase64", "encoding": "base64"})
    assert r.status_code == 400 and "base64" in r.json()["message"]
    r = one({"action": "create", "file_path": "y.txt", "content": "x", "encoding": "rot13"})
    assert r.status_code == 400 and r.json() == {"error": "actions[0][encoding] does not have a valid value"}
    for bad in ["../escape", "/abs", "a//b", ".git/config", "a/./b"]:
        r = one({"action": "create", "file_path": bad, "content": "x"})
        assert r.status_code == 400, bad
    r = one({"action": "explode", "file_path": "a"})
    assert r.status_code == 400 and r.json() == {"error": "actions[0][action] does not have a valid value"}
    r = one({"action": "create", "file_path": "README.md/inner", "content": "x"})
    assert r.status_code == 400
    r = post({"commit_message": "m"})
    assert r.status_code == 400 and r.json() == {"error": "branch is missing, actions is missing"}
    r = post({"branch": "brand-new", "commit_message": "m",
              "actions": [{"action": "create", "file_path": "a", "content": ""}]})
    assert r.status_code == 400  # a new branch in a non-empty project needs start_branch
    # nothing of the failed requests landed
    repo.fetch()
    assert repo.rev("hub/main") == c.id


def test_commit_create_empty_repo(hub):
    token = hub.user("alice")
    hub.project("alice/empty", "alice", "private")
    gl = gitlab.Gitlab(hub.url, private_token=token)
    p = gl.projects.get("alice/empty")
    assert p.default_branch is None and p.empty_repo is True
    r = hub.api("GET", "/projects/alice%2Fempty/repository/tree", token)
    assert r.status_code == 404 and r.json() == {"message": "404 Tree Not Found"}
    c = p.commits.create({"branch": "trunk", "commit_message": "root",
                          "actions": [{"action": "create", "file_path": "a.txt", "content": "a\n"}]})
    assert c.parent_ids == []
    p = gl.projects.get("alice/empty")
    assert p.default_branch == "trunk" and p.empty_repo is False
    assert p.files.get("a.txt", ref="HEAD").decode() == b"a\n"


def test_commit_create_concurrent(repo):
    """Parallel commits to one branch: each either lands or fails with 400, none is lost."""
    import concurrent.futures as cf

    def make(i):
        return api(repo.hub, "POST", "/commits", repo.token, json={
            "branch": "main", "commit_message": f"c{i}",
            "actions": [{"action": "create", "file_path": f"par/{i}.txt", "content": str(i)}]})

    with cf.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(make, range(16)))
    ok = [r.json()["id"] for r in results if r.status_code == 201]
    assert all(r.status_code in (201, 400) for r in results)
    assert ok
    repo.fetch()
    history = git("log", "--format=%H", "hub/main", cwd=repo.work).stdout.split()
    assert set(ok) <= set(history)
    files = git("ls-tree", "--name-only", "hub/main", "par/", cwd=repo.work).stdout.split()
    assert len(files) == len(ok)


# --- tree -----------------------------------------------------------------------------


def ls_tree(repo, ref="main", path=None):
    args = ["ls-tree", "-r", "-t", ref]
    if path:
        args += ["--", path + "/"]
    out = git(*args, cwd=repo.work, env={"GIT_CONFIG_PARAMETERS": "'core.quotepath=false'"})
    entries = []
    for line in out.stdout.splitlines():
        meta, p = line.split("\t", 1)
        mode, typ, oid = meta.split()
        entries.append((p, typ, mode, oid))
    return entries


def test_tree_recursive_iterator(repo):
    want = ls_tree(repo)
    assert len(want) > 250
    got = list(repo.project.repository_tree(recursive=True, iterator=True, per_page=100))
    tuples = [(e["path"], e["type"], e["mode"], e["id"]) for e in got]
    assert len(tuples) == len(set(tuples)) == len(want)
    assert set(tuples) == set(want)
    # GitLab's order: trees, then blobs, then submodules
    kinds = [e["type"] for e in got]
    assert kinds == sorted(kinds, key=["tree", "blob", "commit"].index)
    for e in got:
        assert e["name"] == e["path"].rsplit("/", 1)[-1]
        if e["type"] == "blob":
            assert e["size"] == int(git("cat-file", "-s", e["id"], cwd=repo.work).stdout)
        else:
            assert "size" not in e
    sub = [e for e in got if e["path"] == "sub"]
    assert sub == [{"id": "1" * 40, "name": "sub", "type": "commit", "path": "sub", "mode": "160000"}]


def test_tree_plain(repo):
    p = repo.project
    top = p.repository_tree(get_all=True)
    assert [e["name"] for e in top] == ["data", "README.md", "bin.dat", "link", "run.sh",
                                       "sp ace ünï.txt", "sub"]
    modes = {e["name"]: e["mode"] for e in top}
    assert modes == {"data": "040000", "README.md": "100644", "bin.dat": "100644",
                     "link": "120000", "run.sh": "100755", "sp ace ünï.txt": "100644",
                     "sub": "160000"}
    d = p.repository_tree(path="data/d00", ref="v1.0", get_all=True)
    assert [e["path"] for e in d][:2] == ["data/d00/deep", "data/d00/f00.txt"]
    assert len(d) == 26
    d = p.repository_tree(path="/data/d00/deep/", recursive=True, get_all=True)
    assert [e["path"] for e in d] == ["data/d00/deep/er", "data/d00/deep/er/x.csv"]
    for q in ["ref=nope", "path=nope", "path=README.md", "path=../x"]:
        r = api(repo.hub, "GET", f"/tree?{q}", repo.token)
        assert r.status_code == 404 and r.json() == {"message": "404 Tree Not Found"}, q


def test_tree_legacy_headers(repo):
    r = api(repo.hub, "GET", "/tree?recursive=true&ref=main&path=data&per_page=20&page=2",
            repo.token)
    assert r.status_code == 200 and len(r.json()) == 20
    total = len([e for e in ls_tree(repo, path="data") if e[0] != "data"])
    assert r.headers["X-Total"] == str(total)
    assert r.headers["X-Total-Pages"] == str((total + 19) // 20)
    assert r.headers["X-Page"] == "2" and r.headers["X-Per-Page"] == "20"
    assert r.headers["X-Next-Page"] == "3" and r.headers["X-Prev-Page"] == "1"
    links = requests.utils.parse_header_links(r.headers["Link"])
    rels = {l["rel"]: l["url"] for l in links}
    assert set(rels) == {"prev", "next", "first", "last"}
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(rels["next"]).query)
    assert q == {"recursive": ["true"], "ref": ["main"], "path": ["data"], "per_page": ["20"],
                 "page": ["3"]}
    assert rels["next"].startswith(repo.hub.url + "/api/v4/projects/")


def test_tree_keyset(repo):
    hub, t = repo.hub, repo.token
    url = (f"/tree?pagination=keyset&per_page=37&recursive=true&ref=main")
    r = api(hub, "GET", url, t)
    pages, seen = 0, []
    while True:
        assert r.status_code == 200
        seen += r.json()
        pages += 1
        link = r.headers.get("Link")
        if not link:
            break
        nxt = requests.utils.parse_header_links(link)[0]
        assert nxt["rel"] == "next" and len(r.json()) == 37
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(nxt["url"]).query)
        assert q["ref"] == ["main"] and q["recursive"] == ["true"]
        assert q["per_page"] == ["37"] and q["pagination"] == ["keyset"]
        assert q["page_token"] == [r.json()[-1]["path"]]
        r = requests.get(nxt["url"], headers={"PRIVATE-TOKEN": t}, timeout=30)
    want = ls_tree(repo)
    assert pages == (len(want) + 36) // 37
    tuples = [(e["path"], e["type"], e["mode"], e["id"]) for e in seen]
    assert len(tuples) == len(set(tuples)) and set(tuples) == set(want)
    # the same order as one unpaginated listing
    r = api(hub, "GET", "/tree?pagination=none&recursive=true", t)
    assert [e["path"] for e in r.json()] == [e["path"] for e in seen]
    assert r.headers["Content-Type"] == "application/json"
    r = api(hub, "GET", "/tree?pagination=none", t)
    assert r.status_code == 400
    # non-recursive keyset under a path, and a bad token
    r = api(hub, "GET", "/tree?pagination=keyset&per_page=10&path=data/d02", t)
    assert [e["name"] for e in r.json()] == [f"f{i:02}.txt" for i in range(10)]
    nxt = requests.utils.parse_header_links(r.headers["Link"])[0]["url"]
    assert "page_token=data%2Fd02%2Ff09.txt" in nxt
    r = api(hub, "GET", "/tree?pagination=keyset&per_page=10&path=data/d02&page_token=nope", t)
    assert r.status_code == 400


def test_bytes_that_are_not_utf8(repo):
    """git stores bytes: names and messages that are not UTF-8 come out with U+FFFD,
    never as broken JSON; long subjects are cut as GitLab's Commit#title does."""
    stream = (b"commit refs/heads/latin1\ncommitter T <t@x> 1700000000 +0000\n"
              b"data 12\ncaf\xe9 commit\nfrom refs/heads/main^0\n"
              b"M 100644 inline caf\xe9.txt\ndata 3\nl1\n\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo.work, input=stream, check=True)
    git("push", "-q", repo.url, "latin1", cwd=repo.work)
    top = repo.project.repository_tree(ref="latin1", get_all=True)
    assert "caf\ufffd.txt" in [e["name"] for e in top]
    c = repo.project.commits.get("latin1")
    assert c.title == "caf\ufffd commit"

    subject = " ".join(f"word{i}" for i in range(30))  # 179 characters
    c = repo.project.commits.create({"branch": "main", "commit_message": subject + "\n\nbody",
                                     "actions": [{"action": "create", "file_path": "t",
                                                  "content": ""}]})
    cut = subject.rindex(" ", 0, 81)  # Rails: truncate(81, separator: " ", omission: "…")
    assert c.title == subject[:cut] + "\u2026"
    short = "x" * 99
    c = repo.project.commits.create({"branch": "main", "commit_message": short,
                                     "actions": [{"action": "create", "file_path": "u",
                                                  "content": ""}]})
    assert c.title == short


# --- files ----------------------------------------------------------------------------


def test_files(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    f = p.files.get("README.md", ref="main")
    assert f.decode() == b"# cats\n\nsecond\n"
    assert f.file_name == "README.md" and f.file_path == "README.md" and f.ref == "main"
    assert f.blob_id == repo.rev("main:README.md") and f.commit_id == repo.rev("main")
    assert f.last_commit_id == repo.rev("HEAD~1")
    assert f.content_sha256 == hashlib.sha256(b"# cats\n\nsecond\n").hexdigest()
    assert f.size == 15 and f.encoding == "base64" and f.execute_filemode is False
    assert p.files.get("bin.dat", ref="HEAD").decode() == repo.binary
    assert p.files.get("run.sh", ref="light").execute_filemode is True
    deep = p.files.get("data/d00/deep/er/x.csv", ref=repo.rev("HEAD")[:10])
    assert deep.decode() == b"a,b\n1,2\n" and deep.last_commit_id == repo.rev("HEAD~2")
    assert p.files.get("sp ace ünï.txt", ref="main").decode() == b"unicode name\n"
    assert p.files.get("link", ref="main").decode() == b"README.md"

    r = api(hub, "GET", "/files/README.md", t)
    assert r.status_code == 400 and r.json() == {"message": "400 (Bad request) \"ref\" not given"}
    r = api(hub, "GET", "/files/nope.txt?ref=main", t)
    assert r.status_code == 404 and r.json() == {"message": "404 File Not Found"}
    r = api(hub, "GET", "/files/data%2Fd00?ref=main", t)
    assert r.status_code == 404 and r.json() == {"message": "404 File Not Found"}
    r = api(hub, "GET", "/files/README.md?ref=nope", t)
    assert r.status_code == 404 and r.json() == {"message": "404 Commit Not Found"}
    r = api(hub, "GET", "/files/..%2Fx?ref=main", t)
    assert r.status_code == 400

    # HEAD: headers only
    r = api(hub, "HEAD", "/files/data%2Fd03%2Ff04.txt?ref=main", t)
    assert r.status_code == 200 and r.content == b""
    h = r.headers
    assert h["X-Gitlab-Size"] == "8"
    assert h["X-Gitlab-Blob-Id"] == repo.rev("main:data/d03/f04.txt")
    assert h["X-Gitlab-Commit-Id"] == repo.rev("main")
    assert h["X-Gitlab-Last-Commit-Id"] == repo.rev("main")
    assert h["X-Gitlab-Content-Sha256"] == hashlib.sha256(b"changed\n").hexdigest()
    assert h["X-Gitlab-File-Name"] == "f04.txt" and h["X-Gitlab-File-Path"] == "data/d03/f04.txt"
    assert h["X-Gitlab-Ref"] == "main" and h["X-Gitlab-Encoding"] == "base64"
    assert h["X-Gitlab-Execute-Filemode"] == "false"
    assert api(hub, "HEAD", "/files/run.sh?ref=main", t).headers["X-Gitlab-Execute-Filemode"] == "true"
    assert api(hub, "HEAD", "/files/nope?ref=main", t).status_code == 404
    heads = p.files.head("bin.dat", ref="main")
    assert heads["X-Gitlab-Size"] == str(len(repo.binary))


def test_files_raw(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    assert p.files.raw("bin.dat", ref="main") == repo.binary
    r = api(hub, "GET", "/files/bin.dat/raw?ref=main", t)
    assert r.status_code == 200 and r.content == repo.binary
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = api(hub, "GET", "/files/README.md/raw", t)  # ref defaults to the default branch
    assert r.content == b"# cats\n\nsecond\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    r = api(hub, "GET", "/files/README.md/raw?ref=light&lfs=true", t)
    assert r.content == b"# cats\n"
    r = api(hub, "GET", "/files/bin.dat/raw?ref=main", t, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == repo.binary[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(repo.binary)}"
    r = api(hub, "GET", "/files/bin.dat/raw?ref=main", t, headers={"Range": "bytes=-6"})
    assert r.status_code == 206 and r.content == b"\0\0tail"
    r = api(hub, "GET", "/files/bin.dat/raw?ref=main", t, headers={"Range": "bytes=4990-"})
    assert r.status_code == 206 and r.content == repo.binary[4990:]
    r = api(hub, "GET", "/files/bin.dat/raw?ref=main", t, headers={"Range": "bytes=99999-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(repo.binary)}"
    r = api(hub, "GET", "/files/nope/raw?ref=main", t)
    assert r.status_code == 404 and r.json() == {"message": "404 File Not Found"}
    assert api(hub, "GET", "/files/README.md/blame?ref=main", t).status_code == 404


def test_files_write(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    f = p.files.create({"file_path": "docs/new file.md", "branch": "main", "content": "one\n",
                        "commit_message": "add a doc"})
    assert f.file_path == "docs/new file.md" and f.branch == "main"
    got = p.files.get("docs/new file.md", ref="main")
    assert got.decode() == b"one\n"
    got.content = "two\n"
    got.save(branch="main", commit_message="edit the doc")
    assert p.files.raw("docs/new file.md", ref="main") == b"two\n"
    assert p.commits.get("main").title == "edit the doc"
    p.files.create({"file_path": "tool", "branch": "main", "encoding": "base64",
                    "content": base64.b64encode(b"\x00bin").decode(), "execute_filemode": True,
                    "commit_message": "bin"})
    assert api(hub, "HEAD", "/files/tool?ref=main", t).headers["X-Gitlab-Execute-Filemode"] == "true"
    assert p.files.raw("tool", ref="main") == b"\x00bin"
    p.files.delete("docs/new file.md", branch="main", commit_message="drop the doc")
    r = api(hub, "GET", "/files/docs%2Fnew%20file.md?ref=main", t)
    assert r.status_code == 404 and r.json() == {"message": "404 File Not Found"}
    r = api(hub, "POST", "/files/README.md", t,
            json={"branch": "main", "content": "x", "commit_message": "dup"})
    assert r.status_code == 400 and r.json() == {"message": "A file with this name already exists"}
    r = api(hub, "PUT", "/files/missing.md", t,
            json={"branch": "main", "content": "x", "commit_message": "m"})
    assert r.status_code == 400 and r.json() == {"message": "A file with this name doesn't exist"}
    r = api(hub, "POST", "/files/x.md", t, json={"branch": "main"})
    assert r.status_code == 400
    assert r.json() == {"error": "commit_message is missing, content is missing"}
    r = api(hub, "POST", "/files/x.md/raw", t, json={})
    assert r.status_code == 405
    repo.fetch()
    assert git("log", "-1", "--format=%s", "hub/main", cwd=repo.work).stdout.strip() == "drop the doc"


def test_files_last_commit_bound(repo):
    """GET follows a long history to the true last commit; HEAD stops early (it is what
    reefd sends to stat a file) and then names the requested commit itself."""
    w = repo.work
    stream = []
    for i in range(150):
        data = f"v{i}\n".encode()
        stream.append(b"commit refs/heads/main\ncommitter T <t@x> %d +0000\ndata 1\nc\n"
                      % (1800000000 + i))
        if i == 0:
            stream.append(b"from refs/heads/main^0\n")
        stream.append(b"M 100644 inline churn.txt\ndata %d\n%s\n" % (len(data), data))
    subprocess.run(["git", "fast-import", "--quiet"], cwd=w, input=b"".join(stream), check=True)
    git("push", "-q", repo.url, "main", cwd=w)
    tip, old = repo.rev("main"), repo.rev("main~151")  # "second: readme"
    f = repo.project.files.get("README.md", ref="main")
    assert f.last_commit_id == old and f.commit_id == tip
    h = api(repo.hub, "HEAD", "/files/README.md?ref=main", repo.token).headers
    assert h["X-Gitlab-Last-Commit-Id"] == tip
    h = api(repo.hub, "HEAD", "/files/churn.txt?ref=main", repo.token).headers
    assert h["X-Gitlab-Last-Commit-Id"] == tip


# --- blobs ----------------------------------------------------------------------------


def test_blobs(repo):
    p, hub, t = repo.project, repo.hub, repo.token
    sha = repo.rev("main:bin.dat")
    b = p.repository_blob(sha)
    assert b["sha"] == sha and b["size"] == len(repo.binary) and b["encoding"] == "base64"
    assert base64.b64decode(b["content"]) == repo.binary
    assert p.repository_raw_blob(sha) == repo.binary
    r = api(hub, "GET", f"/blobs/{sha[:10]}/raw", t, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == repo.binary[:10]
    for bad in ["0" * 40, repo.rev("main"), repo.rev("main^{tree}"), "xyz"]:
        r = api(hub, "GET", f"/blobs/{bad}", t)
        assert r.status_code == 404 and r.json() == {"message": "404 Blob Not Found"}, bad
        r = api(hub, "GET", f"/blobs/{bad}/raw", t)
        assert r.status_code == 404 and r.json() == {"message": "404 Blob Not Found"}, bad


# --- access ---------------------------------------------------------------------------


def test_access(repo):
    hub = repo.hub
    reporter = member(hub, "rita", "reporter")
    stranger = hub.user("sam")
    gl = gitlab.Gitlab(hub.url, private_token=reporter)
    p = gl.projects.get(PROJECT)
    assert p.files.get("README.md", ref="main").decode() == b"# cats\n\nsecond\n"
    assert p.branches.get("main").can_push is False
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as e:
        p.commits.create({"branch": "main", "commit_message": "no",
                          "actions": [{"action": "create", "file_path": "z", "content": ""}]})
    assert e.value.response_code == 403
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as e:
        p.branches.create({"branch": "nope", "ref": "main"})
    assert e.value.response_code == 403
    r = api(hub, "DELETE", "/branches/feature%2Fdeep%2Fx", reporter)
    assert r.status_code == 403 and r.json() == {"message": "403 Forbidden"}
    for route in ["/branches", "/tree", "/files/README.md?ref=main", "/commits",
                  f"/blobs/{repo.rev('main:README.md')}"]:
        r = api(hub, "GET", route, stranger)
        assert r.status_code == 404 and r.json() == {"message": "404 Project Not Found"}, route
    r = api(hub, "POST", "/commits", stranger, json={"branch": "main"})
    assert r.status_code == 404
    # developers write (on branches: the default branch is protected, as on GitLab)
    dev = member(hub, "dora", "developer")
    c = gitlab.Gitlab(hub.url, private_token=dev).projects.get(PROJECT).commits.create({
        "branch": "by-dev", "start_branch": "main", "commit_message": "by dev",
        "actions": [{"action": "create", "file_path": "dev.txt", "content": "d"}]})
    assert c.author_name == "dora"


def test_unknown_routes(repo):
    for route in ["/nope", "/tree/extra", "/commits/main/nope"]:
        r = api(repo.hub, "GET", route, repo.token)
        assert r.status_code == 404, route
