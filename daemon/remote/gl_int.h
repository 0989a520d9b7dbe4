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
#define GL_JSON_TIMEOUT  60L /* seconds for a whole JSON exchange */
/* A paginated answer: every page together, however many items it claims. */
#define GL_PAGES_BYTES_MAX ((size_t)64 << 20)
#define GL_PAGES_TIMEOUT_S 60
#define GL_PER_PAGE        100 /* what every listing asks for */
/* RateLimit-Remaining at or under this (or a tenth of RateLimit-Limit, if larger):
 * requests are spread over what is left of the window. */
#define GL_PACE_FLOOR          20
#define GL_LFS_EXPIRY_MARGIN_S 10 /* an action this close to its expiry is asked again */
#define GL_URL_MAX             ((size_t)16384)
#define GL_LFS_HEADERS         16
#define GL_HDR_MAX             ((size_t)8192) /* one header line from a batch response */
#define GL_LFS_JSON_MAX        ((size_t)1 << 20)
#define GL_STREAM_BUFFER       (512L * 1024) /* CURLOPT_BUFFERSIZE's maximum */

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
	/* The server's external URL (http_url_to_repo without "/<project>.git"), learnt from
	 * the API; LFS hrefs under it are the server under another name (g->lock). */
	char *external;
	/* told every failed request (not a 404, not a cancel), for status (gl_set_err_hook) */
	void (*err_hook)(void *arg, const char *msg);
	void *err_arg;
};

/* An LFS object's download action and how to ask for it again when it expires (see
 * gl_lfs_refresh): shared by the concurrent fetchers of one stream. */
struct gl_lfs_src {
	pthread_mutex_t lock;
	char *project;
	char oid[65];
	uint64_t size;
	unsigned gen;         /* bumped at every new action */
	struct gl_target cur; /* the current action (cur.lfs NULL) */
};

struct gl_req {
	const char *method; /* "GET", "HEAD" or "POST" */
	const char *url;
	const char *show; /* url, or a stand-in when it is another host's (never logged) */
	const struct gl_sink *sink; /* streaming instead of body */
	const struct gl_stream_sink *ssink;
	uint64_t max;
	uint64_t off;                   /* Range start of a stream (0: no Range header) */
	const struct gl_target *target; /* extra headers and auth of a stream */
	const char *post;               /* POST body (JSON) */
	const char *content_type;       /* POST and Accept for post */
	const char *post_type;          /* "Content-Type: …" of post when not the Accept type */
	bool basic;                     /* Basic auth instead of PRIVATE-TOKEN */
	/* A binary POST body instead of post: post_head's bytes, then post_fd_len bytes of
	 * post_fd from offset 0 (a pack file); post must be "" then. */
	const void *post_head;
	size_t post_head_len;
	int post_fd;
	uint64_t post_fd_len;
	uint64_t post_pos; /* internal: bytes of the body sent */
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
	char retry_after[64];
	char rl_remaining[24];
	char rl_reset[24];
	char rl_limit[24];
	char blob_id[48];
	char size[24];
	char content_range[96];
	char why[256]; /* on failure: one line saying why (curl's message, the HTTP status) */
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
/* "scheme://host:port" of an absolute http(s) URL, lowercase, the port always given;
 * whether its host is a loopback name or address. -EINVAL when not such a URL. */
int gl_origin(const char *url, char *out, size_t n, bool *loopback);
/* Whether an URL may be asked at all: our server, an https URL, or plain http on a
 * loopback host. */
bool gl_url_allowed(const struct gl *g, const char *url);
/* Remembers the server's external URL from a project's http_url_to_repo. */
void gl_note_external(struct gl *g, const json_t *project);
/* An href under the server's external URL, moved onto the server URL we were given
 * (NULL when it is not under it, or unknown). */
char *gl_external_rebase(struct gl *g, const char *href);
/* Deep copy of a target's url and headers. */
int gl_target_copy(struct gl_target *dst, const struct gl_target *src);
/* The current action of an LFS object (a copy into *out), asking the batch API again
 * when it expired or when force and it is still the action of generation gen. */
int gl_lfs_current(struct gl *g, struct gl_lfs_src *src, bool force, unsigned gen,
                   struct gl_target *out, unsigned *out_gen);
void gl_lfs_src_free(struct gl_lfs_src *src);
int64_t gl_now_ms(void);
int gl_get_json(struct gl *g, const char *url, json_t **out);
/* Calls on_page for each page's array; stops after max_items items or max_pages. */
int gl_get_pages(struct gl *g, const char *first, size_t max_items,
                 int (*on_page)(void *arg, json_t *arr), void *arg);
int gl_get_list(struct gl *g, const char *url, json_t **out);

/* git protocol v2 answers (gitproto.c), pure, for the fuzz targets: a capability
 * advertisement (0 usable, -ENOTSUP not v2 with shallow and filter, -EIO malformed), and a
 * whole `fetch` answer whose pack bytes go to data (-EIO malformed or truncated). */
int gl_git_caps_parse(const void *d, size_t n);
int gl_git_answer_parse(const void *d, size_t n, int (*data)(void *arg, const void *d, size_t n),
                        void *arg);
/* receive-pack's answer to a push with report-status and side-band-64k (see gl.h
 * gl_git_push): 0 and *out filled, or -EIO malformed. */
int gl_git_report_parse(const void *d, size_t n, const char *ref, struct gl_push_report *out);

#endif
