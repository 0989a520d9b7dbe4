/* Management API under /api/v1 (being written). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core.h"
#include "hub_ci.h"
#include "runner.h"

static const char mg_schema[] =
    "CREATE TABLE IF NOT EXISTS mg_transfer(project_id INTEGER PRIMARY KEY,"
    " bytes INTEGER NOT NULL);";

int hub_ci_init(struct hub *h)
{
	int r = ci_runner_start(h);

	if (r < 0)
		return r;
	if (sqlite3_exec(ci_db(), mg_schema, NULL, NULL, NULL) != SQLITE_OK)
		return -EIO;
	return 0;
}

void hub_ci_shutdown(struct hub *h)
{
	(void)h;
	ci_runner_stop();
}

void hub_ci_transfer_add(int64_t project_id, uint64_t bytes)
{
	if (!ci_db())
		return;
	ci_db_exec(NULL,
	           "INSERT INTO mg_transfer(project_id, bytes) VALUES(?, ?) ON CONFLICT(project_id)"
	           " DO UPDATE SET bytes=bytes+excluded.bytes",
	           "ii", project_id, (int64_t)bytes);
}

void hub_mgmt_route(struct hub_req *req, struct hub_resp *resp, const char *rest)
{
	(void)req;
	(void)rest;
	hub_resp_not_found(resp);
}
