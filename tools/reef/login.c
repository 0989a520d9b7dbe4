/* reef login, logout, servers, mount, unmount: storing a server (conf.c: the configuration,
 * $XDG_CONFIG_HOME/reef/config, one section per named server, tokens in tokens/NAME,
 * mode 0600) and running reefd with one. The token is read from stdin (or taken from
 * python-gitlab's file or $GITLAB_PRIVATE_TOKEN), checked once against GET /api/v4/user
 * and never printed or logged. */
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
    "Usage: reef login [--name NAME] [SERVER_URL]\n"
    "   or: reef login --gitlab SECTION [--name NAME]\n"
    "Reads a personal access token from stdin (not echoed on a terminal), checks it with\n"
    "GET SERVER_URL/api/v4/user and stores the server as NAME in\n"
    "$XDG_CONFIG_HOME/reef/config and the token in $XDG_CONFIG_HOME/reef/tokens/NAME\n"
    "(mode 0600; XDG_CONFIG_HOME defaults to ~/.config). Other servers stay; the one\n"
    "logged in to becomes the default of 'reef mount'. SERVER_URL is the http:// or\n"
    "https:// base URL, without /api/v4; default $GITLAB_URL. On a terminal with\n"
    "$GITLAB_PRIVATE_TOKEN set, that token is used instead of asking.\n"
    "  --name NAME       the server's name ([A-Za-z0-9._-]; default: the name it already\n"
    "                    has, else its host and port)\n"
    "  --gitlab SECTION  take the URL and private_token of python-gitlab's SECTION\n"
    "                    ($PYTHON_GITLAB_CFG, else /etc/python-gitlab.cfg and\n"
    "                    ~/.python-gitlab.cfg)\n";

static const char logout_help[] =
    "Usage: reef logout [--name NAME]\n"
    "Removes server NAME (default: the default server) from $XDG_CONFIG_HOME/reef/config\n"
    "and deletes its token file when reef stored it (in that directory) and no other\n"
    "server uses it. If it was the default, the last server left becomes the default.\n"
    "python-gitlab's sections and $GITLAB_URL are not reef's to remove. A running mount\n"
    "is not unmounted.\n"
    "  --name NAME  the server to remove (see 'reef servers')\n";

static const char mount_help[] =
    "Usage: reef mount [-f] [-o OPTS]... [NAME] [DIR]\n"
    "Mounts server NAME (see 'reef servers'; default: the default server) at DIR\n"
    "(default ~/reef, or ~/reef-NAME when NAME is given; created if missing) by running\n"
    "reefd with -o server=URL,token_file=PATH plus the OPTS given (see 'reefd --help':\n"
    "cache=DIR, cache_limit=SIZE, poll=S, log=FILE, unreachable=...). Returns once\n"
    "mounted; with -f, reefd stays in the foreground in reef's place (for systemd).\n"
    "One argument is NAME when a server has that name, else DIR.\n"
    "Without a 'reef login', the server is $GITLAB_URL with $GITLAB_PRIVATE_TOKEN, else\n"
    "python-gitlab's default section; NAME may also be a python-gitlab section.\n"
    "Refuses a DIR that is already mounted, and a DIR that is not empty unless\n"
    "-o nonempty is given; a dead mount at DIR (reefd killed: 'Transport endpoint is\n"
    "not connected') is cleaned up with fusermount3 -u first.\n"
    "reefd is $REEF_REEFD, else ../../daemon/reefd from reef's own directory (a build\n"
    "tree), else reefd next to reef, else reefd on PATH.\n";

static const char unmount_help[] =
    "Usage: reef unmount [NAME|DIR]\n"
    "Unmounts DIR (default ~/reef; ~/reef-NAME for a server's NAME) with fusermount3 -u;\n"
    "reefd then exits.\n";

static const char servers_help[] =
    "Usage: reef servers\n"
    "Lists the servers 'reef mount NAME' knows: reef's own (reef login; * marks the\n"
    "default), python-gitlab's sections and $GITLAB_URL. Tokens are never shown.\n";

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

static int login_mkdirs(const char *dir)
{
	char p[PATH_MAX + 16];

	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -ENAMETOOLONG;
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

/* host[_port] of a URL, as a server name. */
static void login_name_from_url(const char *url, char *out, size_t size)
{
	const char *p = strstr(url, "://");
	size_t i = 0;

	p = p ? p + 3 : url;
	if (strchr(p, '@') && (!strchr(p, '/') || strchr(p, '@') < strchr(p, '/')))
		p = strchr(p, '@') + 1;
	for (; *p && *p != '/' && i + 1 < size && i + 1 < REEF_NAME_MAX; p++) {
		if (*p == '[' || *p == ']')
			continue;
		out[i++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		                   (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
		               ? *p
		               : '_';
	}
	out[i] = 0;
	if (!reef_server_name_ok(out))
		snprintf(out, size, "default");
}

/* count server lists, the first holding reef's own servers; NULL when the configuration
 * cannot be read (reported, *ret the exit status), so that it is never rewritten: it may
 * hold other servers. */
static struct reef_servers *login_servers(size_t count, int *ret)
{
	struct reef_servers *s = calloc(count, sizeof(*s));
	char why[512];
	int r;

	if (!s) {
		*ret = reef_fail("out of memory");
		return NULL;
	}
	r = reef_servers_load(s, why, sizeof(why));
	if (r < 0 && r != -ENOENT) {
		free(s);
		*ret = reef_fail("cannot read the configuration: %s", why);
		return NULL;
	}
	return s;
}

int reef_cmd_login(int argc, char **argv)
{
	char server[REEF_URL_MAX], tok[REEF_TOKEN_MAX + 2], user[256], dir[PATH_MAX];
	char tokdir[PATH_MAX + 8], tokfile[PATH_MAX + 80], name[REEF_NAME_MAX], why[512];
	const char *url = NULL, *want = NULL, *section = NULL, *known;
	struct reef_servers *s = NULL;
	struct reef_server pg;
	size_t n;
	int r;

	if (reef_help(argc, argv, login_help))
		return REEF_EXIT_OK;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--name") || !strcmp(argv[i], "--gitlab")) {
			if (i + 1 >= argc)
				return reef_usage("login", "%s needs a value", argv[i]);
			*(!strcmp(argv[i], "--name") ? &want : &section) = argv[i + 1];
			i++;
		} else if (argv[i][0] == '-') {
			return reef_usage("login", "unknown option %s", argv[i]);
		} else if (url) {
			return reef_usage("login", "login takes one SERVER_URL");
		} else {
			url = argv[i];
		}
	}
	if (want && !reef_server_name_ok(want))
		return reef_usage("login",
		                  "NAME must be letters, digits, '.', '_' or '-' (at most "
		                  "%d), and not 'global'",
		                  REEF_NAME_MAX - 1);
	if (section && url)
		return reef_usage("login", "give SERVER_URL or --gitlab SECTION, not both");
	if (section) {
		r = reef_server_find(section, &pg, why, sizeof(why));
		if (r == 0 && pg.from != REEF_FROM_PYTHON_GITLAB) {
			r = -ENOENT;
			snprintf(why, sizeof(why), "python-gitlab has no section [%s]", section);
		}
		if (r < 0)
			return reef_fail("%s", why);
		url = pg.url;
	}
	if (!url && getenv("GITLAB_URL") && *getenv("GITLAB_URL"))
		url = getenv("GITLAB_URL");
	if (!url)
		return reef_usage("login", "login takes one SERVER_URL");
	n = strlen(url);
	if ((strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || n >= sizeof(server) ||
	    strpbrk(url, ", \t\n\r"))
		return reef_usage("login", "SERVER_URL must be an http:// or https:// URL "
		                           "without commas or blanks");
	snprintf(server, sizeof(server), "%s", url);
	while (n > 8 && server[n - 1] == '/')
		server[--n] = '\0';
	if (n >= 7 && !strcmp(server + n - 7, "/api/v4"))
		server[n - 7] = '\0';
	r = reef_config_dir(dir, sizeof(dir));
	if (r < 0)
		return reef_fail("no configuration directory: set HOME or XDG_CONFIG_HOME");
	if (strchr(dir, ','))
		return reef_fail("%s: a comma in the path cannot be passed to reefd", dir);
	s = login_servers(1, &r);
	if (!s)
		return r;
	known = reef_server_name_by_url(s, server);
	if (want)
		snprintf(name, sizeof(name), "%s", want);
	else if (known)
		snprintf(name, sizeof(name), "%s", known);
	else
		login_name_from_url(server, name, sizeof(name));
	if (section) {
		snprintf(tok, sizeof(tok), "%s", pg.token);
		explicit_bzero(&pg, sizeof(pg));
	} else if (isatty(STDIN_FILENO) && getenv("GITLAB_PRIVATE_TOKEN") &&
	           *getenv("GITLAB_PRIVATE_TOKEN")) {
		if (strlen(getenv("GITLAB_PRIVATE_TOKEN")) > REEF_TOKEN_MAX) {
			free(s);
			return reef_fail("the token is longer than %d bytes", REEF_TOKEN_MAX);
		}
		snprintf(tok, sizeof(tok), "%s", getenv("GITLAB_PRIVATE_TOKEN"));
		fprintf(stderr, "reef: using the token in $GITLAB_PRIVATE_TOKEN\n");
	} else {
		r = login_read_token(tok, sizeof(tok) - 1);
		if (r == -EFBIG || (r == 0 && strlen(tok) > REEF_TOKEN_MAX)) {
			free(s);
			return reef_fail("the token is longer than %d bytes", REEF_TOKEN_MAX);
		}
		if (r < 0) {
			free(s);
			return reef_fail("no token on stdin (paste a personal access token)");
		}
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	r = login_check(server, tok, user, sizeof(user));
	if (r)
		goto out;
	snprintf(tokdir, sizeof(tokdir), "%s/tokens", dir);
	snprintf(tokfile, sizeof(tokfile), "%s/%s", tokdir, name);
	if ((r = login_mkdirs(tokdir)) < 0 || (r = reef_store_file(tokdir, name, tok)) < 0 ||
	    (r = reef_servers_add(s, name, server, tokfile)) < 0 ||
	    (r = reef_servers_save(dir, s)) < 0) {
		r = reef_fail("cannot store the login in %s: %s", dir, strerror(-r));
		goto out;
	}
	printf("logged in to %s as %s (server %s)\n", server, user, name);
	r = REEF_EXIT_OK;
out:
	explicit_bzero(tok, sizeof(tok));
	free(s);
	curl_global_cleanup();
	return r;
}

/* The names of reef's own servers, for a message: "a, b" or "none". */
static void logout_names(const struct reef_servers *s, char *out, size_t size)
{
	size_t len = 0;

	snprintf(out, size, "%s", s->n ? "" : "none");
	for (size_t i = 0; i < s->n && len < size; i++)
		len += (size_t)snprintf(out + len, size - len, "%s%s", i ? ", " : "", s->v[i].name);
}

/* A token file reef wrote itself (tokens/NAME, or the old single token) is removed with
 * its server; one a user named with token_file= elsewhere is theirs. */
static bool logout_owns(const char *dir, const char *file)
{
	size_t n = strlen(dir);

	return !strncmp(file, dir, n) && file[n] == '/' && !strstr(file + n, "/..");
}

int reef_cmd_logout(int argc, char **argv)
{
	struct reef_servers *s;
	struct reef_server *v = NULL;
	const char *want = NULL;
	char dir[PATH_MAX], cfg[PATH_MAX + 8];
	char names[REEF_SERVERS_MAX * (REEF_NAME_MAX + 2)], name[REEF_NAME_MAX];
	char url[REEF_URL_MAX], tokfile[sizeof(v->token_file)], olddef[sizeof(s->def)];
	bool shared = false;
	int r;

	if (reef_help(argc, argv, logout_help))
		return REEF_EXIT_OK;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--name"))
			return reef_usage("logout", "unknown argument %s", argv[i]);
		if (i + 1 >= argc)
			return reef_usage("logout", "--name needs a value");
		if (want)
			return reef_usage("logout", "--name is given once");
		want = argv[++i];
	}
	if (reef_config_dir(dir, sizeof(dir)) < 0)
		return reef_fail("no configuration directory: set HOME or XDG_CONFIG_HOME");
	s = login_servers(1, &r);
	if (!s)
		return r;
	logout_names(s, names, sizeof(names));
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].name, want ? want : s->def))
			v = &s->v[i];
	if (!want && !v && s->n) /* no default named: the one 'reef mount' takes */
		v = &s->v[s->n - 1];
	if (!v) {
		if (!want)
			r = reef_fail("not logged in to any server (reef's servers: none)");
		else if (reef_server_known(want))
			r = reef_fail("%s is not one of reef's servers but python-gitlab's section "
			              "(edit its file); reef's servers: %s",
			              want, names);
		else
			r = reef_fail("no server named %s; reef's servers: %s", want, names);
		free(s);
		return r;
	}
	snprintf(name, sizeof(name), "%s", v->name);
	snprintf(url, sizeof(url), "%s", v->url);
	snprintf(tokfile, sizeof(tokfile), "%s", v->token_file);
	snprintf(olddef, sizeof(olddef), "%s", s->def);
	reef_servers_remove(s, name);
	for (size_t i = 0; i < s->n; i++)
		shared |= !strcmp(s->v[i].token_file, tokfile);
	/* the configuration first: a server never stays without its token */
	r = reef_servers_save(dir, s);
	if (r < 0) {
		free(s);
		return reef_fail("cannot write the configuration in %s: %s", dir, strerror(-r));
	}
	snprintf(cfg, sizeof(cfg), "%s/config", dir);
	printf("logged out of %s (%s): removed from %s\n", name, url, cfg);
	if (shared) {
		printf("kept its token file %s: another server uses it\n", tokfile);
	} else if (!logout_owns(dir, tokfile)) {
		printf("kept its token file %s: not one reef stored\n", tokfile);
	} else if (unlink(tokfile) == 0) {
		printf("deleted its token file %s\n", tokfile);
	} else if (errno != ENOENT) {
		r = reef_fail("cannot delete the token file %s: %s", tokfile, strerror(errno));
		free(s);
		return r;
	}
	if (!s->n)
		printf("no servers are left\n");
	else if (strcmp(olddef, s->def))
		printf("the default server is now %s\n", s->def);
	free(s);
	return REEF_EXIT_OK;
}

int reef_cmd_servers(int argc, char **argv)
{
	struct reef_servers *s;
	char why[512];
	const char *env = getenv("GITLAB_URL");
	int r, any = 0;

	if (argc == 2 && reef_is_help(argv[1])) {
		fputs(servers_help, stdout);
		return REEF_EXIT_OK;
	}
	if (argc > 1)
		return reef_usage("servers", "servers takes no arguments");
	s = login_servers(2, &r);
	if (!s)
		return r;
	for (size_t i = 0; i < s->n; i++, any++)
		printf("%c %-20s %s\n", strcmp(s->v[i].name, s->def) ? ' ' : '*', s->v[i].name,
		       s->v[i].url);
	r = reef_pgl_load(s + 1, why, sizeof(why));
	if (r < 0 && r != -ENOENT)
		fprintf(stderr, "reef: python-gitlab's configuration: %s\n", why);
	for (size_t i = 0; r == 0 && i < s[1].n; i++, any++)
		printf("  %-20s %s (python-gitlab%s)\n", s[1].v[i].name, s[1].v[i].url,
		       strcmp(s[1].v[i].name, s[1].def) ? "" : ", its default");
	if (env && *env) {
		printf("  %-20s %s (environment)\n", "GITLAB_URL", env);
		any++;
	}
	explicit_bzero(s + 1, sizeof(*s));
	free(s);
	if (!any)
		printf("no servers: run 'reef login SERVER_URL'\n");
	return REEF_EXIT_OK;
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

/* One positional argument of mount/unmount: a server's name (no '/', and a server has
 * it), else a directory. */
static bool mount_arg_is_name(const char *arg)
{
	return !strchr(arg, '/') && reef_server_known(arg);
}

static int mount_dir_of(const char *name, char *out, size_t size)
{
	const char *home = getenv("HOME");

	if (!name)
		return reef_default_mount(out, size);
	if (!home || !*home)
		return -ENOENT;
	return snprintf(out, size, "%s/reef-%s", home, name) >= (int)size ? -ENAMETOOLONG : 0;
}

int reef_cmd_mount(int argc, char **argv)
{
	char dir[PATH_MAX], reefd[PATH_MAX], why[512];
	struct buf opts = BUF_INIT(65536), extra = BUF_INIT(65536);
	const char *pos[2] = {NULL, NULL}, *name = NULL, *target = NULL;
	struct reef_server *sv = calloc(1, sizeof(*sv));
	bool nonempty = false, fg = false;
	size_t npos = 0;
	char fstype[64];
	int r, code;

	if (!sv)
		return reef_fail("out of memory");
	if (reef_help(argc, argv, mount_help)) {
		free(sv);
		return REEF_EXIT_OK;
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
		} else if (!strcmp(argv[i], "-f")) {
			fg = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			r = reef_usage("mount", "unknown option %s", argv[i]);
			goto out;
		} else if (npos == 2) {
			r = reef_usage("mount", "mount takes [NAME] [DIR]");
			goto out;
		} else {
			pos[npos++] = argv[i];
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
	if (npos == 2) {
		name = pos[0];
		target = pos[1];
	} else if (npos == 1 && mount_arg_is_name(pos[0])) {
		name = pos[0];
	} else {
		target = pos[0];
	}
	/* usage errors first: they do not depend on having logged in */
	r = reef_server_find(name, sv, why, sizeof(why));
	if (r < 0) {
		r = reef_fail("%s", why);
		goto out;
	}
	if (strpbrk(sv->url, ", \t\n") || strchr(sv->token_file, ',')) {
		r = reef_fail("server %s: a comma or a blank in its URL or token path cannot be "
		              "passed to reefd",
		              sv->name);
		goto out;
	}
	if (sv->token_file[0])
		r = buf_printf(&opts, "server=%s,token_file=%s%s", sv->url, sv->token_file,
		               extra.data ? extra.data : "");
	else /* python-gitlab's or the environment's: to reefd in its environment only */
		r = buf_printf(&opts, "server=%s%s", sv->url, extra.data ? extra.data : "");
	if (r < 0) {
		r = reef_usage("mount", "-o options too long");
		goto out;
	}
	if (target)
		snprintf(dir, sizeof(dir), "%s", target);
	else if (mount_dir_of(name, dir, sizeof(dir)) < 0) {
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
	if (!sv->token_file[0] && setenv("REEF_TOKEN", sv->token, 1) < 0) {
		r = reef_fail("cannot pass the token to reefd: %s", strerror(errno));
		goto out;
	}
	fflush(NULL);
	if (fg) { /* for a service manager: reefd itself is the process it watches */
		execvp(reefd, (char *const[]){reefd, "-f", "-o", opts.data, dir, NULL});
		r = reef_fail("cannot run %s: %s", reefd, strerror(errno));
		goto out;
	}
	/* reefd without -f forks and exits only once the mount is up (or failed, having
	 * said why on stderr) */
	code = mount_run((char *const[]){reefd, "-o", opts.data, dir, NULL});
	if (code == 0) {
		printf("mounted %s at %s\n", sv->url, dir);
		r = REEF_EXIT_OK;
	} else if (code < 0) {
		r = reef_fail("cannot run %s: %s", reefd, strerror(errno));
	} else {
		r = reef_fail("reefd failed to mount %s (exit %d)", dir, code);
	}
out:
	explicit_bzero(sv, sizeof(*sv));
	free(sv);
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
		return reef_usage("unmount", "unmount takes one NAME or DIR");
	if (argc == 2 && argv[1][0] == '-')
		return reef_usage("unmount", "unknown option %s", argv[1]);
	if (argc == 2 && mount_arg_is_name(argv[1]) && access(argv[1], F_OK) < 0) {
		if (mount_dir_of(argv[1], dir, sizeof(dir)) < 0)
			return reef_fail("no HOME: give the mount point");
	} else if (argc == 2)
		snprintf(dir, sizeof(dir), "%s", argv[1]);
	else if (reef_default_mount(dir, sizeof(dir)) < 0)
		return reef_fail("no HOME: give the mount point");
	fflush(NULL);
	code = mount_run((char *const[]){"fusermount3", "-u", dir, NULL});
	if (code != 0)
		return reef_fail("fusermount3 -u %s failed", dir);
	return REEF_EXIT_OK;
}
