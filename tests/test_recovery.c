/*
 * test_recovery.c - proves that rec_replay() follows docs/FORMAT.md "Reader actions".
 *
 * Segments are built by hand with seg_encode()/rec_encode() (no dependence on the writer),
 * then damaged at byte level, and the replay's answer is checked for each case:
 *  - a clean log replays whole, in order, with the right payloads, positions and ends;
 *  - a log cut at every offset of its last records replays a prefix of whole transactions,
 *    never fails, and replaying again gives the same answer (the truncation is idempotent);
 *  - a torn tail (garbage, a partial record, damage followed only by records with
 *    synced_seq < the damaged seq) is zeroed on disk, counted, and appends resume at its start;
 *  - damage followed by a record that testifies the damaged one was durable is CS_ECORRUPT
 *    naming segment and offset, for every bit flip of a record's header and a bit of every
 *    payload byte; with salvage it opens, counting the loss exactly and never applying part
 *    of a transaction;
 *  - the synced_seq boundary is exact, and the look-ahead stops at the segment's window;
 *  - segment-level checks: seq gaps, another store's uid, newer versions, unknown record
 *    types, unfinished last segments, stray names;
 *  - the hex example in docs/FORMAT.md decodes to what the text says and is byte for byte
 *    what the encoder produces, so the document and the code cannot drift.
 * Every failing replay is also checked to leave no fd open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "endian.h"
#include "err.h"
#include "cs_limits.h"
#include "record.h"
#include "replay.h"
#include "test_util.h"

#define UID    0x5eed0000c0ffee01ull
#define WINDOW (64u << 10) /* small windows keep the look-ahead buffers small */
#define MAXREC 4096

/* ---- Fixture: one empty store directory per test ------------------------------------- */

struct fx {
	char path[128];
	int dirfd;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	snprintf(f->path, sizeof(f->path), "%s/cs-recovery-XXXXXX", tmp ? tmp : "/tmp");
	if (mkdtemp(f->path) == NULL)
		return -1;
	f->dirfd = open(f->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*state = f;
	return f->dirfd < 0 ? -1 : 0;
}

static void wipe(struct fx *f)
{
	DIR *d = fdopendir(dup(f->dirfd));
	struct dirent *de;

	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(f->dirfd, de->d_name, 0) != 0)
			unlinkat(f->dirfd, de->d_name, AT_REMOVEDIR);
	}
	closedir(d);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	wipe(f);
	close(f->dirfd);
	rmdir(f->path);
	free(f);
	return 0;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* ---- Building segments by hand --------------------------------------------------------- */

struct tseg {
	int fd;
	uint32_t id;
	uint64_t off; /* where the next record goes */
	int in_txn;   /* the last record had REC_F_CONT: the next gets REC_F_MID, as wal.c does */
};

/* Creates segment `id`. `size` is the file size: CS_SEG_MIN as the writer leaves it, or
 * smaller for loops that rebuild a log many times (the reader scans min(capacity, size)). */
static void tseg_create_v(struct tseg *s, struct fx *f, uint32_t id, uint64_t uid,
                          uint64_t first_seq, uint32_t version, uint64_t size)
{
	char name[16];
	uint8_t hdr[CS_SEG_HEADER];
	struct seg_hdr h = {.version = version,
	                    .store_uid = uid,
	                    .id = id,
	                    .first_seq = first_seq,
	                    .capacity = CS_SEG_MIN,
	                    .window = WINDOW};

	seg_name(name, sizeof(name), id);
	s->fd = openat(f->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(s->fd >= 0);
	s->id = id;
	s->off = CS_SEG_HEADER;
	seg_encode(hdr, &h);
	assert_int_equal(pwrite(s->fd, hdr, sizeof(hdr), 0), sizeof(hdr));
	assert_int_equal(ftruncate(s->fd, (off_t)size), 0);
}

static void tseg_create(struct tseg *s, struct fx *f, uint32_t id, uint64_t first_seq)
{
	tseg_create_v(s, f, id, UID, first_seq, SEG_FORMAT_VERSION, CS_SEG_MIN);
}

static void tseg_close(struct tseg *s)
{
	close(s->fd);
	s->fd = -1;
}

/* The deterministic block payload of record `seq`; returns its length. */
static uint32_t payload_for(uint64_t seq, uint8_t *buf)
{
	uint32_t data_len = (uint32_t)((seq * 7919) % 173) + 1;

	rec_block_meta(buf, CS_HASH_SHA2_256, CS_DIGEST_MAX, CS_CODEC_RAW);
	for (uint32_t i = 0; i < CS_DIGEST_MAX + data_len; i++)
		buf[CS_BLOCK_META + i] = (uint8_t)(seq * 31 + i * 13 + 1);
	return CS_BLOCK_META + CS_DIGEST_MAX + data_len;
}

/* Appends a record with an explicit payload; returns its offset. */
static uint64_t tseg_put(struct tseg *s, uint8_t type, uint8_t flags, uint64_t seq, uint64_t synced,
                         const uint8_t *payload, uint32_t len)
{
	static uint8_t rec[CS_REC_MAX];
	if (s->in_txn)
		flags |= REC_F_MID;
	s->in_txn = (flags & REC_F_CONT) != 0;
	struct rec_hdr h = {.type = type, .flags = flags, .seq = seq, .synced_seq = synced};
	struct iovec iov = {(void *)payload, len};
	uint64_t at = s->off;

	rec_encode(rec, &h, &iov, 1);
	assert_int_equal(pwrite(s->fd, rec, rec_size(len), (off_t)at), rec_size(len));
	s->off += rec_size(len);
	return at;
}

static uint64_t tseg_block(struct tseg *s, uint64_t seq, uint64_t synced, uint8_t flags)
{
	uint8_t p[CS_BLOCK_META + CS_DIGEST_MAX + 256];
	return tseg_put(s, REC_BLOCK, flags, seq, synced, p, payload_for(seq, p));
}

/* Writes `len` bytes of `byte` at off. */
static void smear(int fd, uint64_t off, uint8_t byte, size_t len)
{
	uint8_t buf[4096];

	assert_true(len <= sizeof(buf));
	memset(buf, byte, len);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
}

static void flip_bit(int fd, uint64_t off, int bit)
{
	uint8_t b;

	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= (uint8_t)(1u << bit);
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
}

static int range_is_zero(int fd, uint64_t from, uint64_t to)
{
	uint8_t buf[4096];

	while (from < to) {
		size_t n = (size_t)(to - from < sizeof(buf) ? to - from : sizeof(buf));
		assert_int_equal(pread(fd, buf, n, (off_t)from), (ssize_t)n);
		for (size_t i = 0; i < n; i++)
			if (buf[i] != 0)
				return 0;
		from += n;
	}
	return 1;
}

/* One past the last non-zero byte in [from, to) of fd, or `from`. */
static uint64_t last_nonzero(int fd, uint64_t from, uint64_t to)
{
	uint8_t b;

	for (uint64_t at = to; at > from; at--) {
		assert_int_equal(pread(fd, &b, 1, (off_t)(at - 1)), 1);
		if (b != 0)
			return at;
	}
	return from;
}

static uint64_t file_size(struct fx *f, uint32_t id)
{
	char name[16];
	struct stat st;

	seg_name(name, sizeof(name), id);
	if (fstatat(f->dirfd, name, &st, 0) != 0)
		return UINT64_MAX;
	return (uint64_t)st.st_size;
}

/* ---- Running a replay ------------------------------------------------------------------ */

struct got {
	uint64_t n;
	uint64_t seq[MAXREC];
	struct wal_pos pos[MAXREC];
	int fail_at; /* return an error from the apply callback at this record (1-based) */
	int warnings;
	char last_warning[512];
	char last_info[512];
};

static int collect(void *ctx, const struct rec_view *r)
{
	struct got *g = ctx;
	uint8_t want[CS_BLOCK_META + CS_DIGEST_MAX + 256];

	if (g->fail_at > 0 && g->n + 1 == (uint64_t)g->fail_at)
		return -1234;
	assert_int_equal(r->h.type, REC_BLOCK);
	uint32_t len = payload_for(r->h.seq, want);
	assert_int_equal(r->h.len, len);
	assert_memory_equal(r->payload, want, len);
	assert_true(g->n < MAXREC);
	g->seq[g->n] = r->h.seq;
	g->pos[g->n] = r->pos;
	g->n++;
	return 0;
}

static void logcb(void *ctx, int level, const char *msg)
{
	struct got *g = ctx;

	if (level == CS_LOG_WARN) {
		g->warnings++;
		snprintf(g->last_warning, sizeof(g->last_warning), "%s", msg);
	} else if (level == CS_LOG_INFO) {
		snprintf(g->last_info, sizeof(g->last_info), "%s", msg);
	}
}

static int run(struct fx *f, int salvage, struct got *g, struct rec_result *res)
{
	struct rec_options o = {.dirfd = f->dirfd,
	                        .store_uid = UID,
	                        .salvage = salvage,
	                        .apply = collect,
	                        .ctx = g,
	                        .log = logcb,
	                        .log_ctx = g};
	int fail_at = g->fail_at;

	memset(g, 0, sizeof(*g));
	g->fail_at = fail_at;
	cs_clear_error();
	return rec_replay(&o, res);
}

static void release(struct rec_result *res)
{
	for (uint32_t i = 0; i < res->nsegs; i++)
		close(res->segs[i].fd);
	free(res->segs);
	res->segs = NULL;
	rec_drops_free(&res->drops);
}

/* A replay that must fail with `code` and a message containing `needle`, leaving no fd. */
static void expect_fail(struct fx *f, int salvage, int code, const char *needle)
{
	static struct got g;
	struct rec_result res;
	int before = count_fds();

	int rc = run(f, salvage, &g, &res);
	if (rc != code || strstr(cs_errmsg(), needle) == NULL)
		fail_msg("rc %d (want %d), message \"%s\" (want \"%s\")", rc, code, cs_errmsg(),
		         needle);
	assert_null(res.segs);
	assert_int_equal(count_fds(), before);
}

/* Asserts that g holds exactly seqs [from, to) in order, less the ones in skip[]. */
static void expect_seqs(const struct got *g, uint64_t from, uint64_t to, const uint64_t *skip,
                        int nskip)
{
	uint64_t i = 0;

	for (uint64_t s = from; s < to; s++) {
		int skipped = 0;
		for (int k = 0; k < nskip; k++)
			skipped |= skip[k] == s;
		if (skipped)
			continue;
		assert_true(i < g->n);
		assert_int_equal(g->seq[i], s);
		i++;
	}
	assert_int_equal(g->n, i);
}

/* ---- Tests ------------------------------------------------------------------------------ */

/* An empty directory is an empty log: no segments, next seq 1. */
static void empty_dir(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;

	assert_int_equal(run(f, 0, &g, &res), 0);
	assert_int_equal(res.nsegs, 0);
	assert_null(res.segs);
	assert_int_equal(res.next_seq, 1);
	assert_int_equal(res.records, 0);
	assert_int_equal(g.n, 0);
	assert_int_equal(res.stray_files, 0);
}

/* A clean log over three segments (ids with a gap) replays every record once, in order,
 * with its payload and position; transactions are delivered whole; each segment is handed
 * over with the right fields and an O_RDWR|O_CLOEXEC fd; nothing is changed on disk. */
static void clean_log(void **state)
{
	struct fx *f = *state;
	static struct got g;
	static uint64_t off[MAXREC];
	static uint32_t seg_of[MAXREC];
	struct rec_result res;
	const uint32_t ids[3] = {1, 2, 7};
	uint64_t ends[3], seq = 1;
	const int per_seg = 120;

	for (int s = 0; s < 3; s++) {
		struct tseg t;
		tseg_create(&t, f, ids[s], seq);
		for (int i = 0; i < per_seg; i++, seq++) {
			/* Every tenth record opens a transaction of three. */
			uint8_t flags = (i % 10 == 0 || i % 10 == 1) ? REC_F_CONT : 0;
			off[seq] = tseg_block(&t, seq, seq > 8 ? seq - 8 : 0, flags);
			seg_of[seq] = ids[s];
		}
		ends[s] = t.off;
		tseg_close(&t);
	}
	/* The tail after the clean end holds garbage beyond the look-ahead window: the reader
	 * must not look at it, let alone change it. */
	{
		char name[16];
		seg_name(name, sizeof(name), 7);
		int fd = openat(f->dirfd, name, O_RDWR);
		smear(fd, ends[2] + WINDOW + 64, 0xab, 100);
		close(fd);
	}

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, seq, NULL, 0);
	for (uint64_t i = 0; i < g.n; i++) {
		assert_int_equal(g.pos[i].seg, seg_of[i + 1]);
		assert_int_equal(g.pos[i].off, off[i + 1]);
	}
	assert_int_equal(res.records, seq - 1);
	assert_int_equal(res.next_seq, seq);
	assert_int_equal(res.torn_bytes, 0);
	assert_int_equal(res.salvaged_records, 0);
	assert_int_equal(g.warnings, 0);
	assert_int_equal(res.nsegs, 3);
	for (int s = 0; s < 3; s++) {
		struct wal_seg *w = &res.segs[s];
		assert_int_equal(w->id, ids[s]);
		assert_int_equal(w->first_seq, 1 + (uint64_t)s * per_seg);
		assert_int_equal(w->capacity, CS_SEG_MIN);
		assert_int_equal(w->end, ends[s]);
		assert_int_equal(fcntl(w->fd, F_GETFL) & O_ACCMODE, O_RDWR);
		assert_true(fcntl(w->fd, F_GETFD) & FD_CLOEXEC);
	}
	assert_false(range_is_zero(res.segs[2].fd, ends[2] + WINDOW + 64, ends[2] + WINDOW + 164));
	release(&res);
}

/* A clean end: zeros after the last record are the end of the log, with no warning, no
 * torn bytes and no write (the file's bytes are the same after the replay). */
static void clean_end_zero_tail(void **state)
{
	struct fx *f = *state;
	static struct got g;
	static uint8_t before[8192], after[8192];
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 20; s++)
		tseg_block(&t, s, s - 1, 0);
	assert_true(t.off + 1024 < sizeof(before));
	assert_int_equal(pread(t.fd, before, sizeof(before), 0), sizeof(before));

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 21, NULL, 0);
	assert_int_equal(res.segs[0].end, t.off);
	assert_int_equal(res.torn_bytes, 0);
	assert_int_equal(g.warnings, 0);
	assert_int_equal(pread(t.fd, after, sizeof(after), 0), sizeof(after));
	assert_memory_equal(before, after, sizeof(before));
	release(&res);
	tseg_close(&t);
}

/* A log cut (ftruncate) at every offset inside its last three records replays exactly the
 * whole transactions before the cut, never fails, zeroes the cut record's remains, and a
 * second replay gives the same records and end with nothing left to truncate. The last two
 * records are one transaction, so a cut inside the last drops both. */
static void truncate_every_offset(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	/* Seqs B..B+9; B is chosen so the last three records are small (fewer cuts). */
	const uint64_t B = 164;
	uint64_t off[10], endr[10];

	for (uint64_t cut = 0;; cut++) {
		struct tseg t;
		/* The segment starts at B - 1 with a segment-drop record for seqs 1..B - 2: a
		 * first segment that starts after seq 1 is refused unless one accounts for the
		 * seqs before it (compaction deleted their segments). */
		uint8_t drop[REC_SEG_DROP_LEN];
		rec_seg_drop_encode(drop, &(struct rec_seg_drop){1, B - 1, 1, 1});
		tseg_create_v(&t, f, 1, UID, B - 1, SEG_FORMAT_VERSION, 1 << 16);
		tseg_put(&t, REC_SEG_DROP, 0, B - 1, 0, drop, sizeof(drop));
		for (int i = 0; i < 10; i++) {
			off[i] = tseg_block(&t, B + (uint64_t)i, B + (uint64_t)i - 3,
			                    i == 8 ? REC_F_CONT : 0);
			endr[i] = t.off;
		}
		uint64_t at = off[7] + cut;
		if (at > endr[9]) {
			tseg_close(&t);
			break;
		}
		assert_int_equal(ftruncate(t.fd, (off_t)at), 0);
		tseg_close(&t);

		/* Whole transactions that end at or before the cut survive. */
		int keep = at >= endr[9] ? 10 : at >= endr[7] ? 8 : 7;
		uint64_t want_end = keep == 10 ? endr[9] : keep == 8 ? endr[7] : off[7];

		for (int pass = 0; pass < 2; pass++) {
			int rc = run(f, 0, &g, &res);
			if (rc != 0)
				fail_msg("cut at %llu: %s", (unsigned long long)at, cs_errmsg());
			expect_seqs(&g, B, B + (uint64_t)keep, NULL, 0);
			assert_int_equal(res.next_seq, B + (uint64_t)keep);
			assert_int_equal(res.segs[0].end, want_end);
			if (pass == 0)
				assert_int_equal(res.torn_bytes > 0, at > want_end);
			else
				assert_int_equal(res.torn_bytes, 0);
			assert_true(range_is_zero(res.segs[0].fd, want_end, at));
			/* The short file is extended back to its capacity for the writer. */
			assert_int_equal(file_size(f, 1), CS_SEG_MIN);
			release(&res);
		}
	}
}

/* Garbage after the last record, and a record written only in part, are torn tails: zeroed
 * on disk (exactly their extent), counted, warned about, and the segment's end is where
 * appends resume: a record appended there replays after a second open. */
static void torn_tail_garbage(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	uint64_t tail;
	char want[128];

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 10; s++)
		tseg_block(&t, s, s - 1, 0);
	tail = t.off;
	/* 1000 bytes of seeded non-zero garbage. */
	srand(42);
	for (int i = 0; i < 1000; i++)
		smear(t.fd, tail + (uint64_t)i, (uint8_t)(rand() % 255 + 1), 1);

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 11, NULL, 0);
	assert_int_equal(res.torn_bytes, 1000);
	assert_int_equal(res.segs[0].end, tail);
	assert_int_equal(res.next_seq, 11);
	assert_true(range_is_zero(t.fd, tail, tail + 1000));
	snprintf(want, sizeof(want),
	         "segment 00000001: truncated torn tail of 1000 bytes at offset %llu",
	         (unsigned long long)tail);
	assert_string_equal(g.last_warning, want);
	release(&res);

	/* A partial record: seq 11 written whole, then the second half of its bytes lost. */
	t.off = tail;
	uint64_t r11 = tseg_block(&t, 11, 10, 0);
	uint64_t half = r11 + (t.off - r11) / 2;
	smear(t.fd, half, 0, (size_t)(t.off - half));
	uint64_t z = last_nonzero(t.fd, r11, half);
	assert_int_equal(r11, tail);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 11, NULL, 0);
	assert_int_equal(res.torn_bytes, z - r11);
	assert_int_equal(res.segs[0].end, r11);
	assert_true(range_is_zero(t.fd, r11, t.off));
	release(&res);

	/* A record whose first 512 bytes never reached the disk (a lost sector) while its
	 * later bytes did: the zero header is not a clean end, because non-zero bytes follow
	 * within the window. */
	static uint8_t lump[1200];
	memset(lump, 0x6c, sizeof(lump));
	t.off = r11;
	tseg_put(&t, REC_BLOCK, 0, 11, 10, lump, sizeof(lump));
	smear(t.fd, r11, 0, 512);
	z = last_nonzero(t.fd, r11, t.off);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 11, NULL, 0);
	assert_int_equal(res.torn_bytes, z - r11);
	assert_int_equal(res.segs[0].end, r11);
	assert_true(range_is_zero(t.fd, r11, t.off));
	release(&res);

	/* Append where the replay said, as the writer would, and replay again. */
	t.off = r11;
	tseg_block(&t, 11, 10, 0);
	tseg_block(&t, 12, 11, 0);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 13, NULL, 0);
	assert_int_equal(res.torn_bytes, 0);
	assert_int_equal(res.segs[0].end, t.off);
	release(&res);
	tseg_close(&t);
}

/* Records 1..12 in three batches; record 6 is damaged; batch 9..12 carries synced_seq 8, so
 * the writer knew record 6 was durable. For every bit of record 6's header and one bit of
 * every byte of its payload: without salvage the open fails with CS_ECORRUPT naming segment
 * and offset and leaves no fd open; with salvage it opens and applies every record but 6
 * and 7, counting exactly those two and their bytes as lost (7, where salvage resumes, might
 * be the tail of a transaction the damage cut, so its transaction is dropped too). */
static void midlog_bitflip(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	uint64_t off6 = 0, off7 = 0, end = 0;
	uint32_t len6 = 0;
	char needle[96];
	const uint64_t skip[1] = {6};

	/* Every bit of the header; one bit of each payload byte, rotating (for speed). */
	for (int i = 0;; i++) {
		const int hbits = 8 * CS_REC_HEADER;
		int bit = i < hbits ? i : 8 * ((int)CS_REC_HEADER + i - hbits) + i % 8;
		struct tseg t;
		tseg_create_v(&t, f, 1, UID, 1, SEG_FORMAT_VERSION, 1 << 16);
		for (uint64_t s = 1; s <= 12; s++) {
			uint64_t o = tseg_block(&t, s, s <= 4 ? 0 : s <= 8 ? 4 : 8, 0);
			if (s == 6)
				off6 = o;
			if (s == 7)
				off7 = o;
		}
		end = t.off;
		uint8_t hb[CS_REC_HEADER];
		assert_int_equal(pread(t.fd, hb, sizeof(hb), (off_t)off6), sizeof(hb));
		len6 = get_le32(hb + 8);
		if ((uint32_t)bit >= 8 * (CS_REC_HEADER + len6)) {
			tseg_close(&t);
			break;
		}
		flip_bit(t.fd, off6 + (uint64_t)bit / 8, bit % 8);
		tseg_close(&t);

		snprintf(needle, sizeof(needle),
		         "segment 00000001 offset %llu: ", (unsigned long long)off6);
		expect_fail(f, 0, CS_ECORRUPT, needle);
		assert_non_null(strstr(cs_errmsg(), "6 valid records follow"));

		int rc = run(f, 1, &g, &res);
		if (rc != 0)
			fail_msg("bit %d: %s", bit, cs_errmsg());
		expect_seqs(&g, 1, 13, skip, 1);
		assert_int_equal(res.salvaged_records, 1);
		assert_int_equal(res.salvaged_bytes, off7 - off6);
		assert_int_equal(res.torn_bytes, 0);
		assert_int_equal(res.next_seq, 13);
		assert_int_equal(res.segs[0].end, end);
		assert_true(g.warnings >= 1);
		release(&res);
	}
	assert_true(len6 > CS_BLOCK_META);
}

/* A record whose seq jumps ahead inside a segment (5 then 8), written after seq 7 was
 * durable, is corruption: records 6 and 7 are missing. Salvage resumes at it (it has no
 * REC_F_MID, so it begins a transaction), counting two records lost; 8 and 9 are applied. */
static void seq_jump_in_segment(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	const uint64_t skip[2] = {6, 7};

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 5; s++)
		tseg_block(&t, s, s - 1, 0);
	uint64_t at = tseg_block(&t, 8, 7, 0);
	tseg_block(&t, 9, 8, 0);
	tseg_close(&t);

	char needle[96];
	snprintf(needle, sizeof(needle), "segment 00000001 offset %llu: record has seq 8 where 6",
	         (unsigned long long)at);
	expect_fail(f, 0, CS_ECORRUPT, needle);
	assert_int_equal(run(f, 1, &g, &res), 0);
	expect_seqs(&g, 1, 10, skip, 2);
	assert_int_equal(res.salvaged_records, 2);
	assert_int_equal(res.salvaged_bytes, 0);
	assert_int_equal(res.next_seq, 10);
	release(&res);
}

/* Damage followed only by records with synced_seq below the damaged seq is a torn tail:
 * those records were written in the same unsynced window and never acknowledged, so they
 * are zeroed too, with or without salvage; a second replay agrees. The boundary is exact:
 * one later record with synced_seq equal to the damaged seq makes it corruption. */
static void damage_then_unsynced_is_torn(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;

	for (int salvage = 0; salvage < 2; salvage++) {
		struct tseg t;
		uint64_t off6 = 0;
		tseg_create(&t, f, 1, 1);
		for (uint64_t s = 1; s <= 8; s++) {
			uint64_t o = tseg_block(&t, s, s <= 4 ? 0 : s == 5 ? 4 : 5, 0);
			if (s == 6)
				off6 = o;
		}
		uint64_t end8 = t.off;
		smear(t.fd, off6 + CS_REC_HEADER + 3, 0x5a, 4);

		assert_int_equal(run(f, salvage, &g, &res), 0);
		expect_seqs(&g, 1, 6, NULL, 0);
		assert_int_equal(res.next_seq, 6);
		assert_int_equal(res.segs[0].end, off6);
		assert_int_equal(res.torn_bytes, end8 - off6);
		assert_int_equal(res.salvaged_records, 0);
		assert_true(range_is_zero(t.fd, off6, end8));
		release(&res);

		assert_int_equal(run(f, salvage, &g, &res), 0);
		expect_seqs(&g, 1, 6, NULL, 0);
		assert_int_equal(res.segs[0].end, off6);
		assert_int_equal(res.torn_bytes, 0);
		release(&res);
		tseg_close(&t);
		wipe(f);
	}

	struct tseg t;
	uint64_t off6 = 0;
	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 8; s++) {
		uint64_t o = tseg_block(&t, s, s <= 4 ? 0 : s == 5 ? 4 : s == 8 ? 6 : 5, 0);
		if (s == 6)
			off6 = o;
	}
	smear(t.fd, off6 + CS_REC_HEADER + 3, 0x5a, 4);
	tseg_close(&t);
	char needle[96];
	snprintf(needle, sizeof(needle),
	         "segment 00000001 offset %llu: record checksum mismatch; 2 valid records follow",
	         (unsigned long long)off6);
	expect_fail(f, 0, CS_ECORRUPT, needle);
}

/* Under salvage, a transaction cut by the damage is dropped whole: its records before the
 * damage, the damaged one, and its records after it (5, 6, 7 with 6 damaged); the records
 * after it, a later transaction included, are applied. */
static void salvage_drops_cut_transaction(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	const uint64_t skip[3] = {5, 6, 7};

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 4; s++)
		tseg_block(&t, s, 0, 0);
	uint64_t off5 = tseg_block(&t, 5, 4, REC_F_CONT);
	uint64_t off6 = tseg_block(&t, 6, 4, REC_F_CONT);
	tseg_block(&t, 7, 4, 0);
	uint64_t off8 = tseg_block(&t, 8, 7, 0);
	tseg_block(&t, 9, 7, 0);
	tseg_block(&t, 10, 7, REC_F_CONT);
	tseg_block(&t, 11, 7, 0);
	flip_bit(t.fd, off6 + CS_REC_HEADER + 20, 5);
	tseg_close(&t);

	char needle[96];
	snprintf(needle, sizeof(needle), "segment 00000001 offset %llu: record checksum mismatch",
	         (unsigned long long)off6);
	expect_fail(f, 0, CS_ECORRUPT, needle);
	assert_int_equal(run(f, 1, &g, &res), 0);
	expect_seqs(&g, 1, 12, skip, 3);
	assert_int_equal(res.salvaged_records, 3);
	assert_int_equal(res.salvaged_bytes, off8 - off5);
	assert_int_equal(res.next_seq, 12);
	release(&res);
}

/* Salvage resumes at a record that opens a transaction the crash left unfinished (the
 * log's last batch was torn): everything from the salvaged region on is gone, so it is
 * all truncated and the log ends where the region began. The next open, without salvage,
 * gives the same answer. */
static void salvage_resume_into_torn_tail(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 5; s++)
		tseg_block(&t, s, s - 1, 0);
	uint64_t off6 = tseg_block(&t, 6, 5, 0);
	uint64_t off7 = tseg_block(&t, 7, 6, REC_F_CONT);
	uint64_t end7 = t.off;
	smear(t.fd, off6 + 16, 0x33, 1); /* seq field: checksum mismatch */

	expect_fail(f, 0, CS_ECORRUPT, "1 valid records follow");
	assert_int_equal(run(f, 1, &g, &res), 0);
	expect_seqs(&g, 1, 6, NULL, 0);
	assert_int_equal(res.salvaged_records, 1);
	assert_int_equal(res.salvaged_bytes, off7 - off6);
	assert_int_equal(res.torn_bytes, end7 - off7);
	assert_int_equal(res.next_seq, 6);
	assert_int_equal(res.segs[0].end, off6);
	assert_true(range_is_zero(t.fd, off6, end7));
	release(&res);

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 6, NULL, 0);
	assert_int_equal(res.next_seq, 6);
	assert_int_equal(res.segs[0].end, off6);
	assert_int_equal(res.torn_bytes + res.salvaged_records, 0);
	release(&res);
	tseg_close(&t);
}

/* The look-ahead is bounded by the segment's window: a testifying record (synced_seq >= the
 * damaged seq) that starts more than `window` bytes after the damage is not seen, and the
 * damage is judged a torn tail. (By G3 such a record cannot follow a torn write.) */
static void lookahead_bounded_by_window(void **state)
{
	struct fx *f = *state;
	static struct got g;
	static uint8_t big[CS_BLOCK_META + CS_DIGEST_MAX + 40000];
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 3; s++)
		tseg_block(&t, s, 0, 0);
	uint64_t off4 = tseg_block(&t, 4, 0, 0);
	/* Unsynced filler, ~80 KB: longer than the 64 KiB window. */
	rec_block_meta(big, CS_HASH_SHA2_256, CS_DIGEST_MAX, CS_CODEC_RAW);
	tseg_put(&t, REC_BLOCK, 0, 5, 3, big, sizeof(big));
	tseg_put(&t, REC_BLOCK, 0, 6, 3, big, sizeof(big));
	uint64_t off7 = tseg_block(&t, 7, 6, 0);
	assert_true(off7 > off4 + WINDOW);
	smear(t.fd, off4 + CS_REC_HEADER, 0xee, 8);
	tseg_close(&t);

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 4, NULL, 0);
	assert_int_equal(res.segs[0].end, off4);
	assert_true(res.torn_bytes > WINDOW);
	release(&res);
}

/* A transaction whose last record is torn, or was never written, is dropped whole: none of
 * its records is applied, its bytes are zeroed, and appends resume at its first record. */
static void torn_transaction(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;

	/* Closing record 6 damaged. */
	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 3; s++)
		tseg_block(&t, s, s - 1, 0);
	uint64_t off4 = tseg_block(&t, 4, 3, REC_F_CONT);
	tseg_block(&t, 5, 3, REC_F_CONT);
	uint64_t off6 = tseg_block(&t, 6, 3, 0);
	uint64_t end6 = t.off;
	smear(t.fd, off6 + CS_REC_HEADER + 2, 0x77, 3);
	uint64_t z = last_nonzero(t.fd, off6, end6);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 4, NULL, 0);
	assert_int_equal(res.next_seq, 4);
	assert_int_equal(res.segs[0].end, off4);
	assert_int_equal(res.torn_bytes, z - off4);
	assert_true(range_is_zero(t.fd, off4, end6));
	release(&res);
	tseg_close(&t);

	/* Closing record never written: a clean end with the transaction still open. */
	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 3; s++)
		tseg_block(&t, s, s - 1, 0);
	tseg_block(&t, 4, 3, REC_F_CONT);
	tseg_block(&t, 5, 3, REC_F_CONT);
	uint64_t end5 = t.off;
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 4, NULL, 0);
	assert_int_equal(res.segs[0].end, off4);
	assert_int_equal(res.torn_bytes, end5 - off4);
	assert_true(range_is_zero(t.fd, off4, end5));
	release(&res);
	tseg_close(&t);
}

/* A transaction longer than the buffer (window + CS_REC_MAX) breaks G5: CS_ECORRUPT naming
 * where it starts, not an overrun. */
static void transaction_longer_than_window(void **state)
{
	struct fx *f = *state;
	static uint8_t big[CS_REC_PAYLOAD_MAX];
	struct tseg t;

	rec_block_meta(big, CS_HASH_SHA2_256, CS_DIGEST_MAX, CS_CODEC_RAW);
	tseg_create(&t, f, 1, 1);
	tseg_block(&t, 1, 0, 0);
	uint64_t at =
	    tseg_put(&t, REC_BLOCK, REC_F_CONT, 2, 1, big, CS_BLOCK_META + CS_DIGEST_MAX + 100000);
	tseg_put(&t, REC_BLOCK, REC_F_CONT, 3, 1, big, sizeof(big));
	tseg_put(&t, REC_BLOCK, 0, 4, 1, big, 100);
	tseg_close(&t);
	char needle[96];
	snprintf(needle, sizeof(needle), "segment 00000001 offset %llu: transaction longer",
	         (unsigned long long)at);
	expect_fail(f, 1, CS_ECORRUPT, needle);
}

/* Segments must continue each other's seqs: a gap is CS_ECORRUPT (salvage counts the
 * missing records and goes on); an overlap is CS_ECORRUPT even under salvage. */
static void seq_gap_between_segments(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	const uint64_t skip6 = 6;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 5; s++)
		tseg_block(&t, s, s - 1, 0);
	tseg_close(&t);
	tseg_create(&t, f, 2, 7);
	for (uint64_t s = 7; s <= 9; s++)
		tseg_block(&t, s, s - 1, 0);
	tseg_close(&t);

	expect_fail(f, 0, CS_ECORRUPT, "segment 00000002 starts at seq 7, expected 6");
	assert_int_equal(run(f, 1, &g, &res), 0);
	expect_seqs(&g, 1, 10, &skip6, 1);
	assert_int_equal(res.salvaged_records, 1);
	assert_int_equal(res.next_seq, 10);
	release(&res);

	tseg_create(&t, f, 2, 5);
	tseg_block(&t, 5, 4, 0);
	tseg_close(&t);
	expect_fail(f, 0, CS_ECORRUPT, "segment 00000002 starts at seq 5, expected 6");
	expect_fail(f, 1, CS_ECORRUPT, "sequence numbers repeat");
}

/* Damage at the end of a segment that is not the last: acceptable (warned, counted, file
 * untouched) when the next segment continues from the damaged seq; otherwise records were
 * lost: CS_ECORRUPT, or counted under salvage. */
static void torn_end_of_middle_segment(void **state)
{
	struct fx *f = *state;
	static struct got g;
	static uint8_t before[4096], after[4096];
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 5; s++)
		tseg_block(&t, s, s - 1, 0);
	uint64_t end5 = t.off;
	smear(t.fd, end5, 0x99, 200);
	assert_int_equal(pread(t.fd, before, sizeof(before), 0), sizeof(before));
	struct tseg u;
	tseg_create(&u, f, 2, 6);
	tseg_block(&u, 6, 5, 0);
	tseg_close(&u);

	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 7, NULL, 0);
	assert_int_equal(res.segs[0].end, end5);
	assert_int_equal(res.torn_bytes, 200);
	assert_non_null(strstr(g.last_warning, "ignored torn tail of 200 bytes"));
	assert_int_equal(pread(t.fd, after, sizeof(after), 0), sizeof(after));
	assert_memory_equal(before, after, sizeof(before));
	release(&res);

	/* Now the next segment starts at 7: whatever the damage held is lost. */
	tseg_create(&u, f, 2, 7);
	tseg_block(&u, 7, 6, 0);
	tseg_close(&u);
	char needle[96];
	snprintf(needle, sizeof(needle), "segment 00000001 offset %llu: bad record header",
	         (unsigned long long)end5);
	expect_fail(f, 0, CS_ECORRUPT, needle);
	const uint64_t skip6 = 6;
	assert_int_equal(run(f, 1, &g, &res), 0);
	expect_seqs(&g, 1, 8, &skip6, 1);
	assert_int_equal(res.salvaged_records, 1);
	assert_int_equal(res.salvaged_bytes, 200);
	release(&res);
	tseg_close(&t);
}

/* Segment header checks: another store's uid, a header naming another id, a bad header
 * checksum are CS_ECORRUPT naming the segment; a newer format version is CS_EVERSION. */
static void segment_header_checks(void **state)
{
	struct fx *f = *state;
	struct tseg t;

	tseg_create_v(&t, f, 1, UID + 1, 1, SEG_FORMAT_VERSION, CS_SEG_MIN);
	tseg_close(&t);
	expect_fail(f, 0, CS_ECORRUPT, "segment 00000001 belongs to another store");
	expect_fail(f, 1, CS_ECORRUPT, "another store");

	tseg_create_v(&t, f, 1, UID, 1, SEG_FORMAT_VERSION + 1, CS_SEG_MIN);
	tseg_close(&t);
	expect_fail(f, 0, CS_EVERSION, "segment 00000001: segment format version 2");

	tseg_create(&t, f, 1, 1);
	tseg_block(&t, 1, 0, 0);
	flip_bit(t.fd, 40, 3); /* capacity: the header checksum no longer matches */
	tseg_close(&t);
	expect_fail(f, 1, CS_ECORRUPT, "segment 00000001: segment header checksum mismatch");

	/* A valid header inside a file named for another id. */
	tseg_create(&t, f, 1, 1);
	tseg_close(&t);
	assert_int_equal(renameat(f->dirfd, "00000001.seg", f->dirfd, "00000003.seg"), 0);
	expect_fail(f, 0, CS_ECORRUPT, "segment 00000003: header names segment 00000001");
}

/* Unknown record types: without SKIPPABLE the log is refused with CS_EVERSION (it was
 * written by a newer version); with it the record is skipped (never applied) while its seq
 * counts, and the records after it replay. Reserved types 3..7 are unknown to version 1. */
static void unknown_record_types(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	const uint8_t opaque[] = "future stuff";
	const uint64_t skip[2] = {3, 4};

	tseg_create(&t, f, 1, 1);
	tseg_block(&t, 1, 0, 0);
	tseg_block(&t, 2, 1, 0);
	uint64_t at = tseg_put(&t, 200, 0, 3, 2, opaque, sizeof(opaque));
	tseg_close(&t);
	char needle[96];
	snprintf(needle, sizeof(needle), "segment 00000001 offset %llu: record type 200",
	         (unsigned long long)at);
	expect_fail(f, 0, CS_EVERSION, needle);
	expect_fail(f, 1, CS_EVERSION, needle);

	tseg_create(&t, f, 1, 1);
	tseg_block(&t, 1, 0, 0);
	tseg_block(&t, 2, 1, 0);
	tseg_put(&t, 200, REC_F_SKIPPABLE, 3, 2, opaque, sizeof(opaque));
	tseg_put(&t, 201, REC_F_SKIPPABLE, 4, 2, opaque, sizeof(opaque));
	tseg_block(&t, 5, 4, 0);
	tseg_close(&t);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 6, skip, 2);
	assert_int_equal(res.records, 3);
	assert_int_equal(res.next_seq, 6);
	release(&res);

	tseg_create(&t, f, 1, 1);
	tseg_put(&t, REC_CHECKPOINT, 0, 1, 0, opaque, sizeof(opaque));
	tseg_close(&t);
	expect_fail(f, 0, CS_EVERSION, "record type 7");
}

/* A last segment file whose header was never completed (zero length, zero header, a few
 * bytes) is a crash during its creation, or a spare the writer made ahead of need and never
 * started (FORMAT.md G1): removed, with the directory synced and a message (information, not
 * a warning). The same in a middle segment is CS_ECORRUPT. The segment before an unfinished
 * one is the last (format version 4): a spare is made while that one is still written, so a
 * torn tail there is truncated like any last segment's, and the unfinished file removed. */
static void unfinished_last_segment(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 4; s++)
		tseg_block(&t, s, s - 1, 0);
	uint64_t end4 = t.off;

	for (int kind = 0; kind < 3; kind++) {
		int fd = openat(f->dirfd, "00000002.seg", O_RDWR | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		if (kind == 1)
			assert_int_equal(ftruncate(fd, CS_SEG_MIN), 0);
		if (kind == 2)
			assert_int_equal(write(fd, "CIDSTSEG\1\0", 10), 10);
		close(fd);
		assert_int_equal(run(f, 0, &g, &res), 0);
		expect_seqs(&g, 1, 5, NULL, 0);
		assert_int_equal(res.nsegs, 1);
		assert_int_equal(res.segs[0].end, end4);
		assert_int_equal(res.next_seq, 5);
		assert_int_equal(file_size(f, 2), UINT64_MAX); /* removed */
		assert_non_null(strstr(g.last_info, "segment 00000002: removed"));
		assert_int_equal(g.warnings, 0); /* a spare is no damage */
		release(&res);
	}

	/* Zero header in the middle. */
	int fd = openat(f->dirfd, "00000002.seg", O_RDWR | O_CREAT | O_TRUNC, 0600);
	close(fd);
	struct tseg u;
	tseg_create(&u, f, 3, 5);
	tseg_close(&u);
	expect_fail(f, 1, CS_ECORRUPT, "segment 00000002: file shorter than its header");
	assert_int_equal(unlinkat(f->dirfd, "00000003.seg", 0), 0);

	/* Garbage after record 4 of segment 1, which is followed by the unfinished 2 (a spare,
	 * preallocated, as the writer makes it): a torn tail of the last segment. */
	fd = openat(f->dirfd, "00000002.seg", O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(ftruncate(fd, CS_SEG_MIN), 0);
	close(fd);
	smear(t.fd, end4, 0x42, 16);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 5, NULL, 0);
	assert_int_equal(res.torn_bytes, 16);
	assert_int_equal(res.salvaged_bytes, 0);
	assert_int_equal(res.nsegs, 1);
	assert_int_equal(res.next_seq, 5);
	assert_true(range_is_zero(t.fd, end4, end4 + 16));
	assert_int_equal(file_size(f, 2), UINT64_MAX);
	release(&res);
	/* A record cut short at the end of segment 1, the spare after it: the same. */
	tseg_block(&t, 5, 4, 0);
	uint64_t end5 = t.off;
	assert_int_equal(ftruncate(t.fd, (off_t)(end4 + (end5 - end4) / 2)), 0);
	assert_int_equal(ftruncate(t.fd, CS_SEG_MIN), 0);
	fd = openat(f->dirfd, "00000002.seg", O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(ftruncate(fd, CS_SEG_MIN), 0);
	close(fd);
	assert_int_equal(run(f, 0, &g, &res), 0);
	expect_seqs(&g, 1, 5, NULL, 0);
	assert_true(res.torn_bytes > 0);
	assert_int_equal(res.next_seq, 5);
	assert_true(range_is_zero(t.fd, end4, end5));
	assert_int_equal(file_size(f, 2), UINT64_MAX);
	release(&res);
	tseg_close(&t);

	/* The only segment unfinished: an empty log. */
	wipe(f);
	fd = openat(f->dirfd, "00000001.seg", O_RDWR | O_CREAT | O_TRUNC, 0600);
	close(fd);
	assert_int_equal(run(f, 0, &g, &res), 0);
	assert_int_equal(res.nsegs, 0);
	assert_null(res.segs);
	assert_int_equal(res.next_seq, 1);
	assert_int_equal(file_size(f, 1), UINT64_MAX);
}

/* Names that are not the store's are counted as stray and left alone; LOCK, CIDSTORE and
 * checkpoint* are the store's. */
static void stray_files(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;
	const char *ours[] = {"LOCK", "CIDSTORE", "checkpoint.00000001", "checkpoint"};
	const char *stray[] = {"notes.txt", "0000000A.seg", "1.seg", "00000001.seg~"};

	tseg_create(&t, f, 1, 1);
	tseg_block(&t, 1, 0, 0);
	tseg_close(&t);
	for (size_t i = 0; i < 4; i++) {
		close(openat(f->dirfd, ours[i], O_RDWR | O_CREAT, 0600));
		close(openat(f->dirfd, stray[i], O_RDWR | O_CREAT, 0600));
	}
	assert_int_equal(mkdirat(f->dirfd, "subdir", 0700), 0);

	assert_int_equal(run(f, 0, &g, &res), 0);
	assert_int_equal(res.stray_files, 5);
	assert_int_equal(res.nsegs, 1);
	expect_seqs(&g, 1, 2, NULL, 0);
	release(&res);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(faccessat(f->dirfd, stray[i], F_OK, 0), 0);
}

/* An error from the apply callback stops the replay, is returned as is, and leaves no fd. */
static void apply_error_stops(void **state)
{
	struct fx *f = *state;
	static struct got g;
	struct rec_result res;
	struct tseg t;

	tseg_create(&t, f, 1, 1);
	for (uint64_t s = 1; s <= 5; s++)
		tseg_block(&t, s, s - 1, 0);
	tseg_close(&t);
	tseg_create(&t, f, 2, 6);
	tseg_block(&t, 6, 5, 0);
	tseg_close(&t);

	int before = count_fds();
	g.fail_at = 3;
	assert_int_equal(run(f, 0, &g, &res), -1234);
	g.fail_at = 0;
	assert_int_equal(g.n, 2);
	assert_null(res.segs);
	assert_int_equal(count_fds(), before);
}

/* ---- The worked example of docs/FORMAT.md --------------------------------------------- */

/* The hex example in docs/FORMAT.md decodes to exactly the fields its text gives, and the
 * encoder produces exactly its bytes. */
static size_t read_example(uint8_t *out, size_t cap)
{
	return tu_format_example("hex-example", out, cap);
}

/* The carry and drop payloads of FORMAT.md sections 4.10 and 4.11 decode to what the text
 * says and encode back to the same bytes. */
static void format_compaction_examples(void **state)
{
	uint8_t doc[128], mine[128], key[CS_KEY_MAX];
	struct rec_carry c;
	struct rec_seg_drop d;

	(void)state;
	size_t n = tu_format_example("carry-example", doc, sizeof(doc));
	assert_int_equal(n, 56);
	assert_int_equal(rec_carry_decode(doc, (uint32_t)n, &c), 0);
	assert_int_equal(c.type, REC_DELETE);
	assert_int_equal(c.seg, 3);
	assert_int_equal(c.off, 0x1040);
	assert_int_equal(c.len, 40);
	assert_int_equal(rec_key_decode(c.payload, c.len, key), 0);
	assert_int_equal(key[0] << 8 | key[1], CS_HASH_SHA2_256);
	assert_int_equal(key[2], 0x2c);
	rec_carry_meta(mine, REC_DELETE, 3, 0x1040);
	rec_block_meta(mine + REC_CARRY_META, CS_HASH_SHA2_256, 32, 0);
	memcpy(mine + REC_CARRY_META + CS_BLOCK_META, key + 2, 32);
	assert_memory_equal(mine, doc, n);
	doc[1] = 1; /* a reserved byte */
	assert_int_equal(rec_carry_decode(doc, (uint32_t)n, &c), CS_ECORRUPT);
	doc[1] = 0;
	doc[0] = REC_NAME_SET; /* only negatives are carried */
	assert_int_equal(rec_carry_decode(doc, (uint32_t)n, &c), CS_ECORRUPT);

	n = tu_format_example("drop-example", doc, sizeof(doc));
	assert_int_equal(n, REC_SEG_DROP_LEN);
	assert_int_equal(rec_seg_drop_decode(doc, (uint32_t)n, 42, &d), 0);
	assert_int_equal(d.from_seq, 1);
	assert_int_equal(d.to_seq, 42);
	assert_int_equal(d.first_id, 1);
	assert_int_equal(d.last_id, 2);
	rec_seg_drop_encode(mine, &d);
	assert_memory_equal(mine, doc, n);
	/* The range must end at or before the record's own seq. */
	assert_int_equal(rec_seg_drop_decode(doc, (uint32_t)n, 41, &d), CS_ECORRUPT);
}

/* The dropped ranges merge what overlaps or touches, and cover a gap only inside one. */
static void dropped_ranges(void **state)
{
	struct rec_drops ds = {0};
	static const struct rec_drop add[] = {
	    {10, 20, 2, 2}, {30, 40, 4, 4}, {1, 5, 1, 1}, {20, 30, 3, 3}, {12, 18, 2, 2},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(add) / sizeof(add[0]); i++)
		assert_int_equal(rec_drops_add(&ds, &add[i]), 0);
	assert_int_equal(ds.n, 2);
	assert_int_equal(ds.v[0].from_seq, 1);
	assert_int_equal(ds.v[0].to_seq, 5);
	assert_int_equal(ds.v[1].from_seq, 10);
	assert_int_equal(ds.v[1].to_seq, 40);
	assert_int_equal(ds.v[1].first_id, 2);
	assert_int_equal(ds.v[1].last_id, 4);
	assert_true(rec_drops_cover(&ds, 10, 40));
	assert_true(rec_drops_cover(&ds, 15, 35));
	assert_true(rec_drops_cover(&ds, 1, 5));
	assert_true(rec_drops_cover(&ds, 7, 7)); /* empty */
	assert_false(rec_drops_cover(&ds, 4, 11));
	assert_false(rec_drops_cover(&ds, 5, 10));
	assert_false(rec_drops_cover(&ds, 39, 41));
	assert_int_equal(rec_drops_add(&ds, &(struct rec_drop){5, 10, 9, 9}), 0);
	assert_int_equal(ds.n, 1);
	assert_true(rec_drops_cover(&ds, 1, 40));
	rec_drops_free(&ds);
}

static void format_example(void **state)
{
	uint8_t doc[256], mine[256];
	size_t n = read_example(doc, sizeof(doc));
	static const uint8_t digest[32] = {
	    0x2c, 0xf2, 0x4d, 0xba, 0x5f, 0xb0, 0xa3, 0x0e, 0x26, 0xe8, 0x3b,
	    0x2a, 0xc5, 0xb9, 0xe2, 0x9e, 0x1b, 0x16, 0x1e, 0x5c, 0x1f, 0xa7,
	    0x42, 0x5e, 0x73, 0x04, 0x33, 0x62, 0x93, 0x8b, 0x98, 0x24,
	};
	uint8_t sha[32];
	unsigned shalen = 0;

	(void)state;
	assert_int_equal(n, 152);
	/* The digest in the text really is sha2-256("hello"). */
	assert_int_equal(EVP_Digest("hello", 5, sha, &shalen, EVP_sha256(), NULL), 1);
	assert_memory_equal(sha, digest, 32);

	struct seg_hdr sh;
	assert_int_equal(seg_decode(doc, &sh), 0);
	assert_int_equal(sh.version, 1);
	assert_int_equal(sh.store_uid, 0x0123456789abcdefull);
	assert_int_equal(sh.id, 1);
	assert_int_equal(sh.first_seq, 1);
	assert_int_equal(sh.capacity, 16u << 20);
	assert_int_equal(sh.window, 16u << 20);
	assert_int_equal(get_le64(doc + 56), 0x4da5e72b4be018f5ull);

	struct rec_hdr h;
	const uint8_t *r = doc + CS_SEG_HEADER;
	assert_int_equal(rec_decode_header(r, &h), REC_OK);
	assert_int_equal(h.type, REC_BLOCK);
	assert_int_equal(h.flags, 0);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.len, 45);
	assert_int_equal(h.seq, 1);
	assert_int_equal(h.synced_seq, 0);
	assert_int_equal(h.checksum, 0xcaee8c84bba2a169ull);
	assert_int_equal(rec_size(h.len), n - CS_SEG_HEADER);
	struct iovec pl = {(void *)(r + CS_REC_HEADER), h.len};
	assert_int_equal(rec_verify(r, &h, &pl, 1), 0);
	struct rec_block b;
	assert_int_equal(rec_block_decode(r + CS_REC_HEADER, h.len, &b), 0);
	assert_int_equal(b.hash, CS_HASH_SHA2_256);
	assert_int_equal(b.digest_len, 32);
	assert_int_equal(b.codec, CS_CODEC_RAW);
	assert_memory_equal(b.digest, digest, 32);
	assert_int_equal(b.data_len, 5);
	assert_memory_equal(b.data, "hello", 5);

	/* Encode the same and compare every byte, padding included. */
	memset(mine, 0xff, sizeof(mine));
	struct seg_hdr eh = {.version = SEG_FORMAT_VERSION,
	                     .store_uid = 0x0123456789abcdefull,
	                     .id = 1,
	                     .first_seq = 1,
	                     .capacity = 16u << 20,
	                     .window = 16u << 20};
	seg_encode(mine, &eh);
	uint8_t meta[CS_BLOCK_META];
	rec_block_meta(meta, CS_HASH_SHA2_256, 32, CS_CODEC_RAW);
	struct iovec parts[3] = {{meta, sizeof(meta)}, {(void *)digest, 32}, {(void *)"hello", 5}};
	struct rec_hdr eh2 = {.type = REC_BLOCK, .flags = 0, .seq = 1, .synced_seq = 0};
	rec_encode(mine + CS_SEG_HEADER, &eh2, parts, 3);
	assert_memory_equal(mine, doc, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(empty_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(clean_log, setup, teardown),
	    cmocka_unit_test_setup_teardown(clean_end_zero_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(truncate_every_offset, setup, teardown),
	    cmocka_unit_test_setup_teardown(torn_tail_garbage, setup, teardown),
	    cmocka_unit_test_setup_teardown(midlog_bitflip, setup, teardown),
	    cmocka_unit_test_setup_teardown(seq_jump_in_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(damage_then_unsynced_is_torn, setup, teardown),
	    cmocka_unit_test_setup_teardown(salvage_drops_cut_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(salvage_resume_into_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(lookahead_bounded_by_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(torn_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(transaction_longer_than_window, setup, teardown),
	    cmocka_unit_test_setup_teardown(seq_gap_between_segments, setup, teardown),
	    cmocka_unit_test_setup_teardown(torn_end_of_middle_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(segment_header_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(unknown_record_types, setup, teardown),
	    cmocka_unit_test_setup_teardown(unfinished_last_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(stray_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(apply_error_stops, setup, teardown),
	    cmocka_unit_test(format_example),
	    cmocka_unit_test(format_compaction_examples),
	    cmocka_unit_test(dropped_ranges),
	};
	if (getenv("CS_TEST_FILTER") != NULL) /* run one test: CS_TEST_FILTER=midlog_bitflip */
		cmocka_set_test_filter(getenv("CS_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
