/*
 * Message framing of one direction of a PostgreSQL session, in place.
 *
 * Bytes read from one side sit in an iobuf; the scanner walks them message
 * by message and moves a mark, `approved`, past every byte that may be
 * sent on. Nothing is copied: sending takes the approved bytes straight
 * from the buffer. For each message the owner says how many of its bytes
 * it needs to see at once (hold): just the header for a DataRow, all of a
 * Query so that it can be judged before the server sees it. A message
 * larger than a standard buffer that must be seen whole gets a buffer of
 * its own size, never more than max_total.
 */
#ifndef DBWARD_AGENT_PG_FRAME_H
#define DBWARD_AGENT_PG_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/iobuf.h"

enum pg_frame_verdict {
	PG_FRAME_FORWARD,	/* send it on (possibly rewritten, shorter) */
	PG_FRAME_DROP,		/* remove it: only for a message held whole */
	PG_FRAME_REPLACE,	/* send f->replacement instead: held whole only */
	PG_FRAME_ERROR,		/* protocol violation: the owner closes */
};

struct pg_frame_ops {
	bool (*type_valid)(uint8_t type);
	/* Bytes of the message, header included, to hold before on_message:
	 * clamped to [PG_MSG_HEADER_LEN, total]. */
	size_t (*hold)(void *ctx, uint8_t type, size_t total);
	/*
	 * Sees the first @have bytes of a message of @total bytes. With
	 * have == total it may rewrite the message in place to a shorter one
	 * and say so in *new_total (preset to total).
	 */
	enum pg_frame_verdict (*on_message)(void *ctx, uint8_t *msg, size_t have, size_t total,
					    size_t *new_total);
};

struct pg_frame {
	struct iobuf *buf;	/* read from this side, not yet sent */
	size_t approved;	/* bytes at buf->start cleared to send */
	size_t pass_left;	/* of the current message, still to pass unseen */
	size_t max_total;	/* largest message accepted, header included */
	const char *error;	/* why the scan failed (static text) */
	/* Set by on_message with PG_FRAME_REPLACE: the bytes to send instead
	 * (one or more whole messages), copied before the scan goes on. */
	const uint8_t *replacement;
	size_t replacement_len;
};

/*
 * Scans what has arrived. Returns 0 (more bytes may be needed), -EPROTO
 * (f->error says why: bad length, unknown type, or the owner refused) or
 * -ENOMEM.
 */
int pg_frame_scan(struct pg_frame *f, const struct pg_frame_ops *ops, void *ctx,
		  struct iobuf_pool *pool);

/* Bytes read but not yet scanned. */
static inline size_t pg_frame_unscanned(const struct pg_frame *f)
{
	return iobuf_len(f->buf) - f->approved;
}

/* After @n approved bytes were sent. Releases an emptied buffer. */
void pg_frame_sent(struct pg_frame *f, size_t n, struct iobuf_pool *pool);

/* Drops every buffered byte (the connection is ending). */
void pg_frame_release(struct pg_frame *f, struct iobuf_pool *pool);

#endif
