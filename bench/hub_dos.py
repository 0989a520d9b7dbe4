#!/usr/bin/python3
"""Stress measurements of reef-hub under the hostile load of issue 9 (not part of the test
suite): peak RSS while signed-in users send 8 parallel 15 MB bodies of 5M empty JSON
objects, and the latency of a normal request while 2,000 idle or slowloris connections
are held (from 127.0.0.2-127.0.0.41, so the per-address limit is not what saves it).

    REEF_BUILD=build /usr/bin/python3 bench/hub_dos.py [--rounds N] [--conns N]
"""
import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests


def rss_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_hub(hub_bin, base):
    d = os.path.join(base, "hub")
    subprocess.run([hub_bin, "init", d], check=True, capture_output=True)
    subprocess.run([hub_bin, "user", "add", d, "alice"], check=True, capture_output=True)
    tok = subprocess.run([hub_bin, "token", "create", d, "alice"], check=True,
                         capture_output=True, text=True).stdout.strip()
    subprocess.run([hub_bin, "user", "add", d, "mallory"], check=True, capture_output=True)
    mtok = subprocess.run([hub_bin, "token", "create", d, "mallory"], check=True,
                          capture_output=True, text=True).stdout.strip()
    subprocess.run([hub_bin, "project", "create", d, "alice/p", "--visibility", "public",
                    "--owner", "alice"], check=True, capture_output=True)
    log = open(os.path.join(base, "hub.log"), "w")
    p = subprocess.Popen([hub_bin, "serve", d, "--listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    m = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", p.stdout.readline())
    return p, m.group(1), int(m.group(2)), tok, mtok


def normal_latency(url, tok, n=10):
    out = []
    for _ in range(n):
        t = time.time()
        try:
            r = requests.get(url + "/api/v4/projects/alice%2Fp", headers={"PRIVATE-TOKEN": tok},
                             timeout=10)
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        out.append((time.time() - t) if ok else float("inf"))
        time.sleep(0.1)
    return out


def memory_attack(p, url, mtok, rounds):
    body = b'{"ref":"main","x":[' + b",".join([b"{}"] * 5_000_000) + b"]}"
    codes = {}
    lock = threading.Lock()

    def one(route):
        for _ in range(rounds):
            try:
                r = requests.post(url + route, data=body, timeout=120, headers={
                    "PRIVATE-TOKEN": mtok, "Content-Type": "application/json"})
                c = r.status_code
            except requests.RequestException as e:
                c = type(e).__name__
            with lock:
                codes[c] = codes.get(c, 0) + 1
    routes = ["/api/v4/projects/alice%2Fp/pipeline", "/api/v4/projects",
              "/api/v4/projects/alice%2Fp/repository/commits"]
    ts = [threading.Thread(target=one, args=(routes[i % 3],)) for i in range(8)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.time() - t0, codes, len(body)


def hold(port, n, mode):
    socks = []
    for i in range(n):
        src = f"127.0.0.{2 + i % 40}"
        s = socket.socket()
        s.bind((src, 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    time.sleep(0.5)
    if mode == "slowloris":
        for s in socks:
            try:
                s.send(b"GET /api/v4/version HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
    return socks


def trickle(socks, stop):
    while not stop.is_set():
        for s in socks:
            try:
                s.send(b"X-a: b\r\n")
            except OSError:
                pass
        stop.wait(1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=2000)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hub_bin = os.path.join(os.environ.get("REEF_BUILD", "build"), "tools/hub/reef-hub")
    with tempfile.TemporaryDirectory() as base:
        p, url, port, tok, mtok = start_hub(hub_bin, base)
        try:
            base_rss = rss_kb(p.pid, "VmRSS")
            secs, codes, size = memory_attack(p, url, mtok, a.rounds)
            peak = rss_kb(p.pid, "VmHWM")
            after = rss_kb(p.pid, "VmRSS")
            print(f"memory attack: 8 clients x {a.rounds} rounds of {size / 1e6:.1f} MB bodies "
                  f"in {secs:.1f}s, answers {codes}")
            print(f"  hub RSS: before {base_rss / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                  f"after {after / 1024:.1f} MiB")
            for mode in ("idle", "slowloris"):
                socks = hold(port, a.conns, mode)
                stop = threading.Event()
                th = threading.Thread(target=trickle, args=(socks, stop))
                if mode == "slowloris":
                    th.start()
                time.sleep(1.0)
                lat = normal_latency(url, tok)
                n_threads = len(os.listdir(f"/proc/{p.pid}/task"))
                stop.set()
                if th.is_alive():
                    th.join()
                for s in socks:
                    s.close()
                ok = [x for x in lat if x != float("inf")]
                print(f"{mode}: {a.conns} connections held, hub threads {n_threads}, normal "
                      f"request: {len(ok)}/{len(lat)} answered, max "
                      f"{max(lat) * 1000:.0f} ms, median {sorted(lat)[len(lat) // 2] * 1000:.0f} ms")
                time.sleep(1.0)
            print(f"  hub peak RSS over the run: {rss_kb(p.pid, 'VmHWM') / 1024:.1f} MiB")
        finally:
            p.terminate()
            p.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
