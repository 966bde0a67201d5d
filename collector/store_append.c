/*
 * Appending a batch: one transaction, under the ledger's lock. New events
 * are stored with their columns and leaf hash and become ledger leaves in
 * batch order (every subtree of 2^STORE_NODE_MIN_LEVEL leaves or more they
 * complete goes to nodes); duplicates are counted;
 * gaps and chain breaks are recorded as alerts; the agent's acked_seq
 * advances over everything now contiguous; a new tree head is signed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/batch_hash.h"
#include "collector/store.h"
#include "collector/store_backend.h"
#include "collector/store_columns.h"
#include "collector/store_origin.h"
#include "collector/store_payload.h"
#include "collector/store_sessions.h"
#include "common/clock.h"
#include "common/event_json.h"
#include "common/log.h"

#define SEQS_PAGE 1000
/* A batch's new events whose previous seq was stored by an earlier batch,
 * not as the agent's newest, have that event's bytes read to check their
 * prev_hash: from at most this many distinct payloads (each decompressed
 * once, kept while the next lookups need it); the others are left to
 * verify, with an alert. An agent sending in order needs one per gap it
 * fills. */
#define STORED_PREV_PAYLOADS 8
/* Loading a batch's stored seqs reads at most this many rows per seq. */
#define SEQ_SPAN_PER_SEQ 16
/* Rows per multi-row INSERT: fewer statements, the same rows. */
#define EVENT_ROWS 16
/* An event row: its own columns, origin, leaf_index, leaf_hash, its bytes
 * (raw_inline, payload, payload_off, payload_len), id. */
#define EVENT_OWN_COLUMNS "agent_id, epoch, seq, ts, kind, verdict, statement_kind, sql"
static const enum store_column event_own[] = { COL_AGENT_ID, COL_EPOCH, COL_SEQ, COL_TS,
					       COL_KIND, COL_VERDICT, COL_STATEMENT_KIND,
					       COL_SQL };
#define EVENT_NOWN ((int)(sizeof(event_own) / sizeof(event_own[0])))
#define EVENT_PARAMS (EVENT_NOWN + 8)
#define NODE_ROWS 64
#define NODE_PARAMS 3

/* --- seqs of this agent and epoch: stored before, or added now ---------- */

struct seq_entry {
	uint64_t seq;			/* 0: free slot (seqs start at 1) */
	bool has_hash;			/* hash: its chain hash (event_hash) */
	bool has_leaf;			/* leaf: its leaf hash */
	bool unreadable;		/* stored, its bytes could not be read */
	uint8_t hash[EVENT_HASH_LEN];
	merkle_hash leaf;
};

struct seq_map {
	struct seq_entry *slots;
	size_t mask;
	size_t count;
};

static int seq_map_init(struct seq_map *m, size_t n)
{
	size_t cap = 16;

	while (cap < 2 * n + 2)
		cap *= 2;
	m->slots = calloc(cap, sizeof(*m->slots));
	m->mask = cap - 1;
	m->count = 0;
	return m->slots ? 0 : -ENOMEM;
}

static size_t seq_slot(const struct seq_map *m, uint64_t seq)
{
	size_t i = (size_t)((seq * 0x9e3779b97f4a7c15ull) >> 17) & m->mask;

	while (m->slots[i].seq && m->slots[i].seq != seq)
		i = (i + 1) & m->mask;
	return i;
}

static struct seq_entry *seq_find(const struct seq_map *m, uint64_t seq)
{
	struct seq_entry *e = &m->slots[seq_slot(m, seq)];

	return seq && e->seq == seq ? e : NULL;
}

/* Doubles the table; entries move (pointers into it go stale). */
static int seq_map_grow(struct seq_map *m)
{
	struct seq_map bigger;

	if (seq_map_init(&bigger, m->mask + 1) < 0)
		return -ENOMEM;
	for (size_t i = 0; i <= m->mask; i++)
		if (m->slots[i].seq)
			bigger.slots[seq_slot(&bigger, m->slots[i].seq)] = m->slots[i];
	bigger.count = m->count;
	free(m->slots);
	*m = bigger;
	return 0;
}

/* The entry for @seq, added if new; NULL when out of memory. */
static struct seq_entry *seq_put(struct seq_map *m, uint64_t seq)
{
	struct seq_entry *e;

	if (2 * (m->count + 1) > m->mask + 1 && seq_map_grow(m) < 0)
		return NULL;
	e = &m->slots[seq_slot(m, seq)];
	if (!e->seq) {
		e->seq = seq;
		m->count++;
	}
	return e;
}

/* --- the append's state ------------------------------------------------- */

struct agent_state {
	bool exists;
	uint64_t acked_seq, max_seq, events, last_ts;
	bool has_last_hash;
	uint8_t last_hash[EVENT_HASH_LEN];
};

struct append {
	struct store *s;
	struct store_conn *c;
	const char *agent_id;
	uint64_t epoch;
	const struct store_event_in *events;
	size_t n;
	const struct store_payload *payload;	/* NULL: none given */

	struct merkle_frontier frontier;
	struct agent_state agent;
	struct seq_map seen;
	bool *will_store;		/* per batch event: new, the first of its seq */
	bool *is_new;			/* per batch event: stored by now */
	bool in_payload;		/* new events are slices of payload */
	int64_t payload_id;		/* its row, once written */
	int64_t *origin_ids;		/* per batch event not stored before */
	struct session_event *session_events;	/* the new events of a session */
	size_t n_session_events;
	uint64_t sessions_counted;	/* sessions_counted.size */
	struct event_hashes *hashes;	/* per batch event, taken before the lock */

	/* Rows not yet sent: each buffer is flushed when full and at the end. */
	struct store_row event_rows[EVENT_ROWS];
	merkle_hash event_leaves[EVENT_ROWS];
	struct sql_value event_params[EVENT_ROWS * EVENT_PARAMS];
	int n_events;
	merkle_hash node_hashes[NODE_ROWS];
	struct sql_value node_params[NODE_ROWS * NODE_PARAMS];
	int n_nodes;

	uint32_t accepted, duplicates;
	unsigned stored_prev_payloads;	/* read by stored_hash */
	struct payload_plain prev_payload;	/* the last of them */
	uint64_t unchecked, first_unchecked;	/* prev_hash left to verify */
	uint64_t max_new_seq, max_ts, acked_seq;
	bool ledger_found;
	const char *why;		/* a failure that is not the backend's */
};

static int run(struct append *a, enum store_stmt id, const char *sql,
	       const struct sql_value *p, int n, sql_row_fn *fn, void *arg)
{
	return a->s->be->exec(a->c, id, sql, p, n, fn, arg, NULL);
}

/* @in's bytes lie within @p's decompressed batch (compared as addresses:
 * pointers into different objects do not compare in C). */
static bool in_payload(const struct store_payload *p, const struct store_event_in *in)
{
	uintptr_t at = (uintptr_t)in->raw, base = (uintptr_t)p->plain;

	return at >= base && in->len <= p->plain_len && at - base <= p->plain_len - in->len;
}

static int validate(const char *agent_id, const struct store_event_in *events, size_t n,
		    const struct store_payload *payload, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		const Dbward__V1__Event *ev = events[i].ev;

		if (!ev || !events[i].raw) {
			snprintf(err, errlen, "event %zu: missing", i);
			return -1;
		}
		if (payload && !in_payload(payload, &events[i])) {
			snprintf(err, errlen, "event %zu: its bytes are not in the batch's", i);
			return -1;
		}
		if (!ev->agent_id || strcmp(ev->agent_id, agent_id) != 0) {
			snprintf(err, errlen, "event %zu: agent_id is not %s", i, agent_id);
			return -1;
		}
		if (ev->epoch != events[0].ev->epoch) {
			snprintf(err, errlen, "event %zu: epoch differs from the batch's", i);
			return -1;
		}
		if (ev->seq == 0 || ev->seq > INT64_MAX || ev->epoch > INT64_MAX) {
			snprintf(err, errlen, "event %zu: seq or epoch out of range", i);
			return -1;
		}
	}
	return 0;
}

/* --- reading what is stored --------------------------------------------- */

static int ledger_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct append *a = arg;

	a->ledger_found = true;
	if (store_ledger_decode(cols, ncols, &a->frontier) < 0 || ncols < 3 ||
	    cols[2].type != SQL_INT)
		a->ledger_found = false;
	else	/* past the ledger: altered (verify says so); count on from its end */
		a->sessions_counted = (uint64_t)cols[2].i < a->frontier.size ? (uint64_t)cols[2].i
									    : a->frontier.size;
	return 0;
}

static int agent_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct agent_state *ag = arg;

	(void)ncols;
	ag->exists = true;
	ag->acked_seq = (uint64_t)cols[0].i;
	ag->max_seq = (uint64_t)cols[1].i;
	ag->has_last_hash = sql_blob_copy(&cols[2], ag->last_hash, EVENT_HASH_LEN);
	ag->events = (uint64_t)cols[3].i;
	ag->last_ts = (uint64_t)cols[4].i;
	return 0;
}

static int stored_seq_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct append *a = arg;
	struct seq_entry *e;

	(void)ncols;
	if (cols[0].i <= 0)
		return 0;
	if (!(e = seq_put(&a->seen, (uint64_t)cols[0].i)))
		return -ENOMEM;
	e->has_leaf = sql_blob_copy(&cols[1], e->leaf, MERKLE_HASH_LEN);
	return 0;
}

static int seq_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

/*
 * Which of the batch's seqs are stored already, with their leaf hashes (to
 * tell a resend from equivocation without reading their bytes). Close
 * seqs share a range query (one index range, not a lookup each); a range
 * grows only while it spans at most
 * SEQ_SPAN_PER_SEQ per seq it holds, so a batch {1, 2^62} reads two
 * points, never the history between them, and no batch reads more than
 * about SEQ_SPAN_PER_SEQ rows per event.
 */
static int load_batch_seqs(struct append *a)
{
	uint64_t *seqs = malloc(a->n * sizeof(*seqs));
	size_t i = 0;
	int rc = 0;

	if (!seqs)
		return -ENOMEM;
	for (size_t k = 0; k < a->n; k++)
		seqs[k] = a->events[k].ev->seq;
	qsort(seqs, a->n, sizeof(*seqs), seq_cmp);
	while (i < a->n && rc == 0) {
		size_t j = i + 1;
		struct sql_value p[4] = { sql_text(a->agent_id), sql_u64(a->epoch),
					  sql_u64(seqs[i]) };

		while (j < a->n && seqs[j] - seqs[i] <= SEQ_SPAN_PER_SEQ * (j - i + 1))
			j++;
		p[3] = sql_u64(seqs[j - 1]);
		if (run(a, STMT_BATCH_SEQS,
			"SELECT seq, leaf_hash FROM events WHERE agent_id = $1 AND epoch = $2 "
			"AND seq >= $3 AND seq <= $4",
			p, 4, stored_seq_row, a) < 0)
			rc = -EIO;
		i = j;
	}
	free(seqs);
	return rc;
}

static int load_state(struct append *a)
{
	struct sql_value key[] = { sql_text(a->agent_id), sql_u64(a->epoch) };

	if (run(a, STMT_LEDGER_LOCK, a->s->be->ledger_lock_sql, NULL, 0, ledger_row, a) < 0)
		return -EIO;
	if (!a->ledger_found) {
		a->why = "the ledger row or the sessions_counted row is missing or malformed";
		return -EBADMSG;
	}
	if (run(a, STMT_AGENT_GET,
		"SELECT acked_seq, max_seq, last_hash, events, last_ts FROM agents "
		"WHERE agent_id = $1 AND epoch = $2",
		key, 2, agent_row, &a->agent) < 0)
		return -EIO;
	return load_batch_seqs(a);
}

/* --- storing new events ------------------------------------------------- */

#define EVENT_INSERT                                                                    \
	"INSERT INTO events (" EVENT_OWN_COLUMNS ", origin, leaf_index, leaf_hash, raw_inline, " \
	"payload, payload_off, payload_len, id)"
#define NODE_INSERT "INSERT INTO nodes (level, idx, hash)"

static char *event_insert_many, *event_insert_one, *node_insert_many, *node_insert_one;
static pthread_once_t insert_sql_once = PTHREAD_ONCE_INIT;

static void insert_sql_init(void)
{
	event_insert_many = store_rows_sql(EVENT_INSERT " VALUES ", EVENT_PARAMS, EVENT_ROWS, "");
	event_insert_one = store_rows_sql(EVENT_INSERT " VALUES ", EVENT_PARAMS, 1, "");
	node_insert_many = store_rows_sql(NODE_INSERT " VALUES ", NODE_PARAMS, NODE_ROWS, "");
	node_insert_one = store_rows_sql(NODE_INSERT " VALUES ", NODE_PARAMS, 1, "");
}

/* Sends @n buffered rows: full buffers in one statement, else one by one. */
static int flush_rows(struct append *a, const struct sql_value *params, int n, int ncols,
		      int full, enum store_stmt many, const char *many_sql, enum store_stmt one,
		      const char *one_sql)
{
	if (!many_sql || !one_sql)
		return -ENOMEM;
	if (n == full)
		return run(a, many, many_sql, params, n * ncols, NULL, NULL);
	for (int r = 0; r < n; r++) {
		int rc = run(a, one, one_sql, params + r * ncols, ncols, NULL, NULL);

		if (rc < 0)
			return rc;
	}
	return 0;
}

static int flush_events(struct append *a)
{
	int rc = flush_rows(a, a->event_params, a->n_events, EVENT_PARAMS, EVENT_ROWS,
			    STMT_EVENT_INSERT_MANY, event_insert_many, STMT_EVENT_INSERT,
			    event_insert_one);

	for (int r = 0; r < a->n_events; r++)
		store_row_release(&a->event_rows[r]);
	a->n_events = 0;
	return rc;
}

static int flush_nodes(struct append *a)
{
	int rc = flush_rows(a, a->node_params, a->n_nodes, NODE_PARAMS, NODE_ROWS,
			    STMT_NODE_INSERT_MANY, node_insert_many, STMT_NODE_INSERT,
			    node_insert_one);

	a->n_nodes = 0;
	return rc;
}

/* Subtrees below STORE_NODE_MIN_LEVEL are not stored: the leaf hashes
 * are in the events' rows, and those subtrees are hashed from them. */
static int node_insert(void *arg, unsigned level, uint64_t index, const merkle_hash hash)
{
	struct append *a = arg;
	struct sql_value *p = &a->node_params[a->n_nodes * NODE_PARAMS];

	if (level < STORE_NODE_MIN_LEVEL)
		return 0;
	memcpy(a->node_hashes[a->n_nodes], hash, MERKLE_HASH_LEN);
	p[0] = sql_int(level);
	p[1] = sql_u64(index);
	p[2] = sql_blob(a->node_hashes[a->n_nodes], MERKLE_HASH_LEN);
	if (++a->n_nodes == NODE_ROWS)
		return flush_nodes(a);
	return 0;
}

static int event_insert(struct append *a, const struct store_event_in *in, int64_t origin,
			const uint8_t *leaf)
{
	struct store_row *row = &a->event_rows[a->n_events];
	struct sql_value *p = &a->event_params[a->n_events * EVENT_PARAMS];

	if (store_columns_derive_own(in->ev, row) < 0)
		return -ENOMEM;
	memcpy(a->event_leaves[a->n_events], leaf, MERKLE_HASH_LEN);
	for (int i = 0; i < EVENT_NOWN; i++)
		p[i] = row->v[event_own[i]];
	p[EVENT_NOWN] = sql_int(origin);
	p[EVENT_NOWN + 1] = sql_u64(a->frontier.size);
	p[EVENT_NOWN + 2] = sql_blob(a->event_leaves[a->n_events], MERKLE_HASH_LEN);
	if (a->in_payload) {
		p[EVENT_NOWN + 3] = sql_blob(NULL, 0);
		p[EVENT_NOWN + 4] = sql_int(a->payload_id);
		p[EVENT_NOWN + 5] = sql_u64((uint64_t)(in->raw - a->payload->plain));
		p[EVENT_NOWN + 6] = sql_u64(in->len);
	} else {
		p[EVENT_NOWN + 3] = sql_blob(in->raw, in->len);
		p[EVENT_NOWN + 4] = p[EVENT_NOWN + 5] = p[EVENT_NOWN + 6] =
			(struct sql_value){ .type = SQL_NULL };
	}
	p[EVENT_NOWN + 7] = sql_u64(a->frontier.size + 1);
	if (++a->n_events == EVENT_ROWS)
		return flush_events(a);
	return 0;
}

static int add_event(struct append *a, size_t i)
{
	const struct store_event_in *in = &a->events[i];
	const struct event_hashes *h = &a->hashes[i];
	struct seq_entry *e;
	int rc;

	rc = event_insert(a, in, a->origin_ids[i], h->leaf);
	if (rc < 0)
		return rc;
	rc = merkle_frontier_append(&a->frontier, h->leaf, node_insert, a);
	if (rc < 0)
		return rc;
	if (session_event_wanted(in->ev))
		a->session_events[a->n_session_events++] = (struct session_event){
			.origin = a->origin_ids[i], .ev = in->ev, .id = a->frontier.size,
		};
	e = seq_put(&a->seen, in->ev->seq);
	if (!e)
		return -ENOMEM;
	memcpy(e->hash, h->chain, EVENT_HASH_LEN);
	memcpy(e->leaf, h->leaf, MERKLE_HASH_LEN);
	e->has_hash = e->has_leaf = true;
	a->is_new[i] = true;
	a->accepted++;
	if (in->ev->seq > a->max_new_seq)
		a->max_new_seq = in->ev->seq;
	if (in->ev->ts > a->max_ts)
		a->max_ts = in->ev->ts;
	return 0;
}

static int alert(struct append *a, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A seq stored already: the same bytes are a resend (whose chain hash is
 * then the stored event's too), others equivocation. */
static int check_resend(struct append *a, size_t i, struct seq_entry *stored)
{
	if (!stored->has_leaf)
		return 0;	/* not a hash: verify reports the row */
	if (memcmp(a->hashes[i].leaf, stored->leaf, MERKLE_HASH_LEN) == 0) {
		memcpy(stored->hash, a->hashes[i].chain, EVENT_HASH_LEN);
		stored->has_hash = true;
		return 0;
	}
	return alert(a, "equivocation", "seq %llu resent with different bytes",
		     (unsigned long long)a->events[i].ev->seq);
}

/* Which events will be stored: not stored before, the first of their seq
 * in the batch. */
static int mark_stored(struct append *a)
{
	struct seq_map batch = { 0 };

	if (seq_map_init(&batch, a->n) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < a->n; i++) {
		uint64_t seq = a->events[i].ev->seq;

		if (seq_find(&a->seen, seq) || seq_find(&batch, seq))
			continue;
		if (!seq_put(&batch, seq)) {
			free(batch.slots);
			return -ENOMEM;
		}
		a->will_store[i] = true;
	}
	free(batch.slots);
	return 0;
}

static int origin_altered(void *arg, int64_t altered_id, int64_t new_id)
{
	return alert(arg, "origin_altered",
		     "origins row %lld no longer hashes to its key: its key or values were altered; "
		     "the key and this batch's events now go to row %lld",
		     (long long)altered_id, (long long)new_id);
}

/* Who sent each event that will be stored, for all of them at once. */
static int resolve_origins(struct append *a)
{
	const uint8_t **keys = calloc(a->n, sizeof(*keys));
	int rc;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < a->n; i++)
		if (a->hashes[i].has_origin)
			keys[i] = a->hashes[i].origin;
	rc = origin_resolve_events(a->s->be, a->c, a->s->origins, a->events, keys,
				   a->will_store, a->n, a->origin_ids, origin_altered, a);
	if (rc == -EPROTO)
		a->why = "an origin was neither found nor given back by its INSERT";
	free(keys);
	return rc;
}

/*
 * The batch's payload is stored, and its new events as slices of it, when
 * they make at least half of its decompressed bytes: a resend that is
 * mostly duplicates stores its few new events' own bytes, so that reading
 * any event decompresses at most about twice its batch's share of events.
 * The payload's id is the first new event's.
 */
static int payload_write(struct append *a)
{
	uint64_t stored = 0;
	struct sql_value p[2];

	if (!a->payload)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (a->will_store[i])
			stored += a->events[i].len;
	if (stored == 0 || 2 * stored < a->payload->plain_len)
		return 0;
	a->in_payload = true;
	a->payload_id = (int64_t)a->frontier.size + 1;
	p[0] = sql_int(a->payload_id);
	p[1] = sql_blob(a->payload->data, a->payload->len);
	return run(a, STMT_PAYLOAD_INSERT, "INSERT INTO payloads (id, data) VALUES ($1, $2)", p, 2,
		   NULL, NULL);
}

static int add_events(struct append *a)
{
	int rc = mark_stored(a);

	if (rc == 0)
		rc = resolve_origins(a);
	if (rc == 0)
		rc = payload_write(a);
	/* Events another writer left uncounted go first: they are below ours. */
	if (rc == 0 && a->sessions_counted < a->frontier.size)
		rc = sessions_catch_up(a->s->be, a->c, a->sessions_counted);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < a->n; i++) {
		struct seq_entry *e = seq_find(&a->seen, a->events[i].ev->seq);

		if (e) {
			a->duplicates++;
			rc = check_resend(a, i, e);
			if (rc < 0)
				return rc;
			continue;
		}
		rc = add_event(a, i);
		if (rc < 0)
			return rc;
	}
	rc = flush_events(a);
	if (rc == 0)
		rc = flush_nodes(a);
	if (rc == 0)
		rc = sessions_add(a->s->be, a->c, a->agent_id, a->session_events,
				  a->n_session_events);
	return rc;
}

/* --- alerts: gaps and chain breaks -------------------------------------- */

static int alert(struct append *a, const char *kind, const char *fmt, ...)
{
	char detail[256];
	struct sql_value p[5];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	log_warn("store: %s alert for agent %s epoch %llu: %s", kind, a->agent_id,
		 (unsigned long long)a->epoch, detail);
	p[0] = sql_u64(clock_realtime_ns());
	p[1] = sql_text(a->agent_id);
	p[2] = sql_u64(a->epoch);
	p[3] = sql_text(kind);
	p[4] = sql_text(detail);
	return run(a, STMT_ALERT_INSERT,
		   "INSERT INTO alerts (ts, agent_id, epoch, kind, detail) VALUES ($1, $2, $3, $4, $5)",
		   p, 5, NULL, NULL);
}

static int int_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)ncols;
	*(uint64_t *)arg = cols[0].type == SQL_INT ? (uint64_t)cols[0].i : 0;
	return 0;
}

/* @seq - 1 is not stored: says which run before @seq is missing. */
static int gap_alert(struct append *a, uint64_t seq)
{
	struct sql_value p[] = { sql_text(a->agent_id), sql_u64(a->epoch), sql_u64(seq) };
	uint64_t below = 0;

	if (run(a, STMT_MAX_SEQ_BELOW,
		"SELECT CAST(max(seq) AS BIGINT) FROM events "
		"WHERE agent_id = $1 AND epoch = $2 AND seq < $3",
		p, 3, int_row, &below) < 0)
		return -EIO;
	if (below + 1 == seq - 1)
		return alert(a, "gap", "seq %llu missing", (unsigned long long)(seq - 1));
	return alert(a, "gap", "seq %llu..%llu missing", (unsigned long long)(below + 1),
		     (unsigned long long)(seq - 1));
}

/* A stored event found by its seq: its hash, when its bytes are in its
 * row; where they are, when in a payload. */
struct stored_ref {
	struct seq_entry *e;
	bool in_payload, payload_is_int;
	int64_t payload, off, len;
};

/* Columns: raw_inline, then SQL_EVENT_PAYLOAD_REF. */
static int stored_ref_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct stored_ref *r = arg;
	const struct sql_value *ref = &cols[1];

	(void)ncols;
	if (ref[0].type == SQL_NULL) {
		if (cols[0].type != SQL_BLOB) {
			r->e->unreadable = true;	/* an altered row: verify reports it */
			return 0;
		}
		event_hash(cols[0].p, cols[0].len, r->e->hash);
		r->e->has_hash = true;
		return 0;
	}
	r->in_payload = true;
	r->payload_is_int = ref[0].type == SQL_INT && ref[1].type == SQL_INT &&
			    ref[2].type == SQL_INT;
	r->payload = ref[0].i;
	r->off = ref[1].i;
	r->len = ref[2].i;
	return 0;
}

/* @e's bytes from payload @r, decompressed once per append while the
 * lookups keep needing it, STORED_PREV_PAYLOADS payloads at most. */
static int stored_hash_in_payload(struct append *a, const struct stored_ref *r,
				  struct seq_entry *e)
{
	const uint8_t *at;
	int rc;

	if (!r->payload_is_int) {
		e->unreadable = true;	/* an altered row: verify reports it */
		return 0;
	}
	if (!payload_plain_is(&a->prev_payload, r->payload)) {
		if (a->stored_prev_payloads == STORED_PREV_PAYLOADS) {
			e->unreadable = true;
			return 0;
		}
		a->stored_prev_payloads++;
		rc = payload_plain_load(a->s, a->c, r->payload, &a->prev_payload);
		if (rc < 0)
			return rc;
	}
	at = payload_plain_slice(&a->prev_payload, r->off, r->len);
	if (!at) {
		e->unreadable = true;
		return 0;
	}
	event_hash(at, (size_t)r->len, e->hash);
	e->has_hash = true;
	return 0;
}

/* The hash of a stored event that came before this batch: none when it
 * is not stored (a gap); unreadable when its bytes cannot be read or the
 * append has read STORED_PREV_PAYLOADS payloads already. */
static int stored_hash(struct append *a, struct seq_entry *e)
{
	struct sql_value p[] = { sql_text(a->agent_id), sql_u64(a->epoch), sql_u64(e->seq) };
	struct stored_ref r = { .e = e };

	if (e->seq == a->agent.max_seq && a->agent.has_last_hash) {
		memcpy(e->hash, a->agent.last_hash, EVENT_HASH_LEN);
		e->has_hash = true;
		return 0;
	}
	if (run(a, STMT_EVENT_BYTES_BY_SEQ,
		"SELECT raw_inline, " SQL_EVENT_PAYLOAD_REF " FROM events "
		"WHERE agent_id = $1 AND epoch = $2 AND seq = $3",
		p, 3, stored_ref_row, &r) < 0)
		return -EIO;
	return r.in_payload ? stored_hash_in_payload(a, &r, e) : 0;
}

static bool is_zero_hash(const ProtobufCBinaryData *h)
{
	static const uint8_t zero[EVENT_HASH_LEN];

	return h->len == 0 || (h->len == EVENT_HASH_LEN && memcmp(h->data, zero, h->len) == 0);
}

static int check_chain(struct append *a, const Dbward__V1__Event *ev)
{
	struct seq_entry before;
	const struct seq_entry *prev;
	int rc;

	if (ev->seq == 1) {
		if (is_zero_hash(&ev->prev_hash))
			return 0;
		return alert(a, "chain", "seq 1: prev_hash is not zero");
	}
	prev = seq_find(&a->seen, ev->seq - 1);
	if (!prev || !prev->has_hash) {
		/* Not in the batch: stored before, or missing. */
		before = (struct seq_entry){ .seq = ev->seq - 1 };
		rc = stored_hash(a, &before);
		if (rc < 0)
			return rc;
		if (before.unreadable) {
			if (!a->unchecked++)
				a->first_unchecked = ev->seq;
			return 0;
		}
		if (!before.has_hash)
			return gap_alert(a, ev->seq);
		prev = &before;
	}
	if (ev->prev_hash.len == EVENT_HASH_LEN &&
	    memcmp(ev->prev_hash.data, prev->hash, EVENT_HASH_LEN) == 0)
		return 0;
	return alert(a, "chain", "seq %llu: prev_hash is not the hash of seq %llu",
		     (unsigned long long)ev->seq, (unsigned long long)(ev->seq - 1));
}

static int check_new_events(struct append *a)
{
	for (size_t i = 0; i < a->n; i++) {
		int rc;

		if (!a->is_new[i])
			continue;
		rc = check_chain(a, a->events[i].ev);
		if (rc < 0)
			return rc;
	}
	if (!a->unchecked)
		return 0;
	return alert(a, "unchecked",
		     "prev_hash of %llu event(s) from seq %llu not checked: the stored events "
		     "before them are unreadable (their batch's payload is gone) or in more "
		     "batches than one append reads; verify checks every chain",
		     (unsigned long long)a->unchecked, (unsigned long long)a->first_unchecked);
}

/* --- acked_seq, the agent row, the ledger and its head ------------------ */

struct advance {
	uint64_t *acked;
	bool progressed;
	bool broken;
	unsigned rows;
};

static int after_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct advance *v = arg;

	(void)ncols;
	v->rows++;
	if (v->broken || (uint64_t)cols[0].i != *v->acked + 1) {
		v->broken = true;
		return 0;
	}
	(*v->acked)++;
	v->progressed = true;
	return 0;
}

/* Stored seqs beyond the batch (a gap just filled): one page of them. */
static int advance_stored(struct append *a, uint64_t *acked, bool *progressed)
{
	struct sql_value p[] = { sql_text(a->agent_id), sql_u64(a->epoch), sql_u64(*acked),
				 sql_int(SEQS_PAGE) };
	struct advance v = { .acked = acked };
	int rc = run(a, STMT_SEQS_AFTER,
		     "SELECT seq FROM events WHERE agent_id = $1 AND epoch = $2 AND seq > $3 "
		     "ORDER BY seq LIMIT $4",
		     p, 4, after_row, &v);

	*progressed = v.progressed && !v.broken && v.rows == SEQS_PAGE;
	return rc;
}

static int advance_acked(struct append *a)
{
	uint64_t acked = a->agent.acked_seq;
	bool more = true;

	while (more) {
		while (seq_find(&a->seen, acked + 1))
			acked++;
		more = false;
		/* Stored seqs beyond: only the batch's own are in seen. */
		if (acked < a->agent.max_seq) {
			if (advance_stored(a, &acked, &more) < 0)
				return -EIO;
		}
	}
	a->acked_seq = acked;
	return 0;
}

static int write_agent(struct append *a)
{
	const struct agent_state *ag = &a->agent;
	uint64_t max_seq = ag->max_seq > a->max_new_seq ? ag->max_seq : a->max_new_seq;
	const struct seq_entry *last = seq_find(&a->seen, max_seq);
	bool have_hash = last && last->has_hash;
	struct sql_value p[] = {
		sql_text(a->agent_id),
		sql_u64(a->epoch),
		sql_u64(a->acked_seq),
		sql_u64(max_seq),
		have_hash ? sql_blob(last->hash, EVENT_HASH_LEN)
			  : ag->has_last_hash ? sql_blob(ag->last_hash, EVENT_HASH_LEN)
					      : (struct sql_value){ .type = SQL_NULL },
		sql_u64(ag->events + a->accepted),
		sql_u64(ag->last_ts > a->max_ts ? ag->last_ts : a->max_ts),
	};

	return run(a, STMT_AGENT_UPSERT,
		   "INSERT INTO agents (agent_id, epoch, acked_seq, max_seq, last_hash, events, "
		   "last_ts) VALUES ($1, $2, $3, $4, $5, $6, $7) "
		   "ON CONFLICT (agent_id, epoch) DO UPDATE SET acked_seq = excluded.acked_seq, "
		   "max_seq = excluded.max_seq, last_hash = excluded.last_hash, "
		   "events = excluded.events, last_ts = excluded.last_ts",
		   p, 7, NULL, NULL);
}

static int write_ledger(struct append *a, const struct signing_key *key)
{
	const struct merkle_frontier *f = &a->frontier;
	struct sql_value ledger[] = { sql_u64(f->size), sql_blob(f->hashes, f->n * MERKLE_HASH_LEN) };
	struct signed_tree_head h = { .size = f->size, .ts = clock_realtime_ns() };
	struct sql_value head[5];

	if (run(a, STMT_LEDGER_WRITE, "UPDATE ledger SET size = $1, frontier = $2 WHERE id = 1",
		ledger, 2, NULL, NULL) < 0)
		return -EIO;
	/* add_events counted every event up to here into sessions. */
	if (run(a, STMT_SESSION_COUNTED_WRITE, "UPDATE sessions_counted SET size = $1 WHERE id = 1",
		ledger, 1, NULL, NULL) < 0)
		return -EIO;
	merkle_frontier_root(f, h.root);
	if (!key || tree_head_sign(key, &h) < 0) {
		a->why = key ? "signing the tree head failed" : "no signing key";
		return -EPERM;
	}
	head[0] = sql_u64(h.size);
	head[1] = sql_blob(h.root, MERKLE_HASH_LEN);
	head[2] = sql_u64(h.ts);
	head[3] = sql_blob(h.key_id, SIGNING_KEY_ID_LEN);
	head[4] = sql_blob(h.signature, SIGNING_SIG_LEN);
	return run(a, STMT_HEAD_INSERT,
		   "INSERT INTO tree_heads (size, root, ts, key_id, signature) "
		   "VALUES ($1, $2, $3, $4, $5)",
		   head, 5, NULL, NULL);
}

/* Everything between BEGIN and COMMIT. */
static int append_run(struct append *a, const struct signing_key *key)
{
	int rc = load_state(a);

	if (rc == 0)
		rc = add_events(a);
	if (rc < 0 || a->accepted == 0) {
		a->acked_seq = a->agent.acked_seq;
		return rc;
	}
	rc = check_new_events(a);
	if (rc == 0)
		rc = advance_acked(a);
	if (rc == 0)
		rc = write_agent(a);
	if (rc == 0)
		rc = write_ledger(a, key);
	return rc;
}

static int append_locked(struct append *a, const struct signing_key *key, char *err,
			 size_t errlen)
{
	const struct store_backend *be = a->s->be;
	int rc = be->begin(a->c, true);

	if (rc == 0)
		rc = append_run(a, key);
	if (rc == 0)
		rc = be->commit(a->c);
	origin_cache_end(a->s->origins, rc == 0);
	if (rc == 0)
		return 0;
	if (a->why)
		snprintf(err, errlen, "storing the batch: %s", a->why);
	else if (rc == -EIO)
		snprintf(err, errlen, "storing the batch: %s", be->errmsg(a->c));
	else
		snprintf(err, errlen, "storing the batch: %s", strerror(-rc));
	be->rollback(a->c);
	return -1;
}

static void append_free(struct append *a)
{
	for (int r = 0; r < a->n_events; r++)
		store_row_release(&a->event_rows[r]);
	free(a->seen.slots);
	payload_plain_release(&a->prev_payload);
	free(a->will_store);
	free(a->is_new);
	free(a->origin_ids);
	free(a->session_events);
	free(a->hashes);
	free(a);
}

/* The append's state (too big for a thread's stack: the row buffers). */
static struct append *append_new(struct store *s, const char *agent_id,
				 const struct store_event_in *events, size_t n,
				 const struct store_payload *payload)
{
	struct append *a = calloc(1, sizeof(*a));

	if (!a)
		return NULL;
	*a = (struct append){ .s = s, .agent_id = agent_id, .events = events, .n = n,
			      .payload = payload, .prev_payload = PAYLOAD_PLAIN_NONE };
	a->epoch = events[0].ev->epoch;
	a->will_store = calloc(n, sizeof(*a->will_store));
	a->is_new = calloc(n, sizeof(*a->is_new));
	a->origin_ids = calloc(n, sizeof(*a->origin_ids));
	a->session_events = malloc(n * sizeof(*a->session_events));
	a->hashes = malloc(n * sizeof(*a->hashes));
	if (!a->will_store || !a->is_new || !a->origin_ids || !a->session_events || !a->hashes ||
	    seq_map_init(&a->seen, n + 1) < 0) {
		append_free(a);
		return NULL;
	}
	return a;
}

int store_append(struct store *s, const char *agent_id, const struct store_event_in *events,
		 size_t n, const struct signing_key *key, struct store_append_result *res,
		 char *err, size_t errlen)
{
	return store_append_batch(s, agent_id, events, n, NULL, key, res, err, errlen);
}

int store_append_batch(struct store *s, const char *agent_id,
		       const struct store_event_in *events, size_t n,
		       const struct store_payload *payload, const struct signing_key *key,
		       struct store_append_result *res, char *err, size_t errlen)
{
	struct append *a;
	int rc;

	memset(res, 0, sizeof(*res));
	if (n == 0)
		return 0;
	if (validate(agent_id, events, n, payload, err, errlen) < 0)
		return -1;
	a = append_new(s, agent_id, events, n, payload);
	if (!a) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_once(&insert_sql_once, insert_sql_init);
	batch_hash(events, n, a->hashes);
	pthread_mutex_lock(&s->write_lock);
	a->c = s->writer;
	rc = append_locked(a, key, err, errlen);
	pthread_mutex_unlock(&s->write_lock);
	if (rc == 0) {
		res->accepted = a->accepted;
		res->duplicates = a->duplicates;
		res->epoch = a->epoch;
		res->acked_seq = a->acked_seq;
	} else {
		log_error("store: batch of %zu events from %s refused: %s", n, agent_id, err);
	}
	append_free(a);
	return rc;
}
