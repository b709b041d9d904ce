/*
 * store.h - store functions for the rest of engine/ (internal).
 */
#ifndef CS_STORE_H
#define CS_STORE_H

#include "cidstore.h"

/* cs_block_put() with a choice: wait = 0 returns once the block is in the log's batch buffer
 * (readable at once, durable after the next cs_store_sync()) whatever the durability mode.
 * For writers of many blocks that make them durable together, as an add does at its end. */
int store_put(cs_store *s, const void *data, size_t len, uint64_t codec, uint64_t hash,
	      int wait, cs_cid *out);

/* store_put() after the hash: puts data (len bytes, borrowed for the call) whose digest under
 * hash (CS_DIGEST_MAX bytes, borrowed) the caller computed, e.g. on another thread, and sets
 * *out to its CIDv1. The digest is trusted: a wrong one stores the bytes under a wrong CID.
 * Everything else (checks, presence, append, index) is as in store_put(). Thread-safe. */
int store_put_hashed(cs_store *s, const uint8_t *digest, const void *data, size_t len,
		     uint64_t codec, uint64_t hash, int wait, cs_cid *out);

struct io;

/* For tests: when set, cs_store_open() takes its I/O backend from this factory instead of
 * choosing one (the fault-injecting backend of the reliability tests). Set it before any
 * open; not for production use. */
extern int (*store_io_factory)(struct io **out);

#endif
