"""The management API seen from reefd beside servers that are not reef-hub alone: a server
that ignores Idempotency-Key and loses the answer of a launch it acted on (the launch's
request id finds the run, no second one starts), a server without /api/v1 (the launch
directories say so in a README), and -o mgmt=URL sending /api/v1 to the service."""

import errno
import json
import os

import requests

from gitlab_proxy import GitLabProxy
from test_mount_mlops import FINISHED, make_projects, wait_file, write_ctl


def pipelines_of(hub, token, ref):
    return requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/pipelines",
                        params={"ref": ref}, headers={"PRIVATE-TOKEN": token}).json()


def test_service_finds_a_repeated_request_id(hub, tmp_path, mount_factory):
    """Without Idempotency-Key, the same request id twice is the same run."""
    token, api, _ = make_projects(hub, tmp_path, lambda *a: None)
    proxy = GitLabProxy(hub.port)
    proxy.no_idempotency = True
    try:
        body = {"name": "rid1", "processor": "sgd-train", "input_path": "data",
                "params": {"epochs": 1}, "request_id": "0123456789abcdef0123456789abcdef"}
        url = f"{proxy.url}/api/v1/projects/alice%2Fcats/experiments"
        h = {"PRIVATE-TOKEN": token, "Idempotency-Key": "k-stripped-by-the-proxy"}
        r1 = requests.post(url, json=body, headers=h)
        r2 = requests.post(url, json=body, headers=h)
        assert r1.status_code == r2.status_code == 201, (r1.text, r2.text)
        assert r1.json()["id"] == r2.json()["id"]
        assert r1.json()["request_id"] == body["request_id"]
        assert "Reef-Request-Replayed" not in r1.headers
        assert r2.headers.get("Reef-Request-Replayed") == "true"
        assert "Idempotent-Replayed" not in r2.headers  # the key never reached the hub
        # another request id with the same name is a conflict, not the same run
        r3 = requests.post(url, json={**body, "request_id": "f" * 32}, headers=h)
        assert r3.status_code == 409
        assert requests.post(url, json={**body, "request_id": "bad id!"},
                             headers=h).status_code == 400
        assert len(pipelines_of(hub, token, "experiment/rid1")) == 1
        # the request id travels as a pipeline variable
        pid = r1.json()["pipeline_id"]
        v = requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/pipelines/{pid}/variables",
                         headers={"PRIVATE-TOKEN": token})
        assert v.status_code == 200, v.text
        assert [x["value"] for x in v.json() if x["key"] == "REEF_REQUEST_ID"] == \
            [body["request_id"]]
    finally:
        proxy.close()


def test_lost_launch_answer_starts_one_run(hub, tmp_path, mount_factory):
    """reefd behind a server that ignores Idempotency-Key and drops the answer of the
    launch it acted on: the resend finds the run by its request id."""
    token, api, _ = make_projects(hub, tmp_path, lambda *a: None)
    proxy = GitLabProxy(hub.port)
    proxy.no_idempotency = True

    class Via:
        url = proxy.url

    try:
        m = mount_factory(Via, token)
        exps = m / "alice/cats/experiments"
        assert os.listdir(exps) == ["launch", "launch.error"]
        proxy.reset()
        # libcurl resends a request whose reused connection died without an answer:
        # that resend's answer is lost too, so reefd's own retry has to find the run
        proxy.drop = (r"^POST /api/v1/projects/\d+/experiments$", 2)
        err, out = write_ctl(exps / "launch", "name=lost1\nprocessor=sgd-train\n"
                                              "input_path=data\nepochs=1\n")
        assert err == 0, out
        key = json.loads(out)["key"]
        seen = wait_file(exps / "lost1/status", FINISHED)
        assert seen[-1] == "success", seen
        posts = proxy.count(r"^POST /api/v1/projects/\d+/experiments$")
        # the answers dropped were for sends that did launch (libcurl's own resend over a
        # reused connection is one of them when it happens)
        assert 1 <= posts <= 3 and proxy.drop[1] == max(0, 2 - posts)
        runs = [x for x in api("GET", "/projects/alice%2Fcats/experiments").json()
                if x["name"] == "lost1"]
        assert len(runs) == 1 and runs[0]["request_id"] == key
        assert len(pipelines_of(hub, token, "experiment/lost1")) == 1
        st = json.loads((m / ".reef/status").read_text())
        assert st["control_writes"] == {"queued": 0, "failed": 0, "delivered": 1}
        # the delivery ended with the lookup (or, when an answer got through after two
        # lost ones, with the service's own replay of the request id): not a second run
        assert proxy.count(r"^GET /api/v1/projects/\d+/experiments/lost1$") >= 1
        assert posts == 3 or "was started by it already; not sent again" in \
            m.log_path.read_text()
    finally:
        proxy.close()


def test_no_management_api_then_mgmt_option(hub, tmp_path, mount_factory):
    token, api, _ = make_projects(hub, tmp_path, lambda *a: None)
    proxy = GitLabProxy(hub.port)
    proxy.no_v1 = True  # a GitLab: no /api/v1

    class Via:
        url = proxy.url

    try:
        m = mount_factory(Via, token, name="plain")
        for d in ("experiments", "data-pipelines", "visualizations"):
            assert sorted(os.listdir(m / "alice/cats" / d)) == ["README", "launch",
                                                               "launch.error"]
        readme = (m / "alice/cats/experiments/README").read_text()
        assert "No management API at " + proxy.url in readme and "mgmt=URL" in readme
        err, back = write_ctl(m / "alice/cats/experiments/launch", "processor=sgd-train\n")
        assert err == errno.ENOENT and "no management API" in back
        assert os.listdir(m / ".reef/processors") == []
        assert os.listdir(m / "alice/cats/pipelines")[:2] == ["launch", "launch.error"]
        # the same server with the service named: /api/v1 goes there, the rest stays
        m2 = mount_factory(Via, token, extra_opts=f"mgmt={hub.url}", name="withmgmt")
        exps = m2 / "alice/cats/experiments"
        assert sorted(os.listdir(exps)) == ["launch", "launch.error"]
        assert not os.path.exists(exps / "README")
        assert os.listdir(m2 / ".reef/processors") == ["sgd-train"]
        proxy.reset()
        err, out = write_ctl(exps / "launch", "name=via1\nprocessor=sgd-train\n"
                                              "input_path=data\nepochs=1\n")
        assert err == 0, out
        seen = wait_file(exps / "via1/status", FINISHED)
        assert seen[-1] == "success", seen
        assert "model.json" in os.listdir(exps / "via1/outputs")  # branch read via server
        assert proxy.count(r"/api/v1/") == 0  # every management call went to mgmt=
        assert proxy.count(r"/api/v4/projects/\d+/repository/branches/") >= 1
    finally:
        proxy.close()


def test_mgmt_option_is_checked(tmp_path):
    import subprocess
    from conftest import REEFD_BIN
    r = subprocess.run([str(REEFD_BIN), "-f", "-o", "server=http://127.0.0.1:1,mgmt=ftp://x",
                        str(tmp_path)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "mgmt must be an http:// or https:// URL" in r.stderr
    h = subprocess.run([str(REEFD_BIN), "--help"], capture_output=True, text=True, timeout=10)
    assert "-o mgmt=URL" in h.stdout
