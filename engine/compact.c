/*
 * compact.c - compaction: rewrite the segments that hold mostly garbage at the head of the
 * log, then delete their files; and the live bytes per segment that choose them.
 *
 * For each victim segment S (never the last one, which appends go to), in groups of about a
 * segment of copies:
 *
 *   scan S ──> copy what is current, carry the deletes that still matter ──> append a
 *   segment-drop record ──> (the rest of the group) ──> sync the log ──> drop each S of the
 *   group (wait for its readers, close, unlink) ──> sync the directory
 *
 * Invariants:
 *   C1. s->live[id] is the sum of the log bytes (rec_size) of the records in segment id
 *       that the tables point at: blocks of the index, names of the name table, pins of
 *       the pin table. Every change of a table entry moves its bytes from the old record's
 *       segment to the new one's, under the write lock (or in replay), so a segment's live
 *       fraction (live / log bytes in it) is known without a scan.
 *   C2. A record of S is copied only while it is current: a block whose index entry is
 *       (S, off), a name whose table entry names (S, off), a pin likewise. The check, the
 *       append of the copy and the repointing of the entry happen under the lock every
 *       mutation of that entry holds from its check through its table update: life_mu for
 *       blocks (cs_block_delete and GC's sweep hold it) and pins (P1 of pin.c), name_mu for
 *       names (S5 of store.c). So a concurrent delete lands either before the check (no
 *       copy is made) or after the copy, later in the log, and wins on replay: a copy
 *       never brings back a deleted block, name or pin. Puts of new blocks take no lock:
 *       they write only absent blocks, and a block being copied is present throughout.
 *   C3. A negative record of S (REC_DELETE, REC_NAME_DEL, REC_PIN_DEL, or a REC_CARRY of
 *       one) may cancel a put that lies in an older segment still on disk; dropping it would
 *       bring that put back at the next replay. It is appended again as a REC_CARRY holding
 *       its original position P, and replay applies a carry only to an entry whose record
 *       lies before P, so a put made after the original delete (and logged before the carry)
 *       stands. A negative is left out only when no segment older than P's remains, a
 *       removal counting only once it is durable (until the directory sync covers it, a
 *       crash may leave the file, and replay applies its records).
 *   C4. S's file is deleted only once a REC_SEG_DROP record naming S's seqs is durable
 *       (FORMAT.md G7), so replay can tell the seq gap S leaves from lost records. The
 *       dropped ranges are s->drops (merged); when S holds drop records itself, every range
 *       is appended again before S goes, so each range stays stated somewhere in the log.
 *   C5. Order: copies and carries appended, the drop record appended (for each S of a
 *       group), one wal_sync, then wal_drop_segment of each (which syncs the directory
 *       after each unlink, W15 of wal.c). One sync of the log suffices: recovery keeps a
 *       prefix of the log (G3, §7.2), so a drop record that survives a crash has every
 *       copy before it surviving too. A crash before the unlink leaves S on disk beside
 *       its copies, which come later in the log and win; the next compaction sees S's seqs
 *       covered by a drop and deletes it without copying. A reader that looked a block up
 *       in S before it was repointed finds the segment gone (W11 of wal.c: never a closed
 *       fd) and reads again where the index now points (store_read_block).
 *   C6. One compaction at a time, and never beside a GC (gc_running, under life_mu); the
 *       dropped ranges and the victims' table are its own.
 *   C7. Copies and drop records are mutations for checkpoints (C1 of ckpt.c): each holds
 *       ckpt_lock shared from its append through its table update. A compaction that
 *       deleted segments ends by writing a checkpoint, since the one on disk lists them and
 *       an open would refuse it for a full replay.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "btree.h"
#include "cid.h"
#include "err.h"
#include "names.h"
#include "record.h"
#include "store.h"

/* The space bound: compaction goes on, least live first, while the segment files take more
 * than SPACE_AMP x live bytes + SPACE_SLACK segments. The slack is the segment appended to
 * and the one the copies may start, both preallocated whole. */
#define SPACE_AMP   1.1
#define SPACE_SLACK 2

#define COPY_PACE 32 /* records of a victim between compaction's pace points (store_pace) */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Live bytes per segment (C1) --------------------------------------------------------- */

int store_live_init(cs_store *s)
{
	/* Sized for the most segments a store may have, so an update never allocates; calloc
	 * leaves the untouched part as unbacked pages. */
	s->live = calloc(CS_SEGMENTS_MAX, sizeof(*s->live));
	return s->live != NULL ? 0 : cs_fail(-ENOMEM, "out of memory for the live-bytes table");
}

/* The slot of segment id in the n entries of t (id order), or where it would go. */
static uint32_t live_slot_in(const struct seg_live *t, uint32_t n, uint32_t id)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (t[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint32_t live_slot(const cs_store *s, uint32_t id)
{
	return live_slot_in(s->live, s->nlive, id);
}

void seg_live_add(struct seg_live *t, uint32_t *n, uint32_t seg, int64_t delta)
{
	uint32_t i = live_slot_in(t, *n, seg);

	if (i == *n || t[i].id != seg) {
		CS_ASSERT(delta > 0 && *n < CS_SEGMENTS_MAX); /* C1: no segment goes below 0 */
		memmove(&t[i + 1], &t[i], (*n - i) * sizeof(*t));
		t[i] = (struct seg_live){seg, 0};
		(*n)++;
	}
	CS_ASSERT(delta >= 0 || t[i].bytes >= (uint64_t)-delta); /* C1 */
	t[i].bytes += (uint64_t)delta;
}

void store_live_add(cs_store *s, uint32_t seg, int64_t delta)
{
	seg_live_add(s->live, &s->nlive, seg, delta);
}

static uint64_t live_of(cs_store *s, uint32_t seg)
{
	pthread_rwlock_rdlock(&s->lock);
	uint32_t i = live_slot(s, seg);
	uint64_t n = i < s->nlive && s->live[i].id == seg ? s->live[i].bytes : 0;
	pthread_rwlock_unlock(&s->lock);
	return n;
}

/* Forgets a dropped segment's slot; nothing points into it any more (C2). */
static void live_forget(cs_store *s, uint32_t seg)
{
	store_wrlock_bg(s);
	uint32_t i = live_slot(s, seg);
	if (i < s->nlive && s->live[i].id == seg) {
		CS_ASSERT(s->live[i].bytes == 0);
		memmove(&s->live[i], &s->live[i + 1], (s->nlive - i - 1) * sizeof(*s->live));
		s->nlive--;
	}
	pthread_rwlock_unlock(&s->lock);
}

/* ---- One victim -------------------------------------------------------------------------- */

struct victim {
	cs_store *s;
	struct wal_seg_info seg;  /* the segment rewritten */
	uint64_t end_seq;         /* the first seq of the segment after it */
	uint32_t oldest_other;    /* the oldest segment kept besides it (C3) */
	uint8_t *buf;             /* CS_REC_PAYLOAD_MAX bytes, borrowed */
	cs_compact_stat *st;
};

static int stopping(cs_store *s)
{
	return atomic_load_explicit(&s->closing, memory_order_acquire);
}

/* Appends one record of the given payload pieces; adds its bytes to the copied count. */
static int append(struct victim *v, uint8_t type, const struct iovec *parts, int nparts,
                  struct wal_pos *pos)
{
	struct wal_rec rec = {.type = type, .parts = parts, .nparts = nparts};
	size_t len = 0;
	for (int i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	int rc = wal_append(v->s->wal, &rec, 1, pos, NULL);
	if (rc == 0)
		v->st->bytes_copied += rec_size((uint32_t)len);
	return rc;
}

/* Moves n live bytes from segment `from` to `to` (C1). Called with lock held for writing. */
static void live_move(cs_store *s, uint32_t from, uint32_t to, int64_t n)
{
	store_live_add(s, from, -n);
	store_live_add(s, to, n);
}

/* The record of S at off (type, payload p of len bytes) whose entry in table t (the index
 * or the pin table) is keyed by key: copied, and the entry repointed, if the entry still
 * points at it (C2). Called with life_mu held, which every change of either table holds. */
static int copy_entry(struct victim *v, struct idx *t, const uint8_t key[CS_KEY_MAX],
                      uint8_t type, uint32_t off, const uint8_t *p, uint32_t len)
{
	cs_store *s = v->s;
	struct idx_val now;
	struct wal_pos pos;

	pthread_rwlock_rdlock(&s->lock);
	int cur = idx_get(t, key, &now) == 0 && now.seg == v->seg.id && now.off == off;
	pthread_rwlock_unlock(&s->lock);
	if (!cur)
		return 0;
	struct iovec part = {(void *)p, len};
	ckpt_enter(s); /* C1 of ckpt.c */
	int rc = append(v, type, &part, 1, &pos);
	if (rc == 0) {
		int64_t n = t == s->idx ? store_block_bytes(now.len) : pin_bytes(key, &now);
		struct idx_val moved = now;
		moved.seg = pos.seg;
		moved.off = pos.off;
		store_wrlock_bg(s);
		CS_ASSERT(idx_put(t, key, &moved, NULL) == 1); /* a replace allocates nothing */
		live_move(s, now.seg, pos.seg, n);
		pthread_rwlock_unlock(&s->lock);
	}
	ckpt_leave(s);
	return rc;
}

/* A REC_BLOCK of S at off (C2). */
static int copy_block(struct victim *v, uint32_t off, const uint8_t *p, uint32_t len)
{
	uint8_t key[CS_KEY_MAX];

	CS_ASSERT(rec_key_decode(p, len, key) == 0); /* replay checked it */
	pthread_mutex_lock(&v->s->life_mu); /* deletes and GC's sweep hold it */
	int rc = copy_entry(v, v->s->idx, key, REC_BLOCK, off, p, len);
	pthread_mutex_unlock(&v->s->life_mu);
	return rc;
}

/* A REC_PIN_ADD of S at off (C2). */
static int copy_pin(struct victim *v, uint32_t off, const uint8_t *p, uint32_t len)
{
	uint8_t key[CS_KEY_MAX];
	struct rec_pin pin;
	cs_cid cid;

	if (rec_pin_decode(REC_PIN_ADD, p, len, &pin) != 0 ||
	    cs_cid_from_bytes(pin.cid, pin.cid_len, &cid) != 0 || cid_key(&cid, key) != 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: malformed pin record",
		               v->seg.id, off);
	pthread_mutex_lock(&v->s->life_mu); /* P1 of pin.c */
	int rc = copy_entry(v, v->s->pins, key, REC_PIN_ADD, off, p, len);
	pthread_mutex_unlock(&v->s->life_mu);
	return rc;
}

/* A REC_NAME_SET of S at off (C2). */
static int copy_name(struct victim *v, uint32_t off, const uint8_t *p, uint32_t len)
{
	cs_store *s = v->s;
	struct rec_name_set ns;
	struct name_val now;
	struct wal_pos pos;
	int rc = 0;

	CS_ASSERT(rec_name_set_decode(p, len, &ns) == 0);
	pthread_mutex_lock(&s->name_mu);
	/* Only name_mu holders change the table (S5): reading it needs no rwlock. */
	if (names_get(s->names, ns.name, ns.name_len, &now) == 0 && now.seg == v->seg.id &&
	    now.off == off) {
		struct iovec part = {(void *)p, len};
		ckpt_enter(s); /* C1 of ckpt.c */
		if ((rc = append(v, REC_NAME_SET, &part, 1, &pos)) == 0) {
			store_wrlock_bg(s);
			CS_ASSERT(names_repoint(s->names, ns.name, ns.name_len, pos.seg, pos.off) == 0);
			live_move(s, now.seg, pos.seg, store_name_bytes(ns.name_len, now.root.len));
			pthread_rwlock_unlock(&s->lock);
		}
		ckpt_leave(s);
	}
	pthread_mutex_unlock(&s->name_mu);
	return rc;
}

/* A negative record of type `type` and payload p first written at orig (C3). */
static int carry(struct victim *v, uint8_t type, struct wal_pos orig, const uint8_t *p,
                 uint32_t len)
{
	uint8_t meta[REC_CARRY_META];

	if (v->oldest_other > orig.seg)
		return 0; /* nothing it could cancel is left */
	rec_carry_meta(meta, type, orig.seg, orig.off);
	struct iovec parts[2] = {{meta, sizeof(meta)}, {(void *)p, len}};
	return append(v, REC_CARRY, parts, 2, NULL);
}

/* Appends every dropped range again (C4): S holds records stating some of them. */
static int restate_drops(struct victim *v)
{
	const struct rec_drops *ds = &v->s->drops;
	uint8_t pay[REC_SEG_DROP_LEN];
	int rc = 0;

	for (uint32_t i = 0; i < ds->n && rc == 0; i++) {
		const struct rec_drop *d = &ds->v[i];
		rec_seg_drop_encode(pay, &(struct rec_seg_drop){d->from_seq, d->to_seq,
		                                                 d->first_id, d->last_id});
		struct iovec part = {pay, sizeof(pay)};
		rc = append(v, REC_SEG_DROP, &part, 1, NULL);
	}
	return rc;
}

/* Rewrites segment v->seg (C2..C4): appends what is current in it, the carries and its drop
 * record. It is deleted later, after a sync (flush). */
static int rewrite(struct victim *v)
{
	cs_store *s = v->s;
	const uint32_t id = v->seg.id;
	struct rec_hdr h;
	int rc = 0, restate = 0;

	/* A segment whose seqs a drop covers was rewritten already, and a crash came before
	 * its file was deleted (C5): nothing in it is current. */
	if (v->end_seq > v->seg.first_seq &&
	    rec_drops_cover(&s->drops, v->seg.first_seq, v->end_seq) && live_of(s, id) == 0)
		return 0;
	/* Bounded: off grows by a whole record each pass, up to the segment's end. */
	for (uint32_t off = CS_SEG_HEADER; off < v->seg.end; off += rec_size(h.len)) {
		if (stopping(s))
			return cs_fail(CS_ECLOSED, "the store is closing: compaction stopped");
		store_pace(&s->gc_pace, COPY_PACE); /* no lock held between records */
		struct wal_pos at = {id, off};
		if ((rc = wal_read_any(s->wal, at, &h, v->buf, CS_REC_PAYLOAD_MAX)) != 0)
			return rc;
		const uint8_t *p = v->buf;
		/* W14 of wal.c: a copy or carry leaves room for puts, waited for before life_mu
		 * or name_mu is taken. */
		if (h.type != REC_SEG_DROP)
			wal_make_room(s->wal, rec_size(h.len + REC_CARRY_META));
		switch (h.type) {
		case REC_BLOCK:
			rc = copy_block(v, off, p, h.len);
			break;
		case REC_NAME_SET:
			rc = copy_name(v, off, p, h.len);
			break;
		case REC_PIN_ADD:
			rc = copy_pin(v, off, p, h.len);
			break;
		case REC_DELETE:
		case REC_NAME_DEL:
		case REC_PIN_DEL:
			rc = carry(v, h.type, at, p, h.len);
			break;
		case REC_CARRY: {
			struct rec_carry c;
			if (rec_carry_decode(p, h.len, &c) != 0)
				return cs_fail(CS_ECORRUPT, "segment %08x offset %u: malformed carry",
				               id, off);
			rc = carry(v, c.type, (struct wal_pos){c.seg, c.off}, c.payload, c.len);
			break;
		}
		case REC_SEG_DROP:
			restate = 1;
			break;
		default:
			break; /* a skippable record of a newer writer: not ours to keep */
		}
		if (rc != 0)
			return rc;
	}
	/* C2: every current record was moved, and none can become current again (entries
	 * only ever move to the head). One that was not (which only a log replayed under
	 * salvage might bring about) keeps the segment, before any drop names it. */
	uint64_t left = live_of(s, id);
	if (left != 0)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x still holds %llu live bytes after its rewrite; kept",
		               id, (unsigned long long)left);
	if (restate && (rc = restate_drops(v)) != 0)
		return rc;
	if (v->end_seq > v->seg.first_seq) {
		struct rec_seg_drop d = {v->seg.first_seq, v->end_seq, id, id};
		uint8_t pay[REC_SEG_DROP_LEN];
		rec_seg_drop_encode(pay, &d);
		struct iovec part = {pay, sizeof(pay)};
		struct rec_drop r = {d.from_seq, d.to_seq, id, id};
		/* C1 of ckpt.c: a checkpoint's start mark copies s->drops. */
		ckpt_enter(s);
		if ((rc = append(v, REC_SEG_DROP, &part, 1, NULL)) == 0 &&
		    (rc = rec_drops_add(&s->drops, &r)) != 0)
			rc = cs_fail(rc, "out of memory for the dropped ranges");
		ckpt_leave(s);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Syncs the log, then deletes the files of the segments segs[done[0..n)] rewritten (C5),
 * marking each gone once its removal is durable. */
static int flush(cs_store *s, const struct wal_seg_info *segs, const uint32_t *done, uint32_t n,
                 uint8_t *gone, cs_compact_stat *st)
{
	int rc = n > 0 ? wal_sync(s->wal) : 0;

	for (uint32_t k = 0; k < n && rc == 0; k++) {
		const struct wal_seg_info *e = &segs[done[k]];
		rc = wal_drop_segment(s->wal, e->id);
		if (rc == CS_EINVAL)
			break; /* still in the log's table: nothing happened */
		live_forget(s, e->id); /* out of the table, whether the removal failed or not */
		if (rc != 0)
			break;
		gone[done[k]] = 1;
		st->segments_compacted++;
		st->bytes_reclaimed += e->capacity;
	}
	return rc;
}

/* ---- Choosing victims ------------------------------------------------------------------- */

struct cand {
	uint32_t i; /* index into the snapshot */
	double frac;
	uint64_t live;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	return x->frac < y->frac ? -1 : x->frac > y->frac;
}

/* The checkpoint on disk lists the segments just deleted, so the next open would refuse it
 * and replay the whole log (FORMAT.md 12.3): a new one. Its failure does not fail the
 * compaction, whose work is durable; it is reported through opts.log. */
static void checkpoint_after(cs_store *s)
{
	if (ckpt_take(s, CKPT_FORCE) != 0)
		store_logf(&s->opts, CS_LOG_WARN,
		           "compaction: the checkpoint after it failed (%s); the next open "
		           "replays the whole log",
		           cs_errmsg());
}

/* Runs the victims order[0..norder) of the snapshot segs[0..n) (the last is the head, never
 * a victim). They are rewritten in groups of about a segment of copies, each group made
 * durable by one sync before its files go (C5): fewer syncs, and at most a group's copies
 * on disk beside what they copy. On an error, the group rewritten so far is still synced and
 * deleted (a full disk gets back what it can), and the error returned. */
static int run_victims(cs_store *s, struct wal_seg_info *segs, uint32_t n, const uint32_t *order,
                       uint32_t norder, cs_compact_stat *st)
{
	uint8_t *buf = malloc(CS_REC_PAYLOAD_MAX);
	uint8_t *gone = calloc(n, 1); /* deleted, durably: no carry is kept for them (C3) */
	uint32_t *group = malloc(n * sizeof(*group));
	uint32_t ng = 0;
	uint64_t group_from = st->bytes_copied;
	int rc = 0;

	if (buf == NULL || gone == NULL || group == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t k = 0; k < norder && rc == 0; k++) {
		uint32_t i = order[k];
		struct victim v = {s, segs[i], segs[i + 1].first_seq, 0, buf, st};
		for (uint32_t j = 0; j < n; j++) {
			if (j != i && !gone[j]) {
				v.oldest_other = segs[j].id;
				break;
			}
		}
		if ((rc = rewrite(&v)) != 0)
			break;
		/* Not gone yet for the carries of the rest of its group: until its removal is
		 * durable, a crash may leave its file, whose records replay applies. */
		group[ng++] = i;
		if (st->bytes_copied - group_from >= s->opts.segment_bytes || k + 1 == norder) {
			rc = flush(s, segs, group, ng, gone, st);
			ng = 0;
			group_from = st->bytes_copied;
		}
	}
	if (ng > 0) {
		int frc = flush(s, segs, group, ng, gone, st);
		if (rc == 0)
			rc = frc;
	}
	if (st->segments_compacted > 0)
		checkpoint_after(s);
out:
	free(buf);
	free(gone);
	free(group);
	return rc;
}

int compact_run(cs_store *s, double threshold, cs_compact_stat *st)
{
	double t0 = now_s();
	*st = (cs_compact_stat){0};
	struct wal_seg_info *segs = malloc(CS_SEGMENTS_MAX * sizeof(*segs));
	struct cand *c = malloc(CS_SEGMENTS_MAX * sizeof(*c));
	uint32_t *order = malloc(CS_SEGMENTS_MAX * sizeof(*order));
	int rc = 0;

	if (segs == NULL || c == NULL || order == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	uint32_t n = wal_segments(s->wal, segs, CS_SEGMENTS_MAX), nc = 0, no = 0;
	uint64_t disk = 0, live = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t l = live_of(s, segs[i].id);
		disk += segs[i].capacity;
		live += l;
		if (i + 1 == n)
			break; /* the head */
		uint64_t used = segs[i].end - CS_SEG_HEADER;
		c[nc++] = (struct cand){i, used > 0 ? (double)l / (double)used : 0, l};
	}
	qsort(c, nc, sizeof(*c), cand_cmp);
	double bound = SPACE_AMP * (double)live + SPACE_SLACK * (double)s->opts.segment_bytes;
	for (uint32_t k = 0; k < nc; k++) {
		if (c[k].frac >= threshold && (double)disk <= bound)
			break;
		order[no++] = c[k].i;
		disk = disk - segs[c[k].i].capacity + c[k].live; /* the copies land at the head */
	}
	rc = run_victims(s, segs, n, order, no, st);
out:
	free(segs);
	free(c);
	free(order);
	st->seconds = now_s() - t0;
	return rc;
}

int store_compact_segment(cs_store *s, uint32_t id, cs_compact_stat *st)
{
	struct wal_seg_info *segs = malloc(CS_SEGMENTS_MAX * sizeof(*segs));
	int rc;

	*st = (cs_compact_stat){0};
	if (segs == NULL)
		return -ENOMEM;
	if ((rc = gc_exclusive_begin(s)) == 0) {
		uint32_t n = wal_segments(s->wal, segs, CS_SEGMENTS_MAX), i = 0;
		while (i + 1 < n && segs[i].id != id)
			i++;
		rc = i + 1 < n ? run_victims(s, segs, n, &i, 1, st)
		               : cs_fail(CS_EINVAL, "segment %08x is not one compaction may take",
		                         id);
		gc_exclusive_end(s);
	}
	free(segs);
	return rc;
}

CS_API int cs_compact(cs_store *s, cs_compact_stat *out)
{
	cs_compact_stat st = {0};
	int rc;

	cs_clear_error();
	if ((rc = gc_exclusive_begin(s)) != 0)
		return rc;
	double t = s->opts.compact_threshold > 0 ? s->opts.compact_threshold
	                                         : CS_COMPACT_THRESHOLD_DEFAULT;
	rc = compact_run(s, t, &st);
	gc_exclusive_end(s);
	if (out != NULL)
		*out = st;
	return rc;
}
