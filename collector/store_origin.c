#include "collector/store_origin.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_schema.h"
#include "common/bytes.h"
#include "common/event_json.h"

/* Direct-mapped: a connection's events find their origin in one probe;
 * a batch's misses are looked up together (origin_resolve_events). 3 MiB:
 * room for tens of thousands of connections at once. */
#define CACHE_SLOTS 65536
#define KEY_PAGE 1000

typedef uint8_t origin_key[ORIGIN_KEY_LEN];

struct cache_slot {
	origin_key key;
	int64_t id;
	bool used;
	bool pending;			/* learnt in the open transaction */
};

struct origin_cache {
	struct cache_slot slots[CACHE_SLOTS];
	uint32_t *pending;		/* slots learnt in the open transaction */
	size_t n_pending, cap_pending;
	struct origin_key_buf kb;
};

struct origin_cache *origin_cache_new(void)
{
	return calloc(1, sizeof(struct origin_cache));
}

void origin_cache_free(struct origin_cache *oc)
{
	if (!oc)
		return;
	free(oc->pending);
	free(oc->kb.data);
	free(oc);
}

void origin_cache_end(struct origin_cache *oc, bool committed)
{
	for (size_t i = 0; i < oc->n_pending; i++) {
		struct cache_slot *s = &oc->slots[oc->pending[i]];

		s->pending = false;
		if (!committed)
			s->used = false;
	}
	oc->n_pending = 0;
}

/* --- the key: SHA-256 over the values, NULL distinct from any text ------ */

static const char key_domain[] = "dbward origin key v1";

static int key_put(struct origin_key_buf *kb, size_t *len, const void *p, size_t n)
{
	if (bytes_reserve(&kb->data, &kb->cap, *len + n, 512) < 0)
		return -ENOMEM;
	memcpy(kb->data + *len, p, n);
	*len += n;
	return 0;
}

/* A domain string and its NUL, then each value: a tag (0 NULL, 1 integer,
 * 2 text), then 8 bytes of integer, or 8 bytes of length and the text;
 * numbers little-endian. */
static int origin_key_of(struct origin_key_buf *kb, const struct sql_value *v, origin_key out)
{
	size_t len = 0;

	if (key_put(kb, &len, key_domain, sizeof(key_domain)) < 0)
		return -ENOMEM;
	for (int i = 0; i < ORIGIN_NCOLS; i++) {
		uint8_t tag = v[i].type == SQL_INT ? 1 : v[i].type == SQL_TEXT ? 2 : 0;
		uint64_t n = htole64(tag == 1 ? (uint64_t)v[i].i : (uint64_t)v[i].len);

		if (key_put(kb, &len, &tag, 1) < 0 ||
		    (tag && key_put(kb, &len, &n, sizeof(n)) < 0) ||
		    (tag == 2 && key_put(kb, &len, v[i].p, v[i].len) < 0))
			return -ENOMEM;
	}
	event_hash(kb->data, len, out);
	return 0;
}

int origin_key_of_event(const Dbward__V1__Event *ev, struct origin_key_buf *kb,
			uint8_t key[ORIGIN_KEY_LEN])
{
	struct store_row row;
	int rc;

	if (store_columns_derive_origin(ev, &row) < 0)
		return -ENOMEM;
	rc = origin_key_of(kb, &row.v[ORIGIN_FIRST_COL], key);
	store_row_release(&row);
	return rc;
}

/* The values of an origins row (absent as '' or -1) as an event's
 * columns have them (absent as NULL). */
static void values_of_row(const struct sql_value *cols, struct sql_value v[ORIGIN_NCOLS])
{
	for (int i = 0; i < ORIGIN_NCOLS; i++) {
		const struct sql_value *c = &cols[i];
		bool absent = c->type == SQL_NULL || (c->type == SQL_INT && c->i == -1) ||
			      (c->type == SQL_TEXT && c->len == 0);

		v[i] = absent ? (struct sql_value){ .type = SQL_NULL } : *c;
	}
}

static uint32_t slot_of(const origin_key key)
{
	uint32_t h;

	memcpy(&h, key, sizeof(h));
	return h % CACHE_SLOTS;
}

/* Remembers @key's id; -ENOMEM (nothing remembered) when the list of
 * what the transaction learnt cannot grow. */
static int cache_put(struct origin_cache *oc, const origin_key key, int64_t id)
{
	uint32_t i = slot_of(key);
	struct cache_slot *s = &oc->slots[i];

	if (!s->pending) {
		if (oc->n_pending == oc->cap_pending) {
			size_t cap = oc->cap_pending ? 2 * oc->cap_pending : 256;
			uint32_t *p = realloc(oc->pending, cap * sizeof(*p));

			if (!p)
				return -ENOMEM;
			oc->pending = p;
			oc->cap_pending = cap;
		}
		oc->pending[oc->n_pending++] = i;
		s->pending = true;
	}
	memcpy(s->key, key, sizeof(origin_key));
	s->id = id;
	s->used = true;
	return 0;
}

/* --- finding or adding the rows of a batch ------------------------------ */

/* Keys per SELECT ... IN, rows per INSERT (10 parameters each): both
 * within STORE_MAX_PARAMS. */
#define SELECT_CHUNK 256
#define INSERT_CHUNK 48

/* An origin the cache did not have: its values, and its id once known. */
struct miss {
	origin_key key;
	struct store_row row;
	int64_t id;
	int64_t altered_id;		/* the row found under its key, if altered */
	bool altered;
};

struct misses {
	struct miss *m;
	size_t n, cap;
	uint32_t *index;		/* open addressing: miss number + 1, 0 free */
	size_t mask;
	struct origin_key_buf kb;	/* for the keys of rows found */
	int rc;				/* of a row callback */
};

static size_t miss_slot(const struct misses *ms, const origin_key key)
{
	uint64_t h;
	size_t i;

	memcpy(&h, key, sizeof(h));
	for (i = h & ms->mask; ms->index[i]; i = (i + 1) & ms->mask)
		if (memcmp(ms->m[ms->index[i] - 1].key, key, sizeof(origin_key)) == 0)
			break;
	return i;
}

static struct miss *miss_find(const struct misses *ms, const origin_key key)
{
	size_t i = miss_slot(ms, key);

	return ms->index[i] ? &ms->m[ms->index[i] - 1] : NULL;
}

/* Columns: id, key (of a miss). */
static int miss_id_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct misses *ms = arg;
	struct miss *m;

	(void)ncols;
	if (cols[1].type != SQL_BLOB || cols[1].len != sizeof(origin_key))
		return 0;
	m = miss_find(ms, cols[1].p);
	if (m)
		m->id = cols[0].i;
	return 0;
}

/* An absent value as the origins table holds it: '' or -1. */
static struct sql_value stored_value(const struct sql_value *v, bool is_pid)
{
	if (v->type != SQL_NULL)
		return *v;
	return is_pid ? sql_int(-1) : (struct sql_value){ .type = SQL_TEXT, .p = "", .len = 0 };
}

/* Columns: id, key, then the values (a row found by a miss's key). Its
 * id is taken only if the values still hash to the key. */
static int miss_found_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct misses *ms = arg;
	struct sql_value v[ORIGIN_NCOLS];
	origin_key key;
	struct miss *m;

	(void)ncols;
	if (cols[1].type != SQL_BLOB || cols[1].len != sizeof(origin_key))
		return 0;
	m = miss_find(ms, cols[1].p);
	if (!m)
		return 0;
	values_of_row(&cols[2], v);
	if (origin_key_of(&ms->kb, v, key) < 0) {
		ms->rc = -ENOMEM;
		return 1;
	}
	if (memcmp(key, m->key, sizeof(key)) == 0) {
		m->id = cols[0].i;
	} else {
		m->altered_id = cols[0].i;
		m->altered = true;
	}
	return 0;
}

/* Those of @ms already in origins (another collector, an earlier run). */
static int misses_select(const struct store_backend *be, struct store_conn *c,
			 struct misses *ms)
{
	struct sql_value p[SELECT_CHUNK];

	for (size_t at = 0; at < ms->n; at += SELECT_CHUNK) {
		int k = (int)(ms->n - at < SELECT_CHUNK ? ms->n - at : SELECT_CHUNK), rc;
		char *sql = store_rows_sql("SELECT id, key, " STORE_ORIGIN_COLUMNS
					   " FROM origins WHERE key IN (",
					   1, k, ")");

		if (!sql)
			return -ENOMEM;
		for (int i = 0; i < k; i++)
			p[i] = sql_blob(ms->m[at + (size_t)i].key, sizeof(origin_key));
		rc = be->exec(c, STMT_DYNAMIC, sql, p, k, miss_found_row, ms, NULL);
		free(sql);
		if (rc > 0 && ms->rc < 0)
			return ms->rc;
		if (rc)
			return rc < 0 ? rc : -EIO;
	}
	return 0;
}

/* Altered rows found give their key up (rare: one statement each). */
static int misses_detach(const struct store_backend *be, struct store_conn *c,
			 const struct misses *ms)
{
	for (size_t i = 0; i < ms->n; i++) {
		struct sql_value p[] = { sql_int(ms->m[i].altered_id) };
		int rc;

		if (!ms->m[i].altered)
			continue;
		rc = be->exec(c, STMT_DYNAMIC, "UPDATE origins SET key = NULL WHERE id = $1", p, 1,
			      NULL, NULL, NULL);
		if (rc)
			return rc < 0 ? rc : -EIO;
	}
	return 0;
}

/* The rest, inserted; RETURNING gives their ids. */
static int misses_insert(const struct store_backend *be, struct store_conn *c,
			 struct misses *ms)
{
	struct sql_value p[INSERT_CHUNK * (1 + ORIGIN_NCOLS)];
	size_t at = 0;

	while (at < ms->n) {
		int k = 0, rc;
		char *sql;

		for (; at < ms->n && k < INSERT_CHUNK; at++) {
			const struct miss *m = &ms->m[at];
			struct sql_value *row = &p[k * (1 + ORIGIN_NCOLS)];

			if (m->id >= 0)
				continue;
			row[0] = sql_blob(m->key, sizeof(origin_key));
			for (int i = 0; i < ORIGIN_NCOLS; i++)
				row[1 + i] = stored_value(&m->row.v[ORIGIN_FIRST_COL + i],
							  ORIGIN_FIRST_COL + i == COL_PID);
			k++;
		}
		if (!k)
			break;
		sql = store_rows_sql("INSERT INTO origins (key, " STORE_ORIGIN_COLUMNS ") VALUES ",
				     1 + ORIGIN_NCOLS, k, " RETURNING id, key");
		if (!sql)
			return -ENOMEM;
		rc = be->exec(c, STMT_DYNAMIC, sql, p, k * (1 + ORIGIN_NCOLS), miss_id_row, ms,
			      NULL);
		free(sql);
		if (rc)
			return rc < 0 ? rc : -EIO;
	}
	return 0;
}

static void misses_release(struct misses *ms)
{
	for (size_t i = 0; i < ms->n; i++)
		store_row_release(&ms->m[i].row);
	free(ms->m);
	free(ms->index);
	free(ms->kb.data);
}

/* A new miss for @key, holding @row (which it now owns). */
static int miss_add(struct misses *ms, size_t at, const origin_key key, struct store_row *row)
{
	struct miss *m;

	if (ms->n == ms->cap) {
		size_t cap = ms->cap ? 2 * ms->cap : 64;
		struct miss *more = realloc(ms->m, cap * sizeof(*more));

		if (!more)
			return -ENOMEM;
		ms->m = more;
		ms->cap = cap;
	}
	m = &ms->m[ms->n++];
	*m = (struct miss){ .row = *row, .id = -1 };
	memcpy(m->key, key, sizeof(origin_key));
	ms->index[at] = (uint32_t)ms->n;
	return 0;
}

/*
 * One event: its id from the cache, or the number of its miss (+1) in
 * @pending. @known: its key, if taken. Its values are derived only when
 * the key must be taken here or the miss is new (they go in the INSERT).
 */
static int look_up(struct origin_cache *oc, struct misses *ms, const Dbward__V1__Event *ev,
		   const uint8_t *known, int64_t *id, uint32_t *pending)
{
	struct store_row row;
	bool derived = false;
	struct cache_slot *slot;
	origin_key key;
	size_t at;
	int rc = 0;

	if (known) {
		memcpy(key, known, sizeof(key));
	} else {
		if (store_columns_derive_origin(ev, &row) < 0)
			return -ENOMEM;
		derived = true;
		rc = origin_key_of(&oc->kb, &row.v[ORIGIN_FIRST_COL], key);
		if (rc < 0)
			goto out;
	}
	slot = &oc->slots[slot_of(key)];
	if (slot->used && memcmp(slot->key, key, sizeof(key)) == 0) {
		*id = slot->id;
		goto out;
	}
	at = miss_slot(ms, key);
	if (!ms->index[at]) {
		if (!derived && store_columns_derive_origin(ev, &row) < 0)
			return -ENOMEM;
		derived = true;
		rc = miss_add(ms, at, key, &row);
		if (rc == 0)
			derived = false;	/* the miss owns the row */
		if (rc < 0)
			goto out;
	}
	*pending = ms->index[at];
out:
	if (derived)
		store_row_release(&row);
	return rc;
}

int origin_resolve_events(const struct store_backend *be, struct store_conn *c,
			  struct origin_cache *oc, const struct store_event_in *events,
			  const uint8_t *const *keys, const bool *want, size_t n, int64_t *ids,
			  origin_altered_fn *altered, void *arg)
{
	struct misses ms = { 0 };
	uint32_t *pending = calloc(n ? n : 1, sizeof(*pending));
	size_t cap = 16;
	int rc = 0;

	while (cap < 2 * n + 2)
		cap *= 2;
	ms.index = calloc(cap, sizeof(*ms.index));
	ms.mask = cap - 1;
	if (!pending || !ms.index) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (want[i])
			rc = look_up(oc, &ms, events[i].ev, keys ? keys[i] : NULL, &ids[i],
				     &pending[i]);
	if (rc == 0 && ms.n)
		rc = misses_select(be, c, &ms);
	if (rc == 0 && ms.n)
		rc = misses_detach(be, c, &ms);
	if (rc == 0 && ms.n)
		rc = misses_insert(be, c, &ms);
	for (size_t i = 0; rc == 0 && i < ms.n; i++) {
		if (ms.m[i].id < 0)
			rc = -EPROTO;	/* neither found nor given back by RETURNING */
		else
			rc = cache_put(oc, ms.m[i].key, ms.m[i].id);
		if (rc == 0 && ms.m[i].altered)
			rc = altered(arg, ms.m[i].altered_id, ms.m[i].id);
	}
	for (size_t i = 0; rc == 0 && i < n; i++)
		if (want[i] && pending[i])
			ids[i] = ms.m[pending[i] - 1].id;
out:
	misses_release(&ms);
	free(pending);
	return rc;
}

/* --- origins a page at a time, by id ---------------------------------- */

struct key_page {
	struct origin_key_buf *kb;
	int64_t ids[KEY_PAGE];
	origin_key keys[KEY_PAGE];	/* computed from the values */
	bool stored_ok[KEY_PAGE];	/* the stored key is that one */
	int n;
	int rc;
};

/* Columns: id, key, then the origin's values. */
static int key_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct key_page *pg = arg;
	struct sql_value v[ORIGIN_NCOLS];

	(void)ncols;
	if (pg->n == KEY_PAGE)
		return 0;
	values_of_row(&cols[2], v);
	pg->ids[pg->n] = cols[0].i;
	if (origin_key_of(pg->kb, v, pg->keys[pg->n]) < 0) {
		pg->rc = -ENOMEM;
		return 1;
	}
	pg->stored_ok[pg->n] = cols[1].type == SQL_BLOB && cols[1].len == sizeof(origin_key) &&
			       memcmp(cols[1].p, pg->keys[pg->n], sizeof(origin_key)) == 0;
	pg->n++;
	return 0;
}

/* Calls @fn for each origins row whose stored key is not the hash of its
 * values, with the id; -ENOMEM or -EIO (the backend's message on @c). */
static int walk_keys(const struct store_backend *be, struct store_conn *c,
		     int (*fn)(void *arg, const struct store_backend *be, struct store_conn *c,
			       int64_t id, const origin_key key),
		     void *arg)
{
	struct key_page *pg = malloc(sizeof(*pg));
	struct origin_key_buf kb = { 0 };
	int64_t after = 0;
	int rc = 0;

	if (!pg)
		return -ENOMEM;
	do {
		struct sql_value p[] = { sql_int(after), sql_int(KEY_PAGE) };

		*pg = (struct key_page){ .kb = &kb };
		rc = be->exec(c, STMT_DYNAMIC,
			      "SELECT id, key, " STORE_ORIGIN_COLUMNS " FROM origins WHERE id > $1 "
			      "ORDER BY id LIMIT $2",
			      p, 2, key_row, pg, NULL);
		if (rc > 0)
			rc = pg->rc;
		for (int i = 0; rc == 0 && i < pg->n; i++)
			if (!pg->stored_ok[i])
				rc = fn(arg, be, c, pg->ids[i], pg->keys[i]);
		if (pg->n)
			after = pg->ids[pg->n - 1];
	} while (rc == 0 && pg->n == KEY_PAGE);
	free(pg);
	free(kb.data);
	return rc;
}

struct key_check {
	void (*fn)(void *arg, int64_t id);
	void *arg;
};

static int key_differs(void *arg, const struct store_backend *be, struct store_conn *c,
		       int64_t id, const origin_key key)
{
	struct key_check *kc = arg;

	(void)be, (void)c, (void)key;
	kc->fn(kc->arg, id);
	return 0;
}

int origin_check_keys(const struct store_backend *be, struct store_conn *c,
		      void (*fn)(void *arg, int64_t id), void *arg)
{
	struct key_check kc = { fn, arg };

	return walk_keys(be, c, key_differs, &kc);
}

/* --- upgrading a schema-2 database -------------------------------------- */

#define COALESCED(col, absent) "COALESCE(" col ", " absent ")"
#define SAME(col, absent) "o." col " = COALESCE(events." col ", " absent ")"

static const char *const upgrade_fill =
	"INSERT INTO origins (" STORE_ORIGIN_COLUMNS ") SELECT DISTINCT "
	COALESCED("session_id", "''") ", " COALESCED("pid", "-1") ", "
	COALESCED("comm", "''") ", " COALESCED("user_name", "''") ", "
	COALESCED("pod_uid", "''") ", " COALESCED("pod_name", "''") ", "
	COALESCED("pod_namespace", "''") ", " COALESCED("db_user", "''") ", "
	COALESCED("database", "''") " FROM events";

static const char *const upgrade_point =
	"UPDATE events SET origin = (SELECT o.id FROM origins o WHERE "
	SAME("session_id", "''") " AND " SAME("pid", "-1") " AND " SAME("comm", "''")
	" AND " SAME("user_name", "''") " AND " SAME("pod_uid", "''") " AND "
	SAME("pod_name", "''") " AND " SAME("pod_namespace", "''") " AND "
	SAME("db_user", "''") " AND " SAME("database", "''") ")";

/* After the fill: the old indexes go, and the columns schema 2 had in
 * events are renamed out of the way, so that a collector older than
 * schema 3 fails loudly (its INSERT names them) instead of writing events
 * that point at no origin. */
static const char *const upgrade_retire[] = {
	"DROP INDEX IF EXISTS events_session",
	"DROP INDEX IF EXISTS events_pid",
	"ALTER TABLE events RENAME COLUMN session_id TO schema2_session_id",
	"ALTER TABLE events RENAME COLUMN pid TO schema2_pid",
	"ALTER TABLE events RENAME COLUMN comm TO schema2_comm",
	"ALTER TABLE events RENAME COLUMN user_name TO schema2_user_name",
	"ALTER TABLE events RENAME COLUMN pod_uid TO schema2_pod_uid",
	"ALTER TABLE events RENAME COLUMN pod_name TO schema2_pod_name",
	"ALTER TABLE events RENAME COLUMN pod_namespace TO schema2_pod_namespace",
	"ALTER TABLE events RENAME COLUMN db_user TO schema2_db_user",
	"ALTER TABLE events RENAME COLUMN database TO schema2_database",
};

static int exec_plain(const struct store_backend *be, struct store_conn *c, const char *sql)
{
	return be->exec(c, STMT_DYNAMIC, sql, NULL, 0, NULL, NULL, NULL);
}

/* The fill left every key NULL: each gets its hash. The UPDATEs are
 * queued (no result wanted), flushed with the next page's SELECT. */
static int set_key(void *arg, const struct store_backend *be, struct store_conn *c, int64_t id,
		   const origin_key key)
{
	struct sql_value p[] = { sql_blob(key, sizeof(origin_key)), sql_int(id) };

	(void)arg;
	return be->exec(c, STMT_DYNAMIC, "UPDATE origins SET key = $1 WHERE id = $2", p, 2, NULL,
			NULL, NULL);
}

int origin_upgrade_schema2(const struct store_backend *be, struct store_conn *c)
{
	int rc = exec_plain(be, c, "ALTER TABLE events ADD COLUMN origin BIGINT");

	if (rc == 0)
		rc = exec_plain(be, c, upgrade_fill);
	if (rc == 0)
		rc = walk_keys(be, c, set_key, NULL);
	if (rc == 0)
		rc = exec_plain(be, c, upgrade_point);
	for (size_t i = 0; rc == 0 && i < sizeof(upgrade_retire) / sizeof(upgrade_retire[0]); i++)
		rc = exec_plain(be, c, upgrade_retire[i]);
	return rc;
}
