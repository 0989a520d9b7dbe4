/* Large blobs served from files instead of memory.
 *
 * libgit2 (1.5) inflates a blob whole and cannot stream packed objects, so a raw answer
 * for a 1 GiB blob would cost 1 GiB of RAM and a full inflate per request, ranged ones
 * included. Blobs above BLOBCACHE_THRESHOLD are instead streamed once out of the object
 * database by `git cat-file blob` (through a pipe, in bounded chunks), SHA-1 verified
 * over "blob <size>\0" + content while written, fsynced and renamed into a
 * content-addressed cache DIR/blobcache/<sha[0:2]>/<sha[2:]> (files 0600, directories
 * 0700); the HTTP server then sends the file with sendfile.
 *
 * Trust rule: a cache file is served as is only when its inode, size and ctime are those
 * this process recorded right after it verified the bytes (by writing them or by
 * re-hashing them). Anything else - a file left by an earlier run, one written to,
 * truncated or replaced since - is re-hashed first; a file that does not hash to its
 * name is deleted and materialized again. A file is never served unverified.
 *
 * The cache's total size is capped (blobcache_init); going over it after a
 * materialization deletes the least recently served files. A file being sent keeps
 * being sent after its deletion (the open descriptor holds it). A blob larger than the
 * cap is materialized per request into an unlinked temporary file.
 *
 * Thread-safe: one request materializes or re-hashes a given blob at a time, others
 * asking for it wait and then share the result. */
#ifndef REEF_HUB_BLOBCACHE_H
#define REEF_HUB_BLOBCACHE_H

#include <stddef.h>
#include <stdint.h>

/* Blobs above this size are served from the cache; smaller ones from memory. */
#define BLOBCACHE_THRESHOLD ((uint64_t)1 << 20)
/* The default cap of the cache's total size. */
#define BLOBCACHE_DEFAULT_LIMIT ((uint64_t)4 << 30)

/* Sets the cap of the cache's total size, creates DIR/blobcache, deletes the temporary
 * files of an earlier run and evicts down to the cap. Called once before serving; without
 * it the cache still works under hub_dir with BLOBCACHE_DEFAULT_LIMIT. */
int blobcache_init(const char *hub_dir, uint64_t limit);

/* A read-only descriptor on a verified copy of blob `sha` (40 lowercase hex) whose size
 * the object database reports as `size`, from the bare repository git_dir; materializes
 * it when the cache has no trustworthy copy. 0, -EIO when git fails or its bytes do not
 * hash to sha, or another negative errno. The caller closes *fd. */
int blobcache_open(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                   int *fd);

/* A descriptor on the cached copy when one is trusted right now, without materializing or
 * re-hashing anything: 0, or -ENOENT. */
int blobcache_lookup(const char *hub_dir, const char *sha, uint64_t size, int *fd);

/* Up to cap first bytes of the blob into out (*got of them), from a trusted cached copy
 * or from git, without materializing it. 0 or a negative errno. */
int blobcache_peek(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                   void *out, size_t cap, size_t *got);

/* The SHA-256 of the blob's content, streamed from a trusted cached copy or from git in
 * bounded memory, without materializing it. -EIO when git's bytes do not hash to sha. */
int blobcache_sha256(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                     uint8_t out[32]);

#endif
