/* The GitLab client of the management role (`reef-hub serve --gitlab URL`): REST v4
 * calls to that GitLab with the caller's own token, over libcurl. The token is sent
 * only to the configured GitLab, as `Authorization: Bearer` (GitLab accepts personal,
 * project, group and OAuth tokens there: gitlabhq lib/gitlab/auth/auth_finders.rb),
 * never logged and never stored. Bodies are capped; every call has a deadline. */
#ifndef REEF_HUB_GLC_H
#define REEF_HUB_GLC_H

#include <jansson.h>
#include <stddef.h>

#include "reef/buf.h"

#define GLC_MAX_BODY ((size_t)64 << 20) /* raw files of a processor's code */
#define GLC_MAX_JSON ((size_t)8 << 20)

/* Sets GitLab's base URL (http(s)://host[:port][/prefix], no trailing '/'). 0 or -EINVAL. */
int glc_init(const char *base_url);
/* The base URL given to glc_init, "" before. */
const char *glc_base(void);

/* One call: method and path under /api/v4 (already percent-encoded, with its query),
 * an optional JSON body. *status gets the HTTP status (0 when no answer came: the
 * outcome is unknown), *out (optional) the parsed JSON answer, raw (optional) the bytes
 * instead. 0 when an answer came (any status), or a negative errno for no answer or an
 * answer over the cap or not JSON. */
int glc_call(const char *method, const char *path, const char *token, const json_t *body,
             long *status, json_t **out, struct buf *raw);
/* A GET with a CI job token (header JOB-TOKEN) instead of a user's token: how the
 * service asks GitLab which job a reef-epf callback comes from (GET /job). */
int glc_call_job(const char *path, const char *job_token, long *status, json_t **out);

#endif
