/*
 * The sessions table: one row per agent and session id summing up the
 * session's events (first and last ts, statements, denials, closed, the
 * connection_open event), so that listing sessions reads one index instead
 * of grouping every event (store_schema.h, schema 5). Each append adds its
 * new events in the same transaction; the upgrade to schema 5 builds the
 * rows of the events stored before. The rows are a summary: verify holds
 * them to the events they sum up.
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
 * write transaction: one upsert per origin. 0 or -EIO (the backend's
 * message on @c).
 */
int sessions_add(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		 struct session_event *evs, size_t n);

/*
 * Creates the table if it is missing and fills it from the events: the
 * upgrade to schema 5, on @c inside a write transaction the caller opened
 * under the ledger's lock. Rows already there are kept (a replica beside
 * us built them first). 0 or -EIO.
 */
int sessions_build(const struct store_backend *be, struct store_conn *c);

#endif
