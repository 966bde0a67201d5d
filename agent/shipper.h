/*
 * Ships the spool to the collector: one thread, one mTLS connection, one
 * batch in flight (common/wire.h). A batch is the next run of events after
 * the last acknowledged one, up to batch_max_events or about 1 MiB,
 * zstd-compressed; it goes once batch_max_events are waiting or batch_ms
 * after the previous one, whichever comes first. Before any batch leaves,
 * the spool is fdatasynced up to its last event, so the collector never
 * holds an event the agent could lose in a power cut and number again.
 *
 * An Ack frees the spool up to acked_seq. A refused batch (Ack not ok) is
 * logged and sent again after a pause, never skipped; a lost connection is
 * retried with exponential backoff (100 ms .. 5 s), logged once per outage.
 * Event loops never wait on any of it: the spool is the only link.
 */
#ifndef DBWARD_AGENT_SHIPPER_H
#define DBWARD_AGENT_SHIPPER_H

#include <stdint.h>

struct audit;
struct shipper;
struct tls_ctx;

struct shipper_opts {
	const char *address;		/* host:port or [v6]:port */
	struct tls_ctx *tls;		/* client context with cert, key, CA (borrowed) */
	uint32_t mark;			/* SO_MARK: our own BPF must not redirect us */
	uint32_t batch_max_events;
	uint32_t batch_ms;
	uint32_t fsync_ms;		/* longest an event stays only in the page cache */
};

/* Starts the thread over @audit's spool. Returns 0 or -errno. */
int shipper_start(const struct shipper_opts *opts, struct audit *audit, struct shipper **out);

/* Tries for up to @drain_ms to ship what is pending, then stops the
 * thread; the spool keeps the rest. NULL-safe. */
void shipper_stop(struct shipper *s, unsigned drain_ms);

#endif
