#include "agent/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/spool.h"
#include "common/bytes.h"
#include "common/clock.h"
#include "common/event_json.h"
#include "common/json.h"
#include "common/log.h"

/* Serialized events queued for the file sink before producers wait. */
#define SINK_QUEUE_MAX (64u << 20)	/* default */
#define SINK_WRITE_CHUNK (256u << 10)

/* --- the JSON-lines file sink ------------------------------------------- */

/*
 * Producers append [u32 length][serialized Event] to @filling; the writer
 * swaps it for its drained buffer, renders each event as a JSON line and
 * appends them to the file. No allocation per event once the buffers grew.
 */
struct sink {
	int fd;
	char *path;
	pthread_t writer;
	pthread_mutex_t lock;
	pthread_cond_t has_data;
	pthread_cond_t has_room;
	struct spool_buf filling;
	size_t queue_max;		/* bytes queued before producers wait or drop */
	uint64_t turn;			/* file-only: the seq whose line goes next */
	uint64_t dropped;		/* lines the mirror skipped, ever */
	uint64_t behind;		/* ... in the episode going on */
	bool stopping;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t w = write(fd, p, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* A full or failing disk delays the file's lines, never loses them. */
static void sink_write(struct sink *k, const void *p, size_t len)
{
	int err;

	while ((err = write_all(k->fd, p, len)) < 0) {
		log_error("audit: writing %s: %s; retrying", k->path, strerror(-err));
		sleep(1);
	}
}

static void sink_render(struct sink *k, const struct spool_buf *batch, struct jsonbuf *jb,
			struct spool_buf *out)
{
	for (size_t off = 0; off + 4 <= batch->len;) {
		uint32_t len;

		memcpy(&len, batch->data + off, 4);
		off += 4;
		if (event_json_line(jb, batch->data + off, len) < 0) {
			log_error("audit: an event cannot be rendered as JSON for %s", k->path);
		} else {
			if (out->cap - out->len < jb->len) {
				sink_write(k, out->data, out->len);
				out->len = 0;
			}
			if (out->cap - out->len < jb->len) {
				sink_write(k, jb->data, jb->len);
			} else {
				memcpy(out->data + out->len, jb->data, jb->len);
				out->len += jb->len;
			}
		}
		off += len;
	}
	if (out->len)
		sink_write(k, out->data, out->len);
	out->len = 0;
}

static void *sink_main(void *arg)
{
	struct sink *k = arg;
	struct spool_buf batch = { 0 }, out = { 0 };
	struct jsonbuf jb;

	jsonbuf_init(&jb);
	out.data = malloc(SINK_WRITE_CHUNK);
	out.cap = out.data ? SINK_WRITE_CHUNK : 0;
	pthread_mutex_lock(&k->lock);
	for (;;) {
		struct spool_buf swap;

		while (!k->filling.len && !k->stopping)
			pthread_cond_wait(&k->has_data, &k->lock);
		if (!k->filling.len)
			break;
		swap = k->filling;
		k->filling = batch;
		batch = swap;
		pthread_mutex_unlock(&k->lock);

		sink_render(k, &batch, &jb, &out);
		batch.len = 0;

		pthread_mutex_lock(&k->lock);
		pthread_cond_broadcast(&k->has_room);
	}
	pthread_mutex_unlock(&k->lock);
	jsonbuf_release(&jb);
	spool_buf_release(&batch);
	spool_buf_release(&out);
	return NULL;
}

static void sink_free(struct sink *k)
{
	if (!k)
		return;
	if (k->fd >= 0)
		close(k->fd);
	pthread_cond_destroy(&k->has_room);
	pthread_cond_destroy(&k->has_data);
	pthread_mutex_destroy(&k->lock);
	spool_buf_release(&k->filling);
	free(k->path);
	free(k);
}

static int sink_open(const char *path, size_t queue_max, uint64_t first_seq, struct sink **out)
{
	struct sink *k = calloc(1, sizeof(*k));
	int err;

	if (!k)
		return -ENOMEM;
	k->fd = -1;
	k->queue_max = queue_max ? queue_max : SINK_QUEUE_MAX;
	k->turn = first_seq;
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->has_data, NULL);
	pthread_cond_init(&k->has_room, NULL);
	if (!(k->path = strdup(path))) {
		sink_free(k);
		return -ENOMEM;
	}
	k->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (k->fd < 0) {
		err = -errno;
		sink_free(k);
		return err;
	}
	if ((err = -pthread_create(&k->writer, NULL, sink_main, k))) {
		sink_free(k);
		return err;
	}
	pthread_setname_np(k->writer, "dbward-file");
	*out = k;
	return 0;
}

/* Appends [length][@raw] to the queue if it fits under queue_max.
 * Returns 0, -EAGAIN (no room now) or -ENOMEM. Caller holds k->lock. */
static int sink_queue(struct sink *k, const uint8_t *raw, size_t len)
{
	uint32_t n = (uint32_t)len;

	if (k->filling.len && k->filling.len + 4 + len > k->queue_max)
		return -EAGAIN;
	if (bytes_reserve(&k->filling.data, &k->filling.cap, k->filling.len + 4 + len,
			  64 << 10) < 0) {
		log_error("audit: out of memory: an event is missing from %s (the spool, when "
			  "configured, still has it)", k->path);
		return -ENOMEM;
	}
	memcpy(k->filling.data + k->filling.len, &n, 4);
	memcpy(k->filling.data + k->filling.len + 4, raw, len);
	k->filling.len += 4 + len;
	pthread_cond_signal(&k->has_data);
	return 0;
}

/* Caller holds k->lock. */
static void sink_log_behind(struct sink *k)
{
	if (!k->behind)
		return;
	log_warn("audit: file sink behind, %" PRIu64 " lines not written to %s; the spool has "
		 "every event", k->behind, k->path);
	k->behind = 0;
}

/*
 * With a spool the file is a mirror: never waits (the caller may hold the
 * audit lock, which the shipper needs); a line that finds no room is
 * dropped for the file only, and counted.
 */
static void sink_offer(struct sink *k, const uint8_t *raw, size_t len)
{
	int err;

	pthread_mutex_lock(&k->lock);
	err = sink_queue(k, raw, len);
	if (err == -EAGAIN) {
		k->dropped++;
		k->behind++;
	} else if (!err) {
		sink_log_behind(k);
	}
	pthread_mutex_unlock(&k->lock);
}

/*
 * Without a spool the file is the only record: the line of event @seq
 * waits for room, and for the lines before it (producers push after
 * leaving the audit lock, so they may arrive out of order). @raw NULL:
 * nothing to write for @seq, just pass the turn on.
 */
static void sink_push_wait(struct sink *k, uint64_t seq, const uint8_t *raw, size_t len)
{
	pthread_mutex_lock(&k->lock);
	while (k->turn != seq ||
	       (raw && k->filling.len && k->filling.len + 4 + len > k->queue_max))
		pthread_cond_wait(&k->has_room, &k->lock);
	if (raw)
		sink_queue(k, raw, len);
	k->turn = seq + 1;
	pthread_cond_broadcast(&k->has_room);
	pthread_mutex_unlock(&k->lock);
}

static void sink_close(struct sink *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->lock);
	sink_log_behind(k);
	k->stopping = true;
	pthread_cond_signal(&k->has_data);
	pthread_mutex_unlock(&k->lock);
	pthread_join(k->writer, NULL);
	if (fsync(k->fd) < 0 && errno != EINVAL)
		log_warn("audit: fsync %s: %s", k->path, strerror(errno));
	sink_free(k);
}

/* --- numbering, chaining, storing ------------------------------------------ */

/* An event serialized but not yet in the spool: it waits here, in order. */
struct waiting {
	struct waiting *next;
	uint64_t seq;
	size_t len;			/* payload */
	uint8_t rec[];			/* SPOOL_HEADER_LEN, then the payload */
};

struct audit {
	pthread_mutex_t lock;		/* everything below */
	char *agent_id;
	uint64_t epoch;
	uint64_t next_seq;
	uint8_t prev_hash[EVENT_HASH_LEN];
	uint8_t *rec;			/* reused: SPOOL_HEADER_LEN + payload */
	size_t rec_cap;

	struct spool *spool;		/* NULL: nothing durable */
	struct waiting *waiting;	/* oldest first */
	struct waiting **waiting_tail;
	size_t waiting_bytes;
	uint64_t waiting_count;
	int full_reason;		/* -errno of the append that failed */
	bool full;			/* atomic reads: audit_accepting() */
	bool over_cap;			/* atomic reads: waiting_bytes > AUDIT_WAITING_MAX */
	uint64_t refused;		/* atomic: connections refused, unrecorded, while full */

	struct sink *sink;		/* NULL: no file */
};

static void set_full(struct audit *a, bool full)
{
	__atomic_store_n(&a->full, full, __ATOMIC_RELEASE);
}

bool audit_accepting(const struct audit *a)
{
	return !a || !__atomic_load_n(&a->full, __ATOMIC_ACQUIRE);
}

bool audit_over_cap(const struct audit *a)
{
	return a && __atomic_load_n(&a->over_cap, __ATOMIC_ACQUIRE);
}

void audit_refused_connection(struct audit *a)
{
	if (a)
		__atomic_add_fetch(&a->refused, 1, __ATOMIC_RELAXED);
}

uint64_t audit_file_dropped(struct audit *a)
{
	uint64_t n;

	if (!a || !a->sink)
		return 0;
	pthread_mutex_lock(&a->sink->lock);
	n = a->sink->dropped;
	pthread_mutex_unlock(&a->sink->lock);
	return n;
}

struct spool *audit_spool(struct audit *a)
{
	return a ? a->spool : NULL;
}

static void log_full(struct audit *a, int err)
{
	struct spool_info info;

	spool_get_info(a->spool, &info);
	if (err == -ENOSPC)
		log_error("audit: spool full (%s: %" PRIu64 " bytes held, %" PRIu64 " not yet "
			  "acknowledged by the collector): new statements and connections are "
			  "refused with SQLSTATE " AUDIT_FULL_SQLSTATE "; events wait in memory",
			  spool_dir(a->spool), info.bytes, info.last_seq - info.acked_seq);
	else
		log_error("audit: spool full (%s: %s): new statements and connections are refused "
			  "with SQLSTATE " AUDIT_FULL_SQLSTATE "; events wait in memory",
			  spool_dir(a->spool), strerror(-err));
}

/* Writes waiting events to the spool, oldest first, while there is room. */
static void drain_waiting(struct audit *a)
{
	uint64_t written = 0;

	while (a->waiting) {
		struct waiting *w = a->waiting;
		int err = spool_append(a->spool, w->seq, w->rec, w->len);

		if (err) {
			if (err != a->full_reason && err != -ENOSPC)
				log_error("audit: spool %s: %s", spool_dir(a->spool), strerror(-err));
			a->full_reason = err;
			return;
		}
		/* Spooled: now, and in seq order, the file may have it. */
		if (a->sink)
			sink_offer(a->sink, w->rec + SPOOL_HEADER_LEN, w->len);
		a->waiting = w->next;
		a->waiting_bytes -= w->len;
		a->waiting_count--;
		written++;
		free(w);
	}
	a->waiting_tail = &a->waiting;
	__atomic_store_n(&a->over_cap, false, __ATOMIC_RELEASE);
	if (a->full) {
		uint64_t refused = __atomic_exchange_n(&a->refused, 0, __ATOMIC_RELAXED);

		set_full(a, false);
		log_info("audit: spool has room again: %" PRIu64 " event(s) that waited in memory "
			 "are written; statements and connections are accepted", written);
		if (refused)
			log_info("audit: %" PRIu64 " connections refused while the spool was full",
				 refused);
	}
}

void audit_retry(struct audit *a)
{
	if (!a || !a->spool || !__atomic_load_n(&a->full, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&a->lock);
	drain_waiting(a);
	pthread_mutex_unlock(&a->lock);
}

/* Room for @need bytes at a->rec. */
static int reserve_rec(struct audit *a, size_t need)
{
	return bytes_reserve(&a->rec, &a->rec_cap, need, 4096);
}

/* Stores the serialized event in a->rec: spool (0), or the waiting list
 * (AUDIT_WAITING, -ENOBUFS past the cap). */
static int store(struct audit *a, uint64_t seq, size_t len)
{
	struct waiting *w;
	int err = -ENOSPC;

	if (a->waiting)
		drain_waiting(a);
	if (!a->waiting) {
		err = spool_append(a->spool, seq, a->rec, len);
		if (!err)
			return 0;
		if (err == -EINVAL)
			return err;	/* a bug, not a full disk: never wait on it */
	}
	w = malloc(sizeof(*w) + SPOOL_HEADER_LEN + len);
	if (!w)
		return -ENOMEM;
	w->next = NULL;
	w->seq = seq;
	w->len = len;
	memcpy(w->rec, a->rec, SPOOL_HEADER_LEN + len);
	*a->waiting_tail = w;
	a->waiting_tail = &w->next;
	a->waiting_bytes += len;
	a->waiting_count++;
	if (!a->full) {
		a->full_reason = err;
		set_full(a, true);
		log_full(a, err);
	}
	if (a->waiting_bytes > AUDIT_WAITING_MAX) {
		__atomic_store_n(&a->over_cap, true, __ATOMIC_RELEASE);
		return -ENOBUFS;
	}
	return AUDIT_WAITING;
}

/* --- staging and committing ---------------------------------------------- */

/* A batch bigger than this after a commit is freed, not kept. */
#define BATCH_KEEP_BYTES (1u << 20)

static int batch_reserve(struct audit_batch *b, size_t more)
{
	if (b->n == b->cap_items) {
		size_t n = b->cap_items ? b->cap_items * 2 : 16;
		struct audit_item *items = realloc(b->items, n * sizeof(*items));

		if (!items)
			return -ENOMEM;
		b->items = items;
		b->cap_items = n;
	}
	return bytes_reserve(&b->data, &b->cap, b->len + more, 16384);
}

struct audit_item *audit_stage(struct audit_batch *b, const uint8_t *head, size_t head_len,
			       const Dbward__V1__Event *ev)
{
	size_t body = dbward__v1__event__get_packed_size(ev);
	struct audit_item *it;

	if (batch_reserve(b, head_len + body) < 0)
		return NULL;
	it = &b->items[b->n++];
	*it = (struct audit_item){ .off = b->len, .len = head_len + body,
				   .ts = clock_realtime_ns() };
	if (head_len)
		memcpy(b->data + b->len, head, head_len);
	dbward__v1__event__pack(ev, b->data + b->len + head_len);
	b->len += it->len;
	return it;
}

/* The records of a turn: a commit starts past 1 MiB staged, so only a
 * statement of megabytes needs more than this. */
#define REC_KEEP_BYTES (2u << 20)

/* Under a->lock, once its records are stored: a big statement's buffer is
 * not kept for the small ones after it. */
static void rec_trim(struct audit *a)
{
	if (a->rec_cap <= REC_KEEP_BYTES)
		return;
	free(a->rec);
	a->rec = NULL;
	a->rec_cap = 0;
}

void audit_batch_clear(struct audit_batch *b)
{
	b->n = 0;
	b->len = 0;
	if (b->cap > BATCH_KEEP_BYTES) {
		free(b->data);
		b->data = NULL;
		b->cap = 0;
	}
}

void audit_batch_release(struct audit_batch *b)
{
	free(b->data);
	free(b->items);
	memset(b, 0, sizeof(*b));
}

/*
 * Lays out the record of @it as event @seq at a->rec + @at: a header
 * holding the payload's length, then the envelope (chained to
 * a->prev_hash), then the bytes staged. Returns the payload's length, or
 * -EMSGSIZE / -ENOMEM. The chain does not move.
 */
static long build_record(struct audit *a, const struct audit_batch *b, const struct audit_item *it,
			 size_t at, uint64_t seq)
{
	Dbward__V1__Event env = DBWARD__V1__EVENT__INIT;
	size_t env_len, len;
	uint8_t *p;

	env.agent_id = a->agent_id;
	env.epoch = a->epoch;
	env.seq = seq;
	env.ts = it->ts;
	env.prev_hash.data = a->prev_hash;
	env.prev_hash.len = sizeof(a->prev_hash);
	env_len = dbward__v1__event__get_packed_size(&env);
	len = env_len + it->len;
	if (len > SPOOL_RECORD_MAX)
		return -EMSGSIZE;
	if (reserve_rec(a, at + SPOOL_HEADER_LEN + len) < 0)
		return -ENOMEM;
	p = a->rec + at;
	spool_put_le32(p, (uint32_t)len);
	spool_put_le32(p + 4, 0);
	dbward__v1__event__pack(&env, p + SPOOL_HEADER_LEN);
	memcpy(p + SPOOL_HEADER_LEN + env_len, b->data + it->off, it->len);
	return (long)len;
}

/*
 * The common case: nothing waits, and every event goes to the spool in
 * one write. Returns 0, or -1 having recorded nothing (the chain as it
 * was): then they go one by one. Caller holds a->lock.
 */
static int commit_run(struct audit *a, struct audit_batch *b)
{
	uint8_t prev[EVENT_HASH_LEN];
	uint64_t seq = a->next_seq;
	size_t at = 0;

	memcpy(prev, a->prev_hash, sizeof(prev));
	for (size_t i = 0; i < b->n; i++) {
		long len = build_record(a, b, &b->items[i], at, seq + i);

		if (len < 0)
			goto undo;
		event_hash(a->rec + at + SPOOL_HEADER_LEN, (size_t)len, a->prev_hash);
		at += SPOOL_HEADER_LEN + (size_t)len;
	}
	if (spool_append_run(a->spool, seq, a->rec, at, b->n) < 0)
		goto undo;
	a->next_seq = seq + b->n;
	at = 0;
	for (size_t i = 0; i < b->n; i++) {
		size_t len = spool_get_le32(a->rec + at);

		b->items[i].seq = seq + i;
		b->items[i].result = 0;
		/* Spooled: in seq order, the file may have it. */
		if (a->sink)
			sink_offer(a->sink, a->rec + at + SPOOL_HEADER_LEN, len);
		at += SPOOL_HEADER_LEN + len;
	}
	return 0;
undo:
	memcpy(a->prev_hash, prev, sizeof(prev));
	return -1;
}

/* One event, spooled or waiting in memory. Caller holds a->lock. */
static void commit_one(struct audit *a, const struct audit_batch *b, struct audit_item *it)
{
	uint64_t seq = a->next_seq;
	long len = build_record(a, b, it, 0, seq);
	int err;

	if (len < 0) {
		it->result = (int)len;
		return;
	}
	err = store(a, seq, (size_t)len);
	it->result = err;
	if (err < 0 && err != -ENOBUFS)
		return;
	/* Recorded: the chain moves on. */
	event_hash(a->rec + SPOOL_HEADER_LEN, (size_t)len, a->prev_hash);
	a->next_seq = seq + 1;
	it->seq = seq;
	/* A mirror of the spool: never waits. Waiting events reach the file
	 * from drain_waiting(), once spooled. */
	if (a->sink && !err)
		sink_offer(a->sink, a->rec + SPOOL_HEADER_LEN, (size_t)len);
}

/* Without a spool the file is the only record: each line is pushed in
 * turn, after the lock. */
static void commit_file_only(struct audit *a, struct audit_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		struct audit_item *it = &b->items[i];
		uint8_t *line = NULL;
		uint64_t seq;
		long len;

		pthread_mutex_lock(&a->lock);
		seq = a->next_seq;
		len = build_record(a, b, it, 0, seq);
		if (len >= 0) {
			event_hash(a->rec + SPOOL_HEADER_LEN, (size_t)len, a->prev_hash);
			a->next_seq = seq + 1;
			if (a->sink && !(line = malloc((size_t)len)))
				log_error("audit: out of memory: an event is missing from the audit "
					  "file");
			else if (line)
				memcpy(line, a->rec + SPOOL_HEADER_LEN, (size_t)len);
		}
		rec_trim(a);
		pthread_mutex_unlock(&a->lock);
		it->result = len < 0 ? (int)len : 0;
		if (len < 0)
			continue;
		it->seq = seq;
		if (a->sink)
			sink_push_wait(a->sink, seq, line, (size_t)len);
		free(line);
	}
}

void audit_commit(struct audit *a, struct audit_batch *b)
{
	if (!b->n)
		return;
	if (!a) {
		for (size_t i = 0; i < b->n; i++)
			b->items[i].result = 0;
		return;
	}
	if (!a->spool) {
		commit_file_only(a, b);
	} else {
		pthread_mutex_lock(&a->lock);
		if (a->waiting || commit_run(a, b) < 0)
			for (size_t i = 0; i < b->n; i++)
				commit_one(a, b, &b->items[i]);
		rec_trim(a);
		pthread_mutex_unlock(&a->lock);
	}
	for (size_t i = 0; i < b->n; i++)
		if (b->items[i].result < 0 && b->items[i].result != -ENOBUFS)
			log_error("audit: an event could not be recorded (%s); its connection is "
				  "closed", strerror(-b->items[i].result));
}

int audit_record(struct audit *a, Dbward__V1__Event *ev)
{
	struct audit_batch b = { 0 };
	struct audit_item *it;
	uint64_t ts = ev->ts;
	int err;

	if (!a)
		return 0;
	ev->agent_id = NULL;
	ev->epoch = ev->seq = ev->ts = 0;
	ev->prev_hash.data = NULL;
	ev->prev_hash.len = 0;
	if (!(it = audit_stage(&b, NULL, 0, ev))) {
		log_error("audit: out of memory: an event of session %s could not be recorded; its "
			  "connection is closed", ev->session && ev->session->session_id
						  ? ev->session->session_id : "?");
		audit_batch_release(&b);
		return -ENOMEM;
	}
	if (ts)
		it->ts = ts;
	audit_commit(a, &b);
	err = it->result;
	ev->ts = it->ts;
	if (err >= 0 || err == -ENOBUFS) {
		ev->epoch = a->epoch;
		ev->seq = it->seq;
	}
	audit_batch_release(&b);
	return err;
}

int audit_open(const struct audit_opts *opts, struct audit **out, char *err, size_t errlen)
{
	struct audit *a = calloc(1, sizeof(*a));
	int res;

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&a->lock, NULL);
	a->waiting_tail = &a->waiting;
	a->next_seq = 1;
	if (!(a->agent_id = strdup(opts->agent_id))) {
		snprintf(err, errlen, "out of memory");
		res = -ENOMEM;
		goto fail;
	}
	if (opts->spool_dir) {
		struct spool_info info;

		res = spool_open(opts->spool_dir, opts->agent_id, opts->spool_max_bytes, &a->spool,
				 err, errlen);
		if (res < 0)
			goto fail;
		spool_get_info(a->spool, &info);
		a->epoch = info.epoch;
		a->next_seq = info.last_seq + 1;
		memcpy(a->prev_hash, info.last_hash, sizeof(a->prev_hash));
		log_info("audit: spool %s: epoch %" PRIu64 ", next seq %" PRIu64 ", %" PRIu64
			 " event(s) not yet acknowledged%s", opts->spool_dir, info.epoch,
			 a->next_seq, info.last_seq - info.acked_seq,
			 info.corrupt ? " (CORRUPT records: see above)" : "");
	} else {
		a->epoch = clock_realtime_ns();	/* nothing persists: a new epoch per run */
	}
	if (opts->file && (res = sink_open(opts->file, opts->file_queue_max, a->next_seq,
					    &a->sink)) < 0) {
		snprintf(err, errlen, "audit.file %s: %s", opts->file, strerror(-res));
		goto fail;
	}
	*out = a;
	return 0;
fail:
	spool_close(a->spool);
	free(a->agent_id);
	pthread_mutex_destroy(&a->lock);
	free(a);
	return res;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	if (a->waiting)
		drain_waiting(a);
	if (a->waiting)
		log_error("audit: %" PRIu64 " event(s) from seq %" PRIu64 " on waited in memory for "
			  "room in the full spool %s and are lost at exit", a->waiting_count,
			  a->waiting->seq, spool_dir(a->spool));
	while (a->waiting) {
		struct waiting *w = a->waiting;

		a->waiting = w->next;
		free(w);
	}
	pthread_mutex_unlock(&a->lock);
	sink_close(a->sink);
	spool_close(a->spool);
	pthread_mutex_destroy(&a->lock);
	free(a->rec);
	free(a->agent_id);
	free(a);
}
