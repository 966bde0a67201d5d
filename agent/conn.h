/*
 * One intercepted client connection and its upstream, as a state machine
 * that follows the start of the PostgreSQL protocol:
 *
 *   READ_STARTUP ──► CONNECTING ──► STREAMING ──► (closed)
 *        ▲   │                      ▲
 *        │   └─ SSLRequest/GSSENC ─► WAIT_ENCRYPTION
 *        └────────── 'N' ───────────┘     └── 'S'/'G': STREAMING, opaque
 *   any state ── bad input / no upstream ──► CLOSING (ErrorResponse) ──► closed
 *
 * The startup packet is read for the audit trail (user, database,
 * application_name) and forwarded byte for byte.
 */
#ifndef DBWARD_AGENT_CONN_H
#define DBWARD_AGENT_CONN_H

#include <stdint.h>

#include "agent/worker.h"
#include "common/netaddr.h"

/* Takes ownership of @fd, a client socket the loop just accepted. */
void conn_accept(struct worker *w, int fd, const struct netaddr *peer,
		 const struct netaddr *local);
/* Readiness reported by epoll for one of the connection's sockets. */
void conn_on_event(struct endpoint *ep, uint32_t events);
/* Continues the connections that used up their budget last round. */
void conn_run_ready(struct worker *w);
/* Ends connections stuck before their session (limits.startup_timeout_ms)
 * or after our error (CLOSING for too long). Once per loop tick. */
void conn_sweep(struct worker *w, uint64_t now_ns);
/* Closes every connection of the loop (shutdown). */
void conn_close_all(struct worker *w, const char *why);
/* Records the audit events the loop's connections staged this round (one
 * lock, one spool write), then lets those connections send on. */
void conn_commit(struct worker *w);
/* Frees the connections closed during this round. */
void conn_free_doomed(struct worker *w);

#endif
