#include "collector/store_columns.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *const store_column_names[STORE_NCOLUMNS] = {
	[COL_AGENT_ID] = "agent_id",
	[COL_EPOCH] = "epoch",
	[COL_SEQ] = "seq",
	[COL_TS] = "ts",
	[COL_KIND] = "kind",
	[COL_SESSION_ID] = "session_id",
	[COL_PID] = "pid",
	[COL_COMM] = "comm",
	[COL_USER_NAME] = "user_name",
	[COL_POD_UID] = "pod_uid",
	[COL_POD_NAME] = "pod_name",
	[COL_POD_NAMESPACE] = "pod_namespace",
	[COL_DB_USER] = "db_user",
	[COL_DATABASE] = "database",
	[COL_VERDICT] = "verdict",
	[COL_STATEMENT_KIND] = "statement_kind",
	[COL_SQL] = "sql",
};

struct sql_value sql_text(const char *s)
{
	if (!s)
		return (struct sql_value){ .type = SQL_NULL };
	return (struct sql_value){ .type = SQL_TEXT, .p = s, .len = strlen(s) };
}

/* Length of the valid UTF-8 sequence at @p (as PostgreSQL accepts it:
 * shortest form, no surrogates, at most U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
	size_t n;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static bool utf8_valid(const char *s, size_t len)
{
	size_t i = 0;

	/* ASCII, eight bytes at a time: most of what agents send. */
	for (uint64_t w; i + 8 <= len; i += 8) {
		memcpy(&w, s + i, 8);
		if (w & 0x8080808080808080ull)
			break;
	}
	for (size_t n; i < len; i += n) {
		n = utf8_seq((const unsigned char *)s + i, len - i);
		if (!n)
			return false;
	}
	return true;
}

/* A copy with every byte that starts no valid sequence as U+FFFD. */
static char *utf8_repair(const char *s, size_t len)
{
	char *out = malloc(3 * len + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0, n; i < len; i += n) {
		n = utf8_seq((const unsigned char *)s + i, len - i);
		if (n) {
			memcpy(o, s + i, n);
			o += n;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			n = 1;
		}
	}
	*o = '\0';
	return out;
}

/* Empty is NULL, as in the event's JSON. */
static int put_text(struct store_row *row, enum store_column col, const char *s)
{
	size_t len = s ? strlen(s) : 0;

	if (len == 0)
		return 0;	/* left NULL by store_columns_derive */
	if (utf8_valid(s, len)) {
		row->v[col] = (struct sql_value){ .type = SQL_TEXT, .p = s, .len = len };
		return 0;
	}
	row->owned[col] = utf8_repair(s, len);
	if (!row->owned[col])
		return -ENOMEM;
	row->v[col] = sql_text(row->owned[col]);
	return 0;
}

const char *store_event_kind(const Dbward__V1__Event *ev)
{
	switch (ev->body_case) {
	case DBWARD__V1__EVENT__BODY_CONNECTION_OPEN:
		return "connection_open";
	case DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE:
		return "connection_close";
	case DBWARD__V1__EVENT__BODY_STATEMENT:
		return "statement";
	default:
		return NULL;
	}
}

static int derive_identity(const Dbward__V1__Identity *id, struct store_row *row)
{
	if (!id)
		return 0;
	row->v[COL_PID] = sql_int(id->pid);
	return put_text(row, COL_COMM, id->comm) | put_text(row, COL_USER_NAME, id->user) |
	       put_text(row, COL_POD_UID, id->pod_uid) | put_text(row, COL_POD_NAME, id->pod_name) |
	       put_text(row, COL_POD_NAMESPACE, id->pod_namespace);
}

static int derive_session(const Dbward__V1__Session *s, struct store_row *row)
{
	if (!s)
		return 0;
	return put_text(row, COL_SESSION_ID, s->session_id) | put_text(row, COL_DB_USER, s->db_user) |
	       put_text(row, COL_DATABASE, s->database) | derive_identity(s->identity, row);
}

static int derive_statement(const Dbward__V1__Statement *st, struct store_row *row)
{
	if (!st)
		return 0;
	return put_text(row, COL_VERDICT, st->verdict) |
	       put_text(row, COL_STATEMENT_KIND, st->statement_kind) | put_text(row, COL_SQL, st->sql);
}

void store_row_release(struct store_row *row)
{
	for (int i = 0; i < STORE_NCOLUMNS; i++) {
		free(row->owned[i]);
		row->owned[i] = NULL;
	}
}

/* Every column NULL, nothing owned. */
static void row_init(struct store_row *row)
{
	memset(row, 0, sizeof(*row));
	for (int i = 0; i < STORE_NCOLUMNS; i++)
		row->v[i] = (struct sql_value){ .type = SQL_NULL };
}

/* The event's own columns into @row (already initialised): 0 or -ENOMEM. */
static int derive_own(const Dbward__V1__Event *ev, struct store_row *row)
{
	/* NOT NULL in the table: an empty agent id is stored empty. */
	int rc = put_text(row, COL_AGENT_ID, ev->agent_id);

	if (row->v[COL_AGENT_ID].type == SQL_NULL)
		row->v[COL_AGENT_ID] = sql_text("");
	row->v[COL_EPOCH] = sql_u64(ev->epoch);
	row->v[COL_SEQ] = sql_u64(ev->seq);
	row->v[COL_TS] = sql_u64(ev->ts);
	row->v[COL_KIND] = sql_text(store_event_kind(ev));
	if (ev->body_case == DBWARD__V1__EVENT__BODY_STATEMENT)
		rc |= derive_statement(ev->statement, row);
	return rc;
}

/* Its own columns, who sent it, or both: the rest NULL. */
static int derive(const Dbward__V1__Event *ev, struct store_row *row, bool own, bool origin)
{
	row_init(row);
	if ((own && derive_own(ev, row)) | (origin && derive_session(ev->session, row))) {
		store_row_release(row);
		return -ENOMEM;
	}
	return 0;
}

int store_columns_derive(const Dbward__V1__Event *ev, struct store_row *row)
{
	return derive(ev, row, true, true);
}

int store_columns_derive_own(const Dbward__V1__Event *ev, struct store_row *row)
{
	return derive(ev, row, true, false);
}

int store_columns_derive_origin(const Dbward__V1__Event *ev, struct store_row *row)
{
	return derive(ev, row, false, true);
}

bool store_column_equal(const struct sql_value *stored, const struct sql_value *derived)
{
	if (stored->type != derived->type)
		return false;
	switch (stored->type) {
	case SQL_NULL:
		return true;
	case SQL_INT:
		return stored->i == derived->i;
	case SQL_TEXT:
	case SQL_BLOB:
		return stored->len == derived->len &&
		       (stored->len == 0 || memcmp(stored->p, derived->p, stored->len) == 0);
	}
	return false;
}
