/* URL and query decoding, encoding, base64, path checks and sizes (lib/util.c): request
 * targets, query strings, Basic credentials, file paths from clients and sizes from
 * users (cache_limit=1.5G). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "reef/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = strndup((const char *)data, size), *dec;
	struct buf b = BUF_INIT(1 << 20);
	int n;

	if (!s)
		return 0;
	dec = malloc(strlen(s) + 1);
	if (dec) {
		n = url_decode(dec, s, true);
		/* decoding never grows and never yields a NUL inside */
		if (n >= 0 && ((size_t)n > strlen(s) || strlen(dec) != (size_t)n))
			abort();
		if (n >= 0 && url_encode(&b, dec) == 0) {
			char *round = malloc(b.len + 1);

			/* encode then decode gives the same bytes back */
			if (round && (url_decode(round, b.data ? b.data : "", false) != n ||
			              memcmp(round, dec, (size_t)n) != 0))
				abort();
			free(round);
		}
		free(dec);
	}
	{
		char esc[256];

		/* one line of printable text, always terminated */
		text_escape(s, esc, sizeof(esc));
		for (const char *p = esc; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				abort();
	}
	{
		uint64_t v;

		/* a size accepted is digits, at most one point, and a unit at the end */
		if (size_parse(s, &v) == 0 &&
		    (strspn(s, "0123456789.") == 0 ||
		     strchr(strchr(s, '.') ? strchr(s, '.') + 1 : s, '.') ||
		     s[strspn(s, "0123456789.") +
		       strspn(s + strspn(s, "0123456789."), "KkMmGgTtIiBb")]))
			abort();
	}
	buf_reset(&b);
	base64_decode(s, strlen(s), &b);
	if (path_is_safe(s, 4096) && (strstr(s, "/../") || !strncmp(s, "../", 3) || s[0] == '/'))
		abort();
	buf_free(&b);
	free(s);
	return 0;
}
