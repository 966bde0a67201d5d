/*
 * `dbward ca`: a small certificate authority for the agents and the
 * collector (OpenSSL 3, EC P-256, SHA-256).
 *
 *   DIR/ca.crt, DIR/ca.key      CN "dbward CA", CA:TRUE, 10 years
 *   DIR/NAME.crt, DIR/NAME.key  CN NAME, serverAuth + clientAuth, 2 years,
 *                               SAN IP:127.0.0.1, IP:::1, DNS:localhost
 *                               and the --ip/--dns given
 *
 * Keys are written 0600, certificates 0644, never over an existing file.
 */
#ifndef DBWARD_CLI_CA_H
#define DBWARD_CLI_CA_H

#include <stddef.h>

#define CLI_CA_NAME_MAX 64		/* a CN's upper bound */
#define CLI_CA_DAYS 3650
#define CLI_CA_LEAF_DAYS 730
#define CLI_CA_BACKDATE_S 60		/* notBefore: clocks differ a little */

struct cli_ca_sans {
	const char *const *ips;
	size_t n_ips;
	const char *const *dns;
	size_t n_dns;
};

/* Creates DIR (0700) if missing, and ca.crt + ca.key in it. 0 or -1 with @err. */
int cli_ca_init(const char *dir, char *err, size_t errlen);

/* Issues NAME.crt + NAME.key signed by DIR's CA. 0 or -1 with @err. */
int cli_ca_issue(const char *dir, const char *name, const struct cli_ca_sans *sans, char *err,
		 size_t errlen);

/* NAME as a file stem and CN: 1-64 of [A-Za-z0-9._-], not starting with
 * '.' or '-', not "ca". 0 or -1 with @err. */
int cli_ca_check_name(const char *name, char *err, size_t errlen);

#endif
