/* The cache's bulk paths: what costs one request per file over REST costs one request
 * per directory (or per commit) here. See cache_int.h and docs/cache.md ("Bulk
 * fetches").
 * - Trees: every tree of a commit in one git protocol v2 fetch (`deepen 1`, `filter
 *   blob:none`), when the server offers it; else the REST tree listing, directory by
 *   directory (cache.c).
 * - Small blobs: all uncached small files of a directory in one git fetch of their ids.
 * - Sizes and LFS verdicts over GraphQL are cache_sizes.c's, on the helpers here: the
 *   claims on a directory, the walk in tree order, the trees over git.
 * One thread fetches a directory; others asking for the same wait for it. Blobs are
 * pipelined: a reader's progress through the latest batch starts the next on a
 * look-ahead thread, so the server answers the next while the reader consumes this
 * one. */
#include "cache_int.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fetch.h"
#include "reef/hash.h"
#include "reef/log.h"
#include "reef/util.h"

#define BULK_BLOBS_BYTES ((uint64_t)8 << 20) /* blobs of one batch, by their sizes */
#define BULK_AHEAD_DIRS  4096                /* directories a look-ahead walks at most */
/* Small blobs fetched ahead of a reader: the first look-ahead batch of a commit's walk
 * carries BULK_AHEAD_BYTES, the next ones twice that. Each batch is a request and, on
 * the server, a pack-objects run (on reef-hub, three processes forked, started and
 * ended: about 40 % of its CPU in B5 at 8 MiB a batch), so a reader that keeps walking
 * gets fewer, larger batches; one that stops after a few files leaves at most the first
 * unread. */
#define BULK_AHEAD_BYTES ((uint64_t)16 << 20)
#define BULK_AHEAD_GROW  1 /* doublings of the look-ahead batch, at most */
/* Files of 1 MiB and more are no batch's (each streams with ranges, cache_obj.c): the
 * look-ahead starts up to BULK_AHEAD_BIG of them, none over BULK_AHEAD_BIG_MAX, counted
 * in its bytes, so that a walk's reader does not wait for their first bytes when it gets
 * there. LFS files are left to their own batch of download actions. */
#define BULK_AHEAD_BIG     4
#define BULK_AHEAD_BIG_MAX ((uint64_t)16 << 20)
#define BULK_REST_PAGES    8 /* REST tree pages before all trees over git */

void cache_bulk_init(struct cache *c)
{
	pthread_cond_init(&c->bulk.cond, NULL);
	c->bulk.trees = CACHE_VIA_UNKNOWN;
	for (size_t i = 0; i < CACHE_AHEAD_SLOTS; i++)
		c->bulk.ahead[i].c = c;
}

void cache_bulk_fini(struct cache *c)
{
	for (size_t i = 0; i < CACHE_LFS_AHEAD; i++)
		gl_target_free(&c->bulk.lfs[i].t);
	pthread_cond_destroy(&c->bulk.cond);
}

int64_t bulk_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Claims key for this thread (true), or waits until the thread holding it is done and
 * returns false (its result is in the index now). */
bool bulk_claim(struct cache *c, const char *key)
{
	struct cache_dirjob *j;
	bool waited = false;
	int64_t t0 = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		for (j = c->bulk.jobs; j; j = j->next)
			if (strcmp(j->key, key) == 0)
				break;
		if (!j)
			break;
		if (!waited)
			t0 = bulk_now_us();
		waited = true;
		pthread_cond_wait(&c->bulk.cond, &c->lock);
	}
	if (waited) {
		pthread_mutex_unlock(&c->lock);
		if (key[0] == 's') {
			__atomic_add_fetch(&c->bulk.sz_waits, 1, __ATOMIC_RELAXED);
			__atomic_add_fetch(&c->bulk.sz_wait_us, (uint64_t)(bulk_now_us() - t0),
			                   __ATOMIC_RELAXED);
		}
		return false;
	}
	j = calloc(1, sizeof(*j));
	if (j) {
		snprintf(j->key, sizeof(j->key), "%s", key);
		j->next = c->bulk.jobs;
		c->bulk.jobs = j;
	}
	pthread_mutex_unlock(&c->lock);
	return true;
}

void bulk_release(struct cache *c, const char *key)
{
	struct cache_dirjob **pp, *j;

	pthread_mutex_lock(&c->lock);
	for (pp = &c->bulk.jobs; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0) {
			j = *pp;
			*pp = j->next;
			free(j);
			break;
		}
	pthread_cond_broadcast(&c->bulk.cond);
	pthread_mutex_unlock(&c->lock);
}

void bulk_key(char key[64], char what, const char *commit, const char *dir)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = dir; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	snprintf(key, 64, "%c%.40s%016" PRIx64, what, commit, h);
}

/* Whether trees go over git: asked once per mount (the capability advertisement of the
 * first project that needs it); a refusal means REST for good. */
enum cache_via bulk_trees_via(struct cache *c, const char *project)
{
	enum cache_via v = __atomic_load_n(&c->bulk.trees, __ATOMIC_RELAXED);
	int r;

	if (v != CACHE_VIA_UNKNOWN)
		return v;
	/* asked ahead already (cache_bulk_listed): its answer, not a second request */
	pthread_mutex_lock(&c->lock);
	while (c->bulk.caps_running)
		pthread_cond_wait(&c->bulk.cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	v = __atomic_load_n(&c->bulk.trees, __ATOMIC_RELAXED);
	if (v != CACHE_VIA_UNKNOWN)
		return v;
	r = gl_git_caps(c->gl, project);
	if (r == 0)
		v = CACHE_VIA_BULK;
	else if (r == -ENOTSUP)
		v = CACHE_VIA_REST;
	else
		return CACHE_VIA_UNKNOWN; /* unreachable or refused: ask again next time */
	__atomic_store_n(&c->bulk.trees, v, __ATOMIC_RELAXED);
	return v;
}

/* The commit's record (lock held), made when missing. */
static struct cache_commit_use *bulk_use(struct cache *c, const char *commit)
{
	struct cache_commit_use *u;

	for (size_t i = 0; i < CACHE_COMMIT_USES; i++)
		if (strcmp(c->bulk.uses[i].commit, commit) == 0)
			return &c->bulk.uses[i];
	u = &c->bulk.uses[c->bulk.uses_next];
	c->bulk.uses_next = (c->bulk.uses_next + 1) % CACHE_COMMIT_USES;
	memset(u, 0, sizeof(*u));
	snprintf(u->commit, sizeof(u->commit), "%s", commit);
	return u;
}

bool cache_bulk_trees_now(struct cache *c, const char *commit)
{
	bool now;

	pthread_mutex_lock(&c->lock);
	{
		struct cache_commit_use *u = bulk_use(c, commit);

		now = !u->full && u->rest_pages >= BULK_REST_PAGES;
	}
	pthread_mutex_unlock(&c->lock);
	return now;
}

static void *bulk_caps_main(void *arg)
{
	struct cache *c = arg;
	enum cache_via v = CACHE_VIA_UNKNOWN;
	char *project;
	int r;

	pthread_mutex_lock(&c->lock);
	project = c->bulk.caps_project;
	c->bulk.caps_project = NULL;
	pthread_mutex_unlock(&c->lock);
	r = project ? gl_git_caps(c->gl, project) : -EINVAL;
	if (r == 0)
		v = CACHE_VIA_BULK;
	else if (r == -ENOTSUP)
		v = CACHE_VIA_REST;
	if (v != CACHE_VIA_UNKNOWN)
		__atomic_store_n(&c->bulk.trees, v, __ATOMIC_RELAXED);
	free(project);
	/* nothing after this but the return: cache_bulk_listed and cache_bulk_stop join */
	pthread_mutex_lock(&c->lock);
	c->bulk.caps_running = false;
	pthread_cond_broadcast(&c->bulk.cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void cache_bulk_listed(struct cache *c, int64_t pid, const char *commit, size_t entries)
{
	char project[1024];
	bool ask;

	pthread_mutex_lock(&c->lock);
	{
		struct cache_commit_use *u = bulk_use(c, commit);

		u->rest_pages += (unsigned)(entries / 100 + 1);
		/* a directory of more than a page is a dataset's: its neighbours are likely as
		 * large, and each would cost pages one after another; the commit counts as
		 * walked (its next listing brings every tree in one fetch) */
		if (entries > 100 && u->rest_pages < BULK_REST_PAGES)
			u->rest_pages = BULK_REST_PAGES;
		/* half way to a walk's trees over git: the capabilities they need are asked
		 * now, on a thread, while the walk lists on (a round trip less before the
		 * trees) */
		ask = !c->stop && !c->bulk.caps_started && u->rest_pages >= BULK_REST_PAGES / 2 &&
		      __atomic_load_n(&c->bulk.trees, __ATOMIC_RELAXED) == CACHE_VIA_UNKNOWN;
		if (ask)
			c->bulk.caps_started = true; /* once a mount */
	}
	pthread_mutex_unlock(&c->lock);
	if (!ask || cache_pid_path(c, pid, project) < 0)
		return;
	pthread_mutex_lock(&c->lock);
	c->bulk.caps_project = strdup(project);
	c->bulk.caps_running =
	    c->bulk.caps_project && pthread_create(&c->bulk.caps_th, NULL, bulk_caps_main, c) == 0;
	if (!c->bulk.caps_running) {
		free(c->bulk.caps_project);
		c->bulk.caps_project = NULL;
		c->bulk.caps_started = false;
	}
	pthread_mutex_unlock(&c->lock);
}

int cache_bulk_root(struct cache *c, int64_t pid, const char *commit, char tree_oid[41])
{
	char project[1024], key[64];
	size_t ntrees = 0;
	int r;

	r = cache_pid_path(c, pid, project);
	if (r < 0)
		return r;
	if (bulk_trees_via(c, project) != CACHE_VIA_BULK)
		return -ENOTSUP;
	bulk_key(key, 't', commit, "");
	if (!bulk_claim(c, key))
		return idx_commit_get(c->idx, commit, tree_oid) == 0 ? 0 : -EAGAIN;
	/* once per commit, whatever the outcome: a failure falls back to REST listings */
	pthread_mutex_lock(&c->lock);
	bulk_use(c, commit)->full = true;
	pthread_mutex_unlock(&c->lock);
	__atomic_add_fetch(&c->bulk.git_fetches, 1, __ATOMIC_RELAXED);
	r = fetch_commit_trees(c->gl, c->odb, c->idx, project, commit, tree_oid, &ntrees);
	bulk_release(c, key);
	if (r < 0) {
		cache_err_note(c, "git fetch of the trees of %.12s in %s: %s", commit, project,
		               strerror(-r));
		return r;
	}
	__atomic_add_fetch(&c->bulk.git_trees, ntrees, __ATOMIC_RELAXED);
	log_debug("cache: %zu trees of %.12s over git", ntrees, commit);
	return 0;
}

/* The directory holding path (dir receives its path, "" for the root) and its entries,
 * from the index (cache_tree fetches what is missing). */
int bulk_dir_of(struct cache *c, int64_t pid, const char *commit, const char *path,
                char dir[BULK_PATH_MAX], struct tree_entry **out, size_t *n)
{
	struct tree_entry *e = NULL;
	char tree[41];
	const char *p = path, *slash;
	size_t cnt = 0;
	int r;

	*out = NULL;
	*n = 0;
	dir[0] = '\0';
	r = cache_root_tree(c, pid, commit, tree, &e, &cnt);
	while (r == 0 && (slash = strchr(p, '/'))) {
		size_t len = (size_t)(slash - p), i;

		for (i = 0; i < cnt; i++)
			if (strlen(e[i].name) == len && memcmp(e[i].name, p, len) == 0)
				break;
		if (i == cnt || e[i].mode != TREE_MODE_DIR) {
			r = -ENOENT;
			break;
		}
		memcpy(tree, e[i].oid, sizeof(tree));
		if ((size_t)(slash - path) >= BULK_PATH_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		p = slash + 1;
		free(e);
		e = NULL;
		cnt = 0;
		r = cache_tree(c, pid, commit, dir, tree, &e, &cnt);
	}
	if (r < 0) {
		free(e);
		return r;
	}
	*out = e;
	*n = cnt;
	return 0;
}

void bulk_blob_stored(void *arg, const char *oid, uint64_t size)
{
	struct cache *c = arg;
	uint64_t disk = 0;

	__atomic_add_fetch(&c->bytes_fetched, size, __ATOMIC_RELAXED);
	if (odb_disk_size(c->odb, ODB_KIND_BLOB, oid, &disk) == 0)
		cache_obj_note(c, ODB_KIND_BLOB, oid, disk);
	__atomic_add_fetch(&c->bulk.git_blobs, 1, __ATOMIC_RELAXED);
}

/* Depth-first under tree oid at path: visit's verdict (non-zero: stop), at most
 * *budget directories. */
static int bulk_walk_tree(struct cache *c, const char *path, const char *oid, unsigned depth,
                          unsigned *budget, bulk_visit_fn visit, void *arg)
{
	struct tree_entry *e = NULL;
	char sub[BULK_PATH_MAX];
	size_t n = 0;
	int stop;

	if (!*budget || depth > 64 || idx_tree_get(c->idx, oid, &e, &n) < 0)
		return 0;
	(*budget)--;
	stop = visit(arg, path, e, n);
	for (size_t i = 0; !stop && i < n; i++)
		if (e[i].mode == TREE_MODE_DIR &&
		    (size_t)snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "/" : "",
		                     e[i].name) < sizeof(sub))
			stop = bulk_walk_tree(c, sub, e[i].oid, depth + 1, budget, visit, arg);
	free(e);
	return stop;
}

/* Visits the directories after dir in depth-first tree order — the order find and ls -R
 * go next — as far as their trees are indexed (every tree of a commit is, once fetched
 * over git), until visit returns non-zero or BULK_AHEAD_DIRS were seen. */
void bulk_walk_ahead(struct cache *c, int64_t pid, const char *commit, const char *dir,
                     bulk_visit_fn visit, void *arg)
{
	char cur[BULK_PATH_MAX], parent[BULK_PATH_MAX], sub[BULK_PATH_MAX];
	unsigned budget = BULK_AHEAD_DIRS;
	int stop = 0;

	snprintf(cur, sizeof(cur), "%s", dir);
	while (*cur && !stop && budget) {
		struct tree_entry *pe = NULL;
		const char *name = strrchr(cur, '/');
		size_t pn = 0, i;

		if (bulk_dir_of(c, pid, commit, cur, parent, &pe, &pn) < 0)
			return;
		name = name ? name + 1 : cur;
		for (i = 0; i < pn && strcmp(pe[i].name, name) != 0; i++)
			;
		stop = visit(arg, parent, pe, pn); /* the parent's own files */
		for (i++; !stop && i < pn; i++)
			if (pe[i].mode == TREE_MODE_DIR &&
			    (size_t)snprintf(sub, sizeof(sub), "%s%s%s", parent, *parent ? "/" : "",
			                     pe[i].name) < sizeof(sub))
				stop = bulk_walk_tree(c, sub, pe[i].oid, 0, &budget, visit, arg);
		free(pe);
		memcpy(cur, parent, sizeof(cur));
	}
}

/* Claims key unless another thread holds it: true when claimed. */
bool bulk_try_claim(struct cache *c, const char *key)
{
	struct cache_dirjob *j;
	bool ok = true;

	pthread_mutex_lock(&c->lock);
	for (j = c->bulk.jobs; j && ok; j = j->next)
		ok = strcmp(j->key, key) != 0;
	if (ok && (j = calloc(1, sizeof(*j)))) {
		snprintf(j->key, sizeof(j->key), "%s", key);
		j->next = c->bulk.jobs;
		c->bulk.jobs = j;
	}
	pthread_mutex_unlock(&c->lock);
	return ok && j;
}

struct bulk_blobs {
	struct cache *c;
	char (*oid)[41];
	size_t n, cap;
	uint64_t total, cap_bytes;
	bool more; /* a blob left out for the caps: another batch would carry it */
	/* the look-ahead's: files of 1 MiB and more within its bytes, each streamed on its
	 * own by a prefetch worker while the batch is fetched */
	bool want_big;
	size_t nbig;
	struct bulk_big {
		char oid[41];
		char *path;
	} big[BULK_AHEAD_BIG];
};

/* Whether a reader of commit had a batch of blobs already. */
static bool bulk_walked(struct cache *c, const char *commit)
{
	bool walked;

	pthread_mutex_lock(&c->lock);
	walked = bulk_use(c, commit)->batches > 0;
	pthread_mutex_unlock(&c->lock);
	return walked;
}

static int bulk_oid_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 40);
}

/* oid's index in the sorted v, or -1. */
static ssize_t bulk_at(char (*v)[41], size_t n, const char *oid)
{
	char(*p)[41] = n ? bsearch(oid, v, n, sizeof(*v), bulk_oid_cmp) : NULL;

	return p ? p - v : -1;
}

static bool bulk_in(char (*v)[41], size_t n, const char *oid)
{
	return bulk_at(v, n, oid) >= 0;
}

/* The batch in flight holding oid (lock held), or NULL; with unstored, only while the
 * blob is not stored yet (its reader may go on before the rest of the batch is). */
static struct cache_batch *bulk_inflight(struct cache *c, const char *oid, bool unstored)
{
	for (struct cache_batch *b = c->bulk.inflight; b; b = b->next) {
		ssize_t i = bulk_at(b->oid, b->n, oid);

		if (i >= 0 && (!unstored || !b->stored[i]))
			return b;
	}
	return NULL;
}

static bool bulk_inflight_has(struct cache *c, const char *oid)
{
	bool has;

	pthread_mutex_lock(&c->lock);
	has = bulk_inflight(c, oid, false) != NULL;
	pthread_mutex_unlock(&c->lock);
	return has;
}

struct bulk_batch_store {
	struct cache *c;
	struct cache_batch *t;
};

/* A blob of batch t stored: its readers go on now, not when the whole batch is. */
static void bulk_batch_stored(void *arg, const char *oid, uint64_t size)
{
	struct bulk_batch_store *s = arg;
	struct cache *c = s->c;
	ssize_t i;

	bulk_blob_stored(c, oid, size);
	pthread_mutex_lock(&c->lock);
	i = bulk_at(s->t->oid, s->t->n, oid);
	if (i >= 0 && !s->t->stored[i]) {
		s->t->stored[i] = true;
		pthread_cond_broadcast(&c->bulk.cond);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Whether oid was handed to a prefetch worker lately (lock held); if not, it is now. */
static bool bulk_big_started(struct cache *c, const char *oid)
{
	for (size_t i = 0; i < CACHE_AHEAD_BIG_RECENT; i++)
		if (strcmp(c->bulk.big_recent[i], oid) == 0)
			return true;
	memcpy(c->bulk.big_recent[c->bulk.big_next], oid, 41);
	c->bulk.big_next = (c->bulk.big_next + 1) % CACHE_AHEAD_BIG_RECENT;
	return false;
}

/* A file of 1 MiB and more on the look-ahead's way: noted to be streamed while it is not
 * stored, known to be no LFS pointer, and within the look-ahead's bytes. */
static void bulk_big_visit(struct bulk_blobs *b, const char *dir, const struct tree_entry *e)
{
	struct idx_lfs l;
	char path[BULK_PATH_MAX];

	if (b->nbig == BULK_AHEAD_BIG || (uint64_t)e->size > BULK_AHEAD_BIG_MAX)
		return;
	if (b->total + (uint64_t)e->size > b->cap_bytes) {
		b->more = true;
		return;
	}
	for (size_t i = 0; i < b->nbig; i++)
		if (strcmp(b->big[i].oid, e->oid) == 0)
			return;
	if (odb_blob_has(b->c->odb, e->oid) || idx_lfs_get(b->c->idx, e->oid, &l) < 0 || l.lfs ||
	    (size_t)snprintf(path, sizeof(path), "%s%s%s", dir, *dir ? "/" : "", e->name) >=
	        sizeof(path))
		return;
	b->big[b->nbig].path = strdup(path);
	if (!b->big[b->nbig].path)
		return;
	memcpy(b->big[b->nbig++].oid, e->oid, 41);
	b->total += (uint64_t)e->size;
}

/* Hands the look-ahead's large files to the prefetch workers. */
static void bulk_big_start(struct cache *c, int64_t pid, const char *commit, struct bulk_blobs *b)
{
	pthread_mutex_lock(&c->lock);
	if (b->nbig && !c->stop && cache_workers_start(c) == 0)
		for (size_t i = 0; i < b->nbig; i++)
			if (!bulk_big_started(c, b->big[i].oid))
				(void)cache_job_push(c, pid, commit, b->big[i].path, b->big[i].oid,
				                     false);
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < b->nbig; i++)
		free(b->big[i].path);
	b->nbig = 0;
}

/* Small blobs of known size neither stored nor in another batch, within the batch's
 * caps (and, for the look-ahead, large files to stream beside it). Non-zero: full. */
static int bulk_blob_visit(void *arg, const char *dir, struct tree_entry *e, size_t n)
{
	struct bulk_blobs *b = arg;

	idx_sizes_fill(b->c->idx, e, n);
	for (size_t i = 0; i < n; i++) {
		if (b->want_big && (e[i].mode & 0170000) == 0100000 &&
		    (uint64_t)e[i].size >= ODB_RAW_THRESHOLD) {
			bulk_big_visit(b, dir, &e[i]);
			continue;
		}
		if ((e[i].mode & 0170000) != 0100000 || e[i].size <= 0 ||
		    (uint64_t)e[i].size >= ODB_RAW_THRESHOLD || odb_blob_has(b->c->odb, e[i].oid) ||
		    bulk_inflight_has(b->c, e[i].oid))
			continue;
		if (b->total + (uint64_t)e[i].size > b->cap_bytes) {
			b->more = true;
			continue;
		}
		if (b->n == FETCH_BLOBS_MAX) {
			b->more = true;
			return 1;
		}
		if (b->n == b->cap) {
			size_t ncap = b->cap ? b->cap * 2 : 256;
			char(*nv)[41] = realloc(b->oid, ncap * sizeof(*nv));

			if (!nv)
				return 1;
			b->oid = nv;
			b->cap = ncap;
		}
		memcpy(b->oid[b->n++], e[i].oid, 41);
		b->total += (uint64_t)e[i].size;
	}
	return b->total >= b->cap_bytes;
}

/* Registers b's blobs as in flight, leaving out those another batch took meanwhile (and
 * duplicates); b->oid is sorted on the way. With first (a reader's batch, or "" for the
 * look-ahead's) the batch becomes the commit's latest (numbered *seq), remembered among
 * the recent ones whose blobs start the next (cache_bulk_touch). NULL when nothing is
 * left to fetch. */
static struct cache_batch *bulk_batch_begin(struct cache *c, struct bulk_blobs *b, int64_t pid,
                                            const char *commit, const char *first, unsigned *seq)
{
	struct cache_batch *t = NULL;
	size_t k = 0;

	qsort(b->oid, b->n, sizeof(*b->oid), bulk_oid_cmp);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < b->n; i++)
		if ((!k || memcmp(b->oid[k - 1], b->oid[i], 40) != 0) &&
		    !bulk_inflight(c, b->oid[i], false))
			memmove(b->oid[k++], b->oid[i], 41);
	b->n = k;
	if (k && (t = calloc(1, sizeof(*t))) && !(t->stored = calloc(k, sizeof(*t->stored)))) {
		free(t);
		t = NULL;
	}
	if (t) {
		t->oid = b->oid;
		t->n = k;
		t->next = c->bulk.inflight;
		c->bulk.inflight = t;
	}
	if (t && first) {
		struct cache_recent *e = &c->bulk.recent[c->bulk.recent_next];
		char(*copy)[41] = malloc(k * sizeof(*copy));

		bulk_use(c, commit)->batches++;
		c->bulk.recent_next = (c->bulk.recent_next + 1) % CACHE_AHEAD_RECENT;
		free(e->oid);
		memset(e, 0, sizeof(*e));
		if (copy) {
			memcpy(copy, b->oid, k * sizeof(*copy));
			e->oid = copy;
			e->n = k;
			e->pid = pid;
			e->seq = ++c->bulk.seq_latest;
			snprintf(e->commit, sizeof(e->commit), "%s", commit);
			snprintf(e->first, sizeof(e->first), "%s", first);
		}
		if (seq)
			*seq = e->seq;
	}
	pthread_mutex_unlock(&c->lock);
	return t;
}

static void bulk_batch_end(struct cache *c, struct cache_batch *t)
{
	pthread_mutex_lock(&c->lock);
	for (struct cache_batch **pp = &c->bulk.inflight; *pp; pp = &(*pp)->next)
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	pthread_cond_broadcast(&c->bulk.cond);
	pthread_mutex_unlock(&c->lock);
	free(t->stored);
	free(t);
}

/* Fetches the registered batch t of b into the store. */
static int bulk_batch_fetch(struct cache *c, const char *project, const char *dir,
                            struct bulk_blobs *b, struct cache_batch *t)
{
	const char **oids = calloc(t->n, sizeof(*oids));
	struct bulk_batch_store st = {.c = c, .t = t};
	int r;

	if (!oids)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++)
		oids[i] = t->oid[i];
	cache_evict(c, b->total);
	__atomic_add_fetch(&c->bulk.git_fetches, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&c->bulk.fetching, 1, __ATOMIC_RELAXED);
	r = fetch_blobs(c->gl, c->odb, c->idx, project, oids, t->n,
	                b->total + (b->total >> 2) + (1 << 20), bulk_batch_stored, &st);
	if (r < 0)
		cache_err_note(c, "git fetch of %zu blobs of %s/%s: %s", t->n, project, dir,
		               strerror(-r));
	free(oids);
	/* a batch's blobs and a round's answers pass through malloc on several threads
	 * (each with its arena); what they freed goes back to the kernel once no other
	 * batch is on the wire, or the arenas' kept high-water marks add up over a walk
	 * (B7). Not after each batch: the next one faulted the same pages in again (a
	 * tenth of reefd's time in a cold read of many files). */
	if (__atomic_sub_fetch(&c->bulk.fetching, 1, __ATOMIC_RELAXED) == 0)
		malloc_trim(0);
	return r < 0 ? r : 0;
}

static void bulk_ahead_kick(struct cache *c, int64_t pid, const char *commit, const char *path);

/* Whether b holds oid and nothing else (the directory's walk may list it again). */
static bool bulk_alone(const struct bulk_blobs *b, const char *oid)
{
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->oid[i], oid) != 0)
			return false;
	return true;
}

int cache_bulk_blobs(struct cache *c, int64_t pid, const char *commit, const char *path,
                     const char *oid)
{
	char project[1024], dir[BULK_PATH_MAX], key[64] = "";
	struct bulk_blobs b = {.c = c, .cap_bytes = BULK_BLOBS_BYTES};
	struct cache_batch *t = NULL;
	struct tree_entry *e = NULL;
	uint64_t size;
	unsigned seq = 0;
	size_t n = 0;
	int r;

	r = cache_pid_path(c, pid, project);
	if (r < 0)
		return r;
	if (bulk_trees_via(c, project) != CACHE_VIA_BULK)
		return -ENOTSUP;
	if (oid) {
		/* in a batch already (the look-ahead's, another reader's): wait for it */
		bool waited = false;

		pthread_mutex_lock(&c->lock);
		while (bulk_inflight(c, oid, true)) {
			waited = true;
			pthread_cond_wait(&c->bulk.cond, &c->lock);
		}
		pthread_mutex_unlock(&c->lock);
		if (waited)
			return 0;
		/* a larger file not in flight streams on its own at once (cache_obj.c): a
		 * pack of one blob costs more than its GET; unless a reader of this commit
		 * had a batch before: a walk, whose next files come in batches */
		if (idx_size_get(c->idx, oid, &size) < 0 ||
		    (size > CACHE_BATCH_BLOB_MAX && !bulk_walked(c, commit)))
			return 0;
		r = bulk_dir_of(c, pid, commit, path, dir, &e, &n);
	} else {
		/* path is the directory: look up a name inside it */
		char probe[BULK_PATH_MAX];

		if ((size_t)snprintf(probe, sizeof(probe), "%s%s", path, *path ? "/" : "") >=
		    sizeof(probe))
			return -ENAMETOOLONG;
		r = bulk_dir_of(c, pid, commit, probe, dir, &e, &n);
	}
	if (r < 0)
		return r;
	/* a directory's prefetch runs once at a time; readers leave out what is in flight */
	if (!oid) {
		bulk_key(key, 'b', commit, dir);
		if (!bulk_claim(c, key)) {
			free(e);
			return 0;
		}
	}
	if (oid) {
		/* the blob asked for first, whatever the caps (duplicates are asked once) */
		b.oid = malloc(256 * sizeof(*b.oid));
		if (!b.oid) {
			r = -ENOMEM;
			goto out;
		}
		b.cap = 256;
		memcpy(b.oid[b.n++], oid, 41);
		b.total = size;
	}
	/* the directory's files only: the next directories come on the look-ahead thread
	 * once the reader goes on to a second file (cache_bulk_touch) */
	bulk_blob_visit(&b, dir, e, n);
	if (!b.n)
		goto out;
	if (oid && !b.more && bulk_alone(&b, oid)) {
		/* no uncached small file beside it: its GET (cache_obj.c) costs the server
		 * less than a pack of one blob, and the reader a pack-objects run less to wait
		 * for; it counts as the commit's batch all the same (bulk_walked) */
		pthread_mutex_lock(&c->lock);
		bulk_use(c, commit)->batches++;
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	t = bulk_batch_begin(c, &b, pid, commit, oid, &seq);
	if (!t)
		goto out;
	if (oid && b.more) {
		/* a reader's second batch of the commit (its first left out: a single cat),
		 * in a directory that fills more than a batch: a walk, whose next batches
		 * start now rather than once this one is read */
		pthread_mutex_lock(&c->lock);
		if (seq && bulk_use(c, commit)->batches > 1) {
			if (seq > c->bulk.seq_reader)
				c->bulk.seq_reader = seq;
			bulk_ahead_kick(c, pid, commit, path);
		}
		pthread_mutex_unlock(&c->lock);
	}
	r = bulk_batch_fetch(c, project, dir, &b, t);
	bulk_batch_end(c, t);
out:
	if (key[0])
		bulk_release(c, key);
	free(b.oid);
	free(e);
	return r < 0 ? r : 0;
}

/* The look-ahead: the small blobs from path's directory on in tree order, up to
 * BULK_AHEAD_BYTES (more once the walk went on), fetched while the reader consumes the
 * batch before, and the large files on the way started beside them. Once the batch is
 * registered, the next look-ahead may start (bulk_ahead_kick) while this one is
 * fetched. */
static void bulk_ahead_run(struct cache *c, int64_t pid, const char *commit, const char *path)
{
	char project[1024], dir[BULK_PATH_MAX];
	struct bulk_blobs b = {.c = c, .want_big = true};
	struct cache_batch *t = NULL;
	struct tree_entry *e = NULL;
	unsigned k;
	size_t n = 0;

	pthread_mutex_lock(&c->lock);
	k = bulk_use(c, commit)->ahead;
	pthread_mutex_unlock(&c->lock);
	b.cap_bytes = BULK_AHEAD_BYTES << (k < BULK_AHEAD_GROW ? k : BULK_AHEAD_GROW);
	if (cache_pid_path(c, pid, project) == 0 && bulk_trees_via(c, project) == CACHE_VIA_BULK &&
	    bulk_dir_of(c, pid, commit, path, dir, &e, &n) == 0) {
		if (!bulk_blob_visit(&b, dir, e, n))
			bulk_walk_ahead(c, pid, commit, dir, bulk_blob_visit, &b);
		if (b.n)
			t = bulk_batch_begin(c, &b, pid, commit, "", NULL);
	}
	pthread_mutex_lock(&c->lock);
	if (c->bulk.ahead_pending)
		c->bulk.ahead_pending--;
	if (t) {
		bulk_use(c, commit)->ahead++;
		bulk_ahead_kick(c, pid, commit, path);
	} else {
		c->bulk.ahead_done = c->bulk.seq_latest; /* nothing left after it: no new walk */
	}
	pthread_mutex_unlock(&c->lock);
	bulk_big_start(c, pid, commit, &b);
	if (t) {
		bulk_batch_fetch(c, project, dir, &b, t);
		bulk_batch_end(c, t);
	}
	free(b.oid);
	free(e);
}

static void *bulk_ahead_main(void *arg)
{
	struct cache_ahead *a = arg;
	struct cache *c = a->c;
	char commit[41], *path;
	int64_t pid;

	pthread_mutex_lock(&c->lock);
	memcpy(commit, a->commit, sizeof(commit));
	path = a->path;
	a->path = NULL;
	pid = a->pid;
	pthread_mutex_unlock(&c->lock);
	if (path) {
		bulk_ahead_run(c, pid, commit, path);
	} else {
		pthread_mutex_lock(&c->lock);
		if (c->bulk.ahead_pending)
			c->bulk.ahead_pending--;
		pthread_mutex_unlock(&c->lock);
	}
	free(path);
	/* nothing after this but the return: bulk_ahead_kick joins under the lock */
	pthread_mutex_lock(&c->lock);
	a->running = false;
	pthread_cond_broadcast(&c->bulk.cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Starts the next look-ahead batch from path (lock held) while fewer than
 * CACHE_AHEAD_SLOTS are ahead of the batch the reader is in: one walk at a time (each
 * leaves out what the one before registered), the next started by the one before once
 * registered. Not after a walk found nothing left, until a new batch starts. */
static void bulk_ahead_kick(struct cache *c, int64_t pid, const char *commit, const char *path)
{
	struct cache_ahead *a = NULL;

	if (c->stop || c->bulk.ahead_pending || c->bulk.ahead_done == c->bulk.seq_latest ||
	    c->bulk.seq_latest - c->bulk.seq_reader >= CACHE_AHEAD_SLOTS)
		return;
	for (size_t i = 0; i < CACHE_AHEAD_SLOTS && !a; i++)
		if (!c->bulk.ahead[i].running)
			a = &c->bulk.ahead[i];
	if (!a)
		return;
	free(a->path);
	a->path = strdup(path);
	memcpy(a->commit, commit, 41);
	a->pid = pid;
	if (!a->path)
		return;
	if (a->started)
		pthread_join(a->th, NULL); /* done: not running */
	a->started = pthread_create(&a->th, NULL, bulk_ahead_main, a) == 0;
	a->running = a->started;
	if (a->started)
		c->bulk.ahead_pending++;
}

void cache_bulk_touch(struct cache *c, int64_t pid, const char *commit, const char *path,
                      const char *oid)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < CACHE_AHEAD_RECENT; i++) {
		struct cache_recent *e = &c->bulk.recent[i];

		/* the blob that asked for a batch is no step of a walk (a single cat) */
		if (!e->n || e->pid != pid || strcmp(e->commit, commit) != 0 ||
		    strcmp(e->first, oid) == 0 || !bulk_in(e->oid, e->n, oid))
			continue;
		if (e->seq > c->bulk.seq_reader)
			c->bulk.seq_reader = e->seq;
		bulk_ahead_kick(c, pid, commit, path);
		break;
	}
	pthread_mutex_unlock(&c->lock);
}

void cache_bulk_stop(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	/* c->stop is set: no look-ahead starts another */
	for (size_t i = 0; i < CACHE_AHEAD_SLOTS; i++) {
		struct cache_ahead *a = &c->bulk.ahead[i];

		while (a->running)
			pthread_cond_wait(&c->bulk.cond, &c->lock);
		if (a->started)
			pthread_join(a->th, NULL);
		a->started = false;
		free(a->path);
		a->path = NULL;
	}
	while (c->bulk.caps_running)
		pthread_cond_wait(&c->bulk.cond, &c->lock);
	if (c->bulk.caps_started) {
		pthread_join(c->bulk.caps_th, NULL);
		c->bulk.caps_started = false;
	}
	cache_sizes_stop(c);
	for (size_t i = 0; i < CACHE_AHEAD_RECENT; i++) {
		free(c->bulk.recent[i].oid);
		memset(&c->bulk.recent[i], 0, sizeof(c->bulk.recent[i]));
	}
	pthread_mutex_unlock(&c->lock);
}

int cache_bulk_lfs(struct cache *c, int64_t pid, const char *commit, const char *dir,
                   const struct tree_entry *e, size_t n)
{
	struct gl_lfs_obj objs[GL_LFS_BATCH_MAX];
	struct gl_target *t = NULL;
	char project[1024], probe[BULK_PATH_MAX];
	int *err = NULL, r;
	size_t k = 0;

	/* the verdicts first (a directory's sizes and pointers in a few requests) */
	if ((size_t)snprintf(probe, sizeof(probe), "%s%s", dir, *dir ? "/" : "") < sizeof(probe))
		cache_bulk_sizes(c, pid, commit, probe);
	r = cache_pid_path(c, pid, project);
	if (r < 0)
		return r;
	t = calloc(GL_LFS_BATCH_MAX, sizeof(*t));
	err = calloc(GL_LFS_BATCH_MAX, sizeof(*err));
	if (!t || !err) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i <= n; i++) {
		struct idx_lfs l;

		if (i < n &&
		    ((e[i].mode & 0170000) != 0100000 || idx_lfs_get(c->idx, e[i].oid, &l) < 0 ||
		     !l.lfs || odb_lfs_has(c->odb, l.oid)))
			continue;
		if (i < n) {
			bool dup = false;

			for (size_t m = 0; m < k; m++)
				dup = dup || strcmp(objs[m].oid, l.oid) == 0;
			if (dup)
				continue;
			/* the oid lives in the index record: copied into the slot below */
			objs[k].oid = strdup(l.oid);
			if (!objs[k].oid) {
				r = -ENOMEM;
				break;
			}
			objs[k++].size = l.size;
		}
		if (k && (k == GL_LFS_BATCH_MAX || i == n)) {
			r = gl_lfs_targets(c->gl, project, objs, k, t, err);
			pthread_mutex_lock(&c->lock);
			for (size_t m = 0; r == 0 && m < k; m++) {
				struct cache_lfs_ahead *a;

				if (err[m] < 0)
					continue;
				a = &c->bulk.lfs[c->bulk.lfs_next];
				c->bulk.lfs_next = (c->bulk.lfs_next + 1) % CACHE_LFS_AHEAD;
				gl_target_free(&a->t);
				snprintf(a->oid, sizeof(a->oid), "%s", objs[m].oid);
				a->t = t[m];
				memset(&t[m], 0, sizeof(t[m]));
			}
			pthread_mutex_unlock(&c->lock);
			for (size_t m = 0; m < k; m++) {
				gl_target_free(&t[m]);
				free((char *)(uintptr_t)objs[m].oid);
			}
			k = 0;
			if (r < 0)
				break;
		}
	}
	for (size_t m = 0; m < k; m++)
		free((char *)(uintptr_t)objs[m].oid);
out:
	free(t);
	free(err);
	return r;
}

bool cache_bulk_lfs_take(struct cache *c, const char *oid, struct gl_target *out)
{
	bool found = false;
	struct timespec ts;
	int64_t now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < CACHE_LFS_AHEAD && !found; i++) {
		struct cache_lfs_ahead *a = &c->bulk.lfs[i];

		if (!a->oid[0] || strcmp(a->oid, oid) != 0)
			continue;
		/* an action about to expire is asked again by its fetcher */
		if (!a->t.expires_ms || a->t.expires_ms > now + 10000) {
			*out = a->t;
			memset(&a->t, 0, sizeof(a->t));
			found = true;
		}
		gl_target_free(&a->t);
		a->oid[0] = '\0';
	}
	pthread_mutex_unlock(&c->lock);
	return found;
}

int cache_bulk_stats(struct cache *c, json_t *j)
{
	enum cache_via v = __atomic_load_n(&c->bulk.trees, __ATOMIC_RELAXED);
	json_t *b = json_pack(
	    "{s:s,s:s,s:I,s:I,s:I,s:I,s:o}", "trees_via",
	    v == CACHE_VIA_BULK   ? "git protocol v2"
	    : v == CACHE_VIA_REST ? "REST"
	                          : "not asked yet",
	    "sizes_via", gl_graphql_supported(c->gl) ? "GraphQL" : "files API", "git_fetches",
	    (json_int_t)__atomic_load_n(&c->bulk.git_fetches, __ATOMIC_RELAXED), "git_trees",
	    (json_int_t)__atomic_load_n(&c->bulk.git_trees, __ATOMIC_RELAXED), "git_blobs",
	    (json_int_t)__atomic_load_n(&c->bulk.git_blobs, __ATOMIC_RELAXED), "graphql_requests",
	    (json_int_t)__atomic_load_n(&c->bulk.gql_requests, __ATOMIC_RELAXED), "sizes",
	    cache_sizes_stats(c));

	if (!b)
		return -ENOMEM;
	return json_object_set_new(j, "remote", b) < 0 ? -ENOMEM : 0;
}
