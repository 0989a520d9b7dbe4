"""Everyday use (issue 11): the mount behaves like the Linux tools people know. A launch
written by bash's printf (one write per line), commit times as mtimes, the demo rerun
after a failure, mounting twice or over a dead mount, an unreachable server, --version,
man pages, mount -t fuse.reefd."""

import errno
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD
from test_mount_mlops import FINISHED, make_projects, wait_file


def sh(cmd, **kw):
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, **kw)


def test_printf_launch_is_one_request(hub, tmp_path, mount_factory):
    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    launch = exps / "launch"
    # the demo's hint: bash's printf sends one write() per line
    r = sh(f"printf 'name=p1\\nprocessor=sgd-train\\ninput_path=data\\nepochs=3\\n' > {launch}")
    assert r.returncode == 0, r.stderr
    seen = wait_file(exps / "p1/status", FINISHED)
    assert seen[-1] == "success", (exps / "p1/log").read_text()
    assert json.loads((exps / "p1/params.json").read_text())["epochs"] == 3
    assert "trained 3 epochs" in (exps / "p1/log").read_text()
    assert [x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()] == ["p1"]
    # a wrong line reaches the writer at its write, and nothing is launched
    r = sh(f"printf 'name=p2\\nprocessor=sgd-tran\\ninput_path=data\\n' > {launch}")
    assert r.returncode != 0 and "No such file" in r.stderr, r
    assert "unknown processor sgd-tran" in (exps / "launch.error").read_text()
    r = sh(f"printf 'name=p3\\nprocessor=sgd-train\\nthis is not a pair\\nepochs=2\\n' > {launch}")
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r
    assert "line 3: expected key=value" in (exps / "launch.error").read_text()
    # an error only the whole request shows reaches close() (coreutils' printf checks it)
    r = subprocess.run(["sh", "-c", f"exec /usr/bin/printf 'name=p4\\nprocessor=sgd-train\\n"
                        f"epochs=many\\n' > {launch}"], capture_output=True, text=True)
    assert r.returncode != 0, r
    assert "epochs must be an integer" in (exps / "launch.error").read_text()
    # a request cut short (JSON never closed) is refused at close, not half-sent
    fd = os.open(launch, os.O_WRONLY)
    os.write(fd, b'{"name": "p5", "processor": "sgd-train",')
    with pytest.raises(OSError) as ei:
        os.close(fd)
    assert ei.value.errno == errno.EINVAL
    # the cap holds across writes
    fd = os.open(launch, os.O_WRONLY)
    try:
        os.write(fd, b"name=p6\nprocessor=sgd-train\n")
        with pytest.raises(OSError) as ei:
            for _ in range(100):
                os.write(fd, b"# " + b"x" * 4000 + b"\n")
        assert ei.value.errno == errno.EFBIG
    finally:
        os.close(fd)
    assert [x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()] == ["p1"]
    assert json.loads((m / ".reef/status").read_text())["queued_control_writes"] == 0


def commit_time(work):
    return int(subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=work, check=True,
                              capture_output=True, text=True).stdout)


def test_revisions_show_commit_time(hub, tmp_path, mount_factory):
    from conftest import git
    from test_hub_ci import push_files

    token = hub.user("alice")
    hub.project("alice/data", "alice")
    os.environ["GIT_COMMITTER_DATE"] = "2021-03-04T05:06:07+02:00"
    try:
        push_files(hub, token, "alice/data", {"d/a.txt": "one\n", "b.txt": "bee\n"}, tmp_path)
    finally:
        del os.environ["GIT_COMMITTER_DATE"]
    work = tmp_path / "w-alice-data-main"
    t1 = commit_time(work)
    assert t1 == 1614827167
    m = mount_factory(hub, token, extra_opts="branch_ttl=0.2")
    main = m / "alice/data/branches/main"
    for p in (main, main / "d", main / "d/a.txt", main / "b.txt"):
        st = os.stat(p)
        assert st.st_mtime == t1 and st.st_ctime == t1, (p, st)
    # commits/<sha> shows the same time, learned from the commit answer
    sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert os.stat(m / f"alice/data/commits/{sha[:10]}/b.txt").st_mtime == t1
    # rsync -a copies, then a same-size change pushed later is seen by its new mtime
    dst = tmp_path / "copy"
    r = subprocess.run(["rsync", "-a", f"{main}/", f"{dst}/"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.stat(dst / "d/a.txt").st_mtime == t1
    push_files(hub, token, "alice/data", {"d/a.txt": "two\n"}, tmp_path, message="change")
    t2 = commit_time(work)
    assert t2 > t1
    deadline = time.time() + 10
    while os.stat(main / "d/a.txt").st_mtime != t2 and time.time() < deadline:
        time.sleep(0.1)
    assert os.stat(main).st_mtime == t2
    assert os.stat(main / "d/a.txt").st_mtime == t2
    r = subprocess.run(["rsync", "-a", "--itemize-changes", f"{main}/", f"{dst}/"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "d/a.txt" in r.stdout, r.stdout
    assert (dst / "d/a.txt").read_text() == "two\n"
    assert os.stat(dst / "d/a.txt").st_mtime == t2
    # a new mount of the same cache knows the times from its index
    m.stop()
    m.start()
    assert os.stat(m / "alice/data/branches/main/b.txt").st_mtime == t2


ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(tmp_path, port, *args, path=None):
    env = dict(os.environ, REEF_DEMO_DIR=str(tmp_path / "demo"), REEF_DEMO_PORT=str(port),
               REEF_BUILD=str(BUILD))
    if path:
        env["PATH"] = path
    return subprocess.run([str(ROOT / "scripts/demo.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_demo_reruns_after_a_failed_first_run(tmp_path):
    port = free_port()
    # a first run that fails at its first push (a network error, an interrupt)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "git").write_text('#!/bin/sh\n[ "$3" = push ] && { echo "fatal: unable to access" >&2;'
                              ' exit 128; }\nexec /usr/bin/git "$@"\n')
    (fake / "git").chmod(0o755)
    try:
        r = run_demo(tmp_path, port, path=f"{fake}:{os.environ['PATH']}")
        assert r.returncode != 0, r.stdout
        assert "unable to access" in r.stderr
        run_demo(tmp_path, port, "stop")
        # the rerun completes what is missing: the dataset is there, the model trains
        r = run_demo(tmp_path, port)
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
        assert "150 rows" in r.stdout
        assert "\n  success\n" in r.stdout, r.stdout[-2000:]
        mnt = tmp_path / "demo/mnt"
        assert "iris.csv" in os.listdir(mnt / "acme/iris/branches/main/data")
    finally:
        run_demo(tmp_path, port, "stop")
    assert not any(line.split()[4] == str(tmp_path / "demo/mnt")
                   for line in open("/proc/self/mountinfo"))


def test_demo_names_the_port_variable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        try:
            r = run_demo(tmp_path, port)
        finally:
            run_demo(tmp_path, port, "stop")
    assert r.returncode != 0
    assert f"REEF_DEMO_PORT" in r.stderr and str(port) in r.stderr, r.stderr


def mounts_at(path):
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == str(path))


def test_reef_mount_twice_nonempty_and_dead(hub, tmp_path):
    from test_reef_cli import reef

    token = hub.user("alice")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "cfg"),
               XDG_CACHE_HOME=str(home / "cache"))
    env.pop("REEF_REEFD", None)
    assert reef(env, "login", hub.url, input=token + "\n").returncode == 0
    mnt = tmp_path / "mnt"
    try:
        r = reef(env, "mount", mnt)
        assert r.returncode == 0, r
        # a second mount on the same directory is refused: one reefd, one entry
        r = reef(env, "mount", mnt)
        assert r.returncode == 1 and "already mounted" in r.stderr, r
        assert mounts_at(mnt) == 1
        # reefd killed: status says the mount is dead and how to recover
        pid = int(subprocess.run(["pgrep", "-n", "-f", f"reefd .*{mnt}"], capture_output=True,
                                 text=True).stdout)
        os.kill(pid, 9)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                os.stat(mnt)
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    break
            time.sleep(0.05)
        r = reef(env, "status", mnt)
        assert r.returncode == 1, r
        assert "dead" in r.stderr and f"fusermount3 -u {mnt}" in r.stderr, r.stderr
        # reef mount cleans it up and mounts again
        r = reef(env, "mount", mnt)
        assert r.returncode == 0, r
        assert "dead mount" in r.stderr and mounts_at(mnt) == 1
        assert reef(env, "status", mnt).returncode == 0
        assert reef(env, "unmount", mnt).returncode == 0
        # a non-empty directory: refused, unless -o nonempty
        full = tmp_path / "full"
        full.mkdir()
        (full / "notes.txt").write_text("mine\n")
        r = reef(env, "mount", full)
        assert r.returncode == 1 and "not empty" in r.stderr and "-o nonempty" in r.stderr, r
        assert mounts_at(full) == 0
        r = reef(env, "mount", "-o", "nonempty", full)
        assert r.returncode == 0, r
        assert mounts_at(full) == 1 and ".reef" in os.listdir(full)
        assert reef(env, "unmount", full).returncode == 0
        assert (full / "notes.txt").read_text() == "mine\n"
    finally:
        for d in (mnt, tmp_path / "full"):
            while mounts_at(d):
                subprocess.run(["fusermount3", "-u", str(d)], check=False)


def test_versions():
    from conftest import REEF_BIN, REEFD_BIN

    for binary, name in ((REEFD_BIN, "reefd"), (REEF_BIN, "reef"),
                         (BUILD / "tools/hub/reef-hub", "reef-hub"),
                         (BUILD / "tools/epf/reef-epf", "reef-epf")):
        r = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(f"{name} 0."), (name, r)


def test_mount_t_fuse_reefd(hub, tmp_path):
    """mount -t fuse.reefd URL DIR -o token_file=… works through mount.fuse3, as an fstab
    line "URL DIR fuse.reefd token_file=…,noauto 0 0" would."""
    from conftest import REEFD_BIN
    from test_hub_ci import push_files

    if not os.path.exists("/sbin/mount.fuse3") or os.geteuid() != 0:
        pytest.skip("needs mount.fuse3 and root for mount(8)")
    token = hub.user("alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/cats", {"a.txt": "hello\n"}, tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "reefd").symlink_to(REEFD_BIN)
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    opts = f"token_file={tok},cache={tmp_path / 'cache'}"
    r = subprocess.run(["mount", "-t", "fuse.reefd", hub.url, str(mnt), "-o", opts],
                       capture_output=True, text=True, env=env, timeout=30)
    if r.returncode != 0 and "reefd: not found" in r.stderr:
        # mount(8) runs its helpers with a safe PATH (no test directory in it): run the
        # helper as mount(8) does, "mount.fuse SOURCE DIR -o OPTS -t fuse.reefd"
        r = subprocess.run(["/sbin/mount.fuse3", hub.url, str(mnt), "-o", opts, "-t",
                            "fuse.reefd"], capture_output=True, text=True, env=env, timeout=30)
    try:
        assert r.returncode == 0, r
        assert mounts_at(mnt) == 1
        assert (mnt / "alice/cats/branches/main/a.txt").read_text() == "hello\n"
        assert json.loads((mnt / ".reef/status").read_text())["server"] == hub.url
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    assert mounts_at(mnt) == 0
    # the URL given twice, differently, is a usage error
    r = subprocess.run([str(REEFD_BIN), hub.url, str(mnt), "-o", "server=http://other:1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "two servers" in r.stderr


def test_fstab_entry(hub, tmp_path):
    """An fstab line mounts with "mount DIR", as sshfs's do (util-linux's --fstab reads a
    file of fstab's format). mount(8) runs helpers with a fixed PATH (/usr/local/bin and
    the system's bin directories, where meson install puts reefd), which a test cannot
    extend without installing; the line names the built reefd the way mount.fuse3 also
    accepts, "PROGRAM#SOURCE" with type fuse."""
    from conftest import REEFD_BIN
    from test_hub_ci import push_files

    if not os.path.exists("/sbin/mount.fuse3") or os.geteuid() != 0:
        pytest.skip("needs mount.fuse3 and root for mount(8)")
    token = hub.user("alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/cats", {"a.txt": "from fstab\n"}, tmp_path)
    tok = tmp_path / "token"
    tok.write_text(token + "\n")
    tok.chmod(0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text("# reef\n"
                     f"{REEFD_BIN}#{hub.url} {mnt} fuse "
                     f"token_file={tok},cache={tmp_path / 'cache'},noauto 0 0\n")
    r = subprocess.run(["mount", "--fstab", str(fstab), str(mnt)], capture_output=True,
                       text=True, timeout=30)
    try:
        assert r.returncode == 0, r
        assert mounts_at(mnt) == 1
        assert (mnt / "alice/cats/branches/main/a.txt").read_text() == "from fstab\n"
        # the fstab options reached reefd: its cache is the one the line names
        assert (tmp_path / "cache").is_dir()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert mounts_at(mnt) == 0


def test_launch_checks_paths_before_acknowledging(hub, tmp_path, mount_factory):
    """What can be checked while online is checked before a launch is acknowledged: a typo
    in input_path, and a pipeline launched on a ref without a CI file (GitLab would refuse
    it only once the request reached it: "Missing CI config file")."""
    from test_mount_mlops import write_ctl

    token, api, m = make_projects(hub, tmp_path, mount_factory)
    exps = m / "alice/cats/experiments"
    err, back = write_ctl(exps / "launch", "name=t1\nprocessor=sgd-train\ninput_path=dta\n")
    assert err == errno.ENOENT, (err, back)
    reason = (exps / "launch.error").read_text()
    assert "input_path dta: no dta in the top of main" in reason, reason
    assert "did you mean data?" in reason and "README.md" in reason, reason
    err, back = write_ctl(exps / "launch",
                          "name=t2\nprocessor=sgd-train\ninput_path=data/nope.csv\n")
    assert err == errno.ENOENT and "no nope.csv in data/ of main" in \
        (exps / "launch.error").read_text()
    err, back = write_ctl(exps / "launch",
                          "name=t3\nprocessor=sgd-train\ninput_path=README.md/x\n")
    assert err == errno.ENOENT and "README.md is not a directory" in \
        (exps / "launch.error").read_text()
    assert api("GET", "/projects/alice%2Fcats/experiments").json() == []
    # a file is a valid input too
    err, back = write_ctl(exps / "launch",
                          "name=t4\nprocessor=sgd-train\ninput_path=data/train.csv\nepochs=1\n")
    assert err == 0, back
    wait_file(exps / "t4/status", FINISHED)
    assert [x["name"] for x in api("GET", "/projects/alice%2Fcats/experiments").json()] == ["t4"]

    # pipelines/launch: no .gitlab-ci.yml in main of alice/cats
    pl = m / "alice/cats/pipelines/launch"
    before = requests_get(hub, token, "/api/v4/projects/alice%2Fcats/pipelines")
    err, back = write_ctl(pl, "ref=main\n")
    assert err == errno.ENOENT, (err, back)
    reason = (m / "alice/cats/pipelines/launch.error").read_text()
    assert "CI file .gitlab-ci.yml: no .gitlab-ci.yml in the top of main" in reason, reason
    time.sleep(1)  # nothing queued would have had the time to reach the hub
    r = requests_get(hub, token, "/api/v4/projects/alice%2Fcats/pipelines")
    assert r == before, r
    assert json.loads((m / ".reef/status").read_text())["queued_control_writes"] == 0


def requests_get(hub, token, path):
    import requests

    r = requests.get(hub.url + path, headers={"PRIVATE-TOKEN": token}, timeout=30)
    r.raise_for_status()
    return r.json()
