/* GitLab REST v4 routes of the repository: projects, refs, commits, trees, files and
 * blobs (see gl.h). */
#include "gl_int.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "reef/buf.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

int gl_user(struct gl *g, json_t **out)
{
	return gl_user_why(g, out, NULL, 0);
}

int gl_user_why(struct gl *g, json_t **out, char *why, size_t n)
{
	struct gl_req rq;
	char *url;
	int r = gl_url(g, &url, "user");

	*out = NULL;
	if (r < 0)
		return r;
	gl_req_init(&rq, "GET", url);
	r = gl_perform(g, &rq);
	if (r == 0 && gl_parse(&rq, out) < 0) {
		r = -EIO;
		snprintf(rq.why, sizeof(rq.why),
		         "GET /api/v4/user answered no JSON (not a GitLab?)");
	}
	if (r < 0 && why && n)
		snprintf(why, n, "%s", rq.why[0] ? rq.why : strerror(-r));
	gl_req_free(&rq);
	free(url);
	if (r == 0 && !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		r = -EIO;
	}
	return r;
}

int gl_projects_list(struct gl *g, json_t **out)
{
	char *url;
	int r = gl_url(g, &url, "projects?membership=true&simple=true&per_page=100");

	if (r < 0)
		return r;
	r = gl_get_list(g, url, out);
	free(url);
	if (r == 0 && json_array_size(*out))
		gl_note_external(g, json_array_get(*out, 0));
	return r;
}

static int gl_get_object(struct gl *g, char *url, json_t **out)
{
	int r = gl_get_json(g, url, out);

	free(url);
	if (r == 0 && !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		r = -EIO;
	}
	return r;
}

int gl_project_get(struct gl *g, const char *path_or_id, json_t **out)
{
	char *enc, *url;
	int r;

	*out = NULL;
	if (!path_or_id || !*path_or_id)
		return -EINVAL;
	enc = gl_enc(path_or_id);
	if (!enc)
		return -ENAMETOOLONG;
	r = gl_url(g, &url, "projects/%s", enc);
	free(enc);
	if (r == 0)
		r = gl_get_object(g, url, out);
	if (r == 0)
		gl_note_external(g, *out);
	return r;
}

static int gl_repo_list(struct gl *g, int64_t pid, const char *what, json_t **out)
{
	char *url;
	int r = gl_url(g, &url, "projects/%" PRId64 "/repository/%s?per_page=100", pid, what);

	if (r < 0)
		return r;
	r = gl_get_list(g, url, out);
	free(url);
	return r;
}

static int gl_repo_get(struct gl *g, int64_t pid, const char *what, const char *name,
                       const char *query, json_t **out)
{
	char *enc, *url;
	int r;

	*out = NULL;
	if (!name || !*name)
		return -EINVAL;
	enc = gl_enc(name);
	if (!enc)
		return -ENAMETOOLONG;
	r = gl_url(g, &url, "projects/%" PRId64 "/repository/%s/%s%s", pid, what, enc, query);
	free(enc);
	return r < 0 ? r : gl_get_object(g, url, out);
}

int gl_branches_list(struct gl *g, int64_t project_id, json_t **out)
{
	return gl_repo_list(g, project_id, "branches", out);
}

int gl_branch_get(struct gl *g, int64_t project_id, const char *name, json_t **out)
{
	return gl_repo_get(g, project_id, "branches", name, "", out);
}

int gl_tags_list(struct gl *g, int64_t project_id, json_t **out)
{
	return gl_repo_list(g, project_id, "tags", out);
}

int gl_tag_get(struct gl *g, int64_t project_id, const char *name, json_t **out)
{
	return gl_repo_get(g, project_id, "tags", name, "", out);
}

int gl_commit_get(struct gl *g, int64_t project_id, const char *ref, json_t **out)
{
	/* only the id is wanted: stats (additions, deletions) cost GitLab a diff of the
	 * commit (doc/api/commits.md "Get a single commit": stats, default true) */
	return gl_repo_get(g, project_id, "commits", ref, "?stats=false", out);
}

struct gl_tree_acc {
	struct tree_entry *e;
	size_t n, alloc;
};

static int gl_tree_mode(const char *mode, const char *type, uint32_t *out)
{
	static const struct {
		const char *mode, *type;
		uint32_t value;
	} modes[] = {
	    {"040000", "tree", TREE_MODE_DIR},         {"100644", "blob", TREE_MODE_FILE},
	    {"100755", "blob", TREE_MODE_EXEC},        {"120000", "blob", TREE_MODE_LINK},
	    {"160000", "commit", TREE_MODE_SUBMODULE}, {"100664", "blob", TREE_MODE_FILE},
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
		if (strcmp(mode, modes[i].mode) == 0) {
			if (strcmp(type, modes[i].type) != 0)
				return -EIO;
			*out = modes[i].value;
			return 0;
		}
	return -EIO;
}

static int gl_tree_page(void *arg, json_t *arr)
{
	struct gl_tree_acc *acc = arg;
	size_t i;
	json_t *it;

	json_array_foreach(arr, i, it)
	{
		json_t *jname = json_object_get(it, "name"), *jsize = json_object_get(it, "size");
		const char *name = json_string_value(jname), *id = jsonx_str(it, "id");
		const char *mode = jsonx_str(it, "mode"), *type = jsonx_str(it, "type");
		struct tree_entry *e;
		size_t nl;

		if (!name || !id || !mode || !type)
			return -EIO;
		nl = json_string_length(jname);
		if (nl == 0 || nl > TREE_NAME_MAX || strlen(name) != nl || strchr(name, '/') ||
		    strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
		    !hash_is_hex(id, HASH_SHA1_HEX))
			return -EIO;
		if (acc->n == acc->alloc) {
			size_t na = acc->alloc ? acc->alloc * 2 : 128;
			struct tree_entry *ne;

			if (acc->n >= GL_TREE_MAX)
				return -EIO;
			ne = realloc(acc->e, na * sizeof(*ne));
			if (!ne)
				return -ENOMEM;
			acc->e = ne;
			acc->alloc = na;
		}
		e = &acc->e[acc->n];
		memset(e, 0, sizeof(*e));
		if (gl_tree_mode(mode, type, &e->mode) < 0)
			return -EIO;
		memcpy(e->name, name, nl + 1);
		memcpy(e->oid, id, 41);
		e->size = -1;
		if (json_is_integer(jsize) && json_integer_value(jsize) >= 0 &&
		    strcmp(type, "blob") == 0)
			e->size = (int64_t)json_integer_value(jsize);
		acc->n++;
	}
	return 0;
}

int gl_tree_list(struct gl *g, int64_t project_id, const char *ref, const char *path,
                 struct tree_entry **out, size_t *n)
{
	struct gl_tree_acc acc = {0};
	char *eref = NULL, *epath = NULL, *url = NULL;
	int r;

	*out = NULL;
	*n = 0;
	if (!ref || !*ref || !path)
		return -EINVAL;
	eref = gl_enc(ref);
	epath = gl_enc(path);
	if (!eref || !epath) {
		r = -ENAMETOOLONG;
		goto out;
	}
	r = gl_url(g, &url,
	           "projects/%" PRId64 "/repository/tree?ref=%s%s%s&per_page=100&pagination=keyset",
	           project_id, eref, *path ? "&path=" : "", epath);
	if (r < 0)
		goto out;
	r = gl_get_pages(g, url, GL_TREE_MAX, gl_tree_page, &acc);
	if (r < 0)
		goto out;
	*out = acc.e;
	*n = acc.n;
	acc.e = NULL;
out:
	free(acc.e);
	free(eref);
	free(epath);
	free(url);
	return r;
}

int gl_file_head(struct gl *g, int64_t project_id, const char *ref, const char *path,
                 char blob_id[41], uint64_t *size)
{
	char *eref = NULL, *epath = NULL, *url = NULL, *end;
	struct gl_req rq;
	unsigned long long sz;
	int r;

	if (!ref || !*ref || !path || !*path)
		return -EINVAL;
	eref = gl_enc(ref);
	epath = gl_enc(path);
	if (!eref || !epath) {
		r = -ENAMETOOLONG;
		goto out;
	}
	r = gl_url(g, &url, "projects/%" PRId64 "/repository/files/%s?ref=%s", project_id, epath,
	           eref);
	if (r < 0)
		goto out;
	gl_req_init(&rq, "HEAD", url);
	r = gl_perform(g, &rq);
	if (r == 0) {
		errno = 0;
		sz = strtoull(rq.size, &end, 10);
		if (!hash_is_hex(rq.blob_id, HASH_SHA1_HEX) || !rq.size[0] || *end || errno ||
		    rq.size[0] == '-') {
			log_warn("HEAD %s: no valid X-Gitlab-Blob-Id / X-Gitlab-Size", url);
			r = -EIO;
		} else {
			memcpy(blob_id, rq.blob_id, 41);
			*size = sz;
		}
	}
	gl_req_free(&rq);
out:
	free(eref);
	free(epath);
	free(url);
	return r;
}

int gl_blob_raw(struct gl *g, int64_t project_id, const char *sha, uint64_t max,
                const struct gl_sink *sink)
{
	struct gl_req rq;
	char *url;
	int r;

	if (!sha || !hash_is_hex(sha, HASH_SHA1_HEX) || !sink || !sink->data)
		return -EINVAL;
	r = gl_url(g, &url, "projects/%" PRId64 "/repository/blobs/%s/raw", project_id, sha);
	if (r < 0)
		return r;
	gl_req_init(&rq, "GET", url);
	rq.sink = sink;
	rq.max = max;
	r = gl_perform(g, &rq);
	gl_req_free(&rq);
	free(url);
	return r;
}

int gl_blob_target(struct gl *g, int64_t project_id, const char *sha, struct gl_target *out)
{
	memset(out, 0, sizeof(*out));
	if (!sha || !hash_is_hex(sha, HASH_SHA1_HEX))
		return -EINVAL;
	return gl_url(g, &out->url, "projects/%" PRId64 "/repository/blobs/%s/raw", project_id,
	              sha);
}
