/*
 * wal.h - the write-ahead log: segments, group commit and the writer thread (internal).
 *
 * Callers append records from any thread. Appends are copied into the open batch buffer
 * (one of two, each batch_bytes long); the writer thread swaps buffers, writes the full one
 * in one call to the I/O backend, with an fdatasync when the durability mode wants one, and
 * then wakes the callers waiting on it. While one batch is being written and synced the
 * other fills: that is the group commit.
 *
 * Positions: a record is named by (segment id, offset of its header). A batch never spans
 * two segments; when the open segment cannot take the next record, the appender asks the
 * writer for the next one and waits: the writer syncs the old segment (in every durability
 * mode, so the log stays a prefix after a power cut) and creates the next one (created,
 * preallocated, header written and synced, directory synced) before any position in it is
 * handed out. A creation that runs out of space fails the appends that needed the segment
 * with CS_EFULL and leaves the log usable; the next append that needs it tries again.
 */
#ifndef CS_WAL_H
#define CS_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cidstore.h"
#include "io.h"
#include "record.h"

struct wal_pos {
	uint32_t seg;
	uint32_t off;
};

/* One existing segment handed over by recovery; the WAL takes ownership of fd. */
struct wal_seg {
	uint32_t id;
	int fd;            /* open O_RDWR */
	uint64_t first_seq;
	uint64_t capacity; /* file size */
	uint32_t end;      /* offset just past its last valid record */
	int closed;        /* recovery left bytes past end in place: append in a new segment */
};

struct wal_config {
	int dirfd;                /* the store directory; borrowed, must outlive the WAL */
	uint64_t store_uid;
	uint64_t segment_bytes;
	uint32_t batch_bytes;
	cs_durability durability;
	unsigned interval_ms;
	struct io *io;            /* owned by the WAL from wal_open() on, even when it fails */
	/* Segments found by recovery, in id order (may be 0); the WAL owns their fds from
	 * wal_open() on. Appends continue in the last one when it has room. */
	struct wal_seg *segs;
	uint32_t nsegs;
	uint64_t next_seq;        /* seq of the next record (1 for a new store) */
	/* The record next_seq - 1 as recovery found it (where, and its checksum), for
	 * wal_mark(); last_seq 0 when there is none or recovery could not name it. */
	struct wal_pos last_pos;
	uint64_t last_seq;
	uint64_t last_sum;
	/* Nonzero: never prepare the next segment ahead of need (W12 of wal.c); every segment
	 * is then created on the appender's request. For tests of that path. */
	int no_spare;
	/* Set when every record given is known to be durable already (a checkpoint's end mark
	 * covers the whole log recovery found: C3 of engine/ckpt.c), so that open need not
	 * sync the last segment to make its horizon true. */
	int log_durable;
};

struct wal;

/* Starts the writer thread. With no segments given, creates segment 1 (header written and
 * synced) before returning; with segments, syncs the last one unless cfg->log_durable. Once
 * the writer has written past half of the last segment, it creates the next segment's file
 * ahead of need, without a header (a "spare"), so that starting it costs an append no I/O;
 * wal_close() removes a spare left unused. Appends continue in the last given segment unless
 * its header's window is below 2 * batch_bytes (the window bounds unsynced bytes for
 * recovery), in which case the first append starts the next segment. Errors: CS_EINVAL (a
 * size outside cs_limits.h, batch_bytes > segment_bytes / 2, bad durability or interval_ms,
 * inconsistent segs), -errno (creating or syncing a segment), -ENOMEM. */
int wal_open(struct wal **out, const struct wal_config *cfg);

/* Flushes and syncs everything appended, stops the writer, closes every fd and frees the
 * WAL. Returns the first write or sync error met (the WAL is freed regardless). */
int wal_close(struct wal *w);

/* A record to append: its type and flags (REC_F_CONT is set by wal_append) and payload
 * pieces (borrowed for the call). */
struct wal_rec {
	uint8_t type;
	uint8_t flags;
	const struct iovec *parts;
	int nparts;
};

/* Appends n records as one transaction: consecutive seqs, one batch, one segment, every
 * record but the last flagged REC_F_CONT. Fills pos[i] for each record (pos may be NULL) and
 * *seq with the last record's seq. Returns once the records are in the batch buffer: they
 * can be read back with wal_read() at once, and are durable after wal_wait(*seq).
 * Blocks while both buffers are full, and while the next segment is being created. Errors:
 * CS_ELIMIT (a payload over CS_REC_PAYLOAD_MAX, or the records exceed a batch), CS_EINVAL
 * (n <= 0, type 0, unknown flags), CS_EFULL (the records need a new segment and creating it
 * failed with ENOSPC or EDQUOT, which the message names, or the log would need more than
 * CS_SEGMENTS_MAX segments; nothing was appended and the log stays usable), CS_EPOISONED,
 * CS_ECLOSED. */
int wal_append(struct wal *w, const struct wal_rec *recs, int n, struct wal_pos *pos,
	       uint64_t *seq);

/* wal_append() for records nobody waits for one by one (an add's leaves, which it makes
 * durable with one wal_sync() at its end): in sync mode their batch is written without an
 * fdatasync of its own, unless W3 of wal.c asks for one (W13). wal_wait() on such a record
 * still works; it asks the writer for the sync. Errors: as wal_append(). */
int wal_append_lazy(struct wal *w, const struct wal_rec *recs, int n, struct wal_pos *pos,
		    uint64_t *seq);

/* For an appender that can wait (GC's sweep, compaction), called before it appends about
 * `bytes` of records, with no lock held that a put needs: waits for the writer's next swap
 * when the filling buffer could not take those bytes and still keep half a batch free for
 * other appenders while the other buffer is being written (W14 of wal.c). Waits for one swap
 * at most, so it ends however busy the log is; returns at once on poison or close (the append
 * then reports it). */
void wal_make_room(struct wal *w, uint64_t bytes);

/* Waits as the durability mode says: in sync mode until record seq is durable; in the other
 * modes returns at once. Errors: CS_EPOISONED (seq is not durable and the write or sync
 * covering it, or an earlier one, failed), CS_EINVAL (seq was never appended). */
int wal_wait(struct wal *w, uint64_t seq);

/* Writes and syncs everything appended before the call and waits for it, in any mode; the
 * last segment's header too, should the log have just moved to a spare. Errors:
 * CS_EPOISONED (the message names the failure that poisoned the log). */
int wal_sync(struct wal *w);

/* Reads the record at pos whose payload is len bytes (the caller knows it from the index):
 * the header into *h and the payload into the pieces of dst, which total len bytes. Checks
 * that the header is sane, has this length, and that the checksum matches. Reads from the
 * batch buffer when the record is not yet in the file, so it never waits for a write or a
 * sync; keeps working on a poisoned log. Thread-safe. Errors: CS_ECORRUPT (message names
 * segment and offset), CS_EINVAL (dst does not total len bytes), -errno. */
int wal_read(struct wal *w, struct wal_pos pos, uint32_t len, struct rec_hdr *h,
	     const struct iovec *dst, int ndst);

/* One record for wal_read_many(): its position and payload length, the pieces its payload
 * goes to (borrowed; at most WAL_MANY_DST of them, totalling len bytes), and its header,
 * filled by the read. */
struct wal_many {
	struct wal_pos pos;
	uint32_t len;
	const struct iovec *dst;
	int ndst;
	struct rec_hdr h;
};

#define WAL_MANY_MAX 32 /* records of one wal_read_many() call */
#define WAL_MANY_DST 4  /* payload pieces of one of its records */

/* Reads the n records of r (n at most WAL_MANY_MAX) as n calls of wal_read() in order would,
 * stopping at the first that fails: returns 0 with *done = n, or that record's error (as
 * wal_read's, message included) with *done its index and the records before it read and
 * checked. Records that lie back to back in one segment's file (each starting where the one
 * before it ends, padding included) are read with one preadv, headers into scratch space and
 * payloads straight into their pieces; so a range of blocks written one after another, as
 * an add writes a file's leaves, costs one system call per 384 KiB, not one per block. A
 * read of a megabyte or more shares its pieces with a helper thread on another core when
 * that is free (R2 of wal.c), so copying and checking run on two cores. Thread-safe.
 * Errors: as wal_read(); CS_EINVAL also for n outside [0, WAL_MANY_MAX] or a record of more
 * than WAL_MANY_DST pieces. */
int wal_read_many(struct wal *w, struct wal_many *r, int n, int *done);

/* The position the next appended record will take, or one after it: every record appended
 * before the call lies before it, every record appended after at or past it (W5). */
struct wal_pos wal_tail(struct wal *w);

/* Log order of two positions: < 0, 0, > 0. */
static inline int wal_pos_cmp(struct wal_pos a, struct wal_pos b)
{
	if (a.seg != b.seg)
		return a.seg < b.seg ? -1 : 1;
	return a.off < b.off ? -1 : a.off > b.off;
}

/* A position in the log with the proof that it is one: what a checkpoint records. */
struct wal_mark {
	struct wal_pos tail;  /* where the record next_seq will go, as wal_tail() */
	uint64_t next_seq;
	struct wal_pos last;  /* the record next_seq - 1, when last_seq == next_seq - 1 */
	uint64_t last_seq;    /* 0 when the log is empty or that record is not known */
	uint64_t last_sum;    /* its checksum field */
};

/* One segment as wal_mark() and wal_segments() list it. */
struct wal_seg_info {
	uint32_t id;
	uint32_t end;       /* offset past its last record */
	uint64_t first_seq; /* its header's first seq */
	uint64_t capacity;  /* its file's size */
};

/* Fills *m, and segs (cap slots, borrowed) with the segments whose id is at most m->tail.seg,
 * in id order, setting *nsegs (at most cap). The caller must keep appends out for the call
 * (no wal_append in flight), or last may name an earlier record than next_seq - 1; then
 * last_seq says so. */
void wal_mark(struct wal *w, struct wal_mark *m, struct wal_seg_info *segs, uint32_t cap,
	      uint32_t *nsegs);

struct wal_stat {
	uint64_t next_seq;
	uint64_t durable_seq; /* every record with seq < this is durable */
	uint64_t log_bytes;   /* bytes of records and headers in all segments */
	uint64_t disk_bytes;  /* sum of segment capacities */
	uint32_t segments;
	int poisoned;
	const char *backend;
};

void wal_stat(struct wal *w, struct wal_stat *out);

/* Copies up to cap entries of the segment table, in id order, into out and returns how
 * many. The last one is where appends go. */
uint32_t wal_segments(struct wal *w, struct wal_seg_info *out, uint32_t cap);

/* Reads the record at pos of a segment other than the last whatever its length: the header
 * into *h and the payload into buf (cap bytes), and checks header and checksum. The records
 * of such a segment are all in its file, or, for the one the log just left for a spare, in
 * a batch buffer still being written, from which they are read. For scanning a segment record by record. Thread-safe.
 * Errors: CS_EINVAL (pos is in the last segment), CS_ECORRUPT (no such segment, not a record
 * there, a payload over cap bytes, a checksum mismatch; the message names the place),
 * -errno. */
int wal_read_any(struct wal *w, struct wal_pos pos, struct rec_hdr *h, uint8_t *buf, size_t cap);

/* Removes segment id, which must not be the last, from the log: new reads of it fail as
 * reads of an absent segment, reads in flight finish first (W11), then its file is removed
 * and the directory synced through the backend, and its blocks freed (W15). The caller has
 * made durable what makes the segment's absence sound (docs/FORMAT.md, section 6: G7).
 * Thread-safe; one drop at a time. Returns 0 once the removal is durable. Errors: CS_EINVAL
 * (the last or an unknown segment), -errno from the removal or the directory sync: the
 * segment is out of the table either way, and its file may or may not be gone after a
 * crash, both of which recovery accepts. */
int wal_drop_segment(struct wal *w, uint32_t id);

#endif
