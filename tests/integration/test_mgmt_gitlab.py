"""reef-hub in the management role beside a GitLab (`serve --gitlab URL`), with two hubs
on loopback: hub A is a normal reef-hub playing GitLab (its /api/v4, git and its own
runner run the jobs), hub B runs `--gitlab <A>` and serves /api/v1 only. reefd mounts A
with `-o mgmt=<B>` and launches through the mount; the job runs on A's runner as the
launching user, reef-epf in it reports to B, and status, log, metrics, outputs and
artifacts show through the mount (experiments, data pipelines, visualizations). B
authenticates with A's tokens, shows only what A shows the caller, keeps no token in
clear, and does not start a second run when GitLab's answer is lost."""

import base64
import contextlib
import json
import os
import re
import time
import urllib.parse

import pytest
import requests

from conftest import Hub
from test_hub_ci import push_files
from test_hub_mgmt import MANIFEST, TRAIN_PY, csv_data
from test_mount_mlops import FINISHED, wait_file, write_ctl

IMAGE = "python:3.12-slim"


@pytest.fixture
def hub(tmp_path):
    """Hub A, the GitLab. B and the test receivers listen on loopback beside it, so A allows
    hooks to the local network, as a GitLab admin does for a service on the same network
    ("Allow requests to the local network from webhooks and integrations")."""
    h = Hub(tmp_path, serve_args=["--allow-local-webhooks"]).start()
    yield h
    code = h.stop()
    assert code == 0, f"reef-hub exited {code}; log: {h.log_path.read_text()}"


@pytest.fixture
def two(hub, tmp_path):
    """hub is A (the GitLab); B is the management service beside it."""
    bdir = tmp_path / "b"
    bdir.mkdir()
    b = Hub(bdir, serve_args=["--gitlab", hub.url]).start()
    yield hub, b
    code = b.stop()
    assert code == 0, f"hub B exited {code}; log: {b.log_path.read_text()}"


def v1(b, token, method, route, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["PRIVATE-TOKEN"] = token
    return requests.request(method, b.url + "/api/v1" + route, headers=headers, timeout=60,
                            **kw)


EXPS = "/projects/alice%2Fcats/experiments"


def publish(b, token, **params):
    """alice/sgd's processor (processor.json, or params' path) published through B."""
    r = v1(b, token, "POST", "/code-projects/alice%2Fsgd/publish",
           json={"ref": "main", **params})
    assert r.status_code == 201, r.text
    return r.json()


def launch(b, token, name, epochs=1):
    """An sgd-train experiment over alice/cats's data, launched through B: its JSON."""
    r = v1(b, token, "POST", EXPS, json={"name": name, "processor": "sgd-train",
                                         "input_path": "data", "params": {"epochs": epochs}})
    assert r.status_code == 201, r.text
    return r.json()


def wait_status(get, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = get()
        if st in FINISHED:
            return st
        time.sleep(0.3)
    return st


def wait_experiment(b, token, name, timeout=90):
    """The experiment's status once it has finished, else the last one seen."""
    return wait_status(lambda: v1(b, token, "GET", f"{EXPS}/{name}").json()["status"], timeout)


@contextlib.contextmanager
def b_behind_proxy(a, tmp_path):
    """Hub B beside A through a GitLabProxy that can drop or delay A's answers; B must
    exit 0."""
    from gitlab_proxy import GitLabProxy
    proxy = GitLabProxy(a.port)
    bdir = tmp_path / "b"
    bdir.mkdir()
    b = Hub(bdir, serve_args=["--gitlab", proxy.url]).start()
    try:
        yield b, proxy
    finally:
        code = b.stop()
        proxy.close()
    assert code == 0


def setup_projects(a, tmp_path):
    token = a.user("alice")
    a.project("alice/sgd", "alice")
    a.project("alice/cats", "alice")
    manifest = dict(MANIFEST, image=IMAGE)
    push_files(a, token, "alice/sgd", {"train.py": TRAIN_PY,
                                       "processor.json": json.dumps(manifest)}, tmp_path)
    push_files(a, token, "alice/cats", {"data/train.csv": csv_data(), "README.md": "cats\n"},
               tmp_path)
    # the job pushes its outputs with its job token, which GitLab allows only with this
    # project setting (doc/ci/jobs/ci_job_token.md, "Allow Git push requests")
    r = a.api("PUT", "/projects/alice%2Fcats", token,
              json={"ci_push_repository_for_job_token_allowed": True})
    assert r.status_code == 200, r.text
    return token


def test_two_hubs_experiment_through_the_mount(two, tmp_path, mount_factory):
    a, b = two
    token = setup_projects(a, tmp_path)
    # B serves /api/v1 only: no v4, no git, no LFS, no GraphQL
    assert requests.get(b.url + "/api/v4/user", headers={"PRIVATE-TOKEN": token}).status_code \
        == 404
    assert requests.get(b.url + "/alice/cats.git/info/refs?service=git-upload-pack"
                        ).status_code == 404
    assert requests.post(b.url + "/api/graphql", json={"query": "{x}"},
                         headers={"PRIVATE-TOKEN": token}).status_code == 404
    # publish from A's project through B (manifest through A's files API)
    proc = publish(b, token)
    assert proc["slug"] == "sgd-train" and proc["image"] == IMAGE
    assert proc["code_project_path"] == "alice/sgd" and len(proc["sha"]) == 40
    head = a.api("GET", "/projects/alice%2Fsgd/repository/branches/main", token).json()
    assert proc["sha"] == head["commit"]["id"]

    m = mount_factory(a, token, extra_opts=f"mgmt={b.url}")
    assert os.listdir(m / ".reef/processors") == ["sgd-train"]
    exps = m / "alice/cats/experiments"
    assert sorted(os.listdir(exps)) == ["launch", "launch.error"]
    t0 = time.time()
    err, out = write_ctl(exps / "launch", "name=gl1\nprocessor=sgd-train\ninput_path=data\n"
                                          "epochs=3\nlearning-rate=0.05\n")
    assert err == 0, out
    seen = wait_file(exps / "gl1/status", FINISHED, timeout=120)
    assert seen[-1] == "success", (seen, (exps / "gl1/log").read_text()
                                   if os.path.exists(exps / "gl1/log") else None,
                                   b.log_path.read_text())
    e = json.loads((exps / "gl1/experiment.json").read_text())
    assert e["branch"] == "experiment/gl1" and e["user"]["username"] == "alice"
    assert e["web_url"].startswith(a.url + "/alice/cats/")
    # the run is A's pipeline and job, started as alice
    pl = a.api("GET", f"/projects/alice%2Fcats/pipelines/{e['pipeline_id']}", token).json()
    assert pl["ref"] == "experiment/gl1" and pl["status"] == "success"
    assert pl["user"]["username"] == "alice"
    job = a.api("GET", f"/projects/alice%2Fcats/jobs/{e['job_id']}", token).json()
    assert job["pipeline"]["id"] == e["pipeline_id"]
    # reef-epf reported to B: metrics per epoch, start and finish
    metrics = json.loads((exps / "gl1/metrics.json").read_text())
    assert [x["epoch"] for x in metrics] == [1, 2, 3]
    assert e["epf"]["started_at"] and e["epf"]["reported_status"] == "success"
    # the log is A's job trace; the secret never shows in it
    log = (exps / "gl1/log").read_text()
    assert "trained 3 epochs" in log
    # outputs pushed to the branch on A, artifacts from A's jobs API
    assert "model.json" in os.listdir(exps / "gl1/outputs")
    assert os.listdir(exps / "gl1/artifacts") == ["output"]
    # the committed CI file: GitLab keywords only, the processor's image, no secret
    ci = a.api("GET", "/projects/alice%2Fcats/repository/files/.gitlab-ci.yml/raw",
               token, params={"ref": "experiment/gl1"}).text
    assert f'image: "{IMAGE}"' in ci and "EPF_SECRET" not in ci
    tree = a.api("GET", "/projects/alice%2Fcats/repository/tree", token,
                 params={"ref": "experiment/gl1", "path": ".reef/processor"}).json()
    assert sorted(x["name"] for x in tree) == ["processor.json", "train.py"]
    # the pipeline's variables carry the callback and the request id, not in the file
    keys = {x["key"]: x["value"] for x in a.api(
        "GET", f"/projects/alice%2Fcats/pipelines/{e['pipeline_id']}/variables",
        token).json()}
    assert keys["EPF_URL"] == f"{b.url}/api/v1/epf/experiments/{e['id']}"
    assert keys["REEF_REQUEST_ID"] == e["request_id"]
    # no secret travels as a pipeline variable (GitLab cannot mask those): reef-epf
    # reported with the job's own CI_JOB_TOKEN, which GitLab masks
    assert set(keys) == {"EPF_URL", "EXPERIMENT_ID", "REEF_REQUEST_ID"}
    assert "EPF_SECRET" not in log and "EPF-BOT-TOKEN" not in log
    import sqlite3
    db = sqlite3.connect(b.dir / "hub.db")
    assert {r[0] for r in db.execute("SELECT secret_hash FROM mg_launches")} == {""}
    db.close()
    print(f"launch to success through two hubs: {time.time() - t0:.1f} s")

    # the same request id twice starts one run (the service looks it up first)
    body = {"name": "gl2", "processor": "sgd-train", "input_path": "data",
            "params": {"epochs": 1}, "request_id": "req-0123456789abcdef"}
    r1 = v1(b, token, "POST", "/projects/alice%2Fcats/experiments", json=body)
    r2 = v1(b, token, "POST", "/projects/alice%2Fcats/experiments", json=body)
    assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.headers.get("Reef-Request-Replayed") == "true"
    pls = a.api("GET", "/projects/alice%2Fcats/pipelines", token,
                params={"ref": "experiment/gl2"}).json()
    assert len(pls) == 1
    # a name already taken on GitLab is a conflict, not a second branch
    r3 = v1(b, token, "POST", "/projects/alice%2Fcats/experiments",
            json={**body, "request_id": "req-other-0123456789"})
    assert r3.status_code == 409, r3.text
    # cancel goes to GitLab's pipeline; the launch's status follows it
    r = v1(b, token, "POST", "/projects/alice%2Fcats/experiments/gl2/cancel")
    assert r.status_code == 200, r.text
    assert wait_experiment(b, token, "gl2", timeout=30) == "canceled"
    assert a.api("GET", f"/projects/alice%2Fcats/pipelines/{r1.json()['pipeline_id']}",
                 token).json()["status"] == "canceled"
    # retry: a new pipeline on the same branch (its job's token reports), run to the end
    r = v1(b, token, "POST", "/projects/alice%2Fcats/experiments/gl2/retry")
    assert r.status_code == 201, r.text
    assert r.json()["pipeline_id"] != r1.json()["pipeline_id"]
    assert wait_experiment(b, token, "gl2") == "success"
    # usage: job seconds and artifact bytes from A's jobs API
    u = v1(b, token, "GET", "/namespaces/alice/usage")
    assert u.status_code == 200, u.text
    assert u.json()["pipeline_seconds"] > 0 and u.json()["storage_bytes"]["artifacts"] > 0
    # git bytes from GitLab's project statistics (reporters and up; A serves them too)
    stats = a.api("GET", "/projects/alice%2Fcats", token, params={"statistics": "true"}
                  ).json()["statistics"]
    assert stats["repository_size"] > 0 and stats["lfs_objects_size"] == 0
    assert u.json()["storage_bytes"]["git"] >= stats["repository_size"]
    assert "statistics" not in a.api("GET", "/projects/alice%2Fcats", token).json()

    # B keeps no token in clear: not in its database, its WAL or its log
    for name in os.listdir(b.dir):
        p = b.dir / name
        if p.is_file():
            assert token.encode() not in p.read_bytes(), name
    assert token not in b.log_path.read_text()


def test_two_hubs_auth_and_visibility(two, tmp_path):
    a, b = two
    token = setup_projects(a, tmp_path)
    bob = a.user("bob")
    publish(b, token)
    # a token A does not know: 401, as are none and a garbled one
    assert v1(b, "glpat-not-a-token-at-all", "GET", "/processors").status_code == 401
    assert v1(b, None, "GET", "/processors").status_code == 401
    assert v1(b, None, "GET", "/processors",
              headers={"Authorization": "Bearer nope"}).status_code == 401
    # Authorization: Bearer works as PRIVATE-TOKEN does
    r = v1(b, None, "GET", "/processors", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and [x["slug"] for x in r.json()] == ["sgd-train"]
    # bob sees nothing of alice's private projects: 404, no processors, no launch
    assert v1(b, bob, "GET", "/projects/alice%2Fcats/experiments").status_code == 404
    assert v1(b, bob, "GET", "/processors").json() == []
    assert v1(b, bob, "GET", "/processors/sgd-train").status_code == 404
    r = v1(b, bob, "POST", "/projects/alice%2Fcats/experiments",
           json={"processor": "sgd-train"})
    assert r.status_code == 404
    assert v1(b, bob, "POST", "/code-projects/alice%2Fsgd/publish",
              json={"ref": "main"}).status_code == 404
    assert v1(b, bob, "GET", "/namespaces/alice/usage").status_code == 404
    assert a.api("GET", "/projects/alice%2Fsgd", token, params={"statistics": "true"}
                 ).json()["statistics"]["repository_size"] > 0
    # a reporter sees but cannot launch (GitLab's permissions decide)
    a.member("alice/cats", "bob", "reporter")
    a.member("alice/sgd", "bob", "reporter")
    time.sleep(10.5)  # B's answer about bob's access to the project is 10 s old at most
    assert v1(b, bob, "GET", "/projects/alice%2Fcats/experiments").status_code == 200
    # statistics for reporters and up only
    assert "statistics" in a.api("GET", "/projects/alice%2Fcats", bob,
                                 params={"statistics": "true"}).json()
    carol = a.user("carol")
    a.member("alice/cats", "carol", "guest")
    pj = a.api("GET", "/projects/alice%2Fcats", carol, params={"statistics": "true"})
    assert pj.status_code == 200 and "statistics" not in pj.json()
    r = v1(b, bob, "POST", "/projects/alice%2Fcats/experiments",
           json={"processor": "sgd-train"})
    assert r.status_code == 403, r.text
    # an unknown parameter is refused before anything reaches GitLab
    r = v1(b, token, "POST", "/projects/alice%2Fcats/experiments",
           json={"processor": "sgd-train", "params": {"nope": 1}})
    assert r.status_code == 400 and "nope" in r.text
    r = v1(b, token, "POST", "/projects/alice%2Fcats/experiments",
           json={"processor": "sgd-train", "source_branch": "no-such"})
    assert r.status_code == 404 and "Branch" in r.text
    assert a.api("GET", "/projects/alice%2Fcats/pipelines", token).json() == []
    for name in os.listdir(b.dir):
        p = b.dir / name
        if p.is_file():
            data = p.read_bytes()
            assert token.encode() not in data and bob.encode() not in data, name


def test_lost_gitlab_answers_start_one_run(hub, tmp_path):
    """GitLab acts on the launch's commit and on its pipeline but the answers are lost on
    the way back to the service: it finds the branch by the request id in its head commit,
    and the pipeline on the launch's own branch, instead of sending either again."""
    a = hub
    token = setup_projects(a, tmp_path)
    with b_behind_proxy(a, tmp_path) as (b, proxy):
        publish(b, token)
        url = EXPS
        for name, what in (("lost-commit", r"^POST /api/v4/projects/\d+/repository/commits$"),
                           ("lost-pipeline", r"^POST /api/v4/projects/\d+/pipeline$")):
            proxy.reset()
            proxy.drop = (what, 1)
            body = {"name": name, "processor": "sgd-train", "input_path": "data",
                    "params": {"epochs": 1}, "request_id": f"rid-{name}-0123456789"}
            r = v1(b, token, "POST", url, json=body)
            assert r.status_code == 201, r.text
            assert proxy.drop[1] == 0  # GitLab acted and its answer was lost
            assert proxy.count(what) == 1  # and nothing was sent again
            e = r.json()
            assert e["pipeline_id"] and e["request_id"] == body["request_id"]
            pls = a.api("GET", "/projects/alice%2Fcats/pipelines", token,
                        params={"ref": f"experiment/{name}"}).json()
            assert [p["id"] for p in pls] == [e["pipeline_id"]]
            commits = a.api("GET", "/projects/alice%2Fcats/repository/commits", token,
                            params={"ref_name": f"experiment/{name}", "per_page": 5}).json()
            assert body["request_id"] in commits[0]["message"]
            # a client resending the same request gets the same run
            r2 = v1(b, token, "POST", url, json=body)
            assert r2.status_code == 201 and r2.json()["id"] == e["id"]
            st = wait_experiment(b, token, name)
            assert st == "success", (st, b.log_path.read_text()[-2000:])


def test_revoked_token_stops_within_the_cache_time(hub, tmp_path):
    import hashlib
    import sqlite3
    a = hub
    token = a.user("alice")
    bdir = tmp_path / "b"
    bdir.mkdir()
    b = Hub(bdir, serve_args=["--gitlab", a.url])
    os.environ["REEF_HUB_AUTH_TTL"] = "2"
    try:
        b.start()
    finally:
        del os.environ["REEF_HUB_AUTH_TTL"]
    try:
        assert v1(b, token, "GET", "/processors").status_code == 200
        # revoked on A (as an admin would): GitLab refuses it at once, B within 2 s
        db = sqlite3.connect(a.dir / "hub.db")
        with db:
            db.execute("UPDATE tokens SET revoked=1 WHERE sha256=?",
                       (hashlib.sha256(token.encode()).hexdigest(),))
        db.close()
        assert a.api("GET", "/user", token).status_code == 401
        t0 = time.time()
        while v1(b, token, "GET", "/processors").status_code == 200:
            assert time.time() - t0 < 2.5, "B still trusts a token revoked on A"
            time.sleep(0.1)
        assert v1(b, token, "GET", "/processors").status_code == 401
    finally:
        assert b.stop() == 0


def test_two_hubs_data_pipeline_and_visualization(two, tmp_path, mount_factory):
    """OPERATION and VISUALIZATION processors through the mount with the service beside
    the GitLab: the data pipeline's output is a new branch on A that shows in branches/,
    the visualization's outputs are files in its directory."""
    from test_mount_dataops import FILTER_PY, OPERATION, PLOT_PY, VISUALIZATION
    a, b = two
    token = setup_projects(a, tmp_path)
    push_files(a, token, "alice/sgd", {"filter.py": FILTER_PY, "op.json": json.dumps(OPERATION),
                                       "plot.py": PLOT_PY, "viz.json": json.dumps(VISUALIZATION)},
               tmp_path, message="more processors")
    for path in ("op.json", "viz.json"):
        publish(b, token, path=path)
    m = mount_factory(a, token, extra_opts=f"mgmt={b.url}")
    proj = m / "alice/cats"
    err, out = write_ctl(proj / "data-pipelines/launch",
                         "name=dp1\nprocessor=row-filter\ninput_path=data\ncolumn=label\nmin=1\n")
    assert err == 0, out
    err, out = write_ctl(proj / "visualizations/launch",
                         "name=viz1\nprocessor=histogram\ninput_path=data\nbins=3\n")
    assert err == 0, out
    for d in (proj / "data-pipelines/dp1", proj / "visualizations/viz1"):
        seen = wait_file(d / "status", FINISHED, timeout=120)
        assert seen[-1] == "success", (d, seen, (d / "log").read_text())
    # the new dataset version: a branch on A, seen through the mount like any other
    assert "dp1" in os.listdir(proj / "branches/data-pipeline")
    version = proj / "branches/data-pipeline/dp1"
    assert (version / "output/train.csv").read_bytes() == \
        (proj / "data-pipelines/dp1/outputs/train.csv").read_bytes()
    assert (version / "data/train.csv").read_text() == csv_data()
    pls = a.api("GET", "/projects/alice%2Fcats/pipelines", token,
                params={"ref": "data-pipeline/dp1"}).json()
    assert len(pls) == 1 and pls[0]["status"] == "success"
    out_dir = proj / "visualizations/viz1/outputs"
    assert sorted(os.listdir(out_dir)) == ["index.html", "plot.svg", "summary.json"]
    assert len(json.loads((out_dir / "summary.json").read_text())["bins"]) == 3
    assert json.loads((proj / "visualizations/viz1/visualization.json").read_text())[
        "branch"] == "data-visualization/viz1"


PROBE_CI = """probe:
  script:
    - printf %s "$CI_JOB_TOKEN" > token.txt
    - 'curl -sS -H "JOB-TOKEN: $CI_JOB_TOKEN" "$CI_API_V4_URL/job" > job.json'
    - 'reef-epf metrics ''{"epoch": 99, "loss": 1}'' || echo "epf refused"'
  artifacts:
    paths: [token.txt, job.json]
"""


def test_epf_reports_with_the_job_token(two, tmp_path):
    """Beside a GitLab, reef-epf authenticates with its job's CI_JOB_TOKEN, which the
    service shows to GitLab (GET /api/v4/job): a job of another pipeline is refused (403),
    a forged token too (401). A plays GitLab's GET /job as GitLab does."""
    a, b = two
    token = setup_projects(a, tmp_path)
    publish(b, token)
    launch(b, token, "jt1", epochs=2)
    assert wait_experiment(b, token, "jt1") == "success", b.log_path.read_text()[-2000:]
    e = v1(b, token, "GET", "/projects/alice%2Fcats/experiments/jt1").json()
    assert [x["epoch"] for x in e["metrics"]] == [1, 2]
    assert e["epf"]["reported_status"] == "success"
    epf = f"{b.url}/api/v1/epf/experiments/{e['id']}"

    # forged or missing credentials: 401, whatever the run's state
    for headers in ({"JOB-TOKEN": "f" * 40}, {}, {"EPF-BOT-TOKEN": "0" * 64},
                    {"PRIVATE-TOKEN": token}):
        r = requests.post(epf + "/update", headers=headers, json={"epoch": 7, "loss": 1},
                          timeout=30)
        assert r.status_code == 401, (headers.keys(), r.status_code, r.text)

    # a running job of another pipeline of the same project: GitLab vouches for its
    # token, but it is not the run's job
    push_files(a, token, "alice/cats", {".gitlab-ci.yml": PROBE_CI}, tmp_path,
               branch="probe")
    pid = a.api("GET", "/projects/alice%2Fcats", token).json()["id"]
    r = a.api("POST", "/projects/alice%2Fcats/pipeline", token,
              json={"ref": "probe", "variables": [{"key": "EPF_URL", "value": epf}]})
    assert r.status_code == 201, r.text
    probe = r.json()["id"]
    assert wait_status(lambda: a.api("GET", f"/projects/alice%2Fcats/pipelines/{probe}",
                                     token).json()["status"]) == "success"
    job = a.api("GET", f"/projects/alice%2Fcats/pipelines/{probe}/jobs", token).json()[0]
    trace = a.api("GET", f"/projects/alice%2Fcats/jobs/{job['id']}/trace", token).text
    assert "refused (403)" in trace and "epf refused" in trace, trace
    assert [x["epoch"] for x in v1(b, token, "GET", "/projects/alice%2Fcats/experiments/jt1"
                                   ).json()["metrics"]] == [1, 2]

    # GET /api/v4/job as the job saw it: its own job, running, in GitLab's job shape
    def artifact(name):
        r = a.api("GET", f"/projects/alice%2Fcats/jobs/{job['id']}/artifacts/{name}", token)
        assert r.status_code == 200, r.text
        return r.content
    me = json.loads(artifact("job.json"))
    assert me["id"] == job["id"] and me["status"] == "running"
    assert me["pipeline"]["id"] == probe and me["pipeline"]["project_id"] == pid
    assert me["ref"] == "probe" and me["user"]["username"] == "alice"
    assert {"name", "stage", "commit", "web_url", "artifacts", "runner", "created_at",
            "started_at", "tag_list"} <= set(me)
    # the token of a finished job authenticates nobody (auth_job_finder.rb): 401
    jt = artifact("token.txt").decode()
    assert len(jt) >= 20 and jt not in trace
    r = requests.get(a.url + "/api/v4/job", headers={"JOB-TOKEN": jt}, timeout=30)
    assert r.status_code == 401, r.text
    # a personal token names no job: 404; none and a forged job token: 401
    r = a.api("GET", "/job", token)
    assert r.status_code == 404 and r.json()["message"] == "404 Job Not Found"
    assert requests.get(a.url + "/api/v4/job", timeout=30).status_code == 401
    assert requests.get(a.url + "/api/v4/job", headers={"JOB-TOKEN": "f" * 40},
                        timeout=30).status_code == 401
    # neither hub logs the job token
    assert jt not in b.log_path.read_text() and jt not in a.log_path.read_text()


def test_usage_counts_every_page_of_projects(two, tmp_path):
    """Usage beside a GitLab follows GitLab's pagination: a project past the first 100
    the caller is a member of still counts."""
    a, b = two
    token = a.user("alice")
    a.project("alice/first", "alice")
    push_files(a, token, "alice/first",
               {".gitlab-ci.yml": "j:\n  script: ['sleep 0.3', 'echo hi']\n"}, tmp_path,
               ci=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        pls = a.api("GET", "/projects/alice%2Ffirst/pipelines", token).json()
        if pls and pls[0]["status"] in FINISHED:
            break
        time.sleep(0.2)
    assert pls and pls[0]["status"] == "success", pls
    for i in range(100):
        r = a.api("POST", "/projects", token, json={"name": f"p{i:03d}"})
        assert r.status_code == 201, r.text
    # GitLab lists newest first: the project with the job is on page 2
    page1 = a.api("GET", "/projects", token,
                  params={"membership": "true", "per_page": 100}).json()
    assert len(page1) == 100 and "alice/first" not in [p["path_with_namespace"] for p in page1]
    jobs = a.api("GET", "/projects/alice%2Ffirst/jobs", token).json()
    seconds = sum(j["duration"] for j in jobs)
    assert seconds >= 0.3
    u = v1(b, token, "GET", "/namespaces/alice/usage")
    assert u.status_code == 200, u.text
    assert abs(u.json()["pipeline_seconds"] - seconds) < 0.01, (u.json(), seconds)
    assert u.json()["storage_bytes"]["git"] > 0 and u.json()["partial"] is False
    assert u.json()["transfer_bytes"] == 0


def test_gitlab_webhooks_move_runs_without_polling(two, tmp_path):
    """At a maintainer's first launch the service registers a project hook on GitLab for
    pipeline and job events; A delivers them as GitLab does, so the run's status and job
    reach B with no client asking (no polling), and a delivery with a wrong token is
    refused."""
    import sqlite3
    a, b = two
    token = setup_projects(a, tmp_path)
    publish(b, token)
    e = launch(b, token, "wh1")
    hooks = a.api("GET", "/projects/alice%2Fcats/hooks", token).json()
    assert len(hooks) == 1, hooks
    h = hooks[0]
    assert h["url"] == b.url + "/api/v1/gitlab/webhook" and "token" not in h
    assert h["pipeline_events"] and h["job_events"] and not h["push_events"]

    def row():
        db = sqlite3.connect(b.dir / "hub.db")
        try:
            return db.execute("SELECT status, job_id, refreshed_at FROM mg_launches WHERE"
                              " name='wh1'").fetchone()
        finally:
            db.close()
    deadline = time.time() + 90
    while time.time() < deadline and row()[0] not in FINISHED:
        time.sleep(0.2)
    status, job_id, _ = row()
    assert status == "success", (row(), b.log_path.read_text()[-2000:])
    jobs = a.api("GET", f"/projects/alice%2Fcats/pipelines/{e['pipeline_id']}/jobs",
                 token).json()
    assert job_id == jobs[0]["id"]

    # a second launch registers nothing more
    launch(b, token, "wh2")
    assert len(a.api("GET", "/projects/alice%2Fcats/hooks", token).json()) == 1

    # deliveries that are not GitLab's: a wrong token, none, a body that is no event
    pid = a.api("GET", "/projects/alice%2Fcats", token).json()["id"]
    forged = {"object_kind": "pipeline", "project": {"id": pid},
              "object_attributes": {"id": e["pipeline_id"], "status": "failed"}}
    url = b.url + "/api/v1/gitlab/webhook"
    for headers in ({"X-Gitlab-Token": "f" * 64}, {}):
        r = requests.post(url, json=forged, headers={"X-Gitlab-Event": "Pipeline Hook",
                                                     **headers}, timeout=30)
        assert r.status_code == 401, r.text
    r = requests.post(url, data=b"not json", headers={"X-Gitlab-Token": "x"}, timeout=30)
    assert r.status_code == 400
    assert row()[0] == "success"
    # GitLab's API keeps hooks to maintainers
    bob = a.user("bob")
    a.member("alice/cats", "bob", "developer")
    assert a.api("GET", "/projects/alice%2Fcats/hooks", bob).status_code == 403
    assert a.api("POST", "/projects/alice%2Fcats/hooks", bob,
                 json={"url": "http://127.0.0.1:9/x"}).status_code == 403


def test_hub_delivers_pipeline_and_job_hooks_as_gitlab(hub, tmp_path):
    """reef-hub's project hooks (GitLab's lib/api/project_hooks.rb) deliver Pipeline Hook
    and Job Hook events in GitLab's shapes (doc/user/project/integrations/
    webhook_events.md) with the hook's token, to a receiver on loopback."""
    import http.server
    import threading
    got = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers["X-Gitlab-Event"], self.headers.get("X-Gitlab-Token"),
                        json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        a = hub
        token = a.user("alice")
        a.project("alice/hooked", "alice")
        url = f"http://127.0.0.1:{srv.server_port}/hook"
        r = a.api("POST", "/projects/alice%2Fhooked/hooks", token,
                  json={"url": url, "token": "s3cret-hook", "pipeline_events": True,
                        "job_events": True})
        assert r.status_code == 201, r.text
        assert r.json()["url"] == url and "token" not in r.json()
        assert r.json()["push_events"] is True  # GitLab's default
        # not an http(s) URL: refused as GitLab does
        assert a.api("POST", "/projects/alice%2Fhooked/hooks", token,
                     json={"url": "file:///etc/passwd"}).status_code == 422
        push_files(a, token, "alice/hooked",
                   {".gitlab-ci.yml": "build:\n  script: ['echo built']\n"}, tmp_path,
                   ci=True)
        deadline = time.time() + 60
        while time.time() < deadline and not any(
                e == "Pipeline Hook" and p["object_attributes"]["status"] in FINISHED
                for e, _, p in got):
            time.sleep(0.1)
        pls = a.api("GET", "/projects/alice%2Fhooked/pipelines", token).json()
        job = a.api("GET", f"/projects/alice%2Fhooked/pipelines/{pls[0]['id']}/jobs",
                    token).json()[0]
        assert all(t == "s3cret-hook" for _, t, _ in got)
        pipes = [p for e, _, p in got if e == "Pipeline Hook"]
        jobs = [p for e, _, p in got if e == "Job Hook"]
        assert pipes and jobs, got
        last = pipes[-1]
        assert last["object_kind"] == "pipeline"
        assert last["object_attributes"]["id"] == pls[0]["id"]
        assert last["object_attributes"]["status"] == "success"
        assert last["object_attributes"]["ref"] == "main"
        assert last["project"]["path_with_namespace"] == "alice/hooked"
        assert last["user"]["username"] == "alice"
        assert last["commit"]["id"] == pls[0]["sha"]
        assert [b["id"] for b in last["builds"]] == [job["id"]]
        assert last["builds"][0]["status"] == "success"
        # one Job Hook per status the job went through, in order, ending in success
        assert all(j["object_kind"] == "build" and j["build_id"] == job["id"] and
                   j["pipeline_id"] == pls[0]["id"] and j["build_name"] == "build"
                   for j in jobs)
        seen = [j["build_status"] for j in jobs]
        assert seen[-1] == "success" and "running" in seen, seen
        assert len(seen) == len(set(seen)), seen
        # the list shows the hook, never its token; delete removes it
        hooks = a.api("GET", "/projects/alice%2Fhooked/hooks", token).json()
        assert [h["url"] for h in hooks] == [url] and "token" not in hooks[0]
        assert a.api("DELETE", f"/projects/alice%2Fhooked/hooks/{hooks[0]['id']}",
                     token).status_code == 204
        assert a.api("GET", "/projects/alice%2Fhooked/hooks", token).json() == []
    finally:
        srv.shutdown()


def test_hooks_to_the_local_network_refused_by_default(tmp_path):
    """Without --allow-local-webhooks, a hook naming a loopback or private address, or a
    name that resolves to one, is refused as GitLab's UrlBlocker does (422)."""
    from conftest import Hub

    a = Hub(tmp_path).start()
    try:
        token = a.user("alice")
        a.project("alice/hooked", "alice")
        for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://10.1.2.3/x",
                    "http://[::1]:9/x", "http://user@192.168.1.1/x", "http://[::ffff:127.0.0.1]/x",
                    "http://169.254.169.254/latest/meta-data"):
            r = a.api("POST", "/projects/alice%2Fhooked/hooks", token, json={"url": url})
            assert r.status_code == 422, (url, r.text)
            assert "local network" in r.json()["message"]["url"][0], r.text
        assert a.api("GET", "/projects/alice%2Fhooked/hooks", token).json() == []
    finally:
        assert a.stop() == 0


def test_epf_waits_for_the_pipeline_id(hub, tmp_path):
    """GitLab's answer to the launch's POST /pipeline is slow: the job already runs and
    reef-epf reports before the service knows the run's pipeline. The service answers 503
    (Retry-After) instead of refusing the job, and reef-epf's retry gets through."""
    a = hub
    token = setup_projects(a, tmp_path)
    with b_behind_proxy(a, tmp_path) as (b, proxy):
        publish(b, token)
        proxy.delay = (r"^POST /api/v4/projects/\d+/pipeline$", 2.5)
        launch(b, token, "slow")
        st = wait_experiment(b, token, "slow")
        e = v1(b, token, "GET", f"{EXPS}/slow").json()
        assert st == "success", e
        log = b.log_path.read_text()
        assert re.search(rf"/api/v1/epf/experiments/{e['id']}/start 503", log), log[-3000:]
        assert e["epf"]["started_at"] and e["epf"]["reported_status"] == "success"
        assert [x["epoch"] for x in e["metrics"]] == [1]
