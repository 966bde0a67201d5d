/*
 * Where an event's bytes are kept (store_schema.h, schema 4): in its own
 * row (events.raw_inline), or as a slice of the batch the agent sent,
 * kept once in payloads as the agent compressed it (events.payload,
 * payload_off, payload_len: where the event is in the decompressed
 * Batch). The second costs the writer about a seventh of the bytes; a
 * reader decompresses the batch (about 1 MiB, at most WIRE_MAX_BATCH) to
 * reach one event.
 *
 * Readers select an event's bytes (events.raw_inline) at some column and
 * end the select list with SQL_EVENT_PAYLOAD_REF, then run the query with
 * store_exec_events, which hands their callback each row with the bytes in
 * that column wherever they were kept. It reads the whole result first,
 * then each payload the rows point into once, in the order the rows first
 * need them, copying each row's slice out: a read decompresses each batch
 * it touches once,
 * whatever order its rows come in, and holds the result's rows and event
 * bytes in memory (as the rows themselves did before schema 4). A
 * PostgreSQL connection could not run the payload query inside another's
 * rows anyway.
 */
#ifndef DBWARD_COLLECTOR_STORE_PAYLOAD_H
#define DBWARD_COLLECTOR_STORE_PAYLOAD_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "collector/store_backend.h"

/*
 * store_exec for a query that selects events: @fn gets each row with
 * column @bytes_col holding the event's bytes (SQL_BLOB), or SQL_NULL when
 * they were to be in a payload that is missing, does not decompress, or
 * does not hold the slice (logged; verify reports it as altered bytes).
 * The select list ends with SQL_EVENT_PAYLOAD_REF. 0, -EIO, -ENOMEM or
 * @fn's non-zero value. Every row is read before @fn is first called.
 */
int store_exec_events(struct store *s, struct store_conn *c, enum store_stmt id,
		      const char *sql, const struct sql_value *params, int n, int bytes_col,
		      sql_row_fn *fn, void *arg);

/* store_exec_events reading at most about @budget bytes of decompressed
 * batches (0: no limit): the rows from the first whose batch comes after
 * the budget is spent are left out, and *@cut says so. At least one batch
 * is read, so a caller paging by id always moves on. */
int store_exec_events_within(struct store *s, struct store_conn *c, enum store_stmt id,
			     const char *sql, const struct sql_value *params, int n,
			     int bytes_col, size_t budget, bool *cut, sql_row_fn *fn, void *arg);

/* A payload, decompressed: what a reader keeps of the last it read. */
struct payload_plain {
	int64_t id;
	int rc;			/* 0; -EBADMSG: missing, or not a batch (logged);
				 * -ENODATA: none read yet */
	uint8_t *data;
	size_t len;
};

#define PAYLOAD_PLAIN_NONE ((struct payload_plain){ .rc = -ENODATA })

/* @pl holds payload @id already (usable or not). */
static inline bool payload_plain_is(const struct payload_plain *pl, int64_t id)
{
	return pl->rc != -ENODATA && pl->id == id;
}

/* Makes @pl payload @id, read and decompressed unless it holds it
 * already: 0 (pl->rc says whether it is usable), -ENOMEM or -EIO. */
int payload_plain_load(struct store *s, struct store_conn *c, int64_t id,
		       struct payload_plain *pl);

/* Bytes [@off, @off + @len) of @pl; NULL when it is unusable or does not
 * hold them (logged). */
const uint8_t *payload_plain_slice(const struct payload_plain *pl, int64_t off, int64_t len);

void payload_plain_release(struct payload_plain *pl);

#endif
