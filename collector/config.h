/*
 * The collector's configuration (docs/collector.md): parsed from YAML
 * against one table (collector/config.c), validated whole, handed around
 * as one struct. A bad file is refused with "FILE:LINE: reason".
 */
#ifndef DBWARD_COLLECTOR_CONFIG_H
#define DBWARD_COLLECTOR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "common/netaddr.h"

#define COLLECTOR_CONFIG_ERR_LEN 512
#define COLLECTOR_HTTP_HOSTS_MAX 64

/* Host names the HTTP API answers to, besides IP literals and localhost. */
struct collector_hosts {
	char **names;			/* lower case */
	size_t n;
};

struct collector_config {
	struct netaddr listen;		/* agent ingest, mTLS */
	struct netaddr http;		/* JSON API and web page, plain HTTP */
	struct collector_hosts http_hosts;
	char *storage;			/* sqlite:/abs/path or postgres[ql]://... */
	char *tls_cert;			/* the collector's certificate (PEM) */
	char *tls_key;
	char *tls_ca;			/* issues the agents' client certificates */
	char *signing_key;		/* Ed25519 PEM; created with .pub if missing */
	enum log_level log_level;
	uint32_t max_batch_bytes;	/* compressed frame, at most WIRE_MAX_FRAME */
	uint32_t max_batch_events;
};

/* Fills @cfg from the YAML file at @path. On error returns -1 and writes
 * "PATH:LINE: reason" into @err; @cfg is then left empty. */
int collector_config_load_file(const char *path, struct collector_config *cfg, char *err,
			       size_t errlen);
/* The same for YAML held in memory; @name stands for the file in errors. */
int collector_config_load_string(const char *name, const char *yaml, size_t len,
				 struct collector_config *cfg, char *err, size_t errlen);
void collector_config_free(struct collector_config *cfg);

#endif
