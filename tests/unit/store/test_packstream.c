/* fs/packstream.c against packs made by git itself (git pack-objects: whole objects,
 * OFS_DELTA, REF_DELTA, reused and recomputed deltas, a thin pack), fed in chunks of
 * every kind, and against damaged ones: truncated, bytes flipped, a bad checksum, huge
 * declared sizes, malformed deltas (those built here byte by byte). */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../check.h"
#include "reef/hash.h"
#include "reef/packstream.h"

#define NFILES 40
#define MAXOBJ 256

static char dir[] = "/tmp/reef-packstream-XXXXXX";

/* What the parser handed over. */
struct got {
	size_t n;
	char oid[MAXOBJ][41];
	int type[MAXOBJ];
	void *data[MAXOBJ];
	size_t len[MAXOBJ];
	int big_begun, big_ended, big_discarded;
	unsigned char *big; /* a big object's bytes so far */
	size_t big_len, big_size;
	int big_type;
	bool serve_bases; /* the base callback answers from what was handed over */
	int bases_asked;
};

static void got_reset(struct got *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->data[i]);
	free(g->big);
	bool serve = g->serve_bases;
	memset(g, 0, sizeof(*g));
	g->serve_bases = serve;
}

static void got_add(struct got *g, int type, const char *oid, const void *data, size_t len)
{
	uint8_t bin[HASH_SHA1_LEN];
	struct hash_ctx *h;
	char hex[41];
	static const char *names[] = {"", "commit", "tree", "blob", "tag"};

	/* the id handed over is the content's: checked here independently */
	CHECK(type >= 1 && type <= 4);
	CHECK_EQ_INT(hash_git_begin(&h, names[type], len), 0);
	CHECK_EQ_INT(hash_update(h, data, len), 0);
	CHECK_EQ_INT(hash_final(h, bin), 0);
	hash_free(h);
	hash_hex(hex, bin, HASH_SHA1_LEN);
	CHECK_EQ_STR(oid, hex);
	CHECK(g->n < MAXOBJ);
	memcpy(g->oid[g->n], oid, 41);
	g->type[g->n] = type;
	g->data[g->n] = malloc(len + 1);
	memcpy(g->data[g->n], data, len);
	g->len[g->n] = len;
	g->n++;
}

static int on_object(void *arg, enum pack_type type, const char *oid, const void *data, size_t len)
{
	got_add(arg, (int)type, oid, data, len);
	return 0;
}

static int on_big_begin(void *arg, enum pack_type type, uint64_t size, void **sink)
{
	struct got *g = arg;

	CHECK(!g->big);
	g->big_begun++;
	g->big = malloc(size + 1);
	g->big_size = size;
	g->big_len = 0;
	g->big_type = (int)type;
	*sink = g;
	return 0;
}

static int on_big_write(void *sink, const void *data, size_t len)
{
	struct got *g = sink;

	CHECK(g->big_len + len <= g->big_size);
	memcpy(g->big + g->big_len, data, len);
	g->big_len += len;
	return 0;
}

static int on_big_end(void *sink, const char *oid)
{
	struct got *g = sink;

	if (oid) {
		CHECK_EQ_INT(g->big_len, g->big_size);
		got_add(g, g->big_type, oid, g->big, g->big_len);
		g->big_ended++;
	} else {
		g->big_discarded++;
	}
	free(g->big);
	g->big = NULL;
	return 0;
}

static int on_base(void *arg, const char *oid, enum pack_type *type, void **data, size_t *len,
                   size_t max)
{
	struct got *g = arg;

	g->bases_asked++;
	if (!g->serve_bases)
		return -ENOENT;
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->oid[i], oid) == 0) {
			if (g->len[i] > max)
				return -EFBIG;
			*data = malloc(g->len[i] + 1);
			memcpy(*data, g->data[i], g->len[i]);
			*len = g->len[i];
			*type = (enum pack_type)g->type[i];
			return 0;
		}
	return -ENOENT;
}

static struct packstream_limits lim_default = {
    .max_bytes = 64 << 20, .max_objects = 1000, .max_object = 16 << 20, .keep_bytes = 64 << 20};

/* Parses pack in pieces of step bytes (0: at once). Returns finish's result. */
static int parse(const void *pack, size_t len, size_t step, struct got *g,
                 const struct packstream_limits *lim, uint64_t big, uint32_t *ofs, uint32_t *ref,
                 char *msg)
{
	struct packstream_cb cb = {.arg = g, .object = on_object, .base = on_base};
	struct packstream *ps;
	size_t at = 0;
	int r = 0;

	if (big) {
		cb.big = big;
		cb.big_begin = on_big_begin;
		cb.big_write = on_big_write;
		cb.big_end = on_big_end;
	}
	CHECK_EQ_INT(packstream_new(&ps, &cb, lim ? lim : &lim_default), 0);
	while (at < len && r == 0) {
		size_t n = step && step < len - at ? step : len - at;

		r = packstream_feed(ps, (const char *)pack + at, n);
		at += n;
	}
	if (r == 0)
		r = packstream_finish(ps);
	else
		CHECK_EQ_INT(packstream_finish(ps), r); /* the error sticks */
	if (ofs)
		packstream_deltas(ps, ofs, ref);
	if (msg)
		snprintf(msg, 200, "%s", packstream_error(ps));
	packstream_free(ps);
	return r;
}

static void run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0) {
		fprintf(stderr, "command failed: %s\n", cmd);
		exit(1);
	}
}

static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	CHECK(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	CHECK(fread(b, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* The files: similar texts (delta material), random bytes, an empty one, a large one
 * and a large near-copy of it. */
static char oids[NFILES][41];
static void *content[NFILES];
static size_t clen[NFILES];

static void make_files(void)
{
	unsigned seed = 1;

	run("git init -q %s/repo && git -C %s/repo config user.email t@t && "
	    "git -C %s/repo config user.name t",
	    dir, dir, dir);
	for (int i = 0; i < NFILES; i++) {
		char path[512];
		size_t n;
		char *b;
		FILE *f;

		if (i < 30) { /* ~6 KiB of shared lines, a few changed */
			n = 0;
			b = malloc(8192);
			for (int l = 0; l < 120; l++)
				n += (size_t)sprintf(b + n, "line %d of the file %s\n", l,
				                     l % 17 == i % 17 ? "changed here"
				                                      : "as before");
			n += (size_t)sprintf(b + n, "file %d\n", i);
		} else if (i < 36) {
			n = 3000 + (size_t)i * 11;
			b = malloc(n);
			for (size_t k = 0; k < n; k++)
				b[k] = (char)(rand_r(&seed) & 0xff);
		} else if (i == 36) {
			n = 0;
			b = malloc(1);
		} else { /* 300 KiB: past the test's big threshold; 38 and 39 near copies */
			n = 300 << 10;
			b = malloc(n);
			for (size_t k = 0; k < n; k++)
				b[k] = (char)("abcdefghij"[(k * 7 + k / 1000) % 10]);
			if (i > 37)
				memcpy(b + 1000 * (size_t)i, "a change here", 13);
		}
		snprintf(path, sizeof(path), "%s/repo/f%02d", dir, i);
		f = fopen(path, "wb");
		CHECK(f);
		CHECK(fwrite(b, 1, n, f) == n);
		fclose(f);
		content[i] = b;
		clen[i] = n;
	}
	run("cd %s/repo && git hash-object -w f* > ../oids && git add . && "
	    "git commit -qm one",
	    dir);
	{
		FILE *f;
		char path[512];

		snprintf(path, sizeof(path), "%s/oids", dir);
		f = fopen(path, "r");
		CHECK(f);
		for (int i = 0; i < NFILES; i++) {
			CHECK(fscanf(f, "%40s", oids[i]) == 1);
		}
		fclose(f);
	}
}

/* Every file came out, with its content, exactly once per id (the empty blob may repeat
 * nowhere: ids are unique in the list). */
static void check_all_files(struct got *g)
{
	for (int i = 0; i < NFILES; i++) {
		size_t k;

		for (k = 0; k < g->n; k++)
			if (strcmp(g->oid[k], oids[i]) == 0)
				break;
		if (k == g->n) {
			fprintf(stderr, "file %d (%s) not handed over\n", i, oids[i]);
			exit(1);
		}
		CHECK_EQ_INT(g->type[k], PACK_BLOB);
		CHECK_EQ_INT(g->len[k], clen[i]);
		CHECK(memcmp(g->data[k], content[i], clen[i]) == 0);
	}
}

static void *pack_of(const char *name, const char *opts, size_t *len)
{
	char path[512];

	run("cd %s/repo && git pack-objects -q --stdout %s < ../oids > ../%s.pack", dir, opts,
	    name);
	snprintf(path, sizeof(path), "%s/%s.pack", dir, name);
	return slurp(path, len);
}

static void test_git_packs(void)
{
	static const struct {
		const char *name, *opts;
		bool ofs, ref;
	} v[] = {
	    {"whole", "--window=0 --no-reuse-delta", false, false},
	    {"ofs", "--window=10 --depth=5 --delta-base-offset", true, false},
	    {"ref", "--window=10 --depth=5", false, true},
	    {"reused", "--delta-base-offset", true, false},
	    {"noreuse", "--window=10 --depth=5 --no-reuse-delta --delta-base-offset", true, false},
	    {"noreuse_ref", "--window=10 --depth=5 --no-reuse-delta", false, true},
	};
	static const size_t steps[] = {0, 1, 7, 4096, 65536};
	struct got g = {0};

	/* a gc'ed repository: "reused" takes the deltas git stored, the others compute */
	run("cd %s/repo && git repack -qadf --window=10 --depth=5", dir);
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		size_t len;
		void *pack = pack_of(v[i].name, v[i].opts, &len);

		for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
			for (int big = 0; big < 2; big++) {
				uint32_t ofs = 0, ref = 0;

				char msg[200];
				int r;

				/* a streamed object is not kept: the consumer serves it */
				g.serve_bases = big;
				got_reset(&g);
				r = parse(pack, len, steps[s], &g, NULL, big ? 64 << 10 : 0, &ofs,
				          &ref, msg);
				if (r != 0) {
					fprintf(stderr, "%s, steps of %zu, big %d: %s\n", v[i].name,
					        steps[s], big, msg);
					exit(1);
				}
				CHECK_EQ_INT(g.n, NFILES);
				check_all_files(&g);
				CHECK_EQ_INT(ofs > 0, v[i].ofs);
				CHECK_EQ_INT(ref > 0, v[i].ref);
				if (!big)
					CHECK_EQ_INT(g.bases_asked, 0); /* every base in memory */
				/* the large whole blobs streamed, the large deltas did not */
				if (big)
					CHECK(g.big_ended >= 1 && g.big_ended == g.big_begun);
				CHECK_EQ_INT(g.big_discarded, 0);
			}
		}
		/* no memory for bases: each base asked back (served from what came) */
		g.serve_bases = false;
		{
			struct packstream_limits lim = lim_default;
			uint32_t ofs = 0, ref = 0;

			lim.keep_bytes = 0;
			g.serve_bases = true;
			got_reset(&g);
			CHECK_EQ_INT(parse(pack, len, 4096, &g, &lim, 0, &ofs, &ref, NULL), 0);
			check_all_files(&g);
			CHECK_EQ_INT(g.bases_asked, (int)(ofs + ref));
			/* nobody to ask: a delta fails, with a clear error */
			if (ofs + ref) {
				char msg[200];

				g.serve_bases = false;
				got_reset(&g);
				CHECK_EQ_INT(parse(pack, len, 4096, &g, &lim, 0, NULL, NULL, msg),
				             -EIO);
				CHECK(strstr(msg, "not available"));
			}
			/* a budget for a few objects only: the oldest go first */
			lim.keep_bytes = 20 << 10;
			g.serve_bases = true;
			got_reset(&g);
			CHECK_EQ_INT(parse(pack, len, 4096, &g, &lim, 0, NULL, NULL, NULL), 0);
			check_all_files(&g);
			g.serve_bases = false;
		}
		free(pack);
	}
	got_reset(&g);
}

/* A thin pack: REF_DELTAs against blobs of the commit before, which the consumer holds. */
static void test_thin(void)
{
	struct got g = {0}, prev = {0};
	char path[512];
	uint32_t ofs = 0, ref = 0;
	size_t len, plen;
	void *pack, *old;

	run("cd %s/repo && for f in f0*; do echo more >> $f; done && git commit -qam two", dir);
	run("cd %s/repo && printf 'HEAD\\n^HEAD~1\\n' | git pack-objects -q --revs --thin "
	    "--stdout > ../thin.pack && printf 'HEAD~1\\n' | git pack-objects -q --revs "
	    "--stdout > ../one.pack",
	    dir);
	snprintf(path, sizeof(path), "%s/thin.pack", dir);
	pack = slurp(path, &len);
	snprintf(path, sizeof(path), "%s/one.pack", dir);
	old = slurp(path, &plen);
	/* alone it cannot resolve */
	CHECK_EQ_INT(parse(pack, len, 0, &g, NULL, 0, NULL, NULL, NULL), -EIO);
	/* with the first commit's objects to ask from: "the odb" */
	CHECK_EQ_INT(parse(old, plen, 0, &prev, NULL, 0, NULL, NULL, NULL), 0);
	prev.serve_bases = true;
	{
		struct packstream_cb cb = {.arg = &prev, .object = on_object, .base = on_base};
		struct packstream *ps;
		size_t before = prev.n;

		CHECK_EQ_INT(packstream_new(&ps, &cb, &lim_default), 0);
		CHECK_EQ_INT(packstream_feed(ps, pack, len), 0);
		CHECK_EQ_INT(packstream_finish(ps), 0);
		packstream_deltas(ps, &ofs, &ref);
		CHECK(ref > 0);
		CHECK(prev.n > before + 10); /* commit, tree, the 10 changed files */
		packstream_free(ps);
	}
	/* each changed file came out right */
	for (int i = 0; i < 10; i++) {
		char cmd[512], oid[41] = "";
		FILE *p;
		size_t k;

		snprintf(cmd, sizeof(cmd), "git -C %s/repo rev-parse HEAD:f%02d", dir, i);
		p = popen(cmd, "r");
		CHECK(p && fscanf(p, "%40s", oid) == 1);
		pclose(p);
		for (k = 0; k < prev.n && strcmp(prev.oid[k], oid) != 0; k++)
			;
		CHECK(k < prev.n);
		CHECK_EQ_INT(prev.len[k], clen[i] + 5);
		CHECK(memcmp(prev.data[k], content[i], clen[i]) == 0);
		CHECK(memcmp((char *)prev.data[k] + clen[i], "more\n", 5) == 0);
	}
	got_reset(&g);
	prev.serve_bases = false;
	got_reset(&prev);
	free(pack);
	free(old);
}

/* Damaged copies of a real delta pack: every prefix, every byte flipped (on a small
 * pack), and the checksum. Whatever comes out before the error is verified (got_add). */
static void test_damage(void)
{
	struct got g = {0};
	char msg[200];
	size_t len;
	unsigned char *pack;

	run("cd %s/repo && head -5 ../oids | git pack-objects -q --stdout --window=10 "
	    "--delta-base-offset > ../small.pack",
	    dir);
	{
		char path[512];

		snprintf(path, sizeof(path), "%s/small.pack", dir);
		pack = slurp(path, &len);
	}
	CHECK_EQ_INT(parse(pack, len, 0, &g, NULL, 0, NULL, NULL, NULL), 0);
	CHECK_EQ_INT(g.n, 5);
	for (size_t cut = 0; cut < len; cut++) {
		got_reset(&g);
		CHECK_EQ_INT(parse(pack, cut, cut % 5, &g, NULL, 0, NULL, NULL, NULL), -EIO);
		CHECK(g.n < 5 || cut >= len - HASH_SHA1_LEN);
	}
	for (size_t at = 0; at < len; at++) {
		for (int bit = 0; bit < 8; bit += 3) {
			int r;

			pack[at] ^= (unsigned char)(1u << bit);
			got_reset(&g);
			r = parse(pack, len, 13, &g, NULL, 0, NULL, NULL, NULL);
			pack[at] ^= (unsigned char)(1u << bit);
			if (r != -EIO && r != -EFBIG) {
				fprintf(stderr, "flip at %zu bit %d: %d\n", at, bit, r);
				exit(1);
			}
		}
	}
	/* a bad checksum: every object handed over (each verified by its id), then the error */
	pack[len - 1] ^= 1;
	got_reset(&g);
	CHECK_EQ_INT(parse(pack, len, 0, &g, NULL, 0, NULL, NULL, msg), -EIO);
	CHECK_EQ_INT(g.n, 5);
	CHECK(strstr(msg, "checksum"));
	pack[len - 1] ^= 1;
	/* bytes after the checksum */
	{
		unsigned char *more = malloc(len + 1);

		memcpy(more, pack, len);
		more[len] = 0;
		got_reset(&g);
		CHECK_EQ_INT(parse(more, len + 1, 0, &g, NULL, 0, NULL, NULL, msg), -EIO);
		CHECK(strstr(msg, "after"));
		free(more);
	}
	/* caps: the pack's size, its object count */
	{
		struct packstream_limits lim = lim_default;

		lim.max_bytes = len - 1;
		got_reset(&g);
		CHECK_EQ_INT(parse(pack, len, 100, &g, &lim, 0, NULL, NULL, NULL), -EFBIG);
		lim = lim_default;
		lim.max_objects = 4;
		got_reset(&g);
		CHECK_EQ_INT(parse(pack, len, 0, &g, &lim, 0, NULL, NULL, NULL), -EFBIG);
		CHECK_EQ_INT(g.n, 0);
	}
	got_reset(&g);
	free(pack);
}

/* A pack built here: objects given as (header bytes, content to deflate). */
struct craft {
	unsigned char b[1 << 16];
	size_t n;
	size_t start[16];
	int count;
};

static void craft_begin(struct craft *c, uint32_t count)
{
	memcpy(c->b, "PACK\0\0\0\2", 8);
	c->b[8] = (unsigned char)(count >> 24);
	c->b[9] = (unsigned char)(count >> 16);
	c->b[10] = (unsigned char)(count >> 8);
	c->b[11] = (unsigned char)count;
	c->n = 12;
	c->count = 0;
}

/* The type/size header; returns where the object starts. */
static size_t craft_hdr(struct craft *c, int type, uint64_t size)
{
	size_t at = c->n;
	unsigned char b = (unsigned char)(type << 4 | (size & 15));

	size >>= 4;
	while (size) {
		c->b[c->n++] = b | 0x80;
		b = size & 0x7f;
		size >>= 7;
	}
	c->b[c->n++] = b;
	c->start[c->count++] = at;
	return at;
}

static void craft_data(struct craft *c, const void *data, size_t len)
{
	uLongf n = sizeof(c->b) - c->n;

	CHECK_EQ_INT(compress2(c->b + c->n, &n, data, len, 6), Z_OK);
	c->n += n;
}

static void craft_ofs(struct craft *c, uint64_t ofs)
{
	unsigned char tmp[16];
	int pos = 15;

	tmp[pos] = ofs & 127;
	while (ofs >>= 7)
		tmp[--pos] = 128 | (--ofs & 127);
	memcpy(c->b + c->n, tmp + pos, (size_t)(16 - pos));
	c->n += (size_t)(16 - pos);
}

static void craft_end(struct craft *c)
{
	CHECK_EQ_INT(hash_buf(HASH_SHA1, c->b, c->n, c->b + c->n), 0);
	c->n += HASH_SHA1_LEN;
}

static int craft_parse(struct craft *c, char *msg)
{
	struct got g = {0};
	int r = parse(c->b, c->n, 3, &g, NULL, 0, NULL, NULL, msg);

	got_reset(&g);
	return r;
}

/* One blob, then an OFS delta against it with the given instructions. */
static int craft_delta(const unsigned char *delta, size_t dlen, char *msg)
{
	static struct craft c;
	size_t base;

	craft_begin(&c, 2);
	base = craft_hdr(&c, 3, 10);
	craft_data(&c, "0123456789", 10);
	{
		size_t at = craft_hdr(&c, 6, dlen);

		craft_ofs(&c, at - base);
	}
	craft_data(&c, delta, dlen);
	craft_end(&c);
	return craft_parse(&c, msg);
}

static void test_crafted(void)
{
	static struct craft c;
	char msg[200];

	/* a valid delta: copy 4 bytes at 2, insert "xy" → "2345xy" */
	{
		const unsigned char d[] = {10, 6, 0x91, 2, 4, 2, 'x', 'y'};

		CHECK_EQ_INT(craft_delta(d, sizeof(d), msg), 0);
	}
	/* a delta whose base size is wrong */
	{
		const unsigned char d[] = {11, 6, 0x91, 2, 4, 2, 'x', 'y'};

		CHECK_EQ_INT(craft_delta(d, sizeof(d), msg), -EIO);
		CHECK(strstr(msg, "base of 10 bytes"));
	}
	/* a result shorter and longer than it says */
	{
		const unsigned char d1[] = {10, 7, 0x91, 2, 4, 2, 'x', 'y'};
		const unsigned char d2[] = {10, 5, 0x91, 2, 4, 2, 'x', 'y'};

		CHECK_EQ_INT(craft_delta(d1, sizeof(d1), msg), -EIO);
		CHECK_EQ_INT(craft_delta(d2, sizeof(d2), msg), -EIO);
	}
	/* a copy past the base's end; the reserved instruction 0; an insert cut short */
	{
		const unsigned char d1[] = {10, 4, 0x91, 8, 4};
		const unsigned char d2[] = {10, 1, 0, 1, 'x'};
		const unsigned char d3[] = {10, 3, 3, 'x'};

		CHECK_EQ_INT(craft_delta(d1, sizeof(d1), msg), -EIO);
		CHECK_EQ_INT(craft_delta(d2, sizeof(d2), msg), -EIO);
		CHECK_EQ_INT(craft_delta(d3, sizeof(d3), msg), -EIO);
	}
	/* a result of 2^40 bytes: refused before any allocation */
	{
		const unsigned char d[] = {10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x91, 2, 4};

		CHECK_EQ_INT(craft_delta(d, sizeof(d), msg), -EFBIG);
	}
	/* an object declaring 2^40 bytes */
	craft_begin(&c, 1);
	craft_hdr(&c, 3, (uint64_t)1 << 40);
	craft_data(&c, "x", 1);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EFBIG);
	/* declared 5, holds 6; declared 7, holds 6 */
	craft_begin(&c, 1);
	craft_hdr(&c, 3, 5);
	craft_data(&c, "abcdef", 6);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	CHECK(strstr(msg, "more than"));
	craft_begin(&c, 1);
	craft_hdr(&c, 3, 7);
	craft_data(&c, "abcdef", 6);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	/* types 0 and 5; an OFS base offset before the pack, or inside an object */
	craft_begin(&c, 1);
	craft_hdr(&c, 5, 1);
	craft_data(&c, "x", 1);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	CHECK(strstr(msg, "type 5"));
	craft_begin(&c, 1);
	{
		size_t at = craft_hdr(&c, 6, 3);

		craft_ofs(&c, at + 5);
	}
	craft_data(&c, "\x01\x01\x01", 3);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	CHECK(strstr(msg, "out of the pack"));
	craft_begin(&c, 2);
	craft_hdr(&c, 3, 10);
	craft_data(&c, "0123456789", 10);
	{
		size_t at = craft_hdr(&c, 6, 3);

		craft_ofs(&c, at - 13); /* one byte into the blob's header */
	}
	craft_data(&c, "\x0a\x01\x91", 3);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	CHECK(strstr(msg, "no object at"));
	/* not a pack; version 4; an empty pack is fine */
	craft_begin(&c, 0);
	c.b[0] = 'X';
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	craft_begin(&c, 0);
	c.b[7] = 4;
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), -EIO);
	craft_begin(&c, 0);
	craft_end(&c);
	CHECK_EQ_INT(craft_parse(&c, msg), 0);
}

int main(void)
{
	CHECK(mkdtemp(dir));
	setenv("GIT_CONFIG_NOSYSTEM", "1", 1);
	setenv("HOME", dir, 1);
	make_files();
	test_git_packs();
	test_thin();
	test_damage();
	test_crafted();
	run("rm -rf %s", dir);
	for (int i = 0; i < NFILES; i++)
		free(content[i]);
	printf("packstream: ok\n");
	return 0;
}
