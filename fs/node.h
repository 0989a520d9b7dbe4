/* The mount's model (fs/node.c): the path grammar of a reef mount and the inode table.
 *
 * Grammar (docs/layout.md is the contract):
 *   /                                   NODE_ROOT
 *   /.reef/                             NODE_CTL_DIR
 *   /.reef/status                       NODE_STATUS
 *   /.reef/ctl                          NODE_CONTROL (write-only control file)
 *   /.reef/ctl.error                    NODE_CONTROL_ERROR (why the last ctl write failed)
 *   /.reef/cache.json                   NODE_CACHE_LIST (what the cache holds, by path)
 *   /<group>[/<sub>…]/                  NODE_NAMESPACE
 *   /<group>[/<sub>…]/<project>/        NODE_PROJECT
 *       HEAD                            NODE_HEAD (symlink to branches/<default branch>)
 *       branches/ tags/ commits/        NODE_REFS (ref_kind says which)
 *       branches/<a>/ (for "a/b")       NODE_REF_PREFIX
 *       branches/<name>/ tags/<name>/   NODE_REV: the root tree of the commit the ref names
 *       commits/<sha>/                  NODE_REV (full or abbreviated sha)
 *   inside a NODE_REV: NODE_TREE, NODE_FILE, NODE_SYMLINK, NODE_SUBMODULE.
 *   /.reef/processors/…, /.reef/usage.json, <project>/experiments/…,
 *   <project>/pipelines/…             NODE_ML_DIR, NODE_ML_FILE, NODE_ML_CTL (daemon/mlfs.c
 *                                       knows their grammar; an experiment's outputs/ is
 *                                       a NODE_TREE of its branch)
 *
 * Identity: a node is keyed by (parent inode, name, oid) where oid is the object the node
 * shows (commit for a revision root, tree or blob id below it, project id for a project).
 * When a branch moves, the same name yields a new inode, so nothing cached by the kernel
 * for the old content is ever shown for the new one. The inode number is a hash of the
 * key (probing past the rare collision among live nodes), so a directory listing can
 * name the number a later lookup gives (node_ino_predict), and a node recreated after
 * the kernel forgot it gets its old number back: same key, same content.
 *
 * Reference counting: refs = kernel lookups (nlookup) + pins held by operations in flight
 * + one per child node present in the table. A node is freed when refs reaches zero. The
 * root and .reef are permanent. The table is thread-safe; node fields other than the
 * counters and the listing are immutable after creation. No HTTP and no FUSE here. */
#ifndef REEF_NODE_H
#define REEF_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "reef/tree.h"

#define NODE_ROOT_INO    1
#define NODE_CTL_INO     2
#define NODE_INO_MIN     16      /* numbers below are reserved for permanent nodes */
#define NODE_PATH_MAX    4096    /* a path inside a revision, a namespace path or a ref name */
#define NODE_SHA_MIN     4       /* shortest abbreviated sha accepted under commits/ */
#define NODE_DIR_ENTRIES 1000000 /* cap on a directory listing held in memory */

enum node_kind {
	NODE_ROOT,
	NODE_CTL_DIR,
	NODE_STATUS,
	NODE_CONTROL,
	NODE_CONTROL_ERROR,
	NODE_CACHE_LIST,
	NODE_NAMESPACE,
	NODE_PROJECT,
	NODE_HEAD,
	NODE_REFS,
	NODE_REF_PREFIX,
	NODE_REV,
	NODE_TREE,
	NODE_FILE,
	NODE_SYMLINK,
	NODE_SUBMODULE,
	/* experiments, pipelines and processors (daemon/mlfs.h): path is the path below
	 * the project or the mount, oid the job id for job-bound nodes */
	NODE_ML_DIR,
	NODE_ML_FILE,
	NODE_ML_CTL,
};

/* Same values as enum cache_ref_kind (daemon/cache.h) so the daemon can pass them on. */
enum node_ref_kind { NODE_REF_BRANCH, NODE_REF_TAG, NODE_REF_COMMIT };

/* A directory listing kept on a tree node: sorted by name (strcmp), immutable once set. */
struct node_dirent {
	const char *name; /* points into the listing's name pool */
	uint32_t mode;    /* git mode (enum tree_mode) */
	int64_t size;     /* -1 when not known */
	/* The size a file entry shows, once resolved and found not to be an LFS pointer
	 * (-1 until then): its next lookup needs no cache query. Written once, atomically. */
	int64_t shown;
	char oid[41];
};

struct node_listing {
	struct node_dirent *e;
	size_t n;
	char *pool;
};

/* Compact: one allocation per node. name and oid point into the parent's listing when the
 * node is an entry of it (the parent outlives its children), else into the node's own
 * tail; commit points into the revision root's; tree into the node's oid or tail. */
struct node {
	uint64_t ino;
	struct node *parent; /* NULL for the root; holds a reference on it */
	const char *name;
	/* The object shown: commit (NODE_REV), tree id (NODE_TREE), blob id (NODE_FILE,
	 * NODE_SYMLINK), submodule commit (NODE_SUBMODULE), decimal project id
	 * (NODE_PROJECT), target branch (NODE_HEAD); "" otherwise. Part of the key. */
	const char *oid;
	/* Namespace or project path ("acme/vision/cats"), the ref prefix of a
	 * NODE_REF_PREFIX ("feature"), the ref name of a NODE_REV (the sha under commits/),
	 * the path inside the revision of revision content ("" for NODE_REV's tree). */
	const char *path;
	const char *commit; /* NODE_REV and everything below it; "" elsewhere */
	const char *tree;   /* NODE_REV: its root tree id; NODE_TREE: == oid; else "" */
	char *lfs_oid;      /* NODE_FILE showing an LFS object: its sha256; else NULL */
	int64_t project_id; /* NODE_PROJECT and everything below it */
	int64_t size;       /* NODE_FILE, NODE_SYMLINK: exact size; else 0 */
	int64_t time;       /* NODE_REV and below: the commit's committer time; 0 unknown */
	enum node_kind kind : 8;
	enum node_ref_kind ref_kind : 8; /* NODE_REFS and everything below it */
	uint32_t git_mode;               /* revision content: enum tree_mode */

	/* table internals, under the table lock */
	uint64_t refs;
	uint64_t nlookup;
	struct node_listing *listing;
	struct node *next_ino, *next_key;
};

/* What a new node is made of; the key is (parent, name, oid). */
struct node_attrs {
	enum node_kind kind;
	const char *oid;  /* NULL means "" */
	const char *path; /* NULL means "" */
	int64_t project_id;
	enum node_ref_kind ref_kind;
	const char *commit; /* NULL: inherit the parent's */
	const char *tree;   /* NULL means "" */
	uint32_t git_mode;
	int64_t size;
	const char *lfs_oid; /* NULL: not an LFS file */
	int64_t time;        /* 0: inherit the parent's */
};

struct node_table;

int node_table_new(struct node_table **out);
void node_table_free(struct node_table *t); /* accepts NULL; frees every node */

/* The node with this inode number, pinned (release with node_put); NULL if none. */
struct node *node_get(struct node_table *t, uint64_t ino);
void node_put(struct node_table *t, struct node *n); /* accepts NULL */
/* Pins a node the caller already holds a reference to. */
void node_pin(struct node_table *t, struct node *n);

/* Finds or creates the child (parent, name, a->oid) and counts one kernel lookup on it.
 * Fields other than the key are taken from a only when the node is created. Inherited
 * from the parent: project id unless a->project_id is set (non-zero), commit unless
 * a->commit is set, time unless a->time is set, ref kind unless a->kind is NODE_REFS. Returns 0,
 * -ENOMEM, -EINVAL (a name no directory entry can have). */
int node_lookup(struct node_table *t, struct node *parent, const char *name,
                const struct node_attrs *a, struct node **out);
/* Drops n kernel lookups of ino (FUSE forget); frees nodes whose count reaches zero. */
void node_forget(struct node_table *t, uint64_t ino, uint64_t nlookup);
/* The inode of an existing child, or 0; does not create or count anything. */
uint64_t node_find_ino(struct node_table *t, uint64_t parent, const char *name, const char *oid);
/* The inode number the child (parent, name, oid) has or would get if looked up now. */
uint64_t node_ino_predict(struct node_table *t, uint64_t parent, const char *name, const char *oid);
size_t node_table_count(struct node_table *t);

/* A revision root of a branch held in the table (the kernel may still know it). */
struct node_rev {
	uint64_t ino, parent;
	char name[256]; /* its name in parent: the last component of the branch name */
	char commit[41];
};
/* The inodes of every node of kind inside the subtree of ancestor (itself excluded) held
 * in the table; *out malloc'ed. */
int node_collect_under(struct node_table *t, uint64_t ancestor, enum node_kind kind, uint64_t **out,
                       size_t *n);
/* Every revision root of branch (full name) of the project in the table; *out malloc'ed. */
int node_branch_revs(struct node_table *t, int64_t project_id, const char *branch,
                     struct node_rev **out, size_t *n);

/* The listing of a directory node, set once: the first caller's listing wins and the
 * loser's is freed. node_listing_get returns NULL when none has been set. A revision
 * directory's listing outlives its node (the kernel forgot it) in a bounded pool of
 * retired listings (NODE_RETIRED_ENTRIES entries in all), keyed by inode number and
 * oid: a node of the same key looked up again gets it back, resolved entries included. */
#define NODE_RETIRED_ENTRIES 262144
const struct node_listing *node_listing_get(struct node_table *t, struct node *n);
const struct node_listing *node_listing_set(struct node_table *t, struct node *n,
                                            struct node_listing *l);
/* Builds a sorted listing from tree entries; -EINVAL for a bad or duplicate name,
 * -E2BIG above NODE_DIR_ENTRIES. */
int node_listing_new(struct node_listing **out, const struct tree_entry *e, size_t n);
void node_listing_free(struct node_listing *l); /* accepts NULL */
const struct node_dirent *node_listing_find(const struct node_listing *l, const char *name);

/* ---- path grammar ---- */

/* What a child name of a node of this kind can be, before asking the server:
 * returns the child's kind, or NODE_NAMESPACE for "a namespace or a project" under the
 * root and namespaces, NODE_REV for "a ref or a ref prefix" under branches/, tags/ and
 * prefixes, NODE_TREE for "a tree entry" inside a revision. -ENOENT when the name
 * cannot exist there, -ENOTDIR when the parent is not a directory. */
int node_child_kind(const struct node *parent, const char *name, enum node_ref_kind *ref_kind);
/* A GitLab path component: [A-Za-z0-9_.-], not starting with '.' or '-', not ending in
 * ".git" or ".atom", at most 255 bytes. */
bool node_name_is_gitlab_path(const char *name);
/* A component of a git ref name (git check-ref-format rules for one component). */
bool node_name_is_ref_component(const char *name);
/* NODE_SHA_MIN to 40 lowercase hex digits. */
bool node_name_is_sha(const char *name);
/* A tree entry name git accepts: non-empty, no '/', not "." or "..", <= 255 bytes. */
bool node_name_is_entry(const char *name);
/* "prefix/name" (or "name" when prefix is empty) into out; -ENAMETOOLONG. */
int node_path_join(char *out, size_t cap, const char *prefix, const char *name);

/* The immediate children of prefix in a set of slash-separated paths (project paths or
 * ref names): each distinct next component once, sorted, with leaf = true when
 * prefix/component is itself one of the paths. */
struct node_child {
	char *name;
	bool leaf;
	bool inner; /* some path continues below prefix/component */
};
int node_children(const char *const *paths, size_t n, const char *prefix, struct node_child **out,
                  size_t *nout);
void node_children_free(struct node_child *c, size_t n);
/* Classifies prefix/name in a set of paths: 1 leaf, 2 inner (a prefix of longer paths),
 * 3 both, 0 neither. */
int node_path_classify(const char *const *paths, size_t n, const char *prefix, const char *name);

/* The st_mode of a node (S_IFDIR|0755, S_IFREG|0644 or 0755, S_IFLNK|0777, …). */
mode_t node_st_mode(const struct node *n);
/* The kind of revision content a git mode shows as; -EINVAL for an unknown mode. */
int node_kind_from_git_mode(uint32_t mode);
/* True for nodes whose name -> inode binding never changes (inside a revision, the
 * revision roots under tags/ and commits/, .reef/status). */
bool node_entry_is_immutable(const struct node *parent);

#endif
