/*
 * One batch frame from an agent, start to end: decompress, decode, check
 * (every event names the certificate's agent, one epoch, within limits),
 * store, and the Ack that answers it. Nothing of a refused batch is
 * stored. No I/O here: collector/ingest.c moves the bytes.
 */
#ifndef DBWARD_COLLECTOR_BATCH_H
#define DBWARD_COLLECTOR_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"
#include "common/signing.h"

#define BATCH_ERR_LEN 256

struct batch_ctx {
	struct store *store;
	const struct signing_key *key;	/* signs the tree heads appends make */
	uint32_t max_events;		/* limits.max_batch_events */
};

struct batch_result {
	bool ok;
	char error[BATCH_ERR_LEN];	/* why it was refused (ok false) */
	size_t events;			/* in the batch */
	struct store_append_result stored;	/* ok true */
};

/* Handles the payload of one WIRE_BATCH frame from @agent_id (the
 * certificate's name). Always fills @out. */
void batch_ingest(const struct batch_ctx *ctx, const char *agent_id, const uint8_t *payload,
		  size_t len, struct batch_result *out);

/* A refusal: ok false, the reason formatted into error. Returns -1. */
__attribute__((format(printf, 2, 3)))
int batch_refuse(struct batch_result *out, const char *fmt, ...);

/* The WIRE_ACK frame answering @r, header included, in a malloc'd buffer.
 * 0 or -ENOMEM. */
int batch_ack_frame(const struct batch_result *r, uint8_t **out, size_t *out_len);

#endif
