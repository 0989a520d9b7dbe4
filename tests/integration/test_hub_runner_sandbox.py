"""The embedded runner's job sandbox (bubblewrap) and trace masking: a job cannot read
the hub's data directory (hub.db, the LFS secret), other projects' repositories or other
jobs' workspaces, is never root, and still writes its workspace and produces artifacts;
job variables cannot reach the hub's own checkout; CI_JOB_TOKEN shows as [MASKED] in the
trace, also when printed in pieces; cancel and timeouts still kill sandboxed jobs; a hub
whose bwrap cannot run refuses jobs unless started with --unsafe-runner."""

import io
import os
import time
import zipfile

import pytest

from conftest import Hub
from test_hub_ci import pids_with, push_files

FINISHED = ("success", "failed", "canceled", "skipped")


def enc(path):
    return path.replace("/", "%2F")


def create_pipeline(hub, tok, path, variables=None, files=None):
    """variables and files (file-type variables): {key: value}."""
    body = {"ref": "main", "variables": []}
    for k, v in (variables or {}).items():
        body["variables"].append({"key": k, "value": v})
    for k, v in (files or {}).items():
        body["variables"].append({"key": k, "value": v, "variable_type": "file"})
    r = hub.api("POST", f"/projects/{enc(path)}/pipeline", tok, json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def jobs_of(hub, tok, path, pid):
    r = hub.api("GET", f"/projects/{enc(path)}/pipelines/{pid}/jobs", tok)
    assert r.status_code == 200, r.text
    return {j["name"]: j for j in r.json()}


def wait_for(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finish(hub, tok, path, pid, timeout=60):
    """Waits for the pipeline to end; its jobs by name."""
    wait_for(lambda: hub.api("GET", f"/projects/{enc(path)}/pipelines/{pid}", tok)
             .json()["status"] in FINISHED, timeout, f"pipeline {pid}")
    return jobs_of(hub, tok, path, pid)


def trace(hub, tok, path, job_id):
    r = hub.api("GET", f"/projects/{enc(path)}/jobs/{job_id}/trace", tok)
    assert r.status_code == 200
    return r.text


def line(text, prefix):
    found = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    assert found, f"no {prefix} line in trace:\n{text}"
    return found[0][len(prefix):]


def job_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("Uid:")).split()[1])


HOLD_CI = """
hold:
  script:
    - echo other-ws-secret > marker
    - i=0; while [ ! -e release ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
"""

PROBE_CI = r"""
stages: [probe]
probe:
  stage: probe
  artifacts:
    when: always
    paths: [out/]
  script:
    - echo "LS:$(ls -A "$HUBDIR" | tr '\n' ' ')"
    - echo "BUILDS:$(ls -A "$CI_BUILDS_DIR" | tr '\n' ' ')"
    - if cat "$HUBDIR/hub.db" >/dev/null 2>&1; then echo DB:readable; else echo DB:hidden; fi
    - if cat "$HUBDIR/lfs/secret" >/dev/null 2>&1; then echo LFS:readable; else echo LFS:hidden; fi
    - if ls "$OTHER_REPO/objects" >/dev/null 2>&1; then echo REPO:readable; else echo REPO:hidden; fi
    - if cat "$OTHER_WS/marker" >/dev/null 2>&1; then echo WS:readable; else echo WS:hidden; fi
    - if touch "$ETC_PROBE" 2>/dev/null; then echo ETC:writable; else echo ETC:readonly; fi
    - echo "UID:$(id -u)"
    - echo "FILEVAR:$(cat "$SETTINGS")"
    - echo "PIDS:$(ls /proc | grep -c '^[0-9]')"
    - mkdir -p out && echo made-inside > out/result.txt && echo tmp > "$TMPDIR/t" && echo home > "$HOME/h"
    - cat "$HUBDIR/hub.db"
    - echo never-printed
build:
  stage: probe
  artifacts:
    paths: [dist/]
  script:
    - mkdir -p dist/sub && echo built > dist/sub/model.bin && cat input.txt > dist/copy.txt
"""


def test_job_cannot_read_the_hub_or_other_jobs(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/a", "alice")
    hub.project("alice/b", "alice")
    push_files(hub, tok, "alice/a", {".gitlab-ci.yml": PROBE_CI, "input.txt": "in\n"}, tmp_path)
    push_files(hub, tok, "alice/b", {".gitlab-ci.yml": HOLD_CI}, tmp_path)
    assert (hub.dir / "lfs" / "secret").is_file() and (hub.dir / "hub.db").is_file()
    b_id = hub.api("GET", "/projects/alice%2Fb", tok).json()["id"]
    other_repo = hub.dir / "repos" / f"{b_id}.git"
    assert (other_repo / "objects").is_dir()
    # a job of the other project, holding its workspace open
    hold_pid = create_pipeline(hub, tok, "alice/b")
    hold_job = wait_for(lambda: jobs_of(hub, tok, "alice/b", hold_pid).get("hold"), what="job")
    other_ws = hub.dir / "builds" / str(hold_job["id"])
    wait_for(lambda: (other_ws / "marker").exists(), what="the other job's marker")
    etc_probe = f"/etc/reef-sandbox-probe-{os.getpid()}"
    try:
        pid = create_pipeline(hub, tok, "alice/a", {
            "HUBDIR": str(hub.dir), "OTHER_REPO": str(other_repo), "OTHER_WS": str(other_ws),
            "ETC_PROBE": etc_probe}, files={"SETTINGS": "file-variable-content"})
        jobs = finish(hub, tok, "alice/a", pid)
    finally:
        (other_ws / "release").write_text("")
        etc_written = os.path.exists(etc_probe)
        if etc_written:
            os.unlink(etc_probe)
    probe, build = jobs["probe"], jobs["build"]
    text = trace(hub, tok, "alice/a", probe["id"])
    # the data directory is an empty tmpfs but for the job's own files
    # the job's builds, and reef-epf's directory shown read-only
    assert line(text, "LS:").split() == [".reef-epf", "builds"], text
    mine = str(probe["id"])
    assert set(line(text, "BUILDS:").split()) <= {mine, mine + ".home", mine + ".tmp",
                                                  mine + ".sh", mine + ".vars"}, text
    assert mine in line(text, "BUILDS:").split()
    assert line(text, "DB:") == "hidden"
    assert line(text, "LFS:") == "hidden"
    assert line(text, "REPO:") == "hidden"
    assert line(text, "WS:") == "hidden"
    assert line(text, "ETC:") == "readonly"
    assert line(text, "FILEVAR:") == "file-variable-content"  # readable by the job's uid
    assert not etc_written
    if os.geteuid() == 0:
        assert int(line(text, "UID:")) != 0, "a job ran as root"
    # its own pid namespace: the hub's processes are not there
    assert int(line(text, "PIDS:")) < 10, text
    # the plain attempt fails the job
    assert probe["status"] == "failed" and probe["failure_reason"] == "script_failure", probe
    assert "never-printed" not in text and "exit code 1" in text
    # its own workspace was writable and its artifacts were collected by the hub
    r = hub.api("GET", f"/projects/{enc('alice/a')}/jobs/{probe['id']}/artifacts/out/result.txt",
                tok)
    assert r.status_code == 200 and r.content == b"made-inside\n"
    assert build["status"] == "success", trace(hub, tok, "alice/a", build["id"])
    r = hub.api("GET", f"/projects/{enc('alice/a')}/jobs/{build['id']}/artifacts", tok)
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "dist/sub/model.bin" in names and "dist/copy.txt" in names
    # the holder was not disturbed, and every job's files are gone once it ended
    assert finish(hub, tok, "alice/b", hold_pid)["hold"]["status"] == "success"
    assert sorted(os.listdir(hub.dir / "builds")) == []


def test_job_variables_do_not_reach_the_checkout(hub, tmp_path):
    """The hub checks out the code itself, outside the sandbox: git's environment there
    is fixed, or a variable like core.fsmonitor would run a command as the hub."""
    tok = hub.user("alice")
    hub.project("alice/a", "alice")
    push_files(hub, tok, "alice/a", {".gitlab-ci.yml": "j:\n  script: [true]\n"}, tmp_path)
    pwned = tmp_path / "pwned"
    pid = create_pipeline(hub, tok, "alice/a", {
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.fsmonitor",
        "GIT_CONFIG_VALUE_0": f"echo ran >> {pwned}; false", "GIT_DIR": "/nonexistent"})
    job = finish(hub, tok, "alice/a", pid)["j"]
    assert job["status"] == "success", trace(hub, tok, "alice/a", job["id"])
    assert not pwned.exists(), "a job variable ran a command during the checkout"


MASK_CI = r"""
mask:
  artifacts:
    paths: [token.txt]
  script:
    - printf '%s' "$CI_JOB_TOKEN" > token.txt
    - echo "T1:$CI_JOB_TOKEN:E"
    - |
      printf 'T2:%s' "${CI_JOB_TOKEN%????????}"; sleep 0.3; printf '%s:E\n' "${CI_JOB_TOKEN#"${CI_JOB_TOKEN%????????}"}"
    - |
      printf 'T3:%s' "$(printf '%s' "$CI_JOB_TOKEN" | cut -c1-20)"; sleep 0.3; echo ":E"
    - head -c 65530 /dev/zero | tr '\0' x; printf '%s:T4\n' "$CI_JOB_TOKEN"
    - echo "URL:$CI_REPOSITORY_URL"
"""


def test_job_token_is_masked_in_the_trace(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/m", "alice")
    push_files(hub, tok, "alice/m", {".gitlab-ci.yml": MASK_CI}, tmp_path)
    pid = create_pipeline(hub, tok, "alice/m")
    job = finish(hub, tok, "alice/m", pid)["mask"]
    text = trace(hub, tok, "alice/m", job["id"])
    assert job["status"] == "success", text
    r = hub.api("GET", f"/projects/{enc('alice/m')}/jobs/{job['id']}/artifacts/token.txt", tok)
    assert r.status_code == 200
    token = r.text
    assert len(token) >= 20 and token.isalnum(), token
    assert token not in text, "the job token is in the trace"
    assert "T1:[MASKED]:E" in text
    # written in two pieces, 0.3 s apart: masked as a whole
    assert "T2:[MASKED]:E" in text
    # a prefix of the token that never became the token is printed as it was
    assert f"T3:{token[:20]}:E" in text
    # straddling the relay's 64 KiB reads
    assert "x[MASKED]:T4" in text
    assert f"URL:{hub.url.split('://')[0]}://gitlab-ci-token:[MASKED]@" in text
    # the file behind the trace route, once the job has ended
    on_disk = (hub.dir / "traces" / f"{job['id']}.log").read_text()
    assert token not in on_disk and "T2:[MASKED]:E" in on_disk


def test_cancel_kills_a_sandboxed_job(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/c", "alice")
    marker = f"{os.getpid() % 1000 + 6000}.456"
    push_files(hub, tok, "alice/c", {".gitlab-ci.yml": f"""
sleeper:
  script:
    - sleep {marker} &
    - (setsid sleep {marker} &)
    - sleep {marker}
"""}, tmp_path)
    pid = create_pipeline(hub, tok, "alice/c")
    wait_for(lambda: len(pids_with("sleep " + marker)) == 3, what="the job's sleeps")
    if os.geteuid() == 0:
        assert all(job_uid(p) != 0 for p in pids_with("sleep " + marker)), "a job ran as root"
    r = hub.api("POST", f"/projects/{enc('alice/c')}/pipelines/{pid}/cancel", tok)
    assert r.status_code == 200
    t0 = time.time()
    job = finish(hub, tok, "alice/c", pid, timeout=15)["sleeper"]
    assert job["status"] == "canceled"
    wait_for(lambda: pids_with("sleep " + marker) == [], 5, "the job's processes to end")
    assert time.time() - t0 < 6, "cancel was slow"


@pytest.fixture
def hub_factory(tmp_path, monkeypatch):
    hubs = []

    def make(name, env=None, serve_args=()):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        base = tmp_path / name
        base.mkdir()
        h = Hub(base, serve_args=serve_args).start()
        hubs.append(h)
        return h

    yield make
    for h in hubs:
        code = h.stop()
        assert code == 0, f"reef-hub exited {code}; log: {h.log_path.read_text()}"


def test_timeout_kills_a_sandboxed_job(hub_factory, tmp_path):
    hub = hub_factory("t", {"REEF_HUB_JOB_TIMEOUT": "2"})
    tok = hub.user("alice")
    hub.project("alice/t", "alice")
    marker = f"{os.getpid() % 1000 + 5000}.789"
    push_files(hub, tok, "alice/t", {".gitlab-ci.yml": f"j:\n  script: [sleep {marker}]\n"},
               tmp_path)
    pid = create_pipeline(hub, tok, "alice/t")
    job = finish(hub, tok, "alice/t", pid, timeout=20)["j"]
    assert job["status"] == "failed" and job["failure_reason"] == "job_execution_timeout"
    wait_for(lambda: pids_with("sleep " + marker) == [], 5, "the job's processes to end")


def test_without_bwrap_jobs_fail_unless_unsafe(hub_factory, tmp_path):
    ci = {".gitlab-ci.yml": 'j:\n  script: [\'cat "$HUBDIR/hub.db" > /dev/null\', "echo ran"]\n'}
    env = {"REEF_HUB_BWRAP": str(tmp_path / "no-bwrap")}
    hub = hub_factory("refuse", env)
    tok = hub.user("alice")
    hub.project("alice/u", "alice")
    push_files(hub, tok, "alice/u", ci, tmp_path)
    pid = create_pipeline(hub, tok, "alice/u", {"HUBDIR": str(hub.dir)})
    job = finish(hub, tok, "alice/u", pid)["j"]
    text = trace(hub, tok, "alice/u", job["id"])
    assert job["status"] == "failed" and job["failure_reason"] == "runner_system_failure"
    assert "sandbox is unavailable" in text and "--unsafe-runner" in text, text
    assert "\nran\n" not in text
    assert "sandbox unavailable" in hub.log_path.read_text()
    # today's behaviour, on request: the job runs unsandboxed and can read the hub
    hub2 = hub_factory("unsafe", env, serve_args=["--unsafe-runner"])
    tok2 = hub2.user("alice")
    hub2.project("alice/u", "alice")
    push_files(hub2, tok2, "alice/u", ci, tmp_path / "2")
    pid = create_pipeline(hub2, tok2, "alice/u", {"HUBDIR": str(hub2.dir)})
    job = finish(hub2, tok2, "alice/u", pid)["j"]
    text = trace(hub2, tok2, "alice/u", job["id"])
    assert job["status"] == "success", text
    assert "WARNING: no job sandbox (--unsafe-runner)" in text and "\nran\n" in text


@pytest.mark.parametrize("where", ["tmp", "closed"])
def test_reef_epf_reaches_jobs_wherever_it_is_built(hub_factory, tmp_path, where):
    """reef-epf must be on a sandboxed job's PATH and runnable by its unprivileged uid
    wherever the build lives: under /tmp (private in the sandbox; CI may build there), or
    under a directory closed to that uid (a checkout in root's home)."""
    import shutil
    from pathlib import Path

    from conftest import BUILD

    top = Path("/tmp" if where == "tmp" else "/var/tmp") / f"reef-epf-test-{os.getpid()}"
    epf_dir = top / "bin"
    epf_dir.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy2(BUILD / "tools/epf/reef-epf", epf_dir / "reef-epf")
        epf_dir.chmod(0o755)
        top.chmod(0o700 if where == "closed" else 0o755)
        hub = hub_factory("epf", {"REEF_EPF": str(epf_dir / "reef-epf")})
        tok = hub.user("alice")
        hub.project("alice/e", "alice")
        ci = {".gitlab-ci.yml": 'j:\n  script: ["command -v reef-epf", "reef-epf > out.txt 2>&1 '
              '|| true", "grep Usage out.txt"]\n'}
        push_files(hub, tok, "alice/e", ci, tmp_path)
        pid = create_pipeline(hub, tok, "alice/e")
        job = finish(hub, tok, "alice/e", pid)["j"]
        text = trace(hub, tok, "alice/e", job["id"])
        assert job["status"] == "success", text
        assert f"{hub.dir}/.reef-epf/reef-epf" in text and "Usage: reef-epf" in text, text
    finally:
        shutil.rmtree(top, ignore_errors=True)
