/* JSON helpers over jansson shared by the daemon and the hub. Parsing enforces a size
 * and a nesting-depth cap, since bodies come from remotes and users; jsonx_check adds
 * GitLab's element limits, applied before any tree is built. */
#ifndef REEF_JSONX_H
#define REEF_JSONX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSONX_MAX_DEPTH 64
/* The deepest nesting jsonx_check tracks (jansson's own compile-time limit). */
#define JSONX_DEPTH_CEIL 2048

/* Limits on a JSON text; 0 means no limit for that field. */
struct jsonx_limits {
	unsigned max_depth;
	size_t max_array;  /* elements of one array */
	size_t max_hash;   /* members of one object */
	size_t max_total;  /* values, keys counted too (as GitLab counts them) */
	size_t max_digits; /* digits of one number */
	size_t max_bytes;  /* the whole text */
};

/* GitLab's defaults, Gitlab::Middleware::JsonValidation::DEFAULT_LIMITS
 * (lib/gitlab/middleware/json_validation.rb): depth 32, 50,000 array elements,
 * 50,000 object members, 100,000 elements in all, 1,000 integer digits, no byte cap. */
#define JSONX_GITLAB_LIMITS                                                                        \
	{                                                                                          \
		32, 50000, 50000, 100000, 1000, 0                                                  \
	}

/* What jsonx_check found. */
enum jsonx_verdict {
	JSONX_OK = 0,
	JSONX_TOO_DEEP,
	JSONX_ARRAY_TOO_LARGE,
	JSONX_HASH_TOO_LARGE,
	JSONX_TOO_MANY,
	JSONX_TOO_LONG,
	JSONX_NUMBER_TOO_LONG,
};

/* A lexical pass over len bytes counting depth, container sizes and elements, without
 * allocating: the first limit crossed, or JSONX_OK. It does not validate the grammar
 * (jansson does that afterwards); malformed text only needs to stay within the
 * limits. */
enum jsonx_verdict jsonx_check(const char *data, size_t len, const struct jsonx_limits *lim);
/* GitLab's user-facing message for a verdict (Gitlab::Json::StreamValidator
 * .user_facing_error_message), e.g. "Too many total parameters". */
const char *jsonx_verdict_message(enum jsonx_verdict v);

/* Parses len bytes into *out. -EINVAL on malformed JSON or nesting deeper than max_depth
 * (0 = JSONX_MAX_DEPTH); -EFBIG when len > max_len (0 = no extra cap). */
int jsonx_parse(json_t **out, const char *data, size_t len, unsigned max_depth, size_t max_len);
/* Parses with every limit of lim checked first: -EINVAL for malformed JSON, -E2BIG
 * when a limit is crossed (*verdict says which, when verdict is not NULL). */
int jsonx_parse_limited(json_t **out, const char *data, size_t len, const struct jsonx_limits *lim,
                        enum jsonx_verdict *verdict);
/* Field getters: NULL / fallback when missing or of another type. */
const char *jsonx_str(const json_t *obj, const char *key);
int64_t jsonx_int(const json_t *obj, const char *key, int64_t fallback);
bool jsonx_bool(const json_t *obj, const char *key, bool fallback);
/* Serializes compactly; the caller frees. */
char *jsonx_dump(const json_t *v);

#endif
