/*
 * test_checkpoint.c - checkpoints.
 *
 * Proves:
 *   - the worked example of docs/FORMAT.md 12.6 is what the encoder writes and decodes to its
 *     stated fields; a section type unknown to this version is refused, unless skippable.
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
#include "test_util.h"

#define CHECK(call)                                                                                \
	do {                                                                                       \
		int rc_ = (call);                                                                  \
		if (rc_ != 0)                                                                      \
			fail_msg("%s: %s: %s", #call, cs_strerror(rc_), cs_errmsg());              \
	} while (0)

/* ---- The worked example of docs/FORMAT.md 12.6 ------------------------------------------ */

/* The hex dump between the checkpoint-example markers: "OFFSET  HEX HEX ...  |ascii|". */
static size_t read_example(uint8_t *out, size_t cap)
{
	char path[512], line[256];
	size_t n = 0;
	int inside = 0;

	snprintf(path, sizeof(path), "%s/docs/FORMAT.md", CS_TEST_SRCDIR);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strncmp(line, "<!-- checkpoint-example-begin -->", 33) == 0) {
			inside = 1;
			continue;
		}
		if (strncmp(line, "<!-- checkpoint-example-end -->", 31) == 0)
			break;
		if (!inside || line[0] == '`')
			continue;
		char *p = line, *end;
		unsigned long at = strtoul(p, &end, 16);
		assert_true(end == p + 8);
		assert_int_equal(at, n);
		for (p = end;;) {
			while (*p == ' ')
				p++;
			if (*p == '|' || *p == '\n' || *p == '\0')
				break;
			unsigned v;
			assert_int_equal(sscanf(p, "%2x", &v), 1);
			assert_true(n < cap);
			out[n++] = (uint8_t)v;
			p += 2;
		}
	}
	fclose(fp);
	assert_true(inside);
	return n;
}

static void hexdump(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i += 16) {
		char asc[17];
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

static void test_format_example(void **state)
{
	static const uint8_t digest[32] = {
	    0x2c, 0xf2, 0x4d, 0xba, 0x5f, 0xb0, 0xa3, 0x0e, 0x26, 0xe8, 0x3b,
	    0x2a, 0xc5, 0xb9, 0xe2, 0x9e, 0x1b, 0x16, 0x1e, 0x5c, 0x1f, 0xa7,
	    0x42, 0x5e, 0x73, 0x04, 0x33, 0x62, 0x93, 0x8b, 0x98, 0x24};
	uint8_t key[CS_KEY_MAX] = {0x00, 0x12}, cid[36] = {0x01, 0x55, 0x12, 0x20};
	static uint8_t doc[1024], made[1024];
	const int64_t t2026 = 0x18867251edfa0000;

	memcpy(key + 2, digest, 32);
	memcpy(cid + 4, digest, 32);
	int fd = memfd_create("ckpt-example", 0);
	assert_true(fd >= 0);
	struct ckpt_writer w;
	assert_int_equal(ckpt_write_begin(&w, fd), 0);
	ckpt_section_begin(&w, CKPT_SEC_SEGMENTS);
	ckpt_put_seg(&w, &(struct ckpt_seg){1, 152, 1});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_BLOCKS);
	ckpt_put_entry(&w, key, &(struct idx_val){1, 64, 5, CS_CODEC_RAW});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_PINS);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_NAMES);
	ckpt_put_name(&w, &(struct ckpt_name){(const uint8_t *)"docs/hello.txt", 14, cid, 36, 5,
	                                      t2026});
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_STATS);
	ckpt_put_stats(&w, &(cs_gc_stat){0}, 0);
	ckpt_section_end(&w);
	struct ckpt_hdr h = {
	    .store_uid = 0x0123456789abcdefull,
	    .created_ns = t2026,
	    .start_seg = 1, .start_off = 152, .start_seq = 2,
	    .end_seg = 1, .end_off = 152, .end_seq = 2,
	    .last_seg = 1, .last_off = 64, .last_sum = 0xcaee8c84bba2a169ull,
	};
	assert_int_equal(ckpt_write_finish(&w, &h), 0);
	size_t n = (size_t)pread(fd, made, sizeof(made), 0);
	close(fd);
	assert_int_equal(n, h.file_size);
	size_t m = read_example(doc, sizeof(doc));
	if (m != n || memcmp(doc, made, n) != 0) {
		printf("the encoder writes:\n");
		hexdump(made, n);
		fail_msg("docs/FORMAT.md 12.6 differs from what the encoder writes");
	}

	struct ckpt c;
	CHECK(ckpt_decode(doc, m, &c));
	assert_int_equal(c.h.store_uid, 0x0123456789abcdefull);
	assert_int_equal(c.h.start_seq, 2);
	assert_int_equal(c.h.end_seq, 2);
	assert_int_equal(c.h.last_sum, 0xcaee8c84bba2a169ull);
	assert_int_equal(c.sec[CKPT_SEC_BLOCKS].count, 1);
	uint8_t k[CS_KEY_MAX];
	struct idx_val v;
	ckpt_entry_at(&c.sec[CKPT_SEC_BLOCKS], 0, k, &v);
	assert_memory_equal(k, key, CS_KEY_MAX);
	assert_int_equal(v.off, 64);
	assert_int_equal(v.len, 5);
	struct ckpt_name nm;
	assert_int_equal(ckpt_name_at(&c.sec[CKPT_SEC_NAMES], 0, &nm), 70);
	assert_memory_equal(nm.name, "docs/hello.txt", 14);
	assert_int_equal(nm.time_ns, t2026);
	assert_int_equal(c.sec[CKPT_SEC_PINS].count, 0);
	/* The section of a later version: refused unless skippable. */
	uint8_t ext[1024];
	memcpy(ext, doc, m);
	uint8_t sec[CKPT_SEC_HEADER] = {6};
	memcpy(ext + m, sec, sizeof(sec));
	put_le32(ext + 84, 6);
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
			assert_non_null(strstr(cs_errmsg(), "section type 6 is unknown"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format_example),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
