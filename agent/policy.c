/*
 * The policy engine: the `rules:` list compiled into flat rules, and
 * policy_decide, which walks them per statement. Everything that can be
 * checked or prepared is done at load time (words resolved to masks,
 * patterns split and marked literal or glob, CIDRs parsed), so a decision
 * is a few comparisons per rule and allocates nothing.
 *
 * Globs are fnmatch(3) patterns with no flags: '*' matches any run of
 * characters, '/' included, so "*ai-agents*" finds a cgroup anywhere in
 * the path. Table and function patterns are matched part by part.
 */
#include "agent/policy.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POLICY_MAX_RULES 4096
#define POLICY_NAME_MAX 128
#define NAME_PARTS_MAX 3		/* database.schema.relation */
#define NAME_PART_MAX 256		/* PostgreSQL truncates identifiers to 63 bytes */
#define LABEL_LEN 96

/* One compiled glob: compared with strcmp when it has no special character. */
struct glob {
	char *text;
	bool literal;
};

struct glob_list {
	struct glob *items;
	size_t n;			/* 0: the selector was not given */
};

/* A table or function pattern, split at '.': matched against the last
 * n_parts parts of a name, so a bare pattern names a relation in any schema. */
struct name_pattern {
	struct glob parts[NAME_PARTS_MAX];
	size_t part_len[NAME_PARTS_MAX];
	size_t n_parts;
};

struct name_list {
	struct name_pattern *items;
	size_t n;
};

/* The string selectors of `who`, in the order the subject holds them. */
enum who_string {
	WHO_COMM,
	WHO_EXE,
	WHO_USER,
	WHO_CGROUP,
	WHO_CONTAINER_ID,
	WHO_POD_UID,
	WHO_POD,
	WHO_NAMESPACE,
	WHO_DB_USER,
	WHO_DATABASE,
	WHO_APPLICATION_NAME,
	WHO_STRING_COUNT,
};

static const struct {
	const char *word;
	size_t offset;
} who_strings[WHO_STRING_COUNT] = {
	[WHO_COMM] = { "comm", offsetof(struct policy_subject, comm) },
	[WHO_EXE] = { "exe", offsetof(struct policy_subject, exe) },
	[WHO_USER] = { "user", offsetof(struct policy_subject, user) },
	[WHO_CGROUP] = { "cgroup", offsetof(struct policy_subject, cgroup_path) },
	[WHO_CONTAINER_ID] = { "container_id", offsetof(struct policy_subject, container_id) },
	[WHO_POD_UID] = { "pod_uid", offsetof(struct policy_subject, pod_uid) },
	[WHO_POD] = { "pod", offsetof(struct policy_subject, pod_name) },
	[WHO_NAMESPACE] = { "namespace", offsetof(struct policy_subject, pod_namespace) },
	[WHO_DB_USER] = { "db_user", offsetof(struct policy_subject, db_user) },
	[WHO_DATABASE] = { "database", offsetof(struct policy_subject, database) },
	[WHO_APPLICATION_NAME] = { "application_name",
				   offsetof(struct policy_subject, application_name) },
};

enum where_need {
	WHERE_ANY,
	WHERE_ABSENT,		/* no WHERE, or one that mentions no column */
	WHERE_PRESENT,
};

enum copy_need {
	COPY_PROGRAM = 1 << 0,
	COPY_SERVER_FILE = 1 << 1,
};

#define WHERE_KINDS (SQL_KIND_BIT(SQL_DELETE) | SQL_KIND_BIT(SQL_UPDATE))

struct rule {
	char *name;
	enum policy_action action;
	/* who: every selector given must hold */
	bool has_who;
	struct glob_list who_str[WHO_STRING_COUNT];
	uint32_t *uids;
	size_t n_uids;
	uint32_t *gids;
	size_t n_gids;
	struct netcidr *clients;
	size_t n_clients;
	/* match: every key given must hold */
	uint64_t kinds;			/* 0: statements not given */
	enum where_need where;
	struct name_list tables;
	struct name_list functions;
	unsigned copy;			/* enum copy_need bits, any of; 0: not given */
	bool opaque;
	/* Kinds a statement must have one of for this rule to match at all. */
	uint64_t prefilter;
};

struct policy {
	struct rule *rules;
	size_t n_rules;
	struct policy_settings settings;
};

static const char *const action_names[] = {
	[POLICY_ALLOW] = "allow",
	[POLICY_DENY] = "deny",
	[POLICY_AUDIT] = "audit",
};

const char *policy_action_name(enum policy_action action)
{
	if ((unsigned)action >= sizeof(action_names) / sizeof(action_names[0]))
		return "?";
	return action_names[action];
}

/* --- matching ---------------------------------------------------------------- */

static bool glob_match(const struct glob *g, const char *value)
{
	if (g->literal)
		return strcmp(g->text, value) == 0;
	return fnmatch(g->text, value, 0) == 0;
}

static bool glob_list_match(const struct glob_list *list, const char *value)
{
	for (size_t i = 0; i < list->n; i++)
		if (glob_match(&list->items[i], value))
			return true;
	return false;
}

static bool part_match(const struct name_pattern *np, size_t i, const char *s, size_t len)
{
	char buf[NAME_PART_MAX];

	if (np->parts[i].literal)
		return len == np->part_len[i] && memcmp(s, np->parts[i].text, len) == 0;
	/* The parser truncates identifiers to 63 bytes: a longer part cannot occur. */
	if (len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return fnmatch(np->parts[i].text, buf, 0) == 0;
}

/* "secrets" matches "secrets" and "x.secrets"; "billing.*" matches
 * "billing.t" and "db.billing.t" but not "t". */
static bool name_match(const struct name_pattern *np, const char *name)
{
	const char *end = name + strlen(name);

	for (size_t i = np->n_parts; i-- > 0;) {
		const char *start = end;

		while (start > name && start[-1] != '.')
			start--;
		if (!part_match(np, i, start, (size_t)(end - start)))
			return false;
		if (i == 0)
			return true;
		if (start == name)
			return false;	/* the name has fewer parts than the pattern */
		end = start - 1;
	}
	return false;
}

static bool name_list_match(const struct name_list *list, const char *name)
{
	for (size_t i = 0; i < list->n; i++)
		if (name_match(&list->items[i], name))
			return true;
	return false;
}

static bool tables_match(const struct rule *r, const struct sql_statement *st)
{
	for (size_t i = 0; i < st->n_tables; i++)
		if (name_list_match(&r->tables, st->tables[i]))
			return true;
	/* Op relations are among the tables too; checked in case one is not. */
	for (size_t i = 0; i < st->n_ops; i++)
		if (st->ops[i].relation && name_list_match(&r->tables, st->ops[i].relation))
			return true;
	return false;
}

static bool functions_match(const struct rule *r, const struct sql_statement *st)
{
	for (size_t i = 0; i < st->n_functions; i++)
		if (name_list_match(&r->functions, st->functions[i]))
			return true;
	return false;
}

/* An op of the rule's kinds (delete or update) with the WHERE it asks for. */
static bool where_match(const struct rule *r, const struct sql_statement *st)
{
	uint64_t kinds = (r->kinds ? r->kinds : WHERE_KINDS) & WHERE_KINDS;

	for (size_t i = 0; i < st->n_ops; i++) {
		const struct sql_op *op = &st->ops[i];
		bool restricted = op->where_present && !op->where_constant;

		if (!(kinds & SQL_KIND_BIT(op->kind)))
			continue;
		if (r->where == WHERE_ABSENT ? !restricted : restricted)
			return true;
	}
	return false;
}

static bool match_holds(const struct rule *r, const struct sql_statement *st, uint64_t kinds)
{
	if (r->kinds && !(r->kinds & kinds))
		return false;
	if (r->opaque && !st->opaque_body)
		return false;
	if (r->copy && !((r->copy & COPY_PROGRAM && st->copy_program) ||
			 (r->copy & COPY_SERVER_FILE && st->copy_server_file)))
		return false;
	if (r->where != WHERE_ANY && !where_match(r, st))
		return false;
	if (r->tables.n && !tables_match(r, st))
		return false;
	if (r->functions.n && !functions_match(r, st))
		return false;
	return true;
}

static bool u32_in(const uint32_t *set, size_t n, uint32_t value)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == value)
			return true;
	return false;
}

static bool who_holds(const struct rule *r, const struct policy_subject *who)
{
	static const struct policy_subject nobody;

	if (!r->has_who)
		return true;
	if (!who)
		who = &nobody;
	for (size_t f = 0; f < WHO_STRING_COUNT; f++) {
		const char *value;

		if (!r->who_str[f].n)
			continue;
		memcpy(&value, (const char *)who + who_strings[f].offset, sizeof(value));
		if (!value || !glob_list_match(&r->who_str[f], value))
			return false;
	}
	if (r->n_uids && (!who->has_uid || !u32_in(r->uids, r->n_uids, who->uid)))
		return false;
	if (r->n_gids && (!who->has_uid || !u32_in(r->gids, r->n_gids, who->gid)))
		return false;
	if (r->n_clients) {
		bool inside = false;

		for (size_t i = 0; who->client && i < r->n_clients && !inside; i++)
			inside = netcidr_contains(&r->clients[i], who->client->ip);
		if (!inside)
			return false;
	}
	return true;
}

/*
 * The rule that decides @st (NULL: none does, the default applies). Audit
 * rules met on the way are reported through @audit when it is still NULL.
 */
static const struct rule *decide_statement(const struct policy *p, const struct policy_subject *who,
					   const struct sql_statement *st,
					   const struct rule **audit)
{
	uint64_t kinds = sql_statement_kinds(st, false);

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];

		if (!(r->prefilter & kinds) || !match_holds(r, st, kinds) || !who_holds(r, who))
			continue;
		if (r->action == POLICY_AUDIT) {
			if (!*audit)
				*audit = r;
			continue;
		}
		return r;
	}
	return NULL;
}

bool policy_judges_nothing(const struct policy *p)
{
	return !p || (!policy_rule_count(p) && p->settings.default_action == POLICY_ALLOW);
}

void policy_decide(const struct policy *p, const struct policy_subject *who,
		   const struct sql_parse *sql, struct policy_decision *out)
{
	static const struct policy empty;

	memset(out, 0, sizeof(*out));
	out->action = POLICY_ALLOW;
	if (!p)
		p = &empty;
	if (!sql || !sql->ok) {
		bool forward = p->settings.unparsable == POLICY_UNPARSABLE_FORWARD && sql &&
			       sql->failure == SQL_FAIL_SYNTAX;

		out->basis = POLICY_BASIS_UNPARSABLE;
		out->action = forward ? POLICY_ALLOW : POLICY_DENY;
		return;
	}
	if (sql->n_stmts == 0) {
		out->basis = POLICY_BASIS_EMPTY;
		return;
	}
	out->basis = POLICY_BASIS_DEFAULT;
	for (size_t i = 0; i < sql->n_stmts; i++) {
		const struct rule *audit = NULL;
		const struct rule *r = decide_statement(p, who, &sql->stmts[i], &audit);
		enum policy_action action = r ? r->action : p->settings.default_action;

		if (audit && !out->audit_rule) {
			out->audit_rule = audit->name;
			out->audit_statement = i;
		}
		if (action == POLICY_ALLOW) {
			if (r && !out->rule) {
				out->basis = POLICY_BASIS_RULE;
				out->rule = r->name;
				out->statement = i;
			}
			continue;
		}
		/* Deny, and any action this code does not know yet: fail closed. */
		out->action = POLICY_DENY;
		out->basis = r ? POLICY_BASIS_RULE : POLICY_BASIS_DEFAULT;
		out->rule = r ? r->name : NULL;
		out->statement = i;
		return;
	}
}

/* --- loading ------------------------------------------------------------------ */

struct pctx {
	yaml_document_t *doc;
	const char *file;
	char *err;
	size_t errlen;
};

static size_t node_line(const yaml_node_t *node)
{
	return node ? node->start_mark.line + 1 : 0;
}

__attribute__((format(printf, 3, 4)))
static int pfail(struct pctx *c, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!c->err || !c->errlen)
		return -1;
	n = snprintf(c->err, c->errlen, "%s:%zu: ", c->file, node_line(node));
	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static bool node_is_null(const yaml_node_t *node)
{
	if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return node->data.scalar.length == 0 || strcmp((char *)node->data.scalar.value, "~") == 0 ||
	       strcmp((char *)node->data.scalar.value, "null") == 0;
}

static const char *node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE: return "mapping";
	case YAML_SEQUENCE_NODE: return "list";
	default: return "single value";
	}
}

static size_t seq_len(const yaml_node_t *node)
{
	return (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
}

static const yaml_node_t *seq_item(struct pctx *c, const yaml_node_t *node, size_t i)
{
	return yaml_document_get_node(c->doc, node->data.sequence.items.start[i]);
}

/* The text of a non-empty scalar; NULL with the error written otherwise. */
static const char *scalar(struct pctx *c, const yaml_node_t *node, const char *label)
{
	const char *text;

	if (node->type != YAML_SCALAR_NODE) {
		pfail(c, node, "%s must be a single value, not a %s", label, node_kind(node));
		return NULL;
	}
	text = (const char *)node->data.scalar.value;
	if (node->data.scalar.length == 0) {
		pfail(c, node, "%s is empty", label);
		return NULL;
	}
	if (strlen(text) != node->data.scalar.length) {
		pfail(c, node, "%s contains a NUL character", label);
		return NULL;
	}
	return text;
}

/*
 * A value that may be one scalar or a non-empty list of them: calls @each
 * for every text. Returns 0 or -1 with the error written.
 */
typedef int value_fn(struct pctx *c, const yaml_node_t *node, const char *label,
		     const char *text, void *arg);

static int each_value(struct pctx *c, const yaml_node_t *node, const char *label, value_fn *each,
		      void *arg)
{
	const char *text;

	if (node->type == YAML_SEQUENCE_NODE) {
		size_t n = seq_len(node);

		if (n == 0)
			return pfail(c, node, "%s is an empty list; give at least one value",
				     label);
		for (size_t i = 0; i < n; i++) {
			const yaml_node_t *item = seq_item(c, node, i);

			text = scalar(c, item, label);
			if (!text || each(c, item, label, text, arg) < 0)
				return -1;
		}
		return 0;
	}
	text = scalar(c, node, label);
	if (!text)
		return -1;
	return each(c, node, label, text, arg);
}

static void *grow(void *array, size_t n, size_t size)
{
	return reallocarray(array, n + 1, size);
}

/* Refuses what fnmatch would quietly read another way: an unclosed '[' or
 * a trailing '\'. */
static int glob_check(struct pctx *c, const yaml_node_t *node, const char *label,
		      const char *text, bool *literal)
{
	*literal = strpbrk(text, "*?[\\") == NULL;
	for (const char *s = text; *s; s++) {
		if (*s == '\\') {
			if (!*++s)
				return pfail(c, node, "%s: bad pattern '%s': ends in '\\'", label,
					     text);
		} else if (*s == '[') {
			const char *close = s + 1;

			if (*close == '!' || *close == '^')
				close++;
			if (*close == ']')
				close++;
			close = strchr(close, ']');
			if (!close)
				return pfail(c, node, "%s: bad pattern '%s': '[' is never closed "
					     "(write [[] for a literal '[')", label, text);
			s = close;
		}
	}
	return 0;
}

static int add_glob(struct pctx *c, const yaml_node_t *node, const char *label, const char *text,
		    void *arg)
{
	struct glob_list *list = arg;
	struct glob g;
	struct glob *items;

	if (glob_check(c, node, label, text, &g.literal) < 0)
		return -1;
	items = grow(list->items, list->n, sizeof(*items));
	if (!items)
		return pfail(c, node, "%s: out of memory", label);
	list->items = items;
	g.text = strdup(text);
	if (!g.text)
		return pfail(c, node, "%s: out of memory", label);
	list->items[list->n++] = g;
	return 0;
}

static int add_name_pattern(struct pctx *c, const yaml_node_t *node, const char *label,
			    const char *text, void *arg)
{
	struct name_list *list = arg;
	struct name_pattern np = { 0 };
	struct name_pattern *items;
	const char *s = text;

	for (;;) {
		size_t len = strcspn(s, ".");

		if (len == 0) {
			pfail(c, node, "%s: bad name '%s': empty part (write schema.name or name)",
			      label, text);
			goto fail;
		}
		if (np.n_parts == NAME_PARTS_MAX)
			goto too_many;
		np.parts[np.n_parts].text = strndup(s, len);
		if (!np.parts[np.n_parts].text)
			goto oom;
		np.part_len[np.n_parts] = len;
		np.n_parts++;
		if (glob_check(c, node, label, np.parts[np.n_parts - 1].text,
			       &np.parts[np.n_parts - 1].literal) < 0)
			goto fail;
		if (!s[len])
			break;
		s += len + 1;
	}
	items = grow(list->items, list->n, sizeof(*items));
	if (!items)
		goto oom;
	list->items = items;
	list->items[list->n++] = np;
	return 0;
too_many:
	pfail(c, node, "%s: bad name '%s': at most database.schema.name", label, text);
	goto fail;
oom:
	pfail(c, node, "%s: out of memory", label);
fail:
	for (size_t i = 0; i < np.n_parts; i++)
		free(np.parts[i].text);
	return -1;
}

struct u32_list {
	uint32_t **items;
	size_t *n;
};

static int add_id(struct pctx *c, const yaml_node_t *node, const char *label, const char *text,
		  void *arg)
{
	struct u32_list *list = arg;
	unsigned long long v = 0;
	uint32_t *items;

	errno = 0;
	if (text[strspn(text, "0123456789")] == '\0')
		v = strtoull(text, NULL, 10);
	else
		errno = EINVAL;
	if (errno || v > UINT32_MAX)
		return pfail(c, node, "%s: '%s' is not a numeric id 0..4294967295 "
			     "(names go in 'user')", label, text);
	items = grow(*list->items, *list->n, sizeof(*items));
	if (!items)
		return pfail(c, node, "%s: out of memory", label);
	*list->items = items;
	items[(*list->n)++] = (uint32_t)v;
	return 0;
}

static int add_cidr(struct pctx *c, const yaml_node_t *node, const char *label, const char *text,
		    void *arg)
{
	struct rule *r = arg;
	struct netcidr *items;
	struct netcidr cidr;

	if (netcidr_parse(text, &cidr) < 0)
		return pfail(c, node, "%s: bad cidr '%s' (expected an address or address/prefix, "
			     "e.g. 10.0.0.0/8 or fd00::/8)", label, text);
	items = grow(r->clients, r->n_clients, sizeof(*items));
	if (!items)
		return pfail(c, node, "%s: out of memory", label);
	r->clients = items;
	r->clients[r->n_clients++] = cidr;
	return 0;
}

static int add_kinds(struct pctx *c, const yaml_node_t *node, const char *label, const char *text,
		     void *arg)
{
	uint64_t *kinds = arg;
	uint64_t mask;

	if (sql_kinds_parse(text, &mask) < 0)
		return pfail(c, node, "%s: unknown statement kind '%s' (a kind such as select, "
			     "insert, update, delete, drop, or a group: ddl, dcl, write; "
			     "see docs/sql-classification.md)", label, text);
	*kinds |= mask;
	return 0;
}

static int add_copy(struct pctx *c, const yaml_node_t *node, const char *label, const char *text,
		    void *arg)
{
	unsigned *copy = arg;

	if (strcmp(text, "program") == 0)
		*copy |= COPY_PROGRAM;
	else if (strcmp(text, "server_file") == 0)
		*copy |= COPY_SERVER_FILE;
	else
		return pfail(c, node, "%s: unknown word '%s' (expected program, server_file)",
			     label, text);
	return 0;
}

/* Walks a mapping's pairs: a key must be a scalar and appear once. */
typedef int pair_fn(struct pctx *c, const char *label, const char *word,
		    const yaml_node_t *key, const yaml_node_t *value, void *arg);

static int each_pair(struct pctx *c, const yaml_node_t *node, const char *label, pair_fn *each,
		     void *arg)
{
	if (node->type != YAML_MAPPING_NODE)
		return pfail(c, node, "%s must be a mapping of keys, not a %s", label,
			     node_kind(node));
	for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top;
	     p++) {
		const yaml_node_t *key = yaml_document_get_node(c->doc, p->key);
		const yaml_node_t *value = yaml_document_get_node(c->doc, p->value);

		if (key->type != YAML_SCALAR_NODE)
			return pfail(c, key, "%s: a key must be a plain word, not a %s", label,
				     node_kind(key));
		for (yaml_node_pair_t *q = node->data.mapping.pairs.start; q < p; q++) {
			const yaml_node_t *prev = yaml_document_get_node(c->doc, q->key);

			const char *word = (const char *)key->data.scalar.value;

			if (prev->type == YAML_SCALAR_NODE &&
			    strcmp((const char *)prev->data.scalar.value, word) == 0)
				return pfail(c, key, "%s: duplicate key '%s' (first on line %zu)",
					     label, word, node_line(prev));
		}
		if (each(c, label, (const char *)key->data.scalar.value, key, value, arg) < 0)
			return -1;
	}
	return 0;
}

static int who_pair(struct pctx *c, const char *label, const char *word, const yaml_node_t *key,
		    const yaml_node_t *value, void *arg)
{
	struct rule *r = arg;
	char shown[LABEL_LEN];

	snprintf(shown, sizeof(shown), "%s.%s", label, word);
	for (size_t f = 0; f < WHO_STRING_COUNT; f++)
		if (strcmp(word, who_strings[f].word) == 0)
			return each_value(c, value, shown, add_glob, &r->who_str[f]);
	if (strcmp(word, "uid") == 0)
		return each_value(c, value, shown, add_id,
				  &(struct u32_list){ &r->uids, &r->n_uids });
	if (strcmp(word, "gid") == 0)
		return each_value(c, value, shown, add_id,
				  &(struct u32_list){ &r->gids, &r->n_gids });
	if (strcmp(word, "client") == 0)
		return each_value(c, value, shown, add_cidr, r);
	return pfail(c, key, "%s: unknown selector '%s' (expected comm, exe, uid, user, gid, "
		     "cgroup, container_id, pod_uid, pod, namespace, db_user, database, "
		     "application_name, client)", label, word);
}

static int match_pair(struct pctx *c, const char *label, const char *word, const yaml_node_t *key,
		      const yaml_node_t *value, void *arg)
{
	struct rule *r = arg;
	char shown[LABEL_LEN];
	const char *text;

	snprintf(shown, sizeof(shown), "%s.%s", label, word);
	if (strcmp(word, "statements") == 0)
		return each_value(c, value, shown, add_kinds, &r->kinds);
	if (strcmp(word, "tables") == 0)
		return each_value(c, value, shown, add_name_pattern, &r->tables);
	if (strcmp(word, "functions") == 0)
		return each_value(c, value, shown, add_name_pattern, &r->functions);
	if (strcmp(word, "copy") == 0)
		return each_value(c, value, shown, add_copy, &r->copy);
	if (strcmp(word, "where") == 0) {
		if (!(text = scalar(c, value, shown)))
			return -1;
		if (strcmp(text, "absent") == 0)
			r->where = WHERE_ABSENT;
		else if (strcmp(text, "present") == 0)
			r->where = WHERE_PRESENT;
		else
			return pfail(c, value, "%s: unknown word '%s' (expected absent, present)",
				     shown, text);
		return 0;
	}
	if (strcmp(word, "opaque") == 0) {
		if (!(text = scalar(c, value, shown)))
			return -1;
		if (strcmp(text, "true") != 0)
			return pfail(c, value, "%s: only 'true' is meaningful (leave the key out "
				     "otherwise)", shown);
		r->opaque = true;
		return 0;
	}
	return pfail(c, key, "%s: unknown key '%s' (expected statements, tables, where, "
		     "functions, copy, opaque)", label, word);
}

struct rule_keys {
	struct rule *rule;
	const yaml_node_t *name, *action;
};

static int rule_pair(struct pctx *c, const char *label, const char *word, const yaml_node_t *key,
		     const yaml_node_t *value, void *arg)
{
	struct rule_keys *k = arg;
	struct rule *r = k->rule;
	char shown[LABEL_LEN];
	const char *text;

	snprintf(shown, sizeof(shown), "%s.%s", label, word);
	if (strcmp(word, "name") == 0) {
		if (!(text = scalar(c, value, shown)))
			return -1;
		if (strlen(text) > POLICY_NAME_MAX)
			return pfail(c, value, "%s: longer than %d bytes", shown, POLICY_NAME_MAX);
		for (const char *s = text; *s; s++)
			if ((unsigned char)*s < 0x20 || *s == 0x7f)
				return pfail(c, value, "%s: control characters are not allowed",
					     shown);
		k->name = value;
		r->name = strdup(text);
		return r->name ? 0 : pfail(c, value, "%s: out of memory", shown);
	}
	if (strcmp(word, "action") == 0) {
		if (!(text = scalar(c, value, shown)))
			return -1;
		for (unsigned a = 0; a < sizeof(action_names) / sizeof(action_names[0]); a++) {
			if (strcmp(text, action_names[a]) == 0) {
				r->action = (enum policy_action)a;
				k->action = value;
				return 0;
			}
		}
		return pfail(c, value, "%s: unknown action '%s' (expected allow, deny, audit)",
			     shown, text);
	}
	if (strcmp(word, "who") == 0) {
		r->has_who = true;
		if (value->type == YAML_MAPPING_NODE && value->data.mapping.pairs.start ==
		    value->data.mapping.pairs.top)
			return pfail(c, value, "%s is empty; leave it out to match everyone",
				     shown);
		return each_pair(c, value, shown, who_pair, r);
	}
	if (strcmp(word, "match") == 0) {
		if (value->type == YAML_MAPPING_NODE && value->data.mapping.pairs.start ==
		    value->data.mapping.pairs.top)
			return pfail(c, value, "%s is empty; leave it out to match every "
				     "statement", shown);
		return each_pair(c, value, shown, match_pair, r);
	}
	return pfail(c, key, "%s: unknown key '%s' (expected name, action, who, match)", label,
		     word);
}

static void name_list_free(struct name_list *list)
{
	for (size_t i = 0; i < list->n; i++)
		for (size_t j = 0; j < list->items[i].n_parts; j++)
			free(list->items[i].parts[j].text);
	free(list->items);
}

static void rule_free(struct rule *r)
{
	free(r->name);
	for (size_t f = 0; f < WHO_STRING_COUNT; f++) {
		for (size_t i = 0; i < r->who_str[f].n; i++)
			free(r->who_str[f].items[i].text);
		free(r->who_str[f].items);
	}
	free(r->uids);
	free(r->gids);
	free(r->clients);
	name_list_free(&r->tables);
	name_list_free(&r->functions);
	memset(r, 0, sizeof(*r));
}

static int parse_rule(struct pctx *c, struct policy *p, size_t index, const yaml_node_t *node)
{
	struct rule *r = &p->rules[index];
	struct rule_keys k = { .rule = r };
	char label[LABEL_LEN];

	snprintf(label, sizeof(label), "rules[%zu]", index);
	if (node->type != YAML_MAPPING_NODE)
		return pfail(c, node, "%s must be a mapping (e.g. \"- name: no-drop\")", label);
	if (each_pair(c, node, label, rule_pair, &k) < 0)
		return -1;
	if (!k.name)
		return pfail(c, node, "%s: missing required key 'name'", label);
	if (!k.action)
		return pfail(c, node, "%s (%s): missing required key 'action'", label, r->name);
	for (size_t i = 0; i < index; i++)
		if (strcmp(p->rules[i].name, r->name) == 0)
			return pfail(c, k.name, "%s: duplicate rule name '%s' (rules[%zu])", label,
				     r->name, i);
	if (r->where != WHERE_ANY && r->kinds && !(r->kinds & WHERE_KINDS))
		return pfail(c, node, "%s (%s): 'where' applies to delete and update only, and "
			     "'statements' names neither", label, r->name);
	if (r->kinds)
		r->prefilter = r->kinds;
	else if (r->where != WHERE_ANY)
		r->prefilter = WHERE_KINDS;
	else
		r->prefilter = UINT64_MAX;
	return 0;
}

int policy_parse(yaml_document_t *doc, const yaml_node_t *rules, const char *file,
		 struct policy **out, char *err, size_t errlen)
{
	struct pctx c = { .doc = doc, .file = file, .err = err, .errlen = errlen };
	struct policy *p;
	size_t n = 0;

	*out = NULL;
	if (rules && !node_is_null(rules)) {
		if (rules->type != YAML_SEQUENCE_NODE)
			return pfail(&c, rules, "rules must be a list, not a %s", node_kind(rules));
		n = seq_len(rules);
		if (n > POLICY_MAX_RULES)
			return pfail(&c, seq_item(&c, rules, POLICY_MAX_RULES),
				     "rules: too many rules (%zu, at most %d)", n,
				     POLICY_MAX_RULES);
	}
	p = calloc(1, sizeof(*p));
	if (!p || (n && !(p->rules = calloc(n, sizeof(*p->rules))))) {
		free(p);
		return pfail(&c, rules, "rules: out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		p->n_rules = i + 1;	/* rule i is freed with the rest on error */
		if (parse_rule(&c, p, i, seq_item(&c, rules, i)) < 0) {
			policy_free(p);
			return -1;
		}
	}
	*out = p;
	return 0;
}

void policy_set_settings(struct policy *p, const struct policy_settings *settings)
{
	p->settings = *settings;
}

const struct policy_settings *policy_settings(const struct policy *p)
{
	static const struct policy_settings defaults;

	return p ? &p->settings : &defaults;
}

size_t policy_rule_count(const struct policy *p)
{
	return p ? p->n_rules : 0;
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_rules; i++)
		rule_free(&p->rules[i]);
	free(p->rules);
	free(p);
}

const char **policy_subject_field(struct policy_subject *who, const char *selector)
{
	for (size_t i = 0; i < WHO_STRING_COUNT; i++)
		if (strcmp(who_strings[i].word, selector) == 0)
			return (const char **)((char *)who + who_strings[i].offset);
	return NULL;
}
