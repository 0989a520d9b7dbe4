/* JSON helpers over jansson shared by the daemon and the hub. Parsing enforces a size
 * and a nesting-depth cap, since bodies come from remotes and users. */
#ifndef REEF_JSONX_H
#define REEF_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSONX_MAX_DEPTH 64

/* Parses len bytes into *out. -EINVAL on malformed JSON or nesting deeper than max_depth
 * (0 = JSONX_MAX_DEPTH); -EFBIG when len > max_len (0 = no extra cap). */
int jsonx_parse(json_t **out, const char *data, size_t len, unsigned max_depth, size_t max_len);
/* Field getters: NULL / fallback when missing or of another type. */
const char *jsonx_str(const json_t *obj, const char *key);
int64_t jsonx_int(const json_t *obj, const char *key, int64_t fallback);
bool jsonx_bool(const json_t *obj, const char *key, bool fallback);
/* Serializes compactly; the caller frees. */
char *jsonx_dump(const json_t *v);

#endif
