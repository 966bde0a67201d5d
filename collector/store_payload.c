/*
 * Reading events whose bytes may be in a batch payload: the query's rows
 * are copied first, then each row's bytes are found (its own, or a slice
 * of a decompressed payload, the last one kept for the rows after it, which
 * are mostly of the same batch) and the row handed on.
 */
#include "collector/store_payload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/wire.h"

/* --- the query's rows, copied ------------------------------------------- */

struct row_copy {
	int ncols;
	struct sql_value cols[];	/* then their texts and blobs */
};

struct rows {
	struct row_copy **v;
	size_t n, cap;
};

static struct row_copy *row_copy_new(const struct sql_value *cols, int ncols)
{
	size_t size = sizeof(struct row_copy) + (size_t)ncols * sizeof(struct sql_value);
	struct row_copy *r;
	char *at;

	for (int i = 0; i < ncols; i++)
		if (cols[i].type == SQL_TEXT || cols[i].type == SQL_BLOB)
			size += cols[i].len + 1;
	r = malloc(size);
	if (!r)
		return NULL;
	r->ncols = ncols;
	at = (char *)&r->cols[ncols];
	for (int i = 0; i < ncols; i++) {
		r->cols[i] = cols[i];
		if (cols[i].type != SQL_TEXT && cols[i].type != SQL_BLOB)
			continue;
		if (cols[i].len)
			memcpy(at, cols[i].p, cols[i].len);
		at[cols[i].len] = '\0';
		r->cols[i].p = at;
		at += cols[i].len + 1;
	}
	return r;
}

static int rows_add(void *arg, const struct sql_value *cols, int ncols)
{
	struct rows *rs = arg;
	struct row_copy *r;

	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 64;
		struct row_copy **v = realloc(rs->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		rs->v = v;
		rs->cap = cap;
	}
	r = row_copy_new(cols, ncols);
	if (!r)
		return -ENOMEM;
	rs->v[rs->n++] = r;
	return 0;
}

static void rows_free(struct rows *rs)
{
	for (size_t i = 0; i < rs->n; i++)
		free(rs->v[i]);
	free(rs->v);
}

/* --- payloads ----------------------------------------------------------- */

/* The payload read last, decompressed. */
struct payload_cache {
	int64_t id;
	bool loaded;
	bool ok;
	uint8_t *plain;
	size_t len;
};

static int payload_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct payload_cache *pc = arg;

	(void)ncols;
	if (cols[0].type != SQL_BLOB)
		return 0;
	pc->ok = wire_decompress(cols[0].p, cols[0].len, WIRE_MAX_BATCH, &pc->plain,
				 &pc->len) == 0;
	return 0;
}

static int payload_load(struct store *s, struct store_conn *c, struct payload_cache *pc,
			int64_t id)
{
	struct sql_value p[] = { sql_int(id) };

	if (pc->loaded && pc->id == id)
		return 0;
	free(pc->plain);
	*pc = (struct payload_cache){ .id = id, .loaded = true };
	if (store_exec(s, c, STMT_PAYLOAD_GET, "SELECT data FROM payloads WHERE id = $1", p, 1,
		       payload_row, pc) < 0)
		return -EIO;
	if (!pc->ok)
		log_warn("store: payload %lld is missing or does not decompress", (long long)id);
	return 0;
}

/* Column @col becomes the row's bytes, from the payload when it names one. */
static int row_bytes(struct store *s, struct store_conn *c, struct payload_cache *pc,
		     struct row_copy *r, int col)
{
	const struct sql_value *ref = &r->cols[r->ncols - SQL_EVENT_PAYLOAD_NCOLS];
	int64_t off = ref[1].i, len = ref[2].i;
	int rc;

	if (ref[0].type != SQL_INT)
		return 0;
	rc = payload_load(s, c, pc, ref[0].i);
	if (rc < 0)
		return rc;
	if (pc->ok && ref[1].type == SQL_INT && ref[2].type == SQL_INT && off >= 0 && len > 0 &&
	    (uint64_t)off <= pc->len && (uint64_t)len <= pc->len - (uint64_t)off) {
		r->cols[col] = sql_blob(pc->plain + off, (size_t)len);
		return 0;
	}
	if (pc->ok)
		log_warn("store: payload %lld does not hold bytes %lld+%lld", (long long)ref[0].i,
			 (long long)off, (long long)len);
	r->cols[col] = (struct sql_value){ .type = SQL_NULL };
	return 0;
}

int store_exec_events(struct store *s, struct store_conn *c, enum store_stmt id,
		      const char *sql, const struct sql_value *params, int n, int bytes_col,
		      sql_row_fn *fn, void *arg)
{
	struct rows rs = { 0 };
	struct payload_cache pc = { .loaded = false };
	int rc = store_exec(s, c, id, sql, params, n, rows_add, &rs);

	if (rc == -ENOMEM)
		log_error("store: out of memory reading events");
	for (size_t i = 0; rc == 0 && i < rs.n; i++) {
		struct row_copy *r = rs.v[i];

		if (r->ncols < bytes_col + 1 + SQL_EVENT_PAYLOAD_NCOLS) {
			log_error("store: an event query's columns do not end with its payload");
			rc = -EIO;
			break;
		}
		rc = row_bytes(s, c, &pc, r, bytes_col);
		if (rc == 0)
			rc = fn(arg, r->cols, r->ncols);
	}
	free(pc.plain);
	rows_free(&rs);
	return rc;
}
