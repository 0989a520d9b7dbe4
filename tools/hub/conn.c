/* Connection slots of the HTTP server (conn.h). MHD runs a thread per connection and
 * tells us when each opens and closes; we keep a list of them under one lock. A socket
 * that must go is shut down (never closed) from here: its own thread then sees EOF and
 * MHD closes it, so the descriptor is never reused under MHD's feet. */
#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "reef/log.h"

/* Descriptors kept free of connections: git children, LFS files, SQLite. */
#define CONN_FD_RESERVE 256
/* Waiting for a request when more than half the slots are taken. */
#define CONN_PRESSURE_MS 5000

struct conn {
	struct conn *prev, *next;
	int fd;
	struct sockaddr_storage addr;
	bool waiting;        /* no request in progress: before headers or between requests */
	bool evicted;        /* shut down; gone once MHD closes it */
	int64_t since_ms;    /* when it began waiting */
	int64_t deadline_ms; /* busy with a deadline (0: none) */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct conn *head;
	unsigned n; /* open and not evicted */
	unsigned max, per_ip;
	int64_t header_ms;
	size_t inflight;
	pthread_t reaper;
	bool running, stop;
} cs = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool addr_same(const struct sockaddr_storage *a, const struct sockaddr *b)
{
	if (a->ss_family != b->sa_family)
		return false;
	if (b->sa_family == AF_INET)
		return ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)(const void *)b)->sin_addr.s_addr;
	if (b->sa_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
		              &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr,
		              sizeof(struct in6_addr)) == 0;
	return true;
}

/* Under cs.lock. */
static void conn_evict(struct conn *c, const char *why)
{
	c->evicted = true;
	cs.n--;
	shutdown(c->fd, SHUT_RDWR);
	log_debug("connection %d closed: %s", c->fd, why);
}

static void *reaper_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&cs.lock);
	while (!cs.stop) {
		struct timespec ts;
		int64_t now = now_ms();
		/* Under pressure idle connections get a much shorter wait. */
		int64_t wait_ms = cs.n > cs.max / 2 && cs.header_ms > CONN_PRESSURE_MS
		                      ? CONN_PRESSURE_MS
		                      : cs.header_ms;

		for (struct conn *c = cs.head; c; c = c->next) {
			if (c->evicted)
				continue;
			if (c->waiting && now - c->since_ms > wait_ms)
				conn_evict(c, "no request in time");
			else if (!c->waiting && c->deadline_ms && now > c->deadline_ms)
				conn_evict(c, "request body too slow");
		}
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cs.wake, &cs.lock, &ts);
	}
	pthread_mutex_unlock(&cs.lock);
	return NULL;
}

int hub_conn_start(const struct hub *hub, unsigned *mhd_limit)
{
	struct rlimit rl;
	unsigned fd_room;
	int r;

	cs.max = hub->max_conns ? hub->max_conns : HUB_DEFAULT_MAX_CONNS;
	cs.per_ip = hub->max_conns_per_ip ? hub->max_conns_per_ip : HUB_DEFAULT_MAX_CONNS_PER_IP;
	cs.header_ms =
	    (int64_t)(hub->header_timeout ? hub->header_timeout : HUB_DEFAULT_HEADER_TIMEOUT) *
	    1000;
	/* Each connection is a descriptor: take the hard limit, and fit in it. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		if (rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
			getrlimit(RLIMIT_NOFILE, &rl);
		}
		fd_room = rl.rlim_cur > 2 * CONN_FD_RESERVE + 64 && rl.rlim_cur < UINT32_MAX
		              ? (unsigned)rl.rlim_cur - CONN_FD_RESERVE - 64
		              : 64;
		if (cs.max > fd_room) {
			log_warn("only %u connections fit in the descriptor limit %llu", fd_room,
			         (unsigned long long)rl.rlim_cur);
			cs.max = fd_room;
		}
	}
	*mhd_limit = cs.max + 64;
	cs.stop = false;
	r = pthread_create(&cs.reaper, NULL, reaper_main, NULL);
	if (r != 0)
		return log_ret(-r, "cannot start the connection reaper: %s", strerror(r));
	cs.running = true;
	log_info("connections: at most %u, %u per address, %llds for a request's headers", cs.max,
	         cs.per_ip, (long long)(cs.header_ms / 1000));
	return 0;
}

void hub_conn_stop(void)
{
	if (!cs.running)
		return;
	pthread_mutex_lock(&cs.lock);
	cs.stop = true;
	pthread_cond_signal(&cs.wake);
	pthread_mutex_unlock(&cs.lock);
	pthread_join(cs.reaper, NULL);
	cs.running = false;
}

enum MHD_Result hub_conn_accept_cb(void *cls, const struct sockaddr *sa, socklen_t len)
{
	struct conn *oldest = NULL, *oldest_same = NULL;
	unsigned same = 0;
	enum MHD_Result ret = MHD_YES;

	(void)cls;
	(void)len;
	pthread_mutex_lock(&cs.lock);
	for (struct conn *c = cs.head; c; c = c->next) {
		bool mine;

		if (c->evicted)
			continue;
		mine = addr_same(&c->addr, sa);
		same += mine;
		if (!c->waiting)
			continue;
		if (!oldest || c->since_ms < oldest->since_ms)
			oldest = c;
		if (mine && (!oldest_same || c->since_ms < oldest_same->since_ms))
			oldest_same = c;
	}
	/* A full address or a full server makes room by dropping its oldest idle
	 * connection: a client that sends requests always gets in. */
	if (same >= cs.per_ip) {
		if (oldest_same) {
			if (oldest == oldest_same)
				oldest = NULL;
			conn_evict(oldest_same, "address at its connection limit");
		} else {
			ret = MHD_NO;
		}
	}
	if (ret == MHD_YES && cs.n >= cs.max) {
		if (oldest)
			conn_evict(oldest, "connection slots full");
		else
			ret = MHD_NO;
	}
	pthread_mutex_unlock(&cs.lock);
	return ret;
}

void hub_conn_notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode code)
{
	struct conn *c;

	(void)cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fi =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *ai =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		c = calloc(1, sizeof(*c));
		*socket_context = c;
		if (!c)
			return;
		c->fd = fi ? fi->connect_fd : -1;
		if (ai && ai->client_addr) {
			size_t n = ai->client_addr->sa_family == AF_INET6
			               ? sizeof(struct sockaddr_in6)
			               : sizeof(struct sockaddr_in);

			memcpy(&c->addr, ai->client_addr, n);
		}
		c->waiting = true;
		pthread_mutex_lock(&cs.lock);
		c->since_ms = now_ms();
		c->next = cs.head;
		if (cs.head)
			cs.head->prev = c;
		cs.head = c;
		cs.n++;
		pthread_mutex_unlock(&cs.lock);
		return;
	}
	c = *socket_context;
	*socket_context = NULL;
	if (!c)
		return;
	pthread_mutex_lock(&cs.lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		cs.head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (!c->evicted)
		cs.n--;
	pthread_mutex_unlock(&cs.lock);
	free(c);
}

static struct conn *conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;

	return ci ? ci->socket_context : NULL;
}

void hub_conn_busy(struct MHD_Connection *conn, unsigned deadline_ms)
{
	struct conn *c = conn_of(conn);

	if (!c)
		return;
	pthread_mutex_lock(&cs.lock);
	c->waiting = false;
	c->deadline_ms = deadline_ms ? now_ms() + deadline_ms : 0;
	pthread_mutex_unlock(&cs.lock);
}

void hub_conn_idle(struct MHD_Connection *conn)
{
	struct conn *c = conn_of(conn);

	if (!c)
		return;
	pthread_mutex_lock(&cs.lock);
	c->waiting = true;
	c->since_ms = now_ms();
	c->deadline_ms = 0;
	pthread_mutex_unlock(&cs.lock);
}

bool hub_conn_charge(size_t n)
{
	bool ok;

	pthread_mutex_lock(&cs.lock);
	ok = n <= HUB_MAX_INFLIGHT - cs.inflight;
	if (ok)
		cs.inflight += n;
	pthread_mutex_unlock(&cs.lock);
	return ok;
}

void hub_conn_release(size_t n)
{
	pthread_mutex_lock(&cs.lock);
	cs.inflight -= n <= cs.inflight ? n : cs.inflight;
	pthread_mutex_unlock(&cs.lock);
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 413:
		return "Payload Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

enum MHD_Result hub_conn_refuse(struct MHD_Connection *conn, int status, const char *ctype,
                                const char *body)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	char head[512];
	int n;

	if (!ci)
		return MHD_NO;
	n = snprintf(head, sizeof(head),
	             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	             "Connection: close\r\n\r\n",
	             status, reason_phrase(status), ctype, strlen(body),
	             status == 503 ? "Retry-After: 1\r\n" : "");
	/* Best effort and never blocking: the connection is dropped either way. */
	if (n > 0 && (size_t)n < sizeof(head) &&
	    send(ci->connect_fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n)
		send(ci->connect_fd, body, strlen(body), MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(ci->connect_fd, SHUT_WR);
	return MHD_NO;
}
