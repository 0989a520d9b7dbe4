/* The caching layer of reefd: see daemon/cache.h and docs/cache.md.
 *
 * GitLab lists trees by (ref, path), not by tree id, and its commit JSON carries no tree
 * id. So the root tree of a commit is the listing of (commit, ""), rebuilt into a git
 * tree object whose id we compute (and remember as commit -> tree); a subtree is the
 * listing of (commit, path), accepted only when the tree object rebuilt from it hashes
 * to the id its parent listing gave, and then cached by that id for ever. */
#include "cache.h"

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
#include "reef/lfs.h"
#include "stream.h"
#include "reef/hash.h"
#include "reef/idx.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#include "cache_int.h"

void cache_err_note(struct cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cache_evict(struct cache *c, uint64_t need);
static void cache_touch(struct cache *c, enum odb_kind kind, const char *oid);
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size);
static void cache_branch_moved(struct cache *c, int64_t pid, const char *name, const char *old,
                               const char *now);
static void *cache_maint_main(void *arg);
static int cache_ref_from_json(const json_t *j, enum cache_ref_kind kind, char commit[41]);
static void cache_commit_time_note(struct cache *c, const char *commit, const json_t *cj);
static void cache_pid_note(struct cache *c, int64_t id, const char *path);

int64_t cache_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool cache_fresh_at(int64_t at, unsigned ttl_ms)
{
	int64_t now = cache_now_ms();

	return now >= at && now - at < (int64_t)ttl_ms;
}

/* Fresh within ttl and not older than the last cache_refresh. */
#define cache_fresh(at, ttl)                                                                       \
	(cache_fresh_at((at), (ttl)) && (at) > __atomic_load_n(&c->refresh_at, __ATOMIC_RELAXED))

static bool cache_oid_valid(const char *oid)
{
	return oid && hash_is_hex(oid, HASH_SHA1_HEX);
}

int cache_new(struct cache **out, const struct cache_opts *o)
{
	struct cache *c;
	char path[CACHE_PATH_MAX];
	int r;

	*out = NULL;
	if (!o || !o->dir || !*o->dir || !o->server)
		return -EINVAL;
	if (strlen(o->dir) > CACHE_PATH_MAX - 64)
		return -ENAMETOOLONG;
	if (mkdir(o->dir, 0700) < 0 && errno != EEXIST)
		return log_ret(-errno, "cache: cannot create %s: %s", o->dir, strerror(errno));
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->evict_lock, NULL);
	pthread_cond_init(&c->done, NULL);
	pthread_cond_init(&c->jobs_cond, NULL);
	pthread_cond_init(&c->maint_cond, NULL);
	pthread_cond_init(&c->moved_idle, NULL);
	cache_bulk_init(c);
	c->branch_ttl_ms = o->branch_ttl_ms;
	c->list_ttl_ms = o->list_ttl_ms;
	c->poll_ms = o->poll_ms ? o->poll_ms : CACHE_POLL_MS_DEFAULT;
	c->nworkers = o->workers;
	if (!c->nworkers) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		c->nworkers = cpus > 0 ? (unsigned)cpus * 2 : 2;
	}
	if (c->nworkers < 2)
		c->nworkers = 2;
	if (c->nworkers > 8)
		c->nworkers = 8;
	c->dir = strdup(o->dir);
	if (!c->dir) {
		r = -ENOMEM;
		goto fail;
	}
	r = odb_open(&c->odb, o->dir);
	if (r < 0) {
		log_error("cache: cannot open the object store in %s: %s", o->dir, strerror(-r));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/index.lmdb", o->dir);
	r = idx_open(&c->idx, path, 0);
	if (r < 0) {
		log_error("cache: cannot open the index %s: %s", path, strerror(-r));
		goto fail;
	}
	r = gl_new(&c->gl, o->server, o->token);
	if (r < 0) {
		log_error("cache: bad server URL");
		goto fail;
	}
	gl_set_stall(c->gl, o->stall_s);
	r = cache_set_limit(c, o->limit);
	if (r < 0)
		goto fail;
	/* reconciles the index with the disk, evicts when above the limit, polls branches */
	r = -pthread_create(&c->maint, NULL, cache_maint_main, c);
	if (r < 0)
		goto fail;
	c->maint_started = true;
	*out = c;
	return 0;
fail:
	cache_free(c);
	return r;
}

static void cache_reflist_free(struct cache_reflist *l)
{
	if (!l)
		return;
	cache_names_free(l->names, l->n);
	free(l);
}

static void cache_touch_flush(struct cache *c);

void cache_free(struct cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = true;
	pthread_cond_broadcast(&c->jobs_cond);
	pthread_cond_broadcast(&c->maint_cond);
	pthread_mutex_unlock(&c->lock);
	if (c->maint_started)
		pthread_join(c->maint, NULL);
	/* a lookup's callback may still run on another thread: no call into the owner's
	 * context after this returns */
	cache_on_branch_moved(c, NULL, NULL);
	if (c->workers)
		for (unsigned i = 0; i < c->nworkers; i++)
			pthread_join(c->workers[i], NULL);
	free(c->workers);
	while (c->jobs) {
		struct cache_job *j = c->jobs;

		c->jobs = j->next;
		free(j->path);
		free(j);
	}
	/* downloads still running for a reader that left: wait for their outcome, so no
	 * fetcher thread outlives the store it writes to */
	for (;;) {
		struct stream *s = NULL;

		pthread_mutex_lock(&c->lock);
		for (size_t b = 0; b < CACHE_LIVE_BUCKETS && !s; b++)
			for (struct cache_live *l = c->live[b]; l && !s; l = l->next)
				if (l->s) {
					s = l->s;
					stream_ref(s);
				}
		pthread_mutex_unlock(&c->lock);
		if (!s)
			break;
		stream_wait(s);
		stream_unref(s);
	}
	if (c->idx)
		cache_touch_flush(c);
	while (c->branches) {
		struct cache_branch *b = c->branches;

		c->branches = b->next;
		free(b);
	}
	for (size_t b = 0; b < CACHE_LIVE_BUCKETS; b++)
		while (c->live[b]) {
			struct cache_live *l = c->live[b];

			c->live[b] = l->next;
			free(l);
		}
	while (c->reflists) {
		struct cache_reflist *l = c->reflists;

		c->reflists = l->next;
		cache_reflist_free(l);
	}
	/* no download may be in flight when the cache goes away */
	json_decref(c->user);
	free(c->projects);
	gl_free(c->gl);
	idx_close(c->idx);
	odb_close(c->odb);
	pthread_cond_destroy(&c->done);
	pthread_cond_destroy(&c->jobs_cond);
	pthread_cond_destroy(&c->maint_cond);
	pthread_cond_destroy(&c->moved_idle);
	cache_bulk_fini(c);
	pthread_mutex_destroy(&c->evict_lock);
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c);
}

int cache_user_known(struct cache *c, json_t **out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->user ? json_incref(c->user) : NULL;
	pthread_mutex_unlock(&c->lock);
	return *out ? 0 : -ENOENT;
}

int cache_user(struct cache *c, json_t **out)
{
	json_t *u = NULL;
	int r;

	pthread_mutex_lock(&c->lock);
	if (c->user)
		u = json_incref(c->user);
	pthread_mutex_unlock(&c->lock);
	if (u) {
		*out = u;
		return 0;
	}
	r = gl_user(c->gl, &u);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	if (!c->user)
		c->user = json_incref(u);
	pthread_mutex_unlock(&c->lock);
	*out = u;
	return 0;
}

/* Fills p from a project JSON object; -EIO when it lacks what we need. */
static int cache_project_parse(const json_t *j, struct cache_project *p)
{
	const char *path = jsonx_str(j, "path_with_namespace");
	const char *db = jsonx_str(j, "default_branch");

	memset(p, 0, sizeof(*p));
	p->id = jsonx_int(j, "id", -1);
	if (p->id < 0 || !path || strlen(path) >= sizeof(p->path) ||
	    (db && strlen(db) >= sizeof(p->default_branch)))
		return -EIO;
	strcpy(p->path, path);
	/* GitLab names a default branch ("main", its default_branch_or_main) even for an
	 * empty repository: only empty_repo says there is no HEAD (Entities::Project) */
	if (db && !json_is_true(json_object_get(j, "empty_repo")))
		strcpy(p->default_branch, db);
	return 0;
}

static int cache_projects_copy(const struct cache_project *src, size_t n,
                               struct cache_project **out, size_t *nout)
{
	*out = malloc((n ? n : 1) * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	if (n)
		memcpy(*out, src, n * sizeof(**out));
	*nout = n;
	return 0;
}

int cache_projects_list(struct cache *c, struct cache_project **out, size_t *n)
{
	struct cache_project *list = NULL;
	json_t *arr = NULL, *it;
	size_t i, count = 0;
	int64_t now;
	int r;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&c->lock);
	if (c->have_projects && cache_fresh(c->projects_at, c->list_ttl_ms)) {
		r = cache_projects_copy(c->projects, c->nprojects, out, n);
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	pthread_mutex_unlock(&c->lock);

	r = gl_projects_list(c->gl, &arr);
	if (r == 0) {
		list = calloc(json_array_size(arr) + 1, sizeof(*list));
		if (!list)
			r = -ENOMEM;
	}
	if (r == 0) {
		json_array_foreach(arr, i, it)
		{
			/* skip what we cannot show rather than lose the whole listing */
			if (cache_project_parse(it, &list[count]) == 0 &&
			    path_is_safe(list[count].path, sizeof(list[count].path) - 1))
				count++;
		}
	}
	json_decref(arr);
	now = cache_now_ms();
	pthread_mutex_lock(&c->lock);
	if (r == 0) {
		free(c->projects);
		c->projects = list;
		c->nprojects = count;
		c->projects_at = now;
		c->have_projects = true;
		list = NULL;
	}
	if (r == 0 || (r == -EIO && c->have_projects))
		r = cache_projects_copy(c->projects, c->nprojects, out, n);
	pthread_mutex_unlock(&c->lock);
	free(list);
	for (i = 0; r == 0 && i < *n; i++) {
		/* the listing is simple=true, which has no empty_repo: its default branch is a
		 * guess (GitLab's default_branch_or_main), so it is indexed stale, and only when
		 * nothing better is known; cache_project_get asks the project itself */
		int64_t known;

		if (idx_project_get(c->idx, (*out)[i].path, &known, NULL, 0, NULL) < 0)
			idx_project_put(c->idx, (*out)[i].path, (*out)[i].id,
			                (*out)[i].default_branch, 0);
		cache_pid_note(c, (*out)[i].id, (*out)[i].path);
	}
	return r;
}

int cache_project_get(struct cache *c, const char *path, struct cache_project *out)
{
	struct cache_project p;
	int64_t at = 0;
	json_t *j = NULL;
	bool have;
	int r;

	if (!path || !path_is_safe(path, sizeof(out->path) - 1))
		return -EINVAL;
	memset(&p, 0, sizeof(p));
	have = idx_project_get(c->idx, path, &p.id, p.default_branch, sizeof(p.default_branch),
	                       &at) == 0;
	if (have) {
		strcpy(p.path, path);
		cache_pid_note(c, p.id, p.path);
		if (cache_fresh(at, c->list_ttl_ms)) {
			*out = p;
			return 0;
		}
	}
	r = gl_project_get(c->gl, path, &j);
	if (r == 0) {
		r = cache_project_parse(j, out);
		/* GitLab resolves paths case-insensitively; a filesystem must not show one
		 * project under several names */
		if (r == 0 && strcmp(out->path, path) != 0)
			r = -ENOENT;
		if (r == 0) {
			idx_project_put(c->idx, path, out->id, out->default_branch, cache_now_ms());
			cache_pid_note(c, out->id, out->path);
		}
	}
	json_decref(j);
	if (r == -EIO && have) {
		log_info("cache: server unavailable, using the cached project %s", path);
		*out = p;
		return 0;
	}
	if ((r == -ENOENT || r == -EACCES) && have)
		idx_project_del(c->idx, path);
	return r;
}

void cache_names_free(char **names, size_t n)
{
	if (!names)
		return;
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static int cache_names_copy(char **src, size_t n, char ***out)
{
	char **names = calloc(n + 1, sizeof(*names));

	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		names[i] = strdup(src[i]);
		if (!names[i]) {
			cache_names_free(names, i);
			return -ENOMEM;
		}
	}
	*out = names;
	return 0;
}

static struct cache_reflist *cache_reflist_find(struct cache *c, int64_t pid,
                                                enum cache_ref_kind kind)
{
	for (struct cache_reflist *l = c->reflists; l; l = l->next)
		if (l->project_id == pid && l->kind == kind)
			return l;
	return NULL;
}

/* Keeps the newest listing for (pid, kind); drops the oldest when there are too many. */
static void cache_reflist_store(struct cache *c, struct cache_reflist *nl)
{
	struct cache_reflist **pp, *oldest = NULL, **oldest_pp = NULL;

	for (pp = &c->reflists; *pp; pp = &(*pp)->next) {
		if ((*pp)->project_id == nl->project_id && (*pp)->kind == nl->kind) {
			struct cache_reflist *old = *pp;

			nl->next = old->next;
			*pp = nl;
			cache_reflist_free(old);
			return;
		}
		if (!oldest || (*pp)->at < oldest->at) {
			oldest = *pp;
			oldest_pp = pp;
		}
	}
	if (c->nreflists >= CACHE_REFLISTS_MAX && oldest_pp) {
		*oldest_pp = oldest->next;
		cache_reflist_free(oldest);
		c->nreflists--;
	}
	nl->next = c->reflists;
	c->reflists = nl;
	c->nreflists++;
}

struct cache_moved {
	char *name;
	char old[41], now[41];
};

/* Records the commit each listed ref names (GitLab's branch and tag lists carry
 * commit.id), so that cache_ref_peek and cache_ref_resolve answer without a request per
 * ref. A branch head that moved is reported as a lookup would; a tag already known keeps
 * its commit (tags are resolved once, for ever). */
static void cache_refs_record(struct cache *c, int64_t pid, enum cache_ref_kind kind, json_t *arr,
                              int64_t now)
{
	const char *prefix = kind == CACHE_REF_BRANCH ? "branch:" : "tag:";
	size_t count = json_array_size(arr), n = 0, nmoved = 0, i;
	struct idx_ref *refs = calloc(count ? count : 1, sizeof(*refs));
	struct cache_moved *moved = calloc(count ? count : 1, sizeof(*moved));
	char **keys = calloc(count ? count : 1, sizeof(*keys));
	json_t *it;

	if (!refs || !moved || !keys)
		goto out;
	json_array_foreach(arr, i, it)
	{
		const char *name = jsonx_str(it, "name");
		char commit[41], old[41];
		bool have;

		if (!name || !*name || strlen(name) > CACHE_REF_MAX ||
		    cache_ref_from_json(it, kind, commit) < 0)
			continue;
		if (asprintf(&keys[n], "%s%s", prefix, name) < 0) {
			keys[n] = NULL;
			break;
		}
		have = idx_ref_get(c->idx, pid, keys[n], old, NULL) == 0;
		if (kind == CACHE_REF_TAG && have) {
			free(keys[n]);
			keys[n] = NULL;
			continue;
		}
		if (kind == CACHE_REF_BRANCH && have && strcmp(old, commit) != 0 &&
		    (moved[nmoved].name = strdup(name))) {
			memcpy(moved[nmoved].old, old, 41);
			memcpy(moved[nmoved].now, commit, 41);
			nmoved++;
		}
		if (!have || strcmp(old, commit) != 0)
			cache_commit_time_note(c, commit, json_object_get(it, "commit"));
		refs[n].ref = keys[n];
		memcpy(refs[n].commit, commit, 41);
		n++;
	}
	if (idx_refs_put(c->idx, pid, refs, n, now) == 0)
		for (i = 0; i < nmoved; i++)
			cache_branch_moved(c, pid, moved[i].name, moved[i].old, moved[i].now);
out:
	for (i = 0; keys && i < n; i++)
		free(keys[i]);
	for (i = 0; moved && i < nmoved; i++)
		free(moved[i].name);
	free(keys);
	free(moved);
	free(refs);
}

int cache_ref_peek(struct cache *c, int64_t project_id, enum cache_ref_kind kind, const char *name,
                   char commit[41])
{
	static const char *const prefix[] = {"branch:", "tag:", "commit:"};
	char key[CACHE_REF_MAX + 16];
	size_t len;

	if (!name || (unsigned)kind > CACHE_REF_COMMIT)
		return -EINVAL;
	len = strlen(name);
	if (len == 0 || len > CACHE_REF_MAX)
		return -EINVAL;
	snprintf(key, sizeof(key), "%s%s", prefix[kind], name);
	return idx_ref_get(c->idx, project_id, key, commit, NULL) == 0 ? 0 : -ENOENT;
}

int cache_refs_list(struct cache *c, int64_t project_id, enum cache_ref_kind kind, char ***names,
                    size_t *n)
{
	struct cache_reflist *l, *nl = NULL;
	json_t *arr = NULL, *it;
	size_t i;
	int r;

	*names = NULL;
	*n = 0;
	if (kind != CACHE_REF_BRANCH && kind != CACHE_REF_TAG)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	l = cache_reflist_find(c, project_id, kind);
	if (l && cache_fresh(l->at, c->list_ttl_ms)) {
		r = cache_names_copy(l->names, l->n, names);
		if (r == 0)
			*n = l->n;
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	pthread_mutex_unlock(&c->lock);

	r = kind == CACHE_REF_BRANCH ? gl_branches_list(c->gl, project_id, &arr)
	                             : gl_tags_list(c->gl, project_id, &arr);
	if (r == 0) {
		nl = calloc(1, sizeof(*nl));
		if (nl)
			nl->names = calloc(json_array_size(arr) + 1, sizeof(char *));
		if (!nl || !nl->names)
			r = -ENOMEM;
	}
	if (r == 0) {
		nl->project_id = project_id;
		nl->kind = kind;
		nl->at = cache_now_ms();
		json_array_foreach(arr, i, it)
		{
			const char *name = jsonx_str(it, "name");

			if (!name || !*name || strlen(name) > CACHE_REF_MAX)
				continue;
			nl->names[nl->n] = strdup(name);
			if (!nl->names[nl->n]) {
				r = -ENOMEM;
				break;
			}
			nl->n++;
		}
	}
	if (r == 0)
		cache_refs_record(c, project_id, kind, arr, nl->at);
	json_decref(arr);
	pthread_mutex_lock(&c->lock);
	if (r == 0) {
		cache_reflist_store(c, nl);
		nl = NULL;
	}
	l = cache_reflist_find(c, project_id, kind);
	if (l && (r == 0 || r == -EIO)) {
		r = cache_names_copy(l->names, l->n, names);
		if (r == 0)
			*n = l->n;
	}
	pthread_mutex_unlock(&c->lock);
	cache_reflist_free(nl);
	return r;
}

static int cache_ref_from_json(const json_t *j, enum cache_ref_kind kind, char commit[41])
{
	const char *id = kind == CACHE_REF_COMMIT ? jsonx_str(j, "id")
	                                          : jsonx_str(json_object_get(j, "commit"), "id");

	if (!cache_oid_valid(id))
		return -EIO;
	memcpy(commit, id, 41);
	return 0;
}

/* The committer date the answer that named commit gave (commit JSON's committed_date):
 * what the revision shows as mtime, learned with no request of its own. */
static void cache_commit_time_note(struct cache *c, const char *commit, const json_t *cj)
{
	const char *date = jsonx_str(cj, "committed_date");
	int64_t ms = date ? time_parse_rfc3339(date) : -1;

	if (ms > 0)
		idx_commit_time_put(c->idx, commit, ms / 1000);
}

int cache_commit_time(struct cache *c, const char *commit, int64_t *when)
{
	*when = 0;
	if (!cache_oid_valid(commit))
		return -EINVAL;
	return idx_commit_time_get(c->idx, commit, when);
}

int cache_ref_resolve(struct cache *c, int64_t project_id, enum cache_ref_kind kind,
                      const char *name, char commit[41])
{
	static const char *const prefix[] = {"branch:", "tag:", "commit:"};
	char key[CACHE_REF_MAX + 16], old[41];
	int64_t at = 0;
	json_t *j = NULL;
	bool have;
	size_t len;
	int r;

	if (!name || (unsigned)kind > CACHE_REF_COMMIT)
		return -EINVAL;
	len = strlen(name);
	if (len == 0 || len > CACHE_REF_MAX)
		return -EINVAL;
	if (kind == CACHE_REF_COMMIT) {
		/* only hex: the commits endpoint would also resolve branch and tag names */
		for (size_t i = 0; i < len; i++)
			if (!((name[i] >= '0' && name[i] <= '9') ||
			      (name[i] >= 'a' && name[i] <= 'f')))
				return -ENOENT;
		if (len < 4 || len > 40)
			return -ENOENT;
	}
	snprintf(key, sizeof(key), "%s%s", prefix[kind], name);
	if (kind == CACHE_REF_BRANCH)
		cache_branch_touch(c, project_id, name);
	have = idx_ref_get(c->idx, project_id, key, old, &at) == 0;
	if (have && (kind != CACHE_REF_BRANCH || cache_fresh(at, c->branch_ttl_ms))) {
		memcpy(commit, old, 41);
		return 0;
	}
	switch (kind) {
	case CACHE_REF_BRANCH:
		r = gl_branch_get(c->gl, project_id, name, &j);
		break;
	case CACHE_REF_TAG:
		r = gl_tag_get(c->gl, project_id, name, &j);
		break;
	default:
		r = gl_commit_get(c->gl, project_id, name, &j);
		break;
	}
	if (r == 0)
		r = cache_ref_from_json(j, kind, commit);
	if (r == 0)
		cache_commit_time_note(c, commit,
		                       kind == CACHE_REF_COMMIT ? j : json_object_get(j, "commit"));
	json_decref(j);
	if (r == 0 && kind == CACHE_REF_COMMIT && strncmp(commit, name, len) != 0) {
		log_warn("cache: server resolved commit %s to %s", name, commit);
		r = -EIO;
	}
	if (r == 0) {
		idx_ref_put(c->idx, project_id, key, commit, cache_now_ms());
		if (kind == CACHE_REF_BRANCH && have && strcmp(old, commit) != 0)
			cache_branch_moved(c, project_id, name, old, commit);
		return 0;
	}
	if (r == -EIO && have) {
		/* offline: the last known head keeps serving */
		log_info("cache: server unavailable, branch %s stays at %.12s", name, old);
		memcpy(commit, old, 41);
		return 0;
	}
	return r;
}

static int cache_path_ok(const char *path)
{
	return path && (*path == '\0' || path_is_safe(path, CACHE_PATH_MAX - 1));
}

/* Lists (commit, path) from the server and stores it as a verified tree object. */
static int cache_tree_fetch(struct cache *c, int64_t pid, const char *commit, const char *path,
                            const char *expected, char tree_oid[41], struct tree_entry **out,
                            size_t *n)
{
	struct tree_entry *e = NULL;
	size_t count = 0;
	int r;

	__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
	r = gl_tree_list(c->gl, pid, commit, path, &e, &count);
	if (r < 0)
		return r;
	r = odb_tree_put(c->odb, expected, e, count, tree_oid);
	if (r == -EIO || r == -EINVAL) {
		log_error("cache: listing of %.12s:/%s does not match tree %s", commit, path,
		          expected ? expected : "(root)");
		r = -EIO;
	}
	if (r == 0) {
		r = idx_tree_put(c->idx, tree_oid, e, count);
		if (r < 0)
			log_warn("cache: cannot index tree %s: %s", tree_oid, strerror(-r));
		r = 0; /* the listing is good; the index only saves a request next time */
	}
	if (r < 0) {
		free(e);
		return r;
	}
	*out = e;
	*n = count;
	return 0;
}

static int cache_tree_lookup(struct cache *c, const char *tree_oid, struct tree_entry **out,
                             size_t *n)
{
	int r = idx_tree_get(c->idx, tree_oid, out, n);

	if (r == 0) {
		__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
		idx_sizes_fill(c->idx, *out, *n);
	}
	return r;
}

int cache_root_tree(struct cache *c, int64_t project_id, const char *commit, char tree_oid[41],
                    struct tree_entry **out, size_t *n)
{
	int r;

	*out = NULL;
	*n = 0;
	if (!cache_oid_valid(commit))
		return -EINVAL;
	if (idx_commit_get(c->idx, commit, tree_oid) == 0 &&
	    cache_tree_lookup(c, tree_oid, out, n) == 0)
		return 0;
	/* every tree of the commit in one request where the server speaks git's v2 */
	r = cache_bulk_root(c, project_id, commit, tree_oid);
	if (r == 0 && cache_tree_lookup(c, tree_oid, out, n) == 0) {
		__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
		return 0;
	}
	r = cache_tree_fetch(c, project_id, commit, "", NULL, tree_oid, out, n);
	if (r < 0)
		return r;
	r = idx_commit_put(c->idx, commit, tree_oid);
	if (r < 0)
		log_warn("cache: cannot index commit %s: %s", commit, strerror(-r));
	return 0;
}

int cache_tree(struct cache *c, int64_t project_id, const char *commit, const char *path,
               const char *tree_oid, struct tree_entry **out, size_t *n)
{
	char got[41];

	*out = NULL;
	*n = 0;
	if (!cache_oid_valid(commit) || !cache_oid_valid(tree_oid) || !cache_path_ok(path))
		return -EINVAL;
	if (cache_tree_lookup(c, tree_oid, out, n) == 0)
		return 0;
	/* the commit's trees were never fetched over git (its root came another way, or
	 * the index lost it): once over git, then this tree is indexed too */
	if (idx_commit_get(c->idx, commit, got) < 0 &&
	    cache_bulk_root(c, project_id, commit, got) == 0 &&
	    cache_tree_lookup(c, tree_oid, out, n) == 0)
		return 0;
	return cache_tree_fetch(c, project_id, commit, path, tree_oid, got, out, n);
}

struct cache_dl {
	struct cache *c;
	const char *oid;
	int64_t known; /* size from the index, or -1 */
	struct odb_writer *w;
};

static int cache_dl_begin(void *arg, int64_t content_length)
{
	struct cache_dl *d = arg;
	uint64_t size = ODB_SIZE_UNKNOWN;

	if (d->known >= 0 && content_length >= 0 && d->known != content_length) {
		log_error("cache: blob %s: server sends %" PRId64 " bytes, expected %" PRId64,
		          d->oid, content_length, d->known);
		return -EIO;
	}
	if (d->known >= 0)
		size = (uint64_t)d->known;
	else if (content_length >= 0)
		size = (uint64_t)content_length;
	return odb_writer_new(&d->w, d->c->odb, d->oid, size);
}

static int cache_dl_data(void *arg, const void *data, size_t len)
{
	struct cache_dl *d = arg;

	__atomic_add_fetch(&d->c->bytes_fetched, len, __ATOMIC_RELAXED);
	return d->w ? odb_writer_write(d->w, data, len) : -EIO;
}

/* Downloads one blob into the object store; verified before it becomes visible. */
static int cache_download(struct cache *c, int64_t pid, const char *oid)
{
	struct cache_dl d = {.c = c, .oid = oid, .known = -1};
	const struct gl_sink sink = {cache_dl_begin, cache_dl_data, &d};
	uint64_t size;
	int r;

	if (idx_size_get(c->idx, oid, &size) == 0 && size <= ODB_BLOB_MAX)
		d.known = (int64_t)size;
	__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
	/* room first: a reader must not meet a full disk because of the cache */
	cache_evict(c, d.known >= 0 ? (uint64_t)d.known : 0);
	pthread_mutex_lock(&c->lock);
	c->in_flight++;
	pthread_mutex_unlock(&c->lock);
	r = gl_blob_raw(c->gl, pid, oid, d.known >= 0 ? (uint64_t)d.known : ODB_BLOB_MAX, &sink);
	pthread_mutex_lock(&c->lock);
	c->in_flight--;
	pthread_mutex_unlock(&c->lock);
	if (r == 0 && !d.w)
		r = -EIO;
	if (r < 0) {
		odb_writer_abort(d.w);
		if (r == -EIO)
			cache_err_note(c, "blob %s: download failed", oid);
		return r;
	}
	r = odb_writer_commit(d.w);
	if (r == -EIO)
		cache_err_note(c, "blob %s from the server does not match its id; not cached", oid);
	if (r == 0) {
		uint64_t disk = 0;

		if (odb_disk_size(c->odb, ODB_KIND_BLOB, oid, &disk) == 0)
			cache_obj_note(c, ODB_KIND_BLOB, oid, disk);
	}
	return r;
}

static int cache_stream_wait(struct cache *c, enum odb_kind kind, const char *oid);

int cache_blob_open(struct cache *c, int64_t project_id, const char *oid, struct odb_blob **out)
{
	struct cache_inflight *f, **pp;
	bool owner = false;
	uint64_t size;
	int r;

	*out = NULL;
	if (!cache_oid_valid(oid))
		return -EINVAL;
	r = odb_blob_open(c->odb, oid, out);
	if (r != -ENOENT) {
		if (r == 0) {
			__atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
			cache_touch(c, ODB_KIND_BLOB, oid);
		}
		return r;
	}
	/* a large blob streaming to a reader right now: its outcome, not a second download */
	if (cache_stream_wait(c, ODB_KIND_BLOB, oid) == 0 && odb_blob_open(c->odb, oid, out) == 0)
		return 0;
	pthread_mutex_lock(&c->lock);
	for (f = c->inflight; f; f = f->next)
		if (strcmp(f->oid, oid) == 0)
			break;
	if (!f) {
		f = calloc(1, sizeof(*f));
		if (!f) {
			pthread_mutex_unlock(&c->lock);
			return -ENOMEM;
		}
		memcpy(f->oid, oid, 41);
		f->next = c->inflight;
		c->inflight = f;
		owner = true;
	}
	f->refs++;
	if (owner) {
		pthread_mutex_unlock(&c->lock);
		r = cache_download(c, project_id, oid);
		pthread_mutex_lock(&c->lock);
		f->done = true;
		f->result = r;
		pthread_cond_broadcast(&c->done);
	} else {
		while (!f->done)
			pthread_cond_wait(&c->done, &c->lock);
		r = f->result;
	}
	if (--f->refs == 0) {
		for (pp = &c->inflight; *pp != f; pp = &(*pp)->next)
			;
		*pp = f->next;
		free(f);
	}
	pthread_mutex_unlock(&c->lock);
	if (r < 0)
		return r;
	r = odb_blob_open(c->odb, oid, out);
	if (r == 0 && (idx_size_get(c->idx, oid, &size) < 0 || size != odb_blob_size(*out)))
		idx_size_put(c->idx, oid, odb_blob_size(*out)); /* a read is cheaper than a write */
	return r == -ENOENT ? -EIO : r;
}

int cache_blob_size(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, uint64_t *size)
{
	struct odb_blob *b;
	char got[41];
	int r;

	if (!cache_oid_valid(oid))
		return -EINVAL;
	if (idx_size_get(c->idx, oid, size) == 0)
		return 0;
	if (odb_blob_has(c->odb, oid) && odb_blob_open(c->odb, oid, &b) == 0) {
		*size = odb_blob_size(b);
		odb_blob_close(b);
		idx_size_put(c->idx, oid, *size);
		return 0;
	}
	/* the whole directory's sizes in a few requests, then this one from the index */
	if (commit && cache_oid_valid(commit) && path && path_is_safe(path, CACHE_PATH_MAX - 1) &&
	    cache_bulk_sizes(c, project_id, commit, path) == 0 &&
	    idx_size_get(c->idx, oid, size) == 0)
		return 0;
	if (commit && cache_oid_valid(commit) && path && path_is_safe(path, CACHE_PATH_MAX - 1)) {
		r = gl_file_head(c->gl, project_id, commit, path, got, size);
		if (r == 0 && strcmp(got, oid) != 0) {
			log_error("cache: %.12s:/%s is blob %s on the server, %s in its tree",
			          commit, path, got, oid);
			return -EIO;
		}
		if (r == 0) {
			idx_size_put(c->idx, oid, *size);
			return 0;
		}
		if (r == -EIO || r == -EACCES || r == -ENOMEM)
			return r;
	}
	/* no way to ask: fetch the blob itself (bounded memory: it streams to disk) */
	r = cache_blob_open(c, project_id, oid, &b);
	if (r < 0)
		return r;
	*size = odb_blob_size(b);
	odb_blob_close(b);
	return 0;
}

/* --- errors, access times, limit and eviction --- */

void cache_err_note(struct cache *c, const char *fmt, ...)
{
	struct cache_err *e;
	va_list ap;

	pthread_mutex_lock(&c->lock);
	e = &c->errs[c->errs_next];
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	e->at = cache_now_ms();
	c->errs_next = (c->errs_next + 1) % CACHE_ERRORS;
	if (c->nerrs < CACHE_ERRORS)
		c->nerrs++;
	log_error("cache: %s", e->msg);
	pthread_mutex_unlock(&c->lock);
}

static enum idx_obj_kind cache_idx_kind(enum odb_kind kind)
{
	return kind == ODB_KIND_LFS ? IDX_OBJ_LFS : IDX_OBJ_BLOB;
}

static void cache_touch_flush(struct cache *c)
{
	struct idx_obj batch[CACHE_TOUCH_MAX];
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->nputs;
	memcpy(batch, c->puts, n * sizeof(batch[0]));
	c->nputs = 0;
	pthread_mutex_unlock(&c->lock);
	/* records first: an access to a record still pending then raises its time */
	if (n)
		idx_obj_put_many(c->idx, batch, n);
	pthread_mutex_lock(&c->lock);
	n = c->ntouch;
	memcpy(batch, c->touch, n * sizeof(batch[0]));
	c->ntouch = 0;
	pthread_mutex_unlock(&c->lock);
	if (n)
		idx_obj_touch(c->idx, batch, n);
}

/* Queues the record of an object just stored (size on disk, accessed now). */
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size)
{
	bool full;

	pthread_mutex_lock(&c->lock);
	if (c->nputs == CACHE_TOUCH_MAX) {
		pthread_mutex_unlock(&c->lock);
		cache_touch_flush(c);
		pthread_mutex_lock(&c->lock);
	}
	if (c->nputs < CACHE_TOUCH_MAX) {
		struct idx_obj *t = &c->puts[c->nputs++];

		t->kind = cache_idx_kind(kind);
		snprintf(t->oid, sizeof(t->oid), "%s", oid);
		t->atime = cache_now_ms();
		t->size = size;
		full = false;
	} else {
		full = true; /* filled again meanwhile: write this one alone */
	}
	pthread_mutex_unlock(&c->lock);
	if (full)
		idx_obj_put(c->idx, cache_idx_kind(kind), oid, size, cache_now_ms());
}

/* Records an access for LRU; written to the index in batches, not per read. */
static void cache_touch(struct cache *c, enum odb_kind kind, const char *oid)
{
	bool full;

	pthread_mutex_lock(&c->lock);
	if (c->ntouch < CACHE_TOUCH_MAX) {
		struct idx_obj *t = &c->touch[c->ntouch++];

		t->kind = cache_idx_kind(kind);
		snprintf(t->oid, sizeof(t->oid), "%s", oid);
		t->atime = cache_now_ms();
		t->size = 0;
	}
	full = c->ntouch == CACHE_TOUCH_MAX;
	pthread_mutex_unlock(&c->lock);
	if (full)
		cache_touch_flush(c);
}

static unsigned cache_live_hash(enum odb_kind kind, const char *oid)
{
	unsigned h = (unsigned)kind * 31u;

	for (int i = 0; i < 8 && oid[i]; i++)
		h = h * 131u + (unsigned char)oid[i];
	return h % CACHE_LIVE_BUCKETS;
}

/* lock held */
static struct cache_live *cache_live_find(struct cache *c, enum odb_kind kind, const char *oid)
{
	for (struct cache_live *l = c->live[cache_live_hash(kind, oid)]; l; l = l->next)
		if (l->kind == kind && strcmp(l->oid, oid) == 0)
			return l;
	return NULL;
}

/* lock held */
static struct cache_live *cache_live_get(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l = cache_live_find(c, kind, oid);
	unsigned h;

	if (l)
		return l;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->kind = kind;
	snprintf(l->oid, sizeof(l->oid), "%s", oid);
	h = cache_live_hash(kind, oid);
	l->next = c->live[h];
	c->live[h] = l;
	return l;
}

/* Drops the record when nobody has it open or in flight (lock held). */
static void cache_live_settle(struct cache *c, struct cache_live *l)
{
	struct cache_live **pp;

	if (l->opens || l->s || l->starting)
		return;
	for (pp = &c->live[cache_live_hash(l->kind, l->oid)]; *pp && *pp != l; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = l->next;
	free(l);
}

static bool cache_is_live(struct cache *c, enum odb_kind kind, const char *oid)
{
	bool live;

	pthread_mutex_lock(&c->lock);
	live = cache_live_find(c, kind, oid) != NULL;
	pthread_mutex_unlock(&c->lock);
	return live;
}

/* Waits for a download of this object in progress; -ENOENT when there is none. */
static int cache_stream_wait(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l;
	struct stream *s = NULL;
	int r;

	pthread_mutex_lock(&c->lock);
	l = cache_live_find(c, kind, oid);
	if (l && l->s) {
		s = l->s;
		stream_ref(s);
	}
	pthread_mutex_unlock(&c->lock);
	if (!s)
		return -ENOENT;
	r = stream_wait(s);
	stream_unref(s);
	return r;
}

int cache_limit_parse(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'K':
	case 'k':
		shift = 10;
		break;
	case 'M':
	case 'm':
		shift = 20;
		break;
	case 'G':
	case 'g':
		shift = 30;
		break;
	case 'T':
	case 't':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*end && end[1] != '\0')
		return -EINVAL;
	if (v == 0 || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int cache_set_limit(struct cache *c, uint64_t limit)
{
	if (limit == 0) {
		struct statvfs sv;
		uint64_t free_bytes = 0;

		if (statvfs(c->dir, &sv) == 0)
			free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
		limit = free_bytes / 100 * CACHE_LIMIT_DEFAULT_PCT;
		if (limit < CACHE_LIMIT_MIN)
			limit = CACHE_LIMIT_MIN;
	}
	__atomic_store_n(&c->limit, limit, __ATOMIC_RELAXED);
	if (c->maint_started) /* at cache_new the maintenance thread evicts */
		cache_evict(c, 0);
	return 0;
}

/* Bytes that downloads in progress will store: counted against the limit before they
 * arrive. A verified one is being published and is counted by the store from then on
 * (briefly by neither: the limit may be passed by what is in flight, never more). */
static uint64_t cache_reserved(struct cache *c)
{
	uint64_t sum = 0;

	pthread_mutex_lock(&c->lock);
	for (size_t b = 0; b < CACHE_LIVE_BUCKETS; b++)
		for (struct cache_live *l = c->live[b]; l; l = l->next)
			if (l->s && l->reserve && stream_state(l->s) == 0)
				sum += l->reserve;
	pthread_mutex_unlock(&c->lock);
	return sum;
}

/* Evicts least recently used objects nobody has open until what is stored, what is
 * being downloaded to keep and need fit under the limit (to 95 % of it, so that a
 * sequence of misses does not evict at every one). 0 when they fit, -ENOSPC when what
 * is open or in flight alone is too much. */
int cache_evict(struct cache *c, uint64_t need)
{
	uint64_t limit = __atomic_load_n(&c->limit, __ATOMIC_RELAXED), bytes = 0, objects = 0;
	uint64_t reserved, target;
	struct idx_obj *list = NULL;
	size_t n = 0, dropped = 0;
	int r = 0;

	pthread_mutex_lock(&c->evict_lock);
	odb_usage(c->odb, &bytes, &objects);
	reserved = cache_reserved(c);
	if (bytes + reserved + need <= limit)
		goto out;
	cache_touch_flush(c);
	target = limit / 100 * 95;
	target = target > reserved + need ? target - reserved - need : 0;
	r = idx_obj_list(c->idx, &list, &n);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < n && bytes > target; i++) {
		enum odb_kind kind = list[i].kind == IDX_OBJ_LFS ? ODB_KIND_LFS : ODB_KIND_BLOB;
		uint64_t freed = 0;

		if (cache_is_live(c, kind, list[i].oid))
			continue;
		odb_remove(c->odb, kind, list[i].oid, &freed);
		idx_obj_del(c->idx, list[i].kind, list[i].oid);
		bytes = bytes > freed ? bytes - freed : 0;
		dropped++;
	}
	odb_usage(c->odb, &bytes, &objects);
	if (dropped)
		log_info("cache: evicted %zu objects, %" PRIu64 " bytes stored (limit %" PRIu64 ")",
		         dropped, bytes, limit);
	r = bytes + reserved + need <= limit ? 0 : -ENOSPC;
out:
	pthread_mutex_unlock(&c->evict_lock);
	free(list);
	return r;
}

/* --- LFS and streaming objects --- */

static void cache_pid_note(struct cache *c, int64_t id, const char *path)
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
static int cache_attrs_lfs(struct cache *c, int64_t project_id, const struct tree_entry *e,
                           size_t n)
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

struct cache_obj {
	struct cache *c;
	enum odb_kind kind;
	char oid[65];
	bool lfs;
	uint64_t size;
	struct odb_blob *blob; /* stored and verified */
	struct stream *s;      /* or streaming */
	/* A git blob of known size is fetched (stored whole when small, streamed when large)
	 * at its first read, not at open: an open that is never read costs no request. */
	bool lazy;
	bool ready; /* __atomic: a lazy object's blob or s is set */
	int64_t pid;
	char commit[41]; /* where a lazy small blob sits, so its first read can bring its */
	char *path;      /* directory's small files along (cache_bulk_blobs); or NULL */
	pthread_mutex_t load_lock;
};

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

static int cache_src_fetch(void *arg, uint64_t off, const struct gl_stream_sink *sink)
{
	struct cache_src *src = arg;
	struct cache *c = src->c;
	char project[1024];
	int r = 0;

	pthread_mutex_lock(&src->lock);
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

static void cache_src_free(void *arg)
{
	struct cache_src *src = arg;

	gl_target_free(&src->t);
	pthread_mutex_destroy(&src->lock);
	free(src);
}

static void cache_stream_done(void *arg, struct stream *s, int result, const char *reason)
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

static int cache_room(void *arg, uint64_t bytes)
{
	struct cache_src *src = arg;

	return cache_evict(src->c, bytes) == 0 ? 0 : -ENOSPC;
}

/* Starts the shared download of a large object (l->starting set by the caller). */
static int cache_stream_start(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
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

		r = cache_pid_path(c, pid, project);
		if (r == 0)
			r = gl_lfs_target(c->gl, project, oid, size, &src->t);
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
static int cache_obj_attach(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
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

static int cache_obj_get(struct cache *c, int64_t pid, enum odb_kind kind, const char *oid,
                         int64_t size, struct cache_obj *o)
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
static int cache_lfs_confirm(struct cache *c, int64_t pid, const char *oid,
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
	log_error("cache: blob %s is not the LFS pointer the server described; its verdict is "
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
		 * come with it, in one request (cache_obj_load) */
		if (commit && path && known >= 0 && (uint64_t)known < ODB_RAW_THRESHOLD) {
			memcpy(o->commit, commit, 41);
			o->path = strdup(path);
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
static int cache_obj_load(struct cache_obj *o)
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

/* --- prefetch --- */

/* lock held */
static int cache_job_push(struct cache *c, int64_t pid, const char *commit, const char *path,
                          const char *oid, bool tree)
{
	struct cache_job *j;

	if (c->njobs >= CACHE_JOBS_MAX)
		return -EAGAIN;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->path = strdup(path))) {
		free(j);
		return -ENOMEM;
	}
	j->pid = pid;
	memcpy(j->commit, commit, 41);
	memcpy(j->oid, oid, 41);
	j->tree = tree;
	if (c->jobs_tail)
		c->jobs_tail->next = j;
	else
		c->jobs = j;
	c->jobs_tail = j;
	c->njobs++;
	pthread_cond_signal(&c->jobs_cond);
	return 0;
}

static void cache_job_run(struct cache *c, struct cache_job *j)
{
	struct tree_entry *e = NULL;
	struct cache_obj *o = NULL;
	size_t n = 0, dropped = 0;
	char child[CACHE_PATH_MAX];
	int r;

	if (!j->tree) {
		r = cache_obj_open(c, j->pid, j->commit, j->path, j->oid, &o);
		if (r == 0)
			r = cache_obj_load(o);
		if (r == 0 && o->s)
			r = stream_wait(o->s);
		cache_obj_close(o);
		if (r < 0 && r != -EIO) /* EIO was noted where it happened */
			cache_err_note(c, "prefetch of %s: %s", j->path, strerror(-r));
		return;
	}
	r = cache_tree(c, j->pid, j->commit, j->path, j->oid, &e, &n);
	if (r < 0) {
		cache_err_note(c, "prefetch of %s/: %s", j->path, strerror(-r));
		return;
	}
	/* the directory's small files in one request before their jobs find them cached */
	cache_bulk_blobs(c, j->pid, j->commit, j->path, NULL);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < n && !c->stop; i++) {
		bool tree = e[i].mode == TREE_MODE_DIR;

		if (!tree && e[i].mode != TREE_MODE_FILE && e[i].mode != TREE_MODE_EXEC)
			continue;
		if (snprintf(child, sizeof(child), "%s%s%s", j->path, *j->path ? "/" : "",
		             e[i].name) >= (int)sizeof(child))
			continue;
		if (cache_job_push(c, j->pid, j->commit, child, e[i].oid, tree) < 0)
			dropped++;
	}
	pthread_mutex_unlock(&c->lock);
	if (dropped)
		cache_err_note(c, "prefetch of %s/: queue full, %zu entries skipped", j->path,
		               dropped);
	free(e);
}

static void *cache_worker_main(void *arg)
{
	struct cache *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct cache_job *j;

		while (!c->stop && !c->jobs)
			pthread_cond_wait(&c->jobs_cond, &c->lock);
		if (c->stop)
			break;
		j = c->jobs;
		c->jobs = j->next;
		if (!c->jobs)
			c->jobs_tail = NULL;
		c->njobs--;
		c->busy_workers++;
		pthread_mutex_unlock(&c->lock);
		cache_job_run(c, j);
		free(j->path);
		free(j);
		pthread_mutex_lock(&c->lock);
		c->busy_workers--;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int cache_prefetch(struct cache *c, int64_t project_id, const char *commit, const char *path,
                   const char *tree_oid)
{
	int r = 0;

	if (!cache_oid_valid(commit) || !cache_oid_valid(tree_oid) || !cache_path_ok(path))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (!c->workers) {
		c->workers = calloc(c->nworkers, sizeof(*c->workers));
		if (!c->workers) {
			r = -ENOMEM;
		} else {
			for (unsigned i = 0; i < c->nworkers && r == 0; i++) {
				r = -pthread_create(&c->workers[i], NULL, cache_worker_main, c);
				if (r < 0) {
					/* fewer workers than asked: the ones started serve */
					c->nworkers = i;
					r = i ? 0 : r;
				}
			}
			if (r < 0) {
				free(c->workers);
				c->workers = NULL;
			}
		}
	}
	if (r == 0)
		r = cache_job_push(c, project_id, commit, path, tree_oid, true);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Number of prefetch jobs queued or running (for tests and status). */
static size_t cache_jobs_pending(struct cache *c)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->njobs + c->busy_workers;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* --- forget, refresh --- */

/* A verified download nobody reads any more is being stored: let it finish, so that
 * forgetting right after a read to the end finds the object (it is in flight only for
 * the time of its fsync and rename). */
static void cache_forget_settle(struct cache *c, enum odb_kind kind, const char *oid)
{
	struct cache_live *l;
	struct stream *s = NULL;

	pthread_mutex_lock(&c->lock);
	l = cache_live_find(c, kind, oid);
	if (l && !l->opens && l->s && stream_state(l->s) == 1) {
		s = l->s;
		stream_ref(s);
	}
	pthread_mutex_unlock(&c->lock);
	if (s) {
		stream_wait(s);
		stream_unref(s);
	}
}

static int cache_forget_blob(struct cache *c, const char *oid)
{
	struct idx_lfs l;
	uint64_t freed;
	int n = 0;

	cache_forget_settle(c, ODB_KIND_BLOB, oid);
	if (idx_lfs_get(c->idx, oid, &l) == 0 && l.lfs)
		cache_forget_settle(c, ODB_KIND_LFS, l.oid);

	if (idx_lfs_get(c->idx, oid, &l) == 0 && l.lfs && !cache_is_live(c, ODB_KIND_LFS, l.oid) &&
	    odb_remove(c->odb, ODB_KIND_LFS, l.oid, &freed) == 0) {
		idx_obj_del(c->idx, IDX_OBJ_LFS, l.oid);
		n++;
	}
	if (!cache_is_live(c, ODB_KIND_BLOB, oid) &&
	    odb_remove(c->odb, ODB_KIND_BLOB, oid, &freed) == 0) {
		idx_obj_del(c->idx, IDX_OBJ_BLOB, oid);
		n++;
	}
	return n;
}

int cache_forget(struct cache *c, int64_t project_id, const char *oid, bool is_tree)
{
	char(*queue)[41] = NULL;
	size_t head = 0, tail = 0, cap = 0, visited = 0;
	int count = 0;

	(void)project_id;
	if (!cache_oid_valid(oid))
		return -EINVAL;
	cache_touch_flush(c); /* a pending record must not outlive its object */
	if (!is_tree)
		return cache_forget_blob(c, oid);
	/* breadth first over the listings the index holds; what was never listed was never
	 * downloaded through them */
	cap = 64;
	queue = malloc(cap * sizeof(*queue));
	if (!queue)
		return -ENOMEM;
	memcpy(queue[tail++], oid, 41);
	while (head < tail && visited < CACHE_WALK_MAX) {
		struct tree_entry *e = NULL;
		size_t n = 0;
		char cur[41];

		memcpy(cur, queue[head++], 41);
		if (idx_tree_get(c->idx, cur, &e, &n) < 0)
			continue;
		for (size_t i = 0; i < n; i++, visited++) {
			if (e[i].mode == TREE_MODE_DIR) {
				if (tail == cap) {
					char(*nq)[41] = realloc(queue, cap * 2 * sizeof(*queue));

					if (!nq)
						continue;
					queue = nq;
					cap *= 2;
				}
				memcpy(queue[tail++], e[i].oid, 41);
			} else if (e[i].mode != TREE_MODE_SUBMODULE) {
				count += cache_forget_blob(c, e[i].oid);
			}
		}
		free(e);
	}
	free(queue);
	return count;
}

void cache_refresh(struct cache *c)
{
	pthread_mutex_lock(&c->lock);
	/* +1: what was fetched in this very millisecond is stale too */
	__atomic_store_n(&c->refresh_at, cache_now_ms() + 1, __ATOMIC_RELAXED);
	c->have_projects = false;
	for (struct cache_branch *b = c->branches; b; b = b->next)
		b->next_poll = 0;
	pthread_cond_broadcast(&c->maint_cond);
	pthread_mutex_unlock(&c->lock);
}

/* --- branches that move --- */

/* Set on a thread while it runs the callback: replacing the callback from inside it must
 * not wait for itself. */
static __thread unsigned cache_in_moved_fn;

void cache_on_branch_moved(struct cache *c, cache_branch_moved_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->moved_fn = fn;
	c->moved_arg = arg;
	/* a call that began with the old callback finishes before its owner may go away */
	while (c->moved_running > cache_in_moved_fn)
		pthread_cond_wait(&c->moved_idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

static void cache_branch_moved(struct cache *c, int64_t pid, const char *name, const char *old,
                               const char *now)
{
	cache_branch_moved_fn fn;
	void *arg;

	log_info("cache: branch %s of project %" PRId64 " moved %.12s -> %.12s", name, pid,
	         old && *old ? old : "?", now && *now ? now : "(gone)");
	pthread_mutex_lock(&c->lock);
	fn = c->moved_fn;
	arg = c->moved_arg;
	if (fn)
		c->moved_running++;
	pthread_mutex_unlock(&c->lock);
	if (!fn)
		return;
	cache_in_moved_fn++;
	fn(arg, pid, name, old ? old : "", now ? now : "");
	cache_in_moved_fn--;
	pthread_mutex_lock(&c->lock);
	c->moved_running--;
	pthread_cond_broadcast(&c->moved_idle);
	pthread_mutex_unlock(&c->lock);
}

void cache_branch_touch(struct cache *c, int64_t project_id, const char *branch)
{
	struct cache_branch *b, *oldest = NULL, **pp, **oldest_pp = NULL;
	int64_t now = cache_now_ms();

	if (!branch || !*branch || strlen(branch) > CACHE_REF_MAX)
		return;
	pthread_mutex_lock(&c->lock);
	for (pp = &c->branches; (b = *pp); pp = &b->next) {
		if (b->pid == project_id && strcmp(b->name, branch) == 0) {
			b->touched = now;
			pthread_mutex_unlock(&c->lock);
			return;
		}
		if (!oldest || b->touched < oldest->touched) {
			oldest = b;
			oldest_pp = pp;
		}
	}
	if (c->nbranches >= CACHE_BRANCHES_MAX && oldest_pp) {
		*oldest_pp = oldest->next;
		free(oldest);
		c->nbranches--;
	}
	b = calloc(1, sizeof(*b));
	if (b) {
		b->pid = project_id;
		snprintf(b->name, sizeof(b->name), "%s", branch);
		b->touched = now;
		b->next_poll = now + c->poll_ms;
		b->next = c->branches;
		c->branches = b;
		c->nbranches++;
	}
	pthread_mutex_unlock(&c->lock);
}

struct cache_poll {
	int64_t pid;
	char name[CACHE_REF_MAX + 1];
};

/* Re-asks the heads of branches in use that are due, at most CACHE_POLL_BATCH. */
static void cache_poll_branches(struct cache *c)
{
	struct cache_poll due[CACHE_POLL_BATCH];
	size_t n = 0;
	int64_t now = cache_now_ms();

	if (now < gl_retry_until(c->gl))
		return; /* the server asked us to wait (429 Retry-After) */
	pthread_mutex_lock(&c->lock);
	for (struct cache_branch *b = c->branches; b && n < CACHE_POLL_BATCH; b = b->next) {
		if (now - b->touched > CACHE_BRANCH_IDLE_MS || b->next_poll > now)
			continue;
		due[n].pid = b->pid;
		snprintf(due[n].name, sizeof(due[n].name), "%s", b->name);
		n++;
		b->next_poll = now + c->poll_ms; /* at the end of the queue until answered */
	}
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < n && !c->stop; i++) {
		char key[CACHE_REF_MAX + 16], old[41] = "", commit[41];
		json_t *j = NULL;
		bool have;
		int r;

		if (cache_now_ms() < gl_retry_until(c->gl))
			break;
		snprintf(key, sizeof(key), "branch:%s", due[i].name);
		have = idx_ref_get(c->idx, due[i].pid, key, old, NULL) == 0;
		__atomic_add_fetch(&c->polls, 1, __ATOMIC_RELAXED);
		r = gl_branch_get(c->gl, due[i].pid, due[i].name, &j);
		if (r == 0)
			r = cache_ref_from_json(j, CACHE_REF_BRANCH, commit);
		if (r == 0 && (!have || strcmp(old, commit) != 0))
			cache_commit_time_note(c, commit, json_object_get(j, "commit"));
		json_decref(j);
		pthread_mutex_lock(&c->lock);
		for (struct cache_branch *b = c->branches; b; b = b->next) {
			if (b->pid != due[i].pid || strcmp(b->name, due[i].name) != 0)
				continue;
			if (r == 0 || r == -ENOENT) {
				b->backoff_ms = 0;
			} else {
				b->backoff_ms = b->backoff_ms ? b->backoff_ms * 2 : c->poll_ms * 2;
				if (b->backoff_ms > CACHE_BACKOFF_MAX)
					b->backoff_ms = CACHE_BACKOFF_MAX;
				b->next_poll = cache_now_ms() + b->backoff_ms;
			}
		}
		pthread_mutex_unlock(&c->lock);
		if (r == 0) {
			idx_ref_put(c->idx, due[i].pid, key, commit, cache_now_ms());
			if (have && strcmp(old, commit) != 0)
				cache_branch_moved(c, due[i].pid, due[i].name, old, commit);
		} else if (r == -ENOENT && have) {
			/* deleted: the next lookup asks the server and gets its 404 */
			idx_ref_put(c->idx, due[i].pid, key, old, 0);
			cache_branch_moved(c, due[i].pid, due[i].name, old, "");
		}
	}
}

/* Objects on disk the index does not know (a crash between store and index, an older
 * cache) get a record as least recently used, so the limit covers them too. */
static int cache_reconcile_one(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes)
{
	struct cache *c = arg;
	struct idx_obj o;

	if (c->stop)
		return -ECANCELED;
	if (idx_obj_get(c->idx, cache_idx_kind(kind), oid, &o) == 0)
		return 0;
	idx_obj_put(c->idx, cache_idx_kind(kind), oid, bytes, 0);
	return 0;
}

static void *cache_maint_main(void *arg)
{
	struct cache *c = arg;

	odb_foreach(c->odb, cache_reconcile_one, c);
	cache_evict(c, 0);
	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		struct timespec ts;
		unsigned wait_ms = c->poll_ms < 1000 ? c->poll_ms : 1000;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += wait_ms / 1000;
		ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&c->maint_cond, &c->lock, &ts);
		if (c->stop)
			break;
		pthread_mutex_unlock(&c->lock);
		cache_touch_flush(c);
		cache_poll_branches(c);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* --- status --- */

int cache_stats(struct cache *c, json_t **out)
{
	uint64_t bytes = 0, objects = 0, requests, errors, hits, misses, fetched;
	json_t *j, *errs;
	unsigned in_flight;
	size_t pending;

	odb_usage(c->odb, &bytes, &objects);
	gl_counters(c->gl, &requests, &errors);
	hits = __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
	misses = __atomic_load_n(&c->misses, __ATOMIC_RELAXED);
	fetched = __atomic_load_n(&c->bytes_fetched, __ATOMIC_RELAXED);
	pending = cache_jobs_pending(c);
	errs = json_array();
	if (!errs)
		return -ENOMEM;
	pthread_mutex_lock(&c->lock);
	in_flight = c->in_flight;
	for (size_t b = 0; b < CACHE_LIVE_BUCKETS; b++)
		for (struct cache_live *l = c->live[b]; l; l = l->next)
			if (l->s)
				fetched += stream_fetched(l->s);
	for (size_t i = 0; i < c->nerrs; i++) {
		size_t k = (c->errs_next + CACHE_ERRORS - c->nerrs + i) % CACHE_ERRORS;

		json_array_append_new(errs, json_pack("{s:I,s:s}", "time",
		                                      (json_int_t)(c->errs[k].at / 1000), "message",
		                                      c->errs[k].msg));
	}
	pthread_mutex_unlock(&c->lock);
	j = json_pack(
	    "{s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "bytes", (json_int_t)bytes,
	    "objects", (json_int_t)objects, "limit",
	    (json_int_t)__atomic_load_n(&c->limit, __ATOMIC_RELAXED), "hits", (json_int_t)hits,
	    "misses", (json_int_t)misses, "hit_ratio",
	    hits + misses ? (double)hits / (double)(hits + misses) : 0.0, "requests",
	    (json_int_t)requests, "errors", (json_int_t)errors, "in_flight", (json_int_t)in_flight,
	    "bytes_fetched", (json_int_t)fetched, "prefetch_pending", (json_int_t)pending, "polls",
	    (json_int_t)__atomic_load_n(&c->polls, __ATOMIC_RELAXED), "last_errors", errs);
	if (j && json_object_set_new(j, "connections",
	                             json_integer((json_int_t)gl_connections(c->gl))) < 0) {
		json_decref(j);
		j = NULL;
	}
	if (j && cache_bulk_stats(c, j) < 0) {
		json_decref(j);
		j = NULL;
	}
	if (!j)
		return -ENOMEM;
	*out = j;
	return 0;
}
