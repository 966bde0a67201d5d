#include "sockdiag.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

int sockdiag_open(void)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	return fd < 0 ? -errno : fd;
}

/* Every network namespace's lo. Passing it matches sockets bound to no
 * device and sockets bound to lo, as a packet arriving on lo would. */
#define LOOPBACK_IFINDEX 1

static void request_fill(struct inet_diag_req_v2 *r, const struct netaddr *local,
			 const struct netaddr *remote)
{
	bool v4 = netaddr_is_v4(local) && netaddr_is_v4(remote);

	r->sdiag_family = v4 ? AF_INET : AF_INET6;
	r->sdiag_protocol = IPPROTO_TCP;
	r->idiag_states = ~0u;
	r->id.idiag_sport = htons(local->port);
	r->id.idiag_dport = htons(remote->port);
	if (v4) {
		memcpy(r->id.idiag_src, local->ip + 12, 4);
		memcpy(r->id.idiag_dst, remote->ip + 12, 4);
	} else {
		memcpy(r->id.idiag_src, local->ip, 16);
		memcpy(r->id.idiag_dst, remote->ip, 16);
	}
	r->id.idiag_if = LOOPBACK_IFINDEX;
	r->id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	r->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

struct found {
	uint64_t cookie;
	uint8_t state;
};

/* What one message of the answer says: 1 (not ours: read on), 0 or -errno. */
static int answer_take(const struct nlmsghdr *h, uint32_t seq, struct found *out)
{
	if (h->nlmsg_seq != seq)
		return 1;	/* left over from an earlier question */
	if (h->nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(h);

		if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
			return -EPROTO;
		return e->error < 0 ? e->error : -ENOENT;
	}
	if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
		const struct inet_diag_msg *m = NLMSG_DATA(h);

		if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*m)))
			return -EPROTO;
		out->cookie = (uint64_t)m->id.idiag_cookie[1] << 32 | m->id.idiag_cookie[0];
		out->state = m->idiag_state;
		return 0;
	}
	return 1;
}

static int lookup(int diag_fd, const struct netaddr *local, const struct netaddr *remote,
		  struct found *out)
{
	static uint32_t next_seq;
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} q;
	union {
		struct nlmsghdr nlh;
		char bytes[8192];
	} a;
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	uint32_t seq = __atomic_add_fetch(&next_seq, 1, __ATOMIC_RELAXED);

	memset(&q, 0, sizeof(q));
	q.nlh.nlmsg_len = sizeof(q);
	q.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	q.nlh.nlmsg_flags = NLM_F_REQUEST;
	q.nlh.nlmsg_seq = seq;
	request_fill(&q.req, local, remote);
	if (sendto(diag_fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	/* The kernel answers an exact lookup inside sendto(): the answer is
	 * queued already, so an empty queue means there is none to wait for. */
	for (;;) {
		ssize_t n = recv(diag_fd, &a, sizeof(a), MSG_DONTWAIT);
		int len = (int)n, rc = 1;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -ENOENT : -errno;
		for (const struct nlmsghdr *h = &a.nlh; rc == 1 && NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len))
			rc = answer_take(h, seq, out);
		if (rc != 1)
			return rc;
	}
}

int sockdiag_tcp_cookie(int diag_fd, const struct netaddr *local, const struct netaddr *remote,
			uint64_t *cookie, uint8_t *state)
{
	struct found f;
	int err = lookup(diag_fd, local, remote, &f);

	if (err)
		return err;
	*cookie = f.cookie;
	if (state)
		*state = f.state;
	return 0;
}

/* Past the handshake: a socket in SYN_SENT holding the tuple is a new
 * connection waiting for its turn, not the one the agent accepted. */
static bool synchronized(uint8_t state)
{
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_TIME_WAIT:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		return true;
	default:
		return false;
	}
}

bool sockdiag_still_connected(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	struct tcp_info info;
	socklen_t len = sizeof(info);

	/* An accepted socket we have not shut down holds its tuple until its
	 * state is CLOSE (a reset, or a timeout). A reset sets the socket's
	 * error before it lets go of the tuple, and the state after: ask both
	 * (a peer's FIN alone is POLLRDHUP, not POLLHUP). */
	if (poll(&p, 1, 0) < 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL)))
		return false;
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
	       len >= offsetof(struct tcp_info, tcpi_state) + sizeof(info.tcpi_state) &&
	       info.tcpi_state != TCP_CLOSE;
}

int sockdiag_peer_cookie(int diag_fd, int fd, const struct netaddr *peer,
			 const struct netaddr *local, uint64_t *cookie)
{
	struct found theirs;
	int err = lookup(diag_fd, peer, local, &theirs);

	if (err)
		return err;
	if (!synchronized(theirs.state))
		return -ENOENT;
	/* Checked after: a socket never gets its tuple back once it let go of
	 * it, so if ours still holds it, it held it when theirs was found, and
	 * no other connection could then have completed a handshake on it. */
	if (!sockdiag_still_connected(fd))
		return -ENOENT;
	*cookie = theirs.cookie;
	return 0;
}

/*
 * A loopback connection of our own. The client carries @mark (the agent's
 * upstream mark, so its own programs let it be wherever the agent runs),
 * and the accept waits at most a second.
 */
static int self_pair(int fds[3], uint32_t mark, struct netaddr *client_end,
		     struct netaddr *server_end)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_storage ss;
	socklen_t len = sizeof(addr), ss_len = sizeof(ss);
	struct pollfd ready;

	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || fds[1] < 0 ||
	    (mark && setsockopt(fds[1], SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) ||
	    bind(fds[0], (struct sockaddr *)&addr, len) < 0 || listen(fds[0], 1) < 0 ||
	    getsockname(fds[0], (struct sockaddr *)&addr, &len) < 0 ||
	    connect(fds[1], (struct sockaddr *)&addr, len) < 0 ||
	    getsockname(fds[1], (struct sockaddr *)&ss, &ss_len) < 0)
		return -errno;
	ready = (struct pollfd){ .fd = fds[0], .events = POLLIN };
	switch (poll(&ready, 1, 1000)) {
	case 1:
		break;
	case 0:
		return -ETIMEDOUT;
	default:
		return -errno;
	}
	fds[2] = accept4(fds[0], NULL, NULL, SOCK_CLOEXEC);
	if (fds[2] < 0)
		return -errno;
	if (netaddr_from_sockaddr((struct sockaddr *)&addr, server_end) < 0 ||
	    netaddr_from_sockaddr((struct sockaddr *)&ss, client_end) < 0)
		return -EAFNOSUPPORT;
	return 0;
}

int sockdiag_selftest(int diag_fd, uint32_t mark)
{
	int fds[3] = { -1, -1, -1 };
	struct netaddr client_end, server_end;
	uint64_t want, got;
	socklen_t len = sizeof(want);
	int err = self_pair(fds, mark, &client_end, &server_end);

	if (!err)
		err = sockdiag_peer_cookie(diag_fd, fds[2], &client_end, &server_end, &got);
	if (!err && getsockopt(fds[1], SOL_SOCKET, SO_COOKIE, &want, &len) < 0)
		err = -errno;
	if (!err && got != want)
		err = -EPROTO;
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return err;
}
