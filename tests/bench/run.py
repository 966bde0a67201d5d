#!/usr/bin/python3
"""
dbward benchmark (`make bench`): direct vs PgBouncer vs a bare byte pipe vs the agent.

Starts a throwaway PostgreSQL 15, PgBouncer (session mode), bench-bytepipe
(a 2-thread epoll byte pipe, no parsing), bench-kpipe (a sockmap pipe: the
kernel forwards every byte, user space none), with `--ways ...,lpipe` a second
byte pipe whose hop from the clients bench-lpipe shortcuts at the socket
level (docs/kernel-path.md), a dbward-collector on SQLite, and
two agents, each on a test cgroup of its own, both with guardrails on:
  agent       the production setup: spool + shipping to the collector (mTLS)
  agent-file  audit.file (JSON lines) only, no spool, no collector
Runs pgbench workloads interleaved per round (direct, pgbouncer, bytepipe,
agent, agent-file, direct, ...) and prints the median of each figure and its
ratios; then the BPF connect hook's cost (bench-connect with and without an
agent attached, interleaved) and the agent's RSS with many idle connections.

Run as root: /usr/bin/python3 tests/bench/run.py --bin build/bin
Everything is loopback; everything started is stopped, by pid, on exit.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))
sys.path.insert(0, str(HERE))

import dbward_env as E  # noqa: E402  (reused, not modified)
import connect_bench  # noqa: E402
from services import (PGBOUNCER, AuditCounter, BytePipe, Ledger, LocalRedirect,  # noqa: E402
                      PgBouncer, cpu_seconds, log, rss_kib)

DB = "bench"

RULES = [
    {"name": "no-drop", "match": {"statements": ["drop", "truncate"]}, "action": "deny"},
    {"name": "scoped-writes",
     "match": {"statements": ["delete", "update"], "where": "absent"}, "action": "deny"},
]

# name, pgbench arguments, clients, figure ("tps" or "lat"), script (or None).
WORKLOADS = [
    ("select-only prepared", ["-S", "-M", "prepared"], 8, "tps", None),
    ("select-only simple", ["-S", "-M", "simple"], 8, "tps", None),
    ("TPC-B simple", ["-M", "simple"], 8, "tps", None),  # pgbench's default script and mode
    ("1 client select-only prepared", ["-S", "-M", "prepared"], 1, "lat", None),
]
EXTRA = [("TPC-B prepared", ["-M", "prepared"], 8, "tps", None)]
# How costs grow: clients, statement size, result size (--growth).
GROWTH = [
    ("32 clients select-only prepared", ["-S", "-M", "prepared"], 32, "tps", None),
    ("4 KiB statement simple", ["-M", "simple"], 8, "tps",
     "select length('" + "x" * 4096 + "');\n"),
    ("100-row result prepared", ["-M", "prepared"], 8, "tps",
     "\\set a random(1, 999900)\n"
     "select aid, bid, abalance, filler from pgbench_accounts "
     "where aid between :a and :a + 99;\n"),
]
WAYS = ("direct", "pgbouncer", "bytepipe", "kpipe", "lpipe", "agent", "agent-file")
DEFAULT_WAYS = tuple(w for w in WAYS if w != "lpipe")  # lpipe: asked for by name
AGENTS = ("agent", "agent-file")

# Opens N connections, says "ok N", and holds them until stdin closes.
IDLE_CLIENT = r"""
import sys, psycopg2, resource
n, port, db = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = [psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=db,
                          application_name="dbward-bench-idle", connect_timeout=30)
         for _ in range(n)]
print("ok", len(conns), flush=True)
sys.stdin.read()
"""

TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def test_cgroup(label):
    cg = E.Cgroup()
    cg.name = f"dbward-bench-{label}-{os.getpid()}"
    cg.path = cg.root / cg.name
    cg.procs_file = cg.path / "cgroup.procs"
    return cg.create()


def pgbench(way, workload, seconds, ports, cgroups, scripts):
    name, args, clients, _, script = workload
    if script is not None:
        args = [*args, "-f", str(scripts[name])]
    argv = [E.PGBENCH, "-h", "127.0.0.1", "-p", str(ports[way]), "-U", "postgres",
            "-c", str(clients), "-j", str(min(2, clients)), "-T", str(seconds), "-n",
            *args, DB]
    timeout = seconds + 60
    if way in cgroups:
        r = E.run_in_cgroup(cgroups[way], argv, timeout=timeout)
    else:
        r = E.run_direct(argv, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench ({way}) exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    tps, lat = TPS.search(r.stdout), LAT.search(r.stdout)
    if not tps or not lat:
        raise RuntimeError(f"cannot parse pgbench output ({way}):\n{r.stdout}")
    return float(tps.group(1)), float(lat.group(1)) * 1000.0  # tps, µs


def measure_idle_rss(agent, cgroup, pg, n):
    before = rss_kib(agent.pid)
    proc = E.popen_in_cgroup(cgroup, [E.PYTHON, "-c", IDLE_CLIENT, str(n), str(pg.port), DB],
                             stdin=subprocess.PIPE)
    try:
        line = E.readline(proc.stdout, 120)
        if not line or not line.startswith("ok"):
            proc.kill()
            raise RuntimeError(f"idle client failed: {line!r}\n{proc.stderr.read()}")
        time.sleep(1.0)
        during = rss_kib(agent.pid)
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return before, during

# Starts a query with a ~64 MiB result, reads none of it, and holds on
# until stdin closes: how much the proxy can push at a client that stops.
STALLED_CLIENT = r"""
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
params = b"user\0postgres\0database\0" + sys.argv[2].encode() + b"\0\0"
s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
seen = b""
while b"Z\x00\x00\x00\x05" not in seen:
    chunk = s.recv(65536)
    if not chunk:
        sys.exit("closed before ReadyForQuery")
    seen += chunk
q = b"select repeat('x', 1000) from generate_series(1, 65536)\0"
s.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
print("stalled", s.getsockname()[1], flush=True)
sys.stdin.read()
"""


LPIPE_HELD_MAX = 8 << 20


def stalled_client_holds(cgroup, port):
    """Bytes the receive queue of a client that stopped reading holds (ss)."""
    proc = E.popen_in_cgroup(cgroup, [E.PYTHON, "-c", STALLED_CLIENT, str(port), DB],
                             stdin=subprocess.PIPE)
    try:
        line = E.readline(proc.stdout, 30).split()
        if len(line) != 2 or line[0] != "stalled":
            raise RuntimeError(f"stalled client: {line!r} {proc.stderr.read()}")
        time.sleep(3)
        out = subprocess.run(["ss", "-tmnHO", "state", "established"], capture_output=True,
                             text=True, check=True).stdout
        for row in out.splitlines():
            f = row.split()
            if len(f) > 4 and f[2] == f"127.0.0.1:{line[1]}":
                m = re.search(r"skmem:\(r(\d+),", row)
                return int(m.group(1)) if m else None
        return None
    finally:
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # stuck before its query: not ours to wait on
            proc.kill()
            proc.wait()


def fmt(v, kind):
    return f"{v:9.0f}" if kind == "tps" else f"{v:7.1f}µs"


def summary(workloads, results, cpu, seen, seconds):
    """The results table: medians, ratios (or added µs), proxy CPU per transaction."""
    ways = [w for w in WAYS if any(results[n].get(w) for n in results)]
    ratio_pairs = [("agent", "direct"), ("pgbouncer", "direct"), ("bytepipe", "direct"),
                   ("kpipe", "direct"), ("lpipe", "bytepipe"), ("agent", "pgbouncer"),
                   ("agent", "bytepipe"),
                   ("agent-file", "direct")]
    ratio_pairs = [(a, b) for a, b in ratio_pairs if a in ways and b in ways]
    short = {"direct": "dir", "pgbouncer": "pgb", "bytepipe": "pipe", "kpipe": "kpipe",
             "lpipe": "lpipe", "agent": "agent", "agent-file": "file"}
    head = f"{'workload':34s}" + "".join(f" {w:>11s}" for w in ways) + \
        "".join(f" {short[a] + '/' + short[b]:>9s}" for a, b in ratio_pairs)
    lines = [head]
    for name, _, clients, kind, _ in workloads:
        med = {w: statistics.median(results[name][w]) for w in ways}
        line = f"{name:34s}" + "".join(f" {fmt(med[w], kind):>11s}" for w in ways)
        for a, b in ratio_pairs:
            if kind == "tps":
                line += f" {med[a] / med[b]:9.2f}"
            else:  # latency: the µs @a adds over @b
                line += f" {med[a] - med[b]:+8.1f}µ"
        lines.append(line)
    lines.append("")
    lines.append("proxy CPU per transaction (µs, median over rounds; the proxy process only):")
    for name, *_ in workloads:
        parts = []
        for w in ("pgbouncer", "bytepipe", "lpipe", "agent", "agent-file", "collector"):
            if cpu[name].get(w):
                parts.append(f"{w} {statistics.median(cpu[name][w]):6.1f}")
        lines.append(f"  {name:34s} " + "  ".join(parts))
    lines.append("")
    lines.append("events per agent run (median; checks every run went through the agent):")
    for name, *_ in workloads:
        for w in AGENTS:
            if seen[name].get(w):
                s = seen[name][w]
                lines.append(f"  {name:34s} {w:10s} connection_open>={min(x[0] for x in s)}"
                             f"  events~{statistics.median(x[1] for x in s):.0f}"
                             f"  transactions~{statistics.median(x[2] for x in s):.0f}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--bin", default=str(E.DEFAULT_BIN),
                    help="where dbward-agent, dbward-collector, dbward and bench-* are "
                         "(default build/bin)")
    ap.add_argument("--seconds", type=int, default=3,
                    help="pgbench -T per run (default 3: 60 runs fit in 4 minutes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--idle", type=int, default=1000,
                    help="idle connections for the memory figure")
    ap.add_argument("--only", default=None,
                    help="comma-separated workload name prefixes to run")
    ap.add_argument("--ways", default=",".join(DEFAULT_WAYS),
                    help=f"comma-separated subset of {','.join(WAYS)} (direct is required)")
    ap.add_argument("--extra", action="store_true", help="also run TPC-B -M prepared")
    ap.add_argument("--growth", action="store_true",
                    help="also run 32 clients, a 4 KiB statement and a 100-row result")
    ap.add_argument("--connect-rounds", type=int, default=4,
                    help="rounds of the connect hook bench (0: skip it)")
    ap.add_argument("--connect-iterations", type=int, default=2000)
    ap.add_argument("--connect-blocks", type=int, default=5)
    ap.add_argument("--agent-workers", type=int, default=0,
                    help="the agents' `workers` (default 0: one per core)")
    ap.add_argument("--keep-running", type=float, default=0,
                    help="after the rounds, keep everything up this many seconds (profiling)")
    opts = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("bench: run as root (BPF, cgroups, bpffs)")
    bin_dir = Path(opts.bin)
    if not bin_dir.is_absolute():
        bin_dir = Path.cwd() / bin_dir
    os.environ["DBWARD_BIN"] = str(bin_dir)  # collector_env finds dbward, dbward-collector
    ways = [w.strip() for w in opts.ways.split(",") if w.strip()]
    if "direct" not in ways or any(w not in WAYS for w in ways):
        sys.exit(f"bench: --ways must include direct and name only {','.join(WAYS)}")
    ways = [w for w in WAYS if w in ways]
    needs = [Path(E.PGBENCH), Path(PGBOUNCER), bin_dir / "dbward-agent",
             bin_dir / "dbward-collector", bin_dir / "dbward", bin_dir / "bench-bytepipe",
             bin_dir / "bench-connect"] + ([bin_dir / "bench-kpipe"] if "kpipe" in ways else []) + \
        ([bin_dir / "bench-lpipe"] if "lpipe" in ways else [])
    for need in needs:
        if not need.exists():
            sys.exit(f"bench: {need} missing (make bench; scripts/install-deps.sh)")
    # The agent and the idle client need an fd per connection (two for the agent).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    workloads = WORKLOADS + (EXTRA if opts.extra else []) + (GROWTH if opts.growth else [])
    if opts.only:
        pre = [p.strip().lower() for p in opts.only.split(",")]
        workloads = [w for w in workloads if any(w[0].lower().startswith(p) for p in pre)]

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="dbward-bench-"))
    os.chmod(tmp, 0o755)
    pg = bouncer = pipe = kpipe = lpipe = lredirect = ledger = bpffs = None
    agents, cgroups = {}, {}
    failed = False
    try:
        pg = E.Postgres(E.free_port(), ["127.0.0.1"], hba=(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"),
            conf=f"max_connections = {max(100, opts.idle + 100)}\n"
                 "log_connections = off\nlog_disconnections = off\n")
        pg.initdb()
        pg.start()
        pg.sql(f"create database {DB}")
        log(f"PostgreSQL on 127.0.0.1:{pg.port}; pgbench -i -s {opts.scale}")
        E.run_direct([E.PGBENCH, "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                      "-i", "-q", "-s", str(opts.scale), DB], timeout=600, check=True)
        pg.sql("vacuum analyze", dbname=DB)
        scripts = {}
        for name, _, _, _, script in workloads:
            if script is not None:
                scripts[name] = tmp / f"script-{len(scripts)}.sql"
                scripts[name].write_text(script)
        ports = {w: pg.port for w in WAYS}
        pids = {}

        if "pgbouncer" in ways:
            bouncer = PgBouncer(tmp, pg.port, DB).start()
            ports["pgbouncer"], pids["pgbouncer"] = bouncer.port, bouncer.pid
            log(f"PgBouncer (session) on 127.0.0.1:{bouncer.port}")
        if "bytepipe" in ways:
            pipe = BytePipe(bin_dir / "bench-bytepipe", pg.port).start()
            ports["bytepipe"], pids["bytepipe"] = pipe.port, pipe.pid
            log(f"bench-bytepipe on 127.0.0.1:{pipe.port}")
        if "kpipe" in ways:
            # Its CPU is kernel work in softirq and kworkers, not its own: no
            # pid, so no "proxy CPU" figure.
            kpipe = BytePipe(bin_dir / "bench-kpipe", pg.port).start()
            ports["kpipe"] = kpipe.port
            log(f"bench-kpipe on 127.0.0.1:{kpipe.port}")
        if "lpipe" in ways:
            cgroups["lpipe"] = test_cgroup("lpipe")
            lpipe = BytePipe(bin_dir / "bench-bytepipe", pg.port, cgroups["lpipe"]).start()
            lredirect = LocalRedirect(bin_dir / "bench-lpipe", cgroups["lpipe"],
                                      lpipe.port).start()
            ports["lpipe"], pids["lpipe"] = lpipe.port, lpipe.pid
            log(f"lpipe: bench-bytepipe on 127.0.0.1:{lpipe.port} with bench-lpipe, "
                f"cgroup {cgroups['lpipe']}")

        bpffs = E.Bpffs(tmp / "bpffs").mount()
        base = {
            "fail": "closed",
            "log_level": "warn",
            "rules": RULES,
        }
        if opts.agent_workers:
            base["workers"] = opts.agent_workers
        counters = {}
        for way in AGENTS:
            if way not in ways:
                continue
            cgroups[way] = test_cgroup(way)
            config = dict(base)
            config["listen"] = f"127.0.0.1:{E.free_port()}"
            config["intercept"] = {
                "cgroup": str(cgroups[way].path),
                "pin_dir": str(bpffs.path / way),
                "upstream_mark": E.Raw("0xdb00"),
                "targets": [{"port": pg.port, "upstream_tls": "disable"}],
            }
            if way == "agent":
                ledger = Ledger(tmp).start()
                pids["collector"] = ledger.pid
                config.update(ledger.agent_config(tmp / "spool"))
                log(f"collector pid {ledger.pid} on {ledger.collector.ingest} (SQLite)")
            else:
                config["audit"] = {"file": str(tmp / "audit.jsonl")}
                counters[way] = AuditCounter(tmp / "audit.jsonl")
            agents[way] = E.Agent(bin_dir / "dbward-agent", config, tmp, way).start()
            agents[way].wait_ready(30)
            pids[way] = agents[way].pid
            log(f"{way}: pid {agents[way].pid} on {config['listen']}, cgroup {cgroups[way]}")

            # Guardrails really on: a DROP from the cgroup must be refused.
            r = E.run_in_cgroup(cgroups[way], [E.PSQL, "-h", "127.0.0.1", "-p", str(pg.port),
                                               "-U", "postgres", "-d", DB, "-Atc",
                                               "drop table pgbench_history"])
            if r.returncode == 0 or "no-drop" not in (r.stdout + r.stderr):
                raise RuntimeError(f"{way}: guardrail check failed: drop was not refused\n"
                                   f"{r.stdout}{r.stderr}")
        if ledger:
            ledger.settle()
            ledger.new_connection_opens()

        results = {w[0]: {way: [] for way in ways} for w in workloads}
        cpu = {w[0]: {} for w in workloads}
        seen = {w[0]: {} for w in workloads}  # per agent: (opens, events, transactions)
        total = len(workloads) * opts.rounds * len(ways)
        n = 0
        for rnd in range(opts.rounds):
            for wl in workloads:
                name, _, clients, kind, _ = wl
                for way in ways:
                    n += 1
                    watch = [w for w in (way, "collector" if way == "agent" else None)
                             if w in pids]
                    cpu0 = {w: cpu_seconds(pids[w]) for w in watch}
                    if way == "agent":
                        seq0 = ledger.acked_seq()
                    elif way in counters:
                        before = counters[way].update()
                    tps, lat = pgbench(way, wl, opts.seconds, ports, cgroups, scripts)
                    value = tps if kind == "tps" else lat
                    results[name][way].append(value)
                    xacts = tps * opts.seconds
                    extra = ""
                    if way == "agent":
                        seq1, waited = ledger.settle()  # shipped and stored before going on
                        opens = ledger.new_connection_opens()
                        seen[name].setdefault(way, []).append((opens, seq1 - seq0, xacts))
                        extra = f" (collector settled {waited:.1f}s later)"
                    elif way in counters:
                        time.sleep(0.3)  # let the file sink write
                        after = counters[way].update()
                        opens = after.get("connection_open", 0) - before.get("connection_open", 0)
                        events = sum(after.values()) - sum(before.values())
                        seen[name].setdefault(way, []).append((opens, events, xacts))
                    if way in AGENTS and opens < clients:
                        raise RuntimeError(
                            f"{name}: {way} run saw {opens} connection_open events for "
                            f"{clients} clients: pgbench bypassed the agent")
                    for w in watch:
                        used = cpu_seconds(pids[w]) - cpu0[w]
                        cpu[name].setdefault(w, []).append(used * 1e6 / max(xacts, 1))
                    log(f"[{n}/{total}] round {rnd + 1} {name:34s} {way:10s} "
                        f"{fmt(value, kind)}{extra}")

        rows = summary(workloads, results, cpu, seen, opts.seconds)
        print()
        for line in rows:
            print(line, flush=True)

        if opts.keep_running > 0:
            log(f"keeping everything up {opts.keep_running:.0f}s: ports {ports}, pids {pids}")
            time.sleep(opts.keep_running)

        if lpipe:
            # Flow control: the shortcut must not let a proxy push a whole
            # result at a client that stopped reading.
            held = {}
            if "bytepipe" in ways:
                cg = test_cgroup("stall")
                try:
                    held["bytepipe"] = stalled_client_holds(cg, pipe.port)
                finally:
                    cg.destroy()
            held["lpipe"] = stalled_client_holds(cgroups["lpipe"], lpipe.port)
            print()
            print("a client that stops reading a 64 MiB result holds in its socket: " +
                  ", ".join(f"{w} {'?' if v is None else f'{v / 1024:.0f} KiB'}"
                            for w, v in held.items()))
            print(lredirect.stop())
            # Twice the 256 KiB limit and TCP's window at most; a redirect
            # without flow control would hold most of the 64 MiB.
            if held["lpipe"] is None or held["lpipe"] > LPIPE_HELD_MAX:
                raise RuntimeError("lpipe: no flow control: a stalled client held "
                                   f"{held['lpipe']} bytes")

        # Memory, on the production agent (or the file-only one).
        mem_way = "agent" if "agent" in agents else next(iter(agents), None)
        if mem_way and opts.idle > 0:
            time.sleep(1.0)
            idle_kib = rss_kib(agents[mem_way].pid)
            before, during = measure_idle_rss(agents[mem_way], cgroups[mem_way], pg, opts.idle)
            print()
            print(f"{mem_way} RSS idle after the runs: {idle_kib / 1024:.1f} MiB")
            print(f"{mem_way} RSS with {opts.idle} idle connections: {during / 1024:.1f} MiB "
                  f"(before {before / 1024:.1f} MiB) -> "
                  f"{(during - before) * 1024 / opts.idle:.0f} bytes/connection")
        if ledger:
            seq, _ = ledger.settle()
            print(f"collector: {seq} events acked from {Ledger.AGENT_ID}; "
                  f"guardrail check: drop refused by no-drop")

        # The connect hook, with the pgbench agents idle.
        if opts.connect_rounds > 0:
            samples = connect_bench.measure(bin_dir, tmp, bpffs, opts.connect_rounds,
                                            opts.connect_iterations, opts.connect_blocks)
            print()
            for line in connect_bench.report(samples):
                print(line, flush=True)
        print(f"\nwall time {time.monotonic() - started:.0f}s")
    except BaseException as e:  # noqa: BLE001 (pytest.fail raises BaseException)
        failed = True
        if isinstance(e, KeyboardInterrupt):
            log("interrupted")
        else:
            traceback.print_exc()
            for way, agent in agents.items():
                print(f"--- {way} output ---\n" + agent.output()[-4000:], file=sys.stderr)
            if ledger:
                print("--- collector output ---\n" + ledger.collector.output()[-4000:],
                      file=sys.stderr)
    finally:
        steps = [(f"{way}", (lambda a=a: a.stop())) for way, a in agents.items()]
        steps += [
            ("collector", lambda: ledger and ledger.stop()),
            ("bytepipe", lambda: pipe and pipe.stop()),
            ("kpipe", lambda: kpipe and kpipe.stop()),
            ("bench-lpipe", lambda: lredirect and lredirect.stop()),
            ("lpipe", lambda: lpipe and lpipe.stop()),
            ("pgbouncer", lambda: bouncer and bouncer.stop()),
        ]
        steps += [(f"cgroup {c}", (lambda c=c: c.destroy())) for c in cgroups.values()]
        steps += [
            ("bpffs", lambda: bpffs and bpffs.unmount()),
            ("postgres", lambda: pg and pg.cleanup()),
        ]
        for what, fn in steps:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001
                failed = True
                log(f"cleanup of {what} failed: {e}")
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
