/* /repository/files/:file_path[/raw] and /repository/blobs/:sha[/raw].
 *
 * JSON answers carry the content in base64 and are capped at REPO_MAX_JSON_BLOB (413
 * beyond: use /raw). Raw answers honour a single HTTP byte range (206 + Content-Range).
 * HEAD on a file answers GitLab's X-Gitlab-* headers only. last_commit_id follows the
 * path's simplified history (see repo_last_commit) at most REPO_MAX_LAST_COMMIT_WALK
 * commits for GET and REPO_MAX_LAST_COMMIT_HEAD for HEAD, then reports the requested
 * commit itself: HEAD and GET stay bounded on long histories. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/hash.h"
#include "lfs.h"
#include "reef/util.h"
#include "repo_int.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static json_t *base64_json(const unsigned char *d, size_t n)
{
	size_t olen = (n + 2) / 3 * 4, o = 0, i;
	char *out = malloc(olen + 1);
	json_t *v;

	if (!out)
		return NULL;
	for (i = 0; i + 2 < n; i += 3) {
		uint32_t x = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];

		out[o++] = b64[x >> 18];
		out[o++] = b64[(x >> 12) & 63];
		out[o++] = b64[(x >> 6) & 63];
		out[o++] = b64[x & 63];
	}
	if (i < n) {
		uint32_t x = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);

		out[o++] = b64[x >> 18];
		out[o++] = b64[(x >> 12) & 63];
		out[o++] = i + 1 < n ? b64[(x >> 6) & 63] : '=';
		out[o++] = '=';
	}
	v = json_stringn_nocheck(out, o);
	free(out);
	return v;
}

/* Blob bytes with their size check done; -EFBIG above cap. */
static int blob_load(struct repo_ctx *c, const git_oid *id, size_t cap, git_blob **out)
{
	git_odb *odb = NULL;
	size_t size;
	git_object_t type;
	int r;

	*out = NULL;
	if (git_repository_odb(&odb, c->repo) < 0)
		return -EIO;
	/* The header alone tells the size: do not inflate what will be refused. */
	r = git_odb_read_header(&size, &type, odb, id);
	git_odb_free(odb);
	if (r < 0)
		return r == GIT_ENOTFOUND ? -ENOENT : -EIO;
	if (type != GIT_OBJECT_BLOB)
		return -ENOENT;
	if (size > cap)
		return -EFBIG;
	return git_blob_lookup(out, c->repo, id) < 0 ? -EIO : 0;
}

static void too_large(struct repo_ctx *c)
{
	hub_resp_error(c->resp, 413, "413 Blob too large for a JSON answer: use /raw");
}

/* git's heuristic: a NUL in the first 8000 bytes means binary. */
static bool looks_binary(const char *d, size_t n)
{
	return memchr(d, '\0', n < 8000 ? n : 8000) != NULL;
}

static void serve_raw(struct repo_ctx *c, const git_blob *blob)
{
	const char *data = git_blob_rawcontent(blob);
	uint64_t size = (uint64_t)git_blob_rawsize(blob), from = 0, to = 0;
	const char *ctype = looks_binary(data, (size_t)size) ? "application/octet-stream"
	                                                     : "text/plain; charset=utf-8";
	char v[96];
	int r = hub_lfs_range_parse(hub_req_header(c->req, "Range"), size, &from, &to);

	if (r < 0) {
		snprintf(v, sizeof v, "bytes */%" PRIu64, size);
		hub_resp_error(c->resp, 416, "416 Range Not Satisfiable");
		hub_resp_header(c->resp, "Content-Range", v);
		return;
	}
	repo_resp_room(c, (size_t)size);
	if (r > 0) {
		hub_resp_raw(c->resp, 206, ctype, data + from, (size_t)(to - from + 1));
		snprintf(v, sizeof v, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from, to, size);
		hub_resp_header(c->resp, "Content-Range", v);
	} else {
		hub_resp_raw(c->resp, 200, ctype, data, (size_t)size);
	}
	hub_resp_header(c->resp, "Accept-Ranges", "bytes");
	git_oid_tostr(v, GIT_OID_HEXSZ + 1, git_blob_id(blob));
	hub_resp_header(c->resp, "X-Gitlab-Blob-Id", v);
	snprintf(v, sizeof v, "%" PRIu64, size);
	hub_resp_header(c->resp, "X-Gitlab-Size", v);
}

/* --- files --- */

struct file_hit {
	git_commit *commit;
	git_oid blob_id;
	uint32_t mode;
	size_t size;
};

/* Resolves ref and path to a blob; answers the error itself and returns false. */
static bool file_find(struct repo_ctx *c, const char *ref, const char *path, struct file_hit *h)
{
	git_tree *tree = NULL;
	git_tree_entry *e = NULL;
	git_odb *odb = NULL;
	git_object_t type;
	bool ok = false;

	memset(h, 0, sizeof *h);
	if (repo_resolve_commit(c->repo, ref, &h->commit) < 0) {
		hub_resp_error(c->resp, 404, "404 Commit Not Found");
		return false;
	}
	if (git_commit_tree(&tree, h->commit) < 0) {
		repo_fail(c, "reading a commit's tree");
		goto out;
	}
	if (git_tree_entry_bypath(&e, tree, path) < 0 ||
	    git_tree_entry_type(e) != GIT_OBJECT_BLOB) {
		hub_resp_error(c->resp, 404, "404 File Not Found");
		goto out;
	}
	git_oid_cpy(&h->blob_id, git_tree_entry_id(e));
	h->mode = git_tree_entry_filemode_raw(e);
	if (git_repository_odb(&odb, c->repo) < 0 ||
	    git_odb_read_header(&h->size, &type, odb, &h->blob_id) < 0) {
		hub_resp_error(c->resp, 404, "404 File Not Found");
		goto out;
	}
	ok = true;
out:
	if (!ok) {
		git_commit_free(h->commit);
		h->commit = NULL;
	}
	git_odb_free(odb);
	git_tree_entry_free(e);
	git_tree_free(tree);
	return ok;
}

static void sha256_hex(const void *d, size_t n, char out[HASH_SHA256_HEX + 1])
{
	uint8_t bin[HASH_SHA256_LEN];

	if (hash_buf(HASH_SHA256, d, n, bin) < 0) {
		out[0] = '\0';
		return;
	}
	hash_hex(out, bin, sizeof bin);
}

static void file_get(struct repo_ctx *c, const char *path, bool head)
{
	const char *ref = hub_req_query(c->req, "ref");
	const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	struct file_hit h;
	git_blob *blob = NULL;
	git_oid last;
	char bid[GIT_OID_HEXSZ + 1], cid[GIT_OID_HEXSZ + 1], lid[GIT_OID_HEXSZ + 1];
	char sha[HASH_SHA256_HEX + 1] = "", size[32];
	bool exec;
	int r;

	if (!ref || !*ref) {
		hub_resp_missing(c->resp, "ref");
		return;
	}
	if (!file_find(c, ref, path, &h))
		return;
	r = blob_load(c, &h.blob_id, head ? REPO_MAX_RAW_BLOB : REPO_MAX_JSON_BLOB, &blob);
	if (r == -EFBIG && !head) {
		too_large(c);
		goto out;
	}
	if (r < 0 && r != -EFBIG) {
		repo_fail(c, "reading a blob");
		goto out;
	}
	if (blob)
		sha256_hex(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob), sha);
	if (repo_last_commit(c->repo, h.commit, path,
	                     head ? REPO_MAX_LAST_COMMIT_HEAD : REPO_MAX_LAST_COMMIT_WALK,
	                     &last) < 0) {
		repo_fail(c, "finding a path's last commit");
		goto out;
	}
	git_oid_tostr(bid, sizeof bid, &h.blob_id);
	git_oid_tostr(cid, sizeof cid, git_commit_id(h.commit));
	git_oid_tostr(lid, sizeof lid, &last);
	exec = h.mode == GIT_FILEMODE_BLOB_EXECUTABLE;
	snprintf(size, sizeof size, "%zu", h.size);
	if (head) {
		hub_resp_raw(c->resp, 200, "application/json", "", 0);
		hub_resp_header(c->resp, "X-Gitlab-Blob-Id", bid);
		hub_resp_header(c->resp, "X-Gitlab-Commit-Id", cid);
		if (*sha)
			hub_resp_header(c->resp, "X-Gitlab-Content-Sha256", sha);
		hub_resp_header(c->resp, "X-Gitlab-Encoding", "base64");
		hub_resp_header(c->resp, "X-Gitlab-File-Name", name);
		hub_resp_header(c->resp, "X-Gitlab-File-Path", path);
		hub_resp_header(c->resp, "X-Gitlab-Last-Commit-Id", lid);
		hub_resp_header(c->resp, "X-Gitlab-Ref", ref);
		hub_resp_header(c->resp, "X-Gitlab-Size", size);
		hub_resp_header(c->resp, "X-Gitlab-Execute-Filemode", exec ? "true" : "false");
	} else {
		json_t *content =
		    base64_json(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));

		if (!content) {
			hub_resp_error(c->resp, 500, "500 Internal Server Error");
			goto out;
		}
		repo_resp_room(c, json_string_length(content) + 6 * strlen(path) + 6 * strlen(ref));
		hub_resp_json(c->resp, 200,
		              json_pack("{s:o, s:o, s:I, s:s, s:s, s:o, s:s, s:s, s:s, s:b, s:o}",
		                        "file_name", repo_jstr(name), "file_path", repo_jstr(path),
		                        "size", (json_int_t)h.size, "encoding", "base64",
		                        "content_sha256", sha, "ref", repo_jstr(ref), "blob_id",
		                        bid, "commit_id", cid, "last_commit_id", lid,
		                        "execute_filemode", exec, "content", content));
	}
out:
	git_blob_free(blob);
	git_commit_free(h.commit);
}

static void file_raw(struct repo_ctx *c, const char *path)
{
	const char *ref = hub_req_query(c->req, "ref");
	struct file_hit h;
	git_blob *blob = NULL;
	char cid[GIT_OID_HEXSZ + 1];
	int r;

	/* ref is optional here: the default branch */
	if (!file_find(c, ref && *ref ? ref : "HEAD", path, &h))
		return;
	r = blob_load(c, &h.blob_id, REPO_MAX_RAW_BLOB, &blob);
	if (r == -EFBIG)
		hub_resp_error(c->resp, 413, "413 Blob too large");
	else if (r < 0)
		repo_fail(c, "reading a blob");
	else {
		/* lfs=true: a pointer whose object is stored answers the object itself */
		if (!repo_bool(hub_req_query(c->req, "lfs")) ||
		    !hub_lfs_serve_pointer(c->req, c->resp, c->p, git_blob_rawcontent(blob),
		                           (size_t)git_blob_rawsize(blob)))
			serve_raw(c, blob);
		git_oid_tostr(cid, sizeof cid, git_commit_id(h.commit));
		hub_resp_header(c->resp, "X-Gitlab-Commit-Id", cid);
	}
	git_blob_free(blob);
	git_commit_free(h.commit);
}

void repo_files_route(struct repo_ctx *c, const char *rest)
{
	size_t n = strcspn(rest, "/");
	const char *tail = rest + n;
	bool get = !strcmp(c->req->method, "GET"), head = !strcmp(c->req->method, "HEAD");
	char *path;

	/* The path must be one encoded segment (a/b as a%2Fb); only "/raw" may follow. */
	if (*tail && strcmp(tail, "/raw")) {
		hub_resp_error(c->resp, 404, "404 Not Found");
		return;
	}
	if (!get && !head &&
	    (*tail || (strcmp(c->req->method, "POST") && strcmp(c->req->method, "PUT") &&
	               strcmp(c->req->method, "DELETE")))) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	path = repo_segment(rest, n);
	if (!path || !path_is_safe(path, HUB_MAX_PATH)) {
		repo_bad_param(c, "file_path should be a valid file path");
		free(path);
		return;
	}
	if (*tail)
		file_raw(c, path);
	else if (get || head)
		file_get(c, path, head);
	else
		repo_files_write(c, path);
	free(path);
}

/* --- blobs --- */

void repo_blobs_route(struct repo_ctx *c, const char *rest)
{
	size_t n = strcspn(rest, "/"), i;
	const char *tail = rest + n;
	git_odb *odb = NULL;
	git_blob *blob = NULL;
	git_oid id, prefix;
	char sha[GIT_OID_HEXSZ + 1];
	int r;

	if (*tail && strcmp(tail, "/raw")) {
		hub_resp_error(c->resp, 404, "404 Not Found");
		return;
	}
	if (strcmp(c->req->method, "GET") && strcmp(c->req->method, "HEAD")) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	for (i = 0; i < n && isxdigit((unsigned char)rest[i]); i++)
		;
	/* Resolve the abbreviation without inflating the object: blob_load checks the
	 * size before reading it. */
	if (i != n || n < 4 || n > GIT_OID_HEXSZ || git_oid_fromstrn(&prefix, rest, n) < 0 ||
	    git_repository_odb(&odb, c->repo) < 0 ||
	    git_odb_exists_prefix(&id, odb, &prefix, n) < 0) {
		git_odb_free(odb);
		hub_resp_error(c->resp, 404, "404 Blob Not Found");
		return;
	}
	git_odb_free(odb);
	r = blob_load(c, &id, *tail ? REPO_MAX_RAW_BLOB : REPO_MAX_JSON_BLOB, &blob);
	if (r == -ENOENT)
		hub_resp_error(c->resp, 404, "404 Blob Not Found");
	else if (r == -EFBIG)
		*tail ? hub_resp_error(c->resp, 413, "413 Blob too large") : too_large(c);
	else if (r < 0)
		repo_fail(c, "reading a blob");
	else if (*tail)
		serve_raw(c, blob);
	else {
		json_t *content =
		    base64_json(git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));

		git_oid_tostr(sha, sizeof sha, &id);
		if (content)
			repo_resp_room(c, json_string_length(content));
		if (content)
			hub_resp_json(c->resp, 200,
			              json_pack("{s:I, s:s, s:o, s:s}", "size",
			                        (json_int_t)git_blob_rawsize(blob), "encoding",
			                        "base64", "content", content, "sha", sha));
		else
			hub_resp_error(c->resp, 500, "500 Internal Server Error");
	}
	git_blob_free(blob);
}
