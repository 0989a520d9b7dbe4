/* Per-job resource limits of the embedded runner: processes, memory, CPU time, CPU rate,
 * workspace disk and wall time (docs/hub.md, "Job limits"). Each job gets its own
 * cgroup where the hub may create one: in the cgroup v2 hierarchy (pids.max,
 * memory.max, memory.swap.max, memory.oom.group, cpu.max; cpu.stat and cgroup.kill need
 * no controller) and, on hybrid hosts whose pids/memory/cpu controllers sit in cgroup v1
 * hierarchies, in those (pids.max, memory.limit_in_bytes, cpu.cfs_quota_us,
 * cpuacct.usage). What no cgroup covers falls back to rlimits set before exec, and the
 * workspace total is measured during the run. joblim_probe logs which mechanism
 * enforces what. */
#ifndef REEF_HUB_JOBLIMITS_H
#define REEF_HUB_JOBLIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 0 means "no limit" for every field. */
struct joblim_conf {
	uint64_t pids;        /* processes and threads of the job at once */
	uint64_t memory;      /* bytes of memory (swap not allowed on top) */
	uint64_t cpu_seconds; /* CPU time of all the job's processes together */
	uint64_t cpu_milli;   /* CPU rate: 1000 = one core */
	uint64_t disk;        /* bytes in the workspace, HOME, TMPDIR and /tmp */
	uint64_t timeout;     /* wall seconds of the job */
};

#define JOBLIM_CONF_DEFAULT                                                                        \
	{                                                                                          \
		.pids = 256, .memory = (uint64_t)2 << 30, .cpu_seconds = 3600, .cpu_milli = 0,     \
		.disk = (uint64_t)1 << 30, .timeout = 3600                                         \
	}

/* Why a job was stopped. */
enum joblim_hit { JOBLIM_NONE, JOBLIM_PIDS, JOBLIM_MEMORY, JOBLIM_CPU, JOBLIM_DISK };

/* Before joblim_probe: the hub's limits (`reef-hub serve --job-*`). */
void joblim_conf_set(const struct joblim_conf *c);
const struct joblim_conf *joblim_conf_get(void);
/* At runner start: finds the cgroup hierarchies the hub may create job cgroups in,
 * removes job cgroups a dead hub left, and logs how each limit is enforced.
 * shared_uid: jobs run as one dedicated uid (the hub is root), so RLIMIT_NPROC can bound
 * their processes when no pids controller can. */
void joblim_probe(bool shared_uid, int workers);
/* One line for the job's trace: the limits and what enforces them. */
void joblim_describe(char *out, size_t n);

struct joblim;
/* A job's limits: its cgroups (named after the hub's pid and the job id) and the
 * directories (NULL-terminated, at most 4) whose total size is its disk use. */
int joblim_new(struct joblim **out, int64_t job_id, const char *const dirs[]);
/* Kills what is left of the job and removes its cgroups; accepts NULL. */
void joblim_free(struct joblim *l);
/* In the forked child, before exec: joins the job's cgroups and sets the rlimits.
 * Async-signal-safe; a negative errno when a cgroup could not be joined. */
int joblim_child_enter(const struct joblim *l);
/* While the job runs: reads the cgroups' counters (at most every 100 ms) and the disk
 * use (at most every second, less often when measuring is slow). */
enum joblim_hit joblim_check(struct joblim *l, double now);
/* After a script ended with code (exit code or 128+signal): a limit it ran into. */
enum joblim_hit joblim_verdict(struct joblim *l, int code);
/* Kills every process of the job (cgroup.kill, or each member of its cgroups). */
void joblim_kill(struct joblim *l);
/* The last line of a job's trace for a hit (without "ERROR: Job failed: ") and the
 * job's failure_reason. */
void joblim_message(enum joblim_hit hit, char *out, size_t n);
const char *joblim_failure_reason(enum joblim_hit hit);
/* "1h0m0s"-style duration as GitLab Runner prints its timeouts. */
void joblim_duration_format(uint64_t seconds, char *out, size_t n);
/* Parses "3600", "90s", "10m", "2h" or "1h30m" into seconds; -EINVAL otherwise. */
int joblim_duration_parse(const char *s, uint64_t *out);

#endif
