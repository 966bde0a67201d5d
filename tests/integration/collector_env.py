"""
The collector side of the integration tests: certificates made with the
product's own `dbward ca`, a dbward-collector process on SQLite or on the
session's PostgreSQL, its JSON API, and the `dbward` CLI.
"""

import copy
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dbward_env import dbward_binary, free_port, to_yaml, wait_until


def cli(*args, check=None, timeout=60, env=None):
    """Runs build/bin/dbward; returns the CompletedProcess (text)."""
    argv = [str(dbward_binary("dbward")), *map(str, args)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check is not None and proc.returncode != check:
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}, expected {check}\n"
                    f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc


class Pki:
    """A CA made by `dbward ca init`, and certificates it issued."""

    def __init__(self, directory):
        self.dir = Path(directory)
        cli("ca", "init", self.dir, check=0)

    @property
    def ca(self):
        return self.dir / "ca.crt"

    def issue(self, name, *extra):
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        if not cert.exists():
            cli("ca", "issue", self.dir, name, *extra, check=0)
        return cert, key


class CollectorFailure(AssertionError):
    pass


class Collector:
    """One dbward-collector process, its config and its API."""

    READY = re.compile(r"\bready\b")

    def __init__(self, config, workdir, name):
        self.config = copy.deepcopy(config)
        self.name = name
        self.config_path = Path(workdir) / f"{name}.yaml"
        self.proc = None
        self.returncode = None
        self._output = []
        self._lock = threading.Lock()
        self._ready = threading.Event()

    @property
    def url(self):
        return f"http://{self.config['http']}"

    @property
    def ingest(self):
        return self.config["listen"]

    @property
    def public_key(self):
        return Path(self.config["signing_key"] + ".pub")

    def start(self, wait=True):
        binary = dbward_binary("dbward-collector")
        if not binary.exists():
            pytest.fail(f"{binary} does not exist (run `make`, or set DBWARD_BIN)")
        self.config_path.write_text(to_yaml(self.config) + "\n")
        self.returncode = None
        self._ready.clear()
        self.proc = subprocess.Popen([str(binary), "--config", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._drainer = threading.Thread(target=self._drain, args=(self.proc.stdout,),
                                         daemon=True)
        self._drainer.start()
        if wait:
            self.wait_ready()
        return self

    def _drain(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            with self._lock:
                self._output.append(line)
            if self.READY.search(line):
                self._ready.set()
        stream.close()

    def output(self):
        with self._lock:
            return "".join(self._output)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reap()
                raise CollectorFailure(f"{self.name} exited {self.returncode} before ready"
                                       f"\n--- output ---\n{self.output()}")
            if time.monotonic() > deadline:
                raise CollectorFailure(f"{self.name} not ready after {timeout}s"
                                       f"\n--- output ---\n{self.output()}")

    def _reap(self, timeout=15):
        self.returncode = self.proc.wait(timeout)
        self._drainer.join(5)

    @property
    def running(self):
        return self.proc is not None and self.returncode is None

    def stop(self, timeout=15):
        """SIGTERM; requires exit 0 (86: a sanitizer report)."""
        if not self.running:
            return self.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._reap()
            raise CollectorFailure(f"{self.name} ignored SIGTERM\n{self.output()}")
        if self.returncode != 0:
            raise CollectorFailure(f"{self.name} exited {self.returncode}\n{self.output()}")
        return 0

    def kill9(self):
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self._reap()

    # --- the API -------------------------------------------------------------
    def get(self, path, **params):
        """(status, JSON body) of GET /api/v1/PATH?params."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def api(self, path, **params):
        status, body = self.get(path, **params)
        if status != 200:
            raise CollectorFailure(f"GET {path} {params}: HTTP {status} {body}")
        return body

    def events(self, **filters):
        """Every event matching @filters, following the pages."""
        out, after = [], 0
        while True:
            page = self.api("events", after=after, limit=10000, **filters)
            out += page["events"]
            if not page.get("next_after"):
                return out
            after = page["next_after"]

    def statements(self, **filters):
        return self.events(kind="statement", **filters)

    def wait_for(self, predicate, timeout=30, what="events", **filters):
        """Polls events(**filters) until predicate(events) holds; returns them."""
        found = []

        def check():
            found[:] = self.events(**filters)
            return predicate(found)
        try:
            wait_until(check, timeout, interval=0.2, what=what)
        except AssertionError:
            raise CollectorFailure(f"{what}: not seen in {timeout}s; have {len(found)} "
                                   f"events\n--- collector ---\n{self.output()[-4000:]}")
        return found


def collector_config(tmp_path, pki, storage, name="collector"):
    cert, key = pki.issue(name)
    return {
        "listen": f"127.0.0.1:{free_port()}",
        "http": f"127.0.0.1:{free_port()}",
        "storage": storage,
        "tls": {"cert": str(cert), "key": str(key), "ca": str(pki.ca)},
        "signing_key": str(Path(tmp_path) / f"{name}-ledger.key"),
        "log_level": "info",
    }


def agent_collector_overrides(pki, collector, spool, name="agent-1"):
    """Agent config keys that ship to @collector with a certificate for @name."""
    cert, key = pki.issue(name)
    return {
        "agent_id": name,
        "collector": {"address": collector.ingest, "cert": str(cert), "key": str(key),
                      "ca": str(pki.ca), "batch_ms": 50},
        "spool": str(spool),
    }


def chain_ok(events):
    """Seq runs 1..n without gaps per (agent, epoch), each prev_hash the hash before."""
    by_stream = {}
    for e in events:
        by_stream.setdefault((e["agent_id"], e["epoch"]), []).append(e)
    for stream, evs in by_stream.items():
        evs.sort(key=lambda e: e["seq"])
        seqs = [e["seq"] for e in evs]
        assert seqs == list(range(1, len(evs) + 1)), f"{stream}: seqs {seqs[:20]}..."
        for prev, cur in zip(evs, evs[1:]):
            assert cur["prev_hash"] == prev["hash"], f"{stream}: chain broken at {cur['seq']}"
    return True
