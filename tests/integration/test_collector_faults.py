"""
Faults on the audit path: garbage from a certified peer, and a spool whose
disk fills while the collector is away. Neither may lose an event or take
anything else down.
"""

import hashlib
import json
import os
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from collector_env import agent_collector_overrides, chain_ok
from dbward_env import PYTHON, marker, psql_argv, run, wait_until


# --- a hand-rolled peer: protobuf and framing by the book -------------------


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def event_bytes(agent_id, epoch, seq):
    return (pb_field(1, agent_id) + pb_field(2, epoch) + pb_field(3, seq) + pb_field(4, 1)
            + pb_field(5, b"\0" * 32) + pb_field(12, pb_field(1, "select 'forged'")))


def batch_bytes(events):
    return b"".join(pb_field(1, e) for e in events)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


def frame(kind, payload):
    return struct.pack(">I", len(payload) + 1) + kind + payload


def parse_ack(payload):
    """{field number: value} of a flat protobuf message."""
    fields, i = {}, 0
    while i < len(payload):
        key, i = _read_varint(payload, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields[number], i = _read_varint(payload, i)
        elif wire == 2:
            n, i = _read_varint(payload, i)
            fields[number], i = payload[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire} in an Ack")
    return fields


def _read_varint(b, i):
    shift = value = 0
    while True:
        value |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not b[i - 1] & 0x80:
            return value, i


class Peer:
    """A TLS client with a certificate the collector's CA issued."""

    def __init__(self, collector, pki, name="agent-1"):
        cert, key = pki.issue(name)
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(cert), str(key))
        host, port = collector.ingest.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)

    def send(self, data):
        self.sock.sendall(data)

    def ack(self):
        """The next Ack as {field: value}, or None when the collector closed."""
        head = self._read(5)
        if head is None:
            return None
        length, kind = struct.unpack(">IB", head)
        assert kind == ord("A"), head
        return parse_ack(self._read(length - 1) or b"")

    def _read(self, n):
        try:
            return _read_exact(self.sock, n)
        except (ssl.SSLError, ConnectionResetError):
            return None

    def close(self):
        self.sock.close()


REFUSALS = {
    "not zstd": lambda: frame(b"B", b"certainly not zstd"),
    "zstd of garbage": lambda: frame(b"B", zstd(os.urandom(64) + b"\xff" * 200)),
    "truncated zstd": lambda: frame(b"B", zstd(batch_bytes([event_bytes("agent-1", 1, 1)]))[:-6]),
    "another agent's event": lambda: frame(b"B", zstd(batch_bytes(
        [event_bytes("agent-2", 1, 1)]))),
    "two epochs in one batch": lambda: frame(b"B", zstd(batch_bytes(
        [event_bytes("agent-1", 1, 1), event_bytes("agent-1", 2, 1)]))),
    "an event that is not an Event": lambda: frame(b"B", zstd(batch_bytes([b"\xff\xff\xff"]))),
    "an event with an unknown field": lambda: frame(b"B", zstd(batch_bytes(
        [event_bytes("agent-1", 1, 1) + pb_field(99, 1)]))),
    "an agent_id with a NUL inside": lambda: frame(b"B", zstd(batch_bytes(
        [event_bytes("agent-1\0evil", 1, 1)]))),
}


@pytest.mark.parametrize("what", sorted(REFUSALS))
def test_garbage_batches_are_refused_and_nothing_is_stored(pki, collector_factory, tmp_path,
                                                           what):
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    peer = Peer(collector, pki)
    peer.send(REFUSALS[what]())
    ack = peer.ack()
    peer.close()
    assert ack is not None and not ack.get(1), f"refused with an Ack: {ack}"
    assert ack.get(2), "the Ack says why"
    assert collector.events() == []
    wait_until(lambda: "refused" in collector.output(), 10, what="the refusal in the log")

    # The collector carries on: a well-formed batch from the same peer is taken.
    peer = Peer(collector, pki)
    peer.send(frame(b"B", zstd(batch_bytes([event_bytes("agent-1", 7, 1)]))))
    ack = peer.ack()
    peer.close()
    assert ack.get(1) == 1 and ack.get(4) == 1, ack
    assert [e["sql"] for e in collector.events()] == ["select 'forged'"]


@pytest.mark.parametrize("what", ["oversized frame", "unknown frame type", "cut mid-frame"])
def test_bad_framing_closes_only_that_connection(pki, collector_factory, tmp_path, what):
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    bystander = Peer(collector, pki, "agent-2")
    peer = Peer(collector, pki)
    if what == "oversized frame":
        peer.send(struct.pack(">IB", 0x7FFFFFF0, ord("B")) + b"x" * 100)
    elif what == "unknown frame type":
        peer.send(struct.pack(">IB", 3, ord("Z")) + b"hi")
    else:
        peer.send(struct.pack(">IB", 1000, ord("B")) + b"only this much")
        # Past the TLS layer: only the transport half-closes, mid-frame.
        socket.socket.shutdown(peer.sock, socket.SHUT_WR)
    ack = peer.ack()
    assert ack is None or not ack.get(1)
    assert peer.ack() is None, "the collector closed the connection"
    peer.close()

    bystander.send(frame(b"B", zstd(batch_bytes([event_bytes("agent-2", 1, 1)]))))
    assert bystander.ack().get(1) == 1, "another agent's connection was unaffected"
    bystander.close()
    assert collector.running


# --- a spool on a full disk -----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 384 KiB tmpfs: room for some hundreds of events, then ENOSPC."""
    path = tmp_path / "small-disk"
    path.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=384k,mode=0700", "tmpfs", str(path)])
    try:
        yield path
    finally:
        run(["umount", "-l", str(path)], check=False)


FILL_SRC = r"""
import json, sys
import psycopg2
port, app, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = psycopg2.connect(host="127.0.0.1", port=port, user="app", dbname="orders",
                        application_name=app, connect_timeout=5)
conn.autocommit = True
done, refusal = 0, None
for n in range(1, limit + 1):
    try:
        with conn.cursor() as cur:
            cur.execute(f"select {n} as filling, repeat('x', 200)")
            cur.fetchall()
        done = n
    except psycopg2.Error as e:
        refusal = {"n": n, "sqlstate": e.pgcode, "message": str(e)}
        break
print(json.dumps({"done": done, "refusal": refusal}))
"""


# A raw-protocol client held open across the fill: it prepared a statement
# and bound a portal before the spool filled, and reuses them after.
PREPARED_SRC = r"""
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import pgwire as w

port, app = int(sys.argv[2]), sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port), timeout=30)
reader = w.Reader(sock)


def until_ready():
    got = []
    while True:
        m = reader.message()
        if m is None:
            return got + [{"type": "eof"}]
        got.append(w.describe(*m))
        if m[0] == "Z":
            return got


def send(*msgs):
    sock.sendall(b"".join(msgs))
    return until_ready()


out = {"startup": send(w.startup_message({"user": "app", "database": "orders",
                                          "application_name": app}))}
out["ran"] = send(w.parse_message("select $1::int + 1 as filling_prepared", "s1"),
                  w.bind_message([1], "s1"), w.execute_message(), w.sync_message())
out["begin"] = send(w.query_message("begin"))
out["bound"] = send(w.bind_message([2], "s1", "p1"), w.sync_message())
print(json.dumps(out), flush=True)
sys.stdin.readline()  # the spool is full now
out = {"execute": send(w.execute_message("p1"), w.sync_message()),
       "bind": send(w.bind_message([3], "s1"), w.execute_message(), w.sync_message()),
       "function": send(w.function_call_message(177, [1, 2])),  # int4pl
       "query": send(w.query_message("select 4 as filling_query"))}
print(json.dumps(out), flush=True)
"""


def _refused_then_ready(messages, first):
    types = [m["type"] for m in messages]
    assert types[-1] == "Z" and "E" in types, messages
    err = next(m["fields"] for m in messages if m["type"] == "E")
    if first:
        assert err["C"] == "53100" and "spool full" in err["M"], messages
    else:  # the first refusal aborted the transaction: the stand-in says so
        assert err["C"] in ("53100", "25P02"), messages
    assert not any(t in types for t in ("D", "C", "V", "2")), "nothing ran: " + str(messages)


# A CancelRequest for a backend that does not exist; prints what came back.
CANCEL_SRC = r"""
import json, socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(struct.pack("!IIII", 16, 80877102, 12345, 67890))
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(json.dumps({"reply": data.decode("latin-1")}))
"""


def test_full_spool_refuses_statements_loses_nothing_and_recovers(
        pg, pki, collector_factory, agent_factory, test_cgroup, run_in_cgroup, spawn_in_cgroup,
        small_disk, tmp_path):
    from collector_env import Collector, collector_config
    # The collector exists in the config but is not running yet.
    cfg = collector_config(tmp_path, pki, f"sqlite:{tmp_path / 'audit.db'}")
    absent = Collector(cfg, tmp_path, "absent")
    agent = agent_factory(**agent_collector_overrides(pki, absent, small_disk / "spool"))

    app = marker("fill")
    held = spawn_in_cgroup(test_cgroup, [PYTHON, "-c", PREPARED_SRC,
                                         os.path.dirname(os.path.abspath(__file__)),
                                         str(pg.port), app + "-prepared"],
                           stdin=subprocess.PIPE)
    before = json.loads(held.stdout.readline())
    assert [m["type"] for m in before["ran"]] == ["1", "2", "D", "C", "Z"], before
    assert before["bound"][-1]["type"] == "Z" and before["bound"][-1]["status"] == "T", before

    res = run_in_cgroup(test_cgroup, [PYTHON, "-c", FILL_SRC, str(pg.port), app, "20000"],
                        timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["refusal"] is not None, "the spool never filled up"
    # The statement whose event found the spool full ran, but its answer
    # never reached the client: the connection was closed with FATAL 53100
    # (libpq may report that as a lost connection). Or a later one was refused.
    waited = out["refusal"]["sqlstate"] != "53100"
    if waited:
        # Logged as the connection ends, which may be after the client saw it.
        wait_until(lambda: "its audit event is not yet on disk" in agent.output(), 10,
                   what=f"the agent's log of the withheld answer ({out['refusal']})")
    else:
        assert "spool full" in out["refusal"]["message"]
    wait_until(lambda: "spool full" in agent.output(), 10, what="the agent's spool-full log")

    # A CancelRequest still goes through (it only stops work): the server
    # closes it without a word, where a refusal would be FATAL 53100.
    cancel = run_in_cgroup(test_cgroup, [PYTHON, "-c", CANCEL_SRC, str(pg.port)], timeout=30)
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout) == {"reply": ""}, cancel.stdout

    # Reusing a prepared statement or a bound portal is refused too, and
    # the protocol goes on: ErrorResponse, then ReadyForQuery.
    held.stdin.write("go\n")
    held.stdin.flush()
    after = json.loads(held.stdout.readline())
    for what in ("execute", "bind", "function", "query"):
        _refused_then_ready(after[what], what == "execute")

    # The collector comes up: the spool drains, statements run again.
    collector = collector_factory(cfg["storage"], listen=cfg["listen"], http=cfg["http"],
                                  signing_key=cfg["signing_key"])
    wait_until(lambda: "room again" in agent.output(), 60, what="the spool to drain")
    again = run_in_cgroup(test_cgroup, [PYTHON, "-c", FILL_SRC, str(pg.port), app, "5"],
                          timeout=60)
    assert json.loads(again.stdout) == {"done": 5, "refusal": None}

    # Every statement that ran is in the ledger (the one whose answer was
    # withheld too), the refused ones too, no gaps.
    ran = out["done"] + 5 + 1 + (1 if waited else 0)
    events = collector.wait_for(
        lambda evs: sum(1 for e in evs if e.get("sqlstate") is None) >= ran,
        timeout=60, what="every statement that ran", kind="statement", q="as filling")
    assert sum(1 for e in events if e.get("sqlstate") is None) == ran
    refused = [e for e in events if e.get("rule") == "spool_full"]
    assert len(refused) >= 3, "the refused Execute, Bind and Query are recorded"
    assert all(e.get("verdict") == "deny" for e in refused), refused
    assert sum(1 for e in refused if "filling_prepared" in (e.get("sql") or "")) >= 2
    assert chain_ok(collector.events())


# --- memory, connection and Host bounds -----------------------------------------


def _peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_event_of_a_million_empty_tables_is_refused_within_its_memory_budget(
        pki, collector_factory, tmp_path):
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    before = _peak_rss_kib(collector.proc.pid)
    # Statement.tables (field 4) = "" a million times: 2 MB that protobuf-c
    # would unpack into ~40 MB of pointers and one-byte strings.
    statement = pb_field(1, "select 1") + b"\x22\x00" * 1_000_000
    event = (pb_field(1, "agent-1") + pb_field(2, 1) + pb_field(3, 1) + pb_field(4, 1)
             + pb_field(12, statement))
    peer = Peer(collector, pki)
    peer.send(frame(b"B", zstd(batch_bytes([event]))))
    ack = peer.ack()
    peer.close()
    assert ack is not None and not ack.get(1), ack
    assert b"cannot be decoded within its memory budget" in ack.get(2, b""), ack
    assert collector.events() == []
    grown = _peak_rss_kib(collector.proc.pid) - before
    assert grown < 64 * 1024, f"peak RSS grew by {grown} KiB"


def test_anonymous_connections_cannot_take_every_handshake_slot(pki, collector_factory,
                                                                tmp_path):
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    host, port = collector.ingest.rsplit(":", 1)
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(8)]
    try:
        extra = socket.create_connection((host, int(port)), timeout=5)
        extra.settimeout(5)
        try:
            assert extra.recv(1) == b"", "the ninth handshake from one address is closed"
        except ConnectionResetError:
            pass
        extra.close()
        wait_until(lambda: "closed at accept" in collector.output(), 10,
                   what="the collector's log line for the refused connection")
    finally:
        for s in held:
            s.close()
    # The slots come back when the probes go: an agent gets in.
    wait_until(lambda: _agent_gets_in(collector, pki), timeout=10,
               what="an agent connection after the probes closed")


def _agent_gets_in(collector, pki):
    try:
        peer = Peer(collector, pki)
    except (ssl.SSLError, ConnectionError, OSError):
        return False
    peer.send(frame(b"B", zstd(batch_bytes([event_bytes("agent-1", 1, 1)]))))
    ack = peer.ack()
    peer.close()
    return ack is not None and ack.get(1) == 1


@pytest.mark.parametrize("host,status", [("evil.example", 403), ("evil.example:7080", 403),
                                         ("127.0.0.1", 200), ("localhost:1", 200)])
def test_the_api_answers_only_ip_literals_and_localhost_as_host(collector_factory, tmp_path,
                                                                host, status):
    import http.client
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    addr, port = collector.config["http"].rsplit(":", 1)
    conn = http.client.HTTPConnection(addr, int(port), timeout=10)
    conn.putrequest("GET", "/api/v1/agents", skip_host=True)
    conn.putheader("Host", host)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == status, body


# --- a collector that says "ok" and stores nothing --------------------------


class NothingStored:
    """A TLS peer with the collector's certificate that answers every batch
    with ok = true, the agent's epoch and acked_seq 0: "stored nothing".
    Keeps the time of each batch it got."""

    def __init__(self, pki, spool):
        cert, key = pki.issue("collector")
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
        self.ctx.load_cert_chain(str(cert), str(key))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.ingest = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.spool = spool
        self.batches = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _epoch(self):
        meta = (self.spool / "meta").read_text()
        return int(next(line.split()[1] for line in meta.splitlines()
                        if line.startswith("epoch ")))

    def _serve(self):
        self.listener.settimeout(0.2)
        while not self.stopping:
            try:
                raw, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self._answer(conn)
            except (ssl.SSLError, OSError):
                pass

    def _answer(self, conn):
        conn.settimeout(0.5)
        while not self.stopping:
            try:
                head = _read_exact(conn, 5)
            except socket.timeout:
                continue
            if head is None:
                return
            length, kind = struct.unpack(">IB", head)
            if _read_exact(conn, length - 1) is None or kind != ord("B"):
                return
            self.batches.append(time.monotonic())
            ack = pb_field(1, 1) + pb_field(3, self._epoch()) + pb_field(4, 0)
            conn.sendall(frame(b"A", ack))

    def stop(self):
        self.stopping = True
        self.thread.join(10)
        self.listener.close()


def _read_exact(conn, n):
    """@n bytes from @conn, or None when it closes first."""
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def test_a_collector_that_stores_nothing_gets_the_batch_again_only_after_a_backoff(
        pg, pki, agent_factory, test_cgroup, run_in_cgroup, tmp_path):
    spool = tmp_path / "spool"
    fake = NothingStored(pki, spool)
    try:
        overrides = agent_collector_overrides(pki, fake, spool)
        overrides["collector"]["batch_max_events"] = 2  # a full batch always waits
        agent = agent_factory(**overrides)
        for i in range(3):
            res = run_in_cgroup(test_cgroup, psql_argv("127.0.0.1", pg.port,
                                                       application_name=marker(f"nothing{i}")))
            assert res.returncode == 0, res.stderr
        wait_until(lambda: fake.batches, 10, what="a first batch")
        time.sleep(3)
        got = list(fake.batches)
    finally:
        fake.stop()
    # The backoff starts at 100 ms and doubles: about 5 tries in 3 s. Without
    # it, a full batch waiting sent it again after every round trip.
    assert len(got) <= 12, f"{len(got)} batches in {got[-1] - got[0]:.1f} s"
    assert agent.running


# --- a schema-2 database upgraded on a disk without room -------------------------

# What a schema-2 database looked like, made from a schema-4 one (as
# tests/unit/test_store.c's downgrade_to_schema_2 does).
SCHEMA2_COLUMNS = ["session_id", "pid", "comm", "user_name", "pod_uid", "pod_name",
                   "pod_namespace", "db_user", "database"]


def unzstd(data):
    return subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True,
                          check=True).stdout


def downgrade_to_schema_3(db):
    """Each event's bytes back in its row (events.raw), no payloads, and no
    sessions tables (schema 5)."""
    import sqlite3
    ph = "?" if isinstance(db, sqlite3.Connection) else "%s"
    cur = db.cursor()
    cur.execute("select id, data from payloads")
    for payload, data in cur.fetchall():
        plain = unzstd(bytes(data))
        cur.execute(f"select id, payload_off, payload_len from events where payload = {ph}",
                    (payload,))
        for event, off, n in cur.fetchall():
            blob = plain[off:off + n]
            cur.execute(f"update events set raw_inline = {ph}, payload = null where id = {ph}",
                        (blob if ph == "?" else bytes(blob), event))
    for statement in ["drop table sessions", "drop table sessions_counted",
                      "alter table events rename column raw_inline to raw",
                      "alter table events drop column payload",
                      "alter table events drop column payload_off",
                      "alter table events drop column payload_len", "drop table payloads"]:
        cur.execute(statement)


def downgrade_to_schema_2(db):
    """@db: an open DB-API connection (sqlite3 or psycopg2) to a schema-5 store."""
    downgrade_to_schema_3(db)
    cur = db.cursor()
    for col in SCHEMA2_COLUMNS:
        cur.execute(f"alter table events add column {col} {'bigint' if col == 'pid' else 'text'}")
        absent = "-1" if col == "pid" else "''"
        cur.execute(f"update events set {col} = (select nullif(o.{col}, {absent}) from origins o "
                    "where o.id = events.origin)")
    for statement in ["drop index events_origin", "alter table events drop column origin",
                      "drop table origins", "create index events_session on events (session_id)",
                      "create index events_pid on events (pid)"]:
        cur.execute(statement)
    db.commit()
    db.close()


def is_schema_2(path):
    import sqlite3
    db = sqlite3.connect(path)
    try:
        cols = {row[1] for row in db.execute("pragma table_info(events)")}
        ok = db.execute("pragma integrity_check").fetchone()[0]
    finally:
        db.close()
    return "session_id" in cols and "origin" not in cols and ok == "ok"


def test_a_schema_2_upgrade_without_room_changes_no_event_and_says_so(pki, collector_factory,
                                                                      tmp_path):
    from collector_env import Collector, collector_config
    db = tmp_path / "audit.db"
    collector = collector_factory(f"sqlite:{db}")
    peer = Peer(collector, pki)
    prev = b"\0" * 32
    for first in range(1, 3001, 500):
        events = []
        for seq in range(first, first + 500):
            events.append(pb_field(1, "agent-1") + pb_field(2, 1) + pb_field(3, seq)
                          + pb_field(4, seq) + pb_field(5, prev)
                          + pb_field(12, pb_field(1, f"select {seq}, '{'x' * 400}'")))
            prev = hashlib.sha256(events[-1]).digest()
        peer.send(frame(b"B", zstd(batch_bytes(events))))
        ack = peer.ack()
        assert ack.get(1) == 1 and ack.get(4) == first + 499, ack
    peer.close()
    collector.stop()
    import sqlite3
    downgrade_to_schema_2(sqlite3.connect(str(db)))
    assert is_schema_2(str(db))

    # Room for the database and a little more, not for a second copy of
    # its events (the upgrade rewrites every row in one transaction).
    disk = tmp_path / "tight-disk"
    disk.mkdir()
    size = (os.path.getsize(db) + 256 * 1024 + 4095) // 4096 * 4096
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(disk)])
    try:
        run(["cp", str(db), str(disk / "audit.db")])
        tight = Collector(collector_config(tmp_path, pki, f"sqlite:{disk / 'audit.db'}",
                                           "tight"), tmp_path, "tight")
        tight.start(wait=False)
        tight.proc.wait(60)
        tight._reap()
        out = tight.output()
        assert tight.returncode not in (0, 86), out
        assert "upgrading the database from schema 2: " in out and "disk is full" in out, out
        assert is_schema_2(str(disk / "audit.db")), "the events are as they were"
        for f in disk.iterdir():
            run(["cp", str(f), str(tmp_path / ("roomy" + f.name[len("audit"):]))])
    finally:
        run(["umount", "-l", str(disk)], check=False)

    # With room, the same file upgrades and every event is there, verified.
    roomy = collector_factory(f"sqlite:{tmp_path / 'roomy.db'}")
    assert "upgraded to schema 5" in roomy.output()
    assert [e["seq"] for e in roomy.events()] == list(range(1, 3001))
    status, body = roomy.get("verify")
    assert status == 200 and body["ok"] is True, body


def test_two_replicas_starting_together_upgrade_a_schema_2_database_once(pki, pg,
                                                                        collector_factory):
    """On PostgreSQL the upgrade runs under the ledger lock: whichever
    replica comes second waits, finds the work done (or its ALTER fails and
    it looks again) and starts too."""
    import psycopg2
    name = f"dbward_upgrade_{os.getpid()}"
    pg.sql(f"create database {name}")
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/{name}"
    first = collector_factory(url)
    peer = Peer(first, pki)
    prev = b"\0" * 32
    events = []
    for seq in range(1, 201):
        events.append(pb_field(1, "agent-1") + pb_field(2, 1) + pb_field(3, seq) + pb_field(4, seq)
                      + pb_field(5, prev) + pb_field(6, pb_field(1, f"s-{seq % 7}"))
                      + pb_field(12, pb_field(1, f"select {seq}")))
        prev = hashlib.sha256(events[-1]).digest()
    peer.send(frame(b"B", zstd(batch_bytes(events))))
    ack = peer.ack()
    assert ack.get(1) == 1 and ack.get(4) == 200, ack
    peer.close()
    first.stop()
    downgrade_to_schema_2(psycopg2.connect(url))

    a = collector_factory(url, wait=False)
    b = collector_factory(url, wait=False)
    a.wait_ready(60)
    b.wait_ready(60)
    logs = a.output() + b.output()
    assert logs.count("upgraded to schema 5") == 1, logs
    assert [e["seq"] for e in a.events()] == list(range(1, 201))
    assert {e["session_id"] for e in b.events(session="s-3")} == {"s-3"}
    assert len(b.events(session="s-3")) == len([s for s in range(1, 201) if s % 7 == 3])
    for c in (a, b):
        status, body = c.get("verify")
        assert status == 200 and body["ok"] is True, body
