/*
 * bench-ingest: how fast the collector takes audit events, and how well
 * they compress on the wire.
 *
 *   bench-ingest [--events N] [--bin DIR] [--no-e2e | --store-only] [--sweep] [--inline]
 *   bench-ingest --ratio-from-spool DIR
 *
 * A synthetic agent makes statement events the way agent/session.c does
 * (a Session with an attributed Identity, a Statement body; connection
 * open/close around each session), with SQL from a pgbench-like corpus
 * plus a few application queries, chained with event_hash. Then, one line
 * per figure:
 *   store sqlite    store_append_batch() into a fresh SQLite file (batches
 *                   of 1000 and 5000, each packed and zstd'ed beforehand
 *                   as the agent sends it; --inline: store_append(), each
 *                   event's bytes in its row, as before schema 4):
 *                   events/s;
 *   e2e             through a real dbward-collector (DIR/dbward-collector,
 *                   certificates from DIR/dbward ca) over mTLS, batches
 *                   framed and zstd'ed as the agent does, one in flight,
 *                   each waiting for its Ack: events/s; then 4 agents at
 *                   once (batches of 5000, the same number of events in
 *                   all), as a fleet sends;
 *   zstd            raw protobuf bytes / zstd level 3, batches of 1000,
 *                   and the JSON of the same events for comparison;
 *   store postgres  as store sqlite, when DBWARD_BENCH_PG_URL is set
 *                   (appends to whatever that database holds).
 * --sweep adds store sqlite for event sizes ~0.3, 1 and 4 KB x batches of
 * 100, 1000, 5000. --ratio-from-spool reads an agent's spool directory
 * (agent/spool.h: *.seg files of [u32 len][u32 crc][Event]) read-only and
 * prints the same zstd line for those real events.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collector/store.h"
#include "common/clock.h"
#include "common/event_json.h"
#include "common/json.h"
#include "common/signing.h"
#include "common/wire.h"
#include "dbward/v1/audit.pb-c.h"

#define AGENT_ID "bench-agent"
#define SESSIONS 32
#define ZSTD_LEVEL 3
#define RATIO_BATCH 1000

/* --- the synthetic agent ------------------------------------------------ */

struct corpus {
	uint8_t **raw;
	size_t *len;
	size_t n;
	size_t bytes;
};

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static void rnd_hex(char *out, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++)
		out[i] = digits[rnd() & 15];
	out[n] = '\0';
}

struct bench_session {
	char id[33];
	char comm[16], exe[64], user[16], cgroup[256], container[65], pod_uid[37];
	char client[32], server[32], db_user[16], database[16], app[32];
	uint32_t pid;
	uint64_t cgroup_id, netns;
	unsigned left;			/* statements before it closes */
	bool open_sent;
};

static const char *const comms[] = { "pgbench", "python3", "java", "psql", "node" };
static const char *const exes[] = { "/usr/bin/pgbench", "/usr/bin/python3.11",
				    "/usr/lib/jvm/java-17/bin/java", "/usr/bin/psql",
				    "/usr/local/bin/node" };

static void session_start(struct bench_session *s, unsigned k)
{
	unsigned who = rnd_below(5);
	char hex[17];

	rnd_hex(hex, 16);
	snprintf(s->id, sizeof(s->id), "9f2c61d0a4b3e871%s", hex);
	snprintf(s->comm, sizeof(s->comm), "%s", comms[who]);
	snprintf(s->exe, sizeof(s->exe), "%s", exes[who]);
	snprintf(s->user, sizeof(s->user), "app%u", who);
	rnd_hex(s->container, 64);
	snprintf(s->pod_uid, sizeof(s->pod_uid), "7c1e%04x-2b9d-4f6a-8e3c-%012" PRIx64, k,
		 (uint64_t)(rnd() & 0xffffffffffffull));
	snprintf(s->cgroup, sizeof(s->cgroup),
		 "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%.8s.slice/"
		 "cri-containerd-%s.scope",
		 s->pod_uid, s->container);
	snprintf(s->client, sizeof(s->client), "10.42.%u.%u:%u", k % 8, 10 + k, 40000 + rnd_below(20000));
	snprintf(s->server, sizeof(s->server), "10.43.0.15:5432");
	snprintf(s->db_user, sizeof(s->db_user), who == 3 ? "postgres" : "app");
	snprintf(s->database, sizeof(s->database), who == 0 ? "pgbench" : "shop");
	snprintf(s->app, sizeof(s->app), who == 0 ? "pgbench" : who == 3 ? "psql" : "");
	s->pid = 1000 + rnd_below(60000);
	s->cgroup_id = 4096 + rnd_below(100000);
	s->netns = 4026531840ull + rnd_below(1000);
	s->left = 20 + rnd_below(400);
	s->open_sent = false;
}

struct stmt_shape {
	const char *kind;
	const char *tables[2];
	unsigned n_tables;
	bool extended;
	unsigned params;
};

/* One statement's text: pgbench's TPC-B script (simple protocol, literal
 * values) and a few application queries (extended, $n). */
static struct stmt_shape stmt_text(char *sql, size_t cap, size_t pad)
{
	unsigned aid = 1 + rnd_below(1000000), tid = 1 + rnd_below(100), bid = 1 + rnd_below(10);
	int delta = (int)rnd_below(10001) - 5000;
	struct stmt_shape sh = { .kind = "select" };
	size_t len;

	switch (rnd_below(10)) {
	case 0:
		snprintf(sql, cap, "UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %u;",
			 delta, aid);
		sh = (struct stmt_shape){ "update", { "pgbench_accounts" }, 1, false, 0 };
		break;
	case 1:
		snprintf(sql, cap, "SELECT abalance FROM pgbench_accounts WHERE aid = %u;", aid);
		sh = (struct stmt_shape){ "select", { "pgbench_accounts" }, 1, false, 0 };
		break;
	case 2:
		snprintf(sql, cap, "UPDATE pgbench_tellers SET tbalance = tbalance + %d WHERE tid = %u;",
			 delta, tid);
		sh = (struct stmt_shape){ "update", { "pgbench_tellers" }, 1, false, 0 };
		break;
	case 3:
		snprintf(sql, cap, "UPDATE pgbench_branches SET bbalance = bbalance + %d WHERE bid = %u;",
			 delta, bid);
		sh = (struct stmt_shape){ "update", { "pgbench_branches" }, 1, false, 0 };
		break;
	case 4:
		snprintf(sql, cap,
			 "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%u, %u, %u, "
			 "%d, CURRENT_TIMESTAMP);",
			 tid, bid, aid, delta);
		sh = (struct stmt_shape){ "insert", { "pgbench_history" }, 1, false, 0 };
		break;
	case 5:
		snprintf(sql, cap, rnd_below(2) ? "BEGIN;" : "END;");
		sh = (struct stmt_shape){ "transaction", { NULL }, 0, false, 0 };
		break;
	case 6:
		snprintf(sql, cap,
			 "SELECT o.id, o.total, o.status, c.name, c.email FROM orders o JOIN customers c "
			 "ON c.id = o.customer_id WHERE o.customer_id = $1 AND o.created_at > $2 ORDER BY "
			 "o.created_at DESC LIMIT 50");
		sh = (struct stmt_shape){ "select", { "orders", "customers" }, 2, true, 2 };
		break;
	case 7:
		snprintf(sql, cap,
			 "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES "
			 "($1, $2, $3, $4) RETURNING id");
		sh = (struct stmt_shape){ "insert", { "order_items" }, 1, true, 4 };
		break;
	case 8:
		snprintf(sql, cap,
			 "UPDATE sessions SET last_seen = now(), data = $2 WHERE token = $1");
		sh = (struct stmt_shape){ "update", { "sessions" }, 1, true, 2 };
		break;
	default:
		snprintf(sql, cap, "SELECT id, sku, name, price, stock FROM products WHERE id = %u",
			 aid % 5000);
		sh = (struct stmt_shape){ "select", { "products" }, 1, false, 0 };
		break;
	}
	/* Bigger events for the size sweep: a trailing comment, as ORMs add. */
	len = strlen(sql);
	if (pad && len + 32 < cap) {
		len += (size_t)snprintf(sql + len, cap - len, " /* trace=%016" PRIx64 " ", rnd());
		while (len + 4 < cap && len < pad)
			sql[len++] = (char)('a' + rnd_below(26));
		snprintf(sql + len, cap - len, " */");
	}
	return sh;
}

struct chain {
	const char *agent;
	uint64_t seq, ts;
	uint8_t prev[EVENT_HASH_LEN];
};

static int chain_add(struct corpus *c, struct chain *ch, Dbward__V1__Event *ev)
{
	size_t len;
	uint8_t *raw;

	ev->agent_id = (char *)ch->agent;
	ev->epoch = 1;
	ev->seq = ++ch->seq;
	ch->ts += 20000 + rnd_below(200000);
	ev->ts = ch->ts;
	ev->prev_hash = (ProtobufCBinaryData){ EVENT_HASH_LEN, ch->prev };
	len = dbward__v1__event__get_packed_size(ev);
	raw = malloc(len ? len : 1);
	if (!raw)
		return -ENOMEM;
	dbward__v1__event__pack(ev, raw);
	event_hash(raw, len, ch->prev);
	c->raw[c->n] = raw;
	c->len[c->n++] = len;
	c->bytes += len;
	return 0;
}

static void fill_session(const struct bench_session *s, Dbward__V1__Session *sess,
			 Dbward__V1__Identity *id)
{
	dbward__v1__session__init(sess);
	dbward__v1__identity__init(id);
	id->pid = s->pid;
	id->tid = s->pid;
	id->uid = 1000;
	id->gid = 1000;
	id->comm = (char *)s->comm;
	id->exe = (char *)s->exe;
	id->user = (char *)s->user;
	id->cgroup_path = (char *)s->cgroup;
	id->cgroup_id = s->cgroup_id;
	id->container_id = (char *)s->container;
	id->pod_uid = (char *)s->pod_uid;
	id->container_runtime = (char *)"containerd";
	id->netns_cookie = s->netns;
	sess->session_id = (char *)s->id;
	sess->identity = id;
	sess->client = (char *)s->client;
	sess->server = (char *)s->server;
	sess->db_user = (char *)s->db_user;
	sess->database = (char *)s->database;
	sess->application_name = (char *)s->app;
}

/* @n events of @agent, about 97% statements, the rest opens and closes.
 * @pad: SQL padded to about that many bytes (0: as is). */
static int corpus_make_for(struct corpus *c, size_t n, size_t pad, const char *agent)
{
	static struct bench_session sessions[SESSIONS];
	struct chain ch = { .agent = agent, .ts = 1750000000000000000ull };
	char sql[8192];

	rng_state = 0x243f6a8885a308d3ull;
	*c = (struct corpus){ calloc(n, sizeof(*c->raw)), calloc(n, sizeof(*c->len)), 0, 0 };
	if (!c->raw || !c->len)
		return -ENOMEM;
	for (unsigned k = 0; k < SESSIONS; k++)
		session_start(&sessions[k], k);
	while (c->n < n) {
		unsigned k = rnd_below(SESSIONS);
		struct bench_session *s = &sessions[k];
		Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
		Dbward__V1__Session sess;
		Dbward__V1__Identity id;
		Dbward__V1__ConnectionOpen open = DBWARD__V1__CONNECTION_OPEN__INIT;
		Dbward__V1__ConnectionClose close = DBWARD__V1__CONNECTION_CLOSE__INIT;
		Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
		struct stmt_shape sh;
		char fp[17];

		fill_session(s, &sess, &id);
		ev.session = &sess;
		if (!s->open_sent) {
			ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_OPEN;
			ev.connection_open = &open;
			s->open_sent = true;
		} else if (s->left == 0) {
			close.client_bytes = 1000 + rnd_below(1000000);
			close.server_bytes = 1000 + rnd_below(10000000);
			close.duration_us = 1000 + rnd_below(100000000);
			close.error = (char *)"";
			ev.body_case = DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE;
			ev.connection_close = &close;
		} else {
			sh = stmt_text(sql, sizeof(sql), pad);
			rnd_hex(fp, 16);
			st.sql = sql;
			st.fingerprint = fp;
			st.statement_kind = (char *)sh.kind;
			st.tables = (char **)sh.tables;
			st.n_tables = sh.n_tables;
			st.param_count = sh.params;
			st.extended = sh.extended;
			st.duration_us = 50 + rnd_below(5000);
			st.rows = sh.n_tables ? (int64_t)rnd_below(50) : -1;
			st.client_bytes = strlen(sql) + 20 + 30 * sh.params;
			st.server_bytes = 30 + rnd_below(4000);
			st.sqlstate = (char *)"";
			st.verdict = (char *)"allow";
			st.rule = (char *)"";
			st.finished = true;
			ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
			ev.statement = &st;
			s->left--;
		}
		if (chain_add(c, &ch, &ev) < 0)
			return -ENOMEM;
		if (ev.body_case == DBWARD__V1__EVENT__BODY_CONNECTION_CLOSE)
			session_start(s, k);
	}
	return 0;
}

static int corpus_make(struct corpus *c, size_t n, size_t pad)
{
	return corpus_make_for(c, n, pad, AGENT_ID);
}

static void corpus_free(struct corpus *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->raw[i]);
	free(c->raw);
	free(c->len);
}

/* --- store_append directly ---------------------------------------------- */

static bool inline_bytes;	/* --inline */

static uint8_t *batch_pack(uint8_t *const *raw, const size_t *len, size_t n, size_t *out_len);

/* The batches of @batch events the store is given, as the collector has
 * them: the zstd payload, and each event's bytes inside it decompressed. */
struct bench_batches {
	struct store_payload *p;
	size_t n;
};

static void bench_batches_free(struct bench_batches *bb)
{
	for (size_t i = 0; bb->p && i < bb->n; i++) {
		free((void *)bb->p[i].plain);
		free((void *)bb->p[i].data);
	}
	free(bb->p);
}

/* Each event of a packed Batch: field 1, its length, its bytes. */
static int batch_slices(const uint8_t *plain, size_t len, struct store_event_in *in, size_t n)
{
	const uint8_t *p = plain, *end = plain + len;

	for (size_t i = 0; i < n; i++) {
		uint64_t v = 0;
		int shift = 0;

		if (p == end || *p++ != 0x0a)
			return -1;
		do {
			if (p == end || shift > 63)
				return -1;
			v |= (uint64_t)(*p & 0x7f) << shift;
			shift += 7;
		} while (*p++ & 0x80);
		if (v != in[i].len || v > (uint64_t)(end - p))
			return -1;
		in[i].raw = p;
		p += v;
	}
	return p == end ? 0 : -1;
}

static int bench_batches_make(const struct corpus *c, struct store_event_in *in, size_t batch,
			      struct bench_batches *bb)
{
	bb->n = (c->n + batch - 1) / batch;
	bb->p = calloc(bb->n, sizeof(*bb->p));
	if (!bb->p)
		return -1;
	for (size_t b = 0; b < bb->n; b++) {
		size_t i = b * batch, n = c->n - i < batch ? c->n - i : batch, plen, zlen;
		uint8_t *plain = batch_pack(c->raw + i, c->len + i, n, &plen), *z = NULL;

		if (!plain || wire_compress(plain, plen, ZSTD_LEVEL, &z, &zlen) < 0 ||
		    batch_slices(plain, plen, in + i, n) < 0) {
			free(plain);
			return -1;
		}
		bb->p[b] = (struct store_payload){ z, zlen, plain, plen };
	}
	return 0;
}

/* This process's CPU time (user + system): steadier than wall time on a
 * shared machine. */
static uint64_t cpu_ns_of(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

static uint64_t cpu_ns(void)
{
	return cpu_ns_of(RUSAGE_SELF);
}

static int store_run(const char *label, const char *url, const char *agent,
		     const struct corpus *c, size_t batch, const struct signing_key *key)
{
	struct store_event_in *in = calloc(c->n, sizeof(*in));
	struct bench_batches bb = { 0 };
	char err[STORE_ERR_LEN];
	struct store *s = NULL;
	uint64_t start, ns, cpu, own;
	int rc = -1;

	if (!in)
		return -1;
	for (size_t i = 0; i < c->n; i++) {
		Dbward__V1__Event *ev = dbward__v1__event__unpack(NULL, c->len[i], c->raw[i]);

		if (!ev)
			goto out;
		/* Another agent id: a shared PostgreSQL database may hold earlier runs. */
		free(ev->agent_id);
		ev->agent_id = strdup(agent);
		in[i] = (struct store_event_in){ c->raw[i], c->len[i], ev };
	}
	if (!inline_bytes && bench_batches_make(c, in, batch, &bb) < 0) {
		fprintf(stderr, "bench-ingest: packing the batches failed\n");
		goto out;
	}
	if (store_open(url, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-ingest: %s\n", err);
		goto out;
	}
	start = clock_monotonic_ns();
	cpu = cpu_ns();
	own = cpu_ns_of(RUSAGE_THREAD);
	for (size_t i = 0; i < c->n; i += batch) {
		struct store_append_result res;
		size_t n = c->n - i < batch ? c->n - i : batch;

		const struct store_payload *p = inline_bytes ? NULL : &bb.p[i / batch];

		if (store_append_batch(s, agent, in + i, n, p, key, &res, err, sizeof(err)) < 0) {
			fprintf(stderr, "bench-ingest: %s\n", err);
			goto out;
		}
	}
	ns = clock_monotonic_ns() - start;
	cpu = cpu_ns() - cpu;
	own = cpu_ns_of(RUSAGE_THREAD) - own;
	/* All threads' CPU, and the appending thread's alone: with the other
	 * threads on other cores, that one bounds events/s on a quiet machine. */
	printf("store %-8s batch=%-5zu events=%zu avg_event=%zuB%s: %.0f events/s (%.1f MB/s raw; "
	       "%.2f us CPU/event, %.2f on the appending thread)\n",
	       label, batch, c->n, c->bytes / c->n, inline_bytes ? " inline" : "",
	       c->n / (ns / 1e9), c->bytes / (ns / 1e3), cpu / 1e3 / c->n, own / 1e3 / c->n);
	fflush(stdout);
	rc = 0;
out:
	store_close(s);
	bench_batches_free(&bb);
	for (size_t i = 0; i < c->n; i++)
		if (in[i].ev)
			dbward__v1__event__free_unpacked((Dbward__V1__Event *)in[i].ev, NULL);
	free(in);
	return rc;
}

static int sqlite_run(const char *tmp, const struct corpus *c, size_t batch,
		      const struct signing_key *key)
{
	char path[PATH_MAX], url[PATH_MAX + 16];
	int rc;

	snprintf(path, sizeof(path), "%s/bench-%zu.db", tmp, batch);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	rc = store_run("sqlite", url, AGENT_ID, c, batch, key);
	if (rc == 0) {
		struct stat st;
		off_t bytes = 0;

		/* Closing checkpointed the WAL into the database and removed it. */
		if (stat(path, &st) == 0)
			bytes = st.st_size;
		printf("store sqlite   batch=%-5zu on disk: %.0f bytes per event (the database "
		       "file, once closed)\n",
		       batch, (double)bytes / (double)c->n);
	}
	for (int i = 0; i < 3; i++) {
		static const char *const suffix[] = { "", "-wal", "-shm" };
		char p[PATH_MAX + 8];

		snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
		unlink(p);
	}
	return rc;
}

/* --- batches on the wire ------------------------------------------------ */

/* Serialized Batch of events [i, i + n). */
static uint8_t *batch_pack(uint8_t *const *raw, const size_t *len, size_t n, size_t *out_len)
{
	Dbward__V1__Batch b = DBWARD__V1__BATCH__INIT;
	ProtobufCBinaryData *items = calloc(n, sizeof(*items));
	uint8_t *out = NULL;

	if (!items)
		return NULL;
	for (size_t i = 0; i < n; i++)
		items[i] = (ProtobufCBinaryData){ len[i], raw[i] };
	b.n_events = n;
	b.events = items;
	*out_len = dbward__v1__batch__get_packed_size(&b);
	out = malloc(*out_len ? *out_len : 1);
	if (out)
		dbward__v1__batch__pack(&b, out);
	free(items);
	return out;
}

static int ratio_report(const char *label, uint8_t *const *raw, const size_t *len, size_t n)
{
	size_t events = 0, compressed = 0, packed = 0, json = 0, batches = 0;
	struct jsonbuf jb;

	for (size_t i = 0; i < n; i += RATIO_BATCH) {
		size_t k = n - i < RATIO_BATCH ? n - i : RATIO_BATCH, blen, zlen;
		uint8_t *b = batch_pack(raw + i, len + i, k, &blen), *z;

		if (!b || wire_compress(b, blen, ZSTD_LEVEL, &z, &zlen) < 0) {
			free(b);
			return -1;
		}
		packed += blen;
		compressed += zlen;
		batches++;
		free(b);
		free(z);
	}
	for (size_t i = 0; i < n; i++) {
		events += len[i];
		jsonbuf_init(&jb);
		if (event_json_line(&jb, raw[i], len[i]) == 0)
			json += jb.len;
		jsonbuf_release(&jb);
	}
	printf("zstd %s: %zu events in %zu batches of <=%d, avg_event=%zuB: protobuf %zu B -> "
	       "zstd-%d %zu B, ratio %.2f (%.1f B/event on the wire); JSON lines %zu B (%.2fx "
	       "protobuf, %.1fx the zstd bytes)\n",
	       label, n, batches, RATIO_BATCH, n ? events / n : 0, packed, ZSTD_LEVEL, compressed,
	       compressed ? (double)packed / compressed : 0, n ? (double)compressed / n : 0, json,
	       events ? (double)json / events : 0, compressed ? (double)json / compressed : 0);
	return 0;
}

/* --- an agent spool, read-only ------------------------------------------ */

static int seg_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int spool_read_file(const char *path, struct corpus *c, size_t *cap)
{
	FILE *f = fopen(path, "rb");
	uint8_t hdr[8];

	if (!f)
		return -errno;
	while (fread(hdr, 1, sizeof(hdr), f) == sizeof(hdr)) {
		uint32_t len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
			       (uint32_t)hdr[3] << 24;
		uint8_t *p;

		if (len == 0 || len > WIRE_MAX_FRAME)
			break;		/* torn or corrupt tail: stop at the last good one */
		if (c->n == *cap) {
			*cap = *cap ? 2 * *cap : 4096;
			c->raw = realloc(c->raw, *cap * sizeof(*c->raw));
			c->len = realloc(c->len, *cap * sizeof(*c->len));
			if (!c->raw || !c->len)
				abort();
		}
		if (!(p = malloc(len)) || fread(p, 1, len, f) != len) {
			free(p);
			break;
		}
		c->raw[c->n] = p;
		c->len[c->n++] = len;
		c->bytes += len;
	}
	fclose(f);
	return 0;
}

static int ratio_from_spool(const char *dir)
{
	struct corpus c = { 0 };
	char **names = NULL;
	size_t n_names = 0, cap = 0;
	struct dirent *de;
	DIR *d = opendir(dir);
	int rc = 0;

	if (!d) {
		fprintf(stderr, "bench-ingest: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0) {
			names = realloc(names, (n_names + 1) * sizeof(*names));
			names[n_names++] = strdup(de->d_name);
		}
	}
	closedir(d);
	qsort(names, n_names, sizeof(*names), seg_name_cmp);
	for (size_t i = 0; i < n_names; i++) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		spool_read_file(path, &c, &cap);
		free(names[i]);
	}
	free(names);
	if (c.n == 0) {
		fprintf(stderr, "bench-ingest: no records in %s/*.seg (an acked spool is empty: "
				"stop the collector, or copy the spool while it is behind)\n", dir);
		rc = 1;
	} else if (ratio_report("spool", c.raw, c.len, c.n) < 0) {
		rc = 1;
	}
	corpus_free(&c);
	return rc;
}

/* --- end to end through dbward-collector -------------------------------- */

static int run_cmd(char *const argv[])
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int tcp_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int ssl_write_all(SSL *ssl, const uint8_t *p, size_t n)
{
	while (n) {
		size_t w = 0;

		if (SSL_write_ex(ssl, p, n, &w) != 1)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

static int ssl_read_all(SSL *ssl, uint8_t *p, size_t n)
{
	while (n) {
		size_t r = 0;

		if (SSL_read_ex(ssl, p, n, &r) != 1)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

/* Sends one framed batch and reads its Ack: 0 when ok. */
static int send_batch(SSL *ssl, const uint8_t *z, size_t zlen, uint32_t *accepted)
{
	uint8_t hdr[WIRE_HEADER_LEN], buf[4096];
	Dbward__V1__Ack *ack;
	size_t len;
	uint8_t type;
	int rc = -1;

	wire_header(hdr, WIRE_BATCH, zlen);
	if (ssl_write_all(ssl, hdr, sizeof(hdr)) < 0 || ssl_write_all(ssl, z, zlen) < 0 ||
	    ssl_read_all(ssl, hdr, sizeof(hdr)) < 0 || wire_parse_header(hdr, &type, &len) < 0 ||
	    type != WIRE_ACK || len > sizeof(buf) || ssl_read_all(ssl, buf, len) < 0)
		return -1;
	ack = dbward__v1__ack__unpack(NULL, len, buf);
	if (ack && ack->ok) {
		*accepted = ack->accepted;
		rc = 0;
	} else {
		fprintf(stderr, "bench-ingest: batch refused: %s\n", ack ? ack->error : "bad ack");
	}
	if (ack)
		dbward__v1__ack__free_unpacked(ack, NULL);
	return rc;
}

#define E2E_AGENTS_MAX 8
#define E2E_FLEET 4		/* agents at once in the fleet line */

/* One synthetic agent's connection and what it sends. */
struct e2e_agent {
	char name[32];
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	uint8_t **z;			/* its batches, compressed up front */
	size_t *zlen, n_batches;
	uint64_t accepted;
	int rc;
};

struct e2e {
	char dir[PATH_MAX];
	const char *bin;
	pid_t collector;
	int port;
	struct e2e_agent agents[E2E_AGENTS_MAX];
	unsigned n_agents;
	uint64_t cpu_ns;		/* the collector's, from start to exit */
};

static int e2e_connect(struct e2e *e, const char *ca, struct e2e_agent *a)
{
	char path[PATH_MAX + 64];

	a->fd = -1;
	for (int i = 0; i < 200 && a->fd < 0; i++) {
		a->fd = tcp_connect(e->port);
		if (a->fd < 0)
			usleep(25000);
	}
	if (a->fd < 0) {
		fprintf(stderr, "bench-ingest: the collector did not listen on %d\n", e->port);
		return -1;
	}
	a->ctx = SSL_CTX_new(TLS_client_method());
	snprintf(path, sizeof(path), "%s/ca.crt", ca);
	if (!a->ctx || SSL_CTX_load_verify_locations(a->ctx, path, NULL) != 1)
		return -1;
	snprintf(path, sizeof(path), "%s/%s.crt", ca, a->name);
	if (SSL_CTX_use_certificate_chain_file(a->ctx, path) != 1)
		return -1;
	snprintf(path, sizeof(path), "%s/%s.key", ca, a->name);
	if (SSL_CTX_use_PrivateKey_file(a->ctx, path, SSL_FILETYPE_PEM) != 1)
		return -1;
	SSL_CTX_set_verify(a->ctx, SSL_VERIFY_PEER, NULL);
	a->ssl = SSL_new(a->ctx);
	if (!a->ssl || SSL_set_fd(a->ssl, a->fd) != 1 || SSL_connect(a->ssl) != 1) {
		ERR_print_errors_fp(stderr);
		return -1;
	}
	return 0;
}

/* A collector on SQLite, and a connection for each of e->n_agents agents
 * (their names set), each with a certificate of its own. */
static int e2e_start(struct e2e *e, const char *tmp, const char *bin)
{
	char ca[PATH_MAX + 8], cfg[2 * PATH_MAX], tool[PATH_MAX + 16], coll[PATH_MAX + 32];
	FILE *f;

	e->bin = bin;
	snprintf(e->dir, sizeof(e->dir), "%s/e2e", tmp);
	snprintf(ca, sizeof(ca), "%s/pki", e->dir);
	snprintf(tool, sizeof(tool), "%s/dbward", bin);
	snprintf(coll, sizeof(coll), "%s/dbward-collector", bin);
	mkdir(e->dir, 0700);
	{
		char *init[] = { tool, (char *)"ca", (char *)"init", ca, NULL };
		char *srv[] = { tool, (char *)"ca", (char *)"issue", ca, (char *)"collector", NULL };

		if (run_cmd(init) < 0 || run_cmd(srv) < 0) {
			fprintf(stderr, "bench-ingest: `%s ca init/issue` failed\n", tool);
			return -1;
		}
	}
	for (unsigned k = 0; k < e->n_agents; k++) {
		char *cli[] = { tool, (char *)"ca", (char *)"issue", ca, e->agents[k].name, NULL };

		if (run_cmd(cli) < 0) {
			fprintf(stderr, "bench-ingest: `%s ca issue` failed\n", tool);
			return -1;
		}
	}
	e->port = free_port();
	snprintf(cfg, sizeof(cfg), "%s/collector.yaml", e->dir);
	f = fopen(cfg, "w");
	if (!f)
		return -1;
	fprintf(f,
		"listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nstorage: sqlite:%s/audit.db\n"
		"tls:\n  cert: %s/collector.crt\n  key: %s/collector.key\n  ca: %s/ca.crt\n"
		"signing_key: %s/ledger.key\nlog_level: warn\n",
		e->port, free_port(), e->dir, ca, ca, ca, e->dir);
	fclose(f);
	e->collector = fork();
	if (e->collector == 0) {
		execl(coll, coll, "--config", cfg, (char *)NULL);
		_exit(127);
	}
	for (unsigned k = 0; k < e->n_agents; k++)
		if (e2e_connect(e, ca, &e->agents[k]) < 0)
			return -1;
	return 0;
}

static void e2e_stop(struct e2e *e)
{
	int status;

	/* Idempotent: e2e_run stops it to read its CPU, then again on the way out. */
	for (unsigned k = 0; k < e->n_agents; k++) {
		struct e2e_agent *a = &e->agents[k];

		if (a->ssl) {
			SSL_shutdown(a->ssl);
			SSL_free(a->ssl);
			a->ssl = NULL;
		}
		SSL_CTX_free(a->ctx);
		a->ctx = NULL;
		if (a->fd > 0)
			close(a->fd);
		a->fd = -1;
	}
	if (e->collector > 0) {
		struct rusage ru;

		kill(e->collector, SIGTERM);
		if (wait4(e->collector, &status, 0, &ru) == e->collector)
			e->cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
				    (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
		e->collector = 0;
	}
	if (e->dir[0]) {
		char *rm[] = { (char *)"/bin/rm", (char *)"-rf", e->dir, NULL };

		run_cmd(rm);
		e->dir[0] = '\0';
	}
}

/* @c's events in batches of @batch, compressed as an agent sends them. */
static int e2e_batches(struct e2e_agent *a, const struct corpus *c, size_t batch, size_t *wire)
{
	a->n_batches = (c->n + batch - 1) / batch;
	a->z = calloc(a->n_batches, sizeof(*a->z));
	a->zlen = calloc(a->n_batches, sizeof(*a->zlen));
	if (!a->z || !a->zlen)
		return -1;
	for (size_t b = 0; b < a->n_batches; b++) {
		size_t i = b * batch, k = c->n - i < batch ? c->n - i : batch, plen;
		uint8_t *p = batch_pack(c->raw + i, c->len + i, k, &plen);

		if (!p || wire_compress(p, plen, ZSTD_LEVEL, &a->z[b], &a->zlen[b]) < 0) {
			free(p);
			return -1;
		}
		*wire += a->zlen[b];
		free(p);
	}
	return 0;
}

/* One agent's batches, one in flight, each waiting for its Ack. */
static void *e2e_send_all(void *arg)
{
	struct e2e_agent *a = arg;

	a->rc = 0;
	for (size_t b = 0; b < a->n_batches && a->rc == 0; b++) {
		uint32_t acc = 0;

		a->rc = send_batch(a->ssl, a->z[b], a->zlen[b], &acc);
		a->accepted += acc;
	}
	return NULL;
}

/*
 * @n_agents agents at once (1: the agent's own corpus @c; more: a corpus
 * of @c->n / @n_agents events each, under its own name), each with one
 * batch in flight: with several, one connection's decoding overlaps
 * another's append, as with a fleet.
 */
static int e2e_run(const char *tmp, const char *bin, const struct corpus *c, size_t batch,
		   unsigned n_agents)
{
	struct e2e e = { .n_agents = n_agents };
	struct corpus own[E2E_AGENTS_MAX];
	pthread_t threads[E2E_AGENTS_MAX];
	size_t wire = 0, events = 0;
	uint64_t start, ns, accepted = 0;
	unsigned made = 0, started = 0;
	char who[16] = "";
	int rc = -1;

	for (unsigned k = 0; k < n_agents; k++) {
		struct e2e_agent *a = &e.agents[k];
		const struct corpus *ck = c;

		snprintf(a->name, sizeof(a->name), n_agents == 1 ? AGENT_ID : AGENT_ID "-%u", k);
		if (n_agents > 1) {
			if (corpus_make_for(&own[k], c->n / n_agents, 0, a->name) < 0)
				goto out;
			made++;
			ck = &own[k];
		}
		events += ck->n;
		/* Compressed up front: the figure is the collector's, not the agents'. */
		if (e2e_batches(a, ck, batch, &wire) < 0)
			goto out;
	}
	if (e2e_start(&e, tmp, bin) < 0)
		goto out;
	start = clock_monotonic_ns();
	for (; started < n_agents; started++)
		if (pthread_create(&threads[started], NULL, e2e_send_all, &e.agents[started]) != 0)
			break;
	for (unsigned k = 0; k < started; k++) {
		pthread_join(threads[k], NULL);
		accepted += e.agents[k].accepted;
	}
	ns = clock_monotonic_ns() - start;
	if (started < n_agents || accepted != events) {
		fprintf(stderr, "bench-ingest: collector accepted %" PRIu64 " of %zu\n", accepted,
			events);
		goto out;
	}
	/* Its whole life: startup, TLS, decoding, storing, the last checkpoint. */
	e2e_stop(&e);
	if (n_agents > 1)
		snprintf(who, sizeof(who), " agents=%u", n_agents);
	printf("e2e   collector sqlite batch=%-5zu events=%zu%s: %.0f events/s (%.1f MB/s on the "
	       "wire, mTLS, one batch in flight per agent, acked after commit; collector %.2f us "
	       "CPU/event)\n",
	       batch, events, who, events / (ns / 1e9), wire / (ns / 1e3), e.cpu_ns / 1e3 / events);
	fflush(stdout);
	rc = 0;
out:
	e2e_stop(&e);
	for (unsigned k = 0; k < n_agents; k++) {
		struct e2e_agent *a = &e.agents[k];

		for (size_t b = 0; a->z && b < a->n_batches; b++)
			free(a->z[b]);
		free(a->z);
		free(a->zlen);
	}
	for (unsigned k = 0; k < made; k++)
		corpus_free(&own[k]);
	return rc;
}

/* --- main ------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr, "usage: bench-ingest [--events N] [--bin DIR] [--no-e2e | --store-only] "
			"[--sweep] [--inline]\n"
			"       bench-ingest --ratio-from-spool DIR\n");
	exit(2);
}

static void default_bin(char *out, size_t cap)
{
	ssize_t n = readlink("/proc/self/exe", out, cap - 1);
	char *slash;

	out[n > 0 ? n : 0] = '\0';
	slash = strrchr(out, '/');
	if (slash)
		*slash = '\0';
}

static int sweep(const char *tmp, const struct signing_key *key)
{
	static const size_t pads[] = { 0, 1000, 4000 };
	static const size_t batches[] = { 100, 1000, 5000 };

	for (size_t p = 0; p < 3; p++) {
		struct corpus c;
		size_t n = pads[p] >= 4000 ? 50000 : 100000;

		if (corpus_make(&c, n, pads[p]) < 0)
			return -1;
		for (size_t b = 0; b < 3; b++)
			if (sqlite_run(tmp, &c, batches[b], key) < 0)
				return -1;
		corpus_free(&c);
	}
	return 0;
}

int main(int argc, char **argv)
{
	size_t n = 200000;
	bool e2e = true, do_sweep = false, ratio = true;
	char bin[PATH_MAX], tmp[] = "/tmp/bench-ingest-XXXXXX", keypath[64];
	char err[512];
	struct signing_key *key = NULL;
	struct corpus c;
	const char *pg = getenv("DBWARD_BENCH_PG_URL");
	int rc = 1;

	signal(SIGPIPE, SIG_IGN);
	default_bin(bin, sizeof(bin));
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--ratio-from-spool") == 0 && i + 1 < argc)
			return ratio_from_spool(argv[++i]);
		else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
			n = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--bin") == 0 && i + 1 < argc)
			snprintf(bin, sizeof(bin), "%s", argv[++i]);
		else if (strcmp(argv[i], "--no-e2e") == 0)
			e2e = false;
		else if (strcmp(argv[i], "--store-only") == 0)
			e2e = ratio = false;
		else if (strcmp(argv[i], "--sweep") == 0)
			do_sweep = true;
		else if (strcmp(argv[i], "--inline") == 0)
			inline_bytes = true;
		else
			usage();
	}
	if (n == 0 || !mkdtemp(tmp)) {
		perror("bench-ingest");
		return 1;
	}
	snprintf(keypath, sizeof(keypath), "%s/ledger.key", tmp);
	if (signing_key_load(keypath, true, &key, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-ingest: %s\n", err);
		goto out;
	}
	if (corpus_make(&c, n, 0) < 0)
		goto out;
	if (ratio && ratio_report("synthetic", c.raw, c.len, c.n) < 0)
		goto out_corpus;
	fflush(stdout);
	if (sqlite_run(tmp, &c, 1000, key) < 0 || sqlite_run(tmp, &c, 5000, key) < 0)
		goto out_corpus;
	if (e2e && (e2e_run(tmp, bin, &c, 1000, 1) < 0 || e2e_run(tmp, bin, &c, 5000, 1) < 0 ||
		    e2e_run(tmp, bin, &c, 5000, E2E_FLEET) < 0))
		goto out_corpus;
	if (pg) {
		char agent[64];

		for (size_t b = 1000; b <= 5000; b += 4000) {
			snprintf(agent, sizeof(agent), "bench-%d-%" PRIu64, (int)getpid(),
				 clock_realtime_ns());
			if (store_run("postgres", pg, agent, &c, b, key) < 0)
				goto out_corpus;
		}
	}
	if (do_sweep && sweep(tmp, key) < 0)
		goto out_corpus;
	rc = 0;
out_corpus:
	corpus_free(&c);
out:
	signing_key_free(key);
	unlink(keypath);
	strcat(keypath, ".pub");
	unlink(keypath);
	rmdir(tmp);
	return rc;
}
