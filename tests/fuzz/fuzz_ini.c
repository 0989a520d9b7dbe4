/* INI files (lib/ini.c): python-gitlab's configuration and reef's own, both written by
 * users or other programs. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "reef/ini.h"

static int check(void *arg, const char *section, const char *key, const char *value)
{
	size_t *n = arg;

	/* keys are lower-cased, trimmed and never empty; nothing is longer than a line */
	if (!*key || strlen(key) > INI_NAME_MAX || strlen(section) > INI_NAME_MAX ||
	    strlen(value) > INI_LINE_MAX || key[0] == ' ' || strchr(value, '\n'))
		abort();
	for (const char *p = key; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			abort();
	if (++*n > INI_ENTRIES_MAX)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	unsigned line;

	ini_parse((const char *)data, size, check, &n, &line);
	return 0;
}
