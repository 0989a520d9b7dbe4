/* Git LFS: the batch API and the download action it names (see gl.h). */
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

/* A header from a batch response: a token name and a value without line breaks. */
static int gl_lfs_header(const char *name, const char *value, char **out)
{
	size_t nl = strlen(name);

	if (nl == 0 || nl > 128 || strlen(value) > GL_HDR_MAX)
		return -EIO;
	for (size_t i = 0; i < nl; i++)
		if (!(name[i] == '-' || name[i] == '_' || (name[i] >= '0' && name[i] <= '9') ||
		      ((name[i] | 0x20) >= 'a' && (name[i] | 0x20) <= 'z')))
			return -EIO;
	if (strpbrk(value, "\r\n"))
		return -EIO;
	return asprintf(out, "%s: %s", name, value) < 0 ? -ENOMEM : 0;
}

int gl_lfs_target(struct gl *g, const char *project_path, const char *oid, uint64_t size,
                  struct gl_target *out)
{
	char *enc = NULL, *url = NULL, *body = NULL;
	json_t *resp = NULL, *obj, *err, *dl, *hdrs;
	const char *href, *key;
	json_t *val;
	struct gl_req rq;
	int r;

	memset(out, 0, sizeof(*out));
	if (!project_path || !path_is_safe(project_path, 1024) || !oid ||
	    !hash_is_hex(oid, HASH_SHA256_HEX))
		return -EINVAL;
	enc = gl_path_enc(project_path);
	if (!enc)
		return -ENAMETOOLONG;
	if (asprintf(&url, "%s/%s.git/info/lfs/objects/batch", g->server, enc) < 0 ||
	    asprintf(&body,
	             "{\"operation\":\"download\",\"transfers\":[\"basic\"],"
	             "\"objects\":[{\"oid\":\"%s\",\"size\":%" PRIu64 "}]}",
	             oid, size) < 0) {
		url = body = NULL;
		free(enc);
		return -ENOMEM;
	}
	free(enc);
	gl_req_init(&rq, "POST", url);
	buf_init(&rq.body, GL_LFS_JSON_MAX);
	rq.post = body;
	rq.content_type = "Accept: application/vnd.git-lfs+json";
	rq.basic = true;
	r = gl_perform(g, &rq);
	if (r == 0)
		r = gl_parse(&rq, &resp);
	gl_req_free(&rq);
	if (r < 0)
		goto out;
	obj = json_array_get(json_object_get(resp, "objects"), 0);
	if (!json_is_object(obj) || !jsonx_str(obj, "oid") || strcmp(jsonx_str(obj, "oid"), oid)) {
		log_warn("LFS batch for %.12s: no entry for the object asked", oid);
		r = -EIO;
		goto out;
	}
	err = json_object_get(obj, "error");
	if (err) {
		long code = (long)jsonx_int(err, "code", 500);

		r = code == 404 || code == 410 ? -ENOENT : err_from_http(code);
		if (r == 0)
			r = -EIO;
		log_warn("LFS object %.12s: server error %ld: %.200s", oid, code,
		         jsonx_str(err, "message") ? jsonx_str(err, "message") : "");
		goto out;
	}
	dl = json_object_get(json_object_get(obj, "actions"), "download");
	href = jsonx_str(dl, "href");
	if (!href || strlen(href) > GL_URL_MAX ||
	    (strncmp(href, "http://", 7) != 0 && strncmp(href, "https://", 8) != 0)) {
		log_warn("LFS object %.12s: no usable download href", oid);
		r = -EIO;
		goto out;
	}
	/* an href elsewhere (object storage) would get headers meant for our server:
	 * only our own server's hrefs are followed */
	if (!gl_same_origin(g, href)) {
		log_warn("LFS object %.12s: download href on another server refused", oid);
		r = -EIO;
		goto out;
	}
	out->url = strdup(href);
	if (!out->url) {
		r = -ENOMEM;
		goto out;
	}
	hdrs = json_object_get(dl, "header");
	if (json_is_object(hdrs) && json_object_size(hdrs)) {
		if (json_object_size(hdrs) > GL_LFS_HEADERS) {
			r = -EIO;
			goto out;
		}
		out->headers = calloc(json_object_size(hdrs), sizeof(char *));
		if (!out->headers) {
			r = -ENOMEM;
			goto out;
		}
		json_object_foreach(hdrs, key, val)
		{
			if (!json_is_string(val)) {
				r = -EIO;
				goto out;
			}
			r = gl_lfs_header(key, json_string_value(val),
			                  &out->headers[out->nheaders]);
			if (r < 0)
				goto out;
			out->nheaders++;
		}
	}
	out->basic = true;
	r = 0;
out:
	if (r < 0)
		gl_target_free(out);
	json_decref(resp);
	free(url);
	free(body);
	return r;
}
