/* The caching layer of reefd: see daemon/cache.h and docs/cache.md.
 *
 * GitLab lists trees by (ref, path), not by tree id, and its commit JSON carries no tree
 * id. So the root tree of a commit is the listing of (commit, ""), rebuilt into a git
 * tree object whose id we compute (and remember as commit -> tree); a subtree is the
 * listing of (commit, path), accepted only when the tree object rebuilt from it hashes
 * to the id its parent listing gave, and then cached by that id for ever. */
#include "cache.h"

#include <errno.h>
#include <limits.h>
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
void cache_obj_note(struct cache *c, enum odb_kind kind, const char *oid, uint64_t size);

int64_t cache_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool cache_fresh_at(int64_t at, unsigned ttl_ms)
{
	int64_t now = cache_now_ms();

	return now >= at && now - at < (int64_t)ttl_ms;
}

/* Fresh within ttl and not older than the last cache_refresh. */
#define cache_fresh(at, ttl)                                                                       \
	(cache_fresh_at((at), (ttl)) && (at) > __atomic_load_n(&c->refresh_at, __ATOMIC_RELAXED))

bool cache_oid_valid(const char *oid)
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
	gl_set_err_hook(c->gl, cache_err_hook, c);
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
	cache_bulk_stop(c);
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

int cache_check(struct cache *c, char *why, size_t n)
{
	json_t *u = NULL;
	int r = gl_user_why(c->gl, &u, why, n);

	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	if (!c->user)
		c->user = json_incref(u);
	pthread_mutex_unlock(&c->lock);
	json_decref(u);
	return 0;
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
int cache_project_parse(const json_t *j, struct cache_project *p)
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

/* The member projects' listing is kept on disk too (projects.json in the cache), so a
 * mount started while the server is down still finds its namespaces and projects. */
#define CACHE_PROJECTS_FILE_MAX ((size_t)64 << 20)

static void cache_projects_save(struct cache *c, const struct cache_project *list, size_t n)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	json_t *arr = json_array();

	if (!arr)
		return;
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)list[i].id,
		                                     "path_with_namespace", list[i].path,
		                                     "default_branch", list[i].default_branch));
	snprintf(path, sizeof(path), "%s/projects.json", c->dir);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(arr, tmp, JSON_COMPACT) == 0) {
		if (rename(tmp, path) < 0)
			unlink(tmp);
	} else {
		unlink(tmp);
	}
	json_decref(arr);
}

static int cache_projects_load(struct cache *c, struct cache_project **out, size_t *n)
{
	char path[PATH_MAX];
	struct stat st;
	json_t *arr = NULL, *it;
	size_t i, count = 0;
	char *data;
	FILE *f;
	int r = -EIO;

	snprintf(path, sizeof(path), "%s/projects.json", c->dir);
	f = fopen(path, "re");
	if (!f)
		return -EIO;
	if (fstat(fileno(f), &st) < 0 || st.st_size <= 0 ||
	    (size_t)st.st_size > CACHE_PROJECTS_FILE_MAX) {
		fclose(f);
		return -EIO;
	}
	data = malloc((size_t)st.st_size);
	if (data && fread(data, 1, (size_t)st.st_size, f) == (size_t)st.st_size &&
	    jsonx_parse(&arr, data, (size_t)st.st_size, 0, CACHE_PROJECTS_FILE_MAX) == 0 &&
	    json_is_array(arr)) {
		*out = calloc(json_array_size(arr) + 1, sizeof(**out));
		if (*out) {
			json_array_foreach(arr, i, it)
			{
				if (cache_project_parse(it, &(*out)[count]) == 0 &&
				    path_is_safe((*out)[count].path,
				                 sizeof((*out)[count].path) - 1))
					count++;
			}
			*n = count;
			r = 0;
		}
	}
	json_decref(arr);
	free(data);
	fclose(f);
	return r;
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
	if (r == 0)
		cache_projects_save(c, list, count);
	now = cache_now_ms();
	pthread_mutex_lock(&c->lock);
	if (r == -EIO && !c->have_projects) {
		struct cache_project *saved = NULL;
		size_t nsaved = 0;

		/* offline since the mount began: the listing of an earlier mount, stale so that
		 * the next lookup asks the server again */
		pthread_mutex_unlock(&c->lock);
		if (cache_projects_load(c, &saved, &nsaved) == 0) {
			log_info("cache: server unavailable, listing the %zu projects cached",
			         nsaved);
			pthread_mutex_lock(&c->lock);
			if (!c->have_projects) {
				c->projects = saved;
				c->nprojects = nsaved;
				c->projects_at = 0;
				c->have_projects = true;
				saved = NULL;
			}
			pthread_mutex_unlock(&c->lock);
			free(saved);
		}
		pthread_mutex_lock(&c->lock);
	}
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

int cache_ref_from_json(const json_t *j, enum cache_ref_kind kind, char commit[41])
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
void cache_commit_time_note(struct cache *c, const char *commit, const json_t *cj)
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

int cache_path_ok(const char *path)
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
		cache_err_note(c, "listing of %.12s:/%s does not match tree %s; not cached", commit,
		               path, expected ? expected : "(root)");
		r = -EIO;
	}
	if (r == 0) {
		r = idx_tree_put(c->idx, tree_oid, e, count);
		if (r < 0)
			cache_err_note(c, "cannot index tree %s: %s", tree_oid, strerror(-r));
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
	/* every tree of the commit in one request where the server speaks git's v2, once
	 * the commit is walked (cache_bulk_trees_now); a path looked up alone lists less */
	if (cache_bulk_trees_now(c, commit) &&
	    cache_bulk_root(c, project_id, commit, tree_oid) == 0 &&
	    cache_tree_lookup(c, tree_oid, out, n) == 0) {
		__atomic_add_fetch(&c->misses, 1, __ATOMIC_RELAXED);
		return 0;
	}
	r = cache_tree_fetch(c, project_id, commit, "", NULL, tree_oid, out, n);
	if (r < 0)
		return r;
	cache_bulk_listed(c, project_id, commit, *n);
	r = idx_commit_put(c->idx, commit, tree_oid);
	if (r < 0)
		cache_err_note(c, "cannot index commit %s: %s", commit, strerror(-r));
	return 0;
}

int cache_tree(struct cache *c, int64_t project_id, const char *commit, const char *path,
               const char *tree_oid, struct tree_entry **out, size_t *n)
{
	char got[41];
	int r;

	*out = NULL;
	*n = 0;
	if (!cache_oid_valid(commit) || !cache_oid_valid(tree_oid) || !cache_path_ok(path))
		return -EINVAL;
	if (cache_tree_lookup(c, tree_oid, out, n) == 0) {
		cache_bulk_listing(c, project_id, commit, path); /* the next sizes, maybe */
		return 0;
	}
	/* a walk over the commit: every tree in one git fetch, this one with them */
	if (cache_bulk_trees_now(c, commit) && cache_bulk_root(c, project_id, commit, got) == 0 &&
	    cache_tree_lookup(c, tree_oid, out, n) == 0) {
		cache_bulk_listing(c, project_id, commit, path);
		return 0;
	}
	r = cache_tree_fetch(c, project_id, commit, path, tree_oid, got, out, n);
	if (r == 0)
		cache_bulk_listed(c, project_id, commit, *n);
	return r;
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
		cache_err_note(d->c, "blob %s: server sends %" PRId64 " bytes, expected %" PRId64,
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
			cache_err_note(c, "%.12s:/%s is blob %s on the server, %s in its tree",
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
