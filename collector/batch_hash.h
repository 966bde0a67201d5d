/*
 * The hashes the store needs of each event of a batch: its ledger leaf
 * hash (RFC 6962, SHA-256(0x00 || raw)), its chain hash (event_hash: what
 * the next event's prev_hash must be) and the key of who sent it
 * (store_origin.h). Together they are most of an append's CPU outside
 * SQLite, and need nothing stored: they are taken before the write lock,
 * and a large batch is hashed on two threads.
 */
#ifndef DBWARD_COLLECTOR_BATCH_HASH_H
#define DBWARD_COLLECTOR_BATCH_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"
#include "collector/store_origin.h"
#include "common/event_json.h"
#include "common/merkle.h"

/* From this many events on, half the batch is hashed on a second thread. */
#define BATCH_HASH_SPLIT 256

struct event_hashes {
	merkle_hash leaf;
	uint8_t chain[EVENT_HASH_LEN];
	uint8_t origin[ORIGIN_KEY_LEN];
	bool has_origin;		/* false: out of memory, taken under the lock */
};

/* Fills @out[0..n) for @events[0..n). */
void batch_hash(const struct store_event_in *events, size_t n, struct event_hashes *out);

#endif
