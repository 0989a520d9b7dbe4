"""reef-hub's GitLab v4 core routes against real clients: python-gitlab 3.12 and plain
HTTP (requests) for the exact status codes, bodies and pagination headers."""

import re
import urllib.parse

import gitlab
import pytest
import requests


def gl_for(hub, token=None):
    return gitlab.Gitlab(hub.url, private_token=token, timeout=30)


def test_auth_and_current_user(hub):
    tok = hub.user("alice")
    gl = gl_for(hub, tok)
    gl.auth()
    assert gl.user.username == "alice"
    r = hub.api("GET", "/user", token=tok)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    u = r.json()
    assert u["state"] == "active" and u["is_admin"] is False and u["avatar_url"] is None
    assert u["web_url"] == hub.url + "/alice"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", u["created_at"])
    # Bearer and query-string forms authenticate the same user.
    r = requests.get(hub.url + "/api/v4/user", headers={"Authorization": "Bearer " + tok})
    assert r.json()["username"] == "alice"
    r = requests.get(hub.url + "/api/v4/user", params={"private_token": tok})
    assert r.json()["username"] == "alice"
    r = requests.get(hub.url + "/api/v4/user", params={"access_token": tok})
    assert r.json()["username"] == "alice"
    assert hub.api("GET", "/user").status_code == 401
    assert hub.api("GET", "/version", token=tok).json()["version"]


@pytest.mark.parametrize("how", ["header", "bearer", "query"])
def test_bad_token_is_401_even_on_public_routes(hub, how):
    hub.user("alice")
    hub.project("acme/open", "alice", "public")
    kw = {}
    if how == "header":
        kw["headers"] = {"PRIVATE-TOKEN": "glpat-not-a-real-token-000"}
    elif how == "bearer":
        kw["headers"] = {"Authorization": "Bearer glpat-not-a-real-token-000"}
    else:
        kw["params"] = {"private_token": "glpat-not-a-real-token-000"}
    for route in ("/projects", "/projects/acme%2Fopen", "/user"):
        r = requests.get(hub.url + "/api/v4" + route, timeout=30, **kw)
        assert r.status_code == 401, route
        assert r.json() == {"message": "401 Unauthorized"}
        assert r.headers["Content-Type"] == "application/json"
    # Anonymous (no token at all) still reads the public project.
    assert hub.api("GET", "/projects/acme%2Fopen").status_code == 200
    with pytest.raises(gitlab.exceptions.GitlabAuthenticationError):
        gl_for(hub, "glpat-not-a-real-token-000").auth()


def test_expired_token_is_rejected(hub):
    hub.user("alice")
    old = hub.cli("token", "create", str(hub.dir), "alice", "--expires-at",
                  "2001-01-01").stdout.strip()
    later = hub.cli("token", "create", str(hub.dir), "alice", "--expires-at",
                    "2999-01-01").stdout.strip()
    assert hub.api("GET", "/user", token=old).status_code == 401
    assert hub.api("GET", "/user", token=later).status_code == 200


def test_read_api_scope_cannot_write(hub):
    hub.user("alice")
    ro = hub.cli("token", "create", str(hub.dir), "alice", "--scopes",
                 "read_api").stdout.strip()
    assert hub.api("GET", "/projects", token=ro).status_code == 200
    r = hub.api("POST", "/projects", token=ro, json={"name": "x"})
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"


def test_project_get_by_path_and_fields(hub):
    tok = hub.user("alice")
    hub.project("grp/sub/proj", "alice", "private")
    gl = gl_for(hub, tok)
    p = gl.projects.get("grp/sub/proj")
    assert p.path_with_namespace == "grp/sub/proj"
    assert p.name == "proj" and p.path == "proj"
    assert p.visibility == "private"
    assert p.http_url_to_repo == hub.url + "/grp/sub/proj.git"
    assert p.web_url == hub.url + "/grp/sub/proj"
    assert p.namespace["full_path"] == "grp/sub"
    assert p.namespace["kind"] == "group"
    assert p.namespace["parent_id"] is not None
    assert p.empty_repo is True and p.default_branch is None
    assert p.lfs_enabled is True and p.archived is False
    assert p.permissions["project_access"]["access_level"] == 50
    assert gl.projects.get(p.id).path_with_namespace == "grp/sub/proj"
    # An unencoded '/' is another route, not the project.
    r = hub.api("GET", "/projects/grp/sub/proj", token=tok)
    assert r.status_code == 404
    assert r.json() == {"error": "404 Not Found"}


def test_private_project_is_404_to_others(hub):
    alice = hub.user("alice")
    bob = hub.user("bob")
    hub.project("alice-grp/secret", "alice", "private")
    pid = gl_for(hub, alice).projects.get("alice-grp/secret").id
    gl = gl_for(hub, bob)
    with pytest.raises(gitlab.exceptions.GitlabGetError) as e:
        gl.projects.get("alice-grp/secret")
    assert e.value.response_code == 404
    for route in ("/projects/alice-grp%2Fsecret", f"/projects/{pid}"):
        for tok in (bob, None):
            r = hub.api("GET", route, token=tok)
            assert r.status_code == 404
            assert r.json() == {"message": "404 Project Not Found"}
    assert all(p.id != pid for p in gl.projects.list(iterator=True))
    # Once a member, bob sees it with his access level.
    hub.member("alice-grp/secret", "bob", "reporter")
    p = gl.projects.get("alice-grp/secret")
    assert p.permissions["project_access"]["access_level"] == 20
    assert any(q.id == pid for q in gl.projects.list(membership=True, iterator=True))


def test_internal_and_public_visibility(hub):
    hub.user("alice")
    bob = hub.user("bob")
    hub.project("acme/inner", "alice", "internal")
    hub.project("acme/open", "alice", "public")
    hub.project("acme/closed", "alice", "private")
    assert hub.api("GET", "/projects/acme%2Finner", token=bob).status_code == 200
    assert hub.api("GET", "/projects/acme%2Finner").status_code == 404
    assert hub.api("GET", "/projects/acme%2Fopen").status_code == 200
    anon = {p["path_with_namespace"] for p in hub.api("GET", "/projects").json()}
    assert anon == {"acme/open"}
    seen = {p.path_with_namespace for p in gl_for(hub, bob).projects.list(iterator=True)}
    assert seen == {"acme/open", "acme/inner"}
    assert gl_for(hub).projects.get("acme/open").visibility == "public"


def test_pagination_across_pages(hub):
    tok = hub.user("alice")
    s = requests.Session()
    s.headers["PRIVATE-TOKEN"] = tok
    for i in range(125):
        r = s.post(hub.url + "/api/v4/projects", json={"name": f"p{i:03d}"}, timeout=30)
        assert r.status_code == 201, r.text
    gl = gl_for(hub, tok)
    got = [p.path for p in gl.projects.list(iterator=True, per_page=50, order_by="name",
                                            sort="asc")]
    assert got == [f"p{i:03d}" for i in range(125)]
    r = s.get(hub.url + "/api/v4/projects",
              params={"per_page": 100, "order_by": "id", "simple": "true"})
    assert r.headers["X-Total"] == "125"
    assert r.headers["X-Total-Pages"] == "2"
    assert r.headers["X-Page"] == "1" and r.headers["X-Per-Page"] == "100"
    assert r.headers["X-Next-Page"] == "2" and r.headers["X-Prev-Page"] == ""
    assert len(r.json()) == 100
    links = requests.utils.parse_header_links(r.headers["Link"])
    rels = {link["rel"]: link["url"] for link in links}
    assert set(rels) == {"next", "first", "last"}
    nxt = urllib.parse.urlsplit(rels["next"])
    assert f"{nxt.scheme}://{nxt.netloc}" == hub.url
    q = urllib.parse.parse_qs(nxt.query)
    assert q == {"per_page": ["100"], "order_by": ["id"], "simple": ["true"], "page": ["2"]}
    r2 = s.get(rels["next"])
    assert len(r2.json()) == 25
    assert r2.headers["X-Next-Page"] == "" and r2.headers["X-Prev-Page"] == "1"
    ids = [p["id"] for p in r.json()] + [p["id"] for p in r2.json()]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 125
    # Default order: created_at descending; per_page caps at 100.
    r = s.get(hub.url + "/api/v4/projects", params={"per_page": 1000})
    assert r.headers["X-Per-Page"] == "100"
    assert s.get(hub.url + "/api/v4/projects").headers["X-Per-Page"] == "20"


def test_list_filters(hub):
    alice = hub.user("alice")
    hub.user("bob")
    hub.project("alice/mine", "alice", "private")
    hub.project("bobs/theirs", "bob", "public")
    hub.project("bobs/shared", "bob", "private")
    hub.member("bobs/shared", "alice", "developer")
    gl = gl_for(hub, alice)

    def paths(**kw):
        return sorted(p.path_with_namespace for p in gl.projects.list(iterator=True, **kw))

    assert paths() == ["alice/mine", "bobs/shared", "bobs/theirs"]
    assert paths(membership=True) == ["alice/mine", "bobs/shared"]
    assert paths(owned=True) == ["alice/mine"]
    assert paths(visibility="public") == ["bobs/theirs"]
    assert paths(search="THEIR") == ["bobs/theirs"]
    assert paths(min_access_level=30) == ["alice/mine", "bobs/shared"]
    simple = hub.api("GET", "/projects", token=alice, params={"simple": True}).json()
    assert "permissions" not in simple[0] and "path_with_namespace" in simple[0]
    r = hub.api("GET", "/projects", token=alice, params={"order_by": "bogus"})
    assert r.status_code == 400


def test_create_project(hub):
    alice = hub.user("alice")
    bob = hub.user("bob")
    hub.project("team/existing", "alice", "private")
    gl = gl_for(hub, alice)
    p = gl.projects.create({"name": "My Data Set", "visibility": "internal"})
    assert p.path == "my-data-set" and p.path_with_namespace == "alice/my-data-set"
    assert p.visibility == "internal" and p.empty_repo is True
    assert p.namespace["kind"] == "user"
    team = [n for n in gl.namespaces.list(iterator=True) if n.full_path == "team"][0]
    q = gl.projects.create({"path": "in-group", "namespace_id": team.id})
    assert q.path_with_namespace == "team/in-group"
    # Form bodies work too.
    r = requests.post(hub.url + "/api/v4/projects", headers={"PRIVATE-TOKEN": alice},
                      data={"name": "formed", "visibility": "public"}, timeout=30)
    assert r.status_code == 201 and r.json()["visibility"] == "public"
    r = hub.api("POST", "/projects", token=alice, json={"name": "My Data Set"})
    assert r.status_code == 400
    assert "has already been taken" in str(r.json()["message"])
    r = hub.api("POST", "/projects", token=alice, json={"path": "../evil"})
    assert r.status_code == 400
    r = hub.api("POST", "/projects", token=alice, json={"description": "x"})
    assert r.status_code == 400 and "error" in r.json()
    r = hub.api("POST", "/projects", token=alice, json={"name": "v", "visibility": "secret"})
    assert r.status_code == 400
    r = hub.api("POST", "/projects", token=bob, json={"name": "x", "namespace_id": team.id})
    assert r.status_code == 403 and r.json() == {"message": "403 Forbidden"}
    r = hub.api("POST", "/projects", json={"name": "anon"})
    assert r.status_code == 401
    r = hub.api("POST", "/projects", token=alice, data="{not json",
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_hostile_paths_never_escape(hub):
    tok = hub.user("alice")
    hub.project("acme/open", "alice", "public")
    raw = requests.Session()
    for path in ("/api/v4/projects/%2e%2e", "/api/v4/projects/..%2F..%2Fetc%2Fpasswd",
                 "/api/v4/projects/%2Fetc%2Fpasswd", "/api/v4/projects/acme%2F..%2Fopen",
                 "/api/v4/projects/acme%2Fopen%2F..", "/acme/../acme/open.git/info/refs",
                 "/api/v4/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd.git/info/refs"):
        req = requests.Request("GET", hub.url + path, headers={"PRIVATE-TOKEN": tok})
        prep = req.prepare()
        prep.url = hub.url + path  # keep the dots: requests would normalize them
        r = raw.send(prep, timeout=30)
        assert r.status_code in (400, 404), path
        assert "root:" not in r.text
    for path in ("/api/v4/projects/acme%00%2Fopen", "/api/v4/projects/acme%2Fopen%00"):
        r = requests.get(hub.url + path, headers={"PRIVATE-TOKEN": tok}, timeout=30)
        assert r.status_code == 400, path


def test_oversize_body_is_413(hub):
    tok = hub.user("alice")
    body = b"{" + b" " * (17 << 20) + b"}"
    r = requests.post(hub.url + "/api/v4/projects", data=body, timeout=60,
                      headers={"PRIVATE-TOKEN": tok, "Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the cap applies while reading
        for _ in range(17):
            yield b" " * (1 << 20)

    r = requests.post(hub.url + "/api/v4/projects", data=chunks(), timeout=60,
                      headers={"PRIVATE-TOKEN": tok, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_unknown_routes_and_headers_cap(hub):
    tok = hub.user("alice")
    r = hub.api("GET", "/nope", token=tok)
    assert r.status_code == 404 and r.json() == {"error": "404 Not Found"}
    r = requests.get(hub.url + "/api/v4/user", timeout=30,
                     headers={"PRIVATE-TOKEN": tok, "X-Big": "a" * 200000})
    assert r.status_code in (413, 431)


def test_namespaces_and_groups(hub):
    alice = hub.user("alice")
    bob = hub.user("bob")
    hub.project("grp/sub/proj", "alice", "private")
    hub.project("pubgrp/open", "alice", "public")
    gl = gl_for(hub, alice)
    full = {n.full_path for n in gl.namespaces.list(iterator=True)}
    assert {"alice", "grp", "grp/sub", "pubgrp"} <= full
    g = gl.groups.get("grp/sub")
    assert g.full_path == "grp/sub" and g.parent_id == gl.groups.get("grp").id
    assert hub.api("GET", "/groups/grp%2Fsub", token=bob).status_code == 404
    assert hub.api("GET", "/groups/pubgrp").status_code == 200
    assert hub.api("GET", "/users/1", token=bob).json()["username"] == "alice"
    assert [u["username"] for u in
            hub.api("GET", "/users", token=bob, params={"username": "alice"}).json()] == ["alice"]


def test_concurrent_creates_and_reads(hub):
    """Server threads share one SQLite connection: concurrent writers must not mix their
    transactions, and readers keep working meanwhile."""
    import concurrent.futures

    tok = hub.user("alice")

    def create(i):
        r = requests.post(hub.url + "/api/v4/projects", headers={"PRIVATE-TOKEN": tok},
                          json={"name": f"c{i:02d}"}, timeout=60)
        listed = hub.api("GET", "/projects", token=tok, params={"per_page": 5})
        return r.status_code, r.json().get("id"), r.json().get("path"), listed.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(create, range(40)))
    assert all(st == 201 and lst == 200 for st, _, _, lst in results), results
    assert len({pid for _, pid, _, _ in results}) == 40
    for _, pid, path, _ in results:
        assert hub.api("GET", f"/projects/{pid}", token=tok).json()["path"] == path
    assert hub.api("GET", "/projects", token=tok).headers["X-Total"] == "40"
    repos = sorted(p.name for p in (hub.dir / "repos").iterdir())
    assert len(repos) == 40
