#include "common/encoding.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define B64_MAX_INPUT (INT_MAX / 2)	/* EVP_EncodeBlock counts in int */

void hex_encode(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;	/* upper case too: one spelling per hash */
}

int hex_decode(const char *in, size_t in_len, uint8_t *out, size_t len)
{
	if (in_len != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int hi = hex_digit(in[2 * i]), lo = hex_digit(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

char *b64_encode(const uint8_t *in, size_t len)
{
	char *out;

	if (len > B64_MAX_INPUT)
		return NULL;
	out = malloc(B64_LEN(len) + 1);
	if (out)
		EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Checked by encoding the result again: the canonical spelling only. */
long b64_decode(const char *in, size_t in_len, uint8_t *out)
{
	size_t pad, len;
	char *again;
	int n;
	bool same;

	if (in_len % 4 != 0 || in_len > B64_MAX_INPUT)
		return -1;
	if (in_len == 0)
		return 0;
	pad = (size_t)(in[in_len - 1] == '=') + (size_t)(in[in_len - 2] == '=');
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)in_len);
	if (n < 0 || (size_t)n != in_len / 4 * 3)
		return -1;
	len = (size_t)n - pad;
	again = b64_encode(out, len);
	if (!again)
		return -1;
	same = strlen(again) == in_len && memcmp(again, in, in_len) == 0;
	free(again);
	return same ? (long)len : -1;
}
