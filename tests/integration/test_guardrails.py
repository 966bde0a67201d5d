"""Inline guardrails: denied statements never reach the server.

The client gets a normal ErrorResponse (SQLSTATE 42501, the rule named),
the session stays usable, a transaction block fails as it would for any
error, and the audit trail records who tried what.
"""

import pytest

import pgwire as P
from dbward_env import marker, psql_argv

RULES = [
    {"name": "no-drop", "match": {"statements": ["drop", "truncate"]}, "action": "deny"},
    {"name": "scoped-writes", "match": {"statements": ["delete", "update"], "where": "absent"},
     "action": "deny"},
    {"name": "no-secrets", "match": {"tables": ["secrets", "billing.*"]}, "action": "deny"},
    {"name": "python-read-only", "who": {"comm": "python3"},
     "match": {"statements": ["write"]}, "action": "deny"},
]


@pytest.fixture
def guarded(pg, agent_factory):
    """An agent with the example rules, and scratch tables t and secrets."""
    conn = pg.connect(user="app", dbname="orders")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("drop table if exists t, secrets; create table t (a int); "
                    "insert into t values (1), (2), (3); create table secrets (s text)")
    conn.close()
    return agent_factory(rules=RULES)


def count_rows(pg, table="t"):
    conn = pg.connect(user="app", dbname="orders")
    try:
        with conn.cursor() as cur:
            cur.execute(f"select count(*) from {table}")
            return cur.fetchone()[0]
    finally:
        conn.close()


def psql(pg, cgroup, run_in_cgroup, sql, app):
    argv = psql_argv("127.0.0.1", pg.port, application_name=app, sql=sql)
    return run_in_cgroup(cgroup, argv)


@pytest.mark.parametrize("sql, rule", [
    ("drop table t", "no-drop"),
    ("DROP/**/TABLE \"t\"", "no-drop"),
    ("-- a comment\n TrUnCaTe t", "no-drop"),
    ("delete from t", "scoped-writes"),
    ("update t set a = 0 where true", "scoped-writes"),
    ("with d as (delete from t returning *) select * from d", "scoped-writes"),
    ("explain analyze delete from t", "scoped-writes"),
    ("select * from public.secrets", "no-secrets"),
    ("select * from t where a in (select 1 from \"secrets\")", "no-secrets"),
    ("select 1; drop table t", "no-drop"),
])
def test_denied_statement_never_reaches_the_server(pg, guarded, test_cgroup, run_in_cgroup,
                                                   sql, rule):
    app = marker("deny")
    res = psql(pg, test_cgroup, run_in_cgroup, sql, app)
    assert res.returncode != 0
    assert "42501" in res.stderr or "denied" in res.stderr, res.stderr
    assert f'rule "{rule}"' in res.stderr, res.stderr
    assert count_rows(pg) == 3, "the table and its rows are untouched"
    event = guarded.wait_for_event(lambda e: e.get("application_name") == app
                                   and e.get("verdict") == "deny", kind="statement")
    assert event["rule"] == rule
    assert event["sqlstate"] == "42501"


def test_allowed_statements_still_run(pg, guarded, test_cgroup, run_in_cgroup):
    app = marker("allow")
    res = psql(pg, test_cgroup, run_in_cgroup,
               "delete from t where a = 1; update t set a = 9 where a = 2; select count(*) from t",
               app)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "2"
    events = guarded.wait_for_events(lambda e: e.get("application_name") == app, 3,
                                     kind="statement")
    assert [e["verdict"] for e in events] == ["allow", "allow", "allow"]


def test_denial_in_a_transaction_fails_it_like_any_error(pg, guarded, test_cgroup, run_in_cgroup):
    app = marker("tx")
    sql = ("begin; insert into t values (100); drop table t; commit;\n"
           "select count(*) from t")
    argv = ["psql", f"host=127.0.0.1 port={pg.port} user=app dbname=orders application_name={app}",
            "-X", "-At", "-v", "ON_ERROR_STOP=0"]
    res = run_in_cgroup(test_cgroup, argv, input=sql)
    assert 'rule "no-drop"' in res.stderr, res.stderr
    assert "current transaction is aborted" in res.stderr or "ROLLBACK" in res.stdout, (
        res.stdout, res.stderr)
    assert count_rows(pg) == 3, "the insert before the denial was not committed"


def test_identity_rule_applies_only_to_the_matching_process(pg, guarded, test_cgroup,
                                                            run_in_cgroup):
    script = ("import psycopg2, sys\n"
              f"c = psycopg2.connect(host='127.0.0.1', port={pg.port}, user='app', dbname='orders')\n"
              "c.autocommit = True\n"
              "cur = c.cursor()\n"
              "cur.execute('select count(*) from t'); print(cur.fetchone()[0])\n"
              "try:\n"
              "    cur.execute('insert into t values (7)')\n"
              "    print('inserted')\n"
              "except psycopg2.Error as e:\n"
              "    print(e.pgcode, e.pgerror.splitlines()[0])\n")
    res = run_in_cgroup(test_cgroup, ["/usr/bin/python3", "-c", script])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "3", "python3 may read"
    assert lines[1].startswith("42501"), lines
    assert "python-read-only" in lines[1]
    app = marker("psql-write")
    res = psql(pg, test_cgroup, run_in_cgroup, "insert into t values (8)", app)
    assert res.returncode == 0, "psql is not python3: " + res.stderr
    assert count_rows(pg) == 4


def raw(*messages):
    return {"raw_hex": b"".join(messages).hex()}


def test_extended_protocol_denial_at_parse_keeps_the_session_usable(pg, guarded, test_cgroup):
    from dbward_env import startup, wire_client
    app = marker("ext")
    res = wire_client(test_cgroup, {
        "host": "127.0.0.1", "port": pg.port, "startup": startup(app),
        "queries": [
            raw(P.parse_message("delete from t", name="d"), P.bind_message(statement="d"),
                P.describe_message("P"), P.execute_message(), P.sync_message()),
            raw(P.parse_message("select count(*) from t"), P.bind_message(),
                P.execute_message(), P.sync_message()),
        ]})
    types = [m["type"] for m in res["messages"]]
    errors = P.errors(res)
    assert len(errors) == 1, res["messages"]
    assert errors[0].get("C") == "42501", errors
    assert 'rule "scoped-writes"' in errors[0].get("M", ""), errors
    # The denied batch: just the error and ReadyForQuery, as a failed Parse.
    first_z = types.index("Z", types.index("E"))
    assert "1" not in types[types.index("E"):first_z]
    # The next batch runs normally.
    assert P.rows(res)[-1] == ["3"], res["messages"]
    assert count_rows(pg) == 3


def test_unparsable_text_gets_the_servers_own_error_without_rules(pg, agent_factory, test_cgroup,
                                                                 run_in_cgroup):
    import subprocess
    from dbward_env import agent_binary
    agent = agent_factory()
    res = psql(pg, test_cgroup, run_in_cgroup, "selec 1", marker("typo"))
    assert res.returncode != 0
    assert "syntax error" in res.stderr, res.stderr
    said = subprocess.run([str(agent_binary()), "--config", str(agent.config_path),
                           "--test-sql", "selec 1"], capture_output=True, text=True, timeout=30)
    assert said.returncode == 0 and "nothing is judged" in said.stdout, said.stdout


def wait_for_log(agent, text, timeout=10):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in agent.output():
            return
        time.sleep(0.05)
    pytest.fail(f"agent never logged {text!r}:\n{agent.output()}")


@pytest.fixture
def agent(guarded):
    """The guarded agent is the one `held` connects through."""
    return guarded


def test_sighup_reloads_rules_without_dropping_connections(pg, guarded, held, test_cgroup,
                                                           run_in_cgroup):
    import signal

    res = psql(pg, test_cgroup, run_in_cgroup, "truncate t", marker("before"))
    assert 'rule "no-drop"' in res.stderr, res.stderr

    guarded.config["rules"] = [r for r in RULES if r["name"] != "no-drop"]
    guarded.write_config()
    guarded.proc.send_signal(signal.SIGHUP)
    wait_for_log(guarded, "reloaded")
    res = psql(pg, test_cgroup, run_in_cgroup, "create table dropme (a int); drop table dropme",
               marker("after"))
    assert res.returncode == 0, res.stderr

    good = guarded.config_path.read_text()
    guarded.config_path.write_text(good + "rules:\n  - name: x\n    action: maybe\n")
    guarded.proc.send_signal(signal.SIGHUP)
    wait_for_log(guarded, "reload refused")
    assert f"{guarded.config_path}:" in guarded.output()
    res = psql(pg, test_cgroup, run_in_cgroup, "delete from t", marker("kept"))
    assert 'rule "scoped-writes"' in res.stderr, "the running rules stayed: " + res.stderr

    assert held.query_works(), "a connection open across both reloads still works"


def test_policy_test_command_answers_without_a_database(guarded):
    import subprocess
    from dbward_env import agent_binary

    argv = [str(agent_binary()), "--config", str(guarded.config_path)]
    deny = subprocess.run(argv + ["--test-sql", "select 1; DROP TABLE orders"],
                          capture_output=True, text=True, timeout=30)
    assert deny.returncode == 3, deny.stderr
    assert "deny: rule no-drop (statement 2)" in deny.stdout
    allow = subprocess.run(argv + ["--test-sql", "select * from t"],
                           capture_output=True, text=True, timeout=30)
    assert allow.returncode == 0, allow.stderr
    assert allow.stdout.startswith("allow")
    scoped = subprocess.run(argv + ["--test-sql", "insert into t values (1)",
                                    "--as", "comm=python3,uid=1000"],
                            capture_output=True, text=True, timeout=30)
    assert scoped.returncode == 3
    assert "python-read-only" in scoped.stdout


@pytest.mark.parametrize("mode", ["extended", "prepared"])
def test_pgbench_extended_protocol_denial(pg, guarded, test_cgroup, run_in_cgroup, tmp_path, mode):
    script = tmp_path / "denied.sql"
    script.write_text("delete from t;\n")
    res = run_in_cgroup(test_cgroup, ["pgbench", "-n", "-M", mode, "-t", "1", "-f", str(script),
                                      "-h", "127.0.0.1", "-p", str(pg.port), "-U", "app",
                                      "orders"], timeout=60)
    assert res.returncode != 0, res.stdout
    assert 'rule "scoped-writes"' in res.stderr, res.stderr
    assert count_rows(pg) == 3
    allowed = tmp_path / "allowed.sql"
    allowed.write_text("select count(*) from t;\n")
    res = run_in_cgroup(test_cgroup, ["pgbench", "-n", "-M", mode, "-t", "5", "-f", str(allowed),
                                      "-h", "127.0.0.1", "-p", str(pg.port), "-U", "app",
                                      "orders"], timeout=60)
    assert res.returncode == 0, res.stderr


def test_sql_level_execute_is_judged_by_what_it_runs(pg, guarded, test_cgroup, run_in_cgroup):
    app = marker("exec")
    sql = ("prepare p(int) as delete from t where a = $1;\n"
           "execute p(1);\n"
           "select count(*) from t;\n"
           "execute never_shown;\n")
    argv = ["psql", f"host=127.0.0.1 port={pg.port} user=app dbname=orders application_name={app}",
            "-X", "-At", "-v", "ON_ERROR_STOP=0"]
    res = run_in_cgroup(test_cgroup, argv, input=sql)
    assert "2" in res.stdout.split(), "a scoped delete through PREPARE/EXECUTE runs: " + res.stdout
    assert "policy.unparsable" in res.stderr, "an EXECUTE of an unseen name is not judged blind"
    res = run_in_cgroup(test_cgroup, argv, input="prepare q as delete from t;\nexecute q;\n")
    assert res.stderr.count('rule "scoped-writes"') == 2, res.stderr
    assert count_rows(pg) == 2


def test_texts_differing_only_in_literals_are_each_judged_right(pg, guarded, test_cgroup,
                                                              run_in_cgroup):
    """One session (one worker, one classification cache): texts that differ
    only in literal values are classified by shape, and a literal that spells
    a table name (UESCAPE) never borrows another text's reading."""
    import re
    import signal

    app = marker("shape")
    statements = [f"select a from t where a = {i}" for i in range(1, 7)] + [
        "delete from t where a = 100", "delete from t where a = 101",
        "select * from U&\"!0073ecrets\" UESCAPE '#'",  # "!0073ecrets": no such table
        "select * from U&\"!0073ecrets\" UESCAPE '!'",  # "secrets"
    ]
    argv = psql_argv("127.0.0.1", pg.port, application_name=app, sql=statements[0])
    argv[argv.index("ON_ERROR_STOP=1")] = "ON_ERROR_STOP=0"
    for sql in statements[1:]:
        argv += ["-c", sql]
    res = run_in_cgroup(test_cgroup, argv)
    assert 'relation "!0073ecrets" does not exist' in res.stderr, res.stderr
    assert 'rule "no-secrets"' in res.stderr, res.stderr
    assert count_rows(pg) == 3
    guarded.wait_for_event(lambda e: e.get("application_name") == app
                           and e.get("verdict") == "deny", kind="statement")

    guarded.proc.send_signal(signal.SIGUSR1)
    wait_for_log(guarded, "classification cache:")
    line = [ln for ln in guarded.output().splitlines() if "classification cache:" in ln][-1]
    by_shape = int(re.search(r"(\d+) by shape", line).group(1))
    assert by_shape >= 6, line


INT4PL = 177  # int4pl(int4, int4): a built-in's OID is fixed per major version


@pytest.mark.parametrize("unparsable, allowed", [("deny", False), ("forward", True)])
def test_fast_path_function_call_is_judged_as_unreadable_and_recorded(
        pg, agent_factory, test_cgroup, unparsable, allowed):
    """A FunctionCall names a function by OID: the classifier cannot read it,
    so with rules in force it is refused unless policy.unparsable is forward
    (libpq's and JDBC's large objects use it). Either way it is recorded."""
    from dbward_env import startup, wire_client
    agent = agent_factory(rules=RULES, policy={"unparsable": unparsable})
    app = marker("fastpath")
    res = wire_client(test_cgroup, {
        "host": "127.0.0.1", "port": pg.port, "startup": startup(app),
        "queries": [raw(P.function_call_message(INT4PL, [2, 3])), "select 1"]})
    types = [m["type"] for m in res["messages"]]
    if allowed:
        assert "V" in types and not P.errors(res), res["messages"]
    else:
        errors = P.errors(res)
        assert "V" not in types, res["messages"]
        assert len(errors) == 1 and errors[0].get("C") == "42501", errors
        assert "policy.unparsable" in errors[0].get("M", ""), errors
    assert P.rows(res)[-1] == ["1"], "the session goes on"
    event = agent.wait_for_event(lambda e: e.get("application_name") == app
                                 and e.get("statement_kind") == "function_call",
                                 kind="statement")
    assert event["function_oid"] == INT4PL
    assert event["verdict"] == ("allow" if allowed else "deny")
    assert event["sqlstate"] == (None if allowed else "42501")
    assert event["sql"] is None
