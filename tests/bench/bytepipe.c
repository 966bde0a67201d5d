/*
 * bench-bytepipe: the bench's "bare proxy" baseline. A minimal epoll byte
 * pipe: no parsing, no events, no policy; bytes in, bytes out.
 *
 *   bench-bytepipe LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 *
 * Listens on 127.0.0.1:LISTEN_PORT and prints "ready". Two threads, each
 * with its own epoll set, share the listening socket (EPOLLEXCLUSIVE: one
 * wakes per connection) and forward the connections they accept, like the
 * agent's workers on this 2-core machine. For each client it connects to
 * the upstream (blocking: loopback answers at once) and copies both ways
 * with read()/write() through a 64 KiB buffer per direction. A partial
 * write parks the rest, stops reading from the source and waits for
 * EPOLLOUT on the destination. EOF from one side is passed on as
 * shutdown(SHUT_WR) once its buffer is flushed; an error on either side,
 * or EOF both ways, closes both. Pipes closed during a batch of events
 * are freed after the batch, so a later event in it never sees freed memory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_THREADS 2
#define PIPE_BUF_BYTES (64 * 1024)
#define PIPE_MAX_EVENTS 64

struct pipe;

/* One socket of a pipe. The epoll data points here; listen_fd is the
 * listening socket's own tag. */
struct end {
	int fd;
	uint32_t watched;	/* the epoll mask registered now */
	struct pipe *pipe;
};

/* Bytes read from ends[i] not yet written to ends[1 - i]. */
struct flow {
	char buf[PIPE_BUF_BYTES];
	size_t off, len;
	bool eof;		/* the source said EOF */
	bool shut;		/* EOF passed on to the destination */
};

struct pipe {
	struct end ends[2];	/* 0: client, 1: upstream */
	struct flow flows[2];	/* flows[i]: from ends[i] to ends[1 - i] */
	bool closed;
	struct pipe *next_dead;
};

struct thread {
	int epfd;
	struct pipe *dead;	/* closed in this batch, freed after it */
};

static int listen_fd = -1;
static struct sockaddr_storage upstream;
static socklen_t upstream_len;
static struct end listen_end;

static void die(const char *what)
{
	fprintf(stderr, "bench-bytepipe: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int parse_port(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 1 || v > 65535) {
		fprintf(stderr, "bench-bytepipe: bad port %s\n", s);
		exit(2);
	}
	return (int)v;
}

static void pipe_close(struct thread *t, struct pipe *p)
{
	if (p->closed)
		return;
	p->closed = true;
	for (int i = 0; i < 2; i++) {
		if (p->ends[i].fd >= 0)
			close(p->ends[i].fd);	/* also leaves the epoll set */
		p->ends[i].fd = -1;
	}
	p->next_dead = t->dead;
	t->dead = p;
}

/* The mask end @i needs: readable while its outgoing flow has room and no
 * EOF; writable while its incoming flow has bytes parked. */
static int end_rewatch(struct thread *t, struct pipe *p, int i)
{
	struct end *e = &p->ends[i];
	struct epoll_event ev = { .data.ptr = e };
	uint32_t want = 0;

	if (!p->flows[i].eof && p->flows[i].len == 0)
		want |= EPOLLIN;
	if (p->flows[1 - i].len > 0)
		want |= EPOLLOUT;
	if (want == e->watched)
		return 0;
	ev.events = want;
	if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, e->fd, &ev) < 0)
		return -1;
	e->watched = want;
	return 0;
}

/* Writes what flows[i] holds to ends[1 - i]; passes EOF on when empty.
 * Returns -1 when the pipe must close. */
static int flow_flush(struct pipe *p, int i)
{
	struct flow *f = &p->flows[i];
	int dst = p->ends[1 - i].fd;

	while (f->len > 0) {
		ssize_t n = write(dst, f->buf + f->off, f->len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;	/* parked: EPOLLOUT resumes */
			return -1;
		}
		f->off += (size_t)n;
		f->len -= (size_t)n;
	}
	f->off = 0;
	if (f->eof && !f->shut) {
		f->shut = true;
		if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
			return -1;
	}
	return 0;
}

/* One read from ends[i] (level-triggered: more comes on the next wait). */
static int flow_fill(struct pipe *p, int i)
{
	struct flow *f = &p->flows[i];
	ssize_t n;

	do
		n = read(p->ends[i].fd, f->buf, sizeof(f->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
	if (n == 0)
		f->eof = true;
	f->off = 0;
	f->len = (size_t)n;
	return flow_flush(p, i);
}

static void pipe_on_event(struct thread *t, struct end *e, uint32_t events)
{
	struct pipe *p = e->pipe;
	int i = (int)(e - p->ends);

	if (p->closed)
		return;
	if (events & EPOLLERR)
		goto done;
	if ((events & EPOLLOUT) && flow_flush(p, 1 - i) < 0)
		goto done;
	if ((events & (EPOLLIN | EPOLLHUP)) && !p->flows[i].eof && p->flows[i].len == 0 &&
	    flow_fill(p, i) < 0)
		goto done;
	if (p->flows[0].shut && p->flows[1].shut)
		goto done;	/* EOF passed on both ways: done */
	if (end_rewatch(t, p, 0) < 0 || end_rewatch(t, p, 1) < 0)
		goto done;
	return;
done:
	pipe_close(t, p);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void pipe_open(struct thread *t, int client)
{
	struct pipe *p = calloc(1, sizeof(*p));
	int one = 1, server = -1;

	if (!p)
		goto fail;
	server = socket(upstream.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (server < 0 || connect(server, (struct sockaddr *)&upstream, upstream_len) < 0)
		goto fail;
	setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (set_nonblock(client) < 0 || set_nonblock(server) < 0)
		goto fail;
	p->ends[0] = (struct end){ .fd = client, .watched = EPOLLIN, .pipe = p };
	p->ends[1] = (struct end){ .fd = server, .watched = EPOLLIN, .pipe = p };
	for (int i = 0; i < 2; i++) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &p->ends[i] };

		if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, p->ends[i].fd, &ev) < 0) {
			pipe_close(t, p);	/* owns both fds now */
			return;
		}
	}
	return;
fail:
	fprintf(stderr, "bench-bytepipe: upstream: %s\n", strerror(errno));
	if (server >= 0)
		close(server);
	close(client);
	free(p);
}

static void accept_all(struct thread *t)
{
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				fprintf(stderr, "bench-bytepipe: accept: %s\n", strerror(errno));
			return;
		}
		pipe_open(t, fd);
	}
}

static void *thread_main(void *arg)
{
	struct thread *t = arg;
	struct epoll_event events[PIPE_MAX_EVENTS];
	struct epoll_event lev = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_end };

	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, listen_fd, &lev) < 0)
		die("epoll_ctl listen");
	for (;;) {
		int n = epoll_wait(t->epfd, events, PIPE_MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int k = 0; k < n; k++) {
			struct end *e = events[k].data.ptr;

			if (e == &listen_end)
				accept_all(t);
			else
				pipe_on_event(t, e, events[k].events);
		}
		while (t->dead) {
			struct pipe *p = t->dead;

			t->dead = p->next_dead;
			free(p);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	pthread_t tids[PIPE_THREADS];
	struct thread threads[PIPE_THREADS];
	int one = 1, rc;

	if (argc != 4) {
		fprintf(stderr, "usage: bench-bytepipe LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT\n");
		return 2;
	}
	addr.sin_port = htons((uint16_t)parse_port(argv[1]));
	parse_port(argv[3]);
	if ((rc = getaddrinfo(argv[2], argv[3], &hints, &ai)) != 0) {
		fprintf(stderr, "bench-bytepipe: %s: %s\n", argv[2], gai_strerror(rc));
		return 1;
	}
	memcpy(&upstream, ai->ai_addr, ai->ai_addrlen);
	upstream_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	signal(SIGPIPE, SIG_IGN);

	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		die("socket");
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(listen_fd, 1024) < 0)
		die("listen");
	listen_end.fd = listen_fd;

	for (int i = 0; i < PIPE_THREADS; i++) {
		threads[i] = (struct thread){ .epfd = epoll_create1(EPOLL_CLOEXEC) };
		if (threads[i].epfd < 0)
			die("epoll_create1");
		if ((rc = pthread_create(&tids[i], NULL, thread_main, &threads[i])) != 0) {
			errno = rc;
			die("pthread_create");
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (int i = 0; i < PIPE_THREADS; i++)
		pthread_join(tids[i], NULL);	/* runs until killed */
	return 0;
}
