/* The grammar of control files: see ctl.h. */
#include "ctl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_DEPTH     8
#define CTL_KEY_MAX   128
#define CTL_VALUE_MAX 4096
#define CTL_VARS_MAX  200

static int ctl_fail(char err[CTL_ERR_MAX], int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ctl_fail(char err[CTL_ERR_MAX], int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, CTL_ERR_MAX, fmt, ap);
	va_end(ap);
	return r;
}

/* UTF-8 text without NUL or control characters other than tab, CR and LF. */
static int ctl_text_check(const unsigned char *s, size_t len, char err[CTL_ERR_MAX])
{
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c < 0x80) {
			if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
				return ctl_fail(
				    err, -EINVAL,
				    "binary data (byte 0x%02x at offset %zu): a request "
				    "is UTF-8 text",
				    c, i);
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0)
			n = 1, cp = c & 0x1f;
		else if ((c & 0xf0) == 0xe0)
			n = 2, cp = c & 0x0f;
		else if ((c & 0xf8) == 0xf0)
			n = 3, cp = c & 0x07;
		else
			goto bad;
		for (k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				goto bad;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong forms, surrogates and values past U+10FFFF are not UTF-8 */
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			goto bad;
		i += n + 1;
	}
	return 0;
bad:
	return ctl_fail(err, -EINVAL,
	                "binary data (invalid UTF-8 at offset %zu): a request is "
	                "UTF-8 text",
	                i);
}

static bool ctl_key_ok(const char *k, size_t n)
{
	if (n == 0 || n > CTL_KEY_MAX || k[0] == '.' || k[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = k[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
		if (c == '.' && k[i + 1] == '.')
			return false;
	}
	return true;
}

static void ctl_trim(const char **s, size_t *n)
{
	while (*n && (**s == ' ' || **s == '\t'))
		(*s)++, (*n)--;
	while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
		(*n)--;
}

/* "a.b.c" = v into nested objects of o. */
static int ctl_set_path(json_t *o, const char *key, const char *value, size_t line,
                        char err[CTL_ERR_MAX])
{
	char k[CTL_KEY_MAX + 1], *dot, *part = k;
	int depth = 0;

	snprintf(k, sizeof(k), "%s", key);
	while ((dot = strchr(part, '.'))) {
		json_t *sub;

		*dot = '\0';
		if (++depth > CTL_DEPTH)
			return ctl_fail(err, -EINVAL, "line %zu: key %s nests too deep", line, key);
		sub = json_object_get(o, part);
		if (!sub) {
			sub = json_object();
			if (!sub || json_object_set_new(o, part, sub) < 0)
				return -ENOMEM;
		} else if (!json_is_object(sub)) {
			return ctl_fail(err, -EINVAL, "line %zu: %s is both a value and a group",
			                line, part);
		}
		o = sub;
		part = dot + 1;
	}
	if (json_object_get(o, part))
		return ctl_fail(err, -EINVAL, "line %zu: %s given twice", line, key);
	if (json_is_object(json_object_get(o, part)))
		return ctl_fail(err, -EINVAL, "line %zu: %s is both a value and a group", line,
		                key);
	return json_object_set_new(o, part, json_string(value)) < 0 ? -ENOMEM : 0;
}

static int ctl_parse_lines(const char *data, size_t len, bool empty_ok, json_t **out,
                           char err[CTL_ERR_MAX])
{
	json_t *o = json_object();
	size_t off = 0, line = 0;
	int r = 0;

	if (!o)
		return -ENOMEM;
	while (off < len && r == 0) {
		const char *s = data + off, *nl = memchr(s, '\n', len - off), *eq;
		size_t n = nl ? (size_t)(nl - s) : len - off, kn, vn;
		const char *k, *v;
		char key[CTL_KEY_MAX + 1], *value;

		off += n + (nl ? 1 : 0);
		line++;
		ctl_trim(&s, &n);
		if (n == 0 || s[0] == '#')
			continue;
		eq = memchr(s, '=', n);
		if (!eq) {
			r = ctl_fail(err, -EINVAL, "line %zu: expected key=value, got \"%.*s\"",
			             line, (int)(n > 60 ? 60 : n), s);
			break;
		}
		k = s;
		kn = (size_t)(eq - s);
		v = eq + 1;
		vn = n - kn - 1;
		ctl_trim(&k, &kn);
		ctl_trim(&v, &vn);
		if (!ctl_key_ok(k, kn)) {
			r = ctl_fail(err, -EINVAL,
			             "line %zu: bad key \"%.*s\" (letters, digits, _ - and . only)",
			             line, (int)(kn > 60 ? 60 : kn), k);
			break;
		}
		if (vn > CTL_VALUE_MAX) {
			r = ctl_fail(err, -EINVAL, "line %zu: value longer than %d bytes", line,
			             CTL_VALUE_MAX);
			break;
		}
		memcpy(key, k, kn);
		key[kn] = '\0';
		value = strndup(v, vn);
		if (!value) {
			r = -ENOMEM;
			break;
		}
		r = ctl_set_path(o, key, value, line, err);
		free(value);
	}
	if (r == 0 && json_object_size(o) == 0 && !empty_ok)
		r = ctl_fail(err, -EINVAL, "empty request");
	if (r < 0) {
		json_decref(o);
		return r;
	}
	*out = o;
	return 0;
}

int ctl_parse(const char *data, size_t len, json_t **out, bool *lines, char err[CTL_ERR_MAX])
{
	size_t i = 0;
	int r;

	*out = NULL;
	*lines = false;
	err[0] = '\0';
	if (len > CTL_MAX)
		return ctl_fail(err, -EFBIG, "request of %zu bytes; at most %d", len, CTL_MAX);
	r = ctl_text_check((const unsigned char *)data, len, err);
	if (r < 0)
		return r;
	while (i < len && strchr(" \t\r\n", data[i]))
		i++;
	if (i < len && (data[i] == '{' || data[i] == '[' || data[i] == '"')) {
		json_error_t je;
		json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
		size_t depth = 0, maxdepth = 0;

		if (!v) {
			if (json_error_code(&je) == json_error_premature_end_of_input)
				return ctl_fail(err, -EAGAIN, "unfinished JSON object");
			return ctl_fail(err, -EINVAL, "malformed JSON at line %d column %d: %s",
			                je.line, je.column, je.text);
		}
		/* jansson has no depth limit of its own: count brackets outside strings */
		for (size_t k = i, in_str = 0; k < len; k++) {
			char c = data[k];

			if (in_str) {
				if (c == '\\')
					k++;
				else if (c == '"')
					in_str = 0;
			} else if (c == '"') {
				in_str = 1;
			} else if (c == '{' || c == '[') {
				if (++depth > maxdepth)
					maxdepth = depth;
			} else if (c == '}' || c == ']') {
				depth--;
			}
		}
		if (maxdepth > CTL_DEPTH) {
			json_decref(v);
			return ctl_fail(err, -EINVAL, "JSON nested deeper than %d levels",
			                CTL_DEPTH);
		}
		if (!json_is_object(v)) {
			json_decref(v);
			return ctl_fail(err, -EINVAL, "a JSON request must be an object");
		}
		*out = v;
		return 0;
	}
	*lines = true;
	return ctl_parse_lines(data, len, false, out, err);
}

/* The length of data without a UTF-8 sequence cut short at its end: the next write may
 * bring the rest of that character. */
static size_t ctl_whole_chars(const unsigned char *s, size_t len)
{
	for (size_t back = 1; back <= 3 && back <= len; back++) {
		unsigned char c = s[len - back];
		size_t need;

		if ((c & 0xc0) == 0x80)
			continue; /* a continuation byte: look further back for its lead */
		need = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;
		return need > back ? len - back : len;
	}
	return len;
}

int ctl_prefix_check(const char *data, size_t len, char err[CTL_ERR_MAX])
{
	const char *nl;
	json_t *o = NULL;
	size_t i = 0, whole;
	bool lines;
	int r;

	err[0] = '\0';
	if (len > CTL_MAX)
		return ctl_fail(err, -EFBIG, "request of %zu bytes or more; at most %d", len,
		                CTL_MAX);
	whole = ctl_whole_chars((const unsigned char *)data, len);
	r = ctl_text_check((const unsigned char *)data, whole, err);
	if (r < 0)
		return r;
	while (i < whole && strchr(" \t\r\n", data[i]))
		i++;
	if (i == whole)
		return 0;
	if (data[i] == '{' || data[i] == '[' || data[i] == '"') {
		r = ctl_parse(data, whole, &o, &lines, err);
		json_decref(o);
		return r == -EAGAIN ? 0 : r;
	}
	/* key=value lines: the complete ones must already be right; the last line may be
	 * the first half of one */
	nl = memrchr(data, '\n', whole);
	if (!nl)
		return 0;
	r = ctl_parse_lines(data, (size_t)(nl - data) + 1, true, &o, err);
	json_decref(o);
	return r;
}

bool ctl_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > CTL_NAME_MAX || s[0] == '.' || s[0] == '-' || strstr(s, "..") ||
	    (n >= 5 && !strcmp(s + n - 5, ".lock")))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

static bool ctl_slug_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '-')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* A relative path inside the project ("." allowed for input). */
static bool ctl_rel_path_ok(const char *p, bool dot_ok)
{
	size_t n = strlen(p);
	const char *seg = p;

	if (dot_ok && !strcmp(p, "."))
		return true;
	if (n == 0 || n > 1024 || p[0] == '/')
		return false;
	while (seg) {
		const char *slash = strchr(seg, '/');
		size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);

		if (sl == 0 || sl > 255 || (sl == 1 && seg[0] == '.') ||
		    (sl == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		seg = slash ? slash + 1 : NULL;
	}
	return strncmp(p, ".git", 4) != 0 || (p[4] != '\0' && p[4] != '/');
}

struct ctl_alias {
	const char *name;
	const char *canonical;
};

static const struct ctl_alias ctl_exp_keys[] = {
    {"name", "name"},
    {"processor", "processor"},
    {"slug", "processor"},
    {"source_branch", "source_branch"},
    {"branch", "source_branch"},
    {"ref", "source_branch"},
    {"source", "source_branch"},
    {"input_path", "input_path"},
    {"input", "input_path"},
    {"output_path", "output_path"},
    {"output", "output_path"},
    {"params", "params"},
    {"parameters", "params"},
};

static const char *ctl_exp_key(const char *k)
{
	for (size_t i = 0; i < sizeof(ctl_exp_keys) / sizeof(ctl_exp_keys[0]); i++)
		if (!strcmp(k, ctl_exp_keys[i].name))
			return ctl_exp_keys[i].canonical;
	return NULL;
}

int ctl_experiment_spec(json_t *in, bool lines, json_t **out, char err[CTL_ERR_MAX])
{
	json_t *o = json_object(), *params = json_object(), *v;
	const char *k, *s;
	int r = -EINVAL;

	*out = NULL;
	if (!o || !params) {
		r = -ENOMEM;
		goto out;
	}
	json_object_foreach(in, k, v)
	{
		const char *c = ctl_exp_key(k);

		if (!c) {
			if (!lines) {
				ctl_fail(err, r,
				         "unknown field \"%.60s\" (name, processor, source_branch, "
				         "input_path, output_path, params)",
				         k);
				goto out;
			}
			if (json_object_get(params, k)) {
				ctl_fail(err, r, "parameter %.60s given twice", k);
				goto out;
			}
			if (!json_is_string(v)) {
				ctl_fail(err, r, "parameter %.60s must be a plain value", k);
				goto out;
			}
			json_object_set(params, k, v);
			continue;
		}
		if (!strcmp(c, "params")) {
			const char *pk;
			json_t *pv;

			if (!json_is_object(v)) {
				ctl_fail(err, r, "params must be an object of name: value");
				goto out;
			}
			json_object_foreach(v, pk, pv)
			{
				if (json_object_get(params, pk)) {
					ctl_fail(err, r, "parameter %.60s given twice", pk);
					goto out;
				}
				if (json_is_object(pv) || json_is_array(pv) || json_is_null(pv)) {
					ctl_fail(err, r, "parameter %.60s must be a plain value",
					         pk);
					goto out;
				}
				json_object_set(params, pk, pv);
			}
			continue;
		}
		if (json_object_get(o, c)) {
			ctl_fail(err, r, "%s given twice", c);
			goto out;
		}
		if (!json_is_string(v)) {
			ctl_fail(err, r, "%s must be a string", k);
			goto out;
		}
		json_object_set(o, c, v);
	}
	s = json_string_value(json_object_get(o, "processor"));
	if (!s) {
		ctl_fail(err, r, "processor is required (the slug of a published processor)");
		goto out;
	}
	if (!ctl_slug_ok(s)) {
		ctl_fail(err, r, "processor \"%.60s\" is not a slug ([a-z0-9-])", s);
		goto out;
	}
	s = json_string_value(json_object_get(o, "name"));
	if (s && !ctl_name_ok(s)) {
		ctl_fail(err, r,
		         "name \"%.60s\" must be 1-100 of [A-Za-z0-9._-], not starting with '.' or "
		         "'-'",
		         s);
		goto out;
	}
	if (s && (!strcmp(s, "launch") || !strcmp(s, "launch.error") || !strcmp(s, "README"))) {
		ctl_fail(err, r, "name %s is reserved: it is a file beside the launches", s);
		goto out;
	}
	s = json_string_value(json_object_get(o, "source_branch"));
	if (s && (!*s || strlen(s) > 255 || strpbrk(s, " ~^:?*[\\") || strstr(s, ".."))) {
		ctl_fail(err, r, "source_branch \"%.60s\" is not a branch name", s);
		goto out;
	}
	s = json_string_value(json_object_get(o, "input_path"));
	if (s && !ctl_rel_path_ok(s, true)) {
		ctl_fail(err, r, "input_path must be a relative path inside the project");
		goto out;
	}
	s = json_string_value(json_object_get(o, "output_path"));
	if (s && !ctl_rel_path_ok(s, false)) {
		ctl_fail(err, r, "output_path must be a relative path inside the project");
		goto out;
	}
	json_object_set(o, "params", params);
	*out = o;
	o = NULL;
	r = 0;
out:
	json_decref(params);
	json_decref(o);
	return r;
}

static bool ctl_var_key_ok(const char *k)
{
	size_t n = strlen(k);

	return n > 0 && n <= 255 &&
	       strspn(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static int ctl_var_add(json_t *vars, const char *k, const json_t *v, char err[CTL_ERR_MAX])
{
	char num[64];
	const char *s = json_string_value(v);
	size_t i;
	json_t *e;

	if (!ctl_var_key_ok(k))
		return ctl_fail(err, -EINVAL, "variable name \"%.60s\" must be [A-Za-z0-9_]", k);
	json_array_foreach(vars, i, e) if (!strcmp(json_string_value(json_object_get(e, "key")),
	                                           k)) return ctl_fail(err, -EINVAL,
	                                                               "variable %.60s given twice",
	                                                               k);
	if (json_array_size(vars) >= CTL_VARS_MAX)
		return ctl_fail(err, -EINVAL, "more than %d variables", CTL_VARS_MAX);
	if (json_is_integer(v)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		s = num;
	} else if (json_is_real(v)) {
		snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		s = num;
	} else if (json_is_boolean(v)) {
		s = json_is_true(v) ? "true" : "false";
	}
	if (!s)
		return ctl_fail(err, -EINVAL, "variable %.60s must be a plain value", k);
	return json_array_append_new(vars, json_pack("{s:s, s:s}", "key", k, "value", s)) < 0
	           ? -ENOMEM
	           : 0;
}

int ctl_pipeline_spec(json_t *in, bool lines, json_t **out, char err[CTL_ERR_MAX])
{
	json_t *vars = json_array(), *v;
	const char *k, *ref = NULL;
	int r = 0;

	*out = NULL;
	if (!vars)
		return -ENOMEM;
	json_object_foreach(in, k, v)
	{
		if (!strcmp(k, "ref")) {
			ref = json_string_value(v);
			if (!ref) {
				r = ctl_fail(err, -EINVAL, "ref must be a string");
				break;
			}
		} else if (!strcmp(k, "variables") && json_is_object(v)) {
			const char *vk;
			json_t *vv;

			json_object_foreach(v, vk,
			                    vv) if ((r = ctl_var_add(vars, vk, vv, err)) < 0) break;
		} else if (!strcmp(k, "variables") && json_is_array(v) && !lines) {
			size_t i;
			json_t *e;

			json_array_foreach(v, i, e)
			{
				const char *vk = json_string_value(json_object_get(e, "key"));

				if (!json_is_object(e) || !vk) {
					r = ctl_fail(err, -EINVAL, "variables[%zu] needs a key", i);
					break;
				}
				if ((r = ctl_var_add(vars, vk, json_object_get(e, "value"), err)) <
				    0)
					break;
			}
		} else if (lines) {
			r = ctl_var_add(vars, k, v, err);
		} else {
			r = ctl_fail(err, -EINVAL, "unknown field \"%.60s\" (ref, variables)", k);
		}
		if (r < 0)
			break;
	}
	if (r == 0 &&
	    (!ref || !*ref || strlen(ref) > 255 || strpbrk(ref, " ~^:?*[\\") || strstr(ref, "..")))
		r = ctl_fail(err, -EINVAL,
		             ref ? "ref \"%.60s\" is not a branch or tag name"
		                 : "ref is required%.0s",
		             ref ? ref : "");
	if (r < 0) {
		json_decref(vars);
		return r;
	}
	*out = json_pack("{s:s, s:o}", "ref", ref, "variables", vars);
	return *out ? 0 : -ENOMEM;
}

int ctl_command(const char *data, size_t len, const char *const *allowed, char err[CTL_ERR_MAX])
{
	const char *s = data;
	size_t n = len;
	int r;

	err[0] = '\0';
	if (len > CTL_MAX)
		return ctl_fail(err, -EFBIG, "request of %zu bytes; at most %d", len, CTL_MAX);
	r = ctl_text_check((const unsigned char *)data, len, err);
	if (r < 0)
		return r;
	while (n && strchr(" \t\r\n", *s))
		s++, n--;
	while (n && strchr(" \t\r\n", s[n - 1]))
		n--;
	for (int i = 0; allowed[i]; i++)
		if (strlen(allowed[i]) == n && !memcmp(s, allowed[i], n))
			return i;
	{
		char list[128] = "";

		for (int i = 0; allowed[i]; i++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
			         i ? " or " : "", allowed[i]);
		return ctl_fail(err, -EINVAL, "unknown command \"%.*s\": write %s",
		                (int)(n > 40 ? 40 : n), s, list);
	}
}

static int ctl_typed(const char *name, const char *type, json_t *v, json_t **out,
                     char err[CTL_ERR_MAX])
{
	const char *s = json_string_value(v);
	char *end;

	*out = NULL;
	if (!strcmp(type, "STRING")) {
		if (!s || strlen(s) > CTL_VALUE_MAX)
			return ctl_fail(err, -EINVAL, "parameter %s must be a string", name);
		*out = json_string(s);
	} else if (!strcmp(type, "BOOLEAN")) {
		if (json_is_boolean(v))
			*out = json_incref(v);
		else if (s && (!strcmp(s, "true") || !strcmp(s, "false")))
			*out = json_boolean(!strcmp(s, "true"));
		else
			return ctl_fail(err, -EINVAL,
			                "parameter %s must be true or false, not %.40s", name,
			                s ? s : "that");
	} else if (!strcmp(type, "INTEGER")) {
		if (json_is_integer(v)) {
			*out = json_incref(v);
		} else if (s && *s && strlen(s) < 24) {
			long long x;

			errno = 0;
			x = strtoll(s, &end, 10);
			if (*end || errno)
				return ctl_fail(err, -EINVAL,
				                "parameter %s must be an integer, not %.40s", name,
				                s);
			*out = json_integer(x);
		} else {
			return ctl_fail(err, -EINVAL, "parameter %s must be an integer", name);
		}
	} else if (!strcmp(type, "FLOAT")) {
		if (json_is_number(v)) {
			*out = json_real(json_number_value(v));
		} else if (s && *s && strlen(s) < 48) {
			double x = strtod(s, &end);

			if (*end || !isfinite(x))
				return ctl_fail(err, -EINVAL,
				                "parameter %s must be a number, not %.40s", name,
				                s);
			*out = json_real(x);
		} else {
			return ctl_fail(err, -EINVAL, "parameter %s must be a number", name);
		}
	} else {
		return ctl_fail(err, -EINVAL, "parameter %s has an unknown type %.20s", name, type);
	}
	return *out ? 0 : -ENOMEM;
}

/* Edit distance (insertions, deletions, substitutions; case-insensitive) of a and b,
 * both cut at CTL_SUGGEST_LEN bytes. */
#define CTL_SUGGEST_LEN 64
static size_t ctl_distance(const char *a, const char *b)
{
	size_t la = strnlen(a, CTL_SUGGEST_LEN), lb = strnlen(b, CTL_SUGGEST_LEN);
	size_t row[CTL_SUGGEST_LEN + 1], prev, cur;

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t sub = prev + (tolower((unsigned char)a[i - 1]) !=
			                     tolower((unsigned char)b[j - 1]));

			cur = row[j];
			row[j] = sub;
			if (cur + 1 < row[j])
				row[j] = cur + 1;
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			prev = cur;
		}
	}
	return row[lb];
}

void ctl_suggest(char err[CTL_ERR_MAX], const char *given, const char *const *names, size_t n)
{
	size_t best = SIZE_MAX, pick = 0, len = strlen(err), max;

	if (n == 0) {
		snprintf(err + len, CTL_ERR_MAX - len, " (there are none)");
		return;
	}
	/* a typo: at most a third of the name wrong (one edit for short names) */
	max = strlen(given) / 3 > 1 ? strlen(given) / 3 : 1;
	for (size_t i = 0; i < n; i++) {
		size_t d = ctl_distance(given, names[i]);

		if (d < best) {
			best = d;
			pick = i;
		}
	}
	if (best <= max)
		len += (size_t)snprintf(err + len, CTL_ERR_MAX - len, "; did you mean %.60s?",
		                        names[pick]);
	if (len >= CTL_ERR_MAX - 1)
		return;
	len += (size_t)snprintf(err + len, CTL_ERR_MAX - len, " (one of:");
	for (size_t i = 0; i < n && len < CTL_ERR_MAX - 1; i++) {
		/* the list is cut at the reason's size, with "..." rather than half a name */
		if (len + strlen(names[i]) + 8 >= CTL_ERR_MAX) {
			snprintf(err + len, CTL_ERR_MAX - len, " ...)");
			return;
		}
		len +=
		    (size_t)snprintf(err + len, CTL_ERR_MAX - len, "%s %s", i ? "," : "", names[i]);
	}
	if (len < CTL_ERR_MAX - 1)
		snprintf(err + len, CTL_ERR_MAX - len, ")");
}

int ctl_params_check(json_t *params, const json_t *decl, char err[CTL_ERR_MAX])
{
	const char *k;
	json_t *v, *d;
	size_t i;
	int r;

	json_object_foreach(params, k, v)
	{
		bool known = false;

		json_array_foreach(decl, i, d)
		{
			const char *n = json_string_value(json_object_get(d, "name"));

			if (n && !strcmp(n, k))
				known = true;
		}
		if (!known) {
			const char *names[CTL_SUGGEST_MAX];
			size_t nn = 0;

			json_array_foreach(decl, i, d)
			{
				const char *n = json_string_value(json_object_get(d, "name"));

				if (n && nn < CTL_SUGGEST_MAX)
					names[nn++] = n;
			}
			ctl_fail(err, -EINVAL, "unknown parameter %.60s for this processor", k);
			ctl_suggest(err, k, names, nn);
			return -EINVAL;
		}
	}
	json_array_foreach(decl, i, d)
	{
		const char *n = json_string_value(json_object_get(d, "name"));
		const char *t = json_string_value(json_object_get(d, "type"));
		json_t *given, *typed;

		if (!n || !t)
			continue;
		given = json_object_get(params, n);
		if (!given) {
			json_t *def = json_object_get(d, "default");

			if (json_is_true(json_object_get(d, "required")) &&
			    (!def || json_is_null(def)))
				return ctl_fail(err, -EINVAL, "parameter %s is required", n);
			continue;
		}
		r = ctl_typed(n, t, given, &typed, err);
		if (r < 0)
			return r;
		json_object_set_new(params, n, typed);
	}
	return 0;
}
