/*
 * wal.c - the write-ahead log: batch buffers, group commit, segments and the writer thread.
 *
 * Appenders reserve room in the filling buffer under the mutex, then encode their records
 * into it without the lock. The writer thread swaps the filling buffer for the free one,
 * writes the full one with one backend call (with an fdatasync when one is due) and wakes
 * whoever waits for it. Everyone else, wal_read() included, only ever takes the mutex for
 * short bookkeeping: no I/O is done under it.
 *
 * Invariants:
 *   W1. One batch, one segment: a buffer holds the records of one segment only, and a
 *       transaction (one wal_append call) lies within one batch.
 *   W2. A record is acknowledged (wal_wait in sync mode, wal_sync) only once an fdatasync
 *       that began after its write completed has returned 0. The durable horizon `durable`
 *       (the largest seq known to be on stable storage) never moves back.
 *   W3. The bytes of a segment written since its last completed sync, a write in flight
 *       included, never exceed its window 2 * batch_bytes: a write is given a sync whenever
 *       the unsynced bytes after it would exceed batch_bytes, so before any write at most
 *       batch_bytes are unsynced, and a batch adds at most batch_bytes.
 *   W4. A failed write, sync or segment creation poisons the WAL: it is never retried (the
 *       kernel may have dropped the dirty pages), no later write is made, and the buffers
 *       holding unwritten records are kept so that wal_read() still finds them. The one
 *       exception is a segment creation that ran out of space (ENOSPC, EDQUOT) before any
 *       record went to the new file and left no file behind (W10).
 *   W5. The log is laid out in seq order: offsets within a segment and segment ids grow with
 *       seq, and batches are written in order by the one writer. The old segment is synced
 *       before the next one's header is written (and, when it is created on demand, before
 *       it is created), so after a power cut the log is still a prefix.
 *   W6. A buffer is swapped out of FILLING only when no appender is still copying into it
 *       (pending == 0), so the writer never writes half-encoded records.
 *   W7. Every record's synced_seq is the durable horizon at reservation time: < its seq.
 *   W8. Every file offset handed out lies in a segment whose file exists, with its fd in the
 *       table: a segment enters the table only once its file was created and its name made
 *       durable, and positions in it are handed out only after that. Its header is written
 *       and synced before any record is (W12), so the file is valid whenever a record of it
 *       is in the file. The buffer holding a record is
 *       released only after its write completed, so wal_read() always finds the record in a
 *       buffer or in the file.
 *   W9. At open the last recovered segment is synced, so the horizon starts at next_seq - 1
 *       truthfully, and unsynced bytes start at 0; not when the caller knows every record
 *       durable already (cfg->log_durable: a checkpoint's end mark is the end of the log).
 *   W11. A segment other than the last may be dropped (wal_drop_segment, for compaction). A
 *       read holds a reference on the segment it preads (refs, under mu) from its lookup
 *       until the pread returned, and a drop first marks the segment `dropping`, after which
 *       no new reference is given, then waits until refs is 0 before it closes the fd: a
 *       read never preads a closed (or reused) fd. Entries of the table move when one is
 *       dropped, so a reference names its segment by id, never by a pointer kept across an
 *       unlock.
 *   W10. A new segment is created on an appender's request (seg_req), while the filling
 *       buffer is empty and no appender may reserve: the old segment is closed to appends
 *       from the request on, so the new segment's first seq is next_seq at the request. A
 *       creation that fails for space (ENOSPC, EDQUOT) with no file left behind is not
 *       poison: every appender that needed that segment gets CS_EFULL, records in the old
 *       segment continue, and the next appender that needs a segment asks again.
 *   W12. The spare. Once the writer has written past half of the last segment, it prepares
 *       its successor ahead of need: the file is created (exclusive, preallocated to read as
 *       zeros) and the directory synced, but no header is written, and the file is not in
 *       the table. At most one spare exists, its id is the last segment's + 1, and a spare
 *       and a creation on demand (W10) never run at once (spare_busy, seg_req). An appender
 *       that needs the next segment starts the spare under mu, without waiting for any I/O:
 *       the spare enters the table with hdr_pending set and its first seq next_seq, and the
 *       filling buffer (empty, W10) points at it. Before writing anything else the writer
 *       then syncs the old segment (W5), writes the new header with a sync, and clears
 *       hdr_pending; so a header-less file is only ever the log's last one, and holds no
 *       record: recovery removes it, and the segment before it is the log's last (FORMAT.md
 *       G1). wal_sync() waits for the header too, so a checkpoint never names a segment
 *       that a power cut could leave header-less. A spare left at close is removed. A spare
 *       that fails for space is not poison (as W10); none is tried again until the next
 *       segment starts, and the creation on demand gives the appender its CS_EFULL.
 *   W13. In sync mode a batch is written with an fdatasync when a record in it was appended
 *       eager (wal_append: its appender waits for it), or when W3 or a wal_sync() asks. A
 *       record appended lazy (wal_append_lazy: an add, which syncs once at its end) waits
 *       for W3's sync or a later one, and wal_wait() on it asks the writer for a sync
 *       (sync_target), so no wait depends on a later append to end. W2 is unchanged: a wait
 *       still returns only after a sync that began after the record's write.
 *   W14. Background appends leave room. GC's sweep and compaction append in bulk; were they
 *       to fill the buffer that fills while the other is written, a put arriving then would
 *       wait for that whole write (and its sync). So before each of their appends they call
 *       wal_make_room(), which waits for the next swap while their bytes would leave less
 *       than half a batch free in the filling buffer and the other buffer is being written.
 *       Puts then wait for a write only when puts alone fill half a batch during one write.
 *       A heuristic for latency only: no other invariant depends on it, and it waits for
 *       one swap at most (the writer swaps whenever the buffer it wrote is free again).
 *   W15. A dropped segment's blocks are freed only once its removal is durable, and a step
 *       at a time (io_release of io.h): wal_drop_segment() keeps the fd across the unlink
 *       and the directory sync, then cuts the file down. Freed at once, a written segment
 *       held the log's syncs for tens of milliseconds on a file system that discards
 *       (io.h says why); cut while its name could still come back, a crash could leave a
 *       segment shorter than its records, which recovery rightly refuses.
 *
 * A segment's life (W10, W12); an on-demand creation goes straight from nothing to STARTED:
 *
 *            writer past half of       appender needs         writer synced the old
 *            the last segment          the next segment       segment, wrote the header
 *     none ------------------> SPARE -----------------> PENDING --------------------> STARTED
 *           file created,     (not in the    |  in the table, hdr_pending,
 *           directory synced   table)        |  records reserved, none written
 *                                            v
 *                              close: removed (a power cut: recovery removes it)
 *
 * A batch buffer's life (every transition is made under the mutex):
 *
 *            swap: the writer takes      swap: pending == 0,        write (and sync)
 *            the other buffer            the writer takes it        completed
 *     FREE -----------------------> FILLING ------------------> WRITING -------------> FREE
 *                                  appenders reserve              | write failed:
 *                                  and copy in                    v stays WRITING (W4)
 */
#include "wal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "assist.h"
#include "err.h"
#include "cs_limits.h"

enum buf_state { BUF_FREE, BUF_FILLING, BUF_WRITING };

struct batch {
	uint8_t *data; /* owned; bufsz bytes of anonymous mapping (buf_map), page-aligned */
	enum buf_state state;
	uint32_t seg;       /* the segment all its records belong to (W1) */
	uint32_t start;     /* file offset of data[0] in that segment */
	uint32_t fill;      /* bytes reserved */
	int pending;        /* appenders still copying into it (W6) */
	uint64_t first_seq; /* seq of its first record, 0 while empty */
	uint64_t last_seq;  /* seq of its last record */
	int eager;          /* sync mode: a record in it was not appended lazy (W13) */
};

struct seg_ent {
	uint32_t id;
	int fd;             /* owned; always open (W8) */
	uint64_t capacity;  /* file size */
	uint32_t end;       /* offset past the last record reserved in it */
	uint64_t first_seq; /* seq of its first record (its header's) */
	int refs;           /* reads in flight on fd (W11) */
	int dropping;       /* wal_drop_segment() waits for refs to drain (W11) */
	int hdr_pending;    /* started from the spare, header not yet written (W12) */
};

struct wal {
	pthread_mutex_t mu;
	pthread_cond_t writer_cv;  /* the writer waits for work (monotonic clock) */
	pthread_cond_t space_cv;   /* appenders wait for a swap */
	pthread_cond_t durable_cv; /* wal_wait / wal_sync wait for the horizon or poison */
	pthread_cond_t refs_cv;    /* a dropping segment's last read ended (W11) */
	pthread_t thread;
	struct assist assist; /* a second core for long reads (R2) */

	/* Set at open, read-only afterwards. */
	int dirfd; /* borrowed */
	uint64_t store_uid;
	uint64_t seg_bytes;
	uint32_t batch_bytes;
	uint32_t window; /* 2 * batch_bytes (W3) */
	size_t bufsz;    /* each batch buffer's size: batch_bytes rounded up to pages */
	cs_durability mode;
	unsigned interval_ms;
	struct io *io; /* owned; used by the writer thread only once it runs */

	/* Under mu. */
	struct batch buf[2];
	int cur;              /* index of the FILLING buffer */
	uint64_t swaps;       /* count of swaps, for appenders waiting on one */
	struct seg_ent *segs; /* owned; CS_SEGMENTS_MAX slots, nsegs used, id order */
	uint32_t nsegs;
	uint64_t next_seq;
	struct wal_pos last_pos; /* the appended record of seq last_seq, and its checksum */
	uint64_t last_seq;
	uint64_t last_sum;
	uint64_t written_seq; /* last seq whose write completed */
	uint64_t durable;     /* the durable horizon (W2) */
	uint64_t sync_target; /* wal_sync() wants every seq <= this durable */
	int closing;
	int poison;              /* 0, or the -errno that poisoned the WAL (W4) */
	const char *poison_what; /* "write", "sync", "write and sync", "segment creation" */
	int seg_req;             /* an appender waits for the next segment's creation (W10) */
	uint64_t seg_tries;      /* creations finished, ok or not; waiters watch it */
	int seg_err;             /* the -errno of the last creation, 0 if it succeeded */
	int spare_fd;            /* owned: the spare of id last + 1 (W12), or -1 */
	int spare_busy;          /* the writer is preparing a spare (W12) */
	int spare_failed;        /* a spare failed for space; no other until a segment starts */
	int no_spare;            /* set at open: never prepare a spare */

	/* The writer thread's own (and wal_open's before the thread starts). */
	int wfd;                     /* fd of the segment written last, -1 for none */
	uint64_t unsynced;           /* bytes written to wfd since its last sync (W3) */
	uint64_t wend;               /* offset past the last batch written to wfd (W12) */
	struct timespec dirty_since; /* when unsynced last became nonzero (interval mode) */
};

static struct seg_ent *seg_find(struct wal *w, uint32_t id)
{
	uint32_t lo = 0, hi = w->nsegs;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (w->segs[mid].id == id)
			return &w->segs[mid];
		if (w->segs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int poisoned_error(const struct wal *w)
{
	return cs_fail(CS_EPOISONED, "log %s failed earlier: %s; close and reopen", w->poison_what,
	               cs_strerror(w->poison));
}

/* Called with mu held, by the writer only. */
static void set_poison(struct wal *w, int rc, const char *what)
{
	CS_ASSERT(rc < 0);
	if (w->poison == 0) {
		w->poison = rc;
		w->poison_what = what;
	}
	pthread_cond_broadcast(&w->durable_cv);
	pthread_cond_broadcast(&w->space_cv);
}

static void now_mono(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static struct timespec add_ms(struct timespec t, unsigned ms)
{
	t.tv_sec += ms / 1000;
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

static int ts_before(struct timespec a, struct timespec b)
{
	return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}

/*
 * Creates segment file id: exclusive create and preallocation, header written and synced,
 * directory synced, every step through the backend so that a fault-injecting one sees them.
 * On failure the half-made file is removed (best effort), so recovery never meets a segment
 * without a valid header but as the last file after a crash. Returns the fd or -errno; on
 * failure *clean says whether the failure left nothing behind that a retry would meet: the
 * create itself failed (it removes what it made), or the header write failed and the file
 * was removed. A failed directory sync is never clean: it is final, as a failed fsync is.
 */
static int seg_create(struct wal *w, uint32_t id, uint64_t first_seq, int *clean)
{
	uint8_t hdr[CS_SEG_HEADER];
	struct seg_hdr sh = {
	    .version = SEG_FORMAT_VERSION,
	    .store_uid = w->store_uid,
	    .id = id,
	    .first_seq = first_seq,
	    .capacity = w->seg_bytes,
	    .window = w->window,
	};
	char name[32];
	int fd = -1, rc;

	*clean = 1;
	seg_name(name, sizeof(name), id);
	rc = w->io->ops->create(w->io, w->dirfd, name, w->seg_bytes, &fd);
	if (rc != 0)
		return rc; /* create() removed what it made */
	seg_encode(hdr, &sh);
	rc = w->io->ops->write(w->io, fd, hdr, sizeof(hdr), 0, 1);
	if (rc == 0) {
		rc = w->io->ops->sync_dir(w->io, w->dirfd);
		*clean = rc == 0;
	}
	if (rc != 0) {
		close(fd);
		if (w->io->ops->remove(w->io, w->dirfd, name) != 0)
			*clean = 0;
		/* An undurable removal is harmless: recovery removes a last segment whose
		 * header is missing, and a retry's exclusive create finds the name free. */
		(void)w->io->ops->sync_dir(w->io, w->dirfd);
		return rc;
	}
	return fd;
}

/* The failures of a segment creation after which the log stays usable (W10). */
static int out_of_space(int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT;
}

/*
 * Prepares the spare id (W12): exclusive create and preallocation, then a directory sync,
 * through the backend; no header is written. Returns the fd or -errno; *clean as for
 * seg_create(): the create failed (it removes what it made), never when the directory sync
 * did (final, as a failed fsync is; the file is removed, best effort).
 */
static int seg_prepare(struct wal *w, uint32_t id, int *clean)
{
	char name[32];
	int fd = -1, rc;

	*clean = 1;
	seg_name(name, sizeof(name), id);
	rc = w->io->ops->create(w->io, w->dirfd, name, w->seg_bytes, &fd);
	if (rc != 0)
		return rc;
	rc = w->io->ops->sync_dir(w->io, w->dirfd);
	if (rc != 0) {
		*clean = 0;
		close(fd);
		/* Header-less: recovery removes it should the removal not be durable. */
		(void)w->io->ops->remove(w->io, w->dirfd, name);
		(void)w->io->ops->sync_dir(w->io, w->dirfd);
		return rc;
	}
	return fd;
}

/* Removes the spare, if any (W12): at close, with the writer stopped. Best effort: recovery
 * removes a header-less last file. */
static void spare_remove(struct wal *w)
{
	char name[32];

	if (w->spare_fd < 0)
		return;
	close(w->spare_fd);
	w->spare_fd = -1;
	seg_name(name, sizeof(name), w->segs[w->nsegs - 1].id + 1);
	if (w->io->ops->remove(w->io, w->dirfd, name) == 0)
		(void)w->io->ops->sync_dir(w->io, w->dirfd);
}

/* ---- The writer thread ------------------------------------------------------------------ */

/* Records that the writer synced every seq <= upto. Called with mu held. */
static void mark_durable(struct wal *w, uint64_t upto)
{
	if (upto > w->durable)
		w->durable = upto; /* W2 */
	w->unsynced = 0;
	pthread_cond_broadcast(&w->durable_cv);
}

/* Syncs the segment written last, nothing else being due. Called and returns with mu held. */
static void writer_sync(struct wal *w)
{
	uint64_t upto = w->written_seq;
	int rc;

	pthread_mutex_unlock(&w->mu);
	rc = w->io->ops->sync(w->io, w->wfd);
	pthread_mutex_lock(&w->mu);
	if (rc != 0)
		set_poison(w, rc, "sync"); /* W4 */
	else
		mark_durable(w, upto);
}

/*
 * Swaps the filling buffer out and writes it; sync says whether a sync was asked for.
 * Called and returns with mu held.
 */
static void writer_write(struct wal *w, int sync)
{
	struct batch *b = &w->buf[w->cur];
	struct batch *nb = &w->buf[1 - w->cur];
	const char *what;
	int rc;

	CS_ASSERT(b->fill > 0 && b->pending == 0); /* W6 */
	CS_ASSERT(nb->state == BUF_FREE && nb->fill == 0 && nb->pending == 0);
	b->state = BUF_WRITING;
	nb->state = BUF_FILLING;
	nb->seg = b->seg;
	nb->start = b->start + b->fill;
	nb->first_seq = 0;
	nb->last_seq = 0;
	nb->eager = 0;
	w->cur = 1 - w->cur;
	w->swaps++;
	pthread_cond_broadcast(&w->space_cv);
	/* Under mu: a drop (W11) may move the table's entries. */
	CS_ASSERT(seg_find(w, b->seg) != NULL && seg_find(w, b->seg)->fd == w->wfd); /* W8 */
	pthread_mutex_unlock(&w->mu);

	if (w->unsynced + b->fill > w->batch_bytes)
		sync = 1;
	/* The backend reports a write and its sync as one result. */
	what = sync ? "write and sync" : "write";
	CS_ASSERT(w->unsynced + b->fill <= w->window); /* W3 */
	rc = w->io->ops->write(w->io, w->wfd, b->data, b->fill, b->start, sync);
	/* Unsynced bytes are handed to the disk now rather than at the next sync, so that it
	 * writes them while this thread copies the next batch: that sync then waits for
	 * little. Its failure poisons as a sync's does (W4), since it may be the only report
	 * of a writeback error on these pages. */
	if (rc == 0 && !sync && w->io->ops->writeback != NULL) {
		rc = w->io->ops->writeback(w->io, w->wfd, b->start, b->fill);
		what = "writeback";
	}

	pthread_mutex_lock(&w->mu);
	if (rc != 0) {
		set_poison(w, rc, what); /* W4: b stays WRITING, still readable */
		return;
	}
	w->written_seq = b->last_seq;
	w->wend = (uint64_t)b->start + b->fill;
	if (sync) {
		mark_durable(w, b->last_seq);
	} else {
		if (w->unsynced == 0)
			now_mono(&w->dirty_since);
		w->unsynced += b->fill;
	}
	b->state = BUF_FREE;
	b->fill = 0;
	b->first_seq = 0;
	b->last_seq = 0;
	b->eager = 0;
}

/*
 * Creates the segment after the last one for the appender that asked (W10), the filling
 * buffer being empty, and points that buffer at it. Called and returns with mu held.
 */
static void writer_new_segment(struct wal *w)
{
	struct batch *b = &w->buf[w->cur];
	struct seg_ent *last = &w->segs[w->nsegs - 1];
	uint32_t id = last->id + 1;
	uint64_t first_seq = w->next_seq, written = w->written_seq;
	const char *what = "segment creation";
	int rc = 0, fd = -1, clean = 0, presynced = 0;

	CS_ASSERT(b->state == BUF_FILLING && b->fill == 0 && b->pending == 0); /* W10 */
	CS_ASSERT(w->nsegs < CS_SEGMENTS_MAX && last->id < UINT32_MAX);
	/* No record is in flight: the other buffer's write completed on this thread. */
	CS_ASSERT(w->buf[1 - w->cur].state == BUF_FREE && written == first_seq - 1);
	pthread_mutex_unlock(&w->mu);

	/* W5: the old segment is made durable before the new one exists. */
	if (w->unsynced > 0) {
		rc = w->io->ops->sync(w->io, w->wfd);
		presynced = rc == 0;
		if (rc != 0)
			what = "sync";
	}
	if (rc == 0) {
		fd = seg_create(w, id, first_seq, &clean);
		rc = fd < 0 ? fd : 0;
	}

	pthread_mutex_lock(&w->mu);
	if (presynced)
		mark_durable(w, written);
	if (rc == 0) {
		w->segs[w->nsegs++] =
		    (struct seg_ent){.id = id, .fd = fd, .capacity = w->seg_bytes,
		                     .end = CS_SEG_HEADER, .first_seq = first_seq};
		w->wfd = fd;
		w->unsynced = 0;
		w->wend = CS_SEG_HEADER;
		w->spare_failed = 0;
		b->seg = id;
		b->start = CS_SEG_HEADER;
	} else if (fd < 0 && clean && out_of_space(rc)) {
		/* W10: nothing was written to the new file and it is gone; the log goes on in
		 * the old segment, and a later append asks again. */
	} else {
		set_poison(w, rc, what);
	}
	w->seg_err = rc;
	w->seg_req = 0;
	w->seg_tries++;
	pthread_cond_broadcast(&w->space_cv);
}

/*
 * Whether the writer should prepare the spare now (W12): none exists or is on its way, no
 * creation on demand is, the last segment is started and the writer has written past half
 * of it. Judged on the writer's own progress (wend), not on reservations, so that a given
 * sequence of batches prepares it at the same point every time. Called with mu held.
 */
static int spare_wanted(const struct wal *w)
{
	const struct seg_ent *last = &w->segs[w->nsegs - 1];

	return !w->no_spare && w->spare_fd < 0 && !w->spare_busy && !w->spare_failed &&
	       !w->seg_req && !w->closing && !last->hdr_pending &&
	       w->nsegs < CS_SEGMENTS_MAX && last->id < UINT32_MAX && w->wfd == last->fd &&
	       w->wend > last->capacity / 2;
}

/* Prepares the spare (W12). Called and returns with mu held. */
static void writer_prepare_spare(struct wal *w)
{
	uint32_t id = w->segs[w->nsegs - 1].id + 1;
	int fd, clean;

	w->spare_busy = 1;
	pthread_mutex_unlock(&w->mu);
	fd = seg_prepare(w, id, &clean);
	pthread_mutex_lock(&w->mu);
	w->spare_busy = 0;
	/* Nothing started a segment meanwhile: an appender waits while spare_busy. */
	CS_ASSERT(w->segs[w->nsegs - 1].id + 1 == id);
	if (fd >= 0)
		w->spare_fd = fd;
	else if (clean && out_of_space(fd))
		w->spare_failed = 1; /* W12: the appender's creation on demand reports it */
	else
		set_poison(w, fd, "segment creation");
	pthread_cond_broadcast(&w->space_cv);
}

/*
 * Begins the last segment, started from the spare (W12): syncs the old segment (W5), then
 * writes the header with a sync. Called and returns with mu held, with nothing in flight.
 */
static void writer_begin_segment(struct wal *w)
{
	struct seg_ent *e = &w->segs[w->nsegs - 1];
	uint8_t hdr[CS_SEG_HEADER];
	struct seg_hdr sh = {
	    .version = SEG_FORMAT_VERSION,
	    .store_uid = w->store_uid,
	    .id = e->id,
	    .first_seq = e->first_seq,
	    .capacity = e->capacity,
	    .window = w->window,
	};
	uint64_t written = w->written_seq;
	uint32_t id = e->id;
	int fd = e->fd, rc = 0, presynced = 0;
	const char *what = "sync";

	CS_ASSERT(e->hdr_pending && w->buf[1 - w->cur].state == BUF_FREE); /* W12 */
	CS_ASSERT(written == e->first_seq - 1 && w->wfd != fd);
	pthread_mutex_unlock(&w->mu);

	if (w->unsynced > 0) {
		rc = w->io->ops->sync(w->io, w->wfd); /* W5 */
		presynced = rc == 0;
	}
	if (rc == 0) {
		seg_encode(hdr, &sh);
		what = "segment creation";
		rc = w->io->ops->write(w->io, fd, hdr, sizeof(hdr), 0, 1);
	}

	pthread_mutex_lock(&w->mu);
	if (presynced)
		mark_durable(w, written);
	if (rc != 0) {
		set_poison(w, rc, what); /* W4 */
		return;
	}
	e = seg_find(w, id); /* W11: a drop may have moved the entry */
	e->hdr_pending = 0;
	w->wfd = fd;
	w->unsynced = 0;
	w->wend = CS_SEG_HEADER;
	pthread_cond_broadcast(&w->durable_cv); /* wal_sync() waits for the header too */
}

static void *writer_main(void *arg)
{
	struct wal *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct batch *b = &w->buf[w->cur];
		int dirty = w->written_seq > w->durable;
		int due = w->closing || w->sync_target > w->durable;
		struct timespec now, deadline;

		if (w->poison) {
			/* W4: nothing more is written; wait for wal_close(). */
			if (w->closing)
				break;
			pthread_cond_wait(&w->writer_cv, &w->mu);
			continue;
		}
		if (w->segs[w->nsegs - 1].hdr_pending) {
			writer_begin_segment(w); /* W12: before any record of it is written */
			continue;
		}
		if (spare_wanted(w)) {
			writer_prepare_spare(w);
			continue;
		}
		if (w->mode == CS_DURABLE_INTERVAL && dirty) {
			now_mono(&now);
			deadline = add_ms(w->dirty_since, w->interval_ms);
			if (!ts_before(now, deadline))
				due = 1;
		}
		if (b->fill > 0 && b->pending == 0) {
			writer_write(w, due || (w->mode == CS_DURABLE_SYNC && b->eager)); /* W13 */
			continue;
		}
		if (w->seg_req && b->fill == 0) {
			writer_new_segment(w);
			continue;
		}
		if (b->fill == 0 && dirty && due) {
			writer_sync(w);
			continue;
		}
		if (b->fill == 0 && w->closing)
			break;
		if (w->mode == CS_DURABLE_INTERVAL && dirty)
			pthread_cond_timedwait(&w->writer_cv, &w->mu, &deadline);
		else
			pthread_cond_wait(&w->writer_cv, &w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	spare_remove(w); /* W12 */
	return NULL;
}

/* ---- Open and close --------------------------------------------------------------------- */

static int check_config(const struct wal_config *cfg)
{
	if (cfg->io == NULL || cfg->dirfd < 0)
		return cs_fail(CS_EINVAL, "log: no directory or I/O backend");
	if (cfg->batch_bytes < CS_BATCH_MIN || cfg->batch_bytes > CS_BATCH_MAX)
		return cs_fail(CS_EINVAL, "batch_bytes %u is outside [%u, %u]", cfg->batch_bytes,
		               (unsigned)CS_BATCH_MIN, (unsigned)CS_BATCH_MAX);
	if (cfg->segment_bytes < CS_SEG_MIN || cfg->segment_bytes > CS_SEG_MAX)
		return cs_fail(CS_EINVAL, "segment_bytes %llu is outside [%u, %u]",
		               (unsigned long long)cfg->segment_bytes, (unsigned)CS_SEG_MIN,
		               (unsigned)CS_SEG_MAX);
	if (cfg->batch_bytes > cfg->segment_bytes / 2)
		return cs_fail(CS_EINVAL, "batch_bytes %u exceeds half of segment_bytes %llu",
		               cfg->batch_bytes, (unsigned long long)cfg->segment_bytes);
	if (cfg->durability != CS_DURABLE_SYNC && cfg->durability != CS_DURABLE_INTERVAL &&
	    cfg->durability != CS_DURABLE_NONE)
		return cs_fail(CS_EINVAL, "unknown durability mode %d", (int)cfg->durability);
	if (cfg->durability == CS_DURABLE_INTERVAL &&
	    (cfg->interval_ms == 0 || cfg->interval_ms > CS_INTERVAL_MS_MAX))
		return cs_fail(CS_EINVAL, "interval_ms %u is outside [1, %u]", cfg->interval_ms,
		               (unsigned)CS_INTERVAL_MS_MAX);
	if (cfg->next_seq == 0 || cfg->nsegs > CS_SEGMENTS_MAX ||
	    (cfg->nsegs > 0 && cfg->segs == NULL))
		return cs_fail(CS_EINVAL, "log: bad recovery state");
	for (uint32_t i = 0; i < cfg->nsegs; i++) {
		const struct wal_seg *s = &cfg->segs[i];
		if (s->fd < 0 || s->capacity < CS_SEG_HEADER || s->capacity > CS_SEG_MAX ||
		    s->end < CS_SEG_HEADER || s->end > s->capacity || s->end % CS_REC_ALIGN != 0 ||
		    (i > 0 && s->id <= cfg->segs[i - 1].id))
			return cs_fail(CS_EINVAL, "log: bad recovered segment %08x", s->id);
	}
	return 0;
}

/*
 * Whether appends may continue in recovered segment s: its header must promise a window at
 * least ours (W3 is judged against the window recovery will read from that header).
 */
static int seg_appendable(const struct wal *w, const struct wal_seg *s)
{
	uint8_t hdr[CS_SEG_HEADER];
	struct seg_hdr sh;
	ssize_t n;

	do
		n = pread(s->fd, hdr, sizeof(hdr), 0);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(hdr) || seg_decode(hdr, &sh) != 0)
		return 0;
	return sh.window >= w->window && sh.capacity == s->capacity;
}

/*
 * A batch buffer is an anonymous mapping: its pages read as zeros from the start and are
 * backed only once touched. So no heap bytes can ever reach the files through a gap, and an
 * open costs no 2 * batch_bytes of memset (16 MiB at the default batch), which used to be
 * most of the time a small store took to open. Returns NULL on failure.
 */
static uint8_t *buf_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void buf_unmap(uint8_t *p, size_t len)
{
	if (p != NULL)
		munmap(p, len);
}

static void wal_free(struct wal *w)
{
	if (w->segs != NULL) {
		for (uint32_t i = 0; i < w->nsegs; i++)
			if (w->segs[i].fd >= 0)
				close(w->segs[i].fd);
	}
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	free(w->segs);
	buf_unmap(w->buf[0].data, w->bufsz);
	buf_unmap(w->buf[1].data, w->bufsz);
	if (w->io != NULL)
		w->io->ops->destroy(w->io);
	assist_destroy(&w->assist);
	free(w);
}

static int init_sync(struct wal *w)
{
	pthread_condattr_t ca;
	int rc;

	rc = pthread_mutex_init(&w->mu, NULL);
	if (rc != 0)
		return -rc;
	rc = pthread_condattr_init(&ca);
	if (rc == 0) {
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		rc = pthread_cond_init(&w->writer_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (rc == 0)
		rc = pthread_cond_init(&w->space_cv, NULL);
	if (rc == 0)
		rc = pthread_cond_init(&w->durable_cv, NULL);
	if (rc == 0)
		rc = pthread_cond_init(&w->refs_cv, NULL);
	return -rc; /* a failure here leaks nothing that needs destroying on Linux */
}

int wal_open(struct wal **out, const struct wal_config *cfg)
{
	size_t bufsz = ((size_t)cfg->batch_bytes + 4095) & ~(size_t)4095;
	struct wal *w;
	int rc;

	rc = check_config(cfg);
	if (rc != 0 || (w = calloc(1, sizeof(*w))) == NULL) {
		for (uint32_t i = 0; i < cfg->nsegs && cfg->segs != NULL; i++)
			if (cfg->segs[i].fd >= 0)
				close(cfg->segs[i].fd);
		if (cfg->io != NULL)
			cfg->io->ops->destroy(cfg->io);
		return rc != 0 ? rc : -ENOMEM;
	}
	assist_init(&w->assist);
	w->io = cfg->io;
	w->dirfd = cfg->dirfd;
	w->store_uid = cfg->store_uid;
	w->seg_bytes = cfg->segment_bytes;
	w->batch_bytes = cfg->batch_bytes;
	w->window = 2 * cfg->batch_bytes;
	w->mode = cfg->durability;
	w->interval_ms = cfg->interval_ms;
	w->next_seq = cfg->next_seq;
	w->last_pos = cfg->last_pos;
	w->last_seq = cfg->last_seq;
	w->last_sum = cfg->last_sum;
	w->written_seq = cfg->next_seq - 1;
	w->durable = cfg->next_seq - 1;
	w->wfd = -1;
	w->spare_fd = -1;
	w->no_spare = cfg->no_spare;
	/* The table is sized for the most segments a store may have, so that starting a
	 * segment never allocates; calloc leaves the untouched part as unbacked pages. */
	w->segs = calloc(CS_SEGMENTS_MAX, sizeof(*w->segs));
	w->nsegs = cfg->nsegs;
	for (uint32_t i = 0; i < cfg->nsegs; i++) {
		if (w->segs != NULL) {
			w->segs[i].id = cfg->segs[i].id;
			w->segs[i].fd = cfg->segs[i].fd;
			w->segs[i].capacity = cfg->segs[i].capacity;
			w->segs[i].end = cfg->segs[i].end;
			w->segs[i].first_seq = cfg->segs[i].first_seq;
		} else {
			close(cfg->segs[i].fd);
		}
	}
	w->bufsz = bufsz;
	w->buf[0].data = buf_map(bufsz);
	w->buf[1].data = buf_map(bufsz);
	if (w->segs == NULL || w->buf[0].data == NULL || w->buf[1].data == NULL) {
		if (w->segs == NULL)
			w->nsegs = 0;
		wal_free(w);
		return cs_fail(-ENOMEM, "log: out of memory for %zu-byte batch buffers", bufsz);
	}
	struct batch *b = &w->buf[0];
	b->state = BUF_FILLING;
	if (w->nsegs == 0) {
		/* An empty store: its first segment exists, valid, before open returns. */
		int clean;
		rc = seg_create(w, 1, w->next_seq, &clean);
		if (rc < 0) {
			wal_free(w);
			return cs_fail(rc, "log: cannot create segment 00000001: %s",
			               cs_strerror(rc));
		}
		w->segs[0] = (struct seg_ent){.id = 1, .fd = rc, .capacity = w->seg_bytes,
		                              .end = CS_SEG_HEADER, .first_seq = w->next_seq};
		w->nsegs = 1;
		w->wfd = rc;
		w->wend = CS_SEG_HEADER;
		b->seg = 1;
		b->start = CS_SEG_HEADER;
	} else {
		struct seg_ent *last = &w->segs[w->nsegs - 1];
		/* Records recovery found may sit in the page cache only (a crash of the
		 * process, not of the machine): sync them so the horizon below is true. The
		 * segments before the last were synced when their successor was started. Not
		 * when the caller knows them durable: on a busy disk this sync, which finds
		 * nothing dirty after a clean close, still waited 1-80 ms for the device. */
		rc = cfg->log_durable ? 0 : w->io->ops->sync(w->io, last->fd);
		if (rc != 0) {
			uint32_t id = last->id; /* last points into the table wal_free frees */
			wal_free(w);
			return cs_fail(rc, "log: cannot sync segment %08x: %s", id,
			               cs_strerror(rc));
		}
		b->seg = last->id;
		/* A full or foreign-window segment, or one whose torn tail recovery left in
		 * place, is closed to appends: the start offset at its capacity makes the
		 * first append start the next segment. */
		b->start = !cfg->segs[w->nsegs - 1].closed && seg_appendable(w, &cfg->segs[w->nsegs - 1])
		               ? last->end
		               : (uint32_t)last->capacity;
		w->wfd = last->fd;
		w->wend = b->start;
	}

	rc = init_sync(w);
	if (rc == 0)
		rc = -pthread_create(&w->thread, NULL, writer_main, w);
	if (rc != 0) {
		wal_free(w);
		return cs_fail(rc, "log: cannot start the writer thread: %s", cs_strerror(rc));
	}
	*out = w;
	return 0;
}

int wal_close(struct wal *w)
{
	int rc;
	const char *what;

	pthread_mutex_lock(&w->mu);
	w->closing = 1;
	pthread_cond_signal(&w->writer_cv);
	pthread_cond_broadcast(&w->space_cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);

	rc = w->poison;
	what = w->poison_what;
	pthread_cond_destroy(&w->writer_cv);
	pthread_cond_destroy(&w->space_cv);
	pthread_cond_destroy(&w->durable_cv);
	pthread_cond_destroy(&w->refs_cv);
	pthread_mutex_destroy(&w->mu);
	wal_free(w);
	if (rc != 0)
		return cs_fail(rc, "log %s failed: %s", what, cs_strerror(rc));
	return 0;
}

/* ---- Appending -------------------------------------------------------------------------- */

static size_t parts_len(const struct iovec *parts, int nparts)
{
	size_t len = 0;

	for (int i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	return len;
}

/*
 * Waits, with mu held, for the creation of the next segment that is under way (W10), or
 * poison, or close. Returns -errno when no segment was made meanwhile because creations
 * ran out of space (the last one's error), else 0. By the time a waiter wakes, another
 * appender may have asked again, so the outcome is read from the table, not from seg_err
 * alone.
 */
static int wait_segment(struct wal *w)
{
	uint64_t gen = w->seg_tries;
	uint32_t last = w->segs[w->nsegs - 1].id;

	while (w->seg_tries == gen && !w->poison && !w->closing)
		pthread_cond_wait(&w->space_cv, &w->mu);
	if (w->seg_tries == gen || w->poison || w->segs[w->nsegs - 1].id != last)
		return 0;
	CS_ASSERT(out_of_space(w->seg_err));
	return w->seg_err;
}

/*
 * Asks the writer to create the successor of the last segment, the filling buffer b being
 * empty, and waits for it (W10). Called with mu held. Returns 0 when the request was made
 * and answered (the caller looks again at the state), or CS_EFULL.
 */
static int request_segment(struct wal *w, struct batch *b)
{
	struct seg_ent *last = &w->segs[w->nsegs - 1];

	CS_ASSERT(b->fill == 0 && b->pending == 0 && b->seg == last->id && !w->seg_req);
	if (w->nsegs == CS_SEGMENTS_MAX || last->id == UINT32_MAX)
		return cs_fail(CS_EFULL, "the log has reached its limit of %u segments",
		               (unsigned)CS_SEGMENTS_MAX);
	w->seg_req = 1;
	pthread_cond_signal(&w->writer_cv);
	return wait_segment(w);
}

/*
 * Starts the spare as the last segment for an appender (W12), the filling buffer b being
 * empty: it enters the table with its header pending and b points at it; the writer writes
 * the header before b. Called with mu held.
 */
static void start_spare(struct wal *w, struct batch *b)
{
	struct seg_ent *last = &w->segs[w->nsegs - 1];
	uint32_t id = last->id + 1;

	CS_ASSERT(b->fill == 0 && b->pending == 0 && b->seg == last->id && !w->seg_req);
	CS_ASSERT(w->spare_fd >= 0 && w->nsegs < CS_SEGMENTS_MAX && !last->hdr_pending);
	w->segs[w->nsegs++] =
	    (struct seg_ent){.id = id, .fd = w->spare_fd, .capacity = w->seg_bytes,
	                     .end = CS_SEG_HEADER, .first_seq = w->next_seq, .hdr_pending = 1};
	w->spare_fd = -1;
	w->spare_failed = 0;
	b->seg = id;
	b->start = CS_SEG_HEADER;
	pthread_cond_signal(&w->writer_cv);
}

/* CS_EFULL for an append whose segment could not be created for lack of space. */
static int full_error(const struct wal *w, int rc)
{
	return cs_fail(CS_EFULL,
	               "log: cannot create segment %08x: %s; free space and retry (nothing is "
	               "lost, the store stays usable)",
	               w->segs[w->nsegs - 1].id + 1, cs_strerror(rc));
}

/* Waits, with mu held, until the writer has swapped buffers (or poison, or close). */
static void wait_swap(struct wal *w)
{
	uint64_t gen = w->swaps;

	pthread_cond_signal(&w->writer_cv);
	while (w->swaps == gen && !w->poison && !w->closing)
		pthread_cond_wait(&w->space_cv, &w->mu);
}

void wal_make_room(struct wal *w, uint64_t bytes)
{
	pthread_mutex_lock(&w->mu);
	const struct batch *b = &w->buf[w->cur];
	/* An empty buffer is swapped only once something is in it: never waited for. */
	if (!w->poison && !w->closing && w->buf[1 - w->cur].state == BUF_WRITING &&
	    b->fill > 0 && b->fill + bytes + w->batch_bytes / 2 > w->batch_bytes)
		wait_swap(w); /* W14 */
	pthread_mutex_unlock(&w->mu);
}

static int append(struct wal *w, const struct wal_rec *recs, int n, struct wal_pos *pos,
                  uint64_t *seq, int lazy)
{
	uint64_t total = 0, first, synced;
	struct batch *b;
	uint8_t *dst;
	uint32_t off;
	int rc = 0, seg_failed = 0; /* seg_failed: the -errno a creation we waited on met */

	if (n <= 0)
		return cs_fail(CS_EINVAL, "log: append of %d records", n);
	for (int i = 0; i < n; i++) {
		size_t len = parts_len(recs[i].parts, recs[i].nparts);
		if (recs[i].type == 0 || (recs[i].flags & ~REC_F_KNOWN) != 0 || recs[i].nparts < 0)
			return cs_fail(CS_EINVAL, "log: record type %u flags %#x", recs[i].type,
			               recs[i].flags);
		if (len > CS_REC_PAYLOAD_MAX)
			return cs_fail(CS_ELIMIT, "log record of %zu bytes exceeds %u", len,
			               (unsigned)CS_REC_PAYLOAD_MAX);
		total += rec_size((uint32_t)len);
	}
	if (total > w->batch_bytes)
		return cs_fail(CS_ELIMIT, "transaction of %llu log bytes exceeds the batch of %u",
		               (unsigned long long)total, w->batch_bytes);

	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct seg_ent *last = &w->segs[w->nsegs - 1];

		b = &w->buf[w->cur];
		if (w->poison) {
			rc = poisoned_error(w);
			goto out_unlock;
		}
		if (w->closing) {
			rc = cs_fail(CS_ECLOSED, "log is closing");
			goto out_unlock;
		}
		if (w->seg_req) {
			/* W10: the old segment is closed to appends while its successor is
			 * made. If that fails, so does this append, should it need it too. */
			rc = wait_segment(w);
			if (out_of_space(rc))
				seg_failed = rc;
			rc = 0;
			continue;
		}
		CS_ASSERT(b->state == BUF_FILLING && b->seg == last->id);
		if (b->start + b->fill + total > last->capacity) {
			if (b->fill > 0) {
				wait_swap(w); /* W1: hand the old segment's records over first */
				continue;
			}
			if (w->spare_fd >= 0) {
				start_spare(w, b); /* W12: no I/O to wait for */
				continue;
			}
			if (w->spare_busy) {
				/* W12: a creation on demand would race it for the same name. */
				pthread_cond_wait(&w->space_cv, &w->mu);
				continue;
			}
			if (seg_failed != 0) {
				rc = full_error(w, seg_failed);
				goto out_unlock;
			}
			rc = request_segment(w, b);
			if (rc == CS_EFULL)
				goto out_unlock;
			if (out_of_space(rc))
				seg_failed = rc;
			rc = 0;
			continue;
		}
		if (b->fill + total > w->batch_bytes) {
			wait_swap(w);
			continue;
		}
		break;
	}
	off = b->start + b->fill;
	dst = b->data + b->fill;
	b->fill += (uint32_t)total;
	first = w->next_seq;
	w->next_seq += (uint64_t)n;
	if (b->first_seq == 0)
		b->first_seq = first;
	b->last_seq = w->next_seq - 1;
	synced = w->durable; /* W7: durable < next_seq <= first */
	b->pending++;
	if (!lazy)
		b->eager = 1; /* W13 */
	w->segs[w->nsegs - 1].end = off + (uint32_t)total;
	pthread_mutex_unlock(&w->mu);

	/* The region is ours alone until pending drops (W6): encode without the lock. */
	struct wal_pos last_pos = {0, 0};
	uint64_t last_sum = 0;
	for (int i = 0; i < n; i++) {
		uint8_t cont = (i < n - 1 ? REC_F_CONT : 0) | (i > 0 ? REC_F_MID : 0);
		struct rec_hdr h = {
		    .type = recs[i].type,
		    .flags = (uint8_t)((recs[i].flags & ~(REC_F_CONT | REC_F_MID)) | cont),
		    .seq = first + (uint64_t)i,
		    .synced_seq = synced,
		};
		rec_encode(dst, &h, recs[i].parts, recs[i].nparts);
		CS_ASSERT(h.seq > h.synced_seq);
		if (pos != NULL)
			pos[i] = (struct wal_pos){b->seg, off};
		last_pos = (struct wal_pos){b->seg, off};
		last_sum = h.checksum;
		off += rec_size(h.len);
		dst += rec_size(h.len);
	}
	if (seq != NULL)
		*seq = first + (uint64_t)n - 1;

	pthread_mutex_lock(&w->mu);
	if (first + (uint64_t)n - 1 > w->last_seq) { /* appenders finish in any order */
		w->last_seq = first + (uint64_t)n - 1;
		w->last_pos = last_pos;
		w->last_sum = last_sum;
	}
	CS_ASSERT(b->pending > 0);
	if (--b->pending == 0)
		pthread_cond_signal(&w->writer_cv);
out_unlock:
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int wal_append(struct wal *w, const struct wal_rec *recs, int n, struct wal_pos *pos, uint64_t *seq)
{
	return append(w, recs, n, pos, seq, 0);
}

int wal_append_lazy(struct wal *w, const struct wal_rec *recs, int n, struct wal_pos *pos,
                    uint64_t *seq)
{
	return append(w, recs, n, pos, seq, 1);
}

int wal_wait(struct wal *w, uint64_t seq)
{
	int rc = 0;

	pthread_mutex_lock(&w->mu);
	if (seq >= w->next_seq) {
		/* Waiting for it would never end. */
		pthread_mutex_unlock(&w->mu);
		return cs_fail(CS_EINVAL, "log: wait for seq %llu, which was never appended",
		               (unsigned long long)seq);
	}
	if (w->mode == CS_DURABLE_SYNC && w->durable < seq && !w->poison) {
		/* W13: seq may be a lazy record that no batch sync covers yet. */
		if (w->sync_target < seq) {
			w->sync_target = seq;
			pthread_cond_signal(&w->writer_cv);
		}
		while (w->durable < seq && !w->poison)
			pthread_cond_wait(&w->durable_cv, &w->mu);
	}
	if (w->durable < seq && w->poison)
		rc = poisoned_error(w);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

int wal_sync(struct wal *w)
{
	uint64_t target;
	int rc = 0;

	pthread_mutex_lock(&w->mu);
	target = w->next_seq - 1;
	/* W12: a started segment's header is durable too, records in it or not. */
	if (!w->poison && (w->durable < target || w->segs[w->nsegs - 1].hdr_pending)) {
		if (w->sync_target < target)
			w->sync_target = target;
		pthread_cond_signal(&w->writer_cv);
		while ((w->durable < target || w->segs[w->nsegs - 1].hdr_pending) && !w->poison)
			pthread_cond_wait(&w->durable_cv, &w->mu);
	}
	if (w->poison)
		rc = poisoned_error(w);
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* ---- Reading ---------------------------------------------------------------------------- */

/* Takes a read reference on segment e (may be NULL) and returns its fd, or -1 when it is
 * absent or being dropped (W11). Called with mu held. */
static int seg_ref(struct wal *w, struct seg_ent *e)
{
	if (e == NULL || e->dropping)
		return -1;
	e->refs++;
	return e->fd;
}

/* Drops a reference seg_ref() gave on segment id (W11). */
static void seg_unref(struct wal *w, uint32_t id)
{
	pthread_mutex_lock(&w->mu);
	struct seg_ent *e = seg_find(w, id);
	CS_ASSERT(e != NULL && e->refs > 0);
	if (--e->refs == 0 && e->dropping)
		pthread_cond_broadcast(&w->refs_cv);
	pthread_mutex_unlock(&w->mu);
}

static int gone_error(struct wal_pos pos)
{
	return cs_fail(CS_ECORRUPT, "segment %08x offset %u: no such segment", pos.seg, pos.off);
}

/* Copies len bytes from src into the pieces of dst. */
static void scatter(const struct iovec *dst, int ndst, const uint8_t *src)
{
	for (int i = 0; i < ndst; i++) {
		if (dst[i].iov_len == 0)
			continue; /* an empty piece, whose base may be NULL */
		memcpy(dst[i].iov_base, src, dst[i].iov_len);
		src += dst[i].iov_len;
	}
}

/*
 * Reads the record header into hdr and the payload into dst from fd at off. Returns 0, 1
 * when the file ends first, or -errno.
 */
static int read_file(int fd, uint64_t off, uint8_t *hdr, const struct iovec *dst, int ndst)
{
	struct iovec v[16];
	int piece = 0, tries = 0; /* piece 0 is the header, piece i > 0 is dst[i - 1] */
	size_t skip = 0;

#define PIECE_BASE(i) ((i) == 0 ? (void *)hdr : dst[(i)-1].iov_base)
#define PIECE_LEN(i)  ((i) == 0 ? (size_t)CS_REC_HEADER : dst[(i)-1].iov_len)
	for (;;) {
		int nv = 0;
		ssize_t r;

		while (piece <= ndst && skip == PIECE_LEN(piece)) {
			piece++;
			skip = 0;
		}
		if (piece > ndst)
			return 0;
		for (int i = piece; i <= ndst && nv < 16; i++) {
			size_t s = i == piece ? skip : 0;
			if (PIECE_LEN(i) == s)
				continue; /* an empty piece, whose base may be NULL */
			v[nv].iov_base = (uint8_t *)PIECE_BASE(i) + s;
			v[nv].iov_len = PIECE_LEN(i) - s;
			nv++;
		}
		r = preadv(fd, v, nv, (off_t)off);
		if (r < 0) {
			if (errno == EINTR && ++tries <= CS_IO_RETRIES)
				continue;
			return -errno;
		}
		if (r == 0)
			return 1;
		off += (uint64_t)r;
		while (r > 0) {
			size_t rem = PIECE_LEN(piece) - skip;
			if ((size_t)r < rem) {
				skip += (size_t)r;
				r = 0;
			} else {
				r -= (ssize_t)rem;
				piece++;
				skip = 0;
			}
		}
	}
#undef PIECE_BASE
#undef PIECE_LEN
}

/* Decodes the header hdr of the record read at pos into *h and checks it against the payload
 * (len bytes in the pieces of dst): what wal_read() promises of every record it returns. */
static int check_record(struct wal_pos pos, uint32_t len, const uint8_t hdr[CS_REC_HEADER],
                        struct rec_hdr *h, const struct iovec *dst, int ndst)
{
	switch (rec_decode_header(hdr, h)) {
	case REC_OK:
		break;
	case REC_ZERO:
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: no record here (zero header)",
		               pos.seg, pos.off);
	default:
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: bad record header", pos.seg,
		               pos.off);
	}
	if (h->len != len)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: record length %u, expected %u",
		               pos.seg, pos.off, h->len, len);
	if (rec_verify(hdr, h, dst, ndst) != 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: record checksum mismatch",
		               pos.seg, pos.off);
	return 0;
}

int wal_read(struct wal *w, struct wal_pos pos, uint32_t len, struct rec_hdr *h,
             const struct iovec *dst, int ndst)
{
	uint8_t hdr[CS_REC_HEADER];
	uint64_t rec_end = (uint64_t)pos.off + CS_REC_HEADER + len;
	struct seg_ent *e;
	int fd, rc;

	if (ndst < 0 || parts_len(dst, ndst) != len)
		return cs_fail(CS_EINVAL, "log read: buffers do not total %u bytes", len);
	if (pos.off < CS_SEG_HEADER || pos.off % CS_REC_ALIGN != 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: not a record position",
		               pos.seg, pos.off);

	pthread_mutex_lock(&w->mu);
	for (int i = 0; i < 2; i++) {
		const struct batch *b = &w->buf[i];
		if (b->state == BUF_FREE || b->seg != pos.seg || pos.off < b->start ||
		    pos.off >= b->start + b->fill)
			continue;
		/* Not yet in the file: copy it out of the buffer, under the lock since the
		 * writer frees the buffer under it. */
		if (rec_end > (uint64_t)b->start + b->fill) {
			pthread_mutex_unlock(&w->mu);
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %u: a %u-byte record runs past the log",
			               pos.seg, pos.off, len);
		}
		const uint8_t *src = b->data + (pos.off - b->start);
		memcpy(hdr, src, CS_REC_HEADER);
		scatter(dst, ndst, src + CS_REC_HEADER);
		pthread_mutex_unlock(&w->mu);
		goto check;
	}
	e = seg_find(w, pos.seg);
	if (e != NULL && rec_end > e->capacity) {
		pthread_mutex_unlock(&w->mu);
		return cs_fail(CS_ECORRUPT,
		               "segment %08x offset %u: a %u-byte record runs past the segment end",
		               pos.seg, pos.off, len);
	}
	fd = seg_ref(w, e);
	pthread_mutex_unlock(&w->mu);
	if (fd < 0)
		return gone_error(pos);
	/* The reference keeps the fd open (W11). Reads never touch the backend: an io_uring
	 * ring belongs to the writer thread. */
	rc = read_file(fd, pos.off, hdr, dst, ndst);
	seg_unref(w, pos.seg);
	if (rc < 0)
		return cs_fail(rc, "segment %08x offset %u: read failed: %s", pos.seg, pos.off,
		               cs_strerror(rc));
	if (rc > 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: the file ends in the record",
		               pos.seg, pos.off);
check:
	return check_record(pos, len, hdr, h, dst, ndst);
}

/* Reads into the pieces v[0..nv) from fd at off, resubmitting short transfers (v is
 * consumed). Returns 0, 1 when the file ends first, or -errno. */
static int preadv_all(int fd, struct iovec *v, int nv, uint64_t off)
{
	int tries = 0;

	while (nv > 0) {
		ssize_t r = preadv(fd, v, nv < IOV_MAX ? nv : IOV_MAX, (off_t)off);
		if (r < 0) {
			if (errno == EINTR && ++tries <= CS_IO_RETRIES)
				continue;
			return -errno;
		}
		if (r == 0)
			return 1;
		off += (uint64_t)r;
		while (nv > 0 && (size_t)r >= v->iov_len) {
			r -= (ssize_t)v->iov_len;
			v++;
			nv--;
		}
		if (nv > 0) {
			v->iov_base = (uint8_t *)v->iov_base + r;
			v->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* Bytes from a record's start to the next record's, in 64 bits: len is not checked yet. */
static uint64_t rec_span(uint32_t len)
{
	return ((uint64_t)CS_REC_HEADER + len + CS_REC_ALIGN - 1) & ~(uint64_t)(CS_REC_ALIGN - 1);
}

/* The most bytes of a piece of a run read (read_piece): records are checked while their
 * bytes are still in the core's L2 (512 KiB here), not after a whole run (8 MiB of 256 KiB
 * leaves) has pushed the first out to memory; a larger record is a piece alone. */
#define READ_HOT_BYTES (384u << 10)

/* The least bytes of a wal_read_many() for which a second core is asked to help (R2): below
 * it, waking the helper costs more than its share saves. */
#define READ_ASSIST_BYTES (1u << 20)

/*
 * Reads the k >= 2 back-to-back records r[0..k), which together span at most READ_HOT_BYTES,
 * with one preadv when they all lie in the file, and checks them. Returns 0 with *ok = k; a
 * check's error with *ok the index of the record that failed it; or 1 when the records must
 * be read one by one instead (some lie in a batch buffer, the segment is unknown, the range
 * runs past its end, or the read failed or came up short): wal_read() then gives each its
 * exact answer.
 */
static int read_run(struct wal *w, struct wal_many *r, int k, int *ok)
{
	uint8_t hdr[WAL_MANY_MAX][CS_REC_HEADER], pad[CS_REC_ALIGN];
	struct iovec v[WAL_MANY_MAX * (WAL_MANY_DST + 2)];
	uint32_t seg = r[0].pos.seg;
	uint64_t from = r[0].pos.off,
	         to = (uint64_t)r[k - 1].pos.off + CS_REC_HEADER + r[k - 1].len;
	struct seg_ent *e;
	int nv = 0, fd = -1, rc = 0;

	*ok = 0;
	pthread_mutex_lock(&w->mu);
	for (int i = 0; i < 2; i++) {
		const struct batch *b = &w->buf[i];
		if (b->state != BUF_FREE && b->seg == seg && from < (uint64_t)b->start + b->fill &&
		    to > b->start) {
			pthread_mutex_unlock(&w->mu);
			return 1; /* some of it is not in the file yet (W8) */
		}
	}
	/* The same lookup and reference as wal_read()'s: the reference keeps the fd open, and
	 * the segment in place, until the read is done (W11). */
	e = seg_find(w, seg);
	if (e != NULL && to <= e->capacity)
		fd = seg_ref(w, e);
	pthread_mutex_unlock(&w->mu);
	if (fd < 0)
		return 1;

	for (int q = 0; q < k; q++) {
		v[nv++] = (struct iovec){hdr[q], CS_REC_HEADER};
		for (int j = 0; j < r[q].ndst; j++)
			if (r[q].dst[j].iov_len > 0) /* an empty piece's base may be NULL */
				v[nv++] = r[q].dst[j];
		size_t gap = (size_t)(rec_span(r[q].len) - CS_REC_HEADER - r[q].len);
		if (q < k - 1 && gap > 0)
			v[nv++] = (struct iovec){pad, gap}; /* padding, not checked (as wal_read) */
	}
	int got = preadv_all(fd, v, nv, from);
	seg_unref(w, seg);
	if (got != 0)
		return 1; /* wal_read() answers for every record, those checked here too */
	for (; *ok < k; (*ok)++)
		if ((rc = check_record(r[*ok].pos, r[*ok].len, hdr[*ok], &r[*ok].h, r[*ok].dst,
		                       r[*ok].ndst)) != 0)
			break;
	return rc;
}

/*
 * A wal_read_many() cut into pieces, which the reading thread and the helper (R2) take in
 * order from `next` and read whole, each on its own:
 *   R1. A piece is one record, or k >= 2 records back to back in one segment (each starting
 *       where the one before it ends, padding included) spanning at most READ_HOT_BYTES.
 *   R2. A read of at least READ_ASSIST_BYTES offers the helper (assist.h) a share: pieces
 *       are independent (disjoint buffers, a segment reference each), so two threads read
 *       and check them at once, each one copy and one checksum pass at a time.
 *   R3. A thread that fails a piece stops, and neither takes a piece past the lowest failed
 *       one (`failed`), so every piece before it was read, and the answer is that piece's
 *       error (message included, copied from the thread that met it): the one calls of
 *       wal_read() in order would meet first.
 */
struct many_job {
	struct wal *w;
	struct wal_many *r;
	int from[WAL_MANY_MAX + 1]; /* piece p is r[from[p] .. from[p + 1]) */
	int npieces;
	pthread_t reader;           /* the calling thread; the other one is the helper */
	atomic_int next;            /* the next piece to take */
	atomic_int failed;          /* the lowest piece failed so far; npieces when none */
	int rc[WAL_MANY_MAX];       /* piece p's answer, and the record of it that failed */
	int ok[WAL_MANY_MAX];
	char msg[2][512];           /* the message of the failure of reader [0], helper [1] */
	int by[WAL_MANY_MAX];       /* which of them read piece p */
};

/* Reads piece p of j: one preadv for a run, else wal_read() for each record. */
static int read_piece(struct many_job *j, int p)
{
	struct wal_many *r = j->r + j->from[p];
	int k = j->from[p + 1] - j->from[p], rc = 1;

	j->ok[p] = 0;
	if (k > 1)
		rc = read_run(j->w, r, k, &j->ok[p]);
	if (rc == 1)
		for (j->ok[p] = 0; j->ok[p] < k; j->ok[p]++)
			if ((rc = wal_read(j->w, r[j->ok[p]].pos, r[j->ok[p]].len, &r[j->ok[p]].h,
			                   r[j->ok[p]].dst, r[j->ok[p]].ndst)) != 0)
				break;
	return rc;
}

/* Takes and reads pieces of j until none is left or one fails (R3); run by both threads. */
static void read_pieces(void *arg)
{
	struct many_job *j = arg;
	int who = !pthread_equal(pthread_self(), j->reader);

	for (;;) {
		int p = atomic_fetch_add(&j->next, 1);
		if (p >= j->npieces || p > atomic_load(&j->failed))
			return;
		j->by[p] = who;
		if ((j->rc[p] = read_piece(j, p)) == 0)
			continue;
		snprintf(j->msg[who], sizeof(j->msg[who]), "%s", cs_errmsg());
		int low = atomic_load(&j->failed);
		while (p < low && !atomic_compare_exchange_weak(&j->failed, &low, p))
			;
		return;
	}
}

int wal_read_many(struct wal *w, struct wal_many *r, int n, int *done)
{
	struct many_job j = {.w = w, .r = r, .reader = pthread_self()};
	uint64_t bytes = 0;

	*done = 0;
	if (n < 0 || n > WAL_MANY_MAX)
		return cs_fail(CS_EINVAL, "log read of %d records: at most %d", n, WAL_MANY_MAX);
	for (int i = 0; i < n; i++)
		if (r[i].ndst < 0 || r[i].ndst > WAL_MANY_DST ||
		    parts_len(r[i].dst, r[i].ndst) != r[i].len)
			return cs_fail(CS_EINVAL,
			               "log read: buffers of record %d do not total %u bytes", i,
			               r[i].len);
	/* R1: a piece grows while the next record starts where it ends, in its segment, and
	 * fits; a piece's records are as well placed as its first (spans keep alignment). */
	for (int i = 0; i < n; j.npieces++) {
		int placed = r[i].pos.off >= CS_SEG_HEADER && r[i].pos.off % CS_REC_ALIGN == 0;
		uint64_t span = rec_span(r[i].len);
		j.from[j.npieces] = i++;
		while (placed && i < n && r[i].pos.seg == r[i - 1].pos.seg &&
		       (uint64_t)r[i].pos.off == r[i - 1].pos.off + rec_span(r[i - 1].len) &&
		       span + rec_span(r[i].len) <= READ_HOT_BYTES)
			span += rec_span(r[i++].len);
		bytes += span;
	}
	j.from[j.npieces] = n;
	atomic_init(&j.next, 0);
	atomic_init(&j.failed, j.npieces);
	if (j.npieces > 1 && bytes >= READ_ASSIST_BYTES)
		assist_run(&w->assist, read_pieces, &j); /* R2 */
	else
		read_pieces(&j);

	int p = atomic_load(&j.failed);
	if (p == j.npieces) {
		*done = n;
		return 0;
	}
	*done = j.from[p] + j.ok[p];
	if (j.by[p] != 0)
		cs_fail(j.rc[p], "%s", j.msg[1]); /* the helper's message, for this thread */
	return j.rc[p];
}

void wal_stat(struct wal *w, struct wal_stat *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&w->mu);
	out->next_seq = w->next_seq;
	out->durable_seq = w->durable + 1;
	for (uint32_t i = 0; i < w->nsegs; i++) {
		out->log_bytes += w->segs[i].end;
		out->disk_bytes += w->segs[i].capacity;
		out->segments++;
	}
	out->poisoned = w->poison != 0;
	out->backend = w->io->ops->name;
	pthread_mutex_unlock(&w->mu);
}

struct wal_pos wal_tail(struct wal *w)
{
	pthread_mutex_lock(&w->mu);
	const struct batch *b = &w->buf[w->cur];
	struct wal_pos p = {b->seg, b->start + b->fill};
	pthread_mutex_unlock(&w->mu);
	return p;
}

void wal_mark(struct wal *w, struct wal_mark *m, struct wal_seg_info *segs, uint32_t cap,
              uint32_t *nsegs)
{
	pthread_mutex_lock(&w->mu);
	const struct batch *b = &w->buf[w->cur];
	m->tail = (struct wal_pos){b->seg, b->start + b->fill};
	m->next_seq = w->next_seq;
	m->last = w->last_pos;
	m->last_seq = w->last_seq;
	m->last_sum = w->last_sum;
	uint32_t n = 0;
	for (uint32_t i = 0; i < w->nsegs && n < cap && w->segs[i].id <= m->tail.seg; i++)
		segs[n++] = (struct wal_seg_info){w->segs[i].id, w->segs[i].end,
		                                  w->segs[i].first_seq, w->segs[i].capacity};
	*nsegs = n;
	pthread_mutex_unlock(&w->mu);
}

uint32_t wal_segments(struct wal *w, struct wal_seg_info *out, uint32_t cap)
{
	uint32_t n = 0;

	pthread_mutex_lock(&w->mu);
	for (uint32_t i = 0; i < w->nsegs && n < cap; i++) {
		const struct seg_ent *e = &w->segs[i];
		out[n++] = (struct wal_seg_info){e->id, e->end, e->first_seq, e->capacity};
	}
	pthread_mutex_unlock(&w->mu);
	return n;
}

/* wal_read_any() of a record at pos that lies in buffer b, not yet written: the same checks
 * as of one read from the file. Called with mu held, which keeps b as it is. */
static int read_any_buffered(const struct batch *b, struct wal_pos pos, struct rec_hdr *h,
                             uint8_t *buf, size_t cap)
{
	const uint8_t *src = b->data + (pos.off - b->start);
	uint64_t avail = (uint64_t)b->start + b->fill - pos.off;

	if (pos.off % CS_REC_ALIGN != 0 || avail < CS_REC_HEADER)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: not a record position",
		               pos.seg, pos.off);
	if (rec_decode_header(src, h) != REC_OK)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: bad record header", pos.seg,
		               pos.off);
	if (rec_size(h->len) > avail || h->len > cap)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: a %u-byte record runs past the log",
		               pos.seg, pos.off, h->len);
	memcpy(buf, src + CS_REC_HEADER, h->len);
	struct iovec v = {buf, h->len};
	if (rec_verify(src, h, &v, 1) != 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: record checksum mismatch",
		               pos.seg, pos.off);
	return 0;
}

int wal_read_any(struct wal *w, struct wal_pos pos, struct rec_hdr *h, uint8_t *buf, size_t cap)
{
	uint8_t hdr[CS_REC_HEADER];
	int fd, rc;

	pthread_mutex_lock(&w->mu);
	struct seg_ent *e = seg_find(w, pos.seg);
	if (e != NULL && e == &w->segs[w->nsegs - 1]) {
		pthread_mutex_unlock(&w->mu);
		return cs_fail(CS_EINVAL, "log: segment %08x is the one appended to", pos.seg);
	}
	uint32_t end = e != NULL ? e->end : 0;
	/* A segment left for the spare (W12) may still have its last batch in a buffer, being
	 * written: such records are read from there, as wal_read() does. */
	for (int i = 0; i < 2 && e != NULL; i++) {
		const struct batch *b = &w->buf[i];
		if (b->state != BUF_FREE && b->seg == pos.seg && pos.off >= b->start &&
		    pos.off < b->start + b->fill) {
			rc = read_any_buffered(b, pos, h, buf, cap);
			pthread_mutex_unlock(&w->mu);
			return rc;
		}
	}
	fd = seg_ref(w, e);
	pthread_mutex_unlock(&w->mu);
	if (fd < 0)
		return gone_error(pos);
	if (pos.off < CS_SEG_HEADER || pos.off % CS_REC_ALIGN != 0 ||
	    (uint64_t)pos.off + CS_REC_HEADER > end) {
		rc = cs_fail(CS_ECORRUPT, "segment %08x offset %u: not a record position", pos.seg,
		             pos.off);
		goto out;
	}
	rc = read_file(fd, pos.off, hdr, NULL, 0);
	if (rc == 0 && rec_decode_header(hdr, h) != REC_OK)
		rc = cs_fail(CS_ECORRUPT, "segment %08x offset %u: bad record header", pos.seg,
		             pos.off);
	else if (rc == 0 && ((uint64_t)pos.off + rec_size(h->len) > end || h->len > cap))
		rc = cs_fail(CS_ECORRUPT, "segment %08x offset %u: a %u-byte record runs past the log",
		             pos.seg, pos.off, h->len);
	if (rc == 0) {
		/* The header again with the payload, so what is verified is one read's bytes. */
		struct iovec v = {buf, h->len};
		rc = read_file(fd, pos.off, hdr, &v, 1);
		if (rc == 0 && (rec_decode_header(hdr, h) != REC_OK || h->len != v.iov_len ||
		                rec_verify(hdr, h, &v, 1) != 0))
			rc = cs_fail(CS_ECORRUPT, "segment %08x offset %u: record checksum mismatch",
			             pos.seg, pos.off);
	}
	if (rc > 0)
		rc = cs_fail(CS_ECORRUPT, "segment %08x offset %u: the file ends in the record",
		             pos.seg, pos.off);
	else if (rc < 0 && rc > CS_ERRBASE_HI)
		rc = cs_fail(rc, "segment %08x offset %u: read failed: %s", pos.seg, pos.off,
		             cs_strerror(rc));
out:
	seg_unref(w, pos.seg);
	return rc;
}

int wal_drop_segment(struct wal *w, uint32_t id)
{
	char name[32];
	int fd, rc;

	pthread_mutex_lock(&w->mu);
	struct seg_ent *e = seg_find(w, id);
	if (e == NULL || e == &w->segs[w->nsegs - 1] || e->dropping) {
		pthread_mutex_unlock(&w->mu);
		return cs_fail(CS_EINVAL, "log: segment %08x cannot be dropped", id);
	}
	e->dropping = 1; /* W11: no new reads */
	while ((e = seg_find(w, id))->refs > 0)
		pthread_cond_wait(&w->refs_cv, &w->mu);
	fd = e->fd;
	size_t i = (size_t)(e - w->segs);
	memmove(e, e + 1, (w->nsegs - i - 1) * sizeof(*e));
	w->nsegs--;
	pthread_mutex_unlock(&w->mu);

	seg_name(name, sizeof(name), id);
	/* remove and sync_dir are plain syscalls in every backend (io.h): callable here. */
	if ((rc = w->io->ops->remove(w->io, w->dirfd, name)) != 0) {
		close(fd);
		return cs_fail(rc, "log: removing segment %08x: %s", id, cs_strerror(rc));
	}
	if ((rc = w->io->ops->sync_dir(w->io, w->dirfd)) != 0) {
		close(fd); /* the name may come back: its blocks must stay as they are */
		return cs_fail(rc, "log: syncing the store directory: %s", cs_strerror(rc));
	}
	io_release(fd); /* W15 */
	return 0;
}
