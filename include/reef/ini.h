/* INI files as Python's configparser reads them (python-gitlab's ~/.python-gitlab.cfg,
 * reef's own config): "[section]" headers, "key = value" or "key: value" lines, '#' and
 * ';' comment lines, keys lower-cased, keys and values trimmed. Not supported (refused
 * with -EINVAL where it matters): continuation lines, which configparser would join to
 * the previous value. Interpolation ("%(x)s") is left as written. */
#ifndef REEF_INI_H
#define REEF_INI_H
#include <stddef.h>

#define INI_LINE_MAX    4096 /* bytes in one line */
#define INI_ENTRIES_MAX 4096 /* key lines in one file */
#define INI_NAME_MAX    256  /* bytes of a section name or a key */

/* Called for every key line, section "" before the first header; a non-zero return
 * stops the parse and is returned. */
typedef int (*ini_fn)(void *arg, const char *section, const char *key, const char *value);

/* Parses len bytes of text (NUL bytes refused). 0, the callback's non-zero value, or
 * -EINVAL with the 1-based line number in *line (when line is not NULL), -E2BIG past
 * the caps. */
int ini_parse(const char *text, size_t len, ini_fn fn, void *arg, unsigned *line);

#endif
