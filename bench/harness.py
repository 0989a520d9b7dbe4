"""Processes and mounts the benchmark suite runs: reef-hub, reefd, bindfs, rclone.

Every process started is recorded (pid file under the run directory, so scripts/bench.sh
can clean up even if Python dies) and every mount is unmounted at exit. Everything binds
and connects to 127.0.0.1 only.
"""

import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from gen import git_env


class Registry:
    """Started processes and mounts, torn down in reverse order."""

    def __init__(self, run_dir):
        self.pid_file = Path(run_dir) / "pids"
        self.items = []

    def add(self, item):
        self.items.append(item)
        self._write()
        return item

    def remove(self, item):
        if item in self.items:
            self.items.remove(item)
        self._write()

    def _write(self):
        pids = [str(i.proc.pid) for i in self.items if getattr(i, "proc", None)]
        self.pid_file.write_text("\n".join(pids) + ("\n" if pids else ""))

    def close_all(self):
        for item in reversed(list(self.items)):
            try:
                item.stop()
            except Exception as e:  # keep tearing down the rest
                print(f"cleanup: {item!r}: {e}")
        self.items.clear()
        self._write()


def mounted(path):
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def wait_mounted(path, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if mounted(path):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError(f"{path} did not mount (exit {proc.poll()})")


def stop_proc(proc, timeout=15):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def unmount(path):
    if mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False,
                       stderr=subprocess.DEVNULL)


def proc_status_kib(pid, *fields):
    """Fields of /proc/<pid>/status counted in kB (VmHWM, RssAnon, ...), as a dict."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in fields:
                out[k] = int(v.split()[0])
    return out


class RssSampler(threading.Thread):
    """Samples a process's anonymous and file-backed resident memory every 20 ms.
    VmHWM (the kernel's peak) counts both; the file part of reefd's is mostly LMDB's
    memory map, i.e. page cache the kernel can take back, so the peaks are kept apart."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.done = threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.02):
            try:
                cur = proc_status_kib(self.pid, "RssAnon", "RssFile")
            except OSError:
                return
            for k, v in cur.items():
                self.peak[k] = max(self.peak[k], v)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


class Hub:
    def __init__(self, binary, base, reg):
        self.bin = str(binary)
        self.dir = Path(base) / "hub"
        self.log_path = Path(base) / "hub.log"
        self.reg = reg
        self.proc = None
        self.url = None

    def cli(self, *args):
        r = subprocess.run([self.bin, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"reef-hub {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self):
        if not self.dir.exists():
            self.cli("init", str(self.dir))
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([self.bin, "serve", str(self.dir), "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.reg.add(self)
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"reef-hub did not start; see {self.log_path}")

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    def stop(self):
        if self.proc:
            stop_proc(self.proc)
            self.proc.stdout.close()
            self.log.close()
            self.reg.remove(self)
            self.proc = None

    def user(self, name):
        self.cli("user", "add", str(self.dir), name)
        return self.cli("token", "create", str(self.dir), name).strip()

    def project(self, path, owner):
        self.cli("project", "create", str(self.dir), path, "--visibility", "private",
                 "--owner", owner)

    def git_url(self, path, token, base=None):
        u = urllib.parse.urlsplit(base or self.url)
        return f"{u.scheme}://bench:{token}@{u.netloc}/{path}.git"


class Reefd:
    """reefd in the foreground (so its pid is ours), mounted on base/mnt."""

    def __init__(self, binary, base, server, token, reg, cache=None, opts=""):
        self.bin = str(binary)
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.mnt = self.base / "mnt"
        self.mnt.mkdir(exist_ok=True)
        self.cache = Path(cache) if cache else self.base / "cache"
        self.token_file = self.base / "token"
        self.token_file.write_text(token + "\n")
        self.token_file.chmod(0o600)
        self.log_path = self.base / "reefd.log"
        self.server = server
        self.reg = reg
        self.opts = opts
        self.proc = None
        self.hwm_kib = None
        self.peak_kib = {}
        self.sampler = None

    def start(self):
        opts = f"server={self.server},token_file={self.token_file},cache={self.cache}"
        if self.opts:
            opts += "," + self.opts
        self.log = open(self.log_path, "a")
        t = time.perf_counter()
        self.proc = subprocess.Popen([self.bin, "-f", "-o", opts, str(self.mnt)],
                                     stdout=self.log, stderr=self.log)
        self.reg.add(self)
        wait_mounted(self.mnt, self.proc)
        self.mount_s = time.perf_counter() - t
        self.sampler = RssSampler(self.proc.pid)
        return self

    def hwm(self):
        if self.proc and self.proc.poll() is None:
            self.hwm_kib = proc_status_kib(self.proc.pid, "VmHWM").get("VmHWM")
        return self.hwm_kib

    def stop(self):
        if not self.proc:
            return
        self.hwm()
        self.peak_kib = self.sampler.stop() if self.sampler else {}
        unmount(self.mnt)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        self.log.close()
        self.reg.remove(self)
        self.proc = None
        if code != 0:
            raise RuntimeError(f"reefd exited {code}; see {self.log_path}")

    def __truediv__(self, other):
        return self.mnt / other


class Fg:
    """A foreground helper process (bindfs -f, rclone mount/serve) and its mount, if any."""

    def __init__(self, argv, reg, log_path, mnt=None):
        self.argv = [str(a) for a in argv]
        self.reg = reg
        self.mnt = Path(mnt) if mnt else None
        self.log_path = log_path
        self.proc = None

    def start(self):
        if self.mnt:
            self.mnt.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=self.log)
        self.reg.add(self)
        if self.mnt:
            wait_mounted(self.mnt, self.proc)
        return self

    def stop(self):
        if not self.proc:
            return
        if self.mnt:
            unmount(self.mnt)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        stop_proc(self.proc)
        if self.mnt and mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)
        self.log.close()
        self.reg.remove(self)
        self.proc = None


def wait_http(url, proc, timeout=10):
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def drop_caches():
    """Writes dirty pages, then drops the page cache, dentries and inodes (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def git(args, home, **kw):
    return subprocess.run(["git", *args], check=True, env=git_env(home),
                          stdout=subprocess.DEVNULL, **kw)
