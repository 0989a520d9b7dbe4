/* Writable branch views, the data side (docs/write.md): writes into the overlay's data
 * files through open descriptors, the space they take (shared with the cache's objects
 * under cache_limit), and what becomes of a descriptor whose file a commit or a discard
 * dropped (re-attached as a new pending change, or detached). The namespace operations
 * are in ops_write.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "overlay.h"
#include "reef/log.h"

#include "ops_int.h"

#define COPY_BUF (1u << 20)

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* ---- space ---- */

/* The overlays and the cache's objects share the cache's hard size (cache_limit). The
 * overlays cannot be evicted: they alone past the limit is ENOSPC. Otherwise the cache
 * evicts objects nobody has open to make room (its own eviction counts the overlays too:
 * wv_pinned_bytes); when what it cannot evict (open, downloading) leaves too little,
 * ENOSPC as well. */
int wv_room_for(struct ops_ctx *ctx, uint64_t growth)
{
	uint64_t bytes = 0, objects = 0, limit = 0, ovb;

	if (!growth)
		return 0;
	cache_usage(ctx->cache, &bytes, &objects, &limit);
	if (!limit)
		return 0;
	ovb = ovset_bytes(ctx->ovs);
	if (ovb + growth > limit)
		return -ENOSPC;
	if (ovb + bytes + growth <= limit)
		return 0;
	return cache_make_room(ctx->cache, growth) == 0 ? 0 : -ENOSPC;
}

uint64_t wv_pinned_bytes(void *arg)
{
	struct ops_ctx *ctx = arg;

	return ctx->ovs ? ovset_bytes(ctx->ovs) : 0;
}

/* Makes f's file the pending change at its path again after a commit took its content
 * (the new head has it): a new data file with what the descriptor holds, so its next
 * writes are a change on top of the new head. Called with ov_lock held. */
static int adopt(struct ops_ctx *ctx, struct ops_file *f, const char *cp)
{
	struct overlay *ov = f->ov;
	struct ov_ent *e = calloc(1, sizeof(*e));
	char base[41], head[41];
	char *buf = NULL;
	struct stat sb;
	int64_t id = 0;
	uint64_t off = 0;
	int fd = -1, r;

	if (!e)
		return -ENOMEM;
	r = fstat(f->ovfd, &sb) < 0 ? -errno : 0;
	if (r == 0)
		r = wv_room_for(ctx, (uint64_t)sb.st_size);
	if (r == 0) {
		id = ov_id_new(ov);
		fd = ov_data_create(ov, id);
		r = fd < 0 ? fd : 0;
	}
	if (r == 0 && sb.st_size > 0) {
		buf = malloc(COPY_BUF);
		r = buf ? 0 : -ENOMEM;
	}
	while (r == 0 && off < (uint64_t)sb.st_size) {
		ssize_t got = pread(f->ovfd, buf, COPY_BUF, (off_t)off);

		if (got <= 0) {
			r = got < 0 ? -errno : -EIO;
			break;
		}
		if (pwrite(fd, buf, (size_t)got, (off_t)off) != got)
			r = errno ? -errno : -EIO;
		off += (uint64_t)got;
	}
	free(buf);
	ov_base(ov, base);
	if (r == 0 && !base[0] &&
	    cache_ref_resolve(ctx->cache, ov_project(ov), CACHE_REF_BRANCH, ov_branch(ov), head) ==
	        0)
		r = ov_set_base(ov, head);
	if (r == 0) {
		snprintf(e->path, sizeof(e->path), "%s", cp);
		e->kind = OV_FILE;
		e->exec = f->ovexec;
		e->data = id;
		e->mtime = now_s();
		r = ov_put(ov, e);
	}
	if (r == 0 && dup2(fd, f->ovfd) < 0) /* the same number: a read in flight stays valid */
		r = -errno;
	if (r < 0) {
		if (fd >= 0) {
			close(fd);
			ov_del(ov, cp);
			ov_data_unlink(ov, id);
		}
		free(e);
		return r;
	}
	close(fd);
	ovset_bytes_add(ctx->ovs, (int64_t)sb.st_size);
	f->ovdata = id;
	f->dirty = true; /* the copy reaches the disk at the next close or fsync */
	free(e);
	return 0;
}

/* After the overlay's epoch moved (a commit or a discard): whether f still writes into
 * the live file of its path. Its file still named by the row of its path: yes. Its
 * content committed and its path without a pending change: adopted as a new change.
 * Otherwise (discarded, or its path deleted or replaced meanwhile) it is detached, as a
 * descriptor of a file deleted while open. Called with ov_lock held. */
int wv_reattach(struct ops_ctx *ctx, struct ops_file *f)
{
	struct overlay *ov = f->ov;
	uint64_t ep = ov_epoch(ov);
	struct node *n = node_get(ctx->nodes, f->ino);
	struct ov_ent *e = malloc(sizeof(*e));
	char cp[OV_PATH_MAX];
	int r;

	r = !e ? -ENOMEM : n ? wv_cur_path(ctx, n, cp, sizeof(cp)) : -ESTALE;
	if (r == 0)
		r = ov_get(ov, cp, e);
	if (r == 0 && e->kind == OV_FILE && e->data == f->ovdata) {
		/* still its file */
	} else if (r == -ENOENT && f->ovcommitted) {
		r = adopt(ctx, f, cp);
		if (r == 0)
			log_info("a descriptor open across a commit wrote %s: pending again", cp);
	} else if (r == 0 || r == -ENOENT || r == -ESTALE) {
		f->ovdetached = true;
		r = 0;
	}
	if (r == 0) {
		__atomic_store_n(&f->ovepoch, ep, __ATOMIC_RELEASE);
		f->ovcommitted = false;
	}
	free(e);
	if (n)
		node_put(ctx->nodes, n);
	return r;
}

/* Writes the request's bytes (bufv) at off into f's data file. */
static void write_into(fuse_req_t req, struct ops_ctx *ctx, struct ops_file *f,
                       struct fuse_bufvec *bufv, off_t off)
{
	struct overlay *ov = f->ov;
	size_t size = fuse_buf_size(bufv), done = 0;
	struct stat sb;
	uint64_t end = (uint64_t)off + size, growth = 0;
	int r = 0;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* under the gate the epoch cannot move: a file found live stays live until replied */
	ov_gate_shared(ov);
	if (__atomic_load_n(&f->ovepoch, __ATOMIC_ACQUIRE) != ov_epoch(ov) && !f->ovdetached) {
		ov_gate_release(ov);
		ov_lock(ov);
		ov_gate_shared(ov);
		if (f->ovepoch != ov_epoch(ov) && !f->ovdetached)
			r = wv_reattach(ctx, f);
		ov_unlock(ov);
	}
	if (r == 0 && fstat(f->ovfd, &sb) < 0)
		r = -errno;
	if (r == 0 && end > (uint64_t)sb.st_size)
		growth = end - (uint64_t)sb.st_size;
	if (r == 0)
		r = wv_room_for(ctx, growth);
	while (r == 0 && done < size) {
		struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size - done);
		ssize_t w;

		dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		dst.buf[0].fd = f->ovfd;
		dst.buf[0].pos = off + (off_t)done;
		w = fuse_buf_copy(&dst, bufv, 0);
		if (w == -EINTR)
			continue;
		if (w <= 0) {
			r = w < 0 ? (int)w : -EIO;
			break;
		}
		done += (size_t)w;
	}
	ov_gate_release(ov);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	ovset_bytes_add(ctx->ovs, (int64_t)growth);
	f->dirty = true;
	fuse_reply_write(req, size);
}

void wv_write(fuse_req_t req, struct ops_ctx *ctx, struct ops_file *f, const char *buf, size_t size,
              off_t off)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);

	/* fuse_buf has no const member: the source is only read */
	bv.buf[0].mem = (void *)(uintptr_t)buf;
	write_into(req, ctx, f, &bv, off);
}

/* A commit took the content of every data file the overlay's rows name: the handles on
 * them are marked, so their next write makes a new pending change (reattach). Called
 * with ov_lock and the gate held, before the rows are dropped. */
void wv_mark_committed(struct ops_ctx *ctx, struct overlay *ov)
{
	struct ov_ent *v = NULL;
	size_t n = 0;
	struct ops_handle *h;

	if (ov_all(ov, &v, &n) < 0)
		return;
	pthread_mutex_lock(&ctx->hlock);
	for (h = ctx->handles.next; h != &ctx->handles; h = h->next) {
		struct ops_file *f = (struct ops_file *)h;

		if (h->is_dir || !f->has_ov || f->ov != ov || f->ovdetached)
			continue;
		for (size_t i = 0; i < n; i++)
			if (v[i].kind == OV_FILE && v[i].data == f->ovdata) {
				f->ovcommitted = true;
				f->ovexec = v[i].exec;
				break;
			}
	}
	pthread_mutex_unlock(&ctx->hlock);
	free(v);
}

/* An acknowledged close or fsync is on disk: the data file's bytes (its name and row
 * were durable before its open or create replied). */
int wv_sync(struct ops_ctx *ctx, struct ops_file *f)
{
	(void)ctx;
	if (!f->dirty)
		return 0;
	if (fdatasync(f->ovfd) < 0)
		return -errno;
	f->dirty = false;
	return 0;
}
