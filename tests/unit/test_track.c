/* Matching server answers to statements: simple, extended, errors, limits. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "agent/pg_msg.h"
#include "agent/track.h"

#define MAX_SEEN 32

struct seen {
	char sql[MAX_SEEN][128];
	int64_t rows[MAX_SEEN];
	char sqlstate[MAX_SEEN][6];
	bool extended[MAX_SEEN];
	bool finished[MAX_SEEN];
	uint64_t client_bytes[MAX_SEEN];
	bool function_call[MAX_SEEN];
	uint32_t function_oid[MAX_SEEN];
	size_t n;
};

static void record(void *ctx, const struct track_result *r)
{
	struct seen *s = ctx;

	cr_assert_lt(s->n, MAX_SEEN);
	snprintf(s->sql[s->n], sizeof(s->sql[0]), "%.*s", (int)r->sql_len, r->sql ? r->sql : "");
	s->rows[s->n] = r->rows;
	memcpy(s->sqlstate[s->n], r->sqlstate, 6);
	s->extended[s->n] = r->extended;
	s->finished[s->n] = r->finished;
	s->client_bytes[s->n] = r->client_bytes;
	s->function_call[s->n] = r->function_call;
	s->function_oid[s->n] = r->function_oid;
	s->n++;
}

static struct track trk;
static struct seen seen;

static void setup(void)
{
	memset(&seen, 0, sizeof(seen));
	track_init(&trk, record, &seen);
}

static void teardown(void)
{
	track_release(&trk);
}

/* A message: type, then body parts, each NUL-terminated when @cstr. */
static size_t build(uint8_t *out, char type, const void *body, size_t len)
{
	uint32_t n = (uint32_t)len + 4;

	out[0] = (uint8_t)type;
	out[1] = (uint8_t)(n >> 24);
	out[2] = (uint8_t)(n >> 16);
	out[3] = (uint8_t)(n >> 8);
	out[4] = (uint8_t)n;
	memcpy(out + 5, body, len);
	return len + 5;
}

static void client(char type, const void *body, size_t len)
{
	uint8_t msg[512];
	size_t total = build(msg, type, body, len);

	cr_assert_eq(track_frontend(&trk, msg, total, total, 1000), 0, "%s", trk.error);
}

static void server(char type, const void *body, size_t len)
{
	uint8_t msg[512];
	size_t total = build(msg, type, body, len);

	cr_assert_eq(track_backend(&trk, msg, total, total, 2000), 0, "%s", trk.error);
}

/* A literal body: its bytes without the literal's own terminator. */
#define BODY(lit) lit, sizeof(lit) - 1
#define Q(text) client('Q', text, sizeof(text))
#define TAG(text) server('C', text, sizeof(text))
#define READY() server('Z', BODY("I"))
#define ERR(state) server('E', "SERROR\0C" state "\0Mboom\0", sizeof("SERROR\0C" state "\0Mboom\0"))
#define ROW() server('D', BODY("\0\0"))

Test(track, reports_each_statement_of_a_query_with_its_rows, .init = setup, .fini = teardown)
{
	Q("insert into t values (1),(2); select * from t;\n delete from t where a = 1");
	TAG("INSERT 0 2");
	server('T', BODY("\0\0"));
	ROW();
	ROW();
	TAG("SELECT 2");
	TAG("DELETE 1");
	READY();
	cr_assert_eq(seen.n, 3);
	cr_assert_str_eq(seen.sql[0], "insert into t values (1),(2)");
	cr_assert_str_eq(seen.sql[1], "select * from t");
	cr_assert_str_eq(seen.sql[2], "delete from t where a = 1");
	cr_assert_eq(seen.rows[0], 2);
	cr_assert_eq(seen.rows[1], 2);
	cr_assert_eq(seen.rows[2], 1);
	cr_assert_not(seen.extended[0]);
	cr_assert_gt(seen.client_bytes[0], 0, "the Query's bytes count once...");
	cr_assert_eq(seen.client_bytes[1], 0, "...on its first statement");
	cr_assert_eq(trk.count, 0);
}

Test(track, an_error_ends_the_query_and_the_rest_does_not_run, .init = setup, .fini = teardown)
{
	Q("begin; select 1/0; commit");
	TAG("BEGIN");
	ERR("22012");
	READY();
	cr_assert_eq(seen.n, 2);
	cr_assert_str_eq(seen.sql[1], "select 1/0");
	cr_assert_str_eq(seen.sqlstate[1], "22012");
	cr_assert_eq(seen.rows[1], -1);
	cr_assert_eq(trk.count, 0);
}

Test(track, an_unparsable_query_is_reported_whole_with_the_servers_error, .init = setup,
     .fini = teardown)
{
	Q("selec 1");
	ERR("42601");
	READY();
	cr_assert_eq(seen.n, 1);
	cr_assert_str_eq(seen.sql[0], "selec 1");
	cr_assert_str_eq(seen.sqlstate[0], "42601");
}

Test(track, an_empty_query_reports_nothing, .init = setup, .fini = teardown)
{
	Q("");
	server('I', BODY(""));
	READY();
	cr_assert_eq(seen.n, 0);
	cr_assert_eq(trk.count, 0);
}

Test(track, execute_reports_the_text_of_its_parse, .init = setup, .fini = teardown)
{
	client('P', BODY("s1\0select * from t where a = $1\0\0\0"));
	client('B', BODY("p1\0s1\0\0\0\0\0\0\0"));
	client('D', BODY("Pp1\0"));
	client('E', BODY("p1\0\0\0\0\0"));
	client('S', BODY(""));
	server('1', BODY(""));
	server('2', BODY(""));
	server('T', BODY("\0\0"));
	ROW();
	TAG("SELECT 1");
	READY();
	cr_assert_eq(seen.n, 1);
	cr_assert_str_eq(seen.sql[0], "select * from t where a = $1");
	cr_assert(seen.extended[0]);
	cr_assert_eq(seen.rows[0], 1);
	cr_assert_gt(seen.client_bytes[0], 12, "Bind's parameters count with the Execute");
	cr_assert_eq(trk.count, 0);
}

Test(track, a_named_statement_serves_later_binds_until_closed, .init = setup, .fini = teardown)
{
	client('P', BODY("s1\0select 1\0\0\0"));
	client('S', BODY(""));
	server('1', BODY(""));
	READY();
	for (int i = 0; i < 2; i++) {
		client('B', BODY("\0s1\0\0\0\0\0\0\0"));
		client('E', BODY("\0\0\0\0\0"));
		client('S', BODY(""));
		server('2', BODY(""));
		ROW();
		TAG("SELECT 1");
		READY();
	}
	cr_assert_eq(seen.n, 2);
	cr_assert_str_eq(seen.sql[1], "select 1");
	client('C', BODY("Ss1\0"));
	client('B', BODY("\0s1\0\0\0\0\0\0\0"));
	client('E', BODY("\0\0\0\0\0"));
	client('S', BODY(""));
	server('3', BODY(""));
	ERR("26000");
	READY();
	cr_assert_eq(seen.n, 3);
	cr_assert_str_eq(seen.sql[2], "", "a closed statement's text is gone");
	cr_assert_str_eq(seen.sqlstate[2], "26000");
}

Test(track, after_an_extended_error_everything_up_to_sync_is_skipped, .init = setup,
     .fini = teardown)
{
	/* Two pipelined batches; the first fails at Bind. */
	client('P', BODY("\0select 1/$1\0\0\0"));
	client('B', BODY("\0\0\0\0\0\0\0\0"));
	client('E', BODY("\0\0\0\0\0"));
	client('S', BODY(""));
	client('P', BODY("\0select 2\0\0\0"));
	client('B', BODY("\0\0\0\0\0\0\0\0"));
	client('E', BODY("\0\0\0\0\0"));
	client('S', BODY(""));
	server('1', BODY(""));
	ERR("08P01");	/* Bind: wrong parameter count */
	READY();
	server('1', BODY(""));
	server('2', BODY(""));
	ROW();
	TAG("SELECT 1");
	READY();
	cr_assert_eq(seen.n, 2);
	cr_assert_str_eq(seen.sql[0], "select 1/$1");
	cr_assert_str_eq(seen.sqlstate[0], "08P01");
	cr_assert_str_eq(seen.sql[1], "select 2");
	cr_assert_eq(seen.sqlstate[1][0], '\0');
	cr_assert_eq(trk.count, 0);
}

Test(track, a_suspended_portal_reports_the_rows_sent_so_far, .init = setup, .fini = teardown)
{
	client('P', BODY("\0select generate_series(1, 10)\0\0\0"));
	client('B', BODY("c\0\0\0\0\0\0\0\0"));
	client('E', BODY("c\0\0\0\0\x03"));
	client('H', BODY(""));
	server('1', BODY(""));
	server('2', BODY(""));
	ROW();
	ROW();
	ROW();
	server('s', BODY(""));
	cr_assert_eq(seen.n, 1);
	cr_assert_eq(seen.rows[0], 3);
}

Test(track, the_session_ending_reports_what_was_running_as_unfinished, .init = setup,
     .fini = teardown)
{
	Q("select pg_sleep(60)");
	track_abandon(&trk, 5000);
	cr_assert_eq(seen.n, 1);
	cr_assert_not(seen.finished[0]);
	cr_assert_eq(trk.count, 0);
}

Test(track, follows_the_servers_text_settings, .init = setup, .fini = teardown)
{
	server('S', BODY("standard_conforming_strings\0off\0"));
	server('S', BODY("client_encoding\0SJIS\0"));
	cr_assert_eq(trk.settings.standard_conforming_strings, SQL_SCS_OFF);
	cr_assert_str_eq(trk.settings.client_encoding, "SJIS");
	server('S', BODY("client_encoding\0UTF8\0"));
	cr_assert_str_eq(trk.settings.client_encoding, "UTF8");
}

Test(track, refuses_more_pipelined_messages_than_its_limit, .init = setup, .fini = teardown)
{
	uint8_t msg[8];
	size_t total = build(msg, 'S', "", 0);
	size_t i;

	trk.max_pending = 100;
	for (i = 0; i < 100; i++)
		cr_assert_eq(track_frontend(&trk, msg, total, total, 0), 0);
	cr_assert_eq(track_frontend(&trk, msg, total, total, 0), -1);
	cr_assert_str_eq(trk.error, "too many pipelined messages awaiting an answer");
}

Test(track, refuses_more_names_than_its_limit, .init = setup, .fini = teardown)
{
	char body[64];
	uint8_t msg[96];
	size_t total;

	trk.max_names = 300;
	for (int i = 0; i <= 300; i++) {
		int n = snprintf(body, sizeof(body), "s%d%cselect 1%c%c%c", i, 0, 0, 0, 0);

		total = build(msg, 'P', body, (size_t)n);
		if (i < 300) {
			cr_assert_eq(track_frontend(&trk, msg, total, total, 0), 0, "%s", trk.error);
			server('1', BODY(""));
		} else {
			cr_assert_eq(track_frontend(&trk, msg, total, total, 0), -1);
		}
	}
	cr_assert_eq(trk.n_names, 300);
	cr_assert_geq(trk.n_buckets, 64u, "tables grew as names came");
}

Test(track, refuses_malformed_client_messages, .init = setup, .fini = teardown)
{
	uint8_t msg[32];
	size_t total = build(msg, 'Q', "no terminator", 13);

	cr_assert_eq(track_frontend(&trk, msg, total, total, 0), -1);
	total = build(msg, 'C', "Xname\0", 6);
	cr_assert_eq(track_frontend(&trk, msg, total, total, 0), -1);
}

/* FunctionCall: OID 177, no argument formats, two text arguments, text result. */
static const uint8_t function_call_body[] = {
	0, 0, 0, 177, 0, 0, 0, 2, 0, 0, 0, 1, '2', 0, 0, 0, 1, '3', 0, 0,
};

Test(track, a_function_call_reports_once_with_its_oid_on_success_or_error, .init = setup,
     .fini = teardown)
{
	client('F', function_call_body, sizeof(function_call_body));
	server('V', BODY("\0\0\0\1" "5"));
	READY();
	client('F', function_call_body, sizeof(function_call_body));
	ERR("42883");
	READY();
	Q("select 1");
	TAG("SELECT 1");
	READY();
	cr_assert_eq(seen.n, 3);
	for (int i = 0; i < 2; i++) {
		cr_expect(seen.function_call[i]);
		cr_expect_eq(seen.function_oid[i], 177);
		cr_expect_eq(seen.rows[i], -1);
		cr_expect_str_eq(seen.sql[i], "");
	}
	cr_expect_str_eq(seen.sqlstate[0], "");
	cr_expect_str_eq(seen.sqlstate[1], "42883");
	cr_expect_not(seen.function_call[2]);
	cr_assert_eq(trk.count, 0);
}

Test(track, refuses_a_function_call_too_short_for_its_oid, .init = setup, .fini = teardown)
{
	uint8_t msg[16];
	size_t total = build(msg, 'F', BODY("\0\0"));

	cr_assert_eq(track_frontend(&trk, msg, total, total, 1000), -1);
	cr_assert_str_eq(trk.error, "malformed FunctionCall from the client");
}
