/* One object being downloaded, readable while it arrives (daemon/stream.c): the large-
 * object half of the cache's read path. See docs/cache.md, "Streaming first reads".
 *
 * The bytes go to a temp file of the object store as they come; a reader waits only until
 * the range it asked for is there. One or more fetchers fill the file: the first streams
 * from offset 0 to the end (readahead for a sequential reader falls out of it); when a
 * reader waits far ahead of every fetcher and the source honours ranges, a new fetcher
 * starts at that offset (at most STREAM_FETCHERS per object). The content is hashed in
 * order (inline for the sequential stream, from the file for bytes that arrived out of
 * order) and compared with the id when complete (a read that includes the last byte
 * waits for that, so reading to the end never succeeds on wrong content): then it is published into
 * the store (or, when not kept, dropped at the last close). Any failure — a transfer error, a
 * stall, too few or too many bytes, a hash mismatch — poisons the object: every read from then on
 * is -EIO, and nothing is stored. The source knows HTTP; this module does not. */
#ifndef REEF_STREAM_H
#define REEF_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "gl.h"
#include "reef/odb.h"

#define STREAM_FETCHERS 4
/* A reader waiting further than this ahead of the fetcher that will reach its range gets
 * a fetcher of its own (when the source honours ranges). */
#define STREAM_JUMP ((uint64_t)4 << 20)

struct stream;

/* Fetches the object from off: calls sink->begin, then sink->data with the bytes, as
 * gl_stream does (begin's first is 0 when the source ignored the range). Returns 0 at
 * the end of what it sent, or the negative errno of the failure or of a callback. Called
 * from the stream's fetcher threads, possibly several at once. */
struct stream_source {
	int (*fetch)(void *arg, uint64_t off, const struct gl_stream_sink *sink);
	void (*free)(void *arg); /* at the last reference; may be NULL */
	void *arg;
};

struct stream_opts {
	struct odb *odb;
	enum odb_kind kind; /* ODB_KIND_BLOB: git blob id; ODB_KIND_LFS: sha256 */
	const char *oid;
	uint64_t size; /* the exact size: more or fewer bytes fail the stream */
	bool keep;     /* publish into the store once verified */
	/* Called once, from a fetcher thread, when the stream is verified (result 0, stored
	 * when keep) or failed (negative errno; reason says why, for the log). */
	void (*done)(void *arg, struct stream *s, int result, const char *reason);
	/* Called when the disk is full: free at least bytes; 0 when something was freed. */
	int (*make_room)(void *arg, uint64_t bytes);
	void *arg;
};

/* Starts the download (the first fetcher thread). The stream holds one reference for
 * the caller and one per running fetcher; the source is freed at the last. */
int stream_new(struct stream **out, const struct stream_opts *o, const struct stream_source *src);
void stream_ref(struct stream *s);
void stream_unref(struct stream *s); /* accepts NULL */

uint64_t stream_size(const struct stream *s);
/* Like pread(2), waiting until [off, off + n) has arrived (clipped to the size) or the
 * stream failed: bytes read, 0 at the end, or a negative errno (-EIO when poisoned). */
ssize_t stream_pread(struct stream *s, void *buf, size_t n, uint64_t off);
/* Waits until the stream is complete and its done callback returned: 0 when verified,
 * else its negative errno. */
int stream_wait(struct stream *s);
/* 1 verified, 0 in progress, negative errno when failed. */
int stream_state(struct stream *s);
/* The file's descriptor once verified, else -1. */
int stream_fd(struct stream *s);
/* Bytes received from the source so far (all fetchers). */
uint64_t stream_fetched(struct stream *s);

#endif
