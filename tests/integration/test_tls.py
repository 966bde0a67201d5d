"""
TLS through the agent: the client's TLS ends at the agent (`tls: {cert,
key}`), the upstream leg is encrypted per target (`upstream_tls: disable |
prefer | require | verify-full` with `upstream_ca`), and each leg is
independent of the other: pg_stat_ssl on the server shows the upstream
leg, psql's \\conninfo the client's.

Certificates are made here with the openssl CLI: a CA, a server
certificate for the ssl=on server (IP SAN 127.0.0.1 only), the agent's
host certificate (IP SAN 127.0.0.1), and a second CA that signed neither.

Also here, the encryption negotiation the agent owns: without `tls:` it
answers SSLRequest 'N' itself (whatever the server would say), it always
answers GSSENCRequest 'N', and SCRAM keeps working when the client's TLS
ends at the agent (channel binding cannot span two TLS sessions, so
SCRAM-SHA-256-PLUS is not offered: channel_binding=prefer works over a
plaintext upstream, channel_binding=require fails cleanly). With TLS on
both legs, libpq's channel_binding=prefer cannot work: seeing no -PLUS
offer on its TLS connection, libpq sends the gs2 flag "y", which its proof
covers, and a server on TLS refuses it as a downgrade. Such clients set
channel_binding=disable (docs/configuration.md, "tls").
"""

import os
import pwd

import pytest

import pgwire
from dbward_env import (
    PSQL,
    Postgres,
    assert_intercepted,
    free_port,
    make_ca,
    make_cert,
    marker,
    psql_argv,
    startup,
    wire_client,
)

SCRAM_ROLE, SCRAM_PASSWORD = "dbw_tls_scram", "tls scram secret"
SSL_QUERY = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """{"ca", "wrong_ca", "agent_cert", "agent_key"}: paths for the agent and clients."""
    d = tmp_path_factory.mktemp("tls")
    ca = make_ca(d, "ca")
    wrong_ca = make_ca(d, "wrong-ca")
    agent_cert, agent_key = make_cert(d, "agent", ca, "IP:127.0.0.1,DNS:localhost")
    return {"dir": d, "ca_pair": ca, "ca": ca[0], "wrong_ca": wrong_ca[0],
            "agent_cert": agent_cert, "agent_key": agent_key}


@pytest.fixture(scope="module")
def pg_ssl(certs):
    """A second PostgreSQL with ssl = on, its certificate naming 127.0.0.1 only."""
    server = Postgres(free_port(), ["127.0.0.1", "::1"], hba=(
        "local all all trust\n"
        f"host all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256\n"
        f"host all {SCRAM_ROLE} ::1/128 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\n"
        "host all all ::1/128 trust\n"))
    try:
        # In the server's own directory: the postgres user must read them.
        tls_dir = server.dir / "tls"
        tls_dir.mkdir()
        cert, key = make_cert(tls_dir, "server", certs["ca_pair"], "IP:127.0.0.1",
                              owner="postgres")
        pw = pwd.getpwnam("postgres")
        os.chown(tls_dir, pw.pw_uid, pw.pw_gid)
        server.conf = f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
        server.initdb()
        server.start()
        server.sql("create role app login")
        server.sql("create database orders owner app")
        server.sql(f"set password_encryption = 'scram-sha-256'; "
                   f"create role {SCRAM_ROLE} login password '{SCRAM_PASSWORD}'")
        yield server
    finally:
        server.cleanup()


def agent_tls(certs):
    return {"cert": str(certs["agent_cert"]), "key": str(certs["agent_key"])}


def target(server, mode, ca=None):
    entry = {"port": server.port, "upstream_tls": mode}
    if ca is not None:
        entry["upstream_ca"] = str(ca)
    return entry


def start_agent(agent_factory, agent_config, targets, tls=None):
    overrides = {"intercept": {"targets": targets}}
    if tls is not None:
        overrides["tls"] = tls
    return agent_factory(config=agent_config(**overrides))


def psql(cgroup, run_in_cgroup, server, sql=SSL_QUERY, conninfo="", host="127.0.0.1",
         user="app", env=None):
    app = marker("tls")
    argv = psql_argv(host, server.port, sql=sql, user=user, application_name=app,
                     conninfo_extra=conninfo)
    return run_in_cgroup(cgroup, argv, env=env, timeout=30), app


def conninfo_report(cgroup, run_in_cgroup, server, conninfo):
    """psql's own view of its connection (\\conninfo), then the server's (pg_stat_ssl)."""
    argv = [PSQL, "-X", "-w", "-A", "-t", "-d",
            f"host=127.0.0.1 port={server.port} user=app dbname=orders connect_timeout=5 "
            f"application_name={marker('tls')} {conninfo}", "-c", "\\conninfo", "-c", SSL_QUERY]
    return run_in_cgroup(cgroup, argv, timeout=30)


# --- the client's leg ----------------------------------------------------------


def test_sslmode_require_through_agent_ends_tls_at_the_agent_and_upstream_stays_plain(
        pg, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    agent = start_agent(agent_factory, agent_config, [target(pg, "disable")], agent_tls(certs))
    res = conninfo_report(test_cgroup, run_in_cgroup, pg, "sslmode=require")
    assert res.returncode == 0, res.stderr
    assert "SSL connection (protocol: TLSv1." in res.stdout, res.stdout
    assert res.stdout.strip().splitlines()[-1] == "f"  # the upstream leg
    opened = assert_intercepted(agent, res.pid)
    assert opened["encrypted"] is True, opened


def test_sslmode_verify_full_client_trusts_the_agent_host_certificate(
        pg, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    start_agent(agent_factory, agent_config, [target(pg, "disable")], agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, pg,
                  conninfo=f"sslmode=verify-full sslrootcert={certs['ca']}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "f"


def test_sslmode_verify_full_client_rejects_the_agent_when_trusting_another_ca(
        pg, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    agent = start_agent(agent_factory, agent_config, [target(pg, "disable")], agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, pg,
                  conninfo=f"sslmode=verify-full sslrootcert={certs['wrong_ca']}")
    assert res.returncode == 2, res.stdout
    assert "certificate verify failed" in res.stderr, res.stderr
    assert agent.running


def test_without_agent_tls_sslmode_require_fails_cleanly(
        pg, agent_factory, agent_config, test_cgroup, run_in_cgroup):
    agent = start_agent(agent_factory, agent_config, [target(pg, "disable")])
    res, _ = psql(test_cgroup, run_in_cgroup, pg, conninfo="sslmode=require")
    assert res.returncode == 2, res.stdout
    assert "server does not support SSL, but SSL was required" in res.stderr, res.stderr
    assert agent.running


def test_without_agent_tls_the_agent_answers_n_even_when_the_server_has_ssl(
        pg_ssl, agent_factory, agent_config, test_cgroup, run_in_cgroup):
    # Passing the server's 'S' on would give the client TLS to the server,
    # end to end: the agent would see nothing. It must answer 'N' itself.
    agent = start_agent(agent_factory, agent_config, [target(pg_ssl, "require")])
    res = wire_client(test_cgroup, {"host": "127.0.0.1", "port": pg_ssl.port,
                                    "ssl_request": True, "startup": startup(marker("n")),
                                    "queries": ["select 1"]})
    assert res.get("ssl_answer") == "N", res
    assert pgwire.rows(res) == [["1"]], res
    required, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, conninfo="sslmode=require")
    assert required.returncode == 2, required.stdout
    assert "server does not support SSL, but SSL was required" in required.stderr
    assert agent.running


def test_without_agent_tls_sslmode_prefer_works_in_plaintext(
        pg_ssl, agent_factory, agent_config, test_cgroup, run_in_cgroup):
    start_agent(agent_factory, agent_config, [target(pg_ssl, "require")])
    res = conninfo_report(test_cgroup, run_in_cgroup, pg_ssl, "sslmode=prefer")
    assert res.returncode == 0, res.stderr
    assert "SSL connection" not in res.stdout, res.stdout
    assert res.stdout.strip().splitlines()[-1] == "t"  # upstream still encrypted


def test_gssenc_request_is_answered_n_and_the_startup_goes_on(
        pg, agent_factory, agent_config, test_cgroup):
    start_agent(agent_factory, agent_config, [target(pg, "disable")])
    res = wire_client(test_cgroup, {"host": "127.0.0.1", "port": pg.port,
                                    "ssl_request": "gssenc", "startup": startup(marker("gss")),
                                    "queries": ["select 'plaintext'"]})
    assert res.get("ssl_answer") == "N", res
    assert pgwire.rows(res) == [["plaintext"]], res


def test_raw_tls_client_completes_a_session_through_the_agent(
        pg, agent_factory, agent_config, certs, test_cgroup):
    start_agent(agent_factory, agent_config, [target(pg, "disable")], agent_tls(certs))
    res = wire_client(test_cgroup, {"host": "127.0.0.1", "port": pg.port, "ssl_request": True,
                                    "tls": True, "startup": startup(marker("rawtls")),
                                    "queries": ["select repeat('x', 200000)", "select 2"]})
    assert res.get("ssl_answer") == "S", res
    assert res.get("tls_version", "").startswith("TLSv1."), res
    assert len(pgwire.rows(res)[0][0]) == 200000
    assert pgwire.rows(res)[1] == ["2"]


# --- the upstream leg ----------------------------------------------------------


@pytest.mark.parametrize("client_sslmode", ["disable", "require"])
def test_upstream_verify_full_with_the_right_ca_encrypts_to_the_server(
        pg_ssl, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup, client_sslmode):
    agent = start_agent(agent_factory, agent_config,
                        [target(pg_ssl, "verify-full", certs["ca"])], agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, conninfo=f"sslmode={client_sslmode}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "t"
    assert_intercepted(agent, res.pid)


def test_upstream_verify_full_with_a_wrong_ca_fails_cleanly(
        pg, pg_ssl, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    agent = start_agent(agent_factory, agent_config,
                        [target(pg_ssl, "verify-full", certs["wrong_ca"]), target(pg, "disable")],
                        agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, conninfo="sslmode=require")
    assert res.returncode == 2, res.stdout
    assert "FATAL" in res.stderr, res.stderr
    assert agent.running
    other, _ = psql(test_cgroup, run_in_cgroup, pg)  # another target still works
    assert other.returncode == 0, other.stderr


def test_upstream_verify_full_rejects_a_certificate_naming_another_address(
        pg_ssl, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    # The server's certificate names 127.0.0.1 only; reached at ::1 it
    # is the right CA's certificate for the wrong address.
    agent = start_agent(agent_factory, agent_config,
                        [target(pg_ssl, "verify-full", certs["ca"])])
    v4, _ = psql(test_cgroup, run_in_cgroup, pg_ssl)
    assert v4.returncode == 0, v4.stderr
    v6, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, host="::1")
    assert v6.returncode == 2, v6.stdout
    assert "FATAL" in v6.stderr, v6.stderr
    assert agent.running


def test_upstream_require_to_a_plaintext_server_fails_cleanly(
        pg, agent_factory, agent_config, test_cgroup, run_in_cgroup):
    agent = start_agent(agent_factory, agent_config, [target(pg, "require")])
    res, _ = psql(test_cgroup, run_in_cgroup, pg)
    assert res.returncode == 2, res.stdout
    assert "FATAL" in res.stderr, res.stderr
    assert agent.running


@pytest.mark.parametrize("server, expected", [("pg", "f"), ("pg_ssl", "t")])
def test_upstream_prefer_uses_tls_when_the_server_offers_it(
        request, agent_factory, agent_config, test_cgroup, run_in_cgroup, server, expected):
    server = request.getfixturevalue(server)
    start_agent(agent_factory, agent_config, [target(server, "prefer")])
    res, _ = psql(test_cgroup, run_in_cgroup, server)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == expected


# --- SCRAM with the client's TLS ended at the agent -----------------------------


@pytest.fixture(params=["plain upstream", "tls upstream"])
def scram_server(request, certs):
    """(server, its target entry, role, password): SCRAM over either upstream leg."""
    if request.param == "plain upstream":
        passwords = request.getfixturevalue("pg_passwords")
        server = request.getfixturevalue("pg")
        return server, target(server, "disable"), "dbw_scram", passwords["dbw_scram"]
    server = request.getfixturevalue("pg_ssl")
    # The server offers SCRAM-SHA-256-PLUS on its TLS leg: the agent must not.
    return server, target(server, "verify-full", certs["ca"]), SCRAM_ROLE, SCRAM_PASSWORD


def test_scram_through_agent_tls_with_channel_binding_prefer_works(
        scram_server, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    server, entry, role, password = scram_server
    if entry.get("upstream_tls") != "disable":
        pytest.skip("both legs TLS: see test_scram_with_both_legs_tls_needs_channel_binding_disable")
    start_agent(agent_factory, agent_config, [entry], agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, server, sql="select current_user", user=role,
                  conninfo="sslmode=require channel_binding=prefer",
                  env={"PGPASSWORD": password})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == role
    raw = wire_client(test_cgroup, {"host": "127.0.0.1", "port": server.port,
                                    "ssl_request": True, "tls": True,
                                    "startup": startup(marker("scram"), user=role),
                                    "password": password, "queries": ["select 1"]})
    assert raw.get("sasl_mechanisms") == ["SCRAM-SHA-256"], raw
    assert raw.get("scram_server_verified") is True, raw


def test_scram_through_agent_tls_with_channel_binding_require_fails_cleanly(
        scram_server, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    server, entry, role, password = scram_server
    agent = start_agent(agent_factory, agent_config, [entry], agent_tls(certs))
    res, _ = psql(test_cgroup, run_in_cgroup, server, sql="select current_user", user=role,
                  conninfo="sslmode=require channel_binding=require",
                  env={"PGPASSWORD": password})
    assert res.returncode == 2, res.stdout
    assert "channel binding" in res.stderr, res.stderr
    assert agent.running


def test_scram_with_both_legs_tls_needs_channel_binding_disable(
        pg_ssl, agent_factory, agent_config, certs, test_cgroup, run_in_cgroup):
    entry = target(pg_ssl, "verify-full", certs["ca"])
    agent = start_agent(agent_factory, agent_config, [entry], agent_tls(certs))
    env = {"PGPASSWORD": SCRAM_PASSWORD}
    refused, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, sql="select current_user",
                      user=SCRAM_ROLE, conninfo="sslmode=require channel_binding=prefer", env=env)
    assert refused.returncode == 2, refused.stdout
    assert "channel binding negotiation" in refused.stderr, refused.stderr
    res, _ = psql(test_cgroup, run_in_cgroup, pg_ssl, sql=SSL_QUERY, user=SCRAM_ROLE,
                  conninfo="sslmode=require channel_binding=disable", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "t", "the upstream leg is TLS"
    assert agent.running
