/* Unit tests of the job limits' parsers and of what needs no cgroup: durations, the
 * disk measurement and the verdict from a script's exit code (joblimits.h). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "joblimits.h"

static void test_durations(void)
{
	uint64_t v = 0;
	char out[32];

	CHECK_EQ_INT(joblim_duration_parse("3600", &v), 0);
	CHECK_EQ_INT(v, 3600);
	CHECK_EQ_INT(joblim_duration_parse("90s", &v), 0);
	CHECK_EQ_INT(v, 90);
	CHECK_EQ_INT(joblim_duration_parse("1h30m", &v), 0);
	CHECK_EQ_INT(v, 5400);
	CHECK_EQ_INT(joblim_duration_parse("2h0m5s", &v), 0);
	CHECK_EQ_INT(v, 7205);
	CHECK(joblim_duration_parse("", &v) < 0);
	CHECK(joblim_duration_parse("1x", &v) < 0);
	CHECK(joblim_duration_parse("-5", &v) < 0);
	CHECK(joblim_duration_parse("1h5", &v) < 0); /* a bare number only alone */
	CHECK(joblim_duration_parse("99999999999999999999999", &v) < 0);
	joblim_duration_format(3600, out, sizeof(out));
	CHECK_EQ_STR(out, "1h0m0s");
	joblim_duration_format(90, out, sizeof(out));
	CHECK_EQ_STR(out, "1m30s");
	joblim_duration_format(8, out, sizeof(out));
	CHECK_EQ_STR(out, "8s");
}

static void test_disk_and_verdicts(void)
{
	struct joblim_conf c = JOBLIM_CONF_DEFAULT;
	char dir[] = "/tmp/reef-joblim-XXXXXX", file[64], msg[256];
	static const char kib[1024];
	const char *watch[2] = {dir, NULL};
	struct joblim *l = NULL;
	FILE *f;

	CHECK(mkdtemp(dir));
	c.disk = 1 << 20;
	joblim_conf_set(&c);
	setenv("REEF_HUB_JOB_CGROUPS", "0", 1);
	joblim_probe(false, 1);
	CHECK_EQ_INT(joblim_new(&l, 1, watch), 0);
	CHECK_EQ_INT(joblim_check(l, 1.0), JOBLIM_NONE);
	CHECK_EQ_INT(joblim_verdict(l, 1), JOBLIM_NONE); /* a plain failure */
	snprintf(file, sizeof(file), "%s/big", dir);
	CHECK((f = fopen(file, "w")));
	for (int i = 0; i < 2048; i++)
		CHECK(fwrite(kib, 1, sizeof(kib), f) == sizeof(kib));
	CHECK(fclose(f) == 0);
	CHECK_EQ_INT(joblim_check(l, 1.5), JOBLIM_NONE); /* measured at most every second */
	CHECK_EQ_INT(joblim_check(l, 2.5), JOBLIM_DISK);
	joblim_free(l);
	CHECK_EQ_INT(joblim_new(&l, 2, NULL), 0);
	CHECK_EQ_INT(joblim_verdict(l, 128 + SIGXFSZ), JOBLIM_DISK);
	joblim_free(l);
	CHECK_EQ_INT(joblim_new(&l, 3, NULL), 0);
	CHECK_EQ_INT(joblim_verdict(l, 128 + SIGXCPU), JOBLIM_CPU);
	joblim_free(l);
	joblim_free(NULL);
	joblim_message(JOBLIM_DISK, msg, sizeof(msg));
	CHECK_EQ_STR(msg, "disk limit reached: the job wrote more than 1 MiB to its workspace");
	CHECK_EQ_STR(joblim_failure_reason(JOBLIM_MEMORY), "script_failure");
	unlink(file);
	rmdir(dir);
}

int main(void)
{
	test_durations();
	test_disk_and_verdicts();
	return 0;
}
