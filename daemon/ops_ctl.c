/* The mount's own files: .reef/status, .reef/cache.json and .reef/ctl.error rendered at
 * open, and the .reef/ctl control requests (refresh, prefetch, forget, evict-all). See
 * ops_int.h. */
#include "ops_int.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "reef/log.h"
#include "reef/util.h"

/* ---- generated files: .reef/status, .reef/cache.json and .reef/ctl.error ---- */

json_t *jobq_json(struct jobq *q)
{
	json_t *o;

	pthread_mutex_lock(&q->lock);
	o = json_pack("{sIsIsIsI}", "queued", (json_int_t)q->len, "running", (json_int_t)q->running,
	              "done", (json_int_t)q->completed, "dropped", (json_int_t)q->dropped);
	pthread_mutex_unlock(&q->lock);
	return o;
}

int status_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	json_t *o = json_object(), *user = NULL, *stats = NULL;
	struct passthru_stats pt;
	char when[32];
	struct tm tm;
	char *s = NULL;
	int r = -ENOMEM;

	*out = NULL;
	if (!o)
		return -ENOMEM;
	gmtime_r(&ctx->mount_time.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_set_new(o, "server", json_string(ctx->server));
	/* never a request: status answers while the server hangs */
	if (cache_user_known(ctx->cache, &user) == 0 &&
	    json_is_string(json_object_get(user, "username")))
		json_object_set(o, "user", json_object_get(user, "username"));
	else
		json_object_set_new(o, "user", json_null());
	if (cache_stats(ctx->cache, &stats) == 0)
		json_object_set_new(o, "cache", stats);
	else
		json_object_set_new(o, "cache", json_null());
	json_object_set_new(o, "mounted_at", json_string(when));
	json_object_set_new(o, "mount_time", json_integer(ctx->mount_time.tv_sec));
	json_object_set_new(o, "version", json_string(REEF_VERSION));
	json_object_set_new(o, "inodes", json_integer((json_int_t)node_table_count(ctx->nodes)));
	mlfs_status(ctx->ml, o);
	json_object_set_new(o, "poll_s", json_real(ctx->poll_s));
	json_object_set_new(o, "prefetch", jobq_json(&ctx->fetch));
	passthru_stats(&pt);
	json_object_set_new(o, "passthrough",
	                    json_pack("{sbsIsI}", "on", pt.on, "opens", (json_int_t)pt.opens,
	                              "refused", (json_int_t)pt.refused));
	pthread_mutex_lock(&ctx->ctl_lock);
	json_object_set_new(o, "ctl",
	                    json_pack("{sIsI}", "requests", (json_int_t)ctx->ctl_requests, "errors",
	                              (json_int_t)ctx->ctl_errors));
	json_object_set_new(o, "invalidations", json_integer((json_int_t)ctx->invalidations));
	pthread_mutex_unlock(&ctx->ctl_lock);
	s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!s)
		goto out;
	*len = strlen(s);
	if (*len + 1 > STATUS_MAX) {
		free(s);
		r = -EFBIG;
		goto out;
	}
	s[(*len)++] = '\n'; /* json_dumps leaves room: it allocated strlen + 1 */
	*out = s;
	r = 0;
out:
	json_decref(user);
	json_decref(o);
	return r;
}

int reefctl_error_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	pthread_mutex_lock(&ctx->ctl_lock);
	*out = strdup(ctx->ctl_error);
	pthread_mutex_unlock(&ctx->ctl_lock);
	if (!*out)
		return -ENOMEM;
	*len = strlen(*out);
	return 0;
}

/* .reef/cache.json: what the cache holds, by path (cache_list). */
static int cachelist_render(struct ops_ctx *ctx, char **out, size_t *len)
{
	json_t *o = NULL;
	char *s;
	int r;

	*out = NULL;
	r = cache_list(ctx->cache, &o);
	if (r < 0)
		return r;
	s = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(o);
	if (!s)
		return -ENOMEM;
	*len = strlen(s);
	if (*len + 1 > CACHELIST_MAX) {
		free(s);
		return -EFBIG;
	}
	s[(*len)++] = '\n'; /* json_dumps leaves room: it allocated strlen + 1 */
	*out = s;
	return 0;
}

int generated_render(struct ops_ctx *ctx, const struct node *n, char **out, size_t *len)
{
	switch (n->kind) {
	case NODE_STATUS:
		return status_render(ctx, out, len);
	case NODE_CACHE_LIST:
		return cachelist_render(ctx, out, len);
	default:
		return reefctl_error_render(ctx, out, len);
	}
}

/* ---- .reef/ctl ---- */

/* Remembers why a control request failed, for .reef/ctl.error, and returns r. */
int reefctl_fail(struct ops_ctx *ctx, const char *req, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

int reefctl_fail(struct ops_ctx *ctx, const char *req_raw, int r, const char *fmt, ...)
{
	char why_raw[512], why[512], when[32], req[256];
	struct timespec now;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why_raw, sizeof(why_raw), fmt, ap);
	va_end(ap);
	text_escape(why_raw, why, sizeof(why));
	text_escape(req_raw, req, sizeof(req));
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&ctx->ctl_lock);
	ctx->ctl_errors++;
	snprintf(ctx->ctl_error, sizeof(ctx->ctl_error), "%s %s: %.200s: %s\n", when,
	         strerrorname_np(-r) ? strerrorname_np(-r) : "error", req, why);
	pthread_mutex_unlock(&ctx->ctl_lock);
	if (ctx->cache) /* logged there, and shown in .reef/status last_errors */
		cache_err_note(ctx->cache, "ctl: %.200s: %s", req, why);
	else
		log_info("ctl: %.200s: %s", req, why);
	return r;
}

/* One step of a walk: cur (pinned) becomes its child name (pinned), without counting a
 * kernel lookup. HEAD is followed to the branch it names. */
int reefctl_step(struct ops_ctx *ctx, struct node **cur, const char *name)
{
	struct node *child;
	bool neg;
	int r;

	r = resolve_child(ctx, *cur, name, &child, &neg);
	if (r < 0)
		return r;
	node_pin(ctx->nodes, child);
	node_forget(ctx->nodes, child->ino, 1);
	node_put(ctx->nodes, *cur);
	*cur = child;
	if (child->kind == NODE_HEAD) {
		char ref[NODE_PATH_MAX], *save = NULL, *c;
		struct node *proj = child->parent;

		snprintf(ref, sizeof(ref), "%s", child->oid);
		node_pin(ctx->nodes, proj);
		node_put(ctx->nodes, child);
		*cur = proj;
		r = reefctl_step(ctx, cur, "branches");
		for (c = strtok_r(ref, "/", &save); c && r == 0; c = strtok_r(NULL, "/", &save))
			r = reefctl_step(ctx, cur, c);
	}
	return r;
}

/* A path relative to the mount root (a leading '/' or the mount point itself is
 * accepted) to its node, pinned. "." and ".." are refused: a control request names one
 * place, spelled one way. */
int reefctl_resolve(struct ops_ctx *ctx, char *path, struct node **out)
{
	size_t ml = strlen(ctx->mountpoint);
	struct node *cur;
	char *save = NULL, *c;
	int r = 0;

	*out = NULL;
	if (ml > 1 && strncmp(path, ctx->mountpoint, ml) == 0 && (path[ml] == '/' || !path[ml]))
		path += ml;
	cur = node_get(ctx->nodes, NODE_ROOT_INO);
	if (!cur)
		return -EIO;
	for (c = strtok_r(path, "/", &save); c && r == 0; c = strtok_r(NULL, "/", &save)) {
		if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0)
			r = -EINVAL;
		else
			r = reefctl_step(ctx, &cur, c);
	}
	if (r < 0) {
		node_put(ctx->nodes, cur);
		return r;
	}
	*out = cur;
	return 0;
}

/* The tree a directory node inside a revision shows. */
int reefctl_tree_of(struct ops_ctx *ctx, const struct node *n, char tree[41])
{
	struct tree_entry *e = NULL;
	size_t cnt;
	int r;

	if (n->kind == NODE_TREE) {
		snprintf(tree, 41, "%s", n->oid);
		return 0;
	}
	r = cache_root_tree(ctx->cache, n->project_id, n->commit, tree, &e, &cnt);
	free(e);
	return r;
}

int reefctl_prefetch(struct ops_ctx *ctx, const char *req, struct node *n)
{
	char tree[41];
	int r;

	touch_branch(ctx, n);
	switch (n->kind) {
	case NODE_FILE:
		r = fetch_queue(ctx, n->project_id, n->commit, n->path, n->oid, n->size,
		                OPS_PREFETCH_NOCAP);
		break;
	case NODE_REV:
	case NODE_TREE:
		r = reefctl_tree_of(ctx, n, tree);
		if (r == 0)
			r = cache_prefetch(ctx->cache, n->project_id, n->commit,
			                   n->kind == NODE_REV ? "" : n->path, tree);
		break;
	default:
		return reefctl_fail(ctx, req, -EINVAL,
		                    "prefetch takes a file or directory inside a revision "
		                    "(branches/, tags/ or commits/)");
	}
	if (r == -EAGAIN)
		return reefctl_fail(ctx, req, r, "the prefetch queue is full; try again later");
	if (r < 0)
		return reefctl_fail(ctx, req, r, "%s", strerror(-r));
	return 0;
}

int reefctl_forget(struct ops_ctx *ctx, const char *req, struct node *n)
{
	uint64_t *inos = NULL;
	size_t cnt = 0;
	char tree[41];
	int r;

	switch (n->kind) {
	case NODE_FILE:
	case NODE_SYMLINK:
		r = cache_forget(ctx->cache, n->project_id, n->oid, false);
		if (r >= 0 && (inos = malloc(sizeof(*inos)))) {
			inos[0] = n->ino;
			cnt = 1;
		}
		break;
	case NODE_REV:
	case NODE_TREE:
		r = reefctl_tree_of(ctx, n, tree);
		if (r == 0)
			r = cache_forget(ctx->cache, n->project_id, tree, true);
		if (r >= 0 && node_collect_under(ctx->nodes, n->ino, NODE_FILE, &inos, &cnt) < 0)
			cnt = 0;
		break;
	case NODE_NAMESPACE:
	case NODE_PROJECT:
		/* every revision of the project (or of each project below the namespace) the
		 * index knows, whether or not the mount shows it now */
		r = cache_forget_projects(ctx->cache, n->path);
		if (r == -ENOENT)
			return reefctl_fail(ctx, req, r, "nothing of %s was ever cached", n->path);
		if (r >= 0 && node_collect_under(ctx->nodes, n->ino, NODE_FILE, &inos, &cnt) < 0)
			cnt = 0;
		break;
	default:
		return reefctl_fail(ctx, req, -EINVAL,
		                    "forget takes a project, a namespace, or a file or directory "
		                    "inside a revision (branches/, tags/ or commits/)");
	}
	if (r < 0) {
		free(inos);
		return reefctl_fail(ctx, req, r, "%s", strerror(-r));
	}
	log_info("ctl: forgot %d object%s under %s", r, r == 1 ? "" : "s", n->path);
	/* the kernel kept the pages (keep_cache): a forgotten object is read anew */
	inval_inodes(ctx, inos, cnt);
	return 0;
}

/* Drops every cached content nobody reads; the kernel forgets the pages it kept. */
static int reefctl_evict_all(struct ops_ctx *ctx, const char *req)
{
	uint64_t *inos = NULL, kept = 0;
	size_t cnt = 0;
	int r;

	r = cache_evict_all(ctx->cache, &kept);
	if (r < 0)
		return reefctl_fail(ctx, req, r, "%s", strerror(-r));
	if (node_collect_under(ctx->nodes, NODE_ROOT_INO, NODE_FILE, &inos, &cnt) < 0)
		cnt = 0;
	inval_inodes(ctx, inos, cnt);
	return 0;
}

/* The request as ctl.error quotes it: one line of valid UTF-8, control characters and
 * invalid bytes as '?', cut at a character boundary. */
void reefctl_echo(char *out, size_t cap, const char *s, size_t len)
{
	size_t i = 0, o = 0, k, n;

	while (i < len && o + 1 < cap) {
		unsigned char c = (unsigned char)s[i];
		uint32_t cp;

		n = c < 0x80             ? 1
		    : (c & 0xe0) == 0xc0 ? 2
		    : (c & 0xf0) == 0xe0 ? 3
		    : (c & 0xf8) == 0xf0 ? 4
		                         : 0;
		cp = n == 1 ? c : n == 2 ? c & 0x1fu : n == 3 ? c & 0x0fu : c & 0x07u;
		for (k = 1; n && k < n; k++) {
			if (i + k >= len || ((unsigned char)s[i + k] & 0xc0) != 0x80) {
				n = 0;
				break;
			}
			cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3fu);
		}
		/* overlong forms, surrogates and code points past U+10FFFF are not UTF-8 */
		if ((n == 2 && cp < 0x80) ||
		    (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			n = 0;
		if (n <= 1 || o + n >= cap) {
			out[o++] = n == 1 && c >= 0x20 && c != 0x7f ? (char)c : '?';
			i += n ? n : 1;
			if (n > 1)
				break;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	out[o] = 0;
}

/* Parses and runs one control request: "refresh [path]", "prefetch <path>",
 * "forget <path>" or "evict-all", one line (a final newline is allowed). */
int reefctl_exec(struct ops_ctx *ctx, const char *data, size_t len)
{
	char *s, *cmd, *path, req[256];
	struct node *n = NULL;
	size_t i;
	int r;

	pthread_mutex_lock(&ctx->ctl_lock);
	ctx->ctl_requests++;
	pthread_mutex_unlock(&ctx->ctl_lock);
	s = malloc(len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, data, len);
	s[len] = 0;
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		s[--len] = 0;
	reefctl_echo(req, sizeof(req), s, len);
	if (memchr(s, 0, len)) {
		r = reefctl_fail(ctx, req, -EINVAL, "a request is text: it holds a NUL byte");
		goto out;
	}
	if (strchr(s, '\n') || strchr(s, '\r')) {
		r = reefctl_fail(ctx, req, -EINVAL,
		                 "one request per write: it holds several lines");
		goto out;
	}
	cmd = s + strspn(s, " \t");
	path = cmd + strcspn(cmd, " \t");
	if (*path) {
		*path++ = 0;
		path += strspn(path, " \t");
	}
	for (i = strlen(path); i > 0 && (path[i - 1] == ' ' || path[i - 1] == '\t'); i--)
		path[i - 1] = 0;
	if (strcmp(cmd, "commit") == 0 || strcmp(cmd, "discard") == 0) {
		r = reefctl_write_cmd(ctx, req, cmd, path); /* its argument is JSON */
		goto out;
	}
	if (strcmp(cmd, "refresh") != 0 && strcmp(cmd, "prefetch") != 0 &&
	    strcmp(cmd, "forget") != 0 && strcmp(cmd, "evict-all") != 0) {
		r = reefctl_fail(ctx, req, -EINVAL,
		                 "unknown command; one of: refresh [path], prefetch <path>, "
		                 "forget <path>, evict-all, commit <json>, discard <json>");
		goto out;
	}
	if (strcmp(cmd, "evict-all") == 0) {
		r = *path ? reefctl_fail(ctx, req, -EINVAL, "evict-all takes no path")
		          : reefctl_evict_all(ctx, req);
		goto out;
	}
	if (!*path && strcmp(cmd, "refresh") != 0) {
		r = reefctl_fail(ctx, req, -EINVAL, "%s needs a path (relative to the mount root)",
		                 cmd);
		goto out;
	}
	if (strlen(path) >= NODE_PATH_MAX) {
		r = reefctl_fail(ctx, req, -ENAMETOOLONG, "the path is longer than %d bytes",
		                 NODE_PATH_MAX - 1);
		goto out;
	}
	if (strcmp(cmd, "refresh") == 0) {
		/* expire every head and listing, then walk the path, which asks the server
		 * again on the way: a branch found moved is invalidated as the poller would */
		cache_refresh(ctx->cache);
		r = 0;
		if (*path) {
			r = reefctl_resolve(ctx, path, &n);
			if (r < 0)
				r = reefctl_fail(ctx, req, r, "%s",
				                 r == -EINVAL ? "the path holds . or .."
				                              : strerror(-r));
		}
		goto out;
	}
	r = reefctl_resolve(ctx, path, &n);
	if (r < 0) {
		r = reefctl_fail(ctx, req, r, "%s",
		                 r == -EINVAL ? "the path holds . or .." : strerror(-r));
		goto out;
	}
	r = strcmp(cmd, "prefetch") == 0 ? reefctl_prefetch(ctx, req, n)
	                                 : reefctl_forget(ctx, req, n);
out:
	node_put(ctx->nodes, n);
	free(s);
	return r;
}

/* A control write may add an entry to the directory of the control file (a launch): the
 * kernel drops its cached listing first, so a listing after write() returns shows it. */
void dir_changing(struct ops_ctx *ctx, fuse_ino_t ino)
{
	struct node *n;
	uint64_t *inos;

	if (!ctx->no_opendir || !(n = node_get(ctx->nodes, ino)))
		return;
	inos = n->parent ? malloc(sizeof(*inos)) : NULL;
	if (inos) {
		inos[0] = n->parent->ino;
		inval_inodes(ctx, inos, 1);
	}
	node_put(ctx->nodes, n);
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
              struct fuse_file_info *fi)
{
	struct ops_ctx *ctx = ctx_of(req);
	struct ops_file *f = (struct ops_file *)(uintptr_t)fi->fh;
	int r;

	/* a control write is one request, wherever the descriptor points */
	if (mlfs_owns(fi)) {
		dir_changing(ctx, ino);
		mlfs_write(ctx->ml, req, buf, size, off, fi);
		return;
	}
	if (f && f->has_ov) {
		wv_write(req, ctx, f, buf, size, off);
		return;
	}
	if (!f || !f->ctl) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (size > OPS_CTL_MAX) {
		r = reefctl_fail(ctx, "(oversize request)", -EFBIG,
		                 "%zu bytes; a request is at most %d bytes", size, OPS_CTL_MAX);
		pthread_mutex_lock(&ctx->ctl_lock);
		ctx->ctl_requests++;
		pthread_mutex_unlock(&ctx->ctl_lock);
	} else {
		r = reefctl_exec(ctx, buf, size);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}
