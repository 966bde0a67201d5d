/*
 * bench-connect: what one TCP connect costs from the caller's side, to
 * price the agent's BPF connect hooks (cgroup/connect4 and sockops).
 *
 *   bench-connect OTHER_PORT TARGET_PORT ITERATIONS BLOCKS
 *
 * Listens on 127.0.0.1:OTHER_PORT and 127.0.0.1:TARGET_PORT, accepting
 * and closing in a second thread, then times BLOCKS blocks of ITERATIONS
 * socket() + connect() + close() to each port, alternating the order per
 * block. run.py runs it inside a test cgroup with and without the agent
 * attached; with the agent, TARGET_PORT is one of its targets, so those
 * connects are redirected to the agent and never reach our listener.
 *
 * close() is preceded by SO_LINGER {1, 0} (a reset, no TIME_WAIT): a
 * hundred thousand connects would otherwise exhaust the ephemeral ports.
 * The setsockopt is in every variant, so it cancels in the differences.
 *
 * Prints one line per block and port:
 *   block=B port=other|target loop_ns=N connect_ns=N
 * (loop_ns: the whole iteration; connect_ns: the connect() call alone),
 * then "accepted other=N target=N" (what reached our listeners).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { PORT_OTHER, PORT_TARGET, N_PORTS };
static const char *const port_names[N_PORTS] = { "other", "target" };

struct listener {
	int fd;
	uint64_t accepted;
};

static struct listener listeners[N_PORTS];
static volatile int stopping;

static void die(const char *what)
{
	fprintf(stderr, "bench-connect: %s: %s\n", what, strerror(errno));
	exit(1);
}

static long parse_long(const char *s, long min, long max, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "bench-connect: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int listen_on(uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(fd, 4096) < 0)
		die("listen");
	return fd;
}

static void *accept_main(void *arg)
{
	struct pollfd pfd[N_PORTS];

	(void)arg;
	for (int i = 0; i < N_PORTS; i++)
		pfd[i] = (struct pollfd){ .fd = listeners[i].fd, .events = POLLIN };
	while (!stopping) {
		if (poll(pfd, N_PORTS, 100) < 0 && errno != EINTR)
			die("poll");
		for (int i = 0; i < N_PORTS; i++) {
			int fd;

			if (!(pfd[i].revents & POLLIN))
				continue;
			while ((fd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
				__atomic_add_fetch(&listeners[i].accepted, 1, __ATOMIC_RELAXED);
				close(fd);
			}
		}
	}
	return NULL;
}

/* @n connects to 127.0.0.1:@port; the whole loop's and connect()'s ns. */
static void time_block(uint16_t port, long n, uint64_t *loop_ns, uint64_t *connect_ns)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct linger reset = { .l_onoff = 1, .l_linger = 0 };
	uint64_t start = now_ns(), in_connect = 0;

	for (long k = 0; k < n; k++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		uint64_t t0, t1;

		if (fd < 0)
			die("socket");
		t0 = now_ns();
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			die("connect");
		t1 = now_ns();
		in_connect += t1 - t0;
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
		close(fd);
	}
	*loop_ns = (now_ns() - start) / (uint64_t)n;
	*connect_ns = in_connect / (uint64_t)n;
}

int main(int argc, char **argv)
{
	uint16_t ports[N_PORTS];
	pthread_t acceptor;
	long iterations, blocks;
	int rc;

	if (argc != 5) {
		fprintf(stderr, "usage: bench-connect OTHER_PORT TARGET_PORT ITERATIONS BLOCKS\n");
		return 2;
	}
	ports[PORT_OTHER] = (uint16_t)parse_long(argv[1], 1, 65535, "port");
	ports[PORT_TARGET] = (uint16_t)parse_long(argv[2], 1, 65535, "port");
	iterations = parse_long(argv[3], 1, 100000000, "iterations");
	blocks = parse_long(argv[4], 1, 1000, "blocks");

	for (int i = 0; i < N_PORTS; i++)
		listeners[i].fd = listen_on(ports[i]);
	if ((rc = pthread_create(&acceptor, NULL, accept_main, NULL)) != 0) {
		errno = rc;
		die("pthread_create");
	}
	for (long b = 0; b < blocks; b++) {
		for (int j = 0; j < N_PORTS; j++) {
			int i = (int)((b + j) % N_PORTS);
			uint64_t loop_ns, connect_ns;

			time_block(ports[i], iterations, &loop_ns, &connect_ns);
			printf("block=%ld port=%s loop_ns=%llu connect_ns=%llu\n", b, port_names[i],
			       (unsigned long long)loop_ns, (unsigned long long)connect_ns);
		}
	}
	usleep(200 * 1000);	/* the last accepts */
	stopping = 1;
	pthread_join(acceptor, NULL);
	printf("accepted other=%llu target=%llu\n",
	       (unsigned long long)__atomic_load_n(&listeners[PORT_OTHER].accepted, __ATOMIC_RELAXED),
	       (unsigned long long)__atomic_load_n(&listeners[PORT_TARGET].accepted, __ATOMIC_RELAXED));
	return 0;
}
