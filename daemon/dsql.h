/* The daemon's SQLite stores (the control journal, the branch views' overlay manifests)
 * open and fail alike. */
#ifndef REEF_DAEMON_DSQL_H
#define REEF_DAEMON_DSQL_H

#include <sqlite3.h>

/* An SQLite result code as a negative errno (0 for OK, DONE and ROW). */
int dsql_errno(int rc);
/* Opens (creating) the database at path for a store whose acknowledged changes must
 * survive a power cut, not only a crash: WAL, synchronous=FULL, a 5 s busy timeout, then
 * schema (statements that create only what is missing). 0 with *db; else a negative
 * errno, logged under what, and *db NULL. */
int dsql_open(sqlite3 **db, const char *path, const char *schema, const char *what);

#endif
