/* Writable branch views (docs/write.md): the FUSE operations that change a branch view,
 * over its overlay (daemon/overlay.h), and the merged view ops.c asks for while a
 * branch has pending changes. Everywhere else (tags/, commits/, HEAD, the virtual
 * directories) every change is EROFS, as before.
 *
 * Paths. A node's path field is where its content sits in the branch's commit (a hint for
 * the cache); where it is now is its chain of names up to the revision root, through the
 * renames this mount made (a renamed node is pinned with its new parent and name: the
 * kernel keeps using the inode it moved, and lookups below it must see the new path).
 *
 * Kernel caches. A branch with pending changes shows its directories with attribute
 * timeout 0 and the time of the request as mtime, so a listing is rebuilt at each read;
 * changed files have attribute timeout 0. Changes made through the kernel update its
 * dentries themselves; changes it does not see (discard, commit) give the revision root
 * a new inode (its key carries the overlay's epoch) and invalidate the old one. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "reef/log.h"

#include "ops_int.h"

#define WV_DEPTH_MAX (NODE_PATH_MAX / 2)
#define COPY_BUF     (1u << 20)

struct wren {
	struct wren *next;
	struct node *self;   /* pinned */
	struct node *parent; /* pinned: the directory it was renamed into */
	char *name;
};

struct wstate {
	pthread_mutex_t lock;
	struct wren *ren;
};

static void ren_drop(struct ops_ctx *ctx, struct wren *w);
static void ren_forget_at(struct ops_ctx *ctx, const struct node *dir, const char *name);

int wv_init(struct ops_ctx *ctx, const char *cache_dir)
{
	struct wstate *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->lock, NULL);
	r = ovset_open(&ctx->ovs, cache_dir);
	if (r < 0) {
		pthread_mutex_destroy(&w->lock);
		free(w);
		return r;
	}
	ctx->ws = w;
	return 0;
}

void wv_free(struct ops_ctx *ctx)
{
	struct wren *x, *next;

	if (ctx->ws) {
		for (x = ctx->ws->ren; x; x = next) {
			next = x->next;
			ren_drop(ctx, x);
		}
		pthread_mutex_destroy(&ctx->ws->lock);
		free(ctx->ws);
		ctx->ws = NULL;
	}
	ovset_free(ctx->ovs);
	ctx->ovs = NULL;
}

/* ---- where a node is ---- */

static const struct node *branch_rev(const struct node *n)
{
	const struct node *r = rev_of(n);

	return r && r->ref_kind == NODE_REF_BRANCH ? r : NULL;
}

static bool in_view(const struct node *n)
{
	switch (n->kind) {
	case NODE_REV:
	case NODE_TREE:
	case NODE_FILE:
	case NODE_SYMLINK:
		return branch_rev(n) != NULL;
	default:
		return false;
	}
}

static bool is_dir_node(const struct node *n)
{
	return n->kind == NODE_REV || n->kind == NODE_TREE;
}

/* Whether a directory node shows a tree of the branch below it (a new directory does not). */
static bool has_lower(const struct node *n)
{
	return n->kind == NODE_REV || (n->kind == NODE_TREE && n->oid[0] != 'o');
}

/* The overlay of n's branch; created (based on the commit shown) when create is set.
 * -EROFS outside branch views. */
static int view_overlay(struct ops_ctx *ctx, const struct node *n, bool create,
                        struct overlay **out)
{
	const struct node *rev = branch_rev(n);
	char base[41];
	int r;

	*out = NULL;
	if (!rev || !ctx->ovs)
		return -EROFS;
	r = ovset_get(ctx->ovs, rev->project_id, rev->path, create, rev->commit, out);
	if (r == 0 && *out && create) {
		ov_base(*out, base);
		if (!base[0])
			r = ov_set_base(*out, rev->commit);
	}
	return r;
}

struct overlay *wv_active(struct ops_ctx *ctx, const struct node *n)
{
	struct overlay *ov = NULL;

	if (!ctx->ovs || !ovset_any(ctx->ovs) || !in_view(n) ||
	    view_overlay(ctx, n, false, &ov) < 0 || !ov || ov_count(ov) == 0)
		return NULL;
	return ov;
}

static struct wren *ren_find(struct wstate *w, uint64_t ino)
{
	struct wren *x;

	for (x = w->ren; x; x = x->next)
		if (x->self->ino == ino)
			return x;
	return NULL;
}

/* Where n is now, relative to its revision root ("" for the root itself). */
int wv_cur_path(struct ops_ctx *ctx, const struct node *n, char *out, size_t cap)
{
	const char **names = malloc(WV_DEPTH_MAX * sizeof(*names));
	size_t k = 0, len = 0;
	int r = 0;

	if (!names)
		return -ENOMEM;
	pthread_mutex_lock(&ctx->ws->lock);
	while (n && n->kind != NODE_REV) {
		struct wren *w = ren_find(ctx->ws, n->ino);

		if (k == WV_DEPTH_MAX) {
			r = -ENAMETOOLONG;
			break;
		}
		names[k++] = w ? w->name : n->name;
		n = w ? w->parent : n->parent;
	}
	if (r == 0 && !n)
		r = -EINVAL;
	out[0] = 0;
	while (r == 0 && k > 0) {
		const char *s = names[--k];
		size_t l = strlen(s);

		if (len + l + 2 > cap) {
			r = -ENAMETOOLONG;
			break;
		}
		if (len)
			out[len++] = '/';
		memcpy(out + len, s, l + 1);
		len += l;
	}
	pthread_mutex_unlock(&ctx->ws->lock);
	free(names);
	return r;
}

static int child_path(struct ops_ctx *ctx, const struct node *dir, const char *name, char *out,
                      size_t cap)
{
	char p[OV_PATH_MAX];
	int r;

	if (!node_name_is_entry(name))
		return -EINVAL;
	/* git keeps no entry of this name in a tree (fsck refuses it) */
	if (strcasecmp(name, ".git") == 0)
		return -EINVAL;
	r = wv_cur_path(ctx, dir, p, sizeof(p));
	if (r < 0)
		return r;
	return node_path_join(out, cap, p, name);
}

static void ent_key(const struct ov_ent *e, char *out, size_t cap)
{
	if ((e->kind == OV_FILE && e->data == 0) || (e->kind == OV_DIR && e->blob[0]))
		snprintf(out, cap, "%s", e->blob);
	else
		snprintf(out, cap, "o%" PRId64, e->data);
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* The base entry name has in dir's tree, if dir shows one. */
static int lower_entry(struct ops_ctx *ctx, struct node *dir, const char *name,
                       const struct node_dirent **out)
{
	const struct node_listing *l;
	int r;

	*out = NULL;
	if (!has_lower(dir))
		return -ENOENT;
	r = load_listing(ctx, dir, &l);
	if (r < 0)
		return r;
	*out = node_listing_find(l, name);
	return *out ? 0 : -ENOENT;
}

/* What name under dir is now: *ent filled (has_ent) from the overlay, else *d the base
 * entry. -ENOENT when it does not exist. */
struct wstat {
	bool has_ent;
	struct ov_ent ent;
	const struct node_dirent *d;
};

static int merged_get(struct ops_ctx *ctx, struct overlay *ov, struct node *dir, const char *name,
                      const char *cp, struct wstat *s)
{
	int r;

	s->has_ent = false;
	s->d = NULL;
	r = ov_get(ov, cp, &s->ent);
	if (r == 0) {
		s->has_ent = true;
		return s->ent.kind == OV_WH ? -ENOENT : 0;
	}
	if (r != -ENOENT)
		return r;
	return lower_entry(ctx, dir, name, &s->d);
}

static bool wstat_is_dir(const struct wstat *s)
{
	return s->has_ent ? s->ent.kind == OV_DIR : s->d->mode == TREE_MODE_DIR;
}

/* ---- nodes and attributes ---- */

static int node_from_ent(struct ops_ctx *ctx, struct overlay *ov, struct node *parent,
                         const char *name, const char *cp, const struct ov_ent *e,
                         struct node **out)
{
	struct node_attrs a = {0};
	char key[64];

	ent_key(e, key, sizeof(key));
	a.oid = key;
	/* content of the branch moved here: where the commit has it (the cache's hint) */
	a.path = e->kind != OV_LINK && e->target[0] ? e->target : cp;
	switch (e->kind) {
	case OV_FILE:
		a.kind = NODE_FILE;
		a.git_mode = e->exec ? TREE_MODE_EXEC : TREE_MODE_FILE;
		a.size = e->data ? ov_data_size(ov, e->data) : e->size;
		if (a.size < 0)
			a.size = 0;
		if (!e->data && e->lfs[0])
			a.lfs_oid = e->lfs;
		break;
	case OV_DIR:
		a.kind = NODE_TREE;
		a.git_mode = TREE_MODE_DIR;
		a.tree = key;
		break;
	case OV_LINK:
		a.kind = NODE_SYMLINK;
		a.git_mode = TREE_MODE_LINK;
		a.size = (int64_t)strlen(e->target);
		break;
	default:
		return -ENOENT;
	}
	return node_lookup(ctx->nodes, parent, name, &a, out);
}

int wv_lookup(struct ops_ctx *ctx, struct overlay *ov, struct node *parent, const char *name,
              struct node **out)
{
	char cp[OV_PATH_MAX];
	struct ov_ent *e = malloc(sizeof(*e));
	int r;

	if (!e)
		return -ENOMEM;
	r = child_path(ctx, parent, name, cp, sizeof(cp));
	if (r < 0) {
		free(e);
		return r == -EINVAL ? -ENOENT : r;
	}
	r = ov_get(ov, cp, e);
	if (r == 0)
		r = e->kind == OV_WH ? -ENOENT : node_from_ent(ctx, ov, parent, name, cp, e, out);
	else if (r == -ENOENT)
		r = has_lower(parent) ? lookup_tree_child(ctx, parent, name, out) : -ENOENT;
	free(e);
	return r;
}

/* Attributes of a node of a branch view with pending changes: what its row says. */
void wv_attr(struct ops_ctx *ctx, struct overlay *ov, const struct node *n, struct stat *st,
             double *timeout)
{
	char cp[OV_PATH_MAX];
	struct ov_ent *e;

	if (is_dir_node(n)) {
		/* its listing may change at any time: listed anew at each read */
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		st->st_ctim = st->st_mtim;
		*timeout = 0;
		return;
	}
	if (n->kind == NODE_REV || wv_cur_path(ctx, n, cp, sizeof(cp)) < 0)
		return;
	e = malloc(sizeof(*e));
	if (!e || ov_get(ov, cp, e) < 0 || e->kind == OV_WH) {
		free(e);
		return;
	}
	*timeout = 0;
	if (e->kind == OV_FILE) {
		st->st_mode = S_IFREG | (e->exec ? 0755 : 0644);
		st->st_size = e->data ? ov_data_size(ov, e->data) : e->size;
		if (st->st_size < 0)
			st->st_size = 0;
		st->st_blocks = (st->st_size + 511) / 512;
	} else if (e->kind == OV_LINK) {
		st->st_size = (off_t)strlen(e->target);
	}
	if (e->mtime > 0) {
		st->st_mtim.tv_sec = (time_t)e->mtime;
		st->st_mtim.tv_nsec = 0;
		st->st_ctim = st->st_mtim;
	}
	free(e);
}

int wv_readlink(struct ops_ctx *ctx, const struct node *n, char *out, size_t cap)
{
	struct overlay *ov = wv_active(ctx, n);
	char cp[OV_PATH_MAX];
	struct ov_ent *e;
	int r;

	if (!ov)
		return -ENOENT;
	r = wv_cur_path(ctx, n, cp, sizeof(cp));
	if (r < 0)
		return r;
	e = malloc(sizeof(*e));
	if (!e)
		return -ENOMEM;
	r = ov_get(ov, cp, e);
	if (r == 0 && e->kind != OV_LINK)
		r = -ENOENT;
	if (r == 0)
		snprintf(out, cap, "%s", e->target);
	free(e);
	return r;
}

int wv_dir_fill(struct ops_ctx *ctx, struct overlay *ov, struct ops_dir *d, size_t *cap)
{
	char cp[OV_PATH_MAX], key[64];
	const struct node_listing *l = NULL;
	struct ov_ent *v = NULL;
	size_t n = 0, i, j;
	int r;

	r = wv_cur_path(ctx, d->node, cp, sizeof(cp));
	if (r == 0)
		r = ov_children(ov, cp, &v, &n);
	if (r == 0 && has_lower(d->node))
		r = load_listing(ctx, d->node, &l);
	for (i = 0; r == 0 && l && i < l->n; i++) {
		const struct node_dirent *e = &l->e[i];
		bool shadowed = false;

		for (j = 0; j < n && !shadowed; j++) {
			const char *s = strrchr(v[j].path, '/');

			shadowed = strcmp(s ? s + 1 : v[j].path, e->name) == 0;
		}
		if (!shadowed)
			r = dir_add(d, cap, e->name,
			            node_ino_predict(ctx->nodes, d->node->ino, e->name, e->oid),
			            type_of_git_mode(e->mode));
	}
	for (j = 0; r == 0 && j < n; j++) {
		const char *s = strrchr(v[j].path, '/');
		const char *name = s ? s + 1 : v[j].path;
		mode_t type = v[j].kind == OV_DIR    ? S_IFDIR
		              : v[j].kind == OV_LINK ? S_IFLNK
		                                     : S_IFREG;

		if (v[j].kind == OV_WH)
			continue;
		ent_key(&v[j], key, sizeof(key));
		r = dir_add(d, cap, name, node_ino_predict(ctx->nodes, d->node->ino, name, key),
		            type);
	}
	free(v);
	return r;
}

void wv_rev_oid(struct ops_ctx *ctx, int64_t project_id, const char *branch, const char *commit,
                char *out, size_t cap)
{
	struct overlay *ov = NULL;
	uint64_t ep = 0;

	if (ctx->ovs && ovset_any(ctx->ovs) &&
	    ovset_get(ctx->ovs, project_id, branch, false, NULL, &ov) == 0 && ov)
		ep = ov_epoch(ov);
	if (ep)
		snprintf(out, cap, "%s+%" PRIu64, commit, ep);
	else
		snprintf(out, cap, "%s", commit);
}

/* ---- files ---- */

/* Makes path cp of node n (a base file, or a row without data) a data file of the
 * overlay holding its current content (none when empty); returns the descriptor. */
static int copy_up(struct ops_ctx *ctx, struct overlay *ov, const struct node *n, const char *cp,
                   const struct ov_ent *had, bool empty, struct ov_ent *out)
{
	const char *blob = had && had->kind == OV_FILE && !had->data ? had->blob : n->oid;
	struct cache_obj *o = NULL;
	char *buf = NULL;
	uint64_t size = 0, off = 0;
	int64_t id;
	int fd, r;

	memset(out, 0, sizeof(*out));
	if (!empty) {
		r = cache_obj_open(ctx->cache, n->project_id, n->commit, n->path, blob, &o);
		if (r < 0)
			return r;
		size = cache_obj_size(o);
	}
	r = wv_room_for(ctx, size);
	if (r < 0) {
		cache_obj_close(o);
		return r;
	}
	id = ov_id_new(ov);
	fd = ov_data_create(ov, id);
	if (fd < 0) {
		cache_obj_close(o);
		return fd;
	}
	if (size)
		buf = malloc(COPY_BUF);
	r = size && !buf ? -ENOMEM : 0;
	while (r == 0 && off < size) {
		ssize_t got = cache_obj_pread(o, buf, COPY_BUF, off);

		if (got <= 0) {
			r = got < 0 ? (int)got : -EIO;
			break;
		}
		if (pwrite(fd, buf, (size_t)got, (off_t)off) != got)
			r = -errno ? -errno : -EIO;
		off += (uint64_t)got;
	}
	free(buf);
	cache_obj_close(o);
	if (r == 0 && size && fdatasync(fd) < 0)
		r = -errno;
	snprintf(out->path, sizeof(out->path), "%s", cp);
	out->kind = OV_FILE;
	out->exec = had ? had->exec : n->git_mode == TREE_MODE_EXEC;
	out->data = id;
	out->mtime = now_s();
	if (r == 0)
		r = ov_put(ov, out);
	if (r < 0) {
		close(fd);
		ov_data_unlink(ov, id);
		return r;
	}
	ovset_bytes_add(ctx->ovs, (int64_t)size);
	return fd;
}

/* A descriptor opened write-only bypasses the kernel's page cache of the mount: the
 * kernel hands reefd the writer's own pages (no copy into the mount's cache, which would
 * hold a second copy of everything written) and reefd copies them once into the data file
 * (docs/benchmarks.md, B13). Nothing reads or maps through it; readers open their own
 * descriptors and see the data file (changed files: keep_cache off, attr timeout 0). */
static int wo_direct(const struct fuse_file_info *fi)
{
	return (fi->flags & O_ACCMODE) == O_WRONLY && !getenv("REEFD_NO_WO_DIRECT");
}

/* A handle on a data file of the overlay, tracked while the caller holds ov_lock: a
 * commit that drops its file (under ov_lock) either sees it or happened before its epoch
 * was read. */
static struct ops_file *ovfile_new(struct ops_ctx *ctx, struct overlay *ov, int fd, uint64_t ino,
                                   int64_t data)
{
	struct ops_file *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->has_ov = true;
	f->ovfd = fd;
	f->ov = ov;
	f->ino = ino;
	f->ovdata = data;
	f->ovepoch = ov_epoch(ov);
	handle_track(ctx, &f->h, false);
	return f;
}

/* 1 when the open was answered here, 0 when the read-only path serves it. */
int wv_open(fuse_req_t req, struct ops_ctx *ctx, struct node *n, struct fuse_file_info *fi)
{
	int acc = fi->flags & O_ACCMODE;
	bool want_w = acc != O_RDONLY || (fi->flags & O_TRUNC);
	struct overlay *ov = NULL;
	char cp[OV_PATH_MAX];
	struct ov_ent *e = NULL, *made = NULL;
	struct ops_file *f = NULL;
	int64_t data = 0;
	int r, fd = -1;

	if (n->kind != NODE_FILE || !in_view(n))
		return 0;
	r = view_overlay(ctx, n, want_w, &ov);
	if (r < 0 || !ov || (!want_w && ov_count(ov) == 0))
		return 0;
	e = malloc(sizeof(*e));
	made = malloc(sizeof(*made));
	if (!e || !made) {
		r = -ENOMEM;
		goto out;
	}
	r = wv_cur_path(ctx, n, cp, sizeof(cp));
	if (r < 0)
		goto out;
	ov_lock(ov);
	r = ov_get(ov, cp, e);
	if (r == 0 && e->kind == OV_FILE && e->data > 0) {
		fd = ov_data_open(ov, e->data, want_w ? O_RDWR : O_RDONLY);
		r = fd < 0 ? fd : 0;
		if (r == 0 && (fi->flags & O_TRUNC)) {
			int64_t had = ov_data_size(ov, e->data);

			if (ftruncate(fd, 0) < 0 || fsync(fd) < 0)
				r = -errno;
			else if (had > 0)
				ovset_bytes_add(ctx->ovs, -had);
		}
	} else if (!want_w) {
		r = 1; /* the branch's own content, or a blob moved here: read-only path */
	} else if (r == 0 && e->kind != OV_FILE) {
		r = -EIO;
	} else {
		fd = copy_up(ctx, ov, n, cp, r == 0 ? e : NULL, (fi->flags & O_TRUNC) != 0, made);
		r = fd < 0 ? fd : 0;
		data = made->data;
	}
	if (r == 0 && data == 0)
		data = e->data;
	if (r == 0) {
		f = ovfile_new(ctx, ov, fd, n->ino, data);
		r = f ? 0 : -ENOMEM;
	}
	ov_unlock(ov);
out:
	free(e);
	free(made);
	if (r == 1)
		return 0;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		log_debug("open %s for writing: %s", n->path, strerror(-r));
		fuse_reply_err(req, -r);
		return 1;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	fi->keep_cache = 0;
	fi->direct_io = wo_direct(fi);
	if (fuse_reply_open(req, fi) != 0)
		file_free(ctx, f);
	return 1;
}

/* ---- entries ---- */

static int view_dir(struct ops_ctx *ctx, fuse_ino_t pino, struct node **dir, struct overlay **ov)
{
	int r;

	*ov = NULL;
	*dir = node_get(ctx->nodes, pino);
	if (!*dir)
		return -ESTALE;
	if (!in_view(*dir))
		return -EROFS;
	if (!is_dir_node(*dir))
		return -ENOTDIR;
	r = view_overlay(ctx, *dir, true, ov);
	return r < 0 ? r : 0;
}

static void reply_entry(fuse_req_t req, struct ops_ctx *ctx, struct overlay *ov, struct node *n,
                        struct fuse_file_info *fi, struct ops_file *f)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	fill_attr(ctx, n, &e.attr);
	e.attr_timeout = 0;
	wv_attr(ctx, ov, n, &e.attr, &e.attr_timeout);
	e.entry_timeout = ctx->dyn_timeout;
	if (!fi) {
		if (fuse_reply_entry(req, &e) != 0)
			node_forget(ctx->nodes, n->ino, 1);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	fi->keep_cache = 0;
	fi->direct_io = wo_direct(fi);
	if (fuse_reply_create(req, &e, fi) != 0) {
		file_free(ctx, f);
		node_forget(ctx->nodes, n->ino, 1);
	}
}

/* Creates name under pino: a file (with an open descriptor when fi), a directory or a
 * symlink. */
static void make_entry(fuse_req_t req, fuse_ino_t pino, const char *name, enum ov_kind kind,
                       mode_t mode, const char *target, struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *dir = NULL, *n = NULL;
	struct overlay *ov = NULL;
	struct wstat *s = malloc(sizeof(*s));
	struct ov_ent *e = malloc(sizeof(*e));
	struct ops_file *f = NULL;
	char cp[OV_PATH_MAX];
	int r, fd = -1;

	r = !s || !e ? -ENOMEM : view_dir(ctx, pino, &dir, &ov);
	if (r == 0)
		r = child_path(ctx, dir, name, cp, sizeof(cp));
	if (r == 0 && target && strlen(target) >= OV_TARGET_MAX)
		r = -ENAMETOOLONG;
	if (r < 0)
		goto out;
	ov_lock(ov);
	r = merged_get(ctx, ov, dir, name, cp, s);
	if (r == 0)
		r = -EEXIST;
	else if (r == -ENOENT)
		r = 0;
	if (r == 0) {
		memset(e, 0, sizeof(*e));
		snprintf(e->path, sizeof(e->path), "%s", cp);
		e->kind = kind;
		e->exec = kind == OV_FILE && (mode & 0100);
		e->data = ov_id_new(ov);
		e->mtime = now_s();
		if (target)
			snprintf(e->target, sizeof(e->target), "%s", target);
		if (kind == OV_FILE) {
			fd = ov_data_create(ov, e->data);
			r = fd < 0 ? fd : 0;
		}
		if (r == 0)
			r = ov_put(ov, e);
		if (r < 0 && fd >= 0) {
			close(fd);
			fd = -1;
			ov_data_unlink(ov, e->data);
		}
	}
	if (r == 0)
		r = node_from_ent(ctx, ov, dir, name, cp, e, &n);
	if (r == 0 && kind == OV_FILE && fi) {
		f = ovfile_new(ctx, ov, fd, n->ino, e->data);
		if (!f) {
			node_forget(ctx->nodes, n->ino, 1);
			r = -ENOMEM;
		}
	}
	ov_unlock(ov);
	if (r == 0 && kind == OV_FILE && !fi) {
		close(fd); /* mknod: created, not opened */
		fd = -1;
	}
out:
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -r);
	} else {
		reply_entry(req, ctx, ov, n, fi, f);
	}
	free(s);
	free(e);
	node_put(ctx->nodes, dir);
}

void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
               struct fuse_file_info *fi)
{
	make_entry(req, p, name, OV_FILE, mode, NULL, fi);
}

void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	if (!S_ISREG(mode)) {
		struct node *dir = node_get(ctx_of(req)->nodes, p);
		bool view = dir && in_view(dir);

		node_put(ctx_of(req)->nodes, dir);
		fuse_reply_err(req, view ? EPERM : EROFS); /* git keeps no devices or FIFOs */
		return;
	}
	make_entry(req, p, name, OV_FILE, mode, NULL, NULL);
}

void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode)
{
	make_entry(req, p, name, OV_DIR, mode, NULL, NULL);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
	make_entry(req, p, name, OV_LINK, 0777, link, NULL);
}

/* Whether a directory (name under dir, in state s) lists nothing now. */
static int dir_is_empty(struct ops_ctx *ctx, struct overlay *ov, struct node *dir, const char *cp,
                        const struct wstat *s)
{
	struct ov_ent *v = NULL;
	struct tree_entry *te = NULL;
	const char *lower = s->has_ent ? s->ent.blob : s->d->oid;
	size_t n = 0, nt = 0, i, j;
	int r;

	r = ov_children(ov, cp, &v, &n);
	for (i = 0; r == 0 && i < n; i++)
		if (v[i].kind != OV_WH)
			r = -ENOTEMPTY;
	if (r == 0 && lower[0]) {
		char hint[NODE_PATH_MAX];

		r = node_path_join(hint, sizeof(hint), dir->kind == NODE_REV ? "" : dir->path,
		                   s->has_ent ? "" : s->d->name);
		if (r == 0)
			r = cache_tree(ctx->cache, dir->project_id, dir->commit, hint, lower, &te,
			               &nt);
		for (i = 0; r == 0 && i < nt; i++) {
			bool gone = false;

			for (j = 0; j < n && !gone; j++) {
				const char *b = strrchr(v[j].path, '/');

				gone = strcmp(b ? b + 1 : v[j].path, te[i].name) == 0;
			}
			if (!gone)
				r = -ENOTEMPTY;
		}
	}
	free(te);
	free(v);
	return r;
}

static void free_ids(struct overlay *ov, int64_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ov_data_unlink(ov, ids[i]);
	free(ids);
}

static void remove_entry(fuse_req_t req, fuse_ino_t pino, const char *name, bool dir_wanted)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *dir = NULL;
	struct overlay *ov = NULL;
	struct wstat *s = malloc(sizeof(*s));
	const struct node_dirent *low = NULL;
	char cp[OV_PATH_MAX];
	int64_t *ids = NULL, drop = 0;
	size_t nids = 0;
	int r;

	r = !s ? -ENOMEM : view_dir(ctx, pino, &dir, &ov);
	if (r == 0)
		r = child_path(ctx, dir, name, cp, sizeof(cp));
	if (r < 0)
		goto out;
	ov_lock(ov);
	r = merged_get(ctx, ov, dir, name, cp, s);
	if (r == 0 && dir_wanted && !wstat_is_dir(s))
		r = -ENOTDIR;
	else if (r == 0 && !dir_wanted && wstat_is_dir(s))
		r = -EISDIR;
	if (r == 0 && dir_wanted)
		r = dir_is_empty(ctx, ov, dir, cp, s);
	if (r == 0) {
		bool natural = lower_entry(ctx, dir, name, &low) == 0;
		struct ov_ent wh = {.kind = OV_WH};

		if (s->has_ent && s->ent.kind == OV_FILE)
			drop = s->ent.data;
		snprintf(wh.path, sizeof(wh.path), "%s", cp);
		r = ov_tx_begin(ov);
		if (r == 0) {
			if (dir_wanted)
				r = ov_del_below(ov, cp, &ids, &nids);
			if (r == 0)
				r = natural ? ov_put(ov, &wh) : ov_del(ov, cp);
			r = ov_tx_end(ov, r == 0) < 0 && r == 0 ? -EIO : r;
		}
	}
	if (r == 0) {
		ren_forget_at(ctx, dir, name);
		free_ids(ov, ids, nids);
		if (drop > 0)
			ov_data_unlink(ov, drop); /* open descriptors keep reading it */
	} else {
		free(ids);
	}
	ov_unlock(ov);
out:
	fuse_reply_err(req, r < 0 ? -r : 0);
	free(s);
	node_put(ctx->nodes, dir);
}

void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
	remove_entry(req, p, name, false);
}

void op_rmdir(fuse_req_t req, fuse_ino_t p, const char *name)
{
	remove_entry(req, p, name, true);
}

/* The row a path gets when what it shows moves there: a copy of its row, or the base
 * entry it was (a blob or tree moved without copying a byte). */
static int row_of(struct ops_ctx *ctx, struct overlay *ov, struct node *dir, const char *cp,
                  const struct wstat *s, const char *dst, struct ov_ent *out)
{
	const struct node_dirent *d = s->d;
	int r;

	if (s->has_ent) {
		*out = s->ent;
		snprintf(out->path, sizeof(out->path), "%s", dst);
		return 0;
	}
	memset(out, 0, sizeof(*out));
	snprintf(out->path, sizeof(out->path), "%s", dst);
	out->mtime = dir->time;
	if (d->mode != TREE_MODE_LINK) {
		/* where the commit has it: the cache fetches by path when it must */
		r = node_path_join(out->target, sizeof(out->target),
		                   dir->kind == NODE_REV ? "" : dir->path, d->name);
		if (r < 0)
			return r;
	}
	switch (d->mode) {
	case TREE_MODE_DIR:
		out->kind = OV_DIR;
		snprintf(out->blob, sizeof(out->blob), "%s", d->oid);
		out->data = ov_id_new(ov);
		return 0;
	case TREE_MODE_LINK: {
		struct odb_blob *b = NULL;
		ssize_t got;

		out->kind = OV_LINK;
		out->data = ov_id_new(ov);
		r = cache_blob_open(ctx->cache, dir->project_id, d->oid, &b);
		if (r < 0)
			return r;
		got = odb_blob_pread(b, out->target, sizeof(out->target) - 1, 0);
		odb_blob_close(b);
		if (got < 0)
			return (int)got;
		out->target[got] = 0;
		return 0;
	}
	case TREE_MODE_FILE:
	case TREE_MODE_EXEC: {
		struct cache_blob_info info;
		char hint[NODE_PATH_MAX];

		out->kind = OV_FILE;
		out->exec = d->mode == TREE_MODE_EXEC;
		snprintf(out->blob, sizeof(out->blob), "%s", d->oid);
		r = node_path_join(hint, sizeof(hint), dir->kind == NODE_REV ? "" : dir->path,
		                   d->name);
		if (r == 0)
			r = cache_blob_info(ctx->cache, dir->project_id, dir->commit, hint, d->oid,
			                    d->size, &info);
		if (r < 0)
			return r;
		out->size = (int64_t)info.size;
		if (info.lfs)
			snprintf(out->lfs, sizeof(out->lfs), "%s", info.lfs_oid);
		(void)cp;
		return 0;
	}
	default:
		return -EPERM; /* a submodule stays where it is */
	}
}

static void ren_drop(struct ops_ctx *ctx, struct wren *w)
{
	node_put(ctx->nodes, w->self);
	node_put(ctx->nodes, w->parent);
	free(w->name);
	free(w);
}

/* Forgets the node renamed to (dir, name): it was replaced or removed. */
static void ren_forget_at(struct ops_ctx *ctx, const struct node *dir, const char *name)
{
	struct wren **pp, *w;

	pthread_mutex_lock(&ctx->ws->lock);
	for (pp = &ctx->ws->ren; (w = *pp);) {
		if (w->parent->ino == dir->ino && strcmp(w->name, name) == 0) {
			*pp = w->next;
			ren_drop(ctx, w);
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&ctx->ws->lock);
}

/* Remembers that the node the kernel holds for (dir, name) is now newdir/newname: one
 * renamed there before, else the node of that key that was never renamed. */
static void ren_note(struct ops_ctx *ctx, struct node *dir, const char *name, const char *key,
                     struct node *newdir, const char *newname)
{
	struct node *self = NULL;
	struct wren *w;
	char *nn = strdup(newname);
	uint64_t ino;

	if (!nn)
		return;
	pthread_mutex_lock(&ctx->ws->lock);
	for (w = ctx->ws->ren; w; w = w->next)
		if (w->parent->ino == dir->ino && strcmp(w->name, name) == 0)
			break;
	if (w) {
		free(w->name);
		w->name = nn;
		node_put(ctx->nodes, w->parent);
		node_pin(ctx->nodes, newdir);
		w->parent = newdir;
		pthread_mutex_unlock(&ctx->ws->lock);
		return;
	}
	ino = node_find_ino(ctx->nodes, dir->ino, name, key);
	self = ino ? node_get(ctx->nodes, ino) : NULL;
	if (!self || ren_find(ctx->ws, self->ino)) {
		/* no node, or one moved elsewhere since: a lookup makes one at the new place */
		pthread_mutex_unlock(&ctx->ws->lock);
		node_put(ctx->nodes, self);
		free(nn);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (w) {
		w->name = nn;
		w->self = self; /* keeps the pin node_get took */
		node_pin(ctx->nodes, newdir);
		w->parent = newdir;
		w->next = ctx->ws->ren;
		ctx->ws->ren = w;
		self = NULL;
		nn = NULL;
	}
	pthread_mutex_unlock(&ctx->ws->lock);
	node_put(ctx->nodes, self);
	free(nn);
}

void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np, const char *nn,
               unsigned int flags)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *dir = NULL, *ndir = NULL;
	struct overlay *ov = NULL, *nov = NULL;
	struct wstat *s = malloc(sizeof(*s)), *t = malloc(sizeof(*t));
	struct ov_ent *row = malloc(sizeof(*row));
	const struct node_dirent *low = NULL;
	char src[OV_PATH_MAX], dst[OV_PATH_MAX], key[64];
	int64_t *ids = NULL, drop = 0;
	size_t nids = 0, sl;
	bool locked = false;
	int r;

	if (!s || !t || !row) {
		r = -ENOMEM;
		goto out;
	}
	if (flags & ~(unsigned)RENAME_NOREPLACE) {
		r = -EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT */
		goto out;
	}
	r = view_dir(ctx, p, &dir, &ov);
	if (r == 0)
		r = view_dir(ctx, np, &ndir, &nov);
	if (r == -EROFS && dir && ndir && in_view(dir) != in_view(ndir))
		r = -EXDEV;
	if (r == 0 && branch_rev(dir) != branch_rev(ndir))
		r = -EXDEV; /* another branch: another overlay and another commit */
	if (r == 0)
		r = child_path(ctx, dir, name, src, sizeof(src));
	if (r == 0)
		r = child_path(ctx, ndir, nn, dst, sizeof(dst));
	if (r < 0)
		goto out;
	ov_lock(ov);
	locked = true;
	r = merged_get(ctx, ov, dir, name, src, s);
	if (r < 0)
		goto out;
	if (strcmp(src, dst) == 0)
		goto out;
	sl = strlen(src);
	if (strncmp(dst, src, sl) == 0 && dst[sl] == '/') {
		r = -EINVAL; /* into itself */
		goto out;
	}
	r = merged_get(ctx, ov, ndir, nn, dst, t);
	if (r == 0) {
		if (flags & RENAME_NOREPLACE)
			r = -EEXIST;
		else if (wstat_is_dir(s) && !wstat_is_dir(t))
			r = -ENOTDIR;
		else if (!wstat_is_dir(s) && wstat_is_dir(t))
			r = -EISDIR;
		else if (wstat_is_dir(t))
			r = dir_is_empty(ctx, ov, ndir, dst, t);
		if (r == 0 && t->has_ent && t->ent.kind == OV_FILE)
			drop = t->ent.data;
	} else if (r == -ENOENT) {
		r = 0;
		t->has_ent = false;
		t->d = NULL;
	}
	if (r < 0)
		goto out;
	r = row_of(ctx, ov, dir, src, s, dst, row);
	if (r < 0)
		goto out;
	r = ov_tx_begin(ov);
	if (r == 0) {
		bool natural = lower_entry(ctx, dir, name, &low) == 0;

		if (t->d || t->has_ent)
			r = ov_del_below(ov, dst, &ids, &nids);
		if (r == 0)
			r = ov_put(ov, row);
		if (r == 0 && wstat_is_dir(s))
			r = ov_move_below(ov, src, dst);
		if (r == 0) {
			struct ov_ent *wh = calloc(1, sizeof(*wh));

			if (!wh) {
				r = -ENOMEM;
			} else {
				wh->kind = OV_WH;
				snprintf(wh->path, sizeof(wh->path), "%s", src);
				r = natural ? ov_put(ov, wh) : ov_del(ov, src);
				free(wh);
			}
		}
		r = ov_tx_end(ov, r == 0) < 0 && r == 0 ? -EIO : r;
	}
	if (r == 0) {
		free_ids(ov, ids, nids);
		ids = NULL;
		if (drop > 0)
			ov_data_unlink(ov, drop);
		if (s->has_ent)
			ent_key(&s->ent, key, sizeof(key));
		else
			snprintf(key, sizeof(key), "%s", s->d->oid);
		ren_forget_at(ctx, ndir, nn);
		ren_note(ctx, dir, name, key, ndir, nn);
	}
out:
	free(ids);
	if (locked)
		ov_unlock(ov);
	fuse_reply_err(req, r < 0 ? -r : 0);
	free(s);
	free(t);
	free(row);
	node_put(ctx->nodes, dir);
	node_put(ctx->nodes, ndir);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nn)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *dir = node_get(ctx->nodes, np);
	bool view = dir && in_view(dir);

	node_put(ctx->nodes, dir);
	fuse_reply_err(req, view ? EPERM : EROFS); /* git has no hard links */
}

/* ---- attributes that change ---- */

static void setattr_ro(fuse_req_t req, struct ops_ctx *ctx, struct node *n, struct stat *attr,
                       int to_set)
{
	const int allowed =
	    FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE;
	struct stat st;
	bool same;

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
}

static int setattr_view(struct ops_ctx *ctx, struct node *n, struct stat *attr, int to_set,
                        struct fuse_file_info *fi, struct overlay *ov)
{
	struct ops_file *f = fi ? (struct ops_file *)(uintptr_t)fi->fh : NULL;
	struct ov_ent *e = malloc(sizeof(*e)), *made = malloc(sizeof(*made));
	char cp[OV_PATH_MAX];
	bool has;
	int r, fd = -1;

	if (!e || !made) {
		r = -ENOMEM;
		goto out;
	}
	if (((to_set & FUSE_SET_ATTR_UID) && attr->st_uid != ctx->uid) ||
	    ((to_set & FUSE_SET_ATTR_GID) && attr->st_gid != ctx->gid)) {
		r = -EPERM;
		goto out;
	}
	if (n->kind != NODE_FILE) {
		r = (to_set & FUSE_SET_ATTR_SIZE) ? -EISDIR : 0; /* git keeps no other modes */
		goto out;
	}
	r = wv_cur_path(ctx, n, cp, sizeof(cp));
	if (r < 0)
		goto out;
	ov_lock(ov);
	if (f && f->has_ov && f->ovepoch != ov_epoch(ov) && !f->ovdetached) {
		ov_gate_shared(ov);
		r = wv_reattach(ctx, f); /* an ftruncate after a commit: as a write */
		ov_gate_release(ov);
		if (r < 0) {
			ov_unlock(ov);
			goto out;
		}
	}
	r = ov_get(ov, cp, e);
	has = r == 0 && e->kind == OV_FILE;
	r = r == -ENOENT || has ? 0 : (r == 0 ? -ENOENT : r);
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		uint64_t cur = 0;

		if (has && e->data > 0) {
			fd = f && f->has_ov ? dup(f->ovfd) : ov_data_open(ov, e->data, O_RDWR);
			r = fd < 0 ? (fd == -1 ? -errno : fd) : 0;
		} else {
			fd = copy_up(ctx, ov, n, cp, has ? e : NULL, attr->st_size == 0, made);
			r = fd < 0 ? fd : 0;
			if (r == 0) {
				*e = *made;
				has = true;
			}
		}
		if (r == 0) {
			struct stat sb;

			if (fstat(fd, &sb) == 0)
				cur = (uint64_t)sb.st_size;
			if ((uint64_t)attr->st_size > cur)
				r = wv_room_for(ctx, (uint64_t)attr->st_size - cur);
		}
		if (r == 0 && (ftruncate(fd, attr->st_size) < 0 || fsync(fd) < 0))
			r = -errno;
		if (r == 0)
			ovset_bytes_add(ctx->ovs, (int64_t)attr->st_size - (int64_t)cur);
	}
	if (r == 0 && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_SIZE))) {
		if (!has) { /* a file of the branch: a row for the same blob */
			memset(e, 0, sizeof(*e));
			snprintf(e->path, sizeof(e->path), "%s", cp);
			e->kind = OV_FILE;
			e->exec = n->git_mode == TREE_MODE_EXEC;
			snprintf(e->blob, sizeof(e->blob), "%s", n->oid);
			e->size = n->size;
			if (n->lfs_oid)
				snprintf(e->lfs, sizeof(e->lfs), "%s", n->lfs_oid);
			e->mtime = n->time;
			snprintf(e->target, sizeof(e->target), "%s", n->path);
		}
		if (to_set & FUSE_SET_ATTR_MODE)
			e->exec = (attr->st_mode & 0100) != 0;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			e->mtime = now_s();
		else if (to_set & FUSE_SET_ATTR_MTIME)
			e->mtime = (int64_t)attr->st_mtime;
		else if (to_set & FUSE_SET_ATTR_SIZE)
			e->mtime = now_s();
		/* a row that says only what the branch says is no change */
		if (!has &&
		    (to_set &
		     ~(FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME |
		       FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) == FUSE_SET_ATTR_MODE &&
		    e->exec == (n->git_mode == TREE_MODE_EXEC))
			;
		else if (has || (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_SIZE)))
			r = ov_put(ov, e);
	}
	ov_unlock(ov);
out:
	if (fd >= 0)
		close(fd);
	free(e);
	free(made);
	return r;
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	struct overlay *ov = NULL;
	struct stat st;
	double timeout;
	int r;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if (!in_view(n)) {
		setattr_ro(req, ctx, n, attr, to_set);
		node_put(ctx->nodes, n);
		return;
	}
	r = view_overlay(ctx, n, true, &ov);
	if (r == 0)
		r = setattr_view(ctx, n, attr, to_set, fi, ov);
	if (r < 0) {
		fuse_reply_err(req, -r);
	} else {
		fill_attr(ctx, n, &st);
		timeout = attr_timeout(ctx, n);
		wv_attr(ctx, ov, n, &st, &timeout);
		fuse_reply_attr(req, &st, timeout);
	}
	node_put(ctx->nodes, n);
}

/* ---- the rest ---- */

static void reply_view_or_erofs(fuse_req_t req, fuse_ino_t ino, int in_view_err)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	bool view = n && in_view(n);

	node_put(ctx->nodes, n);
	fuse_reply_err(req, view ? in_view_err : EROFS);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                 int flags)
{
	reply_view_or_erofs(req, ino, ENOTSUP); /* git keeps no extended attributes */
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	reply_view_or_erofs(req, ino, ENOTSUP);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                  struct fuse_file_info *fi)
{
	reply_view_or_erofs(req, ino, EOPNOTSUPP);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                        struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                        struct fuse_file_info *fi_out, size_t len, int flags)
{
	/* the kernel copies through read and write instead */
	reply_view_or_erofs(req, ino_out, ENOSYS);
}

void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_file *f = (struct ops_file *)(uintptr_t)fi->fh;
	int r = 0;

	if (mlfs_owns(fi)) {
		mlfs_flush(ctx_of(req)->ml, req, fi);
		return;
	}
	if (f && f->has_ov)
		r = wv_sync(ctx_of(req), f);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct ops_file *f = fi ? (struct ops_file *)(uintptr_t)fi->fh : NULL;
	int r = 0;

	if (f && !mlfs_owns(fi) && f->has_ov)
		r = wv_sync(ctx_of(req), f);
	fuse_reply_err(req, r < 0 ? -r : 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0); /* every change of a directory was durable when it replied */
}
