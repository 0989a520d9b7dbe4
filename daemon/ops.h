/* reefd's FUSE low-level operations (daemon/ops.c): the mount grammar of fs/node.h served
 * from the cache layer (daemon/cache.h). Branch views are writable (their changes go to
 * per-branch overlays, daemon/overlay.h, until reef commit); tags, commits and the
 * virtual directories are read-only (EROFS), except .reef/ctl. The session's userdata is a struct
 * ops_ctx.
 *
 * Background threads owned by the context: one that sends the kernel invalidations
 * (branches that moved, forgotten objects; never from inside an operation handler, which
 * could deadlock with the kernel), and a small pool that prefetches the next siblings of
 * files opened one after the other. Start them with ops_ctx_start once the session
 * exists, stop them with ops_ctx_stop before the session is destroyed. */
#ifndef REEF_OPS_H
#define REEF_OPS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>

struct cache;
struct ops_ctx;

struct ops_opts {
	const char *server;      /* shown in .reef/status */
	const char *mountpoint;  /* absolute; lets .reef/ctl accept paths under it */
	double branch_timeout_s; /* kernel entry timeout for names that can change */
	double poll_s;           /* branch poll interval: entry timeout of branch roots */
	unsigned prefetch_ahead; /* siblings prefetched ahead of a sequential reader (0: off) */
	unsigned readahead_kb;   /* kernel readahead to set at init, when allowed (0: leave) */
	const char *cache_dir;   /* where branch views keep their overlays (NULL: read-only) */
	uint64_t lfs_above;      /* reef commit sends files larger than this to LFS (0: off) */
};

int ops_ctx_new(struct ops_ctx **out, const struct ops_opts *o);
/* The cache is opened after the daemon has forked; attach it before the session loop. */
void ops_ctx_set_cache(struct ops_ctx *ctx, struct cache *c);
/* Shows m's experiments, pipelines and processors (daemon/mlfs.h); after the cache is
 * attached. Without it those directories do not exist. */
struct mlops;
int ops_ctx_set_mlops(struct ops_ctx *ctx, struct mlops *m);
/* Starts the background threads and subscribes to branch moves; 0 or a negative errno. */
int ops_ctx_start(struct ops_ctx *ctx, struct fuse_session *se);
/* Unsubscribes and joins the background threads; accepts a context never started. */
void ops_ctx_stop(struct ops_ctx *ctx);
void ops_ctx_free(struct ops_ctx *ctx); /* accepts NULL; stops; does not free the cache */

const struct fuse_lowlevel_ops *ops_table(void);

#endif
