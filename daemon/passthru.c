/* FUSE passthrough for complete cached objects: see daemon/passthru.h. */
#define FUSE_USE_VERSION 312

#include "passthru.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "reef/log.h"

/* Linux 6.9's protocol 7.40, newer than the headers of Debian 12's libc and libfuse. */
#ifndef FUSE_PASSTHROUGH
#define FUSE_PASSTHROUGH (1ULL << 37)
#endif
#ifndef FOPEN_PASSTHROUGH
#define FOPEN_PASSTHROUGH (1u << 7)
#endif
#ifndef FUSE_DEV_IOC_BACKING_OPEN
struct fuse_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define FUSE_DEV_IOC_BACKING_OPEN  _IOW(FUSE_DEV_IOC_MAGIC, 1, struct fuse_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif
/* In 7.40 the init reply's first unused word is max_stack_depth, and the open reply's
 * padding is the backing id. The cache lives on a plain filesystem (stack depth 0), so
 * reef's mount needs a depth of 1. */
static_assert(sizeof(struct fuse_init_out) == 64, "fuse_init_out of protocol 7.36+");
static_assert(offsetof(struct fuse_init_out, unused) == 36, "max_stack_depth's place");
static_assert(sizeof(struct fuse_open_out) == 16, "fuse_open_out");
#define PT_STACK_DEPTH 1

#define PT_BUCKETS 64

/* The opens of one inode that reefd has answered and not yet seen released. */
struct pt_inode {
	struct pt_inode *next;
	uint64_t ino;
	unsigned cached, pass;
	int backing; /* > 0 while pass > 0 */
};

static struct {
	int fd;                  /* the session's /dev/fuse descriptor */
	bool offered;            /* the kernel's INIT offers it */
	uint64_t init_unique;    /* the INIT request, until answered */
	bool on;                 /* atomic */
	uint64_t opens, refused; /* atomic */
	pthread_mutex_t lock;
	struct pt_inode *tab[PT_BUCKETS];
} pt = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

/* libfuse receives a request and runs its handler on one thread: the open handler learns
 * its request's id here, and the reply it sends next is the one to amend. */
static __thread uint64_t tl_unique;
static __thread struct {
	uint64_t unique;
	int backing;
	bool armed;
} tl_arm;

static ssize_t pt_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t r = read(fd, buf, len);
	const struct fuse_in_header *h = buf;

	if (r < (ssize_t)sizeof(*h))
		return r;
	tl_unique = h->unique;
	if (h->opcode == FUSE_INIT && (size_t)r >= sizeof(*h) + sizeof(struct fuse_init_in)) {
		struct fuse_init_in in;

		memcpy(&in, (const char *)buf + sizeof(*h), sizeof(in));
		pt.offered = (in.flags & FUSE_INIT_EXT) && (in.flags2 & (FUSE_PASSTHROUGH >> 32));
		pt.init_unique = h->unique;
	}
	return r;
}

static ssize_t pt_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	const struct fuse_out_header *h;

	if (count != 2 || iov[0].iov_len != sizeof(*h))
		return writev(fd, iov, count);
	h = iov[0].iov_base;
	if (tl_arm.armed && h->unique == tl_arm.unique) {
		tl_arm.armed = false;
		if (h->error == 0 && iov[1].iov_len == sizeof(struct fuse_open_out)) {
			struct fuse_open_out o;
			struct iovec v[2] = {iov[0], {&o, sizeof(o)}};

			memcpy(&o, iov[1].iov_base, sizeof(o));
			/* the kernel accepts no page-cache flag beside passthrough */
			o.open_flags =
			    (o.open_flags & ~(uint32_t)FOPEN_KEEP_CACHE) | FOPEN_PASSTHROUGH;
			o.padding = (uint32_t)tl_arm.backing;
			return writev(fd, v, 2);
		}
	} else if (pt.init_unique && h->unique == pt.init_unique) {
		pt.init_unique = 0;
		if (h->error == 0 && pt.offered && iov[1].iov_len == sizeof(struct fuse_init_out)) {
			struct fuse_init_out o;
			struct iovec v[2] = {iov[0], {&o, sizeof(o)}};

			memcpy(&o, iov[1].iov_base, sizeof(o));
			if (!(o.flags & FUSE_WRITEBACK_CACHE)) {
				o.flags |= FUSE_INIT_EXT;
				o.flags2 |= (uint32_t)(FUSE_PASSTHROUGH >> 32);
				o.unused[0] = PT_STACK_DEPTH;
				__atomic_store_n(&pt.on, true, __ATOMIC_RELEASE);
				return writev(fd, v, 2);
			}
		}
	}
	return writev(fd, iov, count);
}

static ssize_t pt_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
                              unsigned int flags, void *userdata)
{
	return splice(fdin, offin, fdout, offout, len, flags);
}

int passthru_attach(struct fuse_session *se, bool want)
{
	const struct fuse_custom_io io = {
	    .writev = pt_writev,
	    .read = pt_read,
	    .splice_send = pt_splice_send,
	};

	/* without the hooks the init reply asks for nothing and pt.on stays false */
	if (!want)
		return 0;
	pt.fd = fuse_session_fd(se);
	return fuse_session_custom_io(se, &io, pt.fd) != 0 ? -EIO : 0;
}

static struct pt_inode **pt_slot(uint64_t ino)
{
	struct pt_inode **pp = &pt.tab[(ino * 11400714819323198485ULL) >> 58];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

bool passthru_open(uint64_t ino, int fd)
{
	struct pt_inode **pp, *e;
	bool use = false;
	int backing = 0;

	pthread_mutex_lock(&pt.lock);
	pp = pt_slot(ino);
	if (!*pp && (*pp = calloc(1, sizeof(**pp))))
		(*pp)->ino = ino;
	e = *pp;
	if (!e) {
		/* not counted: passthru_release finds nothing to release */
		pthread_mutex_unlock(&pt.lock);
		return false;
	}
	if (fd >= 0 && e->cached == 0 && __atomic_load_n(&pt.on, __ATOMIC_ACQUIRE)) {
		if (e->pass == 0) {
			struct fuse_backing_map m = {.fd = fd};
			int id = ioctl(pt.fd, FUSE_DEV_IOC_BACKING_OPEN, &m);

			if (id > 0) {
				e->backing = id;
			} else {
				int err = errno;

				__atomic_add_fetch(&pt.refused, 1, __ATOMIC_RELAXED);
				if (err == EPERM || err == ENOTTY || err == EOPNOTSUPP) {
					/* no privilege, or no support: it will not work later
					 * either */
					__atomic_store_n(&pt.on, false, __ATOMIC_RELEASE);
					log_info("passthrough off: the kernel refuses backing "
					         "files (%s)",
					         strerror(err));
				} else {
					log_warn("passthrough refused for inode %" PRIu64 ": %s",
					         ino, strerror(err));
				}
			}
		}
		if (e->backing > 0) {
			e->pass++;
			backing = e->backing;
			use = true;
		}
	}
	if (!use)
		e->cached++;
	pthread_mutex_unlock(&pt.lock);
	if (use) {
		tl_arm.unique = tl_unique;
		tl_arm.backing = backing;
		tl_arm.armed = true;
		__atomic_add_fetch(&pt.opens, 1, __ATOMIC_RELAXED);
	}
	return use;
}

void passthru_disarm(void)
{
	tl_arm.armed = false;
}

void passthru_release(uint64_t ino, bool passthrough)
{
	struct pt_inode **pp, *e;

	pthread_mutex_lock(&pt.lock);
	pp = pt_slot(ino);
	e = *pp;
	if (!e) {
		pthread_mutex_unlock(&pt.lock);
		return;
	}
	if (passthrough && e->pass > 0) {
		if (--e->pass == 0) {
			uint32_t id = (uint32_t)e->backing;

			/* the kernel released its files before telling us: nobody uses the id */
			if (ioctl(pt.fd, FUSE_DEV_IOC_BACKING_CLOSE, &id) != 0)
				log_warn("cannot close backing file %u: %s", id, strerror(errno));
			e->backing = 0;
		}
	} else if (!passthrough && e->cached > 0) {
		e->cached--;
	}
	if (!e->pass && !e->cached) {
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&pt.lock);
}

bool passthru_on(void)
{
	return __atomic_load_n(&pt.on, __ATOMIC_ACQUIRE);
}

void passthru_stats(struct passthru_stats *st)
{
	st->on = __atomic_load_n(&pt.on, __ATOMIC_ACQUIRE);
	st->opens = __atomic_load_n(&pt.opens, __ATOMIC_RELAXED);
	st->refused = __atomic_load_n(&pt.refused, __ATOMIC_RELAXED);
}
