/*
 * Inside the store: what a storage backend implements (SQLite, PostgreSQL)
 * and what the shared logic (store.c, store_append.c, store_verify.c) uses.
 * A backend only connects, runs SQL and frames transactions; the ledger,
 * dedupe, chains and verification are written once, above it.
 *
 * SQL is written once too, with PostgreSQL placeholders ($1, $2 ...); the
 * SQLite backend reads them as ?1, ?2. Integers travel as int64 (uint64
 * values are stored bit for bit), text NUL-terminated, blobs as bytes.
 */
#ifndef DBWARD_COLLECTOR_STORE_BACKEND_H
#define DBWARD_COLLECTOR_STORE_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store.h"

struct origin_cache;

#define STORE_MAX_PARAMS 512
#define STORE_MAX_COLUMNS 32
#define STORE_READERS 4
/* nodes holds subtrees of 2^this leaves and more; the smaller ones are
 * hashed from the events' leaf_hash when read (store_node_get). */
#define STORE_NODE_MIN_LEVEL 4

enum sql_type {
	SQL_NULL,
	SQL_INT,
	SQL_TEXT,		/* p: NUL-terminated, len without the NUL */
	SQL_BLOB,
};

struct sql_value {
	enum sql_type type;
	int64_t i;
	const void *p;
	size_t len;
};

static inline struct sql_value sql_int(int64_t v)
{
	return (struct sql_value){ .type = SQL_INT, .i = v };
}

static inline struct sql_value sql_u64(uint64_t v)
{
	return sql_int((int64_t)v);
}

/* NULL stays NULL. */
struct sql_value sql_text(const char *s);

static inline struct sql_value sql_blob(const void *p, size_t len)
{
	return (struct sql_value){ .type = SQL_BLOB, .p = p, .len = len };
}

/* Columns of one result row, valid during the callback only. Returns 0 to
 * go on, anything else to stop (handed back by exec as is). */
typedef int sql_row_fn(void *arg, const struct sql_value *cols, int ncols);

/*
 * Statements the shared code runs often. A backend prepares each once per
 * connection, on first use, and keeps it; one id always names the same
 * SQL. STMT_DYNAMIC is SQL built per call (filters), never cached.
 */
enum store_stmt {
	STMT_DYNAMIC = -1,
	STMT_LEDGER_LOCK,
	STMT_LEDGER_READ,
	STMT_LEDGER_WRITE,
	STMT_AGENT_GET,
	STMT_AGENT_UPSERT,
	STMT_BATCH_SEQS,
	STMT_EVENT_INSERT,
	STMT_EVENT_INSERT_MANY,
	STMT_EVENT_BYTES_BY_SEQ,
	STMT_PAYLOAD_INSERT,
	STMT_PAYLOAD_GET,
	STMT_EVENT_BY_ID,
	STMT_EVENT_COUNT,
	STMT_MAX_SEQ_BELOW,
	STMT_SEQS_AFTER,
	STMT_NODE_INSERT,
	STMT_NODE_INSERT_MANY,
	STMT_NODE_GET,
	STMT_LEAVES,
	STMT_ALERT_INSERT,
	STMT_ALERTS,
	STMT_ALERT_COUNT,
	STMT_AGENTS,
	STMT_SESSION_UPSERT,
	STMT_SESSION_CATCH_UP,
	STMT_SESSION_COUNTED,
	STMT_SESSION_COUNTED_WRITE,
	STMT_AGENT_COUNT,
	STMT_HEAD_INSERT,
	STMT_HEAD_NEWEST,
	STMT_HEADS_AFTER,
	STMT_VERIFY_EVENTS_FIRST,
	STMT_VERIFY_EVENTS_NEXT,
	STMT_VERIFY_LEAVES,
	STMT_VERIFY_NODES,
	STMT_VERIFY_LEVELS,
	STMT_VERIFY_AGENTS,
	STMT_VERIFY_SESSIONS,
	STMT_COUNT
};

struct store_conn;		/* one backend connection */

struct store_backend {
	const char *name;
	/* The SQL function f(haystack, needle) > 0 when needle occurs. */
	const char *substr_fn;
	/* Reads the ledger row (size, frontier) and sessions_counted.size and, on
	 * backends where replicas share the database, locks both rows until
	 * the transaction ends (locked, each is read as last committed, where a
	 * subquery would give a waiter's older snapshot). */
	const char *ledger_lock_sql;
	/* The ledger row's lock alone, for the schema's last steps (before
	 * sessions_counted exists). A lock, not an update: a new row version
	 * would make a replica's schema script (INSERT .. ON CONFLICT) wait on
	 * us while holding the locks our ALTERs need. */
	const char *settle_lock_sql;

	/* @writer: the connection appends go through (it creates the schema). */
	int (*connect)(const char *url, bool writer, struct store_conn **out, char *err,
		       size_t errlen);
	void (*disconnect)(struct store_conn *c);
	/*
	 * Runs one statement. Rows go to @fn; *@changes (may be NULL) gets
	 * the rows an INSERT/UPDATE/DELETE touched. 0, -EIO (the message in
	 * errmsg()), or @fn's non-zero value. Inside a transaction, a call
	 * with neither @fn nor @changes may be queued: its failure then
	 * surfaces at a later call or at commit, and the transaction is lost.
	 */
	int (*exec)(struct store_conn *c, enum store_stmt id, const char *sql,
		    const struct sql_value *params, int n, sql_row_fn *fn, void *arg,
		    int64_t *changes);
	/* @write: serialized with other writers of the database from here
	 * (SQLite BEGIN IMMEDIATE). A read transaction is one snapshot. */
	int (*begin)(struct store_conn *c, bool write);
	int (*commit)(struct store_conn *c);
	void (*rollback)(struct store_conn *c);
	const char *(*errmsg)(struct store_conn *c);
};

extern const struct store_backend store_backend_sqlite;
extern const struct store_backend store_backend_pg;

struct store {
	const struct store_backend *be;

	pthread_mutex_t write_lock;	/* appends, one at a time */
	struct store_conn *writer;
	struct origin_cache *origins;	/* the writer's, under write_lock */

	pthread_mutex_t pool_lock;
	pthread_cond_t pool_free;
	struct store_conn *readers[STORE_READERS];
	unsigned n_idle;
	struct store_conn *idle[STORE_READERS];
};

/* A read connection of the pool (waits while all are in use). */
struct store_conn *store_reader_get(struct store *s);
void store_reader_put(struct store *s, struct store_conn *c);

/* A read snapshot on @c: 0 or -EIO (logged). */
int store_read_begin(struct store *s, struct store_conn *c);
/* Ends it: commits when @rc >= 0 (then returns @rc, or -EIO if that
 * fails), rolls back otherwise (returns @rc). */
int store_read_end(struct store *s, struct store_conn *c, int rc);

/* Runs schema statements one by one, each at once (not queued): 0, or the
 * first failure's -EIO (the message on @c). */
int store_exec_steps(const struct store_backend *be, struct store_conn *c,
		     const char *const *steps, size_t n);

/* be->exec, logging the backend's message when it fails. */
int store_exec(struct store *s, struct store_conn *c, enum store_stmt id, const char *sql,
	       const struct sql_value *params, int n, sql_row_fn *fn, void *arg);

/* "HEAD($1, $2), ($3, $4)TAIL" for @rows rows of @ncols placeholders; one
 * column: "HEAD$1, $2TAIL". malloc'd, NULL when out of memory. */
char *store_rows_sql(const char *head, int ncols, int rows, const char *tail);

/* Where an event's bytes are when not in its row (store_payload.h): the
 * last columns of every select that reads events. */
#define SQL_EVENT_PAYLOAD_REF "events.payload, events.payload_off, events.payload_len"
#define SQL_EVENT_PAYLOAD_NCOLS 3

/* One event row, as every reader wants it: its bytes in column 6, for
 * store_exec_events (store_payload.h). */
#define SQL_EVENT_COLUMNS                                                               \
	"events.id, events.leaf_index, events.agent_id, events.epoch, events.seq, "     \
	"events.ts, events.raw_inline, " SQL_EVENT_PAYLOAD_REF
#define SQL_EVENT_BYTES_COL 6
#define SQL_EVENT_BY_ID "SELECT " SQL_EVENT_COLUMNS " FROM events WHERE id = $1"

/* A perfect subtree's hash: from nodes at STORE_NODE_MIN_LEVEL and above,
 * from the leaf hashes of its events below. 0, -ENOENT or -EIO. */
int store_node_get(struct store *s, struct store_conn *c, unsigned level, uint64_t idx,
		   merkle_hash out);

/* The newest tree head on @c: 0, -ENOENT or -EIO. */
int store_head_newest(struct store *s, struct store_conn *c, struct signed_tree_head *out);

/* The ledger row: its size and frontier (decoded). 0 or -EIO. */
int store_ledger_decode(const struct sql_value *cols, int ncols, struct merkle_frontier *f);

/* Copies a blob column into a fixed-size field: true when the sizes match. */
bool sql_blob_copy(const struct sql_value *v, void *out, size_t len);

#endif
