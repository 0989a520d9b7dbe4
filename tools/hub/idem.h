/* Idempotent POSTs (tools/hub/idem.c): a client that may retry a request it cannot know
 * the fate of (reefd's control-file journal, after a timeout, a hub restart or its own
 * restart) sends an `Idempotency-Key` header; the first response to (user, key) with a
 * status below 500 is stored (table ci_idempotency, UNIQUE(user_id, key)) and every
 * later request with that key gets the stored response instead of acting again. A
 * request still in progress under the same key is waited for. 5xx answers are not
 * stored, so the client may retry them. */
#ifndef REEF_HUB_IDEM_H
#define REEF_HUB_IDEM_H

#include "hub.h"

#define HUB_IDEM_KEY_MAX 128

struct hub_idem;

/* Creates the table and forgets keys a previous hub left in progress. */
int hub_idem_init(void);
/* For a POST carrying Idempotency-Key: 1 when resp now holds the stored answer (the
 * caller sends it as is); 0 to go on, with *out set (or NULL without a key) to pass to
 * hub_idem_end once resp is final. A malformed key is answered 400 (returns 1). */
int hub_idem_begin(struct hub_req *req, struct hub_resp *resp, struct hub_idem **out);
/* Stores (status < 500) or releases the key, and frees s (NULL accepted). */
void hub_idem_end(struct hub_idem *s, const struct hub_resp *resp);

#endif
