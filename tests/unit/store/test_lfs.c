/* Unit tests of the LFS pointer parser: current and legacy versions, extra keys in
 * order, and every way a blob can merely look like a pointer (then it is not one). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../check.h"
#include "reef/lfs.h"

#define OID "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"

static int parse(const char *s, struct lfs_pointer *p)
{
	return lfs_pointer_parse(s, strlen(s), p);
}

static void test_valid(void)
{
	struct lfs_pointer p;

	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize 12345\n",
	                   &p),
	             0);
	CHECK_EQ_STR(p.oid, OID);
	CHECK_EQ_INT(p.size, 12345);
	CHECK(!p.legacy);
	CHECK_EQ_INT(parse("version https://hawser.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize 0\n",
	                   &p),
	             0);
	CHECK(p.legacy);
	CHECK_EQ_INT(p.size, 0);
	/* extra keys, sorted, around the required ones */
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "ext-0-foo sha256:abc\noid sha256:" OID
	                   "\nsize 7\nx-extra hello world\n",
	                   &p),
	             0);
	CHECK_EQ_INT(p.size, 7);
	CHECK_EQ_INT(parse("version https://git-lfs.github.com/spec/v1\n"
	                   "oid sha256:" OID "\nsize 1125899906842624\n",
	                   &p),
	             0);
}

static void test_malformed(void)
{
	static const char *const bad[] = {
	    "",
	    "version https://git-lfs.github.com/spec/v1\n",
	    /* missing trailing newline */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize 5",
	    /* CRLF */
	    "version https://git-lfs.github.com/spec/v1\r\noid sha256:" OID "\r\nsize 5\r\n",
	    /* unknown version */
	    "version https://git-lfs.github.com/spec/v2\noid sha256:" OID "\nsize 5\n",
	    /* version not first */
	    "oid sha256:" OID "\nversion https://git-lfs.github.com/spec/v1\nsize 5\n",
	    /* keys out of order */
	    "version https://git-lfs.github.com/spec/v1\nsize 5\noid sha256:" OID "\n",
	    /* repeated key */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\noid sha256:" OID
	    "\nsize 5\n",
	    /* missing size / oid */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\n",
	    "version https://git-lfs.github.com/spec/v1\nsize 5\n",
	    /* bad oid: uppercase, short, other hash */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:"
	    "4D7A214614AB2935C943F9E0FF69D22EADBB8F32B1258DAAA5E2CA24D17E2393"
	    "\nsize 5\n",
	    "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 5\n",
	    "version https://git-lfs.github.com/spec/v1\noid sha1:" OID "\nsize 5\n",
	    /* bad size: sign, letters, empty, too large */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize -5\n",
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize 5k\n",
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize \n",
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID
	    "\nsize 99999999999999999999\n",
	    /* blank line, bad key, double space */
	    "version https://git-lfs.github.com/spec/v1\n\noid sha256:" OID "\nsize 5\n",
	    "version https://git-lfs.github.com/spec/v1\nOid sha256:" OID "\nsize 5\n",
	    "version https://git-lfs.github.com/spec/v1\noid  sha256:" OID "\nsize 5\n",
	    /* trailing garbage */
	    "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize 5\nzz\n\n",
	};
	struct lfs_pointer p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &p) != -EINVAL) {
			fprintf(stderr, "accepted malformed pointer #%zu\n", i);
			CHECK(0);
		}
	}
	/* NUL inside */
	CHECK_EQ_INT(lfs_pointer_parse("version https://git-lfs.github.com/spec/v1\0\n", 44, &p),
	             -EINVAL);
}

static void test_oversize(void)
{
	char big[LFS_POINTER_MAX + 16];
	struct lfs_pointer p;
	int n =
	    snprintf(big, sizeof(big),
	             "version https://git-lfs.github.com/spec/v1\noid sha256:" OID "\nsize 5\nz ");

	/* a valid pointer padded with a long extra key up to the cap is refused */
	memset(big + n, 'a', LFS_POINTER_MAX - (size_t)n - 1);
	big[LFS_POINTER_MAX - 1] = '\n';
	CHECK_EQ_INT(lfs_pointer_parse(big, LFS_POINTER_MAX, &p), -EINVAL);
	CHECK_EQ_INT(lfs_pointer_parse(big, LFS_POINTER_MAX - 1 + 1, &p), -EINVAL);
	/* one byte shorter (the value shrinks) is a pointer */
	big[LFS_POINTER_MAX - 2] = '\n';
	CHECK_EQ_INT(lfs_pointer_parse(big, LFS_POINTER_MAX - 1, &p), 0);
	CHECK_EQ_INT(lfs_pointer_parse(NULL, 0, &p), -EINVAL);
}

int main(void)
{
	test_valid();
	test_malformed();
	test_oversize();
	printf("lfs: ok\n");
	return 0;
}
