/* The GitLab REST v4 client of reefd (daemon/gl.c), over libcurl. Knows HTTP and
 * GitLab's JSON; knows nothing of FUSE or the cache. See docs/cache.md.
 *
 * Every call is thread-safe (easy handles come from a small pool, so connections are
 * reused). The token goes in a PRIVATE-TOKEN header, only to URLs under the configured
 * server, never in a URL and never in a log line. Connect timeout 5 s; a transfer that
 * moves nothing for GL_STALL_S seconds is aborted; JSON bodies are capped (GL_JSON_MAX)
 * and parsed with a nesting cap; lists follow pagination up to a total item cap; 429 is
 * retried after Retry-After (bounded).
 *
 * Errors (negative errno, one table in gl.c): -ENOENT 404/410; -EACCES 401/403; -EINVAL
 * 400/422 or a malformed argument; -EIO for everything else that went wrong with the
 * server: unreachable, timed out, 5xx, too many 429s, an oversize or malformed body. */
#ifndef REEF_GL_H
#define REEF_GL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/tree.h"

#define GL_JSON_MAX     ((size_t)32 << 20)
#define GL_LIST_MAX     100000 /* items of a paginated listing */
#define GL_TREE_MAX     262144 /* entries of one directory listing */
#define GL_STALL_S      15
#define GL_CONNECT_MS   5000
#define GL_RETRY_MAX    3  /* retries of a 429 */
#define GL_RETRY_WAIT_S 10 /* longest Retry-After honoured */

struct gl;

/* server: base URL without /api/v4, e.g. http://127.0.0.1:8080. token may be NULL. */
int gl_new(struct gl **out, const char *server, const char *token);
void gl_free(struct gl *g); /* accepts NULL */
/* Requests made and requests failed since gl_new. */
void gl_counters(struct gl *g, uint64_t *requests, uint64_t *errors);

/* JSON results are new references. */
int gl_user(struct gl *g, json_t **out);
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

#endif
