/*
 * The agent's configuration: parsed from YAML (libyaml), validated whole,
 * and handed around as one struct. A bad file is refused with
 * "FILE:LINE: reason" and leaves any running configuration untouched.
 */
#ifndef DBWARD_AGENT_CONFIG_H
#define DBWARD_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/policy.h"
#include "common/log.h"
#include "common/netaddr.h"

#define CONFIG_ERR_LEN 512
#define CONFIG_MAX_TARGETS 256

enum config_fail_mode {
	CONFIG_FAIL_CLOSED,
	CONFIG_FAIL_OPEN,
};

/* How the agent's own connection to a target is encrypted (libpq's sslmode). */
enum config_upstream_tls {
	CONFIG_UPSTREAM_TLS_DISABLE,
	CONFIG_UPSTREAM_TLS_PREFER,	/* TLS when the server offers it */
	CONFIG_UPSTREAM_TLS_REQUIRE,	/* TLS or no connection; any certificate */
	CONFIG_UPSTREAM_TLS_VERIFY_CA,	/* certificate chains to upstream_ca */
	CONFIG_UPSTREAM_TLS_VERIFY_FULL,	/* ... and names the server's address */
};

/* One intercepted destination: a port, optionally within a CIDR. */
struct config_target {
	uint16_t port;
	bool has_cidr;		/* false: any address, IPv4 and IPv6 */
	struct netcidr cidr;
	enum config_upstream_tls upstream_tls;
	char *upstream_ca;	/* CA file for verify-ca / verify-full */
};

struct agent_config {
	struct netaddr listen;		/* where intercepted connections land */
	bool has_listen6;
	struct netaddr listen6;		/* for native IPv6 destinations */
	bool has_listen_pods;
	struct netaddr listen_pods;	/* reachable from pods' own netns */

	enum config_fail_mode fail;
	uint32_t heartbeat_timeout_ms;	/* fail mode applies past this */

	char *cgroup;			/* cgroup v2 dir the programs attach to */
	char *pin_dir;			/* bpffs dir for links that outlive us */
	uint32_t upstream_mark;		/* SO_MARK on upstream sockets */
	struct config_target *targets;
	size_t n_targets;

	char *audit_file;		/* JSON lines; NULL: no local sink */

	char *agent_id;			/* events' agent_id; default: the host name */
	/* The collector (mTLS); address NULL: none. All four or none. */
	char *collector_address;	/* host:port, [v6]:port */
	char *collector_cert;
	char *collector_key;
	char *collector_ca;
	uint32_t collector_batch_max_events;
	uint32_t collector_batch_ms;
	char *spool;			/* spool directory; NULL: nothing durable */
	uint64_t spool_max_bytes;
	uint32_t spool_fsync_ms;

	char *tls_cert;			/* terminate clients' TLS; NULL: answer 'N' */
	char *tls_key;

	unsigned workers;		/* event loops; 0: one per CPU */
	uint32_t max_connections;
	uint32_t max_message_bytes;	/* largest protocol message, either way */
	uint32_t startup_timeout_ms;	/* accept → session; then closed */
	enum log_level log_level;

	/* The `rules:` list compiled, with the `policy:` section applied.
	 * Owned; never NULL after a successful load (no rules: an empty
	 * policy, which applies the defaults). */
	struct policy *policy;
	struct policy_settings policy_settings;	/* the `policy:` section as read */
};

/* Fills @cfg from the YAML file at @path. On error returns -1 and writes
 * "PATH:LINE: reason" into @err; @cfg is then left empty. */
int config_load_file(const char *path, struct agent_config *cfg, char *err, size_t errlen);

/* The same for YAML held in memory; @name stands for the file in errors. */
int config_load_string(const char *name, const char *yaml, size_t len,
		       struct agent_config *cfg, char *err, size_t errlen);

void config_free(struct agent_config *cfg);

#define CONFIG_HOST_LEN 256

/*
 * Splits "host:port" or "[IPv6]:port" (collector.address): @host gets the
 * name or the address without brackets. Returns 0 or -EINVAL.
 */
int config_parse_host_port(const char *text, char host[CONFIG_HOST_LEN], uint16_t *port);

#endif
