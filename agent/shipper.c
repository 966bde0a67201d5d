#include "agent/shipper.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/config.h"
#include "agent/spool.h"
#include "common/clock.h"
#include "common/event_json.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/wire.h"
#include "dbward/v1/audit.pb-c.h"

#define MS 1000000ull
#define BATCH_RAW_MAX (1u << 20)	/* one more event may go over it */
#define IO_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define ACK_MAX (64u << 10)
#define ZSTD_LEVEL 3
#define REFUSAL_LOG_EVERY_NS (60000ull * MS)

struct shipper {
	struct audit *audit;
	struct spool *spool;
	struct tls_ctx *tls;
	char *address;
	char host[CONFIG_HOST_LEN];
	uint16_t port;
	uint32_t mark;
	uint32_t batch_max_events;
	uint64_t batch_ns;
	uint64_t fsync_ns;
	uint64_t epoch;

	pthread_t thread;
	int wake_fd;			/* eventfd: shipper_stop() */
	bool stopping;			/* atomic */
	uint64_t drain_until_ns;	/* atomic; set before stopping */

	int fd;				/* -1: not connected */
	struct tls_conn *conn;

	struct spool_cursor cursor;	/* the next event to put in a batch */
	struct spool_buf raw;		/* the batch's events, back to back */
	ProtobufCBinaryData *items;
	size_t n_items, cap_items;
	uint8_t *packed;
	size_t packed_cap;
	uint8_t *frame;			/* compressed batch in flight; NULL: none */
	size_t frame_len;
	uint64_t batch_first, batch_last;
	bool backlog;			/* the last batch stopped at BATCH_RAW_MAX */

	uint64_t last_send_ns;
	uint64_t last_sync_ns;
	uint64_t retry_at_ns;
	unsigned backoff_ms;
	bool ever_acked;
	bool outage;			/* "unreachable" logged, "reachable again" due */
	bool stuck;			/* a corrupt record: nothing ships past it */
	uint64_t stuck_seq;		/* ... at this seq; what is before it still ships */
	char last_refusal[256];
	uint64_t last_refusal_ns;
};

static bool stopping(struct shipper *s)
{
	return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE);
}

/* While draining at shutdown, every wait ends at the drain deadline. */
static uint64_t bound(struct shipper *s, uint64_t deadline_ns)
{
	uint64_t until;

	if (!stopping(s))
		return deadline_ns;
	until = __atomic_load_n(&s->drain_until_ns, __ATOMIC_ACQUIRE);
	return until < deadline_ns ? until : deadline_ns;
}

static int ms_until(uint64_t deadline_ns)
{
	uint64_t now = clock_monotonic_ns();

	if (deadline_ns <= now)
		return 0;
	return (int)((deadline_ns - now + MS - 1) / MS);
}

/* Sleeps until @deadline_ns, or shipper_stop() (which then bounds it). */
static void idle_until(struct shipper *s, uint64_t deadline_ns)
{
	struct pollfd p = { .fd = s->wake_fd, .events = POLLIN };

	/* Once stopping, the eventfd stays readable: just sleep. */
	poll(&p, stopping(s) ? 0 : 1, ms_until(bound(s, deadline_ns)));
}

/* --- the connection ------------------------------------------------------- */

static void disconnect(struct shipper *s)
{
	if (s->conn) {
		tls_shutdown(s->conn);
		tls_conn_free(s->conn);
		s->conn = NULL;
	}
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/* Waits for what a TLS call asked for. 0, or -ETIMEDOUT. */
static int wait_io(struct shipper *s, enum tls_status want, uint64_t deadline_ns)
{
	struct pollfd p = { .fd = s->fd, .events = want == TLS_WANT_WRITE ? POLLOUT : POLLIN };
	int n;

	do {
		n = poll(&p, 1, ms_until(bound(s, deadline_ns)));
	} while (n < 0 && errno == EINTR);
	return n > 0 ? 0 : -ETIMEDOUT;
}

static int connect_one(struct shipper *s, const struct addrinfo *ai, char *why, size_t whylen)
{
	uint64_t deadline = clock_monotonic_ns() + IO_TIMEOUT_MS * MS;
	int one = 1, err = 0;
	socklen_t len = sizeof(err);

	s->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	/* Our own programs must not steer this connection into the agent. */
	if (setsockopt(s->fd, SOL_SOCKET, SO_MARK, &s->mark, sizeof(s->mark)) < 0) {
		snprintf(why, whylen, "SO_MARK: %s", strerror(errno));
		return -1;
	}
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s->fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		return -1;
	}
	if (wait_io(s, TLS_WANT_WRITE, deadline) < 0) {
		snprintf(why, whylen, "connect: timed out");
		return -1;
	}
	if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		snprintf(why, whylen, "connect: %s", strerror(err));
		return -1;
	}
	return 0;
}

static int handshake(struct shipper *s, char *why, size_t whylen)
{
	uint64_t deadline = clock_monotonic_ns() + IO_TIMEOUT_MS * MS;
	char err[TLS_ERR_LEN];

	if (tls_conn_new(s->tls, s->fd, s->host, &s->conn, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "TLS: %s", err);
		return -1;
	}
	for (;;) {
		enum tls_status st = tls_handshake(s->conn);

		if (st == TLS_OK)
			return 0;
		if (st != TLS_WANT_READ && st != TLS_WANT_WRITE) {
			snprintf(why, whylen, "TLS handshake: %s", tls_conn_error(s->conn));
			return -1;
		}
		if (wait_io(s, st, deadline) < 0) {
			snprintf(why, whylen, "TLS handshake: timed out");
			return -1;
		}
	}
}

static int connect_collector(struct shipper *s, char *why, size_t whylen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *list, *ai;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", s->port);
	rc = getaddrinfo(s->host, port, &hints, &list);
	if (rc) {
		snprintf(why, whylen, "resolving %s: %s", s->host, gai_strerror(rc));
		return -1;
	}
	for (ai = list; ai; ai = ai->ai_next) {
		if (connect_one(s, ai, why, whylen) == 0 && handshake(s, why, whylen) == 0)
			break;
		disconnect(s);
		if (stopping(s) && clock_monotonic_ns() >= bound(s, UINT64_MAX))
			break;
	}
	freeaddrinfo(list);
	if (s->fd < 0)
		return -1;
	log_debug("audit: collector %s connected (%s, %s)", s->address, tls_version(s->conn),
		  tls_cipher(s->conn));
	return 0;
}

static int send_all(struct shipper *s, const uint8_t *p, size_t len, uint64_t deadline,
		    char *why, size_t whylen)
{
	while (len > 0) {
		size_t n = 0;
		enum tls_status st = tls_write(s->conn, p, len, &n);

		if (st == TLS_OK) {
			p += n;
			len -= n;
		} else if (st == TLS_WANT_READ || st == TLS_WANT_WRITE) {
			if (wait_io(s, st, deadline) < 0) {
				snprintf(why, whylen, "sending: timed out");
				return -1;
			}
		} else {
			snprintf(why, whylen, "sending: %s", tls_conn_error(s->conn));
			return -1;
		}
	}
	return 0;
}

static int recv_exact(struct shipper *s, uint8_t *p, size_t len, uint64_t deadline,
		      char *why, size_t whylen)
{
	while (len > 0) {
		size_t n = 0;
		enum tls_status st = tls_read(s->conn, p, len, &n);

		if (st == TLS_OK) {
			p += n;
			len -= n;
		} else if (st == TLS_WANT_READ || st == TLS_WANT_WRITE) {
			if (wait_io(s, st, deadline) < 0) {
				snprintf(why, whylen, "waiting for the ack: timed out");
				return -1;
			}
		} else if (st == TLS_EOF || st == TLS_TRUNCATED) {
			snprintf(why, whylen, "the collector closed the connection");
			return -1;
		} else {
			snprintf(why, whylen, "%s", tls_conn_error(s->conn));
			return -1;
		}
	}
	return 0;
}

/* --- batches ---------------------------------------------------------------- */

static void drop_batch(struct shipper *s)
{
	free(s->frame);
	s->frame = NULL;
	s->frame_len = 0;
	s->n_items = 0;
	s->raw.len = 0;
	s->batch_first = s->batch_last = 0;
}

static int add_item(struct shipper *s, size_t len)
{
	if (s->n_items == s->cap_items) {
		size_t cap = s->cap_items ? s->cap_items * 2 : 256;
		ProtobufCBinaryData *items = realloc(s->items, cap * sizeof(*items));

		if (!items)
			return -ENOMEM;
		s->items = items;
		s->cap_items = cap;
	}
	/* Offsets for now: raw.data may move while the batch grows. */
	s->items[s->n_items++] = (ProtobufCBinaryData){ .len = len, .data = NULL };
	return 0;
}

static void report_corrupt(struct shipper *s, const char *what)
{
	if (s->stuck)
		return;		/* read again while resending what precedes it */
	s->stuck = true;
	s->stuck_seq = s->cursor.next_seq;
	log_error("audit: %s. Shipping stops before it and nothing is skipped: later events stay "
		  "in the spool, which fills up and then refuses statements (SQLSTATE "
		  AUDIT_FULL_SQLSTATE "). To recover: stop the agent, move the spool directory aside "
		  "(keep it for inspection) and start the agent, which begins a new epoch", what);
}

/* Reads the next run of events into a compressed frame. 1: a batch is
 * ready, 0: nothing to send, -1: failed (logged). */
static int build_batch(struct shipper *s)
{
	Dbward__V1__Batch batch = DBWARD__V1__BATCH__INIT;
	char err[SPOOL_ERR_LEN];
	size_t packed_len, off = 0;
	uint8_t *compressed;
	size_t compressed_len;
	int rc = 0;

	s->batch_first = s->cursor.next_seq;
	while (s->n_items < s->batch_max_events && s->raw.len < BATCH_RAW_MAX) {
		size_t len;

		rc = spool_read(s->spool, &s->cursor, &s->raw, &len, err, sizeof(err));
		if (rc == 0)
			break;
		if (rc == -EBADMSG) {
			report_corrupt(s, err);
			break;
		}
		if (rc == -ENOENT) {	/* below the oldest segment: acked meanwhile */
			struct spool_info info;

			spool_get_info(s->spool, &info);
			drop_batch(s);
			spool_cursor_seek(s->spool, &s->cursor, info.acked_seq + 1);
			return 0;
		}
		if (rc < 0) {
			log_error("audit: reading the spool: %s", strerror(-rc));
			drop_batch(s);
			return -1;
		}
		if (add_item(s, len) < 0) {
			log_error("audit: out of memory building a batch");
			drop_batch(s);
			spool_cursor_seek(s->spool, &s->cursor, s->batch_first);
			return -1;
		}
	}
	if (!s->n_items)
		return 0;
	s->backlog = s->raw.len >= BATCH_RAW_MAX;
	s->batch_last = s->batch_first + s->n_items - 1;
	for (size_t i = 0; i < s->n_items; i++) {
		s->items[i].data = s->raw.data + off;
		off += s->items[i].len;
	}
	batch.n_events = s->n_items;
	batch.events = s->items;
	packed_len = dbward__v1__batch__get_packed_size(&batch);
	if (packed_len > s->packed_cap) {
		uint8_t *p = realloc(s->packed, packed_len);

		if (!p)
			goto nomem;
		s->packed = p;
		s->packed_cap = packed_len;
	}
	dbward__v1__batch__pack(&batch, s->packed);
	if (wire_compress(s->packed, packed_len, ZSTD_LEVEL, &compressed, &compressed_len) < 0)
		goto nomem;
	if (!(s->frame = malloc(WIRE_HEADER_LEN + compressed_len))) {
		free(compressed);
		goto nomem;
	}
	wire_header(s->frame, WIRE_BATCH, compressed_len);
	memcpy(s->frame + WIRE_HEADER_LEN, compressed, compressed_len);
	free(compressed);
	s->frame_len = WIRE_HEADER_LEN + compressed_len;
	return 1;
nomem:
	log_error("audit: out of memory building a batch");
	spool_cursor_seek(s->spool, &s->cursor, s->batch_first);
	drop_batch(s);
	return -1;
}

/* --- acks ---------------------------------------------------------------- */

static void log_refusal(struct shipper *s, const char *error)
{
	uint64_t now = clock_monotonic_ns();

	if (strncmp(s->last_refusal, error, sizeof(s->last_refusal) - 1) == 0 &&
	    now - s->last_refusal_ns < REFUSAL_LOG_EVERY_NS) {
		log_debug("audit: collector refused the batch of seq %" PRIu64 "..%" PRIu64 " again",
			  s->batch_first, s->batch_last);
		return;
	}
	snprintf(s->last_refusal, sizeof(s->last_refusal), "%s", error);
	s->last_refusal_ns = now;
	log_error("audit: collector %s refused the batch of seq %" PRIu64 "..%" PRIu64 ": %.200s; "
		  "it is sent again, nothing is skipped", s->address, s->batch_first, s->batch_last,
		  error);
}

static void collector_answered(struct shipper *s)
{
	struct spool_info info;

	if (s->outage || !s->ever_acked) {
		spool_get_info(s->spool, &info);
		if (s->outage)
			log_info("audit: collector reachable again, %" PRIu64 " events pending",
				 info.last_seq - info.acked_seq);
		else
			log_info("audit: collector %s connected, %" PRIu64 " events pending",
				 s->address, info.last_seq - info.acked_seq);
	}
	s->outage = false;
	s->ever_acked = true;
}

/* An Ack ok: free the spool, and go on from what the collector holds. */
/* Not again before the backoff, which doubles up to BACKOFF_MAX_MS. */
static void back_off(struct shipper *s)
{
	s->retry_at_ns = clock_monotonic_ns() + s->backoff_ms * MS;
	s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

/* Whether the collector stored any of the batch. */
static bool accept_ack(struct shipper *s, const Dbward__V1__Ack *ack)
{
	struct spool_info info;
	uint64_t acked = ack->acked_seq, first = s->batch_first;
	uint8_t hash[SPOOL_HASH_LEN];
	int err;

	spool_get_info(s->spool, &info);
	if (acked < info.acked_seq) {
		log_error("audit: collector %s acknowledges only up to seq %" PRIu64 " of epoch %"
			  PRIu64 ", but acknowledged up to %" PRIu64 " before: it lost events this "
			  "agent no longer has", s->address, acked, s->epoch, info.acked_seq);
		acked = info.acked_seq;
	}
	/* What this batch proves stored; the spool needs that event's hash. */
	if (acked > s->batch_last)
		acked = s->batch_last;
	if (acked > info.acked_seq && acked >= s->batch_first) {
		const ProtobufCBinaryData *item = &s->items[acked - s->batch_first];

		event_hash(item->data, item->len, hash);
		if ((err = spool_ack(s->spool, acked, hash)) < 0)
			log_error("audit: spool %s: recording the ack: %s", spool_dir(s->spool),
				  strerror(-err));
		spool_cursor_drop_stale(s->spool, &s->cursor);
	}
	log_debug("audit: batch %" PRIu64 "..%" PRIu64 " acked up to %" PRIu64 " (%u new, %u "
		  "duplicates)", s->batch_first, s->batch_last, ack->acked_seq, ack->accepted,
		  ack->duplicates);
	/* A collector missing part of the batch gets that part again, paced
	 * by batch_ms: one that acks without storing must not get it in a
	 * tight loop. */
	if (acked < s->batch_last) {
		spool_cursor_seek(s->spool, &s->cursor, acked + 1);
		s->backlog = false;
	}
	drop_batch(s);
	audit_retry(s->audit);
	return acked >= first;
}

/* Sends the batch in flight and reads its Ack. 0: handled; -1: the
 * connection failed (@why says how). */
static int exchange(struct shipper *s, char *why, size_t whylen)
{
	uint64_t deadline = clock_monotonic_ns() + IO_TIMEOUT_MS * MS;
	uint8_t head[WIRE_HEADER_LEN], *payload;
	Dbward__V1__Ack *ack;
	size_t len;
	uint8_t type;

	if (send_all(s, s->frame, s->frame_len, deadline, why, whylen) < 0)
		return -1;
	s->last_send_ns = clock_monotonic_ns();
	if (recv_exact(s, head, sizeof(head), deadline, why, whylen) < 0)
		return -1;
	if (wire_parse_header(head, &type, &len) < 0 || type != WIRE_ACK || len > ACK_MAX) {
		snprintf(why, whylen, "the collector sent something other than an ack");
		return -1;
	}
	if (!(payload = malloc(len ? len : 1))) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (recv_exact(s, payload, len, deadline, why, whylen) < 0) {
		free(payload);
		return -1;
	}
	ack = dbward__v1__ack__unpack(NULL, len, payload);
	free(payload);
	if (!ack) {
		snprintf(why, whylen, "the collector's ack does not decode");
		return -1;
	}
	collector_answered(s);
	if (!ack->ok) {
		log_refusal(s, ack->error && ack->error[0] ? ack->error : "(no reason given)");
		back_off(s);
	} else if (ack->epoch != s->epoch) {
		log_refusal(s, "the ack names another epoch");
		back_off(s);
	} else {
		s->last_refusal[0] = '\0';
		if (accept_ack(s, ack))
			s->backoff_ms = BACKOFF_MIN_MS;
		else
			back_off(s);	/* "ok" and nothing stored: not again at once */
	}
	dbward__v1__ack__free_unpacked(ack, NULL);
	return 0;
}

static void connection_failed(struct shipper *s, const char *why)
{
	struct spool_info info;

	disconnect(s);
	if (!s->outage) {
		spool_get_info(s->spool, &info);
		log_warn("audit: collector unreachable: %s: %s; %" PRIu64 " events wait in the spool "
			 "(retrying, %u ms to %u s apart)", s->address, why,
			 info.last_seq - info.acked_seq, BACKOFF_MIN_MS, BACKOFF_MAX_MS / 1000);
		s->outage = true;
	} else {
		log_debug("audit: collector %s still unreachable: %s", s->address, why);
	}
	back_off(s);
}

/* --- the thread ------------------------------------------------------------ */

/* The power-cut window: nothing stays unsynced longer than fsync_ms. */
static void periodic_sync(struct shipper *s, uint64_t now)
{
	int err;

	if (now - s->last_sync_ns < s->fsync_ns)
		return;
	s->last_sync_ns = now;
	if (spool_synced_seq(s->spool) < spool_last_seq(s->spool) && (err = spool_sync(s->spool)) < 0)
		log_error("audit: spool %s: fdatasync: %s", spool_dir(s->spool), strerror(-err));
}

static bool drained(struct shipper *s)
{
	struct spool_info info;

	if (clock_monotonic_ns() >= bound(s, UINT64_MAX))
		return true;
	spool_get_info(s->spool, &info);
	return info.acked_seq >= (s->stuck ? s->stuck_seq - 1 : info.last_seq);
}

/* Whether a batch is due now; else when it will be. */
static bool batch_due(struct shipper *s, uint64_t now, uint64_t *when)
{
	uint64_t last = spool_last_seq(s->spool);
	uint64_t waiting;

	/* After a corrupt record, what precedes it still ships (again, when
	 * the collector acknowledged only part of a batch). */
	if (s->stuck && last >= s->stuck_seq)
		last = s->stuck_seq - 1;
	waiting = last >= s->cursor.next_seq ? last - s->cursor.next_seq + 1 : 0;
	*when = now + s->batch_ns;
	if (!waiting) {
		s->backlog = false;
		return false;
	}
	/* A batch that stopped at its byte limit left more behind: the next
	 * one goes as soon as it is acked, whatever batch_max_events says. */
	if (waiting >= s->batch_max_events || s->backlog || stopping(s) ||
	    now >= s->last_send_ns + s->batch_ns)
		return true;
	*when = s->last_send_ns + s->batch_ns;
	return false;
}

static void ship_once(struct shipper *s)
{
	char why[TLS_ERR_LEN + 64];
	int err;

	if (s->fd < 0 && connect_collector(s, why, sizeof(why)) < 0) {
		connection_failed(s, why);
		return;
	}
	/* Never let the collector hold what a power cut could take back. */
	if (spool_synced_seq(s->spool) < s->batch_last) {
		if ((err = spool_sync(s->spool)) < 0) {
			log_error("audit: spool %s: fdatasync: %s; not sending until it works",
				  spool_dir(s->spool), strerror(-err));
			s->retry_at_ns = clock_monotonic_ns() + BACKOFF_MAX_MS * MS;
			return;
		}
		s->last_sync_ns = clock_monotonic_ns();
	}
	if (exchange(s, why, sizeof(why)) < 0)
		connection_failed(s, why);
}

static void *shipper_main(void *arg)
{
	struct shipper *s = arg;

	for (;;) {
		uint64_t now = clock_monotonic_ns(), next;

		if (stopping(s) && drained(s))
			break;
		periodic_sync(s, now);
		audit_retry(s->audit);
		next = now + s->fsync_ns;
		if (now < s->retry_at_ns) {
			idle_until(s, bound(s, s->retry_at_ns < next ? s->retry_at_ns : next));
			continue;
		}
		if (!s->frame) {
			uint64_t due;

			if (!batch_due(s, now, &due)) {
				idle_until(s, bound(s, due < next ? due : next));
				continue;
			}
			if (build_batch(s) <= 0) {
				if (!s->stuck)
					s->retry_at_ns = now + BACKOFF_MIN_MS * MS;
				continue;
			}
		}
		ship_once(s);
	}
	disconnect(s);
	return NULL;
}

int shipper_start(const struct shipper_opts *opts, struct audit *audit, struct shipper **out)
{
	struct shipper *s = calloc(1, sizeof(*s));
	struct spool_info info;
	int err;

	if (!s)
		return -ENOMEM;
	s->fd = -1;
	s->cursor.fd = -1;
	s->wake_fd = -1;
	s->audit = audit;
	s->spool = audit_spool(audit);
	s->tls = opts->tls;
	s->mark = opts->mark;
	s->batch_max_events = opts->batch_max_events;
	s->batch_ns = (uint64_t)opts->batch_ms * MS;
	s->fsync_ns = (uint64_t)opts->fsync_ms * MS;
	s->backoff_ms = BACKOFF_MIN_MS;
	s->last_sync_ns = clock_monotonic_ns();
	err = -EINVAL;
	if (!s->spool || !s->tls || config_parse_host_port(opts->address, s->host, &s->port) < 0)
		goto fail;
	err = -ENOMEM;
	if (!(s->address = strdup(opts->address)))
		goto fail;
	spool_get_info(s->spool, &info);
	s->epoch = info.epoch;
	if ((err = spool_cursor_seek(s->spool, &s->cursor, info.acked_seq + 1)) < 0)
		goto fail;
	s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wake_fd < 0) {
		err = -errno;
		goto fail;
	}
	if ((err = -pthread_create(&s->thread, NULL, shipper_main, s)))
		goto fail;
	pthread_setname_np(s->thread, "dbward-ship");
	*out = s;
	return 0;
fail:
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	free(s->address);
	free(s);
	return err;
}

void shipper_stop(struct shipper *s, unsigned drain_ms)
{
	uint64_t one = 1;

	if (!s)
		return;
	__atomic_store_n(&s->drain_until_ns, clock_monotonic_ns() + (uint64_t)drain_ms * MS,
			 __ATOMIC_RELEASE);
	__atomic_store_n(&s->stopping, true, __ATOMIC_RELEASE);
	if (write(s->wake_fd, &one, sizeof(one)) < 0)
		log_debug("audit: waking the shipper: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	if (!s->stuck) {
		struct spool_info info;

		spool_get_info(s->spool, &info);
		if (info.last_seq > info.acked_seq)
			log_info("audit: %" PRIu64 " event(s) not yet acknowledged stay in the spool %s "
				 "for the next start", info.last_seq - info.acked_seq,
				 spool_dir(s->spool));
	}
	spool_cursor_close(&s->cursor);
	drop_batch(s);
	spool_buf_release(&s->raw);
	free(s->items);
	free(s->packed);
	free(s->address);
	close(s->wake_fd);
	free(s);
}
