#include "collector/query.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_SEC 1000000000ull
#define MAX_UNIX_SEC (UINT64_MAX / NS_PER_SEC)	/* 2554-07-21 */

void query_add(struct query *q, const char *name, const char *value)
{
	if (q->n == QUERY_MAX_PARAMS) {
		q->overflow = true;
		return;
	}
	q->params[q->n++] = (struct query_param){ .name = name, .value = value };
}

/* --- numbers and times -------------------------------------------------------- */

/* Exactly @width digits at *@p. */
static int digits(const char **p, int width, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < width; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -EINVAL;
		v = v * 10 + (unsigned)((*p)[i] - '0');
	}
	*p += width;
	*out = v;
	return 0;
}

/* ".123456789": up to 9 digits as ns; nothing at all is 0. */
static int fraction(const char **p, uint64_t *ns)
{
	uint64_t scale = NS_PER_SEC / 10;

	*ns = 0;
	if (**p != '.')
		return 0;
	(*p)++;
	if (!isdigit((unsigned char)**p))
		return -EINVAL;
	for (; isdigit((unsigned char)**p); (*p)++) {
		if (scale == 0)
			return -EINVAL;	/* finer than ns */
		*ns += (uint64_t)(**p - '0') * scale;
		scale /= 10;
	}
	return 0;
}

static int parse_uint64(const char *text, uint64_t *out)
{
	char *end;

	if (!isdigit((unsigned char)text[0]))
		return -EINVAL;
	errno = 0;
	*out = strtoull(text, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	return *end ? -EINVAL : 0;
}

static int unix_seconds(const char *text, uint64_t *ns)
{
	char whole[24];
	size_t n = strspn(text, "0123456789");
	const char *rest = text + n;
	uint64_t sec, frac;
	int rc;

	if (n == 0 || fraction(&rest, &frac) < 0 || *rest)
		return -EINVAL;
	if (n >= sizeof(whole))
		return -ERANGE;
	memcpy(whole, text, n);
	whole[n] = '\0';
	if ((rc = parse_uint64(whole, &sec)) < 0)
		return rc;
	if (sec > MAX_UNIX_SEC || sec * NS_PER_SEC > UINT64_MAX - frac)
		return -ERANGE;
	*ns = sec * NS_PER_SEC + frac;
	return 0;
}

static bool is_leap(unsigned y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const unsigned days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days from 1970-01-01 to y-m-d (y >= 1970). */
static uint64_t days_since_epoch(unsigned y, unsigned m, unsigned d)
{
	uint64_t days = 0;

	for (unsigned year = 1970; year < y; year++)
		days += is_leap(year) ? 366 : 365;
	for (unsigned month = 1; month < m; month++)
		days += days_in_month(y, month);
	return days + d - 1;
}

static int date_part(const char **p, unsigned *y, unsigned *m, unsigned *d)
{
	if (digits(p, 4, y) < 0 || *(*p)++ != '-' || digits(p, 2, m) < 0 || *(*p)++ != '-' ||
	    digits(p, 2, d) < 0)
		return -EINVAL;
	if (*m < 1 || *m > 12 || *d < 1 || *d > days_in_month(*y, *m))
		return -EINVAL;
	return 0;
}

/* "hh:mm:ss[.frac]" into seconds of the day and ns. */
static int time_part(const char **p, uint64_t *sec, uint64_t *frac)
{
	unsigned h, mi, s;

	if (digits(p, 2, &h) < 0 || *(*p)++ != ':' || digits(p, 2, &mi) < 0 ||
	    *(*p)++ != ':' || digits(p, 2, &s) < 0 || fraction(p, frac) < 0)
		return -EINVAL;
	if (h > 23 || mi > 59 || s > 60)	/* 60: a leap second */
		return -EINVAL;
	*sec = h * 3600u + mi * 60u + s;
	return 0;
}

/* "Z" or "+hh:mm" / "-hh:mm" into seconds east of UTC. */
static int offset_part(const char **p, int64_t *east)
{
	char sign = **p;
	unsigned h, m;

	if (sign == 'Z' || sign == 'z') {
		(*p)++;
		*east = 0;
		return 0;
	}
	if (sign != '+' && sign != '-')
		return -EINVAL;
	(*p)++;
	if (digits(p, 2, &h) < 0 || *(*p)++ != ':' || digits(p, 2, &m) < 0 || h > 23 || m > 59)
		return -EINVAL;
	*east = (sign == '-' ? -1 : 1) * (int64_t)(h * 3600u + m * 60u);
	return 0;
}

static int rfc3339(const char *text, uint64_t *ns)
{
	const char *p = text;
	unsigned y, m, d;
	uint64_t sec = 0, frac = 0;
	int64_t east = 0, total;

	if (date_part(&p, &y, &m, &d) < 0)
		return -EINVAL;
	if (*p) {
		if (*p != 'T' && *p != 't' && *p != ' ')
			return -EINVAL;
		p++;
		if (time_part(&p, &sec, &frac) < 0 || offset_part(&p, &east) < 0 || *p)
			return -EINVAL;
	}
	if (y < 1970 || y > 2554)
		return -ERANGE;
	total = (int64_t)(days_since_epoch(y, m, d) * 86400u + sec) - east;
	if (total < 0 || (uint64_t)total > MAX_UNIX_SEC ||
	    (uint64_t)total * NS_PER_SEC > UINT64_MAX - frac)
		return -ERANGE;
	*ns = (uint64_t)total * NS_PER_SEC + frac;
	return 0;
}

int query_parse_time(const char *text, uint64_t *ns)
{
	size_t n = strspn(text, "0123456789");

	/* A date has '-' after four digits; unix seconds never do. */
	if (n == 4 && text[4] == '-')
		return rfc3339(text, ns);
	return unix_seconds(text, ns);
}

int query_parse_id(const char *text, uint64_t *id)
{
	if (parse_uint64(text, id) < 0 || *id == 0)
		return -EINVAL;
	return 0;
}

/* --- the filter table ------------------------------------------------------------ */

enum filter_type {
	FILTER_TIME,
	FILTER_STRING,
	FILTER_WORD,
	FILTER_PID,
	FILTER_AFTER,
	FILTER_LIMIT,
};

struct filter_param {
	const char *name;
	enum filter_type type;
	size_t offset;			/* in struct store_filter */
	const char *const *words;	/* FILTER_WORD: NULL-ended */
};

static const char *const verdict_words[] = { "allow", "deny", NULL };
static const char *const kind_words[] = {
	"connection_open", "connection_close", "statement", NULL,
};

#define AT(field) .offset = offsetof(struct store_filter, field)

static const struct filter_param filter_params[] = {
	{ "since", FILTER_TIME, AT(since_ns), NULL },
	{ "until", FILTER_TIME, AT(until_ns), NULL },
	{ "agent", FILTER_STRING, AT(agent_id), NULL },
	{ "pid", FILTER_PID, AT(pid), NULL },
	{ "comm", FILTER_STRING, AT(comm), NULL },
	{ "user", FILTER_STRING, AT(user), NULL },
	{ "pod", FILTER_STRING, AT(pod), NULL },
	{ "db_user", FILTER_STRING, AT(db_user), NULL },
	{ "database", FILTER_STRING, AT(database), NULL },
	{ "verdict", FILTER_WORD, AT(verdict), verdict_words },
	{ "kind", FILTER_WORD, AT(kind), kind_words },
	{ "session", FILTER_STRING, AT(session_id), NULL },
	{ "q", FILTER_STRING, AT(text), NULL },
	{ "after", FILTER_AFTER, AT(after_id), NULL },
	{ "limit", FILTER_LIMIT, AT(limit), NULL },
};

#undef AT
#define N_FILTER_PARAMS (sizeof(filter_params) / sizeof(filter_params[0]))

static const struct filter_param *filter_param_find(const char *name)
{
	for (size_t i = 0; i < N_FILTER_PARAMS; i++) {
		if (strcmp(filter_params[i].name, name) == 0)
			return &filter_params[i];
	}
	return NULL;
}

static int set_time(const struct filter_param *p, const char *value, void *field, char *err,
		    size_t errlen)
{
	uint64_t ns;
	int rc = query_parse_time(value, &ns);

	if (rc == -ERANGE) {
		snprintf(err, errlen, "%s: '%s' is out of range (1970 to 2554)", p->name, value);
		return -1;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: '%s' is not a time (expected RFC 3339 like "
			 "2026-11-23T10:00:00Z, or unix seconds)", p->name, value);
		return -1;
	}
	/* 0 means "any" to the store; until 1970 itself means "nothing". */
	if (ns == 0 && strcmp(p->name, "until") == 0)
		ns = 1;
	if (ns > INT64_MAX)	/* the store compares signed 64-bit integers */
		ns = INT64_MAX;
	memcpy(field, &ns, sizeof(ns));
	return 0;
}

static int set_word(const struct filter_param *p, const char *value, void *field, char *err,
		    size_t errlen)
{
	char allowed[128] = "";

	for (size_t i = 0; p->words[i]; i++) {
		if (strcmp(value, p->words[i]) == 0) {
			memcpy(field, &p->words[i], sizeof(char *));
			return 0;
		}
	}
	for (size_t i = 0; p->words[i]; i++) {
		size_t used = strlen(allowed);

		snprintf(allowed + used, sizeof(allowed) - used, "%s%s", i ? ", " : "",
			 p->words[i]);
	}
	snprintf(err, errlen, "%s: unknown value '%s' (expected one of: %s)", p->name, value,
		 allowed);
	return -1;
}

/* pid, after, limit: decimal within a range. */
static int set_number(const struct filter_param *p, const char *value, void *field, char *err,
		      size_t errlen)
{
	uint64_t v, min = 0, max = UINT64_MAX;

	if (p->type == FILTER_PID)
		max = UINT32_MAX;
	else if (p->type == FILTER_LIMIT)
		min = 1, max = QUERY_MAX_LIMIT;
	if (parse_uint64(value, &v) < 0 || v < min || v > max) {
		snprintf(err, errlen, "%s: '%s' is not a number in %llu..%llu", p->name, value,
			 (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	if (p->type == FILTER_PID) {
		int64_t pid = (int64_t)v;

		memcpy(field, &pid, sizeof(pid));
	} else if (p->type == FILTER_LIMIT) {
		uint32_t limit = (uint32_t)v;

		memcpy(field, &limit, sizeof(limit));
	} else {
		if (v > INT64_MAX)	/* ids are signed 64-bit: past every one */
			v = INT64_MAX;
		memcpy(field, &v, sizeof(v));
	}
	return 0;
}

static int set_param(const struct filter_param *p, const char *value, struct store_filter *f,
		     char *err, size_t errlen)
{
	void *field = (char *)f + p->offset;

	if (strlen(value) > QUERY_MAX_VALUE) {
		snprintf(err, errlen, "%s: longer than %d bytes", p->name, QUERY_MAX_VALUE);
		return -1;
	}
	switch (p->type) {
	case FILTER_TIME:
		return set_time(p, value, field, err, errlen);
	case FILTER_WORD:
		return set_word(p, value, field, err, errlen);
	case FILTER_STRING:
		memcpy(field, &value, sizeof(value));
		return 0;
	default:
		return set_number(p, value, field, err, errlen);
	}
}

static bool is_paging(const struct filter_param *p)
{
	return p->type == FILTER_AFTER || p->type == FILTER_LIMIT;
}

static int parse_filter(const struct query *q, bool paging_only, struct store_filter *f,
			char *err, size_t errlen)
{
	bool seen[N_FILTER_PARAMS] = { false };

	memset(f, 0, sizeof(*f));
	f->pid = -1;
	f->limit = QUERY_DEFAULT_LIMIT;
	if (q->overflow) {
		snprintf(err, errlen, "too many parameters (at most %d)", QUERY_MAX_PARAMS);
		return -1;
	}
	for (size_t i = 0; i < q->n; i++) {
		const struct query_param *qp = &q->params[i];
		const struct filter_param *p = filter_param_find(qp->name);

		if (!p) {
			snprintf(err, errlen, "unknown parameter '%.64s'", qp->name);
			return -1;
		}
		if (paging_only && !is_paging(p)) {
			snprintf(err, errlen, "parameter '%s' does not apply here (only after and limit)",
				 p->name);
			return -1;
		}
		if (seen[p - filter_params]) {
			snprintf(err, errlen, "parameter '%s' given more than once", p->name);
			return -1;
		}
		seen[p - filter_params] = true;
		if (qp->value && qp->value[0] && set_param(p, qp->value, f, err, errlen) < 0)
			return -1;
	}
	return 0;
}

int query_filter(const struct query *q, struct store_filter *f, char *err, size_t errlen)
{
	return parse_filter(q, false, f, err, errlen);
}

int query_page(const struct query *q, struct store_filter *f, char *err, size_t errlen)
{
	return parse_filter(q, true, f, err, errlen);
}

/* AGENT_ID@EPOCH, split at the last '@': agent ids may hold one, epochs not. */
static int parse_agent_cursor(const char *text, struct store_agent_cursor *after, char *buf,
			      size_t buflen)
{
	const char *at = strrchr(text, '@');
	uint64_t epoch;

	if (!at || at == text || (size_t)(at - text) >= buflen ||
	    parse_uint64(at + 1, &epoch) < 0 || epoch > INT64_MAX)
		return -1;
	memcpy(buf, text, (size_t)(at - text));
	buf[at - text] = '\0';
	after->agent_id = buf;
	after->epoch = epoch;
	return 0;
}

int query_agent_page(const struct query *q, struct agent_page *page, char *err, size_t errlen)
{
	struct query rest = { .n = 0, .overflow = q->overflow };
	const char *after = NULL;
	struct store_filter f;

	memset(page, 0, sizeof(*page));
	for (size_t i = 0; i < q->n; i++) {
		if (strcmp(q->params[i].name, "after") != 0) {
			query_add(&rest, q->params[i].name, q->params[i].value);
			continue;
		}
		if (after) {
			snprintf(err, errlen, "parameter 'after' given more than once");
			return -1;
		}
		after = q->params[i].value ? q->params[i].value : "";
	}
	if (query_page(&rest, &f, err, errlen) < 0)
		return -1;
	page->limit = f.limit;
	if (!after || !after[0])
		return 0;
	if (strlen(after) > QUERY_MAX_VALUE) {
		snprintf(err, errlen, "after: longer than %d bytes", QUERY_MAX_VALUE);
		return -1;
	}
	if (parse_agent_cursor(after, &page->after, page->after_buf, sizeof(page->after_buf)) < 0) {
		snprintf(err, errlen, "after: '%.64s' is not an agent cursor (expected "
			 "AGENT_ID@EPOCH, as next_after gives)", after);
		return -1;
	}
	return 0;
}
