/*
 * `dbward events` and `dbward sessions`: the CLI's filters as a table
 * (flag, API parameter, check), the query string they make, paging with
 * after/next_after, and the output: an aligned table for people or one
 * compact JSON object per line.
 */
#ifndef DBWARD_CLI_EVENTS_H
#define DBWARD_CLI_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cli/table.h"

#define CLI_DEFAULT_LIMIT 100
#define CLI_PAGE_MAX 10000		/* the API's own cap on limit */
#define CLI_LIMIT_MAX 1000000000ULL

enum cli_filter {
	CLI_FILTER_SINCE,
	CLI_FILTER_UNTIL,
	CLI_FILTER_AGENT,
	CLI_FILTER_PID,
	CLI_FILTER_COMM,
	CLI_FILTER_USER,
	CLI_FILTER_POD,
	CLI_FILTER_DB_USER,
	CLI_FILTER_DATABASE,
	CLI_FILTER_VERDICT,
	CLI_FILTER_KIND,
	CLI_FILTER_SESSION,
	CLI_FILTER_SEARCH,
	CLI_FILTER_COUNT,
};

struct cli_filter_def {
	const char *flag;		/* --db-user */
	const char *param;		/* db_user in the query string */
	const char *metavar;		/* for the usage text */
	/* NULL: any value (the collector judges it). 0 or -1 with @err. */
	int (*check)(const char *value, char *err, size_t errlen);
};

extern const struct cli_filter_def cli_filters[CLI_FILTER_COUNT];

struct cli_query {
	const char *values[CLI_FILTER_COUNT];	/* NULL: not given */
	uint64_t limit;				/* rows wanted in all */
	bool json;
};

/* Checks one filter's value with its table entry. 0 or -1 with @err. */
int cli_filter_check(enum cli_filter f, const char *value, char *err, size_t errlen);
/* --limit: 1 .. CLI_LIMIT_MAX. 0 or -1 with @err. */
int cli_limit_parse(const char *text, uint64_t *out, char *err, size_t errlen);

/* "param=value&...&after=N&limit=N" with every value URL-escaped; after
 * omitted when 0. malloc'd, NULL when out of memory. */
char *cli_query_string(const struct cli_query *q, uint64_t after, uint64_t limit);

/* The table of events, and one API event object as a row of it. */
struct cli_table *cli_events_table_new(void);
int cli_events_table_add(struct cli_table *t, const json_t *event);
struct cli_table *cli_sessions_table_new(void);
int cli_sessions_table_add(struct cli_table *t, const json_t *session);

/* "2026-11-23T21:40:00.123456Z" -> "2026-11-23T21:40:00Z" in @out. */
void cli_time_short(const char *rfc3339, char *out, size_t len);

/* The verbs: a cli_exit code, errors on stderr. */
int cli_events_run(const char *url, const struct cli_query *q);
int cli_sessions_run(const char *url, const struct cli_query *q);

#endif
