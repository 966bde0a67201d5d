/*
 * The agent <-> collector stream, inside mutual TLS. Frames both ways:
 *
 *   u32 length (big-endian, of what follows) | u8 type | payload
 *
 *   WIRE_BATCH  agent -> collector  zstd(dbward.v1.Batch)
 *   WIRE_ACK    collector -> agent  dbward.v1.Ack (uncompressed)
 *
 * The agent sends a batch and waits for its ack before the next (one in
 * flight). A collector that cannot take a batch answers an Ack with ok =
 * false and an error, and keeps the connection; garbage it cannot frame
 * closes the connection after that answer.
 */
#ifndef DBWARD_COMMON_WIRE_H
#define DBWARD_COMMON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "dbward/v1/audit.pb-c.h"

#define WIRE_HEADER_LEN 5
#define WIRE_BATCH 'B'
#define WIRE_ACK 'A'
/* Largest frame either side accepts, and largest batch once decompressed. */
#define WIRE_MAX_FRAME (16u << 20)
#define WIRE_MAX_BATCH (64u << 20)

/* Writes the header for @payload_len bytes of @type into @out. */
void wire_header(uint8_t out[WIRE_HEADER_LEN], uint8_t type, size_t payload_len);
/* Reads a header: 0, or -EPROTO (unknown type, empty frame) or
 * -EMSGSIZE (over WIRE_MAX_FRAME). */
int wire_parse_header(const uint8_t in[WIRE_HEADER_LEN], uint8_t *type, size_t *payload_len);

/* zstd at @level into a malloc'd buffer: 0 or -ENOMEM. */
int wire_compress(const void *in, size_t len, int level, uint8_t **out, size_t *out_len);
/*
 * Decompresses one zstd frame into a malloc'd buffer of at most @max
 * bytes: 0, -EBADMSG (not zstd, corrupt, truncated, trailing bytes) or
 * -EMSGSIZE (larger than @max; nothing beyond @max is ever allocated).
 */
int wire_decompress(const void *in, size_t len, size_t max, uint8_t **out, size_t *out_len);

/*
 * Unpacks an Event from untrusted bytes with a memory budget (16 x @len +
 * 64 KiB, allocator overhead counted): protobuf-c would otherwise expand
 * e.g. a run of empty repeated strings about 20-fold. 0, -EBADMSG (not an
 * Event) or -ENOMEM (over the budget, or out of memory). Free the event
 * with wire_event_free, never with dbward__v1__event__free_unpacked(NULL).
 */
int wire_event_unpack(const uint8_t *data, size_t len, Dbward__V1__Event **out);
void wire_event_free(Dbward__V1__Event *ev);

/*
 * The same, for many events freed together (a batch): their memory comes
 * from an arena, in large chunks, and goes back all at once with
 * wire_arena_release: no malloc and free per string and sub-message. The
 * budget and its accounting are wire_event_unpack's, per event. Events
 * unpacked here must never reach wire_event_free.
 */
struct wire_arena {
	struct wire_chunk *chunks;	/* newest first */
	size_t used;			/* of the newest chunk */
	size_t left;			/* the event being unpacked: its budget */
	int spent;			/* an allocation was refused */
};

void wire_arena_init(struct wire_arena *a);
int wire_event_unpack_in(struct wire_arena *a, const uint8_t *data, size_t len,
			 Dbward__V1__Event **out);
void wire_arena_release(struct wire_arena *a);

#endif
