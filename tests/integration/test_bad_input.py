"""
Hostile or broken clients: each malformed startup gets a PostgreSQL
ErrorResponse (SQLSTATE 08P01 protocol_violation) and is closed, while the
agent and every other connection carry on.
"""

import random
import struct

import pgwire
from dbward_env import (
    by_app,
    marker,
    psql_argv,
    startup,
    wire_client,
)

PROTOCOL_VIOLATION = "08P01"


def send_raw(cgroup, pg, data, **extra):
    """Sends @data from inside @cgroup to the server's address; reads what comes back."""
    return wire_client(cgroup, {"host": "127.0.0.1", "port": pg.port,
                                "raw_hex": data.hex(), **extra})


def assert_protocol_error_then_close(result, code=PROTOCOL_VIOLATION):
    assert "connect_error" not in result, result
    kinds = [m["type"] for m in result["messages"]]
    assert kinds == ["E"], f"expected one ErrorResponse then close, got {result}"
    assert result["messages"][0]["fields"].get("C") == code, result
    # The agent closes after the error; a reset there still counts as closed.
    assert result["eof"] or result.get("read_error") == "ECONNRESET", result


def assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup):
    assert agent.running, agent.output()
    assert held.query_works()
    app = marker("after")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert res.returncode == 0, res.stderr
    agent.wait_for_event(by_app(app), kind="connection_open")


def test_garbage_protocol_code_gets_protocol_violation(pg, agent, held, test_cgroup, run_in_cgroup):
    res = send_raw(test_cgroup, pg, struct.pack("!II", 8, 0x12345678))
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_oversized_startup_length_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup):
    # Only the header is sent: the agent must refuse on the length alone,
    # not wait for 100000 bytes.
    res = send_raw(test_cgroup, pg, struct.pack("!II", 100000, pgwire.PROTOCOL_V3))
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_startup_length_just_over_limit_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup):
    body = struct.pack("!I", pgwire.PROTOCOL_V3) + b"user\0app\0" + b"x" * 10000 + b"\0\0"
    res = send_raw(test_cgroup, pg, struct.pack("!I", len(body) + 4) + body)
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_startup_length_below_header_size_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup):
    res = send_raw(test_cgroup, pg, struct.pack("!II", 4, pgwire.PROTOCOL_V3))
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_random_bytes_get_protocol_violation(pg, agent, held, test_cgroup, run_in_cgroup):
    noise = random.Random(20240601).randbytes(64)
    (declared,) = struct.unpack("!I", noise[:4])
    assert declared > 10000  # the seed gives a length no startup packet has
    res = send_raw(test_cgroup, pg, noise)
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_startup_without_terminator_gets_protocol_violation(
        pg, agent, held, test_cgroup, run_in_cgroup):
    body = struct.pack("!I", pgwire.PROTOCOL_V3) + b"user\0app\0database\0orders"
    res = send_raw(test_cgroup, pg, struct.pack("!I", len(body) + 4) + body)
    assert_protocol_error_then_close(res)
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_truncated_startup_then_close_leaves_agent_running(
        pg, agent, held, test_cgroup, run_in_cgroup):
    head = pgwire.startup_message(startup("truncated"))[:12]
    res = send_raw(test_cgroup, pg, head, close_after_send=True)
    assert "connect_error" not in res, res
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)


def test_connection_without_origin_record_is_refused(pg, agent, held, test_cgroup, run_in_cgroup):
    # Straight to the agent's port from outside the cgroup: no connect()
    # was redirected, so the agent has no origin and must not forward it.
    host, port = agent.listen
    res = pgwire.run({"host": host, "port": port, "startup": startup(marker("direct"))})
    assert "connect_error" not in res, res
    kinds = [m["type"] for m in res["messages"]]
    assert kinds == ["E"], f"expected one ErrorResponse then close, got {res}"
    assert res["eof"] or res.get("read_error") == "ECONNRESET", res
    assert_everything_else_carries_on(agent, held, pg, test_cgroup, run_in_cgroup)
