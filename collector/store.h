/*
 * Where the collector keeps the audit trail: events, the ledger (a Merkle
 * tree over every accepted event, RFC 6962), signed tree heads and alerts.
 * Two backends behind one interface, chosen by URL:
 *
 *   sqlite:/var/lib/dbward/audit.db      embedded default (WAL)
 *   postgres://user@host:port/db         fleets: collectors are stateless
 *   postgresql://...                     replicas over one database
 *
 * Both keep the same tables (docs/collector.md, "Storage") and share the
 * ledger logic; a backend only runs SQL. Every event is stored as the
 * exact bytes the agent hashed, plus columns decoded from them for
 * queries (the bytes either in the event's row or in the batch it came
 * in, store_payload.h); verification re-derives the columns from the
 * bytes, so a changed column is caught as surely as a changed byte.
 *
 * Threads: one struct store may be used from many threads; appends are
 * serialized (and across replicas on PostgreSQL, by a row lock on the
 * ledger's head). Queries run concurrently with appends.
 */
#ifndef DBWARD_COLLECTOR_STORE_H
#define DBWARD_COLLECTOR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/merkle.h"
#include "common/receipt.h"
#include "common/signing.h"
#include "dbward/v1/audit.pb-c.h"

#define STORE_ERR_LEN 512

struct store;

/* Opens (creating the schema if missing). 0, or -1 with @err. */
int store_open(const char *url, struct store **out, char *err, size_t errlen);
void store_close(struct store *s);

/* --- appending --------------------------------------------------------- */

/* One event of a batch: the bytes as received, and them decoded. */
struct store_event_in {
	const uint8_t *raw;
	size_t len;
	const Dbward__V1__Event *ev;
};

struct store_append_result {
	uint32_t accepted;	/* new events, now ledger leaves */
	uint32_t duplicates;	/* (agent, epoch, seq) already stored */
	uint64_t epoch;
	uint64_t acked_seq;	/* highest seq with every seq <= it stored */
};

/*
 * Stores one batch from @agent_id (the certificate's name; the caller has
 * checked every event names it and that they share one epoch) in ONE
 * transaction, durable when this returns 0:
 *   - dedupe by (agent_id, epoch, seq): duplicates are counted, not stored;
 *   - new events become ledger leaves in batch order;
 *   - a seq beyond the agent's next expected one records a "gap" alert; a
 *     prev_hash that is not the hash of the stored seq - 1 records a
 *     "chain" alert (the events are stored all the same: losing them would
 *     be worse);
 *   - when anything was added, a new tree head is signed with @key.
 * Returns 0, or -1 with @err (nothing of the batch is stored).
 */
int store_append(struct store *s, const char *agent_id, const struct store_event_in *events,
		 size_t n, const struct signing_key *key, struct store_append_result *res,
		 char *err, size_t errlen);

/* The batch a set of events came in: @data as the agent sent it (what
 * wire_decompress reads), @plain its decompressed bytes, which each
 * event's raw lies within. */
struct store_payload {
	const uint8_t *data;
	size_t len;
	const uint8_t *plain;
	size_t plain_len;
};

/* store_append, with the batch the events came in: when the events it
 * stores make at least half of @payload's decompressed bytes, @payload is
 * stored once and each event as its slice of it, not a copy of its bytes
 * (store_schema.h, schema 4). @payload NULL: store_append. */
int store_append_batch(struct store *s, const char *agent_id,
		       const struct store_event_in *events, size_t n,
		       const struct store_payload *payload, const struct signing_key *key,
		       struct store_append_result *res, char *err, size_t errlen);

/* --- reading ----------------------------------------------------------- */

/* Every set member narrows the result; NULL / 0 / -1 means "any". */
struct store_filter {
	uint64_t since_ns, until_ns;	/* event ts in [since, until) */
	const char *agent_id;
	int64_t pid;			/* -1: any */
	const char *comm;
	const char *user;		/* OS user name */
	const char *pod;		/* pod UID, name or namespace/name */
	const char *db_user;
	const char *database;
	const char *verdict;		/* allow | deny */
	const char *kind;		/* connection_open | connection_close | statement */
	const char *session_id;
	const char *text;		/* substring of the SQL text */
	uint64_t after_id;		/* paging: ids greater than this */
	uint32_t limit;			/* 0: 100; at most 10000 */
};

struct store_event {
	uint64_t id;			/* row id, ascending in arrival order */
	uint64_t leaf_index;
	const char *agent_id;
	uint64_t epoch, seq, ts;
	const uint8_t *raw;		/* NULL: unreadable (its batch payload is gone
					 * or altered; store_verify says more) */
	size_t len;
};

/* Callbacks return 0 to go on, anything else to stop (returned as is). */
typedef int store_event_fn(void *arg, const struct store_event *e);

/* Matching events in id order. 0, a callback's value, or -EIO with the
 * backend's error logged. */
int store_events(struct store *s, const struct store_filter *f, store_event_fn *fn, void *arg);

/* What a page of events for a client may decompress: its events' batches
 * (store_payload.h), about 1 MiB each as agents send them. */
#define STORE_PAGE_READ_BUDGET (64u << 20)

/* store_events reading at most about @budget bytes of decompressed batches
 * (0: no limit): *@cut is true when the page stops before its limit for
 * that reason, and more may follow its last event. */
int store_events_page(struct store *s, const struct store_filter *f, size_t budget,
		      store_event_fn *fn, void *arg, bool *cut);
/* One event: 0, -ENOENT, -EIO. */
int store_event_by_id(struct store *s, uint64_t id, store_event_fn *fn, void *arg);

struct store_session {
	const char *session_id;
	const char *agent_id;
	uint64_t first_ts, last_ts;
	uint64_t statements, denied;
	bool closed;			/* its connection_close is stored */
	uint64_t open_event_id;		/* 0: none stored */
};
typedef int store_session_fn(void *arg, const struct store_session *s);
/* Sessions with at least one event matching @f, newest first. */
int store_sessions(struct store *s, const struct store_filter *f, store_session_fn *fn,
		   void *arg);

struct store_alert {
	uint64_t id, ts;
	const char *agent_id;
	uint64_t epoch;
	const char *kind;		/* gap | chain */
	const char *detail;
};
typedef int store_alert_fn(void *arg, const struct store_alert *a);
/* Alerts with ids above @after_id, oldest first, at most @limit (0: 100;
 * at most 10000), as store_events pages. */
int store_alerts(struct store *s, uint64_t after_id, uint32_t limit, store_alert_fn *fn,
		 void *arg);
/* How many alerts there are in all. */
int store_alert_count(struct store *s, uint64_t *n);

struct store_agent {
	const char *agent_id;
	uint64_t epoch;
	uint64_t acked_seq;		/* contiguous from 1 */
	uint64_t events;
	uint64_t last_ts;
};
typedef int store_agent_fn(void *arg, const struct store_agent *a);

/* Where a page of agents ends: rows come in (agent_id, epoch) order. */
struct store_agent_cursor {
	const char *agent_id;		/* NULL: before the first */
	uint64_t epoch;
};
/* Agents and epochs after @after, at most @limit (0: 100; at most 10000). */
int store_agents(struct store *s, const struct store_agent_cursor *after, uint32_t limit,
		 store_agent_fn *fn, void *arg);
/* How many (agent, epoch) rows there are in all. */
int store_agent_count(struct store *s, uint64_t *n);

/* The newest signed tree head: 0, -ENOENT (empty ledger), -EIO. */
int store_tree_head(struct store *s, struct signed_tree_head *out);

/* A receipt for event @id against the newest tree head (public_key left
 * for the caller). 0, -ENOENT, -EBADMSG (its bytes are unreadable: its
 * batch's payload is gone or altered), -ENOMEM, -EIO. */
int store_receipt(struct store *s, uint64_t id, struct receipt *out);

/*
 * The newest tree head and the RFC 6962 consistency proof from the tree of
 * its first @old_size leaves to it, from one snapshot: what a holder of an
 * older head (a receipt's) checks the ledger kept its history with.
 * 0; -ENOENT: no tree head yet; -ERANGE: @old_size is 0 or more than the
 * newest head's size (@head is still filled in); -EIO.
 */
int store_consistency(struct store *s, uint64_t old_size, struct signed_tree_head *head,
		      merkle_hash proof[MERKLE_MAX_PROOF], size_t *n);

/* --- verifying --------------------------------------------------------- */

struct store_problem {
	uint64_t event_id;		/* 0: not about one event */
	const char *agent_id;		/* NULL when event_id is 0 */
	uint64_t epoch, seq;
	const char *what;		/* "column sql differs from the event's bytes" */
};
typedef int store_problem_fn(void *arg, const struct store_problem *p);

struct store_verify_stats {
	uint64_t events;
	uint64_t tree_size;
	uint64_t agents;
};

/*
 * Re-checks everything from the stored bytes up: each row's columns
 * against its own bytes; each leaf hash; every stored node against its
 * children; the newest tree head's root and its signature with @key (NULL:
 * skip the signature); every tree head's consistency with the newest; every
 * agent chain (seq without gaps, prev_hash = hash of seq - 1). Each finding
 * goes to @fn. Returns the number of problems (0: intact) or -EIO.
 */
int store_verify(struct store *s, const struct verify_key *key, store_problem_fn *fn, void *arg,
		 struct store_verify_stats *stats);

#endif
