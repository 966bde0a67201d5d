/*
 * A JSON object writer for one-line events. Appends never fail one by one:
 * an allocation failure sets a sticky flag that jsonbuf_finish() reports,
 * so a caller checks once (PgBouncer's pktbuf habit).
 */
#ifndef DBWARD_COMMON_JSON_H
#define DBWARD_COMMON_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct jsonbuf {
	char *data;
	size_t len;
	size_t cap;
	bool failed;
	bool need_comma;
};

void jsonbuf_init(struct jsonbuf *jb);
void jsonbuf_release(struct jsonbuf *jb);

void jsonbuf_begin(struct jsonbuf *jb);
/* A string value; NULL writes null. Invalid UTF-8 becomes U+FFFD. */
void jsonbuf_str(struct jsonbuf *jb, const char *key, const char *value);
void jsonbuf_strn(struct jsonbuf *jb, const char *key, const char *value, size_t len);
void jsonbuf_u64(struct jsonbuf *jb, const char *key, uint64_t value);
void jsonbuf_i64(struct jsonbuf *jb, const char *key, int64_t value);
void jsonbuf_bool(struct jsonbuf *jb, const char *key, bool value);
void jsonbuf_null(struct jsonbuf *jb, const char *key);
/* An array of strings; NULL @items with @n 0 writes []. */
void jsonbuf_str_array(struct jsonbuf *jb, const char *key, char *const *items, size_t n);
/* Closes the object and appends '\n'. Returns 0, or -ENOMEM if any append failed. */
int jsonbuf_finish(struct jsonbuf *jb);

#endif
