/*
 * unixfs.h - UnixFS DAGs: the streaming balanced file builder, the range reader, directory
 * and symlink nodes (internal).
 *
 * All are independent of the store: builders hand finished blocks to an emit callback, the
 * reader asks a get callback for blocks, so tests run them on an in-memory map and
 * engine/file.c runs them on a cs_store (and walks the file system for cs_add_path).
 *
 * Limits (candidates for common/limits.h):
 *   UFS_LINKS_MAX        174: links per node the builder writes (Kubo, the JS importer).
 *   UFS_BUILD_LEVELS_MAX 10: node levels above the leaves the builder keeps; 174^9 > 2^64,
 *                        so no 64-bit file size needs more, even with 1-byte chunks.
 *   UFS_READ_DEPTH_MAX   64: dag-pb levels the reader descends (its explicit stack); deeper
 *                        DAGs (only hostile or exotic ones) get CS_ELIMIT.
 *   UFS_NODE_MAX         bytes of the largest internal node the builder writes.
 *   Chunks: CHUNK_SIZE_MAX (1 MiB, Kubo's limit) in chunker.h.
 *   UFS_DIR_SHARD_BYTES  262144: a directory whose links' name bytes plus CID bytes exceed
 *                        this is written as a HAMT shard, as Kubo and the importer do.
 *   UFS_DIR_ENTRIES_MAX  2^24: entries of one directory (the builder holds them all).
 *   UFS_NAME_MAX         255: bytes of one directory entry's name (Linux's NAME_MAX).
 *   UFS_SYMLINK_MAX      4096: bytes of a symlink's target (Linux's PATH_MAX).
 *   UFS_DIR_DEPTH_MAX    128: directory levels cs_add_path descends (one open fd each).
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

/* Where a builder may send its leaves instead of emitting each at once: to the add pipeline
 * (engine/addpipe.c), which hashes them on other threads. submit takes one leaf block in file
 * order (data: len bytes, borrowed for the call; codec; size: its bytes of file); for each,
 * in the same order, ufs_builder_link() must be called, from inside a later submit or
 * flush on the builder's thread. flush must link every leaf submitted so far; the builder
 * calls it before it builds the top of the tree. A negative return is the builder's error. */
struct ufs_leaf_sink {
	int (*submit)(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t size);
	int (*flush)(void *ctx);
};

/* Sends b's leaves to sink (borrowed until b is freed) with ctx, from the next leaf on.
 * Errors: -ENOMEM (the leaf buffer of a dag-pb-leaf profile). */
int ufs_builder_set_sink(struct ufs_builder *b, const struct ufs_leaf_sink *sink, void *ctx);

/* Links the next submitted leaf: cid is its CIDv1 (the builder links a dag-pb leaf by its
 * CIDv0 in the v0 profile), len its block's bytes, size its bytes of file. Errors: those of
 * the tree above it (the emit callback's, CS_ELIMIT). */
int ufs_builder_link(struct ufs_builder *b, const cs_cid *cid, size_t len, uint64_t size);

/* The largest leaf block the builder submits: its chunker's largest chunk, plus the dag-pb
 * framing for a dag-pb-leaf profile. */
size_t ufs_builder_leaf_max(const struct ufs_builder *b);

/* Leaves and nodes emitted so far, and the tree height of the finished root (0 for a root
 * that is a leaf), for tests. */
uint64_t ufs_builder_leaves(const struct ufs_builder *b);
unsigned ufs_builder_height(const struct ufs_builder *b);

void ufs_builder_free(struct ufs_builder *b);

/* Resets a builder (finished, failed or in the middle of a file) to start a new file with
 * the same parameters, keeping its buffers: cs_add_path adds many files with one. */
void ufs_builder_reset(struct ufs_builder *b);

/* The Tsize of the finished root: the root block's bytes plus its links' Tsizes, which is
 * what a directory link to the file carries (for a root that is a leaf: the leaf's bytes). */
uint64_t ufs_builder_tsize(const struct ufs_builder *b);

/* Reads bytes [offset, offset + len) of the file rooted at root into buf; see cs_cat() for
 * the semantics and error codes. touched (may be NULL) receives the blocks read. With buf
 * NULL nothing is copied: the walk only checks the range (cs_file_check), asking get for raw
 * leaves' lengths only (buf NULL, as cs_block_get allows); such calls count in touched. */
int ufs_read(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t offset, uint8_t *buf,
             size_t len, size_t *got, uint64_t *touched);

/* A raw leaf that a read wants whole: its CID, and where its len bytes go (borrowed). */
struct ufs_leaf {
	cs_cid cid;
	uint8_t *buf;
	size_t len;
};

#define UFS_RUN_MAX 32 /* leaves the reader gathers before it asks for them at once */

/* Gets the n leaves of v (n at most UFS_RUN_MAX) into their buffers as n calls of a
 * ufs_get_fn in order would, each leaf being exactly len bytes, and stops at the first that
 * fails: returns 0 with *done = n, or that leaf's error with *done its index and the leaves
 * before it read. Errors: CS_ENOTFOUND, CS_EBUFSIZE (the block is not v[*done].len bytes:
 * *len its length), and the get callback's others. */
typedef int (*ufs_get_run_fn)(void *ctx, const struct ufs_leaf *v, int n, int *done, size_t *len);

/* ufs_read() that gathers the consecutive raw leaves a read wants whole (up to UFS_RUN_MAX,
 * in file order) and gets them with one call of get_run, which may read them together;
 * everything else it gets through get, in the same order as ufs_read(), so the blocks read,
 * touched and the error met first are those of ufs_read(). get_run NULL is ufs_read(). */
int ufs_read_run(ufs_get_fn get, ufs_get_run_fn get_run, void *ctx, const cs_cid *root,
                 uint64_t offset, uint8_t *buf, size_t len, size_t *got, uint64_t *touched);

/* A reader of one file kept across reads (cs_file_open): it reads the root once, and keeps
 * each level's node between reads (invariant 6 of unixfs.c), so sequential reads in pieces
 * fetch each node once rather than once per piece. get and get_run (may be NULL) and ctx are
 * borrowed for the reader's life; root is copied. touched (may be NULL) receives the blocks
 * read. Errors: those of ufs_read() for the root. */
struct ufs_reader;
int ufs_reader_new(ufs_get_fn get, ufs_get_run_fn get_run, void *ctx, const cs_cid *root,
                   struct ufs_reader **out, uint64_t *touched);

/* The file's length, from its root. */
uint64_t ufs_reader_size(const struct ufs_reader *r);

/* ufs_read_run() through the reader: the same bytes and errors; touched counts only the
 * blocks this call read (nodes kept from earlier reads are not read again). A failed read
 * leaves the reader usable. One thread at a time. */
int ufs_reader_read(struct ufs_reader *r, uint64_t offset, uint8_t *buf, size_t len, size_t *got,
                    uint64_t *touched);

/* Frees r (NULL is a no-op). */
void ufs_reader_free(struct ufs_reader *r);

/* Sets *size to the length of the file rooted at root. Errors: as ufs_read. */
int ufs_file_size(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t *size);

/* ---- Directories and symlinks ---------------------------------------------------------- */

#define UFS_DIR_SHARD_BYTES 262144u
#define UFS_DIR_ENTRIES_MAX (1u << 24)
#define UFS_HAMT_FANOUT     256u /* slots of a shard node: 8 bits of the hash per level */
#define UFS_HAMT_LEVELS     8u   /* shard levels: the 64 bits of the hash */
#define UFS_NAME_MAX        255u
#define UFS_SYMLINK_MAX     4096u
#define UFS_DIR_DEPTH_MAX   128u

_Static_assert(UFS_DIR_SHARD_BYTES == CS_DIR_SHARD_BYTES, "public and internal bounds agree");
_Static_assert(UFS_DIR_ENTRIES_MAX == CS_DIR_ENTRIES_MAX, "public and internal bounds agree");
_Static_assert(UFS_NAME_MAX == CS_DIR_NAME_MAX, "public and internal bounds agree");
_Static_assert(UFS_DIR_DEPTH_MAX == CS_ADD_DEPTH_MAX, "public and internal bounds agree");
/* A flat directory stays below UFS_DIR_SHARD_BYTES of names and CIDs (each CID at least 34
 * bytes, so at most 7710 links); each link adds at most 1 + 3 (link key, length) + 2 (name
 * key, length) + 2 (hash key, length) + 11 (Tsize) bytes of framing: well inside a block. */
_Static_assert(UFS_DIR_SHARD_BYTES + (UFS_DIR_SHARD_BYTES / 34 + 1) * 19 + 4 <= CS_BLOCK_MAX,
               "a flat directory node fits a block");
/* A shard node: its Data (at most 2 + 2 + 32 + 2 + 3 bytes and 4 of framing), then per slot
 * a link of a two-digit label and a name, a CID and the same framing as above. */
#define UFS_HAMT_NODE_MAX (45 + UFS_HAMT_FANOUT * (2 + UFS_NAME_MAX + CS_CID_MAX + 19))
_Static_assert(UFS_HAMT_NODE_MAX <= CS_BLOCK_MAX, "a shard node fits a block");

/* Checks one entry name as every directory takes it: 1..UFS_NAME_MAX bytes, no '/' and no
 * NUL, neither "." nor "..". Errors: CS_EINVAL, CS_ELIMIT (too long); the message quotes the
 * defect but never the name's bytes (they may be anything). */
int ufs_name_check(const uint8_t *name, size_t len);

struct ufs_dir;

/* Allocates a directory builder whose node is emitted through emit(ctx, ...) with p's CID
 * version (CIDv0 for v0) and hash. Errors: as ufs_params_check, -ENOMEM. */
int ufs_dir_new(const struct ufs_params *p, ufs_emit_fn emit, void *ctx, struct ufs_dir **out);

/* Adds an entry: name (len bytes, borrowed, checked by ufs_name_check), the entry's root cid
 * (stored in the link as given) and its Tsize. Entries may come in any order. Errors:
 * CS_EINVAL, CS_ELIMIT (a bad name, or more than UFS_DIR_ENTRIES_MAX entries), -ENOMEM; a
 * failure is sticky. */
int ufs_dir_add(struct ufs_dir *d, const uint8_t *name, size_t len, const cs_cid *cid,
                uint64_t tsize);

/* The links' name bytes plus CID bytes so far: Kubo's estimate of the node's size. */
uint64_t ufs_dir_estimate(const struct ufs_dir *d);

/* Emits the directory and sets *root and *tsize (may be NULL: the bytes of its nodes plus
 * its entries' Tsizes). While the estimate is at most UFS_DIR_SHARD_BYTES, that is one node
 * (UnixFS Data {Type = Directory}) with the links sorted by name bytes; above it, a HAMT
 * shard (unixfs.c), its child shards emitted before it. Errors: CS_EINVAL (two entries share
 * a name), CS_ELIMIT (two names whose 64-bit murmur3 hashes are equal, in a shard),
 * CS_ECORRUPT (the Tsizes overflow 64 bits), -ENOMEM, the emit callback's. The builder is
 * spent (free it). */
int ufs_dir_finish(struct ufs_dir *d, cs_cid *root, uint64_t *tsize);

void ufs_dir_free(struct ufs_dir *d);

/* Emits a UnixFS Symlink node (Type = Symlink, Data = target, no links) and sets *cid and
 * *tsize (may be NULL; the node's bytes). Errors: CS_ELIMIT (target above UFS_SYMLINK_MAX),
 * the emit callback's. */
int ufs_symlink(const struct ufs_params *p, ufs_emit_fn emit, void *ctx, const uint8_t *target,
                size_t len, cs_cid *cid, uint64_t *tsize);

/* Sets *tsize to what a directory link to the block (codec, len bytes at blk) carries: a raw
 * block's length; a dag-pb node's length plus its links' Tsizes (a link without one counts
 * 0). Errors: CS_EINVAL (another codec, or not valid dag-pb), CS_ECORRUPT (the sum
 * overflows 64 bits). */
int ufs_tsize_of(uint64_t codec, const uint8_t *blk, size_t len, uint64_t *tsize);

#endif
