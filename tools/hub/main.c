/* reef-hub: command line. `serve` runs the server; the other commands administer the
 * data directory directly (SQLite in WAL mode, so they work while `serve` runs). */
#include "core.h"

#include <errno.h>
#include <git2.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blobcache.h"
#include "hook.h"
#include "joblimits.h"
#include "reef/log.h"
#include "runner.h"

static const char usage_text[] =
    "Usage: reef-hub COMMAND ...\n"
    "\n"
    "A one-binary server speaking a GitLab REST v4 subset and git over smart HTTP.\n"
    "Everything lives in one data directory DIR: hub.db (SQLite, WAL) and repos/.\n"
    "\n"
    "Commands:\n"
    "  init DIR\n"
    "      Create DIR (mode 0700) with an empty database and repos/.\n"
    "  serve DIR --listen HOST:PORT [--base-url URL] [--allow-remote] [--verbose]\n"
    "            [--blob-cache-limit SIZE] [--unsafe-runner] [--max-connections N]\n"
    "            [--max-connections-per-ip N] [--header-timeout SECONDS]\n"
    "            [--job-pids N] [--job-memory SIZE] [--job-cpu-seconds N]\n"
    "            [--job-cpus N] [--job-disk SIZE] [--job-timeout DURATION]\n"
    "            [--gitlab URL] [--allow-local-webhooks]\n"
    "      Serve the API under /api/v4 and git at /<namespace>/<project>.git.\n"
    "      HOST must be a loopback address unless --allow-remote; PORT 0 picks a free\n"
    "      port. Prints 'listening on http://HOST:PORT' once ready. --base-url sets the\n"
    "      external URL used in web_url, http_url_to_repo and Link headers\n"
    "      (default http://HOST:PORT). --blob-cache-limit caps DIR/blobcache, the files\n"
    "      raw answers of blobs over 1 MiB are sent from (bytes, or K/M/G/T; default\n"
    "      4G; 0 keeps none). SIGTERM or SIGINT stop it (exit 0).\n"
    "      --unsafe-runner runs CI jobs without their bubblewrap sandbox, as this\n"
    "      user with DIR readable (otherwise jobs fail when bwrap cannot run).\n"
    "      --max-connections (default 4096, at most what the descriptor limit allows)\n"
    "      and --max-connections-per-ip (default 256, per client address) cap open\n"
    "      connections; when full, the oldest idle one makes room. --header-timeout\n"
    "      (default 30, 5 when over half the slots are taken) is how long a connection\n"
    "      may wait for a request's headers. See docs/hub.md, Limits.\n"
    "      Each CI job is limited (0 turns a limit off; docs/hub.md, \"Job limits\"):\n"
    "      --job-pids processes at once (default 256), --job-memory (default 2G),\n"
    "      --job-cpu-seconds CPU time of all its processes (default 3600),\n"
    "      --job-cpus CPU rate such as 1.5 (default 0: all), --job-disk its workspace,\n"
    "      HOME and temporary files (default 1G), --job-timeout wall time such as 90s,\n"
    "      10m or 1h (default 1h, or REEF_HUB_JOB_TIMEOUT seconds).\n"
    "      --gitlab URL runs the management role beside the GitLab at URL: /api/v1\n"
    "      only (no /api/v4, git or runner), users authenticated with their GitLab\n"
    "      tokens, launches run as GitLab pipelines (docs/mgmt-api.md, \"Beside a\n"
    "      GitLab\").\n"
    "      --allow-local-webhooks lets project hooks reach loopback and private\n"
    "      addresses (GitLab's \"Allow requests to the local network from webhooks\";\n"
    "      off: such hooks are refused with 422 and never delivered).\n"
    "  user add DIR NAME [--admin] [--email E] [--name N]\n"
    "      Create a user (and its personal namespace NAME).\n"
    "  token create DIR USER [--name N] [--expires-at YYYY-MM-DD] [--scopes S,...]\n"
    "      Create a personal access token and print it once; only its SHA-256 is kept.\n"
    "      Scopes: api (default), read_api, read_user, read_repository,\n"
    "      write_repository, sudo, admin_mode.\n"
    "  project create DIR GROUP[/SUBGROUP...]/NAME --visibility private|internal|public\n"
    "                 --owner USER\n"
    "      Create a project with an empty bare repository (default branch main).\n"
    "      Missing groups are created and USER owns the first new one; a first path\n"
    "      segment equal to a user name puts the project in that user's namespace.\n"
    "      USER becomes the project's owner. Prints the project id.\n"
    "  member add DIR PROJECT USER LEVEL\n"
    "      Give USER access to PROJECT (id or full path). LEVEL: guest, reporter,\n"
    "      developer, maintainer, owner or 10, 20, 30, 40, 50.\n"
    "  --help\n"
    "      Show this text.\n";

static int usage(int code)
{
	fputs(usage_text, code ? stderr : stdout);
	return code;
}

/* Finds "--name value" among args (and removes nothing: callers check positionals). */
static const char *opt_value(int argc, char **argv, const char *name)
{
	for (int i = 0; i < argc - 1; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

static bool opt_flag(int argc, char **argv, const char *name)
{
	for (int i = 0; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return true;
	return false;
}

/* Every argument starting with "--" must be known; value options take the next one. */
static int opts_check(int argc, char **argv, int first, const char *const *values,
                      const char *const *flags)
{
	for (int i = first; i < argc; i++) {
		bool ok = false;

		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		for (size_t k = 0; values && values[k]; k++) {
			if (strcmp(argv[i], values[k]) == 0) {
				if (i + 1 >= argc) {
					fprintf(stderr, "reef-hub: %s needs a value\n", argv[i]);
					return -EINVAL;
				}
				i++;
				ok = true;
				break;
			}
		}
		for (size_t k = 0; !ok && flags && flags[k]; k++)
			ok = strcmp(argv[i], flags[k]) == 0;
		if (!ok) {
			fprintf(stderr, "reef-hub: unknown option %s\n", argv[i]);
			return -EINVAL;
		}
	}
	return 0;
}

static int cmd_init(const char *dir)
{
	struct hub hub = {0};
	char sub[PATH_MAX];
	int r;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "reef-hub: cannot create %s: %s\n", dir, strerror(errno));
		return 1;
	}
	chmod(dir, 0700);
	if (hub_pathf(sub, sizeof(sub), "%s/repos", dir) < 0)
		return 1;
	if (mkdir(sub, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "reef-hub: cannot create %s: %s\n", sub, strerror(errno));
		return 1;
	}
	if (hub_pathf(sub, sizeof(sub), "%s/tmp", dir) < 0)
		return 1;
	if (mkdir(sub, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "reef-hub: cannot create %s: %s\n", sub, strerror(errno));
		return 1;
	}
	r = hub_db_open(&hub, dir, true);
	hub_db_close(&hub);
	return r < 0 ? 1 : 0;
}

static int open_existing(struct hub *hub, const char *dir)
{
	char db[PATH_MAX];

	if (hub_pathf(db, sizeof(db), "%s/hub.db", dir) < 0)
		return -ENAMETOOLONG;
	if (access(db, F_OK) < 0) {
		fprintf(stderr, "reef-hub: %s is not a hub directory (run reef-hub init %s)\n", dir,
		        dir);
		return -ENOENT;
	}
	return hub_db_open(hub, dir, false);
}

static int cmd_user_add(int argc, char **argv)
{
	static const char *const values[] = {"--email", "--name", NULL};
	static const char *const flags[] = {"--admin", NULL};
	struct hub hub = {0};
	int64_t id;
	int r;

	if (argc < 5 || argv[3][0] == '-' || argv[4][0] == '-' ||
	    opts_check(argc, argv, 5, values, flags) < 0)
		return usage(2);
	if (open_existing(&hub, argv[3]) < 0)
		return 1;
	r = hub_user_add(&hub, argv[4], opt_value(argc, argv, "--name"),
	                 opt_value(argc, argv, "--email"), opt_flag(argc, argv, "--admin"), &id);
	hub_db_close(&hub);
	if (r == -EINVAL)
		fprintf(stderr, "reef-hub: invalid user name %s\n", argv[4]);
	else if (r == -EEXIST)
		fprintf(stderr, "reef-hub: user or namespace %s already exists\n", argv[4]);
	else if (r < 0)
		fprintf(stderr, "reef-hub: cannot add user %s: %s\n", argv[4], strerror(-r));
	return r < 0 ? 1 : 0;
}

static bool date_valid(const char *s)
{
	struct tm tm = {0};
	const char *end;

	if (strlen(s) != 10)
		return false;
	end = strptime(s, "%Y-%m-%d", &tm);
	return end && !*end;
}

static int cmd_token_create(int argc, char **argv)
{
	static const char *const values[] = {"--name", "--expires-at", "--scopes", NULL};
	struct hub hub = {0};
	struct hub_user u;
	const char *exp = opt_value(argc, argv, "--expires-at");
	const char *sc = opt_value(argc, argv, "--scopes");
	unsigned scopes = HUB_SCOPE_API;
	char tok[64];
	int r;

	if (argc < 5 || argv[3][0] == '-' || argv[4][0] == '-' ||
	    opts_check(argc, argv, 5, values, NULL) < 0)
		return usage(2);
	if (exp && !date_valid(exp)) {
		fprintf(stderr, "reef-hub: --expires-at wants YYYY-MM-DD\n");
		return 2;
	}
	if (sc && hub_scopes_parse(sc, &scopes) < 0) {
		fprintf(stderr, "reef-hub: unknown scope in %s\n", sc);
		return 2;
	}
	if (open_existing(&hub, argv[3]) < 0)
		return 1;
	r = hub_user_by_name(&hub, argv[4], &u);
	if (r < 0) {
		fprintf(stderr, "reef-hub: no user %s\n", argv[4]);
		hub_db_close(&hub);
		return 1;
	}
	r = hub_token_create(&hub, u.id, opt_value(argc, argv, "--name"), exp, scopes, tok);
	hub_db_close(&hub);
	if (r < 0) {
		fprintf(stderr, "reef-hub: cannot create a token: %s\n", strerror(-r));
		return 1;
	}
	printf("%s\n", tok);
	explicit_bzero(tok, sizeof(tok));
	return 0;
}

static int cmd_project_create(int argc, char **argv)
{
	static const char *const values[] = {"--visibility", "--owner", "--description", NULL};
	const char *vis = opt_value(argc, argv, "--visibility");
	const char *owner = opt_value(argc, argv, "--owner");
	struct hub hub = {0};
	struct hub_user u;
	char nspath[1024];
	const char *full, *slash;
	int64_t ns, id;
	int r;

	if (argc < 5 || argv[3][0] == '-' || argv[4][0] == '-' ||
	    opts_check(argc, argv, 5, values, NULL) < 0 || !owner)
		return usage(2);
	if (!vis)
		vis = "private";
	full = argv[4];
	slash = strrchr(full, '/');
	if (!slash || slash == full || strlen(full) >= sizeof(nspath) ||
	    !hub_path_valid(slash + 1)) {
		fprintf(stderr,
		        "reef-hub: project path must be GROUP[/SUBGROUP...]/NAME with GitLab "
		        "path characters\n");
		return 2;
	}
	if (strcmp(vis, "private") && strcmp(vis, "internal") && strcmp(vis, "public")) {
		fprintf(stderr, "reef-hub: --visibility must be private, internal or public\n");
		return 2;
	}
	memcpy(nspath, full, (size_t)(slash - full));
	nspath[slash - full] = '\0';
	if (open_existing(&hub, argv[3]) < 0)
		return 1;
	r = hub_user_by_name(&hub, owner, &u);
	if (r < 0) {
		fprintf(stderr, "reef-hub: no user %s\n", owner);
		goto out;
	}
	r = hub_namespace_ensure(&hub, nspath, u.id, &ns);
	if (r < 0) {
		fprintf(stderr, "reef-hub: cannot create namespace %s: %s\n", nspath,
		        r == -EINVAL ? "invalid path (no subgroups in a user namespace, at most "
		                       "20 levels of subgroups)"
		                     : strerror(-r));
		goto out;
	}
	r = hub_project_create(&hub, ns, slash + 1, slash + 1,
	                       opt_value(argc, argv, "--description"), vis, u.id, &id);
	if (r == -EEXIST)
		fprintf(stderr, "reef-hub: project %s already exists\n", full);
	else if (r < 0)
		fprintf(stderr, "reef-hub: cannot create project %s: %s\n", full, strerror(-r));
	else
		printf("%lld\n", (long long)id);
out:
	hub_db_close(&hub);
	return r < 0 ? 1 : 0;
}

static int cmd_member_add(int argc, char **argv)
{
	struct hub hub = {0};
	struct hub_project p;
	struct hub_user u;
	int level, r;

	if (argc != 7)
		return usage(2);
	level = hub_access_parse(argv[6]);
	if (level < 0) {
		fprintf(stderr, "reef-hub: bad access level %s\n", argv[6]);
		return 2;
	}
	if (open_existing(&hub, argv[3]) < 0)
		return 1;
	r = hub_project_load(&hub, argv[4], &p);
	if (r < 0) {
		fprintf(stderr, "reef-hub: no project %s\n", argv[4]);
		goto out;
	}
	r = hub_user_by_name(&hub, argv[5], &u);
	if (r < 0) {
		fprintf(stderr, "reef-hub: no user %s\n", argv[5]);
		goto out;
	}
	r = hub_member_set(&hub, p.id, u.id, level);
	if (r < 0)
		fprintf(stderr, "reef-hub: cannot add member: %s\n", strerror(-r));
out:
	hub_db_close(&hub);
	return r < 0 ? 1 : 0;
}

/* "123", "64M", "4G" or "4GiB" (binary units) into bytes; -EINVAL otherwise. */
static int size_parse(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	const char *u;
	uint64_t v = 0;
	unsigned shift = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (*s && (u = strchr(units, *s))) {
		shift = 10 * (unsigned)(u - units + 1);
		s++;
		if (strcmp(s, "iB") == 0)
			s += 2;
	}
	if (*s || (shift && v > UINT64_MAX >> shift))
		return -EINVAL;
	*out = v << shift;
	return 0;
}

/* "N" or "N.NNN" CPUs into thousandths; -EINVAL otherwise. */
static int cpus_parse(const char *s, uint64_t *out)
{
	uint64_t v = 0, frac = 0;
	int digits = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++)
		if ((v = v * 10 + (uint64_t)(*s - '0')) > 4096)
			return -EINVAL;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			if (digits++ < 3)
				frac = frac * 10 + (uint64_t)(*s - '0');
	if (*s)
		return -EINVAL;
	for (; digits < 3; digits++)
		frac *= 10;
	*out = v * 1000 + frac;
	return 0;
}

/* The job limits from the serve options (and REEF_HUB_JOB_TIMEOUT, older). */
static int job_limits_parse(int argc, char **argv)
{
	struct joblim_conf c = JOBLIM_CONF_DEFAULT;
	const char *v, *env = getenv("REEF_HUB_JOB_TIMEOUT");
	uint64_t n;

	if (env && *env && joblim_duration_parse(env, &n) == 0 && n > 0)
		c.timeout = n;
	if ((v = opt_value(argc, argv, "--job-pids")) && size_parse(v, &c.pids) < 0)
		goto bad;
	if ((v = opt_value(argc, argv, "--job-memory")) && size_parse(v, &c.memory) < 0)
		goto bad;
	if ((v = opt_value(argc, argv, "--job-disk")) && size_parse(v, &c.disk) < 0)
		goto bad;
	if ((v = opt_value(argc, argv, "--job-cpu-seconds")) &&
	    joblim_duration_parse(v, &c.cpu_seconds) < 0)
		goto bad;
	if ((v = opt_value(argc, argv, "--job-cpus")) && cpus_parse(v, &c.cpu_milli) < 0)
		goto bad;
	if ((v = opt_value(argc, argv, "--job-timeout")) &&
	    joblim_duration_parse(v, &c.timeout) < 0)
		goto bad;
	/* values the kernel files and rlimits take without overflow */
	if (c.pids > 4194304 || c.memory > ((uint64_t)1 << 60) || c.disk > ((uint64_t)1 << 60) ||
	    c.cpu_seconds > ((uint64_t)1 << 32) || c.timeout > ((uint64_t)1 << 32))
		goto bad;
	joblim_conf_set(&c);
	return 0;
bad:
	fprintf(stderr,
	        "reef-hub: bad job limit %s: --job-pids N, --job-memory/--job-disk SIZE "
	        "(such as 2G), --job-cpu-seconds/--job-timeout DURATION (such as 90s, "
	        "10m, 1h), --job-cpus N.NNN\n",
	        v ? v : "");
	return -EINVAL;
}

static int cmd_serve(int argc, char **argv)
{
	static const char *const values[] = {"--listen",
	                                     "--base-url",
	                                     "--blob-cache-limit",
	                                     "--max-connections",
	                                     "--max-connections-per-ip",
	                                     "--header-timeout",
	                                     "--job-pids",
	                                     "--job-memory",
	                                     "--job-cpu-seconds",
	                                     "--job-cpus",
	                                     "--job-disk",
	                                     "--job-timeout",
	                                     "--gitlab",
	                                     NULL};
	static const struct {
		const char *name;
		unsigned max;
	} counts[] = {{"--max-connections", 1u << 20},
	              {"--max-connections-per-ip", 1u << 20},
	              {"--header-timeout", 3600}};
	unsigned count_vals[3] = {0};
	static const char *const flags[] = {"--allow-remote", "--verbose", "--unsafe-runner",
	                                    "--allow-local-webhooks", NULL};
	const char *listen_at = opt_value(argc, argv, "--listen");
	const char *base = opt_value(argc, argv, "--base-url");
	const char *cache_limit = opt_value(argc, argv, "--blob-cache-limit");
	uint64_t limit = BLOBCACHE_DEFAULT_LIMIT;
	struct hub hub = {0};
	char tmp[PATH_MAX];
	int r;

	if (argc < 3 || argv[2][0] == '-' || opts_check(argc, argv, 3, values, flags) < 0)
		return usage(2);
	if (!listen_at)
		listen_at = "127.0.0.1:8080";
	if (base) {
		size_t n = strlen(base);

		if (n >= sizeof(hub.base_url) ||
		    (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0)) {
			fprintf(stderr, "reef-hub: --base-url must be an http(s) URL\n");
			return 2;
		}
		while (n > 0 && base[n - 1] == '/')
			n--;
		memcpy(hub.base_url, base, n);
		hub.base_url[n] = '\0';
	}
	if (cache_limit && size_parse(cache_limit, &limit) < 0) {
		fprintf(stderr, "reef-hub: --blob-cache-limit wants a size such as 4G or 512M\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		const char *v = opt_value(argc, argv, counts[i].name);
		char *end;
		unsigned long n;

		if (!v)
			continue;
		errno = 0;
		n = strtoul(v, &end, 10);
		if (errno || *end || end == v || n < 1 || n > counts[i].max) {
			fprintf(stderr, "reef-hub: %s wants a number from 1 to %u\n",
			        counts[i].name, counts[i].max);
			return 2;
		}
		count_vals[i] = (unsigned)n;
	}
	if (job_limits_parse(argc, argv) < 0)
		return 2;
	if (opt_value(argc, argv, "--gitlab")) {
		const char *gl = opt_value(argc, argv, "--gitlab");
		size_t n = strlen(gl);

		if (n >= sizeof(hub.gitlab_url) ||
		    (strncmp(gl, "http://", 7) != 0 && strncmp(gl, "https://", 8) != 0)) {
			fprintf(stderr, "reef-hub: --gitlab must be GitLab's http(s) URL\n");
			return 2;
		}
		while (n > 0 && gl[n - 1] == '/')
			n--;
		memcpy(hub.gitlab_url, gl, n);
		hub.gitlab_url[n] = '\0';
	}
	if (opt_flag(argc, argv, "--verbose"))
		log_set_level(LOG_LVL_DEBUG);
	ci_runner_unsafe_set(opt_flag(argc, argv, "--unsafe-runner"));
	hub.allow_local_webhooks = opt_flag(argc, argv, "--allow-local-webhooks");
	if (open_existing(&hub, argv[2]) < 0)
		return 1;
	if (hub_pathf(tmp, sizeof(tmp), "%s/tmp", argv[2]) == 0)
		mkdir(tmp, 0700);
	r = blobcache_init(hub.dir, limit);
	if (r < 0) {
		fprintf(stderr, "reef-hub: cannot prepare %s/blobcache: %s\n", hub.dir,
		        strerror(-r));
		hub_db_close(&hub);
		return 1;
	}
	r = hub_hooks_install(&hub);
	if (r < 0) {
		fprintf(stderr, "reef-hub: cannot install the git hooks in %s/hooks: %s\n", hub.dir,
		        strerror(-r));
		hub_db_close(&hub);
		return 1;
	}
	hub.max_conns = count_vals[0];
	hub.max_conns_per_ip = count_vals[1];
	hub.header_timeout = count_vals[2];
	/* A request thread's arena held ~100 KiB for a moment (SQLite's page caches of the
	 * membership query's temporary tables) and glibc gave it back at each free (128 KiB
	 * trim threshold), so each request faulted its pages in again: 8-17 ms for reefd's
	 * 100-path GraphQL request instead of 0.9 (docs/benchmarks.md, session 5). Keeping
	 * up to 8 MiB free per arena costs at most 8 MiB x (8 x cores) arenas. */
	mallopt(M_TRIM_THRESHOLD, 8 << 20);
	r = hub_serve(&hub, listen_at, opt_flag(argc, argv, "--allow-remote"));
	hub_db_close(&hub);
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	int code;

	/* started by git as one of the hub's push hooks (hook.h) */
	if (argc >= 1 && hub_hook_name(argv[0]))
		return hub_hook_main(argc, argv);
	log_set_ident("reef-hub");
	if (argc < 2)
		return usage(2);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0)
		return usage(0);
	if (strcmp(argv[1], "--version") == 0) {
		printf("reef-hub %s\n", REEF_VERSION);
		return 0;
	}
	git_libgit2_init();
	if (strcmp(argv[1], "init") == 0 && argc == 3)
		code = cmd_init(argv[2]);
	else if (strcmp(argv[1], "serve") == 0)
		code = cmd_serve(argc, argv);
	else if (argc >= 3 && strcmp(argv[1], "user") == 0 && strcmp(argv[2], "add") == 0)
		code = cmd_user_add(argc, argv);
	else if (argc >= 3 && strcmp(argv[1], "token") == 0 && strcmp(argv[2], "create") == 0)
		code = cmd_token_create(argc, argv);
	else if (argc >= 3 && strcmp(argv[1], "project") == 0 && strcmp(argv[2], "create") == 0)
		code = cmd_project_create(argc, argv);
	else if (argc >= 3 && strcmp(argv[1], "member") == 0 && strcmp(argv[2], "add") == 0)
		code = cmd_member_add(argc, argv);
	else
		code = usage(2);
	git_libgit2_shutdown();
	return code;
}
