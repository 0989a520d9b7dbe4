/* Bulk fetches of reefd (daemon/fetch.c): many objects in one round trip over git's
 * protocol v2 (remote/gitproto.c), each verified (a pack's objects are indexed by the
 * hash of their content, fs/pack.c) and copied into the object store and the index.
 * Policy — when to fetch what — stays in cache.c. Thread-safe; errors as gl.h's. */
#ifndef REEF_FETCH_H
#define REEF_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "gl.h"
#include "reef/idx.h"
#include "reef/odb.h"

#define FETCH_TREES_PACK_MAX ((uint64_t)1 << 30) /* a commit's trees, compressed */
#define FETCH_TREES_MAX      1000000             /* trees of one commit */
#define FETCH_BLOBS_MAX      4096                /* blobs in one batch */

/* The commit and every tree of it (`deepen 1`, `filter blob:none`): each tree stored
 * (odb) and indexed (idx_tree_put), and commit → root tree recorded (idx_commit_put).
 * *ntrees: how many trees the walk stored. */
int fetch_commit_trees(struct gl *g, struct odb *o, struct idx *x, const char *project,
                       const char *commit, char tree_oid[41], size_t *ntrees);

/* Blobs by id in one pack (at most FETCH_BLOBS_MAX, pack at most max_bytes): each
 * one the pack holds is stored in the odb (verified again there) and its size indexed;
 * stored is called for each (may be NULL). Returns how many were stored, or an error
 * (the request failed; blobs the pack lacks are simply not stored). */
int fetch_blobs(struct gl *g, struct odb *o, struct idx *x, const char *project,
                const char *const *oids, size_t n, uint64_t max_bytes,
                void (*stored)(void *arg, const char *oid, uint64_t size), void *arg);

#endif
