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

/* When an action stops working: the earlier of expires_in (seconds from the answer) and
 * expires_at; 0 when it names neither. */
static int64_t gl_lfs_expiry(const json_t *action, int64_t answered_ms)
{
	json_t *in = json_object_get(action, "expires_in");
	const char *at = jsonx_str(action, "expires_at");
	int64_t e = 0;

	if (json_is_integer(in) && json_integer_value(in) > 0 &&
	    json_integer_value(in) < (json_int_t)1 << 40)
		e = answered_ms + (int64_t)json_integer_value(in) * 1000;
	if (at) {
		int64_t t = time_parse_rfc3339(at);

		if (t > 0 && (e == 0 || t < e))
			e = t;
	}
	return e;
}

/* One object's download action into t: the href (moved onto our server when it is under
 * the server's external URL, see gl_external_rebase), its headers and expiry. */
static int gl_lfs_action_of(struct gl *g, const char *oid, const json_t *obj, int64_t answered_ms,
                            const char *which, struct gl_target *t)
{
	json_t *err = json_object_get(obj, "error"), *dl, *hdrs, *val;
	const char *href, *key;
	char *moved = NULL;
	int r;

	if (err) {
		long code = (long)jsonx_int(err, "code", 500);

		r = code == 404 || code == 410 ? -ENOENT : err_from_http(code);
		if (r == 0)
			r = -EIO;
		log_warn("LFS object %.12s: server error %ld: %.200s", oid, code,
		         jsonx_str(err, "message") ? jsonx_str(err, "message") : "");
		return r;
	}
	dl = json_object_get(json_object_get(obj, "actions"), which);
	href = jsonx_str(dl, "href");
	if (!href || strlen(href) > GL_URL_MAX || gl_origin(href, (char[512]){0}, 512, NULL) < 0) {
		log_warn("LFS object %.12s: no usable %s href", oid, which);
		return -EIO;
	}
	/* An href on the server under the name it calls itself (GitLab builds it from
	 * project.http_url_to_repo, its external_url: lfs_api_controller.rb) is the server:
	 * moved onto the URL we were given, it gets what the server may get and nothing
	 * goes to a name we cannot vouch for. Anything else is another host (object
	 * storage, docs.gitlab.com administration/lfs "Storing LFS objects in remote
	 * object storage"; a presigned URL with no header, or a 302 from the server to
	 * one when proxy_download is off, administration/object_storage "Proxy download"). */
	if (!gl_same_origin(g, href))
		moved = gl_external_rebase(g, href);
	if (!gl_url_allowed(g, moved ? moved : href)) {
		log_warn("LFS object %.12s: download href on another host is plain http: refused",
		         oid);
		free(moved);
		return -EIO;
	}
	t->url = moved ? moved : strdup(href);
	if (!t->url)
		return -ENOMEM;
	t->expires_ms = gl_lfs_expiry(dl, answered_ms);
	hdrs = json_object_get(dl, "header");
	if (json_is_object(hdrs) && json_object_size(hdrs)) {
		if (json_object_size(hdrs) > GL_LFS_HEADERS)
			return -EIO;
		t->headers = calloc(json_object_size(hdrs), sizeof(char *));
		if (!t->headers)
			return -ENOMEM;
		json_object_foreach(hdrs, key, val)
		{
			if (!json_is_string(val))
				return -EIO;
			r = gl_lfs_header(key, json_string_value(val), &t->headers[t->nheaders]);
			if (r < 0)
				return r;
			t->nheaders++;
		}
	}
	/* our Basic credentials only where they belong: gl_perform sends them to our server
	 * alone, and not at all when the action names its own Authorization */
	t->basic = true;
	return 0;
}

static int gl_lfs_action(struct gl *g, const char *oid, const json_t *obj, int64_t answered_ms,
                         struct gl_target *t)
{
	return gl_lfs_action_of(g, oid, obj, answered_ms, "download", t);
}

/* The batch request itself: objects[i] answers objs[i], wherever the server put it. */
static int gl_lfs_batch_op(struct gl *g, const char *project_path, const char *op,
                           const struct gl_lfs_obj *objs, size_t n, json_t **answer,
                           int64_t *answered_at);

static int gl_lfs_batch(struct gl *g, const char *project_path, const struct gl_lfs_obj *objs,
                        size_t n, struct gl_target *out, int *err)
{
	json_t *resp = NULL, *arr;
	int64_t answered;
	int r;

	r = gl_lfs_batch_op(g, project_path, "download", objs, n, &resp, &answered);
	if (r < 0)
		return r;
	arr = json_object_get(resp, "objects");
	if (!json_is_array(arr) || json_array_size(arr) > GL_LFS_BATCH_MAX) {
		log_warn("LFS batch: no objects in the answer");
		json_decref(resp);
		return -EIO;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *obj = NULL, *it;
		size_t k;

		json_array_foreach(arr, k, it)
		{
			const char *o = jsonx_str(it, "oid");

			if (o && strcmp(o, objs[i].oid) == 0) {
				obj = it;
				break;
			}
		}
		if (!obj) {
			log_warn("LFS batch for %.12s: no entry for the object asked", objs[i].oid);
			err[i] = -EIO;
			continue;
		}
		err[i] = gl_lfs_action(g, objs[i].oid, obj, answered, &out[i]);
		if (err[i] < 0)
			gl_target_free(&out[i]);
	}
	json_decref(resp);
	return 0;
}

static int gl_lfs_batch_op(struct gl *g, const char *project_path, const char *op,
                           const struct gl_lfs_obj *objs, size_t n, json_t **answer,
                           int64_t *answered_at)
{
	char *enc = NULL, *url = NULL;
	struct buf body = BUF_INIT(GL_LFS_BATCH_MAX * 128 + 256);
	json_t *resp = NULL;
	struct gl_req rq;
	int r;

	*answer = NULL;
	enc = gl_path_enc(project_path);
	if (!enc)
		return -ENAMETOOLONG;
	if (asprintf(&url, "%s/%s.git/info/lfs/objects/batch", g->server, enc) < 0) {
		url = NULL;
		r = -ENOMEM;
		goto out;
	}
	r = buf_printf(&body, "{\"operation\":\"%s\",\"transfers\":[\"basic\"],\"objects\":[", op);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = buf_printf(&body, "%s{\"oid\":\"%s\",\"size\":%" PRIu64 "}", i ? "," : "",
		               objs[i].oid, objs[i].size);
	if (r == 0)
		r = buf_puts(&body, "]}");
	if (r < 0)
		goto out;
	gl_req_init(&rq, "POST", url);
	buf_init(&rq.body, GL_LFS_JSON_MAX);
	rq.post = body.data;
	rq.content_type = "Accept: application/vnd.git-lfs+json";
	rq.basic = true;
	r = gl_perform(g, &rq);
	*answered_at = gl_now_ms();
	if (r == 0)
		r = gl_parse(&rq, &resp);
	gl_req_free(&rq);
	if (r == 0) {
		*answer = resp;
		resp = NULL;
	}
out:
	json_decref(resp);
	buf_free(&body);
	free(enc);
	free(url);
	return r;
}

int gl_lfs_targets(struct gl *g, const char *project_path, const struct gl_lfs_obj *objs, size_t n,
                   struct gl_target *out, int *err)
{
	int r;

	for (size_t i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		err[i] = -EIO;
	}
	if (!project_path || !path_is_safe(project_path, 1024) || n == 0 || n > GL_LFS_BATCH_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!objs[i].oid || !hash_is_hex(objs[i].oid, HASH_SHA256_HEX))
			return -EINVAL;
	r = gl_lfs_batch(g, project_path, objs, n, out, err);
	for (size_t i = 0; i < n; i++) {
		struct gl_lfs_src *src;

		if (r < 0) {
			gl_target_free(&out[i]);
			err[i] = r;
			continue;
		}
		if (err[i] < 0)
			continue;
		/* the target keeps what it takes to ask again when the action expires */
		src = calloc(1, sizeof(*src));
		if (src) {
			src->project = strdup(project_path);
			if (src->project && gl_target_copy(&src->cur, &out[i]) == 0) {
				pthread_mutex_init(&src->lock, NULL);
				snprintf(src->oid, sizeof(src->oid), "%s", objs[i].oid);
				src->size = objs[i].size;
				out[i].lfs = src;
				continue;
			}
			free(src->project);
			free(src);
		}
		gl_target_free(&out[i]);
		err[i] = -ENOMEM;
	}
	return r;
}

int gl_lfs_target(struct gl *g, const char *project_path, const char *oid, uint64_t size,
                  struct gl_target *out)
{
	struct gl_lfs_obj o = {oid, size};
	int err = -EIO, r;

	r = gl_lfs_targets(g, project_path, &o, 1, out, &err);
	return r < 0 ? r : err;
}

void gl_lfs_src_free(struct gl_lfs_src *src)
{
	if (!src)
		return;
	gl_target_free(&src->cur);
	pthread_mutex_destroy(&src->lock);
	free(src->project);
	free(src);
}

int gl_lfs_current(struct gl *g, struct gl_lfs_src *src, bool force, unsigned gen,
                   struct gl_target *out, unsigned *out_gen)
{
	int64_t now = gl_now_ms();
	int r = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&src->lock);
	/* one fetcher asks again; the others find the new action when they get the lock */
	if ((force && src->gen == gen) ||
	    (src->cur.expires_ms && now + GL_LFS_EXPIRY_MARGIN_S * 1000 >= src->cur.expires_ms)) {
		struct gl_lfs_obj o = {src->oid, src->size};
		struct gl_target fresh = {0};
		int err = -EIO;

		log_info("LFS object %.12s: %s; asking the batch API again", src->oid,
		         force ? "its host refused the action" : "the action expired");
		r = gl_lfs_batch(g, src->project, &o, 1, &fresh, &err);
		if (r == 0)
			r = err;
		if (r == 0) {
			gl_target_free(&src->cur);
			src->cur = fresh;
			src->gen++;
		} else {
			gl_target_free(&fresh);
		}
	}
	if (r == 0)
		r = gl_target_copy(out, &src->cur);
	*out_gen = src->gen;
	pthread_mutex_unlock(&src->lock);
	return r;
}

/* Uploads one object with the batch API's upload action (git-lfs's basic transfer: a PUT
 * of the bytes, then the verify action when the server names one). An object the server
 * has already comes back without actions: nothing to send. */
int gl_lfs_upload(struct gl *g, const char *project_path, const char *oid, uint64_t size, int fd)
{
	struct gl_lfs_obj o = {.oid = oid, .size = size};
	struct gl_target up = {0}, ver = {0};
	json_t *resp = NULL, *obj, *actions;
	struct gl_req rq;
	char body[160];
	int64_t answered = 0;
	int r;

	r = gl_lfs_batch_op(g, project_path, "upload", &o, 1, &resp, &answered);
	if (r < 0)
		return r;
	obj = json_array_get(json_object_get(resp, "objects"), 0);
	if (!obj || !jsonx_str(obj, "oid") || strcmp(jsonx_str(obj, "oid"), oid) != 0) {
		json_decref(resp);
		return -EIO;
	}
	if (json_object_get(obj, "error")) {
		r = gl_lfs_action_of(g, oid, obj, answered, "upload", &up);
		json_decref(resp);
		return r < 0 ? r : -EIO;
	}
	actions = json_object_get(obj, "actions");
	if (!json_object_get(actions, "upload")) {
		json_decref(resp);
		return 0; /* the server has it */
	}
	r = gl_lfs_action_of(g, oid, obj, answered, "upload", &up);
	if (r == 0 && json_object_get(actions, "verify"))
		r = gl_lfs_action_of(g, oid, obj, answered, "verify", &ver);
	json_decref(resp);
	if (r == 0) {
		gl_req_init(&rq, "PUT", up.url);
		rq.post = "";
		rq.post_fd = fd;
		rq.post_fd_len = size;
		rq.post_head = size ? NULL : "";
		rq.post_type = "Content-Type: application/octet-stream";
		rq.content_type = "Accept: application/vnd.git-lfs+json";
		rq.target = &up;
		r = gl_perform(g, &rq);
		gl_req_free(&rq);
	}
	if (r == 0 && ver.url) {
		snprintf(body, sizeof(body), "{\"oid\":\"%s\",\"size\":%" PRIu64 "}", oid, size);
		gl_req_init(&rq, "POST", ver.url);
		rq.post = body;
		rq.content_type = "Accept: application/vnd.git-lfs+json";
		rq.target = &ver;
		r = gl_perform(g, &rq);
		gl_req_free(&rq);
	}
	if (r < 0)
		log_warn("LFS upload of %.12s to %s: %s", oid, project_path, strerror(-r));
	gl_target_free(&up);
	gl_target_free(&ver);
	return r;
}
