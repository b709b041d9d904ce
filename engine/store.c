/*
 * store.c - the store: open/close, put, get, has, delete, sync, stat, list, verify, names.
 *
 * The store ties the subsystems together: dir.c holds the directory lock, recovery/ replays
 * the log into the index and the name table at open, wal/ appends and syncs, index/ maps
 * multihash to place, names.c maps names to roots, ckpt.c writes and loads checkpoints.
 *
 * Invariants:
 *   S1. The index holds exactly the blocks whose latest record in the log is a REC_BLOCK,
 *       among records appended so far (replay rebuilds the same map from the same log).
 *   S2. A mutation is appended to the log before the index shows it, so every position the
 *       index holds can be read back by wal_read() (from the batch buffer or the file).
 *   S3. For one key, log order and index order agree: an operation reads the index before
 *       it appends, so an append that follows what another thread's index change made
 *       visible also follows it in the log.
 *   S4. Hashing and data copies run outside the index lock; the index write lock is held
 *       only for one tree update.
 *   S5. The name table holds, for each name, the value of its latest REC_NAME_SET among
 *       records appended so far, unless a REC_NAME_DEL follows it. Unlike blocks, two sets
 *       of one name carry different values, so S3's read-before-append is not enough: name
 *       mutations are serialized by name_mu from their table check through their append to
 *       their table update, making table order equal log order. Waiting for durability
 *       (wal_wait) happens after name_mu is released, so group commit still batches them.
 *   S6. A name mutation cannot fail after its append: the table node is allocated before,
 *       and the CS_NAMES_MAX check happens before (under name_mu, so no other mutation can
 *       slip in between).
 *   S7. Every mutation holds ckpt_lock shared from before its append until its table update
 *       is done, never across a wait for durability (C1 of ckpt.c): a checkpoint's mark sees
 *       the log and the tables agree.
 *   S8. A pinned name set (store_name_set with pin) is one transaction of two records,
 *       REC_NAME_SET then REC_PIN_ADD, which replay applies whole or not at all. It holds
 *       life_mu (P1 of pin.c) and name_mu (S5) from its checks through the one append to
 *       the update of both tables under one write lock, neither of which can fail (S6, P1):
 *       no reader, and no collection (whose activation takes both mutexes, E4 of gc.c),
 *       sees the name without the pin or the pin without the name.
 *   S9. The index lock prefers writers: once a writer waits, new readers queue behind it.
 *       The default (readers first) let a collector's back-to-back lookups, each releasing
 *       the lock for less than a waking writer takes to run, keep a put out for 15 ms and
 *       190 wake-ups. The price is that no thread may take the read lock while holding it
 *       (a writer queued between the two would deadlock them); every read-locked region
 *       is a leaf: it calls only the tables' own functions.
 *   S10. Foreground writers go first. Background work takes the write lock in many short
 *       holds, back to back; a put woken as one ends needs tens of microseconds to get a
 *       core, and by then the collector, still running, has taken the lock again: the rwlock
 *       hands it to whichever writer asks first, and one put lost 200 holds in a row so
 *       (19 ms). So a foreground writer that finds the lock taken counts itself in
 *       lock_waiters until it has it, and a background step that sees a waiter yields
 *       until one has been served (lock_served moved) or none waits, for at most
 *       store_bg_yield_ns (2 ms): a waiter the host does not run cannot stop the
 *       collector for long.
 *   Q1. quota_used equals live_bytes plus the bytes reserved by puts between their
 *       reservation and their index update (or release); it changes only atomically, so it
 *       can be read and reserved from without the index lock.
 *   Q2. A put of a block that is not present reserves its length before it appends, with a
 *       compare-and-swap that refuses to take quota_used past quota_bytes, so concurrent
 *       puts never overshoot: live_bytes <= quota_used <= quota_bytes, unless the store was
 *       above its quota at open (it then takes no new block until deletes bring it below).
 *       A failed append or index update, or a racing put of the same block that got there
 *       first, releases the reservation.
 *   Q3. A put of a present block reserves nothing: deduplicated puts never count.
 *   Q4. With quota_gc a refused reservation runs cs_gc on the putting thread, which holds
 *       no lock of the store then (any put caller may start a collection), and tries once
 *       more. A put that meets a collection already running waits for its end instead
 *       (gc_cv), so two writers at the quota start one collection, not two.
 *
 * Open loads the checkpoint, if there is a usable one, and replays the log after it; any
 * refusal replays the whole log (ckpt.c, docs/FORMAT.md section 12).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "btree.h"
#include "cid.h"
#include "dir.h"
#include "err.h"
#include "io.h"
#include "names.h"
#include "replay.h"
#include "store.h"
#include "wal.h"


void store_logf(const cs_options *o, int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (o->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->log(o->log_ctx, level, msg);
}

CS_API void cs_options_init(cs_options *o)
{
	memset(o, 0, sizeof(*o));
	o->durability = CS_DURABLE_SYNC;
	o->interval_ms = CS_INTERVAL_MS_DEFAULT;
	o->io = CS_IO_AUTO;
	o->segment_bytes = CS_SEG_DEFAULT;
	o->batch_bytes = CS_BATCH_DEFAULT;
	o->checkpoint_bytes = CS_CKPT_BYTES_DEFAULT;
	o->compact_threshold = CS_COMPACT_THRESHOLD_DEFAULT;
}

static int check_options(const cs_options *o)
{
	if (o->durability > CS_DURABLE_NONE)
		return cs_fail(CS_EINVAL, "unknown durability mode %d", (int)o->durability);
	if (o->durability == CS_DURABLE_INTERVAL &&
	    (o->interval_ms == 0 || o->interval_ms > CS_INTERVAL_MS_MAX))
		return cs_fail(CS_EINVAL, "interval_ms %u is outside 1..%u", o->interval_ms,
		               CS_INTERVAL_MS_MAX);
	if (o->segment_bytes < CS_SEG_MIN || o->segment_bytes > CS_SEG_MAX)
		return cs_fail(CS_EINVAL, "segment_bytes %llu is outside %u..%u",
		               (unsigned long long)o->segment_bytes, CS_SEG_MIN, CS_SEG_MAX);
	if (o->batch_bytes < CS_BATCH_MIN || o->batch_bytes > CS_BATCH_MAX ||
	    o->batch_bytes > o->segment_bytes / 2)
		return cs_fail(CS_EINVAL, "batch_bytes %u is outside %u..min(%u, segment_bytes/2)",
		               o->batch_bytes, CS_BATCH_MIN, CS_BATCH_MAX);
	if (o->quota_gc != 0 && o->quota_gc != 1)
		return cs_fail(CS_EINVAL, "quota_gc is %d: use 0 or 1", o->quota_gc);
	if (!(o->compact_threshold >= 0 && o->compact_threshold <= 1))
		return cs_fail(CS_EINVAL, "compact_threshold %g is outside 0..1",
		               o->compact_threshold);
	if (o->flags & ~(unsigned)(CS_OPEN_CREATE | CS_OPEN_SALVAGE))
		return cs_fail(CS_EINVAL, "unknown open flags 0x%x", o->flags);
	return 0;
}

int (*store_io_factory)(struct io **out);
int store_wal_no_spare;

/* Picks the I/O backend: CIDSTORE_IO overrides the option; AUTO falls back to psync when the
 * kernel refuses io_uring (containers' default seccomp gives EPERM, old kernels ENOSYS). */
static int make_backend(const cs_options *o, struct io **out)
{
	cs_io_backend want = o->io;
	const char *env = getenv("CIDSTORE_IO");

	if (env != NULL && env[0] != '\0') {
		if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
			want = CS_IO_URING;
		else if (strcmp(env, "psync") == 0)
			want = CS_IO_PSYNC;
		else if (strcmp(env, "auto") == 0)
			want = CS_IO_AUTO;
		else
			return cs_fail(CS_EINVAL,
			               "CIDSTORE_IO='%s' is not one of uring, psync, "
			               "auto",
			               env);
	}
	if (store_io_factory != NULL)
		return store_io_factory(out);
	if (want == CS_IO_PSYNC)
		return io_psync_backend(out);
	int rc = io_uring_backend(out, 64);
	if (rc == 0 || want == CS_IO_URING) {
		if (rc != 0)
			return cs_fail(rc, "io_uring refused by the kernel: %s", strerror(-rc));
		return 0;
	}
	store_logf(o, CS_LOG_INFO, "io_uring unavailable (%s); using psync", strerror(-rc));
	return io_psync_backend(out);
}

/* The checkpoint file's backend: psync, since a checkpoint writes a few large pieces and
 * renames once, which a ring would not speed up, and the log's ring belongs to its writer
 * thread; a test's factory when one is set, so that its faults reach checkpoints too. */
static int make_ckpt_backend(struct io **out)
{
	if (store_io_factory != NULL)
		return store_io_factory(out);
	return io_psync_backend(out);
}

/* CS_ECORRUPT for a name record whose checksum matched (so the writer wrote it so) but
 * whose content breaks the rules cs_name_set() enforces. */
static int bad_name_record(const struct rec_view *r, const char *why)
{
	return cs_fail(CS_ECORRUPT, "segment %08x offset %u: malformed name record (seq %llu): %s",
	               r->pos.seg, r->pos.off, (unsigned long long)r->h.seq, why);
}

/* Moves the live bytes (C1 of compact.c) of name's record, if it is set, to the record of
 * v, which the table is about to take. Under the write lock, or in replay. */
static void name_live_set(cs_store *s, const uint8_t *name, size_t len, const struct name_val *v)
{
	struct name_val old;

	if (names_get(s->names, name, len, &old) == 0)
		store_live_add(s, old.seg, -store_name_bytes(len, old.root.len));
	store_live_add(s, v->seg, store_name_bytes(len, v->root.len));
}

/* The live bytes of an index put of v that returned rc (1: it replaced *old). */
static void block_live_put(cs_store *s, int rc, const struct idx_val *old, const struct idx_val *v)
{
	if (rc == 1)
		store_live_add(s, old->seg, -store_block_bytes(old->len));
	if (rc >= 0)
		store_live_add(s, v->seg, store_block_bytes(v->len));
}

/* Replays a REC_NAME_SET (S5): the same checks as cs_name_set(), but not the root's
 * presence, which a later delete of the block may have ended. */
static int apply_name_set(cs_store *s, const struct rec_view *r)
{
	struct rec_name_set ns;
	struct name_val v;
	char why[96];

	if (rec_name_set_decode(r->payload, r->h.len, &ns) != 0)
		return bad_name_record(r, "its lengths disagree");
	if (name_check(ns.name, ns.name_len, why, sizeof(why)) != 0)
		return bad_name_record(r, why);
	if (cs_cid_from_bytes(ns.cid, ns.cid_len, &v.root) != 0)
		return bad_name_record(r, "its root is not a valid CID");
	v.size = ns.size;
	v.time_ns = ns.time_ns;
	v.seg = r->pos.seg;
	v.off = r->pos.off;
	name_live_set(s, ns.name, ns.name_len, &v); /* a failure below fails the open */
	int rc = names_set(s->names, ns.name, ns.name_len, &v);
	if (rc == CS_ELIMIT)
		return cs_fail(CS_ELIMIT, "segment %08x offset %u: the log sets more than %u names",
		               r->pos.seg, r->pos.off, CS_NAMES_MAX);
	return rc < 0 ? rc : 0;
}

/* Removes name (len bytes) from the table, and its record from the live bytes (C1): for
 * every removal, replayed or new. Under the write lock, or in replay. With before not NULL,
 * only if its record lies before *before (a carried delete, C3 of compact.c). */
static void name_remove(cs_store *s, const uint8_t *name, size_t len,
                        const struct wal_pos *before)
{
	struct name_val old;

	if (names_get(s->names, name, len, &old) != 0)
		return;
	if (before != NULL && wal_pos_cmp((struct wal_pos){old.seg, old.off}, *before) >= 0)
		return;
	CS_ASSERT(names_del(s->names, name, len) == 0);
	store_live_add(s, old.seg, -store_name_bytes(len, old.root.len));
}

/* Removes key's block from the index and the live bytes; with before not NULL, only if its
 * record lies before *before. Under the write lock, or in replay. */
static void block_remove(cs_store *s, const uint8_t key[CS_KEY_MAX],
                         const struct wal_pos *before)
{
	struct idx_val old;

	if (idx_get(s->idx, key, &old) != 0)
		return;
	if (before != NULL && wal_pos_cmp((struct wal_pos){old.seg, old.off}, *before) >= 0)
		return;
	CS_ASSERT(idx_del(s->idx, key, NULL) == 0);
	store_live_drop(s, &old);
}

/* Replays a REC_NAME_DEL. An absent name is no error: the writer only deletes present
 * names, but under salvage the set may be among the records lost. */
static int apply_name_del(cs_store *s, const struct rec_view *r, const struct wal_pos *before)
{
	struct rec_name_del nd;
	char why[96];

	if (rec_name_del_decode(r->payload, r->h.len, &nd) != 0)
		return bad_name_record(r, "its lengths disagree");
	if (name_check(nd.name, nd.name_len, why, sizeof(why)) != 0)
		return bad_name_record(r, why);
	name_remove(s, nd.name, nd.name_len, before);
	return 0;
}

/* Replays a REC_CARRY (C3 of compact.c): the delete it carries removes an entry only if the
 * entry's record lies before the delete's original position, so a put, set or pin made after
 * the original delete (and logged before this copy of it) stands. */
static int apply_carry(cs_store *s, const struct rec_view *r)
{
	uint8_t key[CS_KEY_MAX];
	struct rec_carry c;

	if (rec_carry_decode(r->payload, r->h.len, &c) != 0)
		return cs_fail(CS_ECORRUPT, "segment %08x offset %u: malformed carry record",
		               r->pos.seg, r->pos.off);
	struct wal_pos orig = {c.seg, c.off};
	if (wal_pos_cmp(orig, r->pos) >= 0)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x offset %u: carry record of a delete at segment %08x "
		               "offset %u, which does not lie before it",
		               r->pos.seg, r->pos.off, c.seg, c.off);
	struct rec_view inner = *r;
	inner.h.type = c.type;
	inner.h.len = c.len;
	inner.payload = c.payload;
	switch (c.type) {
	case REC_DELETE:
		CS_ASSERT(rec_key_decode(c.payload, c.len, key) == 0); /* rec_carry_decode */
		block_remove(s, key, &orig);
		return 0;
	case REC_NAME_DEL:
		return apply_name_del(s, &inner, &orig);
	default:
		return pin_apply(s, &inner, &orig);
	}
}

/* Replay callback: applies one record of a complete transaction to the index (S1) or the
 * name table (S5). */
static int apply_record(void *ctx, const struct rec_view *r)
{
	cs_store *s = ctx;
	uint8_t key[CS_KEY_MAX];
	struct idx_val old;
	struct rec_block b;
	int rc;

	switch (r->h.type) {
	case REC_BLOCK:
		if (rec_block_decode(r->payload, r->h.len, &b) != 0 ||
		    rec_key_decode(r->payload, r->h.len, key) != 0)
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %u: malformed block "
			               "record",
			               r->pos.seg, r->pos.off);
		/* A writer of this format only logs blocks of hashes it can key; any other
		 * code, even under a valid checksum, could be neither listed nor verified. */
		if (cid_hash_len(b.hash) != b.digest_len)
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %u: block record of hash "
			               "function 0x%x, which the store never writes",
			               r->pos.seg, r->pos.off, b.hash);
		struct idx_val v = {r->pos.seg, r->pos.off, b.data_len, b.codec};
		rc = idx_put(s->idx, key, &v, &old);
		if (rc < 0)
			return rc;
		s->live_bytes += b.data_len - (rc == 1 ? old.len : 0);
		block_live_put(s, rc, &old, &v);
		return 0;
	case REC_DELETE:
		if (rec_key_decode(r->payload, r->h.len, key) != 0)
			return cs_fail(CS_ECORRUPT,
			               "segment %08x offset %u: malformed delete "
			               "record",
			               r->pos.seg, r->pos.off);
		block_remove(s, key, NULL);
		return 0;
	case REC_NAME_SET:
		return apply_name_set(s, r);
	case REC_NAME_DEL:
		return apply_name_del(s, r, NULL);
	case REC_PIN_ADD:
	case REC_PIN_DEL:
		return pin_apply(s, r, NULL);
	case REC_CARRY:
		return apply_carry(s, r);
	default:
		if (r->h.flags & REC_F_SKIPPABLE)
			return 0;
		return cs_fail(CS_EVERSION,
		               "segment %08x offset %u: record type %u is not "
		               "known to this version",
		               r->pos.seg, r->pos.off, r->h.type);
	}
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void free_segs(struct rec_result *r)
{
	for (uint32_t i = 0; i < r->nsegs; i++)
		close(r->segs[i].fd);
	free(r->segs);
	r->segs = NULL;
	r->nsegs = 0;
}

/* Frees what open made, after the WAL is gone. */
static void free_tables(cs_store *s)
{
	if (s->idx != NULL)
		idx_destroy(s->idx);
	if (s->pins != NULL)
		idx_destroy(s->pins);
	keyset_free(&s->cover);
	names_destroy(s->names);
	free(s->live);
	rec_drops_free(&s->drops);
	rec_drops_free(&s->rec.drops);
	if (s->ckpt_io != NULL)
		s->ckpt_io->ops->destroy(s->ckpt_io);
	dir_close(&s->dir);
	pthread_cond_destroy(&s->gc_cv);
	pthread_cond_destroy(&s->ckpt_cv);
	pthread_mutex_destroy(&s->ckpt_wait_mu);
	pthread_rwlock_destroy(&s->ckpt_lock);
	pthread_mutex_destroy(&s->ckpt_mu);
	pthread_mutex_destroy(&s->mark_mu);
	gc_marks_destroy(s);
	pthread_mutex_destroy(&s->life_mu);
	pthread_mutex_destroy(&s->name_mu);
	pthread_rwlock_destroy(&s->lock);
	free(s);
}

/* Empties the tables open fills (to replay the whole log after a checkpoint was refused). */
static int reset_tables(cs_store *s)
{
	idx_destroy(s->idx);
	idx_destroy(s->pins);
	names_destroy(s->names);
	s->idx = s->pins = NULL;
	s->names = NULL;
	s->ckpt_in_use = 0; /* the leaves it lent went with the tree */
	s->live_bytes = 0;
	s->nlive = 0; /* C1 of compact.c: rebuilt by the replay */
	s->pins_recursive = 0;
	memset(&s->last_gc, 0, sizeof(s->last_gc));
	s->last_gc_time_ns = 0;
	atomic_store(&s->ckpt_seq, 0);
	atomic_store(&s->ckpt_time_ns, 0);
	int rc = idx_create(&s->idx);
	if (rc == 0)
		rc = idx_create(&s->pins);
	if (rc == 0)
		rc = names_create(&s->names);
	return rc;
}

/* Is every record the replay from start found durable already? Those before the checkpoint's
 * end mark are (C3 of ckpt.c); so when the log ends at the end mark, in the segment of its
 * last record, and the replay changed nothing on disk (no torn tail zeroed, nothing
 * salvaged), there is nothing for the WAL's open to sync. */
static int log_durable(const struct rec_result *r, const struct rec_start *start)
{
	return start->end_seq > 1 && r->next_seq == start->end_seq && r->torn_bytes == 0 &&
	       r->salvaged_records == 0 && r->salvaged_bytes == 0 && !r->last_closed &&
	       r->nsegs > 0 && r->segs[r->nsegs - 1].id == start->last.seg;
}

/* Replays the log into the tables: from the checkpoint when there is a usable one (C4 of
 * ckpt.c: any refusal replays the whole log, with a warning), else from the start. *durable
 * says whether every record found is durable already (log_durable()). */
static int replay(cs_store *s, struct rec_options *ro, int *durable)
{
	struct rec_start start;
	struct wal_seg_info *segs = NULL;
	char why[400];
	int rc;

	*durable = 0;
	if ((rc = ckpt_clean(s)) != 0)
		return rc;
	rc = ckpt_load(s, &start, &segs);
	if (rc == 0) {
		ro->start = &start;
		rc = rec_replay(ro, &s->rec);
		ro->start = NULL;
		free(segs);
		rec_drops_free(&start.drops);
		if (rc == 0)
			*durable = log_durable(&s->rec, &start);
		if (rc != REC_STALE)
			return rc;
	}
	if (rc != CS_ENOTFOUND) {
		snprintf(why, sizeof(why), "%s", cs_errmsg());
		store_logf(&s->opts, CS_LOG_WARN, "%s (%s); replaying the whole log", why,
		           rc == REC_STALE ? "the checkpoint does not match the log" : cs_strerror(rc));
		if ((rc = reset_tables(s)) != 0)
			return rc;
	}
	return rec_replay(ro, &s->rec);
}

CS_API int cs_store_open(const char *dir, const cs_options *opts, cs_store **out)
{
	double t0 = now_seconds();
	struct io *io = NULL;
	int rc;

	cs_clear_error();
	*out = NULL;
	if (dir == NULL || dir[0] == '\0')
		return cs_fail(CS_EINVAL, "no store directory given");
	cs_store *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	if (opts != NULL)
		s->opts = *opts;
	else
		cs_options_init(&s->opts);
	if ((rc = check_options(&s->opts)) != 0 || (rc = make_backend(&s->opts, &io)) != 0) {
		free(s);
		return rc;
	}
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	/* S9 for the index; a checkpoint's mark must not wait behind a stream of writers. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->lock, &ra);
	pthread_rwlock_init(&s->ckpt_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&s->name_mu, NULL);
	pthread_mutex_init(&s->life_mu, NULL);
	pthread_mutex_init(&s->mark_mu, NULL);
	gc_marks_init(s);
	pthread_cond_init(&s->gc_cv, NULL);
	pthread_mutex_init(&s->ckpt_mu, NULL);
	pthread_mutex_init(&s->ckpt_wait_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->ckpt_cv, &ca);
	pthread_condattr_destroy(&ca);
	rc = dir_open(dir, (s->opts.flags & CS_OPEN_CREATE) != 0, &s->dir);
	if (rc != 0 || (rc = make_ckpt_backend(&s->ckpt_io)) != 0)
		goto fail;
	if ((rc = idx_create(&s->idx)) != 0 || (rc = idx_create(&s->pins)) != 0 ||
	    (rc = names_create(&s->names)) != 0 || (rc = store_live_init(s)) != 0)
		goto fail;

	struct rec_options ro = {
	    .dirfd = s->dir.dirfd,
	    .store_uid = s->dir.uid,
	    .salvage = (s->opts.flags & CS_OPEN_SALVAGE) != 0,
	    .apply = apply_record,
	    .ctx = s,
	    .log = s->opts.log,
	    .log_ctx = s->opts.log_ctx,
	};
	int durable;
	if ((rc = replay(s, &ro, &durable)) != 0)
		goto fail;
	CS_DASSERT(names_check_tree(s->names) == 0);
	atomic_store(&s->quota_used, s->live_bytes); /* Q1: no put in flight yet */
	s->drops = s->rec.drops;
	s->rec.drops = (struct rec_drops){0};

	struct wal_config wc = {
	    .dirfd = s->dir.dirfd,
	    .store_uid = s->dir.uid,
	    .segment_bytes = s->opts.segment_bytes,
	    .batch_bytes = s->opts.batch_bytes,
	    .durability = s->opts.durability,
	    .interval_ms = s->opts.interval_ms,
	    .io = io,
	    .segs = s->rec.segs,
	    .nsegs = s->rec.nsegs,
	    .next_seq = s->rec.next_seq,
	    .last_pos = s->rec.last_pos,
	    .last_seq = s->rec.last_seq,
	    .last_sum = s->rec.last_sum,
	    .no_spare = store_wal_no_spare,
	    .log_durable = durable,
	};
	io = NULL; /* the WAL owns it from here, even on failure */
	rc = wal_open(&s->wal, &wc);
	free(s->rec.segs); /* the fds now belong to the WAL */
	s->rec.segs = NULL;
	s->rec.nsegs = 0;
	if (rc != 0)
		goto fail;
	if (atomic_load(&s->ckpt_seq) != 0) {
		/* The next background checkpoint after checkpoint_bytes more of log; after a
		 * full replay, at once when the log is that long already. */
		struct wal_stat ws;
		wal_stat(s->wal, &ws);
		s->ckpt_log_bytes = ws.log_bytes;
	}
	if ((rc = ckpt_start(s)) != 0) {
		wal_close(s->wal);
		s->wal = NULL;
		goto fail;
	}
	s->open_seconds = now_seconds() - t0;
	if (s->rec.torn_bytes || s->rec.salvaged_records || s->rec.salvaged_bytes)
		store_logf(&s->opts, CS_LOG_WARN,
		           "opened %s: %llu records replayed, %llu torn-tail "
		           "bytes truncated, %llu records / %llu bytes lost to salvage",
		           dir, (unsigned long long)s->rec.records,
		           (unsigned long long)s->rec.torn_bytes,
		           (unsigned long long)s->rec.salvaged_records,
		           (unsigned long long)s->rec.salvaged_bytes);
	*out = s;
	return 0;
fail:
	if (io != NULL)
		io->ops->destroy(io);
	free_segs(&s->rec);
	free_tables(s);
	return rc;
}

CS_API int cs_store_close(cs_store *s)
{
	cs_clear_error();
	if (s == NULL)
		return 0;
	ckpt_stop(s);
	gc_stop(s); /* a cs_gc on another thread returns CS_ECLOSED first */
	struct wal_stat ws;
	wal_stat(s->wal, &ws);
	if (!ws.poisoned) {
		/* The log holds everything: a failed checkpoint costs the next open time only. */
		int crc = ckpt_take(s, CKPT_CHANGED);
		if (crc != 0)
			store_logf(&s->opts, CS_LOG_WARN, "checkpoint at close failed: %s: %s",
			           cs_strerror(crc), cs_errmsg());
	}
	cs_clear_error();
	int rc = wal_close(s->wal);
	free_tables(s);
	return rc;
}

/* The index key for a CID the caller handed in. A well-formed CID of a hash the store never
 * holds is simply not found. */
static int key_of(const cs_cid *cid, uint8_t key[CS_KEY_MAX])
{
	if (cid == NULL)
		return cs_fail(CS_EINVAL, "no CID given");
	return cid_key(cid, key);
}

int store_lookup(cs_store *s, const uint8_t key[CS_KEY_MAX], struct idx_val *v)
{
	pthread_rwlock_rdlock(&s->lock);
	int rc = idx_get(s->idx, key, v);
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

CS_API int cs_block_put(cs_store *s, const void *data, size_t len, uint64_t codec, uint64_t hash,
                        cs_cid *out)
{
	return store_put(s, data, len, codec, hash, 1, out);
}

/* The checks every put makes before it hashes or writes; sets *dlen to the digest length. */
static int put_check(const void *data, size_t len, uint64_t codec, uint64_t hash, size_t *dlen)
{
	if (len > CS_BLOCK_MAX)
		return cs_fail(CS_ELIMIT, "block of %zu bytes exceeds the %u-byte limit", len,
		               CS_BLOCK_MAX);
	if (data == NULL && len > 0)
		return cs_fail(CS_EINVAL, "no data given");
	if (codec > UINT32_MAX)
		return cs_fail(CS_EUNSUPPORTED,
		               "codec 0x%llx is above the store's 32-bit "
		               "codec limit",
		               (unsigned long long)codec);
	*dlen = cid_hash_len(hash);
	if (*dlen != CS_DIGEST_MAX)
		return cs_fail(CS_EUNSUPPORTED,
		               "hash function 0x%llx is not supported "
		               "(sha2-256 0x12, blake2b-256 0xb220)",
		               (unsigned long long)hash);
	return 0;
}

/* Reserves len bytes of the quota (Q2), or fails with no message. */
static int quota_try(cs_store *s, size_t len)
{
	uint64_t q = s->opts.quota_bytes, cur = atomic_load(&s->quota_used);

	/* Bounded: each failed exchange means another put or delete changed the use. */
	do {
		if (q != 0 && (len > q || cur > q - len))
			return CS_EFULL;
	} while (!atomic_compare_exchange_weak(&s->quota_used, &cur, cur + len));
	return 0;
}

/* Makes room for a put by a collection (quota_gc): runs one and sets *freed to what it
 * freed, or waits for the one another thread runs and sets *freed to UINT64_MAX (Q4).
 * Returns 0 when a collection ended, or the error of the one it ran. */
static int quota_collect(cs_store *s, uint64_t *freed)
{
	cs_gc_stat g;

	*freed = 0;
	int rc = cs_gc(s, &g); /* no lock is held here: any caller may start one */
	if (rc == 0) {
		atomic_fetch_add(&s->quota_gcs, 1);
		*freed = g.swept_bytes;
	} else if (rc == CS_EBUSY) {
		pthread_mutex_lock(&s->life_mu);
		while (s->gc_running)
			pthread_cond_wait(&s->gc_cv, &s->life_mu);
		pthread_mutex_unlock(&s->life_mu);
		*freed = UINT64_MAX;
		rc = 0;
	}
	return rc;
}

/* Reserves len bytes of the quota for a put of a block not present (Q2), running or
 * waiting for a collection first when quota_gc says so. Errors: CS_EFULL naming the limit
 * and the use, and the errors of the collection (CS_ECLOSED, CS_ECORRUPT, ...). */
static int quota_reserve(cs_store *s, size_t len)
{
	uint64_t q = s->opts.quota_bytes, freed = 0;
	int rc, collected = 0;

	if (quota_try(s, len) == 0)
		return 0;
	if (s->opts.quota_gc) {
		if ((rc = quota_collect(s, &freed)) != 0) {
			char why[256];
			snprintf(why, sizeof(why), "%s", cs_errmsg());
			return cs_fail(rc,
			               "quota of %llu bytes reached, and the collection run to make "
			               "room failed: %s",
			               (unsigned long long)q, why);
		}
		collected = 1;
		if (quota_try(s, len) == 0)
			return 0;
	}
	char after[96] = "";
	if (collected && freed == UINT64_MAX)
		snprintf(after, sizeof(after), " (after another thread's collection)");
	else if (collected)
		snprintf(after, sizeof(after), " (after a collection that freed %llu bytes)",
		         (unsigned long long)freed);
	atomic_fetch_add(&s->quota_refused, 1);
	return cs_fail(CS_EFULL,
	               "quota of %llu bytes reached: live blocks and puts in flight take %llu "
	               "bytes, and this block needs %zu more%s; delete blocks or names and "
	               "collect, or raise the quota",
	               (unsigned long long)q, (unsigned long long)atomic_load(&s->quota_used),
	               len, after);
}

int store_put(cs_store *s, const void *data, size_t len, uint64_t codec, uint64_t hash, int wait,
              cs_cid *out)
{
	uint8_t digest[CS_DIGEST_MAX];
	size_t dlen;
	int rc;

	cs_clear_error();
	if ((rc = put_check(data, len, codec, hash, &dlen)) != 0 ||
	    (rc = cid_hash(hash, data, len, digest)) != 0)
		return rc;
	return store_put_hashed(s, digest, data, len, codec, hash, wait, out);
}

int store_put_hashed(cs_store *s, const uint8_t *digest, const void *data, size_t len,
                     uint64_t codec, uint64_t hash, int wait, cs_cid *out)
{
	uint8_t key[CS_KEY_MAX], meta[CS_BLOCK_META];
	struct idx_val v;
	size_t dlen;
	int rc;

	if ((rc = put_check(data, len, codec, hash, &dlen)) != 0 ||
	    (rc = cid_make(1, codec, hash, digest, dlen, out)) != 0 ||
	    (rc = cid_key(out, key)) != 0)
		return rc;
	if ((rc = gc_shade(s, key)) != 0) /* E2 of gc.c: shade, then look */
		return rc;
	if (store_lookup(s, key, &v) == 0) {
		/* Present: nothing to write. But its record may still be on its way to disk (a
		 * racing put waits on the same batch) or lost with a failed sync: the caller is
		 * told success only once everything appended so far is durable. */
		if (!wait)
			return 0;
		struct wal_stat ws;
		wal_stat(s->wal, &ws);
		return ws.next_seq > 1 ? wal_wait(s->wal, ws.next_seq - 1) : 0;
	}

	if ((rc = quota_reserve(s, len)) != 0) /* Q2: before anything is written */
		return rc;
	rec_block_meta(meta, (uint16_t)hash, (uint8_t)dlen, (uint32_t)codec);
	struct iovec parts[3] = {
	    {meta, sizeof(meta)},
	    {(void *)digest, dlen},
	    {(void *)data, len},
	};
	struct wal_rec rec = {.type = REC_BLOCK, .parts = parts, .nparts = 3};
	struct wal_pos pos;
	uint64_t seq;
	ckpt_enter(s);
	/* A put nobody waits for is synced by the caller's later sync (W13 of wal.c). */
	rc = wait ? wal_append(s->wal, &rec, 1, &pos, &seq)
	          : wal_append_lazy(s->wal, &rec, 1, &pos, &seq);
	if (rc != 0) {
		ckpt_leave(s);
		atomic_fetch_sub(&s->quota_used, len); /* Q1: released */
		return rc;
	}
	v = (struct idx_val){pos.seg, pos.off, (uint32_t)len, (uint32_t)codec};
	struct idx_val old;
	store_wrlock(s);
	rc = idx_put(s->idx, key, &v, &old); /* S2: appended first */
	if (rc == 0)
		s->live_bytes += len; /* Q1: the reservation is now live */
	else
		atomic_fetch_sub(&s->quota_used, len); /* a racing put of it won, or no memory */
	block_live_put(s, rc, &old, &v); /* 1: a racing put of the same block came first */
	pthread_rwlock_unlock(&s->lock);
	ckpt_leave(s);
	if (rc < 0)
		return rc;
	return wait ? wal_wait(s->wal, seq) : 0;
}

/* Checks that the record read at v (header h, payload starting with meta and digest) is the
 * block of key: what the index promises. */
static int record_is_block(const uint8_t key[CS_KEY_MAX], const struct idx_val *v,
                           const struct rec_hdr *h, const uint8_t meta[CS_BLOCK_META],
                           const uint8_t digest[CS_DIGEST_MAX])
{
	uint16_t hash = (uint16_t)(key[0] << 8 | key[1]);
	if (h->type != REC_BLOCK || meta[0] != (uint8_t)hash || meta[1] != (uint8_t)(hash >> 8) ||
	    memcmp(digest, key + 2, CS_DIGEST_MAX) != 0)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x offset %u: index points at a record "
		               "of another block",
		               v->seg, v->off);
	return 0;
}

static int read_block_at(cs_store *s, const uint8_t key[CS_KEY_MAX], const struct idx_val *v,
                         void *buf);

/* Reads the block at v into buf (v->len bytes) and checks the record names key. A
 * compaction may have moved the block and dropped its segment since v was looked up (C5 of
 * compact.c): when a read fails and the index now holds the block elsewhere, the read is
 * made again there; when the index no longer holds it, it was deleted meanwhile (and its
 * segment compacted): CS_ENOTFOUND. Bounded: each retry follows a move, and a move needs a
 * compaction of the segment the block was in; after a few, the error stands. */
int store_read_block(cs_store *s, const uint8_t key[CS_KEY_MAX], const struct idx_val *v,
                     void *buf)
{
	struct idx_val now = *v;
	int rc;

	for (int tries = 0;; tries++) {
		rc = read_block_at(s, key, &now, buf);
		struct idx_val then = now;
		if (rc == 0 || tries == 4)
			return rc;
		if (store_lookup(s, key, &now) != 0)
			return cs_fail(CS_ENOTFOUND, "the block was deleted while it was read");
		if ((now.seg == then.seg && now.off == then.off) || now.len != v->len)
			return rc;
	}
}

static int read_block_at(cs_store *s, const uint8_t key[CS_KEY_MAX], const struct idx_val *v,
                         void *buf)
{
	uint8_t meta[CS_BLOCK_META], digest[CS_DIGEST_MAX];
	struct iovec parts[3] = {
	    {meta, sizeof(meta)},
	    {digest, sizeof(digest)},
	    {buf, v->len},
	};
	struct rec_hdr h;
	struct wal_pos pos = {v->seg, v->off};
	int rc = wal_read(s->wal, pos, CS_BLOCK_META + CS_DIGEST_MAX + v->len, &h, parts, 3);
	if (rc != 0)
		return rc;
	return record_is_block(key, v, &h, meta, digest);
}

int store_get_many(cs_store *s, const struct store_get *g, int n, int *done, size_t *len)
{
	uint8_t key[STORE_GET_MAX][CS_KEY_MAX];
	uint8_t meta[STORE_GET_MAX][CS_BLOCK_META], digest[STORE_GET_MAX][CS_DIGEST_MAX];
	struct iovec parts[STORE_GET_MAX][3];
	struct wal_many r[STORE_GET_MAX];
	struct idx_val v[STORE_GET_MAX];
	int lim = n, rc = 0, ok;

	_Static_assert(STORE_GET_MAX <= WAL_MANY_MAX && 3 <= WAL_MANY_DST, "a get fits a read");
	*done = 0;
	if (n < 0 || n > STORE_GET_MAX)
		return cs_fail(CS_EINVAL, "get of %d blocks: at most %d", n, STORE_GET_MAX);
	/* Each step stops at the first block that fails it, and the later steps go only as
	 * far, so the error returned is the one cs_block_get() calls in order would meet
	 * first. */
	for (int i = 0; i < lim; i++)
		if ((rc = key_of(g[i].cid, key[i])) != 0)
			lim = i;
	int miss = 0;
	pthread_rwlock_rdlock(&s->lock); /* one lock for the lot: lookups are short */
	for (int i = 0; i < lim; i++)
		if ((miss = idx_get(s->idx, key[i], &v[i])) != 0)
			lim = i;
	pthread_rwlock_unlock(&s->lock);
	if (miss != 0)
		rc = miss;
	for (int i = 0; i < lim; i++) {
		if (v[i].len != g[i].len) {
			*len = v[i].len;
			rc = CS_EBUFSIZE; /* no message: the caller words it (store.h) */
			lim = i;
		}
	}
	for (int i = 0; i < lim; i++) {
		parts[i][0] = (struct iovec){meta[i], CS_BLOCK_META};
		parts[i][1] = (struct iovec){digest[i], CS_DIGEST_MAX};
		parts[i][2] = (struct iovec){g[i].buf, v[i].len};
		r[i] = (struct wal_many){.pos = {v[i].seg, v[i].off},
		                         .len = CS_BLOCK_META + CS_DIGEST_MAX + v[i].len,
		                         .dst = parts[i],
		                         .ndst = 3};
	}
	for (int at = 0; at < lim;) {
		int wrc = wal_read_many(s->wal, r + at, lim - at, &ok);
		for (int i = at; i < at + ok; i++) {
			if (record_is_block(key[i], &v[i], &r[i].h, meta[i], digest[i]) != 0) {
				ok = i - at;
				wrc = 1;
				break;
			}
		}
		at += ok;
		if (wrc == 0)
			break;
		/* Block at failed its read or its check. A compaction may have moved it since
		 * the lookup (C5 of compact.c): store_read_block() follows the move, or gives
		 * the answer a cs_block_get() would, and the rest go on from the next one. */
		int brc = store_read_block(s, key[at], &v[at], g[at].buf);
		if (brc != 0) {
			*done = at;
			return brc;
		}
		at++;
	}
	*done = lim;
	return rc;
}

CS_API int cs_block_get(cs_store *s, const cs_cid *cid, void *buf, size_t cap, size_t *len)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;
	int rc;

	cs_clear_error();
	if ((rc = key_of(cid, key)) != 0 || (rc = store_lookup(s, key, &v)) != 0)
		return rc;
	*len = v.len;
	if (buf == NULL)
		return 0;
	if (cap < v.len)
		return cs_fail(CS_EBUFSIZE, "block is %u bytes, buffer %zu", v.len, cap);
	return store_read_block(s, key, &v, buf);
}

CS_API int cs_block_get_alloc(cs_store *s, const cs_cid *cid, void **data, size_t *len)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;
	int rc;

	cs_clear_error();
	*data = NULL;
	if ((rc = key_of(cid, key)) != 0 || (rc = store_lookup(s, key, &v)) != 0)
		return rc;
	void *buf = malloc(v.len ? v.len : 1);
	if (buf == NULL)
		return -ENOMEM;
	if ((rc = store_read_block(s, key, &v, buf)) != 0) {
		free(buf);
		return rc;
	}
	*data = buf;
	*len = v.len;
	return 0;
}

CS_API void cs_free(void *p)
{
	free(p);
}

CS_API int cs_block_has(cs_store *s, const cs_cid *cid)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;

	cs_clear_error();
	int rc = key_of(cid, key);
	if (rc == CS_ENOTFOUND)
		return 0;
	if (rc != 0)
		return rc;
	return store_lookup(s, key, &v) == 0;
}

CS_API int cs_block_delete(cs_store *s, const cs_cid *cid)
{
	uint8_t key[CS_KEY_MAX], meta[CS_BLOCK_META];
	struct idx_val v;
	uint64_t seq;
	int rc;

	cs_clear_error();
	if ((rc = key_of(cid, key)) != 0)
		return rc;
	/* life_mu: no pin can take the block between the check and the delete (P1 of pin.c). */
	pthread_mutex_lock(&s->life_mu);
	if ((rc = store_lookup(s, key, &v)) != 0 || (rc = pin_check_held(s, key, cid)) != 0)
		goto out;
	uint16_t hash = (uint16_t)(key[0] << 8 | key[1]);
	rec_block_meta(meta, hash, CS_DIGEST_MAX, 0);
	struct iovec parts[2] = {{meta, sizeof(meta)}, {key + 2, CS_DIGEST_MAX}};
	struct wal_rec rec = {.type = REC_DELETE, .parts = parts, .nparts = 2};
	ckpt_enter(s);
	if ((rc = wal_append(s->wal, &rec, 1, NULL, &seq)) == 0) {
		store_wrlock(s);
		block_remove(s, key, NULL); /* present: a racing GC sweep holds life_mu too */
		pthread_rwlock_unlock(&s->lock);
	}
	ckpt_leave(s);
out:
	pthread_mutex_unlock(&s->life_mu);
	if (rc != 0)
		return rc;
	return wal_wait(s->wal, seq);
}

CS_API int cs_store_sync(cs_store *s)
{
	cs_clear_error();
	return wal_sync(s->wal);
}

CS_API int cs_store_stat(cs_store *s, cs_stat *out)
{
	struct wal_stat ws;

	cs_clear_error();
	memset(out, 0, sizeof(*out));
	wal_stat(s->wal, &ws);
	pthread_rwlock_rdlock(&s->lock);
	out->blocks = idx_count(s->idx);
	out->live_bytes = s->live_bytes;
	out->index_bytes = idx_bytes(s->idx);
	out->names = names_count(s->names);
	out->pins = idx_count(s->pins);
	out->pins_recursive = s->pins_recursive;
	out->logical_bytes = names_sizes(s->names);
	pthread_rwlock_unlock(&s->lock);
	pthread_mutex_lock(&s->life_mu);
	out->last_gc = s->last_gc;
	out->last_gc_time_ns = s->last_gc_time_ns;
	pthread_mutex_unlock(&s->life_mu);
	out->log_bytes = ws.log_bytes;
	out->disk_bytes = ws.disk_bytes;
	out->segments = ws.segments;
	out->next_seq = ws.next_seq;
	out->durable_seq = ws.durable_seq;
	out->io_backend = ws.backend;
	out->durability = s->opts.durability;
	out->replayed_records = s->rec.records;
	out->torn_tail_bytes = s->rec.torn_bytes;
	out->salvaged_records = s->rec.salvaged_records;
	out->salvaged_bytes = s->rec.salvaged_bytes;
	out->stray_files = s->rec.stray_files;
	out->open_seconds = s->open_seconds;
	out->checkpoint_seq = atomic_load(&s->ckpt_seq);
	out->checkpoint_time_ns = atomic_load(&s->ckpt_time_ns);
	out->quota_bytes = s->opts.quota_bytes;
	out->quota_used = atomic_load(&s->quota_used);
	out->quota_refused = atomic_load(&s->quota_refused);
	out->quota_gcs = atomic_load(&s->quota_gcs);
	out->garbage_bytes = ws.log_bytes - ws.segments * CS_SEG_HEADER > out->live_bytes
	                         ? ws.log_bytes - ws.segments * CS_SEG_HEADER - out->live_bytes
	                         : 0;
	return 0;
}

void store_piece_begin(struct store_piece *p)
{
	p->n = 0;
	p->state = 0;
}

int store_piece_next(cs_store *s, const struct idx *t, struct store_piece *p)
{
	p->n = 0;
	if (p->state == 2)
		return 0;
	pthread_rwlock_rdlock(&s->lock);
	p->n = idx_next_n(t, p->state == 0 ? NULL : p->last, p->keys, p->vals, STORE_PIECE);
	pthread_rwlock_unlock(&s->lock);
	if (p->n > 0)
		memcpy(p->last, p->keys[p->n - 1], CS_KEY_MAX);
	p->state = p->n < STORE_PIECE ? 2 : 1;
	return p->n;
}

void store_piece_cut(struct store_piece *p, int n)
{
	CS_ASSERT(n >= 1 && n <= p->n);
	p->n = n;
	memcpy(p->last, p->keys[n - 1], CS_KEY_MAX);
	p->state = 1; /* the entries cut off may be all that is left */
}

/* Calls fn(ctx, key, val) for every live block, in key order. */
static int walk_blocks(cs_store *s,
                       int (*fn)(void *ctx, const uint8_t *key, const struct idx_val *v), void *ctx)
{
	struct store_piece *p = malloc(sizeof(*p));
	int rc = 0;

	if (p == NULL)
		return cs_fail(-ENOMEM, "out of memory for a piece of the index");
	store_piece_begin(p);
	while (rc == 0 && store_piece_next(s, s->idx, p) > 0)
		for (int i = 0; i < p->n && rc == 0; i++)
			rc = fn(ctx, p->keys[i], &p->vals[i]);
	free(p);
	return rc;
}

struct list_ctx {
	int (*fn)(void *ctx, const cs_cid *cid);
	void *ctx;
};

static int list_one(void *ctx, const uint8_t *key, const struct idx_val *v)
{
	struct list_ctx *l = ctx;
	cs_cid cid;
	int rc = cid_from_key(key, v->codec, &cid);
	return rc != 0 ? rc : l->fn(l->ctx, &cid);
}

CS_API int cs_block_list(cs_store *s, int (*fn)(void *ctx, const cs_cid *cid), void *ctx)
{
	struct list_ctx l = {fn, ctx};

	cs_clear_error();
	return walk_blocks(s, list_one, &l);
}

struct verify_ctx {
	cs_store *s;
	void (*bad)(void *ctx, const cs_cid *cid, int code);
	void *ctx;
	uint8_t *buf; /* CS_BLOCK_MAX bytes */
	uint64_t checked, failed;
};

static int verify_one(void *ctx, const uint8_t *key, const struct idx_val *v)
{
	struct verify_ctx *vc = ctx;
	uint8_t digest[CS_DIGEST_MAX];
	uint64_t hash = (uint64_t)key[0] << 8 | key[1];
	cs_cid cid;

	int rc = store_read_block(vc->s, key, v, vc->buf);
	if (rc == CS_ENOTFOUND)
		return 0; /* deleted since the piece was copied: not ours to judge */
	if (rc == 0 && (cid_hash(hash, vc->buf, v->len, digest) != 0 ||
	                memcmp(digest, key + 2, CS_DIGEST_MAX) != 0))
		rc = CS_ECORRUPT;
	vc->checked++;
	if (rc != 0) {
		vc->failed++;
		if (vc->bad != NULL && cid_from_key(key, v->codec, &cid) == 0)
			vc->bad(vc->ctx, &cid, rc);
	}
	return 0;
}

CS_API int cs_store_verify(cs_store *s, void (*bad)(void *ctx, const cs_cid *cid, int code),
                           void *ctx, uint64_t *checked, uint64_t *failed)
{
	struct verify_ctx vc = {s, bad, ctx, malloc(CS_BLOCK_MAX), 0, 0};

	cs_clear_error();
	if (vc.buf == NULL)
		return -ENOMEM;
	int rc = walk_blocks(s, verify_one, &vc);
	free(vc.buf);
	if (checked != NULL)
		*checked = vc.checked;
	if (failed != NULL)
		*failed = vc.failed;
	if (rc == 0 && vc.failed > 0)
		rc = cs_fail(CS_ECORRUPT, "%llu of %llu blocks failed verification",
		             (unsigned long long)vc.failed, (unsigned long long)vc.checked);
	return rc;
}

/* ---- Names ----------------------------------------------------------------------------- */

/* Checks a caller's name (a C string) against the rules of name_check() and sets *len. */
static int check_name(const char *name, size_t *len)
{
	char why[96];

	if (name == NULL)
		return cs_fail(CS_EINVAL, "no name given");
	*len = strlen(name);
	if (name_check((const uint8_t *)name, *len, why, sizeof(why)) != 0)
		return cs_fail(CS_EINVAL, "%s", why);
	return 0;
}

void store_pace(unsigned *n, unsigned every)
{
	if (++*n >= every) {
		*n = 0;
		sched_yield();
	}
}

uint64_t store_bg_yield_ns = 2000000; /* S10: the longest a background step defers */

void store_wrlock(cs_store *s)
{
	if (pthread_rwlock_trywrlock(&s->lock) == 0)
		return;
	atomic_fetch_add(&s->lock_waiters, 1);
	pthread_rwlock_wrlock(&s->lock);
	atomic_fetch_add(&s->lock_served, 1);
	atomic_fetch_sub(&s->lock_waiters, 1);
}

void store_wrlock_bg(cs_store *s)
{
	if (atomic_load(&s->lock_waiters) > 0) {
		uint64_t served = atomic_load(&s->lock_served);
		double t0 = now_seconds();
		while (atomic_load(&s->lock_waiters) > 0 && atomic_load(&s->lock_served) == served &&
		       (now_seconds() - t0) * 1e9 < (double)store_bg_yield_ns)
			sched_yield();
	}
	pthread_rwlock_wrlock(&s->lock);
}

int64_t store_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The message for a root that is not in the store. */
static int root_absent(const cs_cid *root)
{
	char text[CS_CID_TEXT_MAX];
	if (cs_cid_format(root, text, sizeof(text)) < 0)
		snprintf(text, sizeof(text), "(unprintable)");
	return cs_fail(CS_ENOTFOUND, "root %s is not in the store", text);
}

int store_name_set(cs_store *s, const char *name, const cs_cid *root, uint64_t size, int pin)
{
	uint8_t meta[REC_NAME_SET_META], key[CS_KEY_MAX];
	struct name_node *node = NULL;
	struct pin_add p = {.c = {s, KEYSET_INIT}};
	struct wal_pos pos[2];
	struct idx_val iv;
	struct name_val v;
	size_t len;
	uint64_t seq = 0;
	int rc;

	if ((rc = check_name(name, &len)) != 0)
		return rc;
	if (root == NULL)
		return cs_fail(CS_EINVAL, "no root CID given");
	if (root->len > CS_CID_MAX || cs_cid_from_bytes(root->bytes, root->len, &v.root) != 0)
		return cs_fail(CS_EINVAL, "the root is not a valid binary CID");
	/* The root first, for the plainer message. */
	if (cid_key(&v.root, key) != 0 || store_lookup(s, key, &iv) != 0)
		return root_absent(&v.root);
	if ((rc = names_node_new((const uint8_t *)name, len, &node)) != 0) /* S6 */
		return rc;
	v.size = size;

	if (pin) {
		/* S8: life_mu, then name_mu, through to the table updates. No collection can
		 * activate while life_mu is held, so the pin's walk under it shades the DAG for
		 * an active one and needs no retry (E2, E4 of gc.c). */
		pthread_mutex_lock(&s->life_mu);
		rc = pin_add_prepare(s, &v.root, CS_PIN_RECURSIVE, &p);
		if (rc != 0) {
			pthread_mutex_unlock(&s->life_mu);
			goto out;
		}
		pthread_mutex_lock(&s->name_mu);
	} else if ((rc = gc_shade_dag_locked(s, &v.root, &s->name_mu)) != 0) {
		/* With name_mu held on success, the whole DAG shaded for a running GC. */
		goto out;
	}
	/* The whole DAG, root included, is present now and stays until the name is in the
	 * table: looked up under name_mu (gc_shade_dag_locked) or walked under life_mu. */
	if (names_count(s->names) >= CS_NAMES_MAX &&
	    names_get(s->names, (const uint8_t *)name, len, NULL) != 0) {
		/* Only name_mu holders change the table, so reading it here needs no rwlock. */
		rc = cs_fail(CS_ELIMIT, "the store holds %u names, the most it can", CS_NAMES_MAX);
	} else {
		/* The time is taken under name_mu so that times grow in log order (unless the
		 * clock steps). */
		v.time_ns = store_realtime_ns();
		rec_name_set_meta(meta, (uint16_t)len, v.root.len, size, v.time_ns);
		struct iovec parts[3] = {
		    {meta, sizeof(meta)},
		    {(void *)name, len},
		    {v.root.bytes, v.root.len},
		};
		struct wal_rec recs[2] = {{.type = REC_NAME_SET, .parts = parts, .nparts = 3}};
		if (p.needed)
			recs[1] = p.rec;
		ckpt_enter(s);
		rc = wal_append(s->wal, recs, p.needed ? 2 : 1, pos, &seq); /* S8: one txn */
		if (rc == 0) {
			v.seg = pos[0].seg;
			v.off = pos[0].off;
			store_wrlock(s);
			name_live_set(s, (const uint8_t *)name, len, &v);
			names_put(s->names, node, &v); /* S2, S5: appended first; cannot fail (S6) */
			if (p.needed)
				pin_add_apply(s, &p, pos[1]); /* cannot fail either (P1 of pin.c) */
			pthread_rwlock_unlock(&s->lock);
			node = NULL;
		}
		ckpt_leave(s);
	}
	pthread_mutex_unlock(&s->name_mu);
	if (pin)
		pthread_mutex_unlock(&s->life_mu);
out:
	pin_add_done(&p);
	names_node_free(node);
	if (rc != 0)
		return rc;
	return wal_wait(s->wal, seq);
}

CS_API int cs_name_set(cs_store *s, const char *name, const cs_cid *root, uint64_t size)
{
	cs_clear_error();
	return store_name_set(s, name, root, size, 0);
}

CS_API int cs_name_set_pinned(cs_store *s, const char *name, const cs_cid *root, uint64_t size)
{
	cs_clear_error();
	return store_name_set(s, name, root, size, 1);
}

CS_API int cs_name_get(cs_store *s, const char *name, cs_cid *root, uint64_t *size,
                       int64_t *time_ns)
{
	struct name_val v;
	size_t len;
	int rc;

	cs_clear_error();
	if ((rc = check_name(name, &len)) != 0)
		return rc;
	pthread_rwlock_rdlock(&s->lock);
	rc = names_get(s->names, (const uint8_t *)name, len, &v);
	pthread_rwlock_unlock(&s->lock);
	if (rc != 0)
		return cs_fail(CS_ENOTFOUND, "name '%s' is not set", name);
	if (root != NULL)
		*root = v.root;
	if (size != NULL)
		*size = v.size;
	if (time_ns != NULL)
		*time_ns = v.time_ns;
	return 0;
}

CS_API int cs_name_delete(cs_store *s, const char *name)
{
	uint8_t meta[REC_NAME_DEL_META];
	size_t len;
	uint64_t seq = 0;
	int rc;

	cs_clear_error();
	if ((rc = check_name(name, &len)) != 0)
		return rc;
	rec_name_del_meta(meta, (uint16_t)len);
	struct iovec parts[2] = {{meta, sizeof(meta)}, {(void *)name, len}};
	struct wal_rec rec = {.type = REC_NAME_DEL, .parts = parts, .nparts = 2};

	pthread_mutex_lock(&s->name_mu);
	/* S5: checked, appended and removed under name_mu, so no set of this name can land
	 * between the check and the removal. */
	if (names_get(s->names, (const uint8_t *)name, len, NULL) != 0) {
		rc = cs_fail(CS_ENOTFOUND, "name '%s' is not set", name);
	} else {
		ckpt_enter(s);
		rc = wal_append(s->wal, &rec, 1, NULL, &seq);
		if (rc == 0) {
			store_wrlock(s);
			name_remove(s, (const uint8_t *)name, len, NULL); /* S2: appended first */
			pthread_rwlock_unlock(&s->lock);
		}
		ckpt_leave(s);
	}
	pthread_mutex_unlock(&s->name_mu);
	if (rc != 0)
		return rc;
	return wal_wait(s->wal, seq);
}

/* Names are listed in pieces of NAME_STEP entries, copied out under the read lock, so the
 * callback runs with no lock held (it may call back into the store) and writers wait at
 * most for one piece's copy. */
#define NAME_STEP 256

CS_API int cs_name_list(cs_store *s, int (*fn)(void *ctx, const cs_name_info *n), void *ctx)
{
	uint8_t last[CS_NAME_MAX];
	size_t last_len = 0;
	int n, rc = 0, first = 1;

	cs_clear_error();
	if (fn == NULL)
		return cs_fail(CS_EINVAL, "no callback given");
	struct name_entry *p = malloc(NAME_STEP * sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	/* Bounded: each piece starts strictly after the last name of the one before. */
	do {
		pthread_rwlock_rdlock(&s->lock);
		n = names_next(s->names, first ? NULL : last, last_len, p, NAME_STEP);
		pthread_rwlock_unlock(&s->lock);
		for (int i = 0; i < n && rc == 0; i++) {
			cs_name_info info = {p[i].name, p[i].v.root, p[i].v.size, p[i].v.time_ns};
			rc = fn(ctx, &info);
		}
		if (n > 0) {
			last_len = p[n - 1].len;
			memcpy(last, p[n - 1].name, last_len);
			first = 0;
		}
	} while (rc == 0 && n == NAME_STEP);
	free(p);
	return rc;
}
