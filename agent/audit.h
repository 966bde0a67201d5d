/*
 * The agent's audit pipeline. Every event is staged (audit_stage():
 * serialized without its envelope, no lock) and committed
 * (audit_commit(): numbered, seq from 1 with no gaps, chained, prev_hash
 * being the SHA-256 of the previous event's bytes, and appended to the
 * disk spool, a batch with one write(2)); audit_record() does both for one
 * event. An event committed before the client gets its answer survives the
 * agent being killed. The same bytes then go to the JSON-lines file sink,
 * written by a thread of its own (the sink may lose its last lines on
 * kill -9; the spool may not).
 *
 * Without a spool, events go to the file sink only: nothing is durable,
 * and the epoch is new at each start.
 *
 * A full spool (spool_max_bytes, or the filesystem) never loses an event:
 * events wait in memory, in seq order, and are written as soon as there is
 * room. While any wait, audit_accepting() is false and the connections
 * refuse new work (SQLSTATE 53100). An event kept in memory is not
 * durable: audit_record() says so (AUDIT_WAITING), and a statement's
 * answer must then not reach the client. Past AUDIT_WAITING_MAX bytes
 * waiting, audit_record() still keeps the event but returns -ENOBUFS: the
 * caller closes the connection that produced it.
 *
 * With a spool the file sink is a mirror that never makes a caller wait:
 * an event reaches it once spooled, and a line that finds its queue full
 * is dropped for the file only (counted and logged). Without a spool the
 * file is the only record and audit_record() waits for room in its queue
 * (never while holding the audit lock).
 */
#ifndef DBWARD_AGENT_AUDIT_H
#define DBWARD_AGENT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dbward/v1/audit.pb-c.h"

#define AUDIT_WAITING_MAX (64u << 20)
/* audit_record(): kept in memory in seq order, not yet in the full spool. */
#define AUDIT_WAITING 1
#define AUDIT_ERR_LEN 512
/* What a client hears while the spool is full. */
#define AUDIT_FULL_SQLSTATE "53100"
#define AUDIT_FULL_STATEMENT "dbward: audit spool full: statement refused so that nothing runs unrecorded"
#define AUDIT_FULL_CONNECTION "dbward: audit spool full: connection refused so that nothing runs unrecorded"
#define AUDIT_FULL_WAITING "dbward: audit spool full: the statement ran but its audit event is not yet on disk: connection closed so that nothing runs unrecorded"
#define AUDIT_FULL_CLOSED "dbward: audit spool full and too many events waiting in memory: connection closed so that nothing runs unrecorded"

struct audit;
struct spool;

struct audit_opts {
	const char *agent_id;		/* required */
	const char *file;		/* JSON lines; NULL: no file sink */
	const char *spool_dir;		/* NULL: no spool, nothing durable */
	uint64_t spool_max_bytes;
	size_t file_queue_max;		/* bytes queued for the file; 0: 64 MiB */
};

/* Opens the spool and the file sink, starts the sink's writer. Returns 0,
 * or -errno with @err saying why. */
int audit_open(const struct audit_opts *opts, struct audit **out, char *err, size_t errlen);

/*
 * Records @ev: fills agent_id, epoch, seq, prev_hash and ts (when 0),
 * serializes and stores it. Thread-safe; @ev is the caller's and its
 * strings are only read (the envelope fields are overwritten). Returns 0
 * (in the spool, or in the file when there is no spool); AUDIT_WAITING
 * when it waits in memory for room in the full spool (numbered and kept,
 * but not durable: a statement's answer must not reach the client);
 * -ENOBUFS when it was kept but too much waits in memory (close the
 * connection); -EMSGSIZE or -ENOMEM when it could not be recorded at all
 * (logged; close the connection).
 */
int audit_record(struct audit *a, Dbward__V1__Event *ev);

/*
 * Events staged by one thread and recorded together: each is serialized
 * as it happens, without its envelope (agent_id, epoch, seq, ts,
 * prev_hash: fields 1-5, which protobuf puts first), and audit_commit()
 * numbers, chains and appends them all under one lock with one write(2).
 * The bytes are exactly those audit_record() would have stored.
 */
struct audit_item {
	size_t off, len;		/* in data: the event past its envelope */
	uint64_t ts;
	void *owner;			/* the caller's, untouched */
	size_t mark;			/* the caller's, untouched */
	bool may_wait;			/* the caller's, untouched */
	int result;			/* by audit_commit(): what audit_record() says */
	uint64_t seq;			/* by audit_commit(), when numbered */
};

struct audit_batch {
	uint8_t *data;
	size_t len, cap;
	struct audit_item *items;
	size_t n, cap_items;
};

/*
 * Stages @ev, whose envelope fields must be unset (ts 0: now), behind
 * @head (@head_len bytes of serialized Event fields between 6 and those
 * of @ev, e.g. a session packed once; may be NULL). Returns the item
 * (valid until the next audit_stage()), or NULL when out of memory.
 */
struct audit_item *audit_stage(struct audit_batch *b, const uint8_t *head, size_t head_len,
			       const Dbward__V1__Event *ev);
/* Records every staged event, in order; each item's result is what
 * audit_record() would have returned. The items stay until cleared. */
void audit_commit(struct audit *a, struct audit_batch *b);
void audit_batch_clear(struct audit_batch *b);
void audit_batch_release(struct audit_batch *b);

/* False while the spool is full: refuse new statements and connections. */
bool audit_accepting(const struct audit *a);

/* True while more than AUDIT_WAITING_MAX bytes wait in memory. */
bool audit_over_cap(const struct audit *a);

/* Counts a connection refused while the spool is full, without events;
 * the count is logged when the spool has room again. */
void audit_refused_connection(struct audit *a);

/* Lines the file sink skipped because its queue was full (spool mode). */
uint64_t audit_file_dropped(struct audit *a);

/* Writes what waits in memory if there is room now. Thread-safe; cheap
 * when nothing waits. */
void audit_retry(struct audit *a);

/* The spool (NULL without one), for the shipper. */
struct spool *audit_spool(struct audit *a);

/* Writes out the file sink, stops its writer, closes the spool. Events
 * still waiting in memory are written if there is room, else reported as
 * lost. NULL-safe. */
void audit_close(struct audit *a);

#endif
