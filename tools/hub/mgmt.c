/* The management API under /api/v1 (snake_case JSON, modeled on MLReef's management
 * service), over the runner:
 *   processors      published from a code project carrying processor.json; a publish
 *                   snapshots the code at its commit into DIR/processors/<slug>/<sha>/,
 *                   the "image" jobs run it from
 *   experiments     ALGORITHM processors    -> branch experiment/<name>
 *   data-pipelines  OPERATION processors    -> branch data-pipeline/<slug>-N
 *   visualizations  VISUALIZATION processors -> branch data-visualization/<slug>-N
 *                   each launch commits a generated .mlreef.yml ("[skip ci]") on its
 *                   branch and triggers a pipeline with a per-launch EPF secret; the
 *                   launch's status is its pipeline's, never what the job reports
 *   epf             callbacks start/update/finish, authenticated by that secret
 *   usage           per namespace, for its members only
 * docs/mgmt-api.md describes every route. */
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
#include "webhooks.h"
#include "lfs.h"
#include "idem.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "runner.h"
#include "mgmt_int.h"

static const char mg_schema[] =
    "CREATE TABLE IF NOT EXISTS mg_transfer(project_id INTEGER PRIMARY KEY,"
    " bytes INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS mg_processors("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL,"
    " type TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', command TEXT NOT NULL,"
    " input_data_type TEXT, output_data_type TEXT, parameters TEXT NOT NULL,"
    " metrics TEXT NOT NULL, project_id INTEGER NOT NULL, ref TEXT NOT NULL,"
    " sha TEXT NOT NULL, published_by INTEGER, created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL);"
    "CREATE TABLE IF NOT EXISTS mg_launches("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, project_id INTEGER NOT NULL,"
    " kind TEXT NOT NULL, name TEXT NOT NULL, branch TEXT NOT NULL,"
    " source_branch TEXT NOT NULL, source_sha TEXT NOT NULL, processor_slug TEXT NOT NULL,"
    " processor_sha TEXT NOT NULL, params TEXT NOT NULL, input_path TEXT NOT NULL,"
    " output_path TEXT NOT NULL, status TEXT NOT NULL, pipeline_id INTEGER,"
    " secret_hash TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '[]',"
    " epf_started_at REAL, epf_finished_at REAL, epf_status TEXT, epf_exit_code INTEGER,"
    " user_id INTEGER, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
    " finished_at REAL, UNIQUE(project_id, branch));"
    "CREATE INDEX IF NOT EXISTS mg_launches_pipeline ON mg_launches(pipeline_id);";

/* Added after the first schema: the client's request id of a launch (exactly once
 * without Idempotency-Key). ALTER fails harmlessly when the column exists. */
static const char mg_schema_request_id[] = "ALTER TABLE mg_launches ADD COLUMN request_id TEXT;";
/* Added for the management role beside a GitLab (mgmt_gl.c): the launch's job and user
 * as GitLab names them, when its status was last asked; a processor's image and code
 * project path. Each ALTER fails harmlessly when the column exists. */
static const char *const mg_schema_gitlab[] = {
    "ALTER TABLE mg_launches ADD COLUMN job_id INTEGER;",
    "ALTER TABLE mg_launches ADD COLUMN username TEXT;",
    "ALTER TABLE mg_launches ADD COLUMN refreshed_at REAL;",
    "ALTER TABLE mg_processors ADD COLUMN image TEXT;",
    "ALTER TABLE mg_processors ADD COLUMN code_project_path TEXT;",
};
static const char mg_schema_request_index[] =
    "CREATE INDEX IF NOT EXISTS mg_launches_request ON mg_launches(project_id, kind,"
    " user_id, request_id);";

struct mg_kind {
	const char *route;  /* collection name in the URL */
	const char *kind;   /* stored kind */
	const char *type;   /* processor type it runs */
	const char *prefix; /* branch prefix */
};

static const struct mg_kind mg_kinds[] = {
    {"experiments", "experiment", "ALGORITHM", "experiment/"},
    {"data-pipelines", "data-pipeline", "OPERATION", "data-pipeline/"},
    {"visualizations", "visualization", "VISUALIZATION", "data-visualization/"},
};

struct hub *mg_hub;

/* ---- small helpers ---- */

void mg_time(json_t *o, const char *key, sqlite3_stmt *st, int col)
{
	char iso[32];

	if (sqlite3_column_type(st, col) == SQLITE_NULL) {
		json_object_set_new(o, key, json_null());
		return;
	}
	hub_time_iso((int64_t)sqlite3_column_double(st, col), iso);
	json_object_set_new(o, key, json_string(iso));
}

json_t *mg_str(sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	return s ? json_string((const char *)s) : json_null();
}

json_t *mg_json_col(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	json_t *v = NULL;

	if (!s || jsonx_parse(&v, s, strlen(s), 0, 0) < 0)
		return json_null();
	return v;
}

void mg_error(struct hub_resp *resp, int status, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	hub_resp_error(resp, status, msg);
}

bool mg_is_get(const struct hub_req *req)
{
	return !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
}

/* slug: lowercase letters, digits and '-', starting with a letter or digit. */
bool mg_slug_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64 || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* A launch name: one git ref component. */
static bool mg_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > MG_MAX_NAME || s[0] == '.' || s[0] == '-' || strstr(s, "..") ||
	    (n >= 5 && !strcmp(s + n - 5, ".lock")))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return false;
	return true;
}

bool mg_param_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 64 ||
	    !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* A client's request id: 8-64 of [A-Za-z0-9_-] (reefd sends its journal key). It is
 * put in a pipeline variable, so it must be safe there as it is. */
static bool mg_request_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n < 8 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '_'))
			return false;
	return true;
}

/* Loads a project by URL segment (id or encoded path) the caller may see. */
int mg_project(struct hub_req *req, struct hub_resp *resp, const char *seg, struct hub_project *p)
{
	if (mgl_active())
		return mgl_project(req, resp, seg, p);
	char id[HUB_MAX_PATH + 1];

	if (strlen(seg) >= sizeof(id) || url_decode(id, seg, false) < 0 ||
	    !path_is_safe(id, HUB_MAX_PATH) || hub_project_load(req->hub, id, p) < 0 ||
	    !hub_project_visible(req->hub, p, req->user) ||
	    (req->job_project_id > 0 && p->id != req->job_project_id)) {
		/* a job token acts for its own project only, as on the v4 routes */
		hub_resp_error(resp, 404, "404 Project Not Found");
		return -ENOENT;
	}
	p->access = hub_project_access(req->hub, p, req->user);
	return 0;
}

/* ---- launches: experiments, data pipelines, visualizations ---- */

static const char mg_launch_cols[] =
    "id, project_id, kind, name, branch, source_branch, source_sha, processor_slug,"
    " processor_sha, params, input_path, output_path, status, pipeline_id, metrics,"
    " epf_started_at, epf_finished_at, epf_status, epf_exit_code, user_id, created_at,"
    " updated_at, finished_at, request_id, job_id, username";

static json_t *mg_launch_json(struct hub_req *req, const struct hub_project *p, sqlite3_stmt *st)
{
	json_t *o = json_object(), *epf = json_object(), *proc = json_object();
	int64_t pid = sqlite3_column_int64(st, 13);
	struct hub_user u;
	char url[2048];
	sqlite3_stmt *js;

	json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
	json_object_set_new(o, "project_id", json_integer(sqlite3_column_int64(st, 1)));
	json_object_set_new(o, "kind", mg_str(st, 2));
	json_object_set_new(o, "name", mg_str(st, 3));
	json_object_set_new(o, "branch", mg_str(st, 4));
	json_object_set_new(o, "source_branch", mg_str(st, 5));
	json_object_set_new(o, "source_sha", mg_str(st, 6));
	json_object_set_new(proc, "slug", mg_str(st, 7));
	json_object_set_new(proc, "sha", mg_str(st, 8));
	json_object_set_new(o, "processor", proc);
	json_object_set_new(o, "params", mg_json_col(st, 9));
	json_object_set_new(o, "input_path", mg_str(st, 10));
	json_object_set_new(o, "output_path", mg_str(st, 11));
	json_object_set_new(o, "status", mg_str(st, 12));
	json_object_set_new(o, "pipeline_id", pid > 0 ? json_integer(pid) : json_null());
	json_object_set_new(o, "job_id", json_null());
	if (sqlite3_column_type(st, 24) != SQLITE_NULL) /* the job as GitLab names it */
		json_object_set_new(o, "job_id", json_integer(sqlite3_column_int64(st, 24)));
	js = mgl_active()
	         ? NULL
	         : ci_db_prep(
	               "SELECT id FROM ci_jobs WHERE pipeline_id=? AND retried=0 ORDER BY id DESC"
	               " LIMIT 1",
	               "i", pid);
	if (js && sqlite3_step(js) == SQLITE_ROW)
		json_object_set_new(o, "job_id", json_integer(sqlite3_column_int64(js, 0)));
	sqlite3_finalize(js);
	json_object_set_new(o, "metrics", mg_json_col(st, 14));
	mg_time(epf, "started_at", st, 15);
	mg_time(epf, "finished_at", st, 16);
	json_object_set_new(epf, "reported_status", mg_str(st, 17));
	json_object_set_new(epf, "exit_code",
	                    sqlite3_column_type(st, 18) == SQLITE_NULL
	                        ? json_null()
	                        : json_integer(sqlite3_column_int64(st, 18)));
	json_object_set_new(o, "epf", epf);
	if (mgl_active())
		json_object_set_new(o, "user",
		                    json_pack("{s:I, s:O}", "id",
		                              (json_int_t)sqlite3_column_int64(st, 19), "username",
		                              mg_str(st, 25)));
	else if (hub_user_by_id(req->hub, sqlite3_column_int64(st, 19), &u) == 0)
		json_object_set_new(
		    o, "user",
		    json_pack("{s:I, s:s}", "id", (json_int_t)u.id, "username", u.username));
	else
		json_object_set_new(o, "user", json_null());
	mg_time(o, "created_at", st, 20);
	mg_time(o, "updated_at", st, 21);
	mg_time(o, "finished_at", st, 22);
	json_object_set_new(o, "request_id", mg_str(st, 23));
	if (mgl_active()) {
		/* beside a GitLab: its web view of the launch's branch */
		snprintf(url, sizeof(url), "%s/%s/-/tree/%s", mgl_web_base(),
		         p->path_with_namespace, (const char *)sqlite3_column_text(st, 4));
	} else {
		/* a URL this hub serves (it has no web pages, so no /-/tree/ view): the launch
		 * itself on this API, behind the same access rules; names are [A-Za-z0-9._-] */
		const char *kind = (const char *)sqlite3_column_text(st, 2), *route = "experiments";

		for (size_t i = 0; kind && i < sizeof(mg_kinds) / sizeof(mg_kinds[0]); i++)
			if (!strcmp(kind, mg_kinds[i].kind))
				route = mg_kinds[i].route;
		snprintf(url, sizeof(url), "%s/api/v1/projects/%lld/%s/%s", req->hub->base_url,
		         (long long)p->id, route, (const char *)sqlite3_column_text(st, 3));
	}
	json_object_set_new(o, "web_url", json_string(url));
	return o;
}

static void mg_yaml_quote(struct buf *b, const char *s)
{
	buf_puts(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_printf(b, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			buf_printf(b, "\\x%02x", (unsigned char)*s);
		else
			buf_append(b, s, 1);
	}
	buf_puts(b, "\"");
}

static void mg_sh_quote(struct buf *b, const char *s)
{
	buf_puts(b, "'");
	for (; *s; s++) {
		if (*s == '\'')
			buf_puts(b, "'\\''");
		else
			buf_append(b, s, 1);
	}
	buf_puts(b, "'");
}

/* The CI file committed on the launch branch. Secrets and host paths are pipeline
 * variables, never in the file. Every keyword is GitLab's (docs.gitlab.com/ee/ci/yaml:
 * stages, variables, stage, image, script, after_script, artifacts:when/paths), so a
 * real GitLab runs it; image is the processor's container when its manifest names one
 * (Docker and Kubernetes executors run the job in it; a shell executor ignores it).
 * proc_dir is where the processor's code is in the job, as a shell expression. */
static void mg_ci_file(struct buf *y, const struct mg_kind *k, const char *name,
                       const char *command, json_t *args, const char *input, const char *output,
                       const char *image, const char *proc_dir)
{
	struct buf line = BUF_INIT(0);
	const char *key;
	json_t *v;

	buf_printf(y, "# Generated by reef-hub: %s %s. Edits here are not used by reef-hub.\n",
	           k->kind, name);
	buf_puts(y, "stages: [run]\nvariables:\n  INPUT_PATH: ");
	mg_yaml_quote(y, input);
	buf_puts(y, "\n  OUTPUT_PATH: ");
	mg_yaml_quote(y, output);
	buf_printf(y, "\n%s:\n  stage: run\n", k->kind);
	if (image) {
		buf_puts(y, "  image: ");
		mg_yaml_quote(y, image);
		buf_puts(y, "\n");
	}
	buf_puts(y, "  script:\n");
	buf_puts(y, "    - reef-epf start\n");
	buf_puts(y, "    - mkdir -p \"$CI_PROJECT_DIR/$OUTPUT_PATH\"\n");
	/* the processor runs from its published snapshot, reading and writing the checkout */
	buf_printf(&line,
	           "reef-epf run --metrics-file \"$CI_PROJECT_DIR/$OUTPUT_PATH/metrics.json\" "
	           "-- sh -c 'cd \"%s\" && exec ",
	           proc_dir);
	buf_puts(&line, command);
	buf_puts(&line, " \"$@\"' processor --input-path \"$CI_PROJECT_DIR/$INPUT_PATH\" "
	                "--output-path \"$CI_PROJECT_DIR/$OUTPUT_PATH\"");
	json_object_foreach(args, key, v)
	{
		buf_printf(&line, " --%s ", key);
		mg_sh_quote(&line, json_string_value(v));
	}
	buf_puts(y, "    - ");
	mg_yaml_quote(y, line.data);
	buf_puts(y, "\n");
	buf_puts(y, "    - git add -A -f -- \"$OUTPUT_PATH\"\n");
	buf_puts(y, "    - ");
	buf_reset(&line);
	buf_printf(&line,
	           "git -c user.name=reef-hub -c user.email=reef-hub@localhost commit -q "
	           "--allow-empty -m \"[skip ci] Outputs of %s %s\"",
	           k->kind, name);
	mg_yaml_quote(y, line.data);
	buf_puts(y, "\n    - git push -q origin \"HEAD:refs/heads/$CI_COMMIT_REF_NAME\"\n");
	buf_puts(y, "  after_script:\n    - reef-epf finish --status \"$CI_JOB_STATUS\"\n");
	buf_puts(y, "  artifacts:\n    when: always\n    paths:\n      - ");
	buf_reset(&line);
	buf_printf(&line, "%s/", output);
	mg_yaml_quote(y, line.data);
	buf_puts(y, "\n");
	buf_free(&line);
}

/* Commits the CI file on a new branch from source_sha. -EEXIST when the branch exists. */
static int mg_commit_branch(const struct hub_project *p, const char *branch, const char *source_sha,
                            const struct hub_user *u, const char *ci, const char *message)
{
	git_repository *repo = NULL;
	git_commit *parent = NULL;
	git_tree *tree = NULL, *new_tree = NULL;
	git_treebuilder *tb = NULL;
	git_signature *sig = NULL;
	git_reference *ref = NULL;
	git_oid oid, blob, tree_id, commit_id;
	char refname[HUB_MAX_PATH + 16];
	int r = -EIO;

	if (git_repository_open_bare(&repo, p->repo_path) != 0)
		return -EIO;
	snprintf(refname, sizeof(refname), "refs/heads/%s", branch);
	if (git_reference_lookup(&ref, repo, refname) == 0) {
		r = -EEXIST;
		goto out;
	}
	if (git_oid_fromstr(&oid, source_sha) != 0 || git_commit_lookup(&parent, repo, &oid) != 0 ||
	    git_commit_tree(&tree, parent) != 0 ||
	    git_blob_create_from_buffer(&blob, repo, ci, strlen(ci)) != 0 ||
	    git_treebuilder_new(&tb, repo, tree) != 0 ||
	    git_treebuilder_insert(NULL, tb, MG_CI_FILE, &blob, GIT_FILEMODE_BLOB) != 0 ||
	    git_treebuilder_write(&tree_id, tb) != 0 ||
	    git_tree_lookup(&new_tree, repo, &tree_id) != 0)
		goto out;
	if (git_signature_now(&sig, u->name[0] ? u->name : u->username,
	                      u->email[0] ? u->email : "reef-hub@localhost") != 0)
		goto out;
	{
		const git_commit *parents[1] = {parent};

		if (git_commit_create(&commit_id, repo, NULL, sig, sig, NULL, message, new_tree, 1,
		                      parents) != 0)
			goto out;
	}
	/* force=0: a concurrent launch of the same name loses cleanly */
	if (git_reference_create(&ref, repo, refname, &commit_id, 0, message) != 0) {
		r = git_error_last() && git_error_last()->klass == GIT_ERROR_REFERENCE ? -EEXIST
		                                                                       : -EIO;
		goto out;
	}
	r = 0;
out:
	git_reference_free(ref);
	git_signature_free(sig);
	git_treebuilder_free(tb);
	git_tree_free(new_tree);
	git_tree_free(tree);
	git_commit_free(parent);
	git_repository_free(repo);
	return r;
}

/* Starts a pipeline for a launch with a fresh EPF secret. Lock not held. */
static int mg_launch_pipeline(struct hub_req *req, const struct hub_project *p, int64_t lid,
                              const char *branch, const char *slug, const char *psha,
                              char err[CI_MAX_ERR])
{
	char secret[65], hash[65], url[512], idstr[32], pdir[PATH_MAX];
	struct ci_pipeline_new o = {.project = p,
	                            .ref = branch,
	                            .source = "trigger",
	                            .user_id = req->user->id,
	                            .ci_path = MG_CI_FILE};
	json_t *vars;
	int64_t pid = 0;
	int r;

	if (ci_random_hex(secret, 32) < 0)
		return -EIO;
	ci_token_hash(secret, hash);
	snprintf(url, sizeof(url), "%s/api/v1/epf/experiments/%lld", req->hub->base_url,
	         (long long)lid);
	snprintf(idstr, sizeof(idstr), "%lld", (long long)lid);
	hub_pathf(pdir, sizeof(pdir), "%s/processors/%s/%s", ci_data_dir(), slug, psha);
	vars = json_pack("[{s:s,s:s}, {s:s,s:s}, {s:s,s:s}, {s:s,s:s}]", "key", "EPF_URL", "value",
	                 url, "key", "EPF_SECRET", "value", secret, "key", "EXPERIMENT_ID", "value",
	                 idstr, "key", "PROCESSOR_DIR", "value", pdir);
	{
		/* the client's request id travels with the run, so the run can be found by it
		 * (docs/mgmt-api.md, "Exactly once") */
		sqlite3_stmt *st =
		    ci_db_prep("SELECT request_id FROM mg_launches WHERE id=?", "i", lid);

		if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
			json_array_append_new(
			    vars, json_pack("{s:s,s:s}", "key", "REEF_REQUEST_ID", "value",
			                    (const char *)sqlite3_column_text(st, 0)));
		sqlite3_finalize(st);
	}
	ci_db_exec(NULL, "UPDATE mg_launches SET secret_hash=?, updated_at=? WHERE id=?", "tdi",
	           hash, ci_now(), lid);
	o.variables = vars;
	o.ro_dir = pdir; /* the job reads the processor's snapshot inside its sandbox */
	r = ci_pipeline_create(&o, &pid, err);
	json_decref(vars);
	explicit_bzero(secret, sizeof(secret));
	ci_lock();
	if (pid > 0)
		ci_db_exec(NULL,
		           "UPDATE mg_launches SET pipeline_id=?, status=(SELECT status FROM"
		           " ci_pipelines WHERE id=?), finished_at=NULL, updated_at=? WHERE id=?",
		           "iidi", pid, pid, ci_now(), lid);
	else
		ci_db_exec(NULL,
		           "UPDATE mg_launches SET status='failed', finished_at=?, updated_at=?"
		           " WHERE id=?",
		           "ddi", ci_now(), ci_now(), lid);
	ci_unlock();
	return r;
}

static int mg_launch_row(int64_t project_id, const char *kind, const char *name, sqlite3_stmt **out)
{
	char sql[1024];

	snprintf(sql, sizeof(sql),
	         "SELECT %s FROM mg_launches WHERE project_id=? AND kind=? AND name=?",
	         mg_launch_cols);
	*out = ci_db_prep(sql, "itt", project_id, kind, name);
	if (*out && sqlite3_step(*out) == SQLITE_ROW)
		return 0;
	sqlite3_finalize(*out);
	*out = NULL;
	return -ENOENT;
}

/* The name of the launch a user's request id already made, if any. Lock held. */
static int mg_launch_by_request(int64_t project_id, const char *kind, int64_t user_id,
                                const char *request_id, char *name, size_t n)
{
	sqlite3_stmt *st = ci_db_prep("SELECT name FROM mg_launches WHERE project_id=? AND kind=?"
	                              " AND user_id=? AND request_id=?",
	                              "itit", project_id, kind, user_id, request_id);
	int r = -ENOENT;

	if (st && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(name, n, "%s", (const char *)sqlite3_column_text(st, 0));
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

static void mg_send_launch(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                           const struct mg_kind *k, const char *name, int status)
{
	sqlite3_stmt *st;

	if (mgl_active() && mg_launch_row(p->id, k->kind, name, &st) == 0) {
		int64_t lid = sqlite3_column_int64(st, 0);

		sqlite3_finalize(st);
		mgl_launch_refresh(p, lid);
	}
	if (mg_launch_row(p->id, k->kind, name, &st) < 0) {
		mg_error(resp, 404, "404 %s Not Found", k->kind);
		return;
	}
	hub_resp_json(resp, status, mg_launch_json(req, p, st));
	sqlite3_finalize(st);
}

static void mg_launch_create(struct hub_req *req, struct hub_resp *resp,
                             const struct hub_project *p, const struct mg_kind *k)
{
	json_t *body = NULL, *decl = NULL, *given, *args = json_object(), *v;
	const char *slug, *source, *input, *output, *name, *key, *request_id;
	char sql[512], ptype[32] = "", pcmd[4200] = "", psha[41] = "", sha[41] = "", branch[256];
	char image[256] = "";
	char gen_name[MG_MAX_NAME + 1], err[CI_MAX_ERR], *params_json = NULL, *sval;
	struct buf ci = BUF_INIT(1 << 20), dummy = BUF_INIT(16);
	struct hub_user u;
	sqlite3_stmt *st;
	int64_t lid = 0;
	size_t i;
	int r;

	if (!req->user || p->access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(resp, req->user ? 403 : 401,
		               req->user ? "403 Forbidden" : "401 Unauthorized");
		goto out;
	}
	if (hub_req_params(req, &body) < 0 || !json_is_object(body)) {
		hub_resp_error(resp, 400, "400 (Bad request) the body must be a JSON object");
		goto out;
	}
	slug = jsonx_str(body, "processor");
	if (!slug)
		slug = jsonx_str(body, "slug");
	if (!slug || !*slug) {
		hub_resp_missing(resp, "processor");
		goto out;
	}
	/* the processor: known, visible to the caller, of the type this collection runs */
	snprintf(sql, sizeof(sql),
	         "SELECT type, command, sha, parameters, project_id, image FROM"
	         " mg_processors WHERE slug=?");
	st = ci_db_prep(sql, "t", slug);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		const char *pj = (const char *)sqlite3_column_text(st, 3);

		if (mg_code_visible(req, sqlite3_column_int64(st, 4))) {
			if (sqlite3_column_text(st, 5))
				snprintf(image, sizeof(image), "%s", sqlite3_column_text(st, 5));
			snprintf(ptype, sizeof(ptype), "%s", sqlite3_column_text(st, 0));
			snprintf(pcmd, sizeof(pcmd), "%s", sqlite3_column_text(st, 1));
			snprintf(psha, sizeof(psha), "%s", sqlite3_column_text(st, 2));
			jsonx_parse(&decl, pj, strlen(pj), 0, 0);
		}
	}
	sqlite3_finalize(st);
	if (!ptype[0]) {
		hub_resp_error(resp, 404, "404 Processor Not Found");
		goto out;
	}
	if (strcmp(ptype, k->type)) {
		mg_error(resp, 400, "400 (Bad request) processor %s is %s; %s run %s processors",
		         slug, ptype, k->route, k->type);
		goto out;
	}
	/* parameters: declared, typed, required ones present (defaults filled in) */
	given = json_object_get(body, "params");
	if (!given)
		given = json_object_get(body, "parameters");
	if (given && !json_is_object(given)) {
		hub_resp_error(resp, 400, "400 (Bad request) params must be an object");
		goto out;
	}
	json_object_foreach(given, key, v)
	{
		bool known = false;

		json_array_foreach(decl, i, v) if (!strcmp(jsonx_str(v, "name"), key)) known = true;
		if (!known) {
			mg_error(resp, 400,
			         "400 (Bad request) unknown parameter %.100s for processor %s", key,
			         slug);
			goto out;
		}
	}
	json_array_foreach(decl, i, v)
	{
		const char *pname = jsonx_str(v, "name"), *type = jsonx_str(v, "type");
		json_t *val = json_object_get(given, pname);

		if (!val || json_is_null(val))
			val = json_object_get(v, "default");
		if (!val || json_is_null(val)) {
			if (jsonx_bool(v, "required", false)) {
				mg_error(resp, 400, "400 (Bad request) parameter %s is required",
				         pname);
				goto out;
			}
			continue;
		}
		if (!(sval = mg_param_value(type, val))) {
			mg_error(resp, 400, "400 (Bad request) parameter %s must be %s", pname,
			         type);
			goto out;
		}
		json_object_set_new(args, pname, json_string(sval));
		free(sval);
	}
	/* where: source branch, input and output folders */
	source = jsonx_str(body, "source_branch");
	if (!source && mgl_active()) {
		/* GitLab resolves the branch when the launch's commit starts from it */
		snprintf(branch, sizeof(branch), "%s",
		         p->default_branch[0] ? p->default_branch : "main");
	} else if (source && mgl_active()) {
		if (strlen(source) >= sizeof(branch) || !path_is_safe(source, 255)) {
			hub_resp_error(resp, 404, "404 Branch Not Found");
			goto out;
		}
		snprintf(branch, sizeof(branch), "%s", source);
	} else if (!source) {
		json_t *pj = json_object();

		hub_repo_project_fields(p, pj);
		source = jsonx_str(pj, "default_branch") ? jsonx_str(pj, "default_branch") : "main";
		snprintf(branch, sizeof(branch), "%s", source);
		json_decref(pj);
		source = branch;
	}
	if (!mgl_active()) {
		char src[256];

		snprintf(src, sizeof(src), "%s", source);
		if (mg_repo_file(p->repo_path, src, NULL, sha, &dummy) < 0) {
			hub_resp_error(resp, 404, "404 Branch Not Found");
			goto out;
		}
		snprintf(branch, sizeof(branch), "%s", src);
	}
	input = jsonx_str(body, "input_path") ? jsonx_str(body, "input_path") : ".";
	output = jsonx_str(body, "output_path") ? jsonx_str(body, "output_path") : "output";
	if ((strcmp(input, ".") && !path_is_safe(input, 1024)) || !path_is_safe(output, 1024) ||
	    !strcmp(output, ".git") || !strncmp(output, ".git/", 5)) {
		hub_resp_error(resp, 400,
		               "400 (Bad request) input_path and output_path must be relative "
		               "paths inside the project");
		goto out;
	}
	if (mgl_active() &&
	    (!path_is_safe(p->ci_config_path, 255) || strpbrk(p->ci_config_path, "@:") ||
	     !strncmp(p->ci_config_path, MGL_CODE_DIR, strlen(MGL_CODE_DIR)))) {
		mg_error(resp, 400,
		         "400 (Bad request) the project's CI configuration %.200s is not a file of "
		         "its repository; a launch writes its CI file there",
		         p->ci_config_path);
		goto out;
	}
	request_id = jsonx_str(body, "request_id");
	if (request_id && !mg_request_id_ok(request_id)) {
		hub_resp_error(resp, 400,
		               "400 (Bad request) request_id must be 8-64 of [A-Za-z0-9_-]");
		goto out;
	}
	params_json = jsonx_dump(args);
	if (mgl_active())
		u = *req->user;
	else
		hub_user_by_id(req->hub, req->user->id, &u);
	/* the name: given (experiments) or <slug>-N, the first free one */
	name = jsonx_str(body, "name");
	if (name && !mg_name_ok(name)) {
		hub_resp_error(resp, 400,
		               "400 (Bad request) name must be 1-100 of [A-Za-z0-9._-], not "
		               "starting with '.' or '-'");
		goto out;
	}
	for (int n = 1; n < 10000; n++) {
		char full[300], msg[512];

		if (!name)
			snprintf(gen_name, sizeof(gen_name), "%s-%d", slug, n);
		else
			snprintf(gen_name, sizeof(gen_name), "%s", name);
		snprintf(full, sizeof(full), "%s%s", k->prefix, gen_name);
		buf_reset(&ci);
		mg_ci_file(&ci, k, gen_name, pcmd, args, input, output, image[0] ? image : NULL,
		           mgl_active() ? "$CI_PROJECT_DIR/" MGL_CODE_DIR : "$PROCESSOR_DIR");
		/* the request id in the commit lets a launch whose answer was lost be found */
		snprintf(msg, sizeof(msg), "[skip ci] Launch %s %s with processor %s%s%s", k->kind,
		         gen_name, slug, request_id ? "\n\nReef-Request-Id: " : "",
		         request_id ? request_id : "");
		ci_lock();
		if (request_id && mg_launch_by_request(p->id, k->kind, req->user->id, request_id,
		                                       gen_name, sizeof(gen_name)) == 0) {
			/* this request was acted on already (its answer was lost): the same run,
			 * not a second one */
			ci_unlock();
			hub_resp_header(resp, "Reef-Request-Replayed", "true");
			mg_send_launch(req, resp, p, k, gen_name, 201);
			goto out;
		}
		r = ci_db_exec(&lid,
		               "INSERT OR IGNORE INTO mg_launches(project_id, kind, name, branch,"
		               " source_branch, source_sha, processor_slug, processor_sha, params,"
		               " input_path, output_path, status, secret_hash, user_id, created_at,"
		               " updated_at, request_id, username)"
		               " VALUES(?,?,?,?,?,?,?,?,?,?,?,'created','',?,?,?,?,?)",
		               "ittttttttttiddtt", p->id, k->kind, gen_name, full, branch, sha,
		               slug, psha, params_json, input, output, req->user->id, ci_now(),
		               ci_now(), request_id, u.username);
		if (mgl_active()) {
			/* GitLab is asked without the lock: the row reserves the name here */
			r = r == 0 && sqlite3_changes(ci_db()) == 1 ? 0 : r < 0 ? r : -EEXIST;
			ci_unlock();
			if (r == 0)
				r = mgl_launch_commit(p, lid, full, branch, ci.data, msg, slug,
				                      psha, request_id);
			if (r == 0 || r != -EEXIST || name)
				break;
			continue;
		}
		if (r == 0 && sqlite3_changes(ci_db()) == 1) {
			r = mg_commit_branch(p, full, sha, &u, ci.data, msg);
			if (r < 0)
				ci_db_exec(NULL, "DELETE FROM mg_launches WHERE id=?", "i", lid);
		} else {
			r = r < 0 ? r : -EEXIST;
		}
		ci_unlock();
		if (r == 0 || r != -EEXIST || name)
			break;
	}
	if (r == -EEXIST) {
		mg_error(resp, 409, "409 Conflict: %s %s already exists", k->kind, gen_name);
		goto out;
	}
	if (r == -ENOENT) {
		hub_resp_error(resp, 404, "404 Branch Not Found");
		goto out;
	}
	if (r == -EACCES) {
		hub_resp_error(resp, 403, "403 Forbidden");
		goto out;
	}
	if (r < 0) {
		hub_resp_error(resp, mgl_active() ? 502 : 500,
		               mgl_active()
		                   ? "502 GitLab refused or did not answer the launch's commit"
		                   : "500 Internal Server Error");
		goto out;
	}
	{
		char full[300];

		err[0] = '\0';
		snprintf(full, sizeof(full), "%s%s", k->prefix, gen_name);
		if (mgl_active())
			r = mgl_launch_pipeline(req, p, lid, full, err, sizeof(err));
		else
			r = mg_launch_pipeline(req, p, lid, full, slug, psha, err);
	}
	if (r < 0 && r != -EINVAL) {
		mg_error(resp, 500, "500 pipeline not started: %s", err);
		goto out;
	}
	mg_send_launch(req, resp, p, k, gen_name, 201);
out:
	free(params_json);
	json_decref(decl);
	json_decref(args);
	json_decref(body);
	buf_free(&ci);
	buf_free(&dummy);
}

static void mg_launch_list(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                           const struct mg_kind *k)
{
	char sql[1024];
	sqlite3_stmt *st;
	json_t *arr = json_array();
	size_t total = 0, off = 0, lim = 0;

	st = ci_db_prep("SELECT COUNT(*) FROM mg_launches WHERE project_id=? AND kind=?", "it",
	                p->id, k->kind);
	if (st && sqlite3_step(st) == SQLITE_ROW)
		total = (size_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	hub_paginate(req, resp, total, &off, &lim);
	if (mgl_active()) {
		/* the launches of this page that may have moved on GitLab */
		st = ci_db_prep("SELECT id FROM mg_launches WHERE project_id=? AND kind=? ORDER BY"
		                " id DESC LIMIT ? OFFSET ?",
		                "itii", p->id, k->kind, (int64_t)lim, (int64_t)off);
		while (st && sqlite3_step(st) == SQLITE_ROW)
			mgl_launch_refresh(p, sqlite3_column_int64(st, 0));
		sqlite3_finalize(st);
	}
	snprintf(sql, sizeof(sql),
	         "SELECT %s FROM mg_launches WHERE project_id=? AND kind=? ORDER BY id DESC"
	         " LIMIT ? OFFSET ?",
	         mg_launch_cols);
	st = ci_db_prep(sql, "itii", p->id, k->kind, (int64_t)lim, (int64_t)off);
	while (st && sqlite3_step(st) == SQLITE_ROW)
		json_array_append_new(arr, mg_launch_json(req, p, st));
	sqlite3_finalize(st);
	hub_resp_json(resp, 200, arr);
}

static void mg_launch_action(struct hub_req *req, struct hub_resp *resp,
                             const struct hub_project *p, const struct mg_kind *k, const char *name,
                             const char *action)
{
	sqlite3_stmt *st;
	int64_t lid, pid;
	char branch[300], slug[80], psha[41], err[CI_MAX_ERR];

	if (!req->user || p->access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(resp, req->user ? 403 : 401,
		               req->user ? "403 Forbidden" : "401 Unauthorized");
		return;
	}
	if (mg_launch_row(p->id, k->kind, name, &st) < 0) {
		mg_error(resp, 404, "404 %s Not Found", k->kind);
		return;
	}
	lid = sqlite3_column_int64(st, 0);
	pid = sqlite3_column_int64(st, 13);
	snprintf(branch, sizeof(branch), "%s", sqlite3_column_text(st, 4));
	snprintf(slug, sizeof(slug), "%s", sqlite3_column_text(st, 7));
	snprintf(psha, sizeof(psha), "%s", sqlite3_column_text(st, 8));
	sqlite3_finalize(st);
	if (!strcmp(action, "cancel")) {
		if (pid > 0 && mgl_active())
			mgl_pipeline_cancel(p, pid);
		else if (pid > 0)
			ci_pipeline_cancel(pid);
		mg_send_launch(req, resp, p, k, name, 200);
		return;
	}
	/* retry: a new pipeline on the same branch, with a new secret */
	ci_db_exec(NULL,
	           "UPDATE mg_launches SET metrics='[]', epf_started_at=NULL, epf_finished_at=NULL,"
	           " epf_status=NULL, epf_exit_code=NULL WHERE id=?",
	           "i", lid);
	if (mgl_active())
		mgl_launch_pipeline(req, p, lid, branch, err, sizeof(err));
	else
		mg_launch_pipeline(req, p, lid, branch, slug, psha, err);
	mg_send_launch(req, resp, p, k, name, 201);
}

/* projects/:id/<collection>[/:name[/cancel|retry]] */
static void mg_project_route(struct hub_req *req, struct hub_resp *resp, char **seg, size_t n)
{
	const struct mg_kind *k = NULL;
	struct hub_project p;
	char name[MG_MAX_NAME * 3 + 1];

	for (size_t i = 0; i < sizeof(mg_kinds) / sizeof(mg_kinds[0]); i++)
		if (!strcmp(seg[2], mg_kinds[i].route))
			k = &mg_kinds[i];
	if (!k || n > 5) {
		hub_resp_not_found(resp);
		return;
	}
	if (mg_project(req, resp, seg[1], &p) < 0)
		return;
	if (!strcmp(p.visibility, "private") && p.access < HUB_ACCESS_REPORTER) {
		hub_resp_error(resp, 403, "403 Forbidden");
		return;
	}
	if (n == 3) {
		if (mg_is_get(req))
			mg_launch_list(req, resp, &p, k);
		else if (!strcmp(req->method, "POST"))
			mg_launch_create(req, resp, &p, k);
		else
			hub_resp_error(resp, 405, "405 Method Not Allowed");
		return;
	}
	if (strlen(seg[3]) >= sizeof(name) || url_decode(name, seg[3], false) < 0) {
		hub_resp_error(resp, 400, "400 Bad request");
		return;
	}
	if (n == 4 && mg_is_get(req))
		mg_send_launch(req, resp, &p, k, name, 200);
	else if (n == 5 && !strcmp(req->method, "POST") &&
	         (!strcmp(seg[4], "cancel") || !strcmp(seg[4], "retry")))
		mg_launch_action(req, resp, &p, k, name, seg[4]);
	else
		hub_resp_not_found(resp);
}

/* ---- hooks ---- */

int hub_ci_init(struct hub *h)
{
	char *errmsg = NULL;
	int r;

	mg_hub = h;
	if (h->gitlab_url[0]) {
		if ((r = mgl_init(h->gitlab_url)) < 0)
			return log_ret(r, "mgmt: --gitlab must be an http(s) URL");
		ci_runner_store_only_set(true);
	}
	if ((r = ci_runner_start(h)) < 0)
		return r;
	if (sqlite3_exec(ci_db(), mg_schema, NULL, NULL, &errmsg) != SQLITE_OK) {
		log_error("mgmt: schema: %s", errmsg ? errmsg : "?");
		sqlite3_free(errmsg);
		ci_runner_stop();
		return -EIO;
	}
	sqlite3_exec(ci_db(), mg_schema_request_id, NULL, NULL, NULL); /* exists: fine */
	for (size_t i = 0; i < sizeof(mg_schema_gitlab) / sizeof(mg_schema_gitlab[0]); i++)
		sqlite3_exec(ci_db(), mg_schema_gitlab[i], NULL, NULL, NULL); /* exists: fine */
	if (sqlite3_exec(ci_db(), mg_schema_request_index, NULL, NULL, &errmsg) != SQLITE_OK) {
		log_error("mgmt: schema: %s", errmsg ? errmsg : "?");
		sqlite3_free(errmsg);
		ci_runner_stop();
		return -EIO;
	}
	if ((r = hub_idem_init()) < 0) {
		ci_runner_stop();
		return r;
	}
	if (mgl_active()) {
		if (mgl_hook_init() < 0) {
			ci_runner_stop();
			return -EIO;
		}
		return 0; /* no repositories, no runner: GitLab has them */
	}
	ci_pipeline_hook_set(mg_on_pipeline);
	if ((r = hub_webhooks_init(h)) < 0) {
		ci_runner_stop();
		return r;
	}
	/* pushes that landed while no hub was left to start their pipelines */
	hub_push_events_run(h, NULL);
	/* launches whose pipeline ended while no hub ran it (restart) catch up */
	ci_db_exec(NULL,
	           "UPDATE mg_launches SET status=(SELECT status FROM ci_pipelines p WHERE"
	           " p.id=mg_launches.pipeline_id) WHERE pipeline_id IS NOT NULL",
	           NULL);
	return 0;
}

int hub_ci_job_launch_ref(struct hub *h, int64_t job_id, char *ref, size_t n)
{
	sqlite3_stmt *st;
	int found = 0;

	(void)h;
	if (job_id <= 0 || !ci_db())
		return 0;
	st = ci_db_prep("SELECT l.branch FROM ci_jobs j JOIN mg_launches l ON"
	                " l.pipeline_id = j.pipeline_id WHERE j.id = ?",
	                "i", job_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		snprintf(ref, n, "%s", (const char *)sqlite3_column_text(st, 0));
		found = 1;
	}
	sqlite3_finalize(st);
	return found;
}

void hub_ci_shutdown(struct hub *h)
{
	(void)h;
	hub_webhooks_stop(); /* before the database it reads closes */
	ci_runner_stop();
}

void hub_ci_transfer_add(int64_t project_id, uint64_t bytes)
{
	if (!ci_db())
		return;
	ci_db_exec(NULL,
	           "INSERT INTO mg_transfer(project_id, bytes) VALUES(?, ?) ON CONFLICT(project_id)"
	           " DO UPDATE SET bytes=bytes+excluded.bytes",
	           "ii", project_id, (int64_t)bytes);
}

#define MG_MAX_SEGMENTS 8

static void mg_route(struct hub_req *req, struct hub_resp *resp, const char *rest)
{
	char *copy = strdup(rest), *seg[MG_MAX_SEGMENTS] = {NULL}, *s, *save = NULL;
	size_t n = 0;

	if (!copy) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	for (s = strtok_r(copy, "/", &save); s && n < MG_MAX_SEGMENTS;
	     s = strtok_r(NULL, "/", &save))
		seg[n++] = s;
	if (s || n == 0 || !ci_db()) {
		hub_resp_not_found(resp);
		goto out;
	}
	if (!strcmp(seg[0], "epf")) {
		mg_epf_route(req, resp, seg, n);
	} else if (!strcmp(seg[0], "processors") && n == 1 && mg_is_get(req)) {
		mg_processors_list(req, resp);
	} else if (!strcmp(seg[0], "processors") && n == 2 && mg_is_get(req)) {
		sqlite3_stmt *st = mg_processor_row(req, seg[1]);

		if (!st) {
			hub_resp_error(resp, 404, "404 Processor Not Found");
		} else {
			hub_resp_json(resp, 200, mg_processor_json(st));
			sqlite3_finalize(st);
		}
	} else if (!strcmp(seg[0], "code-projects") && n == 3 && !strcmp(seg[2], "publish") &&
	           !strcmp(req->method, "POST")) {
		if (mgl_active())
			mgl_publish(req, resp, seg[1]);
		else
			mg_publish(req, resp, seg[1]);
	} else if (!strcmp(seg[0], "projects") && n >= 3) {
		mg_project_route(req, resp, seg, n);
	} else if (!strcmp(seg[0], "usage") && n == 1 && mg_is_get(req)) {
		if (mgl_active())
			mgl_usage(req, resp, NULL);
		else
			mg_usage(req, resp, NULL);
	} else if (!strcmp(seg[0], "namespaces") && n == 3 && !strcmp(seg[2], "usage") &&
	           mg_is_get(req)) {
		char ns[1100];

		if (strlen(seg[1]) >= sizeof(ns) || url_decode(ns, seg[1], false) < 0)
			hub_resp_error(resp, 400, "400 Bad request");
		else if (mgl_active())
			mgl_usage(req, resp, ns);
		else
			mg_usage(req, resp, ns);
	} else {
		hub_resp_not_found(resp);
	}
out:
	free(copy);
}

void hub_mgmt_route(struct hub_req *req, struct hub_resp *resp, const char *rest)
{
	struct hub_idem *idem;

	if (mgl_active() && !strcmp(rest, "gitlab/webhook")) {
		/* GitLab's deliveries carry the hook's token, not a user's */
		mgl_webhook_route(req, resp);
		return;
	}
	if (mgl_active() && strncmp(rest, "epf/", 4)) {
		/* the management role: the caller is whoever GitLab says their token is;
		 * reef-epf's callbacks carry the run's secret instead */
		int r = mgl_auth(req);

		if (r == -EIO) {
			hub_resp_error(resp, 502, "502 GitLab did not answer");
			return;
		}
		if (r < 0 || !req->user) {
			hub_resp_error(resp, 401, "401 Unauthorized");
			return;
		}
	}
	if (hub_idem_begin(req, resp, &idem) == 0) {
		mg_route(req, resp, rest);
		hub_idem_end(idem, resp);
	}
	if (mgl_active())
		mgl_request_end();
}
