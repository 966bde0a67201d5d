#include "sql_cache.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agent/sql_shape.h"

/* What an entry is keyed by. */
enum entry_kind {
	ENTRY_TEXT,			/* the exact text */
	ENTRY_SHAPE,			/* a shape (sql_shape.h): texts differing in literals */
};

/*
 * One remembered classification. Entries sit on a hash chain and on the
 * LRU list (head: most recently used). The result is a packed copy
 * (sql_parse_copy): one allocation, copied out again on each hit. A shape
 * entry also keeps where each statement lies, in tokens.
 */
struct cache_entry {
	struct cache_entry *chain;
	struct cache_entry *newer, *older;
	uint64_t hash;
	size_t bytes;			/* all this entry costs, for max_bytes */
	struct sql_parse result;
	struct sql_shape_span *spans;	/* ENTRY_SHAPE: result.n_stmts, after key */
	size_t len;
	uint8_t kind;			/* enum entry_kind */
	uint8_t scs;			/* enum sql_scs */
	bool ascii_safe;		/* sql_encoding_is_ascii_safe(client_encoding) */
	_Alignas(struct sql_shape_span) uint8_t key[];	/* len bytes, then spans */
};

/* Written by the owning thread only, read by anyone (sql_cache_totals). */
struct cache_counters {
	_Atomic uint64_t hits, shape_hits, misses, bypasses, evictions, entries, bytes;
};

struct sql_cache {
	struct sql_cache_limits limits;
	uint64_t seed;
	struct cache_entry **buckets;
	size_t mask;			/* buckets - 1 */
	struct cache_entry *newest, *oldest;
	size_t n_entries, n_bytes;
	struct cache_counters counters;
	struct sql_shape shape;		/* scratch: the shape of the text at hand */
	char *text;			/* scratch: that text, NUL-terminated */
	/* Hashes of texts lately known by their shape (direct-mapped, lossy):
	 * one seen twice is kept under its own bytes too. */
	uint64_t *seen;
	struct sql_cache *reg_next, *reg_prev;	/* thread caches: the registry */
};

/* ---- counters ----------------------------------------------------------------- */

/* A single writer: a relaxed load and store, no locked instruction. */
static void counter_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static void counter_set(_Atomic uint64_t *c, uint64_t v)
{
	atomic_store_explicit(c, v, memory_order_relaxed);
}

static uint64_t counter_get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

/* ---- hashing ------------------------------------------------------------------- */

/* 8 bytes a step, then a final mix (the murmur3 finalizer). Not a
 * cryptographic hash: the seed only makes chosen bucket collisions harder;
 * a collision costs a compare, never a wrong result. */
static uint64_t text_hash(uint64_t seed, const char *text, size_t len)
{
	uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull), w;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		memcpy(&w, text + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, text + i, len - i);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static uint64_t hash_of(const struct sql_cache *c, const char *text, size_t len)
{
	return c->limits.hash ? c->limits.hash(text, len) : text_hash(c->seed, text, len);
}

/* ---- the cache ------------------------------------------------------------------ */

struct sql_cache *sql_cache_new(const struct sql_cache_limits *limits)
{
	struct sql_cache *c = calloc(1, sizeof(*c));
	size_t n_buckets = 16;

	if (!c)
		return NULL;
	if (limits)
		c->limits = *limits;
	if (!c->limits.max_entries)
		c->limits.max_entries = SQL_CACHE_MAX_ENTRIES;
	if (!c->limits.max_bytes)
		c->limits.max_bytes = SQL_CACHE_MAX_BYTES;
	if (!c->limits.max_text)
		c->limits.max_text = SQL_CACHE_MAX_TEXT;
	while (n_buckets < c->limits.max_entries && n_buckets < ((size_t)1 << 24))
		n_buckets *= 2;
	c->buckets = calloc(n_buckets, sizeof(*c->buckets));
	if (!c->buckets) {
		free(c);
		return NULL;
	}
	c->mask = n_buckets - 1;
	c->seen = calloc(n_buckets, sizeof(*c->seen));
	if (!c->seen) {
		free(c->buckets);
		free(c);
		return NULL;
	}
	if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
		c->seed = (uint64_t)(uintptr_t)c ^ 0x2545f4914f6cdd1dull;
	return c;
}

static void lru_unlink(struct sql_cache *c, struct cache_entry *e)
{
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void lru_push(struct sql_cache *c, struct cache_entry *e)
{
	e->older = c->newest;
	e->newer = NULL;
	if (c->newest)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
}

static void entry_free(struct cache_entry *e)
{
	sql_parse_free(&e->result);
	free(e);
}

static void publish_size(struct sql_cache *c)
{
	counter_set(&c->counters.entries, c->n_entries);
	counter_set(&c->counters.bytes, c->n_bytes);
}

/* Removes the least recently used entry. */
static void evict_oldest(struct sql_cache *c)
{
	struct cache_entry *e = c->oldest, **p;

	for (p = &c->buckets[e->hash & c->mask]; *p != e; p = &(*p)->chain)
		;
	*p = e->chain;
	lru_unlink(c, e);
	c->n_entries--;
	c->n_bytes -= e->bytes;
	counter_add(&c->counters.evictions, 1);
	entry_free(e);
}

void sql_cache_free(struct sql_cache *c)
{
	if (!c)
		return;
	while (c->oldest)
		evict_oldest(c);
	sql_shape_free(&c->shape);
	free(c->text);
	free(c->seen);
	free(c->buckets);
	free(c);
}

/* What an entry is looked up by. */
struct entry_key {
	uint8_t kind;
	uint64_t hash;
	const void *bytes;
	size_t len;
	uint8_t scs;
	bool ascii_safe;
};

static struct cache_entry *lookup(struct sql_cache *c, const struct entry_key *k)
{
	for (struct cache_entry *e = c->buckets[k->hash & c->mask]; e; e = e->chain)
		if (e->hash == k->hash && e->kind == k->kind && e->len == k->len &&
		    e->scs == k->scs && e->ascii_safe == k->ascii_safe &&
		    memcmp(e->key, k->bytes, k->len) == 0)
			return e;
	return NULL;
}

/* Copies the entry's result out to @out; marks it most recently used. */
static int take(struct sql_cache *c, struct cache_entry *e, struct sql_parse *out)
{
	if (c->newest != e) {
		lru_unlink(c, e);
		lru_push(c, e);
	}
	return sql_parse_copy(&e->result, out);
}

/* Keeps a copy of @result (and of @spans, result->n_stmts of them, for a
 * shape) under @k; on failure the cache just does not remember it. */
static void insert(struct sql_cache *c, const struct entry_key *k, const struct sql_parse *result,
		   const struct sql_shape_span *spans)
{
	size_t key_room = (k->len + _Alignof(struct sql_shape_span) - 1) &
			  ~(_Alignof(struct sql_shape_span) - 1);
	size_t span_bytes = spans ? result->n_stmts * sizeof(*spans) : 0;
	struct cache_entry *e = malloc(sizeof(*e) + key_room + span_bytes);

	if (!e)
		return;
	if (sql_parse_copy(result, &e->result) < 0) {
		free(e);
		return;
	}
	e->hash = k->hash;
	e->kind = k->kind;
	e->len = k->len;
	e->scs = k->scs;
	e->ascii_safe = k->ascii_safe;
	memcpy(e->key, k->bytes, k->len);
	e->spans = spans ? (struct sql_shape_span *)(e->key + key_room) : NULL;
	if (spans)
		memcpy(e->spans, spans, span_bytes);
	e->bytes = malloc_usable_size(e) +
		   (e->result.block ? malloc_usable_size(e->result.block) : 0);
	if (e->bytes > c->limits.max_bytes) {
		entry_free(e);
		return;
	}
	while (c->n_entries && (c->n_entries + 1 > c->limits.max_entries ||
				c->n_bytes + e->bytes > c->limits.max_bytes))
		evict_oldest(c);
	e->chain = c->buckets[k->hash & c->mask];
	c->buckets[k->hash & c->mask] = e;
	lru_push(c, e);
	c->n_entries++;
	c->n_bytes += e->bytes;
}

/* ---- the shape tier ---------------------------------------------------------- */

/* Whether a text of hash @hash was known by its shape before; notes it. */
static bool seen_before(struct sql_cache *c, uint64_t hash)
{
	uint64_t *slot = &c->seen[hash & c->mask];

	if (*slot == hash)
		return true;
	*slot = hash;
	return false;
}

/* @len bytes of @text, NUL-terminated, in the cache's scratch buffer. */
static const char *scratch_text(struct sql_cache *c, const char *text, size_t len)
{
	if (!c->text && !(c->text = malloc(c->limits.max_text + 1)))
		return NULL;
	memcpy(c->text, text, len);
	c->text[len] = '\0';
	return c->text;
}

/*
 * Parses @text, learning its shape when the parse proves it may stand for
 * every text of that shape (sql_shape_learnable).
 */
static int parse_and_learn(struct sql_cache *c, const char *text, size_t len,
			   const struct sql_settings *settings, const struct entry_key *k,
			   struct sql_parse *out)
{
	struct sql_constants constants = { 0 };
	struct sql_shape_span *spans = NULL;
	int err;

	err = sql_parse_constants(text, len, settings, out, &constants);
	if (err || !out->ok)
		goto out;
	spans = malloc((out->n_stmts ? out->n_stmts : 1) * sizeof(*spans));
	if (spans && sql_shape_learnable(&c->shape, out, &constants, spans))
		insert(c, k, out, spans);
out:
	free(spans);
	sql_constants_free(&constants);
	return err;
}

/*
 * Classifies a text the exact-text tier did not know: from an entry of
 * its shape when there is one, else by parsing it. Returns as sql_parse.
 */
static int parse_by_shape(struct sql_cache *c, const char *text, size_t len,
			  const struct sql_settings *settings, uint8_t scs, bool ascii_safe,
			  struct sql_parse *out, bool *shape_hit)
{
	const char *z = scratch_text(c, text, len);
	struct entry_key k = { .kind = ENTRY_SHAPE, .scs = scs, .ascii_safe = ascii_safe };
	struct cache_entry *e;
	int err;

	if (!z)
		return -ENOMEM;
	err = sql_shape_scan(z, len, scs == SQL_SCS_ON, &c->shape);
	if (err == -ENOMEM)
		return err;
	if (err || !c->shape.n_literals) {
		counter_add(&c->counters.misses, 1);
		return sql_parse(text, len, settings, out);
	}
	k.bytes = c->shape.key;
	k.len = c->shape.key_len;
	k.hash = hash_of(c, (const char *)k.bytes, k.len);
	e = lookup(c, &k);
	if (!e) {
		counter_add(&c->counters.misses, 1);
		return parse_and_learn(c, text, len, settings, &k, out);
	}
	counter_add(&c->counters.shape_hits, 1);
	*shape_hit = true;
	err = take(c, e, out);
	if (!err)
		sql_shape_place(&c->shape, e->spans, out);
	return err;
}

int sql_cache_parse(struct sql_cache *c, const char *text, size_t len,
		    const struct sql_settings *settings, struct sql_parse *out)
{
	uint8_t scs = (uint8_t)(settings ? settings->standard_conforming_strings : SQL_SCS_ON);
	bool ascii_safe = sql_encoding_is_ascii_safe(settings ? settings->client_encoding : NULL);
	struct entry_key k = { .kind = ENTRY_TEXT, .bytes = text, .len = len, .scs = scs,
			       .ascii_safe = ascii_safe };
	bool shape_hit = false;
	struct cache_entry *e;
	int err;

	if (!c)
		return sql_parse(text, len, settings, out);
	if (len > c->limits.max_text) {
		counter_add(&c->counters.bypasses, 1);
		return sql_parse(text, len, settings, out);
	}
	k.hash = hash_of(c, text, len);
	e = lookup(c, &k);
	if (e) {
		counter_add(&c->counters.hits, 1);
		return take(c, e, out);
	}
	/* Text the scanner must not see, or may read two ways, skips shapes.
	 * A text known by its shape is kept under its own bytes only once it
	 * repeats: unique texts (new literals each time) do not churn the
	 * cache, and a repeated one costs a lookup from its third time. */
	if (scs != SQL_SCS_UNKNOWN && sql_precheck(text, len, settings) == SQL_FAIL_NONE) {
		err = parse_by_shape(c, text, len, settings, scs, ascii_safe, out, &shape_hit);
	} else {
		counter_add(&c->counters.misses, 1);
		err = sql_parse(text, len, settings, out);
	}
	if (!err && (!shape_hit || seen_before(c, k.hash)))
		insert(c, &k, out, NULL);
	publish_size(c);
	return err;
}

void sql_cache_stats(const struct sql_cache *c, struct sql_cache_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!c)
		return;
	out->hits = counter_get(&c->counters.hits);
	out->shape_hits = counter_get(&c->counters.shape_hits);
	out->misses = counter_get(&c->counters.misses);
	out->bypasses = counter_get(&c->counters.bypasses);
	out->evictions = counter_get(&c->counters.evictions);
	out->entries = counter_get(&c->counters.entries);
	out->bytes = counter_get(&c->counters.bytes);
}

/* ---- one cache per thread -------------------------------------------------------- */

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static bool key_ok;
static __thread struct sql_cache *thread_cache;

/* Every thread's cache, for the totals; and what gone threads counted. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sql_cache *registry;
static struct sql_cache_stats retired;

static void registry_remove(struct sql_cache *c)
{
	struct sql_cache_stats s;

	pthread_mutex_lock(&registry_lock);
	if (c->reg_prev)
		c->reg_prev->reg_next = c->reg_next;
	else
		registry = c->reg_next;
	if (c->reg_next)
		c->reg_next->reg_prev = c->reg_prev;
	sql_cache_stats(c, &s);
	retired.hits += s.hits;
	retired.shape_hits += s.shape_hits;
	retired.misses += s.misses;
	retired.bypasses += s.bypasses;
	retired.evictions += s.evictions;
	pthread_mutex_unlock(&registry_lock);
}

static void thread_cache_destroy(void *arg)
{
	struct sql_cache *c = arg;

	registry_remove(c);
	sql_cache_free(c);
	thread_cache = NULL;
}

static void key_create(void)
{
	key_ok = pthread_key_create(&key, thread_cache_destroy) == 0;
}

struct sql_cache *sql_cache_thread(void)
{
	struct sql_cache *c = thread_cache;

	if (c)
		return c;
	pthread_once(&key_once, key_create);
	if (!key_ok || !(c = sql_cache_new(NULL)))
		return NULL;
	if (pthread_setspecific(key, c) != 0) {
		sql_cache_free(c);
		return NULL;
	}
	pthread_mutex_lock(&registry_lock);
	c->reg_next = registry;
	if (registry)
		registry->reg_prev = c;
	registry = c;
	pthread_mutex_unlock(&registry_lock);
	thread_cache = c;
	return c;
}

void sql_cache_thread_release(void)
{
	struct sql_cache *c = thread_cache;

	if (!c)
		return;
	pthread_setspecific(key, NULL);
	thread_cache_destroy(c);
}

void sql_cache_totals(struct sql_cache_stats *out)
{
	pthread_mutex_lock(&registry_lock);
	*out = retired;
	for (const struct sql_cache *c = registry; c; c = c->reg_next) {
		struct sql_cache_stats s;

		sql_cache_stats(c, &s);
		out->hits += s.hits;
		out->shape_hits += s.shape_hits;
		out->misses += s.misses;
		out->bypasses += s.bypasses;
		out->evictions += s.evictions;
		out->entries += s.entries;
		out->bytes += s.bytes;
	}
	pthread_mutex_unlock(&registry_lock);
}
