#include "overlay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsql.h"

struct overlay {
	struct overlay *next;
	struct ovset *set;
	pthread_mutex_t lock;
	/* the data gate: writes into data files hold it shared; a commit holds it exclusive
	 * from its snapshot to its drop, so no acknowledged write falls between the two */
	pthread_rwlock_t gate;
	sqlite3 *db;
	int64_t project_id;
	char *branch;
	char *dir;  /* the overlay's directory */
	int datafd; /* its data/ directory, for fsync */
	int64_t next_id;
	size_t count;
	uint64_t epoch;
};

struct ovset {
	pthread_mutex_t lock;
	char *root; /* DIR/overlay */
	struct overlay *list;
	uint64_t bytes; /* __atomic */
};

static int exec_sql(sqlite3 *db, const char *sql)
{
	return dsql_errno(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

void ov_parent(const char *path, char *out, size_t cap)
{
	const char *s = strrchr(path, '/');
	size_t n = s ? (size_t)(s - path) : 0;

	if (n >= cap)
		n = cap - 1;
	memcpy(out, path, n);
	out[n] = 0;
}

static void hex_of(const char *s, char *out, size_t cap)
{
	static const char hx[] = "0123456789abcdef";
	size_t j = 0;

	for (; *s && j + 2 < cap; s++) {
		out[j++] = hx[(unsigned char)*s >> 4];
		out[j++] = hx[(unsigned char)*s & 15];
	}
	out[j] = 0;
}

static int mkdir_one(const char *p)
{
	if (mkdir(p, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void ov_free(struct overlay *ov)
{
	if (!ov)
		return;
	if (ov->db)
		sqlite3_close(ov->db);
	if (ov->datafd >= 0)
		close(ov->datafd);
	pthread_mutex_destroy(&ov->lock);
	pthread_rwlock_destroy(&ov->gate);
	free(ov->branch);
	free(ov->dir);
	free(ov);
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int64_t v = 0;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Data files no row names: left by a crash between their creation and the row that
 * names them (nothing acknowledged them), or by a clear that did not finish. */
static void sweep_data(struct overlay *ov)
{
	DIR *d = fdopendir(dup(ov->datafd));
	struct dirent *e;
	sqlite3_stmt *st = NULL;

	if (!d)
		return;
	if (sqlite3_prepare_v2(ov->db, "SELECT 1 FROM ent WHERE data = ? AND kind = 1", -1, &st,
	                       NULL) != SQLITE_OK) {
		closedir(d);
		return;
	}
	while ((e = readdir(d))) {
		char *end;
		long long id = strtoll(e->d_name, &end, 10);
		struct stat sb;

		if (e->d_name[0] == '.' || *end || id <= 0)
			continue;
		if (id >= ov->next_id)
			ov->next_id = id + 1;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, id);
		if (sqlite3_step(st) == SQLITE_ROW) {
			if (fstatat(ov->datafd, e->d_name, &sb, 0) == 0)
				__atomic_add_fetch(&ov->set->bytes, (uint64_t)sb.st_size,
				                   __ATOMIC_RELAXED);
			continue;
		}
		unlinkat(ov->datafd, e->d_name, 0);
	}
	sqlite3_finalize(st);
	closedir(d);
}

static int ov_load(struct ovset *s, const char *dir, struct overlay **out)
{
	struct overlay *ov = calloc(1, sizeof(*ov));
	char path[4200];
	int r;

	*out = NULL;
	if (!ov)
		return -ENOMEM;
	ov->datafd = -1;
	ov->set = s;
	pthread_mutex_init(&ov->lock, NULL);
	{
		pthread_rwlockattr_t a;

		/* a commit waiting for the gate is not starved by a stream of writes */
		pthread_rwlockattr_init(&a);
		pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&ov->gate, &a);
		pthread_rwlockattr_destroy(&a);
	}
	ov->dir = strdup(dir);
	if (!ov->dir) {
		r = -ENOMEM;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/data", dir);
	r = mkdir_one(path);
	if (r < 0)
		goto fail;
	ov->datafd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ov->datafd < 0) {
		r = -errno;
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/manifest.db", dir);
	r = dsql_open(&ov->db, path,
	              "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
	              "CREATE TABLE IF NOT EXISTS ent(path TEXT PRIMARY KEY,"
	              " parent TEXT NOT NULL, kind INTEGER NOT NULL,"
	              " exec INTEGER NOT NULL DEFAULT 0, data INTEGER NOT NULL DEFAULT 0,"
	              " blob TEXT NOT NULL DEFAULT '', lfs TEXT NOT NULL DEFAULT '',"
	              " size INTEGER NOT NULL DEFAULT -1, mtime INTEGER NOT NULL DEFAULT 0,"
	              " target TEXT NOT NULL DEFAULT '');"
	              "CREATE INDEX IF NOT EXISTS ent_parent ON ent(parent);",
	              "overlay manifest");
	if (r < 0)
		goto fail;
	ov->count = (size_t)query_int(ov->db, "SELECT count(*) FROM ent");
	ov->next_id = query_int(ov->db, "SELECT max(data) FROM ent") + 1;
	{
		char v[64] = "";
		sqlite3_stmt *st = NULL;

		if (sqlite3_prepare_v2(ov->db, "SELECT v FROM meta WHERE k = ?", -1, &st, NULL) ==
		    SQLITE_OK) {
			sqlite3_bind_text(st, 1, "project", -1, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW)
				snprintf(v, sizeof(v), "%s",
				         (const char *)sqlite3_column_text(st, 0));
			ov->project_id = strtoll(v, NULL, 10);
			sqlite3_reset(st);
			sqlite3_bind_text(st, 1, "branch", -1, SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_ROW)
				ov->branch = strdup((const char *)sqlite3_column_text(st, 0));
		}
		sqlite3_finalize(st);
	}
	sweep_data(ov);
	*out = ov;
	return 0;
fail:
	ov_free(ov);
	return r;
}

int ovset_open(struct ovset **out, const char *dir)
{
	struct ovset *s = calloc(1, sizeof(*s));
	char path[4200];
	DIR *d1;
	struct dirent *e1;
	int r;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	snprintf(path, sizeof(path), "%s/overlay", dir);
	s->root = strdup(path);
	if (!s->root) {
		ovset_free(s);
		return -ENOMEM;
	}
	r = mkdir_one(s->root);
	if (r < 0) {
		ovset_free(s);
		return r;
	}
	d1 = opendir(s->root);
	while (d1 && (e1 = readdir(d1))) {
		DIR *d2;
		struct dirent *e2;
		char p1[4200];

		if (e1->d_name[0] == '.')
			continue;
		snprintf(p1, sizeof(p1), "%s/%s", s->root, e1->d_name);
		d2 = opendir(p1);
		while (d2 && (e2 = readdir(d2))) {
			struct overlay *ov;
			char p2[4500];

			if (e2->d_name[0] == '.')
				continue;
			snprintf(p2, sizeof(p2), "%s/%s", p1, e2->d_name);
			if (ov_load(s, p2, &ov) == 0) {
				if (!ov->branch || ov->project_id <= 0) {
					ov_free(
					    ov); /* its meta never made it: nothing was written */
					continue;
				}
				ov->next = s->list;
				s->list = ov;
			}
		}
		if (d2)
			closedir(d2);
	}
	if (d1)
		closedir(d1);
	*out = s;
	return 0;
}

void ovset_free(struct ovset *s)
{
	struct overlay *ov, *next;

	if (!s)
		return;
	for (ov = s->list; ov; ov = next) {
		next = ov->next;
		ov_free(ov);
	}
	pthread_mutex_destroy(&s->lock);
	free(s->root);
	free(s);
}

int ov_meta_set(struct overlay *ov, const char *key, const char *value)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(ov->db,
	                        value ? "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)"
	                              : "DELETE FROM meta WHERE k = ?",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		if (value)
			sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	return dsql_errno(rc);
}

int ov_meta_get(struct overlay *ov, const char *key, char *out, size_t cap)
{
	sqlite3_stmt *st = NULL;
	int r = -ENOENT;

	out[0] = 0;
	if (sqlite3_prepare_v2(ov->db, "SELECT v FROM meta WHERE k = ?", -1, &st, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

int ovset_get(struct ovset *s, int64_t project_id, const char *branch, bool create,
              const char *base, struct overlay **out)
{
	struct overlay *ov;
	char hex[600], p1[4200], p2[4800], id[32];
	int r;

	*out = NULL;
	if (strlen(branch) > 255)
		return -ENAMETOOLONG;
	pthread_mutex_lock(&s->lock);
	for (ov = s->list; ov; ov = ov->next)
		if (ov->project_id == project_id && strcmp(ov->branch, branch) == 0)
			break;
	if (ov || !create) {
		pthread_mutex_unlock(&s->lock);
		*out = ov;
		return 0;
	}
	snprintf(id, sizeof(id), "%" PRId64, project_id);
	snprintf(p1, sizeof(p1), "%s/%s", s->root, id);
	hex_of(branch, hex, sizeof(hex));
	snprintf(p2, sizeof(p2), "%s/%s", p1, hex);
	r = mkdir_one(p1);
	if (r == 0)
		r = mkdir_one(p2);
	if (r == 0)
		r = ov_load(s, p2, &ov);
	if (r == 0) {
		ov->project_id = project_id;
		ov->branch = strdup(branch);
		r = ov->branch ? ov_tx_begin(ov) : -ENOMEM;
		if (r == 0) {
			r = ov_meta_set(ov, "project", id);
			if (r == 0)
				r = ov_meta_set(ov, "branch", branch);
			if (r == 0)
				r = ov_meta_set(ov, "base", base ? base : "");
			r = ov_tx_end(ov, r == 0) < 0 && r == 0 ? -EIO : r;
		}
		if (r < 0) {
			ov_free(ov);
			ov = NULL;
		}
	}
	if (ov) {
		ov->next = s->list;
		__atomic_store_n(&s->list, ov, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&s->lock);
	*out = ov;
	return r;
}

bool ovset_any(struct ovset *s)
{
	return __atomic_load_n(&s->list, __ATOMIC_ACQUIRE) != NULL;
}

void ovset_each(struct ovset *s, void (*fn)(void *arg, struct overlay *ov), void *arg)
{
	struct overlay *ov;

	pthread_mutex_lock(&s->lock);
	for (ov = s->list; ov; ov = ov->next)
		if (ov_count(ov) > 0)
			fn(arg, ov);
	pthread_mutex_unlock(&s->lock);
}

uint64_t ovset_bytes(struct ovset *s)
{
	return __atomic_load_n(&s->bytes, __ATOMIC_RELAXED);
}

void ovset_bytes_add(struct ovset *s, int64_t delta)
{
	__atomic_add_fetch(&s->bytes, (uint64_t)delta, __ATOMIC_RELAXED);
}

int64_t ov_project(const struct overlay *ov)
{
	return ov->project_id;
}

const char *ov_branch(const struct overlay *ov)
{
	return ov->branch;
}

void ov_base(struct overlay *ov, char out[41])
{
	if (ov_meta_get(ov, "base", out, 41) < 0)
		out[0] = 0;
}

int ov_set_base(struct overlay *ov, const char *commit)
{
	return ov_meta_set(ov, "base", commit);
}

size_t ov_count(struct overlay *ov)
{
	return __atomic_load_n(&ov->count, __ATOMIC_RELAXED);
}

uint64_t ov_epoch(struct overlay *ov)
{
	return __atomic_load_n(&ov->epoch, __ATOMIC_RELAXED);
}

void ov_lock(struct overlay *ov)
{
	pthread_mutex_lock(&ov->lock);
}

void ov_unlock(struct overlay *ov)
{
	pthread_mutex_unlock(&ov->lock);
}

void ov_gate_shared(struct overlay *ov)
{
	pthread_rwlock_rdlock(&ov->gate);
}

void ov_gate_exclusive(struct overlay *ov)
{
	pthread_rwlock_wrlock(&ov->gate);
}

void ov_gate_release(struct overlay *ov)
{
	pthread_rwlock_unlock(&ov->gate);
}

int ov_tx_begin(struct overlay *ov)
{
	return exec_sql(ov->db, "BEGIN IMMEDIATE");
}

int ov_tx_end(struct overlay *ov, bool commit)
{
	int r = exec_sql(ov->db, commit ? "COMMIT" : "ROLLBACK");

	if (r < 0 && commit)
		exec_sql(ov->db, "ROLLBACK");
	/* the row count follows the database, whatever the transaction did */
	__atomic_store_n(&ov->count, (size_t)query_int(ov->db, "SELECT count(*) FROM ent"),
	                 __ATOMIC_RELAXED);
	return r;
}

static void ent_read(sqlite3_stmt *st, struct ov_ent *e)
{
	const unsigned char *t;

	memset(e, 0, sizeof(*e));
	snprintf(e->path, sizeof(e->path), "%s", (const char *)sqlite3_column_text(st, 0));
	e->kind = (enum ov_kind)sqlite3_column_int(st, 1);
	e->exec = sqlite3_column_int(st, 2) != 0;
	e->data = sqlite3_column_int64(st, 3);
	t = sqlite3_column_text(st, 4);
	snprintf(e->blob, sizeof(e->blob), "%s", t ? (const char *)t : "");
	t = sqlite3_column_text(st, 5);
	snprintf(e->lfs, sizeof(e->lfs), "%s", t ? (const char *)t : "");
	e->size = sqlite3_column_int64(st, 6);
	e->mtime = sqlite3_column_int64(st, 7);
	t = sqlite3_column_text(st, 8);
	snprintf(e->target, sizeof(e->target), "%s", t ? (const char *)t : "");
}

#define ENT_COLS "path, kind, exec, data, blob, lfs, size, mtime, target"

int ov_get(struct overlay *ov, const char *path, struct ov_ent *out)
{
	sqlite3_stmt *st = NULL;
	int r = -ENOENT, rc;

	rc = sqlite3_prepare_v2(ov->db, "SELECT " ENT_COLS " FROM ent WHERE path = ?", -1, &st,
	                        NULL);
	if (rc != SQLITE_OK)
		return dsql_errno(rc);
	sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		ent_read(st, out);
		r = 0;
	} else if (rc != SQLITE_DONE) {
		r = dsql_errno(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int ov_put(struct overlay *ov, const struct ov_ent *e)
{
	sqlite3_stmt *st = NULL;
	char parent[OV_PATH_MAX];
	int rc;

	if (!e->path[0])
		return -EINVAL;
	ov_parent(e->path, parent, sizeof(parent));
	rc = sqlite3_prepare_v2(ov->db,
	                        "INSERT OR REPLACE INTO ent(path, parent, kind, exec, data, blob,"
	                        " lfs, size, mtime, target) VALUES(?,?,?,?,?,?,?,?,?,?)",
	                        -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, e->path, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, parent, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, (int)e->kind);
		sqlite3_bind_int(st, 4, e->exec ? 1 : 0);
		sqlite3_bind_int64(st, 5, e->data);
		sqlite3_bind_text(st, 6, e->blob, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, e->lfs, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 8, e->size);
		sqlite3_bind_int64(st, 9, e->mtime);
		sqlite3_bind_text(st, 10, e->target, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (sqlite3_get_autocommit(ov->db))
		__atomic_store_n(&ov->count, (size_t)query_int(ov->db, "SELECT count(*) FROM ent"),
		                 __ATOMIC_RELAXED);
	return dsql_errno(rc);
}

int ov_del(struct overlay *ov, const char *path)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(ov->db, "DELETE FROM ent WHERE path = ?", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (sqlite3_get_autocommit(ov->db))
		__atomic_store_n(&ov->count, (size_t)query_int(ov->db, "SELECT count(*) FROM ent"),
		                 __ATOMIC_RELAXED);
	return dsql_errno(rc);
}

static int ents_query(sqlite3_stmt *st, struct ov_ent **out, size_t *n)
{
	struct ov_ent *v = NULL;
	size_t cnt = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			struct ov_ent *nv = realloc(v, nc * sizeof(*nv));

			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		ent_read(st, &v[cnt++]);
	}
	if (rc != SQLITE_DONE) {
		free(v);
		return dsql_errno(rc);
	}
	*out = v;
	*n = cnt;
	return 0;
}

int ov_children(struct overlay *ov, const char *dir, struct ov_ent **out, size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	*out = NULL;
	*n = 0;
	rc = sqlite3_prepare_v2(
	    ov->db, "SELECT " ENT_COLS " FROM ent WHERE parent = ? ORDER BY path", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return dsql_errno(rc);
	sqlite3_bind_text(st, 1, dir, -1, SQLITE_STATIC);
	r = ents_query(st, out, n);
	sqlite3_finalize(st);
	return r;
}

int ov_all(struct overlay *ov, struct ov_ent **out, size_t *n)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	*out = NULL;
	*n = 0;
	rc =
	    sqlite3_prepare_v2(ov->db, "SELECT " ENT_COLS " FROM ent ORDER BY path", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return dsql_errno(rc);
	r = ents_query(st, out, n);
	sqlite3_finalize(st);
	return r;
}

/* Rows below dir are those with dir + '/' <= path < dir + '0' ('0' follows '/'). */
static void below_bounds(const char *dir, char *lo, char *hi, size_t cap)
{
	snprintf(lo, cap, "%s/", dir);
	snprintf(hi, cap, "%s0", dir);
}

int ov_has_below(struct overlay *ov, const char *dir)
{
	sqlite3_stmt *st = NULL;
	char lo[OV_PATH_MAX + 2], hi[OV_PATH_MAX + 2];
	int rc, r;

	below_bounds(dir, lo, hi, sizeof(lo));
	rc = sqlite3_prepare_v2(ov->db, "SELECT 1 FROM ent WHERE path >= ? AND path < ? LIMIT 1",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return dsql_errno(rc);
	sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	r = rc == SQLITE_ROW ? 1 : dsql_errno(rc);
	sqlite3_finalize(st);
	return r;
}

int ov_move_below(struct overlay *ov, const char *src, const char *dst)
{
	sqlite3_stmt *st = NULL;
	char lo[OV_PATH_MAX + 2], hi[OV_PATH_MAX + 2];
	int rc;

	below_bounds(src, lo, hi, sizeof(lo));
	/* substr is 1-based: the part after "src" keeps its leading '/' */
	rc = sqlite3_prepare_v2(
	    ov->db,
	    "UPDATE ent SET path = ?3 || substr(path, ?4),"
	    " parent = CASE WHEN parent = ?5 THEN ?3 ELSE ?3 || substr(parent, ?4) END"
	    " WHERE path >= ?1 AND path < ?2",
	    -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, dst, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (int64_t)strlen(src) + 1);
		sqlite3_bind_text(st, 5, src, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	return dsql_errno(rc);
}

int ov_del_below(struct overlay *ov, const char *dir, int64_t **ids, size_t *n)
{
	sqlite3_stmt *st = NULL;
	char lo[OV_PATH_MAX + 2], hi[OV_PATH_MAX + 2];
	int64_t *v = NULL;
	size_t cnt = 0, cap = 0;
	int rc;

	*ids = NULL;
	*n = 0;
	below_bounds(dir, lo, hi, sizeof(lo));
	rc = sqlite3_prepare_v2(ov->db,
	                        "SELECT data FROM ent WHERE kind = 1 AND data > 0 AND path >= ?"
	                        " AND path < ?",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return dsql_errno(rc);
	sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			int64_t *nv = realloc(v, nc * sizeof(*nv));

			if (!nv) {
				free(v);
				sqlite3_finalize(st);
				return -ENOMEM;
			}
			v = nv;
			cap = nc;
		}
		v[cnt++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	st = NULL;
	rc = sqlite3_prepare_v2(ov->db, "DELETE FROM ent WHERE path >= ? AND path < ?", -1, &st,
	                        NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, lo, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, hi, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (dsql_errno(rc) < 0) {
		free(v);
		return dsql_errno(rc);
	}
	*ids = v;
	*n = cnt;
	return 0;
}

int64_t ov_id_new(struct overlay *ov)
{
	return __atomic_fetch_add(&ov->next_id, 1, __ATOMIC_RELAXED);
}

int ov_data_create(struct overlay *ov, int64_t id)
{
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "%" PRId64, id);
	fd = openat(ov->datafd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	/* the name must survive a crash as well as the row that will point at it */
	if (fsync(fd) < 0 || fsync(ov->datafd) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return fd;
}

int ov_data_open(struct overlay *ov, int64_t id, int flags)
{
	char name[32];
	int fd;

	snprintf(name, sizeof(name), "%" PRId64, id);
	fd = openat(ov->datafd, name, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int ov_data_path(struct overlay *ov, int64_t id, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/data/%" PRId64, ov->dir, id);

	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int64_t ov_data_size(struct overlay *ov, int64_t id)
{
	char name[32];
	struct stat sb;

	snprintf(name, sizeof(name), "%" PRId64, id);
	if (fstatat(ov->datafd, name, &sb, 0) < 0)
		return -errno;
	return (int64_t)sb.st_size;
}

void ov_data_unlink(struct overlay *ov, int64_t id)
{
	int64_t size = ov_data_size(ov, id);
	char name[32];

	snprintf(name, sizeof(name), "%" PRId64, id);
	if (unlinkat(ov->datafd, name, 0) == 0 && size > 0)
		ovset_bytes_add(ov->set, -size);
}

int ov_clear(struct overlay *ov)
{
	struct ov_ent *v = NULL;
	size_t n = 0, i;
	int r;

	r = ov_all(ov, &v, &n);
	if (r < 0)
		return r;
	r = ov_tx_begin(ov);
	if (r == 0) {
		r = exec_sql(ov->db, "DELETE FROM ent; DELETE FROM meta WHERE k IN ('base');");
		r = ov_tx_end(ov, r == 0) < 0 && r == 0 ? -EIO : r;
	}
	if (r == 0) {
		/* the rows are gone for good: their files are garbage now (a crash here
		 * leaves them to sweep_data) */
		for (i = 0; i < n; i++)
			if (v[i].kind == OV_FILE && v[i].data > 0)
				ov_data_unlink(ov, v[i].data);
		__atomic_add_fetch(&ov->epoch, 1, __ATOMIC_RELAXED);
	}
	free(v);
	return r;
}

void ov_bump_epoch(struct overlay *ov)
{
	__atomic_add_fetch(&ov->epoch, 1, __ATOMIC_RELAXED);
}
