"""
Transparency under pgbench: the same bounded run (-t, never -T) direct and
through the agent, in the simple, extended and prepared query modes.

With a fixed --random-seed and one thread, every client draws the same
accounts and deltas on every run, and the updates add up the same in any
interleaving: so the database a run leaves behind is itself compared, not
only pgbench's report.

Normalised, and only this: pgbench's wall-clock lines (latency average,
initial connection time, tps, and the seconds in `pgbench -i`'s progress
and "done in" lines), which differ between any two runs.
"""

import re

import pytest

from dbward_env import PGBENCH, assert_same_output, run

CLIENTS, TRANSACTIONS = 4, 200
SEED = "20240601"
TIMING_LINE = re.compile(r"^(latency average|latency stddev|initial connection time|tps) = ")
SECONDS = re.compile(r"\d+\.\d+ s\b")


def pgbench_argv(pg, dbname, *args):
    return [PGBENCH, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", *args, dbname]


def without_timings(text):
    lines = [line for line in text.splitlines() if not TIMING_LINE.match(line)]
    return SECONDS.sub("<seconds> s", "\n".join(lines))


def bench_state(pg, dbname):
    """A digest of every pgbench table (history without mtime, which is now())."""
    return pg.sql("""
        select (select md5(string_agg(format('%s:%s:%s:%s', aid, bid, abalance, filler),
                                      ',' order by aid)) from pgbench_accounts),
               (select md5(string_agg(format('%s:%s:%s', tid, bid, tbalance), ',' order by tid))
                  from pgbench_tellers),
               (select md5(string_agg(format('%s:%s', bid, bbalance), ',' order by bid))
                  from pgbench_branches),
               (select md5(coalesce(string_agg(format('%s:%s:%s:%s', tid, bid, aid, delta),
                                               ',' order by tid, bid, aid, delta), ''))
                  from pgbench_history),
               (select count(*) from pgbench_history)
        """, dbname=dbname)[0]


@pytest.fixture(scope="module")
def bench_template(pg):
    """A pgbench database (scale 1) that each test copies, never uses."""
    pg.sql("create database bench_template")
    try:
        run(pgbench_argv(pg, "bench_template", "-i", "-q", "-s", "1"), timeout=120)
        yield "bench_template"
    finally:
        pg.sql("drop database if exists bench_template with (force)")


@pytest.fixture
def bench_copies(pg, bench_template):
    """bench_copies(n) -> n fresh databases made from the template."""
    made = []

    def make(n):
        names = []
        for _ in range(n):
            name = f"bench_copy_{len(made) + 1}"
            pg.sql(f"create database {name} template {bench_template}")
            made.append(name)
            names.append(name)
        return names

    yield make
    for name in made:
        pg.sql(f"drop database if exists {name} with (force)")


def assert_all_transactions_succeeded(output, clients=CLIENTS, transactions=TRANSACTIONS):
    total = clients * transactions
    assert f"number of transactions actually processed: {total}/{total}" in output, output
    assert "number of failed transactions: 0 (0.000%)" in output, output


def test_pgbench_init_through_agent_builds_the_same_tables(pg, both, bench_copies):
    direct_db, agent_db = bench_copies(2)
    argv = lambda db: pgbench_argv(pg, db, "-i", "-q", "-s", "1")  # noqa: E731
    direct = both.direct(argv(direct_db), timeout=120)
    through = both.through_agent(argv(agent_db), timeout=120)
    assert direct.returncode == 0 and through.returncode == 0, (direct.stderr, through.stderr)
    assert_same_output(without_timings(direct.stdout), without_timings(through.stdout), "stdout")
    assert_same_output(without_timings(direct.stderr), without_timings(through.stderr), "stderr")
    assert bench_state(pg, direct_db) == bench_state(pg, agent_db)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_tpcb_through_agent_commits_every_transaction_like_direct(
        pg, both, bench_copies, mode):
    direct_db, agent_db = bench_copies(2)
    args = ("-n", "-c", str(CLIENTS), "-j", "1", "-t", str(TRANSACTIONS), "-M", mode,
            f"--random-seed={SEED}")
    direct = both.direct(pgbench_argv(pg, direct_db, *args), timeout=120)
    through = both.through_agent(pgbench_argv(pg, agent_db, *args), timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    assert_all_transactions_succeeded(through.stdout)
    assert f"query mode: {mode}" in through.stdout
    assert_same_output(without_timings(direct.stdout), without_timings(through.stdout), "stdout")
    assert_same_output(direct.stderr, through.stderr, "stderr")
    direct_state, agent_state = bench_state(pg, direct_db), bench_state(pg, agent_db)
    assert agent_state[4] == CLIENTS * TRANSACTIONS
    assert direct_state == agent_state


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only_through_agent_reports_like_direct(pg, both, bench_copies, mode):
    (db,) = bench_copies(1)
    before = bench_state(pg, db)
    args = ("-n", "-S", "-c", str(CLIENTS), "-j", "1", "-t", str(TRANSACTIONS), "-M", mode,
            f"--random-seed={SEED}")
    direct, through = both.run(pgbench_argv(pg, db, *args), timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    assert_all_transactions_succeeded(through.stdout)
    assert_same_output(without_timings(direct.stdout), without_timings(through.stdout), "stdout")
    assert_same_output(direct.stderr, through.stderr, "stderr")
    assert bench_state(pg, db) == before
