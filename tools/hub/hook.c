/* reef-hub's git hooks and push records (hook.h). */
#include "hook.h"

#include <errno.h>
#include <git2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hub_ci.h"
#include "protect.h"
#include "reef/log.h"

#define HOOK_MAX_LINES 10000 /* ref updates in one push */
#define HOOK_MAX_LINE  4200  /* "<old> <new> <ref>\n", refs up to 4096 bytes */

static const char *const hook_names[] = {"pre-receive", "reference-transaction"};

bool hub_hook_name(const char *argv0)
{
	const char *base = strrchr(argv0, '/');

	base = base ? base + 1 : argv0;
	for (size_t i = 0; i < sizeof(hook_names) / sizeof(hook_names[0]); i++)
		if (!strcmp(base, hook_names[i]))
			return true;
	return false;
}

int hub_hooks_install(struct hub *hub)
{
	char exe[PATH_MAX], dir[PATH_MAX], link[PATH_MAX], cur[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		return log_ret(-errno, "hooks: cannot find this executable: %s", strerror(errno));
	exe[n] = '\0';
	if (hub_pathf(dir, sizeof(dir), "%s/hooks", hub->dir) < 0)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return log_ret(-errno, "hooks: mkdir %s: %s", dir, strerror(errno));
	for (size_t i = 0; i < sizeof(hook_names) / sizeof(hook_names[0]); i++) {
		if (hub_pathf(link, sizeof(link), "%s/%s", dir, hook_names[i]) < 0)
			return -ENAMETOOLONG;
		n = readlink(link, cur, sizeof(cur) - 1);
		if (n > 0 && (size_t)n == strlen(exe) && !memcmp(cur, exe, (size_t)n))
			continue;
		unlink(link);
		if (symlink(exe, link) < 0)
			return log_ret(-errno, "hooks: symlink %s: %s", link, strerror(errno));
	}
	return 0;
}

/* ---- inside the hook process ---- */

/* The hub that started this push still runs (pid reuse within one push is not a
 * concern: the pid would have to be recycled in the seconds a push takes). */
static bool hub_alive(void)
{
	const char *pid = getenv("REEF_HUB_PID");

	return pid && atoi(pid) > 1 && kill((pid_t)atoi(pid), 0) == 0;
}

/* Test knob: REEF_HUB_HOOK_DELAY="<pre-receive|committed>:<ms>" sleeps at that point of a
 * push, so tests can kill the hub while a push is in flight. */
static void hook_delay(const char *at)
{
	const char *d = getenv("REEF_HUB_HOOK_DELAY");
	size_t n = strlen(at);

	if (d && !strncmp(d, at, n) && d[n] == ':') {
		struct timespec ts;
		long ms = atol(d + n + 1);

		ts.tv_sec = ms / 1000;
		ts.tv_nsec = (ms % 1000) * 1000000L;
		nanosleep(&ts, NULL);
	}
}

static bool zero_sha(const char *s)
{
	return strspn(s, "0") == strlen(s);
}

/* old is an ancestor of new, asked of git itself: the pushed objects are still in the
 * quarantine directory, which git finds through the environment receive-pack set. */
static bool is_ancestor(const char *old, const char *new)
{
	pid_t pid = fork();
	int st = 0;

	if (pid < 0)
		return false;
	if (pid == 0) {
		execl("/usr/bin/git", "git", "merge-base", "--is-ancestor", old, new, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

struct hook_update {
	char old[65], new[65];
	char *ref;
};

static void refuse(const char *msg)
{
	/* git shows a hook's stderr on the client as "remote: ..." lines */
	fprintf(stderr, "GitLab: %s\n", msg);
}

/* The project's default branch (HEAD's target, existing or not) and whether the
 * repository has no branch at all. */
static void repo_head(const char *path, char *def, size_t n, bool *empty)
{
	git_repository *repo = NULL;
	git_reference *head = NULL, *br = NULL;
	git_branch_iterator *it = NULL;
	git_branch_t type;

	*def = '\0';
	*empty = true;
	if (git_repository_open_bare(&repo, path) < 0)
		return;
	if (git_reference_lookup(&head, repo, "HEAD") == 0 &&
	    git_reference_type(head) == GIT_REFERENCE_SYMBOLIC &&
	    !strncmp(git_reference_symbolic_target(head), "refs/heads/", 11))
		snprintf(def, n, "%s", git_reference_symbolic_target(head) + 11);
	if (git_branch_iterator_new(&it, repo, GIT_BRANCH_LOCAL) == 0 &&
	    git_branch_next(&br, &type, it) == 0)
		*empty = false;
	git_reference_free(br);
	git_branch_iterator_free(it);
	git_reference_free(head);
	git_repository_free(repo);
}

static int read_updates(struct hook_update **out, size_t *n_out)
{
	char line[HOOK_MAX_LINE + 2];
	struct hook_update *u = NULL;
	size_t n = 0;

	while (fgets(line, sizeof(line), stdin)) {
		char *sp1, *sp2, *end;
		struct hook_update *nu;

		end = strchr(line, '\n');
		if (!end || n >= HOOK_MAX_LINES)
			goto bad;
		*end = '\0';
		sp1 = strchr(line, ' ');
		sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
		if (!sp2 || sp1 - line > 64 || sp2 - sp1 - 1 > 64)
			goto bad;
		nu = realloc(u, (n + 1) * sizeof(*u));
		if (!nu)
			goto bad;
		u = nu;
		memcpy(u[n].old, line, (size_t)(sp1 - line));
		u[n].old[sp1 - line] = '\0';
		memcpy(u[n].new, sp1 + 1, (size_t)(sp2 - sp1 - 1));
		u[n].new[sp2 - sp1 - 1] = '\0';
		u[n].ref = strdup(sp2 + 1);
		if (!u[n].ref)
			goto bad;
		n++;
	}
	*out = u;
	*n_out = n;
	return 0;
bad:
	for (size_t i = 0; i < n; i++)
		free(u[i].ref);
	free(u);
	return -EINVAL;
}

/* GitLab's checks of every update; NULL when all pass. */
static const char *check_updates(struct hub *hub, const struct hub_project *p,
                                 const struct hub_user *u, enum hub_access acc,
                                 const struct hook_update *up, size_t n)
{
	const char *only = getenv("REEF_PUSH_ONLY_REF");
	char def[512];
	bool empty;

	repo_head(p->repo_path, def, sizeof(def), &empty);
	for (size_t i = 0; i < n; i++) {
		bool del = zero_sha(up[i].new), create = zero_sha(up[i].old);
		struct hub_protection pr;
		const char *msg;

		if (only && *only && strcmp(up[i].ref, only))
			return "You are not allowed to push code to this project.";
		if (!strncmp(up[i].ref, "refs/tags/", 10)) {
			/* lib/gitlab/checks/tag_check.rb */
			if (!create && acc < HUB_ACCESS_MAINTAINER)
				return "You are not allowed to change existing tags on this "
				       "project.";
			continue;
		}
		if (strncmp(up[i].ref, "refs/heads/", 11))
			continue;
		/* force is worth a git run only where a rule could forbid it */
		if (hub_protect_match(hub, p->id, empty && *def ? def : up[i].ref + 11, &pr) == 0 &&
		    !(del && *def && !strcmp(up[i].ref + 11, def)))
			continue;
		msg =
		    hub_protect_check(hub, p, u, acc, up[i].ref + 11, *def ? def : NULL, empty, del,
		                      !del && !create && !is_ancestor(up[i].old, up[i].new), false);
		if (msg)
			return msg;
	}
	return NULL;
}

static int record_updates(struct hub *hub, const struct hub_project *p, int64_t user_id,
                          const struct hook_update *up, size_t n)
{
	const char *push_id = getenv("REEF_PUSH_ID");
	bool pipeline = !getenv("REEF_PUSH_NO_PIPELINE");
	sqlite3_stmt *st = NULL;
	int r;

	if (!push_id || !*push_id)
		return -EINVAL;
	r = hub_db_err(sqlite3_exec(hub->db, "BEGIN IMMEDIATE", NULL, NULL, NULL));
	if (r < 0)
		return r;
	r = hub_db_err(sqlite3_prepare_v2(hub->db,
	                                  "INSERT INTO push_events(push_id, project_id, ref,"
	                                  " old_sha, new_sha, user_id, pipeline, created_at)"
	                                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%s'))",
	                                  -1, &st, NULL));
	for (size_t i = 0; r == 0 && i < n; i++) {
		if (zero_sha(up[i].new) ||
		    (strncmp(up[i].ref, "refs/heads/", 11) && strncmp(up[i].ref, "refs/tags/", 10)))
			continue;
		sqlite3_reset(st);
		sqlite3_bind_text(st, 1, push_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, p->id);
		sqlite3_bind_text(st, 3, up[i].ref, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, up[i].old, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, up[i].new, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 6, user_id);
		sqlite3_bind_int(st, 7, pipeline);
		if (sqlite3_step(st) != SQLITE_DONE)
			r = -EIO;
	}
	sqlite3_finalize(st);
	if (r == 0)
		r = hub_db_err(sqlite3_exec(hub->db, "COMMIT", NULL, NULL, NULL));
	if (r < 0)
		sqlite3_exec(hub->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

static int pre_receive(void)
{
	const char *dir = getenv("REEF_HUB_DIR"), *pid_s = getenv("REEF_PUSH_PROJECT");
	const char *uid_s = getenv("REEF_PUSH_USER");
	struct hub hub = {0};
	struct hub_project p;
	struct hub_user u;
	struct hook_update *up = NULL;
	const char *msg;
	size_t n = 0;
	int code = 1;

	if (!dir || !pid_s || !uid_s) {
		refuse("This repository accepts pushes through reef-hub only.");
		return 1;
	}
	if (read_updates(&up, &n) < 0) {
		refuse("The push's ref updates could not be read.");
		return 1;
	}
	git_libgit2_init();
	if (hub_db_open(&hub, dir, false) < 0 || hub_project_load(&hub, pid_s, &p) < 0 ||
	    hub_user_by_id(&hub, strtoll(uid_s, NULL, 10), &u) < 0) {
		refuse("Internal error: the push cannot be checked.");
		goto out;
	}
	msg = check_updates(&hub, &p, &u, hub_project_access(&hub, &p, &u), up, n);
	if (msg) {
		refuse(msg);
		goto out;
	}
	hook_delay("pre-receive");
	if (!hub_alive()) {
		refuse("The server stopped during the push; nothing was changed. Push again.");
		goto out;
	}
	if (record_updates(&hub, &p, u.id, up, n) < 0) {
		refuse("Internal error: the push cannot be recorded.");
		goto out;
	}
	code = 0;
out:
	for (size_t i = 0; i < n; i++)
		free(up[i].ref);
	free(up);
	hub_db_close(&hub);
	git_libgit2_shutdown();
	return code;
}

static int reference_transaction(const char *state)
{
	char buf[4096];

	/* git writes the updates to our stdin; read them all so it never sees EPIPE */
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
	if (!getenv("REEF_PUSH_ID"))
		return 0;
	if (!strcmp(state, "committed"))
		hook_delay("committed");
	/* "prepared": refs are locked and about to move; a push whose hub is gone must not
	 * land, as nothing would start its pipeline or tell its client. */
	if (!strcmp(state, "prepared") && !hub_alive())
		return 1;
	return 0;
}

int hub_hook_main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');

	base = base ? base + 1 : argv[0];
	log_set_ident("reef-hub hook");
	if (!strcmp(base, "pre-receive"))
		return pre_receive();
	if (!strcmp(base, "reference-transaction"))
		return reference_transaction(argc > 1 ? argv[1] : "");
	return 1;
}

/* ---- in the hub ---- */

struct push_row {
	int64_t id, project_id, user_id;
	char ref[HUB_MAX_PATH];
	char sha[65];
	bool pipeline;
};

void hub_push_events_run(struct hub *hub, const char *push_id)
{
	sqlite3_stmt *st = NULL;
	struct push_row *rows = NULL;
	size_t n = 0;

	if (sqlite3_prepare_v2(hub->db,
	                       push_id ? "SELECT id, project_id, user_id, ref, new_sha, pipeline"
	                                 " FROM push_events WHERE push_id = ?1 ORDER BY id"
	                               : "SELECT id, project_id, user_id, ref, new_sha, pipeline"
	                                 " FROM push_events ORDER BY id",
	                       -1, &st, NULL) != SQLITE_OK)
		return;
	if (push_id)
		sqlite3_bind_text(st, 1, push_id, -1, SQLITE_TRANSIENT);
	while (sqlite3_step(st) == SQLITE_ROW) {
		struct push_row *nr = realloc(rows, (n + 1) * sizeof(*rows));
		const unsigned char *ref = sqlite3_column_text(st, 3);
		const unsigned char *sha = sqlite3_column_text(st, 4);

		if (!nr)
			break;
		rows = nr;
		rows[n].id = sqlite3_column_int64(st, 0);
		rows[n].project_id = sqlite3_column_int64(st, 1);
		rows[n].user_id = sqlite3_column_int64(st, 2);
		snprintf(rows[n].ref, sizeof(rows[n].ref), "%s", ref ? (const char *)ref : "");
		snprintf(rows[n].sha, sizeof(rows[n].sha), "%s", sha ? (const char *)sha : "");
		rows[n].pipeline = sqlite3_column_int(st, 5) != 0;
		n++;
	}
	sqlite3_finalize(st);
	for (size_t i = 0; i < n; i++) {
		struct push_row *r = &rows[i];
		struct hub_project p;
		git_repository *repo = NULL;
		git_oid now;
		char id[32];
		bool tag = !strncmp(r->ref, "refs/tags/", 10);

		snprintf(id, sizeof(id), "%lld", (long long)r->project_id);
		/* only updates that landed: the ref points at the pushed commit */
		if (r->pipeline && hub_project_load(hub, id, &p) == 0 &&
		    git_repository_open_bare(&repo, p.repo_path) == 0 &&
		    git_reference_name_to_id(&now, repo, r->ref) == 0 &&
		    !strcmp(git_oid_tostr_s(&now), r->sha)) {
			if (!push_id)
				log_info("push to project %lld %s landed before a restart: running"
				         " its pipeline",
				         (long long)r->project_id, r->ref);
			hub_ci_on_push(hub, &p, r->ref + (tag ? 10 : 11), tag, r->sha, r->user_id);
		}
		git_repository_free(repo);
		if (sqlite3_prepare_v2(hub->db, "DELETE FROM push_events WHERE id = ?1", -1, &st,
		                       NULL) == SQLITE_OK) {
			sqlite3_bind_int64(st, 1, r->id);
			sqlite3_step(st);
			sqlite3_finalize(st);
		}
	}
	free(rows);
}
