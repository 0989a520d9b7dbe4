/* git's smart HTTP, protocol v2, as partial clone speaks it: the capability advertisement
 * and upload-pack's `fetch` command (see gl.h; git's Documentation/gitprotocol-v2.txt,
 * gitprotocol-http.txt, technical/partial-clone.txt). GitLab serves both on
 * <project>.git/ (Workhorse → Gitaly, with uploadpack.allowFilter and any reachable id in
 * want); auth is Basic with the token as password, only to the server.
 *
 * Why libcurl and our own pkt-line reader rather than running `git fetch`: the request
 * reuses the mount's keep-alive connections and auth (no token on a command line, in an
 * environment or a credential helper), its bytes go straight into the pack indexer (no
 * repository, refs or shallow file on disk to keep consistent), and errors map to errno
 * in one place. docs/cache.md compares the two. */
#include "gl_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/hash.h"
#include "reef/log.h"
#include "reef/util.h"

#define GL_PKT_MAX   65520 /* the largest pkt-line, header included */
#define GL_CAPS_MAX  ((size_t)64 << 10)
#define GL_FETCH_REQ ((size_t)4 << 20) /* request body: 49 bytes a want */

/* Reads pkt-lines out of a byte stream (the sink's chunks may split them anywhere). */
struct gl_pkt {
	unsigned char buf[GL_PKT_MAX];
	size_t have; /* bytes of the current pkt-line (header included) held */
	int (*line)(void *arg, int kind, const unsigned char *data, size_t len);
	void *arg;
};

/* kind: 0 a data line, 1 flush (0000), 2 delim (0001), 3 response-end (0002) */
static int gl_pkt_feed(struct gl_pkt *p, const unsigned char *d, size_t n)
{
	while (n) {
		size_t want, take;
		unsigned len = 0;

		if (p->have < 4) {
			take = 4 - p->have < n ? 4 - p->have : n;
			memcpy(p->buf + p->have, d, take);
			p->have += take;
			d += take;
			n -= take;
			if (p->have < 4)
				return 0;
		}
		for (int i = 0; i < 4; i++) {
			int v = hex_digit((char)p->buf[i]);

			/* pkt-line lengths are lowercase hex (gitprotocol-common) */
			if (v < 0 || (p->buf[i] >= 'A' && p->buf[i] <= 'F'))
				return -EIO;
			len = len * 16 + (unsigned)v;
		}
		if (len < 4) {
			int r;

			if (len == 3)
				return -EIO;
			p->have = 0;
			r = p->line(p->arg, len == 0 ? 1 : len == 1 ? 2 : 3, NULL, 0);
			if (r)
				return r;
			continue;
		}
		if (len > GL_PKT_MAX)
			return -EIO;
		want = len - p->have;
		take = want < n ? want : n;
		memcpy(p->buf + p->have, d, take);
		p->have += take;
		d += take;
		n -= take;
		if (p->have == len) {
			int r = p->line(p->arg, 0, p->buf + 4, len - 4);

			p->have = 0;
			if (r)
				return r;
		}
	}
	return 0;
}

static bool gl_pkt_is(const unsigned char *d, size_t n, const char *s)
{
	size_t k = strlen(s);

	if (n && d[n - 1] == '\n')
		n--;
	return n == k && memcmp(d, s, k) == 0;
}

/* --- capability advertisement --- */

struct gl_caps {
	bool first, v2, fetch, shallow, filter, sha256;
	unsigned lines;
};

static int gl_caps_line(void *arg, int kind, const unsigned char *d, size_t n)
{
	struct gl_caps *c = arg;
	char line[1024];

	if (kind != 0)
		return 0;
	if (++c->lines > 256)
		return -EIO;
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, d, n);
	line[n] = '\0';
	if (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (!c->first) {
		c->first = true;
		/* smart HTTP's "# service=" banner (Gitaly sends it for v2 too): skip */
		if (strncmp(line, "# service=", 10) == 0) {
			c->first = false;
			return 0;
		}
		c->v2 = strcmp(line, "version 2") == 0;
		return 0;
	}
	if (strncmp(line, "fetch", 5) == 0 && (line[5] == '\0' || line[5] == '=')) {
		char *save = NULL, *tok;

		c->fetch = true;
		for (tok = strtok_r(line + 5 + (line[5] == '='), " ", &save); tok;
		     tok = strtok_r(NULL, " ", &save)) {
			if (!strcmp(tok, "shallow"))
				c->shallow = true;
			else if (!strcmp(tok, "filter"))
				c->filter = true;
		}
	} else if (!strncmp(line, "object-format=", 14) && strcmp(line + 14, "sha1") != 0) {
		c->sha256 = true;
	}
	return 0;
}

int gl_git_caps_parse(const void *d, size_t n)
{
	struct gl_caps c = {0};
	struct gl_pkt *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->line = gl_caps_line;
	p->arg = &c;
	r = gl_pkt_feed(p, d, n);
	free(p);
	if (r < 0)
		return r;
	return c.v2 && c.fetch && c.shallow && c.filter && !c.sha256 ? 0 : -ENOTSUP;
}

int gl_git_caps(struct gl *g, const char *project_path)
{
	struct gl_target t = {0};
	char hdr[] = "Git-Protocol: version=2", *hv[1] = {hdr};
	char *enc = NULL, *url = NULL;
	struct gl_req rq;
	int r;

	if (!project_path || !path_is_safe(project_path, 1024))
		return -EINVAL;
	enc = gl_path_enc(project_path);
	if (!enc)
		return -ENAMETOOLONG;
	r = asprintf(&url, "%s/%s.git/info/refs?service=git-upload-pack", g->server, enc);
	free(enc);
	if (r < 0)
		return -ENOMEM;
	t.url = url; /* its headers go to this origin only */
	t.headers = hv;
	t.nheaders = 1;
	t.basic = true;
	gl_req_init(&rq, "GET", url);
	buf_init(&rq.body, GL_CAPS_MAX);
	rq.target = &t;
	rq.content_type = "Accept: */*";
	r = gl_perform(g, &rq);
	if (r == 0)
		r = gl_git_caps_parse(rq.body.data ? rq.body.data : "", rq.body.len);
	gl_req_free(&rq);
	free(url);
	if (r == -EIO && rq.status == 200)
		r = -ENOTSUP; /* not pkt-lines: a v0 or dumb answer */
	if (r == -ENOTSUP)
		log_info("git transport: %s answers no protocol v2 fetch with shallow and filter; "
		         "trees come from the REST API",
		         g->server);
	if (r < 0)
		return r;
	return 0;
}

/* --- fetch --- */

struct gl_fetch_rx {
	struct gl_pkt pkt;
	int section; /* 0 before any, 1 acknowledgments/shallow-info/wanted-refs, 2 packfile */
	bool ended;
	int (*data)(void *arg, const void *d, size_t n);
	void *arg;
	char err[256];
};

static int gl_fetch_line(void *arg, int kind, const unsigned char *d, size_t n)
{
	struct gl_fetch_rx *x = arg;

	if (x->ended)
		return -EIO; /* bytes after the end */
	if (kind == 1 || kind == 3) {
		if (x->section != 2)
			return -EIO; /* ended without a pack */
		x->ended = true;
		return 0;
	}
	if (kind == 2) {
		if (x->section == 2)
			return -EIO;
		x->section = 0;
		return 0;
	}
	if (n >= 4 && memcmp(d, "ERR ", 4) == 0 && x->section != 2) {
		snprintf(x->err, sizeof(x->err), "%.*s", (int)(n - 4 > 200 ? 200 : n - 4),
		         (const char *)d + 4);
		return -EIO;
	}
	if (x->section == 0) {
		if (gl_pkt_is(d, n, "packfile"))
			x->section = 2;
		else if (gl_pkt_is(d, n, "shallow-info") || gl_pkt_is(d, n, "acknowledgments") ||
		         gl_pkt_is(d, n, "wanted-refs") || gl_pkt_is(d, n, "packfile-uris"))
			x->section = 1;
		else
			return -EIO;
		return 0;
	}
	if (x->section == 1)
		return 0; /* shallow lines and acks: nothing to keep */
	/* packfile: side-band-64k, the first byte is the band */
	if (n < 1)
		return -EIO;
	switch (d[0]) {
	case 1:
		return n > 1 ? x->data(x->arg, d + 1, n - 1) : 0;
	case 2:
		return 0; /* progress (we asked for none) */
	case 3:
		snprintf(x->err, sizeof(x->err), "%.*s", (int)(n - 1 > 200 ? 200 : n - 1),
		         (const char *)d + 1);
		return -EIO;
	default:
		return -EIO;
	}
}

static int gl_fetch_body(void *arg, const void *d, size_t n)
{
	struct gl_fetch_rx *x = arg;

	return gl_pkt_feed(&x->pkt, d, n);
}

int gl_git_answer_parse(const void *d, size_t n, int (*data)(void *arg, const void *d, size_t n),
                        void *arg)
{
	struct gl_fetch_rx *x = calloc(1, sizeof(*x));
	int r;

	if (!x)
		return -ENOMEM;
	x->pkt.line = gl_fetch_line;
	x->pkt.arg = x;
	x->data = data;
	x->arg = arg;
	r = gl_pkt_feed(&x->pkt, d, n);
	if (r == 0 && (!x->ended || x->pkt.have))
		r = -EIO;
	free(x);
	return r;
}

static int gl_pkt_put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int gl_pkt_put(struct buf *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -EINVAL;
	return buf_printf(b, "%04x%s", n + 4, line);
}

int gl_git_fetch(struct gl *g, const char *project_path, const char *const *wants, size_t nwants,
                 bool trees_only, uint64_t max, int (*data)(void *arg, const void *d, size_t n),
                 void *arg)
{
	struct gl_target t = {0};
	char hdr[] = "Git-Protocol: version=2", *hv[1] = {hdr};
	struct buf body = BUF_INIT(GL_FETCH_REQ);
	struct gl_fetch_rx *x = NULL;
	struct gl_sink sink = {0};
	char *enc = NULL, *url = NULL;
	struct gl_req rq;
	int r;

	if (!project_path || !path_is_safe(project_path, 1024) || !nwants || !data)
		return -EINVAL;
	for (size_t i = 0; i < nwants; i++)
		if (!wants[i] || !hash_is_hex(wants[i], HASH_SHA1_HEX))
			return -EINVAL;
	r = gl_pkt_put(&body, "command=fetch\n");
	if (r == 0)
		r = buf_append(&body, "0001", 4);
	if (r == 0)
		r = gl_pkt_put(&body, "no-progress\n");
	if (r == 0)
		r = gl_pkt_put(&body, "ofs-delta\n");
	for (size_t i = 0; r == 0 && i < nwants; i++)
		r = gl_pkt_put(&body, "want %s\n", wants[i]);
	if (r == 0 && trees_only)
		r = gl_pkt_put(&body, "deepen 1\n");
	if (r == 0 && trees_only)
		r = gl_pkt_put(&body, "filter blob:none\n");
	if (r == 0)
		r = gl_pkt_put(&body, "done\n");
	if (r == 0)
		r = buf_append(&body, "0000", 5); /* with the NUL: the body is a C string */
	if (r < 0)
		goto out;
	enc = gl_path_enc(project_path);
	if (!enc) {
		r = -ENAMETOOLONG;
		goto out;
	}
	if (asprintf(&url, "%s/%s.git/git-upload-pack", g->server, enc) < 0) {
		url = NULL;
		r = -ENOMEM;
		goto out;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		r = -ENOMEM;
		goto out;
	}
	x->pkt.line = gl_fetch_line;
	x->pkt.arg = x;
	x->data = data;
	x->arg = arg;
	sink.data = gl_fetch_body;
	sink.arg = x;
	t.url = url; /* its headers go to this origin only */
	t.headers = hv;
	t.nheaders = 1;
	t.basic = true;
	gl_req_init(&rq, "POST", url);
	rq.post = body.data;
	rq.content_type = "Accept: application/x-git-upload-pack-result";
	rq.post_type = "Content-Type: application/x-git-upload-pack-request";
	rq.target = &t;
	rq.sink = &sink;
	rq.max = max;
	r = gl_perform(g, &rq);
	gl_req_free(&rq);
	if (r == 0 && (!x->ended || x->pkt.have))
		r = -EIO; /* truncated */
	if (r < 0 && x->err[0])
		log_warn("git fetch from %s: server says: %s", project_path, x->err);
	else if (r == -EIO)
		log_warn("git fetch from %s: malformed or truncated answer", project_path);
out:
	free(x);
	free(url);
	free(enc);
	buf_free(&body);
	return r;
}

/* --- push: receive-pack --- */

#define GL_REPORT_MAX ((size_t)1 << 20) /* receive-pack's whole answer */

struct gl_report {
	struct gl_pkt outer; /* side-band-64k frames */
	struct gl_pkt inner; /* report-status lines inside band 1 */
	struct gl_push_report *rep;
	const char *ref;
	unsigned lines;
	bool ended, inner_ended;
};

static void gl_report_text(char *dst, size_t cap, const unsigned char *d, size_t n)
{
	size_t have = strlen(dst), i;

	for (i = 0; i < n && have + 1 < cap; i++) {
		unsigned char c = d[i];

		/* a hook's output, shown to the user: printable bytes and newlines only */
		dst[have++] = (c == '\n' || (c >= 0x20 && c < 0x7f)) ? (char)c : '?';
	}
	dst[have] = 0;
}

static int gl_report_line(void *arg, int kind, const unsigned char *d, size_t n)
{
	struct gl_report *x = arg;
	char line[512];
	size_t k = strlen(x->ref);

	if (kind == 1) {
		x->inner_ended = true;
		return 0;
	}
	if (kind != 0 || x->inner_ended)
		return -EIO;
	if (++x->lines > 1024)
		return -EIO;
	if (n && d[n - 1] == '\n')
		n--;
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, d, n);
	line[n] = 0;
	if (strncmp(line, "unpack ", 7) == 0) {
		x->rep->unpack_ok = strcmp(line + 7, "ok") == 0;
		if (!x->rep->unpack_ok)
			gl_report_text(x->rep->unpack, sizeof(x->rep->unpack),
			               (const unsigned char *)line + 7, n - 7);
		return 0;
	}
	if (strncmp(line, "ok ", 3) == 0 && strcmp(line + 3, x->ref) == 0) {
		x->rep->seen_ref = true;
		x->rep->ref_ok = true;
		return 0;
	}
	if (strncmp(line, "ng ", 3) == 0 && strncmp(line + 3, x->ref, k) == 0 &&
	    line[3 + k] == ' ') {
		x->rep->seen_ref = true;
		x->rep->ref_ok = false;
		gl_report_text(x->rep->reason, sizeof(x->rep->reason),
		               (const unsigned char *)line + 4 + k, n - 4 - k);
		return 0;
	}
	return 0; /* another ref's line, or an option line: not ours */
}

static int gl_report_frame(void *arg, int kind, const unsigned char *d, size_t n)
{
	struct gl_report *x = arg;

	if (kind == 1) {
		x->ended = true;
		return 0;
	}
	if (kind != 0 || x->ended || n < 1)
		return -EIO;
	switch (d[0]) {
	case 1:
		return gl_pkt_feed(&x->inner, d + 1, n - 1);
	case 2:
	case 3:
		gl_report_text(x->rep->msg, sizeof(x->rep->msg), d + 1, n - 1);
		return 0;
	default:
		return -EIO;
	}
}

int gl_git_report_parse(const void *d, size_t n, const char *ref, struct gl_push_report *out)
{
	struct gl_report *x = calloc(1, sizeof(*x));
	int r;

	memset(out, 0, sizeof(*out));
	if (!x)
		return -ENOMEM;
	x->rep = out;
	x->ref = ref;
	x->outer.line = gl_report_frame;
	x->outer.arg = x;
	x->inner.line = gl_report_line;
	x->inner.arg = x;
	r = n > GL_REPORT_MAX ? -EIO : gl_pkt_feed(&x->outer, d, n);
	if (r == 0 && (!x->ended || x->outer.have || x->inner.have || !x->inner_ended))
		r = -EIO; /* truncated */
	free(x);
	return r;
}

static int gl_report_sink(void *arg, const void *d, size_t n)
{
	return buf_append(arg, d, n) < 0 ? -EIO : 0;
}

int gl_git_push(struct gl *g, const char *project_path, const char *ref, const char *old,
                const char *new_id, int pack_fd, uint64_t pack_len, struct gl_push_report *rep)
{
	struct buf head, answer;
	struct gl_req rq;
	struct gl_target t = {0};
	struct gl_sink sink = {.data = gl_report_sink};
	char *url = NULL, *enc = NULL;
	int r;

	memset(rep, 0, sizeof(*rep));
	if (!hash_is_hex(old, 40) || !hash_is_hex(new_id, 40) || strchr(ref, '\n'))
		return -EINVAL;
	buf_init(&head, 4096);
	buf_init(&answer, GL_REPORT_MAX);
	/* the capabilities follow the first command after a NUL (gitprotocol-pack) */
	r = buf_printf(&head, "%04zx%s %s %s%creport-status side-band-64k agent=reef/0.1\n",
	               4 + 40 + 1 + 40 + 1 + strlen(ref) + 1 +
	                   strlen("report-status side-band-64k agent=reef/0.1\n"),
	               old, new_id, ref, 0);
	if (r == 0)
		r = buf_append(&head, "0000", 4);
	if (r < 0)
		goto out;
	enc = gl_path_enc(project_path);
	if (!enc || asprintf(&url, "%s/%s.git/git-receive-pack", g->server, enc) < 0) {
		url = NULL;
		r = enc ? -ENOMEM : -ENAMETOOLONG;
		goto out;
	}
	t.url = url;
	t.basic = true;
	sink.arg = &answer;
	gl_req_init(&rq, "POST", url);
	rq.post = "";
	rq.post_head = head.data;
	rq.post_head_len = head.len;
	rq.post_fd = pack_fd;
	rq.post_fd_len = pack_len;
	rq.content_type = "Accept: application/x-git-receive-pack-result";
	rq.post_type = "Content-Type: application/x-git-receive-pack-request";
	rq.target = &t;
	rq.sink = &sink;
	rq.max = GL_REPORT_MAX;
	r = gl_perform(g, &rq);
	gl_req_free(&rq);
	if (r == 0)
		r = gl_git_report_parse(answer.data, answer.len, ref, rep);
	if (r == -EIO)
		log_warn("git push to %s: no usable answer from receive-pack", project_path);
out:
	free(url);
	free(enc);
	buf_free(&head);
	buf_free(&answer);
	return r;
}
