/* reefd's side of experiments, pipelines and processors (daemon/mlops.c): reads of the
 * management API (/api/v1: experiments, processors, usage) and of GitLab's pipelines,
 * jobs, traces and artifacts (/api/v4), through gl_call with a short-lived response
 * cache; and the control writes: each request is parsed (ctl.h), validated against the
 * server where it can be reached (processor manifest, parameter types, refs, names) and
 * committed to the journal (journal.h), whose thread delivers it.
 *
 * Errors: -EINVAL malformed or invalid request, -ENOENT unknown processor, ref,
 * experiment or pipeline, -EACCES the server refused, -EFBIG oversize, -EEXIST the
 * experiment exists, -EAGAIN an unfinished JSON object, -EIO server trouble (reads) or
 * a journal failure (writes). Where the server cannot be reached a write is checked
 * only for form and journaled (`queued`); the server checks the rest on delivery.
 * No FUSE here. */
#ifndef REEF_MLOPS_H
#define REEF_MLOPS_H

#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl.h"
#include "journal.h"

#define MLOPS_TTL_MS       1000 /* how long an answer is reused */
#define MLOPS_LIST_PAGES   20   /* pages of 100 read of a listing */
#define MLOPS_ARTIFACT_MAX ((uint64_t)4 << 30)

struct mlops;

struct mlops_opts {
	const char *server; /* base URL, no /api/v4 */
	const char *token;  /* never logged */
	const char *dir;    /* the cache directory: journal.db and artifacts/ live there */
};

int mlops_new(struct mlops **out, const struct mlops_opts *o);
/* Starts the delivery thread (after the daemon forked). */
int mlops_start(struct mlops *m);
void mlops_free(struct mlops *m); /* accepts NULL */

/* ---- reads; JSON results are new references ---- */
int mlops_experiments(struct mlops *m, int64_t project_id, json_t **out);
int mlops_experiment(struct mlops *m, int64_t project_id, const char *name, json_t **out);
int mlops_pipelines(struct mlops *m, int64_t project_id, json_t **out);
int mlops_pipeline(struct mlops *m, int64_t project_id, int64_t id, json_t **out);
int mlops_jobs(struct mlops *m, int64_t project_id, int64_t pipeline_id, json_t **out);
int mlops_job(struct mlops *m, int64_t project_id, int64_t job_id, json_t **out);
/* The head commit of a branch, asked at most every MLOPS_TTL_MS. */
int mlops_branch_head(struct mlops *m, int64_t project_id, const char *branch, char commit[41]);
int mlops_processors(struct mlops *m, json_t **out);
int mlops_processor(struct mlops *m, const char *slug, json_t **out);
int mlops_usage(struct mlops *m, json_t **out);
/* A job's log as it is now (fresh: not cached). *out malloc'ed. */
int mlops_trace(struct mlops *m, int64_t project_id, int64_t job_id, char **out, size_t *len);

/* A finished job's artifacts: the member files of its zip (downloaded once into the
 * cache directory). names and sizes malloc'ed; free with mlops_artifacts_free. -ENOENT
 * when the job has none (yet). */
int mlops_artifacts(struct mlops *m, int64_t project_id, int64_t job_id, char ***names,
                    uint64_t **sizes, size_t *n);
void mlops_artifacts_free(char **names, uint64_t *sizes, size_t n);
/* One member, extracted into an unlinked file of the cache directory: a descriptor. */
int mlops_artifact_open(struct mlops *m, int64_t project_id, int64_t job_id, const char *name,
                        int *fd);

/* ---- control writes: validated, journaled; *id gets the journal entry ---- */
/* name (CTL_NAME_MAX + 1) gets the experiment's name (generated when not given). */
int mlops_experiment_launch(struct mlops *m, int64_t project_id, const char *data, size_t len,
                            int64_t *id, char *name, char err[CTL_ERR_MAX]);
int mlops_pipeline_launch(struct mlops *m, int64_t project_id, const char *data, size_t len,
                          int64_t *id, char err[CTL_ERR_MAX]);
/* `cancel` or `retry` of an experiment (target: its name) or a pipeline (its id). */
int mlops_experiment_ctl(struct mlops *m, int64_t project_id, const char *name, const char *data,
                         size_t len, int64_t *id, char err[CTL_ERR_MAX]);
int mlops_pipeline_ctl(struct mlops *m, int64_t project_id, int64_t pipeline_id, const char *data,
                       size_t len, int64_t *id, char err[CTL_ERR_MAX]);

/* The journal, for the views of requests not delivered yet. */
struct journal *mlops_journal(struct mlops *m);
/* Called after a request was delivered or refused (from the delivery thread), e.g. to
 * show the reason of a refusal; one callback. Replacing or removing it (fn NULL) waits
 * for a call in progress, so the caller may free arg afterwards. */
typedef void (*mlops_done_fn)(void *arg, const struct journal_entry *e);
void mlops_on_done(struct mlops *m, mlops_done_fn fn, void *arg);

#endif
