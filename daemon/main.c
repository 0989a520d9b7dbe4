/* reefd: mounts a GitLab instance read-only (see docs/layout.md, man reefd).
 *   reefd [-f] [-d] [-v] -o server=URL[,token_file=PATH][,cache=DIR][,OPTION=VALUE…] MOUNTPOINT
 *   reefd URL MOUNTPOINT [-o OPTIONS]   (as mount.fuse3 runs it: mount -t fuse.reefd)
 * Before it mounts (and before the parent of a daemon exits) it asks the server once
 * (GET /user): a refused token, or an unreachable server with nothing cached, fails the
 * mount with the reason. Logs go to stderr, once daemonized to syslog, and to -o log=FILE.
 * Exit status: 0 after a clean unmount or SIGTERM/SIGINT/SIGHUP, 1 on a runtime failure,
 * 2 on a usage error. */
#include "ops.h"
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "cache.h"
#include "mlops.h"
#include "passthru.h"
#include "reef/log.h"
#include "reef/util.h"
#include "remote/gl.h"

#ifndef REEF_VERSION
#define REEF_VERSION "unknown"
#endif

#define TOKEN_MAX          4096
#define DEFAULT_BRANCH_TTL 5.0
#define DEFAULT_PREFETCH   4
#define DEFAULT_READAHEAD  1024 /* KiB */

struct reefd_opts {
	char *server;
	char *mgmt;
	char *token_file;
	char *cache;
	char *branch_ttl;
	char *cache_limit;
	char *lfs_above;
	char *poll;
	char *prefetch;
	char *readahead;
	char *passthrough;
	char *retry_max;
	char *max_requests;
	char *source; /* the server URL given as the first argument (mount.fuse3, fstab) */
	char *log;
	char *unreachable;
	int verbose;
};

static const struct fuse_opt reefd_spec[] = {
    {"server=%s", offsetof(struct reefd_opts, server), 0},
    {"mgmt=%s", offsetof(struct reefd_opts, mgmt), 0},
    {"token_file=%s", offsetof(struct reefd_opts, token_file), 0},
    {"cache=%s", offsetof(struct reefd_opts, cache), 0},
    {"branch_ttl=%s", offsetof(struct reefd_opts, branch_ttl), 0},
    {"cache_limit=%s", offsetof(struct reefd_opts, cache_limit), 0},
    {"lfs_above=%s", offsetof(struct reefd_opts, lfs_above), 0},
    {"poll=%s", offsetof(struct reefd_opts, poll), 0},
    {"prefetch=%s", offsetof(struct reefd_opts, prefetch), 0},
    {"readahead=%s", offsetof(struct reefd_opts, readahead), 0},
    {"passthrough=%s", offsetof(struct reefd_opts, passthrough), 0},
    {"retry_max=%s", offsetof(struct reefd_opts, retry_max), 0},
    {"max_requests=%s", offsetof(struct reefd_opts, max_requests), 0},
    {"log=%s", offsetof(struct reefd_opts, log), 0},
    {"unreachable=%s", offsetof(struct reefd_opts, unreachable), 0},
    {"verbose", offsetof(struct reefd_opts, verbose), 1},
    {"-v", offsetof(struct reefd_opts, verbose), 1},
    {"--verbose", offsetof(struct reefd_opts, verbose), 1},
    FUSE_OPT_END,
};

/* mount -t fuse.reefd URL DIR -o OPTS (and an fstab line "URL DIR fuse.reefd OPTS") runs
 * `reefd URL DIR -o OPTS` through mount.fuse3, as for sshfs: an http(s) URL before the
 * mount point is the server. Everything else goes on to libfuse. */
static int reefd_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct reefd_opts *o = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT && !o->source &&
	    (!strncmp(arg, "http://", 7) || !strncmp(arg, "https://", 8))) {
		o->source = strdup(arg);
		return o->source ? 0 : -1;
	}
	return 1;
}

static void usage(FILE *f, const char *prog)
{
	fprintf(
	    f,
	    "usage: %s [-f] [-d] [-v] -o "
	    "server=URL[,token_file=PATH][,cache=DIR][,OPTION=VALUE...] "
	    "MOUNTPOINT\n"
	    "   or: %s URL MOUNTPOINT [-o OPTIONS]  (mount -t fuse.reefd URL MOUNTPOINT, fstab)\n"
	    "\n"
	    "Mounts the GitLab instance at URL read-only on MOUNTPOINT (see docs/layout.md).\n"
	    "  -f                   stay in the foreground (logs go to stderr)\n"
	    "  -d                   debug: log every FUSE request (implies -f)\n"
	    "  -v, -o verbose       log debug messages too (without -d's FUSE trace)\n"
	    "  -V, --version        print the version\n"
	    "  -o log=FILE          also append the log to FILE (created mode 0600); once\n"
	    "                       in the background the log goes to syslog (the journal:\n"
	    "                       journalctl -t reefd) as well\n"
	    "  -o unreachable=cache|mount|fail\n"
	    "                       when the server cannot be reached at mount time: mount\n"
	    "                       and serve the cache if it holds anything (cache, the\n"
	    "                       default), mount even with an empty cache (mount), or\n"
	    "                       fail (fail). A refused token always fails.\n"
	    "  -o server=URL        base URL of the GitLab or reef-hub server (default\n"
	    "                       $GITLAB_URL)\n"
	    "  -o mgmt=URL          base URL of the management API (/api/v1: experiments,\n"
	    "                       data pipelines, visualizations, processors) when it is\n"
	    "                       not the server's (default: the server); the token is\n"
	    "                       sent there too\n"
	    "  -o token_file=PATH   file holding a personal access token (mode 0600);\n"
	    "                       without it the token is read from $REEF_TOKEN, else\n"
	    "                       $GITLAB_PRIVATE_TOKEN\n"
	    "  -o cache=DIR         object cache (default ~/.cache/reef/<host_port>)\n"
	    "  -o cache_limit=SIZE  hard cache size: bytes, or a number (1.5 allowed) with K, M,\n"
	    "                       G or T, alone or with B or iB (512M, 1.5G, 1GB, 2GiB); all\n"
	    "                       powers of 1024 (1GB = 2^30 bytes); default %d%% of the\n"
	    "                       free disk, at least 1G\n"
	    "  -o lfs_above=SIZE    reef commit sends files larger than SIZE to Git LFS and\n"
	    "                       adds their .gitattributes lines (default: off)\n"
	    "  -o branch_ttl=S      seconds a branch head is trusted (default 5)\n"
	    "  -o poll=S            seconds between polls of the branches in use; a push shows\n"
	    "                       within this (default %g)\n"
	    "  -o prefetch=N        siblings prefetched ahead of files opened in order\n"
	    "                       (default %d, 0 turns it off)\n"
	    "  -o readahead=KB      kernel readahead of the mount, when allowed to set it\n"
	    "                       (default %d, 0 leaves the kernel's)\n"
	    "  -o passthrough=0|1   let the kernel read complete cached files itself (FUSE\n"
	    "                       passthrough; needs root and Linux 6.9; default 1)\n"
	    "  -o retry_max=S       seconds a request may wait when the server throttles\n"
	    "                       (Retry-After, RateLimit-*); longer asks are EIO (default %d)\n"
	    "  -o max_requests=N    requests to the server in flight at once (default %d)\n"
	    "  -o max_threads=N     FUSE worker threads (default 4 per CPU, 16 to 64)\n"
	    "  -o max_idle_threads=N  idle workers kept (default 2 per CPU, at least 4)\n"
	    "Unmount with: fusermount3 -u MOUNTPOINT\n",
	    prog, prog, CACHE_LIMIT_DEFAULT_PCT, CACHE_POLL_MS_DEFAULT / 1000.0, DEFAULT_PREFETCH,
	    DEFAULT_READAHEAD, GL_RETRY_WAIT_S, GL_INFLIGHT_DEFAULT);
}

/* A number of seconds in [lo, hi], fractions allowed. */
static int seconds_parse(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

static int uint_parse(const char *s, unsigned long hi, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!*s || *s == '-')
		return -EINVAL;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Whether an -o option was given on the command line (libfuse's parser cannot tell an
 * explicit value from its default). */
static bool opt_given(int argc, char **argv, const char *name)
{
	size_t len = strlen(name);
	int i;

	for (i = 1; i < argc; i++) {
		const char *p = argv[i];

		while ((p = strstr(p, name))) {
			if ((p == argv[i] || p[-1] == ',' || p[-1] == 'o') && p[len] == '=')
				return true;
			p += len;
		}
	}
	return false;
}

/* Reads the token, refusing a file others can read or write, like ssh does with keys. */
static int token_read(const char *path, char **out)
{
	char buf[TOKEN_MAX + 1];
	struct stat st;
	ssize_t n;
	size_t len = 0, i;
	int fd;

	*out = NULL;
	/* O_NONBLOCK: a FIFO (or a device) must be refused below, not wait for a writer. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return log_ret(-errno, "cannot open token file %s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return log_ret(-EINVAL, "token file %s is not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return log_ret(-EPERM,
		               "token file %s is accessible by group or others (mode %04o); "
		               "refusing to use it: run chmod 600 %s",
		               path, (unsigned)(st.st_mode & 07777), path);
	}
	if (st.st_uid != getuid()) {
		close(fd);
		return log_ret(-EPERM, "token file %s is not owned by the mounting user", path);
	}
	while (len < sizeof(buf)) {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return log_ret(-errno, "cannot read token file %s: %s", path,
			               strerror(errno));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len > TOKEN_MAX)
		return log_ret(-EINVAL, "token file %s is larger than %d bytes", path, TOKEN_MAX);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
	                   buf[len - 1] == '\t'))
		len--;
	buf[len] = 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
			return log_ret(-EINVAL, "token file %s holds more than one printable token",
			               path);
	if (len == 0)
		return log_ret(-EINVAL, "token file %s is empty", path);
	*out = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return *out ? 0 : -ENOMEM;
}

static int token_check(const char *t)
{
	size_t i, len = strlen(t);

	if (len == 0 || len > TOKEN_MAX)
		return -EINVAL;
	for (i = 0; i < len; i++)
		if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
			return -EINVAL;
	return 0;
}

/* mkdir -p with mode 0700 for what it creates. */
static int mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	size_t i, len = strlen(path);

	if (len == 0 || len >= sizeof(tmp))
		return -ENAMETOOLONG;
	memcpy(tmp, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != 0)
			continue;
		tmp[i] = 0;
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		tmp[i] = path[i];
	}
	return 0;
}

/* The cache holds private repositories' objects and the control journal: a directory
 * that already existed must be ours, and is made 0700 if group or others had access. */
static int cache_dir_private(const char *dir)
{
	struct stat st;

	if (lstat(dir, &st) < 0)
		return log_ret(-errno, "cannot stat cache directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return log_ret(-ENOTDIR, "cache %s is not a directory", dir);
	if (st.st_uid != getuid())
		return log_ret(-EPERM, "cache directory %s is not owned by the mounting user", dir);
	if ((st.st_mode & 077) && chmod(dir, 0700) < 0)
		return log_ret(-errno, "cannot make cache directory %s private: %s", dir,
		               strerror(errno));
	if (st.st_mode & 077)
		log_warn("cache directory %s was mode %04o: now 0700", dir,
		         (unsigned)(st.st_mode & 07777));
	return 0;
}

/* ~/.cache/reef/<host_port> (XDG_CACHE_HOME honoured); host_port from the URL with
 * anything outside [A-Za-z0-9.-] turned into '_'. */
static int default_cache_dir(const char *server, char *out, size_t cap)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	const char *p = strstr(server, "://");
	char hp[256];
	size_t i = 0;
	int r;

	p = p ? p + 3 : server;
	if (strchr(p, '@') && (!strchr(p, '/') || strchr(p, '@') < strchr(p, '/')))
		p = strchr(p, '@') + 1; /* drop any user info */
	for (; *p && *p != '/' && *p != '?' && *p != '#' && i + 1 < sizeof(hp); p++) {
		char c = *p;

		if (c == '[' || c == ']')
			continue;
		hp[i++] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		           (c >= '0' && c <= '9') || c == '.' || c == '-')
		              ? c
		              : '_';
	}
	hp[i] = 0;
	if (i == 0 || strcmp(hp, ".") == 0 || strcmp(hp, "..") == 0)
		return -EINVAL;
	if (xdg && xdg[0] == '/')
		r = snprintf(out, cap, "%s/reef/%s", xdg, hp);
	else if (home && home[0] == '/')
		r = snprintf(out, cap, "%s/.cache/reef/%s", home, hp);
	else
		return -ENOENT;
	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}

static int absolute(const char *path, char *out, size_t cap)
{
	char cwd[PATH_MAX];
	int r;

	if (path[0] == '/')
		r = snprintf(out, cap, "%s", path);
	else if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	else
		r = snprintf(out, cap, "%s/%s", cwd, path);
	return r < 0 || (size_t)r >= cap ? -ENAMETOOLONG : 0;
}

/* Background mode: the parent waits for the child to report that the mount is up (or why
 * it failed) and exits with that status, so `reefd … && ls MNT` works. */
static int daemon_start(int *notify_fd)
{
	int p[2];
	pid_t pid;
	char status = 1;

	if (pipe(p) < 0)
		return log_ret(-errno, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		return log_ret(-errno, "fork: %s", strerror(errno));
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &status, 1) != 1)
			status = 1;
		_exit(status);
	}
	close(p[0]);
	if (setsid() < 0)
		log_warn("setsid: %s", strerror(errno));
	*notify_fd = p[1];
	return 0;
}

static void daemon_ready(int *notify_fd, char status)
{
	int null;

	if (*notify_fd < 0)
		return;
	if (status == 0) {
		if (chdir("/") < 0)
			log_warn("chdir /: %s", strerror(errno));
		null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			if (null > STDERR_FILENO)
				close(null);
		}
	}
	if (write(*notify_fd, &status, 1) != 1)
		log_warn("cannot notify the parent process: %s", strerror(errno));
	close(*notify_fd);
	*notify_fd = -1;
}

/* libfuse's own messages (a lost /dev/fuse, a bad option) go where reefd's go: after
 * daemonizing, stderr is /dev/null. */
static void reefd_fuse_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	enum log_level l = level <= FUSE_LOG_ERR       ? LOG_LVL_ERROR
	                   : level <= FUSE_LOG_WARNING ? LOG_LVL_WARN
	                   : level <= FUSE_LOG_INFO    ? LOG_LVL_INFO
	                                               : LOG_LVL_DEBUG;
	char msg[1024];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = 0;
	if (n)
		log_msg(l, "fuse: %s", msg);
}

/* Whether the cache holds anything to serve without the server. */
static bool cache_has_data(struct cache *c)
{
	json_t *st = NULL;
	bool has;

	if (cache_stats(c, &st) < 0)
		return false;
	has = json_integer_value(json_object_get(st, "objects")) > 0;
	json_decref(st);
	return has;
}

/* The mount-time check (see the header): 0 to go on mounting, -1 after saying why not. */
static int server_check(struct cache *c, const char *server, const char *mode,
                        const char *cache_dir)
{
	char why[256] = "";
	int r = cache_check(c, why, sizeof(why));
	bool has;

	if (r == 0)
		return 0;
	if (r == -EACCES) {
		char *paren = strstr(why, " (");

		if (paren) /* "HTTP 401 (the token was refused)": the message says it already */
			*paren = 0;
		log_error("%s refused the token (%s): not mounting; log in again (reef login) or "
		          "check token_file",
		          server, why);
		return -1;
	}
	if (r != -EIO) { /* it answered, but not as a GitLab does */
		log_error("%s: GET /api/v4/user failed (%s): not mounting; is it the base URL of a "
		          "GitLab server (without /api/v4)?",
		          server, why);
		return -1;
	}
	has = cache_has_data(c);
	if (!strcmp(mode, "fail") || (!strcmp(mode, "cache") && !has)) {
		log_error("cannot reach %s: %s: not mounting%s", server, why,
		          strcmp(mode, "fail") ? " (nothing cached to serve offline; "
		                                 "-o unreachable=mount mounts anyway)"
		                               : "");
		return -1;
	}
	/* logged, and kept in .reef/status last_errors for reef status */
	cache_err_note(c,
	               "at mount: cannot reach %s (%s): mounted offline, serving what is cached "
	               "in %s; the server is asked again when a lookup needs it",
	               server, why, cache_dir);
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cmd = {0};
	struct reefd_opts o = {0};
	struct fuse_session *se = NULL;
	struct fuse_loop_config *lcfg = NULL;
	struct ops_ctx *ctx = NULL;
	struct cache *cache = NULL;
	struct mlops *mlops = NULL;
	struct cache_opts co = {0};
	struct ops_opts oo = {0};
	char cache_dir[PATH_MAX], mnt[PATH_MAX];
	char *token = NULL;
	double ttl = DEFAULT_BRANCH_TTL, poll = CACHE_POLL_MS_DEFAULT / 1000.0;
	unsigned long prefetch = DEFAULT_PREFETCH, readahead = DEFAULT_READAHEAD;
	unsigned long retry_max = GL_RETRY_WAIT_S, max_requests = GL_INFLIGHT_DEFAULT;
	uint64_t limit = 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned threads, idle;
	int notify_fd = -1, ret = 1, r;
	json_t *user = NULL;

	log_set_ident("reefd");
	fuse_set_log_func(reefd_fuse_log);
	if (fuse_opt_parse(&args, &o, reefd_spec, reefd_opt_proc) != 0) {
		usage(stderr, argv[0]);
		ret = 2;
		goto out;
	}
	if (fuse_parse_cmdline(&args, &cmd) != 0) {
		usage(stderr, argv[0]);
		ret = 2;
		goto out;
	}
	if (cmd.show_help) {
		usage(stdout, argv[0]);
		ret = 0;
		goto out;
	}
	if (cmd.show_version) {
		printf("reefd %s (libfuse %s)\n", REEF_VERSION, fuse_pkgversion());
		ret = 0;
		goto out;
	}
	if (cmd.debug || o.verbose)
		log_set_level(LOG_LVL_DEBUG);
	if (o.unreachable && strcmp(o.unreachable, "cache") && strcmp(o.unreachable, "mount") &&
	    strcmp(o.unreachable, "fail")) {
		fprintf(stderr, "reefd: unreachable must be cache, mount or fail\n");
		ret = 2;
		goto out;
	}
	if (o.log) {
		char lp[PATH_MAX];

		/* absolute: a daemon changes to / */
		r = absolute(o.log, lp, sizeof(lp));
		if (r == 0)
			r = log_file_open(lp);
		if (r < 0) {
			fprintf(stderr, "reefd: cannot open the log file %s: %s\n", o.log,
			        strerror(-r));
			ret = 2;
			goto out;
		}
	}
	if (o.source && o.server && strcmp(o.source, o.server)) {
		fprintf(stderr, "reefd: two servers: %s and -o server=%s\n", o.source, o.server);
		ret = 2;
		goto out;
	}
	if (o.source && !o.server) {
		o.server = o.source;
		o.source = NULL;
	}
	/* python-gitlab's and glab's variable, as the last resort */
	if (!o.server && getenv("GITLAB_URL") && getenv("GITLAB_URL")[0]) {
		o.server = strdup(getenv("GITLAB_URL"));
		if (!o.server)
			goto out;
		for (size_t n = strlen(o.server); n > 8 && o.server[n - 1] == '/'; n--)
			o.server[n - 1] = 0;
	}
	if (!o.server || !o.server[0] || !cmd.mountpoint) {
		fprintf(stderr, "reefd: %s\n",
		        !cmd.mountpoint ? "missing MOUNTPOINT" : "missing -o server=URL");
		usage(stderr, argv[0]);
		ret = 2;
		goto out;
	}
	if (strncmp(o.server, "http://", 7) != 0 && strncmp(o.server, "https://", 8) != 0) {
		fprintf(stderr, "reefd: server must be an http:// or https:// URL\n");
		ret = 2;
		goto out;
	}
	if (o.mgmt && strncmp(o.mgmt, "http://", 7) != 0 && strncmp(o.mgmt, "https://", 8) != 0) {
		fprintf(stderr, "reefd: mgmt must be an http:// or https:// URL\n");
		ret = 2;
		goto out;
	}
	if (o.branch_ttl && seconds_parse(o.branch_ttl, 0, 86400, &ttl) < 0) {
		fprintf(stderr, "reefd: branch_ttl must be a number of seconds (0-86400)\n");
		ret = 2;
		goto out;
	}
	if (o.poll && seconds_parse(o.poll, 0.1, 86400, &poll) < 0) {
		fprintf(stderr, "reefd: poll must be a number of seconds (0.1-86400)\n");
		ret = 2;
		goto out;
	}
	if (o.lfs_above && (cache_limit_parse(o.lfs_above, &oo.lfs_above) < 0 || !oo.lfs_above)) {
		fprintf(stderr, "reefd: lfs_above=%s must be a size above 0, as cache_limit\n",
		        o.lfs_above);
		ret = 2;
		goto out;
	}
	if (o.cache_limit && (r = cache_limit_parse(o.cache_limit, &limit)) < 0) {
		fprintf(
		    stderr,
		    "reefd: cache_limit=%s: %s; it must be a size above 0: bytes, or a number "
		    "with K, M, G or T, alone or with B or iB (512M, 1.5G, 1GB, 2GiB: powers of "
		    "1024)\n",
		    o.cache_limit,
		    r == -ERANGE                             ? "too large (at most 16 EiB)"
		    : size_parse(o.cache_limit, &limit) == 0 ? "zero"
		                                             : "not a size");
		ret = 2;
		goto out;
	}
	if (o.prefetch && uint_parse(o.prefetch, 64, &prefetch) < 0) {
		fprintf(stderr, "reefd: prefetch must be a number of files (0-64)\n");
		ret = 2;
		goto out;
	}
	if (o.readahead && uint_parse(o.readahead, 1 << 20, &readahead) < 0) {
		fprintf(stderr, "reefd: readahead must be a number of KiB (0-1048576)\n");
		ret = 2;
		goto out;
	}
	if (o.retry_max && (uint_parse(o.retry_max, 3600, &retry_max) < 0 || retry_max == 0)) {
		fprintf(stderr, "reefd: retry_max must be a number of seconds (1-3600)\n");
		ret = 2;
		goto out;
	}
	if (o.max_requests &&
	    (uint_parse(o.max_requests, 256, &max_requests) < 0 || max_requests == 0)) {
		fprintf(stderr, "reefd: max_requests must be a number (1-256)\n");
		ret = 2;
		goto out;
	}
	gl_limits_set((unsigned)retry_max, (unsigned)max_requests);
	if (o.passthrough && strcmp(o.passthrough, "0") != 0 && strcmp(o.passthrough, "1") != 0) {
		fprintf(stderr, "reefd: passthrough must be 0 or 1\n");
		ret = 2;
		goto out;
	}
	if (o.token_file) {
		if (token_read(o.token_file, &token) < 0)
			goto out;
	} else if (getenv("REEF_TOKEN") || getenv("GITLAB_PRIVATE_TOKEN")) {
		const char *var = getenv("REEF_TOKEN") ? "REEF_TOKEN" : "GITLAB_PRIVATE_TOKEN";

		if (token_check(getenv(var)) < 0) {
			log_error("%s does not hold a printable token", var);
			goto out;
		}
		token = strdup(getenv(var));
		if (!token)
			goto out;
	} else {
		fprintf(stderr, "reefd: no token: give -o token_file=PATH or set REEF_TOKEN (or "
		                "GITLAB_PRIVATE_TOKEN)\n");
		usage(stderr, argv[0]);
		ret = 2;
		goto out;
	}
	if (!realpath(cmd.mountpoint, mnt)) {
		log_error("mount point %s: %s", cmd.mountpoint, strerror(errno));
		goto out;
	}
	r = o.cache ? absolute(o.cache, cache_dir, sizeof(cache_dir))
	            : default_cache_dir(o.server, cache_dir, sizeof(cache_dir));
	if (r < 0) {
		log_error("cannot choose a cache directory: %s", strerror(-r));
		goto out;
	}

	/* Fork before opening LMDB, libgit2 and curl: none of them survives a fork. */
	if (!cmd.foreground && daemon_start(&notify_fd) < 0)
		goto out;

	r = mkdir_p(cache_dir);
	if (r < 0) {
		log_error("cannot create cache directory %s: %s", cache_dir, strerror(-r));
		goto out;
	}
	if (cache_dir_private(cache_dir) < 0)
		goto out;
	co.dir = cache_dir;
	co.server = o.server;
	co.token = token;
	co.branch_ttl_ms = (unsigned)(ttl * 1000);
	co.list_ttl_ms = co.branch_ttl_ms;
	co.limit = limit;
	co.poll_ms = (unsigned)(poll * 1000);
	r = cache_new(&cache, &co);
	if (r < 0) {
		log_error("cannot open the cache in %s: %s", cache_dir, strerror(-r));
		goto out;
	}
	if (server_check(cache, o.server, o.unreachable ? o.unreachable : "cache", cache_dir) < 0)
		goto out;
	if (cache_user_known(cache, &user) == 0) {
		log_info("connected to %s as %s", o.server,
		         json_string_value(json_object_get(user, "username"))
		             ? json_string_value(json_object_get(user, "username"))
		             : "?");
	}

	oo.server = o.server;
	oo.mountpoint = mnt;
	oo.branch_timeout_s = ttl < 1.0 ? ttl : 1.0;
	oo.poll_s = poll;
	oo.prefetch_ahead = (unsigned)prefetch;
	oo.readahead_kb = (unsigned)readahead;
	oo.cache_dir = cache_dir;
	r = ops_ctx_new(&ctx, &oo);
	if (r < 0) {
		log_error("cannot set up the filesystem: %s", strerror(-r));
		goto out;
	}
	ops_ctx_set_cache(ctx, cache);
	r = mlops_new(&mlops,
	              &(struct mlops_opts){
	                  .server = o.server, .mgmt = o.mgmt, .token = token, .dir = cache_dir});
	if (r == 0) {
		mlops_set_err_hook(mlops, cache_err_hook, cache);
		r = ops_ctx_set_mlops(ctx, mlops);
	}
	if (r == 0)
		r = mlops_start(mlops); /* delivers what a previous run left queued */
	if (r < 0) {
		log_error("cannot open the control journal in %s: %s", cache_dir, strerror(-r));
		goto out;
	}

	if (fuse_opt_add_arg(&args, "-ofsname=reef,subtype=reef,default_permissions") != 0)
		goto out;
	se = fuse_session_new(&args, ops_table(), sizeof(*ops_table()), ctx);
	if (!se) {
		ret = 2; /* libfuse printed which option it did not know */
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, mnt) != 0) {
		log_error("cannot mount on %s", mnt);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	r = passthru_attach(se, !o.passthrough || strcmp(o.passthrough, "1") == 0);
	if (r < 0) {
		log_error("cannot install the FUSE session's I/O hooks: %s", strerror(-r));
		fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	r = ops_ctx_start(ctx, se);
	if (r < 0) {
		log_error("cannot start the background threads: %s", strerror(-r));
		fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
		goto out;
	}
	/* A worker blocks while its read waits for the network, so there are several per
	 * CPU; the kernel keeps up to max_background readahead requests in flight. */
	if (ncpu < 1)
		ncpu = 1;
	threads = opt_given(argc, argv, "max_threads") && cmd.max_threads ? cmd.max_threads
	                                                                  : (unsigned)(4 * ncpu);
	if (!opt_given(argc, argv, "max_threads"))
		threads = threads < 16 ? 16 : threads > 64 ? 64 : threads;
	idle = cmd.max_idle_threads != UINT_MAX ? cmd.max_idle_threads : (unsigned)(2 * ncpu);
	if (cmd.max_idle_threads == UINT_MAX && idle < 4)
		idle = 4;
	log_info("mounted %s on %s (cache %s, branch ttl %.3gs, poll %.3gs, %u threads)", o.server,
	         mnt, cache_dir, ttl, poll, cmd.singlethread ? 1 : threads);
	if (notify_fd >= 0)
		log_syslog_start(); /* stderr becomes /dev/null below */
	daemon_ready(&notify_fd, 0);
	{
		/* under systemd (Type=notify): the unit is active once the mount answers */
		char st[5120];

		snprintf(st, sizeof(st), "READY=1\nSTATUS=%s mounted on %s", o.server, mnt);
		if (sdnotify(st) < 0)
			log_warn("cannot notify systemd: NOTIFY_SOCKET is not usable");
	}

	lcfg = fuse_loop_cfg_create();
	if (!lcfg) {
		r = -ENOMEM;
	} else {
		fuse_loop_cfg_set_clone_fd(lcfg, (unsigned)cmd.clone_fd);
		fuse_loop_cfg_set_idle_threads(lcfg, idle);
		fuse_loop_cfg_set_max_threads(lcfg, threads);
		r = cmd.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, lcfg);
	}
	sdnotify("STOPPING=1");
	/* no invalidation may be sent into a session being torn down */
	ops_ctx_stop(ctx);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	if (r < 0)
		log_error("session ended with an error: %s", strerror(-r));
	else
		log_info("unmounted %s%s", mnt, r > 0 ? " (signal)" : "");
	ret = r < 0 ? 1 : 0;
out:
	daemon_ready(&notify_fd, (char)(ret ? ret : 1));
	ops_ctx_stop(ctx);
	if (lcfg)
		fuse_loop_cfg_destroy(lcfg);
	if (se)
		fuse_session_destroy(se);
	ops_ctx_free(ctx);
	mlops_free(mlops);
	json_decref(user);
	cache_free(cache);
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	free(o.server);
	free(o.mgmt);
	free(o.source);
	free(o.token_file);
	free(o.cache);
	free(o.branch_ttl);
	free(o.cache_limit);
	free(o.lfs_above);
	free(o.poll);
	free(o.prefetch);
	free(o.retry_max);
	free(o.max_requests);
	free(o.readahead);
	free(o.passthrough);
	free(o.log);
	free(o.unreachable);
	free(cmd.mountpoint);
	log_close();
	fuse_opt_free_args(&args);
	return ret;
}
