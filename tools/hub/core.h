/* reef-hub core internals shared by main.c, db.c, server.c, api.c and git.c.
 * Route modules use only hub.h. */
#ifndef REEF_HUB_CORE_H
#define REEF_HUB_CORE_H

#include "hub.h"

#define HUB_SCHEMA_VERSION  1
#define HUB_TOKEN_PREFIX    "glpat-"
#define HUB_MAX_SPOOL       ((uint64_t)4 << 30) /* git request bodies spooled to disk */
#define HUB_MAX_NAME        255
#define HUB_MAX_GROUP_DEPTH 21 /* a top-level group and 20 levels of subgroups */

/* Token scopes, a bit set stored as a comma list. */
enum hub_scope {
	HUB_SCOPE_API = 1 << 0,
	HUB_SCOPE_READ_API = 1 << 1,
	HUB_SCOPE_READ_USER = 1 << 2,
	HUB_SCOPE_READ_REPOSITORY = 1 << 3,
	HUB_SCOPE_WRITE_REPOSITORY = 1 << 4,
	HUB_SCOPE_SUDO = 1 << 5,
	HUB_SCOPE_ADMIN_MODE = 1 << 6,
};

/* --- db.c --- */

/* Opens DIR/hub.db (creating the schema when create is set) into hub->db. */
int hub_db_open(struct hub *hub, const char *dir, bool create);
void hub_db_close(struct hub *hub);
/* Maps an SQLite result code to a negative errno. */
int hub_db_err(int rc);

int hub_user_by_name(struct hub *hub, const char *username, struct hub_user *out);
int hub_user_by_id(struct hub *hub, int64_t id, struct hub_user *out);
/* Resolves a token: 0 with the user and its scope bits, -EACCES when unknown, expired
 * or revoked. */
int hub_user_by_token(struct hub *hub, const char *token, struct hub_user *out, unsigned *scopes);
int hub_user_add(struct hub *hub, const char *username, const char *name, const char *email,
                 bool admin, int64_t *id);
/* Creates a token for the user and writes it (NUL-terminated) into out. */
int hub_token_create(struct hub *hub, int64_t user_id, const char *name, const char *expires,
                     unsigned scopes, char out[64]);
/* Parses "api,read_api"; -EINVAL on an unknown scope. */
int hub_scopes_parse(const char *s, unsigned *out);
void hub_scopes_format(unsigned scopes, struct buf *out);

/* Loads a project by id or by full path ("grp/sub/name"). -ENOENT when missing. */
int hub_project_load(struct hub *hub, const char *id_or_path, struct hub_project *out);
/* The caller's effective access level on the project (admins count as owners). */
enum hub_access hub_project_access(struct hub *hub, const struct hub_project *p,
                                   const struct hub_user *user);
/* The member level only (no admin bonus), as shown in permissions.project_access. */
enum hub_access hub_project_member_level(struct hub *hub, const struct hub_project *p,
                                         const struct hub_user *user);
/* True when the user may see the project (visibility, membership, admin). */
bool hub_project_visible(struct hub *hub, const struct hub_project *p, const struct hub_user *user);
/* Creates a project (repository included) in namespace ns_id; the creator becomes its
 * owner. -EEXIST when the path is taken, -EINVAL for bad names. */
int hub_project_create(struct hub *hub, int64_t ns_id, const char *name, const char *path,
                       const char *description, const char *visibility, int64_t owner_id,
                       int64_t *id);
/* Finds or creates the group namespaces of "a/b/c" (creator becomes owner of new ones). */
int hub_namespace_ensure(struct hub *hub, const char *full_path, int64_t creator_id,
                         int64_t *ns_id);
int hub_namespace_of_user(struct hub *hub, int64_t user_id, int64_t *ns_id);
int hub_member_set(struct hub *hub, int64_t project_id, int64_t user_id, int level);
/* Parses guest|reporter|developer|maintainer|owner or 10..50. */
int hub_access_parse(const char *s);
/* A project or namespace path segment GitLab would accept. */
bool hub_path_valid(const char *s);
/* snprintf into a path buffer: 0, or -ENAMETOOLONG when it did not fit. */
int hub_pathf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The repository directory of a project id: DIR/repos/<id>.git */
void hub_repo_dir(const struct hub *hub, int64_t id, char out[PATH_MAX]);

/* --- api.c --- */

/* JSON for a project as GitLab shows it. */
json_t *hub_project_json(struct hub_req *req, const struct hub_project *p, bool simple);
json_t *hub_user_json(const struct hub *hub, const struct hub_user *u, bool full);
/* Handles /api/v4/...; rest is the path after "/api/v4". */
void hub_api_route(struct hub_req *req, struct hub_resp *resp, const char *rest);

/* --- graphql.c --- */

/* Handles /api/graphql (GET or POST) with its own authentication, as GitLab's
 * GraphqlController does. */
void hub_graphql_route(struct hub_req *req, struct hub_resp *resp);

/* --- server.c --- */

/* GitLab's body for an unknown route: 404 {"error":"404 Not Found"}. */
void hub_resp_not_found(struct hub_resp *resp);
/* A request outside any connection (no headers), for a raw request-target such as
 * "/api/v4/projects?page=2"; its response is hub_req_resp(). Used by tests and
 * internal callers. */
struct hub_req *hub_req_new(struct hub *hub, const char *method, const char *uri);
struct hub_resp *hub_req_resp(struct hub_req *req);
void hub_req_free(struct hub_req *req);
int hub_serve(struct hub *hub, const char *listen, bool allow_remote);

#endif
