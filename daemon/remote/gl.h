/* The GitLab client of reefd (daemon/remote/: http.c the request core, rest.c the REST v4
 * routes, lfs.c Git LFS), over libcurl. Knows HTTP and
 * GitLab's JSON; knows nothing of FUSE or the cache. See docs/cache.md.
 *
 * Every call is thread-safe (easy handles come from a small pool, so connections are
 * reused). The token goes in a PRIVATE-TOKEN header, only to URLs under the configured
 * server, never in a URL and never in a log line. Connect timeout 5 s; a transfer that
 * moves nothing for GL_STALL_S seconds is aborted; JSON bodies are capped (GL_JSON_MAX)
 * and parsed with a nesting cap; lists follow pagination up to a total item cap; 429 is
 * retried after Retry-After (bounded).
 *
 * Errors (negative errno, one table in http.c): -ENOENT 404/410; -EACCES 401/403; -EINVAL
 * 400/422 or a malformed argument; -EIO for everything else that went wrong with the
 * server: unreachable, timed out, 5xx, too many 429s, an oversize or malformed body. */
#ifndef REEF_GL_H
#define REEF_GL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/tree.h"

#define GL_JSON_MAX         ((size_t)32 << 20)
#define GL_LIST_MAX         100000 /* items of a paginated listing */
#define GL_TREE_MAX         262144 /* entries of one directory listing */
#define GL_STALL_S          15
#define GL_CONNECT_MS       5000
#define GL_RETRY_MAX        5   /* retries of a 429 */
#define GL_RETRY_WAIT_S     60  /* default retry budget: seconds a request may spend waiting */
#define GL_INFLIGHT_DEFAULT 16  /* requests in flight per process */
#define GL_LFS_BATCH_MAX    100 /* objects per LFS batch request, as git-lfs sends */

struct gl;

/* Process-wide limits (0 keeps a default): the seconds one request may spend waiting on
 * Retry-After or RateLimit pacing (GL_RETRY_WAIT_S; a server asking for longer gets -EIO
 * at once), and the requests in flight at a time (GL_INFLIGHT_DEFAULT). Call before
 * the first request. */
void gl_limits_set(unsigned retry_max_s, unsigned max_in_flight);

/* server: base URL without /api/v4, e.g. http://127.0.0.1:8080. token may be NULL. */
int gl_new(struct gl **out, const char *server, const char *token);
void gl_free(struct gl *g); /* accepts NULL */
/* Requests made and requests failed since gl_new (a failure is anything but an answer:
 * unreachable, TLS, an HTTP error status other than 404, an aborted transfer). */
void gl_counters(struct gl *g, uint64_t *requests, uint64_t *errors);
/* Connections opened so far (requests over a kept-alive connection open none). */
uint64_t gl_connections(struct gl *g);

/* fn(arg, "GET URL: why") after every request that failed and was counted as an error,
 * from the thread that made it; set before the first request. */
void gl_set_err_hook(struct gl *g, void (*fn)(void *arg, const char *msg), void *arg);

/* JSON results are new references. */
int gl_user(struct gl *g, json_t **out);
/* gl_user that also says why it failed, in one line (e.g. "Could not resolve host: x",
 * "HTTP 401"), into why (n bytes). */
int gl_user_why(struct gl *g, json_t **out, char *why, size_t n);
/* Projects the user is a member of: membership=true&simple=true, all pages. */
int gl_projects_list(struct gl *g, json_t **out);
/* By full path ("acme/cats", encoded here) or decimal id. */
int gl_project_get(struct gl *g, const char *path_or_id, json_t **out);
int gl_branches_list(struct gl *g, int64_t project_id, json_t **out);
int gl_branch_get(struct gl *g, int64_t project_id, const char *name, json_t **out);
int gl_tags_list(struct gl *g, int64_t project_id, json_t **out);
int gl_tag_get(struct gl *g, int64_t project_id, const char *name, json_t **out);
/* A commit by sha, abbreviated sha, branch or tag; "id" holds the full id. */
int gl_commit_get(struct gl *g, int64_t project_id, const char *ref, json_t **out);

/* One directory of ref at path ("" for the root), all pages (keyset pagination).
 * Entries in the server's order; size is the server's "size" when given, else -1.
 * Every entry is validated (name, id, mode matching type); *out malloc'ed. */
int gl_tree_list(struct gl *g, int64_t project_id, const char *ref, const char *path,
                 struct tree_entry **out, size_t *n);

/* HEAD …/repository/files/:path?ref=: the blob id and size of one path. */
int gl_file_head(struct gl *g, int64_t project_id, const char *ref, const char *path,
                 char blob_id[41], uint64_t *size);

/* Streams GET …/repository/blobs/:sha/raw. begin is called once before the first byte
 * with the announced Content-Length (-1 when none); then sink with each chunk. A
 * negative return from either aborts the transfer and is returned. More than max bytes
 * (announced or sent) is -EIO. */
struct gl_sink {
	int (*begin)(void *arg, int64_t content_length);
	int (*data)(void *arg, const void *data, size_t len);
	void *arg;
};
int gl_blob_raw(struct gl *g, int64_t project_id, const char *sha, uint64_t max,
                const struct gl_sink *sink);

/* Transfers that move nothing for stall_s seconds are aborted (0: GL_STALL_S). */
void gl_set_stall(struct gl *g, unsigned stall_s);
/* Until when (ms since the epoch) the last 429's Retry-After asks us to wait. */
int64_t gl_retry_until(struct gl *g);

/* What a streaming GET fetches: a URL (on our server, or an LFS action's href anywhere),
 * extra headers (an LFS action's, already validated: no line breaks; sent only to the
 * URL's origin) and which credentials go with it (only ever to our server). */
struct gl_lfs_src;
struct gl_target {
	char *url;
	char **headers; /* "Name: value" lines */
	size_t nheaders;
	bool basic;         /* git-over-HTTP auth (Basic, token as password) unless headers carry
	                     * one; only on our server */
	int64_t expires_ms; /* an LFS action's expiry (CLOCK_REALTIME ms; 0: none) */
	struct gl_lfs_src *lfs; /* an LFS object's: gl_stream asks the batch API again when
	                         * the action expired or its host refused it (401/403) */
};
void gl_target_free(struct gl_target *t); /* accepts an emptied target */
/* …/repository/blobs/:sha/raw */
int gl_blob_target(struct gl *g, int64_t project_id, const char *sha, struct gl_target *out);
/* Asks the LFS batch API (POST <server>/<project>.git/info/lfs/objects/batch, Basic auth
 * with the token as password) for the download action of one object; -ENOENT when the
 * server has no such object. The href may be on any host (object storage: a presigned
 * URL); see docs/cache.md "Git LFS" for what is sent where. Headers are never logged. */
int gl_lfs_target(struct gl *g, const char *project_path, const char *oid, uint64_t size,
                  struct gl_target *out);
/* The same for n objects (1..GL_LFS_BATCH_MAX) in one batch request: out[i] and err[i]
 * (0, -ENOENT the server lacks it, -EIO a bad or missing action) answer objs[i]. Returns
 * 0 when the batch was answered, else its error (every out[i] empty, err[i] the same). */
struct gl_lfs_obj {
	const char *oid; /* sha256 hex */
	uint64_t size;
};
int gl_lfs_targets(struct gl *g, const char *project_path, const struct gl_lfs_obj *objs, size_t n,
                   struct gl_target *out, int *err);

/* Uploads an object (sha256 oid, size bytes read from fd) with the batch API's upload
 * and verify actions; 0 when the server has it (it may have had it already). */
int gl_lfs_upload(struct gl *g, const char *project_path, const char *oid, uint64_t size, int fd);
/* A streaming GET from offset off (always with "Range: bytes=off-"). Thread-safe for
 * one target shared by several fetchers. begin is called once,
 * before the first byte, with the offset of the first byte the server sends: off when
 * it honoured the range (206, partial true), 0 when it sent the whole object (200), and
 * the object's
 * total size when known (-1 otherwise). A negative return from a callback aborts the
 * transfer and is returned (-ECANCELED stops it without counting an error). More than
 * max bytes is -EIO. */
struct gl_stream_sink {
	int (*begin)(void *arg, bool partial, uint64_t first, int64_t total);
	int (*data)(void *arg, const void *data, size_t len);
	void *arg;
};
int gl_stream(struct gl *g, const struct gl_target *t, uint64_t off, uint64_t max,
              const struct gl_stream_sink *sink);

/* git smart HTTP, protocol v2 (remote/gitproto.c). gl_git_caps asks a project's
 * upload-pack for its capabilities: 0 when it speaks v2 with `fetch` supporting
 * `shallow` and `filter` (sha1 objects), -ENOTSUP when not (use the REST API), or an
 * error. gl_git_fetch runs upload-pack's `fetch` for wants (full commit or object ids):
 * trees_only asks for `deepen 1` and `filter blob:none` (a commit and all its trees);
 * otherwise exactly the wanted objects (blobs). The pack's bytes go to data as they
 * arrive (at most max bytes of answer); the pack is complete when it returns 0. */
int gl_git_caps(struct gl *g, const char *project_path);
int gl_git_fetch(struct gl *g, const char *project_path, const char *const *wants, size_t nwants,
                 bool trees_only, uint64_t max, int (*data)(void *arg, const void *d, size_t n),
                 void *arg);

/* Pushes a pack over smart HTTP (POST <project>.git/git-receive-pack, git's
 * gitprotocol-pack "pushing data", report-status and side-band-64k): the ref moves from
 * old to new only if it still is at old (receive-pack's compare-and-swap: a ref that
 * moved meanwhile is refused, never overwritten). pack_fd holds the whole pack
 * (pack_len bytes). Returns 0 when the server answered (*rep says whether the ref moved:
 * ref_ok, or the reason and any hook message), or the request's error (-EACCES when the
 * server refused the token the push). */
struct gl_push_report {
	bool unpack_ok;
	bool seen_ref;
	bool ref_ok;
	char unpack[128]; /* unpack status when not ok */
	char reason[256]; /* "ng" reason */
	char msg[1024];   /* side-band messages (hooks: a protected branch's refusal) */
};
int gl_git_push(struct gl *g, const char *project_path, const char *ref, const char *old,
                const char *new_id, int pack_fd, uint64_t pack_len, struct gl_push_report *rep);

/* GraphQL (remote/graphql.c): the blobs of paths in revision ref (a full commit id) of a
 * project, at most GL_GQL_PATHS a request: out[i] for paths[i], found false when the
 * server left the path out (no such file). -ENOTSUP when the server has no GraphQL
 * endpoint (remembered: later calls answer -ENOTSUP at once), -ENOENT when it shows no
 * such project. Sizes are the server's word (shown, never trusted for content). */
#define GL_GQL_PATHS 100
struct gl_blob_info {
	bool found;
	bool lfs;         /* the blob is an LFS pointer */
	char oid[41];     /* the blob's id */
	int64_t size;     /* the git blob's size */
	int64_t raw_size; /* the LFS object's size when lfs, else -1 */
	char lfs_oid[65]; /* when lfs */
};
int gl_blobs_info(struct gl *g, const char *project_path, const char *ref, const char *const *paths,
                  size_t n, struct gl_blob_info *out);
bool gl_graphql_supported(struct gl *g);

/* Any JSON or text route under the server, for callers beyond the repository (the
 * management API, pipelines and jobs): path starts at the server root ("/api/v1/…",
 * "/api/v4/…"); method is GET or POST (body: JSON, "{}" when NULL); header is one extra
 * "Name: value" line or NULL. *status gets the HTTP status (0: no answer); *out (may be
 * NULL) a malloc'ed NUL-terminated copy of the body — for an error status its first
 * 4 KiB, so callers can show the server's message. Returns 0 for 2xx, else as above. */
int gl_call(struct gl *g, const char *method, const char *path, const char *body,
            const char *header, long *status, char **out, size_t *out_len);

#endif
