"""
Transparency at the wire: a raw client (pgwire.py) sends the same messages
direct and through the agent and must receive the same messages, body for
body: simple and extended query, pipelining, portals, COPY both ways,
FunctionCall, notifications, ParameterStatus, errors mid-stream, empty
queries, protocol version negotiation, Terminate.

Normalised, and only this (see normalise_backend_key and blank_notify_pid):
BackendKeyData's body (the backend's pid and secret key) and the sender
pid at the head of a NotificationResponse: both name the backend process,
which is another one on every connection.
"""

import struct

import pgwire
from dbward_env import marker, startup

P = pgwire


def blank_notify_pid(result):
    for msg in result["messages"]:
        if msg["type"] == "A":
            msg["body"] = "<pid>" + msg["body"][8:]
    return result


def messages_of(result):
    return [m["type"] for m in result["messages"]]


def assert_same_exchange(both, spec):
    direct, through = both.wire(spec)
    direct, through = blank_notify_pid(direct), blank_notify_pid(through)
    assert "connect_error" not in through, through
    assert through["messages"] == direct["messages"], _first_difference(direct, through)
    assert (through["eof"], through.get("read_error")) == (direct["eof"], direct.get("read_error"))
    return direct, through


def _first_difference(direct, through):
    a, b = direct["messages"], through["messages"]
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"message {i}: direct {x} vs through the agent {y}"
    return f"{len(a)} messages direct, {len(b)} through the agent"


def raw(*messages, close=False):
    item = {"raw_hex": b"".join(messages).hex()}
    if close:
        item["close"] = True
    return item


def copy_data(text):
    return P.message("d", text.encode())


def test_raw_protocol_exchange_through_agent_is_identical_message_for_message(pg, both):
    int4pl = pg.sql("select 'int4pl'::regproc::oid")[0][0]
    queries = [
        # Simple query: several statements, an error between them, empty ones.
        "select 1 as one; select 'two' as two; select 3 as three",
        "select 1; select 1/0; select 3",
        "",
        ";",
        "  ;  ; ",
        # Rows, then an error at x = 5000.
        "select x, 1/(x - 5000) from generate_series(1, 10000) x",
        # A failed transaction block.
        "begin", "select 1/0", "select 1", "rollback",
        # ParameterStatus on the fly.
        "set application_name = 'renamed on the fly'", "set datestyle = 'German'",
        "select now()::date = current_date",
        # Extended query: named statement, two executions pipelined, one Sync.
        raw(P.parse_message("select $1::int + $2::int, $3::text", name="s1"),
            P.describe_message("S", "s1"),
            P.bind_message([1, 2, "x"], statement="s1"), P.describe_message("P"),
            P.execute_message(),
            P.bind_message([3, 4, None], statement="s1"), P.execute_message(),
            P.sync_message()),
        # Unnamed statement, a named portal fetched 3 rows at a time.
        raw(P.parse_message("select g, md5(g::text) from generate_series(1, 10) g"),
            P.bind_message(portal="p1"), P.execute_message("p1", 3),
            P.execute_message("p1", 3), P.flush_message(), P.execute_message("p1", 0),
            P.close_message("P", "p1"), P.sync_message()),
        # Errors in extended query: the rest is skipped up to Sync.
        raw(P.parse_message("selec 1", name="bad"), P.bind_message(statement="bad"),
            P.execute_message(), P.sync_message()),
        raw(P.parse_message("select 1/$1::int"), P.bind_message([0]), P.execute_message(),
            P.sync_message()),
        raw(P.bind_message(statement="no_such_statement"), P.sync_message()),
        raw(P.close_message("S", "s1"), P.sync_message()),
        raw(P.parse_message(""), P.bind_message(), P.describe_message("P"), P.execute_message(),
            P.sync_message()),
        raw(P.parse_message("set search_path = public, pg_catalog"), P.bind_message(),
            P.describe_message("P"), P.execute_message(), P.sync_message()),
        # FunctionCall: int4pl(2, 3), the fast path libpq's lo_* use.
        raw(P.function_call_message(int4pl, [2, 3])),
        # COPY out, COPY in (data pipelined behind the Query), and CopyFail.
        "copy (select g, repeat('ü', g) from generate_series(1, 100) g) to stdout",
        "create temp table w (x int, y text)",
        raw(P.query_message("copy w from stdin"), copy_data("1\tone\n"),
            copy_data("2\ttwo\n3\tth"), copy_data("ree\n"), P.message("c")),
        raw(P.query_message("copy w from stdin"), copy_data("4\tfour\n"),
            P.message("f", b"the client gave up\0")),
        raw(P.query_message("copy w from stdin"), copy_data("not a number\tx\n"),
            P.message("c")),
        # Expressions, not columns: a column's RowDescription names its
        # table's OID, and the temp table is a new one on each connection.
        "select x + 0 as x, y || '' as y from w order by x",
        # Notifications, to ourselves.
        "listen wire_channel", "notify wire_channel, 'payload ✓'",
        "select pg_notify('wire_channel', repeat('n', 7000))",
    ]
    spec = {"host": "127.0.0.1", "port": pg.port, "startup": startup("dbward-wire"),
            "raw_bodies": True, "queries": queries, "timeout": 20}
    direct, _ = assert_same_exchange(both, spec)
    kinds = set(messages_of(direct))
    # Everything the exchange is there to exercise did happen.
    missing = {"I", "E", "D", "1", "2", "t", "T", "n", "s", "3", "V", "H", "G", "d", "c", "A",
               "S", "Z", "C"} - kinds
    assert not missing, f"never received: {missing}"
    assert direct["eof"] is True  # the server closed after our Terminate


def test_protocol_version_negotiation_through_agent_matches_direct(pg, both):
    # Protocol 3.5 and an unknown _pq_ option: the server answers with
    # NegotiateProtocolVersion and goes on at the version it speaks.
    body = struct.pack("!I", (3 << 16) | 5)
    for key, value in (("user", "app"), ("database", "orders"),
                       ("application_name", "dbward-negotiate"), ("_pq_.dbward_option", "1")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    spec = {"host": "127.0.0.1", "port": pg.port,
            "raw_hex": (struct.pack("!I", len(body) + 4) + body).hex(),
            "raw_bodies": True, "queries": ["select current_user"]}
    direct, through = assert_same_exchange(both, spec)
    assert "v" in messages_of(direct)
    assert P.rows(through) == [["app"]]


def test_terminate_through_agent_closes_like_direct(pg, both):
    spec = {"host": "127.0.0.1", "port": pg.port, "startup": startup(marker("terminate")),
            "queries": []}
    direct, through = both.wire(spec)
    # Terminate after the first ReadyForQuery; the server closes, silently.
    assert through["eof"] is direct["eof"] is True
    assert messages_of(through) == messages_of(direct)


# Both sides of a session may end it while the other is silent; the agent
# must pass the close on, whether or not it came in the same read as the
# last bytes. One try can miss a race, so each test makes several.
CLOSE_TRIES = 20


def test_server_ending_the_session_closes_the_client_connection_too(pg, both):
    # The server sends a FATAL ErrorResponse and closes; a client waiting
    # for more (as it does direct) must see the close, not hang.
    spec = {"host": "127.0.0.1", "port": pg.port, "startup": startup("dbward-terminated"),
            "queries": ["select pg_terminate_backend(pg_backend_pid())"], "timeout": 3}
    for attempt in range(CLOSE_TRIES):
        direct, through = both.wire(spec)
        assert direct["eof"] is True, direct
        assert through["messages"] == direct["messages"], through
        assert through["eof"] is True, (
            f"try {attempt + 1}: the server closed after its FATAL error, the client "
            f"behind the agent was left open: {through.get('read_error')}")
    assert pgwire_errors_code(direct) == ["57P01"]


def pgwire_errors_code(result):
    return [e["C"] for e in P.errors(result)]


def test_client_vanishing_mid_query_ends_its_server_session(pg, both, test_cgroup):
    # The client sends a long query and closes without Terminate. With
    # client_connection_check_interval the backend notices a closed
    # socket; behind the agent it can only notice if the agent closes its
    # upstream socket when the client's close arrives.
    from dbward_env import wait_until, wire_client

    for attempt in range(CLOSE_TRIES // 2):
        app = marker("vanish")
        spec = {"host": "127.0.0.1", "port": pg.port,
                "startup": {**startup(app),
                            "options": "-c client_connection_check_interval=100"},
                "queries": [{"raw_hex": P.query_message("select pg_sleep(20)").hex(),
                             "close": True}]}
        res = wire_client(test_cgroup, spec)
        assert res.get("closed_by_client"), res
        wait_until(lambda: not pg.sql("select 1 from pg_stat_activity where "
                                      f"application_name = '{app}'"), 5,
                   what=f"try {attempt + 1}: the server session of a client that closed "
                        "mid-query to end")
