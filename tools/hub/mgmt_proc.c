/* Processors of the management API: a manifest (processor.json) read from a code
 * project at a ref, checked, its code snapshotted at that commit into
 * DIR/processors/<slug>/<sha>/, and the processor row (mg_processors) shown only to
 * those who can read its code. Parameter values are typed here for launches too. */
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

/* ---- processors ---- */

static const char mg_proc_cols[] =
    "slug, name, type, description, command, input_data_type, output_data_type,"
    " parameters, metrics, project_id, ref, sha, created_at, updated_at, id, image,"
    " code_project_path";

json_t *mg_processor_json(sqlite3_stmt *st)
{
	json_t *o = json_object();
	struct hub_project p;
	char id[32];

	json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 14)));
	json_object_set_new(o, "slug", mg_str(st, 0));
	json_object_set_new(o, "name", mg_str(st, 1));
	json_object_set_new(o, "type", mg_str(st, 2));
	json_object_set_new(o, "description", mg_str(st, 3));
	json_object_set_new(o, "command", mg_str(st, 4));
	json_object_set_new(o, "input_data_type", mg_str(st, 5));
	json_object_set_new(o, "output_data_type", mg_str(st, 6));
	json_object_set_new(o, "parameters", mg_json_col(st, 7));
	json_object_set_new(o, "metrics", mg_json_col(st, 8));
	json_object_set_new(o, "code_project_id", json_integer(sqlite3_column_int64(st, 9)));
	snprintf(id, sizeof(id), "%lld", (long long)sqlite3_column_int64(st, 9));
	if (sqlite3_column_text(st, 16))
		json_object_set_new(o, "code_project_path", mg_str(st, 16));
	else if (hub_project_load(mg_hub, id, &p) == 0)
		json_object_set_new(o, "code_project_path", json_string(p.path_with_namespace));
	json_object_set_new(o, "image", mg_str(st, 15));
	json_object_set_new(o, "ref", mg_str(st, 10));
	json_object_set_new(o, "sha", mg_str(st, 11));
	mg_time(o, "published_at", st, 12);
	mg_time(o, "updated_at", st, 13);
	return o;
}

/* A processor is its code: the caller must be able to read its code project's
 * repository, which a guest of a private project cannot (doc/user/permissions.md). */
bool mg_code_readable(struct hub_req *req, const struct hub_project *p)
{
	return hub_project_visible(req->hub, p, req->user) &&
	       (strcmp(p->visibility, "private") ||
	        hub_project_access(req->hub, p, req->user) >= HUB_ACCESS_REPORTER);
}

bool mg_code_visible(struct hub_req *req, int64_t project_id)
{
	struct hub_project p;
	char id[32];

	if (mgl_active())
		return req->user && mgl_code_readable(req, project_id);
	snprintf(id, sizeof(id), "%lld", (long long)project_id);
	return hub_project_load(req->hub, id, &p) == 0 && mg_code_readable(req, &p);
}

/* A processor row the caller may see (its code is readable by them). */
sqlite3_stmt *mg_processor_row(struct hub_req *req, const char *slug)
{
	char sql[512];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql), "SELECT %s FROM mg_processors WHERE slug=?", mg_proc_cols);
	st = ci_db_prep(sql, "t", slug);
	if (!st || sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return NULL;
	}
	if (!mg_code_visible(req, sqlite3_column_int64(st, 9))) {
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

static bool mg_type_ok(const char *t)
{
	return t &&
	       (!strcmp(t, "ALGORITHM") || !strcmp(t, "OPERATION") || !strcmp(t, "VISUALIZATION"));
}

static bool mg_ptype_ok(const char *t)
{
	return t && (!strcmp(t, "INTEGER") || !strcmp(t, "FLOAT") || !strcmp(t, "STRING") ||
	             !strcmp(t, "BOOLEAN"));
}

/* The shortest decimal that reads back as x, as Python and JSON print floats. */
static char *mg_double_str(double x)
{
	char buf[64];

	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, x);
		if (strtod(buf, NULL) == x)
			break;
	}
	return strdup(buf);
}

/* Normalizes a parameter value to its declared type; NULL when it does not fit. The
 * result is a string ready for the command line. */
char *mg_param_value(const char *type, const json_t *v)
{
	char buf[64];

	if (!strcmp(type, "STRING")) {
		if (json_is_string(v))
			return strlen(json_string_value(v)) <= 4096 ? strdup(json_string_value(v))
			                                            : NULL;
		return NULL;
	}
	if (!strcmp(type, "BOOLEAN")) {
		const char *s = json_string_value(v);

		if (json_is_boolean(v))
			return strdup(json_is_true(v) ? "true" : "false");
		if (s && (!strcmp(s, "true") || !strcmp(s, "false")))
			return strdup(s);
		return NULL;
	}
	if (!strcmp(type, "INTEGER")) {
		const char *s = json_string_value(v);
		char *end;

		if (json_is_integer(v)) {
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
			return strdup(buf);
		}
		if (s && *s && strlen(s) < 24) {
			long long x = strtoll(s, &end, 10);

			if (!*end) {
				snprintf(buf, sizeof(buf), "%lld", x);
				return strdup(buf);
			}
		}
		return NULL;
	}
	if (!strcmp(type, "FLOAT")) {
		const char *s = json_string_value(v);
		char *end;

		if (json_is_number(v))
			return mg_double_str(json_number_value(v));
		if (s && *s && strlen(s) < 48) {
			double x = strtod(s, &end);

			if (!*end && x == x)
				return mg_double_str(x);
		}
	}
	return NULL;
}

/* Checks a manifest; err gets the reason. */
int mg_manifest_check(const json_t *m, char *err, size_t n)
{
	const json_t *params = json_object_get(m, "parameters"), *metrics, *v;
	const char *cmd = jsonx_str(m, "command");
	size_t i;

	if (!json_is_object(m))
		return snprintf(err, n, "the manifest must be a JSON object"), -EINVAL;
	if (!mg_slug_ok(jsonx_str(m, "slug")))
		return snprintf(err, n, "slug must be 1-64 of [a-z0-9-]"), -EINVAL;
	if (!jsonx_str(m, "name") || !*jsonx_str(m, "name") || strlen(jsonx_str(m, "name")) > 255)
		return snprintf(err, n, "name must be a non-empty string"), -EINVAL;
	if (!mg_type_ok(jsonx_str(m, "type")))
		return snprintf(err, n, "type must be ALGORITHM, OPERATION or VISUALIZATION"),
		       -EINVAL;
	if (json_object_get(m, "image") &&
	    (!jsonx_str(m, "image") || !*jsonx_str(m, "image") ||
	     strlen(jsonx_str(m, "image")) > 255 || strpbrk(jsonx_str(m, "image"), "\n\r\"\\ ")))
		return snprintf(err, n,
		                "image must be a container image name, e.g. \"python:3.12\""),
		       -EINVAL;
	if (!cmd || !*cmd || strlen(cmd) > 4096 || strchr(cmd, '\n'))
		return snprintf(err, n, "command must be one line, e.g. \"python3 main.py\""),
		       -EINVAL;
	if (params && (!json_is_array(params) || json_array_size(params) > MG_MAX_PARAMS))
		return snprintf(err, n, "parameters must be a list of at most %d", MG_MAX_PARAMS),
		       -EINVAL;
	json_array_foreach(params, i, v)
	{
		const char *name = jsonx_str(v, "name"), *type = jsonx_str(v, "type");
		const json_t *def = json_object_get(v, "default");
		char *val;

		if (!mg_param_name_ok(name))
			return snprintf(err, n, "parameters[%zu].name is not a valid name", i),
			       -EINVAL;
		if (!mg_ptype_ok(type))
			return snprintf(
			           err, n,
			           "parameters[%zu].type must be INTEGER, FLOAT, STRING or BOOLEAN",
			           i),
			       -EINVAL;
		if (def && !json_is_null(def)) {
			if (!(val = mg_param_value(type, def)))
				return snprintf(err, n, "parameters[%zu].default is not a %s", i,
				                type),
				       -EINVAL;
			free(val);
		}
	}
	metrics = json_object_get(m, "metrics");
	if (metrics && (!json_is_array(metrics) || json_array_size(metrics) > 50))
		return snprintf(err, n, "metrics must be a list of at most 50 names"), -EINVAL;
	json_array_foreach(metrics, i, v) if (!json_is_string(v)) return snprintf(
	    err, n, "metrics[%zu] must be a string", i),
	    -EINVAL;
	return 0;
}

/* Reads a file of the repository at ref; *sha gets the commit. */
int mg_repo_file(const char *repo_path, const char *ref, const char *path, char sha[41],
                 struct buf *out)
{
	git_repository *repo = NULL;
	git_object *obj = NULL;
	git_commit *c = NULL;
	git_tree *tree = NULL;
	git_tree_entry *e = NULL;
	git_blob *blob = NULL;
	char spec[HUB_MAX_PATH + 16];
	int r = -ENOENT;

	if (git_repository_open_bare(&repo, repo_path) != 0)
		return -EIO;
	snprintf(spec, sizeof(spec), "refs/heads/%s", ref);
	if (git_revparse_single(&obj, repo, spec) != 0) {
		snprintf(spec, sizeof(spec), "refs/tags/%s", ref);
		if (git_revparse_single(&obj, repo, spec) != 0)
			goto out;
	}
	if (git_object_peel((git_object **)&c, obj, GIT_OBJECT_COMMIT) != 0)
		goto out;
	git_oid_tostr(sha, 41, git_commit_id(c));
	r = -ENODATA;
	if (!path)
		goto ok;
	if (git_commit_tree(&tree, c) != 0 || git_tree_entry_bypath(&e, tree, path) != 0 ||
	    git_tree_entry_type(e) != GIT_OBJECT_BLOB ||
	    git_blob_lookup(&blob, repo, git_tree_entry_id(e)) != 0)
		goto out;
	if ((size_t)git_blob_rawsize(blob) > MG_MAX_MANIFEST) {
		r = -EFBIG;
		goto out;
	}
	if (buf_append(out, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) < 0 ||
	    buf_puts(out, "") < 0) {
		r = -ENOMEM;
		goto out;
	}
ok:
	r = 0;
out:
	git_blob_free(blob);
	git_tree_entry_free(e);
	git_tree_free(tree);
	git_commit_free(c);
	git_object_free(obj);
	git_repository_free(repo);
	return r;
}

/* The code at sha, extracted once into DIR/processors/<slug>/<sha>/ (read-only use). */
static int mg_snapshot(const struct hub_project *p, const char *slug, const char *sha)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 16], parent[PATH_MAX];
	struct stat sb;
	int code;

	hub_pathf(parent, sizeof(parent), "%s/processors", ci_data_dir());
	mkdir(parent, 0700);
	hub_pathf(parent, sizeof(parent), "%s/processors/%s", ci_data_dir(), slug);
	mkdir(parent, 0700);
	if (hub_pathf(dir, sizeof(dir), "%s/%s", parent, sha) < 0)
		return -ENAMETOOLONG;
	if (stat(dir, &sb) == 0)
		return 0;
	hub_pathf(tmp, sizeof(tmp), "%s.tmp%d", dir, (int)getpid());
	mkdir(tmp, 0700);
	{
		char repo[PATH_MAX], commit[41];
		char *argv[] = {
		    "/bin/sh",
		    "-c",
		    "git --git-dir=\"$1\" archive --format=tar \"$2\" | tar -x -C \"$3\"",
		    "sh",
		    repo,
		    commit,
		    tmp,
		    NULL};
		char *envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM=1", NULL};

		snprintf(repo, sizeof(repo), "%s", p->repo_path);
		snprintf(commit, sizeof(commit), "%s", sha);
		code = ci_exec(argv, envp);
	}
	if (code != 0 || rename(tmp, dir) < 0) {
		char *rm[] = {"/bin/rm", "-rf", tmp, NULL};

		ci_exec(rm, NULL);
		return stat(dir, &sb) == 0 ? 0 : -EIO; /* a concurrent publish won */
	}
	return 0;
}

void mg_processor_store(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                        const json_t *m, const char *ref, const char *sha, const char *image,
                        const char *code_path)
{
	const char *slug = jsonx_str(m, "slug");
	char *pj, *mj;
	int64_t owner;
	double now = ci_now();
	int r;

	pj = jsonx_dump(json_object_get(m, "parameters") ? json_object_get(m, "parameters")
	                                                 : json_array());
	mj = jsonx_dump(json_object_get(m, "metrics") ? json_object_get(m, "metrics")
	                                              : json_array());
	ci_lock();
	{
		sqlite3_stmt *st =
		    ci_db_prep("SELECT project_id FROM mg_processors WHERE slug=?", "t", slug);

		owner = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
		sqlite3_finalize(st);
	}
	/* checked and written under one lock: a slug is never taken over by a second
	 * project publishing at the same moment */
	if (owner && owner != p->id) {
		ci_unlock();
		mg_error(resp, 409, "409 Conflict: processor slug %s belongs to another project",
		         slug);
		goto out;
	}
	r = ci_db_exec(
	    NULL,
	    "INSERT INTO mg_processors(slug, name, type, description, command,"
	    " input_data_type, output_data_type, parameters, metrics, project_id, ref,"
	    " sha, published_by, created_at, updated_at, image, code_project_path)"
	    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(slug) DO UPDATE SET"
	    " name=excluded.name, type=excluded.type, description=excluded.description,"
	    " command=excluded.command, input_data_type=excluded.input_data_type,"
	    " output_data_type=excluded.output_data_type,"
	    " parameters=excluded.parameters, metrics=excluded.metrics, ref=excluded.ref,"
	    " sha=excluded.sha, published_by=excluded.published_by,"
	    " updated_at=excluded.updated_at, image=excluded.image,"
	    " code_project_path=excluded.code_project_path",
	    "tttttttttittiddtt", slug, jsonx_str(m, "name"), jsonx_str(m, "type"),
	    jsonx_str(m, "description") ? jsonx_str(m, "description") : "", jsonx_str(m, "command"),
	    jsonx_str(m, "input_data_type"), jsonx_str(m, "output_data_type"), pj, mj, p->id, ref,
	    sha, req->user->id, now, now, image, code_path);
	ci_unlock();
	if (r < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	{
		sqlite3_stmt *st = mg_processor_row(req, slug);

		if (st)
			hub_resp_json(resp, 201, mg_processor_json(st));
		else
			hub_resp_error(resp, 500, "500 Internal Server Error");
		sqlite3_finalize(st);
	}
out:
	free(pj);
	free(mj);
}

void mg_publish(struct hub_req *req, struct hub_resp *resp, const char *project_seg)
{
	struct hub_project p;
	json_t *params = NULL, *m = NULL;
	struct buf content = BUF_INIT(MG_MAX_MANIFEST + 1);
	char sha[41] = "", err[512];
	const char *ref, *path;
	int r;

	if (!req->user) {
		hub_resp_error(resp, 401, "401 Unauthorized");
		return;
	}
	if (mg_project(req, resp, project_seg, &p) < 0)
		return;
	if (p.access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (hub_req_params(req, &params) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	ref = jsonx_str(params, "ref");
	if (!ref)
		ref = jsonx_str(params, "branch");
	path = jsonx_str(params, "path") ? jsonx_str(params, "path") : "processor.json";
	if (!ref || !*ref) {
		hub_resp_missing(resp, "ref");
		goto out;
	}
	if (!path_is_safe(path, HUB_MAX_PATH)) {
		hub_resp_error(resp, 400, "400 (Bad request) \"path\" is not a safe path");
		goto out;
	}
	r = mg_repo_file(p.repo_path, ref, path, sha, &content);
	if (r == -ENOENT) {
		hub_resp_error(resp, 404, "404 Branch Not Found");
		goto out;
	}
	if (r == -ENODATA) {
		mg_error(resp, 400, "400 (Bad request) no processor manifest %s at %s", path, ref);
		goto out;
	}
	if (r < 0 || jsonx_parse(&m, content.data, content.len, 16, MG_MAX_MANIFEST) < 0) {
		mg_error(resp, 400, "400 (Bad request) %s is not valid JSON", path);
		goto out;
	}
	if (mg_manifest_check(m, err, sizeof(err)) < 0) {
		mg_error(resp, 400, "400 (Bad request) %s: %s", path, err);
		goto out;
	}
	if (mg_snapshot(&p, jsonx_str(m, "slug"), sha) < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	mg_processor_store(req, resp, &p, m, ref, sha, NULL, NULL);
out:
	json_decref(m);
	json_decref(params);
	buf_free(&content);
}

void mg_processors_list(struct hub_req *req, struct hub_resp *resp)
{
	const char *type = hub_req_query(req, "type"), *q = hub_req_query(req, "q");
	char sql[1024], like[600];
	json_t *all = json_array(), *page = json_array();
	size_t off = 0, lim = 0;
	sqlite3_stmt *st;

	if (!q)
		q = hub_req_query(req, "search");
	if (type && !mg_type_ok(type)) {
		json_decref(all);
		json_decref(page);
		hub_resp_error(
		    resp, 400,
		    "400 (Bad request) type must be ALGORITHM, OPERATION or VISUALIZATION");
		return;
	}
	snprintf(like, sizeof(like), "%%%.500s%%", q ? q : "");
	snprintf(sql, sizeof(sql),
	         "SELECT %s FROM mg_processors WHERE (?1 IS NULL OR type=?1) AND (slug LIKE ?2 OR"
	         " name LIKE ?2 OR description LIKE ?2) ORDER BY slug",
	         mg_proc_cols);
	st = ci_db_prep(sql, "tt", type, like);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		if (mg_code_visible(req, sqlite3_column_int64(st, 9)))
			json_array_append_new(all, mg_processor_json(st));
	}
	sqlite3_finalize(st);
	hub_paginate(req, resp, json_array_size(all), &off, &lim);
	for (size_t i = off; i < off + lim && i < json_array_size(all); i++)
		json_array_append(page, json_array_get(all, i));
	json_decref(all);
	hub_resp_json(resp, 200, page);
}
