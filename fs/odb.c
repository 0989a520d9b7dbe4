/* The local object store: see include/reef/odb.h and docs/cache.md.
 *
 * Layout under the cache directory:
 *   git/      a bare repository; its object database holds trees and small blobs
 *   raw/ab/cdef…  blobs of at least ODB_RAW_THRESHOLD bytes, stored as plain files
 *   lfs/ab/cdef…  Git LFS objects by sha256, stored the same way as raw blobs
 *   tmp/      downloads in progress, named <pid>-<seq>; renamed into raw/ or lfs/ only
 *             once verified
 *
 * A raw file carries a fixed modification time (ODB_RAW_STAMP) set after verification.
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
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "reef/buf.h"
#include "reef/hash.h"

/* 2001-09-09T01:46:40Z: an mtime no editor or download produces by accident. */
#define ODB_RAW_STAMP ((time_t)1000000000)
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
};

struct odb_writer {
	struct odb *o;
	char oid[41];
	uint64_t size; /* expected size, or UINT64_MAX when the caller does not know it */
	uint64_t written;
	struct hash_ctx *hash; /* NULL when the size is unknown: hashed at commit */
	struct buf mem;        /* small blobs of known size */
	int fd;                /* temp file for large or unknown-size blobs, else -1 */
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
	buf_init(&w->mem, size < ODB_RAW_THRESHOLD ? (size_t)size + 1 : 1);
	if (size != ODB_SIZE_UNKNOWN) {
		r = hash_git_begin(&w->hash, "blob", size);
		if (r < 0)
			goto out;
	}
	if (size >= ODB_RAW_THRESHOLD) {
		uint64_t seq;
		int n;

		pthread_mutex_lock(&o->lock);
		seq = ++o->seq;
		pthread_mutex_unlock(&o->lock);
		n = snprintf(w->tmp, sizeof(w->tmp), "%s/tmp/%ld-%" PRIu64, o->dir, (long)getpid(),
		             seq);
		if (n < 0 || (size_t)n >= sizeof(w->tmp)) {
			r = -ENAMETOOLONG;
			goto out;
		}
		w->fd = open(w->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (w->fd < 0) {
			r = -errno;
			w->tmp[0] = '\0';
			goto out;
		}
	}
	*out = w;
	w = NULL;
out:
	odb_writer_abort(w);
	return r;
}

static int odb_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
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
	if (w->fd >= 0)
		r = odb_write_all(w->fd, data, len);
	else
		r = buf_append(&w->mem, data, len);
	if (r < 0)
		return r == -EFBIG ? -EIO : r;
	w->written += len;
	return 0;
}

#define ODB_STORED_BLOCK ((size_t)65535)
#define ODB_IOV_MAX      1024 /* POSIX IOV_MAX on Linux */

static int odb_read_fd(int fd, char *out, size_t len);

/* writev(2) of every byte of iov[0..n), resumed after short writes; iov is consumed. */
static int odb_writev_all(int fd, struct iovec *iov, size_t n)
{
	while (n) {
		int k = n < ODB_IOV_MAX ? (int)n : ODB_IOV_MAX;
		ssize_t w = writev(fd, iov, k);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n && w) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Writes a loose blob object as a zlib stream of stored (uncompressed) blocks: a valid
 * loose object to git and libgit2, made without libgit2's collision-detecting SHA-1
 * (the caller verified the id: OpenSSL's SHA-1, or a pack's indexer) and without
 * deflate, which together were three quarters of reefd's CPU on a cold read of many
 * small files. odb_stored_read reads it back without inflate. The file is complete
 * before it is renamed into place. */
static int odb_loose_put(struct odb *o, const char *oid, const void *data, size_t len)
{
	char path[4096], dir[4096], tmp[4096], hdr[32];
	size_t hlen, total, blocks, left, nv = 0, at = 0, bytes;
	const uint8_t *src[2];
	size_t srclen[2];
	uint32_t adler = 1;
	uint8_t *meta;   /* zlib header, block headers, adler: the bytes not the caller's */
	struct iovec *v; /* the file: meta's pieces around the header's and data's bytes */
	int fd, r;

	hlen = (size_t)snprintf(hdr, sizeof(hdr), "blob %zu", len) + 1;
	total = hlen + len;
	blocks = total / ODB_STORED_BLOCK + 1;
	r = odb_loose_path(o, oid, path, sizeof(path));
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/git/objects/%.2s", o->dir, oid);
	r = odb_mkdir(dir);
	if (r < 0)
		return r;
	meta = malloc(2 + blocks * 5 + 4);
	v = malloc((blocks * 3 + 2) * sizeof(*v));
	if (!meta || !v) {
		r = -ENOMEM;
		goto out;
	}
	meta[at++] = 0x78; /* deflate, 32 KiB window */
	meta[at++] = 0x01; /* no preset dictionary, check bits: 0x7801 % 31 == 0 */
	src[0] = (const uint8_t *)hdr;
	srclen[0] = hlen;
	src[1] = data;
	srclen[1] = len;
	/* zlib's Adler-32: 3.5 instructions a byte, a plain loop here took 6 */
	adler = (uint32_t)adler32_z(adler, src[0], srclen[0]);
	adler = (uint32_t)adler32_z(adler, src[1], srclen[1]);
	left = total; /* at least the header's bytes */
	for (int part = 0; left;) {
		size_t n = left < ODB_STORED_BLOCK ? left : ODB_STORED_BLOCK, got = 0;
		uint8_t *bh = meta + at;

		left -= n;
		meta[at++] = left ? 0 : 1; /* BFINAL on the last, BTYPE 00: stored */
		meta[at++] = (uint8_t)(n & 0xff);
		meta[at++] = (uint8_t)(n >> 8);
		meta[at++] = (uint8_t)(~n & 0xff);
		meta[at++] = (uint8_t)((~n >> 8) & 0xff);
		/* the zlib header joins the first block's header: one piece of meta */
		if (nv == 0)
			v[nv++] = (struct iovec){.iov_base = meta, .iov_len = 7};
		else
			v[nv++] = (struct iovec){.iov_base = bh, .iov_len = 5};
		while (got < n) {
			size_t k = srclen[part] < n - got ? srclen[part] : n - got;

			v[nv++] =
			    (struct iovec){.iov_base = (void *)(uintptr_t)src[part], .iov_len = k};
			got += k;
			src[part] += k;
			srclen[part] -= k;
			if (!srclen[part] && part == 0)
				part = 1;
		}
	}
	meta[at++] = (uint8_t)(adler >> 24);
	meta[at++] = (uint8_t)(adler >> 16);
	meta[at++] = (uint8_t)(adler >> 8);
	meta[at++] = (uint8_t)adler;
	v[nv++] = (struct iovec){.iov_base = meta + at - 4, .iov_len = 4};
	bytes = at + total;
	/* a temp file of tmp/ (its own per call; swept if reefd dies before the rename) */
	r = odb_tmp_new(o, tmp, sizeof(tmp), &fd);
	if (r < 0)
		goto out;
	r = odb_writev_all(fd, v, nv);
	if (r == 0 && fchmod(fd, 0444) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	else
		odb_count(o, bytes);
out:
	free(v);
	free(meta);
	return r;
}

/* Reads a loose blob written by odb_loose_put (stored blocks only) into mem; -EAGAIN when
 * the file is anything else (compressed by git or an older reefd): libgit2 reads those.
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
	if (type == GIT_OBJECT_BLOB)
		return odb_loose_put(o, oid, data, len);
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

/* Makes the verified temp file the raw (or LFS) object. */
static int odb_file_publish(struct odb *o, bool lfs, int fd, const char *tmp, const char *oid,
                            uint64_t size)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = ODB_RAW_STAMP}};
	char path[4096], dir[4096];
	int r;

	r = lfs ? odb_lfs_path(o, oid, path, sizeof(path))
	        : odb_raw_path(o, oid, path, sizeof(path));
	if (r < 0)
		return r;
	snprintf(dir, sizeof(dir), "%s/%s/%.2s", o->dir, lfs ? "lfs" : "raw", oid);
	r = odb_mkdir(dir);
	if (r < 0)
		return r;
	if (fchmod(fd, 0400) < 0 || futimens(fd, ts) < 0 || fsync(fd) < 0)
		return -errno;
	if (access(path, F_OK) == 0) {
		unlink(tmp); /* a concurrent download of the same object won */
		return 0;
	}
	if (rename(tmp, path) < 0)
		return -errno;
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
	char *data = NULL;
	int r;

	r = odb_hash_fd(w->fd, w->written, hex);
	if (r < 0)
		return r;
	if (strcmp(hex, w->oid) != 0)
		return -EIO;
	if (w->written >= ODB_RAW_THRESHOLD)
		return odb_raw_publish(w->o, w->fd, w->tmp, w->oid, w->written);
	/* small after all: it belongs in the git ODB; the temp file goes at abort */
	data = malloc(w->written + 1);
	if (!data)
		return -ENOMEM;
	r = odb_read_fd(w->fd, data, w->written);
	if (r == 0)
		r = odb_gitodb_put(w->o, w->oid, data, w->written, GIT_OBJECT_BLOB);
	free(data);
	return r;
}

int odb_writer_commit(struct odb_writer *w)
{
	uint8_t bin[HASH_SHA1_LEN];
	char hex[41];
	int r;

	if (w->size == ODB_SIZE_UNKNOWN && w->fd >= 0) {
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
	if (w->fd >= 0)
		r = odb_raw_publish(w->o, w->fd, w->tmp, w->oid, w->size);
	else
		r = odb_gitodb_put(w->o, w->oid, w->mem.data ? w->mem.data : "", w->mem.len,
		                   GIT_OBJECT_BLOB);
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
	buf_free(&w->mem);
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
	struct odb_writer *w;
	int r;

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
	/* verified: a small blob goes to the git ODB from the caller's buffer, no copy */
	if (len < ODB_RAW_THRESHOLD)
		return odb_gitodb_put(o, oid, data ? data : "", len, GIT_OBJECT_BLOB);
	r = odb_writer_new(&w, o, oid, len);
	if (r < 0)
		return r;
	hash_free(w->hash); /* hashed above, or by the caller */
	w->hash = NULL;
	r = odb_writer_write(w, data, len);
	if (r < 0) {
		odb_writer_abort(w);
		return r;
	}
	r = odb_raw_publish(o, w->fd, w->tmp, w->oid, len);
	odb_writer_abort(w);
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
	if (st.st_mtim.tv_sec != ODB_RAW_STAMP || st.st_mtim.tv_nsec != 0) {
		r = odb_hash_fd_kind(fd, (uint64_t)st.st_size, lfs, hex);
		if (r < 0 || strcmp(hex, oid) != 0) {
			if (unlink(path) == 0)
				odb_uncount(o, (uint64_t)st.st_size);
			r = -ENOENT;
			goto fail;
		}
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = ODB_RAW_STAMP}};
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
