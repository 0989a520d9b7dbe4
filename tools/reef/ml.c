/* reef launch, follow: experiments through the mount's control files. A launch is one
 * write to <project>/experiments/launch; the name of the experiment (given, or picked
 * by reefd) is read back from the same descriptor, whose content after an accepted
 * write is the request's ticket ({"target": name, ...}, docs/layout.md). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reef.h"
#include "reef/jsonx.h"

#define FOLLOW_POLL_MS 250
/* An accepted launch shows at once (queued, from the journal); the grace only covers a
 * directory listing cached from just before it. */
#define FOLLOW_MISSING_S 3
#define LAUNCH_NAME_MAX  256

static const char launch_help[] =
    "Usage: reef launch [--follow] PROJECT_DIR PROCESSOR [key=value...]\n"
    "Launches an experiment of PROJECT_DIR (a project in the mount, e.g.\n"
    "~/reef/group/project) running the processor PROCESSOR. key=value pairs are\n"
    "name=NAME, source_branch=, input_path=, output_path= or parameters of the\n"
    "processor (epochs=5). Prints the experiment's directory; with --follow, then\n"
    "follows it as 'reef follow' does (and exits as it does).\n";

static const char follow_help[] =
    "Usage: reef follow EXPERIMENT_DIR\n"
    "Prints the experiment's log (stdout) as it grows and its status changes (stderr)\n"
    "until it ends, then the last metrics record. Exits 0 only when it succeeded.\n";

static void ml_sleep(void)
{
	struct timespec ts = {0, FOLLOW_POLL_MS * 1000000L};

	nanosleep(&ts, NULL);
}

int reef_cmd_launch(int argc, char **argv)
{
	const char *proj = NULL, *proc = NULL, *name = NULL;
	char file[PATH_MAX + 32], errfile[PATH_MAX + 40], reason[1024], tmp[24];
	char exp[PATH_MAX + LAUNCH_NAME_MAX + 16];
	struct buf req = BUF_INIT(65536), ticket = BUF_INIT(0), why = BUF_INIT(0);
	bool follow = false;
	json_t *t = NULL;
	int r;

	for (int k = 1; k < argc; k++) {
		const char *a = argv[k];

		if (reef_is_help(a)) {
			fputs(launch_help, stdout);
			return REEF_EXIT_OK;
		}
		if (!strcmp(a, "--follow") || !strcmp(a, "-f")) {
			follow = true;
		} else if (a[0] == '-') {
			r = reef_usage("launch", "unknown option %s", a);
			goto out;
		} else if (!proj) {
			proj = a;
		} else if (!proc) {
			if (strchr(a, '=') || strpbrk(a, "\n\r")) {
				r = reef_usage("launch", "PROCESSOR comes before key=value pairs");
				goto out;
			}
			proc = a;
			if (buf_printf(&req, "processor=%s\n", a) < 0) {
				r = reef_usage("launch", "request too long");
				goto out;
			}
		} else {
			/* one pair per line in the request: a pair may not add lines */
			if (!strchr(a, '=') || a[0] == '=' || strpbrk(a, "\n\r")) {
				r = reef_usage("launch", "'%s' is not key=value", a);
				goto out;
			}
			if (!strncmp(a, "name=", 5))
				name = a + 5;
			if (buf_printf(&req, "%s\n", a) < 0) {
				r = reef_usage("launch", "request too long (64 KiB at most)");
				goto out;
			}
		}
	}
	if (!proc) {
		r = reef_usage("launch", "launch needs PROJECT_DIR and PROCESSOR");
		goto out;
	}
	snprintf(file, sizeof(file), "%s/experiments/launch", proj);
	r = reef_ctl_write(file, req.data, reason, sizeof(reason), &ticket);
	if (r < 0) {
		int err = -r;

		/* the reason of this very write came back on its descriptor; launch.error
		 * holds the control file's last failure, for when it did not */
		snprintf(errfile, sizeof(errfile), "%s.error", file);
		if (!reason[0] && reef_read_file(errfile, 4096, &why) == 0 && why.len) {
			why.data[strcspn(why.data, "\n")] = '\0';
			snprintf(reason, sizeof(reason), "%s", why.data);
		}
		/* the errno once, by name, after the daemon's reason (or its text when none) */
		r = reef_fail("launch %s in %s: %s (%s)", proc, proj,
		              *reef_reason(reason, NULL) ? reef_reason(reason, NULL)
		                                         : strerror(err),
		              reef_errno_name(err, tmp, sizeof(tmp)));
		goto out;
	}
	if (!name && jsonx_parse(&t, ticket.data ? ticket.data : "", ticket.len, 0, 0) == 0)
		name = jsonx_str(t, "target");
	if (!name || !*name || strchr(name, '/') || strlen(name) >= LAUNCH_NAME_MAX) {
		r = reef_fail("launched, but %s did not say the experiment's name", file);
		goto out;
	}
	snprintf(exp, sizeof(exp), "%s/experiments/%s", proj, name);
	printf("%s\n", exp);
	fflush(stdout);
	r = follow ? reef_follow(exp) : REEF_EXIT_OK;
out:
	json_decref(t);
	buf_free(&req);
	buf_free(&ticket);
	buf_free(&why);
	return r;
}

static bool follow_terminal(const char *s)
{
	return !strcmp(s, "success") || !strcmp(s, "failed") || !strcmp(s, "canceled") ||
	       !strcmp(s, "skipped");
}

/* Prints what the log holds past *off. */
static void follow_log(const char *path, off_t *off)
{
	char chunk[16384];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	while ((n = pread(fd, chunk, sizeof(chunk), *off)) > 0) {
		fwrite(chunk, 1, (size_t)n, stdout);
		*off += n;
	}
	fflush(stdout);
	close(fd);
}

/* Prints the last record of metrics.json, if any. */
static void follow_metrics(const char *dir)
{
	char path[PATH_MAX + 32];
	struct buf b = BUF_INIT(0);
	json_t *m = NULL;
	char *s;

	snprintf(path, sizeof(path), "%s/metrics.json", dir);
	if (reef_read_file(path, REEF_FILE_MAX, &b) < 0 ||
	    jsonx_parse(&m, b.data ? b.data : "", b.len, 0, 0) < 0 || !json_array_size(m))
		goto out;
	/* 10 digits: 0.94, not 0.93999999999999995 */
	s = json_dumps(json_array_get(m, json_array_size(m) - 1),
	               JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
	if (s)
		printf("metrics: %s\n", s);
	free(s);
out:
	json_decref(m);
	buf_free(&b);
}

int reef_follow(const char *dir)
{
	char spath[PATH_MAX + 16], lpath[PATH_MAX + 16], last[64] = "", tmp[24];
	struct buf st = BUF_INIT(0);
	time_t since = time(NULL);
	off_t off = 0;
	int r;

	snprintf(spath, sizeof(spath), "%s/status", dir);
	snprintf(lpath, sizeof(lpath), "%s/log", dir);
	for (;;) {
		r = reef_read_file(spath, 256, &st);
		if (r == -ENOENT && time(NULL) - since < FOLLOW_MISSING_S) {
			ml_sleep();
			continue;
		}
		if (r < 0) {
			r = reef_fail("%s: %s (%s)", spath, strerror(-r),
			              reef_errno_name(-r, tmp, sizeof(tmp)));
			goto out;
		}
		if (st.len)
			st.data[strcspn(st.data, "\n")] = '\0';
		follow_log(lpath, &off);
		if (st.len && strcmp(st.data, last)) {
			snprintf(last, sizeof(last), "%s", st.data);
			fprintf(stderr, "reef: status %s\n", last);
		}
		if (follow_terminal(last))
			break;
		ml_sleep();
	}
	follow_log(lpath, &off); /* what came in with the last status change */
	follow_metrics(dir);
	fflush(stdout);
	if (strcmp(last, "success"))
		r = reef_fail("experiment %s ended %s", dir, last);
	else
		r = REEF_EXIT_OK;
out:
	buf_free(&st);
	return r;
}

int reef_cmd_follow(int argc, char **argv)
{
	if (argc == 2 && reef_is_help(argv[1])) {
		fputs(follow_help, stdout);
		return REEF_EXIT_OK;
	}
	if (argc != 2)
		return reef_usage("follow", "follow takes one EXPERIMENT_DIR");
	if (argv[1][0] == '-')
		return reef_usage("follow", "unknown option %s", argv[1]);
	return reef_follow(argv[1]);
}
