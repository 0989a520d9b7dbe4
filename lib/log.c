/* Program-level logging to up to three sinks: stderr (until a daemon has no terminal),
 * a file the user chose (-o log=FILE), and syslog (the journal) once daemonized. */
#include "reef/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level cur_level = LOG_LVL_INFO;
static const char *cur_ident = "reef";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static bool to_stderr = true, to_syslog;
static FILE *log_file;

void log_set_level(enum log_level lvl)
{
	cur_level = lvl;
}

enum log_level log_get_level(void)
{
	return cur_level;
}

void log_set_ident(const char *ident)
{
	cur_ident = ident;
}

int log_file_open(const char *path)
{
	/* O_APPEND: several runs (and logrotate's copytruncate) share one file; 0600: paths
	 * of private projects appear in it */
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	FILE *f;

	if (fd < 0)
		return -errno;
	f = fdopen(fd, "a");
	if (!f) {
		int e = errno;

		close(fd);
		return -e;
	}
	setvbuf(f, NULL, _IOLBF, 0);
	pthread_mutex_lock(&log_lock);
	if (log_file)
		fclose(log_file);
	log_file = f;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

void log_syslog_start(void)
{
	pthread_mutex_lock(&log_lock);
	openlog(cur_ident, LOG_PID, LOG_USER);
	to_syslog = true;
	to_stderr = false;
	pthread_mutex_unlock(&log_lock);
}

void log_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_file)
		fclose(log_file);
	log_file = NULL;
	if (to_syslog)
		closelog();
	to_syslog = false;
	to_stderr = true;
	pthread_mutex_unlock(&log_lock);
}

static void log_v(enum log_level lvl, const char *fmt, va_list ap)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char msg[2048], stamp[96];
	struct timespec ts;
	struct tm tm;

	if (lvl > cur_level)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	pthread_mutex_lock(&log_lock);
	if (to_stderr) {
		fprintf(stderr, "%s %s %s: %s\n", stamp, cur_ident, names[lvl], msg);
		fflush(stderr);
	}
	if (log_file)
		fprintf(log_file, "%s %s[%d] %s: %s\n", stamp, cur_ident, (int)getpid(), names[lvl],
		        msg);
	if (to_syslog) /* the journal stamps and names it */
		syslog(prio[lvl], "%s: %s", names[lvl], msg);
	pthread_mutex_unlock(&log_lock);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(lvl, fmt, ap);
	va_end(ap);
}

void log_msgv(enum log_level lvl, const char *fmt, va_list ap)
{
	log_v(lvl, fmt, ap);
}

int log_ret(int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(LOG_LVL_ERROR, fmt, ap);
	va_end(ap);
	return r;
}
