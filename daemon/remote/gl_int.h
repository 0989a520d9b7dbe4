/* Internals shared by the remote modules of reefd (daemon/remote/): the client state,
 * one HTTP exchange (struct gl_req) and the request core of http.c that every protocol
 * module (rest.c, lfs.c, …) goes through, so auth, caps, retries and counters live in
 * one place. Not for callers outside daemon/remote/: they use gl.h. */
#ifndef REEF_GL_INT_H
#define REEF_GL_INT_H

#include <curl/curl.h>
#include <pthread.h>

#include "gl.h"
#include "reef/buf.h"

#define GL_POOL_MAX      16
#define GL_REDIRECTS_MAX 5
#define GL_ERRBODY_MAX   ((size_t)4096)
#define GL_JSON_TIMEOUT  120L /* seconds for a whole JSON exchange */
#define GL_URL_MAX       ((size_t)16384)
#define GL_LFS_HEADERS   16
#define GL_HDR_MAX       ((size_t)8192) /* one header line from a batch response */
#define GL_LFS_JSON_MAX  ((size_t)1 << 20)
#define GL_STREAM_BUFFER (512L * 1024) /* CURLOPT_BUFFERSIZE's maximum */

struct gl {
	char *server; /* no trailing '/' */
	char *api;    /* server + "/api/v4" */
	char *token_hdr;
	char *basic_hdr; /* "Authorization: Basic …" for git-over-HTTP routes (LFS) */
	long stall_s;
	int64_t retry_until; /* ms, CLOCK_REALTIME: the last 429's Retry-After; __atomic */
	pthread_mutex_t lock;
	CURL *pool[GL_POOL_MAX];
	size_t npool;
	/* One connection cache (and DNS cache) for every handle: a request reuses any idle
	 * keep-alive connection to the server, whichever handle or thread made it. */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	uint64_t requests, errors, connects; /* __atomic */
	bool no_graphql;                     /* __atomic: the server has no /api/graphql */
};

struct gl_req {
	const char *method; /* "GET", "HEAD" or "POST" */
	const char *url;
	const struct gl_sink *sink; /* streaming instead of body */
	const struct gl_stream_sink *ssink;
	uint64_t max;
	uint64_t off;                   /* Range start of a stream (0: no Range header) */
	const struct gl_target *target; /* extra headers and auth of a stream */
	const char *post;               /* POST body (JSON) */
	const char *content_type;       /* POST and Accept for post */
	const char *post_type;          /* "Content-Type: …" of post when not the Accept type */
	bool basic;                     /* Basic auth instead of PRIVATE-TOKEN */
	/* results */
	long status;
	struct buf body;
	struct buf errbody;
	int cb_err; /* why a callback aborted the transfer */
	bool begun;
	uint64_t got;
	char location[2048];
	char link_next[2048];
	char next_page[24];
	char retry_after[24];
	char blob_id[48];
	char size[24];
	char content_range[96];
	CURL *h;
};

/* The request core (http.c). */
int gl_perform(struct gl *g, struct gl_req *rq);
void gl_req_init(struct gl_req *rq, const char *method, const char *url);
void gl_req_free(struct gl_req *rq);
int gl_parse(struct gl_req *rq, json_t **out);
/* Builds api + "/" + path; the caller frees. */
int gl_url(struct gl *g, char **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* URL-encodes s into a new string. */
char *gl_enc(const char *s);
/* Project path segments encoded one by one: the slashes between them stay. */
char *gl_path_enc(const char *path);
bool gl_same_origin(const struct gl *g, const char *url);
int gl_get_json(struct gl *g, const char *url, json_t **out);
/* Calls on_page for each page's array; stops after max_items items or max_pages. */
int gl_get_pages(struct gl *g, const char *first, size_t max_items,
                 int (*on_page)(void *arg, json_t *arr), void *arg);
int gl_get_list(struct gl *g, const char *url, json_t **out);

#endif
