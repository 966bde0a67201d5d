#include "collector/listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 128

int listener_open(const struct netaddr *addr, int *out)
{
	struct sockaddr_storage ss;
	socklen_t len = netaddr_to_sockaddr(addr, &ss);
	int one = 1;
	int fd, err;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (ss.ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}

void listener_address(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct netaddr addr;

	if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0 ||
	    netaddr_from_sockaddr((struct sockaddr *)&ss, &addr) < 0) {
		snprintf(buf, len, "?");
		return;
	}
	netaddr_format(&addr, buf, len);
}
