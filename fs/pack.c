/* Packs received from a server: see include/reef/pack.h. */
#include "reef/pack.h"

#include <dirent.h>
#include <errno.h>
#include <git2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reef/hash.h"

struct pack {
	char dir[4096];  /* tmp/<pid>-pack-XXXXXX: objects dir of a one-pack ODB */
	char pdir[4160]; /* dir/pack: where the indexer writes */
	git_indexer *ix;
	/* libgit2 keeps its count of the stream in the caller's progress struct, across
	 * every append and the commit: one struct for the pack's whole life */
	git_indexer_progress st;
	git_odb *odb;
	uint64_t max, got;
	size_t count;
	bool failed;
	bool init;
};

static int pack_git_err(int r)
{
	if (r == GIT_ENOTFOUND)
		return -ENOENT;
	if (r == GIT_EBUFS)
		return -EFBIG;
	return -EIO;
}

int pack_new(struct pack **out, const char *tmp_dir, uint64_t max_bytes)
{
	struct pack *p;
	int r;

	*out = NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (git_libgit2_init() < 0) {
		free(p);
		return -EIO;
	}
	p->init = true;
	p->max = max_bytes;
	if ((size_t)snprintf(p->dir, sizeof(p->dir), "%s/%ld-pack-XXXXXX", tmp_dir,
	                     (long)getpid()) >= sizeof(p->dir)) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	if (!mkdtemp(p->dir)) {
		r = -errno;
		p->dir[0] = '\0';
		goto fail;
	}
	snprintf(p->pdir, sizeof(p->pdir), "%s/pack", p->dir);
	if (mkdir(p->pdir, 0700) < 0) {
		r = -errno;
		goto fail;
	}
	/* no ODB for bases: a thin pack (deltas against objects we may not hold) fails */
	r = git_indexer_new(&p->ix, p->pdir, 0400, NULL, NULL);
	if (r < 0) {
		r = pack_git_err(r);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	pack_free(p);
	return r;
}

int pack_append(struct pack *p, const void *data, size_t len)
{
	if (p->failed || !p->ix)
		return -EIO;
	if (len > p->max - p->got) {
		p->failed = true;
		return -EFBIG;
	}
	p->got += len;
	if (git_indexer_append(p->ix, data, len, &p->st) < 0) {
		p->failed = true;
		return -EIO;
	}
	return 0;
}

int pack_commit(struct pack *p)
{
	int r;

	if (p->failed || !p->ix)
		return -EIO;
	r = git_indexer_commit(p->ix, &p->st);
	if (r < 0) {
		p->failed = true;
		return -EIO;
	}
	p->count = p->st.indexed_objects;
	git_indexer_free(p->ix);
	p->ix = NULL;
	r = git_odb_open(&p->odb, p->dir);
	return r < 0 ? pack_git_err(r) : 0;
}

size_t pack_count(const struct pack *p)
{
	return p->count;
}

int pack_read(struct pack *p, const char *oid, enum pack_type *type, void **data, size_t *len,
              size_t max)
{
	git_odb_object *obj = NULL;
	git_oid id;
	size_t n;
	int r;

	*data = NULL;
	*len = 0;
	if (!p->odb)
		return -EIO;
	if (!oid || !hash_is_hex(oid, HASH_SHA1_HEX) || git_oid_fromstr(&id, oid) < 0)
		return -EINVAL;
	{
		size_t sz;
		git_object_t t;

		r = git_odb_read_header(&sz, &t, p->odb, &id);
		if (r < 0)
			return pack_git_err(r);
		if (sz > max)
			return -EFBIG;
	}
	r = git_odb_read(&obj, p->odb, &id);
	if (r < 0)
		return pack_git_err(r);
	n = git_odb_object_size(obj);
	switch (git_odb_object_type(obj)) {
	case GIT_OBJECT_COMMIT:
		*type = PACK_COMMIT;
		break;
	case GIT_OBJECT_TREE:
		*type = PACK_TREE;
		break;
	case GIT_OBJECT_BLOB:
		*type = PACK_BLOB;
		break;
	case GIT_OBJECT_TAG:
		*type = PACK_TAG;
		break;
	default:
		git_odb_object_free(obj);
		return -EIO;
	}
	*data = malloc(n ? n : 1);
	if (!*data) {
		git_odb_object_free(obj);
		return -ENOMEM;
	}
	memcpy(*data, git_odb_object_data(obj), n);
	*len = n;
	git_odb_object_free(obj);
	return 0;
}

static void pack_rmdir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4400];

	if (d) {
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			if (unlink(path) < 0 && errno == EISDIR)
				pack_rmdir(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

void pack_free(struct pack *p)
{
	if (!p)
		return;
	git_indexer_free(p->ix);
	git_odb_free(p->odb);
	if (p->dir[0])
		pack_rmdir(p->dir);
	if (p->init)
		git_libgit2_shutdown();
	free(p);
}

/* Git's modes as trees store them, mapped to reef's (git itself reads 100664 and other
 * old file modes as 100644). */
static int pack_mode(unsigned long m, uint32_t *out)
{
	switch (m) {
	case 040000:
		*out = TREE_MODE_DIR;
		return 0;
	case 0100755:
		*out = TREE_MODE_EXEC;
		return 0;
	case 0120000:
		*out = TREE_MODE_LINK;
		return 0;
	case 0160000:
		*out = TREE_MODE_SUBMODULE;
		return 0;
	default:
		if ((m & 0170000) == 0100000) {
			*out = TREE_MODE_FILE;
			return 0;
		}
		return -EIO;
	}
}

int pack_tree_parse(const void *data, size_t len, size_t max, struct tree_entry **out, size_t *n)
{
	const unsigned char *p = data, *end = p + len;
	struct tree_entry *e = NULL;
	size_t count = 0, cap = 0;
	int r = 0;

	*out = NULL;
	*n = 0;
	while (p < end) {
		unsigned long mode = 0;
		const unsigned char *name, *nul;
		size_t nlen;

		/* "<octal mode> <name>\0<20-byte id>" */
		while (p < end && *p >= '0' && *p <= '7' && mode < 01000000)
			mode = mode * 8 + (unsigned long)(*p++ - '0');
		if (p >= end || *p != ' ') {
			r = -EIO;
			goto out;
		}
		name = ++p;
		nul = memchr(name, '\0', (size_t)(end - name));
		if (!nul || (size_t)(end - nul) < 1 + HASH_SHA1_LEN) {
			r = -EIO;
			goto out;
		}
		nlen = (size_t)(nul - name);
		if (nlen == 0 || nlen > TREE_NAME_MAX || memchr(name, '/', nlen) ||
		    (nlen == 1 && name[0] == '.') ||
		    (nlen == 2 && name[0] == '.' && name[1] == '.')) {
			r = -EIO;
			goto out;
		}
		if (count == max) {
			r = -EFBIG;
			goto out;
		}
		if (count == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct tree_entry *ne;

			if (ncap > max)
				ncap = max;
			ne = realloc(e, ncap * sizeof(*e));
			if (!ne) {
				r = -ENOMEM;
				goto out;
			}
			e = ne;
			cap = ncap;
		}
		memset(&e[count], 0, sizeof(e[count]));
		if (pack_mode(mode, &e[count].mode) < 0) {
			r = -EIO;
			goto out;
		}
		memcpy(e[count].name, name, nlen);
		hash_hex(e[count].oid, nul + 1, HASH_SHA1_LEN);
		e[count].size = -1;
		count++;
		p = nul + 1 + HASH_SHA1_LEN;
	}
out:
	if (r < 0) {
		free(e);
		return r;
	}
	*out = e;
	*n = count;
	return 0;
}

int pack_commit_tree(const void *data, size_t len, char tree[41])
{
	const char *p = data;

	if (len < 46 || memcmp(p, "tree ", 5) != 0 || p[45] != '\n')
		return -EIO;
	memcpy(tree, p + 5, 40);
	tree[40] = '\0';
	return hash_is_hex(tree, HASH_SHA1_HEX) ? 0 : -EIO;
}

int pack_commit_time(const void *data, size_t len, int64_t *when)
{
	const char *p = data, *end = p + len;

	/* headers end at the first empty line; the committer line is among them */
	while (p < end && *p != '\n') {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);

		if (n > 10 && !memcmp(p, "committer ", 10)) {
			/* "committer Name <email> 1700000000 +0100": the epoch follows the '>' */
			const char *gt = memrchr(p, '>', n), *q;
			int64_t v = 0;

			if (!gt || gt + 2 >= p + n || gt[1] != ' ')
				return -EIO;
			for (q = gt + 2; q < p + n && *q >= '0' && *q <= '9'; q++) {
				if (v > (INT64_MAX - 9) / 10)
					return -EIO;
				v = v * 10 + (*q - '0');
			}
			if (q == gt + 2 || (q < p + n && *q != ' '))
				return -EIO;
			*when = v;
			return 0;
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	return -ENOENT;
}
