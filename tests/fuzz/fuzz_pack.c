/* Objects out of a server's pack (fs/pack.c): git tree objects parsed into entries, and
 * the tree line of a commit object. */
#include <stdint.h>
#include <stdlib.h>

#include "fuzz.h"
#include "reef/pack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tree_entry *e = NULL;
	char tree[41];
	size_t n = 0;

	if (pack_tree_parse(data, size, 4096, &e, &n) == 0)
		free(e);
	pack_commit_tree(data, size, tree);
	return 0;
}
