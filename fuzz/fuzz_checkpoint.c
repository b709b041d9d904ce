/*
 * fuzz_checkpoint.c - libFuzzer target for the checkpoint decoder (index/checkpoint.c).
 *
 * The input's first byte picks a mode (bit 0) and how check 4 splits each table (the other
 * bits); the rest is a checkpoint file. In mode 1 (bit 0 set) the header's and every
 * well-placed section's checksums are recomputed first, so that the fuzzer gets past them to
 * the layout rules; in mode 0 the bytes are decoded as they are.
 * Checked, for what checkpoint.h promises (K1, K2):
 *  1. ckpt_decode() answers 0, CS_ECORRUPT or CS_EVERSION, never anything else, with a
 *     message on failure, and never reads outside the input (ASan).
 *  2. An accepted checkpoint's BLOCKS leaves, adopted by a B+tree (idx_adopt_part checks
 *     their layout, fill and key order) with ckpt_leaf_check() on each as the store does, and
 *     its PINS entries, checked by ckpt_entry_get() and bulk-loaded (idx_load checks the
 *     order), make trees or are refused with CS_ECORRUPT, leaving the tree empty; either
 *     way it passes idx_check. Its NAMES entries walk to exactly the section's end, its
 *     DROPS ranges increase.
 *  3. Encoded again with the writer (sections in type order, the same header), a checkpoint
 *     accepted whole whose sections were in type order, held no skipped section and whose
 *     leaves were filled as the writer fills them (K5) is the input byte for byte, and in any
 *     case decodes to the same entries.
 *  4. The store's way of loading (ckpt_decode_lazy(), then each table in two parts: the
 *     leaves adopted in two parts and the whole section hashed by ckpt_section_verify(), the
 *     pins through a cursor over each part's range, the one from entry 0 checking the whole
 *     section's checksum after its last run, K4) accepts exactly the inputs that
 *     ckpt_decode() and the loads of check 2 accept.
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_checkpoint ../fuzz/corpus/checkpoint
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "btree.h"
#include "checkpoint.h"
#include "cidstore.h"
#include "endian.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_checkpoint: check failed: %s (line %d)\n", #cond,    \
			        __LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Inputs above this only cost time. */
#define INPUT_MAX (1u << 20)

struct load {
	const struct ckpt *c;
	int type;
};

static int load_entry(void *ctx, size_t i, unsigned n, uint8_t (*keys)[CS_KEY_MAX],
                      struct idx_val *vals)
{
	const struct load *l = ctx;
	int rc = 0;
	for (unsigned j = 0; rc == 0 && j < n; j++)
		rc = ckpt_entry_get(l->c, l->type, i + j, keys[j], &vals[j]);
	return rc;
}

static int leaf_check(void *ctx, size_t j, unsigned n, const uint8_t (*keys)[CS_KEY_MAX],
                      const struct idx_val *vals)
{
	struct ckpt_seg_memo m = {0, 0};
	(void)keys;
	return ckpt_leaf_check(ctx, j, n, vals, &m);
}

/* A copy of c's leaves in memory of their own, for a tree to adopt (and unmap). */
static uint8_t *leaves_copy(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_BLOCKS];
	if (s->nleaves == 0)
		return NULL;
	uint8_t *p = mmap(NULL, s->nleaves * IDX_NODE_BYTES, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	memcpy(p, s->leaves, s->nleaves * IDX_NODE_BYTES);
	return p;
}

/* Adopts c's leaves in parts (1 or 2), part 1 first as a helper thread may; the checksum
 * too when lazy. Returns 0 or CS_ECORRUPT, the tree as check 2 says. */
static int adopt(const struct ckpt *c, unsigned parts, unsigned share0, int lazy)
{
	struct idx_load *ld;
	struct idx *t;
	CHECK(idx_create(&t) == 0);
	const struct ckpt_section *s = &c->sec[CKPT_SEC_BLOCKS];
	int rc = idx_adopt_begin(t, leaves_copy(c), s->nleaves, (size_t)s->count, parts, share0,
	                         &ld);
	CHECK(rc == 0);
	if (ld != NULL) {
		rc = parts == 2 ? idx_adopt_part(ld, 1, leaf_check, (void *)c) : 0;
		int rc0 = idx_adopt_part(ld, 0, leaf_check, (void *)c);
		if (rc0 == 0 && lazy)
			rc0 = ckpt_section_verify(c, CKPT_SEC_BLOCKS);
		rc = idx_load_end(ld, rc0 != 0 ? rc0 : rc);
	} else if (lazy) {
		rc = ckpt_section_verify(c, CKPT_SEC_BLOCKS);
	}
	CHECK(rc == 0 || rc == CS_ECORRUPT);
	CHECK(idx_count(t) == (rc == 0 ? c->sec[CKPT_SEC_BLOCKS].count : 0));
	CHECK(idx_check(t) == 0);
	idx_destroy(t);
	return rc;
}

/* Loads section type of c as the store does; returns 0 or CS_ECORRUPT. */
static int check_table(const struct ckpt *c, int type)
{
	if (type == CKPT_SEC_BLOCKS)
		return adopt(c, 1, 0, 0);
	struct load l = {c, type};
	struct idx *t;
	CHECK(idx_create(&t) == 0);
	int rc = idx_load(t, (size_t)c->sec[type].count, load_entry, &l);
	CHECK(rc == 0 || rc == CS_ECORRUPT);
	CHECK(idx_count(t) == (rc == 0 ? c->sec[type].count : 0));
	CHECK(idx_check(t) == 0);
	idx_destroy(t);
	return rc;
}

static int cursor_fill(void *ctx, size_t i, unsigned n, uint8_t (*keys)[CS_KEY_MAX],
                       struct idx_val *vals)
{
	return ckpt_cursor_get(ctx, i, n, keys, vals);
}

/* The store's way (check 4): ckpt_decode_lazy(), then each table in two parts (as a large
 * table loads at open, there on two threads: C5 of engine/ckpt.c), each through its own
 * cursor over its range, the checksum compared at the end of the cursor from entry 0 (K4).
 * The parts run here one after the other, the second first, as a helper thread may. Returns
 * 0 when that accepts the whole file. */
static int lazy_load(const uint8_t *buf, size_t len, unsigned share0)
{
	struct ckpt c;
	int rc = ckpt_decode_lazy(buf, len, &c);

	CHECK(rc == 0 || rc == CS_ECORRUPT || rc == CS_EVERSION);
	if (rc == 0)
		rc = adopt(&c, 2, share0, 1);
	for (int type = CKPT_SEC_PINS; rc == 0 && type <= CKPT_SEC_PINS; type++) {
		size_t n = (size_t)c.sec[type].count;
		struct ckpt_cursor k0, k1;
		struct idx_load *ld;
		struct idx *t;
		CHECK(idx_create(&t) == 0);
		CHECK(idx_load_begin(t, n, 2, share0, &ld) == 0);
		if (ld != NULL) {
			size_t mid = idx_load_part_first(ld, 1);
			CHECK(ckpt_cursor_begin_at(&k0, &c, type, 0, mid) == 0);
			CHECK(ckpt_cursor_begin_at(&k1, &c, type, mid, n) == 0);
			rc = idx_load_part(ld, 1, cursor_fill, &k1);
			rc = rc == 0 ? ckpt_cursor_end(&k1) : (ckpt_cursor_free(&k1), rc);
			int rc0 = idx_load_part(ld, 0, cursor_fill, &k0);
			rc0 = rc0 == 0 ? ckpt_cursor_end(&k0) : (ckpt_cursor_free(&k0), rc0);
			rc = idx_load_end(ld, rc0 != 0 ? rc0 : rc);
		} else {
			/* No entries: the checksum is still the whole cursor's to check. */
			CHECK(ckpt_cursor_begin(&k0, &c, type) == 0);
			rc = ckpt_cursor_end(&k0);
		}
		CHECK(rc == 0 || rc == CS_ECORRUPT);
		CHECK(idx_check(t) == 0);
		idx_destroy(t);
	}
	return rc;
}

/* The checkpoint writer's ckpt_write_fn over a memfd (ctx: the fd). */
static int pwrite_fd(void *ctx, const void *buf, size_t len, uint64_t off)
{
	return pwrite(*(int *)ctx, buf, len, (off_t)off) == (ssize_t)len ? 0 : -EIO;
}

/* Writes c's sections in type order with its header; returns the bytes (owned) and *n. */
static uint8_t *encode(const struct ckpt *c, size_t *n)
{
	int fd = memfd_create("fuzz-ckpt", 0);
	CHECK(fd >= 0);
	struct ckpt_writer w;
	CHECK(ckpt_write_begin(&w, pwrite_fd, &fd) == 0);
	const struct ckpt_section *s = &c->sec[CKPT_SEC_SEGMENTS];
	ckpt_section_begin(&w, CKPT_SEC_SEGMENTS);
	for (size_t i = 0; i < s->count; i++) {
		struct ckpt_seg g;
		ckpt_seg_at(s, i, &g);
		ckpt_put_seg(&w, &g);
	}
	ckpt_section_end(&w);
	s = &c->sec[CKPT_SEC_BLOCKS];
	ckpt_section_begin(&w, CKPT_SEC_BLOCKS);
	for (size_t j = 0; j < s->nleaves; j++) {
		const uint8_t (*keys)[CS_KEY_MAX];
		const struct idx_val *vals;
		unsigned cnt;
		CHECK(ckpt_leaf_get(c, j, &cnt, &keys, &vals) == 0); /* check 2 passed */
		for (unsigned k = 0; k < cnt; k++)
			ckpt_put_entry(&w, keys[k], &vals[k]);
	}
	ckpt_section_end(&w);
	s = &c->sec[CKPT_SEC_PINS];
	ckpt_section_begin(&w, CKPT_SEC_PINS);
	for (size_t i = 0; i < s->count; i++) {
		uint8_t key[CS_KEY_MAX];
		struct idx_val v;
		ckpt_entry_at(s, i, key, &v);
		ckpt_put_entry(&w, key, &v);
	}
	ckpt_section_end(&w);
	s = &c->sec[CKPT_SEC_NAMES];
	ckpt_section_begin(&w, CKPT_SEC_NAMES);
	for (size_t i = 0, off = 0; i < s->count; i++) {
		struct ckpt_name nm;
		off = ckpt_name_at(s, off, &nm);
		ckpt_put_name(&w, &nm);
	}
	ckpt_section_end(&w);
	cs_gc_stat gc;
	int64_t gc_time;
	ckpt_stats(&c->sec[CKPT_SEC_STATS], &gc, &gc_time);
	ckpt_section_begin(&w, CKPT_SEC_STATS);
	ckpt_put_stats(&w, &gc, gc_time);
	ckpt_section_end(&w);
	s = &c->sec[CKPT_SEC_DROPS];
	ckpt_section_begin(&w, CKPT_SEC_DROPS);
	for (size_t i = 0; i < s->count; i++) {
		struct rec_drop d;
		ckpt_drop_at(s, i, &d);
		ckpt_put_drop(&w, &d);
	}
	ckpt_section_end(&w);
	struct ckpt_hdr h = c->h;
	CHECK(ckpt_write_finish(&w, &h) == 0);
	*n = (size_t)h.file_size;
	uint8_t *out = malloc(*n ? *n : 1);
	CHECK(out != NULL && pread(fd, out, *n, 0) == (ssize_t)*n);
	close(fd);
	return out;
}

/* The same entries: for BLOCKS the same leaves, as the padding before them may differ. */
static int same_section(const struct ckpt_section *a, const struct ckpt_section *b)
{
	if (a->leaves != NULL)
		return a->count == b->count && a->nleaves == b->nleaves &&
		       memcmp(a->leaves, b->leaves, a->nleaves * IDX_NODE_BYTES) == 0;
	return a->count == b->count && a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Were c's leaves filled as the writer fills them (K5 of checkpoint.c)? Leaves of
 * IDX_LEAF_CAP entries, but for the last two, which share the rest evenly, the first one more. */
static int writer_leaves(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_BLOCKS];
	size_t left = (size_t)s->count;
	for (size_t j = 0; j < s->nleaves; j++) {
		size_t want = left <= IDX_LEAF_CAP        ? left
		              : left <= 2 * IDX_LEAF_CAP ? (left + 1) / 2
		                                         : IDX_LEAF_CAP;
		if (get_le16(ckpt_leaf_at(c, j)) != want)
			return 0;
		left -= want;
	}
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ckpt c, again;

	if (size < 1 || size > INPUT_MAX)
		return 0;
	size_t len = size - 1;
	uint8_t *buf = malloc(len ? len : 1);
	CHECK(buf != NULL);
	memcpy(buf, data + 1, len);
	if (data[0] & 1)
		(void)ckpt_reseal(buf, len); /* mode 1 */

	int lazy = lazy_load(buf, len, (unsigned)(data[0] >> 1) % 101); /* part 0's share */
	int rc = ckpt_decode(buf, len, &c);
	CHECK(rc == 0 || rc == CS_ECORRUPT || rc == CS_EVERSION);
	if (rc != 0) {
		CHECK(cs_errmsg()[0] != '\0');
		CHECK(lazy != 0);
		free(buf);
		return 0;
	}
	if (check_table(&c, CKPT_SEC_BLOCKS) != 0 || check_table(&c, CKPT_SEC_PINS) != 0) {
		CHECK(lazy != 0);
		free(buf);
		return 0;
	}
	CHECK(lazy == 0);
	const struct ckpt_section *ns = &c.sec[CKPT_SEC_NAMES];
	size_t off = 0;
	for (uint64_t i = 0; i < ns->count; i++) {
		struct ckpt_name nm;
		off = ckpt_name_at(ns, off, &nm);
		CHECK(nm.name_len >= 1 && nm.cid_len >= 1 && off <= ns->len);
	}
	CHECK(off == ns->len);
	const struct ckpt_section *ds = &c.sec[CKPT_SEC_DROPS];
	for (size_t i = 1; i < ds->count; i++) {
		struct rec_drop d0, d1;
		ckpt_drop_at(ds, i - 1, &d0);
		ckpt_drop_at(ds, i, &d1);
		CHECK(d0.to_seq < d1.from_seq && d0.last_id < d1.first_id);
	}

	size_t n;
	uint8_t *re = encode(&c, &n);
	int ordered = c.skipped == 0 && writer_leaves(&c);
	for (int t = 1; t <= CKPT_SEC_KNOWN; t++)
		ordered = ordered && c.sec[t].flags == 0 && (t == 1 || c.sec[t - 1].data < c.sec[t].data);
	if (ordered)
		CHECK(n == len && memcmp(re, buf, len) == 0);
	CHECK(ckpt_decode(re, n, &again) == 0);
	for (int t = 1; t <= CKPT_SEC_KNOWN; t++)
		CHECK(same_section(&c.sec[t], &again.sec[t]));
	free(re);
	free(buf);
	return 0;
}
