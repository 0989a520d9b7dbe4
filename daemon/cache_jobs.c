/* Background work of the cache layer: prefetch on a bounded worker pool, forget and
 * refresh, and the branches that move (polling and callbacks). See cache_int.h. */
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

/* --- prefetch --- */

/* lock held */
int cache_job_push(struct cache *c, int64_t pid, const char *commit, const char *path,
                   const char *oid, bool tree)
{
	struct cache_job *j;

	if (c->njobs >= CACHE_JOBS_MAX)
		return -EAGAIN;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->path = strdup(path))) {
		free(j);
		return -ENOMEM;
	}
	j->pid = pid;
	memcpy(j->commit, commit, 41);
	memcpy(j->oid, oid, 41);
	j->tree = tree;
	if (c->jobs_tail)
		c->jobs_tail->next = j;
	else
		c->jobs = j;
	c->jobs_tail = j;
	c->njobs++;
	pthread_cond_signal(&c->jobs_cond);
	return 0;
}

void cache_job_run(struct cache *c, struct cache_job *j)
{
	struct tree_entry *e = NULL;
	struct cache_obj *o = NULL;
	size_t n = 0, dropped = 0;
	char child[CACHE_PATH_MAX];
	int r;

	if (!j->tree) {
		r = cache_obj_open(c, j->pid, j->commit, j->path, j->oid, &o);
		if (r == 0)
			r = cache_obj_load(o);
		if (r == 0 && o->s)
			r = stream_wait(o->s);
		cache_obj_close(o);
		if (r < 0 && r != -EIO) /* EIO was noted where it happened */
			cache_err_note(c, "prefetch of %s: %s", j->path, strerror(-r));
		return;
	}
	r = cache_tree(c, j->pid, j->commit, j->path, j->oid, &e, &n);
	if (r < 0) {
		cache_err_note(c, "prefetch of %s/: %s", j->path, strerror(-r));
		return;
	}
	/* the directory's small files in one request before their jobs find them cached */
	cache_bulk_blobs(c, j->pid, j->commit, j->path, NULL);
	/* and its LFS objects' download actions, 100 a batch request, not one each */
	cache_bulk_lfs(c, j->pid, j->commit, j->path, e, n);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < n && !c->stop; i++) {
		bool tree = e[i].mode == TREE_MODE_DIR;

		if (!tree && e[i].mode != TREE_MODE_FILE && e[i].mode != TREE_MODE_EXEC)
			continue;
		if (snprintf(child, sizeof(child), "%s%s%s", j->path, *j->path ? "/" : "",
		             e[i].name) >= (int)sizeof(child))
			continue;
		if (cache_job_push(c, j->pid, j->commit, child, e[i].oid, tree) < 0)
			dropped++;
	}
	pthread_mutex_unlock(&c->lock);
	if (dropped)
		cache_err_note(c, "prefetch of %s/: queue full, %zu entries skipped", j->path,
		               dropped);
	free(e);
}

void *cache_worker_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct cache_job *j;

		while (!c->stop && !c->jobs)
			pthread_cond_wait(&c->jobs_cond, &c->lock);
		if (c->stop)
			break;
		j = c->jobs;
		c->jobs = j->next;
		if (!c->jobs)
			c->jobs_tail = NULL;
		c->njobs--;
		c->busy_workers++;
		pthread_mutex_unlock(&c->lock);
		cache_job_run(c, j);
		free(j->path);
		free(j);
		pthread_mutex_lock(&c->lock);
		c->busy_workers--;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Starts the worker pool at its first job (lock held). */
int cache_workers_start(struct cache *c)
{
	int r = 0;

	if (!c->workers) {
		c->workers = calloc(c->nworkers, sizeof(*c->workers));
		if (!c->workers) {
			r = -ENOMEM;
		} else {
			for (unsigned i = 0; i < c->nworkers && r == 0; i++) {
				r = -pthread_create(&c->workers[i], NULL, cache_worker_main, c);
				if (r < 0) {
					/* fewer workers than asked: the ones started serve */
					c->nworkers = i;
					r = i ? 0 : r;
				}
			}
			if (r < 0) {
				free(c->workers);
				c->workers = NULL;
			}
		}
	}
	return r;
}

int cache_prefetch(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *tree_oid)
{
	int r;

	if (!cache_oid_valid(commit) || !cache_oid_valid(tree_oid) || !cache_path_ok(path))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	r = cache_workers_start(c);
	if (r == 0)
		r = cache_job_push(c, project_id, commit, path, tree_oid, true);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Number of prefetch jobs queued or running (for tests and status). */
size_t cache_jobs_pending(struct cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->njobs + c->busy_workers;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* --- forget, refresh --- */

/* A verified download nobody reads any more is being stored: let it finish, so that
 * forgetting right after a read to the end finds the object (it is in flight only for
 * the time of its fsync and rename). */
void cache_forget_settle(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l;
	struct stream *s = NULL;

	pthread_mutex_lock(&c->lock);
	l = cache_live_find(c, kind, oid);
	if (l && !l->opens && l->s && stream_state(l->s) == 1) {
		s = l->s;
		stream_ref(s);
	}
	pthread_mutex_unlock(&c->lock);
	if (s) {
		stream_wait(s);
		stream_unref(s);
	}
}

int cache_forget_blob(struct cache *c, const char *oid)
{
	struct idx_lfs l;
	uint64_t freed;
	int n = 0;

	cache_forget_settle(c, ODB_KIND_BLOB, oid);
	if (idx_lfs_get(c->idx, oid, &l) == 0 && l.lfs)
		cache_forget_settle(c, ODB_KIND_LFS, l.oid);

	if (idx_lfs_get(c->idx, oid, &l) == 0 && l.lfs && !cache_is_live(c, ODB_KIND_LFS, l.oid) &&
	    odb_remove(c->odb, ODB_KIND_LFS, l.oid, &freed) == 0) {
		idx_obj_del(c->idx, IDX_OBJ_LFS, l.oid);
		n++;
	}
	if (!cache_is_live(c, ODB_KIND_BLOB, oid) &&
	    odb_remove(c->odb, ODB_KIND_BLOB, oid, &freed) == 0) {
		idx_obj_del(c->idx, IDX_OBJ_BLOB, oid);
		n++;
	}
	return n;
}

int cache_forget(struct cache *c, int64_t project_id, const char *oid, bool is_tree)
{
	char(*queue)[41] = NULL;
	size_t head = 0, tail = 0, cap = 0, visited = 0;
	int count = 0;

	(void)project_id;
	if (!cache_oid_valid(oid))
		return -EINVAL;
	cache_touch_flush(c); /* a pending record must not outlive its object */
	if (!is_tree)
		return cache_forget_blob(c, oid);
	/* breadth first over the listings the index holds; what was never listed was never
	 * downloaded through them */
	cap = 64;
	queue = malloc(cap * sizeof(*queue));
	if (!queue)
		return -ENOMEM;
	memcpy(queue[tail++], oid, 41);
	while (head < tail && visited < CACHE_WALK_MAX) {
		struct tree_entry *e = NULL;
		size_t n = 0;
		char cur[41];

		memcpy(cur, queue[head++], 41);
		if (idx_tree_get(c->idx, cur, &e, &n) < 0)
			continue;
		for (size_t i = 0; i < n; i++, visited++) {
			if (e[i].mode == TREE_MODE_DIR) {
				if (tail == cap) {
					char(*nq)[41] = realloc(queue, cap * 2 * sizeof(*queue));

					if (!nq)
						continue;
					queue = nq;
					cap *= 2;
				}
				memcpy(queue[tail++], e[i].oid, 41);
			} else if (e[i].mode != TREE_MODE_SUBMODULE) {
				count += cache_forget_blob(c, e[i].oid);
			}
		}
		free(e);
	}
	free(queue);
	return count;
}

int cache_push(struct cache *c, const char *project_path, const char *branch, const char *old,
               const char *new_id, int pack_fd, uint64_t pack_len, struct gl_push_report *rep)
{
	char ref[600];

	if (snprintf(ref, sizeof(ref), "refs/heads/%s", branch) >= (int)sizeof(ref))
		return -ENAMETOOLONG;
	return gl_git_push(c->gl, project_path, ref, old, new_id, pack_fd, pack_len, rep);
}

int cache_lfs_upload(struct cache *c, const char *project_path, const char *oid, uint64_t size,
                     int fd)
{
	return gl_lfs_upload(c->gl, project_path, oid, size, fd);
}

void cache_refresh(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	/* +1: what was fetched in this very millisecond is stale too */
	__atomic_store_n(&c->refresh_at, cache_now_ms() + 1, __ATOMIC_RELAXED);
	c->have_projects = false;
	for (struct cache_branch *b = c->branches; b; b = b->next)
		b->next_poll = 0;
	pthread_cond_broadcast(&c->maint_cond);
	pthread_mutex_unlock(&c->lock);
}

/* --- branches that move --- */

/* Set on a thread while it runs the callback: replacing the callback from inside it must
 * not wait for itself. */
__thread unsigned cache_in_moved_fn;

void cache_on_branch_moved(struct cache *c, cache_branch_moved_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->moved_fn = fn;
	c->moved_arg = arg;
	/* a call that began with the old callback finishes before its owner may go away */
	while (c->moved_running > cache_in_moved_fn)
		pthread_cond_wait(&c->moved_idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

void cache_branch_moved(struct cache *c, int64_t pid, const char *name, const char *old,
                        const char *now)
{
	cache_branch_moved_fn fn;
	void *arg;

	log_info("cache: branch %s of project %" PRId64 " moved %.12s -> %.12s", name, pid,
	         old && *old ? old : "?", now && *now ? now : "(gone)");
	pthread_mutex_lock(&c->lock);
	fn = c->moved_fn;
	arg = c->moved_arg;
	if (fn)
		c->moved_running++;
	pthread_mutex_unlock(&c->lock);
	if (!fn)
		return;
	cache_in_moved_fn++;
	fn(arg, pid, name, old ? old : "", now ? now : "");
	cache_in_moved_fn--;
	pthread_mutex_lock(&c->lock);
	c->moved_running--;
	pthread_cond_broadcast(&c->moved_idle);
	pthread_mutex_unlock(&c->lock);
}

void cache_branch_touch(struct cache *c, int64_t project_id, const char *branch)
{
	struct cache_branch *b, *oldest = NULL, **pp, **oldest_pp = NULL;
	int64_t now = cache_now_ms();

	if (!branch || !*branch || strlen(branch) > CACHE_REF_MAX)
		return;
	pthread_mutex_lock(&c->lock);
	for (pp = &c->branches; (b = *pp); pp = &b->next) {
		if (b->pid == project_id && strcmp(b->name, branch) == 0) {
			b->touched = now;
			pthread_mutex_unlock(&c->lock);
			return;
		}
		if (!oldest || b->touched < oldest->touched) {
			oldest = b;
			oldest_pp = pp;
		}
	}
	if (c->nbranches >= CACHE_BRANCHES_MAX && oldest_pp) {
		*oldest_pp = oldest->next;
		free(oldest);
		c->nbranches--;
	}
	b = calloc(1, sizeof(*b));
	if (b) {
		b->pid = project_id;
		snprintf(b->name, sizeof(b->name), "%s", branch);
		b->touched = now;
		b->next_poll = now + c->poll_ms;
		b->next = c->branches;
		c->branches = b;
		c->nbranches++;
	}
	pthread_mutex_unlock(&c->lock);
}

struct cache_poll {
	int64_t pid;
	char name[CACHE_REF_MAX + 1];
};

/* Re-asks the heads of branches in use that are due, at most CACHE_POLL_BATCH. */
void cache_poll_branches(struct cache *c)
{
	struct cache_poll due[CACHE_POLL_BATCH];
	size_t n = 0;
	int64_t now = cache_now_ms();

	if (now < gl_retry_until(c->gl))
		return; /* the server asked us to wait (429 Retry-After) */
	pthread_mutex_lock(&c->lock);
	for (struct cache_branch *b = c->branches; b && n < CACHE_POLL_BATCH; b = b->next) {
		if (now - b->touched > CACHE_BRANCH_IDLE_MS || b->next_poll > now)
			continue;
		due[n].pid = b->pid;
		snprintf(due[n].name, sizeof(due[n].name), "%s", b->name);
		n++;
		b->next_poll = now + c->poll_ms; /* at the end of the queue until answered */
	}
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < n && !c->stop; i++) {
		char key[CACHE_REF_MAX + 16], old[41] = "", commit[41];
		json_t *j = NULL;
		bool have;
		int r;

		if (cache_now_ms() < gl_retry_until(c->gl))
			break;
		snprintf(key, sizeof(key), "branch:%s", due[i].name);
		have = idx_ref_get(c->idx, due[i].pid, key, old, NULL) == 0;
		__atomic_add_fetch(&c->polls, 1, __ATOMIC_RELAXED);
		r = gl_branch_get(c->gl, due[i].pid, due[i].name, &j);
		if (r == 0)
			r = cache_ref_from_json(j, CACHE_REF_BRANCH, commit);
		if (r == 0 && (!have || strcmp(old, commit) != 0))
			cache_commit_time_note(c, commit, json_object_get(j, "commit"));
		json_decref(j);
		pthread_mutex_lock(&c->lock);
		for (struct cache_branch *b = c->branches; b; b = b->next) {
			if (b->pid != due[i].pid || strcmp(b->name, due[i].name) != 0)
				continue;
			if (r == 0 || r == -ENOENT) {
				b->backoff_ms = 0;
			} else {
				b->backoff_ms = b->backoff_ms ? b->backoff_ms * 2 : c->poll_ms * 2;
				if (b->backoff_ms > CACHE_BACKOFF_MAX)
					b->backoff_ms = CACHE_BACKOFF_MAX;
				b->next_poll = cache_now_ms() + b->backoff_ms;
			}
		}
		pthread_mutex_unlock(&c->lock);
		if (r == 0) {
			idx_ref_put(c->idx, due[i].pid, key, commit, cache_now_ms());
			if (have && strcmp(old, commit) != 0)
				cache_branch_moved(c, due[i].pid, due[i].name, old, commit);
		} else if (r == -ENOENT && have) {
			/* deleted: the next lookup asks the server and gets its 404 */
			idx_ref_put(c->idx, due[i].pid, key, old, 0);
			cache_branch_moved(c, due[i].pid, due[i].name, old, "");
		}
	}
}

/* Objects on disk the index does not know (a crash between store and index, an older
 * cache) get a record as least recently used, so the limit covers them too. */
int cache_reconcile_one(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes)
{
	struct cache *c = arg;
	struct idx_obj o;

	if (c->stop)
		return -ECANCELED;
	if (idx_obj_get(c->idx, cache_idx_kind(kind), oid, &o) == 0)
		return 0;
	idx_obj_put(c->idx, cache_idx_kind(kind), oid, bytes, 0);
	return 0;
}

void *cache_maint_main(void *arg)
{
	struct cache *c = arg;

	odb_foreach(c->odb, cache_reconcile_one, c);
	cache_evict(c, 0);
	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		struct timespec ts;
		unsigned wait_ms = c->poll_ms < 1000 ? c->poll_ms : 1000;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->maint_cond, &c->lock, &ts);
		if (c->stop)
			break;
		pthread_mutex_unlock(&c->lock);
		cache_touch_flush(c);
		cache_poll_branches(c);
		idx_idle(c->idx);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}
