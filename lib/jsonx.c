#include "reef/jsonx.h"

#include <errno.h>
#include <stdlib.h>

/* One open container of jsonx_check. */
struct jx_level {
	uint32_t count;
	bool obj;
	bool want_key; /* in an object: the next string is a key */
};

struct jx_scan {
	const struct jsonx_limits *lim;
	struct jx_level stack[JSONX_DEPTH_CEIL];
	unsigned depth;
	size_t total;
};

/* Counts one value (or key) starting here, the way Gitlab::Json::StreamValidator does:
 * a root scalar, an array element, or an object key/value pair (2 elements). */
static enum jsonx_verdict jx_value(struct jx_scan *s)
{
	const struct jsonx_limits *lim = s->lim;
	struct jx_level *top = s->depth ? &s->stack[s->depth - 1] : NULL;
	size_t add = 1;

	if (top && top->obj) {
		if (!top->want_key)
			return JSONX_OK; /* a member's value: counted with its key */
		top->want_key = false;
		if (lim->max_hash && ++top->count > lim->max_hash)
			return JSONX_HASH_TOO_LARGE;
		add = 2;
	} else if (top) {
		if (lim->max_array && ++top->count > lim->max_array)
			return JSONX_ARRAY_TOO_LARGE;
	}
	s->total += add;
	/* GitLab raises once the count reaches the limit (check_element_size!). */
	if (lim->max_total && s->total >= lim->max_total)
		return JSONX_TOO_MANY;
	return JSONX_OK;
}

static bool jx_delim(char c)
{
	return c == ',' || c == ':' || c == '[' || c == ']' || c == '{' || c == '}' || c == '"' ||
	       c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

enum jsonx_verdict jsonx_check(const char *data, size_t len, const struct jsonx_limits *lim)
{
	struct jx_scan *s;
	unsigned max_depth =
	    lim->max_depth && lim->max_depth < JSONX_DEPTH_CEIL ? lim->max_depth : JSONX_DEPTH_CEIL;
	enum jsonx_verdict v = JSONX_OK;

	if (lim->max_bytes && len > lim->max_bytes)
		return JSONX_TOO_LONG;
	/* 16 KiB of levels: on the heap, as connection threads may have small stacks. */
	s = calloc(1, sizeof(*s));
	if (!s)
		return JSONX_TOO_LONG;
	s->lim = lim;
	for (size_t i = 0; i < len && v == JSONX_OK; i++) {
		char c = data[i];
		struct jx_level *top = s->depth ? &s->stack[s->depth - 1] : NULL;

		switch (c) {
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break;
		case '"':
			v = jx_value(s);
			for (i++; i < len && data[i] != '"'; i++)
				if (data[i] == '\\')
					i++;
			break;
		case '{':
		case '[':
			v = jx_value(s);
			if (v != JSONX_OK)
				break;
			if (s->depth >= max_depth) {
				v = JSONX_TOO_DEEP;
				break;
			}
			s->stack[s->depth].count = 0;
			s->stack[s->depth].obj = c == '{';
			s->stack[s->depth].want_key = c == '{';
			s->depth++;
			break;
		case '}':
		case ']':
			if (s->depth)
				s->depth--;
			break;
		case ',':
			if (top && top->obj)
				top->want_key = true;
			break;
		case ':':
			if (top && top->obj)
				top->want_key = false;
			break;
		default: {
			/* a number or a literal: one value however long */
			size_t digits = 0;

			v = jx_value(s);
			for (; i < len && !jx_delim(data[i]); i++)
				digits += data[i] >= '0' && data[i] <= '9';
			i--;
			if (v == JSONX_OK && lim->max_digits && digits > lim->max_digits)
				v = JSONX_NUMBER_TOO_LONG;
			break;
		}
		}
	}
	free(s);
	return v;
}

const char *jsonx_verdict_message(enum jsonx_verdict v)
{
	switch (v) {
	case JSONX_OK:
		return "OK";
	case JSONX_TOO_DEEP:
		return "Parameters nested too deeply";
	case JSONX_ARRAY_TOO_LARGE:
		return "Array parameter too large";
	case JSONX_HASH_TOO_LARGE:
		return "Hash parameter too large";
	case JSONX_TOO_MANY:
		return "Too many total parameters";
	case JSONX_TOO_LONG:
		return "JSON body too large";
	default:
		return "Invalid JSON: limit exceeded";
	}
}

int jsonx_parse_limited(json_t **out, const char *data, size_t len, const struct jsonx_limits *lim,
                        enum jsonx_verdict *verdict)
{
	enum jsonx_verdict v = jsonx_check(data, len, lim);
	json_error_t err;

	*out = NULL;
	if (verdict)
		*verdict = v;
	if (v != JSONX_OK)
		return -E2BIG;
	*out = json_loadb(data, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	return *out ? 0 : -EINVAL;
}

int jsonx_parse(json_t **out, const char *data, size_t len, unsigned max_depth, size_t max_len)
{
	/* jansson's own depth limit is a compile-time 2048; remotes get a much smaller
	 * budget. */
	struct jsonx_limits lim = {.max_depth = max_depth ? max_depth : JSONX_MAX_DEPTH};
	int r;

	*out = NULL;
	if (max_len && len > max_len)
		return -EFBIG;
	r = jsonx_parse_limited(out, data, len, &lim, NULL);
	return r == -E2BIG ? -EINVAL : r;
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
