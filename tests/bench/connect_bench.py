"""
The BPF connect hook's cost (issue target 3): bench-connect run inside a
test cgroup of its own, with and without an agent attached to that cgroup,
interleaved over rounds (the order flips each round).

With the agent, bench-connect's TARGET port is the agent's only target, so
those connects are redirected to the agent (and never reach bench-connect's
own listener, which is checked); its OTHER port is not a target, so those
connects only pass through the hooks (cgroup/connect4 finds no target,
sockops finds no origin). Loopback only; the cgroup is removed afterwards.
"""

import re
import statistics

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
    total = iterations * blocks
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
    finally:
        cgroup.destroy()
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
    return lines
