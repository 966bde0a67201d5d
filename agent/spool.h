/*
 * The agent's disk spool: every audit event, in seq order, from the moment
 * it is recorded until the collector acknowledges it.
 *
 * Layout of the directory:
 *   meta                          "dbward-spool 1", agent_id, epoch
 *   acked                         two slots, written in turn in place, each
 *                                 with a generation, the epoch, the highest
 *                                 acknowledged seq, that event's hash (where
 *                                 the chain goes on once every segment is
 *                                 deleted) and a crc
 *   00000000000000000001.seg      records, named by the first seq they hold
 *
 * A record is [u32 len][u32 crc32 of the payload][payload], little-endian,
 * the payload a serialized dbward.v1.Event. Records of one segment have
 * consecutive seqs from the segment's name; a segment is rotated once it
 * holds SPOOL_SEGMENT_BYTES, and a new one is created with its first
 * record. An ack deletes every segment all of whose events it covers.
 *
 * Durability. spool_append() (and spool_append_run(), for several records)
 * is one write(2): once it returns the record is in the page cache and survives the agent being killed. spool_sync()
 * (fdatasync) makes it survive a power cut; the shipper calls it before it
 * sends any record, and on a timer. The ack slot is fdatasynced before a
 * segment is deleted; it is overwritten in place, so it needs no free space.
 *
 * Opening scans the newest segment. A bad record at its end (short, or
 * failing its checksum, with nothing valid behind it) is a write cut short
 * by a crash: it is truncated and reported. A bad record with valid ones
 * behind it is corruption: nothing is truncated, the chain continues from
 * the last valid record, and the reader refuses to go past the bad one
 * (spool_read() returns -EBADMSG), so no event is ever skipped.
 *
 * Threads. Appends come from one caller at a time (the audit mutex); the
 * reader, spool_sync() and spool_ack() from another thread (the shipper).
 * The spool's own lock covers what they share, and is held across an
 * append's write(2) so that an ack never deletes a segment under it.
 */
#ifndef DBWARD_AGENT_SPOOL_H
#define DBWARD_AGENT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SPOOL_HEADER_LEN 8

/* The header's two fields (length, then crc32 of the event), little-endian. */
static inline void spool_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t spool_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
#define SPOOL_HASH_LEN 32
#define SPOOL_SEGMENT_BYTES (8u << 20)
/* Largest payload accepted; a larger length read back is corruption. */
#define SPOOL_RECORD_MAX (12u << 20)
#define SPOOL_ERR_LEN 512

struct spool;

/* What the spool holds once opened: where the chain continues. */
struct spool_info {
	uint64_t epoch;
	uint64_t last_seq;			/* 0: no event yet in this epoch */
	/* Of event last_seq as found at open (zeros if none); zeros once
	 * more were appended: the appender keeps the chain from there. */
	uint8_t last_hash[SPOOL_HASH_LEN];
	uint64_t acked_seq;
	uint64_t bytes;				/* segment bytes on disk */
	uint64_t torn_bytes;			/* cut from the newest segment at open */
	bool corrupt;				/* a bad record with valid ones behind it */
};

/*
 * Opens (creating DIR 0700 and meta with a new epoch when there is no
 * meta) the spool in @dir for @agent_id. A spool made for another agent id
 * is refused. @max_bytes: spool_append() says full beyond it. Returns 0,
 * or -errno with @err saying why.
 */
int spool_open(const char *dir, const char *agent_id, uint64_t max_bytes, struct spool **out,
	       char *err, size_t errlen);
/* fdatasyncs what was written and closes. NULL-safe. */
void spool_close(struct spool *s);

void spool_get_info(struct spool *s, struct spool_info *out);
const char *spool_dir(const struct spool *s);

/*
 * Appends event @seq (the last seq + 1) whose payload of @len bytes sits
 * at @rec + SPOOL_HEADER_LEN; the header is written into @rec. Returns 0,
 * -ENOSPC when the spool is full (over max_bytes, or the filesystem is),
 * -EINVAL for a wrong seq or an oversized record, or another -errno. On
 * failure nothing of the record stays in the file.
 */
int spool_append(struct spool *s, uint64_t seq, uint8_t *rec, size_t len);

/*
 * Appends @n records, events @seq (the last seq + 1) on, laid out back to
 * back in the @len bytes at @recs: each a SPOOL_HEADER_LEN header whose
 * first four bytes hold the payload's length (little-endian; the checksum
 * is filled in here), then the payload. One write(2), all or nothing:
 * returns 0, or on failure leaves nothing of them in the file and returns
 * -ENOSPC (not all of them fit), -EXDEV (they would need a new segment),
 * -EINVAL or another -errno; spool_append() one record at a time then
 * says which fit.
 */
int spool_append_run(struct spool *s, uint64_t seq, uint8_t *recs, size_t len, size_t n);

/* Makes every record appended so far durable (fdatasync, plus the
 * directory when a segment was created). Returns 0 or -errno. */
int spool_sync(struct spool *s);
/* The highest seq spool_sync() made durable. */
uint64_t spool_synced_seq(struct spool *s);
/* The highest seq appended. */
uint64_t spool_last_seq(struct spool *s);

/*
 * Everything up to @acked_seq is stored by the collector; @hash is that
 * event's (SHA-256 of its bytes). Persists both and deletes the segments
 * that hold nothing newer, the newest one too: the next append starts a
 * new segment. Returns 0 or -errno.
 */
int spool_ack(struct spool *s, uint64_t acked_seq, const uint8_t hash[SPOOL_HASH_LEN]);

/* --- reading, for the shipper ------------------------------------------- */

struct spool_cursor {
	uint64_t next_seq;	/* the record the next spool_read() returns */
	uint64_t seg_first;	/* first seq of the open segment */
	int fd;			/* -1: none open */
	off_t offset;		/* of next_seq's record in it */
	/* Whole records of the open segment end at or below this (its size
	 * when last looked at under the lock): read up to it without the
	 * lock. */
	uint64_t seg_known;
	/* Read-ahead: bytes of the segment from ra_at, so that a batch of
	 * small records costs one pread, not two per record. */
	uint8_t *ra;
	size_t ra_len, ra_cap;
	off_t ra_at;
};

struct spool_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/* A cursor starts as { .fd = -1 } (the rest zero) and ends with
 * spool_cursor_close(), which frees its read-ahead buffer. */

/* Points @c at @seq (acked_seq + 1 to start). Returns 0, -ENOENT when no
 * segment holds it any more, or -errno. */
int spool_cursor_seek(struct spool *s, struct spool_cursor *c, uint64_t seq);
void spool_cursor_close(struct spool_cursor *c);
/* Closes the cursor's file if spool_ack() deleted it: its space is freed
 * only once no descriptor holds it. */
void spool_cursor_drop_stale(struct spool *s, struct spool_cursor *c);

/*
 * Appends the payload of record c->next_seq to @buf and advances. Returns
 * 1 with *@len its length, 0 when that record is not written yet,
 * -EBADMSG when it is corrupt (@err says where; the cursor stays), -ENOMEM
 * or another -errno.
 */
int spool_read(struct spool *s, struct spool_cursor *c, struct spool_buf *buf, size_t *len,
	       char *err, size_t errlen);

void spool_buf_release(struct spool_buf *b);

/* The seq field of a serialized Event; 0 when there is none. */
uint64_t spool_event_seq(const uint8_t *p, size_t len);

#endif
