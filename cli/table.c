#include "cli/table.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define LAST_CELL_MAX 4096		/* code points kept of a last-column cell */
#define ELLIPSIS "..."
#define ELLIPSIS_LEN 3

struct cli_table {
	const struct cli_column *cols;
	size_t ncols;
	char **cells;			/* nrows * ncols, row-major; owned */
	size_t *widths;			/* per cell, in code points */
	size_t nrows;
	size_t cap_rows;
};

/* --- making text safe ---------------------------------------------------- */

/* One UTF-8 sequence at @p: its length, and *@cp (U+FFFD if invalid). */
static size_t utf8_decode(const unsigned char *p, uint32_t *cp)
{
	size_t n;
	uint32_t c;

	if (p[0] < 0x80) {
		*cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, c = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, c = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, c = p[0] & 0x07;
	else
		goto invalid;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			goto invalid;
		c = (c << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		goto invalid;
	*cp = c;
	return n;
invalid:
	*cp = 0xfffd;
	return 1;
}

/* What a terminal would act on, or what reorders text: shown as a blank. */
static int is_blank(uint32_t cp)
{
	return cp <= 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c ||
	       cp == 0x200e || cp == 0x200f || cp == 0x2028 || cp == 0x2029 ||
	       (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Walks a string as its safe form: blanks collapsed to one space, none at
 * either end, invalid bytes as '?'. */
struct clean_iter {
	const unsigned char *p;
	int started;
	int pending_space;
};

/* The next code point's bytes in @buf; 0 at the end. */
static size_t clean_next(struct clean_iter *it, char buf[4])
{
	for (;;) {
		uint32_t cp;
		size_t n;

		if (!*it->p)
			return 0;
		n = utf8_decode(it->p, &cp);
		if (is_blank(cp)) {
			it->p += n;
			it->pending_space = it->started;
			continue;
		}
		if (it->pending_space) {
			it->pending_space = 0;
			buf[0] = ' ';
			return 1;
		}
		it->started = 1;
		if (cp == 0xfffd && n == 1) {
			it->p++;
			buf[0] = '?';
			return 1;
		}
		memcpy(buf, it->p, n);
		it->p += n;
		return n;
	}
}

static size_t clean_count(const char *in)
{
	struct clean_iter it = { .p = (const unsigned char *)in };
	char buf[4];
	size_t n = 0;

	while (clean_next(&it, buf))
		n++;
	return n;
}

size_t cli_text_fit(const char *in, size_t max_cols, char *out, size_t outlen)
{
	struct clean_iter it = { .p = (const unsigned char *)(in ? in : "") };
	size_t total = clean_count(in ? in : ""), keep = total, cols = 0, len = 0, n;
	bool cut = total > max_cols;
	char buf[4];

	if (outlen == 0)
		return 0;
	if (cut)
		keep = max_cols > ELLIPSIS_LEN ? max_cols - ELLIPSIS_LEN : max_cols;
	while (cols < keep && (n = clean_next(&it, buf)) && len + n < outlen) {
		memcpy(out + len, buf, n);
		len += n;
		cols++;
	}
	if (cut && max_cols > ELLIPSIS_LEN && len + ELLIPSIS_LEN < outlen) {
		memcpy(out + len, ELLIPSIS, ELLIPSIS_LEN);
		len += ELLIPSIS_LEN;
		cols += ELLIPSIS_LEN;
	}
	out[len] = '\0';
	return cols;
}

size_t cli_terminal_width(void)
{
	struct winsize ws;

	if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	return 0;
}

/* --- the table ----------------------------------------------------------- */

struct cli_table *cli_table_new(const struct cli_column *cols, size_t ncols)
{
	struct cli_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->cols = cols;
	t->ncols = ncols;
	return t;
}

void cli_table_free(struct cli_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->widths);
	free(t);
}

size_t cli_table_rows(const struct cli_table *t)
{
	return t->nrows;
}

static int table_grow(struct cli_table *t)
{
	size_t cap = t->cap_rows ? 2 * t->cap_rows : 64;
	char **cells;
	size_t *widths;

	if (t->nrows < t->cap_rows)
		return 0;
	if (!(cells = realloc(t->cells, cap * t->ncols * sizeof(*cells))))
		return -ENOMEM;
	t->cells = cells;
	if (!(widths = realloc(t->widths, cap * t->ncols * sizeof(*widths))))
		return -ENOMEM;
	t->widths = widths;
	t->cap_rows = cap;
	return 0;
}

int cli_table_add(struct cli_table *t, const char *const *cells)
{
	size_t base = t->nrows * t->ncols;

	if (table_grow(t) < 0)
		return -ENOMEM;
	for (size_t c = 0; c < t->ncols; c++) {
		bool last = c + 1 == t->ncols;
		size_t max = last ? LAST_CELL_MAX : t->cols[c].max_width;
		size_t len = 4 * max + 1;
		char *cell = malloc(len);

		if (!cell) {
			while (c-- > 0)
				free(t->cells[base + c]);
			return -ENOMEM;
		}
		t->widths[base + c] = cli_text_fit(cells[c] ? cells[c] : "-", max, cell, len);
		t->cells[base + c] = cell;
	}
	t->nrows++;
	return 0;
}

static void put_padded(FILE *out, const char *text, size_t cols, size_t width, bool right)
{
	if (right)
		fprintf(out, "%*s", (int)(width - cols), "");
	fputs(text, out);
	if (!right)
		fprintf(out, "%*s", (int)(width - cols), "");
	fprintf(out, "%*s", CLI_TABLE_GAP, "");
}

/* One line: every column but the last padded, the last fitted to @avail. */
static void put_line(const struct cli_table *t, FILE *out, const char *const *cells,
		     const size_t *cols, const size_t *widths, size_t avail)
{
	size_t last = t->ncols - 1;
	size_t len = 4 * avail + 1;
	char *fitted = malloc(len);

	for (size_t c = 0; c < last; c++)
		put_padded(out, cells[c], cols[c], widths[c], t->cols[c].right);
	if (fitted) {
		cli_text_fit(cells[last], avail, fitted, len);
		fputs(fitted, out);
	}
	free(fitted);
	fputc('\n', out);
}

int cli_table_print(const struct cli_table *t, FILE *out, size_t width)
{
	size_t *widths = calloc(t->ncols, sizeof(*widths));
	size_t *header_cols = calloc(t->ncols, sizeof(*header_cols));
	const char **headers = calloc(t->ncols, sizeof(*headers));
	size_t used = 0, avail;
	int ret = -EIO;

	if (!widths || !header_cols || !headers)
		goto cleanup;
	for (size_t c = 0; c < t->ncols; c++) {
		headers[c] = t->cols[c].header;
		header_cols[c] = widths[c] = strlen(t->cols[c].header);
		for (size_t r = 0; r < t->nrows; r++)
			if (t->widths[r * t->ncols + c] > widths[c])
				widths[c] = t->widths[r * t->ncols + c];
		if (c + 1 < t->ncols)
			used += widths[c] + CLI_TABLE_GAP;
	}
	if (width == 0)
		avail = CLI_TABLE_LAST_PLAIN;
	else
		avail = width > used + CLI_TABLE_MIN_LAST ? width - used : CLI_TABLE_MIN_LAST;
	put_line(t, out, headers, header_cols, widths, avail);
	for (size_t r = 0; r < t->nrows; r++)
		put_line(t, out, (const char *const *)&t->cells[r * t->ncols],
			 &t->widths[r * t->ncols], widths, avail);
	ret = ferror(out) ? -EIO : 0;
cleanup:
	free(widths);
	free(header_cols);
	free(headers);
	return ret;
}
