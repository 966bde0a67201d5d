#include "agent/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/bytes.h"
#include "common/clock.h"
#include "common/encoding.h"
#include "common/event_json.h"
#include "common/log.h"

#define SEG_NAME_DIGITS 20
#define SEG_SUFFIX ".seg"
#define META_MAGIC "dbward-spool 1"
/* The acked file: two slots written in turn, in place (see write_acked). */
#define ACKED_SLOT 512
/* The smallest payload an Event can be: agent_id, epoch, seq, prev_hash. */
#define EVENT_MIN_LEN 4
/* The shipper's reads: one pread fills this much of a segment. */
#define SPOOL_READ_AHEAD (256u << 10)

_Static_assert(EVENT_HASH_LEN == SPOOL_HASH_LEN, "one hash length");

struct spool_segment {
	uint64_t first_seq;
	uint64_t size;		/* bytes of whole records written */
	uint64_t synced;	/* of those, made durable by spool_sync() */
};

struct spool {
	char *dir;
	char *agent_id;
	uint64_t epoch;
	uint64_t max_bytes;
	int dirfd;

	pthread_mutex_t lock;	/* everything below */
	struct spool_segment *segs;	/* by first_seq; the last one is appended to */
	size_t n_segs, cap_segs;
	uint64_t last_seq;
	uint64_t acked_seq;
	uint8_t acked_hash[SPOOL_HASH_LEN];	/* of event acked_seq */
	uint64_t acked_gen;	/* slot generation last written */
	int acked_slot;		/* the slot holding it: the next write goes to the other */
	int acked_fd;
	uint64_t synced_seq;
	uint64_t bytes;
	bool dir_dirty;		/* a segment was created since the last sync */
	bool broken;		/* a failed write could not be undone: no appends */
	int active_fd;		/* O_APPEND, on the segment named active_first */
	uint64_t active_first;	/* the newest segment, unless an ack deleted it */

	struct spool_info opened;	/* as found by spool_open() */
};

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static uint32_t checksum(const uint8_t *p, size_t len)
{
	return (uint32_t)crc32(crc32(0, Z_NULL, 0), p, (uInt)len);
}

/* --- peeking into an Event ------------------------------------------------ */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*out = v;
			return true;
		}
	}
	return false;
}

uint64_t spool_event_seq(const uint8_t *p, size_t len)
{
	const uint8_t *end = p + len;

	while (p < end) {
		uint64_t key, v;

		if (!read_varint(&p, end, &key))
			return 0;
		switch (key & 7) {
		case 0:
			if (!read_varint(&p, end, &v))
				return 0;
			if (key >> 3 == 3)
				return v;
			break;
		case 1:
			if (end - p < 8)
				return 0;
			p += 8;
			break;
		case 2:
			if (!read_varint(&p, end, &v) || v > (uint64_t)(end - p))
				return 0;
			p += v;
			break;
		case 5:
			if (end - p < 4)
				return 0;
			p += 4;
			break;
		default:
			return 0;
		}
	}
	return 0;
}

/*
 * Checks the record at @p (@avail bytes to the end of the file). Returns
 * its payload length, or 0 with *@why set.
 */
static size_t check_record(const uint8_t *p, size_t avail, uint64_t want_seq, const char **why)
{
	uint32_t len;

	if (avail < SPOOL_HEADER_LEN) {
		*why = "short record header";
		return 0;
	}
	len = spool_get_le32(p);
	if (len < EVENT_MIN_LEN || len > SPOOL_RECORD_MAX) {
		*why = "impossible record length";
		return 0;
	}
	if (len > avail - SPOOL_HEADER_LEN) {
		*why = "record cut short";
		return 0;
	}
	if (checksum(p + SPOOL_HEADER_LEN, len) != spool_get_le32(p + 4)) {
		*why = "checksum mismatch";
		return 0;
	}
	if (want_seq && spool_event_seq(p + SPOOL_HEADER_LEN, len) != want_seq) {
		*why = "record out of sequence";
		return 0;
	}
	return len;
}

/* --- files ------------------------------------------------------------------ */

static void seg_name(char out[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)], uint64_t first_seq)
{
	snprintf(out, SEG_NAME_DIGITS + sizeof(SEG_SUFFIX), "%020" PRIu64 SEG_SUFFIX, first_seq);
}

static bool parse_seg_name(const char *name, uint64_t *first_seq)
{
	uint64_t v = 0;

	if (strlen(name) != SEG_NAME_DIGITS + strlen(SEG_SUFFIX) ||
	    strcmp(name + SEG_NAME_DIGITS, SEG_SUFFIX) != 0)
		return false;
	for (int i = 0; i < SEG_NAME_DIGITS; i++) {
		if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*first_seq = v;
	return v > 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_full(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENODATA;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Replaces @name in the spool directory with @text: tmp, fsync, rename,
 * fsync of the directory. */
static int replace_file(struct spool *s, const char *name, const char *text)
{
	char tmp[64];
	int fd, err = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	err = write_all(fd, text, strlen(text));
	if (!err && fsync(fd) < 0)
		err = -errno;
	if (close(fd) < 0 && !err)
		err = -errno;
	if (!err && renameat(s->dirfd, tmp, s->dirfd, name) < 0)
		err = -errno;
	if (!err && fsync(s->dirfd) < 0)
		err = -errno;
	if (err)
		unlinkat(s->dirfd, tmp, 0);
	return err;
}

/* Reads a small file of the spool directory; -ENOENT when absent. */
static int read_small(struct spool *s, const char *name, char *buf, size_t cap)
{
	int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* "word VALUE\n" in @text: the value as a string (into @out). */
static bool find_word(const char *text, const char *word, char *out, size_t cap)
{
	size_t wlen = strlen(word);

	for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		size_t n;

		if (strncmp(line, word, wlen) != 0 || line[wlen] != ' ')
			continue;
		line += wlen + 1;
		n = strcspn(line, "\n");
		if (n == 0 || n >= cap)
			return false;
		memcpy(out, line, n);
		out[n] = '\0';
		return true;
	}
	return false;
}

static bool find_u64(const char *text, const char *word, uint64_t *out)
{
	char value[32], *end;
	unsigned long long v;

	if (!find_word(text, word, value, sizeof(value)) || value[0] < '0' || value[0] > '9')
		return false;
	errno = 0;
	v = strtoull(value, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* --- opening ------------------------------------------------------------- */

static int make_dirs(const char *path)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Room for one more segment entry. */
static int reserve_segment(struct spool *s)
{
	size_t cap;
	struct spool_segment *segs;

	if (s->n_segs < s->cap_segs)
		return 0;
	cap = s->cap_segs ? s->cap_segs * 2 : 16;
	if (!(segs = realloc(s->segs, cap * sizeof(*segs))))
		return -ENOMEM;
	s->segs = segs;
	s->cap_segs = cap;
	return 0;
}

static int add_segment(struct spool *s, uint64_t first_seq, uint64_t size)
{
	if (reserve_segment(s) < 0)
		return -ENOMEM;
	s->segs[s->n_segs++] = (struct spool_segment){ .first_seq = first_seq, .size = size };
	return 0;
}

static int compare_segments(const void *a, const void *b)
{
	const struct spool_segment *x = a, *y = b;

	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* Lists the segments (sorted) and removes leftover temporary files. */
static int list_segments(struct spool *s, char *err, size_t errlen)
{
	int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *e;
	int res = 0;

	if (fd < 0 || !(d = fdopendir(fd))) {
		res = -errno;
		if (fd >= 0)
			close(fd);
		fail(err, errlen, "spool %s: %s", s->dir, strerror(-res));
		return res;
	}
	while ((e = readdir(d))) {
		uint64_t first;
		struct stat st;
		size_t n = strlen(e->d_name);

		if (n > 4 && strcmp(e->d_name + n - 4, ".tmp") == 0) {
			unlinkat(s->dirfd, e->d_name, 0);
			continue;
		}
		if (!parse_seg_name(e->d_name, &first))
			continue;
		if (fstatat(s->dirfd, e->d_name, &st, 0) < 0) {
			res = -errno;
			fail(err, errlen, "spool %s/%s: %s", s->dir, e->d_name, strerror(-res));
			break;
		}
		if ((res = add_segment(s, first, (uint64_t)st.st_size)) < 0) {
			fail(err, errlen, "spool %s: out of memory", s->dir);
			break;
		}
	}
	closedir(d);
	if (res == 0 && s->n_segs)
		qsort(s->segs, s->n_segs, sizeof(*s->segs), compare_segments);
	return res;
}

static int open_meta(struct spool *s, char *err, size_t errlen)
{
	char text[1024], id[256], line[512];
	int res = read_small(s, "meta", text, sizeof(text));

	if (res == -ENOENT) {
		if (s->n_segs)
			return fail(err, errlen, "spool %s holds segments but no meta file: it was not "
				    "made by this agent or was damaged; move it aside", s->dir), -EINVAL;
		s->epoch = clock_realtime_ns();
		snprintf(text, sizeof(text), META_MAGIC "\nagent_id %s\nepoch %" PRIu64 "\n",
			 s->agent_id, s->epoch);
		res = replace_file(s, "meta", text);
		if (res < 0)
			fail(err, errlen, "spool %s/meta: %s", s->dir, strerror(-res));
		else
			log_info("audit: spool %s created, epoch %" PRIu64, s->dir, s->epoch);
		return res;
	}
	if (res < 0)
		return fail(err, errlen, "spool %s/meta: %s", s->dir, strerror(-res)), res;
	snprintf(line, sizeof(line), "%s\n", META_MAGIC);
	if (strncmp(text, line, strlen(line)) != 0 || !find_word(text, "agent_id", id, sizeof(id)) ||
	    !find_u64(text, "epoch", &s->epoch))
		return fail(err, errlen, "spool %s/meta is not a dbward spool meta file", s->dir),
		       -EINVAL;
	if (strcmp(id, s->agent_id) != 0)
		return fail(err, errlen, "spool %s belongs to agent_id '%s', not '%s': its events "
			    "cannot be sent under another name; move it aside (a new spool starts a "
			    "new epoch)", s->dir, id, s->agent_id), -EINVAL;
	return 0;
}

/*
 * The acked file holds two fixed slots of ACKED_SLOT bytes, each a small
 * text with a generation and a crc; an ack overwrites the older slot in
 * place and fdatasyncs. Overwriting allocated blocks needs no free space,
 * so acks keep working on a full disk, where a new file (tmp + rename)
 * could not be written: and an ack is what frees the disk. A slot torn by
 * a crash fails its crc and the other one, one ack older, is used.
 */
static void format_slot(char slot[ACKED_SLOT], uint64_t gen, uint64_t epoch, uint64_t seq,
			const uint8_t hash[SPOOL_HASH_LEN])
{
	char hex[2 * SPOOL_HASH_LEN + 1];
	int n;

	hex_encode(hash, SPOOL_HASH_LEN, hex);
	memset(slot, '\n', ACKED_SLOT);
	n = snprintf(slot, ACKED_SLOT, "gen %" PRIu64 "\nepoch %" PRIu64 "\nacked_seq %" PRIu64
		     "\nacked_hash %s\n", gen, epoch, seq, hex);
	snprintf(slot + n, ACKED_SLOT - (size_t)n, "crc %08" PRIx32 "\n",
		 checksum((const uint8_t *)slot, (size_t)n));
	slot[strlen(slot)] = '\n';	/* the padding goes on after the NUL */
}

struct acked_slot {
	uint64_t gen, epoch, seq;
	uint8_t hash[SPOOL_HASH_LEN];
};

static bool parse_slot(const char *raw, struct acked_slot *out)
{
	char text[ACKED_SLOT + 1], hex[2 * SPOOL_HASH_LEN + 1], crc_text[16];
	const char *crc_at;
	unsigned long crc;
	char *end;

	memcpy(text, raw, ACKED_SLOT);
	text[ACKED_SLOT] = '\0';
	crc_at = strstr(text, "crc ");
	if (!crc_at || (crc_at != text && crc_at[-1] != '\n') ||
	    !find_word(crc_at, "crc", crc_text, sizeof(crc_text)))
		return false;
	crc = strtoul(crc_text, &end, 16);
	if (*end || crc != checksum((const uint8_t *)text, (size_t)(crc_at - text)))
		return false;
	text[crc_at - text] = '\0';
	return find_u64(text, "gen", &out->gen) && find_u64(text, "epoch", &out->epoch) &&
	       find_u64(text, "acked_seq", &out->seq) &&
	       find_word(text, "acked_hash", hex, sizeof(hex)) &&
	       hex_decode(hex, strlen(hex), out->hash, sizeof(out->hash)) == 0;
}

static int create_acked(struct spool *s)
{
	static const uint8_t zero[SPOOL_HASH_LEN];
	char slots[2 * ACKED_SLOT];
	int fd, err = 0;

	/* Gen 1, the current one, in slot 1: the first ack (gen 2) goes to
	 * slot 0, as each ack goes to the slot not holding the current one
	 * (a spool made before this layout had gen 1 in slot 0: that works too). */
	format_slot(slots, 0, s->epoch, 0, zero);
	format_slot(slots + ACKED_SLOT, 1, s->epoch, 0, zero);
	fd = openat(s->dirfd, "acked.new", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	err = write_all(fd, slots, sizeof(slots));
	if (!err && fsync(fd) < 0)
		err = -errno;
	close(fd);
	if (!err && renameat(s->dirfd, "acked.new", s->dirfd, "acked") < 0)
		err = -errno;
	if (!err && fsync(s->dirfd) < 0)
		err = -errno;
	if (err)
		unlinkat(s->dirfd, "acked.new", 0);
	return err;
}

static int open_acked(struct spool *s, char *err, size_t errlen)
{
	char raw[2 * ACKED_SLOT];
	struct acked_slot slot[2];
	bool ok[2];
	int res, best;

	s->acked_fd = openat(s->dirfd, "acked", O_RDWR | O_CLOEXEC);
	if (s->acked_fd < 0 && errno == ENOENT) {
		if ((res = create_acked(s)) < 0)
			return fail(err, errlen, "spool %s/acked: %s", s->dir, strerror(-res)), res;
		s->acked_fd = openat(s->dirfd, "acked", O_RDWR | O_CLOEXEC);
	}
	if (s->acked_fd < 0)
		return fail(err, errlen, "spool %s/acked: %s", s->dir, strerror(errno)), -errno;
	if ((res = read_full(s->acked_fd, raw, sizeof(raw), 0)) < 0)
		return fail(err, errlen, "spool %s/acked: %s", s->dir,
			    res == -ENODATA ? "too short" : strerror(-res)), -EINVAL;
	ok[0] = parse_slot(raw, &slot[0]);
	ok[1] = parse_slot(raw + ACKED_SLOT, &slot[1]);
	if (!ok[0] && !ok[1])
		return fail(err, errlen, "spool %s/acked is unreadable", s->dir), -EINVAL;
	best = !ok[0] || (ok[1] && slot[1].gen > slot[0].gen);
	if (slot[best].epoch != s->epoch)
		return fail(err, errlen, "spool %s/acked is for epoch %" PRIu64 ", meta says %" PRIu64,
			    s->dir, slot[best].epoch, s->epoch), -EINVAL;
	s->acked_gen = slot[best].gen;
	s->acked_slot = best;
	s->acked_seq = slot[best].seq;
	memcpy(s->acked_hash, slot[best].hash, sizeof(s->acked_hash));
	return 0;
}

static int write_acked(struct spool *s, uint64_t seq, const uint8_t hash[SPOOL_HASH_LEN])
{
	char slot[ACKED_SLOT];
	uint64_t gen = s->acked_gen + 1;
	ssize_t n;

	format_slot(slot, gen, s->epoch, seq, hash);
	do {
		n = pwrite(s->acked_fd, slot, sizeof(slot), (off_t)(1 - s->acked_slot) * ACKED_SLOT);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n != sizeof(slot))
		return -EIO;
	if (fdatasync(s->acked_fd) < 0)
		return -errno;
	s->acked_gen = gen;
	s->acked_slot = 1 - s->acked_slot;
	return 0;
}

/* Removes segments[0..n) from the list (the caller unlinks them). */
static void drop_front(struct spool *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		s->bytes -= s->segs[i].size;
	memmove(s->segs, s->segs + n, (s->n_segs - n) * sizeof(*s->segs));
	s->n_segs -= n;
}

/* How many leading segments hold only acknowledged events. */
static size_t acked_segments(const struct spool *s, uint64_t acked_seq)
{
	size_t n = 0;

	while (n < s->n_segs) {
		uint64_t last = n + 1 < s->n_segs ? s->segs[n + 1].first_seq - 1 : s->last_seq;

		if (last > acked_seq)
			break;
		n++;
	}
	return n;
}

static void unlink_segment(struct spool *s, uint64_t first_seq)
{
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];

	seg_name(name, first_seq);
	if (unlinkat(s->dirfd, name, 0) < 0 && errno != ENOENT)
		log_warn("audit: spool %s/%s: cannot delete: %s", s->dir, name, strerror(errno));
}

/* After a bad record at @off: is there a valid record later in @buf? */
static size_t find_valid_after(const uint8_t *buf, size_t size, size_t off, uint64_t after_seq)
{
	for (size_t p = off + 1; p + SPOOL_HEADER_LEN <= size; p++) {
		const char *why;
		size_t len = check_record(buf + p, size - p, 0, &why);

		if (len && spool_event_seq(buf + p + SPOOL_HEADER_LEN, len) > after_seq)
			return p;
	}
	return 0;
}

/*
 * Scans the newest segment: finds its last valid record (the chain goes on
 * from there) and cuts a torn tail. Fills last_seq and last_hash.
 */
static int scan_newest(struct spool *s, char *err, size_t errlen)
{
	struct spool_segment *seg = &s->segs[s->n_segs - 1];
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];
	uint8_t *buf = NULL;
	size_t size = seg->size, off = 0, last_off = 0, last_len = 0;
	uint64_t want = seg->first_seq, last_seq = 0;
	int fd, res = 0;

	seg_name(name, seg->first_seq);
	fd = openat(s->dirfd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		res = -errno;
		fail(err, errlen, "spool %s/%s: %s", s->dir, name, strerror(-res));
		return res;
	}
	if (size && !(buf = malloc(size))) {
		close(fd);
		fail(err, errlen, "spool %s/%s: out of memory", s->dir, name);
		return -ENOMEM;
	}
	if (size && (res = read_full(fd, buf, size, 0)) < 0) {
		fail(err, errlen, "spool %s/%s: %s", s->dir, name, strerror(-res));
		goto out;
	}
	while (off < size) {
		const char *why;
		size_t len = check_record(buf + off, size - off, want, &why);
		size_t next;

		if (len) {
			last_off = off;
			last_len = len;
			last_seq = want++;
			off += SPOOL_HEADER_LEN + len;
			continue;
		}
		next = find_valid_after(buf, size, off, last_seq ? last_seq : seg->first_seq - 1);
		if (next) {
			/* Valid records follow: corruption, not a crash. Keep it all. */
			s->opened.corrupt = true;
			log_error("audit: spool %s/%s: record seq %" PRIu64 " at offset %zu is corrupt "
				  "(%s), valid records follow it: nothing is cut, and shipping will "
				  "stop before it", s->dir, name, want, off, why);
			off = next;
			want = spool_event_seq(buf + next + SPOOL_HEADER_LEN,
					       spool_get_le32(buf + next));
			continue;
		}
		/* A write cut short by a crash: nothing valid behind it. */
		if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0) {
			res = -errno;
			fail(err, errlen, "spool %s/%s: cutting a torn tail: %s", s->dir, name,
			     strerror(-res));
			goto out;
		}
		s->opened.torn_bytes += size - off;
		s->bytes -= size - off;
		log_warn("audit: spool %s/%s: cut %zu bytes of torn tail after seq %" PRIu64
			 " (%s at offset %zu): a write the agent did not finish", s->dir, name,
			 size - off, last_seq ? last_seq : seg->first_seq - 1, why, off);
		seg->size = off;
		break;
	}
	if (last_len) {
		s->last_seq = last_seq;
		event_hash(buf + last_off + SPOOL_HEADER_LEN, last_len, s->opened.last_hash);
	}
out:
	free(buf);
	close(fd);
	return res;
}

/* Finds where the chain goes on: the newest segment's last valid record. */
static int find_chain_end(struct spool *s, char *err, size_t errlen)
{
	while (s->n_segs) {
		int res = scan_newest(s, err, errlen);

		if (res < 0)
			return res;
		if (s->segs[s->n_segs - 1].size > 0)
			return 0;
		/* Created, then killed before its first record landed. */
		unlink_segment(s, s->segs[s->n_segs - 1].first_seq);
		s->n_segs--;
	}
	/* Everything was acknowledged: the acked file carries the chain. */
	s->last_seq = s->acked_seq;
	memcpy(s->opened.last_hash, s->acked_hash, sizeof(s->acked_hash));
	return 0;
}

static int open_active(struct spool *s, char *err, size_t errlen)
{
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];

	if (!s->n_segs)
		return 0;
	s->active_first = s->segs[s->n_segs - 1].first_seq;
	seg_name(name, s->active_first);
	s->active_fd = openat(s->dirfd, name, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (s->active_fd < 0)
		return fail(err, errlen, "spool %s/%s: %s", s->dir, name, strerror(errno)), -errno;
	return 0;
}

int spool_open(const char *dir, const char *agent_id, uint64_t max_bytes, struct spool **out,
	       char *err, size_t errlen)
{
	struct spool *s = calloc(1, sizeof(*s));
	int res;

	if (!s)
		return fail(err, errlen, "spool %s: out of memory", dir), -ENOMEM;
	s->dirfd = -1;
	s->active_fd = -1;
	s->acked_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	s->max_bytes = max_bytes;
	s->dir = strdup(dir);
	s->agent_id = strdup(agent_id);
	if (!s->dir || !s->agent_id) {
		res = -ENOMEM;
		fail(err, errlen, "spool %s: out of memory", dir);
		goto fail;
	}
	if ((res = make_dirs(dir)) < 0) {
		fail(err, errlen, "spool %s: cannot create it: %s", dir, strerror(-res));
		goto fail;
	}
	s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0) {
		res = -errno;
		fail(err, errlen, "spool %s: %s", dir, strerror(-res));
		goto fail;
	}
	if ((res = list_segments(s, err, errlen)) < 0 || (res = open_meta(s, err, errlen)) < 0 ||
	    (res = open_acked(s, err, errlen)) < 0)
		goto fail;
	for (size_t i = 0; i < s->n_segs; i++)
		s->bytes += s->segs[i].size;
	if ((res = find_chain_end(s, err, errlen)) < 0)
		goto fail;
	/* Killed between writing acked and deleting what it covers. */
	for (size_t n = acked_segments(s, s->acked_seq); n > 0; n--) {
		unlink_segment(s, s->segs[0].first_seq);
		drop_front(s, 1);
	}
	if (s->last_seq < s->acked_seq) {
		res = -EINVAL;
		fail(err, errlen, "spool %s: acknowledged up to %" PRIu64 " but holds events only "
		     "up to %" PRIu64 "; move it aside", dir, s->acked_seq, s->last_seq);
		goto fail;
	}
	if ((res = open_active(s, err, errlen)) < 0)
		goto fail;
	s->synced_seq = s->acked_seq;	/* the rest may sit in the page cache */
	s->dir_dirty = true;
	s->opened.epoch = s->epoch;
	s->opened.last_seq = s->last_seq;
	s->opened.acked_seq = s->acked_seq;
	*out = s;
	return 0;
fail:
	spool_close(s);
	return res;
}

void spool_close(struct spool *s)
{
	if (!s)
		return;
	if (s->dirfd >= 0 && !s->broken)
		spool_sync(s);
	if (s->active_fd >= 0)
		close(s->active_fd);
	if (s->acked_fd >= 0)
		close(s->acked_fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	pthread_mutex_destroy(&s->lock);
	free(s->segs);
	free(s->dir);
	free(s->agent_id);
	free(s);
}

void spool_get_info(struct spool *s, struct spool_info *out)
{
	pthread_mutex_lock(&s->lock);
	*out = s->opened;
	out->last_seq = s->last_seq;
	out->acked_seq = s->acked_seq;
	out->bytes = s->bytes;
	pthread_mutex_unlock(&s->lock);
	if (out->last_seq != s->opened.last_seq)
		memset(out->last_hash, 0, sizeof(out->last_hash));	/* only known at open */
}

const char *spool_dir(const struct spool *s)
{
	return s->dir;
}

/* --- appending ----------------------------------------------------------- */

static int new_segment(struct spool *s, uint64_t first_seq)
{
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];
	int fd;

	seg_name(name, first_seq);
	fd = openat(s->dirfd, name, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	return fd;
}

static int full_errno(int err)
{
	return err == -ENOSPC || err == -EDQUOT || err == -EFBIG ? -ENOSPC : err;
}

/* Under s->lock: whether records of @bytes from event @seq may go in. */
static int admit(const struct spool *s, uint64_t seq, uint64_t bytes)
{
	if (s->broken)
		return -EIO;
	if (seq != s->last_seq + 1)
		return -EINVAL;
	return s->bytes + bytes > s->max_bytes ? -ENOSPC : 0;
}

/*
 * Appends @len bytes to the active segment (@newest). A failed write is
 * cut off again, so the segment ends on a whole record; if even that
 * fails, the spool takes no more appends. Caller holds s->lock.
 */
static int write_active(struct spool *s, struct spool_segment *newest, const uint8_t *bytes,
			size_t len)
{
	int err = write_all(s->active_fd, bytes, len);

	if (err < 0) {
		if (ftruncate(s->active_fd, (off_t)newest->size) < 0) {
			log_error("audit: spool %s: undoing a failed write: %s; no more "
				  "appends until restart", s->dir, strerror(errno));
			s->broken = true;
		}
		return full_errno(err);
	}
	newest->size += len;
	return 0;
}

/*
 * The lock is held across the write: an ack may delete the newest segment
 * once all of it is acknowledged, and must not do so under a write.
 * Readers and acks only ever take it briefly, so a write costs them little.
 */
int spool_append(struct spool *s, uint64_t seq, uint8_t *rec, size_t len)
{
	size_t total = SPOOL_HEADER_LEN + len;
	struct spool_segment *newest;
	bool rotate;
	int fd, err = 0;

	if (len < EVENT_MIN_LEN || len > SPOOL_RECORD_MAX)
		return -EINVAL;
	spool_put_le32(rec, (uint32_t)len);
	spool_put_le32(rec + 4, checksum(rec + SPOOL_HEADER_LEN, len));

	pthread_mutex_lock(&s->lock);
	if ((err = admit(s, seq, total)) < 0)
		goto out;
	newest = s->n_segs ? &s->segs[s->n_segs - 1] : NULL;
	rotate = !newest || newest->first_seq != s->active_first ||
		 newest->size + total > SPOOL_SEGMENT_BYTES;
	if (rotate) {
		/* Room for its entry first, so nothing can fail once written. */
		if ((err = reserve_segment(s)) < 0)
			goto out;
		if ((fd = new_segment(s, seq)) < 0) {
			err = full_errno(fd);
			goto out;
		}
		if ((err = write_all(fd, rec, total)) < 0) {
			err = full_errno(err);
			close(fd);
			unlink_segment(s, seq);
			goto out;
		}
		if (s->active_fd >= 0)
			close(s->active_fd);	/* the shipper syncs it by name */
		s->active_fd = fd;
		s->active_first = seq;
		s->segs[s->n_segs++] = (struct spool_segment){ .first_seq = seq, .size = total };
		s->dir_dirty = true;
	} else {
		if ((err = write_active(s, newest, rec, total)) < 0)
			goto out;
	}
	s->bytes += total;
	s->last_seq = seq;
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

int spool_append_run(struct spool *s, uint64_t seq, uint8_t *recs, size_t len, size_t n)
{
	struct spool_segment *newest;
	int err = 0;

	/* Checksums outside the lock; each length was put there by the caller. */
	for (size_t off = 0, i = 0; i < n; i++) {
		uint32_t rec_len;

		if (len - off < SPOOL_HEADER_LEN)
			return -EINVAL;
		rec_len = spool_get_le32(recs + off);
		if (rec_len < EVENT_MIN_LEN || rec_len > SPOOL_RECORD_MAX ||
		    len - off - SPOOL_HEADER_LEN < rec_len)
			return -EINVAL;
		spool_put_le32(recs + off + 4, checksum(recs + off + SPOOL_HEADER_LEN, rec_len));
		off += SPOOL_HEADER_LEN + rec_len;
		if (i + 1 == n && off != len)
			return -EINVAL;
	}
	if (!n)
		return len ? -EINVAL : 0;

	pthread_mutex_lock(&s->lock);
	if ((err = admit(s, seq, len)) < 0)
		goto out;
	newest = s->n_segs ? &s->segs[s->n_segs - 1] : NULL;
	if (!newest || newest->first_seq != s->active_first ||
	    newest->size + len > SPOOL_SEGMENT_BYTES) {
		err = -EXDEV;	/* a new segment: one record at a time */
		goto out;
	}
	if ((err = write_active(s, newest, recs, len)) < 0)
		goto out;
	s->bytes += len;
	s->last_seq = seq + n - 1;
out:
	pthread_mutex_unlock(&s->lock);
	return err;
}

/* --- durability ------------------------------------------------------------ */

struct sync_item {
	uint64_t first_seq;
	uint64_t size;
};

int spool_sync(struct spool *s)
{
	struct sync_item stack_items[8], *items = stack_items;
	size_t n = 0;
	uint64_t target;
	bool dir;
	int res = 0;

	pthread_mutex_lock(&s->lock);
	target = s->last_seq;
	dir = s->dir_dirty;
	s->dir_dirty = false;
	for (size_t i = 0; i < s->n_segs; i++)
		n += s->segs[i].size > s->segs[i].synced;
	if (n > 8 && !(items = malloc(n * sizeof(*items)))) {
		s->dir_dirty = dir;
		pthread_mutex_unlock(&s->lock);
		return -ENOMEM;
	}
	n = 0;
	for (size_t i = 0; i < s->n_segs; i++)
		if (s->segs[i].size > s->segs[i].synced)
			items[n++] = (struct sync_item){ s->segs[i].first_seq, s->segs[i].size };
	pthread_mutex_unlock(&s->lock);

	for (size_t i = 0; i < n && !res; i++) {
		char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];
		int fd;

		seg_name(name, items[i].first_seq);
		fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			if (errno != ENOENT)	/* acked and deleted meanwhile */
				res = -errno;
			continue;
		}
		if (fdatasync(fd) < 0)
			res = -errno;
		close(fd);
	}
	if (!res && dir && fsync(s->dirfd) < 0)
		res = -errno;

	pthread_mutex_lock(&s->lock);
	if (res) {
		s->dir_dirty |= dir;
	} else {
		for (size_t i = 0, j = 0; i < n && j < s->n_segs; j++) {
			if (s->segs[j].first_seq != items[i].first_seq)
				continue;
			if (s->segs[j].synced < items[i].size)
				s->segs[j].synced = items[i].size;
			i++;
		}
		if (s->synced_seq < target)
			s->synced_seq = target;
	}
	pthread_mutex_unlock(&s->lock);
	if (items != stack_items)
		free(items);
	return res;
}

uint64_t spool_synced_seq(struct spool *s)
{
	uint64_t v;

	pthread_mutex_lock(&s->lock);
	v = s->synced_seq;
	pthread_mutex_unlock(&s->lock);
	return v;
}

uint64_t spool_last_seq(struct spool *s)
{
	uint64_t v;

	pthread_mutex_lock(&s->lock);
	v = s->last_seq;
	pthread_mutex_unlock(&s->lock);
	return v;
}

int spool_ack(struct spool *s, uint64_t acked_seq, const uint8_t hash[SPOOL_HASH_LEN])
{
	uint64_t gone_stack[16], *gone = gone_stack;
	size_t n;
	int res;

	pthread_mutex_lock(&s->lock);
	if (acked_seq > s->last_seq)
		acked_seq = s->last_seq;
	if (acked_seq <= s->acked_seq) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	pthread_mutex_unlock(&s->lock);

	if ((res = write_acked(s, acked_seq, hash)) < 0)
		return res;

	pthread_mutex_lock(&s->lock);
	s->acked_seq = acked_seq;
	memcpy(s->acked_hash, hash, SPOOL_HASH_LEN);
	if (s->synced_seq < acked_seq)
		s->synced_seq = acked_seq;
	n = acked_segments(s, acked_seq);
	if (n > 16 && !(gone = malloc(n * sizeof(*gone)))) {
		gone = gone_stack;
		n = 16;		/* the rest goes with the next ack */
	}
	for (size_t i = 0; i < n; i++)
		gone[i] = s->segs[i].first_seq;
	drop_front(s, n);
	/* A deleted file's blocks are freed only once nothing holds it open. */
	if (!s->n_segs && s->active_fd >= 0) {
		close(s->active_fd);
		s->active_fd = -1;
	}
	pthread_mutex_unlock(&s->lock);

	for (size_t i = 0; i < n; i++)
		unlink_segment(s, gone[i]);
	if (gone != gone_stack)
		free(gone);
	return 0;
}

/* --- reading ---------------------------------------------------------------- */

/* Index of the segment holding @seq, or -1. Caller holds the lock. */
static ssize_t find_segment(const struct spool *s, uint64_t seq)
{
	size_t lo = 0, hi = s->n_segs;

	if (!s->n_segs || seq < s->segs[0].first_seq)
		return -1;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->segs[mid].first_seq <= seq)
			lo = mid;
		else
			hi = mid;
	}
	return (ssize_t)lo;
}

/* Closes the cursor's segment; its read-ahead buffer stays for reuse. */
static void cursor_drop(struct spool_cursor *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->seg_first = 0;
	c->seg_known = 0;
	c->offset = 0;
	c->ra_len = 0;
	c->ra_at = 0;
}

void spool_cursor_close(struct spool_cursor *c)
{
	cursor_drop(c);
	free(c->ra);
	c->ra = NULL;
	c->ra_cap = 0;
}

void spool_cursor_drop_stale(struct spool *s, struct spool_cursor *c)
{
	bool gone;

	if (c->fd < 0)
		return;
	pthread_mutex_lock(&s->lock);
	gone = !s->n_segs || c->seg_first < s->segs[0].first_seq;
	pthread_mutex_unlock(&s->lock);
	if (gone)
		cursor_drop(c);
}

int spool_cursor_seek(struct spool *s, struct spool_cursor *c, uint64_t seq)
{
	cursor_drop(c);
	c->next_seq = seq;
	pthread_mutex_lock(&s->lock);
	if (seq <= s->last_seq && find_segment(s, seq) < 0) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

__attribute__((format(printf, 4, 5)))
static int corrupt(char *err, size_t errlen, struct spool *s, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fail(err, errlen, "spool %s/%s", s->dir, what);
	return -EBADMSG;
}

/* Opens the cursor's segment and walks the headers to next_seq's record. */
static int cursor_position(struct spool *s, struct spool_cursor *c, uint64_t first,
			   uint64_t seg_size, char *err, size_t errlen)
{
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];
	off_t off = 0;

	cursor_drop(c);
	seg_name(name, first);
	c->fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (c->fd < 0)
		return -errno;
	c->seg_first = first;
	for (uint64_t seq = first; seq < c->next_seq; seq++) {
		uint8_t head[SPOOL_HEADER_LEN];
		uint32_t len;

		if ((uint64_t)off + SPOOL_HEADER_LEN > seg_size ||
		    read_full(c->fd, head, sizeof(head), off) < 0)
			return corrupt(err, errlen, s, "%s: ends before seq %" PRIu64, name, seq);
		len = spool_get_le32(head);
		if (len < EVENT_MIN_LEN || len > SPOOL_RECORD_MAX)
			return corrupt(err, errlen, s, "%s: record seq %" PRIu64 " at offset %lld: "
				       "impossible record length", name, seq, (long long)off);
		off += SPOOL_HEADER_LEN + (off_t)len;
	}
	c->offset = off;
	return 0;
}

static int buf_reserve(struct spool_buf *b, size_t more)
{
	return bytes_reserve(&b->data, &b->cap, b->len + more, 64 << 10);
}

/*
 * Under the lock: the segment holding c->next_seq and how far its whole
 * records go now; opens it when it is not the cursor's. Returns 1, 0 when
 * that record is not written yet, -ENOENT or -errno.
 */
static int cursor_refresh(struct spool *s, struct spool_cursor *c, char *err, size_t errlen)
{
	uint64_t first, seg_size;
	ssize_t i;
	int res;

	pthread_mutex_lock(&s->lock);
	if (c->next_seq > s->last_seq) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	i = find_segment(s, c->next_seq);
	if (i < 0) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	first = s->segs[i].first_seq;
	seg_size = s->segs[i].size;
	pthread_mutex_unlock(&s->lock);

	if ((c->fd < 0 || c->seg_first != first) &&
	    (res = cursor_position(s, c, first, seg_size, err, errlen)) < 0)
		return res;
	c->seg_known = seg_size;
	return 1;
}

/*
 * Points *@p at @len (at most SPOOL_READ_AHEAD) bytes of the open segment
 * at @off, all below c->seg_known, through the read-ahead buffer: one
 * pread fills it with as much of the segment as is known to be written.
 */
static int read_ahead(struct spool_cursor *c, off_t off, size_t len, const uint8_t **p)
{
	size_t want;
	int res;

	if (c->ra_len && off >= c->ra_at && (uint64_t)(off - c->ra_at) + len <= c->ra_len) {
		*p = c->ra + (off - c->ra_at);
		return 0;
	}
	if (!c->ra && !(c->ra = malloc(SPOOL_READ_AHEAD)))
		return -ENOMEM;
	c->ra_cap = SPOOL_READ_AHEAD;
	want = c->seg_known - (uint64_t)off < c->ra_cap ? (size_t)(c->seg_known - (uint64_t)off)
							: c->ra_cap;
	c->ra_len = 0;
	if ((res = read_full(c->fd, c->ra, want, off)) < 0)
		return res;
	c->ra_at = off;
	c->ra_len = want;
	*p = c->ra;
	return 0;
}

/* Appends the @n payload bytes at @off to @buf. */
static int read_payload(struct spool_cursor *c, off_t off, size_t n, struct spool_buf *buf)
{
	const uint8_t *p;
	int res;

	if (buf_reserve(buf, n) < 0)
		return -ENOMEM;
	if (n > SPOOL_READ_AHEAD)
		return read_full(c->fd, buf->data + buf->len, n, off);
	if ((res = read_ahead(c, off, n, &p)) < 0)
		return res;
	memcpy(buf->data + buf->len, p, n);
	return 0;
}

int spool_read(struct spool *s, struct spool_cursor *c, struct spool_buf *buf, size_t *len,
	       char *err, size_t errlen)
{
	char name[SEG_NAME_DIGITS + sizeof(SEG_SUFFIX)];
	const uint8_t *head;
	const char *why;
	uint32_t n, crc;
	int res;

	/* Below what was seen written, records are read without the lock. */
	if ((c->fd < 0 || (uint64_t)c->offset >= c->seg_known) &&
	    (res = cursor_refresh(s, c, err, errlen)) <= 0)
		return res;
	seg_name(name, c->seg_first);
	if ((uint64_t)c->offset + SPOOL_HEADER_LEN > c->seg_known ||
	    (res = read_ahead(c, c->offset, SPOOL_HEADER_LEN, &head)) == -ENODATA)
		return corrupt(err, errlen, s, "%s: ends before seq %" PRIu64, name, c->next_seq);
	if (res < 0)
		return res;
	n = spool_get_le32(head);
	crc = spool_get_le32(head + 4);	/* before the read-ahead buffer moves */
	if (n < EVENT_MIN_LEN || n > SPOOL_RECORD_MAX ||
	    (uint64_t)c->offset + SPOOL_HEADER_LEN + n > c->seg_known)
		return corrupt(err, errlen, s, "%s: record seq %" PRIu64 " at offset %lld: impossible "
			       "record length", name, c->next_seq, (long long)c->offset);
	if ((res = read_payload(c, c->offset + SPOOL_HEADER_LEN, n, buf)) < 0)
		return res == -ENODATA ? corrupt(err, errlen, s, "%s: cut short", name) : res;
	why = NULL;
	if (checksum(buf->data + buf->len, n) != crc)
		why = "checksum mismatch";
	else if (spool_event_seq(buf->data + buf->len, n) != c->next_seq)
		why = "record out of sequence";
	if (why)
		return corrupt(err, errlen, s, "%s: record seq %" PRIu64 " at offset %lld is corrupt "
			       "(%s)", name, c->next_seq, (long long)c->offset, why);
	buf->len += n;
	*len = n;
	c->offset += SPOOL_HEADER_LEN + (off_t)n;
	c->next_seq++;
	return 1;
}

void spool_buf_release(struct spool_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
