/*
 * A cache of classifications keyed by statement text: a statement seen
 * before costs a hash, a compare and a copy instead of a parse.
 *
 * Two tiers, each keyed with the two settings that change how text is read
 * (standard_conforming_strings, and whether the client encoding is
 * ASCII-safe), each confirming a hash match by comparing the whole key:
 *  - the exact text;
 *  - its shape (sql_shape.h): the scanner's tokens without the literals'
 *    values, learnt only from a parse that proves every literal is a mere
 *    constant, so "... WHERE aid = 7" is classified from "... = 42" at the
 *    cost of a scan. Statement locations are placed for the new text.
 * What is handed out is a copy
 * the caller owns (free it with sql_parse_free), equal field by field to
 * what sql_parse gives; eviction never touches a result in use. Policy is
 * not cached: only what the parser says of the text.
 *
 * A cache belongs to one thread at a time; sql_cache_thread gives each
 * thread (each worker's event loop) its own, so the hot path takes no lock.
 * docs/sql-classification.md describes the bounds and what is not cached.
 */
#ifndef DBWARD_AGENT_SQL_CACHE_H
#define DBWARD_AGENT_SQL_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "agent/sql.h"

#define SQL_CACHE_MAX_ENTRIES 4096
#define SQL_CACHE_MAX_BYTES ((size_t)8 << 20)	/* texts, results and bookkeeping */
#define SQL_CACHE_MAX_TEXT ((size_t)8 << 10)	/* longer texts are parsed every time */

typedef uint64_t sql_cache_hash_fn(const char *text, size_t len);

/* Zero fields take the defaults above. */
struct sql_cache_limits {
	size_t max_entries;
	size_t max_bytes;
	size_t max_text;
	/* Tests only: a hash of their own (collisions on purpose). NULL: a
	 * seeded 64-bit hash. */
	sql_cache_hash_fn *hash;
};

struct sql_cache_stats {
	uint64_t hits;		/* the exact text was known */
	uint64_t shape_hits;	/* a text of the same shape was (sql_shape.h) */
	uint64_t misses;	/* parsed, then kept (when it fitted) */
	uint64_t bypasses;	/* longer than max_text: parsed, not kept */
	uint64_t evictions;
	uint64_t entries;	/* now */
	uint64_t bytes;		/* now */
};

struct sql_cache;

/* @limits may be NULL. Returns NULL when out of memory. */
struct sql_cache *sql_cache_new(const struct sql_cache_limits *limits);
void sql_cache_free(struct sql_cache *c);

/*
 * sql_parse, through @c: same arguments, same return values, same result.
 * A NULL @c parses without caching. Errors (-ENOMEM, -EAGAIN, ...) are
 * never cached; unparsable text is (the error is part of the result).
 */
int sql_cache_parse(struct sql_cache *c, const char *text, size_t len,
		    const struct sql_settings *settings, struct sql_parse *out);

/* Counters of @c; safe to call from any thread while its owner works. */
void sql_cache_stats(const struct sql_cache *c, struct sql_cache_stats *out);

/*
 * The calling thread's cache, created on first use with the default
 * limits and freed when the thread exits; NULL when out of memory (callers
 * pass it to sql_cache_parse as is).
 */
struct sql_cache *sql_cache_thread(void);
/* Frees the calling thread's cache now (its counters stay in the totals). */
void sql_cache_thread_release(void);
/* Counters summed over every thread's cache, live or gone. */
void sql_cache_totals(struct sql_cache_stats *out);

#endif
