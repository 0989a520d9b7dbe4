/* Unit tests of the CI YAML subset parser (tools/hub/ci.c): what it accepts, what it
 * refuses and with which message, and its caps. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "ci.h"
#include "reef/buf.h"

static json_t *parse_ok(const char *y)
{
	char err[CI_MAX_ERR];
	json_t *out = NULL;
	int r = ci_parse(y, strlen(y), &out, err);

	if (r != 0)
		fprintf(stderr, "unexpected error: %s\n", err);
	CHECK_EQ_INT(r, 0);
	CHECK(out != NULL);
	return out;
}

/* Parses y expecting failure; returns the message (static). */
static const char *parse_err(const char *y)
{
	static char err[CI_MAX_ERR];
	json_t *out = NULL;
	int r = ci_parse(y, strlen(y), &out, err);

	CHECK(r < 0);
	CHECK(out == NULL);
	CHECK(err[0] != '\0');
	return err;
}

static json_t *job(json_t *cfg, size_t i)
{
	return json_array_get(json_object_get(cfg, "jobs"), i);
}

static const char *job_name(json_t *j)
{
	return json_string_value(json_object_get(j, "name"));
}

static const char *line(json_t *j, const char *sect, size_t i)
{
	return json_string_value(json_array_get(json_object_get(j, sect), i));
}

static void test_full(void)
{
	json_t *c = parse_ok("stages: [build, train]\n"
	                     "variables:\n  GLOBAL: g\n  OVER: global\n  NUM: 5\n"
	                     "before_script:\n  - echo before\n"
	                     "after_script: echo after\n"
	                     "train:\n  stage: train\n  variables:\n    OVER: job\n"
	                     "    DESC: {value: v, description: d}\n"
	                     "  script:\n    - echo one\n    - [echo two, echo three]\n"
	                     "  artifacts:\n    paths: [out/, 'model-*.bin']\n    when: always\n"
	                     "  allow_failure: true\n"
	                     "compile:\n  stage: build\n  script: make\n  when: always\n"
	                     "  before_script: []\n");
	json_t *a, *b, *v;

	CHECK_EQ_INT(json_array_size(json_object_get(c, "stages")), 4); /* .pre build train .post */
	CHECK_EQ_INT(json_array_size(json_object_get(c, "jobs")), 2);
	a = job(c, 0); /* build stage first, though second in the file */
	b = job(c, 1);
	CHECK_EQ_STR(job_name(a), "compile");
	CHECK_EQ_STR(json_string_value(json_object_get(a, "when")), "always");
	CHECK_EQ_INT(json_array_size(json_object_get(a, "before_script")), 0);
	CHECK_EQ_STR(line(a, "after_script", 0), "echo after");
	CHECK_EQ_STR(job_name(b), "train");
	CHECK_EQ_INT(json_integer_value(json_object_get(b, "stage_idx")), 2);
	CHECK_EQ_STR(line(b, "before_script", 0), "echo before");
	CHECK_EQ_INT(json_array_size(json_object_get(b, "script")), 3);
	CHECK_EQ_STR(line(b, "script", 2), "echo three");
	v = json_object_get(b, "variables");
	CHECK_EQ_STR(json_string_value(json_object_get(v, "GLOBAL")), "g");
	CHECK_EQ_STR(json_string_value(json_object_get(v, "OVER")), "job");
	CHECK_EQ_STR(json_string_value(json_object_get(v, "NUM")), "5");
	CHECK_EQ_STR(json_string_value(json_object_get(v, "DESC")), "v");
	CHECK(json_is_true(json_object_get(b, "allow_failure")));
	CHECK_EQ_STR(line(json_object_get(b, "artifacts"), "paths", 1), "model-*.bin");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(b, "artifacts"), "when")),
	             "always");
	/* the global variables of the other job did not see train's override */
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(a, "variables"), "OVER")),
	             "global");
	json_decref(c);
}

static void test_defaults_and_anchors(void)
{
	json_t *c = parse_ok(".tmpl: &t\n  stage: deploy\n  script: [echo tmpl]\n"
	                     "  variables: {A: '1'}\n"
	                     "ship:\n  <<: *t\n  variables: {B: '2'}\n"
	                     "check:\n  script: true\n");
	json_t *ship, *check;

	CHECK_EQ_INT(json_array_size(json_object_get(c, "jobs")), 2);
	check = job(c, 0); /* test stage */
	ship = job(c, 1);  /* deploy stage */
	CHECK_EQ_STR(job_name(check), "check");
	CHECK_EQ_STR(json_string_value(json_object_get(check, "stage")), "test");
	CHECK_EQ_STR(job_name(ship), "ship");
	CHECK_EQ_STR(line(ship, "script", 0), "echo tmpl");
	/* own key wins over the merged one */
	CHECK(json_object_get(json_object_get(ship, "variables"), "B") != NULL);
	CHECK(json_object_get(json_object_get(ship, "variables"), "A") == NULL);
	CHECK(json_is_false(json_object_get(ship, "allow_failure")));
	json_decref(c);
}

static void test_errors(void)
{
	const char *e;

	e = parse_err("build:\n  script: make\n  services: [postgres]\n");
	CHECK(strstr(e, "jobs:build") && strstr(e, "services"));
	/* image is accepted and ignored, as a shell executor does; a bad one is refused */
	e = parse_err("build:\n  script: make\n  image: [debian]\n");
	CHECK(strstr(e, "jobs:build:image") != NULL);
	{
		json_t *c =
		    parse_ok("a:\n  image: \"python:3.12\"\n  script: [x]\n"
		             "b:\n  image: {name: debian, entrypoint: [\"\"]}\n  script: [x]\n");
		json_t *jobs = json_object_get(c, "jobs");

		CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(jobs, 0), "image")),
		             "python:3.12");
		CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(jobs, 1), "image")),
		             "debian");
		json_decref(c);
	}
	e = parse_err("build:\n  script: make\n  bogus: 1\n");
	CHECK_EQ_STR(e, "jobs:build config contains unknown keys: bogus");
	e = parse_err("include: other.yml\nbuild:\n  script: make\n");
	CHECK(strstr(e, "include") != NULL);
	e = parse_err("build:\n  stage: nope\n  script: make\n");
	CHECK(strstr(e, "chosen stage nope does not exist") != NULL);
	e = parse_err("build:\n  stage: test\n");
	CHECK(strstr(e, "script") != NULL);
	e = parse_err("stages: [a]\n");
	CHECK(strstr(e, "at least one visible job") != NULL);
	e = parse_err("build: [1, 2]\n");
	CHECK(strstr(e, "jobs:build") != NULL);
	e = parse_err("build:\n  script: make\n  artifacts:\n    paths: [../secret]\n");
	CHECK(strstr(e, "leaves the project directory") != NULL);
	e = parse_err("build:\n  script: make\n  artifacts:\n    paths: [/etc/passwd]\n");
	CHECK(strstr(e, "leaves the project directory") != NULL);
	e = parse_err("build:\n  script: make\n  artifacts:\n    paths: [a]\n    expire_in: 1d\n");
	CHECK(strstr(e, "expire_in") != NULL);
	e = parse_err("build:\n  script: make\n  when: manual\n");
	CHECK(strstr(e, "when") != NULL);
	e = parse_err("build:\n  script: make\n  allow_failure: maybe\n");
	CHECK(strstr(e, "allow_failure") != NULL);
	e = parse_err("build:\n  script: make\n  rules:\n    - if: $X\n");
	CHECK(strstr(e, "rules") != NULL);
	e = parse_err("build:\n  script: [make\n");
	CHECK(strstr(e, "line") != NULL);
	e = parse_err("- a\n- b\n");
	CHECK(strstr(e, "root config should be a hash") != NULL);
	e = parse_err("");
	CHECK(strstr(e, "content") != NULL);
	e = parse_err("a: 1\n---\nb: 2\n");
	CHECK(strstr(e, "single") != NULL);
	e = parse_err("variables:\n  'bad name': 1\nbuild:\n  script: make\n");
	CHECK(strstr(e, "variable name") != NULL);
	e = parse_err("build:\n  script: make\n  only: ['/[/']\n");
	CHECK(strstr(e, "regular expression") != NULL);
	e = parse_err("build:\n  script: a\nbuild:\n  script: b\n");
	CHECK(strstr(e, "duplicate") != NULL);
}

static void test_caps(void)
{
	struct buf b = BUF_INIT(0);
	char err[CI_MAX_ERR];
	json_t *out;
	char *big;

	/* nesting */
	for (int i = 0; i < CI_MAX_DEPTH + 5; i++)
		buf_puts(&b, "[");
	CHECK(strstr(parse_err(b.data), "deeper") != NULL);
	buf_reset(&b);

	/* too many jobs */
	for (int i = 0; i <= CI_MAX_JOBS; i++)
		buf_printf(&b, "j%d:\n  script: x\n", i);
	CHECK(strstr(parse_err(b.data), "jobs") != NULL);
	buf_reset(&b);

	/* alias fan-out: every job splices a shared list; the visit budget stops it */
	buf_puts(&b, ".a: &a [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x]\n");
	for (int i = 0; i < 199; i++) {
		buf_printf(&b, "j%d:\n  script: [", i);
		for (int k = 0; k < 50; k++)
			buf_puts(&b, k ? ", *a" : "*a");
		buf_puts(&b, "]\n");
	}
	CHECK(strstr(parse_err(b.data), "too large") != NULL);
	buf_free(&b);

	/* file size */
	big = malloc(CI_MAX_FILE + 2);
	CHECK(big);
	memset(big, '#', CI_MAX_FILE + 1);
	big[CI_MAX_FILE + 1] = '\0';
	CHECK_EQ_INT(ci_parse(big, CI_MAX_FILE + 1, &out, err), -EFBIG);
	free(big);

	/* NUL inside */
	CHECK_EQ_INT(ci_parse("a: b\0c", 6, &out, err), -EINVAL);
}

static void test_refs(void)
{
	json_t *c = parse_ok("a:\n  script: x\n  only: [main, /^release-.*$/]\n"
	                     "b:\n  script: x\n  except:\n    refs: [tags]\n"
	                     "c:\n  script: x\n  only: tags\n");
	json_t *a = job(c, 0), *b = job(c, 1), *t = job(c, 2);

	CHECK(ci_job_matches_ref(a, "main", false));
	CHECK(ci_job_matches_ref(a, "release-1.2", false));
	CHECK(!ci_job_matches_ref(a, "feature", false));
	CHECK(ci_job_matches_ref(b, "feature", false));
	CHECK(!ci_job_matches_ref(b, "v1.0", true));
	CHECK(ci_job_matches_ref(t, "v1.0", true));
	CHECK(!ci_job_matches_ref(t, "main", false));
	json_decref(c);
}

static void test_expand(void)
{
	json_t *v = json_pack("{s:s, s:s}", "A", "x", "LONG_NAME", "y/z");
	char *s;

	s = ci_expand("$A-${LONG_NAME}-$MISSING-$$A-$-${A", v);
	CHECK_EQ_STR(s, "x-y/z--$A-$-${A");
	free(s);
	json_decref(v);
}

int main(void)
{
	test_full();
	test_defaults_and_anchors();
	test_errors();
	test_caps();
	test_refs();
	test_expand();
	printf("ci: ok\n");
	return 0;
}
