/*
 * bench-rowcost [--events N] [--dir DIR]: what one event row costs SQLite,
 * table layout by table layout, with nothing else around it. Each layout
 * gets 200k events of the same sizes (the literals differ) in
 * transactions of ~5000 (multi-row INSERTs of
 * 16 rows, as collector/store_append.c sends them), WAL, synchronous=FULL,
 * 16 KiB pages, PASSIVE checkpoints on a thread of their own (every 20 ms
 * here; the collector's run every 1000 WAL pages).
 * No hashing, decoding, ledger nodes or tree heads: the floor of a store
 * that keeps one row per event (docs/performance.md, "Collector ingest").
 *
 * Layouts:
 *   schema2      the events table before schema 3: nine identity columns,
 *                indexes on ts, session_id, pid and the unique key
 *   schema3      identity in origins (one row per connection, not
 *                written here: ~1 per 600 events), indexes on ts, origin
 *                and the unique key
 *   batch-raw    schema3 with each event's bytes left in its batch's
 *                compressed payload (one blob per batch, ~1/7 of the
 *                bytes) and an offset in the row: schema 4, the store
 *                now (which keeps the slice's length too)
 *   minimal      batch-raw without leaf_hash and without the unique key:
 *                what is left is the row, ts and origin
 */
#include <pthread.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCH 4992		/* about 5000, a whole number of INSERTs */
#define ROWS_PER_INSERT 16
#define RAW_LEN 638
#define SESSIONS 32

enum layout { SCHEMA2, SCHEMA3, BATCH_RAW, MINIMAL, NLAYOUTS };

static const char *const names[NLAYOUTS] = { "schema2", "schema3", "batch-raw", "minimal" };

static const char *const schemas[NLAYOUTS] = {
	[SCHEMA2] = "CREATE TABLE events (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, "
		    "epoch INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, "
		    "leaf_index INTEGER NOT NULL, leaf_hash BLOB NOT NULL, kind TEXT, "
		    "session_id TEXT, pid INTEGER, comm TEXT, user_name TEXT, pod_uid TEXT, "
		    "pod_name TEXT, pod_namespace TEXT, db_user TEXT, database TEXT, verdict TEXT, "
		    "statement_kind TEXT, sql TEXT, raw BLOB NOT NULL, "
		    "UNIQUE (agent_id, epoch, seq));"
		    "CREATE INDEX events_ts ON events (ts);"
		    "CREATE INDEX events_session ON events (session_id);"
		    "CREATE INDEX events_pid ON events (pid);",
	[SCHEMA3] = "CREATE TABLE events (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, "
		    "epoch INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, "
		    "leaf_index INTEGER NOT NULL, leaf_hash BLOB NOT NULL, kind TEXT, "
		    "origin INTEGER, verdict TEXT, statement_kind TEXT, sql TEXT, raw BLOB NOT NULL, "
		    "UNIQUE (agent_id, epoch, seq));"
		    "CREATE INDEX events_ts ON events (ts);"
		    "CREATE INDEX events_origin ON events (origin);",
	[BATCH_RAW] = "CREATE TABLE events (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, "
		      "epoch INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, "
		      "leaf_index INTEGER NOT NULL, leaf_hash BLOB NOT NULL, kind TEXT, "
		      "origin INTEGER, verdict TEXT, statement_kind TEXT, sql TEXT, batch INTEGER, "
		      "raw_at INTEGER, UNIQUE (agent_id, epoch, seq));"
		      "CREATE INDEX events_ts ON events (ts);"
		      "CREATE INDEX events_origin ON events (origin);"
		      "CREATE TABLE batches (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
	[MINIMAL] = "CREATE TABLE events (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL, "
		    "epoch INTEGER NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, kind TEXT, "
		    "origin INTEGER, verdict TEXT, statement_kind TEXT, sql TEXT, batch INTEGER, "
		    "raw_at INTEGER);"
		    "CREATE INDEX events_ts ON events (ts);"
		    "CREATE INDEX events_origin ON events (origin);"
		    "CREATE TABLE batches (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
};

/* The columns each layout's INSERT names, and how many. */
static const char *const columns[NLAYOUTS] = {
	[SCHEMA2] = "id, agent_id, epoch, seq, ts, leaf_index, leaf_hash, kind, session_id, pid, "
		    "comm, user_name, pod_uid, pod_name, pod_namespace, db_user, database, "
		    "verdict, statement_kind, sql, raw",
	[SCHEMA3] = "id, agent_id, epoch, seq, ts, leaf_index, leaf_hash, kind, origin, verdict, "
		    "statement_kind, sql, raw",
	[BATCH_RAW] = "id, agent_id, epoch, seq, ts, leaf_index, leaf_hash, kind, origin, verdict, "
		      "statement_kind, sql, batch, raw_at",
	[MINIMAL] = "id, agent_id, epoch, seq, ts, kind, origin, verdict, statement_kind, sql, "
		    "batch, raw_at",
};
static const int ncolumns[NLAYOUTS] = { 21, 13, 14, 12 };

struct checkpointer {
	sqlite3 *db;
	volatile bool stop;
	pthread_t thread;
};

static double now_s(clockid_t clock)
{
	struct timespec t;

	clock_gettime(clock, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void must(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "bench-rowcost: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
		exit(1);
	}
}

static void *checkpointer_main(void *arg)
{
	struct checkpointer *k = arg;

	while (!k->stop) {
		usleep(20000);
		sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	}
	return NULL;
}

static sqlite3_stmt *prepare_insert(sqlite3 *db, enum layout l)
{
	size_t cap = 64 * 1024, len;
	char *sql = malloc(cap);
	sqlite3_stmt *st = NULL;
	int param = 1;

	len = (size_t)snprintf(sql, cap, "INSERT OR ROLLBACK INTO events (%s) VALUES ", columns[l]);
	for (int r = 0; r < ROWS_PER_INSERT; r++)
		for (int c = 0; c < ncolumns[l]; c++)
			len += (size_t)snprintf(sql + len, cap - len, "%s?%d",
						c ? ", " : r ? "), (" : "(", param++);
	snprintf(sql + len, cap - len, ")");
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		fprintf(stderr, "bench-rowcost: %s\n", sqlite3_errmsg(db));
		exit(1);
	}
	free(sql);
	return st;
}

struct event {
	long id;
	char session[48];
	char sql[128];
	unsigned char leaf[32];
};

/* Binds one event's row at parameter @p (1-based), layout by layout. */
static int bind_event(sqlite3_stmt *st, enum layout l, int p, const struct event *e,
		      const unsigned char *raw, long batch)
{
	int s = (int)(e->id % SESSIONS);

	sqlite3_bind_int64(st, p++, e->id);
	sqlite3_bind_text(st, p++, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, p++, 7);
	sqlite3_bind_int64(st, p++, e->id);
	sqlite3_bind_int64(st, p++, 1700000000000000000L + e->id * 2000);
	if (l != MINIMAL) {
		sqlite3_bind_int64(st, p++, e->id - 1);
		sqlite3_bind_blob(st, p++, e->leaf, 32, SQLITE_STATIC);
	}
	sqlite3_bind_text(st, p++, "statement", -1, SQLITE_STATIC);
	if (l == SCHEMA2) {
		static const char *const id_text[] = {
			"pgbench", "postgres", "5c1d3f2e-aaaa-bbbb-cccc-0123456789ab",
			"pgbench-7d9f8c-xk2lp", "default", "postgres", "postgres",
		};

		sqlite3_bind_text(st, p++, e->session, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, p++, 1000 + s);
		for (size_t i = 0; i < sizeof(id_text) / sizeof(id_text[0]); i++)
			sqlite3_bind_text(st, p++, id_text[i], -1, SQLITE_STATIC);
	} else {
		sqlite3_bind_int64(st, p++, e->id / (BATCH * 4) * SESSIONS + s + 1);
	}
	sqlite3_bind_text(st, p++, "allow", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p++, "UPDATE", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, p++, e->sql, -1, SQLITE_STATIC);
	if (l == SCHEMA2 || l == SCHEMA3) {
		sqlite3_bind_blob(st, p++, raw + e->id % 4096, RAW_LEN, SQLITE_STATIC);
	} else {
		sqlite3_bind_int64(st, p++, batch);
		sqlite3_bind_int64(st, p++, (e->id % BATCH) * (RAW_LEN + 3));
	}
	return p;
}

static void make_event(struct event *e, long id)
{
	e->id = id;
	snprintf(e->session, sizeof(e->session), "a1b2c3d4-0000-4000-8000-%012ld",
		 id % SESSIONS + id / (BATCH * 4) * SESSIONS);
	snprintf(e->sql, sizeof(e->sql),
		 "UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %ld;",
		 rand() % 10000, id * 7919 % 1000000);
	for (int k = 0; k < 32; k++)
		e->leaf[k] = (unsigned char)rand();
}

static void run(enum layout l, long n, const char *dir)
{
	static unsigned char raw[RAW_LEN + 4096], body[BATCH * RAW_LEN / 7];
	struct checkpointer k = { 0 };
	struct event ev[ROWS_PER_INSERT];
	sqlite3_stmt *ins, *bins = NULL;
	char path[512];
	double t0, c0, p0, t1, c1, p1;
	struct stat st;
	sqlite3 *db;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (unsigned char)rand();
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (unsigned char)rand();
	snprintf(path, sizeof(path), "%s/rowcost-%s.db", dir, names[l]);
	unlink(path);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		exit(1);
	must(db, "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
		 "PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = 0;");
	must(db, schemas[l]);
	/* A connection that has not read the file does not know it is in WAL
	 * mode, and its checkpoints do nothing: the PRAGMA reads it. */
	if (sqlite3_open(path, &k.db) != SQLITE_OK)
		exit(1);
	must(k.db, "PRAGMA synchronous = FULL;");
	pthread_create(&k.thread, NULL, checkpointer_main, &k);
	ins = prepare_insert(db, l);
	if (l == BATCH_RAW || l == MINIMAL)
		sqlite3_prepare_v2(db, "INSERT INTO batches (id, body) VALUES (?1, ?2)", -1, &bins,
				   NULL);
	t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
	p0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	for (long b = 0; b < n / BATCH; b++) {
		must(db, "BEGIN IMMEDIATE");
		if (bins) {
			sqlite3_bind_int64(bins, 1, b + 1);
			sqlite3_bind_blob(bins, 2, body, sizeof(body), SQLITE_STATIC);
			if (sqlite3_step(bins) != SQLITE_DONE)
				exit(1);
			sqlite3_reset(bins);
		}
		for (long i = 0; i < BATCH; i += ROWS_PER_INSERT) {
			int p = 1;

			for (int r = 0; r < ROWS_PER_INSERT; r++) {
				make_event(&ev[r], b * BATCH + i + r + 1);
				p = bind_event(ins, l, p, &ev[r], raw, b + 1);
			}
			if (sqlite3_step(ins) != SQLITE_DONE) {
				fprintf(stderr, "bench-rowcost: %s\n", sqlite3_errmsg(db));
				exit(1);
			}
			sqlite3_reset(ins);
		}
		must(db, "COMMIT");
	}
	t1 = now_s(CLOCK_MONOTONIC), c1 = now_s(CLOCK_THREAD_CPUTIME_ID);
	p1 = now_s(CLOCK_PROCESS_CPUTIME_ID);
	k.stop = true;
	pthread_join(k.thread, NULL);
	sqlite3_finalize(ins);
	sqlite3_finalize(bins);
	sqlite3_close(k.db);
	sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_close(db);
	if (stat(path, &st) < 0)
		st.st_size = 0;
	n = n / BATCH * BATCH;	/* what was inserted: whole batches */
	printf("rowcost %-10s events=%ld: %7.0f events/s (%.2f us CPU/event, %.2f on the "
	       "appending thread; %.0f bytes on disk per event)\n",
	       names[l], n, (double)n / (t1 - t0), (p1 - p0) / (double)n * 1e6,
	       (c1 - c0) / (double)n * 1e6, (double)st.st_size / (double)n);
	unlink(path);
	snprintf(path, sizeof(path), "%s/rowcost-%s.db-wal", dir, names[l]);
	unlink(path);
	snprintf(path, sizeof(path), "%s/rowcost-%s.db-shm", dir, names[l]);
	unlink(path);
}

int main(int argc, char **argv)
{
	long n = 200000;
	const char *dir = "/tmp";

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
			n = atol(argv[++i]);
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			dir = argv[++i];
		} else {
			fprintf(stderr, "usage: bench-rowcost [--events N] [--dir DIR]\n");
			return 2;
		}
	}
	if (n < BATCH)
		n = BATCH;
	srand(1);
	for (enum layout l = 0; l < NLAYOUTS; l++) {
		sync();
		run(l, n, dir);
	}
	return 0;
}
