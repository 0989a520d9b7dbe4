/* The HTTP server: libmicrohttpd with a thread per connection, request contexts,
 * authentication, the hub_req/hub_resp helpers of hub.h, request logging and dispatch
 * to the API (api.c) and to git over smart HTTP (git.c). */
#include "conn.h"
#include "core.h"
#include "authz.h"
#include "git.h"
#include "hub_ci.h"
#include "lfs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#define HUB_MAX_QUERY_PARAMS 64
#define HUB_MAX_URI          (16 * 1024)
/* Rack::QueryParser's default params_limit (rack 3.1), GitLab's form body limit. */
#define HUB_MAX_FORM_PARAMS 4096
/* Routes that take no file content: their bodies are small JSON or form data. */
#define HUB_MAX_SMALL_BODY ((size_t)1 << 20)
/* Bytes of an API body past its cap read (and dropped) before the connection is cut. */
#define HUB_MAX_DRAIN ((uint64_t)HUB_MAX_BODY)
/* An API request's body must arrive within this (git and LFS transfers have none). */
#define HUB_BODY_TIMEOUT_MS 60000u
/* No byte in either direction for this long ends even an active transfer. */
#define HUB_IDLE_TIMEOUT_S 120u

struct hub_param {
	char *key;
	char *value;
};

/* One per HTTP request; req must stay the first member (hub_req -> context). */
struct hub_ctx {
	struct hub_req req;
	struct hub_resp resp;
	char *path;  /* raw path, percent-encoded */
	char *query; /* raw query string after '?', or NULL */
	struct hub_param params[HUB_MAX_QUERY_PARAMS];
	size_t n_params;
	struct timespec start;
	struct hub_user user;
	unsigned scopes;
	int status; /* what was sent, for the log */
	bool started;
	bool bad_uri;
	bool too_big;     /* the body passed its cap: the rest is read and dropped */
	uint64_t dropped; /* bytes of it dropped so far */
	bool bad_query;   /* a malformed escape or an encoded NUL in the query */
	size_t body_cap;  /* bytes this route's body may have */
	size_t charged;   /* bytes of the in-flight budget this request holds */
	bool is_git;
	struct hub_git *git;
	bool is_lfs;
	struct hub_lfs *lfs;
};

static struct hub_ctx *ctx_of(const struct hub_req *req)
{
	return (struct hub_ctx *)(uintptr_t)req;
}

/* --- request accessors --- */

static void ctx_parse_query(struct hub_ctx *c)
{
	char *q = c->query;

	while (q && *q && c->n_params < HUB_MAX_QUERY_PARAMS) {
		size_t n = strcspn(q, "&");
		char *pair = strndup(q, n), *eq;
		struct hub_param *pp;

		if (!pair)
			return;
		eq = strchr(pair, '=');
		if (eq)
			*eq++ = '\0';
		if (url_decode(pair, pair, true) < 0 || (eq && url_decode(eq, eq, true) < 0)) {
			/* GitLab answers 400 (Gitlab::Middleware::HandleMalformedStrings); an
			 * encoded NUL never reaches a handler. */
			c->bad_query = true;
			free(pair);
		} else {
			pp = &c->params[c->n_params++];
			pp->key = pair;
			pp->value = eq ? eq : pair + strlen(pair);
		}
		q += n;
		if (*q == '&')
			q++;
	}
}

const char *hub_req_query(const struct hub_req *req, const char *key)
{
	const struct hub_ctx *c = ctx_of(req);

	for (size_t i = 0; i < c->n_params; i++)
		if (strcmp(c->params[i].key, key) == 0)
			return c->params[i].value;
	return NULL;
}

const char *hub_req_header(const struct hub_req *req, const char *name)
{
	if (!req->conn)
		return NULL;
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static int form_parse(json_t *obj, const char *s, size_t len)
{
	size_t i = 0, n_params = 0;

	while (i < len) {
		size_t n = 0;
		char *pair, *eq;

		while (i + n < len && s[i + n] != '&')
			n++;
		/* Rack's QueryParser params_limit, which GitLab runs on */
		if (++n_params > HUB_MAX_FORM_PARAMS)
			return -E2BIG;
		pair = strndup(s + i, n);
		if (!pair)
			return -ENOMEM;
		eq = strchr(pair, '=');
		if (eq)
			*eq++ = '\0';
		if (url_decode(pair, pair, true) < 0 || (eq && url_decode(eq, eq, true) < 0)) {
			free(pair);
			return -EINVAL;
		}
		if (*pair)
			json_object_set_new(obj, pair, json_string(eq ? eq : ""));
		free(pair);
		i += n + 1;
	}
	return 0;
}

int hub_req_params(const struct hub_req *req, json_t **out)
{
	const struct hub_ctx *c = ctx_of(req);
	const char *ct = hub_req_header(req, "Content-Type");
	json_t *obj = json_object();
	int r = 0;

	if (!obj)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_params; i++)
		json_object_set_new(obj, c->params[i].key, json_string(c->params[i].value));
	if (req->body.len && ct && strncasecmp(ct, "application/json", 16) == 0) {
		static const struct jsonx_limits lim = JSONX_GITLAB_LIMITS;
		json_t *body = NULL;

		/* access_cb checked the limits already; this keeps hub_req_params safe for
		 * bodies set by internal callers too. */
		r = jsonx_parse_limited(&body, req->body.data, req->body.len, &lim, NULL);
		if (r == 0 && !json_is_object(body))
			r = -EINVAL;
		if (r == 0)
			json_object_update(obj, body);
		json_decref(body);
	} else if (req->body.len) {
		r = form_parse(obj, req->body.data, req->body.len);
	}
	if (r < 0) {
		json_decref(obj);
		return -EINVAL;
	}
	*out = obj;
	return 0;
}

int hub_req_link(const struct hub_req *req, const char *key, const char *value, struct buf *out)
{
	const struct hub_ctx *c = ctx_of(req);
	const char *q = c->query;
	bool first = true;
	size_t klen = strlen(key);
	int r;

	r = buf_printf(out, "%s%s", req->hub->base_url, c->path);
	while (r == 0 && q && *q) {
		size_t n = strcspn(q, "&");
		size_t kn = strcspn(q, "=&");
		char k[256];

		/* Compare the decoded key so page and p%61ge are the same parameter. */
		if (kn < sizeof(k)) {
			memcpy(k, q, kn);
			k[kn] = '\0';
			if (url_decode(k, k, true) < 0)
				k[0] = '\0';
		} else {
			k[0] = '\0';
		}
		if (n > 0 && !(strlen(k) == klen && strcmp(k, key) == 0)) {
			r = buf_puts(out, first ? "?" : "&");
			if (r == 0)
				r = buf_append(out, q, n);
			first = false;
		}
		q += n;
		if (*q == '&')
			q++;
	}
	if (r == 0 && value) {
		r = buf_puts(out, first ? "?" : "&");
		if (r == 0)
			r = url_encode(out, key);
		if (r == 0)
			r = buf_puts(out, "=");
		if (r == 0)
			r = url_encode(out, value);
	}
	return r;
}

/* --- responses --- */

static void resp_clear_body(struct hub_resp *resp)
{
	buf_reset(&resp->body);
	if (resp->fd >= 0)
		close(resp->fd);
	resp->fd = -1;
}

void hub_resp_raw(struct hub_resp *resp, int status, const char *ctype, const void *data,
                  size_t len)
{
	resp_clear_body(resp);
	resp->status = status;
	snprintf(resp->content_type, sizeof(resp->content_type), "%s", ctype ? ctype : "");
	if (len && buf_append(&resp->body, data, len) < 0) {
		resp->status = 500;
		snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
		buf_reset(&resp->body);
		buf_puts(&resp->body, "{\"message\":\"500 Internal Server Error\"}");
	}
}

void hub_resp_json(struct hub_resp *resp, int status, json_t *v)
{
	char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;

	if (!s) {
		json_decref(v);
		hub_resp_raw(resp, 500, "application/json",
		             "{\"message\":\"500 Internal Server Error\"}", 38);
		return;
	}
	hub_resp_raw(resp, status, "application/json", s, strlen(s));
	free(s);
	json_decref(v);
}

void hub_resp_error(struct hub_resp *resp, int status, const char *msg)
{
	hub_resp_json(resp, status, json_pack("{s:s}", "message", msg));
}

void hub_resp_missing(struct hub_resp *resp, const char *param)
{
	char msg[300];

	snprintf(msg, sizeof(msg), "400 (Bad request) \"%s\" not given", param);
	hub_resp_error(resp, 400, msg);
}

void hub_resp_not_found(struct hub_resp *resp)
{
	hub_resp_json(resp, 404, json_pack("{s:s}", "error", "404 Not Found"));
}

void hub_resp_header(struct hub_resp *resp, const char *name, const char *value)
{
	struct hub_header *h;

	for (size_t i = 0; i < resp->n_headers; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0) {
			char *v = strdup(value);

			if (v) {
				free(resp->headers[i].value);
				resp->headers[i].value = v;
			}
			return;
		}
	}
	if (resp->n_headers >= sizeof(resp->headers) / sizeof(resp->headers[0])) {
		log_warn("response header %s dropped: too many headers", name);
		return;
	}
	h = &resp->headers[resp->n_headers];
	h->name = strdup(name);
	h->value = strdup(value);
	if (!h->name || !h->value) {
		free(h->name);
		free(h->value);
		return;
	}
	resp->n_headers++;
}

static void resp_free(struct hub_resp *resp)
{
	for (size_t i = 0; i < resp->n_headers; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	resp->n_headers = 0;
	buf_free(&resp->body);
	if (resp->fd >= 0)
		close(resp->fd);
	resp->fd = -1;
}

static size_t query_size(const struct hub_req *req, const char *key, size_t def, size_t max)
{
	const char *s = hub_req_query(req, key);
	char *end;
	long long v;

	if (!s || !*s)
		return def;
	v = strtoll(s, &end, 10);
	if (*end || v < 1)
		return def;
	if ((unsigned long long)v > max)
		return max;
	return (size_t)v;
}

static void link_add(const struct hub_req *req, struct buf *links, const char *rel, size_t page)
{
	struct buf u = BUF_INIT(HUB_MAX_URI * 2);
	char num[32];

	snprintf(num, sizeof(num), "%zu", page);
	if (hub_req_link(req, "page", num, &u) == 0)
		buf_printf(links, "%s<%s>; rel=\"%s\"", links->len ? ", " : "", u.data, rel);
	buf_free(&u);
}

void hub_paginate(const struct hub_req *req, struct hub_resp *resp, size_t total, size_t *offset,
                  size_t *limit)
{
	size_t per_page = query_size(req, "per_page", 20, HUB_MAX_PER_PAGE);
	size_t page = query_size(req, "page", 1, (size_t)1 << 30);
	size_t pages = total ? (total + per_page - 1) / per_page : 1;
	struct buf links = BUF_INIT(HUB_MAX_URI * 8);
	char num[32];

	snprintf(num, sizeof(num), "%zu", page);
	hub_resp_header(resp, "X-Page", num);
	snprintf(num, sizeof(num), "%zu", per_page);
	hub_resp_header(resp, "X-Per-Page", num);
	snprintf(num, sizeof(num), "%zu", total);
	hub_resp_header(resp, "X-Total", num);
	snprintf(num, sizeof(num), "%zu", pages);
	hub_resp_header(resp, "X-Total-Pages", num);
	if (page < pages)
		snprintf(num, sizeof(num), "%zu", page + 1);
	else
		num[0] = '\0';
	hub_resp_header(resp, "X-Next-Page", num);
	if (page > 1)
		snprintf(num, sizeof(num), "%zu", page - 1);
	else
		num[0] = '\0';
	hub_resp_header(resp, "X-Prev-Page", num);
	if (page > 1)
		link_add(req, &links, "prev", page - 1 < pages ? page - 1 : pages);
	if (page < pages)
		link_add(req, &links, "next", page + 1);
	link_add(req, &links, "first", 1);
	link_add(req, &links, "last", pages);
	if (links.len)
		hub_resp_header(resp, "Link", links.data);
	buf_free(&links);
	if ((page - 1) > total / per_page) {
		*offset = total;
		*limit = 0;
		return;
	}
	*offset = (page - 1) * per_page;
	*limit = total - *offset < per_page ? total - *offset : per_page;
}

/* --- time --- */

void hub_time_iso(int64_t unix_seconds, char out[32])
{
	time_t t = (time_t)unix_seconds;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

void hub_time_git(int64_t unix_seconds, int offset_minutes, char out[40])
{
	time_t t = (time_t)(unix_seconds + (int64_t)offset_minutes * 60);
	/* Real offsets stay within a day; clamping keeps the output in bounds. */
	unsigned off = (unsigned)(offset_minutes < 0 ? -offset_minutes : offset_minutes) % 1440;
	struct tm tm;
	char base[24];

	gmtime_r(&t, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 40, "%.20s.000%c%02u:%02u", base, offset_minutes < 0 ? '-' : '+', off / 60,
	         off % 60);
}

/* --- authentication --- */

/* Resolves the API caller: 0 (req->user set or NULL for anonymous) or -EACCES for a
 * token that was given but is not valid. */
static int auth_api(struct hub_ctx *c)
{
	const char *tok = hub_req_header(&c->req, "PRIVATE-TOKEN");
	const char *authz = hub_req_header(&c->req, "Authorization");
	int r;

	if (!tok && authz && strncasecmp(authz, "Bearer ", 7) == 0)
		tok = authz + 7;
	if (!tok)
		tok = hub_req_query(&c->req, "private_token");
	if (!tok)
		tok = hub_req_query(&c->req, "access_token");
	if (!tok) {
		const char *jt = hub_req_header(&c->req, "JOB-TOKEN");

		if (!jt)
			jt = hub_req_query(&c->req, "job_token");
		if (jt)
			return hub_auth_job_token(&c->req, jt, &c->user, &c->scopes);
	}
	if (!tok)
		return 0;
	while (*tok == ' ')
		tok++;
	r = hub_user_by_token(c->req.hub, tok, &c->user, &c->scopes);
	if (r < 0)
		return -EACCES;
	c->req.user = &c->user;
	return 0;
}

/* Decodes Basic credentials into out (NUL-terminated); -EINVAL on bad input, an
 * embedded NUL or more than cap - 1 bytes. */
static int basic_decode(const char *in, char *out, size_t cap)
{
	struct buf b = BUF_INIT(cap - 1);
	int r = base64_decode(in, strlen(in), &b);

	if (r == 0 && memchr(b.data ? b.data : "", '\0', b.len))
		r = -EINVAL;
	if (r == 0) {
		memcpy(out, b.data ? b.data : "", b.len);
		out[b.len] = '\0';
		r = (int)b.len;
	}
	if (b.data)
		explicit_bzero(b.data, b.len);
	buf_free(&b);
	return r;
}

/* A CI job token (hub_ci.h): the pipeline's user, on the job's project only, while the
 * job runs. */
int hub_auth_job_token(struct hub_req *req, const char *token, struct hub_user *user,
                       unsigned *scopes)
{
	int64_t uid = 0, jid = 0, pid = hub_ci_job_token_lookup(req->hub, token, &uid, &jid);

	if (pid <= 0 || hub_user_by_id(req->hub, uid, user) < 0)
		return -EACCES;
	*scopes = HUB_SCOPE_API;
	req->user = user;
	req->job_project_id = pid;
	req->job_id = jid;
	return 1;
}

int hub_auth_basic(struct hub_req *req, struct hub_user *user, unsigned *scopes)
{
	const char *authz = hub_req_header(req, "Authorization");
	char dec[768], *colon;
	int r;

	if (!authz)
		return 0;
	if (strncasecmp(authz, "Basic ", 6) != 0) {
		if (strncasecmp(authz, "Bearer ", 7) != 0)
			return -EACCES;
		r = hub_user_by_token(req->hub, authz + 7, user, scopes);
		return r < 0 ? -EACCES : 1;
	}
	if (strlen(authz + 6) > 1000 || basic_decode(authz + 6, dec, sizeof(dec)) < 0)
		return -EACCES;
	colon = strchr(dec, ':');
	if (!colon)
		return -EACCES;
	/* The user name is ignored for personal tokens (oauth2 or any); gitlab-ci-token
	 * names a job token. */
	*colon = '\0';
	r = -EACCES;
	if (strcmp(dec, "gitlab-ci-token") == 0)
		r = hub_auth_job_token(req, colon + 1, user, scopes);
	/* GitLab also takes a personal token under that name. */
	if (r < 0)
		r = hub_user_by_token(req->hub, colon + 1, user, scopes);
	explicit_bzero(dec, sizeof(dec));
	return r < 0 ? -EACCES : 1;
}

/* --- MHD glue --- */

static struct hub *g_hub;

/* A request context for a raw request-target ("/path?query"), as received. */
static struct hub_ctx *ctx_new(struct hub *hub, struct MHD_Connection *conn, const char *uri)
{
	struct hub_ctx *c = calloc(1, sizeof(*c));
	const char *q;

	if (!c)
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, &c->start);
	c->req.hub = hub;
	c->req.conn = conn;
	c->req.method = "GET";
	c->resp.fd = -1;
	buf_init(&c->req.body, HUB_MAX_BODY);
	buf_init(&c->resp.body, BUF_DEFAULT_CAP);
	if (!uri || uri[0] != '/' || strlen(uri) > HUB_MAX_URI) {
		c->bad_uri = true;
		c->path = strdup("/");
		c->req.url = c->path ? c->path : "/";
		return c;
	}
	q = strchr(uri, '?');
	c->path = q ? strndup(uri, (size_t)(q - uri)) : strdup(uri);
	if (q)
		c->query = strdup(q + 1);
	/* Cut a fragment; clients never send one, but it must not reach a route. */
	if (c->path && strchr(c->path, '#'))
		*strchr(c->path, '#') = '\0';
	if (!c->path || (q && !c->query))
		c->bad_uri = true;
	ctx_parse_query(c);
	c->req.url = c->path ? c->path : "/";
	return c;
}

static void *uri_log_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
	return ctx_new(cls, conn, uri);
}

static size_t unescape_noop(void *cls, struct MHD_Connection *conn, char *s)
{
	return strlen(s);
}

static void ctx_free(struct hub_ctx *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_params; i++)
		free(c->params[i].key);
	free(c->path);
	free(c->query);
	buf_free(&c->req.body);
	hub_conn_release(c->charged);
	resp_free(&c->resp);
	hub_git_free(c->git);
	hub_lfs_free(c->lfs);
	free(c);
}

struct hub_req *hub_req_new(struct hub *hub, const char *method, const char *uri)
{
	struct hub_ctx *c = ctx_new(hub, NULL, uri);

	if (c && method)
		c->req.method = method;
	return c ? &c->req : NULL;
}

struct hub_resp *hub_req_resp(struct hub_req *req)
{
	return &ctx_of(req)->resp;
}

void hub_req_free(struct hub_req *req)
{
	if (req)
		ctx_free(ctx_of(req));
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct hub_ctx *c = *con_cls;
	struct timespec now;
	double ms;

	if (!c)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (double)(now.tv_sec - c->start.tv_sec) * 1e3 +
	     (double)(now.tv_nsec - c->start.tv_nsec) / 1e6;
	/* The path only: a query string may carry a token. */
	log_info("%s %.512s %d %.1fms%s", c->req.method ? c->req.method : "-",
	         c->path ? c->path : "-", c->status, ms,
	         toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (aborted)");
	ctx_free(c);
	*con_cls = NULL;
	hub_conn_idle(conn);
}

static ssize_t head_body_unread(void *cls, uint64_t pos, char *buf, size_t max)
{
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

static enum MHD_Result queue(struct hub_ctx *c, struct MHD_Connection *conn)
{
	struct hub_resp *resp = &c->resp;
	struct MHD_Response *mr;
	enum MHD_Result ret;

	if (resp->status == 0)
		hub_resp_not_found(resp);
	if (resp->fd >= 0) {
		mr = MHD_create_response_from_fd_at_offset64(resp->fd_len, resp->fd,
		                                             resp->fd_offset);
		if (mr)
			resp->fd = -1; /* MHD closes it */
	} else if (resp->fd_len > 0 && resp->body.len == 0) {
		/* HEAD: MHD sends the Content-Length and never asks for the body */
		mr = MHD_create_response_from_callback(resp->fd_len, 4096, head_body_unread, NULL,
		                                       NULL);
	} else {
		size_t len = resp->body.len;
		char *data = buf_steal(&resp->body);

		mr = MHD_create_response_from_buffer(len, data ? data : (char *)"",
		                                     data ? MHD_RESPMEM_MUST_FREE
		                                          : MHD_RESPMEM_PERSISTENT);
		if (!mr)
			free(data);
	}
	if (!mr)
		return MHD_NO;
	if (resp->content_type[0])
		MHD_add_response_header(mr, "Content-Type", resp->content_type);
	for (size_t i = 0; i < resp->n_headers; i++) {
		const char *v = resp->headers[i].value;

		/* MHD refuses empty values; GitLab sends e.g. an empty X-Prev-Page, and a
		 * lone space is read back as empty by every HTTP client. */
		MHD_add_response_header(mr, resp->headers[i].name, *v ? v : " ");
	}
	c->status = resp->status;
	ret = MHD_queue_response(conn, (unsigned)resp->status, mr);
	MHD_destroy_response(mr);
	return ret;
}

static bool is_api(const char *path)
{
	return strcmp(path, "/api/v4") == 0 || strncmp(path, "/api/v4/", 8) == 0 ||
	       strncmp(path, "/api/v1/", 8) == 0 || strcmp(path, "/api/graphql") == 0;
}

static bool scope_allows(const struct hub_ctx *c, const char *rest)
{
	bool read = strcmp(c->req.method, "GET") == 0 || strcmp(c->req.method, "HEAD") == 0;

	if (!c->req.user || (c->scopes & HUB_SCOPE_API))
		return true;
	if (read && (c->scopes & HUB_SCOPE_READ_API))
		return true;
	if (read && (c->scopes & HUB_SCOPE_READ_USER) && strcmp(rest, "/user") == 0)
		return true;
	if (read && (c->scopes & HUB_SCOPE_READ_REPOSITORY) && hub_authz_files_route(c->path))
		return true;
	return false;
}

static void handle_api(struct hub_ctx *c)
{
	const char *rest = c->path + 7;

	if (c->req.hub->gitlab_url[0]) {
		/* the management role authenticates with GitLab itself (mgmt_gl.c) */
		hub_mgmt_route(&c->req, &c->resp, rest + 1);
		return;
	}
	if (strcmp(c->path, "/api/graphql") == 0) {
		/* GraphQL authenticates on its own terms (no job tokens, api/read_api
		 * scopes for every method) */
		hub_graphql_route(&c->req, &c->resp);
		return;
	}
	if (auth_api(c) < 0) {
		hub_resp_error(&c->resp, 401, "401 Unauthorized");
		return;
	}
	if (c->req.job_project_id > 0 && !hub_authz_job_route(c->req.method, c->path)) {
		/* GitLab ignores a job token on a route that does not allow one (authz.h) */
		c->req.user = NULL;
		c->req.job_project_id = 0;
		c->scopes = 0;
	}
	if (!scope_allows(c, rest)) {
		hub_resp_json(&c->resp, 403,
		              json_pack("{s:s,s:s,s:s}", "error", "insufficient_scope",
		                        "error_description",
		                        "The request requires higher privileges than provided by "
		                        "the access token.",
		                        "scope", "api"));
		return;
	}
	if (strncmp(c->path, "/api/v1/", 8) == 0)
		hub_mgmt_route(&c->req, &c->resp, rest + 1);
	else
		hub_api_route(&c->req, &c->resp, rest);
}

static uint64_t content_length(struct MHD_Connection *conn, bool *given)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

	*given = cl != NULL;
	return cl ? strtoull(cl, NULL, 10) : 0;
}

/* The bytes an API route's body may have: file contents travel in the files and commits
 * APIs (GitLab sets no general cap; its JSON validation has none by default), every
 * other route takes a few fields. */
static size_t api_body_cap(const char *path)
{
	if (strncmp(path, "/api/v4/projects/", 17) == 0 &&
	    (strstr(path, "/repository/files/") || strstr(path, "/repository/commits")))
		return HUB_MAX_BODY;
	return HUB_MAX_SMALL_BODY;
}

static const char json_413[] = "{\"message\":\"413 Request Entity Too Large\"}";
static const char json_503[] = "{\"message\":\"503 Service Unavailable: too many request "
                               "bodies in flight, retry\"}";

/* First call for an API request: checks the declared size and takes the body's share of
 * the in-flight budget. 0 to go on, 1 when resp holds the answer. */
static int api_start(struct hub_ctx *c, struct MHD_Connection *conn)
{
	bool given;
	uint64_t cl = content_length(conn, &given);

	c->body_cap = api_body_cap(c->path);
	if (cl > c->body_cap) {
		hub_resp_error(&c->resp, 413, "413 Request Entity Too Large");
		return 1;
	}
	if (given && cl > 0) {
		/* The buffer never grows past the declared length. */
		buf_init(&c->req.body, (size_t)cl);
		if (!hub_conn_charge((size_t)cl + 1)) {
			hub_resp_raw(&c->resp, 503, "application/json", json_503, strlen(json_503));
			hub_resp_header(&c->resp, "Retry-After", "1");
			return 1;
		}
		c->charged = (size_t)cl + 1;
	} else {
		buf_init(&c->req.body, c->body_cap);
	}
	return 0;
}

/* Takes an API body chunk; MHD_NO (after an answer written directly) when the body is
 * over the route's cap or the in-flight budget is spent. */
static enum MHD_Result api_body(struct hub_ctx *c, struct MHD_Connection *conn, const char *data,
                                size_t n)
{
	if (c->too_big || buf_append(&c->req.body, data, n) < 0) {
		/* Clients such as requests only read the answer once they have sent the
		 * body: drop a bounded overshoot so they get their 413, cut the rest. */
		c->too_big = true;
		c->dropped += n;
		if (c->dropped > HUB_MAX_DRAIN)
			return hub_conn_refuse(conn, 413, "application/json", json_413);
		return MHD_YES;
	}
	if (c->req.body.alloc > c->charged) {
		size_t more = c->req.body.alloc - c->charged;

		if (!hub_conn_charge(more))
			return hub_conn_refuse(conn, 503, "application/json", json_503);
		c->charged += more;
	}
	return MHD_YES;
}

/* GitLab's JSON validation middleware (Gitlab::Middleware::JsonValidation): a JSON
 * body, or any body of an /api/ request without a media type, within the default
 * limits, before any tree is built; 400 {"error": ...} otherwise. */
static bool api_json_ok(struct hub_ctx *c)
{
	static const struct jsonx_limits lim = JSONX_GITLAB_LIMITS;
	const char *ct = hub_req_header(&c->req, "Content-Type");
	enum jsonx_verdict v;

	if (!c->req.body.len || (ct && *ct && strncasecmp(ct, "application/json", 16) != 0))
		return true;
	v = jsonx_check(c->req.body.data, c->req.body.len, &lim);
	if (v == JSONX_OK)
		return true;
	hub_resp_json(&c->resp, 400, json_pack("{s:s}", "error", jsonx_verdict_message(v)));
	return false;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
	struct hub_ctx *c = *con_cls;
	bool given;

	if (!c)
		return MHD_NO;
	if (!c->started) {
		c->started = true;
		c->req.method = method;
		c->req.conn = conn;
		if (c->bad_uri) {
			hub_resp_error(&c->resp, 400, "400 Bad request");
			return queue(c, conn);
		}
		if (c->bad_query) {
			/* Gitlab::Middleware::HandleMalformedStrings */
			hub_resp_raw(&c->resp, 400, "text/plain", "Bad Request", 11);
			return queue(c, conn);
		}
		if (c->req.hub->gitlab_url[0] && strncmp(c->path, "/api/v1/", 8) != 0) {
			/* the management role serves /api/v1 only: GitLab has the rest */
			hub_resp_not_found(&c->resp);
			return queue(c, conn);
		}
		if (is_api(c->path)) {
			/* the body has a deadline; the handler afterwards has none */
			hub_conn_busy(conn, HUB_BODY_TIMEOUT_MS);
			if (api_start(c, conn) != 0)
				return queue(c, conn);
			return MHD_YES;
		}
		hub_conn_busy(conn, 0);
		if (hub_lfs_match(c->path)) {
			/* LFS bodies stream to disk (uploads of any size) or are capped
			 * JSON; lfs.c checks Content-Length per route. */
			c->is_lfs = true;
			if (hub_lfs_start(&c->req, &c->resp, c->path, &c->lfs) != 0)
				return queue(c, conn);
			return MHD_YES;
		}
		if (hub_git_match(c->path)) {
			c->is_git = true;
			if (content_length(conn, &given) > HUB_MAX_SPOOL) {
				hub_resp_error(&c->resp, 413, "413 Request Entity Too Large");
				return queue(c, conn);
			}
			if (hub_git_start(&c->req, &c->resp, c->path, c->query, &c->git) != 0)
				return queue(c, conn);
			return MHD_YES;
		}
		hub_resp_not_found(&c->resp);
		return queue(c, conn);
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (c->is_lfs) {
			int r = hub_lfs_body(c->lfs, upload_data, n);

			if (r == -EFBIG)
				return hub_conn_refuse(conn, 413, "application/vnd.git-lfs+json",
				                       "{\"message\":\"Request too large\"}");
			if (r == -EMSGSIZE)
				return hub_conn_refuse(
				    conn, 400, "application/vnd.git-lfs+json",
				    "{\"message\":\"Size mismatch: more bytes than "
				    "the object's declared size\"}");
			return r < 0 ? MHD_NO : MHD_YES;
		}
		if (c->is_git) {
			int r = hub_git_body(c->git, upload_data, n);

			if (r == -EFBIG)
				return hub_conn_refuse(conn, 413, "application/json", json_413);
			return r < 0 ? MHD_NO : MHD_YES;
		}
		return api_body(c, conn, upload_data, n);
	}
	if (c->is_lfs) {
		hub_lfs_finish(&c->req, &c->resp, c->lfs);
		return queue(c, conn);
	}
	if (c->is_git) {
		struct MHD_Response *mr = NULL;
		enum MHD_Result ret;
		int status = 0;

		/* The response takes the git state over (and frees it when done). */
		if (hub_git_finish(&c->req, &c->resp, &c->git, &mr, &status) < 0 || !mr)
			return queue(c, conn);
		c->status = status;
		ret = MHD_queue_response(conn, (unsigned)status, mr);
		MHD_destroy_response(mr);
		return ret;
	}
	hub_conn_busy(conn, 0);
	if (c->too_big) {
		hub_resp_error(&c->resp, 413, "413 Request Entity Too Large");
		return queue(c, conn);
	}
	if (api_json_ok(c))
		handle_api(c);
	return queue(c, conn);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("http: %s", msg);
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

		return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
	}
	return false;
}

/* Parses HOST:PORT or [V6]:PORT and returns a listening socket. */
static int listen_open(const char *listen_at, bool allow_remote, char *shown, size_t shown_len)
{
	char host[256], port[16];
	const char *colon;
	struct addrinfo hints = {0}, *ai = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, one = 1, rc;

	if (listen_at[0] == '[') {
		const char *end = strchr(listen_at, ']');

		if (!end || end[1] != ':' || (size_t)(end - listen_at - 1) >= sizeof(host))
			return log_ret(-EINVAL, "bad --listen address %s", listen_at);
		memcpy(host, listen_at + 1, (size_t)(end - listen_at - 1));
		host[end - listen_at - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(listen_at, ':');
		if (!colon || (size_t)(colon - listen_at) >= sizeof(host))
			return log_ret(-EINVAL, "bad --listen address %s (want HOST:PORT)",
			               listen_at);
		memcpy(host, listen_at, (size_t)(colon - listen_at));
		host[colon - listen_at] = '\0';
	}
	if (strlen(colon + 1) >= sizeof(port) || !colon[1])
		return log_ret(-EINVAL, "bad --listen port in %s", listen_at);
	snprintf(port, sizeof(port), "%s", colon + 1);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (strcmp(host, "localhost") != 0)
		hints.ai_flags |= AI_NUMERICHOST;
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc != 0)
		return log_ret(-EINVAL, "bad --listen address %s: %s", listen_at, gai_strerror(rc));
	if (!allow_remote && !addr_is_loopback(ai->ai_addr)) {
		freeaddrinfo(ai);
		return log_ret(-EPERM,
		               "refusing to listen on non-loopback %s without --allow-remote",
		               listen_at);
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		freeaddrinfo(ai);
		return log_ret(rc, "socket: %s", strerror(-rc));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		rc = -errno;
		close(fd);
		freeaddrinfo(ai);
		return log_ret(rc, "cannot listen on %s: %s", listen_at, strerror(-rc));
	}
	freeaddrinfo(ai);
	if (ss.ss_family == AF_INET6) {
		char a[INET6_ADDRSTRLEN];
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a));
		snprintf(shown, shown_len, "[%s]:%u", a, ntohs(in6->sin6_port));
	} else {
		char a[INET_ADDRSTRLEN];
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a));
		snprintf(shown, shown_len, "%s:%u", a, ntohs(in->sin_port));
	}
	return fd;
}

int hub_serve(struct hub *hub, const char *listen_at, bool allow_remote)
{
	struct MHD_Daemon *d;
	char shown[300];
	sigset_t set;
	unsigned mhd_limit = 0;
	int fd, sig = 0;

	g_hub = hub;
	fd = listen_open(listen_at, allow_remote, shown, sizeof(shown));
	if (fd < 0)
		return fd;
	if (!hub->base_url[0] &&
	    hub_pathf(hub->base_url, sizeof(hub->base_url), "http://%s", shown) < 0) {
		close(fd);
		return log_ret(-ENAMETOOLONG, "listen address too long");
	}
	/* Block the stop signals in every thread; the main thread waits for them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* after the mask: the runner's threads inherit it */
	if (hub_lfs_init(hub) < 0) {
		close(fd);
		return log_ret(-EIO, "cannot prepare the LFS store");
	}
	if (hub_ci_init(hub) < 0) {
		close(fd);
		hub_lfs_shutdown();
		return log_ret(-EIO, "cannot start the CI runner");
	}
	if (hub_conn_start(hub, &mhd_limit) < 0) {
		close(fd);
		hub_ci_shutdown(hub);
		hub_lfs_shutdown();
		return -EIO;
	}
	/* A thread per connection: handlers block on git and SQLite. Idle sockets cost a
	 * sleeping thread each and are reaped by conn.c, which also makes room for new
	 * clients, so they never starve the accept path. */
	d = MHD_start_daemon(
	    MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
	        MHD_USE_ERROR_LOG,
	    0, hub_conn_accept_cb, hub, access_cb, hub, MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_URI_LOG_CALLBACK, uri_log_cb, hub, MHD_OPTION_NOTIFY_COMPLETED, completed_cb,
	    hub, MHD_OPTION_NOTIFY_CONNECTION, hub_conn_notify_cb, hub,
	    MHD_OPTION_UNESCAPE_CALLBACK, unescape_noop, hub, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
	    hub, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
	    MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_CONNECTION_TIMEOUT,
	    HUB_IDLE_TIMEOUT_S, MHD_OPTION_END);
	if (!d) {
		close(fd);
		hub_conn_stop();
		hub_ci_shutdown(hub);
		hub_lfs_shutdown();
		return log_ret(-EIO, "cannot start the HTTP server on %s", shown);
	}
	printf("listening on http://%s\n", shown);
	fflush(stdout);
	log_info("serving %s on http://%s (base URL %s)", hub->dir, shown, hub->base_url);
	while (sigwait(&set, &sig) != 0)
		;
	log_info("signal %d: stopping", sig);
	MHD_stop_daemon(d);
	hub_conn_stop();
	hub_ci_shutdown(hub);
	hub_lfs_shutdown();
	return 0;
}
