#include "collector/store_sessions.h"

#include <stdlib.h>
#include <string.h>

#include "collector/store_schema.h"

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
	uint64_t first_ts, last_ts;
	int64_t statements, denied;
	bool closed;
	uint64_t open_event_id;		/* 0: none among them */
};

static void sum_event(struct session_sum *sum, const struct session_event *e)
{
	const Dbward__V1__Event *ev = e->ev;

	if (ev->ts < sum->first_ts)
		sum->first_ts = ev->ts;
	if (ev->ts > sum->last_ts)
		sum->last_ts = ev->ts;
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

/*
 * ts is compared as the signed 64-bit integer it is stored as, as
 * min()/max() over the events would. The stored open_event_id is the
 * smaller: ids only grow.
 */
#define SESSION_UPSERT                                                                  \
	"INSERT INTO sessions (agent_id, session_id, first_ts, last_ts, statements, "  \
	"denied, closed, open_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "       \
	"ON CONFLICT (agent_id, session_id) DO UPDATE SET "                             \
	"first_ts = CASE WHEN excluded.first_ts < sessions.first_ts "                   \
	"THEN excluded.first_ts ELSE sessions.first_ts END, "                           \
	"last_ts = CASE WHEN excluded.last_ts > sessions.last_ts "                      \
	"THEN excluded.last_ts ELSE sessions.last_ts END, "                             \
	"statements = sessions.statements + excluded.statements, "                      \
	"denied = sessions.denied + excluded.denied, "                                  \
	"closed = CASE WHEN excluded.closed > sessions.closed "                         \
	"THEN excluded.closed ELSE sessions.closed END, "                               \
	"open_event_id = COALESCE(sessions.open_event_id, excluded.open_event_id)"

static int upsert(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		  const char *session_id, const struct session_sum *sum)
{
	struct sql_value p[] = {
		sql_text(agent_id),
		sql_text(session_id),
		sql_u64(sum->first_ts),
		sql_u64(sum->last_ts),
		sql_int(sum->statements),
		sql_int(sum->denied),
		sql_int(sum->closed),
		sum->open_event_id ? sql_u64(sum->open_event_id)
				   : (struct sql_value){ .type = SQL_NULL },
	};

	return be->exec(c, STMT_SESSION_UPSERT, SESSION_UPSERT, p, 8, NULL, NULL, NULL);
}

int sessions_add(const struct store_backend *be, struct store_conn *c, const char *agent_id,
		 struct session_event *evs, size_t n)
{
	qsort(evs, n, sizeof(*evs), by_origin);
	for (size_t i = 0; i < n;) {
		struct session_sum sum = { .first_ts = evs[i].ev->ts, .last_ts = evs[i].ev->ts };
		size_t start = i;
		int rc;

		for (; i < n && evs[i].origin == evs[start].origin; i++)
			sum_event(&sum, &evs[i]);
		rc = upsert(be, c, agent_id, evs[start].ev->session->session_id, &sum);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int no_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)arg, (void)cols, (void)ncols;
	return 0;
}

int sessions_build(const struct store_backend *be, struct store_conn *c)
{
	static const char *const steps[] = {
		STORE_SCHEMA_SESSIONS,
		STORE_SCHEMA_SESSIONS_INDEX,
		"INSERT INTO sessions (agent_id, session_id, first_ts, last_ts, statements, "
		"denied, closed, open_event_id) " STORE_SESSIONS_FROM_EVENTS
		" ON CONFLICT (agent_id, session_id) DO NOTHING",
	};

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		int rc = be->exec(c, STMT_DYNAMIC, steps[i], NULL, 0, no_row, NULL, NULL);

		if (rc < 0)
			return rc;
	}
	return 0;
}
