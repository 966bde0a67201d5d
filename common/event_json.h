/*
 * One audit event (a serialized dbward.v1.Event) as a flat JSON object:
 * the JSON every reader of the audit trail sees (the agent's file sink,
 * the collector's API, the CLI). Field names are the schema's own; the
 * envelope, session, identity and body fields sit side by side, with
 * "kind" naming the body and "hash" the event's SHA-256.
 *
 * Rendering rules, the same for every field the schema will gain:
 *   - an empty string is null (proto3 cannot tell empty from unset);
 *   - a negative signed integer is null (the schema's "unknown");
 *   - bytes are lower-case hex; "ts" is RFC 3339 UTC with microseconds;
 *   - an absent message renders its fields as null (an unattributed
 *     connection has "pid": null).
 */
#ifndef DBWARD_COMMON_EVENT_JSON_H
#define DBWARD_COMMON_EVENT_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/json.h"

#define EVENT_HASH_LEN 32

/* SHA-256 of the serialized event: what the next event's prev_hash holds. */
void event_hash(const void *raw, size_t len, uint8_t out[EVENT_HASH_LEN]);

/* Appends the event's fields to an object the caller has begun. Returns 0
 * or -EBADMSG (the bytes are not an Event). */
int event_json_put(struct jsonbuf *jb, const uint8_t *raw, size_t len);

/* A whole line: begin, fields, finish ('\n' included). 0, -EBADMSG, -ENOMEM. */
int event_json_line(struct jsonbuf *jb, const uint8_t *raw, size_t len);

#endif
