#include "signing.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

struct signing_key {
	EVP_PKEY *pkey;
	uint8_t pub[SIGNING_PUB_LEN];
};

struct verify_key {
	EVP_PKEY *pkey;
	uint8_t pub[SIGNING_PUB_LEN];
};

/* --- errors ---------------------------------------------------------------- */

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

/* The most specific OpenSSL reason, and an empty queue for the next call. */
static const char *ossl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "unknown error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* --- key material ------------------------------------------------------------ */

/* Never prompt on a terminal for an encrypted key: the collector is a daemon. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static bool is_ed25519(const EVP_PKEY *pkey)
{
	return EVP_PKEY_get_id(pkey) == EVP_PKEY_ED25519;
}

static const char *key_type_name(const EVP_PKEY *pkey)
{
	const char *name = EVP_PKEY_get0_type_name(pkey);

	return name ? name : "unknown";
}

static int raw_public(const EVP_PKEY *pkey, uint8_t pub[SIGNING_PUB_LEN])
{
	size_t len = SIGNING_PUB_LEN;

	if (EVP_PKEY_get_raw_public_key(pkey, pub, &len) != 1 || len != SIGNING_PUB_LEN) {
		ERR_clear_error();
		return -1;
	}
	return 0;
}

/* A malloc'd NUL-terminated copy of a memory BIO's contents. */
static char *bio_to_string(BIO *bio)
{
	char *data = NULL;
	long len = BIO_get_mem_data(bio, &data);
	char *copy;

	if (len < 0)
		return NULL;
	copy = malloc((size_t)len + 1);
	if (!copy)
		return NULL;
	memcpy(copy, data, (size_t)len);
	copy[len] = '\0';
	return copy;
}

/* --- files ------------------------------------------------------------------- */

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes @data to a new file @path (@flags add O_EXCL or O_TRUNC). */
static int write_file(const char *path, int flags, mode_t mode, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | flags, mode);
	int rc;

	if (fd < 0)
		return -errno;
	rc = write_all(fd, data, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/* The PEM text of @pkey: its PKCS#8 private key, or its public key. */
static char *pem_of(EVP_PKEY *pkey, bool private)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *text = NULL;
	char *data = NULL;
	long len;
	int ok;

	if (!bio)
		return NULL;
	if (private)
		ok = PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_bio_PUBKEY(bio, pkey);
	if (ok == 1)
		text = bio_to_string(bio);
	/* The BIO held the private key: wipe it before it is freed. */
	len = BIO_get_mem_data(bio, &data);
	if (len > 0)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	ERR_clear_error();
	return text;
}

static void free_secret_text(char *text)
{
	if (text) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
}

/*
 * A fresh key in @path (0600, never over an existing file) and its public
 * key in PATH.pub (0644). -EEXIST when another process created @path first.
 */
static int create_key_files(const char *path, char *err, size_t errlen)
{
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	char *priv = NULL, *pub = NULL, *pub_path = NULL;
	char reason[160];
	int rc = -1;

	if (!pkey) {
		set_err(err, errlen, "%s: cannot generate an Ed25519 key: %s", path,
			ossl_reason(reason, sizeof(reason)));
		goto cleanup;
	}
	priv = pem_of(pkey, true);
	pub = pem_of(pkey, false);
	if (!priv || !pub || asprintf(&pub_path, "%s.pub", path) < 0) {
		pub_path = NULL;
		set_err(err, errlen, "%s: out of memory writing a new key", path);
		goto cleanup;
	}
	rc = write_file(path, O_EXCL, 0600, priv, strlen(priv));
	if (rc == -EEXIST)
		goto cleanup;
	if (rc) {
		set_err(err, errlen, "%s: cannot write the new key: %s", path, strerror(-rc));
		unlink(path);
		goto cleanup;
	}
	rc = write_file(pub_path, O_TRUNC, 0644, pub, strlen(pub));
	if (rc) {
		set_err(err, errlen, "%s: cannot write the public key: %s", pub_path,
			strerror(-rc));
		unlink(path);
		goto cleanup;
	}
	rc = 0;
cleanup:
	free_secret_text(priv);
	free(pub);
	free(pub_path);
	EVP_PKEY_free(pkey);
	return rc;
}

/* The private key in @path: 0, -ENOENT, or -1 with @err. */
static int read_private(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "re");
	char reason[160];

	*out = NULL;
	if (!fp) {
		int e = errno;

		if (e == ENOENT)
			return -ENOENT;
		set_err(err, errlen, "%s: %s", path, strerror(e));
		return -1;
	}
	*out = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL);
	fclose(fp);
	if (!*out) {
		set_err(err, errlen, "%s: not a PEM private key (PKCS#8, unencrypted): %s", path,
			ossl_reason(reason, sizeof(reason)));
		return -1;
	}
	return 0;
}

/* --- private keys -------------------------------------------------------------- */

static int load_or_create(const char *path, bool create, EVP_PKEY **pkey, char *err,
			  size_t errlen)
{
	int rc = read_private(path, pkey, err, errlen);

	if (rc != -ENOENT)
		return rc;
	if (!create) {
		set_err(err, errlen, "%s: no such key file", path);
		return -1;
	}
	rc = create_key_files(path, err, errlen);
	if (rc && rc != -EEXIST)
		return -1;
	/* Ours or a concurrent creator's: read back what is on disk. */
	rc = read_private(path, pkey, err, errlen);
	if (rc == -ENOENT) {
		set_err(err, errlen, "%s: vanished after it was created", path);
		return -1;
	}
	return rc;
}

int signing_key_load(const char *path, bool create, struct signing_key **out, char *err,
		     size_t errlen)
{
	struct signing_key *k = NULL;
	EVP_PKEY *pkey = NULL;
	int rc = -1;

	*out = NULL;
	if (load_or_create(path, create, &pkey, err, errlen))
		goto cleanup;
	if (!is_ed25519(pkey)) {
		set_err(err, errlen, "%s: a %s key; the ledger signs with Ed25519 only", path,
			key_type_name(pkey));
		goto cleanup;
	}
	k = calloc(1, sizeof(*k));
	if (!k) {
		set_err(err, errlen, "%s: out of memory", path);
		goto cleanup;
	}
	if (raw_public(pkey, k->pub)) {
		set_err(err, errlen, "%s: cannot read the public half of the key", path);
		goto cleanup;
	}
	k->pkey = pkey;
	pkey = NULL;
	*out = k;
	k = NULL;
	rc = 0;
cleanup:
	free(k);
	EVP_PKEY_free(pkey);
	return rc;
}

void signing_key_free(struct signing_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

int signing_sign(const struct signing_key *k, const void *msg, size_t len,
		 uint8_t sig[SIGNING_SIG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t siglen = SIGNING_SIG_LEN;
	int rc = -1;

	/* Ed25519 hashes internally: no digest, one-shot sign. */
	if (ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) == 1 &&
	    EVP_DigestSign(ctx, sig, &siglen, msg, len) == 1 && siglen == SIGNING_SIG_LEN)
		rc = 0;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return rc;
}

void signing_public(const struct signing_key *k, uint8_t pub[SIGNING_PUB_LEN])
{
	memcpy(pub, k->pub, SIGNING_PUB_LEN);
}

char *signing_public_pem(const struct signing_key *k)
{
	return pem_of(k->pkey, false);
}

/* --- public keys ----------------------------------------------------------------- */

static struct verify_key *verify_key_wrap(EVP_PKEY *pkey)
{
	struct verify_key *k = calloc(1, sizeof(*k));

	if (!k)
		return NULL;
	if (raw_public(pkey, k->pub)) {
		free(k);
		return NULL;
	}
	k->pkey = pkey;
	return k;
}

int verify_key_from_pem(const char *pem, size_t len, struct verify_key **out, char *err,
			size_t errlen)
{
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	char reason[160];
	int rc = -1;

	*out = NULL;
	if (len > INT_MAX) {
		set_err(err, errlen, "public key PEM too large");
		goto cleanup;
	}
	bio = BIO_new_mem_buf(pem, (int)len);
	if (bio)
		pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	if (!pkey) {
		set_err(err, errlen, "not a PEM public key (SubjectPublicKeyInfo): %s",
			ossl_reason(reason, sizeof(reason)));
		goto cleanup;
	}
	if (!is_ed25519(pkey)) {
		set_err(err, errlen, "a %s public key; ledger keys are Ed25519",
			key_type_name(pkey));
		goto cleanup;
	}
	*out = verify_key_wrap(pkey);
	if (!*out) {
		set_err(err, errlen, "out of memory");
		goto cleanup;
	}
	pkey = NULL;
	rc = 0;
cleanup:
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	return rc;
}

int verify_key_from_raw(const uint8_t pub[SIGNING_PUB_LEN], struct verify_key **out)
{
	EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub,
						      SIGNING_PUB_LEN);

	*out = NULL;
	if (!pkey) {
		ERR_clear_error();
		return -1;
	}
	*out = verify_key_wrap(pkey);
	if (!*out) {
		EVP_PKEY_free(pkey);
		return -1;
	}
	return 0;
}

void verify_key_free(struct verify_key *k)
{
	if (!k)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

bool verify_signature(const struct verify_key *k, const void *msg, size_t len,
		      const uint8_t sig[SIGNING_SIG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = false;

	if (ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k->pkey) == 1)
		ok = EVP_DigestVerify(ctx, sig, SIGNING_SIG_LEN, msg, len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

void verify_key_raw(const struct verify_key *k, uint8_t pub[SIGNING_PUB_LEN])
{
	memcpy(pub, k->pub, SIGNING_PUB_LEN);
}

/* --- names and the signed text ------------------------------------------------------ */

void signing_key_id(const uint8_t pub[SIGNING_PUB_LEN], uint8_t id[SIGNING_KEY_ID_LEN])
{
	uint8_t digest[SHA256_DIGEST_LENGTH];

	if (!SHA256(pub, SIGNING_PUB_LEN, digest))
		abort();
	memcpy(id, digest, SIGNING_KEY_ID_LEN);
}

size_t tree_head_text(uint64_t size, const merkle_hash root, uint64_t ts_ns,
		      char out[TREE_HEAD_TEXT_MAX])
{
	char root_b64[4 * ((MERKLE_HASH_LEN + 2) / 3) + 1];
	int n;

	EVP_EncodeBlock((unsigned char *)root_b64, root, MERKLE_HASH_LEN);
	n = snprintf(out, TREE_HEAD_TEXT_MAX, "dbward.ledger/v1\n%" PRIu64 "\n%s\n%" PRIu64 "\n",
		     size, root_b64, ts_ns);
	return (size_t)n;
}
