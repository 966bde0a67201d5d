#include "common/event_json.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/encoding.h"
#include "common/wire.h"
#include "dbward/v1/audit.pb-c.h"

/*
 * SHA256() fetches the implementation from OpenSSL 3's providers on every
 * call; here it is fetched once and each thread reuses one context (as in
 * common/merkle.c). Failing means out of memory: a wrong chain hash is
 * worse than a crash, so abort.
 */
static EVP_MD *hash_md;
static pthread_key_t hash_ctx_key;
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

static void hash_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void hash_init(void)
{
	hash_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	if (!hash_md || pthread_key_create(&hash_ctx_key, hash_ctx_free) != 0)
		abort();
}

void event_hash(const void *raw, size_t len, uint8_t out[EVENT_HASH_LEN])
{
	EVP_MD_CTX *ctx;
	unsigned int outlen = 0;

	pthread_once(&hash_once, hash_init);
	ctx = pthread_getspecific(hash_ctx_key);
	if (!ctx) {
		ctx = EVP_MD_CTX_new();
		if (!ctx || pthread_setspecific(hash_ctx_key, ctx) != 0)
			abort();
	}
	if (EVP_DigestInit_ex2(ctx, hash_md, NULL) != 1 || EVP_DigestUpdate(ctx, raw, len) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &outlen) != 1 || outlen != EVENT_HASH_LEN)
		abort();
}

static void put_hex(struct jsonbuf *jb, const char *key, const uint8_t *p, size_t n)
{
	char text[HEX_LEN(64) + 1];

	if (n == 0 || n > 64) {
		jsonbuf_null(jb, key);
		return;
	}
	hex_encode(p, n, text);
	jsonbuf_strn(jb, key, text, HEX_LEN(n));
}

static void put_nulls(struct jsonbuf *jb, const ProtobufCMessageDescriptor *desc);
static void put_message(struct jsonbuf *jb, const ProtobufCMessage *m);

static const void *member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
	return (const char *)m + f->offset;
}

static void put_repeated(struct jsonbuf *jb, const ProtobufCMessage *m,
			 const ProtobufCFieldDescriptor *f)
{
	size_t n;
	char *const *items;

	memcpy(&n, (const char *)m + f->quantifier_offset, sizeof(n));
	memcpy(&items, member(m, f), sizeof(items));
	if (f->type == PROTOBUF_C_TYPE_STRING)
		jsonbuf_str_array(jb, f->name, items, n);
}

static void put_scalar(struct jsonbuf *jb, const ProtobufCMessage *m,
		       const ProtobufCFieldDescriptor *f)
{
	const void *p = member(m, f);

	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)p;

		jsonbuf_str(jb, f->name, s && s[0] ? s : NULL);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = p;

		put_hex(jb, f->name, b->data, b->len);
		break;
	}
	case PROTOBUF_C_TYPE_BOOL:
		jsonbuf_bool(jb, f->name, *(const protobuf_c_boolean *)p);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		jsonbuf_u64(jb, f->name, *(const uint32_t *)p);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		if (strcmp(f->name, "ts") == 0) {
			char ts[CLOCK_RFC3339_LEN];

			clock_rfc3339(*(const uint64_t *)p, ts, 6);
			jsonbuf_str(jb, f->name, ts);
		} else {
			jsonbuf_u64(jb, f->name, *(const uint64_t *)p);
		}
		break;
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32: {
		int32_t v = *(const int32_t *)p;

		if (v < 0)
			jsonbuf_null(jb, f->name);
		else
			jsonbuf_i64(jb, f->name, v);
		break;
	}
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64: {
		int64_t v = *(const int64_t *)p;

		if (v < 0)
			jsonbuf_null(jb, f->name);
		else
			jsonbuf_i64(jb, f->name, v);
		break;
	}
	default:
		break;		/* floats, enums: not in the schema */
	}
}

static void put_field(struct jsonbuf *jb, const ProtobufCMessage *m,
		      const ProtobufCFieldDescriptor *f)
{
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		uint32_t which;

		memcpy(&which, (const char *)m + f->quantifier_offset, sizeof(which));
		if (which != f->id)
			return;
		jsonbuf_str(jb, "kind", f->name);
	}
	if (f->label == PROTOBUF_C_LABEL_REPEATED) {
		put_repeated(jb, m, f);
	} else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		const ProtobufCMessage *sub = *(ProtobufCMessage *const *)member(m, f);

		if (sub)
			put_message(jb, sub);
		else
			put_nulls(jb, f->descriptor);
	} else {
		put_scalar(jb, m, f);
	}
}

static void put_message(struct jsonbuf *jb, const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *desc = m->descriptor;

	for (unsigned i = 0; i < desc->n_fields; i++)
		put_field(jb, m, &desc->fields[i]);
}

static void put_nulls(struct jsonbuf *jb, const ProtobufCMessageDescriptor *desc)
{
	for (unsigned i = 0; i < desc->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &desc->fields[i];

		if (f->type == PROTOBUF_C_TYPE_MESSAGE && f->label != PROTOBUF_C_LABEL_REPEATED)
			put_nulls(jb, f->descriptor);
		else
			jsonbuf_null(jb, f->name);
	}
}

int event_json_put(struct jsonbuf *jb, const uint8_t *raw, size_t len)
{
	Dbward__V1__Event *ev;
	uint8_t hash[EVENT_HASH_LEN];
	int rc = wire_event_unpack(raw, len, &ev);

	if (rc < 0)
		return rc;
	event_hash(raw, len, hash);
	put_message(jb, &ev->base);
	put_hex(jb, "hash", hash, sizeof(hash));
	wire_event_free(ev);
	return 0;
}

int event_json_line(struct jsonbuf *jb, const uint8_t *raw, size_t len)
{
	int err;

	jsonbuf_begin(jb);
	if ((err = event_json_put(jb, raw, len)) < 0)
		return err;
	return jsonbuf_finish(jb);
}
