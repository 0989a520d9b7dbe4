/* git smart HTTP through `git http-backend`. The request body is spooled to an unlinked
 * file under DIR/tmp (so the CGI can never block us on a full pipe while we still feed
 * it), the CGI's stdout is streamed back as the response body. */
#include "git.h"

#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <microhttpd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hook.h"
#include "hub_ci.h"
#include "protect.h"
#include "reef/log.h"
#include "reef/util.h"

#define GIT_MAX_CGI_HEADERS (16 * 1024)
#define GIT_ENV_MAX         40

enum git_endpoint { GIT_INFO_REFS, GIT_UPLOAD_PACK, GIT_RECEIVE_PACK };

struct hub_git {
	struct hub *hub;
	int64_t project_id;
	enum git_endpoint endpoint;
	bool write;
	int spool;
	uint64_t spooled;
	char user[256];
	int64_t user_id;
	char push_id[33];                 /* receive-pack: the hooks' key for this push (hook.h) */
	char only_ref[HUB_MAX_PATH + 16]; /* job token of a launch: the one ref it may push */
	bool no_pipeline;                 /* job token: GitLab starts no pipeline for its pushes */
	char *query;
	pid_t pid;
	int out;       /* CGI stdout */
	char *pending; /* body bytes read together with the CGI headers */
	size_t pending_len, pending_off;
	uint64_t sent; /* response body bytes, for the namespace's transfer usage */
	char repo[PATH_MAX];
};

static const struct {
	const char *suffix;
	enum git_endpoint ep;
} endpoints[] = {
    {".git/info/refs", GIT_INFO_REFS},
    {".git/git-upload-pack", GIT_UPLOAD_PACK},
    {".git/git-receive-pack", GIT_RECEIVE_PACK},
};

/* Splits "/a/b/p.git/info/refs" into the project path length and the endpoint. */
static int git_split(const char *path, size_t *proj_len, enum git_endpoint *ep)
{
	size_t len = strlen(path);

	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		size_t sl = strlen(endpoints[i].suffix);

		if (len > sl + 1 && strcmp(path + len - sl, endpoints[i].suffix) == 0) {
			*proj_len = len - sl - 1;
			*ep = endpoints[i].ep;
			return 0;
		}
	}
	return -ENOENT;
}

bool hub_git_match(const char *path)
{
	size_t n;
	enum git_endpoint ep;

	return git_split(path, &n, &ep) == 0;
}

static void deny_basic(struct hub_resp *resp)
{
	hub_resp_raw(resp, 401, "text/plain", "HTTP Basic: Access denied\n", 26);
	hub_resp_header(resp, "WWW-Authenticate", "Basic realm=\"GitLab\"");
}

static void deny_text(struct hub_resp *resp, int status, const char *msg)
{
	hub_resp_raw(resp, status, "text/plain", msg, strlen(msg));
}

/* 32 random hex digits naming one push's rows in push_events. */
static int push_id_new(char out[33])
{
	uint8_t rnd[16];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(out + 2 * i, 3, "%02x", rnd[i]);
	return 0;
}

static int spool_open(const char *dir)
{
	char tmp[PATH_MAX];
	int fd;

	if (hub_pathf(tmp, sizeof(tmp), "%s/tmp", dir) < 0)
		return -ENAMETOOLONG;
	mkdir(tmp, 0700);
	fd = open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	/* Filesystems without O_TMPFILE: a named file unlinked at once. */
	if (hub_pathf(tmp, sizeof(tmp), "%s/tmp/spool-XXXXXX", dir) < 0)
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(tmp);
	return fd;
}

int hub_git_start(struct hub_req *req, struct hub_resp *resp, const char *path, const char *query,
                  struct hub_git **out)
{
	static const char not_found[] = "The project you were looking for could not be found or "
	                                "you don't have permission to view it.\n";
	struct hub_project p;
	struct hub_user user;
	struct hub_git *g = NULL;
	enum git_endpoint ep;
	const char *service;
	unsigned scopes = 0;
	bool write, anon, readable;
	enum hub_access acc;
	char *proj, launch_ref[HUB_MAX_PATH] = "";
	size_t plen;
	int r;

	if (git_split(path, &plen, &ep) < 0) {
		hub_resp_not_found(resp);
		return 1;
	}
	if ((ep == GIT_INFO_REFS) !=
	        (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0) ||
	    (ep != GIT_INFO_REFS && strcmp(req->method, "POST") != 0)) {
		hub_resp_not_found(resp);
		return 1;
	}
	proj = strndup(path + 1, plen);
	if (!proj) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return 1;
	}
	if (url_decode(proj, proj, false) < 0 || !path_is_safe(proj, HUB_MAX_PATH)) {
		free(proj);
		hub_resp_error(resp, 400, "400 Bad request");
		return 1;
	}
	service = hub_req_query(req, "service");
	if (ep == GIT_INFO_REFS && (!service || (strcmp(service, "git-upload-pack") != 0 &&
	                                         strcmp(service, "git-receive-pack") != 0))) {
		/* GitLab serves no dumb protocol. */
		deny_text(resp, 403, "Only smart HTTP is supported\n");
		free(proj);
		return 1;
	}
	write = ep == GIT_RECEIVE_PACK ||
	        (ep == GIT_INFO_REFS && strcmp(service, "git-receive-pack") == 0);
	r = hub_auth_basic(req, &user, &scopes);
	if (r < 0) {
		free(proj);
		deny_basic(resp);
		return 1;
	}
	anon = r == 0;
	req->user = anon ? NULL : &user;
	r = hub_project_load(req->hub, proj, &p);
	free(proj);
	if (r < 0 || !hub_project_visible(req->hub, &p, req->user) ||
	    (req->job_project_id > 0 && p.id != req->job_project_id)) {
		/* Anonymous callers get a challenge so git retries with credentials. */
		if (anon)
			deny_basic(resp);
		else
			deny_text(resp, 404, not_found);
		goto refused;
	}
	if (anon && write) {
		deny_basic(resp);
		goto refused;
	}
	acc = hub_project_access(req->hub, &p, req->user);
	readable = strcmp(p.visibility, "private") != 0 || acc >= HUB_ACCESS_REPORTER;
	if (!readable) {
		deny_text(resp, 403, "You are not allowed to download code from this project.\n");
		goto refused;
	}
	/* lib/gitlab/auth.rb, abilities_for_scopes: api and write_repository push and
	 * download; read_api and read_repository download. */
	if (!anon && !(scopes & (HUB_SCOPE_API | HUB_SCOPE_WRITE_REPOSITORY |
	                         (write ? 0 : HUB_SCOPE_READ_REPOSITORY | HUB_SCOPE_READ_API)))) {
		deny_text(resp, 403, "The token does not have the scope for this request.\n");
		goto refused;
	}
	if (write && acc < HUB_ACCESS_DEVELOPER) {
		deny_text(resp, 403, "You are not allowed to push code to this project.\n");
		goto refused;
	}
	/* A job token pushes only where ci_push_repository_for_job_token_allowed is on
	 * (doc/ci/jobs/ci_job_token.md, default off), or, for reef-hub's own launch jobs
	 * (mgmt-api.md), to the launch's branch. */
	if (write && req->job_project_id > 0 && !hub_project_job_token_push(req->hub, p.id) &&
	    hub_ci_job_launch_ref(req->hub, req->job_id, launch_ref, sizeof(launch_ref)) <= 0) {
		deny_text(resp, 403, "You are not allowed to push code to this project.\n");
		goto refused;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto oom;
	g->hub = req->hub;
	g->project_id = p.id;
	g->endpoint = ep;
	g->write = write;
	g->spool = -1;
	g->out = -1;
	g->pid = -1;
	snprintf(g->user, sizeof(g->user), "%s", anon ? "" : user.username);
	g->user_id = anon ? 0 : user.id;
	if (req->job_project_id > 0) {
		g->no_pipeline = true;
		if (launch_ref[0] && !hub_project_job_token_push(req->hub, p.id))
			snprintf(g->only_ref, sizeof(g->only_ref), "refs/heads/%s", launch_ref);
	}
	if (ep == GIT_RECEIVE_PACK && push_id_new(g->push_id) < 0)
		goto oom;
	snprintf(g->repo, sizeof(g->repo), "%s", p.repo_path);
	g->query = strdup(query ? query : "");
	if (!g->query)
		goto oom;
	if (ep != GIT_INFO_REFS) {
		g->spool = spool_open(req->hub->dir);
		if (g->spool < 0) {
			log_error("cannot spool a git request under %s/tmp: %s", req->hub->dir,
			          strerror(-g->spool));
			hub_git_free(g);
			hub_resp_error(resp, 500, "500 Internal Server Error");
			req->user = NULL;
			return 1;
		}
	}
	req->user = NULL; /* user lives on this stack frame */
	*out = g;
	return 0;
oom:
	hub_git_free(g);
	hub_resp_error(resp, 500, "500 Internal Server Error");
refused:
	req->user = NULL;
	return 1;
}

int hub_git_body(struct hub_git *g, const void *data, size_t len)
{
	const char *p = data;

	if (!g || g->spool < 0)
		return -EINVAL;
	if (g->spooled + len > HUB_MAX_SPOOL)
		return -EFBIG;
	while (len) {
		ssize_t n = write(g->spool, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return log_ret(-EIO, "git request spool: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
		g->spooled += (uint64_t)n;
	}
	return 0;
}

void hub_git_free(struct hub_git *g)
{
	if (!g)
		return;
	if (g->spool >= 0)
		close(g->spool);
	if (g->out >= 0)
		close(g->out);
	if (g->pid > 0) {
		int st;

		while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	free(g->pending);
	free(g->query);
	free(g);
}

/* The first branch a receive-pack request creates or updates, from its pkt-lines. */
static bool pushed_branch(int fd, char *out, size_t n)
{
	char data[8192];
	ssize_t got = pread(fd, data, sizeof(data) - 1, 0);
	size_t off = 0;

	if (got <= 0)
		return false;
	data[got] = '\0';
	while (off + 4 <= (size_t)got) {
		char hex[5];
		unsigned long len;
		char *line, *nul;

		memcpy(hex, data + off, 4);
		hex[4] = '\0';
		len = strtoul(hex, NULL, 16);
		if (len == 0 || len < 4 || off + len > (size_t)got)
			return false;
		line = data + off + 4;
		/* "<old> <new> <ref>[\0caps]\n" */
		if (len - 4 > 83 && line[40] == ' ' && line[81] == ' ') {
			size_t rl = len - 4 - 82;
			char ref[512];

			if (rl >= sizeof(ref))
				return false;
			memcpy(ref, line + 82, rl);
			ref[rl] = '\0';
			nul = strchr(ref, '\n');
			if (nul)
				*nul = '\0';
			if (strncmp(ref, "refs/heads/", 11) == 0 && strspn(line + 41, "0") < 40) {
				snprintf(out, n, "%s", ref);
				return true;
			}
		}
		off += len;
	}
	return false;
}

/* GitLab makes the first pushed branch the default one: when HEAD points at a missing
 * branch, point it at the pushed branch (or any branch). */
static void head_fix(struct hub_git *g)
{
	git_repository *repo = NULL;
	git_reference *head = NULL;
	git_branch_iterator *it = NULL;
	git_reference *br = NULL;
	git_oid oid;
	char pushed[512] = "";
	git_branch_t type;

	if (git_repository_open_bare(&repo, g->repo) < 0)
		return;
	if (git_reference_lookup(&head, repo, "HEAD") < 0 ||
	    git_reference_type(head) != GIT_REFERENCE_SYMBOLIC)
		goto out;
	if (git_reference_name_to_id(&oid, repo, git_reference_symbolic_target(head)) == 0)
		goto out;
	if (g->spool >= 0 && pushed_branch(g->spool, pushed, sizeof(pushed)) &&
	    git_reference_name_to_id(&oid, repo, pushed) == 0) {
		if (!strncmp(git_reference_symbolic_target(head), "refs/heads/", 11))
			hub_protect_rename(g->hub, g->project_id,
			                   git_reference_symbolic_target(head) + 11, pushed + 11);
		git_repository_set_head(repo, pushed);
		log_info("project %lld: default branch is now %s", (long long)g->project_id,
		         pushed + 11);
		goto out;
	}
	if (git_branch_iterator_new(&it, repo, GIT_BRANCH_LOCAL) == 0 &&
	    git_branch_next(&br, &type, it) == 0)
		git_repository_set_head(repo, git_reference_name(br));
out:
	git_reference_free(br);
	git_branch_iterator_free(it);
	git_reference_free(head);
	git_repository_free(repo);
}

static void touch_activity(struct hub_git *g)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_prepare_v2(
	        g->hub->db, "UPDATE projects SET last_activity_at = strftime('%s') WHERE id = ?1",
	        -1, &st, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(st, 1, g->project_id);
	sqlite3_step(st);
	sqlite3_finalize(st);
}

/* Reaps http-backend; after a successful push, fixes HEAD before the client sees the
 * end of the response, so whatever it does next sees the new default branch. */
static void child_finish(struct hub_git *g)
{
	int st = 0;

	if (g->pid <= 0)
		return;
	while (waitpid(g->pid, &st, 0) < 0 && errno == EINTR)
		;
	g->pid = -1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		log_warn("git http-backend for project %lld exited with status %d",
		         (long long)g->project_id, st);
	else if (g->endpoint == GIT_RECEIVE_PACK)
		head_fix(g);
	if (g->endpoint == GIT_RECEIVE_PACK) {
		touch_activity(g);
		/* whatever receive-pack's status, the refs that moved get their pipelines */
		hub_push_events_run(g->hub, g->push_id);
	}
}

static void response_done(void *cls)
{
	struct hub_git *g = cls;

	if (g->out >= 0)
		close(g->out);
	g->out = -1;
	child_finish(g);
	/* fetches and clones are what leave the server; ref advertisements are small */
	if (g->endpoint == GIT_UPLOAD_PACK && g->sent)
		hub_ci_transfer_add(g->project_id, g->sent);
	hub_git_free(g);
}

static ssize_t response_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct hub_git *g = cls;
	ssize_t n;

	if (g->pending_off < g->pending_len) {
		size_t k = g->pending_len - g->pending_off;

		if (k > max)
			k = max;
		memcpy(buf, g->pending + g->pending_off, k);
		g->pending_off += k;
		g->sent += k;
		return (ssize_t)k;
	}
	do {
		n = read(g->out, buf, max);
	} while (n < 0 && errno == EINTR);
	if (n == 0) {
		child_finish(g);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (n < 0)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	g->sent += (uint64_t)n;
	return n;
}

static int env_add(char **env, size_t *n, const char *name, const char *value)
{
	if (*n + 1 >= GIT_ENV_MAX || asprintf(&env[*n], "%s=%s", name, value ? value : "") < 0)
		return -ENOMEM;
	(*n)++;
	env[*n] = NULL;
	return 0;
}

static int cgi_spawn(struct hub_req *req, struct hub_git *g)
{
	static const char *const names[] = {"", "git-upload-pack", "git-receive-pack"};
	char *env[GIT_ENV_MAX] = {NULL};
	char root[PATH_MAX], info[64], len[32];
	const char *v;
	int pipefd[2] = {-1, -1}, in = -1, r = 0;
	size_t n = 0;
	sigset_t none;
	pid_t pid, parent;

	if (hub_pathf(root, sizeof(root), "%s/repos", req->hub->dir) < 0)
		return -ENAMETOOLONG;
	snprintf(info, sizeof(info), "/%lld.git/%s", (long long)g->project_id,
	         g->endpoint == GIT_INFO_REFS ? "info/refs" : names[g->endpoint]);
	snprintf(len, sizeof(len), "%llu", (unsigned long long)g->spooled);
	r |= env_add(env, &n, "PATH", "/usr/local/bin:/usr/bin:/bin");
	r |= env_add(env, &n, "HOME", req->hub->dir);
	r |= env_add(env, &n, "GIT_CONFIG_NOSYSTEM", "1");
	r |= env_add(env, &n, "GIT_CONFIG_GLOBAL", "/dev/null");
	r |= env_add(env, &n, "GIT_PROJECT_ROOT", root);
	r |= env_add(env, &n, "GIT_HTTP_EXPORT_ALL", "1");
	r |= env_add(env, &n, "PATH_INFO", info);
	r |= env_add(env, &n, "QUERY_STRING", g->query);
	r |= env_add(env, &n, "REQUEST_METHOD", req->method);
	r |= env_add(env, &n, "REMOTE_ADDR", "127.0.0.1");
	if (g->user[0])
		r |= env_add(env, &n, "REMOTE_USER", g->user);
	if ((v = hub_req_header(req, "Content-Type")))
		r |= env_add(env, &n, "CONTENT_TYPE", v);
	if (g->spool >= 0)
		r |= env_add(env, &n, "CONTENT_LENGTH", len);
	if ((v = hub_req_header(req, "Content-Encoding")))
		r |= env_add(env, &n, "HTTP_CONTENT_ENCODING", v);
	if ((v = hub_req_header(req, "Git-Protocol")))
		r |= env_add(env, &n, "GIT_PROTOCOL", v);
	if (g->endpoint == GIT_RECEIVE_PACK) {
		char hooks[PATH_MAX], num[32];

		/* the push's checks and durable record run in reef-hub's hooks (hook.h) */
		if (hub_pathf(hooks, sizeof(hooks), "%s/hooks", req->hub->dir) < 0) {
			r = -ENAMETOOLONG;
			goto out;
		}
		r |= env_add(env, &n, "GIT_CONFIG_COUNT", "1");
		r |= env_add(env, &n, "GIT_CONFIG_KEY_0", "core.hooksPath");
		r |= env_add(env, &n, "GIT_CONFIG_VALUE_0", hooks);
		r |= env_add(env, &n, "REEF_HUB_DIR", req->hub->dir);
		snprintf(num, sizeof(num), "%d", (int)getpid());
		r |= env_add(env, &n, "REEF_HUB_PID", num);
		snprintf(num, sizeof(num), "%lld", (long long)g->project_id);
		r |= env_add(env, &n, "REEF_PUSH_PROJECT", num);
		snprintf(num, sizeof(num), "%lld", (long long)g->user_id);
		r |= env_add(env, &n, "REEF_PUSH_USER", num);
		r |= env_add(env, &n, "REEF_PUSH_ID", g->push_id);
		if (g->only_ref[0])
			r |= env_add(env, &n, "REEF_PUSH_ONLY_REF", g->only_ref);
		if (g->no_pipeline)
			r |= env_add(env, &n, "REEF_PUSH_NO_PIPELINE", "1");
		if ((v = getenv("REEF_HUB_HOOK_DELAY")))
			r |= env_add(env, &n, "REEF_HUB_HOOK_DELAY", v);
	}
	if (r < 0)
		goto out;
	if (g->spool >= 0) {
		in = g->spool;
		if (lseek(in, 0, SEEK_SET) < 0) {
			r = -errno;
			goto out;
		}
	} else {
		in = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (in < 0) {
			r = -errno;
			goto out;
		}
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = -errno;
		goto out;
	}
	sigemptyset(&none);
	parent = getpid();
	pid = fork();
	if (pid < 0) {
		r = -errno;
		goto out;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here on. */
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* A hub that dies takes its git child along (SIGTERM: git's handlers then end
		 * receive-pack and drop its lock files), so no orphan finishes a push nobody
		 * answers for; the reference-transaction hook refuses one that slips by. */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		if (dup2(in, 0) < 0 || dup2(pipefd[1], 1) < 0)
			_exit(127);
		execle("/usr/bin/git", "git", "http-backend", (char *)NULL, env);
		_exit(127);
	}
	g->pid = pid;
	g->out = pipefd[0];
	pipefd[0] = -1;
out:
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	if (in >= 0 && in != g->spool)
		close(in);
	for (size_t i = 0; i < n; i++)
		free(env[i]);
	return r;
}

/* Reads the CGI header block; leftover body bytes go to g->pending. */
static int cgi_headers(struct hub_git *g, struct hub_resp *resp, int *status)
{
	char *hdr = malloc(GIT_MAX_CGI_HEADERS + 1), *end = NULL, *line;
	size_t len = 0, skip = 0;
	int r = 0;

	if (!hdr)
		return -ENOMEM;
	*status = 200;
	while (!end) {
		ssize_t n;

		if (len >= GIT_MAX_CGI_HEADERS) {
			r = -EFBIG;
			goto out;
		}
		n = read(g->out, hdr + len, GIT_MAX_CGI_HEADERS - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = -EIO;
			goto out;
		}
		len += (size_t)n;
		hdr[len] = '\0';
		if ((end = strstr(hdr, "\r\n\r\n")))
			skip = 4;
		else if ((end = strstr(hdr, "\n\n")))
			skip = 2;
	}
	*end = '\0';
	if (len > (size_t)(end - hdr) + skip) {
		g->pending_len = len - (size_t)(end - hdr) - skip;
		g->pending = malloc(g->pending_len);
		if (!g->pending) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(g->pending, end + skip, g->pending_len);
	}
	for (line = strtok(hdr, "\r\n"); line; line = strtok(NULL, "\r\n")) {
		char *colon = strchr(line, ':'), *val;

		if (!colon)
			continue;
		*colon = '\0';
		val = colon + 1;
		while (*val == ' ' || *val == '\t')
			val++;
		if (strcasecmp(line, "Status") == 0) {
			int s = atoi(val);

			if (s >= 100 && s < 600)
				*status = s;
		} else if (strcasecmp(line, "Content-Length") != 0 &&
		           strcasecmp(line, "Transfer-Encoding") != 0) {
			hub_resp_header(resp, line, val);
		}
	}
out:
	free(hdr);
	return r;
}

int hub_git_finish(struct hub_req *req, struct hub_resp *resp, struct hub_git **gp,
                   struct MHD_Response **mr, int *status)
{
	struct hub_git *g = *gp;
	int r;

	if (!g) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return -EINVAL;
	}
	r = cgi_spawn(req, g);
	if (r < 0) {
		log_error("cannot run git http-backend: %s", strerror(-r));
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return r;
	}
	r = cgi_headers(g, resp, status);
	if (r < 0) {
		log_error("git http-backend for project %lld gave no valid headers: %s",
		          (long long)g->project_id, strerror(-r));
		hub_resp_error(resp, 502, "502 Bad Gateway");
		return r;
	}
	*mr = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, response_read, g,
	                                        response_done);
	if (!*mr) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return -ENOMEM;
	}
	for (size_t i = 0; i < resp->n_headers; i++)
		MHD_add_response_header(*mr, resp->headers[i].name, resp->headers[i].value);
	*gp = NULL;
	return 0;
}
