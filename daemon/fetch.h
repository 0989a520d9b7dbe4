/* Bulk fetches of reefd (daemon/fetch.c): many objects in one round trip over git's
 * protocol v2 (remote/gitproto.c), each verified (a pack's objects are named by the
 * hash of their content: fs/pack.c for trees, fs/packstream.c for blobs) and copied into
 * the object store and the index.
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

/* Blobs by id in one pack (at most FETCH_BLOBS_MAX, pack at most max_bytes), parsed as
 * it streams in: each wanted blob the pack holds is stored in the odb under the id its
 * content hashed to, the moment it is complete, and stored is called for it then (may
 * be NULL; from the fetching thread), so a reader of it need not wait for the rest.
 * Sizes are indexed at the end. Returns how many were stored, or an error (the request
 * failed, or the pack is malformed or its checksum wrong: what was stored before stays,
 * each blob verified by its id; blobs the pack lacks are simply not stored). */
int fetch_blobs(struct gl *g, struct odb *o, struct idx *x, const char *project,
                const char *const *oids, size_t n, uint64_t max_bytes,
                void (*stored)(void *arg, const char *oid, uint64_t size), void *arg);

#endif
