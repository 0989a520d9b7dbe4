"""reef's benchmark suite: workloads B1-B13 of DESIGN.md and the issues, side by side with their contenders.

Run it through scripts/bench.sh (which installs the contenders and builds a release build).
Every workload interleaves reef and its contenders run by run, so a ratio compares numbers
taken under the same machine conditions; the table shows medians and the ratio of medians.
Raw numbers go to bench/results/<timestamp>.json.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

import gen
import harness as H
from proxy import CountingProxy

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "full": {"runs": 5, "tree_files": 100_000, "tree_commits": 500, "ds_files": 900,
             "ds_mbytes": 80, "big_mib": 1024, "pub_files": 100, "pub_mbytes": 80,
             "pub_lfs_mib": 512},
    "quick": {"runs": 3, "tree_files": 10_000, "tree_commits": 50, "ds_files": 90,
              "ds_mbytes": 8, "big_mib": 128, "pub_files": 100, "pub_mbytes": 8,
              "pub_lfs_mib": 64},
}
MIB = 1 << 20


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, **kw):
    """Runs a shell command, returns its wall time in seconds."""
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, **kw)
    return time.perf_counter() - t


def cat_cmd(path):
    return f"cat '{path}' > /dev/null"


def read_tree_cmd(d, prune_git=False):
    prune = f"-path '{d}/.git' -prune -o " if prune_git else ""
    return f"find '{d}' {prune}-type f -print0 | xargs -0 -r cat > /dev/null"


def stat_tree_cmd(d):
    # find stats every entry to print its size, mode and mtime: one lstat per entry.
    return f"find '{d}' -printf '%s %m %T@\\n' > /dev/null"


def med(xs):
    return statistics.median(xs) if xs else None


class Suite:
    def __init__(self, args):
        self.args = args
        self.sz = dict(SIZES["quick" if args.quick else "full"])
        if args.runs:
            self.sz["runs"] = args.runs
        self.runs = self.sz["runs"]
        self.work = Path(args.workdir)
        self.data_root = self.work / "data"
        self.home = self.work / "home"
        self.run_dir = self.work / "run"
        self.build = Path(args.build)
        self.hub_bin = self.build / "tools" / "hub" / "reef-hub"
        self.reefd_bin = self.build / "daemon" / "reefd"
        self.results = {}
        self.hwm = {}
        self.notes = []
        self.load = {}
        self.reg = None

    # ---- setup ---------------------------------------------------------------------------

    def needs(self, *wids):
        only = set(self.args.only.split(",")) if self.args.only else None
        return only is None or any(w in only for w in wids)

    def prepare(self):
        for d in (self.data_root, self.home):
            d.mkdir(parents=True, exist_ok=True)
        if self.run_dir.exists():
            with open("/proc/self/mountinfo") as f:
                stale = [line.split()[4] for line in f
                         if line.split()[4].startswith(str(self.run_dir) + "/")]
            for m in stale:
                subprocess.run(["fusermount3", "-uz", m], check=False)
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        self.reg = H.Registry(self.run_dir)
        t = time.perf_counter()
        log("generating data (reused when already generated)")
        sz = self.sz
        # only what the chosen workloads read (a B12/B13 run needs no 1 GiB blob)
        self.tree = self.ds = self.big = self.dir1k = None
        if self.needs("B3", "B4", "B3cold", "B12"):
            self.tree = gen.gen_tree(self.data_root, self.home, sz["tree_files"],
                                     sz["tree_commits"])
        if self.needs("B5", "B11"):
            self.ds = gen.gen_dataset(self.data_root, self.home, sz["ds_files"],
                                      sz["ds_mbytes"])
        if self.needs("B1", "B2", "B6"):
            self.big = gen.gen_big(self.data_root, self.home, sz["big_mib"])
        if self.needs("B10"):
            self.dir1k = gen.gen_dir1k(self.data_root, self.home)
        if self.needs("B12"):
            self.pub = gen_publish(self.data_root, sz["pub_files"], sz["pub_mbytes"],
                                   sz["pub_lfs_mib"])
        log(f"data ready in {time.perf_counter() - t:.1f} s")

    def start_hub(self):
        t = time.perf_counter()
        self.hub = H.Hub(self.hub_bin, self.run_dir, self.reg).start()
        self.token = self.hub.user("bench")
        self.header_file = self.run_dir / "auth.hdr"
        self.header_file.write_text(f"PRIVATE-TOKEN: {self.token}\n")
        self.header_file.chmod(0o600)
        for name, meta in (("tree", self.tree), ("dataset", self.ds), ("big", self.big),
                           ("dir1k", self.dir1k)):
            if meta is None:
                continue
            self.hub.project(f"bench/{name}", "bench")
            H.git(["-C", meta["repo"], "push", "-q", self.hub.git_url(f"bench/{name}", self.token),
                   "main"], self.home)
        log(f"hub up at {self.hub.url}, pushed tree, dataset and big in "
            f"{time.perf_counter() - t:.1f} s")

    def api(self, route, method="GET", body=None, headers=None):
        h = {"PRIVATE-TOKEN": self.token}
        h.update(headers or {})
        req = urllib.request.Request(self.hub.url + route, data=body, headers=h, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()

    def mount(self, name, server=None, cache=None, opts=""):
        base = self.run_dir / name
        if base.exists():
            shutil.rmtree(base)
        return H.Reefd(self.reefd_bin, base, server or self.hub.url, self.token, self.reg,
                       cache=cache, opts=opts).start()

    def unmount(self, m, workload, keep=False):
        m.stop()
        self.hwm.setdefault(workload, []).append((m.hwm_kib, m.peak_kib))
        if not keep:
            shutil.rmtree(m.base, ignore_errors=True)

    def record(self, wid, **kw):
        """Stores a workload's numbers. Each ratio names two series measured run by run;
        its value is the ratio of their medians, and "paired" the median of the per-run
        ratios (less sensitive to the machine's load drifting during the workload)."""
        spec = kw.pop("ratios", {})
        kw["ratios"] = {n: med(kw[a]) / med(kw[b]) for n, (a, b) in spec.items()}
        kw["paired"] = {n: med([x / y for x, y in zip(kw[a], kw[b])])
                        for n, (a, b) in spec.items()}
        kw["ratios"].update(kw.pop("value", {}))
        self.results[wid] = kw
        return kw

    # ---- workloads -----------------------------------------------------------------------

    def b4(self):
        """Cold cat of one small file vs git clone, through the byte-counting proxy."""
        log(f"B4: cold cat of one file of {self.tree['files']} vs git clone ({self.runs} runs)")
        proxy = CountingProxy(self.hub.port)
        path = self.tree["small_path"]
        want = subprocess.run(["git", "-C", self.tree["repo"], "cat-file", "blob", f"main:{path}"],
                              check=True, capture_output=True).stdout
        url = self.hub.git_url("bench/tree", self.token, proxy.url)
        clone_t, clone_b, cat_t, cat_b, mount_t, first_b = [], [], [], [], [], []
        base = self.run_dir / "b4"
        base.mkdir()
        try:
            for i in range(self.runs):
                dst = base / f"clone{i}"
                proxy.reset()
                t = time.perf_counter()
                H.git(["clone", "-q", url, str(dst)], self.home)
                clone_t.append(time.perf_counter() - t)
                clone_b.append(proxy.snapshot()["total"])
                if i:
                    shutil.rmtree(base / f"clone{i - 1}")
                proxy.reset()
                m = self.mount(f"b4-reefd{i}", server=proxy.url)
                mount_t.append(m.mount_s)
                first_b.append(proxy.snapshot()["total"])
                f = m / f"bench/tree/branches/main/{path}"
                t = time.perf_counter()
                got = subprocess.run(["cat", str(f)], check=True, capture_output=True).stdout
                cat_t.append(time.perf_counter() - t)
                cat_b.append(proxy.snapshot()["total"])
                if got != want:
                    raise RuntimeError(f"B4: {f} read wrong bytes")
                self.unmount(m, "B4")
        finally:
            proxy.close()
        self.native_checkout = base / f"clone{self.runs - 1}"
        return self.record(
            "B4", workload=f"cold cat of one {len(want)} B file, repo of {self.tree['files']} "
            f"files and {self.tree['commits']} commits",
            reef_s=cat_t, clone_s=clone_t, reef_bytes=cat_b, clone_bytes=clone_b,
            mount_s=mount_t, mount_bytes=first_b,
            ratios={"time (reef/clone)": ("reef_s", "clone_s"),
                    "bytes (reef/clone)": ("reef_bytes", "clone_bytes")},
            targets={"time (reef/clone)": ("<=", 0.05), "bytes (reef/clone)": ("<=", 0.01)},
            note="reef bytes include reefd's start-up request (GET /user); times exclude "
            "mounting (median %.3f s)" % med(mount_t))

    def b3(self):
        """find + stat over the tree: caches dropped ("warm"), then again at once ("repeat")."""
        native = self.native_checkout / "lib"
        log(f"B3: find + stat over {self.tree['files']} files ({self.runs} runs)")
        m = self.mount("b3-reefd")
        reef = m / "bench/tree/branches/main/lib"
        # The first pass fills reefd's cache with everything the command needs (listings,
        # and whatever a stat costs); timed, it is the cold case, from the hub.
        prime_s = sh(stat_tree_cmd(reef))
        n_reef = len(subprocess.run(["find", str(reef)], check=True, capture_output=True)
                     .stdout.splitlines())
        n_native = len(subprocess.run(["find", str(native)], check=True, capture_output=True)
                       .stdout.splitlines())
        if n_reef != n_native:
            raise RuntimeError(f"B3: reefd shows {n_reef} entries, the checkout {n_native}")
        nw, nr, nr2, rw, rr, rr2 = [], [], [], [], [], []
        for i in range(self.runs):
            for d, warm, rep, rep2 in ((native, nw, nr, nr2),
                                       (reef, rw, rr, rr2))[:: 1 if i % 2 == 0 else -1]:
                H.drop_caches()
                warm.append(sh(stat_tree_cmd(d)))
                rep.append(sh(stat_tree_cmd(d)))
                rep2.append(sh(stat_tree_cmd(d)))
        self.unmount(m, "B3")
        return self.record(
            "B3", workload=f"find + stat over {n_reef} entries", entries=n_reef,
            reef_cold_from_hub_s=prime_s, native_warm_s=nw, reef_warm_s=rw, native_repeat_s=nr,
            reef_repeat_s=rr, native_repeat2_s=nr2, reef_repeat2_s=rr2,
            ratios={"warm (native/reef)": ("native_warm_s", "reef_warm_s"),
                    "repeat (native/reef)": ("native_repeat_s", "reef_repeat_s"),
                    "second repeat (native/reef)": ("native_repeat2_s", "reef_repeat2_s")},
            targets={"warm (native/reef)": (">=", 0.5)},
            note="warm: reefd's cache holds every listing, page cache, dentries and inodes "
            "dropped before the run on both sides; repeat: the same command again at once; "
            "second repeat (information): once more. The kernel marks a FUSE directory's "
            "atime stale after every listing it fetched, so the first repeat asks for each "
            "directory's attributes again (one request per directory), the second does not")

    def b3_cold(self):
        """find + stat over the whole tree from an empty cache vs git clone --depth 1."""
        log(f"B3 cold: find + stat over {self.tree['files']} files from an empty cache vs "
            f"git clone --depth 1 ({self.runs} runs)")
        url = self.hub.git_url("bench/tree", self.token)
        base = self.run_dir / "b3cold"
        base.mkdir()
        reef_t, clone_t, trees_t, gitfetch_t, entries = [], [], [], [], None
        for i in range(self.runs):
            # the tree fetch alone, by git itself: what the git program would cost reefd
            gdir = base / "gitfetch"
            H.git(["init", "-q", "--bare", str(gdir)], self.home)
            t = time.perf_counter()
            H.git(["-C", str(gdir), "fetch", "-q", "--depth", "1", "--filter=blob:none", url,
                   "main"], self.home)
            gitfetch_t.append(time.perf_counter() - t)
            shutil.rmtree(gdir)
            m = self.mount(f"b3cold-reefd{i}")
            reef = m / "bench/tree/branches/main"
            t = time.perf_counter()
            os.listdir(reef)  # the project, the branch, and every tree in one git fetch
            trees_t.append(time.perf_counter() - t)
            H.drop_caches()
            reef_t.append(sh(stat_tree_cmd(reef)))
            if entries is None:
                entries = len(subprocess.run(["find", str(reef)], check=True,
                                             capture_output=True).stdout.splitlines())
            remote = json.loads((m / ".reef/status").read_text())["cache"].get("remote", {})
            self.unmount(m, "B3 cold")
            dst = base / "clone"
            H.drop_caches()
            t = time.perf_counter()
            H.git(["clone", "-q", "--depth", "1", url, str(dst)], self.home)
            clone_t.append(time.perf_counter() - t)
            shutil.rmtree(dst)
        return self.record(
            "B3 cold", workload=f"find + stat over {entries} entries, empty cache",
            reef_s=reef_t, clone_s=clone_t, remote=remote, reef_trees_s=trees_t,
            git_treefetch_s=gitfetch_t,
            ratios={"reef/(clone --depth 1)": ("reef_s", "clone_s"),
                    "reefd's tree fetch / git fetch --filter=blob:none (info)":
                    ("reef_trees_s", "git_treefetch_s")},
            targets={"reef/(clone --depth 1)": ("<=", 1.0)},
            note="reefd: trees in one protocol v2 fetch (blob:none, depth 1), sizes over "
            "GraphQL a directory at a time; the clone writes every file")

    def b10(self):
        """ls -l then cat of every file of a cold 1,000-file directory: requests counted."""
        n = self.dir1k["files"]
        log(f"B10: ls -l + read of a cold {n}-file directory, requests ({self.runs} runs)")
        proxy = CountingProxy(self.hub.port)
        url = self.hub.git_url("bench/dir1k", self.token, proxy.url)
        want = None
        reqs, reef_t, clone_reqs, clone_t = [], [], [], []
        base = self.run_dir / "b10"
        base.mkdir()
        try:
            for i in range(self.runs):
                proxy.reset()
                m = self.mount(f"b10-reefd{i}", server=proxy.url)
                d = m / "bench/dir1k/branches/main/data"
                t = time.perf_counter()
                listing = subprocess.run(["ls", "-l", str(d)], check=True, capture_output=True,
                                         text=True).stdout.splitlines()
                sh(f"cat '{d}'/* > /dev/null")
                reef_t.append(time.perf_counter() - t)
                reqs.append(proxy.snapshot()["requests"])
                if len(listing) != n + 1:
                    raise RuntimeError(f"B10: ls -l shows {len(listing) - 1} files, not {n}")
                if want is None:
                    want = tree_sums(d)
                self.unmount(m, "B10")
                dst = base / "clone"
                proxy.reset()
                t = time.perf_counter()
                H.git(["clone", "-q", "--depth", "1", url, str(dst)], self.home)
                sh(read_tree_cmd(dst, prune_git=True))
                clone_t.append(time.perf_counter() - t)
                clone_reqs.append(proxy.snapshot()["requests"])
                if tree_sums(dst / "data") != want:
                    raise RuntimeError("B10: reefd's directory differs from the clone")
                shutil.rmtree(dst)
        finally:
            proxy.close()
        return self.record(
            "B10", workload=f"ls -l + read of a cold {n}-file directory (requests)",
            reef_requests=reqs, clone_requests=clone_reqs, reef_s=reef_t, clone_s=clone_t,
            value={"requests, mount included": float(med(reqs)),
                   "requests of git clone --depth 1 + read (info)": float(med(clone_reqs))},
            targets={"requests, mount included": ("<=", 30)},
            note="counted by the suite's proxy (request lines on the wire), from reefd's "
            "start (GET /user) to the last byte read")

    def b11(self):
        """B5's dataset read cold through 20 ms of latency each way vs clone + read."""
        log(f"B11: cold read of {self.ds['files']} files through +20 ms each way "
            f"({self.runs} runs)")
        proxy = CountingProxy(self.hub.port, delay_s=0.020, log=True)
        url = self.hub.git_url("bench/dataset", self.token, proxy.url)
        base = self.run_dir / "b11"
        base.mkdir()
        reef_t, clone_t, reef_r, clone_r = [], [], [], []
        reef_tl = clone_tl = None
        try:
            for i in range(self.runs):
                dst = base / "clone"
                proxy.reset()
                t = time.perf_counter()
                H.git(["clone", "-q", "--depth", "1", url, str(dst)], self.home)
                sh(read_tree_cmd(dst, prune_git=True))
                clone_t.append(time.perf_counter() - t)
                clone_r.append(proxy.snapshot()["requests"])
                clone_tl = proxy.timeline()
                shutil.rmtree(dst)
                m = self.mount(f"b11-reefd{i}", server=proxy.url)
                d = m / "bench/dataset/branches/main"
                proxy.reset()
                reef_t.append(sh(read_tree_cmd(d)))
                reef_r.append(proxy.snapshot()["requests"])
                reef_tl = proxy.timeline()
                self.unmount(m, "B11")
        finally:
            proxy.close()
        return self.record(
            "B11", workload=f"cold read of {self.ds['files']} files, +20 ms each way",
            reef_s=reef_t, clone_total_s=clone_t, reef_requests=reef_r, clone_requests=clone_r,
            reef_timeline=reef_tl, clone_timeline=clone_tl,
            ratios={"reef/(clone --depth 1 + read)": ("reef_s", "clone_total_s")},
            targets={"reef/(clone --depth 1 + read)": ("<=", 0.5)},
            note="the same proxy holds every byte 20 ms in each direction for both; mount "
            "start-up excluded for reefd; the timelines are the last run's requests "
            "(proxy.timeline: start = request line sent, end = last answer byte received)")

    def b5(self):
        """Cold read of every file of the CSV dataset vs clone --depth 1 + read, vs rclone."""
        log(f"B5: cold read of {self.ds['files']} files, {self.ds['bytes'] / 1e6:.0f} MB "
            f"({self.runs} runs)")
        base = self.run_dir / "b5"
        base.mkdir()
        rc_conf = base / "rclone.conf"
        rc_conf.write_text("")
        port = free_port()
        serve = H.Fg(["rclone", "serve", "http", self.ds["tree"], "--addr", f"127.0.0.1:{port}",
                      "--read-only", "--config", rc_conf], self.reg, base / "rclone-serve.log")
        serve.start()
        H.wait_http(f"http://127.0.0.1:{port}/", serve.proc)
        url = self.hub.git_url("bench/dataset", self.token)
        clone_t, read_t, reef_t, rclone_t = [], [], [], []
        sums = None
        for i in range(self.runs):
            dst = base / "clone"
            t = time.perf_counter()
            H.git(["clone", "-q", "--depth", "1", url, str(dst)], self.home)
            clone_t.append(time.perf_counter() - t)
            read_t.append(sh(read_tree_cmd(dst, prune_git=True)))
            if sums is None:
                sums = tree_sums(dst, prune_git=True)
            shutil.rmtree(dst)

            m = self.mount(f"b5-reefd{i}")
            d = m / "bench/dataset/branches/main"
            reef_t.append(sh(read_tree_cmd(d)))
            if i == 0 and tree_sums(d) != sums:
                raise RuntimeError("B5: reefd's dataset differs from the clone")
            self.unmount(m, "B5")

            rmnt = base / "rclone-mnt"
            rc = H.Fg(["rclone", "mount", ":http:", rmnt, "--http-url", f"http://127.0.0.1:{port}/",
                       "--read-only", "--config", rc_conf, "--cache-dir", base / "rclone-cache"],
                      self.reg, base / "rclone-mount.log", mnt=rmnt).start()
            rclone_t.append(sh(read_tree_cmd(rmnt)))
            if i == 0 and tree_sums(rmnt) != sums:
                raise RuntimeError("B5: the rclone mount differs from the clone")
            rc.stop()
            shutil.rmtree(base / "rclone-cache", ignore_errors=True)
        serve.stop()
        clone_total = [a + b for a, b in zip(clone_t, read_t)]
        return self.record(
            "B5", workload=f"cold read of {self.ds['files']} files, {self.ds['bytes'] / 1e6:.0f} MB",
            reef_s=reef_t, clone_s=clone_t, clone_read_s=read_t, clone_total_s=clone_total,
            rclone_s=rclone_t,
            ratios={"reef/(clone --depth 1 + read)": ("reef_s", "clone_total_s"),
                    "rclone/reef": ("rclone_s", "reef_s")},
            targets={"reef/(clone --depth 1 + read)": ("<=", 0.5), "rclone/reef": (">=", 1.0)},
            note="each side lists and reads the tree with find | xargs cat; mount start-up "
            "excluded for reefd and rclone (serve http from the same files)")

    def big_cold(self, wid, project, path, size, curl_args, note):
        """Cold reads of a large file through fresh reefd caches vs curl of the same bytes.
        The last mount is kept (its cache holds the object) and returned."""
        log(f"{wid}: cold read of {size // MIB} MiB {path} vs curl ({self.runs} runs)")
        reef_t, curl_t, sha_t = [], [], []
        m = None
        for i in range(self.runs):
            # DESIGN's B6 contender is a verifying reader, curl | sha256sum; B6-blob's
            # (information) is curl alone
            curl_t.append(sh("set -o pipefail; curl -sS -f " + curl_args +
                             (" | sha256sum > /dev/null" if wid == "B6" else " -o /dev/null"),
                             executable="/bin/bash"))
            if m:
                self.unmount(m, wid)
            m = self.mount(f"{wid.lower()}-reefd{i}")
            f = m / f"bench/{project}/branches/main/{path}"
            try:
                shown = os.stat(f).st_size
            except OSError as e:
                shown = f"stat failing ({e.strerror})"
            if shown != size:
                self.unmount(m, wid)
                return None, f"reefd shows {path} with {shown} bytes, not {size}"
            reef_t.append(sh(cat_cmd(f)))
            if wid == "B6":
                # The floor of any reader that verifies before the last byte: hashing the
                # object alone, from the page cache, on one core (SHA-256 cannot be split).
                sha_t.append(sh(f"openssl dgst -sha256 '{stored_object(m.cache, size)}' "
                                "> /dev/null"))
        ratios = {"curl/reef": ("curl_s", "reef_s")}
        extra = {}
        if sha_t:
            ratios["bound: curl/sha256 of the object"] = ("curl_s", "sha256_s")
            extra["sha256_s"] = sha_t
        res = self.record(wid, workload=f"cold read of a {size // MIB} MiB {note}",
                          reef_s=reef_t, curl_s=curl_t, ratios=ratios, **extra,
                          targets={"curl/reef": (">=", 0.9)} if wid == "B6" else {},
                          note="fresh reefd cache each run; B6: curl | sha256sum, B6-blob: "
                          "curl -o /dev/null; reefd "
                          "stores and verifies the object; sha256: openssl dgst of the "
                          "stored object, from the page cache")
        return m, res

    def b1_b2(self, m):
        """Sequential read of the cached object: reefd, the cache file itself, bindfs over it."""
        size = self.big["size"]
        reef = m / "bench/big/branches/main/big.bin"
        native = stored_object(m.cache, size)
        bmnt = self.run_dir / "b1-bindfs"
        bind = H.Fg(["bindfs", "-f", "-r", native.parent, bmnt], self.reg,
                    self.run_dir / "bindfs.log", mnt=bmnt).start()
        viab = bmnt / native.name
        log(f"B1: read of the cached {size // MIB} MiB object, page cache dropped ({self.runs} runs)")
        order = [("native", native), ("reef", reef), ("bindfs", viab)]
        t = {k: [] for k, _ in order}
        for i in range(self.runs):
            for k, p in order[i % 3:] + order[: i % 3]:
                H.drop_caches()
                t[k].append(sh(cat_cmd(p)))
        self.record("B1", workload=f"sequential read of a cached {size // MIB} MiB object, "
                    "page cache dropped", reef_s=t["reef"], native_s=t["native"],
                    bindfs_s=t["bindfs"],
                    ratios={"native/reef": ("native_s", "reef_s"),
                            "bindfs/reef": ("bindfs_s", "reef_s")},
                    targets={"native/reef": (">=", 0.6), "bindfs/reef": (">=", 1.0)},
                    note=f"native = reefd's cache file {native.relative_to(m.cache)}; bindfs -r "
                    "over its directory; reads with cat")
        log(f"B2: re-read, kernel cache kept ({self.runs} runs)")
        for _, p in order:
            sh(cat_cmd(p))
        t = {k: [] for k, _ in order}
        for i in range(self.runs):
            for k, p in order[i % 3:] + order[: i % 3]:
                t[k].append(sh(cat_cmd(p)))
        bind.stop()
        # with passthrough the kernel reads the cache file itself (root, Linux 6.9+)
        pt = json.loads((m / ".reef/status").read_text()).get("passthrough")
        self.record("B2", workload="re-read of the same file, kernel cache kept",
                    passthrough=pt,
                    reef_s=t["reef"], native_s=t["native"], bindfs_s=t["bindfs"],
                    ratios={"native/reef": ("native_s", "reef_s"),
                            "bindfs/reef": ("bindfs_s", "reef_s")},
                    targets={"native/reef": (">=", 0.9)})

    def lfs_ready(self):
        """Whether the hub answers the LFS batch API (pushes the LFS data set if so)."""
        self.hub.project("bench/lfs", "bench")
        body = json.dumps({"operation": "download", "transfers": ["basic"],
                           "objects": [{"oid": "0" * 64, "size": 1}]}).encode()
        try:
            self.lfs_batch(body)
        except urllib.error.HTTPError as e:
            return False, f"the hub's LFS batch API answers {e.code}"
        return True, ""

    def lfs_batch(self, body):
        import base64
        auth = base64.b64encode(f"bench:{self.token}".encode()).decode()
        req = urllib.request.Request(
            self.hub.url + "/bench/lfs.git/info/lfs/objects/batch", data=body, method="POST",
            headers={"Accept": "application/vnd.git-lfs+json",
                     "Content-Type": "application/vnd.git-lfs+json",
                     "Authorization": f"Basic {auth}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def b6(self):
        ok, why = self.lfs_ready()
        if not ok:
            self.record("B6", workload=f"cold read of a {self.sz['big_mib']} MiB LFS object", missing=why)
            log(f"B6: not measurable: {why}")
            return
        lfs = gen.gen_lfs(self.data_root, self.home, self.sz["big_mib"])
        url = self.hub.git_url("bench/lfs", self.token)
        H.git(["-C", lfs["repo"], "push", "-q", url, "main"], self.home)
        H.git(["-C", lfs["repo"], "lfs", "push", "--all", url, "main"], self.home)
        obj = self.lfs_batch(json.dumps({
            "operation": "download", "transfers": ["basic"],
            "objects": [{"oid": lfs["sha256"], "size": lfs["size"]}]}).encode())["objects"][0]
        dl = obj["actions"]["download"]
        hdr = self.run_dir / "lfs.hdr"
        hdr.write_text("".join(f"{k}: {v}\n" for k, v in dl.get("header", {}).items()))
        hdr.chmod(0o600)
        self.big_lfs = lfs
        m, res = self.big_cold("B6", "lfs", lfs["path"], lfs["size"], f"-H @{hdr} '{dl['href']}'",
                               "LFS object")
        if m is None:
            self.record("B6", workload=f"cold read of a {self.sz['big_mib']} MiB LFS object", missing=res)
            log(f"B6: not measurable: {res}")
            return
        self.unmount(m, "B6")

    def b8(self):
        """Launch through experiments/launch; time until the hub shows the job running."""
        ex = gen.gen_experiment(self.data_root, self.home)
        for name, repo in (("wait", ex["proc_repo"]), ("exp", ex["data_repo"])):
            self.hub.project(f"bench/{name}", "bench")
            H.git(["-C", repo, "push", "-q", self.hub.git_url(f"bench/{name}", self.token),
                   "main"], self.home)
        m = self.mount("b8-reefd")
        launch = m / "bench/exp/experiments/launch"
        if not os.path.exists(launch):
            self.unmount(m, "B8")
            self.record("B8", workload="write to experiments/launch -> job running",
                        missing="reefd has no experiments/launch control file yet")
            log("B8: not measurable: no experiments/launch in the mount")
            return
        try:
            self.api("/api/v1/code-projects/bench%2Fwait/publish", "POST",
                     json.dumps({"ref": "main"}).encode(),
                     {"Content-Type": "application/json"})
        except urllib.error.HTTPError as e:
            self.unmount(m, "B8")
            self.record("B8", workload="write to experiments/launch -> job running",
                        missing=f"publishing a processor failed: {e.code} {e.read()[:200]!r}")
            return
        log(f"B8: experiments/launch -> job running ({self.runs} runs)")
        write_t, run_t = [], []
        for i in range(self.runs):
            name = f"b8-{i}"
            t0 = time.perf_counter()
            fd = os.open(launch, os.O_WRONLY)
            try:
                os.write(fd, f"name={name}\nprocessor={ex['slug']}\ninput_path=data\n".encode())
            finally:
                os.close(fd)
            write_t.append(time.perf_counter() - t0)
            job = self.wait_job(name, ("running",), t0 + 60)
            run_t.append(time.perf_counter() - t0)
            self.wait_job(name, ("success", "failed", "canceled"), t0 + 120)
            if job is None:
                raise RuntimeError(f"B8: the job of {name} was never seen running")
        self.unmount(m, "B8")
        self.record("B8", workload="write to experiments/launch -> job running",
                    reef_write_s=write_t, reef_s=run_t,
                    value={"median s": med(run_t)}, targets={"median s": ("<=", 1.0)},
                    note="from open() of the control file to the hub's jobs API showing the "
                    "job running (polled every 5 ms); processor job: sh wait.sh (sleep 3)")

    def b8_two_hubs(self):
        """B8 with the management service beside a GitLab: a second reef-hub runs
        `serve --gitlab <hub A>`, reefd mounts A with -o mgmt=<B>; the launch goes through
        B's GitLab calls (commit, pipeline) and the job runs on A's runner. Own hubs and
        mount in a temporary directory (bench/b8_launch.py --two-hubs)."""
        import b8_launch
        log(f"B8 two hubs: experiments/launch via reef-hub --gitlab -> job running "
            f"({max(self.runs, 5)} runs)")
        res = b8_launch.run_standalone(self.build, max(self.runs, 5), two_hubs=True, log=log)
        self.record("B8 two hubs", workload="write to experiments/launch -> job running, "
                    "service beside a GitLab", reef_write_s=res["write_s"],
                    reef_s=res["latency_s"], value={"median s": res["median_s"]},
                    targets={"median s": ("<=", 1.0)},
                    note="hub A plays GitLab (its runner), hub B serve --gitlab A, reefd "
                    "server=A,mgmt=B; from open() of the control file to A's jobs API "
                    "showing the launch's job past pending (polled every 5 ms); no-op "
                    "processor")

    def wait_job(self, name, states, deadline):
        ref = f"experiment/{name}"
        while time.perf_counter() < deadline:
            _, _, body = self.api("/api/v4/projects/bench%2Fexp/jobs?per_page=20")
            for j in json.loads(body):
                if j.get("ref") == ref and j.get("status") in states:
                    return j
            time.sleep(0.005)
        return None

    def b12(self):
        """Publishing a dataset into a branch of the large repository: cp into the mount +
        reef commit, vs git clone --depth 1 --filter=blob:none + cp + git add + commit +
        push with git-lfs, against the same hub. Each run a new branch off main."""
        pub, runs = self.pub, min(self.runs, 3)
        reef_bin = self.build / "tools" / "reef" / "reef"
        url = self.hub.git_url("bench/tree", self.token)
        env = gen.git_env(self.home)
        subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        log(f"B12: publish {pub['files']} CSV files ({pub['csv_bytes'] / 1e6:.0f} MB) + one "
            f"{pub['lfs_mib']} MiB LFS file into a branch of bench/tree ({runs} runs)")
        reef_t, git_t = [], []
        for i in range(runs):
            for who in ("reef", "git"):
                branch = f"b12-{who}-{i}-{int(time.time())}"
                H.git(["-C", self.tree["repo"], "push", "-q", url, f"main:refs/heads/{branch}"],
                      self.home)
                if who == "reef":
                    m = self.mount("b12")
                    dst = m.mnt / "bench/tree/branches" / branch
                    os.stat(dst)  # the branch view resolved before the clock starts
                    t = time.perf_counter()
                    subprocess.run(f"cp -r {pub['dir']}/. '{dst}/'", shell=True, check=True)
                    r = subprocess.run([str(reef_bin), "commit", "-m", "publish", str(dst)],
                                       capture_output=True, text=True)
                    reef_t.append(time.perf_counter() - t)
                    if r.returncode != 0:
                        raise RuntimeError(f"B12: reef commit failed: {r.stderr}")
                    self.unmount(m, "B12")
                else:
                    work = self.run_dir / "b12-git"
                    shutil.rmtree(work, ignore_errors=True)
                    t = time.perf_counter()
                    subprocess.run(["git", "clone", "-q", "--depth", "1", "--filter=blob:none",
                                    "-b", branch, url, str(work)], env=env, check=True)
                    subprocess.run(f"cp -r {pub['dir']}/. '{work}/'", shell=True, check=True)
                    for cmd in (["add", "-A"], ["commit", "-qm", "publish"],
                                ["push", "-q", "origin", branch]):
                        subprocess.run(["git", "-C", str(work), *cmd], env=env, check=True,
                                       stdout=subprocess.DEVNULL)
                    git_t.append(time.perf_counter() - t)
                    shutil.rmtree(work, ignore_errors=True)
                self.check_published(branch, env)
                log(f"  run {i + 1} {who}: {(reef_t if who == 'reef' else git_t)[-1]:.2f} s")
        self.record("B12", workload=f"publish {pub['files']} CSV files "
                    f"({pub['csv_bytes'] / 1e6:.0f} MB) + one {pub['lfs_mib']} MiB LFS file "
                    "into a branch", reef_s=reef_t, git_s=git_t,
                    ratios={"reef/git": ("reef_s", "git_s")},
                    targets={"reef/git": ("<=", 1.0)},
                    note="reef: cp -r into branches/<b>/ + reef commit (mount up, branch "
                    "resolved); git: clone --depth 1 --filter=blob:none + cp -r + add + commit "
                    "+ push (git-lfs uploads the .bin); .gitattributes tracks *.bin in both")

    def check_published(self, branch, env):
        """The branch holds the files, the LFS file as a pointer (spot check)."""
        url = self.hub.git_url("bench/tree", self.token)
        work = self.run_dir / "b12-check"
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--filter=blob:none",
                        "--no-checkout", "-b", branch, url, str(work)], env=env, check=True)
        ls = subprocess.run(["git", "-C", str(work), "ls-tree", "-r", "--name-only", "HEAD"],
                            env=env, check=True, capture_output=True, text=True).stdout.split()
        ptr = subprocess.run(["git", "-C", str(work), "cat-file", "-p", "HEAD:pub/model.bin"],
                             env=env, check=True, capture_output=True, text=True).stdout
        shutil.rmtree(work, ignore_errors=True)
        if sum(1 for f in ls if f.startswith("pub/") and f.endswith(".csv")) != self.pub["files"]:
            raise RuntimeError(f"B12: branch {branch} lacks the CSV files")
        if not ptr.startswith("version https://git-lfs"):
            raise RuntimeError(f"B12: pub/model.bin of {branch} is not an LFS pointer")

    def b13(self):
        """Sequential write of 1 GiB into a branch view's overlay vs the same write to a
        directory of the same disk (dd, 1 MiB blocks, fsync at the end)."""
        runs = min(self.runs, 3)
        name = "bench/b13"
        if not getattr(self, "b13_project", False):
            self.hub.project(name, "bench")
            src = self.run_dir / "b13-src"
            H.git(["init", "-q", "-b", "main", str(src)], self.home)
            (src / "README").write_text("b13\n")
            H.git(["-C", str(src), "add", "-A"], self.home)
            H.git(["-C", str(src), "commit", "-qm", "b13"], self.home)
            H.git(["-C", str(src), "push", "-q", self.hub.git_url(name, self.token), "main"],
                  self.home)
            self.b13_project = True
        log(f"B13: sequential write of 1 GiB, overlay vs native ({runs} runs)")
        reef_t, native_t = [], []
        native = self.run_dir / "b13-native"
        native.mkdir(exist_ok=True)
        dd = "dd if=/dev/zero of='{}' bs=1M count=1024 conv=fsync status=none"
        # On this VM the first GiB written after a while costs 3-6x (memory the guest had
        # not touched, whichever side writes it), and the deletion of the other side's
        # GiB (ext4 `discard`) slows the write after it: one untimed native write first,
        # each side deletes its own file, and the order alternates run by run.
        sh(dd.format(native / "warm.bin"))
        (native / "warm.bin").unlink()

        def overlay_run():
            m = self.mount("b13", opts="cache_limit=8G")
            dst = m.mnt / name / "branches/main"
            os.stat(dst)
            reef_t.append(sh(dd.format(dst / "b13.bin")))
            if (dst / "b13.bin").stat().st_size != 1 << 30:
                raise RuntimeError("B13: the overlay file is not 1 GiB")
            (dst / "b13.bin").unlink()
            self.unmount(m, "B13")

        def native_run():
            native_t.append(sh(dd.format(native / "b13.bin")))
            (native / "b13.bin").unlink()

        for i in range(runs):
            for f in ((overlay_run, native_run) if i % 2 == 0 else (native_run, overlay_run)):
                f()
            log(f"  run {i + 1}: overlay {reef_t[-1]:.2f} s, native {native_t[-1]:.2f} s")
        shutil.rmtree(native, ignore_errors=True)
        self.record("B13", workload="sequential write of 1 GiB (dd bs=1M conv=fsync)",
                    reef_s=reef_t, native_s=native_t,
                    ratios={"native/reef": ("native_s", "reef_s")},
                    targets={"native/reef": (">=", 0.7)},
                    note="throughput ratio: the overlay's speed as a fraction of a native "
                    "write to the same disk (run directory)")

    def b7(self):
        per, anon, filed = {}, {}, {}
        for w, vs in self.hwm.items():
            per[w] = max((h for h, _ in vs if h is not None), default=None)
            anon[w] = max((p.get("RssAnon", 0) for _, p in vs), default=None)
            filed[w] = max((p.get("RssFile", 0) for _, p in vs), default=None)
        peak = max((v for v in per.values() if v is not None), default=None)
        self.record("B7", workload="reefd peak resident memory (VmHWM) through B1-B11",
                    per_workload_kib=per, peak_kib=peak, sampled_peak_anon_kib=anon,
                    sampled_peak_file_kib=filed,
                    value={"peak MiB": peak / 1024 if peak else None},
                    targets={"peak MiB": ("<=", 64)})

    # ---- driver --------------------------------------------------------------------------

    def run(self):
        only = set(self.args.only.split(",")) if self.args.only else None
        want = (lambda w: only is None or w in only)
        t0 = time.perf_counter()
        try:
            self.prepare()
            self.start_hub()
            if want("B4") or want("B3"):
                self.guard("B4", self.b4)
                if want("B3"):
                    self.guard("B3", self.b3)
            if want("B3cold"):
                self.guard("B3 cold", self.b3_cold)
            if want("B5"):
                self.guard("B5", self.b5)
            if want("B10"):
                self.guard("B10", self.b10)
            if want("B11"):
                self.guard("B11", self.b11)
            if want("B1") or want("B2") or want("B6"):
                def big():
                    m, res = self.big_cold(
                        "B6-blob", "big", "big.bin", self.big["size"],
                        f"-H @{self.header_file} '{self.hub.url}/api/v4/projects/"
                        f"bench%2Fbig/repository/blobs/{self.big['oid']}/raw'",
                        "ordinary git blob")
                    if m is None:
                        raise RuntimeError(res)
                    self.guard("B1", lambda: self.b1_b2(m))
                    self.unmount(m, "B1/B2")
                self.guard("B6-blob", big)
                self.guard("B6", self.b6)
            if want("B8"):
                self.guard("B8", self.b8)
                self.guard("B8 two hubs", self.b8_two_hubs)
            if want("B12"):
                self.guard("B12", self.b12)
            if want("B13"):
                self.guard("B13", self.b13)
            self.b7()
        finally:
            if self.reg:
                self.reg.close_all()
        self.elapsed = time.perf_counter() - t0

    def guard(self, wid, fn):
        load = os.getloadavg()[0]
        try:
            fn()
        except Exception as e:
            traceback.print_exc()
            self.results.setdefault(wid, {})["error"] = f"{type(e).__name__}: {e}"
            self.notes.append(f"{wid} failed: {e}")
        # Other work on the machine shows up as noise; keep a trace of it with the numbers.
        self.load[wid] = (round(load, 2), round(os.getloadavg()[0], 2))


def gen_publish(root, files, mbytes, lfs_mib):
    """B12's dataset: files CSV files of mbytes MB in all and one lfs_mib MiB binary, under
    pub/, with a .gitattributes tracking *.bin with LFS. Kept and reused."""
    import random
    d = root / f"publish-{files}-{mbytes}-{lfs_mib}"
    meta = {"dir": str(d), "files": files, "lfs_mib": lfs_mib}
    done = d / ".done"
    if not done.exists():
        shutil.rmtree(d, ignore_errors=True)
        (d / "pub").mkdir(parents=True)
        r = random.Random(1212)
        per = mbytes * 1_000_000 // files
        for n in range(files):
            rows, size = ["id,x,y,label"], 0
            while size < per:
                row = f"{size},{r.random():.6f},{r.random():.6f},{r.randrange(10)}"
                rows.append(row)
                size += len(row) + 1
            (d / "pub" / f"part-{n:03d}.csv").write_text("\n".join(rows) + "\n")
        with open(d / "pub" / "model.bin", "wb") as f:
            for _ in range(lfs_mib):
                f.write(r.randbytes(1 << 20))
        (d / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
        done.write_text("ok\n")
    meta["csv_bytes"] = sum(p.stat().st_size for p in (d / "pub").glob("*.csv"))
    return meta


def stored_object(cache, size, timeout=120):
    """The file in which reefd's cache holds the object of that size, once stored: the
    reader that streamed it may finish before the object is verified and moved out of
    tmp/, so wait for it."""
    deadline = time.time() + timeout
    while True:
        found = [p for p in cache.rglob("*") if p.is_file() and "tmp" not in
                 p.relative_to(cache).parts[:1] and p.stat().st_size == size]
        if len(found) == 1:
            return found[0]
        if time.time() > deadline:
            raise RuntimeError(f"no single stored {size} B object in {cache}: {found}")
        time.sleep(0.2)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree_sums(d, prune_git=False):
    out = {}
    for dirpath, dirs, files in os.walk(d):
        if prune_git and ".git" in dirs and Path(dirpath) == Path(d):
            dirs.remove(".git")
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(d))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def machine():
    def first(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    mem = first("awk '/MemTotal/ {print $2}' /proc/meminfo")
    return {
        "nproc": os.cpu_count(),
        "cpu": first("awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo"),
        "memory_gib": round(int(mem) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "os": first(". /etc/os-release && echo $PRETTY_NAME"),
        "disk": first("lsblk -ndo NAME,SIZE,ROTA,TYPE $(findmnt -no SOURCE -T /var/tmp)"),
        "fs": first("findmnt -no FSTYPE,SOURCE,OPTIONS -T /var/tmp"),
        "versions": {k: first(c) for k, c in {
            "git": "git --version", "rclone": "rclone version | head -1",
            "bindfs": "bindfs --version | head -1", "curl": "curl --version | head -1",
            "libfuse": "fusermount3 --version", "python": f"{sys.executable} --version"}.items()},
        "reef_commit": os.environ.get("REEF_BENCH_REV") or first(f"git -C {ROOT} rev-parse HEAD"),
        "reef_dirty": False if os.environ.get("REEF_BENCH_REV") else
        bool(first(f"git -C {ROOT} status --porcelain -- daemon fs lib tools include")),
        "build": os.environ.get("REEF_BUILD"),
    }


def verdict(ratio, target):
    if ratio is None or target is None:
        return ""
    op, val = target
    ok = ratio <= val if op == "<=" else ratio >= val
    return "met" if ok else "MISSED"


def fmt_s(xs):
    return f"{med(xs):.3f} s" if xs else "-"


def table(suite):
    rows = []
    for wid in ("B1", "B2", "B3", "B3 cold", "B4", "B5", "B6", "B6-blob", "B7", "B8",
                "B8 two hubs", "B10", "B11", "B12", "B13"):
        r = suite.results.get(wid)
        if r is None:
            continue
        if "missing" in r or "error" in r:
            why = r.get("missing") or r.get("error")
            rows.append((wid, r.get("workload", ""), "not measurable", "", "", "",
                         why if len(why) < 90 else why[:87] + "..."))
            continue
        for name, ratio in r.get("ratios", {}).items():
            tgt = r.get("targets", {}).get(name)
            paired = r.get("paired", {}).get(name)
            rows.append((wid, r["workload"], name,
                         f"{ratio:.3f}" if isinstance(ratio, float) else str(ratio),
                         f"{paired:.3f}" if paired is not None else "",
                         f"{tgt[0]} {tgt[1]}" if tgt else "(info)", verdict(ratio, tgt)))
    head = ("id", "workload", "ratio", "medians", "paired", "target", "")
    w = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w[i]) for i, c in enumerate(row)).rstrip()
             for row in [head] + rows]
    return "\n".join(lines)


def medians(suite):
    out = []
    for wid, r in suite.results.items():
        for k, v in r.items():
            if k.endswith("_s") and isinstance(v, list) and v:
                out.append(f"{wid:8} {k:24} median {med(v):8.3f} s  (runs: "
                           + ", ".join(f"{x:.3f}" for x in v) + ")")
            elif k.endswith("_requests") and isinstance(v, list) and v:
                out.append(f"{wid:8} {k:24} median {med(v):8.0f}")
            elif k.endswith("_bytes") and isinstance(v, list) and v:
                out.append(f"{wid:8} {k:24} median {med(v):12.0f} B")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, smaller data")
    ap.add_argument("--runs", type=int, help="runs per measurement (default 5, quick 3)")
    ap.add_argument("--only", help="comma-separated workloads, e.g. B1,B3")
    ap.add_argument("--workdir", default=os.environ.get("REEF_BENCH_DIR", "/var/tmp/reef-bench"))
    ap.add_argument("--build", default=os.environ.get("REEF_BUILD", str(ROOT / "build-bench")))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (B1 and B3 drop the page cache)")
    suite = Suite(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        suite.run()
    finally:
        out = {"started": started.isoformat(timespec="seconds"),
               "command": os.environ.get("REEF_BENCH_CMD") or " ".join(sys.argv),
               "mode": "quick" if args.quick else "full",
               "sizes": suite.sz, "machine": machine(),
               "elapsed_s": getattr(suite, "elapsed", None), "results": suite.results,
               "loadavg_1min_before_after": suite.load,
               "notes": suite.notes}
        res_dir = ROOT / "bench" / "results"
        res_dir.mkdir(exist_ok=True)
        path = res_dir / (started.strftime("%Y%m%dT%H%M%SZ") + ".json")
        path.write_text(json.dumps(out, indent=1, default=str))
        if suite.results:
            print()
            print(medians(suite))
            print()
            print(table(suite))
        print(f"\nraw results: {path}  (total {out['elapsed_s'] or 0:.0f} s)")
    sys.exit(1 if suite.notes else 0)


if __name__ == "__main__":
    main()
