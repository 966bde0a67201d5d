/*
 * agent/config.c: every field of a full file, the defaults, and each way a
 * file is refused, with the exact "name:LINE:" the operator will see.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/sql.h"

#define NAME "agent.yaml"

static const char minimal_yaml[] =
	"intercept:\n"
	"  cgroup: /sys/fs/cgroup/workloads\n"
	"  targets:\n"
	"    - port: 5432\n";

static int load(const char *yaml, struct agent_config *cfg, char *err)
{
	return config_load_string(NAME, yaml, strlen(yaml), cfg, err, CONFIG_ERR_LEN);
}

static bool is_zeroed(const struct agent_config *cfg)
{
	static const struct agent_config zero;

	return memcmp(cfg, &zero, sizeof(zero)) == 0;
}

/* Refused with exactly "agent.yaml:LINE: ..." naming @word; cfg left empty. */
static void assert_refused(const char *yaml, unsigned line, const char *word)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	char prefix[64];

	cr_assert_eq(load(yaml, &cfg, err), -1, "accepted:\n%s", yaml);
	snprintf(prefix, sizeof(prefix), NAME ":%u: ", line);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "error '%s' should start '%s'", err,
		  prefix);
	cr_assert(strstr(err, word), "error '%s' should mention '%s'", err, word);
	cr_assert(is_zeroed(&cfg), "config not left empty after: %s", err);
}

static void v4(struct netaddr *a, const char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->ip[10] = a->ip[11] = 0xff;
	cr_assert_eq(inet_pton(AF_INET, ip, a->ip + 12), 1);
	a->port = port;
}

static void v6(struct netaddr *a, const char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	cr_assert_eq(inet_pton(AF_INET6, ip, a->ip), 1);
	a->port = port;
}

static void assert_addr_eq(const struct netaddr *got, const struct netaddr *want)
{
	char g[NETADDR_STRLEN], w[NETADDR_STRLEN];

	netaddr_format(got, g, sizeof(g));
	netaddr_format(want, w, sizeof(w));
	cr_assert(memcmp(got, want, sizeof(*got)) == 0, "address %s, want %s", g, w);
}

static void assert_cidr(const struct config_target *t, const char *text)
{
	struct netcidr want;

	cr_assert_eq(netcidr_parse(text, &want), 0);
	cr_assert(t->has_cidr);
	cr_assert_eq(t->cidr.prefixlen, want.prefixlen, "prefixlen %u, want %u (%s)",
		     t->cidr.prefixlen, want.prefixlen, text);
	cr_assert(memcmp(t->cidr.ip, want.ip, 16) == 0, "cidr address differs from %s", text);
}

/* --- what parses ---------------------------------------------------------------- */

Test(config, full_file_sets_every_field)
{
	const char *yaml =
		"# every key\n"
		"listen: 127.0.0.2:16432\n"
		"listen6: \"[::1]:16433\"\n"
		"listen_pods: 198.51.100.1:15432\n"
		"fail: open\n"
		"heartbeat_timeout_ms: 5000\n"
		"log_level: debug\n"
		"workers: 4\n"
		"max_connections: 20000\n"
		"intercept:\n"
		"  cgroup: /sys/fs/cgroup/unified/workloads\n"
		"  pin_dir: /sys/fs/bpf/other\n"
		"  upstream_mark: 0xBEEF\n"
		"  targets:\n"
		"    - port: 5432\n"
		"      cidr: 10.0.0.0/8\n"
		"    - port: 6432\n"
		"audit:\n"
		"  file: /var/log/dbward/audit.jsonl\n"
		"agent_id: node-7.example\n"
		"collector:\n"
		"  address: collector.example:7443\n"
		"  cert: /etc/dbward/agent.crt\n"
		"  key: /etc/dbward/agent.key\n"
		"  ca: /etc/dbward/ca.crt\n"
		"  batch_max_events: 500\n"
		"  batch_ms: 50\n"
		"spool: /var/lib/dbward/spool\n"
		"spool_max_bytes: 17179869184\n"
		"spool_fsync_ms: 250\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct netaddr want;

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_str_eq(cfg.agent_id, "node-7.example");
	cr_assert_str_eq(cfg.collector_address, "collector.example:7443");
	cr_assert_str_eq(cfg.collector_cert, "/etc/dbward/agent.crt");
	cr_assert_str_eq(cfg.collector_key, "/etc/dbward/agent.key");
	cr_assert_str_eq(cfg.collector_ca, "/etc/dbward/ca.crt");
	cr_assert_eq(cfg.collector_batch_max_events, 500);
	cr_assert_eq(cfg.collector_batch_ms, 50);
	cr_assert_str_eq(cfg.spool, "/var/lib/dbward/spool");
	cr_assert_eq(cfg.spool_max_bytes, 17179869184ull);
	cr_assert_eq(cfg.spool_fsync_ms, 250);
	v4(&want, "127.0.0.2", 16432);
	assert_addr_eq(&cfg.listen, &want);
	cr_assert(cfg.has_listen6);
	v6(&want, "::1", 16433);
	assert_addr_eq(&cfg.listen6, &want);
	cr_assert(cfg.has_listen_pods);
	v4(&want, "198.51.100.1", 15432);
	assert_addr_eq(&cfg.listen_pods, &want);
	cr_assert_eq(cfg.fail, CONFIG_FAIL_OPEN);
	cr_assert_eq(cfg.heartbeat_timeout_ms, 5000);
	cr_assert_eq(cfg.log_level, LOG_LEVEL_DEBUG);
	cr_assert_eq(cfg.workers, 4);
	cr_assert_eq(cfg.max_connections, 20000);
	cr_assert_str_eq(cfg.cgroup, "/sys/fs/cgroup/unified/workloads");
	cr_assert_str_eq(cfg.pin_dir, "/sys/fs/bpf/other");
	cr_assert_eq(cfg.upstream_mark, 0xbeef);
	cr_assert_eq(cfg.n_targets, 2);
	cr_assert_eq(cfg.targets[0].port, 5432);
	assert_cidr(&cfg.targets[0], "10.0.0.0/8");
	cr_assert_eq(cfg.targets[1].port, 6432);
	cr_assert_not(cfg.targets[1].has_cidr);
	cr_assert_str_eq(cfg.audit_file, "/var/log/dbward/audit.jsonl");
	config_free(&cfg);
	cr_assert(is_zeroed(&cfg));
}

Test(config, minimal_file_gets_every_default)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct netaddr want;

	cr_assert_eq(load(minimal_yaml, &cfg, err), 0, "%s", err);
	v4(&want, "127.0.0.1", 15432);
	assert_addr_eq(&cfg.listen, &want);
	cr_assert(cfg.has_listen6);
	v6(&want, "::1", 15432);
	assert_addr_eq(&cfg.listen6, &want);
	cr_assert_not(cfg.has_listen_pods);
	cr_assert_eq(cfg.fail, CONFIG_FAIL_CLOSED);
	cr_assert_eq(cfg.heartbeat_timeout_ms, 3000);
	cr_assert_eq(cfg.log_level, LOG_LEVEL_INFO);
	cr_assert_eq(cfg.workers, 0);
	cr_assert_eq(cfg.max_connections, 10000);
	cr_assert_str_eq(cfg.cgroup, "/sys/fs/cgroup/workloads");
	cr_assert_str_eq(cfg.pin_dir, "/sys/fs/bpf/dbward");
	cr_assert_eq(cfg.upstream_mark, 0xdb00);
	cr_assert_eq(cfg.n_targets, 1);
	cr_assert_eq(cfg.targets[0].port, 5432);
	cr_assert_not(cfg.targets[0].has_cidr);
	cr_assert_null(cfg.audit_file);
	{
		char host[256] = "";

		gethostname(host, sizeof(host));
		cr_assert_str_eq(cfg.agent_id, host, "agent_id defaults to the host name");
	}
	cr_assert_null(cfg.collector_address);
	cr_assert_eq(cfg.collector_batch_max_events, 5000);
	cr_assert_eq(cfg.collector_batch_ms, 200);
	cr_assert_null(cfg.spool);
	cr_assert_eq(cfg.spool_max_bytes, 1ull << 30);
	cr_assert_eq(cfg.spool_fsync_ms, 1000);
	config_free(&cfg);
}

Test(config, listen6_default_follows_listen_port)
{
	const char *yaml = "listen: 127.0.0.1:7000\n"
			   "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct netaddr want;

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	v6(&want, "::1", 7000);
	assert_addr_eq(&cfg.listen6, &want);
	config_free(&cfg);
}

Test(config, listen6_off_disables_ipv6_listener)
{
	const char *yaml = "listen6: off\n"
			   "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_not(cfg.has_listen6);
	config_free(&cfg);
}

Test(config, ipv6_target_cidr_parses)
{
	const char *yaml = "intercept:\n"
			   "  cgroup: /cg\n"
			   "  targets:\n"
			   "    - {port: 5432, cidr: \"fd00:db::/32\"}\n"
			   "    - {port: 5432, cidr: \"2001:db8::10\"}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.n_targets, 2);
	assert_cidr(&cfg.targets[0], "fd00:db::/32");
	cr_assert_eq(cfg.targets[0].cidr.prefixlen, 32);
	assert_cidr(&cfg.targets[1], "2001:db8::10/128");
	config_free(&cfg);
}

Test(config, bare_ipv4_target_is_host_prefix)
{
	const char *yaml = "intercept: {cgroup: /cg, targets: [{port: 5432, cidr: 10.1.2.3}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.targets[0].cidr.prefixlen, 128);
	assert_cidr(&cfg.targets[0], "10.1.2.3/32");
	config_free(&cfg);
}

Test(config, upstream_mark_accepts_decimal_and_the_32_bit_maximum)
{
	const char *yaml = "intercept: {cgroup: /cg, upstream_mark: 4294967295, "
			   "targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.upstream_mark, 0xffffffffu);
	config_free(&cfg);
}

Test(config, listen_pods_accepts_ipv6)
{
	const char *yaml = "listen_pods: \"[fd00::1]:15432\"\n"
			   "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct netaddr want;

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	v6(&want, "fd00::1", 15432);
	assert_addr_eq(&cfg.listen_pods, &want);
	config_free(&cfg);
}

Test(config, empty_audit_section_means_no_sink)
{
	const char *yaml = "audit:\n"
			   "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_null(cfg.audit_file);
	config_free(&cfg);
}

Test(config, target_outside_cidr_may_share_the_listen_port)
{
	const char *yaml = "listen: 127.0.0.1:5432\n"
			   "listen6: off\n"
			   "intercept: {cgroup: /cg, targets: [{port: 5432, cidr: 10.0.0.0/8}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	config_free(&cfg);
}

/* --- YAML itself ---------------------------------------------------------------- */

Test(config, yaml_syntax_error_names_its_line)
{
	assert_refused("listen: 127.0.0.1:15432\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       " targets: [\n", 4, "YAML syntax error");
}

Test(config, unclosed_quote_is_a_syntax_error)
{
	assert_refused("log_level: info\nfail: \"open\n", 3, "YAML syntax error");
}

Test(config, invalid_utf8_is_refused_with_its_line)
{
	assert_refused("log_level: info\nfail: \xff\xfe\n", 2, "UTF-8");
}

Test(config, empty_file_is_refused)
{
	assert_refused("", 1, "empty configuration");
}

Test(config, comments_only_file_is_refused)
{
	assert_refused("# nothing here\n\n# at all\n", 1, "empty configuration");
}

Test(config, top_level_list_is_refused)
{
	assert_refused("\n- listen: 127.0.0.1:15432\n", 2, "top level must be a mapping");
}

Test(config, top_level_scalar_is_refused)
{
	assert_refused("just words\n", 1, "top level must be a mapping");
}

Test(config, second_document_is_refused)
{
	assert_refused("intercept: {cgroup: /cg, targets: [{port: 5432}]}\n"
		       "---\n"
		       "log_level: debug\n", 2, "more than one YAML document");
}

Test(config, non_scalar_key_is_refused)
{
	assert_refused("intercept: {cgroup: /cg, targets: [{port: 5432}]}\n"
		       "? [a, b]\n"
		       ": c\n", 2, "key must be a plain word");
}

/* --- keys ------------------------------------------------------------------------ */

Test(config, unknown_key_is_named)
{
	assert_refused("log_level: info\nlissten: 127.0.0.1:1\n", 2, "unknown key 'lissten'");
}

Test(config, unknown_nested_key_names_its_section)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  cgrop: /cg\n", 3, "unknown key 'cgrop' in intercept");
}

Test(config, unknown_target_key_names_the_target)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "    - port: 6432\n"
		       "      prot: 1\n", 6, "unknown key 'prot' in intercept.targets[1]");
}

Test(config, dotted_key_at_top_level_is_unknown)
{
	assert_refused("intercept.cgroup: /cg\n", 1, "unknown key 'intercept.cgroup'");
}

Test(config, duplicate_key_is_refused)
{
	assert_refused("log_level: info\n"
		       "workers: 2\n"
		       "log_level: debug\n", 3, "duplicate key 'log_level' (first on line 1)");
}

Test(config, duplicate_section_is_refused)
{
	assert_refused("intercept: {cgroup: /cg, targets: [{port: 5432}]}\n"
		       "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n", 2,
		       "duplicate key 'intercept'");
}

Test(config, duplicate_key_inside_a_target_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "      port: 6432\n", 5, "duplicate key 'port'");
}

Test(config, missing_cgroup_reported_at_its_section)
{
	assert_refused("log_level: info\n"
		       "intercept:\n"
		       "  targets:\n"
		       "    - port: 5432\n", 3, "missing required key 'intercept.cgroup'");
}

Test(config, missing_targets_reported_at_its_section)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n", 2, "missing required key 'intercept.targets'");
}

Test(config, missing_intercept_section_reported_at_top)
{
	assert_refused("log_level: info\nworkers: 1\n", 1, "missing required key 'intercept'");
}

Test(config, empty_intercept_section_reports_missing_key)
{
	assert_refused("workers: 1\nintercept:\n", 2, "missing required key 'intercept.");
}

Test(config, missing_target_port_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - cidr: 10.0.0.0/8\n", 4,
		       "missing required key 'intercept.targets[0].port'");
}

/* --- types ------------------------------------------------------------------------ */

Test(config, mapping_where_a_string_is_expected_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup:\n"
		       "    path: /cg\n", 3, "intercept.cgroup must be a single value, not a mapping");
}

Test(config, unquoted_ipv6_listen6_gets_a_quoting_hint)
{
	assert_refused("listen6: [\"::1\"]\n", 1, "quote IPv6");
}

Test(config, section_given_a_scalar_is_refused)
{
	assert_refused("intercept: yes\n", 1, "intercept must be a mapping");
}

Test(config, targets_given_a_mapping_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    port: 5432\n", 4, "intercept.targets must be a list");
}

Test(config, target_given_a_scalar_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - 5432\n", 4, "intercept.targets[0] must be a mapping");
}

Test(config, empty_value_is_refused)
{
	assert_refused("listen: \"\"\n", 1, "listen is empty");
}

Test(config, nul_byte_in_a_value_is_refused)
{
	assert_refused("intercept: {cgroup: \"/cg\\0/x\"}\n", 1, "NUL");
}

Test(config, negative_number_is_refused)
{
	assert_refused("workers: -1\n", 1, "not a number");
}

Test(config, number_with_trailing_garbage_is_refused)
{
	assert_refused("max_connections: 100k\n", 1, "not a number");
}

Test(config, number_with_leading_space_or_plus_is_refused)
{
	assert_refused("max_connections: \" 100\"\n", 1, "not a number");
	assert_refused("max_connections: +100\n", 1, "not a number");
}

Test(config, hex_where_only_decimal_is_allowed_is_refused)
{
	assert_refused("workers: 0x10\n", 1, "decimal digits");
}

Test(config, double_hex_prefix_is_refused)
{
	assert_refused("intercept: {upstream_mark: 0x0x10}\n", 1, "not a number");
}

Test(config, heartbeat_below_minimum_is_refused)
{
	assert_refused("heartbeat_timeout_ms: 99\n", 1, "out of range 100..600000");
}

Test(config, heartbeat_above_maximum_is_refused)
{
	assert_refused("heartbeat_timeout_ms: 600001\n", 1, "out of range");
}

Test(config, workers_above_256_is_refused)
{
	assert_refused("workers: 257\n", 1, "out of range 0..256");
}

Test(config, zero_max_connections_is_refused)
{
	assert_refused("max_connections: 0\n", 1, "out of range 1..1000000");
}

Test(config, number_beyond_64_bits_is_refused)
{
	assert_refused("max_connections: 99999999999999999999999\n", 1, "out of range");
}

Test(config, zero_upstream_mark_is_refused)
{
	assert_refused("intercept: {upstream_mark: 0}\n", 1, "out of range 0x1..0xffffffff");
}

Test(config, upstream_mark_beyond_32_bits_is_refused)
{
	assert_refused("intercept: {upstream_mark: 0x100000000}\n", 1, "out of range");
}

Test(config, target_port_zero_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 0\n", 4, "intercept.targets[0].port: 0 is out of range 1..65535");
}

Test(config, target_port_above_65535_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 65536\n", 4, "out of range 1..65535");
}

Test(config, unknown_fail_word_lists_the_allowed_words)
{
	assert_refused("fail: maybe\n", 1, "unknown word 'maybe' (expected one of: closed, open)");
}

Test(config, unknown_log_level_lists_the_allowed_words)
{
	assert_refused("log_level: verbose\n", 1, "error, warn, info, debug");
}

/* --- addresses ------------------------------------------------------------------ */

Test(config, bad_listen_address_is_refused)
{
	assert_refused("listen: 127.0.0.1\n", 1, "bad address '127.0.0.1'");
}

Test(config, listen_port_zero_is_refused)
{
	assert_refused("listen: 127.0.0.1:0\n", 1, "bad address");
}

Test(config, ipv6_listen_is_refused)
{
	assert_refused("listen: \"[::1]:15432\"\n", 1, "listen must be an IPv4");
}

Test(config, ipv4_listen6_is_refused)
{
	assert_refused("listen6: 127.0.0.1:15432\n", 1, "listen6 must be an IPv6");
}

Test(config, unspecified_listen_is_refused)
{
	assert_refused("listen: 0.0.0.0:15432\n", 1, "not a usable address");
}

Test(config, loopback_listen_pods_is_refused)
{
	assert_refused("listen_pods: 127.0.0.1:15432\n", 1, "loopback");
}

Test(config, bad_target_cidr_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "      cidr: 10.0.0.0/33\n", 5, "bad cidr '10.0.0.0/33'");
}

Test(config, hostname_target_cidr_is_refused)
{
	assert_refused("intercept: {cgroup: /cg, targets: [{port: 5432, cidr: db.local}]}\n", 1,
		       "bad cidr");
}

/* --- targets --------------------------------------------------------------------- */

Test(config, empty_targets_list_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets: []\n", 3, "intercept.targets is empty");
}

Test(config, null_targets_is_refused_as_empty)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n", 3, "intercept.targets is empty");
}

Test(config, more_than_max_targets_is_refused)
{
	size_t cap = 64 + (CONFIG_MAX_TARGETS + 1) * 24;
	char *yaml = malloc(cap);
	size_t len;

	cr_assert_not_null(yaml);
	len = (size_t)snprintf(yaml, cap, "intercept:\n  cgroup: /cg\n  targets:\n");
	for (int i = 0; i <= CONFIG_MAX_TARGETS; i++)
		len += (size_t)snprintf(yaml + len, cap - len, "    - port: %d\n", 1000 + i);
	/* The first target past the limit sits on line 4 + CONFIG_MAX_TARGETS. */
	assert_refused(yaml, 4 + CONFIG_MAX_TARGETS, "too many entries");
	free(yaml);
}

Test(config, duplicate_target_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - {port: 5432, cidr: 10.0.0.0/8}\n"
		       "    - {port: 5432, cidr: 10.9.9.9/8}\n", 5,
		       "intercept.targets[1] duplicates intercept.targets[0]");
}

Test(config, listen_matched_by_port_only_target_is_refused)
{
	assert_refused("listen: 127.0.0.1:5432\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 6432\n"
		       "    - port: 5432\n", 6,
		       "listen 127.0.0.1:5432 is itself an intercepted target");
}

Test(config, listen_matched_by_target_cidr_is_refused)
{
	assert_refused("listen: 127.0.0.1:5432\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "      cidr: 127.0.0.0/8\n", 5,
		       "listen 127.0.0.1:5432 is itself an intercepted target");
}

Test(config, default_listen6_matched_by_target_is_refused)
{
	assert_refused("listen: 127.0.0.1:5432\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - {port: 5432, cidr: \"::1\"}\n", 5,
		       "listen6 [::1]:5432 is itself an intercepted target");
}

Test(config, listen_pods_matched_by_target_is_refused)
{
	assert_refused("listen_pods: 10.0.0.1:5432\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       "  targets:\n"
		       "    - {port: 5432, cidr: 10.0.0.0/8}\n", 5,
		       "listen_pods 10.0.0.1:5432 is itself an intercepted target");
}

/* --- paths ------------------------------------------------------------------------ */

Test(config, relative_cgroup_is_refused)
{
	assert_refused("intercept:\n"
		       "  cgroup: sys/fs/cgroup\n", 2, "intercept.cgroup must be an absolute path");
}

Test(config, relative_pin_dir_is_refused)
{
	assert_refused("intercept: {pin_dir: bpf/dbward}\n", 1, "must be an absolute path");
}

Test(config, relative_audit_file_is_refused)
{
	assert_refused("audit:\n  file: audit.jsonl\n", 2, "audit.file must be an absolute path");
}

/* --- the collector and the spool ----------------------------------------------- */

#define TARGETS "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n"
#define COLLECTOR "collector:\n" \
		  "  address: 10.0.0.9:7443\n" \
		  "  cert: /etc/dbward/agent.crt\n" \
		  "  key: /etc/dbward/agent.key\n" \
		  "  ca: /etc/dbward/ca.crt\n"

Test(config, collector_with_spool_loads)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	const char *yaml = TARGETS COLLECTOR "spool: /var/lib/dbward/spool\n";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_str_eq(cfg.collector_address, "10.0.0.9:7443");
	cr_assert_str_eq(cfg.spool, "/var/lib/dbward/spool");
	config_free(&cfg);
}

Test(config, collector_without_spool_is_refused)
{
	assert_refused(TARGETS COLLECTOR, 2, "collector needs spool: events wait there until the "
		       "collector acknowledges them");
}

Test(config, collector_needs_all_four_keys)
{
	assert_refused(TARGETS "spool: /s\n"
		       "collector:\n"
		       "  address: 10.0.0.9:7443\n"
		       "  cert: /a.crt\n"
		       "  key: /a.key\n", 3, "collector needs address, cert, key and ca: 'ca' is missing");
	assert_refused(TARGETS "spool: /s\n"
		       "collector: {cert: /a.crt, key: /a.key, ca: /ca.crt}\n", 3, "'address' is missing");
}

Test(config, empty_collector_section_means_no_collector)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(TARGETS "collector:\n", &cfg, err), 0, "%s", err);
	cr_assert_null(cfg.collector_address);
	config_free(&cfg);
}

Test(config, spool_without_collector_is_accepted)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(TARGETS "spool: /var/lib/dbward/spool\n", &cfg, err), 0, "%s", err);
	cr_assert_str_eq(cfg.spool, "/var/lib/dbward/spool");
	config_free(&cfg);
}

Test(config, collector_address_must_be_host_and_port)
{
	static const char *const bad[] = {
		"10.0.0.9", "10.0.0.9:", "10.0.0.9:0", "10.0.0.9:65536", ":7443", "::1:7443",
		"[::1]7443", "host name:7443", "10.0.0.9:74x3",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char yaml[512];

		snprintf(yaml, sizeof(yaml), TARGETS "spool: /s\ncollector:\n  address: \"%s\"\n"
			 "  cert: /a\n  key: /b\n  ca: /c\n", bad[i]);
		assert_refused(yaml, 4, "is not host:port");
	}
}

Test(config, collector_address_forms_parse)
{
	char host[CONFIG_HOST_LEN];
	uint16_t port;

	cr_assert_eq(config_parse_host_port("collector.example:7443", host, &port), 0);
	cr_assert_str_eq(host, "collector.example");
	cr_assert_eq(port, 7443);
	cr_assert_eq(config_parse_host_port("[fd00::9]:1", host, &port), 0);
	cr_assert_str_eq(host, "fd00::9");
	cr_assert_eq(port, 1);
	cr_assert_eq(config_parse_host_port("127.0.0.1:65535", host, &port), 0);
	cr_assert_str_eq(host, "127.0.0.1");
}

Test(config, relative_collector_files_and_spool_are_refused)
{
	assert_refused(TARGETS "spool: var/spool\n", 2, "spool must be an absolute path");
	assert_refused(TARGETS "collector: {ca: ca.crt}\n", 2, "collector.ca must be an absolute path");
}

Test(config, agent_id_must_be_printable_without_spaces)
{
	assert_refused("agent_id: \"node 7\"\n" TARGETS, 1, "agent_id must be 1..128 printable");
	assert_refused("agent_id: \"n\\u00e9\"\n" TARGETS, 1, "agent_id must be 1..128 printable");
}

Test(config, spool_limits_are_checked)
{
	assert_refused(TARGETS "spool_max_bytes: 1048576\n", 2, "out of range");
	assert_refused(TARGETS "spool_fsync_ms: 0\n", 2, "out of range");
	assert_refused(TARGETS "collector: {batch_max_events: 0}\n", 2, "out of range");
	assert_refused(TARGETS "collector: {batch_ms: 60001}\n", 2, "out of range");
}

/* --- API contract --------------------------------------------------------------- */

Test(config, free_of_a_zeroed_config_is_safe)
{
	struct agent_config cfg = { 0 };

	config_free(&cfg);
	config_free(&cfg);
	config_free(NULL);
	cr_assert(is_zeroed(&cfg));
}

Test(config, error_is_truncated_to_a_small_buffer)
{
	struct agent_config cfg;
	char err[12];

	memset(err, 'x', sizeof(err));
	cr_assert_eq(config_load_string(NAME, "lissten: 1\n", 11, &cfg, err, sizeof(err)), -1);
	cr_assert_eq(strlen(err), sizeof(err) - 1);
	cr_assert(strncmp(err, NAME ":1:", sizeof(err) - 1) == 0, "%s", err);
}

Test(config, null_error_buffer_is_accepted)
{
	struct agent_config cfg;

	cr_assert_eq(config_load_string(NAME, "x: 1\n", 5, &cfg, NULL, 0), -1);
	cr_assert(is_zeroed(&cfg));
}

Test(config, refusal_after_allocations_leaves_nothing_behind)
{
	/* cgroup, pin_dir, audit.file and targets are allocated before the loop check. */
	assert_refused("audit: {file: /var/log/a.jsonl}\n"
		       "intercept:\n"
		       "  cgroup: /cg\n"
		       "  pin_dir: /sys/fs/bpf/x\n"
		       "  targets: [{port: 15432}]\n", 5, "is itself an intercepted target");
}

/* --- files ------------------------------------------------------------------------ */

static char *write_temp(const char *text, size_t len)
{
	char *path = strdup("/tmp/dbward-config-test-XXXXXX");
	int fd;

	cr_assert_not_null(path);
	fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	return path;
}

Test(config, file_loads_like_a_string)
{
	char *path = write_temp(minimal_yaml, strlen(minimal_yaml));
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(config_load_file(path, &cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_str_eq(cfg.cgroup, "/sys/fs/cgroup/workloads");
	config_free(&cfg);
	unlink(path);
	free(path);
}

Test(config, file_errors_carry_the_path)
{
	const char *yaml = "workers: 1\nfail: sometimes\n";
	char *path = write_temp(yaml, strlen(yaml));
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "", prefix[128];

	cr_assert_eq(config_load_file(path, &cfg, err, sizeof(err)), -1);
	snprintf(prefix, sizeof(prefix), "%s:2: fail: unknown word", path);
	cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
	cr_assert(is_zeroed(&cfg));
	unlink(path);
	free(path);
}

Test(config, missing_file_says_cannot_read)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(config_load_file("/nonexistent/dbward.yaml", &cfg, err, sizeof(err)), -1);
	cr_assert_str_eq(err, "/nonexistent/dbward.yaml: cannot read: No such file or directory");
	cr_assert(is_zeroed(&cfg));
}

Test(config, directory_says_cannot_read)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(config_load_file("/tmp", &cfg, err, sizeof(err)), -1);
	cr_assert_str_eq(err, "/tmp: cannot read: Is a directory");
}

Test(config, file_over_one_mib_is_refused)
{
	size_t len = 1024 * 1024 + 1;
	char *text = malloc(len);
	char *path;
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_not_null(text);
	memset(text, '#', len);
	path = write_temp(text, len);
	cr_assert_eq(config_load_file(path, &cfg, err, sizeof(err)), -1);
	cr_assert(strstr(err, "too large"), "%s", err);
	cr_assert(is_zeroed(&cfg));
	unlink(path);
	free(path);
	free(text);
}

Test(config, file_of_exactly_one_mib_is_read)
{
	size_t len = 1024 * 1024;
	char *text = malloc(len);
	char *path;
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_not_null(text);
	memset(text, ' ', len);
	memcpy(text, minimal_yaml, strlen(minimal_yaml));
	text[len - 1] = '\n';
	path = write_temp(text, len);
	cr_assert_eq(config_load_file(path, &cfg, err, sizeof(err)), 0, "%s", err);
	config_free(&cfg);
	unlink(path);
	free(path);
	free(text);
}

/* --- TLS and message limits ----------------------------------------------------- */

Test(config, upstream_tls_defaults_to_prefer_and_takes_every_mode)
{
	static const char yaml[] =
		"intercept:\n"
		"  cgroup: /sys/fs/cgroup/workloads\n"
		"  targets:\n"
		"    - port: 5432\n"
		"    - port: 5433\n"
		"      upstream_tls: verify-full\n"
		"      upstream_ca: /etc/dbward/db-ca.pem\n"
		"    - port: 5434\n"
		"      upstream_tls: disable\n"
		"tls:\n"
		"  cert: /etc/dbward/agent.crt\n"
		"  key: /etc/dbward/agent.key\n"
		"limits:\n"
		"  max_message_bytes: 1048576\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.targets[0].upstream_tls, CONFIG_UPSTREAM_TLS_PREFER);
	cr_assert_null(cfg.targets[0].upstream_ca);
	cr_assert_eq(cfg.targets[1].upstream_tls, CONFIG_UPSTREAM_TLS_VERIFY_FULL);
	cr_assert_str_eq(cfg.targets[1].upstream_ca, "/etc/dbward/db-ca.pem");
	cr_assert_eq(cfg.targets[2].upstream_tls, CONFIG_UPSTREAM_TLS_DISABLE);
	cr_assert_str_eq(cfg.tls_cert, "/etc/dbward/agent.crt");
	cr_assert_str_eq(cfg.tls_key, "/etc/dbward/agent.key");
	cr_assert_eq(cfg.max_message_bytes, 1048576);
	config_free(&cfg);
}

Test(config, default_message_limit_is_256_mib_and_no_tls)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load(minimal_yaml, &cfg, err), 0, "%s", err);
	cr_assert_eq(cfg.max_message_bytes, 256u << 20);
	cr_assert_null(cfg.tls_cert);
	cr_assert_null(cfg.tls_key);
	config_free(&cfg);
}

Test(config, refuses_verify_full_without_a_ca)
{
	assert_refused("intercept:\n"
		       "  cgroup: /sys/fs/cgroup/workloads\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "      upstream_tls: verify-full\n",
		       4, "upstream_ca");
}

Test(config, refuses_an_unknown_upstream_tls_mode)
{
	assert_refused("intercept:\n"
		       "  cgroup: /sys/fs/cgroup/workloads\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "      upstream_tls: sometimes\n",
		       5, "verify-full");
}

Test(config, refuses_tls_with_a_cert_but_no_key)
{
	assert_refused("intercept:\n"
		       "  cgroup: /sys/fs/cgroup/workloads\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "tls:\n"
		       "  cert: /etc/dbward/agent.crt\n",
		       5, "key");
}

Test(config, refuses_a_message_limit_out_of_range)
{
	assert_refused("intercept:\n"
		       "  cgroup: /sys/fs/cgroup/workloads\n"
		       "  targets:\n"
		       "    - port: 5432\n"
		       "limits:\n"
		       "  max_message_bytes: 100\n",
		       6, "max_message_bytes");
}

/* --- rules and the policy section ------------------------------------------------- */

static void decide(const struct agent_config *cfg, const char *sql_text,
		   struct policy_decision *d)
{
	struct sql_parse sql;

	cr_assert_eq(sql_parse(sql_text, strlen(sql_text), NULL, &sql), 0);
	policy_decide(cfg->policy, NULL, &sql, d);
	sql_parse_free(&sql);
}

Test(config, rules_and_policy_section_are_compiled_together)
{
	static const char yaml[] =
		"policy:\n"
		"  default_action: deny\n"
		"  unparsable: forward\n"
		"rules:\n"
		"  - name: no-drop\n"
		"    match: { statements: [drop, truncate] }\n"
		"    action: deny\n"
		"  - name: reads\n"
		"    match: { statements: select }\n"
		"    action: allow\n"
		"intercept: {cgroup: /cg, targets: [{port: 5432}]}\n";
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct policy_decision d;

	cr_assert_eq(load(yaml, &cfg, err), 0, "%s", err);
	cr_assert_not_null(cfg.policy);
	cr_assert_eq(policy_rule_count(cfg.policy), 2);
	cr_assert_eq(cfg.policy_settings.default_action, POLICY_DENY);
	cr_assert_eq(policy_settings(cfg.policy)->default_action, POLICY_DENY);
	cr_assert_eq(policy_settings(cfg.policy)->unparsable, POLICY_UNPARSABLE_FORWARD);
	decide(&cfg, "DROP TABLE t", &d);
	cr_assert_eq(d.action, POLICY_DENY);
	cr_assert_str_eq(d.rule, "no-drop");
	decide(&cfg, "SELECT 1", &d);
	cr_assert_eq(d.action, POLICY_ALLOW);
	decide(&cfg, "VACUUM", &d);
	cr_assert_eq(d.action, POLICY_DENY, "default_action: deny");
	cr_assert_eq(d.basis, POLICY_BASIS_DEFAULT);
	decide(&cfg, "SELEC 1", &d);
	cr_assert_eq(d.action, POLICY_ALLOW, "unparsable: forward");
	config_free(&cfg);
	cr_assert(is_zeroed(&cfg));
}

Test(config, no_rules_gives_an_empty_policy_with_the_defaults)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";
	struct policy_decision d;

	cr_assert_eq(load(minimal_yaml, &cfg, err), 0, "%s", err);
	cr_assert_not_null(cfg.policy);
	cr_assert_eq(policy_rule_count(cfg.policy), 0);
	cr_assert_eq(policy_settings(cfg.policy)->default_action, POLICY_ALLOW);
	cr_assert_eq(policy_settings(cfg.policy)->unparsable, POLICY_UNPARSABLE_DENY);
	decide(&cfg, "DROP TABLE t", &d);
	cr_assert_eq(d.action, POLICY_ALLOW);
	decide(&cfg, "SELEC 1", &d);
	cr_assert_eq(d.action, POLICY_DENY);
	config_free(&cfg);
}

Test(config, empty_rules_key_is_no_rules)
{
	struct agent_config cfg;
	char err[CONFIG_ERR_LEN] = "";

	cr_assert_eq(load("rules:\npolicy:\n"
			  "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n", &cfg, err), 0,
		     "%s", err);
	cr_assert_eq(policy_rule_count(cfg.policy), 0);
	config_free(&cfg);
}

Test(config, rule_errors_carry_the_file_and_line)
{
	assert_refused("intercept: {cgroup: /cg, targets: [{port: 5432}]}\n"
		       "rules:\n"
		       "  - name: no-drop\n"
		       "    match: { statements: [drop] }\n"
		       "    action: deny\n"
		       "  - name: oops\n"
		       "    action: block\n", 7, "rules[1].action: unknown action 'block'");
	assert_refused("rules:\n"
		       "  - name: a\n"
		       "    who: {pid: 1}\n"
		       "    action: deny\n"
		       "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n", 3,
		       "unknown selector 'pid'");
}

Test(config, policy_section_words_are_checked)
{
	assert_refused("policy:\n"
		       "  default_action: audit\n", 2,
		       "policy.default_action: unknown word 'audit' (expected one of: allow, deny)");
	assert_refused("policy:\n"
		       "  unparsable: allow\n", 2, "expected one of: deny, forward");
	assert_refused("policy:\n"
		       "  unparseable: deny\n", 2, "unknown key 'unparseable' in policy");
}

Test(config, rules_error_after_other_allocations_leaves_nothing_behind)
{
	assert_refused("audit: {file: /var/log/a.jsonl}\n"
		       "rules:\n"
		       "  - {name: a, action: deny}\n"
		       "  - {name: a, action: deny}\n"
		       "intercept: {cgroup: /cg, targets: [{port: 5432}]}\n", 4,
		       "duplicate rule name 'a'");
}
