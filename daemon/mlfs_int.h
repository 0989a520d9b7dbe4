/* Between the modules of the mount's experiments, pipelines and processors (mlfs.h):
 * mlfs.c (paths, control-file errors, lookups, listings, file handles, control writes)
 * and mlfs_view.c (what their files say: the launch views and the rendered content). */
#ifndef REEF_MLFS_INT_H
#define REEF_MLFS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctl.h"
#include "journal.h"
#include "mlfs.h"
#include "mlops.h"
#include "node.h"
#include "reef/buf.h"

#define ML_RENDER_MAX     ((size_t)64 << 20)
#define ML_ERRORS         64
#define ML_LOG_REFETCH_MS 200
#define ML_EXP_FILES_MAX  8

enum ml_what {
	W_NONE,
	W_EXPS,
	W_EXPS_README,
	W_EXP_LAUNCH,
	W_EXP_LAUNCH_ERR,
	W_EXP,
	W_EXP_FILE,
	W_EXP_CTL,
	W_EXP_CTL_ERR,
	W_EXP_OUTPUTS,
	W_EXP_ARTS,
	W_PIPES,
	W_PIPE_LAUNCH,
	W_PIPE_LAUNCH_ERR,
	W_PIPE,
	W_PIPE_FILE,
	W_PIPE_CTL,
	W_PIPE_CTL_ERR,
	W_JOBS,
	W_JOB,
	W_JOB_FILE,
	W_JOB_ARTS,
	W_PROCS,
	W_PROC,
	W_PROC_FILE,
	W_USAGE,
};

/* A path of the ML tree, taken apart. */
struct ml_loc {
	enum ml_what w;
	enum mlops_kind kind;     /* for W_EXP*: experiments, data pipelines or visualizations */
	char name[NODE_PATH_MAX]; /* experiment, job name or processor slug */
	int64_t pipeline;
	char file[32];           /* the file's name, for *_FILE */
	char sub[NODE_PATH_MAX]; /* below artifacts/: "" or "dir/file" */
};

/* The files of a launch, by kind: the first is the launch as the API shows it. */
extern const char *const ml_exp_files[MLOPS_KINDS][ML_EXP_FILES_MAX];
extern const char *const ml_pipe_files[];
extern const char *const ml_job_files[];
extern const char *const ml_proc_files[];

struct ml_error {
	char key[NODE_PATH_MAX + 32];
	char msg[CTL_ERR_MAX + 96];
	uint64_t seq;
};

struct mlfs_file {
	struct mlfs_file *prev, *next;
	int64_t project_id;
	struct ml_loc loc;
	char *data; /* a rendered snapshot */
	size_t len;
	int fd; /* an artifact member, or -1 */
	/* logs: read past the end asks again while the job runs */
	int64_t job_id;
	bool finished;
	int64_t fetched_ms;
	pthread_mutex_t lock;
	/* control files: a request is everything written between open and close */
	bool ctl;
	struct buf in;
	int64_t req_id;
	int refused; /* the request's negative errno once refused; later writes get it too */
	bool told;   /* the refusal already reached the writer (at a write or a close) */
	char err[CTL_ERR_MAX + 96];
	char errkey[NODE_PATH_MAX + 32];
};

struct mlfs {
	struct node_table *nodes;
	struct cache *cache;
	struct mlops *m;
	pthread_mutex_t lock; /* errors and handles */
	struct ml_error errors[ML_ERRORS];
	uint64_t err_seq;
	struct mlfs_file handles; /* list head */
};

/* mlfs.c */
char *ml_error_get(struct mlfs *ml, const char *key);
int ml_parse(const char *path, struct ml_loc *l);

/* mlfs_view.c */
int ml_arts(struct mlfs *ml, int64_t pid, int64_t job, char ***names, uint64_t **sizes, size_t *n);
int ml_arts_classify(char **names, uint64_t *sizes, size_t n, const char *sub, uint64_t *size);
int ml_dump(json_t *v, struct buf *out);
int ml_exp_view(struct mlfs *ml, enum mlops_kind k, int64_t pid, const char *name, json_t **out,
                bool *local);
bool ml_finished(const char *status);
bool ml_is_artifact(const struct ml_loc *l);
bool ml_is_log(const struct ml_loc *l);
int ml_job_by_name(struct mlfs *ml, int64_t pid, int64_t pipeline, const char *name, json_t **out);
int64_t ml_job_of(const json_t *exp);
int ml_log_job(struct mlfs *ml, const struct node *n, const struct ml_loc *l, int64_t *job,
               bool *finished);
int64_t ml_oid_job(const struct node *n);
int ml_outputs(struct mlfs *ml, int64_t pid, const json_t *exp, char tree[41], char commit[41],
               char *opath, size_t opath_len);
int ml_render(struct mlfs *ml, const struct node *n, const struct ml_loc *l, struct buf *out);
/* A file that only grows while its run goes (metrics.jsonl): a reader at its end asks
 * again, as for a log. */
bool ml_is_growing(const struct ml_loc *l);
/* Its content now, and whether the run has finished (nothing will be added). */
int ml_growing_render(struct mlfs *ml, int64_t pid, const struct ml_loc *l, struct buf *out,
                      bool *finished);

#endif
