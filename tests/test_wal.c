/*
 * test_wal.c - proves the write-ahead log's contract (wal/wal.h) on the I/O backend that
 * CIDSTORE_IO names (uring or psync; uring falls back to psync when the kernel refuses it):
 *  - a record reads back at once from the batch buffer and, after wal_sync, from the file,
 *    byte for byte, with the header fields it was given; a damaged byte in the file is
 *    CS_ECORRUPT naming segment and offset;
 *  - wal_read_many reads records back to back in the file with one call, and answers as
 *    wal_read calls in order would: in any order, partly from the batch buffer, stopping at
 *    damage, a bad position or a wrong length with wal_read's error at that record;
 *  - a transaction gets consecutive seqs, adjacent offsets, REC_F_CONT on all but its last
 *    record and REC_F_MID on all but its first;
 *  - segments rotate: each file starts with a valid header whose first_seq continues the
 *    previous segment, no record spans two segments, every byte after the last record is 0;
 *  - 8 threads appending in sync mode get unique, dense seqs, all readable, with fewer syncs
 *    than appends (group commit);
 *  - durability modes: none syncs only on request, at segment ends and when the window rule
 *    (unsynced bytes <= 2 * batch_bytes, checked on every write by a wrapping backend)
 *    demands; interval syncs on its own;
 *  - a failed write or sync poisons: waiters, later appends and wal_sync get CS_EPOISONED,
 *    earlier records stay readable, the backend is never called again, wal_close returns
 *    the error;
 *  - reopening with recovered segments continues the log in place, or in a new segment when
 *    the old one's window is too small for the new batch size;
 *  - the spare (W12): past half of a segment the writer creates the next file, header-less,
 *    outside the table; the append that needs it starts it and the writer writes its header
 *    first; a spare left at close is removed; a spare that fails for space is no poison
 *    (the creation on demand follows), any other failure of it, or of its header, is; a
 *    record of the segment left behind whose batch is still being written reads back with
 *    wal_read_any;
 *  - CS_ELIMIT and CS_EINVAL where the contract says, with the backend freed on a failed
 *    open.
 * Every test ends by parsing the segment files directly with rec_decode_header/rec_verify.
 * It also prints the throughput it sees (never asserted).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "err.h"
#include "io.h"
#include "cs_limits.h"
#include "record.h"
#include "test_util.h"
#include "wal.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

/* ---- A wrapping backend: counts, fails on request, blocks on a gate, checks W3 ---------- */

#define TIO_FDS 64

struct tio {
	struct io io;
	struct io *real;          /* owned; destroyed by tio_destroy */
	atomic_int writes;        /* write calls */
	atomic_int syncs;         /* write calls with sync, plus sync calls */
	atomic_int fail_write_in; /* n > 0: the n-th write from now fails with -EIO */
	atomic_int fail_sync_in;  /* n > 0: the n-th sync from now fails with -EIO */
	atomic_int creates;       /* create calls */
	atomic_int fail_create_in; /* n > 0: the n-th create from now fails with create_err */
	int create_err;
	atomic_int writebacks;    /* writeback calls (hints, not syncs) */
	atomic_int fail_writeback_in; /* n > 0: the n-th writeback from now fails with -EIO */
	atomic_int destroyed;
	atomic_ulong max_unsynced; /* most bytes of one fd ever written but not synced */
	/* The writer thread's alone. */
	int fds[TIO_FDS];
	uint64_t unsynced[TIO_FDS];
	int nfds;
	/* While gate_closed, writes wait: the records stay in the batch buffers. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int gate_closed;
};

static uint64_t *tio_unsynced(struct tio *t, int fd)
{
	for (int i = 0; i < t->nfds; i++)
		if (t->fds[i] == fd)
			return &t->unsynced[i];
	assert_true(t->nfds < TIO_FDS);
	t->fds[t->nfds] = fd;
	t->unsynced[t->nfds] = 0;
	return &t->unsynced[t->nfds++];
}

/* Returns 1 when the countdown *c reaches its target with this call. */
static int countdown(atomic_int *c)
{
	int v = atomic_load(c);

	while (v > 0) {
		if (atomic_compare_exchange_weak(c, &v, v - 1))
			return v == 1;
	}
	return 0;
}

static int tio_write(struct io *io, int fd, const void *buf, size_t len, uint64_t off, int sync)
{
	struct tio *t = (struct tio *)io;
	uint64_t *u = tio_unsynced(t, fd);
	int rc;

	pthread_mutex_lock(&t->mu);
	while (t->gate_closed)
		pthread_cond_wait(&t->cv, &t->mu);
	pthread_mutex_unlock(&t->mu);

	atomic_fetch_add(&t->writes, 1);
	if (countdown(&t->fail_write_in))
		return -EIO;
	/* W3 is counted with the write in flight: its bytes are at risk until synced. */
	*u += len;
	if (*u > atomic_load(&t->max_unsynced))
		atomic_store(&t->max_unsynced, *u);
	if (!sync)
		return t->real->ops->write(t->real, fd, buf, len, off, 0);
	atomic_fetch_add(&t->syncs, 1);
	if (countdown(&t->fail_sync_in)) {
		rc = t->real->ops->write(t->real, fd, buf, len, off, 0);
		return rc != 0 ? rc : -EIO;
	}
	rc = t->real->ops->write(t->real, fd, buf, len, off, 1);
	if (rc == 0)
		*u = 0;
	return rc;
}

static int tio_sync(struct io *io, int fd)
{
	struct tio *t = (struct tio *)io;
	int rc;

	atomic_fetch_add(&t->syncs, 1);
	if (countdown(&t->fail_sync_in))
		return -EIO;
	rc = t->real->ops->sync(t->real, fd);
	if (rc == 0)
		*tio_unsynced(t, fd) = 0;
	return rc;
}

static int tio_writeback(struct io *io, int fd, uint64_t off, uint64_t len)
{
	struct tio *t = (struct tio *)io;

	atomic_fetch_add(&t->writebacks, 1);
	if (countdown(&t->fail_writeback_in))
		return -EIO;
	return t->real->ops->writeback(t->real, fd, off, len);
}

/* Segment creation and directory syncs pass through, creations counted apart: the counters
 * above are about the records' writes and syncs. */
static int tio_create(struct io *io, int dirfd, const char *name, uint64_t capacity, int *fd)
{
	struct tio *t = (struct tio *)io;

	atomic_fetch_add(&t->creates, 1);
	if (countdown(&t->fail_create_in))
		return t->create_err;
	return t->real->ops->create(t->real, dirfd, name, capacity, fd);
}

static int tio_sync_dir(struct io *io, int dirfd)
{
	struct tio *t = (struct tio *)io;

	return t->real->ops->sync_dir(t->real, dirfd);
}

static int tio_remove(struct io *io, int dirfd, const char *name)
{
	struct tio *t = (struct tio *)io;

	return t->real->ops->remove(t->real, dirfd, name);
}

/* Frees the real backend only: the test reads the counters after wal_close and frees t. */
static void tio_destroy(struct io *io)
{
	struct tio *t = (struct tio *)io;

	t->real->ops->destroy(t->real);
	atomic_store(&t->destroyed, 1);
}

static const struct io_ops tio_ops = {
    .name = "test",
    .write = tio_write,
    .sync = tio_sync,
    .writeback = tio_writeback,
    .create = tio_create,
    .sync_dir = tio_sync_dir,
    .remove = tio_remove,
    .destroy = tio_destroy,
};

static const char *want_backend(void)
{
	const char *e = getenv("CIDSTORE_IO");
	return e != NULL && strcmp(e, "psync") == 0 ? "psync" : "uring";
}

static struct io *real_backend(void)
{
	static int warned;
	struct io *io;

	if (strcmp(want_backend(), "uring") == 0) {
		int rc = io_uring_backend(&io, 8);
		if (rc == 0)
			return io;
		assert_true(rc == -EPERM || rc == -ENOSYS);
		if (!warned++)
			fprintf(stderr, "io_uring refused (%s): testing psync\n", cs_strerror(rc));
	}
	assert_int_equal(io_psync_backend(&io), 0);
	return io;
}

static struct tio *tio_new(void)
{
	struct tio *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->io.ops = &tio_ops;
	t->real = real_backend();
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	return t;
}

static void tio_free(struct tio *t)
{
	assert_int_equal(atomic_load(&t->destroyed), 1); /* the WAL owned and freed it */
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
}

static void tio_gate(struct tio *t, int closed)
{
	pthread_mutex_lock(&t->mu);
	t->gate_closed = closed;
	pthread_cond_broadcast(&t->cv);
	pthread_mutex_unlock(&t->mu);
}

/* ---- Fixture ------------------------------------------------------------------------------ */

struct ctx {
	char dir[256];
	int dirfd;
	struct tio *t;
	struct wal *w;
	struct wal_config cfg;
};

static void ctx_init(struct ctx *c, const char *tag)
{
	memset(c, 0, sizeof(*c));
	tu_tmpdir(c->dir, sizeof(c->dir), tag);
	c->dirfd = open(c->dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
	assert_true(c->dirfd >= 0);
}

/* Fills c->cfg for a new log and a fresh wrapping backend. */
static void ctx_cfg(struct ctx *c, cs_durability mode, uint64_t seg, uint32_t batch)
{
	c->t = tio_new();
	c->cfg = (struct wal_config){
	    .dirfd = c->dirfd,
	    .store_uid = 0x1234567890abcdefull,
	    .segment_bytes = seg,
	    .batch_bytes = batch,
	    .durability = mode,
	    .interval_ms = 20,
	    .io = &c->t->io,
	    .next_seq = 1,
	};
}

static void ctx_open(struct ctx *c, cs_durability mode, uint64_t seg, uint32_t batch)
{
	ctx_cfg(c, mode, seg, batch);
	assert_int_equal(wal_open(&c->w, &c->cfg), 0);
}

/* Closes the WAL (expecting rc), checks W3 held throughout, frees the backend wrapper. */
static void ctx_close(struct ctx *c, int rc)
{
	assert_int_equal(wal_close(c->w), rc);
	c->w = NULL;
	assert_true(atomic_load(&c->t->max_unsynced) <= 2ull * c->cfg.batch_bytes);
	tio_free(c->t);
	c->t = NULL;
}

static void ctx_fini(struct ctx *c)
{
	close(c->dirfd);
	tu_rmrf(c->dir);
}

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Records: what was appended, and checking it ----------------------------------------- */

struct exp_rec {
	uint64_t seq;
	uint32_t len;
	uint64_t seed; /* payload = tu_fill(len, seed) */
	uint8_t type;
	uint8_t flags; /* as it must read back */
	struct wal_pos pos;
};

/* Appends one record of len bytes from seed, in two pieces, and records it in *e. */
static int append_one(struct wal *w, uint32_t len, uint64_t seed, struct exp_rec *e,
                      uint8_t *scratch)
{
	struct iovec parts[2] = {{scratch, len / 3}, {scratch + len / 3, len - len / 3}};
	struct wal_rec r = {REC_BLOCK, 0, parts, 2};
	int rc;

	tu_fill(scratch, len, seed);
	rc = wal_append(w, &r, 1, &e->pos, &e->seq);
	e->len = len;
	e->seed = seed;
	e->type = REC_BLOCK;
	e->flags = 0;
	return rc;
}

/* Reads e back through wal_read and compares every byte and header field. */
static void check_read(struct wal *w, const struct exp_rec *e, uint8_t *buf, uint8_t *want)
{
	struct iovec dst[3] = {
	    {buf, 1}, {buf + 1, e->len / 2}, {buf + 1 + e->len / 2, e->len - 1 - e->len / 2}};
	struct rec_hdr h;
	int rc;

	assert_true(e->len >= 1);
	rc = wal_read(w, e->pos, e->len, &h, dst, 3);
	if (rc != 0)
		fail_msg("wal_read seq %llu: %s (%s)", (unsigned long long)e->seq, cs_strerror(rc),
		         cs_errmsg());
	assert_int_equal(h.seq, e->seq);
	assert_int_equal(h.type, e->type);
	assert_int_equal(h.flags, e->flags);
	assert_int_equal(h.len, e->len);
	assert_true(h.synced_seq < h.seq);
	tu_fill(want, e->len, e->seed);
	assert_memory_equal(buf, want, e->len);
}

struct log_info {
	uint32_t nsegs;
	uint32_t ids[64];
	uint64_t first_seq[64];
	uint64_t capacity[64];
	uint32_t end[64];
	uint64_t next_seq; /* past the last record found */
	uint64_t records;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Parses every segment file in the directory without the WAL: headers valid and continuing
 * each other, records in seq order from first_seq, none spanning two segments, checksums
 * right, zeros after the last record of each segment. When exp is given, record i must be
 * exp[i] (seq first_seq + i) in content and position.
 */
static void walk_log(int dirfd, uint64_t first_seq, const struct exp_rec *exp, size_t nexp,
                     struct log_info *li)
{
	int dfd = dup(dirfd);
	DIR *d;
	struct dirent *de;
	uint8_t *want = malloc(CS_REC_PAYLOAD_MAX);
	uint64_t seq = first_seq;

	memset(li, 0, sizeof(*li));
	assert_non_null(want);
	assert_true(dfd >= 0);
	d = fdopendir(dfd);
	assert_non_null(d);
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		uint32_t id;
		if (seg_parse_name(de->d_name, &id) == 0) {
			assert_true(li->nsegs < 64);
			li->ids[li->nsegs++] = id;
		}
	}
	closedir(d);
	qsort(li->ids, li->nsegs, sizeof(li->ids[0]), cmp_u32);

	for (uint32_t s = 0; s < li->nsegs; s++) {
		char name[32];
		struct stat st;
		struct seg_hdr sh;
		uint8_t *f;
		uint64_t off = CS_SEG_HEADER;
		int fd;

		seg_name(name, sizeof(name), li->ids[s]);
		fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		f = malloc((size_t)st.st_size);
		assert_non_null(f);
		assert_int_equal(pread(fd, f, (size_t)st.st_size, 0), st.st_size);
		close(fd);
		assert_int_equal(seg_decode(f, &sh), 0);
		assert_int_equal(sh.id, li->ids[s]);
		assert_int_equal(sh.capacity, (uint64_t)st.st_size);
		assert_int_equal(sh.store_uid, 0x1234567890abcdefull);
		assert_int_equal(sh.first_seq, seq); /* continues the previous segment */
		if (s > 0)
			assert_int_equal(li->ids[s], li->ids[s - 1] + 1);
		li->first_seq[s] = sh.first_seq;
		li->capacity[s] = sh.capacity;
		for (;;) {
			struct rec_hdr h;
			int kind;

			if (off + CS_REC_HEADER > sh.capacity)
				break;
			kind = rec_decode_header(f + off, &h);
			if (kind == REC_ZERO)
				break;
			assert_int_equal(kind, REC_OK);
			/* W1: a record lies whole in its segment. */
			assert_true(off + rec_size(h.len) <= sh.capacity);
			struct iovec pl = {f + off + CS_REC_HEADER, h.len};
			assert_int_equal(rec_verify(f + off, &h, &pl, 1), 0);
			assert_int_equal(h.seq, seq);
			assert_true(h.synced_seq < h.seq);
			if (exp != NULL) {
				assert_true(seq - first_seq < nexp);
				const struct exp_rec *e = &exp[seq - first_seq];
				assert_int_equal(e->seq, seq);
				assert_int_equal(h.len, e->len);
				assert_int_equal(h.type, e->type);
				assert_int_equal(h.flags, e->flags);
				assert_int_equal(e->pos.seg, li->ids[s]);
				assert_int_equal(e->pos.off, off);
				tu_fill(want, e->len, e->seed);
				assert_memory_equal(f + off + CS_REC_HEADER, want, e->len);
			}
			seq++;
			li->records++;
			off += rec_size(h.len);
		}
		li->end[s] = (uint32_t)off;
		for (uint64_t i = off; i < sh.capacity; i++)
			if (f[i] != 0)
				fail_msg("segment %s: nonzero byte at %llu past the last record",
				         name, (unsigned long long)i);
		free(f);
	}
	if (exp != NULL)
		assert_int_equal(li->records, nexp);
	li->next_seq = seq;
	free(want);
}

static void expect_msg(const char *part)
{
	if (strstr(cs_errmsg(), part) == NULL)
		fail_msg("message \"%s\" lacks \"%s\"", cs_errmsg(), part);
}

/* ---- Tests -------------------------------------------------------------------------------- */

/* An empty directory gets a valid first segment at open, before any append. */
static void test_empty_open(void **state)
{
	struct ctx c;
	struct wal_stat st;
	struct log_info li;

	ctx_init(&c, "wal-empty");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	walk_log(c.dirfd, 1, NULL, 0, &li);
	assert_int_equal(li.nsegs, 1);
	assert_int_equal(li.ids[0], 1);
	assert_int_equal(li.capacity[0], CS_SEG_MIN);
	wal_stat(c.w, &st);
	assert_int_equal(st.next_seq, 1);
	assert_int_equal(st.durable_seq, 1);
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.log_bytes, CS_SEG_HEADER);
	assert_int_equal(st.disk_bytes, CS_SEG_MIN);
	assert_int_equal(st.poisoned, 0);
	assert_string_equal(st.backend, "test");
	if (strcmp(want_backend(), "psync") == 0)
		assert_string_equal(c.t->real->ops->name, "psync");
	/* The window in the header is what recovery will trust. */
	{
		uint8_t hb[CS_SEG_HEADER];
		struct seg_hdr sh;
		int fd = openat(c.dirfd, "00000001.seg", O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, hb, sizeof(hb), 0), (ssize_t)sizeof(hb));
		close(fd);
		assert_int_equal(seg_decode(hb, &sh), 0);
		assert_int_equal(sh.window, 2 * CS_BATCH_MIN);
		assert_int_equal(sh.first_seq, 1);
		assert_int_equal(sh.version, SEG_FORMAT_VERSION);
	}
	ctx_close(&c, 0);
	ctx_fini(&c);
}

/* One record: from the buffer while its write is held back, then from the file. */
static void test_append_read(void **state)
{
	struct ctx c;
	uint8_t payload[1000], buf[1000], want[1000];
	struct iovec parts[2] = {{payload, 300}, {payload + 300, 700}};
	struct wal_rec r = {REC_BLOCK, REC_F_SKIPPABLE, parts, 2};
	struct exp_rec e = {0};
	struct wal_stat st;
	struct rec_hdr h;
	struct iovec dst = {buf, sizeof(buf)};
	struct log_info li;
	int fd;

	ctx_init(&c, "wal-read");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	tu_fill(payload, sizeof(payload), 7);
	tio_gate(c.t, 1);
	assert_int_equal(wal_append(c.w, &r, 1, &e.pos, &e.seq), 0);
	e = (struct exp_rec){e.seq, 1000, 7, REC_BLOCK, REC_F_SKIPPABLE, e.pos};
	assert_int_equal(e.seq, 1);
	assert_int_equal(e.pos.seg, 1);
	assert_int_equal(e.pos.off, CS_SEG_HEADER);
	/* The write cannot have happened: the record comes from the batch buffer. */
	check_read(c.w, &e, buf, want);
	assert_int_equal(wal_read(c.w, e.pos, 999, &h, &(struct iovec){buf, 999}, 1), CS_ECORRUPT);
	expect_msg("segment 00000001 offset 64");
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 1); /* seq 1 is not durable yet */
	assert_int_equal(st.next_seq, 2);
	tio_gate(c.t, 0);
	assert_int_equal(wal_sync(c.w), 0);
	assert_int_equal(wal_wait(c.w, e.seq), 0);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 2);
	assert_int_equal(st.log_bytes, CS_SEG_HEADER + rec_size(1000));
	check_read(c.w, &e, buf, want);

	/* Now from the file: a flipped payload byte there is caught and placed. */
	fd = openat(c.dirfd, "00000001.seg", O_RDWR);
	assert_true(fd >= 0);
	uint8_t x = payload[500] ^ 0x40;
	assert_int_equal(pwrite(fd, &x, 1, CS_SEG_HEADER + CS_REC_HEADER + 500), 1);
	assert_int_equal(wal_read(c.w, e.pos, 1000, &h, &dst, 1), CS_ECORRUPT);
	expect_msg("segment 00000001 offset 64: record checksum mismatch");
	assert_int_equal(pwrite(fd, &payload[500], 1, CS_SEG_HEADER + CS_REC_HEADER + 500), 1);
	close(fd);
	check_read(c.w, &e, buf, want);

	/* Positions that name no record. */
	assert_int_equal(
	    wal_read(c.w, (struct wal_pos){1, CS_SEG_HEADER + rec_size(1000)}, 1000, &h, &dst, 1),
	    CS_ECORRUPT);
	expect_msg("zero header");
	assert_int_equal(wal_read(c.w, (struct wal_pos){9, CS_SEG_HEADER}, 1000, &h, &dst, 1),
	                 CS_ECORRUPT);
	expect_msg("segment 00000009 offset 64: no such segment");
	assert_int_equal(wal_read(c.w, (struct wal_pos){1, 65}, 1000, &h, &dst, 1), CS_ECORRUPT);
	assert_int_equal(wal_read(c.w, (struct wal_pos){1, CS_SEG_MIN - 64}, 1000, &h, &dst, 1),
	                 CS_ECORRUPT);
	expect_msg("past the segment end");

	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, &e, 1, &li);
	ctx_fini(&c);
}

/* Fills m (with its three pieces in dst, over buf) to read record e back. */
static void many_of(const struct exp_rec *e, struct wal_many *m, struct iovec dst[3], uint8_t *buf)
{
	dst[0] = (struct iovec){buf, 1};
	dst[1] = (struct iovec){buf + 1, e->len / 2};
	dst[2] = (struct iovec){buf + 1 + e->len / 2, e->len - 1 - e->len / 2};
	*m = (struct wal_many){.pos = e->pos, .len = e->len, .dst = dst, .ndst = 3};
}

/* Reads the records idx[0..n) of e with one wal_read_many and checks each as check_read. */
static void check_many(struct wal *w, const struct exp_rec *e, const int *idx, int n)
{
	struct wal_many m[WAL_MANY_MAX];
	struct iovec dst[WAL_MANY_MAX][3];
	uint8_t *buf[WAL_MANY_MAX], want[5000];
	int done = -1;

	for (int i = 0; i < n; i++) {
		buf[i] = malloc(e[idx[i]].len);
		many_of(&e[idx[i]], &m[i], dst[i], buf[i]);
	}
	int rc = wal_read_many(w, m, n, &done);
	if (rc != 0)
		fail_msg("wal_read_many: %s (%s) at %d", cs_strerror(rc), cs_errmsg(), done);
	assert_int_equal(done, n);
	for (int i = 0; i < n; i++) {
		const struct exp_rec *x = &e[idx[i]];
		assert_int_equal(m[i].h.seq, x->seq);
		assert_int_equal(m[i].h.len, x->len);
		tu_fill(want, x->len, x->seed);
		assert_memory_equal(buf[i], want, x->len);
		free(buf[i]);
	}
}

/* Flips the byte `into` bytes into record d's payload (in segment 1's file), checks that
 * reading the n records of m stops there with CS_ECORRUPT naming the record, and puts the
 * byte back. */
static void read_many_damaged(struct ctx *c, const struct exp_rec *e, struct wal_many *m, int n,
                              int d, uint32_t into)
{
	char where[64];
	uint8_t x, y;
	int done = -1, fd = openat(c->dirfd, "00000001.seg", O_RDWR);
	off_t at = (off_t)e[d].pos.off + CS_REC_HEADER + into;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &x, 1, at), 1);
	y = x ^ 0x40;
	assert_int_equal(pwrite(fd, &y, 1, at), 1);
	assert_int_equal(wal_read_many(c->w, m, n, &done), CS_ECORRUPT);
	assert_int_equal(done, d);
	snprintf(where, sizeof(where), "offset %u: record checksum mismatch", e[d].pos.off);
	expect_msg(where);
	assert_int_equal(pwrite(fd, &x, 1, at), 1);
	close(fd);
}

/* wal_read_many answers as wal_read calls in order: records back to back in the file (read
 * with one preadv, padding between them), in any order, partly still in the batch buffer, or
 * on either side of damage, a bad position or a wrong length, which stop it at that record
 * with wal_read's error. */
static void test_read_many(void **state)
{
	enum { N = 14, HELD = 11 };
	struct ctx c;
	struct exp_rec e[N];
	uint8_t scratch[5000];
	struct log_info li;

	ctx_init(&c, "wal-many");
	ctx_open(&c, CS_DURABLE_NONE, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < N; i++) {
		if (i == HELD) {
			assert_int_equal(wal_sync(c.w), 0); /* 0..HELD-1 are in the file */
			tio_gate(c.t, 1);                   /* the rest stays in the buffer */
		}
		uint32_t len = 100 + (uint32_t)(i * 377) % 4000; /* most need padding */
		assert_int_equal(append_one(c.w, len, 300 + (uint64_t)i, &e[i], scratch), 0);
	}
	static const int all[N] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
	static const int mixed[] = {5, 2, 3, 4, 9, 9, 0, 13, 12};
	static const int across[] = {8, 9, 10, 11, 12};
	check_many(c.w, e, all, N);
	check_many(c.w, e, mixed, sizeof(mixed) / sizeof(mixed[0]));
	check_many(c.w, e, across, 5);
	check_many(c.w, e, all, 0);

	struct wal_many m[N];
	struct iovec dst[N][3];
	uint8_t *buf[N];
	int done = -1;
	for (int i = 0; i < N; i++) {
		buf[i] = malloc(e[i].len);
		many_of(&e[i], &m[i], dst[i], buf[i]);
	}
	/* A damaged payload byte of record 4, in the middle of a run in the file. */
	read_many_damaged(&c, e, m, HELD, 4, 50);
	/* A position in no segment, and a wrong length, in the middle. */
	m[3].pos.seg = 9;
	assert_int_equal(wal_read_many(c.w, m, N, &done), CS_ECORRUPT);
	assert_int_equal(done, 3);
	expect_msg("no such segment");
	many_of(&e[3], &m[3], dst[3], buf[3]);
	m[6].len = e[6].len - 1;
	dst[6][2].iov_len--;
	assert_int_equal(wal_read_many(c.w, m, N, &done), CS_ECORRUPT);
	assert_int_equal(done, 6);
	expect_msg("expected");
	many_of(&e[6], &m[6], dst[6], buf[6]);
	assert_int_equal(wal_read_many(c.w, m, N, &done), 0);
	assert_int_equal(done, N);
	/* Calls outside the contract. */
	dst[2][0].iov_len = 2;
	assert_int_equal(wal_read_many(c.w, m, N, &done), CS_EINVAL);
	assert_int_equal(wal_read_many(c.w, m, WAL_MANY_MAX + 1, &done), CS_EINVAL);
	for (int i = 0; i < N; i++)
		free(buf[i]);

	tio_gate(c.t, 0);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, N, &li);
	ctx_fini(&c);
}

/* A transaction: consecutive seqs, adjacent records, CONT on all but the last. */
/* A reader of the shared test below: reads every record of the run `rounds` times with one
 * wal_read_many each, and counts the reads that failed or gave other bytes. */
struct shared_reader {
	struct wal *w;
	const struct exp_rec *e;
	int n, rounds;
	int bad; /* out */
};

static void *shared_reader_main(void *p)
{
	struct shared_reader *sr = p;
	struct wal_many m[WAL_MANY_MAX];
	struct iovec dst[WAL_MANY_MAX][3];
	uint8_t *buf[WAL_MANY_MAX], *want = malloc(sr->e[0].len);
	int done;

	for (int i = 0; i < sr->n; i++) {
		buf[i] = malloc(sr->e[i].len);
		many_of(&sr->e[i], &m[i], dst[i], buf[i]);
	}
	for (int r = 0; r < sr->rounds; r++) {
		if (wal_read_many(sr->w, m, sr->n, &done) != 0 || done != sr->n) {
			sr->bad++;
			continue;
		}
		for (int i = 0; i < sr->n; i++) {
			tu_fill(want, sr->e[i].len, sr->e[i].seed);
			sr->bad += m[i].h.seq != sr->e[i].seq || memcmp(buf[i], want, sr->e[i].len) != 0;
		}
	}
	for (int i = 0; i < sr->n; i++)
		free(buf[i]);
	free(want);
	return NULL;
}

/* A run long enough for the reader to share it with the helper thread (R2 of wal.c): damage
 * in any of its records, whichever thread reads that record, stops the read there with that
 * record's error and message (R3); and readers on several threads at once, of which only one
 * is helped at a time, all get every record whole. */
static void test_read_many_shared(void **state)
{
	enum { N = 16, LEN = 200u << 10, READERS = 3 };
	struct ctx c;
	struct exp_rec e[N];
	uint8_t *scratch = malloc(LEN), *buf[N];
	struct wal_many m[N];
	struct iovec dst[N][3];
	struct shared_reader sr[READERS];
	pthread_t th[READERS];

	ctx_init(&c, "wal-many-shared");
	ctx_open(&c, CS_DURABLE_NONE, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < N; i++)
		assert_int_equal(append_one(c.w, LEN, 1200 + (uint64_t)i, &e[i], scratch), 0);
	assert_int_equal(wal_sync(c.w), 0);
	for (int i = 0; i < N; i++) {
		buf[i] = malloc(LEN);
		many_of(&e[i], &m[i], dst[i], buf[i]);
	}
	for (int round = 0; round < 3; round++)
		for (int d = 0; d < N; d++)
			read_many_damaged(&c, e, m, N, d, 1000 + (uint32_t)(d * 9973 + round));
	for (int i = 0; i < READERS; i++) {
		sr[i] = (struct shared_reader){c.w, e, N, 20, 0};
		assert_int_equal(pthread_create(&th[i], NULL, shared_reader_main, &sr[i]), 0);
	}
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(sr[i].bad, 0);
	}
	ctx_close(&c, 0);
	for (int i = 0; i < N; i++)
		free(buf[i]);
	free(scratch);
	ctx_fini(&c);
}

/* Records larger than read_run's pieces (READ_HOT_BYTES, 384 KiB): a run of them is read a
 * piece at a time, each piece checked before the next is read, with the same answers as
 * one read: every record whole, and damage in a later piece found at its record. */
static void test_read_many_large(void **state)
{
	enum { N = 6 };
	static const uint32_t lens[N] = {150u << 10, 150u << 10, 150u << 10, 400u << 10,
	                                 100u << 10, 150u << 10};
	struct ctx c;
	struct exp_rec e[N];
	uint8_t *scratch = malloc(400u << 10), *want = malloc(400u << 10), *buf[N];
	struct wal_many m[N];
	struct iovec dst[N][3];
	int done = -1;

	ctx_init(&c, "wal-many-large");
	ctx_open(&c, CS_DURABLE_NONE, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < N; i++)
		assert_int_equal(append_one(c.w, lens[i], 900 + (uint64_t)i, &e[i], scratch), 0);
	assert_int_equal(wal_sync(c.w), 0);
	for (int i = 0; i < N; i++) {
		buf[i] = malloc(e[i].len);
		many_of(&e[i], &m[i], dst[i], buf[i]);
	}
	assert_int_equal(wal_read_many(c.w, m, N, &done), 0);
	assert_int_equal(done, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(m[i].h.seq, e[i].seq);
		assert_int_equal(m[i].h.len, e[i].len);
		tu_fill(want, e[i].len, e[i].seed);
		assert_memory_equal(buf[i], want, e[i].len);
	}
	/* A damaged byte in record 4, three pieces into the run. */
	read_many_damaged(&c, e, m, N, 4, 70000);
	ctx_close(&c, 0);
	for (int i = 0; i < N; i++)
		free(buf[i]);
	free(scratch);
	free(want);
	ctx_fini(&c);
}

static void test_transaction(void **state)
{
	struct ctx c;
	uint8_t p[3][200], buf[200], want[200];
	struct iovec parts[3] = {{p[0], 10}, {p[1], 100}, {p[2], 200}};
	/* The caller's CONT on the last record is cleared, SKIPPABLE is kept. */
	struct wal_rec r[3] = {{REC_PIN_ADD, 0, &parts[0], 1},
	                       {REC_NAME_SET, REC_F_SKIPPABLE, &parts[1], 1},
	                       {REC_DELETE, REC_F_CONT, &parts[2], 1}};
	struct wal_pos pos[3];
	struct exp_rec e[4];
	uint64_t seq;
	struct log_info li;

	ctx_init(&c, "wal-txn");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < 3; i++)
		tu_fill(p[i], parts[i].iov_len, 100 + (uint64_t)i);
	assert_int_equal(wal_append(c.w, r, 3, pos, &seq), 0);
	assert_int_equal(seq, 3);
	assert_int_equal(wal_wait(c.w, seq), 0);
	for (int i = 0; i < 3; i++) {
		uint8_t fl = i == 0   ? REC_F_CONT
		             : i == 1 ? (REC_F_CONT | REC_F_MID | REC_F_SKIPPABLE)
		                      : REC_F_MID;
		e[i] = (struct exp_rec){
		    1 + (uint64_t)i, (uint32_t)parts[i].iov_len, 100 + (uint64_t)i, r[i].type, fl,
		    pos[i]};
		if (i > 0) {
			assert_int_equal(pos[i].seg, pos[0].seg);
			assert_int_equal(pos[i].off, pos[i - 1].off + rec_size(e[i - 1].len));
		}
		check_read(c.w, &e[i], buf, want);
	}
	/* A one-record transaction after it: the next seq, no CONT. */
	assert_int_equal(append_one(c.w, 50, 200, &e[3], buf), 0);
	assert_int_equal(e[3].seq, 4);
	assert_int_equal(wal_wait(c.w, 4), 0);
	check_read(c.w, &e[3], buf, want);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, 4, &li);
	ctx_fini(&c);
}

/* Small segments and ~1 MiB records: several segments, none spanned, all read back. */
static void test_rotation(void **state)
{
	enum { N = 48 };
	struct ctx c;
	struct exp_rec *e = calloc(N, sizeof(*e));
	uint8_t *buf = malloc(1u << 20), *want = malloc(1u << 20);
	struct log_info li;
	struct wal_stat st;
	uint64_t x = 42;
	size_t n = 0;

	assert_non_null(e);
	assert_non_null(want);
	ctx_init(&c, "wal-rot");
	ctx_open(&c, CS_DURABLE_NONE, CS_SEG_MIN, CS_BATCH_MIN);
	while (n < N) {
		/* Seeded sizes in [512 KiB, 1 MiB - 40], transactions of 1 to 3 records. */
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		int k = 1 + (int)((x >> 33) % 3);
		struct iovec parts[3];
		struct wal_rec r[3];
		struct wal_pos pos[3];
		uint64_t seq;
		uint8_t *bufs[3];

		if (n + (size_t)k > N)
			k = (int)(N - n);
		for (int i = 0; i < k; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			uint32_t len = (512u << 10) + (uint32_t)((x >> 20) % ((512u << 10) - 40));
			bufs[i] = malloc(len);
			assert_non_null(bufs[i]);
			tu_fill(bufs[i], len, 1000 + n + (size_t)i);
			parts[i] = (struct iovec){bufs[i], len};
			r[i] = (struct wal_rec){REC_BLOCK, 0, &parts[i], 1};
		}
		assert_int_equal(wal_append(c.w, r, k, pos, &seq), 0);
		for (int i = 0; i < k; i++) {
			e[n + (size_t)i] = (struct exp_rec){
			    seq - (uint64_t)(k - 1 - i), (uint32_t)parts[i].iov_len,
			    1000 + n + (size_t)i,        REC_BLOCK,
			    (uint8_t)((i < k - 1 ? REC_F_CONT : 0) | (i > 0 ? REC_F_MID : 0)),
			    pos[i]};
			/* A transaction lies in one segment (W1). */
			assert_int_equal(pos[i].seg, pos[0].seg);
			free(bufs[i]);
		}
		n += (size_t)k;
	}
	/* Every record reads back, most of them from the file by now. */
	assert_int_equal(wal_sync(c.w), 0);
	for (size_t i = 0; i < N; i++)
		check_read(c.w, &e[i], buf, want);
	wal_stat(c.w, &st);
	assert_true(st.segments >= 3);
	assert_int_equal(st.disk_bytes, st.segments * (uint64_t)CS_SEG_MIN);
	assert_int_equal(st.next_seq, N + 1);
	assert_int_equal(st.durable_seq, N + 1);
	ctx_close(&c, 0);

	walk_log(c.dirfd, 1, e, N, &li);
	assert_int_equal(li.nsegs, st.segments);
	uint64_t log_bytes = 0;
	for (uint32_t s = 0; s < li.nsegs; s++)
		log_bytes += li.end[s];
	assert_int_equal(log_bytes, st.log_bytes);
	free(e);
	free(buf);
	free(want);
	ctx_fini(&c);
}

/* ---- Concurrency ------------------------------------------------------------------------- */

struct worker {
	struct wal *w;
	int id, n;
	uint32_t size;     /* 0: seeded sizes in [1, 4096] */
	struct exp_rec *e; /* n entries */
	int errors;
};

static void *worker_main(void *arg)
{
	struct worker *k = arg;
	uint8_t *scratch = malloc(4096), *buf = malloc(4096), *want = malloc(4096);

	for (int i = 0; i < k->n; i++) {
		uint64_t seed = (uint64_t)k->id << 32 | (uint64_t)i;
		uint32_t len = k->size ? k->size : (uint32_t)tu_len(seed, 4096);
		if (append_one(k->w, len, seed, &k->e[i], scratch) != 0 ||
		    wal_wait(k->w, k->e[i].seq) != 0) {
			k->errors++;
			break;
		}
		/* Reads race with the writer and the other appenders: check one now. */
		if (k->size == 0 && i > 0) {
			const struct exp_rec *p = &k->e[i / 2];
			struct iovec dst = {buf, p->len};
			struct rec_hdr h;
			if (wal_read(k->w, p->pos, p->len, &h, &dst, 1) != 0 || h.seq != p->seq)
				k->errors++;
			tu_fill(want, p->len, p->seed);
			if (memcmp(buf, want, p->len) != 0)
				k->errors++;
		}
	}
	free(scratch);
	free(buf);
	free(want);
	return NULL;
}

/* Runs nthreads x per appends (+wal_wait); returns the elapsed seconds. */
static double run_workers(struct wal *w, int nthreads, int per, uint32_t size, struct exp_rec *all,
                          uint64_t first_seq)
{
	pthread_t th[8];
	struct worker k[8];
	double t0 = now_sec(), dt;

	assert_true(nthreads <= 8);
	for (int i = 0; i < nthreads; i++) {
		k[i] = (struct worker){w, i, per, size, NULL, 0};
		k[i].e = calloc((size_t)per, sizeof(struct exp_rec));
		assert_non_null(k[i].e);
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &k[i]), 0);
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	dt = now_sec() - t0;
	for (int i = 0; i < nthreads; i++) {
		assert_int_equal(k[i].errors, 0);
		for (int j = 0; j < per; j++) {
			const struct exp_rec *r = &k[i].e[j];
			uint64_t slot = r->seq - first_seq;
			/* Unique and dense: every seq lands in its own slot of the range. */
			assert_true(r->seq >= first_seq && slot < (uint64_t)nthreads * per);
			if (all != NULL) {
				assert_int_equal(all[slot].seq, 0);
				all[slot] = *r;
			}
		}
		free(k[i].e);
	}
	return dt;
}

/* 8 threads in sync mode: all durable, dense seqs, readable, and grouped into fewer syncs. */
static void test_concurrent(void **state)
{
	const int threads = 8, per = SLOW_BUILD ? 60 : 250, total = threads * per;
	struct ctx c;
	struct exp_rec *all = calloc((size_t)total, sizeof(*all));
	uint8_t *buf = malloc(4096), *want = malloc(4096);
	struct wal_stat st;
	struct log_info li;
	int syncs0, syncs;

	assert_non_null(all);
	ctx_init(&c, "wal-conc");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	syncs0 = atomic_load(&c.t->syncs);
	run_workers(c.w, threads, per, 0, all, 1);
	syncs = atomic_load(&c.t->syncs) - syncs0;
	print_message("group commit: %d appends, %d syncs\n", total, syncs);
	assert_true(syncs >= 1);
	assert_true(syncs < total);
	for (int i = 0; i < total; i++) {
		assert_int_equal(all[i].seq, (uint64_t)i + 1);
		check_read(c.w, &all[i], buf, want);
	}
	wal_stat(c.w, &st);
	assert_int_equal(st.next_seq, total + 1);
	assert_int_equal(st.durable_seq, total + 1);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, all, (size_t)total, &li);
	free(all);
	free(buf);
	free(want);
	ctx_fini(&c);
}

/* ---- Durability modes -------------------------------------------------------------------- */

static void test_mode_none(void **state)
{
	const int big = SLOW_BUILD ? 96 : 192; /* 256 KiB records: 24 or 48 MiB */
	struct ctx c;
	uint8_t *scratch = malloc(256u << 10);
	struct exp_rec *e = calloc(10 + (size_t)big, sizeof(*e));
	struct wal_stat st;
	struct log_info li;
	int base;

	assert_non_null(e);
	ctx_init(&c, "wal-none");
	/* 64 MiB segments: the data below fits in one, so only the window forces syncs. */
	ctx_open(&c, CS_DURABLE_NONE, 64u << 20, CS_BATCH_MIN);
	base = atomic_load(&c.t->syncs); /* the new segment's header */
	for (int i = 0; i < 10; i++) {
		assert_int_equal(append_one(c.w, 100, (uint64_t)i, &e[i], scratch), 0);
		assert_int_equal(wal_wait(c.w, e[i].seq), 0); /* returns at once */
	}
	/* Let the writer write them: still no sync. */
	for (int i = 0; i < 200 && atomic_load(&c.t->writes) < 2; i++)
		usleep(1000);
	usleep(20000);
	assert_true(atomic_load(&c.t->writes) >= 2);
	assert_int_equal(atomic_load(&c.t->syncs), base);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 1);
	/* wal_sync forces exactly one. */
	assert_int_equal(wal_sync(c.w), 0);
	assert_int_equal(atomic_load(&c.t->syncs), base + 1);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 11);
	assert_int_equal(wal_sync(c.w), 0); /* nothing new: no sync */
	assert_int_equal(atomic_load(&c.t->syncs), base + 1);

	/* The window rule: far more than 2 * batch_bytes unsynced is never allowed. */
	base = atomic_load(&c.t->syncs);
	double t0 = now_sec();
	for (int i = 0; i < big; i++)
		assert_int_equal(
		    append_one(c.w, 256u << 10, 100 + (uint64_t)i, &e[10 + i], scratch), 0);
	double t1 = now_sec();
	assert_int_equal(wal_sync(c.w), 0);
	double t2 = now_sec();
	wal_stat(c.w, &st);
	assert_int_equal(st.segments, 1);
	int window_syncs = atomic_load(&c.t->syncs) - base;
	uint64_t mib = (uint64_t)big * (256u << 10) >> 20;
	print_message("none mode, 256 KiB records: %llu MiB appended at %.0f MiB/s, "
	              "%.0f MiB/s with the final sync; %d syncs\n",
	              (unsigned long long)mib, mib / (t1 - t0), mib / (t2 - t0), window_syncs);
	/* The data is > mib / (2 * batch) windows long; each needs a sync. */
	assert_true(window_syncs >= (int)(((uint64_t)big * (256u << 10)) / (2 * CS_BATCH_MIN)));
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, 10 + (size_t)big, &li);
	free(scratch);
	free(e);
	ctx_fini(&c);
}

/* Appends one record as append_one() does, lazy (W13 of wal.c). */
static int append_lazy(struct wal *w, uint32_t len, uint64_t seed, struct exp_rec *e,
                       uint8_t *scratch)
{
	struct iovec parts[1] = {{scratch, len}};
	struct wal_rec r = {REC_BLOCK, 0, parts, 1};

	tu_fill(scratch, len, seed);
	*e = (struct exp_rec){.len = len, .seed = seed, .type = REC_BLOCK};
	return wal_append_lazy(w, &r, 1, &e->pos, &e->seq);
}

/* Waits up to 200 ms for the writer to have made at least n write calls, then 20 ms more
 * for anything it might do after them. */
static void settle_writes(struct tio *t, int n)
{
	for (int i = 0; i < 200 && atomic_load(&t->writes) < n; i++)
		usleep(1000);
	usleep(20000);
	assert_true(atomic_load(&t->writes) >= n);
}

/* Sync mode with lazy appends (W13): their batches are written without a sync of their
 * own, each unsynced write is handed to writeback, a wal_wait() on one asks for the sync
 * (else it would never end), and an eager record in a batch gets it its sync as before. */
static void test_mode_sync_lazy(void **state)
{
	struct ctx c;
	uint8_t *scratch = malloc(4096);
	struct exp_rec e[13];
	struct wal_stat st;
	struct log_info li;
	int base, wbase;

	ctx_init(&c, "wal-lazy");
	ctx_open(&c, CS_DURABLE_SYNC, 64u << 20, CS_BATCH_MIN);
	base = atomic_load(&c.t->syncs);
	wbase = atomic_load(&c.t->writes);
	for (int i = 0; i < 10; i++)
		assert_int_equal(append_lazy(c.w, 100, (uint64_t)i, &e[i], scratch), 0);
	settle_writes(c.t, wbase + 1);
	assert_int_equal(atomic_load(&c.t->syncs), base); /* written, not synced */
	assert_true(atomic_load(&c.t->writebacks) >= 1);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 1);
	/* A wait on a lazy record gets one sync, for all ten. */
	assert_int_equal(wal_wait(c.w, e[4].seq), 0);
	assert_int_equal(atomic_load(&c.t->syncs), base + 1);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 11);

	/* A lazy and an eager record in one batch: the batch is written with its sync. */
	tio_gate(c.t, 1);
	assert_int_equal(append_lazy(c.w, 100, 10, &e[10], scratch), 0);
	assert_int_equal(append_one(c.w, 100, 11, &e[11], scratch), 0);
	tio_gate(c.t, 0);
	assert_int_equal(wal_wait(c.w, e[11].seq), 0);
	assert_int_equal(atomic_load(&c.t->syncs), base + 2);
	wal_stat(c.w, &st);
	assert_int_equal(st.durable_seq, 13);

	/* A failed writeback poisons as a failed sync does (W4). */
	atomic_store(&c.t->fail_writeback_in, 1);
	wbase = atomic_load(&c.t->writes);
	assert_int_equal(append_lazy(c.w, 100, 12, &e[12], scratch), 0);
	settle_writes(c.t, wbase + 1);
	assert_int_equal(wal_sync(c.w), CS_EPOISONED);
	expect_msg("log writeback failed earlier");
	assert_int_equal(wal_close(c.w), -EIO);
	tio_free(c.t);
	walk_log(c.dirfd, 1, e, 13, &li);
	free(scratch);
	ctx_fini(&c);
}

/* Interval mode syncs by itself within about interval_ms. */
static void test_mode_interval(void **state)
{
	struct ctx c;
	uint8_t scratch[100];
	struct exp_rec e;
	struct wal_stat st;
	struct log_info li;
	int i;

	ctx_init(&c, "wal-intv");
	ctx_open(&c, CS_DURABLE_INTERVAL, CS_SEG_MIN, CS_BATCH_MIN);
	assert_int_equal(append_one(c.w, 100, 5, &e, scratch), 0);
	assert_int_equal(wal_wait(c.w, e.seq), 0);
	for (i = 0; i < 5000; i++) {
		wal_stat(c.w, &st);
		if (st.durable_seq > e.seq)
			break;
		usleep(1000);
	}
	assert_true(st.durable_seq > e.seq);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, &e, 1, &li);
	ctx_fini(&c);
}

/* ---- Poisoning ----------------------------------------------------------------------------- */

static void poison_case(int fail_sync, cs_durability mode)
{
	struct ctx c;
	uint8_t scratch[300], buf[300], want[300];
	struct exp_rec a, b, d;
	struct wal_stat st;
	int writes, syncs, rc;

	ctx_init(&c, "wal-poison");
	ctx_open(&c, mode, CS_SEG_MIN, CS_BATCH_MIN);
	assert_int_equal(append_one(c.w, 200, 1, &a, scratch), 0);
	assert_int_equal(wal_sync(c.w), 0);
	assert_int_equal(wal_wait(c.w, a.seq), 0);

	if (fail_sync)
		atomic_store(&c.t->fail_sync_in, 1);
	else
		atomic_store(&c.t->fail_write_in, 1);
	assert_int_equal(append_one(c.w, 300, 2, &b, scratch), 0);
	rc = mode == CS_DURABLE_SYNC ? wal_wait(c.w, b.seq) : wal_sync(c.w);
	assert_int_equal(rc, CS_EPOISONED);
	expect_msg("Input/output error");
	/* A write and its sync are one backend call: the message names both then. */
	expect_msg(fail_sync ? "sync failed earlier" : "log write");
	/* Everything after fails too; what was durable stays so. */
	assert_int_equal(wal_wait(c.w, b.seq), CS_EPOISONED);
	assert_int_equal(wal_wait(c.w, a.seq), 0);
	assert_int_equal(append_one(c.w, 100, 3, &d, scratch), CS_EPOISONED);
	assert_int_equal(wal_sync(c.w), CS_EPOISONED);
	wal_stat(c.w, &st);
	assert_int_equal(st.poisoned, 1);
	assert_int_equal(st.durable_seq, a.seq + 1);
	/* Reads keep working: a from the file, b from the file or the kept buffer. */
	check_read(c.w, &a, buf, want);
	check_read(c.w, &b, buf, want);
	/* The failed sync is never retried, nothing more is written, even at close. */
	writes = atomic_load(&c.t->writes);
	syncs = atomic_load(&c.t->syncs);
	assert_int_equal(wal_close(c.w), -EIO);
	expect_msg("Input/output error");
	assert_int_equal(atomic_load(&c.t->writes), writes);
	assert_int_equal(atomic_load(&c.t->syncs), syncs);
	tio_free(c.t);
	ctx_fini(&c);
}

static void test_poison(void **state)
{
	poison_case(0, CS_DURABLE_SYNC);
	poison_case(1, CS_DURABLE_SYNC);
	poison_case(0, CS_DURABLE_NONE);
	poison_case(1, CS_DURABLE_NONE);
}

/* A failure creating the next segment poisons as well; appends waiting for room wake. */
static void poison_rotation(int spare)
{
	struct ctx c;
	uint8_t *scratch = malloc(1u << 20);
	struct exp_rec e;
	int rc = 0, i;

	ctx_init(&c, "wal-prot");
	ctx_cfg(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	c.cfg.no_spare = spare == 0;
	assert_int_equal(wal_open(&c.w, &c.cfg), 0);
	/* Segment 1 takes 15 records of 1 MiB; the 16th starts segment 2, whose header write
	 * (the writer's 16th write after these appends begin) fails: in its creation on
	 * demand, or when the writer begins the spare (W12). */
	atomic_store(&c.t->fail_write_in, 16);
	for (i = 0; i < 20 && rc == 0; i++) {
		rc = append_one(c.w, (1u << 20) - CS_REC_HEADER, (uint64_t)i, &e, scratch);
		if (rc == 0)
			rc = wal_wait(c.w, e.seq);
		if (i < 15)
			assert_int_equal(rc, 0);
	}
	assert_int_equal(rc, CS_EPOISONED);
	expect_msg("log segment creation failed earlier");
	assert_int_equal(i, 16);
	assert_int_equal(wal_close(c.w), -EIO);
	tio_free(c.t);
	if (spare) {
		/* The spare stays as it was made, header-less: recovery removes it (FORMAT.md
		 * G1, tests/test_recovery.c). */
		uint8_t hdr[CS_SEG_HEADER], zero[CS_SEG_HEADER] = {0};
		int fd = openat(c.dirfd, "00000002.seg", O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
		assert_memory_equal(hdr, zero, sizeof(hdr));
		close(fd);
		assert_int_equal(unlinkat(c.dirfd, "00000002.seg", 0), 0);
	}
	/* The half-made segment was removed: the log is segment 1 alone, whole. */
	struct log_info li;
	walk_log(c.dirfd, 1, NULL, 0, &li);
	assert_int_equal(li.nsegs, 1);
	assert_int_equal(li.records, 15);
	free(scratch);
	ctx_fini(&c);
}

static void test_poison_rotation(void **state)
{
	(void)state;
	poison_rotation(0);
	poison_rotation(1);
}

/* ---- The spare (W12) ------------------------------------------------------------------- */

/* Whether segment file id exists; when it does, *zero says whether its header is all zero
 * and *size gives its size. */
static int seg_file(int dirfd, uint32_t id, int *zero, uint64_t *size)
{
	char name[32];
	uint8_t hdr[CS_SEG_HEADER], z[CS_SEG_HEADER] = {0};
	struct stat st;

	seg_name(name, sizeof(name), id);
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	assert_int_equal(fstat(fd, &st), 0);
	*size = (uint64_t)st.st_size;
	*zero = pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
	        memcmp(hdr, z, sizeof(hdr)) == 0;
	close(fd);
	return 1;
}

/* Waits (up to 10 s) for the writer to have made spare id: the file is there, preallocated
 * to a segment's size (the create makes the name first, so a file of size 0 is one still
 * being made). */
static void wait_spare(int dirfd, uint32_t id)
{
	int zero = 0;
	uint64_t size = 0;

	for (int i = 0; i < 10000 && !(seg_file(dirfd, id, &zero, &size) && size > 0); i++)
		usleep(1000);
	if (!seg_file(dirfd, id, &zero, &size) || size == 0)
		fail_msg("no spare %08x after 10 s", id);
}

/* Segments of 16 MiB, records of 1 MiB in sync mode: the write of record 8 passes half of
 * segment 1, after which the spare 2 exists, header-less, preallocated and not in the table;
 * record 16 starts it (its header then valid, first seq 16); after record 25 spare 3 exists,
 * and the close removes it. Three creations in all. */
static void test_spare(void **state)
{
	(void)state;
	enum { N = 25 };
	struct ctx c;
	uint8_t *scratch = malloc(1u << 20), *buf = malloc(1u << 20), *want = malloc(1u << 20);
	struct exp_rec e[N];
	struct wal_stat st;
	struct log_info li;
	int zero;
	uint64_t size;

	ctx_init(&c, "wal-spare");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < N; i++) {
		if (i == 7)
			assert_false(seg_file(c.dirfd, 2, &zero, &size)); /* 7 MiB: not past half */
		assert_int_equal(append_one(c.w, (1u << 20) - CS_REC_HEADER, 300 + (uint64_t)i,
		                            &e[i], scratch),
		                 0);
		assert_int_equal(wal_wait(c.w, e[i].seq), 0);
		if (i == 7) {
			wait_spare(c.dirfd, 2);
			assert_true(seg_file(c.dirfd, 2, &zero, &size));
			assert_true(zero);
			assert_int_equal(size, CS_SEG_MIN);
			wal_stat(c.w, &st);
			assert_int_equal(st.segments, 1); /* not in the table */
			assert_int_equal(st.disk_bytes, CS_SEG_MIN);
		}
		assert_int_equal(e[i].pos.seg, i < 15 ? 1 : 2);
	}
	wait_spare(c.dirfd, 3);
	assert_true(seg_file(c.dirfd, 3, &zero, &size) && zero);
	assert_int_equal(wal_sync(c.w), 0);
	for (int i = 0; i < N; i++)
		check_read(c.w, &e[i], buf, want);
	wal_stat(c.w, &st);
	assert_int_equal(st.segments, 2);
	assert_int_equal(atomic_load(&c.t->creates), 3);
	ctx_close(&c, 0);
	assert_false(seg_file(c.dirfd, 3, &zero, &size)); /* removed at close */
	walk_log(c.dirfd, 1, e, N, &li);
	assert_int_equal(li.nsegs, 2);
	assert_int_equal(li.first_seq[1], e[15].seq);
	free(scratch);
	free(buf);
	free(want);
	ctx_fini(&c);
}

/* The spare's creation fails: for space, no poison, and the append that needs segment 2
 * creates it on demand (a fourth call); with EIO, the log is poisoned. */
static void test_spare_fails(void **state)
{
	(void)state;
	static const int errs[] = {-ENOSPC, -EIO};
	uint8_t *scratch = malloc(1u << 20);

	for (int k = 0; k < 2; k++) {
		struct ctx c;
		struct exp_rec e[16];
		struct log_info li;
		int rc = 0, i;

		ctx_init(&c, "wal-sparefail");
		ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
		c.t->create_err = errs[k];
		atomic_store(&c.t->fail_create_in, 1); /* the spare's */
		for (i = 0; i < 16 && rc == 0; i++) {
			rc = append_one(c.w, (1u << 20) - CS_REC_HEADER, 400 + (uint64_t)i, &e[i],
			                scratch);
			if (rc == 0)
				rc = wal_wait(c.w, e[i].seq);
		}
		if (errs[k] == -ENOSPC) {
			assert_int_equal(rc, 0);
			assert_int_equal(e[15].pos.seg, 2);
			assert_int_equal(atomic_load(&c.t->creates), 3); /* 1, the spare, 2 */
			ctx_close(&c, 0);
			walk_log(c.dirfd, 1, e, 16, &li);
			assert_int_equal(li.nsegs, 2);
		} else {
			assert_int_equal(rc, CS_EPOISONED);
			expect_msg("log segment creation failed earlier");
			ctx_close(&c, -EIO);
			walk_log(c.dirfd, 1, NULL, 0, &li);
			assert_int_equal(li.nsegs, 1);
		}
		ctx_fini(&c);
	}
	free(scratch);
}

/* A record of the segment the spare took over from, whose batch the writer is still
 * writing (held at the gate), reads back with wal_read_any from the buffer (W12): without
 * that, the file still reads zeros there. */
static void test_spare_read_any(void **state)
{
	(void)state;
	struct ctx c;
	uint8_t *scratch = malloc(1u << 20), *buf = malloc(CS_REC_PAYLOAD_MAX), *want = malloc(1u << 20);
	struct exp_rec e[16];
	struct rec_hdr h;

	ctx_init(&c, "wal-spareany");
	ctx_open(&c, CS_DURABLE_NONE, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < 14; i++)
		assert_int_equal(append_one(c.w, (1u << 20) - CS_REC_HEADER, 500 + (uint64_t)i,
		                            &e[i], scratch),
		                 0);
	assert_int_equal(wal_sync(c.w), 0);
	wait_spare(c.dirfd, 2);
	tio_gate(c.t, 1);
	/* Record 14 fills segment 1; record 15 needs segment 2 and starts the spare while the
	 * batch of 14 waits at the gate. */
	for (int i = 14; i < 16; i++)
		assert_int_equal(append_one(c.w, (1u << 20) - CS_REC_HEADER, 500 + (uint64_t)i,
		                            &e[i], scratch),
		                 0);
	assert_int_equal(e[14].pos.seg, 1);
	assert_int_equal(e[15].pos.seg, 2);
	assert_int_equal(wal_read_any(c.w, e[14].pos, &h, buf, CS_REC_PAYLOAD_MAX), 0);
	assert_int_equal(h.seq, e[14].seq);
	assert_int_equal(h.len, e[14].len);
	tu_fill(want, e[14].len, e[14].seed);
	assert_memory_equal(buf, want, e[14].len);
	tio_gate(c.t, 0);
	assert_int_equal(wal_sync(c.w), 0);
	assert_int_equal(wal_read_any(c.w, e[14].pos, &h, buf, CS_REC_PAYLOAD_MAX), 0);
	assert_memory_equal(buf, want, e[14].len);
	ctx_close(&c, 0);
	struct log_info li;
	walk_log(c.dirfd, 1, e, 16, &li);
	free(scratch);
	free(buf);
	free(want);
	ctx_fini(&c);
}

/* ---- Reopening with recovered segments --------------------------------------------------- */

/* What recovery hands over: every segment with an fd and its end. */
static void recovered(struct ctx *c, struct wal_seg *segs, const struct log_info *li)
{
	for (uint32_t s = 0; s < li->nsegs; s++) {
		char name[32];
		seg_name(name, sizeof(name), li->ids[s]);
		segs[s] = (struct wal_seg){li->ids[s], openat(c->dirfd, name, O_RDWR | O_CLOEXEC),
		                           li->first_seq[s], li->capacity[s], li->end[s], 0};
		assert_true(segs[s].fd >= 0);
	}
	c->cfg.segs = segs;
	c->cfg.nsegs = li->nsegs;
	c->cfg.next_seq = li->next_seq;
}

static void test_reopen(void **state)
{
	struct ctx c;
	uint8_t scratch[4096], buf[4096], want[4096];
	struct exp_rec e[30];
	struct wal_seg segs[4];
	struct log_info li;
	struct wal_stat st;

	ctx_init(&c, "wal-reopen");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	for (int i = 0; i < 10; i++)
		assert_int_equal(append_one(c.w, 1000 + (uint32_t)i, (uint64_t)i, &e[i], scratch),
		                 0);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, 10, &li);

	/* Same batch size: appends continue in segment 1 at its end. */
	ctx_cfg(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	recovered(&c, segs, &li);
	assert_int_equal(wal_open(&c.w, &c.cfg), 0);
	wal_stat(c.w, &st);
	assert_int_equal(st.next_seq, 11);
	assert_int_equal(st.durable_seq, 11);
	assert_int_equal(st.log_bytes, li.end[0]);
	check_read(c.w, &e[3], buf, want);
	for (int i = 10; i < 20; i++)
		assert_int_equal(append_one(c.w, 2000, (uint64_t)i, &e[i], scratch), 0);
	assert_int_equal(e[10].seq, 11);
	assert_int_equal(e[10].pos.seg, 1);
	assert_int_equal(e[10].pos.off, li.end[0]);
	assert_int_equal(wal_wait(c.w, e[19].seq), 0);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, 20, &li);
	assert_int_equal(li.nsegs, 1);

	/* A larger batch than segment 1's header window allows: a new segment starts. */
	ctx_cfg(&c, CS_DURABLE_SYNC, CS_SEG_MIN, 8u << 20);
	recovered(&c, segs, &li);
	assert_int_equal(wal_open(&c.w, &c.cfg), 0);
	for (int i = 20; i < 30; i++)
		assert_int_equal(append_one(c.w, 3000, (uint64_t)i, &e[i], scratch), 0);
	assert_int_equal(e[20].pos.seg, 2);
	assert_int_equal(e[20].pos.off, CS_SEG_HEADER);
	assert_int_equal(wal_sync(c.w), 0);
	check_read(c.w, &e[5], buf, want);
	check_read(c.w, &e[25], buf, want);
	ctx_close(&c, 0);
	walk_log(c.dirfd, 1, e, 30, &li);
	assert_int_equal(li.nsegs, 2);
	assert_int_equal(li.first_seq[1], 21);
	ctx_fini(&c);
}

/* ---- Limits and bad arguments ------------------------------------------------------------ */

static void test_limits(void **state)
{
	static const struct {
		cs_durability mode;
		uint64_t seg;
		uint32_t batch;
		unsigned interval;
	} bad[] = {
	    {CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN - 1, 0},
	    {CS_DURABLE_SYNC, 1u << 30, CS_BATCH_MAX + 1, 0},
	    {CS_DURABLE_SYNC, CS_SEG_MIN - 1, CS_BATCH_MIN, 0},
	    {CS_DURABLE_SYNC, (uint64_t)CS_SEG_MAX + 1, CS_BATCH_MIN, 0},
	    {CS_DURABLE_SYNC, CS_SEG_MIN, (CS_SEG_MIN / 2) + 8, 0},
	    {CS_DURABLE_INTERVAL, CS_SEG_MIN, CS_BATCH_MIN, 0},
	    {CS_DURABLE_INTERVAL, CS_SEG_MIN, CS_BATCH_MIN, CS_INTERVAL_MS_MAX + 1},
	    {(cs_durability)7, CS_SEG_MIN, CS_BATCH_MIN, 0},
	};
	struct ctx c;
	uint8_t *big = calloc(1, CS_REC_PAYLOAD_MAX + 1);
	struct iovec three = {big, 3u << 20}, huge = {big, CS_REC_PAYLOAD_MAX + 1};
	struct wal_rec two[2] = {{REC_BLOCK, 0, &three, 1}, {REC_BLOCK, 0, &three, 1}};
	struct wal_rec one = {REC_BLOCK, 0, &huge, 1}, zero_type = {0, 0, &three, 1};
	struct wal_rec bad_flags = {REC_BLOCK, 0x80, &three, 1};
	struct wal_stat st;
	uint64_t seq;

	assert_non_null(big);
	ctx_init(&c, "wal-limits");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct wal *w = NULL;
		ctx_cfg(&c, bad[i].mode, bad[i].seg, bad[i].batch);
		c.cfg.interval_ms = bad[i].interval;
		assert_int_equal(wal_open(&w, &c.cfg), CS_EINVAL);
		assert_true(cs_errmsg()[0] != '\0');
		tio_free(c.t); /* checks the failed open still freed the backend */
	}
	/* Nothing was created by the failed opens. */
	assert_int_equal(faccessat(c.dirfd, "00000001.seg", F_OK, 0), -1);

	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_MIN, CS_BATCH_MIN);
	assert_int_equal(wal_append(c.w, two, 2, NULL, &seq), CS_ELIMIT);
	expect_msg("exceeds the batch");
	assert_int_equal(wal_append(c.w, &one, 1, NULL, &seq), CS_ELIMIT);
	assert_int_equal(wal_append(c.w, &one, 0, NULL, &seq), CS_EINVAL);
	assert_int_equal(wal_append(c.w, &zero_type, 1, NULL, &seq), CS_EINVAL);
	assert_int_equal(wal_append(c.w, &bad_flags, 1, NULL, &seq), CS_EINVAL);
	assert_int_equal(wal_wait(c.w, 1), CS_EINVAL); /* nothing appended yet */
	/* One record of the largest size fits (a batch holds one, limits.h). */
	assert_int_equal(wal_append(c.w, &two[0], 1, NULL, &seq), 0);
	assert_int_equal(seq, 1);
	huge.iov_len = CS_REC_PAYLOAD_MAX;
	assert_int_equal(wal_append(c.w, &one, 1, NULL, &seq), 0);
	assert_int_equal(seq, 2);
	assert_int_equal(wal_wait(c.w, seq), 0);
	wal_stat(c.w, &st);
	assert_int_equal(st.next_seq, 3);
	ctx_close(&c, 0);
	free(big);
	ctx_fini(&c);
}

/* ---- The backend on its own --------------------------------------------------------------- */

/*
 * A file size limit makes the kernel cut a write short, then refuse the rest with EFBIG:
 * the backend must continue the short write (resubmitting the cancelled linked fsync) and
 * then return the error, never 0.
 */
static void test_backend_direct(void **state)
{
	struct ctx c;
	struct io *io = real_backend();
	uint8_t *buf = malloc(20000), *back = malloc(20000);
	struct rlimit old, lim;
	struct stat st;
	int fd;

	ctx_init(&c, "wal-io");
	fd = openat(c.dirfd, "f", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	tu_fill(buf, 20000, 9);
	assert_int_equal(io->ops->write(io, fd, buf, 20000, 4096, 1), 0);
	assert_int_equal(pread(fd, back, 20000, 4096), 20000);
	assert_memory_equal(buf, back, 20000);
	assert_int_equal(io->ops->write(io, fd, buf, 0, 0, 1), 0);
	assert_int_equal(io->ops->sync(io, fd), 0);

	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 30000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	int rc = io->ops->write(io, fd, buf, 20000, 24096, 1);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(rc, -EFBIG);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 30000); /* the part below the limit was written */
	assert_int_equal(pread(fd, back, 30000 - 24096, 24096), 30000 - 24096);
	assert_memory_equal(buf, back, 30000 - 24096);

	/* Errors come back as -errno. */
	assert_int_equal(io->ops->sync(io, 9999), -EBADF);
	assert_int_equal(io->ops->write(io, 9999, buf, 10, 0, 1), -EBADF);
	close(fd);
	io->ops->destroy(io);
	free(buf);
	free(back);
	ctx_fini(&c);
}

/*
 * io_release (W15): a removed file is cut to nothing through its last fd, which is then
 * closed; a second fd keeps the inode there to be looked at. An fd that cannot cut (opened
 * read-only) is closed with the file left whole.
 */
static void test_release(void **state)
{
	const size_t len = 2 * IO_RELEASE_STEP + 4096 + 100; /* not a whole number of steps */
	struct ctx c;
	struct stat st;
	uint8_t *buf = malloc(len);
	int fd, look;

	ctx_init(&c, "wal-release");
	assert_non_null(buf);
	tu_fill(buf, len, 15);
	fd = openat(c.dirfd, "r", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
	assert_int_equal(fdatasync(fd), 0);
	look = openat(c.dirfd, "r", O_RDONLY | O_CLOEXEC);
	assert_true(look >= 0);
	assert_int_equal(unlinkat(c.dirfd, "r", 0), 0);
	io_release(fd);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(fstat(look, &st), 0);
	assert_int_equal(st.st_size, 0);
	assert_int_equal(st.st_blocks, 0);
	close(look);

	fd = openat(c.dirfd, "w", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, 4096, 0), 4096);
	close(fd);
	fd = openat(c.dirfd, "w", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	io_release(fd); /* ftruncate fails: nothing is cut */
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	assert_int_equal(fstatat(c.dirfd, "w", &st, 0), 0);
	assert_int_equal(st.st_size, 4096);
	free(buf);
	ctx_fini(&c);
}

/* ---- Throughput (printed, never asserted) -------------------------------------------------- */

static void test_throughput(void **state)
{
	const int per1 = SLOW_BUILD ? 100 : 1000, per8 = SLOW_BUILD ? 40 : 400;
	struct ctx c;
	double dt;
	int s0;

	ctx_init(&c, "wal-tput");
	ctx_open(&c, CS_DURABLE_SYNC, CS_SEG_DEFAULT, CS_BATCH_DEFAULT);
	s0 = atomic_load(&c.t->syncs);
	dt = run_workers(c.w, 1, per1, 4096, NULL, 1);
	print_message("sync mode, 4 KiB records, 1 thread: %.0f ops/s (%d syncs)\n", per1 / dt,
	              atomic_load(&c.t->syncs) - s0);
	s0 = atomic_load(&c.t->syncs);
	dt = run_workers(c.w, 8, per8, 4096, NULL, (uint64_t)per1 + 1);
	print_message("sync mode, 4 KiB records, 8 threads: %.0f ops/s (%d syncs for %d)\n",
	              8 * per8 / dt, atomic_load(&c.t->syncs) - s0, 8 * per8);
	print_message("backend: %s\n", c.t->real->ops->name);
	ctx_close(&c, 0);
	ctx_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty_open),     cmocka_unit_test(test_append_read),
	    cmocka_unit_test(test_read_many),      cmocka_unit_test(test_read_many_large),
	    cmocka_unit_test(test_read_many_shared),
	    cmocka_unit_test(test_transaction),
	    cmocka_unit_test(test_rotation),       cmocka_unit_test(test_concurrent),
	    cmocka_unit_test(test_mode_none),      cmocka_unit_test(test_mode_sync_lazy),
	    cmocka_unit_test(test_mode_interval),
	    cmocka_unit_test(test_poison),         cmocka_unit_test(test_poison_rotation),
	    cmocka_unit_test(test_spare),          cmocka_unit_test(test_spare_fails),
	    cmocka_unit_test(test_spare_read_any),
	    cmocka_unit_test(test_reopen),         cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_backend_direct), cmocka_unit_test(test_release),
	    cmocka_unit_test(test_throughput),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
