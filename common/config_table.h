/*
 * YAML configuration as a table: for every key its type, default, whether
 * SIGHUP may change it and a validator. A module (agent/config.c,
 * collector/config.c) declares its table; the document is walked against
 * it, so no code outside the table spells a key name. Errors read
 * "FILE:LINE: reason".
 *
 * Ownership: the struct being filled owns every string and array in it;
 * the table knows which fields those are and config_table_free() releases
 * them.
 */
#ifndef DBWARD_COMMON_CONFIG_TABLE_H
#define DBWARD_COMMON_CONFIG_TABLE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#define CONFIG_FILE_MAX (1024 * 1024)
#define CONFIG_NAME_LEN 96		/* "intercept.targets[255].cidr" fits */

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

__attribute__((format(printf, 3, 4)))
int config_fail(struct config_ctx *ctx, const yaml_node_t *node, const char *fmt, ...);
__attribute__((format(printf, 3, 4)))
int config_fail_line(struct config_ctx *ctx, size_t line, const char *fmt, ...);
void *config_field(const struct config_key *key, const void *base);
/* False when the key has a has_flag that is not set. */
bool config_has(const struct config_key *key, const void *base);
size_t config_sequence_length(const yaml_node_t *node);
const yaml_node_t *config_sequence_item(const struct config_ctx *ctx, const yaml_node_t *node,
					 size_t i);
/* "audit:" with nothing under it, or "~": a key present but empty. */
bool config_node_is_null(const yaml_node_t *node);

/* Validator: a string key holding an absolute path shorter than PATH_MAX. */
int config_validate_absolute_path(struct config_ctx *ctx, const struct config_key *key,
				  const char *shown, const yaml_node_t *node, const void *base);

/*
 * Fills @base from the top-level mapping @root against @keys (defaults
 * first, then the document), recording where each key was met in @seen
 * (n_keys entries, zeroed by the caller).
 */
int config_table_walk_root(struct config_ctx *ctx, const yaml_node_t *root,
			   const struct config_key *keys, size_t n_keys, void *base,
			   struct config_seen *seen);

/* Called with the document's root node; fills the caller's struct. */
typedef int config_root_fn(struct config_ctx *ctx, const yaml_node_t *root, void *arg);

/*
 * Parses @yaml (a single document; @name stands for the file in errors)
 * and hands its root to @from_root. Returns 0, or -1 with @err written.
 */
int config_table_load_string(const char *name, const char *yaml, size_t len,
			     config_root_fn *from_root, void *arg, char *err, size_t errlen);
/* The same for the file at @path (at most CONFIG_FILE_MAX bytes). */
int config_table_load_file(const char *path, config_root_fn *from_root, void *arg, char *err,
			   size_t errlen);

/* Frees what the table's string, list and custom keys own in @base. */
void config_table_free(const struct config_key *keys, size_t n_keys, void *base);

#endif
