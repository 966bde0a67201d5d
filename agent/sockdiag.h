/*
 * The kernel's socket cookie of a TCP socket, found by its 4-tuple with
 * sock_diag (NETLINK_SOCK_DIAG, one exact lookup, no dump).
 *
 * The agent accepts a redirected connection and asks for the cookie of
 * the workload's end of it: the key its origin record is kept under. Only
 * sockets in the caller's network namespace that reach it over loopback
 * are found (not bound to a device, or bound to lo).
 */
#ifndef DBWARD_AGENT_SOCKDIAG_H
#define DBWARD_AGENT_SOCKDIAG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/netaddr.h"

/* A NETLINK_SOCK_DIAG socket (blocking, close-on-exec), or -errno. */
int sockdiag_open(void);

/*
 * The cookie and TCP state (TCP_ESTABLISHED, ...) of the TCP socket whose
 * local end is @local and remote end @remote (a v4-mapped pair is looked
 * up as IPv4). @state may be NULL. Returns 0, -ENOENT when there is no
 * such socket, or another -errno.
 */
int sockdiag_tcp_cookie(int diag_fd, const struct netaddr *local, const struct netaddr *remote,
			uint64_t *cookie, uint8_t *state);

/*
 * The cookie of the other end of the connection @fd, accepted from
 * @peer on @local: the socket holding the 4-tuple turned round, past its
 * handshake (not a listener, not a new connect in SYN_SENT), checked
 * after to still be joined to @fd (sockdiag_still_connected). A workload
 * end that died in the accept queue and a new socket that took its port
 * since are told apart: -ENOENT. This rests on TCP itself: a socket can
 * only complete a handshake on a tuple nobody else holds. TCP_REPAIR
 * (CAP_NET_ADMIN, which can bypass interception anyway) can break that.
 */
int sockdiag_peer_cookie(int diag_fd, int fd, const struct netaddr *peer,
			 const struct netaddr *local, uint64_t *cookie);

/*
 * Whether the accepted socket @fd, not yet shut down or closed by us,
 * still holds its 4-tuple: no error or hang-up on it and its TCP state is
 * not CLOSE (it was not reset). Ask it last, after whatever was found by
 * the tuple.
 */
bool sockdiag_still_connected(int fd);

/*
 * Checks on a loopback connection of its own, whose client carries @mark
 * (0: none), that this kernel answers such lookups (CONFIG_INET_DIAG and
 * CONFIG_INET_TCP_DIAG, or the inet_diag and tcp_diag modules). Returns 0
 * or -errno.
 */
int sockdiag_selftest(int diag_fd, uint32_t mark);

#endif /* DBWARD_AGENT_SOCKDIAG_H */
