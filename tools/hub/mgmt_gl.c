/* The management role (`reef-hub serve DIR --gitlab URL`): the management API beside a
 * GitLab, which keeps users, repositories, runners and pipelines (MLReef's split between
 * GitLab and its management service). Here:
 *   auth       the caller's own GitLab token (PRIVATE-TOKEN or Authorization: Bearer,
 *              as GitLab reads them: gitlabhq lib/gitlab/auth/auth_finders.rb), checked
 *              with GET /api/v4/user and remembered MGL_AUTH_TTL seconds under its
 *              SHA-256, never in clear
 *   projects   GET /api/v4/projects/:id with that token (visibility, permissions), so
 *              the service shows nothing GitLab would hide
 *   processors published from a GitLab project: the manifest through the files API,
 *              the code at its commit through the tree and raw-file APIs, kept as a
 *              snapshot DIR/processors/<slug>/<sha>/
 *   launches   one commit through the commits API with actions (gitlabhq
 *              lib/api/commits.rb: branch + start_branch creates the branch; the CI
 *              file and the processor's code under .reef/processor/), then
 *              POST /projects/:id/pipeline with variables (lib/api/ci/pipelines.rb);
 *              the jobs run on GitLab's runners and reef-epf reports here with the
 *              job's CI_JOB_TOKEN, which GitLab vouches for (GET /job); status
 *              and job come from GitLab's webhook (mgmt_glhook.c) and from the
 *              pipelines and jobs API, polled when a client reads the launch
 *   usage      job durations and artifact sizes from the jobs API, repository and LFS
 *              sizes from project statistics when GitLab gives them
 * The service holds no GitLab credential of its own: every GitLab call is made with the
 * token of the user whose request it serves. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "glc.h"
#include "mgmt_int.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "runner.h"

#define MGL_AUTH_TTL       30 /* seconds a verified token is trusted (revocation delay) */
#define MGL_AUTH_TTL_MAX   3600
#define MGL_PROJECT_TTL    10 /* seconds a project's access answer is reused */
#define MGL_JOB_TTL        10 /* seconds GitLab's word on a job token is reused */
#define MGL_CACHE_N        1024
#define MGL_MAX_CODE_FILES 500
/* the launch's commit carries the code in base64 (4/3 larger) in one JSON body, which
 * must stay under the request body limits in front of GitLab (and reef-hub's 16 MiB) */
#define MGL_MAX_CODE_BYTES ((uint64_t)8 << 20)
#define MGL_LIST_PAGES     20  /* pages of 100 read of a GitLab list (usage) */
#define MGL_REFRESH_S      1.0 /* a launch's status is asked of GitLab at most this often */

static bool mgl_on;
static double mgl_auth_ttl = MGL_AUTH_TTL;

bool mgl_active(void)
{
	return mgl_on;
}

int mgl_init(const char *gitlab_url)
{
	int r = glc_init(gitlab_url);
	const char *ttl = getenv("REEF_HUB_AUTH_TTL");

	/* how long a token GitLab accepted is trusted without asking again: the delay
	 * before a revocation on GitLab takes effect here */
	if (ttl && atoi(ttl) >= 1 && atoi(ttl) <= MGL_AUTH_TTL_MAX)
		mgl_auth_ttl = atoi(ttl);
	if (r == 0)
		mgl_on = true;
	return r;
}

/* ---- caches: keyed by the token's SHA-256, so no token is kept in clear ---- */

struct mgl_entry {
	char key[64 + 1 + 1100]; /* token hash [+ '\n' + project segment] */
	double expires;
	json_t *v; /* GitLab's answer (NULL: refused) */
	long status;
};

static struct mgl_entry mgl_cache[MGL_CACHE_N];
static pthread_mutex_t mgl_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static double mgl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool mgl_cache_get(const char *key, json_t **v, long *status)
{
	bool hit = false;
	double now = mgl_now();

	pthread_mutex_lock(&mgl_cache_lock);
	for (size_t i = 0; i < MGL_CACHE_N; i++)
		if (mgl_cache[i].expires > now && !strcmp(mgl_cache[i].key, key)) {
			*v = json_incref(mgl_cache[i].v);
			*status = mgl_cache[i].status;
			hit = true;
			break;
		}
	pthread_mutex_unlock(&mgl_cache_lock);
	return hit;
}

static void mgl_cache_put(const char *key, json_t *v, long status, double ttl)
{
	double now = mgl_now();
	size_t victim = 0;

	pthread_mutex_lock(&mgl_cache_lock);
	for (size_t i = 0; i < MGL_CACHE_N; i++) {
		if (!strcmp(mgl_cache[i].key, key) || mgl_cache[i].expires <= now) {
			victim = i;
			break;
		}
		if (mgl_cache[i].expires < mgl_cache[victim].expires)
			victim = i;
	}
	json_decref(mgl_cache[victim].v);
	snprintf(mgl_cache[victim].key, sizeof(mgl_cache[victim].key), "%s", key);
	mgl_cache[victim].v = json_incref(v);
	mgl_cache[victim].status = status;
	mgl_cache[victim].expires = now + ttl;
	pthread_mutex_unlock(&mgl_cache_lock);
}

/* The caller's token as GitLab reads it from an API request, or NULL. */
static const char *mgl_token(const struct hub_req *req)
{
	const char *tok = hub_req_header(req, "PRIVATE-TOKEN");
	const char *authz = hub_req_header(req, "Authorization");

	if (!tok && authz && strncasecmp(authz, "Bearer ", 7) == 0)
		tok = authz + 7;
	if (!tok)
		tok = hub_req_query(req, "private_token");
	if (!tok)
		tok = hub_req_query(req, "access_token");
	while (tok && *tok == ' ')
		tok++;
	return tok && *tok && strlen(tok) <= 1024 ? tok : NULL;
}

static void mgl_token_key(const char *tok, char out[65])
{
	ci_token_hash(tok, out);
}

static _Thread_local struct hub_user mgl_user;
static _Thread_local char mgl_tok[1025];

int mgl_auth(struct hub_req *req)
{
	const char *tok = mgl_token(req);
	char key[65];
	json_t *u = NULL;
	long status = 0;

	req->user = NULL;
	mgl_tok[0] = '\0';
	if (!tok)
		return 0;
	mgl_token_key(tok, key);
	if (!mgl_cache_get(key, &u, &status)) {
		if (glc_call("GET", "/user", tok, NULL, &status, &u, NULL) < 0 || status >= 500 ||
		    status == 0) {
			json_decref(u);
			return -EIO; /* GitLab did not answer: not a verdict on the token */
		}
		if (status != 200 || !json_is_integer(json_object_get(u, "id"))) {
			json_decref(u);
			u = NULL;
		}
		mgl_cache_put(key, u, status, mgl_auth_ttl);
	}
	if (!u)
		return -EACCES;
	memset(&mgl_user, 0, sizeof(mgl_user));
	mgl_user.id = jsonx_int(u, "id", 0);
	snprintf(mgl_user.username, sizeof(mgl_user.username), "%s",
	         jsonx_str(u, "username") ? jsonx_str(u, "username") : "");
	snprintf(mgl_user.name, sizeof(mgl_user.name), "%s",
	         jsonx_str(u, "name") ? jsonx_str(u, "name") : "");
	snprintf(mgl_user.email, sizeof(mgl_user.email), "%s",
	         jsonx_str(u, "email") ? jsonx_str(u, "email") : "");
	mgl_user.is_admin = jsonx_bool(u, "is_admin", false);
	json_decref(u);
	snprintf(mgl_tok, sizeof(mgl_tok), "%s", tok);
	req->user = &mgl_user;
	return 0;
}

void mgl_request_end(void)
{
	explicit_bzero(mgl_tok, sizeof(mgl_tok));
}

/* ---- reef-epf's callbacks: the job's own CI job token ---- */

int mgl_job_token(const char *token, int64_t *job, int64_t *pipeline, int64_t *project)
{
	char key[80], hash[65];
	json_t *v = NULL;
	long status = 0;

	*job = *pipeline = *project = 0;
	if (!token || !*token || strlen(token) > 1024)
		return -EACCES;
	/* its own key space: a job token is no user's personal token here */
	ci_token_hash(token, hash);
	snprintf(key, sizeof(key), "job\n%s", hash);
	if (!mgl_cache_get(key, &v, &status)) {
		json_t *j = NULL;

		/* gitlabhq lib/api/ci/jobs.rb, "Get current job using job token": 200 with
		 * the job while it runs, 401 for any other token (a finished job's included:
		 * app/finders/ci/auth_job_finder.rb) */
		if (glc_call_job("/job", token, &status, &j) < 0 || status == 0 || status >= 500) {
			json_decref(j);
			return -EIO;
		}
		if (status == 200 && jsonx_int(j, "id", 0) > 0) {
			const json_t *pl = json_object_get(j, "pipeline");

			v = json_pack("{s:I, s:I, s:I}", "job", (json_int_t)jsonx_int(j, "id", 0),
			              "pipeline", (json_int_t)jsonx_int(pl, "id", 0), "project",
			              (json_int_t)jsonx_int(pl, "project_id", 0));
		}
		json_decref(j);
		mgl_cache_put(key, v, status, MGL_JOB_TTL);
	}
	if (!v)
		return -EACCES;
	*job = jsonx_int(v, "job", 0);
	*pipeline = jsonx_int(v, "pipeline", 0);
	*project = jsonx_int(v, "project", 0);
	json_decref(v);
	return 0;
}

/* ---- projects ---- */

/* GitLab's project as the caller sees it (cached briefly), or NULL with *status. */
static json_t *mgl_project_json(const char *seg, long *status)
{
	char key[sizeof(mgl_cache[0].key)], hash[65];
	struct buf path = BUF_INIT(4096);
	json_t *v = NULL;

	*status = 0;
	if (!mgl_tok[0])
		return NULL;
	mgl_token_key(mgl_tok, hash);
	snprintf(key, sizeof(key), "%s\n%.1000s", hash, seg);
	if (mgl_cache_get(key, &v, status))
		return v;
	/* seg is the request's own URL segment: an id or an already encoded path */
	if (buf_printf(&path, "/projects/%s", seg) < 0 ||
	    glc_call("GET", path.data, mgl_tok, NULL, status, &v, NULL) < 0 || *status != 200 ||
	    !json_is_integer(json_object_get(v, "id"))) {
		json_decref(v);
		v = NULL;
		if (*status == 200)
			*status = 502;
	}
	if (*status && *status < 500)
		mgl_cache_put(key, v, *status, MGL_PROJECT_TTL);
	buf_free(&path);
	return v;
}

static enum hub_access mgl_access(const json_t *pj)
{
	const json_t *perm = json_object_get(pj, "permissions");
	int64_t a = jsonx_int(json_object_get(perm, "project_access"), "access_level", 0);
	int64_t g = jsonx_int(json_object_get(perm, "group_access"), "access_level", 0);

	return (enum hub_access)(a > g ? a : g);
}

static void mgl_fill(const json_t *pj, struct hub_project *p)
{
	const char *s;

	memset(p, 0, sizeof(*p));
	p->id = jsonx_int(pj, "id", 0);
	snprintf(p->name, sizeof(p->name), "%s", (s = jsonx_str(pj, "name")) ? s : "");
	snprintf(p->path, sizeof(p->path), "%s", (s = jsonx_str(pj, "path")) ? s : "");
	snprintf(p->path_with_namespace, sizeof(p->path_with_namespace), "%s",
	         (s = jsonx_str(pj, "path_with_namespace")) ? s : "");
	p->namespace_id = jsonx_int(json_object_get(pj, "namespace"), "id", 0);
	snprintf(p->visibility, sizeof(p->visibility), "%s",
	         (s = jsonx_str(pj, "visibility")) ? s : "private");
	snprintf(p->default_branch, sizeof(p->default_branch), "%s",
	         (s = jsonx_str(pj, "default_branch")) ? s : "");
	p->access = mgl_access(pj);
	/* GitLab's pipelines read this file, whatever the API asks (doc/ci/pipelines/
	 * settings.md, "custom CI/CD configuration file"): the launch writes it */
	s = jsonx_str(pj, "ci_config_path");
	snprintf(p->ci_config_path, sizeof(p->ci_config_path), "%s",
	         s && *s ? s : ".gitlab-ci.yml");
}

int mgl_project(struct hub_req *req, struct hub_resp *resp, const char *seg, struct hub_project *p)
{
	long status;
	json_t *pj;

	if (strlen(seg) > 1000 || strpbrk(seg, "/?#")) {
		hub_resp_error(resp, 404, "404 Project Not Found");
		return -ENOENT;
	}
	pj = mgl_project_json(seg, &status);
	if (!pj) {
		/* what GitLab hides stays hidden: every refusal is 404 here */
		if (status == 0 || status >= 500)
			hub_resp_error(resp, 502, "502 GitLab did not answer");
		else
			hub_resp_error(resp, 404, "404 Project Not Found");
		return -ENOENT;
	}
	mgl_fill(pj, p);
	json_decref(pj);
	return 0;
}

bool mgl_code_readable(struct hub_req *req, int64_t project_id)
{
	char seg[32];
	long status;
	json_t *pj;
	struct hub_project p;

	(void)req;
	snprintf(seg, sizeof(seg), "%lld", (long long)project_id);
	if (!(pj = mgl_project_json(seg, &status)))
		return false;
	mgl_fill(pj, &p);
	json_decref(pj);
	return strcmp(p.visibility, "private") || p.access >= HUB_ACCESS_REPORTER;
}

/* ---- processors: manifest and code through GitLab's repository API ---- */

static int mgl_enc(struct buf *b, const char *s)
{
	return url_encode(b, s);
}

/* Writes one file of the code into dir (path already checked safe). */
static int mgl_write_file(const char *dir, const char *rel, const struct buf *data, bool exec)
{
	char full[PATH_MAX];
	int fd;

	if (hub_pathf(full, sizeof(full), "%s/%s", dir, rel) < 0)
		return -ENAMETOOLONG;
	for (char *s = full + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
		*s = '\0';
		mkdir(full, 0700);
		*s = '/';
	}
	fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, exec ? 0700 : 0600);
	if (fd < 0)
		return -errno;
	if (data->len && write(fd, data->data, data->len) != (ssize_t)data->len) {
		close(fd);
		return -EIO;
	}
	return close(fd) < 0 ? -EIO : 0;
}

static int mgl_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* The code project's files at sha, once, into DIR/processors/<slug>/<sha>/. */
static int mgl_snapshot(int64_t pid, const char *slug, const char *sha, char *err, size_t n)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 32], parent[PATH_MAX];
	struct buf path = BUF_INIT(8192), raw = BUF_INIT(GLC_MAX_BODY);
	uint64_t total = 0;
	size_t files = 0;
	struct stat sb;
	int r = 0;

	hub_pathf(parent, sizeof(parent), "%s/processors", ci_data_dir());
	mkdir(parent, 0700);
	hub_pathf(parent, sizeof(parent), "%s/processors/%s", ci_data_dir(), slug);
	mkdir(parent, 0700);
	if (hub_pathf(dir, sizeof(dir), "%s/%s", parent, sha) < 0)
		return -ENAMETOOLONG;
	if (stat(dir, &sb) == 0)
		return 0;
	hub_pathf(tmp, sizeof(tmp), "%s.tmp%d.%lx", dir, (int)getpid(),
	          (unsigned long)pthread_self());
	if (mkdir(tmp, 0700) < 0)
		return -errno;
	for (int page = 1; r == 0 && page <= 100; page++) {
		json_t *arr = NULL, *e;
		long status;
		size_t i;

		buf_reset(&path);
		buf_printf(&path,
		           "/projects/%lld/repository/tree?ref=%s&recursive=true&per_page=100"
		           "&page=%d",
		           (long long)pid, sha, page);
		if (glc_call("GET", path.data, mgl_tok, NULL, &status, &arr, NULL) < 0 ||
		    status != 200 || !json_is_array(arr)) {
			json_decref(arr);
			snprintf(err, n, "the code's file list could not be read (%ld)", status);
			r = -EIO;
			break;
		}
		json_array_foreach(arr, i, e)
		{
			const char *type = jsonx_str(e, "type"), *fp = jsonx_str(e, "path");
			const char *mode = jsonx_str(e, "mode");

			if (!type || strcmp(type, "blob") || !fp ||
			    (mode && !strcmp(mode, "120000")))
				continue; /* trees come with their files; links are not copied */
			if (!path_is_safe(fp, 1024) || ++files > MGL_MAX_CODE_FILES) {
				snprintf(err, n,
				         "the code has more than %d files or an unsafe path",
				         MGL_MAX_CODE_FILES);
				r = -EFBIG;
				break;
			}
			buf_reset(&path);
			buf_printf(&path, "/projects/%lld/repository/files/", (long long)pid);
			mgl_enc(&path, fp);
			buf_printf(&path, "/raw?ref=%s", sha);
			if (glc_call("GET", path.data, mgl_tok, NULL, &status, NULL, &raw) < 0 ||
			    status != 200) {
				snprintf(err, n, "%.200s could not be read (%ld)", fp, status);
				r = -EIO;
				break;
			}
			total += raw.len;
			if (total > MGL_MAX_CODE_BYTES) {
				snprintf(err, n, "the code is over %llu bytes",
				         (unsigned long long)MGL_MAX_CODE_BYTES);
				r = -EFBIG;
				break;
			}
			if ((r = mgl_write_file(tmp, fp, &raw, mode && !strcmp(mode, "100755"))) <
			    0)
				snprintf(err, n, "%.200s could not be stored", fp);
		}
		i = json_array_size(arr);
		json_decref(arr);
		if (i < 100)
			break;
	}
	buf_free(&path);
	buf_free(&raw);
	if (r == 0 && rename(tmp, dir) < 0)
		r = stat(dir, &sb) == 0 ? 0 : -EIO; /* a concurrent publish won */
	if (r < 0 || stat(tmp, &sb) == 0)
		nftw(tmp, mgl_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return r;
}

void mgl_publish(struct hub_req *req, struct hub_resp *resp, const char *project_seg)
{
	struct hub_project p;
	json_t *params = NULL, *m = NULL, *fj = NULL;
	struct buf path = BUF_INIT(8192), content = BUF_INIT(MG_MAX_MANIFEST + 1);
	char sha[41] = "", err[512] = "";
	const char *ref, *file, *s;
	long status;
	int r;

	if (mgl_project(req, resp, project_seg, &p) < 0)
		goto out;
	if (p.access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		goto out;
	}
	if (hub_req_params(req, &params) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		goto out;
	}
	ref = jsonx_str(params, "ref") ? jsonx_str(params, "ref") : jsonx_str(params, "branch");
	file = jsonx_str(params, "path") ? jsonx_str(params, "path") : "processor.json";
	if (!ref || !*ref) {
		hub_resp_missing(resp, "ref");
		goto out;
	}
	if (!path_is_safe(file, HUB_MAX_PATH)) {
		hub_resp_error(resp, 400, "400 (Bad request) \"path\" is not a safe path");
		goto out;
	}
	/* the files API: content (base64) and the commit the ref names (commit_id) */
	buf_printf(&path, "/projects/%lld/repository/files/", (long long)p.id);
	mgl_enc(&path, file);
	buf_puts(&path, "?ref=");
	mgl_enc(&path, ref);
	if (glc_call("GET", path.data, mgl_tok, NULL, &status, &fj, NULL) < 0 || status >= 500) {
		hub_resp_error(resp, 502, "502 GitLab did not answer");
		goto out;
	}
	if (status == 404) {
		mg_error(resp, 400, "400 (Bad request) no processor manifest %s at %s", file, ref);
		goto out;
	}
	s = jsonx_str(fj, "commit_id");
	if (status != 200 || !s || strlen(s) != 40 || !jsonx_str(fj, "content") ||
	    jsonx_int(fj, "size", 0) > (int64_t)MG_MAX_MANIFEST) {
		mg_error(resp, 400, "400 (Bad request) %s could not be read at %s", file, ref);
		goto out;
	}
	snprintf(sha, sizeof(sha), "%s", s);
	if (base64_decode(jsonx_str(fj, "content"), strlen(jsonx_str(fj, "content")), &content) <
	        0 ||
	    jsonx_parse(&m, content.data, content.len, 16, MG_MAX_MANIFEST) < 0) {
		mg_error(resp, 400, "400 (Bad request) %s is not valid JSON", file);
		goto out;
	}
	if (mg_manifest_check(m, err, sizeof(err)) < 0) {
		mg_error(resp, 400, "400 (Bad request) %s: %s", file, err);
		goto out;
	}
	if ((r = mgl_snapshot(p.id, jsonx_str(m, "slug"), sha, err, sizeof(err))) < 0) {
		mg_error(resp, r == -EFBIG ? 400 : 502, "%s %s", r == -EFBIG ? "400" : "502", err);
		goto out;
	}
	mg_processor_store(req, resp, &p, m, ref, sha, jsonx_str(m, "image"),
	                   p.path_with_namespace);
out:
	json_decref(fj);
	json_decref(m);
	json_decref(params);
	buf_free(&path);
	buf_free(&content);
}

/* ---- launches ---- */

struct mgl_actions {
	json_t *arr;
	const char *root;
	size_t rootlen;
	int err;
};

static _Thread_local struct mgl_actions *mgl_act;

static void mgl_b64(struct buf *out, const unsigned char *d, size_t n)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) |
		             (i + 2 < n ? d[i + 2] : 0);
		char q[4] = {t[v >> 18 & 63], t[v >> 12 & 63], i + 1 < n ? t[v >> 6 & 63] : '=',
		             i + 2 < n ? t[v & 63] : '='};

		buf_append(out, q, 4);
	}
}

static int mgl_action_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	struct buf data = BUF_INIT(MGL_MAX_CODE_BYTES * 2), b64 = BUF_INIT(MGL_MAX_CODE_BYTES * 2);
	char rel[PATH_MAX + 32];
	int fd;

	(void)ftw;
	if (flag != FTW_F || !S_ISREG(sb->st_mode))
		return 0;
	if ((uint64_t)sb->st_size > MGL_MAX_CODE_BYTES) {
		mgl_act->err = -EFBIG;
		return 1;
	}
	snprintf(rel, sizeof(rel), "%s/%s", MGL_CODE_DIR, path + mgl_act->rootlen + 1);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		mgl_act->err = -errno;
		return 1;
	}
	for (;;) {
		char chunk[65536];
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n <= 0)
			break;
		buf_append(&data, chunk, (size_t)n);
	}
	close(fd);
	mgl_b64(&b64, (const unsigned char *)(data.data ? data.data : ""), data.len);
	json_array_append_new(
	    mgl_act->arr, json_pack("{s:s, s:s, s:s, s:s, s:b}", "action", "create", "file_path",
	                            rel, "content", b64.data ? b64.data : "", "encoding", "base64",
	                            "execute_filemode", (sb->st_mode & 0100) != 0));
	buf_free(&data);
	buf_free(&b64);
	return 0;
}

/* The commit that makes a launch's branch: the CI file and the processor's code, from
 * source. *sha gets the commit the branch starts from. -EEXIST when the branch exists,
 * -ENOENT when source does not, -EIO with no answer (the outcome is unknown). */
static int mgl_commit_branch(const struct hub_project *p, const char *branch, const char *source,
                             const char *ci, const char *message, const char *slug,
                             const char *psha, char sha[41], const char *request_id)
{
	const char *ci_action = "create";
	struct mgl_actions act = {.arr = json_array()};
	char dir[PATH_MAX];
	struct buf path = BUF_INIT(4096);
	json_t *body, *out = NULL;
	long status = 0;
	int r;

	hub_pathf(dir, sizeof(dir), "%s/processors/%s/%s", ci_data_dir(), slug, psha);
	act.root = dir;
	act.rootlen = strlen(dir);
	mgl_act = &act;
	nftw(dir, mgl_action_cb, 16, FTW_PHYS);
	mgl_act = NULL;
	if (act.err < 0) {
		json_decref(act.arr);
		return act.err;
	}
	/* the source branch's own CI file, if any, is replaced on the launch's branch */
	buf_printf(&path, "/projects/%lld/repository/files/", (long long)p->id);
	mgl_enc(&path, p->ci_config_path);
	buf_puts(&path, "?ref=");
	mgl_enc(&path, source);
	if (glc_call("HEAD", path.data, mgl_tok, NULL, &status, NULL, NULL) == 0 && status == 200)
		ci_action = "update";
	buf_reset(&path);
	json_array_append_new(act.arr, json_pack("{s:s, s:s, s:s}", "action", ci_action,
	                                         "file_path", p->ci_config_path, "content", ci));
	body = json_pack("{s:s, s:s, s:s, s:o}", "branch", branch, "start_branch", source,
	                 "commit_message", message, "actions", act.arr);
	buf_printf(&path, "/projects/%lld/repository/commits", (long long)p->id);
	r = glc_call("POST", path.data, mgl_tok, body, &status, &out, NULL);
	if (r < 0 || status == 0 || status >= 500) {
		/* no verdict: look the branch up, it is ours when its head names our request */
		json_t *b = NULL;

		buf_reset(&path);
		buf_printf(&path, "/projects/%lld/repository/branches/", (long long)p->id);
		mgl_enc(&path, branch);
		r = -EIO;
		if (request_id &&
		    glc_call("GET", path.data, mgl_tok, NULL, &status, &b, NULL) == 0 &&
		    status == 200) {
			const json_t *c = json_object_get(b, "commit");
			const char *msg = jsonx_str(c, "message");
			const json_t *parents = json_object_get(c, "parent_ids");

			if (msg && strstr(msg, request_id) && json_is_array(parents) &&
			    json_string_value(json_array_get(parents, 0))) {
				snprintf(sha, 41, "%s",
				         json_string_value(json_array_get(parents, 0)));
				r = 0;
			}
		}
		json_decref(b);
		goto out;
	}
	if (status == 201) {
		const json_t *parents = json_object_get(out, "parent_ids");

		snprintf(sha, 41, "%s",
		         json_string_value(json_array_get(parents, 0))
		             ? json_string_value(json_array_get(parents, 0))
		             : "");
		r = 0;
	} else {
		const char *msg = jsonx_str(out, "message");

		/* lib/api/commits.rb answers 400 with the reason for both */
		r = msg && strstr(msg, "already exists") ? -EEXIST
		    : msg && (strstr(msg, "not exist") || strstr(msg, "not found") ||
		              strstr(msg, "Invalid reference"))
		        ? -ENOENT
		    : status == 403 ? -EACCES
		                    : -EINVAL;
	}
out:
	json_decref(out);
	json_decref(body);
	buf_free(&path);
	return r;
}

/* Starts the pipeline of a launch (lib/api/ci/pipelines.rb: POST /projects/:id/pipeline,
 * ref and variables [{key, value, variable_type}]). No secret travels with it: variables
 * given here cannot be masked, so reef-epf authenticates with the job's own CI_JOB_TOKEN,
 * which GitLab masks, and the service asks GitLab whose job it is (mgl_job_token). */
int mgl_launch_pipeline(struct hub_req *req, const struct hub_project *p, int64_t lid,
                        const char *branch, char *err, size_t n)
{
	char url[512], idstr[32], rid[80] = "";
	struct buf path = BUF_INIT(4096);
	json_t *vars, *body, *out = NULL;
	int64_t pid = 0;
	long status = 0;
	int r;

	snprintf(url, sizeof(url), "%s/api/v1/epf/experiments/%lld", req->hub->base_url,
	         (long long)lid);
	snprintf(idstr, sizeof(idstr), "%lld", (long long)lid);
	{
		sqlite3_stmt *st =
		    ci_db_prep("SELECT request_id FROM mg_launches WHERE id=?", "i", lid);

		if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
			snprintf(rid, sizeof(rid), "%s", (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	vars = json_pack("[{s:s,s:s,s:s}, {s:s,s:s,s:s}]", "key", "EPF_URL", "value", url,
	                 "variable_type", "env_var", "key", "EXPERIMENT_ID", "value", idstr,
	                 "variable_type", "env_var");
	if (rid[0])
		json_array_append_new(vars, json_pack("{s:s,s:s,s:s}", "key", "REEF_REQUEST_ID",
		                                      "value", rid, "variable_type", "env_var"));
	/* no secret: the EPF callbacks take the job's token only (mg_epf_route) */
	ci_db_exec(NULL, "UPDATE mg_launches SET secret_hash='', updated_at=? WHERE id=?", "di",
	           ci_now(), lid);
	body = json_pack("{s:s, s:o}", "ref", branch, "variables", vars);
	/* before the pipeline, so its first events reach the service */
	mgl_hook_ensure(p, mgl_tok, req->hub->base_url);
	buf_printf(&path, "/projects/%lld/pipeline", (long long)p->id);
	r = glc_call("POST", path.data, mgl_tok, body, &status, &out, NULL);
	if (r < 0 || status == 0 || status >= 500) {
		/* unknown outcome: the branch is the launch's own, so any pipeline on it is
		 * this one (its commit says [skip ci]) */
		json_decref(out);
		out = NULL;
		buf_reset(&path);
		buf_printf(&path, "/projects/%lld/pipelines?ref=", (long long)p->id);
		mgl_enc(&path, branch);
		if (glc_call("GET", path.data, mgl_tok, NULL, &status, &out, NULL) == 0 &&
		    status == 200 && json_array_size(out) > 0)
			pid = jsonx_int(json_array_get(out, 0), "id", 0);
	} else if (status == 201) {
		pid = jsonx_int(out, "id", 0);
	} else {
		const json_t *msg = json_object_get(out, "message");
		char *m = msg ? jsonx_dump(msg) : NULL;

		snprintf(err, n, "%ld %.400s", status, m ? m : "");
		free(m);
	}
	ci_lock();
	if (pid > 0)
		ci_db_exec(NULL,
		           "UPDATE mg_launches SET pipeline_id=?, job_id=NULL, status=?,"
		           " finished_at=NULL, updated_at=?, refreshed_at=? WHERE id=?",
		           "itddi", pid,
		           jsonx_str(out, "status") ? jsonx_str(out, "status") : "created",
		           ci_now(), ci_now(), lid);
	else
		ci_db_exec(NULL,
		           "UPDATE mg_launches SET status='failed', finished_at=?, updated_at=?"
		           " WHERE id=?",
		           "ddi", ci_now(), ci_now(), lid);
	ci_unlock();
	json_decref(out);
	json_decref(body);
	buf_free(&path);
	if (pid <= 0 && !err[0])
		snprintf(err, n, "GitLab did not answer");
	return pid > 0 ? 0 : -EIO;
}

int mgl_launch_commit(const struct hub_project *p, int64_t lid, const char *branch,
                      const char *source, const char *ci, const char *message, const char *slug,
                      const char *psha, const char *request_id)
{
	char sha[41] = "";
	int r = mgl_commit_branch(p, branch, source, ci, message, slug, psha, sha, request_id);

	if (r < 0) {
		ci_db_exec(NULL, "DELETE FROM mg_launches WHERE id=?", "i", lid);
		return r;
	}
	ci_db_exec(NULL, "UPDATE mg_launches SET source_sha=? WHERE id=?", "ti", sha, lid);
	return 0;
}

const char *mgl_web_base(void)
{
	return glc_base();
}

/* A launch's pipeline status and newest job from GitLab, when it may have changed. */
void mgl_launch_refresh(const struct hub_project *p, int64_t lid)
{
	sqlite3_stmt *st;
	int64_t pid = 0;
	char status[24] = "", path[256];
	double refreshed = 0;
	json_t *pl = NULL, *jobs = NULL;
	long code;

	if (!mgl_tok[0])
		return;
	st = ci_db_prep("SELECT pipeline_id, status, COALESCE(refreshed_at, 0) FROM mg_launches"
	                " WHERE id=?",
	                "i", lid);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		pid = sqlite3_column_int64(st, 0);
		snprintf(status, sizeof(status), "%s", (const char *)sqlite3_column_text(st, 1));
		refreshed = sqlite3_column_double(st, 2);
	}
	sqlite3_finalize(st);
	if (pid <= 0 || (ci_status_finished(status) && refreshed > 0) ||
	    ci_now() - refreshed < MGL_REFRESH_S)
		return;
	snprintf(path, sizeof(path), "/projects/%lld/pipelines/%lld", (long long)p->id,
	         (long long)pid);
	if (glc_call("GET", path, mgl_tok, NULL, &code, &pl, NULL) < 0 || code != 200 ||
	    !jsonx_str(pl, "status"))
		goto out;
	snprintf(path, sizeof(path), "/projects/%lld/pipelines/%lld/jobs?per_page=100",
	         (long long)p->id, (long long)pid);
	glc_call("GET", path, mgl_tok, NULL, &code, &jobs, NULL);
	ci_lock();
	ci_db_exec(NULL,
	           "UPDATE mg_launches SET status=?1, refreshed_at=?2, updated_at=CASE WHEN"
	           " status=?1 THEN updated_at ELSE ?2 END, finished_at=CASE WHEN ?1 IN"
	           " ('success','failed','canceled','skipped') THEN COALESCE(finished_at, ?2)"
	           " ELSE NULL END WHERE id=?3",
	           "tdi", jsonx_str(pl, "status"), ci_now(), lid);
	if (code == 200 && json_array_size(jobs) > 0) {
		int64_t best = 0;
		size_t i;
		json_t *j;

		json_array_foreach(jobs, i, j) if (jsonx_int(j, "id", 0) > best) best =
		    jsonx_int(j, "id", 0);
		ci_db_exec(NULL, "UPDATE mg_launches SET job_id=? WHERE id=?", "ii", best, lid);
	}
	ci_unlock();
out:
	json_decref(pl);
	json_decref(jobs);
}

int mgl_pipeline_cancel(const struct hub_project *p, int64_t pid)
{
	char path[256];
	long code;
	json_t *out = NULL;
	int r;

	snprintf(path, sizeof(path), "/projects/%lld/pipelines/%lld/cancel", (long long)p->id,
	         (long long)pid);
	r = glc_call("POST", path, mgl_tok, NULL, &code, &out, NULL);
	json_decref(out);
	return r < 0 ? r : code < 300 ? 0 : -EACCES;
}

/* ---- usage: GitLab's job durations, artifact sizes and project statistics ---- */

static void mgl_project_usage(int64_t pid, double *seconds, uint64_t *git, uint64_t *lfs,
                              uint64_t *arts, bool *partial)
{
	char path[256];
	json_t *v = NULL;
	long code;

	snprintf(path, sizeof(path), "/projects/%lld?statistics=true", (long long)pid);
	if (glc_call("GET", path, mgl_tok, NULL, &code, &v, NULL) == 0 && code == 200) {
		const json_t *s = json_object_get(v, "statistics");

		*git += (uint64_t)jsonx_int(s, "repository_size", 0);
		*lfs += (uint64_t)jsonx_int(s, "lfs_objects_size", 0);
	}
	json_decref(v);
	for (int page = 1; page <= 50; page++) {
		json_t *jobs = NULL, *j;
		size_t i, n;

		snprintf(path, sizeof(path), "/projects/%lld/jobs?per_page=100&page=%d",
		         (long long)pid, page);
		if (glc_call("GET", path, mgl_tok, NULL, &code, &jobs, NULL) < 0 || code != 200 ||
		    !json_is_array(jobs)) {
			json_decref(jobs);
			break;
		}
		json_array_foreach(jobs, i, j)
		{
			const json_t *a, *d = json_object_get(j, "duration");
			size_t k;

			if (json_is_number(d))
				*seconds += json_number_value(d);
			json_array_foreach(json_object_get(j, "artifacts"), k, a) *arts +=
			    (uint64_t)jsonx_int(a, "size", 0);
		}
		n = json_array_size(jobs);
		json_decref(jobs);
		if (n < 100)
			break;
		if (page == 50)
			*partial = true; /* more than 5000 jobs: the oldest are not counted */
	}
}

/* Every page of a GitLab list (offset pagination, per_page=100; a short page is the
 * last), at most MGL_LIST_PAGES pages: *partial is set when more were left. NULL when
 * GitLab did not answer the first page. */
static json_t *mgl_list_all(const char *path, bool *partial)
{
	json_t *all = json_array();
	char url[1200];

	for (int page = 1; page <= MGL_LIST_PAGES; page++) {
		json_t *arr = NULL;
		long code;
		size_t n;

		snprintf(url, sizeof(url), "%s%sper_page=100&page=%d", path,
		         strchr(path, '?') ? "&" : "?", page);
		if (glc_call("GET", url, mgl_tok, NULL, &code, &arr, NULL) < 0 || code != 200 ||
		    !json_is_array(arr)) {
			json_decref(arr);
			if (page == 1) {
				json_decref(all);
				return NULL;
			}
			*partial = true; /* a later page failed: what was read is still true */
			break;
		}
		n = json_array_size(arr);
		json_array_extend(all, arr);
		json_decref(arr);
		if (n < 100)
			break;
		if (page == MGL_LIST_PAGES)
			*partial = true;
	}
	return all;
}

/* Usage of the namespaces the caller belongs to (GET /namespaces lists exactly those,
 * doc/api/namespaces.md), or of one of them: their projects the caller is a member of
 * (GET /projects?membership=true), every page up to the cap. */
void mgl_usage(struct hub_req *req, struct hub_resp *resp, const char *ns_path)
{
	json_t *nss = NULL, *projects = NULL, *arr = json_array(), *ns;
	bool partial = false;
	size_t i;

	(void)req;
	nss = mgl_list_all("/namespaces", &partial);
	/* order_by=id: offset pages stay stable while projects are created meanwhile */
	if (nss)
		projects = mgl_list_all("/projects?membership=true&order_by=id&sort=asc", &partial);
	if (!nss || !projects) {
		hub_resp_error(resp, 502, "502 GitLab did not answer");
		goto out;
	}
	json_array_foreach(nss, i, ns)
	{
		const char *fp = jsonx_str(ns, "full_path"), *kind = jsonx_str(ns, "kind");
		double seconds = 0;
		uint64_t git = 0, lfs = 0, arts = 0;
		json_t *pj;
		size_t k;

		if (!fp || (ns_path && strcasecmp(fp, ns_path)))
			continue;
		json_array_foreach(projects, k, pj)
		{
			const char *pp = jsonx_str(json_object_get(pj, "namespace"), "full_path");
			size_t n = strlen(fp);

			if (pp && (!strcmp(pp, fp) || (!strncmp(pp, fp, n) && pp[n] == '/')))
				mgl_project_usage(jsonx_int(pj, "id", 0), &seconds, &git, &lfs,
				                  &arts, &partial);
		}
		/* transfer_bytes: GitLab's REST API reports no transfer per project or
		 * namespace (docs/mgmt-api.md) */
		json_array_append_new(
		    arr, json_pack("{s:{s:I, s:s, s:s}, s:f, s:{s:I, s:I, s:I, s:I}, s:I, s:b}",
		                   "namespace", "id", (json_int_t)jsonx_int(ns, "id", 0),
		                   "full_path", fp, "kind", kind ? kind : "group",
		                   "pipeline_seconds", seconds, "storage_bytes", "git",
		                   (json_int_t)git, "lfs", (json_int_t)lfs, "artifacts",
		                   (json_int_t)arts, "total", (json_int_t)(git + lfs + arts),
		                   "transfer_bytes", (json_int_t)0, "partial", partial));
	}
	if (!ns_path) {
		hub_resp_json(resp, 200, json_incref(arr));
	} else if (json_array_size(arr) == 0) {
		hub_resp_error(resp, 404, "404 Namespace Not Found");
	} else {
		hub_resp_json(resp, 200, json_incref(json_array_get(arr, 0)));
	}
out:
	json_decref(arr);
	json_decref(nss);
	json_decref(projects);
}
