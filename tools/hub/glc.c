/* The management role's GitLab client: see glc.h. */
#include "glc.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/jsonx.h"

#define GLC_TIMEOUT_S         30
#define GLC_CONNECT_TIMEOUT_S 10

static char glc_base_url[512];

int glc_init(const char *base_url)
{
	size_t n = base_url ? strlen(base_url) : 0;

	if (n == 0 || n >= sizeof(glc_base_url) ||
	    (strncmp(base_url, "http://", 7) && strncmp(base_url, "https://", 8)))
		return -EINVAL;
	while (n > 0 && base_url[n - 1] == '/')
		n--;
	memcpy(glc_base_url, base_url, n);
	glc_base_url[n] = '\0';
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return 0;
}

const char *glc_base(void)
{
	return glc_base_url;
}

static size_t glc_write(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	return buf_append(b, p, size * n) == 0 ? size * n : 0;
}

/* hdr is "Authorization: Bearer " or "JOB-TOKEN: " (the token follows it). */
static int glc_do(const char *method, const char *path, const char *hdr, const char *token,
                  const json_t *body, long *status, json_t **out, struct buf *raw)
{
	struct buf resp = BUF_INIT(raw ? GLC_MAX_BODY : GLC_MAX_JSON);
	struct buf url = BUF_INIT(8192), auth = BUF_INIT(1024);
	struct curl_slist *hdrs = NULL;
	char *json = NULL;
	CURL *c;
	CURLcode cc;
	int r = 0;

	*status = 0;
	if (out)
		*out = NULL;
	if (!glc_base_url[0] || !token || !*token || strpbrk(token, "\r\n"))
		return -EINVAL;
	if (buf_printf(&url, "%s/api/v4%s", glc_base_url, path) < 0 ||
	    buf_printf(&auth, "%s%s", hdr, token) < 0) {
		r = -ENAMETOOLONG;
		goto out;
	}
	if (!(c = curl_easy_init())) {
		r = -ENOMEM;
		goto out;
	}
	hdrs = curl_slist_append(hdrs, auth.data);
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (body) {
		json = jsonx_dump(body);
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, json ? json : "{}");
	} else if (!strcmp(method, "POST") || !strcmp(method, "PUT")) {
		/* Content-Length: 0, which proxies in front of GitLab want on a POST */
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
	}
	curl_easy_setopt(c, CURLOPT_URL, url.data);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, glc_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)GLC_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)GLC_CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	/* the token goes to GitLab only: no redirects followed, no other protocols */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	curl_easy_cleanup(c);
	if (cc == CURLE_WRITE_ERROR) {
		r = -EFBIG;
		*status = 0;
		goto out;
	}
	if (cc != CURLE_OK) {
		r = cc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EIO;
		goto out;
	}
	if (raw) {
		buf_reset(raw);
		if (buf_append(raw, resp.data ? resp.data : "", resp.len) < 0)
			r = -EFBIG;
	} else if (out && resp.len && jsonx_parse(out, resp.data, resp.len, 64, GLC_MAX_JSON) < 0) {
		r = -EBADMSG;
	}
out:
	curl_slist_free_all(hdrs);
	free(json);
	buf_free(&resp);
	buf_free(&url);
	explicit_bzero(auth.data ? auth.data : (char *)"", auth.data ? auth.len : 0);
	buf_free(&auth);
	return r;
}

int glc_call(const char *method, const char *path, const char *token, const json_t *body,
             long *status, json_t **out, struct buf *raw)
{
	return glc_do(method, path, "Authorization: Bearer ", token, body, status, out, raw);
}

int glc_call_job(const char *path, const char *job_token, long *status, json_t **out)
{
	/* GitLab reads a CI job token from JOB-TOKEN (lib/gitlab/auth/auth_finders.rb,
	 * JOB_TOKEN_HEADER); as Bearer it would be taken for a personal token */
	return glc_do("GET", path, "JOB-TOKEN: ", job_token, NULL, status, out, NULL);
}
