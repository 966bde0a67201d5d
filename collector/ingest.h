/*
 * Agent ingest: the mTLS listener. An accept thread hands every
 * connection to a thread of its own; a connection authenticates by its
 * client certificate (the CN is the agent's name), then sends batch frames
 * (common/wire.h), each answered by an Ack once stored (collector/batch.h).
 * A connection that fails or misbehaves is closed alone; no other agent
 * notices.
 */
#ifndef DBWARD_COLLECTOR_INGEST_H
#define DBWARD_COLLECTOR_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"
#include "common/netaddr.h"
#include "common/signing.h"
#include "common/tls.h"

#define INGEST_ERR_LEN 256

struct ingest;

struct ingest_opts {
	struct netaddr listen;
	struct tls_ctx *tls;		/* server context with client_ca_file (mTLS) */
	struct store *store;
	const struct signing_key *key;
	uint32_t max_batch_bytes;	/* largest frame payload taken */
	uint32_t max_batch_events;
};

/* Binds and starts accepting. The caller keeps @opts' objects alive until
 * ingest_stop() has returned. 0, or -1 with @err. */
int ingest_start(const struct ingest_opts *opts, struct ingest **out, char *err, size_t errlen);
/* Where it listens ("127.0.0.1:7443"), the port as bound. */
void ingest_address(const struct ingest *ing, char *buf, size_t len);
/* Stops accepting, ends every connection (a batch being stored is stored
 * and answered first), waits for their threads, frees. NULL-safe. */
void ingest_stop(struct ingest *ing);

#endif
