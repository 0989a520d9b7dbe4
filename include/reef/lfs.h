/* Git LFS pointer files (fs/lfs.c): the small blob git stores in place of an LFS object.
 * Parsing only; no HTTP (the daemon fetches objects through the batch API).
 *
 * A pointer is lines "key value\n": "version" first (the git-lfs spec URL, or the legacy
 * hawser one), then the other keys in byte order, each once; "oid sha256:<64 hex>" and
 * "size <decimal>" are required; nothing else in the blob (no CR, no blank line, no
 * byte after the last "\n"). Anything else is not a pointer but the plain blob it is. */
#ifndef REEF_LFS_H
#define REEF_LFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Pointers are smaller than this; larger blobs are never parsed. */
#define LFS_POINTER_MAX 1024
/* The largest object size a pointer may announce (1 PiB). */
#define LFS_SIZE_MAX ((uint64_t)1 << 50)

struct lfs_pointer {
	char oid[65]; /* sha256 hex, lowercase */
	uint64_t size;
	bool legacy; /* the hawser.github.com version URL */
};

/* 0 and *out filled when data is a valid pointer; -EINVAL when it is not. */
int lfs_pointer_parse(const void *data, size_t len, struct lfs_pointer *out);

#endif
