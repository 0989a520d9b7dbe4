/* The caching layer of reefd (daemon/cache.c): answers every question the filesystem
 * asks — projects, refs, trees, blob sizes, blob contents — from the LMDB index and the
 * object store, going to the server (daemon/remote/) only on a miss or an expired branch.
 * Everything it returns has been verified (trees and blobs against their ids). The FUSE
 * operations use only this interface. Thread-safe; concurrent misses for one object
 * share one download.
 *
 * Errors: -ENOENT the thing does not exist (server said 404); -EACCES the server refused;
 * -EIO the server is unreachable or sent something wrong (and it is not cached);
 * -ENOMEM; -EINVAL for a malformed argument. */
#ifndef REEF_CACHE_H
#define REEF_CACHE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reef/odb.h"
#include "reef/tree.h"

struct cache;

struct cache_opts {
	const char *dir;        /* cache directory (created 0700 if missing) */
	const char *server;     /* base URL, e.g. http://127.0.0.1:8080 (no /api/v4) */
	const char *token;      /* personal access token; never logged */
	unsigned branch_ttl_ms; /* how long a branch head is trusted before re-asking */
	unsigned list_ttl_ms;   /* how long project and ref listings are trusted */
	/* Fields below may be left 0 for their defaults. */
	uint64_t limit;   /* hard cache size in bytes; 0: CACHE_LIMIT_DEFAULT_PCT of the free
	                   * disk at start, at least CACHE_LIMIT_MIN */
	unsigned poll_ms; /* interval between polls of branches in use (default 5000) */
	unsigned workers; /* download worker threads for prefetch (default: 2 per CPU, 2..8) */
	unsigned stall_s; /* abort a transfer that moves nothing for this long (default 15) */
};

#define CACHE_LIMIT_MIN         ((uint64_t)1 << 30)
#define CACHE_LIMIT_DEFAULT_PCT 10
#define CACHE_POLL_MS_DEFAULT   5000

struct cache_project {
	int64_t id;
	char path[1024];          /* path_with_namespace, e.g. "acme/vision/cats" */
	char default_branch[256]; /* "" for an empty repository */
};

enum cache_ref_kind { CACHE_REF_BRANCH, CACHE_REF_TAG, CACHE_REF_COMMIT };

int cache_new(struct cache **out, const struct cache_opts *o);
void cache_free(struct cache *c); /* accepts NULL */

/* One request (GET /user) to see whether the server answers and takes the token: 0, or
 * a negative errno (-EACCES: token refused) with a one-line reason in why (n bytes). */
int cache_check(struct cache *c, char *why, size_t n);
/* Records a failure for .reef/status (last_errors) and logs it: for errors the cache
 * layer does not see, such as refused control requests. */
void cache_err_note(struct cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a failed request of another GitLab client (gl_set_err_hook; arg is the
 * cache): recorded, not logged again. */
void cache_err_hook(void *arg, const char *msg);

/* The authenticated user (GET /user), fetched once; *out is a new reference. */
int cache_user(struct cache *c, json_t **out);
/* The user as already known, without asking the server (-ENOENT when not known yet):
 * for .reef/status, which must answer while the server hangs. */
int cache_user_known(struct cache *c, json_t **out);

/* Projects the user is a member of (listing of the mount root). *out malloc'ed. */
int cache_projects_list(struct cache *c, struct cache_project **out, size_t *n);
/* Any project visible to the user by its full path; -ENOENT when there is none. */
int cache_project_get(struct cache *c, const char *path, struct cache_project *out);

/* Branch or tag names (full names, e.g. "feature/x"). *names is a malloc'ed array of
 * malloc'ed strings; free with cache_names_free. */
int cache_refs_list(struct cache *c, int64_t project_id, enum cache_ref_kind kind, char ***names,
                    size_t *n);
void cache_names_free(char **names, size_t n);

/* Resolves a branch (re-asked after branch_ttl_ms), a tag (cached for ever) or a full or
 * unique abbreviated commit sha (cached for ever) to the full commit id. */
int cache_ref_resolve(struct cache *c, int64_t project_id, enum cache_ref_kind kind,
                      const char *name, char commit[41]);

/* The commit a ref named when last resolved or listed, from the index only (never the
 * network, whatever its age): 0, or -ENOENT when the index does not know the ref. Branch
 * and tag listings (cache_refs_list) record every ref's commit, so a readdir can give
 * each revision the inode number its lookup will give, without a request per ref. */
int cache_ref_peek(struct cache *c, int64_t project_id, enum cache_ref_kind kind, const char *name,
                   char commit[41]);

/* A commit's committer time (seconds since the epoch) as the index knows it: recorded
 * when a branch, tag or commit answer named it, or when its commit object came over git.
 * Never asks the server: -ENOENT when unknown. */
int cache_commit_time(struct cache *c, const char *commit, int64_t *when);

/* The root tree of a commit: its id and entries. *out malloc'ed (free()). */
int cache_root_tree(struct cache *c, int64_t project_id, const char *commit, char tree_oid[41],
                    struct tree_entry **out, size_t *n);
/* A subtree by id; path is the directory's path in commit (the API lists by path).
 * Entries carry sizes where known (-1 otherwise). *out malloc'ed (free()). */
int cache_tree(struct cache *c, int64_t project_id, const char *commit, const char *path,
               const char *tree_oid, struct tree_entry **out, size_t *n);

/* The size of the git blob itself (an LFS pointer's own size: see cache_blob_info for what
 * a file shows) without downloading it where the server can say (HEAD on the files
 * endpoint), else by fetching it. */
int cache_blob_size(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, uint64_t *size);
/* Opens a blob's verified content, downloading it first when not cached (the git blob
 * itself: an LFS pointer is returned as the pointer). Waits for the whole blob; new
 * code reads through cache_obj_open. */
int cache_blob_open(struct cache *c, int64_t project_id, const char *oid, struct odb_blob **out);

/* What a file shows for a blob: an LFS pointer (a small blob in git-lfs's format) is
 * shown as the object it points to. Sizes come from the pointer, the index, the listing
 * (listed_size, -1 when unknown) or a HEAD on the files endpoint; a blob is downloaded
 * only when it is small enough to be a pointer (CACHE_LFS_CANDIDATE) and not cached. */
struct cache_blob_info {
	uint64_t size;      /* the size the file shows (the LFS object's for a pointer) */
	uint64_t blob_size; /* the git blob's own size (the pointer's for LFS) */
	bool lfs;           /* the blob is a valid LFS pointer */
	char lfs_oid[65];   /* its sha256 (hex) when lfs; "" otherwise */
};
int cache_blob_info(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, int64_t listed_size, struct cache_blob_info *info);
/* Whether a blob of this size could be an LFS pointer at all (callers may skip
 * cache_blob_info for listed sizes outside it; -1 means unknown: it could). */
#define CACHE_LFS_CANDIDATE(size) ((size) < 0 || ((size) >= 100 && (size) < 1024))

/* An open object (a blob's content, or the LFS object its pointer names), shared with
 * any concurrent reader and with the download that fills it. A read of part of it waits
 * only until that range has arrived: a large object (>= ODB_RAW_THRESHOLD, or LFS) is
 * served while it streams, ranges far ahead of the stream are fetched with HTTP Range
 * where the server offers it. It is verified when complete; a mismatch, a truncated or
 * stalled transfer makes every read of it -EIO from then on (never cached, logged).
 * An open object is never evicted. */
struct cache_obj;

/* path/commit name the file (for LFS: the project's batch API; for sizes: HEAD); commit
 * and path may be NULL for a plain blob. */
int cache_obj_open(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *oid, struct cache_obj **out);
/* The size of the content (the LFS object's for a pointer). */
uint64_t cache_obj_size(const struct cache_obj *o);
/* Fetches now what an open of known size left for its first read (a small blob comes
 * in its directory's batch, a large one starts streaming); once per handle. 0 or a
 * negative errno; the first read retries after a failure. */
int cache_obj_load(struct cache_obj *o);
/* Like pread(2): bytes read (short only at the end), 0 at the end, or a negative errno
 * (-EIO: the download failed or the object did not verify). Blocks until the range has
 * arrived or the download failed (bounded by the stall timeout). */
ssize_t cache_obj_pread(struct cache_obj *o, void *buf, size_t n, uint64_t off);
/* A descriptor holding the complete, verified content (for splice replies), or -1 while
 * it streams or when it is held in memory: use cache_obj_pread then. Valid until close. */
int cache_obj_fd(struct cache_obj *o);
/* The LFS oid when the object is an LFS object, else NULL. */
const char *cache_obj_lfs_oid(const struct cache_obj *o);
void cache_obj_close(struct cache_obj *o); /* accepts NULL */

/* Downloads everything under the tree tree_oid (at path in commit) into the cache in
 * the background, on a bounded worker pool; LFS objects included. Returns at once;
 * 0, or -EAGAIN when the queue is full. */
int cache_prefetch(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *tree_oid);
/* Drops cached objects: every blob (and LFS object) under tree tree_oid as far as its
 * listings are cached, or the one blob oid when is_tree is false. Objects open by a
 * reader stay. Returns the number of objects dropped or a negative errno. */
int cache_forget(struct cache *c, int64_t project_id, const char *oid, bool is_tree);
/* What the cache holds (.reef/cache.json, docs/layout.md): {"bytes", "objects", "limit"
 * as in cache_stats, "contents": objects held, "files": [{path (from the mount root),
 * size, stored, kind, oid, atime, open}] for every cached file a known revision names,
 * "other": [{kind, oid, stored, atime, open}] for contents no known revision names,
 * "truncated"}. Reads the index only, never the server. */
int cache_list(struct cache *c, json_t **out);
/* Drops the cached contents under every known revision of every project at or under
 * the path prefix ("acme/iris", or a namespace "acme"). Objects open by a reader stay.
 * The number dropped, -ENOENT when no project there is known, or a negative errno. */
int cache_forget_projects(struct cache *c, const char *prefix);
/* Drops every cached content (blobs and LFS objects) nobody has open or is downloading;
 * *kept counts those left. Listings and metadata stay. The number dropped or a negative
 * errno. */
int cache_evict_all(struct cache *c, uint64_t *kept);
/* Bytes and objects stored and the limit, as .reef/status shows them (for statfs; writable
 * branch views keep their overlays within the same limit: see docs/write.md). */
void cache_usage(struct cache *c, uint64_t *bytes, uint64_t *objects, uint64_t *limit);
/* Bytes stored beside the cache under its limit that it cannot evict (the overlays of
 * writable branch views): its eviction keeps objects + reserved + pinned under the limit.
 * fn is called without the cache's locks held; set once, before use. */
void cache_set_pinned(struct cache *c, uint64_t (*fn)(void *arg), void *arg);
/* Evicts objects nobody has open until need more bytes fit beside what is stored and
 * pinned: 0, or -ENOSPC. */
int cache_make_room(struct cache *c, uint64_t need);
/* Pushes a pack moving branch from old to new_id (gl_git_push, daemon/remote/gl.h): 0
 * with *rep saying whether the branch moved, or the request's error. */
struct gl_push_report;
int cache_push(struct cache *c, const char *project_path, const char *branch, const char *old,
               const char *new_id, int pack_fd, uint64_t pack_len, struct gl_push_report *rep);
/* Uploads an LFS object (gl_lfs_upload): sha256 oid, size bytes of fd. */
int cache_lfs_upload(struct cache *c, const char *project_path, const char *oid, uint64_t size,
                     int fd);
/* Expires every branch head and listing now: the next lookup asks the server. */
void cache_refresh(struct cache *c);
/* Changes the hard size limit (0: the default); evicts at once when above it. */
int cache_set_limit(struct cache *c, uint64_t limit);
/* Parses the cache_limit option: a size as size_parse (lib/util.h) reads it, more than 0.
 * -EINVAL when malformed or 0, -ERANGE when too large. */
int cache_limit_parse(const char *s, uint64_t *out);

/* Branches that move. The cache calls fn (from its poller thread, or the thread whose
 * lookup noticed) when it learns a branch head moved; old is "" when unknown. One
 * callback; registering again replaces it; fn NULL removes it. */
typedef void (*cache_branch_moved_fn)(void *arg, int64_t project_id, const char *branch,
                                      const char *old_commit, const char *new_commit);
void cache_on_branch_moved(struct cache *c, cache_branch_moved_fn fn, void *arg);
/* Marks a branch as in use (e.g. at every lookup under it): the poller re-asks its head
 * every poll_ms while it was touched in the last CACHE_BRANCH_IDLE_MS, at most
 * CACHE_POLL_BATCH requests per interval, backing off on errors and 429 (Retry-After). */
void cache_branch_touch(struct cache *c, int64_t project_id, const char *branch);
#define CACHE_BRANCH_IDLE_MS (10 * 60 * 1000)
#define CACHE_POLL_BATCH     16

/* Counters for .reef/status: bytes, objects, limit, hits, misses, hit_ratio, requests,
 * errors, in_flight (downloads), bytes_fetched, last_errors ([{time, message}], newest
 * last). */
int cache_stats(struct cache *c, json_t **out);

#endif
