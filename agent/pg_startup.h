/*
 * The first message a PostgreSQL client sends, which has no type byte:
 * StartupMessage, SSLRequest, GSSENCRequest or CancelRequest. Parsed in
 * place; nothing is changed, the agent forwards the bytes as they came.
 */
#ifndef DBWARD_AGENT_PG_STARTUP_H
#define DBWARD_AGENT_PG_STARTUP_H

#include <stddef.h>
#include <stdint.h>

/* PostgreSQL's own limit (MAX_STARTUP_PACKET_LENGTH). */
#define PG_STARTUP_MAX_LEN 10000
#define PG_STARTUP_MIN_LEN 8

#define PG_CODE_CANCEL 80877102u	/* 1234 << 16 | 5678 */
#define PG_CODE_SSL 80877103u		/* 1234 << 16 | 5679 */
#define PG_CODE_GSSENC 80877104u	/* 1234 << 16 | 5680 */
#define PG_PROTOCOL_MAJOR(code) ((code) >> 16)

enum pg_startup_kind {
	PG_STARTUP_INCOMPLETE,	/* need more bytes */
	PG_STARTUP_MESSAGE,	/* protocol 3.x StartupMessage */
	PG_STARTUP_SSL_REQUEST,
	PG_STARTUP_GSSENC_REQUEST,
	PG_STARTUP_CANCEL,
	PG_STARTUP_INVALID,	/* see .error */
};

/* A string inside the packet: not NUL-terminated by this parser's say-so. */
struct pg_str {
	const char *ptr;	/* NULL when absent */
	size_t len;
};

struct pg_startup {
	enum pg_startup_kind kind;
	uint32_t length;	/* of the whole packet, including the length word */
	uint32_t code;		/* protocol version or request code */
	struct pg_str user;
	struct pg_str database;
	struct pg_str application_name;
	const char *error;	/* static text, for PG_STARTUP_INVALID */
};

/* Looks at the first @len bytes a client sent. Never reads past @len. */
enum pg_startup_kind pg_startup_parse(const uint8_t *buf, size_t len, struct pg_startup *out);

#endif
