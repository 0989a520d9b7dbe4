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
void mg_publish(struct hub_req *req, struct hub_resp *resp, const char *project_seg);
void mg_processors_list(struct hub_req *req, struct hub_resp *resp);
void mg_epf_route(struct hub_req *req, struct hub_resp *resp, char **seg, size_t n);
/* The pipeline's status is the launch's: called by the runner under its lock. */
void mg_on_pipeline(int64_t pipeline_id, const char *status);
void mg_usage(struct hub_req *req, struct hub_resp *resp, const char *ns_path);

#endif
