/* Open objects of the cache layer: LFS verdicts, objects shared by concurrent readers
 * and the downloads that fill them, served while they stream (see cache.h, cache_int.h). */
#include "cache_int.h"

#include <errno.h>
#include <inttypes.h>
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

#include "gl.h"
#include "reef/hash.h"
#include "reef/idx.h"
#include "reef/jsonx.h"
#include "reef/lfs.h"
#include "reef/log.h"
#include "reef/util.h"
#include "stream.h"

/* --- LFS and streaming objects --- */

void cache_pid_note(struct cache *c, int64_t id, const char *path)
{
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->npids; i++)
		if (c->pids[i].id == id) {
			snprintf(c->pids[i].path, sizeof(c->pids[i].path), "%s", path);
			pthread_mutex_unlock(&c->lock);
			return;
		}
	struct cache_pid *p = &c->pids[c->npids < CACHE_PIDS_MAX ? c->npids++ : c->pids_next];

	if (c->npids == CACHE_PIDS_MAX)
		c->pids_next = (c->pids_next + 1) % CACHE_PIDS_MAX;
	p->id = id;
	snprintf(p->path, sizeof(p->path), "%s", path);
	pthread_mutex_unlock(&c->lock);
}

/* The project's full path (the LFS batch URL is per repository path, not id). */
int cache_pid_path(struct cache *c, int64_t id, char path[1024])
{
	struct cache_project p;
	char ids[24];
	json_t *j = NULL;
	int r;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->npids; i++)
		if (c->pids[i].id == id) {
			memcpy(path, c->pids[i].path, sizeof(c->pids[i].path));
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
	pthread_mutex_unlock(&c->lock);
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	r = gl_project_get(c->gl, ids, &j);
	if (r == 0)
		r = cache_project_parse(j, &p);
	json_decref(j);
	if (r == 0 && (p.id != id || !path_is_safe(p.path, sizeof(p.path) - 1)))
		r = -EIO;
	if (r < 0)
		return r;
	cache_pid_note(c, id, p.path);
	memcpy(path, p.path, sizeof(p.path));
	return 0;
}

#define CACHE_ATTR_MAX ((uint64_t)1 << 20) /* a larger .gitattributes: assume LFS */

/* 1 when the directory's entries hold a .gitattributes that mentions filter=lfs (or one
 * too large to read), 0 when not, negative errno. */
int cache_attrs_lfs(struct cache *c, int64_t project_id, const struct tree_entry *e, size_t n)
{
	struct odb_blob *b = NULL;
	char *text;
	uint64_t size;
	ssize_t got;
	int r;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(e[i].name, ".gitattributes") != 0)
			continue;
		if ((e[i].mode & 0170000) != 0100000)
			return 0; /* a symlink or a directory: git ignores it in the tree */
		r = cache_blob_open(c, project_id, e[i].oid, &b);
		if (r < 0)
			return r;
		size = odb_blob_size(b);
		if (size > CACHE_ATTR_MAX) {
			odb_blob_close(b);
			return 1;
		}
		text = malloc((size_t)size + 1);
		got = text ? odb_blob_pread(b, text, (size_t)size, 0) : -ENOMEM;
		odb_blob_close(b);
		if (got < 0) {
			free(text);
			return (int)got;
		}
		text[got] = '\0';
		r = memmem(text, (size_t)got, "filter=lfs", 10) != NULL;
		free(text);
		return r;
	}
	return 0;
}

/* Whether git would smudge path in commit through LFS: only when a .gitattributes of the
 * commit, in the file's directory or one above it, names filter=lfs (any pattern: a
 * superset of the paths git-lfs would smudge). A pointer committed without such an
 * attribute is shown as its text, as a git checkout shows it. 1 possible, 0 not, or a
 * negative errno (the caller then treats the blob as a candidate). */
int cache_lfs_possible(struct cache *c, int64_t project_id, const char *commit, const char *path)
{
	struct tree_entry *e = NULL;
	char tree[41], dir[CACHE_PATH_MAX];
	const char *p = path, *slash;
	size_t n = 0;
	int r;

	r = cache_root_tree(c, project_id, commit, tree, &e, &n);
	while (r == 0) {
		r = cache_attrs_lfs(c, project_id, e, n);
		slash = strchr(p, '/');
		if (r != 0 || !slash)
			break;
		/* descend into the next directory of the path */
		{
			size_t len = (size_t)(slash - p), i;

			for (i = 0; i < n; i++)
				if (strlen(e[i].name) == len && memcmp(e[i].name, p, len) == 0)
					break;
			if (i == n || (e[i].mode & 0170000) != 0040000) {
				r = -ENOENT;
				break;
			}
			memcpy(tree, e[i].oid, sizeof(tree));
			if ((size_t)(slash - path) >= sizeof(dir)) {
				r = -ENAMETOOLONG;
				break;
			}
			memcpy(dir, path, (size_t)(slash - path));
			dir[slash - path] = '\0';
			p = slash + 1;
			free(e);
			e = NULL;
			n = 0;
			r = cache_tree(c, project_id, commit, dir, tree, &e, &n);
		}
	}
	free(e);
	return r;
}

int cache_blob_info(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, int64_t listed_size, struct cache_blob_info *info)
{
	struct lfs_pointer ptr;
	struct odb_blob *b = NULL;
	struct idx_lfs l;
	char data[LFS_POINTER_MAX];
	uint64_t size;
	ssize_t got;
	int r;

	memset(info, 0, sizeof(*info));
	if (!cache_oid_valid(oid))
		return -EINVAL;
	if (idx_lfs_get(c->idx, oid, &l) == 0) {
		info->lfs = l.lfs;
		if (l.lfs) {
			memcpy(info->lfs_oid, l.oid, sizeof(info->lfs_oid));
			info->size = l.size;
			if (idx_size_get(c->idx, oid, &info->blob_size) < 0)
				info->blob_size = listed_size >= 0 ? (uint64_t)listed_size : 0;
		} else {
			info->size = info->blob_size = l.size;
		}
		return 0;
	}
	{
		int64_t known = listed_size;

		if (known < 0 && idx_size_get(c->idx, oid, &size) == 0 && size <= INT64_MAX)
			known = (int64_t)size;
		if (known >= 0 && !CACHE_LFS_CANDIDATE(known)) {
			info->size = info->blob_size = (uint64_t)known;
			return 0;
		}
		if (known >= 0 && commit && path && cache_oid_valid(commit) &&
		    path_is_safe(path, CACHE_PATH_MAX - 1) &&
		    cache_lfs_possible(c, project_id, commit, path) == 0) {
			info->size = info->blob_size = (uint64_t)known; /* as below */
			return 0;
		}
	}
	/* sizes and LFS verdicts of the whole directory at once (GraphQL), not a HEAD or a
	 * pointer download per file */
	if (commit && path && cache_oid_valid(commit) && path_is_safe(path, CACHE_PATH_MAX - 1) &&
	    cache_bulk_sizes(c, project_id, commit, path) == 0 &&
	    idx_lfs_get(c->idx, oid, &l) == 0) {
		info->lfs = l.lfs;
		info->size = l.size;
		if (l.lfs) {
			memcpy(info->lfs_oid, l.oid, sizeof(info->lfs_oid));
			if (idx_size_get(c->idx, oid, &info->blob_size) < 0)
				info->blob_size = listed_size >= 0 ? (uint64_t)listed_size : 0;
		} else {
			info->blob_size = l.size;
		}
		return 0;
	}
	if (listed_size >= 0) {
		size = (uint64_t)listed_size;
	} else {
		r = cache_blob_size(c, project_id, commit, path, oid, &size);
		if (r < 0)
			return r;
	}
	info->size = info->blob_size = size;
	if (size > INT64_MAX || !CACHE_LFS_CANDIDATE((int64_t)size))
		return 0;
	if (commit && path && cache_oid_valid(commit) && path_is_safe(path, CACHE_PATH_MAX - 1) &&
	    cache_lfs_possible(c, project_id, commit, path) == 0) {
		/* no LFS attribute on its way: not a pointer for git, nor here; the verdict
		 * is per blob, and a blob committed elsewhere with such an attribute is rare
		 * enough to be recorded only for this path's first lookup */
		return 0;
	}
	/* small enough to be a pointer: only its bytes can tell */
	r = cache_blob_open(c, project_id, oid, &b);
	if (r < 0)
		return r;
	size = odb_blob_size(b);
	got = size < sizeof(data) ? odb_blob_pread(b, data, sizeof(data), 0) : 0;
	odb_blob_close(b);
	if (got < 0)
		return (int)got;
	info->size = info->blob_size = size;
	memset(&l, 0, sizeof(l));
	l.size = size;
	if (size < sizeof(data) && lfs_pointer_parse(data, (size_t)got, &ptr) == 0) {
		info->lfs = l.lfs = true;
		memcpy(info->lfs_oid, ptr.oid, sizeof(info->lfs_oid));
		memcpy(l.oid, ptr.oid, sizeof(l.oid));
		info->size = l.size = ptr.size;
	}
	idx_size_put(c->idx, oid, size);
	idx_lfs_put(c->idx, oid, &l);
	return 0;
}

/* Where a stream's bytes come from: the raw blob route, or the href the LFS batch API
 * names (asked once, at the first fetch). */
struct cache_src {
	struct cache *c;
	int64_t pid;
	enum odb_kind kind;
	char oid[65];
	uint64_t size;
	bool keep;
	pthread_mutex_t lock;
	bool have_target;
	struct gl_target t;
	uint64_t fetched;
};

int cache_src_fetch(void *arg, uint64_t off, const struct gl_stream_sink *sink)
{
	struct cache_src *src = arg;
	struct cache *c = src->c;
	char project[1024];
	int r = 0;

	struct gl_target ahead = {0};
	bool took = false, need;

	pthread_mutex_lock(&src->lock);
	need = !src->have_target;
	pthread_mutex_unlock(&src->lock);
	/* an action a prefetch batch asked already (outside src's lock: the cache's lock
	 * is never taken inside it) */
	if (need && src->kind == ODB_KIND_LFS)
		took = cache_bulk_lfs_take(c, src->oid, &ahead);
	pthread_mutex_lock(&src->lock);
	if (!src->have_target && took) {
		src->t = ahead;
		src->have_target = true;
	} else if (took) {
		gl_target_free(&ahead);
	}
	if (!src->have_target) {
		if (src->kind == ODB_KIND_BLOB) {
			r = gl_blob_target(c->gl, src->pid, src->oid, &src->t);
		} else {
			r = cache_pid_path(c, src->pid, project);
			if (r == 0)
				r = gl_lfs_target(c->gl, project, src->oid, src->size, &src->t);
		}
		src->have_target = r == 0;
	}
	pthread_mutex_unlock(&src->lock);
	if (r < 0)
		return r;
	return gl_stream(c->gl, &src->t, off, src->size, sink);
}

void cache_src_free(void *arg)
{
	struct cache_src *src = arg;

	gl_target_free(&src->t);
	pthread_mutex_destroy(&src->lock);
	free(src);
}

void cache_stream_done(void *arg, struct stream *s, int result, const char *reason)
{
	struct cache_src *src = arg;
	struct cache *c = src->c;
	struct cache_live *l;
	struct stream *drop = NULL;

	if (result == 0 && src->keep && !reason)
		cache_obj_note(c, src->kind, src->oid, src->size);
	if (result < 0)
		cache_err_note(c, "%s %s: %s; not cached",
		               src->kind == ODB_KIND_LFS ? "LFS object" : "blob", src->oid,
		               reason ? reason : "failed");
	else if (reason)
		log_warn("cache: %s: %s", src->oid, reason);
	pthread_mutex_lock(&c->lock);
	/* with the table entry's removal: status never counts these bytes twice */
	__atomic_add_fetch(&c->bytes_fetched, stream_fetched(s), __ATOMIC_RELAXED);
	c->in_flight--;
	l = cache_live_find(c, src->kind, src->oid);
	if (l && l->s == s) {
		drop = l->s;
		l->s = NULL;
		cache_live_settle(c, l);
	}
	pthread_cond_broadcast(&c->done);
	pthread_mutex_unlock(&c->lock);
	/* the table's reference; the fetcher calling us holds another */
	stream_unref(drop);
	/* objects stored while this one was in flight may have passed the limit: now that
	 * they are all evictable, come back under it */
	if (result == 0 && src->keep)
		cache_evict(c, 0);
}

int cache_room(void *arg, uint64_t bytes)
{
	struct cache_src *src = arg;

	return cache_evict(src->c, bytes) == 0 ? 0 : -ENOSPC;
}

/* Starts the shared download of a large object (l->starting set by the caller). */
int cache_stream_start(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
                       uint64_t size, struct stream **out, bool *keep)
{
	uint64_t limit = __atomic_load_n(&c->limit, __ATOMIC_RELAXED);
	struct cache_src *src = calloc(1, sizeof(*src));
	struct stream_opts so = {0};
	struct stream_source ss;
	int r;

	if (!src)
		return -ENOMEM;
	src->c = c;
	src->pid = pid;
	src->kind = kind;
	snprintf(src->oid, sizeof(src->oid), "%s", oid);
	src->size = size;
	pthread_mutex_init(&src->lock, NULL);
	/* the batch API answers before any byte: a missing object is ENOENT to the reader,
	 * not a poisoned stream */
	if (kind == ODB_KIND_LFS) {
		char project[1024];

		/* an action asked ahead in a prefetch batch, else one batch request now */
		r = 0;
		if (!cache_bulk_lfs_take(c, oid, &src->t)) {
			r = cache_pid_path(c, pid, project);
			if (r == 0)
				r = gl_lfs_target(c->gl, project, oid, size, &src->t);
		}
		if (r < 0) {
			if (r == -EIO)
				cache_err_note(c, "LFS object %s: no download action", oid);
			cache_src_free(src);
			return r;
		}
		src->have_target = true;
	}
	/* an object larger than the cache, or one that cannot fit beside what is open,
	 * streams through without being kept */
	src->keep = size <= limit && cache_evict(c, size) == 0;
	if (!src->keep)
		log_info("cache: %s (%" PRIu64 " bytes) streams through: no room under the limit",
		         oid, size);
	pthread_mutex_lock(&c->lock);
	c->in_flight++;
	pthread_mutex_unlock(&c->lock);
	so.odb = c->odb;
	so.kind = kind;
	so.oid = src->oid;
	so.size = size;
	so.keep = src->keep;
	so.done = cache_stream_done;
	so.make_room = cache_room;
	so.arg = src;
	ss.fetch = cache_src_fetch;
	ss.free = cache_src_free;
	ss.arg = src;
	*keep = src->keep;
	r = stream_new(out, &so, &ss);
	if (r < 0) {
		pthread_mutex_lock(&c->lock);
		c->in_flight--;
		pthread_mutex_unlock(&c->lock);
		cache_src_free(src);
	}
	return r;
}

/* Opens a stored object, joins its download, or starts one; with defer, a git blob of
 * known size that is neither stored nor streaming is left for the first read (o->lazy).
 * Called with c->lock held and l counting this open; returns with the lock released. */
int cache_obj_attach(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
                     int64_t size, struct cache_obj *o, struct cache_live *l, bool defer)
{
	struct stream *s = NULL;
	bool keep = false;
	int r;

	for (;;) {
		while (l->starting)
			pthread_cond_wait(&c->done, &c->lock);
		if (l->s) {
			o->s = l->s;
			stream_ref(o->s);
			pthread_mutex_unlock(&c->lock);
			__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
			o->size = stream_size(o->s);
			return 0;
		}
		pthread_mutex_unlock(&c->lock);
		r = kind == ODB_KIND_LFS ? odb_lfs_open(c->odb, oid, &o->blob)
		                         : odb_blob_open(c->odb, oid, &o->blob);
		if (r == 0) {
			__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
			cache_touch(c, kind, oid);
			o->size = odb_blob_size(o->blob);
			return 0;
		}
		if (r != -ENOENT)
			return r;
		if (kind == ODB_KIND_BLOB && size >= 0 && defer) {
			/* the size is known: nothing to ask before the first read */
			o->lazy = true;
			o->pid = pid;
			o->size = (uint64_t)size;
			return 0;
		}
		if (kind == ODB_KIND_BLOB && (size < 0 || (uint64_t)size < ODB_RAW_THRESHOLD)) {
			/* small or of unknown size: downloaded whole and verified first */
			r = cache_blob_open(c, pid, oid, &o->blob);
			if (r < 0)
				return r;
			o->size = odb_blob_size(o->blob);
			return 0;
		}
		pthread_mutex_lock(&c->lock);
		if (l->starting || l->s)
			continue; /* someone else began meanwhile: join theirs */
		l->starting = true;
		pthread_mutex_unlock(&c->lock);
		__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
		r = cache_stream_start(c, pid, kind, oid, (uint64_t)size, &s, &keep);
		pthread_mutex_lock(&c->lock);
		l->starting = false;
		if (r == 0 && stream_state(s) == 0) {
			l->s = s; /* the table's reference, dropped when it is done */
			l->reserve = keep ? (uint64_t)size : 0;
			stream_ref(s);
		}
		pthread_cond_broadcast(&c->done);
		pthread_mutex_unlock(&c->lock);
		if (r < 0)
			return r;
		o->s = s;
		o->size = (uint64_t)size;
		return 0;
	}
}

int cache_obj_get(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid, int64_t size,
                  struct cache_obj *o)
{
	struct cache_live *l;
	int r;

	pthread_mutex_lock(&c->lock);
	l = cache_live_get(c, kind, oid);
	if (!l) {
		pthread_mutex_unlock(&c->lock);
		return -ENOMEM;
	}
	l->opens++; /* from now on neither evicted nor forgotten */
	r = cache_obj_attach(c, pid, kind, oid, size, o, l, true);
	if (r < 0) {
		pthread_mutex_lock(&c->lock);
		l->opens--;
		cache_live_settle(c, l);
		pthread_mutex_unlock(&c->lock);
	}
	return r;
}

/* An LFS verdict the server stated (GraphQL's lfsOid) is checked against the pointer
 * blob itself before its object is fetched: what a file serves follows from its tree,
 * not from a server's say-so. Cheap once the pointer is cached. */
int cache_lfs_confirm(struct cache *c, int64_t pid, const char *oid,
                      const struct cache_blob_info *info)
{
	struct lfs_pointer ptr;
	struct odb_blob *b = NULL;
	char data[LFS_POINTER_MAX];
	struct idx_lfs l = {0};
	ssize_t got;
	int r;

	r = cache_blob_open(c, pid, oid, &b);
	if (r < 0)
		return r;
	got = odb_blob_size(b) < sizeof(data) ? odb_blob_pread(b, data, sizeof(data), 0) : 0;
	l.size = odb_blob_size(b);
	odb_blob_close(b);
	if (got < 0)
		return (int)got;
	if (got > 0 && lfs_pointer_parse(data, (size_t)got, &ptr) == 0 &&
	    strcmp(ptr.oid, info->lfs_oid) == 0 && ptr.size == info->size)
		return 0;
	cache_err_note(c,
	               "blob %s is not the LFS pointer the server described; its verdict is "
	               "corrected",
	               oid);
	if (got > 0 && lfs_pointer_parse(data, (size_t)got, &ptr) == 0) {
		l.lfs = true;
		memcpy(l.oid, ptr.oid, sizeof(l.oid));
		l.size = ptr.size;
	}
	idx_lfs_put(c->idx, oid, &l);
	return -EIO;
}

int cache_obj_open(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *oid, struct cache_obj **out)
{
	struct cache_blob_info info;
	struct cache_obj *o;
	int64_t known = -1;
	int r;

	*out = NULL;
	if (!cache_oid_valid(oid))
		return -EINVAL;
	if (commit && !cache_oid_valid(commit))
		commit = NULL;
	if (path && !path_is_safe(path, CACHE_PATH_MAX - 1))
		path = NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->c = c;
	pthread_mutex_init(&o->load_lock, NULL);
	r = cache_blob_info(c, project_id, commit, path, oid, -1, &info);
	if (r < 0)
		goto fail;
	if (info.lfs) {
		r = cache_lfs_confirm(c, project_id, oid, &info);
		if (r < 0)
			goto fail;
		o->lfs = true;
		o->kind = ODB_KIND_LFS;
		memcpy(o->oid, info.lfs_oid, sizeof(o->oid));
		known = (int64_t)info.size;
	} else {
		o->kind = ODB_KIND_BLOB;
		memcpy(o->oid, oid, 41);
		/* the index's (from the listing or an earlier download), the stored blob's, or
		 * else the server's (HEAD): as cache_blob_size */
		if (info.blob_size <= ODB_BLOB_MAX)
			known = (int64_t)info.blob_size;
		/* a small file not cached: at its first read its directory's small files
		 * come with it, in one request (cache_obj_load); a larger one waits for the
		 * batch that carries it, if any. Reaching a blob of the latest batch starts
		 * the next (the look-ahead). */
		if (commit && path && known >= 0 && (uint64_t)known < ODB_RAW_THRESHOLD) {
			memcpy(o->commit, commit, 41);
			o->path = strdup(path);
			cache_bulk_touch(c, project_id, commit, path, oid);
		}
	}
	r = cache_obj_get(c, project_id, o->kind, o->oid, known, o);
	if (r < 0)
		goto fail;
	*out = o;
	return 0;
fail:
	pthread_mutex_destroy(&o->load_lock);
	free(o->path);
	free(o);
	return r;
}

uint64_t cache_obj_size(const struct cache_obj *o)
{
	return o->size;
}

/* Makes a deferred object readable: stores (small) or starts streaming (large) at the
 * first read, once per handle; concurrent handles share the download. */
int cache_obj_load(struct cache_obj *o)
{
	struct cache *c = o->c;
	struct cache_live *l;
	uint64_t want = o->size, got;
	int r = 0;

	if (!o->lazy || __atomic_load_n(&o->ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&o->load_lock);
	if (!__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE)) {
		/* reading a directory of small files costs one request, not one per file */
		if (o->path && o->kind == ODB_KIND_BLOB && !odb_blob_has(c->odb, o->oid))
			cache_bulk_blobs(c, o->pid, o->commit, o->path, o->oid);
		pthread_mutex_lock(&c->lock);
		l = cache_live_find(c, o->kind, o->oid); /* held by this open */
		if (l) {
			r = cache_obj_attach(c, o->pid, o->kind, o->oid, (int64_t)want, o, l,
			                     false);
		} else {
			pthread_mutex_unlock(&c->lock);
			r = -EIO;
		}
		got = o->blob ? odb_blob_size(o->blob) : o->s ? stream_size(o->s) : 0;
		if (r == 0 && got != want) {
			/* cannot happen for a verified blob: its id covers its size */
			log_error("cache: blob %s holds %" PRIu64 " bytes, %" PRIu64 " expected",
			          o->oid, got, want);
			r = -EIO;
		}
		o->size = want;
		if (r == 0)
			__atomic_store_n(&o->ready, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&o->load_lock);
	/* the open already succeeded: a blob its tree names but the server no longer gives
	 * is a server fault to the reader */
	return r == -ENOENT ? -EIO : r;
}

ssize_t cache_obj_pread(struct cache_obj *o, void *buf, size_t n, uint64_t off)
{
	int r = cache_obj_load(o);

	if (r < 0)
		return r;
	return o->blob ? odb_blob_pread(o->blob, buf, n, off) : stream_pread(o->s, buf, n, off);
}

int cache_obj_fd(struct cache_obj *o)
{
	if (o->lazy && !__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE))
		return -1; /* the first pread loads it */
	return o->blob ? odb_blob_fd(o->blob) : stream_fd(o->s);
}

const char *cache_obj_lfs_oid(const struct cache_obj *o)
{
	return o->lfs ? o->oid : NULL;
}

void cache_obj_close(struct cache_obj *o)
{
	struct cache *c;
	struct cache_live *l;

	if (!o)
		return;
	c = o->c;
	odb_blob_close(o->blob);
	stream_unref(o->s);
	pthread_mutex_destroy(&o->load_lock);
	pthread_mutex_lock(&c->lock);
	l = cache_live_find(c, o->kind, o->oid);
	if (l && l->opens) {
		l->opens--;
		cache_live_settle(c, l);
	}
	pthread_mutex_unlock(&c->lock);
	free(o->path);
	free(o);
}
