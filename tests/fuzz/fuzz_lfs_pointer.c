/* Git LFS pointer files (fs/lfs.c): every small blob of a mounted repository. */
#include "fuzz.h"
#include "reef/lfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lfs_pointer p;

	lfs_pointer_parse(data, size, &p);
	return 0;
}
