/* Which routes a CI job token may authenticate, as GitLab's "Job token access" table
 * lists them (doc/ci/jobs/ci_job_token.md; in GitLab's code, the routes carrying
 * `route_setting :authentication, job_token_allowed: true`). On any other route GitLab
 * ignores the job token (lib/gitlab/auth/auth_finders.rb, find_user_from_job_token): the
 * request goes on as anonymous. */
#ifndef REEF_HUB_AUTHZ_H
#define REEF_HUB_AUTHZ_H

#include <stdbool.h>

/* path: the request path as received ("/api/v4/projects/5/jobs/7/artifacts"). */
bool hub_authz_job_route(const char *method, const char *path);

/* True for the Files API's routes (/api/v4/projects/:id/repository/files/...), which
 * GitLab also opens to read_repository tokens for GET and HEAD (lib/api/files.rb:
 * allow_access_with_scope :read_repository). No other REST route does. */
bool hub_authz_files_route(const char *path);

#endif
