/* The CI job token's reach (authz.h). Of GitLab's list, the routes reef-hub has:
 * Branches API GET /projects/:id/repository/branches, Commits API GET
 * /projects/:id/repository/commits/:sha, Files API GET
 * /projects/:id/repository/files/:file_path/raw, Tags API GET /projects/:id/repository/tags,
 * every Job artifacts API route, POST /projects/:id/trigger/pipeline and GET /job (the
 * token's own job: lib/api/ci/jobs.rb, job_token_allowed). Pipelines, other jobs,
 * traces, project settings, members and the management API are not reachable with a
 * job token. */
#include "authz.h"

#include <string.h>

/* One path segment (no '/') at *p; advances past it. */
static bool seg(const char **p)
{
	size_t n = strcspn(*p, "/");

	if (n == 0)
		return false;
	*p += n;
	return true;
}

static bool lit(const char **p, const char *s)
{
	size_t n = strlen(s);

	if (strncmp(*p, s, n) != 0)
		return false;
	*p += n;
	return true;
}

bool hub_authz_job_route(const char *method, const char *path)
{
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	const char *p = path, *q;

	if (!strcmp(path, "/api/v4/job"))
		return get;
	if (!lit(&p, "/api/v4/projects/") || !seg(&p) || *p != '/')
		return false;
	p++;
	if (!strcmp(p, "trigger/pipeline"))
		return !strcmp(method, "POST");
	if (!get)
		return false;
	q = p;
	if (lit(&q, "repository/")) {
		if (!strcmp(q, "branches") || !strcmp(q, "tags"))
			return true;
		if (lit(&q, "commits/"))
			return seg(&q) && *q == '\0';
		if (lit(&q, "files/"))
			return seg(&q) && !strcmp(q, "/raw");
		return false;
	}
	/* Job artifacts API: jobs/:job_id/artifacts[/:artifact_path],
	 * jobs/artifacts/:ref_name/download, jobs/artifacts/:ref_name/raw/:artifact_path */
	q = p;
	if (!lit(&q, "jobs/"))
		return false;
	if (lit(&q, "artifacts/"))
		return seg(&q) && (!strcmp(q, "/download") || !strncmp(q, "/raw/", 5));
	return seg(&q) && (!strcmp(q, "/artifacts") || !strncmp(q, "/artifacts/", 11));
}

bool hub_authz_files_route(const char *path)
{
	const char *p = path;

	return lit(&p, "/api/v4/projects/") && seg(&p) && lit(&p, "/repository/files/") && seg(&p);
}
