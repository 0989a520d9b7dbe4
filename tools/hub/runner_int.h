/* Between the pipeline store and scheduler (runner.c) and the execution of one job
 * (runner_job.c): the runner's shared state, a worker slot, a claimed job. Private to
 * those two files. */
#ifndef REEF_HUB_RUNNER_INT_H
#define REEF_HUB_RUNNER_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include "joblimits.h"
#include "runner.h"

#define RN_MAX_WORKERS   64
#define RN_KILL_GRACE    3.0 /* seconds between SIGTERM and SIGKILL */
#define RN_AFTER_TIMEOUT 300 /* after_script budget, as GitLab's default */
#define RN_MAX_ARTIFACT  ((uint64_t)2 << 30)
#define RN_MAX_ART_FILES 100000
#define RN_MAX_ART_DEPTH 64
#define RN_MAX_FILE_VAR  ((size_t)1 << 20)
#define RN_MAX_TRACE     ((off_t)4 << 20) /* GitLab runner's default output_limit */
#define RN_MASK_MAX      128              /* longest value masked in traces */
#define RN_MASKED        "[MASKED]"
#define RN_EPF_AT        ".reef-epf" /* in the sandbox: reef-epf's directory, in the data dir */
#define RN_RELAY_CHUNK   65536
#define RN_NOBODY        65534 /* uid/gid of jobs when the hub is root and "nobody" is unknown */

/* Replaces a secret's occurrences in a job's output by [MASKED]. Output arrives in
 * arbitrary pieces, so the longest tail that could still become the secret is held back
 * until the next piece (or the end of the command) decides. */
struct rn_mask {
	const char *secret; /* NULL: nothing to mask */
	size_t len;
	char held[RN_MASK_MAX];
	size_t n_held;
};

struct rn_slot {
	int64_t job_id;
	pid_t pid;
	int cancel; /* set by API threads, read by the worker (atomics) */
	pthread_t thread;
	struct rn_mask mask; /* the running job's token; worker-private */
	enum joblim_hit hit; /* the limit the running script ran into */
};

struct rn_state {
	struct hub *h;
	sqlite3 *db;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stopping;
	int n_workers;
	struct rn_slot *slots;
	char epf_dir[PATH_MAX];
	char dir[PATH_MAX]; /* the data directory, absolute: jobs run elsewhere */
	ci_pipeline_hook_fn hook;
	ci_events_hook_fn events;
	bool started;
	bool store_only; /* the management role: the database, no workers */
	/* the job sandbox, probed at start */
	bool unsafe;            /* --unsafe-runner: no sandbox at all */
	bool sandbox_ok;        /* bwrap works here */
	char sandbox_err[512];  /* why not, for traces */
	char bwrap[PATH_MAX];   /* absolute path of bwrap */
	char setpriv[PATH_MAX]; /* absolute path of setpriv, used when root */
	bool drop;              /* the hub is root: jobs run as job_uid/job_gid */
	uid_t job_uid;
	gid_t job_gid;
};
extern struct rn_state rn;

struct rn_job {
	int64_t id, pipeline_id, pipeline_iid, project_id, user_id;
	char name[CI_MAX_NAME + 1];
	char stage[CI_MAX_NAME + 1];
	char ref[HUB_MAX_PATH];
	char sha[41];
	char source[32];
	bool tag;
	json_t *spec;
	json_t *variables; /* pipeline variables */
	char token[64];
	char ro_dir[PATH_MAX]; /* bound read-only into the sandbox ("" for none) */
};

/* Runs a claimed job to its end (lock not held): status and failure reason, *art the
 * artifacts' size (0 for none). */
void rn_job_run(struct rn_slot *slot, struct rn_job *j, char status[24], char reason[64],
                uint64_t *art);
/* Finds bwrap and setpriv and checks that a sandbox can be made here. */
void rn_sandbox_probe(void);
/* Appends a formatted line to a trace descriptor. */
void rn_trace(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes a directory tree (a job's workspace). */
void rn_rmtree(const char *path);

#endif
