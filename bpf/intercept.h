/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the interception programs (intercept.bpf.c) and the agent.
 *
 * Every address is kept as 16 bytes: IPv6 as is, IPv4 as the v4-mapped
 * IPv6 address ::ffff:a.b.c.d. One key shape then serves both families and
 * a dual-stack socket connecting to ::ffff:a.b.c.d matches an IPv4 target.
 * Ports are in network byte order everywhere in this file.
 */
#ifndef DBWARD_BPF_INTERCEPT_H
#define DBWARD_BPF_INTERCEPT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define INTERCEPT_COMM_LEN 16

/*
 * Key of the target set (an LPM trie). The first 32 bits of the prefix are
 * port + pad, so a target of "port 5432, any address" has prefixlen 32 and
 * "port 5432 in 10.0.0.0/8" has prefixlen 32 + 96 + 8.
 */
struct intercept_target_key {
	__u32 prefixlen;
	__be16 port;
	__u16 pad;
	__u8 addr[16];
};

#define INTERCEPT_TARGET_KEY_PREFIX_BITS 32

/* Value of the target set: which configured target matched. */
struct intercept_target_value {
	__u32 target_index;
};

/* Who opened a connection, as seen in the kernel at connect() time. */
struct intercept_identity {
	__u32 tgid;			/* process id */
	__u32 pid;			/* thread id */
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id;		/* cgroup v2 id of the calling task */
	__u64 netns_cookie;		/* network namespace of the socket */
	__u64 connect_ns;		/* bpf_ktime_get_ns() at connect */
	__u64 start_boottime_ns;	/* process start: tells a reused pid apart */
	char comm[INTERCEPT_COMM_LEN];
};

/*
 * The original destination and identity of one redirected connection,
 * kept in origin_by_cookie under the workload socket's cookie (unique
 * for the kernel's uptime, never reused).
 */
struct intercept_origin {
	__u8 dst_addr[16];		/* what the workload asked for */
	__be16 dst_port;
	__u16 family;			/* AF_INET or AF_INET6 of the socket */
	__u32 target_index;
	__u8 via_addr[16];		/* where it was sent instead: the agent */
	__be16 via_port;
	__u16 pad;
	__u32 pad2;
	__u64 socket_cookie;		/* the key it is kept under */
	struct intercept_identity who;
};

/*
 * Key of origin_by_tuple and tuple_collided (only with listen_pods, and
 * only for connections to the pods address: a pod's socket is in a
 * network namespace where the agent cannot ask for its cookie): the
 * connection as the agent sees it after accept(): peer = the workload's
 * local address, local = the agent's pods address. The namespace is not
 * in the key (the agent cannot know its peer's), and whoever owns a
 * namespace picks its addresses. So an entry is never replaced: a socket
 * that reaches the agent under a key taken already, or with no record of
 * its own, notes the key in tuple_collided (with bpf_ktime_get_ns). The
 * agent refuses a live connection whose key is noted, and drops the note
 * once it has handled a live connection under that key; notes nobody
 * came for go after INTERCEPT_COLLIDED_NS. Both maps are plain hashes
 * that fail closed when full: when a note cannot be kept, the agent
 * refuses every connection by tuple for INTERCEPT_COLLIDED_NS (the
 * program's unnoted_ns), and the key's entry is deleted.
 */
#define INTERCEPT_COLLIDED_NS (60ull * 1000000000ull)
struct intercept_tuple {
	__u8 peer_addr[16];
	__u8 local_addr[16];
	__be16 peer_port;
	__be16 local_port;
};

/*
 * Settings the agent writes before attaching and while running. They live
 * in the object's .bss, which the skeleton maps into the agent.
 */
enum intercept_fail_mode {
	INTERCEPT_FAIL_CLOSED = 0,	/* no live agent: connect() gets EPERM */
	INTERCEPT_FAIL_OPEN = 1,	/* no live agent: connect() goes direct */
};

struct intercept_settings {
	__u8 listen_addr[16];		/* redirect target, host namespace */
	__u8 listen6_addr[16];		/* for native IPv6 destinations */
	__u8 pods_addr[16];		/* for workloads in other netns */
	__be16 listen_port;
	__be16 listen6_port;
	__be16 pods_port;
	__u16 has_listen6;
	__u16 has_pods;
	__u16 fail_mode;		/* enum intercept_fail_mode */
	__u32 upstream_mark;		/* SO_MARK of the agent's own sockets */
	__u64 host_netns_cookie;
	__u64 heartbeat_timeout_ns;
};

/* Counters, per CPU, for the agent's stats and the tests. */
enum intercept_counter {
	INTERCEPT_CNT_REDIRECTED,
	INTERCEPT_CNT_REFUSED_NO_AGENT,
	INTERCEPT_CNT_BYPASSED_NO_AGENT,
	INTERCEPT_CNT_SKIPPED_MARK,
	INTERCEPT_CNT_NO_STORAGE,
	INTERCEPT_CNT_TUPLE_SAVED,
	INTERCEPT_CNT_TUPLE_COLLIDED,
	INTERCEPT_CNT_TUPLE_UNNOTED,	/* a collision with tuple_collided full */
	INTERCEPT_CNT_MAX,
};

#endif /* DBWARD_BPF_INTERCEPT_H */
