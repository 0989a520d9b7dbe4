/* reefd's FUSE low-level operations (daemon/ops.c): the mount grammar of fs/node.h served
 * from the cache layer (daemon/cache.h). Read-only: every write-ish operation is EROFS.
 * The session's userdata is a struct ops_ctx. */
#ifndef REEF_OPS_H
#define REEF_OPS_H

#define FUSE_USE_VERSION 312

#include <fuse_lowlevel.h>

struct cache;
struct ops_ctx;

struct ops_opts {
	const char *server;      /* shown in .reef/status */
	double branch_timeout_s; /* kernel entry timeout for names that can change */
};

int ops_ctx_new(struct ops_ctx **out, const struct ops_opts *o);
/* The cache is opened after the daemon has forked; attach it before the session loop. */
void ops_ctx_set_cache(struct ops_ctx *ctx, struct cache *c);
void ops_ctx_free(struct ops_ctx *ctx); /* accepts NULL; does not free the cache */

const struct fuse_lowlevel_ops *ops_table(void);

#endif
