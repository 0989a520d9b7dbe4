/* The control-write journal: see journal.h. */
#include "journal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "dsql.h"
#include "reef/log.h"

#define JOURNAL_COLS                                                                               \
	"id, key, project_id, kind, target, path, body, state, attempts, http_status, error,"      \
	" result, created_at, updated_at"

struct journal {
	sqlite3 *db;
	pthread_mutex_t lock; /* the connection and the fields below */
	pthread_cond_t wake;
	pthread_t thread;
	bool running, stop;
	journal_send_fn send;
	journal_done_fn done;
	void *arg;
};

static double journal_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *journal_state_name(enum journal_state s)
{
	switch (s) {
	case JOURNAL_QUEUED:
		return "queued";
	case JOURNAL_DELIVERED:
		return "delivered";
	case JOURNAL_FAILED:
		return "failed";
	}
	return "?";
}

static enum journal_state journal_state_parse(const char *s)
{
	if (s && !strcmp(s, "delivered"))
		return JOURNAL_DELIVERED;
	if (s && !strcmp(s, "failed"))
		return JOURNAL_FAILED;
	return JOURNAL_QUEUED;
}

void journal_entry_clear(struct journal_entry *e)
{
	if (!e)
		return;
	free(e->body);
	free(e->result);
	e->body = e->result = NULL;
}

void journal_entries_free(struct journal_entry *e, size_t n)
{
	for (size_t i = 0; e && i < n; i++)
		journal_entry_clear(&e[i]);
	free(e);
}

static int journal_exec(struct journal *j, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(j->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		log_error("journal: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
	}
	return dsql_errno(rc);
}

int journal_open(struct journal **out, const char *path)
{
	struct journal *j = calloc(1, sizeof(*j));
	sqlite3_stmt *st = NULL;
	int r;

	*out = NULL;
	if (!j)
		return -ENOMEM;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->wake, NULL);
	r = dsql_open(&j->db, path,
	              "CREATE TABLE IF NOT EXISTS requests("
	              " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,"
	              " project_id INTEGER NOT NULL, kind TEXT NOT NULL,"
	              " target TEXT NOT NULL, path TEXT NOT NULL, body TEXT NOT NULL,"
	              " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
	              " http_status INTEGER NOT NULL DEFAULT 0,"
	              " error TEXT NOT NULL DEFAULT '', result TEXT,"
	              " created_at REAL NOT NULL, updated_at REAL NOT NULL,"
	              " next_try REAL NOT NULL DEFAULT 0);"
	              "CREATE INDEX IF NOT EXISTS requests_state ON requests(state, id);",
	              "journal");
	if (r < 0)
		goto fail;
	/* forget what was settled long ago; queued requests stay whatever their age */
	if (sqlite3_prepare_v2(j->db,
	                       "DELETE FROM requests WHERE state != 'queued' AND updated_at < ?",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_double(st, 1, journal_now() - JOURNAL_KEEP_S);
		sqlite3_step(st);
	}
	sqlite3_finalize(st);
	/* a restart delivers at once what was waiting for its backoff */
	journal_exec(j, "UPDATE requests SET next_try = 0 WHERE state = 'queued'");
	*out = j;
	return 0;
fail:
	journal_free(j);
	return r;
}

void journal_free(struct journal *j)
{
	if (!j)
		return;
	if (j->running) {
		pthread_mutex_lock(&j->lock);
		j->stop = true;
		pthread_cond_broadcast(&j->wake);
		pthread_mutex_unlock(&j->lock);
		pthread_join(j->thread, NULL);
	}
	sqlite3_close(j->db);
	pthread_cond_destroy(&j->wake);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

int journal_key_new(char out[33])
{
	unsigned char r[16];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -EIO;
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", r[i]);
	return 0;
}

int journal_add(struct journal *j, struct journal_entry *e)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	if (strlen(e->key) != 32 || strspn(e->key, "0123456789abcdef") != 32) {
		r = journal_key_new(e->key);
		if (r < 0)
			return r;
	}
	e->state = JOURNAL_QUEUED;
	e->created_at = e->updated_at = journal_now();
	pthread_mutex_lock(&j->lock);
	rc = sqlite3_prepare_v2(j->db,
	                        "INSERT INTO requests(key, project_id, kind, target, path, body,"
	                        " state, created_at, updated_at) VALUES(?,?,?,?,?,?,'queued',?,?)",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, e->key, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, e->project_id);
		sqlite3_bind_text(st, 3, e->kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, e->target, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, e->path, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 6, e->body ? e->body : "{}", -1, SQLITE_STATIC);
		sqlite3_bind_double(st, 7, e->created_at);
		sqlite3_bind_double(st, 8, e->updated_at);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE) {
		e->id = sqlite3_last_insert_rowid(j->db);
		pthread_cond_broadcast(&j->wake);
		r = 0;
	} else {
		r = log_ret(dsql_errno(rc), "journal: cannot record a request: %s",
		            sqlite3_errmsg(j->db));
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}

static void journal_copy(char *dst, size_t n, sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);

	snprintf(dst, n, "%s", s ? s : "");
}

static char *journal_dup(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);

	return s ? strdup(s) : NULL;
}

static void journal_row(sqlite3_stmt *st, struct journal_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->id = sqlite3_column_int64(st, 0);
	journal_copy(e->key, sizeof(e->key), st, 1);
	e->project_id = sqlite3_column_int64(st, 2);
	journal_copy(e->kind, sizeof(e->kind), st, 3);
	journal_copy(e->target, sizeof(e->target), st, 4);
	journal_copy(e->path, sizeof(e->path), st, 5);
	e->body = journal_dup(st, 6);
	e->state = journal_state_parse((const char *)sqlite3_column_text(st, 7));
	e->attempts = sqlite3_column_int(st, 8);
	e->http_status = sqlite3_column_int(st, 9);
	journal_copy(e->error, sizeof(e->error), st, 10);
	e->result = journal_dup(st, 11);
	e->created_at = sqlite3_column_double(st, 12);
	e->updated_at = sqlite3_column_double(st, 13);
}

int journal_get(struct journal *j, int64_t id, struct journal_entry *out)
{
	sqlite3_stmt *st = NULL;
	int r = -ENOENT;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&j->lock);
	if (sqlite3_prepare_v2(j->db, "SELECT " JOURNAL_COLS " FROM requests WHERE id = ?", -1, &st,
	                       NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, id);
		if (sqlite3_step(st) == SQLITE_ROW) {
			journal_row(st, out);
			r = 0;
		}
	} else {
		r = -EIO;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&j->lock);
	return r;
}

int journal_pending(struct journal *j, int64_t project_id, const char *kind,
                    struct journal_entry **out, size_t *n)
{
	sqlite3_stmt *st = NULL;
	struct journal_entry *v = NULL;
	size_t cap = 0;
	int r = 0;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&j->lock);
	if (sqlite3_prepare_v2(j->db,
	                       "SELECT " JOURNAL_COLS " FROM requests WHERE project_id = ? AND"
	                       " kind = ? AND state != 'delivered' ORDER BY id LIMIT 10000",
	                       -1, &st, NULL) != SQLITE_OK) {
		r = -EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (*n == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct journal_entry *nv = realloc(v, nc * sizeof(*v));

			if (!nv) {
				r = -ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		journal_row(st, &v[(*n)++]);
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&j->lock);
	if (r < 0) {
		journal_entries_free(v, *n);
		*n = 0;
		return r;
	}
	*out = v;
	return 0;
}

void journal_counts(struct journal *j, int64_t *queued, int64_t *failed, int64_t *delivered)
{
	sqlite3_stmt *st = NULL;

	*queued = *failed = *delivered = 0;
	pthread_mutex_lock(&j->lock);
	if (sqlite3_prepare_v2(j->db, "SELECT state, COUNT(*) FROM requests GROUP BY state", -1,
	                       &st, NULL) == SQLITE_OK) {
		while (sqlite3_step(st) == SQLITE_ROW) {
			enum journal_state s =
			    journal_state_parse((const char *)sqlite3_column_text(st, 0));
			int64_t c = sqlite3_column_int64(st, 1);

			if (s == JOURNAL_QUEUED)
				*queued = c;
			else if (s == JOURNAL_FAILED)
				*failed = c;
			else
				*delivered = c;
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&j->lock);
}

/* The oldest queued entry if it is due now, else the time it is due (0: none queued).
 * Strictly in order: a cancel written after a launch never overtakes it. */
static int journal_next_locked(struct journal *j, struct journal_entry *e, double *due)
{
	sqlite3_stmt *st = NULL;
	int r = -ENOENT;

	*due = 0;
	if (sqlite3_prepare_v2(j->db,
	                       "SELECT " JOURNAL_COLS ", next_try FROM requests WHERE"
	                       " state = 'queued' ORDER BY id LIMIT 1",
	                       -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	if (sqlite3_step(st) == SQLITE_ROW) {
		double next = sqlite3_column_double(st, 14);

		if (next <= journal_now()) {
			journal_row(st, e);
			r = 0;
		} else {
			*due = next;
		}
	}
	sqlite3_finalize(st);
	return r;
}

/* GitLab's error bodies: {"message": "..."}, {"message": {...}}, {"error": "..."}. */
static void journal_message(const char *body, long status, char out[JOURNAL_ERR_MAX])
{
	json_t *v = body ? json_loads(body, 0, NULL) : NULL;
	json_t *m = json_object_get(v, "message");
	char *dump = NULL;

	if (!m)
		m = json_object_get(v, "error");
	if (json_is_string(m))
		snprintf(out, JOURNAL_ERR_MAX, "%s", json_string_value(m));
	else if (m && (dump = json_dumps(m, JSON_COMPACT)))
		snprintf(out, JOURNAL_ERR_MAX, "HTTP %ld: %s", status, dump);
	else
		snprintf(out, JOURNAL_ERR_MAX, "HTTP %ld: %.200s", status, body ? body : "");
	free(dump);
	json_decref(v);
}

static void journal_settle(struct journal *j, struct journal_entry *e, long status, char *body)
{
	sqlite3_stmt *st = NULL;
	double now = journal_now(), next = 0;

	e->http_status = status;
	e->attempts++;
	if (status >= 200 && status < 300) {
		e->state = JOURNAL_DELIVERED;
		e->error[0] = '\0';
		free(e->result);
		e->result = body;
		body = NULL;
	} else if (status >= 400 && status < 500 && status != 408 && status != 429) {
		e->state = JOURNAL_FAILED;
		journal_message(body, status, e->error);
	} else {
		double wait = 0.25;

		for (int i = 1; i < e->attempts && wait < JOURNAL_BACKOFF_MAX_S; i++)
			wait *= 2;
		next = now + (wait < JOURNAL_BACKOFF_MAX_S ? wait : JOURNAL_BACKOFF_MAX_S);
		if (status == 0)
			snprintf(e->error, sizeof(e->error), "server unreachable; retrying");
		else
			snprintf(e->error, sizeof(e->error), "server answered HTTP %ld; retrying",
			         status);
	}
	free(body);
	e->updated_at = now;
	pthread_mutex_lock(&j->lock);
	if (sqlite3_prepare_v2(j->db,
	                       "UPDATE requests SET state=?, attempts=?, http_status=?, error=?,"
	                       " result=?, updated_at=?, next_try=? WHERE id=?",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, journal_state_name(e->state), -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, e->attempts);
		sqlite3_bind_int64(st, 3, status);
		sqlite3_bind_text(st, 4, e->error, -1, SQLITE_STATIC);
		if (e->result)
			sqlite3_bind_text(st, 5, e->result, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 5);
		sqlite3_bind_double(st, 6, now);
		sqlite3_bind_double(st, 7, next);
		sqlite3_bind_int64(st, 8, e->id);
		if (sqlite3_step(st) != SQLITE_DONE)
			log_error("journal: cannot record the outcome of request %" PRId64 ": %s",
			          e->id, sqlite3_errmsg(j->db));
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&j->lock);
	if (e->state == JOURNAL_FAILED)
		log_warn("control request %" PRId64 " (%s %s) refused: %s", e->id, e->kind,
		         e->target, e->error);
}

static void *journal_loop(void *arg)
{
	struct journal *j = arg;

	pthread_mutex_lock(&j->lock);
	while (!j->stop) {
		struct journal_entry e;
		double due;
		long status = 0;
		char *body = NULL;

		if (journal_next_locked(j, &e, &due) < 0) {
			struct timespec ts;
			double until = due > 0 ? due : journal_now() + 30;

			ts.tv_sec = (time_t)until;
			ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
			pthread_cond_timedwait(&j->wake, &j->lock, &ts);
			continue;
		}
		pthread_mutex_unlock(&j->lock);
		j->send(j->arg, &e, &status, &body);
		journal_settle(j, &e, status, body);
		if (e.state != JOURNAL_QUEUED && j->done)
			j->done(j->arg, &e);
		journal_entry_clear(&e);
		pthread_mutex_lock(&j->lock);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

int journal_start(struct journal *j, journal_send_fn send, journal_done_fn done, void *arg)
{
	int r;

	j->send = send;
	j->done = done;
	j->arg = arg;
	r = pthread_create(&j->thread, NULL, journal_loop, j);
	if (r)
		return log_ret(-r, "journal: cannot start the delivery thread: %s", strerror(r));
	j->running = true;
	return 0;
}
