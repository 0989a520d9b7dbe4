#include "ops.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "node.h"
#include "reef/log.h"

#ifndef REEF_VERSION
#define REEF_VERSION "unknown"
#endif

/* Names whose binding can never change (inside a revision, tags, commits) are cached by
 * the kernel for a year; attributes of every node but .reef/status never change because
 * a node's identity includes the object it shows. */
#define FOREVER_S    (365.0 * 24 * 3600)
#define STATUS_MAX   (64 * 1024)
#define READ_MAX     (4u << 20)
#define XATTR_OID    "user.reef.oid"
#define XATTR_COMMIT "user.reef.commit"

/* Open files and directories, so those the kernel never released (a signal ended the
 * session) are freed with the context. */
struct ops_handle {
	struct ops_handle *prev, *next;
	bool is_dir;
};

struct ops_ctx {
	struct cache *cache;
	pthread_mutex_t hlock;
	struct ops_handle handles; /* list head */
	struct node_table *nodes;
	char *server;
	double dyn_timeout;
	uid_t uid;
	gid_t gid;
	struct timespec mount_time;
};

/* An open file: a cached blob, or the bytes of .reef/status generated at open. */
struct ops_file {
	struct ops_handle h;
	struct odb_blob *blob;
	char *data;
	size_t len;
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

int ops_ctx_new(struct ops_ctx **out, const struct ops_opts *o)
{
	struct ops_ctx *ctx = calloc(1, sizeof(*ctx));
	int r;

	*out = NULL;
	if (!ctx)
		return -ENOMEM;
	ctx->server = strdup(o->server);
	if (!ctx->server) {
		free(ctx);
		return -ENOMEM;
	}
	r = node_table_new(&ctx->nodes);
	if (r < 0) {
		free(ctx->server);
		free(ctx);
		return r;
	}
	pthread_mutex_init(&ctx->hlock, NULL);
	ctx->handles.prev = ctx->handles.next = &ctx->handles;
	ctx->dyn_timeout = o->branch_timeout_s;
	ctx->uid = getuid();
	ctx->gid = getgid();
	clock_gettime(CLOCK_REALTIME, &ctx->mount_time);
	*out = ctx;
	return 0;
}

void ops_ctx_set_cache(struct ops_ctx *ctx, struct cache *c)
{
	ctx->cache = c;
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
	odb_blob_close(f->blob);
	free(f->data);
	free(f);
}

static void dir_free(struct ops_ctx *ctx, struct ops_dir *d);

void ops_ctx_free(struct ops_ctx *ctx)
{
	if (!ctx)
		return;
	while (ctx->handles.next != &ctx->handles) {
		struct ops_handle *h = ctx->handles.next;

		if (h->is_dir)
			dir_free(ctx, (struct ops_dir *)h);
		else
			file_free(ctx, (struct ops_file *)h);
	}
	pthread_mutex_destroy(&ctx->hlock);
	node_table_free(ctx->nodes);
	free(ctx->server);
	free(ctx);
}

static bool is_dir_kind(enum node_kind k)
{
	return S_ISDIR(node_st_mode(&(struct node){.kind = k}));
}

/* ---- .reef/status ---- */

static int status_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	json_t *o = json_object(), *user = NULL, *stats = NULL;
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

/* ---- attributes ---- */

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
	case NODE_STATUS: {
		char *s;
		size_t len;

		if (status_render(ctx, &s, &len) == 0) {
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
}

static double attr_timeout(const struct node *n)
{
	return n->kind == NODE_STATUS ? 0.0 : FOREVER_S;
}

/* ---- resolving names ---- */

static void log_remote_error(int r, const char *what, const char *name)
{
	if (r == -ENOENT)
		return;
	if (r == -EIO)
		log_warn("%s %s: server unreachable or bad answer, not cached", what, name);
	else
		log_warn("%s %s: %s", what, name, strerror(-r));
}

static int project_paths(struct cache_project *p, size_t n, const char ***out)
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
	struct node_attrs a = {0};
	char path[NODE_PATH_MAX];
	uint64_t size;
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
	if (kind == NODE_FILE || kind == NODE_SYMLINK) {
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
		a.kind = NODE_STATUS;
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
	e.attr_timeout = attr_timeout(n);
	e.entry_timeout = node_entry_is_immutable(parent) ? FOREVER_S : ctx->dyn_timeout;
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(ctx->nodes, n->ino, 1); /* the kernel never got it */
out:
	node_put(ctx->nodes, parent);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(ctx_of(req)->nodes, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct ops_ctx *ctx = ctx_of(req);
	size_t i;

	for (i = 0; i < count; i++)
		node_forget(ctx->nodes, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
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
	fuse_reply_attr(req, &st, attr_timeout(n));
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
		fuse_reply_attr(req, &st, attr_timeout(n));
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

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	struct ops_file *f = NULL;
	int r;

	if (!n) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
		r = -EROFS;
		goto out;
	}
	if (n->kind != NODE_FILE && n->kind != NODE_STATUS) {
		r = is_dir_kind(n->kind) ? -EISDIR : -EINVAL;
		goto out;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto out;
	}
	if (n->kind == NODE_STATUS) {
		r = status_render(ctx, &f->data, &f->len);
		if (r < 0)
			goto out;
		fi->direct_io = 1; /* generated at each open; its size is not known in advance */
	} else {
		r = cache_blob_open(ctx->cache, n->project_id, n->oid, &f->blob);
		if (r < 0) {
			log_remote_error(r, "open", n->path);
			goto out;
		}
		if (odb_blob_size(f->blob) != (uint64_t)n->size) {
			r = log_ret(-EIO, "%s: blob %s holds %" PRIu64 " bytes, listed as %" PRId64,
			            n->path, n->oid, odb_blob_size(f->blob), n->size);
			goto out;
		}
		/* the node shows one blob for its whole life: pages never go stale */
		fi->keep_cache = 1;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	handle_track(ctx, &f->h, false);
	if (fuse_reply_open(req, fi) != 0)
		file_free(ctx, f);
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

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (size > READ_MAX)
		size = READ_MAX;
	if (f->data) {
		size_t o = (size_t)off < f->len ? (size_t)off : f->len;
		size_t n = f->len - o < size ? f->len - o : size;

		fuse_reply_buf(req, f->data + o, n);
		return;
	}
	fd = odb_blob_fd(f->blob);
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
	got = odb_blob_pread(f->blob, buf, size, (uint64_t)off);
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
	file_free(ctx_of(req), (struct ops_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- directories ---- */

/* d_ino of an entry not looked up yet: a stable number in a range counters never reach. */
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

/* Lists only names a lookup accepts, so readdir never shows what stat calls ENOENT. */
static int dir_add_children(struct ops_ctx *ctx, struct ops_dir *d, size_t *cap,
                            const char *const *paths, size_t n, const char *prefix,
                            bool (*valid)(const char *))
{
	struct node_child *c;
	size_t nc, i;
	int r;

	r = node_children(paths, n, prefix, &c, &nc);
	if (r < 0)
		return r;
	for (i = 0; i < nc && r == 0; i++) {
		uint64_t ino = node_find_ino(ctx->nodes, d->node->ino, c[i].name, "");

		if (!valid(c[i].name))
			continue;
		r = dir_add(d, cap, c[i].name, ino ? ino : synthetic_ino(d->node->ino, c[i].name),
		            S_IFDIR);
	}
	node_children_free(c, nc);
	return r;
}

static int dir_fill(struct ops_ctx *ctx, struct ops_dir *d)
{
	struct node *n = d->node;
	struct cache_project *list = NULL, p;
	const char **paths = NULL;
	char **names = NULL;
	size_t cap = 0, cnt = 0;
	int r = 0;

	switch (n->kind) {
	case NODE_ROOT:
		r = dir_add(d, &cap, ".reef", NODE_CTL_INO, S_IFDIR);
		/* fallthrough */
	case NODE_NAMESPACE:
		if (r < 0)
			break;
		r = cache_projects_list(ctx->cache, &list, &cnt);
		if (r < 0)
			break;
		r = project_paths(list, cnt, &paths);
		if (r == 0)
			r = dir_add_children(ctx, d, &cap, paths, cnt, n->path,
			                     node_name_is_gitlab_path);
		break;
	case NODE_CTL_DIR:
		r = dir_add(d, &cap, "status", synthetic_ino(n->ino, "status"), S_IFREG);
		break;
	case NODE_PROJECT:
		r = cache_project_get(ctx->cache, n->path, &p);
		if (r == 0 && p.default_branch[0])
			r = dir_add(d, &cap, "HEAD", synthetic_ino(n->ino, "HEAD"), S_IFLNK);
		if (r == 0)
			r = dir_add(d, &cap, "branches", synthetic_ino(n->ino, "branches"),
			            S_IFDIR);
		if (r == 0)
			r = dir_add(d, &cap, "tags", synthetic_ino(n->ino, "tags"), S_IFDIR);
		if (r == 0)
			r = dir_add(d, &cap, "commits", synthetic_ino(n->ino, "commits"), S_IFDIR);
		break;
	case NODE_REFS:
	case NODE_REF_PREFIX:
		if (n->ref_kind == NODE_REF_COMMIT)
			break; /* any sha resolves; listing every commit is not the point */
		r = cache_refs_list(ctx->cache, n->project_id, (enum cache_ref_kind)n->ref_kind,
		                    &names, &cnt);
		if (r == 0)
			r = dir_add_children(ctx, d, &cap, (const char *const *)names, cnt,
			                     n->kind == NODE_REF_PREFIX ? n->path : "",
			                     node_name_is_ref_component);
		cache_names_free(names, cnt);
		break;
	case NODE_REV:
	case NODE_TREE:
	case NODE_SUBMODULE:
		r = load_listing(ctx, n, &d->listing);
		break;
	default:
		r = -ENOTDIR;
		break;
	}
	free(paths);
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
	struct ops_dir *d = calloc(1, sizeof(*d));
	int r;

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

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_dir *d = (struct ops_dir *)(uintptr_t)fi->fh;
	size_t total = 2 + (d->listing ? d->listing->n : d->n), used = 0, i;
	char *buf;

	if (size > READ_MAX)
		size = READ_MAX;
	buf = malloc(size ? size : 1);
	if (!buf) {
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
			uint64_t in = node_find_ino(ctx->nodes, d->node->ino, e->name, e->oid);

			name = e->name;
			st.st_ino = in ? in : synthetic_ino(d->node->ino, e->name);
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
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	dir_free(ctx_of(req), (struct ops_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- extended attributes ---- */

static int xattr_value(struct ops_ctx *ctx, struct node *n, const char *name, char out[41])
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
			snprintf(out, 41, "%s", n->oid);
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
		snprintf(out, 41, "%s", n->commit);
		return 0;
	}
	return -ENODATA;
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct node *n = node_get(ctx->nodes, ino);
	char v[41];
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
	char list[64];
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
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
	node_put(ctx->nodes, n);
}

/* ---- the rest ---- */

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
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC; /* so O_TRUNC reaches open and is EROFS */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS; /* symlink nodes never change target */
	/* contents are immutable per inode: never drop pages because of attributes */
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
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

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
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
