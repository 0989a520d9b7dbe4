/* libFuzzer target for reef-hub's GraphQL parser (tools/hub/gql_parse.c): any bytes are
 * parsed; a document that parses is walked whole (every pointer must be sound) and
 * freed. Built by tests/fuzz/meson.build with -Dfuzz=true under clang. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk_value(const struct gql_value *v)
{
	size_t n = 0;

	for (; v; v = v->next) {
		n += v->len + (v->s ? strlen(v->s) > v->len : 0) + (v->name ? strlen(v->name) : 0);
		n += walk_value(v->items);
	}
	return n;
}

static size_t walk_type(const struct gql_type *t)
{
	return t ? (t->name ? strlen(t->name) : 0) + walk_type(t->of) : 0;
}

static size_t walk_sel(const struct gql_field *f)
{
	size_t n = 0;

	for (; f; f = f->next) {
		n += strlen(gql_field_key(f)) + strlen(f->name);
		for (const struct gql_arg *a = f->args; a; a = a->next)
			n += strlen(a->name) + walk_value(a->value);
		n += walk_sel(f->sel);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gql_doc *doc = NULL;
	struct gql_error err;
	volatile size_t sink = 0;

	if (gql_parse((const char *)data, size, &doc, &err) == 0) {
		sink += doc->name ? strlen(doc->name) : 0;
		for (const struct gql_vardef *d = doc->vars; d; d = d->next)
			sink += strlen(d->name) + walk_type(d->type) + walk_value(d->def);
		sink += walk_sel(doc->sel);
		gql_doc_free(doc);
	} else {
		sink += strlen(err.message);
	}
	(void)sink;
	return 0;
}
