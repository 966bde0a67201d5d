/*
 * PostgreSQL v3 messages after startup: which types exist in each
 * direction, bounded readers for the fields dbward looks at, and builders
 * for the messages it sends itself. Pure functions over byte buffers.
 */
#ifndef DBWARD_AGENT_PG_MSG_H
#define DBWARD_AGENT_PG_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_MSG_HEADER_LEN 5	/* type byte + int32 length (which counts itself) */

bool pg_msg_frontend_type_valid(uint8_t type);
bool pg_msg_backend_type_valid(uint8_t type);

static inline uint32_t pg_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads fields of one message body; any overrun sets .bad and yields 0/NULL. */
struct pg_reader {
	const uint8_t *p;
	size_t left;
	bool bad;
};

void pg_reader_init(struct pg_reader *r, const uint8_t *body, size_t len);
uint8_t pg_read_u8(struct pg_reader *r);
uint16_t pg_read_u16(struct pg_reader *r);
uint32_t pg_read_u32(struct pg_reader *r);
/* A NUL-terminated string; NULL (and .bad) when no NUL is left in the body. */
const char *pg_read_cstr(struct pg_reader *r, size_t *len);

/* Rows a CommandComplete tag reports ("INSERT 0 5" → 5, "SELECT 3" → 3);
 * -1 for tags without a count ("CREATE TABLE"). */
int64_t pg_command_rows(const char *tag, size_t len);

/* The fields of an ErrorResponse or NoticeResponse dbward records. */
struct pg_error_fields {
	char severity[16];	/* non-localized ('V'), else 'S' */
	char sqlstate[6];
	const char *message;	/* into the body; not NUL-terminated by us */
	size_t message_len;
};

/* Returns 0, or -1 for a malformed body. */
int pg_error_parse(const uint8_t *body, size_t len, struct pg_error_fields *out);

/* An ErrorResponse; @detail and @hint may be NULL. Returns its length, or
 * 0 when it does not fit in @cap. */
size_t pg_build_error(uint8_t *buf, size_t cap, const char *severity, const char *sqlstate,
		      const char *message, const char *detail, const char *hint);
/* ReadyForQuery with transaction status 'I', 'T' or 'E'. */
size_t pg_build_ready(uint8_t *buf, size_t cap, char status);

/*
 * A Query that makes the server itself fail with SQLSTATE 42501 and a
 * message naming @rule: the agent's stand-in for a denied statement, so
 * the client's answer (ErrorResponse, ReadyForQuery) comes in order and a
 * transaction block fails on the server as it would for any error. The
 * rule name is reduced to [A-Za-z0-9 _.:/-]: nothing in it can leave the
 * string literal, whatever the session's standard_conforming_strings or
 * encoding. Returns the message length, or 0 when it does not fit.
 */
size_t pg_build_denial_query(uint8_t *buf, size_t cap, const char *rule);

/*
 * The same kind of stand-in for a statement the agent itself refuses (the
 * audit spool is full): the server fails it with @sqlstate (five digits or
 * capitals) and @message. Text is reduced as for rule names. Returns the
 * message length, or 0 when it does not fit or @sqlstate is malformed.
 */
size_t pg_build_refusal_query(uint8_t *buf, size_t cap, const char *sqlstate, const char *message,
			      const char *detail);

/*
 * Removes every field of type @code from a whole ErrorResponse or
 * NoticeResponse and fixes the length. Returns the new total length
 * (unchanged when absent or malformed).
 */
size_t pg_error_strip_field(uint8_t *msg, size_t total, uint8_t code);

#define PG_AUTH_SASL 10

/*
 * In a whole AuthenticationSASL message, removes SCRAM-SHA-256-PLUS from the
 * offered mechanisms (channel binding cannot span two TLS sessions) and
 * fixes the length. Returns the message's new total length (unchanged when
 * it was not offered, or the message is not AuthenticationSASL).
 */
size_t pg_sasl_strip_plus(uint8_t *msg, size_t total);

#endif
