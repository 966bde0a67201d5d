#include "sockdiag.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
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
	r->id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	r->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
}

/* What one message of the answer says: 1 (not ours: read on), 0 or -errno. */
static int answer_take(const struct nlmsghdr *h, uint32_t seq, uint64_t *cookie)
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
		*cookie = (uint64_t)m->id.idiag_cookie[1] << 32 | m->id.idiag_cookie[0];
		return 0;
	}
	return 1;
}

int sockdiag_tcp_cookie(int fd, const struct netaddr *local, const struct netaddr *remote,
			uint64_t *cookie)
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
	if (sendto(fd, &q, sizeof(q), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return -errno;
	/* The kernel answers an exact lookup inside sendto(): the answer is
	 * queued already, so an empty queue means there is none to wait for. */
	for (;;) {
		ssize_t n = recv(fd, &a, sizeof(a), MSG_DONTWAIT);
		int len = (int)n, rc = 1;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? -ENOENT : -errno;
		for (const struct nlmsghdr *h = &a.nlh; rc == 1 && NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len))
			rc = answer_take(h, seq, cookie);
		if (rc != 1)
			return rc;
	}
}
