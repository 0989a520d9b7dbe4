/* A git pack parsed as it streams in: see include/reef/packstream.h.
 *
 * The format (git's Documentation/gitformat-pack.txt): "PACK", a version (2 or 3) and an
 * object count, all big-endian 32-bit; then each object: a header byte with a
 * continuation bit, the type in bits 4-6 and the size's low 4 bits, more size bits 7 at a
 * time; an OFS_DELTA's base as a negative offset in git's "offset encoding", a
 * REF_DELTA's as a 20-byte id; then the zlib stream of the content (or of the delta,
 * whose own header holds the base's size and the result's, followed by copy and insert
 * instructions). The pack ends with the SHA-1 of every byte before it. */
#include "reef/packstream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libdeflate.h>
#include <zlib.h>

#include "reef/hash.h"

#define PS_OFS_DELTA 6
#define PS_REF_DELTA 7
#define PS_HDR_MAX   64 /* an object's header: size and base varints, or a 20-byte id */
#define PS_CHUNK     ((size_t)1 << 16)
#define PS_ZIN_MAX   ((size_t)1 << 30) /* zlib's avail_in is 32 bits */
/* Objects kept in memory up to PS_FAST_MAX bytes are inflated by libdeflate in one call
 * (zlib's inflate was a third of reefd's CPU in a cold read of many files) once their
 * whole zlib stream is in one piece of memory: the piece fed, or the pieces staged since
 * the object's header. libdeflate cannot resume a stream cut between two pieces: each
 * try starts over, so after PS_FAST_TRIES failed ones (a stream over many pieces, or a
 * damaged one) zlib takes the stream from its first byte, goes on across pieces and
 * tells what is wrong with it. */
#define PS_FAST_MAX   ((uint64_t)1 << 20)
#define PS_FAST_TRIES 2

enum ps_state { PS_HEADER, PS_OBJHDR, PS_DATA, PS_TRAILER, PS_DONE, PS_FAILED };

/* An object seen so far, in pack order (offsets ascending). */
struct ps_obj {
	uint64_t off;
	uint8_t id[HASH_SHA1_LEN];
	uint8_t type; /* resolved: commit, tree, blob or tag */
	uint64_t size;
	void *data; /* the content while kept as a possible base, else NULL */
};

struct packstream {
	struct packstream_cb cb;
	struct packstream_limits lim;
	enum ps_state st;
	int err;
	char msg[200];
	struct hash_ctx *pack_hash;
	uint64_t pos; /* bytes of the pack fed so far */
	uint8_t hb[PS_HDR_MAX];
	size_t hn;
	uint32_t count; /* objects the header announced */
	struct ps_obj *obj;
	size_t nobj, capobj;
	uint32_t *slot; /* id → index + 1 in obj, open addressing; 0 is empty */
	size_t nslot;
	uint32_t ofs_deltas, ref_deltas;
	uint64_t kept;    /* bytes of content kept */
	size_t keep_from; /* objects before this one keep nothing */
	/* the object being read */
	uint64_t cur_off;
	int cur_type;
	uint64_t cur_size; /* its content's size, or its delta's */
	uint64_t base_off;
	uint8_t base_id[HASH_SHA1_LEN];
	uint64_t got;
	z_stream z;
	bool zinit;
	unsigned char *buf; /* content or delta, in memory */
	void *sink;         /* a big object's, streamed */
	struct hash_ctx *obj_hash;
	unsigned char *chunk;
	/* the current object through libdeflate (see PS_FAST_MAX) */
	bool fast;
	struct libdeflate_decompressor *dec;
	unsigned char *stage; /* its stream's bytes fed so far, when more than one piece */
	size_t stage_len, stage_cap;
	unsigned tries; /* libdeflate's failed tries of it */
};

static const char *ps_type_name(int type)
{
	static const char *const names[] = {"", "commit", "tree", "blob", "tag"};

	return type >= 1 && type <= 4 ? names[type] : "";
}

static void ps_drop_current(struct packstream *ps)
{
	if (ps->sink && ps->cb.big_end)
		ps->cb.big_end(ps->sink, NULL);
	ps->sink = NULL;
	free(ps->buf);
	ps->buf = NULL;
	hash_free(ps->obj_hash);
	ps->obj_hash = NULL;
}

__attribute__((format(printf, 3, 4))) static int ps_fail(struct packstream *ps, int err,
                                                         const char *fmt, ...)
{
	va_list ap;

	if (ps->st == PS_FAILED)
		return ps->err;
	ps_drop_current(ps);
	ps->st = PS_FAILED;
	ps->err = err;
	va_start(ap, fmt);
	vsnprintf(ps->msg, sizeof(ps->msg), fmt, ap);
	va_end(ap);
	return err;
}

int packstream_new(struct packstream **out, const struct packstream_cb *cb,
                   const struct packstream_limits *lim)
{
	struct packstream *ps;

	*out = NULL;
	if (!cb->object || (cb->big && (!cb->big_begin || !cb->big_write || !cb->big_end)))
		return -EINVAL;
	ps = calloc(1, sizeof(*ps));
	if (!ps)
		return -ENOMEM;
	ps->cb = *cb;
	ps->lim = *lim;
	if (hash_new(&ps->pack_hash, HASH_SHA1) < 0) {
		free(ps);
		return -ENOMEM;
	}
	*out = ps;
	return 0;
}

void packstream_free(struct packstream *ps)
{
	if (!ps)
		return;
	ps_drop_current(ps);
	if (ps->zinit)
		inflateEnd(&ps->z);
	for (size_t i = 0; i < ps->nobj; i++)
		free(ps->obj[i].data);
	free(ps->obj);
	free(ps->slot);
	free(ps->chunk);
	free(ps->stage);
	if (ps->dec)
		libdeflate_free_decompressor(ps->dec);
	hash_free(ps->pack_hash);
	free(ps);
}

const char *packstream_error(const struct packstream *ps)
{
	return ps->msg;
}

uint32_t packstream_objects(const struct packstream *ps)
{
	return (uint32_t)ps->nobj;
}

void packstream_deltas(const struct packstream *ps, uint32_t *ofs, uint32_t *ref)
{
	*ofs = ps->ofs_deltas;
	*ref = ps->ref_deltas;
}

static size_t ps_slot_of(const uint8_t *id, size_t nslot)
{
	uint64_t h;

	memcpy(&h, id, sizeof(h)); /* an id's bytes are uniform already */
	return (size_t)h & (nslot - 1);
}

static int ps_index_add(struct packstream *ps, size_t k)
{
	size_t i;

	if ((ps->nobj + 1) * 2 > ps->nslot) {
		size_t n = ps->nslot ? ps->nslot * 2 : 256;
		uint32_t *s = calloc(n, sizeof(*s));

		if (!s)
			return -ENOMEM;
		for (size_t j = 0; j < ps->nslot; j++) {
			if (!ps->slot[j])
				continue;
			for (i = ps_slot_of(ps->obj[ps->slot[j] - 1].id, n); s[i];
			     i = (i + 1) & (n - 1))
				;
			s[i] = ps->slot[j];
		}
		free(ps->slot);
		ps->slot = s;
		ps->nslot = n;
	}
	for (i = ps_slot_of(ps->obj[k].id, ps->nslot); ps->slot[i]; i = (i + 1) & (ps->nslot - 1))
		if (memcmp(ps->obj[ps->slot[i] - 1].id, ps->obj[k].id, HASH_SHA1_LEN) == 0)
			return 0; /* a duplicate: the first one serves as base */
	ps->slot[i] = (uint32_t)(k + 1);
	return 0;
}

static struct ps_obj *ps_find_id(struct packstream *ps, const uint8_t *id)
{
	if (!ps->nslot)
		return NULL;
	for (size_t i = ps_slot_of(id, ps->nslot); ps->slot[i]; i = (i + 1) & (ps->nslot - 1))
		if (memcmp(ps->obj[ps->slot[i] - 1].id, id, HASH_SHA1_LEN) == 0)
			return &ps->obj[ps->slot[i] - 1];
	return NULL;
}

static struct ps_obj *ps_find_off(struct packstream *ps, uint64_t off)
{
	size_t lo = 0, hi = ps->nobj;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ps->obj[mid].off == off)
			return &ps->obj[mid];
		if (ps->obj[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Records a completed object; keeps data (taken over: freed here when not kept) as a
 * possible delta base while the budget allows, letting go of the oldest first. */
static int ps_record(struct packstream *ps, const uint8_t *id, int type, uint64_t size, void *data)
{
	struct ps_obj *o;

	if (ps->nobj == ps->capobj) {
		size_t n = ps->capobj ? ps->capobj * 2 : 64;
		struct ps_obj *no = realloc(ps->obj, n * sizeof(*no));

		if (!no) {
			free(data);
			return -ENOMEM;
		}
		ps->obj = no;
		ps->capobj = n;
	}
	o = &ps->obj[ps->nobj];
	*o = (struct ps_obj){.off = ps->cur_off, .type = (uint8_t)type, .size = size};
	memcpy(o->id, id, HASH_SHA1_LEN);
	if (data && size <= ps->lim.keep_bytes) {
		while (ps->kept + size > ps->lim.keep_bytes && ps->keep_from < ps->nobj) {
			struct ps_obj *old = &ps->obj[ps->keep_from++];

			if (old->data) {
				ps->kept -= old->size;
				free(old->data);
				old->data = NULL;
			}
		}
		o->data = data;
		ps->kept += size;
	} else {
		free(data);
	}
	ps->nobj++;
	return ps_index_add(ps, ps->nobj - 1);
}

/* Hands a complete in-memory object over and records it (data is taken over). */
static int ps_deliver(struct packstream *ps, int type, void *data, uint64_t size)
{
	struct hash_ctx *h = NULL;
	uint8_t id[HASH_SHA1_LEN];
	char hex[41];
	int r;

	r = hash_git_begin(&h, ps_type_name(type), size);
	if (r == 0)
		r = hash_update(h, data, (size_t)size);
	if (r == 0)
		r = hash_final(h, id);
	hash_free(h);
	if (r < 0) {
		free(data);
		return ps_fail(ps, r, "cannot hash an object");
	}
	hash_hex(hex, id, HASH_SHA1_LEN);
	r = ps->cb.object(ps->cb.arg, (enum pack_type)type, hex, data, (size_t)size);
	if (r < 0) {
		free(data);
		return ps_fail(ps, r, "object %s not taken: %s", hex, strerror(-r));
	}
	r = ps_record(ps, id, type, size, data);
	return r < 0 ? ps_fail(ps, r, "out of memory") : 0;
}

static bool ps_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	unsigned shift = 0;
	uint8_t c;

	*v = 0;
	do {
		if (*p >= end || shift > 63)
			return false;
		c = *(*p)++;
		if (shift == 63 && (c & 0x7e))
			return false;
		*v |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	} while (c & 0x80);
	return true;
}

/* Applies the delta in ps->buf to the base; the result, verified and handed over. */
static int ps_apply(struct packstream *ps, const uint8_t *base, uint64_t blen, int type)
{
	const uint8_t *p = ps->buf, *end = p + ps->cur_size;
	uint64_t bsz, rsz, at = 0;
	uint8_t *out;

	if (!ps_varint(&p, end, &bsz) || !ps_varint(&p, end, &rsz))
		return ps_fail(ps, -EIO, "delta at %llu: truncated sizes",
		               (unsigned long long)ps->cur_off);
	if (bsz != blen)
		return ps_fail(ps, -EIO, "delta at %llu: base of %llu bytes, not %llu",
		               (unsigned long long)ps->cur_off, (unsigned long long)blen,
		               (unsigned long long)bsz);
	if (rsz > ps->lim.max_object)
		return ps_fail(ps, -EFBIG, "delta at %llu: a result of %llu bytes",
		               (unsigned long long)ps->cur_off, (unsigned long long)rsz);
	out = malloc(rsz ? (size_t)rsz : 1);
	if (!out)
		return ps_fail(ps, -ENOMEM, "out of memory");
	while (p < end) {
		uint8_t c = *p++;

		if (c & 0x80) {
			uint64_t off = 0, n = 0;

			for (int i = 0; i < 4; i++)
				if (c & (1u << i)) {
					if (p >= end)
						goto bad;
					off |= (uint64_t)*p++ << (8 * i);
				}
			for (int i = 0; i < 3; i++)
				if (c & (0x10u << i)) {
					if (p >= end)
						goto bad;
					n |= (uint64_t)*p++ << (8 * i);
				}
			if (n == 0)
				n = 0x10000;
			if (off > blen || n > blen - off || n > rsz - at)
				goto bad;
			memcpy(out + at, base + off, (size_t)n);
			at += n;
		} else if (c) {
			if (c > end - p || c > rsz - at)
				goto bad;
			memcpy(out + at, p, c);
			p += c;
			at += c;
		} else {
			goto bad; /* reserved */
		}
	}
	if (at != rsz)
		goto bad;
	free(ps->buf);
	ps->buf = NULL;
	return ps_deliver(ps, type, out, rsz);
bad:
	free(out);
	return ps_fail(ps, -EIO, "delta at %llu: an instruction outside the base or the result",
	               (unsigned long long)ps->cur_off);
}

/* A delta's data is complete: find its base and apply it. */
static int ps_delta_done(struct packstream *ps)
{
	struct ps_obj *b;
	void *loaded = NULL;
	const uint8_t *base;
	uint64_t blen;
	int type, r;
	char hex[41];

	if (ps->cur_type == PS_OFS_DELTA) {
		b = ps_find_off(ps, ps->base_off);
		if (!b)
			return ps_fail(ps, -EIO, "delta at %llu: no object at its base offset %llu",
			               (unsigned long long)ps->cur_off,
			               (unsigned long long)ps->base_off);
	} else {
		b = ps_find_id(ps, ps->base_id);
	}
	if (b && b->data) {
		base = b->data;
		blen = b->size;
		type = b->type;
	} else {
		enum pack_type t = PACK_BLOB;
		size_t len = 0;

		hash_hex(hex, b ? b->id : ps->base_id, HASH_SHA1_LEN);
		r = ps->cb.base ? ps->cb.base(ps->cb.arg, hex, &t, &loaded, &len,
		                              (size_t)ps->lim.max_object)
		                : -ENOENT;
		if (r < 0)
			return ps_fail(ps, r == -ENOENT ? -EIO : r,
			               "delta at %llu: base %s not available: %s",
			               (unsigned long long)ps->cur_off, hex, strerror(-r));
		if (b && (b->size != len || b->type != (uint8_t)t)) {
			free(loaded);
			return ps_fail(ps, -EIO, "delta at %llu: base %s read back differs",
			               (unsigned long long)ps->cur_off, hex);
		}
		if (t < PACK_COMMIT || t > PACK_TAG) {
			free(loaded);
			return ps_fail(ps, -EIO, "delta base %s of no known type", hex);
		}
		base = loaded;
		blen = len;
		type = (int)t;
	}
	r = ps_apply(ps, base, blen, type);
	free(loaded);
	if (r == 0 && ps->cur_type == PS_OFS_DELTA)
		ps->ofs_deltas++;
	else if (r == 0)
		ps->ref_deltas++;
	return r;
}

/* The current object's zlib stream ended with all its bytes. */
static int ps_object_done(struct packstream *ps)
{
	int r;

	if (ps->cur_type == PS_OFS_DELTA || ps->cur_type == PS_REF_DELTA) {
		r = ps_delta_done(ps);
	} else if (ps->sink) {
		uint8_t id[HASH_SHA1_LEN];
		char hex[41];
		void *sink = ps->sink;

		r = hash_final(ps->obj_hash, id);
		hash_free(ps->obj_hash);
		ps->obj_hash = NULL;
		if (r < 0)
			return ps_fail(ps, r, "cannot hash an object");
		hash_hex(hex, id, HASH_SHA1_LEN);
		ps->sink = NULL;
		r = ps->cb.big_end(sink, hex);
		if (r < 0)
			return ps_fail(ps, r, "object %s not taken: %s", hex, strerror(-r));
		r = ps_record(ps, id, ps->cur_type, ps->cur_size, NULL);
		if (r < 0)
			return ps_fail(ps, r, "out of memory");
	} else {
		void *data = ps->buf;

		ps->buf = NULL;
		r = ps_deliver(ps, ps->cur_type, data, ps->cur_size);
	}
	if (r < 0)
		return r;
	ps->st = ps->nobj == ps->count ? PS_TRAILER : PS_OBJHDR;
	ps->hn = 0;
	return 0;
}

/* Parses the object header in hb: 1 when complete, 0 when it needs more bytes. */
static int ps_objhdr(struct packstream *ps)
{
	const uint8_t *p = ps->hb, *end = p + ps->hn;
	uint64_t size;
	unsigned shift = 4;
	uint8_t c = *p++;
	int type = (c >> 4) & 7;

	size = c & 15;
	while (c & 0x80) {
		if (p >= end)
			return 0;
		if (shift > 53) /* sizes of 2^60 bytes and more: never a real one */
			return ps_fail(ps, -EIO, "object at %llu: size varint too long",
			               (unsigned long long)ps->cur_off);
		c = *p++;
		size |= (uint64_t)(c & 0x7f) << shift;
		shift += 7;
	}
	if (type == 0 || type == 5)
		return ps_fail(ps, -EIO, "object at %llu: invalid type %d",
		               (unsigned long long)ps->cur_off, type);
	if (type == PS_OFS_DELTA) {
		uint64_t ofs;

		if (p >= end)
			return 0;
		c = *p++;
		ofs = c & 0x7f;
		while (c & 0x80) {
			if (p >= end)
				return 0;
			if (ofs >= (UINT64_MAX >> 7) - 1)
				return ps_fail(ps, -EIO, "delta at %llu: base offset too long",
				               (unsigned long long)ps->cur_off);
			c = *p++;
			ofs = ((ofs + 1) << 7) | (c & 0x7f);
		}
		if (ofs == 0 || ofs > ps->cur_off)
			return ps_fail(ps, -EIO, "delta at %llu: base offset %llu out of the pack",
			               (unsigned long long)ps->cur_off, (unsigned long long)ofs);
		ps->base_off = ps->cur_off - ofs;
	} else if (type == PS_REF_DELTA) {
		if ((size_t)(end - p) < HASH_SHA1_LEN)
			return 0;
		memcpy(ps->base_id, p, HASH_SHA1_LEN);
	}
	if (size > ps->lim.max_object)
		return ps_fail(ps, -EFBIG, "object at %llu: %llu bytes declared",
		               (unsigned long long)ps->cur_off, (unsigned long long)size);
	ps->cur_type = type;
	ps->cur_size = size;
	ps->got = 0;
	ps->fast = false;
	if (!ps->zinit) {
		if (inflateInit(&ps->z) != Z_OK)
			return ps_fail(ps, -ENOMEM, "zlib: cannot start");
		ps->zinit = true;
	} else if (inflateReset(&ps->z) != Z_OK) {
		return ps_fail(ps, -EIO, "zlib: cannot reset");
	}
	/* no Adler-32 check: the object's SHA-1 covers its content (and was a tenth of a
	 * batch's instructions) */
	inflateValidate(&ps->z, 0);
	if (type < PS_OFS_DELTA && ps->cb.big && size >= ps->cb.big) {
		int r;

		if (!ps->chunk && !(ps->chunk = malloc(PS_CHUNK)))
			return ps_fail(ps, -ENOMEM, "out of memory");
		r = hash_git_begin(&ps->obj_hash, ps_type_name(type), size);
		if (r < 0)
			return ps_fail(ps, r, "cannot hash an object");
		r = ps->cb.big_begin(ps->cb.arg, (enum pack_type)type, size, &ps->sink);
		if (r < 0) {
			ps->sink = NULL;
			return ps_fail(ps, r, "object at %llu: no place for %llu bytes: %s",
			               (unsigned long long)ps->cur_off, (unsigned long long)size,
			               strerror(-r));
		}
	} else {
		ps->buf = malloc(size ? (size_t)size : 1);
		if (!ps->buf)
			return ps_fail(ps, -ENOMEM, "out of memory for %llu bytes",
			               (unsigned long long)size);
		if (size <= PS_FAST_MAX && !ps->dec)
			ps->dec = libdeflate_alloc_decompressor();
		ps->fast = size <= PS_FAST_MAX && ps->dec;
		ps->stage_len = 0;
		ps->tries = 0;
	}
	ps->st = PS_DATA;
	return 1;
}

/* Inflates from p; *used: the input bytes the current object's stream took. */
static int ps_data(struct packstream *ps, const uint8_t *p, size_t n, size_t *used)
{
	unsigned char spare[1];

	ps->z.next_in = (unsigned char *)(uintptr_t)p;
	ps->z.avail_in = (uInt)(n < PS_ZIN_MAX ? n : PS_ZIN_MAX);
	for (;;) {
		uint64_t left = ps->cur_size - ps->got;
		unsigned char *out;
		size_t room, made;
		uInt in0 = ps->z.avail_in;
		int zr;

		if (left == 0) {
			out = spare; /* anything inflated here is more than declared */
			room = 1;
		} else if (ps->sink) {
			out = ps->chunk;
			room = left < PS_CHUNK ? (size_t)left : PS_CHUNK;
		} else {
			out = ps->buf + ps->got;
			room = left < PS_ZIN_MAX ? (size_t)left : PS_ZIN_MAX;
		}
		ps->z.next_out = out;
		ps->z.avail_out = (uInt)room;
		zr = inflate(&ps->z, Z_NO_FLUSH);
		made = room - ps->z.avail_out;
		if (left == 0 && made)
			return ps_fail(ps, -EIO, "object at %llu: more than its %llu bytes",
			               (unsigned long long)ps->cur_off,
			               (unsigned long long)ps->cur_size);
		if (made && ps->sink) {
			int r = hash_update(ps->obj_hash, out, made);

			if (r == 0)
				r = ps->cb.big_write(ps->sink, out, made);
			if (r < 0)
				return ps_fail(ps, r, "object at %llu: cannot take its bytes: %s",
				               (unsigned long long)ps->cur_off, strerror(-r));
		}
		ps->got += made;
		if (zr == Z_STREAM_END) {
			*used = (size_t)(ps->z.next_in - p);
			if (ps->got != ps->cur_size)
				return ps_fail(ps, -EIO, "object at %llu: %llu bytes, not %llu",
				               (unsigned long long)ps->cur_off,
				               (unsigned long long)ps->got,
				               (unsigned long long)ps->cur_size);
			return ps_object_done(ps);
		}
		if (zr != Z_OK && zr != Z_BUF_ERROR)
			return ps_fail(ps, -EIO, "object at %llu: bad zlib data",
			               (unsigned long long)ps->cur_off);
		if (ps->z.avail_in == 0 || (!made && in0 == ps->z.avail_in)) {
			*used = (size_t)(ps->z.next_in - p);
			if (ps->z.avail_in && *used == 0 && !made)
				return ps_fail(ps, -EIO, "object at %llu: zlib stalls",
				               (unsigned long long)ps->cur_off);
			return 0;
		}
	}
}

/* Copies n bytes from p to the stage at off, growing it (doubling) as needed. */
static int ps_stage_put(struct packstream *ps, size_t off, const uint8_t *p, size_t n)
{
	if (n > ps->stage_cap - off) {
		size_t cap = ps->stage_cap * 2 > off + n ? ps->stage_cap * 2 : off + n;
		unsigned char *nb;

		if (cap < PS_CHUNK)
			cap = PS_CHUNK;
		nb = realloc(ps->stage, cap);
		if (!nb)
			return ps_fail(ps, -ENOMEM, "out of memory");
		ps->stage = nb;
		ps->stage_cap = cap;
	}
	memcpy(ps->stage + off, p, n);
	return 0;
}

/* ps_data for an object of at most PS_FAST_MAX bytes kept in memory: the whole stream
 * inflated by libdeflate once it is in one piece of memory; *used: the bytes of p the
 * object took (all of them while it is staged). Each piece is tried as it comes, so a
 * stream that ends ends in the piece tried (a try without it failed). */
static int ps_data_fast(struct packstream *ps, const uint8_t *p, size_t n, size_t *used)
{
	const uint8_t *in = p;
	size_t staged = ps->stage_len, len = n, took = 0, made = 0, u = 0;
	enum libdeflate_result lr;
	int r;

	if (staged) {
		r = ps_stage_put(ps, staged, p, n);
		if (r < 0)
			return r;
		in = ps->stage;
		len = staged + n;
	}
	lr = libdeflate_zlib_decompress_ex(ps->dec, in, len, ps->buf, (size_t)ps->cur_size, &took,
	                                   &made);
	if (lr == LIBDEFLATE_SUCCESS && made == ps->cur_size && took > staged) {
		*used = took - staged;
		ps->stage_len = 0;
		ps->got = ps->cur_size;
		return ps_object_done(ps);
	}
	if (lr == LIBDEFLATE_BAD_DATA && ++ps->tries < PS_FAST_TRIES) {
		/* most likely cut short: keep the bytes for a try with the next piece */
		if (!staged && (r = ps_stage_put(ps, 0, p, n)) < 0)
			return r;
		ps->stage_len = len;
		*used = n;
		return 0;
	}
	/* zlib from the stream's first byte: it goes on across pieces, and tells what is
	 * wrong with a stream libdeflate refused */
	ps->fast = false;
	ps->stage_len = 0;
	if (!staged)
		return ps_data(ps, p, n, used);
	r = ps_data(ps, ps->stage, len, &u);
	if (r < 0)
		return r;
	if (ps->st == PS_DATA) {
		*used = n;
		return 0;
	}
	if (u <= staged)
		return ps_fail(ps, -EIO,
		               "object at %llu: zlib ends its stream before libdeflate did",
		               (unsigned long long)ps->cur_off);
	*used = u - staged;
	return 0;
}

static uint32_t ps_be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

int packstream_feed(struct packstream *ps, const void *data, size_t len)
{
	const uint8_t *p = data, *end = p + len, *hashed = p;
	int r = 0;

	if (ps->st == PS_FAILED)
		return ps->err;
	if (len > ps->lim.max_bytes - ps->pos)
		return ps_fail(ps, -EFBIG, "the pack exceeds %llu bytes",
		               (unsigned long long)ps->lim.max_bytes);
	ps->pos += len;
	while (p < end && r == 0) {
		switch (ps->st) {
		case PS_HEADER:
			ps->hb[ps->hn++] = *p++;
			if (ps->hn < 12)
				break;
			if (memcmp(ps->hb, "PACK", 4) != 0)
				return ps_fail(ps, -EIO, "not a pack");
			if (ps_be32(ps->hb + 4) != 2 && ps_be32(ps->hb + 4) != 3)
				return ps_fail(ps, -EIO, "pack version %u", ps_be32(ps->hb + 4));
			ps->count = ps_be32(ps->hb + 8);
			if (ps->count > ps->lim.max_objects)
				return ps_fail(ps, -EFBIG, "a pack of %u objects", ps->count);
			ps->hn = 0;
			ps->st = ps->count ? PS_OBJHDR : PS_TRAILER;
			ps->cur_off = 12;
			break;
		case PS_OBJHDR:
			if (ps->hn == 0)
				ps->cur_off = ps->pos - (uint64_t)(end - p);
			if (ps->hn == PS_HDR_MAX)
				return ps_fail(ps, -EIO, "object header too long");
			ps->hb[ps->hn++] = *p++;
			r = ps_objhdr(ps);
			if (r > 0)
				r = 0;
			break;
		case PS_DATA: {
			size_t used = 0;

			if (ps->fast)
				r = ps_data_fast(ps, p, (size_t)(end - p), &used);
			else
				r = ps_data(ps, p, (size_t)(end - p), &used);
			p += used;
			break;
		}
		case PS_TRAILER: {
			size_t take = HASH_SHA1_LEN - ps->hn;

			if (hashed) {
				r = hash_update(ps->pack_hash, hashed, (size_t)(p - hashed));
				hashed = NULL;
				if (r < 0)
					return ps_fail(ps, r, "cannot hash the pack");
			}
			if (take > (size_t)(end - p))
				take = (size_t)(end - p);
			memcpy(ps->hb + ps->hn, p, take);
			ps->hn += take;
			p += take;
			if (ps->hn == HASH_SHA1_LEN) {
				uint8_t sum[HASH_SHA1_LEN];

				r = hash_final(ps->pack_hash, sum);
				if (r < 0)
					return ps_fail(ps, r, "cannot hash the pack");
				if (memcmp(sum, ps->hb, HASH_SHA1_LEN) != 0)
					return ps_fail(ps, -EIO,
					               "the pack's checksum does not match");
				ps->st = PS_DONE;
			}
			break;
		}
		case PS_DONE:
			return ps_fail(ps, -EIO, "bytes after the pack's checksum");
		case PS_FAILED:
			return ps->err;
		}
	}
	if (r < 0)
		return r;
	if (hashed && p > hashed) {
		r = hash_update(ps->pack_hash, hashed, (size_t)(p - hashed));
		if (r < 0)
			return ps_fail(ps, r, "cannot hash the pack");
	}
	return 0;
}

int packstream_finish(struct packstream *ps)
{
	if (ps->st == PS_FAILED)
		return ps->err;
	if (ps->st != PS_DONE)
		return ps_fail(ps, -EIO, "the pack ends early (%u of %u objects)",
		               (unsigned)ps->nobj, ps->count);
	return 0;
}
