/*
 * keyset.c - open-addressing hash set of multihash keys with counts.
 *
 * Invariants:
 *   K1. cap is 0 or a power of two, and n <= 3/4 cap after every insert, so a probe always
 *       meets an empty slot and every probe loop ends within cap steps.
 *   K2. A slot is in use exactly when its count is nonzero.
 *   K3. Removal uses backward-shift deletion (no tombstones): after it, every key is still
 *       reachable from its home slot by a probe that meets no empty slot.
 */
#include "keyset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* The home slot: 8 digest bytes (the key's bytes 2..9), uniform since they are a digest. */
static size_t home(const uint8_t *key, size_t cap)
{
	uint64_t h;
	memcpy(&h, key + 2, sizeof(h));
	return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static size_t find(const struct keyset *ks, const uint8_t *key, int *found)
{
	size_t i = home(key, ks->cap);

	for (size_t step = 0; step < ks->cap; step++, i = (i + 1) & (ks->cap - 1)) {
		if (ks->count[i] == 0) {
			*found = 0;
			return i;
		}
		if (memcmp(ks->keys + i * CS_KEY_MAX, key, CS_KEY_MAX) == 0) {
			*found = 1;
			return i;
		}
	}
	CS_ASSERT(!"keyset full"); /* K1 */
	return 0;
}

void keyset_free(struct keyset *ks)
{
	free(ks->keys);
	free(ks->count);
	*ks = (struct keyset)KEYSET_INIT;
}

static int grow(struct keyset *ks)
{
	/* Small to start: GC keeps 256 of these (one per part of its mark set), most of them
	 * small in a small store. */
	size_t cap = ks->cap ? ks->cap * 2 : 16;
	struct keyset nk = {malloc(cap * CS_KEY_MAX), calloc(cap, sizeof(uint32_t)), cap, 0};
	int found;

	if (nk.keys == NULL || nk.count == NULL) {
		keyset_free(&nk);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ks->cap; i++) {
		if (ks->count[i] == 0)
			continue;
		size_t j = find(&nk, ks->keys + i * CS_KEY_MAX, &found);
		memcpy(nk.keys + j * CS_KEY_MAX, ks->keys + i * CS_KEY_MAX, CS_KEY_MAX);
		nk.count[j] = ks->count[i];
		nk.n++;
	}
	keyset_free(ks);
	*ks = nk;
	return 0;
}

int keyset_add(struct keyset *ks, const uint8_t key[CS_KEY_MAX], uint32_t delta)
{
	int found = 0;
	size_t i = 0;

	CS_ASSERT(delta >= 1);
	if (ks->cap > 0)
		i = find(ks, key, &found);
	if (found) {
		CS_ASSERT(ks->count[i] <= UINT32_MAX - delta);
		ks->count[i] += delta;
		return 0;
	}
	if ((ks->n + 1) * 4 > ks->cap * 3) { /* K1 */
		if (grow(ks) != 0)
			return -ENOMEM;
		i = find(ks, key, &found);
	}
	memcpy(ks->keys + i * CS_KEY_MAX, key, CS_KEY_MAX);
	ks->count[i] = delta;
	ks->n++;
	return 1;
}

uint32_t keyset_get(const struct keyset *ks, const uint8_t key[CS_KEY_MAX])
{
	int found;

	if (ks->cap == 0)
		return 0;
	size_t i = find(ks, key, &found);
	return found ? ks->count[i] : 0;
}

int64_t keyset_dec(struct keyset *ks, const uint8_t key[CS_KEY_MAX])
{
	int found;

	if (ks->cap == 0)
		return -1;
	size_t i = find(ks, key, &found);
	if (!found)
		return -1;
	if (--ks->count[i] > 0)
		return ks->count[i];
	/* K3: shift later members of the probe run back into the hole. */
	size_t mask = ks->cap - 1, hole = i;
	for (size_t j = (i + 1) & mask; ks->count[j] != 0; j = (j + 1) & mask) {
		size_t h = home(ks->keys + j * CS_KEY_MAX, ks->cap);
		/* j may move to hole only if its home is not cyclically in (hole, j]. */
		if (((j - h) & mask) >= ((j - hole) & mask)) {
			memcpy(ks->keys + hole * CS_KEY_MAX, ks->keys + j * CS_KEY_MAX, CS_KEY_MAX);
			ks->count[hole] = ks->count[j];
			ks->count[j] = 0;
			hole = j;
		}
	}
	ks->n--;
	return 0;
}
