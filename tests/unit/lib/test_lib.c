/* Unit tests of the shared library: buffers, hashing, URL coding, path checks, JSON caps,
 * INI files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "reef/buf.h"
#include "reef/hash.h"
#include "reef/ini.h"
#include "reef/jsonx.h"
#include "reef/util.h"

static void test_buf(void)
{
	struct buf b = BUF_INIT(8);

	CHECK_EQ_INT(buf_puts(&b, "abcd"), 0);
	CHECK_EQ_INT(buf_printf(&b, "%d", 123), 0);
	CHECK_EQ_STR(b.data, "abcd123");
	/* one more byte fits, two do not, and a refused append leaves the buffer intact */
	CHECK_EQ_INT(buf_puts(&b, "xy"), -EFBIG);
	CHECK_EQ_STR(b.data, "abcd123");
	CHECK_EQ_INT(buf_puts(&b, "x"), 0);
	CHECK_EQ_INT(b.len, 8);
	buf_free(&b);
}

static void test_hash(void)
{
	uint8_t d[32];
	char hex[65];
	struct hash_ctx *h;

	CHECK_EQ_INT(hash_buf(HASH_SHA256, "abc", 3, d), 0);
	hash_hex(hex, d, 32);
	CHECK_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* git's id of the blob "hello\n" */
	CHECK_EQ_INT(hash_git_begin(&h, "blob", 6), 0);
	CHECK_EQ_INT(hash_update(h, "hello\n", 6), 0);
	CHECK_EQ_INT(hash_final(h, d), 0);
	hash_free(h);
	hash_hex(hex, d, 20);
	CHECK_EQ_STR(hex, "ce013625030ba8dba906f756967f9e9ca394464a");
	CHECK(hash_is_hex(hex, 40));
	CHECK(!hash_is_hex("CE01", 4));
	CHECK(!hash_is_hex("ce0", 4));
}

static void test_url(void)
{
	struct buf b = BUF_INIT(0);
	char s[64];

	CHECK_EQ_INT(url_encode(&b, "acme/cats dir/é"), 0);
	CHECK_EQ_STR(b.data, "acme%2Fcats%20dir%2F%C3%A9");
	CHECK_EQ_INT(url_decode(s, b.data, false), (int)strlen("acme/cats dir/é"));
	CHECK_EQ_STR(s, "acme/cats dir/é");
	CHECK_EQ_INT(url_decode(s, "a%00b", false), -EINVAL);
	CHECK_EQ_INT(url_decode(s, "a%zz", false), -EINVAL);
	CHECK_EQ_INT(url_decode(s, "a%2", false), -EINVAL);
	CHECK_EQ_INT(url_decode(s, "a+b", true), 3);
	CHECK_EQ_STR(s, "a b");
	buf_free(&b);
}

static void test_base64(void)
{
	struct buf b = BUF_INIT(0), small = BUF_INIT(3);

	CHECK_EQ_INT(base64_decode("b2F1dGgyOnRvaw==", 16, &b), 0);
	CHECK_EQ_STR(b.data, "oauth2:tok");
	buf_reset(&b);
	/* white space ignored, padding optional, URL alphabet accepted */
	CHECK_EQ_INT(base64_decode("aGVs\nbG8", 8, &b), 0);
	CHECK_EQ_STR(b.data, "hello");
	buf_reset(&b);
	CHECK_EQ_INT(base64_decode("-_8", 3, &b), 0);
	CHECK_EQ_INT(b.len, 2);
	CHECK_EQ_INT((unsigned char)b.data[0], 0xfb);
	CHECK_EQ_INT(base64_decode("ab!c", 4, &b), -EINVAL);
	CHECK_EQ_INT(base64_decode("ab=c", 4, &b), -EINVAL);        /* data after padding */
	CHECK_EQ_INT(base64_decode("aGVsbG9=", 8, &b), -EINVAL);    /* non-zero pad bits */
	CHECK_EQ_INT(base64_decode("aGVsbG8=", 8, &small), -EFBIG); /* the cap holds */
	buf_free(&b);
	buf_free(&small);
}

static void test_path(void)
{
	CHECK(path_is_safe("a/b/c.txt", 4096));
	CHECK(path_is_safe("dir with space/ü.csv", 4096));
	CHECK(!path_is_safe("", 4096));
	CHECK(!path_is_safe("/etc/passwd", 4096));
	CHECK(!path_is_safe("a/../b", 4096));
	CHECK(!path_is_safe("..", 4096));
	CHECK(!path_is_safe("a//b", 4096));
	CHECK(!path_is_safe("a/./b", 4096));
	CHECK(!path_is_safe("a/", 4096));
	CHECK(!path_is_safe("abcdef", 5));
}

static void test_size(void)
{
	static const struct {
		const char *in;
		uint64_t want;
	} ok[] = {
	    {"0", 0},
	    {"4096", 4096},
	    {"4096B", 4096},
	    {"512K", 512u << 10},
	    {"512kb", 512u << 10},
	    {"1GB", 1u << 30},
	    {"1G", 1u << 30},
	    {"1GiB", 1u << 30},
	    {"1gib", 1u << 30},
	    {"1.5G", 3u << 29},
	    {"100MB", 100u << 20},
	    {"2T", (uint64_t)2 << 40},
	    {"0.5K", 512},
	    {"1.000000001G", (1u << 30) + 1},
	    {"18446744073709551615", UINT64_MAX},
	};
	static const char *const bad[] = {"",    "G",    "-1G",  "1.G", ".5G",           "1 G",
	                                  "1GG", "1Gi",  "1KBB", "1E",  "1.1234567890G", "+1",
	                                  "1iB", "0x10", "1G "};
	uint64_t v;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 7;
		if (size_parse(ok[i].in, &v) != 0 || v != ok[i].want) {
			fprintf(stderr, "size_parse(%s) = %llu\n", ok[i].in, (unsigned long long)v);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (size_parse(bad[i], &v) != -EINVAL) {
			fprintf(stderr, "size_parse(%s) accepted\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK_EQ_INT(size_parse("18446744073709551616", &v), -ERANGE);
	CHECK_EQ_INT(size_parse("16777216T", &v), -ERANGE);
	CHECK_EQ_INT(size_parse(NULL, &v), -EINVAL);
}

static void test_json(void)
{
	json_t *v;
	char deep[200];

	CHECK_EQ_INT(jsonx_parse(&v, "{\"a\":\"x\",\"n\":3,\"b\":true}", 24, 0, 0), 0);
	CHECK_EQ_STR(jsonx_str(v, "a"), "x");
	CHECK_EQ_INT(jsonx_int(v, "n", -1), 3);
	CHECK(jsonx_bool(v, "b", false));
	CHECK_EQ_INT(jsonx_int(v, "missing", -1), -1);
	json_decref(v);
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	CHECK_EQ_INT(jsonx_parse(&v, deep, 200, 64, 0), -EINVAL);
	CHECK_EQ_INT(jsonx_parse(&v, deep + 40, 120, 64, 0), 0); /* 60 deep is fine */
	json_decref(v);
	/* brackets inside strings do not count */
	CHECK_EQ_INT(jsonx_parse(&v, "[\"[[[[\"]", 8, 2, 0), 0);
	json_decref(v);
	CHECK_EQ_INT(jsonx_parse(&v, "{\"a\":", 5, 0, 0), -EINVAL);
	CHECK_EQ_INT(jsonx_parse(&v, "[1,2]", 5, 0, 4), -EFBIG);
	CHECK_EQ_INT(err_from_http(404), -ENOENT);
	CHECK_EQ_INT(err_from_http(401), -EACCES);
	CHECK_EQ_INT(err_from_http(200), 0);
	CHECK_EQ_INT(err_from_http(502), -EIO);
}

struct ini_seen {
	char text[1024];
};

static int ini_collect(void *arg, const char *section, const char *key, const char *value)
{
	struct ini_seen *s = arg;
	size_t n = strlen(s->text);

	snprintf(s->text + n, sizeof(s->text) - n, "%s.%s=%s;", section, key, value);
	return 0;
}

static int ini_stop(void *arg, const char *section, const char *key, const char *value)
{
	(void)arg;
	(void)section;
	(void)value;
	return strcmp(key, "stop") ? 0 : 7;
}

static void test_ini(void)
{
	/* as configparser reads python-gitlab's file: '=' or ':', keys lower-cased and
	 * trimmed, '#' and ';' comment lines, blank lines, a byte order mark */
	static const char cfg[] = "\xef\xbb\xbftop = 1\n# comment\n; another\n\n[global]\n"
	                          "Default = work\n[work]\r\nurl: https://x.example/a=b \r\n"
	                          "private_token =\n[ sp ace ]\nk=v";
	struct ini_seen s = {""};
	unsigned line = 9;
	char big[INI_LINE_MAX + 8];

	CHECK_EQ_INT(ini_parse(cfg, strlen(cfg), ini_collect, &s, &line), 0);
	CHECK_EQ_STR(s.text, ".top=1;global.default=work;work.url=https://x.example/a=b;"
	                     "work.private_token=; sp ace .k=v;");
	CHECK_EQ_INT(line, 0);
	/* refused, with the line: continuation lines, a key without a value separator, an
	 * unclosed header, an empty key, a NUL byte */
	CHECK_EQ_INT(ini_parse("[a]\nk = v\n  more\n", 17, ini_collect, &s, &line), -EINVAL);
	CHECK_EQ_INT(line, 3);
	CHECK_EQ_INT(ini_parse("[a]\nkey\n", 8, ini_collect, &s, &line), -EINVAL);
	CHECK_EQ_INT(line, 2);
	CHECK_EQ_INT(ini_parse("[a\n", 3, ini_collect, &s, &line), -EINVAL);
	CHECK_EQ_INT(ini_parse("= v\n", 4, ini_collect, &s, &line), -EINVAL);
	CHECK_EQ_INT(ini_parse("a=b\0c", 5, ini_collect, &s, &line), -EINVAL);
	/* caps: a line, the number of entries */
	memset(big, 'a', sizeof(big));
	big[0] = 'k';
	big[1] = '=';
	CHECK_EQ_INT(ini_parse(big, sizeof(big), ini_collect, &s, &line), -E2BIG);
	{
		size_t n = (INI_ENTRIES_MAX + 1) * 4;
		char *many = malloc(n + 1);

		for (size_t i = 0; i < INI_ENTRIES_MAX + 1; i++)
			memcpy(many + i * 4, "k=v\n", 4);
		many[n] = 0;
		CHECK_EQ_INT(ini_parse(many, n, ini_stop, NULL, &line), -E2BIG);
		CHECK_EQ_INT(line, INI_ENTRIES_MAX + 1);
		free(many);
	}
	/* the callback stops the parse with its own value */
	CHECK_EQ_INT(ini_parse("a=1\nstop=1\nb=2\n", 14, ini_stop, NULL, NULL), 7);
}

int main(void)
{
	test_buf();
	test_hash();
	test_url();
	test_base64();
	test_path();
	test_size();
	test_json();
	test_ini();
	return 0;
}
