#include "collector/batch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"
#include "dbward/v1/audit.pb-c.h"

#define SHOWN_NAME_MAX 64

int batch_refuse(struct batch_result *out, const char *fmt, ...)
{
	va_list ap;

	out->ok = false;
	va_start(ap, fmt);
	vsnprintf(out->error, sizeof(out->error), fmt, ap);
	va_end(ap);
	return -1;
}

/* A name an agent sent, safe for logs and acks: printable ASCII, bounded. */
static void shown_name(const char *name, char out[SHOWN_NAME_MAX + 4])
{
	size_t i;

	for (i = 0; name[i] && i < SHOWN_NAME_MAX; i++)
		out[i] = name[i] >= 0x20 && name[i] < 0x7f ? name[i] : '?';
	strcpy(out + i, name[i] ? "..." : "");
}

/* --- counting before decoding ------------------------------------------------ */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return 0;
		}
	}
	return -EBADMSG;
}

static int skip_field(const uint8_t **p, const uint8_t *end, unsigned wire_type)
{
	uint64_t n;

	switch (wire_type) {
	case 0:
		return read_varint(p, end, &n);
	case 1:
		n = 8;
		break;
	case 2:
		if (read_varint(p, end, &n) < 0)
			return -EBADMSG;
		break;
	case 5:
		n = 4;
		break;
	default:
		return -EBADMSG;	/* groups: not in this schema */
	}
	if (n > (uint64_t)(end - *p))
		return -EBADMSG;
	*p += n;
	return 0;
}

/*
 * How many events a serialized Batch holds, without decoding it: tiny
 * events would otherwise make the decoder allocate many times the batch's
 * size before the limit could be checked. -EBADMSG if it is not protobuf,
 * -E2BIG past @max.
 */
static int count_events(const uint8_t *p, size_t len, size_t max, size_t *n)
{
	const uint8_t *end = p + len;
	uint64_t key;

	*n = 0;
	while (p < end) {
		if (read_varint(&p, end, &key) < 0 || (key >> 3) == 0)
			return -EBADMSG;
		if (skip_field(&p, end, key & 7) < 0)
			return -EBADMSG;
		if ((key >> 3) == 1 && ++*n > max)
			return -E2BIG;
	}
	return 0;
}

/* --- decoding and checking --------------------------------------------------- */

struct decoded {
	uint8_t *raw;			/* the decompressed Batch */
	size_t raw_len;
	ProtobufCBinaryData *bytes;	/* each event's bytes, inside raw */
	Dbward__V1__Event **events;
	struct wire_arena arena;	/* every event's memory */
	struct store_event_in *in;
	size_t n;
};

static void decoded_release(struct decoded *d)
{
	wire_arena_release(&d->arena);
	free(d->bytes);
	free(d->events);
	free(d->in);
	free(d->raw);
}

static int decompress(const uint8_t *payload, size_t len, struct decoded *d,
		      struct batch_result *out)
{
	int rc = wire_decompress(payload, len, WIRE_MAX_BATCH, &d->raw, &d->raw_len);

	if (rc == -EMSGSIZE)
		return batch_refuse(out, "batch larger than %u bytes once decompressed",
				    WIRE_MAX_BATCH);
	if (rc == -ENOMEM)
		return batch_refuse(out, "out of memory decompressing the batch");
	if (rc < 0)
		return batch_refuse(out, "payload is not a zstd frame (corrupt, truncated or "
				    "trailing bytes)");
	return 0;
}

/*
 * Where each event's bytes are: Batch field 1 (repeated bytes), read in
 * place rather than copied out by protobuf-c. Other fields are skipped, as
 * protobuf-c would; field 1 of another wire type is not a Batch. The
 * framing was checked by count_events.
 */
static int list_events(struct decoded *d)
{
	const uint8_t *p = d->raw, *end = d->raw + d->raw_len;
	uint64_t key, len;
	size_t i = 0;

	while (p < end) {
		if (read_varint(&p, end, &key) < 0)
			return -EBADMSG;
		if ((key >> 3) != 1) {
			if (skip_field(&p, end, key & 7) < 0)
				return -EBADMSG;
			continue;
		}
		if ((key & 7) != 2 || read_varint(&p, end, &len) < 0 ||
		    len > (uint64_t)(end - p) || i == d->n)
			return -EBADMSG;
		d->bytes[i++] = (ProtobufCBinaryData){ .len = len, .data = (uint8_t *)p };
		p += len;
	}
	return i == d->n ? 0 : -EBADMSG;
}

static int decode_batch(const struct batch_ctx *ctx, struct decoded *d, struct batch_result *out)
{
	size_t n;
	int rc = count_events(d->raw, d->raw_len, ctx->max_events, &n);

	if (rc == -E2BIG)
		return batch_refuse(out, "batch of more than limits.max_batch_events (%" PRIu32
				    ") events", ctx->max_events);
	if (rc < 0)
		return batch_refuse(out, "payload is not a dbward.v1.Batch");
	if (n == 0)
		return batch_refuse(out, "empty batch");
	d->n = n;
	d->bytes = calloc(d->n, sizeof(*d->bytes));
	d->events = calloc(d->n, sizeof(*d->events));
	d->in = calloc(d->n, sizeof(*d->in));
	if (!d->bytes || !d->events || !d->in)
		return batch_refuse(out, "out of memory decoding the batch");
	if (list_events(d) < 0)
		return batch_refuse(out, "payload is not a dbward.v1.Batch");
	return 0;
}

/* Fields of a newer schema, at any depth: protobuf-c keeps them and packs them back. */
static bool has_unknown_fields(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *desc = m->descriptor;

	if (m->n_unknown_fields)
		return true;
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];
		const char *at = (const char *)m + f->offset;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
			ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)at;

			for (size_t k = 0; k < n; k++)
				if (items[k] && has_unknown_fields(items[k]))
					return true;
			continue;
		}
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
			continue;
		if (*(ProtobufCMessage *const *)at &&
		    has_unknown_fields(*(ProtobufCMessage *const *)at))
			return true;
	}
	return false;
}

/* Event @i is this agent's, of the batch's one epoch, numbered. */
static int check_event(const char *agent_id, const Dbward__V1__Event *ev,
		       const Dbward__V1__Event *first, size_t i, struct batch_result *out)
{
	char shown[SHOWN_NAME_MAX + 4];

	if (strcmp(ev->agent_id, agent_id) != 0) {
		shown_name(ev->agent_id, shown);
		return batch_refuse(out, "event %zu names agent '%s', not the certificate's '%s'",
				    i, shown, agent_id);
	}
	if (ev->epoch != first->epoch)
		return batch_refuse(out, "event %zu has epoch %" PRIu64 ", the batch began in "
				    "epoch %" PRIu64, i, ev->epoch, first->epoch);
	if (ev->seq == 0)
		return batch_refuse(out, "event %zu has seq 0 (seqs start at 1)", i);
	return 0;
}

static int decode_events(const char *agent_id, struct decoded *d, struct batch_result *out)
{
	for (size_t i = 0; i < d->n; i++) {
		const ProtobufCBinaryData *raw = &d->bytes[i];
		Dbward__V1__Event *ev;
		int rc = wire_event_unpack_in(&d->arena, raw->data, raw->len, &ev);

		if (rc == -ENOMEM)
			return batch_refuse(out, "event %zu cannot be decoded within its memory budget",
					    i);
		if (rc < 0)
			return batch_refuse(out, "event %zu is not a dbward.v1.Event", i);
		d->events[i] = ev;
		/*
		 * The bytes are what the agent hashed and what we store: they must
		 * be the event's one encoding. This refuses unknown fields (a
		 * newer schema), non-minimal encodings, and strings with a NUL
		 * inside (an agent_id "a\0b" would pass strcmp as "a").
		 */
		if (has_unknown_fields(&ev->base) ||
		    dbward__v1__event__get_packed_size(ev) != raw->len)
			return batch_refuse(out, "event %zu is not in canonical encoding (unknown "
					    "fields, a NUL in a string, or non-minimal encoding)", i);
		if (check_event(agent_id, ev, d->events[0], i, out) < 0)
			return -1;
		d->in[i] = (struct store_event_in){ .raw = raw->data, .len = raw->len, .ev = ev };
	}
	return 0;
}

void batch_ingest(const struct batch_ctx *ctx, const char *agent_id,
		  const uint8_t *payload_bytes, size_t len, struct batch_result *out)
{
	struct decoded d = { 0 };
	struct store_payload payload;
	char err[STORE_ERR_LEN] = "";

	memset(out, 0, sizeof(*out));
	if (decompress(payload_bytes, len, &d, out) < 0 || decode_batch(ctx, &d, out) < 0)
		goto cleanup;
	out->events = d.n;
	if (decode_events(agent_id, &d, out) < 0)
		goto cleanup;
	payload = (struct store_payload){ .data = payload_bytes, .len = len, .plain = d.raw,
					  .plain_len = d.raw_len };
	if (store_append_batch(ctx->store, agent_id, d.in, d.n, &payload, ctx->key, &out->stored,
			       err, sizeof(err)) < 0) {
		batch_refuse(out, "storage: %s", err[0] ? err : "failed");
		goto cleanup;
	}
	out->ok = true;
cleanup:
	decoded_release(&d);
}

int batch_ack_frame(const struct batch_result *r, uint8_t **out, size_t *out_len)
{
	Dbward__V1__Ack ack = DBWARD__V1__ACK__INIT;
	size_t n;
	uint8_t *buf;

	ack.ok = r->ok;
	if (r->ok) {
		ack.epoch = r->stored.epoch;
		ack.acked_seq = r->stored.acked_seq;
		ack.accepted = r->stored.accepted;
		ack.duplicates = r->stored.duplicates;
	} else {
		ack.error = (char *)r->error;
	}
	n = dbward__v1__ack__get_packed_size(&ack);
	buf = malloc(WIRE_HEADER_LEN + n);
	if (!buf)
		return -ENOMEM;
	wire_header(buf, WIRE_ACK, n);
	dbward__v1__ack__pack(&ack, buf + WIRE_HEADER_LEN);
	*out = buf;
	*out_len = WIRE_HEADER_LEN + n;
	return 0;
}
