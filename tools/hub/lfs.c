/* Git LFS: batch API, object download/upload, verify, a no-op locks API, raw files with
 * lfs=true and storage accounting. See lfs.h for the routes and the storage layout.
 *
 * Uploads stream to DIR/lfs/tmp while their sha256 is computed; only a body of the
 * declared size whose digest is the oid is fsynced and renamed into the store, so a
 * stored object is always whole and correct. The table lives in hub.db but is used
 * through a connection of its own: the core's shared connection may be inside another
 * thread's transaction, which a stray INSERT would silently join. */
#include "lfs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "git.h"
#include "hub_ci.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#define LFS_TOKEN_PREFIX "reeflfs1."
#define LFS_KEY_LEN      32

enum lfs_route {
	LFS_BATCH,
	LFS_VERIFY,
	LFS_LOCKS,
	LFS_GET,
	LFS_PUT,
};

struct hub_lfs {
	struct hub *hub;
	enum lfs_route route;
	struct hub_project p;
	struct hub_user user;
	bool anon;
	bool can_read;
	bool can_write;
	char *token; /* a signed action token, checked by the route */
	char oid[HASH_SHA256_HEX + 1];
	uint64_t size; /* PUT: the size in the URL */
	struct buf body;
	bool body_too_big;
	/* PUT */
	int fd;
	char tmp[PATH_MAX];
	struct hash_ctx *sha;
	uint64_t received;
	int io_err;
};

static struct {
	bool ready;
	sqlite3 *db;
	uint8_t key[LFS_KEY_LEN];
	char root[PATH_MAX]; /* DIR/lfs */
} lfs;

/* --- pointers, ranges, tokens --- */

int hub_lfs_pointer_parse(const void *data, size_t len, char oid[65], uint64_t *size)
{
	const char *s = data, *end = s + len, *line = s;
	char prev_key[64] = "";
	bool have_oid = false, have_size = false, first = true;

	if (len == 0 || len > HUB_LFS_POINTER_MAX || s[len - 1] != '\n' || memchr(s, '\0', len))
		return -EINVAL;
	while (line < end) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		const char *sp = memchr(line, ' ', (size_t)(nl - line));
		size_t klen, vlen;
		char key[64];
		const char *val;

		if (!sp || sp == line || (klen = (size_t)(sp - line)) >= sizeof(key))
			return -EINVAL;
		memcpy(key, line, klen);
		key[klen] = '\0';
		val = sp + 1;
		vlen = (size_t)(nl - val);
		for (size_t i = 0; i < klen; i++)
			if (!islower((unsigned char)key[i]) && !isdigit((unsigned char)key[i]) &&
			    key[i] != '.' && key[i] != '-')
				return -EINVAL;
		if (memchr(val, '\r', vlen))
			return -EINVAL;
		if (first) {
			static const char v1[] = "https://git-lfs.github.com/spec/v1";
			static const char hawser[] = "https://hawser.github.com/spec/v1";

			if (strcmp(key, "version") ||
			    !((vlen == sizeof(v1) - 1 && !memcmp(val, v1, vlen)) ||
			      (vlen == sizeof(hawser) - 1 && !memcmp(val, hawser, vlen))))
				return -EINVAL;
			first = false;
		} else {
			/* keys after version are sorted and unique */
			if (strcmp(key, prev_key) <= 0 || !strcmp(key, "version"))
				return -EINVAL;
			snprintf(prev_key, sizeof(prev_key), "%s", key);
			if (!strcmp(key, "oid")) {
				if (vlen != 7 + HASH_SHA256_HEX || memcmp(val, "sha256:", 7))
					return -EINVAL;
				memcpy(oid, val + 7, HASH_SHA256_HEX);
				oid[HASH_SHA256_HEX] = '\0';
				if (!hash_is_hex(oid, HASH_SHA256_HEX))
					return -EINVAL;
				have_oid = true;
			} else if (!strcmp(key, "size")) {
				uint64_t v = 0;

				if (vlen == 0 || vlen > 19)
					return -EINVAL;
				for (size_t i = 0; i < vlen; i++) {
					if (!isdigit((unsigned char)val[i]))
						return -EINVAL;
					v = v * 10 + (uint64_t)(val[i] - '0');
				}
				*size = v;
				have_size = true;
			}
		}
		line = nl + 1;
	}
	return have_oid && have_size ? 0 : -EINVAL;
}

static bool parse_u64(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*end = p;
	*out = v;
	return true;
}

/* A byte position of a Range header: digits beyond 64 bits saturate, since a larger last
 * position only means "to the end" (RFC 9110, 14.1.2). */
static bool parse_pos(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		uint64_t d = (uint64_t)(*p - '0');

		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	*end = p;
	*out = v;
	return true;
}

static bool only_spaces(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0';
}

int hub_lfs_range_parse(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
	uint64_t a, b;
	const char *p;

	if (!h)
		return 0;
	while (*h == ' ')
		h++;
	if (strncasecmp(h, "bytes=", 6))
		return 0;
	p = h + 6;
	while (*p == ' ')
		p++;
	if (strchr(p, ','))
		return 0; /* several ranges: the whole body is a valid answer */
	if (*p == '-') {
		if (!parse_pos(p + 1, &p, &b) || !only_spaces(p))
			return 0;
		if (b == 0 || size == 0)
			return -ERANGE;
		*from = b >= size ? 0 : size - b;
		*to = size - 1;
		return 1;
	}
	if (!parse_pos(p, &p, &a) || *p != '-')
		return 0;
	p++;
	if (only_spaces(p)) {
		b = UINT64_MAX;
	} else if (!parse_pos(p, &p, &b) || !only_spaces(p) || b < a) {
		return 0;
	}
	if (a >= size)
		return -ERANGE;
	*from = a;
	*to = b >= size ? size - 1 : b;
	return 1;
}

static int hmac_sha256(const uint8_t key[LFS_KEY_LEN], const void *msg, size_t n,
                       uint8_t out[HASH_SHA256_LEN])
{
	uint8_t pad[64], inner[HASH_SHA256_LEN];
	struct hash_ctx *h = NULL;
	int r;

	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < LFS_KEY_LEN; i++)
		pad[i] ^= key[i];
	r = hash_new(&h, HASH_SHA256);
	if (r == 0)
		r = hash_update(h, pad, sizeof(pad));
	if (r == 0)
		r = hash_update(h, msg, n);
	if (r == 0)
		r = hash_final(h, inner);
	hash_free(h);
	h = NULL;
	memset(pad, 0x5c, sizeof(pad));
	for (size_t i = 0; i < LFS_KEY_LEN; i++)
		pad[i] ^= key[i];
	if (r == 0)
		r = hash_new(&h, HASH_SHA256);
	if (r == 0)
		r = hash_update(h, pad, sizeof(pad));
	if (r == 0)
		r = hash_update(h, inner, sizeof(inner));
	if (r == 0)
		r = hash_final(h, out);
	hash_free(h);
	explicit_bzero(pad, sizeof(pad));
	return r;
}

static int token_mac(const uint8_t key[LFS_KEY_LEN], int64_t project_id, char op, const char *oid,
                     int64_t expires, char hex[HASH_SHA256_HEX + 1])
{
	uint8_t mac[HASH_SHA256_LEN];
	char msg[160];
	int n, r;

	n = snprintf(msg, sizeof(msg), "reeflfs1\n%" PRId64 "\n%c\n%s\n%" PRId64, project_id, op,
	             oid, expires);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -EINVAL;
	r = hmac_sha256(key, msg, (size_t)n, mac);
	if (r < 0)
		return r;
	hash_hex(hex, mac, sizeof(mac));
	return 0;
}

int hub_lfs_token_sign(const uint8_t key[32], int64_t project_id, char op, const char *oid,
                       int64_t expires, char *out, size_t n)
{
	char hex[HASH_SHA256_HEX + 1];
	int r = token_mac(key, project_id, op, oid, expires, hex), k;

	if (r < 0)
		return r;
	k = snprintf(out, n, LFS_TOKEN_PREFIX "%" PRId64 ".%s", expires, hex);
	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

int hub_lfs_token_check(const uint8_t key[32], const char *token, int64_t project_id, char op,
                        const char *oid, int64_t now)
{
	char want[HASH_SHA256_HEX + 1];
	const char *p, *dot;
	uint64_t expires;
	unsigned diff = 0;

	if (!token || strncmp(token, LFS_TOKEN_PREFIX, strlen(LFS_TOKEN_PREFIX)))
		return -EACCES;
	p = token + strlen(LFS_TOKEN_PREFIX);
	if (!parse_u64(p, &dot, &expires) || *dot != '.' || expires > INT64_MAX ||
	    !hash_is_hex(dot + 1, HASH_SHA256_HEX))
		return -EACCES;
	if ((int64_t)expires < now || (int64_t)expires > now + HUB_LFS_TOKEN_TTL + 300)
		return -EACCES;
	if (token_mac(key, project_id, op, oid, (int64_t)expires, want) < 0)
		return -EACCES;
	for (size_t i = 0; i < HASH_SHA256_HEX; i++)
		diff |= (unsigned)(want[i] ^ dot[1 + i]);
	return diff ? -EACCES : 0;
}

/* --- store --- */

static int mkdir_p(const char *dir)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int object_path(const char *oid, char out[PATH_MAX])
{
	return hub_pathf(out, PATH_MAX, "%s/objects/%.2s/%.2s/%s", lfs.root, oid, oid + 2, oid);
}

static int secret_load(void)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	ssize_t n;
	int fd, r = 0;

	if (hub_pathf(path, sizeof(path), "%s/secret", lfs.root) < 0 ||
	    hub_pathf(tmp, sizeof(tmp), "%s/secret.tmp", lfs.root) < 0)
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		uint8_t key[LFS_KEY_LEN];

		if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
			return -EIO;
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		if (write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || fsync(fd) < 0)
			r = -EIO;
		close(fd);
		explicit_bzero(key, sizeof(key));
		if (r == 0 && rename(tmp, path) < 0)
			r = -errno;
		if (r < 0) {
			unlink(tmp);
			return r;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	n = read(fd, lfs.key, sizeof(lfs.key));
	close(fd);
	return n == (ssize_t)sizeof(lfs.key) ? 0 : -EIO;
}

/* Uploads cut short by a crash are not resumable: their files are garbage. */
static void tmp_clean(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

static const char lfs_schema[] =
    "CREATE TABLE IF NOT EXISTS lfs_objects("
    " project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,"
    " oid TEXT NOT NULL, size INTEGER NOT NULL, created_at INTEGER NOT NULL,"
    " PRIMARY KEY(project_id, oid));"
    "CREATE INDEX IF NOT EXISTS lfs_objects_oid ON lfs_objects(oid);";

int hub_lfs_init(struct hub *hub)
{
	char path[PATH_MAX];
	char *err = NULL;
	int r, rc;

	if (lfs.ready)
		return 0;
	if (hub_pathf(lfs.root, sizeof(lfs.root), "%s/lfs", hub->dir) < 0)
		return -ENAMETOOLONG;
	if ((r = mkdir_p(lfs.root)) < 0 ||
	    (r = hub_pathf(path, sizeof(path), "%s/objects", lfs.root)) < 0 ||
	    (r = mkdir_p(path)) < 0 ||
	    (r = hub_pathf(path, sizeof(path), "%s/tmp", lfs.root)) < 0 || (r = mkdir_p(path)) < 0)
		return log_ret(r, "cannot create %s: %s", lfs.root, strerror(-r));
	tmp_clean(path);
	r = secret_load();
	if (r < 0)
		return log_ret(r, "cannot load the LFS signing secret in %s: %s", lfs.root,
		               strerror(-r));
	if (hub_pathf(path, sizeof(path), "%s/hub.db", hub->dir) < 0)
		return -ENAMETOOLONG;
	rc = sqlite3_open_v2(path, &lfs.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(lfs.db, 10000);
		rc = sqlite3_exec(lfs.db, "PRAGMA foreign_keys=ON;", NULL, NULL, &err);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(lfs.db, lfs_schema, NULL, NULL, &err);
	if (rc != SQLITE_OK) {
		log_error("cannot prepare the LFS table in %s: %s", path,
		          err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
		sqlite3_close(lfs.db);
		lfs.db = NULL;
		return hub_db_err(rc);
	}
	lfs.ready = true;
	return 0;
}

void hub_lfs_shutdown(void)
{
	if (lfs.db)
		sqlite3_close(lfs.db);
	lfs.db = NULL;
	explicit_bzero(lfs.key, sizeof(lfs.key));
	lfs.ready = false;
}

/* The size of oid as linked to the project: 1 (linked), 0 (not), negative errno. */
static int object_linked(int64_t project_id, const char *oid, uint64_t *size)
{
	sqlite3_stmt *st = NULL;
	int rc, r;

	if (!lfs.ready)
		return -ENODEV;
	rc = sqlite3_prepare_v2(lfs.db,
	                        "SELECT size FROM lfs_objects WHERE project_id = ?1 AND oid = ?2",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		return hub_db_err(rc);
	sqlite3_bind_int64(st, 1, project_id);
	sqlite3_bind_text(st, 2, oid, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*size = (uint64_t)sqlite3_column_int64(st, 0);
		r = 1;
	} else {
		r = rc == SQLITE_DONE ? 0 : hub_db_err(rc);
	}
	sqlite3_finalize(st);
	return r;
}

/* Linked and whole on disk: what a download may promise. */
static bool object_available(int64_t project_id, const char *oid, uint64_t *size)
{
	char path[PATH_MAX];
	struct stat sb;

	if (object_linked(project_id, oid, size) != 1 || object_path(oid, path) < 0)
		return false;
	if (stat(path, &sb) < 0 || (uint64_t)sb.st_size != *size) {
		log_warn("LFS object %s of project %" PRId64 " is missing from the store", oid,
		         project_id);
		return false;
	}
	return true;
}

static int object_link(int64_t project_id, const char *oid, uint64_t size)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(
	    lfs.db,
	    "INSERT OR IGNORE INTO lfs_objects(project_id, oid, size, created_at)"
	    " VALUES(?1, ?2, ?3, strftime('%s'))",
	    -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, project_id);
		sqlite3_bind_text(st, 2, oid, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)size);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : hub_db_err(rc);
}

int hub_lfs_project_bytes(struct hub *hub, int64_t project_id, uint64_t *out)
{
	sqlite3 *db = lfs.ready ? lfs.db : hub->db;
	sqlite3_stmt *st = NULL;
	int rc;

	*out = 0;
	rc = sqlite3_prepare_v2(
	    db, "SELECT COALESCE(SUM(size), 0) FROM lfs_objects WHERE project_id = ?1", -1, &st,
	    NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, project_id);
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			*out = (uint64_t)sqlite3_column_int64(st, 0);
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -EIO : hub_db_err(rc);
}

/* --- responses --- */

static void lfs_json(struct hub_resp *resp, int status, json_t *v)
{
	char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;

	json_decref(v);
	if (!s) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	hub_resp_raw(resp, status, HUB_LFS_CONTENT_TYPE, s, strlen(s));
	free(s);
}

static void lfs_error(struct hub_resp *resp, int status, const char *msg)
{
	lfs_json(resp, status, json_pack("{s:s}", "message", msg));
}

static void lfs_deny_auth(struct hub_resp *resp)
{
	lfs_error(resp, 401, "HTTP Basic: Access denied");
	hub_resp_header(resp, "LFS-Authenticate", "Basic realm=\"GitLab\"");
	hub_resp_header(resp, "WWW-Authenticate", "Basic realm=\"GitLab\"");
}

static void lfs_forbidden(struct hub_resp *resp)
{
	lfs_error(resp, 403, "Access forbidden. Check your access level.");
}

/* The caller lacks a right: anonymous callers are asked for credentials. */
static void lfs_refuse(struct hub_lfs *l, struct hub_resp *resp)
{
	if (l->anon)
		lfs_deny_auth(resp);
	else
		lfs_forbidden(resp);
}

/* Serves a stored object (Range honoured). 0 when answered (416 included), -ENOENT when
 * the file is not in the store (nothing answered); other errors answer 500. */
static int object_send(struct hub_req *req, struct hub_resp *resp, int64_t project_id,
                       const char *oid)
{
	char path[PATH_MAX], v[96];
	uint64_t size, from = 0, to = 0, len;
	struct stat sb;
	int fd, r;

	if (object_path(oid, path) < 0)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			log_warn("LFS object %s of project %" PRId64 " is missing from the store",
			         oid, project_id);
			return -ENOENT;
		}
		r = -errno;
		log_error("cannot open LFS object %s: %s", oid, strerror(-r));
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return r;
	}
	if (fstat(fd, &sb) < 0) {
		r = -errno;
		close(fd);
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return r;
	}
	size = (uint64_t)sb.st_size;
	r = hub_lfs_range_parse(hub_req_header(req, "Range"), size, &from, &to);
	if (r < 0) {
		close(fd);
		snprintf(v, sizeof(v), "bytes */%" PRIu64, size);
		lfs_error(resp, 416, "416 Range Not Satisfiable");
		hub_resp_header(resp, "Content-Range", v);
		return 0;
	}
	if (r == 0) {
		from = 0;
		len = size;
	} else {
		len = to - from + 1;
	}
	hub_resp_raw(resp, r ? 206 : 200, "application/octet-stream", NULL, 0);
	resp->fd = fd;
	resp->fd_offset = from;
	resp->fd_len = len;
	if (r) {
		snprintf(v, sizeof(v), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from, to, size);
		hub_resp_header(resp, "Content-Range", v);
	}
	hub_resp_header(resp, "Accept-Ranges", "bytes");
	if (strcmp(req->method, "HEAD") != 0)
		hub_ci_transfer_add(project_id, len);
	return 0;
}

bool hub_lfs_serve_pointer(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                           const void *blob, size_t len)
{
	char oid[HASH_SHA256_HEX + 1];
	uint64_t size, stored;

	if (!lfs.ready || hub_lfs_pointer_parse(blob, len, oid, &size) < 0 ||
	    object_linked(p->id, oid, &stored) != 1)
		return false;
	return object_send(req, resp, p->id, oid) != -ENOENT;
}

/* --- routing and authorization --- */

/* Splits "/grp/proj.git/<rest>": the project path's length (after the leading '/') and
 * rest. A project or namespace path never ends in ".git", so the first ".git/" ends it. */
static int lfs_split(const char *path, size_t *proj_len, const char **rest)
{
	const char *g;

	if (path[0] != '/' || !(g = strstr(path, ".git/")) || g == path + 1)
		return -ENOENT;
	*proj_len = (size_t)(g - path - 1);
	*rest = g + 5;
	return 0;
}

bool hub_lfs_match(const char *path)
{
	const char *rest;
	size_t n;

	return lfs_split(path, &n, &rest) == 0 &&
	       (!strncmp(rest, "info/lfs/", 9) || !strncmp(rest, "gitlab-lfs/", 11));
}

static bool is_oid_then(const char *s, char end)
{
	for (int i = 0; i < HASH_SHA256_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s[HASH_SHA256_HEX] == end;
}

/* The route and (object routes) oid and size; -ENOENT for anything else. */
static int route_parse(struct hub_lfs *l, const char *rest, const char *method)
{
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	bool post = !strcmp(method, "POST");
	const char *p;

	if (!strcmp(rest, "info/lfs/objects/batch") && post)
		l->route = LFS_BATCH;
	else if (!strcmp(rest, "info/lfs/objects/verify") && post)
		l->route = LFS_VERIFY;
	else if ((!strcmp(rest, "info/lfs/locks") || !strncmp(rest, "info/lfs/locks/", 15)) &&
	         (get || post))
		l->route = LFS_LOCKS;
	else if (!strncmp(rest, "gitlab-lfs/objects/", 19)) {
		p = rest + 19;
		if (get && is_oid_then(p, '\0')) {
			l->route = LFS_GET;
		} else if (!strcmp(method, "PUT") && is_oid_then(p, '/')) {
			const char *e;

			if (!parse_u64(p + HASH_SHA256_HEX + 1, &e, &l->size) || *e)
				return -ENOENT;
			l->route = LFS_PUT;
		} else {
			return -ENOENT;
		}
		memcpy(l->oid, p, HASH_SHA256_HEX);
		l->oid[HASH_SHA256_HEX] = '\0';
	} else {
		return -ENOENT;
	}
	return 0;
}

/* "Bearer reeflfs1.…": a signed action token (not a personal one). */
static const char *action_token(const struct hub_req *req)
{
	const char *a = hub_req_header(req, "Authorization");

	if (!a || strncasecmp(a, "Bearer ", 7))
		return NULL;
	a += 7;
	while (*a == ' ')
		a++;
	return strncmp(a, LFS_TOKEN_PREFIX, strlen(LFS_TOKEN_PREFIX)) ? NULL : a;
}

static uint64_t content_length(const struct hub_req *req, bool *given)
{
	const char *cl = hub_req_header(req, "Content-Length");
	const char *end;
	uint64_t v = 0;

	*given = cl && parse_u64(cl, &end, &v) && only_spaces(end);
	return *given ? v : 0;
}

static int put_begin(struct hub_lfs *l, struct hub_resp *resp)
{
	char msg[160];
	int r;

	if (l->size > HUB_LFS_MAX_OBJECT) {
		snprintf(msg, sizeof(msg), "Object too large (at most %" PRIu64 " bytes)",
		         HUB_LFS_MAX_OBJECT);
		lfs_error(resp, 413, msg);
		return 1;
	}
	if (hub_pathf(l->tmp, sizeof(l->tmp), "%s/tmp/%s-XXXXXX", lfs.root, l->oid) < 0)
		return -ENAMETOOLONG;
	l->fd = mkostemp(l->tmp, O_CLOEXEC);
	if (l->fd < 0) {
		r = -errno;
		l->tmp[0] = '\0';
		return log_ret(r, "cannot create an LFS upload file in %s/tmp: %s", lfs.root,
		               strerror(-r));
	}
	r = hash_new(&l->sha, HASH_SHA256);
	return r < 0 ? r : 0;
}

int hub_lfs_start(struct hub_req *req, struct hub_resp *resp, const char *path,
                  struct hub_lfs **out)
{
	struct hub_lfs *l;
	const char *rest, *tok;
	unsigned scopes = 0;
	enum hub_access acc;
	bool readable, given;
	uint64_t cl;
	size_t plen;
	char *proj = NULL;
	int r, ret = 1;

	*out = NULL;
	if (!lfs.ready) {
		hub_resp_error(resp, 503, "503 Service Unavailable");
		return 1;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return 1;
	}
	l->hub = req->hub;
	l->fd = -1;
	buf_init(&l->body, HUB_LFS_MAX_JSON);
	if (lfs_split(path, &plen, &rest) < 0 || route_parse(l, rest, req->method) < 0) {
		lfs_error(resp, 404, "Not found");
		goto out;
	}
	proj = strndup(path + 1, plen);
	if (!proj) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		goto out;
	}
	if (url_decode(proj, proj, false) < 0 || !path_is_safe(proj, HUB_MAX_PATH)) {
		lfs_error(resp, 400, "Bad request");
		goto out;
	}
	tok = action_token(req);
	if (tok) {
		/* Handed out by a batch answer for one object and one operation only. */
		if (l->route != LFS_GET && l->route != LFS_PUT && l->route != LFS_VERIFY) {
			lfs_deny_auth(resp);
			goto out;
		}
		l->token = strdup(tok);
		if (!l->token) {
			hub_resp_error(resp, 500, "500 Internal Server Error");
			goto out;
		}
		if (hub_project_load(req->hub, proj, &l->p) < 0) {
			lfs_error(resp, 404, "Not found");
			goto out;
		}
		if (l->route != LFS_VERIFY &&
		    hub_lfs_token_check(lfs.key, l->token, l->p.id, l->route == LFS_GET ? 'd' : 'u',
		                        l->oid, (int64_t)time(NULL)) < 0) {
			lfs_deny_auth(resp);
			goto out;
		}
		l->can_read = l->route == LFS_GET;
		l->can_write = l->route == LFS_PUT;
	} else {
		r = hub_auth_basic(req, &l->user, &scopes);
		if (r < 0) {
			lfs_deny_auth(resp);
			goto out;
		}
		l->anon = r == 0;
		req->user = l->anon ? NULL : &l->user;
		if (hub_project_load(req->hub, proj, &l->p) < 0 ||
		    !hub_project_visible(req->hub, &l->p, req->user) ||
		    (req->job_project_id > 0 && l->p.id != req->job_project_id)) {
			if (l->anon)
				lfs_deny_auth(resp);
			else
				lfs_error(resp, 404, "Not found");
			goto out;
		}
		acc = hub_project_access(req->hub, &l->p, req->user);
		readable = strcmp(l->p.visibility, "private") != 0 || acc >= HUB_ACCESS_REPORTER;
		l->can_read = readable &&
		              (l->anon ||
		               (scopes & (HUB_SCOPE_API | HUB_SCOPE_READ_API |
		                          HUB_SCOPE_READ_REPOSITORY | HUB_SCOPE_WRITE_REPOSITORY)));
		l->can_write = !l->anon && acc >= HUB_ACCESS_DEVELOPER &&
		               (scopes & (HUB_SCOPE_API | HUB_SCOPE_WRITE_REPOSITORY));
		/* A job token has no push_code ability, so GitLab refuses its LFS uploads
		 * (lfs_request.rb, lfs_upload_access?); reef-hub's launch jobs, which push
		 * their outputs to their own branch, are the exception. */
		if (req->job_project_id > 0 && l->can_write) {
			char ref[HUB_MAX_PATH];

			l->can_write =
			    hub_ci_job_launch_ref(req->hub, req->job_id, ref, sizeof(ref)) > 0;
		}
		/* The batch checks upload rights once it knows the operation. */
		if ((l->route == LFS_PUT || l->route == LFS_VERIFY) ? !l->can_write
		                                                    : !l->can_read) {
			lfs_refuse(l, resp);
			goto out;
		}
	}
	cl = content_length(req, &given);
	if (l->route == LFS_PUT) {
		if (given && cl != l->size) {
			lfs_error(resp, 400, "Content-Length does not match the object size");
			goto out;
		}
		r = put_begin(l, resp);
		if (r < 0) {
			hub_resp_error(resp, 500, "500 Internal Server Error");
			goto out;
		}
		if (r > 0)
			goto out;
	} else if (given && cl > HUB_LFS_MAX_JSON) {
		lfs_error(resp, 413, "Request too large");
		goto out;
	}
	*out = l;
	l = NULL;
	ret = 0;
out:
	/* the user lives in l, which the request outlives only through *out */
	req->user = NULL;
	free(proj);
	hub_lfs_free(l);
	return ret;
}

/* A refused upload leaves nothing behind, before the client hears of it. */
static void put_discard(struct hub_lfs *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	if (l->tmp[0])
		unlink(l->tmp);
	l->tmp[0] = '\0';
}

int hub_lfs_body(struct hub_lfs *l, const void *data, size_t len)
{
	const char *p = data;

	if (!l)
		return -EINVAL;
	if (l->route != LFS_PUT) {
		if (!l->body_too_big && buf_append(&l->body, data, len) < 0) {
			l->body_too_big = true;
			return -EFBIG; /* the server answers 413 and reads no further */
		}
		return 0;
	}
	if (l->received + len > l->size || l->received + len < l->received) {
		/* More than the declared size (a chunked body says nothing up front): stop
		 * reading here rather than at the end of what may be gigabytes. The server
		 * answers as soon as this returns, so the partial file goes first. */
		l->received = UINT64_MAX;
		put_discard(l);
		return -EMSGSIZE;
	}
	if (l->io_err) {
		l->received += len; /* keep counting; store nothing more */
		return 0;
	}
	if (hash_update(l->sha, data, len) < 0) {
		l->io_err = -EIO;
		return 0;
	}
	l->received += len;
	while (len) {
		ssize_t n = write(l->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			l->io_err = n < 0 ? -errno : -EIO;
			log_error("LFS upload of %s: %s", l->oid, strerror(-l->io_err));
			return 0;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void hub_lfs_free(struct hub_lfs *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	if (l->tmp[0])
		unlink(l->tmp);
	hash_free(l->sha);
	if (l->token) {
		explicit_bzero(l->token, strlen(l->token));
		free(l->token);
	}
	buf_free(&l->body);
	free(l);
}

/* --- handlers --- */

static json_t *action(struct hub_lfs *l, char op, const char *oid, uint64_t size,
                      const char *href_tail)
{
	char tok[128], authz[160];
	struct buf href = BUF_INIT(8192);
	json_t *a = NULL;

	if (hub_lfs_token_sign(lfs.key, l->p.id, op, oid, (int64_t)time(NULL) + HUB_LFS_TOKEN_TTL,
	                       tok, sizeof(tok)) < 0)
		return NULL;
	snprintf(authz, sizeof(authz), "Bearer %s", tok);
	if (!strcmp(href_tail, "verify")) {
		buf_printf(&href, "%s/%s.git/info/lfs/objects/verify", l->hub->base_url,
		           l->p.path_with_namespace);
	} else {
		buf_printf(&href, "%s/%s.git/gitlab-lfs/objects/%s", l->hub->base_url,
		           l->p.path_with_namespace, oid);
		if (op == 'u')
			buf_printf(&href, "/%" PRIu64, size);
	}
	if (href.data)
		a = json_pack("{s:s, s:{s:s}, s:i}", "href", href.data, "header", "Authorization",
		              authz, "expires_in", HUB_LFS_TOKEN_TTL);
	if (a && op == 'u')
		json_object_set_new(json_object_get(a, "header"), "Content-Type",
		                    json_string("application/octet-stream"));
	explicit_bzero(tok, sizeof(tok));
	explicit_bzero(authz, sizeof(authz));
	buf_free(&href);
	return a;
}

/* Parses the JSON body into *out (an object); answers 413/400 itself. */
static bool body_json(struct hub_lfs *l, struct hub_resp *resp, json_t **out)
{
	if (l->body_too_big) {
		lfs_error(resp, 413, "Request too large");
		return false;
	}
	if (jsonx_parse(out, l->body.data ? l->body.data : "", l->body.len, 16, HUB_LFS_MAX_JSON) <
	        0 ||
	    !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		lfs_error(resp, 400, "Malformed JSON body");
		return false;
	}
	return true;
}

static bool ctype_ok(const struct hub_req *req)
{
	const char *ct = hub_req_header(req, "Content-Type");
	size_t n;

	if (!ct)
		return true;
	n = strcspn(ct, ";");
	while (n && ct[n - 1] == ' ')
		n--;
	return (n == strlen(HUB_LFS_CONTENT_TYPE) && !strncasecmp(ct, HUB_LFS_CONTENT_TYPE, n)) ||
	       (n == 16 && !strncasecmp(ct, "application/json", 16));
}

static int batch_fail(char *msg, size_t msglen, int status, const char *text)
{
	snprintf(msg, msglen, "%s", text);
	return status;
}

int hub_lfs_batch_parse(const char *body, size_t len, json_t **root_out, bool *upload, char *msg,
                        size_t msglen)
{
	json_t *root = NULL, *objs, *tr, *o;
	const char *op, *algo;
	size_t i;

	*root_out = NULL;
	*upload = false;
	if (jsonx_parse(&root, body, len, 16, HUB_LFS_MAX_JSON) < 0 || !json_is_object(root)) {
		json_decref(root);
		return batch_fail(msg, msglen, 400, "Malformed JSON body");
	}
	*root_out = root;
	op = jsonx_str(root, "operation");
	if (!op || (strcmp(op, "download") && strcmp(op, "upload"))) {
		return batch_fail(msg, msglen, 422, "operation must be download or upload");
	}
	*upload = !strcmp(op, "upload");
	algo = jsonx_str(root, "hash_algo");
	if (json_object_get(root, "hash_algo") && (!algo || strcmp(algo, "sha256"))) {
		return batch_fail(msg, msglen, 409, "Unsupported hash algorithm: only sha256");
	}
	tr = json_object_get(root, "transfers");
	if (tr) {
		bool basic = false;

		if (!json_is_array(tr)) {
			return batch_fail(msg, msglen, 422, "transfers must be an array");
		}
		for (i = 0; i < json_array_size(tr); i++) {
			o = json_array_get(tr, i);
			if (json_is_string(o) && !strcmp(json_string_value(o), "basic"))
				basic = true;
		}
		if (!basic && json_array_size(tr)) {
			return batch_fail(msg, msglen, 422,
			                  "Unsupported transfer: only basic is offered");
		}
	}
	objs = json_object_get(root, "objects");
	if (!json_is_array(objs)) {
		return batch_fail(msg, msglen, 422, "objects must be an array");
	}
	if (json_array_size(objs) > HUB_LFS_MAX_BATCH_OBJECTS) {
		snprintf(msg, msglen, "Too many objects in one batch (at most %d)",
		         HUB_LFS_MAX_BATCH_OBJECTS);
		return 413;
	}
	json_array_foreach(objs, i, o)
	{
		const char *oid = jsonx_str(o, "oid");
		json_t *sz = json_object_get(o, "size");

		/* No object can be larger than the store takes (HUB_LFS_MAX_OBJECT). */
		if (!oid || !hash_is_hex(oid, HASH_SHA256_HEX) || !json_is_integer(sz) ||
		    json_integer_value(sz) < 0 ||
		    (uint64_t)json_integer_value(sz) > HUB_LFS_MAX_OBJECT) {
			snprintf(msg, msglen,
			         "Invalid object %zu: oid must be 64 lowercase hex digits and size "
			         "an integer from 0 to %" PRIu64,
			         i, HUB_LFS_MAX_OBJECT);
			return 422;
		}
	}
	return 0;
}

static void batch(struct hub_req *req, struct hub_resp *resp, struct hub_lfs *l)
{
	json_t *root = NULL, *objs, *outs = NULL, *o;
	char msg[160];
	size_t i;
	bool upload;
	int st;

	if (!ctype_ok(req)) {
		lfs_error(resp, 415, "Content-Type must be " HUB_LFS_CONTENT_TYPE);
		return;
	}
	if (l->body_too_big) {
		lfs_error(resp, 413, "Request too large");
		return;
	}
	st = hub_lfs_batch_parse(l->body.data ? l->body.data : "", l->body.len, &root, &upload, msg,
	                         sizeof(msg));
	if (st) {
		lfs_error(resp, st, msg);
		goto out;
	}
	objs = json_object_get(root, "objects");
	if (upload && !l->can_write) {
		lfs_refuse(l, resp);
		goto out;
	}
	outs = json_array();
	if (!outs)
		goto oom;
	json_array_foreach(objs, i, o)
	{
		const char *oid = jsonx_str(o, "oid");
		uint64_t size = (uint64_t)json_integer_value(json_object_get(o, "size")), stored;
		bool have = object_available(l->p.id, oid, &stored);
		json_t *e = json_pack("{s:s, s:I, s:b}", "oid", oid, "size",
		                      (json_int_t)(have ? stored : size), "authenticated", 1);
		json_t *acts = NULL;

		if (!e || json_array_append_new(outs, e) < 0)
			goto oom;
		if (!upload && !have) {
			json_object_set_new(
			    e, "error",
			    json_pack("{s:i, s:s}", "code", 404, "message",
			              "Object does not exist on the server or you don't have "
			              "permissions to access it"));
			continue;
		}
		if (upload && have)
			continue; /* already stored: nothing to transfer */
		acts = json_object();
		if (!acts || json_object_set_new(e, "actions", acts) < 0)
			goto oom;
		if (upload) {
			json_t *up = action(l, 'u', oid, size, "object");
			json_t *ve = action(l, 'v', oid, size, "verify");

			if (!up || !ve) {
				json_decref(up);
				json_decref(ve);
				goto oom;
			}
			json_object_set_new(acts, "upload", up);
			json_object_set_new(acts, "verify", ve);
		} else {
			json_t *dl = action(l, 'd', oid, size, "object");

			if (!dl)
				goto oom;
			json_object_set_new(acts, "download", dl);
		}
	}
	lfs_json(resp, 200,
	         json_pack("{s:s, s:o, s:s}", "transfer", "basic", "objects", outs, "hash_algo",
	                   "sha256"));
	outs = NULL;
	goto out;
oom:
	hub_resp_error(resp, 500, "500 Internal Server Error");
out:
	json_decref(outs);
	json_decref(root);
}

static void verify(struct hub_req *req, struct hub_resp *resp, struct hub_lfs *l)
{
	json_t *root = NULL, *sz;
	const char *oid;
	uint64_t stored;

	(void)req;
	if (!body_json(l, resp, &root))
		return;
	oid = jsonx_str(root, "oid");
	sz = json_object_get(root, "size");
	if (!oid || !hash_is_hex(oid, HASH_SHA256_HEX) || !json_is_integer(sz) ||
	    json_integer_value(sz) < 0) {
		lfs_error(resp, 422,
		          "oid must be 64 lowercase hex digits and size a non-negative "
		          "integer");
		goto out;
	}
	if (l->token &&
	    hub_lfs_token_check(lfs.key, l->token, l->p.id, 'v', oid, (int64_t)time(NULL)) < 0) {
		lfs_deny_auth(resp);
		goto out;
	}
	if (!object_available(l->p.id, oid, &stored))
		lfs_error(resp, 404, "Object does not exist on the server");
	else if (stored != (uint64_t)json_integer_value(sz))
		lfs_error(resp, 422, "Object size does not match");
	else
		lfs_json(resp, 200, json_object());
out:
	json_decref(root);
}

static void put_store(struct hub_resp *resp, struct hub_lfs *l)
{
	uint8_t bin[HASH_SHA256_LEN];
	char hex[HASH_SHA256_HEX + 1], dst[PATH_MAX], dir[PATH_MAX], msg[160];
	int r, dfd;

	if (l->io_err) {
		if (l->io_err == -ENOSPC || l->io_err == -EDQUOT)
			lfs_error(resp, 507, "Insufficient storage");
		else
			hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	if (l->received != l->size) {
		snprintf(msg, sizeof(msg),
		         "Size mismatch: received %" PRIu64 " bytes, expected %" PRIu64,
		         l->received, l->size);
		lfs_error(resp, 400, msg);
		return;
	}
	if (hash_final(l->sha, bin) < 0) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	hash_hex(hex, bin, sizeof(bin));
	if (strcmp(hex, l->oid)) {
		lfs_error(resp, 422, "Content does not match the object id (sha256)");
		return;
	}
	r = fsync(l->fd) < 0 ? -errno : 0;
	close(l->fd);
	l->fd = -1;
	if (r == 0)
		r = object_path(l->oid, dst);
	if (r == 0)
		r = hub_pathf(dir, sizeof(dir), "%s/objects/%.2s", lfs.root, l->oid);
	if (r == 0)
		r = mkdir_p(dir);
	if (r == 0)
		r = hub_pathf(dir, sizeof(dir), "%s/objects/%.2s/%.2s", lfs.root, l->oid,
		              l->oid + 2);
	if (r == 0)
		r = mkdir_p(dir);
	/* Same name, same bytes: replacing a concurrent upload's file is harmless. */
	if (r == 0 && rename(l->tmp, dst) < 0)
		r = -errno;
	if (r < 0) {
		log_error("cannot store LFS object %s: %s", l->oid, strerror(-r));
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	l->tmp[0] = '\0';
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	r = object_link(l->p.id, l->oid, l->size);
	if (r < 0) {
		log_error("cannot link LFS object %s to project %" PRId64 ": %s", l->oid, l->p.id,
		          strerror(-r));
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	hub_resp_raw(resp, 200, "text/plain", "", 0);
}

static void put_finish(struct hub_resp *resp, struct hub_lfs *l)
{
	put_store(resp, l);
	put_discard(l); /* nothing left once stored; the refused upload otherwise */
}

void hub_lfs_finish(struct hub_req *req, struct hub_resp *resp, struct hub_lfs *l)
{
	uint64_t size;

	if (!l) {
		hub_resp_error(resp, 500, "500 Internal Server Error");
		return;
	}
	switch (l->route) {
	case LFS_BATCH:
		batch(req, resp, l);
		break;
	case LFS_VERIFY:
		verify(req, resp, l);
		break;
	case LFS_LOCKS:
		/* git-lfs takes 501 (like 404) as "no locking API" and turns lock
		 * verification off for the remote without a word; an empty answer would
		 * instead advertise locking on every push. */
		lfs_error(resp, 501, "File locking is not supported by this server");
		break;
	case LFS_GET:
		if (object_linked(l->p.id, l->oid, &size) != 1 ||
		    object_send(req, resp, l->p.id, l->oid) == -ENOENT)
			lfs_error(resp, 404, "Not found");
		break;
	case LFS_PUT:
		put_finish(resp, l);
		break;
	}
}
