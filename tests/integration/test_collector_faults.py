"""
Faults on the audit path: garbage from a certified peer, and a spool whose
disk fills while the collector is away. Neither may lose an event or take
anything else down.
"""

import json
import os
import socket
import ssl
import struct
import subprocess

import pytest

from collector_env import agent_collector_overrides, chain_ok
from dbward_env import PYTHON, marker, run, wait_until


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
        data = b""
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ssl.SSLError, ConnectionResetError):
                return None
            if not chunk:
                return None
            data += chunk
        return data

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
    assert "refused" in collector.output()

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


def test_full_spool_refuses_statements_loses_nothing_and_recovers(
        pg, pki, collector_factory, agent_factory, test_cgroup, run_in_cgroup, small_disk,
        tmp_path):
    from collector_env import Collector, collector_config
    # The collector exists in the config but is not running yet.
    cfg = collector_config(tmp_path, pki, f"sqlite:{tmp_path / 'audit.db'}")
    absent = Collector(cfg, tmp_path, "absent")
    agent = agent_factory(**agent_collector_overrides(pki, absent, small_disk / "spool"))

    app = marker("fill")
    res = run_in_cgroup(test_cgroup, [PYTHON, "-c", FILL_SRC, str(pg.port), app, "20000"],
                        timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["refusal"] is not None, "the spool never filled up"
    assert out["refusal"]["sqlstate"] == "53100", out
    assert "spool full" in out["refusal"]["message"]
    assert "spool full" in agent.output()

    # The collector comes up: the spool drains, statements run again.
    collector = collector_factory(cfg["storage"], listen=cfg["listen"], http=cfg["http"],
                                  signing_key=cfg["signing_key"])
    wait_until(lambda: "room again" in agent.output(), 60, what="the spool to drain")
    again = run_in_cgroup(test_cgroup, [PYTHON, "-c", FILL_SRC, str(pg.port), app, "5"],
                          timeout=60)
    assert json.loads(again.stdout) == {"done": 5, "refusal": None}

    # Every statement that ran is in the ledger, the refused one too, no gaps.
    ran = out["done"] + 5
    events = collector.wait_for(
        lambda evs: sum(1 for e in evs if e.get("sqlstate") is None) >= ran,
        timeout=60, what="every statement that ran", kind="statement", q="as filling")
    assert sum(1 for e in events if e.get("sqlstate") is None) == ran
    assert any(e.get("sqlstate") == "53100" for e in events), "the refusal is recorded"
    assert chain_ok(collector.events())
