#include "pg_startup.h"

#include <string.h>

#include "agent/pg_msg.h"

static enum pg_startup_kind invalid(struct pg_startup *out, const char *why)
{
	out->kind = PG_STARTUP_INVALID;
	out->error = why;
	return out->kind;
}

/*
 * The parameters of a StartupMessage: pairs of NUL-terminated strings,
 * then one more NUL. Anything else is malformed, as the server would say.
 */
static enum pg_startup_kind parse_parameters(const uint8_t *p, size_t n, struct pg_startup *out)
{
	size_t i = 0;

	while (i < n && p[i] != '\0') {
		const char *key = (const char *)p + i;
		const uint8_t *key_end = memchr(p + i, '\0', n - i);
		const uint8_t *val_end;
		struct pg_str val;

		if (!key_end)
			return invalid(out, "invalid startup packet layout: unterminated parameter name");
		i = (size_t)(key_end - p) + 1;
		val_end = i < n ? memchr(p + i, '\0', n - i) : NULL;
		if (!val_end)
			return invalid(out, "invalid startup packet layout: unterminated parameter value");
		val.ptr = (const char *)p + i;
		val.len = (size_t)(val_end - (p + i));
		i = (size_t)(val_end - p) + 1;

		if (strcmp(key, "user") == 0)
			out->user = val;
		else if (strcmp(key, "database") == 0)
			out->database = val;
		else if (strcmp(key, "application_name") == 0)
			out->application_name = val;
	}
	if (i + 1 != n)
		return invalid(out, "invalid startup packet layout: expected terminator as last byte");
	out->kind = PG_STARTUP_MESSAGE;
	return out->kind;
}

enum pg_startup_kind pg_startup_parse(const uint8_t *buf, size_t len, struct pg_startup *out)
{
	memset(out, 0, sizeof(*out));
	if (len < 4)
		return out->kind = PG_STARTUP_INCOMPLETE;
	out->length = pg_be32(buf);
	if (out->length < PG_STARTUP_MIN_LEN || out->length > PG_STARTUP_MAX_LEN)
		return invalid(out, "invalid length of startup packet");
	if (len < out->length)
		return out->kind = PG_STARTUP_INCOMPLETE;
	out->code = pg_be32(buf + 4);

	switch (out->code) {
	case PG_CODE_SSL:
		if (out->length != 8)
			return invalid(out, "invalid length of SSLRequest");
		return out->kind = PG_STARTUP_SSL_REQUEST;
	case PG_CODE_GSSENC:
		if (out->length != 8)
			return invalid(out, "invalid length of GSSENCRequest");
		return out->kind = PG_STARTUP_GSSENC_REQUEST;
	case PG_CODE_CANCEL:
		if (out->length != 16)
			return invalid(out, "invalid length of CancelRequest");
		return out->kind = PG_STARTUP_CANCEL;
	}
	if (PG_PROTOCOL_MAJOR(out->code) != 3)
		return invalid(out, "unsupported frontend protocol");
	return parse_parameters(buf + 8, out->length - 8, out);
}
