/*
 * replay.h - open-time scan of the log (internal).
 *
 * rec_replay() reads every segment in id order, checks every record and hands the complete
 * transactions to the caller in log order. It decides, per docs/FORMAT.md "Reader actions",
 * whether damage is a torn tail (truncate: zero it on disk and sync, so appends can resume)
 * or corruption (fail with CS_ECORRUPT naming segment and offset, or with `salvage`, skip to
 * the next valid record and count the loss).
 */
#ifndef CS_REPLAY_H
#define CS_REPLAY_H

#include <stdint.h>

#include "wal.h"

/* A record handed to the apply callback. payload is borrowed for the call. */
struct rec_view {
	struct rec_hdr h;
	struct wal_pos pos;
	const uint8_t *payload;
};

struct rec_options {
	int dirfd;            /* the store directory, borrowed */
	uint64_t store_uid;   /* segments of another store are corruption */
	int salvage;
	/* Called once per record of each complete transaction, in log order. A nonzero
	 * return stops the replay and is returned by rec_replay(). */
	int (*apply)(void *ctx, const struct rec_view *r);
	void *ctx;
	void (*log)(void *ctx, int level, const char *msg);
	void *log_ctx;
};

struct rec_result {
	struct wal_seg *segs;  /* owned by the caller (free()); fds ready for wal_open() */
	uint32_t nsegs;
	uint64_t next_seq;     /* 1 + the last applied seq (1 for an empty log) */
	uint64_t records;      /* records applied */
	uint64_t torn_bytes;   /* bytes of torn tail: zeroed in the last segment, left in
				* place in an earlier one the next segment continues, and in
				* a last one where salvage resumed (last_closed) */
	uint64_t salvaged_records; /* seqs missing in skipped regions (salvage only) */
	uint64_t salvaged_bytes;   /* bytes skipped (salvage only) */
	uint64_t stray_files;      /* names in the directory that are not ours, left alone */
	int last_closed;           /* the last segment's torn tail was left in place (salvage
				    * resumed in it): appends must start the next segment */
};

/* Errors: CS_ECORRUPT, CS_EVERSION, CS_ELIMIT (more than CS_SEGMENTS_MAX segment files),
 * -ENOMEM, -errno, or the apply callback's return. On error no fd is left open and
 * result->segs is NULL. Names in the directory other than "LOCK", "CIDSTORE", segment names
 * ("%08x.seg", lowercase hex) and names starting "checkpoint" (reserved) are counted as
 * stray. On success segs holds nsegs entries (NULL when 0); the last one is where appends
 * resume, and its file is at least capacity bytes long. Only the last segment file is ever
 * changed: its torn tail zeroed, a short file extended, or the file removed when its header
 * was never completed. Sets the calling thread's cs_errmsg() detail on error. */
int rec_replay(const struct rec_options *opt, struct rec_result *result);

#endif
