/* The local object store (fs/odb.c): verified git objects in a per-server cache dir.
 * Trees and small blobs live in a libgit2 object database (cache/git, a bare repo);
 * blobs at or above ODB_RAW_THRESHOLD live raw and content-addressed in cache/raw/xx/…
 * (LFS objects likewise in cache/lfs/xx/…, by sha256)
 * so a read at any offset is a pread. Nothing becomes visible before it is verified
 * against its id. No HTTP here. Functions return 0 or a negative errno. */
#ifndef REEF_ODB_H
#define REEF_ODB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reef/tree.h"

#define ODB_RAW_THRESHOLD ((uint64_t)1 << 20)
/* odb_writer_new's size when the server did not say: the bytes are hashed at commit. */
#define ODB_SIZE_UNKNOWN UINT64_MAX
/* The largest blob the store accepts. */
#define ODB_BLOB_MAX ((uint64_t)1 << 40)

struct odb;
struct odb_writer;
struct odb_blob;

int odb_open(struct odb **out, const char *cache_dir);
void odb_close(struct odb *o);

bool odb_blob_has(struct odb *o, const char *oid);

/* Streaming blob download: bytes are hashed as they arrive ("blob <size>\0" + data);
 * commit checks size and id (-EIO on mismatch, nothing stored) and makes it visible.
 * size must be the exact blob size (the writer rejects more bytes than that with -EIO),
 * or ODB_SIZE_UNKNOWN: then the bytes go to a temp file and are hashed at commit.
 * Large blobs are written to <cache>/tmp and renamed into raw/ only once verified. */
int odb_writer_new(struct odb_writer **out, struct odb *o, const char *oid, uint64_t size);
int odb_writer_write(struct odb_writer *w, const void *data, size_t len);
int odb_writer_commit(struct odb_writer *w); /* frees w */
void odb_writer_abort(struct odb_writer *w); /* frees w; accepts NULL */
/* Verifies and stores a whole blob held in memory. */
int odb_blob_put(struct odb *o, const char *oid, const void *data, size_t len);
/* Stores a whole blob whose id the caller computed from these very bytes (a pack read
 * by the id libgit2's indexer computed from its content): not hashed a second time. */
int odb_blob_put_hashed(struct odb *o, const char *oid, const void *data, size_t len);

/* Opens a stored blob for reading; -ENOENT when absent. Thread-safe. Small blobs are
 * read into memory and re-hashed; a raw file modified since it was verified is re-hashed.
 * An object found damaged is deleted and reported -ENOENT, so the caller fetches it. */
int odb_blob_open(struct odb *o, const char *oid, struct odb_blob **out);
uint64_t odb_blob_size(const struct odb_blob *b);
/* Like pread(2): bytes read (0 at end) or a negative errno. */
ssize_t odb_blob_pread(struct odb_blob *b, void *buf, size_t n, uint64_t off);
/* The raw file's descriptor for zero-copy replies, or -1 for blobs held in memory. */
int odb_blob_fd(const struct odb_blob *b);
void odb_blob_close(struct odb_blob *b); /* accepts NULL */

/* Builds the git tree object from entries (any order; sorted git's way here), hashes it
 * and compares it with expected_oid when given (-EIO on mismatch). Stores it in the
 * ODB and writes its id to out_oid. */
int odb_tree_put(struct odb *o, const char *expected_oid, const struct tree_entry *e, size_t n,
                 char out_oid[41]);

/* Stores a git tree object's content (as a pack carried it, fs/pack.c) under its id,
 * which libgit2 computes again (-EIO on mismatch). */
int odb_tree_put_raw(struct odb *o, const char *oid, const void *data, size_t len);
/* The store's temp directory (for fs/pack.c's packs; swept at odb_open). */
const char *odb_tmp_dir(struct odb *o);

/* Git LFS objects, by sha256 (hex), raw under cache/lfs/xx/…, verified like raw blobs. */
enum odb_kind { ODB_KIND_BLOB, ODB_KIND_LFS };
bool odb_lfs_has(struct odb *o, const char *oid);
int odb_lfs_open(struct odb *o, const char *oid, struct odb_blob **out);

/* A new temp file in cache/tmp for a download whose bytes the caller hashes itself (it
 * is removed at the next odb_open once this process is gone). path receives its name. */
int odb_tmp_new(struct odb *o, char *path, size_t len, int *fd);
/* Makes a temp file whose content the caller verified against oid the stored object
 * (raw for blobs, lfs/ for LFS objects); size must be the file's size. The file keeps
 * its descriptor; it is renamed, so tmp is gone afterwards. */
int odb_publish(struct odb *o, enum odb_kind kind, const char *oid, int fd, const char *tmp,
                uint64_t size);
/* Deletes a stored blob (raw file and/or loose object) or LFS object. *freed: bytes. */
int odb_remove(struct odb *o, enum odb_kind kind, const char *oid, uint64_t *freed);
/* Bytes an object takes on disk (the loose object's compressed size for small blobs). */
int odb_disk_size(struct odb *o, enum odb_kind kind, const char *oid, uint64_t *bytes);
/* Calls fn for every stored blob (raw and loose) and LFS object; a non-zero return
 * stops the walk and is returned. */
int odb_foreach(struct odb *o,
                int (*fn)(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes),
                void *arg);

/* Bytes and objects held (raw files, LFS objects + ODB), for status. */
int odb_usage(struct odb *o, uint64_t *bytes, uint64_t *objects);

#endif
