/* reefd's side of experiments, pipelines and processors (daemon/mlops.c): reads of the
 * management API (/api/v1: experiments, data pipelines, visualizations — the three
 * launch kinds —, processors, usage; at the server or at -o mgmt=URL) and of GitLab's
 * pipelines,
 * jobs, traces and artifacts (/api/v4), through gl_call with a short-lived response
 * cache; and the control writes: each request is parsed (ctl.h), validated against the
 * server where it can be reached (processor manifest, parameter types, refs, names) and
 * committed to the journal (journal.h), whose thread delivers it.
 *
 * Errors: -EINVAL malformed or invalid request, -ENOENT unknown processor, ref,
 * launch or pipeline, -EACCES the server refused, -EFBIG oversize, -EEXIST the
 * experiment exists, -EAGAIN an unfinished JSON object, -EIO server trouble (reads) or
 * a journal failure (writes). Where the server cannot be reached a write is checked
 * only for form and journaled (`queued`); the server checks the rest on delivery.
 *
 * Exactly once: a launch carries its journal key as `request_id` (the service puts it in
 * the run's pipeline variables) and, when reefd names it, in its name (and so in its
 * branch). Before each send of a launch the delivery looks the name up: a run there with
 * this request id is the answer, and nothing is sent again — so a lost answer never
 * starts a second run, even on a server that ignores Idempotency-Key.
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

/* The kinds of launch: one collection each in the management API and the mount. */
enum mlops_kind { MLOPS_EXPERIMENT, MLOPS_DATA_PIPELINE, MLOPS_VISUALIZATION, MLOPS_KINDS };
struct mlops_kind_info {
	const char *route; /* "experiments": the API collection and the project's directory */
	const char *kind;  /* "experiment": the journal's kind and the JSON file's stem */
	const char *ctl;   /* "experiment-ctl": the journal's kind of its cancel/retry */
	const char *type;  /* "ALGORITHM": the processor type it runs */
};
extern const struct mlops_kind_info mlops_kinds[MLOPS_KINDS];
/* The kind a route, journal kind or ctl kind names; -1 for none. */
int mlops_kind_of(const char *s);

struct mlops_opts {
	const char *server; /* base URL, no /api/v4 */
	const char *mgmt;   /* the management API's base URL (no /api/v1); NULL: the server */
	const char *token;  /* never logged */
	const char *dir;    /* the cache directory: journal.db and artifacts/ live there */
};

int mlops_new(struct mlops **out, const struct mlops_opts *o);
/* Starts the delivery thread (after the daemon forked). */
int mlops_start(struct mlops *m);
void mlops_free(struct mlops *m); /* accepts NULL */
/* Tells fn every failed request to the server or the management API (gl_set_err_hook),
 * for .reef/status last_errors. Call before mlops_start. */
void mlops_set_err_hook(struct mlops *m, void (*fn)(void *arg, const char *msg), void *arg);

/* Whether a path exists in a project's branch or tag as the mount sees it, for checks of
 * a launch before it is acknowledged: 0 it does; -ENOENT it does not (why says so, with
 * the nearest names); another negative errno when that cannot be told now (offline): the
 * server decides when the request reaches it. */
typedef int (*mlops_path_fn)(void *arg, int64_t project_id, const char *ref, const char *path,
                             const char *what, char why[CTL_ERR_MAX]);
void mlops_set_path_check(struct mlops *m, mlops_path_fn fn, void *arg);

/* The management API's state: 0 it answers (or cannot be reached: it may come back),
 * -ENOENT it is not there (404 on /api/v1: a GitLab without the service). Asked at most
 * every MLOPS_PROBE_MS. The base URL it was looked for at goes to url (may be NULL). */
#define MLOPS_PROBE_MS 10000
int mlops_mgmt_state(struct mlops *m, const char **url);

/* ---- reads; JSON results are new references ---- */
int mlops_launches(struct mlops *m, enum mlops_kind k, int64_t project_id, json_t **out);
int mlops_launch_get(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *name,
                     json_t **out);
int mlops_pipelines(struct mlops *m, int64_t project_id, json_t **out);
int mlops_pipeline(struct mlops *m, int64_t project_id, int64_t id, json_t **out);
int mlops_jobs(struct mlops *m, int64_t project_id, int64_t pipeline_id, json_t **out);
int mlops_job(struct mlops *m, int64_t project_id, int64_t job_id, json_t **out);
/* The head commit of a branch, asked at most every MLOPS_TTL_MS. */
int mlops_branch_head(struct mlops *m, int64_t project_id, const char *branch, char commit[41]);
int mlops_processors(struct mlops *m, json_t **out);
int mlops_processor(struct mlops *m, const char *slug, json_t **out);
/* err gets "unknown processor <slug>", a did-you-mean and the processors kind k runs
 * (ctl_suggest); returns -ENOENT. */
int mlops_unknown_processor(struct mlops *m, enum mlops_kind k, const char *slug,
                            char err[CTL_ERR_MAX]);
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
/* A launch of kind k. name (CTL_NAME_MAX + 1) gets its name (generated when not given:
 * <processor>-<first 8 hex digits of the request id>). */
int mlops_launch(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *data,
                 size_t len, int64_t *id, char *name, char err[CTL_ERR_MAX]);
int mlops_pipeline_launch(struct mlops *m, int64_t project_id, const char *data, size_t len,
                          int64_t *id, char err[CTL_ERR_MAX]);
/* `cancel` or `retry` of a launch (target: its name) or a pipeline (its id). */
int mlops_launch_ctl(struct mlops *m, enum mlops_kind k, int64_t project_id, const char *name,
                     const char *data, size_t len, int64_t *id, char err[CTL_ERR_MAX]);
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
