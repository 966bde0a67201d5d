#include "cli/http_client.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define CONNECT_TIMEOUT_S 10L
#define TOTAL_TIMEOUT_S 300L		/* verify walks the whole ledger */
#define MAX_BODY (256u << 20)		/* 10000 events a page fit well within */
#define MAX_URL 4096

struct body {
	char *data;
	size_t len;
	size_t cap;
	bool too_big;
};

int cli_http_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void cli_http_cleanup(void)
{
	curl_global_cleanup();
}

void cli_http_response_release(struct cli_http_response *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;

	if (n > MAX_BODY - b->len) {
		b->too_big = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		char *grown;

		while (cap < b->len + n + 1)
			cap *= 2;
		if (!(grown = realloc(b->data, cap)))
			return 0;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* "@base@path" with the base's trailing slashes dropped. */
static int join_url(const char *base, const char *path, char *url, size_t len, char *err,
		    size_t errlen)
{
	size_t n = strlen(base);
	int w;

	if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
		snprintf(err, errlen, "collector URL '%s' is not http:// or https://", base);
		return -1;
	}
	while (n > 0 && base[n - 1] == '/')
		n--;
	w = snprintf(url, len, "%.*s%s", (int)n, base, path);
	if (w < 0 || (size_t)w >= len) {
		snprintf(err, errlen, "collector URL too long");
		return -1;
	}
	return 0;
}

static void set_options(CURL *curl, const char *url, struct body *b, char *curl_err)
{
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, TOTAL_TIMEOUT_S);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "dbward-cli");
	curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
}

int cli_http_get(const char *base_url, const char *path, struct cli_http_response *out,
		 char *err, size_t errlen)
{
	char url[MAX_URL], curl_err[CURL_ERROR_SIZE] = "";
	struct body b = { 0 };
	CURL *curl = NULL;
	CURLcode rc;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	if (join_url(base_url, path, url, sizeof(url), err, errlen) < 0)
		return -1;
	if (!(curl = curl_easy_init())) {
		snprintf(err, errlen, "cannot reach the collector at %s: curl init failed",
			 base_url);
		return -1;
	}
	set_options(curl, url, &b, curl_err);
	rc = curl_easy_perform(curl);
	if (b.too_big) {
		snprintf(err, errlen, "the collector at %s sent more than %u MiB", base_url,
			 MAX_BODY >> 20);
		goto cleanup;
	}
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "cannot reach the collector at %s: %s", base_url,
			 curl_err[0] ? curl_err : curl_easy_strerror(rc));
		goto cleanup;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
	out->body = b.data ? b.data : strdup("");
	out->len = b.len;
	b.data = NULL;
	if (!out->body) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	ret = 0;
cleanup:
	free(b.data);
	curl_easy_cleanup(curl);
	return ret;
}

/* The first line of a non-JSON body, printable characters only. */
static void body_excerpt(const char *body, char *out, size_t len)
{
	size_t n = 0;

	for (const char *p = body; *p && *p != '\n' && n + 1 < len && n < 200; p++)
		out[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
	out[n] = '\0';
}

void cli_http_status_error(const struct cli_http_response *r, char *err, size_t errlen)
{
	json_t *root = json_loadb(r->body, r->len, 0, NULL);
	const char *msg = json_string_value(json_object_get(root, "error"));
	char excerpt[256];

	if (!msg) {
		body_excerpt(r->body ? r->body : "", excerpt, sizeof(excerpt));
		msg = excerpt;
	}
	snprintf(err, errlen, "collector answered HTTP %ld: %s", r->status,
		 msg[0] ? msg : "(no error text)");
	json_decref(root);
}

int cli_http_get_json(const char *base_url, const char *path, json_t **out, char *err,
		      size_t errlen)
{
	struct cli_http_response r;
	json_error_t jerr;
	int ret = -1;

	*out = NULL;
	if (cli_http_get(base_url, path, &r, err, errlen) < 0)
		return -1;
	if (r.status != 200) {
		cli_http_status_error(&r, err, errlen);
		goto cleanup;
	}
	*out = json_loadb(r.body, r.len, 0, &jerr);
	if (!*out || !json_is_object(*out)) {
		snprintf(err, errlen, "the collector at %s sent no JSON object for %s: %s",
			 base_url, path, *out ? "not an object" : jerr.text);
		json_decref(*out);
		*out = NULL;
		goto cleanup;
	}
	ret = 0;
cleanup:
	cli_http_response_release(&r);
	return ret;
}
