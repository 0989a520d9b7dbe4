/* What the files of the mount's experiments, pipelines and processors say (mlfs.h): a
 * launch as the server or the journal shows it, and every generated file's content. */
#include "mlfs_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "reef/jsonx.h"
#include "reef/util.h"
#include "svg.h"

/* ---- experiments as the server or the journal shows them ---- */

static void ml_iso(double t, char out[32])
{
	time_t s = (time_t)t;
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A launch still in the journal, shown as an experiment: status queued, or failed with
 * the server's reason when it refused it. */
static json_t *ml_local_view(const struct journal_entry *e)
{
	json_t *req = e->body ? json_loads(e->body, 0, NULL) : NULL, *o;
	char when[32];

	ml_iso(e->created_at, when);
	o = json_pack(
	    "{s:s, s:s, s:s, s:o, s:o, s:o, s:{s:I, s:s, s:s, s:i}}", "name", e->target, "status",
	    e->state == JOURNAL_QUEUED ? "queued" : "failed", "queued_at", when, "params",
	    json_object_get(req, "params") ? json_incref(json_object_get(req, "params"))
	                                   : json_object(),
	    "request", req ? req : json_object(), "error",
	    e->state == JOURNAL_FAILED || e->error[0] ? json_string(e->error) : json_null(),
	    "journal", "id", (json_int_t)e->id, "key", e->key, "state",
	    journal_state_name(e->state), "attempts", e->attempts);
	if (o)
		json_object_set_new(o, "metrics", json_array());
	return o;
}

int ml_exp_view(struct mlfs *ml, enum mlops_kind k, int64_t pid, const char *name, json_t **out,
                bool *local)
{
	struct journal_entry *e = NULL;
	size_t n = 0, pick = SIZE_MAX;
	int r = mlops_launch_get(ml->m, k, pid, name, out);

	*local = false;
	if (r == 0 || (r != -ENOENT && r != -EIO))
		return r;
	if (journal_pending(mlops_journal(ml->m), pid, mlops_kinds[k].kind, &e, &n) < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].target, name) &&
		    (pick == SIZE_MAX || e[i].state == JOURNAL_QUEUED))
			pick = i;
	if (pick != SIZE_MAX) {
		*out = ml_local_view(&e[pick]);
		*local = true;
		r = *out ? 0 : -ENOMEM;
	}
	journal_entries_free(e, n);
	return r;
}

int64_t ml_job_of(const json_t *exp)
{
	json_t *j = json_object_get(exp, "job_id");

	return json_is_integer(j) ? (int64_t)json_integer_value(j) : 0;
}

bool ml_finished(const char *status)
{
	return status && (!strcmp(status, "success") || !strcmp(status, "failed") ||
	                  !strcmp(status, "canceled") || !strcmp(status, "skipped"));
}

/* The output folder of an experiment on its branch: the tree id and the commit. */
int ml_outputs(struct mlfs *ml, int64_t pid, const json_t *exp, char tree[41], char commit[41],
               char *opath, size_t opath_len)
{
	const char *branch = jsonx_str(exp, "branch"), *out = jsonx_str(exp, "output_path");
	struct tree_entry *e = NULL;
	char cur[41], walked[NODE_PATH_MAX] = "";
	const char *p;
	size_t n = 0;
	int r;

	if (!branch || !out || !*out)
		return -ENOENT;
	r = mlops_branch_head(ml->m, pid, branch, commit);
	if (r < 0)
		return r;
	r = cache_root_tree(ml->cache, pid, commit, cur, &e, &n);
	for (p = out; r == 0 && *p;) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p), i;
		bool found = false;

		for (i = 0; i < n; i++) {
			if (strlen(e[i].name) == len && !memcmp(e[i].name, p, len) &&
			    e[i].mode == TREE_MODE_DIR) {
				found = true;
				memcpy(cur, e[i].oid, 41);
				break;
			}
		}
		free(e);
		e = NULL;
		n = 0;
		if (!found)
			return -ENOENT;
		snprintf(walked + strlen(walked), sizeof(walked) - strlen(walked), "%s%.*s",
		         walked[0] ? "/" : "", (int)len, p);
		p = slash ? slash + 1 : p + len;
		if (*p)
			r = cache_tree(ml->cache, pid, commit, walked, cur, &e, &n);
	}
	free(e);
	if (r < 0)
		return r;
	memcpy(tree, cur, 41);
	snprintf(opath, opath_len, "%s", walked);
	return 0;
}

int ml_job_by_name(struct mlfs *ml, int64_t pid, int64_t pipeline, const char *name, json_t **out)
{
	json_t *jobs = NULL, *j, *best = NULL;
	size_t i;
	int r = mlops_jobs(ml->m, pid, pipeline, &jobs);

	*out = NULL;
	if (r < 0)
		return r;
	json_array_foreach(jobs, i, j)
	{
		const char *jn = jsonx_str(j, "name");

		if (jn && !strcmp(jn, name) &&
		    (!best || jsonx_int(j, "id", 0) > jsonx_int(best, "id", 0)))
			best = j;
	}
	if (best)
		*out = json_incref(best);
	json_decref(jobs);
	return best ? 0 : -ENOENT;
}

/* The job an artifacts or log node belongs to. */
int64_t ml_oid_job(const struct node *n)
{
	return strtoll(n->oid, NULL, 10);
}

/* Member files of a job's artifacts; a job without any (or still running) has none. */
int ml_arts(struct mlfs *ml, int64_t pid, int64_t job, char ***names, uint64_t **sizes, size_t *n)
{
	json_t *j = NULL;
	int r;

	*names = NULL;
	*sizes = NULL;
	*n = 0;
	if (job <= 0)
		return 0;
	r = mlops_job(ml->m, pid, job, &j);
	if (r < 0)
		return r;
	if (!ml_finished(jsonx_str(j, "status")) || !json_object_get(j, "artifacts_file")) {
		json_decref(j);
		return 0;
	}
	json_decref(j);
	r = mlops_artifacts(ml->m, pid, job, names, sizes, n);
	return r == -ENOENT ? 0 : r;
}

/* What sub (a path below artifacts/) is in the job's artifacts: 1 a file (*size set),
 * 2 a directory, 0 nothing. */
int ml_arts_classify(char **names, uint64_t *sizes, size_t n, const char *sub, uint64_t *size)
{
	size_t sl = strlen(sub);

	if (!sl)
		return 2;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(names[i], sub)) {
			*size = sizes[i];
			return 1;
		}
		if (!strncmp(names[i], sub, sl) && names[i][sl] == '/')
			return 2;
	}
	return 0;
}

/* ---- content ---- */

int ml_dump(json_t *v, struct buf *out)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
	int r;

	if (!s)
		return -ENOMEM;
	r = buf_puts(out, s);
	if (r == 0)
		r = buf_puts(out, "\n");
	free(s);
	return r;
}

/* The directory whose launch file runs a processor of this type. */
static const char *ml_route_of_type(const char *type)
{
	for (int k = 0; type && k < MLOPS_KINDS; k++)
		if (!strcmp(type, mlops_kinds[k].type))
			return mlops_kinds[k].route;
	return mlops_kinds[MLOPS_EXPERIMENT].route;
}

static void ml_readme(const json_t *p, struct buf *b)
{
	const char *slug = jsonx_str(p, "slug") ?: "";
	json_t *params = json_object_get(p, "parameters"), *x, *metrics;
	size_t i;

	buf_printf(b, "# %s (`%s`)\n\n", jsonx_str(p, "name") ?: slug, slug);
	if (jsonx_str(p, "description") && *jsonx_str(p, "description"))
		buf_printf(b, "%s\n\n", jsonx_str(p, "description"));
	buf_printf(b, "- type: %s\n", jsonx_str(p, "type") ?: "?");
	buf_printf(b, "- data: %s -> %s\n", jsonx_str(p, "input_data_type") ?: "any",
	           jsonx_str(p, "output_data_type") ?: "any");
	if (jsonx_str(p, "command"))
		buf_printf(b, "- command: `%s`\n", jsonx_str(p, "command"));
	if (jsonx_str(p, "code_project_path"))
		buf_printf(b, "- code: %s at %.12s\n", jsonx_str(p, "code_project_path"),
		           jsonx_str(p, "sha") ?: "?");
	buf_puts(b, "\n## Parameters\n\n");
	if (json_array_size(params) == 0)
		buf_puts(b, "None.\n");
	else
		buf_puts(b, "| name | type | required | default | description |\n"
		            "|---|---|---|---|---|\n");
	json_array_foreach(params, i, x)
	{
		char *def = json_object_get(x, "default")
		                ? json_dumps(json_object_get(x, "default"), JSON_ENCODE_ANY)
		                : NULL;

		buf_printf(b, "| %s | %s | %s | %s | %s |\n", jsonx_str(x, "name") ?: "?",
		           jsonx_str(x, "type") ?: "?",
		           jsonx_bool(x, "required", false) ? "yes" : "no", def ? def : "",
		           jsonx_str(x, "description") ?: "");
		free(def);
	}
	metrics = json_object_get(p, "metrics");
	if (json_array_size(metrics)) {
		buf_puts(b, "\n## Metrics\n\n");
		json_array_foreach(metrics, i, x)
		    buf_printf(b, "%s%s", i ? ", " : "", json_string_value(x) ?: "?");
		buf_puts(b, "\n");
	}
	buf_printf(b,
	           "\n## Launch\n\nFrom a data project in the mount:\n\n"
	           "    printf 'processor=%s\\n' > <group>/<project>/%s/launch\n",
	           slug, ml_route_of_type(jsonx_str(p, "type")));
}

/* Renders a generated file (not logs, artifact members or control files). */
/* The server keeps a launch's parameters as CI variables, all strings: params.json shows
 * each as the processor declares it (INTEGER, FLOAT, BOOLEAN, STRING). A value that
 * does not read as its type, a parameter the manifest does not declare, or a processor
 * that cannot be asked now, stays as the server says. */
static void ml_params_typed(struct mlfs *ml, const json_t *launch, json_t *params)
{
	const char *slug = jsonx_str(json_object_get(launch, "processor"), "slug");
	json_t *proc = NULL, *decl, *d, *v;
	size_t i;

	if (!slug || mlops_processor(ml->m, slug, &proc) < 0)
		return;
	decl = json_object_get(proc, "parameters");
	json_array_foreach(decl, i, d)
	{
		const char *name = jsonx_str(d, "name"), *type = jsonx_str(d, "type"), *s;
		json_t *typed = NULL;
		char *end;

		if (!name || !type || !(v = json_object_get(params, name)) ||
		    !(s = json_string_value(v)) || !*s)
			continue;
		if (!strcmp(type, "INTEGER")) {
			long long x;

			errno = 0;
			x = strtoll(s, &end, 10);
			if (!*end && !errno)
				typed = json_integer(x);
		} else if (!strcmp(type, "FLOAT")) {
			double x = strtod(s, &end);

			if (!*end && isfinite(x))
				typed = json_real(x);
		} else if (!strcmp(type, "BOOLEAN")) {
			if (!strcmp(s, "true") || !strcmp(s, "false"))
				typed = json_boolean(!strcmp(s, "true"));
		}
		if (typed)
			json_object_set_new(params, name, typed);
	}
	json_decref(proc);
}

/* metrics.jsonl: one compact JSON object per reported epoch, in the order reported, each
 * on its own line. Epochs are only added at the end while a run goes, so the file only
 * grows and a reader at its end (tail -f) reads the new lines. */
static int ml_metrics_lines(const json_t *metrics, struct buf *out)
{
	const json_t *rec;
	size_t i;
	int r = 0;

	json_array_foreach(metrics, i, rec)
	{
		char *line = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);

		if (!line)
			return -ENOMEM;
		r = buf_printf(out, "%s\n", line);
		free(line);
		if (r < 0)
			return r;
	}
	return 0;
}

int ml_render(struct mlfs *ml, const struct node *n, const struct ml_loc *l, struct buf *out)
{
	int64_t pid = n->project_id;
	json_t *v = NULL;
	bool local = false;
	int r = 0;

	switch (l->w) {
	case W_EXP_LAUNCH_ERR:
	case W_PIPE_LAUNCH_ERR:
	case W_EXP_CTL_ERR:
	case W_PIPE_CTL_ERR: {
		char key[NODE_PATH_MAX + 32], *msg;
		size_t len = strlen(n->path);

		/* the control file is the error file's path without ".error" */
		snprintf(key, sizeof(key), "%" PRId64 ":%.*s", pid, (int)(len - 6), n->path);
		msg = ml_error_get(ml, key);
		if (!msg)
			return -ENOMEM;
		r = buf_puts(out, msg);
		free(msg);
		return r;
	}
	case W_EXPS_README: {
		const char *url;

		if (mlops_mgmt_state(ml->m, &url) == 0)
			return buf_puts(out,
			                "The management API answers; launches are listed here.\n");
		return buf_printf(
		    out,
		    "No management API at %s: it answers 404 on /api/v1 (a GitLab without the\n"
		    "reef-hub management service). Experiments, data pipelines and\n"
		    "visualizations need it: mount with -o mgmt=URL, the base URL of reef-hub\n"
		    "serving /api/v1 beside this server (docs/deploy.md). CI pipelines\n"
		    "(pipelines/) work without it. This is checked again every %d s.\n",
		    url, MLOPS_PROBE_MS / 1000);
	}
	case W_EXP_FILE:
		r = ml_exp_view(ml, l->kind, pid, l->name, &v, &local);
		if (r < 0)
			return r;
		if (!strcmp(l->file, ml_exp_files[l->kind][0])) {
			r = ml_dump(v, out);
		} else if (!strcmp(l->file, "status")) {
			r = buf_printf(out, "%s\n", jsonx_str(v, "status") ?: "unknown");
		} else if (!strcmp(l->file, "params.json")) {
			json_t *p = json_object_get(v, "params");

			if (json_is_object(p))
				ml_params_typed(ml, v, p);
			r = p ? ml_dump(p, out) : buf_puts(out, "{}\n");
		} else if (!strcmp(l->file, "metrics.json")) {
			json_t *m = json_object_get(v, "metrics");

			r = m ? ml_dump(m, out) : buf_puts(out, "[]\n");
		} else if (!strcmp(l->file, "metrics.jsonl")) {
			r = ml_metrics_lines(json_object_get(v, "metrics"), out);
		} else if (!strcmp(l->file, "metrics.svg")) {
			char title[300];

			snprintf(title, sizeof(title), "experiment %.120s (%.80s)", l->name,
			         jsonx_str(json_object_get(v, "processor"), "slug") ?: "processor");
			r = svg_metrics(json_object_get(v, "metrics"), title, out);
		}
		break;
	case W_PIPE_FILE:
		r = mlops_pipeline(ml->m, pid, l->pipeline, &v);
		if (r < 0)
			return r;
		r = !strcmp(l->file, "status")
		        ? buf_printf(out, "%s\n", jsonx_str(v, "status") ?: "unknown")
		        : ml_dump(v, out);
		break;
	case W_JOB_FILE:
		r = mlops_job(ml->m, pid, ml_oid_job(n), &v);
		if (r < 0)
			return r;
		r = !strcmp(l->file, "status")
		        ? buf_printf(out, "%s\n", jsonx_str(v, "status") ?: "unknown")
		        : ml_dump(v, out);
		break;
	case W_PROC_FILE:
		r = mlops_processor(ml->m, l->name, &v);
		if (r < 0)
			return r;
		if (!strcmp(l->file, "processor.json"))
			r = ml_dump(v, out);
		else
			ml_readme(v, out);
		break;
	case W_USAGE:
		r = mlops_usage(ml->m, &v);
		if (r == 0)
			r = ml_dump(v, out);
		break;
	default:
		r = -EINVAL;
		break;
	}
	json_decref(v);
	return r;
}

bool ml_is_log(const struct ml_loc *l)
{
	return (l->w == W_EXP_FILE || l->w == W_JOB_FILE) && !strcmp(l->file, "log");
}

bool ml_is_artifact(const struct ml_loc *l)
{
	return (l->w == W_EXP_ARTS || l->w == W_JOB_ARTS) && l->sub[0];
}

/* The job of a log and whether it has finished. */
int ml_log_job(struct mlfs *ml, const struct node *n, const struct ml_loc *l, int64_t *job,
               bool *finished)
{
	json_t *v = NULL;
	bool local;
	int r;

	*job = 0;
	*finished = false;
	if (l->w == W_EXP_FILE) {
		r = ml_exp_view(ml, l->kind, n->project_id, l->name, &v, &local);
		if (r < 0)
			return r;
		*job = ml_job_of(v);
		*finished =
		    local ? jsonx_str(v, "status") && !strcmp(jsonx_str(v, "status"), "failed")
		          : ml_finished(jsonx_str(v, "status"));
	} else {
		*job = ml_oid_job(n);
		r = mlops_job(ml->m, n->project_id, *job, &v);
		if (r < 0)
			return r;
		*finished = ml_finished(jsonx_str(v, "status"));
	}
	json_decref(v);
	return 0;
}

off_t mlfs_size(struct mlfs *ml, const struct node *n)
{
	struct buf b = BUF_INIT(ML_RENDER_MAX);
	struct ml_loc l;
	off_t size = 0;

	if (!ml || n->kind == NODE_ML_CTL || ml_parse(n->path, &l) < 0)
		return 0;
	if (ml_is_log(&l)) {
		int64_t job;
		bool fin;
		char *t = NULL;
		size_t len = 0;

		if (ml_log_job(ml, n, &l, &job, &fin) == 0 && job > 0 &&
		    mlops_trace(ml->m, n->project_id, job, &t, &len) == 0)
			size = (off_t)len;
		free(t);
		return size;
	}
	if (ml_is_artifact(&l)) {
		char **names;
		uint64_t *sizes, s = 0;
		size_t cnt;

		if (ml_arts(ml, n->project_id, ml_oid_job(n), &names, &sizes, &cnt) == 0) {
			if (ml_arts_classify(names, sizes, cnt, l.sub, &s) == 1)
				size = (off_t)s;
			mlops_artifacts_free(names, sizes, cnt);
		}
		return size;
	}
	if (ml_render(ml, n, &l, &b) == 0)
		size = (off_t)b.len;
	buf_free(&b);
	return size;
}

bool ml_is_growing(const struct ml_loc *l)
{
	return l->w == W_EXP_FILE && !strcmp(l->file, "metrics.jsonl");
}

int ml_growing_render(struct mlfs *ml, int64_t pid, const struct ml_loc *l, struct buf *out,
                      bool *finished)
{
	json_t *v = NULL;
	bool local;
	int r;

	*finished = false;
	r = ml_exp_view(ml, l->kind, pid, l->name, &v, &local);
	if (r < 0)
		return r;
	*finished = ml_finished(jsonx_str(v, "status"));
	r = ml_metrics_lines(json_object_get(v, "metrics"), out);
	json_decref(v);
	return r;
}
