/* Small string utilities shared by the daemon and the hub. */
#ifndef REEF_UTIL_H
#define REEF_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/buf.h"

/* The value of one hexadecimal digit (either case), or -1. */
int hex_digit(char c);
/* Percent-encodes everything but unreserved characters (RFC 3986), so '/' becomes %2F
 * as GitLab wants for :id and :file_path. */
int url_encode(struct buf *out, const char *s);
/* Decodes %XX (and '+' as space only when plus_is_space). Returns the decoded length, or
 * -EINVAL for a bad escape or an encoded NUL. In place is allowed (out == in). */
int url_decode(char *out, const char *in, bool plus_is_space);
/* A relative path inside a repository or data directory: non-empty, no NUL, not absolute,
 * no empty, '.' or '..' segment, at most max_len bytes, each segment at most 255 bytes. */
bool path_is_safe(const char *p, size_t max_len);
/* Appends the bytes of base64 text (standard or URL alphabet, padding optional, white
 * space ignored) to out. -EINVAL on any other character or bad padding; out's cap holds. */
int base64_decode(const char *s, size_t n, struct buf *out);
/* Copies s into out (cap bytes, NUL included) with every byte outside printable ASCII
 * and the backslash as \\xHH, cut at a whole escape: user text shown as one line. */
void text_escape(const char *s, char *out, size_t cap);
/* Milliseconds since the epoch of "2016-11-10T15:29:07Z", with fractions or a
 * "+hh:mm"/"-hh:mm" offset (RFC 3339: GitLab's committed_date, LFS's expires_at); -1 when
 * malformed. */
int64_t time_parse_rfc3339(const char *v);
/* Maps an HTTP status to a negative errno (2xx -> 0). */
int err_from_http(long status);

#endif
