/* /repository/files/:file_path[/raw] and /repository/blobs/:sha[/raw].
 *
 * JSON answers carry the content in base64 and are capped at REPO_MAX_JSON_BLOB (413
 * beyond: use /raw). Raw answers honour a single HTTP byte range (206 + Content-Range);
 * blobs up to BLOBCACHE_THRESHOLD are answered from memory, larger ones (of any size)
 * are sent from a file of the blob cache (blobcache.h), never held in memory.
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
#include <unistd.h>

#include "blobcache.h"
#include "lfs.h"
#include "reef/hash.h"
#include "reef/log.h"
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

/* A blob's size from the object header alone (nothing inflated); -ENOENT when id is
 * not a blob. */
static int blob_size(struct repo_ctx *c, const git_oid *id, uint64_t *out)
{
	git_odb *odb = NULL;
	size_t size;
	git_object_t type;
	int r;

	if (git_repository_odb(&odb, c->repo) < 0)
		return -EIO;
	r = git_odb_read_header(&size, &type, odb, id);
	git_odb_free(odb);
	if (r < 0)
		return r == GIT_ENOTFOUND ? -ENOENT : -EIO;
	if (type != GIT_OBJECT_BLOB)
		return -ENOENT;
	*out = (uint64_t)size;
	return 0;
}

/* Blob bytes with their size check done; -EFBIG above cap. */
static int blob_load(struct repo_ctx *c, const git_oid *id, size_t cap, git_blob **out)
{
	uint64_t size;
	int r;

	*out = NULL;
	/* The header alone tells the size: do not inflate what will be refused. */
	r = blob_size(c, id, &size);
	if (r < 0)
		return r;
	if (size > cap)
		return -EFBIG;
	return git_blob_lookup(out, c->repo, id) < 0 ? -EIO : 0;
}

static void too_large(struct repo_ctx *c)
{
	hub_resp_error(c->resp, 413, "413 Blob too large for a JSON answer: use /raw");
}

/* git's heuristic: a NUL in the first 8000 bytes means binary. */
#define BINARY_PROBE 8000

static bool looks_binary(const char *d, size_t n)
{
	return memchr(d, '\0', n < BINARY_PROBE ? n : BINARY_PROBE) != NULL;
}

/* Reads the request's Range against size: 0 for the whole blob, 1 for [*from, *to];
 * answers 416 itself and returns -ERANGE. */
static int raw_range(struct repo_ctx *c, uint64_t size, uint64_t *from, uint64_t *to)
{
	char v[64];
	int r = hub_lfs_range_parse(hub_req_header(c->req, "Range"), size, from, to);

	if (r < 0) {
		snprintf(v, sizeof v, "bytes */%" PRIu64, size);
		hub_resp_error(c->resp, 416, "416 Range Not Satisfiable");
		hub_resp_header(c->resp, "Content-Range", v);
		return -ERANGE;
	}
	return r;
}

/* The headers every raw answer carries, once its status and body are set. */
static void raw_headers(struct repo_ctx *c, const git_oid *id, uint64_t size, int ranged,
                        uint64_t from, uint64_t to)
{
	char v[96];

	if (ranged) {
		snprintf(v, sizeof v, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from, to, size);
		hub_resp_header(c->resp, "Content-Range", v);
	}
	hub_resp_header(c->resp, "Accept-Ranges", "bytes");
	git_oid_tostr(v, GIT_OID_HEXSZ + 1, id);
	hub_resp_header(c->resp, "X-Gitlab-Blob-Id", v);
	snprintf(v, sizeof v, "%" PRIu64, size);
	hub_resp_header(c->resp, "X-Gitlab-Size", v);
}

static const char *raw_ctype(const char *head, size_t n)
{
	return looks_binary(head, n) ? "application/octet-stream" : "text/plain; charset=utf-8";
}

/* A small blob, answered from memory. */
static void serve_raw(struct repo_ctx *c, const git_blob *blob)
{
	const char *data = git_blob_rawcontent(blob);
	uint64_t size = (uint64_t)git_blob_rawsize(blob), from = 0, to = 0;
	int r = raw_range(c, size, &from, &to);

	if (r < 0)
		return;
	repo_resp_room(c, (size_t)size);
	if (r > 0)
		hub_resp_raw(c->resp, 206, raw_ctype(data, (size_t)size), data + from,
		             (size_t)(to - from + 1));
	else
		hub_resp_raw(c->resp, 200, raw_ctype(data, (size_t)size), data, (size_t)size);
	raw_headers(c, git_blob_id(blob), size, r, from, to);
}

/* Up to cap bytes from the start of fd. */
static int fd_head(int fd, char *out, size_t cap, size_t *got)
{
	*got = 0;
	while (*got < cap) {
		ssize_t n = pread(fd, out + *got, cap - *got, (off_t)*got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/* A large blob, sent from a file of the blob cache (blobcache.h) so that it is never held
 * in memory. HEAD and 416 materialize nothing: HEAD uses a cached copy when one is
 * trusted, else reads the first bytes from git for the Content-Type. */
static void serve_raw_large(struct repo_ctx *c, const git_oid *id, uint64_t size)
{
	const char *dir = c->req->hub->dir, *git_dir = c->p->repo_path;
	bool head = !strcmp(c->req->method, "HEAD");
	uint64_t from = 0, to = 0;
	char sha[GIT_OID_HEXSZ + 1], *first = NULL;
	size_t got = 0;
	int fd = -1, ranged, r;

	ranged = raw_range(c, size, &from, &to);
	if (ranged < 0)
		return;
	first = malloc(BINARY_PROBE);
	if (!first) {
		hub_resp_error(c->resp, 500, "500 Internal Server Error");
		return;
	}
	git_oid_tostr(sha, sizeof sha, id);
	if (head && blobcache_lookup(dir, sha, size, &fd) < 0) {
		/* no file: the length alone answers HEAD (hub.h, fd_len) */
		r = blobcache_peek(dir, git_dir, sha, size, first, BINARY_PROBE, &got);
	} else {
		r = head ? 0 : blobcache_open(dir, git_dir, sha, size, &fd);
		if (r == 0)
			r = fd_head(fd, first, BINARY_PROBE, &got);
	}
	if (r < 0) {
		log_error("cannot serve blob %s of project %" PRId64 ": %s", sha, c->p->id,
		          strerror(-r));
		if (fd >= 0)
			close(fd);
		hub_resp_error(c->resp, 500, "500 Internal Server Error");
		goto out;
	}
	hub_resp_raw(c->resp, ranged ? 206 : 200, raw_ctype(first, got), NULL, 0);
	c->resp->fd = fd;
	c->resp->fd_offset = ranged ? from : 0;
	c->resp->fd_len = ranged ? to - from + 1 : size;
	raw_headers(c, id, size, ranged, from, to);
out:
	free(first);
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

/* The SHA-256 of a large blob, streamed by the blob cache. */
static int sha256_large(struct repo_ctx *c, const git_oid *id, uint64_t size,
                        char out[HASH_SHA256_HEX + 1])
{
	uint8_t bin[HASH_SHA256_LEN];
	char sha[GIT_OID_HEXSZ + 1];
	int r;

	git_oid_tostr(sha, sizeof sha, id);
	r = blobcache_sha256(c->req->hub->dir, c->p->repo_path, sha, size, bin);
	if (r < 0)
		return log_ret(r, "cannot hash blob %s of project %" PRId64 ": %s", sha, c->p->id,
		               strerror(-r));
	hash_hex(out, bin, sizeof bin);
	return 0;
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
	if (head && h.size > BLOBCACHE_THRESHOLD) {
		/* Hashed as a stream: a HEAD neither holds nor caches a large blob. */
		if (h.size <= REPO_MAX_RAW_BLOB && sha256_large(c, &h.blob_id, h.size, sha) < 0) {
			hub_resp_error(c->resp, 500, "500 Internal Server Error");
			goto out;
		}
		r = 0;
	} else {
		r = blob_load(c, &h.blob_id, head ? REPO_MAX_RAW_BLOB : REPO_MAX_JSON_BLOB, &blob);
	}
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
	/* Large blobs, whatever their size, go through the file cache; they are never LFS
	 * pointers (those are at most 1 KiB). */
	r = h.size > BLOBCACHE_THRESHOLD ? 0 : blob_load(c, &h.blob_id, BLOBCACHE_THRESHOLD, &blob);
	if (r < 0)
		repo_fail(c, "reading a blob");
	else {
		/* lfs=true: a pointer whose object is stored answers the object itself */
		if (!blob)
			serve_raw_large(c, &h.blob_id, h.size);
		else if (!repo_bool(hub_req_query(c->req, "lfs")) ||
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
	uint64_t size;
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
	r = blob_size(c, &id, &size);
	if (r == 0 && *tail && size > BLOBCACHE_THRESHOLD) {
		serve_raw_large(c, &id, size);
		return;
	}
	if (r == 0)
		r = blob_load(c, &id, *tail ? BLOBCACHE_THRESHOLD : REPO_MAX_JSON_BLOB, &blob);
	if (r == -ENOENT)
		hub_resp_error(c->resp, 404, "404 Blob Not Found");
	else if (r == -EFBIG)
		too_large(c);
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
