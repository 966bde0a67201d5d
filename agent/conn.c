#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/intercept.h"
#include "agent/pg_startup.h"
#include "agent/session.h"
#include "common/clock.h"
#include "common/log.h"

/* Rounds of work one connection may do before others get a turn. */
#define CONN_PUMP_BUDGET 16

enum conn_state {
	CONN_READ_STARTUP,	/* reading the client's first packet */
	CONN_CONNECTING,	/* upstream connect() in progress */
	CONN_WAIT_ENCRYPTION,	/* SSL/GSSENC request sent; want the server's byte */
	CONN_STREAMING,		/* bytes flow both ways */
	CONN_CLOSING,		/* sending our ErrorResponse, then close */
	CONN_CLOSED,		/* waiting to be freed at the end of the round */
};

static const char *const state_names[] = {
	[CONN_READ_STARTUP] = "read_startup",
	[CONN_CONNECTING] = "connecting",
	[CONN_WAIT_ENCRYPTION] = "wait_encryption",
	[CONN_STREAMING] = "streaming",
	[CONN_CLOSING] = "closing",
	[CONN_CLOSED] = "closed",
};

struct conn {
	struct worker *w;
	enum conn_state state;
	struct endpoint client;
	struct endpoint server;
	struct iobuf *to_server;	/* read from the client, not yet sent */
	struct iobuf *to_client;	/* read from the server, not yet sent */
	struct pg_startup startup;	/* the packet at the head of to_server */
	struct session sess;
	bool open_emitted;
	bool in_ready;
	struct conn *prev;		/* w->conns */
	struct conn *next;
	struct conn *next_ready;	/* w->ready or w->doomed */
};

#define conn_log(level, c, fmt, ...) \
	log_at(level, "conn %s %s: " fmt, (c)->sess.id, state_names[(c)->state], ##__VA_ARGS__)

static void set_state(struct conn *c, enum conn_state next)
{
	conn_log(LOG_LEVEL_DEBUG, c, "-> %s", state_names[next]);
	c->state = next;
}

/* --- ending a connection ---------------------------------------------- */

static void emit_open_once(struct conn *c)
{
	if (c->open_emitted)
		return;
	c->open_emitted = true;
	session_emit_open(c->w->agent->audit, &c->sess);
}

static void close_endpoint(struct worker *w, struct endpoint *ep)
{
	if (ep->fd < 0)
		return;
	worker_unwatch(w, ep);
	close(ep->fd);
	ep->fd = -1;
}

/* Reads and drops what the client sent that we will not use, so that the
 * close is a FIN after our ErrorResponse, not a reset that could lose it. */
static void discard_client_input(struct conn *c)
{
	uint8_t sink[4096];

	for (int i = 0; i < 16; i++)
		if (recv(c->client.fd, sink, sizeof(sink), MSG_DONTWAIT) <= 0)
			break;
}

static void conn_finish(struct conn *c, const char *error)
{
	struct worker *w = c->w;

	if (c->state == CONN_CLOSED)
		return;
	if (error && !c->sess.error)
		c->sess.error = error;
	if (c->sess.error)
		conn_log(LOG_LEVEL_INFO, c, "closing: %s", c->sess.error);
	set_state(c, CONN_CLOSED);
	emit_open_once(c);
	session_emit_close(w->agent->audit, &c->sess);

	close_endpoint(w, &c->server);
	if (c->client.fd >= 0)
		discard_client_input(c);
	close_endpoint(w, &c->client);
	iobuf_put(&w->bufs, c->to_server);
	iobuf_put(&w->bufs, c->to_client);
	c->to_server = c->to_client = NULL;
	__atomic_sub_fetch(&w->agent->n_connections, 1, __ATOMIC_RELAXED);

	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	/* Freed after this round: other events of the round may name it. */
	if (!c->in_ready) {
		c->next_ready = w->doomed;
		w->doomed = c;
	}
}

/* Answers the client with a FATAL ErrorResponse and closes after it. */
static void conn_reject(struct conn *c, const char *sqlstate, const char *message)
{
	struct worker *w = c->w;
	struct iobuf *b;

	c->sess.error = message;
	close_endpoint(w, &c->server);
	iobuf_put(&w->bufs, c->to_server);
	c->to_server = NULL;
	iobuf_put(&w->bufs, c->to_client);
	c->to_client = b = iobuf_get(&w->bufs);
	if (!b) {
		conn_finish(c, message);
		return;
	}
	b->end = pg_error_response(b->data, IOBUF_SIZE, sqlstate, message);
	set_state(c, CONN_CLOSING);
}

/* --- moving bytes ------------------------------------------------------- */

/* Sends what @buf holds to @dst. Returns bytes sent, 0 when blocked or
 * empty, -1 when the connection failed (it is then finished). */
static ssize_t flush_to(struct conn *c, struct endpoint *dst, struct iobuf **buf)
{
	struct iobuf *b = *buf;
	size_t len = iobuf_len(b);
	ssize_t n;

	if (!len || !dst->can_write)
		return 0;
	n = send(dst->fd, b->data + b->start, len, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR) {
			dst->can_write = errno == EINTR;
			return 0;
		}
		conn_finish(c, dst->kind == ENDPOINT_CLIENT ? "client write failed"
							    : "server write failed");
		return -1;
	}
	b->start += (size_t)n;
	if ((size_t)n < len)
		dst->can_write = false;	/* the next EPOLLOUT edge says when */
	if (b->start == b->end) {
		iobuf_put(&c->w->bufs, b);
		*buf = NULL;
	}
	return n;
}

/* Reads from @src into @buf. Returns bytes read, 0 when nothing was read
 * (blocked, full, or end of stream: see src->eof), -1 on failure. */
static ssize_t fill_from(struct conn *c, struct endpoint *src, struct iobuf **buf, size_t max,
			 uint64_t *counter)
{
	size_t room;
	ssize_t n;

	if (!src->can_read || src->eof)
		return 0;
	if (!*buf && !(*buf = iobuf_get(&c->w->bufs))) {
		conn_finish(c, "out of memory");
		return -1;
	}
	room = iobuf_room(*buf);
	if (room > max)
		room = max;
	if (!room)
		return 0;
	n = recv(src->fd, (*buf)->data + (*buf)->end, room, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR) {
			src->can_read = errno == EINTR;
			return 0;
		}
		conn_finish(c, src->kind == ENDPOINT_CLIENT ? "client read failed"
							    : "server read failed");
		return -1;
	}
	if (n == 0) {
		src->eof = true;
		return 0;
	}
	(*buf)->end += (size_t)n;
	*counter += (uint64_t)n;
	if ((size_t)n < room)
		src->can_read = false;	/* drained; the next EPOLLIN edge says when */
	return n;
}

/* One direction of the stream: drain what is pending, then read more. */
static int forward(struct conn *c, struct endpoint *src, struct endpoint *dst,
		   struct iobuf **buf, uint64_t *counter)
{
	ssize_t sent = 0, got = 0;

	if (iobuf_len(*buf) && (sent = flush_to(c, dst, buf)) < 0)
		return -1;
	if (!iobuf_len(*buf)) {
		if ((got = fill_from(c, src, buf, SIZE_MAX, counter)) < 0)
			return -1;
		if (got > 0 && flush_to(c, dst, buf) < 0)
			return -1;
	}
	return sent > 0 || got > 0;
}

/* --- the protocol steps ------------------------------------------------ */

static char *copy_str(struct pg_str s)
{
	return s.ptr ? strndup(s.ptr, s.len) : NULL;
}

static int connect_upstream(struct conn *c)
{
	struct agent_config *cfg = c->w->agent->cfg;
	struct sockaddr_storage ss;
	socklen_t sslen = netaddr_to_sockaddr(&c->sess.server, &ss);
	int one = 1;
	int fd;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* The mark is how the BPF programs know not to redirect us again. */
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &cfg->upstream_mark, sizeof(cfg->upstream_mark)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	c->server.fd = fd;
	if (worker_watch(c->w, &c->server) < 0) {
		int err = -errno;

		close(fd);
		c->server.fd = -1;
		return err;
	}
	if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS)
		return -errno;
	return 0;
}

/* The startup packet is whole and valid, and the server is connected. */
static void dispatch_startup(struct conn *c)
{
	switch (c->startup.kind) {
	case PG_STARTUP_SSL_REQUEST:
	case PG_STARTUP_GSSENC_REQUEST:
		/* Bytes behind the request would reach the server before its
		 * answer, outside any encryption (CVE-2021-23214). */
		if (iobuf_len(c->to_server) > c->startup.length) {
			conn_reject(c, "08P01", "unexpected data after an encryption request");
			return;
		}
		set_state(c, CONN_WAIT_ENCRYPTION);
		return;
	case PG_STARTUP_CANCEL:
		c->sess.cancel_request = true;
		break;
	default:
		break;
	}
	emit_open_once(c);
	set_state(c, CONN_STREAMING);
}

static bool step_read_startup(struct conn *c)
{
	struct pg_startup *st = &c->startup;
	ssize_t got;

	if (flush_to(c, &c->client, &c->to_client) < 0)	/* a pending 'N' */
		return false;
	got = fill_from(c, &c->client, &c->to_server, PG_STARTUP_MAX_LEN, &c->sess.client_bytes);
	if (got < 0)
		return false;
	if (!iobuf_len(c->to_server)) {
		if (c->client.eof)
			conn_finish(c, "client closed before the startup packet");
		return got > 0;
	}
	switch (pg_startup_parse(c->to_server->data + c->to_server->start,
				 iobuf_len(c->to_server), st)) {
	case PG_STARTUP_INCOMPLETE:
		if (c->client.eof)
			conn_reject(c, "08P01", "incomplete startup packet");
		return got > 0 || c->client.eof;
	case PG_STARTUP_INVALID:
		conn_reject(c, "08P01", st->error);
		return true;
	default:
		break;
	}
	if (!c->sess.attributed) {
		conn_reject(c, "08004", "dbward: connection did not arrive through interception");
		return true;
	}
	if (st->kind == PG_STARTUP_MESSAGE && !c->sess.db_user) {
		c->sess.db_user = copy_str(st->user);
		c->sess.database = copy_str(st->database);
		c->sess.application_name = copy_str(st->application_name);
	}
	if (c->server.fd >= 0) {		/* a second packet, after 'N' */
		dispatch_startup(c);
		return true;
	}
	int err = connect_upstream(c);

	if (err < 0) {
		conn_log(LOG_LEVEL_WARN, c, "connect upstream: %s", strerror(-err));
		conn_reject(c, "08006", "dbward: could not connect to the database server");
		return true;
	}
	set_state(c, CONN_CONNECTING);
	return true;
}

static bool step_connecting(struct conn *c)
{
	socklen_t len = sizeof(int);
	int err = 0;

	if (!c->server.can_write)
		return false;
	if (getsockopt(c->server.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY) {
		c->server.can_write = false;
		return false;
	}
	if (err) {
		conn_log(LOG_LEVEL_WARN, c, "connect upstream: %s", strerror(err));
		conn_reject(c, "08006", "dbward: could not connect to the database server");
		return true;
	}
	dispatch_startup(c);
	return true;
}

static bool step_wait_encryption(struct conn *c)
{
	uint8_t answer;
	ssize_t n;

	if (iobuf_len(c->to_server))
		return flush_to(c, &c->server, &c->to_server) > 0;
	if (!c->server.can_read)
		return false;
	/* Exactly one byte: what follows it belongs to the next phase. */
	n = recv(c->server.fd, &answer, 1, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		conn_finish(c, "server closed during the encryption request");
		return false;
	}
	if (n < 0) {
		c->server.can_read = errno == EINTR;
		return false;
	}
	c->sess.server_bytes++;
	if (!(c->to_client = iobuf_get(&c->w->bufs))) {
		conn_finish(c, "out of memory");
		return false;
	}
	c->to_client->data[c->to_client->end++] = answer;
	if (answer == 'N') {			/* plaintext: a startup packet follows */
		set_state(c, CONN_READ_STARTUP);
		return true;
	}
	c->sess.encrypted = answer == 'S' || answer == 'G';
	emit_open_once(c);
	set_state(c, CONN_STREAMING);
	return true;
}

static bool step_streaming(struct conn *c)
{
	int up, down;

	up = forward(c, &c->client, &c->server, &c->to_server, &c->sess.client_bytes);
	if (up < 0)
		return false;
	down = forward(c, &c->server, &c->client, &c->to_client, &c->sess.server_bytes);
	if (down < 0)
		return false;
	/* Either side ending ends the session once its last bytes are through. */
	if ((c->client.eof && !iobuf_len(c->to_server)) ||
	    (c->server.eof && !iobuf_len(c->to_client))) {
		conn_finish(c, NULL);
		return false;
	}
	return up || down;
}

static bool step_closing(struct conn *c)
{
	if (flush_to(c, &c->client, &c->to_client) < 0)
		return false;
	if (!iobuf_len(c->to_client) || c->client.eof) {
		conn_finish(c, NULL);
		return false;
	}
	return false;
}

static void conn_pump(struct conn *c)
{
	for (int round = 0; round < CONN_PUMP_BUDGET; round++) {
		bool progress = false;

		switch (c->state) {
		case CONN_READ_STARTUP:
			progress = step_read_startup(c);
			break;
		case CONN_CONNECTING:
			progress = step_connecting(c);
			break;
		case CONN_WAIT_ENCRYPTION:
			progress = step_wait_encryption(c);
			break;
		case CONN_STREAMING:
			progress = step_streaming(c);
			break;
		case CONN_CLOSING:
			progress = step_closing(c);
			break;
		case CONN_CLOSED:
			return;
		}
		if (!progress)
			return;
	}
	if (!c->in_ready) {
		c->in_ready = true;
		c->next_ready = c->w->ready;
		c->w->ready = c;
	}
}

/* --- the loop's entry points ------------------------------------------- */

static void attribute(struct conn *c, const struct netaddr *peer, const struct netaddr *local)
{
	struct intercept_origin origin;
	struct identity *who = &c->sess.who;

	if (intercept_take_origin(c->w->agent->intercept, peer, local, &origin) < 0) {
		conn_log(LOG_LEVEL_WARN, c, "no origin record for this connection");
		return;
	}
	c->sess.attributed = true;
	memcpy(c->sess.server.ip, origin.dst_addr, 16);
	c->sess.server.port = ntohs(origin.dst_port);
	who->pid = origin.who.tgid;
	who->tid = origin.who.pid;
	who->uid = origin.who.uid;
	who->gid = origin.who.gid;
	who->cgroup_id = origin.who.cgroup_id;
	who->netns_cookie = origin.who.netns_cookie;
	who->start_boottime_ns = origin.who.start_boottime_ns;
	memcpy(who->comm, origin.who.comm, sizeof(who->comm));
	who->comm[sizeof(who->comm) - 1] = '\0';
	identity_enrich(who, "/proc");
}

void conn_accept(struct worker *w, int fd, const struct netaddr *peer, const struct netaddr *local)
{
	struct agent *agent = w->agent;
	struct conn *c = calloc(1, sizeof(*c));
	uint32_t open_now;
	int one = 1;

	if (!c) {
		log_error("accept: out of memory");
		close(fd);
		return;
	}
	c->w = w;
	c->client = (struct endpoint){ .fd = fd, .kind = ENDPOINT_CLIENT, .owner = c };
	c->server = (struct endpoint){ .fd = -1, .kind = ENDPOINT_SERVER, .owner = c };
	session_new_id(c->sess.id);
	c->sess.client = *peer;
	c->sess.start_ns = clock_monotonic_ns();
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	open_now = __atomic_add_fetch(&agent->n_connections, 1, __ATOMIC_RELAXED);

	attribute(c, peer, local);
	if (worker_watch(w, &c->client) < 0) {
		conn_finish(c, "cannot watch the client socket");
		return;
	}
	if (open_now > agent->cfg->max_connections)
		conn_reject(c, "53300", "dbward: too many connections through this agent");
	/* An edge-triggered ADD reports what is already readable: the loop
	 * calls conn_on_event next, no need to pump here. */
}

void conn_on_event(struct endpoint *ep, uint32_t events)
{
	struct conn *c = ep->owner;

	if (c->state == CONN_CLOSED)
		return;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		ep->can_read = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		ep->can_write = true;
	conn_pump(c);
}

void conn_run_ready(struct worker *w)
{
	struct conn *list = w->ready;

	w->ready = NULL;
	while (list) {
		struct conn *c = list;

		list = c->next_ready;
		c->in_ready = false;
		if (c->state == CONN_CLOSED) {
			c->next_ready = w->doomed;
			w->doomed = c;
			continue;
		}
		conn_pump(c);
	}
}

void conn_close_all(struct worker *w, const char *why)
{
	while (w->conns)
		conn_finish(w->conns, why);
}

void conn_free_doomed(struct worker *w)
{
	while (w->doomed) {
		struct conn *c = w->doomed;

		w->doomed = c->next_ready;
		session_release(&c->sess);
		free(c);
	}
}
