"""
N psycopg2 connections at once, run inside the test cgroup as
`python3 -c SOURCE SPEC_JSON`. Each connects, runs `select pg_backend_pid()`
and then waits on a barrier until all N are open, so the agent really holds
N sessions at the same time. Prints [{ok, backend_pid | error}, ...].
"""

import json
import sys
import threading

import psycopg2

spec = json.loads(sys.argv[1])
n = int(spec["n"])
barrier = threading.Barrier(n, timeout=float(spec.get("timeout", 120)))
results = [None] * n


def client(i):
    conn = None
    try:
        conn = psycopg2.connect(host=spec["host"], port=spec["port"], user="app",
                                dbname="orders", connect_timeout=30,
                                application_name=f"{spec['prefix']}-{i}")
        with conn.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            backend_pid = cur.fetchone()[0]
        barrier.wait()
        results[i] = {"ok": True, "backend_pid": backend_pid}
    except Exception as e:  # reported, not raised: one failure must not hide the rest
        barrier.abort()
        results[i] = {"ok": False, "error": repr(e)}
    finally:
        if conn is not None:
            conn.close()


threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(results))
