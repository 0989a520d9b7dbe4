/* The cache's sizes in bulk: the sizes and LFS verdicts of a directory's files in
 * rounds of GitLab's GraphQL `blobs(paths:)`, GL_GQL_PATHS a request, several requests
 * at once, a round filled with the directories that come next in tree order. See
 * cache_int.h and docs/cache.md ("Bulk fetches").
 * A reader's progress through the latest rounds starts the next on the sizes thread
 * (up to CACHE_SZ_AHEAD rounds ahead of it), each round's answers indexed on a thread of
 * their own while the next is asked. The claims, directory walks and trees over git
 * these share with the blob batches are cache_bulk.c's. */
#include "cache_int.h"

#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch.h"
#include "reef/lfs.h"
#include "reef/log.h"
#include "reef/util.h"

#define BULK_GQL_PARALLEL 4      /* GraphQL requests of one directory at once */
#define BULK_DIR_FILES    100000 /* files of one directory sized in bulk */
#define BULK_TRIM_ROUNDS  16     /* sizes rounds between two malloc_trim */

/* LFS verdicts of pointer blobs by their own bytes (git-lfs's strict format, as
 * cache.c judges a pointer it downloaded): the pointers in one git fetch where the server
 * offers it; without it, no verdict is recorded and each file is judged when asked. */
static void bulk_pointers(struct cache *c, const char *project, const char **oids, size_t n)
{
	if (bulk_trees_via(c, project) != CACHE_VIA_BULK)
		return;
	__atomic_add_fetch(&c->bulk.git_fetches, 1, __ATOMIC_RELAXED);
	if (fetch_blobs(c->gl, c->odb, c->idx, project, oids, n, (uint64_t)n * 1024 + (1 << 20),
	                bulk_blob_stored, c) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char data[LFS_POINTER_MAX];
		struct odb_blob *b = NULL;
		struct lfs_pointer ptr;
		struct idx_lfs l = {0};
		ssize_t got;

		if (odb_blob_open(c->odb, oids[i], &b) < 0)
			continue;
		l.size = odb_blob_size(b);
		got = l.size < sizeof(data) ? odb_blob_pread(b, data, sizeof(data), 0) : 0;
		odb_blob_close(b);
		if (got < 0)
			continue;
		if (got > 0 && lfs_pointer_parse(data, (size_t)got, &ptr) == 0) {
			l.lfs = true;
			memcpy(l.oid, ptr.oid, sizeof(l.oid));
			l.size = ptr.size;
		}
		idx_lfs_put(c->idx, oids[i], &l);
	}
}

struct bulk_gql {
	struct cache *c;
	const char *project, *commit;
	const char **paths;
	const struct tree_entry **ents;
	struct gl_blob_info *info;
	size_t from, n;
	int lfs_ok; /* the directory's attributes allow LFS: 1, 0, or -1 not known yet */
	int r;
};

static void *bulk_gql_main(void *arg)
{
	struct bulk_gql *q = arg;

	q->r = gl_blobs_info(q->c->gl, q->project, q->commit, q->paths + q->from, q->n,
	                     q->info + q->from);
	__atomic_add_fetch(&q->c->bulk.gql_requests, 1, __ATOMIC_RELAXED);
	return NULL;
}

/* Files whose sizes a round of GraphQL requests asks for. */
struct bulk_item {
	char *path;
	char oid[41];
	uint32_t mode;
};

struct bulk_list {
	struct bulk_item *v;
	size_t n, cap;
};

static void bulk_list_free(struct bulk_list *w)
{
	for (size_t i = 0; i < w->n; i++)
		free(w->v[i].path);
	free(w->v);
}

/* Adds the files of directory dir (entries e) whose shown size the index does not know,
 * up to max items in all. */
static int bulk_list_add(struct cache *c, struct bulk_list *w, const char *dir,
                         struct tree_entry *e, size_t n, size_t max)
{
	idx_sizes_fill(c->idx, e, n);
	for (size_t i = 0; i < n && w->n < max; i++) {
		struct bulk_item *it;
		struct idx_lfs l;

		if ((e[i].mode & 0170000) != 0100000 && e[i].mode != TREE_MODE_LINK)
			continue;
		/* shown size known already; a round indexes a size with each verdict, so an
		 * unknown size means no verdict either (the cold case: no lookup per file) */
		if (e[i].size >= 0 &&
		    (!CACHE_LFS_CANDIDATE(e[i].size) || idx_lfs_get(c->idx, e[i].oid, &l) == 0))
			continue;
		if (w->n == w->cap) {
			size_t ncap = w->cap ? w->cap * 2 : 128;
			struct bulk_item *nv = realloc(w->v, ncap * sizeof(*nv));

			if (!nv)
				return -ENOMEM;
			w->v = nv;
			w->cap = ncap;
		}
		it = &w->v[w->n];
		if (asprintf(&it->path, "%s%s%s", dir, *dir ? "/" : "", e[i].name) < 0)
			return -ENOMEM;
		memcpy(it->oid, e[i].oid, 41);
		it->mode = e[i].mode;
		w->n++;
	}
	return 0;
}

/* Which directories a round of sizes took: each claimed (its key), so that a reader of
 * one waits for the round instead of asking again. */
struct bulk_size_walk {
	struct cache *c;
	const char *commit;
	struct bulk_list *w;
	size_t max;
	char (*keys)[64];
	uint64_t *dirs; /* bulk_dir_hash of each */
	size_t nkeys, capkeys;
	char last[BULK_PATH_MAX]; /* the last directory taken: the next round starts there */
};

static uint64_t bulk_dir_hash(const char *dir)
{
	uint64_t h = 1469598103934665603ULL;

	for (const char *p = dir; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return h;
}

/* Notes directory dir (its key claimed) as taken by the round. */
static int bulk_size_took(struct bulk_size_walk *s, const char *key, const char *dir)
{
	if (s->nkeys == s->capkeys) {
		size_t ncap = s->capkeys ? s->capkeys * 2 : 16;
		char(*nk)[64] = realloc(s->keys, ncap * sizeof(*nk));
		uint64_t *nd;

		if (!nk)
			return -ENOMEM;
		s->keys = nk;
		nd = realloc(s->dirs, ncap * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		s->dirs = nd;
		s->capkeys = ncap;
	}
	memcpy(s->keys[s->nkeys], key, 64);
	s->dirs[s->nkeys++] = bulk_dir_hash(dir);
	snprintf(s->last, sizeof(s->last), "%s", dir);
	return 0;
}

static void bulk_size_walk_end(struct bulk_size_walk *s)
{
	for (size_t i = 0; i < s->nkeys; i++)
		bulk_release(s->c, s->keys[i]);
	free(s->keys);
	free(s->dirs);
}

static int bulk_size_visit(void *arg, const char *dir, struct tree_entry *e, size_t n)
{
	struct bulk_size_walk *s = arg;
	size_t before = s->w->n;
	char key[64];

	bulk_key(key, 's', s->commit, dir);
	if (!bulk_try_claim(s->c, key))
		return 0; /* another round has it */
	if (bulk_list_add(s->c, s->w, dir, e, n, s->max) < 0 || s->w->n == before ||
	    bulk_size_took(s, key, dir) < 0) {
		bulk_release(s->c, key);
		return s->w->n >= s->max;
	}
	return s->w->n >= s->max;
}

/* Asks the sizes of w's files, BULK_GQL_PARALLEL requests at once: *out, one for each. */
static int bulk_sizes_fetch(struct cache *c, const char *project, const char *commit,
                            struct bulk_list *w, struct gl_blob_info **out)
{
	struct gl_blob_info *info = NULL;
	const char **paths = NULL;
	int r = 0;

	*out = NULL;
	info = calloc(w->n, sizeof(*info));
	paths = calloc(w->n, sizeof(*paths));
	if (!info || !paths) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < w->n; i++)
		paths[i] = w->v[i].path;
	/* GL_GQL_PATHS a request, BULK_GQL_PARALLEL at a time */
	for (size_t from = 0; from < w->n && r == 0;) {
		struct bulk_gql q[BULK_GQL_PARALLEL];
		pthread_t th[BULK_GQL_PARALLEL];
		bool started[BULK_GQL_PARALLEL] = {false};
		size_t k = 0;

		for (; k < BULK_GQL_PARALLEL && from < w->n; k++) {
			q[k] = (struct bulk_gql){.c = c,
			                         .project = project,
			                         .commit = commit,
			                         .paths = paths,
			                         .info = info,
			                         .from = from,
			                         .n = w->n - from < GL_GQL_PATHS ? w->n - from
			                                                         : GL_GQL_PATHS};
			from += q[k].n;
		}
		/* the first batch on this thread, the others on threads of their own */
		for (size_t i = 1; i < k; i++)
			started[i] = pthread_create(&th[i], NULL, bulk_gql_main, &q[i]) == 0;
		bulk_gql_main(&q[0]);
		for (size_t i = 1; i < k; i++) {
			if (started[i])
				pthread_join(th[i], NULL);
			else
				bulk_gql_main(&q[i]);
		}
		for (size_t i = 0; i < k && r == 0; i++)
			r = q[i].r;
	}
out:
	free(paths);
	if (r < 0)
		free(info);
	else
		*out = info;
	return r;
}

/* Indexes the sizes and verdicts a round's answers (info, for w's files) gave. */
static void bulk_sizes_index(struct cache *c, int64_t pid, const char *project, const char *commit,
                             struct bulk_list *w, const struct gl_blob_info *info)
{
	const char **lfs_oids = NULL;
	struct idx_blob_rec *recs = NULL;
	struct idx_lfs *verdicts = NULL;
	size_t nlfs = 0, nrecs = 0;
	int r;

	__atomic_add_fetch(&c->bulk.sz_rounds, 1, __ATOMIC_RELAXED);
	lfs_oids = calloc(w->n, sizeof(*lfs_oids));
	recs = calloc(w->n, sizeof(*recs));
	verdicts = calloc(w->n, sizeof(*verdicts));
	if (!lfs_oids || !recs || !verdicts)
		goto out; /* not indexed: asked again per file */
	for (size_t i = 0; i < w->n; i++) {
		struct idx_lfs *l = &verdicts[nrecs];

		if (!info[i].found || strcmp(info[i].oid, w->v[i].oid) != 0 || info[i].size < 0)
			continue; /* not there, or another blob than the tree names: per file later
			           */
		/* one index transaction for the round, not one a file */
		recs[nrecs] =
		    (struct idx_blob_rec){.oid = w->v[i].oid, .size = (uint64_t)info[i].size};
		if (w->v[i].mode == TREE_MODE_LINK) {
			nrecs++;
			continue;
		}
		l->size = (uint64_t)info[i].size;
		/* git-lfs smudges only where .gitattributes says filter=lfs (the same rule as
		 * for pointers found by download, cache.c); GitLab's pointer check is laxer
		 * than git-lfs's: the verdict comes from the pointer's own bytes, all of them
		 * in one fetch */
		if (info[i].lfs && CACHE_LFS_CANDIDATE(info[i].size) &&
		    cache_lfs_possible(c, pid, commit, w->v[i].path) != 0) {
			lfs_oids[nlfs++] = w->v[i].oid;
			nrecs++;
			continue;
		}
		recs[nrecs++].lfs = l;
	}
	r = idx_blobs_put(c->idx, recs, nrecs);
	if (r < 0)
		log_warn("cache: cannot index %zu sizes: %s", nrecs, strerror(-r));
	if (nlfs)
		bulk_pointers(c, project, lfs_oids, nlfs);
out:
	free(recs);
	free(verdicts);
	free(lfs_oids);
	/* see bulk_batch_fetch (cache_bulk.c); not after each round: a trim's madvise costs
	 * every core a TLB flush, and a round's answers leave little behind (a tenth of
	 * reefd's CPU in B3 cold was trimming after each of its 250 rounds) */
	if (__atomic_add_fetch(&c->bulk.sz_untrimmed, 1, __ATOMIC_RELAXED) % BULK_TRIM_ROUNDS == 0)
		malloc_trim(0);
}

/* Asks the sizes of w's files, BULK_GQL_PARALLEL requests at once, and indexes them. */
static int bulk_sizes_ask(struct cache *c, int64_t pid, const char *project, const char *commit,
                          struct bulk_list *w)
{
	struct gl_blob_info *info;
	int r = bulk_sizes_fetch(c, project, commit, w, &info);

	if (r < 0)
		return r;
	bulk_sizes_index(c, pid, project, commit, w, info);
	free(info);
	return 0;
}

static void *bulk_sizes_ahead_main(void *arg);

/* Starts the sizes thread (lock held) when it is idle and fewer than CACHE_SZ_AHEAD
 * rounds are asked ahead of the reader's. */
static void bulk_sizes_kick(struct cache *c)
{
	if (c->stop || c->bulk.sz_running || !c->bulk.sz_resume ||
	    c->bulk.sz_seq - c->bulk.sz_reader_seq >= CACHE_SZ_AHEAD)
		return;
	if (c->bulk.sz_started)
		pthread_join(c->bulk.sz_th, NULL); /* done: not running */
	c->bulk.sz_started = pthread_create(&c->bulk.sz_th, NULL, bulk_sizes_ahead_main, c) == 0;
	c->bulk.sz_running = c->bulk.sz_started;
}

/* The round just asked becomes the commit's latest (numbered): a reader listing one of
 * the last rounds' directories moves the look-ahead on (cache_bulk_listing). A round
 * asked on the reader's own thread (reader) is where that reader is now; the directory
 * it started from (first, by hash) is listed already, so listing it again is no
 * progress: a lone `ls -l` asks no round ahead. */
static void bulk_sizes_latest(struct cache *c, int64_t pid, const char *commit,
                              struct bulk_size_walk *s, bool reader, uint64_t first)
{
	struct cache_sz_round *q;
	uint64_t *dirs;
	char *resume;

	if (!s->nkeys)
		return;
	dirs = malloc(s->nkeys * sizeof(*dirs));
	resume = strdup(s->last);
	if (!dirs || !resume) {
		free(dirs);
		free(resume);
		return;
	}
	memcpy(dirs, s->dirs, s->nkeys * sizeof(*dirs));
	pthread_mutex_lock(&c->lock);
	c->bulk.sz_seq++;
	q = &c->bulk.sz_ring[c->bulk.sz_seq % (CACHE_SZ_AHEAD + 1)];
	free(q->dirs);
	q->dirs = dirs;
	q->n = s->nkeys;
	q->seq = c->bulk.sz_seq;
	q->pid = pid;
	memcpy(q->commit, commit, 41);
	if (reader) {
		/* the look-ahead goes on from here (its own rounds move this on as they walk) */
		free(c->bulk.sz_resume);
		c->bulk.sz_resume = resume;
		resume = NULL;
		c->bulk.sz_pid = pid;
		memcpy(c->bulk.sz_commit, commit, 41);
		c->bulk.sz_reader_seq = c->bulk.sz_seq;
		c->bulk.sz_first = first;
	}
	__atomic_store_n(&c->bulk.sz_any, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&c->lock);
	free(resume);
}

/* Set on threads inside the bulk paths: their own listings are no reader's. */
static __thread unsigned bulk_depth;

int cache_bulk_sizes(struct cache *c, int64_t pid, const char *commit, const char *path)
{
	char project[1024], dir[BULK_PATH_MAX], key[64];
	struct bulk_list w = {0};
	struct bulk_size_walk sw = {.c = c, .commit = commit, .w = &w};
	struct tree_entry *e = NULL;
	size_t n = 0;
	int r;

	if (!gl_graphql_supported(c->gl))
		return -ENOTSUP;
	r = cache_pid_path(c, pid, project);
	if (r < 0)
		return r;
	bulk_depth++;
	r = bulk_dir_of(c, pid, commit, path, dir, &e, &n);
	if (r < 0)
		goto out;
	bulk_key(key, 's', commit, dir);
	if (!bulk_claim(c, key))
		goto out; /* done by another round: in the index now */
	if (bulk_size_took(&sw, key, dir) < 0) {
		bulk_release(c, key);
		r = -ENOMEM;
		goto out;
	}
	r = bulk_list_add(c, &w, dir, e, n, BULK_DIR_FILES);
	/* a round is BULK_GQL_PARALLEL requests at once: fill it with the next directories */
	sw.max = GL_GQL_PATHS * BULK_GQL_PARALLEL;
	if (r == 0 && w.n && w.n < sw.max)
		bulk_walk_ahead(c, pid, commit, dir, bulk_size_visit, &sw);
	if (r == 0 && w.n) {
		int64_t t0 = bulk_now_us();

		r = bulk_sizes_ask(c, pid, project, commit, &w);
		__atomic_add_fetch(&c->bulk.sz_fg_rounds, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&c->bulk.sz_fg_us, (uint64_t)(bulk_now_us() - t0),
		                   __ATOMIC_RELAXED);
	}
	if (r == 0)
		bulk_sizes_latest(c, pid, commit, &sw, true, bulk_dir_hash(dir));
	bulk_size_walk_end(&sw);
out:
	bulk_depth--;
	bulk_list_free(&w);
	free(e);
	if (r == -ENOTSUP)
		return r;
	return r < 0 ? r : 0;
}

/* A look-ahead round: asked by the sizes thread, indexed on a thread of its own while
 * the sizes thread asks the next. */
struct bulk_sz_job {
	struct cache *c;
	int64_t pid;
	char commit[41], project[1024];
	struct bulk_list w;
	struct bulk_size_walk sw;
	struct gl_blob_info *info;
};

static void bulk_sz_job_free(struct bulk_sz_job *j)
{
	bulk_size_walk_end(&j->sw); /* the readers waiting on its directories go on */
	bulk_list_free(&j->w);
	free(j->info);
	free(j);
}

static void *bulk_sz_index_main(void *arg)
{
	struct bulk_sz_job *j = arg;

	bulk_depth++;
	bulk_sizes_index(j->c, j->pid, j->project, j->commit, &j->w, j->info);
	bulk_sizes_latest(j->c, j->pid, j->commit, &j->sw, false, 0);
	bulk_sz_job_free(j);
	return NULL;
}

/* The next round of sizes, from resume (the last directory walked) on in tree order:
 * its directories claimed, where the round after starts noted, its sizes asked; NULL
 * when there is nothing more to ask or the server failed. */
static struct bulk_sz_job *bulk_sizes_ahead_round(struct cache *c, int64_t pid, const char *commit,
                                                  const char *resume)
{
	char dir[BULK_PATH_MAX], probe[BULK_PATH_MAX], *next;
	struct bulk_sz_job *j = calloc(1, sizeof(*j));
	struct tree_entry *e = NULL;
	size_t n = 0;

	if (!j)
		return NULL;
	j->c = c;
	j->pid = pid;
	memcpy(j->commit, commit, 41);
	j->sw = (struct bulk_size_walk){
	    .c = c, .commit = j->commit, .w = &j->w, .max = GL_GQL_PATHS * BULK_GQL_PARALLEL};
	if (!gl_graphql_supported(c->gl) || cache_pid_path(c, pid, j->project) < 0 ||
	    (size_t)snprintf(probe, sizeof(probe), "%s%s", resume, *resume ? "/" : "") >=
	        sizeof(probe) ||
	    bulk_dir_of(c, pid, commit, probe, dir, &e, &n) < 0) {
		free(e);
		bulk_sz_job_free(j);
		return NULL;
	}
	if (!bulk_size_visit(&j->sw, dir, e, n))
		bulk_walk_ahead(c, pid, commit, dir, bulk_size_visit, &j->sw);
	free(e);
	if (!j->w.n || !(next = strdup(j->sw.last))) {
		bulk_sz_job_free(j);
		return NULL;
	}
	pthread_mutex_lock(&c->lock);
	free(c->bulk.sz_resume);
	c->bulk.sz_resume = next;
	pthread_mutex_unlock(&c->lock);
	if (bulk_sizes_fetch(c, j->project, commit, &j->w, &j->info) < 0) {
		bulk_sz_job_free(j);
		return NULL;
	}
	return j;
}

/* Round after round from the last directory walked, until CACHE_SZ_AHEAD rounds are
 * asked ahead of the reader's or the walk finds nothing more to ask. A round's answers
 * are indexed while the next round is asked: the server and reefd work at once, and
 * still at most BULK_GQL_PARALLEL requests are in flight. */
static void *bulk_sizes_ahead_main(void *arg)
{
	struct cache *c = arg;
	bool indexing = false;
	pthread_t ix;

	bulk_depth++;
	pthread_mutex_lock(&c->lock);
	while (!c->stop && c->bulk.sz_resume &&
	       c->bulk.sz_seq + indexing - c->bulk.sz_reader_seq < CACHE_SZ_AHEAD) {
		char commit[41], *resume = strdup(c->bulk.sz_resume);
		int64_t pid = c->bulk.sz_pid;
		struct bulk_sz_job *j = NULL;

		memcpy(commit, c->bulk.sz_commit, sizeof(commit));
		pthread_mutex_unlock(&c->lock);
		if (resume)
			j = bulk_sizes_ahead_round(c, pid, commit, resume);
		free(resume);
		if (indexing)
			pthread_join(ix, NULL);
		indexing = j && pthread_create(&ix, NULL, bulk_sz_index_main, j) == 0;
		if (j && !indexing)
			bulk_sz_index_main(j);
		pthread_mutex_lock(&c->lock);
		if (!j) {
			/* nothing more to ask (the tree's end, or the server failed): a reader's
			 * own round starts the look-ahead anew */
			free(c->bulk.sz_resume);
			c->bulk.sz_resume = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (indexing)
		pthread_join(ix, NULL);
	/* nothing after this but the return: bulk_sizes_kick joins under the lock */
	pthread_mutex_lock(&c->lock);
	c->bulk.sz_running = false;
	pthread_cond_broadcast(&c->bulk.cond);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

void cache_bulk_listing(struct cache *c, int64_t pid, const char *commit, const char *path)
{
	bool moved = false;
	uint64_t h;

	if (bulk_depth || !__atomic_load_n(&c->bulk.sz_any, __ATOMIC_RELAXED))
		return;
	h = bulk_dir_hash(path);
	pthread_mutex_lock(&c->lock);
	for (size_t k = 0; k <= CACHE_SZ_AHEAD; k++) {
		const struct cache_sz_round *q = &c->bulk.sz_ring[k];
		bool hit = false;

		/* a round behind the reader's, or of another reader: no progress */
		if (!q->n || q->seq < c->bulk.sz_reader_seq || q->pid != pid ||
		    strcmp(q->commit, commit) != 0)
			continue;
		if (q->seq == c->bulk.sz_reader_seq && h == c->bulk.sz_first)
			continue;
		for (size_t i = 0; i < q->n && !hit; i++)
			hit = q->dirs[i] == h;
		if (hit) {
			c->bulk.sz_reader_seq = q->seq;
			moved = true;
		}
	}
	if (moved)
		bulk_sizes_kick(c);
	pthread_mutex_unlock(&c->lock);
}

/* Waits for the sizes thread and forgets the rounds (lock held, c->stop set: no round
 * starts another). */
void cache_sizes_stop(struct cache *c)
{
	while (c->bulk.sz_running)
		pthread_cond_wait(&c->bulk.cond, &c->lock);
	if (c->bulk.sz_started)
		pthread_join(c->bulk.sz_th, NULL);
	c->bulk.sz_started = false;
	for (size_t k = 0; k <= CACHE_SZ_AHEAD; k++) {
		free(c->bulk.sz_ring[k].dirs);
		memset(&c->bulk.sz_ring[k], 0, sizeof(c->bulk.sz_ring[k]));
	}
	__atomic_store_n(&c->bulk.sz_any, false, __ATOMIC_RELAXED);
	free(c->bulk.sz_resume);
	c->bulk.sz_resume = NULL;
}

json_t *cache_sizes_stats(struct cache *c)
{
	return json_pack(
	    "{s:I,s:I,s:I,s:I,s:I}", "rounds",
	    (json_int_t)__atomic_load_n(&c->bulk.sz_rounds, __ATOMIC_RELAXED), "reader_rounds",
	    (json_int_t)__atomic_load_n(&c->bulk.sz_fg_rounds, __ATOMIC_RELAXED), "reader_round_ms",
	    (json_int_t)(__atomic_load_n(&c->bulk.sz_fg_us, __ATOMIC_RELAXED) / 1000), "waits",
	    (json_int_t)__atomic_load_n(&c->bulk.sz_waits, __ATOMIC_RELAXED), "wait_ms",
	    (json_int_t)(__atomic_load_n(&c->bulk.sz_wait_us, __ATOMIC_RELAXED) / 1000));
}
