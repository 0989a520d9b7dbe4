/* reef's servers: its own configuration ($XDG_CONFIG_HOME/reef/config, written by
 * `reef login`, one INI section per named server, tokens in tokens/NAME mode 0600; the
 * single-server file of earlier versions, "server=URL" with the token in token, is still
 * read), python-gitlab's configuration files and the GITLAB_URL/GITLAB_PRIVATE_TOKEN
 * variables. See reef_server_find for which wins. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reef.h"
#include "reef/ini.h"

#define CONF_FILE_MAX ((size_t)1 << 20)

struct conf_parse {
	struct reef_servers *s;
	bool pgl;      /* python-gitlab's file: private_token inline, [global] default */
	int err;       /* first problem met, reported after the parse */
	char why[256]; /* what it was */
};

static struct reef_server *conf_get(struct reef_servers *s, const char *name, bool create)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].name, name))
			return &s->v[i];
	if (!create || s->n >= REEF_SERVERS_MAX)
		return NULL;
	memset(&s->v[s->n], 0, sizeof(s->v[0]));
	snprintf(s->v[s->n].name, sizeof(s->v[0].name), "%s", name);
	return &s->v[s->n++];
}

bool reef_server_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (!n || n >= REEF_NAME_MAX || !strcmp(name, ".") || !strcmp(name, "..") ||
	    !strcmp(name, "global"))
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
			return false;
	return true;
}

static int conf_cb(void *arg, const char *section, const char *key, const char *value)
{
	struct conf_parse *p = arg;
	struct reef_server *v;

	if (!*section) {
		if (!p->pgl && !strcmp(key, "default"))
			snprintf(p->s->def, sizeof(p->s->def), "%s", value);
		else if (!p->pgl && !strcmp(key, "server")) /* the single-server file */
			snprintf(p->s->legacy, sizeof(p->s->legacy), "%s", value);
		return 0;
	}
	if (p->pgl && !strcmp(section, "global")) {
		if (!strcmp(key, "default"))
			snprintf(p->s->def, sizeof(p->s->def), "%s", value);
		return 0;
	}
	if (!reef_server_name_ok(section))
		return 0; /* not one reef could name on its command line */
	v = conf_get(p->s, section, true);
	if (!v) {
		p->err = -E2BIG;
		snprintf(p->why, sizeof(p->why), "more than %d servers", REEF_SERVERS_MAX);
		return 0;
	}
	v->from = p->pgl ? REEF_FROM_PYTHON_GITLAB : REEF_FROM_REEF;
	if (!strcmp(key, "url")) {
		if (strlen(value) >= sizeof(v->url))
			return 0;
		snprintf(v->url, sizeof(v->url), "%s", value);
	} else if (!p->pgl && !strcmp(key, "token_file")) {
		snprintf(v->token_file, sizeof(v->token_file), "%s", value);
	} else if (p->pgl && !strcmp(key, "private_token")) {
		if (strlen(value) > REEF_TOKEN_MAX)
			return 0;
		snprintf(v->token, sizeof(v->token), "%s", value);
	} else if (p->pgl && (!strcmp(key, "oauth_token") || !strcmp(key, "job_token"))) {
		snprintf(v->unsupported, sizeof(v->unsupported), "%s", key);
	}
	return 0;
}

/* Reads one INI file into s; -ENOENT when it does not exist. */
static int conf_read(const char *path, struct reef_servers *s, bool pgl, char *why, size_t wsize)
{
	struct conf_parse p = {.s = s, .pgl = pgl};
	struct buf b = BUF_INIT(0);
	unsigned line = 0;
	int r = reef_read_file(path, CONF_FILE_MAX, &b);

	if (r < 0) {
		if (r == -EFBIG)
			snprintf(why, wsize, "%s: larger than %zu bytes", path, CONF_FILE_MAX);
		else if (r != -ENOENT)
			snprintf(why, wsize, "%s: %s", path, strerror(-r));
		buf_free(&b);
		return r;
	}
	r = ini_parse(b.data ? b.data : "", b.len, conf_cb, &p, &line);
	buf_free(&b);
	if (r < 0) {
		snprintf(why, wsize, "%s: line %u: %s", path, line,
		         r == -E2BIG ? "too long, or too many entries"
		                     : "not INI ([section] or key = value; no continuation lines)");
		return r;
	}
	if (p.err) {
		snprintf(why, wsize, "%s: %s", path, p.why);
		return p.err;
	}
	return 0;
}

int reef_servers_load(struct reef_servers *s, char *why, size_t wsize)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	int r;

	memset(s, 0, sizeof(*s));
	why[0] = 0;
	r = reef_config_dir(dir, sizeof(dir));
	if (r < 0) {
		snprintf(why, wsize, "no configuration directory: set HOME or XDG_CONFIG_HOME");
		return r;
	}
	snprintf(path, sizeof(path), "%s/config", dir);
	r = conf_read(path, s, false, why, wsize);
	if (r < 0 && r != -ENOENT)
		return r;
	for (size_t i = 0; i < s->n; i++) {
		struct reef_server *v = &s->v[i];

		if (!v->token_file[0] &&
		    snprintf(v->token_file, sizeof(v->token_file), "%s/tokens/%s", dir, v->name) >=
		        (int)sizeof(v->token_file))
			return -ENAMETOOLONG;
	}
	/* the file of earlier versions: server=URL, the token in token */
	if (s->legacy[0] && s->n == 0) {
		struct reef_server *v = conf_get(s, "default", true);

		snprintf(v->url, sizeof(v->url), "%s", s->legacy);
		snprintf(v->token_file, sizeof(v->token_file), "%s/token", dir);
		v->from = REEF_FROM_REEF;
		snprintf(s->def, sizeof(s->def), "default");
	}
	for (size_t i = 0; i < s->n; i++)
		if (!s->v[i].url[0]) {
			snprintf(why, wsize, "%s: server %s has no url", path, s->v[i].name);
			return -EINVAL;
		}
	return 0;
}

int reef_pgl_load(struct reef_servers *s, char *why, size_t wsize)
{
	const char *env = getenv("PYTHON_GITLAB_CFG"), *home = getenv("HOME");
	char user[PATH_MAX];
	int r;

	memset(s, 0, sizeof(*s));
	why[0] = 0;
	/* python-gitlab (gitlab/config.py): $PYTHON_GITLAB_CFG alone when set, else
	 * /etc/python-gitlab.cfg then ~/.python-gitlab.cfg, the later winning */
	if (env && *env) {
		r = conf_read(env, s, true, why, wsize);
		if (r == -ENOENT)
			snprintf(why, wsize, "PYTHON_GITLAB_CFG=%s: no such file", env);
		return r;
	}
	r = conf_read("/etc/python-gitlab.cfg", s, true, why, wsize);
	if (r < 0 && r != -ENOENT)
		return r;
	if (home && *home &&
	    snprintf(user, sizeof(user), "%s/.python-gitlab.cfg", home) < (int)sizeof(user)) {
		r = conf_read(user, s, true, why, wsize);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return s->n ? 0 : -ENOENT;
}

/* A server from GITLAB_URL and GITLAB_PRIVATE_TOKEN (python-gitlab's and glab's
 * variables; CI_SERVER_URL comes with a job token, which cannot list projects). */
static int conf_env(struct reef_server *out)
{
	const char *url = getenv("GITLAB_URL"), *tok = getenv("GITLAB_PRIVATE_TOKEN");

	if (!url || !*url)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "GITLAB_URL");
	if (strlen(url) >= sizeof(out->url) || (tok && strlen(tok) > REEF_TOKEN_MAX))
		return -EINVAL;
	snprintf(out->url, sizeof(out->url), "%s", url);
	if (tok)
		snprintf(out->token, sizeof(out->token), "%s", tok);
	out->from = REEF_FROM_ENV;
	return 0;
}

int reef_server_find(const char *name, struct reef_server *out, char *why, size_t wsize)
{
	struct reef_servers *s = calloc(2, sizeof(*s)), *pgl;
	struct reef_server *v = NULL;
	char pwhy[512] = "";
	int r, pr;

	if (!s)
		return -ENOMEM;
	pgl = s + 1;
	r = reef_servers_load(s, why, wsize);
	if (r < 0 && r != -ENOENT)
		goto out;
	pr = reef_pgl_load(pgl, pwhy, sizeof(pwhy));
	if (name) {
		v = conf_get(s, name, false);
		if (!v && pr == 0)
			v = conf_get(pgl, name, false);
		if (!v && pr < 0 && pr != -ENOENT) {
			snprintf(why, wsize, "%s", pwhy);
			r = pr;
			goto out;
		}
		if (!v) {
			snprintf(why, wsize, "no server named %s (see 'reef servers')", name);
			r = -ENOENT;
			goto out;
		}
	} else if (s->n) {
		v = conf_get(s, s->def, false);
		if (!v)
			v = &s->v[s->n - 1];
	} else if (conf_env(out) == 0) {
		r = 0;
		goto out;
	} else if (pr == 0 && pgl->def[0] && (v = conf_get(pgl, pgl->def, false))) {
		/* python-gitlab's [global] default */
	} else {
		if (pr < 0 && pr != -ENOENT)
			snprintf(why, wsize, "%s", pwhy);
		else
			snprintf(why, wsize,
			         "not logged in: run 'reef login SERVER_URL' first (or set "
			         "GITLAB_URL and GITLAB_PRIVATE_TOKEN)");
		r = -ENOENT;
		goto out;
	}
	*out = *v;
	r = 0;
out:
	if (r == 0 && out->from == REEF_FROM_PYTHON_GITLAB && !out->token[0]) {
		snprintf(why, wsize,
		         "python-gitlab's section [%s] has no private_token%s%s%s (reef sends a "
		         "personal access token)",
		         out->name, out->unsupported[0] ? " (" : "", out->unsupported,
		         out->unsupported[0] ? " is not supported)" : "");
		r = -EINVAL;
	}
	if (r == 0 && out->from == REEF_FROM_PYTHON_GITLAB && !strncmp(out->token, "helper:", 7)) {
		snprintf(why, wsize,
		         "python-gitlab's section [%s]: a private_token from a helper is not "
		         "supported",
		         out->name);
		r = -EINVAL;
	}
	if (r == 0 && out->from == REEF_FROM_ENV && !out->token[0]) {
		snprintf(why, wsize, "GITLAB_URL is set but GITLAB_PRIVATE_TOKEN is not");
		r = -EINVAL;
	}
	explicit_bzero(pgl, sizeof(*pgl));
	free(s);
	return r;
}

/* Writes dir/name through a temporary file and rename (mode 0600). */
int reef_store_file(const char *dir, const char *name, const char *data)
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

int reef_servers_save(const char *dir, const struct reef_servers *s)
{
	struct buf b = BUF_INIT(CONF_FILE_MAX);
	char tokdefault[PATH_MAX + 16];
	int r;

	r = buf_printf(&b,
	               "# reef's servers, written by 'reef login' (see man reef). Tokens are\n"
	               "# in tokens/NAME (mode 0600) unless token_file says otherwise.\n"
	               "default = %s\n",
	               s->def);
	for (size_t i = 0; r == 0 && i < s->n; i++) {
		const struct reef_server *v = &s->v[i];

		snprintf(tokdefault, sizeof(tokdefault), "%s/tokens/%s", dir, v->name);
		r = buf_printf(&b, "\n[%s]\nurl = %s\n", v->name, v->url);
		if (r == 0 && strcmp(v->token_file, tokdefault))
			r = buf_printf(&b, "token_file = %s\n", v->token_file);
	}
	if (r == 0)
		r = reef_store_file(dir, "config", b.data);
	buf_free(&b);
	return r;
}

int reef_servers_add(struct reef_servers *s, const char *name, const char *url,
                     const char *token_file)
{
	struct reef_server *v = conf_get(s, name, true);

	if (!v)
		return -E2BIG;
	snprintf(v->url, sizeof(v->url), "%s", url);
	snprintf(v->token_file, sizeof(v->token_file), "%s", token_file);
	v->from = REEF_FROM_REEF;
	snprintf(s->def, sizeof(s->def), "%s", name);
	return 0;
}

int reef_servers_remove(struct reef_servers *s, const char *name)
{
	struct reef_server *v = conf_get(s, name, false);
	size_t i;

	if (!v)
		return -ENOENT;
	i = (size_t)(v - s->v);
	memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(s->v[0]));
	s->n--;
	/* without a default, reef_server_find takes the last one: name it, so that the
	 * file says what reef does */
	if (!conf_get(s, s->def, false))
		snprintf(s->def, sizeof(s->def), "%s", s->n ? s->v[s->n - 1].name : "");
	return 0;
}

const char *reef_server_name_by_url(const struct reef_servers *s, const char *url)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->v[i].url, url))
			return s->v[i].name;
	return NULL;
}

bool reef_server_known(const char *name)
{
	struct reef_servers *s = calloc(2, sizeof(*s));
	char why[512];
	bool found = false;

	if (!s || !reef_server_name_ok(name)) {
		free(s);
		return false;
	}
	if (reef_servers_load(s, why, sizeof(why)) >= 0 || s->n)
		found = conf_get(s, name, false) != NULL;
	if (!found && reef_pgl_load(s + 1, why, sizeof(why)) == 0)
		found = conf_get(s + 1, name, false) != NULL;
	explicit_bzero(s, 2 * sizeof(*s));
	free(s);
	return found;
}
