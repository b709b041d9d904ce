/*
 * replay.c - the open-time scan of the log: read every segment, verify every record, hand
 * complete transactions to the caller, and decide what each piece of damage means.
 *
 * docs/FORMAT.md, "Reader actions", is the normative description of the decisions made
 * here; the writer's obligations G1..G6 it lists are what make them sound. In short: damage
 * at position P is a torn tail unless a record found within `window` bytes after P says
 * (through its synced_seq) that the writer knew the damaged record was already durable, in
 * which case it is corruption.
 *
 * Invariants:
 *   P1. Only the last segment is ever changed (torn tail zeroed, a short file extended back
 *       to its capacity), and only an unfinished file after it (a crash while one was being
 *       created, or a spare that was never started: no header, no record, G1) is removed.
 *       The last segment is the last one with a header. Earlier segments are only read: by
 *       G2 they were synced whole, so they hold no torn writes.
 *   P6. Repeated opens agree. A torn tail is zeroed only where nothing that decided this
 *       open lies in it: in a segment where salvage resumed after corruption, the records
 *       whose synced seq proved the corruption may lie in the tail, and zeroing them would
 *       make the next open judge the same damage a torn tail and drop what this one applied.
 *       There the tail is left in place and the segment is closed to appends (the writer
 *       starts the next one), so every later open reads the same bytes: as the last
 *       segment it decides the same, and once a successor exists it is a middle segment
 *       whose successor continues from the tail's seq, which is accepted.
 *   P2. The apply callback sees only records of complete transactions, in log order, each
 *       once, each after its checksum verified and its seq equalled the expected one. Under
 *       salvage, when the record scanning resumes at carries REC_F_MID, the rest of its
 *       transaction is skipped too: the damage cut its beginning.
 *   P3. Every loop over disk data advances a file offset strictly and stops at the segment's
 *       limit (min(capacity, file size)); the one buffer is sized from validated segment
 *       headers (window <= 2 * CS_BATCH_MAX) and never from record fields (R3 of record.c).
 *   P4. On error no fd is left open and result->segs is NULL.
 *   P7. A seq gap (a segment that starts after the seq the log reached, or a first segment
 *       that starts after 1) is lost records unless segment-drop records anywhere in the
 *       log cover it: compaction deletes a segment only once such a record is durable. The
 *       records that justify a gap lie after it, so gaps are collected during the scan and
 *       judged once the whole log was read (rec_drops_cover), before anything of P5 runs.
 *   P5. The removal of an unfinished last segment and the extension of a short last file
 *       happen only after the whole log was accepted, so a failed open changes nothing that
 *       would make a later open decide differently.
 *
 * Reading: each segment is read with large preads into one buffer of (largest window +
 * CS_REC_MAX) bytes, which holds a pending transaction (at most window / 2 by G5) plus the
 * record being checked, or a whole look-ahead region. Checksums are computed over the
 * buffer in the same pass that parses headers, so the cost is one copy out of the page
 * cache and one hash per byte. No mmap: a failing disk must give -EIO, not SIGBUS.
 */
#include "replay.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "endian.h"
#include "err.h"
#include "cs_limits.h"
#include "record.h"

/* Bytes asked of each pread while scanning forward: large enough that syscalls cost
 * nothing, small enough that the bytes are still in cache when they are hashed. */
#define READ_CHUNK (1u << 20)

/* What is wrong at the first position that does not hold the expected valid record. */
enum damage {
	D_ZERO,     /* the 40 header bytes (or what is left of the file) are zero */
	D_SHORT,    /* the file ends inside a non-zero record header */
	D_HEADER,   /* the header does not decode */
	D_PAST_END, /* the record runs past the segment's capacity or the file's end */
	D_CHECKSUM, /* the checksum does not match */
	D_SEQ,      /* a valid record with the wrong seq */
};

/* One segment file found in the directory. */
struct seg_file {
	uint32_t id;
	int fd;           /* owned; -1 once closed or handed over */
	uint64_t size;    /* file size at open */
	struct seg_hdr h; /* valid unless `unfinished` */
	int unfinished;   /* the last file, with a short or all-zero header: to be removed */
};

/* A seq gap met during the scan, judged at the end (P7). */
struct gap {
	uint64_t from, to; /* the seqs missing */
	uint32_t next_id;  /* the segment that starts at `to` */
	/* A damaged end of the segment before it (handle_damage, not last): where and what. */
	uint32_t torn_id; /* 0: none */
	uint64_t torn_off, torn_bytes;
	char what[160];
};

struct replay {
	const struct rec_options *opt; /* borrowed */
	struct rec_result *res;        /* borrowed; counters accumulate here */
	uint64_t seq;                  /* S: the seq the next record must carry */

	/* The read buffer: holds file bytes [base, base + fill) of the current segment. */
	uint8_t *buf; /* owned */
	size_t cap;
	uint64_t base;
	size_t fill;

	/* The segment being scanned. */
	struct seg_file *sf;         /* borrowed from the array */
	uint64_t lim;                /* min(capacity, file size): nothing at or past it is read */
	int last;                    /* the last segment of the log: its torn tail may be zeroed */
	const struct seg_file *next; /* the segment after it, or NULL */

	/* Scan state within the segment. */
	uint64_t txn;       /* offset of the pending transaction's first record; 0: none */
	uint64_t txn_seq;   /* its seq */
	int dropping;       /* salvage resumed here: the current transaction is not applied */
	int resumed;        /* salvage resumed here and no transaction has completed since */
	int salvaged_here;  /* times salvage resumed in this segment after corruption (P6) */
	uint64_t salv_from; /* where the last salvaged region began, and its first seq */
	uint64_t salv_seq;

	struct gap *gaps; /* owned; one slot per segment file and one more */
	uint32_t ngaps;
	struct gap tail;  /* the damaged end of the segment just scanned, if tail.torn_id */
};

__attribute__((format(printf, 3, 4))) static void say(const struct replay *rp, int level,
                                                      const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	if (rp->opt->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rp->opt->log(rp->opt->log_ctx, level, msg);
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* Makes file bytes [keep, end) of the current segment present in the buffer, reading
 * forward in large pieces; bytes at or after `keep` already buffered are kept. The caller
 * guarantees end <= lim and end - keep <= cap. */
static int ensure(struct replay *rp, uint64_t keep, uint64_t end)
{
	uint64_t have = rp->base + rp->fill;

	CS_ASSERT(end <= rp->lim && end - keep <= rp->cap && keep <= end);
	if (keep >= rp->base && end <= have)
		return 0;
	if (keep < rp->base || keep > have) {
		rp->base = keep;
		rp->fill = 0;
	} else if (end > rp->base + rp->cap || have - keep <= READ_CHUNK / 4) {
		/* Slide when the buffer is full, and also whenever little is kept, so reads
		 * land in the same cache-warm first part of the buffer. */
		size_t drop = (size_t)(keep - rp->base);
		memmove(rp->buf, rp->buf + drop, rp->fill - drop);
		rp->base = keep;
		rp->fill -= drop;
	}
	/* Bounded: every pass either reads at least one byte or counts a retry. */
	for (int retries = 0; rp->base + rp->fill < end;) {
		uint64_t at = rp->base + rp->fill;
		size_t want = (size_t)max_u64(end - at, READ_CHUNK);
		want = (size_t)min_u64(want, min_u64(rp->cap - rp->fill, rp->lim - at));
		ssize_t n = pread(rp->sf->fd, rp->buf + rp->fill, want, (off_t)at);
		if (n > 0) {
			rp->fill += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EINTR || errno == EAGAIN) && ++retries < CS_IO_RETRIES)
			continue;
		if (n == 0) /* the file shrank under us since fstat */
			errno = EIO;
		return cs_fail(-errno, "segment %08x: read at offset %llu failed: %s", rp->sf->id,
		               (unsigned long long)at, strerror(errno));
	}
	return 0;
}

static const uint8_t *at(const struct replay *rp, uint64_t off)
{
	return rp->buf + (off - rp->base);
}

/* Is the record at off valid by header and checksum, whole inside the segment, and not
 * older than min_seq? Returns 1 or 0, or a negative error from reading the rest of it. The
 * bytes from `keep` through the header at off must be buffered. */
static int plausible(struct replay *rp, uint64_t keep, uint64_t off, uint64_t min_seq,
                     struct rec_hdr *h)
{
	if (off + CS_REC_HEADER > rp->lim || get_le32(at(rp, off)) != REC_MAGIC)
		return 0;
	if (rec_decode_header(at(rp, off), h) != REC_OK || h->seq < min_seq)
		return 0;
	if (off + rec_size(h->len) > rp->lim)
		return 0;
	int rc = ensure(rp, keep, off + rec_size(h->len));
	if (rc != 0)
		return rc;
	const uint8_t *p = at(rp, off);
	struct iovec iov = {(void *)(p + CS_REC_HEADER), h->len};
	return rec_verify(p, h, &iov, 1) == 0;
}

/* One past the last non-zero byte in buffered [from, to), or `from` if all are zero. */
static uint64_t nonzero_end(const struct replay *rp, uint64_t from, uint64_t to)
{
	const uint8_t *p = at(rp, from);
	uint64_t n = to - from;

	while (n >= 8 && get_le64(p + n - 8) == 0)
		n -= 8;
	while (n > 0 && p[n - 1] == 0)
		n--;
	return from + n;
}

/* Are n bytes at p all zero? memcmp of the bytes against themselves shifted by one runs at
 * the C library's vector speed, where a loop with an early exit does not vectorize. */
static int zero_bytes(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Are file bytes [from, to) of the current segment all zero? Returns 1 or 0, or a negative
 * read error. Reads them READ_CHUNK at a time through the start of the buffer, so that a
 * clean end costs one cache-warm pass over the window, not a window-sized buffer faulted in
 * and then walked twice. The caller guarantees to <= lim. */
static int zeros_ahead(struct replay *rp, uint64_t from, uint64_t to)
{
	/* Bounded: each pass moves from forward by at least one byte, up to to. */
	while (from < to) {
		uint64_t e = min_u64(from + READ_CHUNK, to);
		int rc = ensure(rp, from, e);
		if (rc != 0)
			return rc;
		if (!zero_bytes(at(rp, from), (size_t)(e - from)))
			return 0;
		from = e;
	}
	return 1;
}

/* One past the end of the last data extent of fd that starts before `to`, at least `from`:
 * bytes in [result, to) are a hole and read as zeros. Where SEEK_DATA/SEEK_HOLE are not
 * supported, or the extents are too many to walk, returns `to` (read everything). */
static uint64_t data_end(int fd, uint64_t from, uint64_t to)
{
	uint64_t pos = from, last = from;

	for (int i = 0; i < 64 && pos < to; i++) { /* bounded: extents within one window */
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0)
			return errno == ENXIO ? last : to;
		if ((uint64_t)d >= to)
			return last;
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h <= (uint64_t)d)
			return to;
		last = min_u64((uint64_t)h, to);
		pos = (uint64_t)h;
	}
	return pos < to ? to : last;
}

/* Zeroes [from, to) of the last segment and makes it durable. A punched hole reads as
 * zeros; where the file system cannot punch, zeros are written. fsync rather than
 * fdatasync: punching changes the extent map, which must be durable too. */
static int zero_range(struct replay *rp, uint64_t from, uint64_t to)
{
	int fd = rp->sf->fd;

	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)from,
	              (off_t)(to - from)) != 0) {
		if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
			goto fail;
		size_t chunk = (size_t)min_u64(rp->cap, to - from);
		memset(rp->buf, 0, chunk);
		rp->fill = 0; /* the buffer no longer mirrors the file */
		/* Bounded: each pass writes at least one byte or counts a retry. */
		for (int retries = 0; from < to;) {
			ssize_t n =
			    pwrite(fd, rp->buf, (size_t)min_u64(chunk, to - from), (off_t)from);
			if (n > 0) {
				from += (uint64_t)n;
				continue;
			}
			if (n < 0 && (errno == EINTR || errno == EAGAIN) &&
			    ++retries < CS_IO_RETRIES)
				continue;
			if (n == 0)
				errno = EIO;
			goto fail;
		}
	}
	if (fsync(fd) != 0)
		goto fail;
	return 0;
fail:
	return cs_fail(-errno, "segment %08x: zeroing the torn tail failed: %s", rp->sf->id,
	               strerror(errno));
}

static void describe(char *buf, size_t cap, enum damage d, const struct rec_hdr *h, uint64_t off,
                     const struct replay *rp)
{
	switch (d) {
	case D_ZERO:
		snprintf(buf, cap, "record header is all zero");
		break;
	case D_SHORT:
		snprintf(buf, cap, "record header cut short by the end of the file");
		break;
	case D_HEADER:
		snprintf(buf, cap, "bad record header");
		break;
	case D_PAST_END:
		snprintf(buf, cap, "record of %u bytes runs past the end of the %s",
		         rec_size(h->len),
		         off + rec_size(h->len) > rp->sf->h.capacity ? "segment" : "file");
		break;
	case D_CHECKSUM:
		snprintf(buf, cap, "record checksum mismatch");
		break;
	case D_SEQ:
		snprintf(buf, cap, "record has seq %llu where %llu was expected",
		         (unsigned long long)h->seq, (unsigned long long)rp->seq);
		break;
	}
}

/* Outcome of handle_damage() besides errors. */
#define SEG_DONE   0 /* the segment ends at *end */
#define SEG_RESUME 1 /* salvage: scanning continues at *end */

/*
 * Decides what the damage at P means (docs/FORMAT.md, "Reader actions"). The pending
 * transaction (rp->txn, 0: none) is cut by the damage and dropped whole. Sets *end to where
 * the segment's valid log ends (SEG_DONE) or where scanning resumes (SEG_RESUME), and rp->seq
 * to the seq expected there.
 */
static int handle_damage(struct replay *rp, uint64_t P, enum damage d, const struct rec_hdr *dh,
                         uint64_t *end)
{
	const struct seg_file *sf = rp->sf;
	const uint64_t S = rp->seq;
	uint64_t start = rp->txn ? rp->txn : P, start_seq = rp->txn ? rp->txn_seq : S;
	const uint32_t window = sf->h.window;
	char what[160];
	int rc;

	describe(what, sizeof(what), d, dh, P, rp);
	/* The window and one header past it; a record found is read whole when checked. The
	 * buffer holds window + CS_REC_MAX bytes from P, so nothing before P is re-read. Past
	 * the file's last data extent the window is a hole of preallocated zeros: it is not
	 * read, which keeps the common clean end from costing a window of reads per open. */
	uint64_t ahead = min_u64(P + window + CS_REC_HEADER, rp->lim);
	ahead = min_u64(ahead, data_end(rp->sf->fd, P, ahead) + CS_REC_HEADER);
	if (d == D_ZERO && rp->txn == 0) {
		/* The common clean end, case (a), decided without the look-ahead below: when
		 * every byte of [P, ahead) is zero, no position there begins a candidate (a
		 * header starts with its magic) and Z is P. A window that is not all zero takes
		 * the full look-ahead, which reads it again from P: damage is rare. */
		rc = zeros_ahead(rp, P, ahead);
		if (rc < 0)
			return rc;
		if (rc == 1) {
			*end = P;
			return SEG_DONE;
		}
	}
	rc = ensure(rp, P, ahead);
	if (rc != 0)
		return rc;

	/* Look ahead through the window for records valid by header and checksum. Starting at
	 * P itself catches a valid record whose only fault is a seq beyond S. Bounded by the
	 * window; each found record is stepped over whole (no record starts inside one). */
	uint64_t found = 0, durable = 0, found_end = P, r_off = 0, r_seq = 0;
	uint8_t r_flags = 0;
	uint64_t la_last = min_u64(P + window, rp->lim);
	for (uint64_t q = P; q <= la_last && q + CS_REC_HEADER <= ahead; q += CS_REC_ALIGN) {
		struct rec_hdr g;
		rc = plausible(rp, P, q, S, &g);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;
		if (found++ == 0) {
			r_off = q;
			r_seq = g.seq;
			r_flags = g.flags;
		}
		if (g.synced_seq >= S)
			durable++;
		found_end = max_u64(found_end, q + rec_size(g.len));
		q += rec_size(g.len) - CS_REC_ALIGN;
	}
	uint64_t z = max_u64(nonzero_end(rp, P, min_u64(la_last, ahead)), found_end);

	if (found == 0 && z == P && rp->txn == 0) {
		/* (a) Zeros through the window: the clean end of this segment's log. */
		*end = P;
		return SEG_DONE;
	}
	if (found > 0 && durable > 0) {
		/* (d) A later record was appended after S was durable: corruption. */
		if (!rp->opt->salvage)
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %llu: %s; %llu valid records follow; "
			               "open with salvage to skip it",
			               sf->id, (unsigned long long)P, what,
			               (unsigned long long)found);
		rp->res->salvaged_records += r_seq - start_seq;
		rp->res->salvaged_bytes += r_off - start;
		/* R may be the tail of a transaction the damage cut: REC_F_MID says so, and
		 * then its transaction is not applied (scan_segment counts it as salvaged). */
		rp->dropping = (r_flags & REC_F_MID) != 0;
		rp->resumed = 1;
		rp->salvaged_here++;
		rp->res->salvage_seg = sf->id;
		say(rp, CS_LOG_WARN,
		    "segment %08x: salvage skipped offsets %llu..%llu (%s), losing seqs "
		    "%llu..%llu (%llu records)%s",
		    sf->id, (unsigned long long)start, (unsigned long long)r_off, what,
		    (unsigned long long)start_seq, (unsigned long long)(r_seq - 1),
		    (unsigned long long)(r_seq - start_seq),
		    rp->dropping ? ", and the rest of the transaction it cut" : "");
		rp->salv_from = start;
		rp->salv_seq = start_seq;
		rp->seq = r_seq;
		*end = r_off;
		return SEG_RESUME;
	}

	/* (b), (c), or a transaction left open at a clean end: a torn tail. Nothing in it was
	 * acknowledged (G3, G4), so it is dropped from its start. */
	uint64_t zero_from = start;
	if (rp->last && rp->resumed && rp->txn != 0 && rp->salvaged_here == 1) {
		/* The transaction salvage resumed at is itself torn, and nothing was applied
		 * since the resume: everything from the salvaged region on is gone, so the log
		 * ends where that region began. Zeroing it all leaves the next open a clean
		 * end there, the same answer (P6). */
		zero_from = rp->salv_from;
		start_seq = rp->salv_seq;
	}
	rp->seq = start_seq;
	*end = zero_from;
	if (rp->last && rp->salvaged_here && zero_from == start) {
		/* P6: the records that proved the salvaged damage corrupt may be in the tail;
		 * keep every byte, and let the writer begin the next segment. */
		rp->res->torn_bytes += z - start;
		rp->res->last_closed = 1;
		say(rp, CS_LOG_WARN,
		    "segment %08x: torn tail of %llu bytes at offset %llu left in place, since "
		    "salvage resumed earlier in this segment; it takes no more appends",
		    sf->id, (unsigned long long)(z - start), (unsigned long long)start);
		return SEG_DONE;
	}
	if (rp->last) {
		rc = zero_range(rp, zero_from, z);
		if (rc != 0)
			return rc;
		rp->res->torn_bytes += z - start;
		say(rp, CS_LOG_WARN,
		    "segment %08x: truncated torn tail of %llu bytes at offset %llu", sf->id,
		    (unsigned long long)(z - start), (unsigned long long)start);
		return SEG_DONE;
	}
	/* Not the last segment: by G2 it was synced whole before the next one began, so the
	 * damage is acceptable only if the next segment continues from start_seq (the damaged
	 * bytes held no record of the log). The file is left as it is (P1). */
	if (rp->next != NULL && rp->next->h.first_seq == start_seq) {
		rp->res->torn_bytes += z - start;
		say(rp, CS_LOG_WARN,
		    "segment %08x: ignored torn tail of %llu bytes at offset %llu (%s): the next "
		    "segment continues at seq %llu",
		    sf->id, (unsigned long long)(z - start), (unsigned long long)start, what,
		    (unsigned long long)start_seq);
		return SEG_DONE;
	}
	if (rp->next != NULL && rp->next->h.first_seq > start_seq) {
		/* The seqs up to the next segment's first are missing: lost, unless compaction
		 * deleted the segments that held them (P7, judged at the end). */
		rp->tail = (struct gap){.torn_id = sf->id, .torn_off = start,
		                        .torn_bytes = z - start};
		snprintf(rp->tail.what, sizeof(rp->tail.what), "%s", what);
		rp->seq = start_seq;
		return SEG_DONE;
	}
	int repeats = rp->next != NULL && rp->next->h.first_seq < start_seq;
	if (!rp->opt->salvage || repeats) {
		if (rp->next == NULL)
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %llu: %s, in a segment synced whole "
			               "before a later one was begun; open with salvage to skip it",
			               sf->id, (unsigned long long)start, what);
		return cs_fail(
		    CS_ECORRUPT,
		    "segment %08x offset %llu: %s; the next segment starts at seq %llu, "
		    "expected %llu%s",
		    sf->id, (unsigned long long)start, what,
		    (unsigned long long)rp->next->h.first_seq, (unsigned long long)start_seq,
		    repeats ? ": sequence numbers repeat" : "; open with salvage to skip it");
	}
	/* Salvage a damaged end of a middle segment: what the next segment does not continue
	 * is lost. With no next segment (it was an unfinished one) only the dropped
	 * transaction's records are known lost. */
	uint64_t resume = rp->next != NULL ? rp->next->h.first_seq : S;
	rp->res->salvaged_records += resume - start_seq;
	rp->res->salvaged_bytes += z - start;
	say(rp, CS_LOG_WARN,
	    "segment %08x: salvage skipped offsets %llu..%llu (%s), losing seqs %llu..%llu "
	    "(%llu records)",
	    sf->id, (unsigned long long)start, (unsigned long long)z, what,
	    (unsigned long long)start_seq, (unsigned long long)resume,
	    (unsigned long long)(resume - start_seq));
	rp->seq = resume;
	return SEG_DONE;
}

static int known_type(uint8_t type)
{
	return type == REC_BLOCK || type == REC_DELETE || type == REC_NAME_SET ||
	       type == REC_NAME_DEL || type == REC_PIN_ADD || type == REC_PIN_DEL ||
	       type == REC_CARRY || type == REC_SEG_DROP;
}

/* ---- Dropped ranges (P7) ---------------------------------------------------------------- */

int rec_drops_add(struct rec_drops *ds, const struct rec_drop *d)
{
	CS_ASSERT(d->from_seq < d->to_seq);
	if (ds->n == ds->cap) {
		uint32_t cap = ds->cap ? 2 * ds->cap : 16;
		struct rec_drop *v = realloc(ds->v, cap * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		ds->v = v;
		ds->cap = cap;
	}
	/* Insert in from_seq order, then merge the run of ranges that overlap or touch it.
	 * Bounded by n. */
	uint32_t i = 0;
	while (i < ds->n && ds->v[i].from_seq < d->from_seq)
		i++;
	memmove(&ds->v[i + 1], &ds->v[i], (ds->n - i) * sizeof(*ds->v));
	ds->v[i] = *d;
	ds->n++;
	if (i > 0 && ds->v[i - 1].to_seq >= ds->v[i].from_seq)
		i--;
	while (i + 1 < ds->n && ds->v[i].to_seq >= ds->v[i + 1].from_seq) {
		struct rec_drop *a = &ds->v[i], *b = &ds->v[i + 1];
		a->to_seq = max_u64(a->to_seq, b->to_seq);
		a->first_id = a->first_id < b->first_id ? a->first_id : b->first_id;
		a->last_id = a->last_id > b->last_id ? a->last_id : b->last_id;
		memmove(b, b + 1, (ds->n - i - 2) * sizeof(*ds->v));
		ds->n--;
	}
	return 0;
}

int rec_drops_cover(const struct rec_drops *ds, uint64_t from, uint64_t to)
{
	if (from >= to)
		return 1;
	uint32_t lo = 0, hi = ds->n; /* the first range with from_seq > from, less one */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (ds->v[mid].from_seq <= from)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && ds->v[lo - 1].to_seq >= to;
}

void rec_drops_free(struct rec_drops *ds)
{
	free(ds->v);
	*ds = (struct rec_drops){0};
}

/* Hands the complete transaction in buffered [from, to) to the apply callback. Every record
 * in it was verified by scan_segment(). */
static int deliver(struct replay *rp, uint64_t from, uint64_t to)
{
	/* Bounded: each pass steps over one verified record, from < to. */
	while (from < to) {
		struct rec_view v;
		const uint8_t *p = at(rp, from);
		int dec = rec_decode_header(p, &v.h);
		CS_ASSERT(dec == REC_OK); /* P2: verified by scan_segment() */
		if (v.h.type == REC_SEG_DROP) {
			struct rec_seg_drop sd;
			CS_ASSERT(rec_seg_drop_decode(p + CS_REC_HEADER, v.h.len, v.h.seq, &sd) == 0);
			struct rec_drop d = {sd.from_seq, sd.to_seq, sd.first_id, sd.last_id};
			if (rec_drops_add(&rp->res->drops, &d) != 0)
				return -ENOMEM;
			rp->res->records++;
		} else if (known_type(v.h.type)) {
			v.pos.seg = rp->sf->id;
			v.pos.off = (uint32_t)from;
			v.payload = p + CS_REC_HEADER;
			int rc = rp->opt->apply(rp->opt->ctx, &v);
			if (rc != 0)
				return rc;
			rp->res->records++;
		}
		from += rec_size(v.h.len);
	}
	return 0;
}

/* A record that verified: is its type one this reader understands, and its payload sane? */
static int check_record(const struct replay *rp, uint64_t off, const struct rec_hdr *h)
{
	const uint8_t *payload = at(rp, off) + CS_REC_HEADER;
	uint8_t key[CS_KEY_MAX];
	struct rec_block b;
	struct rec_name_set ns;
	struct rec_name_del nd;
	struct rec_pin pin;
	struct rec_carry carry;
	struct rec_seg_drop drop;
	static const char *const what[] = {
	    [REC_BLOCK] = "block",
	    [REC_DELETE] = "delete",
	    [REC_NAME_SET] = "name-set",
	    [REC_NAME_DEL] = "name-delete",
	    [REC_PIN_ADD] = "pin-add",
	    [REC_PIN_DEL] = "pin-delete",
	    [REC_CHECKPOINT] = "checkpoint",
	    [REC_CARRY] = "carry",
	    [REC_SEG_DROP] = "segment-drop",
	};

	switch (h->type) {
	case REC_BLOCK:
		if (rec_block_decode(payload, h->len, &b) != 0)
			goto bad;
		return 0;
	case REC_DELETE:
		if (rec_key_decode(payload, h->len, key) != 0)
			goto bad;
		return 0;
	case REC_NAME_SET:
		/* Lengths only; the engine's apply checks the name's characters and the CID. */
		if (rec_name_set_decode(payload, h->len, &ns) != 0)
			goto bad;
		return 0;
	case REC_NAME_DEL:
		if (rec_name_del_decode(payload, h->len, &nd) != 0)
			goto bad;
		return 0;
	case REC_PIN_ADD:
	case REC_PIN_DEL:
		if (rec_pin_decode(h->type, payload, h->len, &pin) != 0)
			goto bad;
		return 0;
	case REC_CARRY:
		if (rec_carry_decode(payload, h->len, &carry) != 0)
			goto bad;
		return 0;
	case REC_SEG_DROP:
		if (rec_seg_drop_decode(payload, h->len, h->seq, &drop) != 0)
			goto bad;
		return 0;
	default:
		if (h->flags & REC_F_SKIPPABLE)
			return 0;
		return cs_fail(CS_EVERSION,
		               "segment %08x offset %llu: record type %u (seq %llu) is unknown to "
		               "this version",
		               rp->sf->id, (unsigned long long)off, h->type,
		               (unsigned long long)h->seq);
	}
bad:
	/* The checksum matched, so this is what the writer wrote: a writer bug, not rot. */
	return cs_fail(CS_ECORRUPT, "segment %08x offset %llu: malformed %s payload (seq %llu)",
	               rp->sf->id, (unsigned long long)off, what[h->type],
	               (unsigned long long)h->seq);
}

/* Remembers the closing record of a transaction just read: the record a checkpoint taken
 * right after it would name as its last (rec_result.last_*). */
static void note_last(struct replay *rp, uint64_t off, const struct rec_hdr *h)
{
	rp->res->last_pos = (struct wal_pos){rp->sf->id, (uint32_t)off};
	rp->res->last_seq = h->seq;
	rp->res->last_sum = h->checksum;
}

/* Scans the segment rp->sf from offset `from` (its first record, or a checkpoint's start,
 * which begins a transaction), delivering complete transactions; sets *end past its last
 * valid record. rp->seq is the seq at `from` on entry and the seq expected next on return.
 * `salvaged`: salvage resumed earlier in this segment, before `from` (P6). */
static int scan_segment(struct replay *rp, uint64_t from, int salvaged, uint32_t *end)
{
	uint64_t off = from;
	int rc;

	rp->base = 0;
	rp->fill = 0;
	rp->txn = 0;
	rp->dropping = 0;
	rp->resumed = 0;
	rp->salvaged_here = salvaged;
	if (salvaged)
		rp->res->salvage_seg = rp->sf->id;
	posix_fadvise(rp->sf->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	/* Bounded: off grows by at least CS_REC_HEADER per pass, or strictly on a resume after
	 * salvage (the record resumed at is valid), and every exit is at or before lim. */
	for (;;) {
		struct rec_hdr h = {0};
		enum damage d;
		uint64_t keep = rp->txn ? rp->txn : off;
		uint64_t got = 0, sz;

		if (off + CS_REC_HEADER - keep > rp->cap)
			goto too_long;
		if (off + CS_REC_HEADER > rp->lim) {
			rc = ensure(rp, off, rp->lim); /* damage: the transaction is dropped */
			if (rc != 0)
				return rc;
			d = nonzero_end(rp, off, rp->lim) == off ? D_ZERO : D_SHORT;
			goto damaged;
		}
		rc = ensure(rp, keep, off + CS_REC_HEADER);
		if (rc != 0)
			return rc;
		int dec = rec_decode_header(at(rp, off), &h);
		if (dec != REC_OK) {
			d = dec == REC_ZERO ? D_ZERO : D_HEADER;
			goto damaged;
		}
		sz = rec_size(h.len);
		if (off + sz > rp->lim) {
			d = D_PAST_END;
			goto damaged;
		}
		if (off + sz - keep > rp->cap)
			goto too_long;
		rc = ensure(rp, keep, off + sz);
		if (rc != 0)
			return rc;
		struct iovec iov = {(void *)(at(rp, off) + CS_REC_HEADER), h.len};
		if (rec_verify(at(rp, off), &h, &iov, 1) != 0) {
			d = D_CHECKSUM;
			goto damaged;
		}
		if (h.seq != rp->seq) {
			d = D_SEQ;
			goto damaged;
		}
		rc = check_record(rp, off, &h);
		if (rc != 0)
			return rc;
		if (h.flags & REC_F_CONT) {
			if (rp->txn == 0) {
				rp->txn = off;
				rp->txn_seq = rp->seq;
			}
		} else if (rp->dropping) {
			/* The transaction salvage resumed at ends here: skipped, counted. */
			uint64_t t0 = rp->txn ? rp->txn : off;
			uint64_t t0_seq = rp->txn ? rp->txn_seq : rp->seq;
			rp->res->salvaged_records += rp->seq + 1 - t0_seq;
			rp->res->salvaged_bytes += off + sz - t0;
			note_last(rp, off, &h);
			rp->dropping = 0;
			rp->resumed = 0;
			rp->txn = 0;
		} else {
			rc = deliver(rp, rp->txn ? rp->txn : off, off + sz);
			if (rc != 0)
				return rc;
			note_last(rp, off, &h);
			rp->resumed = 0;
			rp->txn = 0;
		}
		rp->seq++;
		off += sz;
		continue;
	damaged:
		rc = handle_damage(rp, off, d, &h, &got);
		if (rc < 0)
			return rc;
		if (rc == SEG_DONE) {
			*end = (uint32_t)got;
			return 0;
		}
		CS_ASSERT(got >= off);
		off = got;
		rp->txn = 0;
	}
too_long:
	/* G5 bounds a transaction by a batch, half the window: only a writer bug breaks it. */
	return cs_fail(CS_ECORRUPT,
	               "segment %08x offset %llu: transaction longer than the segment's window of "
	               "%u bytes",
	               rp->sf->id, (unsigned long long)rp->txn, rp->sf->h.window);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Lists the segment ids in the directory, sorted, and counts stray names. *ids is owned by
 * the caller. */
static int list_dir(int dirfd, uint32_t **ids, uint32_t *n, uint64_t *stray)
{
	uint32_t *v = NULL, cap = 0, cnt = 0;
	int rc = 0;
	int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	DIR *d;

	if (fd < 0)
		return cs_fail(-errno, "store directory: %s", strerror(errno));
	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return cs_fail(rc, "store directory: %s", strerror(-rc));
	}
	rewinddir(d); /* the dup shares its offset with dirfd */
	/* Bounded by the directory's size. */
	for (;;) {
		uint32_t id;
		errno = 0;
		struct dirent *de = readdir(d);
		if (de == NULL) {
			if (errno != 0)
				rc = cs_fail(-errno, "store directory: %s", strerror(errno));
			break;
		}
		const char *name = de->d_name;
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
		    strcmp(name, "LOCK") == 0 || strcmp(name, "CIDSTORE") == 0 ||
		    strncmp(name, "checkpoint", 10) == 0)
			continue;
		if (seg_parse_name(name, &id) != 0) {
			(*stray)++;
			continue;
		}
		if (cnt == CS_SEGMENTS_MAX) {
			rc = cs_fail(CS_ELIMIT, "store directory holds more than %u segments",
			             CS_SEGMENTS_MAX);
			break;
		}
		if (cnt == cap) {
			uint32_t ncap = cap ? 2 * cap : 64;
			uint32_t *nv = realloc(v, ncap * sizeof(*v));
			if (nv == NULL) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[cnt++] = id;
	}
	closedir(d);
	if (rc != 0) {
		free(v);
		return rc;
	}
	if (cnt > 0)
		qsort(v, cnt, sizeof(*v), cmp_u32);
	*ids = v;
	*n = cnt;
	return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* Opens segment sf->id and checks its header against the store. `last`: the last file of
 * the log, which may be an unfinished one (G1). */
static int open_segment(const struct rec_options *opt, struct seg_file *sf, int last)
{
	char name[16];
	uint8_t hdr[CS_SEG_HEADER];
	struct stat st;
	ssize_t n;

	seg_name(name, sizeof(name), sf->id);
	sf->fd = openat(opt->dirfd, name, O_RDWR | O_CLOEXEC);
	if (sf->fd < 0)
		return cs_fail(-errno, "segment %08x: open: %s", sf->id, strerror(errno));
	if (fstat(sf->fd, &st) != 0)
		return cs_fail(-errno, "segment %08x: stat: %s", sf->id, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return cs_fail(CS_ECORRUPT, "segment %08x: not a regular file", sf->id);
	sf->size = (uint64_t)st.st_size;
	memset(hdr, 0, sizeof(hdr));
	/* Bounded: a short read of a regular file happens only at its end. */
	for (size_t got = 0, retries = 0; got < sizeof(hdr) && got < sf->size;) {
		n = pread(sf->fd, hdr + got, sizeof(hdr) - got, (off_t)got);
		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno == EINTR && ++retries < CS_IO_RETRIES) {
			continue;
		} else {
			if (n == 0)
				errno = EIO;
			return cs_fail(-errno, "segment %08x: reading the header: %s", sf->id,
			               strerror(errno));
		}
	}
	if (sf->size < CS_SEG_HEADER || all_zero(hdr, sizeof(hdr))) {
		/* G1: a header is synced before any record is written, so a short or zero
		 * header in the last file is a crash while creating it: it holds nothing. */
		if (last) {
			sf->unfinished = 1;
			return 0;
		}
		return cs_fail(CS_ECORRUPT, "segment %08x: %s, and later segments exist", sf->id,
		               sf->size < CS_SEG_HEADER ? "file shorter than its header"
		                                        : "header is all zero");
	}
	int rc = seg_decode(hdr, &sf->h);
	if (rc != 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", cs_errmsg());
		return cs_fail(rc, "segment %08x: %s", sf->id, why);
	}
	if (sf->h.store_uid != opt->store_uid)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x belongs to another store (uid %016llx, expected "
		               "%016llx)",
		               sf->id, (unsigned long long)sf->h.store_uid,
		               (unsigned long long)opt->store_uid);
	if (sf->h.id != sf->id)
		return cs_fail(CS_ECORRUPT, "segment %08x: header names segment %08llx", sf->id,
		               (unsigned long long)sf->h.id);
	return 0;
}

static void close_all(struct seg_file *v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (v[i].fd >= 0)
			close(v[i].fd);
}

/* The steps after the whole log was accepted (P5): remove an unfinished last file; extend a
 * short last file back to its capacity, so the writer finds the preallocated file it
 * expects. */
static int finish(struct replay *rp, struct seg_file *files, uint32_t nfiles, uint32_t nsegs)
{
	const struct rec_options *opt = rp->opt;

	if (nfiles > nsegs) {
		struct seg_file *sf = &files[nfiles - 1];
		char name[16];
		seg_name(name, sizeof(name), sf->id);
		close(sf->fd);
		sf->fd = -1;
		if (unlinkat(opt->dirfd, name, 0) != 0)
			return cs_fail(-errno, "segment %08x: removing it: %s", sf->id,
			               strerror(errno));
		if (fsync(opt->dirfd) != 0)
			return cs_fail(-errno, "store directory: fsync: %s", strerror(errno));
		/* Information, not a warning: after a kill or power cut, a spare the writer made
		 * ahead of need (G1) is an ordinary state, and nothing was lost. */
		say(rp, CS_LOG_INFO,
		    "segment %08x: removed an unfinished segment file of %llu bytes (no header: "
		    "a spare never started, or a crash while creating it)",
		    sf->id, (unsigned long long)sf->size);
	}
	if (nsegs > 0) {
		struct seg_file *sf = &files[nsegs - 1];
		if (sf->size < sf->h.capacity) {
			if (ftruncate(sf->fd, (off_t)sf->h.capacity) != 0 || fsync(sf->fd) != 0)
				return cs_fail(-errno, "segment %08x: extending it: %s", sf->id,
				               strerror(errno));
			say(rp, CS_LOG_INFO,
			    "segment %08x: extended a short file of %llu bytes to its capacity",
			    sf->id, (unsigned long long)sf->size);
		}
	}
	return 0;
}

__attribute__((format(printf, 1, 2))) static int stale(const char *fmt, ...)
{
	char msg[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cs_fail(REC_STALE, "%s", msg);
}

/* Reads n bytes at off of sf into p. */
static int read_at(const struct seg_file *sf, uint64_t off, uint8_t *p, size_t n)
{
	/* Bounded: a short read of a regular file happens only at its end. */
	for (size_t got = 0, retries = 0; got < n;) {
		ssize_t k = pread(sf->fd, p + got, n - got, (off_t)(off + got));
		if (k > 0)
			got += (size_t)k;
		else if (k < 0 && errno == EINTR && ++retries < CS_IO_RETRIES)
			continue;
		else
			return cs_fail(k < 0 ? -errno : -EIO, "segment %08x: read at offset %llu "
			               "failed: %s", sf->id, (unsigned long long)off,
			               strerror(k < 0 ? errno : EIO));
	}
	return 0;
}

/* Does sf hold a record at off that decodes, lies whole inside the segment's limit and, when
 * verify is set, matches its checksum? Returns 1 (and *h), 0, or a read error. */
static int record_at(const struct seg_file *sf, uint64_t off, int verify, struct rec_hdr *h)
{
	uint64_t lim = min_u64(sf->h.capacity, sf->size);
	uint8_t hdr[CS_REC_HEADER];
	int rc;

	if (off + CS_REC_HEADER > lim)
		return 0;
	if ((rc = read_at(sf, off, hdr, sizeof(hdr))) != 0)
		return rc;
	if (rec_decode_header(hdr, h) != REC_OK || off + rec_size(h->len) > lim)
		return 0;
	if (!verify)
		return 1;
	uint8_t *payload = malloc(h->len ? h->len : 1);
	if (payload == NULL)
		return -ENOMEM;
	rc = read_at(sf, off + CS_REC_HEADER, payload, h->len);
	struct iovec iov = {payload, h->len};
	if (rc == 0)
		rc = rec_verify(hdr, h, &iov, 1) == 0;
	free(payload);
	return rc;
}

/* Checks a checkpoint's start against the log before anything is read or applied (FORMAT.md
 * 12.4): the segments up to it are those it lists, the record end_seq - 1 is where it says
 * with its checksum, and the start holds the record of seq `seq`, or is where the record
 * after end_seq - 1 goes. Sets *i0 to the index of the start segment. Returns 0, REC_STALE
 * or a read error. */
static int check_start(const struct rec_start *st, const struct seg_file *files, uint32_t n,
                       uint32_t *i0)
{
	struct rec_hdr h;
	uint32_t k = 0, i;
	int rc = 0;

	for (i = 0; i < n && files[i].id <= st->pos.seg; i++, k++) {
		if (k == st->nsegs || st->segs[k].id > files[i].id)
			return stale("segment %08x is not in the checkpoint", files[i].id);
		if (st->segs[k].id < files[i].id)
			break;
		if (files[i].h.first_seq != st->segs[k].first_seq ||
		    st->segs[k].end > files[i].h.capacity)
			return stale("segment %08x starts at seq %llu, not at seq %llu as the "
			             "checkpoint says",
			             files[i].id, (unsigned long long)files[i].h.first_seq,
			             (unsigned long long)st->segs[k].first_seq);
	}
	if (k != st->nsegs)
		return stale("segment %08x, which the checkpoint lists, is missing",
		             st->segs[k].id);
	CS_ASSERT(k > 0 && files[k - 1].id == st->pos.seg); /* K2: segs ends at pos.seg */
	*i0 = k - 1;
	const struct seg_file *sf = &files[*i0];
	uint64_t last_end = 0;
	if (st->end_seq > 1) {
		const struct seg_file *lf = NULL;
		for (i = 0; i < n && lf == NULL; i++)
			if (files[i].id == st->last.seg)
				lf = &files[i];
		if (lf != NULL && (rc = record_at(lf, st->last.off, 1, &h)) < 0)
			return rc;
		if (lf == NULL || rc == 0 || h.seq != st->end_seq - 1 || h.checksum != st->last_sum)
			return stale("the checkpoint covers the log through seq %llu, but segment "
			             "%08x offset %u holds no such record: the checkpoint is newer "
			             "than the log",
			             (unsigned long long)(st->end_seq - 1), st->last.seg,
			             st->last.off);
		last_end = st->last.seg == st->pos.seg ? st->last.off + rec_size(h.len) : 0;
	}
	if (st->pos.off > min_u64(sf->h.capacity, sf->size))
		return stale("the checkpoint starts at offset %u, past the end of segment %08x",
		             st->pos.off, sf->id);
	if (st->seq < st->end_seq) {
		if ((rc = record_at(sf, st->pos.off, 0, &h)) < 0)
			return rc;
		if (rc == 0 || h.seq != st->seq || (h.flags & REC_F_MID))
			return stale("segment %08x offset %u does not begin the record of seq %llu "
			             "where the checkpoint starts",
			             sf->id, st->pos.off, (unsigned long long)st->seq);
	} else if (last_end != 0 ? st->pos.off < last_end
	                         : st->pos.off != CS_SEG_HEADER || sf->h.first_seq != st->seq) {
		return stale("segment %08x offset %u is not where the record after seq %llu goes",
		             sf->id, st->pos.off, (unsigned long long)(st->seq - 1));
	}
	return 0;
}

/* Judges the seq gaps met (P7): each one covered by a dropped range held records that
 * compaction deleted; any other lost records, refused unless salvaging. */
static int judge_gaps(struct replay *rp)
{
	for (uint32_t i = 0; i < rp->ngaps; i++) {
		const struct gap *g = &rp->gaps[i];
		if (rec_drops_cover(&rp->res->drops, g->from, g->to)) {
			if (g->torn_id == 0)
				continue;
			/* As a torn tail the next segment continues (table 7.2, not last). */
			rp->res->torn_bytes += g->torn_bytes;
			say(rp, CS_LOG_WARN,
			    "segment %08x: ignored torn tail of %llu bytes at offset %llu (%s): "
			    "the segments after it were dropped by compaction",
			    g->torn_id, (unsigned long long)g->torn_bytes,
			    (unsigned long long)g->torn_off, g->what);
			continue;
		}
		if (!rp->opt->salvage) {
			if (g->torn_id != 0)
				return cs_fail(CS_ECORRUPT,
				               "segment %08x offset %llu: %s; the next segment starts "
				               "at seq %llu, expected %llu; open with salvage to skip it",
				               g->torn_id, (unsigned long long)g->torn_off, g->what,
				               (unsigned long long)g->to, (unsigned long long)g->from);
			return cs_fail(CS_ECORRUPT,
			               "segment %08x starts at seq %llu, expected %llu: records lost "
			               "(a segment file is missing and no segment-drop record "
			               "accounts for seqs %llu..%llu)",
			               g->next_id, (unsigned long long)g->to,
			               (unsigned long long)g->from, (unsigned long long)g->from,
			               (unsigned long long)(g->to - 1));
		}
		rp->res->salvaged_records += g->to - g->from;
		rp->res->salvaged_bytes += g->torn_bytes;
		say(rp, CS_LOG_WARN,
		    "segment %08x starts at seq %llu, expected %llu: salvage skipped %llu lost "
		    "records",
		    g->next_id, (unsigned long long)g->to, (unsigned long long)g->from,
		    (unsigned long long)(g->to - g->from));
	}
	return 0;
}

static int replay_files(struct replay *rp, struct seg_file *files, uint32_t nfiles, uint32_t *nsegs)
{
	const struct rec_options *opt = rp->opt;
	uint32_t n = nfiles;
	uint32_t window = 0;
	int rc;

	for (uint32_t i = 0; i < nfiles; i++) {
		rc = open_segment(opt, &files[i], i + 1 == nfiles);
		if (rc != 0)
			return rc;
		if (files[i].unfinished)
			n--;
		else if (files[i].h.window > window)
			window = files[i].h.window;
	}
	*nsegs = n;
	if (n > 0) {
		rp->cap = (size_t)window + CS_REC_MAX;
		rp->buf = malloc(rp->cap);
		rp->gaps = calloc((size_t)n + 1, sizeof(*rp->gaps));
		if (rp->buf == NULL || rp->gaps == NULL)
			return -ENOMEM;
	}
	const struct rec_start *st = opt->start;
	uint32_t i0 = 0;
	if (st != NULL) {
		if (n == 0)
			return stale("the log has no segment, but the checkpoint names %08x",
			             st->pos.seg);
		if ((rc = check_start(st, files, n, &i0)) != 0)
			return rc;
		/* Segments before the start are not read: the checkpoint says where they end. */
		for (uint32_t i = 0; i < i0; i++)
			rp->res->segs[i] = (struct wal_seg){
			    .id = files[i].id,
			    .fd = files[i].fd,
			    .first_seq = files[i].h.first_seq,
			    .capacity = files[i].h.capacity,
			    .end = st->segs[i].end,
			};
		/* The dropped ranges stated before the start (C4 of compact.c). */
		for (uint32_t i = 0; i < st->drops.n; i++)
			if ((rc = rec_drops_add(&rp->res->drops, &st->drops.v[i])) != 0)
				return rc;
		if (st->end_seq > 1) {
			rp->res->last_pos = st->last;
			rp->res->last_seq = st->end_seq - 1;
			rp->res->last_sum = st->last_sum;
		}
	}
	rp->seq = 1;
	for (uint32_t i = i0; i < n; i++) {
		struct seg_file *sf = &files[i];
		uint64_t first = sf->h.first_seq;
		uint64_t from = CS_SEG_HEADER;
		int salvaged = 0;
		if (st != NULL && i == i0) {
			/* check_start() judged the segments up to here. */
			rp->seq = st->seq;
			from = st->pos.off;
			salvaged = st->salvaged;
		} else if (first < rp->seq) {
			return cs_fail(CS_ECORRUPT,
			               "segment %08x starts at seq %llu, expected %llu: sequence "
			               "numbers repeat",
			               sf->id, (unsigned long long)first,
			               (unsigned long long)rp->seq);
		} else if (first > rp->seq || rp->tail.torn_id != 0) {
			struct gap *g = &rp->gaps[rp->ngaps++]; /* P7: judged at the end */
			*g = rp->tail;
			g->from = rp->seq;
			g->to = first;
			g->next_id = sf->id;
			rp->seq = first;
		}
		rp->tail.torn_id = 0;
		rp->sf = sf;
		rp->lim = min_u64(sf->h.capacity, sf->size);
		/* A segment before an unfinished one is the last: the unfinished file holds no
		 * record, and may be a spare made while this one was still written (G1), so this
		 * one's tail is the log's. */
		rp->last = i + 1 == n;
		rp->next = i + 1 < n ? &files[i + 1] : NULL;
		uint32_t end = CS_SEG_HEADER;
		rc = scan_segment(rp, from, salvaged, &end);
		if (rc != 0)
			return rc;
		rp->res->segs[i] = (struct wal_seg){
		    .id = sf->id,
		    .fd = sf->fd,
		    .first_seq = first,
		    .capacity = sf->h.capacity,
		    .end = end,
		    .closed = i + 1 == n && rp->res->last_closed,
		};
	}
	rp->res->next_seq = n > 0 ? rp->seq : 1;
	if (st != NULL && rp->res->next_seq < st->end_seq)
		return stale("the log ends at seq %llu, before the checkpoint's end at seq %llu",
		             (unsigned long long)rp->res->next_seq, (unsigned long long)st->end_seq);
	if ((rc = judge_gaps(rp)) != 0)
		return rc;
	return finish(rp, files, nfiles, n);
}

int rec_replay(const struct rec_options *opt, struct rec_result *result)
{
	struct replay rp = {.opt = opt, .res = result};
	struct seg_file *files = NULL;
	uint32_t *ids = NULL, nfiles = 0, nsegs = 0;
	int rc;

	memset(result, 0, sizeof(*result));
	rc = list_dir(opt->dirfd, &ids, &nfiles, &result->stray_files);
	if (rc != 0)
		return rc;
	if (nfiles > 0) {
		files = calloc(nfiles, sizeof(*files));
		result->segs = calloc(nfiles, sizeof(*result->segs));
		if (files == NULL || result->segs == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < nfiles; i++) {
			files[i].id = ids[i];
			files[i].fd = -1;
		}
	}
	rc = replay_files(&rp, files, nfiles, &nsegs);
out:
	if (rc != 0) {
		/* P4 */
		if (files != NULL)
			close_all(files, nfiles);
		free(result->segs);
		result->segs = NULL;
		result->nsegs = 0;
		rec_drops_free(&result->drops);
	} else {
		result->nsegs = nsegs;
		if (nsegs == 0) {
			free(result->segs);
			result->segs = NULL;
		}
	}
	free(rp.buf);
	free(rp.gaps);
	free(files);
	free(ids);
	return rc;
}
