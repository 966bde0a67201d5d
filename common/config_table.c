/* The YAML config table walker: see config_table.h. */
#include "common/config_table.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/netaddr.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

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

int config_fail_line(struct config_ctx *ctx, size_t line, const char *fmt, ...)
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

int config_fail(struct config_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_vfail(ctx, node_line(node), fmt, ap);
	va_end(ap);
	return -1;
}

void *config_field(const struct config_key *key, const void *base)
{
	return (char *)base + key->offset;
}

static void set_has(const struct config_key *key, void *base, bool value)
{
	if (key->has_flag)
		*(bool *)((char *)base + key->has_offset) = value;
}

bool config_has(const struct config_key *key, const void *base)
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

bool config_node_is_null(const yaml_node_t *node)
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

size_t config_sequence_length(const yaml_node_t *node)
{
	if (node->type != YAML_SEQUENCE_NODE)
		return 0;
	return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

const yaml_node_t *config_sequence_item(const struct config_ctx *ctx, const yaml_node_t *node,
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
	size_t n = config_sequence_length(node);
	void *items;

	if (node->type != YAML_SEQUENCE_NODE && !config_node_is_null(node))
		return config_fail(ctx, node, "%s must be a list", key->name);
	if (n == 0)
		return config_fail(ctx, node, "%s is empty; list at least one entry", key->name);
	if (n > key->list.max)
		return config_fail(ctx, config_sequence_item(ctx, node, key->list.max),
				   "%s: too many entries (%zu, at most %zu)", key->name, n,
				   key->list.max);
	items = calloc(n, key->list.item_size);
	if (!items)
		return config_fail(ctx, node, "%s: out of memory", key->name);
	/* Owned by the config from here on, so any error below frees it. */
	memcpy(config_field(key, scope->base), &items, sizeof(items));
	memcpy((char *)scope->base + key->list.count_offset, &n, sizeof(n));
	for (size_t i = 0; i < n; i++) {
		void *item = (char *)items + i * key->list.item_size;

		if (walk_list_item(ctx, key, i, config_sequence_item(ctx, node, i), item) < 0)
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
		config_table_free(key->list.keys, key->list.n_keys, items + i * key->list.item_size);
	free(items);
}

static int walk_custom(struct config_ctx *ctx, const struct config_scope *scope,
		       const struct config_key *key, const yaml_node_t *node)
{
	return key->custom.parse(ctx->doc, node, ctx->name, config_field(key, scope->base), ctx->err,
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

int config_validate_absolute_path(struct config_ctx *ctx, const struct config_key *key,
				  const char *shown, const yaml_node_t *node, const void *base)
{
	const char *path = *(char *const *)config_field(key, base);

	if (path[0] != '/')
		return config_fail(ctx, node, "%s must be an absolute path (got '%s')", shown, path);
	if (strlen(path) >= PATH_MAX)
		return config_fail(ctx, node, "%s: path too long (at most %d bytes)", shown,
				   PATH_MAX - 1);
	return 0;
}

/* --- walking a mapping against a table ------------------------------------------ */

static void apply_defaults(struct config_ctx *ctx, const struct config_key *keys, size_t n_keys,
			   void *base)
{
	for (size_t i = 0; i < n_keys; i++) {
		const struct config_key *key = &keys[i];

		/* Defaults are ours and known good; a failure is a bug in the table. */
		if (key->default_text)
			config_types[key->type].set(ctx, key, key->name, NULL, key->default_text,
						    config_field(key, base));
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
		if (!text || ops->set(ctx, key, shown, node, text, config_field(key, scope->base)) < 0)
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
	if (node->type != YAML_MAPPING_NODE && !config_node_is_null(node))
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

int config_table_load_string(const char *name, const char *yaml, size_t len,
			     config_root_fn *from_root, void *arg, char *err, size_t errlen)
{
	struct config_ctx ctx = { .name = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_document_t doc;
	bool have_parser = false, have_doc = false;
	const yaml_node_t *root;
	int rc = -1;

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
	if (from_root(&ctx, root, arg) < 0)
		goto cleanup;
	rc = check_no_second_document(&ctx, &parser, yaml, len);
cleanup:
	if (have_doc)
		yaml_document_delete(&doc);
	if (have_parser)
		yaml_parser_delete(&parser);
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

int config_table_load_file(const char *path, config_root_fn *from_root, void *arg, char *err,
			   size_t errlen)
{
	char scratch[1];
	char *text = NULL;
	size_t len = 0;
	int rc;

	if (!err || !errlen) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (read_file(path, &text, &len, err, errlen) < 0)
		return -1;
	rc = config_table_load_string(path, text, len, from_root, arg, err, errlen);
	free(text);
	return rc;
}

int config_table_walk_root(struct config_ctx *ctx, const yaml_node_t *root,
			   const struct config_key *keys, size_t n_keys, void *base,
			   struct config_seen *seen)
{
	struct config_scope scope = {
		.keys = keys, .n_keys = n_keys, .prefix = "", .label = "",
		.base = base, .seen = seen,
	};

	if (config_node_is_null(root))
		return config_fail(ctx, root, "empty configuration");
	if (root->type != YAML_MAPPING_NODE)
		return config_fail(ctx, root, "the top level must be a mapping of keys, not a %s",
				   root->type == YAML_SEQUENCE_NODE ? "list" : "single value");
	apply_defaults(ctx, keys, n_keys, base);
	return walk_mapping(ctx, &scope, root);
}

void config_table_free(const struct config_key *keys, size_t n_keys, void *base)
{
	for (size_t i = 0; i < n_keys; i++) {
		if (config_types[keys[i].type].free)
			config_types[keys[i].type].free(&keys[i], config_field(&keys[i], base));
	}
}

