"""System integration (issue 11, items 5 and 7): reefd says why a server cannot be used
before it mounts (closed port, unknown host, TLS, refused token), mounts offline only
from a cache, logs where a user finds it (-o log=FILE, syslog once daemonized, -v), and
keeps every failure in .reef/status; reef keeps several named servers and reads
GITLAB_URL/GITLAB_PRIVATE_TOKEN and python-gitlab's configuration; man pages, bash
completion, the systemd user unit and `meson install`."""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, REEF_BIN, REEFD_BIN, ROOT

MAN_DIR = ROOT / "docs" / "man"


def run(*args, env=None, input="", timeout=60):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          env=env, input=input, timeout=timeout)


def is_mounted(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def unmount(path):
    for _ in range(3):
        if not is_mounted(path):
            return
        subprocess.run(["fusermount3", "-u", str(path)], check=False)
        time.sleep(0.2)
    assert not is_mounted(path), f"{path} left mounted"


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in os.environ.items()
         if k not in ("REEF_REEFD", "REEF_TOKEN", "GITLAB_URL", "GITLAB_PRIVATE_TOKEN",
                      "PYTHON_GITLAB_CFG")}
    e.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "cfg"),
             XDG_CACHE_HOME=str(home / "cache"))
    return e


def reefd(*args, env, timeout=60):
    return run(REEFD_BIN, *args, env=env, timeout=timeout)


def token_and_mountpoint(hub, tmp_path):
    """alice's token in a 0600 file and an empty mount point."""
    tok = tmp_path / "token"
    tok.write_text(hub.user("alice"))
    tok.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    return tok, mnt


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- item 5: an unreachable server ----

def test_unreachable_server_fails_with_the_reason(tmp_path, env):
    env["REEF_TOKEN"] = "a-token-nobody-takes"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cases = [
        (f"http://127.0.0.1:{closed_port()}", "Couldn't connect to server"),
        ("http://nonexistent.invalid", "Could not resolve host: nonexistent.invalid"),
    ]
    for url, reason in cases:
        t0 = time.time()
        r = reefd("-o", f"server={url},cache={tmp_path / 'c'}", mnt, env=env)
        assert r.returncode == 1, r
        assert time.time() - t0 < 30
        last = r.stderr.strip().splitlines()[-1]
        assert f"cannot reach {url}: " in last and reason in last, r.stderr
        assert "not mounting" in last and "unreachable=mount" in last, last
        assert not is_mounted(mnt)
    # -o unreachable=fail never mounts offline, and says nothing of the cache
    r = reefd("-o", f"server={cases[0][0]},cache={tmp_path / 'c'},unreachable=fail", mnt,
              env=env)
    assert r.returncode == 1 and "not mounting" in r.stderr, r
    r = reefd("-o", f"server={cases[0][0]},unreachable=sometimes", mnt, env=env)
    assert r.returncode == 2 and "unreachable must be" in r.stderr, r


def test_tls_error_and_refused_token(hub, tmp_path, env):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    hub.user("alice")
    # https:// to a plain-http server: the TLS handshake fails
    env["REEF_TOKEN"] = "whatever"
    tls = hub.url.replace("http://", "https://")
    r = reefd("-o", f"server={tls},cache={tmp_path / 'c'}", mnt, env=env)
    assert r.returncode == 1, r
    last = r.stderr.strip().splitlines()[-1]
    assert f"cannot reach {tls}: " in last and ("SSL" in last or "TLS" in last), last
    # a token the server refuses: never mounted, even with a cache (-o unreachable=mount)
    env["REEF_TOKEN"] = "not-a-real-token-at-all"
    r = reefd("-o", f"server={hub.url},cache={tmp_path / 'c'},unreachable=mount", mnt, env=env)
    assert r.returncode == 1, r
    last = r.stderr.strip().splitlines()[-1]
    assert f"{hub.url} refused the token (HTTP 401" in last and "not mounting" in last, last
    assert "not-a-real-token" not in r.stderr
    assert not is_mounted(mnt)
    # not a GitLab: the API answers 404
    r = reefd("-o", f"server={hub.url}/nothing-here,cache={tmp_path / 'c'}", mnt, env=env)
    assert r.returncode == 1 and "is it the base URL of a GitLab" in r.stderr, r


def test_offline_mount_from_a_cache_logs_and_status(hub, tmp_path, env):
    from test_hub_ci import push_files

    token = hub.user("alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/cats", {"a.txt": "hello\n"}, tmp_path)
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cache = tmp_path / "cache"
    log = tmp_path / "logs/reefd.log"
    log.parent.mkdir()
    opts = f"server={hub.url},token_file={tok},cache={cache},log={log}"
    # online, in the background: the log file gets the daemon's lines
    r = reefd("-o", opts, "-v", mnt, env=env)
    assert r.returncode == 0, r
    try:
        assert (mnt / "alice/cats/branches/main/a.txt").read_text() == "hello\n"
        st = json.loads((mnt / ".reef/status").read_text())
        assert st["user"] == "alice"
        # a control request refused: counted and in last_errors
        with pytest.raises(OSError):
            with open(mnt / ".reef/ctl", "w") as f:
                f.write("frobnicate everything\n")
        st = json.loads((mnt / ".reef/status").read_text())
        assert st["ctl"]["errors"] >= 1
        assert any("ctl:" in e["message"] for e in st["cache"]["last_errors"]), st
    finally:
        unmount(mnt)
    text = log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert f"info: connected to {hub.url} as alice" in text, text
    assert f"info: mounted {hub.url} on {mnt}" in text and f"info: unmounted {mnt}" in text
    assert " debug: " in text, "-v logs debug lines"  # without -d's FUSE trace
    assert token not in text

    # the server gone: reefd mounts from the cache, and says so in the log and status
    port = hub.port
    assert hub.stop() == 0
    r = reefd("-o", opts, mnt, env=env)
    assert r.returncode == 0, r
    try:
        assert (mnt / "alice/cats/branches/main/a.txt").read_text() == "hello\n"
        st = json.loads((mnt / ".reef/status").read_text())
        assert st["user"] is None
        errs = [e["message"] for e in st["cache"]["last_errors"]]
        assert any("at mount: cannot reach" in m and "mounted offline" in m for m in errs), errs
        # a path never cached: EIO, counted, and the counted error has its line
        with pytest.raises(OSError):
            os.listdir(mnt / "alice/dogs")
        st = json.loads((mnt / ".reef/status").read_text())
        assert st["cache"]["errors"] >= 2
        assert any("Couldn't connect to server" in e["message"] and "/api/v4/" in e["message"]
                   for e in st["cache"]["last_errors"]), st["cache"]["last_errors"]
        out = run(REEF_BIN, "status", mnt, env=env).stdout
        assert "last errors: none" not in out and "mounted offline" in out, out
        assert re.search(r"^  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ at mount: cannot reach", out,
                         re.M), out
        assert "(server not reached)" in out
    finally:
        unmount(mnt)
    assert "mounted offline, serving what is cached" in log.read_text()
    hub.start(port)  # the fixture stops it


def test_status_lists_every_counted_error(hub, tmp_path, mount_factory):
    """Every request counted as an error has its line in last_errors (HTTP statuses too)."""
    from test_hub_ci import push_files

    token = hub.user("alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/cats", {"a.txt": "hello\n"}, tmp_path)
    m = mount_factory(hub, token)
    st = json.loads((m.mnt / ".reef/status").read_text())
    assert st["cache"]["errors"] == 0 and st["cache"]["last_errors"] == []
    # a 404 is an answer, not a failure
    assert not (m.mnt / "nobody/nothing").exists()
    st = json.loads((m.mnt / ".reef/status").read_text())
    assert st["cache"]["errors"] == 0, st["cache"]
    hub.stop()
    with pytest.raises(OSError):
        os.listdir(m.mnt / "alice/cats/branches/main")
    st = json.loads((m.mnt / ".reef/status").read_text())["cache"]
    assert st["errors"] > 0
    assert len(st["last_errors"]) >= min(st["errors"], 16), st
    assert all(e["message"] for e in st["last_errors"])
    hub.start(hub.port)


def test_management_api_failures_in_last_errors(hub, tmp_path, mount_factory):
    """The management API's client (experiments, processors) reports its failures too."""
    token = hub.user("alice")
    m = mount_factory(hub, token, extra_opts=f"mgmt=http://127.0.0.1:{closed_port()}")
    try:
        os.listdir(m.mnt / ".reef/processors")
    except OSError:
        pass
    st = json.loads((m.mnt / ".reef/status").read_text())["cache"]
    assert any("/api/v1/" in e["message"] and "Couldn't connect" in e["message"]
               for e in st["last_errors"]), st["last_errors"]


def test_syslog_when_daemonized(hub, tmp_path, env):
    """Once in the background, reefd's lines go to syslog (here a socket standing in for
    /dev/log, when the machine has none)."""
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log exists: the log file test covers the background log")
    if os.geteuid() != 0:
        pytest.skip("binding /dev/log needs root")
    tok, mnt = token_and_mountpoint(hub, tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    try:
        sock.settimeout(10)
        r = reefd("-o", f"server={hub.url},token_file={tok},cache={tmp_path / 'c'}", mnt,
                  env=env)
        assert r.returncode == 0, r
        unmount(mnt)
        got = []
        while not any("unmounted" in g for g in got):
            got.append(sock.recv(65536).decode(errors="replace"))
    finally:
        sock.close()
        os.unlink("/dev/log")
        unmount(mnt)
    # <14> is LOG_USER|LOG_INFO; the ident carries the pid (LOG_PID)
    assert any(g.startswith("<14>") and "reefd[" in g and f"unmounted {mnt}" in g
               for g in got), got


# ---- item 7: named servers, GITLAB_URL, python-gitlab ----

def test_named_servers_and_old_config(hub, tmp_path, env):
    token = hub.user("alice")
    bob = hub.user("bob")
    cfg = Path(env["XDG_CONFIG_HOME"]) / "reef"
    # the single-server file of earlier versions is still read
    cfg.mkdir(parents=True)
    (cfg / "config").write_text(f"server={hub.url}\n")
    (cfg / "token").write_text(token)
    (cfg / "token").chmod(0o600)
    r = run(REEF_BIN, "servers", env=env)
    assert r.returncode == 0 and r.stdout == f"* default              {hub.url}\n", r
    mnt = tmp_path / "old"
    r = run(REEF_BIN, "mount", mnt, env=env)
    assert r.returncode == 0, r
    try:
        assert json.loads((mnt / ".reef/status").read_text())["user"] == "alice"
    finally:
        unmount(mnt)
    # two more, by name: nothing is dropped, the last login is the default
    r = run(REEF_BIN, "login", "--name", "work", hub.url, env=env, input=bob + "\n")
    assert r.returncode == 0 and r.stdout == f"logged in to {hub.url} as bob (server work)\n", r
    r = run(REEF_BIN, "login", "--name", "home", hub.url + "/api/v4", env=env,
            input=token + "\n")
    assert r.returncode == 0 and "as alice (server home)" in r.stdout, r
    r = run(REEF_BIN, "servers", env=env)
    lines = r.stdout.splitlines()
    assert lines == [f"  default              {hub.url}", f"  work                 {hub.url}",
                     f"* home                 {hub.url}"], r.stdout
    for n in ("work", "home"):
        assert stat.S_IMODE((cfg / "tokens" / n).stat().st_mode) == 0o600
    assert (cfg / "tokens/work").read_text() == bob
    assert (cfg / "token").read_text() == token  # the old server's token stays in use
    assert f"token_file = {cfg}/token" in (cfg / "config").read_text()
    # a bad name, a broken config
    r = run(REEF_BIN, "login", "--name", "../x", hub.url, env=env, input=bob + "\n")
    assert r.returncode == 2 and "NAME must be" in r.stderr
    # reef mount NAME mounts at ~/reef-NAME as that server's user; DIR may follow
    home = Path(env["HOME"])
    r = run(REEF_BIN, "mount", "work", env=env)
    assert r.returncode == 0, r
    try:
        assert json.loads((home / "reef-work/.reef/status").read_text())["user"] == "bob"
        r = run(REEF_BIN, "mount", "default", tmp_path / "d2", env=env)
        assert r.returncode == 0, r
        assert json.loads((tmp_path / "d2/.reef/status").read_text())["user"] == "alice"
        assert run(REEF_BIN, "unmount", "work", env=env).returncode == 0
        assert not is_mounted(home / "reef-work")
    finally:
        unmount(home / "reef-work")
        unmount(tmp_path / "d2")
    # -f: reefd in the foreground in reef's place (the systemd unit's ExecStart)
    fg = tmp_path / "fg"
    p = subprocess.Popen([str(REEF_BIN), "mount", "-f", "work", str(fg)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not is_mounted(fg) and time.time() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert is_mounted(fg) and p.poll() is None, p.stderr.read() if p.poll() else ""
        assert open(f"/proc/{p.pid}/comm").read().strip() == "reefd"
        assert json.loads((fg / ".reef/status").read_text())["user"] == "bob"
    finally:
        unmount(fg)
        assert p.wait(timeout=20) == 0
    r = run(REEF_BIN, "mount", "nosuch", tmp_path / "x", env=env)
    assert r.returncode == 1 and "no server named nosuch" in r.stderr, r
    (cfg / "config").write_text("[work]\nurl = x\n  continued\n")
    r = run(REEF_BIN, "login", "--name", "z", hub.url, env=env, input=bob + "\n")
    assert r.returncode == 1 and "line 3" in r.stderr, r
    assert "continued" in (cfg / "config").read_text()  # not overwritten


def test_gitlab_env_and_python_gitlab_cfg(hub, tmp_path, env):
    import gitlab

    token = hub.user("alice")
    bob = hub.user("bob")
    hub.project("alice/cats", "alice")
    # GITLAB_URL / GITLAB_PRIVATE_TOKEN, as python-gitlab's CLI and glab read them
    e = dict(env, GITLAB_URL=hub.url, GITLAB_PRIVATE_TOKEN=token)
    mnt = tmp_path / "m"
    r = run(REEF_BIN, "mount", mnt, env=e)
    assert r.returncode == 0, r
    try:
        assert (mnt / "alice/cats").is_dir()
        assert token not in open(f"/proc/self/mountinfo").read()
    finally:
        unmount(mnt)
    r = run(REEF_BIN, "mount", mnt, env=dict(env, GITLAB_URL=hub.url))
    assert r.returncode == 1 and "GITLAB_PRIVATE_TOKEN is not" in r.stderr, r
    # reefd alone takes them too
    mnt.mkdir(exist_ok=True)
    r = reefd(mnt, "-o", f"cache={tmp_path / 'c'}", env=e)
    assert r.returncode == 0, r
    try:
        assert json.loads((mnt / ".reef/status").read_text())["server"] == hub.url
    finally:
        unmount(mnt)

    # reef login on a terminal: GITLAB_URL is the default URL, GITLAB_PRIVATE_TOKEN the
    # token (not asked for); from a pipe the token is read from stdin as ever
    import pty
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([str(REEF_BIN), "login"], env=e, stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        out, err = p.communicate(timeout=30)
    finally:
        os.close(master)
    assert p.returncode == 0 and "using the token in $GITLAB_PRIVATE_TOKEN" in err, (out, err)
    name = hub.url.split("//")[1].replace(":", "_")
    assert out == f"logged in to {hub.url} as alice (server {name})\n"
    assert token not in out + err
    r = run(REEF_BIN, "login", env=e, input=bob + "\n")
    assert r.returncode == 0 and "as bob" in r.stdout, r
    shutil.rmtree(Path(env["XDG_CONFIG_HOME"]) / "reef")

    # python-gitlab's file: the same file python-gitlab itself uses
    pcfg = tmp_path / "pg.cfg"
    pcfg.write_text(f"[global]\ndefault = main\nssl_verify = true\n\n"
                    f"[main]\nurl = {hub.url}\nprivate_token = {token}\n\n"
                    f"[Other]\nURL = {hub.url}\nprivate_token: {bob}\n\n"
                    f"[ci]\nurl = {hub.url}\njob_token = abc\n")
    pcfg.chmod(0o600)
    gl = gitlab.Gitlab.from_config("Other", [str(pcfg)])
    gl.auth()
    assert gl.user.username == "bob"
    e = dict(env, PYTHON_GITLAB_CFG=str(pcfg))
    r = run(REEF_BIN, "servers", env=e)
    assert f"  main                 {hub.url} (python-gitlab, its default)" in r.stdout, r
    assert "Other" in r.stdout and token not in r.stdout
    r = run(REEF_BIN, "mount", "Other", env=e)
    assert r.returncode == 0, r
    other = Path(env["HOME"]) / "reef-Other"
    try:
        assert json.loads((other / ".reef/status").read_text())["user"] == "bob"
    finally:
        unmount(other)
    r = run(REEF_BIN, "mount", mnt, env=e)  # no NAME: python-gitlab's default
    assert r.returncode == 0, r
    try:
        assert json.loads((mnt / ".reef/status").read_text())["user"] == "alice"
    finally:
        unmount(mnt)
    r = run(REEF_BIN, "mount", "ci", tmp_path / "ci", env=e)
    assert r.returncode == 1 and "job_token is not supported" in r.stderr, r
    # reef login --gitlab SECTION stores it as one of reef's own
    r = run(REEF_BIN, "login", "--gitlab", "Other", "--name", "b", env=e)
    assert r.returncode == 0 and "as bob (server b)" in r.stdout, r
    assert (Path(env["XDG_CONFIG_HOME"]) / "reef/tokens/b").read_text() == bob
    # a python-gitlab file that is not INI is named with its line
    pcfg.write_text("[main]\nurl\n")
    r = run(REEF_BIN, "mount", "main", tmp_path / "x", env=e)
    assert r.returncode == 1 and f"{pcfg}: line 2" in r.stderr, r


# ---- item 7: man pages, completion, systemd unit, meson install ----

PAGES = {"reefd": "8", "reef": "1", "reef-hub": "8", "reef-epf": "1"}


def test_man_pages_render_and_cover_every_option():
    if not shutil.which("groff"):
        pytest.skip("groff not installed")
    for name, sec in PAGES.items():
        page = MAN_DIR / f"{name}.{sec}"
        r = run("groff", "-man", "-Tutf8", "-ww", "-z", page)
        assert r.returncode == 0 and r.stderr == "", (name, r.stderr)
        if shutil.which("man"):
            r = run("man", "-l", "-Tutf8", page, env=dict(os.environ, MANWIDTH="80"))
            assert r.returncode == 0 and name.upper() in r.stdout, (name, r.stderr)
    import re

    text = (MAN_DIR / "reefd.8").read_text()
    helptext = run(REEFD_BIN, "--help").stdout
    for o in set(re.findall(r"-o ([a-z_]+)", helptext)):
        assert re.search(r"(^\.B[IR]? |\\fB)" + re.escape(o) + r"[= \\\n]", text, re.M), \
            f"reefd.8 lacks -o {o}"
    for flag in ("f", "d", "v", "V"):
        assert re.search(r"^\.B[IR]? \\-" + flag + r"\b", text, re.M), f"reefd.8 lacks -{flag}"
    reef_text = (MAN_DIR / "reef.1").read_text()
    reef_help = run(REEF_BIN, "--help").stdout
    cmds = set(re.findall(r"^  ([a-z]+) ", reef_help, re.M))
    assert {"login", "mount", "status", "commit", "gc"} <= cmds, reef_help
    for cmd in cmds:
        assert f".B reef {cmd}" in reef_text or f"\\fBreef {cmd}\\fR" in reef_text, cmd
    hub_help = run(BUILD / "tools/hub/reef-hub", "--help").stdout
    hub_text = (MAN_DIR / "reef-hub.8").read_text()
    for c in set(re.findall(r"^  reef-hub (\w[\w-]*)", hub_help, re.M)):
        assert c in hub_text, f"reef-hub.8 lacks {c}"
    for o in set(re.findall(r"(--[a-z][a-z-]+)", hub_help)):
        assert o.replace("-", "\\-") in hub_text, f"reef-hub.8 lacks {o}"
    epf_help = run(BUILD / "tools/epf/reef-epf", "--help")
    epf_text = (MAN_DIR / "reef-epf.1").read_text()
    for o in set(re.findall(r"(--[a-z][a-z-]+)", epf_help.stdout + epf_help.stderr)):
        assert o.replace("-", "\\-") in epf_text, f"reef-epf.1 lacks {o}"


def complete(script, words, env):
    """COMPREPLY of the reef completion for the words typed (the last one partial)."""
    line = " ".join(words)
    prog = (f"source {script}\n"
            f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
            f"COMP_CWORD={len(words) - 1}\nCOMP_LINE={line!r}\nCOMP_POINT={len(line)}\n"
            f"_reef reef '{words[-1]}' '{words[-2]}'\n"
            "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r
    return r.stdout.split()


def test_bash_completion(hub, tmp_path, env):
    script = ROOT / "scripts" / "completion" / "reef.bash"
    assert set(complete(script, ["reef", ""], env)) >= {
        "login", "servers", "mount", "unmount", "status", "launch", "follow", "prefetch",
        "cache", "gc"}
    assert complete(script, ["reef", "mo"], env) == ["mount"]
    assert "--json" in complete(script, ["reef", "status", "--"], env)
    assert "--name" in complete(script, ["reef", "login", "--"], env)
    # server names and mounted reef directories
    cfg = Path(env["XDG_CONFIG_HOME"]) / "reef"
    cfg.mkdir(parents=True)
    (cfg / "config").write_text(f"default = work\n[work]\nurl = {hub.url}\n[home]\nurl = x\n")
    assert set(complete(script, ["reef", "mount", ""], env)) >= {"work", "home"}
    tok, mnt = token_and_mountpoint(hub, tmp_path)
    assert reefd("-o", f"server={hub.url},token_file={tok},cache={tmp_path / 'c'}", mnt,
                 env=env).returncode == 0
    try:
        assert str(mnt) in complete(script, ["reef", "unmount", ""], env)
        assert "cache_limit=" in complete(script, ["reef", "mount", "-o", "cache_l"], env)
    finally:
        unmount(mnt)


def test_systemd_user_unit():
    unit = ROOT / "scripts" / "systemd" / "reef-mount@.service.in"
    text = unit.read_text()
    assert "ExecStart=" in text and " -f " in text and "fusermount3 -u" in text
    assert "Type=notify" in text  # reefd sends READY=1 (test_systemd_readiness_notification)
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    d = Path(os.environ.get("TMPDIR", "/tmp")) / f"reef-unit-{os.getpid()}"
    d.mkdir(exist_ok=True)
    try:
        inst = d / "reef-mount@work.service"
        # reefd and fusermount3 must exist for verify: point at the built daemon
        inst.write_text(text.replace("/usr/local/bin/reefd", str(REEFD_BIN))
                        .replace("@bindir@/reefd", str(REEFD_BIN))
                        .replace("@bindir@/reef", str(REEF_BIN)))
        # Documentation=man:… is checked with man(1): the pages of this tree
        for name, sec in PAGES.items():
            (d / f"man/man{sec}").mkdir(parents=True, exist_ok=True)
            shutil.copy(MAN_DIR / f"{name}.{sec}", d / f"man/man{sec}/{name}.{sec}")
        e = dict(os.environ, XDG_RUNTIME_DIR=str(d), MANPATH=str(d / "man"))
        r = run("systemd-analyze", "verify", "--user", inst, env=e)
        if "Failed to connect" in r.stderr or "bus" in r.stderr.lower():
            r = run("systemd-analyze", "verify", inst, env=e)
        bad = [l for l in r.stderr.splitlines() if "reef-mount@" in l]
        assert r.returncode == 0 and not bad, r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_systemd_readiness_notification(hub, tmp_path, env):
    """Run as the unit runs it (Type=notify, in the foreground), reefd tells systemd's
    NOTIFY_SOCKET READY=1 once the mount answers, and STOPPING=1 when it is unmounted."""
    tok, mnt = token_and_mountpoint(hub, tmp_path)
    for name in (str(tmp_path / "notify"), f"@reef-notify-{os.getpid()}"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(name if name[0] == "/" else "\0" + name[1:])
        sock.settimeout(20)
        p = subprocess.Popen([str(REEFD_BIN), "-f", "-o",
                              f"server={hub.url},token_file={tok},cache={tmp_path / 'c'}",
                              str(mnt)], env=dict(env, NOTIFY_SOCKET=name),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            msg = sock.recv(8192).decode()
            assert msg.startswith("READY=1\n") and f"mounted on {mnt}" in msg, msg
            assert is_mounted(mnt)  # ready means mounted: `ls` after it works
            assert (mnt / ".reef/status").read_text()
            unmount(mnt)
            assert sock.recv(8192).decode() == "STOPPING=1"
            assert p.wait(timeout=20) == 0
        finally:
            sock.close()
            if p.poll() is None:
                p.kill()
                p.wait()
            unmount(mnt)
            if name[0] == "/":
                os.unlink(name)


def test_meson_install_destdir(tmp_path):
    if not shutil.which("meson"):
        pytest.skip("meson not installed")
    dest = tmp_path / "dest"
    r = run("meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild", "--quiet",
            timeout=300)
    assert r.returncode == 0, r.stderr
    prefix = run("meson", "introspect", BUILD, "--buildoptions").stdout
    opts = {o["name"]: o["value"] for o in json.loads(prefix)}
    root = dest / opts["prefix"].lstrip("/")
    for b in ("reefd", "reef", "reef-hub", "reef-epf"):
        p = root / opts["bindir"] / b
        assert p.is_file() and os.access(p, os.X_OK), p
    for name, sec in PAGES.items():
        assert (root / opts["mandir"] / f"man{sec}" / f"{name}.{sec}").is_file(), name
    comp = root / opts["datadir"] / "bash-completion/completions/reef"
    assert comp.is_file()
    unit = root / "lib/systemd/user/reef-mount@.service"
    assert unit.is_file()
    assert f"ExecStart={opts['prefix']}/{opts['bindir']}/reef mount -f %i" in unit.read_text()
