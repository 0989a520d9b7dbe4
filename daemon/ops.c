#include "ops.h"

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

#include "cache.h"
#include "mlfs.h"
#include "node.h"
#include "passthru.h"
#include "reef/log.h"
#include "reef/util.h"

#ifndef REEF_VERSION
#define REEF_VERSION "unknown"
#endif

/* Names whose binding can never change (inside a revision, tags, commits) are cached by
 * the kernel for a year; attributes of every node but the generated .reef files never
 * change because a node's identity includes the object it shows. */
#define FOREVER_S         (365.0 * 24 * 3600)
#define STATUS_MAX        (64 * 1024)
#define READ_MAX          (4u << 20)
#define OPS_CTL_MAX       (64 * 1024) /* one control request; larger writes are EFBIG */
#define OPS_CTL_ERROR_MAX 1024
#define XATTR_OID         "user.reef.oid"
#define XATTR_COMMIT      "user.reef.commit"
#define XATTR_LFS         "user.reef.lfs.oid"

/* Background work. Invalidations have their own thread so a slow download never delays
 * them; prefetches share a small pool with a bounded queue, so a huge directory read in
 * order cannot turn into a storm of requests. */
#define INVAL_QUEUE_MAX      4096
#define FETCH_QUEUE_MAX      64
#define FETCH_THREADS        2
#define FETCH_BUF            (1u << 20)
#define SIBLING_MAX_SIZE     ((uint64_t)64 << 20) /* larger siblings are not prefetched */
#define SEQ_SLOTS            64                   /* directories tracked for sequential opens */
#define SEQ_STREAK           2    /* consecutive sibling opens before prefetching starts */
#define INVAL_WAIT_MS        3000 /* how long a ctl write waits for its invalidations */
#define OPS_PREFETCH_NOCAP   UINT64_MAX
#define OPS_MAX_BACKGROUND   32
#define BRANCH_TIMEOUT_POLLS 10   /* a branch root's entry lives this many poll intervals */
#define BRANCH_TIMEOUT_MAX   60.0 /* seconds, at most */

/* Open files and directories, so those the kernel never released (a signal ended the
 * session) are freed with the context. */
struct ops_handle {
	struct ops_handle *prev, *next;
	bool is_dir;
};

enum job_kind { JOB_BRANCH, JOB_INVAL, JOB_FETCH };

struct job {
	struct job *next;
	enum job_kind kind;
	uint64_t seq;
	int64_t project_id;
	char *branch;        /* JOB_BRANCH: full branch name */
	char commit[41];     /* JOB_BRANCH: the new head; JOB_FETCH: the commit of path */
	char *path;          /* JOB_FETCH: the file's path in commit */
	char oid[41];        /* JOB_FETCH: the blob */
	int64_t listed_size; /* JOB_FETCH: the size its listing gave (-1 unknown) */
	uint64_t max_size;   /* JOB_FETCH: skip objects larger than this */
	uint64_t *inos;      /* JOB_INVAL: inodes whose pages and attributes to drop */
	size_t n;
};

struct jobq {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* work queued, or stop */
	pthread_cond_t done; /* a job finished */
	struct job *head, *tail;
	size_t len, max, running;
	uint64_t next_seq, done_seq;
	uint64_t completed, dropped;
	bool stop;
	pthread_t threads[FETCH_THREADS];
	size_t nthreads;
};

/* Sequential opens of siblings: the directory, the listing index opened last, how many
 * opens in a row went forward by one or two, and how far prefetch has been queued. */
struct seq_slot {
	uint64_t dir;
	size_t last, ahead;
	unsigned streak;
};

/* The commit a branch or tag under a directory resolved to last (keyed by a hash of
 * directory inode and name), so a listing of branches/ or tags/ can give the d_ino the
 * lookup will. A fixed table: an entry pushed out only costs a stand-in d_ino. */
#define REFMEM_SLOTS 1024
struct refmem {
	uint64_t dir, hash;
	char commit[41];
};

struct ops_ctx {
	struct cache *cache;
	struct fuse_session *se;
	pthread_mutex_t hlock;
	struct ops_handle handles; /* list head */
	struct node_table *nodes;
	char *server;
	char *mountpoint;
	double dyn_timeout;
	double branch_timeout;
	double poll_s;
	unsigned prefetch_ahead;
	unsigned readahead_kb;
	uint64_t forgotten; /* entries forgotten since the last malloc_trim (atomic) */
	bool no_opendir;    /* the kernel opens directories without asking (set at init) */
	uid_t uid;
	gid_t gid;
	struct timespec mount_time;

	struct jobq inval;
	struct jobq fetch;
	bool started;

	pthread_mutex_t seq_lock; /* also guards refmem */
	struct seq_slot seq[SEQ_SLOTS];
	struct refmem refmem[REFMEM_SLOTS];

	pthread_mutex_t ctl_lock;
	char ctl_error[OPS_CTL_ERROR_MAX];
	uint64_t ctl_requests, ctl_errors, invalidations;

	struct mlfs *ml; /* experiments, pipelines, processors; NULL without them */
};

/* An open file: a cached object, the bytes of a generated file (.reef/status,
 * .reef/ctl.error) rendered at open, or the control file. */
struct ops_file {
	struct ops_handle h;
	struct cache_obj *obj;
	char *data;
	size_t len;
	bool ctl;
	bool counted; /* its open is counted by passthru_open */
	bool pass;    /* the kernel reads the cache file itself */
	uint64_t ino;
};

struct ops_dirent {
	char *name;
	uint64_t ino;
	mode_t type;
};

/* A directory snapshot taken at opendir, so offsets stay valid however the remote side
 * changes meanwhile. Revision directories share the node's immutable listing. */
struct ops_dir {
	struct ops_handle h;
	struct node *node; /* pinned */
	const struct node_listing *listing;
	struct ops_dirent *v;
	size_t n;
};

static_assert((int)NODE_REF_BRANCH == (int)CACHE_REF_BRANCH &&
                  (int)NODE_REF_TAG == (int)CACHE_REF_TAG &&
                  (int)NODE_REF_COMMIT == (int)CACHE_REF_COMMIT,
              "node and cache ref kinds must agree");

static struct ops_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ---- job queues ---- */

static void job_free(struct job *j)
{
	if (!j)
		return;
	free(j->branch);
	free(j->path);
	free(j->inos);
	free(j);
}

static void jobq_init(struct jobq *q, size_t max)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	pthread_cond_init(&q->done, NULL);
	q->max = max;
}

static void jobq_destroy(struct jobq *q)
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
static uint64_t jobq_push(struct jobq *q, struct job *j)
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
static bool jobq_wait(struct jobq *q, uint64_t seq, unsigned ms)
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
static bool jobq_stopping(struct jobq *q)
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

static void job_run(struct ops_ctx *ctx, struct job *j, char *buf);

static void *worker_main(void *arg)
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

static int jobq_start(struct ops_ctx *ctx, struct jobq *q, size_t nthreads)
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

static void jobq_stop(struct jobq *q)
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

/* ---- context ---- */

int ops_ctx_new(struct ops_ctx **out, const struct ops_opts *o)
{
	struct ops_ctx *ctx = calloc(1, sizeof(*ctx));
	int r;

	*out = NULL;
	if (!ctx)
		return -ENOMEM;
	ctx->server = strdup(o->server);
	ctx->mountpoint = strdup(o->mountpoint ? o->mountpoint : "");
	if (!ctx->server || !ctx->mountpoint) {
		free(ctx->server);
		free(ctx->mountpoint);
		free(ctx);
		return -ENOMEM;
	}
	r = node_table_new(&ctx->nodes);
	if (r < 0) {
		free(ctx->server);
		free(ctx->mountpoint);
		free(ctx);
		return r;
	}
	pthread_mutex_init(&ctx->hlock, NULL);
	pthread_mutex_init(&ctx->seq_lock, NULL);
	pthread_mutex_init(&ctx->ctl_lock, NULL);
	jobq_init(&ctx->inval, INVAL_QUEUE_MAX);
	jobq_init(&ctx->fetch, FETCH_QUEUE_MAX);
	ctx->handles.prev = ctx->handles.next = &ctx->handles;
	ctx->dyn_timeout = o->branch_timeout_s;
	ctx->poll_s = o->poll_s;
	/* The poller invalidates a moved branch's root explicitly; the timeout only bounds
	 * how stale it can get when nothing polls it (unused for a while) or an
	 * invalidation was lost, and must not hide a move from a lookup for long. */
	ctx->branch_timeout = o->poll_s * BRANCH_TIMEOUT_POLLS;
	if (ctx->branch_timeout > BRANCH_TIMEOUT_MAX)
		ctx->branch_timeout = BRANCH_TIMEOUT_MAX;
	if (ctx->branch_timeout < o->branch_timeout_s)
		ctx->branch_timeout = o->branch_timeout_s;
	ctx->prefetch_ahead = o->prefetch_ahead;
	ctx->readahead_kb = o->readahead_kb;
	ctx->uid = getuid();
	ctx->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &ctx->mount_time);
	*out = ctx;
	return 0;
}

int ops_ctx_set_mlops(struct ops_ctx *ctx, struct mlops *m)
{
	return mlfs_new(&ctx->ml, ctx->nodes, ctx->cache, m);
}

void ops_ctx_set_cache(struct ops_ctx *ctx, struct cache *c)
{
	ctx->cache = c;
}

static void on_branch_moved(void *arg, int64_t project_id, const char *branch,
                            const char *old_commit, const char *new_commit);

int ops_ctx_start(struct ops_ctx *ctx, struct fuse_session *se)
{
	int r;

	ctx->se = se;
	ctx->started = true;
	r = jobq_start(ctx, &ctx->inval, 1);
	if (r == 0)
		r = jobq_start(ctx, &ctx->fetch, FETCH_THREADS);
	if (r < 0)
		return r;
	cache_on_branch_moved(ctx->cache, on_branch_moved, ctx);
	return 0;
}

void ops_ctx_stop(struct ops_ctx *ctx)
{
	if (!ctx || !ctx->started)
		return;
	if (ctx->cache)
		cache_on_branch_moved(ctx->cache, NULL, NULL);
	jobq_stop(&ctx->fetch);
	jobq_stop(&ctx->inval);
	ctx->started = false;
}

static void handle_track(struct ops_ctx *ctx, struct ops_handle *h, bool is_dir)
{
	h->is_dir = is_dir;
	pthread_mutex_lock(&ctx->hlock);
	h->next = ctx->handles.next;
	h->prev = &ctx->handles;
	h->next->prev = h;
	ctx->handles.next = h;
	pthread_mutex_unlock(&ctx->hlock);
}

static void handle_untrack(struct ops_ctx *ctx, struct ops_handle *h)
{
	pthread_mutex_lock(&ctx->hlock);
	if (h->next) {
		h->prev->next = h->next;
		h->next->prev = h->prev;
		h->prev = h->next = NULL;
	}
	pthread_mutex_unlock(&ctx->hlock);
}

static void file_free(struct ops_ctx *ctx, struct ops_file *f)
{
	if (!f)
		return;
	handle_untrack(ctx, &f->h);
	if (f->counted)
		passthru_release(f->ino, f->pass);
	cache_obj_close(f->obj);
	free(f->data);
	free(f);
}

static void dir_free(struct ops_ctx *ctx, struct ops_dir *d);

void ops_ctx_free(struct ops_ctx *ctx)
{
	if (!ctx)
		return;
	ops_ctx_stop(ctx);
	while (ctx->handles.next != &ctx->handles) {
		struct ops_handle *h = ctx->handles.next;

		if (h->is_dir)
			dir_free(ctx, (struct ops_dir *)h);
		else
			file_free(ctx, (struct ops_file *)h);
	}
	jobq_destroy(&ctx->fetch);
	jobq_destroy(&ctx->inval);
	pthread_mutex_destroy(&ctx->ctl_lock);
	pthread_mutex_destroy(&ctx->seq_lock);
	pthread_mutex_destroy(&ctx->hlock);
	mlfs_free(ctx->ml);
	node_table_free(ctx->nodes);
	free(ctx->server);
	free(ctx->mountpoint);
	free(ctx);
}

static bool is_dir_kind(enum node_kind k)
{
	return S_ISDIR(node_st_mode(&(struct node){.kind = k}));
}

/* ---- generated files: .reef/status and .reef/ctl.error ---- */

static json_t *jobq_json(struct jobq *q)
{
	json_t *o;

	pthread_mutex_lock(&q->lock);
	o = json_pack("{sIsIsIsI}", "queued", (json_int_t)q->len, "running", (json_int_t)q->running,
	              "done", (json_int_t)q->completed, "dropped", (json_int_t)q->dropped);
	pthread_mutex_unlock(&q->lock);
	return o;
}

static int status_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	json_t *o = json_object(), *user = NULL, *stats = NULL;
	struct passthru_stats pt;
	char when[32];
	struct tm tm;
	char *s = NULL;
	int r = -ENOMEM;

	*out = NULL;
	if (!o)
		return -ENOMEM;
	gmtime_r(&ctx->mount_time.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(o, "server", json_string(ctx->server));
	if (cache_user(ctx->cache, &user) == 0 && json_is_string(json_object_get(user, "username")))
		json_object_set(o, "user", json_object_get(user, "username"));
	else
		json_object_set_new(o, "user", json_null());
	if (cache_stats(ctx->cache, &stats) == 0)
		json_object_set_new(o, "cache", stats);
	else
		json_object_set_new(o, "cache", json_null());
	json_object_set_new(o, "mounted_at", json_string(when));
	json_object_set_new(o, "mount_time", json_integer(ctx->mount_time.tv_sec));
	json_object_set_new(o, "version", json_string(REEF_VERSION));
	json_object_set_new(o, "inodes", json_integer((json_int_t)node_table_count(ctx->nodes)));
	mlfs_status(ctx->ml, o);
	json_object_set_new(o, "poll_s", json_real(ctx->poll_s));
	json_object_set_new(o, "prefetch", jobq_json(&ctx->fetch));
	passthru_stats(&pt);
	json_object_set_new(o, "passthrough",
	                    json_pack("{sbsIsI}", "on", pt.on, "opens", (json_int_t)pt.opens,
	                              "refused", (json_int_t)pt.refused));
	pthread_mutex_lock(&ctx->ctl_lock);
	json_object_set_new(o, "ctl",
	                    json_pack("{sIsI}", "requests", (json_int_t)ctx->ctl_requests, "errors",
	                              (json_int_t)ctx->ctl_errors));
	json_object_set_new(o, "invalidations", json_integer((json_int_t)ctx->invalidations));
	pthread_mutex_unlock(&ctx->ctl_lock);
	s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!s)
		goto out;
	*len = strlen(s);
	if (*len + 1 > STATUS_MAX) {
		free(s);
		r = -EFBIG;
		goto out;
	}
	s[(*len)++] = '\n'; /* json_dumps leaves room: it allocated strlen + 1 */
	*out = s;
	r = 0;
out:
	json_decref(user);
	json_decref(o);
	return r;
}

static int reefctl_error_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	pthread_mutex_lock(&ctx->ctl_lock);
	*out = strdup(ctx->ctl_error);
	pthread_mutex_unlock(&ctx->ctl_lock);
	if (!*out)
		return -ENOMEM;
	*len = strlen(*out);
	return 0;
}

static int generated_render(struct ops_ctx *ctx, const struct node *n, char **out, size_t *len)
{
	return n->kind == NODE_STATUS ? status_render(ctx, out, len)
	                              : reefctl_error_render(ctx, out, len);
}

/* ---- attributes ---- */

/* Directories whose entries can change: the rest (revision content, submodules,
 * commits/) list the same for ever. */
static bool listing_can_change(const struct node *n)
{
	switch (n->kind) {
	case NODE_ROOT:
	case NODE_CTL_DIR:
	case NODE_NAMESPACE:
	case NODE_PROJECT:
	case NODE_REF_PREFIX:
	case NODE_ML_DIR:
		return true;
	case NODE_REFS:
		return n->ref_kind != NODE_REF_COMMIT;
	default:
		return false;
	}
}

static void fill_attr(struct ops_ctx *ctx, const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = node_st_mode(n);
	st->st_nlink = S_ISDIR(st->st_mode) ? 2 : 1;
	st->st_uid = ctx->uid;
	st->st_gid = ctx->gid;
	st->st_blksize = 4096;
	switch (n->kind) {
	case NODE_FILE:
	case NODE_SYMLINK:
		st->st_size = n->size;
		break;
	case NODE_HEAD:
		st->st_size = (off_t)(strlen("branches/") + strlen(n->oid));
		break;
	case NODE_CONTROL:
	case NODE_ML_CTL:
		st->st_size = 0;
		break;
	case NODE_ML_FILE:
		st->st_size = mlfs_size(ctx->ml, n);
		break;
	case NODE_STATUS:
	case NODE_CONTROL_ERROR: {
		char *s;
		size_t len;

		if (generated_render(ctx, n, &s, &len) == 0) {
			st->st_size = (off_t)len;
			free(s);
		}
		break;
	}
	default:
		st->st_size = 4096;
		break;
	}
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_atim = ctx->mount_time;
	st->st_mtim = ctx->mount_time;
	st->st_ctim = ctx->mount_time;
	/* The kernel keeps a directory's listing (no opendir: every directory is cached)
	 * until it sees another mtime at a rewind; a listing that can change shows the time
	 * its attributes were fetched, so it is listed anew once they expired. */
	if (ctx->no_opendir && listing_can_change(n)) {
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		st->st_ctim = st->st_mtim;
	}
}

static double attr_timeout(struct ops_ctx *ctx, const struct node *n)
{
	if (ctx->no_opendir && listing_can_change(n))
		return ctx->dyn_timeout;
	return n->kind == NODE_STATUS || n->kind == NODE_CONTROL_ERROR || n->kind == NODE_ML_FILE ||
	               n->kind == NODE_ML_CTL
	           ? 0.0
	           : FOREVER_S;
}

/* The revision root a node is in, or NULL outside revisions. */
static const struct node *rev_of(const struct node *n)
{
	while (n && n->kind != NODE_REV)
		n = n->parent;
	return n;
}

/* Tells the cache a branch is in use, so its poller watches the head. */
static void touch_branch(struct ops_ctx *ctx, const struct node *n)
{
	const struct node *rev = rev_of(n);

	if (rev && rev->ref_kind == NODE_REF_BRANCH)
		cache_branch_touch(ctx->cache, rev->project_id, rev->path);
}

/* How long the kernel may keep the binding parent/child. A branch's revision root is
 * re-checked at the poll interval and invalidated explicitly when the poller sees it
 * move; other names that can change are short-lived; the rest is for ever. */
static double entry_timeout(struct ops_ctx *ctx, const struct node *parent, const struct node *n)
{
	if (node_entry_is_immutable(parent))
		return FOREVER_S;
	if (n && n->kind == NODE_REV && n->ref_kind == NODE_REF_BRANCH)
		return ctx->branch_timeout;
	return ctx->dyn_timeout;
}

/* ---- resolving names ---- */

static uint64_t refmem_hash(uint64_t dir, const char *name)
{
	uint64_t h = 14695981039346656037ULL ^ dir;

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Remembers the commit a ref resolved to under dir, for listings of dir. */
static void refmem_put(struct ops_ctx *ctx, uint64_t dir, const char *name, const char *commit)
{
	uint64_t h = refmem_hash(dir, name);
	struct refmem *m = &ctx->refmem[h % REFMEM_SLOTS];

	pthread_mutex_lock(&ctx->seq_lock);
	m->dir = dir;
	m->hash = h;
	snprintf(m->commit, sizeof(m->commit), "%s", commit);
	pthread_mutex_unlock(&ctx->seq_lock);
}

/* The commit a ref named the last time this mount resolved it, without asking the
 * server; false for one never resolved (or pushed out of the small table). */
static bool ref_commit_known(struct ops_ctx *ctx, const struct node *dir, const char *name,
                             char commit[41])
{
	uint64_t h = refmem_hash(dir->ino, name);
	struct refmem *m = &ctx->refmem[h % REFMEM_SLOTS];
	bool ok;

	pthread_mutex_lock(&ctx->seq_lock);
	ok = m->dir == dir->ino && m->hash == h && m->commit[0];
	if (ok)
		memcpy(commit, m->commit, 41);
	pthread_mutex_unlock(&ctx->seq_lock);
	return ok;
}

static void log_remote_error(int r, const char *what, const char *name)
{
	if (r == -ENOENT)
		return;
	if (r == -EIO)
		log_warn("%s %s: server unreachable or bad answer, not cached", what, name);
	else
		log_warn("%s %s: %s", what, name, strerror(-r));
}

static int project_paths(const struct cache_project *p, size_t n, const char ***out)
{
	const char **v = calloc(n ? n : 1, sizeof(*v));
	size_t i;

	if (!v)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		v[i] = p[i].path;
	*out = v;
	return 0;
}

static int lookup_project(struct ops_ctx *ctx, struct node *parent, const char *name,
                          const struct cache_project *p, struct node **out)
{
	char id[32];
	struct node_attrs a = {.kind = NODE_PROJECT, .path = p->path, .project_id = p->id};

	snprintf(id, sizeof(id), "%" PRId64, p->id);
	a.oid = id;
	return node_lookup(ctx->nodes, parent, name, &a, out);
}

/* Under the root and namespaces: a namespace (prefix of member projects' paths), a member
 * project, or — below a known namespace — any project visible to the user. */
static int lookup_namespace_child(struct ops_ctx *ctx, struct node *parent, const char *name,
                                  struct node **out)
{
	struct cache_project *list = NULL, one;
	const char **paths = NULL;
	char full[NODE_PATH_MAX];
	size_t n = 0, i;
	int r, cls = 0;

	r = node_path_join(full, sizeof(full), parent->path, name);
	if (r < 0)
		return r;
	r = cache_projects_list(ctx->cache, &list, &n);
	if (r == 0) {
		r = project_paths(list, n, &paths);
		if (r < 0)
			goto out;
		cls = node_path_classify(paths, n, parent->path, name);
	} else if (parent->kind == NODE_ROOT) {
		goto out;
	}
	if (cls & 1) {
		for (i = 0; i < n; i++)
			if (strcmp(list[i].path, full) == 0)
				break;
		r = lookup_project(ctx, parent, name, &list[i], out);
	} else if (cls & 2) {
		struct node_attrs a = {.kind = NODE_NAMESPACE, .path = full};

		r = node_lookup(ctx->nodes, parent, name, &a, out);
	} else if (parent->kind == NODE_NAMESPACE) {
		r = cache_project_get(ctx->cache, full, &one);
		if (r == 0)
			r = lookup_project(ctx, parent, name, &one, out);
	} else {
		r = -ENOENT;
	}
out:
	free(paths);
	free(list);
	return r;
}

static int lookup_head(struct ops_ctx *ctx, struct node *parent, struct node **out)
{
	struct cache_project p;
	struct node_attrs a = {.kind = NODE_HEAD};
	int r;

	r = cache_project_get(ctx->cache, parent->path, &p);
	if (r < 0)
		return r;
	if (!p.default_branch[0])
		return -ENOENT;
	a.oid = p.default_branch;
	return node_lookup(ctx->nodes, parent, "HEAD", &a, out);
}

static int lookup_rev(struct ops_ctx *ctx, struct node *parent, const char *name, const char *ref,
                      struct node **out)
{
	char commit[41];
	struct node_attrs a = {.kind = NODE_REV, .path = ref};
	int r;

	r = cache_ref_resolve(ctx->cache, parent->project_id, (enum cache_ref_kind)parent->ref_kind,
	                      ref, commit);
	if (r < 0)
		return r;
	if (parent->ref_kind == NODE_REF_BRANCH)
		cache_branch_touch(ctx->cache, parent->project_id, ref);
	if (parent->ref_kind != NODE_REF_COMMIT)
		refmem_put(ctx, parent->ino, name, commit);
	a.oid = commit;
	a.commit = commit;
	return node_lookup(ctx->nodes, parent, name, &a, out);
}

/* Under branches/, tags/ and their prefix directories: "feature" is a directory when
 * some ref is named "feature/…", a revision when a ref is named "feature". */
static int lookup_ref_child(struct ops_ctx *ctx, struct node *parent, const char *name,
                            struct node **out)
{
	const char *prefix = parent->kind == NODE_REF_PREFIX ? parent->path : "";
	char full[NODE_PATH_MAX];
	char **names = NULL;
	size_t n = 0;
	int r, cls;

	r = node_path_join(full, sizeof(full), prefix, name);
	if (r < 0)
		return r;
	r = cache_refs_list(ctx->cache, parent->project_id, (enum cache_ref_kind)parent->ref_kind,
	                    &names, &n);
	if (r < 0) /* the listing is only a hint: try the ref itself */
		return lookup_rev(ctx, parent, name, full, out);
	cls = node_path_classify((const char *const *)names, n, prefix, name);
	cache_names_free(names, n);
	if (cls & 2) {
		struct node_attrs a = {.kind = NODE_REF_PREFIX, .path = full};

		return node_lookup(ctx->nodes, parent, name, &a, out);
	}
	/* also when the listing does not know it yet: a ref pushed since */
	return lookup_rev(ctx, parent, name, full, out);
}

static int load_listing(struct ops_ctx *ctx, struct node *dir, const struct node_listing **out)
{
	struct tree_entry *e = NULL;
	struct node_listing *l;
	char tree[41];
	size_t n = 0;
	int r;

	*out = node_listing_get(ctx->nodes, dir);
	if (*out)
		return 0;
	if (dir->kind == NODE_REV)
		r = cache_root_tree(ctx->cache, dir->project_id, dir->commit, tree, &e, &n);
	else if (dir->kind == NODE_TREE)
		r = cache_tree(ctx->cache, dir->project_id, dir->commit, dir->path, dir->oid, &e,
		               &n);
	else
		r = 0; /* a submodule: always empty */
	if (r < 0)
		return r;
	r = node_listing_new(&l, e, n);
	free(e);
	if (r < 0)
		return log_ret(-EIO, "tree %s of project %" PRId64 " is malformed: %s", dir->oid,
		               dir->project_id, strerror(-r));
	*out = node_listing_set(ctx->nodes, dir, l);
	return 0;
}

static int lookup_tree_child(struct ops_ctx *ctx, struct node *parent, const char *name,
                             struct node **out)
{
	const struct node_listing *l;
	const struct node_dirent *d;
	struct cache_blob_info info;
	struct node_attrs a = {0};
	char path[NODE_PATH_MAX];
	uint64_t size;
	int64_t shown;
	int r, kind;

	r = load_listing(ctx, parent, &l);
	if (r < 0)
		return r;
	d = node_listing_find(l, name);
	if (!d)
		return -ENOENT;
	kind = node_kind_from_git_mode(d->mode);
	if (kind < 0)
		return log_ret(-EIO, "tree entry %s has unknown mode %o", name, d->mode);
	/* a revision root's path is its ref name; paths inside the revision start below it */
	r = node_path_join(path, sizeof(path), parent->kind == NODE_REV ? "" : parent->path, name);
	if (r < 0)
		return r;
	a.kind = (enum node_kind)kind;
	a.oid = d->oid;
	a.path = path;
	a.git_mode = d->mode;
	a.size = 0;
	shown = __atomic_load_n(&d->shown, __ATOMIC_RELAXED);
	if (kind == NODE_FILE && shown >= 0) {
		a.size = shown; /* resolved before: not LFS */
	} else if (kind == NODE_FILE && CACHE_LFS_CANDIDATE(d->size)) {
		/* it may be an LFS pointer: the file shows the object it names */
		r = cache_blob_info(ctx->cache, parent->project_id, parent->commit, path, d->oid,
		                    d->size, &info);
		if (r < 0)
			return r;
		if (info.size > INT64_MAX)
			return -EIO;
		a.size = (int64_t)info.size;
		if (info.lfs)
			a.lfs_oid = info.lfs_oid;
		else /* the listing is immutable but for this memo of a verdict that is too */
			__atomic_store_n((int64_t *)(uintptr_t)&d->shown, a.size, __ATOMIC_RELAXED);
	} else if (kind == NODE_FILE || kind == NODE_SYMLINK) {
		if (d->size >= 0) {
			a.size = d->size;
		} else {
			r = cache_blob_size(ctx->cache, parent->project_id, parent->commit, path,
			                    d->oid, &size);
			if (r < 0)
				return r;
			if (size > INT64_MAX)
				return -EIO;
			a.size = (int64_t)size;
		}
	}
	if (kind == NODE_TREE)
		a.tree = d->oid;
	return node_lookup(ctx->nodes, parent, name, &a, out);
}

/* Resolves name under parent to a node with one kernel lookup counted. *negative_ok says
 * whether an -ENOENT may be cached by the kernel for good. */
static int resolve_child(struct ops_ctx *ctx, struct node *parent, const char *name,
                         struct node **out, bool *negative_ok)
{
	enum node_ref_kind rk = NODE_REF_BRANCH;
	struct node_attrs a = {0};
	int kind;

	*negative_ok = false;
	kind = node_child_kind(parent, name, &rk);
	if (kind < 0) {
		*negative_ok = kind == -ENOENT && node_entry_is_immutable(parent);
		return kind;
	}
	if (kind == NODE_ML_DIR || kind == NODE_ML_FILE)
		return mlfs_lookup(ctx->ml, parent, name, out);
	switch (parent->kind) {
	case NODE_ROOT:
		if (kind == NODE_CTL_DIR) {
			a.kind = NODE_CTL_DIR;
			return node_lookup(ctx->nodes, parent, name, &a, out);
		}
		return lookup_namespace_child(ctx, parent, name, out);
	case NODE_NAMESPACE:
		return lookup_namespace_child(ctx, parent, name, out);
	case NODE_CTL_DIR:
		a.kind = (enum node_kind)kind;
		return node_lookup(ctx->nodes, parent, name, &a, out);
	case NODE_PROJECT:
		if (kind == NODE_HEAD)
			return lookup_head(ctx, parent, out);
		a.kind = NODE_REFS;
		a.ref_kind = rk;
		return node_lookup(ctx->nodes, parent, name, &a, out);
	case NODE_REFS:
		if (parent->ref_kind == NODE_REF_COMMIT)
			return lookup_rev(ctx, parent, name, name, out);
		return lookup_ref_child(ctx, parent, name, out);
	case NODE_REF_PREFIX:
		return lookup_ref_child(ctx, parent, name, out);
	case NODE_REV:
	case NODE_TREE: {
		int r = lookup_tree_child(ctx, parent, name, out);

		*negative_ok = r == -ENOENT;
		return r;
	}
	default:
		return -ENOENT;
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t pino, const char *name)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct fuse_entry_param e;
	struct node *parent, *n = NULL;
	bool negative_ok;
	int r;

	parent = node_get(ctx->nodes, pino);
	if (!parent) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	memset(&e, 0, sizeof(e));
	r = resolve_child(ctx, parent, name, &n, &negative_ok);
	if (r < 0) {
		log_remote_error(r, "lookup", name);
		if (r == -ENOENT && negative_ok) {
			e.ino = 0;
			e.entry_timeout = FOREVER_S;
			fuse_reply_entry(req, &e);
		} else {
			fuse_reply_err(req, -r);
		}
		goto out;
	}
	e.ino = n->ino;
	e.generation = 0;
	fill_attr(ctx, n, &e.attr);
	e.attr_timeout = attr_timeout(ctx, n);
	e.entry_timeout = entry_timeout(ctx, parent, n);
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(ctx->nodes, n->ino, 1); /* the kernel never got it */
out:
	node_put(ctx->nodes, parent);
}

/* After the kernel dropped its inodes (memory pressure, drop_caches), give the freed node
 * memory back: glibc keeps freed chunks of the worker threads' arenas otherwise, and the
 * next walk of the tree allocates them anew elsewhere. */
#define OPS_TRIM_EVERY 16384

static void forgotten_add(struct ops_ctx *ctx, uint64_t n)
{
	if (__atomic_add_fetch(&ctx->forgotten, n, __ATOMIC_RELAXED) >= OPS_TRIM_EVERY &&
	    __atomic_exchange_n(&ctx->forgotten, 0, __ATOMIC_RELAXED) >= OPS_TRIM_EVERY)
		malloc_trim(0);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct ops_ctx *ctx = ctx_of(req);

	node_forget(ctx->nodes, ino, nlookup);
	fuse_reply_none(req);
	forgotten_add(ctx, 1);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct ops_ctx *ctx = ctx_of(req);
	size_t i;

	for (i = 0; i < count; i++)
		node_forget(ctx->nodes, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
	forgotten_add(ctx, count);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	struct stat st;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	fill_attr(ctx, n, &st);
	fuse_reply_attr(req, &st, attr_timeout(ctx, n));
	node_put(ctx->nodes, n);
}

/* Nothing can change; a request that would leave everything as it is succeeds (so
 * "chmod 644" on a 0644 file is not an error), anything else is EROFS. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	const int allowed =
	    FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE;
	struct stat st;
	bool same;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	fill_attr(ctx, n, &st);
	same = (to_set & ~allowed) == 0;
	if ((to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & 07777) != (st.st_mode & 07777))
		same = false;
	if ((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid)
		same = false;
	if ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid)
		same = false;
	if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != st.st_size)
		same = false;
	if (same)
		fuse_reply_attr(req, &st, attr_timeout(ctx, n));
	else
		fuse_reply_err(req, EROFS);
	node_put(ctx->nodes, n);
}

static int blob_read_all(struct ops_ctx *ctx, const struct node *n, char *buf, size_t cap,
                         size_t *len)
{
	struct odb_blob *b = NULL;
	ssize_t got;
	size_t off = 0;
	int r;

	r = cache_blob_open(ctx->cache, n->project_id, n->oid, &b);
	if (r < 0)
		return r;
	while (off < cap) {
		got = odb_blob_pread(b, buf + off, cap - off, off);
		if (got < 0) {
			r = (int)got;
			goto out;
		}
		if (got == 0)
			break;
		off += (size_t)got;
	}
	*len = off;
	r = 0;
out:
	odb_blob_close(b);
	return r;
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	char target[PATH_MAX + 1];
	size_t len = 0;
	int r;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (n->kind == NODE_HEAD) {
		snprintf(target, sizeof(target), "branches/%s", n->oid);
		fuse_reply_readlink(req, target);
	} else if (n->kind != NODE_SYMLINK) {
		fuse_reply_err(req, EINVAL);
	} else if (n->size <= 0 || n->size >= PATH_MAX) {
		log_warn("symlink %s: target of %" PRId64 " bytes refused", n->path, n->size);
		fuse_reply_err(req, n->size <= 0 ? EIO : ENAMETOOLONG);
	} else if ((r = blob_read_all(ctx, n, target, (size_t)n->size, &len)) < 0) {
		log_remote_error(r, "readlink", n->path);
		fuse_reply_err(req, -r);
	} else if (len != (size_t)n->size || memchr(target, 0, len)) {
		log_warn("symlink %s: target does not match its size or holds NUL", n->path);
		fuse_reply_err(req, EIO);
	} else {
		target[len] = 0;
		fuse_reply_readlink(req, target);
	}
	node_put(ctx->nodes, n);
}

/* ---- background jobs ---- */

static void send_inval_inode(struct ops_ctx *ctx, uint64_t ino)
{
	int r = fuse_lowlevel_notify_inval_inode(ctx->se, ino, 0, 0);

	if (r < 0 && r != -ENOENT)
		log_debug("invalidating inode %" PRIu64 ": %s", ino, strerror(-r));
}

/* A branch moved: the kernel forgets the name of every older revision root of it and
 * their cached listings, so the next access looks the branch up again. Runs on the
 * invalidation thread, never inside an operation handler (fuse_lowlevel.h: notifying
 * from a related operation deadlocks). */
static void job_branch(struct ops_ctx *ctx, struct job *j)
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
static void job_fetch(struct ops_ctx *ctx, struct job *j, char *buf)
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

static void job_run(struct ops_ctx *ctx, struct job *j, char *buf)
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
static void on_branch_moved(void *arg, int64_t project_id, const char *branch,
                            const char *old_commit, const char *new_commit)
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

/* Queues a download of a file's object; 0, or -EAGAIN when the queue is full. */
static int fetch_queue(struct ops_ctx *ctx, int64_t project_id, const char *commit,
                       const char *path, const char *oid, int64_t listed_size, uint64_t max_size)
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
static void inval_inodes(struct ops_ctx *ctx, uint64_t *inos, size_t n)
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
static void sibling_note(struct ops_ctx *ctx, const struct node *n)
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

/* ---- files ---- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	struct ops_file *f = NULL;
	int acc = fi->flags & O_ACCMODE;
	int r;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (n->kind == NODE_ML_FILE || n->kind == NODE_ML_CTL) {
		mlfs_open(ctx->ml, req, n, fi);
		node_put(ctx->nodes, n);
		return;
	}
	if (n->kind == NODE_CONTROL) {
		/* write-only: root passes the permission check the 0200 mode makes */
		r = acc == O_WRONLY ? 0 : -EACCES;
	} else if (acc != O_RDONLY || (fi->flags & O_TRUNC)) {
		r = -EROFS;
	} else if (n->kind != NODE_FILE && n->kind != NODE_STATUS &&
	           n->kind != NODE_CONTROL_ERROR) {
		r = is_dir_kind(n->kind) ? -EISDIR : -EINVAL;
	} else {
		r = 0;
	}
	if (r < 0)
		goto out;
	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto out;
	}
	if (n->kind == NODE_CONTROL) {
		f->ctl = true;
		fi->direct_io = 1; /* every write() reaches us as one request */
		fi->nonseekable = 1;
	} else if (n->kind != NODE_FILE) {
		r = generated_render(ctx, n, &f->data, &f->len);
		if (r < 0)
			goto out;
		fi->direct_io = 1; /* generated at each open; its size is not known in advance */
	} else {
		touch_branch(ctx, n);
		r = cache_obj_open(ctx->cache, n->project_id, n->commit, n->path, n->oid, &f->obj);
		if (r < 0) {
			log_remote_error(r, "open", n->path);
			goto out;
		}
		if (cache_obj_size(f->obj) != (uint64_t)n->size) {
			r = log_ret(-EIO,
			            "%s: object of blob %s holds %" PRIu64
			            " bytes, shown as %" PRId64,
			            n->path, n->oid, cache_obj_size(f->obj), n->size);
			goto out;
		}
		f->ino = ino;
		f->counted = true;
		f->pass = passthru_open(ino, cache_obj_fd(f->obj));
		/* the node shows one object for its whole life: pages never go stale */
		fi->keep_cache = !f->pass;
		sibling_note(ctx, n);
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	handle_track(ctx, &f->h, false);
	if (fuse_reply_open(req, fi) != 0) {
		passthru_disarm();
		file_free(ctx, f);
	}
	f = NULL;
	r = 0;
out:
	if (r < 0) {
		file_free(ctx, f);
		fuse_reply_err(req, -r);
	}
	node_put(ctx->nodes, n);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
	struct ops_file *f = (struct ops_file *)(uintptr_t)fi->fh;
	char *buf;
	ssize_t got;
	int fd;

	if (mlfs_owns(fi)) {
		mlfs_read(ctx_of(req)->ml, req, size, off, fi);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (f->ctl) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (size > READ_MAX)
		size = READ_MAX;
	if (!f->obj) {
		size_t o = (size_t)off < f->len ? (size_t)off : f->len;
		size_t n = f->len - o < size ? f->len - o : size;

		/* From a copy: the reply reaches the reader before fuse_reply_buf returns,
		 * and the reader's close may free f->data in another thread meanwhile (a
		 * sanitizer checking the buffer after writev would see it freed). */
		buf = malloc(n ? n : 1);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		memcpy(buf, f->data + o, n);
		fuse_reply_buf(req, buf, n);
		free(buf);
		return;
	}
	/* complete and verified on disk: the kernel splices from the cache file. A download
	 * in progress is read and copied instead: splicing from the pages being written
	 * comes up short (libfuse then copies through a fresh buffer per request, which
	 * the allocator keeps: tens of MiB of resident memory for no gain). */
	fd = cache_obj_fd(f->obj);
	if (fd >= 0) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	got = cache_obj_pread(f->obj, buf, size, (uint64_t)off);
	if (got < 0) {
		log_warn("read of blob failed: %s", strerror((int)-got));
		fuse_reply_err(req, (int)-got);
	} else {
		fuse_reply_buf(req, buf, (size_t)got);
	}
	free(buf);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (mlfs_owns(fi)) {
		mlfs_release(ctx_of(req)->ml, req, fi);
		return;
	}
	file_free(ctx_of(req), (struct ops_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- .reef/ctl ---- */

/* Remembers why a control request failed, for .reef/ctl.error, and returns r. */
static int reefctl_fail(struct ops_ctx *ctx, const char *req, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int reefctl_fail(struct ops_ctx *ctx, const char *req_raw, int r, const char *fmt, ...)
{
	char why_raw[512], why[512], when[32], req[256];
	struct timespec now;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why_raw, sizeof(why_raw), fmt, ap);
	va_end(ap);
	text_escape(why_raw, why, sizeof(why));
	text_escape(req_raw, req, sizeof(req));
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&ctx->ctl_lock);
	ctx->ctl_errors++;
	snprintf(ctx->ctl_error, sizeof(ctx->ctl_error), "%s %s: %.200s: %s\n", when,
	         strerrorname_np(-r) ? strerrorname_np(-r) : "error", req, why);
	pthread_mutex_unlock(&ctx->ctl_lock);
	log_info("ctl: %.200s: %s", req, why);
	return r;
}

/* One step of a walk: cur (pinned) becomes its child name (pinned), without counting a
 * kernel lookup. HEAD is followed to the branch it names. */
static int reefctl_step(struct ops_ctx *ctx, struct node **cur, const char *name)
{
	struct node *child;
	bool neg;
	int r;

	r = resolve_child(ctx, *cur, name, &child, &neg);
	if (r < 0)
		return r;
	node_pin(ctx->nodes, child);
	node_forget(ctx->nodes, child->ino, 1);
	node_put(ctx->nodes, *cur);
	*cur = child;
	if (child->kind == NODE_HEAD) {
		char ref[NODE_PATH_MAX], *save = NULL, *c;
		struct node *proj = child->parent;

		snprintf(ref, sizeof(ref), "%s", child->oid);
		node_pin(ctx->nodes, proj);
		node_put(ctx->nodes, child);
		*cur = proj;
		r = reefctl_step(ctx, cur, "branches");
		for (c = strtok_r(ref, "/", &save); c && r == 0; c = strtok_r(NULL, "/", &save))
			r = reefctl_step(ctx, cur, c);
	}
	return r;
}

/* A path relative to the mount root (a leading '/' or the mount point itself is
 * accepted) to its node, pinned. "." and ".." are refused: a control request names one
 * place, spelled one way. */
static int reefctl_resolve(struct ops_ctx *ctx, char *path, struct node **out)
{
	size_t ml = strlen(ctx->mountpoint);
	struct node *cur;
	char *save = NULL, *c;
	int r = 0;

	*out = NULL;
	if (ml > 1 && strncmp(path, ctx->mountpoint, ml) == 0 && (path[ml] == '/' || !path[ml]))
		path += ml;
	cur = node_get(ctx->nodes, NODE_ROOT_INO);
	if (!cur)
		return -EIO;
	for (c = strtok_r(path, "/", &save); c && r == 0; c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0)
			r = -EINVAL;
		else
			r = reefctl_step(ctx, &cur, c);
	}
	if (r < 0) {
		node_put(ctx->nodes, cur);
		return r;
	}
	*out = cur;
	return 0;
}

/* The tree a directory node inside a revision shows. */
static int reefctl_tree_of(struct ops_ctx *ctx, const struct node *n, char tree[41])
{
	struct tree_entry *e = NULL;
	size_t cnt;
	int r;

	if (n->kind == NODE_TREE) {
		snprintf(tree, 41, "%s", n->oid);
		return 0;
	}
	r = cache_root_tree(ctx->cache, n->project_id, n->commit, tree, &e, &cnt);
	free(e);
	return r;
}

static int reefctl_prefetch(struct ops_ctx *ctx, const char *req, struct node *n)
{
	char tree[41];
	int r;

	touch_branch(ctx, n);
	switch (n->kind) {
	case NODE_FILE:
		r = fetch_queue(ctx, n->project_id, n->commit, n->path, n->oid, n->size,
		                OPS_PREFETCH_NOCAP);
		break;
	case NODE_REV:
	case NODE_TREE:
		r = reefctl_tree_of(ctx, n, tree);
		if (r == 0)
			r = cache_prefetch(ctx->cache, n->project_id, n->commit,
			                   n->kind == NODE_REV ? "" : n->path, tree);
		break;
	default:
		return reefctl_fail(ctx, req, -EINVAL,
		                    "prefetch takes a file or directory inside a revision "
		                    "(branches/, tags/ or commits/)");
	}
	if (r == -EAGAIN)
		return reefctl_fail(ctx, req, r, "the prefetch queue is full; try again later");
	if (r < 0)
		return reefctl_fail(ctx, req, r, "%s", strerror(-r));
	return 0;
}

static int reefctl_forget(struct ops_ctx *ctx, const char *req, struct node *n)
{
	uint64_t *inos = NULL;
	size_t cnt = 0;
	char tree[41];
	int r;

	switch (n->kind) {
	case NODE_FILE:
	case NODE_SYMLINK:
		r = cache_forget(ctx->cache, n->project_id, n->oid, false);
		if (r >= 0 && (inos = malloc(sizeof(*inos)))) {
			inos[0] = n->ino;
			cnt = 1;
		}
		break;
	case NODE_REV:
	case NODE_TREE:
		r = reefctl_tree_of(ctx, n, tree);
		if (r == 0)
			r = cache_forget(ctx->cache, n->project_id, tree, true);
		if (r >= 0 && node_collect_under(ctx->nodes, n->ino, NODE_FILE, &inos, &cnt) < 0)
			cnt = 0;
		break;
	default:
		return reefctl_fail(ctx, req, -EINVAL,
		                    "forget takes a file or directory inside a revision "
		                    "(branches/, tags/ or commits/)");
	}
	if (r < 0) {
		free(inos);
		return reefctl_fail(ctx, req, r, "%s", strerror(-r));
	}
	log_info("ctl: forgot %d object%s under %s", r, r == 1 ? "" : "s", n->path);
	/* the kernel kept the pages (keep_cache): a forgotten object is read anew */
	inval_inodes(ctx, inos, cnt);
	return 0;
}

/* The request as ctl.error quotes it: one line of valid UTF-8, control characters and
 * invalid bytes as '?', cut at a character boundary. */
static void reefctl_echo(char *out, size_t cap, const char *s, size_t len)
{
	size_t i = 0, o = 0, k, n;

	while (i < len && o + 1 < cap) {
		unsigned char c = (unsigned char)s[i];
		uint32_t cp;

		n = c < 0x80             ? 1
		    : (c & 0xe0) == 0xc0 ? 2
		    : (c & 0xf0) == 0xe0 ? 3
		    : (c & 0xf8) == 0xf0 ? 4
		                         : 0;
		cp = n == 1 ? c : n == 2 ? c & 0x1fu : n == 3 ? c & 0x0fu : c & 0x07u;
		for (k = 1; n && k < n; k++) {
			if (i + k >= len || ((unsigned char)s[i + k] & 0xc0) != 0x80) {
				n = 0;
				break;
			}
			cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3fu);
		}
		/* overlong forms, surrogates and code points past U+10FFFF are not UTF-8 */
		if ((n == 2 && cp < 0x80) ||
		    (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			n = 0;
		if (n <= 1 || o + n >= cap) {
			out[o++] = n == 1 && c >= 0x20 && c != 0x7f ? (char)c : '?';
			i += n ? n : 1;
			if (n > 1)
				break;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	out[o] = 0;
}

/* Parses and runs one control request: "refresh [path]", "prefetch <path>" or
 * "forget <path>", one line (a final newline is allowed). */
static int reefctl_exec(struct ops_ctx *ctx, const char *data, size_t len)
{
	char *s, *cmd, *path, req[256];
	struct node *n = NULL;
	size_t i;
	int r;

	pthread_mutex_lock(&ctx->ctl_lock);
	ctx->ctl_requests++;
	pthread_mutex_unlock(&ctx->ctl_lock);
	s = malloc(len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, data, len);
	s[len] = 0;
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = 0;
	reefctl_echo(req, sizeof(req), s, len);
	if (memchr(s, 0, len)) {
		r = reefctl_fail(ctx, req, -EINVAL, "a request is text: it holds a NUL byte");
		goto out;
	}
	if (strchr(s, '\n') || strchr(s, '\r')) {
		r = reefctl_fail(ctx, req, -EINVAL,
		                 "one request per write: it holds several lines");
		goto out;
	}
	cmd = s + strspn(s, " \t");
	path = cmd + strcspn(cmd, " \t");
	if (*path) {
		*path++ = 0;
		path += strspn(path, " \t");
	}
	for (i = strlen(path); i > 0 && (path[i - 1] == ' ' || path[i - 1] == '\t'); i--)
		path[i - 1] = 0;
	if (strcmp(cmd, "refresh") != 0 && strcmp(cmd, "prefetch") != 0 &&
	    strcmp(cmd, "forget") != 0) {
		r = reefctl_fail(ctx, req, -EINVAL,
		                 "unknown command; one of: refresh [path], prefetch <path>, "
		                 "forget <path>");
		goto out;
	}
	if (!*path && strcmp(cmd, "refresh") != 0) {
		r = reefctl_fail(ctx, req, -EINVAL, "%s needs a path (relative to the mount root)",
		                 cmd);
		goto out;
	}
	if (strlen(path) >= NODE_PATH_MAX) {
		r = reefctl_fail(ctx, req, -ENAMETOOLONG, "the path is longer than %d bytes",
		                 NODE_PATH_MAX - 1);
		goto out;
	}
	if (strcmp(cmd, "refresh") == 0) {
		/* expire every head and listing, then walk the path, which asks the server
		 * again on the way: a branch found moved is invalidated as the poller would */
		cache_refresh(ctx->cache);
		r = 0;
		if (*path) {
			r = reefctl_resolve(ctx, path, &n);
			if (r < 0)
				r = reefctl_fail(ctx, req, r, "%s",
				                 r == -EINVAL ? "the path holds . or .."
				                              : strerror(-r));
		}
		goto out;
	}
	r = reefctl_resolve(ctx, path, &n);
	if (r < 0) {
		r = reefctl_fail(ctx, req, r, "%s",
		                 r == -EINVAL ? "the path holds . or .." : strerror(-r));
		goto out;
	}
	r = strcmp(cmd, "prefetch") == 0 ? reefctl_prefetch(ctx, req, n)
	                                 : reefctl_forget(ctx, req, n);
out:
	node_put(ctx->nodes, n);
	free(s);
	return r;
}

/* A control write may add an entry to the directory of the control file (a launch): the
 * kernel drops its cached listing first, so a listing after write() returns shows it. */
static void dir_changing(struct ops_ctx *ctx, fuse_ino_t ino)
{
	struct node *n;
	uint64_t *inos;

	if (!ctx->no_opendir || !(n = node_get(ctx->nodes, ino)))
		return;
	inos = n->parent ? malloc(sizeof(*inos)) : NULL;
	if (inos) {
		inos[0] = n->parent->ino;
		inval_inodes(ctx, inos, 1);
	}
	node_put(ctx->nodes, n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_file *f = (struct ops_file *)(uintptr_t)fi->fh;
	int r;

	(void)off; /* each write is one request, wherever the descriptor points */
	if (mlfs_owns(fi)) {
		dir_changing(ctx, ino);
		mlfs_write(ctx->ml, req, buf, size, off, fi);
		return;
	}
	if (!f || !f->ctl) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (size > OPS_CTL_MAX) {
		r = reefctl_fail(ctx, "(oversize request)", -EFBIG,
		                 "%zu bytes; a request is at most %d bytes", size, OPS_CTL_MAX);
		pthread_mutex_lock(&ctx->ctl_lock);
		ctx->ctl_requests++;
		pthread_mutex_unlock(&ctx->ctl_lock);
	} else {
		r = reefctl_exec(ctx, buf, size);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

/* ---- directories ---- */

/* A stand-in d_ino for a branch or tag the cache has no commit for yet: the name is
 * listed, but which revision root it will name is only known at lookup. */
static uint64_t synthetic_ino(uint64_t dir, const char *name)
{
	uint64_t h = 14695981039346656037ULL ^ dir;

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ULL;
	}
	return h | (1ULL << 63);
}

static int dir_add(struct ops_dir *d, size_t *cap, const char *name, uint64_t ino, mode_t type)
{
	if (d->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct ops_dirent *v = realloc(d->v, nc * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->v = v;
		*cap = nc;
	}
	d->v[d->n].name = strdup(name);
	if (!d->v[d->n].name)
		return -ENOMEM;
	d->v[d->n].ino = ino;
	d->v[d->n].type = type;
	d->n++;
	return 0;
}

/* Adds a child whose node key is (dir, name, oid): its d_ino is the number a lookup of
 * it gives, so readdir and stat agree. */
static int dir_add_node(struct ops_ctx *ctx, struct ops_dir *d, size_t *cap, const char *name,
                        const char *oid, mode_t type)
{
	return dir_add(d, cap, name, node_ino_predict(ctx->nodes, d->node->ino, name, oid), type);
}

/* Root and namespaces: a name that is a member project's path is that project (keyed by
 * its id), else a namespace. Lists only names a lookup accepts, so readdir never shows
 * what stat calls ENOENT. */
static int dir_add_namespace(struct ops_ctx *ctx, struct ops_dir *d, size_t *cap,
                             const struct cache_project *list, size_t n)
{
	const char **paths = NULL;
	struct node_child *c = NULL;
	char full[NODE_PATH_MAX], id[32];
	size_t nc = 0, i, k;
	int r;

	r = project_paths(list, n, &paths);
	if (r == 0)
		r = node_children(paths, n, d->node->path, &c, &nc);
	for (i = 0; i < nc && r == 0; i++) {
		const char *oid = "";

		if (!node_name_is_gitlab_path(c[i].name))
			continue;
		if (c[i].leaf &&
		    node_path_join(full, sizeof(full), d->node->path, c[i].name) == 0) {
			for (k = 0; k < n; k++) {
				if (strcmp(list[k].path, full) == 0) {
					snprintf(id, sizeof(id), "%" PRId64, list[k].id);
					oid = id;
					break;
				}
			}
		}
		r = dir_add_node(ctx, d, cap, c[i].name, oid, S_IFDIR);
	}
	node_children_free(c, nc);
	free(paths);
	return r;
}

/* branches/, tags/ and prefixes: a name some longer ref continues is a prefix directory;
 * a leaf is the revision root of the commit the ref names, when the cache knows it. */
static int dir_add_refs(struct ops_ctx *ctx, struct ops_dir *d, size_t *cap, char **names, size_t n)
{
	const char *prefix = d->node->kind == NODE_REF_PREFIX ? d->node->path : "";
	struct node_child *c = NULL;
	char full[NODE_PATH_MAX], commit[41];
	size_t nc = 0, i;
	int r;

	r = node_children((const char *const *)names, n, prefix, &c, &nc);
	for (i = 0; i < nc && r == 0; i++) {
		if (!node_name_is_ref_component(c[i].name))
			continue;
		if (c[i].inner) {
			r = dir_add_node(ctx, d, cap, c[i].name, "", S_IFDIR);
		} else if (node_path_join(full, sizeof(full), prefix, c[i].name) == 0 &&
		           (cache_ref_peek(ctx->cache, d->node->project_id,
		                           (enum cache_ref_kind)d->node->ref_kind, full,
		                           commit) == 0 ||
		            ref_commit_known(ctx, d->node, c[i].name, commit))) {
			r = dir_add_node(ctx, d, cap, c[i].name, commit, S_IFDIR);
		} else {
			r = dir_add(d, cap, c[i].name, synthetic_ino(d->node->ino, c[i].name),
			            S_IFDIR);
		}
	}
	node_children_free(c, nc);
	return r;
}

struct dir_ml_arg {
	struct ops_ctx *ctx;
	struct ops_dir *d;
	size_t *cap;
};

static int dir_add_ml(void *arg, const char *name, const char *oid, mode_t type)
{
	struct dir_ml_arg *a = arg;

	return dir_add_node(a->ctx, a->d, a->cap, name, oid, type);
}

static int dir_fill(struct ops_ctx *ctx, struct ops_dir *d)
{
	struct node *n = d->node;
	struct cache_project *list = NULL, p;
	char **names = NULL;
	size_t cap = 0, cnt = 0;
	struct dir_ml_arg ml = {ctx, d, &cap};
	int r = 0;

	switch (n->kind) {
	case NODE_ROOT:
		r = dir_add(d, &cap, ".reef", NODE_CTL_INO, S_IFDIR);
		/* fallthrough */
	case NODE_NAMESPACE:
		if (r < 0)
			break;
		r = cache_projects_list(ctx->cache, &list, &cnt);
		if (r == 0)
			r = dir_add_namespace(ctx, d, &cap, list, cnt);
		break;
	case NODE_CTL_DIR:
		r = dir_add_node(ctx, d, &cap, "ctl", "", S_IFREG);
		if (r == 0)
			r = dir_add_node(ctx, d, &cap, "ctl.error", "", S_IFREG);
		if (r == 0)
			r = dir_add_node(ctx, d, &cap, "status", "", S_IFREG);
		if (r == 0)
			r = mlfs_list(ctx->ml, n, dir_add_ml, &ml);
		break;
	case NODE_PROJECT:
		r = cache_project_get(ctx->cache, n->path, &p);
		if (r == 0 && p.default_branch[0])
			r = dir_add_node(ctx, d, &cap, "HEAD", p.default_branch, S_IFLNK);
		if (r == 0)
			r = dir_add_node(ctx, d, &cap, "branches", "", S_IFDIR);
		if (r == 0)
			r = dir_add_node(ctx, d, &cap, "tags", "", S_IFDIR);
		if (r == 0)
			r = dir_add_node(ctx, d, &cap, "commits", "", S_IFDIR);
		if (r == 0)
			r = mlfs_list(ctx->ml, n, dir_add_ml, &ml);
		break;
	case NODE_REFS:
	case NODE_REF_PREFIX:
		if (n->ref_kind == NODE_REF_COMMIT)
			break; /* any sha resolves; listing every commit is not the point */
		r = cache_refs_list(ctx->cache, n->project_id, (enum cache_ref_kind)n->ref_kind,
		                    &names, &cnt);
		if (r == 0)
			r = dir_add_refs(ctx, d, &cap, names, cnt);
		cache_names_free(names, cnt);
		break;
	case NODE_REV:
	case NODE_TREE:
	case NODE_SUBMODULE:
		r = load_listing(ctx, n, &d->listing);
		break;
	case NODE_ML_DIR:
		r = mlfs_list(ctx->ml, n, dir_add_ml, &ml);
		break;
	default:
		r = -ENOTDIR;
		break;
	}
	free(list);
	return r;
}

static void dir_free(struct ops_ctx *ctx, struct ops_dir *d)
{
	size_t i;

	if (!d)
		return;
	handle_untrack(ctx, &d->h);
	for (i = 0; i < d->n; i++)
		free(d->v[i].name);
	free(d->v);
	node_put(ctx->nodes, d->node);
	free(d);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_dir *d;
	int r;

	if (ctx->no_opendir) {
		/* the kernel then opens every directory itself, with cache_readdir and
		 * keep_cache, and never asks again; readdir builds its listing */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	d->node = node_get(ctx->nodes, ino);
	if (!d->node) {
		free(d);
		fuse_reply_err(req, ESTALE);
		return;
	}
	touch_branch(ctx, d->node);
	r = dir_fill(ctx, d);
	if (r < 0) {
		log_remote_error(r, "opendir", d->node->name);
		dir_free(ctx, d);
		fuse_reply_err(req, -r);
		return;
	}
	if (d->listing || d->node->kind == NODE_SUBMODULE ||
	    (d->node->kind == NODE_REFS && d->node->ref_kind == NODE_REF_COMMIT)) {
		fi->cache_readdir = 1;
		fi->keep_cache = 1;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	handle_track(ctx, &d->h, true);
	if (fuse_reply_open(req, fi) != 0)
		dir_free(ctx, d);
}

static mode_t type_of_git_mode(uint32_t mode)
{
	switch (mode) {
	case TREE_MODE_FILE:
	case TREE_MODE_EXEC:
		return S_IFREG;
	case TREE_MODE_LINK:
		return S_IFLNK;
	default:
		return S_IFDIR;
	}
}

/* The listing a readdir serves: the handle's snapshot, or without opendir one built for
 * this call (*temp: dir_free it after). A listing that changes between two chunks of one
 * directory read can then skip or repeat an entry; revision listings never change. */
static int dir_for_read(struct ops_ctx *ctx, fuse_ino_t ino, struct fuse_file_info *fi,
                        struct ops_dir **out, bool *temp)
{
	struct ops_dir *d;
	int r;

	*temp = false;
	if (fi->fh) {
		*out = (struct ops_dir *)(uintptr_t)fi->fh;
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->node = node_get(ctx->nodes, ino);
	if (!d->node) {
		free(d);
		return -ESTALE;
	}
	touch_branch(ctx, d->node);
	r = dir_fill(ctx, d);
	if (r < 0) {
		log_remote_error(r, "readdir", d->node->name);
		dir_free(ctx, d);
		return r;
	}
	*out = d;
	*temp = true;
	return 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_dir *d;
	size_t total, used = 0, i;
	char *buf;
	bool temp;
	int r;

	r = dir_for_read(ctx, ino, fi, &d, &temp);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	total = 2 + (d->listing ? d->listing->n : d->n);
	if (size > READ_MAX)
		size = READ_MAX;
	buf = malloc(size ? size : 1);
	if (!buf) {
		if (temp)
			dir_free(ctx, d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (i = off < 0 ? 0 : (size_t)off; i < total; i++) {
		struct stat st = {0};
		const char *name;
		size_t need;

		if (i == 0) {
			name = ".";
			st.st_ino = d->node->ino;
			st.st_mode = S_IFDIR;
		} else if (i == 1) {
			name = "..";
			st.st_ino = d->node->parent ? d->node->parent->ino : d->node->ino;
			st.st_mode = S_IFDIR;
		} else if (d->listing) {
			const struct node_dirent *e = &d->listing->e[i - 2];

			name = e->name;
			st.st_ino = node_ino_predict(ctx->nodes, d->node->ino, e->name, e->oid);
			st.st_mode = type_of_git_mode(e->mode);
		} else {
			name = d->v[i - 2].name;
			st.st_ino = d->v[i - 2].ino;
			st.st_mode = d->v[i - 2].type;
		}
		need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
	if (temp)
		dir_free(ctx, d);
}

/* readdirplus: each entry of a revision listing carries its node's attributes and
 * counts as one kernel lookup, so a `find -printf`/`ls -l` after the listing costs no
 * LOOKUP per entry (the kernel builds the dentries and keeps the attributes for their
 * timeouts). Entries only a lookup can resolve (namespaces, refs, experiments) and an
 * entry whose lookup failed go as plain dirents (ino 0), looked up as usual later. */
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_dir *d;
	size_t total, used = 0, nadded = 0, i;
	uint64_t *added = NULL;
	char *buf;
	bool temp;
	int r;

	r = dir_for_read(ctx, ino, fi, &d, &temp);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	total = 2 + (d->listing ? d->listing->n : d->n);
	if (size > READ_MAX)
		size = READ_MAX;
	buf = malloc(size ? size : 1);
	/* a direntplus record takes more than 128 bytes */
	added = malloc((size / 128 + 1) * sizeof(*added));
	if (!buf || !added) {
		free(buf);
		free(added);
		if (temp)
			dir_free(ctx, d);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (i = off < 0 ? 0 : (size_t)off; i < total; i++) {
		struct fuse_entry_param e;
		struct node *child = NULL;
		const char *name;
		size_t need;

		memset(&e, 0, sizeof(e));
		if (i == 0) {
			name = ".";
			e.attr.st_ino = d->node->ino;
			e.attr.st_mode = S_IFDIR;
		} else if (i == 1) {
			name = "..";
			e.attr.st_ino = d->node->parent ? d->node->parent->ino : d->node->ino;
			e.attr.st_mode = S_IFDIR;
		} else if (d->listing) {
			const struct node_dirent *de = &d->listing->e[i - 2];

			name = de->name;
			if (lookup_tree_child(ctx, d->node, name, &child) == 0) {
				e.ino = child->ino;
				fill_attr(ctx, child, &e.attr);
				e.attr_timeout = attr_timeout(ctx, child);
				e.entry_timeout = entry_timeout(ctx, d->node, child);
			} else {
				e.attr.st_ino =
				    node_ino_predict(ctx->nodes, d->node->ino, de->name, de->oid);
				e.attr.st_mode = type_of_git_mode(de->mode);
			}
		} else {
			name = d->v[i - 2].name;
			e.attr.st_ino = d->v[i - 2].ino;
			e.attr.st_mode = d->v[i - 2].type;
		}
		need =
		    fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)(i + 1));
		if (need > size - used) {
			if (child) /* not sent: undo its lookup */
				node_forget(ctx->nodes, child->ino, 1);
			break;
		}
		used += need;
		if (child)
			added[nadded++] = child->ino;
	}
	if (fuse_reply_buf(req, buf, used) != 0) {
		for (i = 0; i < nadded; i++) /* the kernel never got them */
			node_forget(ctx->nodes, added[i], 1);
	}
	free(added);
	free(buf);
	if (temp)
		dir_free(ctx, d);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	dir_free(ctx_of(req), (struct ops_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- extended attributes ---- */

static int xattr_value(struct ops_ctx *ctx, struct node *n, const char *name, char out[65])
{
	struct tree_entry *e = NULL;
	size_t cnt;
	int r;

	if (strcmp(name, XATTR_OID) == 0) {
		switch (n->kind) {
		case NODE_FILE:
		case NODE_SYMLINK:
		case NODE_TREE:
		case NODE_SUBMODULE:
			snprintf(out, 65, "%s", n->oid);
			return 0;
		case NODE_REV:
			r = cache_root_tree(ctx->cache, n->project_id, n->commit, out, &e, &cnt);
			free(e);
			return r;
		default:
			return -ENODATA;
		}
	}
	if (strcmp(name, XATTR_COMMIT) == 0 && n->commit[0]) {
		snprintf(out, 65, "%s", n->commit);
		return 0;
	}
	if (strcmp(name, XATTR_LFS) == 0 && n->lfs_oid) {
		snprintf(out, 65, "%s", n->lfs_oid);
		return 0;
	}
	return -ENODATA;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	char v[65];
	size_t len;
	int r;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	r = xattr_value(ctx, n, name, v);
	if (r < 0) {
		log_remote_error(r == -ENODATA ? -ENOENT : r, "getxattr", n->name);
		fuse_reply_err(req, -r);
	} else if ((len = strlen(v)), size == 0) {
		fuse_reply_xattr(req, len);
	} else if (size < len) {
		fuse_reply_err(req, ERANGE);
	} else {
		fuse_reply_buf(req, v, len);
	}
	node_put(ctx->nodes, n);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	char list[128];
	size_t len = 0;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	switch (n->kind) {
	case NODE_FILE:
	case NODE_SYMLINK:
	case NODE_TREE:
	case NODE_SUBMODULE:
	case NODE_REV:
		memcpy(list, XATTR_OID, sizeof(XATTR_OID));
		len = sizeof(XATTR_OID);
		break;
	default:
		break;
	}
	if (n->commit[0]) {
		memcpy(list + len, XATTR_COMMIT, sizeof(XATTR_COMMIT));
		len += sizeof(XATTR_COMMIT);
	}
	if (n->lfs_oid) {
		memcpy(list + len, XATTR_LFS, sizeof(XATTR_LFS));
		len += sizeof(XATTR_LFS);
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
	node_put(ctx->nodes, n);
}

/* ---- the rest ---- */

/* The mount's device number from /proc/self/mountinfo (a stat of the mount point would
 * ask ourselves, before the session loop runs). */
static int mount_dev(const char *mnt, unsigned *maj, unsigned *min)
{
	char line[8192], point[PATH_MAX];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char field[PATH_MAX * 4];
		unsigned a, b;
		size_t i, j;

		if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &a, &b, field) != 3)
			continue;
		/* mountinfo escapes space, tab, newline and backslash as \ooo */
		for (i = 0, j = 0; field[i] && j + 1 < sizeof(point); j++) {
			if (field[i] == '\\' && field[i + 1] >= '0' && field[i + 1] <= '3' &&
			    field[i + 2] >= '0' && field[i + 2] <= '7' && field[i + 3] >= '0' &&
			    field[i + 3] <= '7') {
				point[j] = (char)((field[i + 1] - '0') * 64 +
				                  (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
				i += 4;
			} else {
				point[j] = field[i++];
			}
		}
		point[j] = 0;
		if (strcmp(point, mnt) == 0) {
			*maj = a;
			*min = b;
			r = 0; /* the last match is the newest mount */
		}
	}
	fclose(f);
	return r;
}

/* Raises the kernel's readahead for this mount: large sequential reads then arrive as
 * several requests in flight. At init the kernel keeps the smaller of its bdi's setting
 * and what init answers, so both are raised here, before the answer. Needs the right
 * to write /sys/class/bdi (root); otherwise the kernel's default stays. */
static bool readahead_set(const char *mnt, unsigned long kb)
{
	char path[64], val[32];
	unsigned maj = 0, min = 0;
	int fd, len;

	bool ok;

	if (kb == 0 || mount_dev(mnt, &maj, &min) < 0)
		return false;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	len = snprintf(val, sizeof(val), "%lu\n", kb);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	ok = fd >= 0 && write(fd, val, (size_t)len) == len;
	if (!ok)
		log_debug("readahead stays the kernel's: %s: %s", path, strerror(errno));
	else
		log_debug("readahead of %s set to %lu KiB", mnt, kb);
	if (fd >= 0)
		close(fd);
	return ok;
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct statvfs sv = {0};

	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = TREE_NAME_MAX;
	sv.f_files = node_table_count(ctx->nodes);
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct ops_ctx *ctx = userdata;

	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC; /* so O_TRUNC reaches open and is EROFS */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS; /* symlink nodes never change target */
	/* Always readdirplus, not only for a listing's first chunk: `find` stats the entries
	 * after reading the whole directory, too late for the kernel's heuristic. */
	if (conn->capable & FUSE_CAP_READDIRPLUS) {
		conn->want |= FUSE_CAP_READDIRPLUS;
		conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	}
	/* Contents are immutable per inode: mtimes and sizes of files never change, so
	 * AUTO_INVAL_DATA drops no pages. It is wanted without opendir, where it makes the
	 * kernel refresh an expired directory's attributes at a rewind, and a new mtime
	 * lists it anew (fill_attr). */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	if ((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) &&
	    (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)) {
		conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT | FUSE_CAP_AUTO_INVAL_DATA;
		ctx->no_opendir = true;
	}
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* Sequential readers: let the kernel keep several reads in flight (readahead
	 * requests are "background" ones), each served by a worker thread. */
	conn->max_background = OPS_MAX_BACKGROUND;
	if (readahead_set(ctx->mountpoint, ctx->readahead_kb) &&
	    conn->max_readahead < ctx->readahead_kb * 1024u)
		conn->max_readahead = ctx->readahead_kb * 1024u;
	conn->congestion_threshold = OPS_MAX_BACKGROUND * 3 / 4;
}

static void op_erofs_entry(fuse_req_t req)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
	op_erofs_entry(req);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode)
{
	op_erofs_entry(req);
}

static void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
	op_erofs_entry(req);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
	op_erofs_entry(req);
}

static void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np, const char *nn,
                      unsigned int flags)
{
	op_erofs_entry(req);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn)
{
	op_erofs_entry(req);
}

static void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
	op_erofs_entry(req);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
	op_erofs_entry(req);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	op_erofs_entry(req);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi)
{
	op_erofs_entry(req);
}

static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags)
{
	op_erofs_entry(req);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (mlfs_owns(fi)) {
		mlfs_flush(ctx_of(req)->ml, req, fi);
		return;
	}
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops reef_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsync,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
    .copy_file_range = op_copy_file_range,
};

const struct fuse_lowlevel_ops *ops_table(void)
{
	return &reef_ops;
}
