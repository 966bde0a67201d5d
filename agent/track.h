/*
 * Which statement each server response belongs to.
 *
 * PostgreSQL answers a client's messages in order, so a FIFO of what the
 * client sent, matched against what the server says, tells when each
 * statement ends, how many rows it touched and how it failed:
 *
 *   Query        → per statement: [T D*] C | I | E ... then Z
 *   Parse        → 1 | E          Bind → 2 | E        Describe → [t] T|n | E
 *   Execute      → D* (C | s | I) | E                   Close → 3 | E
 *   Sync         → Z              FunctionCall → V | E, then Z
 *
 * After an error in the extended protocol the server skips everything up
 * to the next Sync; so does the tracker. Named prepared statements and
 * portals are followed, so an Execute is reported with the text its Parse
 * carried. Fed whole messages (or their held prefix) in order; reports
 * each finished statement through a callback. No sockets, no I/O.
 */
#ifndef DBWARD_AGENT_TRACK_H
#define DBWARD_AGENT_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/sql.h"

/* A statement text the session knows, with its classification; shared by
 * the prepared-statement map, portals and pending responses. */
struct track_text {
	unsigned refs;
	char *sql;		/* NUL-terminated */
	size_t len;
	struct sql_parse parse;
};

/* What the policy said of a statement. */
enum track_verdict {
	TRACK_ALLOW,
	TRACK_DENY,	/* never reached the server */
	TRACK_AUDIT,	/* allowed, and an audit rule matched */
};

const char *track_verdict_name(enum track_verdict v);

/* One finished statement, as the audit trail reports it. */
struct track_result {
	const struct track_text *text;	/* NULL: the statement is unknown */
	size_t index;			/* which statement of text->parse */
	const char *sql;		/* this statement's own text ... */
	size_t sql_len;			/* ... not NUL-terminated */
	bool extended;			/* Parse/Bind/Execute, not a Query */
	bool function_call;		/* a FunctionCall (fast path): no text */
	uint32_t function_oid;		/* ... of the function with this OID */
	bool finished;			/* false: the session ended first */
	enum track_verdict verdict;
	const char *rule;		/* the deciding (or audit) rule; NULL: default */
	int64_t rows;			/* -1 when the server did not say */
	char sqlstate[6];		/* "" on success */
	uint64_t duration_ns;
	uint64_t client_bytes;
	uint64_t server_bytes;
};

typedef void track_report_fn(void *ctx, const struct track_result *r);

/* The classified statement @r reports; NULL when unknown or unparsable. */
const struct sql_statement *track_result_statement(const struct track_result *r);

struct track_name;
struct track_pending;

struct track {
	track_report_fn *report;
	void *ctx;
	/* FIFO of what awaits an answer: a ring that grows to max_pending. */
	struct track_pending *pending;
	size_t head, count, cap, max_pending;
	/* How the server reads text now (ParameterStatus): the classifier
	 * must read it the same way. */
	struct sql_settings settings;
	char *client_encoding;		/* owned; settings points at it */
	/* A denied Parse, Bind or Execute: the rest of its batch is dropped up to Sync. */
	bool discarding;
	struct track_text *denied_text;
	char *denied_rule;
	struct track_name **statements;	/* prepared statements by name */
	struct track_name **portals;
	size_t n_buckets;
	size_t n_names, max_names;
	const char *error;		/* why a feed failed (static text) */
};

void track_init(struct track *t, track_report_fn *report, void *ctx);
void track_release(struct track *t);

/*
 * Feeds the first @have bytes of a client (frontend) or server (backend)
 * message of @total bytes (header included). Returns 0, or -1 with
 * t->error set: a malformed message, or more pending or named statements
 * than the limits allow. @now_ns is CLOCK_MONOTONIC.
 */
int track_frontend(struct track *t, const uint8_t *msg, size_t have, size_t total, uint64_t now_ns);
int track_backend(struct track *t, const uint8_t *msg, size_t have, size_t total, uint64_t now_ns);

/* How many bytes of a message of @type the tracker needs to see. */
size_t track_frontend_hold(uint8_t type, size_t total);
size_t track_backend_hold(uint8_t type, size_t total);

/*
 * The text that prepared @name: a Parse, or a Query's PREPARE name AS ...
 * (one namespace on the server). NULL when the session never showed it.
 */
const struct track_text *track_prepared(struct track *t, const char *name);

/* Whether the oldest pending answer is for a denied statement's stand-in. */
bool track_head_denied(const struct track *t);

/* The text of the Query or Parse just fed, for the policy to judge. */
const struct track_text *track_last_text(const struct track *t);
/* Records the verdict on the message just fed. Returns 0 or -1 (memory). */
int track_set_verdict(struct track *t, enum track_verdict v, const char *rule);

/*
 * The Parse, Bind or Execute just fed is denied: it never reaches the
 * server, so it is unfed (a Parse's name stays unbound) and the batch is
 * discarded up to Sync, whose stand-in reports the denied statement (the
 * text a Bind's or Execute's statement was prepared with).
 */
int track_deny_extended(struct track *t, const char *rule);
/* The Sync ending a denied batch goes as the agent's stand-in Query,
 * whose error reports the denied statement. */
int track_denied_sync(struct track *t, uint64_t now_ns);

/* Reports what is still pending as unfinished (the connection ended). */
void track_abandon(struct track *t, uint64_t now_ns);

#endif
