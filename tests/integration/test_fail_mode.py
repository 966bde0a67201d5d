"""
What happens to intercepted connections when the agent dies (kill -9, so
it cannot clean up): fail closed refuses them with a clear errno, fail open
lets them go straight to the server once the heartbeat is stale. A new
agent with the same config takes the pinned programs over.
"""

import copy

from dbward_env import (
    assert_went_direct,
    assert_went_through_agent,
    by_app,
    marker,
    probe,
    psql_argv,
    wait_until,
)

REFUSED = "Connection refused"
NOT_PERMITTED = "Operation not permitted"


def restart_config(old, tmp_path, label):
    """The same config (cgroup, pin_dir, ports) with a fresh audit file."""
    config = copy.deepcopy(old.config)
    config["audit"]["file"] = str(tmp_path / f"audit-{label}.jsonl")
    return config


def psql_in_cgroup(run_in_cgroup, cgroup, pg, app):
    return run_in_cgroup(cgroup, psql_argv("127.0.0.1", pg.port, application_name=app,
                                           connect_timeout=5), timeout=30)


def assert_intercepted_psql_works(agent, run_in_cgroup, cgroup, pg, label):
    app = marker(label)
    res = psql_in_cgroup(run_in_cgroup, cgroup, pg, app)
    assert res.returncode == 0, res.stderr
    event = agent.wait_for_event(by_app(app), kind="connection_open")
    assert event["pid"] == res.pid
    return event


def test_fail_closed_refuses_cgroup_connects_after_kill9(
        pg, agent_factory, test_cgroup, run_in_cgroup, bpffs):
    agent = agent_factory(fail="closed")
    assert_intercepted_psql_works(agent, run_in_cgroup, test_cgroup, pg, "before-kill")
    agent.kill9()
    assert bpffs.pins(), "nothing pinned: the programs cannot outlive the agent"

    first = psql_in_cgroup(run_in_cgroup, test_cgroup, pg, marker("right-after-kill"))
    assert first.returncode != 0, first.stdout
    assert REFUSED in first.stderr or NOT_PERMITTED in first.stderr, first.stderr

    # Once the heartbeat is older than heartbeat_timeout_ms the programs
    # themselves refuse: EPERM. Every attempt until then must fail too.
    def refused_with_eperm():
        res = psql_in_cgroup(run_in_cgroup, test_cgroup, pg, marker("stale"))
        assert res.returncode != 0, f"connect succeeded with the agent dead: {res.stdout}"
        assert REFUSED in res.stderr or NOT_PERMITTED in res.stderr, res.stderr
        return NOT_PERMITTED in res.stderr

    wait_until(refused_with_eperm, timeout=agent.heartbeat_timeout + 10, interval=0.2,
               what="connects to fail with EPERM once the heartbeat is stale")
    assert refused_with_eperm()

    # Nobody outside the cgroup notices.
    assert pg.sql("select 1", user="app", dbname="orders") == [(1,)]


def test_fail_closed_raw_connect_gets_eperm_once_heartbeat_is_stale(pg, agent_factory, test_cgroup):
    agent = agent_factory(fail="closed")
    agent.kill9()

    def eperm():
        res = probe(test_cgroup, "127.0.0.1", pg.port, marker("raw"))
        assert res.get("connect_error") in ("ECONNREFUSED", "EPERM"), res
        return res["connect_error"] == "EPERM"

    wait_until(eperm, timeout=agent.heartbeat_timeout + 10, interval=0.2,
               what="connect() to fail with EPERM")
    v6 = probe(test_cgroup, "::1", pg.port, marker("raw6"))
    assert v6.get("connect_error") == "EPERM", v6


def test_restarted_agent_takes_over_after_fail_closed(
        pg, agent_factory, test_cgroup, run_in_cgroup, tmp_path):
    old = agent_factory(fail="closed")
    assert_intercepted_psql_works(old, run_in_cgroup, test_cgroup, pg, "old")
    old.kill9()
    wait_until(lambda: NOT_PERMITTED in psql_in_cgroup(
                   run_in_cgroup, test_cgroup, pg, marker("dead")).stderr,
               timeout=old.heartbeat_timeout + 10, interval=0.2,
               what="EPERM while no agent is alive")
    events_of_old = len(old.audit_events())

    new = agent_factory(config=restart_config(old, tmp_path, "new"))
    assert_intercepted_psql_works(new, run_in_cgroup, test_cgroup, pg, "after-restart")
    assert_went_through_agent(probe(test_cgroup, "127.0.0.1", pg.port, marker("probe")))
    assert len(old.audit_events()) == events_of_old


def test_restarted_agent_takes_over_right_after_kill9(
        pg, agent_factory, test_cgroup, run_in_cgroup, tmp_path):
    old = agent_factory(fail="closed")
    old.kill9()
    new = agent_factory(config=restart_config(old, tmp_path, "quick"))
    assert_intercepted_psql_works(new, run_in_cgroup, test_cgroup, pg, "quick-restart")


def test_fail_open_goes_direct_once_heartbeat_is_stale(
        pg, agent_factory, test_cgroup, run_in_cgroup, tmp_path):
    agent = agent_factory(fail="open")
    assert_intercepted_psql_works(agent, run_in_cgroup, test_cgroup, pg, "open-before")
    assert_went_through_agent(probe(test_cgroup, "127.0.0.1", pg.port, marker("probe")))
    agent.kill9()
    events_after_kill = len(agent.audit_events())

    def direct_connect():
        res = probe(test_cgroup, "127.0.0.1", pg.port, marker("open-stale"))
        return res if "connect_error" not in res else None

    res = wait_until(direct_connect, timeout=agent.heartbeat_timeout + 10, interval=0.2,
                     what="connects to go direct once the heartbeat is stale")
    assert_went_direct(res)
    psql = psql_in_cgroup(run_in_cgroup, test_cgroup, pg, marker("open-psql"))
    assert psql.returncode == 0, psql.stderr
    assert len(agent.audit_events()) == events_after_kill

    new = agent_factory(config=restart_config(agent, tmp_path, "open-new"))
    assert_intercepted_psql_works(new, run_in_cgroup, test_cgroup, pg, "open-restart")
    assert_went_through_agent(probe(test_cgroup, "127.0.0.1", pg.port, marker("probe2")))
