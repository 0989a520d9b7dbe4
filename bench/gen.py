"""Deterministic data of the benchmark suite.

Everything is generated from fixed seeds and fixed commit dates, so two machines (or two
runs) build byte-identical repositories with identical commit ids. Each data set lives in
its own directory under the data root, named by a hash of its parameters and GEN_VERSION;
a complete directory carries a `.done` stamp and is reused by later runs.

- tree:    a repository of `files` small text files in a 4-level directory tree
           (10 x 10 x 10 directories, files spread evenly) and `commits` commits; the
           first adds every file, each later one appends a line to 25 files. Built with
           `git fast-import`, so 100k files and 500 commits take seconds, not minutes.
- dataset: `files` CSV files (weather-station readings) totalling about `mbytes` MB,
           sizes log-normally spread (a few above 1 MiB), in data/{train,valid,test}/;
           kept both as a plain directory (served over HTTP to rclone) and as a repository.
- big:     a repository holding one `mib` MiB file of random bytes as an ordinary blob.
- lfs:     a repository holding one `mib` MiB file of random bytes tracked by Git LFS
           (objects kept in the repository's .git/lfs for `git lfs push --all`).
"""

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
from pathlib import Path

GEN_VERSION = 1
EPOCH = 1_600_000_000  # commit dates start here, one hour apart
WORDS = ("data model train value sample batch epoch loss metric feature label index "
         "tensor layer weight input output config param stage result score split "
         "random seed vector matrix shape mean std norm scale offset window stride").split()
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Reef Bench", "GIT_AUTHOR_EMAIL": "bench@reef.invalid",
    "GIT_COMMITTER_NAME": "Reef Bench", "GIT_COMMITTER_EMAIL": "bench@reef.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


def git_env(home):
    e = dict(os.environ)
    e.update(GIT_ENV)
    e["HOME"] = str(home)
    e["GIT_AUTHOR_DATE"] = e["GIT_COMMITTER_DATE"] = f"{EPOCH} +0000"
    return e


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class DataSet:
    """One generated data set: a directory, its parameters and a completion stamp."""

    def __init__(self, root, kind, params):
        key = json.dumps({"v": GEN_VERSION, "kind": kind, **params}, sort_keys=True)
        self.dir = Path(root) / f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        self.params = params
        self.meta_path = self.dir / ".done"

    def ready(self):
        return self.meta_path.exists()

    @property
    def meta(self):
        return json.loads(self.meta_path.read_text())

    def fresh(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def finish(self, meta):
        self.meta_path.write_text(json.dumps(meta, indent=1))
        return meta


def text_blob(r, lines):
    return "".join(" ".join(r.choices(WORDS, k=r.randint(4, 14))) + "\n" for _ in range(lines))


def tree_paths(files):
    per_leaf = math.ceil(files / 1000)
    paths = []
    for a in range(10):
        for b in range(10):
            for c in range(10):
                for k in range(per_leaf):
                    if len(paths) < files:
                        paths.append(f"lib/module_{a:02d}/part_{b}/unit_{c}/record_{k:03d}.txt")
    return paths


def gen_tree(root, home, files, commits):
    ds = DataSet(root, "tree", {"files": files, "commits": commits})
    if ds.ready():
        return ds.meta
    ds.fresh()
    repo = ds.dir / "repo.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], env=git_env(home))
    r = random.Random(1001)
    paths = tree_paths(files)
    contents = [text_blob(r, r.randint(3, 12)).encode() for _ in paths]
    fi = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet"],
                          stdin=subprocess.PIPE, env=git_env(home))
    out = fi.stdin

    def data(b):
        out.write(b"data %d\n" % len(b))
        out.write(b)
        out.write(b"\n")

    for n in range(commits):
        when = EPOCH + n * 3600
        out.write(b"commit refs/heads/main\n")
        out.write(b"author Reef Bench <bench@reef.invalid> %d +0000\n" % when)
        out.write(b"committer Reef Bench <bench@reef.invalid> %d +0000\n" % when)
        if n == 0:
            data(b"Add the initial records\n")
            changed = range(len(paths))
        else:
            changed = sorted(set(r.randrange(len(paths)) for _ in range(25)))
            data(b"Update %d records (%d)\n" % (len(changed), n))
            for i in changed:
                contents[i] += text_blob(r, 1).encode()
        for i in changed:
            out.write(b"M 100644 inline %s\n" % paths[i].encode())
            data(contents[i])
    out.close()
    if fi.wait() != 0:
        raise RuntimeError("git fast-import failed for the tree repository")
    run(["git", "-C", str(repo), "gc", "-q"], env=git_env(home))
    small = paths[len(paths) // 2 + 321]
    return ds.finish({"repo": str(repo), "files": len(paths), "commits": commits,
                      "dirs": len({p.rsplit("/", i)[0] for p in paths for i in (1, 2, 3, 4)}),
                      "small_path": small, "small_size": len(contents[paths.index(small)])})


CONDITIONS = ["clear", "cloudy", "rain", "snow", "fog", "drizzle", "storm", "haze"]


def csv_file(r, path, size, station):
    lat, lon = r.uniform(-60, 70), r.uniform(-180, 180)
    t0 = EPOCH + r.randrange(0, 86400 * 365)
    temp, hum, pres = r.uniform(-10, 30), r.uniform(20, 90), r.uniform(990, 1030)
    rows = ["timestamp,station,latitude,longitude,temperature_c,humidity_pct,"
            "pressure_hpa,wind_mps,wind_deg,condition\n"]
    total = len(rows[0])
    i = 0
    gauss, choice, rint = r.gauss, r.choice, r.randrange
    while total < size:
        temp += gauss(0, 0.3)
        hum = min(100.0, max(0.0, hum + gauss(0, 1)))
        pres += gauss(0, 0.2)
        row = (f"{t0 + i * 60},{station},{lat:.5f},{lon:.5f},{temp:.2f},{hum:.1f},"
               f"{pres:.1f},{abs(gauss(4, 2)):.2f},{rint(360)},{choice(CONDITIONS)}\n")
        rows.append(row)
        total += len(row)
        i += 1
    path.write_text("".join(rows))
    return total


def gen_dataset(root, home, files, mbytes):
    ds = DataSet(root, "dataset", {"files": files, "mbytes": mbytes})
    if ds.ready():
        return ds.meta
    ds.fresh()
    r = random.Random(2002)
    weights = [r.lognormvariate(0, 1.1) for _ in range(files)]
    scale = mbytes * 1_000_000 / sum(weights)
    tree = ds.dir / "files"
    total = 0
    names = []
    for n, w in enumerate(weights):
        split = "train" if n % 6 < 4 else ("valid" if n % 6 == 4 else "test")
        rel = f"data/{split}/station-{n:04d}.csv"
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        total += csv_file(r, p, int(w * scale), f"ST{n:04d}")
        names.append(rel)
    (tree / "README.md").write_text("Weather station readings, one file per station.\n")
    work = ds.dir / "work"
    env = git_env(home)
    run(["git", "init", "-q", "-b", "main", str(work)], env=env)
    # The working tree is the plain directory served to rclone; git keeps its own copy.
    run(["git", "--work-tree", str(tree), "-C", str(work), "add", "-A"], env=env)
    run(["git", "--work-tree", str(tree), "-C", str(work), "commit", "-q", "-m",
         "Add the weather dataset"], env=env)
    repo = ds.dir / "repo.git"
    run(["git", "clone", "-q", "--bare", str(work), str(repo)], env=env)
    shutil.rmtree(work)
    return ds.finish({"repo": str(repo), "tree": str(tree), "files": len(names) + 1,
                      "bytes": total + len("Weather station readings, one file per station.\n"),
                      "large_files": sum(1 for p in tree.rglob("*.csv")
                                         if p.stat().st_size >= 1 << 20)})


def gen_dir1k(root, home, files=1000):
    """B10's directory: `files` small CSV files side by side in data/ (1-4 KB each)."""
    ds = DataSet(root, "dir1k", {"files": files})
    if ds.ready():
        return ds.meta
    ds.fresh()
    r = random.Random(1000)
    content = {}
    for n in range(files):
        rows = [f"{n},{i},{r.random():.6f},{r.randint(0, 99999)}\n"
                for i in range(r.randint(40, 160))]
        content[f"data/part-{n:04d}.csv"] = "id,row,value,count\n" + "".join(rows)
    work = small_repo(ds, home, content, "Add 1,000 small files")
    repo = ds.dir / "repo.git"
    run(["git", "clone", "-q", "--bare", work, str(repo)], env=git_env(home))
    shutil.rmtree(work)
    return ds.finish({"repo": str(repo), "files": files,
                      "bytes": sum(len(v) for v in content.values())})


def random_file(path, mib, seed):
    r = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(r.randbytes(1 << 20))


def gen_big(root, home, mib):
    ds = DataSet(root, "big", {"mib": mib})
    if ds.ready():
        return ds.meta
    ds.fresh()
    repo = ds.dir / "repo.git"
    env = git_env(home)
    run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], env=env)
    # Random bytes do not compress: store them, so neither side spends time deflating.
    fi = subprocess.Popen(["git", "-C", str(repo), "-c", "core.compression=0",
                           "-c", "pack.compression=0", "fast-import", "--quiet"],
                          stdin=subprocess.PIPE, env=env)
    out = fi.stdin
    out.write(b"blob\nmark :1\ndata %d\n" % (mib << 20))
    r = random.Random(3003)
    h = hashlib.sha1(b"blob %d\0" % (mib << 20))
    for _ in range(mib):
        chunk = r.randbytes(1 << 20)
        h.update(chunk)
        out.write(chunk)
    msg = b"Add a large binary file\n"
    out.write(b"\ncommit refs/heads/main\n"
              b"committer Reef Bench <bench@reef.invalid> %d +0000\ndata %d\n%s"
              b"M 100644 :1 big.bin\n\n" % (EPOCH, len(msg), msg))
    out.close()
    if fi.wait() != 0:
        raise RuntimeError("git fast-import failed for the big repository")
    return ds.finish({"repo": str(repo), "path": "big.bin", "size": mib << 20,
                      "oid": h.hexdigest()})


def gen_lfs(root, home, mib):
    ds = DataSet(root, "lfs", {"mib": mib})
    if ds.ready():
        return ds.meta
    ds.fresh()
    work = ds.dir / "work"
    env = git_env(home)
    run(["git", "init", "-q", "-b", "main", str(work)], env=env)
    run(["git", "-C", str(work), "lfs", "install", "--local"], env=env,
        stdout=subprocess.DEVNULL)
    (work / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    random_file(work / "lfs.bin", mib, 4004)
    h = hashlib.sha256()
    with open(work / "lfs.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    run(["git", "-C", str(work), "add", ".gitattributes", "lfs.bin"], env=env)
    run(["git", "-C", str(work), "commit", "-q", "-m", "Add a large LFS file"], env=env)
    # The clean filter copied the object into .git/lfs/objects; the work file is not needed.
    (work / "lfs.bin").unlink()
    return ds.finish({"repo": str(work), "path": "lfs.bin", "size": mib << 20,
                      "sha256": h.hexdigest()})


WAIT_MANIFEST = {
    "slug": "bench-wait", "name": "Benchmark wait", "type": "ALGORITHM",
    "description": "Sleeps a few seconds, so the benchmark can see its job running",
    "command": "sh wait.sh", "input_data_type": "TABULAR", "output_data_type": "MODEL",
    "parameters": [], "metrics": [],
}


def small_repo(ds, home, files, message):
    work = ds.dir / "work"
    env = git_env(home)
    run(["git", "init", "-q", "-b", "main", str(work)], env=env)
    for name, content in files.items():
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    run(["git", "-C", str(work), "add", "-A"], env=env)
    run(["git", "-C", str(work), "commit", "-q", "-m", message], env=env)
    return str(work)


def gen_experiment(root, home):
    """B8's two small repositories: a processor (code project whose job sleeps 3 s) and
    the data project experiments are launched on (one small CSV)."""
    ds = DataSet(root, "experiment", {})
    if ds.ready():
        return ds.meta
    ds.fresh()
    proc = DataSet(ds.dir, "proc", {})
    proc.fresh()
    data = DataSet(ds.dir, "data", {})
    data.fresh()
    r = random.Random(5005)
    csv = "x1,x2,label\n" + "".join(
        f"{a:.4f},{b:.4f},{int(a + b > 0)}\n"
        for a, b in ((r.gauss(0, 1), r.gauss(0, 1)) for _ in range(200)))
    return ds.finish({
        "proc_repo": small_repo(proc, home, {
            "processor.json": json.dumps(WAIT_MANIFEST, indent=1) + "\n",
            "wait.sh": "# Stays running long enough to be seen running, then writes a result.\n"
                       "sleep 3\nmkdir -p output && echo done > output/result.txt\n"},
            "Add the wait processor [skip ci]"),
        "data_repo": small_repo(data, home, {"data/train.csv": csv},
                                "Add a small dataset [skip ci]"),
        "slug": WAIT_MANIFEST["slug"]})
