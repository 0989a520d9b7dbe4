/* The local object store: see include/reef/odb.h and docs/cache.md.
 *
 * Layout under the cache directory:
 *   git/      a bare repository; its object database holds trees (and small blobs
 *             stored by reefd before blobs were all kept raw; still read)
 *   raw/ab/cdef…  blobs, stored as plain files, so that an open can hand the file itself
 *             to the kernel (FUSE passthrough) and a read at any offset is a pread
 *   lfs/ab/cdef…  Git LFS objects by sha256, stored the same way as raw blobs
 *   tmp/      downloads in progress, named <pid>-<seq>; renamed into raw/ or lfs/ only
 *             once verified
 *
 * A raw file carries a fixed modification time set after verification, its stamp:
 * - ODB_RAW_STAMP (nanoseconds 0): verified and synced to disk (objects of at least
 *   ODB_RAW_THRESHOLD bytes, and LFS objects);
 * - ODB_RAW_FRESH with this process's random session in the nanoseconds: verified by
 *   this process and not synced (small blobs: a sync each would cost more than the
 *   download). After a crash such a file may hold anything; it is another session's
 *   then, so the next process hashes it again at its first open (at most 1 MiB) and
 *   takes it as its own once it matches.
 * Any write to the file changes its mtime, so odb_blob_open re-hashes a raw file whose
 * stamp is gone and discards it when it no longer matches its name: a cached object that
 * was damaged on disk is never served. */
#include "reef/odb.h"

#include <dirent.h>
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <git2.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "reef/buf.h"
#include "reef/hash.h"
#include "reef/util.h"

/* 2001-09-09T01:46:40Z: an mtime no editor or download produces by accident. */
#define ODB_RAW_STAMP ((time_t)1000000000)
/* The second after it: an unsynced blob verified by the session in its nanoseconds. */
#define ODB_RAW_FRESH (ODB_RAW_STAMP + 1)
#define ODB_TREE_MAX  ((size_t)1 << 20) /* entries per tree object */
#define ODB_IO_CHUNK  ((size_t)1 << 16)

struct odb {
	char *dir;
	char tmpdir[4096]; /* dir/tmp */
	git_odb *gitodb;
	pthread_mutex_t lock; /* guards the counters below and the tmp sequence */
	bool counted;         /* usage walked from disk once; maintained since */
	uint64_t bytes, objects;
	uint64_t seq;
	long session;      /* 1..999999999: the nanoseconds of this process's fresh stamps */
	uint32_t made[16]; /* fan-out directories known to exist: raw/ 0..255, lfs/ 256.. */
};

struct odb_writer {
	struct odb *o;
	char oid[41];
	uint64_t size; /* expected size, or UINT64_MAX when the caller does not know it */
	uint64_t written;
	struct hash_ctx *hash; /* NULL when the size is unknown: hashed at commit */
	int fd;                /* the temp file */
	char tmp[4096];
};

struct odb_blob {
	int fd;
	char *mem;
	uint64_t size;
};

static pthread_once_t odb_git_once = PTHREAD_ONCE_INIT;

static void odb_git_init(void)
{
	git_libgit2_init();
	/* every blob read out of the ODB is hashed again here (OpenSSL's SHA-1, several
	 * times faster than libgit2's collision-detecting one): a second pass inside
	 * libgit2 would double the cost of each small read */
	git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0);
}

static int odb_git_err(int r)
{
	switch (r) {
	case GIT_ENOTFOUND:
		return -ENOENT;
	case GIT_EEXISTS:
		return -EEXIST;
	case GIT_EBUFS:
		return -ENOBUFS;
	default:
		return -EIO;
	}
}

static int odb_mkdir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* The stamp a verified raw file takes: lasting (synced) or this session's. */
static struct timespec odb_stamp(const struct odb *o, bool lasting)
{
	if (lasting)
		return (struct timespec){.tv_sec = ODB_RAW_STAMP};
	return (struct timespec){.tv_sec = ODB_RAW_FRESH, .tv_nsec = o->session};
}

/* A filesystem that keeps no nanoseconds never shows this session's stamp: its small
 * blobs are hashed at every open, which is correct, only slower. */
static bool odb_stamp_ok(const struct odb *o, const struct stat *st)
{
	if (st->st_mtim.tv_sec == ODB_RAW_STAMP)
		return st->st_mtim.tv_nsec == 0;
	return st->st_mtim.tv_sec == ODB_RAW_FRESH && st->st_mtim.tv_nsec == o->session;
}

/* The bit of oid's fan-out directory in o->made. */
static unsigned odb_fanout_bit(bool lfs, const char *oid)
{
	unsigned v = 0;

	for (int i = 0; i < 2; i++) {
		char ch = oid[i];

		v = v * 16 + (unsigned)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
	}
	return v + (lfs ? 256 : 0);
}

static void odb_fanout_forget(struct odb *o, bool lfs, const char *oid)
{
	unsigned v = odb_fanout_bit(lfs, oid);

	__atomic_fetch_and(&o->made[v / 32], ~((uint32_t)1 << (v % 32)), __ATOMIC_RELAXED);
}

/* raw/ab or lfs/ab for oid, made once per process: a mkdir per stored blob was a
 * system call per file of a cold read. */
static int odb_fanout(struct odb *o, bool lfs, const char *oid)
{
	char dir[4096];
	unsigned v = odb_fanout_bit(lfs, oid);
	uint32_t bit;
	int r;

	bit = (uint32_t)1 << (v % 32);
	if (__atomic_load_n(&o->made[v / 32], __ATOMIC_RELAXED) & bit)
		return 0;
	snprintf(dir, sizeof(dir), "%s/%s/%.2s", o->dir, lfs ? "lfs" : "raw", oid);
	r = odb_mkdir(dir);
	if (r == 0)
		__atomic_fetch_or(&o->made[v / 32], bit, __ATOMIC_RELAXED);
	return r;
}

static bool odb_oid_valid(const char *oid)
{
	return oid && hash_is_hex(oid, HASH_SHA1_HEX);
}

static int odb_raw_path(const struct odb *o, const char *oid, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/raw/%.2s/%s", o->dir, oid, oid + 2);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int odb_lfs_path(const struct odb *o, const char *oid, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/lfs/%.2s/%s", o->dir, oid, oid + 2);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int odb_loose_path(const struct odb *o, const char *oid, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/git/objects/%.2s/%s", o->dir, oid, oid + 2);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static void odb_count(struct odb *o, uint64_t bytes)
{
	pthread_mutex_lock(&o->lock);
	o->bytes += bytes;
	o->objects++;
	pthread_mutex_unlock(&o->lock);
}

static void odb_uncount(struct odb *o, uint64_t bytes)
{
	pthread_mutex_lock(&o->lock);
	o->bytes -= bytes < o->bytes ? bytes : o->bytes;
	o->objects -= o->objects ? 1 : 0;
	pthread_mutex_unlock(&o->lock);
}

static int odb_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* A temp file (or a pack's directory, fs/pack.c) left by a process that no longer runs
 * is a dead download: remove it. */
static void odb_tmp_sweep(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		long pid = strtol(de->d_name, &end, 10);

		if (de->d_name[0] == '.' || *end != '-')
			continue;
		if (pid > 0 && (pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) < 0 && (errno == EISDIR || errno == EPERM)) {
			char path[4352];

			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			nftw(path, odb_rm_one, 8, FTW_DEPTH | FTW_PHYS);
		}
	}
	closedir(d);
}

int odb_open(struct odb **out, const char *cache_dir)
{
	struct odb *o;
	git_repository *repo = NULL;
	char path[4096];
	int r;

	*out = NULL;
	pthread_once(&odb_git_once, odb_git_init);
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	pthread_mutex_init(&o->lock, NULL);
	o->dir = strdup(cache_dir);
	if (!o->dir) {
		r = -ENOMEM;
		goto out;
	}
	snprintf(o->tmpdir, sizeof(o->tmpdir), "%s/tmp", o->dir);
	{
		uint32_t rnd = 0;

		if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL);
		o->session = 1 + (long)(rnd % 999999999u);
	}
	r = odb_mkdir(cache_dir);
	static const char *const subdirs[] = {"raw", "tmp", "lfs"};
	for (size_t i = 0; r == 0 && i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", cache_dir, subdirs[i]);
		r = odb_mkdir(path);
	}
	if (r < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/tmp", cache_dir);
	odb_tmp_sweep(path);
	snprintf(path, sizeof(path), "%s/git", cache_dir);
	if (git_repository_open_bare(&repo, path) < 0 && git_repository_init(&repo, path, 1) < 0) {
		r = -EIO;
		goto out;
	}
	if (git_repository_odb(&o->gitodb, repo) < 0) {
		r = -EIO;
		goto out;
	}
	*out = o;
	o = NULL;
out:
	git_repository_free(repo);
	odb_close(o);
	return r;
}

void odb_close(struct odb *o)
{
	if (!o)
		return;
	git_odb_free(o->gitodb);
	pthread_mutex_destroy(&o->lock);
	free(o->dir);
	free(o);
}

bool odb_blob_has(struct odb *o, const char *oid)
{
	char path[4096];
	git_oid id;

	if (!odb_oid_valid(oid))
		return false;
	if (odb_raw_path(o, oid, path, sizeof(path)) == 0 && access(path, F_OK) == 0)
		return true;
	if (git_oid_fromstr(&id, oid) < 0)
		return false;
	return git_odb_exists_ext(o->gitodb, &id, GIT_ODB_LOOKUP_NO_REFRESH) == 1;
}

/* Hashes a whole file as a git blob (lfs false) or as an LFS object (plain SHA-256). */
static int odb_hash_fd_kind(int fd, uint64_t size, bool lfs, char *hex)
{
	struct hash_ctx *h = NULL;
	uint8_t bin[HASH_SHA256_LEN];
	char *chunk = malloc(ODB_IO_CHUNK);
	uint64_t off = 0;
	int r;

	if (!chunk)
		return -ENOMEM;
	r = lfs ? hash_new(&h, HASH_SHA256) : hash_git_begin(&h, "blob", size);
	while (r == 0 && off < size) {
		size_t want = size - off < ODB_IO_CHUNK ? (size_t)(size - off) : ODB_IO_CHUNK;
		ssize_t got = pread(fd, chunk, want, (off_t)off);

		if (got < 0)
			r = errno == EINTR ? 0 : -errno;
		else if (got == 0)
			r = -EIO; /* shrank under us */
		else {
			r = hash_update(h, chunk, (size_t)got);
			off += (uint64_t)got;
		}
	}
	if (r == 0)
		r = hash_final(h, bin);
	if (r == 0)
		hash_hex(hex, bin, lfs ? HASH_SHA256_LEN : HASH_SHA1_LEN);
	hash_free(h);
	free(chunk);
	return r;
}

static int odb_hash_fd(int fd, uint64_t size, char hex[41])
{
	return odb_hash_fd_kind(fd, size, false, hex);
}

int odb_writer_new(struct odb_writer **out, struct odb *o, const char *oid, uint64_t size)
{
	struct odb_writer *w;
	int r = 0;

	*out = NULL;
	if (!odb_oid_valid(oid))
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->o = o;
	w->fd = -1;
	w->size = size;
	memcpy(w->oid, oid, 41);
	if (size != ODB_SIZE_UNKNOWN) {
		r = hash_git_begin(&w->hash, "blob", size);
		if (r < 0)
			goto out;
	}
	r = odb_tmp_new(o, w->tmp, sizeof(w->tmp), &w->fd);
	if (r < 0)
		goto out;
	*out = w;
	w = NULL;
out:
	odb_writer_abort(w);
	return r;
}

int odb_writer_write(struct odb_writer *w, const void *data, size_t len)
{
	int r;

	if (len > ODB_BLOB_MAX - w->written)
		return -EFBIG;
	if (w->size != ODB_SIZE_UNKNOWN && len > w->size - w->written)
		return -EIO; /* more bytes than the blob has: wrong content */
	if (w->hash) {
		r = hash_update(w->hash, data, len);
		if (r < 0)
			return r;
	}
	r = fd_write_all(w->fd, data, len);
	if (r < 0)
		return r;
	w->written += len;
	return 0;
}

static int odb_read_fd(int fd, char *out, size_t len);

/* Reads a loose blob as earlier reefds wrote small blobs (a zlib stream of stored blocks,
 * no deflate) into mem; -EAGAIN when the file is anything else (compressed by git or an
 * older reefd still): libgit2 reads those.
 * The content is verified by the caller's hash, so the adler32 is not checked. */
static int odb_stored_read(struct odb *o, const char *oid, char **mem, size_t *len)
{
	char path[4096];
	uint8_t *f = NULL;
	char *b = NULL;
	size_t at = 2, fill = 0, want = 0;
	struct stat st;
	bool hdr = true, last = false;
	char head[40];
	size_t headn = 0;
	int fd, r;

	r = odb_loose_path(o, oid, path, sizeof(path));
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ENOENT : -EAGAIN;
	if (fstat(fd, &st) < 0 || st.st_size < 11 ||
	    (uint64_t)st.st_size > ODB_RAW_THRESHOLD + 4096) {
		close(fd);
		return -EAGAIN;
	}
	f = malloc((size_t)st.st_size);
	r = f ? odb_read_fd(fd, (char *)f, (size_t)st.st_size) : -ENOMEM;
	close(fd);
	if (r < 0)
		goto out;
	r = -EAGAIN;
	if (f[0] != 0x78 || f[1] != 0x01)
		goto out;
	while (!last) {
		size_t n, i = 0;

		if (at + 5 > (size_t)st.st_size || (f[at] & 0xfe) != 0)
			goto out; /* not a stored block */
		last = f[at] & 1;
		n = (size_t)f[at + 1] | (size_t)f[at + 2] << 8;
		if ((n ^ ((size_t)f[at + 3] | (size_t)f[at + 4] << 8)) != 0xffff)
			goto out;
		at += 5;
		if (n > (size_t)st.st_size - at)
			goto out;
		while (hdr && i < n) {
			if (headn == sizeof(head))
				goto out;
			head[headn++] = (char)f[at + i++];
			if (head[headn - 1] == '\0') {
				char *end;
				unsigned long long v;

				hdr = false;
				if (strncmp(head, "blob ", 5) != 0 || head[5] < '0' ||
				    head[5] > '9')
					goto out;
				errno = 0;
				v = strtoull(head + 5, &end, 10);
				if (errno || *end || v >= ODB_RAW_THRESHOLD)
					goto out;
				want = (size_t)v;
				b = malloc(want + 1);
				if (!b) {
					r = -ENOMEM;
					goto out;
				}
			}
		}
		if (n - i > want - fill)
			goto out;
		if (n > i) {
			memcpy(b + fill, f + at + i, n - i);
			fill += n - i;
		}
		at += n;
	}
	if (hdr || fill != want || at + 4 != (size_t)st.st_size)
		goto out;
	*mem = b;
	*len = want;
	b = NULL;
	r = 0;
out:
	free(b);
	free(f);
	(void)o;
	return r;
}

/* Stores a verified small blob in the git ODB (libgit2 computes the id again). */
static int odb_gitodb_put(struct odb *o, const char *oid, const void *data, size_t len,
                          git_object_t type)
{
	git_oid want, got;
	char path[4096];
	struct stat st;
	int r;

	if (git_oid_fromstr(&want, oid) < 0)
		return -EINVAL;
	if (git_odb_exists_ext(o->gitodb, &want, GIT_ODB_LOOKUP_NO_REFRESH) == 1)
		return 0;
	r = git_odb_write(&got, o->gitodb, data, len, type);
	if (r < 0)
		return odb_git_err(r);
	if (!git_oid_equal(&want, &got))
		return -EIO;
	/* count what the compressed loose object takes on disk, as odb_usage's walk does */
	if (odb_loose_path(o, oid, path, sizeof(path)) == 0 && stat(path, &st) == 0)
		len = (size_t)st.st_size;
	odb_count(o, len);
	return 0;
}

/* Makes the verified temp file the raw (or LFS) object, stamped (see the top). */
static int odb_file_publish(struct odb *o, bool lfs, int fd, const char *tmp, const char *oid,
                            uint64_t size)
{
	bool lasting = lfs || size >= ODB_RAW_THRESHOLD;
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, odb_stamp(o, lasting)};
	char path[4096];
	int r;

	r = lfs ? odb_lfs_path(o, oid, path, sizeof(path))
	        : odb_raw_path(o, oid, path, sizeof(path));
	if (r < 0)
		return r;
	r = odb_fanout(o, lfs, oid);
	if (r < 0)
		return r;
	if (fchmod(fd, 0400) < 0 || futimens(fd, ts) < 0 || (lasting && fsync(fd) < 0))
		return -errno;
	r = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
	if (r < 0 && errno == ENOENT) {
		/* its fan-out directory was removed under us (by hand): made again */
		odb_fanout_forget(o, lfs, oid);
		r = odb_fanout(o, lfs, oid);
		if (r < 0)
			return r;
		r = renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE);
	}
	if (r < 0) {
		if (errno == EEXIST) {
			unlink(tmp); /* a concurrent download of the same object won */
			return 0;
		}
		if (errno != EINVAL && errno != ENOSYS)
			return -errno;
		/* a filesystem without RENAME_NOREPLACE */
		if (access(path, F_OK) == 0) {
			unlink(tmp);
			return 0;
		}
		if (rename(tmp, path) < 0)
			return -errno;
	}
	odb_count(o, size);
	return 0;
}

static int odb_raw_publish(struct odb *o, int fd, const char *tmp, const char *oid, uint64_t size)
{
	return odb_file_publish(o, false, fd, tmp, oid, size);
}

static int odb_read_fd(int fd, char *out, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = pread(fd, out + off, len - off, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		off += (size_t)n;
	}
	return 0;
}

/* Unknown size: the bytes sit unverified in the temp file; hash them now. */
static int odb_writer_commit_unsized(struct odb_writer *w)
{
	char hex[41];
	int r;

	r = odb_hash_fd(w->fd, w->written, hex);
	if (r < 0)
		return r;
	if (strcmp(hex, w->oid) != 0)
		return -EIO;
	return odb_raw_publish(w->o, w->fd, w->tmp, w->oid, w->written);
}

int odb_writer_commit(struct odb_writer *w)
{
	uint8_t bin[HASH_SHA1_LEN];
	char hex[41];
	int r;

	if (w->size == ODB_SIZE_UNKNOWN) {
		r = odb_writer_commit_unsized(w);
		goto out;
	}
	if (w->written != w->size) {
		r = -EIO;
		goto out;
	}
	r = hash_final(w->hash, bin);
	if (r < 0)
		goto out;
	hash_hex(hex, bin, HASH_SHA1_LEN);
	if (strcmp(hex, w->oid) != 0) {
		r = -EIO;
		goto out;
	}
	r = odb_raw_publish(w->o, w->fd, w->tmp, w->oid, w->size);
out:
	odb_writer_abort(w);
	return r;
}

void odb_writer_abort(struct odb_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		close(w->fd);
		if (w->tmp[0])
			unlink(w->tmp); /* already gone when published */
	}
	hash_free(w->hash);
	free(w);
}

int odb_tree_put_raw(struct odb *o, const char *oid, const void *data, size_t len)
{
	if (!odb_oid_valid(oid))
		return -EINVAL;
	return odb_gitodb_put(o, oid, data, len, GIT_OBJECT_TREE);
}

const char *odb_tmp_dir(struct odb *o)
{
	return o->tmpdir;
}

static int odb_blob_store(struct odb *o, const char *oid, const void *data, size_t len, bool hashed)
{
	char tmp[4096];
	int fd, r;

	if (!odb_oid_valid(oid))
		return -EINVAL;
	if (!hashed) {
		struct hash_ctx *h;
		uint8_t bin[HASH_SHA1_LEN];
		char hex[41];

		r = hash_git_begin(&h, "blob", len);
		if (r < 0)
			return r;
		r = hash_update(h, data, len);
		if (r == 0)
			r = hash_final(h, bin);
		hash_free(h);
		if (r < 0)
			return r;
		hash_hex(hex, bin, HASH_SHA1_LEN);
		if (strcmp(hex, oid) != 0)
			return -EIO;
	}
	/* verified: written from the caller's buffer as it is */
	r = odb_tmp_new(o, tmp, sizeof(tmp), &fd);
	if (r < 0)
		return r;
	r = fd_write_all(fd, data, len);
	if (r == 0)
		r = odb_raw_publish(o, fd, tmp, oid, len);
	close(fd);
	if (r < 0)
		unlink(tmp);
	return r;
}

int odb_blob_put(struct odb *o, const char *oid, const void *data, size_t len)
{
	return odb_blob_store(o, oid, data, len, false);
}

int odb_blob_put_hashed(struct odb *o, const char *oid, const void *data, size_t len)
{
	return odb_blob_store(o, oid, data, len, true);
}

/* Opens a raw object, re-verifying it when its stamp shows it changed since it was
 * verified. A damaged file is removed: -ENOENT, so the caller fetches it again. */
static int odb_file_open(struct odb *o, bool lfs, const char *oid, struct odb_blob **out)
{
	char path[4096], hex[65];
	struct odb_blob *b;
	struct stat st;
	int fd, r;

	r = lfs ? odb_lfs_path(o, oid, path, sizeof(path))
	        : odb_raw_path(o, oid, path, sizeof(path));
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		r = -EIO;
		goto fail;
	}
	if (!odb_stamp_ok(o, &st)) {
		r = odb_hash_fd_kind(fd, (uint64_t)st.st_size, lfs, hex);
		if (r < 0 || strcmp(hex, oid) != 0) {
			if (unlink(path) == 0)
				odb_uncount(o, (uint64_t)st.st_size);
			r = -ENOENT;
			goto fail;
		}
		struct timespec ts[2] = {
		    {.tv_nsec = UTIME_OMIT},
		    odb_stamp(o, lfs || (uint64_t)st.st_size >= ODB_RAW_THRESHOLD)};
		futimens(fd, ts); /* best effort: a read-only cache re-verifies next time */
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		r = -ENOMEM;
		goto fail;
	}
	b->fd = fd;
	b->size = (uint64_t)st.st_size;
	*out = b;
	return 0;
fail:
	close(fd);
	return r;
}

static int odb_raw_open(struct odb *o, const char *oid, struct odb_blob **out)
{
	return odb_file_open(o, false, oid, out);
}

static int odb_small_open(struct odb *o, const char *oid, struct odb_blob **out)
{
	git_odb_object *obj = NULL;
	struct odb_blob *b = NULL;
	uint8_t bin[HASH_SHA1_LEN];
	struct hash_ctx *h = NULL;
	char hex[41], path[4096];
	char *mem = NULL;
	struct stat st;
	git_oid id;
	size_t len;
	int r;

	if (git_oid_fromstr(&id, oid) < 0)
		return -EINVAL;
	r = odb_stored_read(o, oid, &mem, &len);
	if (r == -ENOENT || r == -ENOMEM)
		return r;
	if (r == 0) {
		r = hash_git_begin(&h, "blob", len);
		if (r == 0)
			r = hash_update(h, mem, len);
		if (r == 0)
			r = hash_final(h, bin);
		hash_free(h);
		h = NULL;
		hash_hex(hex, bin, HASH_SHA1_LEN);
		if (r < 0 || strcmp(hex, oid) != 0) {
			free(mem);
			if (r < 0)
				return r;
			goto corrupt;
		}
		b = calloc(1, sizeof(*b));
		if (!b) {
			free(mem);
			return -ENOMEM;
		}
		b->mem = mem;
		b->fd = -1;
		b->size = len;
		*out = b;
		return 0;
	}
	/* a miss is the common case of a cold read: without NO_REFRESH libgit2 rescans the
	 * pack directory at every one (the cache writes loose objects only) */
	if (git_odb_exists_ext(o->gitodb, &id, GIT_ODB_LOOKUP_NO_REFRESH) != 1)
		return -ENOENT;
	r = git_odb_read(&obj, o->gitodb, &id);
	if (r == GIT_ENOTFOUND)
		return -ENOENT;
	if (r < 0)
		goto corrupt;
	if (git_odb_object_type(obj) != GIT_OBJECT_BLOB) {
		r = -ENOENT; /* a tree's id: there is no blob by that name */
		goto out;
	}
	len = git_odb_object_size(obj);
	r = hash_git_begin(&h, "blob", len);
	if (r == 0)
		r = hash_update(h, git_odb_object_data(obj), len);
	if (r == 0)
		r = hash_final(h, bin);
	hash_free(h);
	if (r < 0)
		goto out;
	hash_hex(hex, bin, HASH_SHA1_LEN);
	if (strcmp(hex, oid) != 0)
		goto corrupt;
	b = calloc(1, sizeof(*b));
	if (!b || !(b->mem = malloc(len + 1))) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(b->mem, git_odb_object_data(obj), len);
	b->fd = -1;
	b->size = len;
	*out = b;
	b = NULL;
	r = 0;
	goto out;
corrupt:
	/* A damaged loose object must not shadow a good copy fetched later. */
	if (odb_loose_path(o, oid, path, sizeof(path)) == 0 && stat(path, &st) == 0 &&
	    unlink(path) == 0)
		odb_uncount(o, (uint64_t)st.st_size);
	r = -ENOENT;
out:
	if (b)
		free(b->mem);
	free(b);
	git_odb_object_free(obj);
	return r;
}

int odb_blob_open(struct odb *o, const char *oid, struct odb_blob **out)
{
	int r;

	*out = NULL;
	if (!odb_oid_valid(oid))
		return -EINVAL;
	r = odb_raw_open(o, oid, out);
	if (r != -ENOENT)
		return r;
	return odb_small_open(o, oid, out);
}

uint64_t odb_blob_size(const struct odb_blob *b)
{
	return b->size;
}

ssize_t odb_blob_pread(struct odb_blob *b, void *buf, size_t n, uint64_t off)
{
	if (off >= b->size)
		return 0;
	if (n > b->size - off)
		n = (size_t)(b->size - off);
	if (b->fd < 0) {
		memcpy(buf, b->mem + off, n);
		return (ssize_t)n;
	}
	for (;;) {
		ssize_t r = pread(b->fd, buf, n, (off_t)off);

		if (r >= 0)
			return r;
		if (errno != EINTR)
			return -errno;
	}
}

int odb_blob_fd(const struct odb_blob *b)
{
	return b->fd;
}

void odb_blob_close(struct odb_blob *b)
{
	if (!b)
		return;
	if (b->fd >= 0)
		close(b->fd);
	free(b->mem);
	free(b);
}

static const char *odb_mode_str(uint32_t mode)
{
	switch (mode) {
	case TREE_MODE_DIR:
		return "40000";
	case TREE_MODE_FILE:
		return "100644";
	case TREE_MODE_EXEC:
		return "100755";
	case TREE_MODE_LINK:
		return "120000";
	case TREE_MODE_SUBMODULE:
		return "160000";
	default:
		return NULL;
	}
}

/* git sorts tree entries by name, comparing a directory's name as if it ended in '/'. */
static int odb_tree_cmp(const void *pa, const void *pb)
{
	const struct tree_entry *a = *(const struct tree_entry *const *)pa;
	const struct tree_entry *b = *(const struct tree_entry *const *)pb;
	size_t la = strlen(a->name), lb = strlen(b->name), n = la < lb ? la : lb;
	int c = memcmp(a->name, b->name, n);
	unsigned char ca, cb;

	if (c)
		return c;
	ca = la > n ? (unsigned char)a->name[n] : (a->mode == TREE_MODE_DIR ? '/' : 0);
	cb = lb > n ? (unsigned char)b->name[n] : (b->mode == TREE_MODE_DIR ? '/' : 0);
	return (int)ca - (int)cb;
}

static bool odb_name_valid(const char *name)
{
	size_t len = strnlen(name, TREE_NAME_MAX + 1);

	return len > 0 && len <= TREE_NAME_MAX && !strchr(name, '/') && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0;
}

static int odb_hex_bin(const char *hex, uint8_t *bin)
{
	git_oid id;

	if (!odb_oid_valid(hex) || git_oid_fromstr(&id, hex) < 0)
		return -EINVAL;
	memcpy(bin, id.id, HASH_SHA1_LEN);
	return 0;
}

int odb_tree_put(struct odb *o, const char *expected_oid, const struct tree_entry *e, size_t n,
                 char out_oid[41])
{
	const struct tree_entry **sorted = NULL;
	struct buf body = BUF_INIT(n * (TREE_NAME_MAX + 32) + 1);
	struct hash_ctx *h = NULL;
	uint8_t bin[HASH_SHA1_LEN];
	char hex[41];
	int r = 0;

	if (n > ODB_TREE_MAX || (expected_oid && !odb_oid_valid(expected_oid)))
		return -EINVAL;
	sorted = calloc(n ? n : 1, sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (!odb_name_valid(e[i].name) || !odb_mode_str(e[i].mode)) {
			r = -EINVAL;
			goto out;
		}
		sorted[i] = &e[i];
	}
	qsort(sorted, n, sizeof(*sorted), odb_tree_cmp);
	for (size_t i = 0; i < n && r == 0; i++) {
		if (i && odb_tree_cmp(&sorted[i - 1], &sorted[i]) == 0) {
			r = -EINVAL; /* duplicate name */
			break;
		}
		r = buf_printf(&body, "%s %s", odb_mode_str(sorted[i]->mode), sorted[i]->name);
		if (r == 0)
			r = buf_append(&body, "", 1);
		if (r == 0)
			r = odb_hex_bin(sorted[i]->oid, bin);
		if (r == 0)
			r = buf_append(&body, bin, HASH_SHA1_LEN);
	}
	if (r < 0)
		goto out;
	r = hash_git_begin(&h, "tree", body.len);
	if (r == 0)
		r = hash_update(h, body.data ? body.data : "", body.len);
	if (r == 0)
		r = hash_final(h, bin);
	if (r < 0)
		goto out;
	hash_hex(hex, bin, HASH_SHA1_LEN);
	if (expected_oid && strcmp(hex, expected_oid) != 0) {
		r = -EIO;
		goto out;
	}
	r = odb_gitodb_put(o, hex, body.data ? body.data : "", body.len, GIT_OBJECT_TREE);
	if (r == 0)
		memcpy(out_oid, hex, 41);
out:
	hash_free(h);
	buf_free(&body);
	free(sorted);
	return r;
}

/* Adds up the files of one two-level fan-out directory (raw/ or git/objects/). */
static void odb_walk(const char *top, uint64_t *bytes, uint64_t *objects)
{
	DIR *d = opendir(top);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		DIR *sub;
		struct dirent *f;
		int fd;

		if (strlen(de->d_name) != 2 || !hash_is_hex(de->d_name, 2))
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || !(sub = fdopendir(fd))) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while ((f = readdir(sub))) {
			struct stat st;

			if (f->d_name[0] == '.' || fstatat(dirfd(sub), f->d_name, &st, 0) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			*bytes += (uint64_t)st.st_size;
			(*objects)++;
		}
		closedir(sub);
	}
	closedir(d);
}

int odb_usage(struct odb *o, uint64_t *bytes, uint64_t *objects)
{
	pthread_mutex_lock(&o->lock);
	if (!o->counted) {
		char path[4096];
		uint64_t b = 0, n = 0;

		snprintf(path, sizeof(path), "%s/raw", o->dir);
		odb_walk(path, &b, &n);
		snprintf(path, sizeof(path), "%s/git/objects", o->dir);
		odb_walk(path, &b, &n);
		snprintf(path, sizeof(path), "%s/lfs", o->dir);
		odb_walk(path, &b, &n);
		/* objects stored since open were counted live and are on disk too */
		o->bytes = b;
		o->objects = n;
		o->counted = true;
	}
	*bytes = o->bytes;
	*objects = o->objects;
	pthread_mutex_unlock(&o->lock);
	return 0;
}

static bool odb_lfs_oid_valid(const char *oid)
{
	return oid && hash_is_hex(oid, HASH_SHA256_HEX);
}

bool odb_lfs_has(struct odb *o, const char *oid)
{
	char path[4096];

	return odb_lfs_oid_valid(oid) && odb_lfs_path(o, oid, path, sizeof(path)) == 0 &&
	       access(path, F_OK) == 0;
}

int odb_lfs_open(struct odb *o, const char *oid, struct odb_blob **out)
{
	*out = NULL;
	if (!odb_lfs_oid_valid(oid))
		return -EINVAL;
	return odb_file_open(o, true, oid, out);
}

int odb_tmp_new(struct odb *o, char *path, size_t len, int *fd)
{
	uint64_t seq;
	int n;

	pthread_mutex_lock(&o->lock);
	seq = ++o->seq;
	pthread_mutex_unlock(&o->lock);
	n = snprintf(path, len, "%s/tmp/%ld-%" PRIu64, o->dir, (long)getpid(), seq);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	*fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (*fd < 0) {
		path[0] = '\0';
		return -errno;
	}
	return 0;
}

int odb_publish(struct odb *o, enum odb_kind kind, const char *oid, int fd, const char *tmp,
                uint64_t size)
{
	struct stat st;

	if (kind == ODB_KIND_LFS ? !odb_lfs_oid_valid(oid) : !odb_oid_valid(oid))
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != size)
		return -EIO;
	return odb_file_publish(o, kind == ODB_KIND_LFS, fd, tmp, oid, size);
}

int odb_remove(struct odb *o, enum odb_kind kind, const char *oid, uint64_t *freed)
{
	char path[4096];
	struct stat st;
	int r = -ENOENT;

	*freed = 0;
	if (kind == ODB_KIND_LFS) {
		if (!odb_lfs_oid_valid(oid))
			return -EINVAL;
		if (odb_lfs_path(o, oid, path, sizeof(path)) == 0 && stat(path, &st) == 0 &&
		    unlink(path) == 0) {
			*freed = (uint64_t)st.st_size;
			odb_uncount(o, *freed);
			r = 0;
		}
		return r;
	}
	if (!odb_oid_valid(oid))
		return -EINVAL;
	if (odb_raw_path(o, oid, path, sizeof(path)) == 0 && stat(path, &st) == 0 &&
	    unlink(path) == 0) {
		*freed += (uint64_t)st.st_size;
		odb_uncount(o, (uint64_t)st.st_size);
		r = 0;
	}
	/* only a loose object: objects in packs (none are written here) stay */
	if (odb_loose_path(o, oid, path, sizeof(path)) == 0 && stat(path, &st) == 0 &&
	    unlink(path) == 0) {
		*freed += (uint64_t)st.st_size;
		odb_uncount(o, (uint64_t)st.st_size);
		r = 0;
	}
	return r;
}

int odb_disk_size(struct odb *o, enum odb_kind kind, const char *oid, uint64_t *bytes)
{
	char path[4096];
	struct stat st;

	if (kind == ODB_KIND_LFS) {
		if (!odb_lfs_oid_valid(oid) || odb_lfs_path(o, oid, path, sizeof(path)) < 0)
			return -EINVAL;
	} else {
		if (!odb_oid_valid(oid) || odb_raw_path(o, oid, path, sizeof(path)) < 0)
			return -EINVAL;
		if (stat(path, &st) == 0) {
			*bytes = (uint64_t)st.st_size;
			return 0;
		}
		odb_loose_path(o, oid, path, sizeof(path));
	}
	if (stat(path, &st) < 0)
		return -errno;
	*bytes = (uint64_t)st.st_size;
	return 0;
}

/* Visits every file of one fan-out directory; blobs_only asks libgit2 for the type of
 * each loose object (a header read) and skips trees. */
static int odb_visit(struct odb *o, const char *top, enum odb_kind kind, bool loose,
                     int (*fn)(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes),
                     void *arg)
{
	DIR *d = opendir(top);
	struct dirent *de;
	int r = 0;

	if (!d)
		return 0;
	while (r == 0 && (de = readdir(d))) {
		DIR *sub;
		struct dirent *f;
		int fd;

		if (strlen(de->d_name) != 2 || !hash_is_hex(de->d_name, 2))
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 || !(sub = fdopendir(fd))) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while (r == 0 && (f = readdir(sub))) {
			size_t want = kind == ODB_KIND_LFS ? HASH_SHA256_HEX : HASH_SHA1_HEX;
			char oid[65];
			struct stat st;

			if (strlen(f->d_name) != want - 2 || !hash_is_hex(f->d_name, want - 2) ||
			    fstatat(dirfd(sub), f->d_name, &st, 0) < 0 || !S_ISREG(st.st_mode))
				continue;
			snprintf(oid, sizeof(oid), "%s%s", de->d_name, f->d_name);
			if (loose) {
				git_oid id;
				size_t len;
				git_object_t type;

				if (git_oid_fromstr(&id, oid) < 0 ||
				    git_odb_read_header(&len, &type, o->gitodb, &id) < 0 ||
				    type != GIT_OBJECT_BLOB)
					continue;
			}
			r = fn(arg, kind, oid, (uint64_t)st.st_size);
		}
		closedir(sub);
	}
	closedir(d);
	return r;
}

int odb_foreach(struct odb *o,
                int (*fn)(void *arg, enum odb_kind kind, const char *oid, uint64_t bytes),
                void *arg)
{
	char path[4096];
	int r;

	snprintf(path, sizeof(path), "%s/raw", o->dir);
	r = odb_visit(o, path, ODB_KIND_BLOB, false, fn, arg);
	if (r == 0) {
		snprintf(path, sizeof(path), "%s/lfs", o->dir);
		r = odb_visit(o, path, ODB_KIND_LFS, false, fn, arg);
	}
	if (r == 0) {
		snprintf(path, sizeof(path), "%s/git/objects", o->dir);
		r = odb_visit(o, path, ODB_KIND_BLOB, true, fn, arg);
	}
	return r;
}
