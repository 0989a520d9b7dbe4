/* The LMDB index (fs/idx.c): fast lookups beside the object store. One environment
 * (cache/index.lmdb) with named databases: tree listings by tree id (with sizes), commit
 * → root tree id, ref → commit with fetch time, project path → id, blob id → size.
 * Thread-safe. Functions return 0, -ENOENT when the key is absent, or a negative errno. */
#ifndef REEF_IDX_H
#define REEF_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "reef/tree.h"

struct idx;

int idx_open(struct idx **out, const char *path, size_t map_size);
void idx_close(struct idx *x);

int idx_tree_put(struct idx *x, const char *tree_oid, const struct tree_entry *e, size_t n);
/* *out is malloc'ed (free()); entries in git order. */
int idx_tree_get(struct idx *x, const char *tree_oid, struct tree_entry **out, size_t *n);

int idx_commit_put(struct idx *x, const char *commit, const char *tree_oid);
int idx_commit_get(struct idx *x, const char *commit, char tree_oid[41]);

/* ref is e.g. "branch:main", "tag:v1" */
int idx_ref_put(struct idx *x, int64_t project_id, const char *ref, const char *commit,
                int64_t fetched_at);
int idx_ref_get(struct idx *x, int64_t project_id, const char *ref, char commit[41],
                int64_t *fetched_at);

int idx_project_put(struct idx *x, const char *path, int64_t id, const char *default_branch);
int idx_project_get(struct idx *x, const char *path, int64_t *id, char *default_branch,
                    size_t db_len);

int idx_size_put(struct idx *x, const char *oid, uint64_t size);
int idx_size_get(struct idx *x, const char *oid, uint64_t *size);

#endif
