/*
 * bench-kpipe: the bench's "kernel pipe" baseline. A proxy whose bytes
 * never reach user space: both sockets of each connection go into a
 * sockmap, and bpf/kpipe.bpf.c redirects everything that arrives on one to
 * the egress of the other. What it measures is the floor of any sockmap
 * kernel path (docs/kernel-path.md), next to bench-bytepipe's user-space
 * floor.
 *
 *   bench-kpipe LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 *
 * Listens on 127.0.0.1:LISTEN_PORT and prints "ready". One epoll thread
 * accepts, connects upstream (blocking: loopback answers at once), puts
 * both sockets in the maps, then forwards by hand whatever arrived before
 * that (the client's startup packet). From then on it only watches for
 * the end: EOF or an error on either side closes both. Bytes that still
 * reach user space (there should be none) are forwarded and counted on
 * stderr at exit. Needs root (BPF).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "kpipe.skel.h"

#define KPIPE_MAX_FD 65536
#define KPIPE_MAX_EVENTS 64

struct kpipe {
	struct kpipe_bpf *skel;
	int socks, peers;		/* map fds */
	int epfd;
	struct sockaddr_in upstream;
	int peer_of[KPIPE_MAX_FD];	/* fd -> fd of the other side, -1 */
	uint64_t passed;		/* bytes that reached user space after setup */
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static uint64_t cookie_of(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len);
	return cookie;
}

/* Copies what is queued on @from to @to; returns bytes moved, -1 at EOF
 * or on an error. */
static long forward_queued(int from, int to)
{
	char buf[16384];
	long moved = 0;

	for (;;) {
		ssize_t n = recv(from, buf, sizeof(buf), MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return moved;
		if (n <= 0 || send(to, buf, (size_t)n, MSG_NOSIGNAL) != n)
			return -1;
		moved += n;
	}
}

static int map_pair(struct kpipe *k, int a, int b)
{
	uint64_t ca = cookie_of(a), cb = cookie_of(b), fa = (uint64_t)a, fb = (uint64_t)b;

	/* @b first: once @a is in, what it receives goes to @b at once. */
	if (bpf_map_update_elem(k->peers, &ca, &cb, BPF_ANY) ||
	    bpf_map_update_elem(k->peers, &cb, &ca, BPF_ANY) ||
	    bpf_map_update_elem(k->socks, &cb, &fb, BPF_ANY) ||
	    bpf_map_update_elem(k->socks, &ca, &fa, BPF_ANY))
		return -1;
	return 0;
}

static void close_pair(struct kpipe *k, int fd)
{
	int other = k->peer_of[fd];
	int fds[2] = { fd, other };

	for (int i = 0; i < 2; i++) {
		uint64_t c;

		if (fds[i] < 0)
			continue;
		c = cookie_of(fds[i]);
		bpf_map_delete_elem(k->peers, &c);
		bpf_map_delete_elem(k->socks, &c);
		epoll_ctl(k->epfd, EPOLL_CTL_DEL, fds[i], NULL);
		k->peer_of[fds[i]] = -1;
		close(fds[i]);
	}
}

static int watch(struct kpipe *k, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = fd };

	return epoll_ctl(k->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void accept_one(struct kpipe *k, int listener)
{
	int one = 1, client = accept(listener, NULL, NULL), server;

	if (client < 0)
		return;
	server = socket(AF_INET, SOCK_STREAM, 0);
	if (server < 0 || client >= KPIPE_MAX_FD || server >= KPIPE_MAX_FD ||
	    connect(server, (struct sockaddr *)&k->upstream, sizeof(k->upstream)) < 0)
		goto fail;
	setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (map_pair(k, client, server) < 0) {
		perror("bench-kpipe: sockmap");
		goto fail;
	}
	k->peer_of[client] = server;
	k->peer_of[server] = client;
	if (watch(k, client) < 0 || watch(k, server) < 0 || forward_queued(client, server) < 0)
		close_pair(k, client);
	return;
fail:
	close(client);
	if (server >= 0)
		close(server);
}

static void on_ready(struct kpipe *k, int fd)
{
	long moved;

	if (k->peer_of[fd] < 0)
		return;
	moved = forward_queued(fd, k->peer_of[fd]);
	if (moved < 0)
		close_pair(k, fd);
	else
		k->passed += (uint64_t)moved;
}

static int listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1024) < 0) {
		perror("bench-kpipe: listen");
		return -1;
	}
	return fd;
}

static int setup(struct kpipe *k, char **argv)
{
	k->upstream = (struct sockaddr_in){ .sin_family = AF_INET,
					    .sin_port = htons((uint16_t)atoi(argv[3])) };
	if (inet_pton(AF_INET, argv[2], &k->upstream.sin_addr) != 1) {
		fprintf(stderr, "bench-kpipe: bad upstream address %s\n", argv[2]);
		return -1;
	}
	memset(k->peer_of, -1, sizeof(k->peer_of));
	k->skel = kpipe_bpf__open_and_load();
	if (!k->skel) {
		perror("bench-kpipe: load");
		return -1;
	}
	k->socks = bpf_map__fd(k->skel->maps.socks);
	k->peers = bpf_map__fd(k->skel->maps.peer);
	/* Attached to our own map: only the sockets put in it are affected. */
	if (bpf_prog_attach(bpf_program__fd(k->skel->progs.kpipe_verdict), k->socks,
			    BPF_SK_SKB_STREAM_VERDICT, 0) < 0) {
		perror("bench-kpipe: attach");
		return -1;
	}
	k->epfd = epoll_create1(0);
	return k->epfd < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	static struct kpipe k;
	struct epoll_event ev = { .events = EPOLLIN };
	int listener, status = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT\n", argv[0]);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (setup(&k, argv) < 0 || (listener = listen_on(atoi(argv[1]))) < 0)
		goto out;
	ev.data.fd = listener;
	if (epoll_ctl(k.epfd, EPOLL_CTL_ADD, listener, &ev) < 0)
		goto out;
	printf("ready\n");
	fflush(stdout);
	while (!stopping) {
		struct epoll_event evs[KPIPE_MAX_EVENTS];
		int n = epoll_wait(k.epfd, evs, KPIPE_MAX_EVENTS, 200);

		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == listener)
				accept_one(&k, listener);
			else
				on_ready(&k, evs[i].data.fd);
		}
	}
	fprintf(stderr, "bench-kpipe: %llu bytes reached user space after setup\n",
		(unsigned long long)k.passed);
	status = 0;
out:
	kpipe_bpf__destroy(k.skel);
	return status;
}
