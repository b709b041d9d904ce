/*
 * addpipe.h - the add pipeline: blocks hashed on a small pool of threads, put into the store
 * in the order they were submitted (internal).
 *
 * An add submits its leaves one by one from its calling thread; the pipeline copies each into
 * a slot of a ring sized at creation, hands the slots to the hashing threads in order, and,
 * on the calling thread again, puts each block with store_put_hashed() once it and every
 * block before it are hashed, then reports it through the done callback. So the log, the
 * index and the caller see the blocks in submission order, exactly as if each had been put
 * with store_put() at its turn, while the hashing of up to `threads` blocks overlaps.
 */
#ifndef CS_ADDPIPE_H
#define CS_ADDPIPE_H

#include <stddef.h>
#include <stdint.h>

#include "cidstore.h"

struct addpipe;

/* Told, on the thread that called ap_submit() or ap_flush(), that the block of len bytes and
 * codec, holding `size` bytes of file, is in the store as cid (a CIDv1, borrowed for the
 * call). Called once per submitted block, in submission order. A negative return kills the
 * pipeline: it is returned now and by every later call. */
typedef int (*ap_done_fn)(void *ctx, const cs_cid *cid, size_t len, uint64_t codec, uint64_t size);

/* Resolves a caller's thread count: 0 means the online CPUs, capped at ADD_THREADS_MAX.
 * Errors: CS_ELIMIT (above ADD_THREADS_MAX). */
int ap_threads_of(unsigned want, unsigned *out);

/* Starts threads (1..ADD_THREADS_MAX) hashing threads with the hash function code hash, and
 * a ring of ADD_SLOTS_PER_THREAD * threads + 2 slots of slot_cap bytes (at most
 * CS_BLOCK_MAX) each, into store s (borrowed until ap_free). *out is owned by the caller and
 * freed with ap_free(). Errors: CS_EINVAL, CS_ELIMIT, -ENOMEM, -EAGAIN (no thread). */
int ap_new(cs_store *s, uint64_t hash, unsigned threads, size_t slot_cap, ap_done_fn done,
           void *ctx, struct addpipe **out);

/* Submits one block: copies data (len bytes, at most slot_cap, borrowed for the call) into a
 * free slot, waiting for the oldest block's hash and putting it when the ring is full, and
 * puts every block already hashed at the head of the ring. Errors: CS_ELIMIT (len above
 * slot_cap), those of cid_hash (from the hashing thread, with its message), of
 * store_put_hashed and of the done callback. After an error the pipeline is dead. */
int ap_submit(struct addpipe *p, const uint8_t *data, size_t len, uint64_t codec, uint64_t size);

/* Waits for every submitted block and puts it, in order. Errors: as ap_submit. */
int ap_flush(struct addpipe *p);

/* Drops the blocks submitted but not yet put and clears a failure, for a new file. */
void ap_reset(struct addpipe *p);

/* Hashing threads running. */
unsigned ap_thread_count(const struct addpipe *p);

/* Stops and joins the threads, then frees p and its ring; blocks not yet put are dropped.
 * NULL is ignored. */
void ap_free(struct addpipe *p);

#endif
