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
};

/* A fresh id: per-boot random prefix and a counter, never repeated. */
void session_new_id(char out[SESSION_ID_LEN + 1]);
void session_release(struct session *s);

struct audit;
struct track_result;
/*
 * Builds a connection_open / connection_close / statement event pointing
 * at @s's strings and hands it to audit_record(): 0, or audit_record()'s
 * error, on which the caller closes the connection. NULL @audit: nothing.
 */
int session_emit_open(struct audit *audit, const struct session *s);
int session_emit_close(struct audit *audit, const struct session *s);
int session_emit_statement(struct audit *audit, const struct session *s,
			   const struct track_result *r);

#endif
