"""
psycopg2 workloads for the differential tests, run as
`python3 -c SOURCE SPEC_JSON` both from the test process (direct) and
inside the test cgroup (through the agent). Each prints one JSON document
that must come out the same both ways. The spec:

  workload        the name of one function in WORKLOADS below
  dsn             a libpq connection string
  ...             whatever that workload reads (see each function)

Only what is the same on every connection goes into the output: no backend
pids, no OIDs, no timestamps of now. Values are given as repr(), so a type
difference (Decimal vs float, str vs bytes) is a difference too.
Runs under /usr/bin/python3 with Debian's psycopg2.
"""

import csv
import hashlib
import io
import json
import select
import sys
import threading
import time

import psycopg2
import psycopg2.extras

MIB = 1 << 20


def connect(spec, **kwargs):
    conn = psycopg2.connect(spec["dsn"], **kwargs)
    conn.autocommit = True
    return conn


def sha256(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(bytes(data)).hexdigest()


def show(value):
    """repr() of a result, with bytea (a memoryview) shown as its bytes."""
    def plain(v):
        if isinstance(v, memoryview):
            return bytes(v)
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        return v
    return repr(plain(value))


def error_info(e):
    """What a client sees of a server error, all of it."""
    d = e.diag
    return {"class": type(e).__name__, "pgcode": e.pgcode, "pgerror": e.pgerror,
            "severity": d.severity, "severity_nonlocalized": d.severity_nonlocalized,
            "message_primary": d.message_primary, "message_detail": d.message_detail,
            "message_hint": d.message_hint, "statement_position": d.statement_position,
            "context": d.context, "schema_name": d.schema_name, "table_name": d.table_name,
            "column_name": d.column_name, "constraint_name": d.constraint_name,
            "source_function": d.source_function}


def scratch_schema(cur, name):
    """A fresh schema first on the search_path.

    Not temp tables: their schema, pg_temp_N, is named after the backend's
    slot, which two connections need not share, and errors name it.
    """
    cur.execute("set client_min_messages = warning")
    cur.execute(f"drop schema if exists {name} cascade")
    cur.execute(f"create schema {name}")
    cur.execute(f"set search_path = {name}")
    cur.execute("reset client_min_messages")


def drop_schema(cur, name):
    cur.execute("set client_min_messages = warning")
    cur.execute(f"drop schema if exists {name} cascade")
    cur.execute("reset client_min_messages")


def deterministic_bytes(n, seed):
    """@n bytes that look random (all 256 values) and are the same every run."""
    out = bytearray()
    block = seed.encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


# --- workloads ----------------------------------------------------------------


def params(spec):
    """Client-side parameters of many types, round-tripped through the server."""
    import datetime
    import decimal

    values = [
        ("int", 42), ("bigint", -9223372036854775808), ("numeric",
                                                        decimal.Decimal("12345.678901234567890")),
        ("float", 1.5e-300), ("text quotes", "it's \"quoted\" \\ back\\slash; --"),
        ("unicode", "Grüße, 日本語, emoji 🐘, rtl עברית"), ("null", None), ("bool", True),
        ("date", datetime.date(2024, 2, 29)),
        ("timestamp", datetime.datetime(1999, 12, 31, 23, 59, 59, 999999)),
        ("interval", datetime.timedelta(days=3, seconds=7, microseconds=11)),
        ("int array", [1, 2, None, 4]), ("text array", ["a", "b,c", "d\"e", None]),
        ("bytes", b"\x00\x01\xfe\xff binary"), ("json", psycopg2.extras.Json({"k": [1, "v", None]})),
        ("empty text", ""), ("nested array", [[1, 2], [3, 4]]),
    ]
    out = []
    conn = connect(spec)
    with conn.cursor() as cur:
        for label, value in values:
            cur.execute("select %s, pg_typeof(%s)::text", (value, value))
            row = cur.fetchone()
            out.append([label, show(row), cur.statusmessage, cur.rowcount,
                        [(c.name, c.type_code) for c in cur.description]])
        cur.execute("select %(a)s::int + %(b)s::int, %(t)s::timestamptz at time zone 'UTC', "
                    "%(j)s::jsonb -> 'x', %(n)s::numeric(10,3)",
                    {"a": 2, "b": 3, "t": "2020-01-01 12:00:00+05", "n": "3.14159",
                     "j": json.dumps({"x": {"y": [1, 2.5, "z"]}})})
        out.append(["named", show(cur.fetchone())])
        cur.execute("select * from (values (1, 'a'), (2, null), (3, 'c')) v(n, s) "
                    "where n = any(%s) order by n", ([1, 3],))
        out.append(["any", show(cur.fetchall()), cur.rowcount])
    conn.close()
    return out


def big_values(spec):
    """A 5 MiB text and a 5 MiB bytea: in as parameters, out as results."""
    size = int(spec.get("size", 5 * MIB))
    text = "".join(chr(0x20 + (i * 7919) % 0x5e) for i in range(4096)) * (size // 4096)
    blob = deterministic_bytes(size, "bytea")
    conn = connect(spec)
    out = {"text_sent": sha256(text), "bytea_sent": sha256(blob)}
    with conn.cursor() as cur:
        cur.execute("create temp table big (id int primary key, t text, b bytea)")
        cur.execute("insert into big values (1, %s, %s)", (text, psycopg2.Binary(blob)))
        cur.execute("select t, b, length(t), length(b), md5(t), md5(b) from big where id = 1")
        t, b, tlen, blen, tmd5, bmd5 = cur.fetchone()
        out.update(text_back=sha256(t), bytea_back=sha256(b), text_len=tlen, bytea_len=blen,
                   text_md5_server=tmd5, bytea_md5_server=bmd5,
                   text_md5_client=hashlib.md5(text.encode()).hexdigest(),
                   bytea_md5_client=hashlib.md5(blob).hexdigest())
        # Server-made: a value the client never sent, only received.
        cur.execute("select repeat(md5('x'), %s)", (size // 32,))
        out["server_made"] = sha256(cur.fetchone()[0])
    conn.close()
    return out


def named_cursor(spec):
    """A server-side cursor (DECLARE/FETCH) read in batches."""
    conn = connect(spec)
    conn.autocommit = False
    batches = []
    digest = hashlib.sha256()
    with conn.cursor(name="dbward_batches") as cur:
        cur.itersize = 1000
        cur.execute("select g, md5(g::text), repeat('r', g %% 97) from generate_series(1, %s) g",
                    (int(spec.get("rows", 20000)),))
        while True:
            rows = cur.fetchmany(777)
            if not rows:
                break
            batches.append(len(rows))
            digest.update(show(rows).encode())
    # Iterating uses itersize-sized FETCHes.
    with conn.cursor(name="dbward_iter") as cur:
        cur.itersize = 1500
        cur.execute("select g from generate_series(1, 5000) g")
        total = sum(r[0] for r in cur)
    conn.commit()
    conn.close()
    return {"batches": batches, "digest": digest.hexdigest(), "iter_sum": total}


def executemany(spec):
    conn = connect(spec)
    with conn.cursor() as cur:
        scratch_schema(cur, "wl_many")
        cur.execute("create table many (id int primary key, name text, score numeric)")
        cur.executemany("insert into many values (%s, %s, %s)",
                        [(i, f"name-{i}'s", i * 1.25) for i in range(1, 1001)])
        many_rowcount = cur.rowcount
        psycopg2.extras.execute_values(
            cur, "insert into many values %s",
            [(i, f"value-{i}", None) for i in range(1001, 3001)], page_size=500)
        cur.execute("select count(*), sum(id), md5(string_agg(name || coalesce(score::text, '-'), "
                    "',' order by id)) from many")
        summary = cur.fetchone()
        try:
            cur.executemany("insert into many values (%s, %s, %s)", [(5000, "x", 1), (1, "dup", 2)])
            dup = None
        except psycopg2.Error as e:
            dup = error_info(e)
        drop_schema(cur, "wl_many")
    conn.close()
    return {"rowcount": many_rowcount, "summary": show(summary), "duplicate": dup}


def prepared(spec):
    """SQL-level PREPARE/EXECUTE/DEALLOCATE, and their errors."""
    conn = connect(spec)
    out = []
    with conn.cursor() as cur:
        cur.execute("prepare q(int, text) as select $1 * 2, upper($2), $2 is null")
        out.append(cur.statusmessage)
        for args in ((1, "a"), (21, "élan"), (0, None)):
            cur.execute("execute q(%s, %s)", args)
            out.append(show(cur.fetchall()))
        cur.execute("select name, statement, parameter_types::text from pg_prepared_statements")
        out.append(show(cur.fetchall()))
        cur.execute("deallocate q")
        out.append(cur.statusmessage)
        for bad in ("execute q(1, 'x')", "prepare r as select * from no_such_table"):
            try:
                cur.execute(bad)
            except psycopg2.Error as e:
                out.append(error_info(e))
    conn.close()
    return out


def errors(spec):
    """Server errors and notices as psycopg2 reports them."""
    conn = connect(spec)
    out = []
    with conn.cursor() as cur:
        scratch_schema(cur, "wl_errors")
        cur.execute("create table e (id int primary key, v int check (v > 0))")
        for bad in ("select 1/0", "select * from no_such_table", "selec 1",
                    "insert into e values (1, 1), (1, 2)", "insert into e values (2, -1)",
                    "select 'abc'::int", "do $$ begin raise exception using "
                    "errcode = '22023', message = 'custom', detail = 'd', hint = 'h'; end $$"):
            try:
                cur.execute(bad)
                out.append(["no error", bad])
            except psycopg2.Error as e:
                out.append(error_info(e))
        cur.execute("do $$ begin raise notice 'note %', 1; raise warning 'careful'; "
                    "raise info 'fyi'; end $$")
        out.append(list(conn.notices))
        drop_schema(cur, "wl_errors")
    conn.close()
    return out


def copy(spec):
    """COPY FROM STDIN of a file's rows, then COPY TO STDOUT (text and CSV)."""
    with open(spec["file"], "rb") as f:
        data = f.read()
    conn = connect(spec)
    out = {}
    with conn.cursor() as cur:
        cur.execute("set timezone = 'UTC'")
        cur.execute("create temp table c (id int, name text, amount numeric, note text, "
                    "at timestamptz, tags text[])")
        cur.copy_expert("copy c from stdin", io.BytesIO(data))
        out["copy_in_rowcount"] = cur.rowcount
        out["copy_in_status"] = cur.statusmessage
        cur.execute("select count(*), sum(id), count(note) from c")
        out["counts"] = show(cur.fetchone())
        text_out = io.BytesIO()
        cur.copy_expert("copy (select * from c order by id) to stdout", text_out)
        out["copy_out_rowcount"] = cur.rowcount
        out["copy_out_sha256"] = sha256(text_out.getvalue())
        out["round_trip_equal"] = text_out.getvalue() == data
        csv_out = io.BytesIO()
        cur.copy_expert("copy (select * from c order by id desc) to stdout "
                        "with (format csv, header, force_quote *)", csv_out)
        out["csv_sha256"] = sha256(csv_out.getvalue())
        out["csv_records"] = len(list(csv.reader(io.StringIO(csv_out.getvalue().decode()))))
        # A bad row in the middle: the server's error ends the COPY.
        broken = data.split(b"\n")
        broken[len(broken) // 2] = b"not-a-number\tx\t1\t\\N\t\\N\t\\N"
        try:
            cur.copy_expert("copy c from stdin", io.BytesIO(b"\n".join(broken)))
            out["bad_row"] = "accepted"
        except psycopg2.Error as e:
            out["bad_row"] = error_info(e)
        cur.execute("select count(*) from c")
        out["after_bad_row"] = cur.fetchone()[0]
    conn.close()
    return out


def large_objects(spec):
    """psycopg2 lobject: libpq's lo_* calls, i.e. the FunctionCall message."""
    blob = deterministic_bytes(int(spec.get("size", 3 * MIB)), "lobject")
    conn = connect(spec)
    conn.autocommit = False
    lo = conn.lobject(0, "wb")
    written = lo.write(blob)
    lo.close()
    lo = conn.lobject(lo.oid, "rb")
    whole = lo.read()
    lo.seek(MIB + 17)
    middle = lo.read(4096)
    position = lo.tell()
    lo.close()
    lo = conn.lobject(lo.oid, "rwb")
    lo.truncate(1000)
    lo.close()
    with conn.cursor() as cur:
        cur.execute("select length(lo_get(%s)), md5(lo_get(%s))", (lo.oid, lo.oid))
        after_truncate = cur.fetchone()
    conn.lobject(lo.oid).unlink()
    conn.commit()
    conn.close()
    return {"written": written, "read_back": sha256(whole), "sent": sha256(blob),
            "middle": sha256(middle), "expected_middle": sha256(blob[MIB + 17:MIB + 17 + 4096]),
            "tell": position, "after_truncate": show(after_truncate)}


def listen(spec):
    """LISTENs, says "listening", prints each notification as a JSON line.

    Also NOTIFYs itself once, to see a notification raised by its own
    connection come back. Stops after spec["count"] or spec["timeout"] s.
    """
    conn = connect(spec)
    with conn.cursor() as cur:
        cur.execute("listen dbward_channel")
        cur.execute("notify dbward_channel, 'from myself'")
    print("listening", flush=True)
    want, deadline = int(spec.get("count", 2)), time.monotonic() + float(spec.get("timeout", 20))
    got = 0
    while got < want and time.monotonic() < deadline:
        # libpq may already hold a notification it read with an earlier
        # result; poll() parses it, select() alone would not see it.
        conn.poll()
        while conn.notifies:
            n = conn.notifies.pop(0)
            print(json.dumps({"channel": n.channel, "payload": n.payload}), flush=True)
            got += 1
        if got < want and select.select([conn], [], [], 0.5)[0]:
            conn.poll()
    conn.close()
    return {"received": got}


def cancel(spec):
    """pg_sleep(30) cancelled from another thread with conn.cancel().

    conn.cancel() opens a new connection to the same address and sends a
    CancelRequest with the session's key. It is repeated until the query
    ends, since one sent before the query starts cancels nothing.
    """
    conn = connect(spec)
    cur = conn.cursor()
    cur.execute("select 1")
    done = threading.Event()
    cancels = [0]

    def canceller():
        while not done.wait(0.25):
            conn.cancel()
            cancels[0] += 1

    thread = threading.Thread(target=canceller)
    started = time.monotonic()
    thread.start()
    try:
        cur.execute("select pg_sleep(30)")
        outcome = {"outcome": "completed"}
    except psycopg2.Error as e:
        outcome = {"outcome": "error", **error_info(e)}
    finally:
        done.set()
        thread.join()
    outcome["seconds"] = round(time.monotonic() - started, 3)
    outcome["cancels_sent"] = cancels[0]
    cur.execute("select 'still usable'")
    outcome["after"] = cur.fetchone()[0]
    conn.close()
    return outcome


WORKLOADS = {f.__name__: f for f in (params, big_values, named_cursor, executemany, prepared,
                                     errors, copy, large_objects, listen, cancel)}

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(WORKLOADS[spec["workload"]](spec)))
