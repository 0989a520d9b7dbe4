/* The request core of the GitLab client: handles, auth, caps, retries, pagination
 * and the generic calls (see gl.h, gl_int.h). */
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

static pthread_once_t gl_curl_once = PTHREAD_ONCE_INIT;
static int gl_curl_ok;

static void gl_curl_init(void)
{
	gl_curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* The one table from CURLcode to errno; HTTP statuses go through err_from_http. */
static int gl_err_from_curl(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return -EINVAL;
	default: /* unreachable, refused, reset, timed out, TLS, truncated, ... */
		return -EIO;
	}
}

static int gl_err_from_status(long status)
{
	if (status == 429 || (status >= 300 && status < 400) || status < 200)
		return -EIO; /* retries exhausted, a redirect not followed, or no answer */
	return err_from_http(status);
}

static const char gl_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* "Authorization: Basic base64(oauth2:token)": GitLab takes a personal token as the
 * password of any user name on its git-over-HTTP routes. */
static int gl_basic_make(char **out, const char *token)
{
	size_t n = strlen(token) + 7, i, o = 0;
	char *plain = malloc(n + 1), *hdr;
	static const char prefix[] = "Authorization: Basic ";

	*out = NULL;
	if (!plain)
		return -ENOMEM;
	snprintf(plain, n + 1, "oauth2:%s", token);
	hdr = malloc(sizeof(prefix) + (n + 2) / 3 * 4 + 1);
	if (!hdr) {
		explicit_bzero(plain, n);
		free(plain);
		return -ENOMEM;
	}
	memcpy(hdr, prefix, sizeof(prefix) - 1);
	o = sizeof(prefix) - 1;
	for (i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)(unsigned char)plain[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)(unsigned char)plain[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)plain[i + 2];
		hdr[o++] = gl_b64[(v >> 18) & 63];
		hdr[o++] = gl_b64[(v >> 12) & 63];
		hdr[o++] = i + 1 < n ? gl_b64[(v >> 6) & 63] : '=';
		hdr[o++] = i + 2 < n ? gl_b64[v & 63] : '=';
	}
	hdr[o] = '\0';
	explicit_bzero(plain, n);
	free(plain);
	*out = hdr;
	return 0;
}

int64_t gl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Process-wide, as one reefd is one mount and its clients (cache, mlops) share one user's
 * quota on one server: the retry budget, the requests in flight, and what GitLab's
 * RateLimit-* headers said last (docs.gitlab.com: user/gitlab_com "Rate limits",
 * administration/settings/user_and_ip_rate_limits "Response headers": RateLimit-Limit,
 * RateLimit-Observed, RateLimit-Remaining, RateLimit-Reset (Unix time), Retry-After). */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned max_inflight, inflight;
	unsigned retry_max_s;
	int64_t rl_remaining; /* -1: unknown */
	int64_t rl_limit;     /* -1: unknown */
	int64_t rl_reset_ms;  /* CLOCK_REALTIME */
	int64_t rl_next_ms;   /* the earliest a paced request may go */
} gl_lim = {PTHREAD_MUTEX_INITIALIZER,
            PTHREAD_COND_INITIALIZER,
            GL_INFLIGHT_DEFAULT,
            0,
            GL_RETRY_WAIT_S,
            -1,
            -1,
            0,
            0};

void gl_limits_set(unsigned retry_max_s, unsigned max_in_flight)
{
	pthread_mutex_lock(&gl_lim.lock);
	gl_lim.retry_max_s = retry_max_s ? retry_max_s : GL_RETRY_WAIT_S;
	gl_lim.max_inflight = max_in_flight ? max_in_flight : GL_INFLIGHT_DEFAULT;
	pthread_cond_broadcast(&gl_lim.cond);
	pthread_mutex_unlock(&gl_lim.lock);
}

static unsigned gl_retry_budget_s(void)
{
	unsigned v;

	pthread_mutex_lock(&gl_lim.lock);
	v = gl_lim.retry_max_s;
	pthread_mutex_unlock(&gl_lim.lock);
	return v;
}

static void gl_sleep_ms(int64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

	while (ms > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* A slot among the requests in flight: a request waits here, never holding a lock. */
static void gl_slot_get(void)
{
	pthread_mutex_lock(&gl_lim.lock);
	while (gl_lim.inflight >= gl_lim.max_inflight)
		pthread_cond_wait(&gl_lim.cond, &gl_lim.lock);
	gl_lim.inflight++;
	pthread_mutex_unlock(&gl_lim.lock);
}

static void gl_slot_put(void)
{
	pthread_mutex_lock(&gl_lim.lock);
	gl_lim.inflight--;
	pthread_cond_signal(&gl_lim.cond);
	pthread_mutex_unlock(&gl_lim.lock);
}

/* How long this request waits before going, by the last RateLimit headers: nothing while
 * plenty of the quota is left; the rest spread evenly over what remains of the window;
 * none left: the window's end. Each paced request takes its turn (rl_next_ms), so a crowd
 * of threads does not all go at the same instant. */
static int64_t gl_pace_ms(void)
{
	int64_t now = gl_now_ms(), wait = 0, floor_, at;

	pthread_mutex_lock(&gl_lim.lock);
	floor_ = gl_lim.rl_limit > 0 && gl_lim.rl_limit / 10 > GL_PACE_FLOOR ? gl_lim.rl_limit / 10
	                                                                     : GL_PACE_FLOOR;
	if (gl_lim.rl_remaining >= 0 && gl_lim.rl_reset_ms > now && gl_lim.rl_remaining <= floor_) {
		if (gl_lim.rl_remaining == 0) {
			at = gl_lim.rl_next_ms > gl_lim.rl_reset_ms ? gl_lim.rl_next_ms
			                                            : gl_lim.rl_reset_ms;
			gl_lim.rl_next_ms = at + 10;
		} else {
			at = gl_lim.rl_next_ms > now ? gl_lim.rl_next_ms : now;
			gl_lim.rl_next_ms =
			    at + (gl_lim.rl_reset_ms - now) / (gl_lim.rl_remaining + 1);
			gl_lim.rl_remaining--;
		}
		wait = at - now;
	}
	pthread_mutex_unlock(&gl_lim.lock);
	return wait;
}

static bool gl_int_value(const char *v, int64_t *out)
{
	char *end;
	long long x;

	if (!v[0])
		return false;
	errno = 0;
	x = strtoll(v, &end, 10);
	if (*end || errno || x < 0)
		return false;
	*out = x;
	return true;
}

/* Remembers the quota the server reported with an answer. RateLimit-Reset is Unix time
 * on GitLab; a small number is taken as seconds from now (the IETF draft's meaning). */
static void gl_note_ratelimit(const struct gl_req *rq)
{
	int64_t rem, reset, limit, now = gl_now_ms();

	if (!gl_int_value(rq->rl_remaining, &rem) || !gl_int_value(rq->rl_reset, &reset))
		return;
	reset = reset < 1000000000 ? now + reset * 1000 : reset * 1000;
	if (reset > now + 3600 * 1000)
		reset = now + 3600 * 1000;
	pthread_mutex_lock(&gl_lim.lock);
	gl_lim.rl_remaining = rem;
	gl_lim.rl_reset_ms = reset;
	if (gl_int_value(rq->rl_limit, &limit))
		gl_lim.rl_limit = limit;
	pthread_mutex_unlock(&gl_lim.lock);
}

static void gl_share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct gl *g = arg;

	(void)h;
	(void)access;
	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&g->share_locks[data]);
}

static void gl_share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct gl *g = arg;

	(void)h;
	if ((unsigned)data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&g->share_locks[data]);
}

static int gl_share_new(struct gl *g)
{
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&g->share_locks[i], NULL);
	g->share = curl_share_init();
	if (!g->share)
		return -ENOMEM;
	if (curl_share_setopt(g->share, CURLSHOPT_LOCKFUNC, gl_share_lock) != CURLSHE_OK ||
	    curl_share_setopt(g->share, CURLSHOPT_UNLOCKFUNC, gl_share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(g->share, CURLSHOPT_USERDATA, g) != CURLSHE_OK ||
	    curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
	    curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
		/* an older libcurl without a shared connection cache: each pooled handle
		 * still keeps its own connections alive */
		curl_share_cleanup(g->share);
		g->share = NULL;
	}
	return 0;
}

int gl_new(struct gl **out, const char *server, const char *token)
{
	struct gl *g;
	size_t len;

	*out = NULL;
	pthread_once(&gl_curl_once, gl_curl_init);
	if (!gl_curl_ok)
		return -ENOMEM;
	if (!server || (strncmp(server, "http://", 7) != 0 && strncmp(server, "https://", 8) != 0))
		return -EINVAL;
	if (token && (strpbrk(token, "\r\n") || strlen(token) > 1024))
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->lock, NULL);
	if (gl_share_new(g) < 0)
		goto nomem;
	g->server = strdup(server);
	if (!g->server)
		goto nomem;
	len = strlen(g->server);
	while (len && g->server[len - 1] == '/')
		g->server[--len] = '\0';
	if (asprintf(&g->api, "%s/api/v4", g->server) < 0) {
		g->api = NULL;
		goto nomem;
	}
	if (token && *token && asprintf(&g->token_hdr, "PRIVATE-TOKEN: %s", token) < 0) {
		g->token_hdr = NULL;
		goto nomem;
	}
	if (token && *token && gl_basic_make(&g->basic_hdr, token) < 0)
		goto nomem;
	g->stall_s = GL_STALL_S;
	*out = g;
	return 0;
nomem:
	gl_free(g);
	return -ENOMEM;
}

void gl_free(struct gl *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->npool; i++)
		curl_easy_cleanup(g->pool[i]);
	/* after every handle that used it (the share refuses to go while one does) */
	if (g->share)
		curl_share_cleanup(g->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&g->share_locks[i]);
	if (g->token_hdr) {
		explicit_bzero(g->token_hdr, strlen(g->token_hdr));
		free(g->token_hdr);
	}
	if (g->basic_hdr) {
		explicit_bzero(g->basic_hdr, strlen(g->basic_hdr));
		free(g->basic_hdr);
	}
	pthread_mutex_destroy(&g->lock);
	free(g->external);
	free(g->server);
	free(g->api);
	free(g);
}

void gl_set_stall(struct gl *g, unsigned stall_s)
{
	g->stall_s = stall_s ? (long)stall_s : GL_STALL_S;
}

int64_t gl_retry_until(struct gl *g)
{
	return __atomic_load_n(&g->retry_until, __ATOMIC_RELAXED);
}

void gl_set_err_hook(struct gl *g, void (*fn)(void *arg, const char *msg), void *arg)
{
	g->err_hook = fn;
	g->err_arg = arg;
}

void gl_counters(struct gl *g, uint64_t *requests, uint64_t *errors)
{
	*requests = __atomic_load_n(&g->requests, __ATOMIC_RELAXED);
	*errors = __atomic_load_n(&g->errors, __ATOMIC_RELAXED);
}

uint64_t gl_connections(struct gl *g)
{
	return __atomic_load_n(&g->connects, __ATOMIC_RELAXED);
}

static CURL *gl_handle_get(struct gl *g)
{
	CURL *h = NULL;

	pthread_mutex_lock(&g->lock);
	if (g->npool)
		h = g->pool[--g->npool];
	pthread_mutex_unlock(&g->lock);
	return h ? h : curl_easy_init();
}

/* Handles keep their connections: returning one lets the next call reuse them. */
static void gl_handle_put(struct gl *g, CURL *h)
{
	pthread_mutex_lock(&g->lock);
	if (g->npool < GL_POOL_MAX) {
		g->pool[g->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&g->lock);
	if (h)
		curl_easy_cleanup(h);
}

/* The token only goes to URLs under our own server (redirects may point elsewhere). */
bool gl_same_origin(const struct gl *g, const char *url)
{
	size_t n = strlen(g->server);

	return strncmp(url, g->server, n) == 0 && (url[n] == '/' || url[n] == '?' || !url[n]);
}

int gl_origin(const char *url, char *out, size_t n, bool *loopback)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int r = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
		goto out;
	if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)
		goto out;
	for (char *p = scheme; *p; p++)
		*p = (char)(*p | 0x20);
	for (char *p = host; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p | 0x20);
	if (loopback) {
		size_t hl = strlen(host);

		/* "localhost" and its subdomains resolve to loopback (RFC 6761) */
		*loopback = strcmp(host, "localhost") == 0 ||
		            (hl > 10 && strcmp(host + hl - 10, ".localhost") == 0) ||
		            strncmp(host, "127.", 4) == 0 || strcmp(host, "[::1]") == 0;
	}
	if ((size_t)snprintf(out, n, "%s://%s:%s", scheme, host, port) >= n)
		goto out;
	r = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

bool gl_url_allowed(const struct gl *g, const char *url)
{
	char origin[512];
	bool loopback = false;

	if (gl_same_origin(g, url))
		return true;
	if (gl_origin(url, origin, sizeof(origin), &loopback) < 0)
		return false;
	return strncmp(origin, "https://", 8) == 0 || loopback;
}

static bool gl_origin_eq(const char *a, const char *b)
{
	char oa[512], ob[512];

	return gl_origin(a, oa, sizeof(oa), NULL) == 0 && gl_origin(b, ob, sizeof(ob), NULL) == 0 &&
	       strcmp(oa, ob) == 0;
}

/* Whether a header line is one of our own credentials (name case-insensitive). */
static bool gl_is_our_credential(const struct gl *g, const char *line)
{
	const char *ours[] = {g->token_hdr, g->basic_hdr};

	for (size_t i = 0; i < 2; i++) {
		const char *c, *colon;

		if (!ours[i])
			continue;
		colon = strchr(ours[i], ':');
		c = strchr(line, ':');
		if (!c || !colon || c - line != colon - ours[i] ||
		    strncasecmp(line, ours[i], (size_t)(c - line)) != 0)
			continue;
		c++;
		colon++;
		while (*c == ' ')
			c++;
		while (*colon == ' ')
			colon++;
		if (strcmp(c, colon) == 0)
			return true;
	}
	return false;
}

static void gl_copy_value(char *dst, size_t len, const char *v, size_t vlen)
{
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	while (vlen && *v == ' ') {
		v++;
		vlen--;
	}
	if (vlen >= len) {
		dst[0] = '\0'; /* too long to be a value we trust */
		return;
	}
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
}

/* Finds the rel="next" URL in a Link header. */
static void gl_parse_link(char *dst, size_t len, const char *v, size_t vlen)
{
	const char *end = v + vlen;

	while (v < end) {
		const char *lt = memchr(v, '<', (size_t)(end - v)), *gt, *comma;

		if (!lt || !(gt = memchr(lt, '>', (size_t)(end - lt))))
			return;
		comma = memchr(gt, ',', (size_t)(end - gt));
		if (!comma)
			comma = end;
		for (const char *p = gt; p + 8 <= comma; p++) {
			if (strncasecmp(p, "rel=\"next\"", 10) == 0 ||
			    strncasecmp(p, "rel=next", 8) == 0) {
				gl_copy_value(dst, len, lt + 1, (size_t)(gt - lt - 1));
				return;
			}
		}
		v = comma + 1;
	}
}

static size_t gl_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct gl_req *rq = arg;
	size_t len = size * nmemb;
	const char *colon = memchr(data, ':', len);
	struct {
		const char *name;
		char *dst;
		size_t dlen;
	} const want[] = {
	    {"location", rq->location, sizeof(rq->location)},
	    {"x-next-page", rq->next_page, sizeof(rq->next_page)},
	    {"retry-after", rq->retry_after, sizeof(rq->retry_after)},
	    {"ratelimit-remaining", rq->rl_remaining, sizeof(rq->rl_remaining)},
	    {"ratelimit-reset", rq->rl_reset, sizeof(rq->rl_reset)},
	    {"ratelimit-limit", rq->rl_limit, sizeof(rq->rl_limit)},
	    {"x-gitlab-blob-id", rq->blob_id, sizeof(rq->blob_id)},
	    {"x-gitlab-size", rq->size, sizeof(rq->size)},
	    {"content-range", rq->content_range, sizeof(rq->content_range)},
	};

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		/* a new response (after a 100 or a redirect): forget the previous headers */
		rq->location[0] = rq->link_next[0] = rq->next_page[0] = '\0';
		rq->retry_after[0] = rq->blob_id[0] = rq->size[0] = rq->content_range[0] = '\0';
		rq->rl_remaining[0] = rq->rl_reset[0] = rq->rl_limit[0] = '\0';
		return len;
	}
	if (!colon)
		return len;
	size_t nl = (size_t)(colon - data), vl = len - nl - 1;

	if (nl == 4 && strncasecmp(data, "link", 4) == 0) {
		gl_parse_link(rq->link_next, sizeof(rq->link_next), colon + 1, vl);
		return len;
	}
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (strlen(want[i].name) == nl && strncasecmp(data, want[i].name, nl) == 0)
			gl_copy_value(want[i].dst, want[i].dlen, colon + 1, vl);
	return len;
}

/* "bytes a-b/total" (total may be "*"); -EIO when malformed. */
static int gl_parse_content_range(const char *v, uint64_t *first, int64_t *total)
{
	unsigned long long a, b;
	char tot[32];

	if (sscanf(v, "bytes %llu-%llu/%31s", &a, &b, tot) != 3 || b < a)
		return -EIO;
	*first = a;
	*total = -1;
	if (strcmp(tot, "*") != 0) {
		char *end;
		unsigned long long t = strtoull(tot, &end, 10);

		if (*end || t <= b)
			return -EIO;
		*total = (int64_t)t;
	}
	return 0;
}

/* Begins a stream from the response headers: where its first byte sits and how big the
 * whole object is. A 200 to a ranged request is the whole object from byte 0: servers
 * that ignore Range (GitLab's raw routes) still work, from the start. */
static int gl_stream_begin(struct gl_req *rq, long status)
{
	curl_off_t cl = -1;
	uint64_t first = 0;
	int64_t total = -1;

	curl_easy_getinfo(rq->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
	if (status == 206) {
		if (gl_parse_content_range(rq->content_range, &first, &total) < 0 ||
		    first != rq->off) {
			log_warn("GET %s: bad Content-Range \"%.60s\" for offset %" PRIu64,
			         rq->show, rq->content_range, rq->off);
			return -EIO;
		}
	} else {
		total = cl >= 0 ? (int64_t)cl : -1;
	}
	if (total >= 0 && (uint64_t)total > rq->max)
		return -EIO;
	return rq->ssink->begin ? rq->ssink->begin(rq->ssink->arg, status == 206, first, total) : 0;
}

/* Hands a chunk of a 2xx body to a sink within the request's byte cap; libcurl's
 * write-callback convention: len, or 0 to abort (why in cb_err). */
static size_t gl_deliver(struct gl_req *rq, int (*fn)(void *arg, const void *d, size_t n),
                         void *arg, const char *data, size_t len)
{
	int r;

	if (len > rq->max - rq->got) {
		rq->cb_err = -EIO;
		return 0;
	}
	rq->got += len;
	r = fn(arg, data, len);
	if (r < 0) {
		rq->cb_err = r;
		return 0;
	}
	return len;
}

static size_t gl_on_stream(struct gl_req *rq, char *data, size_t len, long status)
{
	int r;

	if (status != 200 && status != 206) {
		size_t room = GL_ERRBODY_MAX - rq->errbody.len;

		buf_append(&rq->errbody, data, len < room ? len : room);
		return len;
	}
	if (!rq->begun) {
		rq->begun = true;
		r = gl_stream_begin(rq, status);
		if (r < 0) {
			rq->cb_err = r;
			return 0;
		}
	}
	return gl_deliver(rq, rq->ssink->data, rq->ssink->arg, data, len);
}

/* A binary POST body: the head in memory, then the file. */
static size_t gl_on_upload(char *out, size_t size, size_t nmemb, void *arg)
{
	struct gl_req *rq = arg;
	size_t cap = size * nmemb, done = 0;

	if (rq->post_pos < rq->post_head_len) {
		size_t k = rq->post_head_len - (size_t)rq->post_pos;

		if (k > cap)
			k = cap;
		memcpy(out, (const char *)rq->post_head + rq->post_pos, k);
		rq->post_pos += k;
		done = k;
	}
	if (done < cap && rq->post_pos >= rq->post_head_len) {
		uint64_t off = rq->post_pos - rq->post_head_len;
		size_t k = cap - done;
		ssize_t got;

		if (off >= rq->post_fd_len)
			return done;
		if (k > rq->post_fd_len - off)
			k = (size_t)(rq->post_fd_len - off);
		got = pread(rq->post_fd, out + done, k, (off_t)off);
		if (got <= 0) {
			rq->cb_err = -EIO;
			return CURL_READFUNC_ABORT;
		}
		rq->post_pos += (uint64_t)got;
		done += (size_t)got;
	}
	return done;
}

static size_t gl_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct gl_req *rq = arg;
	size_t len = size * nmemb;
	long status = 0;
	int r;

	curl_easy_getinfo(rq->h, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		/* an error body: keep the start for the log, drop the rest */
		size_t room = GL_ERRBODY_MAX - rq->errbody.len;

		buf_append(&rq->errbody, data, len < room ? len : room);
		return len;
	}
	if (rq->ssink)
		return gl_on_stream(rq, data, len, status);
	if (!rq->sink) {
		r = buf_append(&rq->body, data, len);
		if (r < 0) {
			rq->cb_err = r == -EFBIG ? -EIO : r;
			return 0;
		}
		return len;
	}
	if (!rq->begun) {
		curl_off_t cl = -1;

		rq->begun = true;
		curl_easy_getinfo(rq->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (cl >= 0 && (uint64_t)cl > rq->max) {
			rq->cb_err = -EIO;
			return 0;
		}
		r = rq->sink->begin ? rq->sink->begin(rq->sink->arg, cl >= 0 ? (int64_t)cl : -1)
		                    : 0;
		if (r < 0) {
			rq->cb_err = r;
			return 0;
		}
	}
	return gl_deliver(rq, rq->sink->data, rq->sink->arg, data, len);
}

/* An empty body for a 2xx stream still has to begin (the empty blob). */
static int gl_finish_stream(struct gl_req *rq)
{
	if (rq->ssink) {
		if (rq->begun)
			return 0;
		rq->begun = true;
		return gl_stream_begin(rq, rq->status);
	}
	if (rq->sink && !rq->begun && rq->sink->begin) {
		curl_off_t cl = -1;

		rq->begun = true;
		curl_easy_getinfo(rq->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		return rq->sink->begin(rq->sink->arg, cl >= 0 ? (int64_t)cl : -1);
	}
	return 0;
}

/* Seconds the server asks us to wait: Retry-After in seconds or as an HTTP date, else
 * until RateLimit-Reset, else an exponential backoff (1, 2, 4, ... s). */
static int64_t gl_retry_wait_s(const struct gl_req *rq, unsigned attempt)
{
	int64_t s, reset;

	if (gl_int_value(rq->retry_after, &s))
		return s;
	if (rq->retry_after[0]) {
		time_t t = curl_getdate(rq->retry_after, NULL);

		if (t != -1) {
			s = (int64_t)t - gl_now_ms() / 1000;
			return s < 0 ? 0 : s;
		}
	}
	if (gl_int_value(rq->rl_reset, &reset)) {
		s = reset < 1000000000 ? reset : reset - gl_now_ms() / 1000;
		if (s >= 0)
			return s;
	}
	return (int64_t)1 << attempt;
}

/* Remembers how long the server asked us to stay away (for pollers that can wait). */
static void gl_note_retry(struct gl *g, const struct gl_req *rq)
{
	int64_t s = gl_retry_wait_s(rq, 0);

	if (s > 3600)
		s = 3600;
	__atomic_store_n(&g->retry_until, gl_now_ms() + s * 1000, __ATOMIC_RELAXED);
}

/* The request's headers beyond Accept: our credentials (PRIVATE-TOKEN, or Basic for git
 * routes) only to our own server; a target's headers (an LFS action's, which may carry
 * their own authorization) only to the target's own origin (to_target), and never a copy
 * of our credentials to a host that is not our server; a stream's Range. Returns NULL
 * when out of memory. */
static struct curl_slist *gl_add_headers(struct gl *g, const struct gl_req *rq, const char *url,
                                         bool to_target, struct curl_slist **hdrs)
{
	bool own = gl_same_origin(g, url), target_auth = false;
	struct curl_slist *tmp = *hdrs;
	char range[64];

	if (!tmp)
		return NULL;
	if (rq->target && to_target) {
		for (size_t i = 0; tmp && i < rq->target->nheaders; i++) {
			const char *h = rq->target->headers[i];

			if (!own && gl_is_our_credential(g, h))
				continue;
			if (strncasecmp(h, "authorization:", 14) == 0)
				target_auth = true;
			tmp = curl_slist_append(*hdrs, h);
			if (tmp)
				*hdrs = tmp;
		}
	}
	if (tmp && own && !target_auth) {
		const char *auth =
		    rq->basic || (rq->target && rq->target->basic) ? g->basic_hdr : g->token_hdr;

		if (auth) {
			tmp = curl_slist_append(*hdrs, auth);
			if (tmp)
				*hdrs = tmp;
		}
	}
	if (tmp && rq->post && (rq->content_type || rq->post_type)) {
		char ct[128];

		/* rq->content_type is "Accept: <type>"; the body has the same type unless the
		 * protocol names another (git's upload-pack request and result) */
		if (rq->post_type)
			snprintf(ct, sizeof(ct), "%s", rq->post_type);
		else
			snprintf(ct, sizeof(ct), "Content-Type:%s", rq->content_type + 7);
		tmp = curl_slist_append(*hdrs, ct);
		if (tmp)
			*hdrs = tmp;
	}
	/* always ranged, even from 0: a 206 or a 200 to the first request tells whether the
	 * server can serve a later read far ahead without sending what lies before it */
	if (tmp && rq->ssink) {
		snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-", rq->off);
		tmp = curl_slist_append(*hdrs, range);
		if (tmp)
			*hdrs = tmp;
	}
	return tmp;
}

/* One exchange, following redirects (GET, by hand: each hop gets the headers its own
 * origin may see) and retrying 429s (and 503s that say when) within the retry budget. */
int gl_perform(struct gl *g, struct gl_req *rq)
{
	char *url = strdup(rq->url), errbuf[CURL_ERROR_SIZE];
	unsigned redirects = 0, retries = 0;
	int64_t waited_ms = 0, budget_ms = (int64_t)gl_retry_budget_s() * 1000;
	int r = 0;

	if (!url)
		return -ENOMEM;
	/* an href elsewhere may carry a signature in its query: never logged */
	rq->show = gl_same_origin(g, rq->url) ? rq->url : "(an href on another host)";
	rq->h = gl_handle_get(g);
	if (!rq->h) {
		free(url);
		return -ENOMEM;
	}
	for (;;) {
		struct curl_slist *hdrs = NULL, *tmp;
		bool head = strcmp(rq->method, "HEAD") == 0, own = gl_same_origin(g, url);
		/* a target's headers belong to its href's origin; a redirect elsewhere drops
		 * them (libcurl itself would keep custom headers such as PRIVATE-TOKEN across
		 * hosts; only Authorization is dropped since 7.58) */
		bool to_target = rq->target && gl_origin_eq(url, rq->target->url);
		CURLcode c;
		CURL *h = rq->h;

		if (!gl_url_allowed(g, url)) {
			log_warn("%s %s: refused: plain http to a host that is not the server",
			         rq->method, rq->show);
			snprintf(rq->why, sizeof(rq->why),
			         "refused: plain http to a host that is not the server");
			r = -EIO;
			break;
		}
		curl_easy_reset(h);
		errbuf[0] = 0;
		rq->why[0] = 0;
		buf_reset(&rq->body);
		buf_reset(&rq->errbody);
		rq->cb_err = 0;
		rq->status = 0;
		tmp = curl_slist_append(hdrs, rq->sink || rq->ssink ? "Accept: */*"
		                              : rq->content_type    ? rq->content_type
		                                                    : "Accept: application/json");
		if (tmp)
			hdrs = tmp;
		tmp = gl_add_headers(g, rq, url, to_target, &hdrs);
		if (!tmp) {
			curl_slist_free_all(hdrs);
			r = -ENOMEM;
			break;
		}
		curl_easy_setopt(h, CURLOPT_URL, url);
		curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
		if (g->share)
			curl_easy_setopt(h, CURLOPT_SHARE, g->share);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(h, CURLOPT_USERAGENT, "reefd/0.1");
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)GL_CONNECT_MS);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, g->stall_s);
		if (!rq->sink && !rq->ssink) {
			curl_easy_setopt(h, CURLOPT_TIMEOUT, GL_JSON_TIMEOUT);
			curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
		}
		if (rq->post && (rq->post_head || rq->post_fd_len)) {
			rq->post_pos = 0; /* again from the start at a retry */
			curl_easy_setopt(h, CURLOPT_POST, 1L);
			if (strcmp(rq->method, "PUT") == 0) /* an LFS upload: PUT with this body */
				curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
			curl_easy_setopt(h, CURLOPT_READFUNCTION, gl_on_upload);
			curl_easy_setopt(h, CURLOPT_READDATA, rq);
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
			                 (curl_off_t)(rq->post_head_len + rq->post_fd_len));
		} else if (rq->post) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->post);
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->post));
		}
		curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, gl_on_header);
		curl_easy_setopt(h, CURLOPT_HEADERDATA, rq);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, gl_on_body);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, rq);
		if (head)
			curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
		/* object downloads: libcurl's 16 KiB default means 65 536 callbacks (each a
		 * pwrite and a wake-up of the readers) per GiB; 512 KiB makes that 2 048 */
		if (rq->ssink)
			curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)GL_STREAM_BUFFER);
		if (own) {
			int64_t pace = gl_pace_ms();

			if (pace > 0) {
				if (waited_ms + pace > budget_ms) {
					curl_slist_free_all(hdrs);
					log_warn("%s %s: the server's rate limit leaves no request "
					         "for %" PRId64
					         " s, more than the retry budget (%" PRId64 " s)",
					         rq->method, rq->url, pace / 1000,
					         budget_ms / 1000);
					r = -EIO;
					break;
				}
				log_debug("%s %s: paced by RateLimit-Remaining, %" PRId64 " ms",
				          rq->method, rq->url, pace);
				gl_sleep_ms(pace);
				waited_ms += pace;
			}
		}
		__atomic_add_fetch(&g->requests, 1, __ATOMIC_RELAXED);
		gl_slot_get();
		c = curl_easy_perform(h);
		gl_slot_put();
		curl_slist_free_all(hdrs);
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rq->status);
		{
			long conns = 0;

			if (curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns) == CURLE_OK &&
			    conns > 0)
				__atomic_add_fetch(&g->connects, (uint64_t)conns, __ATOMIC_RELAXED);
		}
		if (c != CURLE_OK) {
			r = rq->cb_err ? rq->cb_err : gl_err_from_curl(c);
			/* curl's own message names the host, the port or the certificate */
			snprintf(rq->why, sizeof(rq->why), "%s",
			         rq->cb_err  ? strerror(-rq->cb_err)
			         : errbuf[0] ? errbuf
			                     : curl_easy_strerror(c));
			if (!rq->cb_err)
				log_warn("%s %s: %s", rq->method, rq->show, rq->why);
			break;
		}
		if (own)
			gl_note_ratelimit(rq);
		if (rq->status == 429 && own)
			gl_note_retry(g, rq);
		if (rq->status >= 300 && rq->status < 400 && !head && !rq->post &&
		    rq->location[0] && redirects < GL_REDIRECTS_MAX) {
			char *next = NULL;

			redirects++;
			if (curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next) != CURLE_OK ||
			    !next ||
			    (strncmp(next, "http://", 7) != 0 &&
			     strncmp(next, "https://", 8) != 0)) {
				snprintf(rq->why, sizeof(rq->why),
				         "HTTP %ld to a place not followed", rq->status);
				r = -EIO;
				break;
			}
			free(url);
			url = strdup(next);
			if (!url) {
				r = -ENOMEM;
				break;
			}
			continue;
		}
		if ((rq->status == 429 || (rq->status == 503 && rq->retry_after[0])) &&
		    retries < GL_RETRY_MAX) {
			int64_t s = gl_retry_wait_s(rq, retries++);

			if (waited_ms + s * 1000 > budget_ms) {
				log_warn("%s %s: HTTP %ld asks to wait %" PRId64
				         " s, more than the retry budget (retry_max=%" PRId64 ")",
				         rq->method, rq->show, rq->status, s, budget_ms / 1000);
				snprintf(rq->why, sizeof(rq->why),
				         "HTTP %ld asks to wait %" PRId64
				         " s, more than retry_max=%" PRId64,
				         rq->status, s, budget_ms / 1000);
				r = -EIO;
				break;
			}
			log_info("%s %s: HTTP %ld, retrying in %" PRId64 " s", rq->method, rq->show,
			         rq->status, s);
			gl_sleep_ms(s * 1000);
			waited_ms += s * 1000;
			continue;
		}
		r = gl_err_from_status(rq->status);
		/* another host's refusal is not the server's verdict on the file */
		if (r < 0 && !own)
			r = -EIO;
		if (r == 0) {
			r = gl_finish_stream(rq);
			if (r < 0)
				snprintf(rq->why, sizeof(rq->why), "transfer incomplete: %s",
				         strerror(-r));
		} else if (r != -ENOENT) {
			log_warn("%s %s: HTTP %ld %.200s", rq->method, rq->show, rq->status,
			         own && rq->errbody.data ? rq->errbody.data : "");
			snprintf(rq->why, sizeof(rq->why), "HTTP %ld%s", rq->status,
			         rq->status == 401   ? " (the token was refused)"
			         : rq->status == 403 ? " (forbidden)"
			                             : "");
		}
		break;
	}
	/* a 404 is an answer (no such path), a cancel the caller's choice: neither is a
	 * failure; every other one is counted and told, so status shows each with its why */
	if (r < 0 && r != -ECANCELED && r != -ENOENT) {
		__atomic_add_fetch(&g->errors, 1, __ATOMIC_RELAXED);
		if (g->err_hook) {
			char msg[512];

			snprintf(msg, sizeof(msg), "%s %.200s: %s", rq->method, rq->show,
			         rq->why[0] ? rq->why : strerror(-r));
			g->err_hook(g->err_arg, msg);
		}
	}
	gl_handle_put(g, rq->h);
	rq->h = NULL;
	free(url);
	return r;
}

void gl_req_init(struct gl_req *rq, const char *method, const char *url)
{
	memset(rq, 0, sizeof(*rq));
	rq->method = method;
	rq->url = url;
	buf_init(&rq->body, GL_JSON_MAX);
	buf_init(&rq->errbody, GL_ERRBODY_MAX + 1);
}

void gl_req_free(struct gl_req *rq)
{
	buf_free(&rq->body);
	buf_free(&rq->errbody);
}

int gl_parse(struct gl_req *rq, json_t **out)
{
	int r = jsonx_parse(out, rq->body.data ? rq->body.data : "", rq->body.len, 0, GL_JSON_MAX);

	if (r < 0) {
		log_warn("%s %s: malformed JSON (%zu bytes)", rq->method, rq->show, rq->body.len);
		return -EIO;
	}
	return 0;
}

int gl_url(struct gl *g, char **out, const char *fmt, ...)
{
	struct buf b = BUF_INIT(GL_URL_MAX);
	va_list ap;
	int r;

	r = buf_printf(&b, "%s/", g->api);
	if (r == 0) {
		va_start(ap, fmt);
		r = buf_vprintf(&b, fmt, ap);
		va_end(ap);
	}
	if (r < 0) {
		buf_free(&b);
		return r == -EFBIG ? -ENAMETOOLONG : r;
	}
	*out = buf_steal(&b);
	return 0;
}

/* URL-encodes s into a new string. */
char *gl_enc(const char *s)
{
	struct buf b = BUF_INIT(GL_URL_MAX);

	if (url_encode(&b, s) < 0) {
		buf_free(&b);
		return NULL;
	}
	if (!b.data)
		return strdup("");
	return buf_steal(&b);
}

int gl_get_json(struct gl *g, const char *url, json_t **out)
{
	struct gl_req rq;
	int r;

	*out = NULL;
	gl_req_init(&rq, "GET", url);
	r = gl_perform(g, &rq);
	if (r == 0)
		r = gl_parse(&rq, out);
	gl_req_free(&rq);
	return r;
}

/* The next page's URL: Link rel="next" re-based onto our server (the token must not go
 * to an external base URL the server was configured with), else X-Next-Page. */
static char *gl_next_url(struct gl *g, const struct gl_req *rq, const char *first)
{
	char *next = NULL;

	if (rq->link_next[0]) {
		const char *p = strstr(rq->link_next, "/api/v4/");

		if (p && asprintf(&next, "%s%s", g->api, p + 7) < 0)
			next = NULL;
		return next;
	}
	if (rq->next_page[0]) {
		char *end;
		long page = strtol(rq->next_page, &end, 10);

		if (*end || page < 2)
			return NULL;
		if (asprintf(&next, "%s%cpage=%ld", first, strchr(first, '?') ? '&' : '?', page) <
		    0)
			next = NULL;
	}
	return next;
}

/* Calls on_page for each page's array. A server that keeps answering rel="next" ends in
 * -EIO quickly and in bounded memory: after max_items items, max_items / GL_PER_PAGE + 10
 * pages (every listing asks for GL_PER_PAGE a page), GL_PAGES_BYTES_MAX bytes of JSON in
 * all, GL_PAGES_TIMEOUT_S seconds, or a next page that is the page just read. */
int gl_get_pages(struct gl *g, const char *first, size_t max_items,
                 int (*on_page)(void *arg, json_t *arr), void *arg)
{
	char *url = strdup(first);
	size_t items = 0, pages = 0, max_pages = max_items / GL_PER_PAGE + 10, bytes = 0;
	int64_t deadline = gl_now_ms() + GL_PAGES_TIMEOUT_S * 1000;
	int r = 0;

	if (!url)
		return -ENOMEM;
	while (url) {
		struct gl_req rq;
		json_t *arr = NULL;
		char *next;

		gl_req_init(&rq, "GET", url);
		/* what is left of the listing's byte budget caps this page too */
		buf_init(&rq.body, GL_PAGES_BYTES_MAX - bytes < GL_JSON_MAX
		                       ? GL_PAGES_BYTES_MAX - bytes
		                       : GL_JSON_MAX);
		r = gl_perform(g, &rq);
		bytes += rq.body.len;
		if (r == 0)
			r = gl_parse(&rq, &arr);
		if (r == 0 && !json_is_array(arr))
			r = -EIO;
		if (r == 0) {
			items += json_array_size(arr);
			if (items > max_items) {
				log_warn("GET %s: more than %zu items", first, max_items);
				r = -EIO;
			}
		}
		if (r == 0)
			r = on_page(arg, arr);
		next = r == 0 && json_array_size(arr) ? gl_next_url(g, &rq, first) : NULL;
		json_decref(arr);
		gl_req_free(&rq);
		if (next && strcmp(next, url) == 0) {
			log_warn("GET %s: the next page is the page just read", first);
			free(next);
			next = NULL;
			r = -EIO;
		}
		free(url);
		url = next;
		if (url && (++pages >= max_pages || bytes >= GL_PAGES_BYTES_MAX ||
		            gl_now_ms() > deadline)) {
			log_warn("GET %s: pagination goes on past %zu pages, %zu bytes or %d s",
			         first, pages, bytes, GL_PAGES_TIMEOUT_S);
			free(url);
			return -EIO;
		}
	}
	return r;
}

static int gl_collect(void *arg, json_t *arr)
{
	return json_array_extend(arg, arr) == 0 ? 0 : -ENOMEM;
}

int gl_get_list(struct gl *g, const char *url, json_t **out)
{
	json_t *all = json_array();
	int r;

	*out = NULL;
	if (!all)
		return -ENOMEM;
	r = gl_get_pages(g, url, GL_LIST_MAX, gl_collect, all);
	if (r < 0) {
		json_decref(all);
		return r;
	}
	*out = all;
	return 0;
}

/* Project path segments encoded one by one: the slashes between them stay. */
char *gl_path_enc(const char *path)
{
	struct buf b = BUF_INIT(GL_URL_MAX);
	const char *p = path;
	char seg[256];

	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || n >= sizeof(seg))
			goto fail;
		memcpy(seg, p, n);
		seg[n] = '\0';
		if (url_encode(&b, seg) < 0 || (slash && buf_append(&b, "/", 1) < 0))
			goto fail;
		p += n + (slash ? 1 : 0);
	}
	return b.data ? buf_steal(&b) : NULL;
fail:
	buf_free(&b);
	return NULL;
}

void gl_target_free(struct gl_target *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nheaders; i++) {
		explicit_bzero(t->headers[i], strlen(t->headers[i]));
		free(t->headers[i]);
	}
	free(t->headers);
	free(t->url);
	gl_lfs_src_free(t->lfs);
	memset(t, 0, sizeof(*t));
}

int gl_target_copy(struct gl_target *dst, const struct gl_target *src)
{
	memset(dst, 0, sizeof(*dst));
	dst->basic = src->basic;
	dst->expires_ms = src->expires_ms;
	dst->url = strdup(src->url ? src->url : "");
	if (!dst->url)
		return -ENOMEM;
	if (src->nheaders) {
		dst->headers = calloc(src->nheaders, sizeof(char *));
		if (!dst->headers)
			goto nomem;
		for (; dst->nheaders < src->nheaders; dst->nheaders++) {
			dst->headers[dst->nheaders] = strdup(src->headers[dst->nheaders]);
			if (!dst->headers[dst->nheaders])
				goto nomem;
		}
	}
	return 0;
nomem:
	gl_target_free(dst);
	return -ENOMEM;
}

void gl_note_external(struct gl *g, const json_t *project)
{
	const char *repo = jsonx_str(project, "http_url_to_repo");
	const char *path = jsonx_str(project, "path_with_namespace");
	size_t rl, pl;
	char *ext;

	if (!repo || !path)
		return;
	rl = strlen(repo);
	pl = strlen(path);
	/* "<external>/<path_with_namespace>.git" */
	if (rl <= pl + 5 || rl > GL_URL_MAX || strcmp(repo + rl - 4, ".git") != 0 ||
	    strncmp(repo + rl - 4 - pl, path, pl) != 0 || repo[rl - 5 - pl] != '/')
		return;
	ext = strndup(repo, rl - 5 - pl);
	if (!ext)
		return;
	if (gl_origin(ext, (char[512]){0}, 512, NULL) < 0 || strchr(ext, '?') || strchr(ext, '#')) {
		free(ext);
		return;
	}
	pthread_mutex_lock(&g->lock);
	if (!g->external || strcmp(g->external, ext) != 0) {
		free(g->external);
		g->external = ext;
		ext = NULL;
	}
	pthread_mutex_unlock(&g->lock);
	free(ext);
}

char *gl_external_rebase(struct gl *g, const char *href)
{
	char *out = NULL;
	size_t n;

	pthread_mutex_lock(&g->lock);
	if (g->external && strcmp(g->external, g->server) != 0) {
		n = strlen(g->external);
		if (strncmp(href, g->external, n) == 0 && href[n] == '/' &&
		    asprintf(&out, "%s%s", g->server, href + n) < 0)
			out = NULL;
	}
	pthread_mutex_unlock(&g->lock);
	return out;
}

static int gl_stream_once(struct gl *g, const struct gl_target *t, uint64_t off, uint64_t max,
                          const struct gl_stream_sink *sink, long *status, bool *begun)
{
	struct gl_req rq;
	int r;

	gl_req_init(&rq, "GET", t->url);
	rq.ssink = sink;
	rq.max = max;
	rq.off = off;
	rq.target = t;
	r = gl_perform(g, &rq);
	*status = rq.status;
	*begun = rq.begun;
	gl_req_free(&rq);
	return r;
}

int gl_stream(struct gl *g, const struct gl_target *t, uint64_t off, uint64_t max,
              const struct gl_stream_sink *sink)
{
	struct gl_target cur;
	unsigned gen = 0;
	long status = 0;
	bool begun = false;
	int r;

	if (!t || !t->url || !sink || !sink->data)
		return -EINVAL;
	if (!t->lfs)
		return gl_stream_once(g, t, off, max, sink, &status, &begun);
	/* an LFS action: the current one (asked again if it expired), and once more with a
	 * new one if its host refuses it before any byte (an expired signature: S3 answers
	 * 403 "Request has expired") */
	r = gl_lfs_current(g, t->lfs, false, 0, &cur, &gen);
	if (r < 0)
		return r;
	r = gl_stream_once(g, &cur, off, max, sink, &status, &begun);
	gl_target_free(&cur);
	if (r < 0 && !begun && (status == 401 || status == 403)) {
		r = gl_lfs_current(g, t->lfs, true, gen, &cur, &gen);
		if (r < 0)
			return r;
		r = gl_stream_once(g, &cur, off, max, sink, &status, &begun);
		gl_target_free(&cur);
	}
	return r;
}

int gl_call(struct gl *g, const char *method, const char *path, const char *body,
            const char *header, long *status, char **out, size_t *out_len)
{
	struct gl_target t = {0};
	struct gl_req rq;
	char hdr[512], *hv[1] = {hdr}, *url = NULL;
	const struct buf *b;
	int r;

	*status = 0;
	if (out)
		*out = NULL;
	if (out_len)
		*out_len = 0;
	if ((strcmp(method, "GET") && strcmp(method, "POST")) || path[0] != '/' ||
	    (header && (strlen(header) >= sizeof(hdr) || strpbrk(header, "\r\n"))))
		return -EINVAL;
	if (strlen(path) > GL_URL_MAX || asprintf(&url, "%s%s", g->server, path) < 0)
		return url ? -ENAMETOOLONG : -ENOMEM;
	if (header) {
		snprintf(hdr, sizeof(hdr), "%s", header);
		t.headers = hv;
		t.nheaders = 1;
	}
	gl_req_init(&rq, method, url);
	rq.target = &t;
	if (!strcmp(method, "POST")) {
		rq.post = body ? body : "{}";
		rq.content_type = "Accept: application/json";
	}
	r = gl_perform(g, &rq);
	*status = rq.status;
	b = r == 0 ? &rq.body : &rq.errbody;
	if (out && rq.status > 0) {
		*out = b->len ? strndup(b->data, b->len) : strdup("");
		if (!*out)
			r = -ENOMEM;
		else if (out_len)
			*out_len = b->len;
	}
	gl_req_free(&rq);
	free(url);
	return r;
}
