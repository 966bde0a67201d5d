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
 * Takes (looks up and deletes) the record of the connection the agent
 * accepted from @peer on @local. Returns 0, or -ENOENT when there is none:
 * the connection did not come through the programs.
 */
int intercept_take_origin(struct intercept *ic, const struct netaddr *peer,
			  const struct netaddr *local, struct intercept_origin *out);

/* Sum over CPUs of one counter (enum intercept_counter). */
uint64_t intercept_counter(struct intercept *ic, enum intercept_counter which);

/*
 * With @detach, unpins and detaches every program (clean shutdown);
 * without, leaves the pinned links in place (the fail mode then applies).
 */
void intercept_stop(struct intercept *ic, bool detach);

#endif
