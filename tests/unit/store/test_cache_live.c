/* Drives the cache layer (daemon/cache.c over daemon/remote/) against a live server, one
 * command per stdin line (fields separated by tabs, so paths may hold spaces), one
 * answer per stdout line, so that
 * tests/integration/test_cache_layer.py can compare what it returns with a git checkout.
 *
 *   test_cache_live SERVER CACHE_DIR BRANCH_TTL_MS      (token in $REEF_TOKEN)
 *
 * Commands (answers are "err <errno-name>" on failure):
 *   user                           -> ok <username>
 *   projects                       -> ok <path> <path> ...
 *   project PATH                   -> ok <id> <default branch or ->
 *   refs PID branch|tag            -> ok <name> <name> ...
 *   resolve PID branch|tag|commit NAME -> ok <commit>
 *   root PID COMMIT                -> ok <root tree id>
 *   ls PID COMMIT PATH             -> ok <n>, then n lines "<mode> <oid> <size> <name>"
 *                                     (PATH "/" for the root; walks from the root tree)
 *   stat PID COMMIT PATH           -> ok <mode> <oid> <size>   (size via cache_blob_size)
 *   cat PID COMMIT PATH OUTFILE    -> ok <size>                (content written to OUTFILE)
 *   catn PID COMMIT PATH N         -> ok <size>  (N threads open the blob at once; all must
 *                                     read the same bytes)
 *   stats                          -> ok <json>
 *   info PID COMMIT PATH           -> ok <size> <blob size> <lfs oid or ->  (cache_blob_info)
 *   oread PID COMMIT PATH OFF LEN OUTFILE -> ok <n> <ms>  (cache_obj_open + cache_obj_pread of
 *                                     one range, written to OUTFILE; ms: time of the pread)
 *   ocat PID COMMIT PATH OUTFILE   -> ok <size> <fd>  (whole content through cache_obj, in
 *                                     128 KiB reads; fd 1 when the complete file has one)
 *   ocatn PID COMMIT PATH N        -> ok <sha256 of the content> (N threads, all equal)
 *   prefetch PID COMMIT PATH       -> ok  (returns when the prefetch queue is drained)
 *   forget PID COMMIT PATH         -> ok <objects dropped>  (a directory or one file)
 *   limit BYTES                    -> ok  (cache_set_limit; cache_limit_parse syntax)
 *   refresh                        -> ok
 *   touch PID BRANCH               -> ok  (cache_branch_touch)
 *   moves                          -> ok <pid>:<branch>:<old>:<new> ...  (since last asked)
 *   peek PID branch|tag|commit NAME -> ok <commit>  (cache_ref_peek: the index only)
 *   oopen PID COMMIT PATH          -> ok <size>  (cache_obj_open and close, nothing read)
 *   unhook PID BRANCH MS           -> ok <1 when the callback had returned, else 0>: a
 *                                     thread resolves BRANCH (which must have moved) with
 *                                     a callback that takes MS ms; once it runs, the
 *                                     callback is removed (cache_on_branch_moved NULL)
 *
 * Environment: REEF_CACHE_LIMIT, REEF_POLL_MS, REEF_STALL_S set the cache options.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "reef/hash.h"
#include "reef/jsonx.h"
#include "reef/log.h"

static struct cache *cache;
static pthread_mutex_t moves_lock = PTHREAD_MUTEX_INITIALIZER;
static char moves[8192];

static void on_moved(void *arg, int64_t pid, const char *branch, const char *old, const char *now)
{
	size_t len;

	(void)arg;
	pthread_mutex_lock(&moves_lock);
	len = strlen(moves);
	snprintf(moves + len, sizeof(moves) - len, " %" PRId64 ":%s:%s:%s", pid, branch,
	         *old ? old : "-", *now ? now : "-");
	pthread_mutex_unlock(&moves_lock);
}

/* A callback that takes its time, for "unhook": started and finished say where it is. */
static int slow_ms, slow_started, slow_finished;

static void on_moved_slow(void *arg, int64_t pid, const char *branch, const char *old,
                          const char *now)
{
	(void)arg;
	(void)pid;
	(void)branch;
	(void)old;
	(void)now;
	__atomic_store_n(&slow_started, 1, __ATOMIC_SEQ_CST);
	usleep((useconds_t)slow_ms * 1000);
	__atomic_store_n(&slow_finished, 1, __ATOMIC_SEQ_CST);
}

struct unhook_arg {
	int64_t pid;
	const char *branch;
	int r;
};

static void *unhook_resolve(void *p)
{
	struct unhook_arg *a = p;
	char commit[41];

	a->r = cache_ref_resolve(cache, a->pid, CACHE_REF_BRANCH, a->branch, commit);
	return NULL;
}

/* Reads a whole cache_obj, hashing it with SHA-256 (the content, whatever its kind). */
static int obj_read_all(struct cache_obj *o, FILE *out, uint8_t digest[32], size_t chunk_len)
{
	struct hash_ctx *h;
	uint64_t off = 0, size = cache_obj_size(o);
	char *chunk = malloc(chunk_len);
	int r = chunk ? hash_new(&h, HASH_SHA256) : -ENOMEM;

	if (r < 0) {
		free(chunk);
		return r;
	}
	while (off < size) {
		ssize_t got = cache_obj_pread(o, chunk, chunk_len, off);

		if (got <= 0) {
			r = got < 0 ? (int)got : -EIO;
			break;
		}
		hash_update(h, chunk, (size_t)got);
		if (out && fwrite(chunk, 1, (size_t)got, out) != (size_t)got) {
			r = -EIO;
			break;
		}
		off += (uint64_t)got;
	}
	if (r == 0)
		r = hash_final(h, digest);
	hash_free(h);
	free(chunk);
	return r;
}

struct ocatn_arg {
	int64_t pid;
	const char *commit, *path, *oid;
	int r;
	uint8_t digest[32];
};

static void *ocatn_run(void *p)
{
	struct ocatn_arg *a = p;
	struct cache_obj *o;

	a->r = cache_obj_open(cache, a->pid, a->commit, a->path, a->oid, &o);
	if (a->r == 0) {
		a->r = obj_read_all(o, NULL, a->digest, 65536);
		cache_obj_close(o);
	}
	return NULL;
}

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void reply_err(int r)
{
	const char *name = "EOTHER";

	switch (-r) {
	case ENOENT:
		name = "ENOENT";
		break;
	case EACCES:
		name = "EACCES";
		break;
	case EIO:
		name = "EIO";
		break;
	case EINVAL:
		name = "EINVAL";
		break;
	case ENOMEM:
		name = "ENOMEM";
		break;
	default:
		break;
	}
	printf("err %s %d\n", name, r);
}

static const char *ref_kind_name(enum cache_ref_kind k)
{
	return k == CACHE_REF_BRANCH ? "branch" : k == CACHE_REF_TAG ? "tag" : "commit";
}

static int ref_kind(const char *s, enum cache_ref_kind *k)
{
	for (int i = CACHE_REF_BRANCH; i <= CACHE_REF_COMMIT; i++)
		if (strcmp(s, ref_kind_name((enum cache_ref_kind)i)) == 0) {
			*k = (enum cache_ref_kind)i;
			return 0;
		}
	return -EINVAL;
}

/* Resolves PATH ("/" = root) in commit to its entry by walking trees from the root, the
 * way the FUSE side does. For the root, *e is a synthetic directory entry. Returns the
 * listing of the directory when want_list (PATH must be a directory). */
static int walk(int64_t pid, const char *commit, const char *path, struct tree_entry *found,
                struct tree_entry **list, size_t *nlist)
{
	char tree[41], sub[4096] = "";
	struct tree_entry *e = NULL;
	size_t n = 0;
	char *copy, *save = NULL, *comp;
	int r;

	r = cache_root_tree(cache, pid, commit, tree, &e, &n);
	if (r < 0)
		return r;
	memset(found, 0, sizeof(*found));
	found->mode = TREE_MODE_DIR;
	memcpy(found->oid, tree, 41);
	copy = strdup(path);
	if (!copy) {
		free(e);
		return -ENOMEM;
	}
	for (comp = strtok_r(copy, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
		size_t i;

		if (found->mode != TREE_MODE_DIR) {
			r = -ENOTDIR;
			goto out;
		}
		for (i = 0; i < n; i++)
			if (strcmp(e[i].name, comp) == 0)
				break;
		if (i == n) {
			r = -ENOENT;
			goto out;
		}
		*found = e[i];
		snprintf(sub + strlen(sub), sizeof(sub) - strlen(sub), "%s%s", sub[0] ? "/" : "",
		         comp);
		if (found->mode == TREE_MODE_DIR) {
			free(e);
			e = NULL;
			r = cache_tree(cache, pid, commit, sub, found->oid, &e, &n);
			if (r < 0)
				goto out;
		}
	}
	r = 0;
	if (list) {
		if (found->mode != TREE_MODE_DIR) {
			r = -ENOTDIR;
			goto out;
		}
		*list = e;
		*nlist = n;
		e = NULL;
	}
out:
	free(copy);
	free(e);
	return r;
}

static int read_all(struct odb_blob *b, FILE *out, uint8_t digest[20])
{
	struct hash_ctx *h;
	uint64_t off = 0, size = odb_blob_size(b);
	char *chunk = malloc(1 << 16);
	int r = chunk ? hash_git_begin(&h, "blob", size) : -ENOMEM;

	if (r < 0) {
		free(chunk);
		return r;
	}
	while (off < size) {
		ssize_t got = odb_blob_pread(b, chunk, 1 << 16, off);

		if (got <= 0) {
			r = got < 0 ? (int)got : -EIO;
			break;
		}
		hash_update(h, chunk, (size_t)got);
		if (out && fwrite(chunk, 1, (size_t)got, out) != (size_t)got) {
			r = -EIO;
			break;
		}
		off += (uint64_t)got;
	}
	if (r == 0)
		r = hash_final(h, digest);
	hash_free(h);
	free(chunk);
	return r;
}

struct catn_arg {
	int64_t pid;
	const char *oid;
	int r;
	uint8_t digest[20];
};

static void *catn_run(void *p)
{
	struct catn_arg *a = p;
	struct odb_blob *b;

	a->r = cache_blob_open(cache, a->pid, a->oid, &b);
	if (a->r == 0) {
		a->r = read_all(b, NULL, a->digest);
		odb_blob_close(b);
	}
	return NULL;
}

static void command(char *line)
{
	char *argv[10];
	int argc = 0, r;
	char *save = NULL, *tok;

	for (tok = strtok_r(line, "\t\n", &save); tok && argc < 10;
	     tok = strtok_r(NULL, "\t\n", &save))
		argv[argc++] = tok;
	if (argc == 0)
		return;
	if (strcmp(argv[0], "user") == 0) {
		json_t *u;

		r = cache_user(cache, &u);
		if (r < 0)
			return reply_err(r);
		printf("ok %s\n", jsonx_str(u, "username") ? jsonx_str(u, "username") : "?");
		json_decref(u);
	} else if (strcmp(argv[0], "projects") == 0) {
		struct cache_project *p;
		size_t n;

		r = cache_projects_list(cache, &p, &n);
		if (r < 0)
			return reply_err(r);
		printf("ok");
		for (size_t i = 0; i < n; i++)
			printf(" %s", p[i].path);
		printf("\n");
		free(p);
	} else if (strcmp(argv[0], "project") == 0 && argc == 2) {
		struct cache_project p;

		r = cache_project_get(cache, argv[1], &p);
		if (r < 0)
			return reply_err(r);
		printf("ok %" PRId64 " %s\n", p.id, p.default_branch[0] ? p.default_branch : "-");
	} else if (strcmp(argv[0], "refs") == 0 && argc == 3) {
		enum cache_ref_kind k;
		char **names;
		size_t n;

		r = ref_kind(argv[2], &k);
		if (r == 0)
			r = cache_refs_list(cache, strtoll(argv[1], NULL, 10), k, &names, &n);
		if (r < 0)
			return reply_err(r);
		printf("ok");
		for (size_t i = 0; i < n; i++)
			printf(" %s", names[i]);
		printf("\n");
		cache_names_free(names, n);
	} else if (strcmp(argv[0], "resolve") == 0 && argc == 4) {
		enum cache_ref_kind k;
		char commit[41];

		r = ref_kind(argv[2], &k);
		if (r == 0)
			r = cache_ref_resolve(cache, strtoll(argv[1], NULL, 10), k, argv[3],
			                      commit);
		if (r < 0)
			return reply_err(r);
		printf("ok %s\n", commit);
	} else if (strcmp(argv[0], "root") == 0 && argc == 3) {
		struct tree_entry *list = NULL;
		char tree[41];
		size_t n = 0;

		r = cache_root_tree(cache, strtoll(argv[1], NULL, 10), argv[2], tree, &list, &n);
		if (r < 0)
			return reply_err(r);
		free(list);
		printf("ok %s\n", tree);
	} else if (strcmp(argv[0], "ls") == 0 && argc == 4) {
		struct tree_entry e, *list = NULL;
		size_t n = 0;

		r = walk(strtoll(argv[1], NULL, 10), argv[2], argv[3], &e, &list, &n);
		if (r < 0)
			return reply_err(r);
		printf("ok %zu\n", n);
		for (size_t i = 0; i < n; i++)
			printf("%06o %s %" PRId64 " %s\n", list[i].mode, list[i].oid, list[i].size,
			       list[i].name);
		free(list);
	} else if (strcmp(argv[0], "stat") == 0 && argc == 4) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		struct tree_entry e;
		uint64_t size = 0;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0 && e.mode != TREE_MODE_DIR && e.mode != TREE_MODE_SUBMODULE)
			r = cache_blob_size(cache, pid, argv[2],
			                    argv[3][0] == '/' ? argv[3] + 1 : argv[3], e.oid,
			                    &size);
		if (r < 0)
			return reply_err(r);
		printf("ok %06o %s %" PRIu64 "\n", e.mode, e.oid, size);
	} else if (strcmp(argv[0], "cat") == 0 && argc == 5) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		struct tree_entry e;
		struct odb_blob *b;
		uint8_t d[20];
		char hex[41];
		FILE *out;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_blob_open(cache, pid, e.oid, &b);
		if (r < 0)
			return reply_err(r);
		out = fopen(argv[4], "wb");
		r = out ? read_all(b, out, d) : -errno;
		if (out && fclose(out) != 0 && r == 0)
			r = -EIO;
		if (r == 0) {
			hash_hex(hex, d, 20);
			if (strcmp(hex, e.oid) != 0)
				r = -EBADMSG; /* the cache handed out unverified bytes */
		}
		if (r == 0)
			printf("ok %" PRIu64 "\n", odb_blob_size(b));
		else
			reply_err(r);
		odb_blob_close(b);
	} else if (strcmp(argv[0], "catn") == 0 && argc == 5) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		int n = atoi(argv[4]);
		struct catn_arg args[16];
		pthread_t th[16];
		struct tree_entry e;
		char hex[41];

		if (n < 1 || n > 16)
			return reply_err(-EINVAL);
		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r < 0)
			return reply_err(r);
		for (int i = 0; i < n; i++) {
			args[i] = (struct catn_arg){.pid = pid, .oid = e.oid};
			pthread_create(&th[i], NULL, catn_run, &args[i]);
		}
		for (int i = 0; i < n; i++) {
			pthread_join(th[i], NULL);
			if (r == 0 && args[i].r < 0)
				r = args[i].r;
			hash_hex(hex, args[i].digest, 20);
			if (r == 0 && strcmp(hex, e.oid) != 0)
				r = -EBADMSG;
		}
		if (r < 0)
			return reply_err(r);
		printf("ok\n");
	} else if (strcmp(argv[0], "info") == 0 && argc == 4) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		struct cache_blob_info info;
		struct tree_entry e;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_blob_info(cache, pid, argv[2],
			                    argv[3][0] == '/' ? argv[3] + 1 : argv[3], e.oid,
			                    e.size, &info);
		if (r < 0)
			return reply_err(r);
		printf("ok %" PRIu64 " %" PRIu64 " %s\n", info.size, info.blob_size,
		       info.lfs ? info.lfs_oid : "-");
	} else if ((strcmp(argv[0], "oread") == 0 && argc == 7) ||
	           (strcmp(argv[0], "ocat") == 0 && argc == 5)) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		const char *path = argv[3][0] == '/' ? argv[3] + 1 : argv[3];
		bool whole = argv[0][1] == 'c';
		struct cache_obj *o = NULL;
		struct tree_entry e;
		uint8_t d[32];
		FILE *out = NULL;
		ssize_t got = 0;
		double t0 = 0, t1 = 0;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_obj_open(cache, pid, argv[2], path, e.oid, &o);
		if (r == 0 && !(out = fopen(argv[whole ? 4 : 6], "wb")))
			r = -errno;
		if (r == 0 && whole) {
			r = obj_read_all(o, out, d, 131072);
		} else if (r == 0) {
			size_t len = (size_t)strtoull(argv[5], NULL, 10);
			char *buf = malloc(len ? len : 1);

			t0 = mono_ms();
			got = buf ? cache_obj_pread(o, buf, len, strtoull(argv[4], NULL, 10))
			          : -ENOMEM;
			t1 = mono_ms();
			if (got < 0)
				r = (int)got;
			else if (fwrite(buf, 1, (size_t)got, out) != (size_t)got)
				r = -EIO;
			free(buf);
		}
		if (out && fclose(out) != 0 && r == 0)
			r = -EIO;
		if (r == 0 && whole)
			printf("ok %" PRIu64 " %d\n", cache_obj_size(o), cache_obj_fd(o) >= 0);
		else if (r == 0)
			printf("ok %zd %.0f\n", got, t1 - t0);
		else
			reply_err(r);
		cache_obj_close(o);
	} else if (strcmp(argv[0], "ocatn") == 0 && argc == 5) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		const char *path = argv[3][0] == '/' ? argv[3] + 1 : argv[3];
		int n = atoi(argv[4]);
		struct ocatn_arg args[16];
		pthread_t th[16];
		struct tree_entry e;
		char hex[65];

		if (n < 1 || n > 16)
			return reply_err(-EINVAL);
		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r < 0)
			return reply_err(r);
		for (int i = 0; i < n; i++) {
			args[i] = (struct ocatn_arg){
			    .pid = pid, .commit = argv[2], .path = path, .oid = e.oid};
			pthread_create(&th[i], NULL, ocatn_run, &args[i]);
		}
		for (int i = 0; i < n; i++) {
			pthread_join(th[i], NULL);
			if (r == 0 && args[i].r < 0)
				r = args[i].r;
			if (r == 0 && memcmp(args[i].digest, args[0].digest, 32) != 0)
				r = -EBADMSG;
		}
		if (r < 0)
			return reply_err(r);
		hash_hex(hex, args[0].digest, 32);
		printf("ok %s\n", hex);
	} else if (strcmp(argv[0], "prefetch") == 0 && argc == 4) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		const char *path = argv[3][0] == '/' ? argv[3] + 1 : argv[3];
		struct tree_entry e;
		json_t *j = NULL;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_prefetch(cache, pid, argv[2], path, e.oid);
		for (int i = 0; r == 0 && i < 6000; i++) {
			long pending = 1, in_flight = 1;

			usleep(20000);
			if (cache_stats(cache, &j) == 0) {
				pending = (long)jsonx_int(j, "prefetch_pending", 1);
				in_flight = (long)jsonx_int(j, "in_flight", 1);
			}
			json_decref(j);
			j = NULL;
			if (pending == 0 && in_flight == 0)
				break;
		}
		if (r < 0)
			return reply_err(r);
		printf("ok\n");
	} else if (strcmp(argv[0], "forget") == 0 && argc == 4) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		struct tree_entry e;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_forget(cache, pid, e.oid, e.mode == TREE_MODE_DIR);
		if (r < 0)
			return reply_err(r);
		printf("ok %d\n", r);
	} else if (strcmp(argv[0], "limit") == 0 && argc == 2) {
		uint64_t limit;

		r = cache_limit_parse(argv[1], &limit);
		if (r == 0)
			r = cache_set_limit(cache, limit);
		if (r < 0)
			return reply_err(r);
		printf("ok\n");
	} else if (strcmp(argv[0], "refresh") == 0) {
		cache_refresh(cache);
		printf("ok\n");
	} else if (strcmp(argv[0], "touch") == 0 && argc == 3) {
		cache_branch_touch(cache, strtoll(argv[1], NULL, 10), argv[2]);
		printf("ok\n");
	} else if (strcmp(argv[0], "moves") == 0) {
		pthread_mutex_lock(&moves_lock);
		printf("ok%s\n", moves);
		moves[0] = '\0';
		pthread_mutex_unlock(&moves_lock);
	} else if (strcmp(argv[0], "peek") == 0 && argc == 4) {
		enum cache_ref_kind k;
		char commit[41];

		r = ref_kind(argv[2], &k);
		if (r == 0)
			r = cache_ref_peek(cache, strtoll(argv[1], NULL, 10), k, argv[3], commit);
		if (r < 0)
			return reply_err(r);
		printf("ok %s\n", commit);
	} else if (strcmp(argv[0], "oopen") == 0 && argc == 4) {
		int64_t pid = strtoll(argv[1], NULL, 10);
		const char *path = argv[3][0] == '/' ? argv[3] + 1 : argv[3];
		struct cache_obj *o = NULL;
		struct tree_entry e;

		r = walk(pid, argv[2], argv[3], &e, NULL, NULL);
		if (r == 0)
			r = cache_obj_open(cache, pid, argv[2], path, e.oid, &o);
		if (r < 0)
			return reply_err(r);
		printf("ok %" PRIu64 "\n", cache_obj_size(o));
		cache_obj_close(o);
	} else if (strcmp(argv[0], "unhook") == 0 && argc == 4) {
		struct unhook_arg a = {strtoll(argv[1], NULL, 10), argv[2], 0};
		pthread_t th;
		int finished, i;

		slow_ms = atoi(argv[3]);
		slow_started = slow_finished = 0;
		cache_on_branch_moved(cache, on_moved_slow, NULL);
		if (pthread_create(&th, NULL, unhook_resolve, &a) != 0)
			return reply_err(-ENOMEM);
		for (i = 0; i < 3000 && !__atomic_load_n(&slow_started, __ATOMIC_SEQ_CST); i++)
			usleep(1000);
		cache_on_branch_moved(cache, NULL, NULL);
		finished = __atomic_load_n(&slow_finished, __ATOMIC_SEQ_CST);
		pthread_join(th, NULL);
		cache_on_branch_moved(cache, on_moved, NULL);
		if (a.r < 0)
			return reply_err(a.r);
		if (!__atomic_load_n(&slow_started, __ATOMIC_SEQ_CST))
			return reply_err(-ENOENT); /* the branch did not move */
		printf("ok %d\n", finished);
	} else if (strcmp(argv[0], "stats") == 0) {
		json_t *j;
		char *s;

		r = cache_stats(cache, &j);
		if (r < 0)
			return reply_err(r);
		s = jsonx_dump(j);
		printf("ok %s\n", s ? s : "{}");
		free(s);
		json_decref(j);
	} else {
		printf("err EBADCMD\n");
	}
}

int main(int argc, char **argv)
{
	struct cache_opts o = {0};
	char line[8192];
	int r;

	if (argc != 4) {
		fprintf(stderr, "usage: %s SERVER CACHE_DIR BRANCH_TTL_MS\n", argv[0]);
		return 2;
	}
	log_set_ident("test_cache_live");
	o.server = argv[1];
	o.dir = argv[2];
	o.token = getenv("REEF_TOKEN");
	o.branch_ttl_ms = (unsigned)atoi(argv[3]);
	o.list_ttl_ms = o.branch_ttl_ms;
	if (getenv("REEF_CACHE_LIMIT") &&
	    cache_limit_parse(getenv("REEF_CACHE_LIMIT"), &o.limit) < 0) {
		fprintf(stderr, "bad REEF_CACHE_LIMIT\n");
		return 2;
	}
	if (getenv("REEF_POLL_MS"))
		o.poll_ms = (unsigned)atoi(getenv("REEF_POLL_MS"));
	if (getenv("REEF_STALL_S"))
		o.stall_s = (unsigned)atoi(getenv("REEF_STALL_S"));
	r = cache_new(&cache, &o);
	if (r < 0) {
		fprintf(stderr, "cache_new: %s\n", strerror(-r));
		return 1;
	}
	cache_on_branch_moved(cache, on_moved, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin))
		command(line);
	cache_free(cache);
	return 0;
}
