/* Messages after startup: types, fields, tags, builders, SASL rewrite. */
#include <criterion/criterion.h>
#include <string.h>

#include "agent/pg_msg.h"

Test(pg_msg, knows_each_directions_message_types)
{
	for (const char *t = "QPBDECSHFdcfXp"; *t; t++)
		cr_assert(pg_msg_frontend_type_valid((uint8_t)*t), "%c", *t);
	for (const char *t = "RKSZTDCENAI123ntsGHWdcVv"; *t; t++)
		cr_assert(pg_msg_backend_type_valid((uint8_t)*t), "%c", *t);
	cr_assert_not(pg_msg_frontend_type_valid('z'));
	cr_assert_not(pg_msg_frontend_type_valid('R'));
	cr_assert_not(pg_msg_frontend_type_valid(0));
	cr_assert_not(pg_msg_backend_type_valid('Q'));
	cr_assert_not(pg_msg_backend_type_valid(0));
}

Test(pg_reader, stops_at_the_end_of_the_body)
{
	static const uint8_t body[] = { 0, 0, 0, 7, 'a', 'b', 0, 'c' };
	struct pg_reader r;
	size_t len;

	pg_reader_init(&r, body, sizeof(body));
	cr_assert_eq(pg_read_u32(&r), 7);
	cr_assert_str_eq(pg_read_cstr(&r, &len), "ab");
	cr_assert_eq(len, 2);
	cr_assert_null(pg_read_cstr(&r, &len), "unterminated string read");
	cr_assert(r.bad);
	cr_assert_eq(pg_read_u8(&r), 0, "reads after an overrun yield 0");
}

Test(pg_command_rows, reads_the_count_of_each_counted_tag)
{
	cr_assert_eq(pg_command_rows("INSERT 0 5", 10), 5);
	cr_assert_eq(pg_command_rows("SELECT 3", 8), 3);
	cr_assert_eq(pg_command_rows("UPDATE 12", 9), 12);
	cr_assert_eq(pg_command_rows("DELETE 0", 8), 0);
	cr_assert_eq(pg_command_rows("MERGE 2", 7), 2);
	cr_assert_eq(pg_command_rows("COPY 50000", 10), 50000);
	cr_assert_eq(pg_command_rows("FETCH 100", 9), 100);
}

Test(pg_command_rows, refuses_uncounted_and_malformed_tags)
{
	cr_assert_eq(pg_command_rows("CREATE TABLE", 12), -1);
	cr_assert_eq(pg_command_rows("SELECT", 6), -1);
	cr_assert_eq(pg_command_rows("SELECT ", 7), -1);
	cr_assert_eq(pg_command_rows("SELECT 99999999999999999999", 27), -1);
	cr_assert_eq(pg_command_rows("BEGIN", 5), -1);
}

static size_t error_body(uint8_t *buf, const char *fields, size_t len)
{
	memcpy(buf, fields, len);
	return len;
}

Test(pg_error_parse, takes_severity_sqlstate_and_message)
{
	uint8_t body[128];
	static const char f[] = "SERREUR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
	size_t n = error_body(body, f, sizeof(f) - 1);
	struct pg_error_fields e;

	cr_assert_eq(pg_error_parse(body, n, &e), 0);
	cr_assert_str_eq(e.severity, "ERROR", "the non-localized severity wins");
	cr_assert_str_eq(e.sqlstate, "42P01");
	cr_assert_eq(e.message_len, strlen("relation \"x\" does not exist"));
}

Test(pg_error_parse, refuses_a_body_without_terminator)
{
	uint8_t body[32];
	static const char f[] = "SERROR\0C42P01";
	struct pg_error_fields e;

	cr_assert_eq(pg_error_parse(body, error_body(body, f, sizeof(f) - 1), &e), -1);
	cr_assert_eq(pg_error_parse(body, 0, &e), -1);
}

Test(pg_build_error, is_a_well_formed_error_response)
{
	uint8_t buf[256];
	size_t n = pg_build_error(buf, sizeof(buf), "ERROR", "42501", "denied", "by rule x", NULL);
	struct pg_error_fields e;

	cr_assert_gt(n, 0);
	cr_assert_eq(buf[0], 'E');
	cr_assert_eq(pg_be32(buf + 1) + 1, n);
	cr_assert_eq(buf[n - 1], '\0');
	cr_assert_eq(pg_error_parse(buf + PG_MSG_HEADER_LEN, n - PG_MSG_HEADER_LEN, &e), 0);
	cr_assert_str_eq(e.severity, "ERROR");
	cr_assert_str_eq(e.sqlstate, "42501");
	cr_assert_not_null(memmem(buf, n, "Dby rule x", 11));
	cr_assert_null(memchr(buf + 5, 'H', n - 5 - 20), "no hint field when none given");
}

Test(pg_build_error, refuses_a_buffer_too_small)
{
	uint8_t buf[16];

	cr_assert_eq(pg_build_error(buf, sizeof(buf), "FATAL", "08P01", "too long for it", NULL, NULL), 0);
}

Test(pg_build_ready, carries_the_transaction_status)
{
	uint8_t buf[8];

	cr_assert_eq(pg_build_ready(buf, sizeof(buf), 'E'), 6);
	cr_assert_arr_eq(buf, ((uint8_t[]){ 'Z', 0, 0, 0, 5, 'E' }), 6);
}

static size_t sasl_message(uint8_t *buf, const char *mechs, size_t mechs_len)
{
	size_t total = 5 + 4 + mechs_len;

	buf[0] = 'R';
	buf[1] = 0;
	buf[2] = 0;
	buf[3] = (uint8_t)((total - 1) >> 8);
	buf[4] = (uint8_t)(total - 1);
	memcpy(buf + 5, "\0\0\0\x0a", 4);
	memcpy(buf + 9, mechs, mechs_len);
	return total;
}

Test(pg_sasl_strip_plus, removes_channel_binding_from_the_offer)
{
	static const char m[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";	/* + final NUL */
	static const char want[] = "SCRAM-SHA-256\0";
	uint8_t buf[128];
	size_t total = sasl_message(buf, m, sizeof(m));
	size_t after = pg_sasl_strip_plus(buf, total);

	cr_assert_eq(after, total - strlen("SCRAM-SHA-256-PLUS") - 1);
	cr_assert_eq(pg_be32(buf + 1) + 1, after);
	cr_assert_arr_eq(buf + 9, want, sizeof(want));
}

Test(pg_sasl_strip_plus, leaves_other_messages_alone)
{
	static const char m[] = "SCRAM-SHA-256\0";
	uint8_t buf[128], copy[128];
	size_t total = sasl_message(buf, m, sizeof(m));

	memcpy(copy, buf, total);
	cr_assert_eq(pg_sasl_strip_plus(buf, total), total);
	cr_assert_arr_eq(buf, copy, total);
	buf[8] = 3;	/* AuthenticationCleartextPassword */
	cr_assert_eq(pg_sasl_strip_plus(buf, total), total);
	cr_assert_eq(pg_sasl_strip_plus(buf, 4), 4, "a short message is not read past its end");
}

Test(pg_sasl_strip_plus, survives_an_unterminated_mechanism_list)
{
	uint8_t buf[64];
	size_t total = sasl_message(buf, "SCRAM-SHA-256-PL", 16);

	cr_assert_eq(pg_sasl_strip_plus(buf, total), total);
}

Test(pg_build_denial_query, names_the_rule_inside_a_safe_literal)
{
	uint8_t buf[1024];
	size_t n = pg_build_denial_query(buf, sizeof(buf), "no-drop");

	cr_assert_gt(n, 0);
	cr_assert_eq(buf[0], 'Q');
	cr_assert_eq(pg_be32(buf + 1) + 1, n);
	cr_assert_eq(buf[n - 1], '\0');
	cr_assert_not_null(memmem(buf, n, "ERRCODE = '42501'", 17));
	cr_assert_not_null(memmem(buf, n, "rule \"no-drop\"", 14));
}

Test(pg_build_denial_query, a_hostile_rule_name_cannot_leave_the_literal)
{
	uint8_t buf[1024];
	size_t n = pg_build_denial_query(buf, sizeof(buf), "x'; DROP TABLE t; --$dbward$\\");
	const char *body = (const char *)buf + 5;

	cr_assert_gt(n, 0);
	cr_assert_null(strstr(body, "x'"), "quote survived: %s", body);
	cr_assert_null(strchr(body, '\\'), "backslash survived: %s", body);
	cr_assert_null(strstr(body, ";--"), "%s", body);
	cr_assert_eq(strstr(body, "$dbward$") + 8, strstr(body, "BEGIN"), "only our dollar quotes");
}

Test(pg_error_strip_field, removes_the_context_and_keeps_the_rest)
{
	static const char f[] = "SERROR\0C42501\0Mdenied\0Wsome context\0Hhint\0";
	uint8_t buf[128];
	size_t total = 5 + sizeof(f);	/* the literal's NUL is the terminator */
	size_t after;
	struct pg_error_fields e;

	buf[0] = 'E';
	buf[1] = buf[2] = buf[3] = 0;
	buf[4] = (uint8_t)(total - 1);
	memcpy(buf + 5, f, sizeof(f));
	after = pg_error_strip_field(buf, total, 'W');
	cr_assert_eq(after, total - strlen("Wsome context") - 1);
	cr_assert_eq(pg_be32(buf + 1) + 1, after);
	cr_assert_null(memmem(buf, after, "some context", 12));
	cr_assert_not_null(memmem(buf, after, "Hhint", 5));
	cr_assert_eq(pg_error_parse(buf + 5, after - 5, &e), 0);
	cr_assert_str_eq(e.sqlstate, "42501");
	cr_assert_eq(pg_error_strip_field(buf, after, 'W'), after, "nothing left to strip");
}
