/*
 * chunker.h - where a file is cut into leaves: fixed-size and content-defined (internal).
 *
 * Fixed (CS_CHUNK_FIXED, Kubo's --chunker size-N): every chunk is `size` bytes but the last.
 *
 * Content-defined (CS_CHUNK_CDC): FastCDC (Xia et al., USENIX ATC 2016) with a Gear rolling
 * hash h = (h << 1) + GEAR[byte] and normalized chunking at level 2. For an average size A
 * (a power of two, default 262144):
 *   min = A / 4 (64 KiB)   no cut is considered before it; hashing starts there;
 *   normal point = A       below it a cut needs the top log2(A) + 2 bits of h zero (20 bits
 *                          for 256 KiB: harder), from it on the top log2(A) - 2 bits (16 bits:
 *                          easier), which pulls chunk sizes toward A;
 *   max = 4 * A (1 MiB)    a cut is forced there.
 * The masks test the top bits because bit k of a Gear hash depends on the last k + 1 bytes
 * only: bits 44..63 see a 45..64-byte window, the low bits would see only a few bytes.
 * Because a cut depends only on the bytes around it (and the distance from the previous cut,
 * through min and the normal point), bytes inserted near the start of a file move the first
 * boundaries only; later chunks come out identical and deduplicate. GEAR is a fixed table
 * committed in chunker.c (splitmix64, see there): changing it changes every CDC CID.
 *
 * A chunker is a small state machine over one chunk at a time; it never holds data.
 */
#ifndef CS_CHUNKER_H
#define CS_CHUNKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidstore.h"

#define CHUNK_SIZE_MAX     (1u << 20)           /* Kubo's limit on a chunk (go-ipfs-chunker) */
#define CHUNK_SIZE_DEFAULT 262144u              /* Kubo's default: size-262144 */
#define CDC_AVG_MIN        1024u                /* smallest CDC average: masks of 8 and 12 bits */
#define CDC_AVG_MAX        (CHUNK_SIZE_MAX / 4) /* max = 4 * average must stay within the limit */
#define CDC_NC_LEVEL       2                    /* FastCDC normalization: mask bits +- 2 */

_Static_assert(CHUNK_SIZE_MAX <= CS_BLOCK_MAX, "a chunk fits a block");
_Static_assert((CDC_AVG_MAX & (CDC_AVG_MAX - 1)) == 0, "CDC averages are powers of two");

/* The Gear table, exported for the test that re-derives it. */
extern const uint64_t chunk_gear[256];

struct chunker {
	int kind;        /* CS_CHUNK_FIXED or CS_CHUNK_CDC */
	uint32_t size;   /* fixed: the chunk size; CDC: the average (normal point) */
	uint32_t min;    /* CDC only */
	uint32_t max;    /* the largest chunk this chunker cuts */
	uint64_t mask_s; /* CDC: tested before the normal point */
	uint64_t mask_l; /* CDC: tested from the normal point on */
	uint64_t hash;   /* CDC: Gear state over the current chunk's scanned bytes */
	size_t scanned;  /* CDC: bytes of the current chunk already scanned */
};

/* Sets up a chunker. Fixed: 1 <= size <= CHUNK_SIZE_MAX. CDC: size (the average) is a power
 * of two in [CDC_AVG_MIN, CDC_AVG_MAX]; 0 means CHUNK_SIZE_DEFAULT for either kind.
 * Errors: CS_EINVAL (bad kind, size 0 after defaults, CDC size not a power of two or too
 * small), CS_ELIMIT (size above the limit). */
int chunker_init(struct chunker *c, int kind, uint32_t size);

/* Finds the end of the chunk that starts at p[0]. p[0..n) are the chunk's first n bytes; on
 * each call until a cut is returned, p must start at the same chunk start and hold at least
 * the bytes of the previous call (the chunker remembers how far it scanned). Returns the
 * chunk's length (1..max) once it is decided, after which the state is reset for the next
 * chunk; or 0 when more bytes are needed. With final (no more bytes will come), returns n
 * (or 0 when n is 0) if no earlier cut exists. Never returns more than n. */
size_t chunker_next(struct chunker *c, const uint8_t *p, size_t n, bool final);

#endif
