/* reef commit, status and discard through .reef/ctl (docs/write.md): the pending changes
 * of a branch view's overlay become one commit, pushed with git's receive-pack over smart
 * HTTP as a compare-and-swap of the branch (old -> new: a branch that moved meanwhile is
 * refused, never overwritten), so no update is ever lost.
 *
 * The commit: new trees built over the branch's current head (its cached trees; a
 * directory no row lies below is reused by id), blobs from the overlay's data files, one
 * commit with the head as parent, authored by the token's user. The pack holds only new
 * objects, undeltified (blobs deflated from the data files as they are read).
 *
 * All or nothing: the overlay is dropped only after the server said the branch moved.
 * Before the push the new commit's id is journaled in the overlay ("intent"); a reefd
 * that died between the push and the drop finds it at the next commit or status and
 * drops the overlay if the server has that commit, so nothing is committed twice.
 *
 * Conflicts: when the head is no longer the overlay's base, the paths the new commits
 * changed (a walk of both trees, only into subtrees whose ids differ) are compared with
 * the paths the overlay changes; any overlap refuses the commit naming the paths (the
 * overlay stays); none rebuilds on the new head. */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "gl.h"
#include "overlay.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"

#include "ops_int.h"

#define PACK_CHUNK      (1u << 20)
#define COMMIT_TRIES    3      /* pushes refused because the branch moved, then give up */
#define CHANGED_MAX     100000 /* paths compared for conflicts */
#define CONFLICTS_SHOWN 8
#define COMMIT_MSG_MAX  (64 * 1024)

enum { OBJ_COMMIT = 1, OBJ_TREE = 2, OBJ_BLOB = 3 };

struct obj {
	int type;
	char oid[41];
	int64_t data; /* a blob from this data file (0: from buf) */
	uint64_t size;
	unsigned char *buf;
};

struct build {
	struct ops_ctx *ctx;
	struct overlay *ov;
	int64_t project_id;
	const char *project_path;
	const char *head; /* the commit built on */
	struct obj *v;
	size_t n, cap;
	/* Git LFS: the branch's .gitattributes (filter=lfs lines), files larger than
	 * lfs_above (0: none) sent to LFS too, and the lines added for them */
	char *gattr; /* the .gitattributes the commit has (malloc'ed), or NULL */
	/* the .gitattributes of the directories build_tree is inside, root excluded,
	 * shallowest first (git: deeper files win, patterns relative to their directory) */
	struct gattr_lvl {
		char *dir;
		char *text;
	} * gst;
	size_t gdepth, gcap;
	uint64_t lfs_above;
	struct buf added; /* lines to add to .gitattributes */
	unsigned lfs_files;
	uint64_t lfs_bytes;
};

static void objs_free(struct build *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i].buf);
	free(b->v);
	b->v = NULL;
	b->n = b->cap = 0;
}

static int objs_add(struct build *b, int type, const char *oid, int64_t data, uint64_t size,
                    unsigned char *buf)
{
	for (size_t i = 0; i < b->n; i++) {
		if (strcmp(b->v[i].oid, oid) == 0) { /* the same content twice: one object */
			free(buf);
			return 0;
		}
	}
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 16;
		struct obj *nv = realloc(b->v, nc * sizeof(*nv));

		if (!nv) {
			free(buf);
			return -ENOMEM;
		}
		b->v = nv;
		b->cap = nc;
	}
	b->v[b->n].type = type;
	snprintf(b->v[b->n].oid, 41, "%s", oid);
	b->v[b->n].data = data;
	b->v[b->n].size = size;
	b->v[b->n].buf = buf;
	b->n++;
	return 0;
}

/* ---- Git LFS ---- */

/* Whether path matches a gitattributes pattern (gitattributes(5): a pattern without '/'
 * matches the name in any directory; with one, the path from the root; a pattern ending
 * in a slash and two stars, everything below that directory). */
static bool gattr_match(const char *pat, const char *path)
{
	const char *base = strrchr(path, '/');
	size_t pl = strlen(pat);

	if (!strchr(pat, '/'))
		return fnmatch(pat, base ? base + 1 : path, 0) == 0;
	if (pat[0] == '/')
		pat++, pl--;
	if (pl > 3 && strcmp(pat + pl - 3, "/**") == 0)
		return strncmp(path, pat, pl - 2) == 0;
	return fnmatch(pat, path, FNM_PATHNAME) == 0;
}

/* What one .gitattributes says of path's filter (path relative to its directory): the
 * last matching line that names one decides; 1 lfs, 0 another or unset, -1 no line
 * says. ("[[:space:]]", git-lfs's way to write a space, is a bracket expression fnmatch
 * knows.) */
static int gattr_filter(const char *gattr, const char *path)
{
	int lfs = -1;
	const char *line = gattr;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char buf[1024], *save = NULL, *pat, *tok;

		if (len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = 0;
			pat = strtok_r(buf, " \t\r", &save);
			if (pat && pat[0] != '#' && gattr_match(pat, path)) {
				for (tok = strtok_r(NULL, " \t\r", &save); tok;
				     tok = strtok_r(NULL, " \t\r", &save)) {
					if (strncmp(tok, "filter=", 7) == 0)
						lfs = strcmp(tok + 7, "lfs") == 0;
					else if (strcmp(tok, "-filter") == 0 ||
					         strcmp(tok, "!filter") == 0)
						lfs = 0;
				}
			}
		}
		line = end ? end + 1 : NULL;
	}
	return lfs;
}

/* Whether the .gitattributes files of the commit send path to LFS: the root's, then each
 * deeper one on the way to it (build_tree's stack), a deeper one's say winning. */
static bool gattr_is_lfs(const struct build *b, const char *path)
{
	int v = b->gattr ? gattr_filter(b->gattr, path) : -1;
	bool lfs = v == 1;

	for (size_t i = 0; i < b->gdepth; i++) {
		size_t dl = strlen(b->gst[i].dir);
		int w;

		if (strncmp(path, b->gst[i].dir, dl) != 0 || path[dl] != '/')
			continue;
		w = gattr_filter(b->gst[i].text, path + dl + 1);
		if (w >= 0)
			lfs = w == 1;
	}
	return lfs;
}

/* sha256 of a data file, uploaded through the LFS batch API; the pointer's text into
 * *ptr (malloc'ed). */
static int lfs_send(struct build *b, int64_t id, char **ptr, size_t *plen)
{
	struct hash_ctx *h = NULL;
	unsigned char *buf = malloc(PACK_CHUNK);
	uint8_t bin[32];
	char oid[65];
	struct stat sb;
	uint64_t off = 0;
	int fd = ov_data_open(b->ov, id, O_RDONLY), r, n;

	r = fd < 0 ? fd : !buf ? -ENOMEM : fstat(fd, &sb) < 0 ? -errno : 0;
	if (r == 0)
		r = hash_new(&h, HASH_SHA256);
	while (r == 0 && off < (uint64_t)sb.st_size) {
		ssize_t got = pread(fd, buf, PACK_CHUNK, (off_t)off);

		if (got <= 0) {
			r = -EIO;
			break;
		}
		r = hash_update(h, buf, (size_t)got);
		off += (uint64_t)got;
	}
	if (r == 0)
		r = hash_final(h, bin);
	hash_free(h);
	free(buf);
	if (r == 0) {
		hash_hex(oid, bin, 32);
		r = cache_lfs_upload(b->ctx->cache, b->project_path, oid, off, fd);
	}
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return r;
	n = asprintf(
	    ptr, "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %" PRIu64 "\n",
	    oid, off);
	if (n < 0)
		return -ENOMEM;
	*plen = (size_t)n;
	b->lfs_files++;
	b->lfs_bytes += off;
	return 0;
}

static char *blob_text(struct build *b, const char *oid)
{
	struct odb_blob *ob = NULL;
	char *s = NULL;

	if (cache_blob_open(b->ctx->cache, b->project_id, oid, &ob) == 0) {
		uint64_t sz = odb_blob_size(ob);

		if (sz < (1 << 20) && (s = calloc(1, sz + 1)) &&
		    odb_blob_pread(ob, s, sz, 0) != (ssize_t)sz) {
			free(s);
			s = NULL;
		}
		odb_blob_close(ob);
	}
	return s;
}

/* The .gitattributes of directory dir (not the root) as the commit will have it: its
 * row (a data file, a blob moved here; a whiteout or another kind: none), else the lower
 * tree's entry (e, n: the head's entries of dir). NULL when none or unreadable. */
static char *gattr_of_dir(struct build *b, const char *dir, const struct tree_entry *e, size_t n)
{
	struct ov_ent *k = malloc(sizeof(*k));
	char path[OV_PATH_MAX];
	char *text = NULL;

	if (!k || node_path_join(path, sizeof(path), dir, ".gitattributes") < 0) {
		free(k);
		return NULL;
	}
	if (ov_get(b->ov, path, k) == 0) {
		if (k->kind == OV_FILE && k->data > 0) {
			int64_t size = ov_data_size(b->ov, k->data);
			int fd = ov_data_open(b->ov, k->data, O_RDONLY);

			if (fd >= 0 && size >= 0 && size < (1 << 20) &&
			    (text = calloc(1, (size_t)size + 1)) &&
			    pread(fd, text, (size_t)size, 0) != size) {
				free(text);
				text = NULL;
			}
			if (fd >= 0)
				close(fd);
		} else if (k->kind == OV_FILE) {
			text = blob_text(b, k->blob);
		}
		free(k);
		return text;
	}
	free(k);
	for (size_t i = 0; i < n; i++)
		if (strcmp(e[i].name, ".gitattributes") == 0 && e[i].mode != TREE_MODE_DIR &&
		    e[i].mode != TREE_MODE_LINK)
			return blob_text(b, e[i].oid);
	return NULL;
}

static int gattr_push(struct build *b, const char *dir, char *text)
{
	if (b->gdepth == b->gcap) {
		size_t nc = b->gcap ? b->gcap * 2 : 8;
		struct gattr_lvl *nv = realloc(b->gst, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		b->gst = nv;
		b->gcap = nc;
	}
	b->gst[b->gdepth].dir = strdup(dir);
	if (!b->gst[b->gdepth].dir)
		return -ENOMEM;
	b->gst[b->gdepth++].text = text;
	return 0;
}

static void gattr_pop(struct build *b)
{
	b->gdepth--;
	free(b->gst[b->gdepth].dir);
	free(b->gst[b->gdepth].text);
}

static void gattr_free(struct build *b)
{
	while (b->gdepth)
		gattr_pop(b);
	free(b->gst);
	b->gst = NULL;
	b->gcap = 0;
	free(b->gattr);
	b->gattr = NULL;
}

/* The branch's root .gitattributes as the commit will have it (overlay, else head). */
static int gattr_load(struct build *b)
{
	struct ov_ent *e = malloc(sizeof(*e));
	struct tree_entry *t = NULL;
	char root[41];
	size_t n = 0;
	int r = e ? 0 : -ENOMEM;

	b->gattr = NULL;
	if (r == 0 && ov_get(b->ov, ".gitattributes", e) == 0) {
		if (e->kind == OV_FILE && e->data > 0) {
			int64_t size = ov_data_size(b->ov, e->data);
			int fd = ov_data_open(b->ov, e->data, O_RDONLY);

			if (fd >= 0 && size >= 0 && size < (1 << 20) &&
			    (b->gattr = calloc(1, (size_t)size + 1)) &&
			    pread(fd, b->gattr, (size_t)size, 0) != size)
				r = -EIO;
			if (fd >= 0)
				close(fd);
		} else if (e->kind == OV_FILE) {
			b->gattr = blob_text(b, e->blob);
		}
		free(e);
		return r;
	}
	free(e);
	if (r == 0)
		r = cache_root_tree(b->ctx->cache, b->project_id, b->head, root, &t, &n);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (strcmp(t[i].name, ".gitattributes") == 0 && t[i].mode != TREE_MODE_DIR)
			b->gattr = blob_text(b, t[i].oid);
	free(t);
	return r;
}

static int hash_git(const char *type, const void *d, size_t n, char oid[41])
{
	struct hash_ctx *h = NULL;
	uint8_t bin[32];
	int r = hash_git_begin(&h, type, n);

	if (r == 0)
		r = hash_update(h, d, n);
	if (r == 0)
		r = hash_final(h, bin);
	hash_free(h);
	if (r == 0)
		hash_hex(oid, bin, 20);
	return r;
}

/* The blob id of a data file. */
static int hash_data(struct overlay *ov, int64_t id, char oid[41], uint64_t *size)
{
	struct hash_ctx *h = NULL;
	unsigned char *buf;
	struct stat sb;
	uint8_t bin[32];
	uint64_t off = 0;
	int fd, r;

	fd = ov_data_open(ov, id, O_RDONLY);
	if (fd < 0)
		return fd;
	buf = malloc(PACK_CHUNK);
	r = !buf ? -ENOMEM : fstat(fd, &sb) < 0 ? -errno : 0;
	if (r == 0)
		r = hash_git_begin(&h, "blob", (uint64_t)sb.st_size);
	while (r == 0 && off < (uint64_t)sb.st_size) {
		ssize_t got = pread(fd, buf, PACK_CHUNK, (off_t)off);

		if (got <= 0) {
			r = got < 0 ? -errno : -EIO; /* shrank while we read it */
			break;
		}
		r = hash_update(h, buf, (size_t)got);
		off += (uint64_t)got;
	}
	if (r == 0)
		r = hash_final(h, bin);
	hash_free(h);
	free(buf);
	close(fd);
	if (r == 0) {
		hash_hex(oid, bin, 20);
		*size = off;
	}
	return r;
}

/* git's tree order: a directory's name compares as if it ended in '/'. */
static int tree_cmp(const void *pa, const void *pb)
{
	const struct tree_entry *a = pa, *b = pb;
	size_t la = strlen(a->name), lb = strlen(b->name), k = la < lb ? la : lb;
	int c = memcmp(a->name, b->name, k);
	unsigned ca, cb;

	if (c)
		return c;
	ca = la > k ? (unsigned char)a->name[k] : (a->mode == TREE_MODE_DIR ? '/' : 0);
	cb = lb > k ? (unsigned char)b->name[k] : (b->mode == TREE_MODE_DIR ? '/' : 0);
	return (int)ca - (int)cb;
}

static int tree_bytes(struct tree_entry *e, size_t n, unsigned char **out, size_t *len)
{
	size_t cap = 1, off = 0, i;
	unsigned char *b;

	qsort(e, n, sizeof(*e), tree_cmp);
	for (i = 0; i < n; i++)
		cap += 8 + strlen(e[i].name) + 1 + 20;
	b = malloc(cap);
	if (!b)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		int k = sprintf((char *)b + off, "%o %s", e[i].mode, e[i].name);

		off += (size_t)k + 1; /* sprintf's NUL is the separator */
		for (int j = 0; j < 20; j++) {
			int hi = hex_digit(e[i].oid[2 * j]), lo = hex_digit(e[i].oid[2 * j + 1]);

			if (hi < 0 || lo < 0) {
				free(b);
				return -EIO;
			}
			b[off++] = (unsigned char)(hi * 16 + lo);
		}
	}
	*out = b;
	*len = off;
	return 0;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

static int entries_add(struct tree_entry **e, size_t *n, size_t *cap, const char *name,
                       uint32_t mode, const char *oid)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct tree_entry *nv = realloc(*e, nc * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*e = nv;
		*cap = nc;
	}
	memset(&(*e)[*n], 0, sizeof(**e));
	snprintf((*e)[*n].name, sizeof((*e)[*n].name), "%s", name);
	(*e)[*n].mode = mode;
	snprintf((*e)[*n].oid, sizeof((*e)[*n].oid), "%s", oid);
	(*e)[*n].size = -1;
	(*n)++;
	return 0;
}

static void entries_del(struct tree_entry *e, size_t *n, const char *name)
{
	for (size_t i = 0; i < *n; i++) {
		if (strcmp(e[i].name, name) == 0) {
			e[i] = e[--(*n)];
			return;
		}
	}
}

/* The tree of directory dir: lower (a tree id of the head, "" none; hint its path there)
 * with the rows below dir applied. *empty when nothing is left (git keeps no empty
 * directory). */
static int build_tree(struct build *b, const char *dir, const char *lower, const char *hint,
                      char out[41], bool *empty)
{
	struct tree_entry *e = NULL;
	struct ov_ent *kids = NULL;
	size_t n = 0, cap = 0, nk = 0, i;
	char path[OV_PATH_MAX], sub[OV_PATH_MAX], oid[41], root[41];
	unsigned char *bytes = NULL;
	size_t blen = 0;
	bool pushed = false;
	int r = 0;

	if (!dir[0])
		r = cache_root_tree(b->ctx->cache, b->project_id, b->head, root, &e, &n);
	else if (lower[0])
		r = cache_tree(b->ctx->cache, b->project_id, b->head, hint, lower, &e, &n);
	cap = n;
	if (r == 0 && dir[0]) {
		char *text = gattr_of_dir(b, dir, e, n);

		if (text) {
			r = gattr_push(b, dir, text);
			if (r < 0)
				free(text);
			else
				pushed = true;
		}
	}
	if (r == 0)
		r = ov_children(b->ov, dir, &kids, &nk);
	/* subdirectories of the head with rows somewhere below but none of their own */
	for (i = 0; r == 0 && i < n; i++) {
		struct ov_ent probe;
		bool gone;

		if (e[i].mode != TREE_MODE_DIR)
			continue;
		r = node_path_join(path, sizeof(path), dir, e[i].name);
		if (r < 0 || ov_get(b->ov, path, &probe) == 0 || ov_has_below(b->ov, path) != 1)
			continue;
		r = node_path_join(sub, sizeof(sub), hint, e[i].name);
		if (r == 0)
			r = build_tree(b, path, e[i].oid, sub, oid, &gone);
		if (r == 0 && gone) {
			e[i--] = e[--n];
		} else if (r == 0) {
			snprintf(e[i].oid, sizeof(e[i].oid), "%s", oid);
		}
	}
	for (i = 0; r == 0 && i < nk; i++) {
		const struct ov_ent *k = &kids[i];
		const char *name = base_name(k->path);
		uint64_t size = 0;
		bool gone;

		entries_del(e, &n, name);
		switch (k->kind) {
		case OV_WH:
			break;
		case OV_FILE:
			if (k->data > 0 && strcmp(k->path, ".gitattributes") != 0 &&
			    (gattr_is_lfs(b, k->path) ||
			     (b->lfs_above &&
			      (uint64_t)ov_data_size(b->ov, k->data) > b->lfs_above))) {
				char *ptr = NULL;
				size_t plen = 0;

				if (!gattr_is_lfs(b, k->path)) {
					/* the line git-lfs track would write, spaces as it writes
					 * them */
					r = buf_puts(&b->added, "/");
					for (const char *c = k->path; r == 0 && *c; c++)
						r = *c == ' ' ? buf_puts(&b->added, "[[:space:]]")
						              : buf_append(&b->added, c, 1);
					if (r == 0)
						r = buf_puts(
						    &b->added,
						    " filter=lfs diff=lfs merge=lfs -text\n");
				}
				if (r == 0)
					r = lfs_send(b, k->data, &ptr, &plen);
				if (r == 0)
					r = hash_git("blob", ptr, plen, oid);
				if (r == 0)
					r = objs_add(b, OBJ_BLOB, oid, 0, plen,
					             (unsigned char *)ptr);
				else
					free(ptr);
			} else if (k->data > 0) {
				r = hash_data(b->ov, k->data, oid, &size);
				if (r == 0)
					r = objs_add(b, OBJ_BLOB, oid, k->data, size, NULL);
			} else {
				snprintf(oid, sizeof(oid), "%s", k->blob);
			}
			if (r == 0)
				r = entries_add(&e, &n, &cap, name,
				                k->exec ? TREE_MODE_EXEC : TREE_MODE_FILE, oid);
			break;
		case OV_LINK: {
			size_t tl = strlen(k->target);
			unsigned char *t = malloc(tl + 1);

			r = t ? hash_git("blob", k->target, tl, oid) : -ENOMEM;
			if (r == 0) {
				memcpy(t, k->target, tl + 1);
				r = objs_add(b, OBJ_BLOB, oid, 0, tl, t);
			} else {
				free(t);
			}
			if (r == 0)
				r = entries_add(&e, &n, &cap, name, TREE_MODE_LINK, oid);
			break;
		}
		case OV_DIR:
			r = build_tree(b, k->path, k->blob, k->target, oid, &gone);
			if (r == 0 && !gone)
				r = entries_add(&e, &n, &cap, name, TREE_MODE_DIR, oid);
			break;
		}
	}
	if (r == 0 && !dir[0] && b->added.len) {
		/* files sent to LFS for their size: .gitattributes says so from now on */
		size_t gl = b->gattr ? strlen(b->gattr) : 0;
		unsigned char *g = malloc(gl + 1 + b->added.len);

		r = g ? 0 : -ENOMEM;
		if (r == 0) {
			memcpy(g, b->gattr ? b->gattr : "", gl);
			if (gl && b->gattr[gl - 1] != '\n')
				g[gl++] = '\n';
			memcpy(g + gl, b->added.data, b->added.len);
			gl += b->added.len;
			r = hash_git("blob", g, gl, oid);
		}
		if (r == 0) {
			r = objs_add(b, OBJ_BLOB, oid, 0, gl, g);
			entries_del(e, &n, ".gitattributes");
			if (r == 0)
				r = entries_add(&e, &n, &cap, ".gitattributes", TREE_MODE_FILE,
				                oid);
		} else {
			free(g);
		}
	}
	if (r == 0)
		r = tree_bytes(e, n, &bytes, &blen);
	if (r == 0)
		r = hash_git("tree", bytes, blen, out);
	if (r == 0 && strcmp(out, dir[0] ? lower : root) != 0) {
		r = objs_add(b, OBJ_TREE, out, 0, blen, bytes);
		bytes = NULL;
	}
	*empty = n == 0;
	if (pushed)
		gattr_pop(b);
	free(bytes);
	free(kids);
	free(e);
	return r;
}

/* ---- the pack ---- */

struct packw {
	int fd;
	struct hash_ctx *h;
	uint64_t len;
	unsigned char *zbuf;
};

static int pw_raw(struct packw *w, const void *d, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = write(w->fd, (const char *)d + done, n - done);

		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)k;
	}
	w->len += n;
	return w->h ? hash_update(w->h, d, n) : 0;
}

static int pw_deflate(struct packw *w, z_stream *z, const void *d, size_t n, bool finish)
{
	int zr;

	z->next_in = (unsigned char *)(uintptr_t)d;
	z->avail_in = (uInt)n;
	do {
		int r;

		z->next_out = w->zbuf;
		z->avail_out = PACK_CHUNK;
		zr = deflate(z, finish ? Z_FINISH : Z_NO_FLUSH);
		if (zr == Z_STREAM_ERROR)
			return -EIO;
		r = pw_raw(w, w->zbuf, PACK_CHUNK - z->avail_out);
		if (r < 0)
			return r;
	} while (z->avail_out == 0 || (finish && zr != Z_STREAM_END));
	return 0;
}

static int pw_object(struct packw *w, struct overlay *ov, const struct obj *o, unsigned char *buf)
{
	unsigned char hdr[16];
	uint64_t size = o->size, off = 0;
	size_t k = 0;
	z_stream z = {0};
	int r, fd = -1;

	/* type and size: 3 bits and 4 bits, then 7 bits a byte (gitformat-pack) */
	hdr[k] = (unsigned char)((o->type << 4) | (size & 0x0f));
	size >>= 4;
	while (size) {
		hdr[k++] |= 0x80;
		hdr[k] = size & 0x7f;
		size >>= 7;
	}
	r = pw_raw(w, hdr, k + 1);
	if (r < 0)
		return r;
	/* level 1: the upload, not the pack, is what costs; CSVs still shrink well */
	if (deflateInit(&z, 1) != Z_OK)
		return -ENOMEM;
	if (!o->data) {
		r = pw_deflate(w, &z, o->buf, o->size, true);
	} else {
		fd = ov_data_open(ov, o->data, O_RDONLY);
		r = fd < 0 ? fd : 0;
		while (r == 0 && off < o->size) {
			size_t want =
			    o->size - off < PACK_CHUNK ? (size_t)(o->size - off) : PACK_CHUNK;
			ssize_t got = pread(fd, buf, want, (off_t)off);

			if (got <= 0) {
				r = -EIO; /* changed since it was hashed: the pack would lie */
				break;
			}
			off += (uint64_t)got;
			r = pw_deflate(w, &z, buf, (size_t)got, off == o->size);
		}
		if (r == 0 && o->size == 0)
			r = pw_deflate(w, &z, "", 0, true);
		if (fd >= 0)
			close(fd);
	}
	deflateEnd(&z);
	return r;
}

static int pack_write(struct build *b, int fd, uint64_t *len)
{
	struct packw w = {.fd = fd};
	unsigned char hdr[12] = {'P', 'A', 'C', 'K', 0, 0, 0, 2}, sum[32], *buf = NULL;
	uint32_t cnt = (uint32_t)b->n;
	int r;

	w.zbuf = malloc(PACK_CHUNK);
	buf = malloc(PACK_CHUNK);
	r = !w.zbuf || !buf ? -ENOMEM : hash_new(&w.h, HASH_SHA1);
	hdr[8] = (unsigned char)(cnt >> 24);
	hdr[9] = (unsigned char)(cnt >> 16);
	hdr[10] = (unsigned char)(cnt >> 8);
	hdr[11] = (unsigned char)cnt;
	if (r == 0)
		r = pw_raw(&w, hdr, sizeof(hdr));
	for (size_t i = 0; r == 0 && i < b->n; i++)
		r = pw_object(&w, b->ov, &b->v[i], buf);
	if (r == 0)
		r = hash_final(w.h, sum);
	hash_free(w.h);
	w.h = NULL;
	if (r == 0)
		r = pw_raw(&w, sum, 20);
	free(w.zbuf);
	free(buf);
	*len = w.len;
	return r;
}

/* ---- the commit ---- */

static int author_line(struct ops_ctx *ctx, char *out, size_t cap)
{
	json_t *u = NULL;
	const char *name, *user, *email;
	char mail[512];
	int r = cache_user(ctx->cache, &u);

	if (r < 0)
		return r;
	name = json_string_value(json_object_get(u, "name"));
	user = json_string_value(json_object_get(u, "username"));
	email = json_string_value(json_object_get(u, "commit_email"));
	if (!email || !*email)
		email = json_string_value(json_object_get(u, "email"));
	if (!email || !*email)
		email = json_string_value(json_object_get(u, "public_email"));
	if (!email || !*email) /* GitLab's own stand-in when a user hides the address */
		snprintf(mail, sizeof(mail), "%s@users.noreply.invalid", user ? user : "reef");
	else
		snprintf(mail, sizeof(mail), "%s", email);
	/* a name or address must not break the header (no <, >, or newline) */
	snprintf(out, cap, "%s <%s>", name && *name ? name : user ? user : "reef", mail);
	for (char *p = out; *p; p++)
		if (*p == '\n' || ((*p == '<' || *p == '>') && p != strchr(out, '<') &&
		                   p != out + strlen(out) - 1))
			*p = ' ';
	json_decref(u);
	return 0;
}

static int commit_object(struct build *b, const char *tree, const char *parent, const char *author,
                         const char *msg, char oid[41])
{
	char *s = NULL;
	int64_t now = (int64_t)time(NULL);
	int n, r;

	n = asprintf(&s,
	             "tree %s\nparent %s\nauthor %s %" PRId64 " +0000\ncommitter %s %" PRId64
	             " +0000\n\n%s%s",
	             tree, parent, author, now, author, now, msg,
	             msg[0] && msg[strlen(msg) - 1] == '\n' ? "" : "\n");
	if (n < 0)
		return -ENOMEM;
	r = hash_git("commit", s, (size_t)n, oid);
	if (r == 0)
		return objs_add(b, OBJ_COMMIT, oid, 0, (uint64_t)n, (unsigned char *)s);
	free(s);
	return r;
}

/* ---- conflicts ---- */

struct changed {
	char **v;
	size_t n;
};

static int changed_add(struct changed *c, const char *path)
{
	char **nv;

	if (c->n >= CHANGED_MAX)
		return -E2BIG;
	nv = realloc(c->v, (c->n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	c->v = nv;
	c->v[c->n] = strdup(path);
	if (!c->v[c->n])
		return -ENOMEM;
	c->n++;
	return 0;
}

static void changed_free(struct changed *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i]);
	free(c->v);
}

/* Paths whose entries differ between trees a (of commit ca) and b (of cb) at dir. */
static int tree_diff(struct ops_ctx *ctx, int64_t pid, const char *ca, const char *ta,
                     const char *cb, const char *tb, const char *dir, struct changed *out)
{
	struct tree_entry *ea = NULL, *eb = NULL;
	size_t na = 0, nb = 0, i, j;
	char path[OV_PATH_MAX];
	int r;

	r = cache_tree(ctx->cache, pid, ca, dir, ta, &ea, &na);
	if (r == 0)
		r = cache_tree(ctx->cache, pid, cb, dir, tb, &eb, &nb);
	for (i = 0; r == 0 && i < na; i++) {
		for (j = 0; j < nb; j++)
			if (strcmp(ea[i].name, eb[j].name) == 0)
				break;
		r = node_path_join(path, sizeof(path), dir, ea[i].name);
		if (r < 0)
			break;
		if (j == nb || ea[i].mode != eb[j].mode) {
			r = changed_add(out, path);
		} else if (strcmp(ea[i].oid, eb[j].oid) != 0) {
			if (ea[i].mode == TREE_MODE_DIR)
				r = tree_diff(ctx, pid, ca, ea[i].oid, cb, eb[j].oid, path, out);
			else
				r = changed_add(out, path);
		}
	}
	for (j = 0; r == 0 && j < nb; j++) {
		for (i = 0; i < na; i++)
			if (strcmp(ea[i].name, eb[j].name) == 0)
				break;
		if (i == na) {
			r = node_path_join(path, sizeof(path), dir, eb[j].name);
			if (r == 0)
				r = changed_add(out, path);
		}
	}
	free(ea);
	free(eb);
	return r;
}

static bool path_overlaps(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la == lb)
		return strcmp(a, b) == 0;
	if (la < lb)
		return strncmp(a, b, la) == 0 && b[la] == '/';
	return strncmp(a, b, lb) == 0 && a[lb] == '/';
}

/* 0 when the commits from base to head touch nothing the overlay changes, else -EBUSY
 * with the paths in why. */
static int conflicts(struct ops_ctx *ctx, struct overlay *ov, int64_t pid, const char *base,
                     const char *head, char *why, size_t cap)
{
	struct tree_entry *e = NULL;
	struct changed ch = {0};
	struct ov_ent *rows = NULL;
	char tb[41], th[41];
	size_t n = 0, nr = 0, shown = 0, i, j;
	int r;

	r = cache_root_tree(ctx->cache, pid, base, tb, &e, &n);
	free(e);
	e = NULL;
	if (r == 0)
		r = cache_root_tree(ctx->cache, pid, head, th, &e, &n);
	free(e);
	if (r == 0 && strcmp(tb, th) != 0)
		r = tree_diff(ctx, pid, base, tb, head, th, "", &ch);
	if (r == 0)
		r = ov_all(ov, &rows, &nr);
	why[0] = 0;
	for (i = 0; r >= 0 && i < nr; i++) {
		const struct ov_ent *x = &rows[i];
		bool moved = (x->kind == OV_DIR && x->blob[0]) || (x->kind == OV_FILE && !x->data);

		if (x->kind == OV_DIR && !x->blob[0])
			continue; /* a new directory: its files speak for it */
		for (j = 0; j < ch.n; j++) {
			if (path_overlaps(ch.v[j], x->path) ||
			    (moved && x->target[0] && path_overlaps(ch.v[j], x->target))) {
				size_t l = strlen(why);

				if (shown++ < CONFLICTS_SHOWN)
					snprintf(why + l, cap - l, "%s%s", l ? ", " : "", ch.v[j]);
				r = -EBUSY;
			}
		}
	}
	if (shown > CONFLICTS_SHOWN) {
		size_t l = strlen(why);

		snprintf(why + l, cap - l, " and %zu more", shown - CONFLICTS_SHOWN);
	}
	free(rows);
	changed_free(&ch);
	return r;
}

/* ---- driving it ---- */

static const struct node *project_of(const struct node *n)
{
	while (n && n->kind != NODE_PROJECT)
		n = n->parent;
	return n;
}

/* After a reefd that died between a push and dropping its overlay: the commit it pushed
 * is on the server, so the overlay is in the branch already. */
static int reconcile(struct ops_ctx *ctx, struct overlay *ov)
{
	char intent[64], got[41];
	int r;

	if (ov_meta_get(ov, "intent", intent, sizeof(intent)) < 0)
		return 0;
	r = cache_ref_resolve(ctx->cache, ov_project(ov), CACHE_REF_COMMIT, intent, got);
	if (r == 0) {
		log_info("branch %s: commit %.12s was pushed before a restart; its changes are in "
		         "the branch",
		         ov_branch(ov), intent);
		r = wv_discard_all(ctx, ov);
	} else if (r == -ENOENT) {
		r = 0; /* never arrived: the overlay is still pending */
	}
	if (r == 0)
		r = ov_meta_set(ov, "intent", NULL);
	return r;
}

static int reef_commit(struct ops_ctx *ctx, const char *req, const struct node *rev,
                       const char *msg, uint64_t lfs_above, char *why, size_t cap)
{
	const struct node *proj = project_of(rev);
	struct overlay *ov = NULL;
	struct build b = {0};
	char base[41], head[41], root[41], commit[41], author[600], pack[4200];
	struct gl_push_report rep;
	uint64_t len = 0;
	bool empty;
	int r, fd = -1;

	why[0] = 0;
	if (!proj)
		return -EINVAL;
	r = ovset_get(ctx->ovs, rev->project_id, rev->path, false, NULL, &ov);
	if (r < 0)
		return r;
	if (ov)
		r = reconcile(ctx, ov);
	if (r < 0)
		return r;
	if (!ov || ov_count(ov) == 0) {
		snprintf(why, cap, "nothing to commit on branch %s", rev->path);
		return -ENODATA;
	}
	r = author_line(ctx, author, sizeof(author));
	if (r < 0) {
		snprintf(why, cap, "cannot learn who the token belongs to");
		return r;
	}
	/* no change of the overlay while it is being committed, and no write into its data
	 * files: what is hashed is what is packed, and no acknowledged write falls between
	 * the snapshot and the drop (docs/write.md) */
	ov_lock(ov);
	ov_gate_exclusive(ov);
	ov_base(ov, base);
	if (ov_data_path(ov, 0, pack, sizeof(pack)) == 0) {
		char *slash = strrchr(pack, '/');

		if (slash)
			snprintf(slash, sizeof(pack) - (size_t)(slash - pack), "/push.pack");
	}
	for (int attempt = 0; attempt < COMMIT_TRIES; attempt++) {
		cache_refresh(ctx->cache); /* the head as the server has it now */
		r = cache_ref_resolve(ctx->cache, rev->project_id, CACHE_REF_BRANCH, rev->path,
		                      head);
		if (r < 0) {
			snprintf(why, cap, "cannot resolve branch %s", rev->path);
			break;
		}
		if (base[0] && strcmp(base, head) != 0) {
			r = conflicts(ctx, ov, rev->project_id, base, head, why + 0, cap);
			if (r == -EBUSY) {
				char paths[512];

				snprintf(paths, sizeof(paths), "%s", why);
				snprintf(
				    why, cap,
				    "branch %s moved to %.12s, which changed what you changed: %s; "
				    "nothing committed, your changes are kept",
				    rev->path, head, paths);
				break;
			}
			if (r < 0)
				break;
		}
		objs_free(&b);
		gattr_free(&b);
		buf_free(&b.added);
		b = (struct build){.ctx = ctx,
		                   .ov = ov,
		                   .project_id = rev->project_id,
		                   .project_path = proj->path,
		                   .head = head,
		                   .lfs_above = lfs_above};
		buf_init(&b.added, 1 << 20);
		r = gattr_load(&b);
		if (r == 0)
			r = build_tree(&b, "", "", "", root, &empty);
		if (r == 0)
			r = commit_object(&b, root, head, author, msg, commit);
		if (r < 0) {
			snprintf(why, cap, "cannot build the commit: %s", strerror(-r));
			break;
		}
		fd = open(pack, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		r = fd < 0 ? -errno : pack_write(&b, fd, &len);
		if (r == 0)
			r = ov_meta_set(ov, "intent", commit); /* before the branch can move */
		if (r < 0) {
			snprintf(why, cap, "cannot write the pack: %s", strerror(-r));
			break;
		}
		r = cache_push(ctx->cache, proj->path, rev->path, head, commit, fd, len, &rep);
		close(fd);
		fd = -1;
		unlink(pack);
		if (r == 0 && rep.ref_ok && getenv("REEFD_FAULT_AFTER_PUSH")) {
			/* fault injection for the crash tests: die where a crash hurts most */
			log_warn("REEFD_FAULT_AFTER_PUSH: exiting between the push and the drop");
			_exit(9);
		}
		if (r == 0 && rep.ref_ok) {
			log_info("%s: branch %s of %s moved %.12s -> %.12s (%zu objects, %" PRIu64
			         " bytes; %u files, %" PRIu64 " bytes to LFS)",
			         req, rev->path, proj->path, head, commit, b.n, len, b.lfs_files,
			         b.lfs_bytes);
			wv_mark_committed(ctx, ov);
			r = ov_clear(ov);
			if (r == 0)
				r = ov_meta_set(ov, "intent", NULL);
			/* what is written next is a change on top of this commit */
			if (r == 0)
				r = ov_set_base(ov, commit);
			ov_gate_release(ov);
			ov_unlock(ov);
			branch_changed_wait(ctx, ov_project(ov), ov_branch(ov));
			objs_free(&b);
			gattr_free(&b);
			buf_free(&b.added);
			snprintf(why, cap, "%s", commit);
			return r;
		}
		ov_meta_set(ov, "intent", NULL); /* the branch did not move */
		if (r == -EACCES) {
			snprintf(why, cap,
			         "the server refused the push: your role may not push to %s",
			         proj->path);
			break;
		}
		if (r < 0) {
			snprintf(why, cap, "the push failed: %s", strerror(-r));
			break;
		}
		if (!rep.unpack_ok) {
			r = -EIO;
			snprintf(why, cap, "the server could not take the pack: %s", rep.unpack);
			break;
		}
		/* refused: moved meanwhile (try again over the new head), or a rule */
		{
			char now[41];

			cache_refresh(ctx->cache);
			if (cache_ref_resolve(ctx->cache, rev->project_id, CACHE_REF_BRANCH,
			                      rev->path, now) == 0 &&
			    strcmp(now, head) != 0)
				continue;
		}
		r = -EACCES;
		for (char *p = rep.msg; *p; p++)
			if (*p == '\n')
				*p = ' ';
		snprintf(why, cap, "the server refused to move branch %s (%.200s)%s%.300s",
		         rev->path, rep.reason[0] ? rep.reason : "no reason given",
		         rep.msg[0] ? ": " : "", rep.msg);
		break;
	}
	if (r == 0) { /* every attempt found the branch moved again */
		r = -EAGAIN;
		snprintf(why, cap, "branch %s keeps moving; nothing committed, try again",
		         rev->path);
	}
	if (fd >= 0) {
		close(fd);
		unlink(pack);
	}
	ov_gate_release(ov);
	ov_unlock(ov);
	objs_free(&b);
	gattr_free(&b);
	buf_free(&b.added);
	return r;
}

/* The branch view a control request's path names (the view or a path inside it). */
static int branch_of(struct ops_ctx *ctx, const char *path, struct node **out,
                     const struct node **rev)
{
	char *p = strdup(path);
	int r;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	r = reefctl_resolve(ctx, p, out);
	free(p);
	if (r < 0)
		return r;
	*rev = rev_of(*out);
	if (!*rev || (*rev)->ref_kind != NODE_REF_BRANCH) {
		node_put(ctx->nodes, *out);
		*out = NULL;
		return -ENOTDIR;
	}
	return 0;
}

/* commit {"path": P, "message": M} and discard {"path": P, "paths": [...]} */
int reefctl_write_cmd(struct ops_ctx *ctx, const char *req, const char *cmd, const char *arg)
{
	json_t *j = NULL;
	struct node *n = NULL;
	const struct node *rev = NULL;
	const char *path, *msg;
	char why[OPS_CTL_ERROR_MAX - 300];
	int r;

	if (!ctx->ovs)
		return reefctl_fail(ctx, req, -EROFS, "this mount has no writable branch views");
	r = jsonx_parse(&j, arg, strlen(arg), 4, OPS_CTL_MAX);
	path = r == 0 ? json_string_value(json_object_get(j, "path")) : NULL;
	if (!path) {
		json_decref(j);
		return reefctl_fail(ctx, req, -EINVAL, "%s takes a JSON object with a \"path\"",
		                    cmd);
	}
	r = branch_of(ctx, path, &n, &rev);
	if (r < 0) {
		json_decref(j);
		return reefctl_fail(ctx, req, r, "%s",
		                    r == -ENOTDIR ? "not inside a branch view (branches/<name>/)"
		                                  : strerror(-r));
	}
	if (strcmp(cmd, "commit") == 0) {
		json_t *la = json_object_get(j, "lfs_above");
		uint64_t lfs_above = ctx->lfs_above;

		if (json_is_integer(la) && json_integer_value(la) > 0)
			lfs_above = (uint64_t)json_integer_value(la);
		msg = json_string_value(json_object_get(j, "message"));
		/* text: no NUL inside (jansson allows one) */
		if (!msg || !*msg || strlen(msg) > COMMIT_MSG_MAX ||
		    strlen(msg) != json_string_length(json_object_get(j, "message")))
			r = reefctl_fail(ctx, req, -EINVAL,
			                 "a commit needs a message (text, at most %d bytes)",
			                 COMMIT_MSG_MAX);
		else if ((r = reef_commit(ctx, req, rev, msg, lfs_above, why, sizeof(why))) < 0)
			r = reefctl_fail(ctx, req, r, "%s", why[0] ? why : strerror(-r));
	} else {
		struct overlay *ov = NULL;
		json_t *paths = json_object_get(j, "paths");

		r = ovset_get(ctx->ovs, rev->project_id, rev->path, false, NULL, &ov);
		if (r == 0 && ov && (!paths || json_array_size(paths) == 0)) {
			r = wv_discard_all(ctx, ov);
		} else if (r == 0 && ov) {
			r = wv_discard_paths(ctx, ov, paths);
		}
		if (r < 0)
			r = reefctl_fail(ctx, req, r, "%s", strerror(-r));
	}
	node_put(ctx->nodes, n);
	json_decref(j);
	return r;
}

/* ---- discard ---- */

/* Drops every pending change of the overlay and shows the branch as it is. */
int wv_discard_all(struct ops_ctx *ctx, struct overlay *ov)
{
	int r;

	ov_lock(ov);
	ov_gate_exclusive(ov); /* descriptors of the dropped files are detached (ops_write.c) */
	r = ov_clear(ov);
	ov_gate_release(ov);
	ov_unlock(ov);
	if (r == 0)
		branch_changed_wait(ctx, ov_project(ov), ov_branch(ov));
	return r;
}

/* Drops the pending changes at and below each of paths (a JSON array of paths relative
 * to the branch root). A rename is two changes: its new name and its old one. */
int wv_discard_paths(struct ops_ctx *ctx, struct overlay *ov, json_t *paths)
{
	struct ov_ent *e = malloc(sizeof(*e));
	size_t i;
	int r = e ? 0 : -ENOMEM;

	for (i = 0; r == 0 && i < json_array_size(paths); i++) {
		const char *p = json_string_value(json_array_get(paths, i));

		if (!p || !*p || p[0] == '/' || p[strlen(p) - 1] == '/' || strstr(p, "//") ||
		    strlen(p) >= OV_PATH_MAX)
			r = -EINVAL;
		for (const char *c = p; r == 0 && c; c = strchr(c, '/')) {
			c += *c == '/';
			if (strncmp(c, "..", 2) == 0 && (c[2] == '/' || !c[2]))
				r = -EINVAL;
			if (c[0] == '.' && (c[1] == '/' || !c[1]))
				r = -EINVAL;
		}
	}
	ov_lock(ov);
	ov_gate_exclusive(ov);
	ov_bump_epoch(ov); /* writers re-check whether their file is still pending */
	for (i = 0; r == 0 && i < json_array_size(paths); i++) {
		const char *p = json_string_value(json_array_get(paths, i));
		int64_t *ids = NULL, drop = 0;
		size_t nids = 0;

		r = ov_tx_begin(ov);
		if (r < 0)
			break;
		r = ov_del_below(ov, p, &ids, &nids);
		if (r == 0 && ov_get(ov, p, e) == 0) {
			if (e->kind == OV_FILE)
				drop = e->data;
			r = ov_del(ov, p);
		}
		r = ov_tx_end(ov, r == 0) < 0 && r == 0 ? -EIO : r;
		if (r == 0) {
			for (size_t k = 0; k < nids; k++)
				ov_data_unlink(ov, ids[k]);
			if (drop > 0)
				ov_data_unlink(ov, drop);
		}
		free(ids);
	}
	ov_gate_release(ov);
	ov_unlock(ov);
	free(e);
	if (r == 0) {
		ov_bump_epoch(ov);
		branch_changed_wait(ctx, ov_project(ov), ov_branch(ov));
	}
	return r;
}

/* ---- status ---- */

/* Whether the head's tree has path (for added vs modified). */
static bool head_has(struct ops_ctx *ctx, const struct node *rev, const char *path)
{
	struct tree_entry *e = NULL;
	char tree[41], hint[OV_PATH_MAX] = "";
	const char *p = path;
	size_t n = 0;
	bool found = false;

	if (cache_root_tree(ctx->cache, rev->project_id, rev->commit, tree, &e, &n) < 0)
		return false;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t k = slash ? (size_t)(slash - p) : strlen(p);
		size_t i;

		for (i = 0; i < n; i++)
			if (strlen(e[i].name) == k && memcmp(e[i].name, p, k) == 0)
				break;
		if (i == n)
			break;
		if (!slash) {
			found = true;
			break;
		}
		if (e[i].mode != TREE_MODE_DIR)
			break;
		snprintf(tree, sizeof(tree), "%s", e[i].oid);
		{
			size_t hl = strlen(hint);

			snprintf(hint + hl, sizeof(hint) - hl, "%s%.*s", hl ? "/" : "", (int)k, p);
		}
		free(e);
		e = NULL;
		n = 0;
		if (cache_tree(ctx->cache, rev->project_id, rev->commit, hint, tree, &e, &n) < 0)
			break;
		p = slash + 1;
	}
	free(e);
	return found;
}

/* The pending changes of n's branch as JSON (user.reef.pending on a branch view). */
int wv_pending_json(struct ops_ctx *ctx, const struct node *n, char **out, size_t *len)
{
	const struct node *rev = rev_of(n);
	struct overlay *ov = NULL;
	struct ov_ent *rows = NULL;
	size_t nr = 0, i;
	char base[41] = "";
	json_t *j, *arr;
	int r;

	if (!rev || rev->ref_kind != NODE_REF_BRANCH || !ctx->ovs)
		return -ENODATA;
	r = ovset_get(ctx->ovs, rev->project_id, rev->path, false, NULL, &ov);
	if (r == 0 && ov)
		r = reconcile(ctx, ov);
	if (r == 0 && ov) {
		ov_base(ov, base);
		r = ov_all(ov, &rows, &nr);
	}
	if (r < 0)
		return r;
	arr = json_array();
	j = json_pack("{s:s,s:s,s:s,s:o}", "branch", rev->path, "head", rev->commit, "base", base,
	              "changes", arr);
	if (!j) {
		free(rows);
		return -ENOMEM;
	}
	for (i = 0; i < nr; i++) {
		const struct ov_ent *x = &rows[i];
		const char *what;
		json_t *c;
		int64_t size = -1;

		switch (x->kind) {
		case OV_WH:
			what = "deleted";
			break;
		case OV_FILE:
			if (!x->data) {
				what = strcmp(x->target, x->path) ? "renamed" : "mode";
				size = x->size;
			} else {
				what = head_has(ctx, rev, x->path) ? "modified" : "added";
				size = ov_data_size(ov, x->data);
			}
			break;
		case OV_LINK:
			what = head_has(ctx, rev, x->path) ? "modified" : "added";
			size = (int64_t)strlen(x->target);
			break;
		default:
			if (!x->blob[0])
				continue; /* a new directory: its files are listed */
			what = "renamed";
			break;
		}
		c = json_pack("{s:s,s:s,s:I}", "path", x->path, "change", what, "size",
		              (json_int_t)size);
		if (c && x->kind == OV_FILE)
			json_object_set_new(c, "executable", json_boolean(x->exec));
		if (c && x->target[0] && x->kind != OV_LINK && strcmp(what, "renamed") == 0)
			json_object_set_new(c, "from", json_string(x->target));
		if (c && x->kind == OV_DIR)
			json_object_set_new(c, "directory", json_true());
		json_array_append_new(arr, c);
	}
	free(rows);
	*out = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!*out)
		return -ENOMEM;
	*len = strlen(*out);
	return 0;
}
