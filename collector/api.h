/*
 * The JSON API under /api/v1/ (docs/collector.md, "HTTP API"): one
 * function per endpoint, each reading the store and rendering a reply.
 * No HTTP here: collector/http.c routes requests in and replies out.
 */
#ifndef DBWARD_COLLECTOR_API_H
#define DBWARD_COLLECTOR_API_H

#include <stddef.h>

#include "collector/query.h"
#include "collector/store.h"
#include "common/signing.h"

#define API_PREFIX "/api/v1/"
#define API_MAX_PROBLEMS 10000		/* listed by /verify; all are counted */

struct api {
	struct store *store;
	const struct signing_key *key;		/* its public half goes in tree heads, receipts */
	const struct verify_key *verify_key;	/* the same public half, for /verify */
};

struct api_reply {
	unsigned status;		/* HTTP status */
	char *body;			/* JSON, malloc'd, owned; NULL only when out of memory */
	size_t len;
};

/* Answers GET API_PREFIX@path (the part after the prefix). Always fills
 * @reply; errors are {"error": "..."} with a 4xx/5xx status. */
void api_handle(const struct api *api, const char *path, const struct query *q,
		struct api_reply *reply);
/* An error reply: {"error": @message}. */
void api_error(struct api_reply *reply, unsigned status, const char *message);

#endif
