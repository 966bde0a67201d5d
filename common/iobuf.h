/*
 * I/O buffers recycled through a free list owned by one thread (an event
 * loop), so forwarding allocates nothing per message and an idle
 * connection holds no buffer at all. Standard buffers hold IOBUF_SIZE
 * bytes; a message that must be seen whole and is larger gets a buffer of
 * its own size (iobuf_grow), freed rather than pooled when drained.
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
	size_t cap;		/* bytes in data[] */
	uint8_t data[];
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

/* Moves the unconsumed bytes to the front, making room at the end. */
void iobuf_compact(struct iobuf *buf);

/*
 * Makes room for @need bytes past start: compacts, and when that is not
 * enough replaces *@buf with a larger buffer holding the same bytes.
 * Returns 0 or -ENOMEM (*@buf unchanged).
 */
int iobuf_reserve(struct iobuf_pool *pool, struct iobuf **buf, size_t need);

static inline size_t iobuf_len(const struct iobuf *b)
{
	return b ? b->end - b->start : 0;
}

static inline size_t iobuf_room(const struct iobuf *b)
{
	return b->cap - b->end;
}

#endif
