/* The GitLab CI YAML subset reef-hub runs: stages, variables (global and per job),
 * before_script, script, after_script, artifacts (paths, when, name), allow_failure,
 * when (on_success | on_failure | always) and only/except ref lists. Everything else is
 * an error that names the key, so a file never half-runs. No I/O and no database:
 * unit-tested on its own (tests/unit/ci). */
#ifndef REEF_HUB_CI_H
#define REEF_HUB_CI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CI_MAX_FILE   ((size_t)1 << 20) /* GitLab's own limit on a CI file is 1 MiB */
#define CI_MAX_DEPTH  32                /* YAML nesting */
#define CI_MAX_NODES  200000            /* node visits, so alias fan-out cannot explode */
#define CI_MAX_JOBS   200
#define CI_MAX_STAGES 50
#define CI_MAX_LINES  1000 /* script lines per section of one job */
#define CI_MAX_VARS   200
#define CI_MAX_ERR    512
#define CI_MAX_NAME   255

/* Parses a CI file into *out, a JSON document the runner stores per job:
 *   {"stages":[...], "jobs":[{"name","stage","stage_idx","before_script":[...],
 *    "script":[...],"after_script":[...],"variables":{...},"allow_failure":bool,
 *    "when":"on_success|on_failure|always","artifacts":{"paths":[...],"when","name"}|null,
 *    "only":[...]|null,"except":[...]|null}]}
 * Jobs are ordered by stage, then by their order in the file. Global variables,
 * before_script and after_script are already folded into each job (job variables win).
 * Returns 0, -EINVAL with a GitLab-style message in err (e.g. "jobs:build script can't
 * be blank"), or -EFBIG when the file exceeds CI_MAX_FILE. */
int ci_parse(const char *yaml, size_t len, json_t **out, char err[CI_MAX_ERR]);

/* Whether a parsed job runs for this ref, per its only/except lists: entries are ref
 * names, /regex/ (POSIX extended), or the keywords branches, tags. */
bool ci_job_matches_ref(const json_t *job, const char *ref, bool is_tag);

/* Expands $NAME and ${NAME} in s from the JSON object vars (unknown names expand to
 * nothing, "$$" to "$"), as GitLab does for variable values. Caller frees. */
char *ci_expand(const char *s, const json_t *vars);

#endif
