#include "collector/store_sessions.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_schema.h"

#define SESSION_COLUMNS                                                                 \
	"agent_id, session_id, origin, first_ts, last_ts, statements, denied, closed, "  \
	"open_event_id"

/*
 * Adding a row's worth of events to a row already there. ts is compared as
 * the signed 64-bit integer it is stored as, as min()/max() over the
 * events do; an open_event_id or origin is the smaller of the two.
 */
#define SESSION_MERGE                                                                   \
	" ON CONFLICT (agent_id, session_id) DO UPDATE SET "                            \
	"origin = CASE WHEN excluded.origin < sessions.origin "                         \
	"THEN excluded.origin ELSE sessions.origin END, "                               \
	"first_ts = CASE WHEN excluded.first_ts < sessions.first_ts "                   \
	"THEN excluded.first_ts ELSE sessions.first_ts END, "                           \
	"last_ts = CASE WHEN excluded.last_ts > sessions.last_ts "                      \
	"THEN excluded.last_ts ELSE sessions.last_ts END, "                             \
	"statements = sessions.statements + excluded.statements, "                      \
	"denied = sessions.denied + excluded.denied, "                                  \
	"closed = CASE WHEN excluded.closed > sessions.closed "                         \
	"THEN excluded.closed ELSE sessions.closed END, "                               \
	"open_event_id = CASE WHEN sessions.open_event_id IS NULL "                     \
	"OR excluded.open_event_id < sessions.open_event_id "                           \
	"THEN excluded.open_event_id ELSE sessions.open_event_id END"

bool session_event_wanted(const Dbward__V1__Event *ev)
{
	return ev->session && ev->session->session_id && ev->session->session_id[0];
}

static int by_origin(const void *x, const void *y)
{
	const struct session_event *a = x, *b = y;

	if (a->origin != b->origin)
		return a->origin < b->origin ? -1 : 1;
	return a->id < b->id ? -1 : a->id > b->id;
}

/* What a run of one origin's events adds to its session's row. */
struct session_sum {
	int64_t first_ts, last_ts;	/* signed, as stored */
	int64_t statements, denied;
	bool closed;
	uint64_t open_event_id;		/* 0: none among them */
};

static void sum_event(struct session_sum *sum, const struct session_event *e)
{
	const Dbward__V1__Event *ev = e->ev;
	int64_t ts = (int64_t)ev->ts;

	if (ts < sum->first_ts)
		sum->first_ts = ts;
	if (ts > sum->last_ts)
		sum->last_ts = ts;
	switch (ev->body_case) {
	case DBWARD__V1__EVENT__BODY_STATEMENT:
		sum->statements++;
		if (ev->statement && ev->statement->verdict &&
		    strcmp(ev->statement->verdict, "deny") == 0)
			sum->denied++;
		break;
	case DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE:
		sum->closed = true;
		break;
	case DBWARD__V1__EVENT__BODY_CONNECTION_OPEN:
		if (!sum->open_event_id)
			sum->open_event_id = e->id;	/* ids ascend within the run */
		break;
	default:
		break;
	}
}

/* One origin's run: its session id as origins stores it (text repaired). */
static int upsert(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		  const struct session_event *first, const struct session_sum *sum)
{
	struct store_row row;
	int rc;

	if (store_columns_derive_origin(first->ev, &row) < 0)
		return -ENOMEM;
	struct sql_value p[] = {
		sql_text(agent_id),
		row.v[COL_SESSION_ID],
		sql_int(first->origin),
		sql_int(sum->first_ts),
		sql_int(sum->last_ts),
		sql_int(sum->statements),
		sql_int(sum->denied),
		sql_int(sum->closed),
		sum->open_event_id ? sql_u64(sum->open_event_id)
				   : (struct sql_value){ .type = SQL_NULL },
	};

	rc = be->exec(c, STMT_SESSION_UPSERT,
		      "INSERT INTO sessions (" SESSION_COLUMNS ") VALUES "
		      "($1, $2, $3, $4, $5, $6, $7, $8, $9)" SESSION_MERGE,
		      p, 9, NULL, NULL, NULL);
	store_row_release(&row);
	return rc;
}

int sessions_add(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		 struct session_event *evs, size_t n)
{
	qsort(evs, n, sizeof(*evs), by_origin);
	for (size_t i = 0; i < n;) {
		int64_t ts = (int64_t)evs[i].ev->ts;
		struct session_sum sum = { .first_ts = ts, .last_ts = ts };
		size_t start = i;
		int rc;

		for (; i < n && evs[i].origin == evs[start].origin; i++)
			sum_event(&sum, &evs[i]);
		rc = upsert(be, c, agent_id, &evs[start], &sum);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int sessions_catch_up(const struct store_backend *be, struct store_conn *c, uint64_t counted)
{
	struct sql_value p[] = { sql_u64(counted) };
	int rc = be->exec(c, STMT_SESSION_CATCH_UP,
			  "INSERT INTO sessions (" SESSION_COLUMNS ") "
			  STORE_SESSIONS_OF_EVENTS("e.id > $1") SESSION_MERGE,
			  p, 1, NULL, NULL, NULL);

	if (rc == 0)
		rc = be->exec(c, STMT_SESSION_COUNTED,
			      "UPDATE sessions_counted SET size = (SELECT size FROM ledger WHERE id = 1) "
			      "WHERE id = 1",
			      NULL, 0, NULL, NULL, NULL);
	return rc;
}

static int counted_row(void *arg, const struct sql_value *cols, int ncols)
{
	if (ncols > 0 && cols[0].type == SQL_INT)
		*(uint64_t *)arg = (uint64_t)cols[0].i;
	return 0;
}

int sessions_build(const struct store_backend *be, struct store_conn *c)
{
	static const char *const steps[] = {
		STORE_SCHEMA_SESSIONS,
		STORE_SCHEMA_SESSIONS_INDEXES,
		STORE_SCHEMA_SESSIONS_COUNTED,
	};
	uint64_t counted = 0;	/* 0, unless a replica beside us built the rows first */
	int rc = store_exec_steps(be, c, steps, sizeof(steps) / sizeof(steps[0]));

	if (rc == 0)
		rc = be->exec(c, STMT_DYNAMIC, "SELECT size FROM sessions_counted WHERE id = 1",
			      NULL, 0, counted_row, &counted, NULL);
	return rc < 0 ? rc : sessions_catch_up(be, c, counted);
}
