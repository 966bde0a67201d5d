#include "common/wire.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#define WIRE_WINDOW_LOG_MAX 26
#define BUDGET_FACTOR 16
#define BUDGET_SLACK (64u << 10)
/* Before each allocation: its size (keeps max_align_t alignment). */
#define BUDGET_HEADER 16
/* What an allocation costs beyond its size: our header and malloc's own. */
#define BUDGET_OVERHEAD (BUDGET_HEADER + 16)

void wire_header(uint8_t out[WIRE_HEADER_LEN], uint8_t type, size_t payload_len)
{
	uint32_t n = (uint32_t)payload_len + 1;

	out[0] = (uint8_t)(n >> 24);
	out[1] = (uint8_t)(n >> 16);
	out[2] = (uint8_t)(n >> 8);
	out[3] = (uint8_t)n;
	out[4] = type;
}

int wire_parse_header(const uint8_t in[WIRE_HEADER_LEN], uint8_t *type, size_t *payload_len)
{
	uint32_t n = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];

	if (n == 0 || (in[4] != WIRE_BATCH && in[4] != WIRE_ACK))
		return -EPROTO;
	if (n - 1 > WIRE_MAX_FRAME)
		return -EMSGSIZE;
	*type = in[4];
	*payload_len = n - 1;
	return 0;
}

int wire_compress(const void *in, size_t len, int level, uint8_t **out, size_t *out_len)
{
	size_t cap = ZSTD_compressBound(len);
	uint8_t *buf = malloc(cap ? cap : 1);
	size_t n;

	if (!buf)
		return -ENOMEM;
	n = ZSTD_compress(buf, cap, in, len, level);
	if (ZSTD_isError(n)) {
		free(buf);
		return -ENOMEM;
	}
	*out = buf;
	*out_len = n;
	return 0;
}

/* Streams, so a frame that lies about (or omits) its size cannot make us
 * allocate more than @max. */
int wire_decompress(const void *in, size_t len, size_t max, uint8_t **out, size_t *out_len)
{
	ZSTD_DCtx *dctx = NULL;
	ZSTD_inBuffer src = { in, len, 0 };
	ZSTD_outBuffer dst = { NULL, 0, 0 };
	size_t cap = len * 4 < max ? len * 4 + 64 : max, left = 1;
	int rc = -EBADMSG;

	if (len < 4)
		return -EBADMSG;
	if (!(dctx = ZSTD_createDCtx()))
		return -ENOMEM;
	/* A frame may not demand a window (memory) beyond 64 MiB. */
	if (ZSTD_isError(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, WIRE_WINDOW_LOG_MAX))) {
		rc = -ENOMEM;
		goto cleanup;
	}
	if (!(dst.dst = malloc(cap))) {
		rc = -ENOMEM;
		goto cleanup;
	}
	dst.size = cap;
	while (left != 0) {
		if (dst.pos == dst.size) {
			void *bigger;

			if (dst.size >= max) {
				rc = -EMSGSIZE;
				goto cleanup;
			}
			cap = dst.size * 2 < max ? dst.size * 2 : max;
			if (!(bigger = realloc(dst.dst, cap))) {
				rc = -ENOMEM;
				goto cleanup;
			}
			dst.dst = bigger;
			dst.size = cap;
		}
		left = ZSTD_decompressStream(dctx, &dst, &src);
		if (ZSTD_isError(left))
			goto cleanup;
		if (left != 0 && src.pos == src.size && dst.pos < dst.size)
			goto cleanup;	/* truncated */
	}
	if (src.pos != src.size)
		goto cleanup;		/* trailing bytes */
	*out = dst.dst;
	*out_len = dst.pos;
	dst.dst = NULL;
	rc = 0;
cleanup:
	free(dst.dst);
	ZSTD_freeDCtx(dctx);
	return rc;
}

/* --- unpacking untrusted events within a memory budget ----------------------- */

struct budget {
	size_t left;
	bool spent;			/* an allocation was refused */
};

static void *budget_alloc(void *data, size_t size)
{
	struct budget *b = data;
	size_t cost = size + BUDGET_OVERHEAD;
	uint8_t *p;

	if (size > SIZE_MAX - BUDGET_OVERHEAD || (b && cost > b->left)) {
		if (b)
			b->spent = true;
		return NULL;
	}
	if (!(p = malloc(size + BUDGET_HEADER))) {
		if (b)
			b->spent = true;
		return NULL;
	}
	memcpy(p, &size, sizeof(size));
	if (b)
		b->left -= cost;
	return p + BUDGET_HEADER;
}

static void budget_free(void *data, void *ptr)
{
	struct budget *b = data;
	uint8_t *p = ptr;
	size_t size;

	if (!p)
		return;
	p -= BUDGET_HEADER;
	memcpy(&size, p, sizeof(size));
	if (b)
		b->left += size + BUDGET_OVERHEAD;
	free(p);
}

/* Frees what a budgeted unpack allocated, once the budget is gone. */
static ProtobufCAllocator budget_freer = { budget_alloc, budget_free, NULL };

int wire_event_unpack(const uint8_t *data, size_t len, Dbward__V1__Event **out)
{
	struct budget b = { .left = BUDGET_SLACK };
	ProtobufCAllocator alloc = { budget_alloc, budget_free, &b };

	if (len <= (SIZE_MAX - BUDGET_SLACK) / BUDGET_FACTOR)
		b.left += len * BUDGET_FACTOR;
	else
		b.left = SIZE_MAX;
	*out = dbward__v1__event__unpack(&alloc, len, data);
	if (*out)
		return 0;
	return b.spent ? -ENOMEM : -EBADMSG;
}

void wire_event_free(Dbward__V1__Event *ev)
{
	if (ev)
		dbward__v1__event__free_unpacked(ev, &budget_freer);
}

/* --- the same, from an arena ------------------------------------------------ */

#define ARENA_CHUNK (256u << 10)

struct wire_chunk {
	struct wire_chunk *next;
	size_t size;			/* bytes of data[] */
	_Alignas(16) uint8_t data[];
};

static uint8_t *arena_take(struct wire_arena *a, size_t size)
{
	struct wire_chunk *c = a->chunks;

	if (!c || c->size - a->used < size) {
		size_t want = size > ARENA_CHUNK ? size : ARENA_CHUNK;

		if (!(c = malloc(sizeof(*c) + want)))
			return NULL;
		c->size = want;
		c->next = a->chunks;
		a->chunks = c;
		a->used = 0;
	}
	a->used += size;
	return c->data + a->used - size;
}

/* Charged as budget_alloc charges, so both accept the same events. */
static void *arena_alloc(void *data, size_t size)
{
	struct wire_arena *a = data;
	size_t cost = size + BUDGET_OVERHEAD, rounded;
	uint8_t *p;

	if (size > SIZE_MAX - BUDGET_OVERHEAD || cost > a->left) {
		a->spent = 1;
		return NULL;
	}
	rounded = (size + BUDGET_HEADER + 15) & ~(size_t)15;
	if (!(p = arena_take(a, rounded))) {
		a->spent = 1;
		return NULL;
	}
	memcpy(p, &size, sizeof(size));
	a->left -= cost;
	return p + BUDGET_HEADER;
}

/* The memory stays in the arena; the budget comes back, as with malloc. */
static void arena_free(void *data, void *ptr)
{
	struct wire_arena *a = data;
	size_t size;

	if (!ptr)
		return;
	memcpy(&size, (uint8_t *)ptr - BUDGET_HEADER, sizeof(size));
	a->left += size + BUDGET_OVERHEAD;
}

void wire_arena_init(struct wire_arena *a)
{
	memset(a, 0, sizeof(*a));
}

int wire_event_unpack_in(struct wire_arena *a, const uint8_t *data, size_t len,
			 Dbward__V1__Event **out)
{
	ProtobufCAllocator alloc = { arena_alloc, arena_free, a };

	a->spent = 0;
	a->left = BUDGET_SLACK;
	if (len <= (SIZE_MAX - BUDGET_SLACK) / BUDGET_FACTOR)
		a->left += len * BUDGET_FACTOR;
	else
		a->left = SIZE_MAX;
	*out = dbward__v1__event__unpack(&alloc, len, data);
	if (*out)
		return 0;
	return a->spent ? -ENOMEM : -EBADMSG;
}

void wire_arena_release(struct wire_arena *a)
{
	while (a->chunks) {
		struct wire_chunk *c = a->chunks;

		a->chunks = c->next;
		free(c);
	}
	a->used = 0;
}
