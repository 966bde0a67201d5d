#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define AUDIT_QUEUE_MAX_BYTES (64u << 20)

struct audit_line {
	struct audit_line *next;
	size_t len;
	char text[];
};

struct audit {
	int fd;
	char *path;
	pthread_t writer;
	pthread_mutex_t lock;
	pthread_cond_t has_lines;
	pthread_cond_t has_room;
	struct audit_line *head;
	struct audit_line **tail;
	size_t queued_bytes;
	bool stopping;
};

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes a chain of lines; on a write error waits and tries again, so a
 * full disk delays events but never loses them. */
static void write_chain(struct audit *a, struct audit_line *line)
{
	while (line) {
		struct audit_line *next = line->next;
		int err;

		while ((err = write_all(a->fd, line->text, line->len)) < 0) {
			log_error("audit: writing %s: %s; retrying", a->path, strerror(-err));
			sleep(1);
		}
		free(line);
		line = next;
	}
}

static void *writer_main(void *arg)
{
	struct audit *a = arg;

	pthread_mutex_lock(&a->lock);
	for (;;) {
		struct audit_line *chain;
		size_t bytes = 0;

		while (!a->head && !a->stopping)
			pthread_cond_wait(&a->has_lines, &a->lock);
		if (!a->head)
			break;
		chain = a->head;
		a->head = NULL;
		a->tail = &a->head;
		for (struct audit_line *l = chain; l; l = l->next)
			bytes += l->len;
		pthread_mutex_unlock(&a->lock);

		write_chain(a, chain);

		pthread_mutex_lock(&a->lock);
		a->queued_bytes -= bytes;
		pthread_cond_broadcast(&a->has_room);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int audit_open(const char *path, struct audit **out)
{
	struct audit *a = calloc(1, sizeof(*a));
	int err;

	if (!a)
		return -ENOMEM;
	a->tail = &a->head;
	a->fd = -1;
	a->path = strdup(path);
	if (!a->path) {
		err = -ENOMEM;
		goto fail;
	}
	a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (a->fd < 0) {
		err = -errno;
		goto fail;
	}
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->has_lines, NULL);
	pthread_cond_init(&a->has_room, NULL);
	err = -pthread_create(&a->writer, NULL, writer_main, a);
	if (err)
		goto fail_sync;
	*out = a;
	return 0;

fail_sync:
	pthread_cond_destroy(&a->has_room);
	pthread_cond_destroy(&a->has_lines);
	pthread_mutex_destroy(&a->lock);
fail:
	if (a->fd >= 0)
		close(a->fd);
	free(a->path);
	free(a);
	return err;
}

int audit_submit(struct audit *a, const char *text, size_t len)
{
	struct audit_line *line = malloc(sizeof(*line) + len);

	if (!line)
		return -ENOMEM;
	line->next = NULL;
	line->len = len;
	memcpy(line->text, text, len);

	pthread_mutex_lock(&a->lock);
	while (a->queued_bytes + len > AUDIT_QUEUE_MAX_BYTES && a->queued_bytes > 0)
		pthread_cond_wait(&a->has_room, &a->lock);
	*a->tail = line;
	a->tail = &line->next;
	a->queued_bytes += len;
	pthread_cond_signal(&a->has_lines);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->stopping = true;
	pthread_cond_signal(&a->has_lines);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->writer, NULL);
	if (fsync(a->fd) < 0 && errno != EINVAL)
		log_warn("audit: fsync %s: %s", a->path, strerror(errno));
	close(a->fd);
	pthread_cond_destroy(&a->has_room);
	pthread_cond_destroy(&a->has_lines);
	pthread_mutex_destroy(&a->lock);
	free(a->path);
	free(a);
}
