/* What every event loop of one agent shares. */
#ifndef DBWARD_AGENT_AGENT_H
#define DBWARD_AGENT_AGENT_H

#include <stdint.h>

#include <stddef.h>

#include "agent/config.h"


struct intercept;
struct audit;
struct worker;
struct tls_ctx;
struct shipper;

struct agent {
	struct agent_config *cfg;
	struct intercept *intercept;
	struct audit *audit;		/* NULL: neither spool nor audit.file */
	struct shipper *shipper;	/* NULL: no collector */
	struct tls_ctx *client_tls;	/* terminates clients' TLS; NULL: 'N' */
	struct tls_ctx **upstream_tls;	/* per target; NULL entry: plaintext */
	struct tls_ctx *collector_tls;	/* mTLS to the collector; NULL: none */
	/* The rules in force: read by the loops with an atomic load, swapped by
	 * a reload, the old one freed once every loop has turned. */
	struct policy *policy;
	struct worker *workers;
	unsigned n_workers;
	uint32_t n_connections;		/* atomic: open client connections */
};

/* Builds the TLS contexts the configuration asks for. Returns 0, or -1
 * with @err naming the file and the reason. */
int agent_tls_open(struct agent *agent, char *err, size_t errlen);
void agent_tls_close(struct agent *agent);

#endif
