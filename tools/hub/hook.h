/* Server-side git hooks of reef-hub pushes, and the durable record of what a push changes.
 *
 * `git http-backend` runs receive-pack with core.hooksPath = DIR/hooks, whose entries are
 * symbolic links to the reef-hub binary; main() runs hub_hook_main() when started under a
 * hook's name. The hub passes the push's context in the environment (never from the
 * request): REEF_HUB_DIR, REEF_HUB_PID, REEF_PUSH_PROJECT, REEF_PUSH_USER, REEF_PUSH_ID,
 * and for CI job tokens REEF_PUSH_ONLY_REF (the one ref a launch job may push) and
 * REEF_PUSH_NO_PIPELINE (job-token pushes start no pipeline, as on GitLab).
 *
 * - pre-receive: GitLab's change checks (protected branches, force push, deletion,
 *   existing tags; protect.h) with GitLab's messages on the client's "remote:" lines;
 *   then, before any ref moves, one row per created or updated ref in push_events.
 * - reference-transaction, state "prepared" (refs locked, not yet moved): refuses when
 *   the hub that started the push is gone, so a push whose hub died does not land.
 *
 * After receive-pack ends the hub runs hub_push_events_run() for the push: every row
 * whose ref now points at its new commit gets its pipeline (as the pusher) and every row
 * is deleted. A hub killed in between finds the rows at its next start
 * (hub_push_events_run(hub, NULL)), so a push that landed always gets its pipeline. */
#ifndef REEF_HUB_HOOK_H
#define REEF_HUB_HOOK_H

#include "core.h"

/* True when argv0's base name is one of the hooks reef-hub installs. */
bool hub_hook_name(const char *argv0);
/* Runs the hook named by argv[0]; the process exit code. */
int hub_hook_main(int argc, char **argv);
/* Creates DIR/hooks (0700) with the hook links to this executable. 0 or negative errno. */
int hub_hooks_install(struct hub *hub);
/* Creates the pipelines of the push push_id (all pending pushes when NULL) and forgets
 * its rows. Needs the CI runner started. */
void hub_push_events_run(struct hub *hub, const char *push_id);

#endif
