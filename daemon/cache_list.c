/* What the cache holds, by project, revision and path (.reef/cache.json, `reef cache
 * --list`), and the evictions a user asks for by name: everything (`reef cache
 * --evict-all`) or a whole project or namespace (`reef gc acme/iris`). See cache.h and
 * docs/cache.md "What is cached".
 *
 * The object store knows objects by id only; their names come from the index: every
 * project it knows, every ref of it, the commit's root tree and the listings below it
 * that were fetched. A cached object no known revision names (its branch moved on, its
 * listing was never stored) is listed apart, by id. */
#include "cache_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/idx.h"
#include "reef/log.h"

/* The records of the store's objects, sorted by kind and id to be found by the walk. */
struct cache_held {
	struct idx_obj *o;
	bool *seen;
	size_t n;
};

static int held_cmp(const void *pa, const void *pb)
{
	const struct idx_obj *a = pa, *b = pb;

	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	return strcmp(a->oid, b->oid);
}

static int held_load(struct cache *c, struct cache_held *h)
{
	int r;

	memset(h, 0, sizeof(*h));
	cache_touch_flush(c); /* objects just stored have their record written first */
	r = idx_obj_list(c->idx, &h->o, &h->n);
	if (r < 0)
		return r;
	if (h->n)
		qsort(h->o, h->n, sizeof(*h->o), held_cmp);
	h->seen = calloc(h->n ? h->n : 1, sizeof(*h->seen));
	if (!h->seen) {
		free(h->o);
		return -ENOMEM;
	}
	return 0;
}

static void held_free(struct cache_held *h)
{
	free(h->o);
	free(h->seen);
}

static ssize_t held_find(const struct cache_held *h, enum idx_obj_kind kind, const char *oid)
{
	struct idx_obj key = {.kind = kind};
	struct idx_obj *f;

	snprintf(key.oid, sizeof(key.oid), "%s", oid);
	f = h->n ? bsearch(&key, h->o, h->n, sizeof(*h->o), held_cmp) : NULL;
	return f ? f - h->o : -1;
}

/* "branch:main" → "branches/main", as the mount spells a revision. */
static int rev_dir(const char *ref, char *out, size_t n)
{
	static const struct {
		const char *key, *dir;
	} map[] = {{"branch:", "branches/"}, {"tag:", "tags/"}, {"commit:", "commits/"}};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		size_t kl = strlen(map[i].key);

		if (strncmp(ref, map[i].key, kl) == 0 && ref[kl])
			return snprintf(out, n, "%s%s", map[i].dir, ref + kl) < (int)n ? 0 : -1;
	}
	return -1;
}

/* What one walk over the known revisions does with each cached file it names. */
struct cache_walk {
	struct cache *c;
	struct cache_held held;
	json_t *files;  /* listing: one object per cached file, or NULL */
	bool forget;    /* forget: drop what is found */
	int dropped;    /* forget: objects dropped */
	size_t visited; /* entries seen, capped by CACHE_WALK_MAX */
	bool truncated; /* the cap was reached */
};

static json_t *held_json(struct cache *c, const struct idx_obj *o)
{
	enum odb_kind k = o->kind == IDX_OBJ_LFS ? ODB_KIND_LFS : ODB_KIND_BLOB;

	return json_pack("{s:s,s:s,s:I,s:I,s:b}", "kind", o->kind == IDX_OBJ_LFS ? "lfs" : "blob",
	                 "oid", o->oid, "stored", (json_int_t)o->size, "atime",
	                 (json_int_t)(o->atime / 1000), "open", cache_is_live(c, k, o->oid));
}

/* One blob entry of a walked tree at path (the mount path of the file). */
static void walk_file(struct cache_walk *w, const struct tree_entry *e, const char *path)
{
	ssize_t bi = held_find(&w->held, IDX_OBJ_BLOB, e->oid), li = -1;
	struct idx_lfs l = {0};
	int64_t size = e->size;
	uint64_t stored = 0;
	json_t *f;

	if (idx_lfs_get(w->c->idx, e->oid, &l) == 0 && l.lfs) {
		li = held_find(&w->held, IDX_OBJ_LFS, l.oid);
		size = (int64_t)l.size;
	}
	if (bi < 0 && li < 0)
		return;
	if (bi >= 0) {
		w->held.seen[bi] = true;
		stored += w->held.o[bi].size;
	}
	if (li >= 0) {
		w->held.seen[li] = true;
		stored += w->held.o[li].size;
	}
	if (w->forget) {
		int n = cache_forget_blob(w->c, e->oid);

		if (n > 0)
			w->dropped += n;
		return;
	}
	if (!w->files)
		return;
	if (size < 0 && idx_size_get(w->c->idx, e->oid, (uint64_t *)&size) < 0)
		size = -1;
	f = json_pack("{s:s,s:I,s:I,s:s,s:s,s:I,s:b}", "path", path, "size", (json_int_t)size,
	              "stored", (json_int_t)stored, "kind", li >= 0 ? "lfs" : "blob", "oid",
	              li >= 0 ? l.oid : e->oid, "atime",
	              (json_int_t)((li >= 0 ? w->held.o[li].atime : w->held.o[bi].atime) / 1000),
	              "open",
	              li >= 0 ? cache_is_live(w->c, ODB_KIND_LFS, l.oid)
	                      : cache_is_live(w->c, ODB_KIND_BLOB, e->oid));
	if (f)
		json_array_append_new(w->files, f);
}

/* Depth first over the stored listings below tree, at path. A tree cannot hold itself
 * (ids are hashes of content), and the path cap bounds the depth (at most 2048 levels of
 * one-byte names); the path of each level is on the heap, not the thread's stack. */
static void walk_tree(struct cache_walk *w, const char *tree, const char *path)
{
	struct tree_entry *e = NULL;
	size_t n = 0;
	char *sub;

	if (w->truncated || idx_tree_get(w->c->idx, tree, &e, &n) < 0)
		return;
	sub = malloc(CACHE_PATH_MAX);
	for (size_t i = 0; sub && i < n; i++) {
		if (++w->visited > CACHE_WALK_MAX) {
			w->truncated = true;
			break;
		}
		if (snprintf(sub, CACHE_PATH_MAX, "%s/%s", path, e[i].name) >= CACHE_PATH_MAX)
			continue;
		if (e[i].mode == TREE_MODE_DIR)
			walk_tree(w, e[i].oid, sub);
		else if (e[i].mode != TREE_MODE_SUBMODULE)
			walk_file(w, &e[i], sub);
	}
	free(sub);
	free(e);
}

/* Whether project path p is prefix or lies under it ("" matches every project). */
static bool path_under(const char *p, const char *prefix)
{
	size_t l = strlen(prefix);

	return l == 0 || (strncmp(p, prefix, l) == 0 && (p[l] == '\0' || p[l] == '/'));
}

/* Walks every known revision of every known project under prefix. */
static int walk_projects(struct cache_walk *w, const char *prefix, size_t *matched)
{
	struct idx_project_rec *projects = NULL;
	size_t np = 0;
	int r;

	*matched = 0;
	r = idx_project_list(w->c->idx, &projects, &np);
	if (r < 0)
		return r;
	for (size_t i = 0; i < np && !w->truncated; i++) {
		struct idx_ref_rec *refs = NULL;
		size_t nr = 0;

		if (!path_under(projects[i].path, prefix))
			continue;
		(*matched)++;
		if (idx_ref_list(w->c->idx, projects[i].id, &refs, &nr) < 0)
			continue;
		for (size_t k = 0; k < nr && !w->truncated; k++) {
			char dir[600], root[CACHE_PATH_MAX], tree[41];

			if (rev_dir(refs[k].ref, dir, sizeof(dir)) < 0 ||
			    idx_commit_get(w->c->idx, refs[k].commit, tree) < 0)
				continue;
			snprintf(root, sizeof(root), "%s/%s", projects[i].path, dir);
			walk_tree(w, tree, root);
		}
		free(refs);
	}
	free(projects);
	return 0;
}

int cache_list(struct cache *c, json_t **out)
{
	struct cache_walk w = {.c = c};
	uint64_t bytes = 0, objects = 0;
	json_t *o = NULL, *other = NULL;
	size_t matched;
	int r;

	*out = NULL;
	r = held_load(c, &w.held);
	if (r < 0)
		return r;
	w.files = json_array();
	other = json_array();
	if (!w.files || !other) {
		r = -ENOMEM;
		goto out;
	}
	r = walk_projects(&w, "", &matched);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < w.held.n; i++)
		if (!w.held.seen[i])
			json_array_append_new(other, held_json(c, &w.held.o[i]));
	odb_usage(c->odb, &bytes, &objects);
	o = json_pack("{s:I,s:I,s:I,s:I,s:b,s:O,s:O}", "bytes", (json_int_t)bytes, "objects",
	              (json_int_t)objects, "limit",
	              (json_int_t)__atomic_load_n(&c->limit, __ATOMIC_RELAXED), "contents",
	              (json_int_t)w.held.n, "truncated", w.truncated, "files", w.files, "other",
	              other);
	r = o ? 0 : -ENOMEM;
	*out = o;
out:
	json_decref(w.files);
	json_decref(other);
	held_free(&w.held);
	return r;
}

int cache_forget_projects(struct cache *c, const char *prefix)
{
	struct cache_walk w = {.c = c, .forget = true};
	size_t matched;
	int r;

	r = held_load(c, &w.held);
	if (r < 0)
		return r;
	r = walk_projects(&w, prefix, &matched);
	held_free(&w.held);
	if (r < 0)
		return r;
	if (matched == 0)
		return -ENOENT;
	return w.dropped;
}

int cache_evict_all(struct cache *c, uint64_t *kept)
{
	struct idx_obj *list = NULL;
	size_t n = 0;
	int dropped = 0, r;

	*kept = 0;
	pthread_mutex_lock(&c->evict_lock); /* not at once with the limit's eviction */
	cache_touch_flush(c);
	r = idx_obj_list(c->idx, &list, &n);
	for (size_t i = 0; r == 0 && i < n; i++) {
		enum odb_kind kind = list[i].kind == IDX_OBJ_LFS ? ODB_KIND_LFS : ODB_KIND_BLOB;
		uint64_t freed = 0;

		/* an object a reader has open, or a download in progress, stays */
		if (cache_is_live(c, kind, list[i].oid)) {
			(*kept)++;
			continue;
		}
		if (odb_remove(c->odb, kind, list[i].oid, &freed) == 0)
			dropped++;
		idx_obj_del(c->idx, list[i].kind, list[i].oid);
	}
	pthread_mutex_unlock(&c->evict_lock);
	free(list);
	if (r < 0)
		return r;
	log_info("cache: evicted %d objects on request, %" PRIu64 " open kept", dropped, *kept);
	return dropped;
}

void cache_usage(struct cache *c, uint64_t *bytes, uint64_t *objects, uint64_t *limit)
{
	*bytes = *objects = 0;
	odb_usage(c->odb, bytes, objects);
	*limit = __atomic_load_n(&c->limit, __ATOMIC_RELAXED);
}
