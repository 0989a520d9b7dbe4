/* Experiments, pipelines and processors in the mount: see mlfs.h. */
#include "mlfs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "ctl.h"
#include "mlops.h"
#include "node.h"
#include "reef/buf.h"
#include "reef/jsonx.h"
#include "reef/log.h"
#include "reef/util.h"
#include "svg.h"

/* The files of a launch, by kind: the first is the launch as the API shows it. */
const char *const ml_exp_files[MLOPS_KINDS][ML_EXP_FILES_MAX] = {
    {"experiment.json", "status", "params.json", "metrics.json", "metrics.jsonl", "metrics.svg",
     "log", NULL},
    {"data-pipeline.json", "status", "params.json", "log", NULL},
    {"visualization.json", "status", "params.json", "log", NULL},
};
const char *const ml_pipe_files[] = {"pipeline.json", "status", NULL};
const char *const ml_job_files[] = {"job.json", "status", "log", NULL};
const char *const ml_proc_files[] = {"processor.json", "README.md", NULL};

/* ---- paths ---- */

static bool ml_in(const char *s, const char *const *set)
{
	for (; *set; set++)
		if (!strcmp(s, *set))
			return true;
	return false;
}

static bool ml_id_ok(const char *s, int64_t *out)
{
	size_t n = strlen(s);
	char *end;

	if (n == 0 || n > 18 || s[0] == '0' || strspn(s, "0123456789") != n)
		return false;
	*out = strtoll(s, &end, 10);
	return *out > 0;
}

static bool ml_slug_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= 64 && s[0] != '-' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* A launch name shown by the mount: what the hub accepts, minus the names of the files
 * beside them. */
static bool ml_exp_name_ok(const char *s)
{
	return ctl_name_ok(s) && strcmp(s, "launch") && strcmp(s, "launch.error") &&
	       strcmp(s, "README");
}

int ml_parse(const char *path, struct ml_loc *l)
{
	char buf[NODE_PATH_MAX], *seg[8], *save = NULL, *s;
	size_t n = 0, rest = 0;

	memset(l, 0, sizeof(*l));
	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	snprintf(buf, sizeof(buf), "%s", path);
	for (s = strtok_r(buf, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
		if (n == 8)
			return -ENOENT;
		seg[n++] = s;
		/* below artifacts/ the rest is a member path */
		if (n >= 3 && !strcmp(seg[n - 1], "artifacts") &&
		    ((mlops_kind_of(seg[0]) >= 0 && n == 3) ||
		     (!strcmp(seg[0], "pipelines") && n == 5))) {
			rest = (size_t)(s + strlen(s) - buf);
			if (path[rest] == '/')
				snprintf(l->sub, sizeof(l->sub), "%s", path + rest + 1);
			break;
		}
	}
	if (n == 0)
		return -ENOENT;
	if (mlops_kind_of(seg[0]) >= 0 &&
	    !strcmp(seg[0], mlops_kinds[mlops_kind_of(seg[0])].route)) {
		l->kind = (enum mlops_kind)mlops_kind_of(seg[0]);
		if (n == 1)
			return l->w = W_EXPS, 0;
		if (n == 2 && !strcmp(seg[1], "README"))
			return l->w = W_EXPS_README, 0;
		if (n == 2 && !strcmp(seg[1], "launch"))
			return l->w = W_EXP_LAUNCH, 0;
		if (n == 2 && !strcmp(seg[1], "launch.error"))
			return l->w = W_EXP_LAUNCH_ERR, 0;
		if (!ml_exp_name_ok(seg[1]))
			return -ENOENT;
		snprintf(l->name, sizeof(l->name), "%s", seg[1]);
		if (n == 2)
			return l->w = W_EXP, 0;
		if (n > 3)
			return -ENOENT;
		if (!strcmp(seg[2], "ctl"))
			return l->w = W_EXP_CTL, 0;
		if (!strcmp(seg[2], "ctl.error"))
			return l->w = W_EXP_CTL_ERR, 0;
		if (!strcmp(seg[2], "outputs"))
			return l->w = W_EXP_OUTPUTS, 0;
		if (!strcmp(seg[2], "artifacts"))
			return l->w = W_EXP_ARTS, 0;
		if (!ml_in(seg[2], ml_exp_files[l->kind]))
			return -ENOENT;
		snprintf(l->file, sizeof(l->file), "%s", seg[2]);
		return l->w = W_EXP_FILE, 0;
	}
	if (!strcmp(seg[0], "pipelines")) {
		if (n == 1)
			return l->w = W_PIPES, 0;
		if (n == 2 && !strcmp(seg[1], "launch"))
			return l->w = W_PIPE_LAUNCH, 0;
		if (n == 2 && !strcmp(seg[1], "launch.error"))
			return l->w = W_PIPE_LAUNCH_ERR, 0;
		if (!ml_id_ok(seg[1], &l->pipeline))
			return -ENOENT;
		if (n == 2)
			return l->w = W_PIPE, 0;
		if (n == 3 && !strcmp(seg[2], "ctl"))
			return l->w = W_PIPE_CTL, 0;
		if (n == 3 && !strcmp(seg[2], "ctl.error"))
			return l->w = W_PIPE_CTL_ERR, 0;
		if (n == 3 && ml_in(seg[2], ml_pipe_files)) {
			snprintf(l->file, sizeof(l->file), "%s", seg[2]);
			return l->w = W_PIPE_FILE, 0;
		}
		if (strcmp(seg[2], "jobs"))
			return -ENOENT;
		if (n == 3)
			return l->w = W_JOBS, 0;
		snprintf(l->name, sizeof(l->name), "%s", seg[3]);
		if (n == 4)
			return l->w = W_JOB, 0;
		if (n == 5 && !strcmp(seg[4], "artifacts"))
			return l->w = W_JOB_ARTS, 0;
		if (n == 5 && ml_in(seg[4], ml_job_files)) {
			snprintf(l->file, sizeof(l->file), "%s", seg[4]);
			return l->w = W_JOB_FILE, 0;
		}
		return -ENOENT;
	}
	if (!strcmp(seg[0], ".reef")) {
		if (n == 2 && !strcmp(seg[1], "usage.json"))
			return l->w = W_USAGE, 0;
		if (strcmp(seg[1], "processors") || n > 4)
			return -ENOENT;
		if (n == 2)
			return l->w = W_PROCS, 0;
		if (!ml_slug_ok(seg[2]))
			return -ENOENT;
		snprintf(l->name, sizeof(l->name), "%s", seg[2]);
		if (n == 3)
			return l->w = W_PROC, 0;
		if (!ml_in(seg[3], ml_proc_files))
			return -ENOENT;
		snprintf(l->file, sizeof(l->file), "%s", seg[3]);
		return l->w = W_PROC_FILE, 0;
	}
	return -ENOENT;
}

/* The ML path of a node: its own path for ML nodes, "" for a project and ".reef" for
 * the control directory. */
static const char *ml_node_path(const struct node *n)
{
	if (n->kind == NODE_PROJECT)
		return "";
	if (n->kind == NODE_CTL_DIR)
		return ".reef";
	return n->path;
}

static bool ml_is_ctl_file(enum ml_what w)
{
	return w == W_EXP_LAUNCH || w == W_PIPE_LAUNCH || w == W_EXP_CTL || w == W_PIPE_CTL;
}

static bool ml_is_dir(enum ml_what w)
{
	switch (w) {
	case W_EXPS:
	case W_EXP:
	case W_EXP_OUTPUTS:
	case W_PIPES:
	case W_PIPE:
	case W_JOBS:
	case W_JOB:
	case W_PROCS:
	case W_PROC:
		return true;
	default:
		return false;
	}
}

/* ---- errors of control files ---- */

static const char *ml_errno_name(int r)
{
	switch (-r) {
	case EINVAL:
		return "EINVAL";
	case ENOENT:
		return "ENOENT";
	case EACCES:
		return "EACCES";
	case EFBIG:
		return "EFBIG";
	case EEXIST:
		return "EEXIST";
	case EIO:
		return "EIO";
	default:
		return "error";
	}
}

static void ml_error_key(char *out, size_t n, int64_t project_id, const char *ctl_path)
{
	snprintf(out, n, "%" PRId64 ":%s", project_id, ctl_path);
}

/* msg NULL clears the key's error. */
static void ml_error_set(struct mlfs *ml, const char *key, const char *msg)
{
	struct ml_error *slot = NULL;

	if (msg && ml->cache) { /* also in .reef/status last_errors, without the time */
		const char *m = strchr(msg, ' ') ? strchr(msg, ' ') + 1 : msg;

		cache_err_note(ml->cache, "control file %s: %.*s", key, (int)strcspn(m, "\n"), m);
	}
	pthread_mutex_lock(&ml->lock);
	for (size_t i = 0; i < ML_ERRORS; i++)
		if (!strcmp(ml->errors[i].key, key))
			slot = &ml->errors[i];
	if (!slot && msg) {
		slot = &ml->errors[0];
		for (size_t i = 1; i < ML_ERRORS; i++)
			if (ml->errors[i].seq < slot->seq)
				slot = &ml->errors[i];
	}
	if (slot && msg) {
		snprintf(slot->key, sizeof(slot->key), "%s", key);
		snprintf(slot->msg, sizeof(slot->msg), "%s", msg);
		slot->seq = ++ml->err_seq;
	} else if (slot) {
		memset(slot, 0, sizeof(*slot));
	}
	pthread_mutex_unlock(&ml->lock);
}

char *ml_error_get(struct mlfs *ml, const char *key)
{
	char *s = NULL;

	pthread_mutex_lock(&ml->lock);
	for (size_t i = 0; i < ML_ERRORS; i++)
		if (!strcmp(ml->errors[i].key, key))
			s = strdup(ml->errors[i].msg);
	pthread_mutex_unlock(&ml->lock);
	return s ? s : strdup("");
}

static void ml_error_format(char *out, size_t n, int r, const char *reason)
{
	char when[32], text[CTL_ERR_MAX + 96];
	time_t now = time(NULL);
	struct tm tm;

	/* reasons quote what users and the server wrote: keep the file one line of text */
	text_escape(reason, text, sizeof(text));
	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(out, n, "%s %s: %s\n", when, ml_errno_name(r), text);
}

/* A request the server refused on delivery: its control file's .error says why. */
static void ml_on_done(void *arg, const struct journal_entry *e)
{
	struct mlfs *ml = arg;
	char path[NODE_PATH_MAX], key[NODE_PATH_MAX + 32], why[CTL_ERR_MAX + 88],
	    msg[sizeof(why) + 64];

	int k = mlops_kind_of(e->kind);

	if (e->state != JOURNAL_FAILED)
		return;
	if (k >= 0 && !strcmp(e->kind, mlops_kinds[k].kind))
		snprintf(path, sizeof(path), "%s/launch", mlops_kinds[k].route);
	else if (!strcmp(e->kind, "pipeline"))
		snprintf(path, sizeof(path), "pipelines/launch");
	else if (k >= 0)
		snprintf(path, sizeof(path), "%s/%s/ctl", mlops_kinds[k].route, e->target);
	else
		snprintf(path, sizeof(path), "pipelines/%s/ctl", e->target);
	ml_error_key(key, sizeof(key), e->project_id, path);
	snprintf(why, sizeof(why), "request %" PRId64 " refused by the server: %s", e->id,
	         e->error);
	ml_error_format(msg, sizeof(msg),
	                e->http_status == 404                            ? -ENOENT
	                : e->http_status == 403 || e->http_status == 401 ? -EACCES
	                : e->http_status == 409                          ? -EEXIST
	                                                                 : -EINVAL,
	                why);
	ml_error_set(ml, key, msg);
}

/* ---- life ---- */

/* The entry called name in a listing, or NULL. */
static const struct tree_entry *ml_entry(const struct tree_entry *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return &e[i];
	return NULL;
}

/* mlops_path_fn over the cache: walks path from the root of ref (a branch, else a tag),
 * the listings coming from the index or the server as for any lookup in the mount. */
static int ml_path_check(void *arg, int64_t pid, const char *ref, const char *path,
                         const char *what, char why[CTL_ERR_MAX])
{
	struct mlfs *ml = arg;
	char commit[41], tree[41], dir[CTL_ERR_MAX] = "", comp[TREE_NAME_MAX + 1];
	struct tree_entry *e = NULL;
	size_t n = 0;
	const char *p = path;
	int r;

	r = cache_ref_resolve(ml->cache, pid, CACHE_REF_BRANCH, ref, commit);
	if (r == -ENOENT)
		r = cache_ref_resolve(ml->cache, pid, CACHE_REF_TAG, ref, commit);
	if (r < 0)
		return r == -ENOENT ? -EIO : r; /* the ref's own check speaks for it */
	r = cache_root_tree(ml->cache, pid, commit, tree, &e, &n);
	while (r == 0) {
		const struct tree_entry *hit;
		size_t len;

		p += strspn(p, "/");
		len = strcspn(p, "/");
		if (len == 0)
			break; /* the whole path was found */
		if (len > TREE_NAME_MAX) {
			r = -ENOENT;
			snprintf(why, CTL_ERR_MAX, "%.20s %.120s: a name is too long", what, path);
			break;
		}
		memcpy(comp, p, len);
		comp[len] = '\0';
		p += len;
		if (!strcmp(comp, "."))
			continue;
		hit = ml_entry(e, n, comp);
		if (!hit) {
			const char **names = malloc((n ? n : 1) * sizeof(*names));

			r = -ENOENT;
			snprintf(why, CTL_ERR_MAX, "%.20s %.120s: no %.80s in %.120s%s of %.60s",
			         what, path, comp, dir[0] ? dir : "the top", dir[0] ? "/" : "",
			         ref);
			if (names) {
				for (size_t i = 0; i < n; i++)
					names[i] = e[i].name;
				ctl_suggest(why, comp, names, n);
				free(names);
			}
			break;
		}
		if (p[strspn(p, "/")] == '\0')
			break; /* the last name: a file or a directory both do */
		if (hit->mode != TREE_MODE_DIR) {
			r = -ENOENT;
			snprintf(why, CTL_ERR_MAX,
			         "%.20s %.120s: %.80s is not a directory in %.60s", what, path,
			         comp, ref);
			break;
		}
		snprintf(tree, sizeof(tree), "%s", hit->oid);
		if (strlen(dir) + len + 2 < sizeof(dir))
			snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "%s%s",
			         dir[0] ? "/" : "", comp);
		free(e);
		e = NULL;
		n = 0;
		r = cache_tree(ml->cache, pid, commit, dir, tree, &e, &n);
	}
	free(e);
	return r;
}

int mlfs_new(struct mlfs **out, struct node_table *nodes, struct cache *cache, struct mlops *m)
{
	struct mlfs *ml = calloc(1, sizeof(*ml));

	*out = NULL;
	if (!ml)
		return -ENOMEM;
	ml->nodes = nodes;
	ml->cache = cache;
	ml->m = m;
	pthread_mutex_init(&ml->lock, NULL);
	ml->handles.prev = ml->handles.next = &ml->handles;
	mlops_on_done(m, ml_on_done, ml);
	mlops_set_path_check(m, ml_path_check, ml);
	*out = ml;
	return 0;
}

static void ml_file_free(struct mlfs_file *f)
{
	if (!f)
		return;
	free(f->data);
	if (f->fd >= 0)
		close(f->fd);
	buf_free(&f->in);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void mlfs_free(struct mlfs *ml)
{
	if (!ml)
		return;
	mlops_on_done(ml->m, NULL, NULL);
	while (ml->handles.next != &ml->handles) {
		struct mlfs_file *f = ml->handles.next;

		f->prev->next = f->next;
		f->next->prev = f->prev;
		ml_file_free(f);
	}
	pthread_mutex_destroy(&ml->lock);
	free(ml);
}

/* ---- lookup ---- */

static int ml_node(struct mlfs *ml, struct node *parent, const char *name, enum node_kind kind,
                   const char *path, const char *oid, struct node **out)
{
	struct node_attrs a = {.kind = kind, .path = path, .oid = oid};

	return node_lookup(ml->nodes, parent, name, &a, out);
}

int mlfs_lookup(struct mlfs *ml, struct node *parent, const char *name, struct node **out)
{
	char path[NODE_PATH_MAX], oid[32] = "";
	const char *base = NULL;
	struct ml_loc l;
	json_t *v = NULL;
	bool local;
	int64_t pid = parent->project_id;
	int r;

	*out = NULL;
	if (!ml)
		return -ENOENT;
	base = ml_node_path(parent);
	if (snprintf(path, sizeof(path), "%s%s%s", base, *base ? "/" : "", name) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	r = ml_parse(path, &l);
	if (r < 0)
		return r;
	switch (l.w) {
	case W_EXP:
		r = ml_exp_view(ml, l.kind, pid, l.name, &v, &local);
		break;
	case W_EXP_OUTPUTS: {
		char tree[41], commit[41], opath[NODE_PATH_MAX];
		struct node_attrs a = {.kind = NODE_TREE};

		r = ml_exp_view(ml, l.kind, pid, l.name, &v, &local);
		if (r < 0)
			break;
		if (!local && ml_outputs(ml, pid, v, tree, commit, opath, sizeof(opath)) == 0) {
			/* the ordinary revision machinery from here on */
			a.oid = tree;
			a.tree = tree;
			a.commit = commit;
			a.path = opath;
			cache_commit_time(ml->cache, commit, &a.time); /* its mtime; 0 unknown */
			json_decref(v);
			return node_lookup(ml->nodes, parent, name, &a, out);
		}
		json_decref(v);
		return ml_node(ml, parent, name, NODE_ML_DIR, path, "", out);
	}
	case W_EXP_ARTS:
		if (!l.sub[0]) {
			r = ml_exp_view(ml, l.kind, pid, l.name, &v, &local);
			if (r == 0)
				snprintf(oid, sizeof(oid), "%" PRId64, ml_job_of(v));
			break;
		}
		/* fallthrough */
	case W_JOB_ARTS:
		if (l.w == W_JOB_ARTS && !l.sub[0]) {
			snprintf(oid, sizeof(oid), "%s", parent->oid);
			break;
		}
		{
			char **names;
			uint64_t *sizes, size = 0;
			size_t n;
			int cls;

			snprintf(oid, sizeof(oid), "%s", parent->oid);
			r = ml_arts(ml, pid, ml_oid_job(parent), &names, &sizes, &n);
			if (r < 0)
				return r;
			cls = ml_arts_classify(names, sizes, n, l.sub, &size);
			mlops_artifacts_free(names, sizes, n);
			if (cls == 0)
				return -ENOENT;
			return ml_node(ml, parent, name, cls == 1 ? NODE_ML_FILE : NODE_ML_DIR,
			               path, oid, out);
		}
	case W_PIPE:
		r = mlops_pipeline(ml->m, pid, l.pipeline, &v);
		break;
	case W_JOB:
		r = ml_job_by_name(ml, pid, l.pipeline, l.name, &v);
		if (r == 0)
			snprintf(oid, sizeof(oid), "%" PRId64, (int64_t)jsonx_int(v, "id", 0));
		break;
	case W_JOB_FILE:
		snprintf(oid, sizeof(oid), "%s", parent->oid);
		break;
	case W_PROC:
		r = mlops_processor(ml->m, l.name, &v);
		break;
	case W_EXPS_README:
		if (mlops_mgmt_state(ml->m, NULL) == 0)
			r = -ENOENT; /* only there while the service is missing */
		break;
	default:
		break;
	}
	json_decref(v);
	if (r < 0)
		return r;
	if (ml_is_ctl_file(l.w))
		return ml_node(ml, parent, name, NODE_ML_CTL, path, "", out);
	return ml_node(ml, parent, name,
	               ml_is_dir(l.w) || l.w == W_EXP_ARTS || l.w == W_JOB_ARTS ? NODE_ML_DIR
	                                                                        : NODE_ML_FILE,
	               path, oid, out);
}

/* ---- listing ---- */

static int ml_add_set(mlfs_add_fn add, void *arg, const char *const *set, const char *oid)
{
	int r = 0;

	for (; *set && r == 0; set++)
		r = add(arg, *set, oid, S_IFREG);
	return r;
}

static int ml_list_exps(struct mlfs *ml, enum mlops_kind kind, int64_t pid, mlfs_add_fn add,
                        void *arg)
{
	struct journal_entry *e = NULL;
	json_t *list = NULL, *x;
	size_t n = 0, i, k;
	int r;

	r = add(arg, "launch", "", S_IFREG);
	if (r == 0)
		r = add(arg, "launch.error", "", S_IFREG);
	if (r == 0 && mlops_mgmt_state(ml->m, NULL) == -ENOENT)
		r = add(arg, "README", "", S_IFREG); /* why there is nothing else */
	if (r < 0)
		return r;
	if (mlops_launches(ml->m, kind, pid, &list) < 0)
		list = NULL; /* what waits in the journal still shows */
	json_array_foreach(list, i, x)
	{
		const char *name = jsonx_str(x, "name");

		if (name && ml_exp_name_ok(name) && (r = add(arg, name, "", S_IFDIR)) < 0)
			break;
	}
	if (r == 0 &&
	    journal_pending(mlops_journal(ml->m), pid, mlops_kinds[kind].kind, &e, &n) == 0) {
		for (k = 0; k < n && r == 0; k++) {
			bool dup = false;

			json_array_foreach(list, i, x) if (!strcmp(jsonx_str(x, "name") ?: "",
			                                           e[k].target)) dup = true;
			for (i = 0; i < k; i++)
				dup |= !strcmp(e[i].target, e[k].target);
			if (!dup && ml_exp_name_ok(e[k].target))
				r = add(arg, e[k].target, "", S_IFDIR);
		}
		journal_entries_free(e, n);
	}
	json_decref(list);
	return r;
}

static int ml_list_arts(struct mlfs *ml, int64_t pid, int64_t job, const char *sub, const char *oid,
                        mlfs_add_fn add, void *arg)
{
	char **names, **seen = NULL;
	uint64_t *sizes;
	size_t n, nseen = 0, sl = strlen(sub);
	int r = ml_arts(ml, pid, job, &names, &sizes, &n);

	if (r < 0)
		return r;
	seen = calloc(n + 1, sizeof(*seen));
	if (!seen) {
		mlops_artifacts_free(names, sizes, n);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		const char *rest = names[i], *slash;
		char comp[256];
		size_t cl;
		bool dup = false;

		if (sl) {
			if (strncmp(rest, sub, sl) || rest[sl] != '/')
				continue;
			rest += sl + 1;
		}
		slash = strchr(rest, '/');
		cl = slash ? (size_t)(slash - rest) : strlen(rest);
		if (cl == 0 || cl >= sizeof(comp))
			continue;
		memcpy(comp, rest, cl);
		comp[cl] = '\0';
		for (size_t k = 0; k < nseen; k++)
			dup |= !strcmp(seen[k], comp);
		if (dup)
			continue;
		seen[nseen] = strdup(comp);
		if (!seen[nseen]) {
			r = -ENOMEM;
			break;
		}
		nseen++;
		r = add(arg, comp, oid, slash ? S_IFDIR : S_IFREG);
	}
	for (size_t k = 0; k < nseen; k++)
		free(seen[k]);
	free(seen);
	mlops_artifacts_free(names, sizes, n);
	return r;
}

int mlfs_list(struct mlfs *ml, const struct node *dir, mlfs_add_fn add, void *arg)
{
	int64_t pid = dir->project_id;
	json_t *v = NULL, *x;
	struct ml_loc l;
	bool local;
	size_t i;
	int r;

	if (!ml)
		return 0;
	if (dir->kind == NODE_PROJECT) {
		r = 0;
		for (int k = 0; k < MLOPS_KINDS && r == 0; k++)
			r = add(arg, mlops_kinds[k].route, "", S_IFDIR);
		return r == 0 ? add(arg, "pipelines", "", S_IFDIR) : r;
	}
	if (dir->kind == NODE_CTL_DIR) {
		r = add(arg, "processors", "", S_IFDIR);
		return r == 0 ? add(arg, "usage.json", "", S_IFREG) : r;
	}
	r = ml_parse(dir->path, &l);
	if (r < 0)
		return r;
	switch (l.w) {
	case W_EXPS:
		return ml_list_exps(ml, l.kind, pid, add, arg);
	case W_EXP: {
		char tree[41], commit[41], opath[NODE_PATH_MAX], job[32];

		r = ml_exp_view(ml, l.kind, pid, l.name, &v, &local);
		if (r < 0)
			return r;
		snprintf(job, sizeof(job), "%" PRId64, ml_job_of(v));
		r = ml_add_set(add, arg, ml_exp_files[l.kind], "");
		if (r == 0)
			r = add(arg, "ctl", "", S_IFREG);
		if (r == 0)
			r = add(arg, "ctl.error", "", S_IFREG);
		if (r == 0)
			r = add(arg, "outputs",
			        !local && ml_outputs(ml, pid, v, tree, commit, opath,
			                             sizeof(opath)) == 0
			            ? tree
			            : "",
			        S_IFDIR);
		if (r == 0)
			r = add(arg, "artifacts", job, S_IFDIR);
		break;
	}
	case W_EXP_OUTPUTS:
		return 0; /* no output folder on the branch (yet) */
	case W_EXP_ARTS:
	case W_JOB_ARTS:
		return ml_list_arts(ml, pid, ml_oid_job(dir), l.sub, dir->oid, add, arg);
	case W_PIPES:
		r = add(arg, "launch", "", S_IFREG);
		if (r == 0)
			r = add(arg, "launch.error", "", S_IFREG);
		if (r == 0 && mlops_pipelines(ml->m, pid, &v) == 0) {
			json_array_foreach(v, i, x)
			{
				char id[32];

				snprintf(id, sizeof(id), "%" PRId64,
				         (int64_t)jsonx_int(x, "id", 0));
				if ((r = add(arg, id, "", S_IFDIR)) < 0)
					break;
			}
		}
		break;
	case W_PIPE:
		r = ml_add_set(add, arg, ml_pipe_files, "");
		if (r == 0)
			r = add(arg, "ctl", "", S_IFREG);
		if (r == 0)
			r = add(arg, "ctl.error", "", S_IFREG);
		if (r == 0)
			r = add(arg, "jobs", "", S_IFDIR);
		break;
	case W_JOBS:
		r = mlops_jobs(ml->m, pid, l.pipeline, &v);
		if (r < 0)
			return r;
		json_array_foreach(v, i, x)
		{
			const char *name = jsonx_str(x, "name");
			char id[32];
			json_t *best = NULL;

			if (!name || !node_name_is_entry(name))
				continue;
			/* one entry per name: the newest job of that name */
			if (ml_job_by_name(ml, pid, l.pipeline, name, &best) < 0 ||
			    jsonx_int(best, "id", 0) != jsonx_int(x, "id", 0)) {
				json_decref(best);
				continue;
			}
			json_decref(best);
			snprintf(id, sizeof(id), "%" PRId64, (int64_t)jsonx_int(x, "id", 0));
			if ((r = add(arg, name, id, S_IFDIR)) < 0)
				break;
		}
		break;
	case W_JOB:
		r = ml_add_set(add, arg, ml_job_files, dir->oid);
		if (r == 0)
			r = add(arg, "artifacts", dir->oid, S_IFDIR);
		break;
	case W_PROCS:
		r = mlops_processors(ml->m, &v);
		if (r < 0)
			return r;
		json_array_foreach(v, i, x)
		{
			const char *slug = jsonx_str(x, "slug");

			if (slug && ml_slug_ok(slug) && (r = add(arg, slug, "", S_IFDIR)) < 0)
				break;
		}
		break;
	case W_PROC:
		r = ml_add_set(add, arg, ml_proc_files, "");
		break;
	default:
		r = -ENOTDIR;
		break;
	}
	json_decref(v);
	return r;
}

/* ---- files ---- */

static int64_t ml_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ml_log_fetch(struct mlfs *ml, struct mlfs_file *f)
{
	char *t = NULL;
	size_t len = 0;
	int r;

	f->fetched_ms = ml_now_ms();
	if (f->job_id <= 0)
		return 0;
	r = mlops_trace(ml->m, f->project_id, f->job_id, &t, &len);
	if (r < 0)
		return r;
	/* a log only grows; a shorter answer (a retried job restarts it) replaces it */
	free(f->data);
	f->data = t;
	f->len = len;
	return 0;
}

void mlfs_open(struct mlfs *ml, fuse_req_t req, const struct node *n, struct fuse_file_info *fi)
{
	struct mlfs_file *f;
	int acc = fi->flags & O_ACCMODE, r = 0;

	if (!ml) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	f->fd = -1;
	f->project_id = n->project_id;
	pthread_mutex_init(&f->lock, NULL);
	buf_init(&f->in, CTL_MAX);
	r = ml_parse(n->path, &f->loc);
	if (r < 0)
		goto out;
	if (n->kind == NODE_ML_CTL) {
		f->ctl = true;
		ml_error_key(f->errkey, sizeof(f->errkey), n->project_id, n->path);
	} else if (acc != O_RDONLY || (fi->flags & O_TRUNC)) {
		r = -EACCES;
		goto out;
	} else if (ml_is_log(&f->loc)) {
		bool fin;

		r = ml_log_job(ml, n, &f->loc, &f->job_id, &fin);
		if (r == 0)
			r = ml_log_fetch(ml, f);
		f->finished = fin;
	} else if (ml_is_artifact(&f->loc)) {
		r = mlops_artifact_open(ml->m, n->project_id, ml_oid_job(n), f->loc.sub, &f->fd);
		if (r == 0)
			fi->keep_cache = 1; /* a finished job's artifacts never change */
	} else {
		struct buf b = BUF_INIT(ML_RENDER_MAX);

		r = ml_render(ml, n, &f->loc, &b);
		f->len = b.len;
		f->data = buf_steal(&b);
	}
	if (r < 0)
		goto out;
	if (f->fd < 0)
		fi->direct_io = 1; /* generated: sizes are only known once rendered */
	fi->nonseekable = 0;
	pthread_mutex_lock(&ml->lock);
	f->next = ml->handles.next;
	f->prev = &ml->handles;
	f->next->prev = f;
	ml->handles.next = f;
	pthread_mutex_unlock(&ml->lock);
	fi->fh = (uint64_t)(uintptr_t)f | 1;
	if (fuse_reply_open(req, fi) != 0) {
		pthread_mutex_lock(&ml->lock);
		f->prev->next = f->next;
		f->next->prev = f->prev;
		pthread_mutex_unlock(&ml->lock);
		ml_file_free(f);
	}
	return;
out:
	if (r != -ENOENT)
		log_warn("open %s: %s", n->path, strerror(-r));
	ml_file_free(f);
	fuse_reply_err(req, -r);
}

static struct mlfs_file *ml_file(const struct fuse_file_info *fi)
{
	return (struct mlfs_file *)(uintptr_t)(fi->fh & ~(uint64_t)1);
}

static int ml_end(struct mlfs *ml, struct mlfs_file *f);

/* What reading a control file's descriptor shows: the fate of the request written on
 * it (live from the journal), or why the last write on it failed. */
static int ml_ctl_render(struct mlfs *ml, struct mlfs_file *f, struct buf *out)
{
	struct journal_entry e;
	json_t *o, *res;
	int r;

	if (!f->req_id)
		return buf_puts(out, f->err);
	r = journal_get(mlops_journal(ml->m), f->req_id, &e);
	if (r < 0)
		return r;
	res = e.result ? json_loads(e.result, 0, NULL) : NULL;
	o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:i, s:I, s:o, s:o}", "request", (json_int_t)e.id,
	              "key", e.key, "state", journal_state_name(e.state), "kind", e.kind, "target",
	              e.target, "attempts", e.attempts, "http_status", (json_int_t)e.http_status,
	              "error", e.error[0] ? json_string(e.error) : json_null(), "result",
	              res ? res : json_null());
	journal_entry_clear(&e);
	if (!o)
		return -ENOMEM;
	r = ml_dump(o, out);
	json_decref(o);
	return r;
}

void mlfs_read(struct mlfs *ml, fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct mlfs_file *f = ml_file(fi);

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (f->fd >= 0) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = f->fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (f->ctl) {
		struct buf b = BUF_INIT(ML_RENDER_MAX);

		/* reading the fate of the request ends it (reef launch writes, then reads
		 * the ticket back on the same descriptor) */
		ml_end(ml, f);
		/* rendered at offset 0, so a reader polling from the start sees it move */
		if (off == 0 || !f->data) {
			ml_ctl_render(ml, f, &b);
			free(f->data);
			f->len = b.len;
			f->data = buf_steal(&b);
		}
		buf_free(&b);
	} else if (ml_is_log(&f->loc) && (uint64_t)off + size > f->len && !f->finished &&
	           ml_now_ms() - f->fetched_ms >= ML_LOG_REFETCH_MS) {
		/* a reader at the end of a growing log (tail -f): ask again */
		int64_t job;
		bool fin = false;
		int r;

		if (f->loc.w == W_JOB_FILE) {
			json_t *j = NULL;

			if (mlops_job(ml->m, f->project_id, f->job_id, &j) == 0)
				fin = ml_finished(jsonx_str(j, "status"));
			json_decref(j);
		} else {
			json_t *v = NULL;
			bool local;

			if (ml_exp_view(ml, f->loc.kind, f->project_id, f->loc.name, &v, &local) ==
			    0) {
				fin = ml_finished(jsonx_str(v, "status"));
				job = ml_job_of(v);
				if (job > 0 && f->job_id <= 0)
					f->job_id = job;
			}
			json_decref(v);
		}
		r = ml_log_fetch(ml, f);
		if (r == 0)
			f->finished = fin;
	} else if (ml_is_growing(&f->loc) && (uint64_t)off + size > f->len && !f->finished &&
	           ml_now_ms() - f->fetched_ms >= ML_LOG_REFETCH_MS) {
		/* a reader at the end of metrics.jsonl (tail -f): render again; only what was
		 * added at the end is taken, so bytes already read never change under the
		 * reader (a retried run starts the file over: seen at the next open) */
		struct buf b = BUF_INIT(ML_RENDER_MAX);
		bool fin;

		if (ml_growing_render(ml, f->project_id, &f->loc, &b, &fin) == 0 &&
		    b.len >= f->len && (!f->len || !memcmp(b.data, f->data, f->len))) {
			free(f->data);
			f->len = b.len;
			f->data = buf_steal(&b);
			f->finished = fin;
		}
		f->fetched_ms = ml_now_ms();
		buf_free(&b);
	}
	{
		size_t o = (size_t)off < f->len ? (size_t)off : f->len;
		size_t n = f->len - o < size ? f->len - o : size;

		fuse_reply_buf(req, f->data ? f->data + o : "", n);
	}
	pthread_mutex_unlock(&f->lock);
}

/* Submits the request accumulated on f. 0 submitted, -EAGAIN incomplete, else refused. */
static int ml_submit(struct mlfs *ml, struct mlfs_file *f)
{
	char err[CTL_ERR_MAX] = "", name[CTL_NAME_MAX + 1];
	const char *d = f->in.data ? f->in.data : "";
	size_t len = f->in.len;
	int64_t id = 0;
	int r;

	switch (f->loc.w) {
	case W_EXP_LAUNCH:
		r = mlops_launch(ml->m, f->loc.kind, f->project_id, d, len, &id, name, err);
		break;
	case W_PIPE_LAUNCH:
		r = mlops_pipeline_launch(ml->m, f->project_id, d, len, &id, err);
		break;
	case W_EXP_CTL:
		r = mlops_launch_ctl(ml->m, f->loc.kind, f->project_id, f->loc.name, d, len, &id,
		                     err);
		break;
	case W_PIPE_CTL:
		r = mlops_pipeline_ctl(ml->m, f->project_id, f->loc.pipeline, d, len, &id, err);
		break;
	default:
		r = -EINVAL;
		snprintf(err, sizeof(err), "not a control file");
		break;
	}
	if (r == -EAGAIN)
		return r;
	if (r < 0) {
		ml_error_format(f->err, sizeof(f->err), r, err[0] ? err : strerror(-r));
		ml_error_set(ml, f->errkey, f->err);
		log_info("control write refused: %s", err[0] ? err : strerror(-r));
		buf_reset(&f->in);
		f->refused = r;
		return r;
	}
	f->req_id = id;
	ml_error_set(ml, f->errkey, NULL);
	return 0;
}

/* A request refused before it was sent: the descriptor says why, and so does .error. */
static int ml_refuse(struct mlfs *ml, struct mlfs_file *f, int r, const char *why)
{
	ml_error_format(f->err, sizeof(f->err), r, why);
	ml_error_set(ml, f->errkey, f->err);
	log_info("control write refused: %s", why);
	buf_reset(&f->in);
	f->refused = r;
	return r;
}

/* Ends the request written so far on f (at close, or at a read of its fate): sends it, or
 * refuses it. -EAGAIN (JSON never finished) is a refusal here: nothing more will come. */
static int ml_end(struct mlfs *ml, struct mlfs_file *f)
{
	int r;

	if (f->req_id || f->refused || f->in.len == 0)
		return f->refused;
	r = ml_submit(ml, f);
	if (r == -EAGAIN)
		r = ml_refuse(ml, f, -EINVAL, "unfinished JSON object at close: nothing was sent");
	return r;
}

/* What a launch still being written already says wrong that can be told now, so that a
 * shell writer hears it from its write (bash ignores close() errors of a redirection):
 * a complete processor= line naming a processor the server does not know. The rest is
 * checked at close, on the whole request. */
static int ml_precheck(struct mlfs *ml, struct mlfs_file *f, char err[CTL_ERR_MAX])
{
	const char *d = f->in.data, *nl = memrchr(f->in.data, '\n', f->in.len), *slug;
	json_t *in = NULL, *proc = NULL;
	bool lines;
	int r;

	if (f->loc.w != W_EXP_LAUNCH || !nl)
		return 0;
	r = ctl_parse(d, (size_t)(nl - d) + 1, &in, &lines, err);
	if (r < 0 || !lines) {
		json_decref(in);
		return 0; /* nothing complete yet, or JSON: all checked at close */
	}
	slug = jsonx_str(in, "processor") ? jsonx_str(in, "processor") : jsonx_str(in, "slug");
	r = slug ? mlops_processor(ml->m, slug, &proc) : 0;
	if (r == -ENOENT) {
		const char *url = NULL;

		/* no management API at all is not an unknown processor: say which */
		if (mlops_mgmt_state(ml->m, &url) == -ENOENT)
			snprintf(
			    err, CTL_ERR_MAX,
			    "no management API at %.200s (it answers 404 on /api/v1); mount with "
			    "-o mgmt=URL of the service",
			    url ? url : "the server");
		else
			mlops_unknown_processor(ml->m, f->loc.kind, slug, err);
	} else
		r = 0; /* offline or otherwise unsure: the check at close decides */
	json_decref(proc);
	json_decref(in);
	return r;
}

void mlfs_write(struct mlfs *ml, fuse_req_t req, const char *buf, size_t size, off_t off,
                struct fuse_file_info *fi)
{
	struct mlfs_file *f = ml_file(fi);
	char why[CTL_ERR_MAX];
	int r = 0;

	(void)off; /* requests accumulate in the descriptor, wherever it points */
	if (!f->ctl) {
		fuse_reply_err(req, EBADF);
		return;
	}
	pthread_mutex_lock(&f->lock);
	if (f->req_id) {
		r = ml_refuse(ml, f, -EINVAL,
		              "one request per open: this descriptor already sent one");
		f->refused = 0; /* the request sent stands; only this write is refused */
	} else if (f->refused) {
		r = f->refused; /* the rest of a refused request (printf writes line by line) */
	} else if (f->in.len + size > CTL_MAX) {
		snprintf(why, sizeof(why), "request of %zu bytes or more; at most %d",
		         f->in.len + size, CTL_MAX);
		r = ml_refuse(ml, f, -EFBIG, why);
	} else {
		/* a launch is sent at close: bash's printf sends one write per line, and a
		 * request is all of them; a line already wrong is refused now */
		bool command = f->loc.w == W_EXP_CTL || f->loc.w == W_PIPE_CTL;

		why[0] = '\0';
		r = buf_append(&f->in, buf, size);
		if (r == 0 && command) {
			r = ml_submit(ml, f); /* one word: its write is the whole request */
		} else if (r == 0) {
			r = ctl_prefix_check(f->in.data, f->in.len, why);
			if (r == 0)
				r = ml_precheck(ml, f, why);
			if (r < 0)
				ml_refuse(ml, f, r, why[0] ? why : strerror(-r));
		}
	}
	if (r < 0)
		f->told = true;
	pthread_mutex_unlock(&f->lock);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

/* Every close() of a descriptor (and of each dup of it) flushes: the request written so
 * far is sent (journaled before this returns) or refused, and close() returns the
 * refusal unless a write already did. */
void mlfs_flush(struct mlfs *ml, fuse_req_t req, struct fuse_file_info *fi)
{
	struct mlfs_file *f = ml_file(fi);
	int r = 0;

	pthread_mutex_lock(&f->lock);
	if (f->ctl) {
		r = ml_end(ml, f);
		if (f->told)
			r = 0;
		else if (r < 0)
			f->told = true;
	}
	pthread_mutex_unlock(&f->lock);
	fuse_reply_err(req, -r);
}

void mlfs_release(struct mlfs *ml, fuse_req_t req, struct fuse_file_info *fi)
{
	struct mlfs_file *f = ml_file(fi);

	pthread_mutex_lock(&ml->lock);
	f->prev->next = f->next;
	f->next->prev = f->prev;
	pthread_mutex_unlock(&ml->lock);
	/* the reader's close can overtake a read still replying under f->lock: wait for it */
	pthread_mutex_lock(&f->lock);
	pthread_mutex_unlock(&f->lock);
	ml_file_free(f);
	fuse_reply_err(req, 0);
}

void mlfs_status(struct mlfs *ml, json_t *status)
{
	int64_t q, failed, delivered;

	if (!ml)
		return;
	journal_counts(mlops_journal(ml->m), &q, &failed, &delivered);
	json_object_set_new(status, "queued_control_writes", json_integer(q));
	json_object_set_new(status, "control_writes",
	                    json_pack("{s:I, s:I, s:I}", "queued", (json_int_t)q, "failed",
	                              (json_int_t)failed, "delivered", (json_int_t)delivered));
}
