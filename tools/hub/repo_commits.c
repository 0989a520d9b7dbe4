/* /repository/commits: one commit, the history list, and creating a commit from a list
 * of file actions (GitLab's "commits API with actions").
 *
 * A new commit is built in an in-memory index over the base tree, written as a tree,
 * committed, and the branch is moved with a compare-and-swap on its old value: a push
 * that lands in between makes the request fail (400) instead of losing either commit. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reef/jsonx.h"
#include "reef/util.h"
#include "repo_int.h"

/* --- one commit --- */

static json_t *commit_detail(struct repo_ctx *c, const git_commit *cm, bool stats)
{
	json_t *j = repo_commit_json(c, cm);

	if (stats && repo_commit_stats(c, cm, j) < 0) {
		json_decref(j);
		return NULL;
	}
	json_object_set_new(j, "status", json_null());
	json_object_set_new(j, "project_id", json_integer((json_int_t)c->p->id));
	json_object_set_new(j, "last_pipeline", json_null());
	return j;
}

static void commit_get(struct repo_ctx *c, const char *seg)
{
	const char *stats = hub_req_query(c->req, "stats");
	git_commit *cm = NULL;
	char *name = repo_segment(seg, strlen(seg));
	json_t *j;

	if (!name || repo_resolve_commit(c->repo, name, &cm) < 0) {
		hub_resp_error(c->resp, 404, "404 Commit Not Found");
		free(name);
		return;
	}
	j = commit_detail(c, cm, !stats || repo_bool(stats));
	if (j)
		hub_resp_json(c->resp, 200, j);
	else
		repo_fail(c, "computing commit stats");
	git_commit_free(cm);
	free(name);
}

/* --- history --- */

/* ISO 8601 as GitLab accepts it: a date, optionally a time with optional seconds,
 * fraction and zone (Z, +hh:mm, +hhmm; none means UTC). */
static int parse_iso8601(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int n = 0, off = 0;
	int64_t t;

	if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &n) != 3 || n != 10)
		return -EINVAL;
	s += n;
	if (*s == 'T' || *s == ' ') {
		s++;
		if (sscanf(s, "%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &n) != 2 || n != 5)
			return -EINVAL;
		s += n;
		if (*s == ':') {
			if (sscanf(s + 1, "%2d%n", &tm.tm_sec, &n) != 1 || n != 2)
				return -EINVAL;
			s += 3;
			if (*s == '.' || *s == ',') {
				s++;
				while (isdigit((unsigned char)*s))
					s++;
			}
		}
		if (*s == 'Z') {
			s++;
		} else if (*s == '+' || *s == '-') {
			int sign = *s == '-' ? -1 : 1, hh, mm = 0;

			if (sscanf(s + 1, "%2d%n", &hh, &n) != 1 || n != 2)
				return -EINVAL;
			s += 3;
			if (*s == ':')
				s++;
			if (isdigit((unsigned char)*s)) {
				if (sscanf(s, "%2d%n", &mm, &n) != 1 || n != 2)
					return -EINVAL;
				s += 2;
			}
			off = sign * (hh * 60 + mm);
		}
	}
	if (*s || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -EINVAL;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = (int64_t)timegm(&tm);
	*out = t - (int64_t)off * 60;
	return 0;
}

/* True when the commit changed path: it differs there from every parent (git's
 * TREESAME rule; a root commit changed every path it has). */
static int commit_touches(git_commit *cm, const char *path, bool *out)
{
	git_tree *tree = NULL;
	git_oid id, pid;
	uint32_t mode, pmode;
	unsigned n = git_commit_parentcount(cm);
	int r = -EIO;

	*out = false;
	if (git_commit_tree(&tree, cm) < 0 || repo_path_entry(tree, path, &id, &mode) < 0)
		goto out;
	*out = n > 0 || !git_oid_is_zero(&id);
	for (unsigned i = 0; i < n && *out; i++) {
		git_commit *parent = NULL;
		git_tree *ptree = NULL;
		int e = git_commit_parent(&parent, cm, i) < 0 ||
		        git_commit_tree(&ptree, parent) < 0 ||
		        repo_path_entry(ptree, path, &pid, &pmode) < 0;

		git_tree_free(ptree);
		git_commit_free(parent);
		if (e)
			goto out;
		if (git_oid_equal(&id, &pid) && mode == pmode)
			*out = false;
	}
	r = 0;
out:
	git_tree_free(tree);
	return r;
}

/* git log's default order: newest committer date first, ties in the order commits were
 * reached (a child before its parents), streamed without walking the whole graph first
 * (libgit2's time sort orders ties differently; its topological sort is used for
 * order=topo only). */
struct log_item {
	git_commit *commit;
	int64_t time;
	uint64_t seq;
};

struct log_walk {
	git_repository *repo;
	git_revwalk *topo; /* order=topo: libgit2 does the walk */
	bool first_parent;
	struct log_item *heap;
	size_t n, alloc;
	uint64_t seq;
	git_oid *seen; /* open addressing set; zero oid = empty slot */
	size_t seen_n, seen_alloc;
};

static bool log_before(const struct log_item *a, const struct log_item *b)
{
	return a->time > b->time || (a->time == b->time && a->seq < b->seq);
}

static size_t oid_slot(const git_oid *id, size_t alloc)
{
	size_t h;

	memcpy(&h, id->id, sizeof h);
	return h & (alloc - 1);
}

/* Adds id to the seen set; false when it was there already. */
static int log_mark(struct log_walk *w, const git_oid *id)
{
	size_t i;

	if ((w->seen_n + 1) * 2 > w->seen_alloc) {
		size_t na = w->seen_alloc ? w->seen_alloc * 2 : 1024;
		git_oid *ns = calloc(na, sizeof *ns);

		if (!ns)
			return -ENOMEM;
		for (size_t k = 0; k < w->seen_alloc; k++) {
			if (git_oid_is_zero(&w->seen[k]))
				continue;
			for (i = oid_slot(&w->seen[k], na); !git_oid_is_zero(&ns[i]);
			     i = (i + 1) & (na - 1))
				;
			ns[i] = w->seen[k];
		}
		free(w->seen);
		w->seen = ns;
		w->seen_alloc = na;
	}
	for (i = oid_slot(id, w->seen_alloc); !git_oid_is_zero(&w->seen[i]);
	     i = (i + 1) & (w->seen_alloc - 1))
		if (git_oid_equal(&w->seen[i], id))
			return 0;
	w->seen[i] = *id;
	w->seen_n++;
	return 1;
}

static int log_push(struct log_walk *w, const git_oid *id)
{
	struct log_item it;
	size_t i;
	int r;

	if (w->topo)
		return git_revwalk_push(w->topo, id) < 0 ? -EIO : 0;
	if ((r = log_mark(w, id)) <= 0)
		return r;
	if (w->n == w->alloc) {
		size_t na = w->alloc ? w->alloc * 2 : 64;
		struct log_item *nh = realloc(w->heap, na * sizeof *nh);

		if (!nh)
			return -ENOMEM;
		w->heap = nh;
		w->alloc = na;
	}
	if (git_commit_lookup(&it.commit, w->repo, id) < 0)
		return -EIO;
	it.time = git_commit_time(it.commit);
	it.seq = w->seq++;
	for (i = w->n++; i > 0 && log_before(&it, &w->heap[(i - 1) / 2]); i = (i - 1) / 2)
		w->heap[i] = w->heap[(i - 1) / 2];
	w->heap[i] = it;
	return 0;
}

/* The next commit (the caller frees it): 1, 0 at the end, or a negative errno. */
static int log_next(struct log_walk *w, git_commit **out)
{
	struct log_item top, last;
	size_t i = 0, n;
	int r;

	if (w->topo) {
		git_oid id;

		r = git_revwalk_next(&id, w->topo);
		if (r == GIT_ITEROVER)
			return 0;
		return r < 0 || git_commit_lookup(out, w->repo, &id) < 0 ? -EIO : 1;
	}
	if (w->n == 0)
		return 0;
	top = w->heap[0];
	last = w->heap[--w->n];
	for (;;) {
		size_t child = 2 * i + 1;

		if (child >= w->n)
			break;
		if (child + 1 < w->n && log_before(&w->heap[child + 1], &w->heap[child]))
			child++;
		if (!log_before(&w->heap[child], &last))
			break;
		w->heap[i] = w->heap[child];
		i = child;
	}
	if (w->n)
		w->heap[i] = last;
	n = w->first_parent ? (git_commit_parentcount(top.commit) > 0)
	                    : git_commit_parentcount(top.commit);
	for (unsigned k = 0; k < n; k++) {
		if ((r = log_push(w, git_commit_parent_id(top.commit, k))) < 0) {
			git_commit_free(top.commit);
			return r;
		}
	}
	*out = top.commit;
	return 1;
}

static int log_init(struct log_walk *w, git_repository *repo, bool topo, bool first_parent)
{
	memset(w, 0, sizeof *w);
	w->repo = repo;
	w->first_parent = first_parent;
	if (!topo)
		return 0;
	if (git_revwalk_new(&w->topo, repo) < 0)
		return -EIO;
	git_revwalk_sorting(w->topo, GIT_SORT_TOPOLOGICAL | GIT_SORT_TIME);
	if (first_parent)
		git_revwalk_simplify_first_parent(w->topo);
	return 0;
}

static void log_free(struct log_walk *w)
{
	for (size_t i = 0; i < w->n; i++)
		git_commit_free(w->heap[i].commit);
	free(w->heap);
	free(w->seen);
	git_revwalk_free(w->topo);
}

static int push_all_refs(struct log_walk *walk, git_repository *repo)
{
	git_reference_iterator *it = NULL;
	git_reference *ref;
	int r = 0;

	if (git_reference_iterator_new(&it, repo) < 0)
		return -EIO;
	while (r == 0 && git_reference_next(&ref, it) == 0) {
		git_object *obj = NULL;

		/* refs to trees or blobs have no history */
		if (git_reference_peel(&obj, ref, GIT_OBJECT_COMMIT) == 0)
			r = log_push(walk, git_object_id(obj));
		git_object_free(obj);
		git_reference_free(ref);
	}
	git_reference_iterator_free(it);
	return r;
}

static void commits_list(struct repo_ctx *c)
{
	const char *ref = hub_req_query(c->req, "ref_name");
	const char *qpath = hub_req_query(c->req, "path");
	const char *since_s = hub_req_query(c->req, "since");
	const char *until_s = hub_req_query(c->req, "until");
	const char *order = hub_req_query(c->req, "order");
	bool all = repo_bool(hub_req_query(c->req, "all"));
	bool with_stats = repo_bool(hub_req_query(c->req, "with_stats"));
	bool first_parent = repo_bool(hub_req_query(c->req, "first_parent"));
	int64_t since = INT64_MIN, until = INT64_MAX;
	size_t page, per_page, skip, walked = 0, matched = 0;
	struct log_walk walk;
	git_commit *start = NULL, *cm = NULL;
	char *def = NULL, *path = NULL;
	bool has_next = false;
	json_t *arr = json_array();
	int r;

	memset(&walk, 0, sizeof walk);
	repo_page_params(c->req, &page, &per_page);
	skip = (page - 1) * per_page;
	if ((since_s && *since_s && parse_iso8601(since_s, &since) < 0) ||
	    (until_s && *until_s && parse_iso8601(until_s, &until) < 0)) {
		repo_bad_param(c, since_s && parse_iso8601(since_s, &since) < 0
		                      ? "since is invalid"
		                      : "until is invalid");
		goto out;
	}
	if (order && strcmp(order, "default") && strcmp(order, "topo")) {
		repo_bad_param(c, "order does not have a valid value");
		goto out;
	}
	if (qpath && *qpath) {
		size_t n;

		path = strdup(qpath + strspn(qpath, "/"));
		if (!path)
			goto fail;
		n = strlen(path);
		while (n && path[n - 1] == '/')
			path[--n] = '\0';
		if (n && !path_is_safe(path, HUB_MAX_PATH)) {
			repo_bad_param(c, "path should be a valid file path");
			goto out;
		}
	}
	if (log_init(&walk, c->repo, order && !strcmp(order, "topo"), first_parent) < 0)
		goto fail;
	if (all) {
		if (push_all_refs(&walk, c->repo) < 0)
			goto fail;
	} else {
		if (!ref || !*ref) {
			repo_default_branch(c->repo, &def);
			ref = def;
		}
		/* GitLab lists nothing for a ref that does not exist */
		if (!ref || repo_resolve_commit(c->repo, ref, &start) < 0)
			goto done;
		if (log_push(&walk, git_commit_id(start)) < 0)
			goto fail;
	}
	while (walked++ < REPO_MAX_LOG_WALK && (r = log_next(&walk, &cm)) != 0) {
		bool keep;
		int64_t t;

		if (r < 0)
			goto fail;
		t = git_commit_time(cm);
		keep = t >= since && t <= until;
		if (keep && path && *path && commit_touches(cm, path, &keep) < 0)
			goto fail;
		if (keep && matched++ >= skip) {
			json_t *j;

			if (json_array_size(arr) == per_page) {
				has_next = true;
				break;
			}
			j = with_stats ? commit_detail(c, cm, true) : repo_commit_json(c, cm);
			if (!j)
				goto fail;
			json_array_append_new(arr, j);
		}
		git_commit_free(cm);
		cm = NULL;
	}
done:
	repo_page_headers(c, page, per_page, has_next);
	hub_resp_json(c->resp, 200, arr);
	arr = NULL;
	goto out;
fail:
	repo_fail(c, "listing commits");
out:
	json_decref(arr);
	log_free(&walk);
	git_commit_free(cm);
	git_commit_free(start);
	free(path);
	free(def);
}

/* --- creating a commit --- */

struct commit_job {
	struct repo_ctx *c;
	git_index *index;
	char msg[1400]; /* the 400 message when an action fails */
};

static bool index_has_file(git_index *idx, const char *path)
{
	return git_index_get_bypath(idx, path, 0) != NULL;
}

static bool index_has_dir(git_index *idx, const char *path)
{
	struct buf b = BUF_INIT(0);
	size_t pos;
	bool found;

	buf_printf(&b, "%s/", path);
	found = b.data && git_index_find_prefix(&pos, idx, b.data) == 0;
	buf_free(&b);
	return found;
}

/* A leading directory of path that is a file in the index, or NULL. */
static bool index_parent_is_file(git_index *idx, const char *path, char *which, size_t wlen)
{
	const char *slash = path;

	while ((slash = strchr(slash, '/'))) {
		size_t n = (size_t)(slash - path);

		if (n < wlen) {
			memcpy(which, path, n);
			which[n] = '\0';
			if (index_has_file(idx, which))
				return true;
		}
		slash++;
	}
	return false;
}

static bool path_ok(const char *path)
{
	const char *seg = path;

	if (!path || !path_is_safe(path, HUB_MAX_PATH))
		return false;
	/* git refuses .git anywhere in a tree (and so do its checkouts) */
	while (seg) {
		if (!strncasecmp(seg, ".git", 4) && (seg[4] == '/' || !seg[4]))
			return false;
		seg = strchr(seg, '/');
		seg = seg ? seg + 1 : NULL;
	}
	return true;
}

static int job_fail(struct commit_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int job_fail(struct commit_job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof j->msg, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int add_entry(struct commit_job *j, const char *path, const git_oid *id, uint32_t mode,
                     size_t size)
{
	git_index_entry e;
	char which[HUB_MAX_PATH + 1];

	if (index_has_dir(j->index, path))
		return job_fail(j, "A directory with this name already exists");
	if (index_parent_is_file(j->index, path, which, sizeof which))
		return job_fail(j, "A file with this name already exists: %.1200s", which);
	memset(&e, 0, sizeof e);
	e.mode = mode;
	e.path = path;
	e.file_size = (uint32_t)size;
	git_oid_cpy(&e.id, id);
	if (git_index_add(j->index, &e) < 0)
		return job_fail(j, "Your changes could not be committed: invalid path %.1200s",
		                path);
	return 0;
}

/* Writes the action's content as a blob. */
static int action_blob(struct commit_job *j, const json_t *a, size_t i, git_oid *id, size_t *size)
{
	const char *content = jsonx_str(a, "content");
	const char *enc = jsonx_str(a, "encoding");
	size_t n = content ? json_string_length(json_object_get(a, "content")) : 0;
	struct buf raw = BUF_INIT(HUB_MAX_BODY);
	int r;

	if (enc && !strcmp(enc, "base64")) {
		if (base64_decode(content ? content : "", n, &raw) < 0) {
			buf_free(&raw);
			return job_fail(j, "actions[%zu][content] is not valid base64", i);
		}
		r = git_blob_create_from_buffer(id, j->c->repo, raw.data ? raw.data : "", raw.len);
		*size = raw.len;
	} else {
		r = git_blob_create_from_buffer(id, j->c->repo, content ? content : "", n);
		*size = n;
	}
	buf_free(&raw);
	return r < 0 ? -EIO : 0;
}

static uint32_t exec_mode(const json_t *a, uint32_t cur)
{
	json_t *x = json_object_get(a, "execute_filemode");

	if (!json_is_boolean(x) || cur == GIT_FILEMODE_LINK)
		return cur;
	return json_is_true(x) ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
}

static int action_apply(struct commit_job *j, const json_t *a, size_t i)
{
	const char *action = jsonx_str(a, "action");
	const char *path = jsonx_str(a, "file_path");
	const char *prev = jsonx_str(a, "previous_path");
	const git_index_entry *cur =
	    index_has_file(j->index, path) ? git_index_get_bypath(j->index, path, 0) : NULL;
	git_oid id;
	size_t size = 0;
	uint32_t mode;
	int r;

	if (!strcmp(action, "create")) {
		if (cur || index_has_dir(j->index, path))
			return job_fail(j, "A file with this name already exists");
		if ((r = action_blob(j, a, i, &id, &size)) < 0)
			return r;
		return add_entry(j, path, &id, exec_mode(a, GIT_FILEMODE_BLOB), size);
	}
	if (!strcmp(action, "move")) {
		const git_index_entry *old = git_index_get_bypath(j->index, prev, 0);
		bool has_content = json_is_string(json_object_get(a, "content"));

		if (!old)
			return job_fail(j, "A file with this name doesn't exist");
		if (cur || index_has_dir(j->index, path))
			return job_fail(j, "A file with this name already exists");
		git_oid_cpy(&id, &old->id);
		mode = exec_mode(a, old->mode);
		size = old->file_size;
		if (git_index_remove(j->index, prev, 0) < 0)
			return -EIO;
		if (has_content && (r = action_blob(j, a, i, &id, &size)) < 0)
			return r;
		return add_entry(j, path, &id, mode, size);
	}
	if (!cur)
		return job_fail(j, "A file with this name doesn't exist");
	if (!strcmp(action, "delete"))
		return git_index_remove(j->index, path, 0) < 0 ? -EIO : 0;
	mode = exec_mode(a, cur->mode);
	if (!strcmp(action, "chmod")) {
		git_oid_cpy(&id, &cur->id);
		size = cur->file_size;
	} else if ((r = action_blob(j, a, i, &id, &size)) < 0) {
		return r;
	}
	return add_entry(j, path, &id, mode, size);
}

/* Checks every action's shape first, as Grape does, so nothing half-applies. */
static bool actions_valid(struct repo_ctx *c, const json_t *actions)
{
	static const char *const kinds[] = {"create", "update", "delete", "move", "chmod"};
	char msg[256];
	size_t i;
	const json_t *a;

	json_array_foreach(actions, i, a)
	{
		const char *kind = jsonx_str(a, "action");
		const char *enc = jsonx_str(a, "encoding");
		json_t *content = json_object_get(a, "content");
		bool known = false;

		msg[0] = '\0';
		for (size_t k = 0; kind && k < sizeof kinds / sizeof *kinds; k++)
			known |= !strcmp(kind, kinds[k]);
		if (!json_is_object(a))
			snprintf(msg, sizeof msg, "actions[%zu] is invalid", i);
		else if (!kind)
			snprintf(msg, sizeof msg, "actions[%zu][action] is missing", i);
		else if (!known)
			snprintf(msg, sizeof msg,
			         "actions[%zu][action] does not have a valid value", i);
		else if (!jsonx_str(a, "file_path"))
			snprintf(msg, sizeof msg, "actions[%zu][file_path] is missing", i);
		else if (!path_ok(jsonx_str(a, "file_path")))
			snprintf(msg, sizeof msg,
			         "actions[%zu][file_path] should be a valid file path", i);
		else if (!strcmp(kind, "move") && !jsonx_str(a, "previous_path"))
			snprintf(msg, sizeof msg, "actions[%zu][previous_path] is missing", i);
		else if (!strcmp(kind, "move") && !path_ok(jsonx_str(a, "previous_path")))
			snprintf(msg, sizeof msg,
			         "actions[%zu][previous_path] should be a valid file path", i);
		else if (json_object_get(a, "encoding") &&
		         !json_is_null(json_object_get(a, "encoding")) &&
		         (!enc || (strcmp(enc, "text") && strcmp(enc, "base64"))))
			snprintf(msg, sizeof msg,
			         "actions[%zu][encoding] does not have a valid value", i);
		else if (content && !json_is_null(content) && !json_is_string(content))
			snprintf(msg, sizeof msg, "actions[%zu][content] is invalid", i);
		if (msg[0]) {
			repo_bad_param(c, msg);
			return false;
		}
	}
	return true;
}

static int signature_of(struct repo_ctx *c, const char *name, const char *email,
                        git_signature **out)
{
	const struct hub_user *u = c->req->user;
	char fallback[300];

	if (!name || !*name)
		name = *u->name ? u->name : u->username;
	if (!email || !*email) {
		snprintf(fallback, sizeof fallback, "%s@reef-hub.invalid", u->username);
		email = *u->email ? u->email : fallback;
	}
	return git_signature_now(out, name, email) < 0 ? -EINVAL : 0;
}

static bool has_branches(git_repository *repo)
{
	git_branch_iterator *it = NULL;
	git_reference *ref = NULL;
	git_branch_t type;
	bool any = false;

	if (git_branch_iterator_new(&it, repo, GIT_BRANCH_LOCAL) == 0 &&
	    git_branch_next(&ref, &type, it) == 0)
		any = true;
	git_reference_free(ref);
	git_branch_iterator_free(it);
	return any;
}

/* Commits actions (already validated) on params' branch: the shared half of the commits
 * and files APIs. 0 with *made set, or a negative errno after answering the error. */
static int commit_apply(struct repo_ctx *c, const json_t *params, const json_t *actions,
                        git_commit **made)
{
	const char *branch = jsonx_str(params, "branch");
	const char *message = jsonx_str(params, "commit_message");
	const char *start_branch = jsonx_str(params, "start_branch");
	const char *start_sha = jsonx_str(params, "start_sha");
	git_reference *existing = NULL, *ref = NULL;
	git_commit *base = NULL;
	const git_commit *parents[1];
	git_tree *tree = NULL;
	git_signature *author = NULL, *committer = NULL;
	struct commit_job job = {.c = c};
	char full[1024], msg[1400];
	bool was_empty;
	git_oid tree_id, commit_id;
	const json_t *a;
	size_t i;
	int r, valid = 0, ret = -EINVAL;

	*made = NULL;
	if (strlen(branch) > 900 ||
	    snprintf(full, sizeof full, "refs/heads/%s", branch) >= (int)sizeof full ||
	    git_reference_name_is_valid(&valid, full) < 0 || !valid || branch[0] == '-') {
		hub_resp_error(c->resp, 400, "Branch name is invalid");
		goto out;
	}

	/* The commit's parent: the branch itself, or where a new branch starts. */
	r = git_reference_lookup(&existing, c->repo, full);
	if (r < 0 && r != GIT_ENOTFOUND) {
		repo_fail(c, "reading a branch");
		goto out;
	}
	was_empty = !has_branches(c->repo);
	if (existing && ((start_branch && strcmp(start_branch, branch)) || start_sha)) {
		snprintf(
		    msg, sizeof msg,
		    "A branch called '%.900s' already exists. Switch to that branch in order to "
		    "make changes",
		    branch);
		hub_resp_error(c->resp, 400, msg);
		goto out;
	}
	if (existing) {
		r = git_commit_lookup(&base, c->repo, git_reference_target(existing));
		if (r < 0) {
			repo_fail(c, "reading a branch's commit");
			goto out;
		}
	} else if (start_sha || start_branch) {
		const char *from = start_sha ? start_sha : start_branch;
		bool ok;

		if (start_sha)
			ok = strlen(start_sha) >= 4 &&
			     repo_resolve_commit(c->repo, start_sha, &base) == 0;
		else
			ok = snprintf(full, sizeof full, "refs/heads/%s", start_branch) <
			         (int)sizeof full &&
			     git_reference_name_is_valid(&valid, full) == 0 && valid &&
			     repo_resolve_commit(c->repo, full, &base) == 0;
		if (!ok) {
			snprintf(msg, sizeof msg, "Invalid reference name: %.1024s", from);
			hub_resp_error(c->resp, 400, msg);
			goto out;
		}
		snprintf(full, sizeof full, "refs/heads/%s", branch);
	} else if (!was_empty) {
		snprintf(msg, sizeof msg,
		         "A branch called '%.900s' does not exist: give start_branch to create it",
		         branch);
		hub_resp_error(c->resp, 400, msg);
		goto out;
	}

	if (git_index_new(&job.index) < 0)
		goto fail;
	if (base && (git_commit_tree(&tree, base) < 0 || git_index_read_tree(job.index, tree) < 0))
		goto fail;
	json_array_foreach(actions, i, a)
	{
		r = action_apply(&job, a, i);
		if (r == -EINVAL) {
			hub_resp_error(c->resp, 400, job.msg);
			goto out;
		}
		if (r < 0)
			goto fail;
	}
	if (git_index_write_tree_to(&tree_id, job.index, c->repo) < 0)
		goto fail;
	git_tree_free(tree);
	tree = NULL;
	if (git_tree_lookup(&tree, c->repo, &tree_id) < 0)
		goto fail;
	if (signature_of(c, NULL, NULL, &committer) < 0 ||
	    signature_of(c, jsonx_str(params, "author_name"), jsonx_str(params, "author_email"),
	                 &author) < 0) {
		hub_resp_error(c->resp, 400, "The author name or email is invalid");
		goto out;
	}
	parents[0] = base;
	if (git_commit_create(&commit_id, c->repo, NULL, author, committer, NULL, message, tree,
	                      base ? 1 : 0, parents) < 0)
		goto fail;
	/* Compare-and-swap: the branch must still be where the commit was built on. */
	if (existing)
		r = git_reference_create_matching(&ref, c->repo, full, &commit_id, 1,
		                                  git_reference_target(existing), "commit via API");
	else
		r = git_reference_create(&ref, c->repo, full, &commit_id, 0, "commit via API");
	if (r == GIT_EMODIFIED || r == GIT_EEXISTS || r == GIT_ELOCKED) {
		snprintf(msg, sizeof msg,
		         "The branch '%.900s' changed while the commit was made; retry the request",
		         branch);
		hub_resp_error(c->resp, 400, msg);
		goto out;
	}
	if (r < 0)
		goto fail;
	/* GitLab makes the first branch of an empty project its default. */
	if (was_empty)
		git_repository_set_head(c->repo, full);
	if (git_commit_lookup(made, c->repo, &commit_id) < 0)
		goto fail;
	ret = 0;
	goto out;
fail:
	repo_fail(c, "creating a commit");
	ret = -EIO;
out:
	git_signature_free(author);
	git_signature_free(committer);
	git_index_free(job.index);
	git_tree_free(tree);
	git_commit_free(base);
	git_reference_free(ref);
	git_reference_free(existing);
	return ret;
}

static void commit_create(struct repo_ctx *c)
{
	json_t *params = NULL, *actions, *j;
	const char *branch, *message;
	git_commit *made = NULL;
	char missing[128] = "";

	if (!repo_can_write(c))
		return;
	if (hub_req_params(c->req, &params) < 0 || !json_is_object(params)) {
		repo_bad_param(c, "The request body is not valid");
		goto out;
	}
	branch = jsonx_str(params, "branch");
	message = jsonx_str(params, "commit_message");
	actions = json_object_get(params, "actions");
	if (!branch)
		strcat(missing, "branch is missing, ");
	if (!message)
		strcat(missing, "commit_message is missing, ");
	if (!actions)
		strcat(missing, "actions is missing, ");
	if (*missing) {
		missing[strlen(missing) - 2] = '\0';
		repo_bad_param(c, missing);
		goto out;
	}
	if (!*message) {
		repo_bad_param(c, "commit_message is empty");
		goto out;
	}
	if (!json_is_array(actions)) {
		repo_bad_param(c, "actions is invalid");
		goto out;
	}
	if (json_array_size(actions) == 0) {
		repo_bad_param(c, "actions is empty");
		goto out;
	}
	/* lib/api/commits.rb: authorize_push_to_branch! answers 403 */
	if (repo_protect_check(c, branch, false)) {
		hub_resp_error(c->resp, 403,
		               "403 Forbidden - You are not allowed to push into this branch");
		goto out;
	}
	if (!actions_valid(c, actions) || commit_apply(c, params, actions, &made) < 0)
		goto out;
	j = commit_detail(c, made, true);
	if (j)
		hub_resp_json(c->resp, 201, j);
	else
		repo_fail(c, "computing commit stats");
out:
	git_commit_free(made);
	json_decref(params);
}

/* POST|PUT|DELETE /repository/files/:file_path: commits of one action, as GitLab's
 * files API. */
void repo_files_write(struct repo_ctx *c, const char *path)
{
	const char *m = c->req->method;
	bool create = !strcmp(m, "POST"), del = !strcmp(m, "DELETE");
	json_t *params = NULL, *actions = NULL, *a;
	git_commit *made = NULL;
	char missing[128] = "";
	static const char *const copied[] = {"content", "encoding", "execute_filemode"};

	if (!repo_can_write(c))
		return;
	if (hub_req_params(c->req, &params) < 0 || !json_is_object(params)) {
		repo_bad_param(c, "The request body is not valid");
		goto out;
	}
	if (!jsonx_str(params, "branch"))
		strcat(missing, "branch is missing, ");
	if (!jsonx_str(params, "commit_message"))
		strcat(missing, "commit_message is missing, ");
	if (!del && !jsonx_str(params, "content"))
		strcat(missing, "content is missing, ");
	if (*missing) {
		missing[strlen(missing) - 2] = '\0';
		repo_bad_param(c, missing);
		goto out;
	}
	if (!*jsonx_str(params, "commit_message")) {
		repo_bad_param(c, "commit_message is empty");
		goto out;
	}
	a = json_pack("{s:s, s:s}", "action",
	              create ? "create"
	              : del  ? "delete"
	                     : "update",
	              "file_path", path);
	actions = json_array();
	if (!a || !actions || json_array_append_new(actions, a) < 0) {
		hub_resp_error(c->resp, 500, "500 Internal Server Error");
		goto out;
	}
	for (size_t k = 0; !del && k < sizeof copied / sizeof *copied; k++) {
		json_t *v = json_object_get(params, copied[k]);

		/* form posts carry execute_filemode as text */
		if (v && !strcmp(copied[k], "execute_filemode") && json_is_string(v))
			json_object_set_new(a, copied[k],
			                    json_boolean(repo_bool(json_string_value(v))));
		else if (v)
			json_object_set(a, copied[k], v);
	}
	/* Files::*Service#validate_permissions!: a ValidationError, which lib/api/files.rb
	 * answers with 400 */
	if (repo_protect_check(c, jsonx_str(params, "branch"), false)) {
		hub_resp_error(c->resp, 400, "You are not allowed to push into this branch");
		goto out;
	}
	if (!actions_valid(c, actions) || commit_apply(c, params, actions, &made) < 0)
		goto out;
	if (del)
		hub_resp_raw(c->resp, 204, "application/json", "", 0);
	else
		hub_resp_json(c->resp, create ? 201 : 200,
		              json_pack("{s:o, s:o}", "file_path", repo_jstr(path), "branch",
		                        repo_jstr(jsonx_str(params, "branch"))));
out:
	git_commit_free(made);
	json_decref(actions);
	json_decref(params);
}

void repo_commits_route(struct repo_ctx *c, const char *rest)
{
	const char *m = c->req->method;
	bool read = !strcmp(m, "GET") || !strcmp(m, "HEAD");

	if (!rest) {
		if (read)
			commits_list(c);
		else if (!strcmp(m, "POST"))
			commit_create(c);
		else
			hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	if (strchr(rest, '/')) {
		hub_resp_error(c->resp, 404, "404 Not Found");
		return;
	}
	if (!read) {
		hub_resp_error(c->resp, 405, "405 Method Not Allowed");
		return;
	}
	commit_get(c, rest);
}
