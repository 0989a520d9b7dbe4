/* The CI YAML subset parser of reef-hub (tools/hub/ci.c): any file a project pushes. */
#include <stdlib.h>

#include "ci.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[CI_MAX_ERR];
	json_t *out = NULL;

	if (ci_parse((const char *)data, size, &out, err) == 0) {
		json_t *jobs = json_object_get(out, "jobs"), *job;
		size_t i;

		json_array_foreach(jobs, i, job)
		{
			ci_job_matches_ref(job, "main", false);
			ci_job_matches_ref(job, "v1.0", true);
		}
	}
	json_decref(out);
	return 0;
}
