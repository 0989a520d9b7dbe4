"""git over smart HTTP against reef-hub with the real git client: clone, fetch, push
with a token in the URL, access rules, the default branch after a first push, and
partial clones."""

import os
import subprocess

import requests

from conftest import git


def make_repo(path, branch="main", files=None):
    path.mkdir()
    git("init", "-q", "-b", branch, cwd=path)
    for name, data in (files or {"README.md": "hello\n"}).items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data if isinstance(data, bytes) else data.encode())
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "first", cwd=path)
    return path


def head_of(path, ref="HEAD"):
    return git("rev-parse", ref, cwd=path).stdout.strip()


def test_push_clone_fetch_with_token(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("grp/sub/proj", "alice", "private")
    src = make_repo(tmp_path / "src", files={"a.txt": "a\n", "d/b.bin": os.urandom(3 << 20)})
    url = hub.git_url("grp/sub/proj", token=tok)
    git("push", url, "main", cwd=src)
    dst = tmp_path / "dst"
    git("clone", "-q", url, str(dst))
    assert (dst / "d" / "b.bin").read_bytes() == (src / "d" / "b.bin").read_bytes()
    (src / "a.txt").write_text("changed\n")
    git("commit", "-qam", "second", cwd=src)
    git("push", url, "main", cwd=src)
    git("fetch", "-q", "origin", cwd=dst)
    assert head_of(dst, "origin/main") == head_of(src)
    # The API sees the pushed branch as the default one.
    p = hub.api("GET", "/projects/grp%2Fsub%2Fproj", token=tok).json()
    assert p["default_branch"] == "main" and p["empty_repo"] is False
    # Protocol v2 and a blobless partial clone work too.
    part = tmp_path / "part"
    git("-c", "protocol.version=2", "clone", "-q", "--filter=blob:none", url, str(part))
    assert (part / "a.txt").read_text() == "changed\n"


def test_first_pushed_branch_becomes_default(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    src = make_repo(tmp_path / "src", branch="trunk")
    git("push", hub.git_url("acme/data", token=tok), "trunk", cwd=src)
    head = (hub.dir / "repos" / "1.git" / "HEAD").read_text().strip()
    assert head == "ref: refs/heads/trunk"
    dst = tmp_path / "dst"
    git("clone", "-q", hub.git_url("acme/data", token=tok), str(dst))
    assert git("branch", "--show-current", cwd=dst).stdout.strip() == "trunk"


def test_anonymous_clone_public_only(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("acme/open", "alice", "public")
    hub.project("acme/closed", "alice", "private")
    src = make_repo(tmp_path / "src")
    git("push", hub.git_url("acme/open", token=tok), "main", cwd=src)
    git("push", hub.git_url("acme/closed", token=tok), "main", cwd=src)
    git("clone", "-q", hub.git_url("acme/open"), str(tmp_path / "pub"))
    assert (tmp_path / "pub" / "README.md").exists()
    r = git("clone", "-q", hub.git_url("acme/closed"), str(tmp_path / "priv"), check=False)
    assert r.returncode != 0 and not (tmp_path / "priv" / "README.md").exists()
    # Anonymous push to a public project asks for credentials.
    r = git("push", hub.git_url("acme/open"), "main:other", cwd=src, check=False)
    assert r.returncode != 0
    r = requests.get(hub.url + "/acme/closed.git/info/refs",
                     params={"service": "git-upload-pack"}, timeout=30)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'


def test_access_levels_for_git(hub, tmp_path):
    alice = hub.user("alice")
    bob = hub.user("bob")
    carol = hub.user("carol")
    hub.project("acme/data", "alice", "private")
    src = make_repo(tmp_path / "src")
    git("push", hub.git_url("acme/data", token=alice), "main", cwd=src)
    # Not a member: the project does not exist for bob (404, no credential prompt).
    r = requests.get(hub.url + "/acme/data.git/info/refs", auth=("bob", bob),
                     params={"service": "git-upload-pack"}, timeout=30)
    assert r.status_code == 404
    r = git("clone", "-q", hub.git_url("acme/data", token=bob), str(tmp_path / "b"),
            check=False)
    assert r.returncode != 0
    # A reporter can fetch but not push (403).
    hub.member("acme/data", "bob", "reporter")
    git("clone", "-q", hub.git_url("acme/data", token=bob), str(tmp_path / "b2"))
    (src / "new.txt").write_text("x\n")
    git("add", "new.txt", cwd=src)
    git("commit", "-qm", "more", cwd=src)
    r = git("push", hub.git_url("acme/data", token=bob), "main", cwd=src, check=False)
    assert r.returncode != 0 and "403" in r.stderr
    r = requests.get(hub.url + "/acme/data.git/info/refs", auth=("x", bob),
                     params={"service": "git-receive-pack"}, timeout=30)
    assert r.status_code == 403
    # A developer can push a branch; the user name in the URL is ignored (gitlab-ci-token
    # too). The default branch is protected as on GitLab: maintainers only.
    hub.member("acme/data", "carol", "developer")
    r = git("push", hub.git_url("acme/data", user="gitlab-ci-token", token=carol), "main",
            cwd=src, check=False)
    assert r.returncode != 0
    assert "GitLab: You are not allowed to push code to protected branches on this project." \
        in r.stderr, r.stderr
    git("push", hub.git_url("acme/data", user="gitlab-ci-token", token=carol), "main:dev",
        cwd=src)
    assert git("ls-remote", hub.git_url("acme/data", token=alice), "refs/heads/dev",
               cwd=src).stdout.split()[0] == head_of(src)
    # A bad token is a 401 with the Basic challenge.
    r = requests.get(hub.url + "/acme/data.git/info/refs", auth=("x", "glpat-wrong-token-00000"),
                     params={"service": "git-upload-pack"}, timeout=30)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")


def test_git_routes_reject_hostile_paths(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "public")
    for path in ("/acme/%2e%2e/acme/data.git/info/refs", "/acme%00/data.git/info/refs",
                 "/..%2F..%2Fetc.git/info/refs", "/acme/data.git/objects/info/packs",
                 "/acme/data.git/HEAD", "/acme/data.git/config"):
        s = requests.Session()
        req = requests.Request("GET", hub.url + path, params={"service": "git-upload-pack"},
                               auth=("x", tok)).prepare()
        req.url = hub.url + path + "?service=git-upload-pack"
        r = s.send(req, timeout=30)
        assert r.status_code in (400, 404), path
    # The dumb protocol is not served.
    r = requests.get(hub.url + "/acme/data.git/info/refs", timeout=30)
    assert r.status_code == 403


def test_git_clone_via_subprocess_env_credentials(hub, tmp_path):
    """git asks for credentials after the 401 challenge and retries with them."""
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    src = make_repo(tmp_path / "src")
    git("push", hub.git_url("acme/data", token=tok), "main", cwd=src)
    helper = tmp_path / "cred.sh"
    helper.write_text(f"#!/bin/sh\necho username=alice\necho password={tok}\n")
    helper.chmod(0o700)
    r = git("-c", f"credential.helper={helper}", "clone", "-q", hub.git_url("acme/data"),
            str(tmp_path / "c"))
    assert r.returncode == 0 and (tmp_path / "c" / "README.md").exists()
    assert subprocess.run(["test", "-d", str(tmp_path / "c" / ".git")]).returncode == 0
