/*
 * cs_limits.h - every bound the store enforces, in one place (named so that it never hides
 * the C library's <limits.h>).
 *
 * A caller who crosses a public bound gets CS_ELIMIT. Bounds on disk data are checked by the
 * readers before any allocation or loop depends on them.
 */
#ifndef CS_LIMITS_H
#define CS_LIMITS_H

#include "cidstore.h"

/* Log records. */
#define CS_REC_HEADER      40u                  /* bytes of a record header */
#define CS_REC_ALIGN       8u                   /* records start at multiples of this */
#define CS_KEY_MAX         (2u + CS_DIGEST_MAX) /* index key: hash code + digest */
#define CS_BLOCK_META      8u                   /* block payload before the digest */
#define CS_REC_PAYLOAD_MAX (CS_BLOCK_META + CS_DIGEST_MAX + CS_BLOCK_MAX)
#define CS_REC_MAX         (CS_REC_HEADER + CS_REC_PAYLOAD_MAX + CS_REC_ALIGN)

/* Segments. */
#define CS_SEG_HEADER   64u         /* bytes of a segment header */
#define CS_SEG_MIN      (16u << 20) /* smallest segment_bytes option */
#define CS_SEG_MAX      (1u << 30)  /* offsets are 32-bit: keep well inside */
#define CS_SEG_DEFAULT  (256u << 20)
#define CS_SEGMENTS_MAX 65536u /* segment files in one store */

/* Group commit. */
#define CS_BATCH_MIN           (CS_REC_MAX + CS_REC_MAX / 4)
#define CS_BATCH_DEFAULT       (8u << 20)
#define CS_BATCH_MAX           (64u << 20)
#define CS_INTERVAL_MS_DEFAULT 10u
#define CS_INTERVAL_MS_MAX     60000u

/* The I/O retry bound for EINTR/EAGAIN and short transfers. */
#define CS_IO_RETRIES 16

/* Checkpoints: the default log bytes between background checkpoints. */
#define CS_CKPT_BYTES_DEFAULT (64u << 20)

/* Index. */
#define CS_BTREE_HEIGHT_MAX 16

/* The add pipeline (engine/addpipe.c): hashing threads per add, and ring slots per thread.
 * Two per thread let each thread start the next block while the one it just hashed waits for
 * the blocks before it to be put; the ring adds two (one being filled, one being put). The
 * ring's bytes are at most (ADD_SLOTS_PER_THREAD * ADD_THREADS_MAX + 2) * (1 MiB + 32):
 * 35 MiB for the largest chunks and all threads, 1.5 MiB for the defaults on 2 cores. */
#define ADD_THREADS_MAX      16u
#define ADD_SLOTS_PER_THREAD 2u

_Static_assert(CS_REC_MAX <= CS_BATCH_MIN, "a batch holds at least one largest record");
_Static_assert(2 * CS_BATCH_MIN <= CS_SEG_MIN, "the smallest segment holds two batches");
/* At open, batch_bytes <= segment_bytes / 2 is checked for the options in use. */
_Static_assert(CS_SEG_HEADER + CS_REC_MAX < CS_SEG_MIN, "a segment holds a largest record");
_Static_assert(CS_SEG_MAX <= 0xffffffffu, "offsets in the index are 32-bit");
_Static_assert(CS_REC_HEADER % CS_REC_ALIGN == 0, "payloads start aligned");
_Static_assert(CS_SEG_HEADER % CS_REC_ALIGN == 0, "first record aligned");
_Static_assert(ADD_THREADS_MAX == CS_ADD_THREADS_MAX, "public and internal bounds agree");
_Static_assert(CS_CID_MAX >= 4 + 2 + CS_DIGEST_MAX, "a v1 CID of any supported hash fits");

#endif
