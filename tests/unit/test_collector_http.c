/*
 * collector/http.c: which Host headers the API answers (DNS rebinding: a
 * page served from a name that now resolves to us must not read it).
 */
#include <criterion/criterion.h>

#include "collector/http.h"

static char *const listed[] = { "audit.example.com" };

static bool allowed(const char *host)
{
	return http_host_allowed(host, listed, 1);
}

Test(collector_http, ip_literals_and_localhost_are_answered)
{
	cr_assert(allowed("127.0.0.1"));
	cr_assert(allowed("127.0.0.1:7080"));
	cr_assert(allowed("10.1.2.3:80"));
	cr_assert(allowed("[::1]"));
	cr_assert(allowed("[::1]:7080"));
	cr_assert(allowed("[fe80::1]:1"));
	cr_assert(allowed("localhost"));
	cr_assert(allowed("LocalHost:7080"));
}

Test(collector_http, listed_names_are_answered)
{
	cr_assert(allowed("audit.example.com"));
	cr_assert(allowed("Audit.Example.COM:443"));
	cr_assert_not(http_host_allowed("audit.example.com", NULL, 0));
}

Test(collector_http, other_hosts_are_refused)
{
	cr_assert_not(allowed(NULL));
	cr_assert_not(allowed(""));
	cr_assert_not(allowed("evil.example"));
	cr_assert_not(allowed("evil.example:7080"));
	cr_assert_not(allowed("127.0.0.1.evil.example"));
	cr_assert_not(allowed("localhost.evil.example"));
	cr_assert_not(allowed("audit.example.com.evil"));
	cr_assert_not(allowed("127.0.0.1:"));
	cr_assert_not(allowed("127.0.0.1:80x"));
	cr_assert_not(allowed("127.0.0.1:123456"));
	cr_assert_not(allowed("127.0.0.1:80:80"));
	cr_assert_not(allowed("::1"));
	cr_assert_not(allowed("[::1"));
	cr_assert_not(allowed("[::1]x"));
	cr_assert_not(allowed("[evil.example]"));
	cr_assert_not(allowed(":7080"));
	cr_assert_not(allowed("0x7f.1"));
}
