"""reef-hub's command line: init, user/token/project/member administration (also while
`serve` runs), listening rules, clean stops, and the python-gitlab command-line client
(package gitlab-cli) against a running hub."""

import hashlib
import os
import signal
import sqlite3
import stat
import subprocess

import pytest
import requests

from conftest import HUB_BIN, Hub


def run(*args, check=False):
    return subprocess.run([str(HUB_BIN), *args], capture_output=True, text=True, timeout=60,
                          check=check)


def test_help_documents_every_command():
    r = run("--help")
    assert r.returncode == 0
    for words in ("init DIR", "serve DIR", "--listen", "--base-url", "--allow-remote",
                  "user add DIR NAME", "--admin", "token create DIR USER", "--expires-at",
                  "--scopes", "project create DIR", "--visibility", "--owner",
                  "member add DIR PROJECT USER LEVEL", "maintainer"):
        assert words in r.stdout, words
    assert run("frobnicate").returncode != 0
    assert run().returncode != 0


def test_init_and_admin_commands(tmp_path):
    d = tmp_path / "hub"
    assert run("init", str(d)).returncode == 0
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert (d / "hub.db").is_file() and (d / "repos").is_dir()
    db = sqlite3.connect(d / "hub.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert run("user", "add", str(d), "alice", "--admin", "--email", "a@x.test", "--name",
               "Alice A").returncode == 0
    assert run("user", "add", str(d), "alice").returncode != 0  # duplicate
    assert run("user", "add", str(d), "../evil").returncode != 0
    tok = run("token", "create", str(d), "alice", "--name", "ci", check=True).stdout
    assert tok.endswith("\n") and tok.count("\n") == 1
    tok = tok.strip()
    assert tok.startswith("glpat-") and len(tok) >= 26
    # Only the SHA-256 of the token is stored, nowhere the token itself.
    digest = hashlib.sha256(tok.encode()).hexdigest()
    assert db.execute("SELECT count(*) FROM tokens WHERE sha256 = ?", (digest,)).fetchone()[0] == 1
    db.close()
    for f in d.iterdir():
        if f.is_file():
            assert tok.encode() not in f.read_bytes()
    assert run("token", "create", str(d), "nobody").returncode != 0
    assert run("token", "create", str(d), "alice", "--scopes", "bogus").returncode != 0
    assert run("token", "create", str(d), "alice", "--expires-at", "tomorrow").returncode != 0
    r = run("project", "create", str(d), "grp/sub/proj", "--visibility", "internal",
            "--owner", "alice")
    assert r.returncode == 0 and r.stdout.strip() == "1"
    repo = d / "repos" / "1.git"
    assert (repo / "HEAD").read_text().strip() == "ref: refs/heads/main"
    cfg = subprocess.run(["git", "config", "--file", str(repo / "config"), "--list"],
                         capture_output=True, text=True, check=True).stdout
    for line in ("http.receivepack=true", "uploadpack.allowfilter=true",
                 "uploadpack.allowanysha1inwant=true", "core.bare=true"):
        assert line in cfg
    assert run("project", "create", str(d), "grp/sub/proj", "--visibility", "private",
               "--owner", "alice").returncode != 0
    assert run("project", "create", str(d), "grp/x", "--visibility", "secret",
               "--owner", "alice").returncode != 0
    assert run("project", "create", str(d), "grp/../x", "--visibility", "private",
               "--owner", "alice").returncode != 0
    assert run("project", "create", str(d), "noslash", "--visibility", "private",
               "--owner", "alice").returncode != 0
    assert run("user", "add", str(d), "bob").returncode == 0
    for level in ("guest", "reporter", "developer", "maintainer", "owner", "30"):
        assert run("member", "add", str(d), "grp/sub/proj", "bob", level).returncode == 0
    assert run("member", "add", str(d), "1", "bob", "developer").returncode == 0
    assert run("member", "add", str(d), "grp/sub/proj", "bob", "god").returncode != 0
    assert run("member", "add", str(d), "grp/nope", "bob", "guest").returncode != 0
    assert run("user", "add", str(tmp_path / "missing"), "x").returncode != 0


def test_admin_commands_while_serving(hub):
    tok = hub.user("alice")
    hub.project("live/one", "alice", "private")
    r = hub.api("GET", "/projects/live%2Fone", token=tok)
    assert r.status_code == 200
    hub.user("bob")
    hub.member("live/one", "bob", "developer")
    bob = hub.token("bob")
    assert hub.api("GET", "/projects/live%2Fone", token=bob).json()["permissions"][
        "project_access"]["access_level"] == 30


def test_listen_rules_and_clean_stop(tmp_path):
    d = tmp_path / "hub"
    run("init", str(d), check=True)
    r = subprocess.run([str(HUB_BIN), "serve", str(d), "--listen", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "allow-remote" in r.stderr
    r = subprocess.run([str(HUB_BIN), "serve", str(d), "--listen", "nonsense"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        h = Hub(tmp_path)
        h.start()
        assert h.api("GET", "/projects").status_code == 200
        assert h.stop(sig) == 0


def test_base_url_is_used_in_links(tmp_path):
    d = tmp_path / "hub"
    run("init", str(d), check=True)
    run("user", "add", str(d), "alice", check=True)
    tok = run("token", "create", str(d), "alice", check=True).stdout.strip()
    run("project", "create", str(d), "acme/data", "--visibility", "private", "--owner",
        "alice", check=True)
    p = subprocess.Popen([str(HUB_BIN), "serve", str(d), "--listen", "127.0.0.1:0",
                          "--base-url", "https://hub.example.test/gl/"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        r = requests.get(url + "/api/v4/projects/acme%2Fdata", headers={"PRIVATE-TOKEN": tok},
                         timeout=30)
        body = r.json()
        assert body["http_url_to_repo"] == "https://hub.example.test/gl/acme/data.git"
        assert body["web_url"] == "https://hub.example.test/gl/acme/data"
        r = requests.get(url + "/api/v4/projects", headers={"PRIVATE-TOKEN": tok}, timeout=30)
        assert "<https://hub.example.test/gl/api/v4/projects?page=1>" in r.headers["Link"]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        p.stdout.close()


def test_log_has_no_tokens_or_queries(hub):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "public")
    requests.get(hub.url + "/api/v4/projects", params={"private_token": tok, "search": "zz"},
                 timeout=30)
    hub.api("GET", "/projects/acme%2Fdata", token=tok)
    requests.get(hub.url + "/acme/data.git/info/refs", params={"service": "git-upload-pack"},
                 auth=("x", tok), timeout=30)
    assert hub.stop() == 0
    log = hub.log_path.read_text()
    assert tok not in log and "private_token" not in log and "search=" not in log
    assert "GET /api/v4/projects 200" in log
    assert "GET /acme/data.git/info/refs 200" in log


@pytest.mark.skipif(not os.path.exists("/usr/bin/python-gitlab"), reason="gitlab-cli missing")
def test_python_gitlab_cli_lists_projects(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("grp/sub/proj", "alice", "private")
    hub.project("acme/open", "alice", "public")
    cfg = tmp_path / "python-gitlab.cfg"
    cfg.write_text(f"[global]\ndefault = reef\nssl_verify = false\ntimeout = 30\n\n"
                   f"[reef]\nurl = {hub.url}\nprivate_token = {tok}\napi_version = 4\n")
    cfg.chmod(0o600)
    r = subprocess.run(["/usr/bin/python-gitlab", "-c", str(cfg), "project", "list",
                        "--get-all"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "grp/sub/proj" in r.stdout and "acme/open" in r.stdout
    r = subprocess.run(["/usr/bin/python-gitlab", "-c", str(cfg), "-o", "json", "project",
                        "get", "--id", "grp/sub/proj"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert '"path_with_namespace": "grp/sub/proj"' in r.stdout
    r = subprocess.run(["/usr/bin/python-gitlab", "-c", str(cfg), "current-user", "get"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "alice" in r.stdout
