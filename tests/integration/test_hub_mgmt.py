"""reef-hub's management API (/api/v1): publishing a processor from a code project,
experiments that really train a small scikit-learn model and report per-epoch metrics
through reef-epf, failing runs, data pipelines, EPF secrets, usage visibility and four
experiments at once."""

import json
import re
import random
import time
from pathlib import Path

import requests

from conftest import git
from test_hub_ci import push_files

TRAIN_PY = (Path(__file__).parent / "data" / "sgd_train.py").read_text()

MANIFEST = {
    "slug": "sgd-train", "name": "SGD classifier", "type": "ALGORITHM",
    "description": "Logistic regression trained with SGD on a CSV",
    "command": "python3 train.py", "input_data_type": "TABULAR", "output_data_type": "MODEL",
    "parameters": [
        {"name": "epochs", "type": "INTEGER", "required": False, "default": 5,
         "description": "passes over the data"},
        {"name": "learning-rate", "type": "FLOAT", "required": False, "default": 0.01,
         "description": "eta0"},
        {"name": "fail", "type": "BOOLEAN", "required": False, "default": False,
         "description": "exit with an error before training"},
    ],
    "metrics": ["loss", "accuracy"],
}

OPERATION = {
    "slug": "row-count", "name": "Row counter", "type": "OPERATION",
    "command": "sh count.sh", "parameters": [], "metrics": [],
}


def csv_data(n=200, seed=1):
    rnd = random.Random(seed)
    lines = ["x1,x2,label"]
    for _ in range(n):
        a, b = rnd.gauss(0, 1), rnd.gauss(0, 1)
        lines.append(f"{a:.4f},{b:.4f},{int(a + b > 0)}")
    return "\n".join(lines) + "\n"


class V1:
    def __init__(self, hub, token):
        self.hub, self.token = hub, token

    def __call__(self, method, route, **kw):
        headers = kw.pop("headers", {})
        if self.token:
            headers["PRIVATE-TOKEN"] = self.token
        return requests.request(method, self.hub.url + "/api/v1" + route, headers=headers,
                                timeout=30, **kw)


def wait_launch(api, path, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = api("GET", path)
        assert r.status_code == 200, r.text
        if r.json()["status"] in ("success", "failed", "canceled", "skipped"):
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"{path} still {r.json()['status']}")


def setup_projects(hub, tmp_path):
    token = hub.user("alice")
    hub.project("alice/sgd", "alice")        # code project
    hub.project("alice/cats", "alice")       # data project
    push_files(hub, token, "alice/sgd", {"train.py": TRAIN_PY,
                                         "processor.json": json.dumps(MANIFEST),
                                         "count.sh": "wc -l < \"$2\"/train.csv > \"$4\"/rows.txt\n"}, tmp_path)
    push_files(hub, token, "alice/cats", {"data/train.csv": csv_data(), "README.md": "cats\n"},
               tmp_path)
    return token, V1(hub, token)


def test_publish_and_search(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    r = api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"})
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["slug"] == "sgd-train" and p["type"] == "ALGORITHM"
    assert [x["name"] for x in p["parameters"]] == ["epochs", "learning-rate", "fail"]
    assert len(p["sha"]) == 40 and p["code_project_path"] == "alice/sgd"
    assert api("GET", "/processors/sgd-train").json()["name"] == "SGD classifier"
    assert [x["slug"] for x in api("GET", "/processors?type=ALGORITHM").json()] == ["sgd-train"]
    assert api("GET", "/processors?type=OPERATION").json() == []
    assert [x["slug"] for x in api("GET", "/processors?q=logistic").json()] == ["sgd-train"]
    assert api("GET", "/processors?q=nothing-like-it").json() == []
    assert api("GET", "/processors?type=BOGUS").status_code == 400
    # another user cannot see a processor of a private code project, nor publish from it
    bob = V1(hub, hub.user("bob"))
    assert bob("GET", "/processors/sgd-train").status_code == 404
    assert bob("GET", "/processors").json() == []
    assert bob("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"}).status_code == 404
    # a broken manifest is refused with its reason
    push_files(hub, token, "alice/sgd", {"bad.json": json.dumps({**MANIFEST, "type": "NOPE"})},
               tmp_path, message="bad")
    r = api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main", "path": "bad.json"})
    assert r.status_code == 400 and "type" in r.json()["message"]
    assert api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "nope"}).status_code == 404


def test_experiment_trains_and_reports(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    assert api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"}).status_code == 201
    # parameters are type-checked on launch
    for bad in ({"epochs": "many"}, {"learning-rate": "fast"}, {"nope": 1}, {"fail": "maybe"}):
        r = api("POST", "/projects/alice%2Fcats/experiments",
                json={"name": "bad", "processor": "sgd-train", "params": bad})
        assert r.status_code == 400, (bad, r.text)
    r = api("POST", "/projects/alice%2Fcats/experiments",
            json={"name": "unknown", "processor": "no-such-processor"})
    assert r.status_code == 404
    r = api("POST", "/projects/alice%2Fcats/experiments",
            json={"name": "exp1", "processor": "sgd-train", "source_branch": "main",
                  "input_path": "data", "params": {"epochs": 4, "learning-rate": "0.05"}})
    assert r.status_code == 201, r.text
    e = r.json()
    assert e["branch"] == "experiment/exp1" and e["status"] in ("pending", "running")
    assert e["params"] == {"epochs": "4", "learning-rate": "0.05", "fail": "false"}
    e = wait_launch(api, "/projects/alice%2Fcats/experiments/exp1")
    job_trace = requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/jobs/{e['job_id']}/trace",
                             headers={"PRIVATE-TOKEN": token}).text
    assert e["status"] == "success", job_trace
    assert [m["epoch"] for m in e["metrics"]] == [1, 2, 3, 4]
    assert all(0 <= m["accuracy"] <= 1 and m["loss"] > 0 for m in e["metrics"])
    assert e["metrics"][-1]["accuracy"] > 0.8
    assert e["epf"]["started_at"] and e["epf"]["reported_status"] == "success"
    # the outputs were committed back to the experiment branch, and uploaded
    work = tmp_path / "check"
    git("clone", "-q", "-b", "experiment/exp1", hub.git_url("alice/cats", token=token), str(work))
    model = json.loads((work / "output" / "model.json").read_text())
    assert len(model["coef"][0]) == 2
    assert (work / ".mlreef.yml").exists()
    log = git("log", "--format=%s", cwd=work).stdout
    assert "[skip ci] Outputs of experiment exp1" in log
    assert "[skip ci] Launch experiment exp1" in log
    art = requests.get(
        f"{hub.url}/api/v4/projects/alice%2Fcats/jobs/{e['job_id']}/artifacts/output/model.json",
        headers={"PRIVATE-TOKEN": token})
    assert art.status_code == 200 and json.loads(art.content) == model
    # no secret landed in the repository (secrets are 64 hex characters)
    assert not re.search(r"[0-9a-f]{64}", (work / ".mlreef.yml").read_text())
    # a name is taken once
    r = api("POST", "/projects/alice%2Fcats/experiments",
            json={"name": "exp1", "processor": "sgd-train"})
    assert r.status_code == 409
    assert [x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()] == ["exp1"]
    # EPF callbacks need the experiment's secret, and end with the run
    r = requests.post(f"{hub.url}/api/v1/epf/experiments/{e['id']}/update",
                      headers={"EPF-BOT-TOKEN": "0" * 64}, json={"epoch": 9, "loss": 1.0})
    assert r.status_code == 401


def test_failing_processor_ends_failed(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"})
    r = api("POST", "/projects/alice%2Fcats/experiments",
            json={"name": "boom", "processor": "sgd-train", "input_path": "data",
                  "params": {"fail": True}})
    assert r.status_code == 201, r.text
    e = wait_launch(api, "/projects/alice%2Fcats/experiments/boom")
    assert e["status"] == "failed"
    assert e["epf"]["reported_status"] == "failed"
    assert e["metrics"] == []


def test_data_pipeline_branch(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    push_files(hub, token, "alice/sgd", {"op.json": json.dumps(OPERATION)}, tmp_path,
               message="op")
    assert api("POST", "/code-projects/alice%2Fsgd/publish",
               json={"ref": "main", "path": "op.json"}).status_code == 201
    assert api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"}).status_code == 201
    # an ALGORITHM cannot run as a data pipeline
    r = api("POST", "/projects/alice%2Fcats/data-pipelines", json={"processor": "sgd-train"})
    assert r.status_code == 400
    r = api("POST", "/projects/alice%2Fcats/data-pipelines",
            json={"processor": "row-count", "input_path": "data"})
    assert r.status_code == 201, r.text
    assert r.json()["branch"] == "data-pipeline/row-count-1"
    r2 = api("POST", "/projects/alice%2Fcats/data-pipelines",
             json={"processor": "row-count", "input_path": "data"})
    assert r2.json()["branch"] == "data-pipeline/row-count-2"
    for name in ("row-count-1", "row-count-2"):
        d = wait_launch(api, f"/projects/alice%2Fcats/data-pipelines/{name}")
        assert d["status"] == "success", d
    raw = requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/repository/files/"
                       "output%2Frows.txt/raw?ref=data-pipeline%2Frow-count-1",
                       headers={"PRIVATE-TOKEN": token})
    assert raw.status_code == 200 and raw.text.strip() == "201"


def test_usage_visible_to_members_only(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    bob = V1(hub, hub.user("bob"))
    mine = api("GET", "/usage").json()
    paths = [u["namespace"]["full_path"] for u in mine]
    assert "alice" in paths and "bob" not in paths
    alice = api("GET", "/namespaces/alice/usage").json()
    assert alice["storage_bytes"]["git"] > 0
    assert bob("GET", "/namespaces/alice/usage").status_code == 404
    assert "alice" not in [u["namespace"]["full_path"] for u in bob("GET", "/usage").json()]
    assert V1(hub, None)("GET", "/usage").status_code == 401


def test_clone_counts_as_transfer(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    before = api("GET", "/namespaces/alice/usage").json()["transfer_bytes"]
    git("clone", "-q", hub.git_url("alice/cats", token=token), str(tmp_path / "clone"))
    after = api("GET", "/namespaces/alice/usage").json()["transfer_bytes"]
    # the pack holds at least the compressed CSV; the advertisement alone would not count
    assert after - before > 1000, (before, after)


def test_four_experiments_at_once(hub, tmp_path):
    token, api = setup_projects(hub, tmp_path)
    api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"})
    names = [f"par{i}" for i in range(4)]
    for n in names:
        r = api("POST", "/projects/alice%2Fcats/experiments",
                json={"name": n, "processor": "sgd-train", "input_path": "data",
                      "params": {"epochs": 3}})
        assert r.status_code == 201, r.text
    # all four run concurrently (the default runner has four slots)
    deadline = time.time() + 30
    seen_running = set()
    while time.time() < deadline and len(seen_running) < 4:
        for n in names:
            if api("GET", f"/projects/alice%2Fcats/experiments/{n}").json()["status"] in (
                    "running", "success"):
                seen_running.add(n)
        time.sleep(0.1)
    for n in names:
        e = wait_launch(api, f"/projects/alice%2Fcats/experiments/{n}")
        assert e["status"] == "success", e
        assert [m["epoch"] for m in e["metrics"]] == [1, 2, 3]
