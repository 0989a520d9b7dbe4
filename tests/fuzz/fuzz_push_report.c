/* receive-pack's answer to a push (daemon/remote/gitproto.c gl_git_report_parse):
 * side-band-64k frames around report-status lines, as any server may send them. */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "gl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gl_push_report rep;

	gl_git_report_parse(data, size, "refs/heads/main", &rep);
	return 0;
}
