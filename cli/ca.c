#include "cli/ca.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define DAY_S (24L * 60 * 60)
#define DNS_NAME_MAX 253

static const char *const default_ips[] = { "127.0.0.1", "::1" };
static const char *const default_dns[] = { "localhost" };

/* "what: the OpenSSL reason" in @err; returns -1. */
static int ssl_fail(const char *what, char *err, size_t errlen)
{
	unsigned long e = ERR_get_error();
	char reason[256] = "unknown error";

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	ERR_clear_error();
	snprintf(err, errlen, "%s: %s", what, reason);
	return -1;
}

static int path_of(const char *dir, const char *stem, const char *ext, char *out, size_t len,
		   char *err, size_t errlen)
{
	int n = snprintf(out, len, "%s/%s%s", dir, stem, ext);

	if (n < 0 || (size_t)n >= len) {
		snprintf(err, errlen, "path too long: %s/%s%s", dir, stem, ext);
		return -1;
	}
	return 0;
}

/* --- files ----------------------------------------------------------------- */

/* mkdir -p, each missing component 0700. */
static int ensure_dir(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct stat st;
	size_t n = strlen(dir);

	if (n == 0 || n >= sizeof(path)) {
		snprintf(err, errlen, "bad directory name '%s'", dir);
		return -1;
	}
	memcpy(path, dir, n + 1);
	for (char *p = path + 1;; p++) {
		bool end = *p == '\0';

		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			goto fail;
		if (end)
			break;
		*p = '/';
	}
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return 0;
	errno = ENOTDIR;
fail:
	snprintf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
	return -1;
}

static int exists_error(const char *path, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s already exists: refusing to overwrite it", path);
	return -1;
}

static int refuse_existing(const char *path, char *err, size_t errlen)
{
	struct stat st;

	return lstat(path, &st) == 0 ? exists_error(path, err, errlen) : 0;
}

/* Writes a new file (never an existing one) with exactly @mode. */
static int write_pem_file(const char *path, mode_t mode, X509 *cert, EVP_PKEY *key, char *err,
			  size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	FILE *f;
	int ok;

	if (fd < 0 && errno == EEXIST)
		return exists_error(path, err, errlen);
	if (fd < 0) {
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	if (fchmod(fd, mode) < 0 || !(f = fdopen(fd, "w"))) {
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL,
								      NULL);
	ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
	if (fclose(f) != 0 || !ok) {
		snprintf(err, errlen, "cannot write %s", path);
		unlink(path);
		return -1;
	}
	return 0;
}

/* STEM.key then STEM.crt; neither is left behind when either fails. */
static int write_pair(const char *dir, const char *stem, X509 *cert, EVP_PKEY *key, char *err,
		      size_t errlen)
{
	char key_path[PATH_MAX], cert_path[PATH_MAX];

	if (path_of(dir, stem, ".key", key_path, sizeof(key_path), err, errlen) < 0 ||
	    path_of(dir, stem, ".crt", cert_path, sizeof(cert_path), err, errlen) < 0 ||
	    refuse_existing(key_path, err, errlen) < 0 ||
	    refuse_existing(cert_path, err, errlen) < 0 ||
	    write_pem_file(key_path, 0600, NULL, key, err, errlen) < 0)
		return -1;
	if (write_pem_file(cert_path, 0644, cert, NULL, err, errlen) < 0) {
		unlink(key_path);
		return -1;
	}
	return 0;
}

/* --- certificates ---------------------------------------------------------- */

static int set_random_serial(X509 *cert)
{
	unsigned char bytes[16];
	BIGNUM *bn = NULL;
	int ok;

	if (RAND_bytes(bytes, sizeof(bytes)) != 1)
		return -1;
	bytes[0] |= bytes[0] ? 0 : 1;	/* never zero */
	bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
	BN_free(bn);
	return ok ? 0 : -1;
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

/* A certificate for @key named @cn, valid from a minute ago for @days;
 * issuer and extensions are the caller's. NULL on failure. */
static X509 *cert_begin(EVP_PKEY *key, const char *cn, long days)
{
	X509 *cert = X509_new();

	if (!cert || !X509_set_version(cert, X509_VERSION_3) || set_random_serial(cert) < 0 ||
	    !X509_gmtime_adj(X509_getm_notBefore(cert), -CLI_CA_BACKDATE_S) ||
	    !X509_gmtime_adj(X509_getm_notAfter(cert), days * DAY_S) ||
	    !X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_pubkey(cert, key)) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

static EVP_PKEY *new_key(void)
{
	return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static X509 *make_ca_cert(EVP_PKEY *key)
{
	X509 *cert = cert_begin(key, "dbward CA", CLI_CA_DAYS);
	X509V3_CTX v3;

	if (!cert)
		return NULL;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	if (!X509_set_issuer_name(cert, X509_get_subject_name(cert)) ||
	    add_ext(cert, &v3, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
	    add_ext(cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
	    add_ext(cert, &v3, NID_subject_key_identifier, "hash") < 0 ||
	    !X509_sign(cert, key, EVP_sha256())) {
		X509_free(cert);
		return NULL;
	}
	return cert;
}

int cli_ca_init(const char *dir, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	int ret = -1;

	if (ensure_dir(dir, err, errlen) < 0)
		return -1;
	if (!(key = new_key())) {
		ssl_fail("cannot generate the CA key", err, errlen);
		goto cleanup;
	}
	if (!(cert = make_ca_cert(key))) {
		ssl_fail("cannot make the CA certificate", err, errlen);
		goto cleanup;
	}
	ret = write_pair(dir, "ca", cert, key, err, errlen);
cleanup:
	X509_free(cert);
	EVP_PKEY_free(key);
	return ret;
}

/* --- issuing --------------------------------------------------------------- */

int cli_ca_check_name(const char *name, char *err, size_t errlen)
{
	size_t n = strlen(name);
	bool ok = n > 0 && n <= CLI_CA_NAME_MAX && name[0] != '.' && name[0] != '-' &&
		  strcmp(name, "ca") != 0;

	for (size_t i = 0; ok && i < n; i++)
		ok = isalnum((unsigned char)name[i]) || strchr("._-", name[i]);
	if (!ok) {
		snprintf(err, errlen,
			 "name '%s' must be 1-%d letters, digits, '.', '_' or '-', not start "
			 "with '.' or '-', and not be \"ca\"", name, CLI_CA_NAME_MAX);
		return -1;
	}
	return 0;
}

/* A DNS name (a leading "*." allowed), lower-cased into @out. */
static int dns_normalize(const char *name, char out[DNS_NAME_MAX + 1])
{
	size_t n = strlen(name);
	const char *p = strncmp(name, "*.", 2) == 0 ? name + 2 : name;

	if (n == 0 || n > DNS_NAME_MAX || !*p || *p == '.' || *p == '-' || name[n - 1] == '.')
		return -1;
	for (; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
			return -1;
	if (strstr(name, ".."))
		return -1;
	for (size_t i = 0; i <= n; i++)
		out[i] = (char)tolower((unsigned char)name[i]);
	return 0;
}

/* Adds @gn unless an equal name is there already; takes it either way. */
static int push_unique(GENERAL_NAMES *gens, GENERAL_NAME *gn)
{
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(gens, i), gn) == 0) {
			GENERAL_NAME_free(gn);
			return 0;
		}
	}
	if (!sk_GENERAL_NAME_push(gens, gn)) {
		GENERAL_NAME_free(gn);
		return -1;
	}
	return 0;
}

static int add_ip(GENERAL_NAMES *gens, const char *ip, char *err, size_t errlen)
{
	ASN1_OCTET_STRING *oct = a2i_IPADDRESS(ip);
	GENERAL_NAME *gn;

	ERR_clear_error();
	if (!oct) {
		snprintf(err, errlen, "--ip '%s' is not an IPv4 or IPv6 address", ip);
		return -1;
	}
	if (!(gn = GENERAL_NAME_new())) {
		ASN1_OCTET_STRING_free(oct);
		return ssl_fail("out of memory", err, errlen);
	}
	GENERAL_NAME_set0_value(gn, GEN_IPADD, oct);
	return push_unique(gens, gn) < 0 ? ssl_fail("out of memory", err, errlen) : 0;
}

static int add_dns(GENERAL_NAMES *gens, const char *name, char *err, size_t errlen)
{
	char lower[DNS_NAME_MAX + 1];
	ASN1_IA5STRING *ia5;
	GENERAL_NAME *gn;

	if (dns_normalize(name, lower) < 0) {
		snprintf(err, errlen, "--dns '%s' is not a DNS name", name);
		return -1;
	}
	if (!(ia5 = ASN1_IA5STRING_new()) || !ASN1_STRING_set(ia5, lower, -1) ||
	    !(gn = GENERAL_NAME_new())) {
		ASN1_IA5STRING_free(ia5);
		return ssl_fail("out of memory", err, errlen);
	}
	GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
	return push_unique(gens, gn) < 0 ? ssl_fail("out of memory", err, errlen) : 0;
}

/* The defaults, then the caller's, as one subjectAltName extension. */
static int add_sans(X509 *cert, const struct cli_ca_sans *sans, char *err, size_t errlen)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	int ret = -1;

	if (!gens)
		return ssl_fail("out of memory", err, errlen);
	for (size_t i = 0; i < sizeof(default_ips) / sizeof(default_ips[0]); i++)
		if (add_ip(gens, default_ips[i], err, errlen) < 0)
			goto cleanup;
	for (size_t i = 0; i < sizeof(default_dns) / sizeof(default_dns[0]); i++)
		if (add_dns(gens, default_dns[i], err, errlen) < 0)
			goto cleanup;
	for (size_t i = 0; sans && i < sans->n_ips; i++)
		if (add_ip(gens, sans->ips[i], err, errlen) < 0)
			goto cleanup;
	for (size_t i = 0; sans && i < sans->n_dns; i++)
		if (add_dns(gens, sans->dns[i], err, errlen) < 0)
			goto cleanup;
	if (!X509_add1_ext_i2d(cert, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT)) {
		ssl_fail("cannot add the subject alternative names", err, errlen);
		goto cleanup;
	}
	ret = 0;
cleanup:
	GENERAL_NAMES_free(gens);
	return ret;
}

/* The CA's certificate and key from DIR, checked to belong together. */
static int load_ca(const char *dir, X509 **cert, EVP_PKEY **key, char *err, size_t errlen)
{
	char path[PATH_MAX];
	FILE *f;

	if (path_of(dir, "ca", ".crt", path, sizeof(path), err, errlen) < 0)
		return -1;
	if (!(f = fopen(path, "r"))) {
		snprintf(err, errlen, "cannot read %s: %s (run `dbward ca init %s` first)", path,
			 strerror(errno), dir);
		return -1;
	}
	*cert = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!*cert)
		return ssl_fail(path, err, errlen);
	if (path_of(dir, "ca", ".key", path, sizeof(path), err, errlen) < 0)
		return -1;
	if (!(f = fopen(path, "r"))) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	*key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!*key)
		return ssl_fail(path, err, errlen);
	if (!X509_check_private_key(*cert, *key))
		return ssl_fail("ca.key is not the key of ca.crt", err, errlen);
	return 0;
}

static X509 *make_leaf_cert(EVP_PKEY *key, const char *name, X509 *ca, EVP_PKEY *ca_key,
			    const struct cli_ca_sans *sans, char *err, size_t errlen)
{
	X509 *cert = cert_begin(key, name, CLI_CA_LEAF_DAYS);
	X509V3_CTX v3;

	if (!cert) {
		ssl_fail("cannot make the certificate", err, errlen);
		return NULL;
	}
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, ca, cert, NULL, NULL, 0);
	if (!X509_set_issuer_name(cert, X509_get_subject_name(ca)) ||
	    add_ext(cert, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    add_ext(cert, &v3, NID_key_usage, "critical,digitalSignature") < 0 ||
	    add_ext(cert, &v3, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
	    add_ext(cert, &v3, NID_subject_key_identifier, "hash") < 0 ||
	    add_ext(cert, &v3, NID_authority_key_identifier, "keyid:always") < 0) {
		ssl_fail("cannot add the certificate's extensions", err, errlen);
		goto fail;
	}
	if (add_sans(cert, sans, err, errlen) < 0)
		goto fail;
	if (!X509_sign(cert, ca_key, EVP_sha256())) {
		ssl_fail("cannot sign the certificate", err, errlen);
		goto fail;
	}
	return cert;
fail:
	X509_free(cert);
	return NULL;
}

int cli_ca_issue(const char *dir, const char *name, const struct cli_ca_sans *sans, char *err,
		 size_t errlen)
{
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	int ret = -1;

	if (cli_ca_check_name(name, err, errlen) < 0 ||
	    load_ca(dir, &ca, &ca_key, err, errlen) < 0)
		goto cleanup;
	if (!(key = new_key())) {
		ssl_fail("cannot generate a key", err, errlen);
		goto cleanup;
	}
	if (!(cert = make_leaf_cert(key, name, ca, ca_key, sans, err, errlen)))
		goto cleanup;
	ret = write_pair(dir, name, cert, key, err, errlen);
cleanup:
	X509_free(cert);
	EVP_PKEY_free(key);
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	return ret;
}
