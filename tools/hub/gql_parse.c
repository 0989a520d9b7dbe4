/* The GraphQL subset parser of gql.h: a lexer following the GraphQL spec's lexical
 * grammar (October 2021) and a recursive-descent parser whose recursion is bounded by
 * GQL_MAX_NESTING. Error messages follow graphql-ruby's RecursiveDescentParser, which
 * GitLab runs: "Expected RCURLY, actual: IDENTIFIER (\"x\") at [1, 5]". */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gql.h"
#include "reef/util.h"

/* --- arena --- */

struct gql_arena {
	struct gql_arena *next;
	size_t used, cap;
	size_t nodes; /* in the head chunk: nodes allocated so far */
	char data[];
};

#define GQL_CHUNK ((size_t)16 << 10)

static void *arena_alloc(struct gql_arena **head, size_t n)
{
	struct gql_arena *a = *head;
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (!a || a->cap - a->used < n) {
		size_t cap = n > GQL_CHUNK ? n : GQL_CHUNK;
		struct gql_arena *c = malloc(sizeof(*c) + cap);

		if (!c)
			return NULL;
		c->next = a;
		c->used = 0;
		c->cap = cap;
		c->nodes = a ? a->nodes : 0;
		*head = a = c;
	}
	p = a->data + a->used;
	a->used += n;
	memset(p, 0, n);
	return p;
}

static void arena_free(struct gql_arena *a)
{
	while (a) {
		struct gql_arena *next = a->next;

		free(a);
		a = next;
	}
}

/* --- lexer --- */

enum tok {
	T_EOF,
	T_NAME,
	T_INT,
	T_FLOAT,
	T_STRING,
	T_BLOCK_STRING,
	T_BANG,
	T_DOLLAR,
	T_AMP,
	T_LPAREN,
	T_RPAREN,
	T_ELLIPSIS,
	T_COLON,
	T_EQUALS,
	T_AT,
	T_LBRACKET,
	T_RBRACKET,
	T_LCURLY,
	T_PIPE,
	T_RCURLY,
	T_UNKNOWN,
	T_BAD_STRING,
};

/* graphql-ruby's token names, used in its error messages */
static const char *const tok_names[] = {
    [T_EOF] = "EOF",
    [T_NAME] = "IDENTIFIER",
    [T_INT] = "INT",
    [T_FLOAT] = "FLOAT",
    [T_STRING] = "STRING",
    [T_BLOCK_STRING] = "STRING",
    [T_BANG] = "BANG",
    [T_DOLLAR] = "VAR_SIGN",
    [T_AMP] = "AMP",
    [T_LPAREN] = "LPAREN",
    [T_RPAREN] = "RPAREN",
    [T_ELLIPSIS] = "ELLIPSIS",
    [T_COLON] = "COLON",
    [T_EQUALS] = "EQUALS",
    [T_AT] = "DIR_SIGN",
    [T_LBRACKET] = "LBRACKET",
    [T_RBRACKET] = "RBRACKET",
    [T_LCURLY] = "LCURLY",
    [T_PIPE] = "PIPE",
    [T_RCURLY] = "RCURLY",
    [T_UNKNOWN] = "UNKNOWN_CHAR",
    [T_BAD_STRING] = "BAD_UNICODE_ESCAPE",
};

struct parser {
	const char *src, *end, *p;
	unsigned line;
	const char *line_start;
	/* the current token */
	enum tok t;
	const char *ts;
	size_t tlen;
	unsigned tline, tcol;
	unsigned depth;
	struct gql_arena *arena;
	struct gql_error *err;
	bool failed;
};

static void fail(struct parser *ps, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(struct parser *ps, unsigned line, unsigned col, const char *fmt, ...)
{
	va_list ap;

	if (ps->failed)
		return;
	ps->failed = true;
	va_start(ap, fmt);
	vsnprintf(ps->err->message, sizeof(ps->err->message), fmt, ap);
	va_end(ap);
	ps->err->line = line;
	ps->err->col = col;
}

static bool is_name_start(int c)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_name_char(int c)
{
	return is_name_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static void newline(struct parser *ps, const char *after)
{
	ps->line++;
	ps->line_start = after;
}

/* Skips ignored tokens: whitespace, line terminators, commas, comments, a BOM. */
static void skip_ignored(struct parser *ps)
{
	while (ps->p < ps->end) {
		unsigned char c = (unsigned char)*ps->p;

		if (c == ' ' || c == '\t' || c == ',') {
			ps->p++;
		} else if (c == '\n') {
			ps->p++;
			newline(ps, ps->p);
		} else if (c == '\r') {
			ps->p++;
			if (ps->p < ps->end && *ps->p == '\n')
				ps->p++;
			newline(ps, ps->p);
		} else if (c == '#') {
			while (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r')
				ps->p++;
		} else if (c == 0xef && ps->end - ps->p >= 3 && (unsigned char)ps->p[1] == 0xbb &&
		           (unsigned char)ps->p[2] == 0xbf) {
			ps->p += 3;
		} else {
			break;
		}
	}
}

/* A quoted string: leaves the raw token (quotes included); decoded by str_decode. */
static enum tok lex_string(struct parser *ps)
{
	const char *p = ps->p + 1;

	if (ps->end - ps->p >= 3 && ps->p[1] == '"' && ps->p[2] == '"') {
		ps->p += 3;
		return T_BLOCK_STRING;
	}
	while (p < ps->end && *p != '"') {
		if (*p == '\n' || *p == '\r')
			break;
		if (*p == '\\' && p + 1 < ps->end)
			p++;
		p++;
	}
	if (p >= ps->end || *p != '"') {
		ps->p = p;
		return T_BAD_STRING;
	}
	ps->p = p + 1;
	return T_STRING;
}

static enum tok lex_number(struct parser *ps)
{
	const char *p = ps->p;
	bool is_float = false;

	if (*p == '-')
		p++;
	if (p >= ps->end || !is_digit(*p))
		goto bad;
	if (*p == '0') {
		p++;
		if (p < ps->end && is_digit(*p))
			goto bad;
	} else {
		while (p < ps->end && is_digit(*p))
			p++;
	}
	if (p < ps->end && *p == '.') {
		p++;
		if (p >= ps->end || !is_digit(*p))
			goto bad;
		while (p < ps->end && is_digit(*p))
			p++;
		is_float = true;
	}
	if (p < ps->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < ps->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= ps->end || !is_digit(*p))
			goto bad;
		while (p < ps->end && is_digit(*p))
			p++;
		is_float = true;
	}
	if (p < ps->end && (is_name_start(*p) || *p == '.'))
		goto bad;
	ps->p = p;
	return is_float ? T_FLOAT : T_INT;
bad:
	ps->p = p > ps->p ? p : ps->p + 1;
	return T_UNKNOWN;
}

static void advance(struct parser *ps)
{
	unsigned char c;

	skip_ignored(ps);
	ps->ts = ps->p;
	ps->tline = ps->line;
	ps->tcol = (unsigned)(ps->p - ps->line_start) + 1;
	if (ps->p >= ps->end) {
		ps->t = T_EOF;
		ps->tlen = 0;
		return;
	}
	c = (unsigned char)*ps->p;
	if (is_name_start(c)) {
		while (ps->p < ps->end && is_name_char(*ps->p))
			ps->p++;
		ps->t = T_NAME;
	} else if (c == '-' || is_digit(c)) {
		ps->t = lex_number(ps);
	} else if (c == '"') {
		ps->t = lex_string(ps);
	} else if (c == '.') {
		if (ps->end - ps->p >= 3 && ps->p[1] == '.' && ps->p[2] == '.') {
			ps->p += 3;
			ps->t = T_ELLIPSIS;
		} else {
			ps->p++;
			ps->t = T_UNKNOWN;
		}
	} else {
		static const char punct[] = "!$&():=@[]{|}";
		static const enum tok ptok[] = {T_BANG,   T_DOLLAR, T_AMP,   T_LPAREN,   T_RPAREN,
		                                T_COLON,  T_EQUALS, T_AT,    T_LBRACKET, T_RBRACKET,
		                                T_LCURLY, T_PIPE,   T_RCURLY};
		const char *hit = c ? strchr(punct, c) : NULL;

		ps->p++;
		ps->t = hit ? ptok[hit - punct] : T_UNKNOWN;
		/* one whole UTF-8 sequence for the message */
		if (!hit)
			while (ps->p < ps->end && ((unsigned char)*ps->p & 0xc0) == 0x80)
				ps->p++;
	}
	ps->tlen = (size_t)(ps->p - ps->ts);
}

static bool at(const struct parser *ps, enum tok t)
{
	return !ps->failed && ps->t == t;
}

static bool at_name(const struct parser *ps, const char *name)
{
	return at(ps, T_NAME) && ps->tlen == strlen(name) && !memcmp(ps->ts, name, ps->tlen);
}

/* "Expected X, actual: Y (\"text\") at [l, c]" as graphql-ruby words it. */
static void unexpected(struct parser *ps, const char *expected)
{
	char text[64];
	size_t n = ps->tlen < 40 ? ps->tlen : 40, j = 0;

	if (ps->t == T_EOF) {
		fail(ps, ps->tline, ps->tcol, "Unexpected end of document");
		return;
	}
	for (size_t i = 0; i < n && j + 3 < sizeof(text); i++) {
		char ch = ps->ts[i];

		if (ch == '"' || ch == '\\')
			text[j++] = '\\';
		text[j++] = (ch == '\n' || ch == '\r' || ch == '\0') ? ' ' : ch;
	}
	text[j] = '\0';
	fail(ps, ps->tline, ps->tcol, "Expected %s, actual: %s (\"%s%s\") at [%u, %u]", expected,
	     tok_names[ps->t], text, n < ps->tlen ? "…" : "", ps->tline, ps->tcol);
}

static bool expect(struct parser *ps, enum tok t)
{
	if (ps->failed)
		return false;
	if (ps->t != t) {
		unexpected(ps, tok_names[t]);
		return false;
	}
	advance(ps);
	return true;
}

static void *node(struct parser *ps, size_t n)
{
	void *p;

	if (ps->failed)
		return NULL;
	if (ps->arena && ps->arena->nodes >= GQL_MAX_NODES) {
		fail(ps, ps->tline, ps->tcol, "Query has too many nodes (more than %u)",
		     (unsigned)GQL_MAX_NODES);
		return NULL;
	}
	p = arena_alloc(&ps->arena, n);
	if (!p) {
		fail(ps, 0, 0, "out of memory");
		return NULL;
	}
	ps->arena->nodes++;
	return p;
}

static char *copy(struct parser *ps, const char *s, size_t n)
{
	char *d = arena_alloc(&ps->arena, n + 1);

	if (!d) {
		fail(ps, 0, 0, "out of memory");
		return NULL;
	}
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static const char *name(struct parser *ps)
{
	const char *s;

	if (ps->failed)
		return NULL;
	if (ps->t != T_NAME) {
		unexpected(ps, "IDENTIFIER");
		return NULL;
	}
	s = copy(ps, ps->ts, ps->tlen);
	advance(ps);
	return s;
}

static size_t utf8_put(char *d, uint32_t cp)
{
	if (cp < 0x80) {
		d[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		d[0] = (char)(0xc0 | (cp >> 6));
		d[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		d[0] = (char)(0xe0 | (cp >> 12));
		d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		d[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	d[0] = (char)(0xf0 | (cp >> 18));
	d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	d[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

static int hex4(const char *s, const char *end, uint32_t *out)
{
	uint32_t v = 0;

	if (end - s < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int h = hex_digit(s[i]);

		if (h < 0)
			return -1;
		v = v << 4 | (uint32_t)h;
	}
	*out = v;
	return 0;
}

/* Decodes the current T_STRING token (escapes, surrogate pairs) into the arena. */
static bool str_decode(struct parser *ps, struct gql_value *v)
{
	const char *s = ps->ts + 1, *end = ps->ts + ps->tlen - 1;
	char *d = arena_alloc(&ps->arena, ps->tlen + 1), *o = d;

	if (!d) {
		fail(ps, 0, 0, "out of memory");
		return false;
	}
	while (s < end) {
		uint32_t cp, lo;

		if (*s != '\\') {
			*o++ = *s++;
			continue;
		}
		s++;
		switch (*s) {
		case '"':
		case '\\':
		case '/':
			*o++ = *s++;
			break;
		case 'b':
			*o++ = '\b', s++;
			break;
		case 'f':
			*o++ = '\f', s++;
			break;
		case 'n':
			*o++ = '\n', s++;
			break;
		case 'r':
			*o++ = '\r', s++;
			break;
		case 't':
			*o++ = '\t', s++;
			break;
		case 'u':
			if (hex4(s + 1, end, &cp) < 0)
				goto bad;
			s += 5;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (end - s < 6 || s[0] != '\\' || s[1] != 'u' ||
				    hex4(s + 2, end, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
					goto bad;
				s += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				goto bad;
			}
			/* \uXXXX never takes more bytes than its six source characters */
			o += utf8_put(o, cp);
			break;
		default:
			goto bad;
		}
	}
	*o = '\0';
	v->s = d;
	v->len = (size_t)(o - d);
	return true;
bad:
	fail(ps, ps->tline, ps->tcol, "Bad unicode escape in string at [%u, %u]", ps->tline,
	     ps->tcol);
	return false;
}

static bool nest_in(struct parser *ps)
{
	if (++ps->depth > GQL_MAX_NESTING) {
		fail(ps, ps->tline, ps->tcol, "Query is nested too deeply (more than %u levels)",
		     (unsigned)GQL_MAX_NESTING);
		return false;
	}
	return true;
}

static struct gql_value *value(struct parser *ps, bool is_const);

/* [v, …] or {k: v, …} */
static struct gql_value *compound(struct parser *ps, struct gql_value *v, bool is_const)
{
	enum tok close = ps->t == T_LBRACKET ? T_RBRACKET : T_RCURLY;
	struct gql_value **tail = &v->items;

	v->kind = close == T_RBRACKET ? GQL_V_LIST : GQL_V_OBJECT;
	if (!nest_in(ps))
		return NULL;
	advance(ps);
	while (!ps->failed && ps->t != close) {
		const char *key = NULL;
		struct gql_value *item;

		if (close == T_RCURLY) {
			key = name(ps);
			if (!expect(ps, T_COLON))
				return NULL;
		}
		item = value(ps, is_const);
		if (!item)
			return NULL;
		item->name = key;
		*tail = item;
		tail = &item->next;
	}
	if (!expect(ps, close))
		return NULL;
	ps->depth--;
	return v;
}

static struct gql_value *value(struct parser *ps, bool is_const)
{
	struct gql_value *v = node(ps, sizeof(*v));

	if (!v)
		return NULL;
	v->line = ps->tline;
	v->col = ps->tcol;
	switch (ps->t) {
	case T_DOLLAR:
		if (is_const) {
			unexpected(ps, "VALUE");
			return NULL;
		}
		advance(ps);
		v->kind = GQL_V_VAR;
		v->s = name(ps);
		v->len = v->s ? strlen(v->s) : 0;
		return v->s ? v : NULL;
	case T_STRING:
		v->kind = GQL_V_STRING;
		if (!str_decode(ps, v))
			return NULL;
		advance(ps);
		return v;
	case T_INT:
	case T_FLOAT:
	case T_NAME:
		v->kind = ps->t == T_INT ? GQL_V_INT : ps->t == T_FLOAT ? GQL_V_FLOAT : GQL_V_ENUM;
		if (ps->t == T_NAME && at_name(ps, "true"))
			v->kind = GQL_V_BOOL;
		else if (ps->t == T_NAME && at_name(ps, "false"))
			v->kind = GQL_V_BOOL;
		else if (ps->t == T_NAME && at_name(ps, "null"))
			v->kind = GQL_V_NULL;
		v->s = copy(ps, ps->ts, ps->tlen);
		v->len = ps->tlen;
		advance(ps);
		return v->s ? v : NULL;
	case T_LBRACKET:
	case T_LCURLY:
		return compound(ps, v, is_const);
	case T_BLOCK_STRING:
		fail(ps, ps->tline, ps->tcol,
		     "Block strings are not supported by reef-hub at [%u, %u]", ps->tline,
		     ps->tcol);
		return NULL;
	default:
		unexpected(ps, "VALUE");
		return NULL;
	}
}

static struct gql_type *type_ref(struct parser *ps)
{
	struct gql_type *t = node(ps, sizeof(*t));

	if (!t)
		return NULL;
	if (at(ps, T_LBRACKET)) {
		if (!nest_in(ps))
			return NULL;
		advance(ps);
		t->of = type_ref(ps);
		if (!t->of || !expect(ps, T_RBRACKET))
			return NULL;
		ps->depth--;
	} else {
		t->name = name(ps);
		if (!t->name)
			return NULL;
	}
	if (at(ps, T_BANG)) {
		t->non_null = true;
		advance(ps);
	}
	return t;
}

static struct gql_vardef *var_defs(struct parser *ps)
{
	struct gql_vardef *head = NULL, **tail = &head;

	advance(ps); /* ( */
	while (!ps->failed && ps->t != T_RPAREN) {
		struct gql_vardef *d = node(ps, sizeof(*d));

		if (!d)
			return NULL;
		d->line = ps->tline;
		d->col = ps->tcol;
		if (!expect(ps, T_DOLLAR))
			return NULL;
		d->name = name(ps);
		if (!expect(ps, T_COLON))
			return NULL;
		d->type = type_ref(ps);
		if (!d->type)
			return NULL;
		if (at(ps, T_EQUALS)) {
			advance(ps);
			d->def = value(ps, true);
			if (!d->def)
				return NULL;
		}
		if (at(ps, T_AT)) {
			fail(ps, ps->tline, ps->tcol,
			     "Directives are not supported by reef-hub at [%u, %u]", ps->tline,
			     ps->tcol);
			return NULL;
		}
		*tail = d;
		tail = &d->next;
	}
	if (!expect(ps, T_RPAREN))
		return NULL;
	return head;
}

static struct gql_arg *arguments(struct parser *ps)
{
	struct gql_arg *head = NULL, **tail = &head;

	advance(ps); /* ( */
	if (at(ps, T_RPAREN)) {
		unexpected(ps, "IDENTIFIER");
		return NULL;
	}
	while (!ps->failed && ps->t != T_RPAREN) {
		struct gql_arg *a = node(ps, sizeof(*a));

		if (!a)
			return NULL;
		a->line = ps->tline;
		a->col = ps->tcol;
		a->name = name(ps);
		if (!expect(ps, T_COLON))
			return NULL;
		a->value = value(ps, false);
		if (!a->value)
			return NULL;
		*tail = a;
		tail = &a->next;
	}
	expect(ps, T_RPAREN);
	return ps->failed ? NULL : head;
}

static struct gql_field *selection_set(struct parser *ps)
{
	struct gql_field *head = NULL, **tail = &head;

	if (!nest_in(ps) || !expect(ps, T_LCURLY))
		return NULL;
	if (at(ps, T_RCURLY)) {
		unexpected(ps, "IDENTIFIER");
		return NULL;
	}
	while (!ps->failed && ps->t != T_RCURLY) {
		struct gql_field *f;

		if (at(ps, T_ELLIPSIS)) {
			fail(ps, ps->tline, ps->tcol,
			     "Fragments are not supported by reef-hub at [%u, %u]", ps->tline,
			     ps->tcol);
			return NULL;
		}
		f = node(ps, sizeof(*f));
		if (!f)
			return NULL;
		f->line = ps->tline;
		f->col = ps->tcol;
		f->name = name(ps);
		if (at(ps, T_COLON)) {
			advance(ps);
			f->alias = f->name;
			f->name = name(ps);
		}
		if (at(ps, T_LPAREN))
			f->args = arguments(ps);
		if (at(ps, T_AT)) {
			fail(ps, ps->tline, ps->tcol,
			     "Directives are not supported by reef-hub at [%u, %u]", ps->tline,
			     ps->tcol);
			return NULL;
		}
		if (at(ps, T_LCURLY)) {
			f->has_sel = true;
			f->sel = selection_set(ps);
		}
		if (ps->failed)
			return NULL;
		*tail = f;
		tail = &f->next;
	}
	if (!expect(ps, T_RCURLY))
		return NULL;
	ps->depth--;
	return head;
}

int gql_parse(const char *src, size_t len, struct gql_doc **out, struct gql_error *err)
{
	struct parser ps = {
	    .src = src, .end = src + len, .p = src, .line = 1, .line_start = src, .err = err};
	struct gql_doc *doc;

	*out = NULL;
	memset(err, 0, sizeof(*err));
	if (len > GQL_MAX_SOURCE) {
		snprintf(err->message, sizeof(err->message), "Query too large");
		return -EINVAL;
	}
	doc = arena_alloc(&ps.arena, sizeof(*doc));
	if (!doc)
		return -ENOMEM;
	advance(&ps);
	if (ps.t == T_EOF) {
		fail(&ps, 0, 0, "No query string was present");
		goto out;
	}
	doc->line = ps.tline;
	doc->col = ps.tcol;
	if (at_name(&ps, "query")) {
		advance(&ps);
		if (at(&ps, T_NAME))
			doc->name = name(&ps);
		if (at(&ps, T_LPAREN))
			doc->vars = var_defs(&ps);
		if (at(&ps, T_AT))
			fail(&ps, ps.tline, ps.tcol,
			     "Directives are not supported by reef-hub at [%u, %u]", ps.tline,
			     ps.tcol);
	} else if (at_name(&ps, "mutation") || at_name(&ps, "subscription") ||
	           at_name(&ps, "fragment")) {
		fail(&ps, ps.tline, ps.tcol, "reef-hub serves queries only, not %.*s at [%u, %u]",
		     (int)ps.tlen, ps.ts, ps.tline, ps.tcol);
	} else if (!at(&ps, T_LCURLY)) {
		unexpected(&ps, "LCURLY");
	}
	if (!ps.failed)
		doc->sel = selection_set(&ps);
	if (!ps.failed && ps.t != T_EOF)
		fail(&ps, ps.tline, ps.tcol,
		     "reef-hub serves one operation per document; unexpected %s at [%u, %u]",
		     tok_names[ps.t], ps.tline, ps.tcol);
out:
	if (ps.failed) {
		arena_free(ps.arena);
		return strcmp(err->message, "out of memory") ? -EINVAL : -ENOMEM;
	}
	doc->arena = ps.arena;
	*out = doc;
	return 0;
}

void gql_doc_free(struct gql_doc *doc)
{
	if (doc)
		arena_free(doc->arena);
}
