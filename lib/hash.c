#include "reef/hash.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hash_ctx {
	EVP_MD_CTX *md;
};

int hash_new(struct hash_ctx **out, enum hash_kind kind)
{
	struct hash_ctx *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->md = EVP_MD_CTX_new();
	if (!h->md ||
	    !EVP_DigestInit_ex(h->md, kind == HASH_SHA1 ? EVP_sha1() : EVP_sha256(), NULL)) {
		hash_free(h);
		return -ENOMEM;
	}
	*out = h;
	return 0;
}

int hash_update(struct hash_ctx *h, const void *data, size_t len)
{
	return EVP_DigestUpdate(h->md, data, len) ? 0 : -EIO;
}

int hash_final(struct hash_ctx *h, uint8_t *out)
{
	unsigned int n = 0;

	return EVP_DigestFinal_ex(h->md, out, &n) ? 0 : -EIO;
}

void hash_free(struct hash_ctx *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->md);
	free(h);
}

int hash_buf(enum hash_kind kind, const void *data, size_t len, uint8_t *out)
{
	struct hash_ctx *h;
	int r = hash_new(&h, kind);

	if (r < 0)
		return r;
	r = hash_update(h, data, len);
	if (r == 0)
		r = hash_final(h, out);
	hash_free(h);
	return r;
}

void hash_hex(char *out, const uint8_t *bin, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bin[i] >> 4];
		out[2 * i + 1] = digits[bin[i] & 15];
	}
	out[2 * n] = '\0';
}

bool hash_is_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[i] == '\0';
}

int hash_git_begin(struct hash_ctx **out, const char *type, uint64_t size)
{
	char hdr[64];
	int n = snprintf(hdr, sizeof(hdr), "%s %" PRIu64, type, size);
	int r = hash_new(out, HASH_SHA1);

	if (r < 0)
		return r;
	r = hash_update(*out, hdr, (size_t)n + 1); /* the NUL is part of the header */
	if (r < 0) {
		hash_free(*out);
		*out = NULL;
	}
	return r;
}
