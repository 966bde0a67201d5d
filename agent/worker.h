/*
 * One event loop (thread) of the agent: its own epoll set, its own
 * SO_REUSEPORT listening sockets (the kernel spreads connections across
 * loops), and the connections it accepted, which never change loops.
 */
#ifndef DBWARD_AGENT_WORKER_H
#define DBWARD_AGENT_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/agent.h"
#include "agent/audit.h"
#include "common/iobuf.h"

enum endpoint_kind {
	ENDPOINT_LISTEN,
	ENDPOINT_WAKE,
	ENDPOINT_CLIENT,
	ENDPOINT_SERVER,
};

/*
 * A file descriptor in the epoll set. Sockets are edge-triggered: the
 * can_read / can_write flags remember readiness until a short read or
 * write (or EAGAIN) says it is used up.
 */
struct endpoint {
	int fd;
	enum endpoint_kind kind;
	bool can_read;
	bool can_write;
	bool eof;
	/* The peer closed its side (EPOLLRDHUP): read on until end of stream,
	 * as no further edge will come. */
	bool peer_closed;
	/* With TLS a read may need the socket writable and a write readable. */
	bool read_wants_write;
	bool write_wants_read;
	struct tls_conn *tls;	/* NULL: plaintext */
	void *owner;		/* struct conn or struct worker */
};

#define WORKER_MAX_LISTENERS 3

struct conn;

struct worker {
	struct agent *agent;
	unsigned index;
	int epfd;
	struct endpoint wake;
	struct endpoint listeners[WORKER_MAX_LISTENERS];
	unsigned n_listeners;
	int diag_fd;			/* sock_diag: finds an accepted connection's origin */
	pthread_t thread;
	bool started;
	bool stopping;			/* atomic */
	uint64_t last_tick_ns;		/* atomic: loop liveness for the heartbeat */
	uint64_t turns;			/* atomic: loop iterations, for reclaiming */
	unsigned tick_ms;
	uint64_t last_sweep_ns;
	struct iobuf_pool bufs;
	struct conn *conns;		/* every live connection */
	struct conn *ready;		/* work left over after a pump budget */
	struct conn *doomed;		/* closed this round, freed after it */
	struct audit_batch audit;	/* events staged this round */
	struct conn *staged;		/* connections waiting for their commit */
};

/* Opens the loop's epoll set and listening sockets. */
int worker_init(struct worker *w, struct agent *agent, unsigned index);
int worker_start(struct worker *w);
/* Asks the loop to close its connections and end; then joins it. */
void worker_stop(struct worker *w);
void worker_destroy(struct worker *w);

/* Wakes the loop at once (it then counts a turn). */
void worker_wake(struct worker *w);

/* For conn.c: registration and the deferred lists. */
int worker_watch(struct worker *w, struct endpoint *ep);
void worker_unwatch(struct worker *w, struct endpoint *ep);

#endif
