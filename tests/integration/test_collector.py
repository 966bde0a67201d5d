"""
The audit pipeline end to end: agent -> spool -> mTLS -> collector -> ledger,
on SQLite and on PostgreSQL, read back through the API and the `dbward` CLI.
"""

import base64
import json
import sqlite3
import time

import psycopg2
import pytest

from collector_env import agent_collector_overrides, chain_ok, cli
from dbward_env import PYTHON, marker, psql_argv, wait_until


def psql(pg, cgroup, run_in_cgroup, sql, app, check=True):
    return run_in_cgroup(cgroup, psql_argv("127.0.0.1", pg.port, sql=sql, application_name=app),
                         check=check)


@pytest.fixture
def shipping(pg, storage, pki, collector_factory, agent_factory, tmp_path):
    """A collector on @storage and an agent shipping to it."""
    collector = collector_factory(storage)
    agent = agent_factory(**agent_collector_overrides(pki, collector, tmp_path / "spool"))
    return collector, agent


def test_statements_reach_the_collector(pg, shipping, test_cgroup, run_in_cgroup):
    collector, agent = shipping
    app = marker("ship")
    res = psql(pg, test_cgroup, run_in_cgroup, "select 41 + 1 as shipped", app)
    assert res.stdout.strip() == "42"

    events = collector.wait_for(lambda evs: any(e["kind"] == "connection_close" for e in evs),
                                what="the session's events", agent="agent-1",
                                session=None, q=None)
    mine = [e for e in events if e.get("application_name") == app]
    kinds = [e["kind"] for e in mine]
    assert kinds == ["connection_open", "statement", "connection_close"], kinds
    stmt = mine[1]
    assert stmt["sql"] == "select 41 + 1 as shipped"
    assert stmt["pid"] == res.pid and stmt["comm"] == "psql"
    assert stmt["agent_id"] == "agent-1" and stmt["verdict"] == "allow"
    assert stmt["rows"] == 1 and stmt["db_user"] == "app" and stmt["database"] == "orders"
    assert chain_ok(collector.events())

    # The same events the agent wrote to its own file, byte for byte hashed.
    local = {e["hash"] for e in agent.audit_events()}
    assert {e["hash"] for e in mine} <= local

    # Filters narrow; text search finds the statement.
    assert [e["id"] for e in collector.events(q="41 + 1")] == [stmt["id"]]
    assert collector.events(pid=res.pid, kind="statement")[0]["id"] == stmt["id"]
    assert collector.events(verdict="deny") == []
    assert collector.events(comm="no-such-program") == []
    sessions = collector.api("sessions", session=stmt["session_id"])["sessions"]
    assert len(sessions) == 1 and sessions[0]["statements"] == 1 and sessions[0]["closed"]

    # Agents: a row per agent and epoch, paged by an AGENT_ID@EPOCH cursor.
    agents = collector.api("agents")
    assert agents["total"] == 1 and agents["next_after"] is None, agents
    [row] = agents["agents"]
    assert (row["agent_id"], row["epoch"]) == ("agent-1", stmt["epoch"])
    assert row["acked_seq"] == row["events"] >= len(kinds), row
    first = collector.api("agents", limit=1)
    assert first["agents"][0]["agent_id"] == "agent-1"
    assert first["next_after"] == f"agent-1@{stmt['epoch']}"
    assert collector.api("agents", after=first["next_after"]) == \
        {"agents": [], "next_after": None, "total": 1}
    status, body = collector.get("agents", after="agent-1")
    assert status == 400 and "AGENT_ID@EPOCH" in body["error"], (status, body)

    # The CLI: a table for people, JSON lines for scripts.
    table = cli("--collector", collector.url, "events", "--search", "41 + 1", check=0)
    assert "select 41 + 1 as shipped" in table.stdout and "psql" in table.stdout
    lines = cli("--collector", collector.url, "events", "--pid", res.pid, "--json",
                check=0).stdout.splitlines()
    assert [json.loads(line)["kind"] for line in lines] == kinds
    verify = cli("--collector", collector.url, "verify", "--key", collector.public_key,
                 check=0)
    assert "intact" in verify.stdout


EXACTLY_ONCE_SRC = r"""
import json, sys, time
import psycopg2
port, count, app = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ok, unknown, conn = [], [], None
for n in range(1, count + 1):
    while conn is None:
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=port, user="app", dbname="orders",
                                    application_name=app, connect_timeout=3)
            conn.autocommit = True
        except psycopg2.OperationalError:
            time.sleep(0.05)
    try:
        with conn.cursor() as cur:
            cur.execute(f"select {n} as exactly_once")
            assert cur.fetchone()[0] == n
        ok.append(n)
    except psycopg2.Error:
        unknown.append(n)  # the agent died under it: did it run? cannot know
        try:
            conn.close()
        except psycopg2.Error:
            pass
        conn = None
    time.sleep(0.003)
print(json.dumps({"ok": ok, "unknown": unknown}))
"""


def test_exactly_once_through_agent_kills_and_collector_outage(
        pg, storage, pki, collector_factory, agent_factory, test_cgroup, spawn_in_cgroup,
        tmp_path):
    collector = collector_factory(storage)
    overrides = agent_collector_overrides(pki, collector, tmp_path / "spool")
    agent = agent_factory(**overrides)
    app = marker("once")
    client = spawn_in_cgroup(test_cgroup, [PYTHON, "-c", EXACTLY_ONCE_SRC, str(pg.port),
                                           "1500", app])

    def progress_then(seconds):
        time.sleep(seconds)
        assert client.poll() is None, "the workload ended before the faults were all in"

    progress_then(1.0)
    agent.kill9()                                   # 1st agent kill
    agent = agent_factory(config=agent.config)      # same spool, same links
    progress_then(0.8)
    collector.kill9()                               # collector down ...
    progress_then(0.8)
    agent.kill9()                                   # 2nd agent kill, collector still down
    agent = agent_factory(config=agent.config)
    progress_then(0.8)
    collector.start()                               # ... and back, same storage
    out, err = client.communicate(timeout=180)
    assert client.returncode == 0, err
    result = json.loads(out)
    assert len(result["ok"]) > 1000, "the workload made progress through the faults"

    expected = {f"select {n} as exactly_once" for n in result["ok"]}
    events = collector.wait_for(
        lambda evs: expected <= {e["sql"] for e in evs},
        timeout=60, what="every acknowledged statement", kind="statement", q="exactly_once")
    counts = {}
    for e in events:
        counts[e["sql"]] = counts.get(e["sql"], 0) + 1
    assert all(counts[sql] == 1 for sql in expected), \
        [s for s in expected if counts[s] != 1][:10]
    maybe = {f"select {n} as exactly_once" for n in result["unknown"]}
    assert all(c == 1 for sql, c in counts.items() if sql in maybe)
    assert set(counts) <= expected | maybe

    everything = collector.events()
    assert chain_ok(everything)
    assert len({(e["agent_id"], e["epoch"], e["seq"]) for e in everything}) == len(everything)
    assert collector.api("alerts") == {"alerts": [], "next_after": None, "total": 0}
    status, body = collector.get("alerts", verdict="deny")
    assert status == 400 and "only after and limit" in body["error"], (status, body)
    assert collector.api("verify")["ok"] is True


def store_exec(storage, sql, params=()):
    """Runs @sql directly on the collector's database: the attacker's view."""
    if storage.startswith("sqlite:"):
        db = sqlite3.connect(storage[len("sqlite:"):])
        try:
            db.execute(sql, params)
            db.commit()
        finally:
            db.close()
    else:
        db = psycopg2.connect(storage.replace("postgres://", "postgresql://"))
        try:
            with db.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
            db.commit()
        finally:
            db.close()


def store_query(storage, sql, params=()):
    if storage.startswith("sqlite:"):
        db = sqlite3.connect(storage[len("sqlite:"):])
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    db = psycopg2.connect(storage.replace("postgres://", "postgresql://"))
    try:
        with db.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in cur.fetchall()]
    finally:
        db.close()


@pytest.fixture
def ledger_with_statements(pg, shipping, storage, test_cgroup, run_in_cgroup):
    collector, agent = shipping
    app = marker("ledger")
    for n in range(3):
        psql(pg, test_cgroup, run_in_cgroup, f"select {n} as ledger_row", app)
    collector.wait_for(lambda evs: len(evs) == 3, kind="statement", q="ledger_row",
                       what="three statements")
    ok = cli("--collector", collector.url, "verify", check=0)
    assert "intact" in ok.stdout
    return collector, storage


def event_bytes(collector, event_id):
    """An event's bytes as the collector keeps them (in its row, or its
    batch's payload), through its receipt."""
    return bytearray(base64.b64decode(collector.api(f"receipts/{event_id}")["event"]))


def put_event_bytes(storage, event_id, raw):
    """Replaces an event's bytes: the new ones in its row, its payload slice
    forgotten."""
    blob = bytes(raw) if storage.startswith("sqlite:") else psycopg2.Binary(bytes(raw))
    store_exec(storage, "update events set raw_inline = ?, payload = null where id = ?",
               (blob, event_id))


@pytest.mark.parametrize("tamper", ["sql column", "comm column", "event bytes", "seq column",
                                    "deleted row", "deleted payload"])
def test_tampering_makes_verify_fail_and_say_where(ledger_with_statements, tamper):
    collector, storage = ledger_with_statements
    target = collector.events(q="select 1 as ledger_row")[0]
    victim = target["id"]
    if tamper == "sql column":
        store_exec(storage, "update events set sql = ? where id = ?",
                   ("select 1 as harmless", victim))
    elif tamper == "comm column":
        # Who sent an event is its origin's row, shared by its connection's events.
        store_exec(storage, "update origins set comm = ? where id = "
                   "(select origin from events where id = ?)", ("cron", victim))
    elif tamper == "seq column":
        store_exec(storage, "update events set seq = seq + 1000 where id = ?", (victim,))
    elif tamper == "event bytes":
        raw = event_bytes(collector, victim)
        i = raw.find(b"ledger_row")
        raw[i] ^= 0x01          # one bit, inside the SQL text
        put_event_bytes(storage, victim, raw)
    elif tamper == "deleted payload":
        # The collector keeps a batch's events as slices of it (schema 4).
        assert store_query(storage, "select count(*) from events where id = ? and "
                           "payload is not null and length(raw_inline) = 0", (victim,)) == [(1,)]
        store_exec(storage, "delete from payloads where id = "
                   "(select payload from events where id = ?)", (victim,))
    else:
        store_exec(storage, "delete from events where id = ?", (victim,))

    res = cli("--collector", collector.url, "verify", check=1)
    report = res.stdout + res.stderr
    if tamper == "deleted row":
        assert f"seq {target['seq']}" in report or f"event {victim}" in report, report
    else:
        assert f"event {victim}" in report, report
    body = collector.api("verify")
    assert body["ok"] is False and body["problems"]
    if tamper == "deleted payload":
        # Still listed, saying why it has no fields: pages go on past it.
        listed = collector.api(f"events/{victim}")
        assert listed["seq"] == target["seq"] and "payload" in listed["error"], listed
        assert victim in [e["id"] for e in collector.events()]
        status, body = collector.get(f"receipts/{victim}")
        assert status == 409 and "payload" in body["error"], (status, body)


def test_receipts_verify_offline_and_one_flipped_bit_does_not(ledger_with_statements,
                                                              tmp_path):
    collector, _ = ledger_with_statements
    event = collector.events(q="select 2 as ledger_row")[0]
    path = tmp_path / "receipt.json"
    cli("--collector", collector.url, "receipt", event["id"], "-o", path, check=0)
    good = cli("verify-receipt", path, "--key", collector.public_key, check=0)
    assert "receipt valid" in good.stdout and "select 2 as ledger_row" in good.stdout

    # Offline: the collector is gone, the receipt still proves the event.
    collector.stop()
    cli("verify-receipt", path, "--key", collector.public_key, check=0)

    text = path.read_bytes()
    receipt = json.loads(text)
    bad = tmp_path / "bad.json"

    def flipped_event_bit(bit):
        raw = bytearray(base64.b64decode(receipt["event"]))
        raw[bit // 8] ^= 1 << (bit % 8)
        return dict(receipt, event=base64.b64encode(bytes(raw)).decode())

    def flipped_hex(h, bit):
        b = bytearray(bytes.fromhex(h))
        b[bit // 8] ^= 1 << (bit % 8)
        return b.hex()

    edits = [flipped_event_bit(0), flipped_event_bit(8 * 20 + 3),
             dict(receipt, leaf_index=receipt["leaf_index"] ^ 1),
             dict(receipt, tree_head=dict(receipt["tree_head"],
                                          root=flipped_hex(receipt["tree_head"]["root"], 5)))]
    if receipt["proof"]:
        edits.append(dict(receipt, proof=[flipped_hex(receipt["proof"][0], 100)]
                          + receipt["proof"][1:]))
    for edited in edits:
        bad.write_text(json.dumps(edited))
        cli("verify-receipt", bad, "--key", collector.public_key, check=1)

    # Any single bit of the file, sampled across its whole length.
    for pos in range(0, len(text), max(1, len(text) // 150)):
        b = bytearray(text)
        b[pos] ^= 0x01
        bad.write_bytes(bytes(b))
        res = cli("verify-receipt", bad, "--key", collector.public_key)
        assert res.returncode != 0, f"a bit flipped at byte {pos} still verified:\n" \
            f"{bytes(b)[max(0, pos - 30):pos + 30]!r}"


def test_check_receipt_proves_the_event_is_still_in_the_ledger(
        ledger_with_statements, shipping, pg, pki, collector_factory, agent_factory,
        test_cgroup, run_in_cgroup, tmp_path):
    collector, storage = ledger_with_statements
    _, agent = shipping
    event = collector.events(q="select 0 as ledger_row")[0]
    path = tmp_path / "receipt.json"
    cli("--collector", collector.url, "receipt", event["id"], "-o", path, check=0)
    size = json.loads(path.read_text())["tree_head"]["size"]

    # The ledger grows; the receipt's tree stays its start.
    psql(pg, test_cgroup, run_in_cgroup, "select 'after the receipt'", marker("later"))
    collector.wait_for(lambda evs: len(evs) == 1, q="after the receipt", kind="statement",
                       what="the later statement")
    proof = collector.api(f"consistency/{size}")
    assert proof["from_size"] == size and proof["size"] > size and proof["proof"]
    ok = cli("--collector", collector.url, "check-receipt", path, "--key",
             collector.public_key, check=0)
    assert "receipt valid" in ok.stdout and "still in the ledger" in ok.stdout, ok.stdout
    assert f"tree of size {size} is a prefix" in ok.stdout and "unchanged" in ok.stdout
    for bad, want in ((0, 400), (proof["size"] + 1, 404)):
        status, body = collector.get(f"consistency/{bad}")
        assert status == want and "error" in body, (bad, status, body)

    # The event's row edited, then deleted, its leaf and the tree heads left
    # alone: the tree still extends the receipt's, but the event is not in it.
    raw = event_bytes(collector, event["id"])
    raw[raw.find(b"ledger_row")] ^= 0x01
    put_event_bytes(storage, event["id"], raw)
    edited = cli("--collector", collector.url, "check-receipt", path, "--key",
                 collector.public_key, check=1)
    assert "NOT consistent" in edited.stdout, edited.stdout
    store_exec(storage, "delete from events where id = ?", (event["id"],))
    deleted = cli("--collector", collector.url, "check-receipt", path, "--key",
                  collector.public_key, check=1)
    assert f"event {event['id']} is no longer in it" in deleted.stdout, deleted.stdout

    # A collector with the same signing key but another history: first
    # shorter than the receipt's tree, then as long; both are caught.
    agent.stop()
    other = collector_factory(f"sqlite:{tmp_path / 'other.db'}")
    agent_factory(**agent_collector_overrides(pki, other, tmp_path / "spool-2", "agent-2"))
    psql(pg, test_cgroup, run_in_cgroup, "select 'another history'", marker("other"))
    other.wait_for(lambda evs: len(evs) == 3, what="the other ledger's first session")
    assert other.public_key.read_bytes() == collector.public_key.read_bytes()
    cut = cli("--collector", other.url, "check-receipt", path, "--key", other.public_key,
              check=1)
    assert "events were removed" in cut.stdout, cut.stdout
    for _ in range(size // 3):         # three events a session
        psql(pg, test_cgroup, run_in_cgroup, "select 'another history'", marker("other"))
    other.wait_for(lambda evs: len(evs) >= size, what="as many events as the receipt's tree")
    rewritten = cli("--collector", other.url, "check-receipt", path, "--key",
                    other.public_key, check=1)
    assert "history was rewritten" in rewritten.stdout, rewritten.stdout


def refused_agent(pki, collector, agent_factory, tmp_path):
    """agent-1 shipping to @collector with a certificate from a foreign CA,
    spool in tmp_path/spool: its events stay there."""
    from collector_env import Pki
    foreign = Pki(tmp_path / "foreign")
    overrides = agent_collector_overrides(pki, collector, tmp_path / "spool")
    cert, key = foreign.issue("agent-1")
    overrides["collector"].update(cert=str(cert), key=str(key))
    return agent_factory(**overrides)


def test_agent_with_a_foreign_ca_certificate_is_refused(pg, pki, collector_factory,
                                                        agent_factory, test_cgroup,
                                                        run_in_cgroup, tmp_path):
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    agent = refused_agent(pki, collector, agent_factory, tmp_path)
    psql(pg, test_cgroup, run_in_cgroup, "select 'kept in the spool'", marker("foreign"))

    wait_until(lambda: "unreachable" in agent.output(), 15, what="the agent's refusal log")
    assert collector.events() == [], "nothing from an agent the CA did not issue"
    assert collector.running

    # The refused events wait in the spool; a proper certificate ships them.
    agent.stop()
    good = agent_factory(config=agent.config, **agent_collector_overrides(
        pki, collector, tmp_path / "spool"))
    collector.wait_for(lambda evs: any(e.get("sql") == "select 'kept in the spool'"
                                       for e in evs), what="the spooled statement")
    assert good.running


def test_a_backlog_ships_batch_after_batch_without_waiting_for_batch_ms(
        pg, pki, collector_factory, agent_factory, test_cgroup, run_in_cgroup, tmp_path):
    """More than 1 MiB waiting goes out as fast as the collector acks, even
    when batch_ms is a minute and batch_max_events is never reached."""
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    # First an agent the collector refuses: the events pile up in its spool.
    agent = refused_agent(pki, collector, agent_factory, tmp_path)
    n, filler = 40, "x" * 100_000          # ~4 MB of events: four batches or more
    script = tmp_path / "backlog.sql"
    script.write_text("".join(f"select {i} as n, length('{filler}');\n" for i in range(n)))
    argv = psql_argv("127.0.0.1", pg.port, application_name=marker("backlog"))
    run_in_cgroup(test_cgroup, argv[:-2] + ["-f", str(script)])
    agent.stop()

    overrides = agent_collector_overrides(pki, collector, tmp_path / "spool")
    overrides["collector"].update(batch_ms=60000, batch_max_events=100000)
    good = agent_factory(config=agent.config, **overrides)
    # One batch of at most ~1 MiB, then the next only after 60 s, unless a
    # batch cut at its byte limit sends the next one at once.
    collector.wait_for(lambda evs: len(evs) >= n, timeout=40, what="every statement",
                       kind="statement")
    assert good.running


def test_agent_id_must_be_the_certificate_name(pki, collector_factory, agent_config,
                                               tmp_path):
    import subprocess
    from dbward_env import agent_binary, to_yaml
    collector = collector_factory(f"sqlite:{tmp_path / 'audit.db'}")
    cfg = agent_config(**agent_collector_overrides(pki, collector, tmp_path / "spool"))
    cfg["agent_id"] = "someone-else"
    path = tmp_path / "mismatch.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    res = subprocess.run([str(agent_binary()), "--config", str(path), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "agent_id 'someone-else' is not the name in collector.cert ('agent-1')" \
        in res.stderr, res.stderr
