/*
 * Throwaway certificates for the TLS tests, made with the OpenSSL API (no
 * openssl command at test time) in a fresh directory under $TMPDIR.
 *
 *   ca.crt                 the test CA ("dbward test CA")
 *   server.{crt,key}       CN=localhost, SAN DNS:localhost, IP:127.0.0.1, from ca
 *   client.{crt,key}       CN=agent-7, clientAuth, from ca
 *   two-cn-client.{crt,key}  two CN entries, from ca
 *   expired.{crt,key}      like server, expired yesterday, from ca
 *   selfsigned.{crt,key}   like server, signed by itself
 *   foreign-ca.crt         another CA
 *   foreign-server.{crt,key}, foreign-client.{crt,key}  like server and
 *                          client (same names), from foreign-ca
 *   encrypted.key          server.key under the passphrase "secret"
 *   empty.pem              a file with no PEM in it
 */
#ifndef DBWARD_TESTS_TLS_FIXTURES_H
#define DBWARD_TESTS_TLS_FIXTURES_H

#include <stddef.h>

#define TLS_FIXTURES_PATH_MAX 256

struct tls_fixtures {
	char dir[TLS_FIXTURES_PATH_MAX];
};

/* Creates the directory and every file above. Returns 0 or -1 (and
 * leaves nothing behind). */
int tls_fixtures_create(struct tls_fixtures *fx);
/* Removes the files and the directory. */
void tls_fixtures_remove(struct tls_fixtures *fx);
/* "<dir>/<name>" in @buf; returns @buf. */
const char *tls_fixtures_path(const struct tls_fixtures *fx, const char *name, char *buf,
			      size_t len);

#endif
