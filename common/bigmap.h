/*
 * bigmap.h - large anonymous mappings backed by transparent huge pages where the kernel
 * offers them.
 *
 * An open fills tens of megabytes of fresh memory at once (the checkpoint file's bytes, the
 * B-tree's nodes). With 4 KiB pages the kernel allocates, charges and zeroes each page
 * separately, which cost about a third of an open from a checkpoint; with 2 MiB pages it does
 * that 512 times less often. The advice is only advice: where huge pages are off or none are
 * free, the mapping is an ordinary one and works the same.
 */
#ifndef CS_BIGMAP_H
#define CS_BIGMAP_H

#include <stddef.h>

/* The granule mappings are made in: the huge page size of x86-64 and arm64 (4 KiB base). */
#define CS_BIGMAP_ALIGN ((size_t)2 << 20)

/* The bytes cs_bigmap_alloc(len) maps: len (at least 1) rounded up to CS_BIGMAP_ALIGN. The
 * caller may use all of them. len must be at most SIZE_MAX / 2. */
size_t cs_bigmap_size(size_t len);

/* Maps cs_bigmap_size(len) bytes of zeroed, readable and writable memory, aligned to
 * CS_BIGMAP_ALIGN, and advises huge pages for it when len is at least CS_BIGMAP_ALIGN. Pages
 * are faulted in when first touched.
 * Returns NULL when the kernel refuses the mapping. Free with cs_bigmap_free(p, len). */
void *cs_bigmap_alloc(size_t len);

/* Unmaps what cs_bigmap_alloc(len) returned (the same len); p NULL does nothing. */
void cs_bigmap_free(void *p, size_t len);

#endif
