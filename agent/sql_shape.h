/*
 * The shape of a statement text: its tokens as PostgreSQL's own scanner
 * reads them, with the value of every literal left out and comments and
 * white space dropped. "SELECT abalance FROM pgbench_accounts WHERE aid =
 * 42" and "... = 97" have one shape, so sql_cache can classify the second
 * from what it learnt parsing the first.
 *
 * That is only sound when no literal's value changes the parse tree
 * anywhere but in the constant node it becomes: FLOAT(1) and FLOAT(30) are
 * different types, COPY t FROM 'file' keeps the file name outside any
 * constant, U&"..." UESCAPE '!' spells an identifier with a literal's help.
 * sql_shape_learnable proves it for one parse: every literal of the text
 * must sit where the tree holds a constant (sql_parse_constants). The
 * grammar sees only tokens, so two texts with one shape then parse to
 * trees that differ only in those constants' values and in locations; the
 * classification reads neither, and pg_query's fingerprint ignores both.
 * Unicode-escaped identifiers and strings never get a shape at all.
 */
#ifndef DBWARD_AGENT_SQL_SHAPE_H
#define DBWARD_AGENT_SQL_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/sql.h"

struct sql_shape_token {
	int32_t start, end;	/* byte offsets in the text */
	int32_t token;		/* PgQuery__Token */
};

struct sql_shape {
	/* The key: per token its number, then (not for literals) its text. */
	uint8_t *key;
	size_t key_len, key_cap;
	/* Every token but comments, in order. */
	struct sql_shape_token *tokens;
	size_t n_tokens, cap_tokens;
	size_t n_literals;
	size_t text_len;
};

/* Where one statement of a text lies, in tokens: it starts after the
 * semicolon token @after (or at byte 0 when -1) and ends at the semicolon
 * token @until (or at the end of the text when -1). */
struct sql_shape_span {
	int32_t after, until;
};

/*
 * Scans @len bytes of NUL-terminated @text with standard_conforming_strings
 * @scs into @shape (zeroed, or reused after sql_shape_reset). Returns 0,
 * -ENOENT when the text has no shape (the scanner refused it, or it uses
 * Unicode escapes), or -ENOMEM. The caller has made sql_precheck's checks.
 * Free @shape with sql_shape_free whatever the result.
 */
int sql_shape_scan(const char *text, size_t len, bool scs, struct sql_shape *shape);
void sql_shape_reset(struct sql_shape *shape);
void sql_shape_free(struct sql_shape *shape);

/*
 * Whether @parse (ok, of the text @shape was scanned from, with
 * @constants from the same sql_parse_constants) may stand for every text
 * of this shape; if so, fills @spans (parse->n_stmts of them) with where
 * each statement lies.
 */
bool sql_shape_learnable(const struct sql_shape *shape, const struct sql_parse *parse,
			 const struct sql_constants *constants, struct sql_shape_span *spans);

/* Sets each statement's location and length in @parse from @spans, for
 * the text @shape was scanned from. */
void sql_shape_place(const struct sql_shape *shape, const struct sql_shape_span *spans,
		     struct sql_parse *parse);

#endif
