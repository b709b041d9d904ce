/*
 * test_corrupt.c - damaged segments, at byte level, through the public API.
 *
 * Proves, on a store written by the real writer:
 *   - truncating the newest segment at every offset inside its last records always opens,
 *     keeps exactly the blocks whose records lie wholly before the cut (byte-exact), reports
 *     the torn bytes, and leaves a store that takes new writes which survive a reopen;
 *   - flipping any bit of a record in the middle of the log (later batches follow, whose
 *     synced_seq proves it was durable) fails the open with CS_ECORRUPT naming the segment and
 *     offset, and with CS_OPEN_SALVAGE opens, loses exactly that block and reports it;
 *   - the same damage in the last record, with nothing after it, is a torn tail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "record.h"
#include "test_util.h"

enum { NBLOCKS = 12, BLOCK = 200 };

static char dir[256], seg[300];
static cs_cid cids[NBLOCKS];
static uint32_t offs[NBLOCKS + 1]; /* record offsets; offs[NBLOCKS] = end of the log */
static uint8_t *orig;              /* the segment's bytes [0, offs[NBLOCKS]) */
static uint64_t capacity;

/* Writes NBLOCKS blocks, each in its own synced batch, and records where each record is. */
static int setup(void **state)
{
	cs_options o = tu_opts();
	cs_store *s;
	uint8_t buf[BLOCK];

	tu_tmpdir(dir, sizeof(dir), "corrupt");
	if (cs_store_open(dir, &o, &s) != 0)
		return -1;
	for (int i = 0; i < NBLOCKS; i++) {
		tu_fill(buf, sizeof(buf), (uint64_t)i + 1);
		if (cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cids[i]))
			return -1;
	}
	if (cs_store_close(s) != 0 || tu_last_segment(dir, seg, sizeof(seg)) != 0)
		return -1;
	int fd = open(seg, O_RDONLY);
	struct stat st;
	fstat(fd, &st);
	capacity = (uint64_t)st.st_size;
	orig = malloc(capacity);
	if (pread(fd, orig, capacity, 0) != (ssize_t)capacity)
		return -1;
	close(fd);
	uint32_t off = CS_SEG_HEADER;
	for (int i = 0; i < NBLOCKS; i++) {
		struct rec_hdr h;
		if (rec_decode_header(orig + off, &h) != REC_OK || h.type != REC_BLOCK)
			return -1;
		offs[i] = off;
		off += rec_size(h.len);
	}
	offs[NBLOCKS] = off;
	return 0;
}

static int teardown(void **state)
{
	free(orig);
	tu_rmrf(dir);
	return 0;
}

/* Puts the segment back as written, then applies damage. */
static void restore(void)
{
	tu_drop_checkpoint(dir); /* these tests are about the log's rules: replay all of it */
	int fd = open(seg, O_WRONLY);
	assert_int_equal(ftruncate(fd, (off_t)capacity), 0);
	assert_int_equal(pwrite(fd, orig, offs[NBLOCKS], 0), (ssize_t)offs[NBLOCKS]);
	close(fd);
}

static void expect_blocks(cs_store *s, int upto)
{
	uint8_t want[BLOCK], got[BLOCK];
	for (int i = 0; i < NBLOCKS; i++) {
		size_t n;
		int rc = cs_block_get(s, &cids[i], got, sizeof(got), &n);
		if (i < upto) {
			if (rc != 0)
				fail_msg("block %d missing: %s", i, cs_errmsg());
			tu_fill(want, sizeof(want), (uint64_t)i + 1);
			assert_memory_equal(got, want, BLOCK);
		} else if (rc != CS_ENOTFOUND) {
			fail_msg("block %d present after its record was cut", i);
		}
	}
}

static void test_truncate_every_offset(void **state)
{
	cs_options o = tu_opts();
	int first = NBLOCKS - 3;

	for (uint32_t cut = offs[first]; cut <= offs[NBLOCKS]; cut++) {
		restore();
		assert_int_equal(truncate(seg, cut), 0);
		cs_store *s;
		int rc = cs_store_open(dir, &o, &s);
		if (rc != 0)
			fail_msg("cut at %u: %s: %s", cut, cs_strerror(rc), cs_errmsg());
		int whole = 0;
		while (whole < NBLOCKS && offs[whole + 1] <= cut)
			whole++;
		expect_blocks(s, whole);
		cs_stat st;
		cs_store_stat(s, &st);
		assert_int_equal(st.torn_tail_bytes > 0, cut != offs[whole]);
		if (cut % 97 == 0 || cut == offs[NBLOCKS] - 1) {
			/* The store takes writes after the cut, and they survive a reopen. */
			uint8_t buf[BLOCK];
			cs_cid extra;
			tu_fill(buf, sizeof(buf), 999);
			assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW,
			                              CS_HASH_SHA2_256, &extra),
			                 0);
			assert_int_equal(cs_store_close(s), 0);
			assert_int_equal(cs_store_open(dir, &o, &s), 0);
			expect_blocks(s, whole);
			assert_int_equal(cs_block_has(s, &extra), 1);
		}
		assert_int_equal(cs_store_close(s), 0);
	}
	restore();
}

static void flip(uint32_t byte, int bit)
{
	restore();
	int fd = open(seg, O_RDWR);
	uint8_t b = orig[byte] ^ (uint8_t)(1u << bit);
	assert_int_equal(pwrite(fd, &b, 1, byte), 1);
	close(fd);
}

static void test_flip_middle_record(void **state)
{
	cs_options o = tu_opts();
	int victim = NBLOCKS / 2;
	uint32_t start = offs[victim], end = offs[victim + 1];
	char where[64];
	int checked = 0;

	snprintf(where, sizeof(where), "offset %u", start);
	for (uint32_t byte = start; byte < end; byte++) {
		/* Every bit of the header; one bit of every fifth payload byte. */
		int in_header = byte < start + CS_REC_HEADER;
		if (!in_header && (byte - start) % 5 != 0)
			continue;
		for (int bit = in_header ? 0 : (int)(byte % 8); bit < 8; bit += in_header ? 1 : 8) {
			flip(byte, bit);
			cs_store *s;
			o.flags = CS_OPEN_CREATE;
			int rc = cs_store_open(dir, &o, &s);
			if (rc != CS_ECORRUPT)
				fail_msg("flip byte %u bit %d: open gave %d, want CS_ECORRUPT",
				         byte, bit, rc);
			if (strstr(cs_errmsg(), where) == NULL ||
			    strstr(cs_errmsg(), "segment") == NULL)
				fail_msg("message does not name the place: %s", cs_errmsg());
			o.flags = CS_OPEN_CREATE | CS_OPEN_SALVAGE;
			rc = cs_store_open(dir, &o, &s);
			if (rc != 0)
				fail_msg("salvage open: %s", cs_errmsg());
			cs_stat st;
			cs_store_stat(s, &st);
			assert_int_equal(st.salvaged_records, 1);
			assert_int_equal(st.blocks, NBLOCKS - 1);
			assert_int_equal(cs_block_has(s, &cids[victim]), 0);
			assert_int_equal(cs_block_has(s, &cids[victim + 1]), 1);
			assert_int_equal(cs_store_close(s), 0);
			checked++;
		}
	}
	printf("bit flips checked in a middle record: %d\n", checked);
	restore();
}

static void test_flip_last_record_is_torn(void **state)
{
	cs_options o = tu_opts();
	uint32_t start = offs[NBLOCKS - 1];

	for (uint32_t byte = start; byte < offs[NBLOCKS]; byte += 13) {
		flip(byte, (int)(byte % 8));
		cs_store *s;
		int rc = cs_store_open(dir, &o, &s);
		if (rc != 0)
			fail_msg("flip at %u in the last record: %s", byte, cs_errmsg());
		expect_blocks(s, NBLOCKS - 1);
		cs_stat st;
		cs_store_stat(s, &st);
		assert_true(st.torn_tail_bytes > 0);
		assert_int_equal(cs_store_close(s), 0);
	}
	restore();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_truncate_every_offset),
	    cmocka_unit_test(test_flip_middle_record),
	    cmocka_unit_test(test_flip_last_record_is_torn),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
