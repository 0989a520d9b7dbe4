/* Internals shared by the repository route modules (repo.c, repo_tree.c, repo_files.c,
 * repo_commits.c). The core sees only hub_repo_route() and hub_repo_project_fields(). */
#ifndef REEF_HUB_REPO_INT_H
#define REEF_HUB_REPO_INT_H

#include <git2.h>
#include <stdbool.h>
#include <stdint.h>

#include "hub.h"

/* Blobs served inside JSON (base64) are capped; /raw serves larger ones. */
#define REPO_MAX_JSON_BLOB ((size_t)100 << 20)
/* HEAD on a file hashes (SHA-256) blobs up to this size only, to stay bounded; larger
 * ones get no X-Gitlab-Content-Sha256. Raw answers have no cap (blobcache.h). */
#define REPO_MAX_RAW_BLOB ((size_t)2 << 30)
/* A recursive tree listing visits at most this many entries. */
#define REPO_MAX_TREE_ENTRIES 1000000
/* last_commit_id follows the simplified history of a path this many commits at most:
 * fewer for HEAD, which reefd sends for every file it stats and which must stay cheap
 * on a cold cache (each step parses the commit's root tree). */
#define REPO_MAX_LAST_COMMIT_WALK 10000
#define REPO_MAX_LAST_COMMIT_HEAD 100
/* Commit listings walk at most this many commits per request. */
#define REPO_MAX_LOG_WALK 200000
/* Diffs for commit stats treat blobs above this size as binary. */
#define REPO_MAX_DIFF_BLOB ((int64_t)8 << 20)

struct repo_ctx {
	struct hub_req *req;
	struct hub_resp *resp;
	const struct hub_project *p;
	git_repository *repo;
};

/* --- repo.c: shared helpers --- */

/* Takes a handle on the project's bare repository from the pool (or opens one); hand it
 * back with repo_release(*out, *slot). 0 or a negative errno. */
int repo_open(const struct hub_project *p, git_repository **out, int *slot);
void repo_release(git_repository *repo, int slot);
/* Answers 500 and logs libgit2's last error. */
void repo_fail(struct repo_ctx *c, const char *what);
/* Lets the response body hold len more bytes than the core's default cap, which is
 * smaller than the blobs served here. */
void repo_resp_room(struct repo_ctx *c, size_t len);
/* {"error": msg} with status 400, as Grape reports parameter validation failures. */
void repo_bad_param(struct repo_ctx *c, const char *msg);
/* Checks that the caller may write (developer or more); answers 401/403 otherwise. */
bool repo_can_write(struct repo_ctx *c);
/* GitLab's protected-branch checks of a change to refs/heads/<branch> made through the
 * API (protect.h, web protocol): NULL when allowed, else GitLab's message. */
const char *repo_protect_check(struct repo_ctx *c, const char *branch, bool deletion);

/* A JSON string from bytes that may not be UTF-8 (invalid sequences become U+FFFD). */
json_t *repo_jstr(const char *s);
json_t *repo_jstrn(const char *s, size_t len);

/* True for "true"/"True"/"1"/"yes"; false otherwise (NULL included). */
bool repo_bool(const char *v);
/* Reads page and per_page as GitLab does (defaults 1 and 20, per_page at most 100). */
void repo_page_params(const struct hub_req *req, size_t *page, size_t *per_page);
/* Offset pagination headers without totals (GitLab omits them for commits): has_next
 * tells whether another page follows. */
void repo_page_headers(struct repo_ctx *c, size_t page, size_t per_page, bool has_next);

/* Decodes one percent-encoded URL segment of len bytes; NULL when malformed. */
char *repo_segment(const char *seg, size_t len);

/* The default branch name (HEAD's branch when it exists); *out NULL when the repository
 * has no branch. 0 or a negative errno. The caller frees *out. */
int repo_default_branch(git_repository *repo, char **out);
/* Resolves a full or abbreviated (>= 4 hex) commit id, a branch, a tag, "HEAD" or a
 * simple revision (name~N, name^N) to a commit. -ENOENT when nothing matches. */
int repo_resolve_commit(git_repository *repo, const char *name, git_commit **out);
/* The id and mode of the entry at path in tree; both zero when absent. Path "" is the
 * tree itself. 0 or a negative errno (absence is not an error). */
int repo_path_entry(const git_tree *tree, const char *path, git_oid *oid, uint32_t *mode);
/* The id of the newest commit that changed path, following git's simplified history
 * from cm (at most max_steps commits; past that, cm's own id). */
int repo_last_commit(git_repository *repo, const git_commit *cm, const char *path,
                     unsigned max_steps, git_oid *out);

/* GitLab's commit JSON (Entities::Commit). */
json_t *repo_commit_json(struct repo_ctx *c, const git_commit *cm);
/* Adds stats {additions, deletions, total} against the first parent. */
int repo_commit_stats(struct repo_ctx *c, const git_commit *cm, json_t *out);
/* "<base_url>/<project path>/-/<kind>/<name>" */
json_t *repo_web_url(struct repo_ctx *c, const char *kind, const char *name);

/* --- route modules --- */

void repo_tree_route(struct repo_ctx *c);
void repo_files_route(struct repo_ctx *c, const char *rest);
void repo_files_write(struct repo_ctx *c, const char *path);
void repo_blobs_route(struct repo_ctx *c, const char *rest);
void repo_commits_route(struct repo_ctx *c, const char *rest);

#endif
