// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Steers a workload's database connections into the local dbward agent.
 *
 * connect4/connect6  a TCP connect() to a target (port, or CIDR + port) is
 *                    rewritten to the agent's listen address; the original
 *                    destination and the caller's identity are kept in
 *                    origin_by_cookie under the socket's cookie. The agent
 *                    learns the cookie of the socket it accepted from with
 *                    sock_diag, and forgets the record when it closes.
 * sockops            attached only with listen_pods: a pod's socket lives in
 *                    a namespace where the agent cannot ask sock_diag, so
 *                    once established its record is also published under the
 *                    4-tuple the agent will see from accept(); dropped again
 *                    at close. Not attached otherwise: it would run for every
 *                    TCP event of every socket in the cgroup.
 * getpeername4/6     the workload still sees the server it asked for.
 *
 * With no live agent (heartbeat older than the timeout) a target connect
 * is refused with EPERM (fail closed) or left alone (fail open).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "intercept.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define EPERM 1
#define ENOENT 2

#define SYS_PROCEED 1
#define SYS_REJECT 0

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Written by the agent through the skeleton's mapping of .bss. */
struct intercept_settings settings;
__u64 heartbeat_ns;
/* When a collision last found tuple_collided full (bpf_ktime_get_ns; read
 * by the agent, which refuses every connection by tuple for
 * INTERCEPT_COLLIDED_NS after it: see collided()). */
__u64 unnoted_ns;

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct intercept_target_key);
	__type(value, struct intercept_target_value);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} targets SEC(".maps");

/*
 * Cookies are never reused, so a record whose connection never reached
 * the agent is never found for another socket: it waits for the LRU to
 * drop it (with listen_pods, for the socket's TCP close). The agent deletes
 * a record when it frees the connection (docs/architecture.md says how it
 * makes sure the record it found is its own connection's).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u64);
	__type(value, struct intercept_origin);
	__uint(max_entries, 65536);
} origin_by_cookie SEC(".maps");

/*
 * Plain hashes, not LRU: nothing pushes an entry or a note out. A full
 * origin_by_tuple fails closed (no entry, no record: the agent refuses);
 * so does a full tuple_collided (see collided()).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct intercept_tuple);
	__type(value, struct intercept_origin);
	__uint(max_entries, 65536);
} origin_by_tuple SEC(".maps");

/* Written by key, never by a publisher's retract: see intercept.h. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct intercept_tuple);
	__type(value, __u64);
	__uint(max_entries, 8192);
} tuple_collided SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, INTERCEPT_CNT_MAX);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);

	if (n)
		*n += 1;
}

static __always_inline bool agent_alive(__u64 now)
{
	__u64 beat = heartbeat_ns;

	if (!beat)
		return false;
	return (__s64)(now - beat) <= (__s64)settings.heartbeat_timeout_ns;
}

static __always_inline bool addr_is_v4mapped(const __u8 a[16])
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

static __always_inline void addr_from_ip4(__u8 out[16], __u32 ip4)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = ip4;
}

static __always_inline void addr_from_ip6(__u8 out[16], const __u32 ip6[4])
{
	__u32 *w = (__u32 *)out;

	w[0] = ip6[0];
	w[1] = ip6[1];
	w[2] = ip6[2];
	w[3] = ip6[3];
}

static __always_inline bool target_lookup(const __u8 dst[16], __be16 port, __u32 *index)
{
	struct intercept_target_key key = {
		.prefixlen = INTERCEPT_TARGET_KEY_PREFIX_BITS + 128,
		.port = port,
	};
	struct intercept_target_value *hit;

	__builtin_memcpy(key.addr, dst, 16);
	hit = bpf_map_lookup_elem(&targets, &key);
	if (!hit)
		return false;
	*index = hit->target_index;
	return true;
}

static __always_inline void record_identity(struct intercept_identity *who, __u64 netns,
					    __u64 now)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	who->tgid = pid_tgid >> 32;
	who->pid = (__u32)pid_tgid;
	who->uid = (__u32)uid_gid;
	who->gid = uid_gid >> 32;
	who->cgroup_id = bpf_get_current_cgroup_id();
	who->netns_cookie = netns;
	who->connect_ns = now;
	/* What /proc/PID/stat reports as starttime, in ns: the agent checks
	 * it, so a pid reused before accept() cannot take the blame. */
	who->start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_get_current_comm(who->comm, sizeof(who->comm));
}

/*
 * Picks where a connection to @dst goes: the host's listen address, the
 * IPv6 one for native IPv6, or the pods' address for a workload in another
 * network namespace. Returns -ENOENT when no configured address fits.
 */
static __always_inline int redirect_target(__u64 netns, const __u8 dst[16],
					   const __u8 **addr, __be16 *port)
{
	bool v4 = addr_is_v4mapped(dst);

	if (netns != settings.host_netns_cookie) {
		if (!settings.has_pods || v4 != addr_is_v4mapped(settings.pods_addr))
			return -ENOENT;
		*addr = settings.pods_addr;
		*port = settings.pods_port;
		return 0;
	}
	if (v4) {
		*addr = settings.listen_addr;
		*port = settings.listen_port;
		return 0;
	}
	if (!settings.has_listen6)
		return -ENOENT;
	*addr = settings.listen6_addr;
	*port = settings.listen6_port;
	return 0;
}

/*
 * The connect() decision. Returns 0 to let the connect proceed (@to is set
 * when it must go to the agent instead) or -EPERM to refuse it.
 */
static __always_inline int intercept_connect(struct bpf_sock_addr *ctx, const __u8 dst[16],
					     __be16 dst_port, __u16 family,
					     const __u8 **to, __be16 *to_port)
{
	struct intercept_origin origin = {};
	struct bpf_sock *sk = ctx->sk;
	__u64 now, netns;
	__u32 index;

	*to = NULL;
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP || !sk)
		return 0;
	if (settings.upstream_mark && sk->mark == settings.upstream_mark) {
		count(INTERCEPT_CNT_SKIPPED_MARK);
		return 0;
	}
	if (!target_lookup(dst, dst_port, &index))
		return 0;

	now = bpf_ktime_get_ns();
	netns = bpf_get_netns_cookie(ctx);
	if (!agent_alive(now) || redirect_target(netns, dst, to, to_port) < 0)
		goto no_agent;

	__builtin_memcpy(origin.dst_addr, dst, 16);
	origin.dst_port = dst_port;
	origin.family = family;
	origin.target_index = index;
	__builtin_memcpy(origin.via_addr, *to, 16);
	origin.via_port = *to_port;
	origin.socket_cookie = bpf_get_socket_cookie(ctx);
	record_identity(&origin.who, netns, now);
	if (bpf_map_update_elem(&origin_by_cookie, &origin.socket_cookie, &origin, BPF_ANY)) {
		count(INTERCEPT_CNT_NO_STORAGE);
		goto no_agent;
	}
	count(INTERCEPT_CNT_REDIRECTED);
	return 0;

no_agent:
	*to = NULL;
	if (settings.fail_mode == INTERCEPT_FAIL_OPEN) {
		count(INTERCEPT_CNT_BYPASSED_NO_AGENT);
		return 0;
	}
	count(INTERCEPT_CNT_REFUSED_NO_AGENT);
	return -EPERM;
}

SEC("cgroup/connect4")
int dbward_connect4(struct bpf_sock_addr *ctx)
{
	const __u8 *to;
	__be16 to_port;
	__u8 dst[16];

	addr_from_ip4(dst, ctx->user_ip4);
	if (intercept_connect(ctx, dst, (__be16)ctx->user_port, AF_INET, &to, &to_port) < 0)
		return SYS_REJECT;
	if (to) {
		ctx->user_ip4 = ((const __u32 *)to)[3];
		ctx->user_port = to_port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int dbward_connect6(struct bpf_sock_addr *ctx)
{
	const __u8 *to;
	__be16 to_port;
	__u32 ip6[4];
	__u8 dst[16];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	addr_from_ip6(dst, ip6);
	if (intercept_connect(ctx, dst, (__be16)ctx->user_port, AF_INET6, &to, &to_port) < 0)
		return SYS_REJECT;
	if (to) {
		const __u32 *w = (const __u32 *)to;

		ctx->user_ip6[0] = w[0];
		ctx->user_ip6[1] = w[1];
		ctx->user_ip6[2] = w[2];
		ctx->user_ip6[3] = w[3];
		ctx->user_port = to_port;
	}
	return SYS_PROCEED;
}

static __always_inline void tuple_from_ops(struct intercept_tuple *t, struct bpf_sock_ops *skops)
{
	/* The agent's view: its peer is our local end, its local our remote. */
	if (skops->family == AF_INET) {
		addr_from_ip4(t->peer_addr, skops->local_ip4);
		addr_from_ip4(t->local_addr, skops->remote_ip4);
	} else {
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1],
			       skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1],
			       skops->remote_ip6[2], skops->remote_ip6[3] };

		addr_from_ip6(t->peer_addr, l);
		addr_from_ip6(t->local_addr, r);
	}
	t->peer_port = bpf_htons((__u16)skops->local_port);	/* host order in ctx */
	t->local_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
}

static __always_inline bool same_addr(const __u8 a[16], const __u8 b[16])
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* The socket is connected to the agent's address for pods (connections
 * to listen/listen6 come from the agent's own namespace: it finds those
 * by cookie, and loopback addresses exist in every namespace). */
static __always_inline bool at_agent(const struct intercept_tuple *t)
{
	return settings.has_pods && t->local_port == settings.pods_port &&
	       same_addr(t->local_addr, settings.pods_addr);
}

/*
 * The key is not to be trusted. If the note cannot be kept (the map is
 * full), the agent is told to trust no key at all for a while (unnoted_ns:
 * deleting the key's entry alone would not do, as its forger could publish
 * under it again), and the entry goes too.
 */
static __always_inline void collided(const struct intercept_tuple *t)
{
	__u64 now = bpf_ktime_get_ns();

	if (bpf_map_update_elem(&tuple_collided, t, &now, BPF_ANY) != 0) {
		*(volatile __u64 *)&unnoted_ns = now;
		bpf_map_delete_elem(&origin_by_tuple, t);
		count(INTERCEPT_CNT_TUPLE_UNNOTED);
	}
	count(INTERCEPT_CNT_TUPLE_COLLIDED);
}

/*
 * Once a socket is established to the agent's pods address: its record
 * goes under the 4-tuple, if it has one and is still connected where
 * connect4 sent it (a socket that disconnected and connected elsewhere
 * keeps its cookie and record), and if the key is free. Otherwise the key
 * is noted as collided: whatever another socket published under it is
 * not to be trusted.
 */
static __always_inline void origin_publish(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct intercept_tuple tuple = {};
	struct intercept_origin *found, origin;

	tuple_from_ops(&tuple, skops);
	if (!at_agent(&tuple))
		return;
	/* At close, its record goes (and its tuple entry, if it made one). */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	found = bpf_map_lookup_elem(&origin_by_cookie, &cookie);
	if (!found) {
		collided(&tuple);
		return;
	}
	/* An LRU slot can be reused while it is read: copy, then check. */
	__builtin_memcpy(&origin, found, sizeof(origin));
	if (origin.socket_cookie != cookie || !same_addr(tuple.local_addr, origin.via_addr) ||
	    tuple.local_port != origin.via_port) {
		collided(&tuple);
		return;
	}
	if (bpf_map_update_elem(&origin_by_tuple, &tuple, &origin, BPF_NOEXIST) == 0)
		count(INTERCEPT_CNT_TUPLE_SAVED);
	else
		collided(&tuple);
}

/*
 * At TCP close of a socket origin_publish asked state callbacks for: its
 * tuple entry goes, if it is its own (a later connection on the same
 * tuple must not find it), and so does its record (its connection is
 * over, and one that never reached the agent would otherwise wait for
 * the LRU).
 */
static __always_inline void origin_retract(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct intercept_tuple tuple = {};
	struct intercept_origin *held;

	if (skops->args[1] != BPF_TCP_CLOSE)
		return;
	tuple_from_ops(&tuple, skops);
	held = bpf_map_lookup_elem(&origin_by_tuple, &tuple);
	if (held && held->socket_cookie == cookie)
		bpf_map_delete_elem(&origin_by_tuple, &tuple);
	bpf_map_delete_elem(&origin_by_cookie, &cookie);
}

SEC("sockops")
int dbward_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		origin_publish(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		origin_retract(skops);
		break;
	}
	return SYS_PROCEED;
}

static __always_inline struct intercept_origin *origin_of_addr(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);

	return bpf_map_lookup_elem(&origin_by_cookie, &cookie);
}

/*
 * Only while the socket is still connected where it was sent: one that
 * disconnected (connect AF_UNSPEC) and connected elsewhere keeps its
 * cookie, and its record may not be gone yet.
 */
SEC("cgroup/getpeername4")
int dbward_getpeername4(struct bpf_sock_addr *ctx)
{
	struct intercept_origin *origin = origin_of_addr(ctx);

	if (origin && addr_is_v4mapped(origin->dst_addr) &&
	    ctx->user_ip4 == ((const __u32 *)origin->via_addr)[3] &&
	    (__be16)ctx->user_port == origin->via_port) {
		ctx->user_ip4 = ((const __u32 *)origin->dst_addr)[3];
		ctx->user_port = origin->dst_port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int dbward_getpeername6(struct bpf_sock_addr *ctx)
{
	struct intercept_origin *origin = origin_of_addr(ctx);
	const __u32 *w;

	if (!origin)
		return SYS_PROCEED;
	w = (const __u32 *)origin->via_addr;
	if (ctx->user_ip6[0] != w[0] || ctx->user_ip6[1] != w[1] || ctx->user_ip6[2] != w[2] ||
	    ctx->user_ip6[3] != w[3] || (__be16)ctx->user_port != origin->via_port)
		return SYS_PROCEED;
	w = (const __u32 *)origin->dst_addr;
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = origin->dst_port;
	return SYS_PROCEED;
}
