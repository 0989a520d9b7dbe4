/* reef: the command line over reefd and its mount. This file holds the dispatcher and
 * the helpers every subcommand shares: messages, small file reads, the configuration
 * directory and finding a mount's root from any path inside it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reef.h"

static const char usage_text[] =
    "Usage: reef COMMAND [ARGS...]\n"
    "The command line of reef, a GitLab instance mounted as a filesystem.\n"
    "\n"
    "Commands:\n"
    "  login [--name NAME] SERVER_URL   check a personal access token (stdin) and store it\n"
    "  logout [--name NAME]             forget a server (default: the default one) and\n"
    "                                   its stored token\n"
    "  servers                          the servers known, by name\n"
    "  mount [-o OPTS] [NAME] [DIR]     mount a server at DIR (default ~/reef)\n"
    "  unmount [NAME|DIR]               unmount it\n"
    "  status [--json] [DIR]            what the daemon is doing; inside a branch view\n"
    "                                   its pending changes\n"
    "  commit -m MESSAGE [DIR]          commit a branch view's pending changes\n"
    "  diff [DIR]                       show them as unified diffs\n"
    "  discard DIR [PATH...]            drop them (all, or those of PATHs)\n"
    "  launch PROJECT_DIR PROCESSOR [key=value...] [--follow]\n"
    "                                   launch an experiment\n"
    "  follow EXPERIMENT_DIR            print an experiment's log until it ends\n"
    "  prefetch PATH                    download PATH into the cache, with progress\n"
    "  cache [DIR]                      cache size and limit (ls: what is cached;\n"
    "                                   --evict-all: drop it)\n"
    "  gc [DIR] PATH...                 drop the cached objects of PATHs (--all: all)\n"
    "\n"
    "Run 'reef COMMAND --help' for a command's options, 'man reef' for more. Exit\n"
    "status: 0 ok, 1 failure, 2 usage error.\n";

int reef_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("reef: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return REEF_EXIT_FAIL;
}

int reef_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("reef: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see 'reef %s --help')\n", cmd);
	return REEF_EXIT_USAGE;
}

bool reef_is_help(const char *arg)
{
	return !strcmp(arg, "-h") || !strcmp(arg, "--help");
}

bool reef_help(int argc, char **argv, const char *text)
{
	for (int i = 1; i < argc; i++)
		if (reef_is_help(argv[i])) {
			fputs(text, stdout);
			return true;
		}
	return false;
}

int reef_read_file(const char *path, size_t cap, struct buf *out)
{
	char chunk[16384];
	ssize_t n;
	int fd, r = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf_reset(out);
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		if (out->len + (size_t)n > cap) {
			r = -EFBIG;
			break;
		}
		r = buf_append(out, chunk, (size_t)n);
		if (r < 0)
			break;
	}
	close(fd);
	return r;
}

int reef_config_dir(char *out, size_t size)
{
	const char *x = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	int n;

	/* the XDG spec says a relative XDG_CONFIG_HOME is to be ignored */
	if (x && x[0] == '/')
		n = snprintf(out, size, "%s/reef", x);
	else if (home && *home)
		n = snprintf(out, size, "%s/.config/reef", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int reef_default_mount(char *out, size_t size)
{
	const char *home = getenv("HOME");
	int n;

	if (!home || !*home)
		return -ENOENT;
	n = snprintf(out, size, "%s/reef", home);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int reef_is_root(const char *dir)
{
	char p[PATH_MAX + 16];
	struct stat st;

	if (snprintf(p, sizeof(p), "%s/.reef/status", strcmp(dir, "/") ? dir : "") >=
	    (int)sizeof(p))
		return false;
	if (stat(p, &st) == 0)
		return S_ISREG(st.st_mode);
	return errno == ENOTCONN ? -ENOTCONN : 0; /* a mount whose reefd is gone */
}

int reef_abs_path(const char *dir, char *out, size_t size)
{
	char tmp[PATH_MAX], abs[PATH_MAX], *slash, *last;
	const char *parent;
	size_t n;

	if (snprintf(tmp, sizeof(tmp), "%s", dir) >= (int)sizeof(tmp) || !tmp[0])
		return -ENAMETOOLONG;
	for (n = strlen(tmp); n > 1 && tmp[n - 1] == '/'; n--)
		tmp[n - 1] = '\0';
	slash = strrchr(tmp, '/');
	last = slash ? slash + 1 : tmp;
	if (!strcmp(last, ".") || !strcmp(last, "..") || !strcmp(tmp, "/")) {
		if (!realpath(tmp, abs))
			return -errno;
		return snprintf(out, size, "%s", abs) >= (int)size ? -ENAMETOOLONG : 0;
	}
	if (slash == tmp) {
		parent = "/";
	} else if (slash) {
		*slash = '\0';
		parent = tmp;
	} else {
		parent = ".";
	}
	if (!realpath(parent, abs))
		return -errno;
	if (snprintf(out, size, "%s/%s", strcmp(abs, "/") ? abs : "", last) >= (int)size)
		return -ENAMETOOLONG;
	return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void reef_unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int reef_mountpoint(const char *dir, char *fstype, size_t tsize)
{
	char abs[PATH_MAX], *line = NULL;
	size_t cap = 0;
	int found = 0;
	FILE *f;
	int r = reef_abs_path(dir, abs, sizeof(abs));

	if (r < 0)
		return r;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	/* "36 35 98:0 / /mnt/x rw,noatime master:1 - fuse.reef reef rw,…": the mount
	 * point is field 5, the type follows the lone "-"; the last match is the top one */
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok, *mp = NULL;
		int i = 0;
		bool sep = false;

		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			if (++i == 5)
				mp = tok;
			else if (sep) {
				if (mp) {
					reef_unescape(mp);
					if (!strcmp(mp, abs)) {
						found = 1;
						snprintf(fstype, tsize, "%s", tok);
					}
				}
				break;
			} else if (i > 6 && !strcmp(tok, "-"))
				sep = true;
		}
	}
	free(line);
	fclose(f);
	return found;
}

bool reef_mount_dead(const char *dir)
{
	struct stat st;

	return stat(dir, &st) < 0 && errno == ENOTCONN;
}

int reef_mount_root(const char *path, char *root, size_t rsize, char *rel, size_t relsize)
{
	char abs[PATH_MAX], cur[PATH_MAX], *slash;

	/* realpath also follows HEAD and other symlinks inside the mount, so the request
	 * names the revision the user sees */
	if (!realpath(path, abs))
		return -errno;
	snprintf(cur, sizeof(cur), "%s", abs);
	for (;;) {
		int is = reef_is_root(cur);

		if (is < 0)
			return is;
		if (is)
			break;
		if (!strcmp(cur, "/"))
			return -EXDEV;
		slash = strrchr(cur, '/');
		if (slash == cur)
			cur[1] = '\0';
		else
			*slash = '\0';
	}
	if (strlen(cur) >= rsize)
		return -ENAMETOOLONG;
	snprintf(root, rsize, "%s", cur);
	if (rel) {
		const char *r = abs + strlen(cur);

		while (*r == '/')
			r++;
		if (strlen(r) >= relsize)
			return -ENAMETOOLONG;
		snprintf(rel, relsize, "%s", r);
	}
	return 0;
}

int reef_ctl_write(const char *file, const char *req, char *reason, size_t rsize,
                   struct buf *ticket)
{
	struct buf back = BUF_INIT(65536);
	size_t len = strlen(req);
	ssize_t n;
	int fd, r = 0;

	if (reason && rsize)
		reason[0] = '\0';
	/* O_RDWR when the control file allows it: the reason of a refused write (or the
	 * ticket of an accepted one) is then read back from this very descriptor, immune to
	 * other writers; .reef/ctl is write-only */
	fd = open(file, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EACCES)
		fd = open(file, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do
		n = write(fd, req, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		r = -errno;
	else if ((size_t)n != len)
		r = -EIO;
	/* reading the descriptor ends the request (the mount sends it then, or at close)
	 * and shows its ticket, or the reason it was refused */
	buf_reset(&back);
	for (off_t off = 0; back.len < 65536; off += n) {
		char chunk[4096];

		n = pread(fd, chunk, sizeof(chunk), off);
		if (n <= 0 || buf_append(&back, chunk, (size_t)n) < 0)
			break;
	}
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0 && reason && rsize > 1) {
		snprintf(reason, rsize, "%.*s", (int)back.len, back.data ? back.data : "");
		reason[strcspn(reason, "\n")] = '\0';
	} else if (r == 0 && ticket) {
		buf_reset(ticket);
		if (back.len)
			buf_append(ticket, back.data, back.len);
	}
	buf_free(&back);
	return r;
}

void reef_fmt_bytes(char *out, size_t size, double bytes)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	unsigned u = 0;

	while (bytes >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, size, "%.0f B", bytes);
	else
		snprintf(out, size, "%.1f %s", bytes, units[u]);
}

const char *reef_errno_name(int err, char *tmp, size_t size)
{
	const char *n = strerrorname_np(err);

	if (n)
		return n;
	snprintf(tmp, size, "errno %d", err);
	return tmp;
}

const char *reef_reason(const char *line, const char *req)
{
	const char *p = line;
	size_t n;

	/* "2026-12-02T07:00:00Z ": the time the daemon refused it */
	if (strlen(p) > 21 && p[4] == '-' && p[10] == 'T' && p[19] == 'Z' && p[20] == ' ')
		p += 21;
	/* "EINVAL: " (or "error: "): the errno, which the caller names itself */
	n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
	if ((n > 1 && p[0] == 'E' && !strncmp(p + n, ": ", 2)) || !strncmp(p, "error: ", 7))
		p += (p[0] == 'E' ? n : 5) + 2;
	/* "forget x: ": the request echoed, which the caller says itself */
	n = req ? strlen(req) : 0;
	if (n && !strncmp(p, req, n) && !strncmp(p + n, ": ", 2))
		p += n + 2;
	return p;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} reef_cmds[] = {
    {"login", reef_cmd_login},     {"mount", reef_cmd_mount},       {"unmount", reef_cmd_unmount},
    {"umount", reef_cmd_unmount},  {"status", reef_cmd_status},     {"launch", reef_cmd_launch},
    {"follow", reef_cmd_follow},   {"prefetch", reef_cmd_prefetch}, {"cache", reef_cmd_cache},
    {"gc", reef_cmd_gc},           {"servers", reef_cmd_servers},   {"commit", reef_cmd_commit},
    {"discard", reef_cmd_discard}, {"diff", reef_cmd_diff},         {"logout", reef_cmd_logout},
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_text, stderr);
		return REEF_EXIT_USAGE;
	}
	if (reef_is_help(argv[1]) || !strcmp(argv[1], "help")) {
		fputs(usage_text, stdout);
		return REEF_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("reef %s\n", REEF_VERSION);
		return REEF_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(reef_cmds) / sizeof(reef_cmds[0]); i++)
		if (!strcmp(argv[1], reef_cmds[i].name))
			return reef_cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "reef: unknown command '%s' (see 'reef --help')\n", argv[1]);
	return REEF_EXIT_USAGE;
}
