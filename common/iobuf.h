/*
 * Fixed-size I/O buffers recycled through a free list owned by one thread
 * (an event loop), so forwarding allocates nothing per message and an idle
 * connection holds no buffer at all.
 */
#ifndef DBWARD_COMMON_IOBUF_H
#define DBWARD_COMMON_IOBUF_H

#include <stddef.h>
#include <stdint.h>

#define IOBUF_SIZE (16 * 1024)

struct iobuf {
	struct iobuf *next_free;
	size_t start;		/* first byte not yet consumed */
	size_t end;		/* one past the last byte filled */
	uint8_t data[IOBUF_SIZE];
};

struct iobuf_pool {
	struct iobuf *free;
	size_t n_free;
	size_t max_free;	/* beyond this, released buffers are freed */
};

void iobuf_pool_init(struct iobuf_pool *pool, size_t max_free);
void iobuf_pool_release_all(struct iobuf_pool *pool);

/* An empty buffer, or NULL when memory is exhausted. */
struct iobuf *iobuf_get(struct iobuf_pool *pool);
/* Returns @buf (may be NULL) to the pool. */
void iobuf_put(struct iobuf_pool *pool, struct iobuf *buf);

static inline size_t iobuf_len(const struct iobuf *b)
{
	return b ? b->end - b->start : 0;
}

static inline size_t iobuf_room(const struct iobuf *b)
{
	return IOBUF_SIZE - b->end;
}

#endif
