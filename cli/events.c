#include "cli/events.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli/http_client.h"

#define CELL_LEN 256

static int check_pid(const char *value, char *err, size_t errlen)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(value, &end, 10);
	if (!*value || *end || errno || v == 0 || v > UINT32_MAX || value[0] == '-') {
		snprintf(err, errlen, "--pid '%s' is not a process id", value);
		return -1;
	}
	return 0;
}

static int check_verdict(const char *value, char *err, size_t errlen)
{
	if (strcmp(value, "allow") == 0 || strcmp(value, "deny") == 0)
		return 0;
	snprintf(err, errlen, "--verdict '%s' is not allow or deny", value);
	return -1;
}

const struct cli_filter_def cli_filters[CLI_FILTER_COUNT] = {
	[CLI_FILTER_SINCE] = { "since", "since", "T", NULL },
	[CLI_FILTER_UNTIL] = { "until", "until", "T", NULL },
	[CLI_FILTER_AGENT] = { "agent", "agent", "A", NULL },
	[CLI_FILTER_PID] = { "pid", "pid", "N", check_pid },
	[CLI_FILTER_COMM] = { "comm", "comm", "C", NULL },
	[CLI_FILTER_USER] = { "user", "user", "U", NULL },
	[CLI_FILTER_POD] = { "pod", "pod", "P", NULL },
	[CLI_FILTER_DB_USER] = { "db-user", "db_user", "U", NULL },
	[CLI_FILTER_DATABASE] = { "database", "database", "D", NULL },
	[CLI_FILTER_VERDICT] = { "verdict", "verdict", "allow|deny", check_verdict },
	[CLI_FILTER_KIND] = { "kind", "kind", "K", NULL },
	[CLI_FILTER_SESSION] = { "session", "session", "S", NULL },
	[CLI_FILTER_SEARCH] = { "search", "q", "TEXT", NULL },
};

int cli_filter_check(enum cli_filter f, const char *value, char *err, size_t errlen)
{
	return cli_filters[f].check ? cli_filters[f].check(value, err, errlen) : 0;
}

int cli_limit_parse(const char *text, uint64_t *out, char *err, size_t errlen)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(text, &end, 10);
	if (!*text || *end || errno || text[0] == '-' || v == 0 || v > CLI_LIMIT_MAX) {
		snprintf(err, errlen, "--limit '%s' is not a number from 1 to %llu", text,
			 CLI_LIMIT_MAX);
		return -1;
	}
	*out = v;
	return 0;
}

/* --- the query string ---------------------------------------------------- */

static void put_param(FILE *f, const char *name, const char *value, bool *first, bool *failed)
{
	char *escaped = curl_easy_escape(NULL, value, 0);

	if (!escaped) {
		*failed = true;
		return;
	}
	fprintf(f, "%s%s=%s", *first ? "" : "&", name, escaped);
	*first = false;
	curl_free(escaped);
}

char *cli_query_string(const struct cli_query *q, uint64_t after, uint64_t limit)
{
	char *buf = NULL, number[24];
	size_t len = 0;
	bool first = true, failed = false;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	for (size_t i = 0; i < CLI_FILTER_COUNT; i++)
		if (q->values[i])
			put_param(f, cli_filters[i].param, q->values[i], &first, &failed);
	if (after) {
		snprintf(number, sizeof(number), "%" PRIu64, after);
		put_param(f, "after", number, &first, &failed);
	}
	snprintf(number, sizeof(number), "%" PRIu64, limit);
	put_param(f, "limit", number, &first, &failed);
	if (fclose(f) != 0 || failed) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* --- rows ---------------------------------------------------------------- */

void cli_time_short(const char *rfc3339, char *out, size_t len)
{
	const char *dot = strchr(rfc3339, '.');
	const char *rest = dot;

	if (!dot) {
		snprintf(out, len, "%s", rfc3339);
		return;
	}
	while (*++rest >= '0' && *rest <= '9')
		;
	snprintf(out, len, "%.*s%s", (int)(dot - rfc3339), rfc3339, rest);
}

/* A field as text in @buf: strings as they are, numbers and booleans
 * printed, null or absent as NULL (shown "-"). */
static const char *field_text(const json_t *obj, const char *key, char *buf, size_t len)
{
	const json_t *v = json_object_get(obj, key);

	if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
	else
		return NULL;
	return buf;
}

static const char *field_time(const json_t *obj, const char *key, char *buf, size_t len)
{
	const char *ts = json_string_value(json_object_get(obj, key));

	if (!ts)
		return NULL;
	cli_time_short(ts, buf, len);
	return buf;
}

static const char *who_db(const json_t *ev, char *buf, size_t len)
{
	const char *user = json_string_value(json_object_get(ev, "db_user"));
	const char *db = json_string_value(json_object_get(ev, "database"));

	if (!user && !db)
		return NULL;
	snprintf(buf, len, "%s@%s", user ? user : "-", db ? db : "-");
	return buf;
}

/* The statement; else the event's error: why the agent ended a connection,
 * or the collector's note that the stored bytes are not an event. */
static const char *event_text(const json_t *ev)
{
	const char *sql = json_string_value(json_object_get(ev, "sql"));

	return sql ? sql : json_string_value(json_object_get(ev, "error"));
}

enum event_col {
	EV_ID, EV_TIME, EV_AGENT, EV_KIND, EV_PID, EV_COMM, EV_USER, EV_DB, EV_VERDICT,
	EV_ROWS, EV_SQL, EV_NCOLS,
};

static const struct cli_column event_columns[EV_NCOLS] = {
	[EV_ID] = { "id", 20, true },
	[EV_TIME] = { "time", 25, false },
	[EV_AGENT] = { "agent", 20, false },
	[EV_KIND] = { "kind", 16, false },
	[EV_PID] = { "pid", 10, true },
	[EV_COMM] = { "comm", 16, false },
	[EV_USER] = { "user", 16, false },
	[EV_DB] = { "db_user@database", 32, false },
	[EV_VERDICT] = { "verdict", 7, false },
	[EV_ROWS] = { "rows", 20, true },
	[EV_SQL] = { "sql", 0, false },
};

struct cli_table *cli_events_table_new(void)
{
	return cli_table_new(event_columns, EV_NCOLS);
}

int cli_events_table_add(struct cli_table *t, const json_t *ev)
{
	char buf[EV_NCOLS][CELL_LEN];
	const char *cells[EV_NCOLS];

	cells[EV_ID] = field_text(ev, "id", buf[EV_ID], CELL_LEN);
	cells[EV_TIME] = field_time(ev, "ts", buf[EV_TIME], CELL_LEN);
	cells[EV_AGENT] = field_text(ev, "agent_id", buf[EV_AGENT], CELL_LEN);
	cells[EV_KIND] = field_text(ev, "kind", buf[EV_KIND], CELL_LEN);
	cells[EV_PID] = field_text(ev, "pid", buf[EV_PID], CELL_LEN);
	cells[EV_COMM] = field_text(ev, "comm", buf[EV_COMM], CELL_LEN);
	cells[EV_USER] = field_text(ev, "user", buf[EV_USER], CELL_LEN);
	cells[EV_DB] = who_db(ev, buf[EV_DB], CELL_LEN);
	cells[EV_VERDICT] = field_text(ev, "verdict", buf[EV_VERDICT], CELL_LEN);
	cells[EV_ROWS] = field_text(ev, "rows", buf[EV_ROWS], CELL_LEN);
	cells[EV_SQL] = event_text(ev);
	return cli_table_add(t, cells);
}

enum session_col {
	SE_ID, SE_AGENT, SE_FIRST, SE_LAST, SE_STATEMENTS, SE_DENIED, SE_CLOSED, SE_OPEN,
	SE_NCOLS,
};

static const struct cli_column session_columns[SE_NCOLS] = {
	[SE_ID] = { "session", 40, false },
	[SE_AGENT] = { "agent", 20, false },
	[SE_FIRST] = { "first", 25, false },
	[SE_LAST] = { "last", 25, false },
	[SE_STATEMENTS] = { "statements", 20, true },
	[SE_DENIED] = { "denied", 20, true },
	[SE_CLOSED] = { "closed", 6, false },
	[SE_OPEN] = { "open_event_id", 0, false },
};

struct cli_table *cli_sessions_table_new(void)
{
	return cli_table_new(session_columns, SE_NCOLS);
}

int cli_sessions_table_add(struct cli_table *t, const json_t *s)
{
	char buf[SE_NCOLS][CELL_LEN];
	const char *cells[SE_NCOLS];

	cells[SE_ID] = field_text(s, "session_id", buf[SE_ID], CELL_LEN);
	cells[SE_AGENT] = field_text(s, "agent_id", buf[SE_AGENT], CELL_LEN);
	cells[SE_FIRST] = field_time(s, "first_ts", buf[SE_FIRST], CELL_LEN);
	cells[SE_LAST] = field_time(s, "last_ts", buf[SE_LAST], CELL_LEN);
	cells[SE_STATEMENTS] = field_text(s, "statements", buf[SE_STATEMENTS], CELL_LEN);
	cells[SE_DENIED] = field_text(s, "denied", buf[SE_DENIED], CELL_LEN);
	cells[SE_CLOSED] = field_text(s, "closed", buf[SE_CLOSED], CELL_LEN);
	cells[SE_OPEN] = field_text(s, "open_event_id", buf[SE_OPEN], CELL_LEN);
	return cli_table_add(t, cells);
}

/* --- output -------------------------------------------------------------- */

typedef int row_add_fn(struct cli_table *t, const json_t *row);

/* Where rows go: JSON lines straight out, or a table printed at the end. */
struct row_sink {
	struct cli_table *table;	/* NULL: JSON lines */
	row_add_fn *add;
	size_t rows;
};

static int sink_put(struct row_sink *s, const json_t *row)
{
	s->rows++;
	if (s->table)
		return s->add(s->table, row);
	if (json_dumpf(row, stdout, JSON_COMPACT) < 0 || putchar('\n') == EOF)
		return -EIO;
	return 0;
}

static int sink_finish(struct row_sink *s, const char *what)
{
	if (s->table && s->rows == 0)
		fprintf(stderr, "no %s match\n", what);
	else if (s->table && cli_table_print(s->table, stdout, cli_terminal_width()) < 0)
		return -EIO;
	return fflush(stdout) == 0 ? 0 : -EIO;
}

static int fail(const char *what, const char *err)
{
	fprintf(stderr, "dbward %s: %s\n", what, err);
	return CLI_EXIT_FAIL;
}

/* GETs one page: "/api/v1/@what?query". 0 or -1 with @err. */
static int get_page(const char *url, const char *what, const struct cli_query *q,
		    uint64_t after, uint64_t limit, json_t **out, char *err, size_t errlen)
{
	char *query = cli_query_string(q, after, limit), *path = NULL;
	int ret = -1;

	if (!query || asprintf(&path, "/api/v1/%s?%s", what, query) < 0) {
		path = NULL;
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	ret = cli_http_get_json(url, path, out, err, errlen);
cleanup:
	free(query);
	free(path);
	return ret;
}

/* Puts up to *@remaining rows of the page's array @key into @sink. */
static int take_rows(struct row_sink *sink, const json_t *page, const char *key,
		     uint64_t *remaining, char *err, size_t errlen)
{
	const json_t *rows = json_object_get(page, key);
	size_t i;
	json_t *row;

	if (!json_is_array(rows)) {
		snprintf(err, errlen, "the collector's answer has no \"%s\" array", key);
		return -1;
	}
	json_array_foreach(rows, i, row) {
		if (*remaining == 0)
			break;
		if (sink_put(sink, row) < 0) {
			snprintf(err, errlen, "cannot write the output");
			return -1;
		}
		(*remaining)--;
	}
	return (int)json_array_size(rows);
}

/* Pages until the limit is met or the collector says there is no more. */
static int fetch_events(const char *url, const struct cli_query *q, struct row_sink *sink,
			char *err, size_t errlen)
{
	uint64_t remaining = q->limit, after = 0;

	while (remaining > 0) {
		uint64_t page_limit = remaining < CLI_PAGE_MAX ? remaining : CLI_PAGE_MAX;
		json_t *page, *next;
		int n;

		if (get_page(url, "events", q, after, page_limit, &page, err, errlen) < 0)
			return -1;
		n = take_rows(sink, page, "events", &remaining, err, errlen);
		next = json_object_get(page, "next_after");
		/* Row ids only grow; anything else would page forever. */
		if (n <= 0 || !json_is_integer(next) || json_integer_value(next) <= 0 ||
		    (uint64_t)json_integer_value(next) <= after) {
			json_decref(page);
			return n < 0 ? -1 : 0;
		}
		after = (uint64_t)json_integer_value(next);
		json_decref(page);
	}
	return 0;
}

int cli_events_run(const char *url, const struct cli_query *q)
{
	struct row_sink sink = { .add = cli_events_table_add };
	char err[CLI_ERR_LEN];
	int ret = CLI_EXIT_FAIL;

	if (!q->json && !(sink.table = cli_events_table_new()))
		return fail("events", "out of memory");
	if (fetch_events(url, q, &sink, err, sizeof(err)) < 0) {
		fflush(stdout);
		fail("events", err);
		goto cleanup;
	}
	if (sink_finish(&sink, "events") < 0) {
		fail("events", "cannot write the output");
		goto cleanup;
	}
	ret = CLI_EXIT_OK;
cleanup:
	cli_table_free(sink.table);
	return ret;
}

int cli_sessions_run(const char *url, const struct cli_query *q)
{
	struct row_sink sink = { .add = cli_sessions_table_add };
	uint64_t remaining = q->limit;
	char err[CLI_ERR_LEN];
	json_t *page = NULL;
	int ret = CLI_EXIT_FAIL;

	if (!q->json && !(sink.table = cli_sessions_table_new()))
		return fail("sessions", "out of memory");
	if (get_page(url, "sessions", q, 0, remaining < CLI_PAGE_MAX ? remaining : CLI_PAGE_MAX,
		     &page, err, sizeof(err)) < 0 ||
	    take_rows(&sink, page, "sessions", &remaining, err, sizeof(err)) < 0) {
		fflush(stdout);
		fail("sessions", err);
		goto cleanup;
	}
	if (sink_finish(&sink, "sessions") < 0) {
		fail("sessions", "cannot write the output");
		goto cleanup;
	}
	ret = CLI_EXIT_OK;
cleanup:
	json_decref(page);
	cli_table_free(sink.table);
	return ret;
}
