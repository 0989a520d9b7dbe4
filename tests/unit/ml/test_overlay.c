/* The overlays of branch views (daemon/overlay.c): rows and their moves, data files,
 * durability across a reopen, orphan data files swept, clear and its epoch. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "overlay.h"

static struct ov_ent row(const char *path, enum ov_kind kind, int64_t data)
{
	struct ov_ent e;

	memset(&e, 0, sizeof(e));
	snprintf(e.path, sizeof(e.path), "%s", path);
	e.kind = kind;
	e.data = data;
	return e;
}

int main(void)
{
	char dir[] = "/tmp/reef-ovtest-XXXXXX", base[41], p[256];
	struct ovset *s = NULL;
	struct overlay *ov = NULL, *again = NULL;
	struct ov_ent e, *v = NULL;
	size_t n = 0;
	int64_t id, *ids = NULL;
	int fd;

	CHECK(mkdtemp(dir));
	CHECK_EQ_INT(ovset_open(&s, dir), 0);
	CHECK_EQ_INT(ovset_get(s, 7, "feature/x", false, NULL, &ov), 0);
	CHECK(ov == NULL);
	CHECK(!ovset_any(s));
	CHECK_EQ_INT(ovset_get(s, 7, "feature/x", true, "abc", &ov), 0);
	CHECK(ov != NULL && ovset_any(s));
	ov_base(ov, base);
	CHECK_EQ_STR(base, "abc");

	/* a data file and its row */
	id = ov_id_new(ov);
	fd = ov_data_create(ov, id);
	CHECK(fd >= 0);
	CHECK_EQ_INT(write(fd, "hello", 5), 5);
	close(fd);
	e = row("a/b/f.txt", OV_FILE, id);
	CHECK_EQ_INT(ov_put(ov, &e), 0);
	e = row("a", OV_DIR, ov_id_new(ov));
	snprintf(e.blob, sizeof(e.blob), "%040d", 1);
	CHECK_EQ_INT(ov_put(ov, &e), 0);
	e = row("a/gone", OV_WH, 0);
	CHECK_EQ_INT(ov_put(ov, &e), 0);
	e = row("ab", OV_LINK, ov_id_new(ov));
	snprintf(e.target, sizeof(e.target), "a/b/f.txt");
	CHECK_EQ_INT(ov_put(ov, &e), 0);
	CHECK_EQ_INT(ov_count(ov), 4);
	CHECK_EQ_INT(ov_has_below(ov, "a"), 1);
	CHECK_EQ_INT(ov_has_below(ov, "ab"), 0); /* "ab" is not below "a" */
	CHECK_EQ_INT(ov_children(ov, "a", &v, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_STR(v[0].path, "a/gone");
	free(v);

	/* a directory renamed: every row below moves with it, parents rewritten */
	CHECK_EQ_INT(ov_tx_begin(ov), 0);
	CHECK_EQ_INT(ov_move_below(ov, "a", "z/y"), 0);
	CHECK_EQ_INT(ov_tx_end(ov, true), 0);
	CHECK_EQ_INT(ov_get(ov, "z/y/b/f.txt", &e), 0);
	CHECK_EQ_INT(e.data, id);
	CHECK_EQ_INT(ov_get(ov, "a/b/f.txt", &e), -ENOENT);
	CHECK_EQ_INT(ov_children(ov, "z/y/b", &v, &n), 0);
	CHECK_EQ_INT(n, 1);
	free(v);
	CHECK_EQ_INT(ov_get(ov, "ab", &e), 0); /* a sibling with the prefix stays */

	/* an orphan data file (a crash before its row) is swept at the next open */
	fd = ov_data_create(ov, 999);
	CHECK(fd >= 0);
	close(fd);
	ovset_free(s);
	s = NULL;
	CHECK_EQ_INT(ovset_open(&s, dir), 0);
	CHECK_EQ_INT(ovset_get(s, 7, "feature/x", false, NULL, &again), 0);
	CHECK(again != NULL);
	CHECK_EQ_INT(ov_count(again), 4);
	CHECK_EQ_INT(ov_data_size(again, id), 5);
	CHECK(ov_data_size(again, 999) < 0);
	CHECK_EQ_INT(ovset_bytes(s), 5);
	CHECK(ov_id_new(again) > id);

	/* rows below a directory deleted, their data ids given back */
	CHECK_EQ_INT(ov_del_below(again, "z", &ids, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(ids[0], id);
	CHECK_EQ_INT(ovset_bytes(s), 5); /* the caller drops the files once committed */
	ov_data_unlink(again, ids[0]);
	CHECK_EQ_INT(ovset_bytes(s), 0);
	free(ids);
	CHECK_EQ_INT(ov_meta_set(again, "intent", "c0ffee"), 0);
	CHECK_EQ_INT(ov_meta_get(again, "intent", p, sizeof(p)), 0);
	CHECK_EQ_STR(p, "c0ffee");
	CHECK_EQ_INT(ov_clear(again), 0);
	CHECK_EQ_INT(ov_count(again), 0);
	CHECK_EQ_INT(ov_epoch(again), 1);
	ov_base(again, base);
	CHECK_EQ_STR(base, "");
	CHECK_EQ_INT(ovset_bytes(s), 0);
	ovset_free(s);
	snprintf(p, sizeof(p), "rm -rf %s", dir);
	CHECK_EQ_INT(system(p), 0);
	return 0;
}
