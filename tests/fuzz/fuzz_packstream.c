/* A server's pack parsed as it streams (fs/packstream.c): the first byte picks the size
 * of the pieces the rest is fed in, so headers, varints and zlib streams are cut at every
 * place; small caps make the size checks reachable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "reef/packstream.h"

static int fuzz_object(void *arg, enum pack_type type, const char *oid, const void *data,
                       size_t len)
{
	(void)arg;
	(void)type;
	(void)oid;
	(void)data;
	(void)len;
	return 0;
}

static int fuzz_big_begin(void *arg, enum pack_type type, uint64_t size, void **sink)
{
	static int place; /* a sink is never NULL: the parser tells big objects by it */

	(void)arg;
	(void)type;
	(void)size;
	*sink = &place;
	return 0;
}

static int fuzz_big_write(void *sink, const void *data, size_t len)
{
	(void)sink;
	(void)data;
	(void)len;
	return 0;
}

static int fuzz_big_end(void *sink, const char *oid)
{
	(void)sink;
	(void)oid;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct packstream_cb cb = {.object = fuzz_object,
	                           .big = 4096,
	                           .big_begin = fuzz_big_begin,
	                           .big_write = fuzz_big_write,
	                           .big_end = fuzz_big_end};
	struct packstream_limits lim = {
	    .max_bytes = 1 << 20, .max_objects = 256, .max_object = 1 << 20, .keep_bytes = 1 << 16};
	struct packstream *ps;
	size_t step, at = 1;
	int r = 0;

	if (size < 1)
		return 0;
	step = data[0] ? data[0] : size;
	if (data[0] & 1)
		cb.big = 0; /* everything in memory */
	if (packstream_new(&ps, &cb, &lim) < 0)
		return 0;
	while (at < size && r == 0) {
		size_t n = step < size - at ? step : size - at;

		r = packstream_feed(ps, data + at, n);
		at += n;
	}
	if (r == 0)
		packstream_finish(ps);
	packstream_free(ps);
	return 0;
}
