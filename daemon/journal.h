/* The control-write journal of reefd (daemon/journal.c): every request a user writes to
 * a control file is committed to SQLite (DIR/journal.db, WAL, synchronous=FULL) before
 * write() returns, with a random idempotency key. A delivery thread sends queued
 * requests in order, with that key in an `Idempotency-Key` header (reef-hub answers a
 * repeated key with its first answer), and retries with backoff while the server is
 * unreachable or answers 5xx/408/429. States: queued -> delivered (2xx, the answer kept)
 * or failed (any other 4xx, the server's message kept). Queued requests survive a
 * daemon restart; the key makes a resend after a lost answer harmless, so each request
 * acts once. Thread-safe. */
#ifndef REEF_JOURNAL_H
#define REEF_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define JOURNAL_ERR_MAX       512
#define JOURNAL_BACKOFF_MAX_S 15.0
#define JOURNAL_KEEP_S        (24.0 * 3600) /* finished entries are kept a day */

enum journal_state { JOURNAL_QUEUED, JOURNAL_DELIVERED, JOURNAL_FAILED };

struct journal_entry {
	int64_t id;
	char key[33];
	int64_t project_id;
	char kind[32];    /* what the request is: "experiment", "pipeline", "experiment-ctl", … */
	char target[128]; /* the experiment name or pipeline id it concerns, or "" */
	char path[1024];  /* POSTed to: "/api/v1/projects/12/experiments" */
	char *body;       /* JSON sent */
	enum journal_state state;
	int attempts;
	long http_status;
	char error[JOURNAL_ERR_MAX]; /* why it failed, or why the last attempt did not go */
	char *result;                /* the server's answer once delivered */
	double created_at, updated_at;
};
void journal_entry_clear(struct journal_entry *e); /* frees body and result */
const char *journal_state_name(enum journal_state s);

struct journal;

int journal_open(struct journal **out, const char *path);
void journal_free(struct journal *j); /* stops the delivery thread; accepts NULL */

/* A new random key: 32 lowercase hex digits (128 bits). */
int journal_key_new(char out[33]);
/* Commits e (state queued) durably; sets e->id, e->created_at, and e->key unless it holds
 * a key already (one of journal_key_new's, so a request can carry its key before it is
 * journaled). Wakes the delivery thread. */
int journal_add(struct journal *j, struct journal_entry *e);
int journal_get(struct journal *j, int64_t id, struct journal_entry *out);
/* Entries of project_id of a kind that are not delivered (queued or failed), oldest
 * first; *out malloc'ed, free each with journal_entry_clear then free(*out). */
int journal_pending(struct journal *j, int64_t project_id, const char *kind,
                    struct journal_entry **out, size_t *n);
void journal_entries_free(struct journal_entry *e, size_t n);
void journal_counts(struct journal *j, int64_t *queued, int64_t *failed, int64_t *delivered);

/* Sends one request: the HTTP status (0 when the server could not be reached) and the
 * answer's body (malloc'ed, may be NULL). */
typedef void (*journal_send_fn)(void *arg, const struct journal_entry *e, long *status,
                                char **body);
/* Called after an entry was delivered or failed (from the delivery thread). */
typedef void (*journal_done_fn)(void *arg, const struct journal_entry *e);
int journal_start(struct journal *j, journal_send_fn send, journal_done_fn done, void *arg);

#endif
