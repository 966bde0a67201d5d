#include "tests/unit/tls_fixtures.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY (24L * 60 * 60)

/* What one certificate says. */
struct cert_spec {
	const char *cn;
	const char *second_cn;		/* a second CN entry, to test refusing it */
	bool is_ca;
	const char *san;		/* subjectAltName value, or NULL */
	const char *eku;		/* extendedKeyUsage value, or NULL */
	long from_days;			/* validity, relative to now */
	long to_days;
};

/* A certificate and its key; the key alone for a CA's signature. */
struct issued {
	X509 *cert;
	EVP_PKEY *key;
};

static void issued_free(struct issued *is)
{
	X509_free(is->cert);
	EVP_PKEY_free(is->key);
	is->cert = NULL;
	is->key = NULL;
}

static int add_ext(X509 *cert, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
	int ok;

	if (!ext)
		return -1;
	ok = X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

static int set_name(X509_NAME *name, const struct cert_spec *spec)
{
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
					(const unsigned char *)"dbward tests", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)spec->cn, -1, -1, 0))
		return -1;
	if (spec->second_cn &&
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)spec->second_cn, -1, -1, 0))
		return -1;
	return 0;
}

/* Issues a P-256 certificate for @spec, signed by @issuer (NULL: by
 * itself). Returns 0 or -1. */
static int issue(const struct cert_spec *spec, const struct issued *issuer, struct issued *out)
{
	static long serial = 1;
	X509V3_CTX v3;
	X509 *cert;
	EVP_PKEY *sign_key;

	out->key = EVP_EC_gen("P-256");
	out->cert = cert = X509_new();
	if (!out->key || !cert)
		goto fail;
	sign_key = issuer ? issuer->key : out->key;
	if (!X509_set_version(cert, X509_VERSION_3) ||
	    !ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++) ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), spec->from_days * DAY) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), spec->to_days * DAY) ||
	    set_name(X509_get_subject_name(cert), spec) < 0 ||
	    !X509_set_issuer_name(cert, X509_get_subject_name(issuer ? issuer->cert : cert)) ||
	    !X509_set_pubkey(cert, out->key))
		goto fail;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer ? issuer->cert : cert, cert, NULL, NULL, 0);
	if (add_ext(cert, &v3, NID_basic_constraints, spec->is_ca ? "critical,CA:TRUE" : "CA:FALSE") ||
	    add_ext(cert, &v3, NID_key_usage,
		    spec->is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") ||
	    add_ext(cert, &v3, NID_subject_key_identifier, "hash") ||
	    add_ext(cert, &v3, NID_authority_key_identifier, "keyid:always"))
		goto fail;
	if (spec->san && add_ext(cert, &v3, NID_subject_alt_name, spec->san))
		goto fail;
	if (spec->eku && add_ext(cert, &v3, NID_ext_key_usage, spec->eku))
		goto fail;
	if (!X509_sign(cert, sign_key, EVP_sha256()))
		goto fail;
	return 0;
fail:
	issued_free(out);
	return -1;
}

static int write_pem(const struct tls_fixtures *fx, const char *name, const struct issued *is,
		     bool cert, bool key)
{
	char path[TLS_FIXTURES_PATH_MAX];
	FILE *f = fopen(tls_fixtures_path(fx, name, path, sizeof(path)), "w");
	int ok = f != NULL;

	if (ok && cert)
		ok = PEM_write_X509(f, is->cert);
	if (ok && key)
		ok = PEM_write_PrivateKey(f, is->key, NULL, NULL, 0, NULL, NULL);
	if (f && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

/* Writes "<stem>.crt" and "<stem>.key". */
static int write_pair(const struct tls_fixtures *fx, const char *stem, const struct issued *is)
{
	char name[64];

	snprintf(name, sizeof(name), "%s.crt", stem);
	if (write_pem(fx, name, is, true, false) < 0)
		return -1;
	snprintf(name, sizeof(name), "%s.key", stem);
	return write_pem(fx, name, is, false, true);
}

static int write_encrypted_key(const struct tls_fixtures *fx, const struct issued *is)
{
	static const char pass[] = "secret";
	char path[TLS_FIXTURES_PATH_MAX];
	FILE *f = fopen(tls_fixtures_path(fx, "encrypted.key", path, sizeof(path)), "w");
	int ok = f != NULL;

	if (ok)
		ok = PEM_write_PrivateKey(f, is->key, EVP_aes_256_cbc(),
					  (const unsigned char *)pass, (int)strlen(pass), NULL, NULL);
	if (f && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

static int write_text(const struct tls_fixtures *fx, const char *name, const char *text)
{
	char path[TLS_FIXTURES_PATH_MAX];
	FILE *f = fopen(tls_fixtures_path(fx, name, path, sizeof(path)), "w");
	int ok = f && fputs(text, f) >= 0;

	if (f && fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

#define SERVER_SAN "DNS:localhost,IP:127.0.0.1"

int tls_fixtures_create(struct tls_fixtures *fx)
{
	static const struct cert_spec ca_spec = {
		.cn = "dbward test CA", .is_ca = true, .from_days = -1, .to_days = 30,
	};
	static const struct cert_spec foreign_ca_spec = {
		.cn = "foreign test CA", .is_ca = true, .from_days = -1, .to_days = 30,
	};
	static const struct cert_spec server_spec = {
		.cn = "localhost", .san = SERVER_SAN, .eku = "serverAuth",
		.from_days = -1, .to_days = 30,
	};
	static const struct cert_spec expired_spec = {
		.cn = "localhost", .san = SERVER_SAN, .eku = "serverAuth",
		.from_days = -30, .to_days = -1,
	};
	static const struct cert_spec client_spec = {
		.cn = "agent-7", .eku = "clientAuth", .from_days = -1, .to_days = 30,
	};
	static const struct cert_spec two_cn_spec = {
		.cn = "agent-7", .second_cn = "agent-8", .eku = "clientAuth",
		.from_days = -1, .to_days = 30,
	};
	struct issued ca = { 0 }, foreign_ca = { 0 }, leaf = { 0 };
	const char *tmp = getenv("TMPDIR");
	int rc = -1;

	snprintf(fx->dir, sizeof(fx->dir), "%s/dbward-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(fx->dir))
		return -1;

	if (issue(&ca_spec, NULL, &ca) || write_pem(fx, "ca.crt", &ca, true, false) ||
	    issue(&foreign_ca_spec, NULL, &foreign_ca) ||
	    write_pem(fx, "foreign-ca.crt", &foreign_ca, true, false))
		goto out;

	if (issue(&server_spec, &ca, &leaf) || write_pair(fx, "server", &leaf) ||
	    write_encrypted_key(fx, &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&client_spec, &ca, &leaf) || write_pair(fx, "client", &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&two_cn_spec, &ca, &leaf) || write_pair(fx, "two-cn-client", &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&expired_spec, &ca, &leaf) || write_pair(fx, "expired", &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&server_spec, NULL, &leaf) || write_pair(fx, "selfsigned", &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&server_spec, &foreign_ca, &leaf) || write_pair(fx, "foreign-server", &leaf))
		goto out;
	issued_free(&leaf);
	if (issue(&client_spec, &foreign_ca, &leaf) || write_pair(fx, "foreign-client", &leaf))
		goto out;
	if (write_text(fx, "empty.pem", "not a certificate\n"))
		goto out;
	rc = 0;
out:
	issued_free(&leaf);
	issued_free(&ca);
	issued_free(&foreign_ca);
	if (rc < 0)
		tls_fixtures_remove(fx);
	return rc;
}

void tls_fixtures_remove(struct tls_fixtures *fx)
{
	char path[TLS_FIXTURES_PATH_MAX];
	struct dirent *de;
	DIR *d;

	if (!fx->dir[0])
		return;
	d = opendir(fx->dir);
	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			unlink(tls_fixtures_path(fx, de->d_name, path, sizeof(path)));
		}
		closedir(d);
	}
	rmdir(fx->dir);
	fx->dir[0] = '\0';
}

const char *tls_fixtures_path(const struct tls_fixtures *fx, const char *name, char *buf,
			      size_t len)
{
	int n = snprintf(buf, len, "%s/%s", fx->dir, name);

	if (n < 0 || (size_t)n >= len)
		buf[0] = '\0';		/* a path that opens nothing */
	return buf;
}
