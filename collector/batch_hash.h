/*
 * The two hashes the store needs of each event of a batch: its ledger
 * leaf hash (RFC 6962, SHA-256(0x00 || raw)) and its chain hash
 * (event_hash: what the next event's prev_hash must be). Together they
 * are most of an append's CPU outside SQLite, and need nothing stored:
 * they are taken before the write lock, and a large batch is hashed on
 * two threads.
 */
#ifndef DBWARD_COLLECTOR_BATCH_HASH_H
#define DBWARD_COLLECTOR_BATCH_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"
#include "common/event_json.h"
#include "common/merkle.h"

/* From this many events on, half the batch is hashed on a second thread. */
#define BATCH_HASH_SPLIT 256

struct event_hashes {
	merkle_hash leaf;
	uint8_t chain[EVENT_HASH_LEN];
};

/* Fills @out[0..n) for @events[0..n). */
void batch_hash(const struct store_event_in *events, size_t n, struct event_hashes *out);

#endif
