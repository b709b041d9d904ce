/*
 * cidstore.h - the one public header of cidstore, an embeddable, crash-safe,
 * content-addressed block store.
 *
 * A store is a directory. Blocks are appended to a write-ahead log that is also where they
 * live; an in-memory B+tree maps each block's multihash to its place in the log. Open
 * replays the log, truncating a torn tail and refusing silent loss (see docs/FORMAT.md).
 *
 * Conventions
 *  - Every function that can fail returns int: 0 on success, a negative code otherwise.
 *    The engine's own codes lie in the band [CS_ERRBASE_LO, CS_ERRBASE_HI]; any other
 *    negative value is -errno passed through from the OS (as liburing does).
 *  - After a failure, cs_errmsg() gives a sentence naming what went wrong, for the calling
 *    thread, until that thread's next call into the library.
 *  - Pointer lifetimes are given with each declaration: "borrowed" means the library reads
 *    it only during the call.
 *  - A cs_store handle may be used from any number of threads at once, except that
 *    cs_store_close() must not race with other calls on the same handle.
 */
#ifndef CIDSTORE_H
#define CIDSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CS_BUILDING_LIBRARY)
#define CS_API __attribute__((visibility("default")))
#else
#define CS_API
#endif

/* ---- Error codes --------------------------------------------------------------------- */

#define CS_ERRBASE_HI (-30600)
#define CS_ENOTFOUND (-30600)  /* no block, name or pin with that key */
#define CS_ECORRUPT (-30601)   /* on-disk data failed validation; cs_errmsg() names the place */
#define CS_EINVAL (-30602)     /* malformed argument: CID text, codec, option, ... */
#define CS_ELIMIT (-30603)     /* a documented limit was exceeded (block size, ...) */
#define CS_EBUSY (-30604)      /* the store directory is locked by another opener */
#define CS_EPOISONED (-30605)  /* an earlier write or fsync failed; close and reopen */
#define CS_EPINNED (-30606)    /* the block is held by a pin */
#define CS_EFULL (-30607)      /* the disk or quota is full (ENOSPC, EDQUOT); nothing lost */
#define CS_EVERSION (-30608)   /* on-disk format newer than this library understands */
#define CS_EUNSUPPORTED (-30609) /* valid but unsupported: hash function, CID version, ... */
#define CS_EBUFSIZE (-30610)   /* caller's buffer too small; the needed size was returned */
#define CS_ENOTSTORE (-30611)  /* the directory holds something that is not a cidstore */
#define CS_ECLOSED (-30612)    /* the store is closing */
#define CS_ERRBASE_LO (-30612)

/* Names any code returned by this library, including -errno values. Never NULL; the string
 * is static. */
CS_API const char *cs_strerror(int code);

/* The detail of the calling thread's last failed call: a sentence such as
 * "segment 00000003 offset 81920: record checksum mismatch". Valid until the thread's next
 * call into the library. Empty string when the last call succeeded or set no detail. */
CS_API const char *cs_errmsg(void);

/* ---- CIDs ---------------------------------------------------------------------------- */

/* Multicodec codes used by the store. Any codec code is accepted on put; these are named. */
#define CS_CODEC_RAW 0x55
#define CS_CODEC_DAG_PB 0x70
#define CS_CODEC_DAG_CBOR 0x71

/* Multihash function codes the store can compute and index. */
#define CS_HASH_SHA2_256 0x12
#define CS_HASH_BLAKE2B_256 0xb220

#define CS_CID_MAX 64          /* bytes of a binary CID */
#define CS_CID_TEXT_MAX 128    /* bytes of CID text, including the terminating NUL */
#define CS_DIGEST_MAX 32       /* bytes of any supported digest */

/* A CID in its binary form: for v1 <varint 1><varint codec><multihash>; for v0 the bare
 * sha2-256 multihash. A plain value: copy it freely. */
typedef struct cs_cid {
	uint8_t len;
	uint8_t bytes[CS_CID_MAX];
} cs_cid;

/* Parses CID text: CIDv1 in multibase base32 lower ("b...") or base58btc ("z..."), or a
 * CIDv0 ("Qm..."). Errors: CS_EINVAL (with a message naming what is wrong),
 * CS_ELIMIT (longer than CS_CID_MAX bytes). */
CS_API int cs_cid_parse(const char *text, cs_cid *out);

/* Decodes a binary CID of len bytes. Errors: CS_EINVAL, CS_ELIMIT. */
CS_API int cs_cid_from_bytes(const void *bytes, size_t len, cs_cid *out);

/* Formats cid as text: CIDv1 in base32 lower, CIDv0 in base58btc. Writes at most cap bytes
 * including the NUL. Returns the text length (>0) or CS_EBUFSIZE / CS_EINVAL. */
CS_API int cs_cid_format(const cs_cid *cid, char *buf, size_t cap);

/* Computes the CIDv1 of data (borrowed) with the given codec and hash function code.
 * Errors: CS_EUNSUPPORTED (hash), CS_EINVAL, -ENOMEM (a thread's first hash). */
CS_API int cs_cid_compute(const void *data, size_t len, uint64_t codec, uint64_t hash,
			  cs_cid *out);

/* Fields of a parsed CID. version is 0 or 1; digest points into cid (borrowed from it). */
typedef struct cs_cid_info {
	int version;
	uint64_t codec;
	uint64_t hash;
	const uint8_t *digest;
	size_t digest_len;
} cs_cid_info;

/* Splits a valid cid into its fields. Errors: CS_EINVAL. */
CS_API int cs_cid_inspect(const cs_cid *cid, cs_cid_info *out);

/* ---- Store --------------------------------------------------------------------------- */

/* The largest block the store accepts; larger puts get CS_ELIMIT. */
#define CS_BLOCK_MAX (4u << 20)

typedef enum cs_durability {
	CS_DURABLE_SYNC = 0,     /* a write returns once it is on stable storage (default) */
	CS_DURABLE_INTERVAL = 1, /* returns at once; the log is synced every interval_ms */
	CS_DURABLE_NONE = 2,     /* returns at once; synced at cs_store_sync(), close, segment
				  * ends and every batch_bytes of log (bulk loads) */
} cs_durability;

typedef enum cs_io_backend {
	CS_IO_AUTO = 0,   /* io_uring, falling back to psync when the kernel refuses it;
			   * the environment variable CIDSTORE_IO=uring|psync overrides */
	CS_IO_URING = 1,  /* io_uring or fail with the kernel's error */
	CS_IO_PSYNC = 2,  /* pwritev + fdatasync */
} cs_io_backend;

/* Open flags. */
#define CS_OPEN_CREATE 0x1  /* create the directory and an empty store if missing */
#define CS_OPEN_SALVAGE 0x2 /* skip corrupt records instead of failing; see cs_stat */

/* Severity for the log callback. */
#define CS_LOG_INFO 1
#define CS_LOG_WARN 2

typedef struct cs_options {
	unsigned flags;              /* CS_OPEN_* */
	cs_durability durability;    /* default CS_DURABLE_SYNC */
	unsigned interval_ms;        /* for CS_DURABLE_INTERVAL; default 10 */
	cs_io_backend io;            /* default CS_IO_AUTO */
	uint64_t segment_bytes;      /* log segment size; default 256 MiB */
	uint32_t batch_bytes;        /* group-commit buffer size; default 8 MiB */
	/* Quota: an upper bound, in bytes, on the store's live block data (cs_stat.live_bytes,
	 * the CLI's physical_bytes: each live block's bytes once, as the index references
	 * them); 0 (default) for none. A put of a block that is not present and would take the
	 * live bytes past it fails with CS_EFULL, naming the limit and the use, and writes
	 * nothing; puts of present blocks (deduplicated), reads, deletes, names, pins and GC go
	 * on. Concurrent puts reserve their bytes atomically before they append, so the live
	 * bytes never exceed the quota (a put racing another of the same new block may be
	 * refused while both hold a reservation). Names and pins are not counted: they are
	 * bounded by CS_NAMES_MAX and CS_PINS_MAX, and must stay settable and removable on a
	 * full store. The quota is of this open: it is not stored, and a store found above it
	 * at open takes no new block until deletes or a collection bring it below.
	 * Why live bytes and not disk bytes: the log shrinks on disk only by compaction, which
	 * copies the live records of old segments before it deletes them; that bounds the disk
	 * at about live x 1.1 + two segments, so a live quota bounds the disk too, while a
	 * disk quota would make compaction itself fail it, being full when it is most needed.
	 * A full file system is the other CS_EFULL (see cs_block_put). */
	uint64_t quota_bytes;
	/* With quota_bytes: 1 to run cs_gc when a put would cross the quota, then try the put
	 * once more (CS_EFULL if still over); 0 (default) to fail at once. A put that meets a
	 * collection running on another thread waits for it to end instead, then tries once
	 * more. The collection runs on the putting thread, within its put; an add in flight
	 * keeps its own blocks through it (docs/GC.md). */
	int quota_gc;
	/* Called for recovery reports and warnings (torn tail truncated, salvaged records,
	 * backend fallback). msg is borrowed for the call. May be NULL. */
	void (*log)(void *ctx, int level, const char *msg);
	void *log_ctx;
	/* A checkpoint (the index, pins and names, so that open replays only the log after
	 * it) is written on close and by a background thread after every checkpoint_bytes of
	 * log; default 64 MiB; 0: none in the background (close and cs_checkpoint still write
	 * one). */
	uint64_t checkpoint_bytes;
	/* Compaction (cs_compact, and cs_gc after its sweep): a segment whose live fraction
	 * (bytes of the records the store still needs over bytes of log in it) is below this
	 * is rewritten, and segments with the least live first while the segment files exceed
	 * 1.1 x live bytes + 2 segments. 0 to 1; default CS_COMPACT_THRESHOLD_DEFAULT; 0 turns
	 * compaction off in cs_gc (cs_compact then uses the default). */
	double compact_threshold;
} cs_options;

#define CS_COMPACT_THRESHOLD_DEFAULT 0.5

/* Fills opts with the defaults. */
CS_API void cs_options_init(cs_options *opts);

typedef struct cs_store cs_store;

/* Opens the store in directory dir (borrowed), replaying its log. opts may be NULL for the
 * defaults (which do not create). On success *out owns the handle; free it with
 * cs_store_close(). Errors:
 *  -ENOENT        dir missing and CS_OPEN_CREATE not given
 *  -EACCES, -EROFS, -ENOTDIR and other -errno from the file system
 *  CS_EBUSY       another process (or handle) holds the store; the message names its pid
 *  CS_ENOTSTORE   dir is not empty and holds no cidstore
 *  CS_ECORRUPT    a damaged record before the end of the log; the message names segment
 *                 and offset (retry with CS_OPEN_SALVAGE to skip it and count the loss)
 *  CS_EVERSION    the store was written by a newer format version
 *  CS_EINVAL      bad options, or CIDSTORE_IO holds an unknown value */
CS_API int cs_store_open(const char *dir, const cs_options *opts, cs_store **out);

/* Syncs and closes the store, then frees the handle. No call on the handle may run
 * concurrently or follow. Returns the first error met while flushing (the handle is freed
 * regardless): CS_EPOISONED or -errno. */
CS_API int cs_store_close(cs_store *s);

/* Stores len bytes of data (borrowed) as a block with the given codec and hash code, and
 * sets *out to its CIDv1. If the block is already present nothing is written. Returns once
 * the block is durable as the store's durability mode defines. Errors: CS_ELIMIT (len >
 * CS_BLOCK_MAX), CS_EUNSUPPORTED (hash), CS_EPOISONED, CS_ECLOSED, -errno, and CS_EFULL:
 * the block needed a new log segment and creating it failed with ENOSPC or EDQUOT (the
 * message names which); nothing was written, the handle is not poisoned, and a later call
 * tries the creation again, so it succeeds once space is freed. CS_EFULL too when the block
 * is not present and would take the live bytes past cs_options.quota_bytes (after a
 * collection, with quota_gc): the message names the limit, the use and the block's size;
 * nothing was written. With quota_gc, also the errors of that cs_gc (CS_ECLOSED,
 * CS_ECORRUPT, CS_EPOISONED, -ENOMEM, -errno), nothing written. A full file system does not start a collection, which frees index
 * entries but no disk (only compaction does) and needs log space for its own records. */
CS_API int cs_block_put(cs_store *s, const void *data, size_t len, uint64_t codec,
			uint64_t hash, cs_cid *out);

/* Copies the block named by cid into buf (capacity cap bytes, borrowed) and sets *len to its
 * size. With buf NULL or cap too small, sets *len and returns 0 or CS_EBUFSIZE respectively.
 * Never waits for a commit's fsync. Errors: CS_ENOTFOUND, CS_EBUFSIZE, CS_EINVAL (cid),
 * CS_ECORRUPT (stored record failed its checksum; the message names the place), -errno. */
CS_API int cs_block_get(cs_store *s, const cs_cid *cid, void *buf, size_t cap, size_t *len);

/* As cs_block_get() into a buffer the library allocates: *data is owned by the caller and
 * freed with cs_free(). Errors: as cs_block_get(), and -ENOMEM. */
CS_API int cs_block_get_alloc(cs_store *s, const cs_cid *cid, void **data, size_t *len);

/* Frees memory returned by the library. NULL is ignored. */
CS_API void cs_free(void *p);

/* Returns 1 if the block is present, 0 if absent, or CS_EINVAL. */
CS_API int cs_block_has(cs_store *s, const cs_cid *cid);

/* Deletes the block: logs a tombstone and drops it from the index. Durable as put is.
 * Errors: CS_ENOTFOUND, CS_EINVAL, CS_EPOISONED, CS_EFULL (as for cs_block_put: the
 * tombstone needed a segment that could not be created), CS_ECLOSED, -errno. */
CS_API int cs_block_delete(cs_store *s, const cs_cid *cid);

/* Makes every write that returned before this call durable, whatever the durability mode.
 * Errors: CS_EPOISONED, -errno (after which the handle is poisoned). */
CS_API int cs_store_sync(cs_store *s);

/* What one cs_gc() did. */
typedef struct cs_gc_stat {
	uint64_t roots;          /* names and pins it marked from */
	uint64_t marked;         /* blocks found live (reachable from a root, or shaded) */
	uint64_t swept_blocks;   /* blocks deleted */
	uint64_t swept_bytes;    /* their data bytes */
	double mark_seconds;
	double sweep_seconds;
	double seconds;          /* the whole call */
	/* The compaction after the sweep (see cs_compact_stat). */
	uint64_t segments_compacted;
	uint64_t bytes_copied;
	uint64_t bytes_reclaimed;
	double compact_seconds;
	/* The index repack after the sweep, which gives back the memory its deletes freed. Not
	 * kept by the checkpoint: zero in cs_stat.last_gc after a reopen. */
	uint64_t repack_steps;              /* index write lock holds, one group of leaves each */
	double repack_seconds;              /* the whole repack, waits for the lock included */
	double repack_step_max_seconds;     /* the longest hold, wall time: what a writer waits */
	double repack_step_max_cpu_seconds; /* the most CPU one step took: its cost unpreempted */
	uint64_t index_bytes;               /* cs_stat.index_bytes when the collection ended */
} cs_gc_stat;

/* What one compaction did. */
typedef struct cs_compact_stat {
	uint64_t segments_compacted; /* segment files deleted */
	uint64_t bytes_copied;       /* log bytes appended: live records copied, carried
				      * deletes, segment-drop records */
	uint64_t bytes_reclaimed;    /* sizes of the segment files deleted */
	double seconds;
} cs_compact_stat;

typedef struct cs_stat {
	uint64_t blocks;          /* live blocks in the index */
	uint64_t names;           /* names set (cs_name_set) */
	uint64_t live_bytes;      /* bytes of live block data: physical, each block once */
	uint64_t logical_bytes;   /* the sum of the sizes of all names (as given to cs_name_set,
				   * modulo 2^64): what the named files hold before dedup */
	uint64_t log_bytes;       /* bytes of log written, all segments, headers included */
	uint64_t disk_bytes;      /* bytes the segment files take (preallocation included) */
	uint64_t segments;        /* segment files */
	uint64_t index_bytes;     /* memory the index takes */
	uint64_t next_seq;        /* sequence number the next record gets */
	uint64_t durable_seq;     /* every record below this is durable */
	const char *io_backend;   /* "io_uring" or "psync" (static string) */
	cs_durability durability;
	/* What the last open found (see docs/FORMAT.md, "Reader actions"). */
	uint64_t replayed_records;
	uint64_t torn_tail_bytes;  /* bytes of torn tail truncated */
	uint64_t salvaged_records; /* records lost to corruption skipped under CS_OPEN_SALVAGE */
	uint64_t salvaged_bytes;   /* bytes of log skipped under CS_OPEN_SALVAGE */
	uint64_t stray_files;      /* unrecognised files left alone in the directory */
	double open_seconds;       /* time the last open took */
	/* Lifecycle. */
	uint64_t pins;             /* pins held, direct and recursive */
	uint64_t pins_recursive;
	uint64_t garbage_bytes;    /* an estimate of what a GC would free: log bytes not
				    * holding a live block (deleted blocks, replaced names,
				    * record headers), so an upper bound */
	cs_gc_stat last_gc;        /* the last cs_gc (zero if none), kept across opens by the
				    * checkpoint */
	int64_t last_gc_time_ns;   /* when it ended, Unix nanoseconds; 0 if none */
	/* Checkpoints: the last one written, or the one the last open loaded. */
	uint64_t checkpoint_seq;     /* records below this seq are in it; 0 if none */
	int64_t checkpoint_time_ns;  /* when it was begun, Unix nanoseconds; 0 if none */
	/* Quota (cs_options.quota_bytes). */
	uint64_t quota_bytes;      /* the limit; 0 if none */
	uint64_t quota_used;       /* live_bytes plus the bytes reserved by puts in flight */
	uint64_t quota_refused;    /* puts refused with CS_EFULL by the quota since open */
	uint64_t quota_gcs;        /* collections run because a put met the quota */
} cs_stat;

/* Fills *out. Never fails on a valid handle. */
CS_API int cs_store_stat(cs_store *s, cs_stat *out);

/* Writes a checkpoint now: the index, pins, names and the last GC's figures, to the file
 * `checkpoint` in the store directory (written as `checkpoint.tmp`, synced, renamed, the
 * directory synced), with the log position the next open replays from. Writers keep running
 * meanwhile; each waits at most for one piece of the copy. Everything appended before the
 * copy ended is made durable before the file is written, so a success also means those
 * writes are durable (the log is synced after the copy, not before it). Open falls back to a
 * full replay, with a warning, when the checkpoint is missing, damaged or does not match the
 * log. Errors: CS_EPOISONED, CS_EBUSY (salvage lost the log's last records: write something
 * first), -ENOMEM, and -errno from the file system (CS_EFULL for ENOSPC and EDQUOT); the
 * message names the step. A failed checkpoint leaves the previous one in place, except when
 * only the last step, the directory's fsync, failed: then the new one may be in place, which
 * is as good (it and the log it covers are synced). */
CS_API int cs_checkpoint(cs_store *s);

/* Walks every live block in multihash order and calls fn(ctx, cid) for each, with the cid
 * borrowed for the call. A nonzero return from fn stops the walk and is returned. The walk
 * sees a snapshot of the index taken in pieces: blocks put or deleted during the walk may or
 * may not be seen. */
CS_API int cs_block_list(cs_store *s, int (*fn)(void *ctx, const cs_cid *cid), void *ctx);

/* Re-reads every live block, re-hashes it and compares with its CID. Calls bad(ctx, cid,
 * code) for each mismatch or unreadable block (bad may be NULL) and sets *checked and
 * *failed. Returns 0 when all blocks check out, CS_ECORRUPT otherwise. */
CS_API int cs_store_verify(cs_store *s, void (*bad)(void *ctx, const cs_cid *cid, int code),
			   void *ctx, uint64_t *checked, uint64_t *failed);

/* ---- Pins ----------------------------------------------------------------------------- */

/* A pin keeps blocks alive through garbage collection (cs_gc) and refuses their deletion
 * (cs_block_delete gives CS_EPINNED). A recursive pin holds its root and every block
 * reachable from it through dag-pb links (blocks of other codecs are leaves: their links,
 * if any, are not followed); a direct pin holds its root block only. Pins are keyed by
 * multihash, as blocks are: a CIDv0 and a CIDv1 of the same dag-pb block are one pin, kept
 * with the CID given first. Pins are logged (replayed at open) and durable as puts are.
 * Names (cs_name_set) are GC roots too, like recursive pins, but do not refuse deletes. A
 * store holds at most CS_PINS_MAX pins. All pin functions are thread-safe. */

#define CS_PIN_DIRECT    1
#define CS_PIN_RECURSIVE 2
#define CS_PIN_INDIRECT  3 /* only reported by cs_pin_test: held through a recursive pin */
#define CS_PINS_MAX      (1u << 24)

/* Pins root (borrowed) with kind CS_PIN_RECURSIVE or CS_PIN_DIRECT. A recursive pin first
 * walks the whole DAG and pins nothing if a block is missing. Pinning a pinned root again
 * with the same kind does nothing; a direct pin becomes recursive; a recursive pin is never
 * made direct (CS_EINVAL: remove it first). Returns once the pin is durable as the store's
 * durability mode defines. Errors:
 *  CS_ENOTFOUND  a block of the DAG is absent; the message names the first missing CID
 *  CS_EINVAL     root is not a valid CID, kind unknown, recursive to direct
 *  CS_ECORRUPT   a dag-pb node of the DAG does not decode; the message names it
 *  CS_ELIMIT     CS_PINS_MAX pins are held
 *  CS_EPOISONED, CS_EFULL, -ENOMEM, -errno. */
CS_API int cs_pin_add(cs_store *s, const cs_cid *root, int kind);

/* Removes the pin on root (borrowed). The blocks stay until a GC finds them unreferenced.
 * Errors: CS_ENOTFOUND (root is not pinned; a block held only indirectly is not a pin),
 * CS_EINVAL, CS_EPOISONED, CS_EFULL, -ENOMEM, -errno. */
CS_API int cs_pin_rm(cs_store *s, const cs_cid *root);

/* Calls fn(ctx, cid, kind) for every pin in multihash order, with cid borrowed for the call
 * and no lock held. Pins added or removed during the walk may or may not be seen. A
 * nonzero return from fn stops the walk and is returned. Errors: CS_EINVAL, -ENOMEM. */
CS_API int cs_pin_list(cs_store *s, int (*fn)(void *ctx, const cs_cid *cid, int kind),
		       void *ctx);

/* Says whether cid (borrowed) is held by a pin: sets *kind to CS_PIN_DIRECT or
 * CS_PIN_RECURSIVE (cid itself is pinned), or CS_PIN_INDIRECT (a recursive pin's DAG holds
 * it; *via, if not NULL, is set to that pin's root). The first call after open that needs
 * the indirect answer walks every recursive pin's DAG. Errors: CS_ENOTFOUND (not held),
 * CS_EINVAL, -ENOMEM, and read errors of the walk. */
CS_API int cs_pin_test(cs_store *s, const cs_cid *cid, int *kind, cs_cid *via);

/* ---- Garbage collection ---------------------------------------------------------------- */


/* Deletes every block that no name or pin reaches. Writers are not stopped: puts, gets,
 * names and pins go on while it runs, and no block put, named or pinned after the
 * collection began is deleted by it (docs/GC.md gives the rule). The deletes are logged and
 * synced before it returns. Then it repacks the index when the deletes left it sparse,
 * giving its memory back (cs_stat.index_bytes falls), in steps that each hold the index lock
 * for one group of leaves. Then, unless the store's compact_threshold is 0, it compacts as
 * cs_compact() does (its figures land in out). One collection runs at a time. out may be
 * NULL. Errors:
 *  CS_EBUSY      another cs_gc or cs_compact is running on this store
 *  CS_EFULL      the compaction needed a new segment and the disk is full: nothing is lost,
 *                what was freed so far stays freed, the store stays usable
 *  CS_ECLOSED    cs_store_close() began on another thread; the collection stopped (what it
 *                deleted so far stays deleted; nothing live was touched)
 *  CS_ECORRUPT   a dag-pb node reachable from a root does not decode, or a block cannot be
 *                read back: the collection stops before deleting anything, since what lies
 *                below that node cannot be known
 *  CS_EPOISONED, -ENOMEM, -errno. */
CS_API int cs_gc(cs_store *s, cs_gc_stat *out);

/* Compaction: gives back the disk space of deleted blocks, replaced names and removed pins.
 * Each segment file but the one appended to whose live fraction is below the store's
 * compact_threshold (CS_COMPACT_THRESHOLD_DEFAULT when that is 0), and then, least live
 * first, more while the segment files exceed 1.1 x the live bytes + 2 segments, is rewritten:
 * what in it is still current (blocks, names, pins, and the deletes that still cancel an
 * older record) is appended again at the end of the log, the log is synced, a record of the
 * deletion is appended and synced, and then the file is deleted (docs/FORMAT.md). Writers
 * are not stopped: puts of new blocks take no lock of it, deletes, names and pins wait at
 * most for one record's copy. A crash at any point loses nothing and brings nothing back.
 * One compaction or collection at a time. out may be NULL. Errors:
 *  CS_EBUSY      a cs_gc or cs_compact is running
 *  CS_EFULL      a new segment was needed and the disk or quota is full (the message names
 *                which): nothing is lost, segments compacted so far are freed, the store
 *                stays usable, and a later call goes on from there
 *  CS_ECORRUPT   a record of a segment to rewrite fails its checksum: that segment is kept
 *  CS_ECLOSED, CS_EPOISONED, -ENOMEM, -errno (removing a file or syncing the directory:
 *                the file may remain, which the next open or compaction handles). */
CS_API int cs_compact(cs_store *s, cs_compact_stat *out);

/* ---- Files (UnixFS) ------------------------------------------------------------------ */

/* A file is stored as a UnixFS DAG, block for block what Kubo's `ipfs add` writes: dag-pb
 * nodes (UnixFS File: filesize, one blocksize per child) over leaves, in the balanced layout
 * with at most 174 links per node. A file of one chunk is its leaf itself; the empty file is
 * the empty leaf (with raw leaves, the empty raw block
 * bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku). Two profiles:
 *  - cid_version 1 (`ipfs add --cid-version=1`): CIDv1, raw leaves, sha2-256;
 *  - cid_version 0 (plain `ipfs add`): CIDv0 nodes and root, dag-pb leaves (UnixFS File nodes
 *    holding their chunk); the empty file is QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH.
 * Raw leaves always have CIDv1 (as in Kubo with --raw-leaves). Fixed chunks default to 262144
 * bytes, Kubo's default. */

/* Chunkers. */
#define CS_CHUNK_FIXED 0 /* Kubo's --chunker size-N: every chunk chunk_size bytes but the last */
#define CS_CHUNK_CDC 1   /* content-defined (FastCDC, Gear hash): chunk_size is the average,
			  * a power of two in [1024, 262144]; chunks are average/4 .. 4 x average
			  * bytes. Inserting bytes early in a file changes only the first chunks,
			  * so versions of a file share most blocks. Not a Kubo chunker. */

#define CS_ADD_CHUNK_MAX (1u << 20) /* largest chunk, as in Kubo */
#define CS_ADD_LINKS_MAX 174        /* links per node the builder writes */
#define CS_ADD_THREADS_MAX 16       /* hashing threads of one add */

typedef struct cs_add_options {
	int cid_version;     /* 1 (default) or 0 */
	int raw_leaves;      /* 1, 0, or -1 for the profile's default (v1: 1, v0: 0) */
	uint64_t hash;       /* CS_HASH_SHA2_256 (default) or CS_HASH_BLAKE2B_256 (needs v1) */
	int chunker;         /* CS_CHUNK_FIXED (default) or CS_CHUNK_CDC */
	uint32_t chunk_size; /* fixed: 1..CS_ADD_CHUNK_MAX, default 262144; CDC: the average */
	unsigned hash_threads; /* threads hashing the add's leaves, 1..CS_ADD_THREADS_MAX; 0
				* (default) = the online CPUs, at most CS_ADD_THREADS_MAX */
	/* Naming the result (cs_add_begin / cs_add_fd / cs_add_path; cs_dir_begin refuses
	 * it). With name (borrowed for the cs_add_begin or cs_add_path call; copied) set, the
	 * add ends by setting name to the root and the file's size as cs_name_set does, with
	 * pin set as cs_name_set_pinned does, before it returns the root, while the add's
	 * blocks are still held from a collection (docs/GC.md): no collection takes what the
	 * add wrote before it is named (blocks it found present are held only while a
	 * collection runs; one taken makes the name set fail with CS_ENOTFOUND). The name is
	 * checked at the start: an invalid one fails before anything is written. An add that
	 * fails sets no name and no pin. */
	const char *name; /* NULL (default): no name */
	int pin;          /* 0 (default), or 1 with name: pin the root recursively too */
} cs_add_options;

/* Fills o with the defaults: the v1 profile with fixed 262144-byte chunks. */
CS_API void cs_add_options_init(cs_add_options *o);

/* An add in progress: the bytes of one file arrive in pieces and its blocks are put into the
 * store as they are complete. Leaves are hashed in parallel by the add's own hashing threads
 * (hash_threads, started at begin and joined at finish or abort) and put into the store in
 * file order by the calling thread, so the blocks, the log order and the root are those of a
 * one-thread add. Memory stays bounded whatever the file size (a chunk buffer of at most
 * CS_ADD_CHUNK_MAX bytes, a ring of 2 x hash_threads + 2 leaf slots of at most a chunk each,
 * one dag-pb node buffer, up to 174 pending links per tree level). One thread at a time per
 * cs_add; several adds may run on one store at once. */
typedef struct cs_add cs_add;

/* Starts adding a file to s (borrowed: it must stay open until cs_add_finish or
 * cs_add_abort). o (borrowed for the call) may be NULL for the defaults. On success *out owns
 * the add; end it with cs_add_finish() or cs_add_abort(). Errors: CS_EINVAL (cid_version,
 * raw_leaves or chunker unknown; chunk_size 0 or, for CDC, not a power of two of at least
 * 1024; CIDv0 with a hash other than sha2-256), CS_ELIMIT (chunk_size above the limit,
 * hash_threads above CS_ADD_THREADS_MAX), CS_EUNSUPPORTED (hash), -ENOMEM, -EAGAIN (a
 * hashing thread could not be started); CS_EINVAL also for an invalid name, or pin without
 * a name. */
CS_API int cs_add_begin(cs_store *s, const cs_add_options *o, cs_add **out);

/* Appends len bytes of data (borrowed for the call; copied, so it may be reused at once) to
 * the file. Complete chunks go to the hashing threads and are put into the store in file
 * order, up to 2 x hash_threads + 2 of them after this call returns (all by the end of
 * cs_add_finish); full nodes are put once their last leaf is. So the error of a put may be
 * returned by a later write or by cs_add_finish. After an error the add is dead: later
 * writes return the same error; call cs_add_abort(). Errors: those of cs_block_put
 * (CS_EPOISONED, CS_EFULL, CS_ECLOSED, -errno), -ENOMEM (a hashing thread's first hash),
 * CS_ELIMIT (a tree deeper than any 64-bit file size needs), CS_EINVAL (a is NULL, or data
 * NULL with len > 0). */
CS_API int cs_add_write(cs_add *a, const void *data, size_t len);

/* Ends the file: puts its last chunk and the nodes above it, then makes every block of the
 * add durable (cs_store_sync) before it sets *root to the file's root CID and *size (may be
 * NULL) to its length in bytes; with a name in the add's options, sets it (and the pin) first.
 * Frees a, on success and on failure. Errors: as cs_add_write, those of cs_store_sync, and
 * with a name those of cs_name_set / cs_name_set_pinned (the blocks stay, unnamed). */
CS_API int cs_add_finish(cs_add *a, cs_cid *root, uint64_t *size);

/* Drops an add without finishing it and frees a. Blocks it already put stay in the store
 * (unreferenced). NULL is ignored. */
CS_API void cs_add_abort(cs_add *a);

/* Adds the rest of the file open on fd (read from its current position to end of file) as
 * cs_add_begin / write / finish do, with a bounded read buffer. Errors: as those three, and
 * -errno from read(). */
CS_API int cs_add_fd(cs_store *s, const cs_add_options *o, int fd, cs_cid *root,
		     uint64_t *size);

/* Reads bytes [offset, offset + len) of the file whose root is root (borrowed) into buf
 * (borrowed, len bytes) and sets *got to the bytes read: less than len only at end of file,
 * 0 at or past it. The root may be a UnixFS File dag-pb node with raw or dag-pb leaves, or a
 * bare raw block (its bytes are the file). The walk visits only the blocks on the paths to
 * the wanted leaves, using each node's blocksizes; *blocks_touched (may be NULL) is set to
 * the number of blocks it read: for a read inside one leaf, the tree height + 1. Errors:
 *  CS_EINVAL       root is not a file (not raw or dag-pb, not UnixFS, a directory, ...)
 *  CS_ENOTFOUND    a block of the DAG is missing; the message names its CID (the root too)
 *  CS_ECORRUPT     a node below the root is malformed, not a UnixFS file node, or its
 *                  sizes disagree with its parent's blocksizes or its own filesize; the
 *                  message names its CID
 *  CS_ELIMIT       the DAG is deeper than 64 levels
 *  -ENOMEM, and cs_block_get's errors (CS_ECORRUPT, -errno). */
CS_API int cs_cat(cs_store *s, const cs_cid *root, uint64_t offset, void *buf, size_t len,
		  size_t *got, uint64_t *blocks_touched);

/* A file open for reading in pieces: cs_cat() without reading the root and the nodes above
 * the wanted leaves again for every piece. cs_file_open() reads the root (errors: as
 * cs_cat's for the root: CS_EINVAL, CS_ENOTFOUND, CS_ECORRUPT, -ENOMEM) and sets *out, owned
 * by the caller until cs_file_close(); root is copied. cs_file_read() reads bytes [offset,
 * offset + len) into buf as cs_cat() does, with its errors; *blocks_touched (may be NULL)
 * counts the blocks this call read, which leaves out the nodes kept from earlier calls (a
 * CID names its bytes, so a kept node is the one a fresh read would find). Leaves are read
 * and verified on every call. A failed read leaves the handle usable. The store must stay
 * open while the handle is; one thread at a time per handle, any number of handles. */
typedef struct cs_file cs_file;
CS_API int cs_file_open(cs_store *s, const cs_cid *root, cs_file **out);
CS_API int cs_file_read(cs_file *f, uint64_t offset, void *buf, size_t len, size_t *got,
			uint64_t *blocks_touched);
/* The file's length (from its root, read at open). */
CS_API uint64_t cs_file_length(const cs_file *f);
/* Frees f; NULL is a no-op. */
CS_API void cs_file_close(cs_file *f);

/* Sets *size to the length of the file whose root is root, reading only the root block.
 * Errors: CS_EINVAL, CS_ENOTFOUND, CS_ECORRUPT as for cs_cat, -ENOMEM. */
CS_API int cs_file_size(cs_store *s, const cs_cid *root, uint64_t *size);

/* Checks, copying nothing, that cs_cat of bytes [offset, offset + len) of the file root would
 * find its DAG whole: every node on the way is present, well formed and agrees in sizes with
 * its parent, and every raw leaf is present with the length its parent gives it. Reads the
 * dag-pb nodes (dag-pb leaves too), but only the index entries of raw leaves, so a reader
 * can refuse a damaged file before it writes a byte. Damage inside a raw leaf's bytes (a
 * failed record checksum) is found only by reading them. Errors: as cs_cat. */
CS_API int cs_file_check(cs_store *s, const cs_cid *root, uint64_t offset, uint64_t len);

/* Directories. A directory is one dag-pb node, block for block what Kubo's `ipfs add -r` and
 * ipfs-unixfs-importer write below their sharding threshold: UnixFS Data {Type = Directory}
 * and one link per entry (Hash = the entry's root CID as given, Name = its name, Tsize = the
 * cumulative size of its DAG: every block's bytes summed over the entry's whole DAG), links
 * sorted by the bytes of their names. The node has the add options' CID version and hash
 * (CIDv0 in the v0 profile). The empty directory is
 * QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn (v0) and
 * bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354 (v1).
 *
 * Sharding: Kubo (HAMTShardingSize) and the importer (shardSplitThresholdBytes) turn a
 * directory into a HAMT shard once the sum over its links of name bytes plus CID bytes
 * exceeds CS_DIR_SHARD_BYTES (about 1000 entries with 200-byte names, 7000 with short ones),
 * and so does the store: the same shard nodes, block for block (fanout 256, murmur3-x64-64
 * of the names, link names prefixed by their slot in two uppercase hex digits). Older Kubo
 * releases shard from a sum of exactly CS_DIR_SHARD_BYTES too; the store, like the importer
 * and newer Kubo, keeps that directory flat. A directory holds at most CS_DIR_ENTRIES_MAX
 * entries.
 *
 * Symlinks found by cs_add_path are stored as Kubo stores them: a UnixFS Symlink node (Type =
 * Symlink, Data = the target's bytes, no links). Names in a DAG are never used as paths on
 * disk: the store only reads the file system, never writes to it. */

#define CS_DIR_SHARD_BYTES 262144 /* Kubo's HAMTShardingSize: see above */
#define CS_DIR_ENTRIES_MAX (1 << 24)
#define CS_DIR_NAME_MAX 255       /* bytes of one entry's name */
#define CS_ADD_DEPTH_MAX 128      /* directory levels cs_add_path descends */

/* A directory being built; its entries arrive in any order. One thread at a time. */
typedef struct cs_dir cs_dir;

/* Starts a directory in s (borrowed until finish or abort) with o's cid_version and hash (o
 * may be NULL for the defaults; it is checked as cs_add_begin checks it). On success *out owns
 * the directory. Errors: as cs_add_begin. */
CS_API int cs_dir_begin(cs_store *s, const cs_add_options *o, cs_dir **out);

/* Adds the entry name (borrowed; NUL-terminated) naming the DAG whose root is cid
 * (borrowed), a raw block or a dag-pb node that must be in the store: its Tsize is computed
 * from its root block. The link stores cid as given: pass what cs_add_finish returned (a
 * CIDv0 in the v0 profile). Any bytes but '/' and NUL may form a name, as in Kubo; "." and
 * ".." may not. After an error the directory is dead: later calls return the same error; call
 * cs_dir_abort(). Errors:
 *  CS_EINVAL     name empty, ".", "..", or holding '/'; cid neither raw nor dag-pb, or its
 *                block not valid dag-pb; d, name or cid NULL
 *  CS_ELIMIT     name longer than CS_DIR_NAME_MAX bytes, or the directory already holds
 *                CS_DIR_ENTRIES_MAX entries
 *  CS_ENOTFOUND  the cid's block is not in the store
 *  CS_ECORRUPT   the block's link sizes overflow 64 bits
 *  -ENOMEM, and cs_block_get's errors. */
CS_API int cs_dir_add(cs_dir *d, const char *name, const cs_cid *cid);

/* Puts the directory node (or, above CS_DIR_SHARD_BYTES, its HAMT shard nodes), makes every
 * block put so far durable (cs_store_sync), then sets *root and *tsize (may be NULL; the
 * directory's cumulative DAG size, what a parent's link carries). Frees d on success and on
 * failure. Errors: CS_EINVAL (two entries share a name; root NULL), CS_ELIMIT (two names
 * whose 64-bit murmur3 hashes are equal, in a shard), those of cs_dir_add and cs_block_put,
 * and of cs_store_sync. */
CS_API int cs_dir_finish(cs_dir *d, cs_cid *root, uint64_t *tsize);

/* Drops a directory without putting it and frees d. NULL is ignored. */
CS_API void cs_dir_abort(cs_dir *d);

/* What cs_add_path adds. */
#define CS_ENTRY_FILE 1
#define CS_ENTRY_DIR 2
#define CS_ENTRY_SYMLINK 3

/* One added file, directory or symlink, reported as soon as its root is known. */
typedef struct cs_add_entry {
	const char *path; /* from the added root: its base name, then "/"-joined names below
			   * ("photos", "photos/2024/a.jpg"); borrowed for the callback */
	int type;         /* CS_ENTRY_* */
	cs_cid cid;       /* its root */
	uint64_t size;    /* content bytes: a file's; all files' below a directory; a
			   * symlink's target length */
} cs_add_entry;

typedef struct cs_add_callbacks {
	/* Called once per entry, children before their directory, the added root last;
	 * names in a directory in byte order. A nonzero return stops the add and is
	 * returned. The blocks are durable only once cs_add_path returned 0. May be NULL. */
	int (*entry)(void *ctx, const cs_add_entry *e);
	/* Called after every read of file content with the bytes read so far and the total
	 * the add will read (the sizes of the files seen before it started). May be NULL. */
	void (*progress)(void *ctx, uint64_t done, uint64_t total);
	void *ctx;
} cs_add_callbacks;

/* cs_add_path flags. */
#define CS_ADD_RECURSIVE 0x1 /* path may be a directory: add it and everything below it */

/* Adds the file or directory at path (borrowed; a symlink given as path is followed) with
 * the options o (may be NULL), and sets *root to its root and *size (may be NULL) to its
 * content bytes. A file gives the root cs_add_fd gives. A directory (with CS_ADD_RECURSIVE)
 * gives the root `ipfs add -r --hidden` gives: every entry is added, dotfiles too; below the
 * top, symlinks are stored as Symlink nodes, never followed. cb (may be NULL) hears about
 * each entry and the progress.
 *
 * The tree is checked before anything is written: every name (valid UTF-8 without control
 * characters, C0, DEL and C1, as cs_name_set wants names, besides the rules of cs_dir_add:
 * nothing that would break a line-oriented listing), type (regular file, directory or symlink), readability, depth and directory size
 * (by its names) is checked first, so a bad tree fails without a block put. What changes on
 * disk during the add is checked again as it is read. After a failure, blocks already put
 * stay in the store, unreferenced. The root is returned only after cs_store_sync.
 * Errors:
 *  -ENOENT, -EACCES, -ELOOP and other -errno  path or an entry cannot be opened or read; the
 *                message names the path on disk
 *  CS_EINVAL     path is a directory without CS_ADD_RECURSIVE; an entry is neither a regular
 *                file, a directory nor a symlink (FIFO, socket, device); a name fails the
 *                rules above; bad options (as cs_add_begin)
 *  CS_ELIMIT     a name over CS_DIR_NAME_MAX bytes or a symlink target over 4096 bytes;
 *                directories nested deeper than CS_ADD_DEPTH_MAX; a directory of more
 *                than CS_DIR_ENTRIES_MAX entries; two names of one sharded directory
 *                whose 64-bit murmur3 hashes are equal (odds about n^2 / 2^65)
 *  a nonzero value returned by cb->entry, and the errors of cs_add_write and cs_store_sync,
 *  and with a name in o (checked before anything is written) those of cs_name_set /
 *  cs_name_set_pinned. */
CS_API int cs_add_path(cs_store *s, const cs_add_options *o, const char *path, unsigned flags,
		       const cs_add_callbacks *cb, cs_cid *root, uint64_t *size);

/* ---- Names ---------------------------------------------------------------------------- */

/* A name maps a UTF-8 string to a file's root CID, its size and the time it was set: the
 * list of files a host keeps. Names are logged (replayed at open) and durable as puts are.
 * A valid name is 1..CS_NAME_MAX bytes of UTF-8 in shortest form (no surrogates, nothing
 * above U+10FFFF) without control characters (U+0000..U+001F, U+007F..U+009F). Names are
 * compared byte for byte: no Unicode normalization, case matters. A store holds at most
 * 2^24 names. All name functions are thread-safe. */

#define CS_NAME_MAX 255 /* bytes of a name, NUL excluded */

typedef struct cs_name_info {
	const char *name; /* NUL-terminated; borrowed for the callback */
	cs_cid root;
	uint64_t size;    /* bytes of the file, as given to cs_name_set */
	int64_t time_ns;  /* when it was set: Unix time in nanoseconds */
} cs_name_info;

/* Checks name (borrowed) against the rules cs_name_set() applies, without a store: lets a
 * caller refuse a bad name before it adds anything. Errors: CS_EINVAL, with the rule broken
 * and the byte in cs_errmsg(). */
CS_API int cs_name_check(const char *name);

/* Sets name (borrowed) to root (borrowed: a v0 or v1 CID, kept as given) and size,
 * replacing an earlier setting; the time set is the clock's now. Every block of the DAG
 * under root must be present (reached through dag-pb links; CS_ENOTFOUND names the first
 * missing one), so a name never lands on a broken file, nor on one a running cs_gc has begun
 * to take (blocks put before a collection began and reachable from no root are garbage to
 * it; add and name with the collector idle, or retry the add). A name is a GC root: its
 * whole DAG survives collections, but it does not keep its blocks from cs_block_delete.
 * Returns once the setting is durable as the store's durability mode defines. Errors:
 * CS_EINVAL (name empty, longer than CS_NAME_MAX, not valid UTF-8, or holding a newline or
 * other control character; the message says which rule and at which byte; or root is not a valid
 * CID), CS_ENOTFOUND (a block of the DAG absent), CS_ECORRUPT (a dag-pb block of it fails
 * its checksum), CS_ELIMIT (a new name while 2^24 are held),
 * CS_EPOISONED, CS_EFULL, CS_ECLOSED, -ENOMEM, -errno. */
CS_API int cs_name_set(cs_store *s, const char *name, const cs_cid *root, uint64_t size);

/* As cs_name_set(), and pins root recursively (as cs_pin_add(root, CS_PIN_RECURSIVE)) in the
 * same commit: the name's record and the pin's are one transaction in the log, applied whole
 * or not at all at open, and the name and pin tables change together, so neither a crash nor
 * a concurrent reader or cs_gc ever sees one without the other. A root pinned recursively
 * already is only named. Every block of the DAG must be present and every dag-pb node must
 * decode (the pin's rule). Errors: those of cs_name_set(), and CS_ECORRUPT (a dag-pb node of
 * the DAG does not decode), CS_ELIMIT (CS_PINS_MAX pins are held and root is not one); on
 * any error neither the name nor the pin changed. */
CS_API int cs_name_set_pinned(cs_store *s, const char *name, const cs_cid *root,
			      uint64_t size);

/* Looks name up; any of root, size, time_ns may be NULL. Never waits for a commit.
 * Errors: CS_ENOTFOUND, CS_EINVAL (an invalid name, which is never set). */
CS_API int cs_name_get(cs_store *s, const char *name, cs_cid *root, uint64_t *size,
		       int64_t *time_ns);

/* Removes name (durably, as a put). The blocks stay. Errors: CS_ENOTFOUND, CS_EINVAL,
 * CS_EPOISONED, CS_EFULL, CS_ECLOSED, -errno. */
CS_API int cs_name_delete(cs_store *s, const char *name);

/* Calls fn for every name in byte order of the names (memcmp order, a prefix first); a
 * nonzero return stops the walk and is returned. n and its strings are borrowed for the
 * call. The walk copies names out in pieces and calls fn with no lock held, so fn may call
 * into the store; names set or deleted during the walk may or may not be seen, and none is
 * seen twice. Errors: CS_EINVAL (fn NULL), -ENOMEM, or fn's return. */
CS_API int cs_name_list(cs_store *s, int (*fn)(void *ctx, const cs_name_info *n), void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* CIDSTORE_H */
