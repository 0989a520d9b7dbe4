/* The store path of a blob batch (daemon/fetch.c's fetch_blobs without the network), for
 * counting its instructions under callgrind (docs/benchmarks.md, session 5). Not built by
 * meson; against a release build's libraries:
 *   cc -O2 -Iinclude bench/store_path.c build-rel/fs/libreeffs.a build-rel/lib/libreefcommon.a \
 *      -lgit2 -llmdb -lcrypto -lz -ldeflate -lpthread -o store_path
 *   valgrind --tool=callgrind ./store_path new|old PACK EMPTY_CACHE_DIR BLOB_IDS
 * "new": the pack parsed as it streams (fs/packstream.c), each blob stored when complete;
 * "old": libgit2's indexer (fs/pack.c), then each blob of BLOB_IDS (one id a line) read
 * back and stored. KEEP_MIB: the bases kept in memory (fetch.c's 4). The pack is fed in 64 KiB
 * pieces, as the network hands it over. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reef/odb.h"
#include "reef/pack.h"
#include "reef/packstream.h"

static struct odb *odb;
static int stored;

struct sink {
	int fd;
	char tmp[4096];
	uint64_t size;
};

static int on_object(void *arg, enum pack_type type, const char *oid, const void *data, size_t len)
{
	(void)arg;
	if (type == PACK_BLOB && !odb_blob_has(odb, oid) &&
	    odb_blob_put_hashed(odb, oid, data, len) == 0)
		stored++;
	return 0;
}

static int on_big_begin(void *arg, enum pack_type type, uint64_t size, void **out)
{
	struct sink *s = arg;

	(void)type;
	s->size = size;
	*out = s;
	return odb_tmp_new(odb, s->tmp, sizeof(s->tmp), &s->fd);
}

static int on_big_write(void *out, const void *data, size_t len)
{
	struct sink *s = out;

	return write(s->fd, data, len) == (ssize_t)len ? 0 : -EIO;
}

static int on_big_end(void *out, const char *oid)
{
	struct sink *s = out;

	if (oid && odb_publish(odb, ODB_KIND_BLOB, oid, s->fd, s->tmp, s->size) == 0)
		stored++;
	close(s->fd);
	unlink(s->tmp);
	return 0;
}

/* A delta's base no longer in memory: read back from the store, as fetch_blobs does. */
static int on_base(void *arg, const char *oid, enum pack_type *type, void **data, size_t *len,
                   size_t max)
{
	struct odb_blob *b = NULL;
	uint64_t size;
	int r = odb_blob_open(odb, oid, &b);

	(void)arg;
	if (r < 0)
		return r;
	size = odb_blob_size(b);
	*data = size <= max ? malloc(size + 1) : NULL;
	r = *data && odb_blob_pread(b, *data, size, 0) == (ssize_t)size ? 0 : -EIO;
	odb_blob_close(b);
	if (r < 0) {
		free(*data);
		return r;
	}
	*type = PACK_BLOB;
	*len = size;
	return 0;
}

static uint64_t keep_bytes(void)
{
	const char *k = getenv("KEEP_MIB");

	return (k ? strtoull(k, NULL, 10) : 4) << 20;
}

int main(int argc, char **argv)
{
	static char buf[1 << 16];
	struct sink sink = {.fd = -1};
	FILE *f;
	size_t n;
	int r = 0;

	if (argc != 5 || !(f = fopen(argv[2], "rb")) || odb_open(&odb, argv[3]) < 0) {
		fprintf(stderr, "usage: store_path new|old PACK EMPTY_CACHE_DIR BLOB_IDS\n");
		return 2;
	}
	if (strcmp(argv[1], "new") == 0) {
		struct packstream_cb cb = {.arg = &sink,
		                           .object = on_object,
		                           .big = ODB_RAW_THRESHOLD,
		                           .big_begin = on_big_begin,
		                           .big_write = on_big_write,
		                           .big_end = on_big_end,
		                           .base = on_base};
		struct packstream_limits lim = {.max_bytes = (uint64_t)1 << 32,
		                                .max_objects = 1 << 20,
		                                .max_object = (uint64_t)1 << 30,
		                                .keep_bytes = keep_bytes()};
		struct packstream *ps;

		r = packstream_new(&ps, &cb, &lim);
		while (r == 0 && (n = fread(buf, 1, sizeof(buf), f)) > 0)
			r = packstream_feed(ps, buf, n);
		if (r == 0)
			r = packstream_finish(ps);
		packstream_free(ps);
	} else {
		FILE *ids = fopen(argv[4], "r");
		struct pack *p = NULL;
		char line[64];

		r = ids ? pack_new(&p, odb_tmp_dir(odb), (uint64_t)1 << 32) : -errno;
		while (r == 0 && (n = fread(buf, 1, sizeof(buf), f)) > 0)
			r = pack_append(p, buf, n);
		if (r == 0)
			r = pack_commit(p);
		while (r == 0 && fgets(line, sizeof(line), ids)) {
			enum pack_type type;
			void *data;
			size_t len;

			line[strcspn(line, "\n")] = '\0';
			if (pack_read(p, line, &type, &data, &len, (size_t)1 << 30) == 0) {
				if (!odb_blob_has(odb, line) &&
				    odb_blob_put_hashed(odb, line, data, len) == 0)
					stored++;
				free(data);
			}
		}
		pack_free(p);
		if (ids)
			fclose(ids);
	}
	fclose(f);
	printf("%s: %d blobs stored, %s\n", argv[1], stored, r == 0 ? "ok" : strerror(-r));
	odb_close(odb);
	return r == 0 ? 0 : 1;
}
