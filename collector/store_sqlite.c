/*
 * The SQLite backend: a file in WAL mode, synchronous=FULL (a commit is on
 * disk when it returns), 16 KiB pages, checkpoints on a thread of their own
 * (store_checkpoint.h). Each connection keeps its prepared
 * statements; the store gives each connection to one thread at a time.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_backend.h"
#include "collector/store_checkpoint.h"
#include "collector/store_schema.h"

#define SQLITE_BUSY_MS 10000

struct store_conn {
	sqlite3 *db;
	struct checkpointer *checkpointer;	/* the writer's */
	sqlite3_stmt *stmts[STMT_COUNT];
	char err[STORE_ERR_LEN];
};

static int conn_fail(struct store_conn *c, const char *what)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", what, sqlite3_errmsg(c->db));
	return -EIO;
}

/* "sqlite:/path", "sqlite:path" or "sqlite:///path": the path. */
static const char *url_path(const char *url)
{
	const char *p = url + strlen("sqlite:");

	if (strncmp(p, "//", 2) == 0)
		p += 2;
	return p;
}

static int run_script(struct store_conn *c, const char *sql, const char *what)
{
	char *msg = NULL;

	if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	snprintf(c->err, sizeof(c->err), "%s: %s", what, msg ? msg : sqlite3_errmsg(c->db));
	sqlite3_free(msg);
	return -EIO;
}

static int conn_setup(struct store_conn *c, bool writer)
{
	sqlite3_busy_timeout(c->db, SQLITE_BUSY_MS);
	if (!writer)
		return run_script(c, "PRAGMA query_only = 1;", "setting up a reader");
	/* page_size only takes on a new file (before WAL): 16 KiB pages cut an
	 * append's pages, WAL frames and write calls by about four. */
	if (run_script(c,
		       "PRAGMA page_size = 16384;\n"
		       "PRAGMA journal_mode = WAL;\n"
		       "PRAGMA synchronous = FULL;\n"
		       "PRAGMA cache_size = -32768;\n",
		       "setting up the database") < 0)
		return -EIO;
	return run_script(c, STORE_SCHEMA_SQLITE, "creating the schema");
}

static void sqlite_disconnect(struct store_conn *c)
{
	if (!c)
		return;
	checkpointer_stop(c->checkpointer);
	for (int i = 0; i < STMT_COUNT; i++)
		sqlite3_finalize(c->stmts[i]);
	sqlite3_close(c->db);
	free(c);
}

static int sqlite_connect(const char *url, bool writer, struct store_conn **out, char *err,
			  size_t errlen)
{
	struct store_conn *c = calloc(1, sizeof(*c));
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_CREATE : 0);

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (sqlite3_open_v2(url_path(url), &c->db, flags, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", url_path(url),
			 c->db ? sqlite3_errmsg(c->db) : "cannot open");
		goto fail;
	}
	if (conn_setup(c, writer) < 0) {
		snprintf(err, errlen, "%s: %s", url_path(url), c->err);
		goto fail;
	}
	if (writer &&
	    checkpointer_start(url_path(url), c->db, &c->checkpointer, err, errlen) < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	sqlite_disconnect(c);
	return -1;
}

/*
 * The shared SQL in SQLite's dialect: $N placeholders as ?N, and INSERT as
 * INSERT OR ROLLBACK. A multi-row INSERT that may fail a constraint (ABORT,
 * the default) makes SQLite keep a statement journal, a temp-file copy of
 * every page the statement changes, to undo that statement alone: it was
 * most of an append's writes. The store never goes on after a failed
 * statement (the whole append is rolled back), so a failure may as well
 * end the transaction at once.
 */
static char *sqlite_dialect(const char *sql)
{
	static const char insert[] = "INSERT INTO ", rollback[] = "INSERT OR ROLLBACK INTO ";
	bool is_insert = strncmp(sql, insert, strlen(insert)) == 0;
	size_t len = strlen(sql) + (is_insert ? strlen(rollback) - strlen(insert) : 0);
	char *text = malloc(len + 1);

	if (!text)
		return NULL;
	if (is_insert)
		snprintf(text, len + 1, "%s%s", rollback, sql + strlen(insert));
	else
		memcpy(text, sql, len + 1);
	for (char *p = text; *p; p++)
		if (*p == '$')
			*p = '?';
	return text;
}

static int prepare(struct store_conn *c, const char *sql, sqlite3_stmt **out)
{
	char *text = sqlite_dialect(sql);
	int rc;

	if (!text) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		return -EIO;
	}
	rc = sqlite3_prepare_v2(c->db, text, -1, out, NULL);
	free(text);
	return rc == SQLITE_OK ? 0 : conn_fail(c, "preparing a statement");
}

static int bind_one(sqlite3_stmt *st, int i, const struct sql_value *v)
{
	switch (v->type) {
	case SQL_INT:
		return sqlite3_bind_int64(st, i, v->i);
	case SQL_TEXT:
		return sqlite3_bind_text(st, i, v->p, (int)v->len, SQLITE_STATIC);
	case SQL_BLOB:
		/* A NULL pointer would bind NULL: an empty blob is zeroblob(0). */
		if (v->len == 0)
			return sqlite3_bind_zeroblob(st, i, 0);
		return sqlite3_bind_blob(st, i, v->p, (int)v->len, SQLITE_STATIC);
	case SQL_NULL:
		break;
	}
	return sqlite3_bind_null(st, i);
}

static int bind_all(struct store_conn *c, sqlite3_stmt *st, const struct sql_value *params,
		    int n)
{
	for (int i = 0; i < n; i++)
		if (bind_one(st, i + 1, &params[i]) != SQLITE_OK)
			return conn_fail(c, "binding a parameter");
	return 0;
}

static void column_value(sqlite3_stmt *st, int i, struct sql_value *v)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER:
		*v = sql_int(sqlite3_column_int64(st, i));
		break;
	case SQLITE_BLOB:
		v->type = SQL_BLOB;
		v->p = sqlite3_column_blob(st, i);
		v->len = (size_t)sqlite3_column_bytes(st, i);
		break;
	case SQLITE_NULL:
		*v = (struct sql_value){ .type = SQL_NULL };
		break;
	default:		/* TEXT, and FLOAT as its text */
		v->type = SQL_TEXT;
		v->p = sqlite3_column_text(st, i);
		v->len = (size_t)sqlite3_column_bytes(st, i);
		break;
	}
}

static int step_rows(struct store_conn *c, sqlite3_stmt *st, sql_row_fn *fn, void *arg)
{
	struct sql_value cols[STORE_MAX_COLUMNS];
	int rc, ncols = sqlite3_column_count(st);

	if (ncols > STORE_MAX_COLUMNS) {
		snprintf(c->err, sizeof(c->err), "too many result columns");
		return -EIO;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int stop;

		if (!fn)
			continue;
		for (int i = 0; i < ncols; i++)
			column_value(st, i, &cols[i]);
		stop = fn(arg, cols, ncols);
		if (stop)
			return stop;
	}
	return rc == SQLITE_DONE ? 0 : conn_fail(c, "running a statement");
}

static int sqlite_exec(struct store_conn *c, enum store_stmt id, const char *sql,
		       const struct sql_value *params, int n, sql_row_fn *fn, void *arg,
		       int64_t *changes)
{
	sqlite3_stmt *st = id >= 0 ? c->stmts[id] : NULL;
	int rc;

	if (!st) {
		if (prepare(c, sql, &st) < 0)
			return -EIO;
		if (id >= 0)
			c->stmts[id] = st;
	}
	rc = bind_all(c, st, params, n);
	if (rc == 0)
		rc = step_rows(c, st, fn, arg);
	if (rc == 0 && changes)
		*changes = sqlite3_changes64(c->db);
	/* A statement left unreset would pin its read snapshot. */
	if (id >= 0) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	} else {
		sqlite3_finalize(st);
	}
	return rc;
}

static int sqlite_begin(struct store_conn *c, bool write)
{
	return run_script(c, write ? "BEGIN IMMEDIATE" : "BEGIN", "beginning a transaction");
}

static int sqlite_commit(struct store_conn *c)
{
	return run_script(c, "COMMIT", "committing");
}

static void sqlite_rollback(struct store_conn *c)
{
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static const char *sqlite_errmsg(struct store_conn *c)
{
	return c->err;
}

const struct store_backend store_backend_sqlite = {
	.name = "sqlite",
	.substr_fn = "instr",
	.ledger_lock_sql = "SELECT l.size, l.frontier, c.size FROM ledger l, sessions_counted c "
			   "WHERE l.id = 1 AND c.id = 1",
	.settle_lock_sql = "SELECT size FROM ledger WHERE id = 1",
	.connect = sqlite_connect,
	.disconnect = sqlite_disconnect,
	.exec = sqlite_exec,
	.begin = sqlite_begin,
	.commit = sqlite_commit,
	.rollback = sqlite_rollback,
	.errmsg = sqlite_errmsg,
};
