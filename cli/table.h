/*
 * Aligned text tables for people. Every cell is made safe for a terminal
 * first: control characters (newlines, escapes, C1 controls, bidi
 * overrides) and runs of blanks become one space, so a hostile SQL text
 * cannot move the cursor or fake a line. Widths count code points.
 */
#ifndef DBWARD_CLI_TABLE_H
#define DBWARD_CLI_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CLI_TABLE_MIN_LAST 20		/* on a terminal, the last column never gets less */
#define CLI_TABLE_LAST_PLAIN 80		/* the last column's width when not on a terminal */
#define CLI_TABLE_GAP 2			/* spaces between columns */

struct cli_column {
	const char *header;
	size_t max_width;		/* longer cells are cut with "..."; ignored for the last */
	bool right;			/* right-aligned (numbers) */
};

struct cli_table;

/* Copies @in into @out (of @outlen bytes) made safe as above and cut to
 * @max_cols code points, the last three "..." when cut. Returns the
 * code points written. */
size_t cli_text_fit(const char *in, size_t max_cols, char *out, size_t outlen);

/* The terminal's width when stdout is one, else 0. */
size_t cli_terminal_width(void);

/* NULL when out of memory. @cols must outlive the table. */
struct cli_table *cli_table_new(const struct cli_column *cols, size_t ncols);
void cli_table_free(struct cli_table *t);
/* One row of ncols cells (NULL: "-"). 0 or -ENOMEM. */
int cli_table_add(struct cli_table *t, const char *const *cells);
size_t cli_table_rows(const struct cli_table *t);
/* Header and rows. With @width (a terminal's), each line is cut to it: the
 * last column takes what the others leave, at least CLI_TABLE_MIN_LAST.
 * With 0 (a pipe, a file), the last column is cut at CLI_TABLE_LAST_PLAIN.
 * 0 or -EIO. */
int cli_table_print(const struct cli_table *t, FILE *out, size_t width);

#endif
