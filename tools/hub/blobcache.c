/* The large-blob file cache (see blobcache.h for the rules). */
#include "blobcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reef/hash.h"
#include "reef/log.h"
#include "reef/util.h"

/* Bytes moved per read from git or from a cache file: bounds the memory of a copy. */
#define BC_CHUNK ((size_t)256 << 10)
/* Blobs the process remembers as verified; past it the least recently served is
 * forgotten (its file is then re-hashed before its next use). */
#define BC_MAX_ENTRIES 65536
/* Files one eviction pass looks at; a cache holding more is trimmed over several passes. */
#define BC_MAX_FILES (1 << 20)
/* git's pipe: large enough that git is not woken for every 64 KiB. */
#define BC_PIPE_SIZE (1 << 20)

struct bc_entry {
	char sha[HASH_SHA1_HEX + 1];
	bool busy;    /* one request materializes or re-hashes it; others wait */
	bool trusted; /* dev, ino, size and ctime describe a file verified by this process */
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec ctime;
	int64_t used; /* wall-clock ns of the last serve: eviction order */
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* an entry stopped being busy */
	uint64_t limit;
	struct bc_entry *v;
	size_t n, cap;
} bc = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, BLOBCACHE_DEFAULT_LIMIT, NULL, 0, 0};

static int64_t bc_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int bc_path(char *out, size_t n, const char *hub_dir, const char *sha)
{
	int len = sha ? snprintf(out, n, "%s/blobcache/%.2s/%s", hub_dir, sha, sha + 2)
	              : snprintf(out, n, "%s/blobcache", hub_dir);

	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

/* --- the table of verified files (bc.mu held) --- */

static struct bc_entry *bc_find(const char *sha)
{
	for (size_t i = 0; i < bc.n; i++)
		if (!memcmp(bc.v[i].sha, sha, HASH_SHA1_HEX))
			return &bc.v[i];
	return NULL;
}

static void bc_remove(struct bc_entry *e)
{
	*e = bc.v[--bc.n];
}

static struct bc_entry *bc_add(const char *sha)
{
	struct bc_entry *e;

	if (bc.n == BC_MAX_ENTRIES) {
		struct bc_entry *old = NULL;

		for (size_t i = 0; i < bc.n; i++)
			if (!bc.v[i].busy && (!old || bc.v[i].used < old->used))
				old = &bc.v[i];
		if (!old)
			return NULL;
		bc_remove(old);
	}
	if (bc.n == bc.cap) {
		size_t cap = bc.cap ? bc.cap * 2 : 64;
		struct bc_entry *v = realloc(bc.v, cap * sizeof(*v));

		if (!v)
			return NULL;
		bc.v = v;
		bc.cap = cap;
	}
	e = &bc.v[bc.n++];
	memset(e, 0, sizeof(*e));
	memcpy(e->sha, sha, HASH_SHA1_HEX);
	return e;
}

static bool bc_stamp_ok(const struct bc_entry *e, const struct stat *st, uint64_t size)
{
	return e->trusted && S_ISREG(st->st_mode) && (uint64_t)st->st_size == size &&
	       st->st_dev == e->dev && st->st_ino == e->ino && st->st_size == e->size &&
	       st->st_ctim.tv_sec == e->ctime.tv_sec && st->st_ctim.tv_nsec == e->ctime.tv_nsec;
}

/* Waits until no other request works on sha, then takes it; *snap is its entry. */
static int bc_claim(const char *sha, struct bc_entry *snap)
{
	struct bc_entry *e;

	pthread_mutex_lock(&bc.mu);
	while ((e = bc_find(sha)) && e->busy)
		pthread_cond_wait(&bc.cv, &bc.mu);
	if (!e && !(e = bc_add(sha))) {
		pthread_mutex_unlock(&bc.mu);
		return -ENOMEM;
	}
	e->busy = true;
	*snap = *e;
	pthread_mutex_unlock(&bc.mu);
	return 0;
}

/* Ends a claim: st is the verified file's stat (it was just served), or NULL when no
 * cached copy can be trusted. */
static void bc_release(const char *sha, const struct stat *st)
{
	struct bc_entry *e;

	pthread_mutex_lock(&bc.mu);
	e = bc_find(sha);
	if (e && st) {
		e->busy = false;
		e->trusted = true;
		e->dev = st->st_dev;
		e->ino = st->st_ino;
		e->size = st->st_size;
		e->ctime = st->st_ctim;
		e->used = bc_now();
	} else if (e) {
		bc_remove(e);
	}
	pthread_cond_broadcast(&bc.cv);
	pthread_mutex_unlock(&bc.mu);
}

/* --- byte streams: from git or from a file, into a sink --- */

typedef int (*bc_sink_fn)(void *ctx, const void *data, size_t len);

static int bc_sink_fd(void *ctx, const void *data, size_t len)
{
	return fd_write_all(*(int *)ctx, data, len);
}

static int bc_sink_hash(void *ctx, const void *data, size_t len)
{
	return hash_update(ctx, data, len) < 0 ? -EIO : 0;
}

struct bc_mem {
	char *p;
	size_t len, cap;
};

static int bc_sink_mem(void *ctx, const void *data, size_t len)
{
	struct bc_mem *m = ctx;
	size_t n = len < m->cap - m->len ? len : m->cap - m->len;

	memcpy(m->p + m->len, data, n);
	m->len += n;
	return 0;
}

/* True when digest is the SHA-1 whose hex is sha. */
static bool bc_digest_is(struct hash_ctx *h, const char *sha)
{
	uint8_t bin[HASH_SHA1_LEN];
	char hex[HASH_SHA1_HEX + 1];

	if (hash_final(h, bin) < 0)
		return false;
	hash_hex(hex, bin, sizeof(bin));
	return !memcmp(hex, sha, HASH_SHA1_HEX);
}

/* `git --git-dir=D cat-file blob SHA` with a clean environment and the caller's signals
 * unblocked; its stdout is *out. core.bigFileThreshold makes git stream packed blobs
 * too instead of inflating them whole. */
static int bc_git_spawn(const char *git_dir, const char *sha, pid_t *pid, int *out)
{
	static char *const envp[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
	                             "GIT_CONFIG_NOSYSTEM=1",
	                             "GIT_CONFIG_GLOBAL=/dev/null",
	                             "GIT_NO_REPLACE_OBJECTS=1",
	                             "LC_ALL=C",
	                             NULL};
	char gd[PATH_MAX + 16], hex[HASH_SHA1_HEX + 1];
	char *argv[] = {"git", gd, "-c", "core.bigFileThreshold=1m", "cat-file", "blob", hex, NULL};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	int p[2], r;

	if ((size_t)snprintf(gd, sizeof(gd), "--git-dir=%s", git_dir) >= sizeof(gd))
		return -ENAMETOOLONG;
	memcpy(hex, sha, HASH_SHA1_HEX);
	hex[HASH_SHA1_HEX] = '\0';
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fcntl(p[0], F_SETPIPE_SZ, BC_PIPE_SIZE);
	sigemptyset(&none);
	sigemptyset(&dfl);
	/* The hub ignores SIGPIPE and blocks SIGTERM/SIGINT; both would be inherited. */
	sigaddset(&dfl, SIGPIPE);
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (r == 0)
		r = posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	if (r == 0)
		r = posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (r == 0)
		r = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if (r == 0)
		r = posix_spawnattr_setsigmask(&at, &none);
	if (r == 0)
		r = posix_spawnattr_setsigdefault(&at, &dfl);
	if (r == 0)
		r = posix_spawn(pid, "/usr/bin/git", &fa, &at, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(p[1]);
	if (r != 0) {
		close(p[0]);
		return -r;
	}
	*out = p[0];
	return 0;
}

/* Streams the blob's first `max` bytes (all of them when max >= size) from git into
 * sink. A whole blob must be exactly size bytes hashing to sha (-EIO otherwise); a
 * prefix is not verified, and git is stopped once it has been read. */
static int bc_git_stream(const char *git_dir, const char *sha, uint64_t size, uint64_t max,
                         bc_sink_fn sink, void *ctx)
{
	bool whole = max >= size;
	struct hash_ctx *h = NULL;
	uint64_t total = 0, want = whole ? size : max;
	char *buf = malloc(BC_CHUNK);
	int out = -1, st = 0, r;
	pid_t pid;

	if (!buf)
		return -ENOMEM;
	if (whole && hash_git_begin(&h, "blob", size) < 0) {
		free(buf);
		return -ENOMEM;
	}
	r = bc_git_spawn(git_dir, sha, &pid, &out);
	if (r < 0) {
		log_error("cannot run git cat-file for blob %s: %s", sha, strerror(-r));
		goto out;
	}
	for (;;) {
		size_t ask = BC_CHUNK;
		ssize_t n;

		/* A whole blob is read to git's end, so that a longer output is caught. */
		if (!whole && total >= want)
			break;
		if (!whole && want - total < ask)
			ask = (size_t)(want - total);
		n = read(out, buf, ask);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		if (total + (uint64_t)n > want) {
			r = -EIO;
			break;
		}
		if (h && hash_update(h, buf, (size_t)n) < 0) {
			r = -EIO;
			break;
		}
		r = sink(ctx, buf, (size_t)n);
		if (r < 0)
			break;
		total += (uint64_t)n;
	}
	close(out);
	if (!whole)
		kill(pid, SIGKILL); /* the rest is not wanted */
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (r == 0 && total != want)
		r = -EIO;
	if (r == 0 && whole && (!WIFEXITED(st) || WEXITSTATUS(st) != 0))
		r = -EIO;
	if (r == 0 && whole && !bc_digest_is(h, sha)) {
		log_error("git's bytes for blob %s of %s do not hash to it", sha, git_dir);
		r = -EIO;
	} else if (r == -EIO) {
		log_error("git cat-file could not produce blob %s of %s (%" PRIu64 " of %" PRIu64
		          " bytes, status %d)",
		          sha, git_dir, total, want, st);
	}
out:
	hash_free(h);
	free(buf);
	return r;
}

/* Streams max bytes of fd from offset 0 into sink. */
static int bc_fd_stream(int fd, uint64_t max, bc_sink_fn sink, void *ctx)
{
	char *buf = malloc(BC_CHUNK);
	uint64_t off = 0;
	int r = 0;

	if (!buf)
		return -ENOMEM;
	while (off < max) {
		size_t ask = max - off < BC_CHUNK ? (size_t)(max - off) : BC_CHUNK;
		ssize_t n = pread(fd, buf, ask, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			break;
		}
		r = sink(ctx, buf, (size_t)n);
		if (r < 0)
			break;
		off += (uint64_t)n;
	}
	free(buf);
	return r;
}

/* Re-hashes a cache file: 0 when it is exactly blob sha. */
static int bc_verify_fd(int fd, const char *sha, uint64_t size)
{
	struct hash_ctx *h = NULL;
	int r;

	if (hash_git_begin(&h, "blob", size) < 0)
		return -ENOMEM;
	r = bc_fd_stream(fd, size, bc_sink_hash, h);
	if (r == 0 && !bc_digest_is(h, sha))
		r = -EIO;
	hash_free(h);
	return r;
}

/* --- the cache directory --- */

static int bc_mkdir(const char *path)
{
	return mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

/* Makes DIR/blobcache, its tmp/ and the file's fan-out directory. */
static int bc_dirs(const char *hub_dir, const char *sha)
{
	char p[PATH_MAX];
	int r = bc_path(p, sizeof(p), hub_dir, NULL);

	if (r == 0)
		r = bc_mkdir(p);
	if (r == 0 && (size_t)snprintf(p, sizeof(p), "%s/blobcache/tmp", hub_dir) >= sizeof(p))
		r = -ENAMETOOLONG;
	if (r == 0)
		r = bc_mkdir(p);
	if (r == 0 && sha &&
	    (size_t)snprintf(p, sizeof(p), "%s/blobcache/%.2s", hub_dir, sha) >= sizeof(p))
		r = -ENAMETOOLONG;
	if (r == 0 && sha)
		r = bc_mkdir(p);
	return r;
}

/* fsyncs the directory holding path, so a rename into it survives a crash. */
static void bc_sync_parent(const char *path)
{
	char d[PATH_MAX];
	char *slash;
	int fd;

	snprintf(d, sizeof(d), "%s", path);
	slash = strrchr(d, '/');
	if (!slash)
		return;
	*slash = '\0';
	fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* Copies the blob from git into a fresh file and verifies it. Kept (*kept) under path
 * when it fits the cap, else unlinked and served from the open descriptor only. */
static int bc_materialize(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                          const char *path, int *out, struct stat *st, bool *kept)
{
	char tmp[PATH_MAX];
	uint64_t limit;
	int fd, r;

	*kept = false;
	r = bc_dirs(hub_dir, sha);
	if (r < 0)
		return r;
	/* A name per writer: another process sharing the directory cannot collide. */
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/blobcache/tmp/%s.XXXXXX", hub_dir, sha) >=
	    sizeof(tmp))
		return -ENAMETOOLONG;
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = bc_git_stream(git_dir, sha, size, size, bc_sink_fd, &fd);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	pthread_mutex_lock(&bc.mu);
	limit = bc.limit;
	pthread_mutex_unlock(&bc.mu);
	if (r < 0 || size > limit) {
		unlink(tmp);
		if (r < 0) {
			close(fd);
			return r;
		}
		*out = fd;
		return 0;
	}
	if (rename(tmp, path) < 0 || fstat(fd, st) < 0) {
		r = -errno;
		unlink(tmp);
		close(fd);
		return r;
	}
	bc_sync_parent(path);
	*kept = true;
	*out = fd;
	return 0;
}

struct bc_file {
	char sha[HASH_SHA1_HEX + 1];
	uint64_t size;
	int64_t used;
};

static int bc_file_cmp(const void *a, const void *b)
{
	const struct bc_file *x = a, *y = b;

	return x->used < y->used ? -1 : x->used > y->used;
}

static bool bc_is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[n] == '\0';
}

/* Lists the cache's files (at most BC_MAX_FILES) with their sizes and mtimes. */
static int bc_scan(const char *root, struct bc_file **out, size_t *n_out, uint64_t *total)
{
	struct bc_file *v = NULL;
	size_t n = 0, cap = 0;
	DIR *top = opendir(root);
	struct dirent *d;

	*total = 0;
	if (!top)
		return errno == ENOENT ? 0 : -errno;
	while ((d = readdir(top)) && n < BC_MAX_FILES) {
		struct dirent *f;
		DIR *sub;
		int fd;

		if (!bc_is_hex(d->d_name, 2))
			continue;
		fd = openat(dirfd(top), d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || !(sub = fdopendir(fd))) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		while ((f = readdir(sub)) && n < BC_MAX_FILES) {
			struct stat st;

			if (!bc_is_hex(f->d_name, HASH_SHA1_HEX - 2) ||
			    fstatat(dirfd(sub), f->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 256;
				struct bc_file *nv = realloc(v, nc * sizeof(*nv));

				if (!nv) {
					closedir(sub);
					closedir(top);
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = nc;
			}
			memcpy(v[n].sha, d->d_name, 2);
			memcpy(v[n].sha + 2, f->d_name, HASH_SHA1_HEX - 2);
			v[n].sha[HASH_SHA1_HEX] = '\0';
			v[n].size = (uint64_t)st.st_size;
			v[n].used = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
			*total += v[n].size;
			n++;
		}
		closedir(sub);
	}
	closedir(top);
	*out = v;
	*n_out = n;
	return 0;
}

/* Deletes the least recently served files until the cache fits its cap; never keep (the
 * file just made) nor one a request is verifying. Files this process has not served
 * since it started count as served at their mtime. */
static void bc_evict(const char *hub_dir, const char *keep)
{
	struct bc_file *v = NULL;
	size_t n = 0;
	uint64_t total, limit;
	char root[PATH_MAX], p[PATH_MAX];

	if (bc_path(root, sizeof(root), hub_dir, NULL) < 0 || bc_scan(root, &v, &n, &total) < 0)
		return;
	pthread_mutex_lock(&bc.mu);
	limit = bc.limit;
	for (size_t i = 0; total > limit && i < n; i++) {
		const struct bc_entry *e = bc_find(v[i].sha);

		if ((e && e->busy) || (keep && !strcmp(v[i].sha, keep)))
			v[i].used = INT64_MAX;
		else if (e && e->trusted)
			v[i].used = e->used;
	}
	pthread_mutex_unlock(&bc.mu);
	if (total > limit)
		qsort(v, n, sizeof(*v), bc_file_cmp);
	for (size_t i = 0; total > limit && i < n && v[i].used != INT64_MAX; i++) {
		struct bc_entry *e;

		if (bc_path(p, sizeof(p), hub_dir, v[i].sha) < 0 || unlink(p) < 0)
			continue;
		total -= v[i].size;
		log_debug("blob cache: evicted %s (%" PRIu64 " bytes)", v[i].sha, v[i].size);
		pthread_mutex_lock(&bc.mu);
		e = bc_find(v[i].sha);
		if (e && !e->busy)
			bc_remove(e);
		pthread_mutex_unlock(&bc.mu);
	}
	free(v);
}

/* --- interface --- */

int blobcache_init(const char *hub_dir, uint64_t limit)
{
	char p[PATH_MAX];
	struct dirent *d;
	DIR *tmp;
	int r;

	pthread_mutex_lock(&bc.mu);
	bc.limit = limit;
	pthread_mutex_unlock(&bc.mu);
	r = bc_dirs(hub_dir, NULL);
	if (r < 0)
		return r;
	/* Writers of an earlier run that died before their rename. */
	if ((size_t)snprintf(p, sizeof(p), "%s/blobcache/tmp", hub_dir) >= sizeof(p))
		return -ENAMETOOLONG;
	tmp = opendir(p);
	if (!tmp)
		return -errno;
	while ((d = readdir(tmp)))
		if (d->d_name[0] != '.')
			unlinkat(dirfd(tmp), d->d_name, 0);
	closedir(tmp);
	bc_evict(hub_dir, NULL);
	return 0;
}

int blobcache_open(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                   int *out)
{
	struct bc_entry snap;
	struct stat st;
	char path[PATH_MAX];
	bool good = false, kept = false;
	int fd, r;

	*out = -1;
	if (!bc_is_hex(sha, HASH_SHA1_HEX))
		return -EINVAL;
	r = bc_path(path, sizeof(path), hub_dir, sha);
	if (r < 0)
		return r;
	r = bc_claim(sha, &snap);
	if (r < 0)
		return r;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0) {
		if (bc_stamp_ok(&snap, &st, size)) {
			good = true;
		} else if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == size &&
		           bc_verify_fd(fd, sha, size) == 0) {
			good = true; /* in doubt, and re-hashed */
		} else {
			log_warn("blob cache: %s does not hold blob %s; making it again", path,
			         sha);
			unlink(path);
		}
	}
	if (good) {
		kept = true;
	} else {
		if (fd >= 0)
			close(fd);
		fd = -1;
		r = bc_materialize(hub_dir, git_dir, sha, size, path, &fd, &st, &kept);
	}
	bc_release(sha, r == 0 && kept ? &st : NULL);
	if (r < 0)
		return r;
	if (kept && !good)
		bc_evict(hub_dir, sha);
	*out = fd;
	return 0;
}

int blobcache_lookup(const char *hub_dir, const char *sha, uint64_t size, int *out)
{
	struct bc_entry snap;
	struct bc_entry *e;
	struct stat st;
	char path[PATH_MAX];
	bool trusted;
	int fd;

	*out = -1;
	if (!bc_is_hex(sha, HASH_SHA1_HEX) || bc_path(path, sizeof(path), hub_dir, sha) < 0)
		return -ENOENT;
	pthread_mutex_lock(&bc.mu);
	e = bc_find(sha);
	trusted = e && e->trusted && !e->busy;
	if (trusted)
		snap = *e;
	pthread_mutex_unlock(&bc.mu);
	if (!trusted)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -ENOENT;
	if (fstat(fd, &st) < 0 || !bc_stamp_ok(&snap, &st, size)) {
		close(fd);
		return -ENOENT;
	}
	*out = fd;
	return 0;
}

int blobcache_peek(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                   void *out, size_t cap, size_t *got)
{
	struct bc_mem m = {out, 0, cap};
	uint64_t want = cap < size ? cap : size;
	int fd, r;

	*got = 0;
	if (!bc_is_hex(sha, HASH_SHA1_HEX))
		return -EINVAL;
	if (blobcache_lookup(hub_dir, sha, size, &fd) == 0) {
		r = bc_fd_stream(fd, want, bc_sink_mem, &m);
		close(fd);
	} else {
		r = bc_git_stream(git_dir, sha, size, want, bc_sink_mem, &m);
	}
	*got = m.len;
	return r;
}

int blobcache_sha256(const char *hub_dir, const char *git_dir, const char *sha, uint64_t size,
                     uint8_t out[32])
{
	struct hash_ctx *h = NULL;
	int fd, r;

	if (!bc_is_hex(sha, HASH_SHA1_HEX))
		return -EINVAL;
	if (hash_new(&h, HASH_SHA256) < 0)
		return -ENOMEM;
	if (blobcache_lookup(hub_dir, sha, size, &fd) == 0) {
		r = bc_fd_stream(fd, size, bc_sink_hash, h);
		close(fd);
	} else {
		r = bc_git_stream(git_dir, sha, size, size, bc_sink_hash, h);
	}
	if (r == 0 && hash_final(h, out) < 0)
		r = -EIO;
	hash_free(h);
	return r;
}
