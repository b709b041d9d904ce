/*
 * btree.h - the in-memory B+tree from multihash key to log location (internal).
 *
 * Keys are CS_KEY_MAX bytes, compared with memcmp. Values are small fixed records. The tree
 * is not thread-safe: the engine guards it with a reader-writer lock. Nodes come from a pool
 * that grows in slabs, so inserts allocate only when a slab runs out.
 */
#ifndef CS_BTREE_H
#define CS_BTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cs_limits.h"

#define IDX_KEY CS_KEY_MAX

/* Where a block lives. seg/off name the record's header in the log; len is the block's
 * data length; codec its multicodec (the store refuses codecs above 2^32-1). */
struct idx_val {
	uint32_t seg;
	uint32_t off;
	uint32_t len;
	uint32_t codec;
};

struct idx;

/* Creates an empty tree; free with idx_destroy(). Errors: -ENOMEM. */
int idx_create(struct idx **out);
void idx_destroy(struct idx *t);

/* Looks key up. Returns 0 and fills *val, or CS_ENOTFOUND. */
int idx_get(const struct idx *t, const uint8_t key[IDX_KEY], struct idx_val *val);

/* Inserts or replaces. Returns 0 if inserted, 1 if it replaced a value (copied to *old when
 * old is not NULL), or -ENOMEM (the tree is unchanged). */
int idx_put(struct idx *t, const uint8_t key[IDX_KEY], const struct idx_val *val,
	    struct idx_val *old);

/* Makes sure the next idx_put() on t cannot fail: reserves the free nodes the deepest split
 * takes (I8 of btree.c). For a writer that must not fail after it appended to the log.
 * Errors: -ENOMEM (the tree is unchanged). */
int idx_reserve(struct idx *t);

/* Removes key. Returns 0 (old value copied to *old when not NULL) or CS_ENOTFOUND. */
int idx_del(struct idx *t, const uint8_t key[IDX_KEY], struct idx_val *old);

/* Finds the first key strictly greater than `after` (or the smallest key when after is
 * NULL). Returns 0 and fills key/val, or CS_ENOTFOUND at the end. Lets a caller walk the tree
 * in pieces, dropping its lock between steps. */
int idx_next(const struct idx *t, const uint8_t *after, uint8_t key[IDX_KEY],
	     struct idx_val *val);

/* Copies up to max entries whose keys are strictly greater than `after` (NULL: from the
 * smallest), in key order, into keys and vals (borrowed, max slots each). Returns the number
 * copied: fewer than max only at the end. One descent per call, so a walk in pieces costs
 * O(log n) per piece rather than per entry. */
int idx_next_n(const struct idx *t, const uint8_t *after, uint8_t (*keys)[IDX_KEY],
	       struct idx_val *vals, int max);

/* Repacks one piece of the tree, so that memory freed by deletes can be given back while
 * writers wait for at most one piece: the leaves under one inner node of the lowest inner
 * level (at most INNER_CAP + 1 leaves) are packed full, the emptied ones freed, the fill
 * rules restored upwards, and the memory of up to 128 free nodes given back as idx_trim()
 * does. The walk goes in key order: `from` is NULL for the first step, then the cursor the
 * step before wrote to next (next may be from). The cursor is a key, so the caller may drop
 * its lock between steps and let puts and deletes change the tree; a step packs the group
 * holding the smallest key above from and writes a cursor above from. Past the last group,
 * steps only give memory back and leave the cursor as it is. Returns 1 while there is more to
 * do, 0 when the walk is done. Allocates nothing, so it never fails. Entries, their values
 * and their order are unchanged. */
int idx_repack_step(struct idx *t, const uint8_t *from, uint8_t next[IDX_KEY]);

/* Whether a repack would pay: the nodes holding memory (the tree's and the free ones, but a
 * warm few) are more than one slab (256 KiB) and more than 1.2 times what the entries need
 * in full leaves. A tree grown by random puts sits near 1.16 (the B*-tree moves of
 * btree.c); one that deletes thinned out goes far above. */
bool idx_repack_wanted(const struct idx *t);

/* Builds the tree from n entries in strictly increasing key order, bottom-up: leaves as full
 * as the fill rule (I4) lets the last ones be, then each inner level over them. t must be
 * empty. fill(ctx, i, cnt, keys, vals) fills entries i .. i + cnt - 1 into keys[0 .. cnt) and
 * vals[0 .. cnt) (a leaf's arrays; 1 <= cnt <= a leaf's capacity); it is called in order of
 * i, once for each entry, and a nonzero return stops the load and is returned. Errors:
 * CS_EINVAL (t not empty), CS_ECORRUPT (a key not above the one before; the message names the
 * entry), CS_ELIMIT (the tree would exceed CS_BTREE_HEIGHT_MAX), -ENOMEM. On error t is empty
 * again (its pool may have grown). */
int idx_load(struct idx *t, size_t n,
	     int (*fill)(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
			 struct idx_val *vals),
	     void *ctx);

/* idx_load() in parts that may run on different threads at once. idx_load_begin() plans a
 * load of n entries (strictly increasing keys) into the empty tree t as parts (1 ..
 * IDX_LOAD_PARTS_MAX) of consecutive leaves, part 0 about share0 percent of them (0 .. 100;
 * ignored for one part) and the others equal shares of the rest, and reserves every node it
 * needs; *ld (owned, NULL for n == 0) is then freed by idx_load_end(). Part p holds entries
 * idx_load_part_first(ld, p) .. idx_load_part_first(ld, p + 1) - 1. idx_load_part(ld, p, fill,
 * ctx) fills them as idx_load() does, calling fill in order of i for its entries only, and
 * checks that the keys increase within the part; it touches no memory but its own leaves', so
 * different parts may run concurrently (no part twice, nothing else on t meanwhile). Once
 * every part returned, idx_load_end(ld, rc) with rc the first failure of the parts (or of
 * anything else of the caller's; 0 if none) checks the order across the parts and builds the
 * inner levels. Until it returns t is in no state to use: idx_load_end() must follow, even
 * after a failure. Errors of idx_load_begin(): CS_EINVAL, CS_ELIMIT, -ENOMEM as idx_load().
 * idx_load_end() returns rc, else CS_ECORRUPT (a key not above the one before, across parts)
 * or -ENOMEM; on error t is empty again. idx_load() is this with one part. */
#define IDX_LOAD_PARTS_MAX 2
struct idx_load;
int idx_load_begin(struct idx *t, size_t n, unsigned parts, unsigned share0,
		   struct idx_load **ld);
size_t idx_load_part_first(const struct idx_load *ld, unsigned p);
int idx_load_part(struct idx_load *ld, unsigned p,
		  int (*fill)(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
			      struct idx_val *vals),
		  void *ctx);
int idx_load_end(struct idx_load *ld, int rc);

/* A leaf as the tree holds it, byte for byte: the form a checkpoint stores its block index in
 * (docs/FORMAT.md, section 12.3), so that open can use the file's leaves where they lie. A
 * leaf of n entries: n (u16 little-endian), kind 1 (u8), 13 zero bytes, then IDX_LEAF_CAP
 * values (struct idx_val, four u32 little-endian each) of which the first n are used, then
 * IDX_LEAF_CAP keys of IDX_KEY bytes likewise, then zeros to IDX_NODE_BYTES. */
#define IDX_NODE_BYTES 4096u
#define IDX_LEAF_CAP   81u /* entries in a leaf */
#define IDX_LEAF_MIN   (IDX_LEAF_CAP / 2) /* in every leaf but a root one (I4) */

/* Writes the leaf of entries keys[0 .. n) and vals[0 .. n) (1 <= n <= IDX_LEAF_CAP) to
 * img, every byte of it. */
void idx_leaf_image(uint8_t img[IDX_NODE_BYTES], unsigned n, const uint8_t (*keys)[IDX_KEY],
		    const struct idx_val *vals);

/* Reads the leaf in img: its entry count, and its keys and values where they lie in img.
 * Checks the layout (kind, 1 .. IDX_LEAF_CAP entries, every other byte zero), not the keys'
 * order. Errors: CS_ECORRUPT. */
int idx_leaf_view(const uint8_t img[IDX_NODE_BYTES], unsigned *n,
		  const uint8_t (**keys)[IDX_KEY], const struct idx_val **vals);

/* A bulk load whose leaves exist already: the nleaves leaf images (idx_leaf_image) at leaves,
 * page-aligned, holding n entries in all, which become the tree's leaves in place, and the memory they lie in the
 * tree's, from this call on whatever it returns: a private writable mapping (of a file, or
 * anonymous) of nleaves * IDX_NODE_BYTES bytes, which the tree writes to as to its own nodes
 * and unmaps in idx_destroy(), or at once when the load fails. The parts go as idx_load()'s
 * (leaf j of part p for idx_load_part_leaf(ld, p) <= j < idx_load_part_leaf(ld, p + 1)), and
 * each through idx_adopt_part(): it checks its leaves as idx_leaf_view() does, their keys'
 * order and fill (I4: a single leaf may hold any number of entries, the others at least
 * IDX_LEAF_MIN), and calls check(ctx, j, cnt, keys, vals) for each leaf j of the part in
 * order, for checks of the caller's; a nonzero return stops the part and is returned.
 * idx_load_end() ends the load as for idx_load_begin(), and refuses leaves that do not hold
 * n entries in all (CS_ECORRUPT). Errors: as idx_load_begin() and
 * idx_load_part(), the messages naming the leaf. */
int idx_adopt_begin(struct idx *t, uint8_t *leaves, size_t nleaves, size_t n, unsigned parts,
		    unsigned share0, struct idx_load **ld);
size_t idx_load_part_leaf(const struct idx_load *ld, unsigned p);
int idx_adopt_part(struct idx_load *ld, unsigned p,
		   int (*check)(void *ctx, size_t leaf, unsigned cnt,
				const uint8_t (*keys)[IDX_KEY], const struct idx_val *vals),
		   void *ctx);

/* Calls fn for every entry in key order; a nonzero return stops the walk and is returned. */
int idx_walk(const struct idx *t,
	     int (*fn)(void *ctx, const uint8_t *key, const struct idx_val *val), void *ctx);

size_t idx_count(const struct idx *t);
/* Bytes of memory the tree holds: its nodes, the free nodes whose memory the pool still
 * holds, and the pool's own structures; not the nodes idx_trim() gave back. */
size_t idx_bytes(const struct idx *t);

/* Gives the memory of the tree's free nodes back to the OS (madvise MADV_DONTNEED), except a
 * few kept for puts. The nodes stay the pool's: a later put takes them again without
 * allocating (a page fault zero-fills each), so idx_reserve() and I8 count them. Returns the
 * bytes given back. Never fails; a refused madvise leaves nodes as they were. */
size_t idx_trim(struct idx *t);
int idx_height(const struct idx *t);

/* Whole-tree check (slow tier): ordering, fill, separator keys, pointer-free leaves, count,
 * height. Returns 0, or CS_ECORRUPT with cs_errmsg() naming the broken invariant. */
int idx_check(const struct idx *t);

/* For tests only. idx_test_fail_slab() makes the countdown-th slab allocation from now on
 * fail (1: the next one; 0: none), so a test can see a put return -ENOMEM with the tree
 * unchanged. idx_test_corrupt() deliberately breaks one invariant so a test can see
 * idx_check() notice it; it returns 0, or CS_EINVAL when the tree is too small for that fault.
 * The tree may be in any state afterwards: only idx_check(), idx_count() and idx_destroy()
 * are safe on it. */
enum idx_fault {
	IDX_FAULT_ORDER = 1, /* swaps the first two keys of the first leaf */
	IDX_FAULT_SEPARATOR, /* moves the root's first separator into its right subtree */
	IDX_FAULT_LEAF_PTR,  /* gives the first leaf a pointer */
	IDX_FAULT_COUNT,     /* makes the entry count one too high */
};
void idx_test_fail_slab(struct idx *t, unsigned countdown);
int idx_test_corrupt(struct idx *t, int fault);

#endif
