/* SHA-1 (git object ids) and SHA-256 (tokens, LFS) over OpenSSL's EVP, with hex helpers. */
#ifndef REEF_HASH_H
#define REEF_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HASH_SHA1_LEN   20
#define HASH_SHA256_LEN 32
#define HASH_SHA1_HEX   40
#define HASH_SHA256_HEX 64

enum hash_kind { HASH_SHA1, HASH_SHA256 };

struct hash_ctx; /* opaque streaming context */

int hash_new(struct hash_ctx **out, enum hash_kind kind);
int hash_update(struct hash_ctx *h, const void *data, size_t len);
/* Writes the digest (20 or 32 bytes) to out; the context may then only be freed. */
int hash_final(struct hash_ctx *h, uint8_t *out);
void hash_free(struct hash_ctx *h);

int hash_buf(enum hash_kind kind, const void *data, size_t len, uint8_t *out);
/* Hex-encodes n bytes into out (2n+1 chars, NUL-terminated). */
void hash_hex(char *out, const uint8_t *bin, size_t n);
/* True when s is exactly n lowercase hex characters. */
bool hash_is_hex(const char *s, size_t n);
/* Starts a streaming SHA-1 of a git object: feeds "<type> <size>\0". */
int hash_git_begin(struct hash_ctx **out, const char *type, uint64_t size);

#endif
