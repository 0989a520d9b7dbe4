/* Internals shared by the FUSE operations' modules: ops.c (attributes, files,
 * directories, the operations table), ops_lookup.c (lookups: names resolved to nodes),
 * ops_attr.c (xattrs, statfs, init), ops_write.c
 * (writable branch views over their overlays), ops_jobs.c (background work),
 * ops_ctl.c (.reef/status, .reef/ctl) and ops_commit.c (reef commit, status, diff,
 * discard). Not for other callers: they use ops.h. */
#ifndef REEF_OPS_INT_H
#define REEF_OPS_INT_H

#include <assert.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache.h"
#include "mlfs.h"
#include "node.h"
#include "ops.h"
#include "passthru.h"

#ifndef REEF_VERSION
#define REEF_VERSION "unknown"
#endif

/* Names whose binding can never change (inside a revision, tags, commits) are cached by
 * the kernel for a year; attributes of every node but the generated .reef files never
 * change because a node's identity includes the object it shows. */
#define FOREVER_S         (365.0 * 24 * 3600)
#define STATUS_MAX        (64 * 1024)
#define CACHELIST_MAX     ((size_t)64 << 20) /* .reef/cache.json */
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

	struct ovset *ovs; /* overlays of branch views (daemon/overlay.h); NULL: read-only */
	struct wstate *ws; /* renames of this mount (ops_write.c) */
	uint64_t
	    lfs_above; /* reef commit sends larger files to Git LFS (0: by .gitattributes only) */
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
	bool has_ov;  /* a file of a branch view's overlay, open on ovfd */
	bool dirty;   /* written since its last sync */
	int ovfd;
	struct overlay *ov;
	uint64_t ino;
	/* Its data file, and the overlay's epoch when it was last known live (a write that
	 * finds another epoch re-attaches: ops_write.c). committed: a commit took its
	 * content (its next write makes a new pending change); detached: its file was
	 * dropped (a discard, or deleted and replaced), writes go nowhere visible. */
	int64_t ovdata;
	uint64_t ovepoch;
	bool ovcommitted, ovdetached, ovexec;
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

static inline struct ops_ctx *ctx_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ops.c */
void touch_branch(struct ops_ctx *ctx, const struct node *n);
void log_remote_error(int r, const char *what, const char *name);
void fill_attr(struct ops_ctx *ctx, const struct node *n, struct stat *st);
double attr_timeout(struct ops_ctx *ctx, const struct node *n);
const struct node *rev_of(const struct node *n);
int dir_add(struct ops_dir *d, size_t *cap, const char *name, uint64_t ino, mode_t type);
mode_t type_of_git_mode(uint32_t mode);
void handle_track(struct ops_ctx *ctx, struct ops_handle *h, bool is_dir);
void file_free(struct ops_ctx *ctx, struct ops_file *f);

/* ops_lookup.c */
double entry_timeout(struct ops_ctx *ctx, const struct node *parent, const struct node *n);
bool ref_commit_known(struct ops_ctx *ctx, const struct node *dir, const char *name,
                      char commit[41]);
int project_paths(const struct cache_project *p, size_t n, const char ***out);
int load_listing(struct ops_ctx *ctx, struct node *dir, const struct node_listing **out);
int lookup_tree_child(struct ops_ctx *ctx, struct node *parent, const char *name,
                      struct node **out);
int resolve_child(struct ops_ctx *ctx, struct node *parent, const char *name, struct node **out,
                  bool *negative_ok);
void op_lookup(fuse_req_t req, fuse_ino_t pino, const char *name);

/* ops_jobs.c and ops_ctl.c */
void job_free(struct job *j);
void jobq_init(struct jobq *q, size_t max);
void jobq_destroy(struct jobq *q);
uint64_t jobq_push(struct jobq *q, struct job *j);
bool jobq_wait(struct jobq *q, uint64_t seq, unsigned ms);
bool jobq_stopping(struct jobq *q);
void *worker_main(void *arg);
int jobq_start(struct ops_ctx *ctx, struct jobq *q, size_t nthreads);
void jobq_stop(struct jobq *q);
void send_inval_inode(struct ops_ctx *ctx, uint64_t ino);
void job_branch(struct ops_ctx *ctx, struct job *j);
void job_fetch(struct ops_ctx *ctx, struct job *j, char *buf);
void job_run(struct ops_ctx *ctx, struct job *j, char *buf);
/* A branch view the mount itself changed (commit, discard): invalidated as a moved
 * branch, waiting a bounded time (INVAL_WAIT_MS) for the kernel to have dropped the old
 * view, so that what the caller of `reef commit`/`reef discard` lists next is the new. */
void branch_changed_wait(struct ops_ctx *ctx, int64_t project_id, const char *branch);
void on_branch_moved(void *arg, int64_t project_id, const char *branch, const char *old_commit,
                     const char *new_commit);
int fetch_queue(struct ops_ctx *ctx, int64_t project_id, const char *commit, const char *path,
                const char *oid, int64_t listed_size, uint64_t max_size);
void inval_inodes(struct ops_ctx *ctx, uint64_t *inos, size_t n);
void sibling_note(struct ops_ctx *ctx, const struct node *n);
json_t *jobq_json(struct jobq *q);
int status_render(struct ops_ctx *ctx, char **out, size_t *len);
int reefctl_error_render(struct ops_ctx *ctx, char **out, size_t *len);
int generated_render(struct ops_ctx *ctx, const struct node *n, char **out, size_t *len);
int reefctl_fail(struct ops_ctx *ctx, const char *req, int r, const char *fmt, ...);
int reefctl_step(struct ops_ctx *ctx, struct node **cur, const char *name);
int reefctl_resolve(struct ops_ctx *ctx, char *path, struct node **out);
int reefctl_tree_of(struct ops_ctx *ctx, const struct node *n, char tree[41]);
int reefctl_prefetch(struct ops_ctx *ctx, const char *req, struct node *n);
int reefctl_forget(struct ops_ctx *ctx, const char *req, struct node *n);
void reefctl_echo(char *out, size_t cap, const char *s, size_t len);
int reefctl_exec(struct ops_ctx *ctx, const char *data, size_t len);
void dir_changing(struct ops_ctx *ctx, fuse_ino_t ino);

/* ops_attr.c */
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_init(void *userdata, struct fuse_conn_info *conn);

/* ops_write.c */
struct overlay;
int wv_init(struct ops_ctx *ctx, const char *cache_dir);
void wv_free(struct ops_ctx *ctx);
/* The overlay of n's branch when n is in a branch view with pending changes, else NULL. */
struct overlay *wv_active(struct ops_ctx *ctx, const struct node *n);
int wv_lookup(struct ops_ctx *ctx, struct overlay *ov, struct node *parent, const char *name,
              struct node **out);
void wv_attr(struct ops_ctx *ctx, struct overlay *ov, const struct node *n, struct stat *st,
             double *timeout);
int wv_readlink(struct ops_ctx *ctx, const struct node *n, char *out, size_t cap);
int wv_dir_fill(struct ops_ctx *ctx, struct overlay *ov, struct ops_dir *d, size_t *cap);
void wv_rev_oid(struct ops_ctx *ctx, int64_t project_id, const char *branch, const char *commit,
                char *out, size_t cap);
int wv_open(fuse_req_t req, struct ops_ctx *ctx, struct node *n, struct fuse_file_info *fi);
void wv_write(fuse_req_t req, struct ops_ctx *ctx, struct ops_file *f, const char *buf, size_t size,
              off_t off);
int wv_sync(struct ops_ctx *ctx, struct ops_file *f);
void wv_mark_committed(struct ops_ctx *ctx, struct overlay *ov);
/* ops_write.c and ops_wdata.c */
int wv_cur_path(struct ops_ctx *ctx, const struct node *n, char *out, size_t cap);
int wv_room_for(struct ops_ctx *ctx, uint64_t growth);
int wv_reattach(struct ops_ctx *ctx, struct ops_file *f);
uint64_t wv_pinned_bytes(void *arg);
int wv_discard_all(struct ops_ctx *ctx, struct overlay *ov);
int wv_discard_paths(struct ops_ctx *ctx, struct overlay *ov, json_t *paths);

/* ops_commit.c: commit and discard requests (arg: the request's JSON), the pending
 * changes of a branch view as JSON (xattr user.reef.pending) */
#define XATTR_PENDING "user.reef.pending"
int reefctl_write_cmd(struct ops_ctx *ctx, const char *req, const char *cmd, const char *arg);
int wv_pending_json(struct ops_ctx *ctx, const struct node *n, char **out, size_t *len);
void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
               struct fuse_file_info *fi);
void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name);
void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t p, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np, const char *nn,
               unsigned int flags);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                struct fuse_file_info *fi);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                 int flags);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  struct fuse_file_info *fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                        struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                        struct fuse_file_info *fi_out, size_t len, int flags);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
              struct fuse_file_info *fi);

#endif
