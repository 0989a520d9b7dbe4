/* Program-level logging. Library code (fs/, lib/) returns errors and does not log;
 * daemon and tool code logs and returns in one step. Never pass a token to these. */
#ifndef REEF_LOG_H
#define REEF_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* The program's name in every line (and syslog's ident): a string that lives on. */
void log_set_ident(const char *ident);
/* Also appends every line to path (created 0600): 0 or a negative errno. */
int log_file_open(const char *path);
/* From now on to syslog (openlog(ident, LOG_PID, LOG_USER); the journal where systemd
 * runs) instead of stderr: for a daemon whose stderr is /dev/null. */
void log_syslog_start(void);
/* Closes the file and syslog; stderr again. */
void log_close(void);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_msgv(enum log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Logs at error level and returns r (a negative errno), for `return log_err(r, ...)`. */
int log_ret(int r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
