/*
 * The agent's audit sink. Event loops hand over finished JSON lines; a
 * writer thread appends them to the configured file, so no loop waits on
 * the disk. Nothing is dropped: when the queue is full (the disk is slower
 * than the events for a long while) producers wait for room.
 */
#ifndef DBWARD_AGENT_AUDIT_H
#define DBWARD_AGENT_AUDIT_H

#include <stddef.h>

struct audit;

/* Opens @path for appending (creating it 0640) and starts the writer. */
int audit_open(const char *path, struct audit **out);
/* Takes a copy of @line (a whole line, '\n' included). Thread-safe. */
int audit_submit(struct audit *a, const char *line, size_t len);
/* Writes out everything queued, stops the writer, closes the file. */
void audit_close(struct audit *a);

#endif
