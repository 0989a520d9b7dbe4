"""reef-hub's CI subset and embedded runner, driven through python-gitlab 3.12 and real
git: pipelines with variables, stage ordering, traces, artifacts, cancel, retry, YAML
errors, job tokens and a hub restart in the middle of a job."""

import io
import os
import signal
import time
import zipfile

import gitlab
import pytest
import requests

from conftest import git

FINISHED = ("success", "failed", "canceled", "skipped")


def push_files(hub, token, path, files, tmp_path, branch="main", message="init", ci=False):
    """Commits files and pushes them; the push runs the project's CI only with ci=True
    (otherwise the commit says [skip ci], so tests start pipelines themselves)."""
    if not ci and "[skip ci]" not in message:
        message += " [skip ci]"
    work = tmp_path / ("w-" + path.replace("/", "-") + "-" + branch.replace("/", "-"))
    if not work.exists():
        git("clone", "-q", hub.git_url(path, token=token), str(work))
        if git("rev-parse", "HEAD", cwd=work, check=False).returncode != 0:
            git("checkout", "-q", "-b", branch, cwd=work)
    for name, content in files.items():
        f = work / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", message, cwd=work)
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def wait_pipeline(pl, timeout=60, until=FINISHED):
    deadline = time.time() + timeout
    while time.time() < deadline:
        pl.refresh()
        if pl.status in until:
            return pl
        time.sleep(0.1)
    raise AssertionError(f"pipeline {pl.id} still {pl.status}")


def wait_job(project, job_id, statuses, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = project.jobs.get(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job.status}")


def pids_with(marker):
    """Pids whose command line holds marker (a unique string the test made up)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.replace(" ", "\0").encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


@pytest.fixture
def setup(hub, tmp_path):
    token = hub.user("alice")
    hub.project("alice/ci", "alice")
    gl = gitlab.Gitlab(hub.url, private_token=token)
    return hub, token, gl, tmp_path


CI_OK = """
stages: [build, test]
variables:
  GREETING: hello
build:
  stage: build
  script:
    - echo "$GREETING $MYVAR from $CI_JOB_NAME on $CI_COMMIT_REF_NAME at $CI_COMMIT_SHA"
    - test "$CI_PROJECT_PATH" = alice/ci && test -n "$CI_JOB_TOKEN" && test "$CI_PROJECT_DIR" = "$PWD"
    - test "$CI_API_V4_URL" = "$CI_SERVER_URL/api/v4"
    - mkdir -p out/sub && echo model-bytes > out/sub/model.bin && echo report > report.txt
    - ln -s /etc/passwd out/escape
  artifacts:
    paths: [out/, report.txt]
test:
  stage: test
  script:
    - test -f input.txt
    - cat input.txt
"""


def test_pipeline_variables_trace_artifacts(setup):
    hub, token, gl, tmp = setup
    sha = push_files(hub, token, "alice/ci", {".gitlab-ci.yml": CI_OK, "input.txt": "in\n"}, tmp)
    project = gl.projects.get("alice/ci")
    pl = project.pipelines.create({"ref": "main", "variables": [
        {"key": "MYVAR", "value": "forty-two", "variable_type": "env_var"}]})
    assert pl.ref == "main" and pl.sha == sha and pl.source == "api"
    wait_pipeline(pl)
    assert pl.status == "success", pl.attributes
    jobs = {j.name: j for j in pl.jobs.list()}
    assert set(jobs) == {"build", "test"}
    build = project.jobs.get(jobs["build"].id)
    test = project.jobs.get(jobs["test"].id)
    assert build.status == "success" and build.stage == "build"
    # stages run in order
    assert test.started_at >= build.finished_at
    trace = build.trace().decode()
    assert f"hello forty-two from build on main at {sha}" in trace
    assert "Job succeeded" in trace
    data = build.artifacts()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "out/sub/model.bin" in names and "report.txt" in names
    assert "out/escape" not in names, "a symlink leaving the workspace was archived"
    assert build.artifact("out/sub/model.bin") == b"model-bytes\n"
    assert project.artifacts.raw("main", "report.txt", "build") == b"report\n"
    assert any(a["file_type"] == "archive" for a in build.attributes["artifacts"])
    # the API's list filters
    assert [p.id for p in project.pipelines.list(status="success")] == [pl.id]
    assert project.pipelines.list(ref="nope") == []
    latest = project.pipelines.get("latest")
    assert latest.id == pl.id
    r = hub.api("GET", f"/projects/{project.id}/jobs/{build.id}/trace", token=token)
    assert r.headers["Content-Type"].startswith("text/plain")


def test_failing_script_and_allow_failure(setup):
    hub, token, gl, tmp = setup
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": """
stages: [one, two]
flaky:
  stage: one
  allow_failure: true
  script: [exit 3]
breaks:
  stage: one
  script:
    - echo before-failure
    - false
    - echo never-printed
later:
  stage: two
  script: [echo later]
cleanup:
  stage: two
  when: on_failure
  script: [echo cleaning]
"""}, tmp)
    project = gl.projects.get("alice/ci")
    pl = wait_pipeline(project.pipelines.create({"ref": "main"}))
    assert pl.status == "failed"
    jobs = {j.name: project.jobs.get(j.id) for j in pl.jobs.list()}
    assert jobs["flaky"].status == "failed" and jobs["flaky"].allow_failure
    assert jobs["breaks"].status == "failed"
    assert jobs["breaks"].failure_reason == "script_failure"
    trace = jobs["breaks"].trace().decode()
    assert "before-failure" in trace and "never-printed" not in trace
    assert "exit code 1" in trace
    assert jobs["later"].status == "skipped"
    assert jobs["cleanup"].status == "success"


def test_cancel_kills_the_process_group(setup):
    hub, token, gl, tmp = setup
    marker = f"{os.getpid() % 1000 + 7000}.123"
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": f"""
sleeper:
  script:
    - sleep {marker} &
    - sleep {marker}
"""}, tmp)
    project = gl.projects.get("alice/ci")
    pl = project.pipelines.create({"ref": "main"})
    job_id = pl.jobs.list()[0].id
    wait_job(project, job_id, ("running",))
    deadline = time.time() + 10
    while len(pids_with("sleep " + marker)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(pids_with("sleep " + marker)) == 2
    pl.cancel()
    wait_pipeline(pl, timeout=15)
    assert pl.status == "canceled"
    assert project.jobs.get(job_id).status == "canceled"
    assert pids_with("sleep " + marker) == [], "cancel left job processes behind"
    # retry runs it again as a new job
    pl.retry()
    jobs = pl.jobs.list()
    assert len(jobs) == 1 and jobs[0].id != job_id
    project.jobs.get(jobs[0].id).cancel()
    wait_pipeline(pl, timeout=15)
    assert pids_with("sleep " + marker) == []


def test_yaml_errors_surface(setup):
    hub, token, gl, tmp = setup
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": """
build:
  services: [postgres]
  script: [make]
"""}, tmp)
    project = gl.projects.get("alice/ci")
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as e:
        project.pipelines.create({"ref": "main"})
    assert e.value.response_code == 400
    assert "services" in str(e.value)
    pls = project.pipelines.list()
    assert len(pls) == 1 and pls[0].status == "failed"
    full = project.pipelines.get(pls[0].id)
    assert "jobs:build uses services" in full.yaml_errors
    # a ref that does not exist, and a missing file
    with pytest.raises(gitlab.exceptions.GitlabCreateError):
        project.pipelines.create({"ref": "no-such-branch"})
    push_files(hub, token, "alice/ci", {"other.txt": "x"}, tmp, branch="main", message="m")
    git("rm", "-q", ".gitlab-ci.yml", cwd=tmp / "w-alice-ci-main")
    git("commit", "-q", "-m", "rm ci", cwd=tmp / "w-alice-ci-main")
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=tmp / "w-alice-ci-main")
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as e:
        project.pipelines.create({"ref": "main"})
    assert "Missing CI config file" in str(e.value)


def test_job_token_scope_and_lifetime(setup):
    hub, token, gl, tmp = setup
    hub.project("alice/other", "alice")
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": """
tok:
  script:
    - echo "$CI_JOB_TOKEN" > token.txt
    - |
      curl -sf -H "JOB-TOKEN: $CI_JOB_TOKEN" "$CI_API_V4_URL/projects/$CI_PROJECT_ID/repository/files/.gitlab-ci.yml/raw?ref=$CI_COMMIT_SHA" > own.json
    - |
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "JOB-TOKEN: $CI_JOB_TOKEN" "$CI_API_V4_URL/projects/alice%2Fother/repository/files/x/raw")
      test "$code" = 404
    - git fetch -q origin
    - echo pushed > pushed.txt && git add pushed.txt
    - git -c user.name=ci -c user.email=ci@x commit -qm "[skip ci] from job"
    - git push -q origin HEAD:refs/heads/from-job
  artifacts:
    paths: [token.txt, own.json]
"""}, tmp)
    project = gl.projects.get("alice/ci")
    # job tokens push only where the project allows it (GitLab's default: off)
    project.ci_push_repository_for_job_token_allowed = True
    project.save()
    pl = wait_pipeline(project.pipelines.create({"ref": "main"}))
    job = project.jobs.get(pl.jobs.list()[0].id)
    assert pl.status == "success", job.trace().decode()
    assert b"CI_JOB_TOKEN" in job.artifact("own.json")
    job_token = job.artifact("token.txt").decode().strip()
    assert "from-job" in [b.name for b in project.branches.list()]
    # the job ended: its token is dead for the API and for git
    r = hub.api("GET", f"/projects/{project.id}", headers={"JOB-TOKEN": job_token})
    assert r.status_code == 401
    r = requests.get(f"{hub.url}/api/v4/projects/{project.id}?job_token={job_token}")
    assert r.status_code == 401
    out = git("ls-remote", hub.git_url("alice/ci", user="gitlab-ci-token", token=job_token),
              check=False)
    assert out.returncode != 0


def test_trigger_api(setup):
    hub, token, gl, tmp = setup
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": """
show:
  script: [test "$TRIGGERED" = yes]
"""}, tmp)
    project = gl.projects.get("alice/ci")
    r = requests.post(f"{hub.url}/api/v4/projects/{project.id}/trigger/pipeline",
                      data={"token": token, "ref": "main", "variables[TRIGGERED]": "yes"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "trigger"
    pl = wait_pipeline(project.pipelines.get(r.json()["id"]))
    assert pl.status == "success"
    r = requests.post(f"{hub.url}/api/v4/projects/{project.id}/trigger/pipeline",
                      data={"token": "glpat-wrongwrongwrongwrong", "ref": "main"})
    assert r.status_code == 404  # a private project is not revealed


def test_restart_fails_running_jobs(setup):
    hub, token, gl, tmp = setup
    marker = f"{os.getpid() % 1000 + 8000}.321"
    push_files(hub, token, "alice/ci", {".gitlab-ci.yml": f"""
long:
  script: [sleep {marker}]
"""}, tmp)
    project = gl.projects.get("alice/ci")
    pl = project.pipelines.create({"ref": "main"})
    job_id = pl.jobs.list()[0].id
    wait_job(project, job_id, ("running",))
    hub.stop(signal.SIGKILL)
    for pid in pids_with("sleep " + marker):
        os.kill(pid, signal.SIGKILL)
    hub.start()
    gl = gitlab.Gitlab(hub.url, private_token=token)
    project = gl.projects.get("alice/ci")
    job = project.jobs.get(job_id)
    assert job.status == "failed"
    assert job.failure_reason == "runner_system_failure"
    assert "restarted" in job.trace().decode()
    assert project.pipelines.get(pl.id).status == "failed"
