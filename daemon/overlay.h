/* The per-branch overlays of writable branch views (daemon/overlay.c): what a user wrote
 * under <project>/branches/<name>/ and has not committed yet.
 *
 * One overlay per (project, branch), in DIR/overlay/<project id>/<hex of the branch name>/:
 *   manifest.db   SQLite (WAL, synchronous=FULL): the base commit the overlay was made on
 *                 and one row per changed path (below)
 *   data/<id>     the content of a file written or created (plain file, fsynced before
 *                 the operation that acknowledges it replies)
 *
 * A row says what a path of the branch is now, whatever the branch's tree says:
 *   OV_WH    deleted (a whiteout)
 *   OV_FILE  a file: its bytes in data/<data> (data > 0), or an unchanged blob of the
 *            branch moved or chmodded (data == 0, blob the blob id, size and lfs what it
 *            shows)
 *   OV_DIR   a directory: its content below is the tree `blob` (a directory renamed
 *            here) or nothing ("", a new directory), plus the rows below it
 *   OV_LINK  a symlink to target
 * A path without a row is what the branch's tree at that place says (through the rows
 * of its parents: a renamed directory's children come from its tree). Paths are
 * relative to the branch root, without leading or trailing '/'.
 *
 * Every change is one SQLite transaction, durable when the call returns. Thread-safe:
 * callers hold ov_lock around a check-then-change sequence. Library-like: no FUSE, no
 * HTTP; returns negative errnos and does not log. */
#ifndef REEF_OVERLAY_H
#define REEF_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OV_PATH_MAX   4096
#define OV_TARGET_MAX 4096

enum ov_kind { OV_WH = 0, OV_FILE = 1, OV_DIR = 2, OV_LINK = 3 };

struct ov_ent {
	char path[OV_PATH_MAX];
	enum ov_kind kind;
	bool exec;
	int64_t data;  /* OV_FILE: data file id (0: the blob); OV_DIR, OV_LINK: a unique id */
	char blob[41]; /* OV_FILE with data 0: the blob; OV_DIR: its lower tree, or "" */
	char lfs[65];  /* OV_FILE with data 0: the LFS oid the blob shows, or "" */
	int64_t size;  /* OV_FILE with data 0: the size it shows */
	int64_t mtime; /* seconds; 0 unknown */
	/* OV_LINK: the target; OV_FILE with data 0 and OV_DIR with a tree: the path the
	 * branch's commit has it at (where the cache can fetch it by path) */
	char target[OV_TARGET_MAX];
};

struct ovset;
struct overlay;

/* Opens every overlay under dir/overlay (created when missing). */
int ovset_open(struct ovset **out, const char *dir);
void ovset_free(struct ovset *s); /* accepts NULL */

/* The overlay of a branch: *out NULL (and 0) when there is none and create is false;
 * created with base as its base commit otherwise. Owned by the set. */
int ovset_get(struct ovset *s, int64_t project_id, const char *branch, bool create,
              const char *base, struct overlay **out);
/* Whether any overlay exists (lock-free: the read-only fast path of every lookup). */
bool ovset_any(struct ovset *s);
/* Calls fn for every overlay with pending changes. */
void ovset_each(struct ovset *s, void (*fn)(void *arg, struct overlay *ov), void *arg);
/* Total bytes of every overlay's data files. */
uint64_t ovset_bytes(struct ovset *s);
void ovset_bytes_add(struct ovset *s, int64_t delta);

int64_t ov_project(const struct overlay *ov);
const char *ov_branch(const struct overlay *ov);
/* The commit the overlay was based on (the branch's head at its first change). */
void ov_base(struct overlay *ov, char out[41]);
int ov_set_base(struct overlay *ov, const char *commit);
/* How many rows (pending changes, whiteouts included). */
size_t ov_count(struct overlay *ov);
/* Bumped by every ov_clear: the views of the branch are new inodes after it. */
uint64_t ov_epoch(struct overlay *ov);

void ov_lock(struct overlay *ov);
void ov_unlock(struct overlay *ov);

/* The data gate. Writes into data files (through open descriptors, without ov_lock)
 * hold it shared; whoever drops data files that descriptors may still write (a commit
 * from its snapshot to its drop, a discard) holds it exclusive and bumps the epoch, so a
 * writer that finds the epoch unchanged under the gate writes into a live file. */
void ov_gate_shared(struct overlay *ov);
void ov_gate_exclusive(struct overlay *ov);
void ov_gate_release(struct overlay *ov);

/* Groups changes into one transaction (nesting not supported). ov_tx_end(ov, false)
 * rolls back. */
int ov_tx_begin(struct overlay *ov);
int ov_tx_end(struct overlay *ov, bool commit);

/* 0, or -ENOENT when the path has no row. */
int ov_get(struct overlay *ov, const char *path, struct ov_ent *out);
int ov_put(struct overlay *ov, const struct ov_ent *e);
int ov_del(struct overlay *ov, const char *path);
/* Rows whose parent is dir ("" for the root); *out malloc'ed (free()). */
int ov_children(struct overlay *ov, const char *dir, struct ov_ent **out, size_t *n);
/* Every row, sorted by path; *out malloc'ed (free()). */
int ov_all(struct overlay *ov, struct ov_ent **out, size_t *n);
/* Whether any row lies below dir (dir/…). */
int ov_has_below(struct overlay *ov, const char *dir);
/* Moves every row below src to below dst (paths and parents rewritten). */
int ov_move_below(struct overlay *ov, const char *src, const char *dst);
/* Deletes every row below dir; data ids of deleted files go to *ids (malloc'ed). */
int ov_del_below(struct overlay *ov, const char *dir, int64_t **ids, size_t *n);

/* A new unique id (data files, new directories, symlinks). */
int64_t ov_id_new(struct overlay *ov);
/* Creates data/<id> (mode 0600), fsyncs it and its directory; returns the descriptor
 * (O_RDWR) or a negative errno. */
int ov_data_create(struct overlay *ov, int64_t id);
/* Opens data/<id> with flags (O_RDONLY or O_RDWR). */
int ov_data_open(struct overlay *ov, int64_t id, int flags);
/* The path of data/<id> (for readers that want a name). */
int ov_data_path(struct overlay *ov, int64_t id, char *out, size_t cap);
int64_t ov_data_size(struct overlay *ov, int64_t id); /* or a negative errno */
/* Removes data/<id>; its bytes leave the set's total. */
void ov_data_unlink(struct overlay *ov, int64_t id);

/* Drops every row and data file, bumps the epoch; base becomes "" (the next change
 * records a new one). */
int ov_clear(struct overlay *ov);

/* A change the kernel did not see (a partial discard): the views get new inodes. */
void ov_bump_epoch(struct overlay *ov);

/* A free-form value kept with the overlay (the commit intent of reef commit). */
int ov_meta_get(struct overlay *ov, const char *key, char *out, size_t cap);
int ov_meta_set(struct overlay *ov, const char *key, const char *value); /* NULL deletes */

/* "a/b/c" -> "a/b"; "a" -> "". */
void ov_parent(const char *path, char *out, size_t cap);

#endif
