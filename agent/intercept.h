/*
 * The kernel half of interception, seen from the agent: loads
 * bpf/intercept.bpf.c, writes its settings and targets, attaches it to the
 * configured cgroup with bpf_links pinned in pin_dir (so fail-closed
 * outlives a killed agent), takes over links a previous agent left pinned,
 * and hands out the origin record of each accepted connection.
 */
#ifndef DBWARD_AGENT_INTERCEPT_H
#define DBWARD_AGENT_INTERCEPT_H

#include <stdbool.h>
#include <stdint.h>

#include "bpf/intercept.h"
#include "agent/config.h"
#include "common/netaddr.h"

struct intercept;

/* Loads, configures and attaches. Returns 0 or -errno (logged). */
int intercept_start(const struct agent_config *cfg, struct intercept **out);

/* Tells the programs the agent is alive (CLOCK_MONOTONIC now). */
void intercept_heartbeat(struct intercept *ic);

/*
 * The record of the connection the agent accepted as @fd from @peer on
 * @local: found by the cookie of the workload's end (asked of sock_diag
 * on @diag_fd, see sockdiag_peer_cookie), or with listen_pods by the
 * 4-tuple sockops published (taken from that map). Returns 0, or -ENOENT
 * when there is none: the connection did not come through the programs,
 * or its workload end is gone already. The record stays under its
 * cookie, for getpeername, until intercept_forget_origin.
 */
int intercept_find_origin(struct intercept *ic, int diag_fd, int fd, const struct netaddr *peer,
			  const struct netaddr *local, struct intercept_origin *out);
/* Drops notes of collided 4-tuples nobody came for (listen_pods only). */
void intercept_sweep(struct intercept *ic);
/* Drops the record of a connection the agent is done with. */
void intercept_forget_origin(struct intercept *ic, uint64_t socket_cookie);

/* Sum over CPUs of one counter (enum intercept_counter). */
uint64_t intercept_counter(struct intercept *ic, enum intercept_counter which);

/*
 * Unpins and detaches every program (clean shutdown); the maps stay, so
 * open connections can still forget their records.
 */
void intercept_detach(struct intercept *ic);
/*
 * With @detach, as intercept_detach; without, leaves the pinned links in
 * place (the fail mode then applies). Then frees everything.
 */
void intercept_stop(struct intercept *ic, bool detach);

#endif
