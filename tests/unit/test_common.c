/* Shared helpers: addresses, JSON lines, buffers, timestamps. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/iobuf.h"
#include "common/json.h"
#include "common/netaddr.h"

Test(netaddr, parses_ipv4_as_v4_mapped)
{
	struct netaddr a;
	char text[NETADDR_STRLEN];

	cr_assert_eq(netaddr_parse("127.0.0.1:15432", &a), 0);
	cr_assert(netaddr_is_v4(&a));
	cr_assert_eq(a.port, 15432);
	netaddr_format(&a, text, sizeof(text));
	cr_assert_str_eq(text, "127.0.0.1:15432");
}

Test(netaddr, parses_bracketed_ipv6)
{
	struct netaddr a;
	char text[NETADDR_STRLEN];

	cr_assert_eq(netaddr_parse("[::1]:5432", &a), 0);
	cr_assert_not(netaddr_is_v4(&a));
	netaddr_format(&a, text, sizeof(text));
	cr_assert_str_eq(text, "[::1]:5432");
}

Test(netaddr, refuses_malformed_addresses)
{
	static const char *const bad[] = {
		"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1",
		"127.0.0.1:54x", "::1:5432", "[::1]5432", "[127.0.0.1]:5432", "[::1:5432",
		"localhost:5432", "300.0.0.1:5432",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct netaddr a;

		cr_assert_neq(netaddr_parse(bad[i], &a), 0, "accepted '%s'", bad[i]);
	}
}

Test(netcidr, ipv4_prefix_lives_in_the_mapped_space)
{
	struct netcidr c;
	struct netaddr in, out;

	cr_assert_eq(netcidr_parse("10.1.2.3/8", &c), 0);
	cr_assert_eq(c.prefixlen, 96 + 8);
	netaddr_parse("10.200.0.1:1", &in);
	netaddr_parse("11.0.0.1:1", &out);
	cr_assert(netcidr_contains(&c, in.ip));
	cr_assert_not(netcidr_contains(&c, out.ip));
}

Test(netcidr, ipv6_and_bare_hosts)
{
	struct netcidr c;
	struct netaddr a;

	cr_assert_eq(netcidr_parse("fd00::/8", &c), 0);
	cr_assert_eq(c.prefixlen, 8);
	netaddr_parse("[fd12::1]:1", &a);
	cr_assert(netcidr_contains(&c, a.ip));
	cr_assert_eq(netcidr_parse("::1", &c), 0);
	cr_assert_eq(c.prefixlen, 128);
	cr_assert_eq(netcidr_parse("192.0.2.7", &c), 0);
	cr_assert_eq(c.prefixlen, 128);
	cr_assert_neq(netcidr_parse("10.0.0.0/33", &c), 0);
	cr_assert_neq(netcidr_parse("fd00::/129", &c), 0);
	cr_assert_neq(netcidr_parse("10.0.0.0/", &c), 0);
}

Test(jsonbuf, escapes_quotes_controls_and_bad_utf8)
{
	struct jsonbuf jb;

	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_str(&jb, "s", "a\"b\\c\n\x01");
	jsonbuf_strn(&jb, "bad", "\xff\xc3\xa9", 3);
	jsonbuf_null(&jb, "n");
	jsonbuf_u64(&jb, "u", 18446744073709551615ull);
	jsonbuf_bool(&jb, "b", false);
	cr_assert_eq(jsonbuf_finish(&jb), 0);
	cr_assert_eq(jb.len, strlen("{\"s\":\"a\\\"b\\\\c\\u000a\\u0001\",\"bad\":\"\\ufffd\xc3\xa9\","
				    "\"n\":null,\"u\":18446744073709551615,\"b\":false}\n"));
	cr_assert_arr_eq(jb.data, "{\"s\":\"a\\\"b\\\\c\\u000a\\u0001\",\"bad\":\"\\ufffd\xc3\xa9\","
				  "\"n\":null,\"u\":18446744073709551615,\"b\":false}\n", jb.len);
	jsonbuf_release(&jb);
}

Test(jsonbuf, writes_string_arrays)
{
	char *tables[] = { "public.orders", "we\"ird" };
	struct jsonbuf jb;

	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_str_array(&jb, "tables", tables, 2);
	jsonbuf_str_array(&jb, "none", NULL, 0);
	cr_assert_eq(jsonbuf_finish(&jb), 0);
	cr_assert_arr_eq(jb.data, "{\"tables\":[\"public.orders\",\"we\\\"ird\"],\"none\":[]}\n", jb.len);
	jsonbuf_release(&jb);
}

Test(jsonbuf, refuses_overlong_and_surrogate_utf8)
{
	struct jsonbuf jb;

	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_strn(&jb, "x", "\xc0\xaf\xed\xa0\x80", 5);
	cr_assert_eq(jsonbuf_finish(&jb), 0);
	cr_assert_null(memchr(jb.data, 0xc0, jb.len));
	cr_assert_null(memchr(jb.data, 0xed, jb.len));
	jsonbuf_release(&jb);
}

Test(iobuf, pool_recycles_up_to_its_limit)
{
	struct iobuf_pool pool;
	struct iobuf *a, *b, *c;

	iobuf_pool_init(&pool, 1);
	a = iobuf_get(&pool);
	b = iobuf_get(&pool);
	a->end = 10;
	iobuf_put(&pool, a);
	iobuf_put(&pool, b);	/* over the limit: freed */
	cr_assert_eq(pool.n_free, 1);
	c = iobuf_get(&pool);
	cr_assert_eq(c, a);
	cr_assert_eq(iobuf_len(c), 0);
	iobuf_put(&pool, c);
	iobuf_pool_release_all(&pool);
	cr_assert_eq(pool.n_free, 0);
}

Test(clock, rfc3339_has_the_requested_precision)
{
	char ts[CLOCK_RFC3339_LEN];

	clock_rfc3339_now(ts, 6);
	cr_assert_eq(strlen(ts), strlen("2026-11-23T21:40:00.123456Z"));
	cr_assert_eq(ts[10], 'T');
	cr_assert_eq(ts[strlen(ts) - 1], 'Z');
	clock_rfc3339_now(ts, 0);
	cr_assert_eq(strlen(ts), strlen("2026-11-23T21:40:00Z"));
}

/* --- bytes_reserve ------------------------------------------------------------ */

Test(bytes, grows_by_doubling_from_the_first_size_and_keeps_the_bytes)
{
	uint8_t *data = NULL;
	size_t cap = 0;

	cr_assert_eq(bytes_reserve(&data, &cap, 0, 64), 0);
	cr_assert_eq(cap, 0, "nothing needed, nothing allocated");
	cr_assert_eq(bytes_reserve(&data, &cap, 10, 64), 0);
	cr_assert_eq(cap, 64);
	memcpy(data, "dbward", 6);
	cr_assert_eq(bytes_reserve(&data, &cap, 64, 64), 0);
	cr_assert_eq(cap, 64, "enough already");
	cr_assert_eq(bytes_reserve(&data, &cap, 200, 64), 0);
	cr_assert_eq(cap, 256);
	cr_assert_eq(memcmp(data, "dbward", 6), 0);
	free(data);
}

Test(bytes, refuses_what_doubling_cannot_reach)
{
	uint8_t *data = NULL;
	size_t cap = 0;

	cr_assert_eq(bytes_reserve(&data, &cap, SIZE_MAX, 4096), -ENOMEM);
	cr_assert_null(data);
	cr_assert_eq(cap, 0);
}
