/*
 * What the audit trail says about one client connection: who opened it,
 * where it was going, what the startup packet asked for, and how it went.
 */
#ifndef DBWARD_AGENT_SESSION_H
#define DBWARD_AGENT_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/identity.h"
#include "common/netaddr.h"

#define SESSION_ID_LEN 32	/* hex digits */
/* A statement's text in its event is cut here (at a UTF-8 boundary), so
 * that every event fits a spool record and a collector batch. */
#define SESSION_SQL_MAX (4u << 20)

struct session {
	char id[SESSION_ID_LEN + 1];
	bool attributed;		/* the kernel recorded who opened it */
	struct identity who;
	struct netaddr client;		/* the workload's end */
	struct netaddr server;		/* the destination it asked for */
	char *db_user;			/* from the startup packet; owned */
	char *database;
	char *application_name;
	bool encrypted;			/* TLS/GSS passed through end to end */
	bool cancel_request;
	uint64_t start_ns;		/* CLOCK_MONOTONIC */
	uint64_t client_bytes;		/* sent by the client */
	uint64_t server_bytes;		/* sent by the server */
	const char *error;		/* why the agent ended it; static text */
	/* The Session every event carries, as serialized Event field 6:
	 * packed at the first event, so the fields above that it holds
	 * must not change after that (they do not: all are known once the
	 * startup packet is read). Owned. */
	uint8_t *packed;
	size_t packed_len;
};

/* A fresh id: per-boot random prefix and a counter, never repeated. */
void session_new_id(char out[SESSION_ID_LEN + 1]);
void session_release(struct session *s);

struct audit_batch;
struct audit_item;
struct track_result;
/*
 * Stage a connection_open / connection_close / statement event of @s into
 * @b (audit_stage(): recorded by the next audit_commit()). The strings are
 * copied as serialized. Returns the item, or NULL when out of memory.
 */
struct audit_item *session_stage_open(struct audit_batch *b, struct session *s);
struct audit_item *session_stage_close(struct audit_batch *b, struct session *s);
struct audit_item *session_stage_statement(struct audit_batch *b, struct session *s,
					   const struct track_result *r);

#endif
