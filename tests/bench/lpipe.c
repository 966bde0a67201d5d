/*
 * bench-lpipe: the socket-level shortcut of bpf/lpipe.bpf.c for the local
 * hop between clients and a proxy, attached to a test cgroup.
 *
 *   bench-lpipe CGROUP_DIR PROXY_PORT [LIMIT_BYTES]
 *
 * Attaches the sockops program to CGROUP_DIR (a cgroup the bench made: the
 * clients and the proxy, here bench-bytepipe, both run in it) with a
 * bpf_link, and the sk_msg program to the socket map. Sockets to or from
 * 127.0.0.1:PROXY_PORT enter the map when they connect. Prints "ready",
 * runs until SIGINT or SIGTERM, then prints what the sends did on stdout:
 *
 *   lpipe: redirected N, tcp: behind N, full N, no peer N
 *
 * run.py's `lpipe` way uses it (docs/kernel-path.md). Needs root (BPF).
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

static uint64_t counter_sum(int map, uint32_t which)
{
	int ncpus = libbpf_num_possible_cpus();
	uint64_t sum = 0;
	uint64_t *per_cpu;

	if (ncpus <= 0 || !(per_cpu = calloc((size_t)ncpus, sizeof(*per_cpu))))
		return 0;
	if (bpf_map_lookup_elem(map, &which, per_cpu) == 0)
		for (int i = 0; i < ncpus; i++)
			sum += per_cpu[i];
	free(per_cpu);
	return sum;
}

static void print_counters(int map)
{
	printf("lpipe: redirected %llu, tcp: behind %llu, full %llu, no peer %llu\n",
	       (unsigned long long)counter_sum(map, REDIRECTED),
	       (unsigned long long)counter_sum(map, TCP_BEHIND),
	       (unsigned long long)counter_sum(map, TCP_FULL),
	       (unsigned long long)counter_sum(map, TCP_NO_PEER));
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
	if (!(link = bpf_program__attach_cgroup(skel->progs.lpipe_sockops, cgroup))) {
		fprintf(stderr, "bench-lpipe: attach sockops: %s\n", strerror(errno));
		goto out;
	}
	if (bpf_prog_attach(bpf_program__fd(skel->progs.lpipe_msg), bpf_map__fd(skel->maps.socks),
			    BPF_SK_MSG_VERDICT, 0)) {
		fprintf(stderr, "bench-lpipe: attach sk_msg: %s\n", strerror(errno));
		goto out;
	}
	msg_attached = true;
	printf("ready\n");
	fflush(stdout);
	while (!stopping)
		sleep(1);
	print_counters(bpf_map__fd(skel->maps.counters));
	rc = 0;
out:
	if (msg_attached)
		bpf_prog_detach2(bpf_program__fd(skel->progs.lpipe_msg),
				 bpf_map__fd(skel->maps.socks), BPF_SK_MSG_VERDICT);
	bpf_link__destroy(link);
	if (cgroup >= 0)
		close(cgroup);
	lpipe_bpf__destroy(skel);
	return rc;
}
