/*
 * gc.c - garbage collection: mark from the names and pins, sweep what nothing reaches, while
 * writers keep writing.
 *
 * A collection runs in three steps on the caller's thread:
 *
 *   activate ──> mark (roots walked in pieces) ──> sweep (index walked in pieces) ──> sync
 *
 * Then the index is repacked (repack(): the sweep's deletes left its leaves half full) and the
 * log compacted, both in pieces too.
 *
 * Nothing is stopped for longer than one step of a piece: activation holds life_mu and
 * name_mu for a few assignments; the marker takes the mark set's part of each block it marks;
 * each sweep piece holds life_mu while it copies at most STORE_PIECE (256) index entries,
 * and the parts of their keys (one or two: the index is in key order) while it appends their
 * tombstones (one transaction, no I/O waited for) and drops the entries; each repack step
 * holds the index write lock while it packs one group of at most 97 leaves (about 0.2 ms).
 * Puts of new blocks take no lock of GC's but the part of their key, to shade (E2): a
 * collector preempted while it holds a part stalls only the writers of the 1/256 of keys in
 * it. So that it is seldom preempted holding anything, the collector gives up its time slice
 * (store_pace) between steps, where it holds no lock: every 64 marks, after each sweep piece
 * and each repack step; compaction every 32 records. And its appends leave half a batch free
 * for puts (W14 of wal.c).
 *
 * The epoch rule (docs/GC.md): a collection keeps every block that a root reached when it
 * began, and every block put, named or pinned after it began.
 *   E1. Activation sets gc_from to the log's tail (wal_tail), or to the start of the oldest
 *       add in flight (store_hold_begin) if earlier. A block whose index entry lies at or past
 *       gc_from was written after the collection began, or by an add that has yet to root
 *       its file: never swept.
 *   E2. While gc_active, every operation that makes an existing block live without writing
 *       it shades the block in the mark set before it checks that the block is present: a
 *       put of a present block (store_put), a pin add (its whole DAG, under life_mu), a
 *       name set (its whole DAG, gc_shade_dag, under life_mu).
 *   E3. A sweep piece copies its entries under life_mu (no delete changes them), then
 *       decides (unmarked, before gc_from) and deletes (tombstone appended, then the index
 *       entry dropped) holding the mark set's part of each of its keys too, which every shade
 *       and mark of that key holds: a shade lands either before the decision (the block
 *       stays) or after the drop (the shader finds the block absent and writes it anew,
 *       after the tombstone in the log).
 *   E4. Roots: activation holds life_mu and name_mu, which every pin and name mutation holds
 *       from its check through its table update (P1 of pin.c, S5 of store.c). A root set
 *       before activation is in its table when the marker walks it; a root set after sees
 *       gc_active and shades (E2). A name set walks its DAG before it takes name_mu, so it
 *       shades and looks up the walk's blocks once more with name_mu held
 *       (gc_shade_dag_locked): a collection that ran whole in between is noticed. A root
 *       removed during the collection may or may not be marked from: its blocks may
 *       survive this collection, never a live one.
 * Marks come in two strengths (the count in the mark set): 1, shaded alone (a put of a
 * present block), and 2, marked with everything below it (the marker and DAG shades). A
 * DAG walk steps into a block unless it is marked 2, so a dag-pb block put during GC and
 * named later still has its links followed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "btree.h"
#include "cid.h"
#include "dag.h"
#include "err.h"
#include "names.h"
#include "record.h"
#include "store.h"

#define MARK_SHADED 1u /* E2: kept, links not followed */
#define MARK_DEEP   2u /* kept, and every block below it is marked too */

#define ROOT_STEP 256 /* names copied out per piece of the root walk */
#define PIECE_PARTS 8 /* parts of the mark set a sweep piece's keys may lie in */
#define MARK_PACE 64  /* marks between the marker's pace points (store_pace) */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* This thread's CPU time: a step's own cost, apart from the time the scheduler took. */
static double cpu_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int active(cs_store *s)
{
	return atomic_load_explicit(&s->gc_active, memory_order_acquire);
}

/* The part of the mark set that holds key, by index. The first digest byte: not one that
 * keyset's home slot is read from alone (it XORs in later bytes), so slots spread in every
 * part; and the index orders keys by it, so a sweep piece's keys lie in one or two parts. */
static unsigned part_of(const uint8_t key[CS_KEY_MAX])
{
	_Static_assert(GC_MARK_PARTS == 256, "a part per value of one key byte");
	return key[2];
}

static struct gc_part *gc_part(cs_store *s, const uint8_t key[CS_KEY_MAX])
{
	return &s->marks[part_of(key)];
}

void gc_marks_init(cs_store *s)
{
	for (size_t i = 0; i < GC_MARK_PARTS; i++) {
		pthread_mutex_init(&s->marks[i].mu, NULL);
		s->marks[i].marks = (struct keyset)KEYSET_INIT;
	}
}

void gc_marks_destroy(cs_store *s)
{
	for (size_t i = 0; i < GC_MARK_PARTS; i++) {
		keyset_free(&s->marks[i].marks);
		pthread_mutex_destroy(&s->marks[i].mu);
	}
}

static size_t marks_count(cs_store *s)
{
	size_t n = 0;
	for (size_t i = 0; i < GC_MARK_PARTS; i++) {
		pthread_mutex_lock(&s->marks[i].mu);
		n += s->marks[i].marks.n;
		pthread_mutex_unlock(&s->marks[i].mu);
	}
	return n;
}

int gc_shade(cs_store *s, const uint8_t key[CS_KEY_MAX])
{
	int rc = 0;

	if (!active(s))
		return 0;
	struct gc_part *p = gc_part(s, key);
	pthread_mutex_lock(&p->mu);
	if (s->gc_active && keyset_get(&p->marks, key) == 0 &&
	    keyset_add(&p->marks, key, MARK_SHADED) < 0)
		rc = cs_fail(-ENOMEM, "out of memory for the collector's mark set");
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* The DAG walk's admission for the marker and for DAG shades: step into a block unless it is
 * marked deep already, and mark it deep. */
static int mark_deep(void *ctx, const uint8_t key[CS_KEY_MAX], const cs_cid *cid)
{
	cs_store *s = ctx;
	int rc = 1;

	store_pace(&s->gc_pace, MARK_PACE); /* the walk holds no lock between its steps */
	struct gc_part *p = gc_part(s, key);
	pthread_mutex_lock(&p->mu);
	uint32_t m = keyset_get(&p->marks, key);
	if (!s->gc_active || m >= MARK_DEEP)
		rc = 0; /* nothing left to protect, or done already */
	else if (keyset_add(&p->marks, key, MARK_DEEP - m) < 0)
		rc = cs_fail(-ENOMEM, "out of memory for the collector's mark set");
	pthread_mutex_unlock(&p->mu);
	return rc;
}

/* A walk's admission with its own visited set, shading each new block (E2). */
static int shade_visit(void *ctx, const uint8_t key[CS_KEY_MAX], const cs_cid *cid)
{
	struct gc_walk *w = ctx;
	int rc = keyset_add(&w->seen, key, 1);
	if (rc < 0)
		return cs_fail(rc, "out of memory for a DAG walk's visited set");
	if (rc == 0)
		return 0; /* seen before */
	if ((rc = gc_shade(w->s, key)) < 0)
		return rc;
	return 1;
}

int gc_walk_shading(cs_store *s, const cs_cid *root, unsigned flags, struct gc_walk *w)
{
	w->s = s;
	return dag_walk(s, root, flags, shade_visit, w, NULL);
}

void (*gc_test_before_lock)(cs_store *s);

int gc_shade_dag_locked(cs_store *s, const cs_cid *root, pthread_mutex_t *mu)
{
	/* Bounded in practice: a retry means that a sweep took a block of the DAG between the
	 * walk and the lock; the next walk then fails on it, unless it was put again since. */
	for (;;) {
		struct gc_walk w = {s, KEYSET_INIT};
		/* Strict about missing blocks: a name never lands on a DAG a collection has
		 * begun to take (or that was broken before). The walk reads the dag-pb nodes
		 * without mu, so that name mutations do not wait for its reads. */
		int rc = gc_walk_shading(s, root, DAG_LENIENT, &w);
		if (rc != 0) {
			keyset_free(&w.seen);
			return rc;
		}
		/* A whole collection may have run since the walk looked, sweeping a block it
		 * found (E4: activation takes mu, not the walk). With mu held none can begin, so
		 * the walk's blocks are shaded for the active one, if any, and looked up again:
		 * present now, each stays until the caller's root is in its table (E2, E3). */
		if (gc_test_before_lock != NULL)
			gc_test_before_lock(s);
		pthread_mutex_lock(mu);
		int whole = 1;
		for (size_t i = 0; whole && rc == 0 && i < w.seen.cap; i++) {
			struct idx_val v;
			const uint8_t *k = w.seen.keys + i * CS_KEY_MAX;
			if (w.seen.count[i] == 0)
				continue;
			if ((rc = gc_shade(s, k)) == 0)
				whole = store_lookup(s, k, &v) == 0;
		}
		keyset_free(&w.seen);
		if (rc == 0 && whole)
			return 0;
		pthread_mutex_unlock(mu);
		if (rc != 0)
			return rc;
	}
}

/* ---- Mark ------------------------------------------------------------------------------ */

static int stopping(cs_store *s)
{
	return atomic_load_explicit(&s->closing, memory_order_acquire);
}

static int closed_error(void)
{
	return cs_fail(CS_ECLOSED, "the store is closing: garbage collection stopped");
}

/* Marks from every name (E4), in pieces copied out under the read lock. */
static int mark_names(cs_store *s, uint64_t *roots)
{
	struct name_entry *p = malloc(ROOT_STEP * sizeof(*p));
	uint8_t last[CS_NAME_MAX];
	size_t last_len = 0;
	int n, rc = 0, first = 1;

	if (p == NULL)
		return cs_fail(-ENOMEM, "out of memory for a piece of the names");
	do {
		pthread_rwlock_rdlock(&s->lock);
		n = names_next(s->names, first ? NULL : last, last_len, p, ROOT_STEP);
		pthread_rwlock_unlock(&s->lock);
		for (int i = 0; i < n && rc == 0; i++) {
			rc = stopping(s) ? closed_error()
			                 : dag_walk(s, &p[i].v.root, DAG_MISSING_OK | DAG_LENIENT,
			                            mark_deep, s, NULL);
			(*roots)++;
		}
		if (n > 0) {
			last_len = p[n - 1].len;
			memcpy(last, p[n - 1].name, last_len);
			first = 0;
		}
	} while (rc == 0 && n == ROOT_STEP);
	free(p);
	return rc;
}

/* Marks from every pin: a recursive one with its DAG, a direct one alone. */
static int mark_pins(cs_store *s, uint64_t *roots)
{
	struct store_piece *p = malloc(sizeof(*p));
	int rc = 0;

	if (p == NULL)
		return cs_fail(-ENOMEM, "out of memory for a piece of the pins");
	store_piece_begin(p);
	while (rc == 0 && store_piece_next(s, s->pins, p) > 0) {
		for (int i = 0; i < p->n && rc == 0; i++) {
			cs_cid root;
			(*roots)++;
			if (stopping(s)) {
				rc = closed_error();
			} else if ((p->vals[i].len & 0xff) == CS_PIN_RECURSIVE) {
				if ((rc = cid_from_key(p->keys[i], p->vals[i].codec, &root)) == 0)
					rc = dag_walk(s, &root, DAG_MISSING_OK | DAG_LENIENT,
					              mark_deep, s, NULL);
			} else {
				rc = mark_deep(s, p->keys[i], NULL) < 0 ? -ENOMEM : 0;
			}
		}
	}
	free(p);
	return rc;
}

/* ---- Sweep ----------------------------------------------------------------------------- */

/* Copies the next piece of the index into p and deletes its unmarked entries that lie
 * before gc_from (E1, E3). The piece is copied, decided on and deleted under life_mu, which
 * every other delete of an index entry holds, so no entry of it changes meanwhile (a put
 * changes no present entry; one it inserts lies past gc_from). Only the decision and the
 * deletes need the keys' parts of the mark set (E3), which puts take while a collection
 * runs: the copy is made before they are taken, in ascending order (the lock order). Returns
 * the entries looked at, 0 at the end of the index, or an error. */
static int sweep_piece(cs_store *s, struct store_piece *p, cs_gc_stat *st)
{
	uint8_t meta[STORE_PIECE][CS_BLOCK_META];
	struct iovec parts[STORE_PIECE][2];
	struct wal_rec recs[STORE_PIECE];
	int idx[STORE_PIECE], n = 0, rc = 0;
	uint64_t seq;

	/* W14 of wal.c: the tombstones leave room for puts, waited for before any lock a put
	 * needs is taken. */
	wal_make_room(s->wal, STORE_PIECE * rec_size(CS_BLOCK_META + CS_DIGEST_MAX));
	pthread_mutex_lock(&s->life_mu);
	int got = store_piece_next(s, s->idx, p);
	uint8_t held[GC_MARK_PARTS] = {0};
	/* A small store's piece spans many parts: it ends before the first key of one part more
	 * than PIECE_PARTS, so that few locks are held at once. */
	for (int i = 0, nheld = 0; i < got; i++) {
		unsigned part = part_of(p->keys[i]);
		if (held[part])
			continue;
		if (nheld == PIECE_PARTS) {
			store_piece_cut(p, i);
			got = i;
			break;
		}
		held[part] = 1;
		nheld++;
	}
	for (size_t i = 0; i < GC_MARK_PARTS; i++)
		if (held[i])
			pthread_mutex_lock(&s->marks[i].mu);
	for (int i = 0; i < got; i++) {
		struct wal_pos at = {p->vals[i].seg, p->vals[i].off};
		if (wal_pos_cmp(at, s->gc_from) >= 0 ||
		    keyset_get(&gc_part(s, p->keys[i])->marks, p->keys[i]) > 0)
			continue; /* E1, marked */
		const uint8_t *k = p->keys[i];
		rec_block_meta(meta[n], (uint16_t)(k[0] << 8 | k[1]), CS_DIGEST_MAX, 0);
		parts[n][0] = (struct iovec){meta[n], CS_BLOCK_META};
		parts[n][1] = (struct iovec){(void *)(k + 2), CS_DIGEST_MAX};
		recs[n] = (struct wal_rec){.type = REC_DELETE, .parts = parts[n], .nparts = 2};
		idx[n++] = i;
	}
	if (n > 0) {
		ckpt_enter(s);
		if ((rc = wal_append(s->wal, recs, n, NULL, &seq)) == 0) {
			store_wrlock_bg(s);
			for (int j = 0; j < n; j++) { /* S2: appended first */
				struct idx_val old;
				CS_ASSERT(idx_del(s->idx, p->keys[idx[j]], &old) == 0);
				store_live_drop(s, &old);
				st->swept_bytes += old.len;
			}
			pthread_rwlock_unlock(&s->lock);
			st->swept_blocks += (uint64_t)n;
		}
		ckpt_leave(s);
	}
	for (size_t i = GC_MARK_PARTS; i-- > 0;)
		if (held[i])
			pthread_mutex_unlock(&s->marks[i].mu);
	pthread_mutex_unlock(&s->life_mu);
	return rc != 0 ? rc : got;
}

static int sweep(cs_store *s, cs_gc_stat *st)
{
	struct store_piece *p = malloc(sizeof(*p));
	int rc;

	if (p == NULL)
		return cs_fail(-ENOMEM, "out of memory for a piece of the index");
	store_piece_begin(p);
	while ((rc = stopping(s) ? closed_error() : sweep_piece(s, p, st)) > 0)
		store_pace(&s->gc_pace, 1);
	free(p);
	return rc;
}

/* ---- Repack ---------------------------------------------------------------------------- */

/* Gives back the index memory the sweep's deletes freed (idx_repack_step of btree.c), when
 * the tree is sparse enough to pay (idx_repack_wanted). One step per hold of the index write
 * lock, so a writer waits for at most one group of leaves; between steps writers put freely
 * (the cursor is a key, R1 of btree.c). A step changes no entry (R2), so no lock of the
 * collector's but the index's is needed, and the checkpoint's copy of the entries is
 * unaffected. Stops early when the store closes: the tree is whole after every step. */
static void repack(cs_store *s, cs_gc_stat *st)
{
	uint8_t cur[CS_KEY_MAX];
	double t0 = now_s();
	int more;

	pthread_rwlock_rdlock(&s->lock);
	more = idx_repack_wanted(s->idx);
	pthread_rwlock_unlock(&s->lock);
	for (int first = 1; more && !stopping(s); first = 0) {
		store_wrlock_bg(s);
		double held = now_s(), cpu = cpu_s();
		more = idx_repack_step(s->idx, first ? NULL : cur, cur);
		cpu = cpu_s() - cpu;
		held = now_s() - held;
		pthread_rwlock_unlock(&s->lock);
		st->repack_steps++;
		if (held > st->repack_step_max_seconds)
			st->repack_step_max_seconds = held;
		if (cpu > st->repack_step_max_cpu_seconds)
			st->repack_step_max_cpu_seconds = cpu;
		store_pace(&s->gc_pace, 1);
	}
	st->repack_seconds = now_s() - t0;
}

/* ---- The collection -------------------------------------------------------------------- */

/* Once gc_active is 0, a shade or mark that takes a part finds it 0 and leaves the part
 * alone; one that holds the part is waited for by taking it. Each part is freed under its
 * own mutex, so a writer waits at most for the unmapping of its key's part. The next
 * collection's activation follows this one's end (gc_running, under life_mu). */
static void deactivate(cs_store *s)
{
	pthread_mutex_lock(&s->mark_mu);
	atomic_store_explicit(&s->gc_active, 0, memory_order_release);
	pthread_mutex_unlock(&s->mark_mu);
	for (size_t i = 0; i < GC_MARK_PARTS; i++) {
		pthread_mutex_lock(&s->marks[i].mu);
		keyset_free(&s->marks[i].marks);
		pthread_mutex_unlock(&s->marks[i].mu);
	}
}

int gc_exclusive_begin(cs_store *s)
{
	pthread_mutex_lock(&s->life_mu);
	if (s->gc_running || s->closing) {
		pthread_mutex_unlock(&s->life_mu);
		return s->closing ? closed_error()
		                  : cs_fail(CS_EBUSY, "a garbage collection or compaction is "
		                                      "already running");
	}
	s->gc_running = 1;
	pthread_mutex_unlock(&s->life_mu);
	return 0;
}

void gc_exclusive_end(cs_store *s)
{
	pthread_mutex_lock(&s->life_mu);
	s->gc_running = 0;
	pthread_cond_broadcast(&s->gc_cv);
	pthread_mutex_unlock(&s->life_mu);
}

CS_API int cs_gc(cs_store *s, cs_gc_stat *out)
{
	cs_gc_stat st = {0};
	double t0 = now_s(), t1;
	int rc;

	cs_clear_error();
	if ((rc = gc_exclusive_begin(s)) != 0)
		return rc;
	pthread_mutex_lock(&s->life_mu);
	/* E4: no pin (life_mu) or name (name_mu) mutation is between its check and its table
	 * update while the collection turns active. */
	pthread_mutex_lock(&s->name_mu);
	pthread_mutex_lock(&s->mark_mu);
	s->gc_from = wal_tail(s->wal); /* E1 */
	for (const struct store_hold *h = s->holds; h != NULL; h = h->next)
		if (wal_pos_cmp(h->from, s->gc_from) < 0)
			s->gc_from = h->from;
	atomic_store_explicit(&s->gc_active, 1, memory_order_release);
	pthread_mutex_unlock(&s->mark_mu);
	pthread_mutex_unlock(&s->name_mu);
	pthread_mutex_unlock(&s->life_mu);

	rc = mark_names(s, &st.roots);
	if (rc == 0)
		rc = mark_pins(s, &st.roots);
	t1 = now_s();
	st.mark_seconds = t1 - t0;
	if (rc == 0) {
		st.marked = marks_count(s);
		rc = sweep(s, &st);
	}
	deactivate(s);
	/* The deletes are durable before the report, in every durability mode; a sweep stopped
	 * by close still makes what it deleted durable. */
	int src = st.swept_blocks > 0 ? wal_sync(s->wal) : 0;
	if (rc == 0)
		rc = src;
	st.sweep_seconds = now_s() - t1;
	if (rc == 0)
		repack(s, &st);
	/* Then give back the space (compact.c), still alone (C6). */
	if (rc == 0 && s->opts.compact_threshold > 0) {
		cs_compact_stat cst = {0};
		rc = compact_run(s, s->opts.compact_threshold, &cst);
		st.segments_compacted = cst.segments_compacted;
		st.bytes_copied = cst.bytes_copied;
		st.bytes_reclaimed = cst.bytes_reclaimed;
		st.compact_seconds = cst.seconds;
	}
	st.seconds = now_s() - t0;
	pthread_rwlock_rdlock(&s->lock);
	st.index_bytes = idx_bytes(s->idx);
	pthread_rwlock_unlock(&s->lock);

	pthread_mutex_lock(&s->life_mu);
	if (rc == 0) {
		s->last_gc = st;
		s->last_gc_time_ns = store_realtime_ns();
	}
	pthread_mutex_unlock(&s->life_mu);
	gc_exclusive_end(s);
	if (out != NULL)
		*out = st;
	return rc;
}

void store_hold_begin(cs_store *s, struct store_hold *h)
{
	pthread_mutex_lock(&s->mark_mu);
	h->from = wal_tail(s->wal);
	h->prev = NULL;
	h->next = s->holds;
	if (s->holds != NULL)
		s->holds->prev = h;
	s->holds = h;
	pthread_mutex_unlock(&s->mark_mu);
}

void store_hold_end(cs_store *s, struct store_hold *h)
{
	pthread_mutex_lock(&s->mark_mu);
	if (h->prev != NULL)
		h->prev->next = h->next;
	else
		s->holds = h->next;
	if (h->next != NULL)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&s->mark_mu);
}

void gc_stop(cs_store *s)
{
	pthread_mutex_lock(&s->life_mu);
	atomic_store_explicit(&s->closing, 1, memory_order_release);
	while (s->gc_running)
		pthread_cond_wait(&s->gc_cv, &s->life_mu);
	pthread_mutex_unlock(&s->life_mu);
}
