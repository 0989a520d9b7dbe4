/* GitLab's GraphQL API for what REST cannot say in bulk: the sizes and LFS ids of many
 * paths of one revision in one request (see gl.h). Schema: GitLab's
 * app/graphql/types/repository/blob_type.rb (size, rawSize: BigInt, serialized as
 * strings; lfsOid: String, null for a blob that is no LFS pointer; oid: String!) and
 * app/graphql/resolvers/blobs_resolver.rb (a missing path is left out of nodes). Limits:
 * doc/api/graphql/index.md (complexity 250 authenticated; 100 nodes a page), so a
 * request carries at most GL_GQL_PATHS paths. */
#include "gl_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#define GL_GQL_BODY_MAX ((size_t)1 << 20)

static const char gl_gql_blobs_query[] =
    "query($fullPath: ID!, $ref: String!, $paths: [String!]!) { project(fullPath: $fullPath) "
    "{ repository { blobs(ref: $ref, paths: $paths) { nodes { path oid size rawSize lfsOid "
    "} } } } }";

/* A BigInt as GitLab serializes it (a decimal string), or a plain integer. */
static int gl_gql_size(const json_t *v, int64_t *out)
{
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return -EIO;
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end;
		unsigned long long n;

		if (!*s || *s == '-' || strlen(s) > 19)
			return -EIO;
		errno = 0;
		n = strtoull(s, &end, 10);
		if (*end || errno || n > INT64_MAX)
			return -EIO;
		*out = (int64_t)n;
		return 0;
	}
	return -EIO;
}

bool gl_graphql_supported(struct gl *g)
{
	return !__atomic_load_n(&g->no_graphql, __ATOMIC_RELAXED);
}

int gl_blobs_info(struct gl *g, const char *project_path, const char *ref, const char *const *paths,
                  size_t n, struct gl_blob_info *out)
{
	json_t *req = NULL, *vars, *arr, *resp = NULL, *nodes, *node;
	char *body = NULL, *url = NULL;
	struct gl_req rq;
	size_t i;
	int r;

	if (!project_path || !path_is_safe(project_path, 1024) || !ref ||
	    !hash_is_hex(ref, HASH_SHA1_HEX) || n == 0 || n > GL_GQL_PATHS)
		return -EINVAL;
	if (!gl_graphql_supported(g))
		return -ENOTSUP;
	for (i = 0; i < n; i++) {
		if (!paths[i] || !path_is_safe(paths[i], 4095))
			return -EINVAL;
		memset(&out[i], 0, sizeof(out[i]));
		out[i].size = out[i].raw_size = -1;
	}
	arr = json_array();
	vars = json_pack("{s:s, s:s, s:o}", "fullPath", project_path, "ref", ref, "paths", arr);
	if (!vars)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		if (json_array_append_new(arr, json_string(paths[i])) < 0) {
			json_decref(vars);
			return -ENOMEM;
		}
	req = json_pack("{s:s, s:o}", "query", gl_gql_blobs_query, "variables", vars);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body)
		return -ENOMEM;
	if (asprintf(&url, "%s/api/graphql", g->server) < 0) {
		free(body);
		return -ENOMEM;
	}
	gl_req_init(&rq, "POST", url);
	buf_init(&rq.body, GL_GQL_BODY_MAX);
	rq.post = body;
	rq.content_type = "Accept: application/json";
	r = gl_perform(g, &rq);
	if (r == 0)
		r = gl_parse(&rq, &resp);
	if (r == -ENOENT || (r == -EINVAL && rq.status != 422) || r == -EOPNOTSUPP) {
		/* no GraphQL endpoint here (an older or trimmed server): HEAD per file */
		log_info("GraphQL: %s answers %ld; sizes come from the files API", g->server,
		         rq.status);
		__atomic_store_n(&g->no_graphql, true, __ATOMIC_RELAXED);
		r = -ENOTSUP;
	}
	gl_req_free(&rq);
	free(body);
	free(url);
	if (r < 0)
		goto out;
	if (json_array_size(json_object_get(resp, "errors"))) {
		const char *msg =
		    jsonx_str(json_array_get(json_object_get(resp, "errors"), 0), "message");

		log_warn("GraphQL blobs of %s: %.200s", project_path, msg ? msg : "error");
		r = -EIO;
		goto out;
	}
	{
		json_t *project = json_object_get(json_object_get(resp, "data"), "project");

		if (json_is_null(project) || !project) {
			r = -ENOENT; /* no such project for this user, as GitLab answers */
			goto out;
		}
		nodes = json_object_get(
		    json_object_get(json_object_get(project, "repository"), "blobs"), "nodes");
	}
	if (!json_is_array(nodes) || json_array_size(nodes) > n) {
		r = -EIO;
		goto out;
	}
	json_array_foreach(nodes, i, node)
	{
		const char *path = jsonx_str(node, "path"), *oid = jsonx_str(node, "oid");
		const json_t *lfs = json_object_get(node, "lfsOid");
		struct gl_blob_info *b = NULL;
		int64_t size, raw = -1;

		if (!path || !oid || !hash_is_hex(oid, HASH_SHA1_HEX) ||
		    gl_gql_size(json_object_get(node, "size"), &size) < 0) {
			r = -EIO;
			goto out;
		}
		for (size_t k = 0; k < n; k++)
			if (!out[k].found && strcmp(paths[k], path) == 0) {
				b = &out[k];
				break;
			}
		if (!b)
			continue; /* a path we did not ask for (or twice): ignore it */
		if (!json_is_null(json_object_get(node, "rawSize")) &&
		    gl_gql_size(json_object_get(node, "rawSize"), &raw) < 0) {
			r = -EIO;
			goto out;
		}
		b->found = true;
		memcpy(b->oid, oid, 41);
		b->size = size;
		b->raw_size = raw;
		if (json_is_string(lfs)) {
			if (!hash_is_hex(json_string_value(lfs), HASH_SHA256_HEX)) {
				r = -EIO;
				goto out;
			}
			b->lfs = true;
			memcpy(b->lfs_oid, json_string_value(lfs), 65);
		} else if (lfs && !json_is_null(lfs)) {
			r = -EIO;
			goto out;
		}
	}
	r = 0;
out:
	json_decref(resp);
	return r;
}
