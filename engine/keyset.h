/*
 * keyset.h - a hash set of index keys with a 32-bit count per key (internal).
 *
 * GC's mark set, the visited set of a DAG walk and the pins' cover counts are sets of
 * CS_KEY_MAX-byte multihash keys. The keys are digests of a cryptographic hash, so their
 * bytes are already uniform: the slot index is read straight from the digest, no hashing.
 * Open addressing with linear probing; the table doubles at 3/4 load and never shrinks.
 * Not thread-safe: callers lock.
 */
#ifndef CS_KEYSET_H
#define CS_KEYSET_H

#include <stddef.h>
#include <stdint.h>

#include "cs_limits.h"

struct keyset {
	uint8_t *keys;   /* owned; cap * CS_KEY_MAX bytes */
	uint32_t *count; /* owned; cap counts, 0 = empty slot */
	size_t cap;      /* a power of two, or 0 before the first insert */
	size_t n;        /* slots in use */
};

/* An empty set; needs no allocation until the first insert. */
#define KEYSET_INIT                                                                                \
	{                                                                                          \
		NULL, NULL, 0, 0                                                                   \
	}

/* Frees the tables; the set is empty and reusable afterwards. */
void keyset_free(struct keyset *ks);

/* Adds delta (>= 1) to key's count, inserting it with count delta when absent. Returns 1 if
 * the key was new, 0 if it was present, or -ENOMEM (the set is unchanged). */
int keyset_add(struct keyset *ks, const uint8_t key[CS_KEY_MAX], uint32_t delta);

/* key's count, or 0 when absent. */
uint32_t keyset_get(const struct keyset *ks, const uint8_t key[CS_KEY_MAX]);

/* Subtracts 1 from key's count and removes it at 0. Returns the new count, or -1 when the
 * key was absent. */
int64_t keyset_dec(struct keyset *ks, const uint8_t key[CS_KEY_MAX]);

#endif
