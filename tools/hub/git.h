/* git over smart HTTP: /<namespace>/<project>.git/{info/refs,git-upload-pack,
 * git-receive-pack}, served by running `git http-backend` as a CGI. */
#ifndef REEF_HUB_GIT_H
#define REEF_HUB_GIT_H

#include "core.h"

struct MHD_Response;
struct hub_git;

/* True when the raw path names a smart HTTP endpoint of some project. */
bool hub_git_match(const char *path);
/* Authenticates and authorizes the request from its headers. 0: go on (the body, if any,
 * is spooled with hub_git_body); 1: resp holds the refusal to send. */
int hub_git_start(struct hub_req *req, struct hub_resp *resp, const char *path, const char *query,
                  struct hub_git **out);
/* Spools request body bytes; -EFBIG over HUB_MAX_SPOOL. */
int hub_git_body(struct hub_git *g, const void *data, size_t len);
/* Runs http-backend. On success *mr streams its output and owns *g (set to NULL);
 * otherwise resp holds an error and a negative errno is returned. */
int hub_git_finish(struct hub_req *req, struct hub_resp *resp, struct hub_git **g,
                   struct MHD_Response **mr, int *status);
void hub_git_free(struct hub_git *g);

/* Basic (password = token, user name ignored) or Bearer credentials of a git request:
 * 0 anonymous, 1 authenticated, -EACCES for credentials that are not valid. */
int hub_auth_basic(struct hub_req *req, struct hub_user *user, unsigned *scopes);
/* A CI job token: 1 with the pipeline's user (req->user, req->job_project_id set), or
 * -EACCES when no running job has it. */
int hub_auth_job_token(struct hub_req *req, const char *token, struct hub_user *user,
                       unsigned *scopes);

#endif
