/*
 * Verifying the store from its bytes up, in one read snapshot, reporting
 * every problem found (never stopping at the first):
 *   1. the ledger row and the newest signed tree head agree; the head's
 *      root is the root of the stored nodes; its signature verifies;
 *   2. each event, walked in (agent, epoch, seq) order: its columns are
 *      what its bytes say; its stored leaf hash is the hash of its bytes;
 *      its seq follows the previous one and its prev_hash is that one's
 *      hash; each agent row matches the events stored for it;
 *   3. every leaf of the tree has its event (none deleted);
 *   4. every node of the lowest stored level is the hash of its events'
 *      leaf hashes, every node above it the hash of its two children, and
 *      each level holds exactly the nodes a tree of this size has;
 *   5. every older tree head is consistent with the newest;
 *   6. each origin's key is the hash of its values, and each sessions row
 *      is what its session's events sum to (store_sessions.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store.h"
#include "collector/store_backend.h"
#include "collector/store_columns.h"
#include "collector/store_origin.h"
#include "collector/store_payload.h"
#include "collector/store_schema.h"
#include "common/event_json.h"
#include "common/log.h"
#include "common/wire.h"

#define PAGE_ROWS 2000
#define NODE_CACHE 4096

struct verify_agent {
	char *agent_id;
	uint64_t epoch, acked_seq, events;
	bool seen;
};

struct node_cache_entry {
	bool used;
	uint8_t level;
	uint64_t idx;
	merkle_hash hash;
};

/* The chain being walked: one (agent, epoch). */
struct verify_group {
	bool open;
	char *agent_id;
	uint64_t epoch;
	uint64_t prev_seq;		/* 0: none yet */
	bool prev_has_hash;
	uint8_t prev_hash[EVENT_HASH_LEN];
	uint64_t events;
	uint64_t contiguous;		/* every seq <= this is stored */
};

struct verify {
	struct store *s;
	struct store_conn *c;
	const struct verify_key *key;
	store_problem_fn *fn;
	void *arg;
	int problems;
	bool stopped;
	struct store_verify_stats *stats;

	struct merkle_frontier frontier;
	bool ledger_ok;
	uint64_t sessions_size;		/* sessions_counted.size */
	struct signed_tree_head head;
	bool have_head;
	uint64_t tree_size;
	uint8_t *leaf_seen;		/* a bit per leaf */

	struct verify_agent *agents;
	size_t n_agents;
	struct verify_group group;

	/* Keyset paging: the last row of the previous page. */
	char *key_agent;
	char *page_agent;		/* the copy bound to the page's query */
	int64_t key_a, key_b;
	unsigned page_rows;

	struct node_cache_entry *cache;
	struct block *block;
};

__attribute__((format(printf, 6, 7))) static void report(struct verify *v, uint64_t event_id,
							 const char *agent_id, uint64_t epoch,
							 uint64_t seq, const char *fmt, ...)
{
	char what[320];
	struct store_problem p = {
		.event_id = event_id,
		.agent_id = event_id ? agent_id : NULL,
		.epoch = epoch,
		.seq = seq,
		.what = what,
	};
	va_list ap;

	v->problems++;
	if (v->stopped || !v->fn)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (v->fn(v->arg, &p))
		v->stopped = true;
}

#define report_store(v, ...) report((v), 0, NULL, 0, 0, __VA_ARGS__)

static int run(struct verify *v, enum store_stmt id, const char *sql, const struct sql_value *p,
	       int n, sql_row_fn *fn, void *arg)
{
	int rc = store_exec(v->s, v->c, id, sql, p, n, fn, arg);

	/* A row callback stops the walk (with 1) when the caller's fn did. */
	return rc > 0 ? 0 : rc;
}

/* --- nodes, through a small cache --------------------------------------- */

static int get_node(void *arg, unsigned level, uint64_t idx, merkle_hash out)
{
	struct verify *v = arg;
	struct node_cache_entry *e = &v->cache[(idx * 64 + level) % NODE_CACHE];
	int rc;

	if (e->used && e->level == level && e->idx == idx) {
		memcpy(out, e->hash, MERKLE_HASH_LEN);
		return 0;
	}
	rc = store_node_get(v->s, v->c, level, idx, out);
	if (rc == 0) {
		*e = (struct node_cache_entry){ .used = true, .level = (uint8_t)level, .idx = idx };
		memcpy(e->hash, out, MERKLE_HASH_LEN);
	}
	return rc;
}

/* --- 1. the ledger and the newest tree head ----------------------------- */

static int ledger_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;

	v->ledger_ok = store_ledger_decode(cols, ncols, &v->frontier) == 0;
	if (ncols > 2 && cols[2].type == SQL_INT)
		v->sessions_size = (uint64_t)cols[2].i;
	return 0;
}

static void check_head_root(struct verify *v)
{
	merkle_hash root;
	int rc = merkle_root_at(v->head.size, get_node, v, root);

	if (rc == -EIO)
		return;
	if (rc < 0)
		report_store(v, "the nodes under the newest tree head (size %llu) are incomplete",
			     (unsigned long long)v->head.size);
	else if (memcmp(root, v->head.root, MERKLE_HASH_LEN) != 0)
		report_store(v, "the newest tree head's root (size %llu) differs from the stored "
				"nodes: the ledger was altered",
			     (unsigned long long)v->head.size);
	if (v->key && !tree_head_verify(v->key, &v->head))
		report_store(v, "the newest tree head's signature (size %llu) does not verify",
			     (unsigned long long)v->head.size);
}

static void check_frontier(struct verify *v)
{
	merkle_hash root;

	if (!v->ledger_ok) {
		report_store(v, "the ledger row is missing or malformed");
		return;
	}
	if (!v->have_head) {
		if (v->frontier.size)
			report_store(v, "the ledger has %llu leaves but no signed tree head",
				     (unsigned long long)v->frontier.size);
		return;
	}
	if (v->frontier.size != v->head.size) {
		report_store(v, "the ledger has %llu leaves, the newest tree head %llu",
			     (unsigned long long)v->frontier.size, (unsigned long long)v->head.size);
		return;
	}
	merkle_frontier_root(&v->frontier, root);
	if (memcmp(root, v->head.root, MERKLE_HASH_LEN) != 0)
		report_store(v, "the ledger's frontier differs from the newest tree head");
}

static int check_ledger(struct verify *v)
{
	int rc;

	if (run(v, STMT_LEDGER_READ, "SELECT size, frontier, (SELECT size FROM sessions_counted "
		"WHERE id = 1) FROM ledger WHERE id = 1",
		NULL, 0, ledger_row, v) < 0)
		return -EIO;
	rc = store_head_newest(v->s, v->c, &v->head);
	if (rc == -EIO)
		return -EIO;
	v->have_head = rc == 0;
	check_frontier(v);
	v->tree_size = v->have_head ? v->head.size : v->ledger_ok ? v->frontier.size : 0;
	v->stats->tree_size = v->tree_size;
	if (v->have_head)
		check_head_root(v);
	v->leaf_seen = calloc(v->tree_size / 8 + 1, 1);
	return v->leaf_seen ? 0 : -ENOMEM;
}

/* --- agents ------------------------------------------------------------- */

static int agent_cmp(const void *a, const void *b)
{
	const struct verify_agent *x = a, *y = b;
	int c = strcmp(x->agent_id, y->agent_id);

	if (c)
		return c;
	return x->epoch < y->epoch ? -1 : x->epoch > y->epoch;
}

static int agent_load_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;
	struct verify_agent *grown, *a;

	(void)ncols;
	grown = realloc(v->agents, (v->n_agents + 1) * sizeof(*v->agents));
	if (!grown)
		return -ENOMEM;
	v->agents = grown;
	a = &v->agents[v->n_agents];
	*a = (struct verify_agent){
		.agent_id = strdup(cols[0].type == SQL_TEXT ? cols[0].p : ""),
		.epoch = (uint64_t)cols[1].i,
		.acked_seq = (uint64_t)cols[2].i,
		.events = (uint64_t)cols[3].i,
	};
	if (!a->agent_id)
		return -ENOMEM;
	v->n_agents++;
	return 0;
}

static int load_agents(struct verify *v)
{
	int rc = run(v, STMT_VERIFY_AGENTS, "SELECT agent_id, epoch, acked_seq, events FROM agents",
		     NULL, 0, agent_load_row, v);

	if (rc < 0)
		return rc;
	if (v->n_agents)
		qsort(v->agents, v->n_agents, sizeof(*v->agents), agent_cmp);
	for (size_t i = 0; i < v->n_agents; i++)
		if (i == 0 || strcmp(v->agents[i].agent_id, v->agents[i - 1].agent_id) != 0)
			v->stats->agents++;
	return 0;
}

static void group_finish(struct verify *v)
{
	struct verify_group *g = &v->group;
	struct verify_agent key = { .agent_id = g->agent_id, .epoch = g->epoch }, *a;

	if (!g->open)
		return;
	a = v->n_agents ? bsearch(&key, v->agents, v->n_agents, sizeof(*v->agents), agent_cmp)
			: NULL;
	if (!a) {
		report_store(v, "agent %s epoch %llu: events are stored but the agent has no row",
			     g->agent_id, (unsigned long long)g->epoch);
	} else {
		a->seen = true;
		if (a->events != g->events)
			report_store(v, "agent %s epoch %llu: its row counts %llu events, %llu are "
					"stored",
				     g->agent_id, (unsigned long long)g->epoch,
				     (unsigned long long)a->events, (unsigned long long)g->events);
		if (a->acked_seq != g->contiguous)
			report_store(v, "agent %s epoch %llu: acked_seq is %llu, the stored events "
					"are contiguous up to seq %llu",
				     g->agent_id, (unsigned long long)g->epoch,
				     (unsigned long long)a->acked_seq,
				     (unsigned long long)g->contiguous);
	}
	free(g->agent_id);
	*g = (struct verify_group){ .open = false };
}

static void agents_unseen(struct verify *v)
{
	for (size_t i = 0; i < v->n_agents; i++) {
		const struct verify_agent *a = &v->agents[i];

		if (!a->seen && a->events)
			report_store(v, "agent %s epoch %llu: its row counts %llu events, none are "
					"stored",
				     a->agent_id, (unsigned long long)a->epoch,
				     (unsigned long long)a->events);
	}
}

/* --- 2. each event ------------------------------------------------------ */

/* Who an event is, for reports: from its bytes when they decode. */
struct event_name {
	uint64_t id;
	const char *agent_id;
	uint64_t epoch, seq;
};

#define report_event(v, n, ...) report((v), (n)->id, (n)->agent_id, (n)->epoch, (n)->seq, __VA_ARGS__)

static void check_columns(struct verify *v, const struct event_name *name,
			  const Dbward__V1__Event *ev, const struct sql_value *stored)
{
	struct store_row row;

	if (store_columns_derive(ev, &row) < 0) {
		report_event(v, name, "out of memory checking the columns");
		return;
	}
	for (int i = 0; i < STORE_NCOLUMNS; i++)
		if (!store_column_equal(&stored[i], &row.v[i]))
			report_event(v, name, "column %s differs from the event's bytes",
				     store_column_names[i]);
	store_row_release(&row);
}

static void check_leaf(struct verify *v, const struct event_name *name, int64_t leaf,
		       const struct sql_value *raw, const struct sql_value *stored)
{
	merkle_hash hash;

	if ((uint64_t)leaf + 1 != name->id)
		report_event(v, name, "column leaf_index (%lld) is not the event's id - 1",
			     (long long)leaf);
	if (leaf < 0 || (uint64_t)leaf >= v->tree_size) {
		report_event(v, name, "leaf index %lld is outside the ledger's %llu leaves",
			     (long long)leaf, (unsigned long long)v->tree_size);
		return;
	}
	if (v->leaf_seen[leaf / 8] & (1u << (leaf % 8)))
		report_event(v, name, "leaf index %lld belongs to another event too",
			     (long long)leaf);
	v->leaf_seen[leaf / 8] |= (uint8_t)(1u << (leaf % 8));
	if (stored->type != SQL_BLOB || stored->len != MERKLE_HASH_LEN) {
		report_event(v, name, "column leaf_hash is not a hash: the ledger was altered");
		return;
	}
	if (raw->type != SQL_BLOB)
		return;		/* reported as missing */
	merkle_leaf_hash(raw->p, raw->len, hash);
	if (memcmp(hash, stored->p, MERKLE_HASH_LEN) != 0)
		report_event(v, name, "leaf hash differs: event bytes altered");
}

static bool is_zero_hash(const ProtobufCBinaryData *h)
{
	static const uint8_t zero[EVENT_HASH_LEN];

	return h->len == 0 || (h->len == EVENT_HASH_LEN && memcmp(h->data, zero, h->len) == 0);
}

static int group_enter(struct verify *v, const char *agent_id, uint64_t epoch)
{
	struct verify_group *g = &v->group;

	if (g->open && g->epoch == epoch && strcmp(g->agent_id, agent_id) == 0)
		return 0;
	group_finish(v);
	g->agent_id = strdup(agent_id);
	if (!g->agent_id)
		return -ENOMEM;
	g->open = true;
	g->epoch = epoch;
	return 0;
}

static void check_prev_hash(struct verify *v, const struct event_name *name, uint64_t seq,
			    const Dbward__V1__Event *ev)
{
	const struct verify_group *g = &v->group;

	if (seq == 1) {
		if (!is_zero_hash(&ev->prev_hash))
			report_event(v, name, "prev_hash of seq 1 is not zero");
		return;
	}
	if (g->prev_seq != seq - 1 || !g->prev_has_hash)
		return;
	if (ev->prev_hash.len != EVENT_HASH_LEN ||
	    memcmp(ev->prev_hash.data, g->prev_hash, EVENT_HASH_LEN) != 0)
		report_event(v, name, "prev_hash is not the hash of seq %llu: the chain is broken",
			     (unsigned long long)(seq - 1));
}

/* @agent_id, @epoch, @seq as stored: the walk's order. */
static int check_chain(struct verify *v, const struct event_name *name, const char *agent_id,
		       uint64_t epoch, uint64_t seq, const Dbward__V1__Event *ev,
		       const struct sql_value *raw)
{
	struct verify_group *g;

	if (group_enter(v, agent_id, epoch) < 0)
		return -ENOMEM;
	g = &v->group;
	g->events++;
	if (seq == g->prev_seq + 2)
		report_event(v, name, "seq %llu missing before this event",
			     (unsigned long long)(seq - 1));
	else if (seq > g->prev_seq + 2)
		report_event(v, name, "seq %llu..%llu missing before this event",
			     (unsigned long long)(g->prev_seq + 1), (unsigned long long)(seq - 1));
	if (seq == g->contiguous + 1)
		g->contiguous = seq;
	if (ev)
		check_prev_hash(v, name, seq, ev);
	g->prev_seq = seq;
	g->prev_has_hash = raw->type == SQL_BLOB;
	if (g->prev_has_hash)
		event_hash(raw->p, raw->len, g->prev_hash);
	return 0;
}

/* Columns: id, leaf_index, the event's bytes, leaf_hash, then every
 * store_column, then where the bytes are (store_exec_events). */
static int event_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;
	const struct sql_value *stored = &cols[4];
	const char *agent_id = stored[COL_AGENT_ID].type == SQL_TEXT ? stored[COL_AGENT_ID].p : "";
	struct event_name name = {
		.id = (uint64_t)cols[0].i,
		.agent_id = agent_id,
		.epoch = (uint64_t)stored[COL_EPOCH].i,
		.seq = (uint64_t)stored[COL_SEQ].i,
	};
	Dbward__V1__Event *ev = NULL;
	int rc;

	(void)ncols;
	v->stats->events++;
	v->page_rows++;
	if (cols[2].type != SQL_BLOB) {
		report_event(v, &name, "the event's bytes are missing: its batch payload was "
				       "deleted or altered");
	} else if (wire_event_unpack(cols[2].p, cols[2].len, &ev) < 0) {
		ev = NULL;
		report_event(v, &name, "the event's bytes do not decode: event bytes altered");
	} else {
		name.agent_id = ev->agent_id;
		name.epoch = ev->epoch;
		name.seq = ev->seq;
		check_columns(v, &name, ev, stored);
	}
	check_leaf(v, &name, cols[1].i, &cols[2], &cols[3]);
	rc = check_chain(v, &name, agent_id, (uint64_t)stored[COL_EPOCH].i,
			 (uint64_t)stored[COL_SEQ].i, ev, &cols[2]);
	wire_event_free(ev);
	free(v->key_agent);
	v->key_agent = strdup(agent_id);
	v->key_a = stored[COL_EPOCH].i;
	v->key_b = stored[COL_SEQ].i;
	if (rc < 0 || !v->key_agent)
		return -ENOMEM;
	return v->stopped;
}

/* The columns in store_column order, an origin's absent values as NULL
 * again; an event whose origin is missing reads as having none. */
#define VERIFY_EVENTS_SELECT                                                             \
	"SELECT events.id, events.leaf_index, events.raw_inline, events.leaf_hash, "    \
	"events.agent_id, events.epoch, events.seq, events.ts, events.kind, "           \
	"NULLIF(o.session_id, ''), NULLIF(o.pid, -1), NULLIF(o.comm, ''), "             \
	"NULLIF(o.user_name, ''), NULLIF(o.pod_uid, ''), NULLIF(o.pod_name, ''), "      \
	"NULLIF(o.pod_namespace, ''), NULLIF(o.db_user, ''), NULLIF(o.database, ''), "  \
	"events.verdict, events.statement_kind, events.sql, " SQL_EVENT_PAYLOAD_REF " "  \
	"FROM events LEFT JOIN origins o ON o.id = events.origin "

/* A page of events, each with its bytes (run's return convention). */
static int run_events(struct verify *v, enum store_stmt id, const char *sql,
		      const struct sql_value *p, int n)
{
	int rc = store_exec_events(v->s, v->c, id, sql, p, n, 2, event_row, v);

	return rc > 0 ? 0 : rc;
}

static int walk_events(struct verify *v)
{
	struct sql_value p[4];
	int rc;

	v->page_rows = PAGE_ROWS;
	for (bool first = true; v->page_rows == PAGE_ROWS && !v->stopped; first = false) {
		v->page_rows = 0;
		p[3] = sql_int(PAGE_ROWS);
		if (first) {
			rc = run_events(v, STMT_VERIFY_EVENTS_FIRST,
					VERIFY_EVENTS_SELECT "ORDER BY agent_id, epoch, seq LIMIT $1",
					&p[3], 1);
		} else {
			/* Rows of this page replace key_agent: bind a copy. */
			free(v->page_agent);
			v->page_agent = v->key_agent;
			v->key_agent = NULL;
			p[0] = sql_text(v->page_agent);
			p[1] = sql_int(v->key_a);
			p[2] = sql_int(v->key_b);
			rc = run_events(v, STMT_VERIFY_EVENTS_NEXT,
					VERIFY_EVENTS_SELECT
					"WHERE (agent_id, epoch, seq) > ($1, $2, $3) "
					"ORDER BY agent_id, epoch, seq LIMIT $4",
					p, 4);
		}
		if (rc < 0)
			return rc;
	}
	group_finish(v);
	return 0;
}

static int count_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)ncols;
	*(uint64_t *)arg = (uint64_t)cols[0].i;
	return 0;
}

/* --- 3. leaves without events ------------------------------------------- */

static bool leaf_seen(const struct verify *v, uint64_t i)
{
	return v->leaf_seen[i / 8] & (1u << (i % 8));
}

static int check_leaves(struct verify *v)
{
	uint64_t rows = 0;

	if (run(v, STMT_EVENT_COUNT, "SELECT CAST(count(*) AS BIGINT) FROM events", NULL, 0,
		count_row, &rows) < 0)
		return -EIO;
	if (rows != v->stats->events && !v->stopped)
		report_store(v, "%llu event rows could not be walked in (agent, epoch, seq) order",
			     (unsigned long long)(rows - v->stats->events));
	for (uint64_t i = 0; i < v->tree_size && !v->stopped; i++) {
		uint64_t first = i;

		if (leaf_seen(v, i))
			continue;
		while (i + 1 < v->tree_size && !leaf_seen(v, i + 1))
			i++;
		if (first == i)
			report_store(v, "leaf %llu of the ledger has no event row: an event was "
					"deleted",
				     (unsigned long long)i);
		else
			report_store(v, "leaves %llu..%llu of the ledger have no event rows: events "
					"were deleted",
				     (unsigned long long)first, (unsigned long long)i);
	}
	return 0;
}

/* --- 4. nodes ----------------------------------------------------------- */

#define BLOCK_LEAVES (1u << STORE_NODE_MIN_LEVEL)

/* The leaves of one node of the lowest stored level, walked in id order. */
struct block {
	uint64_t idx;			/* the node's index at STORE_NODE_MIN_LEVEL */
	unsigned n;			/* leaves seen in order, from its first */
	bool broken;			/* a leaf missing or malformed: reported */
	merkle_hash leaf[BLOCK_LEAVES];
};

static void block_check(struct verify *v, struct block *b)
{
	uint64_t first = b->idx * BLOCK_LEAVES;
	merkle_hash want, got;

	if (b->broken || b->n != BLOCK_LEAVES || first + BLOCK_LEAVES > v->tree_size)
		return;
	/* Missing: counted by check_levels. */
	if (store_node_get(v->s, v->c, STORE_NODE_MIN_LEVEL, b->idx, want) < 0)
		return;
	merkle_subtree_fold(b->leaf, BLOCK_LEAVES, got);
	if (memcmp(want, got, MERKLE_HASH_LEN) != 0)
		report_store(v, "ledger node %u/%llu differs from the leaf hashes of events "
				"%llu..%llu: the ledger was altered",
			     STORE_NODE_MIN_LEVEL, (unsigned long long)b->idx,
			     (unsigned long long)first + 1,
			     (unsigned long long)first + BLOCK_LEAVES);
}

/* Columns: id, leaf_hash. */
static int block_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;
	struct block *b = v->block;
	uint64_t leaf = (uint64_t)cols[0].i - 1;

	(void)ncols;
	v->page_rows++;
	v->key_a = cols[0].i;
	if (leaf / BLOCK_LEAVES != b->idx) {
		block_check(v, b);
		*b = (struct block){ .idx = leaf / BLOCK_LEAVES };
	}
	if (leaf % BLOCK_LEAVES != b->n || !sql_blob_copy(&cols[1], b->leaf[b->n], MERKLE_HASH_LEN))
		b->broken = true;
	else
		b->n++;
	return v->stopped;
}

/* Each stored node of the lowest level against its events' leaf hashes. */
static int walk_blocks(struct verify *v)
{
	struct sql_value p[2];
	int rc = 0;

	v->block = calloc(1, sizeof(*v->block));
	if (!v->block)
		return -ENOMEM;
	v->key_a = 0;
	v->page_rows = PAGE_ROWS;
	while (v->page_rows == PAGE_ROWS && !v->stopped && rc == 0) {
		v->page_rows = 0;
		p[0] = sql_int(v->key_a);
		p[1] = sql_int(PAGE_ROWS);
		rc = run(v, STMT_VERIFY_LEAVES,
			 "SELECT id, leaf_hash FROM events WHERE id > $1 ORDER BY id LIMIT $2", p, 2,
			 block_row, v);
	}
	if (rc == 0 && !v->stopped)
		block_check(v, v->block);
	return rc < 0 ? -EIO : 0;
}

/* Columns: level, idx, hash, left child's hash, right child's hash. */
static int node_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;
	long long level = (long long)cols[0].i, idx = (long long)cols[1].i;
	merkle_hash parent;

	(void)ncols;
	v->page_rows++;
	v->key_a = cols[0].i;
	v->key_b = cols[1].i;
	if (cols[3].type != SQL_BLOB || cols[3].len != MERKLE_HASH_LEN ||
	    cols[4].type != SQL_BLOB || cols[4].len != MERKLE_HASH_LEN) {
		report_store(v, "ledger node %lld/%lld lacks a child", level, idx);
		return v->stopped;
	}
	merkle_node_hash(cols[3].p, cols[4].p, parent);
	if (cols[2].type != SQL_BLOB || cols[2].len != MERKLE_HASH_LEN ||
	    memcmp(parent, cols[2].p, MERKLE_HASH_LEN) != 0)
		report_store(v, "ledger node %lld/%lld differs from its children: the ledger was "
				"altered",
			     level, idx);
	return v->stopped;
}

static int walk_nodes(struct verify *v)
{
	struct sql_value p[3];

	/* (min, max): every node above the lowest stored level. */
	v->key_a = STORE_NODE_MIN_LEVEL;
	v->key_b = INT64_MAX;
	v->page_rows = PAGE_ROWS;
	while (v->page_rows == PAGE_ROWS && !v->stopped) {
		v->page_rows = 0;
		p[0] = sql_int(v->key_a);
		p[1] = sql_int(v->key_b);
		p[2] = sql_int(PAGE_ROWS);
		if (run(v, STMT_VERIFY_NODES,
			"SELECT p.level, p.idx, p.hash, l.hash, r.hash FROM nodes p "
			"LEFT JOIN nodes l ON l.level = p.level - 1 AND l.idx = 2 * p.idx "
			"LEFT JOIN nodes r ON r.level = p.level - 1 AND r.idx = 2 * p.idx + 1 "
			"WHERE (p.level, p.idx) > ($1, $2) ORDER BY p.level, p.idx LIMIT $3",
			p, 3, node_row, v) < 0)
			return -EIO;
	}
	return 0;
}

struct level_check {
	struct verify *v;
	uint64_t levels_seen;
};

/* Columns: level, count, max idx. */
static int level_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct level_check *lc = arg;
	struct verify *v = lc->v;
	int64_t level = cols[0].i;
	uint64_t count = (uint64_t)cols[1].i, max = (uint64_t)cols[2].i;
	uint64_t want = level >= STORE_NODE_MIN_LEVEL && level < 64 ? v->tree_size >> level : 0;

	(void)ncols;
	if (level >= 0 && level < 64)
		lc->levels_seen |= 1ull << level;
	if (level < STORE_NODE_MIN_LEVEL && count)
		report_store(v, "ledger level %lld holds %llu nodes; levels below %u are not "
				"stored",
			     (long long)level, (unsigned long long)count, STORE_NODE_MIN_LEVEL);
	else if (count != want || (count && max != count - 1))
		report_store(v, "ledger level %lld holds %llu nodes; a tree of %llu leaves has %llu",
			     (long long)level, (unsigned long long)count,
			     (unsigned long long)v->tree_size, (unsigned long long)want);
	return v->stopped;
}

static int check_levels(struct verify *v)
{
	struct level_check lc = { .v = v };

	if (run(v, STMT_VERIFY_LEVELS,
		"SELECT level, CAST(count(*) AS BIGINT), CAST(max(idx) AS BIGINT) FROM nodes "
		"GROUP BY level ORDER BY level",
		NULL, 0, level_row, &lc) < 0)
		return -EIO;
	for (unsigned level = STORE_NODE_MIN_LEVEL; level < 64 && (v->tree_size >> level) &&
					     !v->stopped;
	     level++)
		if (!(lc.levels_seen & (1ull << level)))
			report_store(v, "ledger level %u holds no nodes; a tree of %llu leaves has "
					"%llu",
				     level, (unsigned long long)v->tree_size,
				     (unsigned long long)(v->tree_size >> level));
	return 0;
}

/* --- 5. older tree heads ------------------------------------------------ */

static void check_consistency(struct verify *v, const struct signed_tree_head *old)
{
	merkle_hash proof[MERKLE_MAX_PROOF];
	size_t n;
	int rc;

	rc = merkle_consistency_proof(old->size, v->head.size, get_node, v, proof, &n);
	if (rc == -EIO)
		return;
	if (rc < 0)
		report_store(v, "tree head of size %llu: the nodes of its consistency proof are "
				"missing",
			     (unsigned long long)old->size);
	else if (!merkle_verify_consistency(old->size, v->head.size, old->root, v->head.root,
					    proof, n))
		report_store(v, "tree head of size %llu is not consistent with the newest (size "
				"%llu): the ledger was rewritten",
			     (unsigned long long)old->size, (unsigned long long)v->head.size);
}

static int head_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;
	struct signed_tree_head h = { .size = (uint64_t)cols[0].i };

	(void)ncols;
	v->page_rows++;
	v->key_a = cols[0].i;
	if (h.size >= v->head.size)
		return 0;
	if (!sql_blob_copy(&cols[1], h.root, MERKLE_HASH_LEN))
		report_store(v, "tree head of size %llu is malformed", (unsigned long long)h.size);
	else
		check_consistency(v, &h);
	return v->stopped;
}

static int check_heads(struct verify *v)
{
	struct sql_value p[2];

	if (!v->have_head)
		return 0;
	v->key_a = 0;
	v->page_rows = PAGE_ROWS;
	while (v->page_rows == PAGE_ROWS && !v->stopped) {
		v->page_rows = 0;
		p[0] = sql_int(v->key_a);
		p[1] = sql_int(PAGE_ROWS);
		if (run(v, STMT_HEADS_AFTER,
			"SELECT size, root FROM tree_heads WHERE size > $1 ORDER BY size LIMIT $2",
			p, 2, head_row, v) < 0)
			return -EIO;
	}
	return 0;
}

/* --- origins: each key is the hash of its values ------------------------ */

static void origin_key_differs(void *arg, int64_t id)
{
	report_store((struct verify *)arg,
		     "origin %lld: its key is not the hash of its values (origins row altered)",
		     (long long)id);
}

static int check_origins(struct verify *v)
{
	int rc = origin_check_keys(v->s->be, v->c, origin_key_differs, v);

	if (rc == -EIO)
		log_error("store (%s): %s", v->s->be->name, v->s->be->errmsg(v->c));
	return rc;
}

/* --- sessions: each row sums up its events ------------------------------ */

/* The keys of rows that differ either way (altered, missing or extra)
 * from the events they sum (up to sessions_counted.size: events above it
 * are not counted yet), summing the events once. IS DISTINCT FROM:
 * open_event_id may be NULL. */
#define SESSIONS_DIFFERING                                                              \
	"SELECT COALESCE(a.agent_id, s.agent_id), COALESCE(a.session_id, s.session_id) " \
	"FROM (" STORE_SESSIONS_OF_EVENTS("e.id <= $1") ") a FULL JOIN sessions s "     \
	"ON s.agent_id = a.agent_id AND s.session_id = a.session_id "                   \
	"WHERE a.agent_id IS NULL OR s.agent_id IS NULL OR s.origin <> a.origin "       \
	"OR s.first_ts <> a.first_ts OR s.last_ts <> a.last_ts "                        \
	"OR s.statements <> a.statements OR s.denied <> a.denied OR s.closed <> a.closed " \
	"OR s.open_event_id IS DISTINCT FROM a.open_event_id ORDER BY 1, 2"

static int session_differs(void *arg, const struct sql_value *cols, int ncols)
{
	struct verify *v = arg;

	(void)ncols;
	report_store(v, "session %s of agent %s: its sessions row is not what its events sum "
			"to (the row was altered, added or deleted)",
		     cols[1].type == SQL_TEXT ? (const char *)cols[1].p : "?",
		     cols[0].type == SQL_TEXT ? (const char *)cols[0].p : "?");
	return v->stopped ? 1 : 0;
}

static int check_sessions(struct verify *v)
{
	struct sql_value p[] = { sql_u64(v->sessions_size) };

	if (v->sessions_size > v->frontier.size)
		report_store(v, "sessions_counted says the sessions table sums %llu events, but "
				"the ledger has %llu (sessions_counted was altered)",
			     (unsigned long long)v->sessions_size,
			     (unsigned long long)v->frontier.size);
	return run(v, STMT_VERIFY_SESSIONS, SESSIONS_DIFFERING, p, 1, session_differs, v);
}

/* --- the whole walk ----------------------------------------------------- */

static int verify_all(struct verify *v)
{
	int rc = check_ledger(v);

	if (rc == 0)
		rc = load_agents(v);
	if (rc == 0)
		rc = walk_events(v);
	if (rc == 0)
		agents_unseen(v);
	if (rc == 0)
		rc = check_origins(v);
	if (rc == 0)
		rc = check_sessions(v);
	if (rc == 0)
		rc = check_leaves(v);
	if (rc == 0)
		rc = walk_blocks(v);
	if (rc == 0)
		rc = walk_nodes(v);
	if (rc == 0)
		rc = check_levels(v);
	if (rc == 0)
		rc = check_heads(v);
	return rc;
}

static void verify_release(struct verify *v)
{
	for (size_t i = 0; i < v->n_agents; i++)
		free(v->agents[i].agent_id);
	free(v->agents);
	free(v->group.agent_id);
	free(v->key_agent);
	free(v->page_agent);
	free(v->leaf_seen);
	free(v->cache);
	free(v->block);
}

int store_verify(struct store *s, const struct verify_key *key, store_problem_fn *fn, void *arg,
		 struct store_verify_stats *stats)
{
	struct store_verify_stats local;
	struct verify v = { .s = s, .key = key, .fn = fn, .arg = arg };
	int rc;

	v.stats = stats ? stats : &local;
	memset(v.stats, 0, sizeof(*v.stats));
	v.cache = calloc(NODE_CACHE, sizeof(*v.cache));
	if (!v.cache)
		return -EIO;
	v.c = store_reader_get(s);
	rc = store_read_begin(s, v.c);
	if (rc == 0)
		rc = store_read_end(s, v.c, verify_all(&v));
	store_reader_put(s, v.c);
	verify_release(&v);
	if (rc < 0) {
		log_error("store: verification failed: %s", strerror(-rc));
		return -EIO;
	}
	return v.problems;
}
