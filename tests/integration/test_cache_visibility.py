"""What the cache holds, seen and emptied by a user (issue 11, item 8): `reef cache ls`
and .reef/cache.json list cached files by project/revision/path with their sizes,
`reef cache --evict-all` / `reef gc --all` empty it but for open files, `reef gc
acme/iris` forgets a whole project, `df` on the mount shows the cache's limit and use,
and cache_limit takes sizes with units (1GB, 1.5G)."""

import json
import time
import os
import subprocess

import pytest

from conftest import REEFD_BIN
from test_mount_data import push_repo, status
from test_reef_cli import cli_env, cli_mounts, is_mounted, reef  # noqa: F401 (fixtures)

MAIN = "alice/data/branches/main"


def listing(m):
    return json.loads((m.mnt / ".reef/cache.json").read_text())


def cached_paths(m):
    return {f["path"]: f for f in listing(m)["files"]}


@pytest.fixture
def data_repo(hub, tmp_path):
    token = hub.user("alice")
    hub.project("alice/data", "alice")
    hub.project("alice/other", "alice")
    # files of 300 KB and more: each read fetches that file alone (a small file's read
    # brings its directory's small files along)
    files = {f"data/f{i}.bin": os.urandom(300_000 + 1000 * i) for i in range(4)}
    files["big.bin"] = os.urandom(3 << 20)  # streamed, kept as a raw file
    push_repo(hub, token, "alice/data", files, tmp_path)
    other = {"o.bin": os.urandom(400_000)}
    push_repo(hub, token, "alice/other", other, tmp_path, name="src-other")
    return token, files, other


def test_list_evict_all_and_df(hub, data_repo, mount_factory, cli_env):
    token, files, _ = data_repo
    m = mount_factory(hub, token, "prefetch=0,cache_limit=1GB")
    assert status(m)["cache"]["limit"] == 1 << 30  # 1GB: powers of 1024, as documented
    assert cached_paths(m) == {}
    # size 0 as in /proc (the walk is not paid by stat), and read to the end all the same
    assert os.stat(m / ".reef/cache.json").st_size == 0
    with open(m / ".reef/cache.json", "rb") as f:
        assert json.loads(f.read())["limit"] == 1 << 30

    d = m / MAIN / "data"
    assert (d / "f1.bin").read_bytes() == files["data/f1.bin"]
    got = cached_paths(m)
    assert list(got) == [f"{MAIN}/data/f1.bin"], got
    f1 = got[f"{MAIN}/data/f1.bin"]
    assert f1["size"] == len(files["data/f1.bin"]) and f1["stored"] > 0
    assert f1["open"] is False and f1["kind"] == "blob"

    # the command line: the listing, filtered by a mount path or a mount-relative one
    r = reef(cli_env, "cache", "ls", cwd=m.mnt)
    assert r.returncode == 0, r
    assert f"{MAIN}/data/f1.bin" in r.stdout and "1 cached file," in r.stdout, r.stdout
    r = reef(cli_env, "cache", "ls", "--json", "alice/data", cwd=m.mnt)
    assert r.returncode == 0, r
    assert [(f["path"], f["size"]) for f in json.loads(r.stdout)["files"]] == \
        [(f"{MAIN}/data/f1.bin", len(files["data/f1.bin"]))]
    r = reef(cli_env, "cache", "--list", "alice/other", cwd=m.mnt)
    assert r.returncode == 0 and r.stdout.startswith("0 cached files"), r
    r = reef(cli_env, "cache", "ls", d)
    assert r.returncode == 0 and "data/f1.bin" in r.stdout, r

    # df: the cache's limit as the size, what it stores as used (4 KiB blocks)
    st = status(m)["cache"]
    sv = os.statvfs(m.mnt)
    assert sv.f_frsize == 4096
    assert abs(sv.f_blocks * sv.f_frsize - st["limit"]) < 4096
    assert abs((sv.f_blocks - sv.f_bfree) * sv.f_frsize - st["bytes"]) < 4096
    assert sv.f_bavail == sv.f_bfree
    df = subprocess.run(["df", "-B1", "--output=size,used", str(m.mnt)],
                        capture_output=True, text=True, check=True).stdout.split("\n")[1]
    size, used = map(int, df.split())
    assert size == sv.f_blocks * 4096 and used == (sv.f_blocks - sv.f_bfree) * 4096
    assert used >= st["bytes"] > 0

    # evict-all keeps what a reader has open, and drops the rest
    assert (m / MAIN / "data/f2.bin").read_bytes() == files["data/f2.bin"]
    with open(m / MAIN / "big.bin", "rb") as held:
        assert held.read(1 << 20) == files["big.bin"][:1 << 20]
        # the rest of big.bin may still be arriving: it is listed once stored
        deadline = time.monotonic() + 30
        while len(cached_paths(m)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(cached_paths(m)) == 3, cached_paths(m)
        r = reef(cli_env, "cache", "--evict-all", m.mnt)
        assert r.returncode == 0 and r.stdout.startswith("evicted: cache "), r
        got = cached_paths(m)
        assert list(got) == [f"{MAIN}/big.bin"], got
        assert got[f"{MAIN}/big.bin"]["open"] is True
        # the open file reads on, whole and right
        assert held.read() == files["big.bin"][1 << 20:]
    assert status(m)["cache"]["bytes"] < st["bytes"] + (3 << 20)
    r = reef(cli_env, "gc", "--all", cwd=m.mnt)
    assert r.returncode == 0, r
    assert listing(m)["files"] == [] and listing(m)["other"] == []
    r = reef(cli_env, "cache", "ls", cwd=m.mnt)
    assert r.stdout.startswith("0 cached files"), r.stdout
    # evicted files are fetched again on the next read, and right
    fetched = status(m)["cache"]["bytes_fetched"]
    assert (d / "f1.bin").read_bytes() == files["data/f1.bin"]
    assert status(m)["cache"]["bytes_fetched"] > fetched
    assert list(cached_paths(m)) == [f"{MAIN}/data/f1.bin"]


def test_gc_of_a_project_relative_to_the_mount(hub, data_repo, mount_factory, cli_env, tmp_path):
    token, files, other = data_repo
    m = mount_factory(hub, token, "prefetch=0")
    for i in range(3):
        assert (m / MAIN / f"data/f{i}.bin").read_bytes() == files[f"data/f{i}.bin"]
    assert (m / "alice/other/branches/main/o.bin").read_bytes() == other["o.bin"]
    assert len(cached_paths(m)) == 4

    # from the mount root, as the user types it
    r = reef(cli_env, "gc", "alice/data", cwd=m.mnt)
    assert r.returncode == 0 and r.stdout == "forgot alice/data\n", r
    assert list(cached_paths(m)) == ["alice/other/branches/main/o.bin"]
    # from a directory inside the mount, a path relative to the mount root
    assert (m / MAIN / "data/f0.bin").read_bytes() == files["data/f0.bin"]
    r = reef(cli_env, "gc", "alice/data/branches/main/data", cwd=m / "alice")
    assert r.returncode == 0, r
    assert list(cached_paths(m)) == ["alice/other/branches/main/o.bin"]
    # from outside, with the mount as DIR, and an absolute mount path; a namespace
    r = reef(cli_env, "gc", m.mnt, "alice", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "forgot alice\n", r
    assert cached_paths(m) == {}
    assert (m / "alice/other/branches/main/o.bin").read_bytes() == other["o.bin"]
    r = reef(cli_env, "gc", m / "alice/other", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "forgot alice/other\n", r
    assert cached_paths(m) == {}
    # a project nothing was read from, and one that does not exist
    r = reef(cli_env, "gc", m.mnt, "alice/nope", cwd=tmp_path)
    assert r.returncode == 1 and "No such file" in r.stderr, r


def test_cache_limit_sizes(hub, mount_factory, tmp_path):
    token = hub.user("bob")
    m = mount_factory(hub, token, "cache_limit=1.5G")
    assert status(m)["cache"]["limit"] == 3 << 29
    sv = os.statvfs(m.mnt)
    assert sv.f_blocks * sv.f_frsize == 3 << 29
    m2 = mount_factory(hub, token, "cache_limit=512MiB", name="m2")
    assert status(m2)["cache"]["limit"] == 512 << 20
    # bad values: refused before mounting, with the reason and the accepted forms
    (tmp_path / "bad").mkdir()
    for value, why in [("1XB", "not a size"), ("0", "zero"),
                       ("1.G", "not a size"), ("99999999999T", "too large")]:
        r = subprocess.run([str(REEFD_BIN), "-f", "-o",
                            f"server={hub.url},cache_limit={value}", str(tmp_path / "bad")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (value, r)
        assert f"cache_limit={value}: {why}" in r.stderr and "1.5G, 1GB" in r.stderr, r.stderr
    r = subprocess.run([str(REEFD_BIN), "--help"], capture_output=True, text=True)
    assert "1GB = 2^30 bytes" in r.stdout + r.stderr


def test_reef_mount_takes_sizes_with_units(hub, cli_env, cli_mounts, tmp_path):  # noqa: F811
    token = hub.user("carol")
    r = reef(cli_env, "login", hub.url, input=token + "\n")
    assert r.returncode == 0, r
    mnt = tmp_path / "r"
    cli_mounts.append(mnt)
    r = reef(cli_env, "mount", "-o", "cache_limit=1GB", mnt)
    assert r.returncode == 0, r
    assert status_of(mnt)["cache"]["limit"] == 1 << 30
    r = reef(cli_env, "cache", mnt)
    assert r.returncode == 0 and "of 1073741824 bytes" in r.stdout, r.stdout
    assert reef(cli_env, "unmount", mnt).returncode == 0
    # a bad size fails the mount, with reefd's reason
    r = reef(cli_env, "mount", "-o", "cache_limit=lots", mnt)
    assert r.returncode == 1 and not is_mounted(mnt), r
    assert "cache_limit=lots: not a size" in r.stderr, r.stderr


def status_of(mnt):
    return json.loads((mnt / ".reef/status").read_text())
