#include "reef/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int url_encode(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	int r = 0;

	for (; *s && r == 0; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			r = buf_append(out, s, 1);
		} else {
			char e[3] = {'%', hex[c >> 4], hex[c & 15]};

			r = buf_append(out, e, 3);
		}
	}
	return r;
}

int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int url_decode(char *out, const char *in, bool plus_is_space)
{
	size_t o = 0;

	while (*in) {
		if (*in == '%') {
			int hi = hex_digit(in[1]), lo = hi < 0 ? -1 : hex_digit(in[2]);

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -EINVAL;
			out[o++] = (char)(hi * 16 + lo);
			in += 3;
		} else if (*in == '+' && plus_is_space) {
			out[o++] = ' ';
			in++;
		} else {
			out[o++] = *in++;
		}
	}
	out[o] = '\0';
	return (int)o;
}

bool path_is_safe(const char *p, size_t max_len)
{
	size_t len = strlen(p);
	const char *seg = p;

	if (len == 0 || len > max_len || p[0] == '/')
		return false;
	while (seg) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (n == 0 || n > 255 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		seg = end ? end + 1 : NULL;
	}
	return true;
}

static int b64_val(int ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+' || ch == '-')
		return 62;
	if (ch == '/' || ch == '_')
		return 63;
	return -1;
}

int base64_decode(const char *s, size_t n, struct buf *out)
{
	uint32_t acc = 0;
	int bits = 0, pad = 0, r;

	for (size_t i = 0; i < n; i++) {
		int v;

		if (s[i] == '\n' || s[i] == '\r' || s[i] == ' ' || s[i] == '\t')
			continue;
		if (s[i] == '=') {
			pad++;
			continue;
		}
		if (pad || (v = b64_val((unsigned char)s[i])) < 0)
			return -EINVAL;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			char byte = (char)((acc >> (bits - 8)) & 0xff);

			bits -= 8;
			if ((r = buf_append(out, &byte, 1)) < 0)
				return r;
		}
	}
	/* leftover bits must be zero padding of the last group */
	if (pad > 2 || bits >= 6 || (acc & ((1u << bits) - 1)))
		return -EINVAL;
	return 0;
}

int fd_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int err_from_http(long status)
{
	if (status >= 200 && status < 300)
		return 0;
	switch (status) {
	case 400:
	case 422:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
	case 410:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 413:
		return -EFBIG;
	case 429:
		return -EAGAIN;
	default:
		return -EIO;
	}
}

void text_escape(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	for (; *s && o + 5 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			out[o++] = (char)c;
		} else {
			snprintf(out + o, cap - o, "\\x%02x", c);
			o += 4;
		}
	}
	out[o] = '\0';
}

/* See util.h. */
int64_t time_parse_rfc3339(const char *v)
{
	struct tm tm = {0};
	int n = 0, oh = 0, om = 0;
	char sign = 0;
	const char *p;
	time_t t;

	if (sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
		return -1;
	p = v + n;
	if (*p == '.') /* fractions of a second */
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2)
		sign = *p, p += 6;
	else
		return -1;
	if (*p)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	t -= (sign == '-' ? -1 : 1) * (time_t)(oh * 3600 + om * 60);
	return (int64_t)t * 1000;
}

int size_parse(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	unsigned __int128 whole = 0, frac = 0, scale = 1, v;
	unsigned shift = 0, digits = 0;
	const char *p = s, *u;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		whole = whole * 10 + (unsigned)(*p - '0');
		if (whole > UINT64_MAX)
			return -ERANGE;
	}
	if (*p == '.') {
		for (p++; *p >= '0' && *p <= '9'; p++) {
			if (++digits > 9)
				return -EINVAL;
			frac = frac * 10 + (unsigned)(*p - '0');
			scale *= 10;
		}
		if (digits == 0)
			return -EINVAL; /* "1." */
	}
	if (*p && (u = strchr(units, *p & ~0x20)) && *p != '\0') {
		shift = 10 * (unsigned)(u - units + 1);
		p++;
		if ((p[0] | 0x20) == 'i' && (p[1] | 0x20) == 'b')
			p += 2;
		else if ((p[0] | 0x20) == 'b')
			p++;
	} else if ((*p | 0x20) == 'b') {
		p++; /* "4096B": bytes */
	}
	if (*p)
		return -EINVAL;
	v = (whole << shift) + ((frac << shift) / scale);
	if (v > UINT64_MAX)
		return -ERANGE;
	*out = (uint64_t)v;
	return 0;
}
