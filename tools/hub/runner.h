/* The pipeline store and the embedded shell-executor runner of reef-hub: pipelines and
 * jobs in SQLite (tables ci_*), a pool of worker threads running one job each in its own
 * workspace, process group and bubblewrap sandbox, stage ordering, cancel/retry, job
 * tokens, masked traces and artifacts under the data directory:
 *   DIR/builds/<job id>/      the job's workspace (removed when the job ends)
 *   DIR/builds/<job id>.home  its HOME, .vars/ its file variables, .sh its script
 *   DIR/traces/<job id>.log   the live log
 *   DIR/artifacts/<job id>.zip
 * Shared by pipelines.c (GitLab routes) and mgmt.c (experiments). */
#ifndef REEF_HUB_RUNNER_H
#define REEF_HUB_RUNNER_H

#include <sqlite3.h>

#include "ci.h"
#include "hub.h"

#define CI_DEFAULT_CONFIG "/.gitlab-ci.yml"

/* Opens the CI database connection, creates the tables, fails the jobs a previous hub
 * left running (failure_reason runner_system_failure) and starts the workers: their
 * number comes from REEF_HUB_CONCURRENT (default 4, at most 64); the job limits, wall
 * time included, from joblim_conf_set (joblimits.h) before. */
int ci_runner_start(struct hub *h);
/* Before start: true runs jobs without the sandbox, as the hub's own user with the data
 * directory reachable (`reef-hub serve --unsafe-runner`). Without it, jobs fail when
 * bwrap is missing or cannot create namespaces. */
void ci_runner_unsafe_set(bool unsafe);
/* Before start: true opens the database only, with no workers and no sandbox (the
 * management role, `serve --gitlab`, where GitLab's runners run the jobs). */
void ci_runner_store_only_set(bool store_only);
/* Stops the workers; jobs still running are killed and failed (runner_system_failure). */
void ci_runner_stop(void);

/* The CI module's own connection to DIR/hub.db (serialized); NULL before start. */
sqlite3 *ci_db(void);
/* Prepares sql and binds the arguments described by types: 'i' int64_t, 'd' double,
 * 't' const char * (NULL binds NULL). NULL on error (logged). */
sqlite3_stmt *ci_db_prep(const char *sql, const char *types, ...);
/* Runs a statement to completion; *id (optional) gets the last insert rowid. */
int ci_db_exec(int64_t *id, const char *sql, const char *types, ...);
/* Serializes multi-statement state changes of pipelines, jobs and experiments. */
void ci_lock(void);
void ci_unlock(void);
double ci_now(void);

struct ci_pipeline_new {
	const struct hub_project *project;
	const char *ref;         /* branch, tag or full sha */
	const char *source;      /* api | trigger | push | web | parent_pipeline */
	int64_t user_id;         /* who started it (0: nobody) */
	const json_t *variables; /* [{key, value, variable_type env_var|file}] or NULL */
	const char *ci_path;     /* NULL: the project's ci_config_path, else .gitlab-ci.yml */
	/* A directory under the data directory the jobs may read (bound read-only into their
	 * sandbox at the same path), e.g. a processor snapshot; NULL for none. Set by hub
	 * code only, never from a request. */
	const char *ro_dir;
};

/* Creates a pipeline. 0 on success; -ENOENT when the ref does not exist; -ENODATA when
 * the commit has no CI file; -ENOMSG when no job runs for this ref; -EINVAL for an
 * invalid CI file: the pipeline is then stored as failed with yaml_errors and *id is
 * set. err gets a GitLab-style message in every failure case. */
int ci_pipeline_create(const struct ci_pipeline_new *o, int64_t *id, char err[CI_MAX_ERR]);
/* Cancels the pipeline's pending jobs and kills its running ones. */
int ci_pipeline_cancel(int64_t pipeline_id);
/* Re-runs the pipeline's failed, canceled and skipped jobs as new jobs. */
int ci_pipeline_retry(int64_t pipeline_id);
/* Cancels one job (0; -EALREADY when it had finished). */
int ci_job_cancel(int64_t job_id);
/* Re-runs one finished job as a new job; *new_id gets its id. -EBUSY while it runs. */
int ci_job_retry(int64_t job_id, int64_t *new_id);

/* The project id a job token is valid for (its job is running), or -1; *user_id (optional)
 * gets the user the pipeline runs for, *job_id (optional) the job. */
int64_t ci_job_token_lookup(const char *token, int64_t *user_id, int64_t *job_id);

/* Paths of a job's files under the data directory. */
void ci_trace_path(int64_t job_id, char out[PATH_MAX]);
void ci_artifacts_path(int64_t job_id, char out[PATH_MAX]);

/* Called (with ci_lock held; it must not call back into the runner) whenever a
 * pipeline's status changes. */
typedef void (*ci_pipeline_hook_fn)(int64_t pipeline_id, const char *status);
void ci_pipeline_hook_set(ci_pipeline_hook_fn fn);
/* Called (with ci_lock held) after every step of a pipeline: a job claimed, ended,
 * canceled or scheduled, whether or not the pipeline's status changed (webhooks.c). */
typedef void (*ci_events_hook_fn)(int64_t pipeline_id);
void ci_events_hook_set(ci_events_hook_fn fn);

/* A project's configured CI file path ("" when unset). */
void ci_config_path_get(int64_t project_id, char out[HUB_MAX_PATH]);
int ci_config_path_set(int64_t project_id, const char *path);

/* Random token: 2*nbytes lowercase hex characters. */
int ci_random_hex(char *out, size_t nbytes);
/* sha256 hex of a token, as stored. */
void ci_token_hash(const char *token, char out[65]);

/* Runs a helper command (its own process group, output discarded, 10 minute limit):
 * its exit code, 128+signal, or a negative errno. */
int ci_exec(char *const argv[], char *const envp[]);
/* The hub's data directory, absolute. */
const char *ci_data_dir(void);

/* True for statuses that will not change any more. */
bool ci_status_finished(const char *status);

#endif
