/* FUSE passthrough for complete cached objects (Linux 6.9+, see docs/cache.md).
 *
 * An open of a file whose object is complete, verified and stored raw in the cache is
 * answered with FOPEN_PASSTHROUGH and a backing file registered on /dev/fuse: the kernel
 * then reads (and maps) the cache file itself, from its page cache, with no request to
 * reefd. libfuse 3.14 knows neither the init flag nor the open reply's backing id, so this
 * module installs its own read/writev on the session fd (fuse_session_custom_io) and adds
 * them to the two replies concerned; everything else passes through unchanged.
 *
 * The kernel refuses to mix modes on one inode: while a passthrough open exists every new
 * open must be passthrough with the same backing file, and while a cached (page cache)
 * open exists none may be passthrough. passthru_open decides per open from counts kept per
 * inode, which lag the kernel's (it releases before it tells us), so never contradict it.
 *
 * Registering a backing file needs CAP_SYS_ADMIN; without it (or on an older kernel) the
 * first attempt turns the feature off and every open is served as before. One session per
 * process. */
#ifndef REEF_PASSTHRU_H
#define REEF_PASSTHRU_H

#include <stdbool.h>
#include <stdint.h>

struct fuse_session;

/* Installs the session fd's I/O hooks (after fuse_session_mount); want=false leaves the
 * session alone and passthrough off. 0 or a negative errno. */
int passthru_attach(struct fuse_session *se, bool want);

/* For an open of inode ino, served by the handler thread that received the request. fd is
 * the complete object's cache file (content at offset 0), or -1 if there is none yet.
 * Returns true if the open is passthrough: the reply this thread sends next for the request
 * carries the backing id (and must not ask for keep_cache). Either way the open is counted
 * until passthru_release(ino, <the returned value>). */
bool passthru_open(uint64_t ino, int fd);
void passthru_release(uint64_t ino, bool passthrough);
/* The open's reply was not sent: forget the patch armed for it (the counts stay until
 * passthru_release). */
void passthru_disarm(void);

/* Whether an open may be passthrough now (cheap; the kernel may still refuse one). */
bool passthru_on(void);

struct passthru_stats {
	bool on;          /* the kernel offered it, it was asked for, and no refusal since */
	uint64_t opens;   /* opens served in passthrough */
	uint64_t refused; /* backing files the kernel refused */
};
void passthru_stats(struct passthru_stats *st);

#endif
