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

int config_parse_host_port(const char *text, char host[CONFIG_HOST_LEN], uint16_t *port)
{
	const char *colon, *name = text, *name_end;
	unsigned long v;
	char *end;

	if (text[0] == '[') {
		name = text + 1;
		name_end = strchr(name, ']');
		if (!name_end || name_end[1] != ':')
			return -EINVAL;
		colon = name_end + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon || memchr(text, ':', (size_t)(colon - text)))
			return -EINVAL;	/* a bare IPv6 address needs brackets */
		name_end = colon;
	}
	if (name_end == name || (size_t)(name_end - name) >= CONFIG_HOST_LEN)
		return -EINVAL;
	for (const char *p = name; p < name_end; p++) {
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
		    !(*p >= '0' && *p <= '9') && !strchr(".-_", *p) && !(text[0] == '[' && *p == ':'))
			return -EINVAL;
	}
	if (colon[1] < '0' || colon[1] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(colon + 1, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return -EINVAL;
	memcpy(host, name, (size_t)(name_end - name));
	host[name_end - name] = '\0';
	*port = (uint16_t)v;
	return 0;
}

static int validate_host_port(struct config_ctx *ctx, const struct config_key *key,
			      const char *shown, const yaml_node_t *node, const void *base)
{
	const char *text;
	char host[CONFIG_HOST_LEN];
	uint16_t port;

	memcpy(&text, config_field(key, base), sizeof(text));
	if (text && config_parse_host_port(text, host, &port) < 0)
		return config_fail(ctx, node, "%s: '%s' is not host:port (a name, an IPv4 address, "
				   "or an IPv6 address in brackets, then a port 1..65535)", shown, text);
	return 0;
}

/* The collector names an agent by its certificate's CN: printable ASCII. */
static bool agent_id_valid(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 128)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)id[i] <= ' ' || (unsigned char)id[i] > '~')
			return false;
	return true;
}

static int validate_agent_id(struct config_ctx *ctx, const struct config_key *key,
			     const char *shown, const yaml_node_t *node, const void *base)
{
	const char *id;

	memcpy(&id, config_field(key, base), sizeof(id));
	if (id && !agent_id_valid(id))
		return config_fail(ctx, node, "%s must be 1..128 printable ASCII characters without "
				   "spaces (the collector matches it to the certificate's name)", shown);
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
	KEY_AGENT_ID,
	KEY_COLLECTOR,
	KEY_COLLECTOR_ADDRESS,
	KEY_COLLECTOR_CERT,
	KEY_COLLECTOR_KEY,
	KEY_COLLECTOR_CA,
	KEY_COLLECTOR_BATCH_MAX_EVENTS,
	KEY_COLLECTOR_BATCH_MS,
	KEY_SPOOL,
	KEY_SPOOL_MAX_BYTES,
	KEY_SPOOL_FSYNC_MS,
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
 * (BPF settings and maps, log level, limits). The rest is bound at start:
 * sockets, worker threads, cgroup attachment, pins, the mark already set
 * on open upstream sockets, and the audit pipeline (spool, file sink,
 * collector), whose numbering must not change under a running agent.
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
		.validate = config_validate_absolute_path,
	},
	/* Default: the host name, set in config_finish(). */
	[KEY_AGENT_ID] = {
		.name = "agent_id", .type = CONFIG_T_STRING, FIELD(CFG, agent_id),
		.validate = validate_agent_id,
	},
	[KEY_COLLECTOR] = {
		.name = "collector", .type = CONFIG_T_SECTION,
	},
	[KEY_COLLECTOR_ADDRESS] = {
		.name = "collector.address", .type = CONFIG_T_STRING,
		FIELD(CFG, collector_address), .validate = validate_host_port,
	},
	[KEY_COLLECTOR_CERT] = {
		.name = "collector.cert", .type = CONFIG_T_STRING, FIELD(CFG, collector_cert),
		.validate = config_validate_absolute_path,
	},
	[KEY_COLLECTOR_KEY] = {
		.name = "collector.key", .type = CONFIG_T_STRING, FIELD(CFG, collector_key),
		.validate = config_validate_absolute_path,
	},
	[KEY_COLLECTOR_CA] = {
		.name = "collector.ca", .type = CONFIG_T_STRING, FIELD(CFG, collector_ca),
		.validate = config_validate_absolute_path,
	},
	[KEY_COLLECTOR_BATCH_MAX_EVENTS] = {
		.name = "collector.batch_max_events", .type = CONFIG_T_UINT,
		FIELD(CFG, collector_batch_max_events), .default_text = "5000",
		.uint = { .min = 1, .max = 100000 },
	},
	[KEY_COLLECTOR_BATCH_MS] = {
		.name = "collector.batch_ms", .type = CONFIG_T_UINT, FIELD(CFG, collector_batch_ms),
		.default_text = "200", .uint = { .min = 1, .max = 60000 },
	},
	[KEY_SPOOL] = {
		.name = "spool", .type = CONFIG_T_STRING, FIELD(CFG, spool),
		.validate = config_validate_absolute_path,
	},
	[KEY_SPOOL_MAX_BYTES] = {
		.name = "spool_max_bytes", .type = CONFIG_T_UINT, FIELD(CFG, spool_max_bytes),
		/* Room for at least one record of the largest size. */
		.default_text = "1073741824", .uint = { .min = 16777216, .max = UINT64_MAX },
	},
	[KEY_SPOOL_FSYNC_MS] = {
		.name = "spool_fsync_ms", .type = CONFIG_T_UINT, FIELD(CFG, spool_fsync_ms),
		.default_text = "1000", .uint = { .min = 1, .max = 60000 },
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

/* collector: all four keys or none, and a spool to hold what is unacknowledged. */
static int check_collector(struct config_ctx *ctx, const struct agent_config *cfg,
			   const struct config_seen *seen)
{
	static const struct {
		enum config_key_id key;
		const char *word;
	} needed[] = {
		{ KEY_COLLECTOR_ADDRESS, "address" },
		{ KEY_COLLECTOR_CERT, "cert" },
		{ KEY_COLLECTOR_KEY, "key" },
		{ KEY_COLLECTOR_CA, "ca" },
	};
	bool any = false;

	for (size_t i = 0; i < ARRAY_SIZE(needed); i++)
		any |= seen[needed[i].key].key != NULL;
	if (!any)
		return 0;
	for (size_t i = 0; i < ARRAY_SIZE(needed); i++) {
		if (!seen[needed[i].key].key)
			return config_fail(ctx, seen[KEY_COLLECTOR].key, "collector needs address, "
					   "cert, key and ca: '%s' is missing", needed[i].word);
	}
	if (!cfg->spool)
		return config_fail(ctx, seen[KEY_COLLECTOR].key, "collector needs spool: events "
				   "wait there until the collector acknowledges them");
	return 0;
}

static int default_agent_id(struct config_ctx *ctx, struct agent_config *cfg)
{
	char host[256];

	if (cfg->agent_id)
		return 0;
	if (gethostname(host, sizeof(host)) < 0)
		return config_fail_line(ctx, 0, "agent_id: not set, and the host name cannot be "
					"read: %s", strerror(errno));
	host[sizeof(host) - 1] = '\0';
	if (!agent_id_valid(host))
		return config_fail_line(ctx, 0, "agent_id: not set, and the host name '%s' cannot "
					"be one (1..128 printable ASCII characters, no spaces)", host);
	if (!(cfg->agent_id = strdup(host)))
		return config_fail_line(ctx, 0, "out of memory");
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
	if (check_collector(ctx, cfg, seen) < 0 || default_agent_id(ctx, cfg) < 0)
		return -1;
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

