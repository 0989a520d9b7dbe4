/* Protected branches (protect.h). GitLab sources followed: lib/api/protected_branches.rb
 * (routes, authorization, 409/404 bodies), lib/api/entities/protected_branch.rb and
 * doc/api/protected_branches.md (fields), lib/gitlab/checks/branch_check.rb (the order of
 * the checks and their messages), app/services/projects/protect_default_branch_service.rb
 * (the default branch's rule). */
#include "protect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/jsonx.h"
#include "reef/util.h"

#define PB_MAX_NAME 255

/* GitLab's wildcard protected branches: '*' matches any run of characters, '/' included;
 * nothing else is special. Iterative, with one backtrack point (linear in practice). */
static bool pb_wild_match(const char *pat, const char *s)
{
	const char *star = NULL, *resume = NULL;

	while (*s) {
		if (*pat == '*') {
			star = pat++;
			resume = s;
		} else if (*pat == *s) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

int hub_protect_default(struct hub *hub, int64_t project_id, const char *branch)
{
	sqlite3_stmt *st = NULL;
	int rc;

	/* maintainers push, developers merge, nobody force-pushes or deletes: the rule
	 * issue 9 asks for, GitLab's "protected against pushes" with force push off (its
	 * instance default, "fully protected", lets only maintainers merge) */
	rc = sqlite3_prepare_v2(hub->db,
	                        "INSERT OR IGNORE INTO protected_branches(project_id, name,"
	                        " push_access_level, merge_access_level, allow_force_push)"
	                        " VALUES(?1, ?2, 40, 30, 0)",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_text(st, 2, branch, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : hub_db_err(rc);
}

static void pb_row(sqlite3_stmt *st, struct hub_protection *out)
{
	const unsigned char *n = sqlite3_column_text(st, 1);

	out->id = sqlite3_column_int64(st, 0);
	snprintf(out->name, sizeof(out->name), "%s", n ? (const char *)n : "");
	out->push_level = sqlite3_column_int(st, 2);
	out->merge_level = sqlite3_column_int(st, 3);
	out->allow_force_push = sqlite3_column_int(st, 4) != 0;
}

/* Push levels in order of permissiveness: developers < maintainers < admins < no one. */
static int pb_rank(int level)
{
	switch (level) {
	case HUB_ACCESS_DEVELOPER:
		return 0;
	case HUB_ACCESS_MAINTAINER:
		return 1;
	case HUB_PROTECT_ADMIN:
		return 2;
	default:
		return 3;
	}
}

int hub_protect_match(struct hub *hub, int64_t project_id, const char *branch,
                      struct hub_protection *out)
{
	sqlite3_stmt *st = NULL;
	int rc, found = 0;

	rc = sqlite3_prepare_v2(hub->db,
	                        "SELECT id, name, push_access_level, merge_access_level,"
	                        " allow_force_push FROM protected_branches WHERE project_id = ?1"
	                        " ORDER BY id",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, project_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct hub_protection r;

		pb_row(st, &r);
		if (strcmp(r.name, branch) &&
		    !(strchr(r.name, '*') && pb_wild_match(r.name, branch)))
			continue;
		if (!found) {
			*out = r;
		} else {
			if (pb_rank(r.push_level) < pb_rank(out->push_level))
				out->push_level = r.push_level;
			out->allow_force_push = out->allow_force_push && r.allow_force_push;
		}
		found = 1;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? found : hub_db_err(rc);
}

static bool pb_level_allows(int level, enum hub_access acc, const struct hub_user *u)
{
	if (level == HUB_PROTECT_NO_ONE)
		return false;
	if (level == HUB_PROTECT_ADMIN)
		return u && u->is_admin;
	return (int)acc >= level;
}

const char *hub_protect_check(struct hub *hub, const struct hub_project *p,
                              const struct hub_user *u, enum hub_access acc, const char *branch,
                              const char *default_branch, bool repo_empty, bool deletion,
                              bool force, bool web)
{
	struct hub_protection pr;
	int m;

	if (deletion && default_branch && !strcmp(branch, default_branch))
		return "The default branch of a project cannot be deleted.";
	/* An empty repository: whatever is pushed first becomes the default branch, so the
	 * default branch's rule applies to it (ProtectedBranch.protected?). */
	m = hub_protect_match(hub, p->id, repo_empty && default_branch ? default_branch : branch,
	                      &pr);
	if (m < 0)
		return "Internal error while checking protected branches.";
	if (m == 0)
		return NULL;
	if (force && !pr.allow_force_push)
		return "You are not allowed to force push code to a protected branch on this "
		       "project.";
	if (deletion) {
		if (acc < HUB_ACCESS_MAINTAINER)
			return "You are not allowed to delete protected branches from this "
			       "project. "
			       "Only a project maintainer or owner can delete a protected branch.";
		return web ? NULL
		           : "You can only delete protected branches using the web interface.";
	}
	if (!pb_level_allows(pr.push_level, acc, u))
		return "You are not allowed to push code to protected branches on this project.";
	return NULL;
}

void hub_protect_rename(struct hub *hub, int64_t project_id, const char *from, const char *to)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(hub->db,
	                       "UPDATE OR IGNORE protected_branches SET name = ?3"
	                       " WHERE project_id = ?1 AND name = ?2",
	                       -1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_text(st, 2, from, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, to, -1, SQLITE_TRANSIENT);
	sqlite3_step(st);
	sqlite3_finalize(st);
}

/* ---- project settings ---- */

bool hub_project_job_token_push(struct hub *hub, int64_t project_id)
{
	sqlite3_stmt *st = NULL;
	bool on = false;

	if (sqlite3_prepare_v2(hub->db,
	                       "SELECT job_token_push FROM project_settings WHERE project_id = ?1",
	                       -1, &st, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_int64(st, 1, project_id);
	if (sqlite3_step(st) == SQLITE_ROW)
		on = sqlite3_column_int(st, 0) != 0;
	sqlite3_finalize(st);
	return on;
}

int hub_project_job_token_push_set(struct hub *hub, int64_t project_id, bool on)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(hub->db,
	                        "INSERT INTO project_settings(project_id, job_token_push)"
	                        " VALUES(?1, ?2) ON CONFLICT(project_id) DO UPDATE SET"
	                        " job_token_push = excluded.job_token_push",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_int(st, 2, on);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : hub_db_err(rc);
}

/* ---- REST ---- */

static const char *pb_level_name(int level)
{
	switch (level) {
	case HUB_PROTECT_NO_ONE:
		return "No one";
	case HUB_ACCESS_DEVELOPER:
		return "Developers + Maintainers";
	case HUB_ACCESS_MAINTAINER:
		return "Maintainers";
	default:
		return "Admins";
	}
}

static json_t *pb_json(const struct hub_protection *r)
{
	return json_pack("{s:I, s:s, s:[{s:I, s:i, s:s, s:n, s:n, s:n}],"
	                 " s:[{s:I, s:i, s:s, s:n, s:n}], s:b, s:b}",
	                 "id", (json_int_t)r->id, "name", r->name, "push_access_levels", "id",
	                 (json_int_t)r->id, "access_level", r->push_level,
	                 "access_level_description", pb_level_name(r->push_level), "deploy_key_id",
	                 "user_id", "group_id", "merge_access_levels", "id", (json_int_t)r->id,
	                 "access_level", r->merge_level, "access_level_description",
	                 pb_level_name(r->merge_level), "user_id", "group_id", "allow_force_push",
	                 r->allow_force_push, "code_owner_approval_required", 0);
}

static int pb_get(struct hub *hub, int64_t project_id, const char *name, struct hub_protection *out)
{
	sqlite3_stmt *st = NULL;
	int rc, r = -ENOENT;

	rc = sqlite3_prepare_v2(hub->db,
	                        "SELECT id, name, push_access_level, merge_access_level,"
	                        " allow_force_push FROM protected_branches WHERE project_id = ?1"
	                        " AND name = ?2",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		pb_row(st, out);
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

static void pb_list(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	const char *search = hub_req_query(req, "search");
	sqlite3_stmt *st = NULL;
	json_t *all = json_array(), *page = json_array();
	size_t off, lim;

	if (sqlite3_prepare_v2(req->hub->db,
	                       "SELECT id, name, push_access_level, merge_access_level,"
	                       " allow_force_push FROM protected_branches WHERE project_id = ?1"
	                       " ORDER BY id",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, p->id);
		while (sqlite3_step(st) == SQLITE_ROW) {
			struct hub_protection r;

			pb_row(st, &r);
			if (!search || strstr(r.name, search))
				json_array_append_new(all, pb_json(&r));
		}
		sqlite3_finalize(st);
	}
	hub_paginate(req, resp, json_array_size(all), &off, &lim);
	for (size_t i = off; i < json_array_size(all) && i < off + lim; i++)
		json_array_append(page, json_array_get(all, i));
	json_decref(all);
	hub_resp_json(resp, 200, page);
}

/* A level parameter: absent (def), or one of GitLab's allowed values. */
static int pb_level_param(json_t *params, const char *key, int def, int *out)
{
	json_t *v = json_object_get(params, key);
	long long n;

	*out = def;
	if (!v)
		return 0;
	if (json_is_integer(v))
		n = json_integer_value(v);
	else if (json_is_string(v) && *json_string_value(v) &&
	         strspn(json_string_value(v), "0123456789") == strlen(json_string_value(v)) &&
	         strlen(json_string_value(v)) < 4)
		n = atoll(json_string_value(v));
	else
		return -EINVAL;
	if (n != HUB_PROTECT_NO_ONE && n != HUB_ACCESS_DEVELOPER && n != HUB_ACCESS_MAINTAINER &&
	    n != HUB_PROTECT_ADMIN)
		return -EINVAL;
	*out = (int)n;
	return 0;
}

static int pb_bool_param(json_t *params, const char *key, bool *out)
{
	json_t *v = json_object_get(params, key);

	*out = false;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);

		if (!strcmp(s, "true") || !strcmp(s, "1")) {
			*out = true;
			return 0;
		}
		if (!strcmp(s, "false") || !strcmp(s, "0"))
			return 0;
	}
	return -EINVAL;
}

static void pb_invalid(struct hub_resp *resp, const char *key)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "%s does not have a valid value", key);
	hub_resp_json(resp, 400, json_pack("{s:s}", "error", msg));
}

static void pb_create(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p)
{
	json_t *params = NULL;
	struct hub_protection r;
	const char *name;
	int push, merge;
	bool force;
	sqlite3_stmt *st = NULL;
	char msg[PB_MAX_NAME + 64];
	int rc;

	if (hub_req_params(req, &params) < 0 || !json_is_object(params)) {
		hub_resp_error(resp, 400, "400 Bad request");
		goto out;
	}
	name = jsonx_str(params, "name");
	if (!name || !*name) {
		hub_resp_json(resp, 400, json_pack("{s:s}", "error", "name is missing"));
		goto out;
	}
	if (strlen(name) > PB_MAX_NAME || memchr(name, '\n', strlen(name))) {
		pb_invalid(resp, "name");
		goto out;
	}
	if (pb_level_param(params, "push_access_level", HUB_ACCESS_MAINTAINER, &push) < 0) {
		pb_invalid(resp, "push_access_level");
		goto out;
	}
	if (pb_level_param(params, "merge_access_level", HUB_ACCESS_MAINTAINER, &merge) < 0) {
		pb_invalid(resp, "merge_access_level");
		goto out;
	}
	if (pb_bool_param(params, "allow_force_push", &force) < 0) {
		pb_invalid(resp, "allow_force_push");
		goto out;
	}
	if (pb_get(req->hub, p->id, name, &r) == 0) {
		snprintf(msg, sizeof(msg), "Protected branch '%s' already exists", name);
		hub_resp_error(resp, 409, msg);
		goto out;
	}
	rc =
	    sqlite3_prepare_v2(req->hub->db,
	                       "INSERT INTO protected_branches(project_id, name, push_access_level,"
	                       " merge_access_level, allow_force_push) VALUES(?1, ?2, ?3, ?4, ?5)",
	                       -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, p->id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 3, push);
		sqlite3_bind_int(st, 4, merge);
		sqlite3_bind_int(st, 5, force);
		rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc == SQLITE_CONSTRAINT) {
		snprintf(msg, sizeof(msg), "Protected branch '%s' already exists", name);
		hub_resp_error(resp, 409, msg);
		goto out;
	}
	if (rc != SQLITE_DONE || pb_get(req->hub, p->id, name, &r) < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	hub_resp_json(resp, 201, pb_json(&r));
out:
	json_decref(params);
}

void hub_protect_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                       const char *rest)
{
	bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
	bool post = !strcmp(req->method, "POST"), del = !strcmp(req->method, "DELETE");
	struct hub_protection r;
	char name[PB_MAX_NAME * 3 + 1];

	/* reading needs read_code (reporter on a private project); changing, admin_project */
	if (get && !strcmp(p->visibility, "private") && p->access < HUB_ACCESS_REPORTER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (!get) {
		if (!req->user) {
			hub_resp_error(resp, 401, "401 Unauthorized");
			return;
		}
		if (p->access < HUB_ACCESS_MAINTAINER) {
			hub_resp_error(resp, 403, "403 Forbidden");
			return;
		}
	}
	if (!*rest || !strcmp(rest, "/")) {
		if (get)
			pb_list(req, resp, p);
		else if (post)
			pb_create(req, resp, p);
		else
			hub_resp_error(resp, 405, "405 Method Not Allowed");
		return;
	}
	rest++;
	if (strchr(rest, '/') || strlen(rest) >= sizeof(name) ||
	    url_decode(name, rest, false) < 0) {
		hub_resp_not_found(resp);
		return;
	}
	if (!get && !del) {
		hub_resp_error(resp, 405, "405 Method Not Allowed");
		return;
	}
	if (pb_get(req->hub, p->id, name, &r) < 0) {
		hub_resp_error(resp, 404, "404 Not found");
		return;
	}
	if (get) {
		hub_resp_json(resp, 200, pb_json(&r));
		return;
	}
	{
		sqlite3_stmt *st = NULL;

		if (sqlite3_prepare_v2(req->hub->db, "DELETE FROM protected_branches WHERE id = ?1",
		                       -1, &st, NULL) != SQLITE_OK) {
			hub_resp_error(resp, 500, "500 Internal Server Error");
			return;
		}
		sqlite3_bind_int64(st, 1, r.id);
		if (sqlite3_step(st) != SQLITE_DONE)
			hub_resp_error(resp, 500, "500 Internal Server Error");
		else
			hub_resp_raw(resp, 204, "application/json", "", 0);
		sqlite3_finalize(st);
	}
}
