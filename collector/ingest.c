#include "collector/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "collector/batch.h"
#include "collector/listener.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/wire.h"

#define POLL_SLICE_MS 200		/* how often a waiting thread looks at stopping */
#define HANDSHAKE_TIMEOUT_MS 10000
#define FRAME_IDLE_TIMEOUT_MS 60000	/* no byte for this long inside a frame */
#define ACK_TIMEOUT_MS 5000
#define AGENT_IDLE_TIMEOUT_MS (15u * 60 * 1000)	/* between frames; the agent reconnects */
#define MAX_CONNECTIONS 1024		/* agent connections at once */
/* Not yet authenticated: anonymous peers cannot take the agents' slots. */
#define MAX_HANDSHAKES 64
#define MAX_HANDSHAKES_PER_ADDR 8
#define REFUSED_LOG_INTERVAL_NS 1000000000ull
#define CONN_STACK_SIZE (1u << 20)
#define AGENT_NAME_MAX 256

struct ingest {
	struct ingest_opts opts;
	struct batch_ctx batch;
	int listen_fd;
	pthread_t accept_thread;
	bool accept_running;
	bool stopping;			/* atomic */

	pthread_mutex_t lock;
	pthread_cond_t ended_cond;	/* signalled when a connection thread ends */
	unsigned live;			/* connection threads not yet joined */
	unsigned n_ended;		/* of them, those whose work is done */
	/*
	 * Joined, not detached: a thread's exit runs OpenSSL's per-thread
	 * cleanup, and a process must not exit before that is over.
	 */
	pthread_t ended[MAX_CONNECTIONS];
	unsigned handshaking;		/* of them, still in the TLS handshake */
	struct netaddr handshake_addrs[MAX_HANDSHAKES];	/* their peers (port 0) */

	uint64_t refused_log_ns;	/* accept thread only: rate-limits the log */
	uint64_t refused_unlogged;

	uint64_t batches_accepted;	/* atomic; for the logs */
	uint64_t batches_refused;
};

struct agent_conn {
	struct ingest *ing;
	int fd;
	struct netaddr addr;		/* the peer, port 0 */
	bool handshaking;		/* holds a handshake slot */
	struct tls_conn *tls;
	char peer[NETADDR_STRLEN];	/* the remote address */
	char name[AGENT_NAME_MAX];	/* the certificate's CN: the agent id */
	const char *why;		/* why the connection ended, for the log */
	uint64_t accepted, refused;
};

enum io_result {
	IO_OK,
	IO_CLOSED,			/* the peer closed: before the handshake ended, or
					 * between frames */
	IO_FAILED,			/* conn->why says how */
	IO_STOPPED,			/* the collector is stopping */
};

static bool ingest_stopping(const struct ingest *ing)
{
	return __atomic_load_n(&ing->stopping, __ATOMIC_ACQUIRE);
}

/* --- waiting for the socket ------------------------------------------------- */

/*
 * Waits until the socket can do what @st asks for. @deadline_ns 0: no
 * deadline. @stoppable: give up when the collector is stopping.
 */
static enum io_result conn_wait(struct agent_conn *c, enum tls_status st, uint64_t deadline_ns,
				bool stoppable)
{
	struct pollfd pfd = { .fd = c->fd, .events = st == TLS_WANT_WRITE ? POLLOUT : POLLIN };

	for (;;) {
		int n;

		if (stoppable && ingest_stopping(c->ing))
			return IO_STOPPED;
		if (deadline_ns && clock_monotonic_ns() >= deadline_ns) {
			c->why = "timed out";
			return IO_FAILED;
		}
		n = poll(&pfd, 1, POLL_SLICE_MS);
		if (n > 0)
			return IO_OK;
		if (n < 0 && errno != EINTR) {
			c->why = "poll failed";
			return IO_FAILED;
		}
	}
}

static uint64_t deadline_after(unsigned ms)
{
	return clock_monotonic_ns() + (uint64_t)ms * 1000000u;
}

static enum io_result conn_failed(struct agent_conn *c, enum tls_status st, const char *what)
{
	const char *detail = tls_conn_error(c->tls);

	if (st == TLS_EOF || st == TLS_TRUNCATED)
		c->why = what;
	else
		c->why = detail[0] ? detail : tls_status_name(st);
	return IO_FAILED;
}

/* --- the TLS stream --------------------------------------------------------- */

static enum io_result conn_handshake(struct agent_conn *c)
{
	uint64_t deadline = deadline_after(HANDSHAKE_TIMEOUT_MS);

	for (;;) {
		enum tls_status st = tls_handshake(c->tls);
		enum io_result r;

		if (st == TLS_OK)
			return IO_OK;
		if (st == TLS_EOF || st == TLS_TRUNCATED)
			return IO_CLOSED;	/* a port probe, a health check */
		if (st != TLS_WANT_READ && st != TLS_WANT_WRITE)
			return conn_failed(c, st, "failed");
		if ((r = conn_wait(c, st, deadline, true)) != IO_OK)
			return r;
	}
}

/*
 * Reads exactly @len bytes. @frame_start: this is the first byte of a
 * frame, where an agent may stay idle up to AGENT_IDLE_TIMEOUT_MS and a
 * close is clean; inside a frame every byte must come within the frame
 * timeout.
 */
static enum io_result conn_read(struct agent_conn *c, void *buf, size_t len, bool frame_start)
{
	uint64_t deadline = deadline_after(frame_start ? AGENT_IDLE_TIMEOUT_MS
						       : FRAME_IDLE_TIMEOUT_MS);
	size_t got = 0;

	while (got < len) {
		size_t n = 0;
		enum tls_status st = tls_read(c->tls, (uint8_t *)buf + got, len - got, &n);
		enum io_result r;

		if (st == TLS_OK) {
			got += n;
			deadline = deadline_after(FRAME_IDLE_TIMEOUT_MS);
			continue;
		}
		if ((st == TLS_EOF || st == TLS_TRUNCATED) && frame_start && got == 0)
			return IO_CLOSED;
		if (st != TLS_WANT_READ && st != TLS_WANT_WRITE)
			return conn_failed(c, st, "closed in the middle of a frame");
		if ((r = conn_wait(c, st, deadline, true)) != IO_OK)
			return r;
	}
	return IO_OK;
}

/* Not stoppable: an ack for a stored batch is worth a short wait. */
static enum io_result conn_write(struct agent_conn *c, const uint8_t *buf, size_t len)
{
	uint64_t deadline = deadline_after(ACK_TIMEOUT_MS);
	size_t done = 0;

	while (done < len) {
		size_t n = 0;
		enum tls_status st = tls_write(c->tls, buf + done, len - done, &n);
		enum io_result r;

		if (st == TLS_OK) {
			done += n;
			continue;
		}
		if (st != TLS_WANT_READ && st != TLS_WANT_WRITE)
			return conn_failed(c, st, "closed before the ack");
		if ((r = conn_wait(c, st, deadline, false)) != IO_OK)
			return r;
	}
	return IO_OK;
}

/* --- batches ---------------------------------------------------------------- */

static enum io_result conn_answer(struct agent_conn *c, const struct batch_result *res)
{
	uint8_t *frame = NULL;
	size_t len;
	enum io_result r;

	if (res->ok) {
		c->accepted++;
		__atomic_add_fetch(&c->ing->batches_accepted, 1, __ATOMIC_RELAXED);
		log_debug("agent %s: batch of %zu event(s) stored: %" PRIu32 " new, %" PRIu32
			  " duplicate(s), epoch %" PRIu64 ", acked_seq %" PRIu64, c->name,
			  res->events, res->stored.accepted, res->stored.duplicates,
			  res->stored.epoch, res->stored.acked_seq);
	} else {
		c->refused++;
		__atomic_add_fetch(&c->ing->batches_refused, 1, __ATOMIC_RELAXED);
		log_warn("collector: agent %s: batch refused: %s", c->name, res->error);
	}
	if (batch_ack_frame(res, &frame, &len) < 0) {
		c->why = "out of memory for the ack";
		return IO_FAILED;
	}
	r = conn_write(c, frame, len);
	free(frame);
	return r;
}

/* A frame we cannot take apart: answered, then the connection ends. */
static enum io_result conn_refuse_framing(struct agent_conn *c, const char *reason)
{
	struct batch_result res = { 0 };
	enum io_result r;

	batch_refuse(&res, "%s", reason);
	r = conn_answer(c, &res);
	if (r == IO_OK)
		c->why = "closed after a framing error";
	return r == IO_OK ? IO_FAILED : r;
}

static enum io_result conn_check_header(struct agent_conn *c, const uint8_t head[WIRE_HEADER_LEN],
					size_t *payload_len)
{
	uint32_t length = (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
			  (uint32_t)head[2] << 8 | head[3];
	uint32_t max = c->ing->opts.max_batch_bytes;
	char reason[BATCH_ERR_LEN];
	uint8_t type;
	int rc = wire_parse_header(head, &type, payload_len);

	if (rc == -EMSGSIZE || (rc == 0 && *payload_len > max)) {
		snprintf(reason, sizeof(reason), "frame of %" PRIu32 " bytes exceeds "
			 "limits.max_batch_bytes (%" PRIu32 ")", length - 1, max);
		return conn_refuse_framing(c, reason);
	}
	if (rc < 0 || type != WIRE_BATCH) {
		snprintf(reason, sizeof(reason), "bad frame header (length %" PRIu32
			 ", type 0x%02x): expected a batch", length, head[4]);
		return conn_refuse_framing(c, reason);
	}
	return IO_OK;
}

/* One frame in, one ack out. */
static enum io_result conn_next_batch(struct agent_conn *c)
{
	uint8_t head[WIRE_HEADER_LEN];
	struct batch_result res;
	uint8_t *payload;
	size_t len;
	enum io_result r;

	if ((r = conn_read(c, head, sizeof(head), true)) != IO_OK)
		return r;
	if ((r = conn_check_header(c, head, &len)) != IO_OK)
		return r;
	payload = malloc(len ? len : 1);
	if (!payload) {
		c->why = "out of memory for a frame";
		return IO_FAILED;
	}
	r = conn_read(c, payload, len, false);
	if (r == IO_OK) {
		batch_ingest(&c->ing->batch, c->name, payload, len, &res);
		free(payload);
		payload = NULL;
		r = conn_answer(c, &res);
	}
	free(payload);
	return r;
}

/* --- the handshake budget ------------------------------------------------------ */

static unsigned handshakes_from(const struct ingest *ing, const struct netaddr *addr)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ing->handshaking; i++)
		n += memcmp(ing->handshake_addrs[i].ip, addr->ip, sizeof(addr->ip)) == 0;
	return n;
}

/* Under ing->lock: takes a handshake slot for @c, or says why not. */
static const char *handshake_take(struct ingest *ing, struct agent_conn *c)
{
	if (ing->handshaking >= MAX_HANDSHAKES)
		return "too many connections in the TLS handshake";
	if (handshakes_from(ing, &c->addr) >= MAX_HANDSHAKES_PER_ADDR)
		return "too many connections in the TLS handshake from that address";
	ing->handshake_addrs[ing->handshaking++] = c->addr;
	c->handshaking = true;
	return NULL;
}

static void handshake_release(struct agent_conn *c)
{
	struct ingest *ing = c->ing;

	if (!c->handshaking)
		return;
	pthread_mutex_lock(&ing->lock);
	for (unsigned i = 0; i < ing->handshaking; i++) {
		if (memcmp(ing->handshake_addrs[i].ip, c->addr.ip, sizeof(c->addr.ip)) == 0) {
			ing->handshake_addrs[i] = ing->handshake_addrs[--ing->handshaking];
			break;
		}
	}
	pthread_mutex_unlock(&ing->lock);
	c->handshaking = false;
}

/* --- a connection's life ------------------------------------------------------- */

/* The handshake and the agent's name from its verified certificate. */
static int conn_authenticate(struct agent_conn *c)
{
	enum io_result r = conn_handshake(c);
	int rc;

	handshake_release(c);

	if (r == IO_STOPPED)
		return -1;
	if (r == IO_CLOSED) {
		log_info("collector: %s closed the connection during the TLS handshake", c->peer);
		return -1;
	}
	if (r != IO_OK) {
		log_warn("collector: TLS handshake from %s failed: %s", c->peer, c->why);
		return -1;
	}
	if (!tls_peer_verified(c->tls)) {
		log_warn("collector: %s presented no verified client certificate", c->peer);
		return -1;
	}
	rc = tls_peer_subject_cn(c->tls, c->name, sizeof(c->name));
	if (rc < 0) {
		log_warn("collector: %s: the client certificate names no usable agent (CN: %s)",
			 c->peer, strerror(-rc));
		return -1;
	}
	log_info("agent %s connected from %s (%s, %s)", c->name, c->peer, tls_version(c->tls),
		 tls_cipher(c->tls));
	return 0;
}

static void conn_serve(struct agent_conn *c)
{
	enum io_result r;

	if (conn_authenticate(c) < 0)
		return;
	while ((r = conn_next_batch(c)) == IO_OK)
		;
	if (r == IO_CLOSED)
		c->why = "closed by the agent";
	else if (r == IO_STOPPED)
		c->why = "collector stopping";
	log_info("agent %s disconnected from %s: %s; %" PRIu64 " batch(es) accepted, %" PRIu64
		 " refused", c->name, c->peer, c->why ? c->why : "?", c->accepted, c->refused);
}

static void conn_close(struct agent_conn *c)
{
	if (c->tls)
		tls_shutdown(c->tls);
	tls_conn_free(c->tls);
	close(c->fd);
	free(c);
}

static void *conn_main(void *arg)
{
	struct agent_conn *c = arg;
	struct ingest *ing = c->ing;

	pthread_setname_np(pthread_self(), "dbward-ingest");
	conn_serve(c);
	conn_close(c);
	pthread_mutex_lock(&ing->lock);
	ing->ended[ing->n_ended++] = pthread_self();
	pthread_cond_broadcast(&ing->ended_cond);
	pthread_mutex_unlock(&ing->lock);
	return NULL;
}

/* Joins the connection threads that have ended; with @all, waits for every one. */
static void conn_reap(struct ingest *ing, bool all)
{
	pthread_t thread;

	pthread_mutex_lock(&ing->lock);
	while (ing->n_ended > 0 || (all && ing->live > 0)) {
		if (ing->n_ended == 0) {
			pthread_cond_wait(&ing->ended_cond, &ing->lock);
			continue;
		}
		thread = ing->ended[--ing->n_ended];
		pthread_mutex_unlock(&ing->lock);
		pthread_join(thread, NULL);
		pthread_mutex_lock(&ing->lock);
		ing->live--;
	}
	pthread_mutex_unlock(&ing->lock);
}

/* --- accepting ----------------------------------------------------------------- */

static int conn_new(struct ingest *ing, int fd, const struct sockaddr *sa, struct agent_conn **out)
{
	char err[TLS_ERR_LEN];
	struct agent_conn *c = calloc(1, sizeof(*c));
	struct netaddr addr;

	if (!c)
		return -ENOMEM;
	c->ing = ing;
	c->fd = fd;
	if (netaddr_from_sockaddr(sa, &addr) == 0) {
		netaddr_format(&addr, c->peer, sizeof(c->peer));
		c->addr = addr;
		c->addr.port = 0;
	} else {
		snprintf(c->peer, sizeof(c->peer), "?");
	}
	if (tls_conn_new(ing->opts.tls, fd, NULL, &c->tls, err, sizeof(err)) < 0) {
		log_error("collector: TLS for %s: %s", c->peer, err);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

#define STR_(x) #x
#define STR(x) STR_(x)

/* A flood of refusals is one line a second, saying how many it stands for. */
static void refused_log(struct ingest *ing, const char *peer, const char *why)
{
	uint64_t now = clock_monotonic_ns();

	if (ing->refused_log_ns && now - ing->refused_log_ns < REFUSED_LOG_INTERVAL_NS) {
		ing->refused_unlogged++;
		return;
	}
	log_warn("collector: %s closed at accept: %s (%" PRIu64 " more refused since the last "
		 "such line)", peer, why, ing->refused_unlogged);
	ing->refused_log_ns = now;
	ing->refused_unlogged = 0;
}

/* Starts a thread for @c, which then owns it. */
static int conn_spawn(struct ingest *ing, struct agent_conn *c)
{
	pthread_attr_t attr;
	pthread_t thread;
	int err;

	const char *why = NULL;

	pthread_mutex_lock(&ing->lock);
	if (ing->live >= MAX_CONNECTIONS)
		why = "agent connections at their limit (" STR(MAX_CONNECTIONS) ")";
	else
		why = handshake_take(ing, c);
	if (!why)
		ing->live++;
	pthread_mutex_unlock(&ing->lock);
	if (why) {
		refused_log(ing, c->peer, why);
		return -EAGAIN;
	}

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
	err = pthread_create(&thread, &attr, conn_main, c);
	pthread_attr_destroy(&attr);
	if (err) {
		log_error("collector: no thread for %s: %s", c->peer, strerror(err));
		handshake_release(c);
		pthread_mutex_lock(&ing->lock);
		ing->live--;
		pthread_mutex_unlock(&ing->lock);
		return -err;
	}
	return 0;
}

static void accept_one(struct ingest *ing)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct agent_conn *c;
	int fd = accept4(ing->listen_fd, (struct sockaddr *)&ss, &sslen,
			 SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		log_warn("collector: accept: %s", strerror(errno));
		/* Out of descriptors or memory: let connections end first. */
		nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000000L }, NULL);
		return;
	}
	if (conn_new(ing, fd, (struct sockaddr *)&ss, &c) < 0) {
		close(fd);
		return;
	}
	if (conn_spawn(ing, c) < 0)
		conn_close(c);
}

static void *accept_main(void *arg)
{
	struct ingest *ing = arg;
	struct pollfd pfd = { .fd = ing->listen_fd, .events = POLLIN };

	pthread_setname_np(pthread_self(), "dbward-accept");
	while (!ingest_stopping(ing)) {
		int ready = poll(&pfd, 1, POLL_SLICE_MS);

		conn_reap(ing, false);	/* first: an ended thread gives back its slot */
		if (ready > 0)
			accept_one(ing);
	}
	return NULL;
}

/* --- start and stop ------------------------------------------------------------- */

int ingest_start(const struct ingest_opts *opts, struct ingest **out, char *err, size_t errlen)
{
	struct ingest *ing = calloc(1, sizeof(*ing));
	char addr[NETADDR_STRLEN];
	int rc;

	if (!ing) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ing->opts = *opts;
	ing->batch = (struct batch_ctx){
		.store = opts->store, .key = opts->key, .max_events = opts->max_batch_events,
	};
	ing->listen_fd = -1;
	pthread_mutex_init(&ing->lock, NULL);
	pthread_cond_init(&ing->ended_cond, NULL);
	rc = listener_open(&opts->listen, &ing->listen_fd);
	if (rc < 0) {
		netaddr_format(&opts->listen, addr, sizeof(addr));
		snprintf(err, errlen, "listen %s: %s", addr, strerror(-rc));
		goto fail;
	}
	rc = pthread_create(&ing->accept_thread, NULL, accept_main, ing);
	if (rc) {
		snprintf(err, errlen, "accept thread: %s", strerror(rc));
		goto fail;
	}
	ing->accept_running = true;
	*out = ing;
	return 0;
fail:
	ingest_stop(ing);
	return -1;
}

void ingest_address(const struct ingest *ing, char *buf, size_t len)
{
	listener_address(ing->listen_fd, buf, len);
}

void ingest_stop(struct ingest *ing)
{
	if (!ing)
		return;
	__atomic_store_n(&ing->stopping, true, __ATOMIC_RELEASE);
	if (ing->accept_running)
		pthread_join(ing->accept_thread, NULL);
	if (ing->listen_fd >= 0)
		close(ing->listen_fd);
	conn_reap(ing, true);
	if (ing->accept_running)
		log_info("ingest stopped: %" PRIu64 " batch(es) accepted, %" PRIu64 " refused",
			 ing->batches_accepted, ing->batches_refused);
	pthread_cond_destroy(&ing->ended_cond);
	pthread_mutex_destroy(&ing->lock);
	free(ing);
}
