"""
Interception with identity: a workload in the test cgroup that connects to
the database's real address lands in the agent, is forwarded to the real
server, and is recorded with who it was. Everything else is untouched.
"""

import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from dbward_env import (
    PYTHON,
    assert_went_direct,
    assert_went_through_agent,
    by_app,
    free_port,
    marker,
    probe,
    psql_argv,
    run,
    startup,
    wait_until,
    wire_client,
)

EVENT_KEYS = {
    "kind", "ts", "session_id", "pid", "tid", "uid", "gid", "comm", "exe", "user",
    "cgroup_path", "container_id", "pod_uid", "cgroup_id", "netns_cookie", "client",
    "server", "db_user", "database", "application_name",
}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")


def test_psql_in_cgroup_is_intercepted_and_attributed(pg, agent, test_cgroup, run_in_cgroup):
    app = marker("psql-nobody")
    res = run_in_cgroup(
        test_cgroup,
        psql_argv("127.0.0.1", pg.port, application_name=app,
                  sql="select current_user, current_database(), "
                      "current_setting('application_name')"),
        user="nobody")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"app|orders|{app}"

    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    assert opened["pid"] == res.pid
    assert opened["comm"] == "psql"
    assert opened["uid"] == 65534
    assert opened["gid"] == 65534
    assert opened["user"] == "nobody"
    assert opened["exe"].endswith("psql")
    assert opened["cgroup_path"].endswith(test_cgroup.name)
    assert opened["cgroup_id"] == test_cgroup.id
    assert opened["db_user"] == "app"
    assert opened["database"] == "orders"
    assert opened["server"] == f"127.0.0.1:{pg.port}"
    assert opened["client"].startswith("127.0.0.1:")
    assert RFC3339_UTC.fullmatch(opened["ts"]), opened["ts"]
    assert re.fullmatch(r"[0-9a-f]+", opened["session_id"]), opened["session_id"]
    assert not opened.get("container_id") and not opened.get("pod_uid")

    closed = agent.wait_for_event(lambda e: e["session_id"] == opened["session_id"],
                                  kind="connection_close")
    assert closed["pid"] == res.pid
    assert closed["client_bytes"] > 0
    assert closed["server_bytes"] > 0
    assert closed["duration_us"] >= 0


def test_audit_events_carry_every_key(pg, agent, test_cgroup, run_in_cgroup):
    app = marker("keys")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert res.returncode == 0, res.stderr
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    closed = agent.wait_for_event(lambda e: e["session_id"] == opened["session_id"],
                                  kind="connection_close")
    # Known fields must be present; only unknowable ones may be null/absent.
    for event in (opened, closed):
        for key in EVENT_KEYS - {"container_id", "pod_uid"}:
            assert event.get(key) is not None, (key, event)
    for key in ("client_bytes", "server_bytes", "duration_us"):
        assert isinstance(closed.get(key), int), (key, closed)


def test_client_outside_cgroup_is_untouched(pg, agent, test_cgroup, run_in_cgroup):
    app = marker("outside")
    conn = pg.connect(user="app", dbname="orders", application_name=app)
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as own:
            local_port = own.getsockname()[1]
        with conn.cursor() as cur:
            cur.execute("select inet_client_port()")
            assert cur.fetchone()[0] == local_port
    finally:
        conn.close()
    # A later intercepted connection's events are a sentinel: the outside
    # one's would have been written before them.
    sentinel = marker("sentinel")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=sentinel))
    assert res.returncode == 0, res.stderr
    agent.wait_for_event(by_app(sentinel), kind="connection_close")
    assert not [e for e in agent.audit_events() if e.get("application_name") == app]


def test_getpeername_in_cgroup_shows_the_real_server(pg, agent, test_cgroup):
    app = marker("peer")
    res = probe(test_cgroup, "127.0.0.1", pg.port, app)
    assert "connect_error" not in res, res
    assert res["peername"] == ["127.0.0.1", pg.port]
    # Still so once the agent has found the connection's origin record.
    assert res["peername_after"] == ["127.0.0.1", pg.port], res
    assert_went_through_agent(res)
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    assert opened["pid"] == res["pid"]
    assert opened["client"] == f"127.0.0.1:{res['sockname'][1]}"


def origin_records(cgroup, name="origin_by_cook"):
    """Entries of the origin_by_cookie map (or another, by the start of its
    name) of the programs on @cgroup."""
    for prog in cgroup.attached_programs():
        info = json.loads(run(["bpftool", "-j", "prog", "show", "id", str(prog["id"])]).stdout)
        for map_id in info.get("map_ids", []):
            m = json.loads(run(["bpftool", "-j", "map", "show", "id", str(map_id)]).stdout)
            if m.get("name", "").startswith(name):
                dump = run(["bpftool", "-j", "map", "dump", "id", str(map_id)]).stdout
                return json.loads(dump or "[]")
    raise AssertionError(f"no {name} map on {cgroup}")


def test_origin_records_are_forgotten_when_connections_close(
        pg, agent, test_cgroup, run_in_cgroup):
    apps = [marker(f"forget{i}") for i in range(5)]
    for app in apps:
        res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
        assert res.returncode == 0, res.stderr
    for app in apps:
        agent.wait_for_event(by_app(app), kind="connection_close")
    # The agent forgets a record when it frees the connection, just after
    # the close event: give it a moment.
    wait_until(lambda: origin_records(test_cgroup) == [], timeout=10, interval=0.1,
               what="origin records to be forgotten")


# Connects to HOST:PORT (a target), disconnects (connect AF_UNSPEC) and
# connects to HOST:OTHER instead, printing getpeername() before and after.
RECONNECT_SRC = r"""
import ctypes, json, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
first = list(s.getpeername())
libc = ctypes.CDLL(None, use_errno=True)
unspec = (ctypes.c_ubyte * 16)()  # sa_family 0: AF_UNSPEC
if libc.connect(s.fileno(), unspec, 16) != 0:
    sys.exit(f"connect(AF_UNSPEC): errno {ctypes.get_errno()}")
s.connect((host, int(sys.argv[3])))
print(json.dumps({"first": first, "peer": list(s.getpeername())}))
"""


# From FROM_ADDR:PORT (0: any) to HOST:TARGET; prints {"port"}, waits for a
# line on stdin, then logs in as APP (unless "-") and prints what came back.
# "listen" as APP instead: a listener on HOST:TARGET, held until stdin ends;
# "again": on the line, resets and connects again from the same port.
CLIENT_SRC = r"""
import json, socket, struct, sys
sys.path.insert(0, sys.argv[1])
import pgwire as w
here, port, host, target, app = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
if app == "listen":
    l = socket.create_server((host, target))
    print(json.dumps({"port": target}), flush=True)
    sys.stdin.read()
    sys.exit(0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((here, port))
s.connect((host, target))
port = s.getsockname()[1]
print(json.dumps({"port": port}), flush=True)
if app == "again":  # on a line: reset, connect again from the same port
    sys.stdin.readline()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((here, port))
    s.connect((host, target))
    print(json.dumps({"again": s.getsockname()[1]}), flush=True)
    sys.stdin.read()
    sys.exit(0)
if sys.stdin.readline() == "" or app == "-":
    sys.stdin.read()
    sys.exit(0)
s.settimeout(20)
s.sendall(w.startup_message({"user": "app", "database": "orders", "application_name": app}))
r, got = w.Reader(s), []
while True:
    try:
        m = r.message()
    except OSError:
        m = None
    if m is None:
        got.append({"type": "eof"})
        break
    got.append(w.describe(*m))
    if m[0] in "ZE":
        break
print(json.dumps({"got": got}), flush=True)
"""
HERE = os.path.dirname(os.path.abspath(__file__))

# From FROM_ADDR (any port) to HOST:TARGET: a startup packet, then a reset.
RESET_FROM_SRC = r"""
import json, socket, struct, sys
sys.path.insert(0, sys.argv[1])
import pgwire as w
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[2], 0))
s.connect((sys.argv[3], int(sys.argv[4])))
s.sendall(w.startup_message({"user": "app", "database": "orders",
                             "application_name": "dead-first"}))
port = s.getsockname()[1]
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print(json.dumps({"port": port}))
"""


class Paused:
    """SIGSTOPs an agent for the block (its loops accept nothing)."""

    def __init__(self, agent):
        self.pid = agent.proc.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc):
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_getpeername_after_reconnecting_elsewhere_shows_the_new_peer(
        pg, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory(heartbeat_timeout_ms=60000)
    other = socket.create_server(("127.0.0.1", 0))
    other_port = other.getsockname()[1]
    try:
        # Paused: the first connection's record stays (nobody forgets it).
        with Paused(agent):
            res = run_in_cgroup(test_cgroup, [PYTHON, "-c", RECONNECT_SRC, "127.0.0.1",
                                              str(pg.port), str(other_port)])
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["first"] == ["127.0.0.1", pg.port], "the first connect was not redirected"
        assert out["peer"] == ["127.0.0.1", other_port]
    finally:
        other.close()


def test_pods_agent_forgets_records_and_tuples_too(
        pg, netns, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}")
    apps = [marker(f"podforget{i}") for i in range(3)]
    for app in apps:
        res = run_in_cgroup(test_cgroup, psql_argv(netns.host_addr, pg.port, application_name=app),
                            netns=netns)
        assert res.returncode == 0, res.stderr
    host = marker("hostforget")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=host))
    assert res.returncode == 0, res.stderr
    for app in [*apps, host]:
        agent.wait_for_event(by_app(app), kind="connection_close")
    wait_until(lambda: origin_records(test_cgroup) == [] and
               origin_records(test_cgroup, "origin_by_tupl") == [],
               timeout=10, interval=0.1, what="records and tuples to be forgotten")


def test_pods_agent_gives_a_reused_port_to_the_live_connection_only(
        pg, netns, agent_factory, test_cgroup, run_in_cgroup, spawn_in_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}",
                          heartbeat_timeout_ms=60000)
    app = marker("reused")
    with Paused(agent):
        # The first connection writes and resets while queued; a second
        # takes its port, so both publish the same 4-tuple, in turn.
        first = run_in_cgroup(test_cgroup, [PYTHON, "-c", RESET_FROM_SRC, HERE, netns.ns_addr,
                                            netns.host_addr, str(pg.port)], netns=netns)
        assert first.returncode == 0, first.stderr
        port = json.loads(first.stdout)["port"]
        second = spawn_in_cgroup(test_cgroup, [PYTHON, "-c", CLIENT_SRC, HERE, netns.ns_addr,
                                               str(port), netns.host_addr, str(pg.port), app],
                                 netns=netns, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert json.loads(second.stdout.readline())["port"] == port
    second.stdin.write("go\n")
    second.stdin.flush()
    got = json.loads(second.stdout.readline())["got"]
    assert got[-1]["type"] == "Z", got
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    assert opened["pid"] == second.pid


@contextlib.contextmanager
def forger_namespace(netns):
    """A namespace of a forger's own, which claims the pod's address and
    the agent's: its redirected connect lands on its own listener, and
    sockops publishes it under the pod connection's exact 4-tuple."""
    forge = f"dbwforge-{os.getpid()}"
    run(["ip", "netns", "add", forge])
    try:
        run(["ip", "-n", forge, "link", "set", "lo", "up"])
        for addr in (netns.host_addr, netns.ns_addr):
            run(["ip", "-n", forge, "addr", "add", f"{addr}/32", "dev", "lo"])
        yield forge
    finally:
        run(["ip", "netns", "del", forge], check=False)


def fill_map(cgroup, name, n):
    """Puts up to @n made-up 36-byte tuple keys in the map @name of the
    programs on @cgroup, in one bpftool run that stops at the first update
    refused (a full hash map); their values are now on the monotonic clock
    (tuple_collided's notes: the agent's sweep keeps them 60 s). Returns
    the map's max_entries."""
    for prog in cgroup.attached_programs():
        info = json.loads(run(["bpftool", "-j", "prog", "show", "id", str(prog["id"])]).stdout)
        for map_id in info.get("map_ids", []):
            m = json.loads(run(["bpftool", "-j", "map", "show", "id", str(map_id)]).stdout)
            if m.get("name", "").startswith(name):
                hexes = lambda b: " ".join(f"{x:02x}" for x in b)  # noqa: E731
                now = time.monotonic_ns().to_bytes(8, "little")
                lines = [f"map update id {map_id} key hex "
                         f"{hexes(bytes(12) + i.to_bytes(4, 'big') + bytes(20))} "
                         f"value hex {hexes(now)} any" for i in range(n)]
                with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
                    f.write("\n".join(lines) + "\n")
                    f.flush()
                    run(["bpftool", "batch", "file", f.name], check=False)
                return m["max_entries"]
    raise AssertionError(f"no {name} map on {cgroup}")


def pods_client(spawn_in_cgroup, cgroup, ns, *args):
    proc = spawn_in_cgroup(cgroup, [PYTHON, "-c", CLIENT_SRC, HERE, *args], netns=ns,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return proc, json.loads(proc.stdout.readline())["port"]


def collide(agent, netns, forge, client, pg_port, pods_port, app, order, again, then=None):
    """With @agent paused: the forger's listener in @forge, then the victim
    (@app) and the forger connect from one address and port, the victim
    first if @order is "after". With @again the forger then resets and
    publishes under the key again; @then() runs last, still paused.
    Returns the victim's and the forger's processes."""
    mode = "again" if again else "-"
    with Paused(agent):
        client(forge, netns.ns_addr, "0", netns.host_addr, str(pods_port), "listen")
        if order == "after":
            victim, port = client(netns, netns.ns_addr, "0", netns.host_addr, str(pg_port), app)
            forger, _ = client(forge, netns.ns_addr, str(port), netns.host_addr, str(pg_port),
                               mode)
        else:
            forger, port = client(forge, netns.ns_addr, "0", netns.host_addr, str(pg_port), mode)
            victim, _ = client(netns, netns.ns_addr, str(port), netns.host_addr, str(pg_port),
                               app)
        if again:
            forger.stdin.write("go\n")
            forger.stdin.flush()
            assert json.loads(forger.stdout.readline()) == {"again": port}
        if then:
            then()
    return victim, forger


def victim_refused(victim):
    victim.stdin.write("go\n")
    victim.stdin.flush()
    got = json.loads(victim.stdout.readline())["got"]
    assert got[0]["type"] == "E" and got[0]["fields"]["C"] == "08004", got


@pytest.mark.parametrize("forger", ["after", "before-and-again"])
def test_pods_agent_refuses_a_tuple_another_namespace_published_too(
        pg, netns, agent_factory, test_cgroup, spawn_in_cgroup, forger):
    pods_port = free_port()
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{pods_port}",
                          heartbeat_timeout_ms=60000)
    with forger_namespace(netns) as forge:
        # "before-and-again": first, so the victim finds its key taken;
        # then the forger resets (its retract drops its entry) and
        # publishes again.
        victim, forger = collide(
            agent, netns, forge,
            lambda ns, *args: pods_client(spawn_in_cgroup, test_cgroup, ns, *args),
            pg.port, pods_port, marker("victim"),
            "after" if forger == "after" else "before", forger != "after")
        victim_refused(victim)
        wait_until(lambda: "reached the agent from the same address and port" in agent.output(), 10,
                   what="the agent's log of the collision")
        assert not [e for e in agent.audit_events("connection_open")
                    if e.get("pid") == forger.pid], "the forger was given the victim's connection"


def test_pods_agent_keeps_its_note_of_a_forged_tuple_through_a_flood_of_notes(
        pg, netns, agent_factory, test_cgroup, spawn_in_cgroup):
    """The forger publishes first, the victim's socket notes the key; then
    the notes map is filled to the brim. An LRU map would push the note
    out, and the victim's connection would be given the forger's record."""
    pods_port = free_port()
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{pods_port}",
                          heartbeat_timeout_ms=60000)

    def flood():
        assert len(origin_records(test_cgroup, "tuple_collided")) == 1
        fill_map(test_cgroup, "tuple_collided", 2 * 8192)
        # Flooded (an LRU map pushes some out as it goes: ~8065 of 8192).
        assert len(origin_records(test_cgroup, "tuple_collided")) > 8000

    with forger_namespace(netns) as forge:
        victim, forger = collide(
            agent, netns, forge,
            lambda ns, *args: pods_client(spawn_in_cgroup, test_cgroup, ns, *args),
            pg.port, pods_port, marker("flooded"), "before", False, flood)
        victim_refused(victim)
        wait_until(lambda: "reached the agent from the same address and port" in agent.output(),
                   10, what="the agent's log of the collision")
        assert not [e for e in agent.audit_events("connection_open")
                    if e.get("pid") == forger.pid], "the forger was given the victim's connection"


@pytest.mark.parametrize("forger", ["after", "before"])
def test_pods_agent_refuses_a_forged_tuple_with_no_room_left_to_note_it(
        pg, netns, agent_factory, test_cgroup, spawn_in_cgroup, forger):
    """With the notes full, a collision cannot be noted: the key's entry is
    deleted, and since its forger could publish under it again (it does,
    here), the agent trusts no address for a while: the victim is refused,
    never attributed to the forger."""
    pods_port = free_port()
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{pods_port}",
                          heartbeat_timeout_ms=60000)
    full = fill_map(test_cgroup, "tuple_collided", 8192)
    assert len(origin_records(test_cgroup, "tuple_collided")) == full == 8192
    with forger_namespace(netns) as forge:
        victim, forger = collide(
            agent, netns, forge,
            lambda ns, *args: pods_client(spawn_in_cgroup, test_cgroup, ns, *args),
            pg.port, pods_port, marker("unnoted"), forger, True)
        victim_refused(victim)
        wait_until(lambda: "so no address is trusted" in agent.output(), 10,
                   what="the agent's log of the refusal")
        assert not [e for e in agent.audit_events("connection_open")
                    if e.get("pid") in (forger.pid, victim.pid)], "a forged key was trusted"
        os.kill(agent.proc.pid, signal.SIGUSR1)
        wait_until(lambda: re.search(r"\b1 not noted: their key's entry dropped",
                                     agent.output()), 10,
                   what="the agent's count of the collision it could not note")


def test_a_pods_own_loopback_on_the_listen_port_does_not_touch_host_connections(
        pg, netns, agent_factory, test_cgroup, spawn_in_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}")
    _, listen_port = agent.listen
    # Loopback exists in every namespace: a pod may use 127.0.0.1 and the
    # agent's listen port for something of its own.
    for args in (("127.0.0.1", "0", "127.0.0.1", str(listen_port), "listen"),
                 ("127.0.0.1", "0", "127.0.0.1", str(listen_port), "-")):
        proc = spawn_in_cgroup(test_cgroup, [PYTHON, "-c", CLIENT_SRC, HERE, *args], netns=netns,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        port = json.loads(proc.stdout.readline())["port"]
    assert origin_records(test_cgroup, "tuple_collided") == []
    # A host connection from the same port is found by cookie, as ever.
    app = marker("hostsameport")
    host = spawn_in_cgroup(test_cgroup, [PYTHON, "-c", CLIENT_SRC, HERE, "127.0.0.1", str(port),
                                         "127.0.0.1", str(pg.port), app],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert json.loads(host.stdout.readline())["port"] == port
    host.stdin.write("go\n")
    host.stdin.flush()
    got = json.loads(host.stdout.readline())["got"]
    assert got[-1]["type"] == "Z", got
    assert agent.wait_for_event(by_app(app), kind="connection_open")["pid"] == host.pid


def test_pods_agent_programs_forget_a_connection_reset_before_accept(
        pg, netns, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}",
                          heartbeat_timeout_ms=60000)
    # Paused, the agent neither takes the tuple entry nor forgets the
    # record: what goes, the programs dropped at the workload's TCP close.
    with Paused(agent):
        res = run_in_cgroup(test_cgroup, [PYTHON, "-c", RESET_FROM_SRC, HERE, netns.ns_addr,
                                          netns.host_addr, str(pg.port)], netns=netns)
        assert res.returncode == 0, res.stderr
        assert origin_records(test_cgroup) == []
        assert origin_records(test_cgroup, "origin_by_tupl") == []
    wait_until(lambda: "no origin record" in agent.output(), 10,
               what="the agent to refuse the dead connection")


def test_ipv6_psql_in_cgroup_is_intercepted(pg, agent, test_cgroup, run_in_cgroup):
    app = marker("v6")
    res = run_in_cgroup(test_cgroup, psql_argv("::1", pg.port, application_name=app,
                                               sql="select inet_client_addr()"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "::1"
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    assert opened["pid"] == res.pid
    assert opened["server"] == f"[::1]:{pg.port}"
    assert opened["client"].startswith("[::1]:")


def test_ipv6_getpeername_shows_the_real_server(pg, agent, test_cgroup):
    app = marker("v6peer")
    res = probe(test_cgroup, "::1", pg.port, app)
    assert "connect_error" not in res, res
    assert res["peername"] == ["::1", pg.port]
    assert res["peername_after"] == ["::1", pg.port], res
    assert_went_through_agent(res)
    agent.wait_for_event(by_app(app), kind="connection_open")


def test_dual_stack_socket_to_v4_mapped_address_is_intercepted(pg, agent, test_cgroup):
    app = marker("mapped")
    res = wire_client(test_cgroup, {"host": "::ffff:127.0.0.1", "port": pg.port,
                                    "family": "inet6", "v6only": 0,
                                    "startup": startup(app),
                                    "queries": ["select inet_client_port()"]})
    assert "connect_error" not in res, res
    assert res["messages"][0] == {"type": "R", "auth": 0}, res
    assert res["peername"] == ["::ffff:127.0.0.1", pg.port]
    assert_went_through_agent(res)
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    assert opened["pid"] == res["pid"]
    assert opened["server"] in (f"127.0.0.1:{pg.port}", f"[::ffff:127.0.0.1]:{pg.port}")


def test_client_in_own_netns_is_intercepted_via_pod_address(
        pg, netns, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}")
    pod_app, host_app = marker("pod"), marker("host")
    res = run_in_cgroup(test_cgroup, psql_argv(netns.host_addr, pg.port, application_name=pod_app,
                                               sql="select current_user"),
                        netns=netns)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "app"
    host = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=host_app))
    assert host.returncode == 0, host.stderr

    pod_event = agent.wait_for_event(by_app(pod_app), kind="connection_open")
    host_event = agent.wait_for_event(by_app(host_app), kind="connection_open")
    assert pod_event["pid"] == res.pid
    assert host_event["pid"] == host.pid
    assert pod_event["client"].startswith(f"{netns.ns_addr}:")
    assert pod_event["server"] == f"{netns.host_addr}:{pg.port}"
    assert pod_event["netns_cookie"] is not None
    assert host_event["netns_cookie"] is not None
    assert pod_event["netns_cookie"] != host_event["netns_cookie"]


def test_getpeername_in_own_netns_shows_the_real_server(pg, netns, agent_factory, test_cgroup):
    agent = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}")
    app = marker("podpeer")
    res = probe(test_cgroup, netns.host_addr, pg.port, app, netns=netns)
    assert "connect_error" not in res, res
    assert res["peername"] == [netns.host_addr, pg.port]
    assert res["peername_after"] == [netns.host_addr, pg.port], res
    assert_went_through_agent(res)
    agent.wait_for_event(by_app(app), kind="connection_open")


def test_agent_upstream_is_not_reintercepted(pg, agent_factory, test_cgroup, run_in_cgroup):
    agent = agent_factory(in_cgroup=True)
    assert agent.pid in test_cgroup.pids()
    app = marker("noloop")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app,
                                               sql="select current_user"))
    assert res.returncode == 0, res.stderr
    opened = agent.wait_for_event(by_app(app), kind="connection_open")
    agent.wait_for_event(lambda e: e["session_id"] == opened["session_id"],
                         kind="connection_close")
    opens = agent.audit_events("connection_open")
    assert [e["pid"] for e in opens if e.get("application_name") == app] == [res.pid]
    assert not [e for e in opens if e.get("pid") == agent.pid]

    # The programs' counters say so too (SIGUSR1: docs/operations.md).
    agent.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: "interception:" in agent.output(), 10, what="the interception counters")
    line = [ln for ln in agent.output().splitlines() if "interception:" in ln][-1]
    counts = {k: int(v) for v, k in re.findall(
        r"(\d+) (connects redirected|of the agent's own skipped|refused|let through)", line)}
    assert len(counts) == 4, line
    assert counts["connects redirected"] >= 1, line
    assert counts["of the agent's own skipped"] >= 1, line
    assert counts["refused"] == 0 and counts["let through"] == 0, line


# bpftool spells attach types either way, depending on its version.
HOOKS = {
    "connect4": {"connect4", "cgroup_inet4_connect"},
    "connect6": {"connect6", "cgroup_inet6_connect"},
    "getpeername4": {"getpeername4", "cgroup_inet4_getpeername"},
    "getpeername6": {"getpeername6", "cgroup_inet6_getpeername"},
}
SOCKOPS = {"sock_ops", "cgroup_sock_ops"}


def attached_types(cgroup):
    return {p["attach_type"] for p in cgroup.attached_programs()}


def test_agent_attaches_to_the_test_cgroup_only(agent, test_cgroup):
    programs = test_cgroup.attached_programs()
    types = {p["attach_type"] for p in programs}
    missing = [hook for hook, names in HOOKS.items() if not names & types]
    assert not missing, f"not attached: {missing}; attached: {programs}"
    # Without listen_pods the agent finds origins by socket cookie: no
    # program runs on every TCP event of the cgroup's sockets.
    assert not SOCKOPS & types, programs
    root = run(["bpftool", "-j", "cgroup", "show", str(test_cgroup.root)]).stdout.strip()
    at_root = {p["id"] for p in json.loads(root or "[]")}
    assert not at_root & {p["id"] for p in programs}, root


def test_pods_agent_attaches_sockops_and_a_host_agent_detaches_it(
        pg, netns, agent_factory, test_cgroup, run_in_cgroup, bpffs, tmp_path):
    pods = agent_factory(listen_pods=f"{netns.host_addr}:{free_port()}")
    assert SOCKOPS & attached_types(test_cgroup), test_cgroup.attached_programs()
    pods.kill9()  # its links stay pinned, sockops among them
    assert any(p.endswith("/sockops") for p in bpffs.pins()), bpffs.pins()

    config = copy.deepcopy(pods.config)
    del config["listen_pods"]
    config["audit"]["file"] = str(tmp_path / "audit-host.jsonl")
    host = agent_factory(config=config)
    assert not SOCKOPS & attached_types(test_cgroup), test_cgroup.attached_programs()
    assert not any(p.endswith("/sockops") for p in bpffs.pins()), bpffs.pins()
    app = marker("after-pods")
    res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port, application_name=app))
    assert res.returncode == 0, res.stderr
    assert host.wait_for_event(by_app(app), kind="connection_open")["pid"] == res.pid


def test_sigterm_detaches_and_connections_go_direct(pg, agent, test_cgroup):
    agent.stop()
    assert not test_cgroup.attached_programs(), test_cgroup.attached_programs()
    assert_went_direct(probe(test_cgroup, "127.0.0.1", pg.port, marker("after-stop")))


def test_sigint_detaches_and_connections_go_direct(pg, agent, test_cgroup):
    agent.stop(signal.SIGINT)
    assert not test_cgroup.attached_programs(), test_cgroup.attached_programs()
    assert_went_direct(probe(test_cgroup, "127.0.0.1", pg.port, marker("after-int")))


def test_clean_stop_leaves_no_pins(agent, bpffs):
    assert bpffs.pins(), "the running agent pinned nothing in pin_dir"
    agent.stop()
    assert not bpffs.pins(), bpffs.pins()
