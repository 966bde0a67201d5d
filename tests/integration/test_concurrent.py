"""
Many intercepted connections open at the same time: every one is forwarded
to the server and gets its own session in the audit trail.
"""

import json

from dbward_env import CONCURRENT_SRC, PYTHON, marker

CLIENTS = 200


def test_200_concurrent_connections_from_cgroup_all_succeed(pg, agent, test_cgroup, run_in_cgroup):
    prefix = marker("conc")
    spec = {"host": "127.0.0.1", "port": pg.port, "n": CLIENTS, "prefix": prefix}
    res = run_in_cgroup(test_cgroup, [PYTHON, "-c", CONCURRENT_SRC, json.dumps(spec)],
                        timeout=180)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    failed = [r for r in results if not r["ok"]]
    assert not failed, f"{len(failed)} of {CLIENTS} failed, e.g. {failed[:5]}"
    # All were open at once (barrier), so each had its own server backend.
    assert len({r["backend_pid"] for r in results}) == CLIENTS

    ours = lambda e: str(e.get("application_name", "")).startswith(prefix + "-")
    opened = agent.wait_for_events(ours, CLIENTS, kind="connection_open", timeout=60)
    assert len(opened) == CLIENTS
    assert len({e["session_id"] for e in opened}) == CLIENTS
    assert {e["pid"] for e in opened} == {res.pid}
    assert len({e["application_name"] for e in opened}) == CLIENTS
    closed = agent.wait_for_events(ours, CLIENTS, kind="connection_close", timeout=60)
    assert {e["session_id"] for e in closed} == {e["session_id"] for e in opened}
