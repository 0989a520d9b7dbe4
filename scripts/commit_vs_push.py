#!/usr/bin/env python3
"""Rough comparison behind docs/write.md's choice: publishing N CSV files into a branch
through GitLab's commits API (one POST with a create action per file) vs reef's way
(cp into the branch view + reef commit: a pack pushed with receive-pack), against one
reef-hub. Usage: scripts/commit_vs_push.py [BUILD_DIR] [FILES] [KB_PER_FILE]"""
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness as H  # noqa: E402

build = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build")
files = int(sys.argv[2]) if len(sys.argv) > 2 else 100
kb = int(sys.argv[3]) if len(sys.argv) > 3 else 800
work = Path(tempfile.mkdtemp(prefix="reef-cvp-"))
reg = H.Registry(work)
try:
    hub = H.Hub(build / "tools/hub/reef-hub", work, reg).start()
    tok = hub.user("u")
    home = work / "home"
    home.mkdir()
    for p in ("u/api", "u/push"):
        hub.project(p, "u")
    src = work / "src"
    H.git(["init", "-q", "-b", "main", str(src)], home)
    (src / "README").write_text("x\n")
    H.git(["-C", str(src), "add", "-A"], home)
    H.git(["-C", str(src), "commit", "-qm", "init"], home)
    for p in ("u/api", "u/push"):
        H.git(["-C", str(src), "push", "-q", hub.git_url(p, tok), "main"], home)
    r = random.Random(3)
    data = {}
    for n in range(files):
        rows, size = [], 0
        while size < kb * 1000:
            row = f"{size},{r.random():.6f},{r.random():.6f}"
            rows.append(row)
            size += len(row) + 1
        data[f"pub/part-{n:03d}.csv"] = "\n".join(rows) + "\n"
    body = json.dumps({"branch": "main", "commit_message": "api", "actions": [
        {"action": "create", "file_path": k, "content": v} for k, v in data.items()]}).encode()
    t = time.perf_counter()
    req = urllib.request.Request(hub.url + "/api/v4/projects/u%2Fapi/repository/commits",
                                 data=body, method="POST",
                                 headers={"PRIVATE-TOKEN": tok,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            api_s, api_status = time.perf_counter() - t, resp.status
    except urllib.error.HTTPError as e:
        api_s, api_status = time.perf_counter() - t, e.code
    except urllib.error.URLError as e:  # the server stopped reading an oversize body
        api_s, api_status = time.perf_counter() - t, f"refused: {e.reason}"
    m = H.Reefd(build / "daemon/reefd", work / "m", hub.url, tok, reg).start()
    view = m.mnt / "u/push/branches/main"
    view.stat()
    t = time.perf_counter()
    for k, v in data.items():
        (view / k).parent.mkdir(exist_ok=True)
        (view / k).write_text(v)
    cp_s = time.perf_counter() - t
    out = subprocess.run([str(build / "tools/reef/reef"), "commit", "-m", "push", str(view)],
                         capture_output=True, text=True)
    push_s = time.perf_counter() - t
    m.stop()
    print(json.dumps({"files": files, "bytes": sum(map(len, data.values())),
                      "api_body_bytes": len(body), "commits_api_s": round(api_s, 3),
                      "commits_api_status": api_status, "reef_cp_s": round(cp_s, 3),
                      "reef_cp_and_commit_s": round(push_s, 3),
                      "reef_commit_ok": out.returncode == 0}))
finally:
    reg.close_all()
    shutil.rmtree(work, ignore_errors=True)
