/*
 * The sessions table: one row per agent and session id summing up the
 * session's events (its first origin, first and last ts, statements,
 * denials, closed, its first connection_open), so that listing sessions
 * reads one index instead of grouping every event (store_schema.h, schema
 * 5). Each append adds its new events in its own transaction and moves
 * sessions_counted.size, the leaves the table sums, to the ledger's size.
 * Events another writer stored without counting them (a collector of an
 * older schema beside this one) lie above it: the next append
 * counts them first. The upgrade to schema 5 is that catch-up from 0. The
 * rows are a summary: verify holds them to the events they sum up.
 */
#ifndef DBWARD_COLLECTOR_STORE_SESSIONS_H
#define DBWARD_COLLECTOR_STORE_SESSIONS_H

#include <stddef.h>
#include <stdint.h>

#include "collector/store_backend.h"
#include "collector/store_columns.h"

/* A new event, as the summary needs it. */
struct session_event {
	int64_t origin;			/* who sent it: origins.id */
	const Dbward__V1__Event *ev;
	uint64_t id;			/* its events.id */
};

/* True when @ev belongs to a session (a non-empty session id). */
bool session_event_wanted(const Dbward__V1__Event *ev);

/*
 * Adds a batch's new events of @agent_id (in any order; @evs is sorted in
 * place) to their sessions' rows, on the writer connection @c inside its
 * write transaction: one upsert per origin. The caller then sets
 * sessions_counted.size to the ledger's new size. 0, -ENOMEM or -EIO (the
 * backend's message on @c).
 */
int sessions_add(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		 struct session_event *evs, size_t n);

/*
 * Adds the events with ids above @counted (sessions_counted.size, below the
 * ledger's size: stored by a writer that did not count them) to their
 * sessions' rows, and sets it to the ledger's size. On @c
 * inside a write transaction under the ledger's lock. 0 or -EIO.
 */
int sessions_catch_up(const struct store_backend *be, struct store_conn *c, uint64_t counted);

/*
 * The upgrade to schema 5: creates the tables and
 * sums every event up, on @c inside a write transaction the caller opened
 * under the ledger's lock. Rows a replica beside us built first are
 * merged into, never added again: it finds sessions_counted already past 0. 0 or -EIO.
 */
int sessions_build(const struct store_backend *be, struct store_conn *c);

#endif
