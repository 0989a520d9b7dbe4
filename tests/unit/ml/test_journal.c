/* The control journal: durable queued entries, in-order delivery, retries with backoff
 * while the server is unreachable, refusals kept with their reason, and what a reopened
 * journal still owes. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../check.h"
#include "journal.h"

struct fake {
	pthread_mutex_t lock;
	int down;     /* answers 0 (unreachable) while set */
	int sent[16]; /* ids in the order they were sent */
	int nsent;
	int done;
	char last_key[33];
};

static void fake_send(void *arg, const struct journal_entry *e, long *status, char **body)
{
	struct fake *f = arg;

	pthread_mutex_lock(&f->lock);
	if (f->down) {
		*status = 0;
	} else if (strstr(e->body, "refuse")) {
		*status = 400;
		*body = strdup("{\"message\":{\"params\":[\"refused on purpose\"]}}");
	} else {
		*status = 201;
		*body = strdup("{\"id\": 7}");
		f->sent[f->nsent++] = (int)e->id;
		memcpy(f->last_key, e->key, 33);
	}
	pthread_mutex_unlock(&f->lock);
}

static void fake_done(void *arg, const struct journal_entry *e)
{
	struct fake *f = arg;

	pthread_mutex_lock(&f->lock);
	f->done++;
	pthread_mutex_unlock(&f->lock);
}

static void wait_for(struct journal *j, int64_t id, enum journal_state s)
{
	struct journal_entry e;

	for (int i = 0; i < 200; i++) {
		CHECK_EQ_INT(journal_get(j, id, &e), 0);
		journal_entry_clear(&e);
		if (e.state == s)
			return;
		usleep(25000);
	}
	CHECK(!"state not reached");
}

static int64_t add(struct journal *j, const char *body)
{
	struct journal_entry e = {0};

	e.project_id = 3;
	strcpy(e.kind, "experiment");
	strcpy(e.target, "exp");
	strcpy(e.path, "/api/v1/projects/3/experiments");
	e.body = strdup(body);
	CHECK_EQ_INT(journal_add(j, &e), 0);
	CHECK_EQ_INT(strlen(e.key), 32);
	free(e.body);
	return e.id;
}

int main(void)
{
	char dir[] = "/tmp/reef-journal-XXXXXX", path[128];
	struct fake f = {.lock = PTHREAD_MUTEX_INITIALIZER, .down = 1};
	struct journal *j;
	struct journal_entry e, *v;
	int64_t a, b, c, q, fl, dl;
	size_t n;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/journal.db", dir);
	CHECK_EQ_INT(journal_open(&j, path), 0);
	a = add(j, "{\"n\":1}");
	b = add(j, "{\"n\":2}");
	CHECK(b > a);
	journal_counts(j, &q, &fl, &dl);
	CHECK_EQ_INT(q, 2);
	/* closed before any delivery: a reopened journal still owes both, in order */
	journal_free(j);
	CHECK_EQ_INT(journal_open(&j, path), 0);
	CHECK_EQ_INT(journal_pending(j, 3, "experiment", &v, &n), 0);
	CHECK_EQ_INT(n, 2);
	CHECK_EQ_INT(v[0].id, a);
	CHECK_EQ_STR(v[1].body, "{\"n\":2}");
	journal_entries_free(v, n);
	CHECK_EQ_INT(journal_start(j, fake_send, fake_done, &f), 0);
	usleep(600000); /* attempts fail meanwhile, with backoff */
	CHECK_EQ_INT(journal_get(j, a, &e), 0);
	CHECK_EQ_INT(e.state, JOURNAL_QUEUED);
	CHECK(e.attempts >= 2 && e.attempts < 8);
	CHECK(strstr(e.error, "unreachable"));
	journal_entry_clear(&e);
	pthread_mutex_lock(&f.lock);
	f.down = 0;
	pthread_mutex_unlock(&f.lock);
	c = add(j, "{\"refuse\":true}");
	wait_for(j, a, JOURNAL_DELIVERED);
	wait_for(j, b, JOURNAL_DELIVERED);
	wait_for(j, c, JOURNAL_FAILED);
	/* the done callback runs after the state is stored: give it its moment */
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&f.lock);
		int done = f.done;
		pthread_mutex_unlock(&f.lock);
		if (done >= 3)
			break;
		usleep(10000);
	}
	pthread_mutex_lock(&f.lock);
	CHECK_EQ_INT(f.nsent, 2);
	CHECK_EQ_INT(f.sent[0], a);
	CHECK_EQ_INT(f.sent[1], b);
	CHECK_EQ_INT(f.done, 3);
	pthread_mutex_unlock(&f.lock);
	CHECK_EQ_INT(journal_get(j, b, &e), 0);
	CHECK_EQ_STR(e.result, "{\"id\": 7}");
	CHECK_EQ_STR(e.key, f.last_key);
	CHECK_EQ_INT(e.http_status, 201);
	journal_entry_clear(&e);
	CHECK_EQ_INT(journal_get(j, c, &e), 0);
	CHECK(strstr(e.error, "refused on purpose"));
	CHECK_EQ_INT(e.http_status, 400);
	journal_entry_clear(&e);
	journal_counts(j, &q, &fl, &dl);
	CHECK_EQ_INT(q, 0);
	CHECK_EQ_INT(fl, 1);
	CHECK_EQ_INT(dl, 2);
	/* pending lists what is not delivered: the refused one */
	CHECK_EQ_INT(journal_pending(j, 3, "experiment", &v, &n), 0);
	CHECK_EQ_INT(n, 1);
	CHECK_EQ_INT(v[0].id, c);
	journal_entries_free(v, n);
	CHECK_EQ_INT(journal_get(j, 999, &e), -ENOENT);
	journal_free(j);
	/* delivered entries are not sent again after a reopen */
	f.nsent = 0;
	CHECK_EQ_INT(journal_open(&j, path), 0);
	CHECK_EQ_INT(journal_start(j, fake_send, NULL, &f), 0);
	usleep(300000);
	CHECK_EQ_INT(f.nsent, 0);
	journal_free(j);
	snprintf(path, sizeof(path), "rm -rf %s", dir);
	CHECK_EQ_INT(system(path), 0);
	return 0;
}
