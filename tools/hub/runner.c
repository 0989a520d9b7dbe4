/* The pipeline store and the embedded shell-executor runner. State lives in SQLite on
 * the module's own connection; every multi-step transition (claim a job, finish it,
 * advance the pipeline) runs under one mutex so two workers never race on a pipeline.
 * Jobs run through posix_spawn in their own process group with a clean environment and
 * no inherited descriptors, so a killed hub leaves no listening socket in a job.
 *
 * A job's script runs inside bubblewrap: the system read-only, the data directory
 * replaced by an empty tmpfs into which only the job's own workspace, HOME, script and
 * file variables are bound, a private /tmp, its own pid/ipc/uts namespaces, and (when the
 * hub is root) an unprivileged uid, so a script cannot read hub.db, the LFS secret, other
 * projects' repositories or other jobs' workspaces. The network is shared: jobs call the
 * hub back over loopback (git, artifacts, reef-epf). The checkout before the script is
 * done by the hub itself, with a fixed environment that job variables cannot reach.
 * The scripts run under the job's resource limits (joblimits.h): forked rather than
 * spawned, so the child joins the job's cgroups and takes its rlimits before exec. */
#include "runner_int.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <git2.h>
#include <glob.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "core.h"
#include "joblimits.h"
#include "reef/buf.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

struct rn_state rn = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static const char rn_schema[] =
    "CREATE TABLE IF NOT EXISTS ci_pipelines("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, iid INTEGER NOT NULL,"
    " project_id INTEGER NOT NULL, ref TEXT NOT NULL, sha TEXT NOT NULL,"
    " tag INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, source TEXT NOT NULL,"
    " user_id INTEGER, yaml_errors TEXT, ci_path TEXT NOT NULL,"
    " variables TEXT NOT NULL DEFAULT '[]', cancel_requested INTEGER NOT NULL DEFAULT 0,"
    " created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL,"
    " ro_dir TEXT);"
    "CREATE INDEX IF NOT EXISTS ci_pipelines_project ON ci_pipelines(project_id, id);"
    "CREATE TABLE IF NOT EXISTS ci_jobs("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline_id INTEGER NOT NULL,"
    " project_id INTEGER NOT NULL, name TEXT NOT NULL, stage TEXT NOT NULL,"
    " stage_idx INTEGER NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,"
    " allow_failure INTEGER NOT NULL DEFAULT 0, run_when TEXT NOT NULL DEFAULT 'on_success',"
    " retried INTEGER NOT NULL DEFAULT 0, failure_reason TEXT, token_hash TEXT,"
    " user_id INTEGER, created_at REAL NOT NULL, queued_at REAL, started_at REAL,"
    " finished_at REAL, artifacts_size INTEGER, artifacts_name TEXT);"
    "CREATE INDEX IF NOT EXISTS ci_jobs_pipeline ON ci_jobs(pipeline_id, id);"
    "CREATE INDEX IF NOT EXISTS ci_jobs_project ON ci_jobs(project_id, id);"
    "CREATE INDEX IF NOT EXISTS ci_jobs_token ON ci_jobs(token_hash);"
    "CREATE INDEX IF NOT EXISTS ci_jobs_status ON ci_jobs(status);"
    "CREATE TABLE IF NOT EXISTS ci_settings(project_id INTEGER PRIMARY KEY,"
    " ci_config_path TEXT NOT NULL);";

/* ---- database helpers ---- */

sqlite3 *ci_db(void)
{
	return rn.db;
}

void ci_lock(void)
{
	pthread_mutex_lock(&rn.lock);
}

void ci_unlock(void)
{
	pthread_mutex_unlock(&rn.lock);
}

double ci_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sqlite3_stmt *rn_vprep(const char *sql, const char *types, va_list ap)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(rn.db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK) {
		log_error("ci: sql prepare: %s", sqlite3_errmsg(rn.db));
		return NULL;
	}
	for (int i = 0; types && types[i]; i++) {
		switch (types[i]) {
		case 'i':
			sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
			break;
		case 'd':
			sqlite3_bind_double(st, i + 1, va_arg(ap, double));
			break;
		default: {
			const char *s = va_arg(ap, const char *);

			if (s)
				sqlite3_bind_text(st, i + 1, s, -1, SQLITE_TRANSIENT);
			else
				sqlite3_bind_null(st, i + 1);
		}
		}
	}
	return st;
}

sqlite3_stmt *ci_db_prep(const char *sql, const char *types, ...)
{
	va_list ap;
	sqlite3_stmt *st;

	va_start(ap, types);
	st = rn_vprep(sql, types, ap);
	va_end(ap);
	return st;
}

int ci_db_exec(int64_t *id, const char *sql, const char *types, ...)
{
	va_list ap;
	sqlite3_stmt *st;
	int rc;

	va_start(ap, types);
	st = rn_vprep(sql, types, ap);
	va_end(ap);
	if (!st)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (id)
		*id = sqlite3_last_insert_rowid(rn.db);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		log_error("ci: sql: %s", sqlite3_errmsg(rn.db));
		return hub_db_err(rc);
	}
	return 0;
}

static int64_t rn_int(const char *sql, const char *types, ...)
{
	va_list ap;
	sqlite3_stmt *st;
	int64_t v = -1;

	va_start(ap, types);
	st = rn_vprep(sql, types, ap);
	va_end(ap);
	if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void rn_col(char *dst, size_t n, sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	snprintf(dst, n, "%s", s ? (const char *)s : "");
}

/* ---- small utilities ---- */

int ci_random_hex(char *out, size_t nbytes)
{
	uint8_t raw[64];

	if (nbytes > sizeof(raw))
		return -EINVAL;
	if (getrandom(raw, nbytes, 0) != (ssize_t)nbytes)
		return -EIO;
	hash_hex(out, raw, nbytes);
	return 0;
}

void ci_token_hash(const char *token, char out[65])
{
	uint8_t d[HASH_SHA256_LEN];

	hash_buf(HASH_SHA256, token, strlen(token), d);
	hash_hex(out, d, sizeof(d));
}

bool ci_status_finished(const char *s)
{
	return !strcmp(s, "success") || !strcmp(s, "failed") || !strcmp(s, "canceled") ||
	       !strcmp(s, "skipped");
}

void ci_trace_path(int64_t job_id, char out[PATH_MAX])
{
	hub_pathf(out, PATH_MAX, "%s/traces/%lld.log", rn.dir, (long long)job_id);
}

void ci_artifacts_path(int64_t job_id, char out[PATH_MAX])
{
	hub_pathf(out, PATH_MAX, "%s/artifacts/%lld.zip", rn.dir, (long long)job_id);
}

void ci_pipeline_hook_set(ci_pipeline_hook_fn fn)
{
	rn.hook = fn;
}

void ci_events_hook_set(ci_events_hook_fn fn)
{
	rn.events = fn;
}

void ci_config_path_get(int64_t project_id, char out[HUB_MAX_PATH])
{
	sqlite3_stmt *st = ci_db_prep("SELECT ci_config_path FROM ci_settings WHERE project_id=?",
	                              "i", project_id);

	out[0] = '\0';
	if (st && sqlite3_step(st) == SQLITE_ROW)
		rn_col(out, HUB_MAX_PATH, st, 0);
	sqlite3_finalize(st);
}

int ci_config_path_set(int64_t project_id, const char *path)
{
	if (!path || !*path)
		return ci_db_exec(NULL, "DELETE FROM ci_settings WHERE project_id=?", "i",
		                  project_id);
	if (!path_is_safe(path, HUB_MAX_PATH))
		return -EINVAL;
	return ci_db_exec(
	    NULL,
	    "INSERT INTO ci_settings(project_id, ci_config_path) VALUES(?,?)"
	    " ON CONFLICT(project_id) DO UPDATE SET ci_config_path=excluded.ci_config_path",
	    "it", project_id, path);
}

static int rn_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static int rn_open_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_D && (sb->st_mode & 0700) != 0700)
		chmod(path, (sb->st_mode & 07777) | 0700);
	return 0;
}

/* A job may leave directories it closed to itself (chmod 0): a hub that is not root
 * opens them first, or they would stay behind. */
void rn_rmtree(const char *path)
{
	if (geteuid() != 0)
		nftw(path, rn_open_cb, 32, FTW_PHYS);
	nftw(path, rn_rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

/* No job runs before the workers start: whatever builds/ holds (workspaces, HOME, TMPDIR,
 * scripts and file variables of jobs a killed hub left) is removed. */
static void rn_builds_sweep(void)
{
	char builds[PATH_MAX], path[PATH_MAX];
	struct dirent *e;
	DIR *d;

	hub_pathf(builds, sizeof(builds), "%s/builds", rn.dir);
	d = opendir(builds);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (hub_pathf(path, sizeof(path), "%s/%s", builds, e->d_name) < 0)
			continue;
		log_warn("ci: removing %s, left by a hub that stopped while a job ran", path);
		rn_rmtree(path);
	}
	closedir(d);
}

static int rn_mkdirs(const char *dir)
{
	char sub[PATH_MAX];
	static const char *const names[] = {"builds", "traces", "artifacts", "tmp", NULL};

	for (const char *const *n = names; *n; n++) {
		hub_pathf(sub, sizeof(sub), "%s/%s", dir, *n);
		if (mkdir(sub, 0700) < 0 && errno != EEXIST)
			return log_ret(-errno, "ci: mkdir %s: %s", sub, strerror(errno));
	}
	return 0;
}

/* ---- pipeline status machine ---- */

struct rn_jobrow {
	int64_t id;
	int stage_idx;
	char status[24];
	char when[16];
	bool allow_failure;
};

#define RN_MAX_JOBROWS 1024

static size_t rn_load_jobs(int64_t pid, struct rn_jobrow *rows)
{
	sqlite3_stmt *st = ci_db_prep("SELECT id, stage_idx, status, run_when, allow_failure FROM"
	                              " ci_jobs WHERE pipeline_id=? AND retried=0"
	                              " ORDER BY stage_idx, id",
	                              "i", pid);
	size_t n = 0;

	while (st && n < RN_MAX_JOBROWS && sqlite3_step(st) == SQLITE_ROW) {
		rows[n].id = sqlite3_column_int64(st, 0);
		rows[n].stage_idx = sqlite3_column_int(st, 1);
		rn_col(rows[n].status, sizeof(rows[n].status), st, 2);
		rn_col(rows[n].when, sizeof(rows[n].when), st, 3);
		rows[n].allow_failure = sqlite3_column_int(st, 4) != 0;
		n++;
	}
	sqlite3_finalize(st);
	return n;
}

static void rn_set_job_status(struct rn_jobrow *row, const char *status, double now)
{
	snprintf(row->status, sizeof(row->status), "%s", status);
	if (!strcmp(status, "pending"))
		ci_db_exec(NULL, "UPDATE ci_jobs SET status='pending', queued_at=? WHERE id=?",
		           "di", now, row->id);
	else
		ci_db_exec(NULL, "UPDATE ci_jobs SET status=?, finished_at=? WHERE id=?", "tdi",
		           status, now, row->id);
}

/* Moves created jobs of the next stage to pending (or skipped, per `when`) once every
 * earlier stage has finished, then recomputes the pipeline's status. Lock held. */
static void rn_advance_inner(int64_t pid);

static void rn_advance_locked(int64_t pid)
{
	rn_advance_inner(pid);
	if (rn.events)
		rn.events(pid);
}

static void rn_advance_inner(int64_t pid)
{
	struct rn_jobrow *rows = calloc(RN_MAX_JOBROWS, sizeof(*rows));
	sqlite3_stmt *st;
	char old[24] = "", status[24];
	double now = ci_now();
	bool cancel = false, any_active = false, any_started = false, any_canceled = false;
	bool any_failed = false, all_skipped = true, woke = false;
	size_t n;

	if (!rows)
		return;
	st = ci_db_prep("SELECT status, cancel_requested FROM ci_pipelines WHERE id=?", "i", pid);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		rn_col(old, sizeof(old), st, 0);
		cancel = sqlite3_column_int(st, 1) != 0;
	}
	sqlite3_finalize(st);
	n = rn_load_jobs(pid, rows);
	for (;;) {
		size_t first = n;
		bool earlier_failed = false, blocked = false;

		for (size_t i = 0; i < n; i++)
			if (!strcmp(rows[i].status, "created")) {
				first = i;
				break;
			}
		if (first == n)
			break;
		for (size_t i = 0; i < n; i++) {
			if (rows[i].stage_idx >= rows[first].stage_idx)
				continue;
			if (!ci_status_finished(rows[i].status))
				blocked = true;
			if ((!strcmp(rows[i].status, "failed") && !rows[i].allow_failure) ||
			    !strcmp(rows[i].status, "canceled"))
				earlier_failed = true;
		}
		if (blocked)
			break;
		for (size_t i = first; i < n && rows[i].stage_idx == rows[first].stage_idx; i++) {
			bool run;

			if (strcmp(rows[i].status, "created"))
				continue;
			if (cancel) {
				rn_set_job_status(&rows[i], "canceled", now);
				continue;
			}
			if (!strcmp(rows[i].when, "always"))
				run = true;
			else if (!strcmp(rows[i].when, "on_failure"))
				run = earlier_failed;
			else
				run = !earlier_failed;
			rn_set_job_status(&rows[i], run ? "pending" : "skipped", now);
			woke |= run;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const char *s = rows[i].status;

		if (!ci_status_finished(s))
			any_active = true;
		if (strcmp(s, "created") && strcmp(s, "pending") && strcmp(s, "skipped"))
			any_started = true;
		if (!strcmp(s, "canceled"))
			any_canceled = true;
		if (!strcmp(s, "failed") && !rows[i].allow_failure)
			any_failed = true;
		if (strcmp(s, "skipped"))
			all_skipped = false;
	}
	free(rows);
	if (!strcmp(old, "failed") && n == 0)
		return; /* a yaml error pipeline has no jobs */
	if (any_active)
		snprintf(status, sizeof(status), "%s", any_started ? "running" : "pending");
	else if (any_canceled || cancel)
		snprintf(status, sizeof(status), "canceled");
	else if (any_failed)
		snprintf(status, sizeof(status), "failed");
	else if (all_skipped)
		snprintf(status, sizeof(status), "skipped");
	else
		snprintf(status, sizeof(status), "success");
	if (woke)
		pthread_cond_broadcast(&rn.cond);
	if (!strcmp(status, old))
		return;
	ci_db_exec(
	    NULL,
	    "UPDATE ci_pipelines SET status=?1, updated_at=?2,"
	    " started_at=CASE WHEN ?1='running' AND started_at IS NULL THEN ?2 ELSE started_at END,"
	    " finished_at=CASE WHEN ?1 IN ('success','failed','canceled','skipped') THEN ?2"
	    " ELSE NULL END WHERE id=?3",
	    "tdi", status, now, pid);
	if (rn.hook)
		rn.hook(pid, status);
}

/* ---- reading the CI file from the repository ---- */

static int rn_resolve(git_repository *repo, const char *ref, git_commit **commit, bool *is_tag)
{
	char name[HUB_MAX_PATH + 16];
	git_object *obj = NULL;
	git_oid oid;

	*is_tag = false;
	snprintf(name, sizeof(name), "refs/heads/%s", ref);
	if (git_revparse_single(&obj, repo, name) != 0) {
		snprintf(name, sizeof(name), "refs/tags/%s", ref);
		if (git_revparse_single(&obj, repo, name) == 0)
			*is_tag = true;
		else if (hash_is_hex(ref, 40) && git_oid_fromstr(&oid, ref) == 0 &&
		         git_object_lookup(&obj, repo, &oid, GIT_OBJECT_ANY) == 0)
			;
		else
			return -ENOENT;
	}
	if (git_object_peel((git_object **)commit, obj, GIT_OBJECT_COMMIT) != 0) {
		git_object_free(obj);
		return -ENOENT;
	}
	git_object_free(obj);
	return 0;
}

static int rn_read_ci(const char *repo_path, const char *ref, const char *path, char sha[41],
                      bool *is_tag, struct buf *content)
{
	git_repository *repo = NULL;
	git_commit *commit = NULL;
	git_tree *tree = NULL;
	git_tree_entry *entry = NULL;
	git_blob *blob = NULL;
	int r;

	if (git_repository_open_bare(&repo, repo_path) != 0)
		return -EIO;
	if ((r = rn_resolve(repo, ref, &commit, is_tag)) < 0)
		goto out;
	git_oid_tostr(sha, 41, git_commit_id(commit));
	r = -ENODATA;
	if (git_commit_tree(&tree, commit) != 0)
		goto out;
	if (git_tree_entry_bypath(&entry, tree, path) != 0 ||
	    git_tree_entry_type(entry) != GIT_OBJECT_BLOB)
		goto out;
	if (git_blob_lookup(&blob, repo, git_tree_entry_id(entry)) != 0)
		goto out;
	if ((uint64_t)git_blob_rawsize(blob) > CI_MAX_FILE) {
		r = -EFBIG;
		goto out;
	}
	r = buf_append(content, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob));
	if (r == 0)
		r = buf_puts(content, "");
out:
	git_blob_free(blob);
	git_tree_entry_free(entry);
	git_tree_free(tree);
	git_commit_free(commit);
	git_repository_free(repo);
	return r;
}

/* ---- pipeline creation and control ---- */

int ci_pipeline_create(const struct ci_pipeline_new *o, int64_t *id, char err[CI_MAX_ERR])
{
	char path[HUB_MAX_PATH], sha[41] = "", *vars = NULL;
	struct buf content = BUF_INIT(CI_MAX_FILE + 1);
	json_t *cfg = NULL, *jobs, *job;
	bool is_tag = false;
	double now = ci_now();
	int64_t pid = 0, iid;
	size_t i, matched = 0;
	int r;

	*id = 0;
	err[0] = '\0';
	if (o->ci_path && *o->ci_path)
		snprintf(path, sizeof(path), "%s", o->ci_path);
	else
		ci_config_path_get(o->project->id, path);
	if (!path[0])
		snprintf(path, sizeof(path), "%s", CI_DEFAULT_CONFIG + 1);
	r = rn_read_ci(o->project->repo_path, o->ref, path, sha, &is_tag, &content);
	if (r == -ENOENT) {
		snprintf(err, CI_MAX_ERR, "Reference not found");
		goto out;
	}
	if (r == -ENODATA) {
		snprintf(err, CI_MAX_ERR, "Missing CI config file");
		goto out;
	}
	if (r == -EFBIG) {
		snprintf(err, CI_MAX_ERR, "config is larger than %zu bytes", CI_MAX_FILE);
		r = -EINVAL;
	} else if (r < 0) {
		snprintf(err, CI_MAX_ERR, "repository could not be read");
		goto out;
	} else {
		r = ci_parse(content.data, content.len, &cfg, err);
		if (r == -EFBIG)
			r = -EINVAL;
	}
	vars = o->variables ? jsonx_dump(o->variables) : strdup("[]");
	ci_lock();
	iid = rn_int("SELECT COALESCE(MAX(iid),0)+1 FROM ci_pipelines WHERE project_id=?", "i",
	             o->project->id);
	if (r < 0) {
		/* stored, so the error is visible in the pipeline list like GitLab's */
		r = ci_db_exec(
		    &pid,
		    "INSERT INTO ci_pipelines(iid, project_id, ref, sha, tag, status,"
		    " source, user_id, yaml_errors, ci_path, variables, created_at,"
		    " updated_at, finished_at) VALUES(?,?,?,?,?,'failed',?,?,?,?,?,?,?,?)",
		    "iittititttddd", iid, o->project->id, o->ref, sha, (int64_t)is_tag, o->source,
		    o->user_id, err, path, vars, now, now, now);
		ci_unlock();
		*id = pid;
		r = r < 0 ? r : -EINVAL;
		goto out;
	}
	jobs = json_object_get(cfg, "jobs");
	json_array_foreach(jobs, i, job) if (ci_job_matches_ref(job, o->ref, is_tag)) matched++;
	if (matched == 0) {
		ci_unlock();
		snprintf(err, CI_MAX_ERR, "No stages / jobs for this pipeline.");
		r = -ENOMSG;
		goto out;
	}
	r = ci_db_exec(&pid,
	               "INSERT INTO ci_pipelines(iid, project_id, ref, sha, tag, status, source,"
	               " user_id, ci_path, variables, created_at, updated_at, ro_dir)"
	               " VALUES(?,?,?,?,?,'created',?,?,?,?,?,?,?)",
	               "iittitittddt", iid, o->project->id, o->ref, sha, (int64_t)is_tag, o->source,
	               o->user_id, path, vars, now, now, o->ro_dir);
	json_array_foreach(jobs, i, job)
	{
		char *spec;

		if (r < 0 || !ci_job_matches_ref(job, o->ref, is_tag))
			continue;
		spec = jsonx_dump(job);
		r = ci_db_exec(
		    NULL,
		    "INSERT INTO ci_jobs(pipeline_id, project_id, name, stage, stage_idx,"
		    " status, spec, allow_failure, run_when, user_id, created_at)"
		    " VALUES(?,?,?,?,?,'created',?,?,?,?,?)",
		    "iittititid", pid, o->project->id, jsonx_str(job, "name"),
		    jsonx_str(job, "stage"), jsonx_int(job, "stage_idx", 0), spec,
		    (int64_t)json_is_true(json_object_get(job, "allow_failure")),
		    jsonx_str(job, "when"), o->user_id, now);
		free(spec);
	}
	if (r == 0)
		rn_advance_locked(pid);
	ci_unlock();
	if (r == 0)
		*id = pid;
	else
		snprintf(err, CI_MAX_ERR, "pipeline could not be stored");
out:
	free(vars);
	json_decref(cfg);
	buf_free(&content);
	return r;
}

static struct rn_slot *rn_slot_of(int64_t job_id)
{
	for (int i = 0; i < rn.n_workers; i++)
		if (rn.slots[i].job_id == job_id)
			return &rn.slots[i];
	return NULL;
}

/* Lock held. Pending/created jobs end at once; running ones are signalled and end
 * when their worker has reaped the process group. */
static int rn_job_cancel_locked(int64_t job_id, const char *status)
{
	struct rn_slot *slot;

	if (!strcmp(status, "created") || !strcmp(status, "pending")) {
		return ci_db_exec(NULL,
		                  "UPDATE ci_jobs SET status='canceled', finished_at=? WHERE id=?",
		                  "di", ci_now(), job_id);
	}
	if (!strcmp(status, "running")) {
		if ((slot = rn_slot_of(job_id)))
			__atomic_store_n(&slot->cancel, 1, __ATOMIC_SEQ_CST);
		return 0;
	}
	return -EALREADY;
}

int ci_pipeline_cancel(int64_t pid)
{
	sqlite3_stmt *st;
	int r = 0;

	ci_lock();
	if (ci_db_exec(NULL,
	               "UPDATE ci_pipelines SET cancel_requested=1 WHERE id=? AND status NOT IN"
	               " ('success','failed','canceled','skipped')",
	               "i", pid) < 0)
		r = -EIO;
	st = ci_db_prep("SELECT id, status FROM ci_jobs WHERE pipeline_id=? AND retried=0", "i",
	                pid);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		char status[24];

		rn_col(status, sizeof(status), st, 1);
		rn_job_cancel_locked(sqlite3_column_int64(st, 0), status);
	}
	sqlite3_finalize(st);
	rn_advance_locked(pid);
	ci_unlock();
	return r;
}

/* Lock held: copies a job as a new created/pending job and hides the old one. */
static int rn_job_clone_locked(int64_t job_id, const char *status, int64_t *new_id)
{
	int r = ci_db_exec(new_id,
	                   "INSERT INTO ci_jobs(pipeline_id, project_id, name, stage, stage_idx,"
	                   " status, spec, allow_failure, run_when, user_id, created_at)"
	                   " SELECT pipeline_id, project_id, name, stage, stage_idx, ?, spec,"
	                   " allow_failure, run_when, user_id, ? FROM ci_jobs WHERE id=?",
	                   "tdi", status, ci_now(), job_id);

	if (r == 0)
		r = ci_db_exec(NULL, "UPDATE ci_jobs SET retried=1 WHERE id=?", "i", job_id);
	return r;
}

static int rn_reopen_pipeline_locked(int64_t pid)
{
	return ci_db_exec(NULL,
	                  "UPDATE ci_pipelines SET cancel_requested=0, finished_at=NULL,"
	                  " updated_at=? WHERE id=?",
	                  "di", ci_now(), pid);
}

int ci_pipeline_retry(int64_t pid)
{
	struct rn_jobrow *rows;
	size_t n;
	int r = 0;

	if (!(rows = calloc(RN_MAX_JOBROWS, sizeof(*rows))))
		return -ENOMEM;
	ci_lock();
	if (rn_int("SELECT COUNT(*) FROM ci_jobs WHERE pipeline_id=?", "i", pid) <= 0) {
		r = -EINVAL; /* a yaml error pipeline has nothing to retry */
		goto out;
	}
	n = rn_load_jobs(pid, rows);
	rn_reopen_pipeline_locked(pid);
	for (size_t i = 0; i < n && r == 0; i++) {
		int64_t nid;

		if (!strcmp(rows[i].status, "failed") || !strcmp(rows[i].status, "canceled") ||
		    !strcmp(rows[i].status, "skipped"))
			r = rn_job_clone_locked(rows[i].id, "created", &nid);
	}
	rn_advance_locked(pid);
out:
	ci_unlock();
	free(rows);
	return r;
}

int ci_job_cancel(int64_t job_id)
{
	char status[24] = "";
	int64_t pid = -1;
	sqlite3_stmt *st;
	int r = -ENOENT;

	ci_lock();
	st = ci_db_prep("SELECT status, pipeline_id FROM ci_jobs WHERE id=?", "i", job_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		rn_col(status, sizeof(status), st, 0);
		pid = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (pid > 0) {
		r = rn_job_cancel_locked(job_id, status);
		rn_advance_locked(pid);
	}
	ci_unlock();
	return r;
}

int ci_job_retry(int64_t job_id, int64_t *new_id)
{
	char status[24] = "";
	int64_t pid = -1;
	sqlite3_stmt *st;
	int r = -ENOENT;

	ci_lock();
	st = ci_db_prep("SELECT status, pipeline_id FROM ci_jobs WHERE id=? AND retried=0", "i",
	                job_id);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		rn_col(status, sizeof(status), st, 0);
		pid = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (pid > 0 && !ci_status_finished(status)) {
		r = -EBUSY;
	} else if (pid > 0) {
		int stage = (int)rn_int("SELECT stage_idx FROM ci_jobs WHERE id=?", "i", job_id);
		struct rn_jobrow *rows = calloc(RN_MAX_JOBROWS, sizeof(*rows));
		size_t n = rows ? rn_load_jobs(pid, rows) : 0;

		rn_reopen_pipeline_locked(pid);
		r = rn_job_clone_locked(job_id, "pending", new_id);
		if (r == 0)
			ci_db_exec(NULL, "UPDATE ci_jobs SET queued_at=? WHERE id=?", "di",
			           ci_now(), *new_id);
		/* later stages that never ran because of this job get their chance again */
		for (size_t i = 0; i < n && r == 0; i++) {
			int64_t nid;

			if (rows[i].stage_idx > stage && (!strcmp(rows[i].status, "skipped") ||
			                                  !strcmp(rows[i].status, "canceled")))
				r = rn_job_clone_locked(rows[i].id, "created", &nid);
		}
		free(rows);
		rn_advance_locked(pid);
		pthread_cond_broadcast(&rn.cond);
	}
	ci_unlock();
	return r;
}

int64_t ci_job_token_lookup(const char *token, int64_t *user_id, int64_t *job_id)
{
	char hash[65];
	sqlite3_stmt *st;
	int64_t pid = -1;

	if (!rn.db || !token || strlen(token) < 20 || strlen(token) > 128)
		return -1;
	ci_token_hash(token, hash);
	st = ci_db_prep("SELECT project_id, user_id, id FROM ci_jobs WHERE token_hash=? AND"
	                " status='running'",
	                "t", hash);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		pid = sqlite3_column_int64(st, 0);
		if (user_id)
			*user_id = sqlite3_column_int64(st, 1);
		if (job_id)
			*job_id = sqlite3_column_int64(st, 2);
	}
	sqlite3_finalize(st);
	return pid;
}

/* Lock held: takes the oldest pending job, makes it running with a fresh token. */
static int rn_claim_locked(struct rn_job *j)
{
	sqlite3_stmt *st;
	char hash[65];
	int r = -ENOENT;

	memset(j, 0, sizeof(*j));
	st = ci_db_prep("SELECT j.id, j.pipeline_id, j.project_id, j.name, j.stage, j.spec,"
	                " p.ref, p.sha, p.tag, p.source, p.variables, p.iid, p.user_id, p.ro_dir"
	                " FROM ci_jobs j JOIN ci_pipelines p ON p.id=j.pipeline_id"
	                " WHERE j.status='pending' ORDER BY j.id LIMIT 1",
	                NULL);
	if (st && sqlite3_step(st) == SQLITE_ROW) {
		const char *spec = (const char *)sqlite3_column_text(st, 5);
		const char *vars = (const char *)sqlite3_column_text(st, 10);

		j->id = sqlite3_column_int64(st, 0);
		j->pipeline_id = sqlite3_column_int64(st, 1);
		j->project_id = sqlite3_column_int64(st, 2);
		rn_col(j->name, sizeof(j->name), st, 3);
		rn_col(j->stage, sizeof(j->stage), st, 4);
		rn_col(j->ref, sizeof(j->ref), st, 6);
		rn_col(j->sha, sizeof(j->sha), st, 7);
		j->tag = sqlite3_column_int(st, 8) != 0;
		rn_col(j->source, sizeof(j->source), st, 9);
		j->pipeline_iid = sqlite3_column_int64(st, 11);
		j->user_id = sqlite3_column_int64(st, 12);
		rn_col(j->ro_dir, sizeof(j->ro_dir), st, 13);
		jsonx_parse(&j->spec, spec, strlen(spec), 0, 0);
		jsonx_parse(&j->variables, vars, strlen(vars), 0, 0);
		r = 0;
	}
	sqlite3_finalize(st);
	if (r < 0)
		return r;
	if (!j->spec || ci_random_hex(j->token, 20) < 0) {
		json_decref(j->spec);
		json_decref(j->variables);
		ci_db_exec(
		    NULL,
		    "UPDATE ci_jobs SET status='failed', failure_reason='runner_system_failure',"
		    " finished_at=? WHERE id=?",
		    "di", ci_now(), j->id);
		rn_advance_locked(j->pipeline_id);
		return -EIO;
	}
	ci_token_hash(j->token, hash);
	ci_db_exec(NULL,
	           "UPDATE ci_jobs SET status='running', started_at=?, token_hash=? WHERE id=?",
	           "dti", ci_now(), hash, j->id);
	rn_advance_locked(j->pipeline_id);
	return 0;
}

static void *rn_worker(void *arg)
{
	struct rn_slot *slot = arg;

	ci_lock();
	while (!__atomic_load_n(&rn.stopping, __ATOMIC_SEQ_CST)) {
		struct rn_job j;
		char status[24], reason[64];
		uint64_t art = 0;

		if (rn_claim_locked(&j) < 0) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&rn.cond, &rn.lock, &ts);
			continue;
		}
		slot->job_id = j.id;
		__atomic_store_n(&slot->cancel, 0, __ATOMIC_SEQ_CST);
		ci_unlock();
		rn_job_run(slot, &j, status, reason, &art);
		ci_lock();
		if (!strcmp(status, "failed") && !strcmp(reason, "runner_system_failure") &&
		    __atomic_load_n(&slot->cancel, __ATOMIC_SEQ_CST))
			snprintf(status, sizeof(status), "canceled");
		ci_db_exec(NULL,
		           "UPDATE ci_jobs SET status=?, failure_reason=?, finished_at=?,"
		           " token_hash=NULL, artifacts_size=? WHERE id=?",
		           "ttdii", status, reason[0] ? reason : NULL, ci_now(),
		           (int64_t)(art ? art : 0), j.id);
		if (!art)
			ci_db_exec(NULL, "UPDATE ci_jobs SET artifacts_size=NULL WHERE id=?", "i",
			           j.id);
		slot->job_id = 0;
		rn_advance_locked(j.pipeline_id);
		json_decref(j.spec);
		json_decref(j.variables);
	}
	ci_unlock();
	return NULL;
}

/* reef-epf next to reef-hub (installed) or in the build tree (tools/epf). */
static void rn_find_epf(void)
{
	char exe[PATH_MAX], cand[PATH_MAX + 32];
	const char *env = getenv("REEF_EPF");
	ssize_t n;
	char *slash;

	rn.epf_dir[0] = '\0';
	if (env && *env && access(env, X_OK) == 0) {
		snprintf(cand, sizeof(cand), "%s", env);
		if ((slash = strrchr(cand, '/'))) {
			*slash = '\0';
			hub_pathf(rn.epf_dir, sizeof(rn.epf_dir), "%s", cand);
		}
		return;
	}
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return;
	exe[n] = '\0';
	if ((slash = strrchr(exe, '/')))
		*slash = '\0';
	hub_pathf(cand, sizeof(cand), "%s/reef-epf", exe);
	if (access(cand, X_OK) == 0) {
		hub_pathf(rn.epf_dir, sizeof(rn.epf_dir), "%s", exe);
		return;
	}
	hub_pathf(cand, sizeof(cand), "%s/../epf/reef-epf", exe);
	if (access(cand, X_OK) == 0 && realpath(cand, exe)) {
		if ((slash = strrchr(exe, '/')))
			*slash = '\0';
		hub_pathf(rn.epf_dir, sizeof(rn.epf_dir), "%s", exe);
	}
}

int ci_runner_start(struct hub *h)
{
	char path[PATH_MAX + 16];
	const char *s;
	sqlite3_stmt *st;
	char *errmsg = NULL;
	int rc, r;

	rn.h = h;
	if (!realpath(h->dir, rn.dir))
		return log_ret(-errno, "ci: %s: %s", h->dir, strerror(errno));
	if ((r = rn_mkdirs(rn.dir)) < 0)
		return r;
	hub_pathf(path, sizeof(path), "%s/hub.db", rn.dir);
	rc = sqlite3_open_v2(path, &rn.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK)
		return log_ret(hub_db_err(rc), "ci: open %s: %s", path, sqlite3_errstr(rc));
	sqlite3_busy_timeout(rn.db, 10000);
	if (sqlite3_exec(rn.db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL,
	                 &errmsg) != SQLITE_OK ||
	    sqlite3_exec(rn.db, rn_schema, NULL, NULL, &errmsg) != SQLITE_OK) {
		log_error("ci: schema: %s", errmsg ? errmsg : "?");
		sqlite3_free(errmsg);
		return -EIO;
	}
	/* data directories made before pipelines had ro_dir */
	if (sqlite3_prepare_v2(rn.db, "SELECT ro_dir FROM ci_pipelines LIMIT 0", -1, &st, NULL) !=
	        SQLITE_OK &&
	    sqlite3_exec(rn.db, "ALTER TABLE ci_pipelines ADD COLUMN ro_dir TEXT", NULL, NULL,
	                 &errmsg) != SQLITE_OK) {
		log_error("ci: schema: %s", errmsg ? errmsg : "?");
		sqlite3_free(errmsg);
		return -EIO;
	}
	sqlite3_finalize(st);
	git_libgit2_init();
	/* a job the previous hub left running cannot be resumed: fail it visibly */
	ci_lock();
	st = ci_db_prep("SELECT id, pipeline_id FROM ci_jobs WHERE status='running'", NULL);
	while (st && sqlite3_step(st) == SQLITE_ROW) {
		int64_t jid = sqlite3_column_int64(st, 0), pid = sqlite3_column_int64(st, 1);
		char tp[PATH_MAX];
		int fd;

		ci_trace_path(jid, tp);
		if ((fd = open(tp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) >= 0) {
			rn_trace(fd,
			         "ERROR: Job failed (system failure): the hub restarted while the"
			         " job ran\n");
			close(fd);
		}
		ci_db_exec(
		    NULL,
		    "UPDATE ci_jobs SET status='failed', failure_reason='runner_system_failure',"
		    " finished_at=?, token_hash=NULL WHERE id=?",
		    "di", ci_now(), jid);
		rn_advance_locked(pid);
		log_warn("ci: job %lld was running when the hub stopped: marked failed",
		         (long long)jid);
	}
	sqlite3_finalize(st);
	ci_db_exec(NULL, "UPDATE ci_jobs SET token_hash=NULL WHERE status!='running'", NULL);
	ci_unlock();
	if (rn.store_only) {
		/* the management role: the database without a runner */
		rn.started = true;
		return 0;
	}
	rn_builds_sweep();
	rn_find_epf();
	if (!rn.unsafe)
		rn_sandbox_probe();
	if (rn.unsafe)
		log_warn("ci: --unsafe-runner: jobs run unsandboxed, as this user, with %s"
		         " readable",
		         rn.dir);
	else if (!rn.sandbox_ok)
		log_warn("ci: job sandbox unavailable, jobs will fail (start with --unsafe-runner"
		         " to run them unsandboxed): %s",
		         rn.sandbox_err);
	rn.n_workers = 4;
	if ((s = getenv("REEF_HUB_CONCURRENT")) && atoi(s) > 0)
		rn.n_workers = atoi(s) > RN_MAX_WORKERS ? RN_MAX_WORKERS : atoi(s);
	joblim_probe(rn.drop && !rn.unsafe, rn.n_workers);
	rn.slots = calloc((size_t)rn.n_workers, sizeof(*rn.slots));
	if (!rn.slots)
		return -ENOMEM;
	__atomic_store_n(&rn.stopping, 0, __ATOMIC_SEQ_CST);
	for (int i = 0; i < rn.n_workers; i++) {
		if ((rc = pthread_create(&rn.slots[i].thread, NULL, rn_worker, &rn.slots[i])) !=
		    0) {
			rn.n_workers = i;
			ci_runner_stop();
			return -rc;
		}
	}
	rn.started = true;
	log_info("ci: runner started with %d concurrent jobs%s%s", rn.n_workers,
	         rn.epf_dir[0] ? ", reef-epf in " : " (reef-epf not found)", rn.epf_dir);
	if (rn.sandbox_ok)
		log_info("ci: jobs sandboxed by %s%s", rn.bwrap,
		         rn.drop ? ", as an unprivileged user" : "");
	return 0;
}

void ci_runner_store_only_set(bool store_only)
{
	rn.store_only = store_only;
}

void ci_runner_stop(void)
{
	__atomic_store_n(&rn.stopping, 1, __ATOMIC_SEQ_CST);
	ci_lock();
	pthread_cond_broadcast(&rn.cond);
	ci_unlock();
	for (int i = 0; i < rn.n_workers; i++)
		pthread_join(rn.slots[i].thread, NULL);
	free(rn.slots);
	rn.slots = NULL;
	rn.n_workers = 0;
	rn.started = false;
	if (rn.db)
		sqlite3_close(rn.db);
	rn.db = NULL;
}
