#include "pg_frame.h"

#include <errno.h>
#include <string.h>

#include "agent/pg_msg.h"

static int fail(struct pg_frame *f, const char *why)
{
	f->error = why;
	return -EPROTO;
}

/*
 * Puts @len bytes of @with where the @old bytes of the message at the
 * approved mark are, growing the buffer when needed.
 */
static int replace(struct pg_frame *f, struct iobuf_pool *pool, size_t old, const uint8_t *with,
		   size_t len)
{
	size_t tail = pg_frame_unscanned(f) - old;
	uint8_t *at;

	if (len > old && iobuf_reserve(pool, &f->buf, f->approved + len + tail) < 0)
		return -ENOMEM;
	at = f->buf->data + f->buf->start + f->approved;
	memmove(at + len, at + old, tail);
	memcpy(at, with, len);
	f->buf->end = f->buf->end - old + len;
	f->approved += len;
	return 0;
}

/* Removes @n bytes at @at (inside the unscanned part) from the buffer. */
static void cut(struct iobuf *b, uint8_t *at, size_t n)
{
	uint8_t *end = b->data + b->end;

	memmove(at, at + n, (size_t)(end - (at + n)));
	b->end -= n;
}

int pg_frame_scan(struct pg_frame *f, const struct pg_frame_ops *ops, void *ctx,
		  struct iobuf_pool *pool)
{
	while (f->buf && pg_frame_unscanned(f) > 0) {
		size_t unscanned = pg_frame_unscanned(f);
		size_t total, hold, new_total;
		uint8_t *msg;
		uint32_t len;

		if (f->pass_left) {
			size_t n = unscanned < f->pass_left ? unscanned : f->pass_left;

			f->approved += n;
			f->pass_left -= n;
			continue;
		}
		if (unscanned < PG_MSG_HEADER_LEN)
			return iobuf_reserve(pool, &f->buf, f->approved + PG_MSG_HEADER_LEN);

		msg = f->buf->data + f->buf->start + f->approved;
		len = pg_be32(msg + 1);
		if (!ops->type_valid(msg[0]))
			return fail(f, "unknown message type");
		if (len < 4)
			return fail(f, "invalid message length");
		total = (size_t)len + 1;
		if (total > f->max_total)
			return fail(f, "message too long");

		hold = ops->hold(ctx, msg[0], total);
		if (hold < PG_MSG_HEADER_LEN)
			hold = PG_MSG_HEADER_LEN;
		if (hold > total)
			hold = total;
		if (unscanned < hold) {
			/* Wait for the rest, with room for it in one piece. */
			return iobuf_reserve(pool, &f->buf, f->approved + hold);
		}

		new_total = total;
		switch (ops->on_message(ctx, msg, hold, total, &new_total)) {
		case PG_FRAME_FORWARD:
			if (new_total < total && hold == total) {
				cut(f->buf, msg + new_total, total - new_total);
				hold = total = new_total;
			}
			f->approved += hold;
			f->pass_left = total - hold;
			break;
		case PG_FRAME_DROP:
			if (hold != total)
				return fail(f, "internal: dropping a message not held whole");
			cut(f->buf, msg, total);
			break;
		case PG_FRAME_REPLACE:
			if (hold != total)
				return fail(f, "internal: replacing a message not held whole");
			if (replace(f, pool, total, f->replacement, f->replacement_len) < 0)
				return -ENOMEM;
			f->replacement = NULL;
			break;
		case PG_FRAME_ERROR:
			return fail(f, f->error ? f->error : "message refused");
		}
	}
	return 0;
}

void pg_frame_sent(struct pg_frame *f, size_t n, struct iobuf_pool *pool)
{
	f->buf->start += n;
	f->approved -= n;
	if (iobuf_len(f->buf) == 0) {
		iobuf_put(pool, f->buf);
		f->buf = NULL;
	}
}

void pg_frame_release(struct pg_frame *f, struct iobuf_pool *pool)
{
	iobuf_put(pool, f->buf);
	f->buf = NULL;
	f->approved = 0;
	f->pass_left = 0;
}
