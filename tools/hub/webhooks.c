/* Project webhooks as GitLab has them (gitlabhq lib/api/project_hooks.rb; payloads:
 * doc/user/project/integrations/webhook_events.md), for pipeline and job events:
 *   routes     GET/POST /projects/:id/hooks, DELETE /projects/:id/hooks/:hook_id
 *              (maintainers, as GitLab's admin_project)
 *   events     after every step of a pipeline (runner.c calls ci_events with the lock
 *              held) each job whose status moved since it was last told gets a
 *              "Job Hook", and the pipeline a "Pipeline Hook" when its status moved
 *   delivery   one thread POSTs the queued events (JSON, X-Gitlab-Event, X-Gitlab-Token,
 *              10 s deadline, no redirects); one attempt, as GitLab's (a failed hook is
 *              not retried); the queue holds at most WH_QUEUE_MAX events, in memory
 * A hook's token is sent as X-Gitlab-Token and so is stored as given (GitLab keeps it
 * encrypted); it is never shown by the API. */
#include "webhooks.h"

#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "hub_ci.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "runner.h"

#define WH_QUEUE_MAX  1000
#define WH_MAX_HOOKS  100 /* GitLab's default plan limit `project_hooks` */
#define WH_MAX_URL    2048
#define WH_MAX_TOKEN  255
#define WH_TIMEOUT_S  10
#define WH_MAX_BUILDS 200

static const char wh_schema[] =
    "CREATE TABLE IF NOT EXISTS project_hooks("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER NOT NULL, url TEXT NOT NULL,"
    " token TEXT, push_events INTEGER NOT NULL, pipeline_events INTEGER NOT NULL,"
    " job_events INTEGER NOT NULL, enable_ssl_verification INTEGER NOT NULL,"
    " created_at REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS project_hooks_project ON project_hooks(project_id);";
/* the status each job and pipeline was last announced with; fails harmlessly when the
 * column exists */
static const char *const wh_alters[] = {
    "ALTER TABLE ci_jobs ADD COLUMN hook_status TEXT;",
    "ALTER TABLE ci_pipelines ADD COLUMN hook_status TEXT;",
};

struct wh_event {
	struct wh_event *next;
	bool job;
	int64_t project_id, pipeline_id, job_id;
	char status[24];
};

static struct {
	struct hub *hub;
	pthread_t thread;
	bool started, stopping;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wh_event *head, *tail;
	size_t n;
} wh = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* ---- payloads (built by the delivery thread, outside the runner's lock) ---- */

/* GitLab's webhook time format: "2016-08-12 15:23:28 UTC". */
static json_t *wh_time(sqlite3_stmt *st, int col)
{
	char out[40];
	time_t t;
	struct tm tm;

	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		return json_null();
	t = (time_t)sqlite3_column_double(st, col);
	gmtime_r(&t, &tm);
	strftime(out, sizeof(out), "%Y-%m-%d %H:%M:%S UTC", &tm);
	return json_string(out);
}

static json_t *wh_text(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);

	return s ? json_string(s) : json_null();
}

static json_t *wh_span(sqlite3_stmt *st, int from, int to)
{
	if (sqlite3_column_type(st, from) == SQLITE_NULL ||
	    sqlite3_column_type(st, to) == SQLITE_NULL)
		return json_null();
	return json_real(sqlite3_column_double(st, to) - sqlite3_column_double(st, from));
}

static json_t *wh_user(int64_t id)
{
	struct hub_user u;

	if (id <= 0 || hub_user_by_id(wh.hub, id, &u) < 0)
		return json_null();
	return json_pack("{s:I, s:s, s:s, s:n, s:s}", "id", (json_int_t)u.id, "name", u.name,
	                 "username", u.username, "avatar_url", "email", u.email);
}

static int wh_visibility_level(const char *v)
{
	return !strcmp(v, "public") ? 20 : !strcmp(v, "internal") ? 10 : 0;
}

static json_t *wh_project(const struct hub_project *p)
{
	char web[2048], git[2060];

	snprintf(web, sizeof(web), "%s/%s", wh.hub->base_url, p->path_with_namespace);
	snprintf(git, sizeof(git), "%s.git", web);
	return json_pack("{s:I, s:s, s:s, s:s, s:n, s:n, s:s, s:s, s:I, s:s, s:s, s:s}", "id",
	                 (json_int_t)p->id, "name", p->name, "description", "", "web_url", web,
	                 "avatar_url", "git_ssh_url", "git_http_url", git, "namespace",
	                 p->path_with_namespace, "visibility_level",
	                 (json_int_t)wh_visibility_level(p->visibility), "path_with_namespace",
	                 p->path_with_namespace, "default_branch", p->default_branch,
	                 "ci_config_path", p->ci_config_path);
}

static const char wh_pipeline_cols[] =
    "SELECT id, iid, ref, tag, sha, source, created_at, started_at, finished_at, user_id"
    " FROM ci_pipelines WHERE id=?";
static const char wh_job_cols[] =
    "SELECT id, name, stage, status, created_at, queued_at, started_at, finished_at,"
    " allow_failure, failure_reason, artifacts_size FROM ci_jobs WHERE pipeline_id=?";

static json_t *wh_payload(const struct wh_event *ev, const struct hub_project *p)
{
	json_t *o = NULL, *commit = NULL, *user = NULL;
	sqlite3_stmt *pl, *jobs = NULL;
	char sha[48] = "", ref[HUB_MAX_PATH] = "", url[2048];
	const char *zero = "0000000000000000000000000000000000000000";
	int64_t uid = 0;

	ci_lock();
	pl = ci_db_prep(wh_pipeline_cols, "i", ev->pipeline_id);
	if (!pl || sqlite3_step(pl) != SQLITE_ROW)
		goto out;
	snprintf(sha, sizeof(sha), "%s", (const char *)sqlite3_column_text(pl, 4));
	snprintf(ref, sizeof(ref), "%s", (const char *)sqlite3_column_text(pl, 2));
	uid = sqlite3_column_int64(pl, 9);
	if (!ev->job) {
		json_t *builds = json_array(), *stages = json_array();
		size_t k;

		o = json_object();
		snprintf(url, sizeof(url), "%s/%s/-/pipelines/%lld", wh.hub->base_url,
		         p->path_with_namespace, (long long)ev->pipeline_id);
		json_object_set_new(
		    o, "object_attributes",
		    json_pack("{s:I, s:I, s:n, s:s, s:b, s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, "
		              "s:o, s:n, s:[], s:s}",
		              "id", (json_int_t)ev->pipeline_id, "iid",
		              (json_int_t)sqlite3_column_int64(pl, 1), "name", "ref", ref, "tag",
		              sqlite3_column_int(pl, 3), "sha", sha, "before_sha", zero, "source",
		              wh_text(pl, 5), "status", ev->status, "detailed_status", ev->status,
		              "stages", json_incref(stages), "created_at", wh_time(pl, 6),
		              "finished_at", wh_time(pl, 8), "duration", wh_span(pl, 7, 8),
		              "queued_duration", "variables", "url", url));
		char sql[512];

		snprintf(sql, sizeof(sql), "%s ORDER BY stage_idx, id", wh_job_cols);
		jobs = ci_db_prep(sql, "i", ev->pipeline_id);
		while (jobs && sqlite3_step(jobs) == SQLITE_ROW &&
		       json_array_size(builds) < WH_MAX_BUILDS) {
			const char *stage = (const char *)sqlite3_column_text(jobs, 2);
			json_t *af = json_pack("{s:n, s:n}", "filename", "size");
			bool seen = false;
			json_t *s;

			if (sqlite3_column_type(jobs, 10) != SQLITE_NULL) {
				json_object_set_new(af, "filename", json_string("artifacts.zip"));
				json_object_set_new(af, "size",
				                    json_integer(sqlite3_column_int64(jobs, 10)));
			}
			/* the stages in their order of first appearance (stages is shared with
			 * object_attributes, so it fills in there too) */
			json_array_foreach(stages, k, s)
			{
				if (!strcmp(json_string_value(s), stage ? stage : ""))
					seen = true;
			}
			if (!seen)
				json_array_append_new(stages, json_string(stage ? stage : ""));
			json_array_append_new(
			    builds,
			    json_pack(
			        "{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:b, "
			        "s:b, s:n, s:n, s:o, s:n}",
			        "id", (json_int_t)sqlite3_column_int64(jobs, 0), "stage",
			        wh_text(jobs, 2), "name", wh_text(jobs, 1), "status",
			        wh_text(jobs, 3), "created_at", wh_time(jobs, 4), "started_at",
			        wh_time(jobs, 6), "finished_at", wh_time(jobs, 7), "duration",
			        wh_span(jobs, 6, 7), "queued_duration", wh_span(jobs, 5, 6),
			        "failure_reason", wh_text(jobs, 9), "when", "on_success", "manual",
			        0, "allow_failure", sqlite3_column_int(jobs, 8), "user", "runner",
			        "artifacts_file", af, "environment"));
		}
		json_decref(stages);
		json_object_set_new(o, "builds", builds);
		json_object_set_new(o, "merge_request", json_null());
	} else {
		char sql[512];

		snprintf(sql, sizeof(sql), "%s AND id=?", wh_job_cols);
		jobs = ci_db_prep(sql, "ii", ev->pipeline_id, ev->job_id);
		if (!jobs || sqlite3_step(jobs) != SQLITE_ROW)
			goto out;
		o = json_pack(
		    "{s:s, s:s, s:b, s:s, s:s, s:i, s:I, s:o, s:o, s:s, s:o, s:o, s:o, s:o, "
		    "s:o, s:b, s:o, s:I, s:n, s:I, s:s, s:n}",
		    "object_kind", "build", "ref", ref, "tag", sqlite3_column_int(pl, 3),
		    "before_sha", zero, "sha", sha, "retries_count", 0, "build_id",
		    (json_int_t)ev->job_id, "build_name", wh_text(jobs, 1), "build_stage",
		    wh_text(jobs, 2), "build_status", ev->status, "build_created_at",
		    wh_time(jobs, 4), "build_started_at", wh_time(jobs, 6), "build_finished_at",
		    wh_time(jobs, 7), "build_duration", wh_span(jobs, 6, 7),
		    "build_queued_duration", wh_span(jobs, 5, 6), "build_allow_failure",
		    sqlite3_column_int(jobs, 8), "build_failure_reason", wh_text(jobs, 9),
		    "pipeline_id", (json_int_t)ev->pipeline_id, "runner", "project_id",
		    (json_int_t)p->id, "project_name", p->name, "environment");
	}
out:
	sqlite3_finalize(pl);
	sqlite3_finalize(jobs);
	ci_unlock();
	if (!o)
		return NULL;
	/* outside the lock: the core's users and the repository */
	user = wh_user(uid);
	commit = hub_ci_commit_json(p, sha);
	json_object_set_new(o, "user", user);
	json_object_set_new(o, "project", wh_project(p));
	if (!ev->job) {
		json_object_set_new(o, "object_kind", json_string("pipeline"));
		snprintf(url, sizeof(url), "%s/%s/-/commit/%s", wh.hub->base_url,
		         p->path_with_namespace, sha);
		json_object_set_new(
		    o, "commit",
		    json_pack("{s:s, s:O, s:O, s:O, s:s, s:{s:O, s:O}}", "id", sha, "message",
		              json_object_get(commit, "message") ?: json_null(), "title",
		              json_object_get(commit, "title") ?: json_null(), "timestamp",
		              json_object_get(commit, "committed_date") ?: json_null(), "url", url,
		              "author", "name",
		              json_object_get(commit, "author_name") ?: json_null(), "email",
		              json_object_get(commit, "author_email") ?: json_null()));
	} else {
		json_object_set_new(
		    o, "commit",
		    json_pack("{s:I, s:n, s:s, s:O, s:O, s:O, s:n}", "id",
		              (json_int_t)ev->pipeline_id, "name", "sha", sha, "message",
		              json_object_get(commit, "message") ?: json_null(), "author_name",
		              json_object_get(commit, "author_name") ?: json_null(), "author_email",
		              json_object_get(commit, "author_email") ?: json_null(),
		              "author_url"));
		json_object_set_new(
		    o, "repository",
		    json_pack("{s:s, s:O, s:s, s:O, s:O, s:n, s:I}", "name", p->name, "url",
		              json_object_get(json_object_get(o, "project"), "git_http_url"),
		              "description", "", "homepage",
		              json_object_get(json_object_get(o, "project"), "web_url"),
		              "git_http_url",
		              json_object_get(json_object_get(o, "project"), "git_http_url"),
		              "git_ssh_url", "visibility_level",
		              (json_int_t)wh_visibility_level(p->visibility)));
	}
	json_decref(commit);
	return o;
}

/* ---- delivery ---- */

/* An address of this machine or of a private network, which a hook may not reach unless
 * the hub allows local hooks (GitLab's Gitlab::HTTP_V2::UrlBlocker refuses loopback,
 * private, link-local, shared and unspecified addresses, and IPv4 mapped into IPv6). */
static bool wh_addr_local(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr);

		return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
		       (a >> 16) == 0xA9FE ||              /* 169.254/16 link-local */
		       (a >> 20) == 0xAC1 ||               /* 172.16/12 */
		       (a >> 16) == 0xC0A8 ||              /* 192.168/16 */
		       (a >> 22) == (0x64400000u >> 22) || /* 100.64/10 shared */
		       a == 0xFFFFFFFFu;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			struct sockaddr_in v4 = {.sin_family = AF_INET};

			memcpy(&v4.sin_addr, a->s6_addr + 12, 4);
			return wh_addr_local((const struct sockaddr *)&v4);
		}
		return IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) ||
		       IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a) ||
		       (a->s6_addr[0] & 0xFE) == 0xFC; /* fc00::/7 unique local */
	}
	return true;
}

/* Whether the hook URL's host names a local address (any of its addresses): checked when
 * a hook is added, and again on the connected address at delivery (DNS may change). */
static bool wh_url_local(const char *url)
{
	char host[256];
	const char *h = strstr(url, "://"), *end, *at;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	bool local = false;
	size_t n;

	if (!h)
		return true;
	h += 3;
	end = h + strcspn(h, "/?#"); /* the authority; the host follows any user info */
	at = memrchr(h, '@', (size_t)(end - h));
	if (at)
		h = at + 1;
	if (*h == '[') {
		end = strchr(++h, ']');
		if (!end)
			return true;
	} else {
		end = h + strcspn(h, ":/?#");
	}
	n = (size_t)(end - h);
	if (n == 0 || n >= sizeof(host))
		return true;
	memcpy(host, h, n);
	host[n] = '\0';
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false; /* unknown now: delivery checks the address it connects to */
	for (struct addrinfo *ai = res; ai && !local; ai = ai->ai_next)
		local = wh_addr_local(ai->ai_addr);
	freeaddrinfo(res);
	return local;
}

static curl_socket_t wh_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	(void)arg;
	(void)purpose;
	if (!wh.hub->allow_local_webhooks && wh_addr_local(&a->addr)) {
		log_warn("webhooks: a hook's address is on the local network: not delivered");
		return CURL_SOCKET_BAD;
	}
	return socket(a->family, a->socktype, a->protocol);
}

static size_t wh_discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static void wh_post(const char *url, const char *token, const char *event, const char *body)
{
	struct curl_slist *h = NULL;
	char hdr[WH_MAX_TOKEN + 64];
	CURL *c = curl_easy_init();
	CURLcode cc;
	long status = 0;

	if (!c)
		return;
	snprintf(hdr, sizeof(hdr), "X-Gitlab-Event: %s", event);
	h = curl_slist_append(h, hdr);
	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, "User-Agent: GitLab/16.0.0-reef");
	if (token && *token) {
		snprintf(hdr, sizeof(hdr), "X-Gitlab-Token: %s", token);
		h = curl_slist_append(h, hdr);
		explicit_bzero(hdr, sizeof(hdr));
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)WH_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, wh_open_socket);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*"); /* the address checked is the one reached */
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, wh_discard);
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK || status < 200 || status >= 300)
		log_warn("webhooks: %s to a hook failed: %s", event,
		         cc != CURLE_OK ? curl_easy_strerror(cc) : "non-2xx answer");
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
}

static void wh_deliver(const struct wh_event *ev)
{
	struct hub_project p;
	char id[32];
	json_t *payload;
	char *body;
	sqlite3_stmt *st;
	struct {
		char url[WH_MAX_URL + 1], token[WH_MAX_TOKEN + 1];
	} hooks[WH_MAX_HOOKS];
	size_t n = 0;

	snprintf(id, sizeof(id), "%lld", (long long)ev->project_id);
	if (hub_project_load(wh.hub, id, &p) < 0)
		return;
	ci_lock();
	st = ci_db_prep(ev->job ? "SELECT url, COALESCE(token, '') FROM project_hooks WHERE"
	                          " project_id=? AND job_events=1 ORDER BY id"
	                        : "SELECT url, COALESCE(token, '') FROM project_hooks WHERE"
	                          " project_id=? AND pipeline_events=1 ORDER BY id",
	                "i", ev->project_id);
	while (st && n < WH_MAX_HOOKS && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(hooks[n].url, sizeof(hooks[n].url), "%s", sqlite3_column_text(st, 0));
		snprintf(hooks[n].token, sizeof(hooks[n].token), "%s", sqlite3_column_text(st, 1));
		n++;
	}
	sqlite3_finalize(st);
	ci_unlock();
	if (n == 0 || !(payload = wh_payload(ev, &p)))
		return;
	body = jsonx_dump(payload);
	json_decref(payload);
	for (size_t i = 0; body && i < n; i++)
		wh_post(hooks[i].url, hooks[i].token, ev->job ? "Job Hook" : "Pipeline Hook", body);
	explicit_bzero(hooks, sizeof(hooks));
	free(body);
}

static void *wh_thread(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&wh.lock);
	while (!wh.stopping) {
		struct wh_event *ev = wh.head;

		if (!ev) {
			pthread_cond_wait(&wh.cond, &wh.lock);
			continue;
		}
		wh.head = ev->next;
		if (!wh.head)
			wh.tail = NULL;
		wh.n--;
		pthread_mutex_unlock(&wh.lock);
		wh_deliver(ev);
		free(ev);
		pthread_mutex_lock(&wh.lock);
	}
	pthread_mutex_unlock(&wh.lock);
	return NULL;
}

static void wh_enqueue(bool job, int64_t project_id, int64_t pipeline_id, int64_t job_id,
                       const char *status)
{
	struct wh_event *ev;

	pthread_mutex_lock(&wh.lock);
	if (wh.n >= WH_QUEUE_MAX || !(ev = calloc(1, sizeof(*ev)))) {
		pthread_mutex_unlock(&wh.lock);
		log_warn("webhooks: queue full, an event for pipeline %lld is dropped",
		         (long long)pipeline_id);
		return;
	}
	ev->job = job;
	ev->project_id = project_id;
	ev->pipeline_id = pipeline_id;
	ev->job_id = job_id;
	snprintf(ev->status, sizeof(ev->status), "%s", status ? status : "");
	if (wh.tail)
		wh.tail->next = ev;
	else
		wh.head = ev;
	wh.tail = ev;
	wh.n++;
	pthread_cond_signal(&wh.cond);
	pthread_mutex_unlock(&wh.lock);
}

/* Lock held (runner.c): what moved since it was last announced. */
static void wh_on_events(int64_t pipeline_id)
{
	sqlite3_stmt *st;
	int64_t project_id = 0;
	bool pipe_hooks = false, job_hooks = false;
	char status[24] = "", told[24] = "";

	st = ci_db_prep("SELECT project_id, status, COALESCE(hook_status, '') FROM ci_pipelines"
	                " WHERE id=?",
	                "i", pipeline_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		project_id = sqlite3_column_int64(st, 0);
		snprintf(status, sizeof(status), "%s", sqlite3_column_text(st, 1));
		snprintf(told, sizeof(told), "%s", sqlite3_column_text(st, 2));
	}
	sqlite3_finalize(st);
	st = ci_db_prep("SELECT MAX(pipeline_events), MAX(job_events) FROM project_hooks WHERE"
	                " project_id=?",
	                "i", project_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		pipe_hooks = sqlite3_column_int(st, 0) == 1;
		job_hooks = sqlite3_column_int(st, 1) == 1;
	}
	sqlite3_finalize(st);
	if (!project_id || (!pipe_hooks && !job_hooks))
		return;
	/* jobs first: a pipeline's end comes after its last job's */
	st = ci_db_prep("SELECT id, status FROM ci_jobs WHERE pipeline_id=? AND"
	                " status IS NOT COALESCE(hook_status, '') ORDER BY id",
	                "i", pipeline_id);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		int64_t jid = sqlite3_column_int64(st, 0);
		const char *js = (const char *)sqlite3_column_text(st, 1);

		if (job_hooks)
			wh_enqueue(true, project_id, pipeline_id, jid, js);
		ci_db_exec(NULL, "UPDATE ci_jobs SET hook_status=? WHERE id=?", "ti", js, jid);
	}
	sqlite3_finalize(st);
	if (strcmp(status, told)) {
		if (pipe_hooks)
			wh_enqueue(false, project_id, pipeline_id, 0, status);
		ci_db_exec(NULL, "UPDATE ci_pipelines SET hook_status=? WHERE id=?", "ti", status,
		           pipeline_id);
	}
}

int hub_webhooks_init(struct hub *h)
{
	char *errmsg = NULL;

	wh.hub = h;
	if (sqlite3_exec(ci_db(), wh_schema, NULL, NULL, &errmsg) != SQLITE_OK) {
		log_error("webhooks: schema: %s", errmsg ? errmsg : "?");
		sqlite3_free(errmsg);
		return -EIO;
	}
	for (size_t i = 0; i < sizeof(wh_alters) / sizeof(wh_alters[0]); i++)
		sqlite3_exec(ci_db(), wh_alters[i], NULL, NULL, NULL); /* exists: fine */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (pthread_create(&wh.thread, NULL, wh_thread, NULL) != 0)
		return -EAGAIN;
	wh.started = true;
	ci_events_hook_set(wh_on_events);
	return 0;
}

void hub_webhooks_stop(void)
{
	struct wh_event *ev;

	if (!wh.started)
		return;
	pthread_mutex_lock(&wh.lock);
	wh.stopping = true;
	pthread_cond_broadcast(&wh.cond);
	pthread_mutex_unlock(&wh.lock);
	pthread_join(wh.thread, NULL);
	while ((ev = wh.head)) {
		wh.head = ev->next;
		free(ev);
	}
	wh.started = false;
}

/* ---- routes ---- */

static json_t *wh_hook_json(sqlite3_stmt *st)
{
	char iso[32];

	hub_time_iso((int64_t)sqlite3_column_double(st, 7), iso);
	return json_pack("{s:I, s:s, s:I, s:b, s:b, s:b, s:b, s:s, s:s}", "id",
	                 (json_int_t)sqlite3_column_int64(st, 0), "url",
	                 (const char *)sqlite3_column_text(st, 1), "project_id",
	                 (json_int_t)sqlite3_column_int64(st, 2), "push_events",
	                 sqlite3_column_int(st, 3), "pipeline_events", sqlite3_column_int(st, 4),
	                 "job_events", sqlite3_column_int(st, 5), "enable_ssl_verification",
	                 sqlite3_column_int(st, 6), "created_at", iso, "alert_status",
	                 "executable");
}

static const char wh_cols[] = "SELECT id, url, project_id, push_events, pipeline_events,"
                              " job_events, enable_ssl_verification, created_at FROM"
                              " project_hooks";

static bool wh_url_ok(const char *u)
{
	size_t n = u ? strlen(u) : 0;

	if (n == 0 || n > WH_MAX_URL || strpbrk(u, " \t\r\n"))
		return false;
	return (!strncmp(u, "http://", 7) && n > 7) || (!strncmp(u, "https://", 8) && n > 8);
}

static int wh_bool(const json_t *params, const char *key, int dflt)
{
	const json_t *v = json_object_get(params, key);
	const char *s = json_string_value(v);

	if (json_is_boolean(v))
		return json_is_true(v);
	if (s)
		return !strcmp(s, "true") || !strcmp(s, "1");
	return dflt;
}

void hub_webhooks_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                        const char *hook_seg)
{
	json_t *params = NULL, *arr;
	sqlite3_stmt *st;
	char sql[512];
	int64_t id = 0;

	if ((int)p->access < HUB_ACCESS_MAINTAINER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (hook_seg) {
		char *end;

		id = strtoll(hook_seg, &end, 10);
		if (*end || id <= 0) {
			hub_resp_error(resp, 404, "404 Hook Not Found");
			return;
		}
	}
	ci_lock();
	if (!hook_seg && (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"))) {
		arr = json_array();
		snprintf(sql, sizeof(sql), "%s WHERE project_id=? ORDER BY id", wh_cols);
		st = ci_db_prep(sql, "i", p->id);
		while (st && sqlite3_step(st) == SQLITE_ROW)
			json_array_append_new(arr, wh_hook_json(st));
		sqlite3_finalize(st);
		hub_resp_json(resp, 200, arr);
	} else if (hook_seg && (!strcmp(req->method, "GET") || !strcmp(req->method, "DELETE"))) {
		snprintf(sql, sizeof(sql), "%s WHERE project_id=? AND id=?", wh_cols);
		st = ci_db_prep(sql, "ii", p->id, id);
		if (!st || sqlite3_step(st) != SQLITE_ROW) {
			hub_resp_error(resp, 404, "404 Hook Not Found");
		} else if (!strcmp(req->method, "GET")) {
			hub_resp_json(resp, 200, wh_hook_json(st));
		} else {
			ci_db_exec(NULL, "DELETE FROM project_hooks WHERE id=?", "i", id);
			hub_resp_raw(resp, 204, "application/json", "", 0);
		}
		sqlite3_finalize(st);
	} else if (!hook_seg && !strcmp(req->method, "POST")) {
		const char *url, *token;
		int64_t count = 0, nid = 0;

		if (hub_req_params(req, &params) < 0) {
			hub_resp_error(resp, 400, "400 Bad request");
			goto out;
		}
		url = jsonx_str(params, "url");
		token = jsonx_str(params, "token");
		if (!url) {
			hub_resp_missing(resp, "url");
			goto out;
		}
		if (!wh_url_ok(url)) {
			hub_resp_json(
			    resp, 422,
			    json_pack("{s:{s:[s]}}", "message", "url",
			              "is blocked: Only allowed schemes are http, https"));
			goto out;
		}
		if (!wh.hub->allow_local_webhooks && wh_url_local(url)) {
			hub_resp_json(resp, 422,
			              json_pack("{s:{s:[s]}}", "message", "url",
			                        "is blocked: Requests to the local network are not "
			                        "allowed"));
			goto out;
		}
		if (token && strlen(token) > WH_MAX_TOKEN) {
			hub_resp_error(resp, 400, "400 (Bad request) \"token\" is too long");
			goto out;
		}
		st =
		    ci_db_prep("SELECT COUNT(*) FROM project_hooks WHERE project_id=?", "i", p->id);
		if (st && sqlite3_step(st) == SQLITE_ROW)
			count = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
		if (count >= WH_MAX_HOOKS) {
			hub_resp_error(resp, 422,
			               "422 Maximum number of project hooks (100) exceeded");
			goto out;
		}
		if (ci_db_exec(
		        &nid,
		        "INSERT INTO project_hooks(project_id, url, token, push_events,"
		        " pipeline_events, job_events, enable_ssl_verification, created_at)"
		        " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
		        "ittiiiid", p->id, url, token, (int64_t)wh_bool(params, "push_events", 1),
		        (int64_t)wh_bool(params, "pipeline_events", 0),
		        (int64_t)wh_bool(params, "job_events", 0),
		        (int64_t)wh_bool(params, "enable_ssl_verification", 1), ci_now()) < 0) {
			hub_resp_error(resp, 500, "500 Internal Server Error");
			goto out;
		}
		/* what exists now is not news to the new hook */
		ci_db_exec(NULL, "UPDATE ci_pipelines SET hook_status=status WHERE project_id=?",
		           "i", p->id);
		ci_db_exec(NULL, "UPDATE ci_jobs SET hook_status=status WHERE project_id=?", "i",
		           p->id);
		snprintf(sql, sizeof(sql), "%s WHERE id=?", wh_cols);
		st = ci_db_prep(sql, "i", nid);
		if (st && sqlite3_step(st) == SQLITE_ROW)
			hub_resp_json(resp, 201, wh_hook_json(st));
		else
			hub_resp_error(resp, 500, "500 Internal Server Error");
		sqlite3_finalize(st);
	} else {
		hub_resp_not_found(resp);
	}
out:
	ci_unlock();
	json_decref(params);
}
