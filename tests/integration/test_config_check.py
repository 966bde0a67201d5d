"""
`dbward-agent --config FILE --check`: a good config exits 0; each bad one
exits non-zero naming FILE:LINE and the reason, and nothing gets attached.
"""

import re
import shutil
import subprocess

import pytest

from dbward_env import agent_binary, free_port, run

GOOD = """\
listen: 127.0.0.1:{listen_port}
listen6: "[::1]:{listen6_port}"
fail: closed
heartbeat_timeout_ms: 1000
intercept:
  cgroup: {cgroup}
  pin_dir: {pin_dir}
  upstream_mark: 0xdb00
  targets:
    - port: 5432
      cidr: 127.0.0.0/8
audit:
  file: {audit}
"""


@pytest.fixture
def write_config(test_cgroup, bpffs, tmp_path):
    """write_config(edit=None) -> path of GOOD, with @edit(lines) applied to its lines."""
    values = {"listen_port": free_port(), "listen6_port": free_port(),
              "cgroup": test_cgroup.path, "pin_dir": bpffs.path / "dbward",
              "audit": tmp_path / "audit.jsonl"}
    count = [0]

    def write(edit=None):
        lines = GOOD.format(**values).splitlines()
        if edit:
            edit(lines)
        count[0] += 1
        path = tmp_path / f"check-{count[0]}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def check(path):
    binary = agent_binary()
    if not binary.exists():
        pytest.fail(f"agent binary {binary} does not exist (run `make`)")
    return subprocess.run([str(binary), "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=30)


def assert_refused_at(path, line):
    res = check(path)
    assert res.returncode != 0, f"bad config accepted: {path.read_text()}\n{res.stderr}"
    where = f"{path}:{line}:" if line is not None else None
    if where:
        assert where in res.stderr, res.stderr
    else:
        assert re.search(re.escape(str(path)) + r":\d+: \S", res.stderr), res.stderr
    return res


def replace_line(number, text):
    def edit(lines):
        lines[number - 1] = text
    return edit


def test_check_accepts_good_config(write_config):
    res = check(write_config())
    assert res.returncode == 0, res.stderr


def test_check_attaches_nothing(write_config, test_cgroup, bpffs):
    assert check(write_config()).returncode == 0
    assert not bpffs.pins(), bpffs.pins()
    if shutil.which("bpftool"):
        shown = run(["bpftool", "cgroup", "show", str(test_cgroup.path)]).stdout
        assert not shown.strip(), shown


def test_check_refuses_unknown_key_with_its_line(write_config):
    def edit(lines):
        lines.insert(2, "no_such_key: 1")
    assert_refused_at(write_config(edit), 3)


def test_check_refuses_unknown_nested_key_with_its_line(write_config):
    def edit(lines):
        lines.insert(7, "  no_such_key: 1")
    assert_refused_at(write_config(edit), 8)


@pytest.mark.parametrize("line, text", [
    (1, "listen: 127.0.0.1:99999"),
    (1, "listen: 127.0.0.1:0"),
    (1, "listen: 127.0.0.1:http"),
    (1, "listen: 127.0.0.1"),
    (10, "    - port: 0"),
    (10, "    - port: 65536"),
    (10, "    - port: abc"),
    (10, "    - port: -1"),
], ids=["listen-99999", "listen-0", "listen-name", "listen-no-port",
        "target-0", "target-65536", "target-abc", "target-negative"])
def test_check_refuses_bad_port_with_its_line(write_config, line, text):
    assert_refused_at(write_config(replace_line(line, text)), line)


def test_check_refuses_bad_listen_address_with_its_line(write_config):
    assert_refused_at(write_config(replace_line(1, "listen: 300.0.0.1:15432")), 1)


def test_check_refuses_bad_cidr_with_its_line(write_config):
    assert_refused_at(write_config(replace_line(11, "      cidr: 127.0.0.0/33")), 11)


def test_check_refuses_bad_fail_mode_with_its_line(write_config):
    assert_refused_at(write_config(replace_line(3, "fail: sometimes")), 3)


def test_check_refuses_missing_intercept_cgroup(write_config):
    def edit(lines):
        del lines[5]
    res = assert_refused_at(write_config(edit), None)
    assert "cgroup" in res.stderr, res.stderr


def test_check_refuses_missing_targets(write_config):
    def edit(lines):
        del lines[8:11]
    res = assert_refused_at(write_config(edit), None)
    assert "target" in res.stderr, res.stderr


def test_check_refuses_malformed_yaml_with_its_line(write_config):
    assert_refused_at(write_config(replace_line(4, "heartbeat_timeout_ms: [1000")), None)


def test_check_refuses_missing_file(tmp_path):
    path = tmp_path / "does-not-exist.yaml"
    res = check(path)
    assert res.returncode != 0
    assert str(path) in res.stderr, res.stderr
