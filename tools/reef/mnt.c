/* reef status, cache, gc, prefetch: the daemon through its mount. Everything here reads
 * <mnt>/.reef/status (JSON) or writes one request to <mnt>/.reef/ctl (docs/layout.md). */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reef.h"
#include "reef/jsonx.h"

#define PREFETCH_POLL_MS  200
#define PREFETCH_QUIET    3 /* idle polls in a row before prefetch calls it done */
#define BAR_WIDTH         24
#define PREFETCH_WALK_MAX 1000000 /* files counted for the total */

static const char status_help[] =
    "Usage: reef status [--json] [DIR]\n"
    "Summarizes the mount's .reef/status: server, user, cache used and limit, hit ratio,\n"
    "downloads in flight, prefetches, queued control writes and the last errors.\n"
    "DIR is any path inside the mount (default: the current directory if inside one,\n"
    "else ~/reef). --json prints .reef/status as it is.\n"
    "With a DIR inside a branch view (<project>/branches/<name>/…): that branch's pending\n"
    "changes (added, modified, deleted, renamed, mode; sizes), --json as reefd gives them.\n";

static const char cache_help[] =
    "Usage: reef cache [DIR]\n"
    "       reef cache ls [--json] [PATH]     (also: reef cache --list [PATH])\n"
    "       reef cache --evict-all [DIR]\n"
    "Without a subcommand: the cache's size, its limit and the number of objects held\n"
    "(the same numbers 'df' shows for the mount). DIR as for 'reef status'.\n"
    "ls lists what is cached, one line per file: its size, ' open' when a reader holds\n"
    "it, and its path as project/revision/path (from .reef/cache.json). PATH limits the\n"
    "listing to a project, revision or directory: a path in the mount (absolute or\n"
    "relative to the current directory) or relative to the mount root (acme/iris,\n"
    "acme/iris/branches/main/data). Contents no known revision names are counted at the\n"
    "end. --json prints the matching part of .reef/cache.json.\n"
    "--evict-all drops every cached file content except those open by a reader (they\n"
    "stay until closed); listings stay. The next read downloads again.\n";

static const char gc_help[] =
    "Usage: reef gc [DIR] PATH...\n"
    "       reef gc --all [DIR]\n"
    "Drops the cached objects of each PATH through .reef/ctl 'forget': a file,\n"
    "everything cached under a directory of a revision, or everything cached of a\n"
    "project or namespace (every revision of it the cache knows). The next read\n"
    "downloads them again; objects open by a reader stay until closed. A PATH that\n"
    "exists is taken as is (absolute or relative to the current directory); otherwise\n"
    "it is relative to the mount root DIR (e.g. acme/iris, or\n"
    "acme/iris/branches/main/data), DIR defaulting as for 'reef status'.\n"
    "--all drops everything cached (as 'reef cache --evict-all').\n";

static const char prefetch_help[] =
    "Usage: reef prefetch PATH\n"
    "Downloads PATH (a file, or everything under a directory of a revision) into the\n"
    "cache through .reef/ctl 'prefetch', then shows a progress bar on stderr (bytes\n"
    "fetched of the listed size, prefetches queued, downloads in flight) until nothing\n"
    "is queued or in flight.\n";

/* A path in a mount whose reefd is gone (killed, crashed): says so and how to recover.
 * Returns 1. */
static int mnt_dead(const char *path)
{
	char abs[PATH_MAX];

	if (reef_abs_path(path, abs, sizeof(abs)) < 0)
		snprintf(abs, sizeof(abs), "%s", path);
	/* the mount point is the innermost mount holding the path */
	for (char *slash; strcmp(abs, "/") && reef_mountpoint(abs, (char[64]){0}, 64) != 1;) {
		slash = strrchr(abs, '/');
		if (slash == abs)
			abs[1] = '\0';
		else
			*slash = '\0';
	}
	return reef_fail("%s: the reef mount is dead (its reefd exited or was killed: Transport "
	                 "endpoint is not connected); recover with 'fusermount3 -u %s', then "
	                 "'reef mount %s' (which also cleans it up by itself)",
	                 path, abs, abs);
}

/* The mount root for a command's optional DIR argument. 0, or 1 after a message. */
static int mnt_root(const char *arg, char *root, size_t size)
{
	char def[PATH_MAX];
	int r;

	if (arg) {
		r = reef_mount_root(arg, root, size, NULL, 0);
		if (r == -ENOTCONN)
			return mnt_dead(arg);
		if (r < 0)
			return reef_fail("%s: %s", arg,
			                 r == -EXDEV ? "not inside a reef mount" : strerror(-r));
		return 0;
	}
	r = reef_mount_root(".", root, size, NULL, 0);
	if (r == 0)
		return 0;
	if (r == -ENOTCONN)
		return mnt_dead(".");
	if (reef_default_mount(def, sizeof(def)) < 0)
		return reef_fail("no reef mount here (give DIR, or run 'reef mount')");
	r = reef_mount_root(def, root, size, NULL, 0);
	if (r == -ENOTCONN)
		return mnt_dead(def);
	if (r < 0)
		return reef_fail("no reef mount here or at ~/reef (give DIR, or run 'reef mount')");
	return 0;
}

/* Reads and parses root/.reef/status. 0, or 1 after a message. */
static int mnt_status(const char *root, json_t **out, struct buf *raw)
{
	char path[PATH_MAX + 16];
	int r;

	snprintf(path, sizeof(path), "%s/.reef/status", root);
	r = reef_read_file(path, REEF_FILE_MAX, raw);
	if (r < 0)
		return reef_fail("%s: %s", path, strerror(-r));
	if (jsonx_parse(out, raw->data ? raw->data : "", raw->len, 0, 0) < 0 ||
	    !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return reef_fail("%s: not a JSON object", path);
	}
	return 0;
}

static int64_t mnt_int(const json_t *o, const char *obj, const char *key)
{
	return jsonx_int(json_object_get(o, obj), key, 0);
}

int reef_cmd_status(int argc, char **argv)
{
	char root[PATH_MAX], used[32], limit[32], fetched[32];
	struct buf raw = BUF_INIT(0);
	const char *dir = NULL, *s;
	json_t *o = NULL, *c, *errs, *e;
	bool as_json = false;
	size_t i;
	int r;

	for (int k = 1; k < argc; k++) {
		if (reef_is_help(argv[k])) {
			fputs(status_help, stdout);
			return REEF_EXIT_OK;
		} else if (!strcmp(argv[k], "--json")) {
			as_json = true;
		} else if (argv[k][0] == '-') {
			return reef_usage("status", "unknown option %s", argv[k]);
		} else if (dir) {
			return reef_usage("status", "status takes one DIR");
		} else {
			dir = argv[k];
		}
	}
	if (dir && (r = reef_write_status(dir, as_json)) >= 0)
		return r; /* a branch view: its pending changes */
	if ((r = mnt_root(dir, root, sizeof(root))) || (r = mnt_status(root, &o, &raw)))
		goto out;
	if (as_json) {
		fwrite(raw.data, 1, raw.len, stdout);
		if (raw.len && raw.data[raw.len - 1] != '\n')
			putchar('\n');
		goto out;
	}
	c = json_object_get(o, "cache");
	s = jsonx_str(o, "user");
	printf("mount:      %s\n", root);
	printf("server:     %s\n", jsonx_str(o, "server") ? jsonx_str(o, "server") : "?");
	printf("user:       %s\n", s ? s : "(server not reached)");
	if ((s = jsonx_str(o, "mounted_at")))
		printf("mounted at: %s\n", s);
	reef_fmt_bytes(used, sizeof(used), (double)jsonx_int(c, "bytes", 0));
	reef_fmt_bytes(limit, sizeof(limit), (double)jsonx_int(c, "limit", 0));
	printf("cache:      %s of %s, %lld objects\n", used, limit,
	       (long long)jsonx_int(c, "objects", 0));
	printf("hit ratio:  %.1f%% (%lld hits, %lld misses)\n",
	       100.0 * json_number_value(json_object_get(c, "hit_ratio")),
	       (long long)jsonx_int(c, "hits", 0), (long long)jsonx_int(c, "misses", 0));
	reef_fmt_bytes(fetched, sizeof(fetched), (double)jsonx_int(c, "bytes_fetched", 0));
	printf("downloads:  %lld in flight, %s fetched, %lld requests, %lld errors\n",
	       (long long)jsonx_int(c, "in_flight", 0), fetched,
	       (long long)jsonx_int(c, "requests", 0), (long long)jsonx_int(c, "errors", 0));
	printf("prefetch:   %lld queued, %lld running, %lld done, %lld dropped\n",
	       (long long)mnt_int(o, "prefetch", "queued"),
	       (long long)mnt_int(o, "prefetch", "running"),
	       (long long)mnt_int(o, "prefetch", "done"),
	       (long long)mnt_int(o, "prefetch", "dropped"));
	printf("control:    %lld queued writes, %lld failed\n",
	       (long long)jsonx_int(o, "queued_control_writes", 0),
	       (long long)mnt_int(o, "control_writes", "failed"));
	errs = json_object_get(c, "last_errors");
	if (json_array_size(errs)) {
		printf("last errors:\n");
		json_array_foreach(errs, i, e)
		{
			/* time is seconds since the epoch */
			time_t t = (time_t)jsonx_int(e, "time", 0);
			char when[32] = "";
			struct tm tm;

			if (t > 0 && gmtime_r(&t, &tm))
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			printf("  %s %s\n", when,
			       jsonx_str(e, "message") ? jsonx_str(e, "message") : "");
		}
	} else {
		printf("last errors: none\n");
	}
out:
	json_decref(o);
	buf_free(&raw);
	return r;
}

/* PATH of a command to its mount root and the path below it: a path that exists is
 * taken as is (absolute or relative to the current directory), otherwise it is relative
 * to the mount root of the current directory (or ~/reef). 0, or 1 after a message. */
static int mnt_path(const char *p, char *root, size_t rsize, char *rel, size_t relsize)
{
	int r;

	if (access(p, F_OK) == 0) {
		r = reef_mount_root(p, root, rsize, rel, relsize);
		if (r == -ENOTCONN)
			return mnt_dead(p);
		if (r < 0)
			return reef_fail("%s: %s", p,
			                 r == -EXDEV ? "not inside a reef mount" : strerror(-r));
		return 0;
	}
	if (mnt_root(NULL, root, rsize))
		return REEF_EXIT_FAIL;
	while (*p == '/')
		p++;
	if ((size_t)snprintf(rel, relsize, "%s", p) >= relsize)
		return reef_fail("%s: path too long", p);
	/* "acme/iris/" names what "acme/iris" does */
	for (size_t l = strlen(rel); l > 0 && rel[l - 1] == '/'; l--)
		rel[l - 1] = '\0';
	return 0;
}

/* Whether the listing's path p is rel or lies under it ("" matches all). */
static bool mnt_under(const char *p, const char *rel)
{
	size_t l = strlen(rel);

	return l == 0 || (strncmp(p, rel, l) == 0 && (p[l] == '\0' || p[l] == '/'));
}

#define CACHE_LIST_CAP ((size_t)64 << 20) /* the daemon's own cap on .reef/cache.json */

/* reef cache ls [--json] [PATH] */
static int cache_ls(int argc, char **argv)
{
	char root[PATH_MAX], rel[PATH_MAX] = "", path[PATH_MAX + 32], sz[32], tot[32];
	struct buf raw = BUF_INIT(0);
	const char *arg = NULL;
	json_t *o = NULL, *files, *f, *keep = NULL;
	bool as_json = false;
	int64_t total = 0;
	size_t i, shown = 0;
	int r;

	for (int k = 1; k < argc; k++) {
		if (reef_is_help(argv[k])) {
			fputs(cache_help, stdout);
			return REEF_EXIT_OK;
		} else if (!strcmp(argv[k], "--json")) {
			as_json = true;
		} else if (argv[k][0] == '-') {
			return reef_usage("cache", "unknown option %s", argv[k]);
		} else if (arg) {
			return reef_usage("cache", "cache ls takes one PATH");
		} else {
			arg = argv[k];
		}
	}
	if (arg)
		r = mnt_path(arg, root, sizeof(root), rel, sizeof(rel));
	else
		r = mnt_root(NULL, root, sizeof(root));
	if (r)
		return r;
	snprintf(path, sizeof(path), "%s/.reef/cache.json", root);
	r = reef_read_file(path, CACHE_LIST_CAP, &raw);
	if (r < 0) {
		r = reef_fail("%s: %s", path, strerror(-r));
		goto out;
	}
	if (jsonx_parse(&o, raw.data ? raw.data : "", raw.len, 0, 0) < 0 || !json_is_object(o)) {
		r = reef_fail("%s: not a JSON object", path);
		goto out;
	}
	files = json_object_get(o, "files");
	keep = json_array();
	if (!keep) {
		r = reef_fail("out of memory");
		goto out;
	}
	json_array_foreach(files, i, f)
	{
		const char *p = jsonx_str(f, "path");

		if (p && mnt_under(p, rel)) {
			json_array_append(keep, f);
			total += jsonx_int(f, "size", 0) > 0 ? jsonx_int(f, "size", 0) : 0;
		}
	}
	if (as_json) {
		char *s;

		json_object_set(o, "files", keep);
		if (rel[0]) /* "other" has no paths: it belongs to no PATH */
			json_object_set_new(o, "other", json_array());
		s = json_dumps(o, JSON_INDENT(1) | JSON_SORT_KEYS);
		if (s)
			puts(s);
		free(s);
		goto out;
	}
	json_array_foreach(keep, i, f)
	{
		int64_t size = jsonx_int(f, "size", -1);

		if (size >= 0)
			reef_fmt_bytes(sz, sizeof(sz), (double)size);
		else
			snprintf(sz, sizeof(sz), "?");
		printf("%10s  %s%s\n", sz, jsonx_str(f, "path"),
		       json_is_true(json_object_get(f, "open")) ? "  (open)" : "");
		shown++;
	}
	reef_fmt_bytes(tot, sizeof(tot), (double)total);
	printf("%zu cached file%s, %s%s%s\n", shown, shown == 1 ? "" : "s", tot,
	       rel[0] ? " under " : "", rel);
	if (!rel[0] && json_array_size(json_object_get(o, "other")))
		printf("%zu more cached objects no known revision names (a branch moved on)\n",
		       json_array_size(json_object_get(o, "other")));
	if (json_is_true(json_object_get(o, "truncated")))
		printf("(listing cut short: too many entries to walk)\n");
out:
	json_decref(keep);
	json_decref(o);
	buf_free(&raw);
	return r;
}

static int mnt_ctl(const char *root, const char *verb, const char *rel);

/* reef cache --evict-all [DIR], reef gc --all [DIR] */
static int cache_evict_all(const char *dir)
{
	char root[PATH_MAX], before[32], after[32];
	struct buf raw = BUF_INIT(0);
	json_t *o = NULL;
	int64_t b0 = 0, b1 = 0, n1 = 0;
	int r;

	if ((r = mnt_root(dir, root, sizeof(root))) || (r = mnt_status(root, &o, &raw)))
		goto out;
	b0 = mnt_int(o, "cache", "bytes");
	json_decref(o);
	o = NULL;
	if ((r = mnt_ctl(root, "evict-all", "")))
		goto out;
	if ((r = mnt_status(root, &o, &raw)))
		goto out;
	b1 = mnt_int(o, "cache", "bytes");
	n1 = mnt_int(o, "cache", "objects");
	reef_fmt_bytes(before, sizeof(before), (double)b0);
	reef_fmt_bytes(after, sizeof(after), (double)b1);
	printf("evicted: cache %s -> %s (%lld objects left: listings, and contents open by a "
	       "reader)\n",
	       before, after, (long long)n1);
out:
	json_decref(o);
	buf_free(&raw);
	return r;
}

int reef_cmd_cache(int argc, char **argv)
{
	char root[PATH_MAX], used[32], limit[32];
	struct buf raw = BUF_INIT(0);
	const char *dir = NULL;
	json_t *o = NULL, *c;
	bool evict = false;
	int r;

	if (argc >= 2 && (!strcmp(argv[1], "ls") || !strcmp(argv[1], "--list")))
		return cache_ls(argc - 1, argv + 1);
	for (int k = 1; k < argc; k++) {
		if (reef_is_help(argv[k])) {
			fputs(cache_help, stdout);
			return REEF_EXIT_OK;
		} else if (!strcmp(argv[k], "--evict-all")) {
			evict = true;
		} else if (argv[k][0] == '-') {
			return reef_usage("cache", "unknown option %s", argv[k]);
		} else if (dir) {
			return reef_usage("cache", "cache takes one DIR");
		} else {
			dir = argv[k];
		}
	}
	if (evict)
		return cache_evict_all(dir);
	if ((r = mnt_root(dir, root, sizeof(root))) || (r = mnt_status(root, &o, &raw)))
		goto out;
	c = json_object_get(o, "cache");
	reef_fmt_bytes(used, sizeof(used), (double)jsonx_int(c, "bytes", 0));
	reef_fmt_bytes(limit, sizeof(limit), (double)jsonx_int(c, "limit", 0));
	printf("cache: %s of %s (%lld of %lld bytes), %lld objects\n", used, limit,
	       (long long)jsonx_int(c, "bytes", 0), (long long)jsonx_int(c, "limit", 0),
	       (long long)jsonx_int(c, "objects", 0));
out:
	json_decref(o);
	buf_free(&raw);
	return r;
}

/* Sends "<verb> <rel>" to root/.reef/ctl. 0, or 1 after a message with the reason. */
static int mnt_ctl(const char *root, const char *verb, const char *rel)
{
	char file[PATH_MAX + 16], path[PATH_MAX + 16], reason[512] = "", tmp[24];
	struct buf req = BUF_INIT(65536), why = BUF_INIT(0);
	int r;

	snprintf(file, sizeof(file), "%s/.reef/ctl", root);
	if (buf_printf(&req, "%s %s\n", verb, rel) < 0) {
		r = reef_fail("%s: path too long", rel);
		goto out;
	}
	r = reef_ctl_write(file, req.data, reason, sizeof(reason), NULL);
	if (r == 0)
		goto out;
	/* .reef/ctl is write-only: the reason is in .reef/ctl.error (mount-wide) */
	snprintf(path, sizeof(path), "%s/.reef/ctl.error", root);
	if (!reason[0] && reef_read_file(path, 4096, &why) == 0 && why.len) {
		why.data[strcspn(why.data, "\n")] = '\0';
		snprintf(reason, sizeof(reason), "%s", why.data);
	}
	/* the errno once, by name, after the daemon's reason (or its text when none) */
	req.data[strcspn(req.data, "\n")] = '\0';
	{
		const char *because = reef_reason(reason, req.data);

		r = reef_fail("%s %s: %s (%s)", verb, rel[0] ? rel : "/",
		              *because ? because : strerror(-r),
		              reef_errno_name(-r, tmp, sizeof(tmp)));
	}
out:
	buf_free(&req);
	buf_free(&why);
	return r;
}

int reef_cmd_gc(int argc, char **argv)
{
	char root[PATH_MAX], rel[PATH_MAX], dirroot[PATH_MAX];
	const char *dir = NULL;
	int first = 1, bad = 0;
	bool all = false;

	for (int k = 1; k < argc; k++) {
		if (reef_is_help(argv[k])) {
			fputs(gc_help, stdout);
			return REEF_EXIT_OK;
		}
		if (!strcmp(argv[k], "--all"))
			all = true;
		else if (argv[k][0] == '-')
			return reef_usage("gc", "unknown option %s", argv[k]);
	}
	if (all) {
		if (argc > 3)
			return reef_usage("gc", "gc --all takes one DIR");
		for (int k = 1; k < argc; k++)
			if (strcmp(argv[k], "--all"))
				dir = argv[k];
		return cache_evict_all(dir);
	}
	if (argc < 2)
		return reef_usage("gc", "gc needs a PATH (or --all)");
	/* a first argument that is a mount root, followed by paths, is DIR */
	if (argc > 2 && reef_mount_root(argv[1], dirroot, sizeof(dirroot), rel, sizeof(rel)) == 0 &&
	    !rel[0]) {
		dir = argv[1];
		first = 2;
	}
	for (int k = first; k < argc; k++) {
		const char *p = argv[k];

		if (dir && access(p, F_OK) != 0) {
			/* relative to the DIR given, not to the current directory's mount */
			snprintf(root, sizeof(root), "%s", dirroot);
			while (*p == '/')
				p++;
			snprintf(rel, sizeof(rel), "%s", p);
		} else if (mnt_path(p, root, sizeof(root), rel, sizeof(rel))) {
			bad = 1;
			continue;
		}
		if (mnt_ctl(root, "forget", rel)) {
			bad = 1;
			continue;
		}
		printf("forgot %s\n", rel[0] ? rel : "/");
	}
	return bad ? REEF_EXIT_FAIL : REEF_EXIT_OK;
}

static void prefetch_sleep(void)
{
	struct timespec ts = {0, PREFETCH_POLL_MS * 1000000L};

	nanosleep(&ts, NULL);
}

/* nftw gives its callback no user pointer: the walk's sums live here (one walk at a
 * time in this single-threaded program). */
static struct {
	int64_t bytes, files;
} prefetch_walk;

static int prefetch_walk_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_F && S_ISREG(st->st_mode)) {
		prefetch_walk.bytes += st->st_size;
		prefetch_walk.files++;
	}
	/* a huge tree gets a bar without a total rather than a long wait */
	return prefetch_walk.files >= PREFETCH_WALK_MAX ? 1 : 0;
}

/* The bytes under path as the listings tell them (sizes of LFS objects included), or
 * -1 when unknown. The walk lists what the prefetch is about to list anyway. */
static int64_t prefetch_total(const char *path)
{
	memset(&prefetch_walk, 0, sizeof(prefetch_walk));
	if (nftw(path, prefetch_walk_one, 16, FTW_PHYS) != 0)
		return -1;
	return prefetch_walk.bytes;
}

int reef_cmd_prefetch(int argc, char **argv)
{
	char root[PATH_MAX], rel[PATH_MAX], got[32], all[32], line[200], bar[BAR_WIDTH + 1];
	struct buf raw = BUF_INIT(0);
	int64_t fetched0 = 0, total;
	bool tty = isatty(STDERR_FILENO);
	int quiet = 0, r;
	json_t *o = NULL;

	if (argc == 2 && reef_is_help(argv[1])) {
		fputs(prefetch_help, stdout);
		return REEF_EXIT_OK;
	}
	if (argc != 2)
		return reef_usage("prefetch", "prefetch takes one PATH");
	if (argv[1][0] == '-')
		return reef_usage("prefetch", "unknown option %s", argv[1]);
	r = reef_mount_root(argv[1], root, sizeof(root), rel, sizeof(rel));
	if (r < 0)
		return reef_fail("%s: %s", argv[1],
		                 r == -EXDEV ? "not inside a reef mount" : strerror(-r));
	if ((r = mnt_status(root, &o, &raw)))
		goto out;
	fetched0 = mnt_int(o, "cache", "bytes_fetched");
	json_decref(o);
	o = NULL;
	if ((r = mnt_ctl(root, "prefetch", rel)))
		goto out;
	total = prefetch_total(argv[1]);
	reef_fmt_bytes(all, sizeof(all), (double)(total > 0 ? total : 0));
	for (;;) {
		int64_t queued, running, inflight, pending, fetched;
		size_t fill;

		if ((r = mnt_status(root, &o, &raw)))
			goto out;
		queued = mnt_int(o, "prefetch", "queued");
		running = mnt_int(o, "prefetch", "running");
		pending = mnt_int(o, "cache", "prefetch_pending");
		inflight = mnt_int(o, "cache", "in_flight");
		fetched = mnt_int(o, "cache", "bytes_fetched") - fetched0;
		json_decref(o);
		o = NULL;
		quiet = queued + running + inflight + pending == 0 ? quiet + 1 : 0;
		/* fetched bytes over the listed size: what was cached already is not
		 * fetched, so the bar is full only once nothing is left to do */
		if (quiet >= PREFETCH_QUIET || total == 0)
			fill = BAR_WIDTH;
		else if (total < 0)
			fill = 0;
		else
			fill = (size_t)(fetched >= total ? BAR_WIDTH - 1
			                                 : (BAR_WIDTH - 1) * fetched / total);
		memset(bar, '#', fill);
		memset(bar + fill, '.', BAR_WIDTH - fill);
		bar[BAR_WIDTH] = '\0';
		reef_fmt_bytes(got, sizeof(got), (double)fetched);
		snprintf(line, sizeof(line), "[%s] %s fetched%s%s, %lld queued, %lld in flight",
		         bar, got, total >= 0 ? " of " : "", total >= 0 ? all : "",
		         (long long)(queued + running + pending), (long long)inflight);
		if (tty)
			fprintf(stderr, "\r%s\033[K", line);
		if (quiet >= PREFETCH_QUIET)
			break;
		prefetch_sleep();
	}
	/* not a terminal: one final line, not a screenful of carriage returns */
	if (!tty)
		fputs(line, stderr);
	fputc('\n', stderr);
	printf("prefetched %s\n", rel[0] ? rel : "/");
out:
	json_decref(o);
	buf_free(&raw);
	return r;
}
