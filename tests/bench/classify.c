/*
 * Statement classification cost: nanoseconds per statement for a fresh
 * parse (sql_parse, what every statement cost before the cache), for a
 * cache hit (sql_cache_parse on text seen before) and for a hit by shape
 * (text not seen before, but one differing only in its literals was: what
 * pgbench's simple protocol sends), each including the sql_parse_free the
 * caller does afterwards.
 *
 *   bench-classify [--quick]
 *
 * Prints one line per figure: "classify uncached select-only: 9800 ns/stmt".
 * Each figure is the best of a few rounds of about half a second (a
 * twentieth with --quick): the least disturbed run on a busy machine.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/sql.h"
#include "agent/sql_cache.h"

#define ROUNDS 3

struct bench_stmt {
	const char *name;
	char *sql;
	size_t len;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* About 2 KB: a report query with a long IN list, as ORMs write them. Kept
 * under the 2048 bytes above which the parser moves to a helper thread. */
static char *two_kb_statement(void)
{
	const size_t target = 2000;
	char *s = malloc(target + 64);
	size_t at;

	if (!s)
		return NULL;
	at = (size_t)sprintf(s, "SELECT o.id, o.customer_id, o.total, o.created_at FROM orders o "
				"WHERE o.status = 'open' AND o.id IN (");
	for (int i = 1; at < target - 40; i++)
		at += (size_t)sprintf(s + at, "%s%d", i > 1 ? ", " : "", 100000 + i * 7);
	sprintf(s + at, ") ORDER BY o.created_at DESC LIMIT 100");
	return s;
}

#define VARIANTS 256

static bool is_word_char(char c)
{
	return c == '_' || c == '$' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}

/* @sql with every number (not a $n, not inside a name) changed by @k:
 * same shape, new text. */
static char *variant(const char *sql, unsigned k)
{
	size_t len = strlen(sql), at = 0;
	char *out = malloc(2 * len + 16);

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		if (sql[i] >= '0' && sql[i] <= '9' && (i == 0 || !is_word_char(sql[i - 1]))) {
			unsigned long v = strtoul(sql + i, NULL, 10);

			while (i < len && sql[i] >= '0' && sql[i] <= '9')
				i++;
			at += (size_t)sprintf(out + at, "%lu", (v * 7919 + k) % 1000003);
			continue;
		}
		out[at++] = sql[i++];
	}
	out[at] = '\0';
	return out;
}

struct shaped {
	struct sql_cache *cache;
	struct bench_stmt texts[VARIANTS];
	unsigned next;
};

typedef int classify_fn(void *ctx, const struct bench_stmt *st, struct sql_parse *out);

static int classify_fresh(void *ctx, const struct bench_stmt *st, struct sql_parse *out)
{
	(void)ctx;
	return sql_parse(st->sql, st->len, NULL, out);
}

static int classify_cached(void *ctx, const struct bench_stmt *st, struct sql_parse *out)
{
	return sql_cache_parse(ctx, st->sql, st->len, NULL, out);
}

/* Each call another text of @st's shape. */
static int classify_shaped(void *ctx, const struct bench_stmt *st, struct sql_parse *out)
{
	struct shaped *sh = ctx;
	const struct bench_stmt *v = &sh->texts[sh->next++ % VARIANTS];

	(void)st;
	return sql_cache_parse(sh->cache, v->sql, v->len, NULL, out);
}

/* Measures hits by shape for @st; -1 when a variant could not be made. */
static long measure_shaped(const struct bench_stmt *st, uint64_t round_ns);

/* Best ns per statement over ROUNDS rounds of about @round_ns each. */
static long measure(classify_fn *fn, void *ctx, const struct bench_stmt *st, uint64_t round_ns)
{
	struct sql_parse p;
	uint64_t best = UINT64_MAX, iters = 16;

	/* Calibrate: double until a batch takes a tenth of a round. */
	for (;;) {
		uint64_t t0 = now_ns();

		for (uint64_t i = 0; i < iters; i++) {
			if (fn(ctx, st, &p) != 0 || !p.ok)
				return -1;
			sql_parse_free(&p);
		}
		if (now_ns() - t0 >= round_ns / 10)
			break;
		iters *= 2;
	}
	iters *= 10;
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t t0 = now_ns(), ns;

		for (uint64_t i = 0; i < iters; i++) {
			fn(ctx, st, &p);
			sql_parse_free(&p);
		}
		ns = (now_ns() - t0) / iters;
		if (ns < best)
			best = ns;
	}
	return (long)best;
}

static long measure_shaped(const struct bench_stmt *st, uint64_t round_ns)
{
	/* A small cache: its table of recent texts (one slot per entry) then
	 * forgets each variant before it comes round again, so every lookup is
	 * a new text, as with pgbench's literals, never a repeat kept by text. */
	struct sql_cache_limits small = { .max_entries = 16 };
	struct shaped sh = { .cache = sql_cache_new(&small) };
	long ns = -1;
	unsigned made = 0;

	if (!sh.cache)
		return -1;
	for (; made < VARIANTS; made++) {
		sh.texts[made].sql = variant(st->sql, made);
		if (!sh.texts[made].sql)
			goto out;
		sh.texts[made].len = strlen(sh.texts[made].sql);
	}
	ns = measure(classify_shaped, &sh, st, round_ns);
out:
	for (unsigned i = 0; i < made; i++)
		free(sh.texts[i].sql);
	sql_cache_free(sh.cache);
	return ns;
}

int main(int argc, char **argv)
{
	struct bench_stmt stmts[] = {
		{ "select-only", "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;", 0 },
		{ "tpcb-update", "UPDATE pgbench_accounts SET abalance = abalance + -2840 WHERE aid = 48213;", 0 },
		{ "tpcb-select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", 0 },
		{ "tpcb-insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
				 "VALUES (7, 1, 48213, -2840, CURRENT_TIMESTAMP);", 0 },
		{ "join", "SELECT c.name, count(o.id) AS orders, sum(l.amount) AS spent "
			  "FROM customers c JOIN orders o ON o.customer_id = c.id "
			  "LEFT JOIN order_lines l ON l.order_id = o.id "
			  "WHERE c.region = $1 AND o.created_at >= now() - interval '30 days' "
			  "GROUP BY c.name HAVING sum(l.amount) > 100 ORDER BY spent DESC LIMIT 20", 0 },
		{ "2kb", NULL, 0 },
	};
	size_t n = sizeof(stmts) / sizeof(stmts[0]);
	uint64_t round_ns = 500000000u;
	struct sql_cache *cache;
	int status = 0;

	if (argc == 2 && strcmp(argv[1], "--quick") == 0) {
		round_ns /= 20;
	} else if (argc != 1) {
		fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
		return 2;
	}
	stmts[n - 1].sql = two_kb_statement();
	if (!stmts[n - 1].sql)
		return 1;
	for (size_t i = 0; i < n; i++)
		stmts[i].len = strlen(stmts[i].sql);
	cache = sql_cache_new(NULL);
	if (!cache)
		return 1;

	for (size_t i = 0; i < n; i++) {
		long fresh = measure(classify_fresh, NULL, &stmts[i], round_ns);
		long hit = measure(classify_cached, cache, &stmts[i], round_ns);
		long shaped = measure_shaped(&stmts[i], round_ns);

		if (fresh < 0 || hit < 0 || shaped < 0) {
			fprintf(stderr, "classify %s: not classified\n", stmts[i].name);
			status = 1;
			continue;
		}
		printf("classify uncached %s: %ld ns/stmt\n", stmts[i].name, fresh);
		printf("classify cached %s: %ld ns/stmt\n", stmts[i].name, hit);
		printf("classify by shape %s: %ld ns/stmt\n", stmts[i].name, shaped);
		fflush(stdout);
	}
	sql_cache_free(cache);
	free(stmts[n - 1].sql);
	return status;
}
