#include "pg_msg.h"

#include <stdio.h>
#include <string.h>

/* Protocol 3.0 message types (PostgreSQL docs, "Message Formats"). */
bool pg_msg_frontend_type_valid(uint8_t type)
{
	return type && strchr("QPBDECSHFdcfXp", type);
}

bool pg_msg_backend_type_valid(uint8_t type)
{
	return type && strchr("RKSZTDCENAI123ntsGHWdcVv", type);
}

void pg_reader_init(struct pg_reader *r, const uint8_t *body, size_t len)
{
	r->p = body;
	r->left = len;
	r->bad = false;
}

static bool take(struct pg_reader *r, size_t n)
{
	if (r->bad || r->left < n) {
		r->bad = true;
		return false;
	}
	return true;
}

uint8_t pg_read_u8(struct pg_reader *r)
{
	uint8_t v;

	if (!take(r, 1))
		return 0;
	v = r->p[0];
	r->p++;
	r->left--;
	return v;
}

uint16_t pg_read_u16(struct pg_reader *r)
{
	uint16_t v;

	if (!take(r, 2))
		return 0;
	v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	r->left -= 2;
	return v;
}

uint32_t pg_read_u32(struct pg_reader *r)
{
	uint32_t v;

	if (!take(r, 4))
		return 0;
	v = pg_be32(r->p);
	r->p += 4;
	r->left -= 4;
	return v;
}

const char *pg_read_cstr(struct pg_reader *r, size_t *len)
{
	const uint8_t *nul;
	const char *s;

	if (r->bad || !(nul = memchr(r->p, '\0', r->left))) {
		r->bad = true;
		return NULL;
	}
	s = (const char *)r->p;
	if (len)
		*len = (size_t)(nul - r->p);
	r->left -= (size_t)(nul - r->p) + 1;
	r->p = nul + 1;
	return s;
}

int64_t pg_command_rows(const char *tag, size_t len)
{
	static const char *const counted[] = {
		"INSERT ", "SELECT ", "UPDATE ", "DELETE ", "MERGE ", "FETCH ", "MOVE ", "COPY ",
	};
	size_t i = len;
	int64_t rows = 0;

	for (size_t k = 0; k < sizeof(counted) / sizeof(counted[0]); k++) {
		size_t n = strlen(counted[k]);

		if (len > n && memcmp(tag, counted[k], n) == 0)
			goto count;
	}
	return -1;
count:
	/* The count is the last word (INSERT has an oid before it). */
	while (i > 0 && tag[i - 1] >= '0' && tag[i - 1] <= '9')
		i--;
	if (i == len || i == 0 || tag[i - 1] != ' ' || len - i > 18)
		return -1;
	for (; i < len; i++)
		rows = rows * 10 + (tag[i] - '0');
	return rows;
}

static void copy_severity(struct pg_error_fields *out, const char *value, size_t len)
{
	if (len >= sizeof(out->severity))
		len = sizeof(out->severity) - 1;
	memcpy(out->severity, value, len);
	out->severity[len] = '\0';
}

int pg_error_parse(const uint8_t *body, size_t len, struct pg_error_fields *out)
{
	struct pg_reader r;
	bool have_v = false;

	memset(out, 0, sizeof(*out));
	pg_reader_init(&r, body, len);
	for (;;) {
		uint8_t code = pg_read_u8(&r);
		const char *value;
		size_t vlen;

		if (r.bad)
			return -1;
		if (code == 0)
			return 0;
		value = pg_read_cstr(&r, &vlen);
		if (!value)
			return -1;
		switch (code) {
		case 'S':	/* localized; the 'V' field wins when present */
			if (!have_v)
				copy_severity(out, value, vlen);
			break;
		case 'V':
			have_v = true;
			copy_severity(out, value, vlen);
			break;
		case 'C':
			if (vlen == 5)
				memcpy(out->sqlstate, value, 6);
			break;
		case 'M':
			out->message = value;
			out->message_len = vlen;
			break;
		}
	}
}

static size_t put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

/* Appends one "code + string + NUL" field; @at 0 means an earlier one failed. */
static size_t put_field(uint8_t *buf, size_t at, size_t cap, char code, const char *text)
{
	size_t n;

	if (!at || !text)
		return at;
	n = strlen(text) + 1;
	if (at + 1 + n > cap)
		return 0;
	buf[at] = (uint8_t)code;
	memcpy(buf + at + 1, text, n);
	return at + 1 + n;
}

size_t pg_build_error(uint8_t *buf, size_t cap, const char *severity, const char *sqlstate,
		      const char *message, const char *detail, const char *hint)
{
	size_t at = PG_MSG_HEADER_LEN;

	if (cap < PG_MSG_HEADER_LEN + 1)
		return 0;
	at = put_field(buf, at, cap, 'S', severity);
	at = put_field(buf, at, cap, 'V', severity);
	at = put_field(buf, at, cap, 'C', sqlstate);
	at = put_field(buf, at, cap, 'M', message);
	at = put_field(buf, at, cap, 'D', detail);
	at = put_field(buf, at, cap, 'H', hint);
	if (!at || at + 1 > cap)
		return 0;
	buf[at++] = '\0';
	buf[0] = 'E';
	put_be32(buf + 1, (uint32_t)(at - 1));
	return at;
}

size_t pg_build_ready(uint8_t *buf, size_t cap, char status)
{
	if (cap < 6)
		return 0;
	buf[0] = 'Z';
	put_be32(buf + 1, 5);
	buf[5] = (uint8_t)status;
	return 6;
}

size_t pg_error_strip_field(uint8_t *msg, size_t total, uint8_t code)
{
	size_t at = PG_MSG_HEADER_LEN;

	if (total <= PG_MSG_HEADER_LEN || (msg[0] != 'E' && msg[0] != 'N'))
		return total;
	while (at < total && msg[at] != 0) {
		uint8_t *nul = memchr(msg + at + 1, '\0', total - at - 1);
		size_t len;

		if (!nul)
			return total;		/* malformed: leave it to the client */
		len = (size_t)(nul - (msg + at)) + 1;
		if (msg[at] == code) {
			memmove(msg + at, msg + at + len, total - at - len);
			total -= len;
			put_be32(msg + 1, (uint32_t)(total - 1));
		} else {
			at += len;
		}
	}
	return total;
}

static void safe_name(char *out, size_t cap, const char *name)
{
	size_t n = 0;

	for (; name && *name && n + 1 < cap; name++) {
		char ch = *name;
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			  (ch >= '0' && ch <= '9') || strchr(" _.:/-", ch);

		out[n++] = ok ? ch : '_';
	}
	out[n] = '\0';
}

size_t pg_build_denial_query(uint8_t *buf, size_t cap, const char *rule)
{
	char name[64];
	int n;

	safe_name(name, sizeof(name), rule ? rule : "default");
	if (cap < PG_MSG_HEADER_LEN)
		return 0;
	n = snprintf((char *)buf + PG_MSG_HEADER_LEN, cap - PG_MSG_HEADER_LEN,
		     "DO $dbward$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', "
		     "MESSAGE = 'dbward: statement denied by policy rule \"%s\"', "
		     "DETAIL = 'The statement did not reach the database.', "
		     "HINT = 'Policy rules are in the dbward agent configuration.'; END$dbward$",
		     name);
	if (n < 0 || (size_t)n + 1 > cap - PG_MSG_HEADER_LEN)
		return 0;
	buf[0] = 'Q';
	put_be32(buf + 1, (uint32_t)(4 + n + 1));
	return PG_MSG_HEADER_LEN + (size_t)n + 1;
}

size_t pg_build_refusal_query(uint8_t *buf, size_t cap, const char *sqlstate, const char *message,
			      const char *detail)
{
	char msg_text[256], detail_text[256];
	int n;

	if (strlen(sqlstate) != 5 || sqlstate[strspn(sqlstate, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")])
		return 0;
	safe_name(msg_text, sizeof(msg_text), message);
	safe_name(detail_text, sizeof(detail_text), detail);
	if (cap < PG_MSG_HEADER_LEN)
		return 0;
	n = snprintf((char *)buf + PG_MSG_HEADER_LEN, cap - PG_MSG_HEADER_LEN,
		     "DO $dbward$BEGIN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = '%s', "
		     "DETAIL = '%s'; END$dbward$", sqlstate, msg_text, detail_text);
	if (n < 0 || (size_t)n + 1 > cap - PG_MSG_HEADER_LEN)
		return 0;
	buf[0] = 'Q';
	put_be32(buf + 1, (uint32_t)(4 + n + 1));
	return PG_MSG_HEADER_LEN + (size_t)n + 1;
}

size_t pg_sasl_strip_plus(uint8_t *msg, size_t total)
{
	static const char plus[] = "SCRAM-SHA-256-PLUS";
	struct pg_reader r;

	if (total < PG_MSG_HEADER_LEN + 4 || msg[0] != 'R')
		return total;
	pg_reader_init(&r, msg + PG_MSG_HEADER_LEN, total - PG_MSG_HEADER_LEN);
	if (pg_read_u32(&r) != PG_AUTH_SASL)
		return total;
	for (;;) {
		const uint8_t *at = r.p;
		size_t len;
		const char *mech = pg_read_cstr(&r, &len);

		if (!mech || len == 0)
			return total;
		if (len == sizeof(plus) - 1 && memcmp(mech, plus, len) == 0) {
			size_t cut = len + 1;
			size_t tail = (size_t)((msg + total) - (at + cut));

			memmove((uint8_t *)at, at + cut, tail);
			total -= cut;
			put_be32(msg + 1, (uint32_t)(total - 1));
			return total;
		}
	}
}
