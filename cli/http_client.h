/*
 * The CLI's one way to the collector: an HTTP GET of its JSON API with
 * libcurl, bounded in time and size. Errors come back as text for people:
 * "cannot reach the collector at URL: ..." or the API's own {"error"}.
 */
#ifndef DBWARD_CLI_HTTP_CLIENT_H
#define DBWARD_CLI_HTTP_CLIENT_H

#include <stddef.h>

#include <jansson.h>

/* The CLI's exit codes, shared by every verb. */
enum cli_exit {
	CLI_EXIT_OK = 0,
	CLI_EXIT_INVALID = 1,		/* verification failed, something invalid */
	CLI_EXIT_FAIL = 2,		/* usage, connection or HTTP error */
};

#define CLI_ERR_LEN 512
#define CLI_DEFAULT_COLLECTOR "http://127.0.0.1:7080"

struct cli_http_response {
	long status;
	char *body;			/* NUL-terminated; owned */
	size_t len;
};

/* Must run once before any request (curl_global_init), and its pair at exit. */
int cli_http_init(void);
void cli_http_cleanup(void);

/*
 * GETs @base_url (http:// or https://, trailing '/' ignored) followed by
 * @path ("/api/v1/..."). Any HTTP status is a response: 0 with @out
 * filled. -1 with @err when the collector could not be reached.
 */
int cli_http_get(const char *base_url, const char *path, struct cli_http_response *out,
		 char *err, size_t errlen);
void cli_http_response_release(struct cli_http_response *r);

/*
 * For a response that is not 200: "collector answered HTTP 404: <the
 * API's error text>" (or the start of the body when it is not JSON).
 */
void cli_http_status_error(const struct cli_http_response *r, char *err, size_t errlen);

/* GET and parse a JSON object. 0 with *@out owned by the caller, or -1
 * with @err (unreachable, HTTP error, not JSON). */
int cli_http_get_json(const char *base_url, const char *path, json_t **out, char *err,
		      size_t errlen);

#endif
