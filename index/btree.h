/*
 * btree.h - the in-memory B+tree from multihash key to log location (internal).
 *
 * Keys are CS_KEY_MAX bytes, compared with memcmp. Values are small fixed records. The tree
 * is not thread-safe: the engine guards it with a reader-writer lock. Nodes come from a pool
 * that grows in slabs, so inserts allocate only when a slab runs out.
 */
#ifndef CS_BTREE_H
#define CS_BTREE_H

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

/* Calls fn for every entry in key order; a nonzero return stops the walk and is returned. */
int idx_walk(const struct idx *t,
	     int (*fn)(void *ctx, const uint8_t *key, const struct idx_val *val), void *ctx);

size_t idx_count(const struct idx *t);
/* Bytes of memory the tree holds: its node slabs, free nodes included, and the pool's own
 * structures. Nodes freed by deletes stay in the pool for later inserts until idx_destroy(). */
size_t idx_bytes(const struct idx *t);
int idx_height(const struct idx *t);

/* Whole-tree check (slow tier): ordering, fill, separator keys, leaf chain, count, height.
 * Returns 0, or CS_ECORRUPT with cs_errmsg() naming the broken invariant. */
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
	IDX_FAULT_CHAIN,     /* makes the first leaf's successor skip a leaf */
	IDX_FAULT_COUNT,     /* makes the entry count one too high */
};
void idx_test_fail_slab(struct idx *t, unsigned countdown);
int idx_test_corrupt(struct idx *t, int fault);

#endif
