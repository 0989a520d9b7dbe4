/* GitLab REST v4 routes of the core: version, users, projects (list, get, create),
 * namespaces and groups; /projects/:id/repository/... is handed to repo.c. */
#include "core.h"
#include "hub_ci.h"
#include "protect.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#define API_MAX_SEGMENTS 8
#define API_SEARCH_MAX   255

static bool is_get(const struct hub_req *req)
{
	return strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
}

static bool param_true(const char *s)
{
	return s && (strcasecmp(s, "true") == 0 || strcmp(s, "1") == 0 ||
	             strcasecmp(s, "yes") == 0 || strcasecmp(s, "t") == 0);
}

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static const char *col_text(sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	return s ? (const char *)s : NULL;
}

static void iso_col(sqlite3_stmt *st, int col, char out[32])
{
	hub_time_iso(sqlite3_column_int64(st, col), out);
}

/* --- users --- */

json_t *hub_user_json(const struct hub *hub, const struct hub_user *u, bool full)
{
	char web[600], created[32] = "";
	sqlite3_stmt *st = NULL;
	json_t *o;

	snprintf(web, sizeof(web), "%s/%s", hub->base_url, u->username);
	if (sqlite3_prepare_v2(hub->db, "SELECT created_at FROM users WHERE id = ?1", -1, &st,
	                       NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, u->id);
		if (sqlite3_step(st) == SQLITE_ROW)
			iso_col(st, 0, created);
		sqlite3_finalize(st);
	}
	o = json_pack("{s:I,s:s,s:s,s:s,s:n,s:s,s:b,s:b}", "id", (json_int_t)u->id, "username",
	              u->username, "name", u->name, "state", "active", "avatar_url", "web_url", web,
	              "locked", 0, "bot", 0);
	if (!o)
		return NULL;
	json_object_set_new(o, "created_at", json_string(created));
	if (full) {
		json_object_set_new(o, "email", json_string(u->email));
		json_object_set_new(o, "public_email", json_string(""));
		json_object_set_new(o, "commit_email", json_string(u->email));
		json_object_set_new(o, "is_admin", json_boolean(u->is_admin));
		json_object_set_new(o, "can_create_project", json_true());
		json_object_set_new(o, "can_create_group", json_true());
		json_object_set_new(o, "two_factor_enabled", json_false());
		json_object_set_new(o, "external", json_false());
		json_object_set_new(o, "private_profile", json_false());
	}
	return o;
}

static void route_user(struct hub_req *req, struct hub_resp *resp)
{
	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	hub_resp_json(resp, 200, hub_user_json(req->hub, req->user, true));
}

static void route_users(struct hub_req *req, struct hub_resp *resp, const char *id)
{
	struct hub_user u;
	const char *name = hub_req_query(req, "username");
	bool full = req->user && req->user->is_admin;
	json_t *arr;
	size_t off, lim;

	if (id) {
		char *end;
		long long v = strtoll(id, &end, 10);

		if (*end || v <= 0 || hub_user_by_id(req->hub, v, &u) < 0) {
			hub_resp_error(resp, 404, "404 User Not Found");
			return;
		}
		full = full || (req->user && req->user->id == u.id);
		hub_resp_json(resp, 200, hub_user_json(req->hub, &u, full));
		return;
	}
	/* Only the username filter is served; GitLab's full user search is not needed. */
	arr = json_array();
	if (name && hub_user_by_name(req->hub, name, &u) == 0)
		json_array_append_new(arr, hub_user_json(req->hub, &u, full));
	hub_paginate(req, resp, json_array_size(arr), &off, &lim);
	if (off > 0 && json_array_size(arr))
		json_array_clear(arr);
	hub_resp_json(resp, 200, arr);
}

/* --- namespaces and groups --- */

struct ns_row {
	int64_t id, parent_id, owner_id;
	char name[256], path[256], full_path[1024], kind[8];
	int64_t created_at;
};

static int ns_load(struct hub *hub, const char *id_or_path, struct ns_row *out)
{
	sqlite3_stmt *st = NULL;
	char *end;
	long long v = strtoll(id_or_path, &end, 10);
	bool by_id = *id_or_path && !*end;
	int r = -ENOENT;

	if (sqlite3_prepare_v2(hub->db,
	                       by_id
	                           ? "SELECT id, name, path, full_path, kind, parent_id, owner_id,"
	                             " created_at FROM namespaces WHERE id = ?1"
	                           : "SELECT id, name, path, full_path, kind, parent_id, owner_id,"
	                             " created_at FROM namespaces WHERE full_path = ?1",
	                       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	if (by_id)
		sqlite3_bind_int64(st, 1, v);
	else
		sqlite3_bind_text(st, 1, id_or_path, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		out->id = sqlite3_column_int64(st, 0);
		snprintf(out->name, sizeof(out->name), "%s", col_text(st, 1));
		snprintf(out->path, sizeof(out->path), "%s", col_text(st, 2));
		snprintf(out->full_path, sizeof(out->full_path), "%s", col_text(st, 3));
		snprintf(out->kind, sizeof(out->kind), "%s", col_text(st, 4));
		out->parent_id = sqlite3_column_int64(st, 5);
		out->owner_id = sqlite3_column_int64(st, 6);
		out->created_at = sqlite3_column_int64(st, 7);
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

/* The user's access to a namespace: owner of a personal one, or inherited group
 * membership; admins count as owners. */
static int ns_access(struct hub *hub, const struct ns_row *ns, const struct hub_user *u)
{
	static const char sql[] =
	    "WITH RECURSIVE anc(id) AS (SELECT ?1 UNION SELECT n.parent_id FROM namespaces n"
	    " JOIN anc ON n.id = anc.id WHERE n.parent_id IS NOT NULL)"
	    " SELECT MAX(access_level) FROM group_members WHERE user_id = ?2"
	    " AND namespace_id IN anc";
	sqlite3_stmt *st = NULL;
	int lvl = 0;

	if (!u)
		return 0;
	if (u->is_admin)
		return HUB_ACCESS_OWNER;
	if (strcmp(ns->kind, "user") == 0)
		return ns->owner_id == u->id ? HUB_ACCESS_OWNER : 0;
	if (sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_int64(st, 1, ns->id);
	sqlite3_bind_int64(st, 2, u->id);
	if (sqlite3_step(st) == SQLITE_ROW)
		lvl = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return lvl;
}

/* The most open visibility among the projects under a group that the user can see,
 * or NULL when there is none: GitLab shows a group to whoever sees a project in it. */
static const char *ns_visible_projects(struct hub *hub, const struct ns_row *ns,
                                       const struct hub_user *u)
{
	static const char sql[] =
	    "WITH RECURSIVE sub(id) AS (SELECT ?1 UNION SELECT n.id FROM namespaces n"
	    " JOIN sub ON n.parent_id = sub.id)"
	    " SELECT id FROM projects WHERE namespace_id IN sub"
	    " ORDER BY CASE visibility WHEN 'public' THEN 0 WHEN 'internal' THEN 1 ELSE 2 END";
	sqlite3_stmt *st = NULL;
	const char *best = NULL;

	if (sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_int64(st, 1, ns->id);
	while (!best && sqlite3_step(st) == SQLITE_ROW) {
		struct hub_project p;
		char id[32];

		snprintf(id, sizeof(id), "%lld", (long long)sqlite3_column_int64(st, 0));
		if (hub_project_load(hub, id, &p) == 0 && hub_project_visible(hub, &p, u))
			best = strcmp(p.visibility, "public") == 0     ? "public"
			       : strcmp(p.visibility, "internal") == 0 ? "internal"
			                                               : "private";
	}
	sqlite3_finalize(st);
	return best;
}

static json_t *ns_json(const struct hub *hub, const struct ns_row *ns)
{
	char web[1400];
	bool user = strcmp(ns->kind, "user") == 0;

	snprintf(web, sizeof(web), "%s/%s%s", hub->base_url, user ? "" : "groups/", ns->full_path);
	return json_pack("{s:I,s:s,s:s,s:s,s:s,s:o,s:n,s:s}", "id", (json_int_t)ns->id, "name",
	                 ns->name, "path", ns->path, "kind", ns->kind, "full_path", ns->full_path,
	                 "parent_id", ns->parent_id ? json_integer(ns->parent_id) : json_null(),
	                 "avatar_url", "web_url", web);
}

static void route_namespaces(struct hub_req *req, struct hub_resp *resp, const char *id)
{
	const char *search = hub_req_query(req, "search");
	struct ns_row ns;
	sqlite3_stmt *st = NULL;
	json_t *all;
	size_t off, lim, total;

	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	if (id) {
		if (ns_load(req->hub, id, &ns) < 0 ||
		    (ns_access(req->hub, &ns, req->user) < HUB_ACCESS_GUEST &&
		     !(strcmp(ns.kind, "group") == 0 &&
		       ns_visible_projects(req->hub, &ns, req->user)))) {
			hub_resp_error(resp, 404, "404 Namespace Not Found");
			return;
		}
		hub_resp_json(resp, 200, ns_json(req->hub, &ns));
		return;
	}
	all = json_array();
	if (sqlite3_prepare_v2(req->hub->db, "SELECT id FROM namespaces ORDER BY id", -1, &st,
	                       NULL) == SQLITE_OK) {
		while (sqlite3_step(st) == SQLITE_ROW) {
			char nid[32];

			snprintf(nid, sizeof(nid), "%lld", (long long)sqlite3_column_int64(st, 0));
			if (ns_load(req->hub, nid, &ns) < 0 ||
			    ns_access(req->hub, &ns, req->user) < HUB_ACCESS_GUEST)
				continue;
			if (search && !strcasestr(ns.full_path, search) &&
			    !strcasestr(ns.name, search))
				continue;
			json_array_append_new(all, ns_json(req->hub, &ns));
		}
		sqlite3_finalize(st);
	}
	total = json_array_size(all);
	hub_paginate(req, resp, total, &off, &lim);
	{
		json_t *page = json_array();

		for (size_t i = off; i < off + lim; i++)
			json_array_append(page, json_array_get(all, i));
		json_decref(all);
		hub_resp_json(resp, 200, page);
	}
}

static void route_group(struct hub_req *req, struct hub_resp *resp, const char *id)
{
	struct ns_row ns;
	const char *vis;
	char created[32], web[1400];
	json_t *o;

	if (ns_load(req->hub, id, &ns) < 0 || strcmp(ns.kind, "group") != 0) {
		hub_resp_error(resp, 404, "404 Group Not Found");
		return;
	}
	vis = ns_visible_projects(req->hub, &ns, req->user);
	if (!vis && ns_access(req->hub, &ns, req->user) < HUB_ACCESS_GUEST) {
		hub_resp_error(resp, 404, "404 Group Not Found");
		return;
	}
	hub_time_iso(ns.created_at, created);
	snprintf(web, sizeof(web), "%s/groups/%s", req->hub->base_url, ns.full_path);
	o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:s,s:n,s:s}", "id", (json_int_t)ns.id,
	              "name", ns.name, "path", ns.path, "description", "", "visibility",
	              vis ? vis : "private", "full_name", ns.full_path, "full_path", ns.full_path,
	              "parent_id", ns.parent_id ? json_integer(ns.parent_id) : json_null(),
	              "web_url", web, "avatar_url", "created_at", created);
	hub_resp_json(resp, 200, o);
}

/* --- projects --- */

json_t *hub_project_json(struct hub_req *req, const struct hub_project *p, bool simple)
{
	static const char extra_sql[] =
	    "SELECT p.description, p.created_at, p.last_activity_at, n.id FROM projects p"
	    " JOIN namespaces n ON n.id = p.namespace_id WHERE p.id = ?1";
	static const char chain_sql[] =
	    "WITH RECURSIVE anc(id, depth) AS (SELECT ?1, 0 UNION SELECT n.parent_id,"
	    " anc.depth + 1 FROM namespaces n JOIN anc ON n.id = anc.id"
	    " WHERE n.parent_id IS NOT NULL)"
	    " SELECT n.name FROM anc JOIN namespaces n ON n.id = anc.id ORDER BY anc.depth DESC";
	struct hub *hub = req->hub;
	sqlite3_stmt *st = NULL;
	char created[32] = "", activity[32] = "", url[1400];
	struct buf nwn = BUF_INIT(8192);
	struct ns_row ns;
	char nsid[32];
	json_t *o;

	o = json_object();
	if (!o)
		return NULL;
	json_object_set_new(o, "id", json_integer(p->id));
	if (sqlite3_prepare_v2(hub->db, extra_sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, p->id);
		if (sqlite3_step(st) == SQLITE_ROW) {
			json_object_set_new(o, "description", str_or_null(col_text(st, 0)));
			iso_col(st, 1, created);
			iso_col(st, 2, activity);
		}
		sqlite3_finalize(st);
	}
	if (!json_object_get(o, "description"))
		json_object_set_new(o, "description", json_null());
	json_object_set_new(o, "name", json_string(p->name));
	if (sqlite3_prepare_v2(hub->db, chain_sql, -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, p->namespace_id);
		while (sqlite3_step(st) == SQLITE_ROW)
			buf_printf(&nwn, "%s / ", col_text(st, 0) ? col_text(st, 0) : "");
		sqlite3_finalize(st);
	}
	buf_puts(&nwn, p->name);
	json_object_set_new(o, "name_with_namespace", json_string(nwn.data ? nwn.data : p->name));
	buf_free(&nwn);
	json_object_set_new(o, "path", json_string(p->path));
	json_object_set_new(o, "path_with_namespace", json_string(p->path_with_namespace));
	json_object_set_new(o, "created_at", json_string(created));
	json_object_set_new(o, "default_branch", json_null());
	json_object_set_new(o, "tag_list", json_array());
	json_object_set_new(o, "topics", json_array());
	json_object_set_new(o, "ssh_url_to_repo", json_null());
	snprintf(url, sizeof(url), "%s/%s.git", hub->base_url, p->path_with_namespace);
	json_object_set_new(o, "http_url_to_repo", json_string(url));
	snprintf(url, sizeof(url), "%s/%s", hub->base_url, p->path_with_namespace);
	json_object_set_new(o, "web_url", json_string(url));
	json_object_set_new(o, "readme_url", json_null());
	json_object_set_new(o, "avatar_url", json_null());
	json_object_set_new(o, "forks_count", json_integer(0));
	json_object_set_new(o, "star_count", json_integer(0));
	json_object_set_new(o, "last_activity_at", json_string(activity));
	snprintf(nsid, sizeof(nsid), "%lld", (long long)p->namespace_id);
	if (ns_load(hub, nsid, &ns) == 0)
		json_object_set_new(o, "namespace", ns_json(hub, &ns));
	/* default_branch and empty_repo come from the repository. */
	json_object_set_new(o, "empty_repo", json_true());
	hub_repo_project_fields(p, o);
	if (simple)
		return o;
	snprintf(url, sizeof(url), "%s/api/v4/projects/%lld", hub->base_url, (long long)p->id);
	json_object_set_new(o, "_links", json_pack("{s:s}", "self", url));
	json_object_set_new(o, "visibility", json_string(p->visibility));
	json_object_set_new(o, "archived", json_false());
	json_object_set_new(o, "lfs_enabled", json_true());
	json_object_set_new(o, "issues_enabled", json_false());
	json_object_set_new(o, "merge_requests_enabled", json_false());
	json_object_set_new(o, "wiki_enabled", json_false());
	json_object_set_new(o, "jobs_enabled", json_true());
	json_object_set_new(o, "snippets_enabled", json_false());
	json_object_set_new(o, "container_registry_enabled", json_false());
	json_object_set_new(o, "repository_access_level", json_string("enabled"));
	json_object_set_new(o, "builds_access_level", json_string("enabled"));
	hub_ci_project_fields(p, o);
	json_object_set_new(o, "ci_push_repository_for_job_token_allowed",
	                    json_boolean(hub_project_job_token_push(hub, p->id)));
	json_object_set_new(o, "creator_id", json_null());
	json_object_set_new(o, "open_issues_count", json_integer(0));
	json_object_set_new(o, "shared_runners_enabled", json_true());
	json_object_set_new(o, "request_access_enabled", json_false());
	json_object_set_new(o, "permissions", json_null());
	if (req->user) {
		int direct = 0, group = 0;

		if (sqlite3_prepare_v2(hub->db,
		                       "SELECT access_level FROM members WHERE project_id = ?1"
		                       " AND user_id = ?2",
		                       -1, &st, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, p->id);
			sqlite3_bind_int64(st, 2, req->user->id);
			if (sqlite3_step(st) == SQLITE_ROW)
				direct = sqlite3_column_int(st, 0);
			sqlite3_finalize(st);
		}
		/* Access through a group or a personal namespace, when above the direct one. */
		group = (int)hub_project_member_level(hub, p, req->user);
		if (group <= direct)
			group = 0;
		json_object_set_new(o, "permissions",
		                    json_pack("{s:o,s:o}", "project_access",
		                              direct ? json_pack("{s:i,s:i}", "access_level",
		                                                 direct, "notification_level", 3)
		                                     : json_null(),
		                              "group_access",
		                              group ? json_pack("{s:i,s:i}", "access_level", group,
		                                                "notification_level", 3)
		                                    : json_null()));
	}
	return o;
}

static int order_column(const char *s, const char **col)
{
	static const struct {
		const char *name, *col;
	} cols[] = {{"id", "p.id"},
	            {"name", "p.name"},
	            {"path", "p.path"},
	            {"created_at", "p.created_at"},
	            {"updated_at", "p.last_activity_at"},
	            {"last_activity_at", "p.last_activity_at"},
	            {"similarity", "p.created_at"}};

	if (!s || !*s) {
		*col = "p.created_at";
		return 0;
	}
	for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++) {
		if (strcmp(s, cols[i].name) == 0) {
			*col = cols[i].col;
			return 0;
		}
	}
	return -EINVAL;
}

static void route_projects_list(struct hub_req *req, struct hub_resp *resp)
{
	static const char with_sql[] =
	    "WITH RECURSIVE ug(ns, lvl) AS ("
	    " SELECT namespace_id, access_level FROM group_members WHERE user_id = :u"
	    " UNION ALL SELECT id, 50 FROM namespaces WHERE kind = 'user' AND owner_id = :u"
	    " UNION ALL SELECT n.id, ug.lvl FROM namespaces n JOIN ug ON n.parent_id = ug.ns),"
	    " acc(pid, lvl) AS (SELECT pid, MAX(lvl) FROM ("
	    " SELECT project_id AS pid, access_level AS lvl FROM members WHERE user_id = :u"
	    " UNION ALL SELECT p.id, ug.lvl FROM projects p JOIN ug ON p.namespace_id = ug.ns)"
	    " GROUP BY pid)";
	static const char where_sql[] =
	    " FROM projects p JOIN namespaces n ON n.id = p.namespace_id"
	    " LEFT JOIN acc ON acc.pid = p.id WHERE"
	    " (:admin OR p.visibility = 'public' OR (:u > 0 AND p.visibility = 'internal')"
	    " OR acc.lvl >= 10)"
	    " AND (NOT :membership OR acc.lvl >= 10) AND (NOT :owned OR acc.lvl >= 50)"
	    " AND (:min IS NULL OR coalesce(acc.lvl, 0) >= :min)"
	    " AND (:vis IS NULL OR p.visibility = :vis)"
	    " AND (:search IS NULL OR instr(lower(p.name), lower(:search)) > 0"
	    " OR instr(lower(p.path), lower(:search)) > 0"
	    " OR instr(lower(coalesce(p.description, '')), lower(:search)) > 0"
	    " OR (:search_ns AND instr(lower(n.full_path || '/' || p.path), lower(:search)) > 0))"
	    " AND (:id_after IS NULL OR p.id > :id_after)"
	    " AND (:id_before IS NULL OR p.id < :id_before)"
	    " AND NOT :archived";
	const struct hub_user *u = req->user;
	const char *vis = hub_req_query(req, "visibility");
	const char *search = hub_req_query(req, "search");
	const char *sort = hub_req_query(req, "sort");
	const char *min = hub_req_query(req, "min_access_level");
	const char *col;
	bool desc = true, simple = param_true(hub_req_query(req, "simple"));
	struct buf sql = BUF_INIT(8192);
	sqlite3_stmt *st = NULL;
	size_t total = 0, off = 0, lim = 0;
	json_t *arr = NULL;
	int rc;

	if (order_column(hub_req_query(req, "order_by"), &col) < 0) {
		hub_resp_json(resp, 400,
		              json_pack("{s:s}", "error", "order_by does not have a valid value"));
		return;
	}
	if (sort && strcmp(sort, "asc") != 0 && strcmp(sort, "desc") != 0) {
		hub_resp_json(resp, 400,
		              json_pack("{s:s}", "error", "sort does not have a valid value"));
		return;
	}
	desc = !sort || strcmp(sort, "desc") == 0;
	if (vis && strcmp(vis, "private") && strcmp(vis, "internal") && strcmp(vis, "public")) {
		hub_resp_json(
		    resp, 400,
		    json_pack("{s:s}", "error", "visibility does not have a valid value"));
		return;
	}
	if (min && hub_access_parse(min) < 0) {
		hub_resp_json(
		    resp, 400,
		    json_pack("{s:s}", "error", "min_access_level does not have a valid value"));
		return;
	}
	if (search && strlen(search) > API_SEARCH_MAX) {
		hub_resp_json(resp, 400, json_pack("{s:s}", "error", "search is too long"));
		return;
	}
	for (int pass = 0; pass < 2; pass++) {
		buf_reset(&sql);
		buf_puts(&sql, with_sql);
		buf_puts(&sql, pass == 0 ? " SELECT count(*)" : " SELECT p.id");
		buf_puts(&sql, where_sql);
		if (pass == 1)
			buf_printf(&sql, " ORDER BY %s %s, p.id %s LIMIT :lim OFFSET :off", col,
			           desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
		rc = sqlite3_prepare_v2(req->hub->db, sql.data, -1, &st, NULL);
		if (rc != SQLITE_OK) {
			log_error("project list query: %s", sqlite3_errmsg(req->hub->db));
			hub_resp_error(resp, 500, "500 Internal Server Error");
			goto out;
		}
#define BIND_INT(name, v) sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, name), (v))
#define BIND_TEXT(name, v)                                                                         \
	do {                                                                                       \
		if (v)                                                                             \
			sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, name), (v), -1,     \
			                  SQLITE_STATIC);                                          \
	} while (0)
		BIND_INT(":u", u ? u->id : 0);
		BIND_INT(":admin", u && u->is_admin);
		BIND_INT(":membership", param_true(hub_req_query(req, "membership")));
		BIND_INT(":owned", param_true(hub_req_query(req, "owned")));
		BIND_INT(":search_ns", param_true(hub_req_query(req, "search_namespaces")));
		BIND_INT(":archived", param_true(hub_req_query(req, "archived")));
		if (min)
			BIND_INT(":min", hub_access_parse(min));
		BIND_TEXT(":vis", vis);
		BIND_TEXT(":search", search);
		if (hub_req_query(req, "id_after"))
			BIND_INT(":id_after", strtoll(hub_req_query(req, "id_after"), NULL, 10));
		if (hub_req_query(req, "id_before"))
			BIND_INT(":id_before", strtoll(hub_req_query(req, "id_before"), NULL, 10));
		if (pass == 0) {
			if (sqlite3_step(st) == SQLITE_ROW)
				total = (size_t)sqlite3_column_int64(st, 0);
			sqlite3_finalize(st);
			st = NULL;
			hub_paginate(req, resp, total, &off, &lim);
			continue;
		}
		BIND_INT(":lim", (int64_t)lim);
		BIND_INT(":off", (int64_t)off);
#undef BIND_INT
#undef BIND_TEXT
		arr = json_array();
		while (sqlite3_step(st) == SQLITE_ROW) {
			struct hub_project p;
			char id[32];

			snprintf(id, sizeof(id), "%lld", (long long)sqlite3_column_int64(st, 0));
			if (hub_project_load(req->hub, id, &p) < 0)
				continue;
			p.access = hub_project_access(req->hub, &p, u);
			json_array_append_new(arr, hub_project_json(req, &p, simple));
		}
		sqlite3_finalize(st);
		st = NULL;
	}
	hub_resp_json(resp, 200, arr);
	arr = NULL;
out:
	json_decref(arr);
	sqlite3_finalize(st);
	buf_free(&sql);
}

/* GitLab derives a missing path from the name: lower case, other runs become '-'. */
static void path_from_name(const char *name, char *out, size_t n)
{
	size_t o = 0;
	bool dash = false;

	for (; *name && o + 1 < n; name++) {
		unsigned char c = (unsigned char)*name;

		if (isalnum(c) || c == '_' || c == '.') {
			if (dash && o > 0 && o + 2 < n)
				out[o++] = '-';
			dash = false;
			out[o++] = (char)tolower(c);
		} else {
			dash = true;
		}
	}
	out[o] = '\0';
}

static bool name_valid(const char *s)
{
	unsigned char c0 = (unsigned char)s[0];

	if (!*s || strlen(s) > HUB_MAX_NAME || !(isalnum(c0) || c0 == '_' || c0 >= 0x80))
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (!(isalnum(c) || c == '_' || c == '.' || c == '+' || c == '-' || c == ' ' ||
		      c >= 0x80))
			return false;
	}
	return true;
}

static void bad_field(struct hub_resp *resp, const char *field, const char *msg)
{
	hub_resp_json(resp, 400, json_pack("{s:{s:[s]}}", "message", field, msg));
}

static bool name_taken(struct hub *hub, int64_t ns, const char *name)
{
	sqlite3_stmt *st = NULL;
	bool taken = false;

	if (sqlite3_prepare_v2(hub->db,
	                       "SELECT 1 FROM projects WHERE namespace_id = ?1 AND name = ?2", -1,
	                       &st, NULL) != SQLITE_OK)
		return false;
	sqlite3_bind_int64(st, 1, ns);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	taken = sqlite3_step(st) == SQLITE_ROW;
	sqlite3_finalize(st);
	return taken;
}

static void route_projects_create(struct hub_req *req, struct hub_resp *resp)
{
	json_t *params = NULL;
	const char *name, *path, *vis, *desc;
	json_t *nsv;
	char gen[HUB_MAX_NAME + 1], nsid[64];
	struct ns_row ns;
	struct hub_project p;
	int64_t id;
	int r;

	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	if (hub_req_params(req, &params) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	name = jsonx_str(params, "name");
	path = jsonx_str(params, "path");
	vis = jsonx_str(params, "visibility");
	desc = jsonx_str(params, "description");
	if ((!name || !*name) && (!path || !*path)) {
		hub_resp_json(
		    resp, 400,
		    json_pack("{s:s}", "error",
		              "name, path are missing, at least one parameter must be provided"));
		goto out;
	}
	if (!path || !*path) {
		path_from_name(name, gen, sizeof(gen));
		path = gen;
	}
	if (!name || !*name)
		name = path;
	if (!vis)
		vis = "private";
	if (strcmp(vis, "private") && strcmp(vis, "internal") && strcmp(vis, "public")) {
		hub_resp_json(
		    resp, 400,
		    json_pack("{s:s}", "error", "visibility does not have a valid value"));
		goto out;
	}
	if (!name_valid(name)) {
		bad_field(
		    resp, "name",
		    "can contain only letters, digits, emojis, '_', '.', '+', dashes, or spaces. "
		    "It must start with a letter, digit, emoji, or '_'.");
		goto out;
	}
	if (!hub_path_valid(path)) {
		bad_field(
		    resp, "path",
		    "can contain only letters, digits, '_', '-' and '.'. Cannot start with '-', "
		    "end in '.git' or end in '.atom'");
		goto out;
	}
	if (desc && strlen(desc) > 2000) {
		bad_field(resp, "description", "is too long (maximum is 2000 characters)");
		goto out;
	}
	nsv = json_object_get(params, "namespace_id");
	if (!nsv)
		nsv = json_object_get(params, "namespace");
	if (json_is_integer(nsv))
		snprintf(nsid, sizeof(nsid), "%lld", (long long)json_integer_value(nsv));
	else if (json_is_string(nsv) && strlen(json_string_value(nsv)) < sizeof(nsid))
		snprintf(nsid, sizeof(nsid), "%s", json_string_value(nsv));
	else if (nsv && !json_is_null(nsv)) {
		hub_resp_json(resp, 400, json_pack("{s:s}", "error", "namespace_id is invalid"));
		goto out;
	} else {
		int64_t own = 0;

		if (hub_namespace_of_user(req->hub, req->user->id, &own) < 0) {
			hub_resp_error(resp, 404, "404 Namespace Not Found");
			goto out;
		}
		snprintf(nsid, sizeof(nsid), "%lld", (long long)own);
	}
	if (ns_load(req->hub, nsid, &ns) < 0) {
		hub_resp_error(resp, 404, "404 Namespace Not Found");
		goto out;
	}
	/* GitLab's default project creation level: maintainers of the group. */
	if (ns_access(req->hub, &ns, req->user) < HUB_ACCESS_MAINTAINER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		goto out;
	}
	if (name_taken(req->hub, ns.id, name)) {
		hub_resp_json(resp, 400,
		              json_pack("{s:{s:[s],s:[s]}}", "message", "name",
		                        "has already been taken", "path",
		                        "has already been taken"));
		goto out;
	}
	r = hub_project_create(req->hub, ns.id, name, path, desc, vis, req->user->id, &id);
	if (r == -EEXIST) {
		hub_resp_json(resp, 400,
		              json_pack("{s:{s:[s],s:[s]}}", "message", "name",
		                        "has already been taken", "path",
		                        "has already been taken"));
		goto out;
	}
	snprintf(nsid, sizeof(nsid), "%lld", (long long)id);
	if (r < 0 || hub_project_load(req->hub, nsid, &p) < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	log_info("project %lld %s created by %s", (long long)id, p.path_with_namespace,
	         req->user->username);
	p.access = hub_project_access(req->hub, &p, req->user);
	hub_resp_json(resp, 201, hub_project_json(req, &p, false));
out:
	json_decref(params);
}

/* Resolves :id (still percent-encoded) to a project the caller can see. Fills resp and
 * returns a negative errno otherwise. */
static int project_resolve(struct hub_req *req, struct hub_resp *resp, const char *raw,
                           struct hub_project *p)
{
	char id[1100];

	if (strlen(raw) >= sizeof(id)) {
		hub_resp_error(resp, 404, "404 Project Not Found");
		return -ENOENT;
	}
	if (url_decode(id, raw, false) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return -EINVAL;
	}
	if (!path_is_safe(id, HUB_MAX_PATH) || hub_project_load(req->hub, id, p) < 0 ||
	    !hub_project_visible(req->hub, p, req->user) ||
	    (req->job_project_id > 0 && p->id != req->job_project_id)) {
		hub_resp_error(resp, 404, "404 Project Not Found");
		return -ENOENT;
	}
	p->access = hub_project_access(req->hub, p, req->user);
	return 0;
}

/* PUT /projects/:id: of GitLab's editable attributes, ci_config_path (maintainers);
 * any other attribute is refused by name rather than ignored. */
static void route_project_update(struct hub_req *req, struct hub_resp *resp, const char *raw)
{
	struct hub_project p;
	json_t *params = NULL, *v;
	const char *key;
	int r;

	/* lib/api/projects.rb: before { authenticate_non_get! } */
	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	if (project_resolve(req, resp, raw, &p) < 0)
		return;
	if (p.access < HUB_ACCESS_MAINTAINER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (hub_req_params(req, &params) < 0 || !json_is_object(params)) {
		hub_resp_error(resp, 400, "400 Bad request");
		goto out;
	}
	json_object_foreach(params, key, v)
	{
		if (!strcmp(key, "ci_push_repository_for_job_token_allowed")) {
			if (!json_is_boolean(v) &&
			    !(json_is_string(v) && (!strcmp(json_string_value(v), "true") ||
			                            !strcmp(json_string_value(v), "false")))) {
				hub_resp_json(
				    resp, 400,
				    json_pack("{s:s}", "error",
				              "ci_push_repository_for_job_token_allowed is"
				              " invalid"));
				goto out;
			}
			continue;
		}
		if (strcmp(key, "ci_config_path") && strcmp(key, "id")) {
			json_t *m =
			    json_pack("{s:[s]}", key, "is not an attribute reef-hub can change");

			hub_resp_json(resp, 400, json_pack("{s:o}", "message", m));
			goto out;
		}
	}
	v = json_object_get(params, "ci_push_repository_for_job_token_allowed");
	if (v && hub_project_job_token_push_set(
	             req->hub, p.id,
	             json_is_true(v) ||
	                 (json_is_string(v) && !strcmp(json_string_value(v), "true"))) < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	r = hub_ci_project_update(&p, params);
	if (r == -EINVAL) {
		hub_resp_json(resp, 400,
		              json_pack("{s:{s:[s]}}", "message", "ci_config_path",
		                        "must be a relative path inside the repository"));
		goto out;
	}
	if (r < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	hub_resp_json(resp, 200, hub_project_json(req, &p, false));
out:
	json_decref(params);
}

void hub_api_route(struct hub_req *req, struct hub_resp *resp, const char *rest)
{
	char *seg[API_MAX_SEGMENTS] = {NULL};
	const char *repo_rest = NULL, *ci_rest = NULL;
	size_t n = 0;
	char *copy = strdup(*rest == '/' ? rest + 1 : rest), *s, *save = NULL;
	struct hub_project p;

	if (!copy) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	/* Cut at "/repository/" first: the rest (a file path, say) may hold more segments. */
	{
		char *r =
		    strncmp(copy, "projects/", 9) == 0 ? strstr(copy + 9, "/repository") : NULL;

		if (r && (r[11] == '/' || r[11] == '\0') &&
		    memchr(copy + 9, '/', (size_t)(r - copy - 9)) == NULL) {
			repo_rest = rest + 1 + (r - copy) + (r[11] == '/' ? 12 : 11);
			*r = '\0';
		}
	}
	/* CI routes (hub_ci.h) take the rest after the project id, which may hold a path. */
	if (!repo_rest && strncmp(copy, "projects/", 9) == 0) {
		char *sl = strchr(copy + 9, '/');
		static const char *const ci_segs[] = {"pipeline", "pipelines", "jobs", "trigger",
		                                      "protected_branches"};

		for (size_t i = 0; sl && i < sizeof(ci_segs) / sizeof(ci_segs[0]); i++) {
			size_t len = strlen(ci_segs[i]);

			if (strncmp(sl + 1, ci_segs[i], len) == 0 &&
			    (sl[1 + len] == '/' || sl[1 + len] == '\0')) {
				ci_rest = rest + (*rest == '/') + (sl + 1 - copy);
				*sl = '\0';
				break;
			}
		}
	}
	for (s = strtok_r(copy, "/", &save); s && n < API_MAX_SEGMENTS;
	     s = strtok_r(NULL, "/", &save))
		seg[n++] = s;
	if (s) {
		hub_resp_not_found(resp);
		goto out;
	}
	if (n == 1 && strcmp(seg[0], "version") == 0 && is_get(req)) {
		if (!req->user)
			hub_resp_error(resp, 401, "401 Unauthorized");
		else
			hub_resp_json(
			    resp, 200,
			    json_pack("{s:s,s:s}", "version", "16.0.0-reef", "revision", "reef"));
	} else if (n == 1 && strcmp(seg[0], "job") == 0 && is_get(req)) {
		hub_ci_current_job(req, resp);
	} else if (n == 1 && strcmp(seg[0], "user") == 0 && is_get(req)) {
		route_user(req, resp);
	} else if (n <= 2 && strcmp(seg[0], "users") == 0 && is_get(req)) {
		route_users(req, resp, n == 2 ? seg[1] : NULL);
	} else if (n == 1 && strcmp(seg[0], "projects") == 0 && is_get(req)) {
		route_projects_list(req, resp);
	} else if (n == 1 && strcmp(seg[0], "projects") == 0 && strcmp(req->method, "POST") == 0) {
		route_projects_create(req, resp);
	} else if (n == 2 && strcmp(seg[0], "projects") == 0 && is_get(req) && !repo_rest &&
	           !ci_rest) {
		if (project_resolve(req, resp, seg[1], &p) == 0) {
			json_t *o = hub_project_json(req, &p, false);
			const char *stats = hub_req_query(req, "statistics");

			/* reporters and up (read_statistics), as lib/api/entities/project.rb */
			if (stats && !strcmp(stats, "true") && (int)p.access >= HUB_ACCESS_REPORTER)
				json_object_set_new(o, "statistics",
				                    hub_ci_project_statistics(req->hub, p.id));
			hub_resp_json(resp, 200, o);
		}
	} else if (n == 2 && strcmp(seg[0], "projects") == 0 && strcmp(req->method, "PUT") == 0 &&
	           !repo_rest && !ci_rest) {
		route_project_update(req, resp, seg[1]);
	} else if (n == 2 && strcmp(seg[0], "projects") == 0 && repo_rest) {
		if (project_resolve(req, resp, seg[1], &p) < 0)
			goto out;
		/* Guests of a private project see it but not its code. */
		if (strcmp(p.visibility, "private") == 0 && (int)p.access < HUB_ACCESS_REPORTER) {
			hub_resp_error(resp, 403, "403 Forbidden");
			goto out;
		}
		hub_repo_route(req, resp, &p, repo_rest);
	} else if (n == 2 && strcmp(seg[0], "projects") == 0 && ci_rest &&
	           strncmp(ci_rest, "protected_branches", 18) == 0) {
		if (project_resolve(req, resp, seg[1], &p) == 0)
			hub_protect_route(req, resp, &p, ci_rest + 18);
	} else if (n == 2 && strcmp(seg[0], "projects") == 0 && ci_rest) {
		char id[HUB_MAX_PATH + 1];

		/* a trigger authenticates by its token parameter, not by the caller */
		if (hub_ci_route_is_trigger(req->method, ci_rest) && !req->user) {
			if (strlen(seg[1]) >= sizeof(id) || url_decode(id, seg[1], false) < 0 ||
			    !path_is_safe(id, HUB_MAX_PATH) ||
			    hub_project_load(req->hub, id, &p) < 0) {
				hub_resp_error(resp, 404, "404 Project Not Found");
				goto out;
			}
			p.access = HUB_ACCESS_NONE;
			hub_ci_project_route(req, resp, &p, ci_rest);
		} else if (project_resolve(req, resp, seg[1], &p) == 0) {
			hub_ci_project_route(req, resp, &p, ci_rest);
		}
	} else if ((n == 3 || n == 4) && strcmp(seg[0], "projects") == 0 &&
	           strcmp(seg[2], "hooks") == 0 && !repo_rest && !ci_rest) {
		if (project_resolve(req, resp, seg[1], &p) == 0)
			hub_webhooks_route(req, resp, &p, n == 4 ? seg[3] : NULL);
	} else if (n <= 2 && strcmp(seg[0], "namespaces") == 0 && is_get(req)) {
		char id[1100];

		if (n == 2 && (strlen(seg[1]) >= sizeof(id) || url_decode(id, seg[1], false) < 0)) {
			hub_resp_error(resp, 400, "400 Bad request");
			goto out;
		}
		route_namespaces(req, resp, n == 2 ? id : NULL);
	} else if (n == 2 && strcmp(seg[0], "groups") == 0 && is_get(req)) {
		char id[1100];

		if (strlen(seg[1]) >= sizeof(id) || url_decode(id, seg[1], false) < 0) {
			hub_resp_error(resp, 400, "400 Bad request");
			goto out;
		}
		route_group(req, resp, id);
	} else {
		hub_resp_not_found(resp);
	}
out:
	free(copy);
}
