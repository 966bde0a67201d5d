/*
 * TLS over non-blocking sockets (OpenSSL 3): contexts built from files,
 * connections driven by the caller's event loop.
 *
 * Threads. A context is read-only once built and may be shared by every
 * event loop; a connection belongs to one thread at a time. A connection
 * keeps its own reference to what it needs, so a context may be freed
 * (config reload) while connections made from it live on.
 *
 * Driving a connection from an edge-triggered loop:
 *   - Every call returns a status. TLS_WANT_READ means the socket is
 *     drained: clear its can_read flag and retry the same call after the
 *     next EPOLLIN edge. TLS_WANT_WRITE means the socket is full: clear
 *     can_write and retry the same call after EPOLLOUT. Either may come
 *     back from any call (a read can need to write, and the reverse).
 *   - A read shorter than asked does NOT mean the socket is drained:
 *     tls_read() returns at most what is left of one record. Only
 *     TLS_WANT_READ does. Likewise a short tls_write() (one record) does
 *     not mean the socket is full; only TLS_WANT_WRITE does.
 *   - tls_read() may leave decrypted bytes inside the connection after the
 *     socket is empty (a record larger than the caller's buffer). No epoll
 *     edge will ever announce them. A caller that stops reading before
 *     TLS_WANT_READ (its buffer filled up) must come back on its own;
 *     tls_pending() says how many bytes are waiting.
 *   - After TLS_WANT_* from tls_write(), the next tls_write() must offer
 *     the same bytes again (at least as many, from any address: the buffer
 *     may move), before any other data.
 *
 * Ends of a stream: TLS_EOF is a clean close (the peer sent close_notify).
 * TLS_TRUNCATED is the transport ending without it, which an attacker on
 * the path can also cause: what came before may be cut short. Both are
 * reported, never folded into one another (SSL_OP_IGNORE_UNEXPECTED_EOF is
 * off on purpose).
 *
 * Nothing here aborts, prompts for a passphrase or raises SIGPIPE. The fd
 * stays the caller's: tls_conn_free() does not close it.
 */
#ifndef DBWARD_COMMON_TLS_H
#define DBWARD_COMMON_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for any error text this module writes. */
#define TLS_ERR_LEN 512
#define TLS_SHA256_LEN 32

struct tls_ctx;
struct tls_conn;

enum tls_status {
	TLS_OK,			/* done; for read/write, *n bytes moved */
	TLS_WANT_READ,		/* retry the same call when the socket is readable */
	TLS_WANT_WRITE,		/* retry the same call when the socket is writable */
	TLS_EOF,		/* the peer closed cleanly (close_notify) */
	TLS_TRUNCATED,		/* the transport ended without close_notify */
	TLS_ERROR,		/* failed: tls_conn_error() says why */
};

/* How a client checks the server, named as libpq's sslmode. */
enum tls_verify {
	TLS_VERIFY_NONE,	/* encrypt only (sslmode=require) */
	TLS_VERIFY_CA,		/* chain to ca_file (sslmode=verify-ca) */
	TLS_VERIFY_FULL,	/* chain + name or IP in the certificate (verify-full) */
};

struct tls_server_opts {
	const char *cert_file;		/* PEM: the certificate, then intermediates */
	const char *key_file;		/* PEM, unencrypted */
	const char *client_ca_file;	/* PEM; set: client certificates are
					 * required and verified against it (mTLS) */
};

struct tls_client_opts {
	enum tls_verify verify;
	const char *ca_file;		/* PEM; required for VERIFY_CA and VERIFY_FULL */
	const char *cert_file;		/* optional client certificate (mTLS) */
	const char *key_file;		/* with cert_file */
};

/*
 * Contexts. Both: TLS 1.2 minimum, OpenSSL's default ciphers at security
 * level 2, no compression, no renegotiation, no session resumption (no
 * tickets, no cache), buffers released while a connection is idle.
 * Return 0, -EINVAL (bad options, unreadable or invalid file: @err names
 * the file and OpenSSL's reason) or -ENOMEM.
 */
int tls_ctx_new_server(const struct tls_server_opts *opts, struct tls_ctx **out, char *err,
		       size_t errlen);
int tls_ctx_new_client(const struct tls_client_opts *opts, struct tls_ctx **out, char *err,
		       size_t errlen);
/* NULL-safe. Connections made from @ctx stay valid. */
void tls_ctx_free(struct tls_ctx *ctx);

/*
 * A connection over @fd, a connected non-blocking stream socket on which
 * no TLS byte has been read or written yet. @server_name: for a client
 * context, the host the caller dialled: sent as SNI when it is a DNS name,
 * and what VERIFY_FULL matches (a DNS name or an IPv4/IPv6 literal);
 * required for VERIFY_FULL, may be NULL otherwise. NULL for a server
 * context. Returns 0, -EINVAL (@err says why) or -ENOMEM.
 */
int tls_conn_new(struct tls_ctx *ctx, int fd, const char *server_name, struct tls_conn **out,
		 char *err, size_t errlen);
/* NULL-safe; does not close the fd and sends nothing (see tls_shutdown). */
void tls_conn_free(struct tls_conn *c);

/*
 * Runs the handshake: TLS_OK once it is complete, TLS_WANT_*, or
 * TLS_TRUNCATED / TLS_ERROR when it failed. Certificate checks happen
 * here. Under TLS 1.3 a client learns that the server refused its
 * certificate only on its first tls_read() (TLS_ERROR), not here.
 */
enum tls_status tls_handshake(struct tls_conn *c);

/*
 * Reads up to @len decrypted bytes: TLS_OK with *@n > 0, TLS_WANT_*,
 * TLS_EOF, TLS_TRUNCATED or TLS_ERROR (*@n is then 0). Runs the handshake
 * first if it is not complete.
 */
enum tls_status tls_read(struct tls_conn *c, void *buf, size_t len, size_t *n);

/*
 * Writes up to @len bytes: TLS_OK with 0 < *@n <= @len (a partial write,
 * often one 16 KiB record: offer the rest next), TLS_WANT_* (*@n is 0;
 * offer the same bytes again, see above) or TLS_ERROR (a peer that went
 * away included: EPIPE, never SIGPIPE). Runs the handshake first if it
 * is not complete.
 */
enum tls_status tls_write(struct tls_conn *c, const void *buf, size_t len, size_t *n);

/* Decrypted bytes a tls_read() returns without touching the socket
 * (SSL_pending: the rest of the record being read). */
size_t tls_pending(const struct tls_conn *c);

/*
 * Sends close_notify once, without waiting for the peer's: TLS_OK when it
 * was sent (or there is nothing to send it on: no completed handshake, a
 * failed connection), TLS_WANT_WRITE when the socket is full (retry after
 * EPOLLOUT, or give up: it is best effort), TLS_ERROR when the socket
 * failed. Close the fd in every case.
 */
enum tls_status tls_shutdown(struct tls_conn *c);

/* Why the last TLS_ERROR or TLS_TRUNCATED happened; "" if none did. */
const char *tls_conn_error(const struct tls_conn *c);

/* --- after the handshake ------------------------------------------------ */

/* "TLSv1.3", "TLSv1.2"; "" before the handshake. For logs. */
const char *tls_version(const struct tls_conn *c);
/* "TLS_AES_256_GCM_SHA384"; "" before the handshake. For logs. */
const char *tls_cipher(const struct tls_conn *c);

/*
 * True when the peer presented a certificate and this side verified it:
 * a server with client_ca_file, a client with VERIFY_CA or VERIFY_FULL.
 * Identify a peer by the functions below only when this holds.
 */
bool tls_peer_verified(const struct tls_conn *c);

/*
 * The peer certificate's subject common name (the agent's name, for mTLS)
 * as a NUL-terminated string. Returns 0, -ENOENT (no certificate, or no
 * CN), -EINVAL (several CNs, or bytes that are not printable ASCII: never
 * guess an identity) or -ENOSPC (@len too small).
 */
int tls_peer_subject_cn(const struct tls_conn *c, char *buf, size_t len);

/* The same for the first certificate in the PEM file @path: 0, -ENOENT
 * (unreadable, or no CN), -EINVAL (not a certificate, or a CN as above),
 * -ENOSPC. */
int tls_cert_file_cn(const char *path, char *buf, size_t len);

/* The whole subject, one line (RFC 2253), for logs. 0, -ENOENT, -ENOSPC. */
int tls_peer_subject(const struct tls_conn *c, char *buf, size_t len);

/* SHA-256 of the peer certificate (DER). Returns 0 or -ENOENT. */
int tls_peer_fingerprint_sha256(const struct tls_conn *c, uint8_t out[TLS_SHA256_LEN]);

const char *tls_status_name(enum tls_status status);

#endif
