#include "node.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct retired {
	struct retired *next;
	struct node_listing *l;
	uint64_t ino;
	char oid[41];
};

struct node_table {
	pthread_mutex_t lock;
	struct retired *retired; /* newest first */
	size_t retired_entries;
	struct node **by_ino;
	struct node **by_key;
	size_t nbuckets; /* power of two, for both tables */
	size_t count;
	struct node *root;
	struct node *ctl;
};

/* FNV-1a: short keys, no adversary beyond the kernel, and stable across runs. */
static uint64_t hash_bytes(uint64_t h, const char *s)
{
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static uint64_t hash_key(uint64_t parent, const char *name, const char *oid)
{
	uint64_t h = 14695981039346656037ULL ^ parent;

	h *= 1099511628211ULL;
	h = hash_bytes(h, name);
	h ^= '/';
	h *= 1099511628211ULL;
	return hash_bytes(h, oid);
}

/* A node's inode number derives from its key, so a directory listing can name the number
 * a later lookup will give without creating the node (readdir's d_ino agrees with stat's
 * st_ino). splitmix64's finalizer spreads FNV's weak low bits; 63 bits keep the number
 * positive for programs that hold it signed. */
static uint64_t ino_start(uint64_t parent, const char *name, const char *oid)
{
	uint64_t h = hash_key(parent, name, oid);

	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	h &= (1ULL << 63) - 1;
	return h < NODE_INO_MIN ? h + NODE_INO_MIN : h;
}

static uint64_t ino_next(uint64_t ino)
{
	return ino + 1 >= (1ULL << 63) ? NODE_INO_MIN : ino + 1;
}

static size_t ino_bucket(const struct node_table *t, uint64_t ino)
{
	return (size_t)((ino * 11400714819323198485ULL) >> 20) & (t->nbuckets - 1);
}

static size_t key_bucket(const struct node_table *t, uint64_t parent, const char *name,
                         const char *oid)
{
	return (size_t)hash_key(parent, name, oid) & (t->nbuckets - 1);
}

static uint64_t parent_ino(const struct node *n)
{
	return n->parent ? n->parent->ino : 0;
}

static void table_link(struct node_table *t, struct node *n)
{
	size_t bi = ino_bucket(t, n->ino);
	size_t bk = key_bucket(t, parent_ino(n), n->name, n->oid);

	n->next_ino = t->by_ino[bi];
	t->by_ino[bi] = n;
	n->next_key = t->by_key[bk];
	t->by_key[bk] = n;
}

static void table_unlink(struct node_table *t, struct node *n)
{
	struct node **p;

	for (p = &t->by_ino[ino_bucket(t, n->ino)]; *p; p = &(*p)->next_ino) {
		if (*p == n) {
			*p = n->next_ino;
			break;
		}
	}
	for (p = &t->by_key[key_bucket(t, parent_ino(n), n->name, n->oid)]; *p;
	     p = &(*p)->next_key) {
		if (*p == n) {
			*p = n->next_key;
			break;
		}
	}
}

/* Doubles the buckets when the load passes 1; on allocation failure the table keeps
 * working with longer chains. */
static void table_grow(struct node_table *t)
{
	size_t old = t->nbuckets, i;
	struct node **oi = t->by_ino, **ok = t->by_key, **ni, **nk;

	if (t->count < old || old > ((size_t)1 << 40))
		return;
	ni = calloc(old * 2, sizeof(*ni));
	nk = calloc(old * 2, sizeof(*nk));
	if (!ni || !nk) {
		free(ni);
		free(nk);
		return;
	}
	t->by_ino = ni;
	t->by_key = nk;
	t->nbuckets = old * 2;
	for (i = 0; i < old; i++) {
		struct node *n = oi[i], *next;

		for (; n; n = next) {
			next = n->next_ino;
			size_t b = ino_bucket(t, n->ino);
			n->next_ino = ni[b];
			ni[b] = n;
		}
		for (n = ok[i]; n; n = next) {
			next = n->next_key;
			size_t b = key_bucket(t, parent_ino(n), n->name, n->oid);
			n->next_key = nk[b];
			nk[b] = n;
		}
	}
	free(oi);
	free(ok);
}

static struct node *find_ino_locked(struct node_table *t, uint64_t ino)
{
	struct node *n;

	for (n = t->by_ino[ino_bucket(t, ino)]; n; n = n->next_ino)
		if (n->ino == ino)
			return n;
	return NULL;
}

static struct node *find_key_locked(struct node_table *t, uint64_t parent, const char *name,
                                    const char *oid)
{
	struct node *n;

	for (n = t->by_key[key_bucket(t, parent, name, oid)]; n; n = n->next_key)
		if (parent_ino(n) == parent && strcmp(n->name, name) == 0 &&
		    strcmp(n->oid, oid) == 0)
			return n;
	return NULL;
}

/* The number a node with this key gets: its own when it exists, else the first free one
 * of the key's probe sequence (a collision of 63-bit hashes among live nodes). */
static uint64_t ino_for_key_locked(struct node_table *t, uint64_t parent, const char *name,
                                   const char *oid)
{
	struct node *n = find_key_locked(t, parent, name, oid);
	uint64_t ino;

	if (n)
		return n->ino;
	for (ino = ino_start(parent, name, oid); find_ino_locked(t, ino); ino = ino_next(ino))
		;
	return ino;
}

static void node_destroy(struct node *n)
{
	if (!n)
		return;
	node_listing_free(n->listing);
	free(n->lfs_oid);
	free(n);
}

/* Keeps the listing of a revision directory being freed, dropping the oldest ones past
 * the cap; on allocation failure it is simply freed. */
static void retire_locked(struct node_table *t, struct node *n)
{
	struct retired *r, **p;
	size_t kept = 0;

	if (!n->listing || (n->kind != NODE_REV && n->kind != NODE_TREE) ||
	    n->listing->n > NODE_RETIRED_ENTRIES / 4 || strlen(n->oid) >= sizeof(r->oid) ||
	    !(r = malloc(sizeof(*r))))
		return;
	r->l = n->listing;
	r->ino = n->ino;
	snprintf(r->oid, sizeof(r->oid), "%s", n->oid);
	r->next = t->retired;
	t->retired = r;
	t->retired_entries += r->l->n;
	n->listing = NULL;
	for (p = &t->retired; *p; p = &(*p)->next) {
		kept += (*p)->l->n;
		if (kept > NODE_RETIRED_ENTRIES)
			break;
	}
	while (*p) {
		struct retired *x = *p;

		*p = x->next;
		t->retired_entries -= x->l->n;
		node_listing_free(x->l);
		free(x);
	}
}

static struct node_listing *unretire_locked(struct node_table *t, const struct node *n)
{
	struct retired **p, *x;
	struct node_listing *l;

	for (p = &t->retired; *p; p = &(*p)->next) {
		x = *p;
		if (x->ino == n->ino && strcmp(x->oid, n->oid) == 0) {
			*p = x->next;
			t->retired_entries -= x->l->n;
			l = x->l;
			free(x);
			return l;
		}
	}
	return NULL;
}

/* Drops one reference; frees the node and, in turn, parents left without references. */
static void unref_locked(struct node_table *t, struct node *n, uint64_t count)
{
	while (n) {
		struct node *parent;

		n->refs = n->refs > count ? n->refs - count : 0;
		if (n->refs > 0)
			return;
		parent = n->parent;
		table_unlink(t, n);
		t->count--;
		retire_locked(t, n);
		node_destroy(n);
		n = parent;
		count = 1;
	}
}

static char *tail_put(char **tail, const char *s, size_t len)
{
	char *p = *tail;

	memcpy(p, s, len);
	*tail += len;
	return p;
}

/* One allocation per node: strings it cannot share (with the parent's listing entry, the
 * parent's commit, its own oid) are copied exactly into its tail. commit NULL inherits
 * the parent's; tree NULL means "". */
static struct node *node_alloc(uint64_t ino, enum node_kind kind, const struct node *parent,
                               const char *name, const char *oid, const char *path,
                               const char *commit, const char *tree)
{
	const struct node_dirent *d = NULL;
	size_t ln = 0, lo = 0, lp = 0, lc = 0, lt = 0;
	struct node *n;
	char *tail;

	if (!commit)
		commit = parent ? parent->commit : "";
	else if (parent && strcmp(commit, parent->commit) == 0)
		commit = parent->commit;
	if (!tree)
		tree = "";
	if (parent && parent->listing) {
		d = node_listing_find(parent->listing, name);
		if (d && strcmp(d->oid, oid) != 0)
			d = NULL;
	}
	if (!d) {
		ln = strlen(name) + 1;
		lo = oid[0] ? strlen(oid) + 1 : 0;
	}
	if (path[0])
		lp = strlen(path) + 1;
	if (commit[0] && (!parent || commit != parent->commit))
		lc = strlen(commit) + 1;
	if (tree[0] && strcmp(tree, oid) != 0)
		lt = strlen(tree) + 1;
	n = calloc(1, sizeof(*n) + ln + lo + lp + lc + lt);
	if (!n)
		return NULL;
	tail = (char *)(n + 1);
	n->ino = ino;
	n->kind = kind;
	if (d) {
		n->name = d->name;
		n->oid = d->oid;
	} else {
		n->name = tail_put(&tail, name, ln);
		n->oid = lo ? tail_put(&tail, oid, lo) : "";
	}
	n->path = lp ? tail_put(&tail, path, lp) : "";
	n->commit = lc ? tail_put(&tail, commit, lc) : commit[0] ? commit : "";
	if (lt)
		n->tree = tail_put(&tail, tree, lt);
	else
		n->tree = tree[0] ? n->oid : "";
	return n;
}

int node_table_new(struct node_table **out)
{
	struct node_table *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	t->nbuckets = 1024;
	t->by_ino = calloc(t->nbuckets, sizeof(*t->by_ino));
	t->by_key = calloc(t->nbuckets, sizeof(*t->by_key));
	t->root = node_alloc(NODE_ROOT_INO, NODE_ROOT, NULL, "", "", "", NULL, NULL);
	t->ctl = node_alloc(NODE_CTL_INO, NODE_CTL_DIR, NULL, ".reef", "", "", NULL, NULL);
	if (!t->by_ino || !t->by_key || !t->root || !t->ctl) {
		node_destroy(t->root);
		node_destroy(t->ctl);
		t->root = t->ctl = NULL;
		node_table_free(t);
		return -ENOMEM;
	}
	/* Permanent: the extra reference is never dropped. .reef also holds the root. */
	t->root->refs = 2;
	t->ctl->refs = 1;
	t->ctl->parent = t->root;
	table_link(t, t->root);
	table_link(t, t->ctl);
	t->count = 2;
	*out = t;
	return 0;
}

void node_table_free(struct node_table *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; t->by_ino && i < t->nbuckets; i++) {
		struct node *n = t->by_ino[i], *next;

		for (; n; n = next) {
			next = n->next_ino;
			node_destroy(n);
		}
	}
	while (t->retired) {
		struct retired *x = t->retired;

		t->retired = x->next;
		node_listing_free(x->l);
		free(x);
	}
	free(t->by_ino);
	free(t->by_key);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

struct node *node_get(struct node_table *t, uint64_t ino)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = find_ino_locked(t, ino);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&t->lock);
	return n;
}

void node_pin(struct node_table *t, struct node *n)
{
	pthread_mutex_lock(&t->lock);
	n->refs++;
	pthread_mutex_unlock(&t->lock);
}

void node_put(struct node_table *t, struct node *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&t->lock);
	unref_locked(t, n, 1);
	pthread_mutex_unlock(&t->lock);
}

int node_lookup(struct node_table *t, struct node *parent, const char *name,
                const struct node_attrs *a, struct node **out)
{
	const char *oid = a->oid ? a->oid : "";
	struct node *n;
	int r = 0;

	*out = NULL;
	if (!node_name_is_entry(name))
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	n = find_key_locked(t, parent->ino, name, oid);
	if (!n) {
		n = node_alloc(ino_for_key_locked(t, parent->ino, name, oid), a->kind, parent, name,
		               oid, a->path ? a->path : "", a->commit, a->tree);
		if (!n) {
			r = -ENOMEM;
			goto out;
		}
		n->parent = parent;
		parent->refs++;
		n->project_id = a->project_id ? a->project_id : parent->project_id;
		n->ref_kind = a->kind == NODE_REFS ? a->ref_kind : parent->ref_kind;
		n->git_mode = a->git_mode;
		n->size = a->size;
		n->time = a->time ? a->time : parent->time;
		if (a->lfs_oid) {
			n->lfs_oid = strdup(a->lfs_oid);
			if (!n->lfs_oid) {
				parent->refs--;
				node_destroy(n);
				r = -ENOMEM;
				goto out;
			}
		}
		table_link(t, n);
		t->count++;
		table_grow(t);
	}
	n->nlookup++;
	n->refs++;
	*out = n;
out:
	pthread_mutex_unlock(&t->lock);
	return r;
}

void node_forget(struct node_table *t, uint64_t ino, uint64_t nlookup)
{
	struct node *n;

	pthread_mutex_lock(&t->lock);
	n = find_ino_locked(t, ino);
	if (n && n != t->root && n != t->ctl) {
		if (nlookup > n->nlookup)
			nlookup = n->nlookup;
		n->nlookup -= nlookup;
		if (nlookup)
			unref_locked(t, n, nlookup);
	}
	pthread_mutex_unlock(&t->lock);
}

uint64_t node_find_ino(struct node_table *t, uint64_t parent, const char *name, const char *oid)
{
	struct node *n;
	uint64_t ino;

	pthread_mutex_lock(&t->lock);
	n = find_key_locked(t, parent, name, oid ? oid : "");
	ino = n ? n->ino : 0;
	pthread_mutex_unlock(&t->lock);
	return ino;
}

uint64_t node_ino_predict(struct node_table *t, uint64_t parent, const char *name, const char *oid)
{
	uint64_t ino;

	pthread_mutex_lock(&t->lock);
	ino = ino_for_key_locked(t, parent, name, oid ? oid : "");
	pthread_mutex_unlock(&t->lock);
	return ino;
}

int node_collect_under(struct node_table *t, uint64_t ancestor, enum node_kind kind, uint64_t **out,
                       size_t *nout)
{
	uint64_t *v = NULL;
	size_t n = 0, cap = 0, i;
	int r = 0;

	*out = NULL;
	*nout = 0;
	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->nbuckets && r == 0; i++) {
		struct node *x, *p;

		for (x = t->by_ino[i]; x; x = x->next_ino) {
			if (x->kind != kind)
				continue;
			for (p = x->parent; p && p->ino != ancestor; p = p->parent)
				;
			if (!p)
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				uint64_t *nv = realloc(v, nc * sizeof(*nv));

				if (!nv) {
					r = -ENOMEM;
					break;
				}
				v = nv;
				cap = nc;
			}
			v[n++] = x->ino;
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	*nout = n;
	return 0;
}

int node_branch_revs(struct node_table *t, int64_t project_id, const char *branch,
                     struct node_rev **out, size_t *nout)
{
	struct node_rev *v = NULL;
	size_t n = 0, cap = 0, i;
	int r = 0;

	*out = NULL;
	*nout = 0;
	pthread_mutex_lock(&t->lock);
	for (i = 0; i < t->nbuckets && r == 0; i++) {
		struct node *x;

		for (x = t->by_ino[i]; x; x = x->next_ino) {
			if (x->kind != NODE_REV || x->ref_kind != NODE_REF_BRANCH ||
			    x->project_id != project_id || strcmp(x->path, branch) != 0 ||
			    !x->parent)
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 4;
				struct node_rev *nv = realloc(v, nc * sizeof(*nv));

				if (!nv) {
					r = -ENOMEM;
					break;
				}
				v = nv;
				cap = nc;
			}
			v[n].ino = x->ino;
			v[n].parent = x->parent->ino;
			snprintf(v[n].name, sizeof(v[n].name), "%s", x->name);
			snprintf(v[n].commit, sizeof(v[n].commit), "%s", x->commit);
			n++;
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (r < 0) {
		free(v);
		return r;
	}
	*out = v;
	*nout = n;
	return 0;
}

size_t node_table_count(struct node_table *t)
{
	size_t c;

	pthread_mutex_lock(&t->lock);
	c = t->count;
	pthread_mutex_unlock(&t->lock);
	return c;
}

const struct node_listing *node_listing_get(struct node_table *t, struct node *n)
{
	const struct node_listing *l;

	pthread_mutex_lock(&t->lock);
	if (!n->listing && (n->kind == NODE_REV || n->kind == NODE_TREE))
		n->listing = unretire_locked(t, n);
	l = n->listing;
	pthread_mutex_unlock(&t->lock);
	return l;
}

const struct node_listing *node_listing_set(struct node_table *t, struct node *n,
                                            struct node_listing *l)
{
	const struct node_listing *cur;

	pthread_mutex_lock(&t->lock);
	if (!n->listing)
		n->listing = l;
	else
		node_listing_free(l);
	cur = n->listing;
	pthread_mutex_unlock(&t->lock);
	return cur;
}

static int dirent_cmp(const void *a, const void *b)
{
	const struct node_dirent *x = a, *y = b;

	return strcmp(x->name, y->name);
}

int node_listing_new(struct node_listing **out, const struct tree_entry *e, size_t n)
{
	struct node_listing *l;
	size_t pool = 0, off = 0, i;

	*out = NULL;
	if (n > NODE_DIR_ENTRIES)
		return -E2BIG;
	for (i = 0; i < n; i++) {
		if (!node_name_is_entry(e[i].name))
			return -EINVAL;
		pool += strlen(e[i].name) + 1;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->e = calloc(n ? n : 1, sizeof(*l->e));
	l->pool = malloc(pool ? pool : 1);
	if (!l->e || !l->pool) {
		node_listing_free(l);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		size_t len = strlen(e[i].name) + 1;

		memcpy(l->pool + off, e[i].name, len);
		l->e[i].name = l->pool + off;
		off += len;
		l->e[i].mode = e[i].mode;
		l->e[i].size = e[i].size;
		l->e[i].shown = -1;
		snprintf(l->e[i].oid, sizeof(l->e[i].oid), "%s", e[i].oid);
	}
	l->n = n;
	if (n)
		qsort(l->e, n, sizeof(*l->e), dirent_cmp);
	for (i = 1; i < n; i++) {
		if (strcmp(l->e[i - 1].name, l->e[i].name) == 0) {
			node_listing_free(l);
			return -EINVAL;
		}
	}
	*out = l;
	return 0;
}

void node_listing_free(struct node_listing *l)
{
	if (!l)
		return;
	free(l->e);
	free(l->pool);
	free(l);
}

const struct node_dirent *node_listing_find(const struct node_listing *l, const char *name)
{
	struct node_dirent key = {.name = name};

	if (!l || l->n == 0)
		return NULL;
	return bsearch(&key, l->e, l->n, sizeof(*l->e), dirent_cmp);
}

/* ---- path grammar ---- */

int node_child_kind(const struct node *parent, const char *name, enum node_ref_kind *ref_kind)
{
	switch (parent->kind) {
	case NODE_ROOT:
		if (strcmp(name, ".reef") == 0)
			return NODE_CTL_DIR;
		return node_name_is_gitlab_path(name) ? NODE_NAMESPACE : -ENOENT;
	case NODE_CTL_DIR:
		if (strcmp(name, "status") == 0)
			return NODE_STATUS;
		if (strcmp(name, "ctl") == 0)
			return NODE_CONTROL;
		if (strcmp(name, "ctl.error") == 0)
			return NODE_CONTROL_ERROR;
		if (strcmp(name, "cache.json") == 0)
			return NODE_CACHE_LIST;
		if (strcmp(name, "processors") == 0)
			return NODE_ML_DIR;
		if (strcmp(name, "usage.json") == 0)
			return NODE_ML_FILE;
		return -ENOENT;
	case NODE_NAMESPACE:
		return node_name_is_gitlab_path(name) ? NODE_NAMESPACE : -ENOENT;
	case NODE_PROJECT:
		if (strcmp(name, "HEAD") == 0)
			return NODE_HEAD;
		if (strcmp(name, "branches") == 0)
			*ref_kind = NODE_REF_BRANCH;
		else if (strcmp(name, "tags") == 0)
			*ref_kind = NODE_REF_TAG;
		else if (strcmp(name, "commits") == 0)
			*ref_kind = NODE_REF_COMMIT;
		else if (strcmp(name, "experiments") == 0 || strcmp(name, "pipelines") == 0 ||
		         strcmp(name, "data-pipelines") == 0 || strcmp(name, "visualizations") == 0)
			return NODE_ML_DIR;
		else
			return -ENOENT;
		return NODE_REFS;
	case NODE_REFS:
		if (parent->ref_kind == NODE_REF_COMMIT)
			return node_name_is_sha(name) ? NODE_REV : -ENOENT;
		/* fallthrough */
	case NODE_REF_PREFIX:
		return node_name_is_ref_component(name) ? NODE_REV : -ENOENT;
	case NODE_REV:
	case NODE_TREE:
		return node_name_is_entry(name) ? NODE_TREE : -ENOENT;
	case NODE_SUBMODULE:
		return -ENOENT;
	case NODE_ML_DIR: /* the rest of the grammar is mlfs's */
		return node_name_is_entry(name) ? NODE_ML_DIR : -ENOENT;
	case NODE_ML_FILE:
	case NODE_ML_CTL:
	case NODE_STATUS:
	case NODE_CONTROL:
	case NODE_CONTROL_ERROR:
	case NODE_CACHE_LIST:
	case NODE_HEAD:
	case NODE_FILE:
	case NODE_SYMLINK:
		return -ENOTDIR;
	}
	return -ENOENT;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* GitLab's path rule (lib/gitlab/path_regex.rb: PATH_START_CHAR is [a-zA-Z0-9_.], then
 * [a-zA-Z0-9_.-], no ".git" or ".atom" suffix): a path may start with '.'
 * ("alice/.dotfiles"). The mount's own ".reef" at the root wins over a namespace of
 * that name (node_child_kind asks for it first; the root listing skips it). */
bool node_name_is_gitlab_path(const char *name)
{
	size_t len = strlen(name), i;

	if (len == 0 || len > TREE_NAME_MAX || name[0] == '-' || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return false;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return false;
	}
	return !ends_with(name, ".git") && !ends_with(name, ".atom");
}

bool node_name_is_ref_component(const char *name)
{
	size_t len = strlen(name), i;

	if (len == 0 || len > TREE_NAME_MAX || name[0] == '.' || ends_with(name, ".lock") ||
	    strcmp(name, "@") == 0 || strstr(name, "..") || strstr(name, "@{"))
		return false;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c == 0x7f || strchr(" ~^:?*[\\/", c))
			return false;
	}
	return true;
}

bool node_name_is_sha(const char *name)
{
	size_t len = strlen(name), i;

	if (len < NODE_SHA_MIN || len > 40)
		return false;
	for (i = 0; i < len; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

bool node_name_is_entry(const char *name)
{
	size_t len = strlen(name);

	return len > 0 && len <= TREE_NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0;
}

int node_path_join(char *out, size_t cap, const char *prefix, const char *name)
{
	int r;

	if (prefix[0])
		r = snprintf(out, cap, "%s/%s", prefix, name);
	else
		r = snprintf(out, cap, "%s", name);
	if (r < 0 || (size_t)r >= cap)
		return -ENAMETOOLONG;
	return 0;
}

/* The component of p right below prefix, as [*start, *start + *len); whether more
 * follows in *more. False when p is not strictly below prefix. */
static bool below(const char *p, const char *prefix, const char **start, size_t *len, bool *more)
{
	size_t pl = strlen(prefix);
	const char *slash;

	if (pl) {
		if (strncmp(p, prefix, pl) != 0 || p[pl] != '/')
			return false;
		p += pl + 1;
	}
	if (!*p)
		return false;
	slash = strchr(p, '/');
	*start = p;
	*len = slash ? (size_t)(slash - p) : strlen(p);
	*more = slash != NULL;
	return *len > 0;
}

static int child_cmp(const void *a, const void *b)
{
	const struct node_child *x = a, *y = b;

	return strcmp(x->name, y->name);
}

int node_children(const char *const *paths, size_t n, const char *prefix, struct node_child **out,
                  size_t *nout)
{
	struct node_child *c = NULL;
	size_t count = 0, i, j;

	*out = NULL;
	*nout = 0;
	if (n)
		c = calloc(n, sizeof(*c));
	if (n && !c)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const char *s;
		size_t len;
		bool more;

		if (!below(paths[i], prefix, &s, &len, &more))
			continue;
		c[count].name = strndup(s, len);
		if (!c[count].name) {
			node_children_free(c, count);
			return -ENOMEM;
		}
		c[count].leaf = !more;
		c[count].inner = more;
		count++;
	}
	if (count)
		qsort(c, count, sizeof(*c), child_cmp);
	/* merge duplicates: one entry per name, flags or'ed */
	for (i = 0, j = 0; i < count; i++) {
		if (j > 0 && strcmp(c[j - 1].name, c[i].name) == 0) {
			c[j - 1].leaf |= c[i].leaf;
			c[j - 1].inner |= c[i].inner;
			free(c[i].name);
			continue;
		}
		c[j++] = c[i];
	}
	if (j == 0) {
		free(c);
		c = NULL;
	}
	*out = c;
	*nout = j;
	return 0;
}

void node_children_free(struct node_child *c, size_t n)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < n; i++)
		free(c[i].name);
	free(c);
}

int node_path_classify(const char *const *paths, size_t n, const char *prefix, const char *name)
{
	int r = 0;
	size_t i, nl = strlen(name);

	if (nl == 0)
		return 0;
	for (i = 0; i < n; i++) {
		const char *s;
		size_t len;
		bool more;

		if (!below(paths[i], prefix, &s, &len, &more) || len != nl ||
		    memcmp(s, name, nl) != 0)
			continue;
		r |= more ? 2 : 1;
	}
	return r;
}

mode_t node_st_mode(const struct node *n)
{
	switch (n->kind) {
	case NODE_STATUS:
	case NODE_CONTROL_ERROR:
	case NODE_CACHE_LIST:
	case NODE_ML_FILE:
		return S_IFREG | 0444;
	case NODE_CONTROL:
		return S_IFREG | 0200;
	case NODE_ML_CTL: /* reading the descriptor written shows the request's fate */
		return S_IFREG | 0644;
	case NODE_HEAD:
		return S_IFLNK | 0777;
	case NODE_FILE:
		return S_IFREG | (n->git_mode == TREE_MODE_EXEC ? 0755 : 0644);
	case NODE_SYMLINK:
		return S_IFLNK | 0777;
	case NODE_ROOT:
	case NODE_CTL_DIR:
	case NODE_NAMESPACE:
	case NODE_PROJECT:
	case NODE_REFS:
	case NODE_REF_PREFIX:
	case NODE_REV:
	case NODE_TREE:
	case NODE_SUBMODULE:
	case NODE_ML_DIR:
		break;
	}
	return S_IFDIR | 0755;
}

int node_kind_from_git_mode(uint32_t mode)
{
	switch (mode) {
	case TREE_MODE_DIR:
		return NODE_TREE;
	case TREE_MODE_FILE:
	case TREE_MODE_EXEC:
		return NODE_FILE;
	case TREE_MODE_LINK:
		return NODE_SYMLINK;
	case TREE_MODE_SUBMODULE:
		return NODE_SUBMODULE;
	}
	return -EINVAL;
}

bool node_entry_is_immutable(const struct node *parent)
{
	switch (parent->kind) {
	case NODE_CTL_DIR:
	case NODE_REV:
	case NODE_TREE:
	case NODE_SUBMODULE:
		return true;
	case NODE_REFS:
	case NODE_REF_PREFIX:
		return parent->ref_kind != NODE_REF_BRANCH;
	case NODE_ROOT:
	case NODE_NAMESPACE:
	case NODE_PROJECT:
	case NODE_STATUS:
	case NODE_CONTROL:
	case NODE_CONTROL_ERROR:
	case NODE_CACHE_LIST:
	case NODE_HEAD:
	case NODE_FILE:
	case NODE_SYMLINK:
	case NODE_ML_DIR:
	case NODE_ML_FILE:
	case NODE_ML_CTL:
		break;
	}
	return false;
}
