"""Shared fixtures of the integration suite: a real reef-hub on a free loopback port,
users and tokens made with its admin commands, repositories pushed with real git, and
real FUSE mounts made by reefd (unmounted with fusermount3 -u, daemon must exit 0)."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("REEF_BUILD", ROOT / "build"))
HUB_BIN = BUILD / "tools" / "hub" / "reef-hub"
REEFD_BIN = BUILD / "daemon" / "reefd"
REEF_BIN = BUILD / "tools" / "reef" / "reef"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Reef Test",
    "GIT_AUTHOR_EMAIL": "test@reef.invalid",
    "GIT_COMMITTER_NAME": "Reef Test",
    "GIT_COMMITTER_EMAIL": "test@reef.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args, cwd=None, check=True, env=None, input=None):
    e = dict(os.environ)
    e.update(GIT_ENV)
    e["HOME"] = str(Path(tempfile.gettempdir()) / "reef-test-home")
    os.makedirs(e["HOME"], exist_ok=True)
    if env:
        e.update(env)
    return subprocess.run(["git", *args], cwd=cwd, check=check, env=e, input=input,
                          capture_output=True, text=True)


def data_repo(hub, tmp_path, files, executable=(), symlinks=None, tags=(), branches=()):
    """alice's private project alice/data holding files (path -> bytes; the executable
    ones 0755, symlinks path -> target) in one commit on main, pushed with the tags and
    further branches made at that commit. The branch views' tests write over it."""
    tok = hub.user("alice")
    hub.project("alice/data", "alice", "private")
    src = tmp_path / "src"
    git("init", "-q", "-b", "main", str(src))
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    for name in executable:
        (src / name).chmod(0o755)
    for name, target in (symlinks or {}).items():
        os.symlink(target, src / name)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "data", cwd=src)
    for t in tags:
        git("tag", t, cwd=src)
    for b in branches:
        git("branch", b, cwd=src)
    url = hub.git_url("alice/data", token=tok)
    git("push", "-q", url, "main", *branches, *tags, cwd=src)
    commit = git("rev-parse", "HEAD", cwd=src).stdout.strip()
    return {"tok": tok, "src": src, "files": files, "url": url, "commit": commit}


class Hub:
    """A running reef-hub with its data directory; admin commands go through its CLI."""

    def __init__(self, base: Path, serve_args=()):
        self.dir = base / "hub"
        self.log_path = base / "hub.log"
        self.serve_args = list(serve_args)  # extra `reef-hub serve` options
        self.proc = None
        self.url = None

    def cli(self, *args, check=True):
        r = subprocess.run([str(HUB_BIN), *args], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"reef-hub {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def start(self, port=0):
        if not self.dir.exists():
            self.cli("init", str(self.dir))
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [str(HUB_BIN), "serve", str(self.dir), "--listen", f"127.0.0.1:{port}",
             *self.serve_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.time() + 10
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
        raise AssertionError(f"reef-hub did not start: {line!r}; log: {self.log_path.read_text()}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self.log.close()
        code = self.proc.returncode if self.proc else 0
        self.proc = None
        return code

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def user(self, name, admin=False):
        """Creates a user and returns a fresh personal access token for it."""
        args = ["user", "add", str(self.dir), name]
        if admin:
            args.append("--admin")
        self.cli(*args)
        return self.token(name)

    def token(self, name):
        out = self.cli("token", "create", str(self.dir), name).stdout.strip()
        assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", out), out
        return out

    def project(self, path, owner, visibility="private"):
        self.cli("project", "create", str(self.dir), path, "--visibility", visibility,
                 "--owner", owner)

    def member(self, project, user, level):
        self.cli("member", "add", str(self.dir), project, user, level)

    def git_url(self, path, user=None, token=None):
        u = urllib.parse.urlsplit(self.url)
        auth = f"{user or 'reef'}:{token}@" if token else ""
        return f"{u.scheme}://{auth}{u.netloc}/{path}.git"

    def api(self, method, route, token=None, **kw):
        import requests  # python3-requests comes with python3-gitlab
        headers = kw.pop("headers", {})
        if token:
            headers["PRIVATE-TOKEN"] = token
        return requests.request(method, self.url + "/api/v4" + route, headers=headers,
                                timeout=30, **kw)


@pytest.fixture
def hub(tmp_path):
    h = Hub(tmp_path).start()
    yield h
    code = h.stop()
    assert code == 0, f"reef-hub exited {code}; log: {h.log_path.read_text()}"


def hub_log_clean(h: Hub):
    return "error" not in h.log_path.read_text().lower()


class Mount:
    """reefd mounted at a private directory; stop() unmounts with fusermount3 -u."""

    def __init__(self, base: Path, hub: Hub, token: str, extra_opts=""):
        self.base = base
        self.mnt = base / "mnt"
        self.cache = base / "cache"
        self.token_file = base / "token"
        self.log_path = base / "reefd.log"
        self.mnt.mkdir(exist_ok=True)
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)
        self.hub = hub
        self.extra_opts = extra_opts
        self.proc = None

    def start(self):
        opts = f"server={self.hub.url},token_file={self.token_file},cache={self.cache}"
        if self.extra_opts:
            opts += "," + self.extra_opts
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([str(REEFD_BIN), "-f", "-o", opts, str(self.mnt)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.mounted():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"reefd did not mount; log: {self.log_path.read_text()}")

    def mounted(self):
        target = os.path.realpath(self.mnt)
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)

    def stop(self):
        if self.proc is None:
            return 0
        if self.mounted():
            subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        self.log.close()
        self.proc = None
        return code

    def kill9_restart(self):
        """reefd killed as by a crash (if it still runs), its dead mount lazily unmounted,
        then started again over the same cache: what was durable must still be there."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        self.log.close()
        self.proc = None
        self.start()

    def __truediv__(self, other):
        return self.mnt / other


@pytest.fixture
def mount_factory(tmp_path):
    mounts = []

    def make(hub, token, extra_opts="", name="m"):
        base = tmp_path / name
        base.mkdir(exist_ok=True)
        m = Mount(base, hub, token, extra_opts).start()
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        code = m.stop()
        assert not m.mounted(), "mount left behind"
        assert code == 0, f"reefd exited {code}; log: {m.log_path.read_text()}"


def which(name):
    return shutil.which(name)
