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
#include "agent/pg_frame.h"
#include "agent/pg_msg.h"
#include "agent/pg_startup.h"
#include "agent/policy.h"
#include "agent/session.h"
#include "agent/track.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/tls.h"

/* Rounds of work one connection may do before others get a turn. */
#define CONN_PUMP_BUDGET 16
/* Input read and dropped after an error before closing regardless. */
#define CONN_DRAIN_MAX (64u << 20)
/* How long the client may take to close after our error. */
#define CONN_CLOSING_NS (5ull * 1000000000ull)
/* Staged events past this are committed at once, not at the end of the
 * turn, so that a burst of big statements holds no more memory than that. */
#define CONN_BATCH_MAX (1u << 20)

enum conn_state {
	CONN_READ_STARTUP,	/* reading the client's first packet */
	CONN_CLIENT_TLS,	/* answered 'S'; TLS handshake with the client */
	CONN_CONNECTING,	/* upstream connect() in progress */
	CONN_UPSTREAM_SSL,	/* sent SSLRequest upstream; want its one byte */
	CONN_UPSTREAM_TLS,	/* TLS handshake with the server */
	CONN_SESSION,		/* messages flow both ways, framed */
	CONN_CLOSING,		/* sending our ErrorResponse, then close */
	CONN_CLOSED,		/* waiting to be freed at the end of the round */
};

static const char *const state_names[] = {
	[CONN_READ_STARTUP] = "read_startup",
	[CONN_CLIENT_TLS] = "client_tls",
	[CONN_CONNECTING] = "connecting",
	[CONN_UPSTREAM_SSL] = "upstream_ssl",
	[CONN_UPSTREAM_TLS] = "upstream_tls",
	[CONN_SESSION] = "session",
	[CONN_CLOSING] = "closing",
	[CONN_CLOSED] = "closed",
};

struct conn {
	struct worker *w;
	enum conn_state state;
	struct endpoint client;
	struct endpoint server;
	struct pg_frame up;		/* client → server */
	struct pg_frame down;		/* server → client */
	struct pg_startup startup;	/* the packet at the head of up.buf */
	uint32_t target_index;		/* which configured target it matched */
	uint64_t origin_cookie;		/* its origin record's key, forgotten at free */
	uint64_t drained;		/* CLOSING: client bytes dropped */
	uint64_t closing_since_ns;	/* CLOSING: when it began */
	struct session sess;
	struct track track;		/* statements in flight */
	struct policy_subject subject;	/* who is asking, for the policy */
	uint8_t standin[512];		/* a denied statement's stand-in Query */
	uint64_t now_ns;		/* this pump round's clock */
	int audit_err;			/* an event of this connection was not stored */
	size_t audit_mark;		/* ... and the server's bytes before it */
	bool audit_refuse;		/* ... found by the last commit: refuse now */
	/* Events staged in w->audit, not yet committed: until they are,
	 * nothing more of this connection is sent either way. */
	unsigned uncommitted;
	struct conn *next_staged;	/* w->staged */
	bool refused_full;		/* the denied batch was refused: spool full */
	bool unrecorded;		/* refused while the spool was full: no events */
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

static void commit_early(struct conn *c);
static void refuse_unrecorded(struct conn *c);

/*
 * Keeps @it (NULL: out of memory) for the loop's next commit. While the
 * connection lives it owns the event: the commit tells it how the event
 * fared, and until then it sends nothing, so an answer never leaves
 * before its event is in the spool. @mark: how much of the server's
 * bytes may still go to the client if the event is not stored.
 */
static void staged(struct conn *c, struct audit_item *it, bool may_wait)
{
	if (!it) {
		if (!c->audit_err)
			c->audit_err = -ENOMEM;
		return;
	}
	/* A closed connection's last events: nobody waits for them. */
	if (c->state != CONN_CLOSED) {
		it->owner = c;
		it->mark = c->down.approved;
		it->may_wait = may_wait;
		if (!c->uncommitted++) {
			c->next_staged = c->w->staged;
			c->w->staged = c;
		}
	}
	if (c->w->audit.len > CONN_BATCH_MAX)
		commit_early(c);
}

static void emit_open_once(struct conn *c)
{
	struct audit_batch *b = &c->w->audit;

	if (c->open_emitted)
		return;
	c->open_emitted = true;
	/* An open may wait in memory (full spool): what the connection then
	 * tries to run is refused; a CancelRequest still goes through. */
	if (c->w->agent->audit)
		staged(c, session_stage_open(b, &c->sess), true);
}

/* A closed connection's staged events are committed without it. */
static void disown_staged(struct conn *c)
{
	struct audit_batch *b = &c->w->audit;
	struct conn **p = &c->w->staged;

	if (!c->uncommitted)
		return;
	for (size_t i = 0; i < b->n; i++)
		if (b->items[i].owner == c)
			b->items[i].owner = NULL;
	while (*p && *p != c)
		p = &(*p)->next_staged;
	if (*p)
		*p = c->next_staged;
	c->uncommitted = 0;
}

/* Why a connection whose event could not be stored is closed. */
static const char *audit_failure(const struct conn *c)
{
	return c->audit_err == AUDIT_WAITING ? AUDIT_FULL_WAITING
	       : c->audit_err == -ENOBUFS    ? AUDIT_FULL_CLOSED
	       : "dbward: an audit event could not be recorded: connection closed so that "
		 "nothing runs unrecorded";
}

static void close_endpoint(struct worker *w, struct endpoint *ep)
{
	if (ep->fd < 0)
		return;
	if (ep->tls) {
		tls_shutdown(ep->tls);	/* best effort close_notify */
		tls_conn_free(ep->tls);
		ep->tls = NULL;
	}
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
		conn_log(LOG_LEVEL_INFO, c, "connection ends: %s", c->sess.error);
	set_state(c, CONN_CLOSED);
	disown_staged(c);
	/* While the spool is full, a connection that never had a session
	 * leaves no events, only a count: nothing can make memory grow. */
	if (!c->open_emitted && !c->unrecorded && !audit_accepting(w->agent->audit)) {
		c->unrecorded = true;
		audit_refused_connection(w->agent->audit);
	}
	if (!c->unrecorded) {
		emit_open_once(c);
		track_abandon(&c->track, clock_monotonic_ns());
		if (w->agent->audit)
			staged(c, session_stage_close(&w->audit, &c->sess), false);
	}

	close_endpoint(w, &c->server);
	if (c->client.fd >= 0)
		discard_client_input(c);
	close_endpoint(w, &c->client);
	pg_frame_release(&c->up, &w->bufs);
	pg_frame_release(&c->down, &w->bufs);
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

/* Queues bytes of our own for the client, behind what is approved. */
static int reply(struct conn *c, const uint8_t *msg, size_t len)
{
	struct pg_frame *d = &c->down;

	if (!d->buf && !(d->buf = iobuf_get(&c->w->bufs)))
		return -ENOMEM;
	if (iobuf_len(d->buf) != d->approved || iobuf_reserve(&c->w->bufs, &d->buf, d->approved + len) < 0)
		return -ENOMEM;
	memcpy(d->buf->data + d->buf->end, msg, len);
	d->buf->end += len;
	d->approved += len;
	return 0;
}

/*
 * Answers the client with a FATAL ErrorResponse and closes after it. Whole
 * messages the server sent still reach the client first; when one is cut
 * in the middle nothing more can be said, and the connection just ends.
 */
static void conn_reject(struct conn *c, const char *sqlstate, const char *message)
{
	struct worker *w = c->w;
	struct pg_frame *d = &c->down;
	uint8_t err[512];
	size_t len = pg_build_error(err, sizeof(err), "FATAL", sqlstate, message, NULL, NULL);

	c->sess.error = message;
	close_endpoint(w, &c->server);
	pg_frame_release(&c->up, &w->bufs);
	if (d->pass_left) {
		conn_finish(c, message);
		return;
	}
	if (d->buf)
		d->buf->end = d->buf->start + d->approved;	/* drop the unscanned */
	if (!len || reply(c, err, len) < 0) {
		conn_finish(c, message);
		return;
	}
	c->closing_since_ns = clock_monotonic_ns();
	set_state(c, CONN_CLOSING);
}

/* --- moving bytes ------------------------------------------------------- */

#define IO_BLOCKED (-2)

/*
 * One send or receive on an endpoint, plain or TLS. Returns bytes moved,
 * 0 for the end of the stream (receive only), IO_BLOCKED, or -1 with
 * *why set. Keeps the endpoint's readiness flags: plaintext, a short
 * transfer means the socket is used up until the next edge; with TLS only
 * WANT_* says so, and a record may need the other direction first.
 */
static ssize_t ep_recv(struct endpoint *ep, void *buf, size_t len, const char **why)
{
	ssize_t n;
	size_t got;

	if (!ep->tls) {
		n = recv(ep->fd, buf, len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			ep->can_read = errno == EINTR;
			return IO_BLOCKED;
		}
		if (n < 0)
			*why = strerror(errno);
		else if (n > 0 && (size_t)n < len && !ep->peer_closed)
			ep->can_read = false;
		return n;
	}
	switch (tls_read(ep->tls, buf, len, &got)) {
	case TLS_OK:
		return (ssize_t)got;
	case TLS_WANT_READ:
		ep->can_read = false;
		return IO_BLOCKED;
	case TLS_WANT_WRITE:
		ep->can_read = false;
		ep->read_wants_write = true;
		return IO_BLOCKED;
	case TLS_EOF:
	case TLS_TRUNCATED:	/* libpq often closes without close_notify */
		return 0;
	default:
		*why = tls_conn_error(ep->tls);
		return -1;
	}
}

static ssize_t ep_send(struct endpoint *ep, const void *buf, size_t len, const char **why)
{
	ssize_t n;
	size_t put;

	if (!ep->tls) {
		n = send(ep->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			ep->can_write = errno == EINTR;
			return IO_BLOCKED;
		}
		if (n < 0)
			*why = strerror(errno);
		else if ((size_t)n < len)
			ep->can_write = false;
		return n;
	}
	switch (tls_write(ep->tls, buf, len, &put)) {
	case TLS_OK:
		return (ssize_t)put;
	case TLS_WANT_WRITE:
		ep->can_write = false;
		return IO_BLOCKED;
	case TLS_WANT_READ:
		ep->can_write = false;
		ep->write_wants_read = true;
		return IO_BLOCKED;
	default:
		*why = tls_conn_error(ep->tls);
		return -1;
	}
}

/* Decrypted bytes may wait inside TLS with no edge to announce them. */
static bool ep_readable(const struct endpoint *ep)
{
	return ep->can_read || (ep->tls && tls_pending(ep->tls) > 0);
}

/* Sends the approved bytes of @f to @dst. Returns bytes sent, 0 when
 * blocked or nothing is approved, -1 when the connection failed (it is
 * then finished). */
static ssize_t flush_to(struct conn *c, struct endpoint *dst, struct pg_frame *f)
{
	const char *why = NULL;
	ssize_t n;

	if (!f->approved || !dst->can_write || c->uncommitted)
		return 0;
	n = ep_send(dst, f->buf->data + f->buf->start, f->approved, &why);
	if (n == IO_BLOCKED)
		return 0;
	if (n < 0) {
		conn_log(LOG_LEVEL_INFO, c, "%s write: %s",
			 dst->kind == ENDPOINT_CLIENT ? "client" : "server", why);
		conn_finish(c, dst->kind == ENDPOINT_CLIENT ? "client write failed"
							    : "server write failed");
		return -1;
	}
	pg_frame_sent(f, (size_t)n, &c->w->bufs);
	return n;
}

/* Reads from @src into @f's buffer, at most @max bytes buffered. Returns
 * bytes read, 0 when nothing was read (blocked, full, or end of stream:
 * see src->eof), -1 on failure. */
static ssize_t fill_from(struct conn *c, struct endpoint *src, struct pg_frame *f, size_t max,
			 uint64_t *counter)
{
	const char *why = NULL;
	struct iobuf *b;
	size_t room;
	ssize_t n;

	if (!ep_readable(src) || src->eof)
		return 0;
	if (!f->buf && !(f->buf = iobuf_get(&c->w->bufs))) {
		conn_finish(c, "out of memory");
		return -1;
	}
	b = f->buf;
	if (!iobuf_room(b))
		iobuf_compact(b);
	room = iobuf_room(b);
	if (iobuf_len(b) + room > max)
		room = max > iobuf_len(b) ? max - iobuf_len(b) : 0;
	if (!room)
		return 0;
	n = ep_recv(src, b->data + b->end, room, &why);
	if (n == IO_BLOCKED)
		return 0;
	if (n < 0) {
		conn_log(LOG_LEVEL_INFO, c, "%s read: %s",
			 src->kind == ENDPOINT_CLIENT ? "client" : "server", why);
		conn_finish(c, src->kind == ENDPOINT_CLIENT ? "client read failed"
							    : "server read failed");
		return -1;
	}
	if (n == 0) {
		src->eof = true;
		return 0;
	}
	b->end += (size_t)n;
	*counter += (uint64_t)n;
	return n;
}

/* --- what each direction holds and looks at ----------------------------- */

/* The statement text is held whole, so it is judged before the server
 * sees it; while a denied batch is discarded, everything is. */
static size_t frontend_hold(void *ctx, uint8_t type, size_t total)
{
	struct conn *c = ctx;

	return c->track.discarding ? total : track_frontend_hold(type, total);
}

/*
 * EXECUTE name runs what was prepared earlier: judge that text. A name the
 * session never showed prepared (say, inside a DO block) cannot be judged
 * and counts as unreadable text.
 */
static void judge_executes(struct conn *c, const struct policy *policy,
			   const struct track_text *text, struct policy_decision *d)
{
	for (size_t i = 0; text->parse.ok && i < text->parse.n_stmts; i++) {
		const char *name = text->parse.stmts[i].execute_name;
		const struct track_text *body;
		struct policy_decision inner;

		if (!name)
			continue;
		body = track_prepared(&c->track, name);
		if (body && body != text) {
			policy_decide(policy, &c->subject, &body->parse, &inner);
		} else if (!body) {
			static const struct sql_parse unknown = { .ok = false };

			policy_decide(policy, &c->subject, &unknown, &inner);
		} else {
			continue;
		}
		if (inner.action == POLICY_DENY) {
			*d = inner;
			d->statement = i;
			return;
		}
	}
}

/* The policy's word on the Query or Parse just fed. */
static enum track_verdict judge(struct conn *c, const char **rule)
{
	const struct policy *policy = __atomic_load_n(&c->w->agent->policy, __ATOMIC_ACQUIRE);
	const struct track_text *text = track_last_text(&c->track);
	struct policy_decision d;

	*rule = NULL;
	/* No rules and allow by default: nothing to judge, not even text the
	 * classifier cannot read (the server's own syntax error is better). */
	if (!text || policy_judges_nothing(policy))
		return TRACK_ALLOW;
	policy_decide(policy, &c->subject, &text->parse, &d);
	if (d.action != POLICY_DENY)
		judge_executes(c, policy, text, &d);
	if (d.action == POLICY_DENY) {
		*rule = d.rule ? d.rule
		      : d.basis == POLICY_BASIS_UNPARSABLE ? "policy.unparsable"
							  : "policy.default_action";
		conn_log(LOG_LEVEL_INFO, c, "denied by rule %s: %.80s", d.rule ? d.rule : "(default)",
			 text->sql);
		return TRACK_DENY;
	}
	if (d.audit_rule) {
		*rule = d.audit_rule;
		return TRACK_AUDIT;
	}
	*rule = d.rule;
	return TRACK_ALLOW;
}

/*
 * A FunctionCall (fast path) names a function by OID with binary
 * arguments: nothing the classifier can read, so it is judged as
 * unreadable text is. With rules or a deny default it is refused, unless
 * policy.unparsable is `forward` (large objects through the fast path).
 */
static enum track_verdict judge_function_call(struct conn *c, const char **rule)
{
	const struct policy *policy = __atomic_load_n(&c->w->agent->policy, __ATOMIC_ACQUIRE);

	*rule = NULL;
	if (policy_judges_nothing(policy) ||
	    policy_settings(policy)->unparsable == POLICY_UNPARSABLE_FORWARD)
		return TRACK_ALLOW;
	*rule = "policy.unparsable";
	conn_log(LOG_LEVEL_INFO, c, "denied by policy.unparsable: a FunctionCall (fast path)");
	return TRACK_DENY;
}

#define SPOOL_FULL_RULE "spool_full"

/* Puts the stand-in Query for a denied statement in place of @msg. */
static enum pg_frame_verdict stand_in(struct conn *c, const char *rule, bool spool_full)
{
	size_t len = spool_full ? pg_build_refusal_query(c->standin, sizeof(c->standin),
							 AUDIT_FULL_SQLSTATE, AUDIT_FULL_STATEMENT,
							 "The statement did not reach the database. "
							 "See the dbward agent log.")
				: pg_build_denial_query(c->standin, sizeof(c->standin), rule);

	if (!len) {
		c->up.error = "internal: denial does not fit";
		return PG_FRAME_ERROR;
	}
	c->up.replacement = c->standin;
	c->up.replacement_len = len;
	return PG_FRAME_REPLACE;
}

static enum pg_frame_verdict frontend_message(void *ctx, uint8_t *msg, size_t have, size_t total,
					      size_t *new_total)
{
	struct conn *c = ctx;
	enum track_verdict verdict;
	const char *rule;
	bool full;

	(void)new_total;
	if (c->track.discarding) {
		/* The server would skip to Sync after a failed Parse/Bind/Execute. */
		char denied_by[64];
		bool was_full = c->refused_full;

		if (msg[0] != 'S')
			return PG_FRAME_DROP;
		snprintf(denied_by, sizeof(denied_by), "%s",
			 c->track.denied_rule ? c->track.denied_rule : "default");
		c->refused_full = false;
		if (track_denied_sync(&c->track, c->now_ns) < 0)
			goto fail;
		return stand_in(c, denied_by, was_full);
	}
	if (track_frontend(&c->track, msg, have, total, c->now_ns) < 0)
		goto fail;
	if (!msg[0] || !strchr("QPBEF", msg[0]))
		return PG_FRAME_FORWARD;
	/* Nothing may run that the audit trail cannot take. */
	full = !audit_accepting(c->w->agent->audit);
	if (full) {
		verdict = TRACK_DENY;
		rule = SPOOL_FULL_RULE;
	} else if (msg[0] == 'Q' || msg[0] == 'P') {
		verdict = judge(c, &rule);
	} else if (msg[0] == 'F') {
		verdict = judge_function_call(c, &rule);
	} else {
		return PG_FRAME_FORWARD;	/* judged at its Parse */
	}
	if (track_set_verdict(&c->track, verdict, rule) < 0)
		goto fail;
	if (verdict != TRACK_DENY)
		return PG_FRAME_FORWARD;
	/* A FunctionCall is answered as a Query is: the stand-in's error
	 * and ReadyForQuery. */
	if (msg[0] == 'Q' || msg[0] == 'F')
		return stand_in(c, rule, full);
	if (track_deny_extended(&c->track, rule) < 0)
		goto fail;
	c->refused_full = full;
	return PG_FRAME_DROP;
fail:
	c->up.error = c->track.error;
	return PG_FRAME_ERROR;
}

static size_t backend_hold(void *ctx, uint8_t type, size_t total)
{
	(void)ctx;
	if (type == 'R')	/* authentication requests: the SASL offer may be rewritten */
		return total;
	return track_backend_hold(type, total);
}

static enum pg_frame_verdict backend_message(void *ctx, uint8_t *msg, size_t have, size_t total,
					     size_t *new_total)
{
	struct conn *c = ctx;

	/* The client's TLS, when it has any, ends here: channel binding
	 * would bind to a session the server never saw. */
	if (msg[0] == 'R' && have == total)
		*new_total = pg_sasl_strip_plus(msg, total);
	/* The stand-in's error must read like any denial, not like PL/pgSQL. */
	if (msg[0] == 'E' && have == total && track_head_denied(&c->track))
		*new_total = pg_error_strip_field(msg, total, 'W');
	if (track_backend(&c->track, msg, have, total, c->now_ns) < 0) {
		c->down.error = c->track.error;
		return PG_FRAME_ERROR;
	}
	/* The answer of a statement the audit trail lost never reaches the client. */
	if (c->audit_err) {
		c->down.error = audit_failure(c);
		return PG_FRAME_ERROR;
	}
	return PG_FRAME_FORWARD;
}

static void report_statement(void *ctx, const struct track_result *r)
{
	struct conn *c = ctx;

	/* Only in memory (full spool): the answer of a statement that ran
	 * must not reach the client; a refusal, which ran nothing, may. */
	if (c->w->agent->audit)
		staged(c, session_stage_statement(&c->w->audit, &c->sess, r),
		       r->verdict == TRACK_DENY);
}

static const struct pg_frame_ops frontend_ops = {
	.type_valid = pg_msg_frontend_type_valid,
	.hold = frontend_hold,
	.on_message = frontend_message,
};

static const struct pg_frame_ops backend_ops = {
	.type_valid = pg_msg_backend_type_valid,
	.hold = backend_hold,
	.on_message = backend_message,
};

/* One direction of a session: send what is approved, read, scan, send. */
static int relay(struct conn *c, struct endpoint *src, struct endpoint *dst, struct pg_frame *f,
		 const struct pg_frame_ops *ops, uint64_t *counter)
{
	ssize_t sent, got, more = 0;
	int err;

	if ((sent = flush_to(c, dst, f)) < 0)
		return -1;
	if ((got = fill_from(c, src, f, SIZE_MAX, counter)) < 0)
		return -1;
	if (got > 0) {
		err = pg_frame_scan(f, ops, c, &c->w->bufs);
		if (err == -ENOMEM) {
			conn_finish(c, "out of memory");
			return -1;
		}
		if (c->audit_refuse || (err < 0 && c->audit_err)) {
			refuse_unrecorded(c);
			return -1;
		}
		if (err < 0) {
			conn_log(LOG_LEVEL_WARN, c, "protocol violation from the %s: %s",
				 src->kind == ENDPOINT_CLIENT ? "client" : "server", f->error);
			if (src->kind == ENDPOINT_CLIENT)
				conn_reject(c, "08P01", f->error);
			else
				conn_reject(c, "08P01", "dbward: protocol violation from the database server");
			return -1;
		}
		if ((more = flush_to(c, dst, f)) < 0)
			return -1;
	}
	return sent > 0 || got > 0 || more > 0;
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

/*
 * An SSLRequest or GSSENCRequest is answered by the agent itself: the
 * client's encryption ends here, and the upstream leg has its own. 'S'
 * when the agent has a certificate, 'N' otherwise; GSS encryption is never
 * offered (the agent cannot see into it).
 */
static bool answer_encryption_request(struct conn *c)
{
	bool tls = c->startup.kind == PG_STARTUP_SSL_REQUEST && c->w->agent->client_tls;
	uint8_t answer = tls ? 'S' : 'N';

	if (c->client.tls) {
		conn_reject(c, "08P01", "encryption requested twice");
		return true;
	}
	if (pg_frame_unscanned(&c->up) > c->startup.length) {
		/* Bytes behind the request would be read as if they had come
		 * after the answer, outside any encryption (CVE-2021-23214). */
		conn_reject(c, "08P01", "unexpected data after an encryption request");
		return true;
	}
	pg_frame_release(&c->up, &c->w->bufs);
	if (reply(c, &answer, 1) < 0) {
		conn_finish(c, "out of memory");
		return false;
	}
	if (tls)
		set_state(c, CONN_CLIENT_TLS);
	return true;
}

/* Drives a handshake. Returns 1 when done, 0 while waiting, -1 on failure. */
static int handshake(struct endpoint *ep)
{
	switch (tls_handshake(ep->tls)) {
	case TLS_OK:
		return 1;
	case TLS_WANT_READ:
		ep->can_read = false;
		return 0;
	case TLS_WANT_WRITE:
		ep->can_write = false;
		return 0;
	default:
		return -1;
	}
}

static bool step_client_tls(struct conn *c)
{
	char err[256];
	int done;

	if (c->down.approved) {			/* the 'S', in plaintext */
		if (flush_to(c, &c->client, &c->down) < 0)
			return false;
		if (c->down.approved)
			return false;
	}
	if (!c->client.tls &&
	    tls_conn_new(c->w->agent->client_tls, c->client.fd, NULL, &c->client.tls, err, sizeof(err)) < 0) {
		conn_log(LOG_LEVEL_WARN, c, "client TLS: %s", err);
		conn_finish(c, "client TLS setup failed");
		return false;
	}
	done = handshake(&c->client);
	if (done < 0) {
		conn_log(LOG_LEVEL_INFO, c, "client TLS handshake: %s", tls_conn_error(c->client.tls));
		conn_finish(c, "client TLS handshake failed");
		return false;
	}
	if (!done)
		return false;
	c->sess.encrypted = true;
	set_state(c, CONN_READ_STARTUP);
	return true;
}

static bool start_upstream_encryption(struct conn *c);

/* Who is asking, for the policy: fixed once the startup packet is read. */
static void subject_fill(struct conn *c)
{
	const struct identity *id = &c->sess.who;
	struct policy_subject *who = &c->subject;

	memset(who, 0, sizeof(*who));
	if (c->sess.attributed) {
		who->has_uid = true;
		who->uid = id->uid;
		who->gid = id->gid;
		who->comm = id->comm;
		who->exe = id->exe;
		who->user = id->user;
		who->cgroup_path = id->cgroup_path;
		who->container_id = id->ids.container_id[0] ? id->ids.container_id : NULL;
		who->pod_uid = id->ids.pod_uid[0] ? id->ids.pod_uid : NULL;
	}
	who->db_user = c->sess.db_user;
	who->database = c->sess.database;
	who->application_name = c->sess.application_name;
	who->client = &c->sess.client;
}

static bool start_session(struct conn *c)
{
	/* The startup packet goes on as it came; framing starts behind it. */
	c->up.approved = c->startup.length;
	subject_fill(c);
	if (c->startup.kind == PG_STARTUP_CANCEL)
		c->sess.cancel_request = true;
	emit_open_once(c);
	if (c->audit_err) {
		refuse_unrecorded(c);
		return true;
	}
	set_state(c, CONN_SESSION);
	if (pg_frame_scan(&c->up, &frontend_ops, c, &c->w->bufs) < 0) {
		conn_reject(c, "08P01", c->up.error ? c->up.error : "out of memory");
		return true;
	}
	return true;
}

static bool step_read_startup(struct conn *c)
{
	struct pg_startup *st = &c->startup;
	ssize_t got;
	int err;

	if (flush_to(c, &c->client, &c->down) < 0)	/* a pending 'N' */
		return false;
	got = fill_from(c, &c->client, &c->up, PG_STARTUP_MAX_LEN, &c->sess.client_bytes);
	if (got < 0)
		return false;
	if (!pg_frame_unscanned(&c->up)) {
		if (c->client.eof)
			conn_finish(c, "client closed before the startup packet");
		return got > 0;
	}
	switch (pg_startup_parse(c->up.buf->data + c->up.buf->start, pg_frame_unscanned(&c->up), st)) {
	case PG_STARTUP_INCOMPLETE:
		if (c->client.eof)
			conn_reject(c, "08P01", "incomplete startup packet");
		return got > 0 || c->client.eof;
	case PG_STARTUP_INVALID:
		conn_reject(c, "08P01", st->error);
		return true;
	case PG_STARTUP_SSL_REQUEST:
	case PG_STARTUP_GSSENC_REQUEST:
		return answer_encryption_request(c);
	default:
		break;
	}
	if (!c->sess.attributed) {
		conn_reject(c, "08004", "dbward: connection did not arrive through interception");
		return true;
	}
	if (st->kind == PG_STARTUP_MESSAGE) {
		c->sess.db_user = copy_str(st->user);
		c->sess.database = copy_str(st->database);
		c->sess.application_name = copy_str(st->application_name);
	}
	/* A CancelRequest still goes (it only stops what already runs),
	 * unless too much waits in memory already. Refused: no events. */
	if (!audit_accepting(c->w->agent->audit) &&
	    (st->kind == PG_STARTUP_MESSAGE || audit_over_cap(c->w->agent->audit))) {
		c->unrecorded = true;
		audit_refused_connection(c->w->agent->audit);
		conn_reject(c, AUDIT_FULL_SQLSTATE, AUDIT_FULL_CONNECTION);
		return true;
	}
	err = connect_upstream(c);
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
	return start_upstream_encryption(c);
}

static enum config_upstream_tls upstream_mode(const struct conn *c)
{
	const struct agent *agent = c->w->agent;

	if (!agent->upstream_tls || c->target_index >= agent->cfg->n_targets ||
	    !agent->upstream_tls[c->target_index])
		return CONFIG_UPSTREAM_TLS_DISABLE;
	return agent->cfg->targets[c->target_index].upstream_tls;
}

/* A CancelRequest goes in plaintext: the server reads it before any TLS. */
static bool start_upstream_encryption(struct conn *c)
{
	static const uint8_t ssl_request[8] = { 0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f };

	if (c->startup.kind == PG_STARTUP_CANCEL || upstream_mode(c) == CONFIG_UPSTREAM_TLS_DISABLE)
		return start_session(c);
	/* Eight bytes on a fresh socket: the send buffer takes them whole. */
	if (send(c->server.fd, ssl_request, sizeof(ssl_request), MSG_NOSIGNAL) != sizeof(ssl_request)) {
		conn_reject(c, "08006", "dbward: could not send SSLRequest to the database server");
		return true;
	}
	set_state(c, CONN_UPSTREAM_SSL);
	return true;
}

static bool step_upstream_ssl(struct conn *c)
{
	enum config_upstream_tls mode = upstream_mode(c);
	char name[NETADDR_STRLEN], err[256];
	uint8_t answer;
	ssize_t n;

	if (!c->server.can_read)
		return false;
	/* Exactly one byte: anything behind it would be unencrypted (CVE-2021-23222). */
	n = recv(c->server.fd, &answer, 1, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		c->server.can_read = errno == EINTR;
		return false;
	}
	if (n <= 0) {
		conn_reject(c, "08006", "dbward: the database server closed during the SSLRequest");
		return true;
	}
	if (answer == 'N') {
		if (mode == CONFIG_UPSTREAM_TLS_PREFER)
			return start_session(c);
		conn_reject(c, "08006", "dbward: the database server does not accept TLS, "
				      "which upstream_tls requires");
		return true;
	}
	if (answer != 'S') {
		conn_reject(c, "08006", "dbward: unexpected answer to SSLRequest from the database server");
		return true;
	}
	netaddr_format_ip(c->sess.server.ip, name, sizeof(name));
	if (tls_conn_new(c->w->agent->upstream_tls[c->target_index], c->server.fd, name,
			 &c->server.tls, err, sizeof(err)) < 0) {
		conn_log(LOG_LEVEL_WARN, c, "upstream TLS: %s", err);
		conn_reject(c, "08006", "dbward: TLS to the database server failed");
		return true;
	}
	set_state(c, CONN_UPSTREAM_TLS);
	return true;
}

static bool step_upstream_tls(struct conn *c)
{
	int done = handshake(&c->server);

	if (done < 0) {
		conn_log(LOG_LEVEL_WARN, c, "upstream TLS handshake: %s", tls_conn_error(c->server.tls));
		conn_reject(c, "08006", "dbward: TLS to the database server failed");
		return true;
	}
	if (!done)
		return false;
	return start_session(c);
}

static bool step_session(struct conn *c)
{
	int up, down;

	/* A reject moves to CLOSING, which must run now to send the error. */
	up = relay(c, &c->client, &c->server, &c->up, &frontend_ops, &c->sess.client_bytes);
	if (up < 0)
		return c->state == CONN_CLOSING;
	down = relay(c, &c->server, &c->client, &c->down, &backend_ops, &c->sess.server_bytes);
	if (down < 0)
		return c->state == CONN_CLOSING;
	/* Either side ending ends the session once its last bytes are through. */
	if ((c->client.eof && !c->up.approved) || (c->server.eof && !c->down.approved)) {
		if (c->client.eof && (pg_frame_unscanned(&c->up) || c->up.pass_left))
			conn_finish(c, "client closed inside a message");
		else if (c->server.eof && (pg_frame_unscanned(&c->down) || c->down.pass_left))
			conn_reject(c, "08006", "dbward: the database server closed inside a message");
		else
			conn_finish(c, NULL);
		return c->state == CONN_CLOSING;
	}
	return up || down;
}

/*
 * Sends our ErrorResponse, closes our side, then reads and drops what the
 * client still sends until it closes too (or too much arrives): closing
 * with unread input would send a reset, which can destroy the error before
 * the client reads it.
 */
static bool step_closing(struct conn *c)
{
	uint8_t sink[16384];
	ssize_t n;

	if (c->down.approved) {
		if (flush_to(c, &c->client, &c->down) < 0 || c->down.approved)
			return false;
		if (c->client.tls)
			tls_shutdown(c->client.tls);
		shutdown(c->client.fd, SHUT_WR);
	}
	for (;;) {
		if (!c->client.can_read)
			return false;	/* until the client's close arrives */
		n = recv(c->client.fd, sink, sizeof(sink), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->client.can_read = errno == EINTR;
			return false;
		}
		if (n <= 0)
			break;
		c->drained += (uint64_t)n;
		if (c->drained > CONN_DRAIN_MAX)
			break;
	}
	conn_finish(c, NULL);
	return false;
}

static void conn_pump(struct conn *c)
{
	c->now_ns = clock_monotonic_ns();
	/* Its event is not in the spool: the answer must not go. */
	if (c->audit_refuse && c->state != CONN_CLOSED)
		refuse_unrecorded(c);
	for (int round = 0; round < CONN_PUMP_BUDGET; round++) {
		bool progress = false;

		switch (c->state) {
		case CONN_READ_STARTUP:
			progress = step_read_startup(c);
			break;
		case CONN_CLIENT_TLS:
			progress = step_client_tls(c);
			break;
		case CONN_CONNECTING:
			progress = step_connecting(c);
			break;
		case CONN_UPSTREAM_SSL:
			progress = step_upstream_ssl(c);
			break;
		case CONN_UPSTREAM_TLS:
			progress = step_upstream_tls(c);
			break;
		case CONN_SESSION:
			progress = step_session(c);
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

	if (intercept_find_origin(c->w->agent->intercept, c->w->diag_fd, c->client.fd, peer,
				  local, &origin) < 0) {
		conn_log(LOG_LEVEL_WARN, c, "no origin record for this connection");
		return;
	}
	c->sess.attributed = true;
	c->origin_cookie = origin.socket_cookie;
	c->target_index = origin.target_index;
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
	c->up.max_total = agent->cfg->max_message_bytes;
	c->down.max_total = agent->cfg->max_message_bytes;
	session_new_id(c->sess.id);
	track_init(&c->track, report_statement, c);
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
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		ep->peer_closed = true;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		ep->can_read = true;
		if (ep->write_wants_read)
			ep->can_write = true;
		ep->write_wants_read = false;
	}
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
		ep->can_write = true;
		if (ep->read_wants_write)
			ep->can_read = true;
		ep->read_wants_write = false;
	}
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

/* How the commit went for one staged event. */
static void deliver(const struct audit_item *it)
{
	struct conn *c = it->owner;
	int err = it->result;

	if (!c)
		return;
	if (err == AUDIT_WAITING && it->may_wait)
		err = 0;
	if (!err)
		return;
	/* The earliest answer whose event is not stored is where the client's
	 * bytes stop, whatever failed before (staging out of memory, say). */
	if (!c->audit_err)
		c->audit_err = err;
	if (!c->audit_refuse || it->mark < c->audit_mark)
		c->audit_mark = it->mark;
	c->audit_refuse = true;
}

/*
 * The statement's answer never reaches the client when its event is not
 * in the spool: what the server sent before it does, then the error.
 */
static void refuse_unrecorded(struct conn *c)
{
	struct pg_frame *d = &c->down;

	if (c->audit_refuse && d->buf && c->audit_mark < d->approved) {
		d->approved = c->audit_mark;
		d->pass_left = 0;
	}
	c->audit_refuse = false;
	conn_reject(c, AUDIT_FULL_SQLSTATE, audit_failure(c));
}

/* Records the batch and tells each connection how its events fared.
 * Returns the connections that waited (by next_staged), to resume. */
static struct conn *commit_batch(struct worker *w)
{
	struct audit_batch *b = &w->audit;
	struct conn *list = w->staged;

	audit_commit(w->agent->audit, b);
	for (size_t i = 0; i < b->n; i++)
		deliver(&b->items[i]);
	audit_batch_clear(b);
	w->staged = NULL;
	for (struct conn *c = list; c; c = c->next_staged)
		c->uncommitted = 0;
	return list;
}

void conn_commit(struct worker *w)
{
	struct conn *list;

	if (!w->audit.n)
		return;
	/* Each goes on now: what it stages next waits for the next commit. */
	list = commit_batch(w);
	while (list) {
		struct conn *c = list;

		list = c->next_staged;
		conn_pump(c);
	}
}

/*
 * From inside @c's scan (or its end): the batch is recorded now. @c hears
 * of a failure when its scan ends (relay); the others go on, or are
 * refused, in the next round (conn_pump).
 */
static void commit_early(struct conn *c)
{
	struct conn *list = commit_batch(c->w);

	while (list) {
		struct conn *x = list;

		list = x->next_staged;
		if (x != c && !x->in_ready) {
			x->in_ready = true;
			x->next_ready = x->w->ready;
			x->w->ready = x;
		}
	}
}

void conn_free_doomed(struct worker *w)
{
	while (w->doomed) {
		struct conn *c = w->doomed;

		w->doomed = c->next_ready;
		if (c->sess.attributed)
			intercept_forget_origin(w->agent->intercept, c->origin_cookie);
		track_release(&c->track);
		session_release(&c->sess);
		free(c);
	}
}

/* Time since @since; 0 for a moment after @now (accepted this turn). */
static uint64_t age(uint64_t now, uint64_t since)
{
	return now > since ? now - since : 0;
}

void conn_sweep(struct worker *w, uint64_t now_ns)
{
	uint64_t startup_ns = (uint64_t)w->agent->cfg->startup_timeout_ms * 1000000ull;
	struct conn *c = w->conns;

	while (c) {
		struct conn *next = c->next;	/* c may leave the list */

		if (c->state == CONN_CLOSING && age(now_ns, c->closing_since_ns) > CONN_CLOSING_NS) {
			conn_finish(c, NULL);
		} else if (c->state < CONN_SESSION && age(now_ns, c->sess.start_ns) > startup_ns) {
			conn_reject(c, "08006", "dbward: the connection did not start in time");
			conn_pump(c);
		}
		c = next;
	}
}
