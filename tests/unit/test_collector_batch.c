/*
 * collector/batch.c and the budgeted unpack in common/wire.c: events that
 * would blow up in memory, or whose bytes are not their one encoding, are
 * refused before anything reaches the store.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "collector/batch.h"
#include "common/wire.h"
#include "dbward/v1/audit.pb-c.h"

struct bytes {
	uint8_t *p;
	size_t len;
};

static struct bytes event_with(const char *agent_id, size_t n_tables)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	char **tables = calloc(n_tables + 1, sizeof(*tables));
	struct bytes b;

	cr_assert_not_null(tables);
	for (size_t i = 0; i < n_tables; i++)
		tables[i] = (char *)"";
	ev.agent_id = (char *)agent_id;
	ev.epoch = 1;
	ev.seq = 1;
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &st;
	st.sql = (char *)"SELECT 1";
	st.n_tables = n_tables;
	st.tables = tables;
	b.len = dbward__v1__event__get_packed_size(&ev);
	b.p = malloc(b.len + 16);
	cr_assert_not_null(b.p);
	dbward__v1__event__pack(&ev, b.p);
	free(tables);
	return b;
}

/* zstd(Batch{events: @evs}) through batch_ingest, with no store behind. */
static void ingest_many(const struct bytes *evs, size_t n, struct batch_result *res)
{
	Dbward__V1__Batch batch = DBWARD__V1__BATCH__INIT;
	ProtobufCBinaryData *items = calloc(n, sizeof(*items));
	struct batch_ctx ctx = { .max_events = 10000 };
	uint8_t *raw, *z;
	size_t len, zlen;

	cr_assert_not_null(items);
	for (size_t i = 0; i < n; i++)
		items[i] = (ProtobufCBinaryData){ evs[i].len, evs[i].p };
	batch.n_events = n;
	batch.events = items;
	len = dbward__v1__batch__get_packed_size(&batch);
	raw = malloc(len);
	cr_assert_not_null(raw);
	dbward__v1__batch__pack(&batch, raw);
	cr_assert_eq(wire_compress(raw, len, 3, &z, &zlen), 0);
	batch_ingest(&ctx, "agent-1", z, zlen, res);
	free(items);
	free(raw);
	free(z);
}

static void ingest_one(const struct bytes *ev, struct batch_result *res)
{
	ingest_many(ev, 1, res);
}

Test(collector_batch, a_plain_event_unpacks_within_its_budget)
{
	struct bytes b = event_with("agent-1", 3);
	Dbward__V1__Event *ev;

	cr_assert_eq(wire_event_unpack(b.p, b.len, &ev), 0);
	cr_assert_eq(ev->statement->n_tables, 3);
	wire_event_free(ev);
	cr_assert_eq(wire_event_unpack(b.p, b.len - 1, &ev), -EBADMSG);
	free(b.p);
}

Test(collector_batch, empty_repeated_strings_exhaust_the_budget)
{
	struct bytes b = event_with("agent-1", 1000000);
	struct batch_result res;
	Dbward__V1__Event *ev;

	cr_assert_eq(wire_event_unpack(b.p, b.len, &ev), -ENOMEM);
	ingest_one(&b, &res);
	cr_assert_not(res.ok);
	cr_assert_str_eq(res.error, "event 0 cannot be decoded within its memory budget");
	free(b.p);
}

Test(collector_batch, unknown_fields_are_refused)
{
	struct bytes b = event_with("agent-1", 0);
	struct batch_result res;

	/* field 99, varint 1: a field this schema does not know */
	b.p[b.len++] = 0x98;
	b.p[b.len++] = 0x06;
	b.p[b.len++] = 0x01;
	ingest_one(&b, &res);
	cr_assert_not(res.ok);
	cr_assert(strstr(res.error, "event 0 is not in canonical encoding"), "%s", res.error);
	free(b.p);
}

Test(collector_batch, a_nul_inside_agent_id_is_refused)
{
	struct bytes b = event_with("agent-1Xevil", 0);
	struct batch_result res;
	uint8_t *x = memchr(b.p, 'X', b.len);

	cr_assert_not_null(x);
	*x = '\0';		/* "agent-1\0evil": strcmp would call it agent-1 */
	ingest_one(&b, &res);
	cr_assert_not(res.ok);
	cr_assert(strstr(res.error, "event 0 is not in canonical encoding"), "%s", res.error);
	free(b.p);
}

static void add_unknown_field(struct bytes *b)
{
	b->p[b->len++] = 0x98;	/* field 99, varint 1 */
	b->p[b->len++] = 0x06;
	b->p[b->len++] = 0x01;
}

/* A refusal names the first bad event, wherever it is in the batch. */
Test(collector_batch, a_large_batch_names_its_first_refused_event)
{
	enum { N = 600 };
	struct bytes evs[N];
	struct batch_result res;

	for (size_t i = 0; i < N; i++)
		evs[i] = event_with("agent-1", 0);
	add_unknown_field(&evs[450]);
	ingest_many(evs, N, &res);
	cr_assert_not(res.ok);
	cr_assert_eq(res.events, N);
	cr_assert(strstr(res.error, "event 450 is not in canonical encoding"), "%s", res.error);

	add_unknown_field(&evs[100]);
	ingest_many(evs, N, &res);
	cr_assert_not(res.ok);
	cr_assert(strstr(res.error, "event 100 is not in canonical encoding"), "%s", res.error);

	for (size_t i = 0; i < N; i++)
		free(evs[i].p);
}

/* Every event's epoch is checked against event 0's, not just the next one's. */
Test(collector_batch, an_epoch_change_late_in_a_large_batch_is_refused)
{
	enum { N = 600 };
	struct bytes evs[N];
	struct batch_result res;
	Dbward__V1__Event *ev;

	for (size_t i = 0; i < N; i++)
		evs[i] = event_with("agent-1", 0);
	cr_assert_eq(wire_event_unpack(evs[500].p, evs[500].len, &ev), 0);
	ev->epoch = 2;
	evs[500].len = dbward__v1__event__pack(ev, evs[500].p);
	wire_event_free(ev);
	ingest_many(evs, N, &res);
	cr_assert_not(res.ok);
	cr_assert_str_eq(res.error, "event 500 has epoch 2, the batch began in epoch 1");
	for (size_t i = 0; i < N; i++)
		free(evs[i].p);
}
