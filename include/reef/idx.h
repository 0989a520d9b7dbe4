/* The LMDB index (fs/idx.c): fast lookups beside the object store. One environment
 * (cache/index.lmdb, a single file plus its -lock file) with named databases: tree
 * listings by tree id (with sizes), commit → root tree id, ref → commit with fetch time,
 * project path → id with fetch time, blob id → size, blob id → LFS verdict, cached object
 * → size and last access. Values are a compact versioned
 * binary encoding (docs/cache.md). Thread-safe (MDB_NOTLS: any thread may call).
 * Functions return 0, -ENOENT when the key is absent, or a negative errno (-ENOSPC when
 * the map is full, -EINVAL for a malformed id or name). */
#ifndef REEF_IDX_H
#define REEF_IDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/tree.h"

#define IDX_MAP_SIZE_DEFAULT ((size_t)1 << 30)
#define IDX_TREE_MAX         ((size_t)1 << 20) /* entries in one stored listing */

struct idx;

/* map_size 0 means IDX_MAP_SIZE_DEFAULT. */
int idx_open(struct idx **out, const char *path, size_t map_size);
void idx_close(struct idx *x); /* accepts NULL */
/* Called about once a second by a maintenance thread: drops the pages of LMDB's map left
 * in reefd's resident set (fs/idx.c, "idx_map_trim"); the page cache keeps them. */
void idx_idle(struct idx *x);

/* Also records the size of every blob entry that carries one (>= 0) in the sizes
 * database, in the same transaction. */
int idx_tree_put(struct idx *x, const char *tree_oid, const struct tree_entry *e, size_t n);
/* *out is malloc'ed (free()); entries in the order they were put (cache: git order). */
int idx_tree_get(struct idx *x, const char *tree_oid, struct tree_entry **out, size_t *n);

int idx_commit_put(struct idx *x, const char *commit, const char *tree_oid);
int idx_commit_get(struct idx *x, const char *commit, char tree_oid[41]);
/* commit → its committer time (seconds since the epoch): what a revision shows as mtime. */
int idx_commit_time_put(struct idx *x, const char *commit, int64_t when);
int idx_commit_time_get(struct idx *x, const char *commit, int64_t *when);

/* ref is e.g. "branch:main", "tag:v1", "commit:3f2a" */
int idx_ref_put(struct idx *x, int64_t project_id, const char *ref, const char *commit,
                int64_t fetched_at);
int idx_ref_get(struct idx *x, int64_t project_id, const char *ref, char commit[41],
                int64_t *fetched_at);
/* Many refs of one project in one write transaction (a branch or tag listing); refs
 * whose name or id is malformed are skipped. */
struct idx_ref {
	const char *ref; /* "branch:<name>", "tag:<name>" */
	char commit[41];
};
int idx_refs_put(struct idx *x, int64_t project_id, const struct idx_ref *refs, size_t n,
                 int64_t fetched_at);

int idx_project_put(struct idx *x, const char *path, int64_t id, const char *default_branch,
                    int64_t fetched_at);
/* default_branch may be NULL; fetched_at may be NULL. -ENOBUFS when db_len is too small. */
int idx_project_get(struct idx *x, const char *path, int64_t *id, char *default_branch,
                    size_t db_len, int64_t *fetched_at);
int idx_project_del(struct idx *x, const char *path);
/* Every project the index knows, in path order (for the cache listing). *out malloc'ed
 * (free()). */
struct idx_project_rec {
	char path[512];
	int64_t id;
};
int idx_project_list(struct idx *x, struct idx_project_rec **out, size_t *n);
/* Every ref of one project the index knows ("branch:main", "tag:v1", "commit:<sha>")
 * with its commit, in name order. *out malloc'ed (free()). */
struct idx_ref_rec {
	char ref[512];
	char commit[41];
};
int idx_ref_list(struct idx *x, int64_t project_id, struct idx_ref_rec **out, size_t *n);

int idx_size_put(struct idx *x, const char *oid, uint64_t size);
int idx_size_get(struct idx *x, const char *oid, uint64_t *size);
/* Fills the size of every blob entry whose size is -1 from the sizes database, in one
 * read transaction. */
int idx_sizes_fill(struct idx *x, struct tree_entry *e, size_t n);

/* Whether a blob is an LFS pointer (a verdict that never changes for a blob id). */
struct idx_lfs {
	bool lfs;
	char oid[65];  /* the LFS object's sha256 when lfs */
	uint64_t size; /* the LFS object's size when lfs, else the blob's */
};
int idx_lfs_put(struct idx *x, const char *blob_oid, const struct idx_lfs *l);
int idx_lfs_get(struct idx *x, const char *blob_oid, struct idx_lfs *l);

/* Sizes, and LFS verdicts where lfs is set, of many blobs in a few write transactions
 * (50 records each): a transaction costs tens of microseconds, a record a fraction of
 * one (a directory's sizes come by the hundred). Records with a malformed oid are
 * skipped. */
struct idx_blob_rec {
	const char *oid;
	uint64_t size;
	const struct idx_lfs *lfs; /* or NULL */
};
int idx_blobs_put(struct idx *x, const struct idx_blob_rec *v, size_t n);

/* Cached objects for the size limit: size and last access, for LRU eviction. */
enum idx_obj_kind { IDX_OBJ_BLOB = 0, IDX_OBJ_LFS = 1 };
struct idx_obj {
	enum idx_obj_kind kind;
	char oid[65]; /* sha1 hex for blobs, sha256 hex for LFS objects */
	uint64_t size;
	int64_t atime; /* ms since the epoch */
};
int idx_obj_put(struct idx *x, enum idx_obj_kind kind, const char *oid, uint64_t size,
                int64_t atime);
/* Many records (created or replaced) in one write transaction; malformed ids skipped. */
int idx_obj_put_many(struct idx *x, const struct idx_obj *o, size_t n);
int idx_obj_get(struct idx *x, enum idx_obj_kind kind, const char *oid, struct idx_obj *out);
int idx_obj_del(struct idx *x, enum idx_obj_kind kind, const char *oid);
/* Raises the last access of each listed object that still has a record, in one write
 * transaction (a later time only). */
int idx_obj_touch(struct idx *x, const struct idx_obj *o, size_t n);
/* Every record, least recently used first. *out malloc'ed (free()). */
int idx_obj_list(struct idx *x, struct idx_obj **out, size_t *n);

#endif
