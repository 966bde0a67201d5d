#include "iobuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
		b = malloc(sizeof(*b) + IOBUF_SIZE);
		if (!b)
			return NULL;
		b->cap = IOBUF_SIZE;
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
	if (buf->cap != IOBUF_SIZE || pool->n_free >= pool->max_free) {
		free(buf);
		return;
	}
	buf->next_free = pool->free;
	pool->free = buf;
	pool->n_free++;
}

void iobuf_compact(struct iobuf *buf)
{
	size_t len = iobuf_len(buf);

	if (!buf->start)
		return;
	memmove(buf->data, buf->data + buf->start, len);
	buf->start = 0;
	buf->end = len;
}

int iobuf_reserve(struct iobuf_pool *pool, struct iobuf **buf, size_t need)
{
	struct iobuf *old = *buf, *grown;
	size_t len = iobuf_len(old);

	if (old->cap - old->start >= need)
		return 0;
	if (old->cap >= need) {
		iobuf_compact(old);
		return 0;
	}
	grown = malloc(sizeof(*grown) + need);
	if (!grown)
		return -ENOMEM;
	grown->next_free = NULL;
	grown->cap = need;
	grown->start = 0;
	grown->end = len;
	memcpy(grown->data, old->data + old->start, len);
	iobuf_put(pool, old);
	*buf = grown;
	return 0;
}
