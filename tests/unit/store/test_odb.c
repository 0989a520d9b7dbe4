/* Unit tests of the object store: verified puts, mismatches leave nothing behind, raw
 * blobs above the threshold with pread at any offset, damaged objects never served, and
 * tree objects hashed exactly as git hashes them (compared with git mktree). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "../check.h"
#include "reef/hash.h"
#include "reef/odb.h"

static char tmpdir[] = "/tmp/reef-test-odb-XXXXXX";

static void blob_id(const void *data, size_t len, char hex[41])
{
	struct hash_ctx *h;
	uint8_t bin[20];

	CHECK_EQ_INT(hash_git_begin(&h, "blob", len), 0);
	CHECK_EQ_INT(hash_update(h, data, len), 0);
	CHECK_EQ_INT(hash_final(h, bin), 0);
	hash_free(h);
	hash_hex(hex, bin, 20);
}

/* Runs a shell command in dir with input, returns its first output line. */
static void run(const char *dir, const char *cmd, const char *input, size_t inlen, char *out,
                size_t outlen)
{
	char path[4096], full[8192];
	FILE *f;

	snprintf(path, sizeof(path), "%s/stdin", dir);
	f = fopen(path, "wb");
	CHECK(f);
	CHECK(fwrite(input, 1, inlen, f) == inlen || inlen == 0);
	fclose(f);
	snprintf(full, sizeof(full), "cd '%s' && %s < stdin", dir, cmd);
	f = popen(full, "r");
	CHECK(f);
	CHECK(fgets(out, (int)outlen, f));
	out[strcspn(out, "\n")] = '\0';
	CHECK_EQ_INT(pclose(f), 0);
}

static size_t count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	CHECK(d);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static void test_small(struct odb *o)
{
	const char *data = "hello\n";
	char id[41], bad[41];
	struct odb_blob *b;
	char buf[16];

	blob_id(data, 6, id);
	CHECK_EQ_STR(id, "ce013625030ba8dba906f756967f9e9ca394464a");
	CHECK(!odb_blob_has(o, id));
	CHECK_EQ_INT(odb_blob_open(o, id, &b), -ENOENT);
	/* the wrong bytes for an id are refused and not stored */
	CHECK_EQ_INT(odb_blob_put(o, id, "hellO\n", 6), -EIO);
	CHECK(!odb_blob_has(o, id));
	CHECK_EQ_INT(odb_blob_put(o, id, data, 6), 0);
	CHECK(odb_blob_has(o, id));
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), 6);
	CHECK(odb_blob_fd(b) >= 0); /* a plain file, which a passthrough open hands over */
	CHECK_EQ_INT(odb_blob_pread(b, buf, sizeof(buf), 0), 6);
	CHECK(memcmp(buf, data, 6) == 0);
	CHECK_EQ_INT(odb_blob_pread(b, buf, 3, 4), 2);
	CHECK(memcmp(buf, "o\n", 2) == 0);
	CHECK_EQ_INT(odb_blob_pread(b, buf, 3, 6), 0);
	CHECK_EQ_INT(odb_blob_pread(b, buf, 3, 100), 0);
	odb_blob_close(b);
	/* putting it again is harmless */
	CHECK_EQ_INT(odb_blob_put(o, id, data, 6), 0);
	/* its fan-out directory removed by hand: made again when the blob is stored */
	{
		char path[4096];
		uint64_t freed;

		CHECK_EQ_INT(odb_remove(o, ODB_KIND_BLOB, id, &freed), 0);
		snprintf(path, sizeof(path), "%s/raw/%.2s", tmpdir, id);
		CHECK_EQ_INT(rmdir(path), 0);
		CHECK_EQ_INT(odb_blob_put(o, id, data, 6), 0);
		CHECK(odb_blob_has(o, id));
	}

	/* the empty blob */
	blob_id("", 0, id);
	CHECK_EQ_STR(id, "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
	CHECK_EQ_INT(odb_blob_put(o, id, "", 0), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), 0);
	CHECK_EQ_INT(odb_blob_pread(b, buf, 3, 0), 0);
	odb_blob_close(b);

	/* malformed ids */
	strcpy(bad, id);
	bad[0] = 'G';
	CHECK_EQ_INT(odb_blob_put(o, bad, "", 0), -EINVAL);
	CHECK_EQ_INT(odb_blob_open(o, "abc", &b), -EINVAL);
	CHECK(!odb_blob_has(o, "../../etc/passwd"));
}

static void test_writer(struct odb *o)
{
	struct odb_writer *w;
	struct odb_blob *b;
	char id[41], buf[8];
	const char *data = "streamed in pieces";
	size_t len = strlen(data);

	blob_id(data, len, id);
	/* more bytes than announced */
	CHECK_EQ_INT(odb_writer_new(&w, o, id, 4), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, len), -EIO);
	odb_writer_abort(w);
	/* fewer bytes than announced */
	CHECK_EQ_INT(odb_writer_new(&w, o, id, len + 1), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, len), 0);
	CHECK_EQ_INT(odb_writer_commit(w), -EIO);
	CHECK(!odb_blob_has(o, id));
	/* in pieces */
	CHECK_EQ_INT(odb_writer_new(&w, o, id, len), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, 5), 0);
	CHECK_EQ_INT(odb_writer_write(w, data + 5, len - 5), 0);
	CHECK_EQ_INT(odb_writer_commit(w), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_pread(b, buf, 8, 9), 8);
	CHECK(memcmp(buf, "in piece", 8) == 0);
	odb_blob_close(b);

	/* unknown size, small: hashed at commit, a raw file like any blob */
	data = "size not told";
	len = strlen(data);
	blob_id(data, len, id);
	CHECK_EQ_INT(odb_writer_new(&w, o, id, ODB_SIZE_UNKNOWN), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, len), 0);
	CHECK_EQ_INT(odb_writer_commit(w), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), len);
	CHECK(odb_blob_fd(b) >= 0);
	odb_blob_close(b);
	/* unknown size, wrong bytes */
	blob_id("other", 5, id);
	CHECK_EQ_INT(odb_writer_new(&w, o, id, ODB_SIZE_UNKNOWN), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, len), 0);
	CHECK_EQ_INT(odb_writer_commit(w), -EIO);
	CHECK(!odb_blob_has(o, id));
}

static void test_raw(struct odb *o)
{
	size_t len = ODB_RAW_THRESHOLD + 12345;
	char *data = malloc(len), *back = malloc(len);
	char id[41], path[4096], tmp[4096];
	struct odb_writer *w;
	struct odb_blob *b;
	uint64_t bytes0, objs0, bytes1, objs1;
	int fd;

	CHECK(data && back);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 + (i >> 11));
	blob_id(data, len, id);
	snprintf(path, sizeof(path), "%s/raw/%.2s/%s", tmpdir, id, id + 2);
	snprintf(tmp, sizeof(tmp), "%s/tmp", tmpdir);
	CHECK_EQ_INT(odb_usage(o, &bytes0, &objs0), 0);

	/* a wrong last byte: EIO, no raw file, no temp file */
	CHECK_EQ_INT(odb_writer_new(&w, o, id, len), 0);
	CHECK_EQ_INT(count_files(tmp), 1);
	CHECK_EQ_INT(odb_writer_write(w, data, len - 1), 0);
	CHECK(access(path, F_OK) < 0); /* nothing visible before verification */
	{
		char last = (char)(data[len - 1] ^ 1);
		CHECK_EQ_INT(odb_writer_write(w, &last, 1), 0);
	}
	CHECK_EQ_INT(odb_writer_commit(w), -EIO);
	CHECK(access(path, F_OK) < 0);
	CHECK_EQ_INT(count_files(tmp), 0);

	/* streamed in odd chunks */
	CHECK_EQ_INT(odb_writer_new(&w, o, id, len), 0);
	for (size_t off = 0; off < len; off += 4093)
		CHECK_EQ_INT(odb_writer_write(w, data + off, len - off < 4093 ? len - off : 4093),
		             0);
	CHECK_EQ_INT(odb_writer_commit(w), 0);
	CHECK(access(path, F_OK) == 0);
	CHECK_EQ_INT(count_files(tmp), 0);
	CHECK_EQ_INT(odb_usage(o, &bytes1, &objs1), 0);
	CHECK_EQ_INT(objs1, objs0 + 1);
	CHECK_EQ_INT(bytes1, bytes0 + len);

	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK(odb_blob_fd(b) >= 0);
	CHECK_EQ_INT(odb_blob_size(b), len);
	CHECK_EQ_INT(odb_blob_pread(b, back, len, 0), len);
	CHECK(memcmp(back, data, len) == 0);
	CHECK_EQ_INT(odb_blob_pread(b, back, 100, len - 10), 10);
	CHECK(memcmp(back, data + len - 10, 10) == 0);
	CHECK_EQ_INT(odb_blob_pread(b, back, 100, 777777), 100);
	CHECK(memcmp(back, data + 777777, 100) == 0);
	odb_blob_close(b);

	/* damage the raw file on disk: never served, removed, reported absent */
	CHECK_EQ_INT(chmod(path, 0600), 0);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	{
		char flip = (char)~data[1000];
		CHECK_EQ_INT(pwrite(fd, &flip, 1, 1000), 1);
	}
	close(fd);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), -ENOENT);
	CHECK(access(path, F_OK) < 0);
	/* put back via odb_blob_put (large, in memory) */
	CHECK_EQ_INT(odb_blob_put(o, id, data, len), 0);
	/* touched but intact (mtime changed, bytes right): re-verified and served */
	CHECK_EQ_INT(utimensat(AT_FDCWD, path, NULL, 0), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_pread(b, back, 10, 0), 10);
	CHECK(memcmp(back, data, 10) == 0);
	odb_blob_close(b);

	/* every blob is a raw file; below the threshold it is stamped with this process's
	 * session (not synced), at the threshold with the lasting stamp (synced) */
	{
		struct stat st;

		blob_id(data, ODB_RAW_THRESHOLD - 1, id);
		CHECK_EQ_INT(odb_blob_put(o, id, data, ODB_RAW_THRESHOLD - 1), 0);
		CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
		CHECK(odb_blob_fd(b) >= 0);
		CHECK_EQ_INT(fstat(odb_blob_fd(b), &st), 0);
		CHECK_EQ_INT(st.st_mtim.tv_sec, 1000000001);
		CHECK(st.st_mtim.tv_nsec > 0);
		odb_blob_close(b);
		blob_id(data, ODB_RAW_THRESHOLD, id);
		CHECK_EQ_INT(odb_blob_put(o, id, data, ODB_RAW_THRESHOLD), 0);
		CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
		CHECK(odb_blob_fd(b) >= 0);
		CHECK_EQ_INT(fstat(odb_blob_fd(b), &st), 0);
		CHECK_EQ_INT(st.st_mtim.tv_sec, 1000000000);
		CHECK_EQ_INT(st.st_mtim.tv_nsec, 0);
		odb_blob_close(b);
	}

	/* unknown size, large */
	blob_id(data, len - 1, id);
	CHECK_EQ_INT(odb_writer_new(&w, o, id, ODB_SIZE_UNKNOWN), 0);
	CHECK_EQ_INT(odb_writer_write(w, data, len - 1), 0);
	CHECK_EQ_INT(odb_writer_commit(w), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), len - 1);
	CHECK(odb_blob_fd(b) >= 0);
	odb_blob_close(b);
	free(data);
	free(back);
}

static void test_small_corrupt(struct odb *o)
{
	const char *data = "will be damaged\n";
	char id[41], path[4096];
	struct odb_blob *b;
	int fd;

	blob_id(data, strlen(data), id);
	CHECK_EQ_INT(odb_blob_put(o, id, data, strlen(data)), 0);
	snprintf(path, sizeof(path), "%s/raw/%.2s/%s", tmpdir, id, id + 2);
	CHECK_EQ_INT(chmod(path, 0600), 0);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ_INT(pwrite(fd, "garbage!", 8, 2), 8);
	close(fd);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), -ENOENT);
	CHECK(access(path, F_OK) < 0);
	CHECK_EQ_INT(odb_blob_put(o, id, data, strlen(data)), 0);
	CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
	odb_blob_close(b);
}

static void test_tree(struct odb *o)
{
	char gitdir[4096], out[256], oid[41], a[41], sh[41], cmd[4096];
	struct tree_entry e[8];
	struct odb_blob *b;
	size_t n = 0;

	snprintf(gitdir, sizeof(gitdir), "%s/ref", tmpdir);
	CHECK_EQ_INT(mkdir(gitdir, 0700), 0);
	run(gitdir, "git init -q --bare . && echo ok", "", 0, out, sizeof(out));
	run(gitdir, "git hash-object -w --stdin", "a\n", 2, a, sizeof(a));
	run(gitdir, "git hash-object -w --stdin", "#!/bin/sh\n", 10, sh, sizeof(sh));
	CHECK(hash_is_hex(a, 40) && hash_is_hex(sh, 40));
	/* a tree for the subdirectory entries */
	{
		char line[512];
		snprintf(line, sizeof(line), "100644 blob %s\tinner\n", a);
		run(gitdir, "git mktree", line, strlen(line), out, sizeof(out));
	}
	CHECK(hash_is_hex(out, 40));

	/* names that sort differently with and without the '/' rule: "foo" (dir) vs
	 * "foo.c" vs "foo-bar"; a symlink; an executable; a submodule; spaces and UTF-8 */
#define ADD(nm, md, id)                                                                            \
	do {                                                                                       \
		snprintf(e[n].name, sizeof(e[n].name), "%s", nm);                                  \
		e[n].mode = md;                                                                    \
		snprintf(e[n].oid, sizeof(e[n].oid), "%.40s", id);                                 \
		e[n].size = -1;                                                                    \
		n++;                                                                               \
	} while (0)
	ADD("foo.c", TREE_MODE_FILE, a);
	ADD("foo", TREE_MODE_DIR, out);
	ADD("foo-bar", TREE_MODE_EXEC, sh);
	ADD("link", TREE_MODE_LINK, a);
	ADD("sub", TREE_MODE_SUBMODULE, "0123456789abcdef0123456789abcdef01234567");
	ADD("with space", TREE_MODE_FILE, a);
	ADD("\xc3\xa9t\xc3\xa9.csv", TREE_MODE_FILE, a);
	ADD("Zebra", TREE_MODE_FILE, sh);
#undef ADD
	{
		char listing[4096] = "";
		const char *type;
		char want[256];

		for (size_t i = 0; i < n; i++) {
			type = e[i].mode == TREE_MODE_DIR         ? "tree"
			       : e[i].mode == TREE_MODE_SUBMODULE ? "commit"
			                                          : "blob";
			snprintf(listing + strlen(listing), sizeof(listing) - strlen(listing),
			         "%06o %s %s\t%s\n", e[i].mode, type, e[i].oid, e[i].name);
		}
		snprintf(cmd, sizeof(cmd), "git mktree --missing");
		run(gitdir, cmd, listing, strlen(listing), want, sizeof(want));
		CHECK(hash_is_hex(want, 40));
		CHECK_EQ_INT(odb_tree_put(o, NULL, e, n, oid), 0);
		CHECK_EQ_STR(oid, want);
		CHECK_EQ_INT(odb_tree_put(o, want, e, n, oid), 0);
		/* wrong expected id: EIO */
		char wrong[41];
		strcpy(wrong, want);
		wrong[0] = wrong[0] == '0' ? '1' : '0';
		CHECK_EQ_INT(odb_tree_put(o, wrong, e, n, oid), -EIO);
		/* one mode flipped changes the id */
		e[0].mode = TREE_MODE_EXEC;
		CHECK_EQ_INT(odb_tree_put(o, want, e, n, oid), -EIO);
		e[0].mode = TREE_MODE_FILE;
		/* the tree object is in the ODB, readable by git (cat-file checks it) */
		snprintf(cmd, sizeof(cmd), "git --git-dir='%s/git' cat-file -t %s", tmpdir, want);
		run(gitdir, cmd, "", 0, out, sizeof(out));
		CHECK_EQ_STR(out, "tree");
		/* a tree is not a blob */
		CHECK_EQ_INT(odb_blob_open(o, want, &b), -ENOENT);
		run(gitdir, cmd, "", 0, out, sizeof(out)); /* and asking did not delete it */
		CHECK_EQ_STR(out, "tree");
	}
	/* the empty tree */
	CHECK_EQ_INT(odb_tree_put(o, "4b825dc642cb6eb9a060e54bf8d69288fbee4904", e, 0, oid), 0);
	/* bad entries */
	{
		struct tree_entry bad = e[0];
		strcpy(bad.name, "a/b");
		CHECK_EQ_INT(odb_tree_put(o, NULL, &bad, 1, oid), -EINVAL);
		strcpy(bad.name, "..");
		CHECK_EQ_INT(odb_tree_put(o, NULL, &bad, 1, oid), -EINVAL);
		strcpy(bad.name, "ok");
		bad.mode = 0100600;
		CHECK_EQ_INT(odb_tree_put(o, NULL, &bad, 1, oid), -EINVAL);
		struct tree_entry dup[2] = {e[0], e[0]};
		CHECK_EQ_INT(odb_tree_put(o, NULL, dup, 2, oid), -EINVAL);
	}
}

/* Two processes on one cache (two sessions), in a directory of their own (each keeps
 * its own usage counts). A small blob is not synced, so after a crash its file may hold
 * other bytes under the stamp the dead process gave it: the next process hashes it at
 * its first open and drops it. Within one session what it stored is trusted, as its
 * caller's hash was (odb_blob_put_hashed). */
static void test_sessions(void)
{
	const char *data = "will be damaged\n";
	char dir[4096], id[41], wrong[41], path[4200];
	struct odb *a, *b;
	struct odb_blob *ob;
	struct stat st;
	int fd;

	snprintf(dir, sizeof(dir), "%s/sessions", tmpdir);
	CHECK_EQ_INT(odb_open(&a, dir), 0);
	CHECK_EQ_INT(odb_open(&b, dir), 0);
	blob_id(data, strlen(data), id);
	CHECK_EQ_INT(odb_blob_put(a, id, data, strlen(data)), 0);
	snprintf(path, sizeof(path), "%s/raw/%.2s/%s", dir, id, id + 2);
	CHECK_EQ_INT(stat(path, &st), 0);
	CHECK_EQ_INT(chmod(path, 0600), 0);
	fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ_INT(pwrite(fd, "GARBAGE!", 8, 2), 8);
	{
		struct timespec ts[2] = {st.st_atim, st.st_mtim}; /* the stamp survives */
		CHECK_EQ_INT(futimens(fd, ts), 0);
	}
	close(fd);
	CHECK_EQ_INT(odb_blob_open(b, id, &ob), -ENOENT);
	CHECK(access(path, F_OK) < 0);
	/* an intact one of the other session is hashed once and served */
	CHECK_EQ_INT(odb_blob_put(a, id, data, strlen(data)), 0);
	CHECK_EQ_INT(odb_blob_open(b, id, &ob), 0);
	CHECK_EQ_INT(odb_blob_size(ob), strlen(data));
	odb_blob_close(ob);
	CHECK_EQ_INT(odb_blob_open(a, id, &ob), 0);
	odb_blob_close(ob);
	/* stored under a wrong id by a's caller: a trusts it, b does not */
	blob_id("the id's own bytes", 18, wrong);
	CHECK_EQ_INT(odb_blob_put_hashed(a, wrong, "other bytes", 11), 0);
	CHECK_EQ_INT(odb_blob_open(b, wrong, &ob), -ENOENT);
	CHECK(!odb_blob_has(a, wrong));
	odb_close(a);
	odb_close(b);
}

/* Writes a loose object as earlier reefds did: a zlib stream of stored blocks. */
static void legacy_loose_put(const char *dir, const char *id, const char *data, size_t n)
{
	char hdr[32], path[4096];
	size_t hlen = (size_t)snprintf(hdr, sizeof(hdr), "blob %zu", n) + 1;
	uLongf zlen = compressBound(hlen + n);
	unsigned char *raw = malloc(hlen + n), *z = malloc(zlen);
	FILE *f;

	CHECK(raw && z);
	memcpy(raw, hdr, hlen);
	memcpy(raw + hlen, data, n);
	CHECK_EQ_INT(compress2(z, &zlen, raw, hlen + n, Z_NO_COMPRESSION), Z_OK);
	CHECK(z[0] == 0x78 && z[1] == 0x01);
	snprintf(path, sizeof(path), "%s/git/objects/%.2s", dir, id);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/git/objects/%.2s/%s", dir, id, id + 2);
	f = fopen(path, "wb");
	CHECK(f);
	CHECK_EQ_INT(fwrite(z, 1, zlen, f), zlen);
	fclose(f);
	free(raw);
	free(z);
}

/* A cache filled by an earlier reefd holds small blobs as loose objects (stored zlib
 * blocks), or git may have written them (deflated): both are still read, and hashed at
 * every open. */
static void test_legacy_loose(void)
{
	size_t sizes[] = {8, 65535 - 11, 65535 - 10, 65535, 200000};
	char out[256], cmd[8192], id[41], dir[4096];
	struct odb_blob *b;
	struct odb *o;

	snprintf(dir, sizeof(dir), "%s/legacy", tmpdir);
	CHECK_EQ_INT(odb_open(&o, dir), 0);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		char *big = malloc(n), *back = malloc(n);

		CHECK(big && back);
		for (size_t j = 0; j < n; j++)
			big[j] = (char)('a' + (j * 7 + i) % 26);
		blob_id(big, n, id);
		legacy_loose_put(dir, id, big, n);
		CHECK(odb_blob_has(o, id));
		CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
		CHECK_EQ_INT(odb_blob_size(b), n);
		CHECK_EQ_INT(odb_blob_pread(b, back, n, 0), (ssize_t)n);
		CHECK(memcmp(back, big, n) == 0);
		odb_blob_close(b);
		if (i == 0) { /* other bytes under its name: refused at open */
			char *wrong = malloc(n);

			CHECK(wrong);
			memcpy(wrong, big, n);
			wrong[1] ^= 1;
			legacy_loose_put(dir, id, wrong, n);
			CHECK_EQ_INT(odb_blob_open(o, id, &b), -ENOENT);
			free(wrong);
		}
		free(big);
		free(back);
	}
	snprintf(cmd, sizeof(cmd), "git --git-dir='%s/git' hash-object -w --stdin", dir);
	run(tmpdir, cmd, "by git\n", 7, out, sizeof(out));
	CHECK_EQ_INT(odb_blob_open(o, out, &b), 0);
	CHECK_EQ_INT(odb_blob_size(b), 7);
	odb_blob_close(b);
	odb_close(o);
}

/* Blobs stored by an id their caller computed (a pack's parser): stored without a second
 * hash, read back whole. odb_blob_put still refuses wrong bytes at any size. */
static void test_put_hashed(struct odb *o)
{
	size_t sizes[] = {0, 9, 65535 - 11, 300000, ODB_RAW_THRESHOLD, ODB_RAW_THRESHOLD + 70000};
	char id[41], wrong[41];
	struct odb_blob *b;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		char *d = malloc(n + 1), *back = malloc(n + 1);

		CHECK(d && back);
		for (size_t j = 0; j < n; j++)
			d[j] = (char)('A' + (j * 13 + i) % 23);
		blob_id(d, n, id);
		CHECK_EQ_INT(odb_blob_put_hashed(o, id, d, n), 0);
		CHECK(odb_blob_has(o, id));
		CHECK_EQ_INT(odb_blob_open(o, id, &b), 0);
		CHECK_EQ_INT(odb_blob_size(b), n);
		CHECK_EQ_INT(odb_blob_pread(b, back, n + 1, 0), (ssize_t)n);
		CHECK(n == 0 || memcmp(back, d, n) == 0);
		odb_blob_close(b);
		if (n) {
			d[n / 2] ^= 1; /* other bytes under a fresh id: odb_blob_put refuses them */
			blob_id("not these bytes", 15, wrong);
			CHECK_EQ_INT(odb_blob_put(o, wrong, d, n), -EIO);
			CHECK(!odb_blob_has(o, wrong));
		}
		free(d);
		free(back);
	}
}

int main(void)
{
	struct odb *o;
	uint64_t bytes, objs;
	char cmd[4200];

	CHECK(mkdtemp(tmpdir));
	CHECK_EQ_INT(odb_open(&o, tmpdir), 0);
	CHECK_EQ_INT(odb_usage(o, &bytes, &objs), 0);
	CHECK_EQ_INT(objs, 0);
	test_small(o);
	test_writer(o);
	test_raw(o);
	test_small_corrupt(o);
	test_tree(o);
	test_legacy_loose();
	test_put_hashed(o);
	test_sessions();
	CHECK_EQ_INT(odb_usage(o, &bytes, &objs), 0);
	odb_close(o);
	/* reopening counts the same objects from disk */
	{
		uint64_t b2, o2;
		CHECK_EQ_INT(odb_open(&o, tmpdir), 0);
		CHECK_EQ_INT(odb_usage(o, &b2, &o2), 0);
		CHECK_EQ_INT(o2, objs);
		CHECK_EQ_INT(b2, bytes);
		odb_close(o);
	}
	/* a temp file left by a dead process is swept at open; a live one's is kept */
	{
		char p1[4096], p2[4096];
		pid_t child = fork();
		int st;

		if (child == 0)
			_exit(0);
		waitpid(child, &st, 0);
		snprintf(p1, sizeof(p1), "%s/tmp/%d-1", tmpdir, (int)child);
		snprintf(p2, sizeof(p2), "%s/tmp/%d-1", tmpdir, (int)getppid());
		close(open(p1, O_CREAT | O_WRONLY, 0600));
		close(open(p2, O_CREAT | O_WRONLY, 0600));
		CHECK_EQ_INT(odb_open(&o, tmpdir), 0);
		CHECK(access(p1, F_OK) < 0);
		CHECK(access(p2, F_OK) == 0);
		unlink(p2);
		odb_close(o);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	CHECK_EQ_INT(system(cmd), 0);
	printf("odb: ok\n");
	return 0;
}
