/* Between the modules of the management API (/api/v1): mgmt.c (routing, launches,
 * hooks), mgmt_proc.c (processors), mgmt_epf.c (EPF callbacks, usage). Private to them. */
#ifndef REEF_HUB_MGMT_INT_H
#define REEF_HUB_MGMT_INT_H

#include <sqlite3.h>
#include <stdbool.h>

#include "hub.h"
#include "reef/buf.h"
#include "reef/jsonx.h"

#define MG_MAX_MANIFEST ((size_t)256 << 10)
#define MG_MAX_PARAMS   100
#define MG_MAX_METRICS  10000 /* metric records kept per launch */
#define MG_MAX_EPF_BODY ((size_t)1 << 20)
#define MG_MAX_NAME     100
#define MG_CI_FILE      ".mlreef.yml"

extern struct hub *mg_hub;

bool mg_is_get(const struct hub_req *req);
void mg_error(struct hub_resp *resp, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mg_time(json_t *o, const char *key, sqlite3_stmt *st, int col);
json_t *mg_str(sqlite3_stmt *st, int col);
json_t *mg_json_col(sqlite3_stmt *st, int col);
/* slug: lowercase letters, digits and '-', starting with a letter or digit. */
bool mg_slug_ok(const char *s);
bool mg_param_name_ok(const char *s);
/* Loads a project by URL segment (id or encoded path) the caller may see. */
int mg_project(struct hub_req *req, struct hub_resp *resp, const char *seg, struct hub_project *p);
json_t *mg_processor_json(sqlite3_stmt *st);
/* A processor is its code: the caller must be able to read its code project's
 * repository, which a guest of a private project cannot (doc/user/permissions.md). */
bool mg_code_readable(struct hub_req *req, const struct hub_project *p);
/* A processor row the caller may see (its code is readable by them). */
sqlite3_stmt *mg_processor_row(struct hub_req *req, const char *slug);
/* Normalizes a parameter value to its declared type; NULL when it does not fit. The
 * result is a string ready for the command line. */
char *mg_param_value(const char *type, const json_t *v);
/* Reads a file of the repository at ref; *sha gets the commit. */
int mg_repo_file(const char *repo_path, const char *ref, const char *path, char sha[41],
                 struct buf *out);
/* Stores the checked manifest m as the processor published by project p at ref (commit
 * sha) and answers 201 with its row, or 409 when the slug is another project's. image and
 * code_path are kept by the role beside a GitLab only (NULL on the hub's own). */
void mg_processor_store(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                        const json_t *m, const char *ref, const char *sha, const char *image,
                        const char *code_path);
void mg_publish(struct hub_req *req, struct hub_resp *resp, const char *project_seg);
void mg_processors_list(struct hub_req *req, struct hub_resp *resp);
void mg_epf_route(struct hub_req *req, struct hub_resp *resp, char **seg, size_t n);
/* The pipeline's status is the launch's: called by the runner under its lock. */
void mg_on_pipeline(int64_t pipeline_id, const char *status);
void mg_usage(struct hub_req *req, struct hub_resp *resp, const char *ns_path);

/* Checks a manifest; err gets the reason. */
int mg_manifest_check(const json_t *m, char *err, size_t n);
/* The caller may read the code of project_id (here or, in the management role, on
 * GitLab). */
bool mg_code_visible(struct hub_req *req, int64_t project_id);

/* ---- the management role beside a GitLab (mgmt_gl.c) ---- */
bool mgl_active(void);
/* Enters the management role with GitLab at gitlab_url. */
int mgl_init(const char *gitlab_url);
/* Authenticates the caller with their GitLab token: 0 (req->user set, or NULL without a
 * token), -EACCES for a token GitLab refuses, -EIO when GitLab did not answer. */
int mgl_auth(struct hub_req *req);
/* Forgets the request's token (end of the request). */
void mgl_request_end(void);
/* A GitLab project the caller sees (404 otherwise, as GitLab). */
int mgl_project(struct hub_req *req, struct hub_resp *resp, const char *seg, struct hub_project *p);
bool mgl_code_readable(struct hub_req *req, int64_t project_id);
void mgl_publish(struct hub_req *req, struct hub_resp *resp, const char *project_seg);
#define MGL_CODE_DIR ".reef/processor" /* the processor's code on a launch's branch */
/* GitLab's web base URL (web_url of launches). */
const char *mgl_web_base(void);
/* The commit that makes launch lid's branch from source on GitLab: the CI file and the
 * processor's code. Lock not held. On failure the launch row is removed: -EEXIST (the
 * branch exists), -ENOENT (no source branch), -EACCES, -EIO (GitLab did not answer and
 * the branch is not this request's). */
int mgl_launch_commit(const struct hub_project *p, int64_t lid, const char *branch,
                      const char *source, const char *ci, const char *message, const char *slug,
                      const char *psha, const char *request_id);
int mgl_launch_pipeline(struct hub_req *req, const struct hub_project *p, int64_t lid,
                        const char *branch, char *err, size_t n);
void mgl_launch_refresh(const struct hub_project *p, int64_t lid);
int mgl_pipeline_cancel(const struct hub_project *p, int64_t pid);
/* The job a CI job token belongs to, as GitLab says (GET /api/v4/job), cached
 * MGL_JOB_TTL seconds under the token's SHA-256: 0 with the job, its pipeline and
 * project; -EACCES when GitLab refuses the token (forged, or its job has ended), -EIO
 * when GitLab did not answer. */
int mgl_job_token(const char *token, int64_t *job, int64_t *pipeline, int64_t *project);
/* GitLab's webhook (mgmt_glhook.c). */
#define MGL_HOOK_MAX_BODY ((size_t)1 << 20)
enum mgl_hook_kind { MGL_HOOK_OTHER, MGL_HOOK_PIPELINE, MGL_HOOK_JOB };
struct mgl_hook_event {
	enum mgl_hook_kind kind;
	int64_t project_id, pipeline_id, job_id; /* job_id: a pipeline event's newest build */
	char status[24];                         /* a status GitLab has, else "" */
};
int mgl_hook_init(void);
/* Reads a pipeline or job event (doc/user/project/integrations/webhook_events.md): 0
 * (kind OTHER for any other event), -EINVAL when it is not JSON or lacks the ids and a
 * known status. */
int mgl_hook_parse(const char *body, size_t n, struct mgl_hook_event *ev);
/* POST /api/v1/gitlab/webhook: X-Gitlab-Token checked against the project's hook. */
void mgl_webhook_route(struct hub_req *req, struct hub_resp *resp);
/* At a project's first launch by a maintainer: registers the service's hook on GitLab
 * with the caller's token. Failures leave polling alone. */
void mgl_hook_ensure(const struct hub_project *p, const char *tok, const char *base_url);
void mgl_usage(struct hub_req *req, struct hub_resp *resp, const char *ns_path);

#endif
