/*
 * SQL classification with PostgreSQL's own parser (libpg_query): what each
 * statement in a piece of SQL text does, which tables it touches and which
 * functions it calls, however it is spelled. Policy rules match on this;
 * statement events report it. docs/sql-classification.md says what is
 * classified how, and what the parser cannot see.
 *
 * Thread-safe: libpg_query keeps its state per thread. Never call
 * pg_query_exit() in a thread that parses (see the docs).
 */
#ifndef DBWARD_AGENT_SQL_H
#define DBWARD_AGENT_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What a statement (or a part of one) does. The names (sql_kind_name) are
 * the words policy rules use. New kinds may be added; SQL_OTHER is every
 * statement that has no kind of its own.
 */
enum sql_kind {
	SQL_OTHER,
	SQL_SELECT,		/* SELECT, VALUES, TABLE; also what COPY ... TO reads */
	SQL_INSERT,		/* also what COPY ... FROM writes */
	SQL_UPDATE,		/* also INSERT ... ON CONFLICT DO UPDATE */
	SQL_DELETE,
	SQL_MERGE,
	SQL_TRUNCATE,
	SQL_COPY,
	SQL_CREATE,		/* every CREATE, CREATE TABLE AS, SELECT INTO, IMPORT FOREIGN SCHEMA */
	SQL_ALTER,		/* every ALTER, ALTER ... RENAME/OWNER/SET SCHEMA, REASSIGN OWNED */
	SQL_DROP,		/* every DROP, DROP OWNED */
	SQL_GRANT,		/* GRANT privilege, GRANT role, ALTER DEFAULT PRIVILEGES ... GRANT */
	SQL_REVOKE,
	SQL_COMMENT,		/* COMMENT ON */
	SQL_SECURITY_LABEL,
	SQL_REFRESH,		/* REFRESH MATERIALIZED VIEW */
	SQL_CLUSTER,
	SQL_REINDEX,
	SQL_VACUUM,
	SQL_ANALYZE,
	SQL_LOCK,
	SQL_CALL,
	SQL_DO,
	SQL_SET,		/* SET, RESET, SET CONSTRAINTS, SET ROLE, SET SESSION AUTHORIZATION */
	SQL_SHOW,
	SQL_TRANSACTION,	/* BEGIN, COMMIT, ROLLBACK, SAVEPOINT, PREPARE TRANSACTION, ... */
	SQL_EXPLAIN,
	SQL_PREPARE,
	SQL_EXECUTE,
	SQL_DEALLOCATE,
	SQL_DECLARE,		/* DECLARE ... CURSOR */
	SQL_FETCH,		/* FETCH, MOVE */
	SQL_CLOSE,		/* CLOSE cursor */
	SQL_LISTEN,
	SQL_UNLISTEN,
	SQL_NOTIFY,
	SQL_DISCARD,
	SQL_CHECKPOINT,
	SQL_LOAD,
	SQL_KIND_COUNT
};

#define SQL_KIND_BIT(kind) (UINT64_C(1) << (kind))

/* "select", "security_label", ...; "?" for a value out of range. */
const char *sql_kind_name(enum sql_kind kind);
/* The inverse, ignoring case. Returns 0 or -EINVAL. */
int sql_kind_parse(const char *word, enum sql_kind *out);

/*
 * Groups of kinds, as bitmasks of SQL_KIND_BIT:
 *   dcl    grant, revoke
 *   ddl    create, alter, drop, comment, security_label, refresh, cluster,
 *          grant, revoke (what PostgreSQL's log_statement = ddl logs)
 *   write  ddl + insert, update, delete, merge, truncate (log_statement =
 *          mod), + do and call, whose effects the parser cannot see.
 *          COPY ... FROM counts through the insert it performs.
 * Returns 0 for a word that is no group (ignoring case).
 */
uint64_t sql_group_mask(const char *group);
/* A kind or a group name to a mask. Returns 0 or -EINVAL. */
int sql_kinds_parse(const char *word, uint64_t *mask);

/* One thing a statement does: itself, or a statement nested in it. */
struct sql_op {
	enum sql_kind kind;
	/*
	 * False when the op is part of the statement but does not run now:
	 * the body of PREPARE, of EXPLAIN without ANALYZE, of CREATE VIEW /
	 * RULE / FUNCTION (SQL-standard body), of CREATE TABLE AS ... WITH NO
	 * DATA. Rules should usually judge these as if they ran: PREPARE p
	 * AS DELETE ... is the same intent as the DELETE.
	 */
	bool executed;
	/*
	 * update, delete and merge (and the update/delete/insert a MERGE or an
	 * upsert performs): a WHERE (or WHERE CURRENT OF) restricts the rows.
	 * MERGE and ON CONFLICT DO UPDATE always count as present (ON, the
	 * conflict). false for other kinds.
	 */
	bool where_present;
	/*
	 * The restriction mentions no column at all (WHERE true, WHERE 1 = 1,
	 * MERGE ... ON true): it keeps every row or none, so a rule about a
	 * missing WHERE should treat it as absent.
	 */
	bool where_constant;
	/*
	 * The relation acted on, as the parser resolved its name: unquoted
	 * identifiers folded to lower case, quoted ones as written, joined with
	 * '.' when qualified ("billing.invoices", "Orders"). NULL when there
	 * is none (SELECT reads many: see sql_statement.tables; DROP SCHEMA).
	 * A statement on several relations (DROP TABLE a, b; TRUNCATE; LOCK;
	 * VACUUM; GRANT ON a, b) has one op per relation.
	 */
	char *relation;
};

struct sql_statement {
	enum sql_kind kind;	/* of the statement itself: ops[0].kind */
	/*
	 * Everything it does, the statement itself first: data-modifying CTEs,
	 * the statement under EXPLAIN / PREPARE / COPY (query) / CREATE TABLE
	 * AS / DECLARE, the select a COPY ... TO performs and the insert a
	 * COPY ... FROM performs, MERGE's actions, an upsert's update, the
	 * elements of CREATE SCHEMA, rule actions, SQL-standard function
	 * bodies. Never empty.
	 */
	struct sql_op *ops;
	size_t n_ops;
	/*
	 * Every relation named anywhere (FROM, JOIN, subqueries, CTEs, targets,
	 * COPY, TRUNCATE and DROP lists, LOCK, GRANT ON TABLE, ...), deduped,
	 * in the form of sql_op.relation. A CTE's own name appears when it is
	 * read, as the parser cannot tell it from a table.
	 */
	char **tables;
	size_t n_tables;
	/* Every function called anywhere (FuncCall), deduped, as qualified as
	 * written: "pg_read_file", "pg_catalog.pg_read_file". */
	char **functions;
	size_t n_functions;
	bool copy_program;	/* COPY ... TO/FROM PROGRAM */
	bool copy_from;		/* COPY ... FROM (writes) rather than TO (reads) */
	bool copy_server_file;	/* COPY ... TO/FROM 'file' on the server */
	bool executes_body;	/* EXPLAIN ANALYZE: the explained statement runs */
	char *prepare_name;	/* PREPARE name AS ...: the ops describe the body */
	/*
	 * EXECUTE name (also under EXPLAIN or CREATE TABLE AS): what it does
	 * was prepared earlier; the session must look it up.
	 */
	char *execute_name;
	/*
	 * A DO block, or a function / procedure created with a body the parser
	 * does not read (AS '...' in any language): rules must decide how to
	 * treat what they cannot see.
	 */
	bool opaque_body;
	char *variable;		/* SET / RESET / SHOW: the setting, lower case; NULL for RESET ALL */
	int param_count;	/* highest $n */
	int location;		/* byte offset of the statement in the text */
	int length;		/* its length in bytes */
	/* pg_query_fingerprint of this statement alone, hex: the whole text's
	 * for a single statement; "" when it could not be taken. */
	char fingerprint[17];
};

/* Why a text could not be classified. */
enum sql_failure {
	SQL_FAIL_NONE,
	SQL_FAIL_SYNTAX,	/* libpg_query (PostgreSQL 15 grammar) rejected it */
	/*
	 * Nested deeper than SQL_MAX_DEPTH, refused before it could exhaust
	 * the stack (PostgreSQL refuses such statements too, "stack depth
	 * limit exceeded", at about the same depth); or a run of '+' and '-'
	 * so long that scanning it would take quadratic time.
	 */
	SQL_FAIL_TOO_COMPLEX,
	SQL_FAIL_NUL_BYTE,	/* a NUL inside the text: the server rejects such a message */
	/*
	 * The client encoding lets a multibyte character end in a byte that
	 * looks like a quote or backslash (SJIS, BIG5, GBK, UHC, GB18030,
	 * JOHAB, SHIFT_JIS_2004) and the text has non-ASCII bytes.
	 */
	SQL_FAIL_ENCODING,
	/*
	 * standard_conforming_strings was given as unknown and the text means
	 * something different with it on and off.
	 */
	SQL_FAIL_AMBIGUOUS,
};

/* Protobuf message levels of a parse tree the classifier accepts. */
#define SQL_MAX_DEPTH 16384

struct sql_parse {
	bool ok;
	enum sql_failure failure;
	char *error;		/* what went wrong, when !ok */
	/* SQL_FAIL_SYNTAX: 1-based character position as PostgreSQL reports
	 * it (ErrorResponse field 'P'); 0 when unknown. */
	int error_position;
	/* pg_query_fingerprint of the whole text in hex: equal for statements
	 * that differ only in constants; "" when !ok. */
	char fingerprint[17];
	struct sql_statement *stmts;
	size_t n_stmts;		/* 0 for empty text or only comments */
	/* Private: set by sql_parse_copy, the one allocation holding
	 * everything above; sql_parse_free frees just that. */
	void *block;
};

/*
 * The session settings that change how text is read. Zero-initialized it
 * is PostgreSQL's default (standard_conforming_strings on, UTF8).
 */
enum sql_scs {
	SQL_SCS_ON,
	SQL_SCS_OFF,
	/*
	 * A statement still in flight may have changed it (the server reports
	 * the new value in ParameterStatus only after running it): text with a
	 * backslash is read both ways and refused when the readings differ.
	 */
	SQL_SCS_UNKNOWN,
};

struct sql_settings {
	enum sql_scs standard_conforming_strings;
	/* client_encoding as the server reports it; NULL means UTF8. Names
	 * other than PostgreSQL's server encodings count as unsafe. */
	const char *client_encoding;
};

/*
 * Classifies @len bytes of @text (need not be NUL-terminated) read with
 * @settings (NULL: defaults). Returns 0 and fills @out (check out->ok), or
 * a negative errno with @out empty: -ENOMEM; -EAGAIN when a helper thread
 * for a deep statement could not be started; -EINVAL for @len > INT_MAX;
 * -EPROTO should libpg_query ever hand back malformed protobuf.
 * Free @out with sql_parse_free either way.
 *
 * Stack: up to about 1 MiB of the caller's; deep or long statements are
 * handled on a helper thread with a stack of their own.
 */
int sql_parse(const char *text, size_t len, const struct sql_settings *settings,
	      struct sql_parse *out);
void sql_parse_free(struct sql_parse *p);

/*
 * Where the parse tree holds a constant: the byte offset of every A_Const
 * node (a literal, or a '-' folded into the literal after it), ascending.
 * sql_cache uses it to tell texts that differ only in literals
 * (agent/sql_shape.h).
 */
struct sql_constants {
	int32_t *at;
	size_t n, cap;
};

/*
 * sql_parse, also appending to @constants (zeroed, or NULL for none) the
 * offsets of the constants of the reading @out describes. Free it with
 * sql_constants_free whatever the result.
 */
int sql_parse_constants(const char *text, size_t len, const struct sql_settings *settings,
			struct sql_parse *out, struct sql_constants *constants);
void sql_constants_free(struct sql_constants *c);

/*
 * The checks sql_parse makes before any scanning: SQL_FAIL_NUL_BYTE,
 * SQL_FAIL_TOO_COMPLEX (a run of signs), SQL_FAIL_ENCODING, or
 * SQL_FAIL_NONE when PostgreSQL's scanner may read the text.
 */
enum sql_failure sql_precheck(const char *text, size_t len, const struct sql_settings *settings);

/*
 * A deep copy of @src into @dst, in a single allocation: every field equal,
 * no pointer shared. Returns 0, or -ENOMEM with @dst empty. Free @dst with
 * sql_parse_free.
 */
int sql_parse_copy(const struct sql_parse *src, struct sql_parse *dst);

/*
 * Kinds of every op of @st as a mask, for matching a rule's statements.
 * With @executed_only, ops that do not run now are left out.
 */
uint64_t sql_statement_kinds(const struct sql_statement *st, bool executed_only);

/* Whether @client_encoding (as reported by the server) cannot hide an ASCII
 * quote or backslash inside a multibyte character. NULL counts as UTF8. */
bool sql_encoding_is_ascii_safe(const char *client_encoding);

#endif
