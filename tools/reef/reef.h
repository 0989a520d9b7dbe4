/* reef: the command line. Shared helpers of its subcommands (reef.c) and the commands
 * themselves, one per `reef_cmd_*` (login.c, mnt.c, ml.c). A command returns the exit
 * status: 0 ok, 1 failure (a one-line message on stderr), 2 usage error. */
#ifndef REEF_CLI_H
#define REEF_CLI_H
#include <stdbool.h>
#include <stddef.h>

#include "reef/buf.h"

#define REEF_EXIT_OK    0
#define REEF_EXIT_FAIL  1
#define REEF_EXIT_USAGE 2

/* Caps on what is read from the mount's generated files and from the server. */
#define REEF_FILE_MAX  ((size_t)4 << 20)
#define REEF_TOKEN_MAX 1024
#define REEF_URL_MAX   2048

/* Prints "reef: <msg>" on stderr and returns 1 (or 2 for reef_usage, which adds a hint
 * to the command's --help). */
int reef_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int reef_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when arg is -h or --help. */
bool reef_is_help(const char *arg);
/* True, with text printed on stdout, when any of argv[1..] is -h or --help: the command
 * then only answers with its help, whatever else it was given. */
bool reef_help(int argc, char **argv, const char *text);

/* Reads a whole (small) file into out, at most cap bytes (-EFBIG beyond). */
int reef_read_file(const char *path, size_t cap, struct buf *out);

/* ~/.config/reef (or $XDG_CONFIG_HOME/reef) into out; -ENAMETOOLONG / -ENOENT (no HOME). */
int reef_config_dir(char *out, size_t size);
/* Servers (conf.c). One comes from reef's config (`reef login`), python-gitlab's
 * configuration files, or GITLAB_URL/GITLAB_PRIVATE_TOKEN. */
#define REEF_SERVERS_MAX 64
#define REEF_NAME_MAX    64
enum reef_from { REEF_FROM_REEF, REEF_FROM_PYTHON_GITLAB, REEF_FROM_ENV };
struct reef_server {
	char name[REEF_NAME_MAX];
	char url[REEF_URL_MAX];
	char token_file[4096 + 80];     /* reef's own servers */
	char token[REEF_TOKEN_MAX + 1]; /* python-gitlab's private_token, GITLAB_PRIVATE_TOKEN */
	char unsupported[32];           /* a python-gitlab token kind reef cannot send */
	enum reef_from from;
};
struct reef_servers {
	struct reef_server v[REEF_SERVERS_MAX];
	size_t n;
	char def[REEF_NAME_MAX * 4]; /* the default's name */
	char legacy[REEF_URL_MAX];   /* server= of the single-server file */
};
/* [A-Za-z0-9._-], not "global", "." or "..". */
bool reef_server_name_ok(const char *name);
/* reef's own servers; an absent file gives none and -ENOENT. why: one line on error. */
int reef_servers_load(struct reef_servers *s, char *why, size_t wsize);
/* python-gitlab's sections with a url; -ENOENT when there is no file. */
int reef_pgl_load(struct reef_servers *s, char *why, size_t wsize);
/* The server to use: by name (reef's, else python-gitlab's section), or without a name
 * reef's default, else GITLAB_URL with GITLAB_PRIVATE_TOKEN, else python-gitlab's
 * [global] default. 0 or a negative errno with why filled. */
int reef_server_find(const char *name, struct reef_server *out, char *why, size_t wsize);
/* Adds or replaces name (now the default) and writes dir/config. */
int reef_servers_add(struct reef_servers *s, const char *name, const char *url,
                     const char *token_file);
int reef_servers_save(const char *dir, const struct reef_servers *s);
/* Removes name; the default, when it was name, becomes the last server left (the one
 * reef_server_find would take). -ENOENT when there is no such server. */
int reef_servers_remove(struct reef_servers *s, const char *name);
/* Whether name is one of reef's servers or python-gitlab's sections. */
bool reef_server_known(const char *name);
const char *reef_server_name_by_url(const struct reef_servers *s, const char *url);
/* Writes dir/name (mode 0600) through a temporary file and a rename. */
int reef_store_file(const char *dir, const char *name, const char *data);
/* The default mount point, ~/reef. */
int reef_default_mount(char *out, size_t size);

/* Finds the root of the reef mount holding path (the directory with .reef/status),
 * walking up from path. root gets the mount root, rel (if not NULL) the path below it
 * ("" for the root itself). -EXDEV when path is not inside a mount, -ENOTCONN when it
 * is inside a dead one, -errno of realpath (-ENOENT...) when path cannot be resolved. */
int reef_mount_root(const char *path, char *root, size_t rsize, char *rel, size_t relsize);

/* dir made absolute without resolving its last component (a dead FUSE mount cannot be
 * resolved: ENOTCONN), as /proc/self/mountinfo names mount points. */
int reef_abs_path(const char *dir, char *out, size_t size);
/* Whether a mount sits exactly at dir (/proc/self/mountinfo): 1 with its file system type
 * in fstype ("fuse.reef"), 0 when none, or -errno. */
int reef_mountpoint(const char *dir, char *fstype, size_t tsize);
/* dir is a FUSE mount whose daemon is gone ("Transport endpoint is not connected"). */
bool reef_mount_dead(const char *dir);

/* Writes one request to a control file (open, write, read back, close: the request is
 * sent at the read or the close). 0 or -errno; on failure reason gets the reason read
 * back from the descriptor (may be empty), on success ticket the request's ticket. */
int reef_ctl_write(const char *file, const char *req, char *reason, size_t rsize,
                   struct buf *ticket);

/* Formats a byte count as "12.3 MiB". */
void reef_fmt_bytes(char *out, size_t size, double bytes);

/* The errno's symbolic name ("ENOENT"), or its number. */
const char *reef_errno_name(int err, char *tmp, size_t size);

/* The reason in a line of a control file's .error (or read back from its descriptor)
 * without what the caller's own message says already: the time, the errno name and the
 * request echoed ("2026-…Z ENOENT: forget x: why" gives "why"). Points into line. */
const char *reef_reason(const char *line, const char *req);

int reef_cmd_login(int argc, char **argv);
int reef_cmd_logout(int argc, char **argv);
int reef_cmd_mount(int argc, char **argv);
int reef_cmd_unmount(int argc, char **argv);
int reef_cmd_servers(int argc, char **argv);
int reef_cmd_status(int argc, char **argv);
int reef_cmd_cache(int argc, char **argv);
int reef_cmd_gc(int argc, char **argv);
int reef_cmd_prefetch(int argc, char **argv);
int reef_cmd_launch(int argc, char **argv);
int reef_cmd_follow(int argc, char **argv);
int reef_cmd_commit(int argc, char **argv);
int reef_cmd_discard(int argc, char **argv);
int reef_cmd_diff(int argc, char **argv);
/* reef status DIR for a DIR inside a branch view (write.c); -1 when it is not in one. */
int reef_write_status(const char *dir, bool as_json);

/* follow's loop, shared with `launch --follow`. */
int reef_follow(const char *dir);

#endif
