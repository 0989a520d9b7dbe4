/* GitLab v4 pipeline, job, trace, artifact and trigger routes over the runner's store,
 * with GitLab's paths, fields and status codes (python-gitlab 3.12 is the reference
 * client). Trigger tokens, in the simplest honest form: a CI job token of a running job
 * of the same project, or a personal access token of a user with developer access. */
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "core.h"
#include "hub_ci.h"
#include "idem.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "runner.h"

#define PL_MAX_VARS      200
#define PL_MAX_VAR_VALUE ((size_t)64 << 10)

static const char pl_pipeline_cols[] =
    "id, iid, project_id, ref, sha, tag, status, source, user_id, yaml_errors, created_at,"
    " updated_at, started_at, finished_at";

static void pl_time(json_t *o, const char *key, sqlite3_stmt *st, int col)
{
	char iso[32];

	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		json_object_set_new(o, key, json_null());
		return;
	}
	hub_time_iso((int64_t)sqlite3_column_double(st, col), iso);
	json_object_set_new(o, key, json_string(iso));
}

static json_t *pl_col_str(sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	return s ? json_string((const char *)s) : json_null();
}

/* Seconds between two REAL columns, or null when either is missing. */
static json_t *pl_duration(sqlite3_stmt *st, int from, int to)
{
	if (sqlite3_column_type(st, from) == SQLITE_NULL)
		return json_null();
	if (sqlite3_column_type(st, to) == SQLITE_NULL)
		return json_real(ci_now() - sqlite3_column_double(st, from));
	return json_real(sqlite3_column_double(st, to) - sqlite3_column_double(st, from));
}

static json_t *pl_user_json(struct hub *h, int64_t id)
{
	struct hub_user u;
	char url[512];

	if (id <= 0 || hub_user_by_id(h, id, &u) < 0)
		return json_null();
	snprintf(url, sizeof(url), "%s/%s", h->base_url, u.username);
	return json_pack("{s:I, s:s, s:s, s:s, s:n, s:s}", "id", (json_int_t)u.id, "username",
	                 u.username, "name", u.name, "state", "active", "avatar_url", "web_url",
	                 url);
}

static json_t *pl_commit_json(const struct hub_project *p, const char *sha)
{
	git_repository *repo = NULL;
	git_commit *c = NULL;
	git_oid oid;
	json_t *o = json_object();
	char short_id[9], iso[40];

	snprintf(short_id, sizeof(short_id), "%.8s", sha);
	json_object_set_new(o, "id", json_string(sha));
	json_object_set_new(o, "short_id", json_string(short_id));
	if (git_oid_fromstr(&oid, sha) == 0 && git_repository_open_bare(&repo, p->repo_path) == 0 &&
	    git_commit_lookup(&c, repo, &oid) == 0) {
		const git_signature *a = git_commit_author(c), *m = git_commit_committer(c);

		json_object_set_new(
		    o, "title", json_string(git_commit_summary(c) ? git_commit_summary(c) : ""));
		json_object_set_new(o, "message", json_string(git_commit_message(c)));
		json_object_set_new(o, "author_name", json_string(a->name));
		json_object_set_new(o, "author_email", json_string(a->email));
		hub_time_git(a->when.time, a->when.offset, iso);
		json_object_set_new(o, "authored_date", json_string(iso));
		json_object_set_new(o, "committer_name", json_string(m->name));
		json_object_set_new(o, "committer_email", json_string(m->email));
		hub_time_git(m->when.time, m->when.offset, iso);
		json_object_set_new(o, "committed_date", json_string(iso));
		json_object_set_new(o, "created_at", json_string(iso));
	}
	git_commit_free(c);
	git_repository_free(repo);
	return o;
}

json_t *hub_ci_commit_json(const struct hub_project *p, const char *sha)
{
	return pl_commit_json(p, sha);
}

/* A pipeline row (pl_pipeline_cols) as GitLab shows it; full adds the single-pipeline
 * fields. */
static json_t *pl_pipeline_json(struct hub_req *req, const struct hub_project *p, sqlite3_stmt *st,
                                bool full)
{
	json_t *o = json_object();
	char url[2048];
	int64_t id = sqlite3_column_int64(st, 0);
	const char *status = (const char *)sqlite3_column_text(st, 6);

	json_object_set_new(o, "id", json_integer(id));
	json_object_set_new(o, "iid", json_integer(sqlite3_column_int64(st, 1)));
	json_object_set_new(o, "project_id", json_integer(sqlite3_column_int64(st, 2)));
	json_object_set_new(o, "sha", pl_col_str(st, 4));
	json_object_set_new(o, "ref", pl_col_str(st, 3));
	json_object_set_new(o, "status", json_string(status));
	json_object_set_new(o, "source", pl_col_str(st, 7));
	pl_time(o, "created_at", st, 10);
	pl_time(o, "updated_at", st, 11);
	snprintf(url, sizeof(url), "%s/%s/-/pipelines/%lld", req->hub->base_url,
	         p->path_with_namespace, (long long)id);
	json_object_set_new(o, "web_url", json_string(url));
	if (!full)
		return o;
	json_object_set_new(o, "before_sha",
	                    json_string("0000000000000000000000000000000000000000"));
	json_object_set_new(o, "tag", json_boolean(sqlite3_column_int(st, 5)));
	json_object_set_new(o, "yaml_errors", pl_col_str(st, 9));
	json_object_set_new(o, "user", pl_user_json(req->hub, sqlite3_column_int64(st, 8)));
	pl_time(o, "started_at", st, 12);
	pl_time(o, "finished_at", st, 13);
	json_object_set_new(o, "committed_at", json_null());
	json_object_set_new(o, "duration", pl_duration(st, 12, 13));
	json_object_set_new(o, "queued_duration", json_null());
	json_object_set_new(o, "coverage", json_null());
	json_object_set_new(o, "detailed_status",
	                    json_pack("{s:s, s:s, s:s, s:b, s:s}", "icon", status ? status : "",
	                              "text", status ? status : "", "label", status ? status : "",
	                              "has_details", 1, "details_path",
	                              url + strlen(req->hub->base_url)));
	return o;
}

static const char pl_job_cols[] =
    "j.id, j.name, j.stage, j.status, j.allow_failure, j.failure_reason, j.created_at,"
    " j.queued_at, j.started_at, j.finished_at, j.artifacts_size, j.user_id,"
    " p.id, p.iid, p.ref, p.sha, p.tag, p.status, p.source, p.created_at, p.updated_at,"
    " j.pipeline_id, j.spec";

static json_t *pl_job_json(struct hub_req *req, const struct hub_project *p, sqlite3_stmt *st)
{
	json_t *o = json_object(), *pipe = json_object(), *arts = json_array();
	char url[2048], trace[PATH_MAX];
	int64_t id = sqlite3_column_int64(st, 0), pid = sqlite3_column_int64(st, 12);
	const char *status = (const char *)sqlite3_column_text(st, 3);
	const char *sha = (const char *)sqlite3_column_text(st, 15);
	struct stat sb;

	json_object_set_new(o, "id", json_integer(id));
	json_object_set_new(o, "status", json_string(status));
	json_object_set_new(o, "stage", pl_col_str(st, 2));
	json_object_set_new(o, "name", pl_col_str(st, 1));
	json_object_set_new(o, "ref", pl_col_str(st, 14));
	json_object_set_new(o, "tag", json_boolean(sqlite3_column_int(st, 16)));
	json_object_set_new(o, "coverage", json_null());
	json_object_set_new(o, "allow_failure", json_boolean(sqlite3_column_int(st, 4)));
	pl_time(o, "created_at", st, 6);
	pl_time(o, "started_at", st, 8);
	pl_time(o, "finished_at", st, 9);
	json_object_set_new(o, "erased_at", json_null());
	json_object_set_new(o, "duration", pl_duration(st, 8, 9));
	json_object_set_new(o, "queued_duration",
	                    sqlite3_column_type(st, 7) == SQLITE_NULL ? json_null()
	                                                              : pl_duration(st, 7, 8));
	json_object_set_new(o, "user", pl_user_json(req->hub, sqlite3_column_int64(st, 11)));
	json_object_set_new(o, "commit", pl_commit_json(p, sha ? sha : ""));
	json_object_set_new(pipe, "id", json_integer(pid));
	json_object_set_new(pipe, "iid", json_integer(sqlite3_column_int64(st, 13)));
	json_object_set_new(pipe, "project_id", json_integer(p->id));
	json_object_set_new(pipe, "ref", pl_col_str(st, 14));
	json_object_set_new(pipe, "sha", pl_col_str(st, 15));
	json_object_set_new(pipe, "status", pl_col_str(st, 17));
	json_object_set_new(pipe, "source", pl_col_str(st, 18));
	pl_time(pipe, "created_at", st, 19);
	pl_time(pipe, "updated_at", st, 20);
	snprintf(url, sizeof(url), "%s/%s/-/pipelines/%lld", req->hub->base_url,
	         p->path_with_namespace, (long long)pid);
	json_object_set_new(pipe, "web_url", json_string(url));
	json_object_set_new(o, "pipeline", pipe);
	snprintf(url, sizeof(url), "%s/%s/-/jobs/%lld", req->hub->base_url, p->path_with_namespace,
	         (long long)id);
	json_object_set_new(o, "web_url", json_string(url));
	json_object_set_new(o, "project", json_pack("{s:b}", "ci_job_token_scope_enabled", 0));
	if (sqlite3_column_type(st, 10) != SQLITE_NULL) {
		json_int_t size = sqlite3_column_int64(st, 10);

		json_array_append_new(arts, json_pack("{s:s, s:I, s:s, s:s}", "file_type",
		                                      "archive", "size", size, "filename",
		                                      "artifacts.zip", "file_format", "zip"));
		json_object_set_new(
		    o, "artifacts_file",
		    json_pack("{s:s, s:I}", "filename", "artifacts.zip", "size", size));
	}
	ci_trace_path(id, trace);
	if (stat(trace, &sb) == 0)
		json_array_append_new(arts, json_pack("{s:s, s:I, s:s, s:n}", "file_type", "trace",
		                                      "size", (json_int_t)sb.st_size, "filename",
		                                      "job.log", "file_format"));
	json_object_set_new(o, "artifacts", arts);
	json_object_set_new(o, "artifacts_expire_at", json_null());
	json_object_set_new(o, "tag_list", json_array());
	json_object_set_new(o, "runner",
	                    json_pack("{s:i, s:s, s:s, s:b, s:b, s:s, s:b, s:s}", "id", 1,
	                              "description", "reef-hub embedded shell runner", "ip_address",
	                              "127.0.0.1", "active", 1, "paused", 0, "name", "reef-hub",
	                              "online", 1, "status", "online"));
	if (status && !strcmp(status, "failed"))
		json_object_set_new(o, "failure_reason", pl_col_str(st, 5));
	return o;
}

static int64_t pl_id(const char *s)
{
	char *end;
	long long v;

	if (!s || !*s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v <= 0)
		return -1;
	return (int64_t)v;
}

static sqlite3_stmt *pl_pipeline_row(int64_t project_id, int64_t pid)
{
	char sql[512];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql), "SELECT %s FROM ci_pipelines WHERE id=? AND project_id=?",
	         pl_pipeline_cols);
	st = ci_db_prep(sql, "ii", pid, project_id);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		return st;
	sqlite3_finalize(st);
	return NULL;
}

static sqlite3_stmt *pl_job_row(int64_t project_id, int64_t jid)
{
	char sql[1024];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql),
	         "SELECT %s FROM ci_jobs j JOIN ci_pipelines p ON p.id=j.pipeline_id"
	         " WHERE j.id=? AND j.project_id=?",
	         pl_job_cols);
	st = ci_db_prep(sql, "ii", jid, project_id);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		return st;
	sqlite3_finalize(st);
	return NULL;
}

static void pl_send_pipeline(struct hub_req *req, struct hub_resp *resp,
                             const struct hub_project *p, int64_t pid, int status)
{
	sqlite3_stmt *st = pl_pipeline_row(p->id, pid);

	if (!st) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	hub_resp_json(resp, status, pl_pipeline_json(req, p, st, true));
	sqlite3_finalize(st);
}

static void pl_send_job(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                        int64_t jid, int status)
{
	sqlite3_stmt *st = pl_job_row(p->id, jid);

	if (!st) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	hub_resp_json(resp, status, pl_job_json(req, p, st));
	sqlite3_finalize(st);
}

/* {"message":{"base":[msg]}}, GitLab's validation error for pipeline creation. */
static void pl_resp_base_error(struct hub_resp *resp, const char *msg)
{
	hub_resp_json(resp, 400, json_pack("{s:{s:[s]}}", "message", "base", msg));
}

static bool pl_var_key_ok(const char *k)
{
	size_t n = k ? strlen(k) : 0;

	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= 'a' && k[i] <= 'z') ||
		      (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
			return false;
	return true;
}

/* Checks a [{key, value, variable_type}] list; err names the offending entry. */
static int pl_vars_check(const json_t *vars, char *err, size_t n)
{
	size_t i;
	json_t *v;

	if (!json_is_array(vars) || json_array_size(vars) > PL_MAX_VARS) {
		snprintf(err, n, "variables must be a list of at most %d {key, value} objects",
		         PL_MAX_VARS);
		return -EINVAL;
	}
	json_array_foreach(vars, i, v)
	{
		const char *k = jsonx_str(v, "key"), *val = jsonx_str(v, "value");
		const char *type = jsonx_str(v, "variable_type");

		if (!pl_var_key_ok(k)) {
			snprintf(err, n, "variables[%zu]: key must match [A-Za-z0-9_]+", i);
			return -EINVAL;
		}
		if (!val || strlen(val) > PL_MAX_VAR_VALUE) {
			snprintf(err, n,
			         "variables[%zu]: value must be a string of at most %zu bytes", i,
			         PL_MAX_VAR_VALUE);
			return -EINVAL;
		}
		if (type && strcmp(type, "env_var") && strcmp(type, "file")) {
			snprintf(err, n, "variables[%zu]: variable_type must be env_var or file",
			         i);
			return -EINVAL;
		}
	}
	return 0;
}

static void pl_create_and_reply(struct hub_req *req, struct hub_resp *resp,
                                const struct hub_project *p, const char *ref, const json_t *vars,
                                const char *source, int64_t user_id)
{
	struct ci_pipeline_new o = {
	    .project = p, .ref = ref, .source = source, .user_id = user_id, .variables = vars};
	char err[CI_MAX_ERR];
	int64_t pid;
	int r = ci_pipeline_create(&o, &pid, err);

	if (r == 0) {
		pl_send_pipeline(req, resp, p, pid, 201);
		return;
	}
	if (r == -ENOENT || r == -ENODATA || r == -EINVAL || r == -ENOMSG)
		pl_resp_base_error(resp, err);
	else
		hub_resp_error(resp, 500, "500 Internal Server Error");
}

/* Writes need developer access; an anonymous caller is asked to sign in (401), as
 * GitLab does, rather than told it is not allowed (403). */
static bool pl_can_write(const struct hub_req *req, struct hub_resp *resp,
                         const struct hub_project *p)
{
	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return false;
	}
	if (p->access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return false;
	}
	return true;
}

static void pl_create(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	json_t *params = NULL, *vars;
	char err[256];
	const char *ref;

	if (!pl_can_write(req, resp, p))
		return;
	if (hub_req_params(req, &params) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	ref = jsonx_str(params, "ref");
	vars = json_object_get(params, "variables");
	if (!ref || !*ref) {
		hub_resp_missing(resp, "ref");
	} else if (vars && pl_vars_check(vars, err, sizeof(err)) < 0) {
		hub_resp_json(resp, 400, json_pack("{s:s}", "error", err));
	} else {
		pl_create_and_reply(req, resp, p, ref, vars, "api", req->user->id);
	}
	json_decref(params);
}

/* Trigger variables arrive as variables[KEY]=value (form) or {"variables":{KEY:value}}. */
static json_t *pl_trigger_vars(json_t *params)
{
	json_t *out = json_array(), *v;
	const char *k;

	json_object_foreach(params, k, v)
	{
		size_t n = strlen(k);

		if (!strncmp(k, "variables[", 10) && n > 11 && k[n - 1] == ']' &&
		    json_is_string(v)) {
			char key[256];

			snprintf(key, sizeof(key), "%.*s", (int)(n - 11), k + 10);
			json_array_append_new(out, json_pack("{s:s, s:s, s:s}", "key", key, "value",
			                                     json_string_value(v), "variable_type",
			                                     "env_var"));
		}
	}
	json_object_foreach(json_object_get(params, "variables"), k, v) if (json_is_string(v))
	    json_array_append_new(out, json_pack("{s:s, s:s, s:s}", "key", k, "value",
	                                         json_string_value(v), "variable_type", "env_var"));
	return out;
}

static void pl_trigger(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	json_t *params = NULL, *vars = NULL;
	const char *token, *ref, *source = "trigger";
	struct hub_user u;
	unsigned scopes = 0;
	int64_t user_id = 0;
	char err[256];

	if (hub_req_params(req, &params) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	token = jsonx_str(params, "token");
	ref = jsonx_str(params, "ref");
	if (!token || !*token) {
		hub_resp_missing(resp, "token");
		goto out;
	}
	if (!ref || !*ref) {
		hub_resp_missing(resp, "ref");
		goto out;
	}
	if (ci_job_token_lookup(token, &user_id, NULL) == p->id) {
		source = "pipeline";
	} else if (hub_user_by_token(req->hub, token, &u, &scopes) == 0 &&
	           (scopes & HUB_SCOPE_API) &&
	           hub_project_access(req->hub, p, &u) >= HUB_ACCESS_DEVELOPER) {
		user_id = u.id;
	} else {
		/* an unknown token must not reveal that a private project exists */
		if (p->access == HUB_ACCESS_NONE && strcmp(p->visibility, "public"))
			hub_resp_error(resp, 404, "404 Project Not Found");
		else
			hub_resp_error(resp, 403, "403 Forbidden");
		goto out;
	}
	vars = pl_trigger_vars(params);
	if (pl_vars_check(vars, err, sizeof(err)) < 0) {
		hub_resp_json(resp, 400, json_pack("{s:s}", "error", err));
		goto out;
	}
	pl_create_and_reply(req, resp, p, ref, vars, source, user_id);
out:
	json_decref(vars);
	json_decref(params);
}

static const char *const pl_statuses[] = {
    "created",   "waiting_for_resource",
    "preparing", "pending",
    "running",   "success",
    "failed",    "canceling",
    "canceled",  "skipped",
    "manual",    "scheduled",
    NULL,
};

static bool pl_status_valid(const char *s)
{
	for (const char *const *p = pl_statuses; *p; p++)
		if (!strcmp(*p, s))
			return true;
	return false;
}

static bool pl_truthy(const char *s)
{
	return s && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"));
}

static void pl_list(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	const char *ref = hub_req_query(req, "ref"), *status = hub_req_query(req, "status");
	const char *sha = hub_req_query(req, "sha"), *source = hub_req_query(req, "source");
	const char *scope = hub_req_query(req, "scope"), *order = hub_req_query(req, "order_by");
	const char *sort = hub_req_query(req, "sort");
	const char *order_col = "id";
	struct buf where = BUF_INIT(4096), sql = BUF_INIT(8192);
	sqlite3_stmt *st;
	json_t *arr = json_array();
	size_t total = 0, off = 0, lim = 0;

	if (status && !pl_status_valid(status)) {
		hub_resp_json(resp, 400,
		              json_pack("{s:s}", "error", "status does not have a valid value"));
		goto out;
	}
	if (order) {
		if (!strcmp(order, "id") || !strcmp(order, "status") || !strcmp(order, "ref") ||
		    !strcmp(order, "updated_at") || !strcmp(order, "user_id"))
			order_col = order;
		else {
			hub_resp_json(
			    resp, 400,
			    json_pack("{s:s}", "error", "order_by does not have a valid value"));
			goto out;
		}
	}
	if (sort && strcmp(sort, "asc") && strcmp(sort, "desc")) {
		hub_resp_json(resp, 400,
		              json_pack("{s:s}", "error", "sort does not have a valid value"));
		goto out;
	}
	buf_puts(&where, " WHERE project_id=?1 AND (?2 IS NULL OR ref=?2) AND (?3 IS NULL OR"
	                 " status=?3) AND (?4 IS NULL OR sha=?4) AND (?5 IS NULL OR source=?5)");
	if (scope) {
		if (!strcmp(scope, "running") || !strcmp(scope, "pending"))
			buf_printf(&where, " AND status='%s'", scope);
		else if (!strcmp(scope, "finished"))
			buf_puts(&where,
			         " AND status IN ('success','failed','canceled','skipped')");
		else if (!strcmp(scope, "branches"))
			buf_puts(&where, " AND tag=0");
		else if (!strcmp(scope, "tags"))
			buf_puts(&where, " AND tag=1");
		else {
			hub_resp_json(
			    resp, 400,
			    json_pack("{s:s}", "error", "scope does not have a valid value"));
			goto out;
		}
	}
	buf_printf(&sql, "SELECT COUNT(*) FROM ci_pipelines%s", where.data);
	st = ci_db_prep(sql.data, "itttt", p->id, ref, status, sha, source);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		total = (size_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	hub_paginate(req, resp, total, &off, &lim);
	buf_reset(&sql);
	buf_printf(&sql, "SELECT %s FROM ci_pipelines%s ORDER BY %s %s, id %s LIMIT ?6 OFFSET ?7",
	           pl_pipeline_cols, where.data, order_col,
	           sort && !strcmp(sort, "asc") ? "ASC" : "DESC",
	           sort && !strcmp(sort, "asc") ? "ASC" : "DESC");
	st = ci_db_prep(sql.data, "ittttii", p->id, ref, status, sha, source, (int64_t)lim,
	                (int64_t)off);
	while (st && sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr, pl_pipeline_json(req, p, st, false));
	sqlite3_finalize(st);
	hub_resp_json(resp, 200, arr);
	arr = NULL;
out:
	json_decref(arr);
	buf_free(&where);
	buf_free(&sql);
}

static void pl_latest(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	const char *ref = hub_req_query(req, "ref");
	char branch[HUB_MAX_PATH] = "";
	int64_t pid;

	if (!ref) {
		json_t *pj = json_object();

		hub_repo_project_fields(p, pj);
		snprintf(branch, sizeof(branch), "%s",
		         jsonx_str(pj, "default_branch") ? jsonx_str(pj, "default_branch") : "");
		json_decref(pj);
		ref = branch;
	}
	pid = 0;
	{
		sqlite3_stmt *st = ci_db_prep("SELECT MAX(id) FROM ci_pipelines WHERE project_id=?"
		                              " AND ref=?",
		                              "it", p->id, ref);

		if (st && sqlite3_step(st) == SQLITE_ROW &&
		    sqlite3_column_type(st, 0) != SQLITE_NULL)
			pid = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	if (pid <= 0) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	pl_send_pipeline(req, resp, p, pid, 200);
}

/* scope / scope[] filters of job lists. */
static void pl_scope_filter(struct hub_req *req, struct buf *where, bool *bad)
{
	const char *scope = hub_req_query(req, "scope");

	if (!scope)
		scope = hub_req_query(req, "scope[]");
	*bad = false;
	if (!scope)
		return;
	if (!pl_status_valid(scope)) {
		*bad = true;
		return;
	}
	buf_printf(where, " AND j.status='%s'", scope);
}

static void pl_jobs_list(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                         int64_t pid)
{
	struct buf where = BUF_INIT(4096), sql = BUF_INIT(8192);
	sqlite3_stmt *st;
	json_t *arr = json_array();
	size_t total = 0, off = 0, lim = 0;
	bool bad;

	buf_puts(&where, " WHERE j.project_id=?1 AND (?2 = 0 OR j.pipeline_id=?2)");
	if (!pl_truthy(hub_req_query(req, "include_retried")))
		buf_puts(&where, " AND j.retried=0");
	pl_scope_filter(req, &where, &bad);
	if (bad) {
		hub_resp_json(resp, 400,
		              json_pack("{s:s}", "error", "scope does not have a valid value"));
		goto out;
	}
	buf_printf(&sql, "SELECT COUNT(*) FROM ci_jobs j%s", where.data);
	st = ci_db_prep(sql.data, "ii", p->id, pid);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		total = (size_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	hub_paginate(req, resp, total, &off, &lim);
	buf_reset(&sql);
	buf_printf(&sql,
	           "SELECT %s FROM ci_jobs j JOIN ci_pipelines p ON p.id=j.pipeline_id%s"
	           " ORDER BY j.id %s LIMIT ?3 OFFSET ?4",
	           pl_job_cols, where.data, pid ? "ASC" : "DESC");
	st = ci_db_prep(sql.data, "iiii", p->id, pid, (int64_t)lim, (int64_t)off);
	while (st && sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr, pl_job_json(req, p, st));
	sqlite3_finalize(st);
	hub_resp_json(resp, 200, arr);
	arr = NULL;
out:
	json_decref(arr);
	buf_free(&where);
	buf_free(&sql);
}

static void pl_pipeline_variables(struct hub_resp *resp, const struct hub_project *p, int64_t pid)
{
	sqlite3_stmt *st = ci_db_prep("SELECT variables FROM ci_pipelines WHERE id=? AND"
	                              " project_id=?",
	                              "ii", pid, p->id);
	json_t *vars = NULL;

	if (st && sqlite3_step(st) == SQLITE_ROW) {
		const char *s = (const char *)sqlite3_column_text(st, 0);

		jsonx_parse(&vars, s, strlen(s), 0, 0);
	}
	sqlite3_finalize(st);
	if (!vars) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	hub_resp_json(resp, 200, vars);
}

static void pl_send_file(struct hub_resp *resp, int fd, const char *ctype, const char *fname)
{
	struct stat sb;
	char disp[512];

	if (fstat(fd, &sb) < 0) {
		close(fd);
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	hub_resp_raw(resp, 200, ctype, "", 0);
	resp->fd = fd;
	resp->fd_offset = 0;
	resp->fd_len = (uint64_t)sb.st_size;
	if (fname) {
		snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", fname);
		hub_resp_header(resp, "Content-Disposition", disp);
	}
}

static void pl_trace(struct hub_resp *resp, int64_t jid)
{
	char path[PATH_MAX];
	int fd;

	ci_trace_path(jid, path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		hub_resp_raw(resp, 200, "text/plain", "", 0);
		return;
	}
	pl_send_file(resp, fd, "text/plain", NULL);
}

/* Extracts one member of a job's artifact zip into an unnamed temporary file. */
static int pl_artifact_member(int64_t jid, const char *name, int *fd_out)
{
	char zpath[PATH_MAX], tmpdir[PATH_MAX];
	zip_t *za;
	zip_file_t *zf = NULL;
	zip_stat_t zs;
	zip_int64_t idx, n;
	char chunk[65536];
	int err = 0, fd = -1, r = 0;

	ci_artifacts_path(jid, zpath);
	if (!(za = zip_open(zpath, ZIP_RDONLY, &err)))
		return -ENOENT;
	idx = zip_name_locate(za, name, 0);
	if (idx < 0 || zip_stat_index(za, (zip_uint64_t)idx, 0, &zs) < 0 ||
	    (zs.name[0] && zs.name[strlen(zs.name) - 1] == '/')) {
		r = -ENOENT;
		goto out;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s", zpath);
	*strrchr(tmpdir, '/') = '\0';
	if ((fd = open(tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0 ||
	    !(zf = zip_fopen_index(za, (zip_uint64_t)idx, 0))) {
		r = -EIO;
		goto out;
	}
	while ((n = zip_fread(zf, chunk, sizeof(chunk))) > 0)
		if (write(fd, chunk, (size_t)n) != n) {
			r = -EIO;
			goto out;
		}
	if (n < 0)
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

static void pl_artifacts(struct hub_resp *resp, const struct hub_project *p, int64_t jid,
                         const char *member_enc)
{
	char path[PATH_MAX];
	struct stat sb;
	int fd;

	if (!member_enc || !*member_enc) {
		ci_artifacts_path(jid, path);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			hub_resp_error(resp, 404, "404 Not found");
			return;
		}
		if (fstat(fd, &sb) == 0)
			hub_ci_transfer_add(p->id, (uint64_t)sb.st_size);
		pl_send_file(resp, fd, "application/zip", "artifacts.zip");
		return;
	}
	{
		char *name = strdup(member_enc);
		const char *base;
		int r;

		if (!name || url_decode(name, name, false) < 0 ||
		    !path_is_safe(name, HUB_MAX_PATH)) {
			free(name);
			hub_resp_error(resp, 400, "400 Bad request");
			return;
		}
		r = pl_artifact_member(jid, name, &fd);
		base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
		if (r < 0) {
			hub_resp_error(resp, 404,
			               r == -ENOENT ? "404 Not found"
			                            : "500 Internal Server Error");
		} else {
			if (fstat(fd, &sb) == 0)
				hub_ci_transfer_add(p->id, (uint64_t)sb.st_size);
			pl_send_file(resp, fd, "application/octet-stream", base);
		}
		free(name);
	}
}

/* jobs/artifacts/:ref/download?job=NAME and jobs/artifacts/:ref/raw/<path>?job=NAME:
 * the newest successful job of that name on the ref, with artifacts. */
static void pl_artifacts_by_ref(struct hub_req *req, struct hub_resp *resp,
                                const struct hub_project *p, const char *rest)
{
	const char *job = hub_req_query(req, "job");
	const char *slash, *member = NULL;
	char ref[HUB_MAX_PATH];
	int64_t jid = -1;
	sqlite3_stmt *st;

	if (!job) {
		hub_resp_missing(resp, "job");
		return;
	}
	/* the ref is one encoded segment; what follows is /download or /raw/<path> */
	if (!(slash = strchr(rest, '/')) || (size_t)(slash - rest) >= sizeof(ref)) {
		hub_resp_not_found(resp);
		return;
	}
	snprintf(ref, sizeof(ref), "%.*s", (int)(slash - rest), rest);
	if (url_decode(ref, ref, false) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	if (!strncmp(slash, "/raw/", 5) && slash[5])
		member = slash + 5;
	else if (strcmp(slash, "/download")) {
		hub_resp_not_found(resp);
		return;
	}
	st = ci_db_prep("SELECT j.id FROM ci_jobs j JOIN ci_pipelines p ON p.id=j.pipeline_id"
	                " WHERE j.project_id=? AND p.ref=? AND j.name=? AND j.status='success'"
	                " AND j.artifacts_size IS NOT NULL ORDER BY p.id DESC, j.id DESC LIMIT 1",
	                "itt", p->id, ref, job);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		jid = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	if (jid < 0) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	pl_artifacts(resp, p, jid, member);
}

static bool pl_can_read(const struct hub_project *p)
{
	/* GitLab's ProjectPolicy: `rule { public_builds }.enable :read_build` and
	 * `rule { public_builds & can?(:guest_access) }.enable :read_pipeline`. Projects have
	 * "public pipelines" on by default and reef-hub has no switch for it, so whoever sees
	 * the project (guests of a private one included) reads its pipelines, jobs, traces
	 * and artifacts. */
	(void)p;
	return true;
}

static void pl_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                     const char *rest)
{
	bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
	bool post = !strcmp(req->method, "POST");
	char seg[64] = "";
	const char *tail = NULL, *slash;
	int64_t id = -1;

	if (!strcmp(rest, "trigger/pipeline")) {
		if (post)
			pl_trigger(req, resp, p);
		else
			hub_resp_error(resp, 405, "405 Method Not Allowed");
		return;
	}
	if (!pl_can_read(p)) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (!strcmp(rest, "pipeline")) {
		if (post)
			pl_create(req, resp, p);
		else
			hub_resp_not_found(resp);
		return;
	}
	if (!strcmp(rest, "pipelines")) {
		if (get)
			pl_list(req, resp, p);
		else
			hub_resp_not_found(resp);
		return;
	}
	if (!strncmp(rest, "jobs/artifacts/", 15)) {
		if (get)
			pl_artifacts_by_ref(req, resp, p, rest + 15);
		else
			hub_resp_not_found(resp);
		return;
	}
	if (!strcmp(rest, "jobs")) {
		if (get)
			pl_jobs_list(req, resp, p, 0);
		else
			hub_resp_not_found(resp);
		return;
	}
	/* pipelines/:id[/tail] or jobs/:id[/tail] */
	if (!strncmp(rest, "pipelines/", 10) || !strncmp(rest, "jobs/", 5)) {
		const char *s = rest + (rest[0] == 'p' ? 10 : 5);

		slash = strchr(s, '/');
		snprintf(seg, sizeof(seg), "%.*s", (int)(slash ? (size_t)(slash - s) : strlen(s)),
		         s);
		tail = slash ? slash + 1 : "";
		id = pl_id(seg);
	}
	if (!strncmp(rest, "pipelines/", 10)) {
		if (!strcmp(seg, "latest") && !*tail && get) {
			pl_latest(req, resp, p);
			return;
		}
		if (id < 0) {
			hub_resp_not_found(resp);
			return;
		}
		if (!*tail && get) {
			pl_send_pipeline(req, resp, p, id, 200);
		} else if (!strcmp(tail, "jobs") && get) {
			sqlite3_stmt *st = pl_pipeline_row(p->id, id);

			if (!st) {
				hub_resp_error(resp, 404, "404 Not found");
				return;
			}
			sqlite3_finalize(st);
			pl_jobs_list(req, resp, p, id);
		} else if (!strcmp(tail, "variables") && get) {
			if (p->access < HUB_ACCESS_DEVELOPER)
				hub_resp_error(resp, 403, "403 Forbidden");
			else
				pl_pipeline_variables(resp, p, id);
		} else if ((!strcmp(tail, "cancel") || !strcmp(tail, "retry")) && post) {
			sqlite3_stmt *st = pl_pipeline_row(p->id, id);

			if (!st) {
				hub_resp_error(resp, 404, "404 Not found");
				return;
			}
			sqlite3_finalize(st);
			if (!pl_can_write(req, resp, p))
				return;
			if (!strcmp(tail, "cancel")) {
				ci_pipeline_cancel(id);
				pl_send_pipeline(req, resp, p, id, 200);
			} else if (ci_pipeline_retry(id) < 0) {
				hub_resp_error(resp, 400, "400 Bad request");
			} else {
				pl_send_pipeline(req, resp, p, id, 201);
			}
		} else {
			hub_resp_not_found(resp);
		}
		return;
	}
	if (!strncmp(rest, "jobs/", 5) && id > 0) {
		sqlite3_stmt *st = pl_job_row(p->id, id);

		if (!st) {
			hub_resp_error(resp, 404, "404 Not found");
			return;
		}
		sqlite3_finalize(st);
		if (!*tail && get) {
			pl_send_job(req, resp, p, id, 200);
		} else if (!strcmp(tail, "trace") && get) {
			pl_trace(resp, id);
		} else if ((!strcmp(tail, "artifacts") || !strncmp(tail, "artifacts/", 10)) &&
		           get) {
			pl_artifacts(resp, p, id, tail[9] ? tail + 10 : NULL);
		} else if ((!strcmp(tail, "cancel") || !strcmp(tail, "retry")) && post) {
			int64_t nid = id;
			int r;

			if (!pl_can_write(req, resp, p))
				return;
			r = !strcmp(tail, "cancel") ? ci_job_cancel(id) : ci_job_retry(id, &nid);
			if (r == -EBUSY || (r < 0 && r != -EALREADY)) {
				hub_resp_error(resp, 403, "403 Forbidden");
				return;
			}
			pl_send_job(req, resp, p, nid, 201);
		} else {
			hub_resp_not_found(resp);
		}
		return;
	}
	hub_resp_not_found(resp);
}

void hub_ci_project_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                          const char *rest)
{
	struct hub_idem *idem;

	if (hub_idem_begin(req, resp, &idem))
		return;
	pl_route(req, resp, p, rest);
	hub_idem_end(idem, resp);
}

void hub_ci_current_job(struct hub_req *req, struct hub_resp *resp)
{
	struct hub_project p;
	char id[32];

	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	/* validate_current_authenticated_job: a personal token names no job */
	snprintf(id, sizeof(id), "%lld", (long long)req->job_project_id);
	if (req->job_id <= 0 || req->job_project_id <= 0 ||
	    hub_project_load(req->hub, id, &p) < 0) {
		hub_resp_error(resp, 404, "404 Job Not Found");
		return;
	}
	pl_send_job(req, resp, &p, req->job_id, 200);
}

bool hub_ci_route_is_trigger(const char *method, const char *rest)
{
	return !strcmp(method, "POST") && !strcmp(rest, "trigger/pipeline");
}

int64_t hub_ci_job_token_project(struct hub *h, const char *token)
{
	(void)h;
	return ci_job_token_lookup(token, NULL, NULL);
}

int64_t hub_ci_job_token_lookup(struct hub *h, const char *token, int64_t *user_id, int64_t *job_id)
{
	(void)h;
	return ci_job_token_lookup(token, user_id, job_id);
}

void hub_ci_on_push(struct hub *h, const struct hub_project *p, const char *ref_name, bool is_tag,
                    const char *new_sha, int64_t user_id)
{
	struct ci_pipeline_new o = {
	    .project = p, .ref = ref_name, .source = "push", .user_id = user_id};
	git_repository *repo = NULL;
	git_commit *c = NULL;
	git_oid oid;
	bool skip = false;
	char err[CI_MAX_ERR];
	int64_t pid = 0;

	(void)h;
	(void)is_tag;
	if (git_oid_fromstr(&oid, new_sha) == 0 &&
	    git_repository_open_bare(&repo, p->repo_path) == 0 &&
	    git_commit_lookup(&c, repo, &oid) == 0) {
		const char *msg = git_commit_message(c);

		skip = msg && (strstr(msg, "[skip ci]") || strstr(msg, "[ci skip]"));
	}
	git_commit_free(c);
	git_repository_free(repo);
	if (skip)
		return;
	if (ci_pipeline_create(&o, &pid, err) < 0 && pid == 0)
		log_debug("ci: no pipeline for push to %s: %s", ref_name, err);
}

void hub_ci_project_fields(const struct hub_project *p, json_t *project_json)
{
	char path[HUB_MAX_PATH] = "";

	if (ci_db()) /* the core also renders projects where no runner is started */
		ci_config_path_get(p->id, path);
	json_object_set_new(project_json, "ci_config_path",
	                    path[0] ? json_string(path) : json_null());
}

int hub_ci_project_update(const struct hub_project *p, const json_t *params)
{
	json_t *v = json_object_get(params, "ci_config_path");

	if (!v)
		return 0;
	if (!ci_db())
		return -EIO;
	if (json_is_null(v))
		return ci_config_path_set(p->id, NULL);
	if (!json_is_string(v))
		return -EINVAL;
	return ci_config_path_set(p->id, json_string_value(v));
}
