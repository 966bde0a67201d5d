/*
 * The store's tables, once per SQL dialect, side by side so they stay the
 * same logical schema (docs/collector.md, "Storage"). Every statement is
 * idempotent: opening an existing database changes nothing.
 *
 * Integers are 64-bit; uint64 values (epoch, seq, ts) are stored bit for
 * bit. An event's id is its leaf index + 1, assigned under the ledger's
 * lock: dense, in arrival order, the same on every replica (a sequence
 * would leave holes at each rolled-back append). An event's leaf hash is in
 * its own row (leaf_hash); nodes holds the perfect subtrees of 16 leaves and
 * more (STORE_NODE_MIN_LEVEL: the levels below are hashed from leaf_hash
 * when a proof needs them); ledger is one row, the tree's size and right
 * edge.
 *
 * Schema 3: who sent an event (its session and identity, the same for
 * every event of a connection) is one row of origins, which events point
 * at; an event row keeps what changes per event. Each index on events
 * costs every append a B-tree insert, so events has three (the UNIQUE
 * key, ts, origin) and the identity filters search the much smaller
 * origins. An origin is found by its key, the SHA-256 of its values
 * (store_origin.c), so that one small UNIQUE index finds it whatever the
 * values' sizes; its columns hold an absent value as '' (text) or -1
 * (pid), never NULL, so that filters compare with plain equality, which
 * indexes serve in both dialects.
 *
 * Schema 4: an event's bytes are either in its row (raw_inline) or, when
 * it came in a batch whose new events make most of it, a slice of that
 * batch, stored once in payloads as the agent compressed it (payload,
 * payload_off, payload_len; raw_inline is then empty): about a seventh of
 * the bytes to write (store_payload.h). A payload's id is the id of the
 * first event stored from it.
 *
 * Schema 5: sessions, a summary per agent and session, and
 * sessions_counted, the ledger leaves it sums (store_sessions.h).
 *
 * Older databases are upgraded when opened (store.c): schema 2 (identity
 * columns in events) to 3, schema 3 (events.raw) to 4, schema 4 to 5;
 * schema 1 is refused.
 */
#ifndef DBWARD_COLLECTOR_STORE_SCHEMA_H
#define DBWARD_COLLECTOR_STORE_SCHEMA_H

/* Same text in both dialects: the indexes the filters use. agent_id is
 * served by the UNIQUE key; the identity filters find origins first. The
 * index on events.origin is made by store.c, after a schema-2 upgrade
 * has added the column. */
#define STORE_SCHEMA_INDEXES                                                            \
	"CREATE INDEX IF NOT EXISTS events_ts ON events (ts);\n"                        \
	"CREATE INDEX IF NOT EXISTS origins_session ON origins (session_id);\n"         \
	"CREATE INDEX IF NOT EXISTS origins_pid ON origins (pid);\n"

/* The events' own index on origin, once the column exists. */
#define STORE_SCHEMA_ORIGIN_INDEX "CREATE INDEX IF NOT EXISTS events_origin ON events (origin)"

/* An origin's columns, in store_column order (COL_SESSION_ID ...). */
#define STORE_ORIGIN_COLUMNS                                                            \
	"session_id, pid, comm, user_name, pod_uid, pod_name, pod_namespace, db_user, database"

/* Schema 5: a summary row per agent and session (store_sessions.h), in
 * both dialects (SQLite gives BIGINT integer affinity), and how many
 * leaves of the ledger it sums (sessions_counted.size). Made by store.c
 * with the upgrade that fills it, not with the tables above. */
#define STORE_SCHEMA_SESSIONS                                                           \
	"CREATE TABLE IF NOT EXISTS sessions (\n"                                       \
	"  agent_id TEXT NOT NULL, session_id TEXT NOT NULL, origin BIGINT NOT NULL,\n" \
	"  first_ts BIGINT NOT NULL, last_ts BIGINT NOT NULL,\n"                        \
	"  statements BIGINT NOT NULL, denied BIGINT NOT NULL,\n"                       \
	"  closed BIGINT NOT NULL, open_event_id BIGINT,\n"                             \
	"  PRIMARY KEY (agent_id, session_id))"
#define STORE_SCHEMA_SESSIONS_INDEXES                                                   \
	"CREATE INDEX IF NOT EXISTS sessions_last_ts ON sessions (last_ts)",            \
	"CREATE INDEX IF NOT EXISTS sessions_origin ON sessions (origin)"
/* Its own table, not a column of ledger: an ALTER of ledger would wait on
 * every replica waiting for the ledger's lock, which waits on us. */
#define STORE_SCHEMA_SESSIONS_COUNTED                                                   \
	"CREATE TABLE IF NOT EXISTS sessions_counted (\n"                               \
	"  id BIGINT PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL)",                \
	"INSERT INTO sessions_counted (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING"

/* The sessions rows as the events in @range make them (ids above $1 for a
 * catch-up, up to $1 for verify), in the table's column order: who a
 * session is, is its first origin. */
#define STORE_SESSIONS_OF_EVENTS(range)                                                 \
	"SELECT e.agent_id AS agent_id, o.session_id AS session_id, "                  \
	"CAST(min(e.origin) AS BIGINT) AS origin, "                                     \
	"CAST(min(e.ts) AS BIGINT) AS first_ts, CAST(max(e.ts) AS BIGINT) AS last_ts, " \
	"CAST(sum(CASE WHEN e.kind = 'statement' THEN 1 ELSE 0 END) AS BIGINT) "        \
	"AS statements, "                                                               \
	"CAST(sum(CASE WHEN e.verdict = 'deny' THEN 1 ELSE 0 END) AS BIGINT) AS denied, " \
	"CAST(max(CASE WHEN e.kind = 'connection_close' THEN 1 ELSE 0 END) AS BIGINT) " \
	"AS closed, "                                                                   \
	"CAST(min(CASE WHEN e.kind = 'connection_open' THEN e.id END) AS BIGINT) "      \
	"AS open_event_id "                                                             \
	"FROM events e JOIN origins o ON o.id = e.origin "                              \
	"WHERE o.session_id <> '' AND " range " "                                       \
	"GROUP BY e.agent_id, o.session_id"

/* Batches whose events point into them (schema 4), as the agent sent them. */
#define STORE_SCHEMA_PAYLOADS_SQLITE                                                    \
	"CREATE TABLE IF NOT EXISTS payloads (id INTEGER PRIMARY KEY, data BLOB NOT NULL)"
#define STORE_SCHEMA_PAYLOADS_PG                                                        \
	"CREATE TABLE IF NOT EXISTS payloads (id BIGINT PRIMARY KEY, data BYTEA NOT NULL)"

#define STORE_SCHEMA_SQLITE                                                             \
	"CREATE TABLE IF NOT EXISTS events (\n"                                         \
	"  id INTEGER PRIMARY KEY,\n"                                                   \
	"  agent_id TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,\n"     \
	"  ts INTEGER NOT NULL, leaf_index INTEGER NOT NULL,\n"                         \
	"  leaf_hash BLOB NOT NULL,\n"                                                  \
	"  kind TEXT, origin INTEGER, verdict TEXT, statement_kind TEXT, sql TEXT,\n"   \
	"  raw_inline BLOB NOT NULL,\n"                                                 \
	"  payload INTEGER, payload_off INTEGER, payload_len INTEGER,\n"                \
	"  UNIQUE (agent_id, epoch, seq));\n"                                           \
	STORE_SCHEMA_PAYLOADS_SQLITE ";\n"                                              \
	"CREATE TABLE IF NOT EXISTS origins (\n"                                        \
	"  id INTEGER PRIMARY KEY, key BLOB UNIQUE,\n"                                  \
	"  session_id TEXT NOT NULL, pid INTEGER NOT NULL, comm TEXT NOT NULL,\n"       \
	"  user_name TEXT NOT NULL, pod_uid TEXT NOT NULL, pod_name TEXT NOT NULL,\n"   \
	"  pod_namespace TEXT NOT NULL, db_user TEXT NOT NULL, database TEXT NOT NULL);\n" \
	STORE_SCHEMA_INDEXES                                                            \
	"CREATE TABLE IF NOT EXISTS nodes (\n"                                          \
	"  level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,\n"         \
	"  PRIMARY KEY (level, idx)) WITHOUT ROWID;\n"                                  \
	"CREATE TABLE IF NOT EXISTS ledger (\n"                                         \
	"  id INTEGER PRIMARY KEY CHECK (id = 1),\n"                                    \
	"  size INTEGER NOT NULL, frontier BLOB NOT NULL);\n"                           \
	"INSERT INTO ledger (id, size, frontier) VALUES (1, 0, x'')\n"                  \
	"  ON CONFLICT DO NOTHING;\n"                                                   \
	"CREATE TABLE IF NOT EXISTS tree_heads (\n"                                     \
	"  size INTEGER PRIMARY KEY, root BLOB NOT NULL, ts INTEGER NOT NULL,\n"        \
	"  key_id BLOB NOT NULL, signature BLOB NOT NULL);\n"                           \
	"CREATE TABLE IF NOT EXISTS agents (\n"                                         \
	"  agent_id TEXT NOT NULL, epoch INTEGER NOT NULL,\n"                           \
	"  acked_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL, last_hash BLOB,\n"     \
	"  events INTEGER NOT NULL, last_ts INTEGER NOT NULL,\n"                        \
	"  PRIMARY KEY (agent_id, epoch));\n"                                           \
	"CREATE TABLE IF NOT EXISTS alerts (\n"                                         \
	"  id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,\n"                \
	"  agent_id TEXT NOT NULL, epoch INTEGER NOT NULL,\n"                           \
	"  kind TEXT NOT NULL, detail TEXT NOT NULL);\n"

/* Run in one transaction under an advisory lock: replicas starting
 * together do not race each other's CREATE. */
#define STORE_SCHEMA_PG                                                                 \
	"BEGIN;\n"                                                                      \
	"SELECT pg_advisory_xact_lock(7235478102);\n"                                   \
	"CREATE TABLE IF NOT EXISTS events (\n"                                         \
	"  id BIGINT PRIMARY KEY,\n"                                                    \
	"  agent_id TEXT NOT NULL, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,\n"       \
	"  ts BIGINT NOT NULL, leaf_index BIGINT NOT NULL,\n"                           \
	"  leaf_hash BYTEA NOT NULL,\n"                                                 \
	"  kind TEXT, origin BIGINT, verdict TEXT, statement_kind TEXT, sql TEXT,\n"    \
	"  raw_inline BYTEA NOT NULL,\n"                                                \
	"  payload BIGINT, payload_off BIGINT, payload_len BIGINT,\n"                   \
	"  UNIQUE (agent_id, epoch, seq));\n"                                           \
	STORE_SCHEMA_PAYLOADS_PG ";\n"                                                  \
	"CREATE TABLE IF NOT EXISTS origins (\n"                                        \
	"  id BIGSERIAL PRIMARY KEY, key BYTEA UNIQUE,\n"                               \
	"  session_id TEXT NOT NULL, pid BIGINT NOT NULL, comm TEXT NOT NULL,\n"        \
	"  user_name TEXT NOT NULL, pod_uid TEXT NOT NULL, pod_name TEXT NOT NULL,\n"   \
	"  pod_namespace TEXT NOT NULL, db_user TEXT NOT NULL, database TEXT NOT NULL);\n" \
	STORE_SCHEMA_INDEXES                                                            \
	"CREATE TABLE IF NOT EXISTS nodes (\n"                                          \
	"  level BIGINT NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,\n"          \
	"  PRIMARY KEY (level, idx));\n"                                                \
	"CREATE TABLE IF NOT EXISTS ledger (\n"                                         \
	"  id BIGINT PRIMARY KEY CHECK (id = 1),\n"                                     \
	"  size BIGINT NOT NULL, frontier BYTEA NOT NULL);\n"                           \
	"INSERT INTO ledger (id, size, frontier) VALUES (1, 0, ''::bytea)\n"            \
	"  ON CONFLICT DO NOTHING;\n"                                                   \
	"CREATE TABLE IF NOT EXISTS tree_heads (\n"                                     \
	"  size BIGINT PRIMARY KEY, root BYTEA NOT NULL, ts BIGINT NOT NULL,\n"         \
	"  key_id BYTEA NOT NULL, signature BYTEA NOT NULL);\n"                         \
	"CREATE TABLE IF NOT EXISTS agents (\n"                                         \
	"  agent_id TEXT NOT NULL, epoch BIGINT NOT NULL,\n"                            \
	"  acked_seq BIGINT NOT NULL, max_seq BIGINT NOT NULL, last_hash BYTEA,\n"      \
	"  events BIGINT NOT NULL, last_ts BIGINT NOT NULL,\n"                          \
	"  PRIMARY KEY (agent_id, epoch));\n"                                           \
	"CREATE TABLE IF NOT EXISTS alerts (\n"                                         \
	"  id BIGSERIAL PRIMARY KEY, ts BIGINT NOT NULL,\n"                             \
	"  agent_id TEXT NOT NULL, epoch BIGINT NOT NULL,\n"                            \
	"  kind TEXT NOT NULL, detail TEXT NOT NULL);\n"                                \
	"COMMIT;\n"

#endif
