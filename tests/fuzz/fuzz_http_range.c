/* HTTP Range headers (tools/hub/lfs.c), as the hub answers LFS and raw file downloads.
 * The first 8 bytes are the object size, the rest the header value. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "lfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t len = 0, from = 0, to = 0;
	char *h;
	int r;

	if (size < 8)
		return 0;
	memcpy(&len, data, 8);
	len %= (uint64_t)1 << 40;
	h = strndup((const char *)data + 8, size - 8);
	if (!h)
		return 0;
	r = hub_lfs_range_parse(h, len, &from, &to);
	/* a satisfiable range lies inside the object */
	if (r > 0 && (from > to || to >= len))
		abort();
	free(h);
	return 0;
}
