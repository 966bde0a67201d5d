#include "collector/api.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/event_json.h"
#include "common/json.h"
#include "common/receipt.h"

#define B64_PUB_LEN (4 * ((SIGNING_PUB_LEN + 2) / 3) + 1)

/* --- replies ------------------------------------------------------------------ */

void api_error(struct api_reply *reply, unsigned status, const char *message)
{
	struct jsonbuf jb;

	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_str(&jb, "error", message);
	reply->status = status;
	if (jsonbuf_finish(&jb) < 0) {
		jsonbuf_release(&jb);
		reply->body = NULL;
		reply->len = 0;
		return;
	}
	reply->body = jb.data;
	reply->len = jb.len;
}

/* A store call that did not return 0. */
static void store_failed(struct api_reply *reply, int rc, const char *not_found)
{
	if (rc == -ENOENT)
		api_error(reply, 404, not_found);
	else if (rc == -EBADMSG)
		api_error(reply, 409, "the event's bytes are missing: its batch payload was "
				      "deleted or altered (GET /api/v1/verify says more)");
	else if (rc == -ENOMEM)
		api_error(reply, 500, "out of memory");
	else
		api_error(reply, 500, "storage error (see the collector's log)");
}

static void reply_jsonbuf(struct api_reply *reply, struct jsonbuf *jb)
{
	if (jsonbuf_finish(jb) < 0) {
		jsonbuf_release(jb);
		api_error(reply, 500, "out of memory");
		return;
	}
	reply->status = 200;
	reply->body = jb->data;
	reply->len = jb->len;
	jsonbuf_init(jb);
}

/* --- documents made of objects --------------------------------------------------- */

/* Raw JSON text around objects a jsonbuf renders; sticky failure. */
struct doc {
	char *data;
	size_t len, cap;
	bool failed;
	bool need_comma;		/* inside an array, after an item */
};

static void doc_raw(struct doc *d, const char *s, size_t n)
{
	if (d->failed)
		return;
	if (d->len + n + 1 > d->cap) {
		size_t cap = d->cap ? d->cap : 4096;
		char *grown;

		while (cap < d->len + n + 1)
			cap *= 2;
		grown = realloc(d->data, cap);
		if (!grown) {
			d->failed = true;
			return;
		}
		d->data = grown;
		d->cap = cap;
	}
	memcpy(d->data + d->len, s, n);
	d->len += n;
}

static void doc_text(struct doc *d, const char *s)
{
	doc_raw(d, s, strlen(s));
}

static void doc_u64_or_null(struct doc *d, uint64_t v, bool present)
{
	char num[24];

	if (!present) {
		doc_text(d, "null");
		return;
	}
	snprintf(num, sizeof(num), "%" PRIu64, v);
	doc_text(d, num);
}

/* One object a jsonbuf finished ("{...}\n") as the next array item. */
static int doc_item(struct doc *d, struct jsonbuf *item)
{
	if (jsonbuf_finish(item) < 0)
		return -ENOMEM;
	if (d->need_comma)
		doc_raw(d, ",", 1);
	d->need_comma = true;
	doc_raw(d, item->data, item->len - 1);
	return d->failed ? -ENOMEM : 0;
}

/* An object a jsonbuf finished, left open for more keys: "{...". */
static void doc_open_object(struct doc *d, struct jsonbuf *jb)
{
	if (jsonbuf_finish(jb) < 0) {
		d->failed = true;
		return;
	}
	doc_raw(d, jb->data, jb->len - 2);
}

/* The keys of an object a jsonbuf finished, closing an object @d opened. */
static void doc_close_object(struct doc *d, struct jsonbuf *jb)
{
	if (jsonbuf_finish(jb) < 0) {
		d->failed = true;
		return;
	}
	doc_raw(d, jb->data + 1, jb->len - 2);
}

static void doc_reply(struct doc *d, struct api_reply *reply)
{
	doc_raw(d, "\n", 1);
	if (d->failed) {
		free(d->data);
		api_error(reply, 500, "out of memory");
		return;
	}
	reply->status = 200;
	reply->body = d->data;
	reply->len = d->len;
}

/* A list endpoint: {"KEY": [items ...], more}; items are rendered into @item. */
struct list_walk {
	struct doc doc;
	struct jsonbuf item;
	size_t count;
	uint64_t last_id;
};

static void list_begin(struct list_walk *w, const char *key)
{
	memset(w, 0, sizeof(*w));
	jsonbuf_init(&w->item);
	doc_text(&w->doc, "{\"");
	doc_text(&w->doc, key);
	doc_text(&w->doc, "\":[");
}

/* Ends the walk: a reply, or the store's error @rc. @tail closes the object. */
static void list_end(struct list_walk *w, int rc, const char *tail, struct api_reply *reply)
{
	jsonbuf_release(&w->item);
	if (rc < 0) {
		free(w->doc.data);
		store_failed(reply, rc, "not found");
		return;
	}
	doc_text(&w->doc, tail);
	doc_reply(&w->doc, reply);
}

/* --- fields -------------------------------------------------------------------- */

/* RFC 3339 UTC, microseconds; 0 (never) is null. */
static void put_time(struct jsonbuf *jb, const char *key, uint64_t ns)
{
	char text[CLOCK_RFC3339_LEN];

	if (!ns) {
		jsonbuf_null(jb, key);
		return;
	}
	clock_rfc3339(ns, text, 6);
	jsonbuf_str(jb, key, text);
}

static void put_id(struct jsonbuf *jb, const char *key, uint64_t id)
{
	if (id)
		jsonbuf_u64(jb, key, id);
	else
		jsonbuf_null(jb, key);
}

static void put_public_key(struct jsonbuf *jb, const struct signing_key *key)
{
	uint8_t pub[SIGNING_PUB_LEN];
	char text[B64_PUB_LEN];

	signing_public(key, pub);
	EVP_EncodeBlock((unsigned char *)text, pub, SIGNING_PUB_LEN);
	jsonbuf_str(jb, "public_key", text);
}

/* EVENT: "id", "leaf_index", then the event's own fields. */
static void put_event(struct jsonbuf *jb, const struct store_event *e)
{
	jsonbuf_begin(jb);
	jsonbuf_u64(jb, "id", e->id);
	jsonbuf_u64(jb, "leaf_index", e->leaf_index);
	if (!e->raw || event_json_put(jb, e->raw, e->len) < 0) {
		/* Altered storage; /verify says more. Still listed, not hidden. */
		jsonbuf_str(jb, "agent_id", e->agent_id);
		jsonbuf_u64(jb, "epoch", e->epoch);
		jsonbuf_u64(jb, "seq", e->seq);
		jsonbuf_str(jb, "error", e->raw ? "the stored bytes are not a dbward.v1.Event"
						: "the event's bytes are missing: its batch payload "
						  "was deleted or altered");
	}
}

/* --- events -------------------------------------------------------------------- */

/* Closes a page's list: a full page may have more after it, and so may
 * one cut short (@cut). */
static void page_end(struct list_walk *w, uint32_t limit, bool cut)
{
	doc_text(&w->doc, "],\"next_after\":");
	doc_u64_or_null(&w->doc, w->last_id, w->count == limit || (cut && w->count));
}

static int events_item(void *arg, const struct store_event *e)
{
	struct list_walk *w = arg;

	put_event(&w->item, e);
	w->count++;
	w->last_id = e->id;
	return doc_item(&w->doc, &w->item);
}

static void api_events(const struct api *api, const struct query *q, struct api_reply *reply)
{
	struct store_filter f;
	struct list_walk w;
	char err[QUERY_ERR_LEN];
	bool cut;
	int rc;

	if (query_filter(q, &f, err, sizeof(err)) < 0) {
		api_error(reply, 400, err);
		return;
	}
	list_begin(&w, "events");
	rc = store_events_page(api->store, &f, STORE_PAGE_READ_BUDGET, events_item, &w, &cut);
	if (rc >= 0)
		page_end(&w, f.limit, cut);
	list_end(&w, rc, "}", reply);
}

static int event_one(void *arg, const struct store_event *e)
{
	struct jsonbuf *jb = arg;

	put_event(jb, e);
	return 0;
}

static void api_event(const struct api *api, uint64_t id, struct api_reply *reply)
{
	struct jsonbuf jb;
	int rc;

	jsonbuf_init(&jb);
	rc = store_event_by_id(api->store, id, event_one, &jb);
	if (rc < 0) {
		jsonbuf_release(&jb);
		store_failed(reply, rc, "no event with this id");
		return;
	}
	reply_jsonbuf(reply, &jb);
}

/* --- sessions, alerts, agents ----------------------------------------------------- */

static int sessions_item(void *arg, const struct store_session *s)
{
	struct list_walk *w = arg;
	struct jsonbuf *jb = &w->item;

	jsonbuf_begin(jb);
	jsonbuf_str(jb, "session_id", s->session_id);
	jsonbuf_str(jb, "agent_id", s->agent_id);
	put_time(jb, "first_ts", s->first_ts);
	put_time(jb, "last_ts", s->last_ts);
	jsonbuf_u64(jb, "statements", s->statements);
	jsonbuf_u64(jb, "denied", s->denied);
	jsonbuf_bool(jb, "closed", s->closed);
	put_id(jb, "open_event_id", s->open_event_id);
	return doc_item(&w->doc, jb);
}

static void api_sessions(const struct api *api, const struct query *q, struct api_reply *reply)
{
	struct store_filter f;
	struct list_walk w;
	char err[QUERY_ERR_LEN];

	if (query_filter(q, &f, err, sizeof(err)) < 0) {
		api_error(reply, 400, err);
		return;
	}
	list_begin(&w, "sessions");
	list_end(&w, store_sessions(api->store, &f, sessions_item, &w), "]}", reply);
}

static int alerts_item(void *arg, const struct store_alert *a)
{
	struct list_walk *w = arg;
	struct jsonbuf *jb = &w->item;

	jsonbuf_begin(jb);
	jsonbuf_u64(jb, "id", a->id);
	put_time(jb, "ts", a->ts);
	jsonbuf_str(jb, "agent_id", a->agent_id);
	jsonbuf_u64(jb, "epoch", a->epoch);
	jsonbuf_str(jb, "kind", a->kind);
	jsonbuf_str(jb, "detail", a->detail);
	w->count++;
	w->last_id = a->id;
	return doc_item(&w->doc, jb);
}

static void api_alerts(const struct api *api, const struct query *q, struct api_reply *reply)
{
	struct store_filter f;
	struct list_walk w;
	char err[QUERY_ERR_LEN];
	uint64_t total = 0;
	int rc;

	if (query_page(q, &f, err, sizeof(err)) < 0) {
		api_error(reply, 400, err);
		return;
	}
	list_begin(&w, "alerts");
	rc = store_alerts(api->store, f.after_id, f.limit, alerts_item, &w);
	if (rc >= 0)
		rc = store_alert_count(api->store, &total);
	if (rc >= 0) {
		page_end(&w, f.limit, false);
		doc_text(&w.doc, ",\"total\":");
		doc_u64_or_null(&w.doc, total, true);
	}
	list_end(&w, rc, "}", reply);
}

/* The agents' list pages by a cursor, not a row id. */
struct agents_walk {
	struct list_walk list;
	char last[QUERY_MAX_VALUE + 1];	/* AGENT_ID@EPOCH of the last row */
};

static int agents_item(void *arg, const struct store_agent *a)
{
	struct agents_walk *w = arg;
	struct jsonbuf *jb = &w->list.item;

	jsonbuf_begin(jb);
	jsonbuf_str(jb, "agent_id", a->agent_id);
	jsonbuf_u64(jb, "epoch", a->epoch);
	jsonbuf_u64(jb, "acked_seq", a->acked_seq);
	jsonbuf_u64(jb, "events", a->events);
	put_time(jb, "last_ts", a->last_ts);
	w->list.count++;
	snprintf(w->last, sizeof(w->last), "%s@%" PRIu64, a->agent_id, a->epoch);
	return doc_item(&w->list.doc, jb);
}

static void api_agents(const struct api *api, const struct query *q, struct api_reply *reply)
{
	struct agent_page page;
	struct agents_walk w;
	struct jsonbuf *tail = &w.list.item;
	char err[QUERY_ERR_LEN];
	uint64_t total = 0;
	int rc;

	if (query_agent_page(q, &page, err, sizeof(err)) < 0) {
		api_error(reply, 400, err);
		return;
	}
	list_begin(&w.list, "agents");
	rc = store_agents(api->store, &page.after, page.limit, agents_item, &w);
	if (rc >= 0)
		rc = store_agent_count(api->store, &total);
	if (rc >= 0) {
		jsonbuf_begin(tail);
		if (w.list.count == page.limit)
			jsonbuf_str(tail, "next_after", w.last);
		else
			jsonbuf_null(tail, "next_after");
		jsonbuf_u64(tail, "total", total);
		doc_text(&w.list.doc, "],");
		doc_close_object(&w.list.doc, tail);
	}
	list_end(&w.list, rc, "", reply);
}

/* --- the ledger ------------------------------------------------------------------ */

static void api_tree_head(const struct api *api, struct api_reply *reply)
{
	struct signed_tree_head head;
	struct jsonbuf jb;
	int rc = store_tree_head(api->store, &head);

	if (rc < 0) {
		store_failed(reply, rc, "the ledger is empty: no tree head yet");
		return;
	}
	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	tree_head_json(&jb, NULL, &head);
	put_public_key(&jb, api->key);
	reply_jsonbuf(reply, &jb);
}

/* The newest head, flat as tree-head's, with the proof that the tree of
 * @old_size leaves is its prefix. */
static void api_consistency(const struct api *api, uint64_t old_size, struct api_reply *reply)
{
	struct signed_tree_head head;
	merkle_hash proof[MERKLE_MAX_PROOF];
	struct jsonbuf jb;
	char msg[128];
	size_t n;
	int rc = store_consistency(api->store, old_size, &head, proof, &n);

	if (rc == -ERANGE) {
		snprintf(msg, sizeof(msg), "no tree of size %llu: the ledger has %llu leaves",
			 (unsigned long long)old_size, (unsigned long long)head.size);
		api_error(reply, 404, msg);
		return;
	}
	if (rc < 0) {
		store_failed(reply, rc, "the ledger is empty: no tree head yet");
		return;
	}
	jsonbuf_init(&jb);
	jsonbuf_begin(&jb);
	jsonbuf_u64(&jb, "from_size", old_size);
	tree_head_json(&jb, NULL, &head);
	put_public_key(&jb, api->key);
	proof_json(&jb, "proof", (const merkle_hash *)proof, n);
	reply_jsonbuf(reply, &jb);
}

static void api_receipt(const struct api *api, uint64_t id, struct api_reply *reply)
{
	struct receipt r;
	struct jsonbuf jb;
	int rc;

	memset(&r, 0, sizeof(r));
	rc = store_receipt(api->store, id, &r);
	if (rc < 0) {
		store_failed(reply, rc, "no event with this id in the ledger");
		return;
	}
	signing_public(api->key, r.public_key);
	jsonbuf_init(&jb);
	rc = receipt_to_json(&r, &jb);
	receipt_release(&r);
	if (rc < 0) {
		jsonbuf_release(&jb);
		api_error(reply, 500, "cannot render the receipt");
		return;
	}
	reply->status = 200;
	reply->body = jb.data;
	reply->len = jb.len;
}

static int problems_item(void *arg, const struct store_problem *p)
{
	struct list_walk *w = arg;
	struct jsonbuf *jb = &w->item;
	bool about_agent = p->agent_id != NULL;

	if (++w->count > API_MAX_PROBLEMS)
		return 0;
	jsonbuf_begin(jb);
	put_id(jb, "event_id", p->event_id);
	jsonbuf_str(jb, "agent_id", p->agent_id);
	if (about_agent) {
		jsonbuf_u64(jb, "epoch", p->epoch);
		jsonbuf_u64(jb, "seq", p->seq);
	} else {
		jsonbuf_null(jb, "epoch");
		jsonbuf_null(jb, "seq");
	}
	jsonbuf_str(jb, "what", p->what);
	return doc_item(&w->doc, jb);
}

static void api_verify(const struct api *api, struct api_reply *reply)
{
	struct store_verify_stats stats = { 0 };
	struct list_walk problems;
	struct jsonbuf head;
	struct doc doc = { 0 };
	int rc;

	memset(&problems, 0, sizeof(problems));
	jsonbuf_init(&problems.item);
	rc = store_verify(api->store, api->verify_key, problems_item, &problems, &stats);
	jsonbuf_release(&problems.item);
	if (rc < 0 || problems.doc.failed) {
		free(problems.doc.data);
		store_failed(reply, rc < 0 ? rc : -ENOMEM, "not found");
		return;
	}
	jsonbuf_init(&head);
	jsonbuf_begin(&head);
	jsonbuf_bool(&head, "ok", rc == 0);
	jsonbuf_u64(&head, "events", stats.events);
	jsonbuf_u64(&head, "tree_size", stats.tree_size);
	jsonbuf_u64(&head, "agents", stats.agents);
	doc_open_object(&doc, &head);
	jsonbuf_release(&head);
	doc_text(&doc, ",\"problems\":[");
	doc_raw(&doc, problems.doc.data ? problems.doc.data : "", problems.doc.len);
	doc_text(&doc, "]}");
	free(problems.doc.data);
	doc_reply(&doc, reply);
}

/* --- routing ----------------------------------------------------------------------- */

struct route {
	const char *name;
	enum { ROUTE_LIST, ROUTE_ONE, ROUTE_PLAIN } shape;
	union {
		void (*list)(const struct api *, const struct query *, struct api_reply *);
		void (*one)(const struct api *, uint64_t, struct api_reply *);
		void (*plain)(const struct api *, struct api_reply *);
	};
};

static const struct route routes[] = {
	{ "events", ROUTE_LIST, { .list = api_events } },
	{ "events/", ROUTE_ONE, { .one = api_event } },
	{ "sessions", ROUTE_LIST, { .list = api_sessions } },
	{ "receipts/", ROUTE_ONE, { .one = api_receipt } },
	{ "tree-head", ROUTE_PLAIN, { .plain = api_tree_head } },
	{ "consistency/", ROUTE_ONE, { .one = api_consistency } },
	{ "verify", ROUTE_PLAIN, { .plain = api_verify } },
	{ "alerts", ROUTE_LIST, { .list = api_alerts } },
	{ "agents", ROUTE_LIST, { .list = api_agents } },
};

static bool route_matches(const struct route *r, const char *path)
{
	size_t n = strlen(r->name);

	if (r->shape == ROUTE_ONE)
		return strncmp(path, r->name, n) == 0;
	return strcmp(path, r->name) == 0;
}

void api_handle(const struct api *api, const char *path, const struct query *q,
		struct api_reply *reply)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		const struct route *r = &routes[i];
		uint64_t id;

		if (!route_matches(r, path))
			continue;
		switch (r->shape) {
		case ROUTE_LIST:
			r->list(api, q, reply);
			return;
		case ROUTE_PLAIN:
			r->plain(api, reply);
			return;
		case ROUTE_ONE:
			if (query_parse_id(path + strlen(r->name), &id) < 0) {
				api_error(reply, 400, "the id must be a positive decimal number");
				return;
			}
			r->one(api, id, reply);
			return;
		}
	}
	api_error(reply, 404, "no such endpoint (see docs/collector.md)");
}
