/* In-place framing: what is approved, held, dropped, rewritten, refused. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "agent/pg_frame.h"
#include "agent/pg_msg.h"

struct seen {
	uint8_t types[64];
	size_t haves[64];
	size_t totals[64];
	size_t n;
	uint8_t drop_type;	/* drop messages of this type */
	uint8_t replace_type;	/* replace messages of this type with .with */
	const uint8_t *with;
	size_t with_len;
	struct pg_frame *frame;
	bool shrink_q;		/* rewrite each Q to drop its last text byte */
};

static size_t hold_q_whole(void *ctx, uint8_t type, size_t total)
{
	(void)ctx;
	return type == 'Q' ? total : PG_MSG_HEADER_LEN;
}

static enum pg_frame_verdict record(void *ctx, uint8_t *msg, size_t have, size_t total,
				    size_t *new_total)
{
	struct seen *s = ctx;

	s->types[s->n] = msg[0];
	s->haves[s->n] = have;
	s->totals[s->n] = total;
	s->n++;
	if (msg[0] == s->drop_type)
		return PG_FRAME_DROP;
	if (msg[0] == s->replace_type) {
		s->frame->replacement = s->with;
		s->frame->replacement_len = s->with_len;
		return PG_FRAME_REPLACE;
	}
	if (msg[0] == 'Q' && s->shrink_q && have == total) {
		/* "Q len text\0" → one text byte fewer, still NUL-terminated */
		msg[total - 2] = '\0';
		msg[4]--;
		*new_total = total - 1;
	}
	return PG_FRAME_FORWARD;
}

static const struct pg_frame_ops ops = {
	.type_valid = pg_msg_frontend_type_valid,
	.hold = hold_q_whole,
	.on_message = record,
};

static size_t msg(uint8_t *p, char type, const char *body, size_t body_len)
{
	uint32_t len = (uint32_t)body_len + 4;

	p[0] = (uint8_t)type;
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	memcpy(p + 5, body, body_len);
	return 5 + body_len;
}

/* Feeds @n bytes in pieces of @step, scanning after each; returns the approved stream. */
static size_t feed(struct pg_frame *f, struct seen *s, const uint8_t *in, size_t n, size_t step,
		   uint8_t *out, struct iobuf_pool *pool, int *err)
{
	size_t out_len = 0;

	*err = 0;
	for (size_t at = 0; at < n && !*err; at += step) {
		size_t piece = n - at < step ? n - at : step;

		if (!f->buf)
			f->buf = iobuf_get(pool);
		cr_assert_geq(iobuf_room(f->buf), piece);
		memcpy(f->buf->data + f->buf->end, in + at, piece);
		f->buf->end += piece;
		*err = pg_frame_scan(f, &ops, s, pool);
		if (f->approved) {	/* "send" what is approved */
			memcpy(out + out_len, f->buf->data + f->buf->start, f->approved);
			out_len += f->approved;
			pg_frame_sent(f, f->approved, pool);
		}
	}
	return out_len;
}

Test(pg_frame, passes_a_stream_fed_byte_by_byte_unchanged)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = 1 << 20 };
	struct seen s = { 0 };
	uint8_t in[256], out[256];
	size_t n = 0;
	int err;

	iobuf_pool_init(&pool, 4);
	n += msg(in + n, 'Q', "select 1\0", 9);
	n += msg(in + n, 'P', "\0select $1\0\0\0", 13);
	n += msg(in + n, 'S', "", 0);
	cr_assert_eq(feed(&f, &s, in, n, 1, out, &pool, &err), n);
	cr_assert_eq(err, 0);
	cr_assert_arr_eq(out, in, n);
	cr_assert_eq(s.n, 3);
	cr_assert_eq(s.types[0], 'Q');
	cr_assert_eq(s.haves[0], s.totals[0], "Query is held whole");
	cr_assert_eq(s.haves[1], PG_MSG_HEADER_LEN, "Parse: header only here");
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
}

Test(pg_frame, holds_a_query_larger_than_a_buffer_in_one_piece)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = 1 << 20 };
	struct seen s = { 0 };
	size_t body = 3 * IOBUF_SIZE;
	uint8_t *in = malloc(body + 64), *out = malloc(body + 64);
	char *text = malloc(body);
	size_t n;
	int err;

	iobuf_pool_init(&pool, 4);
	memset(text, 'x', body - 1);
	text[body - 1] = '\0';
	n = msg(in, 'Q', text, body);
	cr_assert_eq(feed(&f, &s, in, n, 4096, out, &pool, &err), n);
	cr_assert_eq(err, 0);
	cr_assert_eq(s.n, 1);
	cr_assert_eq(s.haves[0], n);
	cr_assert_arr_eq(out, in, n);
	cr_assert_null(f.buf, "the large buffer is released once sent");
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
	free(in);
	free(out);
	free(text);
}

Test(pg_frame, drops_a_held_message_and_keeps_the_rest)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = 1 << 20 };
	struct seen s = { .drop_type = 'Q' };
	uint8_t in[128], out[128], want[128];
	size_t n = 0, w;
	int err;

	iobuf_pool_init(&pool, 4);
	n += msg(in + n, 'Q', "drop table t\0", 13);
	w = msg(want, 'S', "", 0);
	memcpy(in + n, want, w);
	n += w;
	cr_assert_eq(feed(&f, &s, in, n, n, out, &pool, &err), w);
	cr_assert_arr_eq(out, want, w);
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
}

Test(pg_frame, sends_a_rewritten_message_with_its_new_length)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = 1 << 20 };
	struct seen s = { .shrink_q = true };
	uint8_t in[64], out[64], want[64];
	size_t n = msg(in, 'Q', "abc\0", 4), w = msg(want, 'Q', "ab\0", 3);
	int err;

	iobuf_pool_init(&pool, 4);
	n += msg(in + n, 'S', "", 0);
	w += msg(want + w, 'S', "", 0);
	cr_assert_eq(feed(&f, &s, in, n, 3, out, &pool, &err), w);
	cr_assert_arr_eq(out, want, w);
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
}

static void expect_refused(const uint8_t *in, size_t n, size_t max_total, const char *why)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = max_total };
	struct seen s = { 0 };
	uint8_t out[64];
	int err;

	iobuf_pool_init(&pool, 4);
	feed(&f, &s, in, n, n, out, &pool, &err);
	cr_assert_eq(err, -EPROTO);
	cr_assert_str_eq(f.error, why);
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
}

Test(pg_frame, refuses_a_length_below_four)
{
	static const uint8_t in[] = { 'Q', 0, 0, 0, 3, 'x' };

	expect_refused(in, sizeof(in), 1 << 20, "invalid message length");
}

Test(pg_frame, refuses_a_message_over_the_limit_before_it_arrives)
{
	static const uint8_t in[] = { 'Q', 0, 0x20, 0, 0 };	/* 2 MiB declared */

	expect_refused(in, sizeof(in), 1 << 20, "message too long");
}

Test(pg_frame, refuses_an_unknown_message_type)
{
	static const uint8_t in[] = { 'z', 0, 0, 0, 4 };

	expect_refused(in, sizeof(in), 1 << 20, "unknown message type");
}

Test(pg_frame, replaces_a_held_message_with_longer_bytes)
{
	struct iobuf_pool pool;
	struct pg_frame f = { .max_total = 1 << 20 };
	uint8_t with[64], in[64], out[128], want[128];
	size_t with_len = msg(with, 'Q', "select 'a much longer replacement'\0", 35);
	size_t n = msg(in, 'Q', "x\0", 2), w = 0;
	struct seen s = { .replace_type = 'Q', .with = with, .with_len = with_len, .frame = &f };
	int err;

	iobuf_pool_init(&pool, 4);
	n += msg(in + n, 'S', "", 0);
	memcpy(want, with, with_len);
	w = with_len + msg(want + with_len, 'S', "", 0);
	cr_assert_eq(feed(&f, &s, in, n, n, out, &pool, &err), w);
	cr_assert_eq(err, 0);
	cr_assert_arr_eq(out, want, w);
	pg_frame_release(&f, &pool);
	iobuf_pool_release_all(&pool);
}
