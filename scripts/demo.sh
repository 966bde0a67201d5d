#!/usr/bin/env bash
# make demo: dbward end to end on this machine, then everything removed.
#   1. a throwaway PostgreSQL on a free port (loopback only)
#   2. a CA made by `dbward ca`, and dbward-collector on SQLite (mTLS ingest)
#   3. dbward-agent attached to a demo cgroup (never the root cgroup),
#      shipping its audit events to the collector through a disk spool
#   4. psql, as user nobody, inside that cgroup, connecting to the real
#      server address: intercepted, forwarded, attributed
#   5. a guardrail: DROP TABLE denied before it reaches the server
#      the same psql outside the cgroup: untouched
#   6. the audit trail from the collector (`dbward events`), the ledger
#      verified, and an offline receipt for the denied DROP
#   6b. 200 statements differing only in literals: classified by shape,
#      one parse (the agent's cache counters, on SIGUSR1); the DROP's
#      receipt checked against the grown ledger (`dbward check-receipt`)
#   7. kill -9 of the agent: fail closed; a new agent takes over, and the
#      trail stays whole (`dbward verify`)
set -euo pipefail

BIN=${1:?usage: demo.sh BUILD-BIN-DIR}
AGENT=$BIN/dbward-agent
COLLECTOR=$BIN/dbward-collector
DBWARD=$BIN/dbward
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PY=/usr/bin/python3

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: needs root (BPF programs, a cgroup, a bpffs mount): sudo make demo" >&2
	exit 1
fi
[ -x "$PGBIN/initdb" ] || { echo "demo: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
[ -n "$CG2" ] || { echo "demo: no cgroup v2 mount found" >&2; exit 1; }

WORK=$(mktemp -d /tmp/dbward-demo.XXXXXX)
chmod 755 "$WORK"
CGROUP="$CG2/dbward-demo-$$"
BPFFS="$WORK/bpffs"
AGENT_PID=
COLLECTOR_PID=
PG_STARTED=

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { runuser -u postgres -- "$@"; }

cleanup() {
	set +e
	[ -n "$AGENT_PID" ] && kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
	[ -n "$COLLECTOR_PID" ] && kill -TERM "$COLLECTOR_PID" 2>/dev/null && wait "$COLLECTOR_PID" 2>/dev/null
	[ -n "$PG_STARTED" ] && as_postgres "$PGBIN/pg_ctl" -D "$WORK/pgdata" -m immediate stop >/dev/null 2>&1
	if [ -d "$CGROUP" ]; then
		for pid in $(cat "$CGROUP/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
		rmdir "$CGROUP" 2>/dev/null
	fi
	mountpoint -q "$BPFFS" && umount "$BPFFS"
	rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a command inside the demo cgroup as user nobody.
in_cgroup() {
	sh -c 'echo $$ > "$0/cgroup.procs" && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"' \
		"$CGROUP" "$@"
}

start_agent() {
	"$AGENT" --config "$WORK/agent.yaml" 2>>"$WORK/agent.log" &
	AGENT_PID=$!
	for _ in $(seq 100); do
		grep -q ' ready' "$WORK/agent.log" && return 0
		kill -0 "$AGENT_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "demo: the agent did not start:" >&2
	cat "$WORK/agent.log" >&2
	exit 1
}

start_collector() {
	"$COLLECTOR" --config "$WORK/collector.yaml" 2>>"$WORK/collector.log" &
	COLLECTOR_PID=$!
	for _ in $(seq 100); do
		grep -q ' ready' "$WORK/collector.log" && return 0
		kill -0 "$COLLECTOR_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "demo: the collector did not start:" >&2
	cat "$WORK/collector.log" >&2
	exit 1
}

# Waits until the collector holds every event the agent has written.
wait_shipped() {
	local want have
	for _ in $(seq 100); do
		want=$(wc -l <"$WORK/audit.jsonl")
		have=$("$DBWARD" events --json --limit 100000 | wc -l)
		[ "$have" -ge "$want" ] && return 0
		sleep 0.1
	done
	echo "demo: events did not reach the collector" >&2
	exit 1
}

step "1. A throwaway PostgreSQL"
PGPORT=$(free_port)
AGENT_PORT=$(free_port)
install -d -o postgres -g postgres "$WORK/pgdata" "$WORK/sock" "$WORK/pglog"
as_postgres "$PGBIN/initdb" -D "$WORK/pgdata" -A trust -U postgres >/dev/null
as_postgres "$PGBIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pglog/postgresql.log" -w \
	-o "-p $PGPORT -c listen_addresses=127.0.0.1 -k $WORK/sock" start >/dev/null
PG_STARTED=1
psql -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL'
CREATE ROLE app LOGIN;
CREATE DATABASE orders OWNER app;
SQL
psql -q -h 127.0.0.1 -p "$PGPORT" -U app -d orders -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE orders (id serial PRIMARY KEY, customer text, total numeric);
INSERT INTO orders (customer, total) VALUES ('ada', 12.50), ('grace', 99.00), ('linus', 3.10);
SQL
echo "PostgreSQL 127.0.0.1:$PGPORT, database orders, role app"

step "2. A CA, and the collector on SQLite"
COLLECTOR_PORT=$(free_port)
HTTP_PORT=$(free_port)
export DBWARD_COLLECTOR=http://127.0.0.1:$HTTP_PORT
"$DBWARD" ca init "$WORK/pki"
"$DBWARD" ca issue "$WORK/pki" collector
"$DBWARD" ca issue "$WORK/pki" demo-host
cat >"$WORK/collector.yaml" <<EOF
listen: 127.0.0.1:$COLLECTOR_PORT
http: 127.0.0.1:$HTTP_PORT
storage: sqlite:$WORK/audit.db
tls: { cert: $WORK/pki/collector.crt, key: $WORK/pki/collector.key, ca: $WORK/pki/ca.crt }
signing_key: $WORK/ledger.key
EOF
cat "$WORK/collector.yaml"
start_collector
grep ' ready' "$WORK/collector.log"
echo "API and web page: $DBWARD_COLLECTOR/"

step "3. dbward-agent on the cgroup $CGROUP"
mkdir "$CGROUP"
mkdir "$BPFFS"
mount -t bpf bpf "$BPFFS"
cat >"$WORK/agent.yaml" <<EOF
listen: 127.0.0.1:$AGENT_PORT
fail: closed
heartbeat_timeout_ms: 1000
intercept:
  cgroup: $CGROUP
  pin_dir: $BPFFS/dbward
  targets:
    - port: $PGPORT
audit:
  file: $WORK/audit.jsonl
agent_id: demo-host
collector:
  address: 127.0.0.1:$COLLECTOR_PORT
  cert: $WORK/pki/demo-host.crt
  key: $WORK/pki/demo-host.key
  ca: $WORK/pki/ca.crt
spool: $WORK/spool
rules:
  - name: no-drop
    match: { statements: [drop, truncate] }
    action: deny
  - name: scoped-writes
    match: { statements: [delete, update], where: absent }
    action: deny
EOF
cat "$WORK/agent.yaml"
start_agent
grep ' ready' "$WORK/agent.log"

step "4. psql as nobody inside the cgroup, to the server's real address 127.0.0.1:$PGPORT"
in_cgroup psql "host=127.0.0.1 port=$PGPORT user=app dbname=orders application_name=demo-report" \
	-c 'SELECT customer, total FROM orders ORDER BY id' \
	-c "UPDATE orders SET total = total + 1 WHERE customer = 'ada'; SELECT count(*) FROM orders" \
	-c 'SELECT * FROM invoices' \
	-c 'SELECT inet_server_port() AS server_port_seen_by_postgres'

step "5. Guardrails: a DROP TABLE and a DELETE without WHERE never reach the server"
in_cgroup psql "host=127.0.0.1 port=$PGPORT user=app dbname=orders application_name=demo-oops" \
	-c 'DROP TABLE orders' -c 'DELETE FROM orders' 2>&1 | sed 's/^/  /' || true
echo "What the agent would say, without a database:"
"$AGENT" --config "$WORK/agent.yaml" --test-sql "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone" | sed 's/^/  /' || true
echo "The same psql outside the cgroup: not intercepted"
psql -h 127.0.0.1 -p "$PGPORT" -U app -d orders -Atc "SELECT 'direct: ' || count(*) || ' orders' FROM orders"

step "6. The audit trail, from the collector: dbward events"
wait_shipped
"$DBWARD" events
echo
echo "Only the denials: dbward events --verdict deny"
"$DBWARD" events --verdict deny
echo
"$DBWARD" verify --key "$WORK/ledger.key.pub"
DROP_ID=$("$DBWARD" events --verdict deny --search 'DROP TABLE' --json |
	"$PY" -c 'import json, sys; print(json.loads(sys.stdin.readline())["id"])')
"$DBWARD" receipt "$DROP_ID" -o "$WORK/receipt.json" --key "$WORK/ledger.key.pub"
echo "A receipt for the denied DROP (event $DROP_ID), checked offline with the ledger's public key:"
"$DBWARD" verify-receipt "$WORK/receipt.json" --key "$WORK/ledger.key.pub" | sed 's/^/  /'

step "6b. Classification by shape: new literals, one parse"
# pgbench's simple protocol and ORMs that inline values send a new text
# for every statement; texts that differ only in literals share one parse.
for i in $(seq 1 200); do echo "SELECT total FROM orders WHERE id = $i;"; done >"$WORK/lookups.sql"
in_cgroup psql -q -X -o /dev/null "host=127.0.0.1 port=$PGPORT user=app dbname=orders application_name=demo-shapes" \
	-f "$WORK/lookups.sql"
kill -USR1 "$AGENT_PID"
for _ in $(seq 50); do grep -q 'classification cache:' "$WORK/agent.log" && break; sleep 0.1; done
echo "200 statements, each a new text; the agent's counters (SIGUSR1):"
grep 'classification cache:' "$WORK/agent.log" | tail -n 1 | sed 's/^/  /'
RECEIPT_SIZE=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["tree_head"]["size"])' \
	"$WORK/receipt.json")
for _ in $(seq 100); do	# the 200 statements reach the ledger within a batch or two
	SIZE=$("$DBWARD" tree-head --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["size"])')
	[ "$SIZE" -gt "$RECEIPT_SIZE" ] && break
	sleep 0.1
done
echo "The ledger grew from $RECEIPT_SIZE to $SIZE events since the DROP's receipt; a consistency"
echo "proof shows the receipt's tree is still its start (dbward check-receipt):"
"$DBWARD" check-receipt "$WORK/receipt.json" --key "$WORK/ledger.key.pub" | sed 's/^/  /'

step "7. kill -9 the agent: intercepted connections now fail closed"
kill -KILL "$AGENT_PID"
wait "$AGENT_PID" 2>/dev/null || true
AGENT_PID=
sleep 1.2
if in_cgroup psql "host=127.0.0.1 port=$PGPORT user=app dbname=orders connect_timeout=5" -c 'SELECT 1' 2>"$WORK/err"; then
	echo "demo: the connection was NOT refused" >&2
	exit 1
fi
sed 's/^/  psql: /' "$WORK/err"
echo "A new agent takes over the pinned programs:"
start_agent
in_cgroup psql "host=127.0.0.1 port=$PGPORT user=app dbname=orders" -Atc "SELECT 'back: ' || count(*) || ' orders' FROM orders"
wait_shipped
echo "The spool kept the chain across the kill; the trail is whole:"
"$DBWARD" events --search "back: "
"$DBWARD" verify --key "$WORK/ledger.key.pub"

step "Done: everything is removed on exit"
