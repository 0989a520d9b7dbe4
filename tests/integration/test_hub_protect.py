"""GitLab's protections on reef-hub: protected branches (API shape, the default branch
protected on creation, enforcement on git pushes, branch deletion and the commits API),
job tokens limited to GitLab's list of routes, push pipelines run as the pusher, token
scopes as lib/gitlab/auth.rb maps them, and a push that either lands with its pipeline or
not at all when the hub is killed in the middle of it."""

import os
import signal
import subprocess
from pathlib import Path
import time

import gitlab
import pytest
import requests

from conftest import Hub, git
from test_hub_ci import push_files, wait_pipeline

PUSH_PROTECTED = "GitLab: You are not allowed to push code to protected branches on this project."
FORCE_PROTECTED = ("GitLab: You are not allowed to force push code to a protected branch on "
                   "this project.")
DELETE_WEB_ONLY = "GitLab: You can only delete protected branches using the web interface."


@pytest.fixture
def team(hub, tmp_path):
    tokens = {"owner": hub.user("alice"), "dev": hub.user("dave"), "maint": hub.user("mary")}
    hub.project("alice/p", "alice")
    hub.member("alice/p", "dave", "developer")
    hub.member("alice/p", "mary", "maintainer")
    return tokens


def clone(hub, token, tmp_path, name):
    work = tmp_path / name
    git("clone", "-q", hub.git_url("alice/p", token=token), str(work))
    return work


def commit(work, name, msg="c [skip ci]"):
    (work / name).write_text(name + "\n")
    git("add", name, cwd=work)
    git("commit", "-qm", msg, cwd=work)


def test_default_branch_protected_with_gitlab_shape(hub, team, tmp_path):
    gl = gitlab.Gitlab(hub.url, private_token=team["owner"])
    project = gl.projects.get("alice/p")
    pbs = project.protectedbranches.list()
    assert [pb.name for pb in pbs] == ["main"]
    main = project.protectedbranches.get("main")
    assert main.push_access_levels[0]["access_level"] == 40
    assert main.push_access_levels[0]["access_level_description"] == "Maintainers"
    assert main.merge_access_levels[0]["access_level"] == 30  # developers merge
    assert main.allow_force_push is False and main.code_owner_approval_required is False
    # create a wildcard rule, refuse a duplicate, delete it
    pb = project.protectedbranches.create({"name": "release/*", "push_access_level": 30,
                                           "allow_force_push": True})
    assert pb.push_access_levels[0]["access_level_description"] == "Developers + Maintainers"
    with pytest.raises(gitlab.exceptions.GitlabCreateError) as e:
        project.protectedbranches.create({"name": "release/*"})
    assert e.value.response_code == 409
    assert "Protected branch 'release/*' already exists" in str(e.value)
    project.protectedbranches.delete("release/*")
    r = hub.api("GET", "/projects/alice%2Fp/protected_branches/release%2F%2A", team["owner"])
    assert r.status_code == 404 and r.json() == {"message": "404 Not found"}
    # a developer reads but does not change protections
    r = hub.api("POST", "/projects/alice%2Fp/protected_branches", team["dev"],
                json={"name": "x"})
    assert r.status_code == 403
    r = hub.api("GET", "/projects/alice%2Fp/protected_branches", team["dev"])
    assert r.status_code == 200 and r.json()[0]["name"] == "main"
    r = hub.api("POST", "/projects/alice%2Fp/protected_branches", team["owner"], json={})
    assert r.status_code == 400 and r.json() == {"error": "name is missing"}


def test_push_checks(hub, team, tmp_path):
    dev = clone(hub, team["dev"], tmp_path, "dev")
    git("checkout", "-qb", "main", cwd=dev)
    commit(dev, "a")
    # an empty project: the default branch's rule covers any first push of a developer
    r = git("push", "origin", "main", cwd=dev, check=False)
    assert r.returncode != 0 and PUSH_PROTECTED in r.stderr, r.stderr
    r = git("push", "origin", "main:first", cwd=dev, check=False)
    assert r.returncode != 0 and PUSH_PROTECTED in r.stderr, r.stderr
    maint = clone(hub, team["maint"], tmp_path, "maint")
    git("checkout", "-qb", "main", cwd=maint)
    commit(maint, "m1")
    git("push", "-q", "origin", "main", cwd=maint)
    branches = {b["name"]: b for b in hub.api("GET", "/projects/alice%2Fp/repository/branches",
                                              team["dev"]).json()}
    assert branches["main"]["protected"] is True and branches["main"]["can_push"] is False
    # the developer: feature branches yes, main no
    git("fetch", "-q", "origin", cwd=dev)
    git("reset", "-q", "--hard", "origin/main", cwd=dev)
    commit(dev, "d1")
    git("push", "-q", "origin", "main:feature", cwd=dev)
    r = git("push", "origin", "main", cwd=dev, check=False)
    assert r.returncode != 0 and PUSH_PROTECTED in r.stderr
    assert "pre-receive hook declined" in r.stderr
    # the maintainer: no force push, no deletion over git
    commit(maint, "m2")
    git("push", "-q", "origin", "main", cwd=maint)
    git("reset", "-q", "--hard", "HEAD~1", cwd=maint)
    commit(maint, "m3")
    r = git("push", "-f", "origin", "main", cwd=maint, check=False)
    assert r.returncode != 0 and FORCE_PROTECTED in r.stderr, r.stderr
    r = git("push", "origin", ":main", cwd=maint, check=False)
    assert r.returncode != 0
    assert "GitLab: The default branch of a project cannot be deleted." in r.stderr
    # a protected branch that is not the default one: deleted through the API only
    hub.api("POST", "/projects/alice%2Fp/protected_branches", team["owner"],
            json={"name": "feature"}).raise_for_status()
    r = git("push", "origin", ":feature", cwd=maint, check=False)
    assert r.returncode != 0 and DELETE_WEB_ONLY in r.stderr
    r = hub.api("DELETE", "/projects/alice%2Fp/repository/branches/feature", team["dev"])
    assert r.status_code == 400 and "Only a project maintainer or owner" in r.json()["message"]
    r = hub.api("DELETE", "/projects/alice%2Fp/repository/branches/feature", team["maint"])
    assert r.status_code == 204
    # main never moved under the refused pushes
    remote = git("ls-remote", hub.git_url("alice/p", token=team["owner"]), "refs/heads/main",
                 cwd=maint).stdout.split()[0]
    assert remote == git("rev-parse", "origin/main", cwd=maint).stdout.strip()


def test_commits_api_respects_protection(hub, team, tmp_path):
    push_files(hub, team["owner"], "alice/p", {"a.txt": "a"}, tmp_path)
    body = {"branch": "main", "commit_message": "x",
            "actions": [{"action": "create", "file_path": "x.txt", "content": "x"}]}
    r = hub.api("POST", "/projects/alice%2Fp/repository/commits", team["dev"], json=body)
    assert r.status_code == 403
    assert r.json() == {"message": "403 Forbidden - You are not allowed to push into this branch"}
    r = hub.api("POST", "/projects/alice%2Fp/repository/files/y.txt", team["dev"],
                json={"branch": "main", "commit_message": "y", "content": "y"})
    assert r.status_code == 400
    assert r.json() == {"message": "You are not allowed to push into this branch"}
    body["branch"] = "dev-branch"
    body["start_branch"] = "main"
    r = hub.api("POST", "/projects/alice%2Fp/repository/commits", team["dev"], json=body)
    assert r.status_code == 201, r.text
    body["branch"] = "main"
    del body["start_branch"]
    r = hub.api("POST", "/projects/alice%2Fp/repository/commits", team["maint"], json=body)
    assert r.status_code == 201, r.text


JOB_CI = """
job:
  script:
    - echo "$GITLAB_USER_LOGIN" > login.txt
    - git ls-remote origin > refs.txt
    - |
      code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "JOB-TOKEN: $CI_JOB_TOKEN" \\
        "$CI_API_V4_URL/projects/$CI_PROJECT_ID?ci_config_path=x.yml")
      echo "put=$code" > put.txt
    - |
      curl -sf -H "JOB-TOKEN: $CI_JOB_TOKEN" \\
        "$CI_API_V4_URL/projects/$CI_PROJECT_ID/repository/files/.gitlab-ci.yml/raw?ref=$CI_COMMIT_SHA" > raw.txt
    - echo x > pushed.txt && git add pushed.txt
    - git -c user.name=ci -c user.email=ci@x commit -qm "from job"
    - if git push -q origin HEAD:refs/heads/from-job 2> push.err; then echo ok > push.txt; else echo refused > push.txt; fi
  artifacts:
    paths: [login.txt, refs.txt, put.txt, raw.txt, push.txt, push.err]
"""


def test_push_pipeline_runs_as_pusher_and_job_token_is_limited(hub, team, tmp_path):
    push_files(hub, team["owner"], "alice/p", {"README": "r"}, tmp_path)
    # the developer pushes a branch: the pipeline runs as the developer
    sha = push_files(hub, team["dev"], "alice/p", {".gitlab-ci.yml": JOB_CI}, tmp_path,
                     branch="work", message="ci", ci=True)
    gl = gitlab.Gitlab(hub.url, private_token=team["owner"])
    project = gl.projects.get("alice/p")
    deadline = time.time() + 30
    while not project.pipelines.list(sha=sha) and time.time() < deadline:
        time.sleep(0.1)
    pl = wait_pipeline(project.pipelines.list(sha=sha)[0])
    job = project.jobs.get(pl.jobs.list()[0].id)
    assert pl.status == "success", job.trace().decode()
    assert pl.user["username"] == "dave" and job.user["username"] == "dave"
    assert job.artifact("login.txt").strip() == b"dave"
    assert b"refs/heads/main" in job.artifact("refs.txt")
    # no settings with a job token: GitLab ignores it there, the PUT is anonymous
    assert job.artifact("put.txt").strip() == b"put=401"
    assert project.ci_config_path is None or project.ci_config_path != "x.yml"
    assert b"GITLAB_USER_LOGIN" in job.artifact("raw.txt")
    # no push without ci_push_repository_for_job_token_allowed
    assert job.artifact("push.txt").strip() == b"refused"
    assert b"You are not allowed to push code to this project." in job.artifact("push.err")
    # with the setting on, the job pushes (and, as on GitLab, starts no pipeline)
    r = hub.api("PUT", "/projects/alice%2Fp", team["owner"],
                json={"ci_push_repository_for_job_token_allowed": True})
    assert r.status_code == 200 and r.json()["ci_push_repository_for_job_token_allowed"] is True
    pl2 = wait_pipeline(project.pipelines.create({"ref": "work"}))
    job2 = project.jobs.get(pl2.jobs.list()[0].id)
    assert pl2.status == "success", job2.trace().decode()
    assert job2.artifact("push.txt").strip() == b"ok", job2.artifact("push.err")
    assert "from-job" in [b.name for b in project.branches.list()]
    assert not project.pipelines.list(ref="from-job")


def test_token_scopes_as_gitlab(hub, team, tmp_path):
    push_files(hub, team["owner"], "alice/p", {"f.txt": "hello"}, tmp_path)
    read_api = hub.cli("token", "create", str(hub.dir), "alice", "--scopes",
                       "read_api").stdout.strip()
    read_repo = hub.cli("token", "create", str(hub.dir), "alice", "--scopes",
                        "read_repository").stdout.strip()
    # read_api clones (GitLab maps it to download_code), but does not push
    work = tmp_path / "ra"
    git("clone", "-q", hub.git_url("alice/p", token=read_api), str(work))
    assert (work / "f.txt").read_text() == "hello"
    commit(work, "z")
    r = git("push", "origin", "HEAD:refs/heads/z", cwd=work, check=False)
    assert r.returncode != 0
    # read_repository reads the files API (GET and HEAD), and nothing else of REST
    r = hub.api("GET", "/projects/alice%2Fp/repository/files/f.txt/raw?ref=main", read_repo)
    assert r.status_code == 200 and r.text == "hello"
    r = hub.api("HEAD", "/projects/alice%2Fp/repository/files/f.txt?ref=main", read_repo)
    assert r.status_code == 200
    r = hub.api("GET", "/projects/alice%2Fp/repository/tree", read_repo)
    assert r.status_code == 403
    r = hub.api("POST", "/projects/alice%2Fp/repository/files/n.txt", read_repo,
                json={"branch": "x", "start_branch": "main", "commit_message": "m",
                      "content": "n"})
    assert r.status_code == 403


def _git_children(root):
    """git processes serving this hub's repositories (GIT_PROJECT_ROOT under root): other
    hubs on the machine (a benchmark, say) are not this test's business."""
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        if "receive-pack" not in line and "http-backend" not in line:
            continue
        try:
            env = Path(f"/proc/{line.split()[0]}/environ").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if str(root).encode() in env:
            found.append(line)
    return found


@pytest.mark.parametrize("at,lands", [("pre-receive", False), ("committed", True)])
def test_hub_killed_during_push(tmp_path, at, lands):
    h = Hub(tmp_path)
    h.cli("init", str(h.dir))
    tok = h.user("alice")
    h.project("alice/p", "alice")
    os.environ["REEF_HUB_HOOK_DELAY"] = f"{at}:3000"
    try:
        h.start()
    finally:
        del os.environ["REEF_HUB_HOOK_DELAY"]
    work = tmp_path / "w"
    git("clone", "-q", h.git_url("alice/p", token=tok), str(work))
    git("checkout", "-qb", "main", cwd=work)
    (work / ".gitlab-ci.yml").write_text("j:\n  script: [true]\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    push = subprocess.Popen(["git", "push", "-q", "origin", "main"], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the hook sleeps 3 s at `at`
    h.proc.kill()
    h.proc.wait()
    h.proc.stdout.close()
    h.log.close()
    h.proc = None
    push.communicate(timeout=30)
    time.sleep(3)  # past the hook's sleep: an orphan would have moved main by now
    assert not _git_children(h.dir), _git_children(h.dir)
    bare = h.dir / "repos" / "1.git"
    moved = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q",
                            "refs/heads/main"], capture_output=True, text=True)
    assert (moved.returncode == 0) == lands, (at, moved.stdout)
    h.start()
    try:
        gl = gitlab.Gitlab(h.url, private_token=tok)
        project = gl.projects.get("alice/p")
        if lands:
            # the push landed before the kill: its pipeline runs after the restart
            pls = project.pipelines.list()
            assert len(pls) == 1 and pls[0].source == "push"
            pl = wait_pipeline(pls[0])
            assert pl.user["username"] == "alice"
        else:
            assert not project.pipelines.list()
            git("remote", "set-url", "origin", h.git_url("alice/p", token=tok), cwd=work)
            r = git("push", "-q", "origin", "main", cwd=work, check=False)
            assert r.returncode == 0, r.stderr
            assert len(project.pipelines.list()) == 1
    finally:
        assert h.stop() == 0


def test_restart_cleans_job_leftovers(tmp_path):
    h = Hub(tmp_path)
    h.cli("init", str(h.dir))
    builds = h.dir / "builds"
    builds.mkdir(parents=True, exist_ok=True)
    for name in ("7", "7.home", "7.tmp"):
        (builds / name).mkdir()
        (builds / name / "f").write_text("x")
    (builds / "7.sh").write_text("echo\n")
    h.start()
    try:
        assert list(builds.iterdir()) == []
    finally:
        assert h.stop() == 0
