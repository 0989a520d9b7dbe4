/* Internals of the cache layer shared by its modules: cache.c (lookups, downloads,
 * eviction, branches) and cache_bulk.c (many objects a request: trees over git, sizes
 * over GraphQL, blob batches). Not for callers outside the cache: they use cache.h. */
#ifndef REEF_CACHE_INT_H
#define REEF_CACHE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "gl.h"
#include "reef/idx.h"
#include "reef/odb.h"

/* How a server is asked for trees and sizes, learnt at the first need. */
enum cache_via { CACHE_VIA_UNKNOWN, CACHE_VIA_BULK, CACHE_VIA_REST };

/* A directory whose sizes or blobs one thread is fetching: others wait for it. */
struct cache_dirjob {
	char key[64]; /* commit prefix + hash of the path + what */
	bool done;
	struct cache_dirjob *next;
};

struct cache_bulk {
	enum cache_via trees;                                     /* __atomic */
	uint64_t git_fetches, git_trees, git_blobs, gql_requests; /* __atomic */
	struct cache_dirjob *jobs;                                /* under the cache's lock */
	pthread_cond_t cond;
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
	char msg[200];
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
	struct cache_bulk bulk;     /* cache_bulk.c's state */
};

/* cache.c */
int64_t cache_now_ms(void);
void cache_err_note(struct cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cache_evict(struct cache *c, uint64_t need);
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size);
int cache_pid_path(struct cache *c, int64_t id, char path[1024]);
int cache_lfs_possible(struct cache *c, int64_t project_id, const char *commit, const char *path);

/* cache_bulk.c */
void cache_bulk_init(struct cache *c);
void cache_bulk_fini(struct cache *c);
/* The root tree of commit over git (every tree of the commit indexed on the way):
 * -ENOTSUP when the server does not offer it (use REST). */
int cache_bulk_root(struct cache *c, int64_t pid, const char *commit, char tree_oid[41]);
/* Sizes and LFS verdicts of every file of the directory holding path, in batches over
 * GraphQL, into the index: 0 (look again), -ENOTSUP (no GraphQL: ask per file). */
int cache_bulk_sizes(struct cache *c, int64_t pid, const char *commit, const char *path);
/* The small blobs of the directory holding path that are not cached, in one git fetch
 * (the blob oid first; with oid NULL, path is the directory): 0, or -ENOTSUP (fetch one
 * by one). */
int cache_bulk_blobs(struct cache *c, int64_t pid, const char *commit, const char *path,
                     const char *oid);
/* Adds the bulk counters and the paths in use to status. */
int cache_bulk_stats(struct cache *c, json_t *j);

#endif
