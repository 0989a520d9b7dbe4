"""Secrets in reef-hub: every credential a full session hands out (personal tokens, job
tokens, LFS action tokens, EPF secrets, idempotency keys) must never reach the hub's log,
and those a hash suffices for are not in its database in plain text. Idempotency keys
are per user: an anonymous caller repeating someone's key gets no stored answer."""

import hashlib
import json
import sqlite3
import time

import requests

from conftest import git
from test_hub_authz import MANIFEST, _wait
from test_hub_ci import push_files

LFS_TYPE = "application/vnd.git-lfs+json"

CI = """
show:
  script:
    - echo "$CI_JOB_TOKEN" > "$TOKEN_FILE"
    - git fetch -q origin
    - git push -q origin HEAD:refs/heads/pushed-by-job
  artifacts:
    paths: [job-token]
"""


def test_no_credential_in_logs_or_plain_in_db(hub, tmp_path):
    secrets = {}
    tok = secrets["personal"] = hub.user("alice")
    secrets["personal2"] = hub.token("alice")
    hub.project("alice/p", "alice")
    hub.project("alice/code", "alice")
    h = {"PRIVATE-TOKEN": tok}
    push_files(hub, tok, "alice/p", {".gitlab-ci.yml": CI, "a.txt": "a\n"}, tmp_path)
    push_files(hub, tok, "alice/code", {"processor.json": json.dumps(MANIFEST)}, tmp_path)
    # every way a personal token arrives, good and bad
    api = hub.url + "/api/v4"
    assert requests.get(api + "/user", headers=h, timeout=30).status_code == 200
    assert requests.get(api + f"/user?private_token={tok}", timeout=30).status_code == 200
    assert requests.get(api + f"/user?access_token={tok}", timeout=30).status_code == 200
    assert requests.get(api + "/user", headers={"Authorization": f"Bearer {tok}"},
                        timeout=30).status_code == 200
    bad = secrets["bad"] = "glpat-" + "Z" * 20
    assert requests.get(api + f"/user?private_token={bad}", timeout=30).status_code == 401
    assert requests.get(api + "/user", headers={"PRIVATE-TOKEN": bad + "%00x\x7f"},
                        timeout=30).status_code == 401
    out = git("ls-remote", hub.git_url("alice/p", token=bad), check=False)
    assert out.returncode != 0
    # an LFS action token
    data = b"lfs secret test\n"
    oid = hashlib.sha256(data).hexdigest()
    r = requests.post(f"{hub.url}/alice/p.git/info/lfs/objects/batch", auth=("x", tok),
                      headers={"Accept": LFS_TYPE, "Content-Type": LFS_TYPE}, timeout=30,
                      json={"operation": "upload", "transfers": ["basic"],
                            "objects": [{"oid": oid, "size": len(data)}]})
    assert r.status_code == 200, r.text
    up = r.json()["objects"][0]["actions"]["upload"]
    secrets["lfs"] = up["header"]["Authorization"].split(" ", 1)[1]
    assert requests.put(up["href"], data=data, headers=up["header"], timeout=30).status_code == 200
    # a job token, used by the job for git; it leaves the job's sandbox as an artifact
    assert requests.put(api + "/projects/alice%2Fp", headers=h, timeout=30,
                        json={"ci_push_repository_for_job_token_allowed": True}).status_code == 200
    r = requests.post(api + "/projects/alice%2Fp/pipeline", headers=h, timeout=30,
                      json={"ref": "main", "variables": [{"key": "TOKEN_FILE",
                                                          "value": "job-token"}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    st = _wait(lambda: (s := requests.get(api + f"/projects/alice%2Fp/pipelines/{pid}",
                                          headers=h, timeout=30).json()["status"])
               in ("success", "failed") and s)
    assert st == "success"
    jid = requests.get(api + f"/projects/alice%2Fp/pipelines/{pid}/jobs", headers=h,
                       timeout=30).json()[0]["id"]
    r = requests.get(api + f"/projects/alice%2Fp/jobs/{jid}/artifacts/job-token", headers=h,
                     timeout=30)
    assert r.status_code == 200, r.text
    secrets["job"] = r.text.strip()
    assert len(secrets["job"]) >= 20
    # an EPF secret, used for a callback
    v1 = hub.url + "/api/v1"
    assert requests.post(v1 + "/code-projects/alice%2Fcode/publish", headers=h, timeout=30,
                         json={"ref": "main"}).status_code == 201
    # an idempotency key, for a user, then repeated by someone without credentials
    key = secrets["idem"] = "idem-" + "k" * 40
    r = requests.post(v1 + "/projects/alice%2Fp/experiments", timeout=30,
                      headers={**h, "Idempotency-Key": key},
                      json={"name": "e1", "processor": "noop"})
    assert r.status_code == 201, r.text
    exp = r.json()
    r = requests.get(api + f"/projects/alice%2Fp/pipelines/{exp['pipeline_id']}/variables",
                     headers=h, timeout=30)
    secrets["epf"] = {v["key"]: v["value"] for v in r.json()}["EPF_SECRET"]
    requests.post(v1 + f"/epf/experiments/{exp['id']}/update", timeout=30,
                  headers={"EPF-BOT-TOKEN": secrets["epf"]}, json={"epoch": 1, "loss": 1.0})
    # a trigger by token parameter, anonymous, with a key; then the key alone
    tkey = secrets["idem2"] = "trigger-" + "t" * 30
    r = requests.post(api + "/projects/alice%2Fp/trigger/pipeline", timeout=30,
                      headers={"Idempotency-Key": tkey}, data={"token": tok, "ref": "main"})
    assert r.status_code == 201, r.text
    r = requests.post(api + "/projects/alice%2Fp/trigger/pipeline", timeout=30,
                      headers={"Idempotency-Key": tkey}, data={"token": "nope" * 6, "ref": "main"})
    assert r.status_code == 404, (r.status_code, r.text)  # not a replay of the 201
    assert r.headers.get("Idempotent-Replayed") is None
    # the user's own repeat is still replayed
    r = requests.post(v1 + "/projects/alice%2Fp/experiments", timeout=30,
                      headers={**h, "Idempotency-Key": key},
                      json={"name": "e1", "processor": "noop"})
    assert r.status_code == 201 and r.headers.get("Idempotent-Replayed") == "true"
    time.sleep(0.5)
    assert hub.stop() == 0
    log = hub.log_path.read_text()
    assert "GET /api/v4/user 200" in log  # the log does record requests
    for name, s in secrets.items():
        assert s not in log, f"{name} token in the hub log"
    # the database: hashes only, except the EPF secret the queued job must receive
    db = sqlite3.connect(hub.dir / "hub.db")
    dump = "\n".join(db.iterdump())
    db.close()
    for name in ("personal", "personal2", "job", "lfs", "idem", "idem2"):
        assert secrets[name] not in dump, f"{name} token stored in plain text"
    hub.start()  # the fixture stops it
