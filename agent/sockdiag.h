/*
 * The kernel's socket cookie of a TCP socket, found by its 4-tuple with
 * sock_diag (NETLINK_SOCK_DIAG, one exact lookup, no dump).
 *
 * The agent accepts a redirected connection and asks for the cookie of
 * the workload's end of it: the key its origin record is kept under. Only
 * sockets in the caller's network namespace can be found.
 */
#ifndef DBWARD_AGENT_SOCKDIAG_H
#define DBWARD_AGENT_SOCKDIAG_H

#include <stdint.h>

#include "common/netaddr.h"

/* A NETLINK_SOCK_DIAG socket (blocking, close-on-exec), or -errno. */
int sockdiag_open(void);

/*
 * The cookie of the TCP socket whose local end is @local and remote end
 * @remote (a v4-mapped pair is looked up as IPv4). Returns 0, -ENOENT
 * when there is no such socket (it is closed and gone), or another
 * -errno.
 */
int sockdiag_tcp_cookie(int fd, const struct netaddr *local, const struct netaddr *remote,
			uint64_t *cookie);

#endif /* DBWARD_AGENT_SOCKDIAG_H */
