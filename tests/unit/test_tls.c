/*
 * common/tls: both ends of every connection run in this process over a
 * non-blocking socketpair, driven by a small poll() loop, with
 * certificates made fresh for each test (tls_fixtures.c).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls.h"
#include "tests/unit/tls_fixtures.h"

#define STUCK_MS 2000

static struct tls_fixtures fx;

static void fixtures_up(void)
{
	cr_assert_eq(tls_fixtures_create(&fx), 0, "cannot make test certificates");
}

static void fixtures_down(void)
{
	tls_fixtures_remove(&fx);
}

TestSuite(tls, .init = fixtures_up, .fini = fixtures_down, .timeout = 30);

/* A fixture file's path; a few may be alive at once. */
static const char *fx_path(const char *name)
{
	static char bufs[8][TLS_FIXTURES_PATH_MAX];
	static unsigned next;
	char *buf = bufs[next++ % 8];

	return tls_fixtures_path(&fx, name, buf, TLS_FIXTURES_PATH_MAX);
}

/* --- contexts ------------------------------------------------------------- */

static struct tls_ctx *server_ctx(const char *cert, const char *key, const char *client_ca)
{
	struct tls_server_opts opts = {
		.cert_file = fx_path(cert),
		.key_file = fx_path(key),
		.client_ca_file = client_ca ? fx_path(client_ca) : NULL,
	};
	struct tls_ctx *ctx;
	char err[TLS_ERR_LEN];

	cr_assert_eq(tls_ctx_new_server(&opts, &ctx, err, sizeof(err)), 0, "%s", err);
	return ctx;
}

static struct tls_ctx *client_ctx(enum tls_verify verify, const char *ca, const char *cert,
				  const char *key)
{
	struct tls_client_opts opts = {
		.verify = verify,
		.ca_file = ca ? fx_path(ca) : NULL,
		.cert_file = cert ? fx_path(cert) : NULL,
		.key_file = key ? fx_path(key) : NULL,
	};
	struct tls_ctx *ctx;
	char err[TLS_ERR_LEN];

	cr_assert_eq(tls_ctx_new_client(&opts, &ctx, err, sizeof(err)), 0, "%s", err);
	return ctx;
}

/* --- the two ends --------------------------------------------------------- */

/* One end of the socketpair: our connection, or a raw OpenSSL one to
 * play a client this module would never be. */
struct side {
	int fd;
	struct tls_conn *c;
	SSL *raw;
	enum tls_status last;
};

struct pair {
	struct side cli;
	struct side srv;
};

static void socket_pair(int fds[2])
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
}

static void pair_open(struct pair *p, struct tls_ctx *cctx, const char *server_name,
		      struct tls_ctx *sctx)
{
	char err[TLS_ERR_LEN];
	int fds[2];

	memset(p, 0, sizeof(*p));
	socket_pair(fds);
	p->cli.fd = fds[0];
	p->srv.fd = fds[1];
	p->cli.last = p->srv.last = TLS_WANT_READ;
	if (cctx)
		cr_assert_eq(tls_conn_new(cctx, p->cli.fd, server_name, &p->cli.c, err, sizeof(err)),
			     0, "%s", err);
	cr_assert_eq(tls_conn_new(sctx, p->srv.fd, NULL, &p->srv.c, err, sizeof(err)), 0, "%s",
		     err);
}

static void side_close(struct side *s)
{
	tls_conn_free(s->c);
	SSL_free(s->raw);
	if (s->fd >= 0)
		close(s->fd);
	s->c = NULL;
	s->raw = NULL;
	s->fd = -1;
}

static void pair_close(struct pair *p)
{
	side_close(&p->cli);
	side_close(&p->srv);
}

static bool is_final(enum tls_status st)
{
	return st != TLS_WANT_READ && st != TLS_WANT_WRITE;
}

static enum tls_status raw_handshake(SSL *raw)
{
	int ret = SSL_do_handshake(raw);

	if (ret == 1)
		return TLS_OK;
	switch (SSL_get_error(raw, ret)) {
	case SSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	default:
		ERR_clear_error();
		return TLS_ERROR;
	}
}

/* Waits until one of the sides that asked can move; false when stuck. */
static bool wait_sides(struct side *const *sides, int n)
{
	struct pollfd p[2];
	int np = 0;

	for (int i = 0; i < n; i++) {
		if (is_final(sides[i]->last))
			continue;
		p[np].fd = sides[i]->fd;
		p[np].events = sides[i]->last == TLS_WANT_READ ? POLLIN : POLLOUT;
		np++;
	}
	return np && poll(p, (nfds_t)np, STUCK_MS) > 0;
}

/* Runs both handshakes until each has finished or failed (or is stuck,
 * which leaves its last status at TLS_WANT_*). */
static void handshake(struct pair *p)
{
	struct side *const sides[] = { &p->cli, &p->srv };

	for (;;) {
		for (int i = 0; i < 2; i++) {
			struct side *s = sides[i];

			if (!is_final(s->last))
				s->last = s->raw ? raw_handshake(s->raw) : tls_handshake(s->c);
		}
		if (is_final(p->cli.last) && is_final(p->srv.last))
			return;
		if (!wait_sides(sides, 2))
			return;
	}
}

/* Reads what the peer sent and we expect next: exactly @len bytes. */
static void expect_bytes(struct side *s, const void *want, size_t len)
{
	uint8_t buf[256];
	size_t got = 0, n;

	cr_assert_leq(len, sizeof(buf));
	while (got < len) {
		enum tls_status st = tls_read(s->c, buf + got, len - got, &n);

		if (st == TLS_WANT_READ) {
			struct pollfd pfd = { .fd = s->fd, .events = POLLIN };

			cr_assert_gt(poll(&pfd, 1, STUCK_MS), 0, "no data came");
			continue;
		}
		cr_assert_eq(st, TLS_OK, "read: %s %s", tls_status_name(st), tls_conn_error(s->c));
		got += n;
	}
	cr_assert_eq(memcmp(buf, want, len), 0);
}

static void send_all(struct side *s, const void *data, size_t len)
{
	size_t sent = 0, n;

	while (sent < len) {
		enum tls_status st = tls_write(s->c, (const uint8_t *)data + sent, len - sent, &n);

		if (st == TLS_WANT_WRITE) {
			struct pollfd pfd = { .fd = s->fd, .events = POLLOUT };

			cr_assert_gt(poll(&pfd, 1, STUCK_MS), 0, "socket stayed full");
			continue;
		}
		cr_assert_eq(st, TLS_OK, "write: %s %s", tls_status_name(st), tls_conn_error(s->c));
		sent += n;
	}
}

/* Reads on @s until something other than data or WANT_READ comes. */
static enum tls_status read_until_end(struct side *s)
{
	uint8_t buf[512];
	size_t n;

	for (;;) {
		enum tls_status st = tls_read(s->c, buf, sizeof(buf), &n);
		struct pollfd pfd = { .fd = s->fd, .events = POLLIN };

		if (st == TLS_OK)
			continue;
		if (st != TLS_WANT_READ)
			return st;
		if (poll(&pfd, 1, STUCK_MS) <= 0)
			return TLS_WANT_READ;
	}
}

static void assert_handshake_ok(struct pair *p)
{
	handshake(p);
	cr_assert_eq(p->cli.last, TLS_OK, "client: %s %s", tls_status_name(p->cli.last),
		     p->cli.c ? tls_conn_error(p->cli.c) : "");
	cr_assert_eq(p->srv.last, TLS_OK, "server: %s %s", tls_status_name(p->srv.last),
		     tls_conn_error(p->srv.c));
}

static void assert_error_mentions(const struct tls_conn *c, const char *words)
{
	cr_assert(strstr(tls_conn_error(c), words), "error '%s' does not say '%s'",
		  tls_conn_error(c), words);
}

/* --- handshake and data ------------------------------------------------------ */

Test(tls, handshake_then_data_both_ways)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_FULL, "ca.crt", NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, "localhost", sctx);
	assert_handshake_ok(&p);
	cr_assert_str_eq(tls_version(p.cli.c), "TLSv1.3");
	cr_assert_str_eq(tls_version(p.srv.c), "TLSv1.3");
	cr_assert_str_eq(tls_cipher(p.cli.c), tls_cipher(p.srv.c));
	cr_assert_neq(tls_cipher(p.cli.c)[0], '\0');

	send_all(&p.cli, "SELECT 1", 8);
	expect_bytes(&p.srv, "SELECT 1", 8);
	send_all(&p.srv, "one row", 7);
	expect_bytes(&p.cli, "one row", 7);
	cr_assert_eq(tls_pending(p.cli.c), 0);

	pair_close(&p);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

Test(tls, status_names_are_stable)
{
	cr_assert_str_eq(tls_status_name(TLS_WANT_READ), "want_read");
	cr_assert_str_eq(tls_status_name(TLS_TRUNCATED), "truncated");
	cr_assert_str_eq(tls_status_name((enum tls_status)99), "unknown");
}

Test(tls, version_and_cipher_are_empty_before_the_handshake)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct pair p;

	pair_open(&p, NULL, NULL, sctx);
	cr_assert_str_eq(tls_version(p.srv.c), "");
	cr_assert_str_eq(tls_cipher(p.srv.c), "");
	cr_assert_str_eq(tls_conn_error(p.srv.c), "");
	cr_assert_not(tls_peer_verified(p.srv.c));
	pair_close(&p);
	tls_ctx_free(sctx);
}

struct flow {
	size_t want_writes;	/* TLS_WANT_WRITE from tls_write */
	size_t partial_writes;	/* tls_write took less than offered */
	size_t moved_retries;	/* retries offered from another buffer */
};

/*
 * Sends @len bytes from @tx to @rx: @tx writes greedily, up to @wchunk per
 * call, until the socket is full; every retry after TLS_WANT_WRITE comes
 * from a different buffer (as a recycled iobuf would); @rx reads up to
 * @rchunk per call until TLS_WANT_READ.
 */
static void stream(struct side *tx, struct side *rx, const uint8_t *data, uint8_t *out,
		   size_t len, size_t wchunk, size_t rchunk, struct flow *flow)
{
	uint8_t *moved[2] = { malloc(wchunk), malloc(wchunk) };
	size_t sent = 0, got = 0, n;
	unsigned flip = 0;
	bool retry = false;

	cr_assert(moved[0] && moved[1]);
	while (got < len) {
		bool tx_blocked = false, rx_blocked = false;

		while (sent < len) {
			size_t offer = len - sent < wchunk ? len - sent : wchunk;
			const uint8_t *from = data + sent;
			enum tls_status st;

			if (retry) {
				from = moved[flip++ % 2];
				memcpy((uint8_t *)from, data + sent, offer);
				flow->moved_retries++;
			}
			st = tls_write(tx->c, from, offer, &n);
			retry = st == TLS_WANT_WRITE;
			if (st == TLS_WANT_WRITE) {
				flow->want_writes++;
				tx_blocked = true;
				break;
			}
			cr_assert_eq(st, TLS_OK, "write: %s", tls_conn_error(tx->c));
			cr_assert_gt(n, 0);
			if (n < offer)
				flow->partial_writes++;
			sent += n;
		}
		while (got < len) {
			size_t ask = len - got < rchunk ? len - got : rchunk;
			enum tls_status st = tls_read(rx->c, out + got, ask, &n);

			if (st == TLS_WANT_READ) {
				rx_blocked = true;
				break;
			}
			cr_assert_eq(st, TLS_OK, "read: %s", tls_conn_error(rx->c));
			got += n;
		}
		if (got < len && tx_blocked && rx_blocked) {
			struct pollfd pfd[2] = {
				{ .fd = tx->fd, .events = POLLOUT },
				{ .fd = rx->fd, .events = POLLIN },
			};

			cr_assert_gt(poll(pfd, 2, STUCK_MS), 0, "stuck at %zu of %zu", got, len);
		}
	}
	free(moved[0]);
	free(moved[1]);
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
}

Test(tls, one_mebibyte_each_way_with_partial_writes_and_moving_buffers)
{
	const size_t len = 1024 * 1024;
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_CA, "ca.crt", NULL, NULL);
	uint8_t *data = malloc(len), *out = malloc(len);
	int small = 16 * 1024;
	struct pair p;

	cr_assert(data && out);
	fill_pattern(data, len, 42);
	pair_open(&p, cctx, "localhost", sctx);
	/* A small socket buffer: writes block often. */
	cr_assert_eq(setsockopt(p.cli.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	cr_assert_eq(setsockopt(p.srv.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
	assert_handshake_ok(&p);

	for (int dir = 0; dir < 2; dir++) {
		struct side *tx = dir ? &p.srv : &p.cli, *rx = dir ? &p.cli : &p.srv;
		struct flow flow = { 0 };

		memset(out, 0, len);
		stream(tx, rx, data, out, len, 64 * 1024, 3000, &flow);
		cr_assert_eq(memcmp(data, out, len), 0, "bytes differ (direction %d)", dir);
		cr_assert_gt(flow.partial_writes, 0, "no partial write was seen");
		cr_assert_gt(flow.want_writes, 0, "the socket never filled up");
		cr_assert_eq(flow.moved_retries, flow.want_writes);
	}

	free(data);
	free(out);
	pair_close(&p);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

Test(tls, pending_bytes_are_readable_without_a_socket_edge)
{
	const size_t record = 16 * 1024;	/* one full TLS record */
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_NONE, NULL, NULL, NULL);
	uint8_t *data = malloc(record), *out = malloc(record), peek;
	size_t got, n;
	struct pollfd pfd;
	struct pair p;

	cr_assert(data && out);
	fill_pattern(data, record, 7);
	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	send_all(&p.srv, data, record);

	pfd = (struct pollfd){ .fd = p.cli.fd, .events = POLLIN };
	cr_assert_gt(poll(&pfd, 1, STUCK_MS), 0);
	cr_assert_eq(tls_read(p.cli.c, out, 100, &got), TLS_OK);
	cr_assert_eq(got, 100);
	/* The whole record left the socket: no edge will come for the rest. */
	cr_assert_eq(recv(p.cli.fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT), -1);
	cr_assert_eq(errno, EAGAIN);
	cr_assert_eq(tls_pending(p.cli.c), record - 100);

	while (tls_pending(p.cli.c)) {
		cr_assert_eq(tls_read(p.cli.c, out + got, 1000, &n), TLS_OK);
		got += n;
	}
	cr_assert_eq(got, record);
	cr_assert_eq(memcmp(data, out, record), 0);
	cr_assert_eq(tls_read(p.cli.c, out, 1, &n), TLS_WANT_READ);

	free(data);
	free(out);
	pair_close(&p);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

/* --- verifying the server ----------------------------------------------------------- */

/* Connects a client of @verify (with the test CA) to a server with @cert. */
static void try_server(struct pair *p, struct tls_ctx **cctx, struct tls_ctx **sctx,
		       enum tls_verify verify, const char *ca, const char *cert, const char *key,
		       const char *name)
{
	*sctx = server_ctx(cert, key, NULL);
	*cctx = client_ctx(verify, ca, NULL, NULL);
	pair_open(p, *cctx, name, *sctx);
	handshake(p);
}

static void done(struct pair *p, struct tls_ctx *cctx, struct tls_ctx *sctx)
{
	pair_close(p);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

Test(tls, verify_none_accepts_a_self_signed_server)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_NONE, NULL, "selfsigned.crt", "selfsigned.key",
		   "db.example.com");
	cr_assert_eq(p.cli.last, TLS_OK, "%s", tls_conn_error(p.cli.c));
	cr_assert_eq(p.srv.last, TLS_OK);
	cr_assert_not(tls_peer_verified(p.cli.c), "an unverified server counts as verified");
	done(&p, cctx, sctx);
}

Test(tls, verify_ca_accepts_the_right_ca_whatever_the_name)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_CA, "ca.crt", "server.crt", "server.key",
		   "db.example.com");
	cr_assert_eq(p.cli.last, TLS_OK, "%s", tls_conn_error(p.cli.c));
	cr_assert_eq(p.srv.last, TLS_OK);
	cr_assert(tls_peer_verified(p.cli.c));
	done(&p, cctx, sctx);
}

Test(tls, verify_ca_refuses_a_foreign_ca_with_a_clear_error)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_CA, "ca.crt", "foreign-server.crt",
		   "foreign-server.key", "localhost");
	cr_assert_eq(p.cli.last, TLS_ERROR);
	assert_error_mentions(p.cli.c, "certificate verify failed");
	assert_error_mentions(p.cli.c, "unable to get local issuer certificate");
	/* The client's alert reaches the server. */
	cr_assert_eq(p.srv.last, TLS_ERROR);
	assert_error_mentions(p.srv.c, "unknown ca");
	done(&p, cctx, sctx);
}

Test(tls, verify_ca_refuses_a_self_signed_server)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_CA, "ca.crt", "selfsigned.crt", "selfsigned.key",
		   "localhost");
	cr_assert_eq(p.cli.last, TLS_ERROR);
	assert_error_mentions(p.cli.c, "self-signed certificate");
	done(&p, cctx, sctx);
}

Test(tls, verify_ca_refuses_an_expired_certificate)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_CA, "ca.crt", "expired.crt", "expired.key",
		   "localhost");
	cr_assert_eq(p.cli.last, TLS_ERROR);
	assert_error_mentions(p.cli.c, "certificate has expired");
	done(&p, cctx, sctx);
}

Test(tls, verify_full_refuses_a_hostname_mismatch)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_FULL, "ca.crt", "server.crt", "server.key",
		   "db.example.com");
	cr_assert_eq(p.cli.last, TLS_ERROR);
	assert_error_mentions(p.cli.c, "hostname mismatch");
	cr_assert_eq(p.srv.last, TLS_ERROR);
	done(&p, cctx, sctx);
}

Test(tls, verify_full_refuses_an_address_not_in_the_certificate)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_server(&p, &cctx, &sctx, TLS_VERIFY_FULL, "ca.crt", "server.crt", "server.key",
		   "127.0.0.2");
	cr_assert_eq(p.cli.last, TLS_ERROR);
	assert_error_mentions(p.cli.c, "IP address mismatch");
	done(&p, cctx, sctx);
}

Test(tls, verify_full_accepts_the_san_ip_and_the_san_name)
{
	static const char *const names[] = { "127.0.0.1", "localhost", "LOCALHOST" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct tls_ctx *cctx, *sctx;
		struct pair p;

		try_server(&p, &cctx, &sctx, TLS_VERIFY_FULL, "ca.crt", "server.crt", "server.key",
			   names[i]);
		cr_assert_eq(p.cli.last, TLS_OK, "%s: %s", names[i], tls_conn_error(p.cli.c));
		cr_assert_eq(p.srv.last, TLS_OK);
		cr_assert(tls_peer_verified(p.cli.c));
		done(&p, cctx, sctx);
	}
}

Test(tls, verify_full_needs_a_usable_server_name)
{
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_FULL, "ca.crt", NULL, NULL);
	struct tls_conn *c = NULL;
	char err[TLS_ERR_LEN];
	int fds[2];

	socket_pair(fds);
	cr_assert_eq(tls_conn_new(cctx, fds[0], NULL, &c, err, sizeof(err)), -EINVAL);
	cr_assert_null(c);
	cr_assert(strstr(err, "verify-full"), "%s", err);
	cr_assert_eq(tls_conn_new(cctx, fds[0], "[::1]", &c, err, sizeof(err)), -EINVAL);
	cr_assert_eq(tls_conn_new(cctx, fds[0], "", &c, err, sizeof(err)), -EINVAL);
	cr_assert_eq(tls_conn_new(cctx, fds[0], "db\nexample.com", &c, err, sizeof(err)), -EINVAL);
	cr_assert_eq(tls_conn_new(cctx, fds[0], "fe80::1%eth0", &c, err, sizeof(err)), -EINVAL);
	cr_assert_eq(tls_conn_new(cctx, fds[0], "::1", &c, err, sizeof(err)), 0, "%s", err);
	tls_conn_free(c);
	close(fds[0]);
	close(fds[1]);
	tls_ctx_free(cctx);
}

Test(tls, server_connection_takes_no_server_name)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_conn *c = NULL;
	char err[TLS_ERR_LEN];
	int fds[2];

	socket_pair(fds);
	cr_assert_eq(tls_conn_new(sctx, fds[0], "localhost", &c, err, sizeof(err)), -EINVAL);
	close(fds[0]);
	close(fds[1]);
	tls_ctx_free(sctx);
}

/* --- mutual TLS -------------------------------------------------------------------- */

/* A server requiring certificates from the test CA, and a client with
 * @cert/@key (NULL: none) that verifies the server. */
static void try_client(struct pair *p, struct tls_ctx **cctx, struct tls_ctx **sctx,
		       const char *cert, const char *key)
{
	*sctx = server_ctx("server.crt", "server.key", "ca.crt");
	*cctx = client_ctx(TLS_VERIFY_FULL, "ca.crt", cert, key);
	pair_open(p, *cctx, "localhost", *sctx);
	handshake(p);
}

/* Under TLS 1.3 the client finishes first; the server's refusal comes as
 * an alert on the client's first read. */
static void assert_client_refused(struct pair *p, const char *server_says, const char *client_says)
{
	cr_assert_eq(p->srv.last, TLS_ERROR, "server: %s", tls_status_name(p->srv.last));
	assert_error_mentions(p->srv.c, server_says);
	cr_assert_not(tls_peer_verified(p->srv.c));
	cr_assert_eq(read_until_end(&p->cli), TLS_ERROR);
	assert_error_mentions(p->cli.c, client_says);
}

Test(tls, mtls_refuses_a_client_without_certificate)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_client(&p, &cctx, &sctx, NULL, NULL);
	assert_client_refused(&p, "peer did not return a certificate", "certificate required");
	done(&p, cctx, sctx);
}

Test(tls, mtls_refuses_a_client_from_a_foreign_ca)
{
	struct tls_ctx *cctx, *sctx;
	struct pair p;

	try_client(&p, &cctx, &sctx, "foreign-client.crt", "foreign-client.key");
	assert_client_refused(&p, "unable to get local issuer certificate", "unknown ca");
	done(&p, cctx, sctx);
}

static void cert_fingerprint(const char *file, uint8_t out[TLS_SHA256_LEN])
{
	FILE *f = fopen(fx_path(file), "r");
	X509 *cert = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
	unsigned int n = 0;

	cr_assert(cert, "cannot read %s", file);
	cr_assert(X509_digest(cert, EVP_sha256(), out, &n));
	cr_assert_eq(n, TLS_SHA256_LEN);
	X509_free(cert);
	fclose(f);
}

Test(tls, mtls_accepts_the_right_client_and_names_it)
{
	uint8_t want[TLS_SHA256_LEN], got[TLS_SHA256_LEN];
	struct tls_ctx *cctx, *sctx;
	char cn[64], subject[256], tiny[4];
	struct pair p;

	try_client(&p, &cctx, &sctx, "client.crt", "client.key");
	cr_assert_eq(p.cli.last, TLS_OK, "%s", tls_conn_error(p.cli.c));
	cr_assert_eq(p.srv.last, TLS_OK, "%s", tls_conn_error(p.srv.c));
	send_all(&p.cli, "batch", 5);
	expect_bytes(&p.srv, "batch", 5);

	cr_assert(tls_peer_verified(p.srv.c));
	cr_assert_eq(tls_peer_subject_cn(p.srv.c, cn, sizeof(cn)), 0);
	cr_assert_str_eq(cn, "agent-7");
	cr_assert_eq(tls_peer_subject_cn(p.srv.c, tiny, sizeof(tiny)), -ENOSPC);
	cr_assert_eq(tls_peer_subject(p.srv.c, subject, sizeof(subject)), 0);
	cr_assert_str_eq(subject, "CN=agent-7,O=dbward tests");
	cert_fingerprint("client.crt", want);
	cr_assert_eq(tls_peer_fingerprint_sha256(p.srv.c, got), 0);
	cr_assert_arr_eq(got, want, TLS_SHA256_LEN);
	/* And the client sees the server. */
	cr_assert_eq(tls_peer_subject_cn(p.cli.c, cn, sizeof(cn)), 0);
	cr_assert_str_eq(cn, "localhost");
	done(&p, cctx, sctx);
}

Test(tls, peer_without_certificate_has_no_identity)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_NONE, NULL, NULL, NULL);
	uint8_t fp[TLS_SHA256_LEN];
	char cn[64];
	struct pair p;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	cr_assert_not(tls_peer_verified(p.srv.c));
	cr_assert_eq(tls_peer_subject_cn(p.srv.c, cn, sizeof(cn)), -ENOENT);
	cr_assert_eq(tls_peer_subject(p.srv.c, cn, sizeof(cn)), -ENOENT);
	cr_assert_eq(tls_peer_fingerprint_sha256(p.srv.c, fp), -ENOENT);
	done(&p, cctx, sctx);
}

Test(tls, client_certificate_with_two_common_names_gives_no_identity)
{
	struct tls_ctx *cctx, *sctx;
	char cn[64];
	struct pair p;

	try_client(&p, &cctx, &sctx, "two-cn-client.crt", "two-cn-client.key");
	cr_assert_eq(p.srv.last, TLS_OK, "%s", tls_conn_error(p.srv.c));
	cr_assert_eq(tls_peer_subject_cn(p.srv.c, cn, sizeof(cn)), -EINVAL);
	done(&p, cctx, sctx);
}

/* --- ends of a stream ------------------------------------------------------------------ */

Test(tls, close_notify_is_a_clean_eof)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_CA, "ca.crt", NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	send_all(&p.cli, "last words", 10);
	cr_assert_eq(tls_shutdown(p.cli.c), TLS_OK);
	cr_assert_eq(tls_shutdown(p.cli.c), TLS_OK, "a second shutdown is harmless");
	expect_bytes(&p.srv, "last words", 10);
	cr_assert_eq(read_until_end(&p.srv), TLS_EOF);
	cr_assert_str_eq(tls_conn_error(p.srv.c), "");
	/* Still EOF when asked again. */
	cr_assert_eq(read_until_end(&p.srv), TLS_EOF);
	cr_assert_eq(tls_shutdown(p.srv.c), TLS_OK);
	cr_assert_eq(read_until_end(&p.cli), TLS_EOF);
	done(&p, cctx, sctx);
}

Test(tls, tcp_close_without_close_notify_is_a_truncation)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_CA, "ca.crt", NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	send_all(&p.cli, "DELETE FROM t WHERE id = 1", 26);
	close(p.cli.fd);	/* no close_notify: the stream may be cut */
	p.cli.fd = -1;
	expect_bytes(&p.srv, "DELETE FROM t WHERE id = 1", 26);
	cr_assert_eq(read_until_end(&p.srv), TLS_TRUNCATED);
	assert_error_mentions(p.srv.c, "without close_notify");
	/* Sticky, and nothing more is sent. */
	cr_assert_eq(read_until_end(&p.srv), TLS_TRUNCATED);
	cr_assert_eq(tls_shutdown(p.srv.c), TLS_OK);
	done(&p, cctx, sctx);
}

Test(tls, half_close_without_close_notify_is_a_truncation)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_NONE, NULL, NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	cr_assert_eq(shutdown(p.srv.fd, SHUT_WR), 0);
	cr_assert_eq(read_until_end(&p.cli), TLS_TRUNCATED);
	done(&p, cctx, sctx);
}

Test(tls, eof_during_the_handshake_is_a_truncation)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct pair p;

	pair_open(&p, NULL, NULL, sctx);
	cr_assert_eq(send(p.cli.fd, "\x16\x03\x01", 3, 0), 3);	/* a ClientHello's start */
	close(p.cli.fd);
	p.cli.fd = -1;
	cr_assert_eq(tls_handshake(p.srv.c), TLS_TRUNCATED);
	assert_error_mentions(p.srv.c, "during the handshake");
	cr_assert_eq(tls_shutdown(p.srv.c), TLS_OK);
	pair_close(&p);
	tls_ctx_free(sctx);
}

Test(tls, write_to_a_closed_peer_is_an_error_not_sigpipe)
{
	static const uint8_t chunk[4096];
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_NONE, NULL, NULL, NULL);
	enum tls_status st = TLS_OK;
	struct pair p;
	size_t n;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	side_close(&p.srv);
	for (int i = 0; i < 100 && st == TLS_OK; i++)
		st = tls_write(p.cli.c, chunk, sizeof(chunk), &n);
	cr_assert_eq(st, TLS_ERROR);
	assert_error_mentions(p.cli.c, "Broken pipe");
	cr_assert_eq(tls_write(p.cli.c, chunk, sizeof(chunk), &n), TLS_ERROR, "not sticky");
	cr_assert_eq(tls_shutdown(p.cli.c), TLS_OK);
	pair_close(&p);
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}

/* --- bad input ------------------------------------------------------------------ */

Test(tls, garbage_instead_of_a_client_hello_is_an_error)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: db\r\n\r\n";
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct pair p;

	pair_open(&p, NULL, NULL, sctx);
	cr_assert_eq(send(p.cli.fd, http, sizeof(http) - 1, 0), (ssize_t)sizeof(http) - 1);
	cr_assert_eq(tls_handshake(p.srv.c), TLS_ERROR);
	cr_assert_neq(tls_conn_error(p.srv.c)[0], '\0');
	cr_assert_eq(tls_handshake(p.srv.c), TLS_ERROR, "not sticky");
	pair_close(&p);
	tls_ctx_free(sctx);
}

Test(tls, random_bytes_instead_of_a_client_hello_are_an_error)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	uint8_t junk[600];

	for (uint32_t seed = 1; seed <= 20; seed++) {
		struct pair p;
		enum tls_status st;

		fill_pattern(junk, sizeof(junk), seed);
		junk[0] = 0x16;		/* looks like a handshake record, once */
		if (seed % 2)
			junk[1] = 0x03;
		pair_open(&p, NULL, NULL, sctx);
		cr_assert_eq(send(p.cli.fd, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
		shutdown(p.cli.fd, SHUT_WR);
		st = tls_handshake(p.srv.c);
		cr_assert(st == TLS_ERROR || st == TLS_TRUNCATED, "seed %u: %s", seed,
			  tls_status_name(st));
		pair_close(&p);
	}
	tls_ctx_free(sctx);
}

Test(tls, garbage_record_after_the_handshake_is_an_error)
{
	static const uint8_t forged[] = { 0x17, 0x03, 0x03, 0x00, 0x20, 1, 2, 3, 4, 5, 6, 7, 8,
					  9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
					  22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_NONE, NULL, NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, NULL, sctx);
	assert_handshake_ok(&p);
	cr_assert_eq(send(p.cli.fd, forged, sizeof(forged), 0), (ssize_t)sizeof(forged));
	cr_assert_eq(read_until_end(&p.srv), TLS_ERROR);
	assert_error_mentions(p.srv.c, "TLS read: ");
	done(&p, cctx, sctx);
}

/* --- protocol floor ------------------------------------------------------------ */

/* A raw OpenSSL client pinned to one protocol version. */
static void raw_client(struct pair *p, struct tls_ctx *sctx, int version, SSL_CTX **raw_ctx)
{
	int fds[2];
	char err[TLS_ERR_LEN];

	memset(p, 0, sizeof(*p));
	socket_pair(fds);
	p->cli.fd = fds[0];
	p->srv.fd = fds[1];
	p->cli.last = p->srv.last = TLS_WANT_READ;
	*raw_ctx = SSL_CTX_new(TLS_client_method());
	cr_assert(*raw_ctx);
	SSL_CTX_set_security_level(*raw_ctx, 0);	/* let it try old versions */
	cr_assert(SSL_CTX_set_min_proto_version(*raw_ctx, version));
	cr_assert(SSL_CTX_set_max_proto_version(*raw_ctx, version));
	if (version < TLS1_2_VERSION)
		cr_assert(SSL_CTX_set_cipher_list(*raw_ctx, "DEFAULT:@SECLEVEL=0"));
	p->cli.raw = SSL_new(*raw_ctx);
	cr_assert(p->cli.raw);
	cr_assert(SSL_set_fd(p->cli.raw, p->cli.fd));
	SSL_set_connect_state(p->cli.raw);
	cr_assert_eq(tls_conn_new(sctx, p->srv.fd, NULL, &p->srv.c, err, sizeof(err)), 0);
}

Test(tls, tls12_client_is_accepted)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	SSL_CTX *raw_ctx;
	struct pair p;

	raw_client(&p, sctx, TLS1_2_VERSION, &raw_ctx);
	handshake(&p);
	cr_assert_eq(p.cli.last, TLS_OK);
	cr_assert_eq(p.srv.last, TLS_OK, "%s", tls_conn_error(p.srv.c));
	cr_assert_str_eq(tls_version(p.srv.c), "TLSv1.2");
	pair_close(&p);
	SSL_CTX_free(raw_ctx);
	tls_ctx_free(sctx);
}

Test(tls, tls11_client_is_refused)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	SSL_CTX *raw_ctx;
	struct pair p;

	raw_client(&p, sctx, TLS1_1_VERSION, &raw_ctx);
	handshake(&p);
	cr_assert_eq(p.cli.last, TLS_ERROR);
	cr_assert_eq(p.srv.last, TLS_ERROR);
	assert_error_mentions(p.srv.c, "unsupported protocol");
	pair_close(&p);
	SSL_CTX_free(raw_ctx);
	tls_ctx_free(sctx);
}

Test(tls, tls12_renegotiation_is_refused)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	SSL_CTX *raw_ctx;
	struct pair p;

	raw_client(&p, sctx, TLS1_2_VERSION, &raw_ctx);
	handshake(&p);
	cr_assert_eq(p.srv.last, TLS_OK, "%s", tls_conn_error(p.srv.c));
	cr_assert(SSL_renegotiate(p.cli.raw));
	p.cli.last = raw_handshake(p.cli.raw);		/* sends a new ClientHello */
	cr_assert_eq(p.cli.last, TLS_WANT_READ);
	/* The server answers with a no_renegotiation alert, and the client gives up. */
	for (int i = 0; i < 10 && p.cli.last == TLS_WANT_READ; i++) {
		uint8_t buf[64];
		size_t n;
		struct pollfd pfd = { .fd = p.srv.fd, .events = POLLIN };

		poll(&pfd, 1, 100);
		tls_read(p.srv.c, buf, sizeof(buf), &n);
		p.cli.last = raw_handshake(p.cli.raw);
	}
	cr_assert_eq(p.cli.last, TLS_ERROR);
	pair_close(&p);
	SSL_CTX_free(raw_ctx);
	tls_ctx_free(sctx);
}

/* --- contexts from bad files ------------------------------------------------------- */

static void assert_server_refused(const char *cert, const char *key, const char *client_ca,
				  const char *words1, const char *words2)
{
	struct tls_server_opts opts = {
		.cert_file = cert ? fx_path(cert) : NULL,
		.key_file = key ? fx_path(key) : NULL,
		.client_ca_file = client_ca ? fx_path(client_ca) : NULL,
	};
	struct tls_ctx *ctx = (struct tls_ctx *)&opts;	/* must be reset to NULL */
	char err[TLS_ERR_LEN] = "";

	cr_assert_eq(tls_ctx_new_server(&opts, &ctx, err, sizeof(err)), -EINVAL);
	cr_assert_null(ctx);
	cr_assert(strstr(err, words1), "'%s' does not say '%s'", err, words1);
	if (words2)
		cr_assert(strstr(err, words2), "'%s' does not say '%s'", err, words2);
}

Test(tls, missing_certificate_file_is_named)
{
	assert_server_refused("nope.crt", "server.key", NULL, "nope.crt",
			      "No such file or directory");
}

Test(tls, missing_key_file_is_named)
{
	assert_server_refused("server.crt", "nope.key", NULL, "nope.key", "No such file");
}

Test(tls, file_without_a_certificate_is_named)
{
	assert_server_refused("empty.pem", "server.key", NULL, "empty.pem", NULL);
}

Test(tls, key_not_matching_the_certificate_is_named)
{
	assert_server_refused("server.crt", "client.key", NULL, "client.key", "key values mismatch");
}

Test(tls, encrypted_key_is_refused_without_a_prompt)
{
	assert_server_refused("server.crt", "encrypted.key", NULL, "encrypted.key", NULL);
}

Test(tls, missing_client_ca_file_is_named)
{
	assert_server_refused("server.crt", "server.key", "nope-ca.crt", "nope-ca.crt", NULL);
}

Test(tls, server_without_certificate_is_refused)
{
	assert_server_refused(NULL, "server.key", NULL, "certificate and a key", NULL);
}

static void assert_client_opts_refused(const struct tls_client_opts *opts, const char *words)
{
	struct tls_ctx *ctx;
	char err[TLS_ERR_LEN] = "";

	cr_assert_eq(tls_ctx_new_client(opts, &ctx, err, sizeof(err)), -EINVAL);
	cr_assert_null(ctx);
	cr_assert(strstr(err, words), "'%s' does not say '%s'", err, words);
}

Test(tls, client_option_mistakes_are_refused)
{
	struct tls_client_opts no_ca = { .verify = TLS_VERIFY_CA };
	struct tls_client_opts full_no_ca = { .verify = TLS_VERIFY_FULL, .ca_file = "" };
	struct tls_client_opts cert_no_key = {
		.verify = TLS_VERIFY_NONE, .cert_file = fx_path("client.crt"),
	};
	struct tls_client_opts missing_ca = {
		.verify = TLS_VERIFY_CA, .ca_file = fx_path("nope-ca.crt"),
	};
	struct tls_client_opts bad_mode = { .verify = (enum tls_verify)7 };

	assert_client_opts_refused(&no_ca, "CA file");
	assert_client_opts_refused(&full_no_ca, "CA file");
	assert_client_opts_refused(&cert_no_key, "needs its key");
	assert_client_opts_refused(&missing_ca, "nope-ca.crt");
	assert_client_opts_refused(&bad_mode, "verify mode");
}

Test(tls, connections_outlive_their_context)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", NULL);
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_FULL, "ca.crt", NULL, NULL);
	struct pair p;

	pair_open(&p, cctx, "localhost", sctx);
	/* A config reload frees the old contexts under live connections. */
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
	assert_handshake_ok(&p);
	send_all(&p.srv, "still here", 10);
	expect_bytes(&p.cli, "still here", 10);
	pair_close(&p);
}

/* --- threads ----------------------------------------------------------------------- */

struct loop_args {
	struct tls_ctx *cctx;
	struct tls_ctx *sctx;
	int failures;
};

/* One event loop's worth of connections; no Criterion asserts off the
 * main thread, failures are counted instead. */
static void *loop_thread(void *arg)
{
	struct loop_args *a = arg;

	for (int i = 0; i < 25; i++) {
		struct pair p = { .cli.fd = -1, .srv.fd = -1 };
		char err[TLS_ERR_LEN], cn[64];
		int fds[2];
		size_t n;
		uint8_t b[4];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) < 0) {
			a->failures++;
			continue;
		}
		p.cli.fd = fds[0];
		p.srv.fd = fds[1];
		p.cli.last = p.srv.last = TLS_WANT_READ;
		if (tls_conn_new(a->cctx, p.cli.fd, "127.0.0.1", &p.cli.c, err, sizeof(err)) ||
		    tls_conn_new(a->sctx, p.srv.fd, NULL, &p.srv.c, err, sizeof(err))) {
			a->failures++;
			pair_close(&p);
			continue;
		}
		handshake(&p);
		if (p.cli.last != TLS_OK || p.srv.last != TLS_OK ||
		    tls_write(p.cli.c, "ping", 4, &n) != TLS_OK ||
		    tls_peer_subject_cn(p.srv.c, cn, sizeof(cn)) || strcmp(cn, "agent-7"))
			a->failures++;
		else if (tls_read(p.srv.c, b, sizeof(b), &n) != TLS_OK || n != 4 ||
			 memcmp(b, "ping", 4))
			a->failures++;
		pair_close(&p);
	}
	return NULL;
}

Test(tls, contexts_are_shared_by_event_loop_threads)
{
	struct tls_ctx *sctx = server_ctx("server.crt", "server.key", "ca.crt");
	struct tls_ctx *cctx = client_ctx(TLS_VERIFY_FULL, "ca.crt", "client.crt", "client.key");
	struct loop_args args[4];
	pthread_t threads[4];

	for (int i = 0; i < 4; i++) {
		args[i] = (struct loop_args){ .cctx = cctx, .sctx = sctx };
		cr_assert_eq(pthread_create(&threads[i], NULL, loop_thread, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		cr_assert_eq(args[i].failures, 0, "thread %d: %d failures", i, args[i].failures);
	}
	tls_ctx_free(cctx);
	tls_ctx_free(sctx);
}
