/*
 * collector/config.c: a full file, the defaults, and each way a file is
 * refused, with the exact "name:LINE:" the operator will see.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "collector/config.h"

#define NAME "collector.yaml"

#define TLS_YAML \
	"tls:\n" \
	"  cert: /etc/dbward/collector.crt\n" \
	"  key: /etc/dbward/collector.key\n" \
	"  ca: /etc/dbward/ca.crt\n"

static const char minimal_yaml[] =
	TLS_YAML
	"signing_key: /etc/dbward/ledger.key\n";

static int load(const char *yaml, struct collector_config *cfg, char *err)
{
	return collector_config_load_string(NAME, yaml, strlen(yaml), cfg, err,
					    COLLECTOR_CONFIG_ERR_LEN);
}

static bool is_zeroed(const struct collector_config *cfg)
{
	static const struct collector_config zero;

	return memcmp(cfg, &zero, sizeof(zero)) == 0;
}

/* Refused with exactly "collector.yaml:LINE: ..." naming @word; cfg left empty. */
static void assert_refused(const char *yaml, unsigned line, const char *word)
{
	struct collector_config cfg;
	char err[COLLECTOR_CONFIG_ERR_LEN] = "";
	char prefix[64];

	cr_assert_eq(load(yaml, &cfg, err), -1, "accepted:\n%s", yaml);
	snprintf(prefix, sizeof(prefix), NAME ":%u: ", line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s' should start '%s'", err,
		  prefix);
	cr_assert(strstr(err, word), "error '%s' should mention '%s'", err, word);
	cr_assert(is_zeroed(&cfg), "config not left empty after: %s", err);
}

static void assert_v4(const struct netaddr *a, const char *ip, uint16_t port)
{
	uint8_t want[4];

	cr_assert_eq(inet_pton(AF_INET, ip, want), 1);
	cr_assert(netaddr_is_v4(a));
	cr_assert(memcmp(a->ip + 12, want, 4) == 0, "address is not %s", ip);
	cr_assert_eq(a->port, port);
}

Test(collector_config, minimal_file_takes_the_documented_defaults)
{
	struct collector_config cfg;
	char err[COLLECTOR_CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(minimal_yaml, &cfg, err), 0, "%s", err);
	assert_v4(&cfg.listen, "0.0.0.0", 7443);
	assert_v4(&cfg.http, "127.0.0.1", 7080);
	cr_assert_str_eq(cfg.storage, "sqlite:/var/lib/dbward/audit.db");
	cr_assert_str_eq(cfg.tls_cert, "/etc/dbward/collector.crt");
	cr_assert_str_eq(cfg.tls_key, "/etc/dbward/collector.key");
	cr_assert_str_eq(cfg.tls_ca, "/etc/dbward/ca.crt");
	cr_assert_str_eq(cfg.signing_key, "/etc/dbward/ledger.key");
	cr_assert_eq(cfg.log_level, LOG_LEVEL_INFO);
	cr_assert_eq(cfg.max_batch_bytes, 16777216);
	cr_assert_eq(cfg.max_batch_events, 100000);
	collector_config_free(&cfg);
	cr_assert(is_zeroed(&cfg));
}

Test(collector_config, every_key_is_read)
{
	static const char yaml[] =
		"listen: 10.0.0.5:9443\n"
		"http: \"[::1]:8080\"\n"
		"storage: postgres://dbward@db.internal:5432/audit\n"
		"tls: { cert: /a/c.crt, key: /a/c.key, ca: /a/ca.crt }\n"
		"signing_key: /a/ledger.key\n"
		"log_level: debug\n"
		"limits:\n"
		"  max_batch_bytes: 1048576\n"
		"  max_batch_events: 5000\n";
	static const uint8_t v6_loopback[16] = { [15] = 1 };
	struct collector_config cfg;
	char err[COLLECTOR_CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	assert_v4(&cfg.listen, "10.0.0.5", 9443);
	cr_assert(memcmp(cfg.http.ip, v6_loopback, 16) == 0);
	cr_assert_eq(cfg.http.port, 8080);
	cr_assert_str_eq(cfg.storage, "postgres://dbward@db.internal:5432/audit");
	cr_assert_str_eq(cfg.tls_ca, "/a/ca.crt");
	cr_assert_eq(cfg.log_level, LOG_LEVEL_DEBUG);
	cr_assert_eq(cfg.max_batch_bytes, 1048576);
	cr_assert_eq(cfg.max_batch_events, 5000);
	collector_config_free(&cfg);
}

Test(collector_config, sqlite_and_postgresql_urls_are_taken)
{
	static const char *const urls[] = {
		"sqlite:/tmp/audit.db", "postgres://u@h/db", "postgresql://u@h:5433/db",
	};

	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		char yaml[512], err[COLLECTOR_CONFIG_ERR_LEN] = "";
		struct collector_config cfg;

		snprintf(yaml, sizeof(yaml), "%sstorage: %s\n", minimal_yaml, urls[i]);
		cr_assert_eq(load(yaml, &cfg, err), 0, "%s: %s", urls[i], err);
		cr_assert_str_eq(cfg.storage, urls[i]);
		collector_config_free(&cfg);
	}
}

Test(collector_config, unknown_key_is_refused_at_its_line)
{
	assert_refused(TLS_YAML "signing_key: /k\nlisten_port: 7443\n", 6, "unknown key 'listen_port'");
	assert_refused(TLS_YAML "signing_key: /k\nlimits:\n  max_batch: 5\n", 7,
		       "unknown key 'max_batch' in limits");
	assert_refused("tls:\n  cert: /c\n  key: /k\n  ca: /ca\n  crl: /crl\nsigning_key: /k\n", 5,
		       "unknown key 'crl' in tls");
}

Test(collector_config, missing_tls_is_refused)
{
	assert_refused("signing_key: /etc/dbward/ledger.key\n", 1, "missing required key 'tls'");
	assert_refused("tls:\n  cert: /c\n  key: /k\nsigning_key: /s\n", 2,
		       "missing required key 'tls.ca'");
	assert_refused("tls:\n  cert: /c\n  ca: /ca\nsigning_key: /s\n", 2,
		       "missing required key 'tls.key'");
}

Test(collector_config, missing_signing_key_is_refused)
{
	assert_refused(TLS_YAML, 1, "missing required key 'signing_key'");
}

Test(collector_config, relative_paths_are_refused)
{
	assert_refused("tls:\n  cert: collector.crt\n  key: /k\n  ca: /ca\nsigning_key: /s\n", 2,
		       "tls.cert must be an absolute path");
	assert_refused(TLS_YAML "signing_key: ledger.key\n", 5,
		       "signing_key must be an absolute path");
	assert_refused(TLS_YAML "signing_key: /s\nstorage: sqlite:audit.db\n", 6,
		       "absolute path");
}

Test(collector_config, bad_values_are_refused)
{
	assert_refused(TLS_YAML "signing_key: /s\nstorage: mysql://x\n", 6, "not a storage URL");
	assert_refused(TLS_YAML "signing_key: /s\nlisten: 7443\n", 6, "bad address");
	assert_refused(TLS_YAML "signing_key: /s\nlog_level: verbose\n", 6, "unknown word 'verbose'");
	assert_refused(TLS_YAML "signing_key: /s\nlimits:\n  max_batch_bytes: 16777217\n", 7,
		       "out of range");
	assert_refused(TLS_YAML "signing_key: /s\nlimits:\n  max_batch_events: 0\n", 7,
		       "out of range");
	assert_refused(TLS_YAML "signing_key: /s\nsigning_key: /t\n", 6, "duplicate key");
}

Test(collector_config, http_hosts_are_read_in_lower_case)
{
	struct collector_config cfg;
	char err[COLLECTOR_CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(TLS_YAML "signing_key: /etc/dbward/ledger.key\n"
			  "http_hosts: [Audit.Example.com, collector]\n", &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.http_hosts.n, 2);
	cr_assert_str_eq(cfg.http_hosts.names[0], "audit.example.com");
	cr_assert_str_eq(cfg.http_hosts.names[1], "collector");
	collector_config_free(&cfg);
	cr_assert_eq(load(minimal_yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.http_hosts.n, 0);
	collector_config_free(&cfg);
}

Test(collector_config, bad_http_hosts_are_refused)
{
	assert_refused(TLS_YAML "signing_key: /etc/dbward/ledger.key\nhttp_hosts: evil\n", 6,
		       "http_hosts");
	assert_refused(TLS_YAML "signing_key: /etc/dbward/ledger.key\nhttp_hosts:\n"
		       "  - ok.example\n  - 'bad host'\n", 8, "bad host");
}
