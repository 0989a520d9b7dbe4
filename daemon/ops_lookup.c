/* Resolving names (daemon/ops_lookup.c): the FUSE lookup, and the walk of the path grammar
 * under it — namespaces and projects, HEAD, branches, tags and commits, and the trees of
 * a revision — with the commits refs resolved to remembered for listings. Split from
 * ops.c, which keeps attributes, files and directories. */
#include "ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "mlfs.h"
#include "node.h"
#include "reef/log.h"

/* How long the kernel may keep the binding parent/child. A branch's revision root is
 * re-checked at the poll interval and invalidated explicitly when the poller sees it
 * move; other names that can change are short-lived; the rest is for ever. */
double entry_timeout(struct ops_ctx *ctx, const struct node *parent, const struct node *n)
{
	if (node_entry_is_immutable(parent))
		return FOREVER_S;
	if (n && n->kind == NODE_REV && n->ref_kind == NODE_REF_BRANCH)
		return ctx->branch_timeout;
	return ctx->dyn_timeout;
}

/* ---- resolving names ---- */

static uint64_t refmem_hash(uint64_t dir, const char *name)
{
	uint64_t h = 14695981039346656037ULL ^ dir;

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ULL;
	}
	return h;
}

/* Remembers the commit a ref resolved to under dir, for listings of dir. */
static void refmem_put(struct ops_ctx *ctx, uint64_t dir, const char *name, const char *commit)
{
	uint64_t h = refmem_hash(dir, name);
	struct refmem *m = &ctx->refmem[h % REFMEM_SLOTS];

	pthread_mutex_lock(&ctx->seq_lock);
	m->dir = dir;
	m->hash = h;
	snprintf(m->commit, sizeof(m->commit), "%s", commit);
	pthread_mutex_unlock(&ctx->seq_lock);
}

/* The commit a ref named the last time this mount resolved it, without asking the
 * server; false for one never resolved (or pushed out of the small table). */
bool ref_commit_known(struct ops_ctx *ctx, const struct node *dir, const char *name,
                      char commit[41])
{
	uint64_t h = refmem_hash(dir->ino, name);
	struct refmem *m = &ctx->refmem[h % REFMEM_SLOTS];
	bool ok;

	pthread_mutex_lock(&ctx->seq_lock);
	ok = m->dir == dir->ino && m->hash == h && m->commit[0];
	if (ok)
		memcpy(commit, m->commit, 41);
	pthread_mutex_unlock(&ctx->seq_lock);
	return ok;
}

int project_paths(const struct cache_project *p, size_t n, const char ***out)
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
	char commit[41], oid[64];
	struct node_attrs a = {.kind = NODE_REV, .path = ref};
	int r;

	r = cache_ref_resolve(ctx->cache, parent->project_id, (enum cache_ref_kind)parent->ref_kind,
	                      ref, commit);
	if (r < 0)
		return r;
	if (parent->ref_kind == NODE_REF_BRANCH)
		cache_branch_touch(ctx->cache, parent->project_id, ref);
	if (parent->ref_kind != NODE_REF_COMMIT)
		refmem_put(ctx, parent->ino, name, commit);
	/* a branch view's root changes inode when its pending changes go (commit, discard) */
	if (parent->ref_kind == NODE_REF_BRANCH)
		wv_rev_oid(ctx, parent->project_id, ref, commit, oid, sizeof(oid));
	else
		snprintf(oid, sizeof(oid), "%s", commit);
	a.oid = oid;
	a.commit = commit;
	/* its mtime, and everything's below it: the commit's time, known from the answer
	 * that resolved the ref (0 unknown: the mount time) */
	cache_commit_time(ctx->cache, commit, &a.time);
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

int load_listing(struct ops_ctx *ctx, struct node *dir, const struct node_listing **out)
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

int lookup_tree_child(struct ops_ctx *ctx, struct node *parent, const char *name, struct node **out)
{
	const struct node_listing *l;
	const struct node_dirent *d;
	struct cache_blob_info info;
	struct node_attrs a = {0};
	char path[NODE_PATH_MAX];
	uint64_t size;
	int64_t shown;
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
	shown = __atomic_load_n(&d->shown, __ATOMIC_RELAXED);
	if (kind == NODE_FILE && shown >= 0) {
		a.size = shown; /* resolved before: not LFS */
	} else if (kind == NODE_FILE && CACHE_LFS_CANDIDATE(d->size)) {
		/* it may be an LFS pointer: the file shows the object it names */
		r = cache_blob_info(ctx->cache, parent->project_id, parent->commit, path, d->oid,
		                    d->size, &info);
		if (r < 0)
			return r;
		if (info.size > INT64_MAX)
			return -EIO;
		a.size = (int64_t)info.size;
		if (info.lfs)
			a.lfs_oid = info.lfs_oid;
		else /* the listing is immutable but for this memo of a verdict that is too */
			__atomic_store_n((int64_t *)(uintptr_t)&d->shown, a.size, __ATOMIC_RELAXED);
	} else if (kind == NODE_FILE || kind == NODE_SYMLINK) {
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
int resolve_child(struct ops_ctx *ctx, struct node *parent, const char *name, struct node **out,
                  bool *negative_ok)
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
	if (kind == NODE_ML_DIR || kind == NODE_ML_FILE)
		return mlfs_lookup(ctx->ml, parent, name, out);
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
		a.kind = (enum node_kind)kind;
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
		struct overlay *ov = wv_active(ctx, parent);
		int r;

		if (ov) /* pending changes: ENOENT may turn into a file at any time */
			return wv_lookup(ctx, ov, parent, name, out);
		r = lookup_tree_child(ctx, parent, name, out);

		*negative_ok = r == -ENOENT;
		return r;
	}
	default:
		return -ENOENT;
	}
}

void op_lookup(fuse_req_t req, fuse_ino_t pino, const char *name)
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
	e.attr_timeout = attr_timeout(ctx, n);
	e.entry_timeout = entry_timeout(ctx, parent, n);
	{
		struct overlay *ov = wv_active(ctx, n);

		if (ov)
			wv_attr(ctx, ov, n, &e.attr, &e.attr_timeout);
	}
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(ctx->nodes, n->ino, 1); /* the kernel never got it */
out:
	node_put(ctx->nodes, parent);
}
