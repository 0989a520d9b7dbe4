/* GET /repository/tree: tree listings with legacy (offset), keyset and no pagination.
 *
 * Order, as GitLab (Gitaly's TREES_FIRST sort over `git ls-tree -r -t`): first every
 * tree entry, then every blob, then every submodule; inside each group, entries come in
 * git's pre-order (a directory before its contents, siblings in tree order). A listing
 * is produced by three passes of one pre-order walk, each emitting one kind, so no page
 * needs the whole listing in memory. A keyset page_token is the full path of the last
 * entry of the previous page: the walk seeks to it by descending along its components,
 * so a page costs its depth plus its entries, not the entries before it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reef/jsonx.h"
#include "reef/util.h"
#include "repo_int.h"

#define TREE_MAX_NONE_BODY ((size_t)512 << 20) /* pagination=none response */

enum tree_pass { PASS_TREE, PASS_BLOB, PASS_COMMIT, PASS_END };

struct tree_frame {
	git_tree *tree;
	size_t pos;
	char *prefix; /* path of this directory with a trailing '/', or "" at the root */
};

struct tree_walk {
	git_repository *repo;
	git_tree *base;
	const char *base_prefix; /* "" or "dir/sub/" */
	bool recursive;
	int pass;
	struct tree_frame *st;
	size_t depth, alloc;
	size_t visited;  /* entries visited in this pass, capped */
	struct buf path; /* path of the entry last returned */
	bool saw_commit; /* a submodule was seen: the third pass is needed */
	const git_tree_entry *entry;
};

static int entry_pass(const git_tree_entry *e)
{
	switch (git_tree_entry_type(e)) {
	case GIT_OBJECT_TREE:
		return PASS_TREE;
	case GIT_OBJECT_COMMIT:
		return PASS_COMMIT;
	default:
		return PASS_BLOB;
	}
}

static void walk_pop(struct tree_walk *w)
{
	struct tree_frame *f = &w->st[--w->depth];

	git_tree_free(f->tree);
	free(f->prefix);
}

static void walk_clear(struct tree_walk *w)
{
	while (w->depth)
		walk_pop(w);
}

static void walk_free(struct tree_walk *w)
{
	walk_clear(w);
	free(w->st);
	buf_free(&w->path);
}

/* Pushes the directory tree (owned by the frame afterwards) with the given prefix. */
static int walk_push(struct tree_walk *w, git_tree *tree, const char *prefix, size_t plen)
{
	struct tree_frame *f;

	if (w->depth == w->alloc) {
		size_t na = w->alloc ? w->alloc * 2 : 16;
		struct tree_frame *ns = realloc(w->st, na * sizeof *ns);

		if (!ns) {
			git_tree_free(tree);
			return -ENOMEM;
		}
		w->st = ns;
		w->alloc = na;
	}
	f = &w->st[w->depth];
	f->tree = tree;
	f->pos = 0;
	f->prefix = strndup(prefix, plen);
	if (!f->prefix) {
		git_tree_free(tree);
		return -ENOMEM;
	}
	w->depth++;
	return 0;
}

static int walk_start(struct tree_walk *w, int pass)
{
	git_tree *root = NULL;

	walk_clear(w);
	w->pass = pass;
	w->visited = 0;
	if (git_object_dup((git_object **)&root, (git_object *)w->base) < 0)
		return -ENOMEM;
	return walk_push(w, root, w->base_prefix, strlen(w->base_prefix));
}

/* Pushes the subtree e (path in w->path) so that its contents follow it. */
static int walk_descend(struct tree_walk *w, const git_tree_entry *e)
{
	git_tree *sub = NULL;
	int r;

	if (git_tree_lookup(&sub, w->repo, git_tree_entry_id(e)) < 0)
		return -EIO;
	if ((r = buf_puts(&w->path, "/")) < 0) {
		git_tree_free(sub);
		return r;
	}
	r = walk_push(w, sub, w->path.data, w->path.len);
	w->path.len--;
	w->path.data[w->path.len] = '\0';
	return r;
}

/* Advances to the next entry of the current pass (and the following passes). 1 with
 * w->entry and w->path set, 0 at the end, or a negative errno. */
static int walk_next(struct tree_walk *w)
{
	int r;

	for (;;) {
		struct tree_frame *f;
		const git_tree_entry *e;

		if (w->depth == 0) {
			int next = w->pass + 1;

			if (next == PASS_COMMIT && !w->saw_commit)
				next = PASS_END;
			if (next >= PASS_END)
				return 0;
			if ((r = walk_start(w, next)) < 0)
				return r;
			continue;
		}
		f = &w->st[w->depth - 1];
		if (f->pos >= git_tree_entrycount(f->tree)) {
			walk_pop(w);
			continue;
		}
		if (++w->visited > REPO_MAX_TREE_ENTRIES)
			return -EFBIG;
		e = git_tree_entry_byindex(f->tree, f->pos++);
		buf_reset(&w->path);
		if ((r = buf_puts(&w->path, f->prefix)) < 0 ||
		    (r = buf_puts(&w->path, git_tree_entry_name(e))) < 0)
			return r;
		if (entry_pass(e) == PASS_COMMIT)
			w->saw_commit = true;
		if (w->recursive && git_tree_entry_type(e) == GIT_OBJECT_TREE &&
		    (r = walk_descend(w, e)) < 0)
			return r;
		if (entry_pass(e) == w->pass) {
			w->entry = e;
			return 1;
		}
	}
}

/* Positions the walk just after the entry at token (a full path, as returned in a
 * previous page). -EINVAL when the token names nothing in this listing. */
static int walk_seek(struct tree_walk *w, const char *token)
{
	size_t blen = strlen(w->base_prefix);
	const char *rel, *comp;
	git_tree_entry *target = NULL;
	int r;

	if (strncmp(token, w->base_prefix, blen) || !path_is_safe(token + blen, HUB_MAX_PATH))
		return -EINVAL;
	rel = token + blen;
	if (!w->recursive && strchr(rel, '/'))
		return -EINVAL;
	if (git_tree_entry_bypath(&target, w->base, rel) < 0)
		return -EINVAL;
	/* The submodule pass runs only when the first pass saw one; a token in it proves
	 * there is one. */
	w->saw_commit = entry_pass(target) == PASS_COMMIT;
	if ((r = walk_start(w, entry_pass(target))) < 0)
		goto out;
	comp = rel;
	for (;;) {
		struct tree_frame *f = &w->st[w->depth - 1];
		size_t clen = strcspn(comp, "/"), i, n = git_tree_entrycount(f->tree);
		const git_tree_entry *e = NULL;

		for (i = 0; i < n; i++) {
			e = git_tree_entry_byindex(f->tree, i);
			if (strlen(git_tree_entry_name(e)) == clen &&
			    !memcmp(git_tree_entry_name(e), comp, clen))
				break;
		}
		if (i == n) {
			r = -EINVAL;
			goto out;
		}
		f->pos = i + 1;
		buf_reset(&w->path);
		if ((r = buf_puts(&w->path, f->prefix)) < 0 ||
		    (r = buf_append(&w->path, comp, clen)) < 0)
			goto out;
		/* Intermediate directories, and a token directory itself in a recursive
		 * walk, have their contents still to come. */
		if (comp[clen] == '/' ||
		    (w->recursive && git_tree_entry_type(e) == GIT_OBJECT_TREE))
			if ((r = walk_descend(w, e)) < 0)
				goto out;
		if (comp[clen] != '/')
			break;
		comp += clen + 1;
	}
	/* The submodule pass follows only when the first pass would have seen one. */
	if (w->pass < PASS_COMMIT)
		w->saw_commit = true;
	r = 0;
out:
	git_tree_entry_free(target);
	return r;
}

static json_t *entry_json(struct tree_walk *w, git_odb *odb)
{
	const git_tree_entry *e = w->entry;
	char id[GIT_OID_HEXSZ + 1], mode[16];
	const char *type;
	json_t *j;

	git_oid_tostr(id, sizeof id, git_tree_entry_id(e));
	snprintf(mode, sizeof mode, "%06o", (unsigned)git_tree_entry_filemode_raw(e));
	type = entry_pass(e) == PASS_TREE     ? "tree"
	       : entry_pass(e) == PASS_COMMIT ? "commit"
	                                      : "blob";
	j = json_pack("{s:s, s:o, s:s, s:o, s:s}", "id", id, "name",
	              repo_jstr(git_tree_entry_name(e)), "type", type, "path",
	              repo_jstrn(w->path.data, w->path.len), "mode", mode);
	if (j && entry_pass(e) == PASS_BLOB) {
		size_t size;
		git_object_t otype;

		/* Not GitLab's: reefd uses it to size files without fetching them. */
		if (git_odb_read_header(&size, &otype, odb, git_tree_entry_id(e)) == 0)
			json_object_set_new(j, "size", json_integer((json_int_t)size));
	}
	return j;
}

static void tree_too_big(struct repo_ctx *c)
{
	char msg[128];

	snprintf(msg, sizeof msg, "400 (Bad request) the tree has more than %d entries",
	         REPO_MAX_TREE_ENTRIES);
	hub_resp_error(c->resp, 400, msg);
}

static void tree_legacy(struct repo_ctx *c, struct tree_walk *w, git_odb *odb)
{
	size_t total = 0, off, lim, i = 0;
	json_t *arr;
	int r;

	/* A first walk counts for X-Total; the second collects the page. */
	while ((r = walk_next(w)) > 0)
		total++;
	if (r == 0)
		r = walk_start(w, PASS_TREE);
	if (r < 0) {
		if (r == -EFBIG)
			tree_too_big(c);
		else
			repo_fail(c, "walking a tree");
		return;
	}
	hub_paginate(c->req, c->resp, total, &off, &lim);
	arr = json_array();
	while (i < off + lim && (r = walk_next(w)) > 0) {
		if (i++ >= off)
			json_array_append_new(arr, entry_json(w, odb));
	}
	if (r < 0) {
		json_decref(arr);
		repo_fail(c, "walking a tree");
		return;
	}
	hub_resp_json(c->resp, 200, arr);
}

static void tree_keyset(struct repo_ctx *c, struct tree_walk *w, git_odb *odb)
{
	const char *token = hub_req_query(c->req, "page_token");
	size_t page, per_page, n = 0;
	struct buf link = BUF_INIT(0), url = BUF_INIT(0);
	char *last = NULL;
	json_t *arr;
	int r = 0;

	repo_page_params(c->req, &page, &per_page);
	if (token && *token && walk_seek(w, token) < 0) {
		hub_resp_error(c->resp, 400, "400 (Bad request) \"page_token\" is invalid");
		return;
	}
	arr = json_array();
	while (n < per_page && (r = walk_next(w)) > 0) {
		json_array_append_new(arr, entry_json(w, odb));
		n++;
	}
	if (r >= 0 && n == per_page) {
		last = strndup(w->path.data, w->path.len);
		/* Peek: a full last page gets no next link when nothing follows. */
		r = last ? walk_next(w) : -ENOMEM;
	} else if (r > 0) {
		r = 0;
	}
	if (r < 0) {
		json_decref(arr);
		if (r == -EFBIG)
			tree_too_big(c);
		else
			repo_fail(c, "walking a tree");
		goto out;
	}
	if (r > 0 && hub_req_link(c->req, "page_token", last, &url) == 0) {
		buf_printf(&link, "<%s>; rel=\"next\"", url.data);
		hub_resp_header(c->resp, "Link", link.data);
	}
	hub_resp_json(c->resp, 200, arr);
out:
	free(last);
	buf_free(&url);
	buf_free(&link);
}

static void tree_all(struct repo_ctx *c, struct tree_walk *w, git_odb *odb)
{
	struct buf body = BUF_INIT(TREE_MAX_NONE_BODY);
	bool first = true;
	int r = buf_puts(&body, "[");

	while (r >= 0 && (r = walk_next(w)) > 0) {
		json_t *j = entry_json(w, odb);
		char *s = j ? jsonx_dump(j) : NULL;

		json_decref(j);
		if (!s) {
			r = -ENOMEM;
			break;
		}
		if ((r = buf_puts(&body, first ? "" : ",")) == 0)
			r = buf_puts(&body, s);
		free(s);
		first = false;
	}
	if (r == 0)
		r = buf_puts(&body, "]");
	if (r == -EFBIG)
		tree_too_big(c);
	else if (r < 0)
		repo_fail(c, "walking a tree");
	else {
		repo_resp_room(c, body.len);
		hub_resp_raw(c->resp, 200, "application/json", body.data, body.len);
	}
	buf_free(&body);
}

void repo_tree_route(struct repo_ctx *c)
{
	const char *ref = hub_req_query(c->req, "ref");
	const char *qpath = hub_req_query(c->req, "path");
	const char *pagination = hub_req_query(c->req, "pagination");
	struct tree_walk w = {.path = BUF_INIT(HUB_MAX_PATH + 512)};
	git_commit *cm = NULL;
	git_tree *root = NULL, *base = NULL;
	git_tree_entry *e = NULL;
	git_odb *odb = NULL;
	char *def = NULL, *path = NULL, *prefix = NULL;
	size_t plen;

	if (strcmp(c->req->method, "GET") && strcmp(c->req->method, "HEAD")) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	w.recursive = repo_bool(hub_req_query(c->req, "recursive"));
	if (pagination && strcmp(pagination, "legacy") && strcmp(pagination, "keyset") &&
	    strcmp(pagination, "none")) {
		repo_bad_param(c, "pagination does not have a valid value");
		return;
	}
	if (pagination && !strcmp(pagination, "none") && !w.recursive) {
		repo_bad_param(c, "pagination=none is only allowed with recursive=true");
		return;
	}
	if (!ref || !*ref) {
		repo_default_branch(c->repo, &def);
		ref = def;
	}
	/* GitLab tolerates leading and trailing slashes in path. */
	path = strdup(qpath ? qpath + strspn(qpath, "/") : "");
	if (!path)
		goto fail;
	plen = strlen(path);
	while (plen && path[plen - 1] == '/')
		path[--plen] = '\0';
	if ((plen && !path_is_safe(path, HUB_MAX_PATH)) || !ref ||
	    repo_resolve_commit(c->repo, ref, &cm) < 0)
		goto not_found;
	if (git_commit_tree(&root, cm) < 0)
		goto fail;
	if (plen) {
		if (git_tree_entry_bypath(&e, root, path) < 0 ||
		    git_tree_entry_type(e) != GIT_OBJECT_TREE ||
		    git_tree_lookup(&base, c->repo, git_tree_entry_id(e)) < 0)
			goto not_found;
	} else {
		base = root;
		root = NULL;
	}
	if (asprintf(&prefix, "%s%s", path, plen ? "/" : "") < 0) {
		prefix = NULL;
		goto fail;
	}
	if (git_repository_odb(&odb, c->repo) < 0)
		goto fail;
	w.repo = c->repo;
	w.base = base;
	w.base_prefix = prefix;
	if (walk_start(&w, PASS_TREE) < 0)
		goto fail;
	if (!pagination || !strcmp(pagination, "legacy"))
		tree_legacy(c, &w, odb);
	else if (!strcmp(pagination, "keyset"))
		tree_keyset(c, &w, odb);
	else
		tree_all(c, &w, odb);
	goto out;
not_found:
	hub_resp_error(c->resp, 404, "404 Tree Not Found");
	goto out;
fail:
	repo_fail(c, "listing a tree");
out:
	walk_free(&w);
	git_odb_free(odb);
	git_tree_entry_free(e);
	git_tree_free(base);
	git_tree_free(root);
	git_commit_free(cm);
	free(prefix);
	free(path);
	free(def);
}
