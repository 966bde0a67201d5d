/*
 * An event's query columns, derived from its bytes: its own (events) and
 * who sent it (COL_SESSION_ID .. COL_DATABASE, stored once in origins:
 * collector/store_origin.h). The derivation is the only one: appending
 * stores it, verifying recomputes it from the stored bytes and compares,
 * column by column.
 *
 * Empty strings are NULL (proto3 cannot tell empty from unset); pid is
 * NULL when the event has no identity (origins holds those as '' and
 * -1). Text that is not valid UTF-8 is stored with each bad byte as
 * U+FFFD (PostgreSQL refuses it otherwise); the event's bytes stay
 * intact.
 */
#ifndef DBWARD_COLLECTOR_STORE_COLUMNS_H
#define DBWARD_COLLECTOR_STORE_COLUMNS_H

#include "collector/store_backend.h"
#include "dbward/v1/audit.pb-c.h"

enum store_column {
	COL_AGENT_ID,
	COL_EPOCH,
	COL_SEQ,
	COL_TS,
	COL_KIND,
	COL_SESSION_ID,
	COL_PID,
	COL_COMM,
	COL_USER_NAME,
	COL_POD_UID,
	COL_POD_NAME,
	COL_POD_NAMESPACE,
	COL_DB_USER,
	COL_DATABASE,
	COL_VERDICT,
	COL_STATEMENT_KIND,
	COL_SQL,
	STORE_NCOLUMNS
};

extern const char *const store_column_names[STORE_NCOLUMNS];

/* "statement", "connection_open", "connection_close" or NULL (no body). */
const char *store_event_kind(const Dbward__V1__Event *ev);

/* One event's column values; strings point into the event or owned[]. */
struct store_row {
	struct sql_value v[STORE_NCOLUMNS];
	char *owned[STORE_NCOLUMNS];
};

/* Fills @row from @ev (which must outlive it). 0 or -ENOMEM. */
int store_columns_derive(const Dbward__V1__Event *ev, struct store_row *row);
/* Only the event's own columns (those of events); who sent it NULL. */
int store_columns_derive_own(const Dbward__V1__Event *ev, struct store_row *row);
/* Only who sent it (COL_SESSION_ID .. COL_DATABASE); the rest NULL. */
int store_columns_derive_origin(const Dbward__V1__Event *ev, struct store_row *row);
void store_row_release(struct store_row *row);

/* Stored and derived values are the same (NULL = NULL; type and bytes). */
bool store_column_equal(const struct sql_value *stored, const struct sql_value *derived);

#endif
