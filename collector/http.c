#include "collector/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "collector/listener.h"
#include "collector/query.h"
#include "collector/web.h"
#include "common/log.h"

#define HTTP_MAX_CONNECTIONS 64
#define HTTP_IDLE_TIMEOUT_S 60

struct http {
	struct api api;
	char *const *hosts;
	size_t n_hosts;
	int listen_fd;
	struct MHD_Daemon *daemon;
};

/* --- responses ----------------------------------------------------------------- */

static enum MHD_Result send_response(struct MHD_Connection *conn, unsigned status,
				     struct MHD_Response *resp, const char *content_type)
{
	enum MHD_Result ok;

	if (!resp)
		return MHD_NO;		/* out of memory: MHD drops the connection */
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ok = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ok;
}

/* Hands @reply's body to MHD, which frees it once sent. */
static enum MHD_Result send_reply(struct MHD_Connection *conn, struct api_reply *reply)
{
	struct MHD_Response *resp;

	if (!reply->body)
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	else
		resp = MHD_create_response_from_buffer(reply->len, reply->body,
						       MHD_RESPMEM_MUST_FREE);
	if (!resp)
		free(reply->body);
	return send_response(conn, reply->status, resp, "application/json");
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status,
				  const char *message)
{
	struct api_reply reply;

	api_error(&reply, status, message);
	return send_reply(conn, &reply);
}

/* Inline script and style only; nothing from elsewhere, not even in a frame. */
#define WEB_CSP "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; " \
		"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; " \
		"frame-ancestors 'none'"

static enum MHD_Result send_page(struct MHD_Connection *conn)
{
	size_t len;
	const char *page = web_page(&len);
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)page, MHD_RESPMEM_PERSISTENT);

	if (resp) {
		MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP);
		MHD_add_response_header(resp, "X-Frame-Options", "DENY");
		MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
	}
	return send_response(conn, MHD_HTTP_OK, resp, "text/html; charset=utf-8");
}

/* --- the Host header ---------------------------------------------------------- */

static bool is_port(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= 5 && strspn(s, "0123456789") == n;
}

bool http_host_allowed(const char *host, char *const *hosts, size_t n_hosts)
{
	char name[256];
	const char *end, *colon;
	struct in6_addr a6;
	struct in_addr a4;
	size_t len;

	if (!host)
		return false;
	if (host[0] == '[') {
		if (!(end = strchr(host, ']')) || (end[1] && (end[1] != ':' || !is_port(end + 2))))
			return false;
		len = (size_t)(end - host - 1);
		if (len >= sizeof(name))
			return false;
		memcpy(name, host + 1, len);
		name[len] = '\0';
		return inet_pton(AF_INET6, name, &a6) == 1;
	}
	colon = strchr(host, ':');
	if (colon && (strchr(colon + 1, ':') || !is_port(colon + 1)))
		return false;
	len = colon ? (size_t)(colon - host) : strlen(host);
	if (len == 0 || len >= sizeof(name))
		return false;
	memcpy(name, host, len);
	name[len] = '\0';
	if (inet_pton(AF_INET, name, &a4) == 1 || strcasecmp(name, "localhost") == 0)
		return true;
	for (size_t i = 0; i < n_hosts; i++) {
		if (strcasecmp(name, hosts[i]) == 0)
			return true;
	}
	return false;
}

/* --- requests ------------------------------------------------------------------ */

static enum MHD_Result collect_param(void *arg, enum MHD_ValueKind kind, const char *key,
				     const char *value)
{
	(void)kind;
	query_add(arg, key, value);
	return MHD_YES;
}

/* The decoded path may hold any byte: logs get a printable, bounded copy. */
static void shown_path(const char *path, char *out, size_t len)
{
	size_t i;

	for (i = 0; path[i] && i + 1 < len; i++)
		out[i] = path[i] > 0x20 && path[i] < 0x7f ? path[i] : '?';
	out[i] = '\0';
}

static enum MHD_Result serve_api(struct http *h, struct MHD_Connection *conn, const char *method,
				  const char *path)
{
	struct query q = { .n = 0 };
	struct api_reply reply;
	char shown[96];

	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_param, &q);
	api_handle(&h->api, path, &q, &reply);
	if (log_threshold >= LOG_LEVEL_DEBUG) {
		shown_path(path, shown, sizeof(shown));
		log_debug("http: %s %s%s -> %u", method, API_PREFIX, shown, reply.status);
	}
	return send_reply(conn, &reply);
}

/*
 * MHD calls this once when the headers are in, then again once the body
 * is. Other methods are refused at the first call, before any body is
 * read: every endpoint is a GET, so a body is never wanted. A GET is
 * answered at the second call, which keeps the connection reusable.
 */
static enum MHD_Result http_on_request(void *cls, struct MHD_Connection *conn, const char *url,
				       const char *method, const char *version,
				       const char *upload_data, size_t *upload_data_size,
				       void **state)
{
	static int headers_seen;
	struct http *h = cls;

	(void)version;
	(void)upload_data;
	if (!http_host_allowed(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
							    MHD_HTTP_HEADER_HOST),
			       h->hosts, h->n_hosts))
		return send_error(conn, MHD_HTTP_FORBIDDEN, "this Host is not served: use an IP "
				  "address, localhost, or a name listed in http_hosts");
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return send_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
				  "method not allowed: the API is read-only (GET)");
	if (!*state) {
		*state = &headers_seen;
		return MHD_YES;
	}
	if (*upload_data_size) {
		*upload_data_size = 0;	/* a GET with a body: ignored */
		return MHD_YES;
	}
	if (strcmp(url, "/") == 0)
		return send_page(conn);
	if (strncmp(url, API_PREFIX, strlen(API_PREFIX)) == 0)
		return serve_api(h, conn, method, url + strlen(API_PREFIX));
	return send_error(conn, MHD_HTTP_NOT_FOUND, "no such page (the API is under /api/v1/)");
}

static void http_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];
	size_t n;

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_warn("http: %s", line);
}

/* --- start and stop ------------------------------------------------------------- */

int http_start(const struct http_opts *opts, struct http **out, char *err, size_t errlen)
{
	struct http *h = calloc(1, sizeof(*h));
	char addr[NETADDR_STRLEN];
	int rc;

	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	h->api = opts->api;
	h->hosts = opts->hosts;
	h->n_hosts = opts->n_hosts;
	rc = listener_open(&opts->listen, &h->listen_fd);
	if (rc < 0) {
		netaddr_format(&opts->listen, addr, sizeof(addr));
		snprintf(err, errlen, "http %s: %s", addr, strerror(-rc));
		free(h);
		return -1;
	}
	h->daemon = MHD_start_daemon(
		MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
		MHD_USE_ERROR_LOG,
		0, NULL, NULL, http_on_request, h,
		MHD_OPTION_EXTERNAL_LOGGER, http_log, NULL,
		MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
		MHD_OPTION_END);
	if (!h->daemon) {
		snprintf(err, errlen, "http: cannot start the server (libmicrohttpd)");
		close(h->listen_fd);
		free(h);
		return -1;
	}
	*out = h;
	return 0;
}

void http_address(const struct http *h, char *buf, size_t len)
{
	listener_address(h->listen_fd, buf, len);
}

/* MHD closes the listening socket it was given. */
void http_stop(struct http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->daemon);
	free(h);
}
