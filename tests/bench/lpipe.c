/*
 * bench-lpipe: the socket-level shortcut of bpf/lpipe.bpf.c for the local
 * hop between clients and a proxy, attached to a test cgroup.
 *
 *   bench-lpipe CGROUP_DIR PROXY_PORT [LIMIT_BYTES]
 *
 * Attaches the sk_msg program to the socket map, then the sockops program
 * to CGROUP_DIR (a cgroup the bench made: the clients and the proxy, here
 * bench-bytepipe, both run in it) with a bpf_link. IPv4 sockets to or
 * from port PROXY_PORT enter the map when they connect. Prints "ready",
 * runs until SIGINT or SIGTERM, then prints what the sends did on stdout:
 *
 *   lpipe: redirected N, tcp: behind N, full N, no peer N
 *
 * Stop it only once its connections are idle: freeing the map drops the
 * bytes redirected to a socket and not read yet. run.py's `lpipe` way uses
 * it (docs/kernel-path.md). Needs root (BPF).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "lpipe.skel.h"

enum { REDIRECTED, TCP_BEHIND, TCP_FULL, TCP_NO_PEER, NCOUNTERS };

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static long parse_number(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi) {
		fprintf(stderr, "bench-lpipe: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

/* One counter summed over the CPUs, as text ("?" if it cannot be read). */
static void counter_text(int map, uint32_t which, char *out, size_t len)
{
	int ncpus = libbpf_num_possible_cpus();
	uint64_t sum = 0;
	uint64_t *per_cpu = NULL;

	snprintf(out, len, "?");
	if (ncpus <= 0 || !(per_cpu = calloc((size_t)ncpus, sizeof(*per_cpu))))
		return;
	if (bpf_map_lookup_elem(map, &which, per_cpu) == 0) {
		for (int i = 0; i < ncpus; i++)
			sum += per_cpu[i];
		snprintf(out, len, "%llu", (unsigned long long)sum);
	}
	free(per_cpu);
}

static void print_counters(int map)
{
	char n[NCOUNTERS][24];

	for (uint32_t i = 0; i < NCOUNTERS; i++)
		counter_text(map, i, n[i], sizeof(n[i]));
	printf("lpipe: redirected %s, tcp: behind %s, full %s, no peer %s\n", n[REDIRECTED],
	       n[TCP_BEHIND], n[TCP_FULL], n[TCP_NO_PEER]);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	struct lpipe_bpf *skel = NULL;
	struct bpf_link *link = NULL;
	int cgroup = -1, rc = 1;
	bool msg_attached = false;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: bench-lpipe CGROUP_DIR PROXY_PORT [LIMIT_BYTES]\n");
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (!(skel = lpipe_bpf__open())) {
		fprintf(stderr, "bench-lpipe: open: %s\n", strerror(errno));
		goto out;
	}
	skel->rodata->proxy_port = (uint32_t)parse_number(argv[2], 1, 65535, "port");
	if (argc == 4)
		skel->rodata->limit = (uint32_t)parse_number(argv[3], 1, 1L << 30, "limit");
	if (lpipe_bpf__load(skel)) {
		fprintf(stderr, "bench-lpipe: load: %s\n", strerror(errno));
		goto out;
	}
	if ((cgroup = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "bench-lpipe: %s: %s\n", argv[1], strerror(errno));
		goto out;
	}
	/* sk_msg first: no socket enters the map without it. */
	if (bpf_prog_attach(bpf_program__fd(skel->progs.lpipe_msg), bpf_map__fd(skel->maps.socks),
			    BPF_SK_MSG_VERDICT, 0)) {
		fprintf(stderr, "bench-lpipe: attach sk_msg: %s\n", strerror(errno));
		goto out;
	}
	msg_attached = true;
	if (!(link = bpf_program__attach_cgroup(skel->progs.lpipe_sockops, cgroup))) {
		fprintf(stderr, "bench-lpipe: attach sockops: %s\n", strerror(errno));
		goto out;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stopping)
		sleep(1);
	print_counters(bpf_map__fd(skel->maps.counters));
	rc = 0;
out:
	bpf_link__destroy(link);
	if (msg_attached)
		bpf_prog_detach2(bpf_program__fd(skel->progs.lpipe_msg),
				 bpf_map__fd(skel->maps.socks), BPF_SK_MSG_VERDICT);
	if (cgroup >= 0)
		close(cgroup);
	lpipe_bpf__destroy(skel);
	return rc;
}
