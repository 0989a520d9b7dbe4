/* GitLab CI YAML subset parser over libyaml's document API. Aliases resolve to shared
 * nodes, so every walk is bounded by a visit budget (CI_MAX_NODES) besides the depth
 * check done on the event stream before loading. */
#include "ci.h"

#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "reef/buf.h"
#include "reef/util.h"

struct ci_ctx {
	yaml_document_t doc;
	char *err;
	unsigned long visits;
};

static int ci_fail(struct ci_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int ci_fail(struct ci_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c->err[0])
		return -EINVAL; /* keep the first error: it is the cause */
	va_start(ap, fmt);
	vsnprintf(c->err, CI_MAX_ERR, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static yaml_node_t *ci_node(struct ci_ctx *c, int idx)
{
	return yaml_document_get_node(&c->doc, idx);
}

static int ci_visit(struct ci_ctx *c)
{
	if (++c->visits > CI_MAX_NODES)
		return ci_fail(c, "config is too large: more than %d YAML nodes after aliases",
		               CI_MAX_NODES);
	return 0;
}

static const char *ci_scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain (unquoted) scalar that YAML 1.1 reads as null. */
static bool ci_is_null(const yaml_node_t *n)
{
	const char *s = ci_scalar(n);

	if (!n)
		return true;
	if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	       !strcmp(s, "NULL");
}

/* A plain scalar read as a YAML 1.1 boolean: 1, 0 or -1 when it is not one. */
static int ci_bool(const yaml_node_t *n)
{
	static const char *const yes[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On"};
	static const char *const no[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off"};
	const char *s = ci_scalar(n);

	if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return -1;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(s, yes[i]))
			return 1;
		if (!strcmp(s, no[i]))
			return 0;
	}
	return -1;
}

#define CI_MAX_PAIRS 1024

struct ci_pairs {
	int key[CI_MAX_PAIRS];
	int value[CI_MAX_PAIRS];
	size_t n;
};

static const char *ci_key(struct ci_ctx *c, const struct ci_pairs *ps, size_t i)
{
	/* ci_pairs_new admits only scalar keys; "" keeps callers free of NULL checks */
	const char *k = ci_scalar(ci_node(c, ps->key[i]));

	return k ? k : "";
}

static yaml_node_t *ci_val(struct ci_ctx *c, const struct ci_pairs *ps, size_t i)
{
	return ci_node(c, ps->value[i]);
}

static bool ci_pairs_has(struct ci_ctx *c, const struct ci_pairs *ps, const char *key)
{
	for (size_t i = 0; i < ps->n; i++)
		if (!strcmp(ci_key(c, ps, i), key))
			return true;
	return false;
}

static yaml_node_t *ci_get(struct ci_ctx *c, const struct ci_pairs *ps, const char *key)
{
	for (size_t i = 0; i < ps->n; i++)
		if (!strcmp(ci_key(c, ps, i), key))
			return ci_val(c, ps, i);
	return NULL;
}

static int ci_pairs_collect(struct ci_ctx *c, yaml_node_t *map, struct ci_pairs *ps,
                            const char *where, int depth);

/* Adds the keys of a merged mapping that the target does not define itself. */
static int ci_pairs_merge(struct ci_ctx *c, yaml_node_t *src, struct ci_pairs *ps,
                          const char *where, int depth)
{
	struct ci_pairs *sub = calloc(1, sizeof(*sub));
	int r;

	if (!sub)
		return -ENOMEM;
	r = ci_pairs_collect(c, src, sub, where, depth + 1);
	for (size_t i = 0; r == 0 && i < sub->n; i++) {
		if (ci_pairs_has(c, ps, ci_key(c, sub, i)))
			continue;
		if (ps->n >= CI_MAX_PAIRS) {
			r = ci_fail(c, "%s: too many keys", where);
			break;
		}
		ps->key[ps->n] = sub->key[i];
		ps->value[ps->n] = sub->value[i];
		ps->n++;
	}
	free(sub);
	return r;
}

/* Flattens a mapping with YAML merge keys ("<<: *anchor" or a list of them): own keys
 * first, merged keys only where not already present, as YAML specifies. */
static int ci_pairs_collect(struct ci_ctx *c, yaml_node_t *map, struct ci_pairs *ps,
                            const char *where, int depth)
{
	yaml_node_pair_t *p;
	int r;

	if (depth > 8)
		return ci_fail(c, "%s: merge keys nest too deeply", where);
	if (!map || map->type != YAML_MAPPING_NODE)
		return ci_fail(c, "%s config should be a hash", where);
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		const char *ks = ci_scalar(ci_node(c, p->key));

		if ((r = ci_visit(c)) < 0)
			return r;
		if (!ks)
			return ci_fail(c, "%s: keys must be strings", where);
		if (!strcmp(ks, "<<"))
			continue;
		if (ci_pairs_has(c, ps, ks))
			return ci_fail(c, "%s: duplicate key %s", where, ks);
		if (ps->n >= CI_MAX_PAIRS)
			return ci_fail(c, "%s: too many keys", where);
		ps->key[ps->n] = p->key;
		ps->value[ps->n] = p->value;
		ps->n++;
	}
	for (p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
		yaml_node_t *v = ci_node(c, p->value);

		if (strcmp(ci_scalar(ci_node(c, p->key)), "<<") != 0)
			continue;
		if (v->type != YAML_SEQUENCE_NODE) {
			if ((r = ci_pairs_merge(c, v, ps, where, depth)) < 0)
				return r;
			continue;
		}
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++)
			if ((r = ci_pairs_merge(c, ci_node(c, *it), ps, where, depth)) < 0)
				return r;
	}
	return 0;
}

static struct ci_pairs *ci_pairs_new(struct ci_ctx *c, yaml_node_t *map, const char *where)
{
	struct ci_pairs *ps = calloc(1, sizeof(*ps));

	if (!ps) {
		ci_fail(c, "out of memory");
		return NULL;
	}
	if (ci_pairs_collect(c, map, ps, where, 0) < 0) {
		free(ps);
		return NULL;
	}
	return ps;
}

/* A script section: a string, or a list of strings and lists of strings (GitLab
 * flattens one level so anchors of command lists can be spliced in). */
static int ci_script(struct ci_ctx *c, yaml_node_t *n, const char *where, json_t **out)
{
	json_t *arr = json_array();
	int r = 0;

	*out = arr;
	if (!arr)
		return -ENOMEM;
	if (ci_scalar(n)) {
		if (ci_is_null(n))
			return 0;
		json_array_append_new(arr, json_string(ci_scalar(n)));
		return 0;
	}
	if (n->type != YAML_SEQUENCE_NODE)
		return ci_fail(c,
		               "%s config should be a string or a nested array of strings up to 10 "
		               "levels deep",
		               where);
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		yaml_node_t *e = ci_node(c, *it);

		if ((r = ci_visit(c)) < 0)
			return r;
		if (e->type == YAML_SEQUENCE_NODE) {
			for (yaml_node_item_t *jt = e->data.sequence.items.start;
			     jt < e->data.sequence.items.top; jt++) {
				yaml_node_t *f = ci_node(c, *jt);

				if ((r = ci_visit(c)) < 0)
					return r;
				if (!ci_scalar(f))
					return ci_fail(c,
					               "%s config should be a string or a nested "
					               "array of strings",
					               where);
				json_array_append_new(arr, json_string(ci_scalar(f)));
			}
		} else if (ci_scalar(e)) {
			json_array_append_new(arr, json_string(ci_scalar(e)));
		} else {
			return ci_fail(
			    c, "%s config should be a string or a nested array of strings", where);
		}
		if (json_array_size(arr) > CI_MAX_LINES)
			return ci_fail(c, "%s has more than %d lines", where, CI_MAX_LINES);
	}
	return 0;
}

static bool ci_var_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       ch == '_';
}

static bool ci_var_name_ok(const char *s)
{
	if (!s || !*s || strlen(s) > CI_MAX_NAME)
		return false;
	for (; *s; s++)
		if (!ci_var_char(*s))
			return false;
	return true;
}

/* variables: {NAME: value} or {NAME: {value: ..., description: ...}}; merges into vars. */
static int ci_variables(struct ci_ctx *c, yaml_node_t *n, const char *where, json_t *vars)
{
	struct ci_pairs *ps;
	int r = 0;

	if (ci_is_null(n))
		return 0;
	if (!(ps = ci_pairs_new(c, n, where)))
		return -EINVAL;
	for (size_t i = 0; i < ps->n && r == 0; i++) {
		const char *name = ci_key(c, ps, i);
		yaml_node_t *v = ci_val(c, ps, i);

		if (!ci_var_name_ok(name)) {
			r = ci_fail(c, "%s: invalid variable name %s", where, name);
			break;
		}
		if (v->type == YAML_MAPPING_NODE) {
			struct ci_pairs *vp = ci_pairs_new(c, v, where);

			if (!vp) {
				r = -EINVAL;
				break;
			}
			for (size_t j = 0; j < vp->n && r == 0; j++) {
				const char *k = ci_key(c, vp, j);

				if (strcmp(k, "value") && strcmp(k, "description"))
					r = ci_fail(c,
					            "%s:%s config uses %s, which reef-hub's CI "
					            "subset does not support",
					            where, name, k);
			}
			v = r == 0 ? ci_get(c, vp, "value") : NULL;
			free(vp);
			if (r < 0)
				break;
		}
		if (v && !ci_scalar(v)) {
			r = ci_fail(c, "%s config should be a hash of key value pairs", where);
			break;
		}
		json_object_set_new(vars, name,
		                    json_string(v && !ci_is_null(v) ? ci_scalar(v) : ""));
		if (json_object_size(vars) > CI_MAX_VARS)
			r = ci_fail(c, "%s: more than %d variables", where, CI_MAX_VARS);
	}
	free(ps);
	return r;
}

static bool ci_path_stays_inside(const char *p)
{
	const char *seg = p;

	if (!*p || p[0] == '/' || p[0] == '~')
		return false;
	while (seg) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);

		if (n == 2 && seg[0] == '.' && seg[1] == '.')
			return false;
		seg = end ? end + 1 : NULL;
	}
	return true;
}

static int ci_when(struct ci_ctx *c, yaml_node_t *n, const char *where, const char **out)
{
	const char *s = ci_scalar(n);

	if (!s || (strcmp(s, "on_success") && strcmp(s, "on_failure") && strcmp(s, "always")))
		return ci_fail(c,
		               "%s should be on_success, on_failure or always (reef-hub's CI "
		               "subset has no manual or delayed jobs)",
		               where);
	*out = s;
	return 0;
}

static int ci_artifacts(struct ci_ctx *c, yaml_node_t *n, const char *job, json_t **out)
{
	char where[CI_MAX_NAME + 32];
	struct ci_pairs *ps;
	json_t *a = NULL, *paths;
	const char *when = "on_success";
	int r = 0;

	*out = NULL;
	snprintf(where, sizeof(where), "jobs:%s:artifacts", job);
	if (!(ps = ci_pairs_new(c, n, where)))
		return -EINVAL;
	a = json_object();
	paths = json_array();
	json_object_set_new(a, "paths", paths);
	for (size_t i = 0; i < ps->n && r == 0; i++) {
		const char *k = ci_key(c, ps, i);
		yaml_node_t *v = ci_val(c, ps, i);

		if (!strcmp(k, "paths")) {
			if (v->type != YAML_SEQUENCE_NODE) {
				r = ci_fail(c, "%s paths should be an array of strings", where);
				break;
			}
			for (yaml_node_item_t *it = v->data.sequence.items.start;
			     it < v->data.sequence.items.top && r == 0; it++) {
				const char *p = ci_scalar(ci_node(c, *it));

				if ((r = ci_visit(c)) < 0)
					break;
				if (!p || !*p)
					r = ci_fail(c, "%s paths should be an array of strings",
					            where);
				else if (!ci_path_stays_inside(p) || strlen(p) > 4096)
					r = ci_fail(c, "%s:paths %s leaves the project directory",
					            where, p);
				else if (json_array_size(paths) >= CI_MAX_LINES)
					r = ci_fail(c, "%s: too many paths", where);
				else
					json_array_append_new(paths, json_string(p));
			}
		} else if (!strcmp(k, "when")) {
			r = ci_when(c, v, "artifacts:when", &when);
		} else if (!strcmp(k, "name")) {
			if (!ci_scalar(v))
				r = ci_fail(c, "%s name should be a string", where);
			else
				json_object_set_new(a, "name", json_string(ci_scalar(v)));
		} else {
			r = ci_fail(c,
			            "%s uses %s, which reef-hub's CI subset does not support (only "
			            "paths, when, name)",
			            where, k);
		}
	}
	free(ps);
	if (r < 0) {
		json_decref(a);
		return r;
	}
	json_object_set_new(a, "when", json_string(when));
	*out = a;
	return 0;
}

/* only/except: a list of refs, or {refs: [...]}. */
static int ci_refs(struct ci_ctx *c, yaml_node_t *n, const char *where, json_t **out)
{
	json_t *arr;

	*out = NULL;
	if (n->type == YAML_MAPPING_NODE) {
		struct ci_pairs *ps = ci_pairs_new(c, n, where);
		yaml_node_t *refs;

		if (!ps)
			return -EINVAL;
		for (size_t i = 0; i < ps->n; i++) {
			if (strcmp(ci_key(c, ps, i), "refs")) {
				int r = ci_fail(c,
				                "%s uses %s, which reef-hub's CI subset does not "
				                "support (only refs)",
				                where, ci_key(c, ps, i));

				free(ps);
				return r;
			}
		}
		refs = ci_get(c, ps, "refs");
		free(ps);
		if (!refs)
			return ci_fail(
			    c, "%s config should be an array of strings or a hash with refs",
			    where);
		n = refs;
	}
	if (ci_scalar(n) && !ci_is_null(n)) {
		arr = json_array();
		json_array_append_new(arr, json_string(ci_scalar(n)));
		*out = arr;
		return 0;
	}
	if (n->type != YAML_SEQUENCE_NODE)
		return ci_fail(c, "%s config should be an array of strings", where);
	arr = json_array();
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const char *s = ci_scalar(ci_node(c, *it));
		size_t len = s ? strlen(s) : 0;
		int r;

		if ((r = ci_visit(c)) < 0 || !s || !len) {
			json_decref(arr);
			return r < 0 ? r
			             : ci_fail(c, "%s config should be an array of strings", where);
		}
		if (len >= 2 && s[0] == '/' && s[len - 1] == '/') {
			regex_t re;
			char *pat = strndup(s + 1, len - 2);

			r = pat ? regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) : -1;
			free(pat);
			if (r != 0) {
				json_decref(arr);
				return ci_fail(c, "%s: invalid regular expression %s", where, s);
			}
			regfree(&re);
		}
		json_array_append_new(arr, json_string(s));
	}
	*out = arr;
	return 0;
}

/* Keys GitLab knows on a job but this subset does not run: named in the error, so a
 * user sees what to change instead of a job that silently behaves differently. */
static const char *const ci_unsupported_job_keys[] = {
    "services",
    "cache",
    "tags",
    "needs",
    "rules",
    "extends",
    "dependencies",
    "retry",
    "timeout",
    "coverage",
    "environment",
    "parallel",
    "trigger",
    "interruptible",
    "resource_group",
    "release",
    "inherit",
    "id_tokens",
    "secrets",
    "hooks",
    "pages",
    "start_in",
    "dast_configuration",
    "identity",
    "manual_confirmation",
    "run",
    NULL,
};

static const char *const ci_unsupported_top_keys[] = {
    "image", "services", "cache", "include", "workflow", "default", "types", NULL,
};

static bool ci_in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (!strcmp(*list, s))
			return true;
	return false;
}

static int ci_stage_index(const json_t *stages, const char *stage)
{
	size_t i;
	json_t *v;

	json_array_foreach(stages, i, v) if (!strcmp(json_string_value(v), stage)) return (int)i;
	return -1;
}

static int ci_job(struct ci_ctx *c, const char *name, yaml_node_t *n, const json_t *stages,
                  const json_t *gvars, const json_t *gbefore, const json_t *gafter, json_t **out)
{
	char where[CI_MAX_NAME + 32], sub[CI_MAX_NAME + 64];
	struct ci_pairs *ps;
	json_t *job = NULL, *vars, *v;
	const char *stage = "test", *when = "on_success";
	bool have_script = false;
	int r = 0, idx;

	*out = NULL;
	snprintf(where, sizeof(where), "jobs:%s", name);
	if (strlen(name) > CI_MAX_NAME)
		return ci_fail(c, "job name %.40s... is longer than %d characters", name,
		               CI_MAX_NAME);
	if (!(ps = ci_pairs_new(c, n, where)))
		return -EINVAL;
	job = json_object();
	vars = json_deep_copy(gvars);
	json_object_set_new(job, "name", json_string(name));
	json_object_set_new(job, "before_script", json_deep_copy(gbefore));
	json_object_set_new(job, "after_script", json_deep_copy(gafter));
	json_object_set_new(job, "allow_failure", json_false());
	json_object_set_new(job, "artifacts", json_null());
	json_object_set_new(job, "only", json_null());
	json_object_set_new(job, "except", json_null());
	for (size_t i = 0; i < ps->n && r == 0; i++) {
		const char *k = ci_key(c, ps, i);
		yaml_node_t *val = ci_val(c, ps, i);

		if (!k)
			continue; /* ci_pairs_collect admits scalar keys only */
		snprintf(sub, sizeof(sub), "%s:%s", where, k);
		if (!strcmp(k, "script") || !strcmp(k, "before_script") ||
		    !strcmp(k, "after_script")) {
			if ((r = ci_script(c, val, sub, &v)) == 0) {
				json_object_set(job, k, v);
				if (!strcmp(k, "script"))
					have_script = json_array_size(v) > 0;
			}
			json_decref(v);
		} else if (!strcmp(k, "stage")) {
			if (!ci_scalar(val) || ci_is_null(val))
				r = ci_fail(c, "%s config should be a string", sub);
			else
				stage = ci_scalar(val);
		} else if (!strcmp(k, "variables")) {
			r = ci_variables(c, val, sub, vars);
		} else if (!strcmp(k, "allow_failure")) {
			int b = ci_bool(val);

			if (b < 0)
				r = ci_fail(c,
				            "%s config should be a boolean value (exit_codes are "
				            "not supported)",
				            sub);
			else
				json_object_set_new(job, "allow_failure", json_boolean(b));
		} else if (!strcmp(k, "image")) {
			/* the container a Docker or Kubernetes executor runs the job in; this
			 * runner is a shell executor, which ignores it as GitLab Runner's does
			 * (docs.gitlab.com/ee/ci/yaml/#image: a name, or a hash with name) */
			const char *img = ci_scalar(val);

			if (!img && val->type == YAML_MAPPING_NODE)
				for (yaml_node_pair_t *ip = val->data.mapping.pairs.start;
				     ip < val->data.mapping.pairs.top; ip++)
					if (ci_scalar(ci_node(c, ip->key)) &&
					    !strcmp(ci_scalar(ci_node(c, ip->key)), "name"))
						img = ci_scalar(ci_node(c, ip->value));
			if (!img || !*img || ci_is_null(val))
				r = ci_fail(c, "%s config should be a string or a hash with name",
				            sub);
			else
				json_object_set_new(job, "image", json_string(img));
		} else if (!strcmp(k, "when")) {
			r = ci_when(c, val, sub, &when);
		} else if (!strcmp(k, "artifacts")) {
			if ((r = ci_artifacts(c, val, name, &v)) == 0)
				json_object_set_new(job, "artifacts", v);
		} else if (!strcmp(k, "only") || !strcmp(k, "except")) {
			if ((r = ci_refs(c, val, sub, &v)) == 0)
				json_object_set_new(job, k, v ? v : json_null());
		} else if (ci_in_list(ci_unsupported_job_keys, k)) {
			r = ci_fail(c, "%s uses %s, which reef-hub's CI subset does not support",
			            where, k);
		} else {
			r = ci_fail(c, "%s config contains unknown keys: %s", where, k);
		}
	}
	free(ps);
	if (r == 0 && !have_script)
		r = ci_fail(c, "%s config should implement a script: keyword", where);
	if (r == 0 && (idx = ci_stage_index(stages, stage)) < 0) {
		struct buf b = BUF_INIT(1024);
		size_t i;

		json_array_foreach(stages, i, v)
		    buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(v));
		r = ci_fail(c, "%s chosen stage %s does not exist; available stages are %s", where,
		            stage, b.data ? b.data : "");
		buf_free(&b);
	} else if (r == 0) {
		json_object_set_new(job, "stage", json_string(stage));
		json_object_set_new(job, "stage_idx", json_integer(idx));
		json_object_set_new(job, "when", json_string(when));
		json_object_set_new(job, "variables", vars);
		vars = NULL;
	}
	json_decref(vars);
	if (r < 0) {
		json_decref(job);
		return r;
	}
	*out = job;
	return 0;
}

static int ci_stages(struct ci_ctx *c, yaml_node_t *n, json_t *stages)
{
	json_array_clear(stages);
	json_array_append_new(stages, json_string(".pre"));
	if (n->type != YAML_SEQUENCE_NODE)
		return ci_fail(c, "stages config should be an array of strings");
	for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
	     it++) {
		const char *s = ci_scalar(ci_node(c, *it));

		if (!s || !*s || strlen(s) > CI_MAX_NAME)
			return ci_fail(c, "stages config should be an array of strings");
		if (!strcmp(s, ".pre") || !strcmp(s, ".post"))
			continue;
		if (ci_stage_index(stages, s) >= 0)
			return ci_fail(c, "stages config contains stage %s twice", s);
		json_array_append_new(stages, json_string(s));
		if (json_array_size(stages) > CI_MAX_STAGES)
			return ci_fail(c, "stages: more than %d stages", CI_MAX_STAGES);
	}
	json_array_append_new(stages, json_string(".post"));
	return 0;
}

/* Depth and alias count are checked on the event stream: the document loader would
 * otherwise build an arbitrarily deep tree before we could look at it. */
static int ci_precheck(const char *yaml, size_t len, char *err)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	int depth = 0, docs = 0, r = 0;
	unsigned long events = 0;

	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	for (;;) {
		if (!yaml_parser_parse(&parser, &ev)) {
			snprintf(
			    err, CI_MAX_ERR,
			    "Invalid configuration format: (<unknown>): %s at line %zu column %zu",
			    parser.problem ? parser.problem : "syntax error",
			    parser.problem_mark.line + 1, parser.problem_mark.column + 1);
			r = -EINVAL;
			break;
		}
		if (ev.type == YAML_SEQUENCE_START_EVENT || ev.type == YAML_MAPPING_START_EVENT) {
			if (++depth > CI_MAX_DEPTH) {
				snprintf(err, CI_MAX_ERR, "config nests deeper than %d levels",
				         CI_MAX_DEPTH);
				r = -EINVAL;
			}
		} else if (ev.type == YAML_SEQUENCE_END_EVENT ||
		           ev.type == YAML_MAPPING_END_EVENT) {
			depth--;
		} else if (ev.type == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
			snprintf(err, CI_MAX_ERR, "config must hold a single YAML document");
			r = -EINVAL;
		}
		if (r == 0 && ++events > CI_MAX_NODES) {
			snprintf(err, CI_MAX_ERR, "config is too large: more than %d YAML events",
			         CI_MAX_NODES);
			r = -EINVAL;
		}
		bool end = ev.type == YAML_STREAM_END_EVENT;

		yaml_event_delete(&ev);
		if (end || r < 0)
			break;
	}
	yaml_parser_delete(&parser);
	return r;
}

int ci_parse(const char *yaml, size_t len, json_t **out, char err[CI_MAX_ERR])
{
	struct ci_ctx c = {.err = err};
	yaml_parser_t parser;
	struct ci_pairs *top = NULL;
	json_t *res = NULL, *stages = NULL, *gvars = NULL, *gbefore = NULL, *gafter = NULL;
	json_t *jobs = NULL, *by_stage = NULL;
	yaml_node_t *root, *n;
	bool loaded = false;
	int r;

	*out = NULL;
	err[0] = '\0';
	if (len > CI_MAX_FILE) {
		snprintf(err, CI_MAX_ERR, "config is larger than %zu bytes", CI_MAX_FILE);
		return -EFBIG;
	}
	if (memchr(yaml, '\0', len)) {
		snprintf(err, CI_MAX_ERR, "config contains a NUL byte");
		return -EINVAL;
	}
	if ((r = ci_precheck(yaml, len, err)) < 0)
		return r;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &c.doc)) {
		r = ci_fail(&c, "Invalid configuration format: %s",
		            parser.problem ? parser.problem : "YAML error");
		goto out;
	}
	loaded = true;
	root = yaml_document_get_root_node(&c.doc);
	if (!root || ci_is_null(root)) {
		r = ci_fail(&c, "Please provide content of .gitlab-ci.yml");
		goto out;
	}
	if (root->type != YAML_MAPPING_NODE) {
		r = ci_fail(&c, "Invalid configuration format: root config should be a hash");
		goto out;
	}
	if (!(top = ci_pairs_new(&c, root, "root"))) {
		r = -EINVAL;
		goto out;
	}
	stages = json_array();
	gvars = json_object();
	gbefore = json_array();
	gafter = json_array();
	{
		static const char *const defaults[] = {"build", "test", "deploy", NULL};
		json_t *d = json_array();

		for (const char *const *s = defaults; *s; s++)
			json_array_append_new(d, json_string(*s));
		json_array_append_new(stages, json_string(".pre"));
		json_array_extend(stages, d);
		json_array_append_new(stages, json_string(".post"));
		json_decref(d);
	}
	for (size_t i = 0; i < top->n; i++) {
		const char *k = ci_key(&c, top, i);

		if (ci_in_list(ci_unsupported_top_keys, k)) {
			r = ci_fail(&c,
			            "%s is not supported by reef-hub's CI subset (stages, "
			            "variables, before_script, after_script and jobs)",
			            k);
			goto out;
		}
	}
	if ((n = ci_get(&c, top, "stages")) && (r = ci_stages(&c, n, stages)) < 0)
		goto out;
	if ((n = ci_get(&c, top, "variables")) && (r = ci_variables(&c, n, "variables", gvars)) < 0)
		goto out;
	if ((n = ci_get(&c, top, "before_script"))) {
		json_decref(gbefore);
		if ((r = ci_script(&c, n, "before_script", &gbefore)) < 0)
			goto out;
	}
	if ((n = ci_get(&c, top, "after_script"))) {
		json_decref(gafter);
		if ((r = ci_script(&c, n, "after_script", &gafter)) < 0)
			goto out;
	}
	by_stage = json_array();
	for (size_t i = 0; i < json_array_size(stages); i++)
		json_array_append_new(by_stage, json_array());
	for (size_t i = 0; i < top->n; i++) {
		const char *k = ci_key(&c, top, i);
		json_t *job;

		if (!strcmp(k, "stages") || !strcmp(k, "variables") ||
		    !strcmp(k, "before_script") || !strcmp(k, "after_script") || k[0] == '.')
			continue; /* hidden keys are templates for anchors */
		if (ci_val(&c, top, i)->type != YAML_MAPPING_NODE) {
			r = ci_fail(&c,
			            "jobs:%s config should be a hash (root config contains unknown "
			            "keys: %s)",
			            k, k);
			goto out;
		}
		if ((r = ci_job(&c, k, ci_val(&c, top, i), stages, gvars, gbefore, gafter, &job)) <
		    0)
			goto out;
		json_array_append_new(
		    json_array_get(by_stage,
		                   (size_t)json_integer_value(json_object_get(job, "stage_idx"))),
		    job);
	}
	jobs = json_array();
	for (size_t i = 0; i < json_array_size(by_stage); i++)
		json_array_extend(jobs, json_array_get(by_stage, i));
	if (json_array_size(jobs) == 0) {
		r = ci_fail(&c, "jobs config should contain at least one visible job");
		goto out;
	}
	if (json_array_size(jobs) > CI_MAX_JOBS) {
		r = ci_fail(&c, "config defines more than %d jobs", CI_MAX_JOBS);
		goto out;
	}
	res = json_object();
	json_object_set(res, "stages", stages);
	json_object_set(res, "jobs", jobs);
	*out = res;
	r = 0;
out:
	if (r < 0 && !err[0])
		snprintf(err, CI_MAX_ERR, "config could not be read (%s)", strerror(-r));
	free(top);
	json_decref(stages);
	json_decref(gvars);
	json_decref(gbefore);
	json_decref(gafter);
	json_decref(jobs);
	json_decref(by_stage);
	if (loaded)
		yaml_document_delete(&c.doc);
	yaml_parser_delete(&parser);
	return r;
}

static bool ci_ref_entry_matches(const char *e, const char *ref, bool is_tag)
{
	size_t len = strlen(e);

	if (!strcmp(e, "branches"))
		return !is_tag;
	if (!strcmp(e, "tags"))
		return is_tag;
	if (len >= 2 && e[0] == '/' && e[len - 1] == '/') {
		regex_t re;
		char *pat = strndup(e + 1, len - 2);
		bool m = false;

		if (pat && regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) == 0) {
			m = regexec(&re, ref, 0, NULL, 0) == 0;
			regfree(&re);
		}
		free(pat);
		return m;
	}
	return !strcmp(e, ref);
}

static bool ci_list_matches(const json_t *list, const char *ref, bool is_tag)
{
	size_t i;
	json_t *v;

	json_array_foreach(
	    list, i, v) if (ci_ref_entry_matches(json_string_value(v), ref, is_tag)) return true;
	return false;
}

bool ci_job_matches_ref(const json_t *job, const char *ref, bool is_tag)
{
	const json_t *only = json_object_get(job, "only"), *except = json_object_get(job, "except");

	if (json_is_array(only) && !ci_list_matches(only, ref, is_tag))
		return false;
	if (json_is_array(except) && ci_list_matches(except, ref, is_tag))
		return false;
	return true;
}

char *ci_expand(const char *s, const json_t *vars)
{
	struct buf b = BUF_INIT(256 << 10);

	buf_puts(&b, "");
	while (*s) {
		const char *start, *val;
		char name[CI_MAX_NAME + 1];
		size_t n = 0;
		bool brace = false;

		if (*s != '$') {
			const char *d = strchr(s, '$');
			size_t chunk = d ? (size_t)(d - s) : strlen(s);

			buf_append(&b, s, chunk);
			s += chunk;
			continue;
		}
		if (s[1] == '$') {
			buf_puts(&b, "$");
			s += 2;
			continue;
		}
		start = s + 1;
		if (*start == '{') {
			brace = true;
			start++;
		}
		while (start[n] && ci_var_char(start[n]) && n < CI_MAX_NAME)
			n++;
		if (n == 0 || (brace && start[n] != '}')) {
			buf_puts(&b, "$");
			s++;
			continue;
		}
		memcpy(name, start, n);
		name[n] = '\0';
		val = json_string_value(json_object_get(vars, name));
		if (val)
			buf_puts(&b, val);
		s = start + n + (brace ? 1 : 0);
	}
	return buf_steal(&b);
}
