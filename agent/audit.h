/*
 * The agent's audit pipeline. Every event goes through audit_record(),
 * which numbers it (seq, from 1, no gaps), chains it (prev_hash: SHA-256
 * of the previous event's bytes), serializes it once, and, before it
 * returns, appends those bytes to the disk spool: an event recorded before
 * the client gets its answer survives the agent being killed. The same
 * bytes then go to the JSON-lines file sink, written by a thread of its
 * own (the sink may lose its last lines on kill -9; the spool may not).
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
