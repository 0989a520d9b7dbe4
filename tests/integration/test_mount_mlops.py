"""Experiments, pipelines and processors through the mount: control files validated and
journaled before write() returns, delivered exactly once (hub down, reefd restarted),
status/metrics/log/outputs/artifacts of a real scikit-learn run, charts, errors."""

import errno
import json
import os
import signal
import subprocess
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import git
from test_hub_ci import push_files
from test_hub_mgmt import MANIFEST, TRAIN_PY, V1, csv_data

FINISHED = ("success", "failed", "canceled", "skipped")

CI_SLOW = """stages: [build]
build:
  stage: build
  script:
    - 'echo "greeting is $GREETING"'
    - 'for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.4; done'
    - mkdir -p out && echo done > out/result.txt
  artifacts:
    paths: [out/]
"""


def make_projects(hub, tmp_path, mount_factory, publish=True):
    token = hub.user("alice")
    hub.project("alice/sgd", "alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/sgd", {"train.py": TRAIN_PY,
                                         "processor.json": json.dumps(MANIFEST)}, tmp_path)
    push_files(hub, token, "alice/cats", {"data/train.csv": csv_data(), "README.md": "cats\n"},
               tmp_path)
    api = V1(hub, token)
    if publish:
        r = api("POST", "/code-projects/alice%2Fsgd/publish", json={"ref": "main"})
        assert r.status_code == 201, r.text
    m = mount_factory(hub, token)
    return token, api, m


def write_ctl(path, data):
    """One open-write-read-close; returns the errno of write() or close() (0 on success)
    and the text read back from the same descriptor (the ticket, or why it was refused):
    the read ends the request, as close would."""
    fd = os.open(path, os.O_RDWR)
    err = 0
    try:
        try:
            os.write(fd, data if isinstance(data, bytes) else data.encode())
        except OSError as e:
            err = e.errno
        back = os.pread(fd, 65536, 0).decode()
    finally:
        try:
            os.close(fd)
        except OSError as e:
            err = err or e.errno
    return err, back


def wait_file(path, until, timeout=90):
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        try:
            v = path.read_text().strip()
        except OSError as e:
            v = f"<{errno.errorcode[e.errno]}>"
        if not seen or seen[-1] != v:
            seen.append(v)
        if v in until:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"{path}: {seen}")


def test_experiment_through_the_mount(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    assert sorted(os.listdir(exps)) == ["launch", "launch.error"]
    err, out = write_ctl(exps / "launch",
                         "# an experiment\nname=exp1\nprocessor=sgd-train\ninput_path=data\n"
                         "epochs=4\nlearning-rate=0.05\n")
    assert err == 0, out
    ticket = json.loads(out)
    assert ticket["kind"] == "experiment" and ticket["target"] == "exp1"
    assert ticket["state"] in ("queued", "delivered")
    seen = wait_file(exps / "exp1/status", FINISHED)
    assert seen[-1] == "success", ((exps / "exp1/log").read_text(), seen)
    assert "running" in seen or "pending" in seen or "queued" in seen or "created" in seen
    assert "exp1" in os.listdir(exps)
    assert sorted(os.listdir(exps / "exp1")) == sorted(
        ["experiment.json", "status", "params.json", "metrics.json", "metrics.jsonl",
         "metrics.svg", "log", "ctl", "ctl.error", "outputs", "artifacts"])
    e = json.loads((exps / "exp1/experiment.json").read_text())
    assert e["branch"] == "experiment/exp1" and e["status"] == "success"
    assert json.loads((exps / "exp1/params.json").read_text()) == {
        "epochs": 4, "learning-rate": 0.05, "fail": False}
    metrics = json.loads((exps / "exp1/metrics.json").read_text())
    assert [x["epoch"] for x in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["accuracy"] > 0.8
    # the chart: valid SVG, one chart per metric, a line through every epoch
    svg = (exps / "exp1/metrics.svg").read_bytes()
    assert os.stat(exps / "exp1/metrics.svg").st_size == len(svg)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    charts = [g for g in root.iter(ns + "g") if g.get("class") == "chart"]
    assert [g.get("id") for g in charts] == ["chart-loss", "chart-accuracy"]
    for g in charts:
        (line,) = g.iter(ns + "polyline")
        assert len(line.get("points").split()) == 4
        texts = "".join(t.text or "" for t in g.iter(ns + "text"))
        assert "epoch" in texts
    # the log, the outputs on the branch (normal revision nodes), the artifacts
    log = (exps / "exp1/log").read_text()
    assert "trained 4 epochs" in log
    assert os.stat(exps / "exp1/log").st_size == len(log.encode())
    assert "model.json" in os.listdir(exps / "exp1/outputs")
    model = json.loads((exps / "exp1/outputs/model.json").read_text())
    assert len(model["coef"][0]) == 2
    commit = os.getxattr(exps / "exp1/outputs/model.json", "user.reef.commit").decode()
    head = requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/repository/branches/"
                        "experiment%2Fexp1", headers={"PRIVATE-TOKEN": token}).json()
    assert commit == head["commit"]["id"]
    assert os.listdir(exps / "exp1/artifacts") == ["output"]
    assert json.loads((exps / "exp1/artifacts/output/model.json").read_text()) == model
    # the processor marketplace and usage
    procs = m / ".reef/processors"
    assert os.listdir(procs) == ["sgd-train"]
    assert json.loads((procs / "sgd-train/processor.json").read_text())["type"] == "ALGORITHM"
    readme = (procs / "sgd-train/README.md").read_text()
    assert "| epochs | INTEGER |" in readme and "learning-rate" in readme
    usage = json.loads((m / ".reef/usage.json").read_text())
    assert any(u["namespace"]["full_path"] == "alice" and u["pipeline_seconds"] > 0
               for u in usage)
    status = json.loads((m / ".reef/status").read_text())
    assert status["queued_control_writes"] == 0
    assert status["control_writes"]["delivered"] == 1
    # a name is taken once
    err, reason = write_ctl(exps / "launch", "name=exp1\nprocessor=sgd-train\n")
    assert err == errno.EEXIST and "already exists" in reason


def test_failing_processor_ends_failed(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    spec = {"name": "boom", "processor": "sgd-train", "input_path": "data",
            "params": {"fail": True}}
    assert write_ctl(exps / "launch", json.dumps(spec))[0] == 0
    seen = wait_file(exps / "boom/status", FINISHED)
    assert seen[-1] == "failed", seen
    assert "failing on purpose" in (exps / "boom/log").read_text()
    assert json.loads((exps / "boom/metrics.json").read_text()) == []
    ET.fromstring((exps / "boom/metrics.svg").read_bytes())  # still a valid (empty) chart


def test_invalid_writes_get_errnos_and_reasons(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    launch = m / "alice/cats/experiments/launch"
    cases = [
        ("hello world\n", errno.EINVAL, "expected key=value"),
        ("processor=no-such-thing\n", errno.ENOENT, "unknown processor no-such-thing"),
        ("processor=sgd-train\nnope=1\n", errno.EINVAL, "unknown parameter nope"),
        ("processor=sgd-train\nepochs=many\n", errno.EINVAL, "epochs must be an integer"),
        ('{"processor": "sgd-train", "params": {"fail": "maybe"}}', errno.EINVAL,
         "fail must be true or false"),
        ('{"processor": "sgd-train", "colour": "red"}', errno.EINVAL, 'unknown field "colour"'),
        ('{"processor": }', errno.EINVAL, "malformed JSON"),
        ("processor=sgd-train\nsource_branch=nope\n", errno.ENOENT, "unknown branch nope"),
        ("name=../x\nprocessor=sgd-train\n", errno.EINVAL, "name"),
        ("name=launch\nprocessor=sgd-train\n", errno.EINVAL, "reserved"),
        (b"processor=sgd-train\n\x00\x01\x02", errno.EINVAL, "binary data"),
        (b"\xff\xfe garbage", errno.EINVAL, "invalid UTF-8"),
        ("x=" + "a" * (70 * 1024), errno.EFBIG, "at most 65536"),
    ]
    for data, want, reason in cases:
        err, back = write_ctl(launch, data)
        assert err == want, (data[:60], err, back)
        assert reason in back, (reason, back)
        # the sibling .error file says the same
        assert reason in (m / "alice/cats/experiments/launch.error").read_text()
    # the shell way: the error reaches the writer
    r = subprocess.run(["bash", "-c", f"echo 'processor=nope' > {launch}"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "No such file" in r.stderr
    # nothing was launched, nothing queued
    assert api("GET", "/projects/alice%2Fcats/experiments").json() == []
    assert json.loads((m / ".reef/status").read_text())["queued_control_writes"] == 0
    # a good request clears the error; a second request on the same descriptor is refused
    fd = os.open(launch, os.O_WRONLY)
    try:
        os.write(fd, b"name=ok1\nprocessor=sgd-train\n")
        os.write(fd, b"input_path=data\n")  # one request, however many writes carry it
    finally:
        os.close(fd)
    fd = os.open(launch, os.O_RDWR)
    try:
        os.write(fd, b"name=ok2\nprocessor=sgd-train\ninput_path=data\n")
        assert json.loads(os.pread(fd, 65536, 0))["target"] == "ok2"  # the read sent it
        with pytest.raises(OSError) as ei:
            os.write(fd, b"name=ok2b\nprocessor=sgd-train\n")
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    # a JSON object split across writes is sent at close
    fd = os.open(launch, os.O_WRONLY)
    try:
        os.write(fd, b'{"name": "ok3", "processor": ')
        os.write(fd, b'"sgd-train", "input_path": "data"}')
    finally:
        os.close(fd)
    # unfinished JSON is refused at close
    fd = os.open(launch, os.O_WRONLY)
    os.write(fd, b'{"name": "ok4", ')
    with pytest.raises(OSError) as ei:
        os.close(fd)
    assert ei.value.errno == errno.EINVAL
    assert "unfinished JSON" in (m / "alice/cats/experiments/launch.error").read_text()
    for name in ("ok1", "ok2", "ok3"):
        wait_file(m / f"alice/cats/experiments/{name}/status", FINISHED)
    assert sorted(x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()) \
        == ["ok1", "ok2", "ok3"]
    # ctl files: unknown commands and unknown experiments
    err, back = write_ctl(m / "alice/cats/experiments/ok1/ctl", "explode\n")
    assert err == errno.EINVAL and "cancel or retry" in back
    assert not os.path.exists(m / "alice/cats/experiments/nope")
    # read-only files stay read-only
    with pytest.raises(PermissionError):
        open(m / "alice/cats/experiments/ok1/status", "w")


def delivered_once(api, name):
    names = [x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()]
    assert names.count(name) == 1, names


def test_hub_down_queues_then_delivers_once(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    assert os.listdir(exps) == ["launch", "launch.error"]  # the project is cached now
    port = hub.port
    assert hub.stop() == 0
    err, out = write_ctl(exps / "launch", "name=offline1\nprocessor=sgd-train\ninput_path=data\n"
                                          "epochs=2\n")
    assert err == 0, out
    assert json.loads(out)["state"] == "queued"
    assert (exps / "offline1/status").read_text() == "queued\n"
    assert "offline1" in os.listdir(exps)
    local = json.loads((exps / "offline1/experiment.json").read_text())
    assert local["status"] == "queued" and local["request"]["processor"] == "sgd-train"
    st = json.loads((m / ".reef/status").read_text())
    assert st["queued_control_writes"] == 1
    time.sleep(1.5)  # a few delivery attempts fail meanwhile
    hub.start(port)
    # "queued" was read above; the journal may deliver during hub.start(), so the first
    # state seen from here on can already be the server's
    seen = wait_file(exps / "offline1/status", FINISHED)
    assert seen[-1] == "success", seen
    delivered_once(api, "offline1")
    pipes = requests.get(f"{hub.url}/api/v4/projects/alice%2Fcats/pipelines?ref=experiment/offline1",
                         headers={"PRIVATE-TOKEN": token}).json()
    assert len(pipes) == 1
    assert json.loads((m / ".reef/status").read_text())["queued_control_writes"] == 0


def test_reefd_restart_delivers_queued_once(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    assert os.listdir(m / "alice/cats/experiments") == ["launch", "launch.error"]
    port = hub.port
    assert hub.stop() == 0
    assert write_ctl(m / "alice/cats/experiments/launch",
                     '{"name": "restart1", "processor": "sgd-train", "input_path": "data",'
                     ' "params": {"epochs": 2}}')[0] == 0
    assert m.stop() == 0
    hub.start(port)
    time.sleep(0.5)
    assert api("GET", "/projects/alice%2Fcats/experiments").json() == []  # nothing sent yet
    m.start()
    seen = wait_file(m / "alice/cats/experiments/restart1/status", FINISHED)
    assert seen[-1] == "success", seen
    delivered_once(api, "restart1")


def test_idempotency_key_makes_a_retry_harmless(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    body = {"name": "idem1", "processor": "sgd-train", "input_path": "data",
            "params": {"epochs": 1}}
    h = {"Idempotency-Key": "k-0123456789"}
    r1 = api("POST", "/projects/alice%2Fcats/experiments", json=body, headers=dict(h))
    r2 = api("POST", "/projects/alice%2Fcats/experiments", json=body, headers=dict(h))
    assert r1.status_code == r2.status_code == 201
    assert r1.json()["id"] == r2.json()["id"]
    assert r2.headers.get("Idempotent-Replayed") == "true"
    delivered_once(api, "idem1")
    # the same key for another request is refused
    r3 = api("POST", "/projects/alice%2Fcats/experiments/idem1/cancel", headers=dict(h))
    assert r3.status_code == 422
    # without a key a repeat is a new request (409: the name is taken)
    assert api("POST", "/projects/alice%2Fcats/experiments", json=body).status_code == 409


def test_four_experiments_at_once(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    results = {}

    def launch(i):
        results[i] = write_ctl(exps / "launch",
                               f"name=par{i}\nprocessor=sgd-train\ninput_path=data\n"
                               f"epochs={i + 2}\n")

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r[0] == 0 for r in results.values()), results
    for i in range(4):
        assert wait_file(exps / f"par{i}/status", FINISHED, timeout=150)[-1] == "success"
        metrics = json.loads((exps / f"par{i}/metrics.json").read_text())
        assert len(metrics) == i + 2
    assert sorted(x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()) \
        == [f"par{i}" for i in range(4)]


def test_pipelines_launch_jobs_and_growing_log(hub, tmp_path, mount_factory):
    token = hub.user("alice")
    hub.project("alice/ci", "alice")
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": CI_SLOW}, tmp_path,
               message="[skip ci] add CI")
    m = mount_factory(hub, token)
    pipes = m / "alice/ci/pipelines"
    assert sorted(os.listdir(pipes)) == ["launch", "launch.error"]  # [skip ci]: none ran
    err, back = write_ctl(pipes / "launch", "ref=nope\n")
    assert err == errno.ENOENT and "unknown ref nope" in back
    err, back = write_ctl(pipes / "launch", '{"ref": "main", "variables": {"bad key": "x"}}')
    assert err == errno.EINVAL and "variable name" in back
    fd = os.open(pipes / "launch", os.O_RDWR)
    try:
        os.write(fd, b"ref=main\nGREETING=hello from the mount\n")
        deadline = time.time() + 10
        while True:
            ticket = json.loads(os.pread(fd, 65536, 0))
            if ticket["state"] != "queued" or time.time() > deadline:
                break
            time.sleep(0.05)
    finally:
        os.close(fd)
    assert ticket["state"] == "delivered", ticket
    pid = ticket["result"]["id"]
    p = pipes / str(pid)
    assert str(pid) in os.listdir(pipes)
    assert json.loads((p / "pipeline.json").read_text())["ref"] == "main"
    job = p / "jobs/build"
    wait_file(job / "status", ("running",) + FINISHED, timeout=30)
    # the log grows while the job runs: sizes seen by stat go up, reads past the end get
    # what arrived since (tail -f)
    tail = subprocess.Popen(["tail", "-f", "-s", "0.2", str(job / "log")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sizes = []
    with open(job / "log", "rb") as f:
        got = b""
        deadline = time.time() + 30
        while time.time() < deadline:
            sizes.append(os.stat(job / "log").st_size)
            got += f.read()
            if b"line 6" in got:
                break
            time.sleep(0.2)
    assert b"greeting is hello from the mount" in got
    assert len(set(s for s in sizes if s > 0)) >= 3, sizes
    assert sizes == sorted(sizes)
    time.sleep(0.6)
    tail.send_signal(signal.SIGTERM)
    out = tail.communicate(timeout=5)[0]
    assert "line 6" in out, out
    assert wait_file(job / "status", FINISHED)[-1] == "success"
    assert wait_file(p / "status", FINISHED)[-1] == "success"
    assert json.loads((job / "job.json").read_text())["name"] == "build"
    assert (job / "artifacts/out/result.txt").read_text() == "done\n"
    # cancel through ctl on a finished pipeline is accepted by the server (no-op)
    assert write_ctl(p / "ctl", "retry\n")[0] == 0


def test_push_runs_pipelines_unless_skip_ci(hub, tmp_path):
    """git.c's receive-pack hook: pushes run the project's CI, [skip ci] does not; the
    project's ci_config_path shows and is settable."""
    token = hub.user("alice")
    hub.project("alice/pushci", "alice")
    hdr = {"PRIVATE-TOKEN": token}
    simple = "job:\n  script:\n    - echo hi\n"
    push_files(hub, token, "alice/pushci", {".gitlab-ci.yml": simple}, tmp_path,
               message="[skip ci] first")
    url = f"{hub.url}/api/v4/projects/alice%2Fpushci"
    assert requests.get(url + "/pipelines", headers=hdr).json() == []
    sha = push_files(hub, token, "alice/pushci", {"a.txt": "a\n"}, tmp_path, message="second",
                     ci=True)
    pl = requests.get(url + "/pipelines", headers=hdr).json()
    assert len(pl) == 1 and pl[0]["sha"] == sha and pl[0]["source"] == "push"
    # ci_config_path: shown, settable by maintainers, refused when unsafe
    assert requests.get(url, headers=hdr).json()["ci_config_path"] is None
    r = requests.put(url, headers=hdr, json={"ci_config_path": ".mlreef.yml"})
    assert r.status_code == 200 and r.json()["ci_config_path"] == ".mlreef.yml"
    assert requests.put(url, headers=hdr, json={"ci_config_path": "../x"}).status_code == 400
    assert requests.put(url, headers=hdr, json={"name": "x"}).status_code == 400
    push_files(hub, token, "alice/pushci", {".mlreef.yml": simple}, tmp_path, message="third",
               ci=True)
    assert len(requests.get(url + "/pipelines", headers=hdr).json()) == 2
    bob = hub.user("bob")
    assert requests.put(url, headers={"PRIVATE-TOKEN": bob},
                        json={"ci_config_path": "x.yml"}).status_code == 404
