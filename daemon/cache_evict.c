/* The cache layer's bookkeeping: recent errors for status, access times batched into the
 * index, the size limit and LRU eviction (see cache_int.h, docs/cache.md "The size limit
 * and eviction"). */
#include "cache_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "gl.h"
#include "reef/hash.h"
#include "reef/idx.h"
#include "reef/jsonx.h"
#include "reef/lfs.h"
#include "reef/log.h"
#include "reef/util.h"
#include "stream.h"

/* --- errors, access times, limit and eviction --- */

static void cache_err_put(struct cache *c, const char *msg, bool log)
{
	struct cache_err *e;

	pthread_mutex_lock(&c->lock);
	e = &c->errs[c->errs_next];
	snprintf(e->msg, sizeof(e->msg), "%s", msg);
	e->at = cache_now_ms();
	c->errs_next = (c->errs_next + 1) % CACHE_ERRORS;
	if (c->nerrs < CACHE_ERRORS)
		c->nerrs++;
	if (log)
		log_error("cache: %s", e->msg);
	pthread_mutex_unlock(&c->lock);
}

void cache_err_note(struct cache *c, const char *fmt, ...)
{
	char msg[sizeof(((struct cache_err *)0)->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cache_err_put(c, msg, true);
}

/* Every request that failed (gl_set_err_hook): http.c has logged it already. */
void cache_err_hook(void *arg, const char *msg)
{
	cache_err_put(arg, msg, false);
}

enum idx_obj_kind cache_idx_kind(enum odb_kind kind)
{
	return kind == ODB_KIND_LFS ? IDX_OBJ_LFS : IDX_OBJ_BLOB;
}

void cache_touch_flush(struct cache *c)
{
	struct idx_obj batch[CACHE_TOUCH_MAX];
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->nputs;
	memcpy(batch, c->puts, n * sizeof(batch[0]));
	c->nputs = 0;
	pthread_mutex_unlock(&c->lock);
	/* records first: an access to a record still pending then raises its time */
	if (n)
		idx_obj_put_many(c->idx, batch, n);
	pthread_mutex_lock(&c->lock);
	n = c->ntouch;
	memcpy(batch, c->touch, n * sizeof(batch[0]));
	c->ntouch = 0;
	pthread_mutex_unlock(&c->lock);
	if (n)
		idx_obj_touch(c->idx, batch, n);
}

/* Queues the record of an object just stored (size on disk, accessed now). */
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size)
{
	bool full;

	pthread_mutex_lock(&c->lock);
	if (c->nputs == CACHE_TOUCH_MAX) {
		pthread_mutex_unlock(&c->lock);
		cache_touch_flush(c);
		pthread_mutex_lock(&c->lock);
	}
	if (c->nputs < CACHE_TOUCH_MAX) {
		struct idx_obj *t = &c->puts[c->nputs++];

		t->kind = cache_idx_kind(kind);
		snprintf(t->oid, sizeof(t->oid), "%s", oid);
		t->atime = cache_now_ms();
		t->size = size;
		full = false;
	} else {
		full = true; /* filled again meanwhile: write this one alone */
	}
	pthread_mutex_unlock(&c->lock);
	if (full)
		idx_obj_put(c->idx, cache_idx_kind(kind), oid, size, cache_now_ms());
}

/* Records an access for LRU; written to the index in batches, not per read. */
void cache_touch(struct cache *c, enum odb_kind kind, const char *oid)
{
	bool full;

	pthread_mutex_lock(&c->lock);
	if (c->ntouch < CACHE_TOUCH_MAX) {
		struct idx_obj *t = &c->touch[c->ntouch++];

		t->kind = cache_idx_kind(kind);
		snprintf(t->oid, sizeof(t->oid), "%s", oid);
		t->atime = cache_now_ms();
		t->size = 0;
	}
	full = c->ntouch == CACHE_TOUCH_MAX;
	pthread_mutex_unlock(&c->lock);
	if (full)
		cache_touch_flush(c);
}

unsigned cache_live_hash(enum odb_kind kind, const char *oid)
{
	unsigned h = (unsigned)kind * 31u;

	for (int i = 0; i < 8 && oid[i]; i++)
		h = h * 131u + (unsigned char)oid[i];
	return h % CACHE_LIVE_BUCKETS;
}

/* lock held */
struct cache_live *cache_live_find(struct cache *c, enum odb_kind kind, const char *oid)
{
	for (struct cache_live *l = c->live[cache_live_hash(kind, oid)]; l; l = l->next)
		if (l->kind == kind && strcmp(l->oid, oid) == 0)
			return l;
	return NULL;
}

/* lock held */
struct cache_live *cache_live_get(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l = cache_live_find(c, kind, oid);
	unsigned h;

	if (l)
		return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->kind = kind;
	snprintf(l->oid, sizeof(l->oid), "%s", oid);
	h = cache_live_hash(kind, oid);
	l->next = c->live[h];
	c->live[h] = l;
	return l;
}

/* Drops the record when nobody has it open or in flight (lock held). */
void cache_live_settle(struct cache *c, struct cache_live *l)
{
	struct cache_live **pp;

	if (l->opens || l->s || l->starting)
		return;
	for (pp = &c->live[cache_live_hash(l->kind, l->oid)]; *pp && *pp != l; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = l->next;
	free(l);
}

bool cache_is_live(struct cache *c, enum odb_kind kind, const char *oid)
{
	bool live;

	pthread_mutex_lock(&c->lock);
	live = cache_live_find(c, kind, oid) != NULL;
	pthread_mutex_unlock(&c->lock);
	return live;
}

/* Waits for a download of this object in progress; -ENOENT when there is none. */
int cache_stream_wait(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l;
	struct stream *s = NULL;
	int r;

	pthread_mutex_lock(&c->lock);
	l = cache_live_find(c, kind, oid);
	if (l && l->s) {
		s = l->s;
		stream_ref(s);
	}
	pthread_mutex_unlock(&c->lock);
	if (!s)
		return -ENOENT;
	r = stream_wait(s);
	stream_unref(s);
	return r;
}

int cache_limit_parse(const char *s, uint64_t *out)
{
	uint64_t v;
	int r = size_parse(s, &v);

	if (r < 0)
		return r;
	if (v == 0)
		return -EINVAL;
	*out = v;
	return 0;
}

int cache_set_limit(struct cache *c, uint64_t limit)
{
	if (limit == 0) {
		struct statvfs sv;
		uint64_t free_bytes = 0;

		if (statvfs(c->dir, &sv) == 0)
			free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
		limit = free_bytes / 100 * CACHE_LIMIT_DEFAULT_PCT;
		if (limit < CACHE_LIMIT_MIN)
			limit = CACHE_LIMIT_MIN;
	}
	__atomic_store_n(&c->limit, limit, __ATOMIC_RELAXED);
	if (c->maint_started) /* at cache_new the maintenance thread evicts */
		cache_evict(c, 0);
	return 0;
}

/* Bytes that downloads in progress will store: counted against the limit before they
 * arrive. A verified one is being published and is counted by the store from then on
 * (briefly by neither: the limit may be passed by what is in flight, never more). */
uint64_t cache_reserved(struct cache *c)
{
	uint64_t sum = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t b = 0; b < CACHE_LIVE_BUCKETS; b++)
		for (struct cache_live *l = c->live[b]; l; l = l->next)
			if (l->s && l->reserve && stream_state(l->s) == 0)
				sum += l->reserve;
	pthread_mutex_unlock(&c->lock);
	return sum;
}

/* Evicts least recently used objects nobody has open until what is stored, what is
 * being downloaded to keep and need fit under the limit (to 95 % of it, so that a
 * sequence of misses does not evict at every one). 0 when they fit, -ENOSPC when what
 * is open or in flight alone is too much. */
int cache_evict(struct cache *c, uint64_t need)
{
	uint64_t limit = __atomic_load_n(&c->limit, __ATOMIC_RELAXED), bytes = 0, objects = 0;
	uint64_t reserved, target;
	struct idx_obj *list = NULL;
	size_t n = 0, dropped = 0;
	int r = 0;

	pthread_mutex_lock(&c->evict_lock);
	odb_usage(c->odb, &bytes, &objects);
	reserved = cache_reserved(c) + (c->pinned ? c->pinned(c->pinned_arg) : 0);
	if (bytes + reserved + need <= limit)
		goto out;
	cache_touch_flush(c);
	target = limit / 100 * 95;
	target = target > reserved + need ? target - reserved - need : 0;
	r = idx_obj_list(c->idx, &list, &n);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n && bytes > target; i++) {
		enum odb_kind kind = list[i].kind == IDX_OBJ_LFS ? ODB_KIND_LFS : ODB_KIND_BLOB;
		uint64_t freed = 0;

		if (cache_is_live(c, kind, list[i].oid))
			continue;
		odb_remove(c->odb, kind, list[i].oid, &freed);
		idx_obj_del(c->idx, list[i].kind, list[i].oid);
		bytes = bytes > freed ? bytes - freed : 0;
		dropped++;
	}
	odb_usage(c->odb, &bytes, &objects);
	if (dropped)
		log_info("cache: evicted %zu objects, %" PRIu64 " bytes stored (limit %" PRIu64 ")",
		         dropped, bytes, limit);
	r = bytes + reserved + need <= limit ? 0 : -ENOSPC;
out:
	pthread_mutex_unlock(&c->evict_lock);
	free(list);
	return r;
}

void cache_set_pinned(struct cache *c, uint64_t (*fn)(void *arg), void *arg)
{
	c->pinned_arg = arg;
	c->pinned = fn;
}

int cache_make_room(struct cache *c, uint64_t need)
{
	return cache_evict(c, need);
}
