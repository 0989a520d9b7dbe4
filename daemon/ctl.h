/* The grammar of reefd's control files (daemon/ctl.c): what a write to
 * <project>/experiments/launch, <project>/pipelines/launch or a `ctl` file may say, and
 * its validation against a processor's manifest. No HTTP, no FUSE, no state: every
 * function is pure, so it is unit-tested on its own (tests/unit/ctl).
 *
 * A request is at most CTL_MAX bytes of UTF-8 text (no NUL, no control characters but
 * tab, CR and LF), either one JSON object or `key=value` lines ('#' comments and blank
 * lines ignored; a key is [A-Za-z0-9_.-]+; "params.epochs=5" nests). Errors: -EFBIG
 * oversize, -EINVAL malformed or invalid, -EAGAIN a JSON object not finished yet (more
 * writes may complete it). err always gets a one-line human-readable reason. */
#ifndef REEF_CTL_H
#define REEF_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define CTL_MAX      (64 * 1024)
#define CTL_ERR_MAX  512
#define CTL_NAME_MAX 100

/* Parses a request. *lines tells which form it had: values of key=value lines are all
 * strings, to be typed later against a manifest. */
int ctl_parse(const char *data, size_t len, json_t **out, bool *lines, char err[CTL_ERR_MAX]);

/* Checks the start of a request still being written (a control file accumulates every
 * write between open and close): 0 when more writes may still make it valid, or the
 * error ctl_parse would give whatever follows (a complete key=value line that is wrong,
 * malformed JSON, binary data, oversize). A trailing partial line or partial UTF-8
 * character is left for later. */
int ctl_prefix_check(const char *data, size_t len, char err[CTL_ERR_MAX]);

/* An experiment spec, normalized to {name?, processor, source_branch?, input_path?,
 * output_path?, params{}}. Accepted aliases: slug (processor), branch/ref/source
 * (source_branch), input (input_path), output (output_path), parameters (params). In
 * the key=value form any other key is a parameter; in JSON it is an error. */
int ctl_experiment_spec(json_t *in, bool lines, json_t **out, char err[CTL_ERR_MAX]);
/* A pipeline spec, normalized to {ref, variables: [{key, value}]}: variables may be an
 * object or GitLab's array in JSON; in key=value lines every key but ref is a variable
 * ("variables.KEY=v" also works). Keys are [A-Za-z0-9_]+. */
int ctl_pipeline_spec(json_t *in, bool lines, json_t **out, char err[CTL_ERR_MAX]);
/* A command written to a `ctl` file: one word out of allowed (NULL-terminated),
 * surrounding whitespace ignored. 0 with the word's index, or -EINVAL. */
int ctl_command(const char *data, size_t len, const char *const *allowed, char err[CTL_ERR_MAX]);

/* Checks params (an object) against a manifest's parameters ([{name, type, required,
 * default}], types INTEGER|FLOAT|STRING|BOOLEAN): unknown names, values of the wrong
 * type and missing required parameters are -EINVAL naming the parameter. Values are
 * replaced by their typed form (so "5" becomes 5 for an INTEGER). */
int ctl_params_check(json_t *params, const json_t *decl, char err[CTL_ERR_MAX]);

/* Appends to err (a reason naming an unknown `given`) "; did you mean X?" when one of
 * names is a likely typo of it (case-insensitive edit distance at most a third of its
 * length, at least 1), then " (one of: a, b, ...)", cut to fit CTL_ERR_MAX. */
#define CTL_SUGGEST_MAX 256 /* names listed */
void ctl_suggest(char err[CTL_ERR_MAX], const char *given, const char *const *names, size_t n);

/* An experiment name the hub accepts: 1-100 of [A-Za-z0-9._-], not starting with '.'
 * or '-'. Also a valid path component of the mount. */
bool ctl_name_ok(const char *s);

#endif
