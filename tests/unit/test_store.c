/*
 * The collector's store: appending (dedupe, gaps, chains), queries,
 * receipts and verification, each against SQLite in a temporary folder
 * and, when DBWARD_TEST_PG_URL names a PostgreSQL server, against a
 * throwaway database there too (store_pg tests; skipped otherwise).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/sha.h>
#include <postgresql/libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "collector/store.h"
#include "common/clock.h"
#include "common/event_json.h"
#include "common/receipt.h"
#include "common/signing.h"

/* --- a fresh store per test ----------------------------------------------- */

struct fixture {
	bool pg;
	char dir[64];
	char url[512];
	char pg_admin[512];	/* the server's URL as given */
	char pg_db[64];
	struct store *s;
	struct signing_key *key;
	struct verify_key *vk;
	bool inline_bytes;	/* append() without the batch's payload */
	size_t batch_padding;	/* append(): bytes of a field no event is in */
};

static struct fixture fx;

static void pg_admin_exec(const char *sql)
{
	PGconn *pg = PQconnectdb(fx.pg_admin);
	PGresult *res;

	cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
	res = PQexec(pg, sql);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql,
		     PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(pg);
}

/* The store's URL: the server's, naming a database of our own. */
static void pg_create_database(void)
{
	const char *base = getenv("DBWARD_TEST_PG_URL");
	char sql[128];

	snprintf(fx.pg_admin, sizeof(fx.pg_admin), "%s", base);
	snprintf(fx.pg_db, sizeof(fx.pg_db), "dbward_test_%d_%ld", (int)getpid(),
		 (long)(clock_monotonic_ns() % 1000000000));
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", fx.pg_db);
	pg_admin_exec(sql);
	snprintf(fx.url, sizeof(fx.url), "%s%sdbname=%s", base, strchr(base, '?') ? "&" : "?",
		 fx.pg_db);
}

static void store_reopen(void)
{
	char err[STORE_ERR_LEN];

	store_close(fx.s);
	fx.s = NULL;
	cr_assert_eq(store_open(fx.url, &fx.s, err, sizeof(err)), 0, "%s", err);
}

static void setup(bool pg)
{
	char path[128], err[SIGNING_ERR_LEN];
	uint8_t pub[SIGNING_PUB_LEN];

	memset(&fx, 0, sizeof(fx));
	fx.pg = pg;
	strcpy(fx.dir, "/tmp/dbward-store-XXXXXX");
	cr_assert_not_null(mkdtemp(fx.dir));
	if (pg)
		pg_create_database();
	else
		snprintf(fx.url, sizeof(fx.url), "sqlite:%s/audit.db", fx.dir);
	snprintf(path, sizeof(path), "%s/ledger.key", fx.dir);
	cr_assert_eq(signing_key_load(path, true, &fx.key, err, sizeof(err)), 0, "%s", err);
	signing_public(fx.key, pub);
	cr_assert_eq(verify_key_from_raw(pub, &fx.vk), 0);
	store_reopen();
}

static void setup_sqlite(void)
{
	setup(false);
}

static void setup_pg(void)
{
	if (getenv("DBWARD_TEST_PG_URL"))
		setup(true);
}

static void teardown(void)
{
	char cmd[160];

	store_close(fx.s);
	fx.s = NULL;
	signing_key_free(fx.key);
	verify_key_free(fx.vk);
	if (fx.pg_db[0]) {
		snprintf(cmd, sizeof(cmd), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx.pg_db);
		pg_admin_exec(cmd);
	}
	if (fx.dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
		if (system(cmd) != 0)
			cr_log_warn("could not remove %s", fx.dir);
	}
}

/* Each case runs on both backends. */
#define STORE_TEST(name)                                                                \
	static void case_##name(void);                                                  \
	Test(store_sqlite, name, .init = setup_sqlite, .fini = teardown)                \
	{                                                                               \
		case_##name();                                                          \
	}                                                                               \
	Test(store_pg, name, .init = setup_pg, .fini = teardown)                        \
	{                                                                               \
		if (!fx.s)                                                              \
			cr_skip_test("DBWARD_TEST_PG_URL is not set");                  \
		case_##name();                                                          \
	}                                                                               \
	static void case_##name(void)

/* --- events ---------------------------------------------------------------- */

struct spec {
	const char *kind;		/* statement (default) | connection_open | connection_close */
	const char *session;
	int pid;			/* 0: no identity */
	const char *comm, *user, *pod_uid, *pod_name, *pod_ns;
	const char *db_user, *database, *verdict, *sql;
	uint64_t ts;
	bool no_session;		/* no Session at all: nothing says who */
};

/* One agent's chain: what the next event's seq and prev_hash are. */
struct chain {
	const char *agent;
	uint64_t epoch;
	uint64_t seq;			/* of the last event made */
	uint8_t prev[EVENT_HASH_LEN];
};

struct event_bytes {
	uint8_t *raw;
	size_t len;
};

static struct event_bytes pack(const struct chain *ch, uint64_t seq, const uint8_t prev[32],
			       const struct spec *sp)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Session session = DBWARD__V1__SESSION__INIT;
	Dbward__V1__Identity id = DBWARD__V1__IDENTITY__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	Dbward__V1__ConnectionOpen open = DBWARD__V1__CONNECTION_OPEN__INIT;
	Dbward__V1__ConnectionClose close = DBWARD__V1__CONNECTION_CLOSE__INIT;
	const char *kind = sp->kind ? sp->kind : "statement";
	struct event_bytes b;

	ev.agent_id = (char *)ch->agent;
	ev.epoch = ch->epoch;
	ev.seq = seq;
	ev.ts = sp->ts ? sp->ts : 1700000000000000000ull + seq * 1000;
	ev.prev_hash.data = (uint8_t *)prev;
	ev.prev_hash.len = EVENT_HASH_LEN;
	ev.session = sp->no_session ? NULL : &session;
	session.session_id = (char *)(sp->session ? sp->session : "s-1");
	session.db_user = (char *)(sp->db_user ? sp->db_user : "app");
	session.database = (char *)(sp->database ? sp->database : "shop");
	if (sp->pid) {
		session.identity = &id;
		id.pid = (uint32_t)sp->pid;
		id.comm = (char *)(sp->comm ? sp->comm : "psql");
		id.user = (char *)(sp->user ? sp->user : "alice");
		id.pod_uid = (char *)(sp->pod_uid ? sp->pod_uid : "");
		id.pod_name = (char *)(sp->pod_name ? sp->pod_name : "");
		id.pod_namespace = (char *)(sp->pod_ns ? sp->pod_ns : "");
	}
	if (strcmp(kind, "connection_open") == 0) {
		ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_OPEN;
		ev.connection_open = &open;
	} else if (strcmp(kind, "connection_close") == 0) {
		ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE;
		ev.connection_close = &close;
	} else {
		ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
		ev.statement = &st;
		st.sql = (char *)(sp->sql ? sp->sql : "SELECT 1");
		st.verdict = (char *)(sp->verdict ? sp->verdict : "allow");
		st.statement_kind = (char *)"select";
		st.rows = -1;
	}
	b.len = dbward__v1__event__get_packed_size(&ev);
	b.raw = malloc(b.len);
	cr_assert_not_null(b.raw);
	dbward__v1__event__pack(&ev, b.raw);
	return b;
}

/* The chain's next event. */
static struct event_bytes chain_next(struct chain *ch, const struct spec *sp)
{
	static const struct spec plain = { .pid = 4242 };
	struct event_bytes b = pack(ch, ch->seq + 1, ch->prev, sp ? sp : &plain);

	ch->seq++;
	SHA256(b.raw, b.len, ch->prev);
	return b;
}

static void bytes_free(struct event_bytes *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(b[i].raw);
}

/* The batch @n events came in, as an agent sends it: a dbward.v1.Batch
 * (field 1, each event's bytes) in @plain, compressed in @data; each
 * in[i].raw points at its event inside @plain. */
struct test_batch {
	struct store_payload p;
	uint8_t *plain, *data;
};

static void batch_make(struct test_batch *tb, const struct event_bytes *b, size_t n,
		       struct store_event_in *in)
{
	size_t len = 1 + 10 + fx.batch_padding, at = 0, cap;

	for (size_t i = 0; i < n; i++)
		len += 1 + 10 + b[i].len;
	tb->plain = malloc(len);
	cr_assert_not_null(tb->plain);
	for (size_t i = 0; i < n; i++) {
		uint64_t v = b[i].len;

		tb->plain[at++] = 0x0a;	/* field 1, length-delimited */
		do {
			tb->plain[at++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
			v >>= 7;
		} while (v);
		memcpy(tb->plain + at, b[i].raw, b[i].len);
		in[i].raw = tb->plain + at;
		in[i].len = b[i].len;
		at += b[i].len;
	}
	if (fx.batch_padding) {
		uint64_t v = fx.batch_padding;

		tb->plain[at++] = 0x7a;	/* field 15, length-delimited: a newer agent's */
		do {
			tb->plain[at++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
			v >>= 7;
		} while (v);
		memset(tb->plain + at, 0, fx.batch_padding);
		at += fx.batch_padding;
	}
	cap = ZSTD_compressBound(at);
	tb->data = malloc(cap);
	cr_assert_not_null(tb->data);
	tb->p = (struct store_payload){ .plain = tb->plain, .plain_len = at, .data = tb->data };
	tb->p.len = ZSTD_compress(tb->data, cap, tb->plain, at, 3);
	cr_assert(!ZSTD_isError(tb->p.len));
}

static void batch_free(struct test_batch *tb)
{
	free(tb->plain);
	free(tb->data);
}

/* Appends @n events as the collector would: the batch they came in, its
 * events' bytes and them decoded (fx.inline_bytes: without the batch). */
static int append(const char *agent, const struct event_bytes *b, size_t n,
		  struct store_append_result *res)
{
	struct store_event_in *in = calloc(n + 1, sizeof(*in));
	struct test_batch tb = { .plain = NULL };
	char err[STORE_ERR_LEN];
	int rc;

	cr_assert_not_null(in);
	for (size_t i = 0; i < n; i++) {
		in[i].raw = b[i].raw;
		in[i].len = b[i].len;
		in[i].ev = dbward__v1__event__unpack(NULL, b[i].len, b[i].raw);
		cr_assert_not_null(in[i].ev);
	}
	if (fx.inline_bytes) {
		rc = store_append(fx.s, agent, in, n, fx.key, res, err, sizeof(err));
	} else {
		batch_make(&tb, b, n, in);
		rc = store_append_batch(fx.s, agent, in, n, &tb.p, fx.key, res, err, sizeof(err));
	}
	if (rc)
		cr_log_info("store_append: %s", err);
	for (size_t i = 0; i < n; i++)
		dbward__v1__event__free_unpacked((Dbward__V1__Event *)in[i].ev, NULL);
	batch_free(&tb);
	free(in);
	return rc;
}

/* Makes and appends @n plain events of @ch. */
static void append_plain(struct chain *ch, size_t n)
{
	struct event_bytes *b = calloc(n, sizeof(*b));
	struct store_append_result res;

	for (size_t i = 0; i < n; i++)
		b[i] = chain_next(ch, NULL);
	cr_assert_eq(append(ch->agent, b, n, &res), 0);
	cr_assert_eq(res.accepted, n);
	bytes_free(b, n);
	free(b);
}

/* --- reading back ---------------------------------------------------------- */

struct collected {
	size_t n;
	uint64_t ids[512];
	uint64_t seqs[512];
};

static int collect_event(void *arg, const struct store_event *e)
{
	struct collected *c = arg;

	if (c->n < 512) {
		c->ids[c->n] = e->id;
		c->seqs[c->n] = e->seq;
	}
	c->n++;
	return 0;
}

static size_t count_events(const struct store_filter *f)
{
	struct collected c = { 0 };

	cr_assert_eq(store_events(fx.s, f, collect_event, &c), 0);
	return c.n;
}

struct alerts {
	size_t n;
	char kinds[16][16];
	char details[16][128];
};

static int collect_alert(void *arg, const struct store_alert *a)
{
	struct alerts *al = arg;

	if (al->n < 16) {
		snprintf(al->kinds[al->n], sizeof(al->kinds[0]), "%s", a->kind);
		snprintf(al->details[al->n], sizeof(al->details[0]), "%s", a->detail);
	}
	al->n++;
	return 0;
}

struct problems {
	size_t n;
	uint64_t ids[64];
	char what[64][320];
};

static int collect_problem(void *arg, const struct store_problem *p)
{
	struct problems *pr = arg;

	if (pr->n < 64) {
		pr->ids[pr->n] = p->event_id;
		snprintf(pr->what[pr->n], sizeof(pr->what[0]), "%s", p->what);
	}
	cr_log_info("problem: event %llu (agent %s, epoch %llu, seq %llu): %s",
		    (unsigned long long)p->event_id, p->agent_id ? p->agent_id : "-",
		    (unsigned long long)p->epoch, (unsigned long long)p->seq, p->what);
	pr->n++;
	return 0;
}

static int verify(struct problems *pr)
{
	struct store_verify_stats st;

	memset(pr, 0, sizeof(*pr));
	return store_verify(fx.s, fx.vk, collect_problem, pr, &st);
}

/* A problem about event @id whose text contains @text. */
static bool has_problem(const struct problems *pr, uint64_t id, const char *text)
{
	for (size_t i = 0; i < pr->n && i < 64; i++)
		if (pr->ids[i] == id && strstr(pr->what[i], text))
			return true;
	return false;
}

/* --- tampering, straight in the database ------------------------------------ */

static void tamper(const char *sqlite_sql, const char *pg_sql)
{
	char path[600];

	if (fx.pg) {
		PGconn *pg = PQconnectdb(fx.url);
		PGresult *res = PQexec(pg, pg_sql);

		cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s",
			     PQresultErrorMessage(res));
		cr_assert_eq(strcmp(PQcmdTuples(res), "1"), 0, "%s touched %s rows", pg_sql,
			     PQcmdTuples(res));
		PQclear(res);
		PQfinish(pg);
	} else {
		sqlite3 *db;
		char *msg = NULL;

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_exec(db, sqlite_sql, NULL, NULL, &msg), SQLITE_OK, "%s", msg);
		cr_assert_eq(sqlite3_changes(db), 1, "%s", sqlite_sql);
		sqlite3_close(db);
	}
}

static void tamper_both(const char *sql)
{
	tamper(sql, sql);
}

struct raw_copy {
	uint8_t *raw;
	size_t len;
};

static int copy_raw(void *arg, const struct store_event *e)
{
	struct raw_copy *rc = arg;

	rc->raw = malloc(e->len);
	memcpy(rc->raw, e->raw, e->len);
	rc->len = e->len;
	return 0;
}

static void flip_raw_byte(uint64_t id, size_t at)
{
	struct raw_copy rc = { 0 };
	char path[600];

	cr_assert_eq(store_event_by_id(fx.s, id, copy_raw, &rc), 0);
	cr_assert_gt(rc.len, at);
	rc.raw[at] ^= 0x20;
	if (fx.pg) {
		PGconn *pg = PQconnectdb(fx.url);
		char idtext[24];
		const char *values[] = { (const char *)rc.raw, idtext };
		int lengths[] = { (int)rc.len, 0 }, formats[] = { 1, 0 };
		PGresult *res;

		snprintf(idtext, sizeof(idtext), "%llu", (unsigned long long)id);
		res = PQexecParams(pg,
				   "UPDATE events SET raw_inline = $1, payload = NULL WHERE id = $2", 2,
				   NULL, values,
				   lengths, formats, 0);
		cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(pg);
	} else {
		sqlite3 *db;
		sqlite3_stmt *st;

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_prepare_v2(db,
						"UPDATE events SET raw_inline = ?, payload = NULL "
						"WHERE id = ?",
						-1, &st, NULL),
			     SQLITE_OK);
		sqlite3_bind_blob(st, 1, rc.raw, (int)rc.len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
		cr_assert_eq(sqlite3_step(st), SQLITE_DONE);
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	free(rc.raw);
}

/* --- appending --------------------------------------------------------------- */

STORE_TEST(empty_store_verifies_and_has_no_tree_head)
{
	struct signed_tree_head h;
	struct problems pr;

	cr_assert_eq(store_tree_head(fx.s, &h), -ENOENT);
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(append_stores_events_and_signs_a_tree_head)
{
	struct chain ch = { .agent = "agent-a", .epoch = 1 };
	struct store_filter all = { .pid = -1 };
	struct signed_tree_head h;
	struct problems pr;
	struct collected c = { 0 };

	append_plain(&ch, 5);
	append_plain(&ch, 3);
	cr_assert_eq(store_tree_head(fx.s, &h), 0);
	cr_assert_eq(h.size, 8);
	cr_assert(tree_head_verify(fx.vk, &h));
	cr_assert_eq(store_events(fx.s, &all, collect_event, &c), 0);
	cr_assert_eq(c.n, 8);
	for (size_t i = 0; i < 8; i++) {
		cr_assert_eq(c.ids[i], i + 1);
		cr_assert_eq(c.seqs[i], i + 1);
	}
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(same_batch_twice_counts_duplicates_and_leaves_the_tree)
{
	struct chain ch = { .agent = "agent-a", .epoch = 7 };
	struct event_bytes b[6];
	struct store_append_result res;
	struct signed_tree_head before, after;
	struct problems pr;

	for (int i = 0; i < 6; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-a", b, 6, &res), 0);
	cr_assert_eq(res.accepted, 6);
	cr_assert_eq(res.duplicates, 0);
	cr_assert_eq(res.epoch, 7);
	cr_assert_eq(res.acked_seq, 6);
	cr_assert_eq(store_tree_head(fx.s, &before), 0);

	cr_assert_eq(append("agent-a", b, 6, &res), 0);
	cr_assert_eq(res.accepted, 0);
	cr_assert_eq(res.duplicates, 6);
	cr_assert_eq(res.acked_seq, 6);
	cr_assert_eq(store_tree_head(fx.s, &after), 0);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0);

	/* Half old, half new: only the new ones become leaves. */
	bytes_free(b, 3);
	b[0] = b[4];
	b[1] = b[5];
	b[2] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-a", b, 3, &res), 0);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(res.duplicates, 2);
	cr_assert_eq(res.acked_seq, 7);
	free(b[2].raw);
	cr_assert_eq(store_tree_head(fx.s, &after), 0);
	cr_assert_eq(after.size, 7);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b + 3, 3);
}

STORE_TEST(alerts_come_in_pages_after_an_id_with_their_total)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[9];
	struct store_append_result res;
	struct alerts al = { 0 };
	uint64_t total;

	for (int i = 0; i < 9; i++)
		b[i] = chain_next(&ch, NULL);
	/* seq 1, 3, 5, 7, 9: four gaps, four alerts */
	for (int i = 0; i < 9; i += 2)
		cr_assert_eq(append("agent-p", b + i, 1, &res), 0);
	cr_assert_eq(store_alert_count(fx.s, &total), 0);
	cr_assert_eq(total, 4);
	cr_assert_eq(store_alerts(fx.s, 0, 3, collect_alert, &al), 0);
	cr_assert_eq(al.n, 3);
	cr_assert_str_eq(al.details[0], "seq 2 missing");
	cr_assert_str_eq(al.details[2], "seq 6 missing");
	memset(&al, 0, sizeof(al));
	cr_assert_eq(store_alerts(fx.s, 3, 3, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1, "the rest after the third");
	cr_assert_str_eq(al.details[0], "seq 8 missing");
	memset(&al, 0, sizeof(al));
	cr_assert_eq(store_alerts(fx.s, 4, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 0);
	bytes_free(b, 9);
}

STORE_TEST(a_gap_is_an_alert_and_filling_it_advances_acked)
{
	struct chain ch = { .agent = "agent-g", .epoch = 1 };
	struct event_bytes b[12];
	struct store_append_result res;
	struct alerts al = { 0 };
	struct problems pr;

	for (int i = 0; i < 12; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-g", b, 4, &res), 0);
	cr_assert_eq(res.acked_seq, 4);
	cr_assert_eq(append("agent-g", b + 9, 3, &res), 0);
	cr_assert_eq(res.accepted, 3);
	cr_assert_eq(res.acked_seq, 4);
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.kinds[0], "gap");
	cr_assert_str_eq(al.details[0], "seq 5..9 missing");
	/* A store with a gap does not verify: seq 5..9 are missing. */
	cr_assert_gt(verify(&pr), 0);

	/* Seq 5's prev_hash is checked against seq 4, read from its batch's
	 * payload (a failed read would be an "unchecked" alert). */
	cr_assert_eq(append("agent-g", b + 4, 5, &res), 0);
	cr_assert_eq(res.accepted, 5);
	cr_assert_eq(res.acked_seq, 12);
	memset(&al, 0, sizeof(al));
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1, "filling the gap raised another alert: %s", al.details[1]);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 12);
}

STORE_TEST(a_first_batch_not_at_seq_1_is_a_gap)
{
	struct chain ch = { .agent = "agent-late", .epoch = 2 };
	struct event_bytes b[4];
	struct store_append_result res;
	struct alerts al = { 0 };

	for (int i = 0; i < 4; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-late", b + 3, 1, &res), 0);
	cr_assert_eq(res.acked_seq, 0);
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.details[0], "seq 1..3 missing");
	cr_assert_eq(append("agent-late", b + 1, 1, &res), 0);
	cr_assert_eq(res.acked_seq, 0);
	memset(&al, 0, sizeof(al));
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 2);
	cr_assert_str_eq(al.details[1], "seq 1 missing");
	cr_assert_eq(append("agent-late", b, 1, &res), 0);
	cr_assert_eq(res.acked_seq, 2);
	cr_assert_eq(append("agent-late", b + 2, 1, &res), 0);
	cr_assert_eq(res.acked_seq, 4);
	bytes_free(b, 4);
}

STORE_TEST(a_resend_with_other_bytes_is_an_equivocation_alert_and_not_stored)
{
	struct chain ch = { .agent = "agent-e", .epoch = 1 };
	static const struct spec other = { .pid = 4242, .sql = "DROP TABLE evidence" };
	struct event_bytes b[3], forged;
	struct store_append_result res;
	struct alerts al = { 0 };
	struct problems pr;

	for (int i = 0; i < 3; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-e", b, 3, &res), 0);
	/* The same seq 2, other bytes; and seq 3 resent unchanged: no alert. */
	forged = pack(&ch, 2, ch.prev, &other);
	cr_assert_eq(append("agent-e", &forged, 1, &res), 0);
	cr_assert_eq(append("agent-e", b + 2, 1, &res), 0);
	cr_assert_eq(res.accepted, 0);
	cr_assert_eq(res.duplicates, 1);
	cr_assert_eq(res.acked_seq, 3);
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.kinds[0], "equivocation");
	cr_assert_str_eq(al.details[0], "seq 2 resent with different bytes");
	cr_assert_eq(verify(&pr), 0);
	free(forged.raw);
	bytes_free(b, 3);
}

/* Only the batch's own seqs are looked up: what lies between still counts. */
STORE_TEST(a_batch_of_far_apart_seqs_advances_acked_over_stored_ones)
{
	struct chain ch = { .agent = "agent-f", .epoch = 1 };
	struct event_bytes b[6], far;
	struct store_append_result res;
	struct alerts al = { 0 };

	for (int i = 0; i < 6; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-f", b, 3, &res), 0);
	cr_assert_eq(append("agent-f", b + 4, 1, &res), 0);	/* seq 5: a gap */
	cr_assert_eq(res.acked_seq, 3);
	/* seq 4 and 6 around the stored 5: acked over all three. */
	bytes_free(b, 2);
	b[0] = b[3];
	b[1] = b[5];
	cr_assert_eq(append("agent-f", b, 2, &res), 0);
	cr_assert_eq(res.accepted, 2);
	cr_assert_eq(res.acked_seq, 6);
	/* {1, 2^62}: a duplicate and a far seq; nothing between is read. */
	far = pack(&ch, 1ull << 62, ch.prev, &(struct spec){ .pid = 1 });
	cr_assert_eq(append("agent-f", (struct event_bytes[]){ b[2], far }, 2, &res), 0);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(res.duplicates, 1);
	cr_assert_eq(res.acked_seq, 6);
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 2, "%s / %s / %s", al.details[0], al.details[1], al.details[2]);
	cr_assert_str_eq(al.details[0], "seq 4 missing");
	cr_assert_str_eq(al.kinds[1], "gap");
	free(far.raw);
	bytes_free(b + 2, 4);
}

STORE_TEST(a_broken_chain_is_an_alert_and_still_stored)
{
	struct chain ch = { .agent = "agent-c", .epoch = 1 };
	struct event_bytes b[2];
	struct store_append_result res;
	struct alerts al = { 0 };
	struct problems pr;

	append_plain(&ch, 3);
	ch.prev[0] ^= 1;	/* seq 4 names a previous event that never was */
	b[0] = chain_next(&ch, NULL);
	b[1] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-c", b, 2, &res), 0);
	cr_assert_eq(res.accepted, 2);
	cr_assert_eq(res.acked_seq, 5);
	cr_assert_eq(store_alerts(fx.s, 0, 0, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.kinds[0], "chain");
	cr_assert_str_eq(al.details[0], "seq 4: prev_hash is not the hash of seq 3");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 4, "chain is broken"));
	bytes_free(b, 2);
}

STORE_TEST(a_batch_naming_another_agent_stores_nothing)
{
	struct chain ch = { .agent = "agent-x", .epoch = 1 };
	struct event_bytes b[2];
	struct store_append_result res;
	struct signed_tree_head h;

	b[0] = chain_next(&ch, NULL);
	b[1] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-y", b, 2, &res), -1);
	cr_assert_eq(store_tree_head(fx.s, &h), -ENOENT);
	bytes_free(b, 2);
}

struct agent_rows {
	size_t n;
	char ids[8][32];
	uint64_t epochs[8], acked[8], events[8];
};

static int collect_agent(void *arg, const struct store_agent *a)
{
	struct agent_rows *r = arg;

	if (r->n < 8) {
		snprintf(r->ids[r->n], sizeof(r->ids[0]), "%s", a->agent_id);
		r->epochs[r->n] = a->epoch;
		r->acked[r->n] = a->acked_seq;
		r->events[r->n] = a->events;
	}
	r->n++;
	return 0;
}

static struct agent_rows agents_after(const char *agent, uint64_t epoch, uint32_t limit)
{
	struct store_agent_cursor after = { agent, epoch };
	struct agent_rows r = { 0 };

	cr_assert_eq(store_agents(fx.s, &after, limit, collect_agent, &r), 0);
	return r;
}

STORE_TEST(agents_list_acked_seq_and_counts)
{
	struct chain a = { .agent = "agent-a", .epoch = 1 }, b = { .agent = "agent-b", .epoch = 3 };
	struct store_filter f = { .pid = -1, .agent_id = "agent-b" };
	struct agent_rows r;
	uint64_t total;

	append_plain(&a, 4);
	append_plain(&b, 2);
	append_plain(&a, 1);
	cr_assert_eq(count_events(&f), 2);
	f.agent_id = "agent-a";
	cr_assert_eq(count_events(&f), 5);

	r = agents_after(NULL, 0, 0);
	cr_assert_eq(r.n, 2);
	cr_assert_str_eq(r.ids[0], "agent-a");
	cr_assert_eq(r.epochs[0], 1);
	cr_assert_eq(r.acked[0], 5);
	cr_assert_eq(r.events[0], 5);
	cr_assert_str_eq(r.ids[1], "agent-b");
	cr_assert_eq(r.epochs[1], 3);
	cr_assert_eq(r.acked[1], 2);
	cr_assert_eq(r.events[1], 2);
	cr_assert_eq(store_agent_count(fx.s, &total), 0);
	cr_assert_eq(total, 2);
}

/* Pages run in (agent_id, epoch) order from just after the cursor: one
 * agent's epochs may span pages, and its epoch 0 comes first. */
STORE_TEST(agents_come_in_pages_after_an_agent_and_epoch)
{
	struct chain a0 = { .agent = "agent-a", .epoch = 0 };
	struct chain a7 = { .agent = "agent-a", .epoch = 7 };
	struct chain a9 = { .agent = "agent-a", .epoch = 9 };
	struct chain at = { .agent = "agent@b", .epoch = 2 };
	struct agent_rows r;
	uint64_t total;

	append_plain(&a9, 1);
	append_plain(&at, 1);
	append_plain(&a7, 1);
	append_plain(&a0, 1);
	cr_assert_eq(store_agent_count(fx.s, &total), 0);
	cr_assert_eq(total, 4);

	r = agents_after(NULL, 0, 2);
	cr_assert_eq(r.n, 2);
	cr_assert_str_eq(r.ids[0], "agent-a");
	cr_assert_eq(r.epochs[0], 0, "epoch 0 is a row like any other");
	cr_assert_eq(r.epochs[1], 7);

	r = agents_after("agent-a", 7, 2);
	cr_assert_eq(r.n, 2);
	cr_assert_str_eq(r.ids[0], "agent-a");
	cr_assert_eq(r.epochs[0], 9);
	cr_assert_str_eq(r.ids[1], "agent@b");

	r = agents_after("agent@b", 2, 2);
	cr_assert_eq(r.n, 0);
	r = agents_after("agent-a", 8, 0);
	cr_assert_eq(r.n, 2, "a cursor between rows starts at the next one");
	cr_assert_eq(r.epochs[0], 9);
}

/* --- reading ----------------------------------------------------------------- */

/* Two sessions of agent-a, one of agent-b, with every column varied. */
static void append_mixed(void)
{
	struct chain a = { .agent = "agent-a", .epoch = 1 }, b = { .agent = "agent-b", .epoch = 1 };
	const struct spec sa[] = {
		{ .kind = "connection_open", .session = "sa1", .pid = 100, .ts = 1000 },
		{ .session = "sa1", .pid = 100, .sql = "SELECT * FROM orders", .ts = 2000 },
		{ .session = "sa1", .pid = 100, .sql = "DROP TABLE orders", .verdict = "deny",
		  .ts = 3000 },
		{ .kind = "connection_close", .session = "sa1", .pid = 100, .ts = 4000 },
		{ .kind = "connection_open", .session = "sa2", .pid = 200, .comm = "python3",
		  .user = "bob", .pod_uid = "uid-9", .pod_name = "web-1", .pod_ns = "prod",
		  .db_user = "admin", .database = "billing", .ts = 5000 },
		{ .session = "sa2", .pid = 200, .comm = "python3", .user = "bob", .pod_uid = "uid-9",
		  .pod_name = "web-1", .pod_ns = "prod", .db_user = "admin", .database = "billing",
		  .sql = "UPDATE invoices SET paid = true WHERE 100% = '_x'", .ts = 6000 },
	};
	const struct spec sb[] = {
		{ .kind = "connection_open", .session = "sb1", .ts = 7000 },
		{ .session = "sb1", .sql = "select * from ORDERS", .ts = 8000 },
	};
	struct event_bytes ea[6], eb[2];
	struct store_append_result res;

	for (int i = 0; i < 6; i++)
		ea[i] = chain_next(&a, &sa[i]);
	for (int i = 0; i < 2; i++)
		eb[i] = chain_next(&b, &sb[i]);
	cr_assert_eq(append("agent-a", ea, 6, &res), 0);
	cr_assert_eq(append("agent-b", eb, 2, &res), 0);
	bytes_free(ea, 6);
	bytes_free(eb, 2);
}

/* Every filter over append_mixed()'s events (the identity ones go
 * through origins). */
static void check_mixed_filters(void)
{
	struct store_filter f = { .pid = -1 };

	cr_assert_eq(count_events(&f), 8);
#define NARROWS(field, value, want)                                                     \
	do {                                                                            \
		struct store_filter g = { .pid = -1 };                                  \
		g.field = value;                                                        \
		cr_assert_eq(count_events(&g), want, #field "=" #value);                \
	} while (0)
	NARROWS(since_ns, 3000, 6);
	NARROWS(until_ns, 3000, 2);
	NARROWS(agent_id, "agent-b", 2);
	NARROWS(pid, 200, 2);
	NARROWS(pid, 0, 0);
	NARROWS(comm, "python3", 2);
	NARROWS(user, "bob", 2);
	NARROWS(user, "alice", 4);
	NARROWS(pod, "uid-9", 2);
	NARROWS(pod, "web-1", 2);
	NARROWS(pod, "prod/web-1", 2);
	NARROWS(pod, "prod", 0);
	NARROWS(db_user, "admin", 2);
	NARROWS(database, "billing", 2);
	NARROWS(verdict, "deny", 1);
	NARROWS(verdict, "allow", 3);
	NARROWS(kind, "connection_open", 3);
	NARROWS(kind, "connection_close", 1);
	NARROWS(session_id, "sa1", 4);
	NARROWS(text, "orders", 2);	/* substring, case-sensitive */
	NARROWS(text, "ORDERS", 1);
	NARROWS(text, "100%", 1);	/* LIKE wildcards are plain text */
	NARROWS(text, "_x", 1);
	NARROWS(text, "%", 1);
	NARROWS(after_id, 6, 2);
	NARROWS(limit, 3, 3);
#undef NARROWS
	f.agent_id = "agent-a";
	f.session_id = "sa1";
	f.kind = "statement";
	cr_assert_eq(count_events(&f), 2);
	f.verdict = "deny";
	cr_assert_eq(count_events(&f), 1);
	f = (struct store_filter){ .pid = 200, .comm = "python3", .session_id = "sa2",
				   .since_ns = 6000 };
	cr_assert_eq(count_events(&f), 1);
	f.comm = "psql";
	cr_assert_eq(count_events(&f), 0);
}

STORE_TEST(each_filter_narrows)
{
	struct problems pr;

	append_mixed();
	check_mixed_filters();
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(paging_with_after_id_walks_every_event_once)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct store_filter f = { .pid = -1, .limit = 10 };
	uint64_t seen = 0;
	size_t pages = 0;

	append_plain(&ch, 25);
	for (;;) {
		struct collected c = { 0 };

		cr_assert_eq(store_events(fx.s, &f, collect_event, &c), 0);
		if (c.n == 0)
			break;
		pages++;
		for (size_t i = 0; i < c.n; i++)
			cr_assert_eq(c.ids[i], ++seen);
		f.after_id = c.ids[c.n - 1];
	}
	cr_assert_eq(seen, 25);
	cr_assert_eq(pages, 3);
}

STORE_TEST(event_by_id_finds_one_or_none)
{
	struct chain ch = { .agent = "agent-i", .epoch = 1 };
	struct collected c = { 0 };

	append_plain(&ch, 3);
	cr_assert_eq(store_event_by_id(fx.s, 2, collect_event, &c), 0);
	cr_assert_eq(c.n, 1);
	cr_assert_eq(c.seqs[0], 2);
	cr_assert_eq(store_event_by_id(fx.s, 99, collect_event, &c), -ENOENT);
}

struct sessions {
	size_t n;
	struct store_session s[8];	/* its strings are only valid in the callback */
	char ids[8][16];
	char agents[8][16];
};

static int collect_session(void *arg, const struct store_session *s)
{
	struct sessions *ss = arg;

	if (ss->n < 8) {
		ss->s[ss->n] = *s;
		snprintf(ss->ids[ss->n], sizeof(ss->ids[0]), "%s", s->session_id);
		snprintf(ss->agents[ss->n], sizeof(ss->agents[0]), "%s", s->agent_id);
	}
	ss->n++;
	return 0;
}

/* append_mixed()'s sessions, newest first, each summed whole. */
static void check_mixed_sessions(void)
{
	struct store_filter f = { .pid = -1 };
	struct sessions ss = { 0 };

	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 3);
	cr_assert_str_eq(ss.ids[0], "sb1");
	cr_assert_str_eq(ss.ids[1], "sa2");
	cr_assert_str_eq(ss.ids[2], "sa1");
	cr_assert_eq(ss.s[2].first_ts, 1000);
	cr_assert_eq(ss.s[2].last_ts, 4000);
	cr_assert_eq(ss.s[2].statements, 2);
	cr_assert_eq(ss.s[2].denied, 1);
	cr_assert(ss.s[2].closed);
	cr_assert_eq(ss.s[2].open_event_id, 1);
	cr_assert_not(ss.s[1].closed);
	cr_assert_eq(ss.s[1].open_event_id, 5);
	cr_assert_eq(ss.s[0].first_ts, 7000);
	cr_assert_eq(ss.s[0].statements, 1);
}

STORE_TEST(sessions_sum_up_their_events_newest_first)
{
	struct store_filter f = { .pid = -1 };
	struct sessions ss = { 0 };

	append_mixed();
	check_mixed_sessions();

	/* A session matches by any one of its events, and is summed whole. */
	memset(&ss, 0, sizeof(ss));
	f.verdict = "deny";
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.ids[0], "sa1");
	cr_assert_eq(ss.s[0].statements, 2);
	memset(&ss, 0, sizeof(ss));
	f.verdict = NULL;
	f.text = "ORDERS";
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.ids[0], "sb1");

	/* By who: through origins, inside a query that joins them too. */
	memset(&ss, 0, sizeof(ss));
	f = (struct store_filter){ .pid = 200 };
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.ids[0], "sa2");
	cr_assert_eq(ss.s[0].statements, 1);
	memset(&ss, 0, sizeof(ss));
	f = (struct store_filter){ .pid = -1, .comm = "psql", .kind = "statement" };
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.ids[0], "sa1");
	cr_assert_eq(ss.s[0].statements, 2);
	memset(&ss, 0, sizeof(ss));
	f = (struct store_filter){ .pid = -1, .pod = "prod/web-1", .since_ns = 5500 };
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.ids[0], "sa2");
}

static long long db_int(const char *sql);
static void db_exec(const char *sql);

/* A session's events over several batches, out of order, with a resend:
 * each event counts once, the extremes and the first open hold. */
STORE_TEST(a_sessions_row_adds_up_batch_after_batch)
{
	struct chain ch = { .agent = "agent-s", .epoch = 1 };
	const struct spec sp[] = {
		{ .session = "s9", .pid = 1, .sql = "SELECT 1", .ts = 5000 },
		{ .kind = "connection_open", .session = "s9", .pid = 1, .ts = 1000 },
		{ .session = "s9", .pid = 1, .sql = "DROP TABLE t", .verdict = "deny", .ts = 9000 },
		{ .session = "s8", .pid = 2, .sql = "SELECT 2", .ts = 2000 },
		{ .kind = "connection_close", .session = "s9", .pid = 1, .ts = 7000 },
		{ .session = "s9", .pid = 1, .sql = "SELECT 3", .ts = 8000 },
	};
	struct event_bytes b[6];
	struct store_append_result res;
	struct store_filter f = { .pid = -1, .session_id = "s9" };
	struct sessions ss = { 0 };
	struct problems pr;

	for (int i = 0; i < 6; i++)
		b[i] = chain_next(&ch, &sp[i]);
	cr_assert_eq(append("agent-s", b, 2, &res), 0);
	cr_assert_eq(append("agent-s", b + 1, 3, &res), 0);	/* seq 2 again */
	cr_assert_eq(res.duplicates, 1);
	cr_assert_eq(append("agent-s", b + 4, 1, &res), 0);
	cr_assert_eq(append("agent-s", b + 5, 1, &res), 0);	/* closed stays closed */
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_eq(ss.s[0].first_ts, 1000);
	cr_assert_eq(ss.s[0].last_ts, 9000);
	cr_assert_eq(ss.s[0].statements, 3);
	cr_assert_eq(ss.s[0].denied, 1);
	cr_assert(ss.s[0].closed);
	cr_assert_eq(ss.s[0].open_event_id, 2);
	cr_assert_eq(db_int("SELECT count(*) FROM sessions"), 2);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 6);
}

/* Two origins of one session in one batch, each opening (a hostile or
 * broken agent): the row keeps the smaller of each, as min() does. Times
 * are compared as the signed integers they are stored as. */
STORE_TEST(a_sessions_row_takes_the_least_across_origins_and_signed_times)
{
	struct chain ch = { .agent = "agent-o", .epoch = 1 };
	const struct spec sp[] = {
		{ .session = "s7", .pid = 2, .sql = "SELECT 1", .ts = 5000 },
		{ .session = "s7", .pid = 2, .sql = "SELECT 2", .ts = 0xffffffffffffff00ull },
		{ .session = "s7", .pid = 1, .sql = "SELECT 3", .ts = 5500 },
		{ .kind = "connection_open", .session = "s7", .pid = 1, .ts = 6000 },
		{ .kind = "connection_open", .session = "s7", .pid = 2, .ts = 7000 },
	};
	struct event_bytes b[5];
	struct store_append_result res;
	struct store_filter f = { .pid = -1, .session_id = "s7" };
	struct sessions ss = { 0 };
	struct problems pr;

	for (int i = 0; i < 5; i++)
		b[i] = chain_next(&ch, &sp[i]);
	cr_assert_eq(append("agent-o", b, 3, &res), 0);	/* origins: pid 2, then pid 1 */
	cr_assert_eq(append("agent-o", b + 3, 2, &res), 0);
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_eq(ss.s[0].open_event_id, 4, "the first open, not the first origin's");
	cr_assert_eq(ss.s[0].first_ts, 0xffffffffffffff00ull, "-256 as stored comes first");
	cr_assert_eq(ss.s[0].last_ts, 7000);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 5);
}

/* A session id that is not UTF-8 is stored repaired, as origins has it. */
STORE_TEST(a_session_id_that_is_not_utf8_is_summed_as_stored)
{
	struct chain ch = { .agent = "agent-u", .epoch = 1 };
	const struct spec sp[] = {
		{ .session = "bad\xff", .pid = 1, .sql = "SELECT 1" },
		{ .session = "bad\xfe", .pid = 1, .sql = "SELECT 2" },
	};
	struct event_bytes b[2];
	struct store_append_result res;
	struct store_filter f = { .pid = -1 };
	struct sessions ss = { 0 };
	struct problems pr;

	for (int i = 0; i < 2; i++)
		b[i] = chain_next(&ch, &sp[i]);
	cr_assert_eq(append("agent-u", b, 2, &res), 0);
	cr_assert_eq(res.accepted, 2);
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1, "both ids repair to one");
	cr_assert_str_eq(ss.ids[0], "bad\xef\xbf\xbd");
	cr_assert_eq(ss.s[0].statements, 2);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 2);
}

/* Who sent a session is its own origin: the same session id under
 * another agent, from another program, does not match. */
STORE_TEST(sessions_match_who_sent_them_per_agent)
{
	struct chain a = { .agent = "agent-a", .epoch = 1 }, b = { .agent = "agent-b", .epoch = 1 };
	const struct spec sa = { .session = "same", .pid = 1, .comm = "psql", .sql = "SELECT 1" };
	const struct spec sb = { .session = "same", .pid = 1, .comm = "python3",
				 .sql = "SELECT 2" };
	struct event_bytes ea = chain_next(&a, &sa), eb = chain_next(&b, &sb);
	struct store_append_result res;
	struct store_filter f = { .pid = -1, .comm = "python3" };
	struct sessions ss = { 0 };

	cr_assert_eq(append("agent-a", &ea, 1, &res), 0);
	cr_assert_eq(append("agent-b", &eb, 1, &res), 0);
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_str_eq(ss.agents[0], "agent-b");
	bytes_free(&ea, 1);
	bytes_free(&eb, 1);
}

/* Events a writer of an older schema stored (left above sessions_counted,
 * not in the table) are counted by the next append, before its own. */
STORE_TEST(events_stored_uncounted_are_counted_by_the_next_append)
{
	struct chain ch = { .agent = "agent-l", .epoch = 1 };
	const struct spec sp[] = {
		{ .kind = "connection_open", .session = "s1", .pid = 1, .ts = 1000 },
		{ .session = "s1", .pid = 1, .sql = "DROP TABLE t", .verdict = "deny", .ts = 2000 },
		{ .session = "s1", .pid = 1, .sql = "SELECT 1", .ts = 3000 },
		{ .session = "s2", .pid = 2, .sql = "SELECT 2", .ts = 4000 },
	};
	struct event_bytes b[4];
	struct store_append_result res;
	struct store_filter f = { .pid = -1 };
	struct sessions ss = { 0 };
	struct problems pr;

	for (int i = 0; i < 4; i++)
		b[i] = chain_next(&ch, &sp[i]);
	cr_assert_eq(append("agent-l", b, 1, &res), 0);
	cr_assert_eq(append("agent-l", b + 1, 2, &res), 0);
	/* As an old writer leaves seq 2 and 3: stored, not counted, s1's row
	 * holding the open alone. */
	db_exec("UPDATE sessions SET last_ts = 1000, statements = 0, denied = 0 "
		"WHERE session_id = 's1'; UPDATE sessions_counted SET size = 1");
	cr_assert_eq(verify(&pr), 0, "uncounted events are not a problem");

	/* An append that stores nothing new counts them all the same. */
	cr_assert_eq(append("agent-l", b, 1, &res), 0);
	cr_assert_eq(res.accepted, 0);
	cr_assert_eq(db_int("SELECT size FROM sessions_counted"), 3);
	cr_assert_eq(verify(&pr), 0);

	/* The next one adds its own, counting nothing twice. */
	cr_assert_eq(append("agent-l", b + 3, 1, &res), 0);
	cr_assert_eq(db_int("SELECT size FROM sessions_counted"), 4);
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 2);
	cr_assert_str_eq(ss.ids[1], "s1");
	cr_assert_eq(ss.s[1].statements, 2, "merged into the row there");
	cr_assert_eq(ss.s[1].denied, 1);
	cr_assert_eq(ss.s[1].last_ts, 3000);
	cr_assert_eq(ss.s[1].open_event_id, 1);
	cr_assert_eq(verify(&pr), 0);

	/* A count past the ledger's size is an altered sessions_counted. */
	tamper_both("UPDATE sessions_counted SET size = 99 WHERE id = 1");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "sums 99 events, but the ledger has 4"));
	bytes_free(b, 4);
}

/* The rows are a summary, but one an intruder could edit to hide a
 * session's denials: verify sums the events up again. */
STORE_TEST(an_altered_sessions_row_fails_verify)
{
	struct problems pr;

	append_mixed();
	tamper_both("UPDATE sessions SET denied = 0 WHERE session_id = 'sa1'");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 0, "session sa1 of agent agent-a: its sessions row is not "
				      "what its events sum to"));
	tamper_both("DELETE FROM sessions WHERE session_id = 'sb1'");
	cr_assert_eq(verify(&pr), 2);
	cr_assert(has_problem(&pr, 0, "session sb1 of agent agent-b"));
	tamper_both("INSERT INTO sessions VALUES ('agent-x', 'sx', 1, 1, 2, 3, 0, 0, NULL)");
	cr_assert_eq(verify(&pr), 3);
	cr_assert(has_problem(&pr, 0, "session sx of agent agent-x"));
}

/* --- receipts ---------------------------------------------------------------- */

STORE_TEST(receipts_verify_against_the_newest_head)
{
	struct chain ch = { .agent = "agent-r", .epoch = 1 };
	uint8_t pub[SIGNING_PUB_LEN];
	char err[256];

	signing_public(fx.key, pub);
	append_plain(&ch, 7);
	append_plain(&ch, 6);
	/* Past 2^STORE_NODE_MIN_LEVEL: proofs mix stored nodes and leaf hashes. */
	append_plain(&ch, 27);
	for (uint64_t id = 1; id <= 40; id++) {
		struct receipt r;

		cr_assert_eq(store_receipt(fx.s, id, &r), 0);
		cr_assert_eq(r.event_id, id);
		cr_assert_eq(r.leaf_index, id - 1);
		cr_assert_eq(r.head.size, 40);
		memcpy(r.public_key, pub, sizeof(pub));
		cr_assert_eq(receipt_verify(&r, fx.vk, err, sizeof(err)), 0, "event %llu: %s",
			     (unsigned long long)id, err);
		r.event[r.event_len / 2] ^= 1;
		cr_assert_neq(receipt_verify(&r, fx.vk, err, sizeof(err)), 0);
		receipt_release(&r);
	}
	{
		struct receipt r;

		cr_assert_eq(store_receipt(fx.s, 41, &r), -ENOENT);
	}
}

/* --- consistency proofs ---------------------------------------------------------- */

STORE_TEST(consistency_proofs_join_every_older_head_to_the_newest)
{
	struct chain ch = { .agent = "agent-c", .epoch = 1 };
	const size_t batches[] = { 1, 6, 9, 17, 3, 20 };	/* past 16 and 32 leaves */
	struct signed_tree_head old[6], now;
	merkle_hash proof[MERKLE_MAX_PROOF];
	size_t n;

	for (size_t i = 0; i < 6; i++) {
		append_plain(&ch, batches[i]);
		cr_assert_eq(store_tree_head(fx.s, &old[i]), 0);
	}
	for (size_t i = 0; i < 6; i++) {
		cr_assert_eq(store_consistency(fx.s, old[i].size, &now, proof, &n), 0);
		cr_assert_eq(now.size, 56);
		cr_assert(merkle_verify_consistency(old[i].size, now.size, old[i].root, now.root,
						    (const merkle_hash *)proof, n),
			  "from size %llu", (unsigned long long)old[i].size);
		if (old[i].size == now.size) {
			cr_assert_eq(n, 0);
			continue;
		}
		/* Another history of the same size does not join. */
		old[i].root[0] ^= 1;
		cr_assert_not(merkle_verify_consistency(old[i].size, now.size, old[i].root,
							now.root, (const merkle_hash *)proof, n));
	}
	cr_assert_eq(store_consistency(fx.s, 0, &now, proof, &n), -ERANGE);
	cr_assert_eq(store_consistency(fx.s, 57, &now, proof, &n), -ERANGE);
	cr_assert_eq(now.size, 56, "the newest head comes back with -ERANGE");
}

/* --- verification -------------------------------------------------------------- */

/* 12 events of one agent in three batches: the store the tamper tests alter. */
static void append_twelve(void)
{
	struct chain ch = { .agent = "agent-v", .epoch = 1 };
	struct problems pr;

	append_plain(&ch, 5);
	append_plain(&ch, 4);
	append_plain(&ch, 3);
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(verify_finds_a_changed_column)
{
	struct problems pr;

	append_twelve();
	tamper_both("UPDATE events SET sql = 'SELECT 2' WHERE id = 7");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 7, "column sql differs from the event's bytes"));
}

STORE_TEST(verify_finds_a_changed_seq)
{
	struct problems pr;

	append_twelve();
	tamper_both("UPDATE events SET seq = 99 WHERE id = 8");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 8, "column seq differs"));
}

STORE_TEST(verify_finds_changed_event_bytes)
{
	struct problems pr;

	append_twelve();
	flip_raw_byte(9, 40);
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 9, "leaf hash differs: event bytes altered"));
	cr_assert(has_problem(&pr, 10, "chain is broken"));
}

STORE_TEST(verify_finds_a_deleted_event)
{
	struct problems pr;

	append_twelve();
	tamper_both("DELETE FROM events WHERE id = 10");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "leaf 9 of the ledger has no event row"));
	cr_assert(has_problem(&pr, 11, "seq 10 missing before this event"));
}

STORE_TEST(verify_finds_a_changed_leaf_hash)
{
	struct problems pr;

	append_twelve();
	tamper("UPDATE events SET leaf_hash = zeroblob(32) WHERE id = 11",
	       "UPDATE events SET leaf_hash = decode(repeat('00', 32), 'hex') WHERE id = 11");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 11, "leaf hash differs"));
	/* Below 16 leaves no node is stored: the root is hashed from the leaves. */
	cr_assert(has_problem(&pr, 0, "root (size 12) differs from the stored nodes"));
}

/* 64 events of one agent: stored nodes 4/0..4/3, 5/0, 5/1 and 6/0. */
static void append_sixty_four(void)
{
	struct chain ch = { .agent = "agent-v", .epoch = 1 };
	struct problems pr;

	append_plain(&ch, 30);
	append_plain(&ch, 34);
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(verify_finds_a_leaf_hash_rewritten_with_its_bytes)
{
	struct problems pr;

	append_sixty_four();
	/* The row agrees with itself; the node above its leaf does not. */
	tamper("UPDATE events SET leaf_hash = zeroblob(32), raw_inline = x'00', payload = NULL "
	       "WHERE id = 20",
	       "UPDATE events SET leaf_hash = decode(repeat('00', 32), 'hex'), "
	       "raw_inline = '\\x00', payload = NULL WHERE id = 20");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "ledger node 4/1 differs from the leaf hashes of events "
				      "17..32"));
}

STORE_TEST(verify_finds_a_changed_inner_node)
{
	struct problems pr;

	append_sixty_four();
	tamper("UPDATE nodes SET hash = zeroblob(32) WHERE level = 4 AND idx = 1",
	       "UPDATE nodes SET hash = decode(repeat('00', 32), 'hex') "
	       "WHERE level = 4 AND idx = 1");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "ledger node 4/1 differs from the leaf hashes"));
	cr_assert(has_problem(&pr, 0, "ledger node 5/0 differs from its children"));
	tamper("UPDATE nodes SET hash = zeroblob(32) WHERE level = 5 AND idx = 1",
	       "UPDATE nodes SET hash = decode(repeat('00', 32), 'hex') "
	       "WHERE level = 5 AND idx = 1");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "ledger node 6/0 differs from its children"));
}

STORE_TEST(verify_finds_a_deleted_node)
{
	struct problems pr;

	append_sixty_four();
	tamper_both("DELETE FROM nodes WHERE level = 4 AND idx = 2");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 0, "ledger level 4 holds 3 nodes"));
}

/* Runs @sql (statements separated by ';') on the store's database. */
static void db_exec(const char *sql)
{
	if (fx.pg) {
		PGconn *pg = PQconnectdb(fx.url);
		PGresult *res = PQexec(pg, sql);

		cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql,
			     PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(pg);
	} else {
		char path[600], *msg = NULL;
		sqlite3 *db;

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &msg), SQLITE_OK, "%s: %s", sql,
			     msg);
		sqlite3_close(db);
	}
}

/* The one integer @sql selects. */
static long long db_int(const char *sql)
{
	long long v;

	if (fx.pg) {
		PGconn *pg = PQconnectdb(fx.url);
		PGresult *res = PQexec(pg, sql);

		cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql,
			     PQresultErrorMessage(res));
		v = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		PQfinish(pg);
	} else {
		char path[600];
		sqlite3 *db;
		sqlite3_stmt *st;

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
			     sqlite3_errmsg(db));
		cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
		v = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	return v;
}

/* @sql fails on the store's database. */
static bool db_fails(const char *sql)
{
	bool failed;

	if (fx.pg) {
		PGconn *pg = PQconnectdb(fx.url);
		PGresult *res = PQexec(pg, sql);

		failed = PQresultStatus(res) != PGRES_COMMAND_OK &&
			 PQresultStatus(res) != PGRES_TUPLES_OK;
		PQclear(res);
		PQfinish(pg);
	} else {
		char path[600];
		sqlite3 *db;

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		failed = sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK;
		sqlite3_close(db);
	}
	return failed;
}

/* How many of the named indexes exist. */
static long long index_count(const char *quoted_names)
{
	char sql[256];

	if (fx.pg)
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM pg_indexes WHERE indexname IN (%s)", quoted_names);
	else
		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN (%s)",
			 quoted_names);
	return db_int(sql);
}

STORE_TEST(a_schema_1_database_is_refused)
{
	struct store *s = NULL;
	char err[STORE_ERR_LEN] = "";

	store_close(fx.s);
	fx.s = NULL;
	/* Schema 1 kept leaf hashes in nodes, not in events. */
	db_exec("ALTER TABLE events DROP COLUMN leaf_hash");
	cr_assert_eq(store_open(fx.url, &s, err, sizeof(err)), -1);
	cr_assert_null(s);
	cr_assert(strstr(err, "created by an older dbward-collector"), "%s", err);
}

/* --- origins: who sent an event, stored once ----------------------------- */

STORE_TEST(a_connections_events_share_one_origin)
{
	struct chain c = { .agent = "agent-c", .epoch = 1 };
	struct spec sp = { .session = "sa1", .pid = 100 };
	struct spec nobody = { .no_session = true, .sql = "SELECT 'nobody'" };
	struct event_bytes e[4];
	struct store_append_result res;
	struct problems pr;

	append_mixed();
	/* sa1 (alice, pid 100), sa2 (bob, pid 200, a pod), sb1 (a session
	 * and database, no identity). */
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 3);
	cr_assert_eq(db_int("SELECT count(DISTINCT origin) FROM events"), 3);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE pid = -1 AND comm = ''"), 1);

	/* The same identity later, from a store that has forgotten its cache. */
	store_reopen();
	e[0] = chain_next(&c, &sp);
	/* The same session seen with another pid is another origin. */
	sp.pid = 101;
	e[1] = chain_next(&c, &sp);
	/* An event that says nothing of who sent it: every value absent. */
	e[2] = chain_next(&c, &nobody);
	e[3] = chain_next(&c, &nobody);
	cr_assert_eq(append("agent-c", e, 4, &res), 0);
	cr_assert_eq(res.accepted, 4);
	bytes_free(e, 4);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 5);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE origin = "
			    "(SELECT origin FROM events WHERE id = 1)"),
		     5);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE session_id = '' AND pid = -1 "
			    "AND db_user = '' AND database = ''"),
		     1);
	{
		struct store_filter f = { .pid = 100 };

		cr_assert_eq(count_events(&f), 5);
		f.pid = 101;
		cr_assert_eq(count_events(&f), 1);
		f = (struct store_filter){ .pid = -1, .session_id = "sa1" };
		cr_assert_eq(count_events(&f), 6);
		/* Absent is no value: "/" or "/name" names no pod. */
		f = (struct store_filter){ .pid = -1, .pod = "/" };
		cr_assert_eq(count_events(&f), 0);
		f.pod = "/web-1";
		cr_assert_eq(count_events(&f), 0);
		f = (struct store_filter){ .pid = -1, .text = "nobody" };
		cr_assert_eq(count_events(&f), 2);
	}
	cr_assert_eq(verify(&pr), 0);
}

/* An append that fails after it made an origin forgets it: SQLite gives
 * a rolled-back row's id to the next row, which must not be taken for the
 * first one's. */
STORE_TEST(a_failed_append_forgets_the_origins_it_made)
{
	struct chain a = { .agent = "agent-a", .epoch = 1 }, b = { .agent = "agent-b", .epoch = 1 };
	struct spec alice = { .session = "s-a", .pid = 300, .comm = "alice-app" };
	struct spec bob = { .session = "s-b", .pid = 400, .comm = "bob-app" };
	struct event_bytes ea = chain_next(&a, &alice), eb = chain_next(&b, &bob);
	struct store_event_in in = { .raw = ea.raw, .len = ea.len };
	struct store_append_result res;
	char err[STORE_ERR_LEN];
	struct problems pr;

	/* No signing key: the append fails at the tree head, after its rows. */
	in.ev = dbward__v1__event__unpack(NULL, ea.len, ea.raw);
	cr_assert_not_null(in.ev);
	cr_assert_eq(store_append(fx.s, "agent-a", &in, 1, NULL, &res, err, sizeof(err)), -1);
	dbward__v1__event__free_unpacked((Dbward__V1__Event *)in.ev, NULL);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 0);

	/* Bob's origin may get the id alice's had; alice's, again, is hers. */
	cr_assert_eq(append("agent-b", &eb, 1, &res), 0);
	cr_assert_eq(append("agent-a", &ea, 1, &res), 0);
	bytes_free(&ea, 1);
	bytes_free(&eb, 1);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 2);
	{
		struct store_filter f = { .pid = -1, .comm = "alice-app" };

		cr_assert_eq(count_events(&f), 1);
		f.comm = "bob-app";
		cr_assert_eq(count_events(&f), 1);
		f = (struct store_filter){ .pid = 300 };
		cr_assert_eq(count_events(&f), 1);
	}
	cr_assert_eq(verify(&pr), 0);
}

/* An equivocation inside one batch: the second copy of a seq is not
 * stored, and neither is who it claims to come from. */
STORE_TEST(a_seq_sent_twice_in_a_batch_makes_one_origin)
{
	static const uint8_t first_prev[EVENT_HASH_LEN];
	struct chain c = { .agent = "agent-d", .epoch = 1 };
	struct spec real = { .session = "s-d", .pid = 500 }, forged = { .session = "s-d", .pid = 501 };
	struct event_bytes e[2];
	struct store_append_result res;
	struct alerts al = { 0 };
	struct problems pr;

	e[0] = chain_next(&c, &real);
	e[1] = pack(&c, 1, first_prev, &forged);
	cr_assert_eq(append("agent-d", e, 2, &res), 0);
	bytes_free(e, 2);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(res.duplicates, 1);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 1);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE pid = 501"), 0);
	cr_assert_eq(store_alerts(fx.s, 0, 10, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(verify_finds_a_changed_origin)
{
	struct problems pr;

	append_mixed();
	tamper_both("UPDATE origins SET comm = 'cron' WHERE comm = 'python3'");
	cr_assert_eq(verify(&pr), 3);
	cr_assert(has_problem(&pr, 0, "its key is not the hash of its values"));
	cr_assert(has_problem(&pr, 5, "column comm differs from the event's bytes"));
	cr_assert(has_problem(&pr, 6, "column comm differs from the event's bytes"));
}

/* A key changed alone would send a later connection's events to this row. */
STORE_TEST(verify_finds_a_changed_origin_key)
{
	struct problems pr;

	append_mixed();
	tamper("UPDATE origins SET key = zeroblob(32) WHERE comm = 'python3'",
	       "UPDATE origins SET key = decode(repeat('00', 32), 'hex') WHERE comm = 'python3'");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 0, "its key is not the hash of its values"));
}

/* An origins row altered in the database is found by its key by a writer
 * that does not have it cached: new events do not point at it. A new row
 * with their true values takes the key, the altered row keeps its values
 * and its old events and loses the key (verify still reports both), and an
 * alert says so. */
STORE_TEST(an_altered_origin_is_not_given_new_events)
{
	struct chain c = { .agent = "agent-o", .epoch = 1 };
	const struct spec sp = { .session = "so1", .pid = 700, .comm = "python3", .db_user = "app" };
	struct event_bytes e[2];
	struct store_append_result res;
	struct store_filter f = { .pid = -1 };
	struct alerts al = { 0 };
	struct problems pr;

	e[0] = chain_next(&c, &sp);
	e[1] = chain_next(&c, &sp);
	cr_assert_eq(append("agent-o", &e[0], 1, &res), 0);
	tamper_both("UPDATE origins SET comm = 'cron' WHERE comm = 'python3'");
	store_reopen();	/* an empty origin cache */
	cr_assert_eq(append("agent-o", &e[1], 1, &res), 0);
	bytes_free(e, 2);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 2);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE key IS NULL AND comm = 'cron'"), 1);
	cr_assert_eq(db_int("SELECT origin FROM events WHERE id = 2"),
		     db_int("SELECT id FROM origins WHERE key IS NOT NULL"));
	f.comm = "python3";
	cr_assert_eq(count_events(&f), 1);
	f.comm = "cron";
	cr_assert_eq(count_events(&f), 1);
	cr_assert_eq(store_alerts(fx.s, 0, 10, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.kinds[0], "origin_altered");
	cr_assert_eq(verify(&pr), 2);
	cr_assert(has_problem(&pr, 0, "its key is not the hash of its values"));
	cr_assert(has_problem(&pr, 1, "column comm differs from the event's bytes"));

	/* The next writer finds the new row by the key: no second alert. */
	store_reopen();
	e[0] = chain_next(&c, &sp);
	cr_assert_eq(append("agent-o", e, 1, &res), 0);
	bytes_free(e, 1);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 2);
	al.n = 0;
	cr_assert_eq(store_alerts(fx.s, 0, 10, collect_alert, &al), 0);
	cr_assert_eq(al.n, 1);
}

/* Two altered origins met in one batch (its misses are looked up
 * together): each gives its key up, and each gets its alert. */
STORE_TEST(two_altered_origins_in_one_batch)
{
	struct chain c = { .agent = "agent-p", .epoch = 1 };
	const struct spec one = { .session = "sp1", .pid = 710, .comm = "worker" },
			  two = { .session = "sp2", .pid = 720, .comm = "worker" };
	struct event_bytes e[4];
	struct store_append_result res;
	struct alerts al = { 0 };

	e[0] = chain_next(&c, &one);
	e[1] = chain_next(&c, &two);
	e[2] = chain_next(&c, &one);
	e[3] = chain_next(&c, &two);
	cr_assert_eq(append("agent-p", e, 2, &res), 0);
	tamper_both("UPDATE origins SET comm = 'cron' WHERE pid = 710");
	tamper_both("UPDATE origins SET comm = 'cron' WHERE pid = 720");
	store_reopen();
	cr_assert_eq(append("agent-p", &e[2], 2, &res), 0);
	bytes_free(e, 4);
	cr_assert_eq(res.accepted, 2);
	cr_assert_eq(store_alerts(fx.s, 0, 10, collect_alert, &al), 0);
	cr_assert_eq(al.n, 2);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 4);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE key IS NULL"), 2);
	cr_assert_eq(db_int("SELECT count(*) FROM events e JOIN origins o ON o.id = e.origin "
			    "WHERE e.id > 2 AND o.comm = 'worker' AND o.key IS NOT NULL"),
		     2);
}

STORE_TEST(verify_finds_an_event_pointed_at_another_origin)
{
	struct problems pr;

	append_mixed();
	tamper_both("UPDATE events SET origin = (SELECT origin FROM events WHERE id = 1) "
		    "WHERE id = 6");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 6, "column session_id differs from the event's bytes"));
	cr_assert(has_problem(&pr, 6, "column comm differs from the event's bytes"));
	/* Both sessions' sums now differ from their rows. */
	cr_assert(has_problem(&pr, 0, "session sa1 of agent agent-a: its sessions row"));
	cr_assert(has_problem(&pr, 0, "session sa2 of agent agent-a: its sessions row"));
	for (uint64_t id = 1; id <= 8; id++)
		cr_assert(id == 6 || !has_problem(&pr, id, ""), "event %llu", (unsigned long long)id);
	for (size_t i = 0; i < pr.n; i++)
		cr_assert(pr.ids[i] != 0 || strstr(pr.what[i], "its sessions row"), "%s",
			  pr.what[i]);
}

/* What a schema-4 database looked like: no sessions tables. */
static void downgrade_to_schema_4(void)
{
	store_close(fx.s);
	fx.s = NULL;
	db_exec("DROP TABLE sessions; DROP TABLE sessions_counted;");
}

/* What a schema-3 database looked like: each event's bytes in events.raw,
 * no payloads. Made from a schema-4 one whose events were appended with
 * fx.inline_bytes. */
static void downgrade_to_schema_3(void)
{
	downgrade_to_schema_4();
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload IS NOT NULL"), 0);
	db_exec("ALTER TABLE events RENAME COLUMN raw_inline TO raw;"
		"ALTER TABLE events DROP COLUMN payload;"
		"ALTER TABLE events DROP COLUMN payload_off;"
		"ALTER TABLE events DROP COLUMN payload_len;"
		"DROP TABLE payloads;");
	fx.inline_bytes = false;
}

/* What a schema-2 database looked like: the identity columns in events,
 * indexed by session and pid, and no origins. */
static void downgrade_to_schema_2(void)
{
	downgrade_to_schema_3();
	db_exec("ALTER TABLE events ADD COLUMN session_id TEXT;"
		"ALTER TABLE events ADD COLUMN pid BIGINT;"
		"ALTER TABLE events ADD COLUMN comm TEXT;"
		"ALTER TABLE events ADD COLUMN user_name TEXT;"
		"ALTER TABLE events ADD COLUMN pod_uid TEXT;"
		"ALTER TABLE events ADD COLUMN pod_name TEXT;"
		"ALTER TABLE events ADD COLUMN pod_namespace TEXT;"
		"ALTER TABLE events ADD COLUMN db_user TEXT;"
		"ALTER TABLE events ADD COLUMN database TEXT;"
		"UPDATE events SET "
		"session_id = (SELECT NULLIF(o.session_id, '') FROM origins o WHERE o.id = origin), "
		"pid = (SELECT NULLIF(o.pid, -1) FROM origins o WHERE o.id = origin), "
		"comm = (SELECT NULLIF(o.comm, '') FROM origins o WHERE o.id = origin), "
		"user_name = (SELECT NULLIF(o.user_name, '') FROM origins o WHERE o.id = origin), "
		"pod_uid = (SELECT NULLIF(o.pod_uid, '') FROM origins o WHERE o.id = origin), "
		"pod_name = (SELECT NULLIF(o.pod_name, '') FROM origins o WHERE o.id = origin), "
		"pod_namespace = (SELECT NULLIF(o.pod_namespace, '') FROM origins o "
		"WHERE o.id = origin), "
		"db_user = (SELECT NULLIF(o.db_user, '') FROM origins o WHERE o.id = origin), "
		"database = (SELECT NULLIF(o.database, '') FROM origins o WHERE o.id = origin);"
		"DROP INDEX events_origin;"
		"ALTER TABLE events DROP COLUMN origin;"
		"DROP TABLE origins;"
		"CREATE INDEX events_session ON events (session_id);"
		"CREATE INDEX events_pid ON events (pid);");
}

STORE_TEST(a_schema_2_database_is_upgraded_when_opened)
{
	struct chain c = { .agent = "agent-c", .epoch = 1 };
	const struct spec again[] = {
		{ .session = "sa2", .pid = 200, .comm = "python3", .user = "bob", .pod_uid = "uid-9",
		  .pod_name = "web-1", .pod_ns = "prod", .db_user = "admin", .database = "billing",
		  .sql = "SELECT 1", .ts = 9000 },
		{ .session = "sa1", .pid = 100, .sql = "SELECT 2", .ts = 9001 },
		{ .session = "sb1", .sql = "SELECT 3", .ts = 9002 },
	};
	struct event_bytes e[3];
	struct store_append_result res;
	struct problems pr;

	fx.inline_bytes = true;
	append_mixed();
	downgrade_to_schema_2();
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE comm = 'python3'"), 2);
	store_reopen();
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE key IS NOT NULL"), 3);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE origin IS NULL"), 0);
	cr_assert_eq(index_count("'events_session', 'events_pid'"), 0);
	cr_assert_eq(index_count("'events_origin'"), 1);
	/* The old columns keep their values under new names, out of an old
	 * collector's way: its INSERT now fails instead of leaving no origin. */
	cr_assert(db_fails("SELECT session_id FROM events"));
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE schema2_comm = 'python3'"), 2);
	cr_assert_eq(verify(&pr), 0);
	check_mixed_filters();
	check_mixed_sessions();

	/* New events of each known identity, present or absent values alike,
	 * find the origin the upgrade made. */
	for (int i = 0; i < 3; i++)
		e[i] = chain_next(&c, &again[i]);
	cr_assert_eq(append("agent-c", e, 3, &res), 0);
	cr_assert_eq(res.accepted, 3);
	bytes_free(e, 3);
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 3);
	{
		struct store_filter f = { .pid = -1, .comm = "python3" };

		cr_assert_eq(count_events(&f), 3);
		f = (struct store_filter){ .pid = -1, .session_id = "sb1" };
		cr_assert_eq(count_events(&f), 3);
	}
	cr_assert_eq(verify(&pr), 0);

	/* Opening it again changes nothing. */
	store_reopen();
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 3);
	cr_assert_eq(verify(&pr), 0);
}

struct opener {
	struct store *s;
	char err[STORE_ERR_LEN];
	int rc;
};

static void *open_main(void *arg)
{
	struct opener *o = arg;

	o->rc = store_open(fx.url, &o->s, o->err, sizeof(o->err));
	return NULL;
}

/* Two collectors open the database while something holds the ledger (on
 * SQLite, the write lock): both decide to upgrade, one does, and the
 * other, whose ALTER then fails, looks again and starts too. */
static void open_two_behind_a_lock(void)
{
	struct opener o[2] = { { .rc = -99 }, { .rc = -99 } };
	pthread_t t[2];
	PGconn *pg = NULL;
	sqlite3 *db = NULL;

	if (fx.pg) {
		PGresult *res;

		pg = PQconnectdb(fx.url);
		res = PQexec(pg, "BEGIN; SELECT size FROM ledger WHERE id = 1 FOR UPDATE");
		cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
		PQclear(res);
	} else {
		char path[600];

		snprintf(path, sizeof(path), "%s/audit.db", fx.dir);
		cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
		cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	}
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, open_main, &o[i]), 0);
	usleep(500 * 1000);
	if (pg) {
		PQclear(PQexec(pg, "COMMIT"));
		PQfinish(pg);
	} else {
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		sqlite3_close(db);
	}
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(o[i].rc, 0, "store %d: %s", i, o[i].err);
		store_close(o[i].s);
	}
	store_reopen();
}

STORE_TEST(two_stores_opening_a_schema_2_database_together_both_start)
{
	struct problems pr;

	fx.inline_bytes = true;
	append_mixed();
	downgrade_to_schema_2();
	open_two_behind_a_lock();
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), 3);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE origin IS NULL"), 0);
	cr_assert_eq(index_count("'events_origin'"), 1);
	cr_assert_eq(verify(&pr), 0);
	check_mixed_filters();
	check_mixed_sessions();
}

STORE_TEST(two_stores_opening_a_schema_3_database_together_both_start)
{
	struct problems pr;

	fx.inline_bytes = true;
	append_mixed();
	downgrade_to_schema_3();
	open_two_behind_a_lock();
	cr_assert(db_fails("SELECT raw FROM events"));
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload IS NULL"), 8);
	cr_assert_eq(verify(&pr), 0);
	check_mixed_filters();
	check_mixed_sessions();
}

/* The second finds the sessions built and does not add them again. */
STORE_TEST(two_stores_opening_a_schema_4_database_together_both_start)
{
	struct problems pr;

	append_mixed();
	downgrade_to_schema_4();
	open_two_behind_a_lock();
	check_mixed_sessions();
	cr_assert_eq(verify(&pr), 0);
}

STORE_TEST(a_schema_4_database_gets_its_sessions_when_opened)
{
	struct chain c = { .agent = "agent-c", .epoch = 1 };
	struct sessions ss = { 0 };
	struct store_filter f = { .pid = -1 };
	struct problems pr;

	append_mixed();
	downgrade_to_schema_4();
	store_reopen();
	cr_assert_eq(db_int("SELECT count(*) FROM sessions"), 3);
	check_mixed_sessions();
	cr_assert_eq(verify(&pr), 0);

	/* Appends go on adding to the built table. */
	append_plain(&c, 3);
	f.session_id = "s-1";
	cr_assert_eq(store_sessions(fx.s, &f, collect_session, &ss), 0);
	cr_assert_eq(ss.n, 1);
	cr_assert_eq(ss.s[0].statements, 3);
	cr_assert_eq(db_int("SELECT count(*) FROM sessions"), 4);
	cr_assert_eq(verify(&pr), 0);
}

/* More origins than one page of the upgrade's key pass. */
STORE_TEST(a_schema_2_upgrade_keys_every_origin)
{
	enum { SESSIONS = 2500 };
	struct chain c = { .agent = "agent-m", .epoch = 1 };
	struct event_bytes *e = calloc(SESSIONS, sizeof(*e));
	char names[SESSIONS][16];
	struct store_append_result res;
	struct problems pr;

	cr_assert_not_null(e);
	fx.inline_bytes = true;
	for (int i = 0; i < SESSIONS; i++) {
		struct spec sp = { .session = names[i], .pid = 1000 + i % 7 };

		snprintf(names[i], sizeof(names[i]), "m-%d", i);
		e[i] = chain_next(&c, &sp);
	}
	cr_assert_eq(append("agent-m", e, SESSIONS, &res), 0);
	bytes_free(e, SESSIONS);
	downgrade_to_schema_2();
	store_reopen();
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), SESSIONS);
	cr_assert_eq(db_int("SELECT count(*) FROM origins WHERE key IS NULL"), 0);
	cr_assert_eq(verify(&pr), 0);	/* each key is its values' hash */

	/* The last one, again: found by its key, not made anew. */
	{
		struct spec sp = { .session = names[SESSIONS - 1], .pid = 1000 + (SESSIONS - 1) % 7 };

		e[0] = chain_next(&c, &sp);
		cr_assert_eq(append("agent-m", e, 1, &res), 0);
		bytes_free(e, 1);
	}
	cr_assert_eq(db_int("SELECT count(*) FROM origins"), SESSIONS);
	free(e);
}

/* --- schema 4: events as slices of their batch's payload ------------------- */

struct bytes_check {
	const struct event_bytes *b;	/* seq i + 1 at i */
	size_t n;
	size_t seen;
};

static int check_bytes(void *arg, const struct store_event *e)
{
	struct bytes_check *bc = arg;

	cr_assert(e->seq >= 1 && e->seq <= bc->n);
	cr_assert_eq(e->len, bc->b[e->seq - 1].len, "seq %llu", (unsigned long long)e->seq);
	cr_assert_eq(memcmp(e->raw, bc->b[e->seq - 1].raw, e->len), 0);
	bc->seen++;
	return 0;
}

static int check_unreadable(void *arg, const struct store_event *e)
{
	(void)arg;
	cr_assert_null(e->raw);
	cr_assert_eq(e->id, 6);
	cr_assert_eq(e->seq, 6);
	return 0;
}

/* Every event reads back as the bytes made for it (@b[seq - 1]), and the
 * store verifies; then @b is freed. */
static void read_back_all(struct event_bytes *b, size_t n)
{
	struct bytes_check bc = { b, n, 0 };
	struct store_filter all = { .pid = -1 };
	struct problems pr;

	cr_assert_eq(store_events(fx.s, &all, check_bytes, &bc), 0);
	cr_assert_eq(bc.seen, n);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, n);
}

/* Makes @n plain events of @ch into @b (kept), appended in batches of @per. */
static void append_kept(struct chain *ch, struct event_bytes *b, size_t n, size_t per)
{
	struct store_append_result res;

	for (size_t i = 0; i < n; i++)
		b[i] = chain_next(ch, NULL);
	for (size_t i = 0; i < n; i += per) {
		size_t k = n - i < per ? n - i : per;

		cr_assert_eq(append(ch->agent, b + i, k, &res), 0);
		cr_assert_eq(res.accepted, k);
	}
}

STORE_TEST(a_batch_is_stored_once_and_its_events_read_from_it)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[40];
	struct bytes_check bc = { b, 40, 0 };
	struct store_filter all = { .pid = -1 };
	struct receipt r;
	struct problems pr;

	append_kept(&ch, b, 40, 20);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 2);
	/* A payload's id is its first event's. */
	cr_assert_eq(db_int("SELECT count(*) FROM payloads WHERE id IN (1, 21)"), 2);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload IS NULL"), 0);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE length(raw_inline) > 0"), 0);
	cr_assert_eq(store_events(fx.s, &all, check_bytes, &bc), 0);
	cr_assert_eq(bc.seen, 40);
	cr_assert_eq(store_event_by_id(fx.s, 27, check_bytes, &bc), 0);
	cr_assert_eq(store_receipt(fx.s, 33, &r), 0);
	cr_assert_eq(r.event_len, b[32].len);
	cr_assert_eq(memcmp(r.event, b[32].raw, r.event_len), 0);
	receipt_release(&r);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 40);
}

/* A resend's new events become slices of its payload only when they make
 * at least half of it: one new among ten stored keeps its own bytes in its
 * row (storing the batch again would cost more); six among eight do not. */
STORE_TEST(a_resend_is_stored_as_a_payload_only_when_mostly_new)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[17];
	struct store_append_result res;

	append_kept(&ch, b, 10, 10);
	b[10] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-p", b, 11, &res), 0);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(res.duplicates, 10);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 1);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE id = 11 AND payload IS NULL"), 1);
	cr_assert_eq(db_int("SELECT length(raw_inline) FROM events WHERE id = 11"), b[10].len);

	for (int i = 11; i < 17; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-p", b + 9, 8, &res), 0);
	cr_assert_eq(res.accepted, 6);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 2);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload = 12"), 6);
	read_back_all(b, 17);
}

/* A batch that is mostly something else than its events (a field this
 * collector does not know, zeros compressing to nothing) is not kept: a
 * read of its events would decompress it all. */
STORE_TEST(a_batch_mostly_of_other_fields_keeps_its_events_bytes_in_their_rows)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[4];

	fx.batch_padding = 1 << 20;
	append_kept(&ch, b, 2, 2);
	fx.batch_padding = 0;
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 0);
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload IS NULL"), 2);
	append_kept(&ch, b + 2, 2, 2);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 1);
	read_back_all(b, 4);
}

STORE_TEST(verify_finds_a_deleted_payload)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[8];
	struct bytes_check bc = { b, 8, 0 };
	struct problems pr;

	append_kept(&ch, b, 8, 4);
	tamper_both("DELETE FROM payloads WHERE id = 5");
	cr_assert_gt(verify(&pr), 0);
	for (uint64_t id = 5; id <= 8; id++)
		cr_assert(has_problem(&pr, id, "the event's bytes are missing"), "event %llu",
			  (unsigned long long)id);
	for (uint64_t id = 1; id <= 4; id++)
		cr_assert(!has_problem(&pr, id, ""), "event %llu", (unsigned long long)id);
	/* Still listed, without bytes, so that pages go on past it. */
	cr_assert_eq(store_event_by_id(fx.s, 6, check_unreadable, NULL), 0);
	cr_assert_eq(store_event_by_id(fx.s, 3, check_bytes, &bc), 0);
	bytes_free(b, 8);
}

/* Another batch's payload in its place: each event reads other bytes. */
STORE_TEST(verify_finds_a_swapped_payload)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[8];
	struct problems pr;

	append_kept(&ch, b, 8, 4);
	tamper_both("UPDATE payloads SET data = (SELECT data FROM payloads WHERE id = 5) "
		    "WHERE id = 1");
	cr_assert_gt(verify(&pr), 0);
	for (uint64_t id = 1; id <= 4; id++)
		cr_assert(has_problem(&pr, id, "leaf hash differs: event bytes altered"),
			  "event %llu", (unsigned long long)id);
	bytes_free(b, 8);
}

STORE_TEST(verify_finds_an_event_pointed_at_another_slice)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[4];
	struct problems pr;

	append_kept(&ch, b, 4, 4);
	tamper_both("UPDATE events SET payload_off = (SELECT payload_off FROM events WHERE id = 2) "
		    "WHERE id = 3");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 3, "leaf hash differs: event bytes altered"));
	cr_assert(has_problem(&pr, 3, "column seq differs from the event's bytes"));
	bytes_free(b, 4);
}

/* A payload id that is not an integer is an altered row: unreadable bytes,
 * not the row's empty raw_inline read as an event. */
STORE_TEST(verify_finds_a_payload_id_that_is_not_a_number)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[4];
	struct problems pr;

	append_kept(&ch, b, 4, 4);
	tamper("UPDATE events SET payload = 'x' WHERE id = 2",
	       "ALTER TABLE events ALTER COLUMN payload TYPE TEXT; "
	       "UPDATE events SET payload = 'x' WHERE id = 2");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 2, "the event's bytes are missing"));
	cr_assert(!has_problem(&pr, 2, "column"));
	/* On PostgreSQL the column's new type makes every id text. */
	for (uint64_t id = 1; !fx.pg && id <= 4; id++)
		cr_assert(id == 2 || !has_problem(&pr, id, ""), "event %llu", (unsigned long long)id);
	bytes_free(b, 4);
}

struct page {
	size_t n;
	uint64_t last;
};

static int page_event(void *arg, const struct store_event *e)
{
	struct page *pg = arg;

	cr_assert_not_null(e->raw);
	cr_assert_gt(e->id, pg->last);
	pg->last = e->id;
	pg->n++;
	return 0;
}

/* A page stops at its read budget (each batch here ~1 KiB decompressed):
 * at least one batch each time, cut says more may follow, and paging on
 * from its last id reads every event once. */
STORE_TEST(a_page_stops_at_its_read_budget_and_paging_goes_on)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[24];
	struct store_filter f = { .pid = -1, .limit = 100 };
	struct page pg = { 0 };
	size_t pages = 0;
	bool cut = true;

	append_kept(&ch, b, 24, 3);	/* 8 batches of 3 */
	while (cut) {
		size_t before = pg.n;

		f.after_id = pg.last;
		cr_assert_eq(store_events_page(fx.s, &f, 1, page_event, &pg, &cut), 0);
		cr_assert_eq(pg.n - before, 3, "page %zu: one batch", pages);
		pages++;
	}
	cr_assert_eq(pg.n, 24);
	cr_assert_eq(pages, 8);
	cr_assert_eq(pg.last, 24);
	f.after_id = pg.last;
	pg.n = 0;
	cr_assert_eq(store_events_page(fx.s, &f, STORE_PAGE_READ_BUDGET, page_event, &pg, &cut),
		     0);
	cr_assert_not(cut);
	cr_assert_eq(pg.n, 0, "after the last id, nothing");
	bytes_free(b, 24);
}

/* A slice past its payload's end reads as missing bytes, not past a buffer. */
STORE_TEST(verify_finds_a_slice_outside_its_payload)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[4];
	struct problems pr;

	append_kept(&ch, b, 4, 4);
	tamper_both("UPDATE events SET payload_len = payload_len + 1000000 WHERE id = 4");
	cr_assert_gt(verify(&pr), 0);
	cr_assert(has_problem(&pr, 4, "the event's bytes are missing"));
	bytes_free(b, 4);
}

/* Odd seqs in one batch, even in the next: reading them back in seq
 * order alternates between the two payloads. */
STORE_TEST(events_of_interleaved_batches_read_back)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[20], odd[10], even[10];
	struct store_append_result res;

	for (int i = 0; i < 20; i++) {
		b[i] = chain_next(&ch, NULL);
		(i % 2 ? even : odd)[i / 2] = b[i];
	}
	cr_assert_eq(append("agent-p", odd, 10, &res), 0);
	cr_assert_eq(append("agent-p", even, 10, &res), 0);
	cr_assert_eq(res.acked_seq, 20);
	cr_assert_eq(db_int("SELECT count(DISTINCT payload) FROM events"), 2);
	read_back_all(b, 20);
}

/* Odd seqs stored, then all of them sent again: each new even seq's
 * prev_hash is checked against the odd duplicate before it in the same
 * batch, whose chain hash is its own bytes' (no stored event read, no
 * alert), and the resent bytes are no equivocation. */
STORE_TEST(a_resend_chains_its_new_events_to_its_duplicates)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[40], odd[20];
	struct store_append_result res;
	struct alerts al = { 0 };
	struct problems pr;
	uint64_t before;

	for (int i = 0; i < 40; i++) {
		b[i] = chain_next(&ch, NULL);
		if (i % 2 == 0)
			odd[i / 2] = b[i];
	}
	cr_assert_eq(append("agent-p", odd, 20, &res), 0);
	cr_assert_eq(store_alert_count(fx.s, &before), 0);
	cr_assert_eq(append("agent-p", b, 40, &res), 0);
	cr_assert_eq(res.accepted, 20);
	cr_assert_eq(res.duplicates, 20);
	cr_assert_eq(res.acked_seq, 40);
	cr_assert_eq(store_alerts(fx.s, before, 16, collect_alert, &al), 0);
	cr_assert_eq(al.n, 0, "%s: %s", al.kinds[0], al.details[0]);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 40);
}

/* Seq 5 fills a gap with a prev_hash that is not seq 4's: the stored seq
 * 4 is read (from its batch's payload) and the chain break raised. */
STORE_TEST(a_gap_filled_with_a_broken_chain_is_an_alert)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[8], forged;
	struct store_append_result res;
	struct alerts al = { 0 };
	uint8_t wrong[EVENT_HASH_LEN];

	for (int i = 0; i < 8; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-p", b, 4, &res), 0);
	cr_assert_eq(append("agent-p", b + 5, 3, &res), 0);
	memset(wrong, 0x5a, sizeof(wrong));
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE seq = 4 AND payload = 1"), 1);
	forged = pack(&ch, 5, wrong, &(struct spec){ .pid = 4242 });
	cr_assert_eq(append("agent-p", &forged, 1, &res), 0);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(store_alerts(fx.s, 0, 16, collect_alert, &al), 0);
	cr_assert_eq(al.n, 2);
	cr_assert_str_eq(al.kinds[0], "gap");
	cr_assert_str_eq(al.kinds[1], "chain");
	cr_assert_str_eq(al.details[1], "seq 5: prev_hash is not the hash of seq 4");
	free(forged.raw);
	bytes_free(b, 8);
}

/* Seq 5 arrives after 6..8, with seq 4's batch gone: its prev_hash cannot
 * be checked, which is an alert of its own, not a gap (seq 4 is there). */
STORE_TEST(an_event_whose_previous_is_unreadable_is_unchecked_not_a_gap)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[8];
	struct store_append_result res;
	struct alerts al = { 0 };

	for (int i = 0; i < 8; i++)
		b[i] = chain_next(&ch, NULL);
	cr_assert_eq(append("agent-p", b, 4, &res), 0);
	cr_assert_eq(append("agent-p", b + 5, 3, &res), 0);
	tamper_both("DELETE FROM payloads WHERE id = 1");
	cr_assert_eq(append("agent-p", b + 4, 1, &res), 0);
	cr_assert_eq(res.accepted, 1);
	cr_assert_eq(store_alerts(fx.s, 0, 16, collect_alert, &al), 0);
	cr_assert_eq(al.n, 2);
	cr_assert_str_eq(al.kinds[0], "gap");
	cr_assert_str_eq(al.kinds[1], "unchecked");
	cr_assert(strstr(al.details[1], "prev_hash of 1 event(s) from seq 5 not checked"),
		  "%s", al.details[1]);
	bytes_free(b, 8);
}

/* Even seqs first, then the odd ones: each odd seq's previous was stored
 * before. Stored all in one batch, one payload serves every lookup: all
 * are checked. Stored a batch each, the first STORED_PREV_PAYLOADS (8)
 * payloads are read and the rest left to verify, in one alert. */
static void odd_after_even(bool one_batch_of_evens, struct alerts *al)
{
	struct chain ch = { .agent = "agent-p", .epoch = 1 };
	struct event_bytes b[40], odd[20], even[20];
	struct store_append_result res;
	struct problems pr;
	uint64_t before;

	for (int i = 0; i < 40; i++) {
		b[i] = chain_next(&ch, NULL);
		(i % 2 ? even : odd)[i / 2] = b[i];
	}
	for (int i = 0; i < 20; i += one_batch_of_evens ? 20 : 1)
		cr_assert_eq(append("agent-p", even + i, one_batch_of_evens ? 20 : 1, &res), 0);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), one_batch_of_evens ? 1 : 20);
	/* Each even seq's predecessor is missing: a gap each, whatever the
	 * number, since finding that reads no payload. */
	cr_assert_eq(store_alert_count(fx.s, &before), 0);
	cr_assert_eq(before, 20);
	cr_assert_eq(append("agent-p", odd, 20, &res), 0);
	cr_assert_eq(res.accepted, 20);
	cr_assert_eq(res.acked_seq, 40);
	cr_assert_eq(store_alerts(fx.s, before, 16, collect_alert, al), 0);
	cr_assert_eq(verify(&pr), 0);
	bytes_free(b, 40);
}

STORE_TEST(stored_predecessors_in_one_payload_are_all_checked)
{
	struct alerts al = { 0 };

	odd_after_even(true, &al);
	cr_assert_eq(al.n, 0, "%s: %s", al.kinds[0], al.details[0]);
}

STORE_TEST(a_batch_reads_a_bounded_number_of_payloads_for_its_chain)
{
	struct alerts al = { 0 };

	odd_after_even(false, &al);
	cr_assert_eq(al.n, 1);
	cr_assert_str_eq(al.kinds[0], "unchecked");
	cr_assert(strstr(al.details[0], "prev_hash of 11 event(s) from seq 19 not checked"),
		  "%s", al.details[0]);
}

STORE_TEST(a_schema_3_database_is_upgraded_when_opened)
{
	struct chain c = { .agent = "agent-c", .epoch = 1 };
	struct event_bytes e[4];
	struct problems pr;

	fx.inline_bytes = true;
	append_mixed();
	downgrade_to_schema_3();
	cr_assert(db_fails("SELECT raw_inline FROM events"));
	store_reopen();
	/* An older collector reading raw now fails instead of taking a
	 * payload's empty raw_inline for an event's bytes. */
	cr_assert(db_fails("SELECT raw FROM events"));
	cr_assert_eq(db_int("SELECT count(*) FROM events WHERE payload IS NULL "
			    "AND length(raw_inline) > 0"),
		     8);
	cr_assert_eq(verify(&pr), 0);
	check_mixed_filters();

	/* New batches go to payloads, beside the events kept in their rows. */
	append_kept(&c, e, 4, 4);
	cr_assert_eq(db_int("SELECT count(*) FROM payloads"), 1);
	cr_assert_eq(verify(&pr), 0);
	store_reopen();
	cr_assert_eq(verify(&pr), 0);
	bytes_free(e, 4);
}

STORE_TEST(verify_finds_a_forged_tree_head)
{
	struct problems pr;

	append_twelve();
	tamper_both("UPDATE tree_heads SET ts = ts + 1 WHERE size = 12");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 0, "signature (size 12) does not verify"));
}

STORE_TEST(verify_finds_a_rewritten_history)
{
	struct problems pr;

	append_twelve();
	/* An older head that no longer fits the tree: history was rewritten. */
	tamper("UPDATE tree_heads SET root = zeroblob(32) WHERE size = 5",
	       "UPDATE tree_heads SET root = decode(repeat('00', 32), 'hex') WHERE size = 5");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 0, "tree head of size 5 is not consistent"));
}

STORE_TEST(verify_finds_a_tampered_agent_row)
{
	struct problems pr;

	append_twelve();
	tamper_both("UPDATE agents SET acked_seq = 20 WHERE agent_id = 'agent-v'");
	cr_assert_eq(verify(&pr), 1);
	cr_assert(has_problem(&pr, 0, "acked_seq is 20"));
}

/* --- many writers ------------------------------------------------------------ */

struct writer_arg {
	struct store *s;
	char agent[32];
	int batches;
	int rc;
};

static void *writer_main(void *p)
{
	struct writer_arg *w = p;
	struct chain ch = { .agent = w->agent, .epoch = 1 };

	for (int i = 0; i < w->batches && !w->rc; i++) {
		struct event_bytes b[20];
		struct store_event_in in[20];
		struct store_append_result res;
		char err[STORE_ERR_LEN];

		for (int j = 0; j < 20; j++) {
			b[j] = chain_next(&ch, NULL);
			in[j] = (struct store_event_in){ b[j].raw, b[j].len,
							 dbward__v1__event__unpack(NULL, b[j].len,
										   b[j].raw) };
		}
		w->rc = store_append(w->s, w->agent, in, 20, fx.key, &res, err, sizeof(err));
		if (w->rc == 0 && res.accepted != 20)
			w->rc = -2;
		for (int j = 0; j < 20; j++) {
			dbward__v1__event__free_unpacked((Dbward__V1__Event *)in[j].ev, NULL);
			free(b[j].raw);
		}
	}
	return NULL;
}

static void *reader_main(void *p)
{
	struct writer_arg *w = p;

	for (int i = 0; i < 50 && !w->rc; i++) {
		struct store_filter f = { .pid = -1, .limit = 50 };
		struct collected c = { 0 };

		w->rc = store_events(w->s, &f, collect_event, &c);
	}
	return NULL;
}

STORE_TEST(concurrent_writers_and_a_second_replica_stay_consistent)
{
	struct store *replica;
	struct writer_arg w[5];
	pthread_t t[5];
	char err[STORE_ERR_LEN];
	struct problems pr;
	struct signed_tree_head h;

	/* A second store over the same database: another collector replica. */
	cr_assert_eq(store_open(fx.url, &replica, err, sizeof(err)), 0, "%s", err);
	for (int i = 0; i < 5; i++) {
		w[i] = (struct writer_arg){ .s = i % 2 ? replica : fx.s, .batches = 10 };
		snprintf(w[i].agent, sizeof(w[i].agent), "agent-%d", i);
		pthread_create(&t[i], NULL, i == 4 ? reader_main : writer_main, &w[i]);
	}
	for (int i = 0; i < 5; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].rc, 0, "thread %d: %d", i, w[i].rc);
	}
	store_close(replica);
	cr_assert_eq(store_tree_head(fx.s, &h), 0);
	cr_assert_eq(h.size, 4 * 10 * 20);
	cr_assert_eq(verify(&pr), 0);
}

/* --- rate ------------------------------------------------------------------------ */

STORE_TEST(append_rate_of_small_events)
{
	enum { TOTAL = 100000, BATCH = 1000 };
	struct chain ch = { .agent = "agent-fast", .epoch = 1 };
	static struct event_bytes b[TOTAL];
	static struct store_event_in in[TOTAL];
	struct store_append_result res;
	char err[STORE_ERR_LEN];
	uint64_t start, ns;
	struct problems pr;

	for (int i = 0; i < TOTAL; i++) {
		b[i] = chain_next(&ch, NULL);
		in[i] = (struct store_event_in){ b[i].raw, b[i].len,
						 dbward__v1__event__unpack(NULL, b[i].len, b[i].raw) };
	}
	start = clock_monotonic_ns();
	for (int i = 0; i < TOTAL; i += BATCH)
		cr_assert_eq(store_append(fx.s, "agent-fast", in + i, BATCH, fx.key, &res, err,
					  sizeof(err)),
			     0, "%s", err);
	ns = clock_monotonic_ns() - start;
	fprintf(stderr, "store %s: appended %d events (%d-event batches, ~%zu bytes each) at %.0f "
			"events/s\n",
		fx.pg ? "postgresql" : "sqlite", TOTAL, BATCH, b[0].len, TOTAL / (ns / 1e9));
	cr_assert_eq(res.acked_seq, TOTAL);
	start = clock_monotonic_ns();
	cr_assert_eq(verify(&pr), 0);
	ns = clock_monotonic_ns() - start;
	fprintf(stderr, "store %s: verified %d events at %.0f events/s\n",
		fx.pg ? "postgresql" : "sqlite", TOTAL, TOTAL / (ns / 1e9));
	for (int i = 0; i < TOTAL; i++) {
		dbward__v1__event__free_unpacked((Dbward__V1__Event *)in[i].ev, NULL);
		free(b[i].raw);
	}
}

/* --- opening ------------------------------------------------------------------- */

Test(store_open, refuses_an_unknown_url)
{
	struct store *s;
	char err[STORE_ERR_LEN];

	cr_assert_eq(store_open("mysql://x", &s, err, sizeof(err)), -1);
	cr_assert_null(s);
	cr_assert(strstr(err, "sqlite:"));
	cr_assert_eq(store_open("sqlite:/nonexistent-dir/x/audit.db", &s, err, sizeof(err)), -1);
}

Test(store_open, reopening_keeps_everything, .init = setup_sqlite, .fini = teardown)
{
	struct chain ch = { .agent = "agent-o", .epoch = 1 };
	struct signed_tree_head h;
	struct problems pr;

	append_plain(&ch, 3);
	store_reopen();
	append_plain(&ch, 2);
	cr_assert_eq(store_tree_head(fx.s, &h), 0);
	cr_assert_eq(h.size, 5);
	cr_assert_eq(verify(&pr), 0);
}
