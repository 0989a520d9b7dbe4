/* reef-epf's callbacks (start, update with metrics, finish; authenticated by the
 * launch's secret, or beside a GitLab by the job's CI job token), the runner's
 * pipeline-status hook that makes a launch's status its pipeline's, and usage per
 * namespace (job seconds, git, LFS and artifact bytes). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "hook.h"
#include "hub_ci.h"
#include "lfs.h"
#include "idem.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "runner.h"
#include "mgmt_int.h"

/* ---- EPF callbacks ---- */

static bool mg_secret_ok(const char *given, const char *hash)
{
	char h[65];
	unsigned char diff = 0;

	if (!given || !*given || strlen(given) > 128 || strlen(hash) != 64)
		return false;
	ci_token_hash(given, h);
	for (size_t i = 0; i < 64; i++)
		diff |= (unsigned char)(h[i] ^ hash[i]);
	return diff == 0;
}

/* Beside a GitLab: the callback must come from the run's own job. Its CI job token
 * (header JOB-TOKEN, masked in traces by GitLab) is shown to GitLab, which names the
 * token's running job and its pipeline; only the run's pipeline, in the run's project,
 * may report. 0 to go on, or resp holds the refusal. */
static int mg_epf_job_auth(struct hub_req *req, struct hub_resp *resp, bool found,
                           int64_t run_pipeline, int64_t run_project, const char *status)
{
	const char *tok = hub_req_header(req, "JOB-TOKEN");
	int64_t job, pipeline, project;
	int r;

	if (!tok || !*tok) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return -EACCES;
	}
	r = mgl_job_token(tok, &job, &pipeline, &project);
	if (r == -EIO) {
		hub_resp_error(resp, 502, "502 GitLab did not answer");
		return r;
	}
	if (r < 0) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return r;
	}
	if (found && run_pipeline == 0 && !ci_status_finished(status)) {
		/* the job can start before GitLab's answer to the launch's POST /pipeline
		 * is stored here: reef-epf retries a 503 */
		hub_resp_header(resp, "Retry-After", "1");
		hub_resp_error(resp, 503, "503 the run's pipeline is not known yet, retry");
		return -EAGAIN;
	}
	/* an unknown run and another pipeline's job look the same */
	if (!found || pipeline != run_pipeline || project != run_project) {
		hub_resp_error(resp, 403, "403 Forbidden: not a job of this run's pipeline");
		return -EPERM;
	}
	return 0;
}

/* One metrics record: {"epoch": n, name: number...} or {"epoch": n, "metrics": {...}}. */
static json_t *mg_metric_record(json_t *in)
{
	json_t *rec = json_object(), *src = json_object_get(in, "metrics"), *v;
	const char *k;

	if (!json_is_object(in) || !json_is_integer(json_object_get(in, "epoch")))
		goto bad;
	json_object_set_new(rec, "epoch",
	                    json_integer(json_integer_value(json_object_get(in, "epoch"))));
	if (!json_is_object(src))
		src = in;
	json_object_foreach(src, k, v)
	{
		if (!strcmp(k, "epoch"))
			continue;
		if (!json_is_number(v) || strlen(k) > 64 || json_object_size(rec) > 64)
			goto bad;
		json_object_set_new(rec, k, json_real(json_number_value(v)));
	}
	return rec;
bad:
	json_decref(rec);
	return NULL;
}

void mg_epf_route(struct hub_req *req, struct hub_resp *resp, char **seg, size_t n)
{
	const char *secret = hub_req_header(req, "EPF-BOT-TOKEN");
	const char *authz = hub_req_header(req, "Authorization");
	char hash[65] = "", status[24] = "", id_s[32];
	json_t *body = NULL, *metrics = NULL;
	sqlite3_stmt *st;
	int64_t lid, run_pipeline = 0, run_project = 0;
	bool found = false;
	char *end;

	if (n != 4 || strcmp(seg[1], "experiments") || strcmp(req->method, "POST")) {
		hub_resp_not_found(resp);
		return;
	}
	if (!secret && authz && !strncasecmp(authz, "Bearer ", 7))
		secret = authz + 7;
	snprintf(id_s, sizeof(id_s), "%s", seg[2]);
	lid = strtoll(id_s, &end, 10);
	if (*end || lid <= 0) {
		hub_resp_not_found(resp);
		return;
	}
	st = ci_db_prep("SELECT secret_hash, status, metrics, COALESCE(pipeline_id, 0), project_id"
	                " FROM mg_launches WHERE id=?",
	                "i", lid);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		const char *m = (const char *)sqlite3_column_text(st, 2);

		found = true;
		run_pipeline = sqlite3_column_int64(st, 3);
		run_project = sqlite3_column_int64(st, 4);
		snprintf(hash, sizeof(hash), "%s", sqlite3_column_text(st, 0));
		snprintf(status, sizeof(status), "%s", sqlite3_column_text(st, 1));
		jsonx_parse(&metrics, m, strlen(m), 0, 0);
	}
	sqlite3_finalize(st);
	if (mgl_active()) {
		/* no per-run secret beside a GitLab: pipeline variables cannot be masked */
		if (mg_epf_job_auth(req, resp, found, run_pipeline, run_project, status) < 0)
			goto out;
	} else if (!hash[0] || !mg_secret_ok(secret, hash)) {
		/* an unknown id and a wrong secret look the same */
		hub_resp_error(resp, 401, "401 Unauthorized");
		goto out;
	}
	if (ci_status_finished(status)) {
		hub_resp_error(resp, 409, "409 Conflict: the run has ended");
		goto out;
	}
	if (req->body.len > MG_MAX_EPF_BODY) {
		hub_resp_error(resp, 413, "413 Request Entity Too Large");
		goto out;
	}
	if (req->body.len &&
	    (jsonx_parse(&body, req->body.data, req->body.len, 8, MG_MAX_EPF_BODY) < 0)) {
		hub_resp_error(resp, 400, "400 (Bad request) the body must be JSON");
		goto out;
	}
	if (!strcmp(seg[3], "start")) {
		ci_db_exec(NULL, "UPDATE mg_launches SET epf_started_at=?, updated_at=? WHERE id=?",
		           "ddi", ci_now(), ci_now(), lid);
	} else if (!strcmp(seg[3], "update")) {
		json_t *recs = json_is_array(body) ? json_incref(body) : json_pack("[O]", body);
		json_t *r;
		size_t i;
		char *dump;

		if (!json_is_array(metrics))
			metrics = json_array();
		json_array_foreach(recs, i, r)
		{
			json_t *rec = mg_metric_record(r);
			size_t j;
			json_t *old;
			bool replaced = false;

			if (!rec) {
				json_decref(recs);
				hub_resp_error(resp, 400,
				               "400 (Bad request) a metrics record is {\"epoch\": "
				               "N, \"<name>\": <number>, ...}");
				goto out;
			}
			json_array_foreach(
			    metrics, j,
			    old) if (json_integer_value(json_object_get(old, "epoch")) ==
			             json_integer_value(json_object_get(rec, "epoch")))
			{
				json_array_set(metrics, j, rec);
				replaced = true;
				break;
			}
			if (!replaced)
				json_array_append(metrics, rec);
			json_decref(rec);
		}
		json_decref(recs);
		if (json_array_size(metrics) > MG_MAX_METRICS) {
			hub_resp_error(resp, 413, "413 too many metric records");
			goto out;
		}
		dump = jsonx_dump(metrics);
		ci_db_exec(NULL, "UPDATE mg_launches SET metrics=?, updated_at=? WHERE id=?", "tdi",
		           dump, ci_now(), lid);
		free(dump);
	} else if (!strcmp(seg[3], "finish")) {
		const char *s = jsonx_str(body, "status");
		int64_t code = jsonx_int(body, "exit_code", -1);

		/* recorded as reported; the run's status stays its pipeline's */
		ci_db_exec(
		    NULL,
		    "UPDATE mg_launches SET epf_finished_at=?, epf_status=?, epf_exit_code=?,"
		    " updated_at=? WHERE id=?",
		    "dtidi", ci_now(), s ? s : "unknown", code, ci_now(), lid);
		if (code < 0)
			ci_db_exec(NULL, "UPDATE mg_launches SET epf_exit_code=NULL WHERE id=?",
			           "i", lid);
	} else {
		hub_resp_not_found(resp);
		goto out;
	}
	hub_resp_json(resp, 200, json_pack("{s:I, s:s}", "id", (json_int_t)lid, "status", status));
out:
	json_decref(body);
	json_decref(metrics);
}

/* The pipeline's status is the launch's: called by the runner under its lock. */
void mg_on_pipeline(int64_t pipeline_id, const char *status)
{
	ci_db_exec(NULL,
	           "UPDATE mg_launches SET status=?1, updated_at=?2, finished_at=CASE WHEN ?1 IN"
	           " ('success','failed','canceled','skipped') THEN ?2 ELSE NULL END"
	           " WHERE pipeline_id=?3",
	           "tdi", status, ci_now(), pipeline_id);
}

/* ---- usage ---- */

static uint64_t mg_du_total;

static int mg_du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F)
		mg_du_total += (uint64_t)sb->st_size;
	return 0;
}

static pthread_mutex_t mg_du_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t mg_du(const char *path)
{
	uint64_t v;

	pthread_mutex_lock(&mg_du_lock);
	mg_du_total = 0;
	nftw(path, mg_du_cb, 16, FTW_PHYS);
	v = mg_du_total;
	pthread_mutex_unlock(&mg_du_lock);
	return v;
}

json_t *hub_ci_project_statistics(struct hub *h, int64_t project_id)
{
	uint64_t git, lfs = 0, arts = 0;
	char dir[PATH_MAX];
	sqlite3_stmt *q;

	if (!ci_db())
		return NULL;
	hub_repo_dir(h, project_id, dir);
	git = mg_du(dir);
	if (hub_lfs_project_bytes(h, project_id, &lfs) < 0)
		lfs = 0;
	q = ci_db_prep("SELECT COALESCE(SUM(artifacts_size),0) FROM ci_jobs WHERE project_id=?",
	               "i", project_id);
	if (q && sqlite3_step(q) == SQLITE_ROW)
		arts = (uint64_t)sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return json_pack("{s:I, s:I, s:I, s:I}", "repository_size", (json_int_t)git,
	                 "lfs_objects_size", (json_int_t)lfs, "job_artifacts_size",
	                 (json_int_t)arts, "storage_size", (json_int_t)(git + lfs + arts));
}

static json_t *mg_usage_json(struct hub *h, int64_t ns_id, const char *full_path, const char *kind)
{
	uint64_t git = 0, lfs = 0, arts = 0, transfer = 0;
	double seconds = 0;
	char prefix[1100];
	sqlite3_stmt *st;

	/* a prefix compare, not LIKE: '_' and '%' are legal in paths and would match siblings */
	snprintf(prefix, sizeof(prefix), "%s/", full_path);
	st = ci_db_prep("SELECT p.id FROM projects p JOIN namespaces n ON n.id=p.namespace_id"
	                " WHERE n.id=? OR substr(n.full_path, 1, length(?2)) = ?2",
	                "it", ns_id, prefix);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		int64_t pid = sqlite3_column_int64(st, 0);
		char dir[PATH_MAX];
		uint64_t lfs_bytes = 0;
		sqlite3_stmt *q;

		hub_repo_dir(h, pid, dir);
		git += mg_du(dir);
		if (hub_lfs_project_bytes(h, pid, &lfs_bytes) == 0)
			lfs += lfs_bytes;
		q = ci_db_prep(
		    "SELECT COALESCE(SUM(finished_at-started_at),0),"
		    " COALESCE(SUM(artifacts_size),0) FROM ci_jobs WHERE project_id=? AND"
		    " started_at IS NOT NULL AND finished_at IS NOT NULL",
		    "i", pid);
		if (q && sqlite3_step(q) == SQLITE_ROW) {
			seconds += sqlite3_column_double(q, 0);
			arts += (uint64_t)sqlite3_column_int64(q, 1);
		}
		sqlite3_finalize(q);
		q = ci_db_prep("SELECT bytes FROM mg_transfer WHERE project_id=?", "i", pid);
		if (q && sqlite3_step(q) == SQLITE_ROW)
			transfer += (uint64_t)sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
	}
	sqlite3_finalize(st);
	return json_pack("{s:{s:I, s:s, s:s}, s:f, s:{s:I, s:I, s:I, s:I}, s:I}", "namespace", "id",
	                 (json_int_t)ns_id, "full_path", full_path, "kind", kind,
	                 "pipeline_seconds", seconds, "storage_bytes", "git", (json_int_t)git,
	                 "lfs", (json_int_t)lfs, "artifacts", (json_int_t)arts, "total",
	                 (json_int_t)(git + lfs + arts), "transfer_bytes", (json_int_t)transfer);
}

/* Namespaces whose usage the user may see: their own, groups they (or an ancestor
 * group's membership) belong to; admins see all. */
static const char mg_member_ns_sql[] =
    "WITH RECURSIVE anc(ns, id) AS ("
    " SELECT id, id FROM namespaces UNION ALL"
    " SELECT anc.ns, n.parent_id FROM anc JOIN namespaces n ON n.id=anc.id"
    " WHERE n.parent_id IS NOT NULL)"
    " SELECT n.id, n.full_path, n.kind FROM namespaces n WHERE (?1 = 1"
    " OR (n.kind='user' AND n.owner_id=?2)"
    " OR EXISTS(SELECT 1 FROM anc JOIN group_members g ON g.namespace_id=anc.id"
    "   WHERE anc.ns=n.id AND g.user_id=?2))"
    " AND (?3 IS NULL OR n.full_path=?3 COLLATE NOCASE) ORDER BY n.full_path";

void mg_usage(struct hub_req *req, struct hub_resp *resp, const char *ns_path)
{
	json_t *arr = json_array();
	sqlite3_stmt *st;

	if (!req->user) {
		json_decref(arr);
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	st = ci_db_prep(mg_member_ns_sql, "iit", (int64_t)req->user->is_admin, req->user->id,
	                ns_path);
	while (st && sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr, mg_usage_json(req->hub, sqlite3_column_int64(st, 0),
		                                         (const char *)sqlite3_column_text(st, 1),
		                                         (const char *)sqlite3_column_text(st, 2)));
	sqlite3_finalize(st);
	if (!ns_path) {
		hub_resp_json(resp, 200, arr);
		return;
	}
	if (json_array_size(arr) == 0) {
		json_decref(arr);
		hub_resp_error(resp, 404, "404 Namespace Not Found");
		return;
	}
	hub_resp_json(resp, 200, json_incref(json_array_get(arr, 0)));
	json_decref(arr);
}
