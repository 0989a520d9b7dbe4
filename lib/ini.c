/* INI parsing (see include/reef/ini.h). Every line is copied into a bounded buffer, so
 * the callback gets NUL-terminated strings and the input needs no terminator. */
#include "reef/ini.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

static char *ini_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		e--;
	*e = 0;
	return s;
}

int ini_parse(const char *text, size_t len, ini_fn fn, void *arg, unsigned *line)
{
	char buf[INI_LINE_MAX + 1], section[INI_NAME_MAX + 1] = "";
	unsigned no = 0, entries = 0;
	size_t off = 0;
	int r;

	if (line)
		*line = 0;
	if (memchr(text, 0, len))
		return -EINVAL;
	/* a UTF-8 byte order mark, as configparser's encoding="utf-8" would leave it */
	if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
		off = 3;
	while (off < len) {
		const char *nl = memchr(text + off, '\n', len - off);
		size_t n = (nl ? (size_t)(nl - text) : len) - off;
		char *s, *k, *v, *sep;
		bool indented;

		no++;
		if (line)
			*line = no;
		if (n > INI_LINE_MAX)
			return -E2BIG;
		memcpy(buf, text + off, n);
		buf[n] = 0;
		off += n + (nl ? 1 : 0);
		indented = buf[0] == ' ' || buf[0] == '\t';
		s = ini_trim(buf);
		if (!*s || *s == '#' || *s == ';')
			continue;
		if (indented) /* a continuation line: this parser does not join them */
			return -EINVAL;
		if (*s == '[') {
			char *close = strrchr(s, ']');

			if (!close || close[1])
				return -EINVAL;
			*close = 0;
			s++;
			if (!*s || strlen(s) > INI_NAME_MAX)
				return -EINVAL;
			strcpy(section, s);
			continue;
		}
		sep = strpbrk(s, "=:");
		if (!sep || sep == s)
			return -EINVAL;
		*sep = 0;
		k = ini_trim(s);
		v = ini_trim(sep + 1);
		if (!*k || strlen(k) > INI_NAME_MAX)
			return -EINVAL;
		for (char *p = k; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (++entries > INI_ENTRIES_MAX)
			return -E2BIG;
		r = fn(arg, section, k, v);
		if (r)
			return r;
	}
	if (line)
		*line = 0;
	return 0;
}
