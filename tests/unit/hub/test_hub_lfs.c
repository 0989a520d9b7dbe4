/* Unit tests of reef-hub's LFS helpers: pointer parsing (spec and legacy versions,
 * malformed pointers), single-range parsing, signed action tokens, and the store's
 * setup (secret kept across restarts, leftover uploads removed, byte accounting). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "core.h"
#include "lfs.h"

#define OID  "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
#define OID2 "5d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"

static int parse(const char *s, char oid[65], uint64_t *size)
{
	return hub_lfs_pointer_parse(s, strlen(s), oid, size);
}

static void test_pointer(void)
{
	char oid[65], big[1200];
	uint64_t size = 0;
	int n;

	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize 12345\n",
	                   oid, &size),
	             0);
	CHECK_EQ_STR(oid, OID);
	CHECK_EQ_INT(size, 12345);
	/* the legacy version URL, extension keys in order, size 0 */
	CHECK_EQ_INT(parse("version https://hawser.github.com/spec/v1\n"
	                   "ext-0-foo sha256:" OID "\noid sha256:" OID "\nsize 0\n",
	                   oid, &size),
	             0);
	CHECK_EQ_INT(size, 0);
	/* malformed: each is shown as the plain blob it is */
	CHECK_EQ_INT(parse("", oid, &size), -EINVAL);
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize 12345",
	                   oid, &size),
	             -EINVAL); /* no final newline */
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "size 12345\noid sha256:" OID "\n",
	                   oid, &size),
	             -EINVAL); /* keys out of order */
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v2\n"
	                   "oid sha256:" OID "\nsize 1\n",
	                   oid, &size),
	             -EINVAL);
	CHECK_EQ_INT(
	    parse("version https://git-lfs.github.com/spec/v1\n"
	          "oid sha256:4D7A214614AB2935C943F9E0FF69D22EADBB8F32B1258DAAA5E2CA24D17E2393"
	          "\nsize 1\n",
	          oid, &size),
	    -EINVAL); /* upper-case hex */
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha1:" OID "\nsize 1\n",
	                   oid, &size),
	             -EINVAL);
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize -1\n",
	                   oid, &size),
	             -EINVAL);
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\n",
	                   oid, &size),
	             -EINVAL); /* no size */
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\r\n"
	                   "oid sha256:" OID "\r\nsize 1\r\n",
	                   oid, &size),
	             -EINVAL);
	CHECK_EQ_INT(parse("oid sha256:" OID "\nsize 1\n", oid, &size), -EINVAL);
	CHECK_EQ_INT(
	    hub_lfs_pointer_parse("version https://git-lfs.github.com/spec/v1\n\0", 44, oid, &size),
	    -EINVAL);
	/* larger than any pointer git-lfs writes */
	n = snprintf(big, sizeof(big),
	             "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize 1\nzz ");
	memset(big + n, 'x', sizeof(big) - (size_t)n);
	big[sizeof(big) - 2] = '\n';
	big[sizeof(big) - 1] = '\0';
	CHECK_EQ_INT(parse(big, oid, &size), -EINVAL);
}

static void test_range(void)
{
	uint64_t a = 0, b = 0;

	CHECK_EQ_INT(hub_lfs_range_parse(NULL, 100, &a, &b), 0);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=10-19", 100, &a, &b), 1);
	CHECK(a == 10 && b == 19);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=90-", 100, &a, &b), 1);
	CHECK(a == 90 && b == 99);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=-5", 100, &a, &b), 1);
	CHECK(a == 95 && b == 99);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=-500", 100, &a, &b), 1);
	CHECK(a == 0 && b == 99);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=50-5000", 100, &a, &b), 1);
	CHECK(a == 50 && b == 99);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=100-", 100, &a, &b), -ERANGE);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=-0", 100, &a, &b), -ERANGE);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=0-", 0, &a, &b), -ERANGE);
	/* not honoured: answered whole */
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=0-1,5-6", 100, &a, &b), 0);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=9-3", 100, &a, &b), 0);
	CHECK_EQ_INT(hub_lfs_range_parse("items=0-3", 100, &a, &b), 0);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=x-3", 100, &a, &b), 0);
	/* positions past 64 bits saturate: a first one is unsatisfiable, a last one clamps */
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=99999999999999999999999-", 100, &a, &b), -ERANGE);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=0-18446744073709551615", 100, &a, &b), 1);
	CHECK(a == 0 && b == 99);
	CHECK_EQ_INT(hub_lfs_range_parse("bytes=3-99999999999999999999999", 100, &a, &b), 1);
	CHECK(a == 3 && b == 99);
}

static void test_tokens(void)
{
	uint8_t key[32], other[32];
	char tok[128], bad[128];
	int64_t now = 1700000000;

	memset(key, 7, sizeof(key));
	memset(other, 8, sizeof(other));
	CHECK_EQ_INT(hub_lfs_token_sign(key, 5, 'd', OID, now + 3600, tok, sizeof(tok)), 0);
	CHECK(strncmp(tok, "reeflfs1.", 9) == 0);
	CHECK_EQ_INT(hub_lfs_token_check(key, tok, 5, 'd', OID, now), 0);
	CHECK_EQ_INT(hub_lfs_token_check(key, tok, 6, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, tok, 5, 'u', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, tok, 5, 'd', OID2, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(other, tok, 5, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, tok, 5, 'd', OID, now + 3601), -EACCES);
	/* an expiry too far ahead was not minted here */
	CHECK_EQ_INT(hub_lfs_token_sign(key, 5, 'd', OID, now + 86400, bad, sizeof(bad)), 0);
	CHECK_EQ_INT(hub_lfs_token_check(key, bad, 5, 'd', OID, now), -EACCES);
	snprintf(bad, sizeof(bad), "%s", tok);
	bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
	CHECK_EQ_INT(hub_lfs_token_check(key, bad, 5, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, "reeflfs1.", 5, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, "glpat-abc", 5, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_check(key, NULL, 5, 'd', OID, now), -EACCES);
	CHECK_EQ_INT(hub_lfs_token_sign(key, 5, 'd', OID, now, tok, 20), -ENAMETOOLONG);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void test_store(void)
{
	char dir[] = "/tmp/reef-hub-lfs-XXXXXX", path[PATH_MAX], key1[32], key2[32];
	struct hub hub = {0};
	uint64_t bytes = 1;
	int fd;

	CHECK(mkdtemp(dir));
	CHECK_EQ_INT(hub_db_open(&hub, dir, true), 0);
	CHECK_EQ_INT(hub_lfs_init(&hub), 0);
	CHECK_EQ_INT(hub_lfs_project_bytes(&hub, 1, &bytes), 0);
	CHECK_EQ_INT(bytes, 0);
	snprintf(path, sizeof(path), "%s/lfs/secret", dir);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, key1, 32) == 32);
	close(fd);
	hub_lfs_shutdown();
	/* a restart keeps the secret (handed-out tokens stay valid) and drops leftovers */
	snprintf(path, sizeof(path), "%s/lfs/tmp/" OID "-abcdef", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0);
	close(fd);
	CHECK_EQ_INT(hub_lfs_init(&hub), 0);
	CHECK(access(path, F_OK) < 0);
	snprintf(path, sizeof(path), "%s/lfs/secret", dir);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, key2, 32) == 32);
	close(fd);
	CHECK(memcmp(key1, key2, 32) == 0);
	hub_lfs_shutdown();
	hub_db_close(&hub);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	test_pointer();
	test_range();
	test_tokens();
	test_store();
	printf("hub lfs: ok\n");
	return 0;
}
