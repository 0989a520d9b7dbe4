/* Bulk fetches: see daemon/fetch.h and docs/cache.md ("Bulk fetches"). */
#include "fetch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <git2.h>

#include "reef/log.h"
#include "reef/pack.h"

#define FETCH_TREE_BYTES ((size_t)64 << 20) /* one tree object's content */

static int fetch_pack_data(void *arg, const void *d, size_t n)
{
	return pack_append(arg, d, n);
}

/* Ids already walked, in an open-addressing set (trees shared by several directories
 * are stored once). */
struct fetch_set {
	char (*slot)[41];
	size_t cap, n;
};

static size_t fetch_set_hash(const char *oid)
{
	size_t h = 0;

	for (int i = 0; i < 16; i++)
		h = h * 16 + (size_t)(oid[i] <= '9' ? oid[i] - '0' : oid[i] - 'a' + 10);
	return h;
}

/* 1 added, 0 already there, or -ENOMEM. */
static int fetch_set_add(struct fetch_set *s, const char *oid)
{
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct fetch_set ns = {.cap = s->cap ? s->cap * 2 : 1024};

		ns.slot = calloc(ns.cap, sizeof(*ns.slot));
		if (!ns.slot)
			return -ENOMEM;
		for (size_t k = 0; k < s->cap; k++)
			if (s->slot[k][0])
				fetch_set_add(&ns, s->slot[k]);
		free(s->slot);
		*s = ns;
	}
	for (i = fetch_set_hash(oid) & (s->cap - 1); s->slot[i][0]; i = (i + 1) & (s->cap - 1))
		if (memcmp(s->slot[i], oid, 40) == 0)
			return 0;
	memcpy(s->slot[i], oid, 41);
	s->n++;
	return 1;
}

/* Stores and indexes the tree oid from the pack, and queues its subtrees. */
static int fetch_tree_one(struct pack *p, struct odb *o, struct idx *x, const char *oid,
                          struct fetch_set *seen, char (**queue)[41], size_t *qn, size_t *qcap)
{
	struct tree_entry *e = NULL;
	enum pack_type type;
	void *data = NULL;
	size_t len, n = 0;
	int r;

	r = pack_read(p, oid, &type, &data, &len, FETCH_TREE_BYTES);
	if (r == -ENOENT) {
		log_warn("git fetch: the pack lacks tree %s", oid);
		return -EIO;
	}
	if (r < 0)
		return r;
	if (type != PACK_TREE) {
		r = -EIO;
		goto out;
	}
	r = pack_tree_parse(data, len, IDX_TREE_MAX, &e, &n);
	if (r == 0)
		r = odb_tree_put_raw(o, oid, data, len);
	if (r == 0) {
		r = idx_tree_put(x, oid, e, n);
		if (r < 0)
			log_warn("cache: cannot index tree %s: %s", oid, strerror(-r));
		r = 0;
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (e[i].mode != TREE_MODE_DIR)
			continue;
		r = fetch_set_add(seen, e[i].oid);
		if (r <= 0)
			continue;
		r = 0;
		if (seen->n > FETCH_TREES_MAX) {
			r = -EFBIG;
			break;
		}
		if (*qn == *qcap) {
			size_t ncap = *qcap ? *qcap * 2 : 256;
			char(*nq)[41] = realloc(*queue, ncap * sizeof(**queue));

			if (!nq) {
				r = -ENOMEM;
				break;
			}
			*queue = nq;
			*qcap = ncap;
		}
		memcpy((*queue)[(*qn)++], e[i].oid, 41);
	}
out:
	free(e);
	free(data);
	return r;
}

int fetch_commit_trees(struct gl *g, struct odb *o, struct idx *x, const char *project,
                       const char *commit, char tree_oid[41], size_t *ntrees)
{
	const char *wants[1] = {commit};
	struct fetch_set seen = {0};
	char(*queue)[41] = NULL;
	size_t qn = 0, qcap = 0, done = 0;
	struct pack *p = NULL;
	enum pack_type type;
	void *data = NULL;
	int64_t when;
	size_t len;
	int r;

	*ntrees = 0;
	r = pack_new(&p, odb_tmp_dir(o), FETCH_TREES_PACK_MAX);
	if (r < 0)
		return r;
	r = gl_git_fetch(g, project, wants, 1, true, FETCH_TREES_PACK_MAX + (1 << 20),
	                 fetch_pack_data, p);
	if (r == 0)
		r = pack_commit(p);
	if (r < 0)
		goto out;
	r = pack_read(p, commit, &type, &data, &len, 1 << 20);
	if (r == 0 && type != PACK_COMMIT)
		r = -EIO;
	if (r == 0)
		r = pack_commit_tree(data, len, tree_oid);
	if (r == 0 && pack_commit_time(data, len, &when) == 0)
		idx_commit_time_put(x, commit, when); /* what the revision shows as mtime */
	if (r < 0) {
		log_warn("git fetch of %.12s from %s: no usable commit in the pack", commit,
		         project);
		r = -EIO;
		goto out;
	}
	r = fetch_set_add(&seen, tree_oid);
	if (r < 0)
		goto out;
	r = fetch_tree_one(p, o, x, tree_oid, &seen, &queue, &qn, &qcap);
	done = 1;
	while (r == 0 && qn) {
		char oid[41];

		memcpy(oid, queue[--qn], 41);
		r = fetch_tree_one(p, o, x, oid, &seen, &queue, &qn, &qcap);
		done++;
	}
	if (r == 0) {
		r = idx_commit_put(x, commit, tree_oid);
		if (r < 0)
			log_warn("cache: cannot index commit %s: %s", commit, strerror(-r));
		r = 0;
		*ntrees = done;
	}
out:
	free(queue);
	free(seen.slot);
	free(data);
	pack_free(p);
	return r;
}

static int fetch_oid_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int fetch_blobs(struct gl *g, struct odb *o, struct idx *x, const char *project,
                const char *const *oids, size_t n, uint64_t max_bytes,
                void (*stored)(void *arg, const char *oid, uint64_t size), void *arg)
{
	struct pack *p = NULL;
	int r, count = 0;

	struct idx_blob_rec *recs;
	const char **u;
	size_t k = 0, nrecs = 0;

	if (n == 0)
		return 0;
	if (n > FETCH_BLOBS_MAX)
		return -EINVAL;
	/* one want per blob, however many names share it */
	u = malloc(n * sizeof(*u));
	if (!u)
		return -ENOMEM;
	memcpy(u, oids, n * sizeof(*u));
	qsort(u, n, sizeof(*u), fetch_oid_cmp);
	for (size_t i = 0; i < n; i++)
		if (!k || strcmp(u[k - 1], u[i]) != 0)
			u[k++] = u[i];
	oids = u;
	n = k;
	recs = calloc(n, sizeof(*recs)); /* without it, a transaction a blob */
	r = pack_new(&p, odb_tmp_dir(o), max_bytes);
	if (r < 0) {
		free(recs);
		free(u);
		return r;
	}
	r = gl_git_fetch(g, project, oids, n, false, max_bytes + (1 << 20), fetch_pack_data, p);
	if (r == 0) {
		r = pack_commit(p);
		if (r < 0)
			log_warn("git fetch of %zu blobs from %s: the pack does not index: %s", n,
			         project, git_error_last() ? git_error_last()->message : "");
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		enum pack_type type;
		void *data = NULL;
		size_t len;
		int s = pack_read(p, oids[i], &type, &data, &len, (size_t)max_bytes);

		if (s == 0 && type == PACK_BLOB && !odb_blob_has(o, oids[i]))
			s = odb_blob_put_hashed(o, oids[i], data, len); /* the indexer's id */
		else if (s == 0 && type != PACK_BLOB)
			s = -EIO;
		free(data);
		if (s == 0) {
			if (recs)
				recs[nrecs++] = (struct idx_blob_rec){.oid = oids[i], .size = len};
			else
				idx_size_put(x, oids[i], len);
			if (stored)
				stored(arg, oids[i], len);
			count++;
		} else if (s != -ENOENT) {
			log_warn("git fetch: blob %s from the pack not stored: %s", oids[i],
			         strerror(-s));
		}
	}
	if (nrecs)
		idx_blobs_put(x, recs, nrecs); /* one index transaction for the batch */
	free(recs);
	pack_free(p);
	free(u);
	return r < 0 ? r : count;
}
