"""The `reef` command line against a real reef-hub and real FUSE mounts: login (token
checked, stored 0600, never printed), mount/status/unmount through reefd, launch and
follow of real experiments, prefetch and gc through .reef/ctl, usage errors."""

import json
import os
import pty
import select
import re
import stat
import subprocess

import pytest

from conftest import REEF_BIN, ROOT
from test_mount_data import push_repo, status
from test_mount_mlops import make_projects
from test_system import complete


@pytest.fixture
def cli_env(tmp_path):
    """A private HOME and XDG directories, so the user's own config is never touched."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg"),
                "XDG_CACHE_HOME": str(home / "cache")})
    env.pop("REEF_REEFD", None)  # found as ../../daemon/reefd from the reef binary
    return env


def reef(env, *args, input="", cwd=None, timeout=120):
    return subprocess.run([str(REEF_BIN), *map(str, args)], env=env, input=input,
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def is_mounted(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


@pytest.fixture
def cli_mounts():
    """Directories mounted with `reef mount`; unmounted whatever happens in the test."""
    dirs = []
    yield dirs
    for d in dirs:
        if is_mounted(d):
            subprocess.run(["fusermount3", "-u", str(d)], check=False)
        assert not is_mounted(d), f"{d} left mounted"


def test_usage_errors_and_help(cli_env):
    assert reef(cli_env).returncode == 2
    r = reef(cli_env, "frobnicate")
    assert r.returncode == 2 and "unknown command 'frobnicate'" in r.stderr
    for args in (["login"], ["login", "ftp://x"], ["login", "http://a", "b"],
                 ["mount", "-o"], ["mount", "--bogus"], ["unmount", "a", "b"],
                 ["status", "--bogus"], ["status", "a", "b"], ["cache", "a", "b"],
                 ["gc"], ["prefetch"], ["prefetch", "a", "b"], ["follow"],
                 ["launch"], ["launch", "dir"], ["launch", "dir", "proc", "noequals"],
                 ["launch", "dir", "epochs=3"], ["launch", "--bogus", "d", "p"],
                 ["logout", "--name"], ["logout", "home"],
                 ["logout", "--name", "a", "--name", "b"]):
        r = reef(cli_env, *args)
        assert r.returncode == 2, (args, r)
        assert r.stderr.startswith("reef: ") and r.stderr.count("\n") == 1, (args, r.stderr)
    for cmd in ("login", "logout", "mount", "unmount", "status", "launch", "follow", "prefetch",
                "cache", "gc"):
        r = reef(cli_env, cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"Usage: reef {cmd}"), (cmd, r)
    assert "drops the cached objects" in reef(cli_env, "gc", "--help").stdout.lower()
    assert reef(cli_env, "--help").returncode == 0


def test_login_bad_token_stores_nothing(hub, cli_env, tmp_path):
    hub.user("alice")
    cfg = tmp_path / "home/cfg/reef"
    r = reef(cli_env, "login", hub.url, input="not-a-real-token-at-all\n")
    assert r.returncode == 1 and "refused the token (HTTP 401)" in r.stderr, r
    assert "not-a-real-token" not in r.stdout + r.stderr
    assert not (cfg / "tokens").exists() and not (cfg / "config").exists()
    r = reef(cli_env, "login", hub.url, input="")
    assert r.returncode == 1 and "no token" in r.stderr
    # a server that is not there
    r = reef(cli_env, "login", "http://127.0.0.1:1", input="abc\n")
    assert r.returncode == 1 and "cannot reach" in r.stderr
    assert not (cfg / "tokens").exists()
    # mount without a login says so
    r = reef(cli_env, "mount", tmp_path / "mnt")
    assert r.returncode == 1 and "not logged in" in r.stderr


def test_logout(hub, cli_env, tmp_path):
    token = hub.user("alice")
    cfg = tmp_path / "home/cfg/reef"
    for name in ("work", "home"):
        r = reef(cli_env, "login", "--name", name, hub.url, input=token + "\n")
        assert r.returncode == 0, r
    # two servers with one token file the user keeps elsewhere, and a python-gitlab section
    own = tmp_path / "my-token"
    own.write_text(token)
    with open(cfg / "config", "a") as f:
        for name in ("ext", "ext2"):
            f.write(f"\n[{name}]\nurl = {hub.url}\ntoken_file = {own}\n")
    pgl = tmp_path / "pgl.cfg"
    pgl.write_text(f"[pg]\nurl = {hub.url}\nprivate_token = {token}\n")
    env = dict(cli_env, PYTHON_GITLAB_CFG=str(pgl))
    assert set(complete(ROOT / "scripts/completion/reef.bash",
                        ["reef", "logout", "--name", ""], env)) == {"work", "home", "ext", "ext2"}

    r = reef(env, "logout", "--name", "nope")
    assert r.returncode == 1, r
    assert r.stderr == "reef: no server named nope; reef's servers: work, home, ext, ext2\n"
    r = reef(env, "logout", "--name", "pg")
    assert r.returncode == 1 and "python-gitlab's section" in r.stderr, r
    assert (cfg / "tokens/home").exists() and (cfg / "tokens/work").exists()

    # without --name: the default, the last logged in to
    r = reef(env, "logout")
    assert r.returncode == 0, r
    assert r.stdout == (f"logged out of home ({hub.url}): removed from {cfg / 'config'}\n"
                        f"deleted its token file {cfg / 'tokens/home'}\n"
                        "the default server is now ext2\n")
    assert not (cfg / "tokens/home").exists() and (cfg / "tokens/work").exists()
    assert "[home]" not in (cfg / "config").read_text()
    r = reef(env, "logout", "--name", "ext")
    assert r.returncode == 0, r
    assert r.stdout.endswith(f"kept its token file {own}: another server uses it\n"), r
    r = reef(env, "logout", "--name", "ext2")
    assert r.returncode == 0, r
    assert r.stdout.endswith(f"kept its token file {own}: not one reef stored\n"
                             "the default server is now work\n"), r
    assert own.read_text() == token
    assert reef(env, "servers").stdout.startswith(f"* work                 {hub.url}\n")
    r = reef(env, "logout")
    assert r.returncode == 0 and r.stdout.endswith("no servers are left\n"), r
    assert not (cfg / "tokens/work").exists()
    r = reef(env, "logout")
    assert r.returncode == 1 and "not logged in to any server" in r.stderr, r


def test_login_on_a_terminal_does_not_echo(hub, cli_env, tmp_path):
    token = hub.user("alice")
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([str(REEF_BIN), "login", hub.url], env=cli_env, stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        prompt = b""
        while b"token: " not in prompt:  # echo is off once the prompt shows
            assert select.select([p.stderr], [], [], 10)[0], prompt
            prompt += os.read(p.stderr.fileno(), 100)
        os.write(master, (token + "\n").encode())
        out, err = p.communicate(timeout=30)
        echoed = b""
        while select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
    finally:
        os.close(master)
    assert p.returncode == 0, (out, err)
    name = hub.url.split("//")[1].replace(":", "_")
    assert out == f"logged in to {hub.url} as alice (server {name})\n"
    assert token.encode() not in echoed and token not in err
    assert (tmp_path / "home/cfg/reef/tokens" / name).read_text() == token


def test_login_mount_status_unmount(hub, cli_env, cli_mounts, tmp_path):
    token = hub.user("alice")
    hub.project("alice/cats", "alice")
    push_repo(hub, token, "alice/cats", {"a.txt": b"hello\n"}, tmp_path)
    r = reef(cli_env, "login", hub.url + "/", input=f"  {token}  \n")
    assert r.returncode == 0, r
    name = hub.url.split("//")[1].replace(":", "_")
    assert r.stdout == f"logged in to {hub.url} as alice (server {name})\n"
    assert token not in r.stdout + r.stderr
    cfg = tmp_path / "home/cfg/reef"
    st = os.stat(cfg / "tokens" / name)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cfg / "tokens").st_mode) == 0o700
    assert (cfg / "tokens" / name).read_text() == token
    assert f"default = {name}\n" in (cfg / "config").read_text()
    assert f"[{name}]\nurl = {hub.url}\n" in (cfg / "config").read_text()

    # the default mount point, ~/reef, created on demand
    mnt = tmp_path / "home/reef"
    cli_mounts.append(mnt)
    r = reef(cli_env, "mount", "-o", "poll=1")
    assert r.returncode == 0, r
    assert token not in r.stdout + r.stderr
    assert is_mounted(mnt)
    assert (mnt / "alice/cats/branches/main/a.txt").read_text() == "hello\n"
    r = reef(cli_env, "status", cwd=tmp_path)
    assert r.returncode == 0, r
    assert f"server:     {hub.url}\n" in r.stdout and "user:       alice\n" in r.stdout
    assert re.search(r"cache: +\d+(\.\d)? \w*B of \d+\.\d \w+B, \d+ objects", r.stdout), r.stdout
    assert "hit ratio:" in r.stdout and "in flight" in r.stdout
    # from inside the mount, without DIR, and raw
    r = reef(cli_env, "status", "--json", cwd=mnt / "alice/cats/branches/main")
    assert r.returncode == 0, r
    js = json.loads(r.stdout)
    assert js["user"] == "alice" and js["server"] == hub.url
    assert js["poll_s"] == 1.0
    r = reef(cli_env, "cache", mnt)
    assert r.returncode == 0 and re.match(r"cache: .* of .* \(\d+ of \d+ bytes\), \d+ objects",
                                          r.stdout), r
    r = reef(cli_env, "unmount")
    assert r.returncode == 0, r
    assert not is_mounted(mnt)
    r = reef(cli_env, "status", mnt)
    assert r.returncode == 1 and "not inside a reef mount" in r.stderr

    # an explicit DIR; reefd's own failure (a bad option) is a failure of reef mount
    other = tmp_path / "other"
    cli_mounts.append(other)
    r = reef(cli_env, "mount", "-o", "poll=nope", other)
    assert r.returncode == 1 and not is_mounted(other)
    r = reef(cli_env, "mount", other)
    assert r.returncode == 0 and is_mounted(other), r
    assert reef(cli_env, "unmount", other).returncode == 0
    assert not is_mounted(other)
    assert reef(cli_env, "unmount", other).returncode == 1


def test_launch_and_follow(hub, tmp_path, mount_factory, cli_env):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    proj = m / "alice/cats"
    r = reef(cli_env, "launch", proj, "sgd-train", "input_path=data", "epochs=3", "--follow")
    assert r.returncode == 0, r
    first = r.stdout.splitlines()[0]
    assert re.fullmatch(re.escape(str(proj)) + r"/experiments/sgd-train-[0-9a-f]{8}", first), first
    assert os.path.isdir(first)
    assert "trained 3 epochs" in r.stdout
    last = json.loads(r.stdout.splitlines()[-1].removeprefix("metrics: "))
    assert last["epoch"] == 3 and last["accuracy"] > 0.5
    assert "reef: status success" in r.stderr
    assert (proj / "experiments" / os.path.basename(first) / "status").read_text() == "success\n"

    # a failing run: launch prints the directory named by name=, follow exits 1
    r = reef(cli_env, "launch", proj, "sgd-train", "name=boom", "input_path=data", "fail=true")
    assert r.returncode == 0 and r.stdout == f"{proj}/experiments/boom\n", r
    r = reef(cli_env, "follow", proj / "experiments/boom")
    assert r.returncode == 1, r
    assert "failing on purpose" in r.stdout
    assert "status failed" in r.stderr and "ended failed" in r.stderr

    # refused launches: the errno and the reason
    r = reef(cli_env, "launch", proj, "no-such-thing")
    assert r.returncode == 1
    assert "(ENOENT)" in r.stderr and "unknown processor no-such-thing" in r.stderr, r.stderr
    r = reef(cli_env, "launch", proj, "sgd-train", "epochs=many")
    assert r.returncode == 1
    assert "(EINVAL)" in r.stderr and "epochs must be an integer" in r.stderr, r.stderr
    r = reef(cli_env, "launch", proj, "sgd-train", "name=boom")
    assert r.returncode == 1 and "(EEXIST)" in r.stderr
    r = reef(cli_env, "follow", proj / "experiments/nope")
    assert r.returncode == 1 and "(ENOENT)" in r.stderr


def test_prefetch_and_gc(hub, mount_factory, cli_env, tmp_path):
    token = hub.user("alice")
    hub.project("alice/data", "alice")
    files = {f"data/f{i}.bin": os.urandom(300_000 + i) for i in range(6)}
    files["README.md"] = b"data\n"
    push_repo(hub, token, "alice/data", files, tmp_path)
    m = mount_factory(hub, token, "prefetch=0")
    data = m / "alice/data/branches/main/data"
    before = status(m)["cache"]
    r = reef(cli_env, "prefetch", data)
    assert r.returncode == 0, r
    assert r.stdout == "prefetched alice/data/branches/main/data\n"
    total = sum(len(v) for k, v in files.items() if k.startswith("data/"))
    assert r.stderr.startswith("[" + "#" * 24 + "] "), r.stderr
    assert f"fetched of {total / 2**20:.1f} MiB, 0 queued, 0 in flight" in r.stderr, r.stderr
    after = status(m)
    assert after["cache"]["in_flight"] == 0 and after["prefetch"]["queued"] == 0
    assert after["cache"]["objects"] >= before["objects"] + 6
    assert after["cache"]["bytes_fetched"] - before["bytes_fetched"] >= 6 * 300_000
    # the files are cached: reading them fetches nothing more
    for i in range(6):
        assert (data / f"f{i}.bin").read_bytes() == files[f"data/f{i}.bin"]
    assert status(m)["cache"]["bytes_fetched"] == after["cache"]["bytes_fetched"]

    # errors come back with the reason from .reef/ctl.error
    r = reef(cli_env, "prefetch", m / "alice/data")
    assert r.returncode == 1 and "(EINVAL)" in r.stderr, r
    r = reef(cli_env, "prefetch", data / "nope")
    assert r.returncode == 1 and "No such file" in r.stderr
    r = reef(cli_env, "prefetch", tmp_path)
    assert r.returncode == 1 and "not inside a reef mount" in r.stderr

    # gc: forget by path, by mount-relative path under DIR
    r = reef(cli_env, "gc", data / "f0.bin")
    assert r.returncode == 0, r
    assert status(m)["cache"]["objects"] == after["cache"]["objects"] - 1
    r = reef(cli_env, "gc", m.mnt, "alice/data/branches/main/data")
    assert r.returncode == 0 and r.stdout == "forgot alice/data/branches/main/data\n", r
    assert status(m)["cache"]["objects"] <= after["cache"]["objects"] - 6
    r = reef(cli_env, "cache", m.mnt)
    assert r.returncode == 0 and "objects" in r.stdout
    # a forgotten file is fetched again
    fetched = status(m)["cache"]["bytes_fetched"]
    assert (data / "f1.bin").read_bytes() == files["data/f1.bin"]
    assert status(m)["cache"]["bytes_fetched"] > fetched
    r = reef(cli_env, "gc", m.mnt, "alice/data/branches/main/nope")
    assert r.returncode == 1 and "(ENOENT)" in r.stderr
