/*
 * test_quota.c - the store's byte quota (cs_options.quota_bytes, quota_gc).
 *
 * Proves: a quota smaller than one block refuses that block with CS_EFULL and writes
 * nothing; a store filled to its quota refuses the next new block with CS_EFULL naming the
 * limit and the use, while reads, deletes, names and puts of present blocks go on, and a
 * delete makes room again; an add that meets the quota fails with nothing named; with
 * quota_gc a put at the quota collects the garbage and succeeds, keeping an add's own blocks
 * (its hold) and failing still when nothing is garbage; the quota is of the open (a store
 * reopened with a smaller one takes no new block until deletes bring it below); concurrent
 * writers, with and without collections, never take the live bytes past the quota (the
 * bound is 0: reservations are atomic), and with quota_gc no writer sees CS_EBUSY; a full
 * file system (segment creation failing with ENOSPC, through the fault backend) is CS_EFULL
 * too and releases the put's reservation; bad quota_gc values are CS_EINVAL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "fault_io.h"
#include "store.h"
#include "test_util.h"

static char dir[256];

static int setup(void **state)
{
	tu_tmpdir(dir, sizeof(dir), "quota");
	return 0;
}

static int teardown(void **state)
{
	store_io_factory = NULL;
	fault_reset();
	tu_rmrf(dir);
	return 0;
}

#define CHECK(call)                                                                                \
	do {                                                                                       \
		int rc_ = (call);                                                                  \
		if (rc_ != 0)                                                                      \
			fail_msg("%s: %s: %s", #call, cs_strerror(rc_), cs_errmsg());              \
	} while (0)

static cs_durability g_durability = CS_DURABLE_SYNC;

static cs_store *open_quota(uint64_t quota, int gc)
{
	cs_options o = tu_opts();
	cs_store *s = NULL;
	o.durability = g_durability;
	o.quota_bytes = quota;
	o.quota_gc = gc;
	CHECK(cs_store_open(dir, &o, &s));
	return s;
}

static cs_stat stat_of(cs_store *s)
{
	cs_stat st;
	CHECK(cs_store_stat(s, &st));
	return st;
}

/* A raw block of len seeded bytes. */
static int put_seeded(cs_store *s, uint64_t seed, size_t len, cs_cid *cid)
{
	static _Thread_local uint8_t buf[1u << 16];
	assert_true(len <= sizeof(buf));
	tu_fill(buf, len, seed);
	return cs_block_put(s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, cid);
}

/* Adds len seeded bytes as a file of 1 KiB chunks, named name (may be NULL). */
static int add_named(cs_store *s, uint64_t seed, size_t len, const char *name, cs_cid *root)
{
	cs_add_options o;
	cs_add *a;
	uint8_t *buf = malloc(len);
	int rc;

	assert_non_null(buf);
	tu_fill(buf, len, seed);
	cs_add_options_init(&o);
	o.chunk_size = 1024;
	o.hash_threads = 1;
	o.name = name;
	if ((rc = cs_add_begin(s, &o, &a)) == 0) {
		/* In pieces, so that the puts of the first leaves happen before the last. */
		for (size_t off = 0; rc == 0 && off < len; off += 4096)
			rc = cs_add_write(a, buf + off, len - off < 4096 ? len - off : 4096);
		if (rc == 0)
			rc = cs_add_finish(a, root, NULL);
		else
			cs_add_abort(a);
	}
	free(buf);
	return rc;
}

static int file_intact(cs_store *s, const cs_cid *root, uint64_t seed, size_t len)
{
	uint8_t *want = malloc(len), *got = malloc(len);
	size_t n = 0;
	tu_fill(want, len, seed);
	int rc = cs_cat(s, root, 0, got, len, &n, NULL);
	int ok = rc == 0 && n == len && memcmp(want, got, len) == 0;
	free(want);
	free(got);
	return ok;
}

/* ---- Single thread --------------------------------------------------------------------- */

static void test_quota_smaller_than_block(void **state)
{
	cs_store *s = open_quota(100, 0);
	cs_cid cid;

	cs_stat st0 = stat_of(s);
	assert_int_equal(put_seeded(s, 1, 101, &cid), CS_EFULL);
	assert_non_null(strstr(cs_errmsg(), "quota of 100 bytes"));
	assert_non_null(strstr(cs_errmsg(), "needs 101 more"));
	cs_stat st = stat_of(s);
	assert_int_equal(st.next_seq, st0.next_seq); /* nothing written */
	assert_int_equal(st.blocks, 0);
	assert_int_equal(st.quota_used, 0);
	assert_int_equal(st.quota_refused, 1);
	assert_int_equal(st.quota_bytes, 100);
	/* Exactly the quota fits; the same block again is deduplicated and free. */
	CHECK(put_seeded(s, 2, 100, &cid));
	CHECK(put_seeded(s, 2, 100, &cid));
	cs_cid other;
	assert_int_equal(put_seeded(s, 3, 1, &other), CS_EFULL);
	/* Even with a collection to run: the block alone is larger than the quota. */
	CHECK(cs_block_delete(s, &cid));
	CHECK(cs_store_close(s));
	s = open_quota(100, 1);
	assert_int_equal(put_seeded(s, 1, 101, &cid), CS_EFULL);
	assert_non_null(strstr(cs_errmsg(), "after a collection"));
	assert_int_equal(stat_of(s).blocks, 0);
	CHECK(cs_store_close(s));

	cs_options o = tu_opts();
	o.quota_gc = 2;
	assert_int_equal(cs_store_open(dir, &o, &s), CS_EINVAL);
}

static void test_quota_fill(void **state)
{
	const uint64_t quota = 64 * 1024;
	cs_store *s = open_quota(quota, 0);
	cs_cid cids[80], cid, root;
	int n = 0, rc;

	/* 1000-byte blocks: the 66th would cross 65536. */
	while ((rc = put_seeded(s, 100 + (uint64_t)n, 1000, &cids[n])) == 0)
		n++;
	assert_int_equal(rc, CS_EFULL);
	assert_int_equal(n, 65);
	assert_non_null(strstr(cs_errmsg(), "quota of 65536 bytes"));
	assert_non_null(strstr(cs_errmsg(), "take 65000 bytes"));
	cs_stat st = stat_of(s);
	assert_int_equal(st.live_bytes, 65000);
	assert_int_equal(st.quota_used, 65000);
	uint64_t seq = st.next_seq;

	/* Still usable: reads, present puts, names; nothing was written by the refusal. */
	uint8_t buf[1000];
	size_t len;
	for (int i = 0; i < n; i++) {
		CHECK(cs_block_get(s, &cids[i], buf, sizeof(buf), &len));
		assert_int_equal(len, 1000);
	}
	CHECK(put_seeded(s, 100, 1000, &cid));
	CHECK(cs_name_set(s, "first", &cids[0], 1000));
	assert_int_equal(stat_of(s).next_seq, seq + 1); /* the name only */

	/* An add that meets the quota fails, and its name is not set. */
	assert_int_equal(add_named(s, 7, 20000, "big", &root), CS_EFULL);
	assert_int_equal(cs_name_get(s, "big", NULL, NULL, NULL), CS_ENOTFOUND);
	assert_true(stat_of(s).live_bytes <= quota);

	/* A delete makes room: the refused block goes in now. */
	CHECK(cs_block_delete(s, &cids[1]));
	CHECK(put_seeded(s, 100 + (uint64_t)n, 1000, &cids[n]));
	st = stat_of(s);
	assert_true(st.live_bytes <= quota);
	assert_int_equal(st.quota_used, st.live_bytes);
	CHECK(cs_store_close(s));

	/* The quota is the open's: a smaller one refuses until deletes bring the store below;
	 * none refuses nothing. */
	s = open_quota(10000, 0);
	st = stat_of(s);
	assert_int_equal(st.quota_used, st.live_bytes);
	assert_true(st.live_bytes > 10000);
	assert_int_equal(put_seeded(s, 999, 10, &cid), CS_EFULL);
	CHECK(cs_block_get(s, &cids[0], buf, sizeof(buf), &len));
	CHECK(cs_name_delete(s, "first"));
	CHECK(cs_gc(s, NULL));
	assert_int_equal(stat_of(s).live_bytes, 0);
	CHECK(put_seeded(s, 999, 10, &cid));
	CHECK(cs_store_close(s));
	s = open_quota(0, 0);
	CHECK(add_named(s, 7, 20000, "big", &root));
	CHECK(cs_store_close(s));
}

static void test_quota_gc(void **state)
{
	const uint64_t quota = 64 * 1024;
	cs_store *s = open_quota(quota, 1);
	cs_cid junk[60], root, kept;

	/* 50 KiB of garbage and 8 KiB of a named file. */
	for (int i = 0; i < 50; i++)
		CHECK(put_seeded(s, 500 + (uint64_t)i, 1024, &junk[i]));
	CHECK(add_named(s, 41, 8 * 1024, "kept", &kept));
	/* An add of 30 KiB: its first leaves fit, then a put meets the quota and collects.
	 * The add's own blocks written so far stay (its hold), the garbage goes, and the add
	 * ends named. */
	CHECK(add_named(s, 42, 30 * 1024, "new", &root));
	cs_stat st = stat_of(s);
	assert_int_equal(st.quota_gcs, 1);
	assert_int_equal(st.last_gc.swept_blocks, 50);
	assert_true(file_intact(s, &root, 42, 30 * 1024));
	assert_true(file_intact(s, &kept, 41, 8 * 1024));
	for (int i = 0; i < 50; i++)
		assert_int_equal(cs_block_has(s, &junk[i]), 0);
	assert_true(st.live_bytes <= quota);
	CHECK(cs_name_get(s, "new", NULL, NULL, NULL));

	/* Fill with named blocks: once nothing is garbage the collection frees nothing and the
	 * put fails. */
	cs_cid cid;
	char name[32];
	int rc, i = 0;
	uint64_t gcs = st.quota_gcs;
	for (;; i++) {
		if ((rc = put_seeded(s, 900 + (uint64_t)i, 1024, &cid)) != 0)
			break;
		snprintf(name, sizeof(name), "fill-%d", i);
		CHECK(cs_name_set(s, name, &cid, 1024));
	}
	assert_int_equal(rc, CS_EFULL);
	assert_non_null(strstr(cs_errmsg(), "quota of 65536 bytes"));
	assert_non_null(strstr(cs_errmsg(), "after a collection that freed 0 bytes"));
	st = stat_of(s);
	assert_int_equal(st.quota_gcs, gcs + 1);
	assert_true(st.live_bytes <= quota && st.live_bytes + 1024 > quota);
	assert_true(file_intact(s, &root, 42, 30 * 1024));
	CHECK(cs_store_close(s));
}

/* ---- Concurrent writers ---------------------------------------------------------------- */

#define QWRITERS 4
#define QBLOCKS  64

static cs_store *g_store;
static uint64_t g_quota;
static atomic_int g_stop;
static atomic_ullong g_full, g_puts, g_samples, g_max_live;

struct qwriter {
	int id;
	int gc; /* some writers root nothing: everything they put is garbage */
	char err[256];
};

static void *qwriter_main(void *arg)
{
	struct qwriter *w = arg;
	cs_cid mine[QBLOCKS];
	int have[QBLOCKS] = {0};
	uint64_t seq = 0;

	while (!atomic_load(&g_stop)) {
		int i = (int)(seq % QBLOCKS);
		uint64_t seed = (uint64_t)w->id << 40 | seq++;
		if (have[i] && !w->gc) {
			int rc = cs_block_delete(g_store, &mine[i]);
			/* A collection on another thread may have taken it. */
			if (rc != 0 && rc != CS_ENOTFOUND) {
				snprintf(w->err, sizeof(w->err), "delete: %s: %s", cs_strerror(rc),
				         cs_errmsg());
				return NULL;
			}
			have[i] = 0;
		}
		int rc = put_seeded(g_store, seed, tu_len(seed, 8192), &mine[i]);
		if (rc == CS_EFULL) {
			atomic_fetch_add(&g_full, 1);
		} else if (rc != 0) {
			snprintf(w->err, sizeof(w->err), "put: %s: %s", cs_strerror(rc), cs_errmsg());
			return NULL;
		} else {
			have[i] = 1;
			atomic_fetch_add(&g_puts, 1);
		}
	}
	return NULL;
}

/* Samples the live bytes while the writers run: they never pass the quota. */
static void *sampler_main(void *arg)
{
	while (!atomic_load(&g_stop)) {
		cs_stat st;
		cs_store_stat(g_store, &st);
		if (st.live_bytes > atomic_load(&g_max_live))
			atomic_store(&g_max_live, st.live_bytes);
		if (st.quota_used > g_quota)
			atomic_store(&g_max_live, st.quota_used);
		atomic_fetch_add(&g_samples, 1);
		usleep(20);
	}
	return NULL;
}

static void run_concurrent(int gc)
{
	struct qwriter w[QWRITERS];
	pthread_t th[QWRITERS + 1];
	double seconds = getenv("CS_TEST_SECONDS") ? atof(getenv("CS_TEST_SECONDS")) : 2.0;

	g_quota = 256 * 1024;
	g_durability = CS_DURABLE_NONE; /* many more puts, so more races at the limit */
	g_store = open_quota(g_quota, gc);
	g_durability = CS_DURABLE_SYNC;
	atomic_store(&g_stop, 0);
	atomic_store(&g_full, 0);
	atomic_store(&g_puts, 0);
	atomic_store(&g_samples, 0);
	atomic_store(&g_max_live, 0);
	for (int i = 0; i < QWRITERS; i++) {
		w[i] = (struct qwriter){.id = i + 1, .gc = gc && i % 2 == 0};
		assert_int_equal(pthread_create(&th[i], NULL, qwriter_main, &w[i]), 0);
	}
	assert_int_equal(pthread_create(&th[QWRITERS], NULL, sampler_main, NULL), 0);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&g_stop, 1);
	for (int i = 0; i <= QWRITERS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < QWRITERS; i++)
		if (w[i].err[0] != '\0')
			fail_msg("writer %d: %s", w[i].id, w[i].err);
	cs_stat st = stat_of(g_store);
	print_message("quota concurrent (gc %d): %llu puts, %llu refused, %llu collections, "
	              "%llu samples, most live %llu of %llu\n",
	              gc, (unsigned long long)atomic_load(&g_puts),
	              (unsigned long long)atomic_load(&g_full), (unsigned long long)st.quota_gcs,
	              (unsigned long long)atomic_load(&g_samples),
	              (unsigned long long)atomic_load(&g_max_live), (unsigned long long)g_quota);
	assert_true(atomic_load(&g_max_live) <= g_quota);
	assert_true(st.live_bytes <= g_quota);
	assert_int_equal(st.quota_used, st.live_bytes);
	/* The quota was met: refusals without collections; with them, collections (garbage
	 * is put all the time, so a collection always makes room). */
	if (gc)
		assert_true(st.quota_gcs > 0);
	else
		assert_true(atomic_load(&g_full) > 0);
	CHECK(cs_store_close(g_store));
	/* The reopened store agrees. */
	cs_store *s = open_quota(g_quota, 0);
	cs_stat st2 = stat_of(s);
	assert_int_equal(st2.live_bytes, st.live_bytes);
	assert_int_equal(st2.quota_used, st.live_bytes);
	CHECK(cs_store_close(s));
}

static void test_quota_concurrent(void **state)
{
	run_concurrent(0);
}

static void test_quota_concurrent_gc(void **state)
{
	run_concurrent(1);
}

/* ---- A full file system ---------------------------------------------------------------- */

static void test_quota_enospc(void **state)
{
	static uint8_t big[1u << 20];
	cs_options o = tu_opts();
	cs_store *s;
	cs_cid cid;
	int i, rc;

	o.quota_bytes = 64u << 20;
	o.quota_gc = 1;
	fault_reset();
	store_io_factory = fault_factory;
	store_wal_no_spare = 1; /* segment 2 is made when a put needs it, not ahead (W12) */
	CHECK(cs_store_open(dir, &o, &s));
	/* 1 MiB blocks until the next one needs segment 2, whose creation then fails. */
	for (i = 0; i < 15; i++) {
		tu_fill(big, sizeof(big), 7000 + (uint64_t)i);
		CHECK(cs_block_put(s, big, sizeof(big), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid));
	}
	fault_fail_nth(FAULT_CREATE, 1, -ENOSPC);
	tu_fill(big, sizeof(big), 7000 + (uint64_t)i);
	rc = cs_block_put(s, big, sizeof(big), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
	assert_int_equal(rc, CS_EFULL);
	assert_non_null(strstr(cs_errmsg(), "cannot create segment"));
	cs_stat st = stat_of(s);
	assert_int_equal(st.quota_used, st.live_bytes); /* the reservation was released */
	assert_int_equal(st.live_bytes, 15u << 20);
	assert_int_equal(st.quota_gcs, 0); /* a full disk starts no collection */
	/* Once there is space, the same put goes in. */
	CHECK(cs_block_put(s, big, sizeof(big), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid));
	assert_int_equal(stat_of(s).quota_used, 16u << 20);
	CHECK(cs_store_close(s));
	store_io_factory = NULL;
	store_wal_no_spare = 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_quota_smaller_than_block, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_fill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_gc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_concurrent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_concurrent_gc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_quota_enospc, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
