/*
 * A receipt proves that one audit event is in the ledger: the event's own
 * bytes, its leaf index, an RFC 6962 inclusion proof and a signed tree
 * head. Anyone can check it offline with the collector's public key.
 *
 * As JSON (one object; hashes lower-case hex, binary base64):
 *   {"version": 1,
 *    "event_id": 17,                     the event's id: leaf_index + 1
 *    "leaf_index": 16,
 *    "event": "<base64 of the serialized dbward.v1.Event>",
 *    "tree_head": {"size": 40, "root": "<hex>", "ts": <unix ns>,
 *                  "key_id": "<hex>", "signature": "<base64>"},
 *    "proof": ["<hex>", ...],
 *    "public_key": "<base64 raw Ed25519 key>"}   the key that signed
 *
 * An event's id in the collector IS its ledger position counted from 1,
 * so every field of a receipt is covered by the proof or the signature.
 *
 * Verifying: leaf = SHA-256(0x00 || event); the proof must take it to
 * tree_head.root at leaf_index within size; the signature must verify over
 * tree_head_text() with the trusted key (or, when none is given, with
 * public_key, and the caller says the key was not pinned).
 */
#ifndef DBWARD_COMMON_RECEIPT_H
#define DBWARD_COMMON_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/json.h"
#include "common/merkle.h"
#include "common/signing.h"

struct signed_tree_head {
	uint64_t size;
	merkle_hash root;
	uint64_t ts;			/* unix ns */
	uint8_t key_id[SIGNING_KEY_ID_LEN];
	uint8_t signature[SIGNING_SIG_LEN];
};

struct receipt {
	uint64_t event_id;		/* leaf_index + 1 */
	uint64_t leaf_index;
	uint8_t *event;			/* serialized Event; owned */
	size_t event_len;
	struct signed_tree_head head;
	merkle_hash proof[MERKLE_MAX_PROOF];
	size_t n_proof;
	uint8_t public_key[SIGNING_PUB_LEN];
};

/* Signs a tree head: fills key_id and signature. 0 or -1. */
int tree_head_sign(const struct signing_key *k, struct signed_tree_head *h);
bool tree_head_verify(const struct verify_key *k, const struct signed_tree_head *h);
/* The tree head as a JSON object under @key (NULL: fields at this level). */
void tree_head_json(struct jsonbuf *jb, const char *key, const struct signed_tree_head *h);

/* @n proof hashes as a JSON array of lower-case hex under @key. */
void proof_json(struct jsonbuf *jb, const char *key, const merkle_hash *proof, size_t n);
/* The array under @key of @obj into @proof. 0, or -1 with @err. */
int proof_parse(const json_t *obj, const char *key, merkle_hash proof[MERKLE_MAX_PROOF],
		size_t *n, char *err, size_t errlen);

/* The whole receipt as one JSON line. 0 or -ENOMEM. */
int receipt_to_json(const struct receipt *r, struct jsonbuf *jb);
/* Parses a receipt. 0, or -1 with @err naming the bad field. */
int receipt_from_json(const char *text, size_t len, struct receipt *r, char *err,
		      size_t errlen);
void receipt_release(struct receipt *r);

/*
 * Checks a receipt against @trusted (NULL: the receipt's own public_key).
 * 0, or -1 with @err saying which check failed (leaf/proof/root,
 * signature, key not the trusted one).
 */
int receipt_verify(const struct receipt *r, const struct verify_key *trusted, char *err,
		   size_t errlen);

#endif
