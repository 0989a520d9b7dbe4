/* The grammar of control files: forms, limits, binary input, specs, parameter types. */
#include <errno.h>
#include <string.h>

#include "../check.h"
#include "ctl.h"

static int parse(const char *s, json_t **out, bool *lines, char *err)
{
	return ctl_parse(s, strlen(s), out, lines, err);
}

static void test_parse_forms(void)
{
	char err[CTL_ERR_MAX];
	json_t *o;
	bool lines;

	CHECK_EQ_INT(parse("# c\n\nprocessor = sgd \r\nparams.epochs=5\nx=a=b\n", &o, &lines, err),
	             0);
	CHECK(lines);
	CHECK_EQ_STR(json_string_value(json_object_get(o, "processor")), "sgd");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(o, "params"), "epochs")),
	             "5");
	CHECK_EQ_STR(json_string_value(json_object_get(o, "x")), "a=b");
	json_decref(o);
	CHECK_EQ_INT(
	    parse("  {\"processor\": \"sgd\", \"params\": {\"epochs\": 5}}\n", &o, &lines, err), 0);
	CHECK(!lines);
	CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "params"), "epochs")),
	             5);
	json_decref(o);
	CHECK_EQ_INT(parse("{\"processor\": ", &o, &lines, err), -EAGAIN);
	CHECK_EQ_INT(parse("{\"processor\": }", &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "malformed JSON"));
	CHECK_EQ_INT(parse("[1, 2]", &o, &lines, err), -EINVAL);
	CHECK_EQ_INT(parse("{\"a\": 1, \"a\": 2}", &o, &lines, err), -EINVAL);
	CHECK_EQ_INT(parse("{\"a\":[[[[[[[[[[1]]]]]]]]]]}", &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "deeper"));
	CHECK_EQ_INT(parse("hello\n", &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "line 1: expected key=value"));
	CHECK_EQ_INT(parse("a=1\na=2\n", &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "given twice"));
	CHECK_EQ_INT(parse("a b=1\n", &o, &lines, err), -EINVAL);
	CHECK_EQ_INT(parse("a=1\na.b=2\n", &o, &lines, err), -EINVAL);
	CHECK_EQ_INT(parse("\n# only a comment\n", &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "empty"));
}

static void test_limits_and_binary(void)
{
	char err[CTL_ERR_MAX], *big = malloc(CTL_MAX + 2);
	json_t *o;
	bool lines;

	memset(big, 'a', CTL_MAX + 1);
	memcpy(big, "a=", 2);
	CHECK_EQ_INT(ctl_parse(big, CTL_MAX + 1, &o, &lines, err), -EFBIG);
	CHECK_EQ_INT(ctl_parse(big, 4000, &o, &lines, err), 0); /* a 3998-byte value */
	json_decref(o);
	free(big);
	CHECK_EQ_INT(ctl_parse("a=1\0b=2", 7, &o, &lines, err), -EINVAL);
	CHECK(strstr(err, "binary data (byte 0x00 at offset 3)"));
	CHECK_EQ_INT(parse("a=\x01\n", &o, &lines, err), -EINVAL);
	CHECK_EQ_INT(parse("a=\xc3\x28", &o, &lines, err), -EINVAL); /* bad continuation */
	CHECK(strstr(err, "invalid UTF-8"));
	CHECK_EQ_INT(parse("a=\xc0\xaf", &o, &lines, err), -EINVAL);     /* overlong '/' */
	CHECK_EQ_INT(parse("a=\xed\xa0\x80", &o, &lines, err), -EINVAL); /* a surrogate */
	CHECK_EQ_INT(parse("a=\xe2\x82", &o, &lines, err), -EINVAL);     /* truncated */
	CHECK_EQ_INT(parse("a=caf\xc3\xa9 \xf0\x9f\x90\x9f\tok\n", &o, &lines, err), 0);
	json_decref(o);
}

static void test_experiment_spec(void)
{
	char err[CTL_ERR_MAX];
	json_t *o, *spec;
	bool lines;

	CHECK_EQ_INT(parse("slug=sgd\nbranch=dev\ninput=data\nepochs=5\n", &o, &lines, err), 0);
	CHECK_EQ_INT(ctl_experiment_spec(o, lines, &spec, err), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(spec, "processor")), "sgd");
	CHECK_EQ_STR(json_string_value(json_object_get(spec, "source_branch")), "dev");
	CHECK_EQ_STR(json_string_value(json_object_get(spec, "input_path")), "data");
	CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(spec, "params"), "epochs")),
	             "5");
	json_decref(spec);
	json_decref(o);
	/* JSON is strict about fields */
	CHECK_EQ_INT(parse("{\"processor\": \"sgd\", \"epochs\": 5}", &o, &lines, err), 0);
	CHECK_EQ_INT(ctl_experiment_spec(o, lines, &spec, err), -EINVAL);
	CHECK(strstr(err, "unknown field \"epochs\""));
	json_decref(o);
	{
		static const char *const bad[] = {
		    "epochs=5\n",                              /* no processor */
		    "processor=Not_A_Slug\n",                  /* slug */
		    "processor=sgd\nname=-x\n",                /* name */
		    "processor=sgd\nname=a..b\n",              /* name */
		    "processor=sgd\nname=launch\n",            /* reserved */
		    "processor=sgd\nname=README\n",            /* reserved: no-service note */
		    "processor=sgd\ninput_path=../etc\n",      /* escapes */
		    "processor=sgd\noutput_path=.git/hooks\n", /* into .git */
		    "processor=sgd\noutput_path=.\n",          /* the whole project */
		    "processor=sgd\nsource_branch=a b\n",      /* not a ref */
		    "processor=sgd\nepochs=1\nparams.epochs=2\n",
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			CHECK_EQ_INT(parse(bad[i], &o, &lines, err), 0);
			if (ctl_experiment_spec(o, lines, &spec, err) != -EINVAL) {
				fprintf(stderr, "accepted: %s\n", bad[i]);
				CHECK(0);
			}
			json_decref(o);
		}
	}
}

static void test_params_check(void)
{
	char err[CTL_ERR_MAX];
	json_t *decl = json_loads("[{\"name\":\"epochs\",\"type\":\"INTEGER\",\"default\":5},"
	                          "{\"name\":\"lr\",\"type\":\"FLOAT\"},"
	                          "{\"name\":\"fail\",\"type\":\"BOOLEAN\"},"
	                          "{\"name\":\"mode\",\"type\":\"STRING\",\"required\":true}]",
	                          0, NULL);
	json_t *p = json_pack("{s:s, s:s, s:s, s:s}", "epochs", "12", "lr", "0.5", "fail", "true",
	                      "mode", "fast");

	CHECK_EQ_INT(ctl_params_check(p, decl, err), 0);
	CHECK_EQ_INT(json_integer_value(json_object_get(p, "epochs")), 12);
	CHECK(json_real_value(json_object_get(p, "lr")) == 0.5);
	CHECK(json_is_true(json_object_get(p, "fail")));
	json_decref(p);
	p = json_pack("{s:s, s:s}", "epochs", "many", "mode", "x");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	CHECK(strstr(err, "epochs must be an integer"));
	json_decref(p);
	p = json_pack("{s:s, s:s}", "lr", "1e999", "mode", "x");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	json_decref(p);
	p = json_pack("{s:s, s:s}", "fail", "maybe", "mode", "x");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	json_decref(p);
	p = json_pack("{s:i}", "mode", 3); /* a number for a STRING */
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	json_decref(p);
	p = json_pack("{s:s}", "epochs", "3");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	CHECK(strstr(err, "mode is required"));
	json_decref(p);
	p = json_pack("{s:s, s:s}", "mode", "x", "nope", "1");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	CHECK(strstr(err, "unknown parameter nope"));
	CHECK(!strstr(err, "did you mean")); /* nothing is close to nope */
	CHECK(strstr(err, "(one of: epochs, lr, fail, mode)"));
	json_decref(p);
	p = json_pack("{s:s, s:s}", "mode", "x", "epoch", "1");
	CHECK_EQ_INT(ctl_params_check(p, decl, err), -EINVAL);
	CHECK(strstr(err, "unknown parameter epoch for this processor; did you mean epochs? (one "
	                  "of: epochs, lr, fail, mode)"));
	json_decref(p);
	json_decref(decl);
}

static void test_suggest(void)
{
	const char *procs[] = {"iris-sgd", "iris-tree", "mnist-cnn"};
	const char *many[200];
	char err[CTL_ERR_MAX];

	snprintf(err, sizeof(err), "unknown processor iris-sdg");
	ctl_suggest(err, "iris-sdg", procs, 3);
	CHECK_EQ_STR(err, "unknown processor iris-sdg; did you mean iris-sgd? (one of: iris-sgd, "
	                  "iris-tree, mnist-cnn)");
	snprintf(err, sizeof(err), "unknown processor SGD-TRAIN");
	ctl_suggest(err, "SGD-TRAIN", procs, 3);
	CHECK(!strstr(err, "did you mean"));
	snprintf(err, sizeof(err), "unknown processor x");
	ctl_suggest(err, "x", procs, 0);
	CHECK_EQ_STR(err, "unknown processor x (there are none)");
	/* a long list is cut to the reason's size, never mid-name */
	for (size_t i = 0; i < 200; i++)
		many[i] = "a-rather-long-processor-name";
	snprintf(err, sizeof(err), "unknown processor y");
	ctl_suggest(err, "y", many, 200);
	CHECK(strlen(err) < CTL_ERR_MAX);
	CHECK(strstr(err, "name ...)"));
}

static void test_pipeline_spec_and_commands(void)
{
	static const char *const words[] = {"cancel", "retry", NULL};
	char err[CTL_ERR_MAX];
	json_t *o, *spec;
	bool lines;

	CHECK_EQ_INT(parse("ref=main\nGREETING=hi there\nvariables.X=1\n", &o, &lines, err), 0);
	CHECK_EQ_INT(ctl_pipeline_spec(o, lines, &spec, err), 0);
	CHECK_EQ_STR(json_string_value(json_object_get(spec, "ref")), "main");
	CHECK_EQ_INT(json_array_size(json_object_get(spec, "variables")), 2);
	json_decref(spec);
	json_decref(o);
	CHECK_EQ_INT(parse("{\"ref\":\"v1\",\"variables\":[{\"key\":\"A\",\"value\":\"b\"}]}", &o,
	                   &lines, err),
	             0);
	CHECK_EQ_INT(ctl_pipeline_spec(o, lines, &spec, err), 0);
	json_decref(spec);
	json_decref(o);
	CHECK_EQ_INT(parse("{\"variables\":{\"A\":1}}", &o, &lines, err), 0);
	CHECK_EQ_INT(ctl_pipeline_spec(o, lines, &spec, err), -EINVAL);
	CHECK(strstr(err, "ref is required"));
	json_decref(o);
	CHECK_EQ_INT(parse("{\"ref\":\"main\",\"variables\":{\"bad key\":1}}", &o, &lines, err), 0);
	CHECK_EQ_INT(ctl_pipeline_spec(o, lines, &spec, err), -EINVAL);
	json_decref(o);
	CHECK_EQ_INT(ctl_command(" retry \n", 8, words, err), 1);
	CHECK_EQ_INT(ctl_command("cancel", 6, words, err), 0);
	CHECK_EQ_INT(ctl_command("cancel now", 10, words, err), -EINVAL);
	CHECK(strstr(err, "cancel or retry"));
	CHECK_EQ_INT(ctl_command("\x00\x01", 2, words, err), -EINVAL);
}

int main(void)
{
	test_parse_forms();
	test_limits_and_binary();
	test_experiment_spec();
	test_params_check();
	test_suggest();
	test_pipeline_spec_and_commands();
	return 0;
}
