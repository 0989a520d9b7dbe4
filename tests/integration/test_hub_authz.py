"""Authorization of every reef-hub route, table-driven: each route (REST v4, /api/v1, git
smart HTTP, LFS, pipelines, jobs, traces, artifacts, experiments, processors, usage, EPF
callbacks) is hit by every kind of caller and must answer GitLab's status: a private
project is a 404 to anyone who is not a member, too low a role is a 403, an anonymous
write is a 401, a job token reaches its own project only and only while its job runs,
an EPF secret opens its own experiment only."""

import base64
import json
import time

import pytest
import requests

from conftest import Hub
from test_hub_ci import push_files

LFS_TYPE = "application/vnd.git-lfs+json"
OID = "a" * 64

HOLD_CI = """
hold:
  script:
    - |
      if [ -n "$HOLD" ]; then
        echo "$CI_JOB_TOKEN" > "$HOLD.tmp" && mv "$HOLD.tmp" "$HOLD"
        i=0; while [ ! -e "$HOLD.release" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
      fi
    - mkdir -p out && echo result > out/r.txt
  artifacts:
    paths: [out/]
"""

MANIFEST = {"slug": "noop", "name": "No-op", "type": "ALGORITHM", "command": "true",
            "input_data_type": "TABULAR", "output_data_type": "MODEL",
            "parameters": [], "metrics": []}

CALLERS = ["anon", "stranger", "guest", "reporter", "developer", "owner", "job"]


class World:
    pass


def _wait(fn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("authz")
    hub = Hub(tmp).start()
    w = World()
    w.hub = hub
    w.tokens = {"anon": None, "owner": hub.user("alice")}
    for name, level in (("guest", "guest"), ("reporter", "reporter"),
                        ("developer", "developer")):
        w.tokens[name] = hub.user(name)
    w.tokens["stranger"] = hub.user("stranger")
    tok = w.tokens["owner"]
    for path, vis in (("alice/priv", "private"), ("alice/pub", "public"),
                      ("alice/int", "internal"), ("alice/priv2", "private"),
                      ("alice/code", "private")):
        hub.project(path, "alice", vis)
        for name in ("guest", "reporter", "developer"):
            if path != "alice/priv2":
                hub.member(path, name, name)
    for path in ("alice/priv", "alice/pub", "alice/int", "alice/priv2"):
        push_files(hub, tok, path, {".gitlab-ci.yml": HOLD_CI, "README.md": "hi\n"}, tmp)
    push_files(hub, tok, "alice/code", {"processor.json": json.dumps(MANIFEST)}, tmp)
    v1 = lambda m, r, **kw: requests.request(m, hub.url + "/api/v1" + r,
                                             headers={"PRIVATE-TOKEN": tok}, timeout=30, **kw)
    r = v1("POST", "/code-projects/alice%2Fcode/publish", json={"ref": "main"})
    assert r.status_code == 201, r.text
    w.pipelines, w.jobs = {}, {}
    for path in ("alice/priv", "alice/pub", "alice/int"):
        enc = path.replace("/", "%2F")
        r = hub.api("POST", f"/projects/{enc}/pipeline", tok, json={"ref": "main"})
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        _wait(lambda: hub.api("GET", f"/projects/{enc}/pipelines/{pid}", tok).json()["status"]
              in ("success", "failed"))
        w.pipelines[path] = pid
        w.jobs[path] = hub.api("GET", f"/projects/{enc}/pipelines/{pid}/jobs", tok).json()[0]["id"]
    r = v1("POST", "/projects/alice%2Fpriv/experiments", json={"name": "e1", "processor": "noop"})
    assert r.status_code == 201, r.text
    w.experiment = r.json()
    # a job of alice/priv held running, whose token the table uses; it shares files with
    # the test through its workspace, the only place of the host its sandbox may write
    r = hub.api("POST", "/projects/alice%2Fpriv/pipeline", tok,
                json={"ref": "main", "variables": [{"key": "HOLD", "value": "job-token"}]})
    assert r.status_code == 201, r.text
    w.held_pipeline = r.json()["id"]
    held_job = _wait(lambda: hub.api("GET", f"/projects/alice%2Fpriv/pipelines/"
                                     f"{w.held_pipeline}/jobs", tok).json()[0]["id"])
    w.hold = hub.dir / "builds" / str(held_job) / "job-token"
    w.tokens["job"] = _wait(lambda: w.hold.exists() and w.hold.read_text().strip())
    yield w
    try:
        (w.hold.parent / "job-token.release").write_text("")
    except FileNotFoundError:
        pass  # the job has ended and its workspace is gone
    code = hub.stop()
    assert code == 0, hub.log_path.read_text()


def call(w, caller, method, route, body=None, kind="api"):
    """kind: api (PRIVATE-TOKEN / JOB-TOKEN headers), git (Basic auth), lfs (Basic, LFS
    JSON)."""
    tok = w.tokens[caller]
    headers, auth = {}, None
    if kind == "api":
        if tok:
            headers["JOB-TOKEN" if caller == "job" else "PRIVATE-TOKEN"] = tok
    elif tok:
        auth = ("gitlab-ci-token" if caller == "job" else caller, tok)
    if kind == "lfs":
        headers.update({"Accept": LFS_TYPE, "Content-Type": LFS_TYPE})
    kw = {"json": body} if body is not None else {}
    return requests.request(method, w.hub.url + route, headers=headers, auth=auth, timeout=30,
                            allow_redirects=False, **kw)


#        anon stranger guest reporter developer owner job(of alice/priv, acting as alice)
# A job token counts only on the routes GitLab lists for it (doc/ci/jobs/ci_job_token.md);
# elsewhere GitLab ignores it and the job is anonymous: its column is then anon's.
PRIV_READ = (404, 404, 200, 200, 200, 200, 404)
PRIV_CODE = (404, 404, 403, 200, 200, 200, 404)
PRIV_JOBCODE = (404, 404, 403, 200, 200, 200, 200)  # repository routes on the job list
# public pipelines (GitLab's default): guests read pipelines, jobs and traces
PRIV_CI = (404, 404, 200, 200, 200, 200, 404)
PRIV_ART = (404, 404, 200, 200, 200, 200, 200)  # artifacts: on the job list too
PRIV_DEV_WRITE = (404, 404, 403, 403, 201, 201, 404)
PUB_READ = (200, 200, 200, 200, 200, 200, 200)
PUB_ART = (200, 200, 200, 200, 200, 200, 404)  # a job token is valid for its project only
PUB_WRITE = (401, 403, 403, 403, 201, 201, 401)
INT_READ = (404, 200, 200, 200, 200, 200, 404)
OTHER = (404, 404, 404, 404, 404, 200, 404)  # alice/priv2: alice's only

P = "/api/v4/projects/alice%2Fpriv"
Q = "/api/v4/projects/alice%2Fpub"
I = "/api/v4/projects/alice%2Fint"
O = "/api/v4/projects/alice%2Fpriv2"


def routes(w):
    pl, jb = w.pipelines, w.jobs
    lfs_dl = {"operation": "download", "transfers": ["basic"],
              "objects": [{"oid": OID, "size": 1}]}
    lfs_up = dict(lfs_dl, operation="upload")
    return [
        # --- REST v4: projects and repository ---
        ("GET", P, None, "api", PRIV_READ),
        ("GET", P + "/repository/tree", None, "api", PRIV_CODE),
        ("GET", P + "/repository/branches", None, "api", PRIV_JOBCODE),
        ("GET", P + "/repository/branches/main", None, "api", PRIV_CODE),
        ("GET", P + "/repository/tags", None, "api", PRIV_JOBCODE),
        ("GET", P + "/repository/commits/main", None, "api", PRIV_JOBCODE),
        ("GET", P + "/repository/files/README.md?ref=main", None, "api", PRIV_CODE),
        ("GET", P + "/repository/files/README.md/raw?ref=main", None, "api", PRIV_JOBCODE),
        ("POST", P + "/repository/branches?branch=b-{caller}&ref=main", None, "api",
         PRIV_DEV_WRITE),
        # settings: never with a job token (401 as anonymous, authenticate_non_get!)
        ("PUT", P + "?ci_config_path=", None, "api", (401, 404, 403, 403, 403, 200, 401)),
        ("GET", O, None, "api", OTHER),
        ("GET", O + "/repository/tree", None, "api", OTHER),
        ("GET", O + "/pipelines", None, "api", OTHER),
        ("GET", Q, None, "api", PUB_READ),
        ("GET", Q + "/repository/tree", None, "api", PUB_READ),
        ("POST", Q + "/repository/branches?branch=b-{caller}&ref=main", None, "api", PUB_WRITE),
        ("GET", I, None, "api", INT_READ),
        ("GET", I + "/repository/tree", None, "api", INT_READ),
        # --- pipelines, jobs, traces, artifacts ---
        ("GET", P + "/pipelines", None, "api", PRIV_CI),
        ("GET", P + f"/pipelines/{pl['alice/priv']}", None, "api", PRIV_CI),
        ("GET", P + f"/pipelines/{pl['alice/priv']}/jobs", None, "api", PRIV_CI),
        ("GET", P + f"/pipelines/{pl['alice/priv']}/variables", None, "api",
         (404, 404, 403, 403, 200, 200, 404)),
        ("GET", P + "/jobs", None, "api", PRIV_CI),
        ("GET", P + f"/jobs/{jb['alice/priv']}", None, "api", PRIV_CI),
        ("GET", P + f"/jobs/{jb['alice/priv']}/trace", None, "api", PRIV_CI),
        ("GET", P + f"/jobs/{jb['alice/priv']}/artifacts", None, "api", PRIV_ART),
        ("GET", P + f"/jobs/{jb['alice/priv']}/artifacts/out/r.txt", None, "api", PRIV_ART),
        ("GET", P + "/jobs/artifacts/main/raw/out/r.txt?job=hold", None, "api", PRIV_ART),
        ("POST", P + "/pipeline?ref=main", None, "api", PRIV_DEV_WRITE),
        ("POST", P + f"/pipelines/{pl['alice/priv']}/retry", None, "api", PRIV_DEV_WRITE),
        # (the developer's retry makes the job not retryable again: the owner is skipped)
        ("POST", P + f"/jobs/{jb['alice/priv']}/retry", None, "api",
         (404, 404, 403, 403, 201, None, 404)),
        # a job of another project is not found through this one
        ("GET", P + f"/jobs/{jb['alice/pub']}", None, "api", (404, 404, 404, 404, 404, 404, 404)),
        ("GET", Q + "/pipelines", None, "api", PUB_READ),
        ("GET", Q + f"/jobs/{jb['alice/pub']}/trace", None, "api", PUB_READ),
        ("GET", Q + f"/jobs/{jb['alice/pub']}/artifacts", None, "api", PUB_ART),
        ("POST", Q + "/pipeline?ref=main", None, "api", PUB_WRITE),
        ("POST", Q + f"/pipelines/{pl['alice/pub']}/cancel", None, "api",
         (401, 403, 403, 403, 200, 200, 401)),
        ("POST", Q + f"/jobs/{jb['alice/pub']}/retry", None, "api",
         (401, 403, 403, 403, 201, None, 401)),
        ("GET", I + "/pipelines", None, "api", INT_READ),
        ("GET", I + f"/jobs/{jb['alice/int']}/trace", None, "api", INT_READ),
        # --- /api/v1: experiments, processors, usage ---
        ("GET", "/api/v1/projects/alice%2Fpriv/experiments", None, "api", PRIV_CODE),
        ("GET", "/api/v1/projects/alice%2Fpriv/experiments/e1", None, "api", PRIV_CODE),
        ("GET", "/api/v1/projects/alice%2Fpriv/data-pipelines", None, "api", PRIV_CODE),
        ("POST", "/api/v1/projects/alice%2Fpriv/experiments/e1/cancel", None, "api",
         (404, 404, 403, 403, 200, 200, 404)),
        ("POST", "/api/v1/projects/alice%2Fpriv/experiments",
         {"name": "x-{caller}", "processor": "noop"}, "api", PRIV_DEV_WRITE),
        ("GET", "/api/v1/projects/alice%2Fpriv2/experiments", None, "api", OTHER),
        ("POST", "/api/v1/projects/alice%2Fpriv2/experiments",
         {"name": "y-{caller}", "processor": "noop"}, "api", (404, 404, 404, 404, 404, 201, 404)),
        ("GET", "/api/v1/projects/alice%2Fpub/experiments", None, "api", PUB_READ),
        # the processor's code project is private: members who may read its code only
        # (not guests); a job token counts nowhere under /api/v1
        ("GET", "/api/v1/processors/noop", None, "api", (404, 404, 404, 200, 200, 200, 404)),
        ("POST", "/api/v1/code-projects/alice%2Fcode/publish", {"ref": "main"}, "api",
         (401, 404, 403, 403, 201, 201, 401)),
        ("GET", "/api/v1/namespaces/alice/usage", None, "api",
         (401, 404, 404, 404, 404, 200, 401)),
        ("GET", "/api/v1/usage", None, "api", (401, 200, 200, 200, 200, 200, 401)),
        # --- git smart HTTP ---
        ("GET", "/alice/priv.git/info/refs?service=git-upload-pack", None, "git",
         (401, 404, 403, 200, 200, 200, 200)),
        # a job token pushes only with ci_push_repository_for_job_token_allowed (off)
        ("GET", "/alice/priv.git/info/refs?service=git-receive-pack", None, "git",
         (401, 404, 403, 403, 200, 200, 403)),
        ("GET", "/alice/priv2.git/info/refs?service=git-upload-pack", None, "git",
         (401, 404, 404, 404, 404, 200, 404)),
        ("GET", "/alice/pub.git/info/refs?service=git-upload-pack", None, "git",
         (200, 200, 200, 200, 200, 200, 404)),
        ("GET", "/alice/pub.git/info/refs?service=git-receive-pack", None, "git",
         (401, 403, 403, 403, 200, 200, 404)),
        ("GET", "/alice/int.git/info/refs?service=git-upload-pack", None, "git",
         (401, 200, 200, 200, 200, 200, 404)),
        # --- Git LFS ---
        ("POST", "/alice/priv.git/info/lfs/objects/batch", lfs_dl, "lfs",
         (401, 404, 403, 200, 200, 200, 200)),
        ("POST", "/alice/priv.git/info/lfs/objects/batch", lfs_up, "lfs",
         (401, 404, 403, 403, 200, 200, 403)),
        ("POST", "/alice/priv2.git/info/lfs/objects/batch", lfs_dl, "lfs",
         (401, 404, 404, 404, 404, 200, 404)),
        ("GET", f"/alice/priv.git/gitlab-lfs/objects/{OID}", None, "lfs",
         (401, 404, 403, 404, 404, 404, 404)),
        ("POST", "/alice/pub.git/info/lfs/objects/batch", lfs_dl, "lfs",
         (200, 200, 200, 200, 200, 200, 404)),
        ("POST", "/alice/pub.git/info/lfs/objects/batch", lfs_up, "lfs",
         (401, 403, 403, 403, 200, 200, 404)),
    ]


def test_every_route_every_caller(world):
    failures = []
    for method, route, body, kind, expected in routes(world):
        for caller, want in zip(CALLERS, expected):
            if want is None:
                continue
            r_route = route.replace("{caller}", caller)
            b = json.loads(json.dumps(body).replace("{caller}", caller)) if body else None
            r = call(world, caller, method, r_route, b, kind)
            if r.status_code != want:
                failures.append(f"{caller:9} {method} {r_route}: {r.status_code}, want {want}"
                                f" {r.text[:120]!r}")
                continue
            if want == 404 and kind == "api" and "/projects/" in r_route and \
                    r_route.count("/") <= 5 and "/jobs/" not in r_route:
                # existence is not leaked: GitLab's exact body
                assert r.json() == {"message": "404 Project Not Found"}, (caller, r_route, r.text)
    assert not failures, "\n".join(failures)


def test_lists_hide_private_projects(world):
    for caller in ("anon", "stranger"):
        tok = world.tokens[caller]
        names = [p["path_with_namespace"] for p in world.hub.api("GET", "/projects", tok).json()]
        assert "alice/priv" not in names and "alice/priv2" not in names, (caller, names)
        assert "alice/pub" in names
        assert ("alice/int" in names) == (caller == "stranger")
        h = {"PRIVATE-TOKEN": tok} if tok else {}
        procs = requests.get(world.hub.url + "/api/v1/processors", headers=h, timeout=30)
        assert procs.status_code == 200 and procs.json() == [], (caller, procs.text)


def test_epf_secret_opens_its_own_experiment_only(world):
    tok = world.tokens["owner"]
    enc = "alice%2Fpriv"
    exp = world.experiment
    r = world.hub.api("GET", f"/projects/{enc}/pipelines/{exp['pipeline_id']}/variables", tok)
    secret = {v["key"]: v["value"] for v in r.json()}["EPF_SECRET"]
    url = world.hub.url + "/api/v1/epf/experiments/{}/update"
    body = {"epoch": 1, "loss": 0.5}
    # no secret, a wrong one, a personal token, the secret of another experiment
    for headers in ({}, {"EPF-BOT-TOKEN": "x" * 64}, {"EPF-BOT-TOKEN": tok},
                    {"PRIVATE-TOKEN": tok}):
        r = requests.post(url.format(exp["id"]), json=body, headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
    r = requests.post(url.format(exp["id"] + 1000), json=body,
                      headers={"EPF-BOT-TOKEN": secret}, timeout=30)
    assert r.status_code == 401


def test_job_token_dies_with_its_job(world):
    tok = world.tokens["job"]
    raw = P.replace("/api/v4", "") + "/repository/files/README.md/raw?ref=main"
    r = world.hub.api("GET", raw, headers={"JOB-TOKEN": tok})
    assert r.status_code == 200
    (world.hold.parent / "job-token.release").write_text("")
    owner = world.tokens["owner"]
    _wait(lambda: world.hub.api("GET", f"/projects/alice%2Fpriv/pipelines/"
                                f"{world.held_pipeline}", owner).json()["status"]
          in ("success", "failed"))
    for kind, route in (("api", P + "/repository/files/README.md/raw?ref=main"),
                        ("git", "/alice/priv.git/info/refs?service=git-upload-pack")):
        r = call(world, "job", "GET", route, None, kind)
        assert r.status_code == 401, (route, r.status_code)
