/* Opening the daemon's SQLite stores: see dsql.h. */
#include "dsql.h"

#include <errno.h>
#include <stddef.h>

#include "reef/log.h"

int dsql_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_READONLY:
	case SQLITE_PERM:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	default:
		return -EIO;
	}
}

int dsql_open(sqlite3 **db, const char *path, const char *schema, const char *what)
{
	char *msg = NULL;
	int rc, r;

	rc = sqlite3_open_v2(
	    path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = log_ret(dsql_errno(rc), "%s %s: %s", what, path, sqlite3_errstr(rc));
		goto fail;
	}
	/* a moment's lock by another connection is waited out rather than failing the
	 * operation that met it */
	sqlite3_busy_timeout(*db, 5000);
	rc = sqlite3_exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
	                  &msg);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(*db, schema, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		r = log_ret(dsql_errno(rc), "%s %s: %s", what, path,
		            msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		goto fail;
	}
	return 0;
fail:
	sqlite3_close(*db);
	*db = NULL;
	return r;
}
