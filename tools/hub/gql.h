/* A small, strict GraphQL parser for the subset reef-hub serves at /api/graphql
 * (graphql.c): one query operation, optionally named, with variable definitions, nested
 * selection sets of fields with aliases and arguments, and values (strings, lists,
 * variables and the other literal kinds, kept so that a wrong literal gets a type error
 * rather than a syntax error). Fragments, directives, mutations, subscriptions, block
 * strings and several operations in one document are refused with a parse error.
 *
 * The parser knows nothing of the schema or the hub: it is linked by the libFuzzer
 * target (tests/fuzz/fuzz_graphql.c) and the unit test (tests/unit/hub/test_gql.c).
 * Everything it allocates lives in one arena owned by the document. Inputs are capped:
 * GQL_MAX_SOURCE bytes, GQL_MAX_NESTING levels of selection sets and list/object
 * values, GQL_MAX_NODES AST nodes. */
#ifndef REEF_HUB_GQL_H
#define REEF_HUB_GQL_H

#include <stdbool.h>
#include <stddef.h>

#define GQL_MAX_SOURCE  ((size_t)64 << 10) /* the controller caps queries at 10,000 chars */
#define GQL_MAX_NESTING 64
#define GQL_MAX_NODES   20000

enum gql_vkind {
	GQL_V_NULL,
	GQL_V_BOOL,
	GQL_V_INT,
	GQL_V_FLOAT,
	GQL_V_STRING,
	GQL_V_ENUM,
	GQL_V_LIST,
	GQL_V_OBJECT,
	GQL_V_VAR,
};

struct gql_value {
	enum gql_vkind kind;
	const char *s;           /* decoded string, the literal's text, enum or variable name */
	size_t len;              /* of s (strings may hold U+0000 escapes) */
	const char *name;        /* the key, for an object field */
	struct gql_value *items; /* list items or object fields */
	struct gql_value *next;  /* next sibling in a list or object */
	unsigned line, col;
};

struct gql_arg {
	const char *name;
	struct gql_value *value;
	struct gql_arg *next;
	unsigned line, col;
};

struct gql_field {
	const char *alias; /* NULL when none */
	const char *name;
	struct gql_arg *args;
	struct gql_field *sel; /* first child of the selection set */
	bool has_sel;          /* a selection set was written (possibly merged away) */
	struct gql_field *next;
	unsigned line, col;
};

struct gql_type {
	const char *name; /* NULL for a list */
	const struct gql_type *of;
	bool non_null;
};

struct gql_vardef {
	const char *name;
	struct gql_type *type;
	struct gql_value *def; /* default value or NULL */
	struct gql_vardef *next;
	unsigned line, col;
};

struct gql_doc {
	const char *name; /* operation name or NULL */
	struct gql_vardef *vars;
	struct gql_field *sel;
	unsigned line, col;
	struct gql_arena *arena;
};

struct gql_error {
	char message[256];
	unsigned line, col; /* 0 when the error has no location */
};

/* Parses len bytes of src. 0 with *out set (free with gql_doc_free), or -EINVAL with
 * err filled in the shape graphql-ruby's parser gives ("Expected X, actual: Y (\"v\")
 * at [line, col]"), or -ENOMEM. An empty document is -EINVAL too. */
int gql_parse(const char *src, size_t len, struct gql_doc **out, struct gql_error *err);
void gql_doc_free(struct gql_doc *doc);

/* The response key of a field: its alias, or its name. */
static inline const char *gql_field_key(const struct gql_field *f)
{
	return f->alias ? f->alias : f->name;
}

#endif
