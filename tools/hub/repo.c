/* Repository routes of reef-hub: /api/v4/projects/:id/repository/... over libgit2.
 * This file routes requests and serves branches and tags; the helpers shared by the
 * other repo_*.c modules live here too. Every read goes through libgit2 objects: no
 * user-supplied path ever reaches the filesystem. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "protect.h"
#include "repo_int.h"

#define REPO_MAX_REFS 1000000 /* branches or tags listed per request */

static pthread_once_t repo_git_once = PTHREAD_ONCE_INIT;

/* The core initialises libgit2 too; the count is shared, and we never shut it down
 * from a request thread while others use it. */
static void repo_git_init(void)
{
	git_libgit2_init();
	/* libgit2 caches no tree above 4 KiB by default: a directory of a hundred entries
	 * was parsed again on every step of a history walk or tree listing. */
	git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_TREE, (size_t)1 << 20);
	git_libgit2_opts(GIT_OPT_SET_CACHE_OBJECT_LIMIT, GIT_OBJECT_COMMIT, (size_t)64 << 10);
}

/* Open repositories are pooled: a fresh handle has cold object, delta-base and pack
 * caches, which made every tree or history request pay to inflate the same objects
 * again. A handle serves one request at a time (libgit2 objects are not for concurrent
 * use); staleness is not a concern because libgit2 re-reads refs from disk and rescans
 * packs when an object is missing. A slot remembers the directory's device and inode
 * so a project recreated at the same path gets a new handle. */
#define REPO_POOL_SIZE 16

struct repo_slot {
	git_repository *repo;
	char path[PATH_MAX];
	dev_t dev;
	ino_t ino;
	bool busy;
	uint64_t used;
};

static struct repo_slot repo_pool[REPO_POOL_SIZE];
static pthread_mutex_t repo_pool_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t repo_pool_clock;

int repo_open(const struct hub_project *p, git_repository **out, int *slot)
{
	struct repo_slot *victim = NULL;
	git_repository *stale = NULL;
	struct stat st;
	int r, i;

	pthread_once(&repo_git_once, repo_git_init);
	*out = NULL;
	*slot = -1;
	if (stat(p->repo_path, &st) < 0)
		return -errno;
	pthread_mutex_lock(&repo_pool_lock);
	for (i = 0; i < REPO_POOL_SIZE; i++) {
		struct repo_slot *s = &repo_pool[i];

		if (s->repo && !s->busy && s->dev == st.st_dev && s->ino == st.st_ino &&
		    !strcmp(s->path, p->repo_path)) {
			s->busy = true;
			s->used = ++repo_pool_clock;
			*out = s->repo;
			*slot = i;
			pthread_mutex_unlock(&repo_pool_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&repo_pool_lock);

	r = git_repository_open_ext(out, p->repo_path,
	                            GIT_REPOSITORY_OPEN_NO_SEARCH | GIT_REPOSITORY_OPEN_BARE, NULL);
	if (r < 0)
		return r == GIT_ENOTFOUND ? -ENOENT : -EIO;

	/* Keep it in a free slot, or in place of the least recently used idle one. */
	pthread_mutex_lock(&repo_pool_lock);
	for (i = 0; i < REPO_POOL_SIZE; i++) {
		struct repo_slot *s = &repo_pool[i];

		if (s->busy)
			continue;
		if (!s->repo) {
			victim = s;
			break;
		}
		if (!victim || s->used < victim->used)
			victim = s;
	}
	if (victim && strlen(p->repo_path) < sizeof victim->path) {
		stale = victim->repo;
		victim->repo = *out;
		snprintf(victim->path, sizeof victim->path, "%s", p->repo_path);
		victim->dev = st.st_dev;
		victim->ino = st.st_ino;
		victim->busy = true;
		victim->used = ++repo_pool_clock;
		*slot = (int)(victim - repo_pool);
	}
	pthread_mutex_unlock(&repo_pool_lock);
	git_repository_free(stale);
	return 0;
}

void repo_release(git_repository *repo, int slot)
{
	if (!repo)
		return;
	if (slot < 0) {
		git_repository_free(repo);
		return;
	}
	pthread_mutex_lock(&repo_pool_lock);
	repo_pool[slot].busy = false;
	pthread_mutex_unlock(&repo_pool_lock);
}

void repo_fail(struct repo_ctx *c, const char *what)
{
	const git_error *e = git_error_last();

	log_error("repository %s: %s: %s", c->p->path_with_namespace, what,
	          e && e->message ? e->message : "failed");
	hub_resp_error(c->resp, 500, "500 Internal Server Error");
}

void repo_resp_room(struct repo_ctx *c, size_t len)
{
	size_t want = len + (64 << 10);

	if (c->resp->body.cap < want)
		c->resp->body.cap = want;
}

void repo_bad_param(struct repo_ctx *c, const char *msg)
{
	hub_resp_json(c->resp, 400, json_pack("{s:s}", "error", msg));
}

bool repo_can_write(struct repo_ctx *c)
{
	if (!c->req->user) {
		hub_resp_error(c->resp, 401, "401 Unauthorized");
		return false;
	}
	if (c->p->access < HUB_ACCESS_DEVELOPER) {
		hub_resp_error(c->resp, 403, "403 Forbidden");
		return false;
	}
	return true;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 when invalid. Rejects
 * overlong forms, surrogates and code points above U+10FFFF, as jansson does. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

json_t *repo_jstrn(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	struct buf b = BUF_INIT(len * 3 + 16);
	json_t *v;
	size_t i = 0, n;
	bool clean = true;

	for (i = 0; i < len; i += n) {
		n = u[i] ? utf8_seq(u + i, len - i) : 0;
		if (!n) {
			clean = false;
			break;
		}
	}
	if (clean)
		return json_stringn(s, len);
	/* Git stores bytes; GitLab shows undecodable ones as U+FFFD too. */
	for (i = 0; i < len; i += n) {
		n = u[i] ? utf8_seq(u + i, len - i) : 0;
		if (n)
			buf_append(&b, s + i, n);
		else {
			buf_append(&b, "\xef\xbf\xbd", 3);
			n = 1;
		}
	}
	v = json_stringn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return v;
}

json_t *repo_jstr(const char *s)
{
	return s ? repo_jstrn(s, strlen(s)) : json_null();
}

bool repo_bool(const char *v)
{
	return v && (!strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "yes"));
}

static size_t parse_count(const char *s, size_t fallback, size_t max)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || !isdigit((unsigned char)*s))
		return fallback;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v == 0)
		return fallback;
	return v > max ? max : (size_t)v;
}

void repo_page_params(const struct hub_req *req, size_t *page, size_t *per_page)
{
	*page = parse_count(hub_req_query(req, "page"), 1, 1000000000);
	*per_page = parse_count(hub_req_query(req, "per_page"), 20, HUB_MAX_PER_PAGE);
}

static void page_link(struct repo_ctx *c, struct buf *link, size_t page, const char *rel)
{
	struct buf url = BUF_INIT(0);
	char num[32];

	snprintf(num, sizeof num, "%zu", page);
	if (hub_req_link(c->req, "page", num, &url) == 0)
		buf_printf(link, "%s<%s>; rel=\"%s\"", link->len ? ", " : "", url.data, rel);
	buf_free(&url);
}

void repo_page_headers(struct repo_ctx *c, size_t page, size_t per_page, bool has_next)
{
	struct buf link = BUF_INIT(0);
	char v[32];

	snprintf(v, sizeof v, "%zu", page);
	hub_resp_header(c->resp, "X-Page", v);
	snprintf(v, sizeof v, "%zu", per_page);
	hub_resp_header(c->resp, "X-Per-Page", v);
	if (has_next)
		snprintf(v, sizeof v, "%zu", page + 1);
	else
		v[0] = '\0';
	hub_resp_header(c->resp, "X-Next-Page", v);
	if (page > 1)
		snprintf(v, sizeof v, "%zu", page - 1);
	else
		v[0] = '\0';
	hub_resp_header(c->resp, "X-Prev-Page", v);
	if (page > 1)
		page_link(c, &link, page - 1, "prev");
	if (has_next)
		page_link(c, &link, page + 1, "next");
	page_link(c, &link, 1, "first");
	if (link.len)
		hub_resp_header(c->resp, "Link", link.data);
	buf_free(&link);
}

char *repo_segment(const char *seg, size_t len)
{
	char *s = strndup(seg, len);

	if (!s)
		return NULL;
	if (url_decode(s, s, false) < 0) {
		free(s);
		return NULL;
	}
	return s;
}

static bool branch_exists(git_repository *repo, const char *name)
{
	git_reference *ref = NULL;
	char full[512];
	bool ok;

	if (snprintf(full, sizeof full, "refs/heads/%s", name) >= (int)sizeof full)
		return false;
	ok = git_reference_lookup(&ref, repo, full) == 0;
	git_reference_free(ref);
	return ok;
}

int repo_default_branch(git_repository *repo, char **out)
{
	git_reference *head = NULL;
	git_branch_iterator *it = NULL;
	git_reference *ref;
	git_branch_t type;
	const char *target;
	char *best = NULL;
	int r = 0;

	*out = NULL;
	if (git_reference_lookup(&head, repo, "HEAD") == 0 &&
	    git_reference_type(head) == GIT_REFERENCE_SYMBOLIC) {
		target = git_reference_symbolic_target(head);
		if (!strncmp(target, "refs/heads/", 11) && branch_exists(repo, target + 11)) {
			*out = strdup(target + 11);
			r = *out ? 0 : -ENOMEM;
			goto out;
		}
	}
	/* HEAD names an unborn branch while others exist (a first push of another name):
	 * GitLab would have made the first pushed branch the default; pick a stable one. */
	if (branch_exists(repo, "main") || branch_exists(repo, "master")) {
		*out = strdup(branch_exists(repo, "main") ? "main" : "master");
		r = *out ? 0 : -ENOMEM;
		goto out;
	}
	if (git_branch_iterator_new(&it, repo, GIT_BRANCH_LOCAL) < 0)
		goto out;
	while (git_branch_next(&ref, &type, it) == 0) {
		const char *name = git_reference_shorthand(ref);

		if (!best || strcmp(name, best) < 0) {
			free(best);
			best = strdup(name);
		}
		git_reference_free(ref);
	}
	*out = best;
out:
	git_branch_iterator_free(it);
	git_reference_free(head);
	return r;
}

static bool is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static int peel_commit(git_object *obj, git_commit **out)
{
	git_object *peeled = NULL;
	int r = git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT);

	git_object_free(obj);
	if (r < 0)
		return -ENOENT;
	*out = (git_commit *)peeled;
	return 0;
}

/* A full or abbreviated id of a commit or of a tag pointing at one. The type is read
 * from the object header first, so naming a huge blob costs nothing. */
static int lookup_id(git_repository *repo, const char *hex, size_t len, git_commit **out)
{
	git_odb *odb = NULL;
	git_object *obj = NULL;
	git_oid prefix, id;
	git_object_t type = GIT_OBJECT_INVALID;
	size_t size;
	int r = -ENOENT;

	if (git_oid_fromstrn(&prefix, hex, len) < 0 || git_repository_odb(&odb, repo) < 0)
		return -ENOENT;
	/* missing or ambiguous: both are "not found" */
	if (git_odb_exists_prefix(&id, odb, &prefix, len) == 0 &&
	    git_odb_read_header(&size, &type, odb, &id) == 0 &&
	    (type == GIT_OBJECT_COMMIT || type == GIT_OBJECT_TAG) &&
	    git_object_lookup(&obj, repo, &id, GIT_OBJECT_ANY) == 0)
		r = peel_commit(obj, out);
	git_odb_free(odb);
	return r;
}

/* A name without revision suffixes: an id, an abbreviation, "HEAD" or a ref name. */
static int resolve_base(git_repository *repo, const char *name, git_commit **out)
{
	size_t len = strlen(name);
	git_reference *ref = NULL;
	git_object *obj = NULL;
	char full[1024];
	int valid = 0, r;

	if (len == GIT_OID_HEXSZ && is_hex(name, len))
		return lookup_id(repo, name, len, out);
	if (!strcmp(name, "HEAD")) {
		char *def = NULL;

		if (repo_default_branch(repo, &def) < 0 || !def)
			return -ENOENT;
		r = snprintf(full, sizeof full, "refs/heads/%s", def);
		free(def);
		if (r >= (int)sizeof full || git_reference_lookup(&ref, repo, full) < 0)
			return -ENOENT;
		goto peel_ref;
	}
	/* Validate before libgit2 maps the name onto loose ref files. */
	if (len < 900 && snprintf(full, sizeof full, "refs/heads/%s", name) > 0 &&
	    git_reference_name_is_valid(&valid, full) == 0 && valid &&
	    git_reference_dwim(&ref, repo, name) == 0)
		goto peel_ref;
	if (len >= 4 && len < GIT_OID_HEXSZ && is_hex(name, len))
		return lookup_id(repo, name, len, out);
	return -ENOENT;
peel_ref:
	r = git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT);
	git_reference_free(ref);
	if (r < 0)
		return -ENOENT;
	*out = (git_commit *)obj;
	return 0;
}

int repo_resolve_commit(git_repository *repo, const char *name, git_commit **out)
{
	const char *suffix;
	git_commit *cm = NULL, *next;
	char *base;
	int r;

	*out = NULL;
	if (!name || !*name || strlen(name) > 1024)
		return -ENOENT;
	/* Only the ~N and ^N revision suffixes are understood: the rest of git's revision
	 * syntax (reflogs, :path, searches) has no use here. */
	suffix = name + strcspn(name, "~^");
	base = strndup(name, (size_t)(suffix - name));
	if (!base)
		return -ENOMEM;
	r = resolve_base(repo, base, &cm);
	free(base);
	while (r == 0 && *suffix) {
		char op = *suffix++;
		unsigned long n = 1;
		char *end;

		if (op != '~' && op != '^') {
			r = -ENOENT; /* e.g. main^{tree}: not a commit name */
			break;
		}

		if (isdigit((unsigned char)*suffix)) {
			n = strtoul(suffix, &end, 10);
			suffix = end;
			if (n > 100000) {
				r = -ENOENT;
				break;
			}
		}
		if (op == '^') {
			if (n == 0)
				continue;
			if (git_commit_parent(&next, cm, (unsigned)n - 1) < 0) {
				r = -ENOENT;
				break;
			}
			git_commit_free(cm);
			cm = next;
			continue;
		}
		while (n-- > 0) {
			if (git_commit_parent(&next, cm, 0) < 0) {
				r = -ENOENT;
				break;
			}
			git_commit_free(cm);
			cm = next;
		}
	}
	if (r < 0) {
		git_commit_free(cm);
		return r;
	}
	*out = cm;
	return 0;
}

int repo_path_entry(const git_tree *tree, const char *path, git_oid *oid, uint32_t *mode)
{
	git_tree_entry *e = NULL;
	int r;

	memset(oid, 0, sizeof *oid);
	*mode = 0;
	if (!*path) {
		git_oid_cpy(oid, git_tree_id(tree));
		*mode = GIT_FILEMODE_TREE;
		return 0;
	}
	r = git_tree_entry_bypath(&e, tree, path);
	if (r == GIT_ENOTFOUND)
		return 0;
	if (r < 0)
		return -EIO;
	git_oid_cpy(oid, git_tree_entry_id(e));
	*mode = git_tree_entry_filemode_raw(e);
	git_tree_entry_free(e);
	return 0;
}

int repo_last_commit(git_repository *repo, const git_commit *start, const char *path,
                     unsigned max_steps, git_oid *out)
{
	git_commit *cm = NULL, *parent = NULL;
	git_tree *tree = NULL;
	git_oid id, pid;
	uint32_t mode, pmode;
	unsigned steps;
	int r = 0;

	git_oid_cpy(out, git_commit_id(start));
	if (git_commit_lookup(&cm, repo, git_commit_id(start)) < 0)
		return -EIO;
	if (git_commit_tree(&tree, cm) < 0 || repo_path_entry(tree, path, &id, &mode) < 0) {
		r = -EIO;
		goto out;
	}
	for (steps = 0; steps < max_steps; steps++) {
		unsigned n = git_commit_parentcount(cm), i;
		bool same = false;

		/* git log -1 -- path: a commit identical to one parent at path hands the
		 * search to that parent; one that differs from all parents changed it. */
		for (i = 0; i < n && !same; i++) {
			git_tree *ptree = NULL;

			if (git_commit_parent(&parent, cm, i) < 0 ||
			    git_commit_tree(&ptree, parent) < 0 ||
			    repo_path_entry(ptree, path, &pid, &pmode) < 0) {
				git_tree_free(ptree);
				r = -EIO;
				goto out;
			}
			git_tree_free(ptree);
			same = git_oid_equal(&id, &pid) && mode == pmode;
			if (!same) {
				git_commit_free(parent);
				parent = NULL;
			}
		}
		if (!same) {
			git_oid_cpy(out, git_commit_id(cm));
			goto out;
		}
		git_commit_free(cm);
		cm = parent;
		parent = NULL;
	}
	/* Bound reached: answer the starting commit rather than walk on. */
out:
	git_commit_free(parent);
	git_commit_free(cm);
	git_tree_free(tree);
	return r;
}

json_t *repo_web_url(struct repo_ctx *c, const char *kind, const char *name)
{
	struct buf b = BUF_INIT(0);
	json_t *v;

	buf_printf(&b, "%s/%s/-/%s/%s", c->req->hub->base_url, c->p->path_with_namespace, kind,
	           name);
	v = repo_jstrn(b.data ? b.data : "", b.len);
	buf_free(&b);
	return v;
}

/* The length in bytes of the first n UTF-8 characters of s (len bytes). */
static size_t utf8_prefix(const char *s, size_t len, size_t n)
{
	size_t i = 0;

	while (i < len && n > 0) {
		i++;
		while (i < len && ((unsigned char)s[i] & 0xc0) == 0x80)
			i++;
		n--;
	}
	return i;
}

static size_t utf8_count(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xc0) != 0x80;
	return n;
}

/* GitLab's Commit#title: the first line, truncated like Rails'
 * truncate(81, separator: ' ', omission: '…') when it is 100 characters or longer. */
static json_t *commit_title(const char *msg)
{
	size_t len = strcspn(msg, "\r\n"), cut;
	struct buf b = BUF_INIT(0);
	json_t *v;

	if (utf8_count(msg, len) < 100)
		return repo_jstrn(msg, len);
	cut = utf8_prefix(msg, len, 80);
	for (size_t i = cut + (cut < len && msg[cut] == ' ' ? 1 : 0); i > 0; i--) {
		if (msg[i - 1] == ' ') {
			cut = i - 1;
			break;
		}
	}
	buf_append(&b, msg, cut);
	buf_puts(&b, "\xe2\x80\xa6");
	v = repo_jstrn(b.data, b.len);
	buf_free(&b);
	return v;
}

json_t *repo_commit_json(struct repo_ctx *c, const git_commit *cm)
{
	const git_signature *a = git_commit_author(cm), *m = git_commit_committer(cm);
	const char *msg = git_commit_message(cm);
	char id[GIT_OID_HEXSZ + 1], ad[40], cd[40];
	json_t *parents = json_array(), *j;
	unsigned n = git_commit_parentcount(cm);

	git_oid_tostr(id, sizeof id, git_commit_id(cm));
	for (unsigned i = 0; i < n; i++) {
		char pid[GIT_OID_HEXSZ + 1];

		git_oid_tostr(pid, sizeof pid, git_commit_parent_id(cm, i));
		json_array_append_new(parents, json_string(pid));
	}
	hub_time_git(a->when.time, a->when.offset, ad);
	hub_time_git(m->when.time, m->when.offset, cd);
	if (!msg)
		msg = "";
	j = json_pack("{s:s, s:s%, s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:s, s:{}, "
	              "s:{}, s:o}",
	              "id", id, "short_id", id, (size_t)8, "created_at", cd, "parent_ids", parents,
	              "title", commit_title(msg), "message", repo_jstr(msg), "author_name",
	              repo_jstr(a->name), "author_email", repo_jstr(a->email), "authored_date", ad,
	              "committer_name", repo_jstr(m->name), "committer_email", repo_jstr(m->email),
	              "committed_date", cd, "trailers", "extended_trailers", "web_url",
	              repo_web_url(c, "commit", id));
	return j ? j : json_object();
}

int repo_commit_stats(struct repo_ctx *c, const git_commit *cm, json_t *out)
{
	git_diff_options opts;
	git_commit *parent = NULL;
	git_tree *tree = NULL, *ptree = NULL;
	git_diff *diff = NULL;
	git_diff_stats *stats = NULL;
	size_t add, del;
	int r = -EIO;

	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	/* Bounds the work a huge blob would cost: above this it counts as binary. */
	opts.max_size = REPO_MAX_DIFF_BLOB;
	if (git_commit_tree(&tree, cm) < 0)
		goto out;
	if (git_commit_parentcount(cm) > 0 &&
	    (git_commit_parent(&parent, cm, 0) < 0 || git_commit_tree(&ptree, parent) < 0))
		goto out;
	if (git_diff_tree_to_tree(&diff, c->repo, ptree, tree, &opts) < 0 ||
	    git_diff_get_stats(&stats, diff) < 0)
		goto out;
	add = git_diff_stats_insertions(stats);
	del = git_diff_stats_deletions(stats);
	json_object_set_new(out, "stats",
	                    json_pack("{s:I, s:I, s:I}", "additions", (json_int_t)add, "deletions",
	                              (json_int_t)del, "total", (json_int_t)(add + del)));
	r = 0;
out:
	git_diff_stats_free(stats);
	git_diff_free(diff);
	git_tree_free(ptree);
	git_tree_free(tree);
	git_commit_free(parent);
	return r;
}

/* --- branches --- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* GitLab's ref search: "^pre" anchors at the start, "suf$" at the end, otherwise a
 * substring; case-insensitive. */
static bool name_matches(const char *name, const char *search)
{
	size_t n = strlen(name), s;
	bool head, tail;
	char *pat;
	bool ok;

	if (!search || !*search)
		return true;
	head = search[0] == '^';
	if (head)
		search++;
	s = strlen(search);
	tail = s > 0 && search[s - 1] == '$';
	if (tail)
		s--;
	if (head && tail)
		return n == s && !strncasecmp(name, search, s);
	if (head)
		return n >= s && !strncasecmp(name, search, s);
	if (tail)
		return n >= s && !strncasecmp(name + n - s, search, s);
	pat = strndup(search, s);
	ok = pat && strcasestr(name, pat) != NULL;
	free(pat);
	return ok;
}

const char *repo_protect_check(struct repo_ctx *c, const char *branch, bool deletion)
{
	char *def = NULL;
	const char *msg;

	repo_default_branch(c->repo, &def);
	if (!def) {
		/* an empty repository: its default branch is HEAD's target */
		git_reference *head = NULL;

		if (git_reference_lookup(&head, c->repo, "HEAD") == 0 &&
		    git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
		    !strncmp(git_reference_symbolic_target(head), "refs/heads/", 11))
			def = strdup(git_reference_symbolic_target(head) + 11);
		git_reference_free(head);
		msg = hub_protect_check(c->req->hub, c->p, c->req->user, c->p->access, branch, def,
		                        true, deletion, false, true);
	} else {
		msg = hub_protect_check(c->req->hub, c->p, c->req->user, c->p->access, branch, def,
		                        false, deletion, false, true);
	}
	free(def);
	return msg;
}

static json_t *branch_json(struct repo_ctx *c, const char *name, const char *def)
{
	struct hub_protection pr;
	bool prot;
	git_reference *ref = NULL;
	git_object *obj = NULL;
	char full[1024];
	json_t *commit = json_null();

	snprintf(full, sizeof full, "refs/heads/%s", name);
	if (git_reference_lookup(&ref, c->repo, full) == 0 &&
	    git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0) {
		json_decref(commit);
		commit = repo_commit_json(c, (git_commit *)obj);
	}
	git_object_free(obj);
	git_reference_free(ref);
	prot = hub_protect_match(c->req->hub, c->p->id, name, &pr) > 0;
	return json_pack("{s:o, s:o, s:b, s:b, s:b, s:b, s:b, s:b, s:o}", "name", repo_jstr(name),
	                 "commit", commit, "merged", 0, "protected", prot, "developers_can_push",
	                 prot && pr.push_level == HUB_ACCESS_DEVELOPER, "developers_can_merge",
	                 prot && pr.merge_level == HUB_ACCESS_DEVELOPER, "can_push",
	                 c->req->user && c->p->access >= HUB_ACCESS_DEVELOPER &&
	                     !repo_protect_check(c, name, false),
	                 "default", def && !strcmp(def, name), "web_url",
	                 repo_web_url(c, "tree", name));
}

static void branches_list(struct repo_ctx *c)
{
	const char *search = hub_req_query(c->req, "search");
	git_branch_iterator *it = NULL;
	git_reference *ref;
	git_branch_t type;
	char **names = NULL, *def = NULL;
	size_t n = 0, alloc = 0, off, lim;
	json_t *arr;

	if (git_branch_iterator_new(&it, c->repo, GIT_BRANCH_LOCAL) < 0) {
		repo_fail(c, "listing branches");
		return;
	}
	while (n < REPO_MAX_REFS && git_branch_next(&ref, &type, it) == 0) {
		const char *name = git_reference_shorthand(ref);

		if (name_matches(name, search)) {
			if (n == alloc) {
				size_t na = alloc ? alloc * 2 : 64;
				char **nn = realloc(names, na * sizeof *names);

				if (!nn) {
					git_reference_free(ref);
					break;
				}
				names = nn;
				alloc = na;
			}
			names[n] = strdup(name);
			if (names[n])
				n++;
		}
		git_reference_free(ref);
	}
	git_branch_iterator_free(it);
	if (n) /* qsort's array must not be NULL, even for zero items */
		qsort(names, n, sizeof *names, cmp_str);
	repo_default_branch(c->repo, &def);
	hub_paginate(c->req, c->resp, n, &off, &lim);
	arr = json_array();
	for (size_t i = off; i < n && i < off + lim; i++)
		json_array_append_new(arr, branch_json(c, names[i], def));
	hub_resp_json(c->resp, 200, arr);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(def);
}

static bool branch_name_valid(const char *name)
{
	char full[1024];
	int valid = 0;

	/* Gitlab::GitRefValidator (lib/gitlab/git_ref_validator.rb): EXPANDED_PREFIXES
	 * refs/heads/ and refs/remotes/, a leading '-' and HEAD are refused. */
	if (!*name || strlen(name) > 900 || name[0] == '-' || !strcmp(name, "HEAD") ||
	    !strncmp(name, "refs/heads/", 11) || !strncmp(name, "refs/remotes/", 13))
		return false;
	snprintf(full, sizeof full, "refs/heads/%s", name);
	return git_reference_name_is_valid(&valid, full) == 0 && valid;
}

static void branch_create(struct repo_ctx *c)
{
	json_t *params = NULL;
	const char *name, *refname;
	git_commit *cm = NULL;
	git_reference *ref = NULL;
	char *def = NULL, msg[1200];
	int r;

	if (!repo_can_write(c))
		return;
	if (hub_req_params(c->req, &params) < 0) {
		repo_bad_param(c, "The request body is not valid JSON");
		return;
	}
	name = jsonx_str(params, "branch");
	refname = jsonx_str(params, "ref");
	if (!name || !refname) {
		repo_bad_param(c, !name && !refname ? "branch is missing, ref is missing"
		                  : !name           ? "branch is missing"
		                                    : "ref is missing");
		goto out;
	}
	if (!branch_name_valid(name)) {
		hub_resp_error(c->resp, 400, "Branch name is invalid");
		goto out;
	}
	if (branch_exists(c->repo, name)) {
		hub_resp_error(c->resp, 400, "Branch already exists");
		goto out;
	}
	if (repo_resolve_commit(c->repo, refname, &cm) < 0) {
		snprintf(msg, sizeof msg, "Invalid reference name: %.1024s", refname);
		hub_resp_error(c->resp, 400, msg);
		goto out;
	}
	snprintf(msg, sizeof msg, "refs/heads/%s", name);
	r = git_reference_create(&ref, c->repo, msg, git_commit_id(cm), 0, "branch: Created");
	if (r == GIT_EEXISTS) {
		hub_resp_error(c->resp, 400, "Branch already exists");
		goto out;
	}
	if (r < 0) {
		repo_fail(c, "creating a branch");
		goto out;
	}
	repo_default_branch(c->repo, &def);
	hub_resp_json(c->resp, 201, branch_json(c, name, def));
out:
	free(def);
	git_reference_free(ref);
	git_commit_free(cm);
	json_decref(params);
}

static void branch_one(struct repo_ctx *c, const char *name)
{
	const char *m = c->req->method, *msg;
	git_reference *ref = NULL;
	char *def = NULL, full[1024];

	if (strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "DELETE")) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	if (!strcmp(m, "DELETE") && !repo_can_write(c))
		return;
	if (!branch_name_valid(name) || !branch_exists(c->repo, name)) {
		hub_resp_error(c->resp, 404, "404 Branch Not Found");
		return;
	}
	repo_default_branch(c->repo, &def);
	if (!strcmp(m, "HEAD")) {
		/* GitLab answers an existing branch's HEAD with 204 */
		hub_resp_raw(c->resp, 204, "application/json", "", 0);
	} else if (!strcmp(m, "GET")) {
		hub_resp_json(c->resp, 200, branch_json(c, name, def));
	} else if (def && !strcmp(def, name)) {
		hub_resp_error(c->resp, 405, "The default branch of a project cannot be deleted.");
	} else if ((msg = repo_protect_check(c, name, true))) {
		/* Branches::DeleteService answers a refused pre-receive check with 400 */
		hub_resp_error(c->resp, 400, msg);
	} else {
		snprintf(full, sizeof full, "refs/heads/%s", name);
		if (git_reference_lookup(&ref, c->repo, full) < 0 || git_reference_delete(ref) < 0)
			repo_fail(c, "deleting a branch");
		else
			hub_resp_raw(c->resp, 204, "application/json", "", 0);
	}
	git_reference_free(ref);
	free(def);
}

static void branches_route(struct repo_ctx *c, const char *rest)
{
	char *name;

	if (!rest) {
		if (!strcmp(c->req->method, "GET") || !strcmp(c->req->method, "HEAD"))
			branches_list(c);
		else if (!strcmp(c->req->method, "POST"))
			branch_create(c);
		else
			hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	/* GitLab wants the name encoded (%2F); a raw '/' is accepted too. */
	name = repo_segment(rest, strlen(rest));
	if (!name) {
		hub_resp_error(c->resp, 404, "404 Branch Not Found");
		return;
	}
	branch_one(c, name);
	free(name);
}

/* --- tags --- */

struct tag_item {
	char *name;
	int64_t time; /* the target commit's committer time, for order_by=updated */
};

static int cmp_tag_name(const void *a, const void *b)
{
	return strcmp(((const struct tag_item *)a)->name, ((const struct tag_item *)b)->name);
}

static int cmp_tag_time(const void *a, const void *b)
{
	const struct tag_item *x = a, *y = b;

	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Compares dotted numbers numerically ("v1.10" after "v1.9"), like a version sort. */
static int cmp_tag_version(const void *a, const void *b)
{
	const char *x = ((const struct tag_item *)a)->name, *y = ((const struct tag_item *)b)->name;

	return strverscmp(x, y);
}

static json_t *tag_json(struct repo_ctx *c, const char *name)
{
	git_reference *ref = NULL, *direct = NULL;
	git_object *target = NULL, *peeled = NULL;
	char full[1024], tid[GIT_OID_HEXSZ + 1], when[40];
	json_t *j = NULL, *commit = NULL, *msg = NULL, *created = NULL;

	snprintf(full, sizeof full, "refs/tags/%s", name);
	if (git_reference_lookup(&ref, c->repo, full) < 0 ||
	    git_reference_resolve(&direct, ref) < 0 ||
	    git_object_lookup(&target, c->repo, git_reference_target(direct), GIT_OBJECT_ANY) < 0)
		goto out;
	/* target is the tag object for an annotated tag, the commit for a lightweight one */
	git_oid_tostr(tid, sizeof tid, git_object_id(target));
	if (git_object_type(target) == GIT_OBJECT_TAG) {
		const git_tag *t = (const git_tag *)target;
		const git_signature *s = git_tag_tagger(t);

		msg = repo_jstr(git_tag_message(t) ? git_tag_message(t) : "");
		if (s) {
			hub_time_git(s->when.time, s->when.offset, when);
			created = json_string(when);
		}
	}
	if (git_object_peel(&peeled, target, GIT_OBJECT_COMMIT) == 0)
		commit = repo_commit_json(c, (git_commit *)peeled);
	j = json_pack("{s:o, s:o, s:s, s:o, s:n, s:b, s:o}", "name", repo_jstr(name), "message",
	              msg ? msg : json_string(""), "target", tid, "commit",
	              commit ? commit : json_null(), "release", "protected", 0, "created_at",
	              created ? created : json_null());
out:
	git_object_free(peeled);
	git_object_free(target);
	git_reference_free(direct);
	git_reference_free(ref);
	return j;
}

static void tags_list(struct repo_ctx *c)
{
	const char *search = hub_req_query(c->req, "search");
	const char *order = hub_req_query(c->req, "order_by");
	const char *sort = hub_req_query(c->req, "sort");
	git_reference_iterator *it = NULL;
	git_reference *ref;
	struct tag_item *items = NULL;
	size_t n = 0, alloc = 0, off, lim;
	bool asc = sort && !strcmp(sort, "asc");
	json_t *arr;

	if (order && strcmp(order, "name") && strcmp(order, "updated") &&
	    strcmp(order, "version")) {
		repo_bad_param(c, "order_by does not have a valid value");
		return;
	}
	if (sort && strcmp(sort, "asc") && strcmp(sort, "desc")) {
		repo_bad_param(c, "sort does not have a valid value");
		return;
	}
	/* A plain iterator and a prefix test: nested tags (release/1.0) must be listed
	 * whatever the glob's treatment of '/'. */
	if (git_reference_iterator_new(&it, c->repo) < 0) {
		repo_fail(c, "listing tags");
		return;
	}
	while (n < REPO_MAX_REFS && git_reference_next(&ref, it) == 0) {
		const char *full = git_reference_name(ref);
		bool is_tag = !strncmp(full, "refs/tags/", 10);
		const char *name = is_tag ? full + 10 : full;
		git_object *obj = NULL;

		if (is_tag && name_matches(name, search)) {
			if (n == alloc) {
				size_t na = alloc ? alloc * 2 : 64;
				struct tag_item *ni = realloc(items, na * sizeof *items);

				if (!ni) {
					git_reference_free(ref);
					break;
				}
				items = ni;
				alloc = na;
			}
			items[n].name = strdup(name);
			items[n].time = 0;
			if (git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0)
				items[n].time = git_commit_time((git_commit *)obj);
			git_object_free(obj);
			if (items[n].name)
				n++;
		}
		git_reference_free(ref);
	}
	git_reference_iterator_free(it);
	if (n)
		qsort(items, n, sizeof *items,
		      !order || !strcmp(order, "updated") ? cmp_tag_time
		      : !strcmp(order, "name")            ? cmp_tag_name
		                                          : cmp_tag_version);
	if (!asc) {
		for (size_t i = 0; i < n / 2; i++) {
			struct tag_item t = items[i];

			items[i] = items[n - 1 - i];
			items[n - 1 - i] = t;
		}
	}
	hub_paginate(c->req, c->resp, n, &off, &lim);
	arr = json_array();
	for (size_t i = off; i < n && i < off + lim; i++) {
		json_t *t = tag_json(c, items[i].name);

		if (t)
			json_array_append_new(arr, t);
	}
	hub_resp_json(c->resp, 200, arr);
	for (size_t i = 0; i < n; i++)
		free(items[i].name);
	free(items);
}

static void tags_route(struct repo_ctx *c, const char *rest)
{
	char *name;
	json_t *t = NULL;

	if (strcmp(c->req->method, "GET") && strcmp(c->req->method, "HEAD")) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	if (!rest) {
		tags_list(c);
		return;
	}
	name = repo_segment(rest, strlen(rest));
	if (name && branch_name_valid(name))
		t = tag_json(c, name);
	if (t)
		hub_resp_json(c->resp, 200, t);
	else
		hub_resp_error(c->resp, 404, "404 Tag Not Found");
	free(name);
}

/* --- entry points --- */

void hub_repo_route(struct hub_req *req, struct hub_resp *resp, const struct hub_project *p,
                    const char *rest)
{
	struct repo_ctx c = {.req = req, .resp = resp, .p = p, .repo = NULL};
	size_t n = strcspn(rest, "/");
	const char *sub = rest[n] == '/' && rest[n + 1] ? rest + n + 1 : NULL;
	int r, slot;

	r = repo_open(p, &c.repo, &slot);
	if (r < 0) {
		repo_fail(&c, "opening");
		return;
	}
	if (n == 8 && !strncmp(rest, "branches", n))
		branches_route(&c, sub);
	else if (n == 4 && !strncmp(rest, "tags", n))
		tags_route(&c, sub);
	else if (n == 7 && !strncmp(rest, "commits", n))
		repo_commits_route(&c, sub);
	else if (n == 4 && !strncmp(rest, "tree", n) && !sub)
		repo_tree_route(&c);
	else if (n == 5 && !strncmp(rest, "files", n) && sub)
		repo_files_route(&c, sub);
	else if (n == 5 && !strncmp(rest, "blobs", n) && sub)
		repo_blobs_route(&c, sub);
	else
		hub_resp_error(resp, 404, "404 Not Found");
	repo_release(c.repo, slot);
}

void hub_repo_project_fields(const struct hub_project *p, json_t *project_json)
{
	git_repository *repo = NULL;
	git_reference_iterator *it = NULL;
	git_reference *ref = NULL;
	char *def = NULL;
	bool empty = true;
	int slot;

	if (repo_open(p, &repo, &slot) == 0) {
		repo_default_branch(repo, &def);
		if (git_reference_iterator_new(&it, repo) == 0 && git_reference_next(&ref, it) == 0)
			empty = false;
	}
	json_object_set_new(project_json, "default_branch", def ? repo_jstr(def) : json_null());
	json_object_set_new(project_json, "empty_repo", json_boolean(empty));
	free(def);
	git_reference_free(ref);
	git_reference_iterator_free(it);
	repo_release(repo, slot);
}
