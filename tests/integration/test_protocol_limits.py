"""
The protocol's limits after the startup: each malicious or broken message,
sent through the agent once a session is logged in, gets an ErrorResponse
with SQLSTATE 08P01 (protocol_violation) where the protocol allows, that
connection is closed, the agent records why in the session's
connection_close event, and the agent and every other connection (one
opened before, one opened after) carry on.

The agent here runs with `limits: {max_message_bytes: 1048576}`. A
message's size counts its header: type byte, length word and body, i.e.
1 + the declared length.

Several of these the server would refuse by itself too (it also answers a
length below 4 or an unknown type with 08P01); the connection_close
event's `error` is what shows that the agent saw the violation rather
than passing it on. The malicious-server tests use a fake server on
loopback that speaks just enough of the protocol.
"""

import socket
import struct
import threading

import pytest

import pgwire
from dbward_env import (
    assert_intercepted,
    by_app,
    free_port,
    marker,
    psql_argv,
    startup,
    wait_until,
    wire_client,
)

PROTOCOL_VIOLATION = "08P01"
MAX_MESSAGE = 1 << 20


@pytest.fixture
def fake_server(request):
    """fake_server(script) -> a FakeServer on the port the module's agent intercepts."""
    servers = []

    def start(script):
        server = FakeServer(script, port=request.node.fake_port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        if server.errors:
            print(f"fake server on {server.port}: {server.errors}")


@pytest.fixture
def agent(agent_factory, agent_config, pg, request):
    """The agent with a 1 MiB message limit; a fake server's port is a target too."""
    targets = [{"port": pg.port}]
    if "fake_server" in request.fixturenames:
        request.node.fake_port = free_port()
        targets.append({"port": request.node.fake_port, "upstream_tls": "disable"})
    return agent_factory(config=agent_config(limits={"max_message_bytes": MAX_MESSAGE},
                                             intercept={"targets": targets}))


def after_login(cgroup, pg, payload, close=False, app=None, port=None, timeout=3):
    """Logs in through the agent, sends @payload at the first ReadyForQuery."""
    item = {"raw_hex": payload.hex()}
    if close:
        item["close"] = True
    return wire_client(cgroup, {"host": "127.0.0.1", "port": port or pg.port,
                                "startup": startup(app or marker("limits")),
                                "queries": [item], "timeout": timeout})


def after_first_ready(result):
    kinds = [m["type"] for m in result["messages"]]
    assert "Z" in kinds, f"the session never became ready: {result}"
    return result["messages"][kinds.index("Z") + 1:]


def assert_error_then_close(result, codes=(PROTOCOL_VIOLATION,)):
    assert "connect_error" not in result, result
    later = after_first_ready(result)
    assert [m["type"] for m in later] == ["E"], \
        f"expected one ErrorResponse then the close, got {later} ({result.get('read_error')})"
    assert later[0]["fields"].get("C") in codes, later[0]
    assert later[0]["fields"].get("S") == "FATAL", later[0]
    assert result["eof"] or result.get("read_error") == "ECONNRESET", result


def assert_agent_recorded_error(agent, pid):
    closed = agent.wait_for_event(lambda e: e.get("pid") == pid, kind="connection_close",
                                  timeout=10)
    assert closed.get("error"), f"the agent closed the session without saying why: {closed}"
    return closed


def assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup):
    assert agent.running, agent.output()
    assert held.query_works()
    app = marker("after")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert res.returncode == 0, res.stderr
    agent.wait_for_event(by_app(app), kind="connection_open")


# --- client to server ---------------------------------------------------------


@pytest.mark.parametrize("declared", [0, 3])
def test_message_length_below_4_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup, declared):
    res = after_login(test_cgroup, pg, b"Q" + struct.pack("!I", declared) + b"select 1\0")
    assert_error_then_close(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_message_over_max_message_bytes_is_refused_on_its_header(
        pg, agent, held, test_cgroup, run_in_cgroup):
    # A 2 MiB Query announced, nothing of it sent: the agent must refuse
    # on the length alone, not wait for a body (the server would wait).
    res = after_login(test_cgroup, pg, b"Q" + struct.pack("!I", 2 * MAX_MESSAGE))
    assert_error_then_close(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def query_of_size(total):
    """A Query message of exactly @total bytes, header included."""
    head = b"select length('"
    tail = b"')\0"
    pad = total - 5 - len(head) - len(tail)
    msg = b"Q" + struct.pack("!I", total - 1) + head + b"x" * pad + tail
    assert len(msg) == total
    return msg, pad


def test_message_of_exactly_max_message_bytes_is_forwarded(pg, agent, test_cgroup):
    msg, pad = query_of_size(MAX_MESSAGE)
    res = after_login(test_cgroup, pg, msg)
    assert not pgwire.errors(res), pgwire.errors(res)
    assert pgwire.rows(res) == [[str(pad)]]


def test_message_one_byte_over_max_message_bytes_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup):
    msg, _ = query_of_size(MAX_MESSAGE + 1)
    res = after_login(test_cgroup, pg, msg)
    assert_error_then_close(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_message_over_1gib_gets_protocol_violation_with_default_limit(
        pg, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory()  # limits.max_message_bytes left at its default
    res = after_login(test_cgroup, pg, b"Q" + struct.pack("!I", (1 << 30) + 1))
    assert_error_then_close(res)
    assert_agent_recorded_error(agent, res["pid"])
    app = marker("after")
    after = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert after.returncode == 0, after.stderr


def test_truncated_message_then_close_ends_the_session_and_is_recorded(
        pg, agent, held, test_cgroup, run_in_cgroup):
    app = marker("truncated")
    body = b"select 'this query never ends'\0"
    res = after_login(test_cgroup, pg, b"Q" + struct.pack("!I", len(body) + 4) + body[:10],
                      close=True, app=app)
    assert res.get("closed_by_client"), res
    assert_agent_recorded_error(agent, res["pid"])
    # The server side of that session goes too.
    wait_until(lambda: not pg.sql(f"select 1 from pg_stat_activity "
                                  f"where application_name = '{app}'"), 10,
               what="the truncated session's server connection to end")
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_truncated_copy_data_then_close_ends_the_session_and_is_recorded(
        pg, agent, held, test_cgroup, run_in_cgroup):
    # CopyData is streamed, not held whole: the agent has passed its head
    # on before the rest is missing, and must still notice the stream
    # ended inside it.
    app = marker("truncated-copy")
    copy_in = (pgwire.query_message("copy pg_temp.t from stdin")
               + b"d" + struct.pack("!I", 1000) + b"12345\tpartial")
    res = wire_client(test_cgroup, {
        "host": "127.0.0.1", "port": pg.port, "startup": startup(app), "timeout": 3,
        "queries": ["create temp table t (x int, y text)",
                    {"raw_hex": copy_in.hex(), "close": True}]})
    assert res.get("closed_by_client"), res
    assert_agent_recorded_error(agent, res["pid"])
    wait_until(lambda: not pg.sql(f"select 1 from pg_stat_activity "
                                  f"where application_name = '{app}'"), 10,
               what="the truncated session's server connection to end")
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


@pytest.mark.parametrize("mtype", [b"z", b"\x00", b"\xff", b"T"],
                         ids=["z", "nul", "0xff", "backend-only-T"])
def test_unknown_message_type_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup, mtype):
    res = after_login(test_cgroup, pg, mtype + struct.pack("!I", 8) + b"abcd")
    assert_error_then_close(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


@pytest.mark.parametrize("request_code", [pgwire.SSL_REQUEST_CODE, pgwire.GSSENC_REQUEST_CODE],
                         ids=["SSLRequest", "GSSENCRequest"])
def test_bytes_pipelined_after_encryption_request_get_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup, request_code):
    # CVE-2021-23214: bytes sent behind the request, before its answer,
    # would be taken as if they had come through the encrypted channel.
    data = pgwire.request_message(request_code) + pgwire.startup_message(startup("pipelined"))
    res = wire_client(test_cgroup, {"host": "127.0.0.1", "port": pg.port, "raw_hex": data.hex()})
    assert "connect_error" not in res, res
    assert [m["type"] for m in res["messages"]] == ["E"], res
    assert res["messages"][0]["fields"]["C"] == PROTOCOL_VIOLATION
    assert res["eof"] or res.get("read_error") == "ECONNRESET", res
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


# --- server to client: a malicious or broken server ---------------------------


class FakeServer:
    """Accepts connections on 127.0.0.1 and runs @script(sock) on each."""

    def __init__(self, script, port=None):
        self.script = script
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = port
        self.threads = []
        self.errors = []
        self.stopping = False

    def start(self):
        self.sock.bind(("127.0.0.1", self.port or free_port()))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn):
        conn.settimeout(10)
        try:
            self.script(conn)
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.errors.append(repr(e))
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(5)


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError(f"peer closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_startup(conn):
    (length,) = struct.unpack("!I", recv_exact(conn, 4))
    return recv_exact(conn, length - 4)


def backend(mtype, body=b""):
    return mtype + struct.pack("!I", len(body) + 4) + body


LOGGED_IN = (backend(b"R", struct.pack("!I", 0)) + backend(b"K", struct.pack("!II", 4242, 99))
             + backend(b"Z", b"I"))


def serve_then(payload):
    """A script: startup, login, one message read, then @payload, then wait for close."""
    def script(conn):
        read_startup(conn)
        conn.sendall(LOGGED_IN)
        mtype, length = struct.unpack("!cI", recv_exact(conn, 5))
        recv_exact(conn, length - 4)
        conn.sendall(payload)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
    return script


def fake_session(test_cgroup, port):
    return wire_client(test_cgroup, {"host": "127.0.0.1", "port": port,
                                     "startup": startup(marker("fake")),
                                     "queries": ["select 1"], "timeout": 3})


def assert_server_violation_reported(res):
    # The client did nothing wrong: it gets a clear FATAL error naming a
    # connection failure (class 08), then the close; never a hang.
    assert_error_then_close(res, codes=(PROTOCOL_VIOLATION, "08006"))


@pytest.mark.parametrize("declared", [0, 3])
def test_server_message_length_below_4_ends_session_with_error(
        pg, agent, held, fake_server, test_cgroup, run_in_cgroup, declared):
    fake = fake_server(serve_then(b"T" + struct.pack("!I", declared) + b"\0\0\0\0"))
    res = fake_session(test_cgroup, fake.port)
    assert_intercepted(agent, res["pid"])
    assert_server_violation_reported(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_server_message_over_max_message_bytes_ends_session_with_error(
        pg, agent, held, fake_server, test_cgroup, run_in_cgroup):
    # An ErrorResponse (which the agent must see whole) announced at 2 MiB.
    fake = fake_server(serve_then(b"E" + struct.pack("!I", 2 * MAX_MESSAGE) + b"SERROR\0"))
    res = fake_session(test_cgroup, fake.port)
    assert_intercepted(agent, res["pid"])
    assert_server_violation_reported(res)
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_server_closing_inside_a_message_ends_session_with_error(
        pg, agent, held, fake_server, test_cgroup, run_in_cgroup):
    def script(conn):
        read_startup(conn)
        conn.sendall(LOGGED_IN)
        recv_exact(conn, 5)
        conn.sendall(b"D" + struct.pack("!I", 1000) + b"\0\1")  # 998 bytes short
        conn.shutdown(socket.SHUT_WR)
    fake = fake_server(script)
    res = fake_session(test_cgroup, fake.port)
    assert_intercepted(agent, res["pid"])
    # A DataRow streams: its head may already be with the client, and then
    # no ErrorResponse can follow it. Either way the client must see the
    # end at once (an error or the close), not wait for bytes never coming.
    later = after_first_ready(res)
    if later and later[-1]["type"] == "E":
        assert_server_violation_reported(res)
    else:
        assert res["eof"] or "EOF inside" in str(res.get("read_error")), res
    assert_agent_recorded_error(agent, res["pid"])
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)
