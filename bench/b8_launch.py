#!/usr/bin/python3
"""B8 of DESIGN.md: write to <project>/experiments/launch -> the experiment's job running,
target <= 1 s on reef-hub. The latency of one launch is from just before open() of the
control file to the moment the hub's API first shows the job past created/pending
(polled every 5 ms: the hub records started_at in whole seconds only, too coarse for a
1 s target). The median over >= 5 launches is the result.

Two ways to use it:
  from the suite:   import b8_launch
                    b8_launch.prepare(hub_bin, hub_dir, hub_url, token, owner)
                    res = b8_launch.measure(hub_url, token, mountpoint, "bench/dataset", runs=5)
  on its own:       /usr/bin/python3 bench/b8_launch.py --build build [--runs 5] [--two-hubs]
                    (starts its own reef-hub and reefd in a temporary directory, all on
                    127.0.0.1, and removes everything at the end)
  --two-hubs:       the management role beside a GitLab: hub A plays GitLab (its runner
                    runs the job), hub B runs `serve --gitlab <A>`, reefd mounts A with
                    -o mgmt=<B>; the launch goes through B to A's commits and pipeline
                    API, and "running" is what A's jobs API shows for the launch's branch.
The processor it launches (slug b8-noop) does nothing, so the number is the platform's.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

SLUG = "b8-noop"
MANIFEST = {"slug": SLUG, "name": "B8 no-op", "type": "ALGORITHM", "command": "true",
            "description": "does nothing: B8 measures the platform", "parameters": [],
            "metrics": []}
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@reef.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@reef.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
FINISHED = ("success", "failed", "canceled", "skipped")


def _git(*args, cwd):
    env = dict(os.environ, **GIT_ENV)
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _push(hub_url, token, path, files, work):
    work.mkdir(parents=True)
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", "-A", cwd=work)
    _git("commit", "-qm", "[skip ci] B8 setup", cwd=work)
    u = urllib.parse.urlsplit(hub_url)
    _git("push", "-q", f"{u.scheme}://b8:{token}@{u.netloc}/{path}.git", "main", cwd=work)


def prepare(hub_bin, hub_dir, hub_url, token, owner, namespace="bench", mgmt_url=None):
    """Creates <namespace>/b8-proc (via the hub's CLI) and publishes the no-op processor
    (through mgmt_url when the management service is elsewhere); does nothing when the
    processor is already published."""
    h = {"PRIVATE-TOKEN": token}
    mgmt_url = mgmt_url or hub_url
    if requests.get(f"{mgmt_url}/api/v1/processors/{SLUG}", headers=h, timeout=30).ok:
        return
    path = f"{namespace}/b8-proc"
    subprocess.run([str(hub_bin), "project", "create", str(hub_dir), path, "--owner", owner],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        _push(hub_url, token, path, {"processor.json": json.dumps(MANIFEST)}, Path(tmp) / "w")
    r = requests.post(f"{mgmt_url}/api/v1/code-projects/{urllib.parse.quote(path, safe='')}"
                      "/publish", headers=h, json={"ref": "main"}, timeout=30)
    r.raise_for_status()


def _job_running(hub_url, h, pid, name):
    """A's jobs API (GitLab's): the launch's job on its branch, past created/pending."""
    jobs = requests.get(f"{hub_url}/api/v4/projects/{pid}/jobs", params={"per_page": 20},
                        headers=h, timeout=30).json()
    return any(j.get("ref") == f"experiment/{name}" and
               j.get("status") not in ("created", "pending") for j in jobs)


def measure(hub_url, token, mountpoint, project, runs=5, log=print, timeout=60, mgmt_url=None):
    """Launches `runs` experiments of the no-op processor through the mount, one after the
    other (each waits for the previous to end, so runner slots never queue it). With
    mgmt_url (the management role beside a GitLab at hub_url), the job is looked for in
    GitLab's jobs API directly: the service learns it only when a client reads the run."""
    h = {"PRIVATE-TOKEN": token}
    pid = urllib.parse.quote(project, safe="")
    two = mgmt_url is not None
    mgmt_url = mgmt_url or hub_url
    launch = Path(mountpoint) / project / "experiments" / "launch"
    lat, writes = [], []
    for i in range(runs):
        name = f"b8-{os.getpid()}-{int(time.time() * 1000) % 10**8}-{i}"
        t0 = time.time()
        with open(launch, "w") as f:
            f.write(f"name={name}\nprocessor={SLUG}\n")
        writes.append(time.time() - t0)
        started = None
        deadline = time.time() + timeout
        while time.time() < deadline:
            if two:
                if _job_running(hub_url, h, pid, name):
                    started = time.time()
                    break
                time.sleep(0.005)
                continue
            e = requests.get(f"{hub_url}/api/v1/projects/{pid}/experiments/{name}", headers=h,
                             timeout=30)
            if e.ok and e.json().get("job_id"):
                j = requests.get(f"{hub_url}/api/v4/projects/{pid}/jobs/{e.json()['job_id']}",
                                 headers=h, timeout=30).json()
                if j.get("status") not in ("created", "pending"):
                    started = time.time()
                    break
            time.sleep(0.005)
        if started is None:
            raise RuntimeError(f"B8: the job of {name} did not start within {timeout} s")
        lat.append(started - t0)
        log(f"B8 run {i + 1}/{runs}: write() {writes[-1] * 1000:.1f} ms, job running after "
            f"{lat[-1] * 1000:.0f} ms")
        while time.time() < deadline:
            e = requests.get(f"{mgmt_url}/api/v1/projects/{pid}/experiments/{name}",
                             headers=h, timeout=30).json()
            if e.get("status") in FINISHED:
                break
            time.sleep(0.05)
    med = statistics.median(lat)
    return {"workload": "write to experiments/launch -> job running", "runs": len(lat),
            "latency_s": lat, "write_s": writes, "median_s": med, "target_s": 1.0,
            "meets_target": med <= 1.0}


def _serve(hub_bin, hub_dir, log, *extra):
    hub = subprocess.Popen([str(hub_bin), "serve", str(hub_dir), "--listen", "127.0.0.1:0",
                            *extra], stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
    for _ in range(100):
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", hub.stdout.readline())
        if m:
            return hub, m.group(1)
    hub.terminate()
    raise RuntimeError("reef-hub did not start")


def _standalone(build, runs, two_hubs=False):
    res = run_standalone(build, runs, two_hubs, log=lambda s: print(s, file=sys.stderr))
    print(json.dumps(res, indent=2))
    return 0 if res["meets_target"] else 1


def run_standalone(build, runs, two_hubs=False, log=print):
    """Starts its own hub(s) and reefd in a temporary directory, measures, removes
    everything; returns measure()'s result."""
    build = Path(build).resolve()
    hub_bin, reefd_bin = build / "tools/hub/reef-hub", build / "daemon/reefd"
    tmp = Path(tempfile.mkdtemp(prefix="reef-b8-"))
    hub = reefd = mgmt = None
    mgmt_url = None
    mnt = tmp / "mnt"
    try:
        hub_dir = tmp / "hub"

        def cli(*a):
            return subprocess.run([str(hub_bin), *a], check=True, capture_output=True,
                                  text=True).stdout.strip()

        cli("init", str(hub_dir))
        cli("user", "add", str(hub_dir), "bench")
        token = cli("token", "create", str(hub_dir), "bench")
        cli("project", "create", str(hub_dir), "bench/dataset", "--owner", "bench")
        hub, url = _serve(hub_bin, hub_dir, tmp / "hub.log")
        if two_hubs:
            cli("init", str(tmp / "mgmt"))
            mgmt, mgmt_url = _serve(hub_bin, tmp / "mgmt", tmp / "mgmt.log", "--gitlab", url)
        _push(url, token, "bench/dataset", {"data/x.csv": "a,b\n1,2\n"}, tmp / "data")
        if two_hubs:
            # the launch's job pushes its outputs with its job token (GitLab's setting)
            requests.put(f"{url}/api/v4/projects/bench%2Fdataset",
                         headers={"PRIVATE-TOKEN": token}, timeout=30,
                         json={"ci_push_repository_for_job_token_allowed": True}
                         ).raise_for_status()
        prepare(hub_bin, hub_dir, url, token, "bench", mgmt_url=mgmt_url)
        mnt.mkdir()
        (tmp / "token").write_text(token + "\n")
        (tmp / "token").chmod(0o600)
        opts = f"server={url},token_file={tmp / 'token'},cache={tmp / 'cache'}"
        if mgmt_url:
            opts += f",mgmt={mgmt_url}"
        reefd = subprocess.Popen([str(reefd_bin), "-f", "-o", opts, str(mnt)],
                                 stdout=subprocess.DEVNULL,
                                 stderr=open(tmp / "reefd.log", "w"))
        for _ in range(100):
            if os.path.exists(mnt / "bench"):
                break
            time.sleep(0.05)
        res = measure(url, token, mnt, "bench/dataset", runs=runs, log=log,
                      mgmt_url=mgmt_url)
        if two_hubs:
            res["setup"] = "two hubs: A plays GitLab (runner), B --gitlab A, reefd mgmt=B"
        return res
    finally:
        if reefd:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            reefd.wait(timeout=15)
        for h in (mgmt, hub):
            if h:
                h.terminate()
                h.wait(timeout=15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--two-hubs", action="store_true",
                    help="measure through reef-hub --gitlab beside a reef-hub playing GitLab")
    a = ap.parse_args()
    if a.runs < 5:
        ap.error("B8 is a median over at least 5 launches")
    sys.exit(_standalone(a.build, a.runs, a.two_hubs))
