"""Connections cannot hold the agent forever before their session starts."""

from dbward_env import PYTHON, marker, psql_argv

SILENT_CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    print("still open")
    sys.exit(1)
print("closed", data[:1].decode(errors="replace"), "08006" in data.decode(errors="replace"))
"""


def test_silent_client_is_closed_after_the_startup_timeout(pg, agent_factory, test_cgroup,
                                                           run_in_cgroup):
    agent = agent_factory(limits={"startup_timeout_ms": 300})
    res = run_in_cgroup(test_cgroup, [PYTHON, "-c", SILENT_CLIENT, str(pg.port)], timeout=60)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert res.stdout.split() == ["closed", "E", "True"], res.stdout
    closed = agent.wait_for_event(lambda e: e.get("error"), kind="connection_close")
    assert "did not start in time" in closed["error"]
    app = marker("after")
    ok = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert ok.returncode == 0, "the agent carries on: " + ok.stderr
