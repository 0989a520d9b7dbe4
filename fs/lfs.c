/* Git LFS pointer parsing: see include/reef/lfs.h. The grammar follows git-lfs's
 * spec (docs/spec.md there): strict, so that a file that merely looks like a pointer is
 * shown as itself rather than swapped for someone else's object. */
#include "reef/lfs.h"

#include <errno.h>
#include <string.h>

#include "reef/hash.h"

#define LFS_KEY_MAX 64

static const char *const lfs_versions[] = {
    "https://git-lfs.github.com/spec/v1",
    "https://hawser.github.com/spec/v1",
};

/* git-lfs keys: lowercase letters, digits, '.', '-'. */
static bool lfs_key_ok(const char *k, size_t n)
{
	if (n == 0 || n > LFS_KEY_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '.' ||
		      k[i] == '-'))
			return false;
	return true;
}

static int lfs_size_parse(const char *v, size_t n, uint64_t *out)
{
	uint64_t s = 0;

	if (n == 0 || n > 20)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		s = s * 10 + (uint64_t)(v[i] - '0');
		if (s > LFS_SIZE_MAX)
			return -EINVAL;
	}
	*out = s;
	return 0;
}

static bool lfs_eq(const char *v, size_t n, const char *lit)
{
	return strlen(lit) == n && memcmp(v, lit, n) == 0;
}

int lfs_pointer_parse(const void *data, size_t len, struct lfs_pointer *out)
{
	const char *p = data, *end = p + len, *prev_key = NULL;
	size_t prev_len = 0, line = 0;
	bool have_oid = false, have_size = false;
	struct lfs_pointer ptr;

	memset(&ptr, 0, sizeof(ptr));
	if (!data || len == 0 || len >= LFS_POINTER_MAX || p[len - 1] != '\n' ||
	    memchr(p, '\0', len) || memchr(p, '\r', len))
		return -EINVAL;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *sp = memchr(p, ' ', (size_t)(nl - p));
		const char *v;
		size_t kn, vn;

		if (!sp)
			return -EINVAL;
		kn = (size_t)(sp - p);
		v = sp + 1;
		vn = (size_t)(nl - v);
		if (!lfs_key_ok(p, kn) || vn == 0)
			return -EINVAL;
		if (line == 0) {
			bool known = false;

			if (!lfs_eq(p, kn, "version"))
				return -EINVAL;
			for (size_t i = 0; i < sizeof(lfs_versions) / sizeof(lfs_versions[0]); i++)
				if (lfs_eq(v, vn, lfs_versions[i])) {
					known = true;
					ptr.legacy = i == 1;
				}
			if (!known)
				return -EINVAL;
		} else {
			int c = 0;

			/* keys after version strictly increasing: sorted, none repeated */
			if (prev_key) {
				c = memcmp(prev_key, p, kn < prev_len ? kn : prev_len);
				if (c == 0)
					c = prev_len < kn ? -1 : (prev_len > kn ? 1 : 0);
				if (c >= 0)
					return -EINVAL;
			}
			if (lfs_eq(p, kn, "version"))
				return -EINVAL;
			if (lfs_eq(p, kn, "oid")) {
				if (vn != 7 + HASH_SHA256_HEX || memcmp(v, "sha256:", 7) != 0)
					return -EINVAL;
				memcpy(ptr.oid, v + 7, HASH_SHA256_HEX);
				ptr.oid[HASH_SHA256_HEX] = '\0';
				if (!hash_is_hex(ptr.oid, HASH_SHA256_HEX))
					return -EINVAL;
				have_oid = true;
			} else if (lfs_eq(p, kn, "size")) {
				if (lfs_size_parse(v, vn, &ptr.size) < 0)
					return -EINVAL;
				have_size = true;
			}
			prev_key = p;
			prev_len = kn;
		}
		line++;
		p = nl + 1;
	}
	if (!have_oid || !have_size)
		return -EINVAL;
	*out = ptr;
	return 0;
}
