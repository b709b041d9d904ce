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
#define CS_EFULL (-30607)      /* the store's quota or the disk is full */
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
				  * ends and every sync_window bytes (bulk loads) */
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
	/* Called for recovery reports and warnings (torn tail truncated, salvaged records,
	 * backend fallback). msg is borrowed for the call. May be NULL. */
	void (*log)(void *ctx, int level, const char *msg);
	void *log_ctx;
} cs_options;

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
 * CS_BLOCK_MAX), CS_EUNSUPPORTED (hash), CS_EPOISONED, CS_EFULL, CS_ECLOSED, -errno. */
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
 * Errors: CS_ENOTFOUND, CS_EINVAL, CS_EPOISONED, CS_ECLOSED, -errno. */
CS_API int cs_block_delete(cs_store *s, const cs_cid *cid);

/* Makes every write that returned before this call durable, whatever the durability mode.
 * Errors: CS_EPOISONED, -errno (after which the handle is poisoned). */
CS_API int cs_store_sync(cs_store *s);

typedef struct cs_stat {
	uint64_t blocks;          /* live blocks in the index */
	uint64_t live_bytes;      /* bytes of live block data */
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
} cs_stat;

/* Fills *out. Never fails on a valid handle. */
CS_API int cs_store_stat(cs_store *s, cs_stat *out);

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

#ifdef __cplusplus
}
#endif
#endif /* CIDSTORE_H */
