/*
 * endian.h - little-endian field access for on-disk structures.
 *
 * Every on-disk field is encoded and decoded one at a time through these helpers, never by
 * casting a struct onto a buffer: the layout is then independent of the compiler's padding
 * and the host's byte order.
 */
#ifndef CS_ENDIAN_H
#define CS_ENDIAN_H

#include <stdint.h>
#include <string.h>

static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* Each field is one unaligned load or store (memcpy, which compilers turn into a single
 * move), swapped on a big-endian host. A loop over the bytes, as these were first written, is
 * not reliably merged into one move: GCC at -O2 kept the loops, and they were a fifth of an
 * open from a checkpoint, four get_le32() for each of a million entries. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CS_LE32(v) (v)
#define CS_LE64(v) (v)
#else
#define CS_LE32(v) __builtin_bswap32(v)
#define CS_LE64(v) __builtin_bswap64(v)
#endif

static inline void put_le32(uint8_t *p, uint32_t v)
{
	v = CS_LE32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
	v = CS_LE64(v);
	memcpy(p, &v, sizeof(v));
}

static inline uint16_t get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return CS_LE32(v);
}

static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return CS_LE64(v);
}

#endif
