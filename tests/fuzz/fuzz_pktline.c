/* git protocol v2 answers (daemon/remote/gitproto.c): the capability advertisement and
 * a whole `fetch` answer (sections, side-band, ERR lines), as any server may send them. */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "gl_int.h"

static int sink(void *arg, const void *d, size_t n)
{
	size_t *total = arg;

	(void)d;
	*total += n;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t total = 0;

	gl_git_caps_parse(data, size);
	gl_git_answer_parse(data, size, sink, &total);
	return 0;
}
