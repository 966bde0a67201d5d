/*
 * The collector's configuration as one table (config_keys[] below), walked
 * by common/config_table.c: no code outside the table spells a key name.
 *
 * Ownership: the collector_config owns every string in it; the table knows
 * which fields those are and config_table_free() releases them.
 */
#include "collector/config.h"

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common/config_table.h"
#include "common/wire.h"

#define SQLITE_PREFIX "sqlite:"

/* --- validators ------------------------------------------------------------- */

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* store_open() takes the URL; here only its shape, so --check catches typos. */
static int validate_storage(struct config_ctx *ctx, const struct config_key *key,
			    const char *shown, const yaml_node_t *node, const void *base)
{
	const char *url = *(char *const *)config_field(key, base);
	const char *path;

	if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
		return 0;
	if (!has_prefix(url, SQLITE_PREFIX))
		return config_fail(ctx, node, "%s: '%s' is not a storage URL (expected "
				   "sqlite:/absolute/path.db or postgres://user@host:port/db)",
				   shown, url);
	path = url + strlen(SQLITE_PREFIX);
	if (path[0] != '/')
		return config_fail(ctx, node, "%s: the SQLite file must be an absolute path "
				   "(got '%s')", shown, path);
	if (strlen(path) >= PATH_MAX)
		return config_fail(ctx, node, "%s: path too long (at most %d bytes)", shown,
				   PATH_MAX - 1);
	return 0;
}

/* http_hosts: [name, ...], DNS names the API may be reached by. */
static bool host_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (!(ch >= 'a' && ch <= 'z') && !(ch >= 'A' && ch <= 'Z') &&
		    !(ch >= '0' && ch <= '9') && ch != '-' && ch != '.')
			return false;
	}
	return true;
}

static void free_hosts(void *field)
{
	struct collector_hosts *h = field;

	for (size_t i = 0; i < h->n; i++)
		free(h->names[i]);
	free(h->names);
	h->names = NULL;
	h->n = 0;
}

static int parse_hosts(yaml_document_t *doc, const yaml_node_t *node, const char *file,
		       void *field, char *err, size_t errlen)
{
	struct collector_hosts *h = field;
	const yaml_node_item_t *it;

	free_hosts(h);
	if (node->type != YAML_SEQUENCE_NODE) {
		snprintf(err, errlen, "%s:%zu: http_hosts: expected a list of host names", file,
			 node->start_mark.line + 1);
		return -1;
	}
	for (it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
		yaml_node_t *item = yaml_document_get_node(doc, *it);
		const char *name = item && item->type == YAML_SCALAR_NODE ?
					   (const char *)item->data.scalar.value : NULL;
		size_t line = item ? item->start_mark.line + 1 : node->start_mark.line + 1;
		char **names;

		if (!name || !host_name_valid(name, item->data.scalar.length)) {
			snprintf(err, errlen, "%s:%zu: http_hosts: '%s' is not a host name", file,
				 line, name ? name : "?");
			goto fail;
		}
		if (h->n == COLLECTOR_HTTP_HOSTS_MAX) {
			snprintf(err, errlen, "%s:%zu: http_hosts: at most %d names", file, line,
				 COLLECTOR_HTTP_HOSTS_MAX);
			goto fail;
		}
		if (!(names = realloc(h->names, (h->n + 1) * sizeof(*names))) ||
		    !(names[h->n] = strdup(name))) {
			if (names)
				h->names = names;
			snprintf(err, errlen, "%s: out of memory", file);
			goto fail;
		}
		for (char *c = names[h->n]; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		h->names = names;
		h->n++;
	}
	return 0;
fail:
	free_hosts(h);
	return -1;
}

/* --- the table ---------------------------------------------------------------- */

static const char *const log_level_words[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
	NULL,
};

enum config_key_id {
	KEY_LISTEN,
	KEY_HTTP,
	KEY_HTTP_HOSTS,
	KEY_STORAGE,
	KEY_TLS,
	KEY_TLS_CERT,
	KEY_TLS_KEY,
	KEY_TLS_CA,
	KEY_SIGNING_KEY,
	KEY_LOG_LEVEL,
	KEY_LIMITS,
	KEY_LIMITS_MAX_BATCH_BYTES,
	KEY_LIMITS_MAX_BATCH_EVENTS,
	KEY_COUNT,
};

#define CFG struct collector_config

/* Nothing is reloadable: the collector takes a new file at restart. */
static const struct config_key config_keys[KEY_COUNT] = {
	[KEY_LISTEN] = {
		.name = "listen", .type = CONFIG_T_ADDR, FIELD(CFG, listen),
		.default_text = "0.0.0.0:7443",
	},
	[KEY_HTTP] = {
		.name = "http", .type = CONFIG_T_ADDR, FIELD(CFG, http),
		.default_text = "127.0.0.1:7080",
	},
	[KEY_HTTP_HOSTS] = {
		.name = "http_hosts", .type = CONFIG_T_CUSTOM, FIELD(CFG, http_hosts),
		.custom = { .parse = parse_hosts, .free = free_hosts },
	},
	[KEY_STORAGE] = {
		.name = "storage", .type = CONFIG_T_STRING, FIELD(CFG, storage),
		.default_text = "sqlite:/var/lib/dbward/audit.db", .validate = validate_storage,
	},
	[KEY_TLS] = {
		.name = "tls", .type = CONFIG_T_SECTION, .required = true,
	},
	[KEY_TLS_CERT] = {
		.name = "tls.cert", .type = CONFIG_T_STRING, FIELD(CFG, tls_cert),
		.required = true, .validate = config_validate_absolute_path,
	},
	[KEY_TLS_KEY] = {
		.name = "tls.key", .type = CONFIG_T_STRING, FIELD(CFG, tls_key),
		.required = true, .validate = config_validate_absolute_path,
	},
	[KEY_TLS_CA] = {
		.name = "tls.ca", .type = CONFIG_T_STRING, FIELD(CFG, tls_ca),
		.required = true, .validate = config_validate_absolute_path,
	},
	[KEY_SIGNING_KEY] = {
		.name = "signing_key", .type = CONFIG_T_STRING, FIELD(CFG, signing_key),
		.required = true, .validate = config_validate_absolute_path,
	},
	[KEY_LOG_LEVEL] = {
		.name = "log_level", .type = CONFIG_T_ENUM, FIELD(CFG, log_level),
		.default_text = "info", .words = log_level_words,
	},
	[KEY_LIMITS] = {
		.name = "limits", .type = CONFIG_T_SECTION,
	},
	/* The wire refuses larger frames before this limit could. */
	[KEY_LIMITS_MAX_BATCH_BYTES] = {
		.name = "limits.max_batch_bytes", .type = CONFIG_T_UINT,
		FIELD(CFG, max_batch_bytes), .default_text = "16777216",
		.uint = { .min = 1024, .max = WIRE_MAX_FRAME },
	},
	[KEY_LIMITS_MAX_BATCH_EVENTS] = {
		.name = "limits.max_batch_events", .type = CONFIG_T_UINT,
		FIELD(CFG, max_batch_events), .default_text = "100000",
		.uint = { .min = 1, .max = 1000000 },
	},
};

#undef CFG

_Static_assert(sizeof(enum log_level) <= sizeof(uint64_t), "enum stored as uint");

static int config_from_root(struct config_ctx *ctx, const yaml_node_t *root, void *arg)
{
	struct config_seen seen[KEY_COUNT] = { 0 };

	return config_table_walk_root(ctx, root, config_keys, KEY_COUNT, arg, seen);
}

int collector_config_load_string(const char *name, const char *yaml, size_t len,
				 struct collector_config *cfg, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	if (config_table_load_string(name, yaml, len, config_from_root, cfg, err, errlen) < 0) {
		collector_config_free(cfg);
		return -1;
	}
	return 0;
}

int collector_config_load_file(const char *path, struct collector_config *cfg, char *err,
			       size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	if (config_table_load_file(path, config_from_root, cfg, err, errlen) < 0) {
		collector_config_free(cfg);
		return -1;
	}
	return 0;
}

void collector_config_free(struct collector_config *cfg)
{
	if (!cfg)
		return;
	config_table_free(config_keys, KEY_COUNT, cfg);
	memset(cfg, 0, sizeof(*cfg));
}
