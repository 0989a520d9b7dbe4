/* GitLab's project webhooks on reef-hub's /api/v4, for pipeline and job events
 * (webhooks.c). */
#ifndef REEF_HUB_WEBHOOKS_H
#define REEF_HUB_WEBHOOKS_H

#include "hub.h"

/* Creates the hooks table and starts the delivery thread; after ci_runner_start. */
int hub_webhooks_init(struct hub *h);
/* Stops the delivery thread (events still queued are dropped). */
void hub_webhooks_stop(void);
/* hub_webhooks_route: in hub_ci.h (the core calls it). */

#endif
