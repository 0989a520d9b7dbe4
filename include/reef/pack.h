/* Packs received from a server (fs/pack.c): a git pack file indexed with libgit2's
 * indexer in a private directory under the cache's tmp/, then read object by object.
 * Indexing computes every object's id from its content, so an object read by id from
 * a pack is verified by construction; the caller copies what it wants into the store
 * (odb_tree_put_raw; blobs odb_blob_put_hashed, not hashed again) and frees the pack, which
 * removes its files. No HTTP here. Functions return 0 or a negative errno. */
#ifndef REEF_PACK_H
#define REEF_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "reef/tree.h"

struct pack;

enum pack_type { PACK_COMMIT = 1, PACK_TREE = 2, PACK_BLOB = 3, PACK_TAG = 4 };

/* tmp_dir: an existing directory private to this process's user (the cache's tmp/).
 * max_bytes caps the pack's size (-EFBIG beyond it). */
int pack_new(struct pack **out, const char *tmp_dir, uint64_t max_bytes);
/* Feeds the next bytes of the pack stream. */
int pack_append(struct pack *p, const void *data, size_t len);
/* Ends the stream: indexes the pack (-EIO when it is malformed, truncated or has deltas
 * against objects it does not hold) and opens it for reading. */
int pack_commit(struct pack *p);
/* Objects in the committed pack. */
size_t pack_count(const struct pack *p);
/* One object by id: its type and a malloc'ed copy of its content (capped by max: -EFBIG).
 * -ENOENT when the pack does not hold it. */
int pack_read(struct pack *p, const char *oid, enum pack_type *type, void **data, size_t *len,
              size_t max);
void pack_free(struct pack *p); /* accepts NULL; removes the pack's files */

/* Parses a git tree object's content into entries (at most max; -EFBIG beyond, -EIO when
 * malformed: bad mode, empty or unsafe name, truncated id). Sizes are -1. *out malloc'ed. */
int pack_tree_parse(const void *data, size_t len, size_t max, struct tree_entry **out, size_t *n);
/* The committer time (seconds since the epoch) of a git commit object's content; -EIO
 * when its committer line is malformed, -ENOENT when it has none. */
int pack_commit_time(const void *data, size_t len, int64_t *when);
/* The tree id a git commit object's content names (its first line). */
int pack_commit_tree(const void *data, size_t len, char tree[41]);

#endif
