/*
 * Checkpoints of the SQLite write connection's WAL, off its commit path.
 *
 * SQLite's own auto-checkpoint copies the WAL into the database file
 * inside the COMMIT that crosses 1000 pages: that append waits for the
 * copy and its fsync. Here a thread with its own connection runs a
 * PASSIVE checkpoint (it never blocks the writer, nor waits for it) each
 * time CHECKPOINT_SOFT_PAGES new frames are in the WAL, while the writer
 * goes on appending.
 * A PASSIVE checkpoint cannot restart the WAL while frames keep coming,
 * so past CHECKPOINT_HARD_PAGES the writer checkpoints after its commit
 * itself, as SQLite would: by then only the frames since the thread's
 * last pass are left to copy, and the next transaction starts the WAL
 * over. Durability is unchanged: a commit is on disk (WAL, fsync) before
 * it returns; a checkpoint syncs the database file before the WAL is
 * reused.
 */
#ifndef DBWARD_COLLECTOR_STORE_CHECKPOINT_H
#define DBWARD_COLLECTOR_STORE_CHECKPOINT_H

#include <sqlite3.h>
#include <stddef.h>

#define CHECKPOINT_SOFT_PAGES 1000
#define CHECKPOINT_HARD_PAGES 8000

struct checkpointer;

/* Starts the thread for the database at @path, written through @writer
 * (whose WAL hook it takes). 0, or -1 with @err. */
int checkpointer_start(const char *path, sqlite3 *writer, struct checkpointer **out, char *err,
		       size_t errlen);
/* Stops and joins it (a pass in progress finishes); NULL is fine. Call
 * before closing the writer. */
void checkpointer_stop(struct checkpointer *k);

#endif
