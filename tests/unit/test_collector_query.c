/*
 * collector/query.c: the API's times, ids and filters, as the HTTP side
 * hands them over (already URL-decoded).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "collector/query.h"

#define SEC 1000000000ull

static uint64_t time_of(const char *text)
{
	uint64_t ns = 0;
	int rc = query_parse_time(text, &ns);

	cr_assert_eq(rc, 0, "'%s' refused: %d", text, rc);
	return ns;
}

static void assert_time_refused(const char *text, int want)
{
	uint64_t ns;

	cr_assert_eq(query_parse_time(text, &ns), want, "'%s' not refused with %d", text, want);
}

Test(collector_query, rfc3339_utc_times_are_unix_ns)
{
	cr_assert_eq(time_of("1970-01-01T00:00:00Z"), 0);
	cr_assert_eq(time_of("2026-11-23T10:00:00Z"), 1795428000ull * SEC);
	cr_assert_eq(time_of("2026-11-23t10:00:00z"), 1795428000ull * SEC);
	cr_assert_eq(time_of("2026-11-23 10:00:00Z"), 1795428000ull * SEC);
	cr_assert_eq(time_of("2026-11-23T10:00:00.5Z"), 1795428000ull * SEC + SEC / 2);
	cr_assert_eq(time_of("2026-11-23T10:00:00.123456789Z"), 1795428000ull * SEC + 123456789);
	cr_assert_eq(time_of("2024-02-29T00:00:00Z"), 1709164800ull * SEC);
	cr_assert_eq(time_of("2026-11-23"), 1795392000ull * SEC);
}

Test(collector_query, offsets_are_taken_back_to_utc)
{
	cr_assert_eq(time_of("2026-11-23T12:00:00+02:00"), 1795428000ull * SEC);
	cr_assert_eq(time_of("2026-11-23T05:30:00-04:30"), 1795428000ull * SEC);
}

Test(collector_query, unix_seconds_are_taken)
{
	cr_assert_eq(time_of("0"), 0);
	cr_assert_eq(time_of("1795428000"), 1795428000ull * SEC);
	cr_assert_eq(time_of("1795428000.25"), 1795428000ull * SEC + SEC / 4);
}

Test(collector_query, bad_times_are_refused)
{
	assert_time_refused("", -EINVAL);
	assert_time_refused("yesterday", -EINVAL);
	assert_time_refused("-5", -EINVAL);
	assert_time_refused("2026-11-23T10:00:00", -EINVAL);		/* no zone */
	assert_time_refused("2026-11-23T10:00Z", -EINVAL);
	assert_time_refused("2026-13-01T00:00:00Z", -EINVAL);
	assert_time_refused("2025-02-29T00:00:00Z", -EINVAL);
	assert_time_refused("2026-11-23T24:00:00Z", -EINVAL);
	assert_time_refused("2026-11-23T10:00:00.Z", -EINVAL);
	assert_time_refused("2026-11-23T10:00:00.1234567891Z", -EINVAL);
	assert_time_refused("2026-11-23T10:00:00Zjunk", -EINVAL);
	assert_time_refused("12abc", -EINVAL);
	assert_time_refused("1969-12-31T23:59:59Z", -ERANGE);
	assert_time_refused("1970-01-01T00:00:00+00:01", -ERANGE);
	assert_time_refused("2600-01-01T00:00:00Z", -ERANGE);
	assert_time_refused("99999999999999999999999", -ERANGE);
	assert_time_refused("18446744074", -ERANGE);
}

Test(collector_query, ids_are_positive_decimals)
{
	uint64_t id;

	cr_assert_eq(query_parse_id("17", &id), 0);
	cr_assert_eq(id, 17);
	cr_assert_eq(query_parse_id("0", &id), -EINVAL);
	cr_assert_eq(query_parse_id("", &id), -EINVAL);
	cr_assert_eq(query_parse_id("-1", &id), -EINVAL);
	cr_assert_eq(query_parse_id("12/x", &id), -EINVAL);
	cr_assert_eq(query_parse_id("99999999999999999999", &id), -EINVAL);
}

static int filter_of(struct store_filter *f, char *err, size_t n, const char *const *pairs)
{
	struct query q = { .n = 0 };

	for (size_t i = 0; i < n; i++)
		query_add(&q, pairs[2 * i], pairs[2 * i + 1]);
	return query_filter(&q, f, err, QUERY_ERR_LEN);
}

Test(collector_query, no_parameters_is_any_with_the_default_limit)
{
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 0, NULL), 0, "%s", err);
	cr_assert_eq(f.since_ns, 0);
	cr_assert_eq(f.until_ns, 0);
	cr_assert_eq(f.pid, -1);
	cr_assert_null(f.agent_id);
	cr_assert_null(f.text);
	cr_assert_eq(f.after_id, 0);
	cr_assert_eq(f.limit, QUERY_DEFAULT_LIMIT);
}

Test(collector_query, every_filter_is_read)
{
	static const char *const pairs[] = {
		"since", "2026-11-23T10:00:00Z", "until", "1795431600", "agent", "agent-1",
		"pid", "4242", "comm", "psql", "user", "alice", "pod", "shop/web-1",
		"db_user", "app", "database", "orders", "verdict", "deny", "kind", "statement",
		"session", "abc123", "q", "drop table", "after", "99", "limit", "10000",
	};
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, sizeof(pairs) / sizeof(pairs[0]) / 2, pairs), 0, "%s",
		     err);
	cr_assert_eq(f.since_ns, 1795428000ull * SEC);
	cr_assert_eq(f.until_ns, 1795431600ull * SEC);
	cr_assert_str_eq(f.agent_id, "agent-1");
	cr_assert_eq(f.pid, 4242);
	cr_assert_str_eq(f.comm, "psql");
	cr_assert_str_eq(f.user, "alice");
	cr_assert_str_eq(f.pod, "shop/web-1");
	cr_assert_str_eq(f.db_user, "app");
	cr_assert_str_eq(f.database, "orders");
	cr_assert_str_eq(f.verdict, "deny");
	cr_assert_str_eq(f.kind, "statement");
	cr_assert_str_eq(f.session_id, "abc123");
	cr_assert_str_eq(f.text, "drop table");
	cr_assert_eq(f.after_id, 99);
	cr_assert_eq(f.limit, 10000);
}

Test(collector_query, empty_values_mean_any)
{
	static const char *const pairs[] = { "agent", "", "pid", "", "limit", "", "q", NULL };
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 4, pairs), 0, "%s", err);
	cr_assert_null(f.agent_id);
	cr_assert_eq(f.pid, -1);
	cr_assert_eq(f.limit, QUERY_DEFAULT_LIMIT);
	cr_assert_null(f.text);
}

Test(collector_query, until_the_epoch_matches_nothing_rather_than_everything)
{
	static const char *const pairs[] = { "until", "0" };
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 1, pairs), 0, "%s", err);
	cr_assert_neq(f.until_ns, 0);
}

static void assert_filter_refused(const char *name, const char *value, const char *word)
{
	const char *pairs[] = { name, value };
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 1, pairs), -1, "%s=%s accepted", name, value);
	cr_assert(strstr(err, word), "error '%s' should mention '%s'", err, word);
}

Test(collector_query, bad_parameters_are_refused_saying_which)
{
	assert_filter_refused("since", "last tuesday", "since: 'last tuesday' is not a time");
	assert_filter_refused("until", "1960-01-01T00:00:00Z", "out of range");
	assert_filter_refused("verdict", "maybe", "expected one of: allow, deny");
	assert_filter_refused("kind", "query", "connection_open");
	assert_filter_refused("pid", "-1", "pid");
	assert_filter_refused("pid", "4294967296", "pid");
	assert_filter_refused("limit", "0", "limit");
	assert_filter_refused("limit", "10001", "1..10000");
	assert_filter_refused("after", "x", "after");
	assert_filter_refused("agnet", "a", "unknown parameter 'agnet'");
}

Test(collector_query, repeated_and_too_many_parameters_are_refused)
{
	static const char *const twice[] = { "agent", "a", "agent", "b" };
	struct store_filter f;
	struct query q = { .n = 0 };
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 2, twice), -1);
	cr_assert(strstr(err, "more than once"), "%s", err);
	for (int i = 0; i < QUERY_MAX_PARAMS + 1; i++)
		query_add(&q, "q", "x");
	cr_assert_eq(query_filter(&q, &f, err, sizeof(err)), -1);
	cr_assert(strstr(err, "too many parameters"), "%s", err);
}

Test(collector_query, overlong_values_are_refused)
{
	static char value[QUERY_MAX_VALUE + 2];

	memset(value, 'a', QUERY_MAX_VALUE + 1);
	assert_filter_refused("q", value, "longer than");
}

/* The store compares signed 64-bit integers: larger values are clamped, not wrapped. */
Test(collector_query, values_past_int64_max_are_clamped_not_wrapped)
{
	static const char *const pairs[] = {
		"since", "18446744073", "until", "18446744073.5", "after", "18446744073709551615",
	};
	struct store_filter f;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(filter_of(&f, err, 3, pairs), 0, "%s", err);
	cr_assert_eq(f.since_ns, (uint64_t)INT64_MAX);
	cr_assert_eq(f.until_ns, (uint64_t)INT64_MAX);
	cr_assert_eq(f.after_id, (uint64_t)INT64_MAX);
}

/* --- the agents' cursor -------------------------------------------------------- */

static int agent_page_of(struct agent_page *page, char *err, size_t n,
			 const char *const *pairs)
{
	struct query q = { .n = 0 };

	for (size_t i = 0; i < n; i++)
		query_add(&q, pairs[2 * i], pairs[2 * i + 1]);
	return query_agent_page(&q, page, err, QUERY_ERR_LEN);
}

Test(collector_query, an_agent_page_starts_at_the_first_by_default)
{
	struct agent_page page;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(agent_page_of(&page, err, 0, NULL), 0, "%s", err);
	cr_assert_null(page.after.agent_id);
	cr_assert_eq(page.limit, QUERY_DEFAULT_LIMIT);
}

Test(collector_query, an_agent_cursor_splits_at_its_last_at_sign)
{
	static const char *const pairs[] = { "limit", "5", "after", "ops@db-1@1795528967525794402" };
	struct agent_page page;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(agent_page_of(&page, err, 2, pairs), 0, "%s", err);
	cr_assert_str_eq(page.after.agent_id, "ops@db-1");
	cr_assert_eq(page.after.epoch, 1795528967525794402ull);
	cr_assert_eq(page.limit, 5);
}

static void assert_agent_page_refused(const char *name, const char *value, const char *word)
{
	const char *pairs[] = { name, value };
	struct agent_page page;
	char err[QUERY_ERR_LEN] = "";

	cr_assert_eq(agent_page_of(&page, err, 1, pairs), -1, "%s=%s accepted", name, value);
	cr_assert(strstr(err, word), "error '%s' should mention '%s'", err, word);
}

Test(collector_query, bad_agent_pages_are_refused_saying_which)
{
	static const char *const twice[] = { "after", "a@1", "after", "b@2" };
	struct agent_page page;
	char err[QUERY_ERR_LEN] = "";

	assert_agent_page_refused("after", "42", "AGENT_ID@EPOCH");
	assert_agent_page_refused("after", "@42", "AGENT_ID@EPOCH");
	assert_agent_page_refused("after", "a@", "AGENT_ID@EPOCH");
	assert_agent_page_refused("after", "a@-1", "AGENT_ID@EPOCH");
	assert_agent_page_refused("after", "a@9223372036854775808", "AGENT_ID@EPOCH");
	assert_agent_page_refused("limit", "0", "1..10000");
	{
		static char value[QUERY_MAX_VALUE + 2];

		memset(value, 'a', QUERY_MAX_VALUE + 1);
		value[QUERY_MAX_VALUE - 1] = '@';
		assert_agent_page_refused("after", value, "longer than");
	}
	assert_agent_page_refused("agent", "a", "only after and limit");
	cr_assert_eq(agent_page_of(&page, err, 2, twice), -1);
	cr_assert(strstr(err, "more than once"), "%s", err);
}
