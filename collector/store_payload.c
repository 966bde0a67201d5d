/*
 * Reading events whose bytes may be in a batch payload: the query's rows
 * are copied first; then the payloads they point into are read, each once
 * (rows sorted by payload), and each row's slice copied out; then the rows
 * are handed on, in the query's order. A read costs one decompression per
 * distinct batch, whatever order the rows come in.
 */
#include "collector/store_payload.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/wire.h"

/* --- the query's rows, copied ------------------------------------------- */

struct row_copy {
	uint8_t *bytes;			/* the slice, when in a payload */
	int ncols;
	struct sql_value cols[];	/* then their texts and blobs */
};

struct rows {
	int bytes_col;
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
	r->bytes = NULL;
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

	if (ncols < rs->bytes_col + 1 + SQL_EVENT_PAYLOAD_NCOLS)
		return -EINVAL;
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
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i]->bytes);
		free(rs->v[i]);
	}
	free(rs->v);
}

/* Where the row's bytes are: payload id, offset, length. */
static const struct sql_value *row_ref(const struct row_copy *r)
{
	return &r->cols[r->ncols - SQL_EVENT_PAYLOAD_NCOLS];
}

/* --- payloads ----------------------------------------------------------- */

/* A payload, decompressed. */
struct payload {
	int64_t id;
	int rc;				/* 0, -EBADMSG (missing, not a batch), -ENOMEM */
	uint8_t *plain;
	size_t len;
};

static int payload_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct payload *pl = arg;
	int rc;

	(void)ncols;
	if (cols[0].type != SQL_BLOB)
		return 0;
	rc = wire_decompress(cols[0].p, cols[0].len, WIRE_MAX_BATCH, &pl->plain, &pl->len);
	pl->rc = rc == -ENOMEM ? -ENOMEM : rc < 0 ? -EBADMSG : 0;
	return 0;
}

/* Reads payload @id into @pl (replacing what it held): 0 (pl->rc says
 * whether it is usable) or -EIO. */
static int payload_load(struct store *s, struct store_conn *c, int64_t id, struct payload *pl)
{
	struct sql_value p[] = { sql_int(id) };

	free(pl->plain);
	*pl = (struct payload){ .id = id, .rc = -EBADMSG };
	if (store_exec(s, c, STMT_PAYLOAD_GET, "SELECT data FROM payloads WHERE id = $1", p, 1,
		       payload_row, pl) < 0)
		return -EIO;
	if (pl->rc == -EBADMSG)
		log_warn("store: payload %lld is missing or does not decompress", (long long)id);
	return 0;
}

/* Column @col of @r becomes its slice of @pl: copied, or NULL when the
 * payload does not hold it. */
static int row_slice(struct row_copy *r, int col, const struct payload *pl)
{
	const struct sql_value *ref = row_ref(r);
	int64_t off = ref[1].i, len = ref[2].i;

	r->cols[col] = (struct sql_value){ .type = SQL_NULL };
	if (pl->rc < 0)
		return 0;
	if (ref[1].type != SQL_INT || ref[2].type != SQL_INT || off < 0 || len <= 0 ||
	    (uint64_t)off > pl->len || (uint64_t)len > pl->len - (uint64_t)off) {
		log_warn("store: payload %lld does not hold bytes %lld+%lld", (long long)pl->id,
			 (long long)off, (long long)len);
		return 0;
	}
	r->bytes = malloc((size_t)len);
	if (!r->bytes)
		return -ENOMEM;
	memcpy(r->bytes, pl->plain + off, (size_t)len);
	r->cols[col] = sql_blob(r->bytes, (size_t)len);
	return 0;
}

static int by_payload(const void *x, const void *y)
{
	const struct row_copy *a = *(struct row_copy *const *)x, *b = *(struct row_copy *const *)y;
	int64_t pa = row_ref(a)[0].i, pb = row_ref(b)[0].i;

	return pa < pb ? -1 : pa > pb;
}

/* Every row that points into a payload gets its bytes, each payload read once. */
static int rows_resolve(struct store *s, struct store_conn *c, struct rows *rs, int col)
{
	struct row_copy **sorted = malloc((rs->n ? rs->n : 1) * sizeof(*sorted));
	struct payload pl = { .rc = -EBADMSG };
	size_t n = 0;
	int rc = 0;

	if (!sorted)
		return -ENOMEM;
	for (size_t i = 0; i < rs->n; i++)
		if (row_ref(rs->v[i])[0].type == SQL_INT)
			sorted[n++] = rs->v[i];
	qsort(sorted, n, sizeof(*sorted), by_payload);
	for (size_t i = 0; i < n && rc == 0; i++) {
		int64_t id = row_ref(sorted[i])[0].i;

		if (i == 0 || id != pl.id)
			rc = payload_load(s, c, id, &pl);
		if (rc == 0)
			rc = pl.rc == -ENOMEM ? -ENOMEM : row_slice(sorted[i], col, &pl);
	}
	free(pl.plain);
	free(sorted);
	return rc;
}

int store_exec_events(struct store *s, struct store_conn *c, enum store_stmt id,
		      const char *sql, const struct sql_value *params, int n, int bytes_col,
		      sql_row_fn *fn, void *arg)
{
	struct rows rs = { .bytes_col = bytes_col };
	int rc = store_exec(s, c, id, sql, params, n, rows_add, &rs);

	if (rc == -EINVAL) {
		log_error("store: an event query's columns do not end with its payload");
		rc = -EIO;
	}
	if (rc == 0)
		rc = rows_resolve(s, c, &rs, bytes_col);
	if (rc == -ENOMEM)
		log_error("store: out of memory reading events");
	for (size_t i = 0; rc == 0 && i < rs.n; i++)
		rc = fn(arg, rs.v[i]->cols, rs.v[i]->ncols);
	rows_free(&rs);
	return rc;
}
