/* Per-job resource limits (joblimits.h). A job's cgroups are named
 * reef-job-<hub pid>-<job id> under the hub's own cgroup of each hierarchy, so several
 * hubs on one machine never share one and a restarted hub can tell (by the pid) which
 * ones a dead hub left. */
#include "joblimits.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "reef/log.h"

#define JL_PREFIX         "reef-job-"
#define JL_MAX_DIRS       4
#define JL_COUNTERS_EVERY 0.1     /* seconds between reads of the cgroup counters */
#define JL_DISK_EVERY     1.0     /* shortest interval between workspace scans */
#define JL_DISK_EVERY_MAX 30.0    /* longest, for workspaces slow to measure */
#define JL_DISK_COST      20.0    /* a scan takes at most 1/20 of the time */
#define JL_SCAN_MAX       2000000 /* entries counted per scan */
#define JL_CPU_PERIOD     100000  /* cpu.max / cfs period, microseconds */
#define JL_CPU_HARD_EXTRA 5       /* RLIMIT_CPU: SIGXCPU at the limit, SIGKILL 5 s later */
#define JL_KILL_ROUNDS    50

/* The hierarchies a job may get a cgroup in: the unified one and, when a controller is
 * not available there, the cgroup v1 hierarchy holding it. */
enum jl_h { JL_V2, JL_V1_PIDS, JL_V1_MEMORY, JL_V1_CPU, JL_V1_CPUACCT, JL_N };

static const char *const jl_v1_names[JL_N] = {NULL, "pids", "memory", "cpu", "cpuacct"};

enum jl_rl { JL_RL_CPU, JL_RL_FSIZE, JL_RL_DATA, JL_RL_NPROC, JL_RL_N };

static const int jl_rl_res[JL_RL_N] = {RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_DATA, RLIMIT_NPROC};

static struct {
	struct joblim_conf conf;
	char base[JL_N][PATH_MAX]; /* where job cgroups are made; "" when nowhere */
	bool v2_pids, v2_memory, v2_cpu;
	bool shared_uid;
	int workers;
} jl = {.conf = JOBLIM_CONF_DEFAULT};

struct joblim {
	char dir[JL_N][PATH_MAX];   /* the job's cgroup in each hierarchy, "" if none */
	char procs[JL_N][PATH_MAX]; /* its cgroup.procs: the child cannot format paths */
	struct rlimit rl[JL_RL_N];
	bool rl_set[JL_RL_N];
	char watch[JL_MAX_DIRS][PATH_MAX];
	size_t n_watch;
	double next_counters, next_disk, disk_every;
	enum joblim_hit hit;
};

void joblim_conf_set(const struct joblim_conf *c)
{
	jl.conf = *c;
}

const struct joblim_conf *joblim_conf_get(void)
{
	return &jl.conf;
}

static double jl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int jl_read(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t got;

	if (fd < 0)
		return -errno;
	got = read(fd, buf, n - 1);
	close(fd);
	if (got < 0)
		return -errno;
	buf[got] = '\0';
	return 0;
}

static int jl_write(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t n = strlen(val);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, val, n) != (ssize_t)n)
		r = -errno;
	close(fd);
	return r;
}

static int jl_writef(const char *dir, const char *file, uint64_t v)
{
	char path[PATH_MAX + 64], val[32];

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	snprintf(val, sizeof(val), "%llu", (unsigned long long)v);
	return jl_write(path, val);
}

/* The value after "key " in a flat-keyed file (memory.events, cpu.stat, pids.events...). */
static int jl_keyed(const char *dir, const char *file, const char *key, uint64_t *v)
{
	char path[PATH_MAX + 64], buf[4096];
	size_t kn = strlen(key);

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	if (jl_read(path, buf, sizeof(buf)) < 0)
		return -ENOENT;
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, key, kn) && l[kn] == ' ') {
			*v = strtoull(l + kn + 1, NULL, 10);
			return 0;
		}
	return -ENOENT;
}

static bool jl_has_word(const char *list, const char *word, char sep)
{
	size_t n = strlen(word);

	for (const char *p = list; p && *p; p = strchr(p, sep) ? strchr(p, sep) + 1 : NULL)
		if (!strncmp(p, word, n) &&
		    (p[n] == sep || p[n] == '\0' || p[n] == '\n' || p[n] == ' '))
			return true;
	return false;
}

/* The mount point of the hierarchy: cgroup2 (ctl NULL) or the cgroup v1 one holding ctl. */
static int jl_mount_find(const char *ctl, char out[PATH_MAX])
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		char mnt[PATH_MAX], fstype[64], super[1024];
		const char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 ||
		    sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
			continue;
		if (!ctl ? !strcmp(fstype, "cgroup2")
		         : !strcmp(fstype, "cgroup") && jl_has_word(super, ctl, ',')) {
			snprintf(out, PATH_MAX, "%s", mnt);
			r = 0;
		}
	}
	fclose(f);
	return r;
}

/* The hub's own cgroup in the hierarchy: "0::PATH" for cgroup2, "N:ctl,...:PATH" for v1. */
static int jl_self_cgroup(const char *ctl, char out[PATH_MAX])
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char line[4096];
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		if (!c2)
			continue;
		*c2 = '\0';
		line[strcspn(line, "\n")] = '\0';
		c2[1 + strcspn(c2 + 1, "\n")] = '\0';
		if (!ctl ? c1 == line + 1 && line[0] == '0' && c1 + 1 == c2
		         : jl_has_word(c1 + 1, ctl, ',')) {
			snprintf(out, PATH_MAX, "%s", c2 + 1);
			r = 0;
		}
	}
	fclose(f);
	return r;
}

static int jl_base_find(const char *ctl, char out[PATH_MAX])
{
	char mnt[PATH_MAX], self[PATH_MAX];

	if (jl_mount_find(ctl, mnt) < 0 || jl_self_cgroup(ctl, self) < 0)
		return -ENOENT;
	if (snprintf(out, PATH_MAX, "%s%s", mnt, strcmp(self, "/") ? self : "") >= PATH_MAX)
		return -ENAMETOOLONG;
	/* creating a cgroup is what the hub needs; its own may be read-only (containers) */
	return access(out, W_OK) == 0 ? 0 : -EACCES;
}

/* Enables ctl for the children of the hub's v2 cgroup. The kernel refuses while the
 * cgroup itself holds processes (unless it is the root); when the hub is alone in it
 * (a systemd unit with Delegate=yes), the hub moves into a leaf child first. */
static bool jl_v2_enable(const char *base, const char *ctl)
{
	char path[PATH_MAX + 64], buf[4096], plus[32];
	int r;

	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", base);
	if (jl_read(path, buf, sizeof(buf)) == 0 && jl_has_word(buf, ctl, ' '))
		return true;
	snprintf(path, sizeof(path), "%s/cgroup.controllers", base);
	if (jl_read(path, buf, sizeof(buf)) < 0 || !jl_has_word(buf, ctl, ' '))
		return false;
	snprintf(plus, sizeof(plus), "+%s", ctl);
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", base);
	r = jl_write(path, plus);
	if (r == 0)
		return true;
	if (r != -EBUSY)
		return false;
	snprintf(path, sizeof(path), "%s/cgroup.procs", base);
	if (jl_read(path, buf, sizeof(buf)) < 0 || strtol(buf, NULL, 10) != getpid() ||
	    strchr(buf, '\n') != buf + strlen(buf) - 1)
		return false; /* other processes live there: not ours to move */
	snprintf(path, sizeof(path), "%s/reef-hub", base);
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return false;
	snprintf(path, sizeof(path), "%s/reef-hub/cgroup.procs", base);
	if (jl_write(path, "0") < 0)
		return false;
	log_info("ci: moved the hub into %s/reef-hub so job cgroups can get controllers", base);
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", base);
	return jl_write(path, plus) == 0;
}

/* Kills every member of one cgroup until it is empty (or gives up). */
static void jl_cgroup_kill(const char *dir, bool v2)
{
	char path[PATH_MAX + 64], buf[65536];

	if (!dir[0])
		return;
	if (v2) {
		snprintf(path, sizeof(path), "%s/cgroup.kill", dir);
		if (jl_write(path, "1") == 0)
			return;
	}
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	for (int round = 0; round < JL_KILL_ROUNDS; round++) {
		bool any = false;

		if (jl_read(path, buf, sizeof(buf)) < 0)
			return;
		for (char *p = buf; *p;) {
			long pid = strtol(p, &p, 10);

			if (pid > 0 && pid != getpid() && kill((pid_t)pid, SIGKILL) == 0)
				any = true;
			while (*p == '\n')
				p++;
		}
		if (!any)
			return;
		usleep(2000);
	}
}

/* Removes a job cgroup once its dying processes have left it. */
static void jl_cgroup_remove(const char *dir, bool v2)
{
	if (!dir[0])
		return;
	for (int i = 0; i < 200; i++) {
		if (rmdir(dir) == 0 || errno == ENOENT)
			return;
		if (errno != EBUSY) {
			break;
		}
		jl_cgroup_kill(dir, v2);
		usleep(10000);
	}
	log_warn("ci: cannot remove the job cgroup %s: %s", dir, strerror(errno));
}

/* Job cgroups of hubs that are gone (killed hubs, whose pid no longer runs). */
static void jl_sweep(const char *base, bool v2)
{
	DIR *d = opendir(base);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		char dir[PATH_MAX + 300];
		long pid;

		if (strncmp(e->d_name, JL_PREFIX, strlen(JL_PREFIX)) != 0)
			continue;
		pid = strtol(e->d_name + strlen(JL_PREFIX), NULL, 10);
		if (pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", base, e->d_name);
		log_info("ci: removing %s, left by a hub that is gone", dir);
		jl_cgroup_kill(dir, v2);
		jl_cgroup_remove(dir, v2);
	}
	closedir(d);
}

static const char *jl_pids_by(void)
{
	if (jl.v2_pids)
		return "cgroup v2 pids.max";
	if (jl.base[JL_V1_PIDS][0])
		return "cgroup v1 pids.max";
	if (jl.shared_uid)
		return "RLIMIT_NPROC, shared by all jobs";
	return NULL;
}

static const char *jl_memory_by(void)
{
	if (jl.v2_memory)
		return "cgroup v2 memory.max";
	if (jl.base[JL_V1_MEMORY][0])
		return "cgroup v1 memory.limit_in_bytes";
	return "RLIMIT_DATA, per process";
}

static const char *jl_cpu_by(void)
{
	if (jl.base[JL_V2][0])
		return "cgroup v2 cpu.stat";
	if (jl.base[JL_V1_CPUACCT][0])
		return "cgroup v1 cpuacct.usage";
	return "RLIMIT_CPU, per process";
}

static const char *jl_rate_by(void)
{
	if (jl.v2_cpu)
		return "cgroup v2 cpu.max";
	if (jl.base[JL_V1_CPU][0])
		return "cgroup v1 cpu.cfs_quota_us";
	return NULL;
}

void joblim_probe(bool shared_uid, int workers)
{
	const struct joblim_conf *c = &jl.conf;
	const char *env;
	bool no_cg;

	jl.shared_uid = shared_uid;
	jl.workers = workers;
	for (int h = 0; h < JL_N; h++)
		jl.base[h][0] = '\0';
	jl.v2_pids = jl.v2_memory = jl.v2_cpu = false;
	/* REEF_HUB_JOB_CGROUPS=0: rlimits only, as on a host without writable cgroups */
	no_cg = (env = getenv("REEF_HUB_JOB_CGROUPS")) && !strcmp(env, "0");
	if (no_cg)
		log_info("ci: job cgroups disabled (REEF_HUB_JOB_CGROUPS=0)");
	if (!no_cg && jl_base_find(NULL, jl.base[JL_V2]) == 0) {
		jl.v2_pids = c->pids && jl_v2_enable(jl.base[JL_V2], "pids");
		jl.v2_memory = c->memory && jl_v2_enable(jl.base[JL_V2], "memory");
		jl.v2_cpu = c->cpu_milli && jl_v2_enable(jl.base[JL_V2], "cpu");
	} else {
		jl.base[JL_V2][0] = '\0';
	}
	/* hybrid hosts: what the unified hierarchy lacks may be in a v1 hierarchy */
	for (int h = JL_V1_PIDS; h < JL_N; h++) {
		bool want = (h == JL_V1_PIDS && c->pids && !jl.v2_pids) ||
		            (h == JL_V1_MEMORY && c->memory && !jl.v2_memory) ||
		            (h == JL_V1_CPU && c->cpu_milli && !jl.v2_cpu) ||
		            (h == JL_V1_CPUACCT && c->cpu_seconds && !jl.base[JL_V2][0]);

		if (!want || no_cg || jl_base_find(jl_v1_names[h], jl.base[h]) < 0)
			jl.base[h][0] = '\0';
	}
	for (int h = 0; h < JL_N; h++)
		if (jl.base[h][0])
			jl_sweep(jl.base[h], h == JL_V2);
	{
		char line[1024];

		joblim_describe(line, sizeof(line));
		log_info("ci: %s", line);
	}
	if (c->pids && !jl_pids_by())
		log_warn("ci: no cgroup with a pids controller can be created here and jobs run "
		         "as the hub's own user: the job process limit is NOT enforced");
	if (c->memory && !jl.v2_memory && !jl.base[JL_V1_MEMORY][0])
		log_warn("ci: no cgroup with a memory controller can be created here: the job "
		         "memory limit applies to each process (RLIMIT_DATA), not to the job");
	if (c->cpu_milli && !jl_rate_by())
		log_warn("ci: no cgroup with a cpu controller can be created here: the job CPU "
		         "rate limit is NOT enforced");
	if (!jl.base[JL_V2][0])
		log_warn("ci: no cgroup v2 job cgroups here: jobs are killed by process group and "
		         "sandbox only");
}

static void jl_size_format(uint64_t v, char *out, size_t n)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;

	while (u < 4 && v >= 1024 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	snprintf(out, n, "%llu %s", (unsigned long long)v, units[u]);
}

void joblim_duration_format(uint64_t s, char *out, size_t n)
{
	if (s >= 3600)
		snprintf(out, n, "%lluh%llum%llus", (unsigned long long)(s / 3600),
		         (unsigned long long)(s % 3600 / 60), (unsigned long long)(s % 60));
	else if (s >= 60)
		snprintf(out, n, "%llum%llus", (unsigned long long)(s / 60),
		         (unsigned long long)(s % 60));
	else
		snprintf(out, n, "%llus", (unsigned long long)s);
}

int joblim_duration_parse(const char *s, uint64_t *out)
{
	uint64_t total = 0;
	bool any = false;

	while (*s) {
		uint64_t v = 0, mul = 1;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		for (; *s >= '0' && *s <= '9'; s++) {
			if (v > (UINT64_MAX - 9) / 10)
				return -EINVAL;
			v = v * 10 + (uint64_t)(*s - '0');
		}
		if (*s == 'h')
			mul = 3600;
		else if (*s == 'm')
			mul = 60;
		else if (*s == 's')
			mul = 1;
		else if (*s || any)
			return -EINVAL; /* a bare number only alone */
		if (*s)
			s++;
		if (v > UINT64_MAX / mul / 4 || total > UINT64_MAX / 4)
			return -EINVAL;
		total += v * mul;
		any = true;
	}
	if (!any)
		return -EINVAL;
	*out = total;
	return 0;
}

void joblim_describe(char *out, size_t n)
{
	const struct joblim_conf *c = &jl.conf;
	char a[32], b[32], d[32], t[32], cpu[32];
	const char *rate = jl_rate_by();

	jl_size_format(c->memory, a, sizeof(a));
	jl_size_format(c->disk, b, sizeof(b));
	joblim_duration_format(c->cpu_seconds, d, sizeof(d));
	joblim_duration_format(c->timeout, t, sizeof(t));
	snprintf(cpu, sizeof(cpu), "%llu.%03llu", (unsigned long long)(c->cpu_milli / 1000),
	         (unsigned long long)(c->cpu_milli % 1000));
	snprintf(out, n,
	         "Job limits: processes %llu%s%s%s, memory %s%s%s%s, CPU time %s%s%s%s, "
	         "CPUs %s%s%s%s, disk %s%s, wall time %s%s",
	         (unsigned long long)c->pids, c->pids ? " (" : "",
	         c->pids ? (jl_pids_by() ? jl_pids_by() : "NOT enforced") : "",
	         c->pids ? ")" : " (none)", c->memory ? a : "none", c->memory ? " (" : "",
	         c->memory ? jl_memory_by() : "", c->memory ? ")" : "", c->cpu_seconds ? d : "none",
	         c->cpu_seconds ? " (" : "", c->cpu_seconds ? jl_cpu_by() : "",
	         c->cpu_seconds ? ")" : "", c->cpu_milli ? cpu : "all", c->cpu_milli ? " (" : "",
	         c->cpu_milli ? (rate ? rate : "NOT enforced") : "", c->cpu_milli ? ")" : "",
	         c->disk ? b : "none",
	         c->disk ? " (workspace measured every second or more, RLIMIT_FSIZE, tmpfs size)"
	                 : "",
	         c->timeout ? t : "none", c->timeout ? "" : "");
}

/* An rlimit no higher than what the hub itself has (an unprivileged hub cannot raise
 * its hard limits). */
static void jl_rl(struct joblim *l, enum jl_rl which, uint64_t soft, uint64_t hard)
{
	struct rlimit cur;

	if (getrlimit(jl_rl_res[which], &cur) < 0)
		return;
	if (cur.rlim_max != RLIM_INFINITY && hard > cur.rlim_max)
		hard = cur.rlim_max;
	if (soft > hard)
		soft = hard;
	l->rl[which].rlim_cur = (rlim_t)soft;
	l->rl[which].rlim_max = (rlim_t)hard;
	l->rl_set[which] = true;
}

int joblim_new(struct joblim **out, int64_t job_id, const char *const dirs[])
{
	const struct joblim_conf *c = &jl.conf;
	struct joblim *l = calloc(1, sizeof(*l));
	int r = 0;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	for (size_t i = 0; dirs && dirs[i] && l->n_watch < JL_MAX_DIRS; i++)
		snprintf(l->watch[l->n_watch++], PATH_MAX, "%s", dirs[i]);
	l->disk_every = JL_DISK_EVERY;
	for (int h = 0; h < JL_N; h++) {
		if (!jl.base[h][0])
			continue;
		if (snprintf(l->dir[h], PATH_MAX, "%s/" JL_PREFIX "%ld-%lld", jl.base[h],
		             (long)getpid(), (long long)job_id) >= PATH_MAX ||
		    snprintf(l->procs[h], PATH_MAX, "%s/cgroup.procs", l->dir[h]) >= PATH_MAX) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		if (mkdir(l->dir[h], 0755) < 0 && errno != EEXIST) {
			r = -errno;
			log_error("ci: job %lld: cannot create the cgroup %s: %s",
			          (long long)job_id, l->dir[h], strerror(errno));
			goto fail;
		}
	}
	/* limits on the cgroups: a failure here is a hub problem, the job does not run */
	if (jl.v2_pids && (r = jl_writef(l->dir[JL_V2], "pids.max", c->pids)) < 0)
		goto fail_set;
	if (jl.v2_memory) {
		if ((r = jl_writef(l->dir[JL_V2], "memory.max", c->memory)) < 0)
			goto fail_set;
		/* absent without swap accounting; then there is no swap to limit */
		jl_writef(l->dir[JL_V2], "memory.swap.max", 0);
		/* an OOM kill takes the whole job, as a container's would */
		jl_writef(l->dir[JL_V2], "memory.oom.group", 1);
	}
	if (jl.v2_cpu) {
		char path[PATH_MAX + 64], val[64];

		snprintf(path, sizeof(path), "%s/cpu.max", l->dir[JL_V2]);
		snprintf(val, sizeof(val), "%llu %d",
		         (unsigned long long)(c->cpu_milli * JL_CPU_PERIOD / 1000), JL_CPU_PERIOD);
		if ((r = jl_write(path, val)) < 0)
			goto fail_set;
	}
	if (l->dir[JL_V1_PIDS][0] && (r = jl_writef(l->dir[JL_V1_PIDS], "pids.max", c->pids)) < 0)
		goto fail_set;
	if (l->dir[JL_V1_MEMORY][0]) {
		if ((r = jl_writef(l->dir[JL_V1_MEMORY], "memory.limit_in_bytes", c->memory)) < 0)
			goto fail_set;
		jl_writef(l->dir[JL_V1_MEMORY], "memory.memsw.limit_in_bytes", c->memory);
	}
	if (l->dir[JL_V1_CPU][0] &&
	    ((r = jl_writef(l->dir[JL_V1_CPU], "cpu.cfs_period_us", JL_CPU_PERIOD)) < 0 ||
	     (r = jl_writef(l->dir[JL_V1_CPU], "cpu.cfs_quota_us",
	                    c->cpu_milli * JL_CPU_PERIOD / 1000)) < 0))
		goto fail_set;
	/* rlimits: per process, so backstops where a cgroup counts the whole job */
	if (c->cpu_seconds)
		jl_rl(l, JL_RL_CPU, c->cpu_seconds, c->cpu_seconds + JL_CPU_HARD_EXTRA);
	if (c->disk)
		jl_rl(l, JL_RL_FSIZE, c->disk, c->disk);
	if (c->memory && !jl.v2_memory && !l->dir[JL_V1_MEMORY][0])
		jl_rl(l, JL_RL_DATA, c->memory, c->memory);
	/* RLIMIT_NPROC counts every process of the uid: only meaningful for the job uid,
	 * which all concurrent jobs share, hence the limit times the workers */
	if (c->pids && !jl.v2_pids && !l->dir[JL_V1_PIDS][0] && jl.shared_uid)
		jl_rl(l, JL_RL_NPROC, c->pids * (uint64_t)(jl.workers > 0 ? jl.workers : 1),
		      c->pids * (uint64_t)(jl.workers > 0 ? jl.workers : 1));
	*out = l;
	return 0;
fail_set:
	log_error("ci: job %lld: cannot set the job's cgroup limits: %s", (long long)job_id,
	          strerror(-r));
fail:
	joblim_free(l);
	return r;
}

void joblim_kill(struct joblim *l)
{
	if (!l)
		return;
	for (int h = 0; h < JL_N; h++)
		jl_cgroup_kill(l->dir[h], h == JL_V2);
}

void joblim_free(struct joblim *l)
{
	if (!l)
		return;
	joblim_kill(l);
	for (int h = 0; h < JL_N; h++)
		jl_cgroup_remove(l->dir[h], h == JL_V2);
	free(l);
}

int joblim_child_enter(const struct joblim *l)
{
	for (int h = 0; h < JL_N; h++) {
		int fd;

		if (!l->procs[h][0])
			continue;
		fd = open(l->procs[h], O_WRONLY | O_CLOEXEC);
		/* "0" is the writing process itself */
		if (fd < 0 || write(fd, "0", 1) != 1) {
			int e = errno;

			if (fd >= 0)
				close(fd);
			return -e;
		}
		close(fd);
	}
	for (int i = 0; i < JL_RL_N; i++)
		if (l->rl_set[i] && setrlimit(jl_rl_res[i], &l->rl[i]) < 0)
			return -errno;
	return 0;
}

static __thread uint64_t jl_scan_bytes;
static __thread size_t jl_scan_n;

static int jl_scan_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag != FTW_NS && flag != FTW_DNR)
		jl_scan_bytes += (uint64_t)sb->st_blocks * 512 /
		                 (sb->st_nlink > 1 && !S_ISDIR(sb->st_mode) ? sb->st_nlink : 1);
	return ++jl_scan_n >= JL_SCAN_MAX ? 1 : 0;
}

static uint64_t jl_disk_use(const struct joblim *l)
{
	uint64_t total = 0;

	for (size_t i = 0; i < l->n_watch; i++) {
		jl_scan_bytes = 0;
		jl_scan_n = 0;
		nftw(l->watch[i], jl_scan_cb, 16, FTW_PHYS | FTW_MOUNT);
		total += jl_scan_bytes;
	}
	return total;
}

static enum joblim_hit jl_counters(const struct joblim *l)
{
	const struct joblim_conf *c = &jl.conf;
	uint64_t v;

	if (jl.v2_memory && jl_keyed(l->dir[JL_V2], "memory.events", "oom_kill", &v) == 0 && v)
		return JOBLIM_MEMORY;
	if (l->dir[JL_V1_MEMORY][0] &&
	    jl_keyed(l->dir[JL_V1_MEMORY], "memory.oom_control", "oom_kill", &v) == 0 && v)
		return JOBLIM_MEMORY;
	if (jl.v2_pids && jl_keyed(l->dir[JL_V2], "pids.events", "max", &v) == 0 && v)
		return JOBLIM_PIDS;
	if (l->dir[JL_V1_PIDS][0] && jl_keyed(l->dir[JL_V1_PIDS], "pids.events", "max", &v) == 0 &&
	    v)
		return JOBLIM_PIDS;
	if (c->cpu_seconds && l->dir[JL_V2][0] &&
	    jl_keyed(l->dir[JL_V2], "cpu.stat", "usage_usec", &v) == 0 &&
	    v >= c->cpu_seconds * 1000000)
		return JOBLIM_CPU;
	if (c->cpu_seconds && l->dir[JL_V1_CPUACCT][0]) {
		char path[PATH_MAX + 64], buf[64];

		snprintf(path, sizeof(path), "%s/cpuacct.usage", l->dir[JL_V1_CPUACCT]);
		if (jl_read(path, buf, sizeof(buf)) == 0 &&
		    strtoull(buf, NULL, 10) >= c->cpu_seconds * 1000000000ull)
			return JOBLIM_CPU;
	}
	return JOBLIM_NONE;
}

enum joblim_hit joblim_check(struct joblim *l, double now)
{
	if (!l || l->hit)
		return l ? l->hit : JOBLIM_NONE;
	if (now >= l->next_counters) {
		l->next_counters = now + JL_COUNTERS_EVERY;
		l->hit = jl_counters(l);
	}
	if (!l->hit && jl.conf.disk && now >= l->next_disk) {
		double t0 = jl_now(), took;

		if (jl_disk_use(l) > jl.conf.disk)
			l->hit = JOBLIM_DISK;
		took = jl_now() - t0;
		l->disk_every = took * JL_DISK_COST;
		if (l->disk_every < JL_DISK_EVERY)
			l->disk_every = JL_DISK_EVERY;
		if (l->disk_every > JL_DISK_EVERY_MAX)
			l->disk_every = JL_DISK_EVERY_MAX;
		l->next_disk = now + took + l->disk_every;
	}
	return l->hit;
}

enum joblim_hit joblim_verdict(struct joblim *l, int code)
{
	if (!l)
		return JOBLIM_NONE;
	if (l->hit)
		return l->hit;
	l->hit = jl_counters(l);
	if (!l->hit && code == 128 + SIGXFSZ)
		l->hit = JOBLIM_DISK;
	else if (!l->hit && code == 128 + SIGXCPU)
		l->hit = JOBLIM_CPU;
	else if (!l->hit && code != 0 && jl.conf.disk && jl_disk_use(l) > jl.conf.disk)
		l->hit = JOBLIM_DISK;
	return l->hit;
}

void joblim_message(enum joblim_hit hit, char *out, size_t n)
{
	const struct joblim_conf *c = &jl.conf;
	char v[32];

	switch (hit) {
	case JOBLIM_PIDS:
		snprintf(out, n,
		         "process limit reached: the job tried to run more than %llu "
		         "processes at once",
		         (unsigned long long)c->pids);
		break;
	case JOBLIM_MEMORY:
		jl_size_format(c->memory, v, sizeof(v));
		snprintf(out, n,
		         "out of memory: the job used more than its memory limit of %s "
		         "(OOM killed)",
		         v);
		break;
	case JOBLIM_CPU:
		joblim_duration_format(c->cpu_seconds, v, sizeof(v));
		snprintf(out, n, "CPU time limit reached: the job used more than %s of CPU time",
		         v);
		break;
	case JOBLIM_DISK:
		jl_size_format(c->disk, v, sizeof(v));
		snprintf(out, n, "disk limit reached: the job wrote more than %s to its workspace",
		         v);
		break;
	default:
		snprintf(out, n, "no limit reached");
		break;
	}
}

const char *joblim_failure_reason(enum joblim_hit hit)
{
	/* GitLab's failure_reason enum (app/models/concerns/enums/ci/commit_status.rb) has no
	 * resource values: a runner reports an OOM-killed or otherwise over-limit script as
	 * script_failure; only the wall time has its own, job_execution_timeout */
	(void)hit;
	return "script_failure";
}
