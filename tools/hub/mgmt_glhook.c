/* The management role's GitLab webhook (mgmt_gl.c): at a project's first launch by a
 * maintainer the service registers a project hook on GitLab (POST /projects/:id/hooks,
 * gitlabhq lib/api/project_hooks.rb) for pipeline and job events, with a token of its
 * own (32 random bytes, kept here as SHA-256 only); GitLab then POSTs those events to
 * /api/v1/gitlab/webhook with the token in X-Gitlab-Token (doc/user/project/
 * integrations/webhooks.md), and a launch's status and job follow them without a client
 * asking. Polling (mgl_launch_refresh) stays the fallback: a project without a hook, a
 * lost delivery, a hook deleted on GitLab. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "glc.h"
#include "mgmt_int.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "runner.h"

static const char mgl_hook_schema[] =
    "CREATE TABLE IF NOT EXISTS mg_gl_hooks(project_id INTEGER PRIMARY KEY,"
    " hook_id INTEGER, token_hash TEXT NOT NULL, created_at REAL NOT NULL);";

int mgl_hook_init(void)
{
	return ci_db_exec(NULL, mgl_hook_schema, NULL);
}

static bool mgl_status_known(const char *s)
{
	static const char *const known[] = {"created",   "waiting_for_resource",
	                                    "preparing", "pending",
	                                    "running",   "success",
	                                    "failed",    "canceling",
	                                    "canceled",  "skipped",
	                                    "manual",    "scheduled"};

	for (size_t i = 0; s && i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(s, known[i]))
			return true;
	return false;
}

static int64_t mgl_pos(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

int mgl_hook_parse(const char *body, size_t n, struct mgl_hook_event *ev)
{
	json_t *v = NULL;
	const char *kind;
	int r = -EINVAL;

	memset(ev, 0, sizeof(*ev));
	if (!body || n == 0 || n > MGL_HOOK_MAX_BODY ||
	    jsonx_parse(&v, body, n, 16, MGL_HOOK_MAX_BODY) < 0)
		return -EINVAL;
	kind = jsonx_str(v, "object_kind");
	if (kind && !strcmp(kind, "pipeline")) {
		const json_t *a = json_object_get(v, "object_attributes"), *b;
		const char *st = jsonx_str(a, "status");
		size_t i;

		ev->kind = MGL_HOOK_PIPELINE;
		ev->project_id = mgl_pos(json_object_get(v, "project"), "id");
		ev->pipeline_id = mgl_pos(a, "id");
		if (mgl_status_known(st))
			snprintf(ev->status, sizeof(ev->status), "%s", st);
		json_array_foreach(json_object_get(v, "builds"), i,
		                   b) if (mgl_pos(b, "id") > ev->job_id) ev->job_id =
		    mgl_pos(b, "id");
	} else if (kind && !strcmp(kind, "build")) {
		const char *st = jsonx_str(v, "build_status");

		ev->kind = MGL_HOOK_JOB;
		ev->project_id = mgl_pos(v, "project_id");
		ev->pipeline_id = mgl_pos(v, "pipeline_id");
		ev->job_id = mgl_pos(v, "build_id");
		if (mgl_status_known(st))
			snprintf(ev->status, sizeof(ev->status), "%s", st);
	} else {
		ev->kind = MGL_HOOK_OTHER;
		r = 0;
		goto out;
	}
	if (ev->project_id && ev->pipeline_id && ev->status[0] &&
	    (ev->kind == MGL_HOOK_PIPELINE || ev->job_id))
		r = 0;
out:
	json_decref(v);
	return r;
}

/* A constant-time compare of the given token's hash with the stored one. */
static bool mgl_hook_token_ok(const char *given, const char *hash)
{
	char h[65];
	unsigned char diff = 0;

	if (!given || !*given || strlen(given) > 255 || strlen(hash) != 64)
		return false;
	ci_token_hash(given, h);
	for (size_t i = 0; i < 64; i++)
		diff |= (unsigned char)(h[i] ^ hash[i]);
	return diff == 0;
}

void mgl_webhook_route(struct hub_req *req, struct hub_resp *resp)
{
	struct mgl_hook_event ev;
	char hash[65] = "";
	sqlite3_stmt *st;
	bool known;

	if (strcmp(req->method, "POST")) {
		hub_resp_not_found(resp);
		return;
	}
	if (mgl_hook_parse(req->body.data, req->body.len, &ev) < 0) {
		hub_resp_error(resp, 400, "400 (Bad request) not a GitLab pipeline or job event");
		return;
	}
	if (ev.kind == MGL_HOOK_OTHER) {
		/* another event of a hook: nothing to do, and no failure for GitLab to count */
		hub_resp_json(resp, 200, json_pack("{s:s}", "message", "ignored"));
		return;
	}
	st = ci_db_prep("SELECT token_hash FROM mg_gl_hooks WHERE project_id=? AND hook_id IS NOT"
	                " NULL",
	                "i", ev.project_id);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		snprintf(hash, sizeof(hash), "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	/* an unknown project and a wrong token look the same */
	if (!hash[0] || !mgl_hook_token_ok(hub_req_header(req, "X-Gitlab-Token"), hash)) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	ci_lock();
	if (ev.kind == MGL_HOOK_PIPELINE)
		ci_db_exec(
		    NULL,
		    "UPDATE mg_launches SET status=?1, refreshed_at=?2, updated_at=CASE WHEN"
		    " status=?1 THEN updated_at ELSE ?2 END, finished_at=CASE WHEN ?1 IN"
		    " ('success','failed','canceled','skipped') THEN COALESCE(finished_at, ?2)"
		    " ELSE NULL END WHERE pipeline_id=?3 AND project_id=?4",
		    "tdii", ev.status, ci_now(), ev.pipeline_id, ev.project_id);
	if (ev.job_id)
		ci_db_exec(NULL,
		           "UPDATE mg_launches SET job_id=?1 WHERE pipeline_id=?2 AND project_id=?3"
		           " AND COALESCE(job_id, 0) < ?1",
		           "iii", ev.job_id, ev.pipeline_id, ev.project_id);
	st = ci_db_prep("SELECT 1 FROM mg_launches WHERE pipeline_id=? AND project_id=?", "ii",
	                ev.pipeline_id, ev.project_id);
	known = st && sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	ci_unlock();
	hub_resp_json(resp, 200, json_pack("{s:s}", "message", known ? "updated" : "ignored"));
}

void mgl_hook_ensure(const struct hub_project *p, const char *tok, const char *base_url)
{
	char secret[65], hash[65], url[600];
	json_t *body, *out = NULL;
	char path[64];
	long status = 0;
	int changed;

	/* GitLab's project hooks need admin_project: maintainers and owners */
	if ((int)p->access < HUB_ACCESS_MAINTAINER || !tok || !*tok)
		return;
	if (ci_random_hex(secret, 32) < 0)
		return;
	ci_token_hash(secret, hash);
	/* the row first: of two launches at once, one registers */
	ci_lock();
	ci_db_exec(NULL,
	           "INSERT OR IGNORE INTO mg_gl_hooks(project_id, token_hash, created_at)"
	           " VALUES(?, ?, ?)",
	           "itd", p->id, hash, ci_now());
	changed = sqlite3_changes(ci_db());
	ci_unlock();
	if (changed != 1) {
		explicit_bzero(secret, sizeof(secret));
		return;
	}
	snprintf(url, sizeof(url), "%s/api/v1/gitlab/webhook", base_url);
	body = json_pack("{s:s, s:s, s:b, s:b, s:b}", "url", url, "token", secret,
	                 "pipeline_events", 1, "job_events", 1, "push_events", 0);
	explicit_bzero(secret, sizeof(secret));
	snprintf(path, sizeof(path), "/projects/%lld/hooks", (long long)p->id);
	if (glc_call("POST", path, tok, body, &status, &out, NULL) == 0 && status == 201 &&
	    jsonx_int(out, "id", 0) > 0) {
		ci_db_exec(NULL, "UPDATE mg_gl_hooks SET hook_id=? WHERE project_id=?", "ii",
		           jsonx_int(out, "id", 0), p->id);
	} else {
		/* polling stays; a later maintainer's launch tries again */
		log_warn("mgmt: project %lld: GitLab did not take the webhook (%ld)",
		         (long long)p->id, status);
		ci_db_exec(NULL, "DELETE FROM mg_gl_hooks WHERE project_id=? AND hook_id IS NULL",
		           "i", p->id);
	}
	json_decref(body);
	json_decref(out);
}
