"""GitLab's GraphQL endpoint on reef-hub (POST /api/graphql): the blobs query reefd sends,
against a repository pushed with real git and git-lfs; shapes and types of every field,
aliases, variables, limits, authentication and GitLab's error shapes."""

import hashlib
import os

import pytest
import requests

from conftest import Hub, git, which

BLOBS = """query($fullPath: ID!, $ref: String!, $paths: [String!]!) {
  project(fullPath: $fullPath) { repository { blobs(ref: $ref, paths: $paths) {
    nodes { path size rawSize lfsOid storedExternally oid } } } } }"""

BIG = os.urandom(300_000)
SMALL = b"hello graphql\n"
NESTED = b"nested file\n"


def gql(hub, query, variables=None, token=None, headers=None, **kw):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    body = {"query": query}
    if variables is not None:
        body["variables"] = variables
    return requests.post(hub.url + "/api/graphql", json=body, headers=h, timeout=30, **kw)


def git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def pointer(data):
    return (f"version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One hub for the module: the tests only read, but for users they add."""
    h = Hub(tmp_path_factory.mktemp("gql")).start()
    yield h
    code = h.stop()
    assert code == 0, f"reef-hub exited {code}; log: {h.log_path.read_text()}"


@pytest.fixture(scope="module")
def repo(hub, tmp_path_factory):
    """grp/data (private, alice) with a plain file, a nested one, an LFS file pushed by
    git-lfs, and a tag; grp/pub (public, empty)."""
    if not which("git-lfs"):
        pytest.skip("git-lfs is not installed")
    tmp_path = tmp_path_factory.mktemp("src")
    tok = hub.user("alice")
    hub.project("grp/data", "alice", "private")
    hub.project("grp/pub", "alice", "public")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    src = tmp_path / "src"
    src.mkdir()
    git("init", "-q", "-b", "main", cwd=src, env=env)
    git("lfs", "install", "--local", cwd=src, env=env)
    git("lfs", "track", "*.bin", cwd=src, env=env)
    (src / "a.txt").write_bytes(SMALL)
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "n.txt").write_bytes(NESTED)
    (src / "model.bin").write_bytes(BIG)
    git("add", "-A", cwd=src, env=env)
    git("commit", "-q", "-m", "files", cwd=src, env=env)
    git("tag", "v1", cwd=src, env=env)
    git("push", "-q", hub.git_url("grp/data", token=tok), "main", "v1", cwd=src, env=env)
    sha = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    return {"token": tok, "sha": sha}


def blobs(hub, token, ref, paths, path="grp/data"):
    r = gql(hub, BLOBS, {"fullPath": path, "ref": ref, "paths": paths}, token=token)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


def test_blobs_shapes_and_types(hub, repo):
    tok = repo["token"]
    out = blobs(hub, tok, "main", ["a.txt", "model.bin", "dir/sub/n.txt", "missing.txt"])
    assert "errors" not in out, out
    nodes = out["data"]["project"]["repository"]["blobs"]["nodes"]
    # the missing path is left out; order follows the request
    assert [n["path"] for n in nodes] == ["a.txt", "model.bin", "dir/sub/n.txt"]
    a, lfs, nested = nodes
    # BigInt fields are strings; storedExternally is null (not false) for plain blobs
    assert a == {"path": "a.txt", "size": str(len(SMALL)), "rawSize": str(len(SMALL)),
                 "lfsOid": None, "storedExternally": None, "oid": git_oid(SMALL)}
    ptr = pointer(BIG)
    assert lfs == {"path": "model.bin", "size": str(len(ptr)), "rawSize": str(len(BIG)),
                   "lfsOid": hashlib.sha256(BIG).hexdigest(), "storedExternally": True,
                   "oid": git_oid(ptr)}
    assert nested["oid"] == git_oid(NESTED) and nested["size"] == str(len(NESTED))
    # the same answer by tag and by commit sha, and for a trailing slash on a path
    for ref in ("v1", repo["sha"], repo["sha"][:12]):
        again = blobs(hub, tok, ref, ["a.txt", "model.bin", "dir/sub/n.txt"])
        assert again["data"]["project"]["repository"]["blobs"]["nodes"] == nodes
    # an unknown revision finds nothing; an invalid ref name is an error on blobs only
    assert blobs(hub, tok, "nope", ["a.txt"])["data"]["project"]["repository"]["blobs"] == {
        "nodes": []}
    bad = blobs(hub, tok, "a..b", ["a.txt"])
    assert bad["data"] == {"project": {"repository": {"blobs": None}}}
    assert bad["errors"][0]["message"] == "Ref is not valid"
    assert bad["errors"][0]["path"] == ["project", "repository", "blobs"]
    # an empty repository answers []
    assert blobs(hub, tok, "main", ["a.txt"], "grp/pub")["data"]["project"]["repository"][
        "blobs"] == {"nodes": []}


def test_inline_literals_aliases_typename_and_more_fields(hub, repo):
    q = """{ __typename
      a: project(fullPath: "grp/data") { __typename fullPath repository { __typename rootRef
        main: blobs(ref: "main", paths: ["a.txt", "dir/"]) { __typename
          nodes { __typename name mode id oid externalStorage }
          pageInfo { hasNextPage endCursor } } } }
      b: project(fullPath: "grp/data") { repository { blobs(ref: "v1", paths: "model.bin") {
        nodes { path externalStorage } } } }
      gone: project(fullPath: "grp/none") { fullPath } }"""
    out = gql(hub, q, token=repo["token"]).json()
    assert "errors" not in out, out
    d = out["data"]
    assert list(d) == ["__typename", "a", "b", "gone"] and d["__typename"] == "Query"
    assert d["gone"] is None
    a = d["a"]
    assert a["__typename"] == "Project" and a["fullPath"] == "grp/data"
    r = a["repository"]
    assert r["__typename"] == "Repository" and r["rootRef"] == "main"
    conn = r["main"]
    assert conn["__typename"] == "RepositoryBlobConnection"
    assert conn["pageInfo"] == {"hasNextPage": False, "endCursor": "Mg"}  # base64("2")
    f, t = conn["nodes"]
    assert f == {"__typename": "RepositoryBlob", "name": "a.txt", "mode": "100644",
                 "id": git_oid(SMALL), "oid": git_oid(SMALL), "externalStorage": None}
    # a directory comes back as its tree entry, as Gitaly's GetBlobs does
    assert t["name"] == "dir" and t["mode"] == "40000"
    # a single string where a list is wanted is coerced to a list
    assert d["b"]["repository"]["blobs"]["nodes"] == [
        {"path": "model.bin", "externalStorage": "lfs"}]


def test_nodes_capped_at_page_size(hub, repo):
    out = gql(hub, """query($p: [String!]!) { project(fullPath: "grp/data") { repository {
        blobs(paths: $p) { nodes { path } pageInfo { hasNextPage } } } } }""",
              {"p": ["a.txt"] * 101}, token=repo["token"]).json()
    b = out["data"]["project"]["repository"]["blobs"]
    assert len(b["nodes"]) == 100 and b["pageInfo"]["hasNextPage"] is True


def test_complexity_limits(hub, repo):
    tok = repo["token"]
    # reefd's query costs 22 + 2 per path: 114 paths fit under 250, 115 do not
    ok = blobs(hub, tok, "main", ["a.txt"] * 114)
    assert "errors" not in ok
    r = gql(hub, BLOBS, {"fullPath": "grp/data", "ref": "main", "paths": ["a.txt"] * 115},
            token=tok)
    assert r.status_code == 200
    assert r.json() == {"errors": [{"message": "Query has complexity of 252, which exceeds "
                                               "max complexity of 250"}]}
    # anonymous callers get 200
    r = gql(hub, BLOBS, {"fullPath": "grp/pub", "ref": "main", "paths": ["a"] * 90})
    assert r.json()["errors"][0]["message"] == ("Query has complexity of 202, which exceeds "
                                                "max complexity of 200")


def test_query_too_large_and_nesting(hub, repo):
    q = "{ __typename }" + " " * 10_000
    r = gql(hub, q, token=repo["token"])
    assert r.status_code == 422 and r.json() == {"errors": [{"message": "Query too large"}]}
    # characters, not bytes: 9,000 two-byte characters in a comment still fit
    r = gql(hub, "{ __typename } #" + "é" * 9000, token=repo["token"])
    assert r.status_code == 200 and r.json() == {"data": {"__typename": "Query"}}
    r = gql(hub, "{ __typename }", {"x": "y" * (1 << 20)}, token=repo["token"])
    assert r.status_code == 413
    deep = "{ " + "a { " * 100 + "b" + " }" * 101
    r = gql(hub, deep, token=repo["token"])
    assert r.status_code == 200 and "nested too deeply" in r.json()["errors"][0]["message"]


def test_parse_and_validation_errors(hub, repo):
    tok = repo["token"]
    r = gql(hub, "{ project(fullPath: \"grp/data\") { ", token=tok)
    assert r.status_code == 200
    assert r.json() == {"errors": [{"message": "Unexpected end of document",
                                    "locations": [{"line": 1, "column": 35}]}]}
    e = gql(hub, "{ a(b: ) }", token=tok).json()["errors"][0]
    assert e == {"message": "Expected VALUE, actual: RPAREN (\")\") at [1, 8]",
                 "locations": [{"line": 1, "column": 8}]}
    e = gql(hub, '{ project(fullPath: "grp/data") { nope } }', token=tok).json()
    assert "data" not in e
    assert e["errors"] == [{"message": "Field 'nope' doesn't exist on type 'Project'",
                            "locations": [{"line": 1, "column": 35}],
                            "path": ["query", "project", "nope"],
                            "extensions": {"code": "undefinedField", "typeName": "Project",
                                           "fieldName": "nope"}}]
    msgs = [x["message"] for x in gql(hub, '{ project { repository } }',
                                      token=tok).json()["errors"]]
    assert msgs == ["Field 'project' is missing required arguments: fullPath",
                    "Field must have selections (field 'repository' returns Repository but "
                    "has no selections. Did you mean 'repository { ... }'?)"]
    e = gql(hub, 'query($p: ID!) { project(fullPath: $p) { fullPath } }', {},
            token=tok).json()["errors"][0]
    assert e["message"] == "Variable $p of type ID! was provided invalid value"
    assert e["extensions"]["problems"][0]["explanation"] == "Expected value to not be null"
    e = gql(hub, 'query($p: String!) { project(fullPath: $p) { fullPath } }', {"p": "grp/data"},
            token=tok).json()["errors"][0]
    assert e["message"] == ("Type mismatch on variable $p and argument fullPath "
                            "(String! / ID!)")
    e = gql(hub, 'query($x: ID) { __typename }', token=tok).json()["errors"][0]
    assert e["message"] == "Variable $x is declared by anonymous query but not used"
    # the same response key twice is one field when name and arguments agree
    q = '{ project(fullPath: "grp/data") { fullPath } project(fullPath: "grp/data") { name } }'
    assert gql(hub, q, token=tok).json() == {"data": {"project": {"fullPath": "grp/data",
                                                                  "name": "data"}}}
    q = '{ project(fullPath: "grp/data") { fullPath } project(fullPath: "grp/pub") { name } }'
    e = gql(hub, q, token=tok).json()["errors"][0]
    assert e["extensions"]["code"] == "fieldConflict" and "argument conflict" in e["message"]
    for bad in ("mutation { x }", "{ ...f }", "{ a @skip(if: true) }", "{ a } { b }"):
        r = gql(hub, bad, token=tok)
        assert r.status_code == 200 and r.json()["errors"][0]["message"], bad
    assert gql(hub, "", token=tok).json() == {
        "errors": [{"message": "No query string was present"}]}


def test_auth_and_visibility(hub, repo):
    tok = repo["token"]
    q = '{ project(fullPath: "grp/data") { fullPath repository { rootRef } } }'
    # no token on a private project: null, not an error
    assert gql(hub, q).json() == {"data": {"project": None}}
    # a bad token, a job token, a token without api/read_api: 401 "Invalid token"
    for headers in ({"Authorization": "Bearer glpat-nope"}, {"PRIVATE-TOKEN": "nope"},
                    {"JOB-TOKEN": "whatever"}):
        r = gql(hub, q, headers=headers)
        assert r.status_code == 401 and r.json() == {"errors": [{"message": "Invalid token"}]}
    repo_only = hub.cli("token", "create", str(hub.dir), "alice", "--scopes",
                        "read_repository").stdout.strip()
    assert gql(hub, q, token=repo_only).status_code == 401
    # read_api is enough, by Bearer or PRIVATE-TOKEN, and GET works too
    ro = hub.cli("token", "create", str(hub.dir), "alice", "--scopes", "read_api").stdout.strip()
    want = {"data": {"project": {"fullPath": "grp/data", "repository": {"rootRef": "main"}}}}
    assert gql(hub, q, token=ro).json() == want
    assert gql(hub, q, headers={"PRIVATE-TOKEN": ro}).json() == want
    r = requests.get(hub.url + "/api/graphql", params={"query": q},
                     headers={"PRIVATE-TOKEN": ro}, timeout=30)
    assert r.json() == want
    # another user sees nothing of the private project; a guest sees it but not its code
    bob = hub.user("bob")
    assert gql(hub, q, token=bob).json() == {"data": {"project": None}}
    hub.member("grp/data", "bob", "guest")
    assert gql(hub, q, token=bob).json() == {
        "data": {"project": {"fullPath": "grp/data", "repository": None}}}
    # anonymous may read a public project
    assert gql(hub, '{ project(fullPath: "grp/pub") { fullPath repository { empty } } }'
               ).json() == {"data": {"project": {"fullPath": "grp/pub",
                                                 "repository": {"empty": True}}}}
    # a numeric id is not a full path
    assert gql(hub, '{ project(fullPath: "1") { fullPath } }', token=tok).json() == {
        "data": {"project": None}}
    # variables may come as a JSON string
    out = gql(hub, BLOBS, '{"fullPath":"grp/data","ref":"main","paths":["a.txt"]}', token=tok)
    assert out.json()["data"]["project"]["repository"]["blobs"]["nodes"][0]["path"] == "a.txt"
    r = gql(hub, BLOBS, [1], token=tok)
    assert r.status_code == 422


def lfs_like(size, sha="ab" * 32, v="version https://git-lfs.github.com/spec"):
    """A blob GitLab's Blob#lfs_pointer? looks at: its spec line, an sha256 and a size,
    padded with newlines to exactly `size` bytes (118 bytes before padding)."""
    b = f"{v}\nsha256:{sha}\nsize 1".encode()
    assert len(b) <= size
    return b + b"\n" * (size - len(b))


def test_blobs_many_directories_match_git(hub, repo, tmp_path):
    """The resolver keeps the last directory's tree between paths: paths that hop between
    directories, come back, go through files, name trees, submodules and missing entries
    must answer as git itself sees the commit (git cat-file is the oracle here)."""
    tok = repo["token"]
    hub.project("grp/walk", "alice", "private")
    src = tmp_path / "walk"
    src.mkdir()
    env = {"HOME": str(tmp_path)}
    git("init", "-q", "-b", "main", cwd=src, env=env)
    files = {}
    for d in ("a", "a/b", "a/b/c", "b", "ab", "a-b", "z/y/x"):
        for i in range(3):
            files[f"{d}/f{i}.txt"] = f"{d} {i}\n".encode()
    # GitLab's pointer rule holds for 120..200 bytes only: both limits and one past each
    for size in (119, 120, 200, 201):
        files[f"lfs/p{size}"] = lfs_like(size)
    files["lfs/bad_version"] = lfs_like(150, v="version https://example.com/spec")
    files["lfs/nul"] = lfs_like(150)[:-1] + b"\0"
    files["top.txt"] = b"top\n"
    for path, data in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_bytes(data)
    git("add", "-A", cwd=src, env=env)
    git("update-index", "--add", "--cacheinfo", f"160000,{repo['sha']},a/sub", cwd=src, env=env)
    git("commit", "-q", "-m", "walk", cwd=src, env=env)
    git("push", "-q", hub.git_url("grp/walk", token=tok), "main", cwd=src, env=env)

    asked = ["a/f0.txt", "a/b/f0.txt", "a/f1.txt", "a/b/c/f2.txt", "a/b/f1.txt", "b/f0.txt",
             "a/f2.txt", "ab/f1.txt", "a-b/f0.txt", "a/b/nope.txt", "nope/f0.txt",
             "top.txt/f0.txt", "a/sub/f0.txt", "a/sub", "a/b", "a/b/", "a", "z/y/x/f2.txt",
             "z/y", "z/y/x/f0.txt", "top.txt", "a//f0.txt", "./top.txt", "a/../top.txt",
             "/top.txt", "", "z/y/x/f9.txt", "z/y/x/f1.txt", "lfs/p119", "lfs/p120",
             "lfs/p200", "lfs/p201", "lfs/bad_version", "lfs/nul", "a/b/c/f0.txt",
             "a/b/c/../f0.txt", "a/f0.txt"]
    nodes = blobs(hub, tok, "main", asked, "grp/walk")["data"]["project"]["repository"][
        "blobs"]["nodes"]

    def expect(p):
        q = p.rstrip("/")
        if not q or q.startswith("/") or any(s in ("", ".", "..") for s in q.split("/")):
            return None
        r = git("ls-tree", "--full-tree", "HEAD", "--", q, cwd=src, check=False)
        line = r.stdout.strip()
        if r.returncode or not line or line.split("\t", 1)[1] != q:
            return None
        mode, kind, oid = line.split("\t")[0].split()
        size = 0 if kind == "commit" else int(git("cat-file", "-s", oid, cwd=src).stdout)
        lfs = None
        if kind == "blob" and 120 <= size <= 200:
            data = git("cat-file", "blob", oid, cwd=src).stdout.encode()
            if data.startswith(b"version https://git-lfs.github.com/spec") and b"\0" not in data:
                lfs = "ab" * 32
        return {"path": q, "size": str(size), "rawSize": "1" if lfs else str(size),
                "lfsOid": lfs, "storedExternally": True if lfs else None, "oid": oid}

    want = [e for e in map(expect, asked) if e]
    assert nodes == want
    got = {n["path"] for n in nodes}
    # the oracle agrees with the limits as GitLab draws them
    assert {"lfs/p120", "lfs/p200", "a/sub", "a/b", "a", "z/y"} <= got
    assert not {"a/b/nope.txt", "nope/f0.txt", "top.txt/f0.txt", "a/sub/f0.txt"} & got
    lfs = {n["path"]: n["lfsOid"] for n in nodes if n["path"].startswith("lfs/")}
    assert lfs == {"lfs/p119": None, "lfs/p120": "ab" * 32, "lfs/p200": "ab" * 32,
                   "lfs/p201": None, "lfs/bad_version": None, "lfs/nul": None}
