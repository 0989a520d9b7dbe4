/* Internals of the cache layer shared by its modules: cache.c (lookups, downloads,
 * eviction, branches), cache_bulk.c (many objects a request: trees over git, blob
 * batches) and cache_sizes.c (sizes over GraphQL). Not for callers outside the cache:
 * they use cache.h. */
#ifndef REEF_CACHE_INT_H
#define REEF_CACHE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "gl.h"
#include "reef/idx.h"
#include "reef/odb.h"
#include "stream.h"

/* How a server is asked for trees and sizes, learnt at the first need. */
enum cache_via { CACHE_VIA_UNKNOWN, CACHE_VIA_BULK, CACHE_VIA_REST };

/* A directory whose sizes or blobs one thread is fetching: others wait for it. */
struct cache_dirjob {
	char key[64]; /* commit prefix + hash of the path + what */
	bool done;
	struct cache_dirjob *next;
};

/* LFS download actions asked in a batch ahead of their readers (prefetch), taken by the
 * first fetch of each object. */
#define CACHE_LFS_AHEAD 256
struct cache_lfs_ahead {
	char oid[65]; /* "" when the slot is free */
	struct gl_target t;
};

/* Blobs up to this size come in a directory's batch (cache_bulk_blobs); larger ones
 * stream one by one, several at once, as soon as a reader asks. */
#define CACHE_BATCH_BLOB_MAX ((uint64_t)64 << 10)

/* A blob batch being fetched (its ids sorted): a reader of one of them waits until it
 * is stored rather than asking again, and other batches leave them out. */
struct cache_batch {
	char (*oid)[41];
	bool *stored; /* by index into oid: set as each blob is stored, before the batch ends */
	size_t n;
	struct cache_batch *next;
};

/* How a commit has been read so far: REST tree pages listed, blob batches fetched (of
 * them, the look-ahead's), and whether all its trees came over git. */
#define CACHE_COMMIT_USES 64
struct cache_commit_use {
	char commit[41];
	unsigned rest_pages, batches, ahead;
	bool full;
};

/* Look-ahead batches of blobs in flight at once, ahead of the batch a reader is in: two,
 * so that the server packs the next while reefd indexes and stores the one before (two
 * cores' worth), and a link's round trip is paid while the reader reads. */
#define CACHE_AHEAD_SLOTS 2
/* Recent batches of readers' commits remembered for the look-ahead (the reader's own and
 * those ahead of it). */
#define CACHE_AHEAD_RECENT     (CACHE_AHEAD_SLOTS + 1)
#define CACHE_AHEAD_BIG_RECENT 32

struct cache_recent {
	char commit[41],
	    first[41]; /* first: the blob its reader asked for, "" for a look-ahead's */
	int64_t pid;
	char (*oid)[41]; /* sorted */
	size_t n;
	unsigned seq;
};

/* Rounds of sizes asked ahead of the one a reader lists: the server answers the next
 * rounds while reefd indexes one and the reader lists another, instead of one round
 * waiting for the reader to reach the one before. */
#define CACHE_SZ_AHEAD 3

struct cache_bulk {
	enum cache_via trees;                                     /* __atomic */
	uint64_t git_fetches, git_trees, git_blobs, gql_requests; /* __atomic */
	unsigned fetching; /* __atomic: blob batches on the wire */
	/* What a reader waited for sizes (__atomic): rounds asked on its own thread, and
	 * waits for a round in flight on another, with the time each took (µs) */
	uint64_t sz_rounds, sz_fg_rounds, sz_fg_us, sz_waits, sz_wait_us, sz_untrimmed;
	struct cache_dirjob *jobs; /* under the cache's lock */
	pthread_cond_t cond;
	struct cache_lfs_ahead lfs[CACHE_LFS_AHEAD]; /* under the cache's lock */
	size_t lfs_next;
	struct cache_commit_use uses[CACHE_COMMIT_USES]; /* under the cache's lock */
	size_t uses_next;
	struct cache_batch *inflight; /* under the cache's lock */
	/* The look-ahead (under the cache's lock): the recent batches of readers' commits,
	 * numbered in the order they started (seq); a reader opening a blob of one (other
	 * than the one that asked for it) is in that batch, and look-ahead batches start on
	 * free slots until CACHE_AHEAD_SLOTS are ahead of it, so batches are in flight while
	 * the reader consumes the one before. */
	/* The server's git capabilities asked ahead (under the cache's lock): while a
	 * walk's first REST pages are listed, not after them, on the way to its trees. */
	pthread_t caps_th;
	bool caps_started, caps_running;
	char *caps_project;
	struct cache_recent recent[CACHE_AHEAD_RECENT];
	size_t recent_next;
	/* the large files the look-ahead handed to the prefetch workers lately */
	char big_recent[CACHE_AHEAD_BIG_RECENT][41];
	size_t big_next;
	unsigned seq_latest, seq_reader, ahead_pending;
	unsigned ahead_done; /* seq_latest when a look-ahead found nothing left */
	struct cache_ahead {
		struct cache *c;
		pthread_t th;
		bool started, running;
		char commit[41], *path;
		int64_t pid;
	} ahead[CACHE_AHEAD_SLOTS];
	/* The same for sizes (under the cache's lock): the last rounds' directories (by
	 * hash, numbered), the round a reader last listed a directory of, and where the next
	 * round starts. The sizes thread asks round after round while it is fewer than
	 * CACHE_SZ_AHEAD rounds ahead of that reader; a reader's listing restarts it. */
	struct cache_sz_round {
		uint64_t *dirs, seq;
		size_t n;
		int64_t pid;
		char commit[41];
	} sz_ring[CACHE_SZ_AHEAD + 1];
	uint64_t sz_seq, sz_reader_seq, sz_first;
	bool sz_any; /* also read __atomic without the lock */
	char sz_commit[41], *sz_resume;
	int64_t sz_pid;
	bool sz_running, sz_started;
	pthread_t sz_th;
};

#define CACHE_REFLISTS_MAX 64 /* (project, kind) ref listings kept in memory */
#define CACHE_PATH_MAX     4096
#define CACHE_REF_MAX      1024
#define CACHE_LIVE_BUCKETS 1024
#define CACHE_TOUCH_MAX    256     /* access times batched before one index write */
#define CACHE_ERRORS       16      /* recent errors kept for status */
#define CACHE_BRANCHES_MAX 256     /* branches polled */
#define CACHE_JOBS_MAX     65536   /* prefetch queue */
#define CACHE_PIDS_MAX     256     /* project id -> path, for LFS batch URLs */
#define CACHE_BACKOFF_MAX  300000  /* ms between polls of a failing branch */
#define CACHE_WALK_MAX     1000000 /* entries visited by forget */

struct cache_reflist {
	int64_t project_id;
	enum cache_ref_kind kind;
	char **names;
	size_t n;
	int64_t at;
	struct cache_reflist *next;
};

struct cache_inflight {
	char oid[41];
	unsigned refs;
	bool done;
	int result;
	struct cache_inflight *next;
};

/* An object someone has open or is downloading, keyed by kind and id: what eviction
 * must leave alone and where concurrent readers find the shared download. */
struct cache_live {
	enum odb_kind kind;
	char oid[65];
	unsigned opens;
	bool starting;    /* a stream is being set up: wait for it */
	struct stream *s; /* the download in progress (a reference), or NULL */
	uint64_t reserve; /* bytes s will store once verified (0: streamed through) */
	struct cache_live *next;
};

struct cache_err {
	int64_t at;
	char msg[400]; /* room for a request's URL and curl's reason */
};

struct cache_branch {
	int64_t pid;
	char name[CACHE_REF_MAX + 1];
	int64_t touched, next_poll;
	unsigned backoff_ms;
	struct cache_branch *next;
};

struct cache_job {
	int64_t pid;
	char commit[41];
	char oid[41];
	bool tree;
	char *path;
	struct cache_job *next;
};

struct cache_pid {
	int64_t id;
	char path[1024];
};

struct cache {
	unsigned branch_ttl_ms, list_ttl_ms;
	unsigned poll_ms, nworkers;
	uint64_t limit; /* __atomic */
	bool limit_default;
	/* bytes others keep under the same limit and the cache cannot evict (branch views'
	 * overlays): cache_set_pinned */
	uint64_t (*pinned)(void *arg);
	void *pinned_arg;
	char *dir;
	struct odb *odb;
	struct idx *idx;
	struct gl *gl;
	pthread_mutex_t lock; /* guards everything below */
	pthread_cond_t done;  /* an in-flight download finished */
	json_t *user;
	struct cache_project *projects;
	size_t nprojects;
	int64_t projects_at;
	bool have_projects;
	struct cache_reflist *reflists;
	size_t nreflists;
	struct cache_inflight *inflight;
	uint64_t hits, misses;  /* __atomic */
	uint64_t bytes_fetched; /* __atomic: completed downloads */
	uint64_t polls;         /* __atomic: branch heads re-asked by the poller */
	int64_t refresh_at;     /* anything fetched before this is stale */
	struct cache_live *live[CACHE_LIVE_BUCKETS];
	unsigned in_flight;
	struct idx_obj touch[CACHE_TOUCH_MAX];
	size_t ntouch;
	/* records of objects just stored, written with the access times: a download costs
	 * no index transaction of its own (a crash loses them; the start-up pass restores
	 * a record for every object on disk) */
	struct idx_obj puts[CACHE_TOUCH_MAX];
	size_t nputs;
	struct cache_err errs[CACHE_ERRORS];
	size_t nerrs, errs_next;
	struct cache_branch *branches;
	size_t nbranches;
	cache_branch_moved_fn moved_fn;
	void *moved_arg;
	unsigned moved_running;    /* callbacks in progress */
	pthread_cond_t moved_idle; /* moved_running went down */
	struct cache_pid pids[CACHE_PIDS_MAX];
	size_t npids, pids_next;
	struct cache_job *jobs, *jobs_tail;
	size_t njobs;
	unsigned busy_workers;
	pthread_cond_t jobs_cond;
	pthread_t *workers;
	pthread_t maint;
	bool maint_started;
	pthread_cond_t maint_cond;
	bool stop;
	pthread_mutex_t evict_lock; /* one eviction at a time */
	struct cache_bulk bulk;     /* cache_bulk.c's and cache_sizes.c's state */
};

/* An open object (cache.h): shared between cache_obj.c, which opens and reads it, and
 * cache_jobs.c, whose prefetch waits for its stream. */
struct cache_obj {
	struct cache *c;
	enum odb_kind kind;
	char oid[65];
	bool lfs;
	uint64_t size;
	struct odb_blob *blob; /* stored and verified */
	struct stream *s;      /* or streaming */
	/* A git blob of known size is fetched (stored whole when small, streamed when large)
	 * at its first read, not at open: an open that is never read costs no request. */
	bool lazy;
	bool ready; /* __atomic: a lazy object's blob or s is set */
	int64_t pid;
	char commit[41]; /* where a lazy small blob sits, so its first read can bring its */
	char *path;      /* directory's small files along (cache_bulk_blobs); or NULL */
	pthread_mutex_t load_lock;
};

/* cache.c */
int64_t cache_now_ms(void);
void cache_err_note(struct cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cache_evict(struct cache *c, uint64_t need);
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size);
int cache_pid_path(struct cache *c, int64_t id, char path[1024]);
int cache_lfs_possible(struct cache *c, int64_t project_id, const char *commit, const char *path);

bool cache_oid_valid(const char *oid);
int cache_path_ok(const char *path);
int cache_ref_from_json(const json_t *j, enum cache_ref_kind kind, char commit[41]);
bool cache_fresh_at(int64_t at, unsigned ttl_ms);
int cache_project_parse(const json_t *j, struct cache_project *p);
void cache_pid_note(struct cache *c, int64_t id, const char *path);
void cache_commit_time_note(struct cache *c, const char *commit, const json_t *cj);

/* cache_evict.c, cache_obj.c, cache_jobs.c */
void cache_err_note(struct cache *c, const char *fmt, ...);
void cache_err_hook(void *arg, const char *msg);
enum idx_obj_kind cache_idx_kind(enum odb_kind kind);
void cache_touch_flush(struct cache *c);
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size);
void cache_touch(struct cache *c, enum odb_kind kind, const char *oid);
unsigned cache_live_hash(enum odb_kind kind, const char *oid);
struct cache_live *cache_live_find(struct cache *c, enum odb_kind kind, const char *oid);
struct cache_live *cache_live_get(struct cache *c, enum odb_kind kind, const char *oid);
void cache_live_settle(struct cache *c, struct cache_live *l);
bool cache_is_live(struct cache *c, enum odb_kind kind, const char *oid);
int cache_stream_wait(struct cache *c, enum odb_kind kind, const char *oid);
int cache_limit_parse(const char *s, uint64_t *out);
int cache_set_limit(struct cache *c, uint64_t limit);
uint64_t cache_reserved(struct cache *c);
int cache_evict(struct cache *c, uint64_t need);
void cache_pid_note(struct cache *c, int64_t id, const char *path);
int cache_pid_path(struct cache *c, int64_t id, char path[1024]);
int cache_attrs_lfs(struct cache *c, int64_t project_id, const struct tree_entry *e, size_t n);
int cache_lfs_possible(struct cache *c, int64_t project_id, const char *commit, const char *path);
int cache_blob_info(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, int64_t listed_size, struct cache_blob_info *info);
int cache_src_fetch(void *arg, uint64_t off, const struct gl_stream_sink *sink);
void cache_src_free(void *arg);
void cache_stream_done(void *arg, struct stream *s, int result, const char *reason);
int cache_room(void *arg, uint64_t bytes);
int cache_stream_start(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
                       uint64_t size, struct stream **out, bool *keep);
int cache_obj_attach(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
                     int64_t size, struct cache_obj *o, struct cache_live *l, bool defer);
int cache_obj_get(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid, int64_t size,
                  struct cache_obj *o);
int cache_lfs_confirm(struct cache *c, int64_t pid, const char *oid,
                      const struct cache_blob_info *info);
int cache_obj_open(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *oid, struct cache_obj **out);
uint64_t cache_obj_size(const struct cache_obj *o);
int cache_obj_load(struct cache_obj *o);
ssize_t cache_obj_pread(struct cache_obj *o, void *buf, size_t n, uint64_t off);
int cache_obj_fd(struct cache_obj *o);
const char *cache_obj_lfs_oid(const struct cache_obj *o);
void cache_obj_close(struct cache_obj *o);
int cache_job_push(struct cache *c, int64_t pid, const char *commit, const char *path,
                   const char *oid, bool tree);
void cache_job_run(struct cache *c, struct cache_job *j);
int cache_workers_start(struct cache *c);
void *cache_worker_main(void *arg);
int cache_prefetch(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *tree_oid);
size_t cache_jobs_pending(struct cache *c);
void cache_forget_settle(struct cache *c, enum odb_kind kind, const char *oid);
int cache_forget_blob(struct cache *c, const char *oid);
int cache_forget(struct cache *c, int64_t project_id, const char *oid, bool is_tree);
void cache_refresh(struct cache *c);
void cache_on_branch_moved(struct cache *c, cache_branch_moved_fn fn, void *arg);
void cache_branch_moved(struct cache *c, int64_t pid, const char *name, const char *old,
                        const char *now);
void cache_branch_touch(struct cache *c, int64_t project_id, const char *branch);
void cache_poll_branches(struct cache *c);
int cache_reconcile_one(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes);
void *cache_maint_main(void *arg);

/* cache_bulk.c */
void cache_bulk_init(struct cache *c);
void cache_bulk_fini(struct cache *c);
/* Waits for the look-ahead threads (c->stop is set). */
void cache_bulk_stop(struct cache *c);
/* A reader opened small blob oid at path: starts the next batch when it is one of the
 * latest batch's. */
void cache_bulk_touch(struct cache *c, int64_t pid, const char *commit, const char *path,
                      const char *oid);
/* The root tree of commit over git (every tree of the commit indexed on the way):
 * -ENOTSUP when the server does not offer it (use REST). */
int cache_bulk_root(struct cache *c, int64_t pid, const char *commit, char tree_oid[41]);
/* Whether a tree of commit that is not indexed should come with all the others in one
 * git fetch now (true) or from the REST listing of its directory (false): a path looked
 * up alone costs a few small listings, a walk over the tree (more than BULK_REST_PAGES
 * pages listed, or one directory of more than a page) one fetch of every tree.
 * cache_bulk_listed counts a REST listing. */
bool cache_bulk_trees_now(struct cache *c, const char *commit);
void cache_bulk_listed(struct cache *c, int64_t pid, const char *commit, size_t entries);
/* The small blobs of the directory holding path that are not cached, in one git fetch
 * (the blob oid first; with oid NULL, path is the directory): 0, or -ENOTSUP (fetch one
 * by one). */
int cache_bulk_blobs(struct cache *c, int64_t pid, const char *commit, const char *path,
                     const char *oid);
/* The LFS objects of a directory that are not stored, GL_LFS_BATCH_MAX a batch request:
 * their download actions are kept for the fetches that follow (cache_bulk_lfs_take). */
int cache_bulk_lfs(struct cache *c, int64_t pid, const char *commit, const char *dir,
                   const struct tree_entry *e, size_t n);
/* Moves a kept, unexpired action for LFS object oid into out: true, or false. */
bool cache_bulk_lfs_take(struct cache *c, const char *oid, struct gl_target *out);
/* Adds the bulk counters and the paths in use to status. */
int cache_bulk_stats(struct cache *c, json_t *j);

/* cache_bulk.c, for cache_sizes.c: what both bulk paths share */
#define BULK_PATH_MAX 4096
/* Microseconds on the monotonic clock. */
int64_t bulk_now_us(void);
/* Claims key (bulk_key) for this thread (true), or waits until the thread holding it is
 * done and returns false (its result is in the index now). bulk_try_claim does not wait:
 * false when another thread holds it. bulk_release ends a claim and wakes its waiters. */
bool bulk_claim(struct cache *c, const char *key);
bool bulk_try_claim(struct cache *c, const char *key);
void bulk_release(struct cache *c, const char *key);
/* The key of a claim on what ('t' trees, 's' sizes, 'b' blobs) of directory dir. */
void bulk_key(char key[64], char what, const char *commit, const char *dir);
/* Whether trees (and blobs) go over git, asked once per mount. */
enum cache_via bulk_trees_via(struct cache *c, const char *project);
/* The directory holding path (dir receives its path, "" for the root) and its entries. */
int bulk_dir_of(struct cache *c, int64_t pid, const char *commit, const char *path,
                char dir[BULK_PATH_MAX], struct tree_entry **out, size_t *n);
/* fetch_blobs' callback for a blob stored (arg: the cache): counted and noted. */
void bulk_blob_stored(void *arg, const char *oid, uint64_t size);
/* Visits directories in tree order: non-zero stops the walk. */
typedef int (*bulk_visit_fn)(void *arg, const char *dir, struct tree_entry *e, size_t n);
/* Visits the directories after dir in depth-first tree order, as far as their trees are
 * indexed, until visit returns non-zero or BULK_AHEAD_DIRS were seen. */
void bulk_walk_ahead(struct cache *c, int64_t pid, const char *commit, const char *dir,
                     bulk_visit_fn visit, void *arg);

/* cache_sizes.c */
/* Sizes and LFS verdicts of every file of the directory holding path, in batches over
 * GraphQL, into the index: 0 (look again), -ENOTSUP (no GraphQL: ask per file). */
int cache_bulk_sizes(struct cache *c, int64_t pid, const char *commit, const char *path);
/* A reader listed directory path of commit: starts the next round of sizes when it is
 * one of the latest round's (not the one that round started from). */
void cache_bulk_listing(struct cache *c, int64_t pid, const char *commit, const char *path);
/* Waits for the sizes thread and frees its rounds (lock held, c->stop set). */
void cache_sizes_stop(struct cache *c);
/* The sizes counters for status (cache_bulk_stats), or NULL. */
json_t *cache_sizes_stats(struct cache *c);

#endif
