/* Experiments, pipelines and processors on the server side: see mlops.h. */
#include "mlops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "gl.h"
#include "reef/buf.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#define MLOPS_CACHE_MAX 256
#define MLOPS_PATH_MAX  2048
#define MLOPS_ZIP_FILES 100000

struct mlops_cached {
	char *path;
	json_t *v;
	int64_t at_ms;
};

const struct mlops_kind_info mlops_kinds[MLOPS_KINDS] = {
    {"experiments", "experiment", "experiment-ctl", "ALGORITHM"},
    {"data-pipelines", "data-pipeline", "data-pipeline-ctl", "OPERATION"},
    {"visualizations", "visualization", "visualization-ctl", "VISUALIZATION"},
};

int mlops_kind_of(const char *s)
{
	for (int k = 0; s && k < MLOPS_KINDS; k++)
		if (!strcmp(s, mlops_kinds[k].route) || !strcmp(s, mlops_kinds[k].kind) ||
		    !strcmp(s, mlops_kinds[k].ctl))
			return k;
	return -1;
}

struct mlops {
	struct gl *gl;
	struct gl *gl_mgmt; /* -o mgmt=URL: /api/v1 goes there; NULL: the server */
	char *server;
	char *mgmt; /* the base URL /api/v1 is looked for at */
	char *dir;
	int64_t probed_ms; /* mlops_mgmt_state's last answer and when */
	int probe_state;
	struct journal *journal;
	pthread_mutex_t lock; /* the response cache and the callback */
	struct mlops_cached cache[MLOPS_CACHE_MAX];
	pthread_mutex_t zip_lock; /* one download of an artifacts zip at a time */
	pthread_mutex_t cb_lock;  /* held while the callback runs, so removing it waits */
	mlops_done_fn done;
	void *done_arg;
	mlops_path_fn path_check; /* set before mlops_start, then read only */
	void *path_arg;
};

static int64_t mlops_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mlops_cache_clear(struct mlops *m)
{
	pthread_mutex_lock(&m->lock);
	for (size_t i = 0; i < MLOPS_CACHE_MAX; i++) {
		free(m->cache[i].path);
		json_decref(m->cache[i].v);
		m->cache[i] = (struct mlops_cached){0};
	}
	pthread_mutex_unlock(&m->lock);
}

/* The connection a path goes through: the management API's own, or the server's. */
static struct gl *mlops_gl(struct mlops *m, const char *path)
{
	return m->gl_mgmt && !strncmp(path, "/api/v1/", 8) ? m->gl_mgmt : m->gl;
}

static char *mlops_enc(const char *s);

/* Before a launch is (re)sent: is its run there already? 1 yes (*status, *body are the
 * run, as the POST would have answered), 0 no (send it), -1 the server cannot say now
 * (*status set: the journal retries later). */
static int mlops_launch_sent(struct mlops *m, int k, const struct journal_entry *e, long *status,
                             char **body)
{
	char path[2048], *enc = mlops_enc(e->target), *got = NULL;
	json_t *v = NULL;
	size_t len = 0;
	long st = 0;
	int found = 0;

	if (!enc)
		return 0;
	snprintf(path, sizeof(path), "/api/v1/projects/%" PRId64 "/%s/%s", e->project_id,
	         mlops_kinds[k].route, enc);
	free(enc);
	if (gl_call(mlops_gl(m, path), "GET", path, NULL, NULL, &st, &got, &len) < 0) {
		free(got);
		if (st == 0 || st >= 500 || st == 408 || st == 429) {
			*status = st;
			return -1;
		}
		return 0; /* 404: not there; 401/403: the POST gets the same answer */
	}
	if (jsonx_parse(&v, got, len, 0, GL_JSON_MAX) == 0 &&
	    !strcmp(jsonx_str(v, "request_id") ?: "", e->key)) {
		*status = 201;
		*body = got;
		got = NULL;
		found = 1;
		log_info("control request %" PRId64 ": %s %s was started by it already; not sent "
		         "again",
		         e->id, e->kind, e->target);
	}
	json_decref(v);
	free(got);
	return found;
}

static void mlops_send(void *arg, const struct journal_entry *e, long *status, char **body)
{
	struct mlops *m = arg;
	int k = mlops_kind_of(e->kind);
	char hdr[64], *send = NULL;

	*status = 0;
	if (k >= 0 && !strcmp(e->kind, mlops_kinds[k].kind)) {
		json_t *b = NULL;

		/* every send, not only retries: a reefd killed between POST and answer left
		 * attempts at 0 */
		if (mlops_launch_sent(m, k, e, status, body) != 0)
			return;
		if (e->body && jsonx_parse(&b, e->body, strlen(e->body), 0, 0) == 0 &&
		    json_is_object(b)) {
			json_object_set_new(b, "request_id", json_string(e->key));
			send = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
		}
		json_decref(b);
	}
	snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", e->key);
	gl_call(mlops_gl(m, e->path), "POST", e->path, send ? send : e->body, hdr, status, body,
	        NULL);
	free(send);
}

static void mlops_delivered(void *arg, const struct journal_entry *e)
{
	struct mlops *m = arg;

	/* what the request changed must show at once, not after the cache's TTL */
	mlops_cache_clear(m);
	pthread_mutex_lock(&m->cb_lock);
	if (m->done)
		m->done(m->done_arg, e);
	pthread_mutex_unlock(&m->cb_lock);
}

void mlops_set_path_check(struct mlops *m, mlops_path_fn fn, void *arg)
{
	m->path_check = fn;
	m->path_arg = arg;
}

/* A path a launch names that the mount can tell is missing: 0, or -ENOENT with err set.
 * Anything the mount cannot tell now (offline, no such ref) passes: the server decides. */
static int mlops_path_exists(struct mlops *m, int64_t project_id, const char *ref, const char *path,
                             const char *what, char err[CTL_ERR_MAX])
{
	char why[CTL_ERR_MAX] = "";
	int r;

	if (!m->path_check || !ref || !path || !*path || !strcmp(path, ".") || !strcmp(path, "./"))
		return 0;
	r = m->path_check(m->path_arg, project_id, ref, path, what, why);
	if (r != -ENOENT)
		return 0;
	snprintf(err, CTL_ERR_MAX, "%s", why);
	return r;
}

void mlops_set_err_hook(struct mlops *m, void (*fn)(void *arg, const char *msg), void *arg)
{
	gl_set_err_hook(m->gl, fn, arg);
	if (m->gl_mgmt)
		gl_set_err_hook(m->gl_mgmt, fn, arg);
}

int mlops_new(struct mlops **out, const struct mlops_opts *o)
{
	struct mlops *m = calloc(1, sizeof(*m));
	char path[PATH_MAX];
	int r;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->zip_lock, NULL);
	pthread_mutex_init(&m->cb_lock, NULL);
	m->server = strdup(o->server);
	m->mgmt = strdup(o->mgmt ? o->mgmt : o->server);
	m->dir = strdup(o->dir);
	if (!m->server || !m->mgmt || !m->dir) {
		r = -ENOMEM;
		goto fail;
	}
	while (strlen(m->server) && m->server[strlen(m->server) - 1] == '/')
		m->server[strlen(m->server) - 1] = '\0';
	while (strlen(m->mgmt) && m->mgmt[strlen(m->mgmt) - 1] == '/')
		m->mgmt[strlen(m->mgmt) - 1] = '\0';
	r = gl_new(&m->gl, o->server, o->token);
	/* the token goes to the management service too: it checks it with the server */
	if (r == 0 && strcmp(m->mgmt, m->server))
		r = gl_new(&m->gl_mgmt, m->mgmt, o->token);
	if (r < 0)
		goto fail;
	snprintf(path, sizeof(path), "%s/artifacts", o->dir);
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		r = log_ret(-errno, "cannot create %s: %s", path, strerror(errno));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/journal.db", o->dir);
	r = journal_open(&m->journal, path);
	if (r < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	mlops_free(m);
	return r;
}

int mlops_start(struct mlops *m)
{
	return journal_start(m->journal, mlops_send, mlops_delivered, m);
}

void mlops_free(struct mlops *m)
{
	if (!m)
		return;
	journal_free(m->journal); /* stops the delivery thread first */
	mlops_cache_clear(m);
	gl_free(m->gl);
	gl_free(m->gl_mgmt);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->zip_lock);
	pthread_mutex_destroy(&m->cb_lock);
	free(m->server);
	free(m->mgmt);
	free(m->dir);
	free(m);
}

struct journal *mlops_journal(struct mlops *m)
{
	return m->journal;
}

void mlops_on_done(struct mlops *m, mlops_done_fn fn, void *arg)
{
	pthread_mutex_lock(&m->cb_lock);
	m->done = fn;
	m->done_arg = arg;
	pthread_mutex_unlock(&m->cb_lock);
}

/* ---- reads ---- */

static int mlops_pathf(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int mlops_pathf(char *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, MLOPS_PATH_MAX, fmt, ap);
	va_end(ap);
	return n < 0 || n >= MLOPS_PATH_MAX ? -ENAMETOOLONG : 0;
}

static char *mlops_enc(const char *s)
{
	struct buf b = BUF_INIT(MLOPS_PATH_MAX);

	if (url_encode(&b, s) < 0) {
		buf_free(&b);
		return NULL;
	}
	return b.data ? buf_steal(&b) : strdup("");
}

/* GET path as JSON, reusing an answer younger than ttl_ms. */
static int mlops_get(struct mlops *m, const char *path, unsigned ttl_ms, json_t **out)
{
	int64_t now = mlops_now_ms();
	size_t i, slot = 0;
	long status;
	char *body = NULL;
	size_t len = 0;
	int r;

	*out = NULL;
	pthread_mutex_lock(&m->lock);
	for (i = 0; i < MLOPS_CACHE_MAX; i++) {
		if (m->cache[i].path && !strcmp(m->cache[i].path, path) &&
		    now - m->cache[i].at_ms < ttl_ms) {
			*out = json_incref(m->cache[i].v);
			pthread_mutex_unlock(&m->lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&m->lock);
	r = gl_call(mlops_gl(m, path), "GET", path, NULL, NULL, &status, &body, &len);
	if (r == 0 && jsonx_parse(out, body, len, 0, GL_JSON_MAX) < 0) {
		log_warn("GET %s: malformed JSON (%zu bytes)", path, len);
		r = -EIO;
	}
	free(body);
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	/* the slot of the same path, else the oldest */
	for (i = 0; i < MLOPS_CACHE_MAX; i++) {
		if (m->cache[i].path && !strcmp(m->cache[i].path, path)) {
			slot = i;
			break;
		}
		if (!m->cache[i].path || m->cache[i].at_ms < m->cache[slot].at_ms)
			slot = i;
		if (!m->cache[i].path)
			break;
	}
	free(m->cache[slot].path);
	json_decref(m->cache[slot].v);
	m->cache[slot].path = strdup(path);
	m->cache[slot].v = m->cache[slot].path ? json_incref(*out) : NULL;
	m->cache[slot].at_ms = now;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/* Every page of a listing (per_page=100), up to MLOPS_LIST_PAGES. */
static int mlops_get_all(struct mlops *m, const char *path, json_t **out)
{
	json_t *all = json_array(), *page;
	char p[MLOPS_PATH_MAX];
	int r = 0;

	*out = NULL;
	if (!all)
		return -ENOMEM;
	for (int i = 1; i <= MLOPS_LIST_PAGES; i++) {
		r = mlops_pathf(p, "%s%cper_page=100&page=%d", path, strchr(path, '?') ? '&' : '?',
		                i);
		if (r == 0)
			r = mlops_get(m, p, MLOPS_TTL_MS, &page);
		if (r < 0)
			break;
		if (!json_is_array(page)) {
			json_decref(page);
			r = -EIO;
			break;
		}
		json_array_extend(all, page);
		if (json_array_size(page) < 100) {
			json_decref(page);
			break;
		}
		json_decref(page);
	}
	if (r < 0) {
		json_decref(all);
		return r;
	}
	*out = all;
	return 0;
}

int mlops_mgmt_state(struct mlops *m, const char **url)
{
	int64_t now = mlops_now_ms();
	long status = 0;
	int state;

	if (url)
		*url = m->mgmt;
	pthread_mutex_lock(&m->lock);
	if (m->probed_ms && now - m->probed_ms < MLOPS_PROBE_MS) {
		state = m->probe_state;
		pthread_mutex_unlock(&m->lock);
		return state;
	}
	pthread_mutex_unlock(&m->lock);
	/* processors always answer a signed-in user where the service runs; GitLab (and any
	 * server without it) answers 404 for a route under /api/v1 */
	gl_call(mlops_gl(m, "/api/v1/"), "GET", "/api/v1/processors?per_page=1", NULL, NULL,
	        &status, NULL, NULL);
	state = status == 404 ? -ENOENT : 0;
	pthread_mutex_lock(&m->lock);
	m->probe_state = state;
	m->probed_ms = now;
	pthread_mutex_unlock(&m->lock);
	return state;
}

int mlops_launches(struct mlops *m, enum mlops_kind k, int64_t project_id, json_t **out)
{
	char p[MLOPS_PATH_MAX];

	snprintf(p, sizeof(p), "/api/v1/projects/%" PRId64 "/%s", project_id, mlops_kinds[k].route);
	return mlops_get_all(m, p, out);
}

int mlops_launch_get(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *name,
                     json_t **out)
{
	char p[MLOPS_PATH_MAX], *enc = mlops_enc(name);
	int r;

	*out = NULL;
	if (!enc)
		return -ENOMEM;
	r = mlops_pathf(p, "/api/v1/projects/%" PRId64 "/%s/%s", project_id, mlops_kinds[k].route,
	                enc);
	free(enc);
	return r < 0 ? r : mlops_get(m, p, MLOPS_TTL_MS, out);
}

int mlops_pipelines(struct mlops *m, int64_t project_id, json_t **out)
{
	char p[MLOPS_PATH_MAX];

	snprintf(p, sizeof(p), "/api/v4/projects/%" PRId64 "/pipelines", project_id);
	return mlops_get_all(m, p, out);
}

int mlops_pipeline(struct mlops *m, int64_t project_id, int64_t id, json_t **out)
{
	char p[MLOPS_PATH_MAX];

	snprintf(p, sizeof(p), "/api/v4/projects/%" PRId64 "/pipelines/%" PRId64, project_id, id);
	return mlops_get(m, p, MLOPS_TTL_MS, out);
}

int mlops_jobs(struct mlops *m, int64_t project_id, int64_t pipeline_id, json_t **out)
{
	char p[MLOPS_PATH_MAX];

	snprintf(p, sizeof(p), "/api/v4/projects/%" PRId64 "/pipelines/%" PRId64 "/jobs",
	         project_id, pipeline_id);
	return mlops_get_all(m, p, out);
}

int mlops_job(struct mlops *m, int64_t project_id, int64_t job_id, json_t **out)
{
	char p[MLOPS_PATH_MAX];

	snprintf(p, sizeof(p), "/api/v4/projects/%" PRId64 "/jobs/%" PRId64, project_id, job_id);
	return mlops_get(m, p, MLOPS_TTL_MS, out);
}

int mlops_branch_head(struct mlops *m, int64_t project_id, const char *branch, char commit[41])
{
	char p[MLOPS_PATH_MAX], *enc = mlops_enc(branch);
	const char *id;
	json_t *b = NULL;
	int r;

	if (!enc)
		return -ENOMEM;
	r = mlops_pathf(p, "/api/v4/projects/%" PRId64 "/repository/branches/%s", project_id, enc);
	free(enc);
	if (r == 0)
		r = mlops_get(m, p, MLOPS_TTL_MS, &b);
	if (r < 0)
		return r;
	id = jsonx_str(json_object_get(b, "commit"), "id");
	if (!id || strlen(id) != 40)
		r = -EIO;
	else
		memcpy(commit, id, 41);
	json_decref(b);
	return r;
}

int mlops_processors(struct mlops *m, json_t **out)
{
	return mlops_get_all(m, "/api/v1/processors", out);
}

int mlops_processor(struct mlops *m, const char *slug, json_t **out)
{
	char p[MLOPS_PATH_MAX], *enc = mlops_enc(slug);
	int r;

	*out = NULL;
	if (!enc)
		return -ENOMEM;
	r = mlops_pathf(p, "/api/v1/processors/%s", enc);
	free(enc);
	return r < 0 ? r : mlops_get(m, p, MLOPS_TTL_MS, out);
}

int mlops_usage(struct mlops *m, json_t **out)
{
	return mlops_get(m, "/api/v1/usage", MLOPS_TTL_MS, out);
}

int mlops_trace(struct mlops *m, int64_t project_id, int64_t job_id, char **out, size_t *len)
{
	char p[MLOPS_PATH_MAX];
	long status;

	snprintf(p, sizeof(p), "/api/v4/projects/%" PRId64 "/jobs/%" PRId64 "/trace", project_id,
	         job_id);
	return gl_call(m->gl, "GET", p, NULL, NULL, &status, out, len);
}

/* ---- artifacts ---- */

static int mlops_zip_sink_data(void *arg, const void *data, size_t len)
{
	return fd_write_all(*(int *)arg, data, len);
}

/* gl_stream always asks "Range: bytes=0-": GitLab (Workhorse) answers that 206 with the
 * whole archive, other servers 200; either is the archive from its first byte. */
static int mlops_zip_sink_begin(void *arg, bool partial, uint64_t first, int64_t total)
{
	(void)arg;
	(void)partial;
	(void)total;
	return first == 0 ? 0 : -EIO;
}

/* DIR/artifacts/<project>-<job>.zip, downloaded when missing. */
static int mlops_zip_path(struct mlops *m, int64_t project_id, int64_t job_id, char out[PATH_MAX])
{
	struct gl_stream_sink sink = {mlops_zip_sink_begin, mlops_zip_sink_data, NULL};
	struct gl_target t = {0};
	char tmp[PATH_MAX + 8];
	struct stat sb;
	int fd = -1, r = 0;

	snprintf(out, PATH_MAX, "%s/artifacts/%" PRId64 "-%" PRId64 ".zip", m->dir, project_id,
	         job_id);
	pthread_mutex_lock(&m->zip_lock);
	if (stat(out, &sb) == 0)
		goto out;
	snprintf(tmp, sizeof(tmp), "%s.part", out);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = log_ret(-errno, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (asprintf(&t.url, "%s/api/v4/projects/%" PRId64 "/jobs/%" PRId64 "/artifacts", m->server,
	             project_id, job_id) < 0) {
		t.url = NULL;
		r = -ENOMEM;
		goto out;
	}
	sink.arg = &fd;
	r = gl_stream(m->gl, &t, 0, MLOPS_ARTIFACT_MAX, &sink);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, out) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(t.url);
	pthread_mutex_unlock(&m->zip_lock);
	return r;
}

void mlops_artifacts_free(char **names, uint64_t *sizes, size_t n)
{
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(sizes);
}

int mlops_artifacts(struct mlops *m, int64_t project_id, int64_t job_id, char ***names,
                    uint64_t **sizes, size_t *n)
{
	char path[PATH_MAX];
	zip_t *za;
	zip_int64_t cnt;
	int err = 0, r;

	*names = NULL;
	*sizes = NULL;
	*n = 0;
	r = mlops_zip_path(m, project_id, job_id, path);
	if (r < 0)
		return r;
	za = zip_open(path, ZIP_RDONLY, &err);
	if (!za) {
		log_warn("artifacts of job %" PRId64 ": not a zip archive (libzip error %d)",
		         job_id, err);
		unlink(path); /* fetched anew next time */
		return -EIO;
	}
	cnt = zip_get_num_entries(za, 0);
	if (cnt < 0 || cnt > MLOPS_ZIP_FILES) {
		zip_close(za);
		return -EIO;
	}
	*names = calloc((size_t)cnt + 1, sizeof(**names));
	*sizes = calloc((size_t)cnt + 1, sizeof(**sizes));
	if (!*names || !*sizes) {
		r = -ENOMEM;
		goto out;
	}
	for (zip_int64_t i = 0; i < cnt; i++) {
		zip_stat_t zs;

		if (zip_stat_index(za, (zip_uint64_t)i, 0, &zs) < 0 || !zs.name ||
		    !(zs.valid & ZIP_STAT_SIZE))
			continue;
		/* directories are implied by their files; unsafe names are never shown */
		if (!zs.name[0] || zs.name[strlen(zs.name) - 1] == '/' ||
		    !path_is_safe(zs.name, 4096))
			continue;
		(*names)[*n] = strdup(zs.name);
		if (!(*names)[*n]) {
			r = -ENOMEM;
			goto out;
		}
		(*sizes)[*n] = zs.size;
		(*n)++;
	}
out:
	zip_close(za);
	if (r < 0) {
		mlops_artifacts_free(*names, *sizes, *n);
		*names = NULL;
		*sizes = NULL;
		*n = 0;
	}
	return r;
}

int mlops_artifact_open(struct mlops *m, int64_t project_id, int64_t job_id, const char *name,
                        int *fd_out)
{
	char path[PATH_MAX], chunk[65536];
	zip_t *za;
	zip_file_t *zf = NULL;
	zip_int64_t idx, got;
	int err = 0, fd = -1, r;

	*fd_out = -1;
	r = mlops_zip_path(m, project_id, job_id, path);
	if (r < 0)
		return r;
	za = zip_open(path, ZIP_RDONLY, &err);
	if (!za)
		return -EIO;
	idx = zip_name_locate(za, name, 0);
	if (idx < 0) {
		r = -ENOENT;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/artifacts", m->dir);
	fd = open(path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	zf = fd >= 0 ? zip_fopen_index(za, (zip_uint64_t)idx, 0) : NULL;
	if (!zf) {
		r = -EIO;
		goto out;
	}
	/* libzip checks each member's CRC at its end: a corrupt member reads as an error */
	while ((got = zip_fread(zf, chunk, sizeof(chunk))) > 0) {
		r = mlops_zip_sink_data(&fd, chunk, (size_t)got);
		if (r < 0)
			goto out;
	}
	if (got < 0)
		r = -EIO;
out:
	if (zf)
		zip_fclose(zf);
	zip_close(za);
	if (r < 0 && fd >= 0)
		close(fd);
	else if (r == 0)
		*fd_out = fd;
	return r;
}

/* ---- control writes ---- */

static int mlops_fail(char err[CTL_ERR_MAX], int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int mlops_fail(char err[CTL_ERR_MAX], int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, CTL_ERR_MAX, fmt, ap);
	va_end(ap);
	return r;
}

int mlops_unknown_processor(struct mlops *m, enum mlops_kind k, const char *slug,
                            char err[CTL_ERR_MAX])
{
	const char *names[CTL_SUGGEST_MAX];
	json_t *all = NULL, *p;
	size_t i, n = 0;

	mlops_fail(err, -ENOENT, "unknown processor %.100s", slug);
	/* the ones this kind runs (an experiment runs ALGORITHM processors...) */
	if (mlops_processors(m, &all) < 0)
		return -ENOENT; /* no list to offer now: the reason stays short */
	json_array_foreach(all, i, p)
	{
		const char *s = jsonx_str(p, "slug"), *t = jsonx_str(p, "type");

		if (s && n < CTL_SUGGEST_MAX && (!t || !strcmp(t, mlops_kinds[k].type)))
			names[n++] = s;
	}
	ctl_suggest(err, slug, names, n);
	json_decref(all);
	return -ENOENT;
}

/* The server's refusal, as a reason. */
static int mlops_remote_fail(char err[CTL_ERR_MAX], int r, const char *what)
{
	if (r == -EACCES)
		return mlops_fail(err, r, "the server refused access to %s", what);
	return mlops_fail(err, r, "%s: %s", what, strerror(-r));
}

/* 0 when ref is a branch (or, with tags, a tag); -ENOENT when it is neither; -EIO when
 * the server cannot say. */
static int mlops_ref_check(struct mlops *m, int64_t project_id, const char *ref, bool tags)
{
	char p[MLOPS_PATH_MAX], *enc = mlops_enc(ref);
	json_t *v = NULL;
	int r;

	if (!enc)
		return -ENOMEM;
	r = mlops_pathf(p, "/api/v4/projects/%" PRId64 "/repository/branches/%s", project_id, enc);
	if (r == 0)
		r = mlops_get(m, p, MLOPS_TTL_MS, &v);
	if (r == -ENOENT && tags) {
		json_decref(v);
		v = NULL;
		r = mlops_pathf(p, "/api/v4/projects/%" PRId64 "/repository/tags/%s", project_id,
		                enc);
		if (r == 0)
			r = mlops_get(m, p, MLOPS_TTL_MS, &v);
	}
	json_decref(v);
	free(enc);
	return r;
}

static bool mlops_pending_name(struct mlops *m, enum mlops_kind k, int64_t project_id,
                               const char *name)
{
	struct journal_entry *e = NULL;
	size_t n = 0;
	bool found = false;

	if (journal_pending(m->journal, project_id, mlops_kinds[k].kind, &e, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (e[i].state == JOURNAL_QUEUED && !strcmp(e[i].target, name))
			found = true;
	journal_entries_free(e, n);
	return found;
}

/* key: the request's key when it was chosen before (a launch's name holds it), or NULL. */
static int mlops_journal_add(struct mlops *m, int64_t project_id, const char *kind,
                             const char *target, const char *path, json_t *body, const char *key,
                             int64_t *id, char err[CTL_ERR_MAX])
{
	struct journal_entry e = {0};
	int r;

	if (key)
		snprintf(e.key, sizeof(e.key), "%s", key);
	e.project_id = project_id;
	snprintf(e.kind, sizeof(e.kind), "%s", kind);
	snprintf(e.target, sizeof(e.target), "%s", target);
	snprintf(e.path, sizeof(e.path), "%s", path);
	e.body = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
	if (!e.body)
		return -ENOMEM;
	r = journal_add(m->journal, &e);
	if (r < 0)
		mlops_fail(err, -EIO, "the request could not be journaled: %s", strerror(-r));
	else
		*id = e.id;
	free(e.body);
	return r < 0 ? -EIO : 0;
}

int mlops_launch(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *data,
                 size_t len, int64_t *id, char *name, char err[CTL_ERR_MAX])
{
	json_t *in = NULL, *spec = NULL, *proc = NULL, *existing = NULL, *project = NULL;
	char path[MLOPS_PATH_MAX], gen[CTL_NAME_MAX + 1], key[33];
	const char *slug, *given, *type, *url;
	bool lines, online = true;
	int r;

	name[0] = '\0';
	if (mlops_mgmt_state(m, &url) == -ENOENT)
		return mlops_fail(err, -ENOENT,
		                  "no management API at %.200s (it answers 404 on /api/v1); "
		                  "mount with -o mgmt=URL of the service",
		                  url);
	r = ctl_parse(data, len, &in, &lines, err);
	if (r == 0)
		r = ctl_experiment_spec(in, lines, &spec, err);
	if (r < 0)
		goto out;
	slug = jsonx_str(spec, "processor");
	r = mlops_processor(m, slug, &proc);
	if (r == -ENOENT) {
		r = mlops_unknown_processor(m, k, slug, err);
		goto out;
	}
	if (r == -EIO) {
		online = false; /* the server checks the rest when the request reaches it */
	} else if (r < 0) {
		r = mlops_remote_fail(err, r, "the processor");
		goto out;
	} else {
		type = jsonx_str(proc, "type");
		if (type && strcmp(type, mlops_kinds[k].type)) {
			r = mlops_fail(err, -EINVAL, "processor %s is %s; %s run %s processors",
			               slug, type, mlops_kinds[k].route, mlops_kinds[k].type);
			goto out;
		}
		r = ctl_params_check(json_object_get(spec, "params"),
		                     json_object_get(proc, "parameters"), err);
		if (r < 0)
			goto out;
	}
	if (online && !jsonx_str(spec, "source_branch")) {
		snprintf(path, sizeof(path), "/api/v4/projects/%" PRId64, project_id);
		if (mlops_get(m, path, MLOPS_TTL_MS, &project) == 0 &&
		    jsonx_str(project, "default_branch"))
			json_object_set_new(spec, "source_branch",
			                    json_string(jsonx_str(project, "default_branch")));
	}
	if (online && jsonx_str(spec, "source_branch")) {
		r = mlops_ref_check(m, project_id, jsonx_str(spec, "source_branch"), false);
		if (r == -ENOENT) {
			r = mlops_fail(err, r, "unknown branch %s",
			               jsonx_str(spec, "source_branch"));
			goto out;
		}
		if (r < 0 && r != -EIO) {
			r = mlops_remote_fail(err, r, "the source branch");
			goto out;
		}
		/* a typo in input_path would be a run that fails minutes later */
		if (r == 0 &&
		    (r = mlops_path_exists(m, project_id, jsonx_str(spec, "source_branch"),
		                           jsonx_str(spec, "input_path"), "input_path", err)) < 0)
			goto out;
		r = 0;
	}
	if (journal_key_new(key) < 0) {
		r = mlops_fail(err, -EIO, "no randomness for a request id");
		goto out;
	}
	given = jsonx_str(spec, "name");
	if (!given) {
		/* chosen here, not by the server, so the request can show under its name
		 * while it waits in the journal; the request id in it makes the run's branch
		 * name it too */
		snprintf(gen, sizeof(gen), "%.80s-%.8s", slug, key);
		json_object_set_new(spec, "name", json_string(gen));
		given = jsonx_str(spec, "name");
	} else if (online && mlops_launch_get(m, k, project_id, given, &existing) == 0) {
		r = mlops_fail(err, -EEXIST, "%s %s already exists", mlops_kinds[k].kind, given);
		goto out;
	}
	if (mlops_pending_name(m, k, project_id, given)) {
		r = mlops_fail(err, -EEXIST, "%s %s is already queued", mlops_kinds[k].kind, given);
		goto out;
	}
	snprintf(name, CTL_NAME_MAX + 1, "%s", given);
	snprintf(path, sizeof(path), "/api/v1/projects/%" PRId64 "/%s", project_id,
	         mlops_kinds[k].route);
	r = mlops_journal_add(m, project_id, mlops_kinds[k].kind, given, path, spec, key, id, err);
out:
	json_decref(in);
	json_decref(spec);
	json_decref(proc);
	json_decref(existing);
	json_decref(project);
	return r;
}

int mlops_pipeline_launch(struct mlops *m, int64_t project_id, const char *data, size_t len,
                          int64_t *id, char err[CTL_ERR_MAX])
{
	json_t *in = NULL, *spec = NULL;
	char path[MLOPS_PATH_MAX];
	bool lines;
	int r;

	r = ctl_parse(data, len, &in, &lines, err);
	if (r == 0)
		r = ctl_pipeline_spec(in, lines, &spec, err);
	if (r < 0)
		goto out;
	r = mlops_ref_check(m, project_id, jsonx_str(spec, "ref"), true);
	if (r == -ENOENT) {
		r = mlops_fail(err, r, "unknown ref %s (neither a branch nor a tag)",
		               jsonx_str(spec, "ref"));
		goto out;
	}
	if (r < 0 && r != -EIO) {
		r = mlops_remote_fail(err, r, "the ref");
		goto out;
	}
	if (r == 0) {
		/* GitLab refuses a pipeline without its CI file ("Missing CI config file"), only
		 * once the request reaches it: tell the writer now. The file is the project's
		 * ci_config_path, .gitlab-ci.yml when unset; one in another project or at a URL
		 * (path@group/project, https://…) is left to the server. */
		json_t *project = NULL;
		const char *ci = NULL;

		snprintf(path, sizeof(path), "/api/v4/projects/%" PRId64, project_id);
		if (mlops_get(m, path, MLOPS_TTL_MS, &project) == 0) {
			ci = jsonx_str(project, "ci_config_path");
			if (!ci || !*ci)
				ci = ".gitlab-ci.yml";
			if (strchr(ci, '@') || strstr(ci, "://"))
				ci = NULL;
			r = mlops_path_exists(m, project_id, jsonx_str(spec, "ref"), ci, "CI file",
			                      err);
		}
		json_decref(project);
		if (r < 0)
			goto out;
	}
	snprintf(path, sizeof(path), "/api/v4/projects/%" PRId64 "/pipeline", project_id);
	r = mlops_journal_add(m, project_id, "pipeline", "", path, spec, NULL, id, err);
out:
	json_decref(in);
	json_decref(spec);
	return r;
}

static const char *const mlops_ctl_words[] = {"cancel", "retry", NULL};

int mlops_launch_ctl(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *name,
                     const char *data, size_t len, int64_t *id, char err[CTL_ERR_MAX])
{
	char path[MLOPS_PATH_MAX], *enc;
	json_t *e = NULL;
	int w, r;

	w = ctl_command(data, len, mlops_ctl_words, err);
	if (w < 0)
		return w;
	r = mlops_launch_get(m, k, project_id, name, &e);
	json_decref(e);
	if (r == -ENOENT && !mlops_pending_name(m, k, project_id, name))
		return mlops_fail(err, r, "unknown %s %s", mlops_kinds[k].kind, name);
	if (r < 0 && r != -ENOENT && r != -EIO)
		return mlops_remote_fail(err, r, mlops_kinds[k].kind);
	enc = mlops_enc(name);
	if (!enc)
		return -ENOMEM;
	r = mlops_pathf(path, "/api/v1/projects/%" PRId64 "/%s/%s/%s", project_id,
	                mlops_kinds[k].route, enc, mlops_ctl_words[w]);
	free(enc);
	if (r < 0)
		return mlops_fail(err, r, "name too long");
	{
		json_t *body = json_object();

		r = mlops_journal_add(m, project_id, mlops_kinds[k].ctl, name, path, body, NULL, id,
		                      err);
		json_decref(body);
	}
	return r;
}

int mlops_pipeline_ctl(struct mlops *m, int64_t project_id, int64_t pipeline_id, const char *data,
                       size_t len, int64_t *id, char err[CTL_ERR_MAX])
{
	char path[MLOPS_PATH_MAX], target[32];
	json_t *p = NULL, *body;
	int w, r;

	w = ctl_command(data, len, mlops_ctl_words, err);
	if (w < 0)
		return w;
	r = mlops_pipeline(m, project_id, pipeline_id, &p);
	json_decref(p);
	if (r == -ENOENT)
		return mlops_fail(err, r, "unknown pipeline %" PRId64, pipeline_id);
	if (r < 0 && r != -EIO)
		return mlops_remote_fail(err, r, "the pipeline");
	snprintf(path, sizeof(path), "/api/v4/projects/%" PRId64 "/pipelines/%" PRId64 "/%s",
	         project_id, pipeline_id, mlops_ctl_words[w]);
	snprintf(target, sizeof(target), "%" PRId64, pipeline_id);
	body = json_object();
	r = mlops_journal_add(m, project_id, "pipeline-ctl", target, path, body, NULL, id, err);
	json_decref(body);
	return r;
}
