/*
 * Network addresses kept in one shape for both families: 16 bytes, IPv4 as
 * the v4-mapped IPv6 address ::ffff:a.b.c.d, port in host byte order. This
 * is the shape the BPF maps use too (bpf/intercept.h).
 */
#ifndef DBWARD_COMMON_NETADDR_H
#define DBWARD_COMMON_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct netaddr {
	uint8_t ip[16];
	uint16_t port;
};

/* A prefix in the same 128-bit space: an IPv4 /8 is a prefix of 96 + 8. */
struct netcidr {
	uint8_t ip[16];
	uint8_t prefixlen;
};

/* "[::1]:5432" or "[...]:5432" for IPv6, "a.b.c.d:5432" otherwise. */
#define NETADDR_STRLEN 64

bool netaddr_is_v4(const struct netaddr *a);
bool netaddr_ip_is_v4(const uint8_t ip[16]);

/* Parses "a.b.c.d:port" or "[v6]:port". Returns 0 or -EINVAL. */
int netaddr_parse(const char *text, struct netaddr *out);
/* Parses "a.b.c.d/len", "v6/len" or a bare address (a host prefix). */
int netcidr_parse(const char *text, struct netcidr *out);
bool netcidr_contains(const struct netcidr *c, const uint8_t ip[16]);

void netaddr_format(const struct netaddr *a, char *buf, size_t len);
void netaddr_format_ip(const uint8_t ip[16], char *buf, size_t len);

/* To a sockaddr of the address's own family (IPv4 for a v4-mapped one). */
socklen_t netaddr_to_sockaddr(const struct netaddr *a, struct sockaddr_storage *ss);
/* From AF_INET or AF_INET6. Returns 0 or -EAFNOSUPPORT. */
int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out);

#endif
