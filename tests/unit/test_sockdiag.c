/*
 * sock_diag lookups on real loopback connections: the cookie found by a
 * connection's 4-tuple is the one the kernel reports for that socket
 * (SO_COOKIE), for IPv4, IPv6 and a client bound to lo; a tuple nobody
 * holds is -ENOENT; and a connection that died in the accept queue is
 * not given the cookie of the new socket that took its tuple.
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
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.client_end, &p.server_end, &cookie, NULL), 0);
	cr_assert_eq(cookie, cookie_of(p.client));
	/* The same tuple turned round is the agent's own end. */
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.server_end, &p.client_end, &cookie, NULL), 0);
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
	cr_assert_eq(sockdiag_tcp_cookie(fd, &other, &p.server_end, &cookie, NULL), -ENOENT);
	cr_assert_eq(cookie, 7, "the cookie is left alone");
	/* Gone once both ends are closed with a reset (no TIME_WAIT). */
	{
		struct linger off = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(p.client, SOL_SOCKET, SO_LINGER, &off, sizeof(off));
	}
	close(p.client);
	p.client = -1;
	cr_assert_eq(sockdiag_tcp_cookie(fd, &p.client_end, &p.server_end, &cookie, NULL), -ENOENT);
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
		cr_assert_eq(sockdiag_tcp_cookie(fd, &p->client_end, &p->server_end, &cookie, NULL), 0);
		cr_assert_eq(cookie, cookie_of(p->client));
	}
	pair_close(&a);
	pair_close(&b);
	close(fd);
}

static uint64_t peer_cookie_of(const struct pair *p)
{
	uint64_t cookie = 0;
	int fd = sockdiag_open();
	int err;

	cr_assert(fd >= 0);
	err = sockdiag_peer_cookie(fd, p->server, &p->client_end, &p->server_end, &cookie);
	close(fd);
	cr_assert_eq(err, 0, "sockdiag_peer_cookie: %s", strerror(-err));
	return cookie;
}

Test(sockdiag, the_peer_of_an_accepted_socket_is_its_client)
{
	struct pair v4, v6;

	pair_open(&v4, AF_INET);
	pair_open(&v6, AF_INET6);
	cr_assert_eq(peer_cookie_of(&v4), cookie_of(v4.client));
	cr_assert_eq(peer_cookie_of(&v6), cookie_of(v6.client));
	pair_close(&v4);
	pair_close(&v6);
}

Test(sockdiag, a_client_bound_to_lo_is_found)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	struct pair p;

	p.listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	p.client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(p.listener, (struct sockaddr *)&addr, len), 0);
	cr_assert_eq(listen(p.listener, 1), 0);
	cr_assert_eq(getsockname(p.listener, (struct sockaddr *)&addr, &len), 0);
	cr_assert_eq(setsockopt(p.client, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3), 0);
	cr_assert_eq(connect(p.client, (struct sockaddr *)&addr, len), 0);
	p.server = accept(p.listener, NULL, NULL);
	cr_assert(p.server >= 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&addr, &p.server_end), 0);
	cr_assert_eq(getsockname(p.client, (struct sockaddr *)&addr, &len), 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&addr, &p.client_end), 0);
	cr_assert_eq(peer_cookie_of(&p), cookie_of(p.client));
	pair_close(&p);
}

/* A client on a port of our choosing (SO_REUSEADDR, so the port can be
 * taken again at once after a reset). */
static int client_on(uint16_t port, const struct sockaddr_in *to)
{
	struct sockaddr_in from = { .sin_family = AF_INET, .sin_port = htons(port),
				    .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert(fd >= 0);
	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&from, sizeof(from)), 0, "bind: %s",
		     strerror(errno));
	cr_assert_eq(connect(fd, (const struct sockaddr *)to, sizeof(*to)), 0);
	return fd;
}

Test(sockdiag, a_dead_connection_is_not_given_the_cookie_of_its_tuples_new_owner)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	socklen_t len = sizeof(addr);
	struct netaddr client_end, server_end;
	int listener, first, second, dead, alive, fd = sockdiag_open();
	uint64_t cookie = 0, second_cookie;

	cr_assert(fd >= 0);
	listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(bind(listener, (struct sockaddr *)&addr, len), 0);
	cr_assert_eq(listen(listener, 4), 0);
	cr_assert_eq(getsockname(listener, (struct sockaddr *)&addr, &len), 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&addr, &server_end), 0);

	/* The first client connects, writes and resets while still queued. */
	first = client_on(0, &addr);
	{
		struct sockaddr_in from;
		socklen_t from_len = sizeof(from);

		cr_assert_eq(getsockname(first, (struct sockaddr *)&from, &from_len), 0);
		cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&from, &client_end), 0);
	}
	cr_assert_eq(write(first, "hello", 5), 5);
	cr_assert_eq(setsockopt(first, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
	close(first);
	/* A second one takes the same port and connects. */
	second = client_on(client_end.port, &addr);
	second_cookie = cookie_of(second);

	dead = accept(listener, NULL, NULL);	/* the first connection, dead */
	cr_assert(dead >= 0);
	/* By its tuple alone, the workload end is now the second client. */
	cr_assert_eq(sockdiag_tcp_cookie(fd, &client_end, &server_end, &cookie, NULL), 0);
	cr_assert_eq(cookie, second_cookie);
	cr_assert_eq(sockdiag_peer_cookie(fd, dead, &client_end, &server_end, &cookie), -ENOENT,
		     "the dead connection was given cookie %llu (the second client's is %llu)",
		     (unsigned long long)cookie, (unsigned long long)second_cookie);
	alive = accept(listener, NULL, NULL);
	cr_assert(alive >= 0);
	cr_assert_eq(sockdiag_peer_cookie(fd, alive, &client_end, &server_end, &cookie), 0);
	cr_assert_eq(cookie, second_cookie);
	close(dead);
	close(alive);
	close(second);
	close(listener);
	close(fd);
}

Test(sockdiag, the_selftest_passes_here)
{
	int fd = sockdiag_open();

	cr_assert(fd >= 0);
	cr_assert_eq(sockdiag_selftest(fd, 0), 0);
	cr_assert_eq(sockdiag_selftest(fd, 0xdb00), 0, "with a mark on the client");
	close(fd);
}

/* Nothing holds the workload end's tuple but a listener on that address:
 * the exact lookup falls back to it, and it is no connection's end. */
Test(sockdiag, a_listener_is_no_connections_end)
{
	struct pair p;
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	struct netaddr listening;
	uint64_t cookie = 0;
	int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), fd = sockdiag_open();

	cr_assert(fd >= 0 && other >= 0);
	cr_assert_eq(bind(other, (struct sockaddr *)&addr, len), 0);
	cr_assert_eq(listen(other, 1), 0);
	cr_assert_eq(getsockname(other, (struct sockaddr *)&addr, &len), 0);
	cr_assert_eq(netaddr_from_sockaddr((struct sockaddr *)&addr, &listening), 0);
	pair_open(&p, AF_INET);
	cr_assert_eq(sockdiag_tcp_cookie(fd, &listening, &p.server_end, &cookie, NULL), 0,
		     "the lookup falls back to the listener");
	cr_assert_eq(cookie, cookie_of(other));
	cr_assert_eq(sockdiag_peer_cookie(fd, p.server, &listening, &p.server_end, &cookie), -ENOENT);
	pair_close(&p);
	close(other);
	close(fd);
}

Test(sockdiag, an_accepted_socket_is_connected_until_reset)
{
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	struct pair p;

	pair_open(&p, AF_INET);
	cr_assert(sockdiag_still_connected(p.server));
	shutdown(p.client, SHUT_WR);	/* CLOSE_WAIT on our side: still joined */
	cr_assert(sockdiag_still_connected(p.server));
	cr_assert_eq(setsockopt(p.client, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
	close(p.client);
	p.client = -1;
	cr_assert_not(sockdiag_still_connected(p.server));
	close(p.server);
	close(p.listener);
}
