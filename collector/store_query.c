/*
 * Reading the audit trail: events by filter, one event, sessions, alerts,
 * agents. Filters become one WHERE clause with numbered parameters; every
 * query runs on a read connection of the pool, beside appends.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "collector/store.h"
#include "collector/store_backend.h"
#include "collector/store_payload.h"
#include "common/log.h"

#define QUERY_SQL_MAX 3072
#define LIMIT_DEFAULT 100
#define LIMIT_MAX 10000

struct query_sql {
	char text[QUERY_SQL_MAX];
	size_t len;
	bool overflow;
	bool where;			/* WHERE written: next condition is AND */
	struct sql_value params[STORE_MAX_PARAMS];
	int n;
};

__attribute__((format(printf, 2, 3))) static void q_add(struct query_sql *q, const char *fmt,
							   ...)
{
	va_list ap;
	int w;

	if (q->overflow)
		return;
	va_start(ap, fmt);
	w = vsnprintf(q->text + q->len, sizeof(q->text) - q->len, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= sizeof(q->text) - q->len)
		q->overflow = true;
	else
		q->len += (size_t)w;
}

/* A parameter's number ($N), or 0 when there is no room. */
static int q_param(struct query_sql *q, struct sql_value v)
{
	if (q->n >= STORE_MAX_PARAMS) {
		q->overflow = true;
		return 0;
	}
	q->params[q->n++] = v;
	return q->n;
}

static void q_cond(struct query_sql *q)
{
	q_add(q, q->where ? " AND " : " WHERE ");
	q->where = true;
}

static bool given(const char *s)
{
	return s && s[0];
}

static void where_text(struct query_sql *q, const char *column, const char *value)
{
	if (!given(value))
		return;
	q_cond(q);
	q_add(q, "%s = $%d", column, q_param(q, sql_text(value)));
}

static void where_int(struct query_sql *q, const char *cond, int64_t value)
{
	q_cond(q);
	q_add(q, cond, q_param(q, sql_int(value)));
}

/* Filters are unsigned; the columns are signed 64-bit: past the top is the top. */
static int64_t clamp_int64(uint64_t v)
{
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

/* Who sent the event: the conditions on its origin (store_schema.h). */
static bool filter_has_origin(const struct store_filter *f)
{
	return f->pid >= 0 || given(f->comm) || given(f->user) || given(f->db_user) ||
	       given(f->database) || given(f->session_id) || given(f->pod);
}

/* "@lhs IN (SELECT @column FROM origins WHERE ...)" */
static void origin_where(struct query_sql *q, const struct store_filter *f, const char *lhs,
			 const char *column)
{
	q_cond(q);
	q_add(q, "%s IN (SELECT %s FROM origins", lhs, column);
	q->where = false;
	if (f->pid >= 0)
		where_int(q, "pid = $%d", f->pid);
	where_text(q, "comm", f->comm);
	where_text(q, "user_name", f->user);
	where_text(q, "db_user", f->db_user);
	where_text(q, "database", f->database);
	where_text(q, "session_id", f->session_id);
	if (given(f->pod)) {
		int p = q_param(q, sql_text(f->pod));

		q_cond(q);
		/* Absent values are '' here: "ns/" or "/name" is no pod. */
		q_add(q, "(pod_uid = $%d OR pod_name = $%d OR (pod_namespace <> '' AND "
			 "pod_name <> '' AND pod_namespace || '/' || pod_name = $%d))",
		      p, p, p);
	}
	q_add(q, ")");
	q->where = true;
}

/* Column names are qualified: the sessions query joins origins. */
static void filter_where(struct query_sql *q, const struct store_filter *f, const char *substr_fn)
{
	if (f->since_ns)
		where_int(q, "events.ts >= $%d", clamp_int64(f->since_ns));
	if (f->until_ns)
		where_int(q, "events.ts < $%d", clamp_int64(f->until_ns));
	if (f->after_id)
		where_int(q, "events.id > $%d", clamp_int64(f->after_id));
	where_text(q, "events.agent_id", f->agent_id);
	where_text(q, "events.verdict", f->verdict);
	where_text(q, "events.kind", f->kind);
	if (filter_has_origin(f))
		origin_where(q, f, "events.origin", "id");
	if (given(f->text)) {
		q_cond(q);
		q_add(q, "%s(events.sql, $%d) > 0", substr_fn, q_param(q, sql_text(f->text)));
	}
}

/* A page's size: 0 is the default, anything above the most is the most. */
static uint32_t page_limit(uint32_t limit)
{
	if (!limit)
		return LIMIT_DEFAULT;
	return limit < LIMIT_MAX ? limit : LIMIT_MAX;
}

static void filter_limit(struct query_sql *q, const struct store_filter *f)
{
	q_add(q, " LIMIT $%d", q_param(q, sql_int(page_limit(f->limit))));
}

/* Runs a dynamic query on a read connection. */
static int q_run(struct store *s, struct query_sql *q, sql_row_fn *fn, void *arg)
{
	struct store_conn *c;
	int rc;

	if (q->overflow) {
		log_error("store: a query's filters do not fit");
		return -EIO;
	}
	c = store_reader_get(s);
	rc = store_exec(s, c, STMT_DYNAMIC, q->text, q->params, q->n, fn, arg);
	store_reader_put(s, c);
	return rc;
}

/* --- events ------------------------------------------------------------- */

struct event_walk {
	store_event_fn *fn;
	void *arg;
	bool any;
};

static int event_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct event_walk *w = arg;
	struct store_event e = {
		.id = (uint64_t)cols[0].i,
		.leaf_index = (uint64_t)cols[1].i,
		.agent_id = cols[2].type == SQL_TEXT ? cols[2].p : "",
		.epoch = (uint64_t)cols[3].i,
		.seq = (uint64_t)cols[4].i,
		.ts = (uint64_t)cols[5].i,
		.raw = cols[SQL_EVENT_BYTES_COL].p,
		.len = cols[SQL_EVENT_BYTES_COL].len,
	};

	(void)ncols;
	w->any = true;
	if (cols[SQL_EVENT_BYTES_COL].type != SQL_BLOB)
		e.raw = NULL;	/* unreadable: logged by store_exec_events */
	return w->fn(w->arg, &e);
}

int store_events_page(struct store *s, const struct store_filter *f, size_t budget,
		      store_event_fn *fn, void *arg, bool *cut)
{
	struct query_sql q = { .len = 0 };
	struct event_walk w = { fn, arg, false };
	struct store_conn *c;
	int rc;

	*cut = false;
	q_add(&q, "SELECT " SQL_EVENT_COLUMNS " FROM events");
	filter_where(&q, f, s->be->substr_fn);
	q_add(&q, " ORDER BY id");
	filter_limit(&q, f);
	if (q.overflow) {
		log_error("store: a query's filters do not fit");
		return -EIO;
	}
	c = store_reader_get(s);
	rc = store_exec_events_within(s, c, STMT_DYNAMIC, q.text, q.params, q.n,
				      SQL_EVENT_BYTES_COL, budget, cut, event_row, &w);
	store_reader_put(s, c);
	return rc;
}

int store_events(struct store *s, const struct store_filter *f, store_event_fn *fn, void *arg)
{
	bool cut;

	return store_events_page(s, f, 0, fn, arg, &cut);
}

int store_event_by_id(struct store *s, uint64_t id, store_event_fn *fn, void *arg)
{
	struct sql_value p[] = { sql_u64(id) };
	struct event_walk w = { fn, arg, false };
	struct store_conn *c = store_reader_get(s);
	int rc = store_exec_events(s, c, STMT_EVENT_BY_ID, SQL_EVENT_BY_ID, p, 1,
				   SQL_EVENT_BYTES_COL, event_row, &w);

	store_reader_put(s, c);
	if (rc == 0 && !w.any)
		return -ENOENT;
	return rc;
}

/* --- sessions ----------------------------------------------------------- */

struct session_walk {
	store_session_fn *fn;
	void *arg;
};

static int session_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct session_walk *w = arg;
	struct store_session ss = {
		.session_id = cols[0].p,
		.agent_id = cols[1].p,
		.first_ts = (uint64_t)cols[2].i,
		.last_ts = (uint64_t)cols[3].i,
		.statements = (uint64_t)cols[4].i,
		.denied = (uint64_t)cols[5].i,
		.closed = cols[6].i != 0,
		.open_event_id = cols[7].type == SQL_INT ? (uint64_t)cols[7].i : 0,
	};

	(void)ncols;
	return w->fn(w->arg, &ss);
}

/* Conditions on single events, not on who sent them: a session matches
 * when one of its events does. */
static bool filter_has_event(const struct store_filter *f)
{
	return f->since_ns || f->until_ns || f->after_id || given(f->verdict) || given(f->kind) ||
	       given(f->text);
}

/*
 * From the sessions table (store_sessions.h), newest first. The agent and
 * who sent it (its first origin) are the session's own; any condition on
 * single events is met by the session when one of its events meets every
 * condition.
 */
int store_sessions(struct store *s, const struct store_filter *f, store_session_fn *fn,
		   void *arg)
{
	struct query_sql q = { .len = 0 };
	struct session_walk w = { fn, arg };

	q_add(&q, "SELECT session_id, agent_id, first_ts, last_ts, statements, denied, closed, "
		  "open_event_id FROM sessions");
	where_text(&q, "sessions.agent_id", f->agent_id);
	if (filter_has_origin(f))
		origin_where(&q, f, "sessions.origin", "id");
	if (filter_has_event(f)) {
		q_cond(&q);
		q_add(&q, "(sessions.agent_id, sessions.session_id) IN (SELECT events.agent_id, "
			  "origins.session_id FROM events JOIN origins ON origins.id = events.origin");
		q.where = false;
		filter_where(&q, f, s->be->substr_fn);
		q_add(&q, ")");
		q.where = true;
	}
	q_add(&q, " ORDER BY last_ts DESC, session_id");
	filter_limit(&q, f);
	return q_run(s, &q, session_row, &w);
}

/* --- alerts and agents -------------------------------------------------- */

struct alert_walk {
	store_alert_fn *fn;
	void *arg;
};

static int alert_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct alert_walk *w = arg;
	struct store_alert a = {
		.id = (uint64_t)cols[0].i,
		.ts = (uint64_t)cols[1].i,
		.agent_id = cols[2].p,
		.epoch = (uint64_t)cols[3].i,
		.kind = cols[4].p,
		.detail = cols[5].p,
	};

	(void)ncols;
	return w->fn(w->arg, &a);
}

int store_alerts(struct store *s, uint64_t after_id, uint32_t limit, store_alert_fn *fn,
		 void *arg)
{
	struct sql_value p[] = { sql_u64(after_id), sql_int(page_limit(limit)) };
	struct alert_walk w = { fn, arg };
	struct store_conn *c = store_reader_get(s);
	int rc = store_exec(s, c, STMT_ALERTS,
			    "SELECT id, ts, agent_id, epoch, kind, detail FROM alerts WHERE id > $1 "
			    "ORDER BY id LIMIT $2",
			    p, 2, alert_row, &w);

	store_reader_put(s, c);
	return rc;
}

static int count_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)ncols;
	*(uint64_t *)arg = (uint64_t)cols[0].i;
	return 0;
}

static int count_rows(struct store *s, enum store_stmt id, const char *sql, uint64_t *n)
{
	struct store_conn *c = store_reader_get(s);
	int rc;

	*n = 0;
	rc = store_exec(s, c, id, sql, NULL, 0, count_row, n);
	store_reader_put(s, c);
	return rc;
}

int store_alert_count(struct store *s, uint64_t *n)
{
	return count_rows(s, STMT_ALERT_COUNT, "SELECT count(*) FROM alerts", n);
}

struct agent_walk {
	store_agent_fn *fn;
	void *arg;
};

static int agent_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct agent_walk *w = arg;
	struct store_agent a = {
		.agent_id = cols[0].p,
		.epoch = (uint64_t)cols[1].i,
		.acked_seq = (uint64_t)cols[2].i,
		.events = (uint64_t)cols[3].i,
		.last_ts = (uint64_t)cols[4].i,
	};

	(void)ncols;
	return w->fn(w->arg, &a);
}

int store_agents(struct store *s, const struct store_agent_cursor *after, uint32_t limit,
		 store_agent_fn *fn, void *arg)
{
	/* No agent id is empty: ('', -1) is before every row. */
	struct sql_value p[] = {
		sql_text(after->agent_id ? after->agent_id : ""),
		after->agent_id ? sql_u64(after->epoch) : sql_int(-1),
		sql_int(page_limit(limit)),
	};
	struct agent_walk w = { fn, arg };
	struct store_conn *c = store_reader_get(s);
	int rc = store_exec(s, c, STMT_AGENTS,
			    "SELECT agent_id, epoch, acked_seq, events, last_ts FROM agents "
			    "WHERE (agent_id, epoch) > ($1, $2) ORDER BY agent_id, epoch LIMIT $3",
			    p, 3, agent_row, &w);

	store_reader_put(s, c);
	return rc;
}

int store_agent_count(struct store *s, uint64_t *n)
{
	return count_rows(s, STMT_AGENT_COUNT, "SELECT count(*) FROM agents", n);
}
