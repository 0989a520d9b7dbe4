/* Unit tests of reef-hub's GraphQL parser (tools/hub/gql_parse.c): the AST of the query
 * reefd sends, values and escapes, and the errors and caps of the strict subset. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "gql.h"

static struct gql_doc *parse_ok(const char *q)
{
	struct gql_doc *doc = NULL;
	struct gql_error err;
	int r = gql_parse(q, strlen(q), &doc, &err);

	if (r != 0)
		fprintf(stderr, "parse failed: %s\n", err.message);
	CHECK_EQ_INT(r, 0);
	return doc;
}

static void parse_bad(const char *q, const char *msg, unsigned line, unsigned col)
{
	struct gql_doc *doc = NULL;
	struct gql_error err;

	CHECK_EQ_INT(gql_parse(q, strlen(q), &doc, &err), -EINVAL);
	CHECK(doc == NULL);
	if (strncmp(err.message, msg, strlen(msg)) != 0)
		fprintf(stderr, "got \"%s\"\n", err.message);
	CHECK(strncmp(err.message, msg, strlen(msg)) == 0);
	CHECK_EQ_INT(err.line, line);
	CHECK_EQ_INT(err.col, col);
}

static void test_reefd_query(void)
{
	struct gql_doc *doc = parse_ok(
	    "query($fullPath: ID!, $ref: String!, $paths: [String!]!) {\n"
	    "  project(fullPath: $fullPath) { repository { blobs(ref: $ref, paths: $paths) {\n"
	    "    nodes { path size rawSize lfsOid storedExternally oid } } } } }");
	const struct gql_vardef *v = doc->vars;
	const struct gql_field *f;
	const char *want[] = {"path", "size", "rawSize", "lfsOid", "storedExternally", "oid"};
	size_t i = 0;

	CHECK(doc->name == NULL);
	CHECK_EQ_STR(v->name, "fullPath");
	CHECK_EQ_STR(v->type->name, "ID");
	CHECK(v->type->non_null);
	v = v->next->next;
	CHECK_EQ_STR(v->name, "paths");
	CHECK(v->type->name == NULL && v->type->non_null);
	CHECK_EQ_STR(v->type->of->name, "String");
	CHECK(v->type->of->non_null);
	CHECK(v->next == NULL);
	f = doc->sel;
	CHECK_EQ_STR(f->name, "project");
	CHECK_EQ_INT(f->line, 2);
	CHECK_EQ_INT(f->col, 3);
	CHECK_EQ_STR(f->args->name, "fullPath");
	CHECK_EQ_INT(f->args->value->kind, GQL_V_VAR);
	CHECK_EQ_STR(f->args->value->s, "fullPath");
	f = f->sel->sel; /* blobs */
	CHECK_EQ_STR(f->name, "blobs");
	CHECK_EQ_STR(f->args->next->name, "paths");
	for (f = f->sel->sel; f; f = f->next)
		CHECK_EQ_STR(f->name, want[i++]);
	CHECK_EQ_INT(i, 6);
	gql_doc_free(doc);
}

static void test_values_and_aliases(void)
{
	struct gql_doc *doc =
	    parse_ok("\xef\xbb\xbfquery Q { a: f(s: \"x\\\"\\u00e9\\ud83d\\ude00\\n\", "
	             "l: [\"p\", $v, 1, -2.5e3, true, null, E], o: {k: \"v\"}),, # c\n b }");
	const struct gql_field *f = doc->sel;
	const struct gql_value *v = f->args->value, *i;

	CHECK_EQ_STR(doc->name, "Q");
	CHECK_EQ_STR(f->alias, "a");
	CHECK_EQ_STR(gql_field_key(f), "a");
	CHECK_EQ_STR(f->name, "f");
	CHECK_EQ_INT(v->kind, GQL_V_STRING);
	CHECK_EQ_STR(v->s, "x\"\xc3\xa9\xf0\x9f\x98\x80\n");
	CHECK_EQ_INT(v->len, 9);
	v = f->args->next->value;
	CHECK_EQ_INT(v->kind, GQL_V_LIST);
	i = v->items;
	CHECK_EQ_INT(i->kind, GQL_V_STRING);
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_VAR);
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_INT);
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_FLOAT);
	CHECK_EQ_STR(i->s, "-2.5e3");
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_BOOL);
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_NULL);
	CHECK_EQ_INT((i = i->next)->kind, GQL_V_ENUM);
	CHECK(i->next == NULL);
	v = f->args->next->next->value;
	CHECK_EQ_INT(v->kind, GQL_V_OBJECT);
	CHECK_EQ_STR(v->items->name, "k");
	CHECK_EQ_STR(f->next->name, "b");
	CHECK(f->next->alias == NULL);
	gql_doc_free(doc);
}

static void test_errors(void)
{
	char *deep;
	size_t i, n = 0;

	parse_bad("", "No query string was present", 0, 0);
	parse_bad("  # only a comment\n", "No query string was present", 0, 0);
	parse_bad("{ a(b: ) }", "Expected VALUE, actual: RPAREN (\")\") at [1, 8]", 1, 8);
	parse_bad("{\n  a {\n", "Unexpected end of document", 3, 1);
	parse_bad("{ }", "Expected IDENTIFIER, actual: RCURLY", 1, 3);
	parse_bad("{ a(b: \"x) }", "Expected VALUE, actual: BAD_UNICODE_ESCAPE", 1, 8);
	parse_bad("{ a(b: \"\\q\") }", "Bad unicode escape", 1, 8);
	parse_bad("{ a(b: \"\\ud800\") }", "Bad unicode escape", 1, 8);
	parse_bad("{ a(b: 01) }", "Expected VALUE, actual: UNKNOWN_CHAR", 1, 8);
	parse_bad("{ a % }", "Expected IDENTIFIER, actual: UNKNOWN_CHAR (\"%\")", 1, 5);
	parse_bad("query($a: ID = $b) { a }", "Expected VALUE, actual: VAR_SIGN", 1, 16);
	parse_bad("mutation { a }", "reef-hub serves queries only", 1, 1);
	parse_bad("{ ...f }", "Fragments are not supported", 1, 3);
	parse_bad("{ a @skip(if: true) }", "Directives are not supported", 1, 5);
	parse_bad("{ a } { b }", "reef-hub serves one operation", 1, 7);
	parse_bad("{ a(b: \"\"\"x\"\"\") }", "Block strings are not supported", 1, 8);
	/* nesting is capped before the stack is at risk */
	deep = malloc(20000);
	CHECK(deep != NULL);
	for (i = 0; i < 1000; i++)
		n += (size_t)sprintf(deep + n, "{a");
	deep[n] = '\0';
	parse_bad(deep, "Query is nested too deeply", 1, 129);
	n = 0;
	for (i = 0; i < 1000; i++)
		deep[n++] = '[';
	memcpy(deep + n, "", 1);
	{
		char q[1100];

		snprintf(q, sizeof(q), "{ a(b: %s) }", deep);
		parse_bad(q, "Query is nested too deeply", 1, 71); /* with the selection set */
	}
	free(deep);
}

int main(void)
{
	test_reefd_query();
	test_values_and_aliases();
	test_errors();
	return 0;
}
