/* The caching layer of reefd (daemon/cache.c): answers every question the filesystem
 * asks — projects, refs, trees, blob sizes, blob contents — from the LMDB index and the
 * object store, going to the server (daemon/gl.c) only on a miss or an expired branch.
 * Everything it returns has been verified (trees and blobs against their ids). The FUSE
 * operations use only this interface. Thread-safe; concurrent misses for one object
 * share one download.
 *
 * Errors: -ENOENT the thing does not exist (server said 404); -EACCES the server refused;
 * -EIO the server is unreachable or sent something wrong (and it is not cached);
 * -ENOMEM; -EINVAL for a malformed argument. */
#ifndef REEF_CACHE_H
#define REEF_CACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "reef/odb.h"
#include "reef/tree.h"

struct cache;

struct cache_opts {
	const char *dir;        /* cache directory (created 0700 if missing) */
	const char *server;     /* base URL, e.g. http://127.0.0.1:8080 (no /api/v4) */
	const char *token;      /* personal access token; never logged */
	unsigned branch_ttl_ms; /* how long a branch head is trusted before re-asking */
	unsigned list_ttl_ms;   /* how long project and ref listings are trusted */
};

struct cache_project {
	int64_t id;
	char path[1024];          /* path_with_namespace, e.g. "acme/vision/cats" */
	char default_branch[256]; /* "" for an empty repository */
};

enum cache_ref_kind { CACHE_REF_BRANCH, CACHE_REF_TAG, CACHE_REF_COMMIT };

int cache_new(struct cache **out, const struct cache_opts *o);
void cache_free(struct cache *c); /* accepts NULL */

/* The authenticated user (GET /user), fetched once; *out is a new reference. */
int cache_user(struct cache *c, json_t **out);

/* Projects the user is a member of (listing of the mount root). *out malloc'ed. */
int cache_projects_list(struct cache *c, struct cache_project **out, size_t *n);
/* Any project visible to the user by its full path; -ENOENT when there is none. */
int cache_project_get(struct cache *c, const char *path, struct cache_project *out);

/* Branch or tag names (full names, e.g. "feature/x"). *names is a malloc'ed array of
 * malloc'ed strings; free with cache_names_free. */
int cache_refs_list(struct cache *c, int64_t project_id, enum cache_ref_kind kind, char ***names,
                    size_t *n);
void cache_names_free(char **names, size_t n);

/* Resolves a branch (re-asked after branch_ttl_ms), a tag (cached for ever) or a full or
 * unique abbreviated commit sha (cached for ever) to the full commit id. */
int cache_ref_resolve(struct cache *c, int64_t project_id, enum cache_ref_kind kind,
                      const char *name, char commit[41]);

/* The root tree of a commit: its id and entries. *out malloc'ed (free()). */
int cache_root_tree(struct cache *c, int64_t project_id, const char *commit, char tree_oid[41],
                    struct tree_entry **out, size_t *n);
/* A subtree by id; path is the directory's path in commit (the API lists by path).
 * Entries carry sizes where known (-1 otherwise). *out malloc'ed (free()). */
int cache_tree(struct cache *c, int64_t project_id, const char *commit, const char *path,
               const char *tree_oid, struct tree_entry **out, size_t *n);

/* The size of a blob without downloading it where the server can say (HEAD on the files
 * endpoint), else by fetching it. */
int cache_blob_size(struct cache *c, int64_t project_id, const char *commit, const char *path,
                    const char *oid, uint64_t *size);
/* Opens a blob's verified content, downloading it first when not cached. */
int cache_blob_open(struct cache *c, int64_t project_id, const char *oid, struct odb_blob **out);

/* Counters for .reef/status: cache bytes, objects, hits, misses, requests, errors. */
int cache_stats(struct cache *c, json_t **out);

#endif
