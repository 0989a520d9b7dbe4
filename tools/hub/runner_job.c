/* Running one job of the embedded runner: its environment (CI_* variables, file
 * variables), the checkout done by the hub, the script in its bubblewrap sandbox under
 * the job's limits (joblimits.h), the live trace with the job token masked and capped,
 * after_script, and the artifacts zip. The worker that claimed the job (runner.c) calls
 * rn_job_run and records what it returns. */
#include "runner_int.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <git2.h>
#include <glob.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zip.h>

#include "core.h"
#include "joblimits.h"
#include "reef/buf.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

/* ---- running one job ---- */

struct rn_env {
	char **v;
	size_t n, cap;
};

static void rn_env_set(struct rn_env *e, const char *k, const char *val)
{
	size_t klen = strlen(k);
	char *kv;

	if (asprintf(&kv, "%s=%s", k, val ? val : "") < 0)
		return;
	for (size_t i = 0; i < e->n; i++) {
		if (!strncmp(e->v[i], k, klen) && e->v[i][klen] == '=') {
			free(e->v[i]);
			e->v[i] = kv;
			return;
		}
	}
	if (e->n + 2 > e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		char **nv = realloc(e->v, cap * sizeof(*nv));

		if (!nv) {
			free(kv);
			return;
		}
		e->v = nv;
		e->cap = cap;
	}
	e->v[e->n++] = kv;
	e->v[e->n] = NULL;
}

static void rn_env_setf(struct rn_env *e, const char *k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void rn_env_setf(struct rn_env *e, const char *k, const char *fmt, ...)
{
	char val[PATH_MAX + 512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	rn_env_set(e, k, val);
}

static void rn_env_free(struct rn_env *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i]);
	free(e->v);
	e->v = NULL;
	e->n = e->cap = 0;
}

/* A JSON view of the environment, for $VAR expansion of variable values. */
static json_t *rn_env_json(const struct rn_env *e)
{
	json_t *o = json_object();

	for (size_t i = 0; i < e->n; i++) {
		char *eq = strchr(e->v[i], '=');
		char *k = strndup(e->v[i], (size_t)(eq - e->v[i]));

		if (k)
			json_object_set_new(o, k, json_string(eq + 1));
		free(k);
	}
	return o;
}

static void rn_slug(const char *in, char *out, size_t n)
{
	size_t j = 0;

	for (size_t i = 0; in[i] && j + 1 < n && j < 63; i++) {
		char c = in[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			c = '-';
		out[j++] = c;
	}
	while (j > 0 && out[j - 1] == '-')
		j--;
	out[j] = '\0';
}

static void rn_auth_url(const char *base, const char *token, const char *path, char *out, size_t n)
{
	const char *host = strstr(base, "://");

	if (!host) {
		snprintf(out, n, "%s/%s.git", base, path);
		return;
	}
	snprintf(out, n, "%.*sgitlab-ci-token:%s@%s/%s.git", (int)(host + 3 - base), base, token,
	         host + 3, path);
}

static int rn_job_env(const struct rn_job *j, const struct hub_project *p, const char *ws,
                      struct rn_env *e)
{
	const struct hub *h = rn.h;
	char repo_url[PATH_MAX], slug[64], tmp[PATH_MAX];
	const char *host = strstr(h->base_url, "://"), *port;
	const char *ns_end = strrchr(p->path_with_namespace, '/');
	struct hub_user u;
	json_t *vars, *envj, *v;
	const char *k;
	size_t i;

	host = host ? host + 3 : h->base_url;
	port = strrchr(host, ':');
	const char *path = getenv("REEF_HUB_JOB_PATH");

	/* a clean PATH (reef-epf first), not the hub's: jobs see the system's tools */
	path = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
	if (!rn.epf_dir[0])
		rn_env_set(e, "PATH", path);
	else if (rn.unsafe)
		rn_env_setf(e, "PATH", "%s:%s", rn.epf_dir, path);
	else
		rn_env_setf(e, "PATH", "%s/" RN_EPF_AT ":%s", rn.dir, path);
	rn_env_setf(e, "HOME", "%s.home", ws);
	rn_env_set(e, "LANG", "C.UTF-8");
	rn_env_set(e, "SHELL", "/bin/sh");
	rn_env_set(e, "GIT_TERMINAL_PROMPT", "0");
	rn_env_set(e, "GIT_CONFIG_NOSYSTEM", "1");
	rn_env_set(e, "PYTHONDONTWRITEBYTECODE", "1");
	/* per job, shared by script and after_script (the sandbox's /tmp is per command) */
	rn_env_setf(e, "TMPDIR", "%s.tmp", ws);
	rn_env_set(e, "CI", "true");
	rn_env_set(e, "GITLAB_CI", "true");
	rn_env_set(e, "CI_SERVER", "yes");
	rn_env_set(e, "CI_SERVER_NAME", "reef-hub");
	rn_env_set(e, "CI_SERVER_URL", h->base_url);
	rn_env_setf(e, "CI_SERVER_HOST", "%.*s", (int)(port ? (size_t)(port - host) : strlen(host)),
	            host);
	rn_env_set(e, "CI_SERVER_PORT", port ? port + 1 : "80");
	rn_env_setf(
	    e, "CI_SERVER_PROTOCOL", "%.*s",
	    (int)(strstr(h->base_url, "://") ? strstr(h->base_url, "://") - h->base_url : 4),
	    h->base_url);
	rn_env_setf(e, "CI_API_V4_URL", "%s/api/v4", h->base_url);
	rn_env_set(e, "CI_PROJECT_PATH", p->path_with_namespace);
	rn_env_set(e, "CI_PROJECT_NAME", p->path);
	rn_env_set(e, "CI_PROJECT_TITLE", p->name);
	rn_env_setf(e, "CI_PROJECT_NAMESPACE", "%.*s",
	            (int)(ns_end ? (size_t)(ns_end - p->path_with_namespace) : 0),
	            p->path_with_namespace);
	rn_env_setf(e, "CI_PROJECT_URL", "%s/%s", h->base_url, p->path_with_namespace);
	rn_env_set(e, "CI_PROJECT_VISIBILITY", p->visibility);
	rn_env_set(e, "CI_COMMIT_SHA", j->sha);
	rn_env_setf(e, "CI_COMMIT_SHORT_SHA", "%.8s", j->sha);
	rn_env_set(e, "CI_COMMIT_REF_NAME", j->ref);
	rn_slug(j->ref, slug, sizeof(slug));
	rn_env_set(e, "CI_COMMIT_REF_SLUG", slug);
	rn_env_set(e, j->tag ? "CI_COMMIT_TAG" : "CI_COMMIT_BRANCH", j->ref);
	rn_env_setf(e, "CI_PIPELINE_IID", "%lld", (long long)j->pipeline_iid);
	rn_env_set(e, "CI_PIPELINE_SOURCE", j->source);
	rn_env_setf(e, "CI_PIPELINE_URL", "%s/%s/-/pipelines/%lld", h->base_url,
	            p->path_with_namespace, (long long)j->pipeline_id);
	rn_env_setf(e, "CI_JOB_URL", "%s/%s/-/jobs/%lld", h->base_url, p->path_with_namespace,
	            (long long)j->id);
	rn_env_set(e, "CI_JOB_NAME", j->name);
	rn_env_set(e, "CI_JOB_STAGE", j->stage);
	rn_env_setf(e, "CI_BUILDS_DIR", "%s/builds", rn.dir);
	rn_env_set(e, "CI_RUNNER_DESCRIPTION", "reef-hub embedded shell runner");
	rn_env_set(e, "CI_RUNNER_EXECUTABLE_ARCH", "linux");
	if (j->user_id > 0 && hub_user_by_id(rn.h, j->user_id, &u) == 0) {
		rn_env_setf(e, "GITLAB_USER_ID", "%lld", (long long)u.id);
		rn_env_set(e, "GITLAB_USER_LOGIN", u.username);
		rn_env_set(e, "GITLAB_USER_NAME", u.name);
		rn_env_set(e, "GITLAB_USER_EMAIL", u.email);
	}
	/* yaml variables, expanded against what is defined so far */
	vars = json_object_get(j->spec, "variables");
	json_object_foreach(vars, k, v)
	{
		char *val;

		envj = rn_env_json(e);
		val = ci_expand(json_string_value(v), envj);
		json_decref(envj);
		rn_env_set(e, k, val ? val : "");
		free(val);
	}
	/* pipeline (API / trigger) variables win over the file's */
	json_array_foreach(j->variables, i, v)
	{
		const char *key = jsonx_str(v, "key"), *val = jsonx_str(v, "value");
		const char *type = jsonx_str(v, "variable_type");

		if (!key || !val)
			continue;
		if (type && !strcmp(type, "file")) {
			int fd;

			hub_pathf(tmp, sizeof(tmp), "%s.vars", ws);
			mkdir(tmp, 0700);
			hub_pathf(tmp, sizeof(tmp), "%s.vars/%s", ws, key);
			fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val)) {
				if (fd >= 0)
					close(fd);
				return -EIO;
			}
			close(fd);
			rn_env_set(e, key, tmp);
		} else {
			rn_env_set(e, key, val);
		}
	}
	/* identity of the job: never overridable by variables */
	rn_env_set(e, "CI_JOB_TOKEN", j->token);
	rn_env_setf(e, "CI_JOB_ID", "%lld", (long long)j->id);
	rn_env_setf(e, "CI_PIPELINE_ID", "%lld", (long long)j->pipeline_id);
	rn_env_setf(e, "CI_PROJECT_ID", "%lld", (long long)p->id);
	rn_env_set(e, "CI_PROJECT_DIR", ws);
	rn_auth_url(h->base_url, j->token, p->path_with_namespace, repo_url, sizeof(repo_url));
	rn_env_set(e, "CI_REPOSITORY_URL", repo_url);
	return 0;
}

void rn_trace(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void rn_trace(int fd, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0 && write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
		log_warn("ci: trace write: %s", strerror(errno));
}

/* Ends the trace's last line, so the verdict the hub adds after a killed job (whose
 * output may stop mid-line) is a line of its own. */
static void rn_trace_eol(const char *trace_path, int trace)
{
	int fd = open(trace_path, O_RDONLY | O_CLOEXEC);
	struct stat sb;
	char c = '\n';

	if (fd < 0)
		return;
	if (fstat(fd, &sb) == 0 && sb.st_size > 0 && pread(fd, &c, 1, sb.st_size - 1) == 1 &&
	    c != '\n')
		rn_trace(trace, "\n");
	close(fd);
}

static int rn_spawn(char *const argv[], char *const envp[], const char *cwd, int out_fd, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t mask, def;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
	if (cwd)
		posix_spawn_file_actions_addchdir_np(&fa, cwd);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	sigemptyset(&mask);
	sigfillset(&def);
	posix_spawnattr_setsigmask(&at, &mask);
	posix_spawnattr_setsigdefault(&at, &def);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
	                                  POSIX_SPAWN_SETSIGDEF);
	r = posix_spawnp(pid, argv[0], &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return -r;
}

/* rn_spawn for a job's script: fork, so the child joins the job's cgroups and takes its
 * rlimits before exec (a process moved after exec could fork first). The child of this
 * threaded process only makes async-signal-safe calls; argv[0] is an absolute path. */
static int rn_spawn_limited(struct joblim *lim, char *const argv[], char *const envp[],
                            const char *cwd, int out_fd, pid_t *pid)
{
	static const char msg[] = "ERROR: Job failed (system failure): cannot enter the job's"
	                          " cgroup or set its limits\n";
	pid_t p = fork();

	if (p < 0)
		return -errno;
	if (p == 0) {
		struct sigaction dfl = {.sa_handler = SIG_DFL};
		sigset_t none;
		int null = open("/dev/null", O_RDONLY);

		for (int sig = 1; sig < NSIG; sig++)
			sigaction(sig, &dfl, NULL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setpgid(0, 0);
		if (null < 0 || dup2(null, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
			_exit(127);
		if (joblim_child_enter(lim) < 0) {
			if (write(1, msg, sizeof(msg) - 1) < 0)
				_exit(126);
			_exit(126);
		}
		if (cwd && chdir(cwd) < 0)
			_exit(127);
		closefrom(3);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	/* also from the parent: no signal may reach the group before the child made it */
	setpgid(p, p);
	*pid = p;
	return 0;
}

enum rn_end { RN_EXITED, RN_CANCELED, RN_TIMEOUT, RN_STOPPED, RN_LIMIT };

/* Waits for the process (group leader) while watching cancel, hub stop and the
 * deadline: SIGTERM to the group, SIGKILL after a grace period. Leftover members of the
 * group are killed once the leader is gone. */
static void rn_trace_put(int trace, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(trace, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Appends job output to the trace up to RN_MAX_TRACE bytes: a job printing without end
 * must not fill the disk; what is past the limit is dropped. */
static void rn_trace_capped(int trace, const char *p, size_t n)
{
	struct stat sb;
	off_t room;

	if (n == 0 || fstat(trace, &sb) < 0)
		return;
	room = RN_MAX_TRACE - sb.st_size;
	if (room <= 0)
		return;
	rn_trace_put(trace, p, (off_t)n < room ? n : (size_t)room);
	if ((off_t)n >= room)
		rn_trace(trace,
		         "\nJob's log exceeded limit of %lld bytes.\nJob execution will "
		         "continue but no more output will be collected.\n",
		         (long long)RN_MAX_TRACE);
}

/* Masks buf[0..n) (whose first m->n_held bytes are the tail held back last time) into
 * the trace and holds back the longest tail that is a proper prefix of the secret.
 * Text before a hold is final: had the secret started there, it would have matched. */
static void rn_mask_put(struct rn_mask *m, int trace, char *buf, size_t n)
{
	size_t start = 0, keep;
	char *hit;

	if (!m || !m->secret) {
		rn_trace_capped(trace, buf, n);
		return;
	}
	while (n - start >= m->len && (hit = memmem(buf + start, n - start, m->secret, m->len))) {
		rn_trace_capped(trace, buf + start, (size_t)(hit - (buf + start)));
		rn_trace_capped(trace, RN_MASKED, sizeof(RN_MASKED) - 1);
		start = (size_t)(hit - buf) + m->len;
	}
	keep = n - start < m->len - 1 ? n - start : m->len - 1;
	while (keep > 0 && memcmp(buf + n - keep, m->secret, keep) != 0)
		keep--;
	rn_trace_capped(trace, buf + start, n - start - keep);
	memcpy(m->held, buf + n - keep, keep);
	m->n_held = keep;
}

/* The end of a command's output: what was held back was not the secret. */
static void rn_mask_flush(struct rn_mask *m, int trace)
{
	if (!m || !m->n_held)
		return;
	rn_trace_capped(trace, m->held, m->n_held);
	m->n_held = 0;
}

/* Masks nothing when secret is NULL or too short to be a token (a one-letter value
 * would mask every occurrence of that letter) or too long to hold back. */
static void rn_mask_init(struct rn_mask *m, const char *secret)
{
	size_t len = secret ? strlen(secret) : 0;

	memset(m, 0, sizeof(*m));
	if (len >= 8 && len <= RN_MASK_MAX) {
		m->secret = secret;
		m->len = len;
	}
}

/* Moves what the job wrote so far into its trace, masked and capped; output past the
 * cap is still read, so the job never blocks on a full pipe. -1 at end of output. */
static int rn_relay(int in, int trace, struct rn_mask *m)
{
	char buf[RN_MASK_MAX + RN_RELAY_CHUNK];
	ssize_t n;

	for (;;) {
		size_t held = m ? m->n_held : 0;

		if (held)
			memcpy(buf, m->held, held);
		n = read(in, buf + held, RN_RELAY_CHUNK);
		if (n <= 0)
			break;
		rn_mask_put(m, trace, buf, held + (size_t)n);
	}
	return n == 0 ? -1 : 0;
}

static enum rn_end rn_wait(struct rn_slot *slot, struct joblim *lim, pid_t pid, double deadline,
                           int *status, int out, int trace)
{
	enum rn_end why = RN_EXITED;
	double term_at = 0;

	*status = 0;
	slot->pid = pid;
	for (;;) {
		pid_t w = waitpid(pid, status, WNOHANG);
		double now = ci_now();

		if (w == pid || (w < 0 && errno != EINTR))
			break;
		if (why == RN_EXITED) {
			if (__atomic_load_n(&slot->cancel, __ATOMIC_SEQ_CST))
				why = RN_CANCELED;
			else if (__atomic_load_n(&rn.stopping, __ATOMIC_SEQ_CST))
				why = RN_STOPPED;
			else if (now > deadline)
				why = RN_TIMEOUT;
			else if ((slot->hit = joblim_check(lim, now)) != JOBLIM_NONE)
				why = RN_LIMIT;
			if (why == RN_LIMIT) {
				/* no grace: a fork bomb or a disk filler would use it */
				joblim_kill(lim);
				kill(-pid, SIGKILL);
			} else if (why != RN_EXITED) {
				kill(-pid, SIGTERM);
				term_at = now;
			}
		} else if (term_at > 0 && now - term_at > RN_KILL_GRACE) {
			kill(-pid, SIGKILL);
			term_at = -1;
		}
		if (out >= 0) {
			struct pollfd pfd = {.fd = out, .events = POLLIN};

			poll(&pfd, 1, 20);
			if (rn_relay(out, trace, &slot->mask) < 0)
				out = -1; /* every writer is gone */
		} else {
			usleep(20000);
		}
	}
	kill(-pid, SIGKILL);
	joblim_kill(lim);
	slot->pid = 0;
	/* what is buffered; a writer that left the group is not waited for */
	if (out >= 0)
		rn_relay(out, trace, &slot->mask);
	rn_mask_flush(&slot->mask, trace);
	return why;
}

static int rn_run(struct rn_slot *slot, struct joblim *lim, char *const argv[], char *const envp[],
                  const char *cwd, int trace_fd, double deadline, enum rn_end *why)
{
	pid_t pid;
	int st, r, out[2];

	if (pipe2(out, O_CLOEXEC) < 0) {
		rn_trace(trace_fd, "ERROR: could not start %s: %s\n", argv[0], strerror(errno));
		*why = RN_EXITED;
		return 127;
	}
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	r = lim ? rn_spawn_limited(lim, argv, envp, cwd, out[1], &pid)
	        : rn_spawn(argv, envp, cwd, out[1], &pid);
	close(out[1]);
	if (r < 0) {
		close(out[0]);
		rn_trace(trace_fd, "ERROR: could not start %s: %s\n", argv[0], strerror(-r));
		*why = RN_EXITED;
		return 127;
	}
	*why = rn_wait(slot, lim, pid, deadline, &st, out[0], trace_fd);
	close(out[0]);
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static void rn_shquote(struct buf *b, const char *s)
{
	buf_puts(b, "'");
	for (; *s; s++) {
		if (*s == '\'')
			buf_puts(b, "'\\''");
		else
			buf_append(b, s, 1);
	}
	buf_puts(b, "'");
}

/* A script file in GitLab's shell-executor style: each command echoed as "$ cmd". */
static int rn_write_script(const char *path, const json_t *sections[], size_t n)
{
	struct buf b = BUF_INIT((size_t)16 << 20);
	int fd, r = 0;

	buf_puts(&b, "#!/bin/sh\n");
	for (size_t s = 0; s < n; s++) {
		size_t i;
		json_t *v;

		json_array_foreach(sections[s], i, v)
		{
			const char *cmd = json_string_value(v);
			const char *nl = strchr(cmd, '\n');
			char *first = strndup(cmd, nl ? (size_t)(nl - cmd) : strlen(cmd));
			struct buf shown = BUF_INIT(0);

			buf_printf(&shown, "$ %s%s", first ? first : "",
			           nl ? " # collapsed multi-line command" : "");
			buf_puts(&b, "printf '%s\\n' ");
			rn_shquote(&b, shown.data ? shown.data : "$");
			buf_puts(&b, "\n");
			buf_puts(&b, cmd);
			r = buf_puts(&b, "\n");
			buf_free(&shown);
			free(first);
		}
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);
	if (fd < 0 || r < 0 || write(fd, b.data, b.len) != (ssize_t)b.len)
		r = -EIO;
	if (fd >= 0)
		close(fd);
	buf_free(&b);
	return r;
}

/* ---- the job sandbox ---- */

struct rn_argv {
	char **v;
	size_t n, cap;
	int err;
};

static void rn_argv_add(struct rn_argv *a, const char *s)
{
	char *d;

	if (a->err)
		return;
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		char **nv = realloc(a->v, cap * sizeof(*nv));

		if (!nv) {
			a->err = -ENOMEM;
			return;
		}
		a->v = nv;
		a->cap = cap;
	}
	if (!(d = strdup(s))) {
		a->err = -ENOMEM;
		return;
	}
	a->v[a->n++] = d;
	a->v[a->n] = NULL;
}

static void rn_argv_free(struct rn_argv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* True when path lies strictly inside the data directory. */
static bool rn_in_data_dir(const char *path)
{
	size_t n = strlen(rn.dir);

	return !strncmp(path, rn.dir, n) && path[n] == '/' && path[n + 1];
}

/* Binds path (inside the data directory) at the same place in the sandbox. The
 * directories leading to it are made on the tmpfs first, traversable: bwrap would make
 * them 0700 root, closed to an unprivileged job. */
static void rn_sandbox_bind(struct rn_argv *a, const char *how, const char *path)
{
	char sub[PATH_MAX];

	if (!rn_in_data_dir(path)) {
		a->err = -EINVAL;
		return;
	}
	for (const char *s = strchr(path + strlen(rn.dir) + 1, '/'); s; s = strchr(s + 1, '/')) {
		snprintf(sub, sizeof(sub), "%.*s", (int)(s - path), path);
		rn_argv_add(a, "--perms");
		rn_argv_add(a, "0755");
		rn_argv_add(a, "--dir");
		rn_argv_add(a, sub);
	}
	rn_argv_add(a, how);
	rn_argv_add(a, path);
	rn_argv_add(a, path);
}

/* bwrap's options common to every sandbox: the system read-only, fresh /dev, /proc and
 * /tmp, the data directory hidden under an empty tmpfs, own pid/ipc/uts namespaces (the
 * network stays: jobs call the hub on loopback). --die-with-parent and the pid
 * namespace make killing bwrap (the process group the runner signals) end every process
 * of the job, even those that left the group with --new-session's setsid. */
static void rn_sandbox_base(struct rn_argv *a)
{
	static const char *const opts[] = {"--ro-bind",
	                                   "/",
	                                   "/",
	                                   "--dev",
	                                   "/dev",
	                                   "--proc",
	                                   "/proc",
	                                   "--unshare-pid",
	                                   "--unshare-ipc",
	                                   "--unshare-uts",
	                                   "--die-with-parent",
	                                   "--new-session",
	                                   NULL};

	static const char *const tmpfs[][2] = {{"01777", "/dev/shm"}, {"01777", "/tmp"}};
	uint64_t disk = joblim_conf_get()->disk;
	char size[32];

	rn_argv_add(a, rn.bwrap);
	for (const char *const *o = opts; *o; o++)
		rn_argv_add(a, *o);
	/* the job's tmpfs mounts hold at most its disk limit each (they are memory, which a
	 * memory cgroup also counts) */
	snprintf(size, sizeof(size), "%llu", (unsigned long long)disk);
	for (size_t i = 0; i < sizeof(tmpfs) / sizeof(tmpfs[0]); i++) {
		rn_argv_add(a, "--perms");
		rn_argv_add(a, tmpfs[i][0]);
		if (disk) {
			rn_argv_add(a, "--size");
			rn_argv_add(a, size);
		}
		rn_argv_add(a, "--tmpfs");
		rn_argv_add(a, tmpfs[i][1]);
	}
	rn_argv_add(a, "--perms");
	rn_argv_add(a, "0755");
	if (disk) {
		rn_argv_add(a, "--size");
		rn_argv_add(a, size);
	}
	rn_argv_add(a, "--tmpfs");
	rn_argv_add(a, rn.dir);
	/* reef-epf, first on the job's PATH, is shown at a fixed place on the data directory's
	 * tmpfs: where the build lives (under /tmp, which is private here, or under a home
	 * closed to the job's uid) must not decide whether a job finds it */
	if (rn.epf_dir[0]) {
		char at[PATH_MAX];

		hub_pathf(at, sizeof(at), "%s/" RN_EPF_AT, rn.dir);
		rn_argv_add(a, "--perms");
		rn_argv_add(a, "0755");
		rn_argv_add(a, "--dir");
		rn_argv_add(a, at);
		rn_argv_add(a, "--ro-bind");
		rn_argv_add(a, rn.epf_dir);
		rn_argv_add(a, at);
	}
}

/* What runs inside the sandbox: as root, the job first becomes job_uid with no
 * capabilities left and no way to regain them (setuid binaries included). */
static void rn_sandbox_user(struct rn_argv *a)
{
	char ids[2][32];

	if (!rn.drop)
		return;
	snprintf(ids[0], sizeof(ids[0]), "--reuid=%u", (unsigned)rn.job_uid);
	snprintf(ids[1], sizeof(ids[1]), "--regid=%u", (unsigned)rn.job_gid);
	rn_argv_add(a, rn.setpriv);
	rn_argv_add(a, ids[0]);
	rn_argv_add(a, ids[1]);
	rn_argv_add(a, "--clear-groups");
	rn_argv_add(a, "--inh-caps=-all");
	rn_argv_add(a, "--bounding-set=-all");
	rn_argv_add(a, "--no-new-privs");
	rn_argv_add(a, "--");
}

/* The command running `/bin/sh -e script` for the job whose workspace is ws: in its
 * sandbox, or as is with --unsafe-runner. ro_dir ("" for none) is bound read-only. */
static int rn_sandbox_argv(struct rn_argv *a, const char *ws, const char *ro_dir,
                           const char *script)
{
	char sub[PATH_MAX + 16];
	struct stat sb;

	if (!rn.unsafe) {
		rn_sandbox_base(a);
		rn_sandbox_bind(a, "--bind", ws);
		hub_pathf(sub, sizeof(sub), "%s.home", ws);
		rn_sandbox_bind(a, "--bind", sub);
		hub_pathf(sub, sizeof(sub), "%s.tmp", ws);
		rn_sandbox_bind(a, "--bind", sub);
		hub_pathf(sub, sizeof(sub), "%s.vars", ws);
		if (stat(sub, &sb) == 0)
			rn_sandbox_bind(a, "--ro-bind", sub);
		rn_sandbox_bind(a, "--ro-bind", script);
		if (ro_dir[0])
			rn_sandbox_bind(a, "--ro-bind", ro_dir);
		rn_argv_add(a, "--chdir");
		rn_argv_add(a, ws);
		rn_argv_add(a, "--");
		rn_sandbox_user(a);
	}
	rn_argv_add(a, "/bin/sh");
	rn_argv_add(a, "-e");
	rn_argv_add(a, script);
	return a->err;
}

static int rn_own_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	if (lchown(path, rn.job_uid, rn.job_gid) < 0)
		return -1;
	return 0;
}

/* Gives what the hub prepared for a job (checkout, HOME, scripts, file variables) to
 * the job's uid, so a job that is not root can write its workspace; the hub, root,
 * still reads and removes everything afterwards. */
static int rn_own(const char *path)
{
	if (!rn.drop || rn.unsafe)
		return 0;
	return nftw(path, rn_own_cb, 32, FTW_PHYS) == 0 ? 0 : -EIO;
}

/* The readable part of a read-only directory for the job (its snapshot dirs are 0700
 * root); the data directory itself stays 0700, so nothing opens outside sandboxes. */
static int rn_readable_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	mode_t m = sb->st_mode & 07777;

	(void)ftw;
	if (flag == FTW_SL || flag == FTW_SLN)
		return 0;
	m |= S_IRGRP | S_IROTH;
	if (flag == FTW_D || (m & S_IXUSR))
		m |= S_IXGRP | S_IXOTH;
	if (m != (sb->st_mode & 07777))
		chmod(path, m);
	return 0;
}

/* Checks that a pipeline's ro_dir is a directory inside the data directory; out gets
 * its real path, "" when there is none or it is refused (with a trace line). */
static void rn_ro_dir(const char *ro_dir, char out[PATH_MAX], int trace)
{
	struct stat sb;

	out[0] = '\0';
	if (!ro_dir[0])
		return;
	if (!realpath(ro_dir, out) || !rn_in_data_dir(out) || stat(out, &sb) < 0 ||
	    !S_ISDIR(sb.st_mode)) {
		rn_trace(trace, "WARNING: %s is not available to the job\n", ro_dir);
		out[0] = '\0';
		return;
	}
	if (rn.drop && !rn.unsafe)
		nftw(out, rn_readable_cb, 32, FTW_PHYS);
}

static bool rn_find_exe(char out[PATH_MAX], const char *env, const char *const *cands)
{
	const char *e = getenv(env);

	if (e && *e) {
		snprintf(out, PATH_MAX, "%s", e);
		return access(out, X_OK) == 0;
	}
	for (const char *const *c = cands; *c; c++) {
		if (access(*c, X_OK) == 0) {
			snprintf(out, PATH_MAX, "%s", *c);
			return true;
		}
	}
	snprintf(out, PATH_MAX, "%s", cands[0]);
	return false;
}

/* Finds bwrap (REEF_HUB_BWRAP or the usual places) and runs an empty sandbox once, so a
 * host without user namespaces is known before a job needs one. */
void rn_sandbox_probe(void)
{
	static const char *const bwraps[] = {"/usr/bin/bwrap", "/usr/local/bin/bwrap", NULL};
	static const char *const setprivs[] = {"/usr/bin/setpriv", "/bin/setpriv", NULL};
	const char *user = getenv("REEF_HUB_JOB_USER");
	struct rn_argv a = {0};
	struct rn_slot slot = {0};
	enum rn_end why;
	int fd = -1, code;

	rn.sandbox_ok = false;
	rn.drop = geteuid() == 0;
	if (rn.drop) {
		struct passwd *pw = getpwnam(user && *user ? user : "nobody");

		rn.job_uid = pw ? pw->pw_uid : RN_NOBODY;
		rn.job_gid = pw ? pw->pw_gid : RN_NOBODY;
		if ((user && *user && !pw) || rn.job_uid == 0 || rn.job_gid == 0) {
			snprintf(rn.sandbox_err, sizeof(rn.sandbox_err),
			         "REEF_HUB_JOB_USER %.100s is unknown or root", user ? user : "");
			return;
		}
		if (!rn_find_exe(rn.setpriv, "REEF_HUB_SETPRIV", setprivs)) {
			snprintf(rn.sandbox_err, sizeof(rn.sandbox_err),
			         "%.300s not found (util-linux)", rn.setpriv);
			return;
		}
	}
	if (!rn_find_exe(rn.bwrap, "REEF_HUB_BWRAP", bwraps)) {
		snprintf(rn.sandbox_err, sizeof(rn.sandbox_err),
		         "%.300s not found (install bubblewrap)", rn.bwrap);
		return;
	}
	rn_sandbox_base(&a);
	rn_argv_add(&a, "--chdir");
	rn_argv_add(&a, "/");
	rn_argv_add(&a, "--");
	rn_sandbox_user(&a);
	rn_argv_add(&a, "/bin/true");
	fd = memfd_create("reef-hub-probe", MFD_CLOEXEC);
	if (a.err || fd < 0) {
		snprintf(rn.sandbox_err, sizeof(rn.sandbox_err), "probe: %s",
		         strerror(a.err ? -a.err : errno));
		goto out;
	}
	{
		char *const env[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};

		code = rn_run(&slot, NULL, a.v, env, NULL, fd, ci_now() + 30, &why);
	}
	if (code == 0) {
		rn.sandbox_ok = true;
	} else {
		char msg[200] = "";
		ssize_t n = pread(fd, msg, sizeof(msg) - 1, 0);
		char *nl;

		msg[n > 0 ? n : 0] = '\0';
		if ((nl = strchr(msg, '\n')))
			*nl = '\0';
		snprintf(rn.sandbox_err, sizeof(rn.sandbox_err),
		         "bwrap cannot create a sandbox (exit %d%s%s)", code, msg[0] ? ": " : "",
		         msg);
	}
out:
	if (fd >= 0)
		close(fd);
	rn_argv_free(&a);
}

/* ---- artifacts ---- */

struct rn_zip {
	zip_t *za;
	const char *ws; /* workspace, canonical */
	size_t ws_len;
	int trace;
	uint64_t bytes;
	size_t files;
	int err;
};

/* True when the real location of path is inside the workspace. */
static bool rn_inside(const struct rn_zip *z, const char *path)
{
	char real[PATH_MAX];

	if (!realpath(path, real))
		return false;
	return !strncmp(real, z->ws, z->ws_len) && (real[z->ws_len] == '/' || !real[z->ws_len]);
}

static void rn_zip_add(struct rn_zip *z, const char *abs, int depth)
{
	const char *rel = strlen(abs) > z->ws_len ? abs + z->ws_len + 1 : "";
	struct stat st;
	bool link, root = !*rel || !strcmp(rel, ".");

	if (z->err || depth > RN_MAX_ART_DEPTH)
		return;
	if (lstat(abs, &st) < 0)
		return;
	link = S_ISLNK(st.st_mode);
	if (!rn_inside(z, abs)) {
		rn_trace(z->trace, "WARNING: %s: leaves the project directory, not archived\n",
		         rel);
		return;
	}
	if (S_ISLNK(st.st_mode) && stat(abs, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		DIR *d;
		struct dirent *de;

		if (!strcmp(rel, ".git"))
			return;
		if (!root && zip_dir_add(z->za, rel, ZIP_FL_ENC_UTF_8) < 0 &&
		    zip_error_code_zip(zip_get_error(z->za)) != ZIP_ER_EXISTS) {
			z->err = -EIO;
			return;
		}
		if (link || !(d = opendir(abs)))
			return;
		while ((de = readdir(d))) {
			char child[PATH_MAX];

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (hub_pathf(child, sizeof(child), "%s/%s", abs, de->d_name) < 0)
				continue;
			rn_zip_add(z, child, depth + 1);
		}
		closedir(d);
		return;
	}
	if (!S_ISREG(st.st_mode))
		return;
	if (++z->files > RN_MAX_ART_FILES || (z->bytes += (uint64_t)st.st_size) > RN_MAX_ARTIFACT) {
		rn_trace(z->trace, "ERROR: artifacts exceed %llu bytes or %d files\n",
		         (unsigned long long)RN_MAX_ARTIFACT, RN_MAX_ART_FILES);
		z->err = -EFBIG;
		return;
	}
	{
		zip_source_t *src = zip_source_file(z->za, abs, 0, -1);

		if (!src ||
		    zip_file_add(z->za, rel, src, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) < 0) {
			zip_source_free(src);
			z->err = -EIO;
		}
	}
}

/* Zips the job's artifacts:paths (globs) into DIR/artifacts/<id>.zip. 0, -ENOENT when
 * nothing matched, other negative errno on failure. */
static int rn_artifacts(const struct rn_job *j, const char *ws, int trace, uint64_t *size)
{
	json_t *paths = json_object_get(json_object_get(j->spec, "artifacts"), "paths");
	char real_ws[PATH_MAX], zpath[PATH_MAX], tmp[PATH_MAX + 8];
	struct rn_zip z = {.trace = trace};
	struct stat st;
	int zerr = 0;
	size_t i;
	json_t *p;

	if (!realpath(ws, real_ws))
		return -EIO;
	z.ws = real_ws;
	z.ws_len = strlen(real_ws);
	ci_artifacts_path(j->id, zpath);
	hub_pathf(tmp, sizeof(tmp), "%s.tmp", zpath);
	unlink(tmp);
	if (!(z.za = zip_open(tmp, ZIP_CREATE | ZIP_TRUNCATE, &zerr)))
		return -EIO;
	json_array_foreach(paths, i, p)
	{
		char pat[PATH_MAX];
		glob_t g;

		hub_pathf(pat, sizeof(pat), "%s/%s", real_ws, json_string_value(p));
		if (glob(pat, GLOB_NOSORT, NULL, &g) != 0) {
			rn_trace(trace, "WARNING: %s: no matching files\n", json_string_value(p));
			continue;
		}
		for (size_t k = 0; k < g.gl_pathc; k++) {
			size_t len = strlen(g.gl_pathv[k]);

			while (len > z.ws_len + 1 && g.gl_pathv[k][len - 1] == '/')
				g.gl_pathv[k][--len] = '\0';
			rn_zip_add(&z, g.gl_pathv[k], 0);
		}
		globfree(&g);
	}
	if (z.err || zip_get_num_entries(z.za, 0) == 0) {
		zip_discard(z.za);
		unlink(tmp);
		return z.err ? z.err : -ENOENT;
	}
	rn_trace(trace, "artifacts: found %zu matching files\n", z.files);
	if (zip_close(z.za) < 0) {
		rn_trace(trace, "ERROR: %s\n", zip_strerror(z.za));
		zip_discard(z.za);
		unlink(tmp);
		return -EIO;
	}
	if (rename(tmp, zpath) < 0 || stat(zpath, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

int ci_exec(char *const argv[], char *const envp[])
{
	struct rn_slot slot = {0};
	enum rn_end why;
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC), code;
	char *const empty[] = {NULL};

	if (fd < 0)
		return -errno;
	code = rn_run(&slot, NULL, argv, envp ? envp : empty, NULL, fd, ci_now() + 600, &why);
	close(fd);
	return code;
}

const char *ci_data_dir(void)
{
	return rn.dir;
}

void ci_runner_unsafe_set(bool unsafe)
{
	rn.unsafe = unsafe;
}

/* ---- the worker ---- */

static bool rn_has_lfs(void)
{
	static int have = -1;

	if (have < 0)
		have = access("/usr/bin/git-lfs", X_OK) == 0 ||
		       access("/usr/local/bin/git-lfs", X_OK) == 0;
	return have == 1;
}

/* The environment of the hub's own git commands in a job's workspace: fixed, so job
 * variables (GIT_CONFIG_*, GIT_SSH_COMMAND, ...) cannot run anything outside the
 * sandbox. */
static int rn_git_env(struct rn_env *e, const char *ws)
{
	const char *path = getenv("REEF_HUB_JOB_PATH");

	rn_env_set(e, "PATH", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	rn_env_setf(e, "HOME", "%s.home", ws);
	rn_env_set(e, "LANG", "C.UTF-8");
	rn_env_set(e, "GIT_TERMINAL_PROMPT", "0");
	rn_env_set(e, "GIT_CONFIG_NOSYSTEM", "1");
	return e->n == 5 ? 0 : -ENOMEM;
}

/* Runs one script of the job (main or after_script) in the job's sandbox and limits. A
 * script that failed because of a limit (an OOM kill, SIGXFSZ, ...) ends as RN_LIMIT. */
static int rn_script_run(struct rn_slot *slot, struct joblim *lim, const char *ws,
                         const char *ro_dir, const char *script, struct rn_env *env, int trace,
                         double deadline, enum rn_end *why)
{
	struct rn_argv a = {0};
	int code;

	*why = RN_EXITED;
	if (rn_own(script) < 0 || rn_sandbox_argv(&a, ws, ro_dir, script) < 0) {
		rn_argv_free(&a);
		rn_trace(trace, "ERROR: could not prepare the job sandbox\n");
		return -1;
	}
	slot->hit = JOBLIM_NONE;
	code = rn_run(slot, lim, a.v, env->v, ws, trace, deadline, why);
	rn_argv_free(&a);
	if (*why == RN_EXITED && (slot->hit = joblim_verdict(lim, code)) != JOBLIM_NONE)
		*why = RN_LIMIT;
	return code;
}

void rn_job_run(struct rn_slot *slot, struct rn_job *j, char status[24], char reason[64],
                uint64_t *art_size)
{
	struct hub *h = rn.h;
	struct hub_project p;
	char ws[PATH_MAX], script[PATH_MAX + 16], after[PATH_MAX + 16], trace_path[PATH_MAX];
	char url[PATH_MAX], home[PATH_MAX + 16], tmpdir[PATH_MAX + 16], vars[PATH_MAX + 16];
	char idstr[32], ro_dir[PATH_MAX];
	struct rn_env env = {0}, genv = {0};
	enum rn_end why = RN_EXITED;
	const struct joblim_conf *lc = joblim_conf_get();
	double deadline = lc->timeout ? ci_now() + (double)lc->timeout : 1e300;
	struct joblim *lim = NULL;
	char lim_text[512];
	const json_t *main_sections[2];
	int trace, code = 0;
	bool ok = false, ran = false;

	snprintf(status, 24, "failed");
	snprintf(reason, 64, "runner_system_failure");
	*art_size = 0;
	ci_trace_path(j->id, trace_path);
	trace = open(trace_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (trace < 0) {
		log_error("ci: job %lld: trace %s: %s", (long long)j->id, trace_path,
		          strerror(errno));
		return;
	}
	snprintf(idstr, sizeof(idstr), "%lld", (long long)j->project_id);
	rn_trace(trace, "Running with reef-hub embedded runner (shell executor)\n");
	if (!rn.unsafe && !rn.sandbox_ok) {
		rn_trace(trace,
		         "ERROR: Job failed (system failure): the job sandbox is unavailable: %s. "
		         "reef-hub runs no job unsandboxed unless started with --unsafe-runner\n",
		         rn.sandbox_err);
		close(trace);
		return;
	}
	if (hub_project_load(h, idstr, &p) < 0) {
		rn_trace(trace, "ERROR: Job failed (system failure): project %s is gone\n", idstr);
		close(trace);
		return;
	}
	/* the token is masked in everything the job's commands print */
	rn_mask_init(&slot->mask, j->token);
	hub_pathf(ws, sizeof(ws), "%s/builds/%lld", rn.dir, (long long)j->id);
	hub_pathf(script, sizeof(script), "%s.sh", ws);
	hub_pathf(after, sizeof(after), "%s.after.sh", ws);
	hub_pathf(home, sizeof(home), "%s.home", ws);
	hub_pathf(tmpdir, sizeof(tmpdir), "%s.tmp", ws);
	hub_pathf(vars, sizeof(vars), "%s.vars", ws);
	rn_rmtree(ws);
	rn_rmtree(home);
	rn_rmtree(tmpdir);
	rn_rmtree(vars);
	rn_trace(trace, "Preparing environment\nRunning on %s/builds\n", rn.dir);
	if (rn.unsafe)
		rn_trace(trace, "WARNING: no job sandbox (--unsafe-runner): the job runs as the"
		                " hub's user and can read the hub's data directory\n");
	else if (rn.drop)
		rn_trace(trace, "Using a bubblewrap sandbox as uid %u\n", (unsigned)rn.job_uid);
	else
		rn_trace(trace, "Using a bubblewrap sandbox\n");
	joblim_describe(lim_text, sizeof(lim_text));
	rn_trace(trace, "%s\n", lim_text);
	rn_ro_dir(j->ro_dir, ro_dir, trace);
	if ((mkdir(home, 0700) < 0 && errno != EEXIST) ||
	    (mkdir(tmpdir, 0700) < 0 && errno != EEXIST)) {
		rn_trace(trace, "ERROR: Job failed (system failure): %s\n", strerror(errno));
		goto out;
	}
	if (rn_job_env(j, &p, ws, &env) < 0 || rn_git_env(&genv, ws) < 0)
		goto out;
	rn_trace(trace, "Getting source from Git repository\nChecking out %.8s as %s...\n", j->sha,
	         j->ref);
	rn_auth_url(h->base_url, j->token, p.path_with_namespace, url, sizeof(url));
	{
		char *clone[] = {"git", "clone", "-q", "--no-checkout", p.repo_path, ws, NULL};
		char *seturl[] = {"git", "-C", ws, "remote", "set-url", "origin", url, NULL};
		char *co_lfs[] = {"git",
		                  "-C",
		                  ws,
		                  "-c",
		                  "advice.detachedHead=false",
		                  "-c",
		                  "filter.lfs.process=git-lfs filter-process",
		                  "-c",
		                  "filter.lfs.required=true",
		                  "-c",
		                  "filter.lfs.smudge=git-lfs smudge -- %f",
		                  "-c",
		                  "filter.lfs.clean=git-lfs clean -- %f",
		                  "checkout",
		                  "-q",
		                  "--detach",
		                  j->sha,
		                  NULL};
		char *co[] = {"git",      "-C", ws,         "-c",   "advice.detachedHead=false",
		              "checkout", "-q", "--detach", j->sha, NULL};

		if (rn_run(slot, NULL, clone, genv.v, NULL, trace, deadline, &why) != 0 ||
		    why != RN_EXITED ||
		    rn_run(slot, NULL, seturl, genv.v, NULL, trace, deadline, &why) != 0 ||
		    why != RN_EXITED ||
		    rn_run(slot, NULL, rn_has_lfs() ? co_lfs : co, genv.v, NULL, trace, deadline,
		           &why) != 0) {
			if (why == RN_EXITED)
				rn_trace(trace, "ERROR: Job failed: could not check out %s\n",
				         j->sha);
			goto ended;
		}
	}
	if (rn_own(ws) < 0 || rn_own(home) < 0 || rn_own(tmpdir) < 0 ||
	    (access(vars, F_OK) == 0 && rn_own(vars) < 0)) {
		rn_trace(trace, "ERROR: Job failed (system failure): cannot hand the workspace to"
		                " the job's user\n");
		goto out;
	}
	{
		const char *watch[] = {ws, home, tmpdir, NULL};
		int r = joblim_new(&lim, j->id, watch);

		if (r < 0) {
			rn_trace(
			    trace,
			    "ERROR: Job failed (system failure): cannot set up the job's limits: "
			    "%s\n",
			    strerror(-r));
			goto out;
		}
	}
	main_sections[0] = json_object_get(j->spec, "before_script");
	main_sections[1] = json_object_get(j->spec, "script");
	if (rn_write_script(script, main_sections, 2) < 0)
		goto out;
	rn_trace(trace, "Executing \"step_script\" stage of the job script\n");
	code = rn_script_run(slot, lim, ws, ro_dir, script, &env, trace, deadline, &why);
	if (code < 0)
		goto out;
	ran = true;
	ok = why == RN_EXITED && code == 0;
	if (why == RN_EXITED && json_array_size(json_object_get(j->spec, "after_script"))) {
		const json_t *sect[1] = {json_object_get(j->spec, "after_script")};
		enum rn_end awhy;

		rn_env_set(&env, "CI_JOB_STATUS", ok ? "success" : "failed");
		rn_trace(trace, "Running after_script\n");
		if (rn_write_script(after, sect, 1) < 0 ||
		    rn_script_run(slot, lim, ws, ro_dir, after, &env, trace,
		                  ci_now() + RN_AFTER_TIMEOUT < deadline + RN_AFTER_TIMEOUT
		                      ? ci_now() + RN_AFTER_TIMEOUT
		                      : deadline,
		                  &awhy) != 0)
			rn_trace(trace, "WARNING: after_script failed, ignored\n");
	}
	if (why == RN_EXITED && json_is_object(json_object_get(j->spec, "artifacts"))) {
		const char *when = json_string_value(
		    json_object_get(json_object_get(j->spec, "artifacts"), "when"));

		if (!when || !strcmp(when, "always") || (ok && !strcmp(when, "on_success")) ||
		    (!ok && !strcmp(when, "on_failure"))) {
			int r;

			rn_trace(trace, "Uploading artifacts...\n");
			r = rn_artifacts(j, ws, trace, art_size);
			if (r == -ENOENT) {
				rn_trace(trace, "WARNING: no files to upload\n");
			} else if (r < 0) {
				rn_trace(trace, "ERROR: Uploading artifacts failed: %s\n",
				         strerror(-r));
				if (ok) {
					ok = false;
					code = -1;
				}
			}
		}
	}
ended:
	switch (why) {
	case RN_CANCELED:
		rn_trace(trace, "ERROR: Job failed: canceled\n");
		snprintf(status, 24, "canceled");
		reason[0] = '\0';
		break;
	case RN_TIMEOUT:
		rn_trace_eol(trace_path, trace);
		/* GitLab Runner's wording, its odd "seconds" included */
		joblim_duration_format(lc->timeout, lim_text, sizeof(lim_text));
		rn_trace(trace, "ERROR: Job failed: execution took longer than %s seconds\n",
		         lim_text);
		snprintf(reason, 64, "job_execution_timeout");
		break;
	case RN_LIMIT:
		rn_trace_eol(trace_path, trace);
		joblim_message(slot->hit, lim_text, sizeof(lim_text));
		rn_trace(trace, "ERROR: Job failed: %s\n", lim_text);
		snprintf(reason, 64, "%s", joblim_failure_reason(slot->hit));
		break;
	case RN_STOPPED:
		rn_trace(trace, "ERROR: Job failed (system failure): the hub stopped\n");
		break;
	case RN_EXITED:
		if (ran && ok) {
			rn_trace(trace, "Cleaning up project directory and file based variables\n"
			                "Job succeeded\n");
			snprintf(status, 24, "success");
			reason[0] = '\0';
		} else if (ran) {
			if (code > 0)
				rn_trace(trace, "ERROR: Job failed: exit code %d\n", code);
			snprintf(reason, 64, code > 0 ? "script_failure" : "unknown_failure");
		}
		break;
	}
out:
	joblim_free(lim);
	rn_mask_init(&slot->mask, NULL);
	rn_env_free(&env);
	rn_env_free(&genv);
	close(trace);
	unlink(script);
	unlink(after);
	rn_rmtree(ws);
	rn_rmtree(home);
	rn_rmtree(tmpdir);
	rn_rmtree(vars);
}
