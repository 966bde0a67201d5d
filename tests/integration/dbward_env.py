"""
The moving parts of an integration test, as plain classes the fixtures in
conftest.py own: a throwaway PostgreSQL, a test cgroup, a private bpffs,
a network namespace joined by veth, the agent process, and commands run
inside the cgroup.

Safety rules kept here, so no test has to remember them: BPF only ever
goes to a cgroup made by the test, pins only under a bpffs mounted by the
test, addresses only from 198.51.100.0/24 and loopback, and only processes
we started are killed, by pid. Every teardown is idempotent.
"""

import copy
import datetime
import difflib
import errno
import ipaddress
import json
import os
import pwd
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

import pgwire

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = str(PG_BIN / "psql")
PGBENCH = str(PG_BIN / "pgbench")
PG_DUMP = str(PG_BIN / "pg_dump")
PG_RESTORE = str(PG_BIN / "pg_restore")
PYTHON = "/usr/bin/python3"  # Debian's, the one with psycopg2
DEFAULT_BIN = REPO_ROOT / "build" / "bin"
TEST_NET = ipaddress.ip_network("198.51.100.0/24")  # TEST-NET-2, never routed

# Client scripts run inside the cgroup as `python3 -c SOURCE ARG`: passing
# the source avoids any question of whether `nobody` can read this tree.
PGWIRE_SRC = (HERE / "pgwire.py").read_text()
CONCURRENT_SRC = (HERE / "concurrent_clients.py").read_text()
HELD_SRC = (HERE / "held_connection.py").read_text()
WORKLOADS_SRC = (HERE / "workloads.py").read_text()


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls @predicate until it returns a truthy value; fails after @timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(argv, check=True, **kwargs):
    """subprocess.run with text output captured, bounded by a timeout."""
    kwargs.setdefault("timeout", 120)
    proc = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


# --- ports -----------------------------------------------------------------

_ports_handed_out = set()


def _ephemeral_low():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def _bindable(family, addr, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def free_port():
    """A TCP port free on every IPv4 and IPv6 address, never handed out twice.

    Chosen below the ephemeral range, so a client's autobound source port
    cannot take it between the check and the server's bind.
    """
    high = _ephemeral_low() - 1
    low = max(1024, high - 12000)
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _ports_handed_out:
            continue
        # Wildcard binds conflict with any specific bind on the port, so
        # these two checks cover 127.0.0.1, ::1 and 198.51.100.x alike.
        if _bindable(socket.AF_INET, "0.0.0.0", port) and _bindable(
            socket.AF_INET6, "::", port
        ):
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port found")


# --- cgroup v2 ---------------------------------------------------------------


def cgroup2_mount():
    """Where cgroup v2 is mounted (/sys/fs/cgroup or .../unified on hybrid hosts)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] == "cgroup2":
                return Path(fields[1].replace("\\040", " "))
    raise RuntimeError("no cgroup2 mount in /proc/self/mounts")


class Cgroup:
    """A child of the cgroup2 mount that this test made and will remove."""

    _seq = 0

    def __init__(self, root=None):
        Cgroup._seq += 1
        self.root = Path(root) if root else cgroup2_mount()
        self.name = f"dbward-test-{os.getpid()}-{Cgroup._seq}-{random.randrange(16**6):06x}"
        self.path = self.root / self.name
        self.procs_file = self.path / "cgroup.procs"

    def create(self):
        self.path.mkdir()
        return self

    @property
    def id(self):
        """The kernel's cgroup id: the inode number of the cgroup2 directory."""
        return os.stat(self.path).st_ino

    def pids(self):
        try:
            return [int(p) for p in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def attached_programs(self):
        """BPF programs attached to this cgroup itself, as bpftool lists them."""
        out = run(["bpftool", "-j", "cgroup", "show", str(self.path)]).stdout.strip()
        return json.loads(out) if out else []

    def kill_all(self):
        """SIGKILLs every process in the cgroup (all of them ours: the cgroup is)."""
        kill_file = self.path / "cgroup.kill"
        if kill_file.exists():
            try:
                kill_file.write_text("1")
                return
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def destroy(self):
        if not self.path.exists():
            return
        self.kill_all()
        deadline = time.monotonic() + 15
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            self.kill_all()
            time.sleep(0.05)

    def __str__(self):
        return str(self.path)


# --- bpffs --------------------------------------------------------------------


class Bpffs:
    """A bpffs mounted on a directory of our own; pins die with the umount."""

    def __init__(self, directory):
        self.path = Path(directory)
        self.preloaded = set()

    def mount(self):
        self.path.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "bpf", "bpf", str(self.path)])
        # The kernel's own iterators (maps.debug, progs.debug) come with it.
        self.preloaded = set(self._files())
        return self

    def unmount(self):
        if os.path.ismount(self.path):
            if run(["umount", str(self.path)], check=False).returncode != 0:
                run(["umount", "-l", str(self.path)], check=False)
        try:
            self.path.rmdir()
        except (FileNotFoundError, OSError):
            pass

    def _files(self):
        return [str(p.relative_to(self.path)) for p in self.path.rglob("*") if not p.is_dir()]

    def pins(self):
        """What was pinned under the mount since it was made (directories aside)."""
        return sorted(set(self._files()) - self.preloaded)


# --- network namespace ------------------------------------------------------


def _host_ipv4_in_use():
    used = set()
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for a in link.get("addr_info", []):
            used.add(ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network)
    for r in json.loads(run(["ip", "-j", "-4", "route", "show"]).stdout or "[]"):
        if r.get("dst", "default") != "default":
            used.add(ipaddress.ip_network(r["dst"], strict=False))
    return used


class Netns:
    """A network namespace joined to the host by a veth pair, like a pod.

    Each run takes a free /30 of 198.51.100.0/24 (the first is .1/.2), so
    two test runs on one host do not fight over a route.
    """

    def __init__(self):
        pid = os.getpid()
        self.name = f"dbwtest-{pid}"
        self.host_if = f"dbwh{pid}"[:15]
        self.ns_if = f"dbwn{pid}"[:15]
        self.host_addr = self.ns_addr = None
        self.prefixlen = 30

    def _pick_block(self):
        used = _host_ipv4_in_use()
        for block in TEST_NET.subnets(new_prefix=self.prefixlen):
            if not any(block.overlaps(u) for u in used):
                hosts = list(block.hosts())
                return str(hosts[0]), str(hosts[1])
        raise RuntimeError("no free /30 left in 198.51.100.0/24")

    def create(self):
        self.host_addr, self.ns_addr = self._pick_block()
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", self.host_if, "type", "veth",
             "peer", "name", self.ns_if, "netns", self.name])
        run(["ip", "addr", "add", f"{self.host_addr}/{self.prefixlen}", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        run(["ip", "-n", self.name, "addr", "add",
             f"{self.ns_addr}/{self.prefixlen}", "dev", self.ns_if])
        run(["ip", "-n", self.name, "link", "set", self.ns_if, "up"])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self

    def destroy(self):
        if run(["ip", "link", "show", self.host_if], check=False).returncode == 0:
            run(["ip", "link", "del", self.host_if], check=False)
        if self.name in run(["ip", "netns", "list"], check=False).stdout.split():
            run(["ip", "netns", "del", self.name], check=False)


# --- PostgreSQL -------------------------------------------------------------


class Postgres:
    """A throwaway PostgreSQL cluster run as the postgres user, trust auth.

    @hba replaces the trust-only pg_hba.conf, @conf is appended to
    postgresql.conf (e.g. ssl = on); both are written by initdb().
    """

    def __init__(self, port, listen_addrs, hba=None, conf=""):
        self.port = port
        self.listen_addrs = list(listen_addrs)
        self.hba = hba
        self.conf = conf
        self.dir = Path(tempfile.mkdtemp(prefix="dbward-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.running = False

    def _as_postgres(self, argv, **kwargs):
        return run(["runuser", "-u", "postgres", "--", *map(str, argv)],
                   cwd=self.dir, **kwargs)

    def initdb(self):
        self._as_postgres([PG_BIN / "initdb", "-D", self.data, "--auth=trust",
                           "--username=postgres", "--encoding=UTF8",
                           "--locale=C", "--no-sync", "--no-instructions"])
        (self.data / "pg_hba.conf").write_text(
            self.hba if self.hba is not None else
            "local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"
            f"host all all {TEST_NET} trust\n"
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"port = {self.port}\n"
                f"listen_addresses = '{','.join(self.listen_addrs)}'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "max_connections = 300\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "log_connections = on\n"
                "log_disconnections = on\n"
                "log_line_prefix = '%m [%p] %h '\n"
            )
            f.write(self.conf)

    def start(self):
        self._as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log_path,
                           "-w", "-t", "60", "start"])
        self.running = True

    def stop(self):
        if self.running and self.data.exists():
            self._as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast",
                               "-w", "-t", "60", "stop"], check=False)
        self.running = False

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def hba_path(self):
        return self.data / "pg_hba.conf"

    def reload(self):
        """Re-reads pg_hba.conf and postgresql.conf (pg_reload_conf)."""
        self.sql("select pg_reload_conf()")

    def connect(self, host="127.0.0.1", user="postgres", dbname="postgres", **kwargs):
        import psycopg2

        conn = psycopg2.connect(host=host, port=self.port, user=user, dbname=dbname,
                                connect_timeout=10, **kwargs)
        conn.autocommit = True
        return conn

    def sql(self, statement, **kwargs):
        conn = self.connect(**kwargs)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()


# --- commands inside the cgroup ---------------------------------------------


def resolve_user(user):
    """(uid, gid, name) of a user given by name or uid."""
    pw = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid, pw.pw_name


def cgroup_argv(cgroup, argv, user=None, netns=None):
    """@argv wrapped so it runs in @cgroup, then @netns, then as @user.

    The shell writes its own pid into cgroup.procs and execs, and so do
    `ip netns exec` and setpriv: the pid Popen reports is the command's.
    The cgroup is joined first because `ip netns exec` remounts /sys.
    """
    procs = Path(str(cgroup)) / "cgroup.procs"
    cmd = [str(a) for a in argv]
    if user is not None:
        uid, gid, _ = resolve_user(user)
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *cmd]
    if netns is not None:
        cmd = ["ip", "netns", "exec", getattr(netns, "name", netns), *cmd]
    return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *cmd]


def clean_env(extra=None):
    """The environment without libpq settings that could redirect a client."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra or {})
    return env


def popen_in_cgroup(cgroup, argv, user=None, netns=None, env=None, **kwargs):
    """Starts @argv inside @cgroup; Popen.pid is the command's own pid."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    return subprocess.Popen(cgroup_argv(cgroup, argv, user, netns),
                            env=clean_env(env), **kwargs)


def run_in_cgroup(cgroup, argv, user=None, netns=None, env=None, input=None,
                  timeout=60, check=False, merge_stderr=False):
    """Runs @argv inside @cgroup to completion; the result carries .pid.

    With @merge_stderr, stderr goes to the stdout pipe (interleaved as the
    program wrote it) and the result's stderr is empty.
    """
    proc = popen_in_cgroup(cgroup, argv, user, netns, env,
                           stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                           stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{argv} in {cgroup} did not finish in {timeout}s\n"
                    f"stdout: {out}\nstderr: {err}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err or "")
    result.pid = proc.pid
    if check and result.returncode != 0:
        pytest.fail(f"{argv} in {cgroup} exited {result.returncode}\n"
                    f"stdout: {out}\nstderr: {err}")
    return result


def run_direct(argv, env=None, input=None, timeout=60, check=False, merge_stderr=False):
    """run_in_cgroup's twin for the test's own cgroup: never intercepted.

    Same environment cleaning, same pipes, same result shape (.pid), so a
    differential test changes nothing but where the process runs.
    """
    proc = subprocess.Popen([str(a) for a in argv], env=clean_env(env), text=True,
                            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{argv} did not finish in {timeout}s\nstdout: {out}\nstderr: {err}")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err or "")
    result.pid = proc.pid
    if check and result.returncode != 0:
        pytest.fail(f"{argv} exited {result.returncode}\nstdout: {out}\nstderr: {err}")
    return result


def psql_argv(host, port, sql="select 1", user="app", dbname="orders",
              application_name="dbward-test", connect_timeout=5, conninfo_extra=""):
    """An unmodified psql, quiet and unaligned, that cannot hang on connect.

    @conninfo_extra is appended to the connection string (e.g. "sslmode=require").
    """
    conninfo = (f"host={host} port={port} user={user} dbname={dbname} "
                f"application_name={application_name} connect_timeout={connect_timeout} "
                f"{conninfo_extra}").rstrip()
    return [PSQL, "-X", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]


def wire_client(cgroup, spec, user=None, netns=None, timeout=60):
    """Runs pgwire.py with @spec inside @cgroup; returns its JSON result."""
    text = json.dumps(spec)
    if len(text) < 65536:
        res = run_in_cgroup(cgroup, [PYTHON, "-c", PGWIRE_SRC, text],
                            user=user, netns=netns, timeout=timeout)
    else:  # too long for one argument (MAX_ARG_STRLEN): on stdin
        res = run_in_cgroup(cgroup, [PYTHON, "-c", PGWIRE_SRC, "-"], input=text,
                            user=user, netns=netns, timeout=timeout)
    if res.returncode != 0:
        pytest.fail(f"pgwire client failed ({res.returncode}): {res.stderr}")
    return json.loads(res.stdout)


def readline(pipe, timeout):
    """One line from a text pipe, or fail after @timeout seconds."""
    sel = selectors.DefaultSelector()
    sel.register(pipe, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            pytest.fail(f"no line from child within {timeout}s")
        return pipe.readline()
    finally:
        sel.close()


# --- agent config -----------------------------------------------------------


class Raw(str):
    """A YAML scalar written exactly as given (e.g. 0xdb00)."""


_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:@+-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "~"}


def _yaml_scalar(value):
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """Block-style YAML for the nested dicts/lists/scalars of a config."""
    pad = " " * indent
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(value, indent + 2))
        elif isinstance(value, list):
            lines.append(f"{pad}{key}:")
            for item in value:
                if isinstance(item, dict):
                    body = to_yaml(item, indent + 4).splitlines()
                    lines.append(f"{pad}  - {body[0].lstrip()}")
                    lines.extend(body[1:])
                else:
                    lines.append(f"{pad}  - {_yaml_scalar(item)}")
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    return "\n".join(lines)


def merge(base, overrides):
    """@base updated recursively with @overrides (a None value deletes a key)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def host_port(addr):
    """("127.0.0.1", 5432) from "127.0.0.1:5432" or "[::1]:5432"."""
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), int(port)


def dbward_binary(name):
    """build/bin/NAME, or under $DBWARD_BIN (the sanitized build, say)."""
    base = Path(os.environ.get("DBWARD_BIN") or DEFAULT_BIN)
    base = base if base.is_absolute() else REPO_ROOT / base
    return base / name


def agent_binary():
    if os.environ.get("DBWARD_AGENT"):
        path = Path(os.environ["DBWARD_AGENT"])
        return path if path.is_absolute() else REPO_ROOT / path
    return dbward_binary("dbward-agent")


# --- the agent process ------------------------------------------------------


class AgentFailure(AssertionError):
    pass


class Agent:
    """One dbward-agent process: its config, its output, its audit file."""

    READY = re.compile(r"\bready\b")

    def __init__(self, binary, config, workdir, name, cgroup=None):
        self.binary = Path(binary)
        self.config = copy.deepcopy(config)
        self.name = name
        self.cgroup = cgroup
        self.config_path = Path(workdir) / f"{name}.yaml"
        self.log_path = Path(workdir) / f"{name}.log"
        self.proc = None
        self.returncode = None
        self._output = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._threads = []

    # Addresses, as the tests use them.
    @property
    def listen(self):
        return host_port(self.config["listen"])

    @property
    def audit_path(self):
        return Path(self.config["audit"]["file"])

    @property
    def heartbeat_timeout(self):
        return self.config.get("heartbeat_timeout_ms", 1000) / 1000.0

    def write_config(self):
        self.config_path.write_text(to_yaml(self.config) + "\n")

    def start(self):
        if not self.binary.exists():
            pytest.fail(f"agent binary {self.binary} does not exist (run `make`, "
                        "or set DBWARD_BIN)")
        self.write_config()
        argv = [str(self.binary), "--config", str(self.config_path)]
        if self.cgroup is not None:
            argv = cgroup_argv(self.cgroup, argv)
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for stream, label in ((self.proc.stderr, ""), (self.proc.stdout, "[stdout] ")):
            t = threading.Thread(target=self._drain, args=(stream, label), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _drain(self, stream, label):
        # Keeps the pipes empty, so a chatty agent never blocks on a write.
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            with self._lock:
                self._output.append(label + line)
                self._log.write(label + line)
                self._log.flush()
            if not label and self.READY.search(line):
                self._ready.set()
        stream.close()

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        with self._lock:
            return "".join(self._output)

    def wait_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reap()
                raise AgentFailure(f"{self.name} exited {self.returncode} before ready\n"
                                   f"--- agent output ---\n{self.output()}")
            if time.monotonic() > deadline:
                raise AgentFailure(f"{self.name} not ready after {timeout}s\n"
                                   f"--- agent output ---\n{self.output()}")
        return self

    def _reap(self, timeout=15):
        self.returncode = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        self._log.close()

    @property
    def running(self):
        return self.proc is not None and self.returncode is None

    def send_signal(self, sig):
        if self.running:
            os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the agent with @sig and requires exit code 0 (86: ASan leak)."""
        if self.proc is None or self.returncode is not None:
            return self.returncode
        self.send_signal(sig)
        try:
            self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._reap()
            raise AgentFailure(f"{self.name} ignored {signal.Signals(sig).name} for "
                               f"{timeout}s and was killed\n--- agent output ---\n"
                               f"{self.output()}")
        if self.returncode != 0:
            raise AgentFailure(f"{self.name} exited {self.returncode} on "
                               f"{signal.Signals(sig).name}\n--- agent output ---\n"
                               f"{self.output()}")
        return self.returncode

    def kill9(self):
        """SIGKILL: no cleanup runs, so the pinned programs stay attached."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self._reap()

    # Audit trail.
    def audit_events(self, kind=None):
        try:
            text = self.audit_path.read_text()
        except FileNotFoundError:
            return []
        events = []
        lines = text.split("\n")
        for n, line in enumerate(lines[:-1], 1):  # the last piece may be half written
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as e:
                raise AgentFailure(f"{self.audit_path}:{n}: not JSON ({e}): {line!r}")
            if kind is None or event.get("kind") == kind:
                events.append(event)
        return events

    def wait_for_event(self, predicate, timeout=10, kind=None):
        """The first audit event (of @kind) that satisfies @predicate."""
        def find():
            return next((e for e in self.audit_events(kind) if predicate(e)), None)
        deadline = time.monotonic() + timeout
        while True:
            event = find()
            if event is not None:
                return event
            if time.monotonic() > deadline:
                raise AgentFailure(
                    f"no {kind or 'audit'} event matching in {timeout}s; events:\n"
                    + "\n".join(json.dumps(e) for e in self.audit_events())
                    + f"\n--- agent output ---\n{self.output()}")
            time.sleep(0.05)

    def wait_for_events(self, predicate, count, timeout=30, kind=None):
        """At least @count audit events (of @kind) satisfying @predicate."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.audit_events(kind) if predicate(e)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AgentFailure(f"{len(found)} of {count} {kind or 'audit'} events "
                                   f"after {timeout}s\n--- agent output ---\n"
                                   f"{self.output()}")
            time.sleep(0.1)


# --- what tests check ----------------------------------------------------------


def marker(label):
    """An application_name no other connection in the run will carry."""
    return f"{label}-{uuid.uuid4().hex[:10]}"


def by_app(name):
    return lambda e: e.get("application_name") == name


def startup(app, user="app", database="orders"):
    return {"user": user, "database": database, "application_name": app}


def probe(cgroup, host, port, app, **kwargs):
    """A raw client in @cgroup that logs in and asks the server its source port."""
    return wire_client(cgroup, {"host": host, "port": port, "startup": startup(app),
                                "queries": ["select inet_client_port()"]}, **kwargs)


def _port_seen_by_server(result):
    assert "connect_error" not in result, result
    found = pgwire.rows(result)
    assert found, f"the query got no row: {result}"
    return int(found[0][0])


def assert_went_through_agent(result):
    """The server saw another source port than the client's: a proxy in between."""
    assert _port_seen_by_server(result) != result["sockname"][1], result


def assert_went_direct(result):
    """The server saw the client's own source port: nothing in between."""
    assert _port_seen_by_server(result) == result["sockname"][1], result


def assert_intercepted(agent, pid, timeout=10):
    """The agent opened a session for a connection made by process @pid.

    A differential test is only worth something if the second run really
    went through the agent; this is the proof.
    """
    return agent.wait_for_event(lambda e: e.get("pid") == pid, timeout=timeout,
                                kind="connection_open")


def assert_same_output(direct, through_agent, what="output", context=3, max_lines=80):
    """@direct == @through_agent (str or bytes), else fail with a short diff."""
    if direct == through_agent:
        return
    if isinstance(direct, bytes) or isinstance(through_agent, bytes):
        a, b = bytes(direct), bytes(through_agent)
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        pytest.fail(f"{what} differs: {len(a)} bytes direct, {len(b)} through the agent, "
                    f"first difference at byte {at}: direct {a[at:at + 32]!r} vs "
                    f"agent {b[at:at + 32]!r}")
    diff = list(difflib.unified_diff(str(direct).splitlines(), str(through_agent).splitlines(),
                                     "direct", "through the agent", n=context, lineterm=""))
    more = f"\n... {len(diff) - max_lines} more diff lines" if len(diff) > max_lines else ""
    pytest.fail(f"{what} differs between the direct run and the run through the agent:\n"
                + "\n".join(diff[:max_lines]) + more)


# --- TLS material -------------------------------------------------------------


def _openssl(*args, cwd):
    run(["openssl", *map(str, args)], cwd=cwd, timeout=60)


def make_ca(directory, name):
    """A self-signed CA in @directory: (cert, key) paths named after @name."""
    directory = Path(directory)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "2", "-subj", f"/CN=dbward test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", key, "-out", cert, cwd=directory)
    return cert, key


def make_cert(directory, name, ca, san, owner=None):
    """A server certificate for @san (e.g. "IP:127.0.0.1") signed by @ca.

    @owner (a user name) gets the key file, mode 0600, as PostgreSQL wants.
    """
    directory = Path(directory)
    ca_cert, ca_key = ca
    cert, key, csr = (directory / f"{name}.crt", directory / f"{name}.key",
                      directory / f"{name}.csr")
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-subj", f"/CN={name}", "-keyout", key, "-out", csr, cwd=directory)
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "2", "-extfile", ext, "-out", cert, cwd=directory)
    os.chmod(key, 0o600)
    if owner is not None:
        uid, gid, _ = resolve_user(owner)
        os.chown(key, uid, gid)
        os.chown(cert, uid, gid)
    return cert, key


# --- differential runs --------------------------------------------------------


def normalise_backend_key(result):
    """A pgwire result with BackendKeyData's body (backend pid, secret) blanked.

    The one message that must differ between two connections.
    """
    out = copy.deepcopy(result)
    for msg in out.get("messages", []):
        if msg["type"] == "K":
            msg.pop("body", None)
    for key in ("pid", "sockname"):
        out.pop(key, None)
    return out


class Differential:
    """Runs one workload twice: direct, then through the agent.

    Direct means from the test process's own cgroup, where no program is
    attached; through the agent means inside the test cgroup, and the
    agent's connection_open for that process is required, so a run that
    slipped past the agent cannot pass for a transparent one.
    """

    def __init__(self, agent, cgroup):
        self.agent = agent
        self.cgroup = cgroup

    def direct(self, argv, env=None, input=None, timeout=60, merge_stderr=False):
        return run_direct(argv, env=env, input=input, timeout=timeout,
                          merge_stderr=merge_stderr)

    def through_agent(self, argv, env=None, input=None, timeout=60, merge_stderr=False):
        res = run_in_cgroup(self.cgroup, argv, env=env, input=input, timeout=timeout,
                            merge_stderr=merge_stderr)
        try:
            assert_intercepted(self.agent, res.pid)
        except AgentFailure as e:
            pytest.fail(f"{argv[0]} in the cgroup (exit {res.returncode}) was not seen by "
                        f"the agent\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr}\n{e}")
        return res

    def run(self, argv, **kwargs):
        """(direct, through_agent) CompletedProcess results of @argv."""
        return self.direct(argv, **kwargs), self.through_agent(argv, **kwargs)

    def workload(self, spec, timeout=60):
        """(direct, through_agent) JSON outputs of workloads.py with @spec."""
        argv = [PYTHON, "-c", WORKLOADS_SRC, json.dumps(spec)]
        direct, through = self.run(argv, timeout=timeout)
        for side, res in (("direct", direct), ("through the agent", through)):
            if res.returncode != 0:
                pytest.fail(f"workload {spec['workload']} failed {side} "
                            f"({res.returncode}):\n{res.stderr}")
        return (json.loads(direct.stdout.splitlines()[-1]),
                json.loads(through.stdout.splitlines()[-1]))

    def wire(self, spec, timeout=60):
        """(direct, through_agent) pgwire results, BackendKeyData blanked."""
        direct = pgwire.run(spec)
        through = wire_client(self.cgroup, spec, timeout=timeout)
        assert_intercepted(self.agent, through["pid"])
        return normalise_backend_key(direct), normalise_backend_key(through)


# --- test data ----------------------------------------------------------------


def copy_line(i):
    """Row @i in COPY text format, already in the form the server prints.

    Columns: id int, name text, amount numeric, note text, at timestamptz
    (printed with TimeZone UTC), tags text[]; with escapes, NULLs, unicode.
    """
    specials = ["plain", "tab\\there", "new\\nline", "back\\\\slash", "ünïcødé 日本 🐘",
                "quote ' and \"", "cr\\rhere", ""]
    name = f"row {i} {specials[i % len(specials)]}"
    amount = f"{i * 3 // 2}.{i % 100:02d}"
    note = "\\N" if i % 7 == 0 else "x" * (i % 50)
    at = (datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i * 61)).strftime(
        "%Y-%m-%d %H:%M:%S+00")
    tags = "\\N" if i % 5 == 0 else ("{a,b}" if i % 2 else '{"x y",z,NULL}')
    return f"{i}\t{name}\t{amount}\t{note}\t{at}\t{tags}\n"


def copy_rows(n):
    """Rows 1..@n of copy_line: a COPY FROM file, and what COPY TO gives back."""
    return "".join(copy_line(i) for i in range(1, n + 1))
