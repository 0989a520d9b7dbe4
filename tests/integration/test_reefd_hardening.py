"""reefd start-up and control-file hardening (issue 9, items 9 and 10): a FIFO as
token_file is refused at once, an existing cache directory open to others is made 0700
(or refused when not ours), and .reef/ctl.error shows binary bytes escaped."""

import os
import stat
import subprocess
import time

from conftest import REEFD_BIN


def test_fifo_token_file_is_refused_at_once(hub, tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    t = time.time()
    r = subprocess.run([str(REEFD_BIN), "-f", "-o",
                        f"server={hub.url},token_file={fifo},cache={tmp_path / 'c'}", str(mnt)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "not a regular file" in r.stderr, r.stderr
    assert time.time() - t < 5


def test_cache_dir_made_private(hub, mount_factory, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/p", "alice")
    cache = tmp_path / "m" / "cache"
    cache.mkdir(parents=True)
    cache.chmod(0o755)
    m = mount_factory(hub, tok)
    assert m.cache == cache
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert "now 0700" in m.log_path.read_text()


def test_ctl_error_escapes_binary(hub, mount_factory):
    tok = hub.user("alice")
    m = mount_factory(hub, tok)
    fd = os.open(m.mnt / ".reef/ctl", os.O_WRONLY)
    try:
        os.write(fd, b"\xff\xfe\x1b[31m garbage")
    except OSError:
        pass
    os.close(fd)
    err = (m.mnt / ".reef/ctl.error").read_bytes()
    assert err.endswith(b"\n") and err.count(b"\n") == 1, err
    assert all(0x20 <= b < 0x7f for b in err[:-1]), err
    assert b"[31m garbage" in err
