"""
The BPF connect hook's cost (issue target 3): bench-connect run inside a
test cgroup of its own, with and without an agent attached to that cgroup,
interleaved over rounds (the order flips each round).

With the agent, bench-connect's TARGET port is the agent's only target, so
those connects are redirected to the agent (and never reach bench-connect's
own listener, which is checked); its OTHER port is not a target, so those
connects only pass through the hooks (cgroup/connect4 finds no target,
sockops finds no origin). Loopback only; the cgroup is removed afterwards.

While the agent is attached, the kernel's own accounting of BPF run time
(BPF_ENABLE_STATS: run_time_ns and run_cnt per program, kept only while
the bench holds the fd it returns) gives each of the agent's programs' ns
per run: the hook's cost without the noise of the connect around it. The
accounting itself adds two clock reads per run, so these are upper bounds.
"""

import ctypes
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import dbward_env as E
from services import log

LINE = re.compile(r"^block=\d+ port=(other|target) loop_ns=(\d+) connect_ns=(\d+)$", re.M)
ACCEPTED = re.compile(r"^accepted other=(\d+) target=(\d+)$", re.M)


def _run(binary, cgroup, other, target, iterations, blocks):
    r = E.run_in_cgroup(cgroup, [binary, other, target, iterations, blocks], timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"bench-connect exited {r.returncode}: {r.stderr}")
    acc = ACCEPTED.search(r.stdout)
    if not acc:
        raise RuntimeError(f"bench-connect output: {r.stdout}")
    per_port = {"other": [], "target": []}
    for port, loop_ns, connect_ns in LINE.findall(r.stdout):
        per_port[port].append((int(loop_ns), int(connect_ns)))
    return per_port, int(acc.group(1)), int(acc.group(2))


SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


def enable_bpf_stats():
    """An fd that keeps BPF run-time accounting on until closed; None if refused."""
    if SYS_BPF is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr = (ctypes.c_uint32 * 2)(BPF_STATS_RUN_TIME, 0)  # union bpf_attr: enable_stats.type
    fd = libc.syscall(ctypes.c_long(SYS_BPF), ctypes.c_long(BPF_ENABLE_STATS), attr,
                      ctypes.c_uint(ctypes.sizeof(attr)))
    return fd if fd >= 0 else None


def _bpftool(*args):
    r = subprocess.run([shutil.which("bpftool") or "/usr/sbin/bpftool", "-j", *args],
                       capture_output=True, text=True, timeout=30, check=True)
    return json.loads(r.stdout or "null")


def prog_stats(pin_dir):
    """{program name: (run_time_ns, run_cnt)} of the programs behind the links
    the agent pinned in @pin_dir."""
    out = {}
    for link in sorted(Path(pin_dir).rglob("*")):
        if not link.is_file():
            continue
        try:
            info = _bpftool("link", "show", "pinned", str(link))
        except subprocess.CalledProcessError:
            continue  # a pinned map, not a link
        if not info or "prog_id" not in info:
            continue
        prog = _bpftool("prog", "show", "id", str(info["prog_id"]))
        out[prog.get("name", str(prog["id"]))] = (prog.get("run_time_ns", 0),
                                                  prog.get("run_cnt", 0))
    return out


def _stats_delta(before, after):
    return {name: (ns - before.get(name, (0, 0))[0], cnt - before.get(name, (0, 0))[1])
            for name, (ns, cnt) in after.items()}


def hook_runs(samples, binary, cgroup, other, target, spare, iterations, blocks, pin_dir):
    """The agent's programs' run time for connects half to a target, half not
    ("mixed"), then for the same number to non-targets only ("other": the
    target port replaced by @spare, which no rule names)."""
    total = iterations * blocks
    for kind, second in (("mixed", target), ("other", spare)):
        before = prog_stats(pin_dir)
        _, acc_other, acc_second = _run(binary, cgroup, other, second, iterations, blocks)
        want = 0 if kind == "mixed" else total
        if acc_other != total or acc_second != want:
            raise RuntimeError(f"connect bench (BPF run time, {kind}): accepted "
                               f"{acc_other} and {acc_second}, expected {total} and {want}")
        for name, (ns, cnt) in _stats_delta(before, prog_stats(pin_dir)).items():
            samples["hook_ns"][kind] += ns
            runs = samples["hook_runs"].setdefault(name, {"mixed": [0, 0], "other": [0, 0]})
            runs[kind][0] += ns
            runs[kind][1] += cnt


def pods_hook_cost(bin_dir, workdir, bpffs, config, binary, cgroup, ports, iterations, blocks):
    """The kernel accounting again, for an agent with listen_pods (a veth
    to a namespace of our own from 198.51.100.0/24): then sockops is
    attached too. The connects are the same host-namespace ones."""
    other, target, spare = ports
    netns = E.Netns()
    agent = None
    pods = {"hook_ns": {"mixed": 0, "other": 0}, "hook_runs": {}}
    try:
        netns.create()
        pods_config = dict(config, listen=f"127.0.0.1:{E.free_port()}",
                           listen_pods=f"{netns.host_addr}:{E.free_port()}")
        pods_config["intercept"] = dict(config["intercept"],
                                        pin_dir=str(bpffs.path / "connect-pods"))
        agent = E.Agent(bin_dir / "dbward-agent", pods_config, workdir,
                        "connect-agent-pods").start()
        agent.wait_ready(30)
        hook_runs(pods, binary, cgroup, other, target, spare, iterations, blocks,
                  pods_config["intercept"]["pin_dir"])
    finally:
        if agent is not None:
            agent.stop()
        netns.destroy()
    pods["connects"] = 2 * iterations * blocks
    return pods


def measure(bin_dir, workdir, bpffs, rounds, iterations, blocks):
    """{(state, port): [(loop_ns, connect_ns), ...]} over every block of every round."""
    binary = str(bin_dir / "bench-connect")
    other, target = E.free_port(), E.free_port()
    cgroup = E.Cgroup()
    cgroup.name = f"dbward-bench-connect-{cgroup.name.split('-', 2)[2]}"
    cgroup.path = cgroup.root / cgroup.name
    cgroup.procs_file = cgroup.path / "cgroup.procs"
    cgroup.create()
    config = {
        "listen": f"127.0.0.1:{E.free_port()}",
        "fail": "open",
        "log_level": "error",
        "intercept": {
            "cgroup": str(cgroup.path),
            "pin_dir": str(bpffs.path / "connect"),
            "upstream_mark": E.Raw("0xdb01"),
            "targets": [{"port": target, "upstream_tls": "disable"}],
        },
    }
    samples = {(s, p): [] for s in ("off", "on") for p in ("other", "target")}
    # BPF run time, summed over the "on" rounds: {"mixed" | "other": ns, ...}
    samples["hook_ns"] = {"mixed": 0, "other": 0}
    samples["hook_runs"] = {}
    spare = E.free_port()
    total = iterations * blocks
    stats_fd = enable_bpf_stats()
    try:
        for rnd in range(rounds):
            for state in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                agent = None
                if state == "on":
                    agent = E.Agent(bin_dir / "dbward-agent", config, workdir,
                                    f"connect-agent-{rnd}").start()
                    agent.wait_ready(30)
                try:
                    per_port, acc_other, acc_target = _run(binary, cgroup, other, target,
                                                           iterations, blocks)
                    if agent and stats_fd is not None:
                        hook_runs(samples, binary, cgroup, other, target, spare,
                                  iterations, blocks, config["intercept"]["pin_dir"])
                finally:
                    if agent is not None:
                        agent.stop()
                # Proof of what was measured: with the agent, no target connect
                # reached our listener; without it, all did.
                want_target = 0 if state == "on" else total
                if acc_other != total or acc_target != want_target:
                    raise RuntimeError(f"connect bench ({state}): accepted other={acc_other} "
                                       f"target={acc_target}, expected {total} and "
                                       f"{want_target}")
                for port, values in per_port.items():
                    samples[(state, port)] += values
                med = {p: statistics.median(v[0] for v in vals) for p, vals in per_port.items()}
                log(f"connect round {rnd + 1} agent {state:3s}: other {med['other']} ns, "
                    f"target {med['target']} ns per socket+connect+close")
        if stats_fd is not None:
            samples["pods"] = pods_hook_cost(bin_dir, workdir, bpffs, config, binary, cgroup,
                                             (other, target, spare), iterations, blocks)
    finally:
        if stats_fd is not None:
            os.close(stats_fd)
        cgroup.destroy()
    samples["connects"] = 2 * total * rounds  # per kind, over the "on" rounds
    return samples


def report(samples):
    """Lines for the summary: medians and with-minus-without differences."""
    lines = []
    for stat in (statistics.median, min):
        for port, what in (("other", "not a target"), ("target", "a target (redirected)")):
            for i, name in ((0, "socket+connect+close"), (1, "connect() alone")):
                off = stat(v[i] for v in samples[("off", port)])
                on = stat(v[i] for v in samples[("on", port)])
                lines.append(f"{stat.__name__:6s} connect to {what:21s} {name:20s} "
                             f"without agent {off / 1000:6.2f} µs  with {on / 1000:6.2f} µs  "
                             f"difference {(on - off) / 1000:+6.2f} µs")
    n = len(samples[("off", "other")])
    lines.append(f"(over {n} blocks per figure, each the mean of one block's connects; "
                 "min: the least disturbed block)")
    runs = samples.get("hook_runs") or {}
    connects = samples.get("connects") or 0
    if not runs or not connects:
        lines.append("BPF run time: not available (BPF_ENABLE_STATS refused, or no pinned "
                     "links found)")
        return lines
    lines += _hook_lines("", samples)
    if samples.get("pods"):
        lines += _hook_lines(" with listen_pods (sockops attached too)", samples["pods"])
    return lines


def _hook_lines(which, samples):
    runs, connects = samples["hook_runs"], samples["connects"]
    # "mixed" is half targets, half not; "other" the same count, none targets.
    other = samples["hook_ns"]["other"] / connects
    target = 2 * samples["hook_ns"]["mixed"] / connects - other
    lines = [f"BPF run time per connect{which} (kernel accounting, every program of the "
             f"agent): not a target {other:5.0f} ns, a target {target:5.0f} ns"]
    for name, kinds in sorted(runs.items()):
        (m_ns, m_cnt), (o_ns, o_cnt) = kinds["mixed"], kinds["other"]
        t_ns, t_cnt = 2 * m_ns - o_ns, 2 * m_cnt - o_cnt  # the target half, doubled
        parts = []
        for what, ns, cnt in (("not a target", o_ns, o_cnt), ("a target", t_ns, t_cnt)):
            if cnt > 0:
                parts.append(f"{what}: {cnt / connects:4.2f} runs x {ns / cnt:5.0f} ns")
        if parts:
            lines.append(f"  {name:18s} " + "; ".join(parts))
    return lines
