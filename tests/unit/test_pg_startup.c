/* The first client packet: what is accepted, what is refused, and why. */
#include <criterion/criterion.h>
#include <string.h>

#include "agent/pg_startup.h"

static size_t put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

/* A StartupMessage for protocol 3.0 with the given NUL-separated pairs. */
static size_t startup(uint8_t *buf, const char *pairs, size_t pairs_len)
{
	size_t len = 8 + pairs_len + 1;

	put_be32(buf, (uint32_t)len);
	put_be32(buf + 4, 3u << 16);
	memcpy(buf + 8, pairs, pairs_len);
	buf[8 + pairs_len] = '\0';
	return len;
}

#define PAIRS(s) s, sizeof(s) - 1

Test(pg_startup, reads_user_database_and_application_name)
{
	uint8_t buf[256];
	struct pg_startup st;
	size_t n = startup(buf, PAIRS("user\0app\0database\0orders\0application_name\0psql\0"));

	cr_assert_eq(pg_startup_parse(buf, n, &st), PG_STARTUP_MESSAGE);
	cr_assert_eq(st.length, n);
	cr_assert_eq(st.user.len, 3);
	cr_assert_arr_eq(st.user.ptr, "app", 3);
	cr_assert_arr_eq(st.database.ptr, "orders", 6);
	cr_assert_arr_eq(st.application_name.ptr, "psql", 4);
}

Test(pg_startup, absent_parameters_stay_null)
{
	uint8_t buf[64];
	struct pg_startup st;
	size_t n = startup(buf, PAIRS("user\0app\0"));

	cr_assert_eq(pg_startup_parse(buf, n, &st), PG_STARTUP_MESSAGE);
	cr_assert_null(st.database.ptr);
	cr_assert_null(st.application_name.ptr);
}

Test(pg_startup, waits_for_the_whole_packet)
{
	uint8_t buf[64];
	struct pg_startup st;
	size_t n = startup(buf, PAIRS("user\0app\0"));

	for (size_t have = 0; have < n; have++)
		cr_assert_eq(pg_startup_parse(buf, have, &st), PG_STARTUP_INCOMPLETE, "at %zu", have);
}

Test(pg_startup, recognises_ssl_gssenc_and_cancel_requests)
{
	uint8_t buf[16] = { 0 };
	struct pg_startup st;

	put_be32(buf, 8);
	put_be32(buf + 4, PG_CODE_SSL);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_SSL_REQUEST);
	put_be32(buf + 4, PG_CODE_GSSENC);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_GSSENC_REQUEST);
	put_be32(buf, 16);
	put_be32(buf + 4, PG_CODE_CANCEL);
	cr_assert_eq(pg_startup_parse(buf, 16, &st), PG_STARTUP_CANCEL);
}

Test(pg_startup, refuses_length_below_eight)
{
	uint8_t buf[8] = { 0, 0, 0, 7, 0, 3, 0, 0 };
	struct pg_startup st;

	cr_assert_eq(pg_startup_parse(buf, sizeof(buf), &st), PG_STARTUP_INVALID);
	cr_assert_str_eq(st.error, "invalid length of startup packet");
}

Test(pg_startup, refuses_length_over_ten_thousand_before_it_arrives)
{
	uint8_t buf[4];
	struct pg_startup st;

	put_be32(buf, PG_STARTUP_MAX_LEN + 1);
	cr_assert_eq(pg_startup_parse(buf, 4, &st), PG_STARTUP_INVALID);
	put_be32(buf, 0xffffffffu);
	cr_assert_eq(pg_startup_parse(buf, 4, &st), PG_STARTUP_INVALID);
}

Test(pg_startup, refuses_unknown_protocol_versions)
{
	uint8_t buf[16];
	struct pg_startup st;

	put_be32(buf, 8);
	put_be32(buf + 4, 0x12345678);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_INVALID);
	cr_assert_str_eq(st.error, "unsupported frontend protocol");
	put_be32(buf + 4, 2u << 16);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_INVALID);
}

Test(pg_startup, refuses_requests_of_the_wrong_length)
{
	uint8_t buf[16] = { 0 };
	struct pg_startup st;

	put_be32(buf, 12);
	put_be32(buf + 4, PG_CODE_SSL);
	cr_assert_eq(pg_startup_parse(buf, 12, &st), PG_STARTUP_INVALID);
	put_be32(buf, 8);
	put_be32(buf + 4, PG_CODE_CANCEL);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_INVALID);
}

Test(pg_startup, refuses_unterminated_parameters)
{
	uint8_t buf[64];
	struct pg_startup st;
	size_t n = 8 + 8;	/* "user\0app" with neither terminator */

	put_be32(buf, (uint32_t)n);
	put_be32(buf + 4, 3u << 16);
	memcpy(buf + 8, "user\0app", 8);
	cr_assert_eq(pg_startup_parse(buf, n, &st), PG_STARTUP_INVALID);

	n = startup(buf, PAIRS("user\0app\0"));
	buf[n - 1] = 'x';	/* the final terminator replaced */
	cr_assert_eq(pg_startup_parse(buf, n, &st), PG_STARTUP_INVALID);
}

Test(pg_startup, refuses_an_empty_parameter_list_without_terminator)
{
	uint8_t buf[8];
	struct pg_startup st;

	put_be32(buf, 8);
	put_be32(buf + 4, 3u << 16);
	cr_assert_eq(pg_startup_parse(buf, 8, &st), PG_STARTUP_INVALID);
}
