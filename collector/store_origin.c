#include "collector/store_origin.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_schema.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/event_json.h"
#include "common/merkle.h"

/* Direct-mapped: a connection's events find their origin in one probe;
 * a miss costs one indexed SELECT (on PostgreSQL, a round trip). 3 MiB:
 * room for tens of thousands of connections at once. */
#define CACHE_SLOTS 65536
#define KEY_PAGE 1000

typedef uint8_t origin_key[MERKLE_HASH_LEN];

struct cache_slot {
	origin_key key;
	int64_t id;
	bool used;
	bool pending;			/* learnt in the open transaction */
};

struct origin_cache {
	struct cache_slot slots[CACHE_SLOTS];
	unsigned n_pending;
	uint8_t *enc;			/* encoding buffer, reused */
	size_t enc_cap;
};

struct origin_cache *origin_cache_new(void)
{
	return calloc(1, sizeof(struct origin_cache));
}

void origin_cache_free(struct origin_cache *oc)
{
	if (!oc)
		return;
	free(oc->enc);
	free(oc);
}

void origin_cache_end(struct origin_cache *oc, bool committed)
{
	if (!oc->n_pending)
		return;
	for (unsigned i = 0; i < CACHE_SLOTS; i++) {
		if (!oc->slots[i].pending)
			continue;
		oc->slots[i].pending = false;
		if (!committed)
			oc->slots[i].used = false;
	}
	oc->n_pending = 0;
}

/* --- the key: SHA-256 over the values, NULL distinct from any text ------ */

static const char key_domain[] = "dbward origin key v1";

static int enc_put(struct origin_cache *oc, size_t *len, const void *p, size_t n)
{
	if (bytes_reserve(&oc->enc, &oc->enc_cap, *len + n, 512) < 0)
		return -ENOMEM;
	memcpy(oc->enc + *len, p, n);
	*len += n;
	return 0;
}

/* A domain string and its NUL, then each value: a tag (0 NULL, 1 integer,
 * 2 text), then 8 bytes of integer, or 8 bytes of length and the text;
 * numbers little-endian. */
static int origin_key_of(struct origin_cache *oc, const struct sql_value *v, origin_key out)
{
	size_t len = 0;

	if (enc_put(oc, &len, key_domain, sizeof(key_domain)) < 0)
		return -ENOMEM;
	for (int i = 0; i < ORIGIN_NCOLS; i++) {
		uint8_t tag = v[i].type == SQL_INT ? 1 : v[i].type == SQL_TEXT ? 2 : 0;
		uint64_t n = htole64(tag == 1 ? (uint64_t)v[i].i : (uint64_t)v[i].len);

		if (enc_put(oc, &len, &tag, 1) < 0 ||
		    (tag && enc_put(oc, &len, &n, sizeof(n)) < 0) ||
		    (tag == 2 && enc_put(oc, &len, v[i].p, v[i].len) < 0))
			return -ENOMEM;
	}
	event_hash(oc->enc, len, out);
	return 0;
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

static struct cache_slot *slot_for(struct origin_cache *oc, const origin_key key)
{
	uint32_t h;

	memcpy(&h, key, sizeof(h));
	return &oc->slots[h % CACHE_SLOTS];
}

static void cache_put(struct origin_cache *oc, const origin_key key, int64_t id)
{
	struct cache_slot *s = slot_for(oc, key);

	memcpy(s->key, key, sizeof(origin_key));
	s->id = id;
	s->used = true;
	if (!s->pending)
		oc->n_pending++;
	s->pending = true;
}

/* --- finding or adding the row ----------------------------------------- */

static int id_row(void *arg, const struct sql_value *cols, int ncols)
{
	(void)ncols;
	*(int64_t *)arg = cols[0].i;
	return 0;
}

/* An absent value as the origins table holds it: '' or -1. */
static struct sql_value stored_value(const struct sql_value *v, bool is_pid)
{
	if (v->type != SQL_NULL)
		return *v;
	return is_pid ? sql_int(-1) : (struct sql_value){ .type = SQL_TEXT, .p = "", .len = 0 };
}

int origin_resolve(const struct store_backend *be, struct store_conn *c,
		   struct origin_cache *oc, const struct store_row *row, int64_t *id)
{
	const struct sql_value *v = &row->v[ORIGIN_FIRST_COL];
	struct sql_value p[1 + ORIGIN_NCOLS];
	struct cache_slot *slot;
	origin_key key;
	int rc;

	if (origin_key_of(oc, v, key) < 0)
		return -ENOMEM;
	slot = slot_for(oc, key);
	if (slot->used && memcmp(slot->key, key, sizeof(key)) == 0) {
		*id = slot->id;
		return 0;
	}
	p[0] = sql_blob(key, sizeof(key));
	*id = -1;
	rc = be->exec(c, STMT_ORIGIN_GET, "SELECT id FROM origins WHERE key = $1", p, 1, id_row,
		      id, NULL);
	if (rc == 0 && *id < 0) {
		for (int i = 0; i < ORIGIN_NCOLS; i++)
			p[1 + i] = stored_value(&v[i], ORIGIN_FIRST_COL + i == COL_PID);
		rc = be->exec(c, STMT_ORIGIN_INSERT,
			      "INSERT INTO origins (key, " STORE_ORIGIN_COLUMNS ") VALUES "
			      "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
			      p, 1 + ORIGIN_NCOLS, id_row, id, NULL);
		if (rc == 0 && *id < 0)
			rc = -EPROTO;	/* RETURNING gave no row */
	}
	if (rc < 0)
		return rc;
	cache_put(oc, key, *id);
	return 0;
}

/* --- origins a page at a time, by id ---------------------------------- */

struct key_page {
	struct origin_cache *oc;
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
	if (origin_key_of(pg->oc, v, pg->keys[pg->n]) < 0) {
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
	struct origin_cache *oc = origin_cache_new();
	struct key_page *pg = malloc(sizeof(*pg));
	int64_t after = 0;
	int rc = 0;

	if (!oc || !pg) {
		rc = -ENOMEM;
		goto out;
	}
	do {
		struct sql_value p[] = { sql_int(after), sql_int(KEY_PAGE) };

		*pg = (struct key_page){ .oc = oc };
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
out:
	free(pg);
	origin_cache_free(oc);
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
