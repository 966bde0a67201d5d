#include "sql.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

/*
 * libpg_query's copy of the PostgreSQL setting, one per thread; its scanner
 * reads it each time it starts. Not in the public header, but exported: a
 * libpg_query without it fails to link rather than misreading backslashes.
 */
extern __thread bool standard_conforming_strings;

/*
 * Stack budget. libpg_query turns its tree into protobuf recursively
 * (~180 bytes of stack a message level) and protobuf-c unpacks it
 * recursively (~1 KiB a level); neither has a limit of its own. A text of
 * n bytes nests at most ~2n levels, so short texts are parsed on the
 * caller's stack, and unpacked there when shallow. Anything else runs on a
 * helper thread with a stack of SQL_HELPER_STACK, after checks that bound
 * its depth: the token estimate before parsing, the exact protobuf depth
 * before unpacking.
 */
#define SQL_INLINE_TEXT 2048
#define SQL_INLINE_DEPTH 200
#define SQL_HELPER_STACK ((size_t)64 << 20)
/* Nesting estimate (see nesting_estimate) above which a text is not parsed:
 * at the few message levels a unit is worth, well inside the helper's stack. */
#define SQL_MAX_NEST_UNITS (2 * SQL_MAX_DEPTH)
/* Budget for runs of signs (see sign_runs_cost): one run of 1024, a few
 * milliseconds of scanning. */
#define SQL_MAX_SIGN_COST ((uint64_t)1 << 20)

/* ---- kinds and groups --------------------------------------------------- */

static const char *const kind_names[SQL_KIND_COUNT] = {
	[SQL_OTHER] = "other",
	[SQL_SELECT] = "select",
	[SQL_INSERT] = "insert",
	[SQL_UPDATE] = "update",
	[SQL_DELETE] = "delete",
	[SQL_MERGE] = "merge",
	[SQL_TRUNCATE] = "truncate",
	[SQL_COPY] = "copy",
	[SQL_CREATE] = "create",
	[SQL_ALTER] = "alter",
	[SQL_DROP] = "drop",
	[SQL_GRANT] = "grant",
	[SQL_REVOKE] = "revoke",
	[SQL_COMMENT] = "comment",
	[SQL_SECURITY_LABEL] = "security_label",
	[SQL_REFRESH] = "refresh",
	[SQL_CLUSTER] = "cluster",
	[SQL_REINDEX] = "reindex",
	[SQL_VACUUM] = "vacuum",
	[SQL_ANALYZE] = "analyze",
	[SQL_LOCK] = "lock",
	[SQL_CALL] = "call",
	[SQL_DO] = "do",
	[SQL_SET] = "set",
	[SQL_SHOW] = "show",
	[SQL_TRANSACTION] = "transaction",
	[SQL_EXPLAIN] = "explain",
	[SQL_PREPARE] = "prepare",
	[SQL_EXECUTE] = "execute",
	[SQL_DEALLOCATE] = "deallocate",
	[SQL_DECLARE] = "declare",
	[SQL_FETCH] = "fetch",
	[SQL_CLOSE] = "close",
	[SQL_LISTEN] = "listen",
	[SQL_UNLISTEN] = "unlisten",
	[SQL_NOTIFY] = "notify",
	[SQL_DISCARD] = "discard",
	[SQL_CHECKPOINT] = "checkpoint",
	[SQL_LOAD] = "load",
};

_Static_assert(SQL_KIND_COUNT <= 64, "kinds must fit a uint64_t mask");

#define KIND_BIT(k) SQL_KIND_BIT(SQL_##k)
#define DCL_MASK (KIND_BIT(GRANT) | KIND_BIT(REVOKE))
#define DDL_MASK (KIND_BIT(CREATE) | KIND_BIT(ALTER) | KIND_BIT(DROP) | KIND_BIT(COMMENT) | \
		  KIND_BIT(SECURITY_LABEL) | KIND_BIT(REFRESH) | KIND_BIT(CLUSTER) | DCL_MASK)
#define WRITE_MASK (DDL_MASK | KIND_BIT(INSERT) | KIND_BIT(UPDATE) | KIND_BIT(DELETE) | \
		    KIND_BIT(MERGE) | KIND_BIT(TRUNCATE) | KIND_BIT(DO) | KIND_BIT(CALL))

static const struct {
	const char *name;
	uint64_t mask;
} groups[] = {
	{ "ddl", DDL_MASK },
	{ "dcl", DCL_MASK },
	{ "write", WRITE_MASK },
};

const char *sql_kind_name(enum sql_kind kind)
{
	if ((unsigned)kind >= SQL_KIND_COUNT || !kind_names[kind])
		return "?";
	return kind_names[kind];
}

int sql_kind_parse(const char *word, enum sql_kind *out)
{
	for (unsigned k = 0; k < SQL_KIND_COUNT; k++) {
		if (kind_names[k] && strcasecmp(word, kind_names[k]) == 0) {
			*out = (enum sql_kind)k;
			return 0;
		}
	}
	return -EINVAL;
}

uint64_t sql_group_mask(const char *group)
{
	for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
		if (strcasecmp(group, groups[i].name) == 0)
			return groups[i].mask;
	return 0;
}

int sql_kinds_parse(const char *word, uint64_t *mask)
{
	enum sql_kind kind;

	if (sql_kind_parse(word, &kind) == 0) {
		*mask = SQL_KIND_BIT(kind);
		return 0;
	}
	*mask = sql_group_mask(word);
	return *mask ? 0 : -EINVAL;
}

uint64_t sql_statement_kinds(const struct sql_statement *st, bool executed_only)
{
	uint64_t mask = 0;

	for (size_t i = 0; i < st->n_ops; i++)
		if (st->ops[i].executed || !executed_only)
			mask |= SQL_KIND_BIT(st->ops[i].kind);
	return mask;
}

/* ---- client encodings ---------------------------------------------------- */

/*
 * PostgreSQL's server encodings: in each, every byte of a multibyte
 * character is >= 0x80, so no quote, backslash or semicolon hides inside
 * one. The client-only encodings (SJIS, BIG5, GBK, UHC, GB18030, JOHAB,
 * SHIFT_JIS_2004) allow ASCII-range second bytes: the server converts
 * them before parsing, libpg_query would read the raw bytes.
 */
static const char *const ascii_safe_encodings[] = {
	"utf8", "unicode", "sqlascii", "eucjp", "euccn", "euckr", "euctw", "eucjis2004",
	"muleinternal", "latin1", "latin2", "latin3", "latin4", "latin5", "latin6",
	"latin7", "latin8", "latin9", "latin10", "win1250", "win1251", "win1252",
	"win1253", "win1254", "win1255", "win1256", "win1257", "win1258", "win866",
	"win874", "koi8r", "koi8u", "iso88595", "iso88596", "iso88597", "iso88598",
};

bool sql_encoding_is_ascii_safe(const char *client_encoding)
{
	char clean[32];
	size_t n = 0;

	if (!client_encoding)
		return true;
	/* As PostgreSQL compares names: case and punctuation do not count. */
	for (const char *p = client_encoding; *p; p++) {
		char c = *p;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		else if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9'))
			continue;
		if (n + 1 >= sizeof(clean))
			return false;
		clean[n++] = c;
	}
	clean[n] = '\0';
	for (size_t i = 0; i < sizeof(ascii_safe_encodings) / sizeof(ascii_safe_encodings[0]); i++)
		if (strcmp(clean, ascii_safe_encodings[i]) == 0)
			return true;
	return false;
}

/* ---- protobuf reflection -------------------------------------------------- */

/* A field of @d by its number; fields are sorted by number in protobuf-c. */
static const ProtobufCFieldDescriptor *field_by_id(const ProtobufCMessageDescriptor *d, uint32_t id)
{
	unsigned lo = 0, hi = d->n_fields;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (d->fields[mid].id == id)
			return &d->fields[mid];
		if (d->fields[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The message-typed children of a message, in field order. */
struct child_iter {
	const ProtobufCMessage *msg;
	unsigned field, end;	/* fields[field..end) are left */
	size_t index;		/* next element of a repeated field */
};

static void child_iter_init(struct child_iter *it, const ProtobufCMessage *msg)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;

	it->msg = msg;
	it->field = 0;
	it->end = d->n_fields;
	it->index = 0;
	/* A Node has ~250 members and one is set: go straight to it. */
	if (d == &pg_query__node__descriptor) {
		const PgQuery__Node *node = (const PgQuery__Node *)msg;
		const ProtobufCFieldDescriptor *f = field_by_id(d, (uint32_t)node->node_case);

		it->field = f ? (unsigned)(f - d->fields) : d->n_fields;
		it->end = f ? it->field + 1 : d->n_fields;
	}
}

static const ProtobufCMessage *child_next(struct child_iter *it)
{
	const ProtobufCMessageDescriptor *d = it->msg->descriptor;
	const char *base = (const char *)it->msg;

	for (; it->field < it->end; it->field++, it->index = 0) {
		const ProtobufCFieldDescriptor *f = &d->fields[it->field];
		const ProtobufCMessage *child;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);

			while (it->index < n) {
				child = v[it->index++];
				if (child)
					return child;
			}
			continue;
		}
		if (it->index++ > 0)
			continue;	/* returned on the previous call */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		child = *(ProtobufCMessage *const *)(base + f->offset);
		if (child)
			return child;
	}
	return NULL;
}

/* The field of the message @it returned last. */
static const ProtobufCFieldDescriptor *child_field(const struct child_iter *it)
{
	return &it->msg->descriptor->fields[it->field];
}

/* The statement (or other message) a Node holds, or NULL. */
static const ProtobufCMessage *node_member(const PgQuery__Node *node)
{
	struct child_iter it;

	child_iter_init(&it, &node->base);
	return child_next(&it);
}

static bool is_string_node(const PgQuery__Node *node)
{
	return node && node->node_case == PG_QUERY__NODE__NODE_STRING && node->string;
}

/* ---- protobuf depth, without unpacking ------------------------------------ */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

/*
 * How deeply messages nest in @len bytes of protobuf of type @root (root =
 * 1), iteratively, so that nothing deeper than @limit ever reaches the
 * recursive unpacker. Returns the depth, limit + 1 for anything deeper,
 * -ENOMEM, or -EPROTO for bytes that are not protobuf.
 */
static int wire_depth(const uint8_t *p, size_t len, const ProtobufCMessageDescriptor *root, int limit)
{
	struct frame {
		const uint8_t *end;
		const ProtobufCMessageDescriptor *desc;
	} small[64], *stack = small;
	size_t cap = sizeof(small) / sizeof(small[0]), top = 0;
	int max = 1, ret;

	stack[0].end = p + len;
	stack[0].desc = root;
	for (;;) {
		const struct frame *fr = &stack[top];
		const ProtobufCFieldDescriptor *f;
		uint64_t tag, v;

		if (p == fr->end) {
			if (top == 0)
				break;
			top--;
			continue;
		}
		if (!read_varint(&p, fr->end, &tag))
			goto malformed;
		switch (tag & 7) {
		case 0:
			if (!read_varint(&p, fr->end, &v))
				goto malformed;
			break;
		case 1:
		case 5: {
			size_t n = (tag & 7) == 1 ? 8 : 4;

			if ((size_t)(fr->end - p) < n)
				goto malformed;
			p += n;
			break;
		}
		case 2:
			if (!read_varint(&p, fr->end, &v) || v > (uint64_t)(fr->end - p))
				goto malformed;
			f = tag >> 3 <= UINT32_MAX ? field_by_id(fr->desc, (uint32_t)(tag >> 3)) : NULL;
			if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE) {
				p += v;
				break;
			}
			if ((int)top + 2 > limit) {
				ret = limit + 1;
				goto out;
			}
			if (top + 1 == cap) {
				struct frame *bigger = malloc(2 * cap * sizeof(*bigger));

				if (!bigger) {
					ret = -ENOMEM;
					goto out;
				}
				memcpy(bigger, stack, cap * sizeof(*bigger));
				if (stack != small)
					free(stack);
				stack = bigger;
				cap *= 2;
			}
			top++;
			stack[top].end = p + v;
			stack[top].desc = f->descriptor;
			if ((int)top + 1 > max)
				max = (int)top + 1;
			break;
		default:
			goto malformed;
		}
	}
	ret = max;
	goto out;
malformed:
	ret = -EPROTO;
out:
	if (stack != small)
		free(stack);
	return ret;
}

/* ---- nesting estimate from tokens ------------------------------------------- */

/*
 * An upper bound, in units of a few message levels, on how deeply the
 * parse tree of @text nests, from PostgreSQL's scanner alone: it is what
 * keeps libpg_query's recursive output from running off the stack on a
 * long text. Inside one pair of brackets, every keyword counts for the
 * whole pair; every other operator token counts up to the next comma, AND
 * or OR (nothing binds looser in an expression, and commas and AND / OR
 * chains build flat lists); brackets add their content's estimate to the
 * segment they sit in. Returns the estimate or -ENOMEM; a text the scanner
 * rejects gets 0 (the parser stops at the same place).
 */
struct nest_level {
	uint32_t keywords;	/* in the whole pair of brackets */
	uint32_t ops;		/* in the current comma segment */
	uint32_t child;		/* deepest bracket in the current segment */
	uint32_t best;		/* deepest finished segment */
	bool boolean;		/* an AND / OR chain: two levels at most */
};

static uint32_t max_u32(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

static void nest_segment_end(struct nest_level *l)
{
	l->best = max_u32(l->best, l->ops + l->child);
	l->ops = 0;
	l->child = 0;
}

static uint32_t nest_value(const struct nest_level *l)
{
	return l->keywords + (l->boolean ? 2 : 0) + max_u32(l->best, l->ops + l->child);
}

static long nesting_estimate(const char *text, bool scs)
{
	struct nest_level *levels = NULL;
	size_t cap = 0, top = 0;
	uint32_t estimate = 0;
	bool saved = standard_conforming_strings;
	PgQueryScanResult scan;
	PgQuery__ScanResult *tokens = NULL;
	long ret = -ENOMEM;

	standard_conforming_strings = scs;
	scan = pg_query_scan(text);
	standard_conforming_strings = saved;
	if (scan.error) {
		ret = 0;
		goto out;
	}
	tokens = pg_query__scan_result__unpack(NULL, scan.pbuf.len, (const uint8_t *)scan.pbuf.data);
	cap = 16;
	levels = calloc(cap, sizeof(*levels));
	if (!tokens || !levels)
		goto out;
	for (size_t i = 0; i < tokens->n_tokens; i++) {
		const PgQuery__ScanToken *t = tokens->tokens[i];
		struct nest_level *l = &levels[top];

		switch ((int)t->token) {
		case '(':
		case '[':
			if (top + 1 >= SQL_MAX_DEPTH) {
				ret = (long)SQL_MAX_NEST_UNITS + 1;
				goto out;
			}
			if (top + 1 == cap) {
				struct nest_level *bigger = realloc(levels, 2 * cap * sizeof(*levels));

				if (!bigger)
					goto out;
				levels = bigger;
				cap *= 2;
			}
			memset(&levels[++top], 0, sizeof(*levels));
			break;
		case ')':
		case ']':
			if (top > 0) {
				uint32_t depth = nest_value(l) + 1;

				top--;
				levels[top].child = max_u32(levels[top].child, depth);
			}
			break;
		case ';':
			if (top == 0) {
				estimate = max_u32(estimate, nest_value(l));
				memset(l, 0, sizeof(*l));
			} else {
				nest_segment_end(l);	/* CREATE RULE ... (a; b) */
			}
			break;
		case ',':
			nest_segment_end(l);
			break;
		case PG_QUERY__TOKEN__AND:
		case PG_QUERY__TOKEN__OR:
			l->boolean = true;
			nest_segment_end(l);
			break;
		case PG_QUERY__TOKEN__IDENT:
		case PG_QUERY__TOKEN__UIDENT:
		case PG_QUERY__TOKEN__FCONST:
		case PG_QUERY__TOKEN__SCONST:
		case PG_QUERY__TOKEN__USCONST:
		case PG_QUERY__TOKEN__BCONST:
		case PG_QUERY__TOKEN__XCONST:
		case PG_QUERY__TOKEN__ICONST:
		case PG_QUERY__TOKEN__PARAM:
		case PG_QUERY__TOKEN__SQL_COMMENT:
		case PG_QUERY__TOKEN__C_COMMENT:
			break;	/* leaves */
		default:
			if (t->keyword_kind != PG_QUERY__KEYWORD_KIND__NO_KEYWORD)
				l->keywords++;
			else
				l->ops++;
			break;
		}
	}
	while (top > 0) {
		uint32_t depth = nest_value(&levels[top]) + 1;

		top--;
		levels[top].child = max_u32(levels[top].child, depth);
	}
	ret = max_u32(estimate, nest_value(&levels[0]));
out:
	free(levels);
	if (tokens)
		pg_query__scan_result__free_unpacked(tokens, NULL);
	pg_query_free_scan_result(scan);
	return ret;
}

/* ---- string sets ----------------------------------------------------------- */

/* Distinct strings in insertion order; items become the statement's. */
struct strset {
	char **items;
	size_t n, cap;
	size_t *slots;		/* index + 1 into items; 0 is empty */
	size_t n_slots;		/* a power of two, at least twice n */
};

static size_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return (size_t)h;
}

static size_t *strset_slot(const struct strset *set, const char *s)
{
	size_t mask = set->n_slots - 1;

	for (size_t i = hash_str(s) & mask;; i = (i + 1) & mask) {
		size_t *slot = &set->slots[i];

		if (*slot == 0 || strcmp(set->items[*slot - 1], s) == 0)
			return slot;
	}
}

static int strset_grow(struct strset *set)
{
	size_t n_slots = set->n_slots ? 2 * set->n_slots : 16;
	size_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	free(set->slots);
	set->slots = slots;
	set->n_slots = n_slots;
	for (size_t i = 0; i < set->n; i++)
		*strset_slot(set, set->items[i]) = i + 1;
	return 0;
}

/* Takes @s (malloc'd): kept when new, freed when already there. */
static int strset_take(struct strset *set, char *s)
{
	size_t *slot;

	if (2 * (set->n + 1) > set->n_slots && strset_grow(set) < 0)
		goto nomem;
	slot = strset_slot(set, s);
	if (*slot) {
		free(s);
		return 0;
	}
	if (set->n == set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 8;
		char **items = realloc(set->items, cap * sizeof(*items));

		if (!items)
			goto nomem;
		set->items = items;
		set->cap = cap;
	}
	set->items[set->n] = s;
	*slot = ++set->n;
	return 0;
nomem:
	free(s);
	return -ENOMEM;
}

/* ---- names --------------------------------------------------------------- */

/* The non-empty parts joined with '.'; NULL when all are empty or on ENOMEM
 * (*@err set). */
static char *join_name(const char *const *parts, size_t n, int *err)
{
	size_t len = 0, at = 0;
	char *s;

	for (size_t i = 0; i < n; i++)
		if (parts[i] && parts[i][0])
			len += strlen(parts[i]) + 1;
	if (len == 0)
		return NULL;
	s = malloc(len);
	if (!s) {
		*err = -ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		size_t k;

		if (!parts[i] || !parts[i][0])
			continue;
		if (at)
			s[at++] = '.';
		k = strlen(parts[i]);
		memcpy(s + at, parts[i], k);
		at += k;
	}
	s[at] = '\0';
	return s;
}

static char *rangevar_name(const PgQuery__RangeVar *rv, int *err)
{
	const char *parts[] = { rv->catalogname, rv->schemaname, rv->relname };

	return join_name(parts, 3, err);
}

/*
 * A dotted name from a list of String nodes (funcname, a DROP object),
 * leaving out the last @drop_last parts. NULL when an item is not a String
 * or nothing is left.
 */
static char *strings_name(PgQuery__Node *const *items, size_t n, size_t drop_last, int *err)
{
	const char *parts[8];

	if (n <= drop_last || n - drop_last > sizeof(parts) / sizeof(parts[0]))
		return NULL;
	n -= drop_last;
	for (size_t i = 0; i < n; i++) {
		if (!is_string_node(items[i]))
			return NULL;
		parts[i] = items[i]->string->sval;
	}
	return join_name(parts, n, err);
}

/* A String-list Node (List of String) as a name. */
static char *list_node_name(const PgQuery__Node *node, size_t drop_last, int *err)
{
	if (!node || node->node_case != PG_QUERY__NODE__NODE_LIST || !node->list)
		return NULL;
	return strings_name(node->list->items, node->list->n_items, drop_last, err);
}

/* ---- the walk ------------------------------------------------------------- */

enum {
	WALK_TOP = 1 << 0,	/* the statement of a RawStmt */
	WALK_BODY = 1 << 1,	/* a statement carried by another: an op even as SELECT */
	WALK_DEFERRED = 1 << 2,	/* inside something that does not run now */
};

struct walk {
	struct sql_statement *st;
	struct sql_constants *constants;	/* NULL: not wanted */
	struct sql_op *ops;
	size_t n_ops, cap_ops;
	struct strset tables;
	struct strset functions;
	int err;		/* sticky: the first failure */
};

/* Takes @relation. */
static void add_op(struct walk *w, enum sql_kind kind, char *relation, bool executed,
		   bool where_present, bool where_constant)
{
	if (w->err)
		goto drop;
	if (w->n_ops == w->cap_ops) {
		size_t cap = w->cap_ops ? 2 * w->cap_ops : 4;
		struct sql_op *ops = realloc(w->ops, cap * sizeof(*ops));

		if (!ops) {
			w->err = -ENOMEM;
			goto drop;
		}
		w->ops = ops;
		w->cap_ops = cap;
	}
	w->ops[w->n_ops++] = (struct sql_op){
		.kind = kind,
		.executed = executed,
		.where_present = where_present,
		.where_constant = where_constant,
		.relation = relation,
	};
	return;
drop:
	free(relation);
}

static void add_table(struct walk *w, const char *name)
{
	char *copy;

	if (w->err || !name)
		return;
	copy = strdup(name);
	if (!copy || strset_take(&w->tables, copy) < 0)
		w->err = -ENOMEM;
}

/* An op on @relation, which also goes into the tables. Takes @relation. */
static void add_relation_op(struct walk *w, enum sql_kind kind, char *relation, bool executed)
{
	add_table(w, relation);
	add_op(w, kind, relation, executed, false, false);
}

static void set_name(struct walk *w, char **field, const char *value)
{
	if (w->err || *field || !value || !value[0])
		return;
	*field = strdup(value);
	if (!*field)
		w->err = -ENOMEM;
}

/* Whether anything under @msg names a column (or a cursor position). */
static bool mentions_columns(const ProtobufCMessage *msg, int depth)
{
	const ProtobufCMessage *child;
	struct child_iter it;

	if (msg->descriptor == &pg_query__column_ref__descriptor ||
	    msg->descriptor == &pg_query__current_of_expr__descriptor)
		return true;
	if (depth > SQL_MAX_DEPTH)
		return true;	/* cannot happen: depth is checked before unpacking */
	child_iter_init(&it, msg);
	while ((child = child_next(&it)))
		if (mentions_columns(child, depth + 1))
			return true;
	return false;
}

static bool where_constant(const PgQuery__Node *where)
{
	return where && !mentions_columns(&where->base, 0);
}

/* EXPLAIN's last "analyze" option wins, as in explain.c; a value it would
 * refuse counts as on. */
static bool explain_analyzes(const PgQuery__ExplainStmt *ex)
{
	bool analyze = false;

	for (size_t i = 0; i < ex->n_options; i++) {
		const PgQuery__Node *opt = ex->options[i];
		const PgQuery__Node *arg;

		if (!opt || opt->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !opt->def_elem ||
		    !opt->def_elem->defname || strcmp(opt->def_elem->defname, "analyze") != 0)
			continue;
		arg = opt->def_elem->arg;
		if (!arg)
			analyze = true;
		else if (arg->node_case == PG_QUERY__NODE__NODE_INTEGER)
			analyze = arg->integer->ival != 0;
		else if (is_string_node(arg))
			analyze = strcasecmp(arg->string->sval, "false") != 0 &&
				  strcasecmp(arg->string->sval, "off") != 0;
		else
			analyze = true;
	}
	return analyze;
}

/* ---- statements ------------------------------------------------------------ */

typedef void stmt_handler(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			  bool executed);

/* Relation-like objects: their DROP / COMMENT names are tables. */
static bool is_relation_type(PgQuery__ObjectType type)
{
	switch (type) {
	case PG_QUERY__OBJECT_TYPE__OBJECT_TABLE:
	case PG_QUERY__OBJECT_TYPE__OBJECT_VIEW:
	case PG_QUERY__OBJECT_TYPE__OBJECT_MATVIEW:
	case PG_QUERY__OBJECT_TYPE__OBJECT_SEQUENCE:
	case PG_QUERY__OBJECT_TYPE__OBJECT_INDEX:
	case PG_QUERY__OBJECT_TYPE__OBJECT_FOREIGN_TABLE:
		return true;
	default:
		return false;
	}
}

/* Objects named "relation.member": the relation is all but the last part. */
static bool is_relation_member_type(PgQuery__ObjectType type)
{
	switch (type) {
	case PG_QUERY__OBJECT_TYPE__OBJECT_COLUMN:
	case PG_QUERY__OBJECT_TYPE__OBJECT_TRIGGER:
	case PG_QUERY__OBJECT_TYPE__OBJECT_RULE:
	case PG_QUERY__OBJECT_TYPE__OBJECT_POLICY:
	case PG_QUERY__OBJECT_TYPE__OBJECT_TABCONSTRAINT:
		return true;
	default:
		return false;
	}
}

/* The relation an object of @type named by @object (a List of String) is,
 * or belongs to; NULL for other objects. */
static char *object_relation(struct walk *w, PgQuery__ObjectType type, const PgQuery__Node *object)
{
	if (is_relation_type(type))
		return list_node_name(object, 0, &w->err);
	if (is_relation_member_type(type))
		return list_node_name(object, 1, &w->err);
	return NULL;
}

/* One op a RangeVar in @nodes (TRUNCATE, LOCK, GRANT ON TABLE). */
static void ops_for_rangevars(struct walk *w, PgQuery__Node *const *nodes, size_t n,
			      enum sql_kind kind, bool executed)
{
	for (size_t i = 0; i < n; i++)
		if (nodes[i] && nodes[i]->node_case == PG_QUERY__NODE__NODE_RANGE_VAR)
			add_op(w, kind, rangevar_name(nodes[i]->range_var, &w->err), executed, false,
			       false);
}

/* Most statements act on the first RangeVar among their fields, if any:
 * CREATE TABLE / INDEX / VIEW / SEQUENCE / TRIGGER / POLICY / RULE, ALTER
 * TABLE / SEQUENCE, RENAME, ALTER ... SET SCHEMA / OWNER, CLUSTER, REINDEX,
 * REFRESH. */
static void on_default(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		       bool executed)
{
	const ProtobufCMessageDescriptor *d = stmt->descriptor;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const PgQuery__RangeVar *rv;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED ||
		    f->descriptor != &pg_query__range_var__descriptor)
			continue;
		rv = *(PgQuery__RangeVar *const *)((const char *)stmt + f->offset);
		if (rv) {
			add_op(w, kind, rangevar_name(rv, &w->err), executed, false, false);
			return;
		}
	}
	add_op(w, kind, NULL, executed, false, false);
}

static void on_select(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		      bool executed)
{
	const PgQuery__SelectStmt *s = (const PgQuery__SelectStmt *)stmt;

	if (s->into_clause && s->into_clause->rel) {
		/* SELECT INTO creates a table from what it reads. */
		add_op(w, SQL_CREATE, rangevar_name(s->into_clause->rel, &w->err), executed, false,
		       false);
	}
	add_op(w, kind, NULL, executed, false, false);
}

static void on_insert(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		      bool executed)
{
	const PgQuery__InsertStmt *s = (const PgQuery__InsertStmt *)stmt;
	char *rel = s->relation ? rangevar_name(s->relation, &w->err) : NULL;

	add_op(w, kind, rel, executed, false, false);
	if (s->on_conflict_clause &&
	    s->on_conflict_clause->action == PG_QUERY__ON_CONFLICT_ACTION__ONCONFLICT_UPDATE) {
		/* The update touches conflicting rows only: scoped as by a WHERE. */
		rel = s->relation ? rangevar_name(s->relation, &w->err) : NULL;
		add_op(w, SQL_UPDATE, rel, executed, true, false);
	}
}

static void on_update(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		      bool executed)
{
	const PgQuery__UpdateStmt *s = (const PgQuery__UpdateStmt *)stmt;

	add_op(w, kind, s->relation ? rangevar_name(s->relation, &w->err) : NULL, executed,
	       s->where_clause != NULL, where_constant(s->where_clause));
}

static void on_delete(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		      bool executed)
{
	const PgQuery__DeleteStmt *s = (const PgQuery__DeleteStmt *)stmt;

	add_op(w, kind, s->relation ? rangevar_name(s->relation, &w->err) : NULL, executed,
	       s->where_clause != NULL, where_constant(s->where_clause));
}

/* MERGE, and each action it may take, restricted by ON (and AND ...). */
static void on_merge(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		     bool executed)
{
	const PgQuery__MergeStmt *s = (const PgQuery__MergeStmt *)stmt;
	bool on_constant = !s->join_condition || where_constant(s->join_condition);

	add_op(w, kind, s->relation ? rangevar_name(s->relation, &w->err) : NULL, executed, true,
	       on_constant);
	for (size_t i = 0; i < s->n_merge_when_clauses; i++) {
		const PgQuery__Node *n = s->merge_when_clauses[i];
		const PgQuery__MergeWhenClause *c;
		enum sql_kind action;
		bool constant;

		if (!n || n->node_case != PG_QUERY__NODE__NODE_MERGE_WHEN_CLAUSE)
			continue;
		c = n->merge_when_clause;
		switch (c->command_type) {
		case PG_QUERY__CMD_TYPE__CMD_UPDATE:
			action = SQL_UPDATE;
			break;
		case PG_QUERY__CMD_TYPE__CMD_DELETE:
			action = SQL_DELETE;
			break;
		case PG_QUERY__CMD_TYPE__CMD_INSERT:
			action = SQL_INSERT;
			break;
		default:
			continue;	/* DO NOTHING */
		}
		constant = on_constant && (!c->condition || where_constant(c->condition));
		add_op(w, action, s->relation ? rangevar_name(s->relation, &w->err) : NULL, executed,
		       action != SQL_INSERT, action != SQL_INSERT && constant);
	}
}

/* COPY, and what it does to its table: FROM inserts, TO selects. COPY
 * (query) TO gets the query's op from the walk. */
static void on_copy(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		    bool executed)
{
	const PgQuery__CopyStmt *s = (const PgQuery__CopyStmt *)stmt;
	struct sql_statement *st = w->st;

	st->copy_program |= s->is_program;
	st->copy_from |= s->is_from;
	st->copy_server_file |= !s->is_program && s->filename && s->filename[0];
	add_op(w, kind, s->relation ? rangevar_name(s->relation, &w->err) : NULL, executed, false,
	       false);
	if (s->relation)
		add_op(w, s->is_from ? SQL_INSERT : SQL_SELECT, rangevar_name(s->relation, &w->err),
		       executed, false, false);
}

static void on_explain(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		       bool executed)
{
	if (explain_analyzes((const PgQuery__ExplainStmt *)stmt) && executed)
		w->st->executes_body = true;
	add_op(w, kind, NULL, executed, false, false);
}

static void on_prepare(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		       bool executed)
{
	set_name(w, &w->st->prepare_name, ((const PgQuery__PrepareStmt *)stmt)->name);
	add_op(w, kind, NULL, executed, false, false);
}

static void on_execute(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		       bool executed)
{
	set_name(w, &w->st->execute_name, ((const PgQuery__ExecuteStmt *)stmt)->name);
	add_op(w, kind, NULL, executed, false, false);
}

/* DROP TABLE a, b: one op each, and they are tables (named by String
 * lists, not RangeVars, so the walk would not see them). */
static void on_drop(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		    bool executed)
{
	const PgQuery__DropStmt *s = (const PgQuery__DropStmt *)stmt;

	for (size_t i = 0; i < s->n_objects; i++) {
		char *rel = object_relation(w, s->remove_type, s->objects[i]);

		if (rel)
			add_relation_op(w, kind, rel, executed);
	}
}

/* COMMENT ON / SECURITY LABEL ON a relation or one of its members. */
static void on_comment(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		       bool executed)
{
	const PgQuery__CommentStmt *s = (const PgQuery__CommentStmt *)stmt;
	char *rel = object_relation(w, s->objtype, s->object);

	if (rel)
		add_relation_op(w, kind, rel, executed);
}

static void on_security_label(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			      bool executed)
{
	const PgQuery__SecLabelStmt *s = (const PgQuery__SecLabelStmt *)stmt;
	char *rel = object_relation(w, s->objtype, s->object);

	if (rel)
		add_relation_op(w, kind, rel, executed);
}

static void on_truncate(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			bool executed)
{
	const PgQuery__TruncateStmt *s = (const PgQuery__TruncateStmt *)stmt;

	ops_for_rangevars(w, s->relations, s->n_relations, kind, executed);
}

static void on_lock(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind, bool executed)
{
	const PgQuery__LockStmt *s = (const PgQuery__LockStmt *)stmt;

	ops_for_rangevars(w, s->relations, s->n_relations, kind, executed);
}

static void on_grant(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		     bool executed)
{
	const PgQuery__GrantStmt *s = (const PgQuery__GrantStmt *)stmt;
	size_t before = w->n_ops;

	kind = s->is_grant ? SQL_GRANT : SQL_REVOKE;
	ops_for_rangevars(w, s->objects, s->n_objects, kind, executed);
	if (w->n_ops == before)
		add_op(w, kind, NULL, executed, false, false);
}

static void on_grant_role(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			  bool executed)
{
	(void)kind;
	add_op(w, ((const PgQuery__GrantRoleStmt *)stmt)->is_grant ? SQL_GRANT : SQL_REVOKE, NULL,
	       executed, false, false);
}

static void on_default_privileges(struct walk *w, const ProtobufCMessage *stmt,
				  enum sql_kind kind, bool executed)
{
	const PgQuery__AlterDefaultPrivilegesStmt *s = (const PgQuery__AlterDefaultPrivilegesStmt *)stmt;

	(void)kind;
	add_op(w, s->action && !s->action->is_grant ? SQL_REVOKE : SQL_GRANT, NULL, executed,
	       false, false);
}

static void on_vacuum(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		      bool executed)
{
	const PgQuery__VacuumStmt *s = (const PgQuery__VacuumStmt *)stmt;
	size_t before = w->n_ops;

	kind = s->is_vacuumcmd ? SQL_VACUUM : SQL_ANALYZE;
	for (size_t i = 0; i < s->n_rels; i++) {
		const PgQuery__Node *n = s->rels[i];

		if (n && n->node_case == PG_QUERY__NODE__NODE_VACUUM_RELATION &&
		    n->vacuum_relation->relation)
			add_op(w, kind, rangevar_name(n->vacuum_relation->relation, &w->err), executed,
			       false, false);
	}
	if (w->n_ops == before)
		add_op(w, kind, NULL, executed, false, false);
}

static void on_do(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind, bool executed)
{
	(void)stmt;
	w->st->opaque_body = true;
	add_op(w, kind, NULL, executed, false, false);
}

static void on_create_function(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			       bool executed)
{
	/* Only a SQL-standard body (BEGIN ATOMIC / RETURN) is parsed. */
	if (!((const PgQuery__CreateFunctionStmt *)stmt)->sql_body)
		w->st->opaque_body = true;
	add_op(w, kind, NULL, executed, false, false);
}

static void on_create_table_as(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			       bool executed)
{
	const PgQuery__CreateTableAsStmt *s = (const PgQuery__CreateTableAsStmt *)stmt;

	add_op(w, kind, s->into && s->into->rel ? rangevar_name(s->into->rel, &w->err) : NULL,
	       executed, false, false);
}

static void on_create_foreign_table(struct walk *w, const ProtobufCMessage *stmt,
				    enum sql_kind kind, bool executed)
{
	const PgQuery__CreateForeignTableStmt *s = (const PgQuery__CreateForeignTableStmt *)stmt;

	add_op(w, kind,
	       s->base_stmt && s->base_stmt->relation ?
		       rangevar_name(s->base_stmt->relation, &w->err) : NULL,
	       executed, false, false);
}

/* The setting a SET / RESET / SHOW is about, lower case as GUC names
 * compare. */
static void set_variable(struct walk *w, const char *name)
{
	set_name(w, &w->st->variable, name);
	if (w->st->variable)
		for (char *p = w->st->variable; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
}

static void on_variable_set(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			    bool executed)
{
	set_variable(w, ((const PgQuery__VariableSetStmt *)stmt)->name);
	add_op(w, kind, NULL, executed, false, false);
}

static void on_variable_show(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
			     bool executed)
{
	set_variable(w, ((const PgQuery__VariableShowStmt *)stmt)->name);
	add_op(w, kind, NULL, executed, false, false);
}

/* Plain op, no relation. */
static void on_plain(struct walk *w, const ProtobufCMessage *stmt, enum sql_kind kind,
		     bool executed)
{
	(void)stmt;
	add_op(w, kind, NULL, executed, false, false);
}

struct stmt_class {
	enum sql_kind kind;
	stmt_handler *handler;	/* NULL: not a statement */
};

#define STMT(node, k, fn) [PG_QUERY__NODE__NODE_##node] = { SQL_##k, fn }

/* Every statement node of PostgreSQL 15's raw grammar, by Node case. */
static const struct stmt_class stmt_classes[] = {
	STMT(SELECT_STMT, SELECT, on_select),
	STMT(INSERT_STMT, INSERT, on_insert),
	STMT(UPDATE_STMT, UPDATE, on_update),
	STMT(DELETE_STMT, DELETE, on_delete),
	STMT(MERGE_STMT, MERGE, on_merge),
	STMT(TRUNCATE_STMT, TRUNCATE, on_truncate),
	STMT(COPY_STMT, COPY, on_copy),

	STMT(CREATE_STMT, CREATE, on_default),
	STMT(CREATE_FOREIGN_TABLE_STMT, CREATE, on_create_foreign_table),
	STMT(CREATE_TABLE_AS_STMT, CREATE, on_create_table_as),
	STMT(VIEW_STMT, CREATE, on_default),
	STMT(INDEX_STMT, CREATE, on_default),
	STMT(CREATE_SEQ_STMT, CREATE, on_default),
	STMT(CREATE_TRIG_STMT, CREATE, on_default),
	STMT(CREATE_POLICY_STMT, CREATE, on_default),
	STMT(RULE_STMT, CREATE, on_default),
	STMT(CREATE_FUNCTION_STMT, CREATE, on_create_function),
	STMT(CREATE_SCHEMA_STMT, CREATE, on_default),
	STMT(CREATEDB_STMT, CREATE, on_default),
	STMT(CREATE_ROLE_STMT, CREATE, on_default),
	STMT(CREATE_DOMAIN_STMT, CREATE, on_default),
	STMT(DEFINE_STMT, CREATE, on_default),
	STMT(COMPOSITE_TYPE_STMT, CREATE, on_plain),	/* its RangeVar names a type */
	STMT(CREATE_ENUM_STMT, CREATE, on_default),
	STMT(CREATE_RANGE_STMT, CREATE, on_default),
	STMT(CREATE_EXTENSION_STMT, CREATE, on_default),
	STMT(CREATE_FDW_STMT, CREATE, on_default),
	STMT(CREATE_FOREIGN_SERVER_STMT, CREATE, on_default),
	STMT(CREATE_USER_MAPPING_STMT, CREATE, on_default),
	STMT(IMPORT_FOREIGN_SCHEMA_STMT, CREATE, on_default),
	STMT(CREATE_TABLE_SPACE_STMT, CREATE, on_default),
	STMT(CREATE_EVENT_TRIG_STMT, CREATE, on_default),
	STMT(CREATE_PLANG_STMT, CREATE, on_default),
	STMT(CREATE_CONVERSION_STMT, CREATE, on_default),
	STMT(CREATE_CAST_STMT, CREATE, on_default),
	STMT(CREATE_OP_CLASS_STMT, CREATE, on_default),
	STMT(CREATE_OP_FAMILY_STMT, CREATE, on_default),
	STMT(CREATE_TRANSFORM_STMT, CREATE, on_default),
	STMT(CREATE_AM_STMT, CREATE, on_default),
	STMT(CREATE_PUBLICATION_STMT, CREATE, on_default),
	STMT(CREATE_SUBSCRIPTION_STMT, CREATE, on_default),
	STMT(CREATE_STATS_STMT, CREATE, on_default),

	STMT(ALTER_TABLE_STMT, ALTER, on_default),
	STMT(ALTER_TABLE_MOVE_ALL_STMT, ALTER, on_default),
	STMT(ALTER_DOMAIN_STMT, ALTER, on_default),
	STMT(ALTER_FUNCTION_STMT, ALTER, on_default),
	STMT(ALTER_SEQ_STMT, ALTER, on_default),
	STMT(ALTER_ROLE_STMT, ALTER, on_default),
	STMT(ALTER_ROLE_SET_STMT, ALTER, on_default),
	STMT(ALTER_DATABASE_STMT, ALTER, on_default),
	STMT(ALTER_DATABASE_REFRESH_COLL_STMT, ALTER, on_default),
	STMT(ALTER_DATABASE_SET_STMT, ALTER, on_default),
	STMT(ALTER_SYSTEM_STMT, ALTER, on_default),
	STMT(ALTER_OBJECT_DEPENDS_STMT, ALTER, on_default),
	STMT(ALTER_OBJECT_SCHEMA_STMT, ALTER, on_default),
	STMT(ALTER_OWNER_STMT, ALTER, on_default),
	STMT(ALTER_OPERATOR_STMT, ALTER, on_default),
	STMT(ALTER_TYPE_STMT, ALTER, on_default),
	STMT(ALTER_ENUM_STMT, ALTER, on_default),
	STMT(ALTER_TSDICTIONARY_STMT, ALTER, on_default),
	STMT(ALTER_TSCONFIGURATION_STMT, ALTER, on_default),
	STMT(ALTER_FDW_STMT, ALTER, on_default),
	STMT(ALTER_FOREIGN_SERVER_STMT, ALTER, on_default),
	STMT(ALTER_USER_MAPPING_STMT, ALTER, on_default),
	STMT(ALTER_TABLE_SPACE_OPTIONS_STMT, ALTER, on_default),
	STMT(ALTER_EXTENSION_STMT, ALTER, on_default),
	STMT(ALTER_EXTENSION_CONTENTS_STMT, ALTER, on_default),
	STMT(ALTER_EVENT_TRIG_STMT, ALTER, on_default),
	STMT(ALTER_POLICY_STMT, ALTER, on_default),
	STMT(ALTER_PUBLICATION_STMT, ALTER, on_default),
	STMT(ALTER_SUBSCRIPTION_STMT, ALTER, on_default),
	STMT(ALTER_STATS_STMT, ALTER, on_default),
	STMT(ALTER_COLLATION_STMT, ALTER, on_default),
	STMT(ALTER_OP_FAMILY_STMT, ALTER, on_default),
	STMT(RENAME_STMT, ALTER, on_default),
	STMT(REASSIGN_OWNED_STMT, ALTER, on_default),

	STMT(DROP_STMT, DROP, on_drop),
	STMT(DROPDB_STMT, DROP, on_default),
	STMT(DROP_ROLE_STMT, DROP, on_default),
	STMT(DROP_OWNED_STMT, DROP, on_default),
	STMT(DROP_TABLE_SPACE_STMT, DROP, on_default),
	STMT(DROP_USER_MAPPING_STMT, DROP, on_default),
	STMT(DROP_SUBSCRIPTION_STMT, DROP, on_default),

	STMT(GRANT_STMT, GRANT, on_grant),
	STMT(GRANT_ROLE_STMT, GRANT, on_grant_role),
	STMT(ALTER_DEFAULT_PRIVILEGES_STMT, GRANT, on_default_privileges),
	STMT(COMMENT_STMT, COMMENT, on_comment),
	STMT(SEC_LABEL_STMT, SECURITY_LABEL, on_security_label),
	STMT(REFRESH_MAT_VIEW_STMT, REFRESH, on_default),
	STMT(CLUSTER_STMT, CLUSTER, on_default),
	STMT(REINDEX_STMT, REINDEX, on_default),
	STMT(VACUUM_STMT, VACUUM, on_vacuum),
	STMT(LOCK_STMT, LOCK, on_lock),
	STMT(CALL_STMT, CALL, on_plain),
	STMT(DO_STMT, DO, on_do),
	STMT(VARIABLE_SET_STMT, SET, on_variable_set),
	STMT(CONSTRAINTS_SET_STMT, SET, on_plain),
	STMT(VARIABLE_SHOW_STMT, SHOW, on_variable_show),
	STMT(TRANSACTION_STMT, TRANSACTION, on_plain),
	STMT(EXPLAIN_STMT, EXPLAIN, on_explain),
	STMT(PREPARE_STMT, PREPARE, on_prepare),
	STMT(EXECUTE_STMT, EXECUTE, on_execute),
	STMT(DEALLOCATE_STMT, DEALLOCATE, on_plain),
	STMT(DECLARE_CURSOR_STMT, DECLARE, on_plain),
	STMT(FETCH_STMT, FETCH, on_plain),
	STMT(CLOSE_PORTAL_STMT, CLOSE, on_plain),
	STMT(LISTEN_STMT, LISTEN, on_plain),
	STMT(UNLISTEN_STMT, UNLISTEN, on_plain),
	STMT(NOTIFY_STMT, NOTIFY, on_plain),
	STMT(DISCARD_STMT, DISCARD, on_plain),
	STMT(CHECK_POINT_STMT, CHECKPOINT, on_plain),
	STMT(LOAD_STMT, LOAD, on_plain),
};

static const struct stmt_class *stmt_class_of(PgQuery__Node__NodeCase node_case)
{
	size_t i = (size_t)node_case;

	if (i >= sizeof(stmt_classes) / sizeof(stmt_classes[0]) || !stmt_classes[i].handler)
		return NULL;
	return &stmt_classes[i];
}

/*
 * A statement met in the walk. It is an op when it is the statement of the
 * text, when another statement carries it, or when it is not a plain
 * SELECT (a data-modifying CTE); a SELECT in a subquery is only reading.
 */
static void visit_statement(struct walk *w, const PgQuery__Node *node, const struct stmt_class *sc,
			    unsigned flags)
{
	const ProtobufCMessage *stmt = node_member(node);
	size_t before = w->n_ops;
	bool executed = !(flags & WALK_DEFERRED);

	if (!stmt)
		return;
	if (!(flags & WALK_BODY) && sc->kind == SQL_SELECT &&
	    !((const PgQuery__SelectStmt *)stmt)->into_clause)
		return;
	sc->handler(w, stmt, sc->kind, executed);
	if (w->n_ops == before)
		add_op(w, sc->kind, NULL, executed, false, false);
}

/*
 * The flags a child reached through field @f of @msg walks with. A
 * statement carried by another is a "body"; some bodies do not run now.
 * Bodies pass through Node and List wrappers (a BEGIN ATOMIC body is a
 * List of Lists), not through anything else.
 */
static unsigned child_flags(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
			    unsigned flags)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	unsigned deferred = flags & WALK_DEFERRED;

#define FIELD_IS(type, field) (f->offset == offsetof(type, field))
	if (d == &pg_query__list__descriptor)
		return flags & (WALK_BODY | WALK_DEFERRED);
	if (d == &pg_query__explain_stmt__descriptor && FIELD_IS(PgQuery__ExplainStmt, query))
		return WALK_BODY | deferred |
		       (explain_analyzes((const PgQuery__ExplainStmt *)msg) ? 0 : WALK_DEFERRED);
	if (d == &pg_query__prepare_stmt__descriptor && FIELD_IS(PgQuery__PrepareStmt, query))
		return WALK_BODY | WALK_DEFERRED;
	if (d == &pg_query__copy_stmt__descriptor && FIELD_IS(PgQuery__CopyStmt, query))
		return WALK_BODY | deferred;
	if (d == &pg_query__create_table_as_stmt__descriptor &&
	    FIELD_IS(PgQuery__CreateTableAsStmt, query)) {
		const PgQuery__CreateTableAsStmt *s = (const PgQuery__CreateTableAsStmt *)msg;

		return WALK_BODY | deferred | (s->into && s->into->skip_data ? WALK_DEFERRED : 0);
	}
	if (d == &pg_query__declare_cursor_stmt__descriptor &&
	    FIELD_IS(PgQuery__DeclareCursorStmt, query))
		return WALK_BODY | deferred;
	if (d == &pg_query__view_stmt__descriptor && FIELD_IS(PgQuery__ViewStmt, query))
		return WALK_BODY | WALK_DEFERRED;
	if (d == &pg_query__rule_stmt__descriptor)
		return WALK_DEFERRED | (FIELD_IS(PgQuery__RuleStmt, actions) ? WALK_BODY : 0);
	if (d == &pg_query__create_function_stmt__descriptor &&
	    FIELD_IS(PgQuery__CreateFunctionStmt, sql_body))
		return WALK_BODY | WALK_DEFERRED;
	if (d == &pg_query__create_schema_stmt__descriptor &&
	    FIELD_IS(PgQuery__CreateSchemaStmt, schema_elts))
		return WALK_BODY | deferred;
#undef FIELD_IS
	return deferred;
}

static int constants_add(struct sql_constants *c, int32_t location)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		int32_t *at = realloc(c->at, cap * sizeof(*at));

		if (!at)
			return -ENOMEM;
		c->at = at;
		c->cap = cap;
	}
	c->at[c->n++] = location;
	return 0;
}

static void walk_message(struct walk *w, const ProtobufCMessage *msg, unsigned flags, int depth)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const ProtobufCMessage *child;
	struct child_iter it;

	if (w->err)
		return;
	if (depth > SQL_MAX_DEPTH) {
		w->err = -E2BIG;	/* cannot happen: depth is checked before unpacking */
		return;
	}
	if (d == &pg_query__node__descriptor) {
		const PgQuery__Node *node = (const PgQuery__Node *)msg;
		const struct stmt_class *sc = stmt_class_of(node->node_case);

		if (sc) {
			visit_statement(w, node, sc, flags);
			flags &= ~(unsigned)(WALK_TOP | WALK_BODY);
		} else if (flags & WALK_TOP) {
			add_op(w, SQL_OTHER, NULL, !(flags & WALK_DEFERRED), false, false);
			flags &= ~(unsigned)(WALK_TOP | WALK_BODY);
		}
		child_iter_init(&it, msg);
		while ((child = child_next(&it)))
			walk_message(w, child, flags, depth + 1);
		return;
	}
	if (d == &pg_query__range_var__descriptor) {
		char *name = rangevar_name((const PgQuery__RangeVar *)msg, &w->err);

		if (name && strset_take(&w->tables, name) < 0)
			w->err = -ENOMEM;
	} else if (d == &pg_query__func_call__descriptor) {
		const PgQuery__FuncCall *fc = (const PgQuery__FuncCall *)msg;
		char *name = strings_name(fc->funcname, fc->n_funcname, 0, &w->err);

		if (name && strset_take(&w->functions, name) < 0)
			w->err = -ENOMEM;
	} else if (d == &pg_query__param_ref__descriptor) {
		int32_t number = ((const PgQuery__ParamRef *)msg)->number;

		if (number > w->st->param_count)
			w->st->param_count = number;
	} else if (d == &pg_query__a__const__descriptor && w->constants) {
		if (constants_add(w->constants, ((const PgQuery__AConst *)msg)->location) < 0)
			w->err = -ENOMEM;
	}
	child_iter_init(&it, msg);
	while ((child = child_next(&it)))
		walk_message(w, child, child_flags(msg, child_field(&it), flags), depth + 1);
}

static void statement_release(struct sql_statement *st)
{
	for (size_t i = 0; i < st->n_ops; i++)
		free(st->ops[i].relation);
	free(st->ops);
	for (size_t i = 0; i < st->n_tables; i++)
		free(st->tables[i]);
	free(st->tables);
	for (size_t i = 0; i < st->n_functions; i++)
		free(st->functions[i]);
	free(st->functions);
	free(st->prepare_name);
	free(st->execute_name);
	free(st->variable);
	memset(st, 0, sizeof(*st));
}

static int classify_statement(const PgQuery__RawStmt *raw, size_t text_len,
			      struct sql_constants *constants, struct sql_statement *st)
{
	struct walk w = { .st = st, .constants = constants };

	st->location = raw->stmt_location;
	st->length = raw->stmt_len ? raw->stmt_len : (int)(text_len - (size_t)raw->stmt_location);
	if (raw->stmt)
		walk_message(&w, &raw->stmt->base, WALK_TOP | WALK_BODY, 3);
	if (w.n_ops == 0)
		add_op(&w, SQL_OTHER, NULL, true, false, false);

	st->ops = w.ops;
	st->n_ops = w.n_ops;
	st->tables = w.tables.items;
	st->n_tables = w.tables.n;
	st->functions = w.functions.items;
	st->n_functions = w.functions.n;
	free(w.tables.slots);
	free(w.functions.slots);
	if (w.err) {
		statement_release(st);
		return w.err;
	}
	st->kind = st->ops[0].kind;
	return 0;
}

/* ---- parsing ----------------------------------------------------------------- */

static int fail(struct sql_parse *out, enum sql_failure failure, const char *message, int position)
{
	out->ok = false;
	out->failure = failure;
	out->error_position = position;
	out->error = strdup(message);
	return out->error ? 0 : -ENOMEM;
}

/* One text, read one way, on whichever thread has the stack for it. */
struct job {
	const char *text;	/* NUL-terminated */
	size_t len;
	bool scs;
	struct sql_parse *out;
	struct sql_constants *constants;	/* NULL: not wanted */
	PgQueryProtobufParseResult result;
	bool have_result;
	bool tree_ok;		/* result holds a tree within SQL_MAX_DEPTH */
	int depth;
	int err;
};

/*
 * One parse for both the tree and the fingerprint. pg_query_parse_protobuf
 * and pg_query_fingerprint each parse the text and then either serialize
 * the raw tree or fingerprint it; the steps are exported by libpg_query
 * (15-4.x) but declared in headers that need PostgreSQL's own, so they are
 * declared here. pg_query_fingerprint_node hashes a tree exactly as
 * pg_query_fingerprint hashes the tree it parsed (the unit tests compare the
 * two on every statement of the corpus).
 */
struct pg_raw_parse {
	void *tree;		/* List * of RawStmt, in the memory context */
	char *stderr_buffer;
	PgQueryError *error;
};
extern struct pg_raw_parse pg_query_raw_parse(const char *input);
extern void *pg_query_enter_memory_context(void);
extern void pg_query_exit_memory_context(void *ctx);
extern PgQueryProtobuf pg_query_nodes_to_protobuf(const void *obj);
extern uint64_t pg_query_fingerprint_node(const void *node);

/* pg_query_parse_protobuf, keeping the fingerprint of the same tree. */
static PgQueryProtobufParseResult parse_and_fingerprint(const char *text, uint64_t *fingerprint)
{
	PgQueryProtobufParseResult result = { 0 };
	void *ctx = pg_query_enter_memory_context();
	struct pg_raw_parse raw = pg_query_raw_parse(text);

	/* malloc'ed: they outlive the memory context */
	result.stderr_buffer = raw.stderr_buffer;
	result.error = raw.error;
	if (!raw.error) {
		result.parse_tree = pg_query_nodes_to_protobuf(raw.tree);
		*fingerprint = pg_query_fingerprint_node(raw.tree);
	}
	pg_query_exit_memory_context(ctx);
	return result;
}

static void job_parse(struct job *j)
{
	bool saved = standard_conforming_strings;
	uint64_t fingerprint = 0;

	standard_conforming_strings = j->scs;
	j->result = parse_and_fingerprint(j->text, &fingerprint);
	j->have_result = true;
	if (j->result.error) {
		if (strcmp(j->result.error->message, "out of memory") == 0)
			j->err = -ENOMEM;
		else
			j->err = fail(j->out, SQL_FAIL_SYNTAX, j->result.error->message,
				      j->result.error->cursorpos);
		goto out;
	}
	j->depth = wire_depth((const uint8_t *)j->result.parse_tree.data, j->result.parse_tree.len,
			      &pg_query__parse_result__descriptor, SQL_MAX_DEPTH);
	if (j->depth < 0) {
		j->err = j->depth;
		goto out;
	}
	if (j->depth > SQL_MAX_DEPTH) {
		j->err = fail(j->out, SQL_FAIL_TOO_COMPLEX,
			      "statement nested too deeply to classify", 0);
		goto out;
	}
	/* As pg_query_fingerprint prints it: the big-endian bytes in hex. */
	snprintf(j->out->fingerprint, sizeof(j->out->fingerprint), "%016" PRIx64, fingerprint);
	j->tree_ok = true;
out:
	standard_conforming_strings = saved;
}

/*
 * The unpacked tree lives in an arena: one free for thousands of small
 * messages, and no recursive free_unpacked.
 */
struct arena_chunk {
	struct arena_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

/* Chunks start small (most statements are) and double up to a limit. */
#define ARENA_FIRST ((size_t)8 << 10)
#define ARENA_MAX ((size_t)1 << 20)

static void *arena_alloc(void *data, size_t size)
{
	struct arena_chunk **head = data, *c = *head;
	size_t need = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t);

	if (!c || c->cap - c->used < need) {
		size_t cap = c ? 2 * c->cap : ARENA_FIRST / sizeof(max_align_t);

		if (cap > ARENA_MAX / sizeof(max_align_t))
			cap = ARENA_MAX / sizeof(max_align_t);
		if (need > cap)
			cap = need;
		c = malloc(sizeof(*c) + cap * sizeof(max_align_t));
		if (!c)
			return NULL;
		c->used = 0;
		c->cap = cap;
		c->next = *head;
		*head = c;
	}
	c->used += need;
	return &c->data[c->used - need];
}

static void arena_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;	/* all at once, in arena_release */
}

static void arena_release(struct arena_chunk *head)
{
	while (head) {
		struct arena_chunk *next = head->next;

		free(head);
		head = next;
	}
}

/* pg_query_fingerprint of @text read with standard_conforming_strings @scs. */
static PgQueryFingerprintResult fingerprint_as(const char *text, bool scs)
{
	bool saved = standard_conforming_strings;
	PgQueryFingerprintResult fp;

	standard_conforming_strings = scs;
	fp = pg_query_fingerprint(text);
	standard_conforming_strings = saved;
	return fp;
}

/*
 * Each statement's own fingerprint, so that statements of one
 * multi-statement string group with their like. Runs on the job's thread:
 * a statement is no deeper than the text that was already accepted.
 */
static void fingerprint_statements(struct job *j)
{
	struct sql_parse *out = j->out;

	for (size_t i = 0; i < out->n_stmts; i++) {
		struct sql_statement *st = &out->stmts[i];
		PgQueryFingerprintResult fp;
		char *one;

		if (out->n_stmts == 1) {
			memcpy(st->fingerprint, out->fingerprint, sizeof(st->fingerprint));
			return;
		}
		if (st->location < 0 || st->length <= 0 || (size_t)st->location + (size_t)st->length > j->len)
			continue;
		one = strndup(j->text + st->location, (size_t)st->length);
		if (!one) {
			j->err = -ENOMEM;
			return;
		}
		fp = fingerprint_as(one, j->scs);
		if (!fp.error && fp.fingerprint_str)
			snprintf(st->fingerprint, sizeof(st->fingerprint), "%s", fp.fingerprint_str);
		pg_query_free_fingerprint_result(fp);
		free(one);
	}
}

static void job_classify(struct job *j)
{
	struct arena_chunk *chunks = NULL;
	ProtobufCAllocator arena = { arena_alloc, arena_free, &chunks };
	PgQuery__ParseResult *tree;
	struct sql_parse *out = j->out;

	tree = pg_query__parse_result__unpack(&arena, j->result.parse_tree.len,
					      (const uint8_t *)j->result.parse_tree.data);
	if (!tree) {
		arena_release(chunks);
		j->err = -ENOMEM;
		return;
	}
	if (tree->n_stmts) {
		out->stmts = calloc(tree->n_stmts, sizeof(*out->stmts));
		if (!out->stmts)
			j->err = -ENOMEM;
	}
	for (size_t i = 0; i < tree->n_stmts && !j->err; i++) {
		j->err = classify_statement(tree->stmts[i], j->len, j->constants, &out->stmts[i]);
		if (!j->err)
			out->n_stmts++;
	}
	arena_release(chunks);
	if (!j->err)
		fingerprint_statements(j);
}

static void job_whole(struct job *j)
{
	job_parse(j);
	if (!j->err && j->tree_ok)
		job_classify(j);
}

struct helper {
	void (*fn)(struct job *);
	struct job *job;
};

static void *helper_main(void *arg)
{
	struct helper *h = arg;

	h->fn(h->job);
	return NULL;
}

/* Runs @fn on a thread of its own with a stack for the deepest tree
 * accepted, and waits for it. */
static int run_on_helper(void (*fn)(struct job *), struct job *job)
{
	struct helper h = { fn, job };
	pthread_attr_t attr;
	pthread_t thread;
	int err;

	err = pthread_attr_init(&attr);
	if (err)
		return -err;
	err = pthread_attr_setstacksize(&attr, SQL_HELPER_STACK);
	if (!err)
		err = pthread_create(&thread, &attr, helper_main, &h);
	pthread_attr_destroy(&attr);
	if (err)
		return -err;
	pthread_join(thread, NULL);
	return 0;
}

/* Classifies NUL-terminated @text read with standard_conforming_strings
 * @scs into @out (zeroed). */
static int classify_text(const char *text, size_t len, bool scs, struct sql_parse *out,
			 struct sql_constants *constants)
{
	struct job job = { .text = text, .len = len, .scs = scs, .out = out,
			   .constants = constants };
	int err = 0;

	if (len > SQL_INLINE_TEXT) {
		long estimate = nesting_estimate(text, scs);

		if (estimate < 0)
			return (int)estimate;
		if (estimate > SQL_MAX_NEST_UNITS)
			return fail(out, SQL_FAIL_TOO_COMPLEX, "statement nested too deeply to classify", 0);
		err = run_on_helper(job_whole, &job);
	} else {
		job_parse(&job);
		if (!job.err && job.tree_ok) {
			if (job.depth > SQL_INLINE_DEPTH)
				err = run_on_helper(job_classify, &job);
			else
				job_classify(&job);
		}
	}
	if (job.have_result)
		pg_query_free_protobuf_parse_result(job.result);
	if (!err)
		err = job.err;
	if (!err && job.tree_ok)
		out->ok = true;
	return err;
}

/* ---- comparing two readings ------------------------------------------------- */

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static bool same_strs(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!same_str(a[i], b[i]))
			return false;
	return true;
}

static bool same_statement(const struct sql_statement *a, const struct sql_statement *b)
{
	if (a->kind != b->kind || a->n_ops != b->n_ops || a->copy_program != b->copy_program ||
	    a->copy_from != b->copy_from || a->copy_server_file != b->copy_server_file ||
	    a->executes_body != b->executes_body || a->opaque_body != b->opaque_body ||
	    a->param_count != b->param_count || a->location != b->location ||
	    a->length != b->length || !same_str(a->prepare_name, b->prepare_name) ||
	    !same_str(a->execute_name, b->execute_name) || !same_str(a->variable, b->variable) ||
	    !same_strs(a->tables, a->n_tables, b->tables, b->n_tables) ||
	    !same_strs(a->functions, a->n_functions, b->functions, b->n_functions))
		return false;
	for (size_t i = 0; i < a->n_ops; i++) {
		const struct sql_op *x = &a->ops[i], *y = &b->ops[i];

		if (x->kind != y->kind || x->executed != y->executed ||
		    x->where_present != y->where_present || x->where_constant != y->where_constant ||
		    !same_str(x->relation, y->relation))
			return false;
	}
	return true;
}

/* Same statements doing the same things; constants may differ. */
static bool same_reading(const struct sql_parse *a, const struct sql_parse *b)
{
	if (a->ok != b->ok || a->n_stmts != b->n_stmts)
		return false;
	for (size_t i = 0; i < a->n_stmts; i++)
		if (!same_statement(&a->stmts[i], &b->stmts[i]))
			return false;
	return true;
}

/*
 * PostgreSQL's scanner reads a run of '+' and '-' as one operator, gives
 * back all but the first sign and reads the rest again: time quadratic in
 * the run, in the server as here. The cost of a text is the sum of its
 * runs squared; "--" starts a comment, so it ends a run.
 */
static uint64_t sign_runs_cost(const char *text, size_t len)
{
	uint64_t cost = 0, run = 0;

	for (size_t i = 0; i < len; i++) {
		char c = text[i];

		if (c == '+' || (c == '-' && !(run > 0 && text[i - 1] == '-'))) {
			run++;
			continue;
		}
		cost += run * run;
		run = c == '-';
	}
	return cost + run * run;
}

/* ---- entry points --------------------------------------------------------------- */

static bool has_high_byte(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)text[i] >= 0x80)
			return true;
	return false;
}

enum sql_failure sql_precheck(const char *text, size_t len, const struct sql_settings *settings)
{
	const char *encoding = settings ? settings->client_encoding : NULL;

	if (memchr(text, '\0', len))
		return SQL_FAIL_NUL_BYTE;
	if (sign_runs_cost(text, len) > SQL_MAX_SIGN_COST)
		return SQL_FAIL_TOO_COMPLEX;
	if (!sql_encoding_is_ascii_safe(encoding) && has_high_byte(text, len))
		return SQL_FAIL_ENCODING;
	return SQL_FAIL_NONE;
}

int sql_parse(const char *text, size_t len, const struct sql_settings *settings,
	      struct sql_parse *out)
{
	return sql_parse_constants(text, len, settings, out, NULL);
}

static int compare_i32(const void *a, const void *b)
{
	int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;

	return (x > y) - (x < y);
}

int sql_parse_constants(const char *text, size_t len, const struct sql_settings *settings,
			struct sql_parse *out, struct sql_constants *constants)
{
	enum sql_scs scs = settings ? settings->standard_conforming_strings : SQL_SCS_ON;
	char *buf;
	int err;

	memset(out, 0, sizeof(*out));
	if (len > INT_MAX)
		return -EINVAL;	/* PostgreSQL messages stop at 1 GiB */
	switch (sql_precheck(text, len, settings)) {
	case SQL_FAIL_NUL_BYTE:
		err = fail(out, SQL_FAIL_NUL_BYTE, "statement text contains a NUL byte", 0);
		goto done;
	case SQL_FAIL_TOO_COMPLEX:
		err = fail(out, SQL_FAIL_TOO_COMPLEX,
			   "statement has a run of signs too long to classify", 0);
		goto done;
	case SQL_FAIL_ENCODING:
		err = fail(out, SQL_FAIL_ENCODING,
			   "client encoding can hide quotes inside characters; cannot classify", 0);
		goto done;
	default:
		break;
	}
	buf = malloc(len + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	buf[len] = '\0';

	if (scs == SQL_SCS_UNKNOWN && memchr(buf, '\\', len)) {
		struct sql_parse off;

		memset(&off, 0, sizeof(off));
		err = classify_text(buf, len, true, out, constants);
		if (!err)
			err = classify_text(buf, len, false, &off, NULL);
		if (!err && !same_reading(out, &off)) {
			sql_parse_free(out);
			err = fail(out, SQL_FAIL_AMBIGUOUS,
				   "statement reads differently with standard_conforming_strings on and off",
				   0);
		}
		sql_parse_free(&off);
	} else {
		err = classify_text(buf, len, scs != SQL_SCS_OFF, out, constants);
	}
	free(buf);
done:
	if (err)
		sql_parse_free(out);
	if (constants && constants->n > 1)
		qsort(constants->at, constants->n, sizeof(*constants->at), compare_i32);
	return err;
}

void sql_constants_free(struct sql_constants *c)
{
	free(c->at);
	memset(c, 0, sizeof(*c));
}

void sql_parse_free(struct sql_parse *p)
{
	if (p->block) {
		free(p->block);
		memset(p, 0, sizeof(*p));
		return;
	}
	for (size_t i = 0; i < p->n_stmts; i++)
		statement_release(&p->stmts[i]);
	free(p->stmts);
	free(p->error);
	memset(p, 0, sizeof(*p));
}

/* ---- copies ------------------------------------------------------------------- */

static size_t str_bytes(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

static size_t strs_bytes(char *const *v, size_t n)
{
	size_t bytes = 0;

	for (size_t i = 0; i < n; i++)
		bytes += str_bytes(v[i]);
	return bytes;
}

/* Bytes of everything @p points to: arrays first (all 8-aligned), strings after. */
static void copy_size(const struct sql_parse *p, size_t *arrays, size_t *strings)
{
	*arrays = p->n_stmts * sizeof(*p->stmts);
	*strings = str_bytes(p->error);
	for (size_t i = 0; i < p->n_stmts; i++) {
		const struct sql_statement *st = &p->stmts[i];

		*arrays += st->n_ops * sizeof(*st->ops) +
			   (st->n_tables + st->n_functions) * sizeof(char *);
		for (size_t k = 0; k < st->n_ops; k++)
			*strings += str_bytes(st->ops[k].relation);
		*strings += strs_bytes(st->tables, st->n_tables) +
			    strs_bytes(st->functions, st->n_functions) + str_bytes(st->prepare_name) +
			    str_bytes(st->execute_name) + str_bytes(st->variable);
	}
}

/* Carves @bytes off *@at for an array that was @src (NULL stays NULL). */
static void *take_array(char **at, const void *src, size_t bytes)
{
	void *p = *at;

	if (!src)
		return NULL;
	memcpy(p, src, bytes);
	*at += bytes;
	return p;
}

static char *take_str(char **at, const char *src)
{
	return take_array(at, src, str_bytes(src));
}

_Static_assert(sizeof(struct sql_statement) % sizeof(void *) == 0 &&
	       sizeof(struct sql_op) % sizeof(void *) == 0,
	       "copies lay arrays out back to back");

int sql_parse_copy(const struct sql_parse *src, struct sql_parse *dst)
{
	size_t arrays, strings;
	char *arr, *str;

	*dst = *src;
	dst->block = NULL;
	dst->stmts = NULL;
	dst->error = NULL;
	copy_size(src, &arrays, &strings);
	if (arrays + strings == 0)
		return 0;
	dst->block = malloc(arrays + strings);
	if (!dst->block) {
		memset(dst, 0, sizeof(*dst));
		return -ENOMEM;
	}
	arr = dst->block;
	str = arr + arrays;
	dst->error = take_str(&str, src->error);
	dst->stmts = take_array(&arr, src->stmts, src->n_stmts * sizeof(*src->stmts));
	for (size_t i = 0; i < src->n_stmts; i++) {
		struct sql_statement *st = &dst->stmts[i];

		st->ops = take_array(&arr, st->ops, st->n_ops * sizeof(*st->ops));
		for (size_t k = 0; k < st->n_ops; k++)
			st->ops[k].relation = take_str(&str, st->ops[k].relation);
		st->tables = take_array(&arr, st->tables, st->n_tables * sizeof(char *));
		for (size_t k = 0; k < st->n_tables; k++)
			st->tables[k] = take_str(&str, st->tables[k]);
		st->functions = take_array(&arr, st->functions, st->n_functions * sizeof(char *));
		for (size_t k = 0; k < st->n_functions; k++)
			st->functions[k] = take_str(&str, st->functions[k]);
		st->prepare_name = take_str(&str, st->prepare_name);
		st->execute_name = take_str(&str, st->execute_name);
		st->variable = take_str(&str, st->variable);
	}
	return 0;
}
