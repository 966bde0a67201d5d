"""
Fixtures for the integration tests: a real PostgreSQL per session, a test
cgroup, a private bpffs and the agent per test, a network namespace like
a pod's. The classes behind them live in dbward_env.py.

Run as root:   /usr/bin/python3 -m pytest -q tests/integration
Binaries:      $DBWARD_BIN (default build/bin: dbward-agent, dbward-collector,
               dbward); $DBWARD_AGENT overrides the agent alone.
"""

import json
import os
import subprocess

import pytest

from dbward_env import (
    HELD_SRC,
    PYTHON,
    Agent,
    AgentFailure,
    Bpffs,
    Cgroup,
    Differential,
    Netns,
    Postgres,
    Raw,
    agent_binary,
    cgroup2_mount,
    free_port,
    by_app,
    marker,
    merge,
    popen_in_cgroup,
    readline,
    run_in_cgroup as _run_in_cgroup,
    wait_until,
)


@pytest.fixture(scope="session", autouse=True)
def _require_root():
    """Fails the session early when it cannot create cgroups, netns or BPF."""
    if os.geteuid() != 0:
        pytest.exit("integration tests need root (BPF, cgroups, netns)", returncode=4)
    cgroup2_mount()


@pytest.fixture(scope="session")
def netns():
    """A network namespace joined by veth: host side .1, namespace side .2."""
    ns = Netns()
    try:
        ns.create()
        yield ns
    finally:
        ns.destroy()


@pytest.fixture(scope="session")
def pg(netns):
    """A throwaway PostgreSQL on 127.0.0.1, ::1 and the veth's host address."""
    server = Postgres(free_port(), ["127.0.0.1", "::1", netns.host_addr])
    try:
        server.initdb()
        server.start()
        server.sql("create role app login")
        server.sql("create database orders owner app")
        yield server
    finally:
        server.cleanup()


# Roles with passwords on the session's server, one per password method.
PASSWORD_ROLES = {
    # role: (pg_hba method, how the password is stored, password)
    "dbw_scram": ("scram-sha-256", "scram-sha-256", "scram 'secret' ✓"),
    "dbw_md5": ("md5", "md5", "md5-secret"),
    "dbw_password": ("password", "scram-sha-256", "cleartext-secret"),
}


@pytest.fixture(scope="session")
def pg_passwords(pg):
    """{role: password} for roles that must authenticate with a password.

    pg_hba.conf gets lines for these roles only, ahead of the trust lines,
    so every other test keeps trust; the original file is put back after.
    """
    original = pg.hba_path.read_text()
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            for role, (_, stored, password) in PASSWORD_ROLES.items():
                cur.execute(f"set password_encryption = '{stored}'")
                cur.execute(f"create role {role} login password %s", (password,))
        lines = [f"host all {role} {net} {method}"
                 for role, (method, _, _) in PASSWORD_ROLES.items()
                 for net in ("127.0.0.1/32", "::1/128")]
        pg.hba_path.write_text("\n".join(lines) + "\n" + original)
        pg.reload()
        wait_until(lambda: not _connects_without_password(pg, "dbw_md5"), 10,
                   what="pg_hba.conf with password lines to take effect")
        yield {role: password for role, (_, _, password) in PASSWORD_ROLES.items()}
    finally:
        pg.hba_path.write_text(original)
        pg.reload()
        with conn.cursor() as cur:
            for role in PASSWORD_ROLES:
                cur.execute(f"drop role if exists {role}")
        conn.close()


def _connects_without_password(pg, role):
    import psycopg2

    try:
        pg.connect(user=role, dbname="orders").close()
        return True
    except psycopg2.OperationalError:
        return False


@pytest.fixture(autouse=True)
def pg_log(request):
    """Prints what PostgreSQL logged during the test (shown on failure)."""
    if "pg" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("pg")
    with open(server.log_path) as f:
        f.seek(0, os.SEEK_END)
        yield
        print("\n--- PostgreSQL log ---\n" + f.read())


@pytest.fixture
def test_cgroup():
    """A fresh child of the cgroup2 mount; teardown kills what is left and rmdirs."""
    cg = Cgroup()
    try:
        yield cg.create()
    finally:
        cg.destroy()


@pytest.fixture
def bpffs(tmp_path):
    """A bpffs mounted in the test's temp dir; teardown unmounts it."""
    fs = Bpffs(tmp_path / "bpffs")
    try:
        yield fs.mount()
    finally:
        fs.unmount()


@pytest.fixture
def run_in_cgroup():
    """run_in_cgroup(cgroup, argv, user=, netns=, ...) -> CompletedProcess with .pid."""
    return _run_in_cgroup


@pytest.fixture
def spawn_in_cgroup():
    """spawn_in_cgroup(cgroup, argv, user=, netns=, ...) -> Popen; killed at teardown."""
    started = []

    def spawn(cgroup, argv, **kwargs):
        proc = popen_in_cgroup(cgroup, argv, **kwargs)
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.communicate(timeout=10)
        except (subprocess.TimeoutExpired, ValueError):
            pass


@pytest.fixture
def agent_config(pg, test_cgroup, bpffs, tmp_path):
    """agent_config(**overrides) -> a config dict for this test's cgroup and bpffs."""
    count = [0]

    def make(**overrides):
        count[0] += 1
        base = {
            "listen": f"127.0.0.1:{free_port()}",
            "listen6": f"[::1]:{free_port()}",
            "fail": "closed",
            "heartbeat_timeout_ms": 1000,
            "intercept": {
                "cgroup": str(test_cgroup.path),
                "pin_dir": str(bpffs.path / "dbward"),
                "upstream_mark": Raw("0xdb00"),
                "targets": [{"port": pg.port}],
            },
            "audit": {"file": str(tmp_path / f"audit-{count[0]}.jsonl")},
        }
        return merge(base, overrides)

    return make


@pytest.fixture
def agent_factory(agent_config, test_cgroup, tmp_path):
    """agent_factory(config=None, in_cgroup=False, **overrides) -> a ready Agent.

    Teardown stops every agent it started and fails the test if one did not
    exit 0 (under ASan, 86 means a leak); each agent's output is printed.
    """
    started = []

    def start(config=None, in_cgroup=False, wait=True, **overrides):
        cfg = merge(config, overrides) if config is not None else agent_config(**overrides)
        agent = Agent(agent_binary(), cfg, tmp_path, f"agent-{len(started) + 1}",
                      cgroup=test_cgroup if in_cgroup else None)
        started.append(agent)
        agent.start()
        if wait:
            agent.wait_ready()
        return agent

    yield start
    failures = []
    for agent in started:
        try:
            agent.stop()
        except AgentFailure as e:
            failures.append(str(e))
        print(f"\n--- {agent.name} (pid {agent.proc.pid}, exit {agent.returncode}) ---\n"
              + agent.output())
    if failures:
        pytest.fail("\n\n".join(failures))


@pytest.fixture
def agent(agent_factory):
    """A running agent with the default config (fail closed, heartbeat 1s)."""
    return agent_factory()


@pytest.fixture
def both(agent, test_cgroup):
    """A Differential: each workload run direct, then through the agent."""
    return Differential(agent, test_cgroup)


class HeldConnection:
    """An intercepted psycopg2 connection, opened before the bad input arrives."""

    def __init__(self, proc):
        self.proc = proc

    def query_works(self):
        self.proc.stdin.write("41\n")
        self.proc.stdin.flush()
        return readline(self.proc.stdout, 15).strip() == "42"


@pytest.fixture
def held(pg, agent, test_cgroup, spawn_in_cgroup):
    """A connection from the cgroup through the agent, open for the whole test.

    Uses whichever `agent` fixture the test sees (a module may override it).
    """
    app = marker("held")
    proc = spawn_in_cgroup(
        test_cgroup,
        [PYTHON, "-c", HELD_SRC,
         json.dumps({"host": "127.0.0.1", "port": pg.port, "application_name": app})],
        stdin=subprocess.PIPE)
    line = readline(proc.stdout, 20)
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"held connection did not open: {line!r} {proc.communicate()[1]}")
    agent.wait_for_event(by_app(app), kind="connection_open")
    return HeldConnection(proc)


# --- the collector ------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    """A CA made with `dbward ca init`; pki.issue(name) -> (cert, key)."""
    from collector_env import Pki
    return Pki(tmp_path / "pki")


_collector_dbs = [0]


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, pg, tmp_path):
    """A storage URL for a fresh collector: SQLite in tmp, or a new database
    on the session's PostgreSQL. Tests taking it run once for each."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'audit.db'}"
    _collector_dbs[0] += 1
    name = f"dbward_ledger_{os.getpid()}_{_collector_dbs[0]}"
    pg.sql(f"create database {name}")
    return f"postgres://postgres@127.0.0.1:{pg.port}/{name}"


@pytest.fixture
def collector_factory(tmp_path, pki):
    """collector_factory(storage, **overrides) -> a ready Collector.

    Teardown stops each one and fails the test if it did not exit 0.
    """
    from collector_env import Collector, CollectorFailure, collector_config
    started = []

    def start(storage, wait=True, **overrides):
        cfg = merge(collector_config(tmp_path, pki, storage), overrides)
        c = Collector(cfg, tmp_path, f"collector-{len(started) + 1}")
        started.append(c)
        return c.start(wait=wait)

    yield start
    failures = []
    for c in started:
        try:
            c.stop()
        except CollectorFailure as e:
            failures.append(str(e))
        print(f"\n--- {c.name} (exit {c.returncode}) ---\n" + c.output())
    if failures:
        pytest.fail("\n\n".join(failures))
