/* reef-hub connection slots (conn.c): the total and per-address connection limits,
 * header and body deadlines enforced by a reaper thread, eviction of the oldest idle
 * connection when the slots run out (so idle sockets never starve the accept path),
 * and the budget of request bodies buffered in memory across connections. */
#ifndef REEF_HUB_CONN_H
#define REEF_HUB_CONN_H

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "hub.h"

/* Request bodies buffered in memory at once across all connections (the JSON parse of
 * one may take about twice its size again). Beyond it: 503 with Retry-After. */
#define HUB_MAX_INFLIGHT ((size_t)48 << 20)

/* Reads the limits of hub (defaults for zeros, the total clamped to the fd limit),
 * starts the reaper and sets *mhd_limit to the cap MHD itself should enforce. */
int hub_conn_start(const struct hub *hub, unsigned *mhd_limit);
void hub_conn_stop(void);
/* MHD_OPTION_NOTIFY_CONNECTION and the accept policy callback of MHD_start_daemon. */
void hub_conn_notify_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode code);
enum MHD_Result hub_conn_accept_cb(void *cls, const struct sockaddr *sa, socklen_t len);
/* The connection's request has its headers: it is no longer idle. deadline_ms > 0:
 * shut it down unless hub_conn_busy(conn, 0) comes within that many ms (an API body
 * that trickles in); 0: no deadline (git and LFS transfers, handlers). */
void hub_conn_busy(struct MHD_Connection *conn, unsigned deadline_ms);
/* The request is answered: the connection waits for the next one. */
void hub_conn_idle(struct MHD_Connection *conn);
/* Takes n bytes of the in-flight body budget; false when it is spent. */
bool hub_conn_charge(size_t n);
void hub_conn_release(size_t n);
/* Writes a complete answer on the socket itself and returns MHD_NO, so MHD closes the
 * connection without reading the rest of the body: for a body found too long or bad
 * halfway (MHD can queue no response then). */
enum MHD_Result hub_conn_refuse(struct MHD_Connection *conn, int status, const char *ctype,
                                const char *body);

#endif
