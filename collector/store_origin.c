#include "collector/store_origin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_schema.h"
#include "common/bytes.h"
#include "common/log.h"
#include "common/merkle.h"

/* Direct-mapped: a connection's events find their origin in one probe;
 * a miss costs one indexed SELECT. */
#define CACHE_SLOTS 4096
#define UPGRADE_PAGE 1000

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

static int enc_put(struct origin_cache *oc, size_t *len, const void *p, size_t n)
{
	if (bytes_reserve(&oc->enc, &oc->enc_cap, *len + n, 512) < 0)
		return -ENOMEM;
	memcpy(oc->enc + *len, p, n);
	*len += n;
	return 0;
}

/* Each value: a tag (0 NULL, 1 integer, 2 text), then 8 bytes of integer,
 * or 8 bytes of length and the text. */
static int origin_key_of(struct origin_cache *oc, const struct sql_value *v, origin_key out)
{
	size_t len = 0;

	for (int i = 0; i < ORIGIN_NCOLS; i++) {
		uint8_t tag = v[i].type == SQL_INT ? 1 : v[i].type == SQL_TEXT ? 2 : 0;
		uint64_t n = tag == 1 ? (uint64_t)v[i].i : (uint64_t)v[i].len;

		if (enc_put(oc, &len, &tag, 1) < 0 ||
		    (tag && enc_put(oc, &len, &n, sizeof(n)) < 0) ||
		    (tag == 2 && enc_put(oc, &len, v[i].p, v[i].len) < 0))
			return -ENOMEM;
	}
	merkle_leaf_hash(oc->enc ? oc->enc : (const uint8_t *)"", len, out);
	return 0;
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
			rc = -EIO;
	}
	if (rc < 0)
		return rc;
	cache_put(oc, key, *id);
	return 0;
}

/* --- upgrading a schema-2 database -------------------------------------- */

struct upgrade_page {
	struct origin_cache *oc;
	int64_t ids[UPGRADE_PAGE];
	origin_key keys[UPGRADE_PAGE];
	int n;
	int rc;
};

/* Columns: id, then the origin's, absent values as stored ('' or -1). */
static int upgrade_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct upgrade_page *pg = arg;
	struct sql_value v[ORIGIN_NCOLS];

	(void)ncols;
	for (int i = 0; i < ORIGIN_NCOLS; i++) {
		const struct sql_value *c = &cols[1 + i];
		bool absent = c->type == SQL_NULL || (c->type == SQL_INT && c->i == -1) ||
			      (c->type == SQL_TEXT && c->len == 0);

		v[i] = absent ? (struct sql_value){ .type = SQL_NULL } : *c;
	}
	pg->ids[pg->n] = cols[0].i;
	if (origin_key_of(pg->oc, v, pg->keys[pg->n]) < 0) {
		pg->rc = -ENOMEM;
		return 1;
	}
	pg->n++;
	return 0;
}

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

static int exec_plain(const struct store_backend *be, struct store_conn *c, const char *sql)
{
	return be->exec(c, STMT_DYNAMIC, sql, NULL, 0, NULL, NULL, NULL);
}

/* Keys for the origins the fill made, a page at a time. */
static int upgrade_keys(const struct store_backend *be, struct store_conn *c,
			struct origin_cache *oc)
{
	struct upgrade_page *pg = malloc(sizeof(*pg));
	struct sql_value lim = sql_int(UPGRADE_PAGE);
	int rc;

	if (!pg)
		return -ENOMEM;
	do {
		*pg = (struct upgrade_page){ .oc = oc };
		rc = be->exec(c, STMT_DYNAMIC,
			      "SELECT id, " STORE_ORIGIN_COLUMNS " FROM origins WHERE key IS NULL "
			      "ORDER BY id LIMIT $1",
			      &lim, 1, upgrade_row, pg, NULL);
		if (rc > 0)
			rc = pg->rc;
		for (int i = 0; rc == 0 && i < pg->n; i++) {
			struct sql_value p[] = { sql_blob(pg->keys[i], sizeof(origin_key)),
						 sql_int(pg->ids[i]) };
			int64_t changed = 0;

			rc = be->exec(c, STMT_DYNAMIC, "UPDATE origins SET key = $1 WHERE id = $2", p,
				      2, NULL, NULL, &changed);
		}
	} while (rc == 0 && pg->n == UPGRADE_PAGE);
	free(pg);
	return rc;
}

int origin_upgrade_schema2(const struct store_backend *be, struct store_conn *c)
{
	struct origin_cache *oc = origin_cache_new();
	int rc;

	if (!oc)
		return -ENOMEM;
	rc = exec_plain(be, c, "ALTER TABLE events ADD COLUMN origin BIGINT");
	if (rc == 0)
		rc = exec_plain(be, c, upgrade_fill);
	if (rc == 0)
		rc = upgrade_keys(be, c, oc);
	if (rc == 0)
		rc = exec_plain(be, c, upgrade_point);
	if (rc == 0)
		rc = exec_plain(be, c, "DROP INDEX IF EXISTS events_session");
	if (rc == 0)
		rc = exec_plain(be, c, "DROP INDEX IF EXISTS events_pid");
	origin_cache_free(oc);
	return rc;
}
