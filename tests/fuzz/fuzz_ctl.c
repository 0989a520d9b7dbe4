/* reefd's control files (daemon/ctl.c): what a user writes to experiments/launch,
 * pipelines/launch or a ctl file. */
#include <stdbool.h>

#include "ctl.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const allowed[] = {"cancel", "retry", "stop", NULL};
	char err[CTL_ERR_MAX];
	json_t *in = NULL, *spec = NULL;
	bool lines = false;

	ctl_command((const char *)data, size, allowed, err);
	if (ctl_parse((const char *)data, size, &in, &lines, err) == 0) {
		if (ctl_experiment_spec(in, lines, &spec, err) == 0) {
			json_t *decl = json_pack("[{s:s,s:s,s:b},{s:s,s:s,s:b}]", "name", "epochs",
			                         "type", "INTEGER", "required", 0, "name", "rate",
			                         "type", "FLOAT", "required", 0);
			json_t *params = json_object_get(spec, "params");

			if (decl && json_is_object(params))
				ctl_params_check(params, decl, err);
			json_decref(decl);
			{
				const char *nm = json_string_value(json_object_get(spec, "name"));

				ctl_name_ok(nm ? nm : "");
			}
		}
		json_decref(spec);
		spec = NULL;
		ctl_pipeline_spec(in, lines, &spec, err);
	}
	json_decref(spec);
	json_decref(in);
	return 0;
}
