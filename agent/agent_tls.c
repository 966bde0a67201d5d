/* The agent's TLS contexts: one for clients, one per encrypted target, one
 * for the collector. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "common/tls.h"

static enum tls_verify verify_of(enum config_upstream_tls mode)
{
	switch (mode) {
	case CONFIG_UPSTREAM_TLS_VERIFY_FULL:
		return TLS_VERIFY_FULL;
	case CONFIG_UPSTREAM_TLS_VERIFY_CA:
		return TLS_VERIFY_CA;
	default:
		return TLS_VERIFY_NONE;	/* prefer, require: encrypt only, like libpq */
	}
}

/* The collector knows an agent by its certificate's name and refuses
 * events that claim another: say so now rather than at every batch. */
static int check_collector_name(const struct agent_config *cfg, char *err, size_t errlen)
{
	char cn[256];
	int rc = tls_cert_file_cn(cfg->collector_cert, cn, sizeof(cn));

	if (rc < 0) {
		snprintf(err, errlen, "collector.cert %s: no usable subject common name (%s): "
			 "the collector names agents by it", cfg->collector_cert, strerror(-rc));
		return -1;
	}
	if (strcmp(cn, cfg->agent_id) != 0) {
		snprintf(err, errlen, "agent_id '%s' is not the name in collector.cert ('%s'): the "
			 "collector would refuse every batch; set agent_id: %s, or issue a "
			 "certificate for %s", cfg->agent_id, cn, cn, cfg->agent_id);
		return -1;
	}
	return 0;
}

int agent_tls_open(struct agent *agent, char *err, size_t errlen)
{
	const struct agent_config *cfg = agent->cfg;

	if (cfg->tls_cert) {
		struct tls_server_opts opts = { .cert_file = cfg->tls_cert, .key_file = cfg->tls_key };

		if (tls_ctx_new_server(&opts, &agent->client_tls, err, errlen) < 0)
			return -1;
	}
	agent->upstream_tls = calloc(cfg->n_targets ? cfg->n_targets : 1, sizeof(*agent->upstream_tls));
	if (!agent->upstream_tls) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < cfg->n_targets; i++) {
		const struct config_target *t = &cfg->targets[i];
		struct tls_client_opts opts = { .verify = verify_of(t->upstream_tls), .ca_file = t->upstream_ca };

		if (t->upstream_tls == CONFIG_UPSTREAM_TLS_DISABLE)
			continue;
		if (tls_ctx_new_client(&opts, &agent->upstream_tls[i], err, errlen) < 0)
			return -1;
	}
	if (cfg->collector_address) {
		struct tls_client_opts opts = {
			.verify = TLS_VERIFY_FULL, .ca_file = cfg->collector_ca,
			.cert_file = cfg->collector_cert, .key_file = cfg->collector_key,
		};

		if (tls_ctx_new_client(&opts, &agent->collector_tls, err, errlen) < 0 ||
		    check_collector_name(cfg, err, errlen) < 0)
			return -1;
	}
	return 0;
}

void agent_tls_close(struct agent *agent)
{
	if (agent->upstream_tls) {
		for (size_t i = 0; i < agent->cfg->n_targets; i++)
			tls_ctx_free(agent->upstream_tls[i]);
		free(agent->upstream_tls);
		agent->upstream_tls = NULL;
	}
	tls_ctx_free(agent->client_tls);
	agent->client_tls = NULL;
	tls_ctx_free(agent->collector_tls);
	agent->collector_tls = NULL;
}
