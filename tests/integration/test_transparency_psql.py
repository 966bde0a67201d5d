"""
Transparency under psql: the same script run direct and through the
agent, with every input line echoed (-a), ON_ERROR_STOP off, and stdout
and stderr in one pipe as psql wrote them, must print the same bytes.

Normalised, and only this:
- "received from server process with PID n" in psql's notification line:
  the notifying backend's pid, different on every connection;
- "lo_import n" after \\lo_import: the large object's OID, which the
  server allocates anew on every import.
"""

import hashlib
import re

import pytest

from dbward_env import PSQL, assert_same_output, copy_rows

NOTIFICATION_PID = re.compile(r"(received from server process with PID) \d+")
LO_IMPORT_OID = re.compile(r"(?m)^lo_import \d+$")
ROWS = 50_000


def conninfo(pg, user="app", dbname="orders"):
    return f"host=127.0.0.1 port={pg.port} user={user} dbname={dbname} connect_timeout=10"


def normalise(text):
    text = NOTIFICATION_PID.sub(r"\1 <pid>", text)
    return LO_IMPORT_OID.sub("lo_import <oid>", text)


def psql_script_argv(pg, script, *extra):
    return [PSQL, "-X", "-a", "-v", "ON_ERROR_STOP=0", *extra, "-d", conninfo(pg),
            "-f", str(script)]


# Tables go to a schema of their own rather than to pg_temp_N: N is the
# backend's slot, which can differ between two connections and shows in
# verbose errors and \d output.
SCHEMA_SETUP = """\\set QUIET on
set client_min_messages = warning;
drop schema if exists psql_test cascade;
create schema psql_test;
set search_path = psql_test;
reset client_min_messages;
\\set QUIET off
"""
SCHEMA_TEARDOWN = """\\set QUIET on
\\set VERBOSITY default
set client_min_messages = warning;
drop schema if exists psql_test cascade;
"""


def run_script(both, pg, tmp_path, text, *extra, name="script.sql"):
    """(direct, through_agent) merged output of psql -a -f SCRIPT."""
    script = tmp_path / name
    script.write_text(SCHEMA_SETUP + text + SCHEMA_TEARDOWN)
    direct, through = both.run(psql_script_argv(pg, script, *extra), merge_stderr=True,
                               timeout=60)
    return direct, through


def assert_script_same(both, pg, tmp_path, text, *extra, expect=()):
    direct, through = run_script(both, pg, tmp_path, text, *extra)
    assert direct.returncode == through.returncode, (direct.stdout, through.stdout)
    assert_same_output(normalise(direct.stdout), normalise(through.stdout), "psql output")
    for needed in expect:  # the script did what it is there for
        assert needed in direct.stdout, (needed, direct.stdout)
    return direct, through


NOTICES = r"""
\set VERBOSITY verbose
do $$
begin
    raise notice 'plain notice %', 42;
    raise warning 'a warning' using detail = 'the detail', hint = 'the hint';
    raise info 'some info';
    raise debug 'not shown at the default level';
end $$;
set client_min_messages = debug1;
do $$ begin raise debug 'shown now'; end $$;
reset client_min_messages;
create table n (x int);
create table if not exists n (x int);
drop table if exists no_such_table_here;
select 'after notices' as still_working;
"""


def test_psql_notices_through_agent_match_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, NOTICES,
                       expect=("NOTICE:  00000: plain notice 42", "WARNING:  01000: a warning",
                               "DEBUG:  00000: shown now", "already exists, skipping"))


ERRORS_IN_TRANSACTIONS = r"""
\set VERBOSITY verbose
create table acct (id int primary key, balance int check (balance >= 0));
insert into acct values (1, 100), (2, 50);
begin;
update acct set balance = balance - 70 where id = 2;
select * from acct;
select 'still aborted';
rollback;
begin;
select 1/0;
commit;
select * from acct order by id;
begin;
insert into acct values (3, 10);
insert into acct values (3, 20);
end;
select count(*) from acct;
select * from no_such_table;
selec 1;
select 'abc'::int;
select 1 +;
"""


def test_psql_errors_inside_transactions_through_agent_match_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, ERRORS_IN_TRANSACTIONS,
                       expect=("current transaction is aborted", "25P02", "22012", "23505",
                               "42P01", "42601", "23514"))


SAVEPOINTS = r"""
\set VERBOSITY verbose
create table sp (id int primary key);
begin;
insert into sp values (1);
savepoint a;
insert into sp values (1);
rollback to savepoint a;
insert into sp values (2);
savepoint b;
insert into sp values (3);
release savepoint b;
rollback to savepoint b;
rollback;
begin;
insert into sp values (10);
savepoint x;
savepoint y;
insert into sp values (11);
rollback to x;
commit;
select * from sp order by id;
\set ON_ERROR_ROLLBACK on
begin;
insert into sp values (20);
insert into sp values (20);
insert into sp values (21);
commit;
select * from sp order by id;
"""


def test_psql_savepoints_through_agent_match_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, SAVEPOINTS,
                       expect=("ROLLBACK", "3B001", "RELEASE", "SAVEPOINT"))


LISTEN_NOTIFY = r"""
listen dbward_psql;
notify dbward_psql, 'hello';
select pg_notify('dbward_psql', 'second, ünïcode');
notify dbward_psql;
unlisten dbward_psql;
notify dbward_psql, 'not received';
select 'done';
"""


def test_psql_listen_notify_through_agent_matches_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, LISTEN_NOTIFY,
                       expect=('notification "dbward_psql" with payload "hello"',
                               'payload "second, ünïcode"'))


MULTI_STATEMENT = r"""
\set VERBOSITY verbose
select 1 as one \; select 'two' as two \; select 3 as three;
select 1 as before_error \; select 1/0 \; select 3 as never;
create table m (x int) \; insert into m values (1) \; select 1/0;
select count(*) from m;
create table m2 (x int) \; insert into m2 values (1), (2) \; select count(*) from m2;
begin \; insert into m2 values (3) \; commit \; select count(*) from m2;
select 1 as ignored \; select 'a' as first, 'b' as second \gset
\echo :first :second
select 'semicolon; inside' as literal \; select $$dollar; quoted$$ as dollar;
"""


def test_psql_multi_statement_queries_through_agent_match_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, MULTI_STATEMENT,
                       expect=("before_error", "22012", '"m" does not exist'))


CATALOG = r"""
create table cat (id serial primary key, name text not null default 'x', at timestamptz);
create index on cat (name);
comment on table cat is 'described';
\d+ cat
\dt pg_catalog.pg_clas*
\df pg_catalog.lo_*
\dT pg_catalog.int*
\l orders
select format('select %L as generated', g) from generate_series(1, 3) g \gexec
select 'k' || g as k, 'v' || g % 2 as v, g from generate_series(1, 4) g \crosstabview k v g
\pset format aligned
\x on
select * from pg_catalog.pg_type where typname = 'int4';
"""


def test_psql_describe_commands_through_agent_match_direct(pg, both, tmp_path):
    assert_script_same(both, pg, tmp_path, CATALOG, expect=('Table "psql_test.cat"', "generated"))


def deterministic_bytes(n, seed):
    out, block = bytearray(), seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def test_psql_large_objects_through_agent_round_trip_files(pg, both, tmp_path):
    # \lo_import and \lo_export go through libpq's lo_* calls: FunctionCall.
    source, exported = tmp_path / "lo-in.bin", tmp_path / "lo-out.bin"
    data = deterministic_bytes(3 * 1024 * 1024 + 5, "psql large object")
    source.write_bytes(data)
    script = tmp_path / "lo.sql"
    script.write_text(f"""
\\lo_import '{source}'
\\set loid :LASTOID
select length(lo_get(:loid)), md5(lo_get(:loid));
\\lo_export :loid '{exported}'
select lo_unlink(:loid);
\\lo_export 1 '{exported}.missing'
\\lo_unlink 1
""")
    argv = psql_script_argv(pg, script)
    outputs = []
    for run in (both.direct, both.through_agent):
        exported.unlink(missing_ok=True)
        res = run(argv, merge_stderr=True)
        assert res.returncode == 0, res.stdout
        assert exported.read_bytes() == data, "the exported large object differs from the file"
        outputs.append(normalise(res.stdout))
    assert hashlib.md5(data).hexdigest() in outputs[0]
    assert "large object 1 does not exist" in outputs[0]
    assert_same_output(outputs[0], outputs[1], "psql output")


@pytest.mark.parametrize("fetch_count", [0, 1000])
def test_error_after_rows_through_agent_gives_the_same_partial_result(
        pg, both, fetch_count):
    # The server sends rows 1..4999, then fails at x = 5000. With
    # FETCH_COUNT psql reads through a cursor and prints rows it got.
    argv = [PSQL, "-X", "-v", f"FETCH_COUNT={fetch_count}", "-v", "VERBOSITY=verbose",
            "-d", conninfo(pg), "-c", "select x, 1/(x - 5000) from generate_series(1, 10000) x"]
    direct, through = both.run(argv, merge_stderr=True)
    assert direct.returncode == through.returncode == 1, direct.stdout[-500:]
    assert "22012" in direct.stdout
    if fetch_count:
        assert "4000 |" in direct.stdout
    assert_same_output(direct.stdout, through.stdout, "psql output")


# --- COPY with psql -----------------------------------------------------------


@pytest.fixture(scope="module")
def copy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("copy") / "rows.tsv"
    path.write_text(copy_rows(ROWS))
    return path


COPY_TABLE = ("create table c (id int, name text, amount numeric, note text, "
              "at timestamptz, tags text[]);")


def test_psql_copy_50000_rows_in_and_out_through_agent_matches_direct(
        pg, both, tmp_path, copy_file):
    direct, through = assert_script_same(both, pg, tmp_path, f"""
set timezone = 'UTC';
{COPY_TABLE}
\\copy c from '{copy_file}'
select count(*), sum(id), count(note), count(tags) from c;
\\copy (select * from c order by id) to stdout
\\copy (select id, name, tags from c where id % 1000 = 0 order by id desc) to stdout with (format csv, header)
select count(*) from c;
""", expect=(f"COPY {ROWS}",))
    # What came out is exactly what went in.
    assert copy_file.read_text() in through.stdout


def test_psql_copy_with_a_bad_row_through_agent_fails_like_direct(
        pg, both, tmp_path, copy_file):
    lines = copy_file.read_text().splitlines(keepends=True)
    lines[ROWS // 2] = "not-a-number\tx\t1\t\\N\t\\N\t\\N\n"
    bad = tmp_path / "bad.tsv"
    bad.write_text("".join(lines))
    assert_script_same(both, pg, tmp_path, f"""
\\set VERBOSITY verbose
{COPY_TABLE}
\\copy c from '{bad}'
select count(*) from c;
""", expect=("22P02", f"line {ROWS // 2 + 1}"))
