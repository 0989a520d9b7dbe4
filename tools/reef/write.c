/* reef commit, status DIR, diff, discard: the pending changes of a writable branch view
 * (docs/write.md), through the mount: commit and discard are requests to .reef/ctl; the
 * list of changes is the branch view's xattr user.reef.pending (JSON); diff runs
 * `diff -u` between the branch's head (commits/<head>/…) and the view. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "reef.h"
#include "reef/jsonx.h"

#define PENDING_MAX (64 * 1024) /* the kernel's cap on an xattr value */

static const char commit_help[] =
    "Usage: reef commit -m MESSAGE [--lfs-above SIZE] [DIR]\n"
    "Commits every pending change of the branch view DIR is in (default: the current\n"
    "directory) as one commit on that branch, pushed atomically: if the branch moved and\n"
    "the new commits changed a path you changed, nothing is committed and the paths are\n"
    "named; otherwise the commit goes on top of the new head. Prints the new commit.\n"
    "Files the branch's .gitattributes marks filter=lfs go to Git LFS (uploaded with the\n"
    "batch API, committed as pointers); --lfs-above SIZE (bytes, or N with K, M, G, T)\n"
    "sends larger files there too and adds their .gitattributes lines.\n";

/* N[KMGT] (powers of 1024) */
static int size_parse(const char *s, unsigned long long *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -EINVAL;
	switch (*end) {
	case 'T':
		v <<= 10; /* fallthrough */
	case 'G':
		v <<= 10; /* fallthrough */
	case 'M':
		v <<= 10; /* fallthrough */
	case 'K':
		v <<= 10;
		end++;
		break;
	default:
		break;
	}
	if (*end || v == 0 || v > (1ULL << 50))
		return -EINVAL;
	*out = v;
	return 0;
}

static const char discard_help[] =
    "Usage: reef discard DIR [PATH...]\n"
    "Drops the pending changes of the branch view DIR is in: all of them, or those at\n"
    "and below each PATH (inside the view, or relative to it).\n";

static const char diff_help[] =
    "Usage: reef diff [DIR]\n"
    "Shows the pending changes of the branch view DIR is in as unified diffs against the\n"
    "branch's head (binary files are named, not shown).\n";

/* The branch view holding path: its root (absolute), the mount root, and the view's path
 * below the mount root. The view root is the topmost directory with user.reef.commit
 * under a branches/ directory. */
static int view_of(const char *path, char *view, size_t vcap, char *root, size_t rcap, char *rel,
                   size_t relcap)
{
	char abs[PATH_MAX], cur[PATH_MAX], val[64];
	char *slash;
	bool found = false;
	int r;

	if (!realpath(path, abs))
		return -errno;
	r = reef_mount_root(abs, root, rcap, NULL, 0);
	if (r < 0)
		return r;
	snprintf(cur, sizeof(cur), "%s", abs);
	for (;;) {
		if (getxattr(cur, "user.reef.commit", val, sizeof(val)) > 0) {
			snprintf(view, vcap, "%s", cur);
			found = true;
		} else if (found) {
			break;
		}
		slash = strrchr(cur, '/');
		if (!slash || slash == cur || strlen(cur) <= strlen(root))
			break;
		*slash = 0;
	}
	if (!found || !strstr(view + strlen(root), "/branches/"))
		return -ENOTDIR;
	snprintf(rel, relcap, "%s", view + strlen(root) + 1);
	return 0;
}

static int ctl_request(const char *root, const char *cmd, json_t *arg, struct buf *why)
{
	char path[PATH_MAX], reason[1024];
	char *j = json_dumps(arg, JSON_COMPACT);
	char *req = NULL;
	int r;

	if (!j || asprintf(&req, "%s %s\n", cmd, j) < 0) {
		free(j);
		return -ENOMEM;
	}
	free(j);
	snprintf(path, sizeof(path), "%s/.reef/ctl", root);
	r = reef_ctl_write(path, req, reason, sizeof(reason), NULL);
	free(req);
	if (r < 0) {
		snprintf(path, sizeof(path), "%s/.reef/ctl.error", root);
		if (reef_read_file(path, 4096, why) == 0 && why->len)
			why->data[strcspn(why->data, "\n")] = '\0';
	}
	return r;
}

/* The reason part of a .reef/ctl.error line ("<time> <ERRNO>: <request>: <reason>"). */
static const char *ctl_reason(const struct buf *why)
{
	const char *s = why->data ? strstr(why->data, "}: ") : NULL;

	return s ? s + 3 : why->data ? why->data : "";
}

int reef_cmd_commit(int argc, char **argv)
{
	const char *msg = NULL, *dir = ".";
	char view[PATH_MAX], root[PATH_MAX], rel[PATH_MAX], head[64] = "";
	unsigned long long lfs_above = 0;
	struct buf why = BUF_INIT(4096);
	json_t *arg;
	int r;

	for (int k = 1; k < argc; k++) {
		if (reef_is_help(argv[k])) {
			fputs(commit_help, stdout);
			return REEF_EXIT_OK;
		} else if (!strcmp(argv[k], "-m") && k + 1 < argc) {
			msg = argv[++k];
		} else if (!strcmp(argv[k], "--lfs-above") && k + 1 < argc) {
			if (size_parse(argv[++k], &lfs_above) < 0)
				return reef_usage("commit",
				                  "--lfs-above takes a size: N, NK, NM, NG");
		} else if (argv[k][0] == '-') {
			return reef_usage("commit", "unknown option %s", argv[k]);
		} else {
			dir = argv[k];
		}
	}
	if (!msg || !*msg)
		return reef_usage("commit", "a commit needs a message (-m MESSAGE)");
	r = view_of(dir, view, sizeof(view), root, sizeof(root), rel, sizeof(rel));
	if (r < 0)
		return reef_fail("%s: %s", dir,
		                 r == -ENOTDIR
		                     ? "not inside a branch view (<project>/branches/<name>/)"
		                     : strerror(-r));
	arg = json_pack("{s:s,s:s}", "path", rel, "message", msg);
	if (arg && lfs_above)
		json_object_set_new(arg, "lfs_above", json_integer((json_int_t)lfs_above));
	r = arg ? ctl_request(root, "commit", arg, &why) : -ENOMEM;
	json_decref(arg);
	if (r < 0) {
		char tmp[16];

		r = reef_fail("commit %s: %s (%s): %s", rel, strerror(-r),
		              reef_errno_name(-r, tmp, sizeof(tmp)), ctl_reason(&why));
		buf_free(&why);
		return r;
	}
	buf_free(&why);
	if (getxattr(view, "user.reef.commit", head, sizeof(head) - 1) > 0)
		printf("%s\n", head);
	return REEF_EXIT_OK;
}

int reef_cmd_discard(int argc, char **argv)
{
	char view[PATH_MAX], root[PATH_MAX], rel[PATH_MAX], abs[PATH_MAX];
	struct buf why = BUF_INIT(4096);
	json_t *arg, *paths;
	int r;

	if (argc < 2)
		return reef_usage("discard", "discard needs DIR");
	if (reef_is_help(argv[1])) {
		fputs(discard_help, stdout);
		return REEF_EXIT_OK;
	}
	r = view_of(argv[1], view, sizeof(view), root, sizeof(root), rel, sizeof(rel));
	if (r < 0)
		return reef_fail("%s: %s", argv[1],
		                 r == -ENOTDIR ? "not inside a branch view" : strerror(-r));
	paths = json_array();
	for (int k = 2; k < argc; k++) {
		const char *p = argv[k];
		size_t vl = strlen(view);

		/* a path that no longer exists (a deleted file) is taken relative to the view */
		if (p[0] == '/' || reef_abs_path(p, abs, sizeof(abs)) < 0)
			snprintf(abs, sizeof(abs), "%s", p);
		if (strncmp(abs, view, vl) == 0 && abs[vl] == '/')
			p = abs + vl + 1;
		else if (p[0] == '/')
			return reef_fail("%s is not inside %s", p, view);
		json_array_append_new(paths, json_string(p));
	}
	arg = json_pack("{s:s,s:o}", "path", rel, "paths", paths);
	r = arg ? ctl_request(root, "discard", arg, &why) : -ENOMEM;
	json_decref(arg);
	if (r < 0) {
		r = reef_fail("discard %s: %s: %s", rel, strerror(-r), ctl_reason(&why));
		buf_free(&why);
		return r;
	}
	buf_free(&why);
	return REEF_EXIT_OK;
}

static int pending_get(const char *view, json_t **out)
{
	char *buf = malloc(PENDING_MAX + 1);
	ssize_t n;
	int r;

	if (!buf)
		return -ENOMEM;
	n = getxattr(view, "user.reef.pending", buf, PENDING_MAX);
	if (n < 0) {
		r = -errno;
		free(buf);
		return r;
	}
	r = jsonx_parse(out, buf, (size_t)n, 8, PENDING_MAX);
	free(buf);
	return r;
}

/* reef status DIR inside a branch view: the pending changes (an exit status), or -1 when
 * DIR is not in a branch view. */
int reef_write_status(const char *dir, bool as_json)
{
	char view[PATH_MAX], root[PATH_MAX], rel[PATH_MAX], sz[32];
	json_t *j = NULL, *c;
	size_t i;
	int r;

	r = view_of(dir, view, sizeof(view), root, sizeof(root), rel, sizeof(rel));
	if (r < 0)
		return -1; /* not a branch view (or not a mount): the mount's status says why */
	r = pending_get(view, &j);
	if (r < 0)
		return reef_fail("%s: cannot read its pending changes: %s", rel, strerror(-r));
	if (as_json) {
		char *s = json_dumps(j, JSON_INDENT(1));

		puts(s ? s : "{}");
		free(s);
		json_decref(j);
		return REEF_EXIT_OK;
	}
	c = json_object_get(j, "changes");
	printf("branch %s (head %.12s)", jsonx_str(j, "branch"), jsonx_str(j, "head"));
	if (jsonx_str(j, "base") && strcmp(jsonx_str(j, "base"), jsonx_str(j, "head")) &&
	    *jsonx_str(j, "base"))
		printf(", changes made on %.12s", jsonx_str(j, "base"));
	printf(": %zu pending change%s\n", json_array_size(c), json_array_size(c) == 1 ? "" : "s");
	for (i = 0; i < json_array_size(c); i++) {
		json_t *x = json_array_get(c, i);
		json_int_t size = jsonx_int(x, "size", -1);

		if (size >= 0)
			reef_fmt_bytes(sz, sizeof(sz), (double)size);
		else
			snprintf(sz, sizeof(sz), "-");
		printf("  %-9s %s%s%s  %s\n", jsonx_str(x, "change"), jsonx_str(x, "path"),
		       jsonx_str(x, "from") ? " <- " : "",
		       jsonx_str(x, "from") ? jsonx_str(x, "from") : "", sz);
	}
	json_decref(j);
	return REEF_EXIT_OK;
}

static int run_diff(const char *a, const char *b, const char *la, const char *lb)
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("diff", "diff", "-u", "--label", la, "--label", lb, a, b, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &st, 0) < 0)
		return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) <= 1 ? 0 : -EIO;
}

int reef_cmd_diff(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	char view[PATH_MAX], root[PATH_MAX], rel[PATH_MAX], a[PATH_MAX * 2], b[PATH_MAX * 2];
	char proj[PATH_MAX], la[PATH_MAX], lb[PATH_MAX];
	json_t *j = NULL, *c;
	char *br;
	int r;

	if (argc > 1 && reef_is_help(argv[1])) {
		fputs(diff_help, stdout);
		return REEF_EXIT_OK;
	}
	r = view_of(dir, view, sizeof(view), root, sizeof(root), rel, sizeof(rel));
	if (r < 0)
		return reef_fail("%s: %s", dir,
		                 r == -ENOTDIR ? "not inside a branch view" : strerror(-r));
	r = pending_get(view, &j);
	if (r < 0)
		return reef_fail("%s: cannot read its pending changes: %s", rel, strerror(-r));
	snprintf(proj, sizeof(proj), "%s", view);
	br = strstr(proj + strlen(root), "/branches/");
	*br = 0;
	c = json_object_get(j, "changes");
	fflush(stdout);
	for (size_t i = 0; i < json_array_size(c); i++) {
		json_t *x = json_array_get(c, i);
		const char *p = jsonx_str(x, "path"), *what = jsonx_str(x, "change");
		const char *from = jsonx_str(x, "from");

		if (json_is_true(json_object_get(x, "directory")) || !strcmp(what, "mode"))
			continue;
		snprintf(a, sizeof(a), "%s/commits/%s/%s", proj, jsonx_str(j, "head"),
		         from ? from : p);
		snprintf(b, sizeof(b), "%s/%s", view, p);
		snprintf(la, sizeof(la), "a/%s", from ? from : p);
		snprintf(lb, sizeof(lb), "b/%s", p);
		if (!strcmp(what, "added"))
			snprintf(a, sizeof(a), "/dev/null");
		if (!strcmp(what, "deleted"))
			snprintf(b, sizeof(b), "/dev/null");
		r = run_diff(a, b, la, lb);
		if (r < 0)
			fprintf(stderr, "reef: diff of %s failed\n", p);
	}
	json_decref(j);
	return REEF_EXIT_OK;
}
