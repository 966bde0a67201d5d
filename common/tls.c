#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	bool is_server;
	enum tls_verify verify;		/* client contexts */
};

struct tls_conn {
	SSL *ssl;
	int fd;
	int sys_errno;		/* the first socket error of the current call */
	bool transport_eof;	/* recv() returned 0 */
	bool established;	/* the handshake completed once */
	bool failed;		/* a fatal error: no more I/O, no close_notify */
	bool shutdown_sent;
	enum tls_status final;	/* what every call returns once failed */
	char err[TLS_ERR_LEN];
};

/* --- error text ------------------------------------------------------------ */

/* "PEM lib", "system lib": an entry that only says which library the
 * failure came through; the entry before it says what failed. */
static bool is_wrapper(unsigned long e)
{
	return !ERR_SYSTEM_ERROR(e) && ERR_COMMON_ERROR(e) &&
	       (ERR_GET_REASON(e) & ((1L << ERR_RFLAGS_OFFSET) - 1)) < 64;
}

/* One queue entry as text: a system error as strerror (its data repeats
 * the file name the caller already gave), others as their reason and the
 * detail OpenSSL attached. */
static void entry_text(unsigned long e, const char *data, int flags, char *buf, size_t len)
{
	const char *reason;
	char sys[128];

	if (ERR_SYSTEM_ERROR(e)) {
		snprintf(buf, len, "%s", strerror_r(ERR_GET_REASON(e), sys, sizeof(sys)));
		return;
	}
	reason = ERR_reason_error_string(e);
	if (!reason) {
		ERR_error_string_n(e, buf, len);
		return;
	}
	if ((flags & ERR_TXT_STRING) && data && *data)
		snprintf(buf, len, "%s (%s)", reason, data);
	else
		snprintf(buf, len, "%s", reason);
}

/*
 * Appends this thread's OpenSSL error queue to @buf, oldest entry (the
 * root cause) first, without wrappers or repeats, and empties the queue.
 */
static void append_queue(char *buf, size_t len)
{
	size_t start = strlen(buf), off = start;
	unsigned long e, wrapper = 0;
	const char *data;
	int flags;

	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		char piece[256];

		if (is_wrapper(e)) {
			wrapper = e;
			continue;
		}
		entry_text(e, data, flags, piece, sizeof(piece));
		if (strcasestr(buf + start, piece))
			continue;
		if (off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s",
						off > start ? ": " : "", piece);
	}
	if (off == start && off < len) {
		const char *reason = wrapper ? ERR_reason_error_string(wrapper) : NULL;

		snprintf(buf + off, len - off, "%s", reason ? reason : "unknown error");
	}
}

static void __attribute__((format(printf, 3, 4)))
openssl_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen) {
		ERR_clear_error();
		return;
	}
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (strlen(err) + 2 < errlen)
		strcat(err, ": ");
	append_queue(err, errlen);
}

static void __attribute__((format(printf, 3, 4)))
plain_error(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* --- the socket BIO ----------------------------------------------------------- */

/*
 * OpenSSL's own socket BIO writes with write(), which raises SIGPIPE on a
 * closed peer (the fatal alert after a truncation goes out that way), and
 * leaves the error in errno, shared with everything else the thread does.
 * This one uses send(MSG_NOSIGNAL) and keeps the error in the connection.
 */
static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static int sock_write(BIO *bio, const char *data, size_t len, size_t *written)
{
	struct tls_conn *c = BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	*written = 0;
	do
		n = send(c->fd, data, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_write(bio);
		else if (!c->sys_errno)
			c->sys_errno = errno;
		return 0;
	}
	*written = (size_t)n;
	return 1;
}

static int sock_read(BIO *bio, char *data, size_t len, size_t *got)
{
	struct tls_conn *c = BIO_get_data(bio);
	ssize_t n;

	BIO_clear_retry_flags(bio);
	*got = 0;
	do
		n = recv(c->fd, data, len, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_read(bio);
		else if (!c->sys_errno)
			c->sys_errno = errno;
		return 0;
	}
	if (n == 0) {
		if (len)
			c->transport_eof = true;
		return 0;
	}
	*got = (size_t)n;
	return 1;
}

static long sock_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
	struct tls_conn *c = BIO_get_data(bio);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		return 1;	/* nothing is buffered here */
	case BIO_CTRL_EOF:
		/* OpenSSL asks this to tell a truncation from a socket error. */
		return c->transport_eof;
	default:
		return 0;
	}
}

static void sock_method_create(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dbward socket");

	if (!m)
		return;
	if (!BIO_meth_set_write_ex(m, sock_write) || !BIO_meth_set_read_ex(m, sock_read) ||
	    !BIO_meth_set_ctrl(m, sock_ctrl)) {
		BIO_meth_free(m);
		return;
	}
	sock_method = m;
}

/* --- contexts ---------------------------------------------------------------- */

/* A daemon must never stop on a tty prompt: encrypted keys are refused.
 * @asked, when set, records that a passphrase was wanted. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	if (asked)
		*(bool *)asked = true;
	return 0;
}

/*
 * What every context shares. No resumption: libpq and our collector
 * client never resume, tickets would need a key rotated across replicas,
 * and a resumed session would skip the client-certificate check the
 * collector identifies agents by.
 */
static int ctx_common(SSL_CTX *ssl_ctx, char *err, size_t errlen)
{
	if (!SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION)) {
		openssl_error(err, errlen, "TLS setup");
		return -EINVAL;
	}
	SSL_CTX_set_security_level(ssl_ctx, 2);
	SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					     SSL_OP_NO_TICKET);
	SSL_CTX_clear_options(ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_session_cache_mode(ssl_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ssl_ctx, 0);
	/*
	 * Partial writes: a write returns after each record, like send().
	 * Moving buffer: a retried write may come from another (recycled)
	 * buffer holding the same bytes. Release buffers: an idle connection
	 * holds no record buffers, as an idle iobuf-based one holds none.
	 */
	SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
					  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					  SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_default_passwd_cb(ssl_ctx, no_passphrase);
	return 0;
}

static int load_cert_and_key(SSL_CTX *ssl_ctx, const char *cert_file, const char *key_file,
			     char *err, size_t errlen)
{
	bool asked = false;
	int ok;

	if (SSL_CTX_use_certificate_chain_file(ssl_ctx, cert_file) != 1) {
		openssl_error(err, errlen, "certificate %s", cert_file);
		return -EINVAL;
	}
	SSL_CTX_set_default_passwd_cb_userdata(ssl_ctx, &asked);
	/* Also refuses a key that does not match the certificate. */
	ok = SSL_CTX_use_PrivateKey_file(ssl_ctx, key_file, SSL_FILETYPE_PEM);
	SSL_CTX_set_default_passwd_cb_userdata(ssl_ctx, NULL);
	if (ok != 1 && asked) {
		ERR_clear_error();
		plain_error(err, errlen,
			    "private key %s is encrypted: dbward needs it unencrypted (and readable by it alone)",
			    key_file);
		return -EINVAL;
	}
	if (ok != 1) {
		openssl_error(err, errlen, "private key %s (for %s)", key_file, cert_file);
		return -EINVAL;
	}
	if (SSL_CTX_check_private_key(ssl_ctx) != 1) {
		openssl_error(err, errlen, "private key %s does not match certificate %s", key_file,
			      cert_file);
		return -EINVAL;
	}
	return 0;
}

static int load_ca(SSL_CTX *ssl_ctx, const char *what, const char *ca_file, char *err,
		   size_t errlen)
{
	if (SSL_CTX_load_verify_locations(ssl_ctx, ca_file, NULL) != 1) {
		openssl_error(err, errlen, "%s %s", what, ca_file);
		return -EINVAL;
	}
	return 0;
}

static bool is_set(const char *s)
{
	return s && *s;
}

static int ctx_new(bool is_server, struct tls_ctx **out, char *err, size_t errlen)
{
	struct tls_ctx *ctx;
	int rc;

	*out = NULL;
	ERR_clear_error();
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		plain_error(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ctx->is_server = is_server;
	ctx->ssl_ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
	if (!ctx->ssl_ctx) {
		openssl_error(err, errlen, "TLS setup");
		free(ctx);
		return -ENOMEM;
	}
	rc = ctx_common(ctx->ssl_ctx, err, errlen);
	if (rc < 0) {
		tls_ctx_free(ctx);
		return rc;
	}
	*out = ctx;
	return 0;
}

int tls_ctx_new_server(const struct tls_server_opts *opts, struct tls_ctx **out, char *err,
		       size_t errlen)
{
	struct tls_ctx *ctx;
	STACK_OF(X509_NAME) *ca_names;
	int rc;

	*out = NULL;
	if (!is_set(opts->cert_file) || !is_set(opts->key_file)) {
		plain_error(err, errlen, "TLS server: a certificate and a key are required");
		return -EINVAL;
	}
	rc = ctx_new(true, &ctx, err, errlen);
	if (rc < 0)
		return rc;
	rc = load_cert_and_key(ctx->ssl_ctx, opts->cert_file, opts->key_file, err, errlen);
	if (rc < 0)
		goto fail;
	if (opts->client_ca_file) {
		rc = load_ca(ctx->ssl_ctx, "client CA", opts->client_ca_file, err, errlen);
		if (rc < 0)
			goto fail;
		/* Tells clients which CA to pick a certificate for. */
		ca_names = SSL_load_client_CA_file(opts->client_ca_file);
		if (!ca_names) {
			openssl_error(err, errlen, "client CA %s", opts->client_ca_file);
			rc = -EINVAL;
			goto fail;
		}
		SSL_CTX_set_client_CA_list(ctx->ssl_ctx, ca_names);
		SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				   NULL);
	}
	*out = ctx;
	return 0;
fail:
	tls_ctx_free(ctx);
	return rc;
}

int tls_ctx_new_client(const struct tls_client_opts *opts, struct tls_ctx **out, char *err,
		       size_t errlen)
{
	struct tls_ctx *ctx;
	int rc;

	*out = NULL;
	if (opts->verify != TLS_VERIFY_NONE && opts->verify != TLS_VERIFY_CA &&
	    opts->verify != TLS_VERIFY_FULL) {
		plain_error(err, errlen, "TLS client: unknown verify mode %d", (int)opts->verify);
		return -EINVAL;
	}
	if (opts->verify != TLS_VERIFY_NONE && !is_set(opts->ca_file)) {
		plain_error(err, errlen, "TLS client: verifying the server needs a CA file");
		return -EINVAL;
	}
	if (is_set(opts->cert_file) != is_set(opts->key_file)) {
		plain_error(err, errlen,
			    "TLS client: a client certificate needs its key, and a key its certificate");
		return -EINVAL;
	}
	rc = ctx_new(false, &ctx, err, errlen);
	if (rc < 0)
		return rc;
	ctx->verify = opts->verify;
	if (is_set(opts->cert_file)) {
		rc = load_cert_and_key(ctx->ssl_ctx, opts->cert_file, opts->key_file, err, errlen);
		if (rc < 0)
			goto fail;
	}
	if (opts->verify != TLS_VERIFY_NONE) {
		rc = load_ca(ctx->ssl_ctx, "CA", opts->ca_file, err, errlen);
		if (rc < 0)
			goto fail;
		SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
	}
	*out = ctx;
	return 0;
fail:
	tls_ctx_free(ctx);
	return rc;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

/* --- connections ---------------------------------------------------------------- */

static bool is_ip_literal(const char *name)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* Letters, digits, '-', '_' and '.', at most 253 of them. */
static bool is_dns_name(const char *name)
{
	size_t n = strlen(name);

	return n && n <= 253 && strspn(name, "abcdefghijklmnopqrstuvwxyz"
					      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
					      "0123456789-_.") == n;
}

/* SNI and the name VERIFY_FULL matches. */
static int set_server_name(struct tls_conn *c, enum tls_verify verify, const char *name,
			   char *err, size_t errlen)
{
	bool ip = is_ip_literal(name);

	/* Brackets and zones ("[::1]", "fe80::1%eth0") are the caller's to strip. */
	if (!ip && !is_dns_name(name)) {
		plain_error(err, errlen, "TLS server name '%.64s' is not a host name or IP address",
			    name);
		return -EINVAL;
	}
	/* RFC 6066: SNI carries host names only, never addresses. */
	if (!ip && !SSL_set_tlsext_host_name(c->ssl, name)) {
		openssl_error(err, errlen, "TLS server name %s", name);
		return -EINVAL;
	}
	if (verify != TLS_VERIFY_FULL)
		return 0;
	if (ip) {
		if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name)) {
			openssl_error(err, errlen, "TLS server address %s", name);
			return -EINVAL;
		}
		return 0;
	}
	SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (!SSL_set1_host(c->ssl, name)) {
		openssl_error(err, errlen, "TLS server name %s", name);
		return -EINVAL;
	}
	return 0;
}

int tls_conn_new(struct tls_ctx *ctx, int fd, const char *server_name, struct tls_conn **out,
		 char *err, size_t errlen)
{
	struct tls_conn *c;
	BIO *bio;
	int rc;

	*out = NULL;
	if (ctx->is_server && server_name) {
		plain_error(err, errlen, "TLS: a server-side connection takes no server name");
		return -EINVAL;
	}
	if (!ctx->is_server && ctx->verify == TLS_VERIFY_FULL && !server_name) {
		plain_error(err, errlen, "TLS: verify-full needs the server's name or address");
		return -EINVAL;
	}
	pthread_once(&sock_method_once, sock_method_create);
	if (!sock_method) {
		plain_error(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ERR_clear_error();
	c = calloc(1, sizeof(*c));
	if (!c) {
		plain_error(err, errlen, "out of memory");
		return -ENOMEM;
	}
	c->fd = fd;
	c->ssl = SSL_new(ctx->ssl_ctx);
	bio = c->ssl ? BIO_new(sock_method) : NULL;
	if (!bio) {
		openssl_error(err, errlen, "TLS connection");
		rc = -ENOMEM;
		goto fail;
	}
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);
	SSL_set_bio(c->ssl, bio, bio);	/* takes the one reference */
	if (ctx->is_server) {
		SSL_set_accept_state(c->ssl);
	} else {
		SSL_set_connect_state(c->ssl);
		if (server_name) {
			rc = set_server_name(c, ctx->verify, server_name, err, errlen);
			if (rc < 0)
				goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	tls_conn_free(c);
	return rc;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	SSL_free(c->ssl);
	free(c);
}

/* Before each OpenSSL call: errors left by another connection of this
 * thread must not be blamed on this one. */
static void begin(struct tls_conn *c)
{
	ERR_clear_error();
	c->sys_errno = 0;
}

static enum tls_status fail(struct tls_conn *c, enum tls_status status)
{
	c->failed = true;
	c->final = status;
	return status;
}

/* "certificate verify failed" says little; the verify result says which
 * check failed. */
static void append_verify_result(struct tls_conn *c)
{
	long result = SSL_get_verify_result(c->ssl);
	size_t off = strlen(c->err);

	if (!(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER) || result == X509_V_OK)
		return;
	if (off < sizeof(c->err))
		snprintf(c->err + off, sizeof(c->err) - off, " (%s)",
			 X509_verify_cert_error_string(result));
}

static bool is_unexpected_eof(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* Turns the result @ret of an OpenSSL call into a status. */
static enum tls_status settle(struct tls_conn *c, int ret, const char *op)
{
	int ssl_error = SSL_get_error(c->ssl, ret);
	char sys[128];

	switch (ssl_error) {
	case SSL_ERROR_NONE:
		return TLS_OK;
	case SSL_ERROR_WANT_READ:
		return TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_EOF;
	case SSL_ERROR_SYSCALL:
	case SSL_ERROR_SSL:
		break;
	default:
		snprintf(c->err, sizeof(c->err), "TLS %s: unexpected OpenSSL state %d", op,
			 ssl_error);
		ERR_clear_error();
		return fail(c, TLS_ERROR);
	}
	/* Before the socket error: the alert OpenSSL sends after an EOF
	 * usually fails with EPIPE, and the EOF is what happened. */
	if (c->transport_eof || is_unexpected_eof(ERR_peek_error())) {
		snprintf(c->err, sizeof(c->err), "TLS %s: %s", op,
			 c->established ? "peer closed the connection without close_notify (truncated)"
					: "peer closed the connection during the handshake");
		ERR_clear_error();
		return fail(c, TLS_TRUNCATED);
	}
	if (c->sys_errno) {
		snprintf(c->err, sizeof(c->err), "TLS %s: %s", op,
			 strerror_r(c->sys_errno, sys, sizeof(sys)));
		ERR_clear_error();
		return fail(c, TLS_ERROR);
	}
	snprintf(c->err, sizeof(c->err), "TLS %s: ", op);
	append_queue(c->err, sizeof(c->err));
	append_verify_result(c);
	return fail(c, TLS_ERROR);
}

enum tls_status tls_handshake(struct tls_conn *c)
{
	int ret;

	if (c->failed)
		return c->final;
	if (c->established)
		return TLS_OK;
	begin(c);
	ret = SSL_do_handshake(c->ssl);
	if (ret == 1) {
		c->established = true;
		return TLS_OK;
	}
	return settle(c, ret, "handshake");
}

enum tls_status tls_read(struct tls_conn *c, void *buf, size_t len, size_t *n)
{
	*n = 0;
	if (c->failed)
		return c->final;
	if (!len)
		return TLS_OK;
	begin(c);
	if (SSL_read_ex(c->ssl, buf, len, n) == 1) {
		c->established = true;	/* SSL_read runs a pending handshake */
		return TLS_OK;
	}
	*n = 0;
	return settle(c, 0, "read");
}

enum tls_status tls_write(struct tls_conn *c, const void *buf, size_t len, size_t *n)
{
	*n = 0;
	if (c->failed)
		return c->final;
	if (!len)
		return TLS_OK;
	begin(c);
	if (SSL_write_ex(c->ssl, buf, len, n) == 1) {
		c->established = true;
		return TLS_OK;
	}
	*n = 0;
	return settle(c, 0, "write");
}

size_t tls_pending(const struct tls_conn *c)
{
	int n = SSL_pending(c->ssl);

	return n > 0 ? (size_t)n : 0;
}

enum tls_status tls_shutdown(struct tls_conn *c)
{
	enum tls_status status;
	int ret;

	/* After a fatal error OpenSSL must not be asked to shut down. */
	if (c->failed || c->shutdown_sent || !c->established)
		return TLS_OK;
	begin(c);
	ret = SSL_shutdown(c->ssl);
	if (ret >= 0) {		/* 0: ours sent, the peer's not awaited */
		c->shutdown_sent = true;
		return TLS_OK;
	}
	status = settle(c, ret, "shutdown");
	return status == TLS_WANT_READ || status == TLS_EOF ? TLS_OK : status;
}

const char *tls_conn_error(const struct tls_conn *c)
{
	return c->err;
}

/* --- peer ----------------------------------------------------------------------- */

const char *tls_version(const struct tls_conn *c)
{
	return c->established ? SSL_get_version(c->ssl) : "";
}

const char *tls_cipher(const struct tls_conn *c)
{
	const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);

	return c->established && cipher ? SSL_CIPHER_get_name(cipher) : "";
}

bool tls_peer_verified(const struct tls_conn *c)
{
	return c->established && !c->failed &&
	       (SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER) &&
	       SSL_get0_peer_certificate(c->ssl) && SSL_get_verify_result(c->ssl) == X509_V_OK;
}

/* The one CN of @cert, printable ASCII only: never guess an identity. */
static int cert_subject_cn(X509 *cert, char *buf, size_t len)
{
	const X509_NAME *name;
	unsigned char *utf8 = NULL;
	int idx, n, rc = 0;

	if (!cert)
		return -ENOENT;
	name = X509_get_subject_name(cert);
	idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0)
		return -ENOENT;
	if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0)
		return -EINVAL;
	n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
	if (n < 0)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		if (utf8[i] < 0x20 || utf8[i] > 0x7e)
			rc = -EINVAL;
	if (!rc && (size_t)n >= len)
		rc = -ENOSPC;
	if (!rc) {
		memcpy(buf, utf8, (size_t)n);
		buf[n] = '\0';
	}
	OPENSSL_free(utf8);
	return rc;
}

int tls_peer_subject_cn(const struct tls_conn *c, char *buf, size_t len)
{
	return cert_subject_cn(SSL_get0_peer_certificate(c->ssl), buf, len);
}

int tls_cert_file_cn(const char *path, char *buf, size_t len)
{
	BIO *in = BIO_new_file(path, "r");
	X509 *cert;
	int rc;

	if (!in)
		return -ENOENT;
	cert = PEM_read_bio_X509(in, NULL, NULL, NULL);
	BIO_free(in);
	if (!cert) {
		ERR_clear_error();
		return -EINVAL;
	}
	rc = cert_subject_cn(cert, buf, len);
	X509_free(cert);
	return rc;
}

int tls_peer_subject(const struct tls_conn *c, char *buf, size_t len)
{
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	BIO *mem;
	char *text;
	long n;
	int rc = 0;

	if (!cert)
		return -ENOENT;
	mem = BIO_new(BIO_s_mem());
	if (!mem)
		return -ENOMEM;
	if (X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
		rc = -EINVAL;
		goto out;
	}
	n = BIO_get_mem_data(mem, &text);
	if (n < 0 || (size_t)n >= len) {
		rc = -ENOSPC;
		goto out;
	}
	memcpy(buf, text, (size_t)n);
	buf[n] = '\0';
out:
	BIO_free(mem);
	ERR_clear_error();
	return rc;
}

int tls_peer_fingerprint_sha256(const struct tls_conn *c, uint8_t out[TLS_SHA256_LEN])
{
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	unsigned int n = 0;

	if (!cert)
		return -ENOENT;
	if (!X509_digest(cert, EVP_sha256(), out, &n) || n != TLS_SHA256_LEN) {
		ERR_clear_error();
		return -EINVAL;
	}
	return 0;
}

const char *tls_status_name(enum tls_status status)
{
	static const char *const names[] = {
		[TLS_OK] = "ok",
		[TLS_WANT_READ] = "want_read",
		[TLS_WANT_WRITE] = "want_write",
		[TLS_EOF] = "eof",
		[TLS_TRUNCATED] = "truncated",
		[TLS_ERROR] = "error",
	};

	if ((unsigned)status < sizeof(names) / sizeof(names[0]))
		return names[status];
	return "unknown";
}
