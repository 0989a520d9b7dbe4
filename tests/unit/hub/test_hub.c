/* Unit tests of reef-hub's core: names and levels, tokens, the access model, request
 * parsing, pagination headers and the API's refusals, over a real SQLite store in a
 * temporary directory. */
#include <errno.h>
#include <ftw.h>
#include <git2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "core.h"
#include "reef/jsonx.h"

static const char *header(struct hub_resp *resp, const char *name)
{
	for (size_t i = 0; i < resp->n_headers; i++)
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	return NULL;
}

static void test_names(void)
{
	CHECK(hub_path_valid("proj"));
	CHECK(hub_path_valid("my-data.set_2"));
	CHECK(hub_path_valid("_x"));
	CHECK(!hub_path_valid(""));
	CHECK(!hub_path_valid(".."));
	CHECK(!hub_path_valid("."));
	CHECK(!hub_path_valid("-x"));
	CHECK(!hub_path_valid("a/b"));
	CHECK(!hub_path_valid("a b"));
	CHECK(!hub_path_valid("x.git"));
	CHECK(!hub_path_valid("x.atom"));
	CHECK(!hub_path_valid("a..b"));
	CHECK(!hub_path_valid("a."));
	CHECK(!hub_path_valid("caf\xc3\xa9"));

	CHECK_EQ_INT(hub_access_parse("guest"), 10);
	CHECK_EQ_INT(hub_access_parse("Maintainer"), 40);
	CHECK_EQ_INT(hub_access_parse("50"), 50);
	CHECK_EQ_INT(hub_access_parse("35"), -EINVAL);
	CHECK_EQ_INT(hub_access_parse("admin"), -EINVAL);
	CHECK_EQ_INT(hub_access_parse(""), -EINVAL);
}

static void test_scopes(void)
{
	struct buf b = BUF_INIT(256);
	unsigned s = 0;

	CHECK_EQ_INT(hub_scopes_parse("api,read_repository", &s), 0);
	CHECK_EQ_INT(s, HUB_SCOPE_API | HUB_SCOPE_READ_REPOSITORY);
	hub_scopes_format(s, &b);
	CHECK_EQ_STR(b.data, "api,read_repository");
	CHECK_EQ_INT(hub_scopes_parse("api,nope", &s), -EINVAL);
	CHECK_EQ_INT(hub_scopes_parse("", &s), -EINVAL);
	buf_free(&b);
}

static void test_time(void)
{
	char iso[32], gt[40];

	hub_time_iso(0, iso);
	CHECK_EQ_STR(iso, "1970-01-01T00:00:00.000Z");
	hub_time_iso(1704164645, iso);
	CHECK_EQ_STR(iso, "2024-01-02T03:04:05.000Z");
	hub_time_git(1704164645, 60, gt);
	CHECK_EQ_STR(gt, "2024-01-02T04:04:05.000+01:00");
	hub_time_git(1704164645, -330, gt);
	CHECK_EQ_STR(gt, "2024-01-01T21:34:05.000-05:30");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void make_hub(struct hub *hub, char *dir)
{
	char sub[PATH_MAX];

	CHECK(mkdtemp(dir) != NULL);
	snprintf(sub, sizeof(sub), "%s/repos", dir);
	CHECK(mkdir(sub, 0700) == 0);
	memset(hub, 0, sizeof(*hub));
	CHECK_EQ_INT(hub_db_open(hub, dir, true), 0);
	snprintf(hub->base_url, sizeof(hub->base_url), "http://hub.test");
}

static void test_tokens(struct hub *hub)
{
	struct hub_user u;
	unsigned scopes = 0;
	char tok[64], tok2[64], old[64];
	int64_t id;

	CHECK_EQ_INT(hub_user_add(hub, "alice", "Alice", NULL, false, &id), 0);
	CHECK_EQ_INT(hub_user_add(hub, "ALICE", NULL, NULL, false, NULL), -EEXIST);
	CHECK_EQ_INT(hub_user_add(hub, "../x", NULL, NULL, false, NULL), -EINVAL);
	CHECK_EQ_INT(hub_user_by_name(hub, "alice", &u), 0);
	CHECK_EQ_STR(u.email, "alice@reef.invalid");
	CHECK_EQ_STR(u.name, "Alice");

	CHECK_EQ_INT(hub_token_create(hub, id, "t", NULL, HUB_SCOPE_READ_API, tok), 0);
	CHECK(strncmp(tok, "glpat-", 6) == 0 && strlen(tok) >= 26);
	CHECK_EQ_INT(hub_token_create(hub, id, "t", NULL, HUB_SCOPE_API, tok2), 0);
	CHECK(strcmp(tok, tok2) != 0);
	CHECK_EQ_INT(hub_user_by_token(hub, tok, &u, &scopes), 0);
	CHECK_EQ_INT(u.id, id);
	CHECK_EQ_INT(scopes, HUB_SCOPE_READ_API);
	CHECK_EQ_INT(hub_user_by_token(hub, "glpat-nope", &u, &scopes), -EACCES);
	CHECK_EQ_INT(hub_user_by_token(hub, "", &u, &scopes), -EACCES);
	/* Expired on its date (GitLab: valid until the day before), and revoked. */
	CHECK_EQ_INT(hub_token_create(hub, id, "old", "2000-01-01", HUB_SCOPE_API, old), 0);
	CHECK_EQ_INT(hub_user_by_token(hub, old, &u, &scopes), -EACCES);
	CHECK_EQ_INT(sqlite3_exec(hub->db, "UPDATE tokens SET revoked = 1 WHERE name = 't'", NULL,
	                          NULL, NULL),
	             SQLITE_OK);
	CHECK_EQ_INT(hub_user_by_token(hub, tok2, &u, &scopes), -EACCES);
}

static int64_t mkproject(struct hub *hub, const char *ns, const char *path, const char *vis,
                         const char *owner)
{
	struct hub_user u;
	int64_t nsid, id;

	CHECK_EQ_INT(hub_user_by_name(hub, owner, &u), 0);
	CHECK_EQ_INT(hub_namespace_ensure(hub, ns, u.id, &nsid), 0);
	CHECK_EQ_INT(hub_project_create(hub, nsid, path, path, NULL, vis, u.id, &id), 0);
	return id;
}

static void test_access(struct hub *hub)
{
	struct hub_user alice, bob, carol, root;
	struct hub_project p, q, pub, inner;
	char repo[PATH_MAX], id[32];
	int64_t nsid, pid;

	CHECK_EQ_INT(hub_user_add(hub, "bob", NULL, NULL, false, NULL), 0);
	CHECK_EQ_INT(hub_user_add(hub, "carol", NULL, NULL, false, NULL), 0);
	CHECK_EQ_INT(hub_user_add(hub, "root", NULL, NULL, true, NULL), 0);
	hub_user_by_name(hub, "alice", &alice);
	hub_user_by_name(hub, "bob", &bob);
	hub_user_by_name(hub, "carol", &carol);
	hub_user_by_name(hub, "root", &root);

	pid = mkproject(hub, "grp/sub", "proj", "private", "alice");
	CHECK_EQ_INT(hub_project_load(hub, "grp/sub/proj", &p), 0);
	CHECK_EQ_INT(p.id, pid);
	CHECK_EQ_STR(p.path_with_namespace, "grp/sub/proj");
	CHECK_EQ_INT(hub_project_load(hub, "GRP/Sub/PROJ", &q), 0); /* GitLab: case-insensitive */
	snprintf(id, sizeof(id), "%lld", (long long)pid);
	CHECK_EQ_INT(hub_project_load(hub, id, &q), 0);
	CHECK_EQ_STR(q.path_with_namespace, "grp/sub/proj");
	CHECK_EQ_INT(
	    hub_pathf(repo, sizeof(repo), "%s/repos/%lld.git/HEAD", hub->dir, (long long)pid), 0);
	CHECK(access(repo, F_OK) == 0);
	CHECK_EQ_STR(p.repo_path + strlen(p.repo_path) - 6, "/1.git");
	CHECK_EQ_INT(hub_project_load(hub, "grp/sub", &q), -ENOENT);
	CHECK_EQ_INT(hub_project_load(hub, "grp/sub/../sub/proj", &q), -ENOENT);
	CHECK_EQ_INT(hub_project_load(hub, "/grp/sub/proj", &q), -ENOENT);
	CHECK_EQ_INT(hub_project_load(hub, "99", &q), -ENOENT);
	/* Same path twice, bad names, bad visibility. */
	hub_namespace_ensure(hub, "grp/sub", alice.id, &nsid);
	CHECK_EQ_INT(hub_project_create(hub, nsid, "proj", "PROJ", NULL, "private", alice.id, NULL),
	             -EEXIST);
	CHECK_EQ_INT(hub_project_create(hub, nsid, "x", "x.git", NULL, "private", alice.id, NULL),
	             -EINVAL);
	CHECK_EQ_INT(hub_project_create(hub, nsid, "x", "x", NULL, "secret", alice.id, NULL),
	             -EINVAL);
	CHECK_EQ_INT(hub_namespace_ensure(hub, "grp/../etc", alice.id, &nsid), -EINVAL);
	CHECK_EQ_INT(hub_namespace_ensure(hub, "alice/sub", alice.id, &nsid), -EINVAL);

	/* alice created grp: owner by membership (inherited by grp/sub) and of the project. */
	CHECK_EQ_INT(hub_project_access(hub, &p, &alice), HUB_ACCESS_OWNER);
	CHECK_EQ_INT(hub_project_access(hub, &p, &bob), HUB_ACCESS_NONE);
	CHECK_EQ_INT(hub_project_access(hub, &p, NULL), HUB_ACCESS_NONE);
	CHECK_EQ_INT(hub_project_access(hub, &p, &root), HUB_ACCESS_OWNER);
	CHECK_EQ_INT(hub_project_member_level(hub, &p, &root), HUB_ACCESS_NONE);
	CHECK(hub_project_visible(hub, &p, &alice));
	CHECK(!hub_project_visible(hub, &p, &bob));
	CHECK(!hub_project_visible(hub, &p, NULL));
	CHECK(hub_project_visible(hub, &p, &root));
	CHECK_EQ_INT(hub_member_set(hub, p.id, bob.id, HUB_ACCESS_REPORTER), 0);
	CHECK(hub_project_visible(hub, &p, &bob));
	CHECK_EQ_INT(hub_project_access(hub, &p, &bob), HUB_ACCESS_REPORTER);
	CHECK_EQ_INT(hub_member_set(hub, p.id, bob.id, HUB_ACCESS_DEVELOPER), 0);
	CHECK_EQ_INT(hub_project_access(hub, &p, &bob), HUB_ACCESS_DEVELOPER);

	/* bob's project in alice's group: alice inherits, carol sees nothing. */
	mkproject(hub, "grp", "bobs", "private", "bob");
	CHECK_EQ_INT(hub_project_load(hub, "grp/bobs", &q), 0);
	CHECK_EQ_INT(hub_project_access(hub, &q, &alice), HUB_ACCESS_OWNER);
	CHECK_EQ_INT(hub_project_access(hub, &q, &bob), HUB_ACCESS_OWNER);
	CHECK(!hub_project_visible(hub, &q, &carol));

	/* Personal namespace: its owner owns every project in it. */
	mkproject(hub, "carol", "pub", "public", "alice");
	mkproject(hub, "carol", "inner", "internal", "carol");
	CHECK_EQ_INT(hub_project_load(hub, "carol/pub", &pub), 0);
	CHECK_EQ_INT(hub_project_load(hub, "carol/inner", &inner), 0);
	CHECK_EQ_INT(hub_project_access(hub, &pub, &carol), HUB_ACCESS_OWNER);
	CHECK(hub_project_visible(hub, &pub, NULL));
	CHECK(hub_project_visible(hub, &inner, &bob));
	CHECK(!hub_project_visible(hub, &inner, NULL));
	CHECK_EQ_INT(hub_project_access(hub, &inner, &bob), HUB_ACCESS_NONE);
}

static void test_request_parsing(struct hub *hub)
{
	struct hub_req *req =
	    hub_req_new(hub, "GET", "/api/v4/projects?search=a+b%21&per_page=2&bad=%00x&p%61ge=3");
	struct buf link = BUF_INIT(4096);
	json_t *params = NULL;

	CHECK(req != NULL);
	CHECK_EQ_STR(req->url, "/api/v4/projects");
	CHECK_EQ_STR(hub_req_query(req, "search"), "a b!");
	CHECK_EQ_STR(hub_req_query(req, "per_page"), "2");
	CHECK_EQ_STR(hub_req_query(req, "page"), "3");
	CHECK(hub_req_query(req, "bad") == NULL); /* an encoded NUL never reaches a route */
	CHECK(hub_req_header(req, "PRIVATE-TOKEN") == NULL);
	CHECK_EQ_INT(hub_req_link(req, "page", "4", &link), 0);
	CHECK_EQ_STR(link.data, "http://hub.test/api/v4/projects?search=a+b%21&per_page=2&bad=%00x"
	                        "&page=4");
	buf_reset(&link);
	CHECK_EQ_INT(hub_req_link(req, "search", NULL, &link), 0);
	CHECK_EQ_STR(link.data, "http://hub.test/api/v4/projects?per_page=2&bad=%00x&p%61ge=3");
	buf_free(&link);

	buf_puts(&req->body, "name=My+Proj&path=my%2Dproj&empty=");
	CHECK_EQ_INT(hub_req_params(req, &params), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(params, "name")), "My Proj");
	CHECK_EQ_STR(json_string_value(json_object_get(params, "path")), "my-proj");
	CHECK_EQ_STR(json_string_value(json_object_get(params, "search")), "a b!");
	CHECK_EQ_STR(json_string_value(json_object_get(params, "empty")), "");
	json_decref(params);
	buf_reset(&req->body);
	buf_puts(&req->body, "name=%zz");
	CHECK_EQ_INT(hub_req_params(req, &params), -EINVAL);
	hub_req_free(req);
}

static void paginate(struct hub *hub, const char *uri, size_t total, size_t *off, size_t *lim,
                     struct hub_req **out)
{
	struct hub_req *req = hub_req_new(hub, "GET", uri);

	CHECK(req != NULL);
	hub_paginate(req, hub_req_resp(req), total, off, lim);
	*out = req;
}

static void test_pagination(struct hub *hub)
{
	struct hub_req *req;
	struct hub_resp *resp;
	size_t off, lim;

	paginate(hub, "/api/v4/projects?per_page=100&page=2&simple=true", 125, &off, &lim, &req);
	resp = hub_req_resp(req);
	CHECK_EQ_INT(off, 100);
	CHECK_EQ_INT(lim, 25);
	CHECK_EQ_STR(header(resp, "X-Total"), "125");
	CHECK_EQ_STR(header(resp, "X-Total-Pages"), "2");
	CHECK_EQ_STR(header(resp, "X-Page"), "2");
	CHECK_EQ_STR(header(resp, "X-Per-Page"), "100");
	CHECK_EQ_STR(header(resp, "X-Next-Page"), "");
	CHECK_EQ_STR(header(resp, "X-Prev-Page"), "1");
	CHECK_EQ_STR(header(resp, "Link"),
	             "<http://hub.test/api/v4/projects?per_page=100&simple=true&page=1>; "
	             "rel=\"prev\", "
	             "<http://hub.test/api/v4/projects?per_page=100&simple=true&page=1>; "
	             "rel=\"first\", "
	             "<http://hub.test/api/v4/projects?per_page=100&simple=true&page=2>; "
	             "rel=\"last\"");
	hub_req_free(req);

	/* Defaults, the per_page cap, an empty list and a page past the end. */
	paginate(hub, "/x", 45, &off, &lim, &req);
	CHECK_EQ_INT(off, 0);
	CHECK_EQ_INT(lim, 20);
	CHECK_EQ_STR(header(hub_req_resp(req), "X-Next-Page"), "2");
	CHECK_EQ_STR(header(hub_req_resp(req), "X-Total-Pages"), "3");
	hub_req_free(req);
	paginate(hub, "/x?per_page=5000&page=-1", 250, &off, &lim, &req);
	CHECK_EQ_INT(off, 0);
	CHECK_EQ_INT(lim, 100);
	hub_req_free(req);
	paginate(hub, "/x", 0, &off, &lim, &req);
	CHECK_EQ_INT(lim, 0);
	CHECK_EQ_STR(header(hub_req_resp(req), "X-Total-Pages"), "1");
	hub_req_free(req);
	paginate(hub, "/x?page=9", 30, &off, &lim, &req);
	CHECK_EQ_INT(lim, 0);
	hub_req_free(req);
}

static json_t *api(struct hub *hub, const char *method, const char *uri,
                   const struct hub_user *user, int *status)
{
	struct hub_req *req = hub_req_new(hub, method, uri);
	struct hub_resp *resp;
	json_t *v = NULL;

	CHECK(req != NULL);
	req->user = user;
	resp = hub_req_resp(req);
	hub_api_route(req, resp, req->url + 7);
	*status = resp->status;
	CHECK_EQ_STR(resp->content_type, "application/json");
	CHECK_EQ_INT(jsonx_parse(&v, resp->body.data, resp->body.len, 0, 0), 0);
	hub_req_free(req);
	return v;
}

static void test_api_refusals(struct hub *hub)
{
	struct hub_user bob;
	json_t *v;
	int st;

	hub_user_by_name(hub, "bob", &bob);
	v = api(hub, "GET", "/api/v4/projects/grp%2Fsub%2Fproj", NULL, &st);
	CHECK_EQ_INT(st, 404);
	CHECK_EQ_STR(jsonx_str(v, "message"), "404 Project Not Found");
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects/grp%2Fsub%2Fproj", &bob, &st);
	CHECK_EQ_INT(st, 200);
	CHECK_EQ_STR(jsonx_str(v, "path_with_namespace"), "grp/sub/proj");
	CHECK_EQ_STR(jsonx_str(v, "http_url_to_repo"), "http://hub.test/grp/sub/proj.git");
	CHECK_EQ_STR(jsonx_str(v, "name_with_namespace"), "grp / sub / proj");
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects/%2e%2e%2Fetc", &bob, &st);
	CHECK_EQ_INT(st, 404);
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects/grp%00", &bob, &st);
	CHECK_EQ_INT(st, 400);
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects/grp/sub/proj", &bob, &st);
	CHECK_EQ_INT(st, 404);
	CHECK_EQ_STR(jsonx_str(v, "error"), "404 Not Found");
	json_decref(v);
	v = api(hub, "GET", "/api/v4/user", NULL, &st);
	CHECK_EQ_INT(st, 401);
	CHECK_EQ_STR(jsonx_str(v, "message"), "401 Unauthorized");
	json_decref(v);
	v = api(hub, "POST", "/api/v4/projects", NULL, &st);
	CHECK_EQ_INT(st, 401);
	json_decref(v);
	/* Anonymous listing: public projects only. */
	v = api(hub, "GET", "/api/v4/projects", NULL, &st);
	CHECK_EQ_INT(st, 200);
	CHECK_EQ_INT(json_array_size(v), 1);
	CHECK_EQ_STR(jsonx_str(json_array_get(v, 0), "path_with_namespace"), "carol/pub");
	json_decref(v);
	/* bob: member of grp/sub/proj, owner of grp/bobs, internal carol/inner, public. */
	v = api(hub, "GET", "/api/v4/projects?order_by=path&sort=asc", &bob, &st);
	CHECK_EQ_INT(json_array_size(v), 4);
	CHECK_EQ_STR(jsonx_str(json_array_get(v, 0), "path"), "bobs");
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects?membership=true", &bob, &st);
	CHECK_EQ_INT(json_array_size(v), 2);
	json_decref(v);
	v = api(hub, "GET", "/api/v4/projects?sort=sideways", &bob, &st);
	CHECK_EQ_INT(st, 400);
	json_decref(v);
	/* Guests of a private project see it but not its repository. */
	{
		struct hub_project p;

		hub_project_load(hub, "grp/sub/proj", &p);
		hub_member_set(hub, p.id, bob.id, HUB_ACCESS_GUEST);
		v = api(hub, "GET", "/api/v4/projects/grp%2Fsub%2Fproj/repository/tree", &bob, &st);
		CHECK_EQ_INT(st, 403);
		json_decref(v);
	}
}

int main(void)
{
	char dir[] = "/tmp/reef-hub-test-XXXXXX";
	struct hub hub;

	git_libgit2_init();
	test_names();
	test_scopes();
	test_time();
	make_hub(&hub, dir);
	test_tokens(&hub);
	test_access(&hub);
	test_request_parsing(&hub);
	test_pagination(&hub);
	test_api_refusals(&hub);
	hub_db_close(&hub);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	git_libgit2_shutdown();
	puts("hub: ok");
	return 0;
}
