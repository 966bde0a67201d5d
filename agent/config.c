/*
 * The agent's configuration as one table (config_keys[] below): for every
 * key its type, default, whether SIGHUP may change it and a validator. The
 * YAML document is walked against that table, so no code outside it spells
 * a key name, except the cross-key checks in config_finish().
 *
 * Ownership: the agent_config owns every string and array in it; the table
 * knows which fields those are and config_table_free() releases them.
 */
#include "agent/config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "common/config_table.h"
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- validators ------------------------------------------------------------- */

static bool ip_is_unspecified(const uint8_t ip[16])
{
	static const uint8_t zero[16];

	if (netaddr_ip_is_v4(ip))
		return memcmp(ip + 12, zero, 4) == 0;
	return memcmp(ip, zero, 16) == 0;
}

static bool ip_is_loopback(const uint8_t ip[16])
{
	static const uint8_t v6_loopback[16] = { [15] = 1 };

	if (netaddr_ip_is_v4(ip))
		return ip[12] == 127;
	return memcmp(ip, v6_loopback, 16) == 0;
}

/* BPF rewrites connect() to this address, so it must name one host. */
static int check_redirect_addr(struct config_ctx *ctx, const char *shown, const yaml_node_t *node,
			       const struct netaddr *addr)
{
	char text[NETADDR_STRLEN];

	if (!ip_is_unspecified(addr->ip))
		return 0;
	netaddr_format(addr, text, sizeof(text));
	return config_fail(ctx, node, "%s: %s is not a usable address: connections are "
			   "redirected to it, name one address of this host", shown, text);
}

static int validate_listen_v4(struct config_ctx *ctx, const struct config_key *key,
			      const char *shown, const yaml_node_t *node, const void *base)
{
	const struct netaddr *addr = config_field(key, base);

	if (!netaddr_is_v4(addr))
		return config_fail(ctx, node, "%s must be an IPv4 address:port "
				   "(IPv6 goes in listen6)", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

static int validate_listen_v6(struct config_ctx *ctx, const struct config_key *key,
			      const char *shown, const yaml_node_t *node, const void *base)
{
	const struct netaddr *addr = config_field(key, base);

	if (!config_has(key, base))
		return 0;
	if (netaddr_is_v4(addr))
		return config_fail(ctx, node, "%s must be an IPv6 [address]:port or 'off' "
				   "(IPv4 goes in listen)", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

static int validate_listen_pods(struct config_ctx *ctx, const struct config_key *key,
				const char *shown, const yaml_node_t *node, const void *base)
{
	const struct netaddr *addr = config_field(key, base);

	if (ip_is_loopback(addr->ip))
		return config_fail(ctx, node, "%s must not be a loopback address: workloads in "
				   "their own network namespace cannot reach the host's", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

/* The key the BPF target set would store: "any address" equals ::/0. */
static bool targets_same(const struct config_target *a, const struct config_target *b)
{
	uint8_t alen = a->has_cidr ? a->cidr.prefixlen : 0;
	uint8_t blen = b->has_cidr ? b->cidr.prefixlen : 0;

	if (a->port != b->port || alen != blen)
		return false;
	return alen == 0 || memcmp(a->cidr.ip, b->cidr.ip, 16) == 0;
}

static const char *const upstream_tls_words[] = {
	[CONFIG_UPSTREAM_TLS_DISABLE] = "disable",
	[CONFIG_UPSTREAM_TLS_PREFER] = "prefer",
	[CONFIG_UPSTREAM_TLS_REQUIRE] = "require",
	[CONFIG_UPSTREAM_TLS_VERIFY_CA] = "verify-ca",
	[CONFIG_UPSTREAM_TLS_VERIFY_FULL] = "verify-full",
	NULL,
};

static int validate_targets(struct config_ctx *ctx, const struct config_key *key,
			    const char *shown, const yaml_node_t *node, const void *base)
{
	const struct config_target *targets;
	size_t n = config_sequence_length(node);

	memcpy(&targets, config_field(key, base), sizeof(targets));
	for (size_t i = 0; i < n; i++) {
		enum config_upstream_tls mode = targets[i].upstream_tls;

		if ((mode == CONFIG_UPSTREAM_TLS_VERIFY_CA || mode == CONFIG_UPSTREAM_TLS_VERIFY_FULL) &&
		    !targets[i].upstream_ca)
			return config_fail(ctx, config_sequence_item(ctx, node, i),
					   "%s[%zu]: upstream_tls %s needs upstream_ca (a CA file)",
					   shown, i, upstream_tls_words[mode]);
	}
	for (size_t i = 1; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			if (targets_same(&targets[i], &targets[j]))
				return config_fail(ctx, config_sequence_item(ctx, node, i),
						   "%s[%zu] duplicates %s[%zu]", shown, i,
						   shown, j);
		}
	}
	return 0;
}

/* --- the policy -------------------------------------------------------------- */

static int parse_rules(yaml_document_t *doc, const yaml_node_t *node, const char *file,
		       void *field, char *err, size_t errlen)
{
	return policy_parse(doc, node, file, field, err, errlen);
}

static void free_rules(void *field)
{
	struct policy **slot = field;

	policy_free(*slot);
	*slot = NULL;
}

/* Index = value: the enums start at the words' order. */
static const char *const default_action_words[] = {
	[POLICY_ALLOW] = "allow",
	[POLICY_DENY] = "deny",
	NULL,
};

static const char *const unparsable_words[] = {
	[POLICY_UNPARSABLE_DENY] = "deny",
	[POLICY_UNPARSABLE_FORWARD] = "forward",
	NULL,
};

/* --- the table ---------------------------------------------------------------- */

static const char *const fail_words[] = {
	[CONFIG_FAIL_CLOSED] = "closed",
	[CONFIG_FAIL_OPEN] = "open",
	NULL,
};

static const char *const log_level_words[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
	NULL,
};

enum target_key_id {
	TARGET_PORT,
	TARGET_CIDR,
	TARGET_UPSTREAM_TLS,
	TARGET_UPSTREAM_CA,
	TARGET_KEY_COUNT,
};

static const struct config_key target_keys[TARGET_KEY_COUNT] = {
	[TARGET_PORT] = {
		.name = "port", .type = CONFIG_T_UINT, FIELD(struct config_target, port),
		.required = true, .reloadable = true, .uint = { .min = 1, .max = 65535 },
	},
	[TARGET_CIDR] = {
		.name = "cidr", .type = CONFIG_T_CIDR, FIELD(struct config_target, cidr),
		HAS(struct config_target, has_cidr), .reloadable = true,
	},
	[TARGET_UPSTREAM_TLS] = {
		.name = "upstream_tls", .type = CONFIG_T_ENUM,
		FIELD(struct config_target, upstream_tls), .reloadable = true,
		.default_text = "prefer", .words = upstream_tls_words,
	},
	[TARGET_UPSTREAM_CA] = {
		.name = "upstream_ca", .type = CONFIG_T_STRING,
		FIELD(struct config_target, upstream_ca), .reloadable = true,
		.validate = config_validate_absolute_path,
	},
};

enum config_key_id {
	KEY_LISTEN,
	KEY_LISTEN6,
	KEY_LISTEN_PODS,
	KEY_FAIL,
	KEY_HEARTBEAT_TIMEOUT_MS,
	KEY_LOG_LEVEL,
	KEY_WORKERS,
	KEY_MAX_CONNECTIONS,
	KEY_INTERCEPT,
	KEY_INTERCEPT_CGROUP,
	KEY_INTERCEPT_PIN_DIR,
	KEY_INTERCEPT_UPSTREAM_MARK,
	KEY_INTERCEPT_TARGETS,
	KEY_AUDIT,
	KEY_AUDIT_FILE,
	KEY_LIMITS,
	KEY_LIMITS_MAX_MESSAGE_BYTES,
	KEY_LIMITS_STARTUP_TIMEOUT_MS,
	KEY_TLS,
	KEY_TLS_CERT,
	KEY_TLS_KEY,
	KEY_RULES,
	KEY_POLICY,
	KEY_POLICY_DEFAULT_ACTION,
	KEY_POLICY_UNPARSABLE,
	KEY_COUNT,
};

#define CFG struct agent_config

/*
 * Reloadable: what the running agent can take from a new file on SIGHUP
 * (BPF settings and maps, log level, limits, the audit sink). The rest is
 * bound at start: sockets, worker threads, cgroup attachment, pins, and
 * the mark already set on open upstream sockets.
 */
static const struct config_key config_keys[KEY_COUNT] = {
	[KEY_LISTEN] = {
		.name = "listen", .type = CONFIG_T_ADDR, FIELD(CFG, listen),
		.default_text = "127.0.0.1:15432", .validate = validate_listen_v4,
	},
	[KEY_LISTEN6] = {
		/* Default "[::1]:<port of listen>", set in config_finish(). */
		.name = "listen6", .type = CONFIG_T_ADDR, FIELD(CFG, listen6),
		HAS(CFG, has_listen6), .off_word = "off", .validate = validate_listen_v6,
	},
	[KEY_LISTEN_PODS] = {
		.name = "listen_pods", .type = CONFIG_T_ADDR, FIELD(CFG, listen_pods),
		HAS(CFG, has_listen_pods), .validate = validate_listen_pods,
	},
	[KEY_FAIL] = {
		.name = "fail", .type = CONFIG_T_ENUM, FIELD(CFG, fail), .reloadable = true,
		.default_text = "closed", .words = fail_words,
	},
	[KEY_HEARTBEAT_TIMEOUT_MS] = {
		.name = "heartbeat_timeout_ms", .type = CONFIG_T_UINT,
		FIELD(CFG, heartbeat_timeout_ms), .reloadable = true, .default_text = "3000",
		.uint = { .min = 100, .max = 600000 },
	},
	[KEY_LOG_LEVEL] = {
		.name = "log_level", .type = CONFIG_T_ENUM, FIELD(CFG, log_level),
		.reloadable = true, .default_text = "info", .words = log_level_words,
	},
	[KEY_WORKERS] = {
		.name = "workers", .type = CONFIG_T_UINT, FIELD(CFG, workers),
		.default_text = "0", .uint = { .min = 0, .max = 256 },
	},
	[KEY_MAX_CONNECTIONS] = {
		.name = "max_connections", .type = CONFIG_T_UINT, FIELD(CFG, max_connections),
		.reloadable = true, .default_text = "10000", .uint = { .min = 1, .max = 1000000 },
	},
	[KEY_INTERCEPT] = {
		.name = "intercept", .type = CONFIG_T_SECTION, .required = true,
	},
	[KEY_INTERCEPT_CGROUP] = {
		.name = "intercept.cgroup", .type = CONFIG_T_STRING, FIELD(CFG, cgroup),
		.required = true, .validate = config_validate_absolute_path,
	},
	[KEY_INTERCEPT_PIN_DIR] = {
		.name = "intercept.pin_dir", .type = CONFIG_T_STRING, FIELD(CFG, pin_dir),
		.default_text = "/sys/fs/bpf/dbward", .validate = config_validate_absolute_path,
	},
	[KEY_INTERCEPT_UPSTREAM_MARK] = {
		.name = "intercept.upstream_mark", .type = CONFIG_T_UINT,
		FIELD(CFG, upstream_mark), .default_text = "0xdb00",
		.uint = { .min = 1, .max = UINT32_MAX, .hex = true },
	},
	[KEY_INTERCEPT_TARGETS] = {
		.name = "intercept.targets", .type = CONFIG_T_LIST, FIELD(CFG, targets),
		.required = true, .reloadable = true, .validate = validate_targets,
		.list = {
			.keys = target_keys, .n_keys = TARGET_KEY_COUNT,
			.item_size = sizeof(struct config_target),
			.count_offset = offsetof(CFG, n_targets), .max = CONFIG_MAX_TARGETS,
		},
	},
	[KEY_AUDIT] = {
		.name = "audit", .type = CONFIG_T_SECTION,
	},
	[KEY_AUDIT_FILE] = {
		.name = "audit.file", .type = CONFIG_T_STRING, FIELD(CFG, audit_file),
		.reloadable = true, .validate = config_validate_absolute_path,
	},
	[KEY_LIMITS] = {
		.name = "limits", .type = CONFIG_T_SECTION,
	},
	/* PostgreSQL's own ceiling is 1 GiB (MaxAllocSize). */
	[KEY_LIMITS_MAX_MESSAGE_BYTES] = {
		.name = "limits.max_message_bytes", .type = CONFIG_T_UINT,
		FIELD(CFG, max_message_bytes), .reloadable = true, .default_text = "268435456",
		.uint = { .min = 8192, .max = 1073741824 },
	},
	/* PostgreSQL's authentication_timeout is 60 s too. */
	[KEY_LIMITS_STARTUP_TIMEOUT_MS] = {
		.name = "limits.startup_timeout_ms", .type = CONFIG_T_UINT,
		FIELD(CFG, startup_timeout_ms), .default_text = "60000",
		.uint = { .min = 100, .max = 3600000 },
	},
	[KEY_TLS] = {
		.name = "tls", .type = CONFIG_T_SECTION,
	},
	[KEY_TLS_CERT] = {
		.name = "tls.cert", .type = CONFIG_T_STRING, FIELD(CFG, tls_cert),
		.validate = config_validate_absolute_path,
	},
	[KEY_TLS_KEY] = {
		.name = "tls.key", .type = CONFIG_T_STRING, FIELD(CFG, tls_key),
		.validate = config_validate_absolute_path,
	},
	[KEY_RULES] = {
		.name = "rules", .type = CONFIG_T_CUSTOM, FIELD(CFG, policy), .reloadable = true,
		.custom = { .parse = parse_rules, .free = free_rules },
	},
	[KEY_POLICY] = {
		.name = "policy", .type = CONFIG_T_SECTION,
	},
	[KEY_POLICY_DEFAULT_ACTION] = {
		.name = "policy.default_action", .type = CONFIG_T_ENUM,
		FIELD(CFG, policy_settings.default_action), .reloadable = true,
		.default_text = "allow", .words = default_action_words,
	},
	[KEY_POLICY_UNPARSABLE] = {
		.name = "policy.unparsable", .type = CONFIG_T_ENUM,
		FIELD(CFG, policy_settings.unparsable), .reloadable = true,
		.default_text = "deny", .words = unparsable_words,
	},
};

#undef CFG

_Static_assert(sizeof(enum config_fail_mode) <= sizeof(uint64_t), "enum stored as uint");
_Static_assert(sizeof(enum log_level) <= sizeof(uint64_t), "enum stored as uint");
_Static_assert(sizeof(enum policy_action) <= sizeof(uint64_t), "enum stored as uint");
_Static_assert(sizeof(enum policy_unparsable) <= sizeof(uint64_t), "enum stored as uint");

static int check_not_intercepted(struct config_ctx *ctx, const struct agent_config *cfg,
				 const yaml_node_t *targets_node, const char *what,
				 const struct netaddr *addr)
{
	char text[NETADDR_STRLEN];

	for (size_t i = 0; i < cfg->n_targets; i++) {
		const struct config_target *t = &cfg->targets[i];

		if (t->port != addr->port || (t->has_cidr && !netcidr_contains(&t->cidr, addr->ip)))
			continue;
		netaddr_format(addr, text, sizeof(text));
		return config_fail(ctx, config_sequence_item(ctx, targets_node, i),
				   "%s %s is itself an intercepted target (intercept.targets[%zu]); "
				   "connections to it would loop back into the agent",
				   what, text, i);
	}
	return 0;
}

/* Checks and defaults that involve more than one key. */
static int config_finish(struct config_ctx *ctx, struct agent_config *cfg,
			 const struct config_seen *seen)
{
	const yaml_node_t *targets_node = seen[KEY_INTERCEPT_TARGETS].value;

	if (!seen[KEY_LISTEN6].key) {
		static const uint8_t v6_loopback[16] = { [15] = 1 };

		memcpy(cfg->listen6.ip, v6_loopback, 16);
		cfg->listen6.port = cfg->listen.port;
		cfg->has_listen6 = true;
	}
	if (!cfg->tls_cert != !cfg->tls_key)
		return config_fail(ctx, seen[KEY_TLS].key, "tls needs both cert and key");
	if (check_not_intercepted(ctx, cfg, targets_node, "listen", &cfg->listen) < 0)
		return -1;
	if (cfg->has_listen6 &&
	    check_not_intercepted(ctx, cfg, targets_node, "listen6", &cfg->listen6) < 0)
		return -1;
	if (cfg->has_listen_pods &&
	    check_not_intercepted(ctx, cfg, targets_node, "listen_pods", &cfg->listen_pods) < 0)
		return -1;
	/* No rules: an empty policy, so the defaults below still apply. */
	if (!cfg->policy &&
	    policy_parse(ctx->doc, NULL, ctx->name, &cfg->policy, ctx->err, ctx->errlen) < 0)
		return -1;
	policy_set_settings(cfg->policy, &cfg->policy_settings);
	return 0;
}

static int config_from_root(struct config_ctx *ctx, const yaml_node_t *root, void *arg)
{
	struct agent_config *cfg = arg;
	struct config_seen seen[KEY_COUNT] = { 0 };

	if (config_table_walk_root(ctx, root, config_keys, KEY_COUNT, cfg, seen) < 0)
		return -1;
	return config_finish(ctx, cfg, seen);
}

int config_load_string(const char *name, const char *yaml, size_t len,
		       struct agent_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	if (config_table_load_string(name, yaml, len, config_from_root, cfg, err, errlen) < 0) {
		config_free(cfg);
		return -1;
	}
	return 0;
}

int config_load_file(const char *path, struct agent_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	if (config_table_load_file(path, config_from_root, cfg, err, errlen) < 0) {
		config_free(cfg);
		return -1;
	}
	return 0;
}

void config_free(struct agent_config *cfg)
{
	if (!cfg)
		return;
	config_table_free(config_keys, KEY_COUNT, cfg);
	memset(cfg, 0, sizeof(*cfg));
}

