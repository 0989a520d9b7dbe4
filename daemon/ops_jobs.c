/* Background work of the FUSE operations: the job queues (invalidations on their own
 * thread, prefetches on a small bounded pool), branch moves and sibling prefetch. See
 * ops_int.h. */
#include "ops_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
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

#include "reef/log.h"

/* ---- job queues ---- */

void job_free(struct job *j)
{
	if (!j)
		return;
	free(j->branch);
	free(j->path);
	free(j->inos);
	free(j);
}

void jobq_init(struct jobq *q, size_t max)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	pthread_cond_init(&q->done, NULL);
	q->max = max;
}

void jobq_destroy(struct jobq *q)
{
	while (q->head) {
		struct job *j = q->head;

		q->head = j->next;
		job_free(j);
	}
	pthread_cond_destroy(&q->done);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
}

/* Queues j (taking it) and returns its sequence number, or 0 when the queue is full or
 * stopping (j is freed and counted as dropped). A JOB_BRANCH for a branch already queued
 * only updates the queued one; a JOB_FETCH of an object already queued is dropped. */
uint64_t jobq_push(struct jobq *q, struct job *j)
{
	struct job *x;
	uint64_t seq = 0;

	pthread_mutex_lock(&q->lock);
	for (x = q->head; x; x = x->next) {
		if (j->kind == JOB_BRANCH && x->kind == JOB_BRANCH &&
		    x->project_id == j->project_id && strcmp(x->branch, j->branch) == 0) {
			memcpy(x->commit, j->commit, sizeof(x->commit));
			seq = x->seq;
			goto out;
		}
		if (j->kind == JOB_FETCH && x->kind == JOB_FETCH && strcmp(x->oid, j->oid) == 0) {
			seq = x->seq;
			goto out;
		}
	}
	if (q->stop || q->len >= q->max) {
		q->dropped++;
		goto out;
	}
	j->seq = seq = ++q->next_seq;
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	q->len++;
	j = NULL;
	pthread_cond_signal(&q->cond);
out:
	pthread_mutex_unlock(&q->lock);
	job_free(j);
	return seq;
}

/* Waits until the job with this sequence number (and every one before it) is done, at
 * most ms milliseconds. Only for single-threaded queues, where jobs finish in order. */
bool jobq_wait(struct jobq *q, uint64_t seq, unsigned ms)
{
	struct timespec until;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&q->lock);
	while (q->done_seq < seq && !q->stop)
		if (pthread_cond_timedwait(&q->done, &q->lock, &until) != 0)
			break;
	ok = q->done_seq >= seq;
	pthread_mutex_unlock(&q->lock);
	return ok;
}

/* Whether the queue is being stopped: a long job gives up at its next step, so an
 * unmount does not wait for a large prefetch to finish. */
bool jobq_stopping(struct jobq *q)
{
	bool stop;

	pthread_mutex_lock(&q->lock);
	stop = q->stop;
	pthread_mutex_unlock(&q->lock);
	return stop;
}

struct worker_arg {
	struct ops_ctx *ctx;
	struct jobq *q;
};

void job_run(struct ops_ctx *ctx, struct job *j, char *buf);

void *worker_main(void *arg)
{
	struct ops_ctx *ctx = ((struct worker_arg *)arg)->ctx;
	struct jobq *q = ((struct worker_arg *)arg)->q;
	char *buf = NULL;

	free(arg);
	if (q == &ctx->fetch)
		buf = malloc(FETCH_BUF);
	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct job *j;

		while (!q->head && !q->stop)
			pthread_cond_wait(&q->cond, &q->lock);
		if (q->stop)
			break;
		j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		q->len--;
		q->running++;
		pthread_mutex_unlock(&q->lock);
		if (j->kind != JOB_FETCH || buf)
			job_run(ctx, j, buf);
		pthread_mutex_lock(&q->lock);
		q->running--;
		q->completed++;
		if (j->seq > q->done_seq)
			q->done_seq = j->seq;
		pthread_cond_broadcast(&q->done);
		job_free(j);
	}
	pthread_mutex_unlock(&q->lock);
	free(buf);
	return NULL;
}

int jobq_start(struct ops_ctx *ctx, struct jobq *q, size_t nthreads)
{
	size_t i;

	for (i = 0; i < nthreads; i++) {
		struct worker_arg *a = malloc(sizeof(*a));
		int r;

		if (!a)
			return -ENOMEM;
		a->ctx = ctx;
		a->q = q;
		r = pthread_create(&q->threads[i], NULL, worker_main, a);
		if (r != 0) {
			free(a);
			return -r;
		}
		q->nthreads++;
	}
	return 0;
}

void jobq_stop(struct jobq *q)
{
	size_t i;

	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_cond_broadcast(&q->done);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	q->nthreads = 0;
}

/* ---- background jobs ---- */

void send_inval_inode(struct ops_ctx *ctx, uint64_t ino)
{
	int r = fuse_lowlevel_notify_inval_inode(ctx->se, ino, 0, 0);

	if (r < 0 && r != -ENOENT)
		log_debug("invalidating inode %" PRIu64 ": %s", ino, strerror(-r));
}

/* A branch moved: the kernel forgets the name of every older revision root of it and
 * their cached listings, so the next access looks the branch up again. Runs on the
 * invalidation thread, never inside an operation handler (fuse_lowlevel.h: notifying
 * from a related operation deadlocks). */
void job_branch(struct ops_ctx *ctx, struct job *j)
{
	struct node_rev *revs = NULL;
	size_t n = 0, i, sent = 0;

	if (node_branch_revs(ctx->nodes, j->project_id, j->branch, &revs, &n) < 0)
		return;
	for (i = 0; i < n; i++) {
		int r;

		if (strcmp(revs[i].commit, j->commit) == 0)
			continue;
		r = fuse_lowlevel_notify_inval_entry(ctx->se, revs[i].parent, revs[i].name,
		                                     strlen(revs[i].name));
		if (r < 0 && r != -ENOENT)
			log_debug("invalidating branches/%s: %s", j->branch, strerror(-r));
		send_inval_inode(ctx, revs[i].ino);
		sent++;
	}
	free(revs);
	pthread_mutex_lock(&ctx->ctl_lock);
	ctx->invalidations += sent;
	pthread_mutex_unlock(&ctx->ctl_lock);
	log_info("branch %s of project %" PRId64 " moved to %.12s; %zu revision root%s invalidated",
	         j->branch, j->project_id, j->commit, sent, sent == 1 ? "" : "s");
}

/* Brings one object into the cache: opening it shares or starts the download, reading
 * it through waits until the whole object arrived and verified. */
void job_fetch(struct ops_ctx *ctx, struct job *j, char *buf)
{
	struct cache_blob_info info;
	struct cache_obj *o = NULL;
	uint64_t size, off = 0;
	ssize_t got;
	int r;

	if (j->max_size != UINT64_MAX) {
		if (CACHE_LFS_CANDIDATE(j->listed_size)) {
			r = cache_blob_info(ctx->cache, j->project_id, j->commit, j->path, j->oid,
			                    j->listed_size, &info);
			if (r < 0)
				return;
			size = info.size;
		} else {
			size = (uint64_t)j->listed_size;
		}
		if (size > j->max_size)
			return;
	}
	r = cache_obj_open(ctx->cache, j->project_id, j->commit, j->path, j->oid, &o);
	if (r < 0) {
		log_debug("prefetch of %s failed: %s", j->path, strerror(-r));
		return;
	}
	size = cache_obj_size(o);
	while (off < size && cache_obj_fd(o) < 0 && !jobq_stopping(&ctx->fetch)) {
		got = cache_obj_pread(o, buf, FETCH_BUF, off);
		if (got <= 0) {
			if (got < 0)
				log_debug("prefetch of %s failed: %s", j->path,
				          strerror((int)-got));
			break;
		}
		off += (uint64_t)got;
	}
	cache_obj_close(o);
}

void job_run(struct ops_ctx *ctx, struct job *j, char *buf)
{
	size_t i;

	switch (j->kind) {
	case JOB_BRANCH:
		job_branch(ctx, j);
		break;
	case JOB_INVAL:
		for (i = 0; i < j->n; i++)
			send_inval_inode(ctx, j->inos[i]);
		break;
	case JOB_FETCH:
		job_fetch(ctx, j, buf);
		break;
	}
}

/* Called by the cache from its poller, or from the thread whose lookup noticed; both may
 * be inside an operation handler, so this only queues. */
void on_branch_moved(void *arg, int64_t project_id, const char *branch, const char *old_commit,
                     const char *new_commit)
{
	struct ops_ctx *ctx = arg;
	struct job *j = calloc(1, sizeof(*j));

	(void)old_commit;
	if (!j || !(j->branch = strdup(branch))) {
		free(j);
		log_warn("branch %s moved, but there is no memory to invalidate it", branch);
		return;
	}
	j->kind = JOB_BRANCH;
	j->project_id = project_id;
	snprintf(j->commit, sizeof(j->commit), "%s", new_commit ? new_commit : "");
	if (jobq_push(&ctx->inval, j) == 0)
		log_warn(
		    "branch %s moved; invalidation queue full, the kernel notices within %.3gs",
		    branch, ctx->branch_timeout);
}

void branch_changed_wait(struct ops_ctx *ctx, int64_t project_id, const char *branch)
{
	struct job *j = calloc(1, sizeof(*j));
	uint64_t seq;

	if (!j || !(j->branch = strdup(branch))) {
		free(j);
		return; /* the branch's short timeouts let the kernel notice soon */
	}
	j->kind = JOB_BRANCH;
	j->project_id = project_id;
	seq = jobq_push(&ctx->inval, j);
	if (seq && ctx->se)
		jobq_wait(&ctx->inval, seq, INVAL_WAIT_MS);
}

/* Queues a download of a file's object; 0, or -EAGAIN when the queue is full. */
int fetch_queue(struct ops_ctx *ctx, int64_t project_id, const char *commit, const char *path,
                const char *oid, int64_t listed_size, uint64_t max_size)
{
	struct job *j = calloc(1, sizeof(*j));

	if (!j || !(j->path = strdup(path))) {
		free(j);
		return -ENOMEM;
	}
	j->kind = JOB_FETCH;
	j->project_id = project_id;
	snprintf(j->commit, sizeof(j->commit), "%s", commit);
	snprintf(j->oid, sizeof(j->oid), "%s", oid);
	j->listed_size = listed_size;
	j->max_size = max_size;
	return jobq_push(&ctx->fetch, j) ? 0 : -EAGAIN;
}

/* Drops the kernel's pages and attributes of these inodes (taking inos), waiting a
 * bounded time for the notifications to be sent. */
void inval_inodes(struct ops_ctx *ctx, uint64_t *inos, size_t n)
{
	struct job *j;
	uint64_t seq;

	if (n == 0 || !ctx->se) {
		free(inos);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		free(inos);
		return;
	}
	j->kind = JOB_INVAL;
	j->inos = inos;
	j->n = n;
	seq = jobq_push(&ctx->inval, j);
	if (seq)
		jobq_wait(&ctx->inval, seq, INVAL_WAIT_MS);
}

/* Sibling prefetch: when files of one directory are opened one after the other (listing
 * order, forward by one or two), the next few siblings are queued for download. At most
 * prefetch_ahead beyond the last open, never twice, small files only. */
void sibling_note(struct ops_ctx *ctx, const struct node *n)
{
	struct node *dir = n->parent;
	const struct node_listing *l;
	const struct node_dirent *d;
	struct seq_slot *s;
	size_t i, from = 0, to = 0, k;
	char path[NODE_PATH_MAX];

	if (!ctx->prefetch_ahead || !ctx->started || !dir ||
	    (dir->kind != NODE_REV && dir->kind != NODE_TREE))
		return;
	l = node_listing_get(ctx->nodes, dir);
	d = l ? node_listing_find(l, n->name) : NULL;
	if (!d)
		return;
	i = (size_t)(d - l->e);
	pthread_mutex_lock(&ctx->seq_lock);
	s = &ctx->seq[(dir->ino * 11400714819323198485ULL) >> 58];
	if (s->dir != dir->ino) {
		*s = (struct seq_slot){.dir = dir->ino, .last = i, .ahead = i};
	} else if (i != s->last) {
		s->streak = i > s->last && i <= s->last + 2 ? s->streak + 1 : 0;
		s->last = i;
		if (s->streak >= SEQ_STREAK) {
			from = (s->ahead > i ? s->ahead : i) + 1;
			to = i + ctx->prefetch_ahead;
			if (to >= l->n)
				to = l->n - 1;
			if (to >= from)
				s->ahead = to;
		}
		if (s->ahead < i)
			s->ahead = i;
	}
	pthread_mutex_unlock(&ctx->seq_lock);
	for (k = from; to && k <= to; k++) {
		const struct node_dirent *e = &l->e[k];

		if (e->mode != TREE_MODE_FILE && e->mode != TREE_MODE_EXEC)
			continue;
		if (e->size > 0 && (uint64_t)e->size > SIBLING_MAX_SIZE)
			continue;
		if (node_path_join(path, sizeof(path), dir->kind == NODE_REV ? "" : dir->path,
		                   e->name) < 0)
			continue;
		if (fetch_queue(ctx, dir->project_id, dir->commit, path, e->oid, e->size,
		                SIBLING_MAX_SIZE) == -EAGAIN)
			break;
	}
}
