#include "iobuf.h"

#include <stdlib.h>

void iobuf_pool_init(struct iobuf_pool *pool, size_t max_free)
{
	pool->free = NULL;
	pool->n_free = 0;
	pool->max_free = max_free;
}

void iobuf_pool_release_all(struct iobuf_pool *pool)
{
	while (pool->free) {
		struct iobuf *b = pool->free;

		pool->free = b->next_free;
		free(b);
	}
	pool->n_free = 0;
}

struct iobuf *iobuf_get(struct iobuf_pool *pool)
{
	struct iobuf *b = pool->free;

	if (b) {
		pool->free = b->next_free;
		pool->n_free--;
	} else {
		b = malloc(sizeof(*b));
		if (!b)
			return NULL;
	}
	b->next_free = NULL;
	b->start = 0;
	b->end = 0;
	return b;
}

void iobuf_put(struct iobuf_pool *pool, struct iobuf *buf)
{
	if (!buf)
		return;
	if (pool->n_free >= pool->max_free) {
		free(buf);
		return;
	}
	buf->next_free = pool->free;
	pool->free = buf;
	pool->n_free++;
}
