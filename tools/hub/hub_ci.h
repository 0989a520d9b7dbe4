/* reef-hub core <-> CI, runner and management API (ci.c, runner.c, pipelines.c,
 * mgmt.c). The core calls these hooks; nothing else of the CI modules is visible to it. */
#ifndef REEF_HUB_CI_HOOKS_H
#define REEF_HUB_CI_HOOKS_H

#include <stdint.h>

#include "hub.h"

/* Creates the CI and management tables (IF NOT EXISTS), marks jobs a previous hub left
 * running as failed (failure_reason "runner_system_failure") and starts the runner's
 * worker threads. Call from `serve` once hub->base_url is known. 0 or negative errno. */
int hub_ci_init(struct hub *h);
/* Stops the runner: jobs still running are killed and marked failed. */
void hub_ci_shutdown(struct hub *h);

/* /api/v4/projects/:id/<rest> where rest starts with "pipeline", "pipelines", "jobs" or
 * "trigger" (still percent-encoded, no leading '/'). The project is already authorized
 * for read; p->access is the caller's level. The trigger route authenticates by its
 * `token` parameter, so the core should let it through for anonymous callers of
 * projects they cannot otherwise see (see hub_ci_route_is_trigger). */
void hub_ci_project_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                          const char *rest);
/* True for POST projects/:id/trigger/pipeline, which needs no caller authentication:
 * the core may load the project by id and call hub_ci_project_route with access 0. */
bool hub_ci_route_is_trigger(const char *method, const char *rest);

/* GET /api/v4/job: the job of the request's CI job token (gitlabhq lib/api/ci/jobs.rb,
 * "Get current job using job token"). 401 without a caller (a token of a job no longer
 * running authenticates nobody: app/finders/ci/auth_job_finder.rb), 404 "Job Not Found"
 * for a caller authenticated otherwise. */
void hub_ci_current_job(struct hub_req *req, struct hub_resp *resp);

/* /api/v4/projects/:id/hooks[/:hook_id] for a project the caller sees (webhooks.c):
 * GitLab's project hooks, delivering pipeline and job events. */
void hub_webhooks_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                        const char *hook_seg);
/* The commits API's JSON of sha in p's repository (id only when it cannot be read). */
json_t *hub_ci_commit_json(const struct hub_project *p, const char *sha);

/* /api/v1/<rest>: the management API (processors, experiments, data pipelines,
 * visualizations, usage; req->user authenticates) and the EPF callbacks (authenticated
 * by their per-experiment secret). */
void hub_mgmt_route(struct hub_req *req, struct hub_resp *resp, const char *rest);

/* JOB-TOKEN header, job_token= query or Basic user gitlab-ci-token: the project id the
 * token is valid for (its job is running), or -1. *user_id (optional) gets the user the
 * pipeline runs for, whose access the job acts with on that one project. */
int64_t hub_ci_job_token_project(struct hub *h, const char *token);
int64_t hub_ci_job_token_lookup(struct hub *h, const char *token, int64_t *user_id,
                                int64_t *job_id);
/* The branch of the management launch (experiment, data pipeline, visualization) whose
 * pipeline the job belongs to: 1 with ref set, 0 when the job is not a launch's. A
 * launch's job pushes its outputs to that branch with its job token (mgmt-api.md). */
int hub_ci_job_launch_ref(struct hub *h, int64_t job_id, char *ref, size_t n);

/* Optional hooks for the core. */
/* After a push (by user_id, who becomes the pipeline's user) updated refs/heads/<branch>
 * or refs/tags/<tag> to new_sha: runs the project's pipeline (source "push") unless the head commit
 * says [skip ci] / [ci skip] or the commit has no CI file. */
void hub_ci_on_push(struct hub *h, const struct hub_project *p, const char *ref_name, bool is_tag,
                    const char *new_sha, int64_t user_id);
/* Adds ci_config_path to a project's JSON; applies ci_config_path from PUT /projects/:id
 * params (0, or -EINVAL for an unsafe path). */
void hub_ci_project_fields(const struct hub_project *p, json_t *project_json);
int hub_ci_project_update(const struct hub_project *p, const json_t *params);
/* Counts bytes a project served (git fetch, LFS download) toward its namespace's usage. */
void hub_ci_transfer_add(int64_t project_id, uint64_t bytes);
/* A project's `statistics` as GET /projects/:id?statistics=true shows them to reporters
 * and up (gitlabhq lib/api/entities/project.rb, API::Entities::ProjectStatistics):
 * repository_size, lfs_objects_size, job_artifacts_size, storage_size (their sum); NULL
 * before the CI module started. */
json_t *hub_ci_project_statistics(struct hub *h, int64_t project_id);

#endif
