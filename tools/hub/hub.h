/* reef-hub internal interface: the contract between the server core (server.c, auth,
 * db, projects, git over HTTP) and the route modules (repo.c: repository routes).
 * Nothing outside tools/hub includes this. */
#ifndef REEF_HUB_H
#define REEF_HUB_H

#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/buf.h"

struct MHD_Connection;

/* GitLab access levels. */
enum hub_access {
	HUB_ACCESS_NONE = 0,
	HUB_ACCESS_GUEST = 10,
	HUB_ACCESS_REPORTER = 20,
	HUB_ACCESS_DEVELOPER = 30,
	HUB_ACCESS_MAINTAINER = 40,
	HUB_ACCESS_OWNER = 50,
};

#define HUB_MAX_BODY     ((size_t)16 << 20) /* API request bodies */
#define HUB_MAX_PATH     4096               /* decoded file paths */
#define HUB_MAX_PER_PAGE 100

struct hub {
	char dir[PATH_MAX]; /* data directory: hub.db, repos/ */
	char base_url[256]; /* external base URL without trailing '/', e.g. http://127.0.0.1:8080 */
	sqlite3 *db;        /* serialized mode; shared by all connection threads */
	/* Connection limits of `serve` (0: the defaults below) */
	unsigned max_conns;        /* open connections at once */
	unsigned max_conns_per_ip; /* of them from one client address */
	unsigned header_timeout;   /* seconds a connection may wait for a request's headers */
	/* The management role (`serve --gitlab URL`): /api/v1 only, beside this GitLab */
	char gitlab_url[512];
	/* `serve --allow-local-webhooks`: project hooks may name loopback and private
	 * addresses (GitLab's admin setting "Allow requests to the local network from
	 * webhooks and integrations", off by default) */
	bool allow_local_webhooks;
};

#define HUB_DEFAULT_MAX_CONNS        4096
#define HUB_DEFAULT_MAX_CONNS_PER_IP 256
#define HUB_DEFAULT_HEADER_TIMEOUT   30 /* Puma's first_data_timeout */

struct hub_user {
	int64_t id;
	char username[256];
	char name[256];
	char email[256];
	bool is_admin;
};

struct hub_project {
	int64_t id;
	char name[256];
	char path[256];
	char path_with_namespace[1024];
	int64_t namespace_id;
	char visibility[16];      /* private | internal | public */
	char repo_path[PATH_MAX]; /* absolute path of the bare repository */
	enum hub_access access;   /* the caller's effective access (0 when only public/internal) */
	/* set only in the management role, from GitLab's project */
	char default_branch[256];
	char ci_config_path[256]; /* the file GitLab's pipelines read (".gitlab-ci.yml") */
};

struct hub_req {
	struct hub *hub;
	struct MHD_Connection *conn;
	const char *method;          /* "GET", "HEAD", "POST", "PUT", "DELETE" */
	const char *url;             /* path as received, still percent-encoded, no query */
	struct buf body;             /* request body, capped */
	const struct hub_user *user; /* NULL when anonymous */
	int64_t job_project_id;      /* > 0: authenticated by a CI job token, valid for this
	                                project only (hub_ci.h) */
	int64_t job_id;              /* that token's job */
};

struct hub_header {
	char *name;
	char *value;
};

struct hub_resp {
	int status;
	char content_type[128];
	struct buf body;
	struct hub_header headers[24];
	size_t n_headers;
	int fd; /* >= 0: the body is this file from fd_offset, fd_len bytes; closed after */
	uint64_t fd_offset;
	/* With fd < 0 and an empty body, a HEAD answer: the length its GET would send (the
	 * body itself is never read) */
	uint64_t fd_len;
};

/* --- request accessors (implemented by the core) --- */

/* A decoded query parameter, or NULL. */
const char *hub_req_query(const struct hub_req *req, const char *key);
/* A request header (case-insensitive), or NULL. */
const char *hub_req_header(const struct hub_req *req, const char *name);
/* Parses the request body as JSON (application/json) or as form/query parameters
 * (application/x-www-form-urlencoded) into *out (an object). 0 or -EINVAL. */
int hub_req_params(const struct hub_req *req, json_t **out);
/* Builds base_url + url + the original query with `key` set to `value` (added or
 * replaced; value NULL removes it). Used for pagination Link headers. */
int hub_req_link(const struct hub_req *req, const char *key, const char *value, struct buf *out);

/* --- responses (implemented by the core) --- */

/* Sets a JSON body with Content-Type exactly "application/json". Steals v. */
void hub_resp_json(struct hub_resp *resp, int status, json_t *v);
/* {"message": msg} with the given status, e.g. (404, "404 Project Not Found"). */
void hub_resp_error(struct hub_resp *resp, int status, const char *msg);
/* {"message":"400 (Bad request) \"<param>\" not given"} */
void hub_resp_missing(struct hub_resp *resp, const char *param);
void hub_resp_raw(struct hub_resp *resp, int status, const char *ctype, const void *data,
                  size_t len);
void hub_resp_header(struct hub_resp *resp, const char *name, const char *value);
/* Offset pagination over `total` items: reads page/per_page, sets X-Page, X-Per-Page,
 * X-Next-Page, X-Prev-Page, X-Total, X-Total-Pages and Link; returns the slice. */
void hub_paginate(const struct hub_req *req, struct hub_resp *resp, size_t total, size_t *offset,
                  size_t *limit);

/* --- time and formatting --- */

/* ISO 8601 in UTC with milliseconds, GitLab style: 2024-01-02T03:04:05.000Z */
void hub_time_iso(int64_t unix_seconds, char out[32]);
/* A git time with its offset, as GitLab shows commit dates: 2024-01-02T03:04:05.000+01:00 */
void hub_time_git(int64_t unix_seconds, int offset_minutes, char out[40]);

/* --- repository routes (implemented by repo.c) --- */

/* Handles /api/v4/projects/:id/repository/<rest> (rest still percent-encoded, no
 * leading '/'). The core has already authenticated the caller and checked that the
 * project is visible (at least read access); writes need HUB_ACCESS_DEVELOPER. */
void hub_repo_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                    const char *rest);
/* Fields of a project that come from its repository: default_branch (NULL when the
 * repository is empty) and empty_repo. */
void hub_repo_project_fields(const struct hub_project *p, json_t *project_json);

#endif
