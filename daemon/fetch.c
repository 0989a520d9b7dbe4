/* Bulk fetches: see daemon/fetch.h and docs/cache.md ("Bulk fetches"). */
#include "fetch.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reef/log.h"
#include "reef/pack.h"
#include "reef/packstream.h"
#include "reef/util.h"

#define FETCH_TREE_BYTES ((size_t)64 << 20)   /* one tree object's content */
#define FETCH_OBJECT_MIN ((uint64_t)64 << 20) /* a batch's object may always be this big */
/* a batch's objects kept in memory as delta bases (beyond: read back from the store) */
#define FETCH_KEEP_BYTES ((uint64_t)4 << 20)

static int fetch_pack_data(void *arg, const void *d, size_t n)
{
	return pack_append(arg, d, n);
}

/* Ids already walked, in an open-addressing set (trees shared by several directories
 * are stored once). */
struct fetch_set {
	char (*slot)[41];
	size_t cap, n;
};

static size_t fetch_set_hash(const char *oid)
{
	size_t h = 0;

	for (int i = 0; i < 16; i++)
		h = h * 16 + (size_t)(oid[i] <= '9' ? oid[i] - '0' : oid[i] - 'a' + 10);
	return h;
}

/* 1 added, 0 already there, or -ENOMEM. */
static int fetch_set_add(struct fetch_set *s, const char *oid)
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct fetch_set ns = {.cap = s->cap ? s->cap * 2 : 1024};

		ns.slot = calloc(ns.cap, sizeof(*ns.slot));
		if (!ns.slot)
			return -ENOMEM;
		for (size_t k = 0; k < s->cap; k++)
			if (s->slot[k][0])
				fetch_set_add(&ns, s->slot[k]);
		free(s->slot);
		*s = ns;
	}
	for (i = fetch_set_hash(oid) & (s->cap - 1); s->slot[i][0]; i = (i + 1) & (s->cap - 1))
		if (memcmp(s->slot[i], oid, 40) == 0)
			return 0;
	memcpy(s->slot[i], oid, 41);
	s->n++;
	return 1;
}

/* Stores and indexes the tree oid from the pack, and queues its subtrees. */
static int fetch_tree_one(struct pack *p, struct odb *o, struct idx *x, const char *oid,
                          struct fetch_set *seen, char (**queue)[41], size_t *qn, size_t *qcap)
{
	struct tree_entry *e = NULL;
	enum pack_type type;
	void *data = NULL;
	size_t len, n = 0;
	int r;

	r = pack_read(p, oid, &type, &data, &len, FETCH_TREE_BYTES);
	if (r == -ENOENT) {
		log_warn("git fetch: the pack lacks tree %s", oid);
		return -EIO;
	}
	if (r < 0)
		return r;
	if (type != PACK_TREE) {
		r = -EIO;
		goto out;
	}
	r = pack_tree_parse(data, len, IDX_TREE_MAX, &e, &n);
	if (r == 0)
		r = odb_tree_put_raw(o, oid, data, len);
	if (r == 0) {
		r = idx_tree_put(x, oid, e, n);
		if (r < 0)
			log_warn("cache: cannot index tree %s: %s", oid, strerror(-r));
		r = 0;
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (e[i].mode != TREE_MODE_DIR)
			continue;
		r = fetch_set_add(seen, e[i].oid);
		if (r <= 0)
			continue;
		r = 0;
		if (seen->n > FETCH_TREES_MAX) {
			r = -EFBIG;
			break;
		}
		if (*qn == *qcap) {
			size_t ncap = *qcap ? *qcap * 2 : 256;
			char(*nq)[41] = realloc(*queue, ncap * sizeof(**queue));

			if (!nq) {
				r = -ENOMEM;
				break;
			}
			*queue = nq;
			*qcap = ncap;
		}
		memcpy((*queue)[(*qn)++], e[i].oid, 41);
	}
out:
	free(e);
	free(data);
	return r;
}

int fetch_commit_trees(struct gl *g, struct odb *o, struct idx *x, const char *project,
                       const char *commit, char tree_oid[41], size_t *ntrees)
{
	const char *wants[1] = {commit};
	struct fetch_set seen = {0};
	char(*queue)[41] = NULL;
	size_t qn = 0, qcap = 0, done = 0;
	struct pack *p = NULL;
	enum pack_type type;
	void *data = NULL;
	int64_t when;
	size_t len;
	int r;

	*ntrees = 0;
	r = pack_new(&p, odb_tmp_dir(o), FETCH_TREES_PACK_MAX);
	if (r < 0)
		return r;
	r = gl_git_fetch(g, project, wants, 1, true, FETCH_TREES_PACK_MAX + (1 << 20),
	                 fetch_pack_data, p);
	if (r == 0)
		r = pack_commit(p);
	if (r < 0)
		goto out;
	r = pack_read(p, commit, &type, &data, &len, 1 << 20);
	if (r == 0 && type != PACK_COMMIT)
		r = -EIO;
	if (r == 0)
		r = pack_commit_tree(data, len, tree_oid);
	if (r == 0 && pack_commit_time(data, len, &when) == 0)
		idx_commit_time_put(x, commit, when); /* what the revision shows as mtime */
	if (r < 0) {
		log_warn("git fetch of %.12s from %s: no usable commit in the pack", commit,
		         project);
		r = -EIO;
		goto out;
	}
	r = fetch_set_add(&seen, tree_oid);
	if (r < 0)
		goto out;
	r = fetch_tree_one(p, o, x, tree_oid, &seen, &queue, &qn, &qcap);
	done = 1;
	while (r == 0 && qn) {
		char oid[41];

		memcpy(oid, queue[--qn], 41);
		r = fetch_tree_one(p, o, x, oid, &seen, &queue, &qn, &qcap);
		done++;
	}
	if (r == 0) {
		r = idx_commit_put(x, commit, tree_oid);
		if (r < 0)
			log_warn("cache: cannot index commit %s: %s", commit, strerror(-r));
		r = 0;
		*ntrees = done;
	}
out:
	free(queue);
	free(seen.slot);
	free(data);
	pack_free(p);
	return r;
}

static int fetch_oid_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A blob batch parsed as its pack streams in (fs/packstream.c): each wanted blob is
 * stored the moment it is complete and verified, and announced to the caller then. */
struct fetch_batch {
	struct odb *o;
	const char *project;
	const char **oids; /* sorted, unique */
	size_t n;
	unsigned char *done; /* per oid: stored (a pack could carry an object twice) */
	struct idx_blob_rec *recs;
	size_t nrecs;
	struct idx *x;
	void (*stored)(void *arg, const char *oid, uint64_t size);
	void *arg;
	int count;
	int fd; /* the big blob being streamed, into tmp */
	char tmp[4096];
	uint64_t size;
	bool want; /* the big blob is a wanted blob */
};

/* The index of oid among the wanted, or -1. */
static ssize_t fetch_wanted(const struct fetch_batch *f, const char *oid)
{
	const char **hit = bsearch(&oid, f->oids, f->n, sizeof(*f->oids), fetch_oid_cmp);

	return hit ? hit - f->oids : -1;
}

/* One wanted blob is in the store: record and announce it. */
static void fetch_blob_stored(struct fetch_batch *f, size_t i, uint64_t size)
{
	f->done[i] = 1;
	if (f->recs)
		f->recs[f->nrecs++] = (struct idx_blob_rec){.oid = f->oids[i], .size = size};
	else
		idx_size_put(f->x, f->oids[i], size);
	if (f->stored)
		f->stored(f->arg, f->oids[i], size);
	f->count++;
}

static int fetch_batch_object(void *arg, enum pack_type type, const char *oid, const void *data,
                              size_t len)
{
	struct fetch_batch *f = arg;
	ssize_t i = fetch_wanted(f, oid);
	int r = 0;

	if (i < 0 || f->done[i])
		return 0; /* not asked for (perhaps a delta base): nothing to store */
	if (type != PACK_BLOB) {
		log_warn("git fetch: %s from %s is not a blob", oid, f->project);
		return 0;
	}
	/* packstream computed the id; a blob stored meanwhile stays as it is */
	r = odb_blob_put_hashed(f->o, oid, data, len);
	if (r < 0)
		log_warn("git fetch: blob %s from the pack not stored: %s", oid, strerror(-r));
	else
		fetch_blob_stored(f, (size_t)i, len);
	return 0;
}

/* A large blob inflates straight into a temp file of the store, published once its id
 * is known. */
static int fetch_big_begin(void *arg, enum pack_type type, uint64_t size, void **sink)
{
	struct fetch_batch *f = arg;
	int r;

	f->want = type == PACK_BLOB;
	f->size = size;
	r = odb_tmp_new(f->o, f->tmp, sizeof(f->tmp), &f->fd);
	if (r < 0)
		return r;
	*sink = f;
	return 0;
}

static int fetch_big_write(void *sink, const void *data, size_t len)
{
	struct fetch_batch *f = sink;

	return fd_write_all(f->fd, data, len);
}

static int fetch_big_end(void *sink, const char *oid)
{
	struct fetch_batch *f = sink;
	ssize_t i = oid ? fetch_wanted(f, oid) : -1;
	int r = 0;

	if (i >= 0 && !f->done[i] && f->want) {
		if (!odb_blob_has(f->o, oid))
			r = odb_publish(f->o, ODB_KIND_BLOB, oid, f->fd, f->tmp, f->size);
		if (r < 0)
			log_warn("git fetch: blob %s from the pack not stored: %s", oid,
			         strerror(-r));
		else
			fetch_blob_stored(f, (size_t)i, f->size);
	}
	close(f->fd);
	unlink(f->tmp); /* gone already when published */
	f->fd = -1;
	return 0;
}

/* A delta's base the parser let go of: the blob as stored (verified when opened). */
static int fetch_base(void *arg, const char *oid, enum pack_type *type, void **data, size_t *len,
                      size_t max)
{
	struct fetch_batch *f = arg;
	struct odb_blob *b = NULL;
	uint64_t size, off = 0;
	char *buf;
	int r = odb_blob_open(f->o, oid, &b);

	if (r < 0)
		return r;
	size = odb_blob_size(b);
	if (size > max) {
		odb_blob_close(b);
		return -EFBIG;
	}
	buf = malloc(size ? (size_t)size : 1);
	if (!buf) {
		odb_blob_close(b);
		return -ENOMEM;
	}
	while (off < size) {
		ssize_t got = odb_blob_pread(b, buf + off, (size_t)(size - off), off);

		if (got <= 0) {
			odb_blob_close(b);
			free(buf);
			return got < 0 ? (int)got : -EIO;
		}
		off += (uint64_t)got;
	}
	odb_blob_close(b);
	*type = PACK_BLOB;
	*data = buf;
	*len = (size_t)size;
	return 0;
}

static int fetch_stream_data(void *arg, const void *d, size_t n)
{
	return packstream_feed(arg, d, n);
}

int fetch_blobs(struct gl *g, struct odb *o, struct idx *x, const char *project,
                const char *const *oids, size_t n, uint64_t max_bytes,
                void (*stored)(void *arg, const char *oid, uint64_t size), void *arg)
{
	struct fetch_batch f = {
	    .o = o, .x = x, .project = project, .stored = stored, .arg = arg, .fd = -1};
	struct packstream_cb cb = {.object = fetch_batch_object,
	                           .big = ODB_RAW_THRESHOLD,
	                           .big_begin = fetch_big_begin,
	                           .big_write = fetch_big_write,
	                           .big_end = fetch_big_end,
	                           .base = fetch_base,
	                           .arg = &f};
	struct packstream_limits lim = {
	    .max_bytes = max_bytes,
	    .max_objects = 2 * FETCH_BLOBS_MAX,
	    /* a blob compresses well beyond the pack's size, but not without bound */
	    .max_object = max_bytes * 4 > FETCH_OBJECT_MIN ? max_bytes * 4 : FETCH_OBJECT_MIN,
	    .keep_bytes = FETCH_KEEP_BYTES,
	};
	struct packstream *ps = NULL;
	const char **u;
	size_t k = 0;
	int r;

	if (n == 0)
		return 0;
	if (n > FETCH_BLOBS_MAX)
		return -EINVAL;
	/* one want per blob, however many names share it */
	u = malloc(n * sizeof(*u));
	f.done = calloc(n, 1);
	if (!u || !f.done) {
		free(u);
		free(f.done);
		return -ENOMEM;
	}
	memcpy(u, oids, n * sizeof(*u));
	qsort(u, n, sizeof(*u), fetch_oid_cmp);
	for (size_t i = 0; i < n; i++)
		if (!k || strcmp(u[k - 1], u[i]) != 0)
			u[k++] = u[i];
	f.oids = u;
	f.n = k;
	f.recs = calloc(k, sizeof(*f.recs)); /* without it, a transaction a blob */
	r = packstream_new(&ps, &cb, &lim);
	if (r == 0)
		r = gl_git_fetch(g, project, u, k, false, max_bytes + (1 << 20), fetch_stream_data,
		                 ps);
	if (r == 0)
		r = packstream_finish(ps);
	if (r < 0 && ps && packstream_error(ps)[0])
		log_warn("git fetch of %zu blobs from %s: %s (%d blobs stored before)", k, project,
		         packstream_error(ps), f.count);
	if (f.nrecs)
		idx_blobs_put(x, f.recs, f.nrecs); /* one index transaction for the batch */
	packstream_free(ps); /* a big blob cut short: its temp file goes here */
	free(f.recs);
	free(f.done);
	free(u);
	return r < 0 ? r : f.count;
}
