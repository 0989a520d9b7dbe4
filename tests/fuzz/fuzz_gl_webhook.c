/* The GitLab webhook event parser of the management role (tools/hub/mgmt_glhook.c). */
#include "fuzz.h"
#include "mgmt_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mgl_hook_event ev;

	if (mgl_hook_parse((const char *)data, size, &ev) == 0 && ev.kind != MGL_HOOK_OTHER &&
	    (ev.project_id <= 0 || ev.pipeline_id <= 0 || !ev.status[0]))
		__builtin_trap(); /* an accepted event always names its run */
	return 0;
}
