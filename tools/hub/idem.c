/* Idempotent POSTs: see idem.h. */
#include "idem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reef/log.h"
#include "runner.h"

#define IDEM_WAIT_S   60                /* how long a retry waits for the first attempt */
#define IDEM_KEEP_S   (7.0 * 24 * 3600) /* stored answers are kept a week */
#define IDEM_BODY_MAX ((size_t)1 << 20)

struct hub_idem {
	int64_t user_id;
	char key[65]; /* sha256 of the key, as stored */
};

int hub_idem_init(void)
{
	int r = ci_db_exec(NULL,
	                   "CREATE TABLE IF NOT EXISTS ci_idempotency(user_id INTEGER NOT NULL,"
	                   " key TEXT NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL,"
	                   " status INTEGER, content_type TEXT, body BLOB, owner TEXT NOT NULL,"
	                   " created_at REAL NOT NULL, UNIQUE(user_id, key))",
	                   NULL);

	if (r < 0)
		return r;
	/* a key left in progress by a hub that died: its client retries, so let it act */
	ci_db_exec(NULL, "DELETE FROM ci_idempotency WHERE status IS NULL OR created_at < ?", "d",
	           ci_now() - IDEM_KEEP_S);
	return 0;
}

static bool idem_key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > HUB_IDEM_KEY_MAX)
		return false;
	return strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == n;
}

/* 1: the stored answer is in resp; 0: the key is free again (released meanwhile);
 * -EINPROGRESS: still running. */
static int idem_replay(const struct hub_req *req, struct hub_resp *resp, int64_t user_id,
                       const char *key)
{
	sqlite3_stmt *st = ci_db_prep("SELECT method, url, status, content_type, body FROM"
	                              " ci_idempotency WHERE user_id=? AND key=?",
	                              "it", user_id, key);
	int r = 0;

	if (!st || sqlite3_step(st) != SQLITE_ROW)
		goto out;
	if (strcmp((const char *)sqlite3_column_text(st, 0), req->method) ||
	    strcmp((const char *)sqlite3_column_text(st, 1), req->url)) {
		hub_resp_error(resp, 422, "422 Idempotency-Key was used for another request");
		r = 1;
		goto out;
	}
	if (sqlite3_column_type(st, 2) == SQLITE_NULL) {
		r = -EINPROGRESS;
		goto out;
	}
	hub_resp_raw(resp, sqlite3_column_int(st, 2),
	             sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3)
	                                        : "application/json",
	             sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4));
	hub_resp_header(resp, "Idempotent-Replayed", "true");
	r = 1;
out:
	sqlite3_finalize(st);
	return r;
}

int hub_idem_begin(struct hub_req *req, struct hub_resp *resp, struct hub_idem **out)
{
	const char *given = hub_req_header(req, "Idempotency-Key");
	int64_t user_id = req->user ? req->user->id : 0;
	struct hub_idem *s;
	time_t deadline = time(NULL) + IDEM_WAIT_S;
	char owner[33], key[65];
	int r;

	*out = NULL;
	if (!given || strcmp(req->method, "POST") || !ci_db())
		return 0;
	if (!idem_key_ok(given)) {
		hub_resp_error(resp, 400,
		               "400 (Bad request) Idempotency-Key must be 1-128 of "
		               "[A-Za-z0-9-_.:]");
		return 1;
	}
	/* Anonymous callers (EPF callbacks, triggers: their credential is in the request)
	 * would share one key space, where anyone repeating a key got another caller's
	 * stored answer without its credential: they act every time instead. */
	if (!req->user)
		return 0;
	/* A key is a bearer of a stored answer: kept as a hash, like tokens. */
	ci_token_hash(given, key);
	if (ci_random_hex(owner, 16) < 0)
		return 0;
	while (time(NULL) < deadline) {
		sqlite3_stmt *st;
		bool mine = false;

		/* the connection is shared by every thread, so sqlite3_changes() could be
		 * another statement's: who inserted the row is told by its owner token */
		r = ci_db_exec(NULL,
		               "INSERT OR IGNORE INTO ci_idempotency(user_id, key, method, url,"
		               " owner, created_at) VALUES(?,?,?,?,?,?)",
		               "ittttd", user_id, key, req->method, req->url, owner, ci_now());
		if (r < 0)
			return 0; /* act without the guarantee rather than refuse */
		st = ci_db_prep("SELECT owner FROM ci_idempotency WHERE user_id=? AND key=?", "it",
		                user_id, key);
		if (st && sqlite3_step(st) == SQLITE_ROW)
			mine = !strcmp((const char *)sqlite3_column_text(st, 0), owner);
		sqlite3_finalize(st);
		if (mine) {
			s = calloc(1, sizeof(*s));
			if (!s) {
				ci_db_exec(NULL,
				           "DELETE FROM ci_idempotency WHERE user_id=? AND key=?",
				           "it", user_id, key);
				hub_resp_error(resp, 500, "500 Internal Server Error");
				return 1;
			}
			s->user_id = user_id;
			snprintf(s->key, sizeof(s->key), "%s", key);
			*out = s;
			return 0;
		}
		r = idem_replay(req, resp, user_id, key);
		if (r == 1)
			return 1;
		if (r == -EINPROGRESS)
			nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
	}
	hub_resp_error(resp, 409, "409 A request with this Idempotency-Key is in progress");
	return 1;
}

void hub_idem_end(struct hub_idem *s, const struct hub_resp *resp)
{
	if (!s)
		return;
	if (resp->status > 0 && resp->status < 500 && resp->fd < 0 &&
	    resp->body.len <= IDEM_BODY_MAX) {
		sqlite3_stmt *st =
		    ci_db_prep("UPDATE ci_idempotency SET status=?, content_type=?, body=? WHERE"
		               " user_id=? AND key=?",
		               "ittit", (int64_t)resp->status, resp->content_type,
		               resp->body.data ? resp->body.data : "", s->user_id, s->key);

		if (st) {
			/* the body is bytes: rebind it as a blob of its exact length */
			sqlite3_bind_blob(st, 3, resp->body.data ? resp->body.data : "",
			                  (int)resp->body.len, SQLITE_TRANSIENT);
			if (sqlite3_step(st) != SQLITE_DONE)
				log_warn("idempotency: cannot store an answer for user %lld",
				         (long long)s->user_id);
		}
		sqlite3_finalize(st);
	} else {
		ci_db_exec(NULL, "DELETE FROM ci_idempotency WHERE user_id=? AND key=?", "it",
		           s->user_id, s->key);
	}
	free(s);
}
