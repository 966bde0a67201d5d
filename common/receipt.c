#include "receipt.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/encoding.h"

#define RECEIPT_VERSION 1
#define EVENT_MAX_LEN (INT_MAX / 2)	/* b64_encode's limit */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}


/* --- tree heads ------------------------------------------------------------------ */

int tree_head_sign(const struct signing_key *k, struct signed_tree_head *h)
{
	uint8_t pub[SIGNING_PUB_LEN];
	char text[TREE_HEAD_TEXT_MAX];
	size_t len = tree_head_text(h->size, h->root, h->ts, text);

	signing_public(k, pub);
	signing_key_id(pub, h->key_id);
	return signing_sign(k, text, len, h->signature) ? -1 : 0;
}

static bool key_id_matches(const struct verify_key *k, const uint8_t key_id[SIGNING_KEY_ID_LEN])
{
	uint8_t pub[SIGNING_PUB_LEN], id[SIGNING_KEY_ID_LEN];

	verify_key_raw(k, pub);
	signing_key_id(pub, id);
	return memcmp(id, key_id, SIGNING_KEY_ID_LEN) == 0;
}

bool tree_head_verify(const struct verify_key *k, const struct signed_tree_head *h)
{
	char text[TREE_HEAD_TEXT_MAX];
	size_t len;

	if (!key_id_matches(k, h->key_id))
		return false;
	len = tree_head_text(h->size, h->root, h->ts, text);
	return verify_signature(k, text, len, h->signature);
}

/*
 * jsonbuf has no nested objects; this appends raw text to it with the same
 * sticky failure flag, for the "tree_head" object alone.
 */
static void json_raw(struct jsonbuf *jb, const char *s, size_t n)
{
	size_t cap;
	char *grown;

	if (jb->failed)
		return;
	if (jb->len + n > jb->cap) {
		cap = jb->cap ? jb->cap : 256;
		while (cap < jb->len + n)
			cap *= 2;
		grown = realloc(jb->data, cap);
		if (!grown) {
			jb->failed = true;
			return;
		}
		jb->data = grown;
		jb->cap = cap;
	}
	memcpy(jb->data + jb->len, s, n);
	jb->len += n;
}

static void tree_head_fields(struct jsonbuf *jb, const struct signed_tree_head *h)
{
	char root[2 * MERKLE_HASH_LEN + 1];
	char key_id[2 * SIGNING_KEY_ID_LEN + 1];
	char sig[B64_LEN(SIGNING_SIG_LEN) + 1];

	hex_encode(h->root, MERKLE_HASH_LEN, root);
	hex_encode(h->key_id, SIGNING_KEY_ID_LEN, key_id);
	EVP_EncodeBlock((unsigned char *)sig, h->signature, SIGNING_SIG_LEN);
	jsonbuf_u64(jb, "size", h->size);
	jsonbuf_str(jb, "root", root);
	jsonbuf_u64(jb, "ts", h->ts);
	jsonbuf_str(jb, "key_id", key_id);
	jsonbuf_str(jb, "signature", sig);
}

/* @key is a plain name (no characters JSON would escape). */
void tree_head_json(struct jsonbuf *jb, const char *key, const struct signed_tree_head *h)
{
	if (!key) {
		tree_head_fields(jb, h);
		return;
	}
	if (jb->need_comma)
		json_raw(jb, ",", 1);
	json_raw(jb, "\"", 1);
	json_raw(jb, key, strlen(key));
	json_raw(jb, "\":{", 3);
	jb->need_comma = false;
	tree_head_fields(jb, h);
	json_raw(jb, "}", 1);
	jb->need_comma = true;
}

/* --- receipts as JSON --------------------------------------------------------------- */

void proof_json(struct jsonbuf *jb, const char *key, const merkle_hash *proof, size_t n)
{
	char hex[MERKLE_MAX_PROOF][2 * MERKLE_HASH_LEN + 1];
	char *items[MERKLE_MAX_PROOF];

	if (n > MERKLE_MAX_PROOF)
		n = MERKLE_MAX_PROOF;
	for (size_t i = 0; i < n; i++) {
		hex_encode(proof[i], MERKLE_HASH_LEN, hex[i]);
		items[i] = hex[i];
	}
	jsonbuf_str_array(jb, key, n ? items : NULL, n);
}

int receipt_to_json(const struct receipt *r, struct jsonbuf *jb)
{
	char pub[B64_LEN(SIGNING_PUB_LEN) + 1];
	char *event;

	if (r->n_proof > MERKLE_MAX_PROOF)
		return -EINVAL;
	event = b64_encode(r->event ? r->event : (const uint8_t *)"", r->event_len);
	if (!event)
		return r->event_len > EVENT_MAX_LEN ? -EINVAL : -ENOMEM;
	EVP_EncodeBlock((unsigned char *)pub, r->public_key, SIGNING_PUB_LEN);
	jsonbuf_begin(jb);
	jsonbuf_u64(jb, "version", RECEIPT_VERSION);
	jsonbuf_u64(jb, "event_id", r->event_id);
	jsonbuf_u64(jb, "leaf_index", r->leaf_index);
	jsonbuf_str(jb, "event", event);
	tree_head_json(jb, "tree_head", &r->head);
	proof_json(jb, "proof", (const merkle_hash *)r->proof, r->n_proof);
	jsonbuf_str(jb, "public_key", pub);
	free(event);
	return jsonbuf_finish(jb);
}

/* --- receipts from JSON: every field checked, each error names its field ------------- */

static bool only_known_keys(json_t *obj, const char *const *known, const char *where,
			    char *err, size_t errlen)
{
	const char *key;
	json_t *value;

	json_object_foreach(obj, key, value) {
		bool found = false;

		for (size_t i = 0; known[i] && !found; i++)
			found = strcmp(key, known[i]) == 0;
		if (!found) {
			set_err(err, errlen, "%s%s: unknown field", where, key);
			return false;
		}
	}
	return true;
}

static int get_u64(json_t *obj, const char *key, const char *where, uint64_t *out, char *err,
		   size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (!v) {
		set_err(err, errlen, "%s%s: missing", where, key);
		return -1;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		set_err(err, errlen, "%s%s: not a non-negative integer", where, key);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static json_t *get_string(json_t *obj, const char *key, const char *where, char *err,
			  size_t errlen)
{
	json_t *v = json_object_get(obj, key);

	if (!v)
		set_err(err, errlen, "%s%s: missing", where, key);
	else if (!json_is_string(v))
		set_err(err, errlen, "%s%s: not a string", where, key);
	else
		return v;
	return NULL;
}

static int get_hex(json_t *obj, const char *key, const char *where, uint8_t *out, size_t len,
		   char *err, size_t errlen)
{
	json_t *v = get_string(obj, key, where, err, errlen);

	if (!v)
		return -1;
	if (hex_decode(json_string_value(v), json_string_length(v), out, len)) {
		set_err(err, errlen, "%s%s: not %zu bytes of lower-case hex", where, key, len);
		return -1;
	}
	return 0;
}

/* Base64 of exactly @len bytes. */
static int get_b64_fixed(json_t *obj, const char *key, const char *where, uint8_t *out,
			 size_t len, char *err, size_t errlen)
{
	json_t *v = get_string(obj, key, where, err, errlen);
	uint8_t buf[B64_LEN(SIGNING_SIG_LEN)];

	if (!v)
		return -1;
	if (json_string_length(v) != B64_LEN(len) || B64_LEN(len) > sizeof(buf) ||
	    b64_decode(json_string_value(v), json_string_length(v), buf) != (long)len) {
		set_err(err, errlen, "%s%s: not %zu bytes of base64", where, key, len);
		return -1;
	}
	memcpy(out, buf, len);
	return 0;
}

static int get_event(json_t *obj, struct receipt *r, char *err, size_t errlen)
{
	json_t *v = get_string(obj, "event", "", err, errlen);
	size_t in_len;
	long n;

	if (!v)
		return -1;
	in_len = json_string_length(v);
	r->event = malloc(in_len / 4 * 3 + 1);
	if (!r->event) {
		set_err(err, errlen, "event: out of memory");
		return -1;
	}
	n = b64_decode(json_string_value(v), in_len, r->event);
	if (n < 0) {
		set_err(err, errlen, "event: not base64");
		return -1;
	}
	r->event_len = (size_t)n;
	return 0;
}

static int parse_tree_head(json_t *root, struct signed_tree_head *h, char *err, size_t errlen)
{
	static const char *const known[] = {"size", "root", "ts", "key_id", "signature", NULL};
	static const char where[] = "tree_head.";
	json_t *obj = json_object_get(root, "tree_head");

	if (!obj) {
		set_err(err, errlen, "tree_head: missing");
		return -1;
	}
	if (!json_is_object(obj)) {
		set_err(err, errlen, "tree_head: not an object");
		return -1;
	}
	if (!only_known_keys(obj, known, where, err, errlen) ||
	    get_u64(obj, "size", where, &h->size, err, errlen) ||
	    get_hex(obj, "root", where, h->root, MERKLE_HASH_LEN, err, errlen) ||
	    get_u64(obj, "ts", where, &h->ts, err, errlen) ||
	    get_hex(obj, "key_id", where, h->key_id, SIGNING_KEY_ID_LEN, err, errlen) ||
	    get_b64_fixed(obj, "signature", where, h->signature, SIGNING_SIG_LEN, err, errlen))
		return -1;
	return 0;
}

int proof_parse(const json_t *obj, const char *key, merkle_hash proof[MERKLE_MAX_PROOF],
		size_t *n, char *err, size_t errlen)
{
	const json_t *arr = json_object_get(obj, key);
	size_t count;

	if (!arr) {
		set_err(err, errlen, "%s: missing", key);
		return -1;
	}
	if (!json_is_array(arr)) {
		set_err(err, errlen, "%s: not an array", key);
		return -1;
	}
	count = json_array_size(arr);
	if (count > MERKLE_MAX_PROOF) {
		set_err(err, errlen, "%s: %zu hashes, at most %d", key, count, MERKLE_MAX_PROOF);
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		const json_t *v = json_array_get(arr, i);

		if (!json_is_string(v) ||
		    hex_decode(json_string_value(v), json_string_length(v), proof[i],
			       MERKLE_HASH_LEN)) {
			set_err(err, errlen, "%s[%zu]: not %d bytes of lower-case hex", key, i,
				MERKLE_HASH_LEN);
			return -1;
		}
	}
	*n = count;
	return 0;
}

static int parse_receipt(json_t *root, struct receipt *r, char *err, size_t errlen)
{
	static const char *const known[] = {"version", "event_id", "leaf_index", "event",
					    "tree_head", "proof", "public_key", NULL};
	uint64_t version;

	if (!json_is_object(root)) {
		set_err(err, errlen, "receipt: not a JSON object");
		return -1;
	}
	if (!only_known_keys(root, known, "", err, errlen) ||
	    get_u64(root, "version", "", &version, err, errlen))
		return -1;
	if (version != RECEIPT_VERSION) {
		set_err(err, errlen, "version: %" PRIu64 " is not supported (only %d)", version,
			RECEIPT_VERSION);
		return -1;
	}
	if (get_u64(root, "event_id", "", &r->event_id, err, errlen) ||
	    get_u64(root, "leaf_index", "", &r->leaf_index, err, errlen) ||
	    get_event(root, r, err, errlen) || parse_tree_head(root, &r->head, err, errlen) ||
	    proof_parse(root, "proof", r->proof, &r->n_proof, err, errlen) ||
	    get_b64_fixed(root, "public_key", "", r->public_key, SIGNING_PUB_LEN, err, errlen))
		return -1;
	return 0;
}

int receipt_from_json(const char *text, size_t len, struct receipt *r, char *err,
		      size_t errlen)
{
	json_error_t jerr;
	json_t *root;
	int rc;

	memset(r, 0, sizeof(*r));
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		set_err(err, errlen, "receipt: not JSON: %s (line %d, column %d)", jerr.text,
			jerr.line, jerr.column);
		return -1;
	}
	rc = parse_receipt(root, r, err, errlen);
	json_decref(root);
	if (rc)
		receipt_release(r);
	return rc;
}

void receipt_release(struct receipt *r)
{
	free(r->event);
	r->event = NULL;
	r->event_len = 0;
}

/* --- checking a receipt ----------------------------------------------------------------- */

/* The key to check with: @trusted, provided the receipt names it, or its own. */
static int pick_key(const struct receipt *r, const struct verify_key *trusted,
		    struct verify_key **own, const struct verify_key **key, char *err,
		    size_t errlen)
{
	uint8_t pub[SIGNING_PUB_LEN];

	*own = NULL;
	if (trusted) {
		verify_key_raw(trusted, pub);
		if (memcmp(pub, r->public_key, SIGNING_PUB_LEN) != 0) {
			set_err(err, errlen, "receipt signed by a different key than the trusted one");
			return -1;
		}
		*key = trusted;
		return 0;
	}
	if (verify_key_from_raw(r->public_key, own)) {
		set_err(err, errlen, "public_key: not an Ed25519 public key");
		return -1;
	}
	*key = *own;
	return 0;
}

static int check_inclusion(const struct receipt *r, char *err, size_t errlen)
{
	merkle_hash leaf;

	if (r->leaf_index >= r->head.size) {
		set_err(err, errlen, "leaf_index %" PRIu64 " is outside a tree of size %" PRIu64,
			r->leaf_index, r->head.size);
		return -1;
	}
	merkle_leaf_hash(r->event ? r->event : (const uint8_t *)"", r->event_len, leaf);
	if (!merkle_verify_inclusion(leaf, r->leaf_index, r->head.size,
				     (const merkle_hash *)r->proof, r->n_proof, r->head.root)) {
		set_err(err, errlen,
			"inclusion proof does not lead from the event to tree_head.root");
		return -1;
	}
	return 0;
}

int receipt_verify(const struct receipt *r, const struct verify_key *trusted, char *err,
		   size_t errlen)
{
	const struct verify_key *key = NULL;
	struct verify_key *own = NULL;
	int rc = -1;

	if (pick_key(r, trusted, &own, &key, err, errlen) || check_inclusion(r, err, errlen))
		goto cleanup;
	/* The id is the ledger position counted from 1, so the proof covers it. */
	if (r->event_id != r->leaf_index + 1) {
		set_err(err, errlen, "event_id does not match leaf_index (ids are leaf_index + 1)");
		goto cleanup;
	}
	if (!key_id_matches(key, r->head.key_id)) {
		set_err(err, errlen, "tree_head.key_id does not name the signing key");
		goto cleanup;
	}
	if (!tree_head_verify(key, &r->head)) {
		set_err(err, errlen, "tree_head.signature does not verify");
		goto cleanup;
	}
	rc = 0;
cleanup:
	verify_key_free(own);
	return rc;
}
