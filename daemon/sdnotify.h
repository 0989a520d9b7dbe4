/* systemd's readiness protocol (sd_notify(3)) without libsystemd: a reefd run as a
 * Type=notify service tells systemd when the mount is up and when it stops. */
#ifndef REEF_SDNOTIFY_H
#define REEF_SDNOTIFY_H

/* Sends one notification (e.g. "READY=1\nSTATUS=…") to $NOTIFY_SOCKET, if the
 * environment names one; returns 1 if sent, 0 if there is no socket, -errno on error. */
int sdnotify(const char *state);

#endif
