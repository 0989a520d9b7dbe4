/* One entry of a git tree as reef models it everywhere (client, index, object store). */
#ifndef REEF_TREE_H
#define REEF_TREE_H

#include <stdint.h>

#define TREE_NAME_MAX 255

enum tree_mode {
	TREE_MODE_DIR = 0040000,
	TREE_MODE_FILE = 0100644,
	TREE_MODE_EXEC = 0100755,
	TREE_MODE_LINK = 0120000,
	TREE_MODE_SUBMODULE = 0160000,
};

struct tree_entry {
	char name[TREE_NAME_MAX + 1];
	uint32_t mode; /* one of enum tree_mode */
	char oid[41];  /* hex object id (a commit id for submodules) */
	int64_t size;  /* blob size in bytes; -1 when not known yet */
};

#endif
