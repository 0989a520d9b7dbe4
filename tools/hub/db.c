/* The hub's SQLite store: users, tokens, namespaces (user and nested groups), projects
 * and members. One connection in serialized mode is shared by every server thread. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reef/hash.h"
#include "protect.h"
#include "reef/log.h"

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS users("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " username TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    " name TEXT NOT NULL, email TEXT NOT NULL,"
    " is_admin INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tokens("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL, sha256 TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,"
    " expires_at TEXT, revoked INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS namespaces("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL, path TEXT NOT NULL,"
    " full_path TEXT NOT NULL UNIQUE COLLATE NOCASE,"
    " kind TEXT NOT NULL CHECK(kind IN ('user','group')),"
    " parent_id INTEGER REFERENCES namespaces(id),"
    " owner_id INTEGER REFERENCES users(id), created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS group_members("
    " namespace_id INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " access_level INTEGER NOT NULL, PRIMARY KEY(namespace_id, user_id));"
    "CREATE TABLE IF NOT EXISTS projects("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " namespace_id INTEGER NOT NULL REFERENCES namespaces(id),"
    " name TEXT NOT NULL, path TEXT NOT NULL COLLATE NOCASE, description TEXT,"
    " visibility TEXT NOT NULL CHECK(visibility IN ('private','internal','public')),"
    " creator_id INTEGER REFERENCES users(id),"
    " created_at INTEGER NOT NULL, last_activity_at INTEGER NOT NULL,"
    " UNIQUE(namespace_id, path));"
    "CREATE TABLE IF NOT EXISTS members("
    " project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    " user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
    " access_level INTEGER NOT NULL, PRIMARY KEY(project_id, user_id));"
    "CREATE INDEX IF NOT EXISTS members_user ON members(user_id);"
    "CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_id);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema_version', '1');";

/* Tables added after schema version 1: created on every open, so data directories made
 * by an older hub gain them (CREATE ... IF NOT EXISTS is idempotent). */
static const char schema_later_sql[] =
    /* GitLab's protected branches (lib/api/protected_branches.rb): name is a branch or
     * a wildcard; levels are 0 (no one), 30, 40 or 60 (admins). */
    "CREATE TABLE IF NOT EXISTS protected_branches("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL, push_access_level INTEGER NOT NULL,"
    " merge_access_level INTEGER NOT NULL, allow_force_push INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE(project_id, name));"
    /* Project settings GitLab keeps in project_ci_cd_settings and friends. */
    "CREATE TABLE IF NOT EXISTS project_settings("
    " project_id INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,"
    " job_token_push INTEGER NOT NULL DEFAULT 0);"
    /* Ref updates a push is about to make, written by the pre-receive hook before any
     * ref moves and consumed (pipeline created, row deleted) after receive-pack ends or,
     * after a crash, when the hub starts again (git.h). */
    "CREATE TABLE IF NOT EXISTS push_events("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, push_id TEXT NOT NULL,"
    " project_id INTEGER NOT NULL, ref TEXT NOT NULL, old_sha TEXT NOT NULL,"
    " new_sha TEXT NOT NULL, user_id INTEGER NOT NULL, pipeline INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);";

int hub_db_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CANTOPEN:
	case SQLITE_NOTFOUND:
		return -ENOENT;
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_READONLY:
		return -EACCES;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_TOOBIG:
		return -EFBIG;
	default:
		return -EIO;
	}
}

int hub_db_open(struct hub *hub, const char *dir, bool create)
{
	char path[PATH_MAX];
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX;
	char *err = NULL;
	int rc;

	if (strlen(dir) >= sizeof(hub->dir) - 32)
		return -ENAMETOOLONG;
	snprintf(hub->dir, sizeof(hub->dir), "%s", dir);
	hub_pathf(path, sizeof(path), "%s/hub.db", dir);
	if (create) {
		/* Owner-only from the first byte (SQLite gives its -wal and -shm files the
		 * database's mode); tokens' hashes and private projects' names live here. */
		int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);

		if (fd >= 0)
			close(fd);
		flags |= SQLITE_OPEN_CREATE;
	}
	/* A database made before this was 0644 */
	chmod(path, 0600);
	rc = sqlite3_open_v2(path, &hub->db, flags, NULL);
	if (rc != SQLITE_OK) {
		int r = hub_db_err(rc);

		log_error("cannot open %s: %s", path, sqlite3_errmsg(hub->db));
		sqlite3_close(hub->db);
		hub->db = NULL;
		return r;
	}
	sqlite3_busy_timeout(hub->db, 10000);
	sqlite3_extended_result_codes(hub->db, 0);
	rc = sqlite3_exec(hub->db,
	                  "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"
	                  " PRAGMA synchronous=NORMAL;",
	                  NULL, NULL, &err);
	if (rc == SQLITE_OK && create)
		rc = sqlite3_exec(hub->db, schema_sql, NULL, NULL, &err);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(hub->db, schema_later_sql, NULL, NULL, &err);
	if (rc != SQLITE_OK) {
		log_error("cannot prepare %s: %s", path, err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
		hub_db_close(hub);
		return hub_db_err(rc);
	}
	return 0;
}

void hub_db_close(struct hub *hub)
{
	if (hub->db)
		sqlite3_close(hub->db);
	hub->db = NULL;
}

static void copy_col(char *dst, size_t n, sqlite3_stmt *st, int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);

	snprintf(dst, n, "%s", s ? (const char *)s : "");
}

static int user_query(struct hub *hub, const char *where, const char *s, int64_t id,
                      struct hub_user *out)
{
	char sql[256];
	sqlite3_stmt *st = NULL;
	int rc, r;

	snprintf(sql, sizeof(sql), "SELECT id, username, name, email, is_admin FROM users WHERE %s",
	         where);
	rc = sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	if (s)
		sqlite3_bind_text(st, 1, s, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		memset(out, 0, sizeof(*out));
		out->id = sqlite3_column_int64(st, 0);
		copy_col(out->username, sizeof(out->username), st, 1);
		copy_col(out->name, sizeof(out->name), st, 2);
		copy_col(out->email, sizeof(out->email), st, 3);
		out->is_admin = sqlite3_column_int(st, 4) != 0;
		r = 0;
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : hub_db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}

int hub_user_by_name(struct hub *hub, const char *username, struct hub_user *out)
{
	return user_query(hub, "username = ?1", username, 0, out);
}

int hub_user_by_id(struct hub *hub, int64_t id, struct hub_user *out)
{
	return user_query(hub, "id = ?1", NULL, id, out);
}

static void token_digest(const char *token, char hex[HASH_SHA256_HEX + 1])
{
	uint8_t bin[HASH_SHA256_LEN];

	hash_buf(HASH_SHA256, token, strlen(token), bin);
	hash_hex(hex, bin, sizeof(bin));
}

static void today_utc(char out[16])
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(out, 16, "%Y-%m-%d", &tm);
}

static const char *const scope_names[] = {
    "api", "read_api", "read_user", "read_repository", "write_repository", "sudo", "admin_mode"};

int hub_scopes_parse(const char *s, unsigned *out)
{
	unsigned bits = 0;

	while (*s) {
		size_t n = strcspn(s, ",");
		bool found = false;

		for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++) {
			if (strlen(scope_names[i]) == n && strncmp(scope_names[i], s, n) == 0) {
				bits |= 1u << i;
				found = true;
			}
		}
		if (!found)
			return -EINVAL;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!bits)
		return -EINVAL;
	*out = bits;
	return 0;
}

void hub_scopes_format(unsigned scopes, struct buf *out)
{
	for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++) {
		if (scopes & (1u << i)) {
			if (out->len)
				buf_puts(out, ",");
			buf_puts(out, scope_names[i]);
		}
	}
}

int hub_user_by_token(struct hub *hub, const char *token, struct hub_user *out, unsigned *scopes)
{
	char hex[HASH_SHA256_HEX + 1], today[16];
	sqlite3_stmt *st = NULL;
	int64_t uid = 0;
	int rc, r = -EACCES;

	if (!*token || strlen(token) > 255)
		return -EACCES;
	token_digest(token, hex);
	today_utc(today);
	rc = sqlite3_prepare_v2(
	    hub->db,
	    "SELECT user_id, scopes FROM tokens WHERE sha256 = ?1 AND revoked = 0"
	    " AND (expires_at IS NULL OR expires_at > ?2)",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_text(st, 1, hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, today, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *sc = (const char *)sqlite3_column_text(st, 1);

		uid = sqlite3_column_int64(st, 0);
		if (hub_scopes_parse(sc ? sc : "", scopes) < 0)
			*scopes = 0;
		r = 0;
	} else if (rc != SQLITE_DONE) {
		r = hub_db_err(rc);
	}
	sqlite3_finalize(st);
	if (r == 0)
		r = hub_user_by_id(hub, uid, out);
	return r == -ENOENT ? -EACCES : r;
}

static int exec_insert(struct hub *hub, sqlite3_stmt *st, int64_t *id)
{
	int rc = sqlite3_step(st);

	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return hub_db_err(rc);
	if (id)
		*id = sqlite3_last_insert_rowid(hub->db);
	return 0;
}

/* Server threads share one connection, and a transaction belongs to the connection,
 * not to a thread: writers take turns, or one thread's BEGIN would swallow another's
 * statements (and last_insert_rowid would race). */
static pthread_mutex_t tx_lock = PTHREAD_MUTEX_INITIALIZER;

static int begin(struct hub *hub)
{
	int r;

	pthread_mutex_lock(&tx_lock);
	r = hub_db_err(sqlite3_exec(hub->db, "BEGIN IMMEDIATE", NULL, NULL, NULL));
	if (r < 0)
		pthread_mutex_unlock(&tx_lock);
	return r;
}

static int finish(struct hub *hub, int r)
{
	if (r < 0)
		sqlite3_exec(hub->db, "ROLLBACK", NULL, NULL, NULL);
	else
		r = hub_db_err(sqlite3_exec(hub->db, "COMMIT", NULL, NULL, NULL));
	if (r < 0 && !sqlite3_get_autocommit(hub->db))
		sqlite3_exec(hub->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&tx_lock);
	return r;
}

bool hub_path_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > HUB_MAX_NAME)
		return false;
	/* GitLab: starts with a letter, digit or '_'; only letters, digits, '_', '-', '.';
	 * no ".git"/".atom" suffix; no consecutive special characters. */
	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
	      (s[0] >= '0' && s[0] <= '9') || s[0] == '_'))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool special = c == '_' || c == '-' || c == '.';

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      special))
			return false;
		if (special && i > 0 && (s[i - 1] == '-' || s[i - 1] == '.') && c != '_')
			return false;
	}
	if (s[n - 1] == '.' || s[n - 1] == '-')
		return false;
	if ((n >= 4 && strcmp(s + n - 4, ".git") == 0) ||
	    (n >= 5 && strcmp(s + n - 5, ".atom") == 0))
		return false;
	return true;
}

int hub_user_add(struct hub *hub, const char *username, const char *name, const char *email,
                 bool admin, int64_t *id)
{
	sqlite3_stmt *st = NULL;
	int64_t uid = 0;
	char mail[300];
	int r;

	if (!hub_path_valid(username))
		return -EINVAL;
	if (!email || !*email) {
		snprintf(mail, sizeof(mail), "%s@reef.invalid", username);
		email = mail;
	}
	r = begin(hub);
	if (r < 0)
		return r;
	r = hub_db_err(sqlite3_prepare_v2(hub->db,
	                                  "INSERT INTO users(username, name, email, is_admin,"
	                                  " created_at) VALUES(?1, ?2, ?3, ?4, strftime('%s'))",
	                                  -1, &st, NULL));
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, name && *name ? name : username, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, email, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 4, admin);
	r = exec_insert(hub, st, &uid);
	if (r < 0)
		goto out;
	r = hub_db_err(sqlite3_prepare_v2(hub->db,
	                                  "INSERT INTO namespaces(name, path, full_path, kind,"
	                                  " owner_id, created_at) VALUES(?1, ?1, ?1, 'user', ?2,"
	                                  " strftime('%s'))",
	                                  -1, &st, NULL));
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, username, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, uid);
	r = exec_insert(hub, st, NULL);
out:
	r = finish(hub, r);
	if (r == 0 && id)
		*id = uid;
	return r;
}

int hub_token_create(struct hub *hub, int64_t user_id, const char *name, const char *expires,
                     unsigned scopes, char out[64])
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint8_t rnd[26];
	char hex[HASH_SHA256_HEX + 1];
	struct buf sc = BUF_INIT(1024);
	sqlite3_stmt *st = NULL;
	size_t o;
	int r;

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -EIO;
	o = (size_t)snprintf(out, 64, "%s", HUB_TOKEN_PREFIX);
	/* 26 bytes mapped to 64 symbols (6 bits each) give 156 bits of entropy. */
	for (size_t i = 0; i < sizeof(rnd); i++)
		out[o++] = alphabet[rnd[i] & 63];
	out[o] = '\0';
	token_digest(out, hex);
	hub_scopes_format(scopes, &sc);
	r = hub_db_err(sqlite3_prepare_v2(hub->db,
	                                  "INSERT INTO tokens(user_id, name, sha256, scopes,"
	                                  " expires_at, created_at) VALUES(?1, ?2, ?3, ?4, ?5,"
	                                  " strftime('%s'))",
	                                  -1, &st, NULL));
	if (r == 0) {
		sqlite3_bind_int64(st, 1, user_id);
		sqlite3_bind_text(st, 2, name ? name : "reef", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, hex, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, sc.data ? sc.data : "api", -1, SQLITE_STATIC);
		if (expires)
			sqlite3_bind_text(st, 5, expires, -1, SQLITE_STATIC);
		else
			sqlite3_bind_null(st, 5);
		r = exec_insert(hub, st, NULL);
	}
	buf_free(&sc);
	if (r < 0)
		memset(out, 0, 64);
	return r;
}

int hub_pathf(char *out, size_t n, const char *fmt, ...)
{
	va_list ap;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(out, n, fmt, ap);
	va_end(ap);
	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

void hub_repo_dir(const struct hub *hub, int64_t id, char out[PATH_MAX])
{
	hub_pathf(out, PATH_MAX, "%s/repos/%lld.git", hub->dir, (long long)id);
}

static const char project_cols[] =
    "SELECT p.id, p.name, p.path, n.full_path, p.namespace_id, p.visibility FROM projects p"
    " JOIN namespaces n ON n.id = p.namespace_id ";

static int project_row(struct hub *hub, sqlite3_stmt *st, struct hub_project *out)
{
	char ns[1024];

	memset(out, 0, sizeof(*out));
	out->id = sqlite3_column_int64(st, 0);
	copy_col(out->name, sizeof(out->name), st, 1);
	copy_col(out->path, sizeof(out->path), st, 2);
	copy_col(ns, sizeof(ns), st, 3);
	if (strlen(ns) + strlen(out->path) + 2 > sizeof(out->path_with_namespace))
		return -ENAMETOOLONG;
	hub_pathf(out->path_with_namespace, sizeof(out->path_with_namespace), "%s/%s", ns,
	          out->path);
	out->namespace_id = sqlite3_column_int64(st, 4);
	copy_col(out->visibility, sizeof(out->visibility), st, 5);
	hub_repo_dir(hub, out->id, out->repo_path);
	return 0;
}

static bool all_digits(const char *s)
{
	if (!*s || strlen(s) > 18)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

int hub_project_load(struct hub *hub, const char *id_or_path, struct hub_project *out)
{
	char sql[512];
	sqlite3_stmt *st = NULL;
	const char *slash;
	int rc, r;

	if (all_digits(id_or_path)) {
		snprintf(sql, sizeof(sql), "%sWHERE p.id = ?1", project_cols);
		rc = sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL);
		if (rc != SQLITE_OK)
			return hub_db_err(rc);
		sqlite3_bind_int64(st, 1, strtoll(id_or_path, NULL, 10));
	} else {
		slash = strrchr(id_or_path, '/');
		if (!slash || slash == id_or_path || !slash[1] || strlen(id_or_path) > 1000)
			return -ENOENT;
		snprintf(sql, sizeof(sql), "%sWHERE n.full_path = ?1 AND p.path = ?2",
		         project_cols);
		rc = sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL);
		if (rc != SQLITE_OK)
			return hub_db_err(rc);
		sqlite3_bind_text(st, 1, id_or_path, (int)(slash - id_or_path), SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 2, slash + 1, -1, SQLITE_TRANSIENT);
	}
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = project_row(hub, st, out);
	else
		r = rc == SQLITE_DONE ? -ENOENT : hub_db_err(rc);
	sqlite3_finalize(st);
	return r;
}

/* Group membership is inherited down the namespace tree, and a user owns the projects of
 * their personal namespace, as in GitLab. */
enum hub_access hub_project_member_level(struct hub *hub, const struct hub_project *p,
                                         const struct hub_user *user)
{
	static const char sql[] =
	    "WITH RECURSIVE anc(id) AS (SELECT namespace_id FROM projects WHERE id = ?1"
	    " UNION SELECT n.parent_id FROM namespaces n JOIN anc ON n.id = anc.id"
	    " WHERE n.parent_id IS NOT NULL)"
	    " SELECT MAX(lvl) FROM ("
	    " SELECT access_level AS lvl FROM members WHERE project_id = ?1 AND user_id = ?2"
	    " UNION ALL SELECT access_level FROM group_members WHERE user_id = ?2"
	    " AND namespace_id IN anc"
	    " UNION ALL SELECT 50 FROM namespaces WHERE id IN anc AND kind = 'user'"
	    " AND owner_id = ?2)";
	sqlite3_stmt *st = NULL;
	int lvl = 0;

	if (!user)
		return HUB_ACCESS_NONE;
	if (sqlite3_prepare_v2(hub->db, sql, -1, &st, NULL) != SQLITE_OK)
		return HUB_ACCESS_NONE;
	sqlite3_bind_int64(st, 1, p->id);
	sqlite3_bind_int64(st, 2, user->id);
	if (sqlite3_step(st) == SQLITE_ROW)
		lvl = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return (enum hub_access)lvl;
}

enum hub_access hub_project_access(struct hub *hub, const struct hub_project *p,
                                   const struct hub_user *user)
{
	if (user && user->is_admin)
		return HUB_ACCESS_OWNER;
	return hub_project_member_level(hub, p, user);
}

bool hub_project_visible(struct hub *hub, const struct hub_project *p, const struct hub_user *user)
{
	if (strcmp(p->visibility, "public") == 0)
		return true;
	if (!user)
		return false;
	if (user->is_admin || strcmp(p->visibility, "internal") == 0)
		return true;
	return hub_project_member_level(hub, p, user) >= HUB_ACCESS_GUEST;
}

static int repo_create(const char *dir)
{
	git_repository_init_options opts;
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	int r = -EIO;

	git_repository_init_options_init(&opts, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	opts.flags =
	    GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_NO_REINIT | GIT_REPOSITORY_INIT_MKPATH;
	opts.initial_head = "main";
	if (git_repository_init_ext(&repo, dir, &opts) < 0) {
		const git_error *e = git_error_last();

		log_error("cannot create repository %s: %s", dir, e ? e->message : "?");
		return -EIO;
	}
	if (git_repository_config(&cfg, repo) < 0)
		goto out;
	if (git_config_set_bool(cfg, "http.receivepack", 1) < 0 ||
	    git_config_set_bool(cfg, "uploadpack.allowFilter", 1) < 0 ||
	    git_config_set_bool(cfg, "uploadpack.allowAnySHA1InWant", 1) < 0)
		goto out;
	r = 0;
out:
	git_config_free(cfg);
	git_repository_free(repo);
	return r;
}

/* Removes a repository directory this process just created (rollback). */
static void repo_remove(const char *dir)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
		_exit(127);
	}
	if (pid > 0) {
		int status;

		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
}

int hub_member_set(struct hub *hub, int64_t project_id, int64_t user_id, int level)
{
	sqlite3_stmt *st = NULL;
	int r;

	r = hub_db_err(sqlite3_prepare_v2(hub->db,
	                                  "INSERT INTO members(project_id, user_id, access_level)"
	                                  " VALUES(?1, ?2, ?3) ON CONFLICT(project_id, user_id)"
	                                  " DO UPDATE SET access_level = excluded.access_level",
	                                  -1, &st, NULL));
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_int64(st, 2, user_id);
	sqlite3_bind_int(st, 3, level);
	return exec_insert(hub, st, NULL);
}

int hub_project_create(struct hub *hub, int64_t ns_id, const char *name, const char *path,
                       const char *description, const char *visibility, int64_t owner_id,
                       int64_t *id)
{
	sqlite3_stmt *st = NULL;
	char dir[PATH_MAX];
	int64_t pid = 0;
	bool made = false;
	int r;

	if (!hub_path_valid(path) || !*name || strlen(name) > HUB_MAX_NAME)
		return -EINVAL;
	if (strcmp(visibility, "private") && strcmp(visibility, "internal") &&
	    strcmp(visibility, "public"))
		return -EINVAL;
	r = begin(hub);
	if (r < 0)
		return r;
	r = hub_db_err(
	    sqlite3_prepare_v2(hub->db,
	                       "INSERT INTO projects(namespace_id, name, path, description,"
	                       " visibility, creator_id, created_at, last_activity_at)"
	                       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, strftime('%s'),"
	                       " strftime('%s'))",
	                       -1, &st, NULL));
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, ns_id);
	sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, path, -1, SQLITE_STATIC);
	if (description)
		sqlite3_bind_text(st, 4, description, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 4);
	sqlite3_bind_text(st, 5, visibility, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, owner_id);
	r = exec_insert(hub, st, &pid);
	if (r < 0)
		goto out;
	r = hub_member_set(hub, pid, owner_id, HUB_ACCESS_OWNER);
	if (r < 0)
		goto out;
	/* GitLab's default "initial default branch protection" is Fully protected:
	 * maintainers push and merge, no force push (protect.h). */
	r = hub_protect_default(hub, pid, "main");
	if (r < 0)
		goto out;
	hub_repo_dir(hub, pid, dir);
	if (access(dir, F_OK) == 0) {
		log_error("repository %s already exists; refusing to reuse it", dir);
		r = -EEXIST;
		goto out;
	}
	r = repo_create(dir);
	made = r == 0;
out:
	r = finish(hub, r);
	if (r < 0 && made)
		repo_remove(dir);
	if (r == 0 && id)
		*id = pid;
	return r;
}

int hub_namespace_of_user(struct hub *hub, int64_t user_id, int64_t *ns_id)
{
	sqlite3_stmt *st = NULL;
	int rc, r = -ENOENT;

	rc = sqlite3_prepare_v2(hub->db,
	                        "SELECT id FROM namespaces WHERE kind = 'user' AND owner_id = ?1",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, user_id);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*ns_id = sqlite3_column_int64(st, 0);
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

static int namespace_find(struct hub *hub, const char *full_path, size_t len, int64_t *id,
                          bool *is_user)
{
	sqlite3_stmt *st = NULL;
	int rc, r = -ENOENT;

	rc = sqlite3_prepare_v2(hub->db, "SELECT id, kind FROM namespaces WHERE full_path = ?1", -1,
	                        &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_text(st, 1, full_path, (int)len, SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const unsigned char *kind = sqlite3_column_text(st, 1);

		*id = sqlite3_column_int64(st, 0);
		*is_user = kind && strcmp((const char *)kind, "user") == 0;
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

int hub_namespace_ensure(struct hub *hub, const char *full_path, int64_t creator_id, int64_t *ns_id)
{
	int64_t parent = 0, id = 0;
	const char *seg = full_path;
	bool created = false;
	int r;

	size_t levels = 1;

	for (const char *p = full_path; *p; p++)
		levels += *p == '/';
	/* GitLab: a group has at most 20 ancestors (Namespace::NUMBER_OF_ANCESTORS_ALLOWED,
	 * "has too deep level of nesting"): a top-level group and 20 levels of subgroups. */
	if (!*full_path || strlen(full_path) > 900 || levels > HUB_MAX_GROUP_DEPTH)
		return -EINVAL;
	r = begin(hub);
	if (r < 0)
		return r;
	while (seg) {
		const char *end = strchr(seg, '/');
		size_t n = end ? (size_t)(end - seg) : strlen(seg);
		size_t upto = (size_t)(seg - full_path) + n;
		char name[HUB_MAX_NAME + 1];
		sqlite3_stmt *st = NULL;
		bool is_user = false;

		if (n == 0 || n > HUB_MAX_NAME) {
			r = -EINVAL;
			goto out;
		}
		memcpy(name, seg, n);
		name[n] = '\0';
		if (!hub_path_valid(name)) {
			r = -EINVAL;
			goto out;
		}
		r = namespace_find(hub, full_path, upto, &id, &is_user);
		/* Personal namespaces hold projects only, no subgroups. */
		if (r == 0 && is_user && end) {
			r = -EINVAL;
			goto out;
		}
		if (r == -ENOENT) {
			r = hub_db_err(sqlite3_prepare_v2(
			    hub->db,
			    "INSERT INTO namespaces(name, path, full_path, kind, parent_id,"
			    " created_at) VALUES(?1, ?1, ?2, 'group', ?3, strftime('%s'))",
			    -1, &st, NULL));
			if (r < 0)
				goto out;
			sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 2, full_path, (int)upto, SQLITE_TRANSIENT);
			if (parent)
				sqlite3_bind_int64(st, 3, parent);
			else
				sqlite3_bind_null(st, 3);
			r = exec_insert(hub, st, &id);
			if (r < 0)
				goto out;
			/* GitLab makes whoever creates a group its owner; the first group
			 * created in the chain gets the membership, the rest inherit it. */
			if (creator_id > 0 && !created) {
				created = true;
				r = hub_db_err(sqlite3_prepare_v2(
				    hub->db,
				    "INSERT INTO group_members(namespace_id, user_id,"
				    " access_level) VALUES(?1, ?2, 50)",
				    -1, &st, NULL));
				if (r < 0)
					goto out;
				sqlite3_bind_int64(st, 1, id);
				sqlite3_bind_int64(st, 2, creator_id);
				r = exec_insert(hub, st, NULL);
			}
		}
		if (r < 0)
			goto out;
		parent = id;
		seg = end ? end + 1 : NULL;
	}
out:
	r = finish(hub, r);
	if (r == 0)
		*ns_id = id;
	return r;
}

int hub_access_parse(const char *s)
{
	static const struct {
		const char *name;
		int level;
	} levels[] = {
	    {"guest", 10}, {"reporter", 20}, {"developer", 30}, {"maintainer", 40}, {"owner", 50}};
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcasecmp(s, levels[i].name) == 0)
			return levels[i].level;
	v = strtol(s, &end, 10);
	if (*s && !*end && (v == 10 || v == 20 || v == 30 || v == 40 || v == 50))
		return (int)v;
	return -EINVAL;
}
