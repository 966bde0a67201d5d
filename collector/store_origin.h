/*
 * Origins: who sent an event (session id, pid, comm, user, pod, database
 * user and name), stored once per distinct value and pointed at by every
 * event that has it (store_schema.h, schema 3). The writer keeps a cache
 * of the origins it has seen, so an append looks one up in the database
 * only the first time a connection's events arrive.
 */
#ifndef DBWARD_COLLECTOR_STORE_ORIGIN_H
#define DBWARD_COLLECTOR_STORE_ORIGIN_H

#include <stdint.h>

#include "collector/store_backend.h"
#include "collector/store_columns.h"

/* The identity columns of a row, COL_SESSION_ID .. COL_DATABASE. */
#define ORIGIN_FIRST_COL COL_SESSION_ID
#define ORIGIN_NCOLS (COL_DATABASE - COL_SESSION_ID + 1)

#define ORIGIN_KEY_LEN 32

struct origin_cache;

/* Bytes an origin key is hashed from, reused from key to key. */
struct origin_key_buf {
	uint8_t *data;
	size_t cap;
};

/* The key of who sent @ev (a domain-separated SHA-256 of its values as
 * store_columns_derive_origin gives them). Needs no lock: batch_hash
 * takes it with the other hashes. 0 or -ENOMEM. */
int origin_key_of_event(const Dbward__V1__Event *ev, struct origin_key_buf *kb,
			uint8_t key[ORIGIN_KEY_LEN]);

struct origin_cache *origin_cache_new(void);
void origin_cache_free(struct origin_cache *oc);

/* An origins row found by its key whose values no longer hash to it
 * (altered): it gives the key up to a new row with the true values. */
typedef int origin_altered_fn(void *arg, int64_t altered_id, int64_t new_id);

/*
 * The origin ids of a batch's events (@want[i] false: skipped), on the
 * writer connection @c inside its write transaction; @keys[i], when not
 * NULL, is event i's key already taken. From the cache, else
 * found or inserted together, one SELECT and one INSERT per chunk of new
 * origins (a round trip each on PostgreSQL, however many connections the
 * batch opens). A row found whose values do not hash to its key is not
 * used: its key is set to NULL (so `verify` keeps reporting it), a row
 * with the event's values takes the key, and @altered is called with both
 * ids. 0, -ENOMEM, -EIO (the backend's message on @c), -EPROTO, or what
 * @altered returned.
 */
int origin_resolve_events(const struct store_backend *be, struct store_conn *c,
			  struct origin_cache *oc, const struct store_event_in *events,
			  const uint8_t *const *keys, const bool *want, size_t n, int64_t *ids,
			  origin_altered_fn *altered, void *arg);

/* The write transaction ended: committed (the cache keeps what it learnt)
 * or rolled back (origins inserted in it are gone: forget them). */
void origin_cache_end(struct origin_cache *oc, bool committed);

/* Calls @fn with the id of each origins row whose key is not the hash of
 * its values (tampered with). 0, -ENOMEM or -EIO. */
int origin_check_keys(const struct store_backend *be, struct store_conn *c,
		      void (*fn)(void *arg, int64_t id), void *arg);

/*
 * A schema-2 database: fills origins from the identity columns of every
 * event, points each event at its origin, drops the old indexes and
 * renames the old columns (schema2_session_id ...). Runs
 * on @c inside a write transaction the caller opened. 0, -ENOMEM or -EIO.
 */
int origin_upgrade_schema2(const struct store_backend *be, struct store_conn *c);

#endif
