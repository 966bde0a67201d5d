/*
 * The store's frame: the backend chosen by URL, one write connection
 * (appends, serialized by a mutex) and a small pool of read connections,
 * so queries never wait behind an append. Also the few reads every other
 * part shares: nodes, tree heads, receipts.
 */
#include "collector/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_backend.h"
#include "collector/store_origin.h"
#include "collector/store_payload.h"
#include "collector/store_schema.h"
#include "collector/store_sessions.h"
#include "common/clock.h"
#include "common/log.h"

static const struct store_backend *backend_for(const char *url)
{
	if (strncmp(url, "sqlite:", 7) == 0)
		return &store_backend_sqlite;
	if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
		return &store_backend_pg;
	return NULL;
}

static int open_readers(struct store *s, const char *url, char *err, size_t errlen)
{
	for (unsigned i = 0; i < STORE_READERS; i++) {
		if (s->be->connect(url, false, &s->readers[i], err, errlen) < 0)
			return -1;
		s->idle[s->n_idle++] = s->readers[i];
	}
	return 0;
}

static int no_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)arg, (void)cols, (void)ncols;
	return 0;
}

int store_exec_steps(const struct store_backend *be, struct store_conn *c,
		     const char *const *steps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = be->exec(c, STMT_DYNAMIC, steps[i], NULL, 0, no_row, NULL, NULL);

		if (rc < 0)
			return rc;
	}
	return 0;
}

static bool has_column(struct store *s, const char *sql)
{
	return s->be->exec(s->writer, STMT_DYNAMIC, sql, NULL, 0, no_row, NULL, NULL) == 0;
}

/* Schema 3 to 4: events.raw becomes raw_inline (every stored event keeps
 * its bytes there) and gains the columns that point into a payload. The
 * rename makes a collector of schema 3, which would read the empty
 * raw_inline of newer rows as an event's bytes, fail at once instead. */
static int upgrade_schema3(const struct store_backend *be, struct store_conn *c)
{
	static const char *const steps[] = {
		"ALTER TABLE events RENAME COLUMN raw TO raw_inline",
		"ALTER TABLE events ADD COLUMN payload BIGINT",
		"ALTER TABLE events ADD COLUMN payload_off BIGINT",
		"ALTER TABLE events ADD COLUMN payload_len BIGINT",
	};

	return store_exec_steps(be, c, steps, sizeof(steps) / sizeof(steps[0]));
}

/* SCHEMA_NEW: created just now, as schema 4: the sessions tables come next. */
enum schema_from { SCHEMA_NOW, SCHEMA_NEW, SCHEMA_2, SCHEMA_3, SCHEMA_4 };

static const char *const schema_from_name[] = {
	[SCHEMA_NOW] = "creating events_origin",
	[SCHEMA_NEW] = "creating the sessions table",
	[SCHEMA_2] = "upgrading the database from schema 2",
	[SCHEMA_3] = "upgrading the database from schema 3",
	[SCHEMA_4] = "upgrading the database from schema 4",
};

/*
 * The schema's last steps, in one write transaction under the ledger's
 * lock, so that replicas starting together take turns (PostgreSQL's
 * CREATE INDEX IF NOT EXISTS is not safe against a concurrent one): the
 * upgrades from @from (2 to 3, 3 to 4); then the index on events.origin,
 * which a schema-2 database gets only once the upgrade has added the
 * column; then, from any older schema, the sessions table (4 to 5).
 */
static int schema_settle(struct store *s, enum schema_from from)
{
	const struct store_backend *be = s->be;
	int rc = be->begin(s->writer, true);

	if (rc == 0)
		rc = be->exec(s->writer, STMT_DYNAMIC, be->settle_lock_sql, NULL, 0, no_row, NULL,
			      NULL);
	if (rc == 0 && from == SCHEMA_2)
		rc = origin_upgrade_schema2(be, s->writer);
	if (rc == 0 && (from == SCHEMA_2 || from == SCHEMA_3))
		rc = upgrade_schema3(be, s->writer);
	if (rc == 0)
		rc = be->exec(s->writer, STMT_DYNAMIC, STORE_SCHEMA_ORIGIN_INDEX, NULL, 0, no_row,
			      NULL, NULL);
	if (rc == 0 && from != SCHEMA_NOW)
		rc = sessions_build(be, s->writer);
	if (rc == 0)
		rc = be->commit(s->writer);
	return rc;
}

static int row_seen(void *arg, const struct sql_value *cols, int ncols)
{
	(void)cols, (void)ncols;
	*(bool *)arg = true;
	return 0;
}

static bool has_events(struct store *s)
{
	bool seen = false;

	s->be->exec(s->writer, STMT_DYNAMIC, "SELECT 1 FROM events LIMIT 1", NULL, 0, row_seen,
		    &seen, NULL);
	return seen;
}

/* A schema-2 events table has the identity columns (an upgraded one has
 * them renamed, a schema-3 one none); a schema-3 one has raw (a schema-4
 * one raw_inline); a schema-4 database has no sessions_counted, nor has a
 * new one until it is settled. */
static enum schema_from schema_from(struct store *s)
{
	if (has_column(s, "SELECT session_id FROM events LIMIT 0"))
		return SCHEMA_2;
	if (has_column(s, "SELECT raw FROM events LIMIT 0"))
		return SCHEMA_3;
	if (!has_column(s, "SELECT size FROM sessions_counted LIMIT 0"))
		return has_events(s) ? SCHEMA_4 : SCHEMA_NEW;
	return SCHEMA_NOW;
}

static const char *const schema_upgrade_what[] = {
	[SCHEMA_2] = "from schema 2 to 5 (origins, payloads, sessions); this rewrites every "
		     "event row once",
	[SCHEMA_3] = "from schema 3 to 5 (payloads, sessions)",
	[SCHEMA_4] = "from schema 4 to 5 (sessions: one pass over the events)",
};

/* CREATE TABLE IF NOT EXISTS leaves an older database as it was. Schema 1
 * (leaf hashes as level-0 nodes) lacks events.leaf_hash and is refused;
 * schemas 2 to 4 are upgraded. */
static int schema_check(struct store *s, char *err, size_t errlen)
{
	const struct store_backend *be = s->be;

	if (!has_column(s, "SELECT leaf_hash FROM events LIMIT 0")) {
		snprintf(err, errlen,
			 "the database was created by an older dbward-collector (schema 1: no "
			 "events.leaf_hash) and cannot be used by this version: start with a new "
			 "database (docs/collector.md, Storage)");
		return -1;
	}
	for (int attempt = 0;; attempt++) {
		enum schema_from from = schema_from(s);
		uint64_t t0 = clock_monotonic_ns();
		int rc;

		if (from >= SCHEMA_2)
			log_info("store: upgrading the database %s", schema_upgrade_what[from]);
		rc = schema_settle(s, from);
		if (rc == 0) {
			if (from >= SCHEMA_2)
				log_info("store: upgraded to schema 5 in %.1f s",
					 (double)(clock_monotonic_ns() - t0) / 1e9);
			return 0;
		}
		snprintf(err, errlen, "%s: %s", schema_from_name[from],
			 rc == -EIO ? be->errmsg(s->writer) : strerror(-rc));
		be->rollback(s->writer);
		/* A replica beside us may have upgraded first: then once more. */
		if (from == SCHEMA_NOW || attempt > 0 || schema_from(s) == from)
			return -1;
		log_info("store: another collector upgraded the database first (%s)", err);
	}
}

int store_open(const char *url, struct store **out, char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));

	*out = NULL;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&s->write_lock, NULL);
	pthread_mutex_init(&s->pool_lock, NULL);
	pthread_cond_init(&s->pool_free, NULL);
	s->be = backend_for(url);
	if (!s->be) {
		snprintf(err, errlen,
			 "storage '%s': expected sqlite:PATH, postgres://... or postgresql://...",
			 url);
		goto fail;
	}
	/* The writer first: it creates the schema the readers expect. */
	if (s->be->connect(url, true, &s->writer, err, errlen) < 0)
		goto fail;
	if (schema_check(s, err, errlen) < 0)
		goto fail;
	s->origins = origin_cache_new();
	if (!s->origins) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (open_readers(s, url, err, errlen) < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	store_close(s);
	return -1;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < STORE_READERS; i++)
		if (s->readers[i])
			s->be->disconnect(s->readers[i]);
	if (s->writer)
		s->be->disconnect(s->writer);
	origin_cache_free(s->origins);
	pthread_cond_destroy(&s->pool_free);
	pthread_mutex_destroy(&s->pool_lock);
	pthread_mutex_destroy(&s->write_lock);
	free(s);
}

struct store_conn *store_reader_get(struct store *s)
{
	struct store_conn *c;

	pthread_mutex_lock(&s->pool_lock);
	while (s->n_idle == 0)
		pthread_cond_wait(&s->pool_free, &s->pool_lock);
	c = s->idle[--s->n_idle];
	pthread_mutex_unlock(&s->pool_lock);
	return c;
}

void store_reader_put(struct store *s, struct store_conn *c)
{
	pthread_mutex_lock(&s->pool_lock);
	s->idle[s->n_idle++] = c;
	pthread_cond_signal(&s->pool_free);
	pthread_mutex_unlock(&s->pool_lock);
}

char *store_rows_sql(const char *head, int ncols, int rows, const char *tail)
{
	size_t cap = strlen(head) + strlen(tail) + (size_t)rows * (size_t)ncols * 8 + 16, len;
	char *sql = malloc(cap);
	int param = 1;

	if (!sql)
		return NULL;
	len = (size_t)snprintf(sql, cap, "%s", head);
	for (int r = 0; r < rows; r++) {
		const char *row_start = ncols > 1 ? (r ? "), (" : "(") : (r ? ", " : "");

		for (int c = 0; c < ncols; c++)
			len += (size_t)snprintf(sql + len, cap - len, "%s$%d", c ? ", " : row_start,
						param++);
	}
	snprintf(sql + len, cap - len, "%s%s", ncols > 1 ? ")" : "", tail);
	return sql;
}

int store_exec(struct store *s, struct store_conn *c, enum store_stmt id, const char *sql,
	       const struct sql_value *params, int n, sql_row_fn *fn, void *arg)
{
	int rc = s->be->exec(c, id, sql, params, n, fn, arg, NULL);

	if (rc == -EIO)
		log_error("store (%s): %s", s->be->name, s->be->errmsg(c));
	return rc;
}

int store_read_begin(struct store *s, struct store_conn *c)
{
	if (s->be->begin(c, false) == 0)
		return 0;
	log_error("store (%s): %s", s->be->name, s->be->errmsg(c));
	s->be->rollback(c);
	return -EIO;
}

int store_read_end(struct store *s, struct store_conn *c, int rc)
{
	if (rc < 0) {
		s->be->rollback(c);
		return rc;
	}
	if (s->be->commit(c) == 0)
		return rc;
	log_error("store (%s): %s", s->be->name, s->be->errmsg(c));
	s->be->rollback(c);
	return -EIO;
}

bool sql_blob_copy(const struct sql_value *v, void *out, size_t len)
{
	if (v->type != SQL_BLOB || v->len != len)
		return false;
	memcpy(out, v->p, len);
	return true;
}

/* --- nodes and tree heads ----------------------------------------------- */

struct node_read {
	uint8_t *out;
	bool found;
	bool bad;
};

static int node_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct node_read *r = arg;

	(void)ncols;
	r->found = true;
	r->bad = !sql_blob_copy(&cols[0], r->out, MERKLE_HASH_LEN);
	return 0;
}

#define LEAVES_MAX (1u << STORE_NODE_MIN_LEVEL)

struct leaves_read {
	uint64_t first_id;		/* the id the next row must have */
	unsigned n;
	merkle_hash hash[LEAVES_MAX];
	bool bad;
};

/* Columns: id, leaf_hash. */
static int leaf_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct leaves_read *r = arg;

	(void)ncols;
	if ((uint64_t)cols[0].i != r->first_id + r->n || r->n == LEAVES_MAX ||
	    !sql_blob_copy(&cols[1], r->hash[r->n], MERKLE_HASH_LEN)) {
		r->bad = true;
		return 1;
	}
	r->n++;
	return 0;
}

/* A subtree below STORE_NODE_MIN_LEVEL, from its leaves (ids are leaf + 1). */
static int subtree_from_leaves(struct store *s, struct store_conn *c, unsigned level,
			       uint64_t idx, merkle_hash out)
{
	uint64_t first = idx << level, count = 1ull << level;
	struct sql_value p[] = { sql_u64(first), sql_u64(first + count) };
	struct leaves_read r = { .first_id = first + 1 };
	int rc = store_exec(s, c, STMT_LEAVES,
			    "SELECT id, leaf_hash FROM events WHERE id > $1 AND id <= $2 ORDER BY id",
			    p, 2, leaf_row, &r);

	if (rc < 0)
		return -EIO;
	if (r.bad || r.n != count)
		return -ENOENT;
	merkle_subtree_fold(r.hash, r.n, out);
	return 0;
}

int store_node_get(struct store *s, struct store_conn *c, unsigned level, uint64_t idx,
		   merkle_hash out)
{
	struct sql_value p[] = { sql_int(level), sql_u64(idx) };
	struct node_read r = { .out = out };

	if (level < STORE_NODE_MIN_LEVEL)
		return subtree_from_leaves(s, c, level, idx, out);
	if (store_exec(s, c, STMT_NODE_GET, "SELECT hash FROM nodes WHERE level = $1 AND idx = $2",
		       p, 2, node_row, &r) < 0)
		return -EIO;
	if (!r.found || r.bad)
		return -ENOENT;
	return 0;
}

struct head_read {
	struct signed_tree_head *out;
	bool found;
	bool bad;
};

static int head_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct head_read *r = arg;
	struct signed_tree_head *h = r->out;

	(void)ncols;
	r->found = true;
	h->size = (uint64_t)cols[0].i;
	h->ts = (uint64_t)cols[2].i;
	r->bad = !sql_blob_copy(&cols[1], h->root, MERKLE_HASH_LEN) ||
		 !sql_blob_copy(&cols[3], h->key_id, SIGNING_KEY_ID_LEN) ||
		 !sql_blob_copy(&cols[4], h->signature, SIGNING_SIG_LEN);
	return 0;
}

int store_head_newest(struct store *s, struct store_conn *c, struct signed_tree_head *out)
{
	struct head_read r = { .out = out };

	memset(out, 0, sizeof(*out));
	if (store_exec(s, c, STMT_HEAD_NEWEST,
		       "SELECT size, root, ts, key_id, signature FROM tree_heads "
		       "ORDER BY size DESC LIMIT 1",
		       NULL, 0, head_row, &r) < 0)
		return -EIO;
	if (!r.found)
		return -ENOENT;
	if (r.bad) {
		log_error("store: the newest tree head has malformed fields");
		return -EIO;
	}
	return 0;
}

int store_tree_head(struct store *s, struct signed_tree_head *out)
{
	struct store_conn *c = store_reader_get(s);
	int rc = store_head_newest(s, c, out);

	store_reader_put(s, c);
	return rc;
}

int store_ledger_decode(const struct sql_value *cols, int ncols, struct merkle_frontier *f)
{
	uint64_t size;

	merkle_frontier_init(f);
	if (ncols < 2 || cols[0].type != SQL_INT || cols[1].type != SQL_BLOB)
		return -EIO;
	size = (uint64_t)cols[0].i;
	if (cols[1].len != (size_t)__builtin_popcountll(size) * MERKLE_HASH_LEN)
		return -EIO;
	f->size = size;
	f->n = (unsigned)__builtin_popcountll(size);
	if (cols[1].len)
		memcpy(f->hashes, cols[1].p, cols[1].len);
	return 0;
}

/* --- receipts ----------------------------------------------------------- */

struct receipt_read {
	struct receipt *r;
	bool found;
	int rc;
};

static int receipt_event_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct receipt_read *rr = arg;
	struct receipt *r = rr->r;

	(void)ncols;
	rr->found = true;
	if (cols[SQL_EVENT_BYTES_COL].type != SQL_BLOB) {
		rr->rc = -EBADMSG;	/* unreadable: logged by store_exec_events */
		return 1;
	}
	r->event_id = (uint64_t)cols[0].i;
	r->leaf_index = (uint64_t)cols[1].i;
	r->event_len = cols[SQL_EVENT_BYTES_COL].len;
	r->event = malloc(r->event_len ? r->event_len : 1);
	if (!r->event) {
		rr->rc = -ENOMEM;
		return 1;
	}
	if (r->event_len)
		memcpy(r->event, cols[SQL_EVENT_BYTES_COL].p, r->event_len);
	return 0;
}

struct node_getter {
	struct store *s;
	struct store_conn *c;
};

static int get_node(void *arg, unsigned level, uint64_t index, merkle_hash out)
{
	struct node_getter *g = arg;

	return store_node_get(g->s, g->c, level, index, out);
}

static int receipt_build(struct store *s, struct store_conn *c, uint64_t id, struct receipt *r)
{
	struct sql_value p[] = { sql_u64(id) };
	struct receipt_read rr = { .r = r };
	struct node_getter g = { s, c };
	int rc;

	rc = store_exec_events(s, c, STMT_EVENT_BY_ID, SQL_EVENT_BY_ID, p, 1, SQL_EVENT_BYTES_COL,
			       receipt_event_row, &rr);
	if (rc < 0)
		return rc == -ENOMEM ? -ENOMEM : -EIO;
	if (rr.rc < 0)
		return rr.rc;
	if (!rr.found)
		return -ENOENT;
	rc = store_head_newest(s, c, &r->head);
	if (rc < 0)
		return rc;
	if (r->leaf_index >= r->head.size)
		return -ENOENT;
	rc = merkle_inclusion_proof(r->leaf_index, r->head.size, get_node, &g, r->proof,
				    &r->n_proof);
	if (rc < 0) {
		log_error("store: no inclusion proof for event %llu: %s",
			  (unsigned long long)id, strerror(-rc));
		return -EIO;
	}
	return 0;
}

int store_receipt(struct store *s, uint64_t id, struct receipt *out)
{
	struct store_conn *c = store_reader_get(s);
	int rc;

	memset(out, 0, sizeof(*out));
	/* One snapshot: the event, the head and the proof agree. */
	rc = store_read_begin(s, c);
	if (rc == 0)
		rc = store_read_end(s, c, receipt_build(s, c, id, out));
	store_reader_put(s, c);
	if (rc < 0) {
		free(out->event);
		memset(out, 0, sizeof(*out));
	}
	return rc;
}

/* --- consistency proofs --------------------------------------------------- */

static int consistency_build(struct store *s, struct store_conn *c, uint64_t old_size,
			     struct signed_tree_head *head, merkle_hash *proof, size_t *n)
{
	struct node_getter g = { s, c };
	int rc = store_head_newest(s, c, head);

	if (rc < 0)
		return rc;
	if (old_size == 0 || old_size > head->size)
		return -ERANGE;
	rc = merkle_consistency_proof(old_size, head->size, get_node, &g, proof, n);
	if (rc < 0) {
		log_error("store: no consistency proof from size %llu to %llu: %s",
			  (unsigned long long)old_size, (unsigned long long)head->size,
			  strerror(-rc));
		return -EIO;
	}
	return 0;
}

int store_consistency(struct store *s, uint64_t old_size, struct signed_tree_head *head,
		      merkle_hash proof[MERKLE_MAX_PROOF], size_t *n)
{
	struct store_conn *c = store_reader_get(s);
	int rc;

	*n = 0;
	rc = store_read_begin(s, c);
	if (rc == 0)
		rc = store_read_end(s, c, consistency_build(s, c, old_size, head, proof, n));
	store_reader_put(s, c);
	return rc;
}
