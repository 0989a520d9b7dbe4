/* The experiments, data pipelines, visualizations, CI pipelines and processors of the
 * mount (daemon/mlfs.c): the nodes below <project>/experiments, <project>/data-pipelines,
 * <project>/visualizations (one grammar, mlops.h's launch kinds), <project>/pipelines,
 * .reef/processors and
 * .reef/usage.json, and their FUSE operations, on top of mlops.h (server and journal)
 * and the cache (an experiment's outputs/ is the ordinary tree of its branch). ops.c
 * calls in with one line per operation; docs/layout.md is the contract.
 *
 * Node kinds (fs/node.h): NODE_ML_DIR, NODE_ML_FILE (generated, read-only, attributes
 * never cached: sizes are the content's now), NODE_ML_CTL (control files). A node's
 * path is its path below the project ("experiments/exp1/status") or below the mount
 * (".reef/processors/x"); its oid is the job id for job-bound nodes (logs, artifacts,
 * pipeline jobs), so a retried job shows under new inodes.
 *
 * File handles of these nodes carry bit 0 set in fi->fh (mlfs_owns), so ops.c tells
 * them from its own with no lookup. Every function accepts a NULL mlfs (a daemon
 * without the feature): lookups are ENOENT, listings add nothing. */
#ifndef REEF_MLFS_H
#define REEF_MLFS_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "ops.h"

struct mlfs;
struct mlops;
struct node;
struct node_table;
struct cache;

int mlfs_new(struct mlfs **out, struct node_table *nodes, struct cache *cache, struct mlops *m);
void mlfs_free(struct mlfs *ml); /* accepts NULL; frees handles the kernel never released */

/* Resolves name under parent (a project, .reef, or an ML directory) to a node with one
 * kernel lookup counted. */
int mlfs_lookup(struct mlfs *ml, struct node *parent, const char *name, struct node **out);
/* Adds the entries of dir through add (name, the oid its node will have, type): the
 * whole listing of an ML directory, or the ML entries of a project and of .reef. */
typedef int (*mlfs_add_fn)(void *arg, const char *name, const char *oid, mode_t type);
int mlfs_list(struct mlfs *ml, const struct node *dir, mlfs_add_fn add, void *arg);
/* The size an ML file shows now (its content rendered, a log's current length). */
off_t mlfs_size(struct mlfs *ml, const struct node *n);

static inline bool mlfs_owns(const struct fuse_file_info *fi)
{
	return (fi->fh & 1) != 0;
}
/* These reply to req themselves. */
void mlfs_open(struct mlfs *ml, fuse_req_t req, const struct node *n, struct fuse_file_info *fi);
void mlfs_read(struct mlfs *ml, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi);
void mlfs_write(struct mlfs *ml, fuse_req_t req, const char *buf, size_t size, off_t off,
                struct fuse_file_info *fi);
void mlfs_flush(struct mlfs *ml, fuse_req_t req, struct fuse_file_info *fi);
void mlfs_release(struct mlfs *ml, fuse_req_t req, struct fuse_file_info *fi);

/* Adds queued_control_writes and control_writes {queued, failed, delivered} to the
 * .reef/status object. */
void mlfs_status(struct mlfs *ml, json_t *status);

#endif
