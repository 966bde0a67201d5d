/* What every event loop of one agent shares. */
#ifndef DBWARD_AGENT_AGENT_H
#define DBWARD_AGENT_AGENT_H

#include <stdint.h>

#include "agent/config.h"

struct intercept;
struct audit;
struct worker;

struct agent {
	struct agent_config *cfg;
	struct intercept *intercept;
	struct audit *audit;		/* NULL: no local audit sink */
	struct worker *workers;
	unsigned n_workers;
	uint32_t n_connections;		/* atomic: open client connections */
};

#endif
