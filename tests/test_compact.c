/*
 * test_compact.c - compaction gives the space back and loses nothing, brings nothing back.
 *
 *  (a) Space. Blocks of 256 KiB are put (CS_COMPACT_MB, default 96 MiB of them), about a
 *      tenth named or pinned; gc deletes the rest and compacts. The directory's du (the sum
 *      of st_blocks * 512 of its files) must then be at most 1.1 x live bytes + 3 segments (the
 *      third is the log's spare, W12 of wal.c);
 *      after a reopen every live block is there byte for byte, every name and pin too,
 *      nothing deleted is, and verify is clean. Prints du before and after, the live bytes
 *      and the copy rate.
 *  (b) Carried deletes. A block put in segment 1 and deleted in segment 3, segment 3
 *      compacted and segment 1 kept: after a reopen the block is absent (the tombstone was
 *      carried), and so are a name and a pin removed the same way; a block, name and pin
 *      deleted in segment 2 and set again in segment 3 before segment 2 is compacted are
 *      present after a reopen (a carry cancels only what is older than its original). The
 *      carries survive the compaction of the segment holding them, and once segment 1 is
 *      gone too a reopen still agrees.
 *  (c) A segment file missing without a segment-drop record (the first, or one in the
 *      middle) is refused at open with CS_ECORRUPT naming the lost seqs; one that
 *      compaction deleted is not.
 *  (d) Power cuts. A compaction of every segment of a prepared store (blocks, names, pins,
 *      deletes of each, copies that start a new segment) is run through the fault backend
 *      of fault_io.h with the power cut after each of its I/O operations; each disk state
 *      (unsynced writes kept, dropped, torn, mixed; undurable files kept or lost) is reopened
 *      with the real backend and must equal the prepared store's content exactly.
 *  (e) kill -9. A child puts, deletes and compacts in a loop and is killed at random; the
 *      reopened store must hold every acknowledged block, no acknowledged delete, and verify.
 *  (f) A full disk. A compaction whose copies need a new segment that cannot be created
 *      (ENOSPC, EDQUOT at the create, ENOSPC at the header write) returns CS_EFULL naming
 *      the cause; nothing is lost or poisoned, writes go on, a later compaction finishes
 *      the job, and a reopen has everything.
 *  (g) Writers beside compaction. Threads put, delete, set and remove names, add and remove
 *      pins, each against its own model, while the main thread compacts in a loop; the
 *      store must equal the models, live and after a reopen. Prints the longest put and
 *      the compactions' copy rate.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sys/mount.h>

#include "btree.h"
#include "cid.h"
#include "fault_io.h"
#include "names.h"
#include "store.h"
#include "test_util.h"

TU_TSAN_REPORT_AT_ONCE();

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

#define SEG (16u << 20)

static char g_root[256];
static int g_mounted;

static double now_s(void)
{
	return tu_now();
}

static void path_in(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", g_root, name);
}

static int setup(void **state)
{
	tu_tmpdir(g_root, sizeof(g_root), "compact");
	/* The crash states are built in copies of a store: in memory when the test may
	 * mount (root), else under $TMPDIR. The big space case runs under $TMPDIR. */
	char img[300];
	snprintf(img, sizeof(img), "%s/tmpfs", g_root);
	if (mkdir(img, 0700) == 0 && mount("tmpfs", img, "tmpfs", 0, "size=1g,mode=0700") == 0)
		g_mounted = 1;
	return 0;
}

static int teardown(void **state)
{
	store_io_factory = NULL;
	fault_reset();
	if (g_mounted) {
		char img[300];
		snprintf(img, sizeof(img), "%s/tmpfs", g_root);
		umount2(img, MNT_DETACH);
	}
	tu_rmrf(g_root);
	return 0;
}

/* A directory for crash images: on the tmpfs when there is one. */
static void img_path(char *buf, size_t cap, const char *name)
{
	if (g_mounted)
		snprintf(buf, cap, "%s/tmpfs/%s", g_root, name);
	else
		path_in(buf, cap, name);
}

/* du of a directory: st_blocks * 512 of its files. */
static uint64_t du(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t sum = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, 0) != 0)
			continue;
		sum += (uint64_t)st.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

static int has_seg(const char *dir, uint32_t id)
{
	char p[600];
	snprintf(p, sizeof(p), "%s/%08x.seg", dir, id);
	return access(p, F_OK) == 0;
}

static cs_options opts(void)
{
	cs_options o = tu_opts();
	o.segment_bytes = SEG;
	return o;
}

/* ---- Blocks named by seed ------------------------------------------------------------- */

static uint8_t *g_want, *g_got; /* CS_BLOCK_MAX bytes each */

static cs_cid cid_of(uint64_t seed, size_t len)
{
	cs_cid cid;
	tu_fill(g_want, len, seed);
	assert_int_equal(cs_cid_compute(g_want, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid), 0);
	return cid;
}

static cs_cid put(cs_store *s, uint64_t seed, size_t len)
{
	cs_cid cid;
	tu_fill(g_want, len, seed);
	int rc = cs_block_put(s, g_want, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
	if (rc != 0)
		fail_msg("put seed %llu: %s: %s", (unsigned long long)seed, cs_strerror(rc),
		         cs_errmsg());
	return cid;
}

/* 1 if the block of seed is present with exactly its bytes, 0 if absent; fails otherwise. */
static int present(cs_store *s, uint64_t seed, size_t len)
{
	cs_cid cid = cid_of(seed, len);
	size_t n;
	int rc = cs_block_get(s, &cid, g_got, CS_BLOCK_MAX, &n);
	if (rc == CS_ENOTFOUND)
		return 0;
	if (rc != 0)
		fail_msg("get seed %llu: %s: %s", (unsigned long long)seed, cs_strerror(rc),
		         cs_errmsg());
	tu_fill(g_want, len, seed);
	if (n != len || memcmp(g_want, g_got, len) != 0)
		fail_msg("seed %llu: wrong bytes", (unsigned long long)seed);
	return 1;
}

/* The segment the index places the block of cid in. */
static uint32_t seg_of(cs_store *s, const cs_cid *cid)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;
	assert_int_equal(cid_key(cid, key), 0);
	assert_int_equal(store_lookup(s, key, &v), 0);
	return v.seg;
}

/* The id of the segment appended to, and its free bytes. */
static uint32_t head(cs_store *s, uint64_t *room)
{
	static struct wal_seg_info segs[CS_SEGMENTS_MAX];
	uint32_t n = wal_segments(s->wal, segs, CS_SEGMENTS_MAX);
	if (room != NULL)
		*room = segs[n - 1].capacity - segs[n - 1].end;
	return segs[n - 1].id;
}

/* Puts 4 MiB fillers (seeds from *seed on, deleted at once if del) until the head is
 * segment id. */
static void fill_until(cs_store *s, uint32_t id, uint64_t *seed, int del)
{
	while (head(s, NULL) < id) {
		cs_cid c = put(s, (*seed)++, CS_BLOCK_MAX);
		if (del)
			assert_int_equal(cs_block_delete(s, &c), 0);
	}
}

static int pinned(cs_store *s, const cs_cid *cid)
{
	int kind;
	int rc = cs_pin_test(s, cid, &kind, NULL);
	if (rc == CS_ENOTFOUND)
		return 0;
	assert_int_equal(rc, 0);
	return kind == CS_PIN_DIRECT || kind == CS_PIN_RECURSIVE;
}

static int name_is(cs_store *s, const char *name, const cs_cid *root)
{
	cs_cid got;
	int rc = cs_name_get(s, name, &got, NULL, NULL);
	if (rc == CS_ENOTFOUND)
		return 0;
	assert_int_equal(rc, 0);
	return root != NULL && got.len == root->len && memcmp(got.bytes, root->bytes, got.len) == 0;
}

static void verify_clean(cs_store *s)
{
	uint64_t checked, failed;
	int rc = cs_store_verify(s, NULL, NULL, &checked, &failed);
	if (rc != 0)
		fail_msg("verify: %llu of %llu failed: %s", (unsigned long long)failed,
		         (unsigned long long)checked, cs_errmsg());
}

static cs_store *open_store(const char *dir, const cs_options *o)
{
	cs_store *s;
	int rc = cs_store_open(dir, o, &s);
	if (rc != 0)
		fail_msg("open %s: %s: %s", dir, cs_strerror(rc), cs_errmsg());
	return s;
}

/* ---- Live bytes per segment ---------------------------------------------------------- */

/* Adds the log bytes of table t's entries (blocks, or pins) to their segments' sums. */
static void recount_idx(cs_store *s, struct idx *t, uint64_t *sum)
{
	static uint8_t keys[1024][CS_KEY_MAX];
	static struct idx_val vals[1024];
	const uint8_t *after = NULL;
	int n;

	do {
		n = idx_next_n(t, after, keys, vals, 1024);
		for (int i = 0; i < n; i++) {
			assert_true(vals[i].seg < 4096);
			sum[vals[i].seg] += (uint64_t)(t == s->idx ? store_block_bytes(vals[i].len)
			                                           : pin_bytes(keys[i], &vals[i]));
		}
		after = n > 0 ? keys[n - 1] : after;
	} while (n == 1024);
}

/* C1 of compact.c: the live bytes per segment are those the tables point at, recounted. */
static void check_live(cs_store *s)
{
	static uint64_t sum[4096];
	struct name_entry e[64];

	memset(sum, 0, sizeof(sum));
	recount_idx(s, s->idx, sum);
	recount_idx(s, s->pins, sum);
	int n = names_next(s->names, NULL, 0, e, 64);
	assert_true(n < 64);
	for (int i = 0; i < n; i++)
		sum[e[i].v.seg] += (uint64_t)store_name_bytes(e[i].len, e[i].v.root.len);
	for (uint32_t i = 0; i < s->nlive; i++) {
		if (s->live[i].bytes != sum[s->live[i].id])
			fail_msg("segment %08x: %llu live bytes counted, %llu recounted",
			         s->live[i].id, (unsigned long long)s->live[i].bytes,
			         (unsigned long long)sum[s->live[i].id]);
		sum[s->live[i].id] = 0;
	}
	for (uint32_t id = 0; id < 4096; id++)
		if (sum[id] != 0)
			fail_msg("segment %08x: live bytes recounted but not counted", id);
}

/* ---- (a) Space -------------------------------------------------------------------------- */

/* A writer beside the collection: puts a 16 KiB block every 2 ms and names each at once (a name set
 * during a collection shades its DAG, so a named block survives it; one swept between its
 * put and its name set is put again), timing every put. */
struct space_writer {
	cs_store *s;
	atomic_int stop;
	uint64_t named; /* blocks seeds 1..named are named "w<seed>" */
	double max_put;
	uint64_t puts;
	char err[200];
};

#define SPACE_W_LEN (16u << 10)

static void *space_writer_main(void *arg)
{
	struct space_writer *w = arg;
	uint8_t *buf = malloc(SPACE_W_LEN);
	char name[32];

	while (!atomic_load(&w->stop) && w->err[0] == '\0') {
		uint64_t seed = 5000000 + w->named + 1;
		cs_cid cid;
		tu_fill(buf, SPACE_W_LEN, seed);
		double t0 = now_s();
		int rc = cs_block_put(w->s, buf, SPACE_W_LEN, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		double dt = now_s() - t0;
		w->puts++;
		if (dt > w->max_put)
			w->max_put = dt;
		if (rc == 0) {
			snprintf(name, sizeof(name), "w%llu", (unsigned long long)seed);
			rc = cs_name_set(w->s, name, &cid, SPACE_W_LEN);
			if (rc == 0)
				w->named++;
			else if (rc == CS_ENOTFOUND)
				rc = 0; /* swept before it was named: again */
		}
		if (rc != 0)
			snprintf(w->err, sizeof(w->err), "%s: %s", cs_strerror(rc), cs_errmsg());
		usleep(2000);
	}
	free(buf);
	return NULL;
}

static void test_space(void **state)
{
	const char *env = getenv("CS_COMPACT_MB");
	uint64_t mb = env != NULL && atoi(env) > 0 ? (uint64_t)atoi(env) : (SLOW_BUILD ? 32 : 96);
	const size_t len = 256u << 10;
	const uint64_t n = mb * 4, base = 1000000;
	cs_options o = opts();
	char dir[512], name[32];

	path_in(dir, sizeof(dir), "space");
	o.durability = CS_DURABLE_NONE; /* a bulk load; gc syncs what it does */
	cs_store *s = open_store(dir, &o);
	for (uint64_t i = 0; i < n; i++) {
		cs_cid c = put(s, base + i, len);
		if (i % 10 == 3) {
			snprintf(name, sizeof(name), "f%llu", (unsigned long long)i);
			assert_int_equal(cs_name_set(s, name, &c, len), 0);
		} else if (i % 20 == 7) {
			assert_int_equal(cs_pin_add(s, &c, CS_PIN_DIRECT), 0);
		}
	}
	assert_int_equal(cs_store_sync(s), 0);
	uint64_t du0 = du(dir);
	cs_gc_stat g;
	struct space_writer *w = calloc(1, sizeof(*w));
	pthread_t th;
	assert_non_null(w);
	w->s = s;
	assert_int_equal(pthread_create(&th, NULL, space_writer_main, w), 0);
	int rc = cs_gc(s, &g);
	atomic_store(&w->stop, 1);
	pthread_join(th, NULL);
	if (w->err[0] != '\0')
		fail_msg("the writer beside gc: %s", w->err);
	if (rc != 0)
		fail_msg("gc: %s: %s", cs_strerror(rc), cs_errmsg());
	cs_stat st;
	cs_store_stat(s, &st);
	uint64_t du1 = du(dir);
	uint64_t named = w->named;
	/* docs/GC.md: the head, the segment the copies may begin, and the spare (W12). */
	double bound = 1.1 * (double)st.live_bytes + 3.0 * SEG;
	print_message("space: %llu MiB of 256 KiB blocks, 90%% collected: du %.1f MiB -> %.1f MiB, "
	              "live %.1f MiB (bound %.1f MiB); %llu segments compacted, %.1f MiB copied "
	              "in %.2f s (%.0f MB/s), %.1f MiB of files deleted; gc %.2f s (mark %.2f, "
	              "sweep %.2f); a writer beside it: %llu 16 KiB puts (one per 2 ms, unsynced), "
	              "the longest %.1f ms\n",
	              (unsigned long long)mb, du0 / 1048576.0, du1 / 1048576.0,
	              st.live_bytes / 1048576.0, bound / 1048576.0,
	              (unsigned long long)g.segments_compacted, g.bytes_copied / 1048576.0,
	              g.compact_seconds,
	              g.compact_seconds > 0 ? g.bytes_copied / 1e6 / g.compact_seconds : 0.0,
	              g.bytes_reclaimed / 1048576.0, g.seconds, g.mark_seconds, g.sweep_seconds,
	              (unsigned long long)w->puts, w->max_put * 1e3);
	assert_true(g.segments_compacted > 0);
	assert_true(g.swept_blocks >= n * 8 / 10);
	if ((double)du1 > bound)
		fail_msg("du %llu after gc exceeds 1.1 x live %llu + 3 segments",
		         (unsigned long long)du1, (unsigned long long)st.live_bytes);
	assert_int_equal(cs_store_close(s), 0);

	s = open_store(dir, &o);
	uint64_t live = 0;
	for (uint64_t i = 0; i < n; i++) {
		int keep = i % 10 == 3 || i % 20 == 7;
		cs_cid c = cid_of(base + i, len);
		if (present(s, base + i, len) != keep)
			fail_msg("block %llu: %s after compaction and reopen", (unsigned long long)i,
			         keep ? "lost" : "back");
		live += (uint64_t)keep;
		if (i % 10 == 3) {
			snprintf(name, sizeof(name), "f%llu", (unsigned long long)i);
			assert_true(name_is(s, name, &c));
		}
		assert_int_equal(pinned(s, &c), i % 20 == 7 && i % 10 != 3);
	}
	for (uint64_t i = 1; i <= named; i++) {
		snprintf(name, sizeof(name), "w%llu", (unsigned long long)(5000000 + i));
		cs_cid c = cid_of(5000000 + i, SPACE_W_LEN);
		if (!name_is(s, name, &c) || present(s, 5000000 + i, SPACE_W_LEN) != 1)
			fail_msg("the writer's block %llu, named during gc, is lost",
			         (unsigned long long)i);
	}
	cs_store_stat(s, &st);
	assert_int_equal(st.blocks, live + named);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	free(w);
	tu_rmrf(dir);
}

/* ---- (b) Carried deletes ---------------------------------------------------------------- */

static void test_carried(void **state)
{
	cs_options o = opts();
	o.compact_threshold = 0; /* only what the test compacts */
	char dir[512];
	uint64_t fill = 2000000;
	cs_compact_stat cst;

	path_in(dir, sizeof(dir), "carried");
	cs_store *s = open_store(dir, &o);
	/* Segment 1: X, Y (named N), Z (pinned); and X2, Y2, Z2 the same way. */
	cs_cid x = put(s, 1, 1000), y = put(s, 2, 2000), z = put(s, 3, 3000);
	cs_cid x2 = put(s, 11, 1100), y2 = put(s, 12, 2100), z2 = put(s, 13, 3100);
	cs_cid y3 = put(s, 14, 2200);
	assert_int_equal(cs_name_set(s, "n", &y, 2000), 0);
	assert_int_equal(cs_name_set(s, "n2", &y2, 2100), 0);
	assert_int_equal(cs_pin_add(s, &z, CS_PIN_DIRECT), 0);
	assert_int_equal(cs_pin_add(s, &z2, CS_PIN_DIRECT), 0);
	assert_int_equal(seg_of(s, &x), 1);
	fill_until(s, 2, &fill, 1);
	/* Segment 2: the second set deleted. */
	assert_int_equal(cs_block_delete(s, &x2), 0);
	assert_int_equal(cs_name_delete(s, "n2"), 0);
	assert_int_equal(cs_pin_rm(s, &z2), 0);
	fill_until(s, 3, &fill, 1);
	/* Segment 3: the first set deleted; the second set again, after its delete and before
	 * the carry. */
	assert_int_equal(cs_block_delete(s, &x), 0);
	assert_int_equal(cs_name_delete(s, "n"), 0);
	assert_int_equal(cs_pin_rm(s, &z), 0);
	put(s, 11, 1100);
	assert_int_equal(cs_name_set(s, "n2", &y3, 2200), 0);
	assert_int_equal(cs_pin_add(s, &z2, CS_PIN_DIRECT), 0);
	assert_int_equal(seg_of(s, &x2), 3);
	fill_until(s, 4, &fill, 1);

	/* Compact 3 (its deletes carried past segment 1), then 2 (the re-set is newer). */
	assert_int_equal(store_compact_segment(s, 3, &cst), 0);
	assert_int_equal(cst.segments_compacted, 1);
	assert_int_equal(store_compact_segment(s, 2, &cst), 0);
	assert_true(!has_seg(dir, 2) && !has_seg(dir, 3) && has_seg(dir, 1));
	assert_int_equal(seg_of(s, &x2), 4); /* copied */
	for (int round = 0; round < 3; round++) {
		assert_int_equal(cs_store_close(s), 0);
		s = open_store(dir, &o);
		check_live(s);
		assert_int_equal(present(s, 1, 1000), 0);
		assert_int_equal(name_is(s, "n", NULL), 0);
		assert_int_equal(pinned(s, &z), 0);
		assert_int_equal(present(s, 11, 1100), 1);
		assert_true(name_is(s, "n2", &y3));
		assert_true(pinned(s, &z2));
		assert_int_equal(present(s, 2, 2000) + present(s, 3, 3000) + present(s, 12, 2100) +
		                     present(s, 13, 3100) + present(s, 14, 2200),
		                 5);
		verify_clean(s);
		if (round == 0) {
			/* The segment holding the carries (and the drop records) is compacted
			 * too; segment 1 still stands, so the carries move again. */
			uint32_t h = head(s, NULL);
			fill_until(s, h + 1, &fill, 1);
			assert_int_equal(store_compact_segment(s, h, &cst), 0);
			assert_true(has_seg(dir, 1) && !has_seg(dir, h));
		} else if (round == 1) {
			/* Now segment 1 goes: its blocks are copied, and with nothing older left
			 * the next rewrite of the carries may drop them. */
			assert_int_equal(store_compact_segment(s, 1, &cst), 0);
			assert_true(!has_seg(dir, 1));
			uint32_t h = head(s, NULL);
			fill_until(s, h + 1, &fill, 1);
			o.compact_threshold = 1;
			assert_int_equal(cs_compact(s, &cst), 0);
			assert_true(cst.segments_compacted >= 1);
		}
	}
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.segments, 1); /* everything but the head compacted */
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

/* ---- (c) A missing segment ------------------------------------------------------------- */

static void expect_refused(const char *dir, const cs_options *o, const char *needle)
{
	cs_store *s;
	int rc = cs_store_open(dir, o, &s);
	if (rc != CS_ECORRUPT || strstr(cs_errmsg(), needle) == NULL)
		fail_msg("open with a segment missing: %s (\"%s\"), want CS_ECORRUPT with \"%s\"",
		         cs_strerror(rc), cs_errmsg(), needle);
}

static void test_missing_segment(void **state)
{
	cs_options o = opts();
	o.compact_threshold = 0;
	char dir[512], copy[512], p[600];
	uint64_t fill = 3000000;
	cs_compact_stat cst;

	path_in(dir, sizeof(dir), "missing");
	path_in(copy, sizeof(copy), "missing-copy");
	cs_store *s = open_store(dir, &o);
	put(s, 1, 100);
	fill_until(s, 5, &fill, 0);
	assert_int_equal(cs_store_close(s), 0);

	/* A middle segment, then the first, gone without a record. */
	tu_copy_dir(dir, copy);
	snprintf(p, sizeof(p), "%s/00000002.seg", copy);
	assert_int_equal(unlink(p), 0);
	expect_refused(copy, &o, "records lost");
	tu_copy_dir(dir, copy);
	snprintf(p, sizeof(p), "%s/00000001.seg", copy);
	assert_int_equal(unlink(p), 0);
	expect_refused(copy, &o, "no segment-drop record accounts for seqs 1..");

	/* Compacted away, the same two open; another one missing does not. */
	s = open_store(dir, &o);
	assert_int_equal(store_compact_segment(s, 2, &cst), 0);
	assert_int_equal(store_compact_segment(s, 1, &cst), 0);
	assert_int_equal(cs_store_close(s), 0);
	s = open_store(dir, &o);
	assert_int_equal(present(s, 1, 100), 1);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	tu_copy_dir(dir, copy);
	snprintf(p, sizeof(p), "%s/00000004.seg", copy);
	assert_int_equal(unlink(p), 0);
	expect_refused(copy, &o, "records lost");
	tu_rmrf(copy);
	tu_rmrf(dir);
}

/* ---- Compaction and checkpoints ---------------------------------------------------------- */

/* For cs_options.log: counts the warnings whose text holds `what`. */
struct warns {
	const char *what;
	int n;
};

static void count_warns(void *ctx, int level, const char *msg)
{
	struct warns *w = ctx;
	if (level == CS_LOG_WARN && strstr(msg, w->what) != NULL)
		w->n++;
}

#define FULL_REPLAY "replaying the whole log"

/* Opens dir and checks that it opened from a checkpoint: no fallback, a checkpoint seq. */
static cs_store *open_from_checkpoint(const char *dir, cs_options o)
{
	struct warns full = {FULL_REPLAY, 0};
	cs_stat st;

	o.log = count_warns;
	o.log_ctx = &full;
	cs_store *s = open_store(dir, &o);
	cs_store_stat(s, &st);
	if (full.n != 0 || st.checkpoint_seq == 0)
		fail_msg("open of %s did not use its checkpoint (%d full replays, checkpoint seq %llu)",
		         dir, full.n, (unsigned long long)st.checkpoint_seq);
	return s;
}

/* A compaction that deletes segments writes a checkpoint, so the next open is from it, not
 * a full replay; that checkpoint keeps the dropped ranges and the live bytes per segment, so
 * a later compaction of the segment holding the drop records states the older ranges again
 * (C4), and a full replay (the checkpoint gone) still accounts for every gap. */
static void test_checkpoint_after(void **state)
{
	cs_options o = opts();
	o.compact_threshold = 0;
	char orig[512], dir[512], p[600];
	uint64_t fill = 4000000;
	cs_compact_stat cst;

	path_in(orig, sizeof(orig), "ckpt-orig");
	path_in(dir, sizeof(dir), "ckpt");
	cs_store *s = open_store(orig, &o);
	put(s, 1, 100);
	cs_cid one = cid_of(1, 100);
	assert_int_equal(cs_name_set(s, "one", &one, 100), 0);
	assert_int_equal(cs_pin_add(s, &one, CS_PIN_DIRECT), 0);
	fill_until(s, 3, &fill, 0);
	put(s, 2, 200);
	fill_until(s, 5, &fill, 0);
	/* Segment 2 (fillers only) goes. The store is copied as a crash would leave it after
	 * the sync (no close, so no checkpoint of close): its open must come from the
	 * checkpoint written after the compaction. */
	assert_int_equal(store_compact_segment(s, 2, &cst), 0);
	assert_int_equal(cst.segments_compacted, 1);
	assert_false(has_seg(orig, 2));
	uint32_t h = head(s, NULL);
	assert_int_equal(cs_store_sync(s), 0);
	tu_copy_dir(orig, dir);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(orig);

	s = open_from_checkpoint(dir, o);
	check_live(s);
	assert_int_equal(present(s, 1, 100) + present(s, 2, 200), 2);
	assert_true(name_is(s, "one", &one));
	assert_true(pinned(s, &one));
	/* Segment h holds the drop record of segment 2, and the live fillers put after it. */
	fill_until(s, h + 1, &fill, 0);
	assert_int_equal(store_compact_segment(s, h, &cst), 0);
	assert_false(has_seg(dir, h));
	verify_clean(s);
	check_live(s);
	assert_int_equal(cs_store_close(s), 0);

	s = open_from_checkpoint(dir, o);
	check_live(s);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	snprintf(p, sizeof(p), "%s/checkpoint", dir);
	assert_int_equal(unlink(p), 0);
	s = open_store(dir, &o); /* a full replay: every gap accounted for */
	check_live(s);
	assert_int_equal(present(s, 1, 100) + present(s, 2, 200), 2);
	assert_true(name_is(s, "one", &one));
	assert_true(pinned(s, &one));
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

/* When the checkpoint after a compaction fails, the compaction still succeeds (its copies
 * and drop record are durable before any segment goes), a warning says so, and the next open
 * finds the older checkpoint naming a deleted segment, replays the whole log and loses
 * nothing. */
static void test_checkpoint_after_fails(void **state)
{
	cs_options o = opts();
	o.compact_threshold = 0;
	struct warns failed = {"the checkpoint after it failed", 0};
	o.log = count_warns;
	o.log_ctx = &failed;
	char orig[512], dir[512];
	uint64_t fill = 4000000;
	cs_compact_stat cst;

	path_in(orig, sizeof(orig), "ckptfail-orig");
	path_in(dir, sizeof(dir), "ckptfail");
	fault_reset();
	store_io_factory = fault_factory;
	cs_store *s = open_store(orig, &o);
	put(s, 1, 100);
	cs_cid one = cid_of(1, 100);
	assert_int_equal(cs_name_set(s, "one", &one, 100), 0);
	fill_until(s, 3, &fill, 0);
	put(s, 2, 200);
	fill_until(s, 5, &fill, 0);
	assert_int_equal(cs_checkpoint(s), 0); /* lists segment 2 */
	fault_fail_nth(FAULT_RENAME, 1, -EIO);
	assert_int_equal(store_compact_segment(s, 2, &cst), 0);
	assert_int_equal(cst.segments_compacted, 1);
	assert_int_equal(fault_injected(), 1);
	fault_fail_nth(FAULT_RENAME, 0, 0);
	assert_int_equal(failed.n, 1);
	assert_false(has_seg(orig, 2));
	assert_int_equal(cs_store_sync(s), 0);
	tu_copy_dir(orig, dir); /* as a crash leaves it: no checkpoint of close */
	assert_int_equal(cs_store_close(s), 0);
	store_io_factory = NULL;
	tu_rmrf(orig);

	struct warns full = {FULL_REPLAY, 0};
	o.log_ctx = &full;
	s = open_store(dir, &o);
	assert_int_equal(full.n, 1);
	check_live(s);
	assert_int_equal(present(s, 1, 100) + present(s, 2, 200), 2);
	assert_true(name_is(s, "one", &one));
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

/* ---- A prepared store and its content, for (d) and (f) --------------------------------- */

enum { NLIVE = 12, NDEAD = 8 };

static size_t prep_len(int i)
{
	/* 1 KB to 400 KB, but L0 of 3 MiB: segment 1 has the highest live fraction, so it is
	 * compacted last, after the deletes of its blocks were carried out of segment 2. */
	return i == 0 ? 3u << 20 : 1000 + (size_t)i * 37000;
}

/*
 * Builds a store in dir with real I/O: live blocks L (seeds 100+i) spread over segments 1..3,
 * dead ones D (200+i) put and deleted (those of segment 1 from segment 2), 4 MiB fillers put
 * and deleted, names n0..n3 on L0..L3 (n0 set first in segment 1, again in 2), d0 set in
 * segment 1 and removed in 2, pins on L0 and L1 and one on L3 added in 1 and removed in 2;
 * the head (segment 4) is left with less room than the live records, so the copies start a
 * new segment.
 */
static void prepare(const char *dir)
{
	cs_options o = opts();
	o.compact_threshold = 0;
	uint64_t fill = 4000000;
	cs_store *s = open_store(dir, &o);
	for (int seg = 1; seg <= 3; seg++) {
		for (int i = seg - 1; i < NLIVE; i += 3)
			put(s, 100 + (uint64_t)i, prep_len(i));
		for (int i = seg - 1; i < NDEAD; i += 3) {
			cs_cid c = put(s, 200 + (uint64_t)i, prep_len(i));
			if (seg > 1)
				assert_int_equal(cs_block_delete(s, &c), 0);
		}
		cs_cid l3 = cid_of(103, prep_len(3)), l0 = cid_of(100, prep_len(0));
		if (seg == 2) {
			/* Deletes of blocks of segment 1, which carries must keep deleted. */
			for (int i = 0; i < NDEAD; i += 3) {
				cs_cid c = cid_of(200 + (uint64_t)i, prep_len(i));
				assert_int_equal(cs_block_delete(s, &c), 0);
			}
			assert_int_equal(cs_name_delete(s, "d0"), 0);
			assert_int_equal(cs_pin_rm(s, &l3), 0);
			assert_int_equal(cs_name_set(s, "n0", &l0, prep_len(0)), 0); /* set again */
		}
		if (seg == 1) {
			cs_cid d3 = cid_of(203, prep_len(3)), l1 = cid_of(101, 1);
			assert_int_equal(cs_name_set(s, "d0", &d3, 1), 0);
			assert_int_equal(cs_pin_add(s, &l3, CS_PIN_DIRECT), 0);
			assert_int_equal(cs_name_set(s, "n0", &l3, 1), 0);
			(void)l1;
		}
		fill_until(s, (uint32_t)seg + 1, &fill, 1);
	}
	for (int i = 0; i < 4; i++) {
		char name[8];
		snprintf(name, sizeof(name), "n%d", i);
		cs_cid c = cid_of(100 + (uint64_t)i, prep_len(i));
		assert_int_equal(cs_name_set(s, name, &c, prep_len(i)), 0);
	}
	for (int i = 0; i < 2; i++) {
		cs_cid c = cid_of(100 + (uint64_t)i, prep_len(i));
		assert_int_equal(cs_pin_add(s, &c, CS_PIN_DIRECT), 0);
	}
	/* Leave the head less room than the copies need. */
	uint64_t room;
	while (head(s, &room) == 4 && room > (2u << 20)) {
		cs_cid c = put(s, fill++, room > (5u << 20) ? CS_BLOCK_MAX : (1u << 20));
		assert_int_equal(cs_block_delete(s, &c), 0);
	}
	assert_int_equal(head(s, NULL), 4);
	assert_int_equal(cs_store_close(s), 0);
}

/* Fails unless the store in dir, opened with the real backend, holds exactly what
 * prepare() left. */
static void check_prepared(const char *dir, const char *where)
{
	cs_options o = opts();
	o.compact_threshold = 0;
	cs_store *s;
	store_io_factory = NULL;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0)
		fail_msg("%s: open: %s: %s", where, cs_strerror(rc), cs_errmsg());
	for (int i = 0; i < NLIVE; i++)
		if (present(s, 100 + (uint64_t)i, prep_len(i)) != 1)
			fail_msg("%s: live block %d lost", where, i);
	for (int i = 0; i < NDEAD; i++)
		if (present(s, 200 + (uint64_t)i, prep_len(i)) != 0)
			fail_msg("%s: deleted block %d is back", where, i);
	for (int i = 0; i < 4; i++) {
		char name[8];
		snprintf(name, sizeof(name), "n%d", i);
		cs_cid c = cid_of(100 + (uint64_t)i, prep_len(i));
		if (!name_is(s, name, &c))
			fail_msg("%s: name %s lost", where, name);
	}
	if (name_is(s, "d0", NULL) || cs_name_get(s, "d0", NULL, NULL, NULL) != CS_ENOTFOUND)
		fail_msg("%s: removed name d0 is back", where);
	for (int i = 0; i < 4; i++) {
		cs_cid c = cid_of(100 + (uint64_t)i, prep_len(i));
		if (pinned(s, &c) != (i < 2))
			fail_msg("%s: pin on L%d %s", where, i, i < 2 ? "lost" : "back");
	}
	cs_stat st;
	cs_store_stat(s, &st);
	if (st.blocks != NLIVE || st.names != 4 || st.pins != 2)
		fail_msg("%s: %llu blocks, %llu names, %llu pins; want %d, 4, 2", where,
		         (unsigned long long)st.blocks, (unsigned long long)st.names,
		         (unsigned long long)st.pins, NLIVE);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
}

/* ---- (d) Power cuts --------------------------------------------------------------------- */

/* Runs a compaction of every segment of the store in dir through the fault backend, the
 * power going off after `off` of its I/O operations. Returns the operations it did. */
static uint64_t cut_run(const char *dir, uint64_t off, int *rc)
{
	cs_options o = opts();
	o.compact_threshold = 1;
	cs_store *s;
	cs_compact_stat cst;

	fault_reset();
	store_io_factory = fault_factory;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	uint64_t ops0 = fault_ops();
	fault_off_after(off);
	*rc = cs_compact(s, &cst);
	uint64_t ops = fault_ops() - ops0;
	(void)cs_store_close(s);
	store_io_factory = NULL;
	return ops;
}

/* After a cut, a compaction of the reopened store finishes what the cut one began (a
 * segment left behind with its drop durable is deleted without copying) and changes
 * nothing of the content. */
static void finish_after_cut(const char *dir, const char *where)
{
	cs_options o = opts();
	o.compact_threshold = 1;
	cs_compact_stat cst;
	cs_store *s = open_store(dir, &o);
	int rc = cs_compact(s, &cst);
	if (rc != 0)
		fail_msg("%s: the compaction after it: %s: %s", where, cs_strerror(rc), cs_errmsg());
	assert_int_equal(cs_store_close(s), 0);
	check_prepared(dir, where);
	if (has_seg(dir, 1) || has_seg(dir, 2) || has_seg(dir, 3))
		fail_msg("%s: segments 1..3 remain after the compaction after it", where);
}

static void test_power_cuts(void **state)
{
	char tmpl[512], work[512], img[512], where[300];
	uint64_t states = 0;
	int rc;

	img_path(tmpl, sizeof(tmpl), "cut-template");
	img_path(work, sizeof(work), "cut-work");
	img_path(img, sizeof(img), "cut-img");
	prepare(tmpl);
	check_prepared(tmpl, "prepared");

	fault_copy_store(tmpl, work);
	uint64_t n = cut_run(work, FAULT_OFF, &rc);
	if (rc != 0)
		fail_msg("the uncut compaction failed: %s: %s", cs_strerror(rc), cs_errmsg());
	check_prepared(work, "uncut compaction");
	cs_stat st;
	cs_store *s = open_store(work, NULL);
	cs_store_stat(s, &st);
	assert_int_equal(cs_store_close(s), 0);
	/* Everything but the head it began with, which the copies left for a new one. */
	assert_true(st.segments == 2 && !has_seg(work, 1) && !has_seg(work, 2) &&
	            !has_seg(work, 3) && has_seg(work, 4) && has_seg(work, 5));
	/* Sanitizer builds, where each reopen costs ten times as much, cut after every third
	 * operation, as tests/test_crash.c does. */
	for (uint64_t k = 0; k <= n; k += SLOW_BUILD ? 3 : 1) {
		fault_copy_store(tmpl, work);
		cut_run(work, k, &rc);
		for (int pol = 0; pol < FAULT_NPOLICIES; pol++) {
			int seeds = pol == FAULT_KEEP || pol == FAULT_DROP ? 1 : (SLOW_BUILD ? 1 : 3);
			for (int seed = 1; seed <= seeds; seed++) {
				struct fault_cut cut;
				fault_copy_store(work, img);
				int ifd = open(img, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				assert_true(ifd >= 0);
				fault_power_cut(ifd, (enum fault_policy)pol, (uint64_t)seed, 0, &cut);
				close(ifd);
				snprintf(where, sizeof(where),
				         "power cut after I/O op %llu of %llu of the compaction, policy "
				         "%s, seed %d (%llu unsynced writes, %llu files removed)",
				         (unsigned long long)k, (unsigned long long)n,
				         fault_policy_name[pol], seed, (unsigned long long)cut.writes,
				         (unsigned long long)cut.files_removed);
				check_prepared(img, where);
				states++;
				if (pol == FAULT_KEEP)
					finish_after_cut(img, where);
			}
		}
	}
	print_message("compaction power cuts: %llu I/O ops, %llu crash states checked\n",
	              (unsigned long long)n, (unsigned long long)states);
	assert_true(n >= 8);
	tu_rmrf(tmpl);
	tu_rmrf(work);
	tu_rmrf(img);
}

/* ---- (e) kill -9 ------------------------------------------------------------------------ */

#define KILL_LEN (1u << 20)

enum { MSG_PUT = 1, MSG_PUT_ACK, MSG_DEL, MSG_DEL_ACK, MSG_COMPACT, MSG_COMPACT_DONE };

struct kill_ctx {
	char dir[512];
	uint32_t round;
	struct tu_model model;
	int compacting; /* the child said it began a compaction and not that it ended */
	uint64_t compactions;
};

static void kill_child(void *arg, int fd)
{
	struct kill_ctx *k = arg;
	cs_options o = opts();
	o.compact_threshold = 1;
	cs_store *s;
	if (cs_store_open(k->dir, &o, &s) != 0)
		_exit(4);
	tu_send(fd, TU_MSG_OPEN, 0, 0);
	uint8_t *buf = malloc(KILL_LEN);
	for (uint64_t i = 1;; i++) {
		uint64_t seed = (uint64_t)k->round << 32 | i;
		size_t len = tu_len(seed, KILL_LEN);
		tu_fill(buf, len, seed);
		cs_cid cid;
		tu_send(fd, MSG_PUT, 0, seed);
		if (cs_block_put(s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			_exit(5);
		tu_send(fd, MSG_PUT_ACK, 0, seed);
		if (i % 3 == 0) {
			/* Delete the block put two steps ago: tombstones to carry. */
			uint64_t old = seed - 2;
			size_t olen = tu_len(old, KILL_LEN);
			tu_fill(buf, olen, old);
			cs_cid_compute(buf, olen, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
			tu_send(fd, MSG_DEL, 0, old);
			if (cs_block_delete(s, &cid) != 0)
				_exit(6);
			tu_send(fd, MSG_DEL_ACK, 0, old);
		}
		if (i % 5 == 0) {
			tu_send(fd, MSG_COMPACT, 0, 0);
			if (cs_compact(s, NULL) != 0)
				_exit(7);
			tu_send(fd, MSG_COMPACT_DONE, 0, 0);
		}
	}
}

static void kill_msg(void *arg, const struct tu_msg *m)
{
	struct kill_ctx *k = arg;
	switch (m->kind) {
	case MSG_PUT:
	case MSG_DEL:
		tu_model_note(&k->model, m->seed, 0, 0);
		break;
	case MSG_PUT_ACK:
		tu_model_note(&k->model, m->seed, 1, 1);
		break;
	case MSG_DEL_ACK:
		tu_model_note(&k->model, m->seed, 1, 0);
		break;
	case MSG_COMPACT:
		k->compacting = 1;
		break;
	case MSG_COMPACT_DONE:
		k->compacting = 0;
		k->compactions++;
		break;
	}
}

static void test_kill(void **state)
{
	struct kill_ctx *k = calloc(1, sizeof(*k));
	int rounds = SLOW_BUILD ? 4 : 10;
	uint64_t ambiguous = 0;
	assert_non_null(k);
	path_in(k->dir, sizeof(k->dir), "kill");
	tu_model_init(&k->model, 1u << 16);
	uint8_t *want = malloc(KILL_LEN), *got = malloc(KILL_LEN);
	uint64_t segs_max = 0, mid = 0;
	for (int r = 0; r < rounds; r++) {
		int status;
		k->round = (uint32_t)r + 1;
		k->compacting = 0;
		double run_for = 0.3 + 0.15 * (r % 5);
		if (tu_kill_round(kill_child, kill_msg, k, run_for, 1, &status) != 0)
			fail_msg("round %d: the child ended with status %#x, not by SIGKILL", r, status);
		mid += (uint64_t)k->compacting;
		cs_options o = opts();
		o.compact_threshold = 0;
		cs_store *s = open_store(k->dir, &o);
		const char *bad = tu_model_check(&k->model, s, KILL_LEN, NULL, want, got, &ambiguous);
		if (bad != NULL)
			fail_msg("round %d: %s", r, bad);
		cs_stat st;
		cs_store_stat(s, &st);
		if (st.segments > segs_max)
			segs_max = st.segments;
		assert_int_equal(cs_store_close(s), 0);
	}
	print_message("compaction kill test: %d rounds (%llu killed inside a compaction), %llu "
	              "compactions finished, at most %llu segments, %llu operations in flight at "
	              "a kill\n",
	              rounds, (unsigned long long)mid, (unsigned long long)k->compactions,
	              (unsigned long long)segs_max, (unsigned long long)ambiguous);
	if (!SLOW_BUILD && mid == 0)
		fail_msg("no kill landed inside a compaction in %d rounds", rounds);
	free(want);
	free(got);
	free(k->model.t);
	tu_rmrf(k->dir);
	free(k);
}

/* ---- (f) A full disk -------------------------------------------------------------------- */

/* The first call of `kind` (or, for FAULT_NKINDS, the new segment's header write) fails
 * with err during a compaction of the prepared store. */
static void full_once(const char *tmpl, enum fault_kind kind, int err)
{
	char dir[512], where[128];
	cs_options o = opts();
	o.compact_threshold = 1;
	cs_store *s;
	cs_compact_stat cst;

	snprintf(where, sizeof(where), "%s %s",
	         kind == FAULT_NKINDS ? "header write" : fault_kind_name[kind], cs_strerror(err));
	img_path(dir, sizeof(dir), "full");
	fault_copy_store(tmpl, dir);
	fault_reset();
	store_io_factory = fault_factory;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	if (kind == FAULT_NKINDS)
		fault_fail_header(err);
	else
		fault_fail_nth(kind, 1, err);
	int rc = cs_compact(s, &cst);
	if (rc != CS_EFULL || strstr(cs_errmsg(), cs_strerror(err)) == NULL)
		fail_msg("%s: compaction needing a new segment returned %s (\"%s\"), not CS_EFULL",
		         where, cs_strerror(rc), cs_errmsg());
	if (fault_injected() != 1)
		fail_msg("%s: %llu faults injected", where, (unsigned long long)fault_injected());
	fault_fail_nth(kind == FAULT_NKINDS ? FAULT_WRITE : kind, 0, 0);
	/* Nothing poisoned; everything readable; writes go on. */
	assert_int_equal(cs_store_sync(s), 0);
	for (int i = 0; i < NLIVE; i++)
		assert_int_equal(present(s, 100 + (uint64_t)i, prep_len(i)), 1);
	cs_cid extra = put(s, 999, 500);
	assert_int_equal(cs_block_delete(s, &extra), 0);
	assert_int_equal(cs_store_close(s), 0);
	store_io_factory = NULL;
	check_prepared(dir, where);
	/* Space again: a compaction finishes the job. */
	s = open_store(dir, &o);
	assert_int_equal(cs_compact(s, &cst), 0);
	assert_true(cst.segments_compacted >= 1);
	assert_int_equal(cs_store_close(s), 0);
	check_prepared(dir, where);
	assert_true(!has_seg(dir, 1) && !has_seg(dir, 2) && !has_seg(dir, 3));
	tu_rmrf(dir);
}

static void test_disk_full(void **state)
{
	char tmpl[512];
	img_path(tmpl, sizeof(tmpl), "full-template");
	prepare(tmpl);
	/* The segment compaction needs is created on demand here: a spare made at open, before
	 * the fault is armed, would leave the creation nothing to fail (W12 of wal.c). */
	store_wal_no_spare = 1;
	full_once(tmpl, FAULT_CREATE, -ENOSPC);
	full_once(tmpl, FAULT_CREATE, -EDQUOT);
	full_once(tmpl, FAULT_NKINDS, -ENOSPC);
	store_wal_no_spare = 0;
	tu_rmrf(tmpl);
	print_message("compaction on a full disk: ENOSPC/EDQUOT at the create, ENOSPC at the "
	              "header write gave CS_EFULL; nothing lost, no poison, finished later\n");
}

/* ---- (g) Writers beside compaction ----------------------------------------------------- */

#define W_THREADS 3
#define W_BLOCKS  256
#define W_NAMES   16
#define W_LEN     (200u << 10)

struct writer {
	cs_store *s;
	int t;
	atomic_int *stop;
	uint8_t present[W_BLOCKS];
	int16_t name_to[W_NAMES]; /* block index, -1: unset */
	uint8_t pin[W_BLOCKS];
	uint64_t ops, puts;
	double max_put; /* seconds, the longest put while the compactor ran */
	char err[256];
};

static uint64_t w_seed(int t, int i)
{
	return (uint64_t)(t + 1) << 40 | (uint64_t)i;
}

static size_t w_len(uint64_t seed)
{
	return tu_len(seed, W_LEN);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t *buf = malloc(W_LEN);
	uint64_t x = (uint64_t)w->t * 7919 + 1;
	memset(w->name_to, -1, sizeof(w->name_to));
	while (!atomic_load(w->stop) && w->err[0] == '\0') {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int i = (int)(x % W_BLOCKS), op = (int)((x >> 20) % 10);
		uint64_t seed = w_seed(w->t, i);
		size_t len = w_len(seed);
		cs_cid cid;
		tu_fill(buf, len, seed);
		int rc = cs_cid_compute(buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		if (op < 5) {
			double t0 = now_s();
			rc = cs_block_put(w->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
			double dt = now_s() - t0;
			if (dt > w->max_put)
				w->max_put = dt;
			w->present[i] = rc == 0 ? 1 : w->present[i];
			w->puts++;
		} else if (op < 8 && w->present[i] && !w->pin[i]) {
			rc = cs_block_delete(w->s, &cid);
			w->present[i] = rc == 0 ? 0 : w->present[i];
		} else if (op == 8 && w->present[i]) {
			char name[32];
			int n = (int)((x >> 30) % W_NAMES);
			snprintf(name, sizeof(name), "w%d-%d", w->t, n);
			if ((x >> 40) & 1) {
				rc = cs_name_set(w->s, name, &cid, len);
				if (rc == 0)
					w->name_to[n] = (int16_t)i;
			} else if (w->name_to[n] >= 0) {
				rc = cs_name_delete(w->s, name);
				if (rc == 0)
					w->name_to[n] = -1;
			}
		} else if (op == 9 && w->present[i]) {
			if (w->pin[i]) {
				rc = cs_pin_rm(w->s, &cid);
				if (rc == 0)
					w->pin[i] = 0;
			} else {
				rc = cs_pin_add(w->s, &cid, CS_PIN_DIRECT);
				if (rc == 0)
					w->pin[i] = 1;
			}
		}
		if (rc != 0)
			snprintf(w->err, sizeof(w->err), "op %d on block %d: %s: %s", op, i,
			         cs_strerror(rc), cs_errmsg());
		w->ops++;
	}
	free(buf);
	return NULL;
}

/* Checks s against every writer's model; returns a message or NULL. */
static const char *writers_check(cs_store *s, struct writer *w)
{
	static char msg[300];
	uint8_t *buf = malloc(W_LEN);
	uint64_t blocks = 0, names = 0, pins = 0;
	const char *bad = NULL;
	for (int t = 0; t < W_THREADS && bad == NULL; t++) {
		for (int i = 0; i < W_BLOCKS && bad == NULL; i++) {
			uint64_t seed = w_seed(t, i);
			size_t len = w_len(seed), n;
			cs_cid cid;
			tu_fill(g_want, len, seed);
			cs_cid_compute(g_want, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
			int rc = cs_block_get(s, &cid, buf, W_LEN, &n);
			int is = rc == 0 && n == len && memcmp(buf, g_want, len) == 0;
			if (is != w[t].present[i] || (rc != 0 && rc != CS_ENOTFOUND)) {
				snprintf(msg, sizeof(msg), "writer %d block %d: %s, model %s", t, i,
				         rc == 0 ? (is ? "present" : "wrong bytes") : cs_strerror(rc),
				         w[t].present[i] ? "present" : "absent");
				bad = msg;
			}
			if (bad == NULL && pinned(s, &cid) != w[t].pin[i]) {
				snprintf(msg, sizeof(msg), "writer %d block %d: pin disagrees", t, i);
				bad = msg;
			}
			blocks += w[t].present[i];
			pins += w[t].pin[i];
		}
		for (int n = 0; n < W_NAMES && bad == NULL; n++) {
			char name[32];
			snprintf(name, sizeof(name), "w%d-%d", t, n);
			cs_cid root;
			int rc = cs_name_get(s, name, &root, NULL, NULL);
			int want = w[t].name_to[n];
			if (want >= 0) {
				uint64_t seed = w_seed(t, want);
				cs_cid c = cid_of(seed, w_len(seed));
				if (rc != 0 || root.len != c.len || memcmp(root.bytes, c.bytes, c.len)) {
					snprintf(msg, sizeof(msg), "writer %d name %d lost or wrong", t, n);
					bad = msg;
				}
				names++;
			} else if (rc != CS_ENOTFOUND) {
				snprintf(msg, sizeof(msg), "writer %d name %d is back", t, n);
				bad = msg;
			}
		}
	}
	cs_stat st;
	cs_store_stat(s, &st);
	if (bad == NULL && (st.blocks != blocks || st.names != names || st.pins != pins)) {
		snprintf(msg, sizeof(msg), "store holds %llu blocks %llu names %llu pins, models %llu "
		         "%llu %llu", (unsigned long long)st.blocks, (unsigned long long)st.names,
		         (unsigned long long)st.pins, (unsigned long long)blocks,
		         (unsigned long long)names, (unsigned long long)pins);
		bad = msg;
	}
	free(buf);
	return bad;
}

static void test_writers(void **state)
{
	const char *env = getenv("CS_TEST_SECONDS");
	double seconds = env != NULL && atof(env) > 0 ? atof(env) : 4;
	cs_options o = opts();
	o.compact_threshold = 1; /* every segment but the head, every time */
	char dir[512];
	struct writer w[W_THREADS];
	pthread_t th[W_THREADS];
	atomic_int stop = 0;
	cs_compact_stat total = {0};
	uint64_t compactions = 0;

	img_path(dir, sizeof(dir), "writers");
	cs_store *s = open_store(dir, &o);
	for (int t = 0; t < W_THREADS; t++) {
		memset(&w[t], 0, sizeof(w[t]));
		w[t] = (struct writer){.s = s, .t = t, .stop = &stop};
		assert_int_equal(pthread_create(&th[t], NULL, writer_main, &w[t]), 0);
	}
	double t0 = now_s();
	/* Past the time given until a segment was compacted (the writers must first fill
	 * one, slow under TSan on a loaded machine), within a bound. */
	while (now_s() - t0 < seconds ||
	       (total.segments_compacted == 0 && now_s() - t0 < 20 * seconds)) {
		cs_compact_stat cst = {0};
		int rc = cs_compact(s, &cst);
		if (rc != 0)
			fail_msg("compaction beside writers: %s: %s", cs_strerror(rc), cs_errmsg());
		compactions++;
		total.segments_compacted += cst.segments_compacted;
		total.bytes_copied += cst.bytes_copied;
		total.seconds += cst.seconds;
		usleep(20000);
	}
	atomic_store(&stop, 1);
	uint64_t ops = 0, puts = 0;
	double max_put = 0;
	for (int t = 0; t < W_THREADS; t++) {
		pthread_join(th[t], NULL);
		if (w[t].err[0] != '\0')
			fail_msg("writer %d: %s", t, w[t].err);
		ops += w[t].ops;
		puts += w[t].puts;
		if (w[t].max_put > max_put)
			max_put = w[t].max_put;
	}
	const char *bad = writers_check(s, w);
	if (bad != NULL)
		fail_msg("live: %s", bad);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	s = open_store(dir, &o);
	bad = writers_check(s, w);
	if (bad != NULL)
		fail_msg("after reopen: %s", bad);
	verify_clean(s);
	assert_int_equal(cs_store_close(s), 0);
	print_message("compact concurrent: %d writers, %llu operations (%llu puts, the longest "
	              "%.1f ms) beside %llu compactions of %llu segments, %.1f MiB copied in "
	              "%.2f s (%.0f MB/s)\n",
	              W_THREADS, (unsigned long long)ops, (unsigned long long)puts,
	              max_put * 1e3, (unsigned long long)compactions,
	              (unsigned long long)total.segments_compacted,
	              total.bytes_copied / 1048576.0, total.seconds,
	              total.seconds > 0 ? total.bytes_copied / 1e6 / total.seconds : 0.0);
	assert_true(total.segments_compacted > 0);
	tu_rmrf(dir);
}

int main(void)
{
	g_want = malloc(CS_BLOCK_MAX);
	g_got = malloc(CS_BLOCK_MAX);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_carried),
	    cmocka_unit_test(test_missing_segment),
	    cmocka_unit_test(test_checkpoint_after),
	    cmocka_unit_test(test_checkpoint_after_fails),
	    cmocka_unit_test(test_disk_full),
	    cmocka_unit_test(test_power_cuts),
	    cmocka_unit_test(test_writers),
	    cmocka_unit_test(test_kill),
	    cmocka_unit_test(test_space),
	};
	if (getenv("CS_TEST_FILTER") != NULL)
		cmocka_set_test_filter(getenv("CS_TEST_FILTER"));
	int rc = cmocka_run_group_tests(tests, setup, teardown);
	free(g_want);
	free(g_got);
	return rc;
}
