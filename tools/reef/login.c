/* reef login, mount, unmount: the configuration ($XDG_CONFIG_HOME/reef/config holding
 * `server=URL`, and the token in .../reef/token, mode 0600) and running reefd with it.
 * The token is read from stdin, checked once against GET /api/v4/user and never
 * printed or logged. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "reef.h"
#include "reef/jsonx.h"

static const char login_help[] =
    "Usage: reef login SERVER_URL\n"
    "Reads a personal access token from stdin (not echoed on a terminal), checks it with\n"
    "GET SERVER_URL/api/v4/user and stores the server in $XDG_CONFIG_HOME/reef/config and\n"
    "the token in $XDG_CONFIG_HOME/reef/token (mode 0600; XDG_CONFIG_HOME defaults to\n"
    "~/.config). SERVER_URL is the http:// or https:// base URL, without /api/v4.\n";

static const char mount_help[] =
    "Usage: reef mount [-o OPTS]... [DIR]\n"
    "Mounts the server of 'reef login' at DIR (default ~/reef, created if missing) by\n"
    "running reefd with -o server=URL,token_file=PATH plus the OPTS given (see\n"
    "'reefd --help': cache=DIR, cache_limit=SIZE, poll=S, ...). Returns once mounted.\n"
    "Refuses a DIR that is already mounted, and a DIR that is not empty unless\n"
    "-o nonempty is given; a dead mount at DIR (reefd killed: 'Transport endpoint is\n"
    "not connected') is cleaned up with fusermount3 -u first.\n"
    "reefd is $REEF_REEFD, else ../../daemon/reefd from reef's own directory (a build\n"
    "tree), else reefd next to reef, else reefd on PATH.\n";

static const char unmount_help[] =
    "Usage: reef unmount [DIR]\n"
    "Unmounts DIR (default ~/reef) with fusermount3 -u; reefd then exits.\n";

static size_t login_sink(void *data, size_t size, size_t n, void *user)
{
	struct buf *b = user;

	if (buf_append(b, data, size * n) < 0)
		return 0; /* over the cap: curl fails the transfer */
	return size * n;
}

/* Reads one line from stdin into tok, echo off on a terminal. */
static int login_read_token(char *tok, size_t size)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO);
	char *s, *e;
	int r = 0;

	if (tty) {
		/* echo off before the prompt: what is typed after it never shows */
		if (tcgetattr(STDIN_FILENO, &old) == 0) {
			quiet = old;
			quiet.c_lflag &= ~(tcflag_t)ECHO;
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
		} else {
			tty = false;
		}
		fputs("Personal access token: ", stderr);
		fflush(stderr);
	}
	if (!fgets(tok, (int)size, stdin))
		r = -ENODATA;
	else if (!strchr(tok, '\n') && !feof(stdin))
		r = -EFBIG;
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (r < 0)
		return r;
	for (s = tok; *s == ' ' || *s == '\t'; s++)
		;
	e = s + strlen(s);
	while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	memmove(tok, s, (size_t)(e - s) + 1);
	if (!*tok)
		return -ENODATA;
	/* it goes into an HTTP header: no control characters */
	for (s = tok; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return -EINVAL;
	return 0;
}

/* GET /api/v4/user with the token: 0 and the username, or 1 after a message. */
static int login_check(const char *server, const char *tok, char *user, size_t usize)
{
	char url[REEF_URL_MAX + 32], hdr[REEF_TOKEN_MAX + 32], errbuf[CURL_ERROR_SIZE] = "";
	struct buf body = BUF_INIT(1 << 20);
	struct curl_slist *h = NULL;
	json_t *o = NULL;
	const char *name;
	long status = 0;
	CURLcode cc;
	CURL *c;
	int r = REEF_EXIT_FAIL;

	snprintf(url, sizeof(url), "%s/api/v4/user", server);
	snprintf(hdr, sizeof(hdr), "PRIVATE-TOKEN: %s", tok);
	c = curl_easy_init();
	h = curl_slist_append(NULL, hdr);
	if (!c || !h) {
		reef_fail("out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L); /* never carry the token elsewhere */
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, login_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "reef-cli/0.1");
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		reef_fail("cannot reach %s: %s", server,
		          errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status == 401 || status == 403) {
		reef_fail("%s refused the token (HTTP %ld)", server, status);
		goto out;
	}
	if (status != 200) {
		reef_fail("%s answered HTTP %ld to GET /api/v4/user (is it a GitLab?)", server,
		          status);
		goto out;
	}
	if (jsonx_parse(&o, body.data ? body.data : "", body.len, 0, 0) < 0 ||
	    !(name = jsonx_str(o, "username")) || !*name || strlen(name) >= usize) {
		reef_fail("%s answered GET /api/v4/user without a username", server);
		goto out;
	}
	snprintf(user, usize, "%s", name);
	r = 0;
out:
	json_decref(o);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	buf_free(&body);
	return r;
}

/* Writes data to dir/name through a temporary file and rename, so a reader never sees
 * half a file and the token is never, even briefly, in a file others may read. */
static int login_store(const char *dir, const char *name, const char *data)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	size_t len = strlen(data);
	int fd, r = 0;

	if (snprintf(dst, sizeof(dst), "%s/%s", dir, name) >= (int)sizeof(dst) ||
	    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	errno = 0;
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, dst) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

static int login_mkdirs(const char *dir)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s", dir);
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int reef_cmd_login(int argc, char **argv)
{
	char server[REEF_URL_MAX], tok[REEF_TOKEN_MAX + 2], user[256], dir[PATH_MAX];
	char conf[REEF_URL_MAX + 16];
	size_t n;
	int r;

	if (argc == 2 && reef_is_help(argv[1])) {
		fputs(login_help, stdout);
		return REEF_EXIT_OK;
	}
	if (argc != 2)
		return reef_usage("login", "login takes one SERVER_URL");
	n = strlen(argv[1]);
	if ((strncmp(argv[1], "http://", 7) && strncmp(argv[1], "https://", 8)) ||
	    n >= sizeof(server) || strpbrk(argv[1], ", \t\n\r"))
		return reef_usage("login", "SERVER_URL must be an http:// or https:// URL "
		                           "without commas or blanks");
	snprintf(server, sizeof(server), "%s", argv[1]);
	while (n > 8 && server[n - 1] == '/')
		server[--n] = '\0';
	if (n >= 7 && !strcmp(server + n - 7, "/api/v4"))
		server[n - 7] = '\0';
	r = reef_config_dir(dir, sizeof(dir));
	if (r < 0)
		return reef_fail("no configuration directory: set HOME or XDG_CONFIG_HOME");
	if (strchr(dir, ','))
		return reef_fail("%s: a comma in the path cannot be passed to reefd", dir);
	r = login_read_token(tok, sizeof(tok) - 1);
	if (r == -EFBIG)
		return reef_fail("the token is longer than %d bytes", REEF_TOKEN_MAX);
	if (r < 0)
		return reef_fail("no token on stdin (paste a personal access token)");
	if (strlen(tok) > REEF_TOKEN_MAX)
		return reef_fail("the token is longer than %d bytes", REEF_TOKEN_MAX);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	r = login_check(server, tok, user, sizeof(user));
	if (r)
		goto out;
	snprintf(conf, sizeof(conf), "server=%s\n", server);
	if ((r = login_mkdirs(dir)) < 0 || (r = login_store(dir, "token", tok)) < 0 ||
	    (r = login_store(dir, "config", conf)) < 0) {
		r = reef_fail("cannot store the login in %s: %s", dir, strerror(-r));
		goto out;
	}
	printf("logged in to %s as %s\n", server, user);
	r = REEF_EXIT_OK;
out:
	explicit_bzero(tok, sizeof(tok));
	curl_global_cleanup();
	return r;
}

int reef_config_load(char *server, size_t ssize, char *token_path, size_t tsize)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	struct buf b = BUF_INIT(0);
	const char *v;
	int r;

	r = reef_config_dir(dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "%s/config", dir);
	r = reef_read_file(path, 65536, &b);
	if (r < 0)
		goto out;
	r = -ENOENT;
	for (char *line = b.data, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (strncmp(line, "server=", 7))
			continue;
		v = line + 7;
		if (strlen(v) >= ssize || !*v) {
			r = -EINVAL;
			goto out;
		}
		snprintf(server, ssize, "%s", v);
		r = 0;
	}
	if (r == 0 && snprintf(token_path, tsize, "%s/token", dir) >= (int)tsize)
		r = -ENAMETOOLONG;
out:
	buf_free(&b);
	return r;
}

/* Where reefd is: see mount_help. */
static int mount_find_reefd(char *out, size_t size)
{
	const char *env = getenv("REEF_REEFD");
	char self[PATH_MAX], *slash;
	ssize_t n;

	if (env && *env) {
		snprintf(out, size, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			if (snprintf(out, size, "%s/../../daemon/reefd", self) < (int)size &&
			    access(out, X_OK) == 0)
				return 0;
			if (snprintf(out, size, "%s/reefd", self) < (int)size &&
			    access(out, X_OK) == 0)
				return 0;
		}
	}
	snprintf(out, size, "reefd"); /* execvp searches PATH */
	return 0;
}

/* Runs argv, waits; its exit status, or -1 when it could not run. */
static int mount_run(char *const argv[])
{
	int st;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "reef: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* dir exists and holds something (a mount would hide it). */
static bool mount_dir_used(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool used = false;

	if (!d)
		return false;
	while (!used && (e = readdir(d)))
		used = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return used;
}

int reef_cmd_mount(int argc, char **argv)
{
	char server[REEF_URL_MAX], token[PATH_MAX], dir[PATH_MAX], reefd[PATH_MAX];
	struct buf opts = BUF_INIT(65536), extra = BUF_INIT(65536);
	const char *target = NULL;
	bool nonempty = false;
	char fstype[64];
	int r, code;

	for (int i = 1; i < argc; i++) {
		if (reef_is_help(argv[i])) {
			fputs(mount_help, stdout);
			return REEF_EXIT_OK;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *o = NULL;

		if (!strcmp(argv[i], "-o")) {
			if (i + 1 >= argc) {
				r = reef_usage("mount", "-o needs OPTS");
				goto out;
			}
			o = argv[++i];
		} else if (!strncmp(argv[i], "-o", 2)) {
			o = argv[i] + 2;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			r = reef_usage("mount", "unknown option %s", argv[i]);
			goto out;
		} else if (target) {
			r = reef_usage("mount", "mount takes one DIR");
			goto out;
		} else {
			target = argv[i];
		}
		/* nonempty is reef's own (fuse3 has no such option): the rest goes to reefd */
		while (o && *o) {
			size_t n = strcspn(o, ",");

			if (n == 8 && !strncmp(o, "nonempty", 8))
				nonempty = true;
			else if (n && buf_printf(&extra, ",%.*s", (int)n, o) < 0) {
				r = reef_usage("mount", "-o options too long");
				goto out;
			}
			o += n + (o[n] == ',');
		}
	}
	/* usage errors first: they do not depend on having logged in */
	r = reef_config_load(server, sizeof(server), token, sizeof(token));
	if (r == -ENOENT) {
		r = reef_fail("not logged in: run 'reef login SERVER_URL' first");
		goto out;
	}
	if (r < 0) {
		r = reef_fail("cannot read the configuration: %s", strerror(-r));
		goto out;
	}
	if (buf_printf(&opts, "server=%s,token_file=%s%s", server, token,
	               extra.data ? extra.data : "") < 0) {
		r = reef_usage("mount", "-o options too long");
		goto out;
	}
	if (target)
		snprintf(dir, sizeof(dir), "%s", target);
	else if (reef_default_mount(dir, sizeof(dir)) < 0) {
		r = reef_fail("no HOME: give the mount point");
		goto out;
	}
	/* what sshfs users expect: no second mount on top of a live one, a dead one (its
	 * reefd was killed) cleaned up, and no files hidden without a word */
	code = reef_mountpoint(dir, fstype, sizeof(fstype));
	if (code == 1 && reef_mount_dead(dir)) {
		fprintf(stderr,
		        "reef: %s: a dead mount (its reefd is gone: Transport endpoint is not "
		        "connected); cleaning up with fusermount3 -u %s\n",
		        dir, dir);
		fflush(NULL);
		if (mount_run((char *const[]){"fusermount3", "-u", dir, NULL}) != 0) {
			r = reef_fail("fusermount3 -u %s failed: unmount it by hand (as root: "
			              "umount -l %s)",
			              dir, dir);
			goto out;
		}
	} else if (code == 1) {
		r = reef_fail("%s is already mounted (%s): 'reef unmount %s' first", dir, fstype,
		              dir);
		goto out;
	}
	if (!nonempty && mount_dir_used(dir)) {
		r = reef_fail("%s is not empty: a mount would hide its files (give -o nonempty to "
		              "mount over them anyway)",
		              dir);
		goto out;
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		r = reef_fail("cannot create %s: %s", dir, strerror(errno));
		goto out;
	}
	mount_find_reefd(reefd, sizeof(reefd));
	fflush(NULL);
	/* reefd without -f forks and exits only once the mount is up (or failed, having
	 * said why on stderr) */
	code = mount_run((char *const[]){reefd, "-o", opts.data, dir, NULL});
	if (code == 0) {
		printf("mounted %s at %s\n", server, dir);
		r = REEF_EXIT_OK;
	} else if (code < 0) {
		r = reef_fail("cannot run %s: %s", reefd, strerror(errno));
	} else {
		r = reef_fail("reefd failed to mount %s (exit %d)", dir, code);
	}
out:
	buf_free(&opts);
	buf_free(&extra);
	return r;
}

int reef_cmd_unmount(int argc, char **argv)
{
	char dir[PATH_MAX];
	int code;

	if (argc == 2 && reef_is_help(argv[1])) {
		fputs(unmount_help, stdout);
		return REEF_EXIT_OK;
	}
	if (argc > 2)
		return reef_usage("unmount", "unmount takes one DIR");
	if (argc == 2 && argv[1][0] == '-')
		return reef_usage("unmount", "unknown option %s", argv[1]);
	if (argc == 2)
		snprintf(dir, sizeof(dir), "%s", argv[1]);
	else if (reef_default_mount(dir, sizeof(dir)) < 0)
		return reef_fail("no HOME: give the mount point");
	fflush(NULL);
	code = mount_run((char *const[]){"fusermount3", "-u", dir, NULL});
	if (code != 0)
		return reef_fail("fusermount3 -u %s failed", dir);
	return REEF_EXIT_OK;
}
