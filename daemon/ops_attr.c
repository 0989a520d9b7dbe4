/* The FUSE operations that describe rather than read (daemon/ops_attr.c): extended
 * attributes, statfs, and the session's init (capabilities, readahead). Split from ops.c,
 * which keeps files and directories (lookups: ops_lookup.c). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "overlay.h"
#include "reef/log.h"

#include "ops_int.h"

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

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
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
	if (strcmp(name, XATTR_PENDING) == 0 && n->kind == NODE_REV) {
		/* computed at each call; not listed (listxattr) since it may be long */
		char *j = NULL;
		size_t jl = 0;

		r = wv_pending_json(ctx, n, &j, &jl);
		if (r < 0)
			fuse_reply_err(req, -r);
		else if (size == 0)
			fuse_reply_xattr(req, jl);
		else if (size < jl)
			fuse_reply_err(req, jl > 65536 ? E2BIG : ERANGE);
		else
			fuse_reply_buf(req, j, jl);
		free(j);
		node_put(ctx->nodes, n);
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

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
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

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct statvfs sv = {0};

	(void)ino;
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_namemax = TREE_NAME_MAX;
	sv.f_files = node_table_count(ctx->nodes);
	if (ctx->cache) {
		/* df shows the cache: its limit as the size, what it stores and what branch
		 * views hold in their overlays as used (writes past the limit are ENOSPC) */
		uint64_t bytes = 0, objects = 0, limit = 0;
		uint64_t used = ctx->ovs ? ovset_bytes(ctx->ovs) : 0;

		cache_usage(ctx->cache, &bytes, &objects, &limit);
		used += bytes;
		sv.f_blocks = (fsblkcnt_t)((limit + 4095) / 4096);
		sv.f_bfree = sv.f_bavail = (fsblkcnt_t)(used < limit ? (limit - used) / 4096 : 0);
	}
	fuse_reply_statfs(req, &sv);
}

void op_init(void *userdata, struct fuse_conn_info *conn)
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
