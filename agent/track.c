#include "track.h"

#include <stdlib.h>
#include <string.h>

#include "agent/pg_msg.h"
#include "agent/sql_cache.h"

#define TRACK_MAX_PENDING 65536		/* messages awaiting an answer */
#define TRACK_MAX_NAMES 65536		/* named statements + portals */
#define TRACK_NAME_HOLD 8192		/* bytes that must hold both names */

enum track_op {
	OP_QUERY,
	OP_PARSE,
	OP_BIND,
	OP_DESCRIBE,
	OP_EXECUTE,
	OP_CLOSE,
	OP_SYNC,
	OP_FUNCTION,
};

struct track_pending {
	enum track_op op;
	struct track_text *text;	/* the statement(s) it runs; may be NULL */
	size_t next_stmt;		/* OP_QUERY: the statement running now */
	uint64_t start_ns;
	uint64_t client_bytes;
	uint64_t server_bytes;
	int64_t data_rows;
	uint32_t function_oid;		/* OP_FUNCTION: the function called */
	bool reported;			/* OP_FUNCTION: its event is out */
	enum track_verdict verdict;
	char *rule;			/* owned: a reload may free the policy's */
};

struct track_name {
	struct track_name *next;
	struct track_text *text;
	uint64_t bind_bytes;		/* portals: the Bind that made them */
	char name[];
};

/* --- statement texts ----------------------------------------------------- */

static struct track_text *text_new(const struct track *trk, const char *sql, size_t len)
{
	struct track_text *t = calloc(1, sizeof(*t));
	struct sql_settings settings = trk->settings;

	/* A statement still in flight may change how text is read (SET
	 * standard_conforming_strings): the server says so only afterwards. */
	if (trk->count > 0)
		settings.standard_conforming_strings = SQL_SCS_UNKNOWN;

	if (!t)
		return NULL;
	t->refs = 1;
	t->len = len;
	t->sql = strndup(sql, len);
	if (!t->sql || sql_cache_parse(sql_cache_thread(), t->sql, len, &settings, &t->parse) < 0) {
		free(t->sql);
		free(t);
		return NULL;
	}
	return t;
}

static struct track_text *text_ref(struct track_text *t)
{
	if (t)
		t->refs++;
	return t;
}

static void text_unref(struct track_text *t)
{
	if (!t || --t->refs)
		return;
	sql_parse_free(&t->parse);
	free(t->sql);
	free(t);
}

/* --- names: prepared statements and portals -------------------------------- */

static size_t name_hash(const char *s, size_t n_buckets)
{
	uint64_t h = 1469598103934665603ull;	/* FNV-1a */

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return (size_t)(h & (n_buckets - 1));
}

enum name_kind { NAME_STATEMENT, NAME_PORTAL };

static struct track_name **table_of(struct track *t, enum name_kind kind)
{
	return kind == NAME_STATEMENT ? t->statements : t->portals;
}

static struct track_name **name_slot(struct track *t, enum name_kind kind, const char *name)
{
	struct track_name **p = &table_of(t, kind)[name_hash(name, t->n_buckets)];

	while (*p && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

static struct track_name *name_find(struct track *t, enum name_kind kind, const char *name)
{
	return t->statements ? *name_slot(t, kind, name) : NULL;
}

static void name_remove(struct track *t, enum name_kind kind, const char *name)
{
	struct track_name **p, *gone;

	if (!t->statements)
		return;
	p = name_slot(t, kind, name);
	if (!(gone = *p))
		return;
	*p = gone->next;
	text_unref(gone->text);
	free(gone);
	t->n_names--;
}

static int tables_alloc(struct track *t)
{
	if (t->statements)
		return 0;
	t->statements = calloc(64, sizeof(*t->statements));
	t->portals = calloc(64, sizeof(*t->portals));
	if (!t->statements || !t->portals) {
		free(t->statements);
		free(t->portals);
		t->statements = t->portals = NULL;
		return -1;
	}
	t->n_buckets = 64;
	return 0;
}

static void move_names(struct track_name **from, size_t from_n, struct track_name **to, size_t to_n)
{
	for (size_t i = 0; i < from_n; i++) {
		while (from[i]) {
			struct track_name *n = from[i];
			size_t h = name_hash(n->name, to_n);

			from[i] = n->next;
			n->next = to[h];
			to[h] = n;
		}
	}
}

/* Keeps chains short: both tables double once names outnumber 4 per bucket.
 * Without memory for that, chains just grow longer. */
static void names_grow(struct track *t)
{
	size_t n = t->n_buckets * 2;
	struct track_name **statements, **portals;

	if (t->n_names < t->n_buckets * 4)
		return;
	statements = calloc(n, sizeof(*statements));
	portals = calloc(n, sizeof(*portals));
	if (!statements || !portals) {
		free(statements);
		free(portals);
		return;
	}
	move_names(t->statements, t->n_buckets, statements, n);
	move_names(t->portals, t->n_buckets, portals, n);
	free(t->statements);
	free(t->portals);
	t->statements = statements;
	t->portals = portals;
	t->n_buckets = n;
}

/* Binds @name to @text (a reference is taken), replacing what it named. */
static struct track_name *name_set(struct track *t, enum name_kind kind, const char *name,
				   struct track_text *text)
{
	struct track_name **p;
	struct track_name *n;

	names_grow(t);
	p = name_slot(t, kind, name);
	if ((n = *p)) {
		text_unref(n->text);
		n->text = text_ref(text);
		return n;
	}
	if (t->n_names >= t->max_names) {
		t->error = "too many prepared statements and portals";
		return NULL;
	}
	n = calloc(1, sizeof(*n) + strlen(name) + 1);
	if (!n) {
		t->error = "out of memory";
		return NULL;
	}
	strcpy(n->name, name);
	n->text = text_ref(text);
	*p = n;
	t->n_names++;
	return n;
}

static void names_free(struct track_name **table, size_t n_buckets)
{
	if (!table)
		return;
	for (size_t i = 0; i < n_buckets; i++) {
		while (table[i]) {
			struct track_name *n = table[i];

			table[i] = n->next;
			text_unref(n->text);
			free(n);
		}
	}
	free(table);
}

/* --- the FIFO ------------------------------------------------------------------ */

static struct track_pending *head(struct track *t)
{
	return t->count ? &t->pending[t->head] : NULL;
}

static struct track_pending *push(struct track *t, enum track_op op, struct track_text *text,
				  uint64_t now_ns, size_t bytes)
{
	struct track_pending *p;

	if (t->count == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct track_pending *grown;

		if (t->count >= t->max_pending) {
			t->error = "too many pipelined messages awaiting an answer";
			return NULL;
		}
		if (cap > t->max_pending)
			cap = t->max_pending;
		grown = malloc(cap * sizeof(*grown));
		if (!grown) {
			t->error = "out of memory";
			return NULL;
		}
		/* Unwrap the ring into the new array. */
		for (size_t i = 0; i < t->count; i++)
			grown[i] = t->pending[(t->head + i) % t->cap];
		free(t->pending);
		t->pending = grown;
		t->head = 0;
		t->cap = cap;
	}
	p = &t->pending[(t->head + t->count) % t->cap];
	memset(p, 0, sizeof(*p));
	p->op = op;
	p->text = text_ref(text);
	p->start_ns = now_ns;
	p->client_bytes = bytes;
	t->count++;
	return p;
}

static void pop(struct track *t)
{
	free(t->pending[t->head].rule);
	text_unref(t->pending[t->head].text);
	t->head = (t->head + 1) % t->cap;
	t->count--;
}

/* --- reporting ------------------------------------------------------------------- */

static void report(struct track *t, struct track_pending *p, size_t index, int64_t rows,
		   const char *sqlstate, uint64_t now_ns, bool finished)
{
	struct track_result r = {
		.text = p->text,
		.index = index,
		.extended = p->op != OP_QUERY,
		.function_call = p->op == OP_FUNCTION,
		.function_oid = p->function_oid,
		.finished = finished,
		.verdict = p->verdict,
		.rule = p->rule,
		.rows = rows >= 0 ? rows : p->data_rows ? p->data_rows : -1,
		.duration_ns = now_ns - p->start_ns,
		.client_bytes = p->client_bytes,
		.server_bytes = p->server_bytes,
	};

	if (p->text) {
		const struct sql_parse *sp = &p->text->parse;

		if (sp->ok && index < sp->n_stmts && p->op == OP_QUERY) {
			r.sql = p->text->sql + sp->stmts[index].location;
			r.sql_len = (size_t)sp->stmts[index].length;
			/* A statement's span starts right after the previous ';'. */
			while (r.sql_len && strchr(" \t\r\n\f", *r.sql)) {
				r.sql++;
				r.sql_len--;
			}
		} else {
			r.sql = p->text->sql;
			r.sql_len = p->text->len;
		}
	}
	if (sqlstate)
		memcpy(r.sqlstate, sqlstate, sizeof(r.sqlstate));
	t->report(t->ctx, &r);
	/* What a statement sent counts once; the next one starts afresh. */
	p->client_bytes = 0;
	p->server_bytes = 0;
	p->data_rows = 0;
	p->start_ns = now_ns;
}

/* Statements a Query runs: its parsed statements, or one when unparsable. */
static size_t query_statements(const struct track_pending *p)
{
	if (!p->text)
		return 0;
	return p->text->parse.ok ? p->text->parse.n_stmts : 1;
}

/* --- client messages ------------------------------------------------------------- */

static int on_query(struct track *t, struct pg_reader *r, uint64_t now_ns, size_t total)
{
	size_t len;
	const char *sql = pg_read_cstr(r, &len);
	struct track_text *text;

	if (!sql) {
		t->error = "malformed Query message";
		return -1;
	}
	if (!(text = text_new(t, sql, len))) {
		t->error = "out of memory";
		return -1;
	}
	/* PREPARE name AS ...: EXECUTE name will be judged by this text. */
	for (size_t i = 0; text->parse.ok && i < text->parse.n_stmts; i++) {
		const char *name = text->parse.stmts[i].prepare_name;

		if (name && !name_set(t, NAME_STATEMENT, name, text)) {
			text_unref(text);
			return -1;
		}
	}
	if (!push(t, OP_QUERY, text, now_ns, total)) {
		text_unref(text);
		return -1;
	}
	text_unref(text);
	return 0;
}

static int on_parse(struct track *t, struct pg_reader *r, uint64_t now_ns, size_t total)
{
	size_t len;
	const char *name = pg_read_cstr(r, NULL);
	const char *sql = pg_read_cstr(r, &len);
	struct track_text *text;
	int err = -1;

	if (!sql) {
		t->error = "malformed Parse message";
		return -1;
	}
	if (!(text = text_new(t, sql, len))) {
		t->error = "out of memory";
		return -1;
	}
	if (name_set(t, NAME_STATEMENT, name, text) && push(t, OP_PARSE, text, now_ns, total))
		err = 0;
	text_unref(text);
	return err;
}

static int on_bind(struct track *t, struct pg_reader *r, uint64_t now_ns, size_t total)
{
	const char *portal = pg_read_cstr(r, NULL);
	const char *stmt = pg_read_cstr(r, NULL);
	struct track_name *named, *bound;

	if (!stmt) {
		t->error = "malformed Bind message";
		return -1;
	}
	named = name_find(t, NAME_STATEMENT, stmt);
	bound = name_set(t, NAME_PORTAL, portal, named ? named->text : NULL);
	if (!bound)
		return -1;
	bound->bind_bytes = total;
	return push(t, OP_BIND, bound->text, now_ns, 0) ? 0 : -1;
}

static int on_execute(struct track *t, struct pg_reader *r, uint64_t now_ns, size_t total)
{
	const char *portal = pg_read_cstr(r, NULL);
	struct track_name *bound;

	if (!portal) {
		t->error = "malformed Execute message";
		return -1;
	}
	bound = name_find(t, NAME_PORTAL, portal);
	/* The Bind's parameters are part of what this statement sent. */
	return push(t, OP_EXECUTE, bound ? bound->text : NULL, now_ns,
		    total + (bound ? bound->bind_bytes : 0)) ? 0 : -1;
}

static int on_close(struct track *t, struct pg_reader *r, uint64_t now_ns)
{
	uint8_t what = pg_read_u8(r);
	const char *name = pg_read_cstr(r, NULL);

	if (!name || (what != 'S' && what != 'P')) {
		t->error = "malformed Close message";
		return -1;
	}
	name_remove(t, what == 'S' ? NAME_STATEMENT : NAME_PORTAL, name);
	return push(t, OP_CLOSE, NULL, now_ns, 0) ? 0 : -1;
}

/* FunctionCall (fast path): a function by OID, with binary arguments. */
static int on_function_call(struct track *t, struct pg_reader *r, uint64_t now_ns, size_t total)
{
	struct track_pending *p = push(t, OP_FUNCTION, NULL, now_ns, total);

	if (!p)
		return -1;
	p->function_oid = pg_read_u32(r);
	if (r->bad) {
		t->error = "malformed FunctionCall from the client";
		return -1;
	}
	return 0;
}

/* Its answer (FunctionCallResponse or an error): reported once. */
static void function_done(struct track *t, struct track_pending *p, const char *sqlstate,
			  uint64_t now_ns)
{
	if (p->reported)
		return;
	p->reported = true;
	report(t, p, 0, -1, sqlstate, now_ns, true);
}

int track_frontend(struct track *t, const uint8_t *msg, size_t have, size_t total, uint64_t now_ns)
{
	struct pg_reader r;

	if (tables_alloc(t) < 0) {
		t->error = "out of memory";
		return -1;
	}
	pg_reader_init(&r, msg + PG_MSG_HEADER_LEN, have - PG_MSG_HEADER_LEN);
	switch (msg[0]) {
	case 'Q':
		return on_query(t, &r, now_ns, total);
	case 'P':
		return on_parse(t, &r, now_ns, total);
	case 'B':
		return on_bind(t, &r, now_ns, total);
	case 'E':
		return on_execute(t, &r, now_ns, total);
	case 'C':
		return on_close(t, &r, now_ns);
	case 'D':
		return push(t, OP_DESCRIBE, NULL, now_ns, 0) ? 0 : -1;
	case 'S':
		return push(t, OP_SYNC, NULL, now_ns, 0) ? 0 : -1;
	case 'F':
		return on_function_call(t, &r, now_ns, total);
	default:	/* CopyData and friends belong to the statement running */
		if (head(t))
			head(t)->client_bytes += total;
		return 0;
	}
}

/* --- server messages ------------------------------------------------------------- */

/* After an extended-protocol error: what the server skips, we drop. */
static void skip_to_sync(struct track *t)
{
	while (head(t) && head(t)->op != OP_SYNC)
		pop(t);
}

static void on_complete(struct track *t, struct track_pending *p, int64_t rows, uint64_t now_ns)
{
	if (p->op == OP_QUERY) {
		if (p->next_stmt < query_statements(p))
			report(t, p, p->next_stmt++, rows, NULL, now_ns, true);
	} else if (p->op == OP_EXECUTE) {
		report(t, p, 0, rows, NULL, now_ns, true);
		pop(t);
	}
}

static void on_error(struct track *t, struct track_pending *p, const char *sqlstate, uint64_t now_ns)
{
	switch (p->op) {
	case OP_QUERY:
		if (p->verdict == TRACK_DENY) {
			/* The agent's stand-in failed as meant: nothing ran. */
			while (p->next_stmt < query_statements(p))
				report(t, p, p->next_stmt++, -1, sqlstate, now_ns, true);
			return;
		}
		/* The rest of the Query string does not run; its Z follows. */
		if (p->next_stmt < query_statements(p))
			report(t, p, p->next_stmt, -1, sqlstate, now_ns, true);
		p->next_stmt = query_statements(p);
		return;
	case OP_FUNCTION:
		function_done(t, p, sqlstate, now_ns);
		return;		/* its Z follows */
	case OP_SYNC:
		return;		/* its Z follows */
	case OP_PARSE:
	case OP_BIND:
	case OP_EXECUTE:
		report(t, p, 0, -1, sqlstate, now_ns, true);
		break;
	default:
		break;
	}
	pop(t);
	skip_to_sync(t);
}

/* The settings that change how statement text is read. */
static int on_parameter_status(struct track *t, const uint8_t *body, size_t len)
{
	struct pg_reader r;
	const char *name, *value;

	pg_reader_init(&r, body, len);
	name = pg_read_cstr(&r, NULL);
	value = pg_read_cstr(&r, NULL);
	if (!value) {
		t->error = "malformed ParameterStatus from the server";
		return -1;
	}
	if (strcmp(name, "standard_conforming_strings") == 0) {
		t->settings.standard_conforming_strings =
			strcmp(value, "on") == 0 ? SQL_SCS_ON : SQL_SCS_OFF;
	} else if (strcmp(name, "client_encoding") == 0) {
		char *copy = strdup(value);

		if (!copy) {
			t->error = "out of memory";
			return -1;
		}
		free(t->client_encoding);
		t->client_encoding = copy;
		t->settings.client_encoding = copy;
	}
	return 0;
}

int track_backend(struct track *t, const uint8_t *msg, size_t have, size_t total, uint64_t now_ns)
{
	struct track_pending *p = head(t);
	const uint8_t *body = msg + PG_MSG_HEADER_LEN;
	size_t body_len = have - PG_MSG_HEADER_LEN;
	struct pg_error_fields err;

	if (p)
		p->server_bytes += total;
	switch (msg[0]) {
	case 'Z':
		if (p && (p->op == OP_SYNC || p->op == OP_QUERY || p->op == OP_FUNCTION))
			pop(t);
		return 0;
	case 'E':
		if (pg_error_parse(body, body_len, &err) < 0) {
			t->error = "malformed ErrorResponse from the server";
			return -1;
		}
		if (p)
			on_error(t, p, err.sqlstate, now_ns);
		return 0;
	case 'C':
		if (p) {
			const uint8_t *nul = memchr(body, '\0', body_len);

			on_complete(t, p, nul ? pg_command_rows((const char *)body, (size_t)(nul - body)) : -1,
				    now_ns);
		}
		return 0;
	case 'I':	/* EmptyQueryResponse */
	case 's':	/* PortalSuspended */
		if (p && p->op == OP_EXECUTE) {
			report(t, p, 0, -1, NULL, now_ns, true);
			pop(t);
		}
		return 0;
	case 'D':
		if (p)
			p->data_rows++;
		return 0;
	case 'V':	/* FunctionCallResponse */
		if (p && p->op == OP_FUNCTION)
			function_done(t, p, NULL, now_ns);
		return 0;
	case 'S':
		return on_parameter_status(t, body, body_len);
	case '1':
		if (p && p->op == OP_PARSE)
			pop(t);
		return 0;
	case '2':
		if (p && p->op == OP_BIND)
			pop(t);
		return 0;
	case '3':
		if (p && p->op == OP_CLOSE)
			pop(t);
		return 0;
	case 'T':
	case 'n':
		if (p && p->op == OP_DESCRIBE)
			pop(t);
		return 0;
	default:	/* notices, notifications, parameters, COPY, auth */
		return 0;
	}
}

size_t track_frontend_hold(uint8_t type, size_t total)
{
	switch (type) {
	case 'Q':
	case 'P':
	case 'F':	/* whole: refused while the spool is full, it is replaced */
		return total;
	case 'B':
	case 'E':
	case 'C':
		return total < TRACK_NAME_HOLD ? total : TRACK_NAME_HOLD;
	default:
		return PG_MSG_HEADER_LEN;
	}
}

size_t track_backend_hold(uint8_t type, size_t total)
{
	switch (type) {
	case 'C':
	case 'E':
	case 'Z':
	case 'S':	/* ParameterStatus: how text is read */
		return total;
	default:
		return PG_MSG_HEADER_LEN;
	}
}

void track_init(struct track *t, track_report_fn *report_fn, void *ctx)
{
	memset(t, 0, sizeof(*t));
	t->report = report_fn;
	t->ctx = ctx;
	t->max_pending = TRACK_MAX_PENDING;
	t->max_names = TRACK_MAX_NAMES;
}

void track_abandon(struct track *t, uint64_t now_ns)
{
	while (head(t)) {
		struct track_pending *p = head(t);

		if (p->op == OP_EXECUTE)
			report(t, p, 0, -1, NULL, now_ns, false);
		else if (p->op == OP_QUERY && p->next_stmt < query_statements(p))
			report(t, p, p->next_stmt, -1, NULL, now_ns, false);
		pop(t);
	}
}

void track_release(struct track *t)
{
	text_unref(t->denied_text);
	free(t->denied_rule);
	t->denied_text = NULL;
	t->denied_rule = NULL;
	while (head(t))
		pop(t);
	free(t->pending);
	names_free(t->statements, t->n_buckets);
	names_free(t->portals, t->n_buckets);
	free(t->client_encoding);
	t->client_encoding = NULL;
	t->settings.client_encoding = NULL;
	t->pending = NULL;
	t->statements = t->portals = NULL;
	t->count = t->cap = 0;
}

const struct sql_statement *track_result_statement(const struct track_result *r)
{
	if (!r->text || !r->text->parse.ok || r->index >= r->text->parse.n_stmts)
		return NULL;
	return &r->text->parse.stmts[r->index];
}

const char *track_verdict_name(enum track_verdict v)
{
	switch (v) {
	case TRACK_DENY:
		return "deny";
	case TRACK_AUDIT:
		return "audit";
	default:
		return "allow";
	}
}

static struct track_pending *last(const struct track *t)
{
	return t->count ? &t->pending[(t->head + t->count - 1) % t->cap] : NULL;
}

const struct track_text *track_last_text(const struct track *t)
{
	const struct track_pending *p = last(t);

	return p ? p->text : NULL;
}

int track_set_verdict(struct track *t, enum track_verdict v, const char *rule)
{
	struct track_pending *p = last(t);

	if (!p)
		return 0;
	p->verdict = v;
	free(p->rule);
	p->rule = rule ? strdup(rule) : NULL;
	if (rule && !p->rule) {
		t->error = "out of memory";
		return -1;
	}
	return 0;
}

int track_deny_extended(struct track *t, const char *rule)
{
	struct track_pending *p = last(t);

	if (!p || (p->op != OP_PARSE && p->op != OP_BIND && p->op != OP_EXECUTE)) {
		t->error = "internal: no Parse, Bind or Execute to deny";
		return -1;
	}
	/* The name the Parse bound is not on the server: unbind it. The
	 * statement it replaced there is gone too, as a failed Parse would
	 * leave it only for the unnamed one; dropping the binding errs on the
	 * side of "does not exist". (A denied Bind's portal name keeps the
	 * text it now points at: only this session's reports read it.) */
	for (size_t i = 0; p->op == OP_PARSE && i < t->n_buckets; i++) {
		struct track_name **slot = &t->statements[i];

		while (*slot) {
			if ((*slot)->text == p->text) {
				struct track_name *gone = *slot;

				*slot = gone->next;
				text_unref(gone->text);
				free(gone);
				t->n_names--;
			} else {
				slot = &(*slot)->next;
			}
		}
	}
	text_unref(t->denied_text);
	free(t->denied_rule);
	t->denied_text = text_ref(p->text);
	t->denied_rule = rule ? strdup(rule) : NULL;
	t->count--;		/* unpush: it never reaches the server */
	free(p->rule);
	text_unref(p->text);
	t->discarding = true;
	return 0;
}

int track_denied_sync(struct track *t, uint64_t now_ns)
{
	struct track_pending *p = push(t, OP_QUERY, t->denied_text, now_ns, 0);

	t->discarding = false;
	if (!p)
		return -1;
	p->verdict = TRACK_DENY;
	p->rule = t->denied_rule;
	t->denied_rule = NULL;
	text_unref(t->denied_text);
	t->denied_text = NULL;
	return 0;
}

bool track_head_denied(const struct track *t)
{
	return t->count && t->pending[t->head].verdict == TRACK_DENY;
}

const struct track_text *track_prepared(struct track *t, const char *name)
{
	struct track_name *n = name_find(t, NAME_STATEMENT, name);

	return n ? n->text : NULL;
}
