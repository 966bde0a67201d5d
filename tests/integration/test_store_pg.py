"""
The storage unit tests (tests/unit/test_store.c) run every case on SQLite;
here the same cases run on the session's real PostgreSQL, so both backends
pass one suite in every `make test`.
"""

import os
import re
import subprocess

from dbward_env import dbward_binary


def test_store_suite_passes_on_postgresql(pg):
    env = dict(os.environ,
               DBWARD_TEST_PG_URL=f"postgresql://postgres@127.0.0.1:{pg.port}/postgres")
    res = subprocess.run([str(dbward_binary("unit-tests")), "--filter", "store_pg/*",
                          "--jobs", "1"], capture_output=True, text=True, env=env,
                         timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    synthesis = re.search(r"Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+)", out)
    assert synthesis, out[-2000:]
    tested, passing, failing = map(int, synthesis.groups())
    assert tested >= 20 and passing == tested and failing == 0, synthesis.group(0)
    assert "Skipping" not in out and "not set" not in out, "no case may skip"
    assert not re.search(r"ERROR: (Leak|Address)Sanitizer|runtime error:", out), out[-6000:]
