/*
 * The agent's configuration as one table (config_keys[] below): for every
 * key its type, default, whether SIGHUP may change it and a validator. The
 * YAML document is walked against that table, so no code outside it spells
 * a key name, except the cross-key checks in config_finish().
 *
 * Ownership: the agent_config owns every string and array in it; the table
 * knows which fields those are and table_free() releases them.
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

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_NAME_LEN 96		/* "intercept.targets[255].cidr" fits */
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

struct config_ctx {
	const char *name;		/* file name, first part of every error */
	char *err;
	size_t errlen;
	yaml_document_t *doc;
};

/* Where a key was met in the document; both NULL while it has not been. */
struct config_seen {
	const yaml_node_t *key;
	const yaml_node_t *value;
};

struct config_key;

/* One YAML mapping being walked: which keys it may hold, and where to. */
struct config_scope {
	const struct config_key *keys;
	size_t n_keys;
	const char *prefix;		/* the mapping's keys are prefix.word */
	const char *label;		/* its name in errors; "" at the top */
	void *base;			/* struct that key offsets point into */
	struct config_seen *seen;	/* one per key */
};

enum config_type {
	CONFIG_T_UINT,
	CONFIG_T_ENUM,
	CONFIG_T_STRING,
	CONFIG_T_ADDR,
	CONFIG_T_CIDR,
	CONFIG_T_SECTION,		/* a mapping whose keys are in the same table */
	CONFIG_T_LIST,			/* a sequence of mappings, each an item table */
	CONFIG_T_CUSTOM,		/* any node, handed whole to a module's parser */
};

/*
 * A key whose value another module parses (the policy's rules): it gets the
 * document and the value's node, writes into @field, and reports errors as
 * "FILE:LINE: reason" itself. Returns 0 or -1.
 */
typedef int config_custom_parse_fn(yaml_document_t *doc, const yaml_node_t *node,
				   const char *file, void *field, char *err, size_t errlen);
typedef void config_custom_free_fn(void *field);

/* Returns 0, or -1 with the error written; @node is NULL for a default. */
typedef int config_validate_fn(struct config_ctx *ctx, const struct config_key *key,
			       const char *shown, const yaml_node_t *node, const void *base);

struct config_key {
	const char *name;		/* full dotted path, e.g. "intercept.cgroup" */
	enum config_type type;
	size_t offset;			/* of the field in the scope's struct */
	size_t size;			/* of that field */
	bool has_flag;			/* optional value: a bool says it is set */
	size_t has_offset;
	bool required;
	bool reloadable;		/* may change on SIGHUP without a restart */
	const char *default_text;	/* parsed like a value from the file */
	union {
		struct {
			uint64_t min, max;
			bool hex;	/* 0x... accepted besides decimal */
		} uint;
		const char *const *words;	/* enum: NULL-ended, index = value */
		const char *off_word;		/* addr: this word clears has_flag */
		struct {
			const struct config_key *keys;
			size_t n_keys;
			size_t item_size;
			size_t count_offset;	/* size_t count beside the array */
			size_t max;
		} list;
		struct {
			config_custom_parse_fn *parse;
			config_custom_free_fn *free;
		} custom;
	};
	config_validate_fn *validate;
};

#define FIELD(type, field) .offset = offsetof(type, field), .size = sizeof(((type *)0)->field)
#define HAS(type, field) .has_flag = true, .has_offset = offsetof(type, field)

static int config_vfail(struct config_ctx *ctx, size_t line, const char *fmt, va_list ap)
{
	int n;

	if (!ctx->err || !ctx->errlen)
		return -1;
	n = snprintf(ctx->err, ctx->errlen, "%s:%zu: ", ctx->name, line);
	if (n >= 0 && (size_t)n < ctx->errlen)
		vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
	return -1;
}

__attribute__((format(printf, 3, 4)))
static int config_fail_line(struct config_ctx *ctx, size_t line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_vfail(ctx, line, fmt, ap);
	va_end(ap);
	return -1;
}

static size_t node_line(const yaml_node_t *node)
{
	return node ? node->start_mark.line + 1 : 0;
}

__attribute__((format(printf, 3, 4)))
static int config_fail(struct config_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_vfail(ctx, node_line(node), fmt, ap);
	va_end(ap);
	return -1;
}

static void *field_at(const struct config_key *key, const void *base)
{
	return (char *)base + key->offset;
}

static void set_has(const struct config_key *key, void *base, bool value)
{
	if (key->has_flag)
		*(bool *)((char *)base + key->has_offset) = value;
}

static bool get_has(const struct config_key *key, const void *base)
{
	return !key->has_flag || *(const bool *)((const char *)base + key->has_offset);
}

/* --- scalar types ----------------------------------------------------------- */

static void store_uint(void *field, size_t size, uint64_t value)
{
	uint8_t v8 = (uint8_t)value;
	uint16_t v16 = (uint16_t)value;
	uint32_t v32 = (uint32_t)value;

	switch (size) {
	case 1: memcpy(field, &v8, 1); break;
	case 2: memcpy(field, &v16, 2); break;
	case 4: memcpy(field, &v32, 4); break;
	default: memcpy(field, &value, sizeof(value)); break;
	}
}

/* Digits only: no sign, no spaces, no octal; "0x" only when @hex. */
static int parse_uint(const char *text, bool hex, uint64_t *out)
{
	const char *digits = "0123456789";
	int base = 10;
	char *end;

	if (hex && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
		text += 2;
		digits = "0123456789abcdefABCDEF";
		base = 16;
	}
	if (!*text || text[strspn(text, digits)] != '\0')
		return -EINVAL;
	errno = 0;
	*out = strtoull(text, &end, base);
	if (errno == ERANGE)
		return -ERANGE;
	return *end ? -EINVAL : 0;
}

static int set_uint(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		    const yaml_node_t *node, const char *text, void *field)
{
	uint64_t value;
	int rc = parse_uint(text, key->uint.hex, &value);

	if (rc == -EINVAL)
		return config_fail(ctx, node, "%s: '%s' is not a number (expected %s)", shown, text,
				   key->uint.hex ? "decimal or 0x hex digits" : "decimal digits");
	if (rc < 0 || value < key->uint.min || value > key->uint.max) {
		if (key->uint.hex)
			return config_fail(ctx, node, "%s: %s is out of range 0x%llx..0x%llx", shown,
					   text, (unsigned long long)key->uint.min,
					   (unsigned long long)key->uint.max);
		return config_fail(ctx, node, "%s: %s is out of range %llu..%llu", shown, text,
				   (unsigned long long)key->uint.min,
				   (unsigned long long)key->uint.max);
	}
	store_uint(field, key->size, value);
	return 0;
}

static int set_enum(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		    const yaml_node_t *node, const char *text, void *field)
{
	char allowed[128] = "";
	size_t i;

	for (i = 0; key->words[i]; i++) {
		if (strcmp(text, key->words[i]) == 0) {
			store_uint(field, key->size, i);
			return 0;
		}
	}
	for (i = 0; key->words[i]; i++) {
		size_t used = strlen(allowed);

		snprintf(allowed + used, sizeof(allowed) - used, "%s%s", i ? ", " : "",
			 key->words[i]);
	}
	return config_fail(ctx, node, "%s: unknown word '%s' (expected one of: %s)", shown, text,
			   allowed);
}

static int set_string(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		      const yaml_node_t *node, const char *text, void *field)
{
	char **slot = field;
	char *copy = strdup(text);

	(void)key;
	if (!copy)
		return config_fail(ctx, node, "%s: out of memory", shown);
	free(*slot);
	*slot = copy;
	return 0;
}

static int set_addr(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		    const yaml_node_t *node, const char *text, void *field)
{
	void *base = (char *)field - key->offset;

	if (key->off_word && strcmp(text, key->off_word) == 0) {
		memset(field, 0, key->size);
		set_has(key, base, false);
		return 0;
	}
	if (netaddr_parse(text, field) < 0)
		return config_fail(ctx, node,
				   "%s: bad address '%s' (expected a.b.c.d:port or [ipv6]:port)",
				   shown, text);
	set_has(key, base, true);
	return 0;
}

static int set_cidr(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		    const yaml_node_t *node, const char *text, void *field)
{
	if (netcidr_parse(text, field) < 0)
		return config_fail(ctx, node,
				   "%s: bad cidr '%s' (expected an address or address/prefix, "
				   "e.g. 10.0.0.0/8 or fd00::/8)", shown, text);
	set_has(key, (char *)field - key->offset, true);
	return 0;
}

static void free_string(const struct config_key *key, void *field)
{
	char **slot = field;

	(void)key;
	free(*slot);
	*slot = NULL;
}

/* --- sections and lists ----------------------------------------------------- */

static int walk_mapping(struct config_ctx *ctx, const struct config_scope *scope,
			const yaml_node_t *node);
static void apply_defaults(struct config_ctx *ctx, const struct config_key *keys, size_t n_keys,
			   void *base);
static void table_free(const struct config_key *keys, size_t n_keys, void *base);

/* "audit:" with nothing under it, or "~": a key present but empty. */
static bool node_is_null(const yaml_node_t *node)
{
	if (node->type != YAML_SCALAR_NODE)
		return false;
	if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return node->data.scalar.length == 0 || strcmp((char *)node->data.scalar.value, "~") == 0 ||
	       strcmp((char *)node->data.scalar.value, "null") == 0;
}

static int walk_section(struct config_ctx *ctx, const struct config_scope *scope,
			const struct config_key *key, const yaml_node_t *node)
{
	struct config_scope inner = *scope;

	inner.prefix = key->name;
	inner.label = key->name;
	return walk_mapping(ctx, &inner, node);
}

static size_t sequence_length(const yaml_node_t *node)
{
	if (node->type != YAML_SEQUENCE_NODE)
		return 0;
	return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

static const yaml_node_t *sequence_item(const struct config_ctx *ctx, const yaml_node_t *node,
					size_t i)
{
	return yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
}

static int walk_list_item(struct config_ctx *ctx, const struct config_key *key, size_t index,
			  const yaml_node_t *node, void *item)
{
	struct config_seen seen[8] = { 0 };
	char label[CONFIG_NAME_LEN];
	struct config_scope scope = {
		.keys = key->list.keys, .n_keys = key->list.n_keys, .prefix = "",
		.label = label, .base = item, .seen = seen,
	};

	if (key->list.n_keys > ARRAY_SIZE(seen))
		return config_fail(ctx, node, "internal: too many keys in %s", key->name);
	snprintf(label, sizeof(label), "%s[%zu]", key->name, index);
	if (node->type != YAML_MAPPING_NODE)
		return config_fail(ctx, node, "%s must be a mapping (e.g. \"- port: 5432\")", label);
	apply_defaults(ctx, key->list.keys, key->list.n_keys, item);
	return walk_mapping(ctx, &scope, node);
}

static int walk_list(struct config_ctx *ctx, const struct config_scope *scope,
		     const struct config_key *key, const yaml_node_t *node)
{
	size_t n = sequence_length(node);
	void *items;

	if (node->type != YAML_SEQUENCE_NODE && !node_is_null(node))
		return config_fail(ctx, node, "%s must be a list", key->name);
	if (n == 0)
		return config_fail(ctx, node, "%s is empty; list at least one entry", key->name);
	if (n > key->list.max)
		return config_fail(ctx, sequence_item(ctx, node, key->list.max),
				   "%s: too many entries (%zu, at most %zu)", key->name, n,
				   key->list.max);
	items = calloc(n, key->list.item_size);
	if (!items)
		return config_fail(ctx, node, "%s: out of memory", key->name);
	/* Owned by the config from here on, so any error below frees it. */
	memcpy(field_at(key, scope->base), &items, sizeof(items));
	memcpy((char *)scope->base + key->list.count_offset, &n, sizeof(n));
	for (size_t i = 0; i < n; i++) {
		void *item = (char *)items + i * key->list.item_size;

		if (walk_list_item(ctx, key, i, sequence_item(ctx, node, i), item) < 0)
			return -1;
	}
	return 0;
}

static void free_list(const struct config_key *key, void *field)
{
	size_t n;
	char *items;

	memcpy(&items, field, sizeof(items));
	memcpy(&n, (char *)field - key->offset + key->list.count_offset, sizeof(n));
	for (size_t i = 0; items && i < n; i++)
		table_free(key->list.keys, key->list.n_keys, items + i * key->list.item_size);
	free(items);
}

static int walk_custom(struct config_ctx *ctx, const struct config_scope *scope,
		       const struct config_key *key, const yaml_node_t *node)
{
	return key->custom.parse(ctx->doc, node, ctx->name, field_at(key, scope->base), ctx->err,
				 ctx->errlen);
}

static void free_custom(const struct config_key *key, void *field)
{
	key->custom.free(field);
}

struct config_type_ops {
	/* Scalars: @text into @field; @node (NULL for a default) places errors. */
	int (*set)(struct config_ctx *ctx, const struct config_key *key, const char *shown,
		   const yaml_node_t *node, const char *text, void *field);
	/* Sections and lists take their node whole. */
	int (*walk)(struct config_ctx *ctx, const struct config_scope *scope,
		    const struct config_key *key, const yaml_node_t *node);
	void (*free)(const struct config_key *key, void *field);
};

static const struct config_type_ops config_types[] = {
	[CONFIG_T_UINT] = { .set = set_uint },
	[CONFIG_T_ENUM] = { .set = set_enum },
	[CONFIG_T_STRING] = { .set = set_string, .free = free_string },
	[CONFIG_T_ADDR] = { .set = set_addr },
	[CONFIG_T_CIDR] = { .set = set_cidr },
	[CONFIG_T_SECTION] = { .walk = walk_section },
	[CONFIG_T_LIST] = { .walk = walk_list, .free = free_list },
	[CONFIG_T_CUSTOM] = { .walk = walk_custom, .free = free_custom },
};

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
	const struct netaddr *addr = field_at(key, base);

	if (!netaddr_is_v4(addr))
		return config_fail(ctx, node, "%s must be an IPv4 address:port "
				   "(IPv6 goes in listen6)", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

static int validate_listen_v6(struct config_ctx *ctx, const struct config_key *key,
			      const char *shown, const yaml_node_t *node, const void *base)
{
	const struct netaddr *addr = field_at(key, base);

	if (!get_has(key, base))
		return 0;
	if (netaddr_is_v4(addr))
		return config_fail(ctx, node, "%s must be an IPv6 [address]:port or 'off' "
				   "(IPv4 goes in listen)", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

static int validate_listen_pods(struct config_ctx *ctx, const struct config_key *key,
				const char *shown, const yaml_node_t *node, const void *base)
{
	const struct netaddr *addr = field_at(key, base);

	if (ip_is_loopback(addr->ip))
		return config_fail(ctx, node, "%s must not be a loopback address: workloads in "
				   "their own network namespace cannot reach the host's", shown);
	return check_redirect_addr(ctx, shown, node, addr);
}

static int validate_absolute_path(struct config_ctx *ctx, const struct config_key *key,
				  const char *shown, const yaml_node_t *node, const void *base)
{
	const char *path = *(char *const *)field_at(key, base);

	if (path[0] != '/')
		return config_fail(ctx, node, "%s must be an absolute path (got '%s')", shown, path);
	if (strlen(path) >= PATH_MAX)
		return config_fail(ctx, node, "%s: path too long (at most %d bytes)", shown,
				   PATH_MAX - 1);
	return 0;
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
	size_t n = sequence_length(node);

	memcpy(&targets, field_at(key, base), sizeof(targets));
	for (size_t i = 0; i < n; i++) {
		enum config_upstream_tls mode = targets[i].upstream_tls;

		if ((mode == CONFIG_UPSTREAM_TLS_VERIFY_CA || mode == CONFIG_UPSTREAM_TLS_VERIFY_FULL) &&
		    !targets[i].upstream_ca)
			return config_fail(ctx, sequence_item(ctx, node, i),
					   "%s[%zu]: upstream_tls %s needs upstream_ca (a CA file)",
					   shown, i, upstream_tls_words[mode]);
	}
	for (size_t i = 1; i < n; i++) {
		for (size_t j = 0; j < i; j++) {
			if (targets_same(&targets[i], &targets[j]))
				return config_fail(ctx, sequence_item(ctx, node, i),
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
		.validate = validate_absolute_path,
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
		.required = true, .validate = validate_absolute_path,
	},
	[KEY_INTERCEPT_PIN_DIR] = {
		.name = "intercept.pin_dir", .type = CONFIG_T_STRING, FIELD(CFG, pin_dir),
		.default_text = "/sys/fs/bpf/dbward", .validate = validate_absolute_path,
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
		.reloadable = true, .validate = validate_absolute_path,
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
		.validate = validate_absolute_path,
	},
	[KEY_TLS_KEY] = {
		.name = "tls.key", .type = CONFIG_T_STRING, FIELD(CFG, tls_key),
		.validate = validate_absolute_path,
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

/* --- walking a mapping against a table ------------------------------------------ */

static void apply_defaults(struct config_ctx *ctx, const struct config_key *keys, size_t n_keys,
			   void *base)
{
	for (size_t i = 0; i < n_keys; i++) {
		const struct config_key *key = &keys[i];

		/* Defaults are ours and known good; a failure is a bug in the table. */
		if (key->default_text)
			config_types[key->type].set(ctx, key, key->name, NULL, key->default_text,
						    field_at(key, base));
	}
}

/* The word @name stands for in a mapping at @prefix, or NULL if not directly in it. */
static const char *key_word(const char *name, const char *prefix)
{
	size_t len = strlen(prefix);

	if (len) {
		if (strncmp(name, prefix, len) != 0 || name[len] != '.')
			return NULL;
		name += len + 1;
	}
	return strchr(name, '.') ? NULL : name;
}

static const struct config_key *scope_find(const struct config_scope *scope, const char *word)
{
	for (size_t i = 0; i < scope->n_keys; i++) {
		const char *w = key_word(scope->keys[i].name, scope->prefix);

		if (w && strcmp(w, word) == 0)
			return &scope->keys[i];
	}
	return NULL;
}

static void key_shown(const struct config_scope *scope, const struct config_key *key,
		      char *buf, size_t len)
{
	const char *word = key_word(key->name, scope->prefix);

	snprintf(buf, len, "%s%s%s", scope->label, *scope->label ? "." : "", word);
}

static const char *node_kind(const yaml_node_t *node)
{
	return node->type == YAML_MAPPING_NODE ? "mapping" : "list";
}

/* The text of a scalar value; NULL with the error written otherwise. */
static const char *scalar_text(struct config_ctx *ctx, const struct config_key *key,
			       const char *shown, const yaml_node_t *node)
{
	const char *text;

	if (node->type != YAML_SCALAR_NODE) {
		config_fail(ctx, node, "%s must be a single value, not a %s%s", shown,
			    node_kind(node), key->type == CONFIG_T_ADDR ?
			    " (quote IPv6 addresses: \"[::1]:15432\")" : "");
		return NULL;
	}
	text = (const char *)node->data.scalar.value;
	if (node->data.scalar.length == 0) {
		config_fail(ctx, node, "%s is empty", shown);
		return NULL;
	}
	if (strlen(text) != node->data.scalar.length) {
		config_fail(ctx, node, "%s contains a NUL character", shown);
		return NULL;
	}
	return text;
}

static int apply_value(struct config_ctx *ctx, const struct config_scope *scope,
		       const struct config_key *key, const yaml_node_t *node)
{
	const struct config_type_ops *ops = &config_types[key->type];
	char shown[CONFIG_NAME_LEN];
	const char *text;

	key_shown(scope, key, shown, sizeof(shown));
	if (ops->walk) {
		if (ops->walk(ctx, scope, key, node) < 0)
			return -1;
	} else {
		text = scalar_text(ctx, key, shown, node);
		if (!text || ops->set(ctx, key, shown, node, text, field_at(key, scope->base)) < 0)
			return -1;
	}
	return key->validate ? key->validate(ctx, key, shown, node, scope->base) : 0;
}

static int walk_pair(struct config_ctx *ctx, const struct config_scope *scope,
		     const yaml_node_pair_t *pair)
{
	const yaml_node_t *knode = yaml_document_get_node(ctx->doc, pair->key);
	const yaml_node_t *vnode = yaml_document_get_node(ctx->doc, pair->value);
	const struct config_key *key;
	struct config_seen *seen;
	const char *word;

	if (knode->type != YAML_SCALAR_NODE)
		return config_fail(ctx, knode, "a key must be a plain word, not a %s",
				   node_kind(knode));
	word = (const char *)knode->data.scalar.value;
	key = scope_find(scope, word);
	if (!key)
		return config_fail(ctx, knode, "unknown key '%s'%s%s", word,
				   *scope->label ? " in " : "", scope->label);
	seen = &scope->seen[key - scope->keys];
	if (seen->key)
		return config_fail(ctx, knode, "duplicate key '%s' (first on line %zu)", word,
				   node_line(seen->key));
	seen->key = knode;
	seen->value = vnode;
	return apply_value(ctx, scope, key, vnode);
}

static int check_required(struct config_ctx *ctx, const struct config_scope *scope,
			  const yaml_node_t *node)
{
	char shown[CONFIG_NAME_LEN];

	for (size_t i = 0; i < scope->n_keys; i++) {
		const struct config_key *key = &scope->keys[i];

		if (!key->required || scope->seen[i].key || !key_word(key->name, scope->prefix))
			continue;
		key_shown(scope, key, shown, sizeof(shown));
		return config_fail(ctx, node, "missing required key '%s'", shown);
	}
	return 0;
}

static int walk_mapping(struct config_ctx *ctx, const struct config_scope *scope,
			const yaml_node_t *node)
{
	if (node->type != YAML_MAPPING_NODE && !node_is_null(node))
		return config_fail(ctx, node, "%s must be a mapping of keys, not a %s",
				   *scope->label ? scope->label : "the top level",
				   node->type == YAML_SEQUENCE_NODE ? "list" : "single value");
	if (node->type == YAML_MAPPING_NODE) {
		for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
		     pair < node->data.mapping.pairs.top; pair++) {
			if (walk_pair(ctx, scope, pair) < 0)
				return -1;
		}
	}
	return check_required(ctx, scope, node);
}

/* --- the whole document ---------------------------------------------------------- */

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
		return config_fail(ctx, sequence_item(ctx, targets_node, i),
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

static int config_from_root(struct config_ctx *ctx, const yaml_node_t *root,
			    struct agent_config *cfg)
{
	struct config_seen seen[KEY_COUNT] = { 0 };
	struct config_scope scope = {
		.keys = config_keys, .n_keys = KEY_COUNT, .prefix = "", .label = "",
		.base = cfg, .seen = seen,
	};

	if (node_is_null(root))
		return config_fail(ctx, root, "empty configuration");
	if (root->type != YAML_MAPPING_NODE)
		return config_fail(ctx, root, "the top level must be a mapping of keys, not a %s",
				   root->type == YAML_SEQUENCE_NODE ? "list" : "single value");
	apply_defaults(ctx, config_keys, KEY_COUNT, cfg);
	if (walk_mapping(ctx, &scope, root) < 0)
		return -1;
	return config_finish(ctx, cfg, seen);
}

/* libyaml's reader reports a byte offset, not a line. */
static size_t line_of_offset(const char *yaml, size_t len, size_t offset)
{
	size_t line = 1;

	for (size_t i = 0; i < offset && i < len; i++)
		line += yaml[i] == '\n';
	return line;
}

static int parser_fail(struct config_ctx *ctx, const yaml_parser_t *parser, const char *yaml,
		       size_t len)
{
	const char *problem = parser->problem ? parser->problem : "unknown error";

	switch (parser->error) {
	case YAML_MEMORY_ERROR:
		return config_fail_line(ctx, 0, "out of memory");
	case YAML_READER_ERROR:
		return config_fail_line(ctx, line_of_offset(yaml, len, parser->problem_offset),
					"not valid YAML text: %s", problem);
	default:
		break;
	}
	if (parser->context)
		return config_fail_line(ctx, parser->problem_mark.line + 1,
					"YAML syntax error: %s (%s that began on line %zu)", problem,
					parser->context, parser->context_mark.line + 1);
	return config_fail_line(ctx, parser->problem_mark.line + 1, "YAML syntax error: %s",
				problem);
}

/* A second document would be silently ignored by a reader like ours: refuse it. */
static int check_no_second_document(struct config_ctx *ctx, yaml_parser_t *parser,
				    const char *yaml, size_t len)
{
	yaml_document_t next;
	bool present;
	size_t line;

	if (!yaml_parser_load(parser, &next))
		return parser_fail(ctx, parser, yaml, len);
	present = yaml_document_get_root_node(&next) != NULL;
	line = next.start_mark.line + 1;
	yaml_document_delete(&next);
	if (present)
		return config_fail_line(ctx, line, "more than one YAML document; "
					"the configuration is a single mapping");
	return 0;
}

int config_load_string(const char *name, const char *yaml, size_t len,
		       struct agent_config *cfg, char *err, size_t errlen)
{
	struct config_ctx ctx = { .name = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_document_t doc;
	bool have_parser = false, have_doc = false;
	const yaml_node_t *root;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	if (err && errlen)
		err[0] = '\0';
	if (!yaml)
		yaml = "";
	if (!yaml_parser_initialize(&parser)) {
		config_fail_line(&ctx, 0, "out of memory");
		goto cleanup;
	}
	have_parser = true;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	if (!yaml_parser_load(&parser, &doc)) {
		parser_fail(&ctx, &parser, yaml, len);
		goto cleanup;
	}
	have_doc = true;
	ctx.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		config_fail_line(&ctx, 1, "empty configuration");
		goto cleanup;
	}
	if (config_from_root(&ctx, root, cfg) < 0)
		goto cleanup;
	rc = check_no_second_document(&ctx, &parser, yaml, len);
cleanup:
	if (have_doc)
		yaml_document_delete(&doc);
	if (have_parser)
		yaml_parser_delete(&parser);
	if (rc < 0)
		config_free(cfg);
	return rc;
}

/* Reads at most CONFIG_FILE_MAX bytes; errors are "PATH: reason". */
static int read_file(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return -1;
	}
	buf = malloc(CONFIG_FILE_MAX + 1);
	if (!buf) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(ENOMEM));
		goto cleanup;
	}
	/* One byte more than the limit tells "too large" from "exactly 1 MiB". */
	while (len <= CONFIG_FILE_MAX) {
		n = read(fd, buf + len, CONFIG_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
			goto cleanup;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > CONFIG_FILE_MAX) {
		snprintf(err, errlen, "%s: too large (more than %d bytes)", path, CONFIG_FILE_MAX);
		goto cleanup;
	}
	*out = buf;
	*out_len = len;
	buf = NULL;
	rc = 0;
cleanup:
	free(buf);
	close(fd);
	return rc;
}

int config_load_file(const char *path, struct agent_config *cfg, char *err, size_t errlen)
{
	char scratch[1];
	char *text = NULL;
	size_t len = 0;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	if (!err || !errlen) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (read_file(path, &text, &len, err, errlen) < 0)
		return -1;
	rc = config_load_string(path, text, len, cfg, err, errlen);
	free(text);
	return rc;
}

static void table_free(const struct config_key *keys, size_t n_keys, void *base)
{
	for (size_t i = 0; i < n_keys; i++) {
		if (config_types[keys[i].type].free)
			config_types[keys[i].type].free(&keys[i], field_at(&keys[i], base));
	}
}

void config_free(struct agent_config *cfg)
{
	if (!cfg)
		return;
	table_free(config_keys, KEY_COUNT, cfg);
	memset(cfg, 0, sizeof(*cfg));
}
