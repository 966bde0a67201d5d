"""
Statement events: every statement a session runs, simple or extended,
gives one audit event of kind "statement" with

  session_id      the session's, as in its connection_open
  sql             the statement's own text (one per statement of a
                  multi-statement Query; for extended query, the Parse text)
  fingerprint     a hex string, equal for statements that differ only in
                  constants (libpg_query's fingerprint)
  statement_kind  "select", "insert", "update", "delete", ...
  tables          the tables touched, a JSON array of strings
  param_count     parameters of the statement ($n)
  duration_us     how long it ran
  rows            from CommandComplete (SELECT n, UPDATE n, INSERT 0 n, ...)
  client_bytes    bytes of the statement's messages from the client
  server_bytes    bytes of its results from the server
  sqlstate        null on success, the error's SQLSTATE otherwise
  verdict         "allow" (no policy yet)

Extended-protocol statements are reported once per Execute, with the text
of their Parse. Events are written off the hot path, so each test waits a
little for them after its session closed.
"""

import re

import pytest

import pgwire
from dbward_env import PGBENCH, marker, run, run_in_cgroup, startup, wire_client

P = pgwire
STATEMENT_KEYS = {"kind", "ts", "session_id", "sql", "fingerprint", "statement_kind", "tables",
                  "param_count", "duration_us", "rows", "client_bytes", "server_bytes",
                  "sqlstate", "verdict"}
HEX = re.compile(r"[0-9a-f]+")
# How long events may trail their session's close.
EVENT_GRACE = 3


@pytest.fixture(scope="module")
def stmt_tables(pg):
    """Two small tables the statements below touch, owned by app."""
    pg.sql("create table public.stmt_t (a int primary key, b text)", user="app", dbname="orders")
    pg.sql("create table public.stmt_u (a int, c text)", user="app", dbname="orders")
    pg.sql("insert into public.stmt_u select g, 'u' || g from generate_series(1, 5) g",
           user="app", dbname="orders")
    yield
    pg.sql("drop table if exists public.stmt_t, public.stmt_u", user="app", dbname="orders")


def session(agent, cgroup, pg, queries, **spec):
    """Runs @queries in one intercepted session: (result, its statement events)."""
    res = wire_client(cgroup, {"host": "127.0.0.1", "port": pg.port,
                               "startup": startup(marker("stmt")), "queries": queries,
                               "timeout": 10, **spec})
    assert "connect_error" not in res, res
    return res, statements_of(agent, res["pid"])


def statements_of(agent, pid, at_least=1):
    """The statement events of the sessions process @pid opened, in order."""
    opened = agent.wait_for_event(lambda e: e.get("pid") == pid, kind="connection_open")
    sessions = {e["session_id"] for e in agent.audit_events("connection_open")
                if e.get("pid") == pid}
    agent.wait_for_event(lambda e: e["session_id"] == opened["session_id"],
                         kind="connection_close")
    return agent.wait_for_events(lambda e: e.get("session_id") in sessions, at_least,
                                 kind="statement", timeout=EVENT_GRACE)


def table_names(event):
    """Table names without their schema, sorted."""
    return sorted(t.rsplit(".", 1)[-1].strip('"') for t in event["tables"])


def test_simple_query_gives_one_statement_event_with_every_key(pg, agent, test_cgroup):
    res, events = session(agent, test_cgroup, pg, ["select 1"])
    opened = agent.wait_for_event(lambda e: e.get("pid") == res["pid"], kind="connection_open")
    assert len(events) == 1, events
    event = events[0]
    missing = STATEMENT_KEYS - set(event)
    assert not missing, f"keys missing: {missing} in {event}"
    assert event["session_id"] == opened["session_id"]
    assert event["sql"] == "select 1"
    assert isinstance(event["fingerprint"], str) and HEX.fullmatch(event["fingerprint"]), event
    assert event["statement_kind"] == "select"
    assert event["tables"] == []
    assert event["param_count"] == 0
    assert isinstance(event["duration_us"], int) and event["duration_us"] >= 0
    assert event["rows"] == 1
    assert isinstance(event["client_bytes"], int) and event["client_bytes"] > 0
    assert isinstance(event["server_bytes"], int) and event["server_bytes"] > 0
    assert event["sqlstate"] is None
    assert event["verdict"] == "allow"


def test_multi_statement_query_gives_one_event_per_statement_with_its_own_text(
        pg, agent, test_cgroup):
    _, events = session(agent, test_cgroup, pg,
                        ["select 1 as one; select 2 as two ;select 'three; not a split'"])
    assert [e["sql"].strip() for e in events] == [
        "select 1 as one", "select 2 as two", "select 'three; not a split'"]
    assert [e["rows"] for e in events] == [1, 1, 1]


def test_fingerprint_is_equal_for_statements_differing_only_in_constants(
        pg, agent, test_cgroup, stmt_tables):
    _, events = session(agent, test_cgroup, pg, [
        "select * from stmt_t where a = 1",
        "select * from stmt_t where a = 2",
        "select * from stmt_t where b = 'x'",
    ])
    first, second, other = (e["fingerprint"] for e in wait_count(agent, events, 3))
    assert first == second
    assert first != other


def wait_count(agent, events, n):
    """@events, waited for until there are @n of their session(s)."""
    if len(events) >= n:
        return events
    sessions = {e["session_id"] for e in events}
    return agent.wait_for_events(lambda e: e.get("session_id") in sessions, n,
                                 kind="statement", timeout=EVENT_GRACE)


def test_statement_kind_tables_and_rows_follow_each_statement(
        pg, agent, test_cgroup, stmt_tables):
    _, events = session(agent, test_cgroup, pg, [
        "insert into stmt_t values (1, 'x'), (2, 'y'), (3, 'z')",
        "update stmt_t set b = 'w' where a <= 3",
        "select t.a, u.c from stmt_t t join public.stmt_u u on u.a = t.a",
        "select g from generate_series(1, 5) g",
        "delete from stmt_t where a = 1",
        "delete from stmt_t",
    ])
    events = wait_count(agent, events, 6)
    assert [(e["statement_kind"], table_names(e), e["rows"]) for e in events] == [
        ("insert", ["stmt_t"], 3),
        ("update", ["stmt_t"], 3),
        ("select", ["stmt_t", "stmt_u"], 3),
        ("select", [], 5),
        ("delete", ["stmt_t"], 1),
        ("delete", ["stmt_t"], 2),
    ]
    assert {e["verdict"] for e in events} == {"allow"}


def test_failed_statement_reports_its_sqlstate(pg, agent, test_cgroup):
    _, events = session(agent, test_cgroup, pg, [
        "select * from no_such_table", "select 1/0", "select 'fine'"])
    events = wait_count(agent, events, 3)
    assert [e["sqlstate"] for e in events] == ["42P01", "22012", None]
    assert [e["sql"] for e in events] == ["select * from no_such_table", "select 1/0",
                                          "select 'fine'"]


def test_a_burst_of_big_statements_is_recorded_whole_and_in_order(pg, agent, test_cgroup):
    # Their answers arrive together: the loop's staged events pass its
    # batch limit (1 MiB) and are committed before the turn ends. Every one
    # is recorded, in order, and every answer reaches the client.
    n, size = 12, 400_000
    texts = [f"select {i}, length('{'x' * size}')" for i in range(n)]
    burst = b"".join(P.query_message(t) for t in texts)
    res, events = session(agent, test_cgroup, pg, [{"raw_hex": burst.hex()}], timeout=30)
    done = [m for m in res["messages"] if m["type"] == "C"]
    assert len(done) == n, res["messages"][-5:]
    events = statements_of(agent, res["pid"], at_least=n)
    assert [e["sql"] for e in events] == texts
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all(e["rows"] == 1 and e["sqlstate"] is None for e in events)


def test_a_statement_over_4_mib_is_recorded_cut_and_says_so(pg, agent, test_cgroup):
    # The event keeps the first 4 MiB of the text (so that every event fits
    # a spool record and a batch) and sql_truncated tells the reader.
    size = 5 << 20
    text = f"select length('{'y' * size}')"
    res, events = session(agent, test_cgroup, pg, ["select 'short'", text], timeout=60)
    assert [m for m in res["messages"] if m["type"] == "C"], res["messages"][-3:]
    events = statements_of(agent, res["pid"], at_least=2)
    short, big = events[0], events[1]
    assert short["sql_truncated"] is False
    assert big["sql_truncated"] is True
    assert len(big["sql"]) == 4 << 20 and text.startswith(big["sql"])
    assert big["client_bytes"] > size, big["client_bytes"]
    assert big["rows"] == 1 and big["sqlstate"] is None


def test_duration_and_bytes_are_those_of_the_statement(pg, agent, test_cgroup):
    _, events = session(agent, test_cgroup, pg, [
        "select pg_sleep(0.2)", "select repeat('x', 100000)"])
    sleep, big = wait_count(agent, events, 2)
    assert sleep["duration_us"] >= 200_000, sleep
    assert big["duration_us"] < sleep["duration_us"] or big["duration_us"] < 200_000
    assert big["server_bytes"] >= 100_000, big
    assert sleep["server_bytes"] < 1000, sleep
    assert big["client_bytes"] >= len("select repeat('x', 100000)") + 5, big


def test_extended_query_reports_once_per_execute_with_the_parse_text(pg, agent, test_cgroup):
    named = "select $1::int + $2::int"
    unnamed = "select $1::text as t"
    _, events = session(agent, test_cgroup, pg, [
        # Named statement, executed twice, pipelined before one Sync.
        {"raw_hex": (P.parse_message(named, name="s1") + P.bind_message([1, 2], "s1")
                     + P.describe_message("P") + P.execute_message()
                     + P.bind_message([3, 4], "s1") + P.execute_message()
                     + P.sync_message()).hex()},
        # Unnamed statement, once.
        {"raw_hex": (P.parse_message(unnamed) + P.bind_message(["x"]) + P.execute_message()
                     + P.sync_message()).hex()},
        # The named statement again, in a later Sync.
        {"raw_hex": (P.bind_message([5, 6], "s1") + P.execute_message()
                     + P.sync_message()).hex()},
    ])
    events = wait_count(agent, events, 4)
    assert [(e["sql"], e["param_count"], e["rows"]) for e in events] == [
        (named, 2, 1), (named, 2, 1), (unnamed, 1, 1), (named, 2, 1)]
    assert len({events[0]["fingerprint"], events[1]["fingerprint"],
                events[3]["fingerprint"]}) == 1


def test_extended_query_error_reports_the_sqlstate_of_the_execute(pg, agent, test_cgroup):
    _, events = session(agent, test_cgroup, pg, [
        {"raw_hex": (P.parse_message("select 1/$1::int") + P.bind_message([0])
                     + P.execute_message() + P.sync_message()).hex()},
    ])
    assert [(e["sql"], e["sqlstate"]) for e in events] == [("select 1/$1::int", "22012")]


@pytest.fixture(scope="module")
def stmt_bench(pg):
    pg.sql("create database stmt_bench")
    try:
        run([PGBENCH, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-i", "-q",
             "-s", "1", "stmt_bench"], timeout=120)
        yield "stmt_bench"
    finally:
        pg.sql("drop database if exists stmt_bench with (force)")


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only_gives_one_event_per_transaction(
        pg, agent, test_cgroup, stmt_bench, mode):
    app = marker(f"pgbench-{mode}")
    res = run_in_cgroup(test_cgroup, [
        PGBENCH, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-n", "-S",
        "-c", "1", "-t", "5", "-M", mode, stmt_bench], env={"PGAPPNAME": app}, timeout=60)
    assert res.returncode == 0, res.stderr
    sessions = {e["session_id"] for e in agent.wait_for_events(
        lambda e: e.get("application_name") == app, 1, kind="connection_open")}
    for sid in sessions:
        agent.wait_for_event(lambda e, sid=sid: e["session_id"] == sid, kind="connection_close")
    selects = agent.wait_for_events(
        lambda e: (e.get("session_id") in sessions
                   and e.get("sql", "").startswith("SELECT abalance FROM pgbench_accounts")),
        5, kind="statement", timeout=EVENT_GRACE)
    assert len(selects) == 5, selects
    assert {e["statement_kind"] for e in selects} == {"select"}
    assert {tuple(table_names(e)) for e in selects} == {("pgbench_accounts",)}
    assert len({e["fingerprint"] for e in selects}) == 1
    if mode == "simple":
        assert all("$1" not in e["sql"] and e["param_count"] == 0 for e in selects)
    else:
        assert {e["sql"] for e in selects} == {
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"}
        assert {e["param_count"] for e in selects} == {1}
