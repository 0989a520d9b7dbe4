/* JSON from GitLab answers and request bodies (lib/jsonx.c): the element pre-scan with
 * GitLab's limits, then the capped parse, which must agree on what they accept. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "reef/jsonx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct jsonx_limits lim = JSONX_GITLAB_LIMITS;
	static const struct jsonx_limits tiny = {4, 8, 8, 16, 20, 0};
	enum jsonx_verdict v;
	json_t *out = NULL;

	if (jsonx_parse_limited(&out, (const char *)data, size, &lim, &v) == 0) {
		char *s = jsonx_dump(out);

		/* what the scan let through re-serializes and passes the scan again */
		if (!s || jsonx_check(s, strlen(s), &lim) != JSONX_OK)
			abort();
		free(s);
	}
	json_decref(out);
	out = NULL;
	jsonx_parse_limited(&out, (const char *)data, size, &tiny, &v);
	json_decref(out);
	out = NULL;
	jsonx_parse(&out, (const char *)data, size, 0, 1 << 20);
	json_decref(out);
	return 0;
}
