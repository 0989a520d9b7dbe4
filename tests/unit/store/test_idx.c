/* Unit tests of the LMDB index: round trips of every record kind, -ENOENT for absent
 * keys, malformed keys refused, persistence across reopen, concurrent use from threads. */
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check.h"
#include "reef/idx.h"
#include "reef/pack.h"

static const char *T1 = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
static const char *C1 = "0123456789abcdef0123456789abcdef01234567";
static const char *B1 = "ce013625030ba8dba906f756967f9e9ca394464a";

static void test_trees(struct idx *x)
{
	struct tree_entry in[3], *out;
	size_t n;

	memset(in, 0, sizeof(in));
	strcpy(in[0].name, "data");
	in[0].mode = TREE_MODE_DIR;
	strcpy(in[0].oid, T1);
	in[0].size = -1;
	strcpy(in[1].name, "\xc3\xa9t\xc3\xa9 file.csv");
	in[1].mode = TREE_MODE_EXEC;
	strcpy(in[1].oid, B1);
	in[1].size = 123456789012LL;
	memset(in[2].name, 'n', TREE_NAME_MAX);
	in[2].mode = TREE_MODE_LINK;
	strcpy(in[2].oid, C1);
	in[2].size = 0;

	CHECK_EQ_INT(idx_tree_get(x, C1, &out, &n), -ENOENT);
	CHECK_EQ_INT(idx_tree_put(x, C1, in, 3), 0);
	CHECK_EQ_INT(idx_tree_get(x, C1, &out, &n), 0);
	CHECK_EQ_INT(n, 3);
	for (size_t i = 0; i < 3; i++) {
		CHECK_EQ_STR(out[i].name, in[i].name);
		CHECK_EQ_STR(out[i].oid, in[i].oid);
		CHECK_EQ_INT(out[i].mode, in[i].mode);
		CHECK_EQ_INT(out[i].size, in[i].size);
	}
	free(out);
	/* the empty listing */
	CHECK_EQ_INT(idx_tree_put(x, T1, in, 0), 0);
	CHECK_EQ_INT(idx_tree_get(x, T1, &out, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(out);
	/* malformed */
	CHECK_EQ_INT(idx_tree_get(x, "nothex", &out, &n), -EINVAL);
	strcpy(in[0].oid, "zz");
	CHECK_EQ_INT(idx_tree_put(x, B1, in, 1), -EINVAL);
	CHECK_EQ_INT(idx_tree_get(x, B1, &out, &n), -ENOENT);
}

static void test_records(struct idx *x)
{
	char oid[41], db[64];
	int64_t at, id;
	uint64_t size;

	CHECK_EQ_INT(idx_commit_get(x, C1, oid), -ENOENT);
	CHECK_EQ_INT(idx_commit_put(x, C1, T1), 0);
	CHECK_EQ_INT(idx_commit_get(x, C1, oid), 0);
	CHECK_EQ_STR(oid, T1);
	CHECK_EQ_INT(idx_commit_put(x, "abc", T1), -EINVAL);
	CHECK_EQ_INT(idx_commit_time_get(x, C1, &at), -ENOENT);
	CHECK_EQ_INT(idx_commit_time_put(x, C1, 1614827167), 0);
	CHECK_EQ_INT(idx_commit_time_get(x, C1, &at), 0);
	CHECK_EQ_INT(at, 1614827167);
	{
		static const char c[] = "tree 1111111111111111111111111111111111111111\nparent "
		                        "2222222222222222222222222222222222222222\n"
		                        "author A <a@x> 1 +0000\ncommitter C D <c@x> 1614827167 "
		                        "+0200\n\nmsg\ncommitter X <x> 5 +0000\n";
		static const char bad[] =
		    "tree 1111111111111111111111111111111111111111\ncommitter C <c@x> soon "
		    "+0000\n\n";
		static const char none[] =
		    "tree 1111111111111111111111111111111111111111\n\ncommitter C <c@x> 5 +0000\n";

		CHECK_EQ_INT(pack_commit_time(c, sizeof(c) - 1, &at), 0);
		CHECK_EQ_INT(at, 1614827167);
		CHECK_EQ_INT(pack_commit_time(bad, sizeof(bad) - 1, &at), -EIO);
		CHECK_EQ_INT(pack_commit_time(none, sizeof(none) - 1, &at), -ENOENT);
	}

	CHECK_EQ_INT(idx_ref_get(x, 7, "branch:main", oid, &at), -ENOENT);
	CHECK_EQ_INT(idx_ref_put(x, 7, "branch:main", C1, 1700000000123LL), 0);
	CHECK_EQ_INT(idx_ref_get(x, 7, "branch:main", oid, &at), 0);
	CHECK_EQ_STR(oid, C1);
	CHECK_EQ_INT(at, 1700000000123LL);
	/* per project */
	CHECK_EQ_INT(idx_ref_get(x, 8, "branch:main", oid, &at), -ENOENT);
	CHECK_EQ_INT(idx_ref_get(x, 7, "tag:main", oid, &at), -ENOENT);
	/* overwrite */
	CHECK_EQ_INT(idx_ref_put(x, 7, "branch:main", B1, 5), 0);
	CHECK_EQ_INT(idx_ref_get(x, 7, "branch:main", oid, NULL), 0);
	CHECK_EQ_STR(oid, B1);
	CHECK_EQ_INT(idx_ref_put(x, 7, "", B1, 5), -EINVAL);

	CHECK_EQ_INT(idx_project_get(x, "acme/cats", &id, db, sizeof(db), &at), -ENOENT);
	CHECK_EQ_INT(idx_project_put(x, "acme/cats", 42, "master", 99), 0);
	CHECK_EQ_INT(idx_project_get(x, "acme/cats", &id, db, sizeof(db), &at), 0);
	CHECK_EQ_INT(id, 42);
	CHECK_EQ_STR(db, "master");
	CHECK_EQ_INT(at, 99);
	CHECK_EQ_INT(idx_project_get(x, "acme/cats", &id, db, 3, &at), -ENOBUFS);
	CHECK_EQ_INT(idx_project_put(x, "acme/empty", 43, "", 1), 0);
	CHECK_EQ_INT(idx_project_get(x, "acme/empty", &id, db, sizeof(db), NULL), 0);
	CHECK_EQ_STR(db, "");
	CHECK_EQ_INT(idx_project_del(x, "acme/empty"), 0);
	CHECK_EQ_INT(idx_project_get(x, "acme/empty", &id, NULL, 0, NULL), -ENOENT);
	CHECK_EQ_INT(idx_project_del(x, "acme/empty"), -ENOENT);

	/* test_trees listed B1 with its size */
	CHECK_EQ_INT(idx_size_get(x, B1, &size), 0);
	CHECK_EQ_INT(size, 123456789012LL);
	CHECK_EQ_INT(idx_size_put(x, B1, 1ULL << 40), 0);
	CHECK_EQ_INT(idx_size_get(x, B1, &size), 0);
	CHECK_EQ_INT(size, 1ULL << 40);
	CHECK_EQ_INT(idx_size_get(x, "B1", &size), -EINVAL);
}

static void test_fill(struct idx *x)
{
	struct tree_entry e[3];

	memset(e, 0, sizeof(e));
	strcpy(e[0].oid, B1); /* size known in the index */
	e[0].mode = TREE_MODE_FILE;
	e[0].size = -1;
	strcpy(e[1].oid, "3333333333333333333333333333333333333333"); /* unknown */
	e[1].mode = TREE_MODE_FILE;
	e[1].size = -1;
	strcpy(e[2].oid, B1); /* a directory never gets a blob size */
	e[2].mode = TREE_MODE_DIR;
	e[2].size = -1;
	CHECK_EQ_INT(idx_sizes_fill(x, e, 3), 0);
	CHECK_EQ_INT(e[0].size, 1LL << 40);
	CHECK_EQ_INT(e[1].size, -1);
	CHECK_EQ_INT(e[2].size, -1);
}

struct worker {
	struct idx *x;
	int n;
	int fails;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	char oid[41], tree[41];

	for (int i = 0; i < 200; i++) {
		snprintf(oid, sizeof(oid), "%08x%032d", (unsigned)w->n, i);
		if (idx_commit_put(w->x, oid, T1) < 0 || idx_commit_get(w->x, oid, tree) < 0 ||
		    strcmp(tree, T1) != 0)
			w->fails++;
	}
	return NULL;
}

#define L1 "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"

/* LFS verdicts and the object records eviction orders by last access. */
static void test_lfs_and_lru(struct idx *x)
{
	struct idx_lfs l = {.lfs = true, .oid = L1, .size = 1ULL << 33}, got;
	struct idx_obj *list, o, touch[3];
	size_t n;

	CHECK_EQ_INT(idx_lfs_get(x, B1, &got), -ENOENT);
	CHECK_EQ_INT(idx_lfs_put(x, B1, &l), 0);
	CHECK_EQ_INT(idx_lfs_get(x, B1, &got), 0);
	CHECK(got.lfs);
	CHECK_EQ_STR(got.oid, L1);
	CHECK_EQ_INT(got.size, 1ULL << 33);
	l = (struct idx_lfs){.lfs = false, .size = 12};
	CHECK_EQ_INT(idx_lfs_put(x, C1, &l), 0);
	CHECK_EQ_INT(idx_lfs_get(x, C1, &got), 0);
	CHECK(!got.lfs && got.size == 12 && got.oid[0] == '\0');

	CHECK_EQ_INT(idx_obj_put(x, IDX_OBJ_BLOB, B1, 100, 3000), 0);
	CHECK_EQ_INT(idx_obj_put(x, IDX_OBJ_BLOB, C1, 200, 1000), 0);
	CHECK_EQ_INT(idx_obj_put(x, IDX_OBJ_LFS, L1, 300, 2000), 0);
	CHECK_EQ_INT(idx_obj_put(x, IDX_OBJ_LFS, B1, 1, 1), -EINVAL); /* not a sha256 */
	CHECK_EQ_INT(idx_obj_list(x, &list, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_STR(list[0].oid, C1);
	CHECK_EQ_STR(list[1].oid, L1);
	CHECK(list[1].kind == IDX_OBJ_LFS && list[1].size == 300);
	CHECK_EQ_STR(list[2].oid, B1);
	free(list);
	/* a batch of accesses: C1 becomes the most recent; older times never win; a
	 * record evicted meanwhile is not brought back */
	memset(touch, 0, sizeof(touch));
	strcpy(touch[0].oid, C1);
	touch[0].atime = 5000;
	strcpy(touch[1].oid, B1);
	touch[1].atime = 10;
	strcpy(touch[2].oid, T1);
	touch[2].atime = 9000;
	CHECK_EQ_INT(idx_obj_touch(x, touch, 3), 0);
	CHECK_EQ_INT(idx_obj_get(x, IDX_OBJ_BLOB, T1, &o), -ENOENT);
	CHECK_EQ_INT(idx_obj_get(x, IDX_OBJ_BLOB, B1, &o), 0);
	CHECK_EQ_INT(o.atime, 3000);
	CHECK_EQ_INT(idx_obj_list(x, &list, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_STR(list[0].oid, L1);
	CHECK_EQ_STR(list[1].oid, B1);
	CHECK_EQ_STR(list[2].oid, C1);
	free(list);
	CHECK_EQ_INT(idx_obj_del(x, IDX_OBJ_LFS, L1), 0);
	CHECK_EQ_INT(idx_obj_del(x, IDX_OBJ_LFS, L1), -ENOENT);
	CHECK_EQ_INT(idx_obj_list(x, &list, &n), 0);
	CHECK_EQ_INT(n, 2);
	free(list);
}

/* A listing's sizes land in the sizes database with it (an open then needs no request);
 * refs and object records go in batches. */
static void test_batches(char *dir)
{
	static const char *B2 = "1111111111111111111111111111111111111111";
	static const char *B3 = "2222222222222222222222222222222222222222";
	char path[4096], commit[41];
	struct tree_entry in[4], *out;
	struct idx_ref refs[3];
	struct idx_obj objs[2], got;
	struct idx *x;
	int64_t at = 0;
	uint64_t size;
	size_t n;

	snprintf(path, sizeof(path), "%s/batches.lmdb", dir);
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	memset(in, 0, sizeof(in));
	strcpy(in[0].name, "dir");
	in[0].mode = TREE_MODE_DIR;
	strcpy(in[0].oid, T1);
	in[0].size = 7; /* a tree's "size" is no blob size */
	strcpy(in[1].name, "known");
	in[1].mode = TREE_MODE_FILE;
	strcpy(in[1].oid, B1);
	in[1].size = 4242;
	strcpy(in[2].name, "unknown");
	in[2].mode = TREE_MODE_EXEC;
	strcpy(in[2].oid, B2);
	in[2].size = -1;
	strcpy(in[3].name, "link");
	in[3].mode = TREE_MODE_LINK;
	strcpy(in[3].oid, B3);
	in[3].size = 0;
	CHECK_EQ_INT(idx_size_get(x, B1, &size), -ENOENT);
	CHECK_EQ_INT(idx_tree_put(x, C1, in, 4), 0);
	CHECK_EQ_INT(idx_size_get(x, B1, &size), 0);
	CHECK_EQ_INT(size, 4242);
	CHECK_EQ_INT(idx_size_get(x, B3, &size), 0);
	CHECK_EQ_INT(size, 0);
	CHECK_EQ_INT(idx_size_get(x, B2, &size), -ENOENT);
	CHECK_EQ_INT(idx_size_get(x, T1, &size), -ENOENT);
	/* and a later listing without sizes still shows them (filled from sizes) */
	in[1].size = -1;
	CHECK_EQ_INT(idx_tree_put(x, T1, in + 1, 1), 0);
	CHECK_EQ_INT(idx_tree_get(x, T1, &out, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(idx_sizes_fill(x, out, n), 0);
	CHECK_EQ_INT(out[0].size, 4242);
	free(out);

	memset(refs, 0, sizeof(refs));
	refs[0].ref = "branch:main";
	strcpy(refs[0].commit, C1);
	refs[1].ref = "tag:v1";
	strcpy(refs[1].commit, "nothex"); /* skipped, not the batch */
	refs[2].ref = "tag:v2";
	strcpy(refs[2].commit, B1);
	CHECK_EQ_INT(idx_refs_put(x, 9, refs, 3, 1234), 0);
	CHECK_EQ_INT(idx_ref_get(x, 9, "branch:main", commit, &at), 0);
	CHECK_EQ_STR(commit, C1);
	CHECK_EQ_INT(at, 1234);
	CHECK_EQ_INT(idx_ref_get(x, 9, "tag:v1", commit, NULL), -ENOENT);
	CHECK_EQ_INT(idx_ref_get(x, 9, "tag:v2", commit, NULL), 0);
	CHECK_EQ_STR(commit, B1);
	CHECK_EQ_INT(idx_ref_get(x, 8, "branch:main", commit, NULL), -ENOENT);
	CHECK_EQ_INT(idx_refs_put(x, 9, refs, 0, 1), 0);

	memset(objs, 0, sizeof(objs));
	objs[0].kind = IDX_OBJ_BLOB;
	strcpy(objs[0].oid, B1);
	objs[0].size = 99;
	objs[0].atime = 5;
	objs[1].kind = IDX_OBJ_BLOB;
	strcpy(objs[1].oid, B2);
	objs[1].size = 100;
	objs[1].atime = 6;
	CHECK_EQ_INT(idx_obj_put_many(x, objs, 2), 0);
	CHECK_EQ_INT(idx_obj_get(x, IDX_OBJ_BLOB, B2, &got), 0);
	CHECK_EQ_INT(got.size, 100);
	CHECK_EQ_INT(got.atime, 6);
	objs[0].size = 98; /* replaced, not added */
	CHECK_EQ_INT(idx_obj_put_many(x, objs, 1), 0);
	CHECK_EQ_INT(idx_obj_get(x, IDX_OBJ_BLOB, B1, &got), 0);
	CHECK_EQ_INT(got.size, 98);
	idx_close(x);
}

/* The cache listing walks every project and every ref of each (after test_records). */
static void test_lists(struct idx *x)
{
	struct idx_project_rec *p = NULL;
	struct idx_ref_rec *r = NULL;
	size_t n = 0;

	CHECK_EQ_INT(idx_project_put(x, "acme/iris", 44, "main", 1), 0);
	CHECK_EQ_INT(idx_project_list(x, &p, &n), 0);
	CHECK_EQ_INT(n, 2); /* acme/cats (test_records) and acme/iris, in path order */
	CHECK_EQ_STR(p[0].path, "acme/cats");
	CHECK_EQ_INT(p[0].id, 42);
	CHECK_EQ_STR(p[1].path, "acme/iris");
	CHECK_EQ_INT(p[1].id, 44);
	free(p);
	/* refs of one project only, in name order; neighbours by id are not mixed in */
	CHECK_EQ_INT(idx_ref_put(x, 6, "branch:zzz", C1, 1), 0);
	CHECK_EQ_INT(idx_ref_put(x, 7, "tag:v1", C1, 1), 0);
	CHECK_EQ_INT(idx_ref_put(x, 8, "branch:other", C1, 1), 0);
	CHECK_EQ_INT(idx_ref_list(x, 7, &r, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_STR(r[0].ref, "branch:main");
	CHECK_EQ_STR(r[0].commit, B1);
	CHECK_EQ_STR(r[1].ref, "tag:v1");
	CHECK_EQ_STR(r[1].commit, C1);
	free(r);
	CHECK_EQ_INT(idx_ref_list(x, 1000, &r, &n), 0);
	CHECK_EQ_INT(n, 0);
	free(r);
}

/* Sizes and LFS verdicts of many blobs in one transaction; a malformed id is skipped. */
static void test_blobs_put(struct idx *x)
{
	struct idx_lfs ptr = {.lfs = true, .oid = L1, .size = 7}, plain = {.size = 5}, got;
	struct idx_blob_rec v[4] = {
	    {.oid = "5555555555555555555555555555555555555555", .size = 5, .lfs = &plain},
	    {.oid = "not an id", .size = 1},
	    {.oid = "6666666666666666666666666666666666666666", .size = 130, .lfs = &ptr},
	    {.oid = "7777777777777777777777777777777777777777", .size = 9},
	};
	uint64_t size;

	CHECK_EQ_INT(idx_blobs_put(x, v, 0), 0);
	CHECK_EQ_INT(idx_blobs_put(x, v, 4), 0);
	CHECK_EQ_INT(idx_size_get(x, v[0].oid, &size), 0);
	CHECK_EQ_INT(size, 5);
	CHECK_EQ_INT(idx_lfs_get(x, v[0].oid, &got), 0);
	CHECK(!got.lfs && got.size == 5);
	CHECK_EQ_INT(idx_size_get(x, v[2].oid, &size), 0);
	CHECK_EQ_INT(size, 130);
	CHECK_EQ_INT(idx_lfs_get(x, v[2].oid, &got), 0);
	CHECK(got.lfs && got.size == 7);
	CHECK_EQ_STR(got.oid, L1);
	CHECK_EQ_INT(idx_size_get(x, v[3].oid, &size), 0);
	CHECK_EQ_INT(size, 9);
	CHECK_EQ_INT(idx_lfs_get(x, v[3].oid, &got), -ENOENT); /* no verdict given */
}

/* Resident kB of the mapping of file path in this process (-1: no such mapping). */
static long map_rss_kib(const char *path)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[4096], perms[8];
	unsigned long lo, hi;
	bool in = false;
	long rss = -1, v;

	CHECK(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3)
			in = strstr(line, path) && strcmp(perms, "r--s") == 0;
		else if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
			rss = rss < 0 ? v : rss + v;
	}
	fclose(f);
	return rss;
}

/* Pages of the map read by transactions are dropped from the process by idx_idle (the
 * index of a large walk stayed mapped whole, B7), and what is read again is intact. */
static void test_map_trim(const char *dir)
{
	enum { N = 50000, STEP = 1000 };
	char path[4096];
	struct idx_blob_rec *v = calloc(N, sizeof(*v));
	char(*oids)[41] = calloc(N, 41);
	struct idx *x;
	uint64_t size;
	long rss;

	CHECK(v && oids);
	snprintf(path, sizeof(path), "%s/trim.lmdb", dir);
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	for (int i = 0; i < N; i++) {
		snprintf(oids[i], 41, "%08x%032x", (unsigned)i * 2654435761u, (unsigned)i);
		v[i] = (struct idx_blob_rec){.oid = oids[i], .size = (uint64_t)i * 3};
	}
	for (int i = 0; i < N; i += STEP)
		CHECK_EQ_INT(idx_blobs_put(x, v + i, STEP), 0);
	for (int i = 0; i < N; i++) {
		CHECK_EQ_INT(idx_size_get(x, oids[i], &size), 0);
		CHECK_EQ_INT(size, (uint64_t)i * 3);
	}
	/* the reads above mapped all of the 3 MiB the records take */
	CHECK(map_rss_kib(path) >= 2048);
	idx_idle(x);
	rss = map_rss_kib(path);
	CHECK(rss >= 0 && rss <= 64);
	for (int i = 0; i < N; i += 97) {
		CHECK_EQ_INT(idx_size_get(x, oids[i], &size), 0);
		CHECK_EQ_INT(size, (uint64_t)i * 3);
	}
	idx_close(x);
	free(v);
	free(oids);
}

/* A "not a pointer" verdict written by an older reef (42 bytes, 32 of them zero) still reads. */
static void test_old_lfs_record(const char *dir)
{
	char path[4096];
	uint8_t key[20], val[42] = {1, 0};
	struct idx_lfs got;
	struct idx *x;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;

	snprintf(path, sizeof(path), "%s/old.lmdb", dir);
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	idx_close(x);
	memset(key, 0x5a, sizeof(key));
	val[34] = 0x39; /* u64 little-endian 0x0139 = 313 */
	val[35] = 0x01;
	CHECK_EQ_INT(mdb_env_create(&env), 0);
	CHECK_EQ_INT(mdb_env_set_maxdbs(env, 16), 0);
	CHECK_EQ_INT(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), 0);
	CHECK_EQ_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
	CHECK_EQ_INT(mdb_dbi_open(txn, "lfs", 0, &dbi), 0);
	CHECK_EQ_INT(mdb_put(txn, dbi, &(MDB_val){20, key}, &(MDB_val){42, val}, 0), 0);
	val[1] = 1; /* a 10-byte record must say "not a pointer" */
	key[0] = 0x5b;
	CHECK_EQ_INT(mdb_put(txn, dbi, &(MDB_val){20, key}, &(MDB_val){10, val}, 0), 0);
	CHECK_EQ_INT(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	CHECK_EQ_INT(idx_lfs_get(x, "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", &got), 0);
	CHECK(!got.lfs && got.size == 313);
	CHECK_EQ_INT(idx_lfs_get(x, "5b5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", &got), -EIO);
	idx_close(x);
}

int main(void)
{
	char dir[] = "/tmp/reef-test-idx-XXXXXX", path[4096], oid[41];
	struct idx *x;
	pthread_t th[4];
	struct worker w[4];
	uint64_t size;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/index.lmdb", dir);
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	test_trees(x);
	test_records(x);
	test_lists(x);
	test_fill(x);
	test_lfs_and_lru(x);
	test_blobs_put(x);
	test_batches(dir);
	test_map_trim(dir);
	test_old_lfs_record(dir);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){.x = x, .n = i};
		CHECK_EQ_INT(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK_EQ_INT(w[i].fails, 0);
	}
	idx_close(x);
	idx_close(NULL);

	/* everything persists */
	CHECK_EQ_INT(idx_open(&x, path, 0), 0);
	CHECK_EQ_INT(idx_commit_get(x, C1, oid), 0);
	CHECK_EQ_STR(oid, T1);
	CHECK_EQ_INT(idx_size_get(x, B1, &size), 0);
	idx_close(x);

	/* a tiny map fills up: -ENOSPC, not a crash */
	snprintf(path, sizeof(path), "%s/small.lmdb", dir);
	CHECK_EQ_INT(idx_open(&x, path, 64 * 1024), 0);
	{
		int r = 0;
		struct tree_entry *big = calloc(2000, sizeof(*big));

		CHECK(big);
		for (int i = 0; i < 2000; i++) {
			snprintf(big[i].name, sizeof(big[i].name), "file-%d-%0200d", i, 0);
			big[i].mode = TREE_MODE_FILE;
			strcpy(big[i].oid, B1);
		}
		r = idx_tree_put(x, T1, big, 2000);
		CHECK_EQ_INT(r, -ENOSPC);
		free(big);
	}
	idx_close(x);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(path), 0);
	printf("idx: ok\n");
	return 0;
}
