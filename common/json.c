#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jsonbuf_init(struct jsonbuf *jb)
{
	memset(jb, 0, sizeof(*jb));
}

void jsonbuf_release(struct jsonbuf *jb)
{
	free(jb->data);
	jsonbuf_init(jb);
}

static bool make_room(struct jsonbuf *jb, size_t more)
{
	size_t cap;
	char *grown;

	if (jb->failed)
		return false;
	if (jb->len + more <= jb->cap)
		return true;
	cap = jb->cap ? jb->cap : 256;
	while (cap < jb->len + more)
		cap *= 2;
	grown = realloc(jb->data, cap);
	if (!grown) {
		jb->failed = true;
		return false;
	}
	jb->data = grown;
	jb->cap = cap;
	return true;
}

static void put(struct jsonbuf *jb, const char *s, size_t n)
{
	if (!make_room(jb, n))
		return;
	memcpy(jb->data + jb->len, s, n);
	jb->len += n;
}

static void put_char(struct jsonbuf *jb, char c)
{
	put(jb, &c, 1);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	size_t need;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		need = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		need = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		need = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (n < need)
		return 0;
	for (size_t i = 1; i < need; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, surrogates and values past U+10FFFF are invalid. */
	if ((need == 2 && cp < 0x80) || (need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return need;
}

static void put_string(struct jsonbuf *jb, const char *value, size_t len)
{
	const unsigned char *s = (const unsigned char *)value;
	size_t i = 0;

	put_char(jb, '"');
	while (i < len) {
		unsigned char c = s[i];
		size_t seq, run;
		char esc[8];

		/* Most text is plain ASCII: copy it a run at a time. */
		for (run = i; run < len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' &&
			      s[run] != '\\'; run++)
			;
		if (run > i) {
			put(jb, value + i, run - i);
			i = run;
			continue;
		}
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(jb, esc, 2);
			i++;
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(jb, esc, 6);
			i++;
		} else if ((seq = utf8_seq_len(s + i, len - i)) == 0) {
			put(jb, "\\ufffd", 6);
			i++;
		} else {
			put(jb, value + i, seq);
			i += seq;
		}
	}
	put_char(jb, '"');
}

static void put_key(struct jsonbuf *jb, const char *key)
{
	if (jb->need_comma)
		put_char(jb, ',');
	jb->need_comma = true;
	put_string(jb, key, strlen(key));
	put_char(jb, ':');
}

void jsonbuf_begin(struct jsonbuf *jb)
{
	jb->len = 0;
	jb->failed = false;
	jb->need_comma = false;
	put_char(jb, '{');
}

void jsonbuf_strn(struct jsonbuf *jb, const char *key, const char *value, size_t len)
{
	put_key(jb, key);
	if (value)
		put_string(jb, value, len);
	else
		put(jb, "null", 4);
}

void jsonbuf_str(struct jsonbuf *jb, const char *key, const char *value)
{
	jsonbuf_strn(jb, key, value, value ? strlen(value) : 0);
}

void jsonbuf_u64(struct jsonbuf *jb, const char *key, uint64_t value)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRIu64, value);

	put_key(jb, key);
	put(jb, num, (size_t)n);
}

void jsonbuf_i64(struct jsonbuf *jb, const char *key, int64_t value)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, value);

	put_key(jb, key);
	put(jb, num, (size_t)n);
}

void jsonbuf_bool(struct jsonbuf *jb, const char *key, bool value)
{
	put_key(jb, key);
	if (value)
		put(jb, "true", 4);
	else
		put(jb, "false", 5);
}

void jsonbuf_null(struct jsonbuf *jb, const char *key)
{
	put_key(jb, key);
	put(jb, "null", 4);
}

void jsonbuf_str_array(struct jsonbuf *jb, const char *key, char *const *items, size_t n)
{
	put_key(jb, key);
	put_char(jb, '[');
	for (size_t i = 0; i < n; i++) {
		if (i)
			put_char(jb, ',');
		put_string(jb, items[i], strlen(items[i]));
	}
	put_char(jb, ']');
}

int jsonbuf_finish(struct jsonbuf *jb)
{
	put(jb, "}\n", 2);
	return jb->failed ? -ENOMEM : 0;
}
