#include "netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

bool netaddr_ip_is_v4(const uint8_t ip[16])
{
	return memcmp(ip, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0;
}

bool netaddr_is_v4(const struct netaddr *a)
{
	return netaddr_ip_is_v4(a->ip);
}

static int parse_ip(const char *text, uint8_t ip[16], bool *is_v4)
{
	struct in_addr v4;

	if (inet_pton(AF_INET, text, &v4) == 1) {
		memcpy(ip, v4mapped_prefix, sizeof(v4mapped_prefix));
		memcpy(ip + 12, &v4, 4);
		*is_v4 = true;
		return 0;
	}
	if (inet_pton(AF_INET6, text, ip) == 1) {
		*is_v4 = false;
		return 0;
	}
	return -EINVAL;
}

static int parse_ulong(const char *text, unsigned long max, unsigned long *out)
{
	char *end;

	if (*text < '0' || *text > '9')
		return -EINVAL;
	errno = 0;
	*out = strtoul(text, &end, 10);
	if (errno || *end || *out > max)
		return -EINVAL;
	return 0;
}

int netaddr_parse(const char *text, struct netaddr *out)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	unsigned long port;
	size_t hostlen;
	bool is_v4;

	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		hostlen = (size_t)(close - text - 1);
		if (hostlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, text + 1, hostlen);
		host[hostlen] = '\0';
		colon = close + 1;
		if (parse_ip(host, out->ip, &is_v4) < 0 || is_v4)
			return -EINVAL;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return -EINVAL;
		hostlen = (size_t)(colon - text);
		if (hostlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, text, hostlen);
		host[hostlen] = '\0';
		if (parse_ip(host, out->ip, &is_v4) < 0 || !is_v4)
			return -EINVAL;
	}
	if (parse_ulong(colon + 1, 65535, &port) < 0 || port == 0)
		return -EINVAL;
	out->port = (uint16_t)port;
	return 0;
}

int netcidr_parse(const char *text, struct netcidr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hostlen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned long len;
	bool is_v4;

	if (hostlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, hostlen);
	host[hostlen] = '\0';
	if (parse_ip(host, out->ip, &is_v4) < 0)
		return -EINVAL;
	if (!slash)
		len = is_v4 ? 32 : 128;
	else if (parse_ulong(slash + 1, is_v4 ? 32 : 128, &len) < 0)
		return -EINVAL;
	out->prefixlen = (uint8_t)(is_v4 ? 96 + len : len);
	/* Clear host bits so equal prefixes compare equal. */
	for (unsigned bit = out->prefixlen; bit < 128; bit++)
		out->ip[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
	return 0;
}

bool netcidr_contains(const struct netcidr *c, const uint8_t ip[16])
{
	unsigned full = c->prefixlen / 8, rest = c->prefixlen % 8;

	if (memcmp(c->ip, ip, full) != 0)
		return false;
	if (!rest)
		return true;
	uint8_t mask = (uint8_t)(0xff00u >> rest);
	return (c->ip[full] & mask) == (ip[full] & mask);
}

void netaddr_format_ip(const uint8_t ip[16], char *buf, size_t len)
{
	if (netaddr_ip_is_v4(ip))
		inet_ntop(AF_INET, ip + 12, buf, (socklen_t)len);
	else
		inet_ntop(AF_INET6, ip, buf, (socklen_t)len);
}

void netaddr_format(const struct netaddr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	netaddr_format_ip(a->ip, ip, sizeof(ip));
	if (netaddr_is_v4(a))
		snprintf(buf, len, "%s:%u", ip, a->port);
	else
		snprintf(buf, len, "[%s]:%u", ip, a->port);
}

socklen_t netaddr_to_sockaddr(const struct netaddr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (netaddr_is_v4(a)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(a->port);
		memcpy(&sin->sin_addr, a->ip + 12, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(a->port);
	memcpy(&sin6->sin6_addr, a->ip, 16);
	return sizeof(*sin6);
}

int netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *out)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memcpy(out->ip, v4mapped_prefix, sizeof(v4mapped_prefix));
		memcpy(out->ip + 12, &sin->sin_addr, 4);
		out->port = ntohs(sin->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		memcpy(out->ip, &sin6->sin6_addr, 16);
		out->port = ntohs(sin6->sin6_port);
		return 0;
	}
	return -EAFNOSUPPORT;
}
