"""
Transparency under pg_dump: a populated database (schemas, enum, composite
and domain types, extensions, identity and serial columns, sequences,
indexes of several kinds, a view, a materialized view, functions, a
trigger, comments, grants, bytea, a 2 MiB text, unicode names and data, a
large object) dumped direct and through the agent.

pg_dump reads the catalog with simple queries, the data with COPY TO
STDOUT and large objects with lo_open/lo_read, which libpq sends as
FunctionCall messages; the parallel directory format adds worker
connections that share the leader's snapshot.

Normalised, and only this:
- the plain format's \\restrict key is random per run unless given, so
  both runs get the same --restrict-key and nothing is normalised there;
- the custom and directory formats' header holds the dump's creation time
  (seven integers after the compression field): blanked before comparing;
- `pg_restore -l` prints that time as "; Archive created at ...": dropped.
"""

import os
import re
from pathlib import Path

import pytest

from dbward_env import PG_DUMP, PG_RESTORE, PSQL, assert_same_output, by_app, marker, run

DB = "dump_source"
RESTRICT_KEY = "dbwardtest"
READER_ROLE = "dbw_dump_reader"

POPULATE = r"""
\set ON_ERROR_STOP 1
create extension hstore;
create extension citext;
create schema shop;
comment on schema shop is 'the shop — 商店';
create type shop.status as enum ('new', 'paid', 'shipped', 'cancelled');
create type shop.money_pair as (amount numeric(12, 2), currency char(3));
create domain shop.email as citext check (value ~ '^[^@]+@[^@]+$');
create sequence shop.invoice_no start 1000 increment 7;

create table shop.customers (
    id bigint generated always as identity primary key,
    email shop.email unique not null,
    name text not null,
    nickname varchar(40),
    created timestamptz not null default '2024-01-01 00:00:00+00',
    prefs jsonb not null default '{}',
    attrs hstore,
    tags text[],
    ip inet,
    uid uuid,
    active boolean default true
);
comment on table shop.customers is 'Kunden — 顧客';
comment on column shop.customers.nickname is 'may be null';

create table shop.orders (
    id serial primary key,
    customer_id bigint references shop.customers (id) on delete cascade,
    status shop.status not null default 'new',
    total shop.money_pair,
    invoice bigint default nextval('shop.invoice_no'),
    placed date check (placed > '2000-01-01'),
    note text
);
create table shop.blobs (id int primary key, data bytea, big text);
create table public."Ünïcödé tablé" ("ключ" int primary key, "値" text, "emoji 🐘" text);

insert into shop.customers (email, name, nickname, created, prefs, attrs, tags, ip, uid, active)
select format('user%s@example.%s', g, (array['com', 'org', 'de'])[g % 3 + 1]),
       format('Name %s %s', g, (array['Åsa', 'José', '李', 'O''Brien', 'back\slash'])[g % 5 + 1]),
       case when g % 4 = 0 then null else 'nick' || g end,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 minutes',
       jsonb_build_object('n', g, 'even', g % 2 = 0, 'list', jsonb_build_array(g, 'x')),
       hstore(array['k' || g % 7, 'v'], array[md5(g::text), null]),
       array['t' || g % 3, 'tag with space', case when g % 5 = 0 then null else 'n' end],
       ('10.' || g % 256 || '.' || g / 256 % 256 || '.1')::inet,
       md5(g::text)::uuid,
       g % 9 <> 0
from generate_series(1, 5000) g;

insert into shop.orders (customer_id, status, total, placed, note)
select g % 5000 + 1,
       (enum_range(null::shop.status))[g % 4 + 1],
       row(round((g * 1.37)::numeric, 2), (array['EUR', 'USD', 'JPY'])[g % 3 + 1])::shop.money_pair,
       date '2020-01-01' + g % 1500,
       case when g % 11 = 0 then E'multi\nline\ttabbed "quoted"' end
from generate_series(1, 20000) g;

insert into shop.blobs
select g, decode(repeat(md5(g::text), g * 8), 'hex') || '\x00ff00'::bytea, repeat('блок ', g)
from generate_series(1, 60) g;
insert into shop.blobs values (1000, '\x'::bytea, repeat('2 MiB of text. ', 139810));

insert into public."Ünïcödé tablé"
select g, repeat('値', g % 17), case when g % 2 = 0 then '🐘🐘' end
from generate_series(1, 500) g;

select setval('shop.invoice_no', 424242);

create index orders_open on shop.orders (status) where status <> 'cancelled';
create index customers_lower_name on shop.customers (lower(name));
create index customers_prefs on shop.customers using gin (prefs);
create index orders_customer_placed on shop.orders (customer_id, placed desc) include (note);
create unique index customers_uid on shop.customers (uid);

create view shop.order_summary as
    select c.name, o.status, count(*) as n, sum((o.total).amount) as amount
    from shop.orders o join shop.customers c on c.id = o.customer_id
    group by c.name, o.status;
create materialized view shop.status_counts as
    select status, count(*) as n from shop.orders group by status;

create function shop.order_amount(o shop.orders) returns numeric
    language sql immutable as $$ select (o.total).amount $$;
create function shop.touch() returns trigger language plpgsql as $$
begin
    new.note := coalesce(new.note, '') || ' (touched)';
    return new;
end $$;
create trigger orders_touch before update on shop.orders
    for each row execute function shop.touch();

grant usage on schema shop to dbw_dump_reader;
grant select on all tables in schema shop to dbw_dump_reader;

select lo_from_bytea(0, decode(repeat(md5('large object'), 8192), 'hex'));
"""


@pytest.fixture(scope="module")
def dump_source(pg, tmp_path_factory):
    script = tmp_path_factory.mktemp("dump") / "populate.sql"
    script.write_text(POPULATE)
    pg.sql(f"create role {READER_ROLE}")
    pg.sql(f"create database {DB}")
    try:
        run([PSQL, "-X", "-q", "-d", conninfo(pg), "-f", str(script)], timeout=120)
        yield DB
    finally:
        pg.sql(f"drop database if exists {DB} with (force)")
        pg.sql(f"drop role if exists {READER_ROLE}")


def conninfo(pg, dbname=DB):
    return f"host=127.0.0.1 port={pg.port} user=postgres dbname={dbname} connect_timeout=10"


def pg_dump_argv(pg, *args):
    return [PG_DUMP, "-d", conninfo(pg), *args]


def blank_creation_time(archive):
    """The archive with its header's creation time zeroed (see the docstring).

    Header: "PGDMP", version major/minor/revision, int size, offset size,
    format (11 bytes); compression (an int before archive version 1.15, one
    byte after); then tm_sec..tm_isdst, each an int: a sign byte and
    int-size bytes.
    """
    data = bytearray(archive)
    assert data[:5] == b"PGDMP", data[:16]
    vmaj, vmin, int_size = data[5], data[6], data[8]
    at = 11 + (1 if (vmaj, vmin) >= (1, 15) else 1 + int_size)
    end = at + 7 * (1 + int_size)
    data[at:end] = bytes(end - at)
    return bytes(data)


def restore_listing(path):
    out = run([PG_RESTORE, "-l", str(path)]).stdout
    return re.sub(r"(?m)^; Archive created at .*\n", "", out)


def restore_script(path):
    return run([PG_RESTORE, f"--restrict-key={RESTRICT_KEY}", "-f", "-", str(path)],
               timeout=120).stdout


def test_pg_dump_plain_through_agent_is_byte_identical(pg, both, dump_source):
    direct, through = both.run(pg_dump_argv(pg, f"--restrict-key={RESTRICT_KEY}"), timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    # The dump really holds what was put in (large object, 2 MiB text, unicode).
    for needed in ("CREATE MATERIALIZED VIEW shop.status_counts", "SELECT pg_catalog.lo_create",
                   'CREATE TABLE public."Ünïcödé tablé"', "CREATE TRIGGER orders_touch",
                   "CREATE EXTENSION IF NOT EXISTS hstore", "424242"):
        assert needed in direct.stdout, needed
    assert len(direct.stdout) > 4_000_000
    assert_same_output(direct.stdout, through.stdout, "pg_dump output")
    assert_same_output(direct.stderr, through.stderr, "pg_dump stderr")


def test_pg_dump_custom_format_through_agent_is_identical_but_for_its_timestamp(
        pg, both, dump_source, tmp_path):
    direct_file, agent_file = tmp_path / "direct.dump", tmp_path / "agent.dump"
    direct = both.direct(pg_dump_argv(pg, "-Fc", "-f", direct_file), timeout=120)
    through = both.through_agent(pg_dump_argv(pg, "-Fc", "-f", agent_file), timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    assert_same_output(blank_creation_time(direct_file.read_bytes()),
                       blank_creation_time(agent_file.read_bytes()), "custom-format archive")
    assert_same_output(restore_listing(direct_file), restore_listing(agent_file),
                       "pg_restore -l listing")
    assert_same_output(restore_script(direct_file), restore_script(agent_file),
                       "pg_restore script")


def test_pg_dump_parallel_directory_format_through_agent_gives_identical_files(
        pg, both, dump_source, tmp_path):
    direct_dir, agent_dir = tmp_path / "direct", tmp_path / "agent"
    app = marker("pg_dump-j3")
    direct = both.direct(pg_dump_argv(pg, "-Fd", "-j", "3", "-f", direct_dir), timeout=120)
    through = both.through_agent(pg_dump_argv(pg, "-Fd", "-j", "3", "-f", agent_dir),
                                 env={"PGAPPNAME": app}, timeout=120)
    assert direct.returncode == 0, direct.stderr
    assert through.returncode == 0, through.stderr
    # The leader and its three forked workers each connect: all through the agent.
    both.agent.wait_for_events(by_app(app), 4, timeout=10, kind="connection_open")
    names = sorted(os.listdir(direct_dir))
    assert names == sorted(os.listdir(agent_dir))
    for name in names:
        a, b = (Path(d, name).read_bytes() for d in (direct_dir, agent_dir))
        if name == "toc.dat":
            a, b = blank_creation_time(a), blank_creation_time(b)
        assert_same_output(a, b, f"directory-format file {name}")
    assert_same_output(restore_script(direct_dir), restore_script(agent_dir), "pg_restore script")
