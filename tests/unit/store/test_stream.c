/* Unit tests of the streaming object (daemon/stream.c) over an in-memory source that
 * can honour or ignore ranges, go slowly, lie about bytes or stop short: a reader gets
 * exactly the object's bytes or -EIO, a far read does not wait for the bytes before it
 * when ranges work, concurrent readers share one download, and only a verified object
 * is ever published into the store. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../check.h"
#include "reef/hash.h"
#include "reef/odb.h"
#include "stream.h"

struct fake {
	const char *data;
	size_t size;
	bool ranges;
	unsigned delay_us;  /* per 64 KiB chunk */
	size_t corrupt_at;  /* flips this byte when != SIZE_MAX */
	size_t truncate_at; /* ends the body here when != SIZE_MAX */
	unsigned requests, from_zero;
	uint64_t sent;
	pthread_mutex_t lock;
};

static int fake_fetch(void *arg, uint64_t off, const struct gl_stream_sink *sink)
{
	struct fake *f = arg;
	uint64_t start = f->ranges ? off : 0;
	size_t end = f->truncate_at != SIZE_MAX ? f->truncate_at : f->size;
	char chunk[65536];
	int r;

	pthread_mutex_lock(&f->lock);
	f->requests++;
	if (start == 0)
		f->from_zero++;
	pthread_mutex_unlock(&f->lock);
	r = sink->begin(sink->arg, f->ranges, start, (int64_t)f->size);
	if (r < 0)
		return r;
	for (uint64_t p = start; p < end;) {
		size_t n = end - p < sizeof(chunk) ? end - p : sizeof(chunk);

		memcpy(chunk, f->data + p, n);
		if (f->corrupt_at >= p && f->corrupt_at < p + n)
			chunk[f->corrupt_at - p] ^= 1;
		if (f->delay_us)
			usleep(f->delay_us);
		r = sink->data(sink->arg, chunk, n);
		if (r < 0)
			return r;
		pthread_mutex_lock(&f->lock);
		f->sent += n;
		pthread_mutex_unlock(&f->lock);
		p += n;
	}
	return 0;
}

struct done_rec {
	pthread_mutex_t lock;
	int calls, result;
};

static void on_done(void *arg, struct stream *s, int result, const char *reason)
{
	struct done_rec *d = arg;

	(void)s;
	pthread_mutex_lock(&d->lock);
	d->calls++;
	d->result = result;
	if (result < 0)
		fprintf(stderr, "(expected) stream failed: %s\n", reason ? reason : "?");
	pthread_mutex_unlock(&d->lock);
}

static char *make_data(size_t n)
{
	char *d = malloc(n);

	CHECK(d);
	for (size_t i = 0; i < n; i++)
		d[i] = (char)((i * 2654435761u) >> 13);
	return d;
}

static void blob_id(const char *data, size_t n, char hex[41])
{
	struct hash_ctx *h;
	uint8_t bin[20];

	CHECK_EQ_INT(hash_git_begin(&h, "blob", n), 0);
	CHECK_EQ_INT(hash_update(h, data, n), 0);
	CHECK_EQ_INT(hash_final(h, bin), 0);
	hash_free(h);
	hash_hex(hex, bin, 20);
}

static struct stream *start(struct odb *o, struct fake *f, const char *oid, bool keep,
                            struct done_rec *d)
{
	struct stream_opts so = {.odb = o,
	                         .kind = ODB_KIND_BLOB,
	                         .oid = oid,
	                         .size = f->size,
	                         .keep = keep,
	                         .done = on_done,
	                         .arg = d};
	struct stream_source src = {.fetch = fake_fetch, .arg = f};
	struct stream *s;

	CHECK_EQ_INT(stream_new(&s, &so, &src), 0);
	return s;
}

static void fake_init(struct fake *f, const char *data, size_t size)
{
	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->lock, NULL);
	f->data = data;
	f->size = size;
	f->corrupt_at = SIZE_MAX;
	f->truncate_at = SIZE_MAX;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_sequential(struct odb *o)
{
	size_t n = (size_t)5 << 20;
	char *data = make_data(n), oid[41], *buf = malloc(n);
	struct done_rec d = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct odb_blob *b;
	struct fake f;
	struct stream *s;

	fake_init(&f, data, n);
	blob_id(data, n, oid);
	s = start(o, &f, oid, true, &d);
	for (size_t off = 0; off < n; off += 131072) {
		size_t want = n - off < 131072 ? n - off : 131072;

		CHECK_EQ_INT(stream_pread(s, buf + off, want, off), (ssize_t)want);
	}
	CHECK(memcmp(buf, data, n) == 0);
	CHECK_EQ_INT(stream_wait(s), 0);
	CHECK(stream_fd(s) >= 0);
	CHECK_EQ_INT(f.requests, 1); /* one transfer for the whole sequential read */
	CHECK_EQ_INT(stream_pread(s, buf, 10, n), 0);
	stream_unref(s);
	CHECK_EQ_INT(d.calls, 1);
	CHECK_EQ_INT(d.result, 0);
	CHECK_EQ_INT(odb_blob_open(o, oid, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), n);
	odb_blob_close(b);
	free(buf);
	free(data);
}

/* A read far into a slow object, with ranges: served long before the whole object. */
static void test_far_read(struct odb *o, bool ranges)
{
	size_t n = (size_t)24 << 20;
	char *data = make_data(n), oid[41], buf[4096];
	struct done_rec d = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct fake f;
	struct stream *s;
	double t0;

	fake_init(&f, data, n);
	f.ranges = ranges;
	f.delay_us = 2000;       /* 24 MiB in ~0.8 s from the start */
	data[7] ^= (char)ranges; /* distinct objects for the two runs */
	blob_id(data, n, oid);
	s = start(o, &f, oid, true, &d);
	/* the first bytes arrive: now the source's range support is known */
	CHECK_EQ_INT(stream_pread(s, buf, 16, 0), 16);
	t0 = now_s();
	CHECK_EQ_INT(stream_pread(s, buf, sizeof(buf), n - 8192), (ssize_t)sizeof(buf));
	CHECK(memcmp(buf, data + n - 8192, sizeof(buf)) == 0);
	if (ranges) {
		CHECK(now_s() - t0 < 0.3);
		CHECK(f.requests >= 2);
	}
	CHECK_EQ_INT(stream_wait(s), 0);
	if (ranges) /* the far fetcher's bytes are not fetched again */
		CHECK(f.sent <= n + ((size_t)1 << 20));
	else
		CHECK_EQ_INT(f.requests, 1);
	stream_unref(s);
	CHECK_EQ_INT(d.result, 0);
	CHECK(odb_blob_has(o, oid));
	free(data);
}

struct reader_arg {
	struct stream *s;
	const char *data;
	size_t n;
	int ok;
};

static void *reader_main(void *arg)
{
	struct reader_arg *ra = arg;
	char *buf = malloc(ra->n);
	ssize_t r;

	ra->ok = 0;
	for (size_t off = 0; buf && off < ra->n; off += 65536) {
		size_t want = ra->n - off < 65536 ? ra->n - off : 65536;

		r = stream_pread(ra->s, buf + off, want, off);
		if (r < 0) {
			ra->ok = (int)r;
			free(buf);
			return NULL;
		}
	}
	ra->ok = buf && memcmp(buf, ra->data, ra->n) == 0 ? 1 : -1;
	free(buf);
	return NULL;
}

static void test_shared_readers(struct odb *o)
{
	size_t n = (size_t)3 << 20;
	char *data = make_data(n), oid[41];
	struct done_rec d = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct reader_arg ra[4];
	pthread_t t[4];
	struct fake f;
	struct stream *s;

	data[0] = 'S';
	fake_init(&f, data, n);
	f.delay_us = 500;
	blob_id(data, n, oid);
	s = start(o, &f, oid, false, &d);
	for (int i = 0; i < 4; i++) {
		ra[i] = (struct reader_arg){s, data, n, 0};
		pthread_create(&t[i], NULL, reader_main, &ra[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(ra[i].ok, 1);
	}
	CHECK_EQ_INT(f.requests, 1);
	CHECK_EQ_INT(stream_wait(s), 0);
	stream_unref(s);
	/* not kept: streamed through, nothing stored */
	CHECK(!odb_blob_has(o, oid));
	free(data);
}

static void test_faults(struct odb *o)
{
	size_t n = (size_t)2 << 20;
	char *data = make_data(n), oid[41], *buf = malloc(n);
	struct done_rec d = {.lock = PTHREAD_MUTEX_INITIALIZER};
	struct fake f;
	struct stream *s;

	data[1] = 'F';
	blob_id(data, n, oid);

	/* wrong bytes: the first reader may have its bytes, the object is poisoned */
	fake_init(&f, data, n);
	f.corrupt_at = n / 2;
	s = start(o, &f, oid, true, &d);
	/* reading to the end waits for verification: it fails, not completes wrongly */
	CHECK_EQ_INT(stream_pread(s, buf, n, 0), -EIO);
	CHECK_EQ_INT(stream_wait(s), -EIO);
	CHECK_EQ_INT(stream_pread(s, buf, 100, 0), -EIO);
	CHECK_EQ_INT(stream_fd(s), -1);
	stream_unref(s);
	CHECK_EQ_INT(d.result, -EIO);
	CHECK(!odb_blob_has(o, oid));

	/* truncated body: the reader beyond the cut gets -EIO, not a hang */
	fake_init(&f, data, n);
	f.truncate_at = n - 1000;
	s = start(o, &f, oid, true, &d);
	CHECK_EQ_INT(stream_pread(s, buf, 4096, n - 4096), -EIO);
	stream_unref(s);
	CHECK(!odb_blob_has(o, oid));

	/* the source announces another size */
	fake_init(&f, data, n);
	f.size = n + 1; /* announced total: begin sees n + 1 */
	{
		struct stream_opts so = {
		    .odb = o, .kind = ODB_KIND_BLOB, .oid = oid, .size = n, .keep = true};
		struct stream_source src = {.fetch = fake_fetch, .arg = &f};

		CHECK_EQ_INT(stream_new(&s, &so, &src), 0);
		CHECK_EQ_INT(stream_wait(s), -EIO);
		stream_unref(s);
	}
	CHECK(!odb_blob_has(o, oid));

	/* a good source afterwards stores it */
	fake_init(&f, data, n);
	s = start(o, &f, oid, true, &d);
	CHECK_EQ_INT(stream_pread(s, buf, n, 0), (ssize_t)n);
	CHECK(memcmp(buf, data, n) == 0);
	CHECK_EQ_INT(stream_wait(s), 0);
	stream_unref(s);
	CHECK(odb_blob_has(o, oid));
	free(buf);
	free(data);
}

static void test_no_temp_left(const char *dir)
{
	char path[4096];
	struct stat st;

	snprintf(path, sizeof(path), "%s/tmp", dir);
	CHECK_EQ_INT(stat(path, &st), 0);
	/* every stream above ended: its temp file was published or removed */
	CHECK(st.st_nlink == 2);
	snprintf(path, sizeof(path), "rmdir %s/tmp 2>/dev/null || ls -la %s/tmp >&2", dir, dir);
	CHECK(system(path) == 0);
}

int main(void)
{
	char dir[] = "/tmp/reef-test-stream-XXXXXX", cmd[256];
	struct odb *o;

	CHECK(mkdtemp(dir));
	CHECK_EQ_INT(odb_open(&o, dir), 0);
	test_sequential(o);
	test_far_read(o, true);
	test_far_read(o, false);
	test_shared_readers(o);
	test_faults(o);
	odb_close(o);
	test_no_temp_left(dir);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK(system(cmd) == 0);
	printf("stream: ok\n");
	return 0;
}
