"""
The bench's own moving parts, beside what tests/integration/dbward_env.py
already provides: PgBouncer, the bare byte pipe, the collector the
production agent ships to, and per-process RSS / CPU readings.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dbward_env as E
from collector_env import Collector, Pki, collector_config

PGBOUNCER = "/usr/sbin/pgbouncer"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"# {msg}", file=sys.stderr, flush=True)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid):
    """User + system CPU of @pid, all its threads (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def stop_process(proc, sig=signal.SIGTERM, timeout=10):
    """Stops a Popen we started, by its pid; SIGKILL if it ignores @sig."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class AuditCounter:
    """Counts a JSON-lines audit file's events incrementally (it grows by millions)."""

    KINDS = (b"connection_open", b"statement", b"connection_close")

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
                    lines = (self.partial + chunk).split(b"\n")
                    self.partial = lines.pop()
                    for kind in self.KINDS:
                        needle = b'"kind":"' + kind + b'"'
                        name = kind.decode()
                        self.counts[name] = self.counts.get(name, 0) + \
                            sum(1 for ln in lines if needle in ln)
        except FileNotFoundError:
            pass
        return dict(self.counts)


class PgBouncer:
    """PgBouncer in session mode in front of @pg_port, run as postgres."""

    def __init__(self, workdir, pg_port, db):
        self.dir = Path(workdir) / "pgbouncer"
        self.port = E.free_port()
        self.pg_port = pg_port
        self.db = db
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        self.dir.mkdir()
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        conf = self.dir / "pgbouncer.ini"
        conf.write_text(
            "[databases]\n"
            f"{self.db} = host=127.0.0.1 port={self.pg_port} dbname={self.db}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = session\n"
            "max_client_conn = 200\n"
            "default_pool_size = 40\n"
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
                       "-d", self.db, "-Atc", "select 1"], check=False, env=E.clean_env())
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
        stop_process(self.proc, signal.SIGINT)


class BytePipe:
    """bench-bytepipe (a 2-thread epoll byte pipe) or bench-kpipe (a sockmap
    pipe) in front of @pg_port: both take LISTEN_PORT HOST PORT and say ready."""

    def __init__(self, binary, pg_port, cgroup=None):
        self.binary = Path(binary)
        self.port = E.free_port()
        self.pg_port = pg_port
        self.cgroup = cgroup  # run inside it: its sockets are the cgroup's
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        argv = [str(self.binary), str(self.port), "127.0.0.1", str(self.pg_port)]
        if self.cgroup:
            self.proc = E.popen_in_cgroup(self.cgroup, argv)
        else:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
        line = E.readline(self.proc.stdout, 10)
        if line.strip() != "ready":
            stop_process(self.proc)
            raise RuntimeError(f"{self.binary.name}: {line!r} {self.proc.stderr.read()}")
        return self

    def stop(self):
        stop_process(self.proc)


class LocalRedirect:
    """bench-lpipe: bpf/lpipe.bpf.c attached to @cgroup for connections to
    127.0.0.1:@port, where a byte pipe inside the same cgroup listens."""

    def __init__(self, binary, cgroup, port):
        self.argv = [str(binary), str(cgroup.path), str(port)]
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            line = E.readline(self.proc.stdout, 10)
        except BaseException:  # pytest.fail on a timeout: it holds BPF links
            stop_process(self.proc)
            raise
        if line.strip() != "ready":
            stop_process(self.proc)
            raise RuntimeError(f"bench-lpipe: {line!r} {self.proc.stderr.read()}")
        return self

    def stop(self):
        """Detaches; returns its counter line (what the sends did)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
            return ""
        return out.strip()


class Ledger:
    """A dbward-collector on SQLite and the certificates an agent ships with."""

    AGENT_ID = "bench-agent"

    def __init__(self, workdir):
        self.dir = Path(workdir) / "collector"
        self.dir.mkdir()
        self.pki = Pki(self.dir / "pki")
        cfg = collector_config(self.dir, self.pki, f"sqlite:{self.dir / 'audit.db'}")
        cfg["log_level"] = "warn"
        self.collector = Collector(cfg, self.dir, "collector")
        self.last_open_id = 0

    @property
    def pid(self):
        return self.collector.proc.pid

    def start(self):
        self.collector.start()
        return self

    def agent_config(self, spool):
        """The agent keys that ship to this collector (the production setup)."""
        cert, key = self.pki.issue(self.AGENT_ID)
        return {
            "agent_id": self.AGENT_ID,
            "collector": {"address": self.collector.ingest, "cert": str(cert),
                          "key": str(key), "ca": str(self.pki.ca)},
            "spool": str(spool),
        }

    def acked_seq(self):
        for a in self.collector.api("agents")["agents"]:
            if a["agent_id"] == self.AGENT_ID:
                return a["acked_seq"]
        return 0

    def new_connection_opens(self):
        """connection_open events stored since the last call."""
        n = 0
        while True:
            page = self.collector.api("events", kind="connection_open",
                                      after=self.last_open_id, limit=10000)
            for e in page["events"]:
                n += 1
                self.last_open_id = max(self.last_open_id, int(e["id"]))
            if not page.get("next_after"):
                return n

    def settle(self, timeout=60):
        """Waits until acked_seq stops moving: the agent's events are stored.
        Returns (acked_seq, seconds waited)."""
        start = time.monotonic()
        last = self.acked_seq()
        while time.monotonic() - start < timeout:
            time.sleep(0.4)  # two of the shipper's default 200 ms batches
            now = self.acked_seq()
            if now == last:
                return now, time.monotonic() - start
            last = now
        raise RuntimeError(f"collector still ingesting after {timeout}s (acked_seq {last})")

    def stop(self):
        self.collector.stop()
