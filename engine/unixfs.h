/*
 * unixfs.h - UnixFS file DAGs: the streaming balanced builder and the range reader
 * (internal).
 *
 * Both are independent of the store: the builder hands finished blocks to an emit callback,
 * the reader asks a get callback for blocks, so tests run them on an in-memory map and
 * engine/file.c runs them on a cs_store.
 *
 * Limits (candidates for common/limits.h):
 *   UFS_LINKS_MAX        174: links per node the builder writes (Kubo, the JS importer).
 *   UFS_BUILD_LEVELS_MAX 10: node levels above the leaves the builder keeps; 174^9 > 2^64,
 *                        so no 64-bit file size needs more, even with 1-byte chunks.
 *   UFS_READ_DEPTH_MAX   64: dag-pb levels the reader descends (its explicit stack); deeper
 *                        DAGs (only hostile or exotic ones) get CS_ELIMIT.
 *   UFS_NODE_MAX         bytes of the largest internal node the builder writes.
 *   Chunks: CHUNK_SIZE_MAX (1 MiB, Kubo's limit) in chunker.h.
 */
#ifndef CS_UNIXFS_H
#define CS_UNIXFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunker.h"
#include "cidstore.h"

#define UFS_LINKS_MAX        174
#define UFS_BUILD_LEVELS_MAX 10
#define UFS_READ_DEPTH_MAX   64
/* A link: key, 2-byte length, body (Hash key, length, CID; empty Name; Tsize key + 10-byte
 * varint). The node adds the Data key and 3-byte length, then Type (2), filesize (1 + 10)
 * and 174 blocksizes of 1 + 10 bytes. */
#define UFS_LINK_MAX (1 + 2 + 1 + 1 + CS_CID_MAX + 2 + 1 + 10)
#define UFS_NODE_MAX (UFS_LINKS_MAX * UFS_LINK_MAX + 1 + 3 + 2 + 11 + UFS_LINKS_MAX * 11)

_Static_assert(UFS_LINKS_MAX == CS_ADD_LINKS_MAX, "public and internal bounds agree");
_Static_assert(CHUNK_SIZE_MAX == CS_ADD_CHUNK_MAX, "public and internal bounds agree");
_Static_assert(UFS_NODE_MAX <= CS_BLOCK_MAX, "a node fits a block");
_Static_assert(CHUNK_SIZE_MAX + 32 <= CS_BLOCK_MAX, "a dag-pb leaf fits a block");

/* Puts one block of len bytes (borrowed for the call) and sets *cid_out to its CIDv1 with
 * the given codec and hash function. Returns 0 or a negative code, which the builder
 * returns to its caller. */
typedef int (*ufs_emit_fn)(void *ctx, const uint8_t *data, size_t len, uint64_t codec,
                           uint64_t hash, cs_cid *cid_out);

/* Gets the block named cid into buf (capacity cap) and sets *len to its size, as
 * cs_block_get() does: CS_EBUFSIZE with *len set when cap is too small, CS_ENOTFOUND when it
 * is absent. */
typedef int (*ufs_get_fn)(void *ctx, const cs_cid *cid, uint8_t *buf, size_t cap, size_t *len);

struct ufs_params {
	int cid_version; /* 0 or 1: of the dag-pb nodes (raw leaves are always v1) */
	bool raw_leaves;
	uint64_t hash;       /* multihash code for every block */
	int chunker;         /* CS_CHUNK_FIXED or CS_CHUNK_CDC */
	uint32_t chunk_size; /* see chunker_init() */
};

/* Checks p as cs_add_begin documents. Errors: CS_EINVAL, CS_ELIMIT, CS_EUNSUPPORTED. */
int ufs_params_check(const struct ufs_params *p);

struct ufs_builder;

/* Allocates a builder that emits through emit(ctx, ...). Errors: as ufs_params_check,
 * -ENOMEM. */
int ufs_builder_new(const struct ufs_params *p, ufs_emit_fn emit, void *ctx,
                    struct ufs_builder **out);

/* Feeds len bytes (borrowed). A failure is sticky: later calls return it. */
int ufs_builder_write(struct ufs_builder *b, const void *data, size_t len);

/* Emits the last chunk and collapses the levels into the root; sets *root and *size (may be
 * NULL). The builder is spent afterwards (free it). */
int ufs_builder_finish(struct ufs_builder *b, cs_cid *root, uint64_t *size);

/* Leaves and nodes emitted so far, and the tree height of the finished root (0 for a root
 * that is a leaf), for tests. */
uint64_t ufs_builder_leaves(const struct ufs_builder *b);
unsigned ufs_builder_height(const struct ufs_builder *b);

void ufs_builder_free(struct ufs_builder *b);

/* Reads bytes [offset, offset + len) of the file rooted at root into buf; see cs_cat() for
 * the semantics and error codes. touched (may be NULL) receives the blocks read. */
int ufs_read(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t offset, uint8_t *buf,
             size_t len, size_t *got, uint64_t *touched);

/* Sets *size to the length of the file rooted at root. Errors: as ufs_read. */
int ufs_file_size(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t *size);

#endif
