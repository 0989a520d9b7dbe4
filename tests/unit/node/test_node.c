/* Unit tests of fs/node.c: the mount's path grammar and the inode table (identity,
 * reference counting by lookup/forget/pin, listings). */
#include "node.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../check.h"

static const char *OID_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *LFS_OID = "5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f";
static const char *OID_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static void test_names(void)
{
	CHECK(node_name_is_gitlab_path("acme"));
	CHECK(node_name_is_gitlab_path("my-proj_1.x"));
	CHECK(!node_name_is_gitlab_path(""));
	/* GitLab paths may start with '.' (alice/.dotfiles); "." and ".." never name one */
	CHECK(node_name_is_gitlab_path(".dotfiles"));
	CHECK(node_name_is_gitlab_path(".reef")); /* the root's .reef is the mount's own */
	CHECK(!node_name_is_gitlab_path("."));
	CHECK(!node_name_is_gitlab_path(".."));
	CHECK(!node_name_is_gitlab_path("-x"));
	CHECK(!node_name_is_gitlab_path("a b"));
	CHECK(!node_name_is_gitlab_path("repo.git"));
	CHECK(!node_name_is_gitlab_path("feed.atom"));
	CHECK(!node_name_is_gitlab_path("caf\xc3\xa9"));

	CHECK(node_name_is_ref_component("master"));
	CHECK(node_name_is_ref_component("v1.0"));
	CHECK(node_name_is_ref_component("caf\xc3\xa9"));
	CHECK(!node_name_is_ref_component(""));
	CHECK(!node_name_is_ref_component(".hidden"));
	CHECK(!node_name_is_ref_component("x.lock"));
	CHECK(!node_name_is_ref_component("a..b"));
	CHECK(!node_name_is_ref_component("a b"));
	CHECK(!node_name_is_ref_component("a:b"));
	CHECK(!node_name_is_ref_component("a~1"));
	CHECK(!node_name_is_ref_component("@"));
	CHECK(!node_name_is_ref_component("x@{1}"));
	CHECK(!node_name_is_ref_component("a\tb"));

	CHECK(node_name_is_sha("abcd"));
	CHECK(node_name_is_sha(OID_A));
	CHECK(!node_name_is_sha("abc"));
	CHECK(!node_name_is_sha("ABCDEF"));
	CHECK(!node_name_is_sha("abcdefg"));
	CHECK(!node_name_is_sha("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 41 */

	CHECK(node_name_is_entry("with space"));
	CHECK(node_name_is_entry(".hidden"));
	CHECK(!node_name_is_entry(""));
	CHECK(!node_name_is_entry("."));
	CHECK(!node_name_is_entry(".."));
	CHECK(!node_name_is_entry("a/b"));
	char longname[300];
	memset(longname, 'x', 256);
	longname[256] = 0;
	CHECK(!node_name_is_entry(longname));
	longname[255] = 0;
	CHECK(node_name_is_entry(longname));

	char buf[16];
	CHECK_EQ_INT(node_path_join(buf, sizeof(buf), "", "a"), 0);
	CHECK_EQ_STR(buf, "a");
	CHECK_EQ_INT(node_path_join(buf, sizeof(buf), "feature", "x"), 0);
	CHECK_EQ_STR(buf, "feature/x");
	CHECK_EQ_INT(node_path_join(buf, sizeof(buf), "0123456789", "abcdef"), -ENAMETOOLONG);
}

static void test_child_kind(void)
{
	struct node p = {0};
	enum node_ref_kind rk = NODE_REF_COMMIT;

	p.kind = NODE_ROOT;
	CHECK_EQ_INT(node_child_kind(&p, ".reef", &rk), NODE_CTL_DIR);
	CHECK_EQ_INT(node_child_kind(&p, "acme", &rk), NODE_NAMESPACE);
	CHECK_EQ_INT(node_child_kind(&p, ".git", &rk), -ENOENT);
	p.kind = NODE_CTL_DIR;
	CHECK_EQ_INT(node_child_kind(&p, "status", &rk), NODE_STATUS);
	CHECK_EQ_INT(node_child_kind(&p, "ctl", &rk), NODE_CONTROL);
	CHECK_EQ_INT(node_child_kind(&p, "ctl.error", &rk), NODE_CONTROL_ERROR);
	CHECK_EQ_INT(node_child_kind(&p, "ctl2", &rk), -ENOENT);
	p.kind = NODE_CONTROL;
	CHECK_EQ_INT(node_child_kind(&p, "x", &rk), -ENOTDIR);
	CHECK_EQ_INT(node_st_mode(&p), S_IFREG | 0200);
	p.kind = NODE_CONTROL_ERROR;
	CHECK_EQ_INT(node_st_mode(&p), S_IFREG | 0444);
	p.kind = NODE_NAMESPACE;
	CHECK_EQ_INT(node_child_kind(&p, "cats", &rk), NODE_NAMESPACE);
	CHECK_EQ_INT(node_child_kind(&p, "HEAD x", &rk), -ENOENT);
	p.kind = NODE_PROJECT;
	CHECK_EQ_INT(node_child_kind(&p, "HEAD", &rk), NODE_HEAD);
	CHECK_EQ_INT(node_child_kind(&p, "branches", &rk), NODE_REFS);
	CHECK_EQ_INT(rk, NODE_REF_BRANCH);
	CHECK_EQ_INT(node_child_kind(&p, "tags", &rk), NODE_REFS);
	CHECK_EQ_INT(rk, NODE_REF_TAG);
	CHECK_EQ_INT(node_child_kind(&p, "commits", &rk), NODE_REFS);
	CHECK_EQ_INT(rk, NODE_REF_COMMIT);
	CHECK_EQ_INT(node_child_kind(&p, "issues", &rk), -ENOENT);
	p.kind = NODE_REFS;
	p.ref_kind = NODE_REF_COMMIT;
	CHECK_EQ_INT(node_child_kind(&p, "abcdef0", &rk), NODE_REV);
	CHECK_EQ_INT(node_child_kind(&p, "master", &rk), -ENOENT);
	p.ref_kind = NODE_REF_BRANCH;
	CHECK_EQ_INT(node_child_kind(&p, "master", &rk), NODE_REV);
	CHECK_EQ_INT(node_child_kind(&p, "x.lock", &rk), -ENOENT);
	p.kind = NODE_REF_PREFIX;
	CHECK_EQ_INT(node_child_kind(&p, "x", &rk), NODE_REV);
	p.kind = NODE_REV;
	CHECK_EQ_INT(node_child_kind(&p, "a file", &rk), NODE_TREE);
	p.kind = NODE_SUBMODULE;
	CHECK_EQ_INT(node_child_kind(&p, "a", &rk), -ENOENT);
	p.kind = NODE_FILE;
	CHECK_EQ_INT(node_child_kind(&p, "a", &rk), -ENOTDIR);
	p.kind = NODE_HEAD;
	CHECK_EQ_INT(node_child_kind(&p, "a", &rk), -ENOTDIR);
}

static void test_children(void)
{
	const char *refs[] = {"master", "feature/x", "feature/y/z", "dev", "feature/x2"};
	struct node_child *c;
	size_t n;

	CHECK_EQ_INT(node_children(refs, 5, "", &c, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_STR(c[0].name, "dev");
	CHECK(c[0].leaf && !c[0].inner);
	CHECK_EQ_STR(c[1].name, "feature");
	CHECK(!c[1].leaf && c[1].inner);
	CHECK_EQ_STR(c[2].name, "master");
	node_children_free(c, n);

	CHECK_EQ_INT(node_children(refs, 5, "feature", &c, &n), 0);
	CHECK_EQ_INT(n, 3);
	CHECK_EQ_STR(c[0].name, "x");
	CHECK(c[0].leaf);
	CHECK_EQ_STR(c[1].name, "x2");
	CHECK_EQ_STR(c[2].name, "y");
	CHECK(c[2].inner && !c[2].leaf);
	node_children_free(c, n);

	/* "feat" is not a prefix of "feature/x": only whole components count */
	CHECK_EQ_INT(node_children(refs, 5, "feat", &c, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK(c == NULL);
	CHECK_EQ_INT(node_children(refs, 0, "", &c, &n), 0);
	CHECK_EQ_INT(n, 0);

	CHECK_EQ_INT(node_path_classify(refs, 5, "", "master"), 1);
	CHECK_EQ_INT(node_path_classify(refs, 5, "", "feature"), 2);
	CHECK_EQ_INT(node_path_classify(refs, 5, "", "feat"), 0);
	CHECK_EQ_INT(node_path_classify(refs, 5, "feature", "y"), 2);
	CHECK_EQ_INT(node_path_classify(refs, 5, "feature/y", "z"), 1);
	CHECK_EQ_INT(node_path_classify(refs, 5, "feature", "z"), 0);
	CHECK_EQ_INT(node_path_classify(refs, 5, "", ""), 0);

	const char *projects[] = {"acme/vision/cats", "acme/dogs", "alice/notes", "acme/dogs/x"};
	CHECK_EQ_INT(node_path_classify(projects, 4, "acme", "dogs"), 3);
	CHECK_EQ_INT(node_path_classify(projects, 4, "acme", "vision"), 2);
	CHECK_EQ_INT(node_path_classify(projects, 4, "acme/vision", "cats"), 1);
	CHECK_EQ_INT(node_children(projects, 4, "", &c, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_STR(c[0].name, "acme");
	CHECK_EQ_STR(c[1].name, "alice");
	node_children_free(c, n);
}

static void test_modes(void)
{
	struct node n = {0};

	n.kind = NODE_FILE;
	n.git_mode = TREE_MODE_FILE;
	CHECK_EQ_INT(node_st_mode(&n), S_IFREG | 0644);
	n.git_mode = TREE_MODE_EXEC;
	CHECK_EQ_INT(node_st_mode(&n), S_IFREG | 0755);
	n.kind = NODE_SYMLINK;
	CHECK_EQ_INT(node_st_mode(&n), S_IFLNK | 0777);
	n.kind = NODE_SUBMODULE;
	CHECK_EQ_INT(node_st_mode(&n), S_IFDIR | 0755);
	n.kind = NODE_HEAD;
	CHECK(S_ISLNK(node_st_mode(&n)));
	CHECK_EQ_INT(node_kind_from_git_mode(TREE_MODE_DIR), NODE_TREE);
	CHECK_EQ_INT(node_kind_from_git_mode(TREE_MODE_FILE), NODE_FILE);
	CHECK_EQ_INT(node_kind_from_git_mode(TREE_MODE_EXEC), NODE_FILE);
	CHECK_EQ_INT(node_kind_from_git_mode(TREE_MODE_LINK), NODE_SYMLINK);
	CHECK_EQ_INT(node_kind_from_git_mode(TREE_MODE_SUBMODULE), NODE_SUBMODULE);
	CHECK_EQ_INT(node_kind_from_git_mode(0100664), -EINVAL);

	n.kind = NODE_REFS;
	n.ref_kind = NODE_REF_BRANCH;
	CHECK(!node_entry_is_immutable(&n));
	n.ref_kind = NODE_REF_TAG;
	CHECK(node_entry_is_immutable(&n));
	n.ref_kind = NODE_REF_COMMIT;
	CHECK(node_entry_is_immutable(&n));
	n.kind = NODE_TREE;
	CHECK(node_entry_is_immutable(&n));
	n.kind = NODE_NAMESPACE;
	CHECK(!node_entry_is_immutable(&n));
	n.kind = NODE_PROJECT;
	CHECK(!node_entry_is_immutable(&n));
}

/* Builds root/acme (namespace)/cats (project)/branches/master@commit A. */
static struct node *make_rev(struct node_table *t, const char *commit)
{
	struct node *root = node_get(t, NODE_ROOT_INO), *ns, *proj, *refs, *rev;
	struct node_attrs a = {.kind = NODE_NAMESPACE, .path = "acme"};

	CHECK(root);
	CHECK_EQ_INT(node_lookup(t, root, "acme", &a, &ns), 0);
	a = (struct node_attrs){
	    .kind = NODE_PROJECT, .path = "acme/cats", .oid = "7", .project_id = 7};
	CHECK_EQ_INT(node_lookup(t, ns, "cats", &a, &proj), 0);
	a = (struct node_attrs){.kind = NODE_REFS, .ref_kind = NODE_REF_BRANCH};
	CHECK_EQ_INT(node_lookup(t, proj, "branches", &a, &refs), 0);
	a = (struct node_attrs){
	    .kind = NODE_REV, .oid = commit, .commit = commit, .path = "master", .tree = OID_B};
	CHECK_EQ_INT(node_lookup(t, refs, "master", &a, &rev), 0);
	node_put(t, root);
	return rev;
}

static bool exists(struct node_table *t, uint64_t ino)
{
	struct node *n = node_get(t, ino);

	node_put(t, n);
	return n != NULL;
}

static void test_table(void)
{
	struct node_table *t;
	struct node *rev, *rev2, *f, *f2, *g, *root;
	struct node_attrs a;

	CHECK_EQ_INT(node_table_new(&t), 0);
	CHECK_EQ_INT(node_table_count(t), 2);
	root = node_get(t, NODE_ROOT_INO);
	CHECK(root && root->kind == NODE_ROOT);
	node_put(t, root);
	struct node *ctl = node_get(t, NODE_CTL_INO);
	CHECK(ctl && ctl->kind == NODE_CTL_DIR && ctl->parent == root);
	node_put(t, ctl);
	CHECK(!exists(t, 99));

	rev = make_rev(t, OID_A);
	CHECK_EQ_INT(node_table_count(t), 6);
	CHECK_EQ_INT(rev->kind, NODE_REV);
	CHECK_EQ_INT(rev->project_id, 7);
	CHECK_EQ_INT(rev->ref_kind, NODE_REF_BRANCH);
	CHECK_EQ_STR(rev->commit, OID_A);
	CHECK_EQ_STR(rev->tree, OID_B);
	CHECK_EQ_STR(rev->parent->name, "branches");
	CHECK_EQ_STR(rev->parent->parent->path, "acme/cats");
	CHECK(rev->ino > NODE_CTL_INO);

	/* a file inherits project, ref kind and commit */
	a = (struct node_attrs){
	    .kind = NODE_FILE, .oid = OID_B, .path = "f", .git_mode = 0100755, .size = 12};
	CHECK_EQ_INT(node_lookup(t, rev, "f", &a, &f), 0);
	CHECK_EQ_INT(f->project_id, 7);
	CHECK_EQ_STR(f->commit, OID_A);
	CHECK_EQ_INT(f->size, 12);
	CHECK_EQ_INT(node_st_mode(f), S_IFREG | 0755);

	/* same key: same node, lookup counted twice */
	CHECK_EQ_INT(node_lookup(t, rev, "f", &a, &f2), 0);
	CHECK(f2 == f);
	CHECK_EQ_INT(f->nlookup, 2);
	CHECK_EQ_INT(node_find_ino(t, rev->ino, "f", OID_B), f->ino);
	CHECK_EQ_INT(node_find_ino(t, rev->ino, "f", OID_A), 0);

	/* same name, other object: a different inode */
	a.oid = OID_A;
	CHECK_EQ_INT(node_lookup(t, rev, "f", &a, &g), 0);
	CHECK(g != f);
	CHECK(g->ino != f->ino);

	/* the branch moved: the same name under branches/ is a new revision root */
	rev2 = make_rev(t, OID_B);
	CHECK(rev2 != rev);
	CHECK(rev2->ino != rev->ino);
	CHECK(rev2->parent == rev->parent);

	/* bad names are refused */
	CHECK_EQ_INT(node_lookup(t, rev, "a/b", &a, &g), -EINVAL);
	CHECK_EQ_INT(node_lookup(t, rev, "..", &a, &g), -EINVAL);

	/* pins keep a forgotten node alive until released */
	uint64_t fino = f->ino;
	struct node *pinned = node_get(t, fino);
	CHECK(pinned == f);
	node_forget(t, fino, 2);
	CHECK(node_find_ino(t, rev->ino, "f", OID_B) == fino);
	node_put(t, pinned);
	CHECK(!exists(t, fino));
	CHECK_EQ_INT(node_find_ino(t, rev->ino, "f", OID_B), 0);

	/* forgetting more than was looked up is clamped, not an underflow */
	uint64_t gino = node_find_ino(t, rev->ino, "f", OID_A);
	CHECK(gino != 0);
	node_forget(t, gino, 1000);
	CHECK(!exists(t, gino));
	node_forget(t, gino, 1); /* unknown inode: ignored */

	/* a parent lives while it has children, then goes with the last one */
	uint64_t rev_ino = rev->ino, refs_ino = rev->parent->ino;
	node_forget(t, refs_ino, 2); /* both make_rev lookups of branches/ */
	CHECK(exists(t, refs_ino));
	node_forget(t, rev_ino, 1);
	CHECK(!exists(t, rev_ino));
	CHECK(exists(t, refs_ino)); /* rev2 still holds it */
	size_t before = node_table_count(t);
	uint64_t max_seen = rev2->ino;
	node_forget(t, rev2->ino, 1);
	CHECK(!exists(t, refs_ino));
	CHECK(node_table_count(t) < before);

	/* root and .reef are permanent */
	node_forget(t, NODE_ROOT_INO, 100);
	node_forget(t, NODE_CTL_INO, 100);
	CHECK(exists(t, NODE_ROOT_INO));
	CHECK(exists(t, NODE_CTL_INO));

	/* a node recreated after the kernel forgot it gets its number back (same key, same
	 * content); another object under the same name gets another number */
	rev = make_rev(t, OID_B);
	CHECK_EQ_INT(rev->ino, max_seen);
	CHECK(rev_ino != max_seen);

	/* what readdir predicts is what the lookup gives, and nothing is created by asking */
	size_t count = node_table_count(t);
	uint64_t want = node_ino_predict(t, rev->ino, "later", OID_A);
	CHECK(want >= NODE_INO_MIN);
	CHECK_EQ_INT(node_table_count(t), count);
	CHECK_EQ_INT(node_ino_predict(t, rev->ino, "later", OID_A), want);
	CHECK(node_ino_predict(t, rev->ino, "later", OID_B) != want);
	a = (struct node_attrs){.kind = NODE_FILE, .oid = OID_A, .git_mode = 0100644};
	CHECK_EQ_INT(node_lookup(t, rev, "later", &a, &f), 0);
	CHECK_EQ_INT(f->ino, want);
	CHECK_EQ_INT(node_ino_predict(t, rev->ino, "later", OID_A), want);

	/* the revision roots of a branch, for invalidation when it moves */
	struct node_rev *revs;
	size_t nrevs;
	struct node *other = make_rev(t, OID_A);
	CHECK_EQ_INT(node_branch_revs(t, 7, "master", &revs, &nrevs), 0);
	CHECK_EQ_INT(nrevs, 2);
	for (size_t i = 0; i < nrevs; i++) {
		CHECK_EQ_STR(revs[i].name, "master");
		CHECK_EQ_INT(revs[i].parent, rev->parent->ino);
		CHECK(revs[i].ino == rev->ino || revs[i].ino == other->ino);
		CHECK_EQ_STR(revs[i].commit, revs[i].ino == rev->ino ? OID_B : OID_A);
	}
	free(revs);
	CHECK_EQ_INT(node_branch_revs(t, 8, "master", &revs, &nrevs), 0);
	CHECK_EQ_INT(nrevs, 0);
	free(revs);

	/* LFS files carry their object id; the files under a directory can be collected */
	struct node *sub, *lf;
	uint64_t *inos;
	size_t ninos;
	a = (struct node_attrs){.kind = NODE_TREE, .oid = OID_B, .path = "d", .tree = OID_B};
	CHECK_EQ_INT(node_lookup(t, rev, "d", &a, &sub), 0);
	a = (struct node_attrs){.kind = NODE_FILE,
	                        .oid = OID_A,
	                        .path = "d/big",
	                        .git_mode = 0100644,
	                        .size = 1 << 30,
	                        .lfs_oid = LFS_OID};
	CHECK_EQ_INT(node_lookup(t, sub, "big", &a, &lf), 0);
	CHECK_EQ_STR(lf->lfs_oid, LFS_OID);
	CHECK(f->lfs_oid == NULL);
	CHECK_EQ_INT(node_collect_under(t, sub->ino, NODE_FILE, &inos, &ninos), 0);
	CHECK_EQ_INT(ninos, 1);
	CHECK_EQ_INT(inos[0], lf->ino);
	free(inos);
	CHECK_EQ_INT(node_collect_under(t, rev->ino, NODE_FILE, &inos, &ninos), 0);
	CHECK_EQ_INT(ninos, 2); /* "later" and d/big */
	free(inos);

	node_table_free(t);
}

static void test_many(void)
{
	struct node_table *t;
	struct node *rev, *n;
	char name[32];
	int i;

	CHECK_EQ_INT(node_table_new(&t), 0);
	rev = make_rev(t, OID_A);
	for (i = 0; i < 20000; i++) {
		struct node_attrs a = {.kind = NODE_FILE, .oid = OID_B, .git_mode = 0100644};

		snprintf(name, sizeof(name), "f%d", i);
		CHECK_EQ_INT(node_lookup(t, rev, name, &a, &n), 0);
	}
	CHECK_EQ_INT(node_table_count(t), 20006);
	for (i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		uint64_t ino = node_find_ino(t, rev->ino, name, OID_B);
		CHECK(ino != 0);
		n = node_get(t, ino);
		CHECK(n && strcmp(n->name, name) == 0);
		node_put(t, n);
		if (i % 2)
			node_forget(t, ino, 1);
	}
	CHECK_EQ_INT(node_table_count(t), 10006);
	node_table_free(t);
}

struct thr {
	struct node_table *t;
	struct node *rev;
};

static void *hammer(void *arg)
{
	struct thr *h = arg;
	char name[32];
	int i;

	for (i = 0; i < 20000; i++) {
		struct node_attrs a = {.kind = NODE_FILE, .oid = OID_B, .git_mode = 0100644};
		struct node *n;

		snprintf(name, sizeof(name), "f%d", i % 50);
		CHECK_EQ_INT(node_lookup(h->t, h->rev, name, &a, &n), 0);
		struct node *p = node_get(h->t, n->ino);
		CHECK(p == n);
		node_put(h->t, p);
		node_forget(h->t, n->ino, 1);
	}
	return NULL;
}

static void test_threads(void)
{
	struct thr h;
	pthread_t th[4];
	int i;

	CHECK_EQ_INT(node_table_new(&h.t), 0);
	h.rev = make_rev(h.t, OID_A);
	for (i = 0; i < 4; i++)
		CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer, &h), 0);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	/* every lookup was forgotten: only root, .reef and the chain to the revision */
	CHECK_EQ_INT(node_table_count(h.t), 6);
	node_table_free(h.t);
}

static void test_listing(void)
{
	struct tree_entry e[3] = {0};
	struct node_listing *l;
	struct node_table *t;
	struct node *rev;

	snprintf(e[0].name, sizeof(e[0].name), "zeta");
	e[0].mode = TREE_MODE_FILE;
	e[0].size = 3;
	snprintf(e[0].oid, sizeof(e[0].oid), "%s", OID_A);
	snprintf(e[1].name, sizeof(e[1].name), "alpha dir");
	e[1].mode = TREE_MODE_DIR;
	e[1].size = -1;
	snprintf(e[1].oid, sizeof(e[1].oid), "%s", OID_B);
	snprintf(e[2].name, sizeof(e[2].name), "caf\xc3\xa9");
	e[2].mode = TREE_MODE_LINK;
	e[2].size = 5;
	CHECK_EQ_INT(node_listing_new(&l, e, 3), 0);
	CHECK_EQ_INT(l->n, 3);
	CHECK_EQ_STR(l->e[0].name, "alpha dir");
	CHECK_EQ_STR(l->e[2].name, "zeta");
	CHECK(node_listing_find(l, "zeta")->size == 3);
	CHECK_EQ_STR(node_listing_find(l, "alpha dir")->oid, OID_B);
	CHECK(node_listing_find(l, "caf\xc3\xa9")->mode == TREE_MODE_LINK);
	CHECK(node_listing_find(l, "nope") == NULL);

	CHECK_EQ_INT(node_table_new(&t), 0);
	rev = make_rev(t, OID_A);
	CHECK(node_listing_get(t, rev) == NULL);
	CHECK(node_listing_set(t, rev, l) == l);
	struct node_listing *l2;
	CHECK_EQ_INT(node_listing_new(&l2, e, 1), 0);
	CHECK(node_listing_set(t, rev, l2) == l); /* first one wins, second freed */
	CHECK(node_listing_get(t, rev) == l);

	/* An entry of the listing shares its name and id with it; a node of another id under
	 * the same name copies its own. The listing outlives its children. */
	struct node *z, *z2, *sub;
	struct node_attrs za = {.kind = NODE_FILE, .oid = OID_A, .path = "zeta", .size = 3};
	const struct node_dirent *zd = node_listing_find(l, "zeta");
	CHECK_EQ_INT(node_lookup(t, rev, "zeta", &za, &z), 0);
	CHECK(z->name == zd->name && z->oid == zd->oid);
	CHECK_EQ_STR(z->path, "zeta");
	CHECK(z->commit == rev->commit); /* inherited: shared with the revision root */
	CHECK_EQ_STR(z->tree, "");
	za.oid = OID_B;
	CHECK_EQ_INT(node_lookup(t, rev, "zeta", &za, &z2), 0);
	CHECK(z2 != z && z2->name != zd->name);
	CHECK_EQ_STR(z2->name, "zeta");
	CHECK_EQ_STR(z2->oid, OID_B);
	struct node_attrs sa = {
	    .kind = NODE_TREE, .oid = OID_B, .path = "alpha dir", .tree = OID_B};
	CHECK_EQ_INT(node_lookup(t, rev, "alpha dir", &sa, &sub), 0);
	CHECK(sub->tree == sub->oid);
	CHECK_EQ_STR(sub->tree, OID_B);
	uint64_t rev_ino = rev->ino, z_ino = z->ino;
	size_t before = node_table_count(t);
	node_forget(t, rev_ino, 1); /* the kernel forgot the revision root: its children hold it */
	CHECK(exists(t, rev_ino));
	node_forget(t, z2->ino, 1);
	node_forget(t, sub->ino, 1);
	CHECK_EQ_INT(node_table_count(t), before - 2);
	CHECK_EQ_STR(z->name, "zeta"); /* still readable: the parent's listing is alive */
	node_forget(t, z_ino, 1);
	CHECK(!exists(t, z_ino));
	CHECK(!exists(t, rev_ino)); /* freed once the last child went */
	/* looked up again with the same key: same number, and its listing back, with the
	 * verdicts memoized on its entries */
	struct node *rev2 = make_rev(t, OID_A);
	CHECK_EQ_INT(rev2->ino, rev_ino);
	CHECK(node_listing_get(t, rev2) == l);
	/* another commit under the same name is another key: no listing */
	struct node *rev3 = make_rev(t, OID_B);
	CHECK(rev3->ino != rev_ino);
	CHECK(node_listing_get(t, rev3) == NULL);
	CHECK(l->e[0].shown == -1);
	node_table_free(t);

	/* empty, duplicate and bad names */
	CHECK_EQ_INT(node_listing_new(&l, e, 0), 0);
	CHECK(node_listing_find(l, "a") == NULL);
	node_listing_free(l);
	snprintf(e[1].name, sizeof(e[1].name), "zeta");
	CHECK_EQ_INT(node_listing_new(&l, e, 2), -EINVAL);
	snprintf(e[1].name, sizeof(e[1].name), "a/b");
	CHECK_EQ_INT(node_listing_new(&l, e, 2), -EINVAL);
	node_listing_free(NULL);
	node_table_free(NULL);
}

int main(void)
{
	test_names();
	test_child_kind();
	test_children();
	test_modes();
	test_table();
	test_many();
	test_threads();
	test_listing();
	printf("node: ok\n");
	return 0;
}
