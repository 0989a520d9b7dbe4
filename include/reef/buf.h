/* Growable byte buffer with a hard size cap set at init (after curl's dynbuf).
 * Always NUL-terminated so text can be used directly. */
#ifndef REEF_BUF_H
#define REEF_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t cap; /* hard maximum for len; 0 means the default cap */
};

#define BUF_DEFAULT_CAP ((size_t)64 << 20)
#define BUF_INIT(c)                                                                                \
	{                                                                                          \
		.data = NULL, .len = 0, .alloc = 0, .cap = (c)                                     \
	}

void buf_init(struct buf *b, size_t cap);
/* Returns 0, -ENOMEM, or -EFBIG when the cap would be exceeded (buffer unchanged). */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void buf_reset(struct buf *b);
/* Hands the data to the caller (who frees it) and leaves b empty. */
char *buf_steal(struct buf *b);
void buf_free(struct buf *b);

#endif
