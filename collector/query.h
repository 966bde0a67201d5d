/*
 * The HTTP API's query string, made into a store filter (docs/collector.md,
 * FILTERS). Parameters arrive as (name, value) pairs, already URL-decoded;
 * nothing here knows about HTTP, so the rules are unit-tested alone.
 */
#ifndef DBWARD_COLLECTOR_QUERY_H
#define DBWARD_COLLECTOR_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"

#define QUERY_MAX_PARAMS 32
#define QUERY_ERR_LEN 256
#define QUERY_MAX_VALUE 1024		/* longest filter value, in bytes */
#define QUERY_DEFAULT_LIMIT 100
#define QUERY_MAX_LIMIT 10000

struct query_param {
	const char *name;
	const char *value;		/* NULL: "?name" without '=' */
};

/* Borrowed strings: valid while the request is. */
struct query {
	struct query_param params[QUERY_MAX_PARAMS];
	size_t n;
	bool overflow;			/* more than QUERY_MAX_PARAMS were given */
};

void query_add(struct query *q, const char *name, const char *value);

/*
 * A time as the API takes it: RFC 3339 ("2026-11-23T10:00:00Z", a fraction
 * of up to 9 digits, 'Z' or a +hh:mm / -hh:mm offset; a bare date is its
 * midnight UTC) or unix seconds ("1795428000", a fraction allowed).
 * 0 with *@ns, -EINVAL (not a time) or -ERANGE (before 1970 or past what
 * unix ns in 64 bits can hold).
 */
int query_parse_time(const char *text, uint64_t *ns);

/* A row id in a path: decimal, 1 or more, no sign. 0 or -EINVAL. */
int query_parse_id(const char *text, uint64_t *id);

/*
 * Fills @f from the filter parameters of @q (strings point into @q).
 * Unknown or repeated parameters and bad values are refused: -1 with
 * @err saying which. An empty value means "any", as if absent.
 */
int query_filter(const struct query *q, struct store_filter *f, char *err, size_t errlen);
/* query_filter for lists that only page (after, limit): any other
 * parameter is refused. */
int query_page(const struct query *q, struct store_filter *f, char *err, size_t errlen);

/* A page of agents: `after` is the cursor the last page's next_after gave,
 * AGENT_ID@EPOCH. */
struct agent_page {
	struct store_agent_cursor after;	/* agent_id points into after_buf */
	uint32_t limit;
	char after_buf[QUERY_MAX_VALUE + 1];
};
/* query_page for agents: after is a cursor, not a row id. */
int query_agent_page(const struct query *q, struct agent_page *page, char *err,
		     size_t errlen);

#endif
