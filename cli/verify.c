#include "cli/verify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cli/http_client.h"
#include "common/clock.h"
#include "common/encoding.h"
#include "common/event_json.h"
#include "common/json.h"

#define MAX_KEY_FILE (64u << 10)
#define MAX_RECEIPT_FILE (64u << 20)
#define KEY_ID_HEX (2 * SIGNING_KEY_ID_LEN + 1)

static void key_id_hex(const uint8_t id[SIGNING_KEY_ID_LEN], char out[KEY_ID_HEX])
{
	hex_encode(id, SIGNING_KEY_ID_LEN, out);
}

/* Reads a whole file, NUL-terminated, at most @max bytes. 0 or -1 with @err. */
static int read_file(const char *path, size_t max, char **out, size_t *len, char *err,
		     size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;
	int ret = -1;

	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	if (!(buf = malloc(max + 1))) {
		snprintf(err, errlen, "out of memory");
		goto cleanup;
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f) || n > max) {
		snprintf(err, errlen, "cannot read %s: %s", path,
			 ferror(f) ? strerror(errno) : "file too large");
		goto cleanup;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	buf = NULL;
	ret = 0;
cleanup:
	free(buf);
	fclose(f);
	return ret;
}

int cli_key_load(const char *path, struct verify_key **out, char *err, size_t errlen)
{
	char *pem = NULL, why[SIGNING_ERR_LEN];
	size_t len;
	int ret = -1;

	if (read_file(path, MAX_KEY_FILE, &pem, &len, err, errlen) < 0)
		return -1;
	if (verify_key_from_pem(pem, len, out, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", path, why);
		goto cleanup;
	}
	ret = 0;
cleanup:
	free(pem);
	return ret;
}

/* --- the tree head ------------------------------------------------------- */

/* A non-negative integer, or a string of digits (u64 beyond JSON's reach). */
static int json_u64(const json_t *v, uint64_t *out)
{
	const char *s = json_string_value(v);
	char *end;

	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return *end || errno ? -1 : 0;
}

static int bad_field(const char *name, char *err, size_t errlen)
{
	snprintf(err, errlen, "tree head: \"%s\" missing or malformed", name);
	return -1;
}

/* Exactly @n bytes, in the strict spellings of common/encoding.h: 0 or -1. */
static int json_hex(const json_t *obj, const char *key, uint8_t *out, size_t n)
{
	const json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? hex_decode(json_string_value(v), json_string_length(v), out, n)
				 : -1;
}

static int json_b64(const json_t *obj, const char *key, uint8_t *out, size_t n)
{
	const json_t *v = json_object_get(obj, key);
	uint8_t buf[B64_LEN(SIGNING_SIG_LEN)];

	if (!json_is_string(v) || json_string_length(v) != B64_LEN(n) || B64_LEN(n) > sizeof(buf) ||
	    b64_decode(json_string_value(v), json_string_length(v), buf) != (long)n)
		return -1;
	memcpy(out, buf, n);
	return 0;
}

int cli_tree_head_parse(const json_t *obj, struct signed_tree_head *h,
			uint8_t pub[SIGNING_PUB_LEN], char *err, size_t errlen)
{
	memset(h, 0, sizeof(*h));
	if (json_u64(json_object_get(obj, "size"), &h->size) < 0)
		return bad_field("size", err, errlen);
	if (json_hex(obj, "root", h->root, MERKLE_HASH_LEN) < 0)
		return bad_field("root", err, errlen);
	if (json_u64(json_object_get(obj, "ts"), &h->ts) < 0)
		return bad_field("ts", err, errlen);
	if (json_hex(obj, "key_id", h->key_id, SIGNING_KEY_ID_LEN) < 0)
		return bad_field("key_id", err, errlen);
	if (json_b64(obj, "signature", h->signature, SIGNING_SIG_LEN) < 0)
		return bad_field("signature", err, errlen);
	if (pub && json_b64(obj, "public_key", pub, SIGNING_PUB_LEN) < 0)
		return bad_field("public_key", err, errlen);
	return 0;
}

/* The head checked against @pinned: its key id first, then the signature. */
static int head_check_pinned(const struct signed_tree_head *h, const struct verify_key *pinned,
			     char *err, size_t errlen)
{
	uint8_t raw[SIGNING_PUB_LEN], id[SIGNING_KEY_ID_LEN];
	char want[KEY_ID_HEX], got[KEY_ID_HEX];

	verify_key_raw(pinned, raw);
	signing_key_id(raw, id);
	if (memcmp(id, h->key_id, SIGNING_KEY_ID_LEN) != 0) {
		key_id_hex(id, want);
		key_id_hex(h->key_id, got);
		snprintf(err, errlen, "signed by key %s, not the pinned key %s", got, want);
		return -1;
	}
	if (!tree_head_verify(pinned, h)) {
		key_id_hex(id, want);
		snprintf(err, errlen, "the signature does not verify with the pinned key %s",
			 want);
		return -1;
	}
	return 0;
}

static int fetch_head(const char *url, struct signed_tree_head *h, uint8_t pub[SIGNING_PUB_LEN],
		      json_t **raw, char *err, size_t errlen)
{
	json_t *obj;

	if (cli_http_get_json(url, "/api/v1/tree-head", &obj, err, errlen) < 0)
		return -1;
	if (cli_tree_head_parse(obj, h, pub, err, errlen) < 0) {
		json_decref(obj);
		return -1;
	}
	if (raw)
		*raw = obj;
	else
		json_decref(obj);
	return 0;
}

/* The tree head, its signature checked with @trusted: CLI_EXIT_OK with @h
 * filled, or the exit code once it said why (as `dbward @verb`). */
static int fetch_trusted_head(const char *url, const struct verify_key *trusted,
			      const char *verb, struct signed_tree_head *h)
{
	char err[CLI_ERR_LEN];

	if (fetch_head(url, h, NULL, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward %s: %s\n", verb, err);
		return CLI_EXIT_FAIL;
	}
	if (head_check_pinned(h, trusted, err, sizeof(err)) < 0) {
		printf("tree head signature INVALID: %s\n", err);
		return CLI_EXIT_INVALID;
	}
	return CLI_EXIT_OK;
}

/* --- verify -------------------------------------------------------------- */

static const char *text_or(const json_t *obj, const char *key, char *buf, size_t len,
			   const char *dflt)
{
	const json_t *v = json_object_get(obj, key);

	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	}
	return dflt;
}

void cli_problem_line(const json_t *p, char *out, size_t len)
{
	char id[24], epoch[24], seq[24];

	snprintf(out, len, "event %s (agent %s, epoch %s, seq %s): %s",
		 text_or(p, "event_id", id, sizeof(id), "?"),
		 text_or(p, "agent_id", NULL, 0, "?"),
		 text_or(p, "epoch", epoch, sizeof(epoch), "?"),
		 text_or(p, "seq", seq, sizeof(seq), "?"),
		 text_or(p, "what", NULL, 0, "(not said)"));
}

static int64_t count_of(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* Prints the collector's verdict on the ledger. 0 intact, -1 not. */
static int report_ledger(const json_t *res)
{
	const json_t *problems = json_object_get(res, "problems");
	bool ok = json_is_true(json_object_get(res, "ok"));
	size_t i, n = json_array_size(problems);
	json_t *p;
	char line[1024];

	json_array_foreach(problems, i, p) {
		cli_problem_line(p, line, sizeof(line));
		printf("%s\n", line);
	}
	if (ok && n == 0) {
		printf("ledger intact: %" PRId64 " events, tree size %" PRId64 ", %" PRId64
		       " agents\n", count_of(res, "events"), count_of(res, "tree_size"),
		       count_of(res, "agents"));
		return 0;
	}
	fprintf(stderr, "ledger NOT intact: %zu problem%s\n", n, n == 1 ? "" : "s");
	return -1;
}

/* Fetches the tree head and checks it with @pinned: a cli_exit code. */
static int check_head(const char *url, const struct verify_key *pinned)
{
	struct signed_tree_head h;
	char when[CLOCK_RFC3339_LEN], id[KEY_ID_HEX];
	int code = fetch_trusted_head(url, pinned, "verify", &h);

	if (code != CLI_EXIT_OK)
		return code;
	clock_rfc3339(h.ts, when, 0);
	key_id_hex(h.key_id, id);
	printf("tree head of size %" PRIu64 " signed at %s by the pinned key %s\n", h.size, when,
	       id);
	return CLI_EXIT_OK;
}

int cli_verify_run(const char *url, const char *key_path)
{
	struct verify_key *pinned = NULL;
	char err[CLI_ERR_LEN];
	json_t *res = NULL;
	int code = CLI_EXIT_FAIL, head_code;

	if ((key_path && cli_key_load(key_path, &pinned, err, sizeof(err)) < 0) ||
	    cli_http_get_json(url, "/api/v1/verify", &res, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward verify: %s\n", err);
		goto cleanup;
	}
	code = report_ledger(res) < 0 ? CLI_EXIT_INVALID : CLI_EXIT_OK;
	/* A failed check outranks an intact ledger; not reaching it outranks both. */
	if (pinned && (head_code = check_head(url, pinned)) > code)
		code = head_code;
cleanup:
	json_decref(res);
	verify_key_free(pinned);
	return code;
}

/* --- tree-head ----------------------------------------------------------- */

static void print_head(const json_t *raw, const struct signed_tree_head *h,
		       const uint8_t pub[SIGNING_PUB_LEN])
{
	char root[2 * MERKLE_HASH_LEN + 1], id[KEY_ID_HEX], when[CLOCK_RFC3339_LEN];
	uint8_t pub_id[SIGNING_KEY_ID_LEN];

	hex_encode(h->root, MERKLE_HASH_LEN, root);
	key_id_hex(h->key_id, id);
	clock_rfc3339(h->ts, when, 9);
	signing_key_id(pub, pub_id);
	printf("tree size   %" PRIu64 "\n", h->size);
	printf("root        %s\n", root);
	printf("signed at   %s (%" PRIu64 ")\n", when, h->ts);
	printf("key id      %s\n", id);
	printf("signature   %s\n", json_string_value(json_object_get(raw, "signature")));
	printf("public key  %s%s\n", json_string_value(json_object_get(raw, "public_key")),
	       memcmp(pub_id, h->key_id, SIGNING_KEY_ID_LEN) ? " (NOT the key of key id)" : "");
}

int cli_tree_head_run(const char *url, const char *key_path, bool json)
{
	struct verify_key *pinned = NULL;
	struct signed_tree_head h;
	uint8_t pub[SIGNING_PUB_LEN];
	char err[CLI_ERR_LEN];
	json_t *raw = NULL;
	int ret = CLI_EXIT_FAIL;

	if ((key_path && cli_key_load(key_path, &pinned, err, sizeof(err)) < 0) ||
	    fetch_head(url, &h, pub, &raw, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward tree-head: %s\n", err);
		goto cleanup;
	}
	if (json) {
		json_dumpf(raw, stdout, JSON_COMPACT);
		putchar('\n');
	} else {
		print_head(raw, &h, pub);
	}
	ret = CLI_EXIT_OK;
	if (pinned && head_check_pinned(&h, pinned, err, sizeof(err)) < 0) {
		fprintf(stderr, "tree head signature INVALID: %s\n", err);
		ret = CLI_EXIT_INVALID;
	} else if (pinned) {
		fprintf(stderr, "signature valid for the pinned key\n");
	}
cleanup:
	verify_key_free(pinned);
	json_decref(raw);
	return ret;
}

/* --- receipts ------------------------------------------------------------ */

int cli_receipt_check(const char *text, size_t len, const struct verify_key *pinned,
		      struct receipt *r, char *err, size_t errlen)
{
	char why[CLI_ERR_LEN];

	memset(r, 0, sizeof(*r));
	if (receipt_from_json(text, len, r, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	if (receipt_verify(r, pinned, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s", why);
		return -1;
	}
	return 0;
}

void cli_receipt_summary(const struct receipt *r, char *out, size_t len)
{
	char when[CLOCK_RFC3339_LEN], id[KEY_ID_HEX];

	clock_rfc3339(r->head.ts, when, 0);
	key_id_hex(r->head.key_id, id);
	snprintf(out, len,
		 "receipt valid: event %" PRIu64 " is leaf %" PRIu64 " of a tree of size %" PRIu64
		 " signed at %s by key %s",
		 r->event_id, r->leaf_index, r->head.size, when, id);
}

static void warn_unpinned(const struct receipt *r)
{
	uint8_t id[SIGNING_KEY_ID_LEN];
	char hex[KEY_ID_HEX];

	signing_key_id(r->public_key, id);
	key_id_hex(id, hex);
	fprintf(stderr,
		"warning: the key was not pinned: checked against the receipt's own key %s; "
		"pass --key ledger.pub to check it is the collector's\n", hex);
}

/* The event of a valid receipt, from its own bytes, as a JSON line. */
static int print_event(const struct receipt *r, char *err, size_t errlen)
{
	struct jsonbuf jb;
	int ret = -1;

	jsonbuf_init(&jb);
	if (event_json_line(&jb, r->event, r->event_len) < 0) {
		snprintf(err, errlen, "the event bytes are not a dbward.v1.Event");
		goto cleanup;
	}
	fwrite(jb.data, 1, jb.len, stdout);
	ret = 0;
cleanup:
	jsonbuf_release(&jb);
	return ret;
}

/* --key and the receipt in @path, checked offline: CLI_EXIT_OK, or the
 * exit code once it said why (as `dbward @verb`). @pinned and @r are the
 * caller's to free either way. */
static int load_receipt(const char *verb, const char *path, const char *key_path,
			struct verify_key **pinned, struct receipt *r)
{
	char *text = NULL, err[CLI_ERR_LEN];
	size_t len;
	int ret = CLI_EXIT_FAIL;

	if ((key_path && cli_key_load(key_path, pinned, err, sizeof(err)) < 0) ||
	    read_file(path, MAX_RECEIPT_FILE, &text, &len, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward %s: %s\n", verb, err);
		goto cleanup;
	}
	ret = CLI_EXIT_INVALID;
	if (cli_receipt_check(text, len, *pinned, r, err, sizeof(err)) < 0) {
		printf("receipt INVALID: %s\n", err);
		goto cleanup;
	}
	ret = CLI_EXIT_OK;
cleanup:
	free(text);
	return ret;
}

int cli_verify_receipt_run(const char *path, const char *key_path)
{
	struct verify_key *pinned = NULL;
	struct receipt r = { 0 };
	char err[CLI_ERR_LEN], line[CLI_ERR_LEN];
	int ret = load_receipt("verify-receipt", path, key_path, &pinned, &r);

	if (ret != CLI_EXIT_OK)
		goto cleanup;
	if (print_event(&r, err, sizeof(err)) < 0) {
		printf("receipt INVALID: %s\n", err);
		ret = CLI_EXIT_INVALID;
		goto cleanup;
	}
	if (!pinned)
		warn_unpinned(&r);
	cli_receipt_summary(&r, line, sizeof(line));
	printf("%s\n", line);
cleanup:
	receipt_release(&r);
	verify_key_free(pinned);
	return ret;
}

static int parse_event_id(const char *text, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(text, &end, 10);
	return *text >= '0' && *text <= '9' && !*end && !errno && *out > 0 ? 0 : -1;
}

/* Writes @len bytes to @path (NULL: stdout), with a final newline. */
static int write_out(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
	FILE *f = path ? fopen(path, "w") : stdout;
	bool ok;

	if (!f) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	ok = fwrite(data, 1, len, f) == len;
	if (ok && (len == 0 || data[len - 1] != '\n'))
		ok = fputc('\n', f) != EOF;
	ok = (path ? fclose(f) : fflush(f)) == 0 && ok;
	if (!ok)
		snprintf(err, errlen, "cannot write %s: %s", path ? path : "stdout",
			 strerror(errno));
	return ok ? 0 : -1;
}

/* Fetches the receipt's text. 0 or -1 with @err. */
static int fetch_receipt(const char *url, uint64_t id, struct cli_http_response *res,
			 char *err, size_t errlen)
{
	char path[64];

	snprintf(path, sizeof(path), "/api/v1/receipts/%" PRIu64, id);
	if (cli_http_get(url, path, res, err, errlen) < 0)
		return -1;
	if (res->status != 200) {
		cli_http_status_error(res, err, errlen);
		cli_http_response_release(res);
		return -1;
	}
	return 0;
}

int cli_receipt_run(const char *url, const char *event_id, const char *out_path,
		    const char *key_path)
{
	struct cli_http_response res = { 0 };
	struct verify_key *pinned = NULL;
	struct receipt r = { 0 };
	char err[CLI_ERR_LEN];
	uint64_t id;
	int ret = CLI_EXIT_FAIL;

	if (parse_event_id(event_id, &id) < 0) {
		fprintf(stderr, "dbward receipt: '%s' is not an event id\n", event_id);
		return CLI_EXIT_FAIL;
	}
	if ((key_path && cli_key_load(key_path, &pinned, err, sizeof(err)) < 0) ||
	    fetch_receipt(url, id, &res, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward receipt: %s\n", err);
		goto cleanup;
	}
	ret = CLI_EXIT_INVALID;
	if (cli_receipt_check(res.body, res.len, pinned, &r, err, sizeof(err)) < 0) {
		fprintf(stderr, "receipt INVALID: %s (not written)\n", err);
		goto cleanup;
	}
	if (r.event_id != id) {
		fprintf(stderr, "receipt INVALID: it is for event %" PRIu64 ", not %" PRIu64
			" (not written)\n", r.event_id, id);
		goto cleanup;
	}
	if (!pinned)
		warn_unpinned(&r);
	ret = CLI_EXIT_FAIL;
	if (write_out(out_path, res.body, res.len, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward receipt: %s\n", err);
		goto cleanup;
	}
	ret = CLI_EXIT_OK;
cleanup:
	receipt_release(&r);
	verify_key_free(pinned);
	cli_http_response_release(&res);
	return ret;
}

/* --- check-receipt: is the event still in the ledger? ---------------------- */

/* Each answer comes from its own snapshot: asked again when the ledger
 * grew between the consistency proof and the receipt. */
#define CHECK_ATTEMPTS 5

static int not_consistent(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int not_consistent(const char *fmt, ...)
{
	va_list ap;

	printf("ledger NOT consistent with the receipt: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return CLI_EXIT_INVALID;
}

/* The ledger's current head, checked with @trusted: it has fewer leaves
 * than @held's tree, so the collector lost or dropped the tail. */
static int report_truncated(const char *url, const struct receipt *held,
			    const struct verify_key *trusted)
{
	struct signed_tree_head now;
	int code = fetch_trusted_head(url, trusted, "check-receipt", &now);

	if (code != CLI_EXIT_OK)
		return code;
	if (now.size >= held->head.size) {
		fprintf(stderr, "dbward check-receipt: the collector refused a consistency proof "
			"for size %" PRIu64 " although its tree has %" PRIu64 " leaves\n",
			held->head.size, now.size);
		return CLI_EXIT_FAIL;
	}
	return not_consistent("its signed tree has %" PRIu64 " leaves, fewer than the "
			      "receipt's %" PRIu64 ": events were removed", now.size,
			      held->head.size);
}

/* GET /api/v1/consistency/SIZE: the newest head (@now), signed with
 * @trusted, and a proof that @held's tree is its start. A cli_exit code. */
static int fetch_consistency(const char *url, const struct receipt *held,
			     const struct verify_key *trusted, struct signed_tree_head *now)
{
	struct cli_http_response res = { 0 };
	merkle_hash proof[MERKLE_MAX_PROOF];
	char err[CLI_ERR_LEN], path[64];
	json_t *obj = NULL;
	uint64_t from;
	size_t n;
	int ret = CLI_EXIT_FAIL;

	snprintf(path, sizeof(path), "/api/v1/consistency/%" PRIu64, held->head.size);
	if (cli_http_get(url, path, &res, err, sizeof(err)) < 0)
		goto failed;
	if (res.status == 404) {
		ret = report_truncated(url, held, trusted);
		goto cleanup;
	}
	if (res.status != 200) {
		cli_http_status_error(&res, err, sizeof(err));
		goto failed;
	}
	snprintf(err, sizeof(err), "the collector's consistency answer is malformed");
	if (!(obj = json_loadb(res.body, res.len, 0, NULL)) || !json_is_object(obj) ||
	    json_u64(json_object_get(obj, "from_size"), &from) < 0 || from != held->head.size ||
	    cli_tree_head_parse(obj, now, NULL, err, sizeof(err)) < 0 ||
	    proof_parse(obj, "proof", proof, &n, err, sizeof(err)) < 0)
		goto failed;
	if (head_check_pinned(now, trusted, err, sizeof(err)) < 0) {
		printf("tree head signature INVALID: %s\n", err);
		ret = CLI_EXIT_INVALID;
	} else if (now->size < held->head.size) {
		ret = not_consistent("its signed tree has %" PRIu64 " leaves, fewer than the "
				     "receipt's %" PRIu64 ": events were removed", now->size,
				     held->head.size);
	} else if (!merkle_verify_consistency(held->head.size, now->size, held->head.root,
					      now->root, (const merkle_hash *)proof, n)) {
		ret = not_consistent("its tree of size %" PRIu64 " does not extend the receipt's "
				     "tree of size %" PRIu64 ": its history was rewritten",
				     now->size, held->head.size);
	} else {
		ret = CLI_EXIT_OK;
	}
	goto cleanup;
failed:
	fprintf(stderr, "dbward check-receipt: %s\n", err);
cleanup:
	json_decref(obj);
	cli_http_response_release(&res);
	return ret;
}

/* The ledger's own receipt for @held's event today (@fresh), checked with
 * @trusted: the same leaf, the same bytes. A cli_exit code. */
static int fetch_fresh_receipt(const char *url, const struct receipt *held,
			       const struct verify_key *trusted, struct receipt *fresh)
{
	struct cli_http_response res = { 0 };
	char err[CLI_ERR_LEN], path[64];
	int ret = CLI_EXIT_FAIL;

	snprintf(path, sizeof(path), "/api/v1/receipts/%" PRIu64, held->event_id);
	if (cli_http_get(url, path, &res, err, sizeof(err)) < 0) {
		fprintf(stderr, "dbward check-receipt: %s\n", err);
	} else if (res.status == 404) {
		ret = not_consistent("event %" PRIu64 " is no longer in it", held->event_id);
	} else if (res.status != 200) {
		cli_http_status_error(&res, err, sizeof(err));
		fprintf(stderr, "dbward check-receipt: %s\n", err);
	} else if (cli_receipt_check(res.body, res.len, trusted, fresh, err, sizeof(err)) < 0) {
		ret = not_consistent("its receipt for event %" PRIu64 " today does not verify: %s",
				     held->event_id, err);
	} else if (fresh->event_id != held->event_id || fresh->leaf_index != held->leaf_index ||
		   fresh->event_len != held->event_len ||
		   memcmp(fresh->event, held->event, held->event_len) != 0) {
		ret = not_consistent("event %" PRIu64 " is not the same event there today",
				     held->event_id);
	} else {
		ret = CLI_EXIT_OK;
	}
	cli_http_response_release(&res);
	return ret;
}

/*
 * Both answers agree on one tree: the proof joins the receipt's tree to
 * it, and the event sits in it at its leaf with its bytes. Asked again
 * when the ledger grew in between.
 */
static int check_in_ledger(const char *url, const struct receipt *held,
			   const struct verify_key *trusted)
{
	struct signed_tree_head now;
	struct receipt fresh = { 0 };
	char when[CLOCK_RFC3339_LEN];
	int ret = CLI_EXIT_FAIL;

	for (int attempt = 0; attempt < CHECK_ATTEMPTS; attempt++) {
		receipt_release(&fresh);
		memset(&fresh, 0, sizeof(fresh));
		ret = fetch_consistency(url, held, trusted, &now);
		/* A proof the collector cannot build (a row gone from under
		 * it): the event's own receipt may still say what is wrong. */
		if (ret == CLI_EXIT_FAIL &&
		    fetch_fresh_receipt(url, held, trusted, &fresh) == CLI_EXIT_INVALID)
			ret = CLI_EXIT_INVALID;
		if (ret != CLI_EXIT_OK ||
		    (ret = fetch_fresh_receipt(url, held, trusted, &fresh)) != CLI_EXIT_OK)
			goto cleanup;
		if (now.size != fresh.head.size) {
			nanosleep(&(struct timespec){ .tv_nsec = 100000000 }, NULL);
			continue;	/* it grew between the two answers */
		}
		if (memcmp(fresh.head.root, now.root, MERKLE_HASH_LEN) != 0) {
			ret = not_consistent("it signed two different trees of size %" PRIu64,
					     now.size);
			goto cleanup;
		}
		clock_rfc3339(now.ts, when, 0);
		printf("still in the ledger: the receipt's tree of size %" PRIu64 " is a prefix of "
		       "the tree of size %" PRIu64 " signed at %s, and event %" PRIu64
		       " is in it, unchanged\n", held->head.size, now.size, when, held->event_id);
		ret = CLI_EXIT_OK;
		goto cleanup;
	}
	fprintf(stderr, "dbward check-receipt: the collector's two answers named trees of "
		"different sizes %d times; try again\n", CHECK_ATTEMPTS);
	ret = CLI_EXIT_FAIL;
cleanup:
	receipt_release(&fresh);
	return ret;
}

int cli_check_receipt_run(const char *url, const char *path, const char *key_path)
{
	struct verify_key *pinned = NULL, *own = NULL;
	struct receipt r = { 0 };
	char line[CLI_ERR_LEN];
	int ret = load_receipt("check-receipt", path, key_path, &pinned, &r);

	if (ret != CLI_EXIT_OK)
		goto cleanup;
	if (!pinned) {
		warn_unpinned(&r);
		if (verify_key_from_raw(r.public_key, &own) < 0) {
			fprintf(stderr, "dbward check-receipt: out of memory\n");
			ret = CLI_EXIT_FAIL;
			goto cleanup;
		}
	}
	cli_receipt_summary(&r, line, sizeof(line));
	printf("%s\n", line);
	fflush(stdout);		/* before any error of the collector's on stderr */
	ret = check_in_ledger(url, &r, pinned ? pinned : own);
cleanup:
	receipt_release(&r);
	verify_key_free(own);
	verify_key_free(pinned);
	return ret;
}
