"""
One psycopg2 connection held open, run inside the test cgroup as
`python3 -c SOURCE SPEC_JSON`. Prints "ready" once connected and a query
ran; then for every integer N read on stdin prints N+1 computed by the
server, on the same connection. Lets a test check that a connection made
before some fault still works after it.
"""

import json
import sys

import psycopg2

spec = json.loads(sys.argv[1])
conn = psycopg2.connect(host=spec["host"], port=spec["port"], user="app",
                        dbname="orders", connect_timeout=10,
                        application_name=spec.get("application_name", "held"))
conn.autocommit = True
cur = conn.cursor()
cur.execute("select 1")
print("ready", flush=True)
for line in sys.stdin:
    cur.execute("select %s::int + 1", (int(line),))
    print(cur.fetchone()[0], flush=True)
conn.close()
