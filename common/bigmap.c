/*
 * bigmap.c - large anonymous mappings advised to use huge pages (see bigmap.h).
 */
#include "bigmap.h"

#include <stdint.h>
#include <sys/mman.h>

#include "err.h"

size_t cs_bigmap_size(size_t len)
{
	CS_ASSERT(len <= SIZE_MAX / 2);
	if (len == 0)
		len = 1;
	return (len + CS_BIGMAP_ALIGN - 1) & ~(CS_BIGMAP_ALIGN - 1);
}

void *cs_bigmap_alloc(size_t len)
{
	size_t n = cs_bigmap_size(len);
	/* One granule more than asked, so that an aligned run of n bytes lies inside; the rest is
	 * unmapped again. A huge page needs an aligned address, and not every kernel aligns a
	 * large anonymous mapping by itself. */
	uint8_t *p = mmap(NULL, n + CS_BIGMAP_ALIGN, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uint8_t *a = (uint8_t *)(((uintptr_t)p + CS_BIGMAP_ALIGN - 1) & ~(CS_BIGMAP_ALIGN - 1));
	size_t head = (size_t)(a - p);
	if (head > 0)
		munmap(p, head);
	munmap(a + n, CS_BIGMAP_ALIGN - head);
	/* Not for less than a huge page: the first touch would fault in and zero all of it.
	 * Fails only where the kernel has no huge pages (EINVAL): the memory serves as it is. */
	if (len >= CS_BIGMAP_ALIGN)
		(void)madvise(a, n, MADV_HUGEPAGE);
	return a;
}

void cs_bigmap_free(void *p, size_t len)
{
	if (p != NULL)
		munmap(p, cs_bigmap_size(len));
}
