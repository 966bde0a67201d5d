#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/conn.h"
#include "agent/sockdiag.h"
#include "common/clock.h"
#include "common/log.h"

#define WORKER_MAX_EVENTS 128
#define WORKER_ACCEPT_BATCH 64
#define WORKER_FREE_BUFS 64
#define LISTEN_BACKLOG 4096

int worker_watch(struct worker *w, struct endpoint *ep)
{
	struct epoll_event ev = { .data.ptr = ep };

	switch (ep->kind) {
	case ENDPOINT_LISTEN:
	case ENDPOINT_WAKE:
		ev.events = EPOLLIN;
		break;
	case ENDPOINT_CLIENT:
	case ENDPOINT_SERVER:
		ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
		break;
	}
	return epoll_ctl(w->epfd, EPOLL_CTL_ADD, ep->fd, &ev);
}

void worker_unwatch(struct worker *w, struct endpoint *ep)
{
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, ep->fd, NULL);
}

static int open_listener(const struct netaddr *addr, int *out)
{
	struct sockaddr_storage ss;
	socklen_t len = netaddr_to_sockaddr(addr, &ss);
	int one = 1;
	int fd, err;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
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

static int add_listener(struct worker *w, const struct netaddr *addr, const char *what)
{
	struct endpoint *ep = &w->listeners[w->n_listeners];
	char text[NETADDR_STRLEN];
	int err;

	netaddr_format(addr, text, sizeof(text));
	err = open_listener(addr, &ep->fd);
	if (err) {
		log_error("%s %s: %s", what, text, strerror(-err));
		return err;
	}
	ep->kind = ENDPOINT_LISTEN;
	ep->owner = w;
	if (worker_watch(w, ep) < 0) {
		err = -errno;
		close(ep->fd);
		return err;
	}
	w->n_listeners++;
	return 0;
}

int worker_init(struct worker *w, struct agent *agent, unsigned index)
{
	struct agent_config *cfg = agent->cfg;
	int err;

	memset(w, 0, sizeof(*w));
	w->agent = agent;
	w->index = index;
	w->wake.fd = -1;
	w->epfd = -1;
	w->diag_fd = -1;
	w->tick_ms = cfg->heartbeat_timeout_ms / 4 ? cfg->heartbeat_timeout_ms / 4 : 1;
	iobuf_pool_init(&w->bufs, WORKER_FREE_BUFS);
	__atomic_store_n(&w->last_tick_ns, clock_monotonic_ns(), __ATOMIC_RELAXED);

	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		return -errno;
	w->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wake.fd < 0)
		return -errno;
	w->wake.kind = ENDPOINT_WAKE;
	w->wake.owner = w;
	if (worker_watch(w, &w->wake) < 0)
		return -errno;
	if ((w->diag_fd = sockdiag_open()) < 0) {
		log_error("sock_diag: %s", strerror(-w->diag_fd));
		return w->diag_fd;
	}

	err = add_listener(w, &cfg->listen, "listen");
	if (err)
		return err;
	if (cfg->has_listen6) {
		err = add_listener(w, &cfg->listen6, "listen6");
		if (err && index == 0 && (err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT)) {
			log_warn("listen6: IPv6 is not available here; native IPv6 "
				 "destinations will not be intercepted");
			cfg->has_listen6 = false;
			err = 0;
		}
		if (err)
			return err;
	}
	if (cfg->has_listen_pods)
		err = add_listener(w, &cfg->listen_pods, "listen_pods");
	return err;
}

static void accept_ready(struct worker *w, struct endpoint *ep)
{
	for (int i = 0; i < WORKER_ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer_ss, local_ss;
		socklen_t peer_len = sizeof(peer_ss), local_len = sizeof(local_ss);
		struct netaddr peer, local;
		int fd;

		fd = accept4(ep->fd, (struct sockaddr *)&peer_ss, &peer_len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		if (getsockname(fd, (struct sockaddr *)&local_ss, &local_len) < 0 ||
		    netaddr_from_sockaddr((struct sockaddr *)&peer_ss, &peer) < 0 ||
		    netaddr_from_sockaddr((struct sockaddr *)&local_ss, &local) < 0) {
			close(fd);
			continue;
		}
		conn_accept(w, fd, &peer, &local);
	}
}

static void dispatch(struct worker *w, struct epoll_event *ev)
{
	struct endpoint *ep = ev->data.ptr;
	uint64_t drain;

	switch (ep->kind) {
	case ENDPOINT_LISTEN:
		accept_ready(w, ep);
		break;
	case ENDPOINT_WAKE:
		if (read(ep->fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
			log_warn("worker %u: wake: %s", w->index, strerror(errno));
		break;
	case ENDPOINT_CLIENT:
	case ENDPOINT_SERVER:
		conn_on_event(ep, ev->events);
		break;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event events[WORKER_MAX_EVENTS];

	while (!__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(w->epfd, events, WORKER_MAX_EVENTS,
				   w->ready || w->audit.n ? 0 : (int)w->tick_ms);
		uint64_t now = clock_monotonic_ns();

		__atomic_store_n(&w->last_tick_ns, now, __ATOMIC_RELEASE);
		if (n < 0 && errno != EINTR) {
			log_error("worker %u: epoll_wait: %s", w->index, strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++)
			dispatch(w, &events[i]);
		if (now - w->last_sweep_ns >= (uint64_t)w->tick_ms * 1000000ull) {
			w->last_sweep_ns = now;
			conn_sweep(w, now);
		}
		conn_run_ready(w);
		conn_commit(w);
		conn_free_doomed(w);
		/* Nothing of this turn is held past here: a swapped policy may go. */
		__atomic_add_fetch(&w->turns, 1, __ATOMIC_RELEASE);
	}
	conn_close_all(w, "agent shutting down");
	conn_run_ready(w);
	conn_commit(w);
	conn_free_doomed(w);
	return NULL;
}

int worker_start(struct worker *w)
{
	char name[16];
	int err = pthread_create(&w->thread, NULL, worker_main, w);

	if (err)
		return -err;
	w->started = true;
	/* Seen in top -H, ps -L and perf: "dbward-w0", "dbward-w1", ... */
	snprintf(name, sizeof(name), "dbward-w%u", w->index);
	pthread_setname_np(w->thread, name);
	return 0;
}

void worker_wake(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->wake.fd, &one, sizeof(one)) < 0)
		log_warn("worker %u: wake: %s", w->index, strerror(errno));
}

void worker_stop(struct worker *w)
{
	if (!w->started)
		return;
	__atomic_store_n(&w->stopping, true, __ATOMIC_RELEASE);
	worker_wake(w);
	pthread_join(w->thread, NULL);
	w->started = false;
}

void worker_destroy(struct worker *w)
{
	for (unsigned i = 0; i < w->n_listeners; i++)
		close(w->listeners[i].fd);
	w->n_listeners = 0;
	if (w->wake.fd >= 0)
		close(w->wake.fd);
	if (w->epfd >= 0)
		close(w->epfd);
	if (w->diag_fd >= 0)
		close(w->diag_fd);
	w->wake.fd = w->epfd = w->diag_fd = -1;
	audit_batch_release(&w->audit);
	iobuf_pool_release_all(&w->bufs);
}
