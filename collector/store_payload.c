/*
 * Reading events whose bytes may be in a batch payload: the query's rows
 * are copied first; then the payloads they point into are read, each once,
 * in the order the rows first need them, and each row's slice copied out;
 * then the rows are handed on, in the query's order. A read costs one
 * decompression per distinct batch, whatever order the rows come in; with
 * a budget, once the batches read have spent it, it stops at the first row
 * that needs another.
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

/* In a payload (its id an integer), or not (NULL: raw_inline). Anything
 * else is an altered row: its bytes are unreadable. */
static bool row_in_payload(const struct row_copy *r)
{
	return row_ref(r)[0].type != SQL_NULL;
}

/* --- payloads ----------------------------------------------------------- */

static int payload_row(void *arg, const struct sql_value *cols, int ncols)
{
	struct payload_plain *pl = arg;
	int rc;

	(void)ncols;
	if (cols[0].type != SQL_BLOB)
		return 0;
	rc = wire_decompress(cols[0].p, cols[0].len, WIRE_MAX_BATCH, &pl->data, &pl->len);
	pl->rc = rc == -ENOMEM ? -ENOMEM : rc < 0 ? -EBADMSG : 0;
	return 0;
}

int payload_plain_load(struct store *s, struct store_conn *c, int64_t id,
		       struct payload_plain *pl)
{
	struct sql_value p[] = { sql_int(id) };

	if (payload_plain_is(pl, id))
		return pl->rc == -ENOMEM ? -ENOMEM : 0;
	payload_plain_release(pl);
	*pl = (struct payload_plain){ .id = id, .rc = -EBADMSG };
	if (store_exec(s, c, STMT_PAYLOAD_GET, "SELECT data FROM payloads WHERE id = $1", p, 1,
		       payload_row, pl) < 0)
		return -EIO;
	if (pl->rc == -EBADMSG)
		log_warn("store: payload %lld is missing or does not decompress", (long long)id);
	return pl->rc == -ENOMEM ? -ENOMEM : 0;
}

const uint8_t *payload_plain_slice(const struct payload_plain *pl, int64_t off, int64_t len)
{
	if (pl->rc < 0)
		return NULL;	/* logged when read */
	if (off < 0 || len <= 0 || (uint64_t)off > pl->len ||
	    (uint64_t)len > pl->len - (uint64_t)off) {
		log_warn("store: payload %lld does not hold bytes %lld+%lld", (long long)pl->id,
			 (long long)off, (long long)len);
		return NULL;
	}
	return pl->data + off;
}

void payload_plain_release(struct payload_plain *pl)
{
	free(pl->data);
	*pl = PAYLOAD_PLAIN_NONE;
}

/* Column @col of @r becomes its slice of @pl: copied, or NULL when the
 * row or the payload does not hold it. */
static int row_slice(struct row_copy *r, int col, const struct payload_plain *pl)
{
	const struct sql_value *ref = row_ref(r);
	const uint8_t *at;

	r->cols[col] = (struct sql_value){ .type = SQL_NULL };
	if (ref[0].type != SQL_INT || ref[1].type != SQL_INT || ref[2].type != SQL_INT ||
	    !(at = payload_plain_slice(pl, ref[1].i, ref[2].i)))
		return 0;
	r->bytes = malloc((size_t)ref[2].i);
	if (!r->bytes)
		return -ENOMEM;
	memcpy(r->bytes, at, (size_t)ref[2].i);
	r->cols[col] = sql_blob(r->bytes, (size_t)ref[2].i);
	return 0;
}

/* Rows in a payload, as indexes into the result. */
struct pending {
	size_t row;
	int64_t payload;	/* INT64_MIN: not an integer (altered) */
	size_t first;		/* the first row that needs this payload */
};

static int by_payload(const void *x, const void *y)
{
	const struct pending *a = x, *b = y;

	if (a->payload != b->payload)
		return a->payload < b->payload ? -1 : 1;
	return a->row < b->row ? -1 : a->row > b->row;
}

static int by_first_need(const void *x, const void *y)
{
	const struct pending *a = x, *b = y;

	if (a->first != b->first)
		return a->first < b->first ? -1 : 1;
	return a->row < b->row ? -1 : a->row > b->row;
}

/*
 * Every row that points into a payload gets its bytes, each payload read
 * once, in the order the rows first need them. With @budget (bytes
 * decompressed; 0: none), the rows from the first one whose payload comes
 * after the budget is spent are cut off: *@keep is how many rows remain.
 */
static int rows_resolve(struct store *s, struct store_conn *c, struct rows *rs, int col,
			size_t budget, size_t *keep)
{
	struct pending *pend = malloc((rs->n ? rs->n : 1) * sizeof(*pend));
	struct payload_plain pl = PAYLOAD_PLAIN_NONE;
	size_t n = 0, spent = 0;
	int rc = 0;

	*keep = rs->n;
	if (!pend)
		return -ENOMEM;
	for (size_t i = 0; i < rs->n; i++) {
		const struct sql_value *ref = row_ref(rs->v[i]);

		if (row_in_payload(rs->v[i]))
			pend[n++] = (struct pending){
				.row = i, .payload = ref[0].type == SQL_INT ? ref[0].i : INT64_MIN
			};
	}
	/* Group by payload; each group's first need is its first row. */
	qsort(pend, n, sizeof(*pend), by_payload);
	for (size_t i = 0; i < n; i++)
		pend[i].first = i && pend[i].payload == pend[i - 1].payload ? pend[i - 1].first
									    : pend[i].row;
	qsort(pend, n, sizeof(*pend), by_first_need);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct row_copy *r = rs->v[pend[i].row];

		if (!i || pend[i].payload != pend[i - 1].payload) {
			if (budget && i && spent >= budget) {
				*keep = pend[i].first;
				break;
			}
			/* A payload id that is no integer: row_slice refuses it. */
			if (pend[i].payload != INT64_MIN) {
				rc = payload_plain_load(s, c, pend[i].payload, &pl);
				spent += pl.len;
			}
		}
		if (rc == 0)
			rc = row_slice(r, col, &pl);
	}
	payload_plain_release(&pl);
	free(pend);
	return rc;
}

int store_exec_events_within(struct store *s, struct store_conn *c, enum store_stmt id,
			     const char *sql, const struct sql_value *params, int n,
			     int bytes_col, size_t budget, bool *cut, sql_row_fn *fn, void *arg)
{
	struct rows rs = { .bytes_col = bytes_col };
	size_t keep = 0;
	int rc = store_exec(s, c, id, sql, params, n, rows_add, &rs);

	if (rc == -EINVAL) {
		log_error("store: an event query's columns do not end with its payload");
		rc = -EIO;
	}
	if (rc == 0)
		rc = rows_resolve(s, c, &rs, bytes_col, budget, &keep);
	if (rc == -ENOMEM)
		log_error("store: out of memory reading events");
	if (cut)
		*cut = rc == 0 && keep < rs.n;
	for (size_t i = 0; rc == 0 && i < keep; i++)
		rc = fn(arg, rs.v[i]->cols, rs.v[i]->ncols);
	rows_free(&rs);
	return rc;
}

int store_exec_events(struct store *s, struct store_conn *c, enum store_stmt id,
		      const char *sql, const struct sql_value *params, int n, int bytes_col,
		      sql_row_fn *fn, void *arg)
{
	return store_exec_events_within(s, c, id, sql, params, n, bytes_col, 0, NULL, fn, arg);
}
