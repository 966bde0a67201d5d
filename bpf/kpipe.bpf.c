// SPDX-License-Identifier: GPL-2.0
/*
 * Bench only (tests/bench/kpipe.c): the floor of a sockmap kernel path.
 * Every byte that arrives on a socket in `socks` is redirected by the
 * kernel to the egress of its peer (`peer`: cookie to cookie), so a proxy
 * built on it never touches the data in user space. docs/kernel-path.md
 * says what it measured.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define KPIPE_MAX_SOCKETS 8192

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, KPIPE_MAX_SOCKETS);
	__type(key, __u64);	/* socket cookie */
	__type(value, __u64);	/* the socket (its fd, from user space) */
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KPIPE_MAX_SOCKETS);
	__type(key, __u64);	/* socket cookie */
	__type(value, __u64);	/* the cookie of the socket to send to */
} peer SEC(".maps");

SEC("sk_skb/stream_verdict")
int kpipe_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *to = bpf_map_lookup_elem(&peer, &cookie);
	__u64 key;

	if (!to)
		return SK_PASS;	/* user space reads it */
	key = *to;
	return bpf_sk_redirect_hash(skb, &socks, &key, 0);
}

char LICENSE[] SEC("license") = "GPL";
