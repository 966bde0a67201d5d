/* Listening TCP sockets for the collector's two services (ingest, HTTP). */
#ifndef DBWARD_COLLECTOR_LISTENER_H
#define DBWARD_COLLECTOR_LISTENER_H

#include <stddef.h>

#include "common/netaddr.h"

/* A bound, listening, non-blocking, close-on-exec socket on @addr.
 * Returns 0, or a negative errno. */
int listener_open(const struct netaddr *addr, int *out);

/* The address @fd is bound to, "a.b.c.d:port" / "[v6]:port", or "?". */
void listener_address(int fd, char *buf, size_t len);

#endif
