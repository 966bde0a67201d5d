/*
 * Hex and base64 for hashes, keys and signatures, strict both ways: one
 * accepted spelling per byte string (lower-case hex; canonical, padded
 * standard base64), so an edited text never decodes to the same bytes.
 */
#ifndef DBWARD_COMMON_ENCODING_H
#define DBWARD_COMMON_ENCODING_H

#include <stddef.h>
#include <stdint.h>

#define HEX_LEN(n) (2 * (n))
#define B64_LEN(n) (4 * (((n) + 2) / 3))

/* Lower-case hex of @len bytes into @out (HEX_LEN(len) + 1, NUL-terminated). */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* Exactly @len bytes from @in_len characters of lower-case hex: 0 or -1. */
int hex_decode(const char *in, size_t in_len, uint8_t *out, size_t len);

/* Padded standard base64, malloc'd and NUL-terminated; NULL on no memory
 * or @len over INT_MAX / 2 (OpenSSL counts in int). */
char *b64_encode(const uint8_t *in, size_t len);
/* Canonical base64 only (padding, no white space, unused bits zero) into
 * @out, which has room for in_len / 4 * 3 bytes. The length, or -1. */
long b64_decode(const char *in, size_t in_len, uint8_t *out);

#endif
