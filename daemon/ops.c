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

#include "ops_int.h"

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
	if (r == 0 && o->cache_dir) {
		r = wv_init(ctx, o->cache_dir);
		if (r < 0)
			node_table_free(ctx->nodes);
	}
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
	ctx->lfs_above = o->lfs_above;
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
	if (c && ctx->ovs) /* the overlays share the cache's limit (docs/write.md) */
		cache_set_pinned(c, wv_pinned_bytes, ctx);
}

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

void handle_track(struct ops_ctx *ctx, struct ops_handle *h, bool is_dir)
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

void file_free(struct ops_ctx *ctx, struct ops_file *f)
{
	if (!f)
		return;
	handle_untrack(ctx, &f->h);
	if (f->counted)
		passthru_release(f->ino, f->pass);
	cache_obj_close(f->obj);
	if (f->has_ov)
		close(f->ovfd);
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
	wv_free(ctx);
	node_table_free(ctx->nodes);
	free(ctx->server);
	free(ctx->mountpoint);
	free(ctx);
}

static bool is_dir_kind(enum node_kind k)
{
	return S_ISDIR(node_st_mode(&(struct node){.kind = k}));
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

void fill_attr(struct ops_ctx *ctx, const struct node *n, struct stat *st)
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
	case NODE_CACHE_LIST:
		/* size 0, as /proc's files: its size is known only by walking the whole
		 * index, which stat and ls -l must not cost (reads go to the end: direct_io) */
		st->st_size = 0;
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
	if (n->time > 0) {
		/* a revision's content shows its commit's committer time, as a checkout made
		 * then would: rsync -a and make see a push that changed a file */
		st->st_mtim.tv_sec = (time_t)n->time;
		st->st_mtim.tv_nsec = 0;
		st->st_ctim = st->st_mtim;
		st->st_atim = st->st_mtim;
	}
	/* The kernel keeps a directory's listing (no opendir: every directory is cached)
	 * until it sees another mtime at a rewind; a listing that can change shows the time
	 * its attributes were fetched, so it is listed anew once they expired. */
	if (ctx->no_opendir && listing_can_change(n)) {
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		st->st_ctim = st->st_mtim;
	}
}

double attr_timeout(struct ops_ctx *ctx, const struct node *n)
{
	if (ctx->no_opendir && listing_can_change(n))
		return ctx->dyn_timeout;
	return n->kind == NODE_STATUS || n->kind == NODE_CONTROL_ERROR || n->kind == NODE_ML_FILE ||
	               n->kind == NODE_ML_CTL || n->kind == NODE_CACHE_LIST
	           ? 0.0
	           : FOREVER_S;
}

/* The revision root a node is in, or NULL outside revisions. */
const struct node *rev_of(const struct node *n)
{
	while (n && n->kind != NODE_REV)
		n = n->parent;
	return n;
}

/* Tells the cache a branch is in use, so its poller watches the head. */
void touch_branch(struct ops_ctx *ctx, const struct node *n)
{
	const struct node *rev = rev_of(n);

	if (rev && rev->ref_kind == NODE_REF_BRANCH)
		cache_branch_touch(ctx->cache, rev->project_id, rev->path);
}

void log_remote_error(int r, const char *what, const char *name)
{
	if (r == -ENOENT)
		return;
	if (r == -EIO)
		log_warn("%s %s: server unreachable or bad answer, not cached", what, name);
	else
		log_warn("%s %s: %s", what, name, strerror(-r));
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
	struct overlay *ov = wv_active(ctx, n);
	double timeout = attr_timeout(ctx, n);

	fill_attr(ctx, n, &st);
	if (ov)
		wv_attr(ctx, ov, n, &st, &timeout);
	fuse_reply_attr(req, &st, timeout);
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
	} else if (n->oid[0] == 'o') { /* a symlink made in a branch view */
		r = wv_readlink(ctx, n, target, sizeof(target));
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_readlink(req, target);
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
	if (wv_open(req, ctx, n, fi)) { /* a branch view's file opened to write, or changed */
		node_put(ctx->nodes, n);
		return;
	}
	if (n->kind == NODE_CONTROL) {
		/* write-only: root passes the permission check the 0200 mode makes */
		r = acc == O_WRONLY ? 0 : -EACCES;
	} else if (acc != O_RDONLY || (fi->flags & O_TRUNC)) {
		r = -EROFS;
	} else if (n->kind != NODE_FILE && n->kind != NODE_STATUS &&
	           n->kind != NODE_CONTROL_ERROR && n->kind != NODE_CACHE_LIST) {
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
		/* A small file is read whole as soon as it is opened: have it now, while the
		 * open waits for its blob anyway (it comes in its directory's batch), so that
		 * the kernel reads the stored file itself instead of asking reefd for every
		 * piece. A failure here is the first read's to report. */
		if (passthru_on() && n->size < (int64_t)ODB_RAW_THRESHOLD)
			(void)cache_obj_load(f->obj);
		f->ino = ino;
		f->counted = true;
		f->pass = passthru_open(ino, cache_obj_fd(f->obj));
		/* the node shows one object for its whole life: pages never go stale */
		fi->keep_cache = !f->pass;
		sibling_note(ctx, n);
	}
	/* A read-only open has nothing to flush: the kernel skips the FLUSH round trip at
	 * each close (FOPEN_NOFLUSH, Linux 5.16+; older kernels ignore the flag). */
	if (!f->ctl)
		fi->noflush = 1;
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
	if (f->has_ov) { /* an overlay file: the kernel splices from it */
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = f->ovfd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
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

int dir_add(struct ops_dir *d, size_t *cap, const char *name, uint64_t ino, mode_t type)
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

		/* at the root, .reef is the mount's own directory, not a namespace */
		if (!node_name_is_gitlab_path(c[i].name) ||
		    (d->node->kind == NODE_ROOT && strcmp(c[i].name, ".reef") == 0))
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
			char oid[64];

			if (d->node->ref_kind == NODE_REF_BRANCH)
				wv_rev_oid(ctx, d->node->project_id, full, commit, oid,
				           sizeof(oid));
			else
				snprintf(oid, sizeof(oid), "%s", commit);
			r = dir_add_node(ctx, d, cap, c[i].name, oid, S_IFDIR);
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
			r = dir_add_node(ctx, d, &cap, "cache.json", "", S_IFREG);
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
	case NODE_TREE: {
		struct overlay *ov = wv_active(ctx, n);

		if (ov) { /* pending changes: listed anew each time, never cached */
			r = wv_dir_fill(ctx, ov, d, &cap);
			break;
		}
	}
		/* fallthrough */
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

mode_t type_of_git_mode(uint32_t mode)
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
    .rmdir = op_rmdir,
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
    .fsyncdir = op_fsyncdir,
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
