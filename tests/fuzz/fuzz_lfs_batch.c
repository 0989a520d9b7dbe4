/* The LFS batch API's request parser of reef-hub (tools/hub/lfs.c). */
#include "fuzz.h"
#include "lfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *root = NULL;
	char msg[160];
	bool upload;

	hub_lfs_batch_parse((const char *)data, size, &root, &upload, msg, sizeof(msg));
	json_decref(root);
	return 0;
}
