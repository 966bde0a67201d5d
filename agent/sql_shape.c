#include "sql_shape.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "common/bytes.h"

/* libpg_query's per-thread copy of the setting (see sql.c). */
extern __thread bool standard_conforming_strings;

static bool is_literal(int32_t token)
{
	switch (token) {
	case PG_QUERY__TOKEN__ICONST:
	case PG_QUERY__TOKEN__FCONST:
	case PG_QUERY__TOKEN__SCONST:
	case PG_QUERY__TOKEN__BCONST:
	case PG_QUERY__TOKEN__XCONST:
		return true;
	default:
		return false;
	}
}

/* Unicode escapes: the value of the UESCAPE literal changes what the
 * identifier or string before it spells. */
static bool is_unicode_escape(int32_t token)
{
	return token == PG_QUERY__TOKEN__UIDENT || token == PG_QUERY__TOKEN__USCONST ||
	       token == PG_QUERY__TOKEN__UESCAPE;
}

static bool is_comment(int32_t token)
{
	return token == PG_QUERY__TOKEN__SQL_COMMENT || token == PG_QUERY__TOKEN__C_COMMENT;
}

static int key_put(struct sql_shape *s, const void *bytes, size_t n)
{
	int err = bytes_reserve(&s->key, &s->key_cap, s->key_len + n, 256);

	if (err < 0)
		return err;
	memcpy(s->key + s->key_len, bytes, n);
	s->key_len += n;
	return 0;
}

static int token_put(struct sql_shape *s, const char *text, const PgQuery__ScanToken *t)
{
	uint8_t number[2] = { (uint8_t)(t->token >> 8), (uint8_t)t->token };
	uint32_t len = (uint32_t)(t->end - t->start);
	int err;

	if (s->n_tokens == s->cap_tokens) {
		size_t cap = s->cap_tokens ? 2 * s->cap_tokens : 32;
		struct sql_shape_token *tokens = realloc(s->tokens, cap * sizeof(*tokens));

		if (!tokens)
			return -ENOMEM;
		s->tokens = tokens;
		s->cap_tokens = cap;
	}
	s->tokens[s->n_tokens++] = (struct sql_shape_token){ t->start, t->end, t->token };
	if ((err = key_put(s, number, sizeof(number))) < 0)
		return err;
	if (is_literal(t->token)) {
		s->n_literals++;
		return 0;
	}
	if ((err = key_put(s, &len, sizeof(len))) < 0)
		return err;
	return key_put(s, text + t->start, len);
}

/* The scanner's tokens, checked: in order, inside the text, numbers that
 * fit the key. */
static int tokens_take(struct sql_shape *s, const char *text, size_t len,
		       const PgQuery__ScanResult *scan)
{
	int32_t last_end = 0;
	int err;

	for (size_t i = 0; i < scan->n_tokens; i++) {
		const PgQuery__ScanToken *t = scan->tokens[i];

		if (t->start < last_end || t->end < t->start || (size_t)t->end > len ||
		    t->token <= 0 || t->token > 0xffff || is_unicode_escape(t->token))
			return -ENOENT;
		last_end = t->end;
		if (is_comment(t->token))
			continue;
		if ((err = token_put(s, text, t)) < 0)
			return err;
	}
	return 0;
}

/*
 * The unpacked scan lives in a bump arena on the stack: a dozen tokens
 * would otherwise be a dozen mallocs. What does not fit is malloc'ed.
 */
#define ARENA_BYTES 4096

struct arena {
	size_t used;
	_Alignas(max_align_t) uint8_t mem[ARENA_BYTES];
};

static void *arena_alloc(void *data, size_t size)
{
	struct arena *a = data;
	size_t need = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);

	if (need <= ARENA_BYTES - a->used) {
		a->used += need;
		return a->mem + a->used - need;
	}
	return malloc(size);
}

static void arena_free(void *data, void *ptr)
{
	struct arena *a = data;

	if ((uint8_t *)ptr < a->mem || (uint8_t *)ptr >= a->mem + ARENA_BYTES)
		free(ptr);
}

int sql_shape_scan(const char *text, size_t len, bool scs, struct sql_shape *shape)
{
	bool saved = standard_conforming_strings;
	PgQuery__ScanResult *scan = NULL;
	struct arena arena = { 0 };
	ProtobufCAllocator allocator = { arena_alloc, arena_free, &arena };
	PgQueryScanResult raw;
	int err;

	sql_shape_reset(shape);
	shape->text_len = len;
	standard_conforming_strings = scs;
	raw = pg_query_scan(text);
	standard_conforming_strings = saved;
	if (raw.error) {
		err = strcmp(raw.error->message, "out of memory") == 0 ? -ENOMEM : -ENOENT;
		goto out;
	}
	scan = pg_query__scan_result__unpack(&allocator, raw.pbuf.len, (const uint8_t *)raw.pbuf.data);
	if (!scan) {
		err = -ENOMEM;
		goto out;
	}
	err = tokens_take(shape, text, len, scan);
out:
	if (scan)
		pg_query__scan_result__free_unpacked(scan, &allocator);
	pg_query_free_scan_result(raw);
	if (err)
		sql_shape_reset(shape);
	return err;
}

void sql_shape_reset(struct sql_shape *shape)
{
	shape->key_len = 0;
	shape->n_tokens = 0;
	shape->n_literals = 0;
	shape->text_len = 0;
}

void sql_shape_free(struct sql_shape *shape)
{
	free(shape->key);
	free(shape->tokens);
	memset(shape, 0, sizeof(*shape));
}

/* ---- learning from one parse ---------------------------------------------------- */

static bool has_constant_at(const struct sql_constants *c, int32_t location)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->at[mid] < location)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->n && c->at[lo] == location;
}

/*
 * Every literal became a constant node and nothing else: the node starts
 * at the literal, or at a '-' just before it that the grammar folded in.
 */
static bool literals_are_constants(const struct sql_shape *s, const struct sql_constants *c)
{
	for (size_t i = 0; i < s->n_tokens; i++) {
		const struct sql_shape_token *t = &s->tokens[i];

		if (!is_literal(t->token) || has_constant_at(c, t->start))
			continue;
		if (i > 0 && s->tokens[i - 1].token == '-' && has_constant_at(c, s->tokens[i - 1].start))
			continue;
		return false;
	}
	return true;
}

/* The semicolon token starting at @at, or -1. */
static int32_t semicolon_at(const struct sql_shape *s, int32_t at)
{
	for (size_t i = 0; i < s->n_tokens; i++)
		if (s->tokens[i].start == at)
			return s->tokens[i].token == ';' ? (int32_t)i : -1;
	return -1;
}

/*
 * PostgreSQL's grammar starts the first statement at byte 0 and each other
 * one just after a semicolon, and ends each at a semicolon or at the end of
 * the text: spans that say so in tokens hold for every text of the shape.
 */
static bool span_of(const struct sql_shape *s, const struct sql_statement *st,
		    struct sql_shape_span *span)
{
	int64_t end = (int64_t)st->location + st->length;

	if (st->location < 0 || st->length < 0 || end > (int64_t)s->text_len)
		return false;
	span->after = st->location == 0 ? -1 : semicolon_at(s, st->location - 1);
	span->until = end == (int64_t)s->text_len ? -1 : semicolon_at(s, (int32_t)end);
	return (st->location == 0 || span->after >= 0) &&
	       (end == (int64_t)s->text_len || span->until >= 0);
}

bool sql_shape_learnable(const struct sql_shape *shape, const struct sql_parse *parse,
			 const struct sql_constants *constants, struct sql_shape_span *spans)
{
	if (!parse->ok || !shape->n_literals || !literals_are_constants(shape, constants))
		return false;
	for (size_t i = 0; i < parse->n_stmts; i++)
		if (!span_of(shape, &parse->stmts[i], &spans[i]))
			return false;
	return true;
}

void sql_shape_place(const struct sql_shape *shape, const struct sql_shape_span *spans,
		     struct sql_parse *parse)
{
	for (size_t i = 0; i < parse->n_stmts; i++) {
		int32_t start = spans[i].after < 0 ? 0 : shape->tokens[spans[i].after].start + 1;
		int32_t end = spans[i].until < 0 ? (int32_t)shape->text_len
						 : shape->tokens[spans[i].until].start;

		parse->stmts[i].location = start;
		parse->stmts[i].length = end - start;
	}
}
