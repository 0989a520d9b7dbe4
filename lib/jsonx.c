#include "reef/jsonx.h"

#include <errno.h>
#include <stdlib.h>

/* jansson's own depth limit is a compile-time 2048; remotes get a much smaller budget. */
static bool depth_ok(const char *s, size_t len, unsigned max)
{
	unsigned depth = 0;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '[' || c == '{') {
			if (++depth > max)
				return false;
		} else if ((c == ']' || c == '}') && depth)
			depth--;
	}
	return true;
}

int jsonx_parse(json_t **out, const char *data, size_t len, unsigned max_depth, size_t max_len)
{
	json_error_t err;
	json_t *v;

	*out = NULL;
	if (max_len && len > max_len)
		return -EFBIG;
	if (!depth_ok(data, len, max_depth ? max_depth : JSONX_MAX_DEPTH))
		return -EINVAL;
	v = json_loadb(data, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	if (!v)
		return -EINVAL;
	*out = v;
	return 0;
}

const char *jsonx_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

int64_t jsonx_int(const json_t *obj, const char *key, int64_t fallback)
{
	json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? (int64_t)json_integer_value(v) : fallback;
}

bool jsonx_bool(const json_t *obj, const char *key, bool fallback)
{
	json_t *v = json_object_get(obj, key);

	return json_is_boolean(v) ? json_is_true(v) : fallback;
}

char *jsonx_dump(const json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}
