"""
Transparency under psycopg2 (libpq): each workload of workloads.py run
direct and through the agent prints the same JSON. Nothing is normalised:
the workloads print only what is the same on every connection (no backend
pids, OIDs or timestamps of now), which is documented in workloads.py.

Also: LISTEN/NOTIFY to an intercepted listener, and a query cancelled
through the agent (libpq's CancelRequest arrives on a new connection,
itself intercepted, and must reach the same server).
"""

import json

import pytest

from dbward_env import (
    PYTHON,
    PSQL,
    WORKLOADS_SRC,
    assert_intercepted,
    copy_rows,
    readline,
)

ROWS = 50_000


def dsn(pg, user="app", dbname="orders"):
    return f"host=127.0.0.1 port={pg.port} user={user} dbname={dbname} connect_timeout=10"


def workload(pg, name, **spec):
    return {"workload": name, "dsn": dsn(pg), **spec}


def test_psycopg2_parameters_of_many_types_through_agent_match_direct(pg, both):
    direct, through = both.workload(workload(pg, "params"))
    assert through == direct
    labels = [row[0] for row in direct]
    assert "unicode" in labels and "json" in labels and "named" in labels


def test_psycopg2_5mib_text_and_bytea_round_trip_through_agent(pg, both):
    direct, through = both.workload(workload(pg, "big_values"), timeout=120)
    assert through == direct
    assert through["text_back"] == through["text_sent"]
    assert through["bytea_back"] == through["bytea_sent"]
    assert through["text_md5_server"] == through["text_md5_client"]
    assert through["bytea_md5_server"] == through["bytea_md5_client"]
    assert through["text_len"] >= 5 * 1024 * 1024 - 4096
    assert through["bytea_len"] == 5 * 1024 * 1024


def test_psycopg2_server_side_cursor_batches_through_agent_match_direct(pg, both):
    direct, through = both.workload(workload(pg, "named_cursor"))
    assert through == direct
    assert sum(through["batches"]) == 20000
    assert through["iter_sum"] == 5000 * 5001 // 2


def test_psycopg2_executemany_through_agent_matches_direct(pg, both):
    direct, through = both.workload(workload(pg, "executemany"))
    assert through == direct
    assert through["duplicate"]["pgcode"] == "23505"


def test_sql_prepare_execute_through_agent_matches_direct(pg, both):
    direct, through = both.workload(workload(pg, "prepared"))
    assert through == direct
    assert {"pgcode": "26000"}.items() <= direct[-2].items()


def test_psycopg2_errors_and_notices_through_agent_match_direct(pg, both):
    direct, through = both.workload(workload(pg, "errors"))
    assert through == direct
    codes = [e["pgcode"] for e in direct[:-1]]
    assert codes == ["22012", "42P01", "42601", "23505", "23514", "22P02", "22023"]
    assert any("careful" in n for n in direct[-1])


def test_psycopg2_copy_50000_rows_in_and_out_through_agent(pg, both, tmp_path):
    rows = tmp_path / "rows.tsv"
    rows.write_text(copy_rows(ROWS))
    direct, through = both.workload(workload(pg, "copy", file=str(rows)), timeout=120)
    assert through == direct
    assert through["copy_in_rowcount"] == ROWS
    assert through["copy_out_rowcount"] == ROWS
    assert through["round_trip_equal"] is True
    assert through["csv_records"] == ROWS + 1  # and a header
    assert through["bad_row"]["pgcode"] == "22P02"
    assert through["after_bad_row"] == ROWS


def test_large_objects_via_function_call_through_agent_match_direct(pg, both):
    # psycopg2's lobject uses libpq's lo_* calls, sent as FunctionCall ('F').
    direct, through = both.workload(workload(pg, "large_objects"))
    assert through == direct
    assert through["read_back"] == through["sent"]
    assert through["middle"] == through["expected_middle"]


def test_listen_through_agent_receives_notifications(pg, agent, test_cgroup, spawn_in_cgroup,
                                                     run_in_cgroup):
    listener = spawn_in_cgroup(
        test_cgroup, [PYTHON, "-c", WORKLOADS_SRC,
                      json.dumps(workload(pg, "listen", count=3, timeout=20))])
    line = readline(listener.stdout, 20)
    assert line.strip() == "listening", (line, listener.stderr.read() if listener.poll() else "")
    assert_intercepted(agent, listener.pid)
    # One notification from a direct connection, one from an intercepted one.
    pg.sql("notify dbward_channel, 'direct: ü \"quoted\"'", user="app", dbname="orders")
    res = run_in_cgroup(test_cgroup, [PSQL, "-X", "-d", dsn(pg), "-c",
                                      "select pg_notify('dbward_channel', 'through the agent')"])
    assert res.returncode == 0, res.stderr
    # Line by line, not communicate(): that would bypass what readline()
    # already buffered.
    lines = []
    while not lines or "received" not in lines[-1]:
        line = readline(listener.stdout, 30)
        if not line:
            pytest.fail(f"the listener ended early: {lines} {listener.stderr.read()}")
        lines.append(json.loads(line))
    assert listener.wait(10) == 0, listener.stderr.read()
    received = [x for x in lines if "channel" in x]
    assert received == [
        {"channel": "dbward_channel", "payload": "from myself"},
        {"channel": "dbward_channel", "payload": 'direct: ü "quoted"'},
        {"channel": "dbward_channel", "payload": "through the agent"},
    ]
    assert lines[-1] == {"received": 3}


def test_cancel_through_agent_cancels_the_running_query(pg, agent, test_cgroup, run_in_cgroup):
    argv = [PYTHON, "-c", WORKLOADS_SRC, json.dumps(workload(pg, "cancel"))]
    # pg_sleep(30): a cancel that does not arrive leaves the run to its timeout.
    res = run_in_cgroup(test_cgroup, argv, timeout=20)
    assert res.returncode == 0, res.stderr
    through = json.loads(res.stdout.splitlines()[-1])
    assert through["outcome"] == "error", through
    assert through["class"] == "QueryCanceled", through
    assert through["pgcode"] == "57014", through
    assert through["after"] == "still usable"
    # The session and the CancelRequest both went through the agent.
    opens = agent.wait_for_events(lambda e: e.get("pid") == res.pid, 2,
                                  kind="connection_open", timeout=10)
    assert any(e.get("cancel_request") for e in opens), opens
    assert any(not e.get("cancel_request") for e in opens), opens


def test_cancel_through_agent_reports_the_same_error_as_direct(pg, both):
    direct, through = both.workload(workload(pg, "cancel"), timeout=20)
    for outcome in (direct, through):
        outcome.pop("seconds")
        outcome.pop("cancels_sent")
    assert through == direct
