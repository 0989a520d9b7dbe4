"""Watching a run through the mount (issue 11, item 9): metrics.jsonl grows one line per
epoch and only at its end (tail -f follows it), params.json is typed as the processor
declares, unknown processors and parameters get a did-you-mean and the valid names (in
launch.error and from `reef launch`), reef says an errno once, and web_url is a URL the
hub serves."""

import json
import os
import re
import subprocess
import time

import requests

from test_hub_ci import push_files
from test_hub_mgmt import MANIFEST, TRAIN_PY, V1, csv_data
from test_mount_mlops import FINISHED, wait_file, write_ctl
from test_reef_cli import cli_env, reef  # noqa: F401 (cli_env is a fixture)

# the test processor, slowed down so that a reader sees the epochs arrive one by one
SLOW_PY = TRAIN_PY.replace("for epoch in range(1, a.epochs + 1):\n",
                           "import time\nfor epoch in range(1, a.epochs + 1):\n"
                           "    time.sleep(1.2)\n")
SLOW = dict(MANIFEST, slug="slow-train", name="slow SGD")


def make_runs(hub, tmp_path, mount_factory):
    token = hub.user("alice")
    hub.project("alice/sgd", "alice")
    hub.project("alice/slow", "alice")
    hub.project("alice/cats", "alice")
    assert SLOW_PY != TRAIN_PY
    push_files(hub, token, "alice/sgd", {"train.py": TRAIN_PY,
                                         "processor.json": json.dumps(MANIFEST)}, tmp_path)
    push_files(hub, token, "alice/slow", {"train.py": SLOW_PY,
                                          "processor.json": json.dumps(SLOW)}, tmp_path)
    push_files(hub, token, "alice/cats", {"data/train.csv": csv_data()}, tmp_path)
    api = V1(hub, token)
    for p in ("alice%2Fsgd", "alice%2Fslow"):
        r = api("POST", f"/code-projects/{p}/publish", json={"ref": "main"})
        assert r.status_code == 201, r.text
    return token, api, mount_factory(hub, token)


def test_metrics_jsonl_grows_params_typed_web_url(hub, tmp_path, mount_factory):
    token, api, m = make_runs(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    err, out = write_ctl(exps / "launch", "name=w1\nprocessor=slow-train\ninput_path=data\n"
                         "epochs=5\nlearning-rate=0.05\n")
    assert err == 0, out
    wait_file(exps / "w1/status", ("running",) + FINISHED)
    jsonl = exps / "w1/metrics.jsonl"
    assert "metrics.jsonl" in os.listdir(exps / "w1")
    tail = subprocess.Popen(["tail", "-n", "+1", "-s", "0.2", "-f", str(jsonl)],
                            stdout=subprocess.PIPE, text=True)
    try:
        # one descriptor held open, as tail -f holds it: the bytes read so far never
        # change, new lines come at the end, epoch after epoch
        seen, sizes = b"", []
        with open(jsonl, "rb") as f:
            deadline = time.time() + 120
            while time.time() < deadline:
                seen += f.read()
                assert os.stat(jsonl).st_size >= len(seen)
                if not sizes or sizes[-1] != len(seen):
                    sizes.append(len(seen))
                if (exps / "w1/status").read_text().strip() in FINISHED and \
                        len(seen) == os.stat(jsonl).st_size and seen.count(b"\n") == 5:
                    break
                time.sleep(0.2)
        assert (exps / "w1/status").read_text().strip() == "success"
        whole = jsonl.read_bytes()
        assert whole == seen, (whole, seen)
        lines = [json.loads(x) for x in whole.decode().splitlines()]
        assert [x["epoch"] for x in lines] == [1, 2, 3, 4, 5]
        assert lines == json.loads((exps / "w1/metrics.json").read_text())
        # it grew across epochs: several sizes seen, not one jump from nothing to all
        assert len([s for s in sizes if s > 0]) >= 3, sizes
        # tail -f printed every line as it came
        deadline = time.time() + 10
        got = []
        os.set_blocking(tail.stdout.fileno(), False)
        while time.time() < deadline and len(got) < 5:
            chunk = tail.stdout.read()
            if chunk:
                got += chunk.splitlines()
            time.sleep(0.1)
        assert [json.loads(x)["epoch"] for x in got] == [1, 2, 3, 4, 5], got
    finally:
        tail.terminate()
        tail.wait(timeout=10)

    # params.json: typed as the manifest declares (INTEGER, FLOAT, BOOLEAN)
    params = json.loads((exps / "w1/params.json").read_text())
    assert params == {"epochs": 5, "learning-rate": 0.05, "fail": False}, params
    assert isinstance(params["epochs"], int) and isinstance(params["fail"], bool)

    # web_url: a URL the hub serves, behind its usual auth
    e = json.loads((exps / "w1/experiment.json").read_text())
    r = requests.get(e["web_url"], headers={"PRIVATE-TOKEN": token}, timeout=30)
    assert r.status_code == 200 and r.json()["name"] == "w1", (e["web_url"], r.status_code)
    assert requests.get(e["web_url"], timeout=30).status_code in (401, 403, 404)


def test_did_you_mean_and_errno_once(hub, tmp_path, mount_factory, cli_env):  # noqa: F811
    token, api, m = make_runs(hub, tmp_path, mount_factory)
    launch = m / "alice/cats/experiments/launch"
    err, back = write_ctl(launch, "processor=sgd-trian\ninput_path=data\n")
    assert err == 2  # ENOENT
    want = "unknown processor sgd-trian; did you mean sgd-train? (one of: "
    assert want in back, back
    text = (m / "alice/cats/experiments/launch.error").read_text()
    assert want in text and "slow-train" in text, text
    err, back = write_ctl(launch, "processor=sgd-train\ninput_path=data\nepoch=3\n")
    assert err == 22  # EINVAL
    assert ("unknown parameter epoch for this processor; did you mean epochs? "
            "(one of: epochs, learning-rate, fail)") in back, back
    # reef launch: the reason once, the errno once
    r = reef(cli_env, "launch", m / "alice/cats", "sgd-trian", "input_path=data")
    assert r.returncode == 1, r
    assert "did you mean sgd-train?" in r.stderr, r.stderr
    assert r.stderr.count("ENOENT") == 1 and "No such file" not in r.stderr, r.stderr
    assert r.stderr.count("unknown processor") == 1, r.stderr
    assert not re.search(r"\d{4}-\d\d-\d\dT", r.stderr), r.stderr  # no .error timestamp
    r = reef(cli_env, "launch", m / "alice/cats", "sgd-train", "epoch=3")
    assert r.returncode == 1 and "did you mean epochs?" in r.stderr, r.stderr
    assert r.stderr.count("EINVAL") == 1 and "Invalid argument" not in r.stderr, r.stderr
    # .reef/ctl through reef gc: the daemon's reason, the errno name once
    r = reef(cli_env, "gc", m.mnt, "alice/cats/branches/main/nope")
    assert r.returncode == 1
    assert r.stderr.count("ENOENT") == 1 and r.stderr.count("No such file") == 1, r.stderr
    assert r.stderr.count("alice/cats/branches/main/nope") == 1, r.stderr
    r = reef(cli_env, "gc", m.mnt, ".reef")
    assert r.returncode == 1 and r.stderr.count("EINVAL") == 1, r.stderr
    assert "forget takes a project" in r.stderr and "Invalid argument" not in r.stderr
    # nothing was launched
    assert api("GET", "/projects/alice%2Fcats/experiments").json() == []
