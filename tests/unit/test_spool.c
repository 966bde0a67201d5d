/*
 * agent/spool.c and the numbering in agent/audit.c: seq and hash chain
 * across restarts, torn tails, corruption, acks, a full spool, and the
 * durability contract (an event recorded is in the file when
 * audit_record() returns, whatever happens to the process next).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/spool.h"
#include "common/event_json.h"
#include "common/log.h"

static char dir[64];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(dir, "/tmp/dbward-spool-XXXXXX");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	strcat(dir, "/spool");	/* spool_open creates it */
	log_set_level(LOG_LEVEL_ERROR);
}

static void teardown(void)
{
	char *slash = strrchr(dir, '/');

	*slash = '\0';
	nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(spool, .init = setup, .fini = teardown);
TestSuite(audit, .init = setup, .fini = teardown);

static struct spool *open_spool(uint64_t max_bytes)
{
	struct spool *s = NULL;
	char err[SPOOL_ERR_LEN] = "";

	cr_assert_eq(spool_open(dir, "agent-1", max_bytes, &s, err, sizeof(err)), 0, "%s", err);
	return s;
}

/* A serialized Event of @seq with @sql, after SPOOL_HEADER_LEN bytes of room. */
static size_t make_record(uint8_t **rec, uint64_t epoch, uint64_t seq, const char *sql)
{
	static uint8_t zero[EVENT_HASH_LEN];
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	size_t len;

	ev.agent_id = "agent-1";
	ev.epoch = epoch;
	ev.seq = seq;
	ev.ts = 1;
	ev.prev_hash.data = zero;
	ev.prev_hash.len = sizeof(zero);
	st.sql = (char *)sql;
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &st;
	len = dbward__v1__event__get_packed_size(&ev);
	*rec = realloc(*rec, SPOOL_HEADER_LEN + len);
	cr_assert_not_null(*rec);
	dbward__v1__event__pack(&ev, *rec + SPOOL_HEADER_LEN);
	return len;
}

static void append_n(struct spool *s, uint64_t from, uint64_t n, const char *sql)
{
	struct spool_info info;
	uint8_t *rec = NULL;

	spool_get_info(s, &info);
	for (uint64_t seq = from; seq < from + n; seq++) {
		size_t len = make_record(&rec, info.epoch, seq, sql);
		int err = spool_append(s, seq, rec, len);

		cr_assert_eq(err, 0, "append %lu: %s", (unsigned long)seq, strerror(-err));
	}
	free(rec);
}

/* Reads every record from @from on; returns how many, checking their seqs. */
static uint64_t read_all(struct spool *s, uint64_t from)
{
	struct spool_cursor c = { .fd = -1 };
	struct spool_buf buf = { 0 };
	char err[SPOOL_ERR_LEN] = "";
	uint64_t n = 0;
	size_t len;
	int rc;

	cr_assert_eq(spool_cursor_seek(s, &c, from), 0);
	while ((rc = spool_read(s, &c, &buf, &len, err, sizeof(err))) == 1) {
		cr_assert_eq(spool_event_seq(buf.data, len), from + n);
		n++;
		buf.len = 0;
	}
	cr_assert_eq(rc, 0, "read stopped at seq %lu: %s", (unsigned long)(from + n), err);
	spool_cursor_close(&c);
	spool_buf_release(&buf);
	return n;
}

static char *seg_path(uint64_t first_seq, char *out, size_t len)
{
	snprintf(out, len, "%s/%020lu.seg", dir, (unsigned long)first_seq);
	return out;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* --- layout and reopening ------------------------------------------------ */

Test(spool, creates_its_directory_private_with_meta_and_a_new_epoch)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_info info;
	char path[128];
	struct stat st;

	cr_assert_eq(stat(dir, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/meta", dir);
	cr_assert_eq(access(path, R_OK), 0);
	spool_get_info(s, &info);
	cr_assert_gt(info.epoch, 0);
	cr_assert_eq(info.last_seq, 0);
	cr_assert_eq(info.acked_seq, 0);
	spool_close(s);
}

Test(spool, records_are_length_crc_payload_in_a_segment_named_by_first_seq)
{
	struct spool *s = open_spool(1 << 20);
	char path[128];
	uint8_t head[SPOOL_HEADER_LEN];
	int fd;

	append_n(s, 1, 3, "select 1");
	spool_close(s);
	fd = open(seg_path(1, path, sizeof(path)), O_RDONLY);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(read(fd, head, sizeof(head)), (ssize_t)sizeof(head));
	close(fd);
	cr_assert_eq(file_size(path) % 3, 0, "three records of the same size");
	cr_assert_eq((size_t)(head[0] | head[1] << 8) + SPOOL_HEADER_LEN, (size_t)file_size(path) / 3);
}

Test(spool, another_agents_spool_is_refused)
{
	struct spool *s = open_spool(1 << 20), *other = NULL;
	char err[SPOOL_ERR_LEN] = "";

	spool_close(s);
	cr_assert_lt(spool_open(dir, "agent-2", 1 << 20, &other, err, sizeof(err)), 0);
	cr_assert(strstr(err, "belongs to agent_id 'agent-1'"), "%s", err);
}

/* Every event read back in order, seq 1..n, each carrying the previous one's hash. */
static uint64_t assert_chain(struct spool *s, uint64_t epoch)
{
	struct spool_cursor c = { .fd = -1 };
	struct spool_buf buf = { 0 };
	uint8_t prev[EVENT_HASH_LEN] = { 0 };
	char err[SPOOL_ERR_LEN] = "";
	uint64_t n = 0;
	size_t len;
	int rc;

	cr_assert_eq(spool_cursor_seek(s, &c, 1), 0);
	while ((rc = spool_read(s, &c, &buf, &len, err, sizeof(err))) == 1) {
		Dbward__V1__Event *ev = dbward__v1__event__unpack(NULL, len, buf.data);

		n++;
		cr_assert_not_null(ev, "event %lu does not decode", (unsigned long)n);
		cr_assert_eq(ev->seq, n);
		cr_assert_eq(ev->epoch, epoch);
		cr_assert_str_eq(ev->agent_id, "agent-1");
		cr_assert_eq(ev->prev_hash.len, EVENT_HASH_LEN);
		cr_assert(memcmp(ev->prev_hash.data, prev, EVENT_HASH_LEN) == 0,
			  "event %lu: prev_hash is not the previous event's hash", (unsigned long)n);
		event_hash(buf.data, len, prev);
		dbward__v1__event__free_unpacked(ev, NULL);
		buf.len = 0;
	}
	cr_assert_eq(rc, 0, "%s", err);
	spool_cursor_close(&c);
	spool_buf_release(&buf);
	return n;
}

static int record_statement(struct audit *a, const char *sql)
{
	Dbward__V1__Event ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	Dbward__V1__Session session = DBWARD__V1__SESSION__INIT;

	session.session_id = "0123456789abcdef0123456789abcdef";
	st.sql = (char *)sql;
	st.rows = -1;
	ev.session = &session;
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &st;
	return audit_record(a, &ev);
}

static struct audit *open_audit(uint64_t max_bytes)
{
	struct audit_opts opts = { .agent_id = "agent-1", .spool_dir = dir,
				   .spool_max_bytes = max_bytes };
	struct audit *a = NULL;
	char err[AUDIT_ERR_LEN] = "";

	cr_assert_eq(audit_open(&opts, &a, err, sizeof(err)), 0, "%s", err);
	return a;
}

Test(audit, reopening_continues_the_seq_and_the_hash_chain)
{
	struct audit *a = open_audit(1 << 20);
	struct spool_info before, after;
	struct spool *s;

	for (int i = 0; i < 5; i++)
		cr_assert_eq(record_statement(a, "select 1"), 0);
	spool_get_info(audit_spool(a), &before);
	audit_close(a);

	a = open_audit(1 << 20);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(record_statement(a, "select 2"), 0);
	audit_close(a);

	s = open_spool(1 << 20);
	spool_get_info(s, &after);
	cr_assert_eq(after.epoch, before.epoch, "a reopened spool keeps its epoch");
	cr_assert_eq(after.last_seq, 9);
	cr_assert_eq(assert_chain(s, after.epoch), 9);
	spool_close(s);
}

Test(audit, a_fresh_spool_starts_a_new_epoch_at_seq_one)
{
	struct audit *a = open_audit(1 << 20);
	struct spool_info first, second;
	struct spool *s;

	record_statement(a, "select 1");
	spool_get_info(audit_spool(a), &first);
	audit_close(a);
	teardown();
	setup();
	usleep(1000);
	a = open_audit(1 << 20);
	record_statement(a, "select 1");
	spool_get_info(audit_spool(a), &second);
	audit_close(a);
	cr_assert_neq(first.epoch, second.epoch);
	s = open_spool(1 << 20);
	cr_assert_eq(assert_chain(s, second.epoch), 1);
	spool_close(s);
}

/* --- crashes and corruption ------------------------------------------------ */

static void append_garbage(const char *path, size_t n)
{
	FILE *f = fopen(path, "ab");

	cr_assert_not_null(f);
	for (size_t i = 0; i < n; i++)
		fputc((int)((i * 131 + 17) & 0xff), f);
	fclose(f);
}

Test(spool, torn_tail_is_cut_and_reported_and_the_seq_goes_on)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_info info;
	char path[128];
	off_t whole, two;

	append_n(s, 1, 3, "select 'a statement of some length'");
	spool_close(s);
	seg_path(1, path, sizeof(path));
	whole = file_size(path);
	two = whole / 3 * 2;
	/* The third record cut in its payload, then whatever the disk held. */
	cr_assert_eq(truncate(path, whole - 10), 0);
	append_garbage(path, 37);

	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.last_seq, 2, "the torn record is gone");
	cr_assert_eq(info.torn_bytes, (uint64_t)(whole - 10 + 37 - two));
	cr_assert_not(info.corrupt);
	cr_assert_eq(file_size(path), two, "the file is cut right after record 2");
	append_n(s, 3, 2, "select 'after the crash'");
	cr_assert_eq(read_all(s, 1), 4);
	spool_close(s);
}

Test(spool, torn_header_is_cut_too)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_info info;
	char path[128];
	off_t whole;

	append_n(s, 1, 2, "select 1");
	spool_close(s);
	seg_path(1, path, sizeof(path));
	whole = file_size(path);
	append_garbage(path, 5);	/* less than a header */

	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.last_seq, 2);
	cr_assert_eq(info.torn_bytes, 5);
	cr_assert_eq(file_size(path), whole);
	spool_close(s);
}

Test(spool, segment_created_but_empty_at_a_crash_is_removed)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_info info;
	char path[128];
	int fd;

	append_n(s, 1, 2, "select 1");
	spool_close(s);
	fd = open(seg_path(3, path, sizeof(path)), O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	append_garbage(path, 3);

	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.last_seq, 2);
	cr_assert_eq(access(path, F_OK), -1, "the empty segment is gone");
	append_n(s, 3, 1, "select 3");
	cr_assert_eq(read_all(s, 1), 3);
	spool_close(s);
}

/*
 * A corrupt record with valid ones behind it is not a crash: nothing is cut,
 * the chain continues after the last record, and the reader stops at the
 * bad one with an error naming it, every time, never skipping it.
 */
Test(spool, corrupt_record_in_the_middle_stops_the_reader_there_with_an_error)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_cursor c = { .fd = -1 };
	struct spool_buf buf = { 0 };
	struct spool_info info;
	char path[128], err[SPOOL_ERR_LEN] = "";
	off_t whole;
	size_t len;
	int fd;
	uint8_t byte;

	append_n(s, 1, 5, "select 'five records'");
	spool_close(s);
	seg_path(1, path, sizeof(path));
	whole = file_size(path);
	fd = open(path, O_RDWR);
	cr_assert_eq(pread(fd, &byte, 1, whole / 5 * 2 + SPOOL_HEADER_LEN + 20), 1);
	byte ^= 0x40;
	cr_assert_eq(pwrite(fd, &byte, 1, whole / 5 * 2 + SPOOL_HEADER_LEN + 20), 1);
	close(fd);

	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert(info.corrupt, "reported at open");
	cr_assert_eq(info.last_seq, 5, "the records behind it are kept");
	cr_assert_eq(info.torn_bytes, 0);
	cr_assert_eq(file_size(path), whole, "nothing cut");

	cr_assert_eq(spool_cursor_seek(s, &c, 1), 0);
	cr_assert_eq(spool_read(s, &c, &buf, &len, err, sizeof(err)), 1);
	cr_assert_eq(spool_read(s, &c, &buf, &len, err, sizeof(err)), 1);
	cr_assert_eq(spool_read(s, &c, &buf, &len, err, sizeof(err)), -EBADMSG);
	cr_assert(strstr(err, "seq 3") && strstr(err, "checksum"), "%s", err);
	cr_assert_eq(spool_read(s, &c, &buf, &len, err, sizeof(err)), -EBADMSG, "still stuck");
	cr_assert_eq(c.next_seq, 3);

	/* Recording goes on after the last record. */
	append_n(s, 6, 1, "select 6");
	spool_cursor_close(&c);
	spool_buf_release(&buf);
	spool_close(s);
}

/* --- acks ------------------------------------------------------------------ */

static void ack_up_to(struct spool *s, uint64_t seq)
{
	struct spool_buf all = { 0 };
	uint8_t hash[SPOOL_HASH_LEN];
	struct spool_cursor c = { .fd = -1 };
	char err[SPOOL_ERR_LEN];
	size_t len = 0;

	cr_assert_eq(spool_cursor_seek(s, &c, seq), 0);
	cr_assert_eq(spool_read(s, &c, &all, &len, err, sizeof(err)), 1, "%s", err);
	event_hash(all.data, len, hash);
	spool_cursor_close(&c);
	spool_buf_release(&all);
	cr_assert_eq(spool_ack(s, seq, hash), 0);
}

Test(spool, ack_deletes_whole_segments_and_survives_reopen)
{
	static char big[1 << 20];
	struct spool *s = open_spool(64 << 20);
	struct spool_info info;
	char first[128], second[128];

	memset(big, 'x', sizeof(big) - 1);
	append_n(s, 1, 10, big);	/* ~10 MiB: two segments */
	seg_path(1, first, sizeof(first));
	cr_assert_eq(access(first, F_OK), 0);
	spool_get_info(s, &info);
	cr_assert_eq(info.last_seq, 10);

	/* The first segment holds 1..7 or 1..8: find where the second starts. */
	uint64_t second_first = 0;
	for (uint64_t seq = 2; seq <= 10 && !second_first; seq++)
		if (access(seg_path(seq, second, sizeof(second)), F_OK) == 0)
			second_first = seq;
	cr_assert_gt(second_first, 0, "rotated at %u bytes", SPOOL_SEGMENT_BYTES);

	ack_up_to(s, second_first - 2);
	cr_assert_eq(access(first, F_OK), 0, "a segment with unacked events stays");
	ack_up_to(s, second_first - 1);
	cr_assert_eq(access(first, F_OK), -1, "a wholly acked segment is deleted");
	spool_close(s);

	s = open_spool(64 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.acked_seq, second_first - 1);
	cr_assert_eq(info.last_seq, 10);
	cr_assert_eq(read_all(s, second_first), 10 - second_first + 1);
	spool_close(s);
}

Test(spool, ack_of_everything_deletes_every_segment_and_the_chain_goes_on)
{
	struct audit *a = open_audit(1 << 20);
	struct spool_info info;
	uint8_t hash[SPOOL_HASH_LEN];
	char path[128];
	struct spool *s;

	for (int i = 0; i < 3; i++)
		record_statement(a, "select 1");
	audit_close(a);
	s = open_spool(1 << 20);
	ack_up_to(s, 3);
	cr_assert_eq(access(seg_path(1, path, sizeof(path)), F_OK), -1);
	spool_get_info(s, &info);
	cr_assert_eq(info.bytes, 0);
	spool_close(s);

	/* Reopened with no segment at all: seq and hash come from acked. */
	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.last_seq, 3);
	memcpy(hash, info.last_hash, sizeof(hash));
	spool_close(s);
	a = open_audit(1 << 20);
	cr_assert_eq(record_statement(a, "select 4"), 0);
	audit_close(a);

	s = open_spool(1 << 20);
	{
		struct spool_buf b = { 0 };
		struct spool_cursor c = { .fd = -1 };
		char err[SPOOL_ERR_LEN];
		size_t len;
		Dbward__V1__Event *ev;

		cr_assert_eq(spool_cursor_seek(s, &c, 4), 0);
		cr_assert_eq(spool_read(s, &c, &b, &len, err, sizeof(err)), 1, "%s", err);
		ev = dbward__v1__event__unpack(NULL, len, b.data);
		cr_assert_not_null(ev);
		cr_assert_eq(ev->seq, 4);
		cr_assert(memcmp(ev->prev_hash.data, hash, SPOOL_HASH_LEN) == 0,
			  "event 4 chains to event 3 although its segment is gone");
		dbward__v1__event__free_unpacked(ev, NULL);
		spool_cursor_close(&c);
		spool_buf_release(&b);
	}
	spool_close(s);
}

Test(spool, torn_ack_slot_falls_back_to_the_previous_ack)
{
	struct spool *s = open_spool(1 << 20);
	struct spool_info info;
	char path[128];
	int fd;

	append_n(s, 1, 5, "select 1");
	ack_up_to(s, 2);	/* generation 2: slot 0 */
	ack_up_to(s, 4);	/* generation 3: slot 1 */
	spool_close(s);
	snprintf(path, sizeof(path), "%s/acked", dir);
	fd = open(path, O_WRONLY);
	cr_assert_eq(pwrite(fd, "XX", 2, 512 + 40), 2);
	close(fd);

	s = open_spool(1 << 20);
	spool_get_info(s, &info);
	cr_assert_eq(info.acked_seq, 2, "the slot that fails its crc is ignored");
	spool_close(s);
}

/* The slot holding generation g is g % 2: the first ack (gen 2) goes to
 * slot 0, and never overwrites the slot it would fall back to. */
Test(spool, the_first_ack_overwrites_the_older_slot_not_the_current_one)
{
	struct spool *s = open_spool(1 << 20);
	char path[128], before[1024], after[1024];
	int fd;

	append_n(s, 1, 3, "select 1");
	snprintf(path, sizeof(path), "%s/acked", dir);
	fd = open(path, O_RDONLY);
	cr_assert_eq(pread(fd, before, sizeof(before), 0), (ssize_t)sizeof(before));
	cr_assert(strncmp(before + 512, "gen 1\n", 6) == 0, "gen 1 in slot 1: %.20s",
		  before + 512);
	ack_up_to(s, 2);
	cr_assert_eq(pread(fd, after, sizeof(after), 0), (ssize_t)sizeof(after));
	close(fd);
	cr_assert(memcmp(before + 512, after + 512, 512) == 0, "the current slot is untouched");
	cr_assert(strncmp(after, "gen 2\n", 6) == 0, "%.20s", after);
	spool_close(s);
}

/* --- full ------------------------------------------------------------------ */

Test(spool, full_by_max_bytes_refuses_and_takes_again_after_an_ack)
{
	struct spool *s = open_spool(4096);
	struct spool_info info;
	uint8_t *rec = NULL;
	uint64_t seq = 1;
	size_t len;
	int err;

	spool_get_info(s, &info);
	for (;; seq++) {
		len = make_record(&rec, info.epoch, seq, "select 'filling the spool'");
		if ((err = spool_append(s, seq, rec, len)) != 0)
			break;
	}
	cr_assert_eq(err, -ENOSPC);
	cr_assert_gt(seq, 10);
	spool_get_info(s, &info);
	cr_assert_leq(info.bytes, 4096);
	cr_assert_eq(info.last_seq, seq - 1, "the refused record left nothing behind");

	ack_up_to(s, seq - 1);
	cr_assert_eq(spool_append(s, seq, rec, len), 0, "room again after the ack");
	free(rec);
	spool_close(s);
}

Test(audit, full_spool_keeps_events_in_memory_in_order_and_writes_them_once_acked)
{
	struct audit *a = open_audit(4096);
	struct spool_info info;
	int recorded = 0;

	while (audit_accepting(a)) {
		int rc = record_statement(a, "select 'until full'");

		cr_assert(rc == 0 || (rc == AUDIT_WAITING && !audit_accepting(a)), "rc %d", rc);
		recorded++;
		cr_assert_lt(recorded, 1000);
	}
	/* Full: what still comes is kept, in seq order, never dropped, and
	 * the caller is told it is only in memory. */
	for (int i = 0; i < 5; i++)
		cr_assert_eq(record_statement(a, "select 'while full'"), AUDIT_WAITING);
	recorded += 5;
	spool_get_info(audit_spool(a), &info);
	cr_assert_lt(info.last_seq, (uint64_t)recorded);

	ack_up_to(audit_spool(a), info.last_seq);
	audit_retry(a);
	cr_assert(audit_accepting(a), "room again");
	spool_get_info(audit_spool(a), &info);
	cr_assert_eq(info.last_seq, (uint64_t)recorded, "every waiting event written");
	cr_assert_eq(read_all(audit_spool(a), info.acked_seq + 1),
		     (uint64_t)recorded - info.acked_seq);
	audit_close(a);

	{
		struct spool *s = open_spool(1 << 20);

		spool_get_info(s, &info);
		cr_assert_eq(info.last_seq, (uint64_t)recorded);
		spool_close(s);
	}
}

Test(audit, past_the_memory_cap_events_are_kept_and_the_caller_told_to_close)
{
	static char big[1 << 20];
	struct audit *a = open_audit(1 << 20);
	int rc = 0, n = 0;

	memset(big, 'y', sizeof(big) - 1);
	while (audit_accepting(a))
		cr_assert_geq(record_statement(a, big), 0);
	while ((rc = record_statement(a, big)) == AUDIT_WAITING)
		cr_assert_lt(++n, 100);
	cr_assert_eq(rc, -ENOBUFS);
	cr_assert_geq(n, (int)(AUDIT_WAITING_MAX >> 20) - 2);
	audit_close(a);		/* logs the loss at exit: the spool is still full */
}

/* Stages a statement event of @sql behind a session packed once, as the
 * event loops do. */
static struct audit_item *stage_statement(struct audit_batch *b, const char *sql)
{
	Dbward__V1__Event head = DBWARD__V1__EVENT__INIT, ev = DBWARD__V1__EVENT__INIT;
	Dbward__V1__Session session = DBWARD__V1__SESSION__INIT;
	Dbward__V1__Statement st = DBWARD__V1__STATEMENT__INIT;
	uint8_t packed[256];
	struct audit_item *it;

	session.session_id = "0123456789abcdef0123456789abcdef";
	session.client = "127.0.0.1:5000";
	head.session = &session;
	cr_assert_lt(dbward__v1__event__get_packed_size(&head), sizeof(packed));
	st.sql = (char *)sql;
	st.rows = -1;
	st.verdict = "allow";
	ev.body_case = DBWARD__V1__EVENT__BODY_STATEMENT;
	ev.statement = &st;
	it = audit_stage(b, packed, dbward__v1__event__pack(&head, packed), &ev);
	cr_assert_not_null(it);
	return it;
}

/* Envelope + session + body, serialized apart and put together, are the
 * bytes protobuf-c gives the whole event: what the collector re-derives. */
Test(audit, a_staged_event_is_stored_as_the_whole_event_would_be_serialized)
{
	struct audit *a = open_audit(1 << 20);
	struct audit_batch b = { 0 };
	struct spool_cursor c = { .fd = -1 };
	struct spool_buf buf = { 0 };
	char err[SPOOL_ERR_LEN] = "";
	size_t len;

	stage_statement(&b, "select 1");
	stage_statement(&b, "select 2");
	audit_commit(a, &b);
	cr_assert_eq(b.items[0].result, 0);
	cr_assert_eq(b.items[1].result, 0);
	cr_assert_eq(b.items[0].seq, 1);
	cr_assert_eq(b.items[1].seq, 2);
	cr_assert_eq(spool_cursor_seek(audit_spool(a), &c, 1), 0);
	for (int i = 0; i < 2; i++) {
		Dbward__V1__Event *ev;
		uint8_t *again;

		buf.len = 0;
		cr_assert_eq(spool_read(audit_spool(a), &c, &buf, &len, err, sizeof(err)), 1, "%s", err);
		ev = dbward__v1__event__unpack(NULL, len, buf.data);
		cr_assert_not_null(ev);
		cr_assert_str_eq(ev->session->client, "127.0.0.1:5000");
		cr_assert_str_eq(ev->statement->sql, i ? "select 2" : "select 1");
		cr_assert_neq(ev->ts, 0);
		cr_assert_eq(dbward__v1__event__get_packed_size(ev), len);
		again = malloc(len);
		dbward__v1__event__pack(ev, again);
		cr_assert(memcmp(again, buf.data, len) == 0, "event %d: not canonical", i + 1);
		free(again);
		dbward__v1__event__free_unpacked(ev, NULL);
	}
	spool_cursor_close(&c);
	spool_buf_release(&buf);
	audit_batch_release(&b);
	audit_close(a);
	{
		struct spool *s = open_spool(1 << 20);
		struct spool_info info;

		spool_get_info(s, &info);
		cr_assert_eq(assert_chain(s, info.epoch), 2);
		spool_close(s);
	}
}

/* A commit is one write while it fits; across a new segment, or into a
 * spool that fills up half way, events go one by one: every one is
 * numbered in order, the ones past the room wait in memory, none is lost. */
Test(audit, a_batch_crosses_segments_and_a_full_spool_in_order)
{
	static char big[200u << 10];
	struct audit *a = open_audit(20u << 20);
	struct audit_batch b = { 0 };
	struct spool_info info;
	uint64_t seq = 0, waiting = 0;

	memset(big, 'z', sizeof(big) - 1);
	/* 8 MiB segments: some commits straddle a new one. */
	for (int round = 0; round < 40; round++) {
		for (int i = 0; i < 7; i++)
			stage_statement(&b, i % 3 ? "select 1" : big);
		audit_commit(a, &b);
		for (size_t i = 0; i < b.n; i++) {
			cr_assert_eq(b.items[i].seq, ++seq);
			cr_assert(b.items[i].result == 0 || b.items[i].result == AUDIT_WAITING,
				  "seq %lu: %d", (unsigned long)seq, b.items[i].result);
			if (b.items[i].result == AUDIT_WAITING)
				waiting++;
			else
				cr_assert_eq(waiting, 0, "a spooled event after a waiting one");
		}
		audit_batch_clear(&b);
	}
	cr_assert_gt(waiting, 0, "the spool never filled");
	cr_assert_not(audit_accepting(a));
	spool_get_info(audit_spool(a), &info);
	cr_assert_eq(info.last_seq, seq - waiting);
	ack_up_to(audit_spool(a), info.last_seq);
	audit_retry(a);
	cr_assert(audit_accepting(a));
	spool_get_info(audit_spool(a), &info);
	cr_assert_eq(info.last_seq, seq);
	audit_batch_release(&b);
	audit_close(a);
}


/* The seqs of the JSON lines in @path, in file order; returns how many. */
static size_t file_seqs(const char *path, uint64_t *out, size_t max)
{
	FILE *f = fopen(path, "r");
	char line[8192];
	size_t n = 0;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		const char *p = strstr(line, "\"seq\":");

		cr_assert_not_null(p, "a line without seq: %s", line);
		cr_assert_lt(n, max);
		out[n++] = strtoull(p + 6, NULL, 10);
	}
	fclose(f);
	return n;
}

static struct audit *open_audit_file(uint64_t max_bytes, const char *file, size_t queue_max)
{
	struct audit_opts opts = { .agent_id = "agent-1", .spool_dir = dir,
				   .spool_max_bytes = max_bytes, .file = file,
				   .file_queue_max = queue_max };
	struct audit *a = NULL;
	char err[AUDIT_ERR_LEN] = "";

	cr_assert_eq(audit_open(&opts, &a, err, sizeof(err)), 0, "%s", err);
	return a;
}

Test(audit, an_event_waiting_in_memory_is_reported_and_reaches_the_file_only_once_spooled)
{
	static uint64_t seqs[4096];
	struct spool_info info;
	char file[128];
	struct audit *a;
	uint64_t spooled, recorded = 0;
	size_t n;
	int rc = 0;

	snprintf(file, sizeof(file), "%s.jsonl", dir);
	a = open_audit_file(4096, file, 0);
	while ((rc = record_statement(a, "select 'until full'")) == 0)
		cr_assert_lt(++recorded, 1000);
	cr_assert_eq(rc, AUDIT_WAITING, "the event that found the spool full is only in memory");
	cr_assert_not(audit_accepting(a));
	cr_assert_eq(record_statement(a, "select 'while full'"), AUDIT_WAITING);
	spool_get_info(audit_spool(a), &info);
	spooled = info.last_seq;
	cr_assert_eq(spooled, recorded);
	audit_close(a);		/* still full: the two waiting events are lost at exit */
	n = file_seqs(file, seqs, 4096);
	cr_assert_eq(n, spooled, "the file has only what the spool has");
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(seqs[i], i + 1);

	/* Waiting events reach the file as they are spooled, in seq order. */
	a = open_audit_file(4096, file, 0);
	cr_assert_eq(record_statement(a, "select 'waits'"), AUDIT_WAITING);
	cr_assert_eq(record_statement(a, "select 'waits too'"), AUDIT_WAITING);
	ack_up_to(audit_spool(a), spooled);
	audit_retry(a);
	cr_assert(audit_accepting(a));
	cr_assert_eq(record_statement(a, "select 'room again'"), 0);
	audit_close(a);
	n = file_seqs(file, seqs, 4096);
	cr_assert_eq(n, spooled + 3);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(seqs[i], i + 1, "line %zu", i);
	unlink(file);
}

static void *drain_fifo(void *arg)
{
	int fd = *(int *)arg;
	char buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

/* A stuck file (here a FIFO nobody reads) never makes audit_record() wait
 * when a spool has every event: the file's lines are dropped and counted. */
Test(audit, a_stuck_file_sink_never_blocks_recording_with_a_spool, .timeout = 30)
{
	char fifo[128];
	struct audit *a;
	pthread_t reader;
	int rfd, flags;

	snprintf(fifo, sizeof(fifo), "%s.fifo", dir);
	cr_assert_eq(mkfifo(fifo, 0600), 0, "%s", strerror(errno));
	rfd = open(fifo, O_RDONLY | O_NONBLOCK);
	cr_assert_geq(rfd, 0);
	a = open_audit_file(64 << 20, fifo, 4096);
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(record_statement(a, "select 'the file is stuck'"), 0);
	cr_assert_gt(audit_file_dropped(a), 0, "lines the mirror could not take are counted");
	flags = fcntl(rfd, F_GETFL);
	fcntl(rfd, F_SETFL, flags & ~O_NONBLOCK);
	pthread_create(&reader, NULL, drain_fifo, &rfd);
	audit_close(a);
	pthread_join(reader, NULL);
	close(rfd);
	{
		struct spool *s = open_spool(64 << 20);
		struct spool_info info;

		spool_get_info(s, &info);
		cr_assert_eq(info.last_seq, 5000, "the spool has every event");
		spool_close(s);
	}
	unlink(fifo);
}

/* --- durability ---------------------------------------------------------- */

/*
 * The contract: once audit_record() returns, the event is in the spool file
 * (page cache), so a kill -9 right after cannot lose it. A child records
 * and reports each seq after audit_record() returned; it is killed at a
 * random point; every reported seq must be in the spool.
 */
Test(audit, an_event_recorded_survives_kill_9_of_the_process)
{
	int fds[2];
	pid_t child;
	uint64_t seq, reported = 0;
	struct spool *s;
	struct spool_info info;

	cr_assert_eq(pipe(fds), 0);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		struct audit *a = open_audit(64 << 20);

		close(fds[0]);
		for (seq = 1;; seq++) {
			if (record_statement(a, "select 'durable'") != 0)
				_exit(3);
			if (write(fds[1], &seq, sizeof(seq)) != sizeof(seq))
				_exit(4);
		}
	}
	close(fds[1]);
	while (reported < 2000 && read(fds[0], &seq, sizeof(seq)) == sizeof(seq))
		reported = seq;
	kill(child, SIGKILL);
	while (read(fds[0], &seq, sizeof(seq)) == sizeof(seq))
		reported = seq;
	waitpid(child, NULL, 0);
	close(fds[0]);
	cr_assert_geq(reported, 2000);

	s = open_spool(64 << 20);
	spool_get_info(s, &info);
	cr_assert_geq(info.last_seq, reported, "seq %lu was reported recorded, the spool ends at %lu",
		      (unsigned long)reported, (unsigned long)info.last_seq);
	cr_assert_eq(assert_chain(s, info.epoch), info.last_seq);
	spool_close(s);
}

/* Reads what is there now through @c; returns how many, checking seqs from *@next. */
static uint64_t read_more(struct spool *s, struct spool_cursor *c, uint64_t *next)
{
	struct spool_buf buf = { 0 };
	char err[SPOOL_ERR_LEN] = "";
	uint64_t n = 0;
	size_t len;
	int rc;

	while ((rc = spool_read(s, c, &buf, &len, err, sizeof(err))) == 1) {
		cr_assert_eq(spool_event_seq(buf.data, len), *next, "got %lu, want %lu",
			     (unsigned long)spool_event_seq(buf.data, len), (unsigned long)*next);
		(*next)++;
		n++;
		buf.len = 0;
	}
	cr_assert_eq(rc, 0, "read stopped at seq %lu: %s", (unsigned long)*next, err);
	spool_buf_release(&buf);
	return n;
}

/* The reader reads ahead and skips the lock below what it saw written:
 * records appended after it caught up, records larger than its read-ahead
 * and a segment rotation must all still come through, in order. */
Test(spool, reader_keeps_up_with_appends_big_records_and_rotation)
{
	struct spool *s = open_spool(64u << 20);
	struct spool_cursor c = { .fd = -1 };
	char *big = malloc(300u << 10);
	uint64_t next = 1, seq = 1;

	cr_assert_not_null(big);
	memset(big, 'x', (300u << 10) - 1);
	big[(300u << 10) - 1] = '\0';
	cr_assert_eq(spool_cursor_seek(s, &c, 1), 0);
	cr_assert_eq(read_more(s, &c, &next), 0);
	append_n(s, seq, 100, "select 1");
	seq += 100;
	cr_assert_eq(read_more(s, &c, &next), 100);
	append_n(s, seq, 3, "select 2");
	seq += 3;
	append_n(s, seq, 1, big);
	seq += 1;
	append_n(s, seq, 5, "select 3");
	seq += 5;
	cr_assert_eq(read_more(s, &c, &next), 9);
	/* Past SPOOL_SEGMENT_BYTES: the next append opens a new segment. */
	while (seq < 200) {
		append_n(s, seq, 1, big);
		seq++;
		if (seq % 7 == 0)
			read_more(s, &c, &next);
	}
	read_more(s, &c, &next);
	cr_assert_eq(next, seq);
	cr_assert_eq(read_all(s, 1), seq - 1);
	spool_cursor_close(&c);
	free(big);
	spool_close(s);
}

Test(spool, event_seq_is_read_without_decoding_the_event)
{
	uint8_t *rec = NULL;
	size_t len = make_record(&rec, 7, 123456789, "select 1");

	cr_assert_eq(spool_event_seq(rec + SPOOL_HEADER_LEN, len), 123456789);
	cr_assert_eq(spool_event_seq(rec + SPOOL_HEADER_LEN, 3), 0, "cut short: no seq");
	free(rec);
}
