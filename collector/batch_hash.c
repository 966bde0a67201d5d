#include "collector/batch_hash.h"

#include <pthread.h>
#include <stdlib.h>

struct hash_range {
	const struct store_event_in *events;
	struct event_hashes *out;
	size_t n;
};

static void *hash_range(void *arg)
{
	const struct hash_range *r = arg;
	struct origin_key_buf kb = { 0 };

	for (size_t i = 0; i < r->n; i++) {
		merkle_leaf_hash(r->events[i].raw, r->events[i].len, r->out[i].leaf);
		event_hash(r->events[i].raw, r->events[i].len, r->out[i].chain);
		r->out[i].has_origin =
			origin_key_of_event(r->events[i].ev, &kb, r->out[i].origin) == 0;
	}
	free(kb.data);
	return NULL;
}

void batch_hash(const struct store_event_in *events, size_t n, struct event_hashes *out)
{
	size_t half = n / 2;
	struct hash_range first = { events, out, half };
	struct hash_range second = { events + half, out + half, n - half };
	pthread_t helper;

	/* No thread: hash it all here (the result is the same). */
	if (n < BATCH_HASH_SPLIT || pthread_create(&helper, NULL, hash_range, &second) != 0) {
		first.n = n;
		hash_range(&first);
		return;
	}
	hash_range(&first);
	pthread_join(helper, NULL);
}
