#include "collector/store_checkpoint.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>


struct checkpointer {
	sqlite3 *db;			/* the thread's own connection */
	sqlite3 *writer;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool pending;			/* a pass is wanted */
	bool stop;
	int backfilled;			/* WAL frames copied by the last pass */
};

static void *checkpointer_main(void *arg)
{
	struct checkpointer *k = arg;

	pthread_setname_np(pthread_self(), "dbward-ckpt");
	pthread_mutex_lock(&k->lock);
	for (;;) {
		while (!k->pending && !k->stop)
			pthread_cond_wait(&k->wake, &k->lock);
		if (k->stop)
			break;
		int frames = 0, copied = 0;

		k->pending = false;
		pthread_mutex_unlock(&k->lock);
		/* BUSY (another checkpoint runs) is fine: a later commit asks again. */
		sqlite3_wal_checkpoint_v2(k->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied);
		pthread_mutex_lock(&k->lock);
		k->backfilled = copied > 0 ? copied : 0;
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

/* After each commit of the writer, with the WAL's size in pages. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct checkpointer *k = arg;

	if (pages >= CHECKPOINT_HARD_PAGES) {
		sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		return SQLITE_OK;
	}
	pthread_mutex_lock(&k->lock);
	if (pages < k->backfilled)
		k->backfilled = 0;	/* the WAL started over */
	/* A pass per CHECKPOINT_SOFT_PAGES new frames, not per commit. */
	if (pages - k->backfilled >= CHECKPOINT_SOFT_PAGES) {
		k->pending = true;
		pthread_cond_signal(&k->wake);
	}
	pthread_mutex_unlock(&k->lock);
	return SQLITE_OK;
}

static int open_connection(struct checkpointer *k, const char *path, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_open_v2(path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "%s: checkpoint connection: %s", path,
			 k->db ? sqlite3_errmsg(k->db) : "cannot open");
		return -1;
	}
	/* A checkpoint syncs the database file before the WAL can be reused. */
	if (sqlite3_exec(k->db, "PRAGMA synchronous = FULL;", NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: checkpoint connection: %s", path,
			 msg ? msg : sqlite3_errmsg(k->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

int checkpointer_start(const char *path, sqlite3 *writer, struct checkpointer **out, char *err,
		       size_t errlen)
{
	struct checkpointer *k = calloc(1, sizeof(*k));

	*out = NULL;
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->wake, NULL);
	k->writer = writer;
	if (open_connection(k, path, err, errlen) < 0)
		goto fail;
	if (pthread_create(&k->thread, NULL, checkpointer_main, k) != 0) {
		snprintf(err, errlen, "%s: cannot start the checkpoint thread", path);
		goto fail;
	}
	k->started = true;
	sqlite3_wal_hook(writer, wal_hook, k);
	*out = k;
	return 0;
fail:
	checkpointer_stop(k);
	return -1;
}

void checkpointer_stop(struct checkpointer *k)
{
	if (!k)
		return;
	if (k->started) {
		/* Back to SQLite's own: the writer's last commits still checkpoint. */
		sqlite3_wal_autocheckpoint(k->writer, CHECKPOINT_SOFT_PAGES);
		pthread_mutex_lock(&k->lock);
		k->stop = true;
		pthread_cond_signal(&k->wake);
		pthread_mutex_unlock(&k->lock);
		pthread_join(k->thread, NULL);
	}
	sqlite3_close(k->db);
	pthread_cond_destroy(&k->wake);
	pthread_mutex_destroy(&k->lock);
	free(k);
}
