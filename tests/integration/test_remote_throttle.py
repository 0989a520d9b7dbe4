"""Throttling and patience of reefd's GitLab client (daemon/remote/http.c), and GitLab's
facts the mount must show right, against the misbehaving fake GitLab of
test_cache_layer.py: long Retry-After waited within the retry budget (retry_max), longer
ones failed at once, pacing by RateLimit-Remaining/RateLimit-Reset, a server that answers
rel="next" for ever, a server that accepts and never answers (status and cached paths
still answer), empty repositories (no HEAD), stats=false on commit requests."""

import errno
import json
import os
import threading
import time
import types

import pytest

from test_cache_layer import Fake, Live, closing

TOKEN = "fake-token-abcdefghijklmnop"
TREE = "/api/v4/projects/5/repository/tree"


@pytest.fixture
def fake():
    f = Fake()
    yield f
    if f.hang is not None:
        f.hang.set()
    f.close()


@pytest.fixture
def live_factory():
    yield from closing(Live)


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_long_retry_after_is_waited(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", TOKEN)
    fake.behaviour["/api/v4/projects/acme%2Fcats"] = "retry-after:3"
    t0 = time.monotonic()
    assert live.ok("project", "acme/cats") == "5 main"
    assert time.monotonic() - t0 >= 2.9
    assert fake.hits["/api/v4/projects/acme%2Fcats"] == 2
    live.close()


def test_retry_after_beyond_the_budget_fails_at_once(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", TOKEN)
    fake.behaviour["/api/v4/projects/acme%2Fcats"] = "retry-after:600"
    t0 = time.monotonic()
    assert live.cmd("project", "acme/cats") == ("err", "EIO")
    assert time.monotonic() - t0 < 2
    assert fake.hits["/api/v4/projects/acme%2Fcats"] == 1
    assert "more than the retry budget" in live.close()


def test_ratelimit_headers_pace_requests(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", TOKEN)
    fake.behaviour["/api/v4/user"] = "ratelimit:2"
    assert live.ok("user")
    # the quota is spent until the reset: the next request waits for it
    t0 = time.monotonic()
    assert live.ok("project", "acme/cats") == "5 main"
    assert time.monotonic() - t0 >= 1.0
    live.close()


def test_endless_pagination_ends_quickly_in_bounded_memory(fake, live_factory, tmp_path):
    live = live_factory(fake.url, tmp_path / "cache", TOKEN)
    c = live.ok("resolve", 5, "branch", "main")
    fake.behaviour[TREE] = "endless"
    t0 = time.monotonic()
    assert live.cmd("ls", 5, c, "/") == ("err", "EIO")
    took = time.monotonic() - t0
    pages = fake.hits[TREE]
    hwm = vm_hwm_kib(live.proc.pid)
    err = live.close()
    assert "pagination goes on" in err or "more than" in err
    # the caps: GL_TREE_MAX items, that / 100 a page + 10 pages, 64 MiB of JSON, 60 s
    assert pages <= 262144 // 100 + 11
    assert took < 30, took
    assert hwm < 256 * 1024, f"peak RSS {hwm} KiB"
    print(f"endless pagination: {pages} pages in {took:.1f} s, peak RSS {hwm // 1024} MiB")


def mount_fake(fake, mount_factory, opts=""):
    return mount_factory(types.SimpleNamespace(url=fake.url), TOKEN, opts)


def test_retry_max_option_bounds_the_wait(fake, mount_factory):
    m = mount_fake(fake, mount_factory, "retry_max=2")
    tags = "/api/v4/projects/5/repository/tags"
    fake.behaviour[tags] = "retry-after:5"
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        os.listdir(m.mnt / "acme/cats/tags")
    assert e.value.errno == errno.EIO
    assert time.monotonic() - t0 < 2
    assert fake.hits[tags] == 1
    fake.hits[tags] = 0
    fake.behaviour[tags] = "retry-after:1"  # within the budget: waited, then answered
    t0 = time.monotonic()
    assert os.listdir(m.mnt / "acme/cats/tags") == []
    assert time.monotonic() - t0 >= 0.9 and fake.hits[tags] == 2


def test_empty_repository_has_no_head(fake, mount_factory):
    m = mount_fake(fake, mount_factory)
    assert sorted(os.listdir(m.mnt / "acme")) == ["cats", "empty"]
    # GitLab says default_branch "main" and empty_repo true: no HEAD, no branches
    assert "HEAD" not in os.listdir(m.mnt / "acme/empty")
    assert not os.path.lexists(m.mnt / "acme/empty/HEAD")
    assert os.listdir(m.mnt / "acme/empty/branches") == []
    assert os.readlink(m.mnt / "acme/cats/HEAD") == "branches/main"


def test_dot_named_paths_are_shown(fake, mount_factory):
    m = mount_fake(fake, mount_factory)
    root = sorted(os.listdir(m.mnt))
    assert root == [".hidden", ".reef", "acme"]  # .reef once: the mount's own
    assert os.listdir(m.mnt / ".hidden") == [".dotfiles"]
    assert "branches" in os.listdir(m.mnt / ".hidden/.dotfiles")
    assert os.readlink(m.mnt / ".hidden/.dotfiles/HEAD") == "branches/main"
    assert "status" in os.listdir(m.mnt / ".reef")


def test_job_artifacts_answered_206(fake, mount_factory):
    m = mount_fake(fake, mount_factory)
    arts = m.mnt / "acme/cats/pipelines/11/jobs/build/artifacts"
    assert (arts / "out/result.txt").read_text() == "done\n"


def test_commit_requests_skip_stats(fake, mount_factory):
    m = mount_fake(fake, mount_factory)
    root = m.mnt / "acme/cats/commits" / Fake.COMMIT
    assert (root / "good.txt").read_bytes() == fake.files["good.txt"]
    asked = fake.queries[f"/api/v4/projects/5/repository/commits/{Fake.COMMIT}"]
    assert asked and all("stats=false" in q for q in asked)


def timed(fn):
    t0 = time.monotonic()
    v = fn()
    return v, time.monotonic() - t0


def test_hung_server_blocks_neither_status_nor_cached_paths(fake, mount_factory):
    m = mount_fake(fake, mount_factory)
    cached = m.mnt / "acme/cats/commits" / Fake.COMMIT / "good.txt"
    assert cached.read_bytes() == fake.files["good.txt"]
    fake.hang = threading.Event()  # from now on: accepted, never answered
    results = {}

    def listing():
        try:
            results["ls"] = os.listdir(m.mnt / "acme/cats/tags")
        except OSError as e:
            results["ls"] = e.errno

    t = threading.Thread(target=listing)
    t.start()
    time.sleep(0.5)  # the listing waits on the server now
    for _ in range(3):
        st, took = timed(lambda: json.loads((m.mnt / ".reef/status").read_text()))
        assert took < 1, f".reef/status took {took:.1f} s"
        assert st["server"] == fake.url
        data, took = timed(cached.read_bytes)
        assert data == fake.files["good.txt"] and took < 1, f"cached read took {took:.1f} s"
    assert t.is_alive()
    fake.hang.set()
    t.join(30)
    assert not t.is_alive()
