#!/usr/bin/python3
"""
dbward benchmark (`make bench`): direct vs PgBouncer vs the agent.

Starts a throwaway PostgreSQL 15 and PgBouncer (session mode), runs
dbward-agent with guardrails and statement auditing on against a test
cgroup of its own, and runs pgbench workloads interleaved per round
(direct, pgbouncer, agent, direct, ...). Prints the median of each figure
and its ratios, then the agent's RSS idle and with many idle connections.

Run as root: /usr/bin/python3 tests/bench/run.py --agent build/bin/dbward-agent
Everything is loopback; everything started is stopped, by pid, on exit.
"""

import argparse
import os
import re
import resource
import signal
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

import dbward_env as E  # noqa: E402  (reused, not modified)

PGBOUNCER = "/usr/sbin/pgbouncer"
DB = "bench"

RULES = [
    {"name": "no-drop", "match": {"statements": ["drop", "truncate"]}, "action": "deny"},
    {"name": "scoped-writes",
     "match": {"statements": ["delete", "update"], "where": "absent"}, "action": "deny"},
]

# name, pgbench arguments, clients, figure ("tps" or "lat"): the four.
WORKLOADS = [
    ("select-only prepared", ["-S", "-M", "prepared"], 8, "tps"),
    ("select-only simple", ["-S", "-M", "simple"], 8, "tps"),
    ("TPC-B", ["-M", "simple"], 8, "tps"),  # pgbench's default script and mode
    ("1 client select-only prepared latency", ["-S", "-M", "prepared"], 1, "lat"),
]
EXTRA = [("TPC-B prepared", ["-M", "prepared"], 8, "tps")]
WAYS = ("direct", "pgbouncer", "agent")

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


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class AuditCounter:
    """Counts audit events incrementally (the file grows by millions of lines)."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""
        self.counts = {}

    def update(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    self.offset += len(chunk)
                    data = self.partial + chunk
                    lines = data.split(b"\n")
                    self.partial = lines.pop()
                    for kind in (b"connection_open", b"statement", b"connection_close"):
                        needle = b'"kind":"' + kind + b'"'
                        self.counts[kind.decode()] = self.counts.get(kind.decode(), 0) + \
                            sum(1 for ln in lines if needle in ln)
        except FileNotFoundError:
            pass
        return dict(self.counts)


class PgBouncer:
    def __init__(self, workdir, pg_port):
        self.dir = Path(workdir) / "pgbouncer"
        self.port = E.free_port()
        self.pg_port = pg_port
        self.proc = None

    def start(self):
        self.dir.mkdir()
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        conf = self.dir / "pgbouncer.ini"
        conf.write_text(
            "[databases]\n"
            f"{DB} = host=127.0.0.1 port={self.pg_port} dbname={DB}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = session\n"
            "max_client_conn = 200\n"
            "default_pool_size = 20\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        E.run(["chown", "-R", "postgres:postgres", str(self.dir)])
        uid, gid, _ = E.resolve_user("postgres")
        # setpriv execs, so proc.pid is pgbouncer's own pid.
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
             PGBOUNCER, str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=self.dir)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.proc.returncode}; log:\n"
                                   + self._log())
            r = E.run([E.PSQL, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                       "-d", DB, "-Atc", "select 1"], check=False, env=E.clean_env())
            if r.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("pgbouncer not answering; log:\n" + self._log())
            time.sleep(0.1)

    def _log(self):
        try:
            return (self.dir / "pgbouncer.log").read_text()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def pgbench(way, args, clients, seconds, pg, bouncer, cgroup):
    port = bouncer.port if way == "pgbouncer" else pg.port
    argv = [E.PGBENCH, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
            "-c", str(clients), "-j", str(min(2, clients)), "-T", str(seconds), "-n",
            *args, DB]
    timeout = seconds + 60
    if way == "agent":
        r = E.run_in_cgroup(cgroup, argv, timeout=timeout)
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


def fmt(v, kind):
    return f"{v:9.0f}" if kind == "tps" else f"{v:7.1f}µs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--agent", default=str(E.DEFAULT_AGENT))
    ap.add_argument("--seconds", type=int, default=4,
                    help="pgbench -T per run (default 4: 36 runs fit in 3 minutes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--idle", type=int, default=1000,
                    help="idle connections for the memory figure")
    ap.add_argument("--only", default=None,
                    help="comma-separated workload name prefixes to run")
    ap.add_argument("--extra", action="store_true", help="also run TPC-B -M prepared")
    opts = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("bench: run as root (BPF, cgroups, bpffs)")
    agent_bin = Path(opts.agent)
    if not agent_bin.is_absolute():
        agent_bin = Path.cwd() / agent_bin
    for need in (agent_bin, Path(E.PGBENCH), Path(PGBOUNCER)):
        if not need.exists():
            sys.exit(f"bench: {need} missing (make; scripts/install-deps.sh)")
    # The agent and the idle client need an fd per connection (two for the agent).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    workloads = WORKLOADS + (EXTRA if opts.extra else [])
    if opts.only:
        pre = [p.strip().lower() for p in opts.only.split(",")]
        workloads = [w for w in workloads if any(w[0].lower().startswith(p) for p in pre)]

    tmp = Path(tempfile.mkdtemp(prefix="dbward-bench-"))
    os.chmod(tmp, 0o755)
    pg = bouncer = agent = cgroup = bpffs = None
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

        bouncer = PgBouncer(tmp, pg.port).start()
        log(f"PgBouncer (session) on 127.0.0.1:{bouncer.port}")

        cgroup = E.Cgroup()
        cgroup.name = f"dbward-bench-{os.getpid()}"
        cgroup.path = cgroup.root / cgroup.name
        cgroup.procs_file = cgroup.path / "cgroup.procs"
        cgroup.create()
        bpffs = E.Bpffs(tmp / "bpffs").mount()
        config = {
            "listen": f"127.0.0.1:{E.free_port()}",
            "listen6": f"[::1]:{E.free_port()}",
            "fail": "closed",
            "log_level": "warn",
            "intercept": {
                "cgroup": str(cgroup.path),
                "pin_dir": str(bpffs.path / "dbward"),
                "upstream_mark": E.Raw("0xdb00"),
                "targets": [{"port": pg.port, "upstream_tls": "disable"}],
            },
            "audit": {"file": str(tmp / "audit.jsonl")},
            "rules": RULES,
        }
        agent = E.Agent(agent_bin, config, tmp, "agent").start()
        agent.wait_ready(30)
        audit = AuditCounter(tmp / "audit.jsonl")
        log(f"agent pid {agent.pid} on {config['listen']}, cgroup {cgroup.path}")

        # Guardrails really on: a DROP from the cgroup must be refused.
        r = E.run_in_cgroup(cgroup, [E.PSQL, "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                                     "postgres", "-d", DB, "-Atc", "drop table pgbench_history"])
        if r.returncode == 0 or "no-drop" not in (r.stdout + r.stderr):
            raise RuntimeError(f"guardrail check failed: drop was not refused\n"
                               f"{r.stdout}{r.stderr}")

        results = {w[0]: {way: [] for way in WAYS} for w in workloads}
        seen = {w[0]: [] for w in workloads}  # (connection_open, statement) per agent run
        total = len(workloads) * opts.rounds * len(WAYS)
        n = 0
        for rnd in range(opts.rounds):
            for name, args, clients, kind in workloads:
                for way in WAYS:
                    n += 1
                    before = audit.update()
                    tps, lat = pgbench(way, args, clients, opts.seconds, pg, bouncer, cgroup)
                    value = tps if kind == "tps" else lat
                    results[name][way].append(value)
                    if way == "agent":
                        time.sleep(0.3)  # let the shipper flush
                        after = audit.update()
                        opens = after.get("connection_open", 0) - before.get("connection_open", 0)
                        stmts = after.get("statement", 0) - before.get("statement", 0)
                        seen[name].append((opens, stmts, tps * opts.seconds))
                        if opens < clients:
                            raise RuntimeError(
                                f"{name}: agent run saw {opens} connection_open events for "
                                f"{clients} clients: pgbench bypassed the agent")
                    log(f"[{n}/{total}] round {rnd + 1} {name:40s} {way:9s} {fmt(value, kind)}")

        rows = []
        print()
        print(f"{'workload':40s} {'direct':>11s} {'pgbouncer':>11s} {'agent':>11s}"
              f" {'agent/dir':>9s} {'pgb/dir':>9s} {'agent/pgb':>9s}  audit (per agent run)")
        for name, args, clients, kind in workloads:
            med = {way: statistics.median(results[name][way]) for way in WAYS}
            if kind == "tps":
                ratios = (med["agent"] / med["direct"], med["pgbouncer"] / med["direct"],
                          med["agent"] / med["pgbouncer"])
                rs = "".join(f" {x:9.2f}" for x in ratios)
            else:
                # For latency, the ratios are replaced by added µs over direct.
                rs = (f" {med['agent'] - med['direct']:+8.1f}µ {med['pgbouncer'] - med['direct']:+8.1f}µ"
                      f" {med['agent'] - med['pgbouncer']:+8.1f}µ")
            opens = min(s[0] for s in seen[name])
            stmts = statistics.median(s[1] for s in seen[name])
            xacts = statistics.median(s[2] for s in seen[name])
            line = (f"{name:40s} {fmt(med['direct'], kind):>11s} {fmt(med['pgbouncer'], kind):>11s}"
                    f" {fmt(med['agent'], kind):>11s}{rs}  conn_open>={opens}"
                    f" statements~{stmts:.0f} (xacts~{xacts:.0f})")
            print(line, flush=True)
            rows.append(line)

        # Memory.
        time.sleep(1.0)
        idle_kib = rss_kib(agent.pid)
        n_idle = opts.idle
        before, during = measure_idle_rss(agent, cgroup, pg, n_idle)
        opens_total = audit.update().get("connection_open", 0)
        print()
        print(f"agent RSS idle after runs: {idle_kib / 1024:.1f} MiB")
        print(f"agent RSS with {n_idle} idle connections: {during / 1024:.1f} MiB "
              f"(before {before / 1024:.1f} MiB) -> "
              f"{(during - before) * 1024 / n_idle:.0f} bytes/connection")
        print(f"audit: {opens_total} connection_open events in total; "
              f"guardrail check: drop refused by no-drop")
    except BaseException as e:  # noqa: BLE001 (pytest.fail raises BaseException)
        failed = True
        if isinstance(e, KeyboardInterrupt):
            log("interrupted")
        else:
            traceback.print_exc()
            if agent is not None:
                print("--- agent output ---\n" + agent.output()[-4000:], file=sys.stderr)
    finally:
        for what, fn in (
            ("agent", lambda: agent and agent.stop()),
            ("pgbouncer", lambda: bouncer and bouncer.stop()),
            ("cgroup", lambda: cgroup and cgroup.destroy()),
            ("bpffs", lambda: bpffs and bpffs.unmount()),
            ("postgres", lambda: pg and pg.cleanup()),
        ):
            try:
                fn()
            except BaseException as e:  # noqa: BLE001
                failed = True
                log(f"cleanup of {what} failed: {e}")
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
