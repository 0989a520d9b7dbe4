/* Git LFS on reef-hub: the batch API (basic transfer), GitLab's object routes, an explicit
 * "no locking" answer, raw files with lfs=true and LFS storage accounting.
 *
 * Routes under <namespace path>/<project>.git/:
 *   POST info/lfs/objects/batch          batch API (download: read access, upload: developer)
 *   POST info/lfs/objects/verify         the verify action handed out with uploads
 *   GET/POST info/lfs/locks[/…]          501: no locking (git-lfs then skips lock checks)
 *   GET  gitlab-lfs/objects/<oid>        the object, with single-range support
 *   PUT  gitlab-lfs/objects/<oid>/<size> streamed to DIR/lfs/tmp, sha256 and size checked
 *
 * Objects live once, content-addressed, in DIR/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>;
 * table lfs_objects(project_id, oid, size) links them to projects, and an object is only
 * served through a project that links it (an uploaded oid is no capability elsewhere).
 * The actions' Authorization header carries a token signed with DIR/lfs/secret
 * (HMAC-SHA256 over project id, operation, oid and expiry), valid HUB_LFS_TOKEN_TTL
 * seconds; the object routes also take the caller's own Basic/Bearer credentials. */
#ifndef REEF_HUB_LFS_H
#define REEF_HUB_LFS_H

#include <stdbool.h>
#include <stdint.h>

#include "hub.h"

#define HUB_LFS_MAX_OBJECT        ((uint64_t)64 << 30) /* one uploaded object */
#define HUB_LFS_MAX_BATCH_OBJECTS 1000
#define HUB_LFS_MAX_JSON          ((size_t)2 << 20) /* batch, verify and locks bodies */
#define HUB_LFS_TOKEN_TTL         3600
#define HUB_LFS_POINTER_MAX       1024 /* git-lfs never writes a larger pointer */
#define HUB_LFS_CONTENT_TYPE      "application/vnd.git-lfs+json"

struct hub_lfs; /* one LFS request in progress */

/* Creates DIR/lfs/{objects,tmp} and the lfs_objects table, loads (or makes) the signing
 * secret and removes uploads a previous hub left unfinished. Call once before serving. */
int hub_lfs_init(struct hub *hub);
void hub_lfs_shutdown(void);

/* Parses and checks a batch request body: 0 with *root (the caller frees it; its
 * "objects" hold at most HUB_LFS_MAX_BATCH_OBJECTS valid oid/size pairs) and *upload,
 * or the HTTP status to answer with msg. Pure: fuzzed by tests/fuzz/fuzz_lfs_batch.c. */
int hub_lfs_batch_parse(const char *body, size_t len, json_t **root, bool *upload, char *msg,
                        size_t msglen);
/* True when the raw path names an LFS route of some project (see above). */
bool hub_lfs_match(const char *path);
/* Authenticates the caller and checks what the headers allow. 0: go on (feed the body
 * to hub_lfs_body, then call hub_lfs_finish); 1: resp holds the answer to send. */
int hub_lfs_start(struct hub_req *req, struct hub_resp *resp, const char *path,
                  struct hub_lfs **out);
/* Takes request body bytes: buffered (JSON routes, capped) or streamed to disk (PUT).
 * Problems are remembered and answered by hub_lfs_finish; 0, or a negative errno when
 * the server should answer at once and read no further: -EFBIG (a JSON body over
 * HUB_LFS_MAX_JSON: 413), -EMSGSIZE (an upload longer than its declared size: 400; its
 * temporary file is already gone). */
int hub_lfs_body(struct hub_lfs *l, const void *data, size_t len);
/* Answers the request into resp (an fd body for object downloads). */
void hub_lfs_finish(struct hub_req *req, struct hub_resp *resp, struct hub_lfs *l);
/* Frees the request; an unfinished upload's temporary file is removed. NULL is fine. */
void hub_lfs_free(struct hub_lfs *l);

/* For GET …/repository/files/:path/raw?lfs=true: when blob (len bytes) is a valid LFS
 * pointer whose object is stored and linked to project p, answers the object (Range
 * honoured) and returns true; otherwise leaves resp alone and returns false, and the
 * caller serves the pointer bytes. */
bool hub_lfs_serve_pointer(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                           const void *blob, size_t len);

/* Bytes of LFS objects linked to the project (an object shared by two projects counts
 * for both). 0 or a negative errno. */
int hub_lfs_project_bytes(struct hub *hub, int64_t project_id, uint64_t *out);

/* --- exposed for unit tests --- */

/* Parses a git-lfs pointer (spec v1 or the legacy hawser URL): 0 with the oid (64
 * lowercase hex) and size, -EINVAL when the bytes are not exactly a valid pointer. */
int hub_lfs_pointer_parse(const void *data, size_t len, char oid[65], uint64_t *size);
/* Shared by every ranged route (LFS objects, raw files and blobs). A single "bytes=a-b" /
 * "bytes=a-" / "bytes=-n" range against size: 1 with [*from, *to], 0 when absent or not honoured
 * (serve it whole), -ERANGE when unsatisfiable. */
int hub_lfs_range_parse(const char *header, uint64_t size, uint64_t *from, uint64_t *to);
/* Signs (project, op 'd'ownload|'u'pload|'v'erify, oid, expiry) with a 32-byte key into
 * out ("reeflfs1.<expires>.<hex mac>"); checks one at time now: 0 or -EACCES. */
int hub_lfs_token_sign(const uint8_t key[32], int64_t project_id, char op, const char *oid,
                       int64_t expires, char *out, size_t n);
int hub_lfs_token_check(const uint8_t key[32], const char *token, int64_t project_id, char op,
                        const char *oid, int64_t now);

#endif
