/*
 * Ed25519 keys for the ledger (OpenSSL 3). The collector signs tree heads
 * with its private key; anyone verifies them, and receipts, offline with
 * the public key (PEM, SubjectPublicKeyInfo).
 *
 * A signed tree head signs this text, a C2SP signed-note style checkpoint:
 *
 *   dbward.ledger/v1\n
 *   <tree size, decimal>\n
 *   <root, standard base64>\n
 *   <timestamp, unix ns, decimal>\n
 */
#ifndef DBWARD_COMMON_SIGNING_H
#define DBWARD_COMMON_SIGNING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/merkle.h"

#define SIGNING_SIG_LEN 64
#define SIGNING_PUB_LEN 32
#define SIGNING_KEY_ID_LEN 8		/* first bytes of SHA-256(raw public key) */
#define SIGNING_ERR_LEN 256
#define TREE_HEAD_TEXT_MAX 160

struct signing_key;		/* private: sign and verify */
struct verify_key;		/* public: verify only */

/*
 * The private key in @path (PEM PKCS#8). With @create and no file there,
 * generates one and writes it 0600 (and PATH.pub, the public key PEM).
 * 0, or -1 with @err saying why (unreadable, not Ed25519, ...).
 */
int signing_key_load(const char *path, bool create, struct signing_key **out, char *err,
		     size_t errlen);
void signing_key_free(struct signing_key *k);
int signing_sign(const struct signing_key *k, const void *msg, size_t len,
		 uint8_t sig[SIGNING_SIG_LEN]);
/* The raw 32-byte public key, its id, and its PEM (malloc'd). */
void signing_public(const struct signing_key *k, uint8_t pub[SIGNING_PUB_LEN]);
char *signing_public_pem(const struct signing_key *k);

/* A public key from PEM text, or from raw bytes. 0 or -1 with @err. */
int verify_key_from_pem(const char *pem, size_t len, struct verify_key **out, char *err,
			size_t errlen);
int verify_key_from_raw(const uint8_t pub[SIGNING_PUB_LEN], struct verify_key **out);
void verify_key_free(struct verify_key *k);
bool verify_signature(const struct verify_key *k, const void *msg, size_t len,
		      const uint8_t sig[SIGNING_SIG_LEN]);
void verify_key_raw(const struct verify_key *k, uint8_t pub[SIGNING_PUB_LEN]);

/* SHA-256(pub)[0..8): names a key in tree heads and receipts. */
void signing_key_id(const uint8_t pub[SIGNING_PUB_LEN], uint8_t id[SIGNING_KEY_ID_LEN]);

/* The checkpoint text above, NUL-terminated; returns its length. */
size_t tree_head_text(uint64_t size, const merkle_hash root, uint64_t ts_ns,
		      char out[TREE_HEAD_TEXT_MAX]);

#endif
