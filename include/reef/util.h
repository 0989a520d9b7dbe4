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
/* A size as people write it: "1048576", "512K", "1GB", "2GiB", "1.5g", "100MB", "4096B".
 * Units K, M, G, T (either case) alone or followed by "B" or "iB" (case-insensitive);
 * every one is a power of 1024 (1GB = 1G = 1GiB = 2^30 bytes, as reef always read K, M,
 * G and T). At most 9 digits after a decimal point; the result is rounded down to whole
 * bytes. No sign, no spaces. -EINVAL when malformed, -ERANGE past 2^64 - 1. */
int size_parse(const char *s, uint64_t *out);
/* write(2) of all len bytes, resumed after short writes and EINTR: 0 or -errno. */
int fd_write_all(int fd, const void *data, size_t len);
/* Maps an HTTP status to a negative errno (2xx -> 0). */
int err_from_http(long status);

#endif
