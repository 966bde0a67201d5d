"""
Password authentication through the agent: SCRAM-SHA-256, MD5 and
cleartext password exchanges pass through untouched (the agent never
knows a password), so the right password logs in and a wrong one fails
with exactly the server's error, SQLSTATE 28P01, as it does direct.

The roles and their pg_hba.conf lines come from the pg_passwords fixture.
Nothing is normalised.
"""

import pytest

import pgwire
from dbward_env import PSQL, assert_same_output, startup

METHODS = {"scram-sha-256": "dbw_scram", "md5": "dbw_md5", "password": "dbw_password"}
AUTH_REQUEST = {"scram-sha-256": pgwire.AUTH_SASL, "md5": pgwire.AUTH_MD5,
                "password": pgwire.AUTH_CLEARTEXT}
INVALID_PASSWORD = "28P01"


def psql_as(pg, role, sql="select current_user, current_database()"):
    conninfo = (f"host=127.0.0.1 port={pg.port} user={role} dbname=orders "
                "connect_timeout=10")
    return [PSQL, "-X", "-A", "-t", "-w", "-d", conninfo, "-c", sql]


@pytest.mark.parametrize("method", METHODS)
def test_right_password_through_agent_logs_in(pg, both, pg_passwords, method):
    role = METHODS[method]
    direct, through = both.run(psql_as(pg, role), env={"PGPASSWORD": pg_passwords[role]})
    assert through.returncode == 0, through.stderr
    assert through.stdout.strip() == f"{role}|orders"
    assert_same_output(direct.stdout, through.stdout, "psql output")
    assert_same_output(direct.stderr, through.stderr, "psql stderr")


@pytest.mark.parametrize("method", METHODS)
def test_wrong_password_through_agent_fails_with_the_servers_error(
        pg, both, pg_passwords, method):
    role = METHODS[method]
    direct, through = both.run(psql_as(pg, role), env={"PGPASSWORD": "not the password"})
    assert direct.returncode == through.returncode == 2, (direct.stderr, through.stderr)
    assert f'password authentication failed for user "{role}"' in through.stderr
    assert_same_output(direct.stderr, through.stderr, "psql error")
    assert through.stdout == direct.stdout == ""


@pytest.mark.parametrize("method", METHODS)
def test_raw_password_exchange_through_agent_matches_direct(pg, both, pg_passwords, method):
    role = METHODS[method]
    spec = {"host": "127.0.0.1", "port": pg.port, "startup": startup("dbward-auth", user=role),
            "password": pg_passwords[role], "queries": ["select current_user"], "timeout": 5}
    direct, through = both.wire(spec)
    assert through["messages"][0] == {"type": "R", "auth": AUTH_REQUEST[method]}, through
    assert {"type": "R", "auth": pgwire.AUTH_OK} in through["messages"], through
    assert pgwire.rows(through) == [[role]]
    if method == "scram-sha-256":
        # The server proved it knows the password: the exchange was end to end.
        assert through["scram_server_verified"] is True
        assert through["sasl_mechanisms"] == direct["sasl_mechanisms"] == ["SCRAM-SHA-256"]
    # Without the random SCRAM nonces, the message types are the same.
    assert [m["type"] for m in through["messages"]] == [m["type"] for m in direct["messages"]]

    wrong = dict(spec, password="wrong")
    direct, through = both.wire(wrong)
    assert pgwire.errors(through) == pgwire.errors(direct)
    assert [e["C"] for e in pgwire.errors(through)] == [INVALID_PASSWORD]
    assert not pgwire.rows(through), through
    # That the server's close after its FATAL error reaches the client is
    # test_transparency_wire's test_server_ending_the_session_closes_...
