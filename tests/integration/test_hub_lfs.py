"""Git LFS against reef-hub: the real git-lfs client pushes, clones and pulls over HTTP
with a token; the batch API, object uploads, ranged downloads, raw?lfs=true and the
isolation of projects are checked with requests."""

import hashlib
import os
import re

import pytest
import requests

from conftest import git, which

pytestmark = pytest.mark.skipif(not which("git-lfs"), reason="git-lfs is not installed")

LFS_TYPE = "application/vnd.git-lfs+json"
MISSING_MSG = ("Object does not exist on the server or you don't have permissions to "
               "access it")


@pytest.fixture
def lfs_home(tmp_path):
    """A private HOME whose global git config has the LFS filters (for clones)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    git("lfs", "install", "--skip-repo", env=env)
    return env


def lfs_repo(path, env, files, tracked="*.bin"):
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path, env=env)
    git("lfs", "install", "--local", cwd=path, env=env)
    git("lfs", "track", tracked, cwd=path, env=env)
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    git("add", "-A", cwd=path, env=env)
    git("commit", "-q", "-m", "lfs files", cwd=path, env=env)
    return path


def oid_of(data):
    return hashlib.sha256(data).hexdigest()


def pointer(data):
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid_of(data)}\n"
            f"size {len(data)}\n").encode()


def batch(hub, project, objects, operation="download", auth=None, **kw):
    body = {"operation": operation, "transfers": ["basic"], "ref": {"name": "refs/heads/main"},
            "objects": objects}
    headers = {"Accept": LFS_TYPE, "Content-Type": LFS_TYPE}
    headers.update(kw.pop("headers", {}))
    return requests.post(f"{hub.url}/{project}.git/info/lfs/objects/batch", json=body,
                         headers=headers, auth=auth, timeout=30, **kw)


def upload(hub, project, data, auth):
    """Uploads data through the batch API's actions as git-lfs would."""
    r = batch(hub, project, [{"oid": oid_of(data), "size": len(data)}], "upload", auth=auth)
    assert r.status_code == 200, r.text
    obj = r.json()["objects"][0]
    if "actions" not in obj:
        return obj
    up = obj["actions"]["upload"]
    assert up["href"].endswith(f"/{project}.git/gitlab-lfs/objects/{oid_of(data)}/{len(data)}")
    rp = requests.put(up["href"], data=data, headers=up["header"], timeout=60)
    assert rp.status_code == 200, rp.text
    ve = obj["actions"]["verify"]
    rv = requests.post(ve["href"], json={"oid": oid_of(data), "size": len(data)},
                       headers={**ve["header"], "Content-Type": LFS_TYPE}, timeout=30)
    assert rv.status_code == 200, rv.text
    return obj


def store_path(hub, data):
    o = oid_of(data)
    return hub.dir / "lfs" / "objects" / o[:2] / o[2:4] / o


def test_push_clone_pull_with_token(hub, tmp_path, lfs_home):
    tok = hub.user("alice")
    hub.project("grp/data", "alice", "private")
    small = b"small lfs file\n"
    big = os.urandom(50 << 20)
    src = lfs_repo(tmp_path / "src", lfs_home,
                   {"small.bin": small, "models/big.bin": big, "plain.txt": b"not lfs\n"})
    url = hub.git_url("grp/data", token=tok)
    r = git("push", url, "main", cwd=src, env=lfs_home)
    # lock verification answers 501: git-lfs turns it off silently, never echoing the URL
    assert "Locking support" not in r.stderr and tok not in r.stderr + r.stdout
    # The store holds each object once, content-addressed and whole.
    assert store_path(hub, big).read_bytes() == big
    assert store_path(hub, small).read_bytes() == small
    assert not any((hub.dir / "lfs" / "tmp").iterdir())
    # git keeps pointers; the raw API without lfs=true serves them.
    raw = hub.api("GET", "/projects/grp%2Fdata/repository/files/small.bin/raw", token=tok,
                  params={"ref": "main"})
    assert raw.content == pointer(small)

    dst = tmp_path / "dst"
    git("clone", "-q", url, str(dst), env=lfs_home)
    assert (dst / "models" / "big.bin").read_bytes() == big
    assert (dst / "small.bin").read_bytes() == small
    assert (dst / "plain.txt").read_bytes() == b"not lfs\n"

    # A clone that skips smudging has pointers until `git lfs pull`.
    lazy = tmp_path / "lazy"
    git("clone", "-q", url, str(lazy), env={**lfs_home, "GIT_LFS_SKIP_SMUDGE": "1"})
    assert (lazy / "small.bin").read_bytes() == pointer(small)
    git("lfs", "pull", cwd=lazy, env=lfs_home)
    assert (lazy / "models" / "big.bin").read_bytes() == big
    assert (lazy / "small.bin").read_bytes() == small

    # A second push of new content uploads only the new object.
    (src / "small.bin").write_bytes(b"changed\n")
    git("commit", "-qam", "change", cwd=src, env=lfs_home)
    git("push", url, "main", cwd=src, env=lfs_home)
    git("pull", "-q", cwd=dst, env=lfs_home)
    assert (dst / "small.bin").read_bytes() == b"changed\n"
    log = hub.log_path.read_text()
    assert tok not in log and "reeflfs1" not in log


def test_anonymous_clone_public_only(hub, tmp_path, lfs_home):
    tok = hub.user("alice")
    hub.project("acme/open", "alice", "public")
    hub.project("acme/closed", "alice", "private")
    data = os.urandom(100_000)
    src = lfs_repo(tmp_path / "src", lfs_home, {"d.bin": data})
    git("push", hub.git_url("acme/open", token=tok), "main", cwd=src, env=lfs_home)
    git("push", hub.git_url("acme/closed", token=tok), "main", cwd=src, env=lfs_home)
    git("clone", "-q", hub.git_url("acme/open"), str(tmp_path / "pub"), env=lfs_home)
    assert (tmp_path / "pub" / "d.bin").read_bytes() == data
    r = git("clone", "-q", hub.git_url("acme/closed"), str(tmp_path / "priv"), env=lfs_home,
            check=False)
    assert r.returncode != 0 and not (tmp_path / "priv" / "d.bin").exists()
    # The batch API asks anonymous callers of a private project for credentials...
    r = batch(hub, "acme/closed", [{"oid": oid_of(data), "size": len(data)}])
    assert r.status_code == 401
    assert r.headers["LFS-Authenticate"] == 'Basic realm="GitLab"'
    assert r.headers["WWW-Authenticate"] == 'Basic realm="GitLab"'
    assert r.headers["Content-Type"] == LFS_TYPE
    # ...and of a public one for an upload; a wrong token is a 401 as well.
    r = batch(hub, "acme/open", [{"oid": oid_of(b"x"), "size": 1}], "upload")
    assert r.status_code == 401 and "LFS-Authenticate" in r.headers
    r = batch(hub, "acme/open", [{"oid": oid_of(data), "size": len(data)}],
              auth=("x", "glpat-not-a-real-token-000"))
    assert r.status_code == 401
    # Object routes follow the same rules.
    href = f"{hub.url}/acme/closed.git/gitlab-lfs/objects/{oid_of(data)}"
    assert requests.get(href, timeout=30).status_code == 401
    assert requests.get(href, auth=("x", tok), timeout=30).content == data
    pub = f"{hub.url}/acme/open.git/gitlab-lfs/objects/{oid_of(data)}"
    assert requests.get(pub, timeout=30).content == data


def test_reporter_cannot_upload(hub, tmp_path, lfs_home):
    alice = hub.user("alice")
    bob = hub.user("bob")
    carol = hub.user("carol")
    hub.project("acme/data", "alice", "private")
    hub.member("acme/data", "bob", "reporter")
    data = os.urandom(10_000)
    src = lfs_repo(tmp_path / "src", lfs_home, {"a.bin": data})
    git("push", hub.git_url("acme/data", token=alice), "main", cwd=src, env=lfs_home)
    # bob reads...
    git("clone", "-q", hub.git_url("acme/data", token=bob), str(tmp_path / "b"), env=lfs_home)
    assert (tmp_path / "b" / "a.bin").read_bytes() == data
    # ...but may not upload: the batch refuses, and so does a direct PUT.
    new = os.urandom(1000)
    r = batch(hub, "acme/data", [{"oid": oid_of(new), "size": len(new)}], "upload",
              auth=("bob", bob))
    assert r.status_code == 403 and r.headers["Content-Type"] == LFS_TYPE
    r = requests.put(f"{hub.url}/acme/data.git/gitlab-lfs/objects/{oid_of(new)}/{len(new)}",
                     data=new, auth=("bob", bob), timeout=30)
    assert r.status_code == 403
    (src / "b.bin").write_bytes(new)
    git("add", "b.bin", cwd=src, env=lfs_home)
    git("commit", "-qm", "more", cwd=src, env=lfs_home)
    r = git("push", hub.git_url("acme/data", token=bob), "main", cwd=src, env=lfs_home,
            check=False)
    assert r.returncode != 0
    assert not store_path(hub, new).exists()
    # Not a member: the project is not there for carol.
    r = batch(hub, "acme/data", [{"oid": oid_of(data), "size": len(data)}],
              auth=("carol", carol))
    assert r.status_code == 404
    # A developer pushes with the same commands (to a branch: main is protected).
    hub.member("acme/data", "carol", "developer")
    git("push", hub.git_url("acme/data", token=carol), "main:dev", cwd=src, env=lfs_home)
    assert store_path(hub, new).read_bytes() == new


def test_batch_api_validation(hub):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    auth = ("alice", tok)
    url = f"{hub.url}/acme/data.git/info/lfs/objects/batch"
    hdr = {"Accept": LFS_TYPE, "Content-Type": LFS_TYPE}
    present = b"present\n"
    upload(hub, "acme/data", present, auth)

    r = requests.post(url, data=b"{not json", headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 400 and r.headers["Content-Type"] == LFS_TYPE
    assert "message" in r.json()
    r = requests.post(url, data=b"[]", headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 400
    for bad in [{"oid": "A" * 64, "size": 1}, {"oid": "a" * 63, "size": 1},
                {"oid": "g" * 64, "size": 1}, {"oid": "a" * 64, "size": -1},
                {"oid": "a" * 64, "size": "1"}, {"oid": "a" * 64}, "nope"]:
        r = batch(hub, "acme/data", [bad], auth=auth)
        assert r.status_code == 422, (bad, r.status_code)
    r = batch(hub, "acme/data", [{"oid": "a" * 64, "size": 1}], "delete", auth=auth)
    assert r.status_code == 422
    r = requests.post(url, json={"operation": "download", "transfers": ["tus"],
                                 "objects": []}, headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 422
    r = requests.post(url, json={"operation": "download", "hash_algo": "sha512",
                                 "objects": []}, headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 409
    r = requests.post(url, json={"operation": "download", "objects": []},
                      headers={"Content-Type": "text/plain"}, auth=auth, timeout=30)
    assert r.status_code == 415
    many = [{"oid": f"{i:064x}", "size": 1} for i in range(1001)]
    r = batch(hub, "acme/data", many, auth=auth)
    assert r.status_code == 413
    assert batch(hub, "acme/data", many[:1000], auth=auth).status_code == 200
    r = requests.post(url, data=b" " * (3 << 20), headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 413
    r = requests.post(url, data=iter([b" " * (1 << 20)] * 3), headers=hdr, auth=auth,
                      timeout=30)
    assert r.status_code == 413

    missing = oid_of(b"never uploaded")
    r = batch(hub, "acme/data", [{"oid": missing, "size": 14},
                                 {"oid": oid_of(present), "size": len(present)}], auth=auth)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == LFS_TYPE
    body = r.json()
    assert body["transfer"] == "basic"
    miss, have = body["objects"]
    assert miss == {"oid": missing, "size": 14, "authenticated": True,
                    "error": {"code": 404, "message": MISSING_MSG}}
    dl = have["actions"]["download"]
    assert have["size"] == len(present) and have["authenticated"] is True
    assert dl["href"] == f"{hub.url}/acme/data.git/gitlab-lfs/objects/{oid_of(present)}"
    assert dl["expires_in"] > 0 and dl["header"]["Authorization"].startswith("Bearer ")
    assert tok not in dl["header"]["Authorization"]
    assert requests.get(dl["href"], headers=dl["header"], timeout=30).content == present
    # An upload of what is already stored needs no transfer.
    r = batch(hub, "acme/data", [{"oid": oid_of(present), "size": len(present)},
                                 {"oid": missing, "size": 14}], "upload", auth=auth)
    have, miss = r.json()["objects"]
    assert "actions" not in have and "error" not in have
    assert set(miss["actions"]) == {"upload", "verify"}
    # Locking is refused explicitly, after the usual access checks.
    r = requests.post(f"{hub.url}/acme/data.git/info/lfs/locks/verify", json={},
                      headers=hdr, auth=auth, timeout=30)
    assert r.status_code == 501
    r = requests.get(f"{hub.url}/acme/data.git/info/lfs/locks", timeout=30)
    assert r.status_code == 401


def test_put_rejects_wrong_bytes_and_size(hub):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    auth = ("alice", tok)
    data = os.urandom(200_000)
    oid = oid_of(data)
    r = batch(hub, "acme/data", [{"oid": oid, "size": len(data)}], "upload", auth=auth)
    up = r.json()["objects"][0]["actions"]["upload"]
    tmp = hub.dir / "lfs" / "tmp"

    def nothing_stored():
        assert not store_path(hub, data).exists()
        # even a body refused while it still arrives (chunked, too long): the hub removes
        # the partial file before it answers
        assert not any(tmp.iterdir())
        r = batch(hub, "acme/data", [{"oid": oid, "size": len(data)}], auth=auth)
        assert r.json()["objects"][0]["error"]["code"] == 404

    # Right size, wrong bytes: the digest does not match the oid.
    wrong = bytearray(data)
    wrong[1000] ^= 1
    r = requests.put(up["href"], data=bytes(wrong), headers=up["header"], timeout=30)
    assert r.status_code == 422
    nothing_stored()
    # Content-Length other than the size in the URL: refused before any byte is read.
    r = requests.put(up["href"], data=data[:-1], headers=up["header"], timeout=30)
    assert r.status_code == 400
    nothing_stored()
    # Chunked bodies longer or shorter than the size.
    for body in (data + b"x", data[:1000]):
        r = requests.put(up["href"], data=iter([body[:5000], body[5000:]]),
                         headers=up["header"], timeout=30)
        assert r.status_code == 400, r.text
        nothing_stored()
    # The upload token is bound to its oid and size route; a download token cannot upload.
    other = os.urandom(10)
    r = requests.put(f"{hub.url}/acme/data.git/gitlab-lfs/objects/{oid_of(other)}/10",
                     data=other, headers=up["header"], timeout=30)
    assert r.status_code == 401
    # A bad oid in the URL is no route at all.
    r = requests.put(f"{hub.url}/acme/data.git/gitlab-lfs/objects/{oid.upper()}/{len(data)}",
                     data=data, headers=up["header"], timeout=30)
    assert r.status_code == 404
    # The right bytes are stored (and the caller's own token works as well).
    r = requests.put(up["href"], data=data, auth=auth, timeout=30)
    assert r.status_code == 200
    assert store_path(hub, data).read_bytes() == data


def test_range_downloads(hub):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    auth = ("alice", tok)
    data = os.urandom(1 << 20)
    upload(hub, "acme/data", data, auth)
    href = f"{hub.url}/acme/data.git/gitlab-lfs/objects/{oid_of(data)}"
    r = requests.get(href, auth=auth, timeout=30)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Accept-Ranges"] == "bytes"
    for rng, lo, hi in [("bytes=100-199", 100, 199), ("bytes=1000000-", 1000000, len(data) - 1),
                        ("bytes=-10", len(data) - 10, len(data) - 1),
                        ("bytes=5-99999999", 5, len(data) - 1)]:
        r = requests.get(href, auth=auth, headers={"Range": rng}, timeout=30)
        assert r.status_code == 206, rng
        assert r.content == data[lo:hi + 1], rng
        assert r.headers["Content-Range"] == f"bytes {lo}-{hi}/{len(data)}"
    for rng in ["bytes=1048576-", "bytes=2000000-2000001", "bytes=-0"]:
        r = requests.get(href, auth=auth, headers={"Range": rng}, timeout=30)
        assert r.status_code == 416, rng
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    # Ranges we do not honour get the whole object.
    r = requests.get(href, auth=auth, headers={"Range": "bytes=0-1,5-6"}, timeout=30)
    assert r.status_code == 200 and r.content == data
    r = requests.head(href, auth=auth, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Length"] == str(len(data))


def test_raw_file_with_lfs_true(hub, tmp_path, lfs_home):
    tok = hub.user("alice")
    hub.project("acme/data", "alice", "private")
    data = os.urandom(300_000)
    ghost = b"never pushed\n"
    src = lfs_repo(tmp_path / "src", lfs_home, {"m/w.bin": data, "t.txt": b"text\n"})
    # A pointer committed without its object (git-lfs would refuse to push it).
    (src / "ghost.dat").write_bytes(pointer(ghost))
    git("add", "ghost.dat", cwd=src, env=lfs_home)
    git("commit", "-qm", "ghost", cwd=src, env=lfs_home)
    git("-c", "lfs.allowincompletepush=true", "push", hub.git_url("acme/data", token=tok),
        "main", cwd=src, env=lfs_home)
    route = "/projects/acme%2Fdata/repository/files/{}/raw"

    def raw(path, **params):
        return hub.api("GET", route.format(path), token=tok, params={"ref": "main", **params})

    r = raw("m%2Fw.bin", lfs="true")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = hub.api("GET", route.format("m%2Fw.bin"), token=tok,
                params={"ref": "main", "lfs": "true"}, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert raw("m%2Fw.bin").content == pointer(data)
    assert raw("m%2Fw.bin", lfs="false").content == pointer(data)
    assert raw("t.txt", lfs="true").content == b"text\n"
    assert raw("ghost.dat", lfs="true").content == pointer(ghost)


def test_objects_do_not_leak_across_projects(hub, tmp_path, lfs_home):
    alice = hub.user("alice")
    bob = hub.user("bob")
    hub.project("acme/a", "alice", "private")
    hub.project("acme/b", "alice", "private")
    hub.project("bob/c", "bob", "private")
    auth = ("alice", alice)
    secret = os.urandom(50_000)
    upload(hub, "acme/a", secret, auth)
    oid = oid_of(secret)
    # Through B (same owner) the object does not exist.
    r = batch(hub, "acme/b", [{"oid": oid, "size": len(secret)}], auth=auth)
    assert r.json()["objects"][0]["error"]["code"] == 404
    r = requests.get(f"{hub.url}/acme/b.git/gitlab-lfs/objects/{oid}", auth=auth, timeout=30)
    assert r.status_code == 404
    # A's download token does not open B's (or C's) route.
    dl = batch(hub, "acme/a", [{"oid": oid, "size": len(secret)}], auth=auth).json()
    hdr = dl["objects"][0]["actions"]["download"]["header"]
    for other in ("acme/b", "bob/c"):
        r = requests.get(f"{hub.url}/{other}.git/gitlab-lfs/objects/{oid}", headers=hdr,
                         timeout=30)
        assert r.status_code in (401, 404) and r.content != secret
    # bob knowing the oid gains nothing: an upload must send the bytes themselves...
    r = batch(hub, "bob/c", [{"oid": oid, "size": len(secret)}], "upload",
              auth=("bob", bob))
    assert "upload" in r.json()["objects"][0]["actions"]
    r = batch(hub, "bob/c", [{"oid": oid, "size": len(secret)}], auth=("bob", bob))
    assert r.json()["objects"][0]["error"]["code"] == 404
    # ...and the verify action of an upload never uploaded fails.
    ve = batch(hub, "bob/c", [{"oid": oid, "size": len(secret)}], "upload",
               auth=("bob", bob)).json()["objects"][0]["actions"]["verify"]
    r = requests.post(ve["href"], json={"oid": oid, "size": len(secret)}, headers=ve["header"],
                      timeout=30)
    assert r.status_code == 404
    # A tampered token is refused.
    bad = dict(hdr)
    bad["Authorization"] = re.sub(r".$", lambda m: "0" if m.group() != "0" else "1",
                                  hdr["Authorization"])
    r = requests.get(f"{hub.url}/acme/a.git/gitlab-lfs/objects/{oid}", headers=bad, timeout=30)
    assert r.status_code == 401
    r = requests.get(f"{hub.url}/acme/a.git/gitlab-lfs/objects/{oid}", headers=hdr, timeout=30)
    assert r.status_code == 200 and r.content == secret
