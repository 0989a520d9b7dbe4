/* A git pack parsed as it streams in (fs/packstream.c): fed the pack's bytes in chunks of
 * any size, it inflates each object once, computes its id (OpenSSL SHA-1 over
 * "<type> <size>\0" + content) and hands the object over as soon as it is complete, so
 * what a consumer stores is verified by construction. Deltas (OFS_DELTA, REF_DELTA) are
 * applied against an earlier object of the pack, held in memory within a budget or asked
 * back from the consumer by id (which also serves REF_DELTA bases the consumer already
 * holds). The pack's trailing SHA-1 is checked at the end. Every size read from the
 * stream is capped; anything malformed stops the parse with an error, and no object is
 * handed over before its id is known. No I/O here. Functions return 0 or a negative
 * errno: -EIO malformed (packstream_error says what), -EFBIG beyond a cap, or what a
 * callback returned. */
#ifndef REEF_PACKSTREAM_H
#define REEF_PACKSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "reef/pack.h"

struct packstream;

struct packstream_cb {
	void *arg;
	/* A complete object held in memory (oid: 40 hex; data only valid during the call).
	 * A negative return stops the parse with that error. */
	int (*object)(void *arg, enum pack_type type, const char *oid, const void *data,
	              size_t len);
	/* Optional: a whole (non-delta) object of at least big bytes is streamed through
	 * these instead of object, as it inflates. end gets its id, or NULL when the
	 * object turned out malformed: the sink discards what it got. */
	uint64_t big;
	int (*big_begin)(void *arg, enum pack_type type, uint64_t size, void **sink);
	int (*big_write)(void *sink, const void *data, size_t len);
	int (*big_end)(void *sink, const char *oid);
	/* Optional: the content of a delta's base the parser does not hold (an object it
	 * let go of, or one the pack does not carry): a malloc'ed copy of at most max
	 * bytes, or -ENOENT. */
	int (*base)(void *arg, const char *oid, enum pack_type *type, void **data, size_t *len,
	            size_t max);
};

struct packstream_limits {
	uint64_t max_bytes;   /* the whole pack */
	uint32_t max_objects; /* objects the header may announce */
	uint64_t max_object;  /* one object's content, a delta's data and its result */
	uint64_t keep_bytes;  /* contents kept in memory as possible delta bases */
};

int packstream_new(struct packstream **out, const struct packstream_cb *cb,
                   const struct packstream_limits *lim);
/* The next bytes of the pack. After an error, every call returns it again. */
int packstream_feed(struct packstream *ps, const void *data, size_t len);
/* The stream ended: -EIO when the pack is incomplete or its checksum does not match
 * (objects handed over before stay valid: each was verified by its own id). */
int packstream_finish(struct packstream *ps);
/* What was wrong, for logs ("" when nothing). */
const char *packstream_error(const struct packstream *ps);
/* Objects completed so far. */
uint32_t packstream_objects(const struct packstream *ps);
/* Of those, how many came as OFS_DELTA and as REF_DELTA. */
void packstream_deltas(const struct packstream *ps, uint32_t *ofs, uint32_t *ref);
void packstream_free(struct packstream *ps); /* accepts NULL */

#endif
