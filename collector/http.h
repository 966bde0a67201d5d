/*
 * The collector's HTTP side (libmicrohttpd, a thread per connection): the
 * JSON API under /api/v1/ (collector/api.c) and the web page at "/"
 * (collector/web.c). GET and HEAD only; plain HTTP, meant for localhost
 * or a TLS proxy in front.
 */
#ifndef DBWARD_COLLECTOR_HTTP_H
#define DBWARD_COLLECTOR_HTTP_H

#include <stddef.h>

#include "collector/api.h"
#include "common/netaddr.h"

#define HTTP_ERR_LEN 256

struct http;

#include <stdbool.h>

struct http_opts {
	struct netaddr listen;
	struct api api;			/* what the endpoints read; kept alive by the caller */
	char *const *hosts;		/* http_hosts; kept alive by the caller */
	size_t n_hosts;
};

/*
 * Whether a request's Host header may be answered: an IP literal (v4, or
 * [v6]), "localhost", or one of @hosts (lower case), each optionally with
 * ":port". Anything else may be DNS rebinding: a web page the operator
 * visits, served from a name that now resolves to us, reading the API.
 */
bool http_host_allowed(const char *host, char *const *hosts, size_t n_hosts);

/* Binds and serves. 0, or -1 with @err. */
int http_start(const struct http_opts *opts, struct http **out, char *err, size_t errlen);
/* Where it listens ("127.0.0.1:7080"), the port as bound. */
void http_address(const struct http *h, char *buf, size_t len);
/* Stops serving, waits for requests in progress, frees. NULL-safe. */
void http_stop(struct http *h);

#endif
