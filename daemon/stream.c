/* A download readable while it arrives: see daemon/stream.h and docs/cache.md.
 *
 * State lives under one mutex: the extents of the temp file that arrived (sorted,
 * merged), each fetcher's claim [cur, end) (the bytes it is about to write; no one else
 * writes there), the hash cursor. Bytes are written and read with pwrite/pread outside
 * the lock. A fetcher reaching the end of its claim (which a new fetcher may shorten by
 * taking the far part) picks the next byte that is neither present nor claimed. */
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "reef/hash.h"

#define STREAM_HASH_CHUNK ((size_t)1 << 20)
#define STREAM_ALIGN      ((uint64_t)1 << 16)
/* From this size on the content is hashed by a thread of its own, reading back from the
 * page cache, so that hashing (SHA-256 at about 1.4 GB/s here) overlaps receiving and
 * writing instead of adding to them on the fetcher's thread. */
#define STREAM_HASHER_MIN ((uint64_t)8 << 20)
/* Objects that large are also written in blocks of this size, aligned in the file: curl
 * hands over 16 KiB at a time, and a write per chunk costs a system call, the lock and a
 * wake-up each, and on ext4 the zeroing of the rest of each large folio it starts. It
 * stays small enough to be in the CPU cache when written out. Below STREAM_JUMP, so a
 * fetcher that takes over the far part of a claim never cuts into buffered bytes. */
#define STREAM_WBUF ((size_t)256 << 10)
/* ...and never held longer than this once the first of them arrived: on a slow link a
 * reader waiting for the start of a block gets it without waiting for the whole block. */
#define STREAM_WBUF_AGE_NS ((int64_t)20 * 1000 * 1000)
/* The hasher reads the file through a mapping of this much at a time: no copy out of the
 * page cache. */
#define STREAM_HASH_MAP ((size_t)4 << 20)

struct stream_ext {
	uint64_t a, b;
};

/* A reader waiting in stream_pread for [off, end): woken only when that range is there
 * (or the stream's state changed), not at every chunk that arrives elsewhere. */
struct stream_waiter {
	struct stream_waiter *next;
	pthread_cond_t cond;
	uint64_t off, end;
	bool woken;
};

struct stream_fetcher {
	struct stream *s;
	bool active;
	uint64_t cur, end;
	uint64_t skip; /* leading bytes to drop: a 200 (whole object) to a ranged request */
	char *wbuf;    /* large objects: bytes from cur not written yet (wlen of them) */
	size_t wlen;
	int64_t wsince; /* CLOCK_MONOTONIC ns when the first of them arrived */
};

struct stream {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_cond_t hcond; /* wakes the hasher thread */
	bool hasher_on;       /* the hasher thread runs */
	struct stream_waiter *waiters;
	unsigned refs;
	struct stream_opts o;
	char oid[65];
	struct stream_source src;
	int fd;
	char tmp[4096];
	bool tmp_live; /* tmp still names our file */
	uint64_t size;
	struct stream_ext *ext;
	size_t next, aext;
	struct hash_ctx *hash;
	uint64_t hashed;
	bool hashing, finishing, notified;
	bool settled; /* done() returned: the outcome is final and the cache knows it */
	int ranges;   /* -1 not known yet, 0 the source ignores ranges, 1 it honours them */
	struct stream_fetcher f[STREAM_FETCHERS];
	unsigned active;
	int state; /* 0 running, 1 verified, < 0 failed */
	uint64_t fetched;
	char reason[256];
};

static void stream_fail(struct stream *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Wakes everyone (lock held): the state changed, or a fetcher ended. */
static void stream_wake_all(struct stream *s)
{
	for (struct stream_waiter *w = s->waiters; w; w = w->next) {
		w->woken = true;
		pthread_cond_signal(&w->cond);
	}
	pthread_cond_broadcast(&s->cond);
	pthread_cond_broadcast(&s->hcond);
}

static uint64_t stream_present_end(const struct stream *s, uint64_t off);

/* Wakes the readers whose range has arrived (lock held). The last byte counts only once
 * verified, as in stream_pread. */
static void stream_wake_ready(struct stream *s)
{
	for (struct stream_waiter *w = s->waiters; w; w = w->next)
		if (!w->woken && stream_present_end(s, w->off) >= w->end &&
		    (w->end < s->size || s->state == 1)) {
			w->woken = true;
			pthread_cond_signal(&w->cond);
		}
}

/* Poisons the stream (lock held): every reader gets -EIO from now on; nothing stored. */
static void stream_fail(struct stream *s, const char *fmt, ...)
{
	va_list ap;

	if (s->state != 0)
		return;
	va_start(ap, fmt);
	vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
	va_end(ap);
	s->state = -EIO;
	if (s->tmp_live) {
		unlink(s->tmp);
		s->tmp_live = false;
	}
	stream_wake_all(s);
}

/* The end of the present extent holding off, or off when off has not arrived. */
static uint64_t stream_present_end(const struct stream *s, uint64_t off)
{
	for (size_t i = 0; i < s->next; i++) {
		if (s->ext[i].a > off)
			break;
		if (off < s->ext[i].b)
			return s->ext[i].b;
	}
	return off;
}

/* The start of the first extent after off, or the size. */
static uint64_t stream_next_extent(const struct stream *s, uint64_t off)
{
	for (size_t i = 0; i < s->next; i++)
		if (s->ext[i].a > off)
			return s->ext[i].a;
	return s->size;
}

static int stream_ext_add(struct stream *s, uint64_t a, uint64_t b)
{
	size_t i, j;

	for (i = 0; i < s->next && s->ext[i].b < a; i++)
		;
	if (i < s->next && s->ext[i].a <= b) {
		/* touches or overlaps extent i: merge with it and any it now reaches */
		if (a < s->ext[i].a)
			s->ext[i].a = a;
		if (b > s->ext[i].b)
			s->ext[i].b = b;
		for (j = i + 1; j < s->next && s->ext[j].a <= s->ext[i].b; j++)
			if (s->ext[j].b > s->ext[i].b)
				s->ext[i].b = s->ext[j].b;
		memmove(&s->ext[i + 1], &s->ext[j], (s->next - j) * sizeof(*s->ext));
		s->next -= j - i - 1;
		return 0;
	}
	if (s->next == s->aext) {
		size_t na = s->aext ? s->aext * 2 : 8;
		struct stream_ext *ne = realloc(s->ext, na * sizeof(*ne));

		if (!ne)
			return -ENOMEM;
		s->ext = ne;
		s->aext = na;
	}
	memmove(&s->ext[i + 1], &s->ext[i], (s->next - i) * sizeof(*s->ext));
	s->ext[i].a = a;
	s->ext[i].b = b;
	s->next++;
	return 0;
}

/* The first byte at or after from that no one has and no other fetcher claims, and
 * where that gap ends; wraps around to 0 once. false when there is none. */
static bool stream_pick(const struct stream *s, const struct stream_fetcher *self, uint64_t from,
                        uint64_t *gap, uint64_t *end)
{
	for (int pass = 0; pass < 2; pass++) {
		uint64_t g = pass ? 0 : from;

		while (g < s->size) {
			uint64_t pe = stream_present_end(s, g), e;
			bool claimed = false;

			if (pe > g) {
				g = pe;
				continue;
			}
			for (size_t j = 0; j < STREAM_FETCHERS; j++) {
				const struct stream_fetcher *o = &s->f[j];

				if (o != self && o->active && o->cur <= g && g < o->end) {
					g = o->end;
					claimed = true;
					break;
				}
			}
			if (claimed)
				continue;
			e = stream_next_extent(s, g);
			for (size_t j = 0; j < STREAM_FETCHERS; j++) {
				const struct stream_fetcher *o = &s->f[j];

				if (o != self && o->active && o->cur > g && o->cur < e)
					e = o->cur;
			}
			*gap = g;
			*end = e;
			return true;
		}
		if (from == 0)
			break;
	}
	return false;
}

/* Hashes the bytes that arrived after the hash cursor, in order, from the file (lock
 * held on entry and exit; released while reading). One thread at a time. */
static void stream_hash_catch_up(struct stream *s)
{
	char *buf = NULL;

	if (s->hashing)
		return;
	s->hashing = true;
	while (s->state == 0) {
		uint64_t from = s->hashed, to = stream_present_end(s, from);
		uint64_t base = from & ~(uint64_t)(STREAM_ALIGN - 1);
		size_t n, lead = (size_t)(from - base);
		void *map;
		ssize_t got;
		int r;

		if (to <= from)
			break;
		pthread_mutex_unlock(&s->lock);
		n = to - from < STREAM_HASH_MAP ? (size_t)(to - from) : STREAM_HASH_MAP;
		/* the bytes are in the page cache (just written): map them rather than copy */
		map =
		    mmap(NULL, lead + n, PROT_READ, MAP_SHARED | MAP_POPULATE, s->fd, (off_t)base);
		if (map != MAP_FAILED) {
			r = hash_update(s->hash, (const char *)map + lead, n);
			munmap(map, lead + n);
		} else {
			if (n > STREAM_HASH_CHUNK)
				n = STREAM_HASH_CHUNK;
			if (!buf && !(buf = malloc(STREAM_HASH_CHUNK))) {
				r = -ENOMEM;
			} else {
				got = pread(s->fd, buf, n, (off_t)from);
				r = got == (ssize_t)n ? hash_update(s->hash, buf, n) : -EIO;
			}
		}
		pthread_mutex_lock(&s->lock);
		if (r < 0) {
			stream_fail(s, "cannot read back the temp file: %s", strerror(-r));
			break;
		}
		s->hashed += n;
	}
	s->hashing = false;
	free(buf);
}

static int stream_sink_begin(void *arg, bool partial, uint64_t first, int64_t total)
{
	struct stream_fetcher *f = arg;
	struct stream *s = f->s;
	int r = 0;

	pthread_mutex_lock(&s->lock);
	f->skip = 0;
	if (total >= 0 && (uint64_t)total != s->size) {
		stream_fail(s, "the server announces %" PRId64 " bytes, expected %" PRIu64, total,
		            s->size);
		r = -EIO;
	} else if (partial && first == f->cur) {
		s->ranges = 1;
	} else if (!partial && first == 0) {
		/* the whole object from its start: drop what lies before our claim */
		if (s->ranges < 0 || f->cur > 0)
			s->ranges = 0;
		f->skip = f->cur;
	} else {
		stream_fail(s, "the server sent a range from %" PRIu64 " for %" PRIu64, first,
		            f->cur);
		r = -EIO;
	}
	/* whether the source honours ranges is known now: a reader waiting far ahead may
	 * start a fetcher of its own (stream_jump) */
	stream_wake_all(s);
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int stream_pwrite(struct stream *s, const char *p, size_t n, uint64_t off)
{
	bool retried = false;

	while (n) {
		ssize_t w = pwrite(s->fd, p, n, (off_t)off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			/* the cache's own files fill the disk: evict, then try once more */
			if (errno == ENOSPC && !retried && s->o.make_room &&
			    s->o.make_room(s->o.arg, n) == 0) {
				retried = true;
				continue;
			}
			return -errno;
		}
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}

/* Writes bytes at the fetcher's cursor, within its claim, and makes them readable. */
static int stream_put(struct stream_fetcher *f, const char *p, size_t len)
{
	struct stream *s = f->s;

	while (len) {
		uint64_t off;
		size_t n;
		int r;

		pthread_mutex_lock(&s->lock);
		if (s->state != 0) {
			pthread_mutex_unlock(&s->lock);
			return -ECANCELED;
		}
		if (f->cur >= f->end) {
			r = -ECANCELED;
			if (f->end >= s->size) {
				stream_fail(s, "the server sends more than %" PRIu64 " bytes",
				            s->size);
				r = -EIO;
			}
			pthread_mutex_unlock(&s->lock);
			return r;
		}
		off = f->cur;
		n = f->end - off < len ? (size_t)(f->end - off) : len;
		pthread_mutex_unlock(&s->lock);
		r = stream_pwrite(s, p, n, off);
		pthread_mutex_lock(&s->lock);
		if (r == 0)
			r = stream_ext_add(s, off, off + n);
		if (r < 0) {
			stream_fail(s, "cannot write the temp file: %s", strerror(-r));
			pthread_mutex_unlock(&s->lock);
			return -EIO;
		}
		f->cur += n;
		s->fetched += n;
		stream_wake_ready(s);
		if (s->hasher_on) {
			pthread_cond_signal(&s->hcond);
		} else if (!s->hashing && s->hashed == off) {
			/* the sequential case: hash the bytes in hand, no read back, outside the
			 * lock (hashing excludes other hashers) so readers are not held up */
			s->hashing = true;
			pthread_mutex_unlock(&s->lock);
			r = hash_update(s->hash, p, n);
			pthread_mutex_lock(&s->lock);
			s->hashing = false;
			if (r < 0)
				stream_fail(s, "hashing failed");
			s->hashed += n;
		}
		if (!s->hasher_on && stream_present_end(s, s->hashed) > s->hashed)
			stream_hash_catch_up(s);
		pthread_mutex_unlock(&s->lock);
		p += n;
		len -= n;
	}
	return 0;
}

static int64_t stream_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int stream_flush(struct stream_fetcher *f)
{
	int r = f->wlen ? stream_put(f, f->wbuf, f->wlen) : 0;

	f->wlen = 0;
	return r;
}

static int stream_sink_data(void *arg, const void *data, size_t len)
{
	struct stream_fetcher *f = arg;
	const char *p = data;

	if (f->skip) {
		size_t drop = len < f->skip ? len : (size_t)f->skip;

		f->skip -= drop;
		p += drop;
		len -= drop;
	}
	if (!f->wbuf)
		return stream_put(f, p, len);
	while (len) {
		/* up to the next block boundary after the cursor */
		size_t lim = STREAM_WBUF - (size_t)(f->cur % STREAM_WBUF);
		size_t k = lim - f->wlen < len ? lim - f->wlen : len;
		int64_t now = stream_now_ns();
		int r;

		if (f->wlen == 0)
			f->wsince = now;
		memcpy(f->wbuf + f->wlen, p, k);
		f->wlen += k;
		p += k;
		len -= k;
		if ((f->wlen == lim || now - f->wsince >= STREAM_WBUF_AGE_NS) &&
		    (r = stream_flush(f)) < 0)
			return r;
	}
	return 0;
}

/* Verifies the complete content and stores it (lock held; released meanwhile). */
static void stream_finish(struct stream *s)
{
	uint8_t bin[HASH_SHA256_LEN];
	char hex[65];
	int r;

	s->finishing = true;
	/* every byte is here: the hasher thread gets to the end, or stops at a failure */
	while (s->hasher_on && s->state == 0 && s->hashed < s->size)
		pthread_cond_wait(&s->cond, &s->lock);
	stream_hash_catch_up(s);
	if (s->state != 0)
		return;
	if (s->hashed != s->size) {
		stream_fail(s, "only %" PRIu64 " of %" PRIu64 " bytes hashed", s->hashed, s->size);
		return;
	}
	pthread_mutex_unlock(&s->lock);
	r = hash_final(s->hash, bin);
	if (r == 0)
		hash_hex(hex, bin, s->o.kind == ODB_KIND_LFS ? HASH_SHA256_LEN : HASH_SHA1_LEN);
	pthread_mutex_lock(&s->lock);
	if (r < 0 || strcmp(hex, s->oid) != 0) {
		stream_fail(s, "content does not match its id (got %.16s)", r < 0 ? "?" : hex);
		return;
	}
	/* readers go on while it is stored: no fetcher can fail it any more */
	s->state = 1;
	stream_wake_all(s);
	if (s->tmp_live) {
		s->tmp_live = false;
		pthread_mutex_unlock(&s->lock);
		r = odb_publish(s->o.odb, s->o.kind, s->oid, s->fd, s->tmp, s->size);
		if (r < 0)
			unlink(s->tmp);
		pthread_mutex_lock(&s->lock);
		if (r < 0)
			snprintf(s->reason, sizeof(s->reason), "verified but not stored: %s",
			         strerror(-r));
	}
}

static void *stream_fetch_main(void *arg)
{
	struct stream_fetcher *f = arg;
	struct stream *s = f->s;
	const struct gl_stream_sink sink = {stream_sink_begin, stream_sink_data, f};
	uint64_t g, e;
	bool notify = false;
	int result = 0, fr;

	pthread_mutex_lock(&s->lock);
	while (s->state == 0) {
		uint64_t off = f->cur;
		int r;

		pthread_mutex_unlock(&s->lock);
		r = s->src.fetch(s->src.arg, off, &sink);
		/* what arrived is written (it is hashed like the rest, whatever ended the
		 * transfer) */
		fr = stream_flush(f);
		if (fr < 0 && r == 0)
			r = fr;
		pthread_mutex_lock(&s->lock);
		if (s->state != 0)
			break;
		if (r == -ECANCELED || (r == 0 && f->cur >= f->end)) {
			if (!stream_pick(s, f, f->cur, &g, &e))
				break;
			f->cur = g;
			f->end = e;
			continue;
		}
		if (r == 0)
			stream_fail(s, "the transfer ended at %" PRIu64 " of %" PRIu64 " bytes",
			            f->cur, s->size);
		else
			stream_fail(s, "the transfer failed at %" PRIu64 " of %" PRIu64 ": %s",
			            f->cur, s->size, strerror(-r));
	}
	f->active = false;
	s->active--;
	free(f->wbuf);
	f->wbuf = NULL;
	if (s->state == 0 && !s->finishing && stream_present_end(s, 0) >= s->size)
		stream_finish(s);
	else if (s->state == 0 && s->active == 0 && !s->finishing)
		stream_fail(s, "no fetcher left with bytes missing");
	if (s->state != 0 && !s->notified) {
		s->notified = true;
		notify = true;
		result = s->state < 0 ? s->state : 0;
	}
	stream_wake_all(s); /* a waiter may now start a fetcher of its own */
	pthread_mutex_unlock(&s->lock);
	if (notify) {
		if (s->o.done)
			s->o.done(s->o.arg, s, result,
			          result < 0 || s->reason[0] ? s->reason : NULL);
		pthread_mutex_lock(&s->lock);
		s->settled = true;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->lock);
	}
	stream_unref(s);
	return NULL;
}

static void *stream_hasher_main(void *arg)
{
	struct stream *s = arg;

	pthread_mutex_lock(&s->lock);
	while (s->state == 0 && s->hashed < s->size) {
		if (!s->hashing && stream_present_end(s, s->hashed) > s->hashed) {
			stream_hash_catch_up(s);
			pthread_cond_broadcast(&s->cond); /* stream_finish may wait for it */
			continue;
		}
		pthread_cond_wait(&s->hcond, &s->lock);
	}
	s->hasher_on = false;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	stream_unref(s);
	return NULL;
}

/* Starts the hasher thread (lock held); without it the fetchers hash inline. */
static void stream_hasher_spawn(struct stream *s)
{
	pthread_attr_t attr;
	pthread_t t;

	s->refs++;
	s->hasher_on = true;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, stream_hasher_main, s) != 0) {
		s->refs--;
		s->hasher_on = false;
	}
	pthread_attr_destroy(&attr);
}

/* Starts a fetcher on [cur, end) (lock held). */
static int stream_spawn(struct stream *s, uint64_t cur, uint64_t end)
{
	struct stream_fetcher *f = NULL;
	pthread_attr_t attr;
	pthread_t t;
	int r;

	for (size_t i = 0; i < STREAM_FETCHERS; i++)
		if (!s->f[i].active) {
			f = &s->f[i];
			break;
		}
	if (!f)
		return -EAGAIN;
	f->s = s;
	f->cur = cur;
	f->end = end;
	f->skip = 0;
	f->wlen = 0;
	f->wbuf = s->size >= STREAM_HASHER_MIN ? malloc(STREAM_WBUF) : NULL; /* NULL: unbuffered */
	f->active = true;
	s->active++;
	s->refs++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &attr, stream_fetch_main, f);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		free(f->wbuf);
		f->wbuf = NULL;
		f->active = false;
		s->active--;
		s->refs--;
	}
	return r;
}

int stream_new(struct stream **out, const struct stream_opts *o, const struct stream_source *src)
{
	struct stream *s;
	size_t hexlen = o->kind == ODB_KIND_LFS ? HASH_SHA256_HEX : HASH_SHA1_HEX;
	int r;

	*out = NULL;
	if (!o->odb || !o->oid || !hash_is_hex(o->oid, hexlen) || !src || !src->fetch ||
	    o->size > ODB_BLOB_MAX)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	pthread_cond_init(&s->hcond, NULL);
	s->refs = 1;
	s->o = *o;
	memcpy(s->oid, o->oid, hexlen + 1);
	s->o.oid = s->oid;
	s->src = *src;
	s->size = o->size;
	s->ranges = -1;
	s->fd = -1;
	r = o->kind == ODB_KIND_LFS ? hash_new(&s->hash, HASH_SHA256)
	                            : hash_git_begin(&s->hash, "blob", o->size);
	if (r == 0)
		r = odb_tmp_new(o->odb, s->tmp, sizeof(s->tmp), &s->fd);
	if (r < 0)
		goto fail;
	s->tmp_live = o->keep;
	if (!o->keep)
		unlink(s->tmp); /* streams through: gone with the last descriptor */
	if (s->size == 0) {
		/* nothing to fetch: verify the empty content at once */
		pthread_mutex_lock(&s->lock);
		stream_finish(s);
		s->notified = true;
		r = s->state < 0 ? s->state : 0;
		pthread_mutex_unlock(&s->lock);
		if (o->done)
			o->done(o->arg, s, r, r < 0 ? s->reason : NULL);
		s->settled = true;
		*out = s;
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	r = stream_spawn(s, 0, s->size);
	if (r == 0 && s->size >= STREAM_HASHER_MIN)
		stream_hasher_spawn(s);
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	s->src.free = NULL; /* the caller keeps its source on failure */
	stream_unref(s);
	return r;
}

void stream_ref(struct stream *s)
{
	pthread_mutex_lock(&s->lock);
	s->refs++;
	pthread_mutex_unlock(&s->lock);
}

void stream_unref(struct stream *s)
{
	unsigned left;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	left = --s->refs;
	pthread_mutex_unlock(&s->lock);
	if (left)
		return;
	if (s->tmp_live)
		unlink(s->tmp);
	if (s->fd >= 0)
		close(s->fd);
	hash_free(s->hash);
	if (s->src.free)
		s->src.free(s->src.arg);
	free(s->ext);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->hcond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

uint64_t stream_size(const struct stream *s)
{
	return s->size;
}

/* A reader needs byte m: give it a fetcher of its own when the one that will bring m is
 * far behind (and the source honours ranges), or when no one will (lock held). */
static void stream_jump(struct stream *s, uint64_t m)
{
	struct stream_fetcher *owner = NULL;
	uint64_t x, g, e;

	if (s->active >= STREAM_FETCHERS || s->finishing)
		return;
	for (size_t j = 0; j < STREAM_FETCHERS; j++)
		if (s->f[j].active && s->f[j].cur <= m && m < s->f[j].end) {
			owner = &s->f[j];
			break;
		}
	if (owner) {
		if (s->ranges != 1 || m - owner->cur <= STREAM_JUMP)
			return;
		x = m & ~(STREAM_ALIGN - 1);
		if (x < owner->cur + STREAM_JUMP)
			x = m;
		if (stream_spawn(s, x, owner->end) == 0)
			owner->end = x;
		return;
	}
	if (stream_pick(s, NULL, m, &g, &e) && g == m)
		stream_spawn(s, g, e);
}

/* Waits until [off, off + n) has arrived, the last byte only once verified (a reader
 * that reads to the end — cat, cp, a checksum — never completes on wrong content): 0, or
 * the stream's negative errno. n is already clipped to the size. */
static int stream_wait_for(struct stream *s, uint64_t off, size_t n)
{
	struct stream_waiter w = {0};
	bool queued = false;
	int err = 0;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		uint64_t pe;

		if (s->state < 0) {
			err = s->state;
			break;
		}
		pe = stream_present_end(s, off);
		if (pe >= off + n && (off + n < s->size || s->state == 1))
			break;
		if (pe < off + n)
			stream_jump(s, pe);
		if (!queued) {
			pthread_cond_init(&w.cond, NULL);
			w.off = off;
			w.end = off + n;
			w.next = s->waiters;
			s->waiters = &w;
			queued = true;
		}
		w.woken = false;
		while (!w.woken)
			pthread_cond_wait(&w.cond, &s->lock);
	}
	if (queued) {
		struct stream_waiter **pp = &s->waiters;

		while (*pp != &w)
			pp = &(*pp)->next;
		*pp = w.next;
	}
	pthread_mutex_unlock(&s->lock);
	if (queued)
		pthread_cond_destroy(&w.cond);
	return err;
}

ssize_t stream_pread(struct stream *s, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	int r;

	if (off >= s->size)
		return 0;
	if (n > s->size - off)
		n = (size_t)(s->size - off);
	r = stream_wait_for(s, off, n);
	if (r < 0)
		return r;
	while (done < n) {
		ssize_t got = pread(s->fd, (char *)buf + done, n - done, (off_t)(off + done));

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		done += (size_t)got;
	}
	return (ssize_t)done;
}

int stream_wait(struct stream *s)
{
	int r;

	pthread_mutex_lock(&s->lock);
	while (!s->settled)
		pthread_cond_wait(&s->cond, &s->lock);
	r = s->state < 0 ? s->state : 0;
	pthread_mutex_unlock(&s->lock);
	return r;
}

int stream_state(struct stream *s)
{
	int r;

	pthread_mutex_lock(&s->lock);
	r = s->state;
	pthread_mutex_unlock(&s->lock);
	return r;
}

int stream_fd(struct stream *s)
{
	return stream_state(s) == 1 ? s->fd : -1;
}

uint64_t stream_fetched(struct stream *s)
{
	uint64_t v;

	pthread_mutex_lock(&s->lock);
	v = s->fetched;
	pthread_mutex_unlock(&s->lock);
	return v;
}
