/*
 * The PostgreSQL backend (libpq). Collectors are stateless replicas over
 * one database: appends take a row lock on the ledger (SELECT ... FOR
 * UPDATE), so they serialize across processes as well as threads.
 *
 * Every connection runs in pipeline mode. A statement whose result nobody
 * waits for (the rows of an append) is only queued; the queue is sent
 * and checked at the next statement that returns something, at commit,
 * or when it grows long. An append is then a few round trips, not one
 * per row. Parameters and results travel in binary.
 */
#include <endian.h>
#include <errno.h>
#include <postgresql/libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collector/store_backend.h"
#include "collector/store_schema.h"

/* Queued statements before their results are read: small enough that the
 * server's replies never fill the socket while we still send. */
#define PG_MAX_QUEUED 256

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_CHAR 18
#define OID_NAME 19
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_UNKNOWN 705
#define OID_VARCHAR 1043

struct store_conn {
	PGconn *pg;
	bool prepared[STMT_COUNT];
	bool in_tx;
	int queued;
	int16_t queue[PG_MAX_QUEUED + 4];	/* a prepare's stmt id, or -1 */
	bool failed;			/* this sync saw an error (err says which) */
	char err[STORE_ERR_LEN];
};

struct pg_params {
	const char *values[STORE_MAX_PARAMS];
	int lengths[STORE_MAX_PARAMS];
	int formats[STORE_MAX_PARAMS];
	Oid types[STORE_MAX_PARAMS];
	uint64_t ints[STORE_MAX_PARAMS];	/* big-endian int8s */
};

static void set_error(struct store_conn *c, const char *what, const char *msg)
{
	size_t len;

	if (c->failed)
		return;		/* the first error is the one that matters */
	c->failed = true;
	snprintf(c->err, sizeof(c->err), "%s: %s", what, msg && msg[0] ? msg : "failed");
	len = strlen(c->err);
	while (len > 0 && (c->err[len - 1] == '\n' || c->err[len - 1] == ' '))
		c->err[--len] = '\0';
}

static int conn_fail(struct store_conn *c, const char *what)
{
	set_error(c, what, PQerrorMessage(c->pg));
	return -EIO;
}

static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static int create_schema(struct store_conn *c)
{
	PGresult *res = PQexec(c->pg, STORE_SCHEMA_PG);
	ExecStatusType st = PQresultStatus(res);
	int rc = 0;

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		set_error(c, "creating the schema", PQresultErrorMessage(res));
		rc = -EIO;
	}
	PQclear(res);
	if (rc < 0)
		PQclear(PQexec(c->pg, "ROLLBACK"));
	return rc;
}

static void pg_disconnect(struct store_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c);
}

static int pg_connect(const char *url, bool writer, struct store_conn **out, char *err,
		      size_t errlen)
{
	struct store_conn *c = calloc(1, sizeof(*c));

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->pg = PQconnectdb(url);
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
		snprintf(err, errlen, "connecting to PostgreSQL: %s",
			 c->pg ? PQerrorMessage(c->pg) : "out of memory");
		goto fail;
	}
	PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
	if (writer && create_schema(c) < 0) {
		snprintf(err, errlen, "%s", c->err);
		goto fail;
	}
	c->failed = false;
	*out = c;
	return 0;
fail:
	pg_disconnect(c);
	return -1;
}

/* Outside a transaction, a lost connection is reopened once. */
static int ensure_ready(struct store_conn *c)
{
	if (PQstatus(c->pg) != CONNECTION_OK) {
		if (c->in_tx || c->queued) {
			set_error(c, "PostgreSQL", "connection lost");
			return -EIO;
		}
		PQreset(c->pg);
		if (PQstatus(c->pg) != CONNECTION_OK)
			return conn_fail(c, "reconnecting to PostgreSQL");
		memset(c->prepared, 0, sizeof(c->prepared));
	}
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF && PQenterPipelineMode(c->pg) != 1)
		return conn_fail(c, "entering pipeline mode");
	return 0;
}

static void to_params(const struct sql_value *v, int n, struct pg_params *pp)
{
	for (int i = 0; i < n; i++) {
		pp->formats[i] = 1;
		pp->lengths[i] = (int)v[i].len;
		pp->values[i] = v[i].p;
		switch (v[i].type) {
		case SQL_INT:
			pp->ints[i] = htobe64((uint64_t)v[i].i);
			pp->values[i] = (const char *)&pp->ints[i];
			pp->lengths[i] = 8;
			pp->types[i] = OID_INT8;
			break;
		case SQL_TEXT:
			pp->types[i] = OID_TEXT;
			break;
		case SQL_BLOB:
			/* libpq reads an empty value through a non-NULL pointer. */
			if (!pp->values[i])
				pp->values[i] = "";
			pp->types[i] = OID_BYTEA;
			break;
		case SQL_NULL:
			pp->values[i] = NULL;
			pp->types[i] = 0;	/* typed by its context */
			break;
		}
	}
}

static void queue_push(struct store_conn *c, int id)
{
	c->queue[c->queued++] = (int16_t)id;
}

static int send_query(struct store_conn *c, enum store_stmt id, const char *sql,
		      const struct sql_value *params, int n)
{
	struct pg_params pp;
	char name[16];
	int ok;

	to_params(params, n, &pp);
	snprintf(name, sizeof(name), "dbw%d", (int)id);
	if (id >= 0 && !c->prepared[id]) {
		if (PQsendPrepare(c->pg, name, sql, n, pp.types) != 1)
			return conn_fail(c, "preparing a statement");
		c->prepared[id] = true;
		queue_push(c, id);
	}
	if (id >= 0)
		ok = PQsendQueryPrepared(c->pg, name, n, pp.values, pp.lengths, pp.formats, 1);
	else
		ok = PQsendQueryParams(c->pg, sql, n, pp.types, pp.values, pp.lengths,
				       pp.formats, 1);
	if (ok != 1)
		return conn_fail(c, "sending a statement");
	queue_push(c, -1);
	return 0;
}

static int int_value(const char *p, int len, struct sql_value *v)
{
	uint64_t u64;
	uint32_t u32;
	uint16_t u16;

	switch (len) {
	case 8:
		memcpy(&u64, p, 8);
		*v = sql_int((int64_t)be64toh(u64));
		return 0;
	case 4:
		memcpy(&u32, p, 4);
		*v = sql_int((int32_t)be32toh(u32));
		return 0;
	case 2:
		memcpy(&u16, p, 2);
		*v = sql_int((int16_t)be16toh(u16));
		return 0;
	case 1:
		*v = sql_int((uint8_t)p[0]);
		return 0;
	}
	return -EIO;
}

static int column_value(const PGresult *res, int row, int col, struct sql_value *v)
{
	const char *p = PQgetvalue(res, row, col);
	int len = PQgetlength(res, row, col);

	if (PQgetisnull(res, row, col)) {
		*v = (struct sql_value){ .type = SQL_NULL };
		return 0;
	}
	switch (PQftype(res, col)) {
	case OID_INT8:
	case OID_INT4:
	case OID_INT2:
	case OID_BOOL:
		return int_value(p, len, v);
	case OID_BYTEA:
		*v = sql_blob(p, (size_t)len);
		return 0;
	case OID_TEXT:
	case OID_VARCHAR:
	case OID_NAME:
	case OID_CHAR:
	case OID_UNKNOWN:
		/* libpq ends every value with a NUL. */
		*v = (struct sql_value){ .type = SQL_TEXT, .p = p, .len = (size_t)len };
		return 0;
	}
	return -EIO;
}

static int deliver_rows(struct store_conn *c, const PGresult *res, sql_row_fn *fn, void *arg)
{
	struct sql_value cols[STORE_MAX_COLUMNS];
	int ncols = PQnfields(res), nrows = PQntuples(res);

	if (ncols > STORE_MAX_COLUMNS) {
		set_error(c, "reading a result", "too many columns");
		return -EIO;
	}
	for (int r = 0; r < nrows; r++) {
		int stop;

		for (int i = 0; i < ncols; i++) {
			if (column_value(res, r, i, &cols[i]) < 0) {
				set_error(c, "reading a result", "a column of an unexpected type");
				return -EIO;
			}
		}
		stop = fn(arg, cols, ncols);
		if (stop)
			return stop;
	}
	return 0;
}

/* One result of queued entry @i. The caller's (the last entry's) is kept
 * in *@kept, to be read once the connection is idle again. */
static void take_result(struct store_conn *c, int i, PGresult *res, bool last,
			PGresult **kept)
{
	ExecStatusType st = PQresultStatus(res);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
		if (last && !*kept) {
			*kept = res;
			return;
		}
		PQclear(res);
		return;
	}
	if (c->queue[i] >= 0)
		c->prepared[c->queue[i]] = false;
	if (st == PGRES_PIPELINE_ABORTED)
		set_error(c, "PostgreSQL", "statement skipped after an earlier error");
	else
		set_error(c, "PostgreSQL", PQresultErrorMessage(res));
	PQclear(res);
}

/* Sends the queue to the server and reads every result, up to the sync. */
static int read_queue(struct store_conn *c, PGresult **kept)
{
	PGresult *res;

	if (PQpipelineSync(c->pg) != 1) {
		c->queued = 0;
		return conn_fail(c, "sending to PostgreSQL");
	}
	for (int i = 0; i < c->queued; i++)
		while ((res = PQgetResult(c->pg)))
			take_result(c, i, res, i == c->queued - 1, kept);
	c->queued = 0;
	res = PQgetResult(c->pg);
	if (PQresultStatus(res) != PGRES_PIPELINE_SYNC)
		set_error(c, "PostgreSQL", PQerrorMessage(c->pg));
	PQclear(res);
	return c->failed ? -EIO : 0;
}

/*
 * Runs the queue; the last statement's rows go to @fn only once every
 * result is read, so @fn may run statements of its own on this connection.
 */
static int pg_sync(struct store_conn *c, sql_row_fn *fn, void *arg, int64_t *changes)
{
	PGresult *kept = NULL;
	int rc;

	c->failed = false;
	rc = read_queue(c, &kept);
	if (rc == 0 && kept && changes)
		*changes = strtoll(PQcmdTuples(kept), NULL, 10);
	if (rc == 0 && kept && fn)
		rc = deliver_rows(c, kept, fn, arg);
	PQclear(kept);
	return rc;
}

static int pg_exec(struct store_conn *c, enum store_stmt id, const char *sql,
		   const struct sql_value *params, int n, sql_row_fn *fn, void *arg,
		   int64_t *changes)
{
	c->failed = false;
	if (n > STORE_MAX_PARAMS) {
		set_error(c, "PostgreSQL", "too many parameters");
		return -EIO;
	}
	if (ensure_ready(c) < 0)
		return -EIO;
	if (send_query(c, id, sql, params, n) < 0)
		return -EIO;
	if (!fn && !changes && c->in_tx && c->queued < PG_MAX_QUEUED)
		return 0;
	return pg_sync(c, fn, arg, changes);
}

static int pg_begin(struct store_conn *c, bool write)
{
	const char *sql = write ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
	int rc;

	/* Queued: it travels with the transaction's first statement. */
	c->in_tx = true;
	rc = pg_exec(c, STMT_DYNAMIC, sql, NULL, 0, NULL, NULL, NULL);
	if (rc < 0)
		c->in_tx = false;
	return rc;
}

static int pg_commit(struct store_conn *c)
{
	int64_t changes;
	int rc = pg_exec(c, STMT_DYNAMIC, "COMMIT", NULL, 0, NULL, NULL, &changes);

	c->in_tx = false;
	return rc;
}

static void pg_rollback(struct store_conn *c)
{
	char err[STORE_ERR_LEN];
	int64_t changes;

	/* Keep the error that caused the rollback. */
	memcpy(err, c->err, sizeof(err));
	c->in_tx = false;
	if (PQstatus(c->pg) == CONNECTION_OK) {
		if (c->queued)
			pg_sync(c, NULL, NULL, NULL);
		pg_exec(c, STMT_DYNAMIC, "ROLLBACK", NULL, 0, NULL, NULL, &changes);
	}
	c->queued = 0;
	memcpy(c->err, err, sizeof(err));
}

static const char *pg_errmsg(struct store_conn *c)
{
	return c->err;
}

const struct store_backend store_backend_pg = {
	.name = "postgresql",
	.substr_fn = "strpos",
	.ledger_lock_sql = "SELECT l.size, l.frontier, c.size FROM ledger l, sessions_counted c "
			   "WHERE l.id = 1 AND c.id = 1 FOR UPDATE",
	.settle_lock_sql = "SELECT size FROM ledger WHERE id = 1 FOR UPDATE",
	.connect = pg_connect,
	.disconnect = pg_disconnect,
	.exec = pg_exec,
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.errmsg = pg_errmsg,
};
