/* Protected branches as GitLab has them (lib/api/protected_branches.rb,
 * lib/api/entities/protected_branch.rb, lib/gitlab/checks/branch_check.rb): the rules in
 * table protected_branches, the REST routes /projects/:id/protected_branches[/:name], and
 * the checks every ref change goes through (git push via the pre-receive hook, branch
 * deletion and commits through the REST API). Also the per-project settings GitLab keeps
 * beside them (project_settings: ci_push_repository_for_job_token_allowed). */
#ifndef REEF_HUB_PROTECT_H
#define REEF_HUB_PROTECT_H

#include "core.h"

/* GitLab's ProtectedRefAccess levels: 0 no one, 30 developers, 40 maintainers, 60 admins */
#define HUB_PROTECT_NO_ONE 0
#define HUB_PROTECT_ADMIN  60

struct hub_protection {
	int64_t id;
	char name[256];
	int push_level;
	int merge_level;
	bool allow_force_push;
};

/* Protects branch the way GitLab's default "initial default branch protection" (Fully
 * protected) does: push and merge for maintainers, no force push. Inside the caller's
 * transaction; an existing rule of that name is kept. */
int hub_protect_default(struct hub *hub, int64_t project_id, const char *branch);

/* The rules matching branch (exact names and '*' wildcards), combined as GitLab does: the
 * lowest push level of any matching rule, force push only when every matching rule allows
 * it. 1 protected (out filled), 0 not protected, negative errno. */
int hub_protect_match(struct hub *hub, int64_t project_id, const char *branch,
                      struct hub_protection *out);

/* GitLab's checks of one ref update of refs/heads/<branch> by a user with access acc
 * (lib/gitlab/checks/branch_check.rb). default_branch: the project's default branch or
 * NULL; repo_empty: the repository has no branch yet (then every branch counts as the
 * default one for protection, as ProtectedBranch.protected? does); web: the change comes
 * from the REST API rather than git. NULL when allowed, else GitLab's message. */
const char *hub_protect_check(struct hub *hub, const struct hub_project *p,
                              const struct hub_user *u, enum hub_access acc, const char *branch,
                              const char *default_branch, bool repo_empty, bool deletion,
                              bool force, bool web);

/* A new default branch took over from a missing one (the first push of a project whose
 * HEAD named another branch): its protection follows, as GitLab protects whichever branch
 * becomes the default. */
void hub_protect_rename(struct hub *hub, int64_t project_id, const char *from, const char *to);

/* /api/v4/projects/:id/protected_branches<rest>; rest is "" or "/<name>" (still
 * percent-encoded). The project is visible to the caller. */
void hub_protect_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                       const char *rest);

/* ci_push_repository_for_job_token_allowed (GitLab default false): job tokens of the
 * project's own jobs may push. */
bool hub_project_job_token_push(struct hub *hub, int64_t project_id);
int hub_project_job_token_push_set(struct hub *hub, int64_t project_id, bool on);

#endif
