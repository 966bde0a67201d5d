/*
 * sock_diag lookups on real loopback connections: the cookie found by a
 * connection's 4-tuple is the one the kernel reports for that socket
 * (SO_COOKIE), for IPv4 and IPv6, and a tuple nobody holds is -ENOENT.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/sockdiag.h"

struct pair {
	int listener, client, server;
	struct netaddr client_end, server_end;	/* the client's local and remote */
};

static void pair_open(struct pair *p, int family)
{
	struct sockaddr_storage ss = { .ss_family = (sa_family_t)family };
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

	if (family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	p->listener = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(p->listener >= 0);
	cr_assert_eq(bind(p->listener, (struct sockaddr *)&ss, len), 0, "bind: %s", strerror(errno));
	cr_assert_eq(listen(p->listener, 1), 0);
	cr_assert_eq(getsockname(p->listener, (struct sockaddr *)&ss, &len), 0);
	p->client = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(p->client, (struct sockaddr *)&ss, len), 0);
	p->server = accept(p->listener, NULL, NULL);
	cr_assert(p->server >= 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&ss, &p->server_end), 0);
	cr_assert_eq(getsockname(p->client, (struct sockaddr *)&ss, &len), 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&ss, &p->client_end), 0);
}

static void pair_close(struct pair *p)
{
	close(p->client);
	close(p->server);
	close(p->listener);
}

static uint64_t cookie_of(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
	return cookie;
}

static void finds_both_ends(int family)
{
	struct pair p;
	uint64_t cookie = 0;
	int fd = sockdiag_open();

	cr_assert(fd >= 0, "sockdiag_open: %s", strerror(-fd));
	pair_open(&p, family);
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.client_end, &p.server_end, &cookie), 0);
	cr_assert_eq(cookie, cookie_of(p.client));
	/* The same tuple turned round is the agent's own end. */
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.server_end, &p.client_end, &cookie), 0);
	cr_assert_eq(cookie, cookie_of(p.server));
	pair_close(&p);
	close(fd);
}

Test(sockdiag, finds_an_ipv4_connection_by_its_tuple)
{
	finds_both_ends(AF_INET);
}

Test(sockdiag, finds_an_ipv6_connection_by_its_tuple)
{
	finds_both_ends(AF_INET6);
}

Test(sockdiag, a_tuple_nobody_holds_is_enoent)
{
	struct pair p;
	struct netaddr other;
	uint64_t cookie = 7;
	int fd = sockdiag_open();

	cr_assert(fd >= 0);
	pair_open(&p, AF_INET);
	other = p.client_end;
	other.port = (uint16_t)(other.port + 1);
	cr_assert_eq(sockdiag_tcp_cookie(fd, &other, &p.server_end, &cookie), -ENOENT);
	cr_assert_eq(cookie, 7, "the cookie is left alone");
	/* Gone once both ends are closed with a reset (no TIME_WAIT). */
	{
		struct linger off = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(p.client, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
	}
	close(p.client);
	p.client = -1;
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.client_end, &p.server_end, &cookie), -ENOENT);
	close(p.server);
	close(p.listener);
	close(fd);
}

Test(sockdiag, many_lookups_on_one_socket_stay_in_step)
{
	struct pair a, b;
	uint64_t cookie;
	int fd = sockdiag_open();

	cr_assert(fd >= 0);
	pair_open(&a, AF_INET);
	pair_open(&b, AF_INET6);
	for (int i = 0; i < 1000; i++) {
		struct pair *p = i % 2 ? &a : &b;

		cookie = 0;
		cr_assert_eq(sockdiag_tcp_cookie(fd, &p->client_end, &p->server_end, &cookie), 0);
		cr_assert_eq(cookie, cookie_of(p->client));
	}
	pair_close(&a);
	pair_close(&b);
	close(fd);
}
