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

/* Seqs [from_seq, to_seq) lived in segments first_id..last_id, which compaction deleted
 * (REC_SEG_DROP records). */
struct rec_drop {
	uint64_t from_seq, to_seq;
	uint32_t first_id, last_id;
};

/* The dropped ranges known: sorted by from_seq, disjoint and not adjacent (two ranges that
 * touch are one). What replay checks every seq gap between segments against, what
 * compaction appends again when it deletes the segment holding the records that state them,
 * and what a checkpoint saves beside the tables. v is owned (rec_drops_free). */
struct rec_drops {
	struct rec_drop *v;
	uint32_t n, cap;
};

/* Adds d, merging it with the ranges it overlaps or touches. Errors: -ENOMEM (unchanged). */
int rec_drops_add(struct rec_drops *ds, const struct rec_drop *d);

/* Is every seq of [from, to) inside one dropped range? (An empty range is.) */
int rec_drops_cover(const struct rec_drops *ds, uint64_t from, uint64_t to);

void rec_drops_free(struct rec_drops *ds);

/* Where a replay from a checkpoint begins, and what proves the position real
 * (docs/FORMAT.md 12.4): replay applies the records from `seq` at `pos` on. */
struct rec_start {
	struct wal_pos pos;
	uint64_t seq;
	uint64_t end_seq;     /* the log reached this seq (exclusive) when the checkpoint ended */
	struct wal_pos last;  /* the record end_seq - 1 (when end_seq > 1) ... */
	uint64_t last_sum;    /* ... and its checksum field */
	int salvaged;         /* salvage resumed in pos.seg before pos (P6) */
	/* Every segment up to pos.seg, in id order: id, first seq, and (before pos.seg) the
	 * offset past its last record. Borrowed. */
	const struct wal_seg_info *segs;
	uint32_t nsegs;
	struct rec_drops drops; /* the dropped ranges the log stated before pos; borrowed */
};

/* rec_replay()'s positive return: the start does not hold in this log. */
#define REC_STALE 1

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
	const struct rec_start *start; /* borrowed; NULL replays the whole log */
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
	uint32_t salvage_seg;      /* the last segment salvage resumed in, 0 if none */
	/* The closing record of the last transaction read (0 seq: none): next_seq - 1 unless
	 * salvage lost the log's last records. */
	struct wal_pos last_pos;
	uint64_t last_seq;
	uint64_t last_sum;
	struct rec_drops drops;    /* owned by the caller (rec_drops_free); empty on error:
				    * the ranges the REC_SEG_DROP records of the log state */
};

/* With opt->start, segments before start->pos.seg are only opened and their headers checked,
 * and the scan begins at start->pos with seq start->seq; everything after follows the rules
 * of a full replay. Before anything is read or applied, the start is checked against the log
 * (every segment up to it as listed, the record end_seq - 1 where and as the start says, the
 * record at the start of the right seq); after the scan, the log must reach end_seq. When a
 * check fails, returns REC_STALE with a message saying why: nothing was changed on disk but
 * what a full replay changes too (a torn tail after the start zeroed), no fd is left open,
 * and records may have been applied (the caller drops its tables and replays the whole log).
 *
 * REC_SEG_DROP records are applied by the replay itself (into result->drops), never
 * handed to the apply callback; every other known type is. A seq gap before the first
 * segment or between two segments is accepted only when result->drops covers it, checked
 * once the whole log was read, since the records that justify a gap lie after it.
 * Errors: CS_ECORRUPT, CS_EVERSION, CS_ELIMIT (more than CS_SEGMENTS_MAX segment files),
 * -ENOMEM, -errno, or the apply callback's return. On error no fd is left open and
 * result->segs is NULL. Names in the directory other than "LOCK", "CIDSTORE", segment names
 * ("%08x.seg", lowercase hex) and names starting "checkpoint" (reserved) are counted as
 * stray. On success segs holds nsegs entries (NULL when 0); the last one is where appends
 * resume, and its file is at least capacity bytes long. Only the last segment file is ever
 * changed: its torn tail zeroed, a short file extended, or the file removed when its header
 * was never completed. Sets the calling thread's cs_errmsg() detail on error. */
int rec_replay(const struct rec_options *opt, struct rec_result *result);

#endif
