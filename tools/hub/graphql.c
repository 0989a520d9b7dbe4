/* GitLab's GraphQL endpoint, POST (or GET) /api/graphql, for the subset reefd uses:
 *
 *   query($fullPath: ID!, $ref: String!, $paths: [String!]!) {
 *     project(fullPath: $fullPath) { repository { blobs(ref: $ref, paths: $paths) {
 *       nodes { path size rawSize lfsOid storedExternally oid } } } } }
 *
 * shaped as GitLab's schema answers it (docs/hub.md lists the types, fields and the
 * GitLab sources). The document is parsed by gql_parse.c; this file authenticates as
 * GraphqlController does, validates against the small schema below with graphql-ruby's
 * messages, scores complexity with GitLab's formula (app/graphql/types/base_field.rb)
 * and executes against the repositories with libgit2 (repo.c's pool and helpers). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"
#include "gql.h"
#include "repo_int.h"

#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

/* app/controllers/graphql_controller.rb: MAX_QUERY_SIZE, in characters */
#define GX_MAX_QUERY_CHARS 10000
/* app/graphql/gitlab_schema.rb */
#define GX_MAX_COMPLEXITY_ANON  200
#define GX_MAX_COMPLEXITY_USER  250
#define GX_MAX_COMPLEXITY_ADMIN 300
#define GX_MAX_DEPTH_ANON       15
#define GX_MAX_DEPTH_USER       20
#define GX_MAX_PAGE_SIZE        100 /* default_max_page_size: nodes per connection page */
#define GX_MAX_ERRORS           5   /* validate_max_errors */
/* Request bodies: a 10,000-character query plus variables for the ~125 paths the
 * complexity limit admits (4 KiB each at most) fit in 1 MiB; a larger body would only
 * cost memory in JSON parsing before being refused. */
#define GX_MAX_BODY ((size_t)1 << 20)
/* lib/gitlab/git/blob.rb: LFS_POINTER_MIN_SIZE, LFS_POINTER_MAX_SIZE */
#define GX_LFS_MIN 120
#define GX_LFS_MAX 200

/* --- the schema subset --- */

enum gx_type {
	GX_QUERY,
	GX_PROJECT,
	GX_REPOSITORY,
	GX_BLOB_CONN,
	GX_PAGE_INFO,
	GX_BLOB,
	GX_LEAF,
};

static const char *const gx_type_names[] = {
    [GX_QUERY] = "Query",           [GX_PROJECT] = "Project",
    [GX_REPOSITORY] = "Repository", [GX_BLOB_CONN] = "RepositoryBlobConnection",
    [GX_PAGE_INFO] = "PageInfo",    [GX_BLOB] = "RepositoryBlob",
};

static const struct gql_type t_string = {.name = "String"};
static const struct gql_type t_string_nn = {.name = "String", .non_null = true};
static const struct gql_type t_id_nn = {.name = "ID", .non_null = true};
static const struct gql_type t_paths = {.of = &t_string_nn, .non_null = true};

struct gx_arg_spec {
	const char *name;
	const struct gql_type *type;
};

enum gx_cost {
	COST_PLAIN,    /* base + children (a field without resolver) */
	COST_RESOLVER, /* children + 1 (a resolver field, BaseResolver.resolver_complexity) */
	COST_BLOBS,    /* (children + 1 + paths + 1 gitaly) * 2 (connection of 100) */
};

struct gx_field {
	enum gx_type owner;
	const char *name;
	enum gx_type type; /* GX_LEAF for scalars */
	const char *tname; /* the declared type, for messages */
	int base;          /* base complexity: 1, 2 with calls_gitaly */
	enum gx_cost cost;
	struct gx_arg_spec args[2];
};

static const struct gx_field gx_fields[] = {
    {GX_QUERY, "project", GX_PROJECT, "Project", 1, COST_RESOLVER, {{"fullPath", &t_id_nn}}},
    {GX_PROJECT, "id", GX_LEAF, "ID!", 1, COST_PLAIN, {{0}}},
    {GX_PROJECT, "fullPath", GX_LEAF, "ID!", 1, COST_PLAIN, {{0}}},
    {GX_PROJECT, "name", GX_LEAF, "String!", 1, COST_PLAIN, {{0}}},
    {GX_PROJECT, "repository", GX_REPOSITORY, "Repository", 1, COST_PLAIN, {{0}}},
    {GX_REPOSITORY, "rootRef", GX_LEAF, "String", 2, COST_PLAIN, {{0}}},
    {GX_REPOSITORY, "empty", GX_LEAF, "Boolean!", 2, COST_PLAIN, {{0}}},
    {GX_REPOSITORY, "exists", GX_LEAF, "Boolean!", 2, COST_PLAIN, {{0}}},
    {GX_REPOSITORY,
     "blobs",
     GX_BLOB_CONN,
     "RepositoryBlobConnection",
     2,
     COST_BLOBS,
     {{"paths", &t_paths}, {"ref", &t_string}}},
    {GX_BLOB_CONN, "nodes", GX_BLOB, "[RepositoryBlob]", 1, COST_PLAIN, {{0}}},
    {GX_BLOB_CONN, "pageInfo", GX_PAGE_INFO, "PageInfo!", 1, COST_PLAIN, {{0}}},
    {GX_PAGE_INFO, "hasNextPage", GX_LEAF, "Boolean!", 1, COST_PLAIN, {{0}}},
    {GX_PAGE_INFO, "hasPreviousPage", GX_LEAF, "Boolean!", 1, COST_PLAIN, {{0}}},
    {GX_PAGE_INFO, "startCursor", GX_LEAF, "String", 1, COST_PLAIN, {{0}}},
    {GX_PAGE_INFO, "endCursor", GX_LEAF, "String", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "id", GX_LEAF, "ID!", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "oid", GX_LEAF, "String!", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "path", GX_LEAF, "String!", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "name", GX_LEAF, "String", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "mode", GX_LEAF, "String", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "size", GX_LEAF, "BigInt", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "rawSize", GX_LEAF, "BigInt", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "lfsOid", GX_LEAF, "String", 2, COST_PLAIN, {{0}}},
    {GX_BLOB, "storedExternally", GX_LEAF, "Boolean", 1, COST_PLAIN, {{0}}},
    {GX_BLOB, "externalStorage", GX_LEAF, "String", 1, COST_PLAIN, {{0}}},
};

static const struct gx_field gx_typename = {GX_QUERY, "__typename", GX_LEAF, "String!",
                                            1,        COST_PLAIN,   {{0}}};

static const struct gx_field *gx_field_find(enum gx_type owner, const char *name)
{
	if (!strcmp(name, "__typename"))
		return &gx_typename;
	for (size_t i = 0; i < sizeof(gx_fields) / sizeof(gx_fields[0]); i++)
		if (gx_fields[i].owner == owner && !strcmp(gx_fields[i].name, name))
			return &gx_fields[i];
	return NULL;
}

/* --- request state --- */

struct gx {
	struct hub_req *req;
	struct gql_doc *doc;
	const struct hub_user *user;
	json_t *vars;   /* coerced variable values by name (absent: not provided) */
	json_t *errors; /* the response's errors array */
	char op[300];   /* "query" or "query Name": the head of validation error paths */
	bool stop;      /* validate_max_errors reached */
};

static void gx_error(struct gx *g, unsigned line, unsigned col, json_t *path, json_t *ext,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* One error entry as graphql-ruby writes it: message, locations, path, extensions. */
static void gx_error(struct gx *g, unsigned line, unsigned col, json_t *path, json_t *ext,
                     const char *fmt, ...)
{
	char msg[512];
	json_t *e;
	va_list ap;

	if (json_array_size(g->errors) >= GX_MAX_ERRORS) {
		g->stop = true;
		json_decref(path);
		json_decref(ext);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e = json_pack("{s:s}", "message", msg);
	if (line)
		json_object_set_new(
		    e, "locations",
		    json_pack("[{s:i,s:i}]", "line", (json_int_t)line, "column", (json_int_t)col));
	if (path)
		json_object_set_new(e, "path", path);
	if (ext)
		json_object_set_new(e, "extensions", ext);
	json_array_append_new(g->errors, e);
}

static void gx_resp_errors(struct hub_resp *resp, int status, const char *msg)
{
	hub_resp_json(resp, status, json_pack("{s:[{s:s}]}", "errors", "message", msg));
}

/* The path so far plus one key, as a new array. */
static json_t *path_plus(json_t *path, const char *key)
{
	json_t *p = json_copy(path);

	json_array_append_new(p, json_string(key));
	return p;
}

/* --- printing values and types (for messages) --- */

static void type_print(const struct gql_type *t, struct buf *b)
{
	if (t->name) {
		buf_append(b, t->name, strlen(t->name));
	} else {
		buf_append(b, "[", 1);
		type_print(t->of, b);
		buf_append(b, "]", 1);
	}
	if (t->non_null)
		buf_append(b, "!", 1);
}

static void value_print(const struct gql_value *v, struct buf *b)
{
	const struct gql_value *i;

	switch (v->kind) {
	case GQL_V_STRING: {
		json_t *s = json_stringn(v->s, v->len);
		char *d = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;

		if (d)
			buf_append(b, d, strlen(d));
		free(d);
		json_decref(s);
		break;
	}
	case GQL_V_VAR:
		buf_append(b, "$", 1);
		buf_append(b, v->s, v->len);
		break;
	case GQL_V_LIST:
	case GQL_V_OBJECT:
		buf_append(b, v->kind == GQL_V_LIST ? "[" : "{", 1);
		for (i = v->items; i; i = i->next) {
			if (i->name) {
				buf_append(b, i->name, strlen(i->name));
				buf_append(b, ": ", 2);
			}
			value_print(i, b);
			if (i->next)
				buf_append(b, ", ", 2);
		}
		buf_append(b, v->kind == GQL_V_LIST ? "]" : "}", 1);
		break;
	default:
		buf_append(b, v->s, v->len);
	}
}

/* A printed form in a fixed buffer (messages are capped anyway). */
static const char *vstr(const struct gql_value *v, char *out, size_t n)
{
	struct buf b = BUF_INIT(n - 1);

	value_print(v, &b);
	snprintf(out, n, "%.*s", (int)b.len, b.data ? b.data : "");
	buf_free(&b);
	return out;
}

static const char *tstr(const struct gql_type *t, char *out, size_t n)
{
	struct buf b = BUF_INIT(n - 1);

	type_print(t, &b);
	snprintf(out, n, "%.*s", (int)b.len, b.data ? b.data : "");
	buf_free(&b);
	return out;
}

/* --- input coercion --- */

static bool scalar_known(const char *name)
{
	return !strcmp(name, "String") || !strcmp(name, "ID") || !strcmp(name, "Int") ||
	       !strcmp(name, "Boolean") || !strcmp(name, "Float");
}

/* A request variable's JSON value to its declared type (GraphQL input coercion);
 * NULL with *why set when it does not fit. ptr is the JSON path of the problem. */
static json_t *var_coerce(const struct gql_type *t, json_t *v, json_t *ptr, char *why, size_t n)
{
	if (!v || json_is_null(v)) {
		if (t->non_null) {
			snprintf(why, n, "Expected value to not be null");
			return NULL;
		}
		return json_null();
	}
	if (!t->name) {
		json_t *out = json_array();
		size_t i;
		json_t *item;

		if (!json_is_array(v)) {
			json_t *one = var_coerce(t->of, v, ptr, why, n);

			if (!one) {
				json_decref(out);
				return NULL;
			}
			json_array_append_new(out, one);
			return out;
		}
		json_array_foreach(v, i, item)
		{
			json_t *c = var_coerce(t->of, item, ptr, why, n);

			if (!c) {
				json_array_insert_new(ptr, 0, json_integer((json_int_t)i));
				json_decref(out);
				return NULL;
			}
			json_array_append_new(out, c);
		}
		return out;
	}
	if (!strcmp(t->name, "String") && json_is_string(v))
		return json_incref(v);
	if (!strcmp(t->name, "ID") && json_is_string(v))
		return json_incref(v);
	if (!strcmp(t->name, "ID") && json_is_integer(v)) {
		char s[32];

		snprintf(s, sizeof(s), "%lld", (long long)json_integer_value(v));
		return json_string(s);
	}
	if (!strcmp(t->name, "Int") && json_is_integer(v) && json_integer_value(v) >= INT32_MIN &&
	    json_integer_value(v) <= INT32_MAX)
		return json_incref(v);
	if (!strcmp(t->name, "Boolean") && json_is_boolean(v))
		return json_incref(v);
	if (!strcmp(t->name, "Float") && json_is_number(v))
		return json_real(json_number_value(v));
	{
		char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

		snprintf(why, n, "Could not coerce value %.100s to %s", d ? d : "?", t->name);
		free(d);
	}
	return NULL;
}

/* A literal (or variable) in an argument position of type t: a new JSON value, NULL
 * when absent (an unprovided variable), or -EINVAL via *bad for a literal that does
 * not fit. Variables were coerced to their declared type already. */
static json_t *lit_coerce(struct gx *g, const struct gql_type *t, const struct gql_value *v,
                          bool *bad)
{
	if (v->kind == GQL_V_VAR) {
		json_t *x = json_object_get(g->vars, v->s);

		return x ? json_incref(x) : NULL;
	}
	if (v->kind == GQL_V_NULL) {
		if (t->non_null)
			*bad = true;
		return json_null();
	}
	if (!t->name) {
		json_t *out = json_array();

		if (v->kind != GQL_V_LIST) {
			json_t *one = lit_coerce(g, t->of, v, bad);

			json_array_append_new(out, one ? one : json_null());
			return out;
		}
		for (const struct gql_value *i = v->items; i; i = i->next) {
			json_t *c = lit_coerce(g, t->of, i, bad);

			if (!c && t->of->non_null)
				*bad = true; /* an unprovided variable inside a non-null list */
			json_array_append_new(out, c ? c : json_null());
		}
		return out;
	}
	if (v->kind == GQL_V_STRING && (!strcmp(t->name, "String") || !strcmp(t->name, "ID")))
		return json_stringn(v->s, v->len);
	if (v->kind == GQL_V_INT && !strcmp(t->name, "ID"))
		return json_stringn(v->s, v->len);
	*bad = true;
	return json_null();
}

/* --- validation --- */

static bool types_compatible(const struct gql_type *var, const struct gql_type *loc,
                             bool var_has_default)
{
	if (loc->non_null && !var->non_null && !var_has_default)
		return false;
	if (!loc->name != !var->name)
		return false;
	if (!loc->name) {
		struct gql_type vi = *var->of, li = *loc->of;

		return types_compatible(&vi, &li, false);
	}
	return !strcmp(loc->name, var->name);
}

static struct gql_vardef *vardef_find(struct gx *g, const char *name)
{
	for (struct gql_vardef *d = g->doc->vars; d; d = d->next)
		if (!strcmp(d->name, name))
			return d;
	return NULL;
}

/* Marks used variables (by index in the definition list) and checks each variable
 * against the type of the position it appears in. */
static void check_var_uses(struct gx *g, const struct gql_value *v, const struct gql_type *loc,
                           const char *arg, json_t *path, unsigned char *used)
{
	if (v->kind == GQL_V_LIST && loc && !loc->name) {
		for (const struct gql_value *i = v->items; i; i = i->next)
			check_var_uses(g, i, loc->of, arg, path, used);
		return;
	}
	if (v->kind == GQL_V_LIST || v->kind == GQL_V_OBJECT) {
		for (const struct gql_value *i = v->items; i; i = i->next)
			check_var_uses(g, i, NULL, arg, path, used);
		return;
	}
	if (v->kind != GQL_V_VAR)
		return;
	{
		struct gql_vardef *d = vardef_find(g, v->s);
		unsigned idx = 0;
		char a[128], b[128];

		if (!d) {
			gx_error(g, v->line, v->col, json_copy(path),
			         json_pack("{s:s,s:s}", "code", "variableNotDefined",
			                   "variableName", v->s),
			         "Variable $%s is used by %s but not declared", v->s,
			         g->doc->name ? g->doc->name : "anonymous query");
			return;
		}
		for (struct gql_vardef *x = g->doc->vars; x != d; x = x->next)
			idx++;
		if (idx < 256)
			used[idx] = 1;
		if (loc && !types_compatible(d->type, loc, d->def && d->def->kind != GQL_V_NULL)) {
			bool nullability = !loc->name == !d->type->name &&
			                   (!loc->name || !strcmp(loc->name, d->type->name));

			gx_error(g, v->line, v->col, json_copy(path),
			         json_pack("{s:s,s:s}", "code",
			                   nullability ? "variableMismatch" : "variableMismatch",
			                   "variableName", v->s),
			         "%s on variable $%s and argument %s (%s / %s)",
			         nullability ? "Nullability mismatch" : "Type mismatch", v->s, arg,
			         tstr(d->type, a, sizeof(a)), tstr(loc, b, sizeof(b)));
		}
	}
}

static void args_print(const struct gql_arg *a, struct buf *b)
{
	buf_append(b, "{", 1);
	for (; a; a = a->next) {
		buf_append(b, a->name, strlen(a->name));
		buf_append(b, ":", 1);
		value_print(a->value, b);
		if (a->next)
			buf_append(b, ",", 1);
	}
	buf_append(b, "}", 1);
}

/* Fields of one selection set with the same response key are one field (GraphQL's
 * field merging): the later one's selections join the first's, or, when the name or
 * the arguments differ, graphql-ruby's conflict error is reported. */
static void merge_fields(struct gx *g, struct gql_field **list, json_t *path)
{
	for (struct gql_field *f = *list; f && !g->stop; f = f->next) {
		struct gql_field **pp = &f->next;

		while (*pp && !g->stop) {
			struct gql_field *o = *pp;
			struct buf a = BUF_INIT(4096), b = BUF_INIT(4096);
			bool same;

			if (strcmp(gql_field_key(o), gql_field_key(f))) {
				pp = &o->next;
				continue;
			}
			args_print(f->args, &a);
			args_print(o->args, &b);
			same = a.len == b.len && (!a.len || !memcmp(a.data, b.data, a.len));
			if (strcmp(o->name, f->name)) {
				gx_error(g, o->line, o->col, path_plus(path, gql_field_key(f)),
				         json_pack("{s:s,s:s}", "code", "fieldConflict",
				                   "fieldName", gql_field_key(f)),
				         "Field '%s' has a field conflict: %s or %s?",
				         gql_field_key(f), f->name, o->name);
			} else if (!same) {
				gx_error(g, o->line, o->col, path_plus(path, gql_field_key(f)),
				         json_pack("{s:s,s:s}", "code", "fieldConflict",
				                   "fieldName", gql_field_key(f)),
				         "Field '%s' has an argument conflict: %.*s or %.*s?",
				         gql_field_key(f), (int)a.len, a.data ? a.data : "",
				         (int)b.len, b.data ? b.data : "");
			} else {
				struct gql_field **tail = &f->sel;

				while (*tail)
					tail = &(*tail)->next;
				*tail = o->sel;
				f->has_sel = f->has_sel || o->has_sel;
			}
			buf_free(&a);
			buf_free(&b);
			*pp = o->next; /* dropped either way: one error per key is enough */
		}
	}
}

/* Validates one selection set on a type; recursion is bounded by the parser's nesting
 * cap. */
static void validate_sel(struct gx *g, enum gx_type type, struct gql_field **list, json_t *path,
                         unsigned char *used)
{
	merge_fields(g, list, path);
	for (struct gql_field *f = *list; f && !g->stop; f = f->next) {
		const struct gx_field *spec = gx_field_find(type, f->name);
		json_t *fpath = path_plus(path, gql_field_key(f));
		char missing[128] = "";

		if (!spec) {
			gx_error(g, f->line, f->col, json_incref(fpath),
			         json_pack("{s:s,s:s,s:s}", "code", "undefinedField", "typeName",
			                   gx_type_names[type], "fieldName", f->name),
			         "Field '%s' doesn't exist on type '%s'", f->name,
			         gx_type_names[type]);
			json_decref(fpath);
			continue;
		}
		for (struct gql_arg *a = f->args; a && !g->stop; a = a->next) {
			const struct gx_arg_spec *as = NULL;

			for (size_t i = 0; i < 2 && spec->args[i].name; i++)
				if (!strcmp(spec->args[i].name, a->name))
					as = &spec->args[i];
			if (!as) {
				gx_error(g, a->line, a->col, json_incref(fpath),
				         json_pack("{s:s,s:s,s:s,s:s}", "code",
				                   "argumentNotAccepted", "name", f->name,
				                   "typeName", "Field", "argumentName", a->name),
				         "Field '%s' doesn't accept argument '%s'", f->name,
				         a->name);
				continue;
			}
			for (struct gql_arg *b = f->args; b != a; b = b->next)
				if (!strcmp(b->name, a->name))
					gx_error(g, a->line, a->col, json_incref(fpath),
					         json_pack("{s:s,s:s}", "code", "argumentNotUnique",
					                   "name", a->name),
					         "There can be only one argument named \"%s\"",
					         a->name);
			check_var_uses(g, a->value, as->type, a->name, fpath, used);
			{
				bool bad = false;
				json_t *v = lit_coerce(g, as->type, a->value, &bad);
				char vs[200], ts[64];

				json_decref(v);
				if (bad && a->value->kind != GQL_V_VAR)
					gx_error(g, a->line, a->col, json_incref(fpath),
					         json_pack("{s:s,s:s,s:s}", "code",
					                   "argumentLiteralsIncompatible",
					                   "typeName", "Field", "argumentName",
					                   a->name),
					         "Argument '%s' on Field '%s' has an invalid value "
					         "(%s). "
					         "Expected type '%s'.",
					         a->name, f->name, vstr(a->value, vs, sizeof(vs)),
					         tstr(as->type, ts, sizeof(ts)));
			}
		}
		for (size_t i = 0; i < 2 && spec->args[i].name; i++) {
			bool given = false;

			if (!spec->args[i].type->non_null)
				continue;
			for (struct gql_arg *a = f->args; a; a = a->next)
				given = given || !strcmp(a->name, spec->args[i].name);
			if (!given)
				snprintf(missing + strlen(missing),
				         sizeof(missing) - strlen(missing), "%s%s",
				         missing[0] ? ", " : "", spec->args[i].name);
		}
		if (missing[0])
			gx_error(g, f->line, f->col, json_incref(fpath),
			         json_pack("{s:s,s:s,s:s,s:s}", "code", "missingRequiredArguments",
			                   "className", "Field", "name", f->name, "arguments",
			                   missing),
			         "Field '%s' is missing required arguments: %s", f->name, missing);
		if (spec->type == GX_LEAF && f->has_sel) {
			struct buf names = BUF_INIT(200);

			for (struct gql_field *c = f->sel; c; c = c->next) {
				buf_append(&names, c->name, strlen(c->name));
				if (c->next)
					buf_append(&names, ", ", 2);
			}
			gx_error(
			    g, f->line, f->col, json_incref(fpath),
			    json_pack("{s:s,s:s}", "code", "selectionMismatch", "nodeName",
			              f->name),
			    "Selections can't be made on scalars (field '%s' returns %s but has "
			    "selections [%.*s])",
			    f->name, spec->tname, (int)names.len, names.data ? names.data : "");
			buf_free(&names);
		} else if (spec->type != GX_LEAF && !f->has_sel) {
			gx_error(g, f->line, f->col, json_incref(fpath),
			         json_pack("{s:s,s:s,s:s}", "code", "selectionMismatch", "nodeName",
			                   f->name, "typeName", spec->tname),
			         "Field must have selections (field '%s' returns %s but has no "
			         "selections. Did you mean '%s { ... }'?)",
			         f->name, spec->tname, f->name);
		} else if (spec->type != GX_LEAF) {
			validate_sel(g, spec->type, &f->sel, fpath, used);
		}
		json_decref(fpath);
	}
}

/* Coerces the request's variables to the operation's definitions. */
static void coerce_vars(struct gx *g, json_t *given)
{
	unsigned n = 0;

	for (struct gql_vardef *d = g->doc->vars; d && !g->stop; d = d->next, n++) {
		const struct gql_type *base = d->type;
		char why[256] = "", ts[64];
		json_t *v, *ptr = json_array();

		while (!base->name)
			base = base->of;
		for (struct gql_vardef *e = g->doc->vars; e != d; e = e->next)
			if (!strcmp(e->name, d->name))
				gx_error(g, d->line, d->col, NULL,
				         json_pack("{s:s,s:s}", "code", "variableNotUnique",
				                   "variableName", d->name),
				         "There can only be one variable named \"%s\"", d->name);
		if (!scalar_known(base->name)) {
			gx_error(g, d->line, d->col, json_pack("[s]", g->op),
			         json_pack("{s:s,s:s,s:s}", "code", "variableRequiresValidType",
			                   "typeName", base->name, "variableName", d->name),
			         "%s isn't a defined input type (on $%s)", base->name, d->name);
			json_decref(ptr);
			continue;
		}
		v = json_object_get(given, d->name);
		if (!v && d->def) {
			bool bad = false;
			json_t *c = lit_coerce(g, d->type, d->def, &bad);

			if (bad) {
				char vs[200];

				gx_error(g, d->line, d->col, json_pack("[s]", g->op),
				         json_pack("{s:s}", "code", "defaultValueInvalidType"),
				         "Default value for $%s doesn't match type %s (%s)",
				         d->name, tstr(d->type, ts, sizeof(ts)),
				         vstr(d->def, vs, sizeof(vs)));
				json_decref(c);
			} else if (c) {
				json_object_set_new(g->vars, d->name, c);
			}
			json_decref(ptr);
			continue;
		}
		if (!v && !d->type->non_null) {
			json_decref(ptr);
			continue;
		}
		v = var_coerce(d->type, v, ptr, why, sizeof(why));
		if (!v) {
			json_t *given_v = json_object_get(given, d->name);

			gx_error(g, d->line, d->col, NULL,
			         json_pack("{s:O?,s:[{s:O,s:s}]}", "value", given_v, "problems",
			                   "path", ptr, "explanation", why),
			         "Variable $%s of type %s was provided invalid value", d->name,
			         tstr(d->type, ts, sizeof(ts)));
		} else {
			json_object_set_new(g->vars, d->name, v);
		}
		json_decref(ptr);
	}
}

/* --- complexity (app/graphql/types/base_field.rb) --- */

static json_t *arg_value(struct gx *g, const struct gql_field *f, const char *name,
                         const struct gql_type *t)
{
	for (const struct gql_arg *a = f->args; a; a = a->next)
		if (!strcmp(a->name, name)) {
			bool bad = false;

			return lit_coerce(g, t, a->value, &bad);
		}
	return NULL;
}

static long complexity(struct gx *g, enum gx_type type, const struct gql_field *list,
                       unsigned depth, unsigned *max_depth)
{
	long sum = 0;

	if (depth > *max_depth)
		*max_depth = depth;
	for (const struct gql_field *f = list; f; f = f->next) {
		const struct gx_field *spec = gx_field_find(type, f->name);
		long child = 0, c;

		if (!spec)
			continue;
		if (spec->type != GX_LEAF)
			child = complexity(g, spec->type, f->sel, depth + 1, max_depth);
		switch (spec->cost) {
		case COST_RESOLVER:
			c = child + 1;
			break;
		case COST_BLOBS: {
			json_t *paths = arg_value(g, f, "paths", &t_paths);

			c = child + 1 + (long)json_array_size(paths) + 1;
			/* complexity += complexity * (100 page size * 0.01 multiplier) */
			c += c * GX_MAX_PAGE_SIZE / 100;
			json_decref(paths);
			break;
		}
		default:
			c = spec->base + child;
		}
		sum += c;
		if (sum > 1L << 40)
			return sum;
	}
	return sum;
}

/* --- execution --- */

struct gx_node {
	char *path;
	git_oid oid;
	uint32_t mode;
	uint64_t size;
	bool lfs;
	char lfs_oid[65];
	uint64_t lfs_size;
};

struct gx_conn {
	struct gx_node nodes[GX_MAX_PAGE_SIZE];
	size_t n;
	bool has_next;
};

struct gx_repo {
	const struct hub_project *p;
	git_repository *repo;
	int slot;
	int err; /* opening failed */
};

static void conn_clear(struct gx_conn *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->nodes[i].path);
	c->n = 0;
}

/* Blob#lfs_pointer? (lib/gitlab/git/blob.rb): a blob of 120..200 bytes, text, starting
 * with the spec's version URL, with an "sha256:<64 hex>" and a "size <digits>". This is
 * GitLab's rule, laxer than the LFS protocol's strict pointer parser (lfs.c) and blind
 * to the legacy hawser URL, so it is written out here rather than shared. */
static bool lfs_pointer(const char *d, size_t len, char oid[65], uint64_t *size)
{
	static const char ver[] = "version https://git-lfs.github.com/spec";
	const char *p;
	bool have_oid = false;

	if (len < GX_LFS_MIN || len > GX_LFS_MAX || memchr(d, '\0', len) ||
	    memcmp(d, ver, sizeof(ver) - 1))
		return false;
	for (p = d; p + 7 + 64 <= d + len && !have_oid; p++) {
		size_t i;

		if (memcmp(p, "sha256:", 7))
			continue;
		for (i = 0; i < 64; i++)
			if (!((p[7 + i] >= '0' && p[7 + i] <= '9') ||
			      (p[7 + i] >= 'a' && p[7 + i] <= 'f')))
				break;
		if (i == 64) {
			memcpy(oid, p + 7, 64);
			oid[64] = '\0';
			have_oid = true;
		}
	}
	if (!have_oid)
		return false;
	for (p = d; p + 6 <= d + len; p++) {
		uint64_t v = 0;
		const char *q = p + 5;

		if (memcmp(p, "size ", 5) || q >= d + len || *q < '0' || *q > '9')
			continue;
		for (; q < d + len && *q >= '0' && *q <= '9'; q++) {
			if (v > (UINT64_MAX - 9) / 10)
				return false;
			v = v * 10 + (uint64_t)(*q - '0');
		}
		*size = v;
		return true;
	}
	return false;
}

/* Gitlab::GitRefValidator.validate(ref, skip_head_ref_check: true) */
static bool ref_valid(const char *ref)
{
	char full[HUB_MAX_PATH + 16];
	int ok = 0;

	if (!*ref || !strncmp(ref, "refs/heads/", 11) || !strncmp(ref, "refs/tags/", 10) ||
	    ref[0] == '-' || strlen(ref) > HUB_MAX_PATH)
		return false;
	snprintf(full, sizeof(full), "refs/heads/%s", ref);
	return git_reference_name_is_valid(&ok, full) == 0 && ok;
}

/* What one blobs request keeps between its paths. reefd asks ~100 paths of a few
 * directories in depth-first order, so the tree of the last directory looked up serves
 * most siblings without a walk from the root; the object database is taken once. */
struct gx_walk {
	git_repository *repo;
	const git_tree *root;
	git_odb *odb;
	char *dir;      /* the last directory looked up, or NULL */
	git_tree *tree; /* its tree; NULL when dir is missing or not a tree */
};

static void walk_done(struct gx_walk *w)
{
	git_tree_free(w->tree);
	free(w->dir);
	git_odb_free(w->odb);
	w->tree = NULL;
	w->dir = NULL;
	w->odb = NULL;
}

/* The entry of a safe path (no empty, "." or ".." segment), with the answers of
 * git_tree_entry_bypath (repo_path_entry): its directory part must lead through trees
 * only, else the path is missing; a failed read is -EIO. 1 found, 0 missing. */
static int walk_entry(struct gx_walk *w, const char *path, git_oid *oid, uint32_t *mode)
{
	const char *slash = strrchr(path, '/');
	const git_tree *t = w->root;
	const git_tree_entry *e;

	if (slash) {
		size_t dlen = (size_t)(slash - path);

		if (!w->dir || strlen(w->dir) != dlen || memcmp(w->dir, path, dlen)) {
			char *dir = strndup(path, dlen);
			git_tree_entry *de = NULL;
			int r;

			if (!dir)
				return -ENOMEM;
			git_tree_free(w->tree);
			free(w->dir);
			w->tree = NULL;
			w->dir = dir;
			r = git_tree_entry_bypath(&de, w->root, dir);
			if (r == GIT_ENOTFOUND)
				return 0;
			if (r < 0)
				return -EIO;
			/* bypath's own test for walking on: a subtree, not a submodule */
			if (git_tree_entry_filemode(de) == GIT_FILEMODE_TREE &&
			    git_tree_lookup(&w->tree, w->repo, git_tree_entry_id(de)) < 0) {
				git_tree_entry_free(de);
				free(w->dir);
				w->dir = NULL; /* not cached: the next path tries again */
				return -EIO;
			}
			git_tree_entry_free(de);
		}
		if (!w->tree)
			return 0;
		t = w->tree;
		path = slash + 1;
	}
	e = git_tree_entry_byname(t, path);
	if (!e)
		return 0;
	git_oid_cpy(oid, git_tree_entry_id(e));
	*mode = git_tree_entry_filemode_raw(e);
	return 1;
}

/* Gitaly's GetBlobs for one path: trailing slashes dropped; a missing path (or one no
 * tree can hold) gives nothing; a tree or a submodule gives its entry. */
static int blob_lookup(struct gx_walk *w, const char *in, struct gx_node *n)
{
	size_t len = strlen(in);
	git_object_t type;
	size_t size = 0;
	char *path;
	int r = 0;

	memset(n, 0, sizeof(*n));
	while (len > 1 && in[len - 1] == '/')
		len--;
	if (len == 0 || len > HUB_MAX_PATH)
		return 0;
	path = strndup(in, len);
	if (!path)
		return -ENOMEM;
	if (!path_is_safe(path, HUB_MAX_PATH) ||
	    (r = walk_entry(w, path, &n->oid, &n->mode)) <= 0 || git_oid_is_zero(&n->oid)) {
		free(path);
		/* as before, a failed read of a tree finds nothing; only memory is an error */
		return r == -ENOMEM ? r : 0;
	}
	n->path = path;
	if (n->mode == GIT_FILEMODE_COMMIT)
		return 1; /* a submodule: size 0, as Gitaly sends none */
	/* the header gives the size; only a blob of a pointer's size is read */
	if (git_odb_read_header(&size, &type, w->odb, &n->oid) < 0)
		return -EIO;
	n->size = size;
	if (type == GIT_OBJECT_BLOB && size >= GX_LFS_MIN && size <= GX_LFS_MAX) {
		git_blob *b = NULL;

		if (git_blob_lookup(&b, w->repo, &n->oid) < 0)
			return -EIO;
		n->lfs = lfs_pointer(git_blob_rawcontent(b), (size_t)git_blob_rawsize(b),
		                     n->lfs_oid, &n->lfs_size);
		git_blob_free(b);
	}
	return 1;
}

/* BlobsResolver#resolve: the ref (default branch when null), then each path. */
static int blobs_resolve(struct gx *g, struct gx_repo *gr, json_t *paths, json_t *ref,
                         struct gx_conn *conn, bool *ref_bad)
{
	struct gx_walk w = {.repo = gr->repo};
	git_commit *cm = NULL;
	git_tree *tree = NULL;
	char *def = NULL;
	const char *name;
	size_t i;
	json_t *pv;
	int r = 0;

	/* return [] if repository.empty? (no branch, as empty_repo on REST) */
	if ((r = repo_default_branch(gr->repo, &def)) < 0 || !def)
		return r < 0 ? r : 0;
	name = def;
	if (ref && !json_is_null(ref)) {
		name = json_string_value(ref);
	}
	if (!ref_valid(name)) {
		*ref_bad = true;
		goto out;
	}
	r = repo_resolve_commit(gr->repo, name, &cm);
	if (r == -ENOENT) {
		r = 0; /* an unknown revision finds no blob */
		goto out;
	}
	if (r < 0 || git_commit_tree(&tree, cm) < 0 || git_repository_odb(&w.odb, gr->repo) < 0) {
		r = r < 0 ? r : -EIO;
		goto out;
	}
	w.root = tree;
	json_array_foreach(paths, i, pv)
	{
		struct gx_node n;

		if (!json_is_string(pv))
			continue;
		r = blob_lookup(&w, json_string_value(pv), &n);
		if (r < 0)
			goto out;
		if (r == 0)
			continue;
		if (conn->n == GX_MAX_PAGE_SIZE) {
			/* a connection page holds 100 nodes; the rest is the next page */
			free(n.path);
			conn->has_next = true;
			break;
		}
		conn->nodes[conn->n++] = n;
	}
	r = 0;
out:
	(void)g;
	walk_done(&w);
	git_tree_free(tree);
	git_commit_free(cm);
	free(def);
	return r;
}

static json_t *bigint(uint64_t v)
{
	char s[24];

	/* GraphQL::Types::BigInt serializes as a string */
	return json_stringn_nocheck(s,
	                            (size_t)snprintf(s, sizeof(s), "%llu", (unsigned long long)v));
}

/* graphql-ruby's cursors: Base64 (URL-safe, unpadded) of the 1-based index */
static json_t *cursor(size_t idx)
{
	static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	char num[24], out[40];
	size_t n = (size_t)snprintf(num, sizeof(num), "%zu", idx), o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)num[i] << 16;

		v |= i + 1 < n ? (unsigned char)num[i + 1] << 8 : 0;
		v |= i + 2 < n ? (unsigned char)num[i + 2] : 0;
		out[o++] = al[v >> 18 & 63];
		out[o++] = al[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = al[v >> 6 & 63];
		if (i + 2 < n)
			out[o++] = al[v & 63];
	}
	return json_stringn(out, o);
}

static json_t *exec_blob(const struct gql_field *list, const struct gx_node *n)
{
	json_t *o = json_object();
	char hex[GIT_OID_HEXSZ + 1], mode[16];

	/* hex digits and decimal numbers are ASCII: no UTF-8 check for them */
	git_oid_tostr(hex, sizeof(hex), &n->oid);
	for (const struct gql_field *f = list; f; f = f->next) {
		const char *k = gql_field_key(f), *nm = f->name;
		json_t *v;

		if (!strcmp(nm, "__typename"))
			v = json_string("RepositoryBlob");
		else if (!strcmp(nm, "id") || !strcmp(nm, "oid"))
			v = json_stringn_nocheck(hex, GIT_OID_HEXSZ);
		else if (!strcmp(nm, "path"))
			v = repo_jstr(n->path);
		else if (!strcmp(nm, "name"))
			v = repo_jstr(strrchr(n->path, '/') ? strrchr(n->path, '/') + 1 : n->path);
		else if (!strcmp(nm, "mode"))
			v = json_stringn_nocheck(
			    mode, (size_t)snprintf(mode, sizeof(mode), "%o", (unsigned)n->mode));
		else if (!strcmp(nm, "size"))
			v = bigint(n->size);
		else if (!strcmp(nm, "rawSize"))
			v = bigint(n->lfs ? n->lfs_size : n->size);
		else if (!strcmp(nm, "lfsOid"))
			v = n->lfs ? json_stringn_nocheck(n->lfs_oid, 64) : json_null();
		else if (!strcmp(nm, "storedExternally"))
			v = n->lfs ? json_true() : json_null(); /* external_storage && … : nil */
		else if (!strcmp(nm, "externalStorage"))
			v = n->lfs ? json_string("lfs") : json_null();
		else
			v = json_null();
		json_object_set_new(o, k, v);
	}
	return o;
}

static json_t *exec_conn(const struct gql_field *list, const struct gx_conn *c)
{
	json_t *o = json_object();

	for (const struct gql_field *f = list; f; f = f->next) {
		json_t *v;

		if (!strcmp(f->name, "__typename")) {
			v = json_string("RepositoryBlobConnection");
		} else if (!strcmp(f->name, "nodes")) {
			v = json_array();
			for (size_t i = 0; i < c->n; i++)
				json_array_append_new(v, exec_blob(f->sel, &c->nodes[i]));
		} else if (!strcmp(f->name, "pageInfo")) {
			v = json_object();
			for (const struct gql_field *p = f->sel; p; p = p->next) {
				json_t *x;

				if (!strcmp(p->name, "hasNextPage"))
					x = json_boolean(c->has_next);
				else if (!strcmp(p->name, "hasPreviousPage"))
					x = json_false();
				else if (!strcmp(p->name, "startCursor"))
					x = c->n ? cursor(1) : json_null();
				else if (!strcmp(p->name, "endCursor"))
					x = c->n ? cursor(c->n) : json_null();
				else
					x = json_string("PageInfo");
				json_object_set_new(v, gql_field_key(p), x);
			}
		} else {
			v = json_null();
		}
		json_object_set_new(o, gql_field_key(f), v);
	}
	return o;
}

static json_t *exec_repository(struct gx *g, const struct gql_field *list, struct gx_repo *gr,
                               json_t *path)
{
	json_t *o = json_object();

	for (const struct gql_field *f = list; f; f = f->next) {
		const char *k = gql_field_key(f);
		json_t *v = NULL;

		if (!strcmp(f->name, "__typename")) {
			v = json_string("Repository");
		} else if (!strcmp(f->name, "exists")) {
			v = json_boolean(gr->repo != NULL);
		} else if (!gr->repo) {
			v = !strcmp(f->name, "empty") ? json_true() : json_null();
		} else if (!strcmp(f->name, "empty") || !strcmp(f->name, "rootRef")) {
			char *def = NULL;
			bool got = repo_default_branch(gr->repo, &def) == 0 && def;

			if (!strcmp(f->name, "empty"))
				v = json_boolean(!got);
			else
				v = got ? json_string(def) : json_null();
			free(def);
		} else if (!strcmp(f->name, "blobs")) {
			json_t *paths = arg_value(g, f, "paths", &t_paths);
			json_t *ref = arg_value(g, f, "ref", &t_string);
			struct gx_conn *conn = calloc(1, sizeof(*conn));
			bool bad = false;
			int r = conn ? blobs_resolve(g, gr, paths, ref, conn, &bad) : -ENOMEM;

			if (bad) {
				gx_error(g, f->line, f->col, path_plus(path, k), NULL,
				         "Ref is not valid");
				v = json_null();
			} else if (r < 0) {
				log_warn("graphql: blobs of %s: %s", gr->p->path_with_namespace,
				         strerror(-r));
				gx_error(g, f->line, f->col, path_plus(path, k), NULL,
				         "Internal server error");
				v = json_null();
			} else {
				v = exec_conn(f->sel, conn);
			}
			if (conn)
				conn_clear(conn);
			free(conn);
			json_decref(paths);
			json_decref(ref);
		}
		json_object_set_new(o, k, v ? v : json_null());
	}
	return o;
}

static json_t *exec_project(struct gx *g, const struct gql_field *f, json_t *path)
{
	json_t *full = arg_value(g, f, "fullPath", &t_id_nn), *o, *fpath;
	const char *fp = json_string_value(full);
	struct hub_project p;
	struct gx_repo gr = {.p = &p, .slot = -1};

	/* fullPath names a path: "42" is not project 42; a project always has a
	 * namespace, so a path without '/' finds nothing. Invisible is null, no error. */
	if (!fp || !strchr(fp, '/') || !path_is_safe(fp, HUB_MAX_PATH) ||
	    hub_project_load(g->req->hub, fp, &p) < 0) {
		json_decref(full);
		return json_null();
	}
	json_decref(full);
	/* hub_project_visible's rule on the level hub_project_access found: one membership
	 * query per request rather than two (each costs more than a blob's lookup) */
	p.access = hub_project_access(g->req->hub, &p, g->user);
	if (strcmp(p.visibility, "public") &&
	    !(g->user && (g->user->is_admin || !strcmp(p.visibility, "internal") ||
	                  (int)p.access >= HUB_ACCESS_GUEST)))
		return json_null();
	o = json_object();
	fpath = path_plus(path, gql_field_key(f));
	for (const struct gql_field *c = f->sel; c; c = c->next) {
		json_t *v;

		if (!strcmp(c->name, "__typename")) {
			v = json_string("Project");
		} else if (!strcmp(c->name, "id")) {
			char gid[64];

			snprintf(gid, sizeof(gid), "gid://gitlab/Project/%lld", (long long)p.id);
			v = json_string(gid);
		} else if (!strcmp(c->name, "fullPath")) {
			v = json_string(p.path_with_namespace);
		} else if (!strcmp(c->name, "name")) {
			v = json_string(p.name);
		} else if (!strcmp(c->name, "repository")) {
			/* RepositoryType authorizes :download_code; as the REST routes, guests
			 * of a private project see it but not its code: null, no error. */
			if (!strcmp(p.visibility, "private") &&
			    (int)p.access < HUB_ACCESS_REPORTER) {
				v = json_null();
			} else {
				json_t *rpath = path_plus(fpath, gql_field_key(c));

				if (!gr.repo && !gr.err && repo_open(&p, &gr.repo, &gr.slot) < 0)
					gr.err = 1;
				v = exec_repository(g, c->sel, &gr, rpath);
				json_decref(rpath);
			}
		} else {
			v = json_null();
		}
		json_object_set_new(o, gql_field_key(c), v);
	}
	if (gr.repo)
		repo_release(gr.repo, gr.slot);
	json_decref(fpath);
	return o;
}

/* --- the controller --- */

/* GraphqlController: authenticate_sessionless_user!(:graphql_api), which takes personal
 * or OAuth tokens with the api or read_api scope (Gitlab::Auth::RequestAuthenticator
 * #find_user_for_graphql_api_request), and authorize_access_api!, which answers 401
 * "Invalid token" when a token was given but found no user: a job token, a deploy
 * token or a token of another scope included. 0 anonymous, 1 user, -EACCES. */
static int gx_auth(struct hub_req *req, struct hub_user *u)
{
	const char *tok = hub_req_query(req, "private_token");
	const char *authz = hub_req_header(req, "Authorization");
	unsigned scopes = 0;

	if (!tok)
		tok = hub_req_header(req, "PRIVATE-TOKEN");
	if (!tok && authz && strncasecmp(authz, "Bearer ", 7) == 0)
		tok = authz + 7;
	if (!tok)
		tok = hub_req_query(req, "access_token");
	if (!tok) {
		if (hub_req_header(req, "JOB-TOKEN") || hub_req_header(req, "DEPLOY-TOKEN") ||
		    hub_req_query(req, "job_token") || hub_req_query(req, "token"))
			return -EACCES;
		return 0;
	}
	while (*tok == ' ')
		tok++;
	if (hub_user_by_token(req->hub, tok, u, &scopes) < 0 ||
	    !(scopes & (HUB_SCOPE_API | HUB_SCOPE_READ_API)))
		return -EACCES;
	return 1;
}

static size_t utf8_chars(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xc0) != 0x80;
	return n;
}

/* Gitlab::Graphql::Variables#to_h: an object, a JSON string of one, or nothing. */
static json_t *vars_param(json_t *v, struct hub_resp *resp)
{
	char msg[300];

	if (!v || json_is_null(v))
		return json_object();
	if (json_is_object(v))
		return json_incref(v);
	if (json_is_string(v)) {
		json_t *parsed = NULL;
		const char *s = json_string_value(v);

		if (!*s)
			return json_object();
		if (jsonx_parse(&parsed, s, strlen(s), 0, HUB_MAX_BODY) == 0 &&
		    json_is_object(parsed))
			return parsed;
		if (parsed && json_is_null(parsed)) {
			json_decref(parsed);
			return json_object();
		}
		json_decref(parsed);
		snprintf(msg, sizeof(msg), "unexpected token in variables: %.100s", s);
		gx_resp_errors(resp, 422, msg);
		return NULL;
	}
	{
		char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

		snprintf(msg, sizeof(msg), "Unexpected parameter: %.200s", d ? d : "");
		free(d);
	}
	gx_resp_errors(resp, 422, msg);
	return NULL;
}

void hub_graphql_route(struct hub_req *req, struct hub_resp *resp)
{
	struct hub_user user;
	struct gx g = {.req = req};
	struct gql_error perr;
	json_t *params = NULL, *given = NULL, *data = NULL, *out;
	const char *query = "", *opname = NULL;
	unsigned char used[256] = {0};
	unsigned depth = 0, n;
	long cx, max_cx;
	int r;

	if (strcmp(req->method, "POST") && strcmp(req->method, "GET")) {
		hub_resp_not_found(resp);
		return;
	}
	r = gx_auth(req, &user);
	if (r < 0) {
		gx_resp_errors(resp, 401, "Invalid token");
		return;
	}
	g.user = r > 0 ? &user : NULL;
	if (req->body.len > GX_MAX_BODY) {
		gx_resp_errors(resp, 413, "Request Entity Too Large");
		return;
	}
	if (hub_req_params(req, &params) < 0) {
		gx_resp_errors(resp, 400, "Request body is not a JSON object or form");
		return;
	}
	if (json_is_string(json_object_get(params, "query")))
		query = json_string_value(json_object_get(params, "query"));
	if (json_is_string(json_object_get(params, "operationName")))
		opname = json_string_value(json_object_get(params, "operationName"));
	if (utf8_chars(query, strlen(query)) > GX_MAX_QUERY_CHARS) {
		gx_resp_errors(resp, 422, "Query too large");
		goto out;
	}
	given = vars_param(json_object_get(params, "variables"), resp);
	if (!given)
		goto out;
	r = gql_parse(query, strlen(query), &g.doc, &perr);
	if (r == -ENOMEM) {
		gx_resp_errors(resp, 500, "Internal server error");
		goto out;
	}
	if (r < 0) {
		json_t *e = json_pack("{s:s}", "message", perr.message);

		if (perr.line)
			json_object_set_new(e, "locations",
			                    json_pack("[{s:i,s:i}]", "line", (json_int_t)perr.line,
			                              "column", (json_int_t)perr.col));
		hub_resp_json(resp, 200, json_pack("{s:[o]}", "errors", e));
		goto out;
	}
	g.errors = json_array();
	g.vars = json_object();
	if (opname && *opname && (!g.doc->name || strcmp(opname, g.doc->name))) {
		gx_error(&g, 0, 0, NULL, NULL, "No operation named \"%s\"", opname);
		goto answer_errors;
	}
	snprintf(g.op, sizeof(g.op), "query%s%.256s", g.doc->name ? " " : "",
	         g.doc->name ? g.doc->name : "");
	coerce_vars(&g, given);
	{
		json_t *root = json_pack("[s]", g.op);

		validate_sel(&g, GX_QUERY, &g.doc->sel, root, used);
		json_decref(root);
	}
	n = 0;
	for (struct gql_vardef *d = g.doc->vars; d && !g.stop; d = d->next, n++)
		if (n < 256 && !used[n])
			gx_error(&g, d->line, d->col, json_pack("[s]", g.op),
			         json_pack("{s:s,s:s}", "code", "variableNotUsed", "variableName",
			                   d->name),
			         "Variable $%s is declared by %s but not used", d->name,
			         g.doc->name ? g.doc->name : "anonymous query");
	if (json_array_size(g.errors))
		goto answer_errors;

	/* Analysis: GitlabSchema's max_complexity and max_depth for this caller. */
	cx = complexity(&g, GX_QUERY, g.doc->sel, 1, &depth);
	max_cx = !g.user            ? GX_MAX_COMPLEXITY_ANON
	         : g.user->is_admin ? GX_MAX_COMPLEXITY_ADMIN
	                            : GX_MAX_COMPLEXITY_USER;
	if (depth > (g.user ? GX_MAX_DEPTH_USER : GX_MAX_DEPTH_ANON))
		gx_error(&g, 0, 0, NULL, NULL,
		         "Query has depth of %u, which exceeds max depth of %d", depth,
		         g.user ? GX_MAX_DEPTH_USER : GX_MAX_DEPTH_ANON);
	if (cx > max_cx)
		gx_error(&g, 0, 0, NULL, NULL,
		         "Query has complexity of %ld, which exceeds max complexity of %ld", cx,
		         max_cx);
	if (json_array_size(g.errors))
		goto answer_errors;

	data = json_object();
	{
		json_t *root = json_array();

		for (const struct gql_field *f = g.doc->sel; f; f = f->next) {
			json_t *v = !strcmp(f->name, "__typename") ? json_string("Query")
			                                           : exec_project(&g, f, root);

			json_object_set_new(data, gql_field_key(f), v);
		}
		json_decref(root);
	}
	out = json_pack("{s:o}", "data", data);
	if (json_array_size(g.errors))
		json_object_set(out, "errors", g.errors);
	hub_resp_json(resp, 200, out);
	goto out;
answer_errors:
	hub_resp_json(resp, 200, json_pack("{s:O}", "errors", g.errors));
out:
	gql_doc_free(g.doc);
	json_decref(g.errors);
	json_decref(g.vars);
	json_decref(given);
	json_decref(params);
}
