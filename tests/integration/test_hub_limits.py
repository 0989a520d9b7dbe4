"""Hostile input and resource caps on reef-hub: a job printing without end keeps its
trace at the cap (and still succeeds), pagination with absurd numbers, traversal in file
and artifact paths, NUL, deep JSON, oversize bodies and headers get clear errors."""

import socket
import time

import requests

from test_hub_authz import _wait
from test_hub_ci import push_files

CI = """
loud:
  script:
    - yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 20000000
    - echo after-the-flood > done.txt
  artifacts:
    paths: [done.txt]
"""


def test_trace_is_capped_and_job_goes_on(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/loud", "alice")
    push_files(hub, tok, "alice/loud", {".gitlab-ci.yml": CI}, tmp_path)
    h = {"PRIVATE-TOKEN": tok}
    api = hub.url + "/api/v4/projects/alice%2Floud"
    r = requests.post(api + "/pipeline", headers=h, json={"ref": "main"}, timeout=30)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    st = _wait(lambda: (s := requests.get(f"{api}/pipelines/{pid}", headers=h,
                                          timeout=30).json()["status"])
               in ("success", "failed") and s, timeout=120)
    job = requests.get(f"{api}/pipelines/{pid}/jobs", headers=h, timeout=30).json()[0]
    trace = requests.get(f"{api}/jobs/{job['id']}/trace", headers=h, timeout=30).text
    assert st == "success", trace[-2000:]
    assert len(trace) <= (4 << 20) + 4096, len(trace)
    assert "Job's log exceeded limit of 4194304 bytes" in trace
    r = requests.get(f"{api}/jobs/{job['id']}/artifacts/done.txt", headers=h, timeout=30)
    assert r.status_code == 200 and r.text == "after-the-flood\n"


def test_hostile_parameters(hub, tmp_path):
    tok = hub.user("alice")
    hub.project("alice/p", "alice")
    push_files(hub, tok, "alice/p", {"a.txt": "a\n"}, tmp_path)
    h = {"PRIVATE-TOKEN": tok}
    api = hub.url + "/api/v4"
    for q in ("page=1000000000000000000000000000000", "per_page=-1", "page=-5&per_page=0",
              "per_page=99999999999999999999999", "page=abc"):
        r = requests.get(f"{api}/projects?{q}", headers=h, timeout=30)
        assert r.status_code == 200, (q, r.text)
        assert int(r.headers["X-Per-Page"]) <= 100
    r = requests.get(f"{api}/projects?page=1000000000000000000000000000000", headers=h,
                     timeout=30)
    assert r.json() == []
    for path in ("..%2Fa.txt", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                 "a.txt%00.png", "a%2F..%2F..%2Fa.txt"):
        r = requests.get(f"{api}/projects/alice%2Fp/repository/files/{path}/raw?ref=main",
                         headers=h, timeout=30)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert "root:" not in r.text
    for pid in ("..%2F..%2Fetc", "alice%2F..%2Fp", "%00", "alice%2Fp%00"):
        r = requests.get(f"{api}/projects/{pid}", headers=h, timeout=30)
        assert r.status_code in (400, 404), (pid, r.status_code)
    # deep JSON and an oversize body
    deep = "[" * 100000 + "]" * 100000
    r = requests.post(f"{api}/projects/alice%2Fp/repository/branches", headers={
        **h, "Content-Type": "application/json"}, data=deep, timeout=30)
    assert r.status_code == 400, r.status_code
    big = b"x" * (17 << 20)
    r = requests.post(f"{api}/projects", headers={**h, "Content-Type": "application/json"},
                      data=big, timeout=60)
    assert r.status_code == 413
    # an overlong header is refused by the server, which stays up
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    s.sendall(b"GET /api/v4/version HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * (1 << 20) +
              b"\r\n\r\n")
    try:
        answer = s.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    s.close()
    assert not answer.startswith(b"HTTP/1.1 200")
    time.sleep(0.2)
    assert requests.get(f"{api}/version", headers=h, timeout=30).status_code == 200


ECHO_MANIFEST = {
    "slug": "echo-args", "name": "Echo", "type": "ALGORITHM", "command": "sh echo.sh",
    "input_data_type": "TABULAR", "output_data_type": "MODEL",
    "parameters": [{"name": "text", "type": "STRING", "required": True}], "metrics": []}


def test_parameters_never_reach_a_shell(hub, tmp_path):
    import json
    tok = hub.user("alice")
    hub.project("alice/code", "alice")
    hub.project("alice/data", "alice")
    push_files(hub, tok, "alice/code", {
        "processor.json": json.dumps(ECHO_MANIFEST),
        # writes its arguments one per line into the output folder
        "echo.sh": 'out=""; prev=""; for a in "$@"; do [ "$prev" = --output-path ] && '
                   'out="$a"; prev="$a"; done; printf "%s\\n" "$@" > "$out/args.txt"\n'}, tmp_path)
    push_files(hub, tok, "alice/data", {"README.md": "x\n"}, tmp_path)
    h = {"PRIVATE-TOKEN": tok}
    v1 = hub.url + "/api/v1"
    assert requests.post(v1 + "/code-projects/alice%2Fcode/publish", headers=h,
                         json={"ref": "main"}, timeout=30).status_code == 201
    pwned = [tmp_path / f"pwned{i}" for i in range(4)]
    value = (f"$(touch {pwned[0]}) `touch {pwned[1]}`; touch {pwned[2]} ' ; touch "
             f"{pwned[3]} #\" \\ \n second line")
    r = requests.post(v1 + "/projects/alice%2Fdata/experiments", headers=h, timeout=30,
                      json={"name": "inject", "processor": "echo-args",
                            "params": {"text": value}})
    assert r.status_code == 201, r.text
    exp = _wait(lambda: (e := requests.get(v1 + "/projects/alice%2Fdata/experiments/inject",
                                           headers=h, timeout=30).json())["status"]
                in ("success", "failed") and e, timeout=120)
    assert exp["status"] == "success", exp
    for p in pwned:
        assert not p.exists(), f"{p} created: a parameter reached a shell"
    r = requests.get(hub.url + "/api/v4/projects/alice%2Fdata/repository/files/"
                     "output%2Fargs.txt/raw?ref=experiment%2Finject", headers=h, timeout=30)
    assert r.status_code == 200, r.text
    args = r.text.split("\n")
    assert "--text" in args
    assert "\n".join(args[args.index("--text") + 1:]).startswith(value)
