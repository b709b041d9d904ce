/*
 * test_checkpoint.c - checkpoints: open from one equals a full replay, and every checkpoint
 * that cannot be trusted is refused for a full replay, with a warning.
 *
 * Proves, comparing the block index, the pins and the names entry by entry (log positions
 * included) with the tables a full replay of the same log builds:
 *   - a store reopened from the checkpoint its close wrote equals the full replay, replays no
 *     record, and keeps the last GC's figures, whether the file is mapped or read;
 *   - puts, deletes, name sets and removals, pin adds and removals after a checkpoint are
 *     replayed over it (a crash image taken while the store is open);
 *   - so does a checkpoint whose tables changed between its start and end marks (a test
 *     hook makes every kind of change there), with more changes after it;
 *   - a checkpoint with any byte of its header or of any section's header flipped, a byte of
 *     any section's payload flipped, or cut at any of many points, is refused with a warning
 *     and the open equals the full replay; so is one from another store, one newer than the
 *     log it claims (its last record missing, its start segment missing);
 *   - the worked example of docs/FORMAT.md 12.6 is what the encoder writes and decodes to its
 *     stated fields; a section type unknown to this version is refused, unless skippable;
 *   - a write of the file that meets a full disk fails with CS_EFULL;
 *   - a checkpoint.tmp left by a crash before the rename is removed and never read; one that
 *     appears while the store is open is replaced by the next checkpoint;
 *   - damage in a record the checkpoint covers does not fail the open (the record is not
 *     read) but is found by get and verify;
 *   - an open whose checkpoint covers the whole log syncs nothing; one that finds records
 *     past the checkpoint's end mark, or has no checkpoint, syncs the log;
 *   - a checkpoint of blocks and pins spread over several segments gives each segment the
 *     live bytes a full replay gives it, and one entry past its own segment's end (but not
 *     the end of the segment the entry before it lies in) is refused;
 *   - a block table large enough to load in two parts on two threads equals the full replay,
 *     and damage in either part is refused;
 *   - writers running while background checkpoints and cs_checkpoint calls are taken leave
 *     a store whose reopen equals the full replay; and kill -9 of such a process at random
 *     moments loses no acknowledged put or delete.
 * CS_TEST_SMALL=1 (the TSan stage) samples fewer damaged bytes and runs fewer kill rounds;
 * CS_TEST_SECONDS sets the writers' run, CS_KILL_ROUNDS the rounds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include <sys/mman.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "btree.h"
#include "checkpoint.h"
#include "endian.h"
#include "cid.h"
#include "names.h"
#include "store.h"
#include "test_util.h"
#include "fault_io.h"

TU_TSAN_REPORT_AT_ONCE();

static char dir[256], copy[300];

#define CHECK(call)                                                                                \
	do {                                                                                       \
		int rc_ = (call);                                                                  \
		if (rc_ != 0)                                                                      \
			fail_msg("%s: %s: %s", #call, cs_strerror(rc_), cs_errmsg());              \
	} while (0)

static int setup(void **state)
{
	tu_tmpdir(dir, sizeof(dir), "ckpt");
	snprintf(copy, sizeof(copy), "%s.copy", dir);
	return 0;
}

static int teardown(void **state)
{
	tu_rmrf(dir);
	tu_rmrf(copy);
	return 0;
}

/* The warnings of the last open, for the tests that expect a refusal. */
static char warned[2048];

static void capture(void *ctx, int level, const char *msg)
{
	if (level == CS_LOG_WARN && strlen(warned) + strlen(msg) + 2 < sizeof(warned)) {
		strcat(warned, msg);
		strcat(warned, "\n");
	}
}

static cs_options opts(void)
{
	cs_options o = tu_opts();
	o.log = capture;
	o.checkpoint_bytes = 0; /* the tests say when */
	return o;
}

static cs_store *open_at(const char *d)
{
	cs_options o = opts();
	cs_store *s = NULL;
	warned[0] = '\0';
	CHECK(cs_store_open(d, &o, &s));
	return s;
}

/* ---- The tables, entry by entry ------------------------------------------------------- */

struct entries {
	size_t n;
	uint8_t (*keys)[CS_KEY_MAX];
	struct idx_val *vals;
};

struct tables {
	struct entries blocks, pins;
	size_t nnames;
	struct name_entry *names;
	uint32_t nlive;
	struct seg_live *live; /* C1 of compact.c */
	struct rec_drops drops;
	cs_stat st;
};

static void copy_idx(struct idx *t, struct entries *e)
{
	e->n = idx_count(t);
	e->keys = malloc((e->n + 1) * CS_KEY_MAX);
	e->vals = malloc((e->n + 1) * sizeof(*e->vals));
	assert_int_equal(idx_next_n(t, NULL, e->keys, e->vals, (int)e->n), (int)e->n);
	assert_int_equal(idx_check(t), 0);
}

static void snap(cs_store *s, struct tables *t)
{
	copy_idx(s->idx, &t->blocks);
	copy_idx(s->pins, &t->pins);
	t->nnames = names_count(s->names);
	t->names = malloc((t->nnames + 1) * sizeof(*t->names));
	assert_int_equal(names_next(s->names, NULL, 0, t->names, (int)t->nnames + 1),
	                 (int)t->nnames);
	t->nlive = s->nlive;
	t->live = malloc((s->nlive + 1) * sizeof(*t->live));
	memcpy(t->live, s->live, s->nlive * sizeof(*t->live));
	t->drops = (struct rec_drops){0};
	for (uint32_t i = 0; i < s->drops.n; i++)
		CHECK(rec_drops_add(&t->drops, &s->drops.v[i]));
	CHECK(cs_store_stat(s, &t->st));
	uint64_t checked, failed;
	CHECK(cs_store_verify(s, NULL, NULL, &checked, &failed));
}

static void free_tables(struct tables *t)
{
	free(t->blocks.keys);
	free(t->blocks.vals);
	free(t->pins.keys);
	free(t->pins.vals);
	free(t->names);
	free(t->live);
	rec_drops_free(&t->drops);
}

static void same_entries(const struct entries *a, const struct entries *b, const char *what)
{
	if (a->n != b->n)
		fail_msg("%s: %zu entries against %zu", what, a->n, b->n);
	for (size_t i = 0; i < a->n; i++)
		if (memcmp(a->keys[i], b->keys[i], CS_KEY_MAX) != 0 ||
		    memcmp(&a->vals[i], &b->vals[i], sizeof(a->vals[i])) != 0)
			fail_msg("%s: entry %zu differs", what, i);
}

static void same_tables(const struct tables *a, const struct tables *b)
{
	same_entries(&a->blocks, &b->blocks, "blocks");
	same_entries(&a->pins, &b->pins, "pins");
	assert_int_equal(a->nnames, b->nnames);
	for (size_t i = 0; i < a->nnames; i++) {
		const struct name_entry *x = &a->names[i], *y = &b->names[i];
		assert_int_equal(x->len, y->len);
		assert_memory_equal(x->name, y->name, x->len);
		assert_int_equal(x->v.root.len, y->v.root.len);
		assert_memory_equal(x->v.root.bytes, y->v.root.bytes, x->v.root.len);
		assert_int_equal(x->v.size, y->v.size);
		assert_int_equal(x->v.time_ns, y->v.time_ns);
		assert_int_equal(x->v.seg, y->v.seg);
		assert_int_equal(x->v.off, y->v.off);
	}
	/* A segment whose records all went may keep a slot of 0 bytes on one side only. */
	for (uint32_t i = 0, j = 0; i < a->nlive || j < b->nlive;) {
		if (i < a->nlive && a->live[i].bytes == 0) {
			i++;
		} else if (j < b->nlive && b->live[j].bytes == 0) {
			j++;
		} else {
			if (i == a->nlive || j == b->nlive || a->live[i].id != b->live[j].id ||
			    a->live[i].bytes != b->live[j].bytes)
				fail_msg("live bytes per segment differ at slot %u/%u", i, j);
			i++, j++;
		}
	}
	assert_int_equal(a->drops.n, b->drops.n);
	if (a->drops.n > 0)
		assert_memory_equal(a->drops.v, b->drops.v, a->drops.n * sizeof(*a->drops.v));
	assert_int_equal(a->st.blocks, b->st.blocks);
	assert_int_equal(a->st.live_bytes, b->st.live_bytes);
	assert_int_equal(a->st.names, b->st.names);
	assert_int_equal(a->st.logical_bytes, b->st.logical_bytes);
	assert_int_equal(a->st.pins, b->st.pins);
	assert_int_equal(a->st.pins_recursive, b->st.pins_recursive);
	assert_int_equal(a->st.next_seq, b->st.next_seq);
	assert_int_equal(a->st.log_bytes, b->st.log_bytes);
}

/* The tables a full replay of d's log builds (on a copy without the checkpoint). */
static void full_replay(const char *d, struct tables *t)
{
	tu_copy_dir(d, copy);
	tu_drop_checkpoint(copy);
	cs_store *s = open_at(copy);
	snap(s, t);
	assert_int_equal(t->st.checkpoint_seq, 0);
	assert_true(t->st.next_seq == 1 || t->st.replayed_records > 0);
	/* Closing without a checkpoint: the copy is thrown away anyway. */
	CHECK(cs_store_close(s));
	tu_rmrf(copy);
}

/* Opens d from its checkpoint, replaying nothing and warning of nothing, and finds the
 * tables want. */
static void reopen_matches(const char *d, const struct tables *want)
{
	struct tables a;
	cs_store *s = open_at(d);
	snap(s, &a);
	assert_int_equal(a.st.replayed_records, 0);
	assert_string_equal(warned, "");
	CHECK(cs_store_close(s));
	same_tables(&a, want);
	free_tables(&a);
}

/* ---- Building a store ----------------------------------------------------------------- */

static void put_seeded(cs_store *s, uint64_t seed, size_t max, cs_cid *cid)
{
	uint8_t buf[4096];
	size_t len = tu_len(seed, max < sizeof(buf) ? max : sizeof(buf));
	tu_fill(buf, len, seed);
	CHECK(cs_block_put(s, buf, len, CS_CODEC_RAW, seed % 3 ? CS_HASH_SHA2_256
	                                                      : CS_HASH_BLAKE2B_256, cid));
}

static void add_file(cs_store *s, uint64_t seed, size_t len, cs_cid *root)
{
	cs_add_options o;
	cs_add *a;
	uint8_t *buf = malloc(len);

	cs_add_options_init(&o);
	o.chunk_size = 1024;
	tu_fill(buf, len, seed);
	CHECK(cs_add_begin(s, &o, &a));
	CHECK(cs_add_write(a, buf, len));
	CHECK(cs_add_finish(a, root, NULL));
	free(buf);
}

/* Blocks (some deleted), files named and pinned (some names and pins removed), one GC. */
static void populate(cs_store *s, uint64_t seed, int n)
{
	cs_cid cids[512], root;
	char name[64];

	assert_true(n <= 512);
	for (int i = 0; i < n; i++)
		put_seeded(s, seed + (uint64_t)i, 4096, &cids[i]);
	for (int i = 0; i < n; i += 7)
		CHECK(cs_block_delete(s, &cids[i]));
	for (int i = 0; i < 6; i++) {
		add_file(s, seed * 31 + (uint64_t)i, 20000 + 3000 * (size_t)i, &root);
		snprintf(name, sizeof(name), "dir/file-%llu-%d", (unsigned long long)seed, i);
		CHECK(cs_name_set(s, name, &root, 20000 + 3000 * (uint64_t)i));
		if (i % 2 == 0)
			CHECK(cs_pin_add(s, &root, CS_PIN_RECURSIVE));
		if (i == 4)
			CHECK(cs_pin_rm(s, &root));
		if (i == 3)
			CHECK(cs_name_delete(s, name));
	}
	CHECK(cs_pin_add(s, &cids[1], CS_PIN_DIRECT));
	CHECK(cs_pin_add(s, &cids[2], CS_PIN_DIRECT));
	CHECK(cs_pin_rm(s, &cids[2]));
}

/* A store with a checkpoint that covers its whole log (its close wrote it). */
static void build(int n)
{
	cs_store *s = open_at(dir);
	populate(s, 1000, n);
	cs_gc_stat g;
	CHECK(cs_gc(s, &g));
	assert_true(g.swept_blocks > 0);
	CHECK(cs_store_close(s));
}

/* ---- Tests ------------------------------------------------------------------------------- */

/* Open from the checkpoint equals the full replay, replays nothing, and keeps the GC stats. */
static void test_reopen_equals_full_replay(void **state)
{
	struct tables a, b;

	build(300);
	cs_store *s = open_at(dir);
	snap(s, &a);
	assert_int_equal(a.st.replayed_records, 0);
	assert_int_equal(a.st.checkpoint_seq, a.st.next_seq);
	assert_true(a.st.checkpoint_time_ns > 0);
	assert_true(a.st.last_gc.swept_blocks > 0);
	assert_true(a.st.last_gc_time_ns > 0);
	assert_true(a.st.pins > 0 && a.st.names > 0);
	assert_string_equal(warned, "");
	CHECK(cs_store_close(s));
	full_replay(dir, &b);
	same_tables(&a, &b);
	assert_int_equal(b.st.last_gc_time_ns, 0); /* only the checkpoint keeps it */
	free_tables(&a);
	/* The same where the file is read rather than mapped (kernels before 5.14). */
	ckpt_test_no_map = 1;
	reopen_matches(dir, &b);
	ckpt_test_no_map = 0;
	free_tables(&b);
}

/* A store opened from a checkpoint keeps that file's leaves as its block index (C5 of
 * engine/ckpt.c) after a new checkpoint replaced the file, through puts, deletes, a GC that
 * repacks the tree and gives pages back, and a second replacement (whose old file is freed as
 * usual, C6); the tables equal a full replay's throughout, and so does the next open. */
static void test_leaves_outlive_their_file(void **state)
{
	struct tables a, b;

	build(300);
	cs_store *s = open_at(dir);
	CHECK(cs_checkpoint(s)); /* the file the leaves came from loses its name */
	populate(s, 3000, 400);
	cs_gc_stat g;
	CHECK(cs_gc(s, &g));
	assert_true(g.swept_blocks > 0);
	CHECK(cs_checkpoint(s));
	populate(s, 5000, 100);
	snap(s, &a); /* cs_store_verify() reads every block through the index */
	CHECK(cs_store_close(s));
	full_replay(dir, &b);
	same_tables(&a, &b);
	free_tables(&a);
	reopen_matches(dir, &b);
	free_tables(&b);
}

/* Everything after a checkpoint is replayed over it: a crash image taken with the store open
 * (sync mode: what returned is on disk) opens from its checkpoint to the full replay. */
static void test_changes_after_checkpoint(void **state)
{
	struct tables a, b;
	cs_cid cids[64], root;

	cs_store *s = open_at(dir);
	populate(s, 1, 100);
	CHECK(cs_checkpoint(s));
	cs_stat st;
	CHECK(cs_store_stat(s, &st));
	uint64_t at = st.checkpoint_seq;
	assert_int_equal(at, st.next_seq);
	for (int i = 0; i < 64; i++)
		put_seeded(s, 5000 + (uint64_t)i, 4096, &cids[i]);
	for (int i = 0; i < 64; i += 3)
		CHECK(cs_block_delete(s, &cids[i]));
	CHECK(cs_name_delete(s, "dir/file-1-0"));
	add_file(s, 77, 30000, &root);
	CHECK(cs_name_set(s, "dir/file-1-1", &root, 30000)); /* replaces */
	CHECK(cs_name_set(s, "new", &root, 30000));
	CHECK(cs_pin_add(s, &root, CS_PIN_RECURSIVE));
	cs_cid pinned;
	put_seeded(s, 2, 4096, &pinned); /* present already: populate pinned it directly */
	CHECK(cs_pin_rm(s, &pinned));
	/* The first pass of the loop below takes an image here; the second after more
	 * deletes of blocks the checkpoint holds. */
	for (int pass = 0; pass < 2; pass++) {
		char image[320];
		snprintf(image, sizeof(image), "%s.img", dir);
		tu_copy_dir(dir, image);
		cs_store *t = open_at(image);
		snap(t, &a);
		assert_true(a.st.replayed_records > 0);
		assert_int_equal(a.st.checkpoint_seq, at);
		assert_string_equal(warned, "");
		CHECK(cs_store_close(t));
		full_replay(image, &b);
		same_tables(&a, &b);
		free_tables(&a);
		free_tables(&b);
		tu_rmrf(image);
		struct entries e;
		copy_idx(s->idx, &e);
		for (size_t i = 0; i < e.n; i += 5) {
			cs_cid c;
			assert_int_equal(cid_from_key(e.keys[i], e.vals[i].codec, &c), 0);
			int rc = cs_block_delete(s, &c);
			assert_true(rc == 0 || rc == CS_EPINNED);
		}
		free(e.keys);
		free(e.vals);
	}
	CHECK(cs_store_close(s));
}

/* Writes bytes [0, len) of buf as the store's checkpoint. */
static void write_ckpt(const char *d, const uint8_t *buf, size_t len)
{
	char path[320];
	snprintf(path, sizeof(path), "%s/checkpoint", d);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static uint8_t *read_ckpt(const char *d, size_t *len)
{
	char path[320];
	struct stat st;
	snprintf(path, sizeof(path), "%s/checkpoint", d);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0 && fstat(fd, &st) == 0);
	*len = (size_t)st.st_size;
	uint8_t *buf = malloc(*len);
	assert_int_equal(read(fd, buf, *len), (ssize_t)*len);
	close(fd);
	return buf;
}

/* What the hook does between a checkpoint's marks: every kind of change, some to keys the
 * copy has yet to reach, some undone again, so the copy holds states the start mark never
 * saw and replay re-applies records to keys the copy already has. */
static cs_cid hook_cids[40];

static void between_marks(cs_store *s)
{
	cs_cid root, pinned;

	ckpt_test_hook = NULL; /* once */
	for (int i = 0; i < 40; i++)
		put_seeded(s, 8000 + (uint64_t)i, 4096, &hook_cids[i]);
	for (int i = 0; i < 40; i += 4)
		CHECK(cs_block_delete(s, &hook_cids[i]));
	put_seeded(s, 8000, 4096, &hook_cids[0]); /* back, at a new position */
	put_seeded(s, 1005, 4096, &pinned);       /* a block populate() put */
	CHECK(cs_block_delete(s, &pinned));
	put_seeded(s, 1005, 4096, &pinned);
	CHECK(cs_name_delete(s, "dir/file-1000-0"));
	add_file(s, 4242, 25000, &root);
	CHECK(cs_name_set(s, "dir/file-1000-1", &root, 25000));
	CHECK(cs_pin_add(s, &root, CS_PIN_RECURSIVE));
	CHECK(cs_pin_add(s, &hook_cids[1], CS_PIN_DIRECT));
	CHECK(cs_pin_add(s, &hook_cids[1], CS_PIN_RECURSIVE)); /* made recursive */
	put_seeded(s, 1001, 4096, &pinned);
	CHECK(cs_pin_rm(s, &pinned)); /* populate()'s direct pin */
}

/* A checkpoint whose tables changed between its marks (start < end), with more changes
 * after it: its crash image opens to the full replay. */
static void test_fuzzy_checkpoint(void **state)
{
	struct tables a, b;
	char image[320];

	cs_store *s = open_at(dir);
	populate(s, 1000, 200);
	ckpt_test_hook = between_marks;
	CHECK(cs_checkpoint(s));
	assert_null(ckpt_test_hook);
	for (int i = 2; i < 40; i += 3)
		if (i % 4 != 0) /* present: not deleted in the hook, nor pinned */
			CHECK(cs_block_delete(s, &hook_cids[i]));
	CHECK(cs_name_delete(s, "dir/file-1000-1"));
	snprintf(image, sizeof(image), "%s.img", dir);
	tu_copy_dir(dir, image);
	CHECK(cs_store_close(s));

	size_t len;
	uint8_t *ck = read_ckpt(image, &len);
	struct ckpt c;
	CHECK(ckpt_decode(ck, len, &c));
	assert_true(c.h.start_seq < c.h.end_seq);
	free(ck);
	cs_store *t = open_at(image);
	snap(t, &a);
	assert_string_equal(warned, "");
	assert_int_equal(a.st.checkpoint_seq, c.h.start_seq);
	assert_true(a.st.replayed_records > c.h.end_seq - c.h.start_seq);
	CHECK(cs_store_close(t));
	full_replay(image, &b);
	same_tables(&a, &b);
	free_tables(&a);
	free_tables(&b);
	tu_rmrf(image);
}

/* Opens d with the given checkpoint bytes in place and expects a refusal (a warning naming
 * the fallback, a full replay) to the tables want. The open's close writes a good checkpoint
 * again, which the caller overwrites for the next case. */
static void expect_refused(const char *d, const uint8_t *ck, size_t len, const struct tables *want,
                           const char *why)
{
	struct tables got;
	write_ckpt(d, ck, len);
	cs_store *s = open_at(d);
	if (strstr(warned, "replaying the whole log") == NULL)
		fail_msg("%s: no fallback warning (warnings: '%s')", why, warned);
	snap(s, &got);
	assert_int_equal(got.st.replayed_records, want->st.replayed_records);
	same_tables(&got, want);
	free_tables(&got);
	CHECK(cs_store_close(s));
}

/* Recomputes the checksums of every section and of the header, as the writer made them. */
static void reseal(uint8_t *p, size_t len)
{
	assert_true(ckpt_reseal(p, len) >= 0);
}

/* Damage anywhere in the checkpoint is refused, never half used. */
static void test_corrupt_checkpoint(void **state)
{
	struct tables want;
	size_t len;
	char why[64];

	build(120);
	full_replay(dir, &want);
	uint8_t *good = read_ckpt(dir, &len), *bad = malloc(len);
	struct ckpt c;
	CHECK(ckpt_decode(good, len, &c));
	int cases = 0;
	/* CS_TEST_SMALL (the TSan stage, where each open is slow): every fourth header byte. */
	size_t step = getenv("CS_TEST_SMALL") != NULL ? 4 : 1;

	/* Every byte of the file header. */
	for (size_t off = 0; off < CKPT_HEADER; off += step, cases++) {
		memcpy(bad, good, len);
		bad[off] ^= 0x20;
		snprintf(why, sizeof(why), "header byte %zu", off);
		expect_refused(dir, bad, len, &want, why);
	}
	/* Every byte of each section's header, and payload bytes spread over each. */
	for (int t = 1; t <= CKPT_SEC_KNOWN; t++) {
		size_t hdr = (size_t)(c.sec[t].data - good) - CKPT_SEC_HEADER;
		for (size_t k = 0; k < CKPT_SEC_HEADER; k += step, cases++) {
			memcpy(bad, good, len);
			bad[hdr + k] ^= 0x01;
			snprintf(why, sizeof(why), "section %d header byte %zu", t, k);
			expect_refused(dir, bad, len, &want, why);
		}
		size_t plen = (size_t)c.sec[t].len;
		for (size_t k = 0; k < plen; k += 1 + plen / (12 / step), cases++) {
			memcpy(bad, good, len);
			bad[hdr + CKPT_SEC_HEADER + k] ^= 0x80;
			snprintf(why, sizeof(why), "section %d payload byte %zu", t, k);
			expect_refused(dir, bad, len, &want, why);
		}
	}
	/* Cut short at many points, and grown by a byte. */
	for (size_t cut = 0; cut < len; cut += cut < 200 ? 13 : len / 16, cases++) {
		snprintf(why, sizeof(why), "cut at %zu", cut);
		expect_refused(dir, good, cut, &want, why);
	}
	memcpy(bad, good, len);
	bad = realloc(bad, len + 1);
	bad[len] = 0;
	expect_refused(dir, bad, len + 1, &want, "one byte more");
	/* Resealed, so that the checks behind the checksums see them (K5 of checkpoint.c):
	 * BLOCKS' padding, its count against what its leaves can hold and against what they
	 * hold, a leaf's header, a leaf's bytes past its entries. */
	const struct ckpt_section *sb = &c.sec[CKPT_SEC_BLOCKS];
	size_t data = (size_t)(sb->data - good), leaf0 = (size_t)(sb->leaves - good);
	assert_true(leaf0 > data && sb->nleaves >= 1);
	const size_t count_at = data - CKPT_SEC_HEADER + 8;
	const struct {
		size_t at;
		uint64_t count; /* written at count_at, or 0: flip a bit at at */
		const char *msg;
	} sealed[] = {
	    {data + 5, 0, "padding is not zero"},
	    {0, (uint64_t)sb->nleaves * IDX_LEAF_CAP + 1, "count disagrees with its leaves"},
	    {0, sb->count - 1, "the leaves hold"},
	    {leaf0 + 2, 0, "not a leaf's header"},
	    {leaf0 + IDX_NODE_BYTES - 1, 0, "bytes past them"},
	};
	for (size_t k = 0; k < sizeof(sealed) / sizeof(sealed[0]); k++, cases++) {
		memcpy(bad, good, len);
		if (sealed[k].count != 0)
			put_le64(bad + count_at, sealed[k].count);
		else
			bad[sealed[k].at] ^= 0x02;
		reseal(bad, len);
		expect_refused(dir, bad, len, &want, sealed[k].msg);
		if (strstr(warned, sealed[k].msg) == NULL)
			fail_msg("expected \"%s\" in the warning \"%s\"", sealed[k].msg, warned);
	}
	print_message("corrupt checkpoints refused: %d\n", cases);

	/* A checkpoint of another store: valid, but not this log's. */
	char other[300];
	snprintf(other, sizeof(other), "%s.other", dir);
	cs_store *s = open_at(other); /* a new store: CS_OPEN_CREATE */
	cs_cid cid;
	put_seeded(s, 1, 100, &cid);
	CHECK(cs_store_close(s));
	size_t olen;
	uint8_t *foreign = read_ckpt(other, &olen);
	expect_refused(dir, foreign, olen, &want, "another store's checkpoint");
	assert_non_null(strstr(warned, "another store"));
	tu_rmrf(other);

	/* The good one is used again. */
	write_ckpt(dir, good, len);
	s = open_at(dir);
	assert_string_equal(warned, "");
	CHECK(cs_store_stat(s, &want.st));
	assert_int_equal(want.st.replayed_records, 0);
	CHECK(cs_store_close(s));
	free_tables(&want);
	free(foreign);
	free(good);
	free(bad);
}

/* A checkpoint newer than the log it claims: the log lost its last records, or the segment
 * the checkpoint starts in. Either way, a full replay of what is there. */
static void test_checkpoint_newer_than_log(void **state)
{
	struct tables want;
	char old[300];
	cs_cid cid;

	snprintf(old, sizeof(old), "%s.old", dir);
	cs_store *s = open_at(dir);
	populate(s, 3, 50);
	CHECK(cs_store_close(s));
	tu_copy_dir(dir, old); /* the log as it was */

	s = open_at(dir);
	for (int i = 0; i < 20; i++)
		put_seeded(s, 900 + (uint64_t)i, 4096, &cid);
	CHECK(cs_store_close(s)); /* a checkpoint 20 records past old's log */
	size_t nlen;
	uint8_t *newer = read_ckpt(dir, &nlen);
	full_replay(old, &want);
	expect_refused(old, newer, nlen, &want, "checkpoint past the log's end");
	assert_non_null(strstr(warned, "newer than the log"));

	/* Past the segment the log ends in: 1 MiB blocks fill the 16 MiB segment. */
	tu_rmrf(old);
	tu_copy_dir(dir, old);
	s = open_at(dir);
	uint8_t *big = malloc(1u << 20);
	for (int i = 0; i < 20; i++) {
		tu_fill(big, 1u << 20, 7000 + (uint64_t)i);
		CHECK(cs_block_put(s, big, 1u << 20, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid));
	}
	free(big);
	CHECK(cs_store_close(s));
	cs_stat st;
	s = open_at(dir);
	CHECK(cs_store_stat(s, &st));
	assert_true(st.segments >= 2);
	CHECK(cs_store_close(s));
	free(newer);
	newer = read_ckpt(dir, &nlen);
	free_tables(&want);
	full_replay(old, &want);
	expect_refused(old, newer, nlen, &want, "checkpoint in a segment the log lacks");
	assert_non_null(strstr(warned, "is missing"));
	free(newer);
	free_tables(&want);
	tu_rmrf(old);
}

/* A crash between writing checkpoint.tmp and the rename leaves the old state: the temporary
 * file is removed at open and never read, whether it is garbage or a whole checkpoint. */
static void test_leftover_temp(void **state)
{
	struct tables want, got;
	char path[320];
	size_t len;

	build(60);
	full_replay(dir, &want);
	uint8_t *good = read_ckpt(dir, &len);
	snprintf(path, sizeof(path), "%s/checkpoint.tmp", dir);
	for (int pass = 0; pass < 2; pass++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (pass == 0)
			assert_int_equal(write(fd, "garbage", 7), 7);
		else
			assert_int_equal(write(fd, good, len), (ssize_t)len);
		close(fd);
		if (pass == 1)
			assert_int_equal(tu_drop_checkpoint(dir), 1); /* renamed never happened */
		cs_store *s = open_at(dir);
		assert_int_equal(access(path, F_OK), -1);
		snap(s, &got);
		same_tables(&got, &want);
		assert_int_equal(got.st.stray_files, 0);
		assert_int_equal(got.st.replayed_records, pass == 0 ? 0 : want.st.replayed_records);
		free_tables(&got);
		CHECK(cs_store_close(s));
	}
	/* One that appears while the store is open (a failed checkpoint whose removal failed
	 * too) does not stop the next checkpoint, which replaces it. */
	cs_store *s = open_at(dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_int_equal(write(fd, "garbage", 7), 7);
	close(fd);
	CHECK(cs_checkpoint(s));
	assert_int_equal(access(path, F_OK), -1);
	CHECK(cs_store_close(s));
	s = open_at(dir);
	snap(s, &got);
	same_tables(&got, &want);
	assert_int_equal(got.st.replayed_records, 0);
	free_tables(&got);
	CHECK(cs_store_close(s));
	free(good);
	free_tables(&want);
}

/* The syncs an open of d makes, counted by the fault backend (on, never failing). */
static uint64_t syncs_at_open(const char *d, cs_stat *st)
{
	fault_reset();
	store_io_factory = fault_factory;
	cs_store *s = open_at(d);
	uint64_t n = fault_g.calls[FAULT_SYNC];
	store_io_factory = NULL;
	CHECK(cs_store_stat(s, st));
	CHECK(cs_store_close(s));
	return n;
}

/* An open from a checkpoint whose end mark is the end of the log syncs nothing: every record
 * was durable before the checkpoint was renamed (C3 of ckpt.c). One that finds records past
 * the end mark (a crash image of an open store) syncs them, as a full replay's open does. */
static void test_sync_at_open(void **state)
{
	cs_stat st;
	cs_cid cid;

	build(40);
	assert_int_equal(syncs_at_open(dir, &st), 0);
	assert_int_equal(st.replayed_records, 0);
	assert_true(st.checkpoint_seq > 0);

	cs_store *s = open_at(dir);
	CHECK(cs_checkpoint(s));
	put_seeded(s, 777, 4096, &cid);
	tu_copy_dir(dir, copy); /* the crash image: one record after the end mark */
	CHECK(cs_store_close(s));
	assert_true(syncs_at_open(copy, &st) >= 1);
	assert_int_equal(st.replayed_records, 1);
	assert_true(st.checkpoint_seq > 0);
	tu_rmrf(copy);

	/* No checkpoint: the open syncs what it found. */
	assert_int_equal(tu_drop_checkpoint(dir), 1);
	assert_true(syncs_at_open(dir, &st) >= 1);
	assert_int_equal(st.checkpoint_seq, 0);
}

/* Opens dir (closed with a checkpoint) into a's tables, which must come from the checkpoint
 * alone, with no warning and nothing replayed, and checks them against a full replay's (b). */
static void open_matches_replay(const char *d, struct tables *a, struct tables *b)
{
	cs_store *s = open_at(d);
	snap(s, a);
	assert_string_equal(warned, "");
	assert_int_equal(a->st.replayed_records, 0);
	CHECK(cs_store_close(s));
	full_replay(d, b);
	same_tables(a, b);
}

/* The value of block entry i (counting across the leaves) of the decoded checkpoint c, where
 * it lies in the image c was decoded from. */
static struct idx_val *block_entry(const struct ckpt *c, size_t i)
{
	/* Bounded by the leaves; each holds one entry at least (idx_leaf_view). */
	for (size_t j = 0; j < c->sec[CKPT_SEC_BLOCKS].nleaves; j++) {
		const uint8_t (*keys)[CS_KEY_MAX];
		const struct idx_val *vals;
		unsigned n;
		CHECK(idx_leaf_view(ckpt_leaf_at(c, j), &n, &keys, &vals));
		if (i < n)
			return (struct idx_val *)&vals[i];
		i -= n;
	}
	fail_msg("no block entry %zu", i);
	return NULL;
}

/* A store over several segments, its blocks and pins interleaved among them in key order:
 * the open from its checkpoint adds each segment's live bytes as a full replay does (the
 * loader sums runs of one segment, and looks segment ends up once per change of segment).
 * An entry whose offset is past the end of its own segment, but not of the segment the entry
 * before it points into, is refused. */
static void test_many_segments(void **state)
{
	struct tables a, b;
	cs_cid cid;
	uint8_t *big = malloc(1u << 20);

	cs_store *s = open_at(dir);
	for (int i = 0; i < 40; i++) {
		tu_fill(big, 1u << 20, 90000 + (uint64_t)i);
		CHECK(cs_block_put(s, big, 1u << 20, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid));
		for (int j = 0; j < 25; j++) {
			put_seeded(s, 100000 + (uint64_t)i * 100 + (uint64_t)j, 2000, &cid);
			if (j % 5 == 0)
				CHECK(cs_pin_add(s, &cid, CS_PIN_DIRECT));
		}
	}
	free(big);
	CHECK(cs_store_close(s));
	open_matches_replay(dir, &a, &b);
	assert_true(a.nlive >= 3);

	size_t len;
	uint8_t *ck = read_ckpt(dir, &len);
	struct ckpt c;
	CHECK(ckpt_decode(ck, len, &c));
	const struct ckpt_section *sb = &c.sec[CKPT_SEC_BLOCKS];
	struct ckpt_seg first;
	ckpt_seg_at(&c.sec[CKPT_SEC_SEGMENTS], 0, &first);
	assert_true(first.id < c.h.start_seg);
	struct idx_val *at = NULL;
	for (size_t i = 1; i < sb->count && at == NULL; i++) {
		struct idx_val *v0 = block_entry(&c, i - 1), *v1 = block_entry(&c, i);
		if (v0->seg == c.h.start_seg && v1->seg == first.id)
			at = v1;
	}
	assert_non_null(at);
	/* Offset: the first segment's end, before the end mark and inside the bounds of the
	 * start segment (those of the end mark), where the entry before points. */
	at->off = first.end;
	reseal(ck, len);
	expect_refused(dir, ck, len, &b, "an offset past its segment's end");
	assert_non_null(strstr(warned, "position outside the log"));
	free(ck);
	free_tables(&a);
	free_tables(&b);
}

/* A block table large enough to load in two parts on two threads (C5 of engine/ckpt.c), over
 * several segments: the open equals the full replay, live bytes per segment included (the
 * helper thread sums its part in a table of its own); damage near either end is refused,
 * a payload byte by the checksum (the main thread hashes the whole table, K4 of
 * checkpoint.c) and a resealed bad entry by the helper's check of the leaves, its message
 * carried over to the warning. */
static void test_two_part_load(void **state)
{
	struct tables a, b;
	uint8_t buf[64];
	cs_cid cid;
	const int n = 70000; /* above CKPT_LOAD_SPLIT */

	uint8_t *big = malloc(1u << 20);
	cs_store *s = open_at(dir);
	for (int i = 0; i < n; i++) {
		tu_fill(buf, sizeof(buf), 500000 + (uint64_t)i);
		CHECK(cs_block_put(s, buf, 16 + (size_t)i % 48, CS_CODEC_RAW,
		                   CS_HASH_SHA2_256, &cid));
		if (i % 1750 == 0) { /* 40 MiB in all: the small blocks spread over segments */
			tu_fill(big, 1u << 20, 600000 + (uint64_t)i);
			CHECK(cs_block_put(s, big, 1u << 20, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid));
		}
	}
	free(big);
	CHECK(cs_store_close(s));
	open_matches_replay(dir, &a, &b);
	assert_true(a.blocks.n >= 65536); /* CKPT_LOAD_SPLIT: two parts */
	assert_true(a.nlive >= 3);

	size_t len;
	uint8_t *good = read_ckpt(dir, &len), *bad = malloc(len);
	struct ckpt c;
	CHECK(ckpt_decode(good, len, &c));
	const size_t at[] = {10, (size_t)n - 10};
	for (int k = 0; k < 2; k++) {
		/* Where entry at[k] lies in the image, as an offset: bad is decoded nowhere. */
		size_t v = (size_t)((uint8_t *)block_entry(&c, at[k]) - good);
		memcpy(bad, good, len);
		bad[v + 12] ^= 0x04; /* codec: only hashed */
		expect_refused(dir, bad, len, &b, "a payload byte of the block table");
		assert_non_null(strstr(warned, "checksum mismatch"));
		memcpy(bad, good, len);
		put_le32(bad + v + 8, CS_BLOCK_MAX + 1);
		reseal(bad, len);
		expect_refused(dir, bad, len, &b, "a block longer than CS_BLOCK_MAX");
		assert_non_null(strstr(warned, "longer than CS_BLOCK_MAX"));
	}
	write_ckpt(dir, good, len);
	s = open_at(dir);
	assert_string_equal(warned, "");
	CHECK(cs_store_close(s));
	free(good);
	free(bad);
	free_tables(&a);
	free_tables(&b);
}

/* Damage to a record the checkpoint covers: open does not read it, get and verify find it. */
static void test_damage_under_checkpoint(void **state)
{
	char seg[300];
	cs_cid cids[8];
	uint8_t buf[4096];
	size_t n;

	cs_store *s = open_at(dir);
	for (int i = 0; i < 8; i++)
		put_seeded(s, 40 + (uint64_t)i, 4096, &cids[i]);
	struct idx_val v;
	uint8_t key[CS_KEY_MAX];
	assert_int_equal(cid_key(&cids[3], key), 0);
	assert_int_equal(store_lookup(s, key, &v), 0);
	CHECK(cs_store_close(s));
	assert_int_equal(tu_last_segment(dir, seg, sizeof(seg)), 0);
	int fd = open(seg, O_RDWR);
	uint8_t b;
	off_t at = (off_t)v.off + CS_REC_HEADER + 40 + v.len / 2; /* inside the data */
	assert_int_equal(pread(fd, &b, 1, at), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, at), 1);
	close(fd);

	s = open_at(dir);
	assert_int_equal(cs_block_get(s, &cids[3], buf, sizeof(buf), &n), CS_ECORRUPT);
	CHECK(cs_block_get(s, &cids[4], buf, sizeof(buf), &n));
	uint64_t checked, failed;
	assert_int_equal(cs_store_verify(s, NULL, NULL, &checked, &failed), CS_ECORRUPT);
	assert_int_equal(failed, 1);
	CHECK(cs_store_close(s));
	/* A full replay refuses the same log (the damage is before its end). */
	tu_drop_checkpoint(dir);
	cs_options o = opts();
	assert_int_equal(cs_store_open(dir, &o, &s), CS_ECORRUPT);
}

/* ---- The worked example of docs/FORMAT.md 12.6 ------------------------------------------ */

/* As hexdump -C prints it, a line that repeats the one before as one '*' for the run. */
static void hexdump(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 16) {
		char asc[17];
		if (i >= 16 && i + 16 <= n && memcmp(p + i, p + i - 16, 16) == 0) {
			if (i < 32 || memcmp(p + i - 16, p + i - 32, 16) != 0)
				printf("*\n");
			continue;
		}
		printf("%08zx ", i);
		for (size_t k = 0; k < 16; k++) {
			if (k == 8)
				printf(" ");
			if (i + k < n)
				printf(" %02x", p[i + k]);
			else
				printf("   ");
			asc[k] = i + k < n ? (p[i + k] >= 0x20 && p[i + k] < 0x7f ? (char)p[i + k] : '.')
			                   : '\0';
		}
		asc[16] = '\0';
		printf("  |%s|\n", asc);
	}
}


/* The checkpoint writer's ckpt_write_fn over a file (ctx: the fd). */
static int pwrite_fd(void *ctx, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = pwrite(*(int *)ctx, buf, len, (off_t)off);
	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static void test_format_example(void **state)
{
	static const uint8_t digest[32] = {
	    0x2c, 0xf2, 0x4d, 0xba, 0x5f, 0xb0, 0xa3, 0x0e, 0x26, 0xe8, 0x3b,
	    0x2a, 0xc5, 0xb9, 0xe2, 0x9e, 0x1b, 0x16, 0x1e, 0x5c, 0x1f, 0xa7,
	    0x42, 0x5e, 0x73, 0x04, 0x33, 0x62, 0x93, 0x8b, 0x98, 0x24};
	uint8_t key[CS_KEY_MAX] = {0x00, 0x12}, cid[36] = {0x01, 0x55, 0x12, 0x20};
	/* Aligned as a mapping is: the decoder reads the leaves in place. */
	static _Alignas(4096) uint8_t doc[16384], made[16384], ext[16384 + 64];
	const int64_t t2026 = 0x18867251edfa0000;

	memcpy(key + 2, digest, 32);
	memcpy(cid + 4, digest, 32);
	/* The log's second record: the name set of FORMAT.md 4.7, seq 2, synced seq 1, at
	 * segment 1 offset 152; the checkpoint names its checksum. */
	uint8_t meta[REC_NAME_SET_META], rec[256];
	rec_name_set_meta(meta, 14, 36, 5, t2026);
	struct iovec parts[3] = {{meta, sizeof(meta)}, {"docs/hello.txt", 14}, {cid, 36}};
	struct rec_hdr rh = {.type = REC_NAME_SET, .seq = 2, .synced_seq = 1};
	assert_true(rec_size(REC_NAME_SET_META + 14 + 36) <= sizeof(rec));
	rec_encode(rec, &rh, parts, 3);
	const uint32_t end = 152 + rec_size(rh.len);
	int fd = memfd_create("ckpt-example", 0);
	assert_true(fd >= 0);
	struct ckpt_writer w;
	assert_int_equal(ckpt_write_begin(&w, pwrite_fd, &fd), 0);
	ckpt_section_begin(&w, CKPT_SEC_SEGMENTS);
	ckpt_put_seg(&w, &(struct ckpt_seg){1, end, 1});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_BLOCKS);
	ckpt_put_entry(&w, key, &(struct idx_val){1, 64, 5, CS_CODEC_RAW});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_PINS);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_NAMES);
	ckpt_put_name(&w, &(struct ckpt_name){(const uint8_t *)"docs/hello.txt", 14, cid, 36, 5,
	                                      t2026, 1, 152});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_STATS);
	ckpt_put_stats(&w, &(cs_gc_stat){0}, 0);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_DROPS);
	ckpt_section_end(&w);
	struct ckpt_hdr h = {
	    .store_uid = 0x0123456789abcdefull,
	    .created_ns = t2026,
	    .start_seg = 1, .start_off = end, .start_seq = 3,
	    .end_seg = 1, .end_off = end, .end_seq = 3,
	    .last_seg = 1, .last_off = 152, .last_sum = rh.checksum,
	};
	assert_int_equal(ckpt_write_finish(&w, &h), 0);
	size_t n = (size_t)pread(fd, made, sizeof(made), 0);
	close(fd);
	assert_int_equal(n, h.file_size);
	size_t m = tu_format_example("checkpoint-example", doc, sizeof(doc));
	if (m != n || memcmp(doc, made, n) != 0) {
		printf("the encoder writes:\n");
		hexdump(made, n);
		fail_msg("docs/FORMAT.md 12.6 differs from what the encoder writes");
	}

	struct ckpt c;
	CHECK(ckpt_decode(doc, m, &c));
	assert_int_equal(c.h.store_uid, 0x0123456789abcdefull);
	assert_int_equal(c.h.start_seq, 3);
	assert_int_equal(c.h.end_seq, 3);
	assert_int_equal(c.h.last_sum, rh.checksum);
	assert_int_equal(c.sec[CKPT_SEC_BLOCKS].count, 1);
	assert_int_equal(c.sec[CKPT_SEC_BLOCKS].nleaves, 1);
	unsigned nk;
	const uint8_t (*keys)[CS_KEY_MAX];
	const struct idx_val *vals;
	CHECK(ckpt_leaf_get(&c, 0, &nk, &keys, &vals));
	assert_int_equal(nk, 1);
	assert_memory_equal(keys[0], key, CS_KEY_MAX);
	assert_int_equal(vals[0].off, 64);
	assert_int_equal(vals[0].len, 5);
	struct ckpt_name nm;
	assert_int_equal(ckpt_name_at(&c.sec[CKPT_SEC_NAMES], 0, &nm), 78);
	assert_memory_equal(nm.name, "docs/hello.txt", 14);
	assert_int_equal(nm.time_ns, t2026);
	assert_int_equal(nm.seg, 1);
	assert_int_equal(nm.off, 152);
	assert_int_equal(c.sec[CKPT_SEC_PINS].count, 0);
	assert_int_equal(c.sec[CKPT_SEC_DROPS].count, 0);
	/* The section of a later version: refused unless skippable. */
	memcpy(ext, doc, m);
	uint8_t sec[CKPT_SEC_HEADER] = {CKPT_SEC_KNOWN + 1};
	memcpy(ext + m, sec, sizeof(sec));
	put_le32(ext + 84, CKPT_SEC_KNOWN + 1);
	put_le64(ext + 88, XXH3_64bits(ext, 88));
	XXH3_state_t st;
	for (int skippable = 0; skippable < 2; skippable++) {
		ext[m + 2] = (uint8_t)skippable;
		XXH3_64bits_reset(&st);
		XXH3_64bits_update(&st, ext + m, 24);
		put_le64(ext + m + 24, XXH3_64bits_digest(&st));
		int rc = ckpt_decode(ext, m + CKPT_SEC_HEADER, &c);
		assert_int_equal(rc, skippable ? 0 : CS_EVERSION);
		if (skippable)
			assert_int_equal(c.skipped, 1);
		else
			assert_non_null(strstr(cs_errmsg(), "section type 7 is unknown"));
	}
}

/* ---- Writers against background checkpoints --------------------------------------------- */

enum { WRITERS = 3 };

struct writer {
	cs_store *s;
	int id;
	atomic_int *stop;
	int fd; /* the kill test's pipe, or -1 */
	uint64_t round;
};

enum { OP_PUT = 1, OP_DEL = 2, MSG_INTENT = 0x10, MSG_ACK = 0x20 };

static void note(struct writer *w, uint32_t kind, uint64_t seed)
{
	if (w->fd >= 0)
		tu_send(w->fd, kind, 0, seed);
}

static void *writer_main(void *p)
{
	struct writer *w = p;
	uint64_t mine[1024];
	int nmine = 0;
	uint8_t buf[8192];
	uint64_t x = w->round * 7919 + (uint64_t)w->id * 104729 + 1;

	for (uint64_t i = 0; !atomic_load(w->stop); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		cs_cid cid;
		if (nmine > 0 && x % 5 == 0) {
			int k = (int)(x / 5 % (uint64_t)nmine);
			uint64_t seed = mine[k];
			mine[k] = mine[--nmine];
			size_t len = tu_len(seed, sizeof(buf));
			tu_fill(buf, len, seed);
			if (cs_cid_compute(buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
				abort();
			note(w, MSG_INTENT | OP_DEL, seed);
			if (cs_block_delete(w->s, &cid) != 0)
				abort();
			note(w, MSG_ACK | OP_DEL, seed);
			continue;
		}
		uint64_t seed = w->round << 40 | (uint64_t)w->id << 32 | i;
		size_t len = tu_len(seed, sizeof(buf));
		tu_fill(buf, len, seed);
		note(w, MSG_INTENT | OP_PUT, seed);
		if (cs_block_put(w->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			abort();
		note(w, MSG_ACK | OP_PUT, seed);
		if (nmine < 1024)
			mine[nmine++] = seed;
		if (x % 97 == 0) { /* names and pins churn too */
			char name[32];
			snprintf(name, sizeof(name), "w%d-%llu", w->id, (unsigned long long)(x % 16));
			if (cs_name_set(w->s, name, &cid, len) != 0)
				abort();
			if (x % 3 == 0 && cs_name_delete(w->s, name) != 0)
				abort();
		}
	}
	return NULL;
}

static cs_options busy_opts(void)
{
	cs_options o = opts();
	o.checkpoint_bytes = 256 << 10; /* a background checkpoint about every poll */
	return o;
}

/* Writers run while the background thread and an explicit caller take checkpoints. Each
 * round stops the writers (the handle stays open) and opens a copy of the directory from the
 * last checkpoint taken while they ran, which is fuzzy (its start and end marks differ): it
 * must equal a full replay. Then close's checkpoint must too. */
static void test_concurrent_writers(void **state)
{
	cs_options o = busy_opts();
	cs_store *s;
	pthread_t th[WRITERS];
	struct writer ws[WRITERS];
	struct tables a, b;
	const char *env = getenv("CS_TEST_SECONDS");
	double secs = env ? atof(env) : 2.0;
	int fuzzy = 0, rounds = 4;

	warned[0] = '\0';
	o.durability = CS_DURABLE_NONE; /* fast writers, so checkpoints overlap them */
	CHECK(cs_store_open(dir, &o, &s));
	populate(s, 1, 500);
	for (int r = 1; r <= rounds; r++) {
		atomic_int stop = 0;
		for (int i = 0; i < WRITERS; i++) {
			ws[i] = (struct writer){s, i, &stop, -1, (uint64_t)r};
			pthread_create(&th[i], NULL, writer_main, &ws[i]);
		}
		double end = tu_now() + secs / rounds;
		while (tu_now() < end) {
			CHECK(cs_checkpoint(s));
			usleep(30000);
		}
		atomic_store(&stop, 1);
		for (int i = 0; i < WRITERS; i++)
			pthread_join(th[i], NULL);
		char image[320];
		snprintf(image, sizeof(image), "%s.img", dir);
		/* Writers are stopped, but under CS_DURABLE_NONE their last batch may still be
		 * on its way to the file: a copy now would hold a torn tail. */
		CHECK(cs_store_sync(s));
		pthread_mutex_lock(&s->ckpt_mu); /* no background checkpoint while copying */
		tu_copy_dir(dir, image);
		pthread_mutex_unlock(&s->ckpt_mu);
		size_t len;
		uint8_t *ck = read_ckpt(image, &len);
		struct ckpt c;
		CHECK(ckpt_decode(ck, len, &c));
		fuzzy += c.h.start_seq < c.h.end_seq;
		free(ck);
		cs_store *t = open_at(image);
		snap(t, &a);
		assert_string_equal(warned, "");
		assert_int_equal(a.st.checkpoint_seq, c.h.start_seq);
		CHECK(cs_store_close(t));
		full_replay(image, &b);
		same_tables(&a, &b);
		free_tables(&a);
		free_tables(&b);
		tu_rmrf(image);
	}
	CHECK(cs_store_close(s));
	assert_string_equal(warned, "");
	s = open_at(dir);
	snap(s, &a);
	assert_int_equal(a.st.replayed_records, 0);
	CHECK(cs_store_close(s));
	full_replay(dir, &b);
	same_tables(&a, &b);
	print_message("checkpoints under %d writers: %d of %d rounds ended with a fuzzy one, "
	              "%llu records\n",
	              WRITERS, fuzzy, rounds, (unsigned long long)b.st.next_seq);
	assert_true(fuzzy > 0);
	free_tables(&a);
	free_tables(&b);
}

/* ---- kill -9 during background checkpoints --------------------------------------------- */

static struct tu_model model;

struct round {
	uint64_t round, acks;
};

static void run_child(void *ctx, int fd)
{
	struct round *rd = ctx;
	cs_options o = busy_opts();
	cs_store *s;
	atomic_int stop = 0;
	pthread_t th[WRITERS];
	struct writer ws[WRITERS];

	if (cs_store_open(dir, &o, &s) != 0) {
		fprintf(stderr, "child open: %s\n", cs_errmsg());
		_exit(2);
	}
	tu_send(fd, TU_MSG_OPEN, 0, 0);
	for (int i = 0; i < WRITERS; i++) {
		ws[i] = (struct writer){s, i, &stop, fd, rd->round};
		pthread_create(&th[i], NULL, writer_main, &ws[i]);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);
	_exit(0);
}

static void on_msg(void *ctx, const struct tu_msg *m)
{
	struct round *rd = ctx;
	tu_model_note(&model, m->seed, (m->kind & MSG_ACK) != 0, (m->kind & OP_PUT) != 0);
	rd->acks += (m->kind & MSG_ACK) != 0;
}

/* The writer's block lengths, for the model. */
static size_t writer_len(uint64_t seed)
{
	return tu_len(seed, 8192);
}

/* Fails unless every warning of the last open is the truncation of the last segment's torn
 * tail, or the open's summary of it with nothing lost to salvage. A kill -9 can tear the
 * log's tail: a buffered pwritev that finds a fatal signal pending stops after the pages it
 * has copied (generic_perform_write), so a batch nobody was told is durable may be half in
 * the page cache. Anything else (a refused checkpoint, a full replay, a salvage) fails. */
static void assert_only_torn_tail(int round)
{
	char *save, *line, buf[sizeof(warned)];

	snprintf(buf, sizeof(buf), "%s", warned);
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
		if (!(strncmp(line, "segment ", 8) == 0 && strstr(line, ": truncated torn tail of ")) &&
		    !(strncmp(line, "opened ", 7) == 0 &&
		      strstr(line, " torn-tail bytes truncated, 0 records / 0 bytes lost to salvage")))
			fail_msg("round %d: open after the kill warned: %s", round, line);
}

static void test_kill_during_checkpoints(void **state)
{
	static uint8_t want[8192], got[8192];
	const char *env = getenv("CS_KILL_ROUNDS");
	int rounds = env ? atoi(env) : getenv("CS_TEST_SMALL") != NULL ? 5 : 12;
	uint64_t acks = 0, ambiguous = 0, from_ckpt = 0, closed_at = 0, x = 99;

	tu_model_init(&model, 1 << 20);
	for (int r = 1; r <= rounds; r++) {
		struct round rd = {(uint64_t)r, 0};
		int status;
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double run_for = 0.2 + (double)(x % 400) / 1000.0;
		if (tu_kill_round(run_child, on_msg, &rd, run_for, 1, &status) != 0)
			fail_msg("child ended otherwise than by SIGKILL (status 0x%x)", status);
		acks += rd.acks;
		/* The image the kill left, opened from its checkpoint and in full. */
		tu_copy_dir(dir, copy);
		tu_drop_checkpoint(copy);
		cs_store *s = open_at(dir);
		cs_stat st;
		CHECK(cs_store_stat(s, &st));
		assert_only_torn_tail(r);
		from_ckpt += st.checkpoint_seq > closed_at; /* one the child wrote */
		const char *bad = tu_model_check(&model, s, sizeof(want), writer_len, want, got,
		                                 &ambiguous);
		if (bad != NULL)
			fail_msg("round %d: %s", r, bad);
		struct tables a, b;
		snap(s, &a);
		cs_store *t = open_at(copy);
		snap(t, &b);
		same_tables(&a, &b);
		free_tables(&a);
		free_tables(&b);
		CHECK(cs_store_close(t));
		CHECK(cs_store_stat(s, &st));
		closed_at = st.next_seq; /* the close's checkpoint starts here */
		CHECK(cs_store_close(s));
		tu_rmrf(copy);
	}
	printf("checkpoint kill test: %d rounds, %llu acknowledged operations, %llu in flight at "
	       "a kill, %llu opens from a checkpoint written during the round\n",
	       rounds, (unsigned long long)acks, (unsigned long long)ambiguous,
	       (unsigned long long)from_ckpt);
	assert_true(acks > 0);
	assert_true(from_ckpt > 0);
	free(model.t);
}

/* A checkpoint write that meets a full disk fails with CS_EFULL, as cs_checkpoint documents,
 * naming the cause; it once returned -ENOSPC. /dev/full fails every write with ENOSPC. */
static void test_write_full_disk(void **state)
{
	int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		print_message("note: no /dev/full (%s): skipped\n", strerror(errno));
		return;
	}
	struct ckpt_writer w;
	struct ckpt_hdr h = {0};
	assert_int_equal(ckpt_write_begin(&w, pwrite_fd, &fd), 0);
	ckpt_section_begin(&w, CKPT_SEC_STATS);
	ckpt_put_stats(&w, &(cs_gc_stat){0}, 0);
	ckpt_section_end(&w);
	assert_int_equal(ckpt_write_finish(&w, &h), CS_EFULL);
	assert_non_null(strstr(cs_errmsg(), "No space left on device"));
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_example),
	    cmocka_unit_test(test_write_full_disk),
	    cmocka_unit_test_setup_teardown(test_reopen_equals_full_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_changes_after_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_leaves_outlive_their_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fuzzy_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_newer_than_log, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_leftover_temp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damage_under_checkpoint, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sync_at_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_segments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_part_load, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill_during_checkpoints, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
