// SPDX-License-Identifier: GPL-2.0
/*
 * Bench only (tests/bench/lpipe.c): a socket-level shortcut for the local
 * hop between a client and a proxy on the same host. Both sockets of each
 * connection to `proxy_port` go into `socks`; when either sends, the
 * sk_msg program puts the bytes straight on the peer socket's receive
 * queue (BPF_F_INGRESS): no TCP segments, no loopback softirq, no ACKs.
 * The proxy still reads and writes every byte. docs/kernel-path.md says
 * what it measured and why the agent does not use it.
 *
 * A plain ingress redirect has no flow control: the bytes are charged to
 * the receiving socket but not held to its buffer, so a client that stops
 * reading lets the proxy push a whole result into kernel memory. Here the
 * sender falls back to TCP (whose window does hold it back) unless
 *   - every byte it sent over TCP had been read by the peer as of the
 *     peer's last send, so redirected bytes cannot overtake TCP ones (a
 *     read takes the redirected queue first, then the TCP queue), and
 *   - the peer held at most `limit` bytes at its last send, counting what
 *     was redirected to it since.
 * The peer's state is the snapshot it left in `dirs` at its own last send:
 * an sk_msg program cannot hold a reference to another socket. A send
 * that falls back spoils the snapshot it was judged by, so only one taken
 * after it can allow a redirect again (no 32-bit sequence can come round
 * to an old snapshot).
 *
 * Limits, fine for a bench, not for production: the memory bound is about
 * twice `limit` at worst (a snapshot and the redirect count are not read
 * or reset together, and a redirect reaches the peer's memory only after
 * this program has counted it), plus TCP's window; it relies on the
 * receiver's sk_rmem_alloc counting redirected bytes, as it does on this
 * kernel (6.18). The order holds for a socket read by one thread at a
 * time: a read blocked inside the TCP queue (MSG_WAITALL, SO_RCVLOWAT)
 * while another thread sends on the socket could be overtaken. IPv4 only.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define LPIPE_MAX_SOCKETS 8192

/* A socket as it sees itself: a connection's two sockets have mirrored keys. */
struct lpipe_key {
	__u64 netns;
	__u32 local_ip, remote_ip;
	__u32 local_port, remote_port;	/* host order */
};

/* One direction, sender to receiver, keyed by the sender's key. */
struct lpipe_dir {
	__u64 snapshot;	/* receiver's copied_seq (low 32 bits) and bytes held (high 32) */
	__u64 since;	/* bytes redirected after that snapshot */
};

enum lpipe_counter {
	LPIPE_REDIRECTED,
	LPIPE_TCP_BEHIND,	/* TCP bytes not yet read by the peer */
	LPIPE_TCP_FULL,		/* the peer holds `limit` bytes */
	LPIPE_TCP_NO_PEER,	/* the peer is not (or no longer) in `socks` */
	LPIPE_NCOUNTERS,
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, LPIPE_MAX_SOCKETS);
	__type(key, struct lpipe_key);
	__type(value, __u64);
} socks SEC(".maps");

/* Made when the client's socket connects, removed when either socket
 * closes; LRU only as a backstop. A direction without an entry never
 * redirects. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2 * LPIPE_MAX_SOCKETS);
	__type(key, struct lpipe_key);
	__type(value, struct lpipe_dir);
} dirs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LPIPE_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

const volatile __u32 proxy_port = 0;
const volatile __u32 limit = 256 * 1024;

/* Bytes held, in a spoiled snapshot: over any limit. */
#define SPOILED 0xffffffffu

static void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);

	if (n)
		(*n)++;
}

static __u64 snapshot_of(__u32 copied_seq, __u32 held)
{
	return (__u64)held << 32 | copied_seq;
}

static void mirror(const struct lpipe_key *k, struct lpipe_key *peer)
{
	peer->netns = k->netns;
	peer->local_ip = k->remote_ip;
	peer->remote_ip = k->local_ip;
	peer->local_port = k->remote_port;
	peer->remote_port = k->local_port;
}

SEC("sockops")
int lpipe_sockops(struct bpf_sock_ops *skops)
{
	struct lpipe_key k = {}, peer;
	struct lpipe_dir out = {}, in = {};
	__u32 op = skops->op;

	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB &&
	    op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	if (skops->family != 2 /* AF_INET */)
		return 1;
	k.netns = bpf_get_netns_cookie(skops);
	k.local_ip = skops->local_ip4;
	k.remote_ip = skops->remote_ip4;
	k.local_port = skops->local_port;
	k.remote_port = bpf_ntohl(skops->remote_port);
	if (k.local_port != proxy_port && k.remote_port != proxy_port)
		return 1;
	mirror(&k, &peer);
	if (op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == BPF_TCP_CLOSE) {
			bpf_map_delete_elem(&dirs, &k);
			bpf_map_delete_elem(&dirs, &peer);
		}
		return 1;
	}
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* The client's side: nothing sent either way yet, so each
		 * receiver has read up to where its sender starts. */
		out.snapshot = snapshot_of(skops->snd_nxt, 0);
		in.snapshot = snapshot_of(skops->rcv_nxt, 0);
		bpf_map_update_elem(&dirs, &k, &out, BPF_ANY);
		bpf_map_update_elem(&dirs, &peer, &in, BPF_ANY);
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	bpf_sock_hash_update(skops, &socks, &k, BPF_NOEXIST);
	return 1;
}

/* Falls back to TCP, and spoils the snapshot it was judged by. */
static int fall_back(struct lpipe_dir *out, __u64 snapshot, __u32 why)
{
	out->snapshot = snapshot_of((__u32)snapshot, SPOILED);
	count(why);
	return SK_PASS;
}

SEC("sk_msg")
int lpipe_msg(struct sk_msg_md *msg)
{
	struct lpipe_key me = {}, peer;
	struct lpipe_dir *in, *out;
	struct tcp_sock *tp;
	__u64 snapshot;

	if (!msg->sk)
		return SK_PASS;
	tp = bpf_skc_to_tcp_sock(msg->sk);
	if (!tp)
		return SK_PASS;
	me.netns = bpf_get_netns_cookie(msg);
	me.local_ip = msg->local_ip4;
	me.remote_ip = msg->remote_ip4;
	me.local_port = msg->local_port;
	me.remote_port = bpf_ntohl(msg->remote_port);
	mirror(&me, &peer);

	/* First, for the peer's sends: what this socket has read and holds. */
	in = bpf_map_lookup_elem(&dirs, &peer);
	if (in) {
		__sync_lock_test_and_set(&in->since, 0);
		in->snapshot = snapshot_of(tp->copied_seq,
					   tp->inet_conn.icsk_inet.sk.sk_backlog.rmem_alloc.counter);
	}

	out = bpf_map_lookup_elem(&dirs, &me);
	if (!out) {
		count(LPIPE_TCP_NO_PEER);
		return SK_PASS;
	}
	snapshot = out->snapshot;
	if ((__u32)snapshot != tp->write_seq)
		return fall_back(out, snapshot, LPIPE_TCP_BEHIND);
	if ((snapshot >> 32) + out->since + msg->size > limit)
		return fall_back(out, snapshot, LPIPE_TCP_FULL);
	if (bpf_msg_redirect_hash(msg, &socks, &peer, BPF_F_INGRESS) != SK_PASS)
		return fall_back(out, snapshot, LPIPE_TCP_NO_PEER);
	__sync_fetch_and_add(&out->since, msg->size);
	count(LPIPE_REDIRECTED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
