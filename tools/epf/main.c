/* reef-epf: the job-side helper of the executable pipeline framework. The CI file
 * reef-hub generates for an experiment calls it to report the run's start, its metrics
 * per epoch and its end to the management API (docs/mgmt-api.md):
 *
 *   reef-epf start
 *   reef-epf metrics FILE|JSON           one record {"epoch":N,"loss":..} or a list
 *   reef-epf run [--metrics-file F] -- CMD [ARG...]
 *                                        runs CMD, posting F whenever it changes
 *   reef-epf finish --status S [--exit-code N]
 *
 * The endpoint comes from the environment: EPF_URL (…/api/v1/epf/experiments/<id>), a
 * pipeline variable. The credential: EPF_SECRET (the run's secret, header EPF-BOT-TOKEN)
 * when reef-hub runs the job itself; otherwise the job's own CI_JOB_TOKEN (header
 * JOB-TOKEN), which the management service beside a GitLab checks with GitLab. That
 * service sets no secret: variables given to a pipeline cannot be masked in traces,
 * CI_JOB_TOKEN always is. Neither is ever printed. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reef/buf.h"
#include "reef/jsonx.h"

#define EPF_MAX_BODY ((size_t)1 << 20)
#define EPF_POLL_MS  300
#define EPF_ATTEMPTS 5

static const char usage_text[] =
    "Usage: reef-epf start\n"
    "       reef-epf metrics FILE|JSON\n"
    "       reef-epf run [--metrics-file FILE] -- COMMAND [ARG...]\n"
    "       reef-epf finish --status success|failed|canceled [--exit-code N]\n"
    "Reports an experiment's progress to reef-hub. Needs EPF_URL, and EPF_SECRET or\n"
    "CI_JOB_TOKEN (the job's own, in a GitLab job).\n"
    "A metrics record is {\"epoch\": N, \"<name>\": <number>, ...}; a file may hold one\n"
    "record or a list (rewrite it atomically: write a temporary file, then rename).\n";

static size_t epf_sink(void *data, size_t size, size_t n, void *user)
{
	struct buf *b = user;

	if (buf_append(b, data, size * n) < 0)
		return 0;
	return size * n;
}

/* POSTs body to EPF_URL/<action>. 0, or -1 with a message on stderr. */
static int epf_post(const char *action, const char *body)
{
	const char *base = getenv("EPF_URL"), *secret = getenv("EPF_SECRET");
	const char *name = "EPF-BOT-TOKEN";
	char url[2048], hdr[1200];
	struct curl_slist *h = NULL;
	struct buf resp = BUF_INIT(64 << 10);
	long status = 0;
	int r = -1;

	if (!secret || !*secret) {
		secret = getenv("CI_JOB_TOKEN");
		name = "JOB-TOKEN";
	}
	if (!base || !*base || !secret || !*secret) {
		fprintf(stderr, "reef-epf: EPF_URL and EPF_SECRET or CI_JOB_TOKEN must be set\n");
		return -1;
	}
	if (strlen(secret) > 1024 || strpbrk(secret, "\r\n") ||
	    snprintf(url, sizeof(url), "%s/%s", base, action) >= (int)sizeof(url)) {
		fprintf(stderr, "reef-epf: EPF_URL or the credential too long\n");
		return -1;
	}
	snprintf(hdr, sizeof(hdr), "%s: %s", name, secret);
	h = curl_slist_append(h, hdr);
	h = curl_slist_append(h, "Content-Type: application/json");
	for (int attempt = 0; attempt < EPF_ATTEMPTS; attempt++) {
		CURL *c = curl_easy_init();
		CURLcode cc;

		if (!c)
			break;
		buf_reset(&resp);
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, epf_sink);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
		cc = curl_easy_perform(c);
		if (cc == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(c);
		if (cc == CURLE_OK && status >= 200 && status < 300) {
			r = 0;
			break;
		}
		if (cc == CURLE_OK && status < 500) {
			fprintf(stderr, "reef-epf: %s refused (%ld): %.300s\n", action, status,
			        resp.data ? resp.data : "");
			break;
		}
		fprintf(stderr, "reef-epf: %s: %s\n", action,
		        cc != CURLE_OK ? curl_easy_strerror(cc) : "server error, retrying");
		sleep(1);
	}
	curl_slist_free_all(h);
	explicit_bzero(hdr, sizeof(hdr));
	buf_free(&resp);
	return r;
}

/* Reads a metrics file (at most EPF_MAX_BODY) and checks it is JSON. */
static int epf_read_json(const char *path, char **out)
{
	struct buf b = BUF_INIT(EPF_MAX_BODY);
	char chunk[65536];
	json_t *v = NULL;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	*out = NULL;
	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if (buf_append(&b, chunk, (size_t)n) < 0) {
			close(fd);
			buf_free(&b);
			return -EFBIG;
		}
	close(fd);
	if (n < 0 || !b.len || jsonx_parse(&v, b.data, b.len, 8, EPF_MAX_BODY) < 0) {
		buf_free(&b);
		return -EINVAL;
	}
	json_decref(v);
	*out = buf_steal(&b);
	return 0;
}

static int cmd_metrics(const char *arg)
{
	char *body = NULL;
	json_t *v = NULL;
	int r;

	if (arg[0] == '{' || arg[0] == '[') {
		if (jsonx_parse(&v, arg, strlen(arg), 8, EPF_MAX_BODY) < 0) {
			fprintf(stderr, "reef-epf: metrics: not valid JSON\n");
			return 1;
		}
		json_decref(v);
		return epf_post("update", arg) == 0 ? 0 : 1;
	}
	if ((r = epf_read_json(arg, &body)) < 0) {
		fprintf(stderr, "reef-epf: metrics: %s: %s\n", arg,
		        r == -EINVAL ? "not valid JSON" : strerror(-r));
		return 1;
	}
	r = epf_post("update", body);
	free(body);
	return r == 0 ? 0 : 1;
}

static volatile sig_atomic_t epf_signal;

static void epf_on_signal(int sig)
{
	epf_signal = sig;
}

/* Posts the metrics file when its size or mtime changed since the last post. */
static void epf_poll(const char *file, struct timespec *mtime, off_t *size)
{
	struct stat st;
	char *body;

	if (!file || stat(file, &st) < 0)
		return;
	if (st.st_size == *size && st.st_mtim.tv_sec == mtime->tv_sec &&
	    st.st_mtim.tv_nsec == mtime->tv_nsec)
		return;
	if (epf_read_json(file, &body) < 0)
		return; /* half written: the next poll sees the finished file */
	*mtime = st.st_mtim;
	*size = st.st_size;
	epf_post("update", body);
	free(body);
}

static int cmd_run(int argc, char **argv)
{
	const char *file = NULL;
	struct timespec mtime = {0};
	off_t size = -1;
	struct sigaction sa = {0};
	pid_t pid;
	int i = 0, status = 0;

	if (i < argc && !strcmp(argv[i], "--metrics-file") && i + 1 < argc) {
		file = argv[i + 1];
		i += 2;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc) {
		fputs(usage_text, stderr);
		return 2;
	}
	if (file) {
		unlink(file); /* a stale file from a previous run is not this run's */
		setenv("EPF_METRICS_FILE", file, 1);
	}
	sa.sa_handler = epf_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	pid = fork();
	if (pid < 0) {
		perror("reef-epf: fork");
		return 1;
	}
	if (pid == 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		execvp(argv[i], argv + i);
		fprintf(stderr, "reef-epf: %s: %s\n", argv[i], strerror(errno));
		_exit(127);
	}
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			perror("reef-epf: waitpid");
			return 1;
		}
		if (epf_signal) {
			kill(pid, epf_signal);
			epf_signal = 0;
		}
		epf_poll(file, &mtime, &size);
		usleep(EPF_POLL_MS * 1000);
	}
	epf_poll(file, &mtime, &size);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int cmd_finish(int argc, char **argv)
{
	const char *st = NULL;
	long code = -1;
	json_t *body;
	char *s;
	int r;

	for (int i = 0; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--status"))
			st = argv[i + 1];
		else if (!strcmp(argv[i], "--exit-code"))
			code = strtol(argv[i + 1], NULL, 10);
	}
	if (!st || !*st) {
		fputs(usage_text, stderr);
		return 2;
	}
	body = json_pack("{s:s}", "status", st);
	if (code >= 0)
		json_object_set_new(body, "exit_code", json_integer(code));
	s = jsonx_dump(body);
	json_decref(body);
	r = epf_post("finish", s ? s : "{}");
	free(s);
	return r == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	int r;

	if (argc < 2 || !strcmp(argv[1], "--help")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("reef-epf %s\n", REEF_VERSION);
		return 0;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!strcmp(argv[1], "start"))
		r = epf_post("start", "{}") == 0 ? 0 : 1;
	else if (!strcmp(argv[1], "metrics") && argc == 3)
		r = cmd_metrics(argv[2]);
	else if (!strcmp(argv[1], "run"))
		r = cmd_run(argc - 2, argv + 2);
	else if (!strcmp(argv[1], "finish"))
		r = cmd_finish(argc - 2, argv + 2);
	else {
		fputs(usage_text, stderr);
		r = 2;
	}
	curl_global_cleanup();
	return r;
}
