/*
 * store.h - the store handle and the functions engine/ modules share (internal).
 *
 * store.c owns open/close, blocks and names; pin.c the pins; gc.c garbage collection. They
 * share the handle below; ckpt.c writes and loads checkpoints. Lock order, outermost first (a
 * thread holding one may take only those after it):
 *
 *   ckpt_mu -> life_mu -> name_mu -> mark_mu -> marks[i].mu (i ascending) -> ckpt_lock (rwlock)
 *   -> lock (rwlock)
 *
 * ckpt_mu lets one checkpoint run at a time. life_mu serializes the mutations that decide
 * whether a block may go: pin add and remove, block delete, and each step of GC's sweep.
 * name_mu serializes name mutations (S5 of store.c); a pinned name set holds both, life_mu
 * first (S8). mark_mu guards GC's activation (gc.c, E1, E4) and the adds in flight;
 * each part of GC's mark set has its own mutex (E2, E3). ckpt_lock is held shared by every
 * mutation from its log append through its table update, and exclusively by a checkpoint
 * while it marks the log (C1 of ckpt.c). lock guards the in-memory tables.
 */
#ifndef CS_STORE_H
#define CS_STORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "btree.h"
#include "cidstore.h"
#include "dir.h"
#include "keyset.h"
#include "record.h"
#include "replay.h"
#include "wal.h"

struct idx;
struct io;
struct names;

#define GC_MARK_PARTS 256 /* parts of GC's mark set (gc.c) */

struct cs_store {
	struct dir_handle dir;
	cs_options opts;
	struct wal *wal;

	pthread_rwlock_t lock; /* guards idx, names, pins, cover and the counters below */
	atomic_uint lock_waiters;   /* S10 of store.c: foreground writers waiting for lock */
	_Atomic uint64_t lock_served; /* S10: write locks those waiters have been given */
	struct idx *idx;
	uint64_t live_bytes;
	_Atomic uint64_t quota_used;     /* Q1 of store.c */
	_Atomic uint64_t quota_refused;  /* puts refused by the quota */
	_Atomic uint64_t quota_gcs;      /* collections run for the quota */
	struct names *names; /* owned; changed only by holders of name_mu (S5) */
	pthread_mutex_t name_mu;

	/* Pins (pin.c): key -> {seg, off of the pin record; kind | version << 8; codec}. */
	pthread_mutex_t life_mu;
	struct idx *pins;     /* owned; changed only by holders of life_mu */
	struct keyset cover;  /* key -> number of pins whose DAG holds it; valid if cover_ok */
	int cover_ok;         /* built on first need, then kept up to date by pin add/remove */
	uint64_t pins_recursive;

	/* Garbage collection (gc.c). */
	pthread_mutex_t mark_mu;
	atomic_int gc_active;  /* a mark or sweep runs; writers shade (E2); set under mark_mu */
	/* The blocks GC must keep, in GC_MARK_PARTS parts by the key's first digest byte
	 * (gc_part()), each under its own mutex: a writer's shade waits only for the collector's
	 * work on the part of its own key (a part's growth rehashes 1/256 of the set, a sweep
	 * piece's keys lie in one or two parts), not for all of its work. */
	struct gc_part {
		pthread_mutex_t mu;
		struct keyset marks; /* under mu */
	} marks[GC_MARK_PARTS];
	struct wal_pos gc_from; /* E1: blocks at or past this position are kept */
	struct store_hold *holds; /* under mark_mu: adds in flight, oldest last */
	int gc_running;        /* under life_mu: a cs_gc runs (one at a time) */
	unsigned gc_pace;      /* the running cs_gc's or cs_compact's count for store_pace */
	atomic_int closing;    /* cs_store_close began: a running cs_gc stops; set under life_mu */
	pthread_cond_t gc_cv;  /* signalled when gc_running drops */
	cs_gc_stat last_gc;
	int64_t last_gc_time_ns;

	struct rec_result rec; /* what open found; rec.segs handed to the WAL, rec.drops to
				* `drops` below */
	double open_seconds;

	/* Checkpoints (ckpt.c). */
	struct io *ckpt_io;          /* owned: the backend of the checkpoint file (wal/io.h), a
	                              * second object beside the log's, used under ckpt_mu */
	pthread_mutex_t ckpt_mu;     /* one checkpoint at a time; guards ckpt_log_bytes */
	pthread_rwlock_t ckpt_lock;  /* C1 of ckpt.c; prefers the exclusive taker */
	uint64_t ckpt_log_bytes;     /* the log's size when the last checkpoint ended */
	int ckpt_in_use;             /* the file named CKPT_FILE holds leaves of the block index
	                              * (C5 of ckpt.c), so it must not be cut (C6); under ckpt_mu */
	_Atomic uint64_t ckpt_seq;   /* start seq of the last checkpoint written or loaded */
	_Atomic int64_t ckpt_time_ns;
	pthread_mutex_t ckpt_wait_mu; /* the background thread's sleep */
	pthread_cond_t ckpt_cv;
	int ckpt_quit;               /* under ckpt_wait_mu */
	int ckpt_thread_on;
	pthread_t ckpt_thread;

	/* Compaction (compact.c). */
	struct seg_live *live; /* under lock: live record bytes per segment (C1), id order,
				* CS_SEGMENTS_MAX slots (so an update never allocates), nlive used */
	uint32_t nlive;
	struct rec_drops drops; /* the dropped ranges (C4); changed only by a compaction, which
				 * runs alone (gc_running), and at open */
};

/* C1 of ckpt.c: every mutation holds the checkpoint lock shared from before its log append
 * until its table update is done (and never across a wal_wait), so a checkpoint that takes
 * it exclusively sees no mutation half done. Never taken twice by one thread. */
static inline void ckpt_enter(cs_store *s)
{
	pthread_rwlock_rdlock(&s->ckpt_lock);
}

static inline void ckpt_leave(cs_store *s)
{
	pthread_rwlock_unlock(&s->ckpt_lock);
}

/* Writes a checkpoint (ckpt.c). CKPT_FORCE: now; CKPT_CHANGED: unless nothing was appended
 * since the last one (close); CKPT_DUE: when checkpoint_bytes of log were written since the
 * last one (the background thread). Errors: CS_EPOISONED, CS_EBUSY (the log's last record is
 * unknown after salvage), -ENOMEM, -errno (the message names the step). */
enum ckpt_mode { CKPT_FORCE, CKPT_CHANGED, CKPT_DUE };
int ckpt_take(cs_store *s, enum ckpt_mode mode);

/* Loads the checkpoint file into the store's empty tables (and their live bytes per
 * segment) and fills *start with where replay resumes: its segs allocated (free(*segs) after
 * the replay), its drops owned (rec_drops_free()); both untouched on error. Errors: CS_ENOTFOUND
 * (no checkpoint), CS_ECORRUPT, CS_EVERSION (each with a message; the tables may be partly
 * filled), -ENOMEM, -errno. */
int ckpt_load(cs_store *s, struct rec_start *start, struct wal_seg_info **segs);

/* Removes a checkpoint.tmp a crash left behind. Errors: -errno. */
int ckpt_clean(cs_store *s);

/* For tests: when set, called by ckpt_take() right after its start mark, on its thread,
 * so that a test can change the tables between the marks (C2). Not for production use. */
extern void (*ckpt_test_hook)(cs_store *s);
/* Tests only: when set, the loader reads the checkpoint file into memory as it does where the
 * kernel cannot prefault a mapping of it (before Linux 5.14), instead of mapping it. */
extern int ckpt_test_no_map;

/* Start and stop the background checkpoint thread (when checkpoint_bytes > 0). Errors of
 * start: -errno from pthread_create. */
int ckpt_start(cs_store *s);
void ckpt_stop(cs_store *s);

/* Live record bytes of one segment (C1 of compact.c). */
struct seg_live {
	uint32_t id;
	uint64_t bytes;
};

/* Passes a message to opts->log, if set (the recovery reports and warnings of cs_options). */
void store_logf(const cs_options *o, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds delta to the live bytes of segment seg (C1). Called with lock held for writing, or
 * by replay (which runs alone). Never allocates. */
void store_live_add(cs_store *s, uint32_t seg, int64_t delta);

/* The same on a table of the same form (t: CS_SEGMENTS_MAX slots, *n used, id order) that
 * is not the store's: a checkpoint load's helper thread keeps its own (C5 of ckpt.c). */
void seg_live_add(struct seg_live *t, uint32_t *n, uint32_t seg, int64_t delta);

/* The bytes the record of a block of len data bytes takes in the log. */
static inline int64_t store_block_bytes(uint32_t len)
{
	return rec_size(CS_BLOCK_META + CS_DIGEST_MAX + len);
}

/* ... of a REC_NAME_SET of a name of name_len bytes set to a CID of cid_len bytes. */
static inline int64_t store_name_bytes(size_t name_len, uint8_t cid_len)
{
	return rec_size(REC_NAME_SET_META + (uint32_t)name_len + cid_len);
}

/* ... of a REC_PIN_ADD of a CID of cid_len bytes. */
static inline int64_t store_pin_bytes(uint8_t cid_len)
{
	return rec_size(REC_PIN_META + cid_len);
}

/* Allocates s->live (at open). Errors: -ENOMEM. */
int store_live_init(cs_store *s);

/* Runs a compaction for cs_gc() or cs_compact(), the caller holding the right to run alone
 * (gc_running), and fills *st. threshold: segments whose live fraction is below it are
 * rewritten, and more (those with least live first) while the files exceed the space bound
 * (compact.c). */
int compact_run(cs_store *s, double threshold, cs_compact_stat *st);

/* Compacts segment id alone, whatever its live fraction (tests: the carried-record cases
 * need a chosen segment compacted and its older neighbours kept). Errors: as cs_compact,
 * and CS_EINVAL (id is the last segment or unknown). */
int store_compact_segment(cs_store *s, uint32_t id, cs_compact_stat *st);

/* cs_block_put() with a choice: wait = 0 returns once the block is in the log's batch buffer
 * (readable at once, durable after the next cs_store_sync()) whatever the durability mode.
 * For writers of many blocks that make them durable together, as an add does at its end. */
int store_put(cs_store *s, const void *data, size_t len, uint64_t codec, uint64_t hash,
	      int wait, cs_cid *out);

/* cs_name_set() (pin 0) or cs_name_set_pinned() (pin 1), without clearing the thread's
 * error: for an add that names its root at its end (file.c). S8 of store.c. */
int store_name_set(cs_store *s, const char *name, const cs_cid *root, uint64_t size, int pin);

/* Drops the live block whose entry was v (a deleted or swept block): from live_bytes, from
 * the quota's use (Q1 of store.c) and from its segment's live bytes (C1 of compact.c). Called
 * with the write lock held. */
static inline void store_live_drop(cs_store *s, const struct idx_val *v)
{
	s->live_bytes -= v->len;
	atomic_fetch_sub(&s->quota_used, v->len);
	store_live_add(s, v->seg, -store_block_bytes(v->len));
}

/* The index entry of key, under the read lock. Returns 0 or CS_ENOTFOUND. */
int store_lookup(cs_store *s, const uint8_t key[CS_KEY_MAX], struct idx_val *v);

/* store_put() after the hash: puts data (len bytes, borrowed for the call) whose digest under
 * hash (CS_DIGEST_MAX bytes, borrowed) the caller computed, e.g. on another thread, and sets
 * *out to its CIDv1. The digest is trusted: a wrong one stores the bytes under a wrong CID.
 * Everything else (checks, presence, append, index) is as in store_put(). Thread-safe. */
int store_put_hashed(cs_store *s, const uint8_t *digest, const void *data, size_t len,
		     uint64_t codec, uint64_t hash, int wait, cs_cid *out);

/* A walk of a table (s->idx or s->pins) in pieces: store_piece_next() copies the next
 * STORE_PIECE entries out under the read lock, so that the caller works on them, and takes
 * other locks, holding none of the store's. Entries put or deleted between two pieces may or
 * may not be seen; none is seen twice. */
#define STORE_PIECE 256
struct store_piece {
	uint8_t keys[STORE_PIECE][CS_KEY_MAX];
	struct idx_val vals[STORE_PIECE];
	int n;                    /* entries in this piece */
	int state;                /* 0 before the first piece, 1 within, 2 at the end */
	uint8_t last[CS_KEY_MAX]; /* the last key copied so far */
};
void store_piece_begin(struct store_piece *p);
/* Copies the next piece of t into p; returns p->n, 0 at the end of the table. */
int store_piece_next(cs_store *s, const struct idx *t, struct store_piece *p);
/* Keeps the first n (1 <= n <= p->n) entries of the piece p holds; the next piece starts
 * after them. */
void store_piece_cut(struct store_piece *p, int n);

/* Reads the block at v (v->len bytes) into buf and checks that its record names key.
 * Errors: CS_ECORRUPT (message names the place), -errno. */
int store_read_block(cs_store *s, const uint8_t key[CS_KEY_MAX], const struct idx_val *v,
		     void *buf);

/* One block for store_get_many(): its CID (borrowed), and the buffer its bytes go to (owned
 * by the caller), which must be exactly the block's length: the length its reader expects. */
struct store_get {
	const cs_cid *cid;
	void *buf;
	size_t len;
};

#define STORE_GET_MAX 32 /* blocks of one store_get_many() call */

/* Reads the n blocks of g (n at most STORE_GET_MAX) as cs_block_get() calls in order would,
 * with their lookups under one lock and blocks that lie back to back in the log read with
 * one system call (wal_read_many), each checked as cs_block_get() checks it. Stops at the
 * first block that fails: returns 0 with *done = n, or that block's error with *done its
 * index and the blocks before it read and checked. Errors: CS_ENOTFOUND and CS_EBUFSIZE
 * (the block is not g[*done].len bytes: *len its length) without a message, for the caller
 * to word; CS_EINVAL (a CID), CS_ECORRUPT (the message names the place), -errno.
 * Thread-safe, and it never waits for a write or a sync. */
int store_get_many(cs_store *s, const struct store_get *g, int n, int *done, size_t *len);

/* Replay of the pin records (pin.c), called by store.c's apply callback. With before not
 * NULL, r is a carried REC_PIN_DEL whose original lay at *before: it removes a pin only if
 * the pin's record lies before that (C3 of compact.c). */
int pin_apply(cs_store *s, const struct rec_view *r, const struct wal_pos *before);

/* The live bytes (C1) the record of pin (key, v) takes. */
int64_t pin_bytes(const uint8_t key[CS_KEY_MAX], const struct idx_val *v);

/* A DAG walk that admits each block once (its own set) and shades it for a running
 * collection (E2 of gc.c): what a pin add or a name set walks. */
struct gc_walk {
	cs_store *s;
	struct keyset seen; /* the blocks admitted; freed by the caller */
};

/* A pin add in the making, from its checks to its table update, all under life_mu (P1 of
 * pin.c). pin_add_prepare() checks kind, root, table and limit, walks and shades the DAG
 * (strictly: every block present, every dag-pb node decoding), reserves the table's nodes
 * and builds the record p->rec, whose parts borrow p and root until pin_add_done(). With
 * p->needed 0 the root is pinned so already and there is nothing to append. Otherwise the
 * caller appends p->rec, alone or within a transaction, and then calls pin_add_apply() with
 * the record's position under the write lock: it updates the table, pins_recursive and the
 * cover map, and cannot fail. pin_add_done() frees p's walk on every path. Errors of prepare:
 * those of cs_pin_add() but CS_EPOISONED, CS_EFULL. */
struct pin_add {
	uint8_t key[CS_KEY_MAX];
	int kind;
	int had;            /* the root was pinned (directly, since this is no no-op) */
	int needed;         /* a record to append */
	struct idx_val old; /* the pin it replaces, if had */
	struct idx_val val; /* the table's new value; the position is filled by apply */
	struct gc_walk c;   /* the DAG's blocks, for the cover map */
	uint8_t meta[REC_PIN_META];
	struct iovec parts[2];
	struct wal_rec rec;
};
int pin_add_prepare(cs_store *s, const cs_cid *root, int kind, struct pin_add *p);
void pin_add_apply(cs_store *s, struct pin_add *p, struct wal_pos pos);
void pin_add_done(struct pin_add *p);

/* Is key held by a pin? Returns 0 when not, or CS_EPINNED with a message naming a pin that
 * holds it (the CID text of cid for the message). Called with life_mu held. Errors also
 * -ENOMEM, and the DAG walk's when the cover map is built. */
int pin_check_held(cs_store *s, const uint8_t key[CS_KEY_MAX], const cs_cid *cid);

/* Initializes the mark set's parts (empty) at open, as the store's other mutexes are; destroys
 * them, freeing what they hold, at close, when no collection runs. */
void gc_marks_init(cs_store *s);
void gc_marks_destroy(cs_store *s);

/* GC's barrier (gc.c, E2): while a collection runs, marks key so that the sweep keeps it.
 * Call before checking that the block is present. Cheap (one atomic load) when no GC runs.
 * Errors: -ENOMEM (the caller must fail its operation). */
int gc_shade(cs_store *s, const uint8_t key[CS_KEY_MAX]);

int gc_walk_shading(cs_store *s, const cs_cid *root, unsigned flags, struct gc_walk *w);

/* Checks that the whole DAG under root is present, shading it for a running collection, and
 * returns with mu locked, such that every block of the DAG is present and either no
 * collection is active or the active one has the DAG shaded (E2, E4 of gc.c). mu is a lock
 * that collection activation takes (name_mu), held by the caller until its root is in its
 * table. The DAG is walked without mu, then its blocks are looked up again with mu held.
 * On error mu is not held. Errors: CS_ENOTFOUND (names the first missing block), -ENOMEM,
 * read errors of the walk. */
int gc_shade_dag_locked(cs_store *s, const cs_cid *root, pthread_mutex_t *mu);
/* For tests: when set, called by gc_shade_dag_locked() between its walk and its lock, with
 * no lock held, so a test can run a whole collection in that window. */
extern void (*gc_test_before_lock)(cs_store *s);

/* An add in flight (gc.c, E1): blocks it writes from store_hold_begin() on are never swept
 * by a collection that begins before store_hold_end(), although nothing roots them yet.
 * Blocks it finds present (deduplicated) are protected only while a collection shades. */
struct store_hold {
	struct store_hold *prev, *next; /* in s->holds, under mark_mu */
	struct wal_pos from;
};
void store_hold_begin(cs_store *s, struct store_hold *h);
void store_hold_end(cs_store *s, struct store_hold *h);

/* Called by cs_store_close() before it tears down: stops a running cs_gc and waits. */
void gc_stop(cs_store *s);

/* Takes the right to run alone (gc_running) for a cs_gc or cs_compact, and gives it back.
 * Errors: CS_EBUSY (one runs), CS_ECLOSED (the store is closing). */
int gc_exclusive_begin(cs_store *s);
void gc_exclusive_end(cs_store *s);

int64_t store_realtime_ns(void);

/* A point where a background loop (GC's mark, sweep and repack, compaction, a checkpoint's
 * copy) gives up the rest of its time slice, at every `every`-th call counted in *n (owned
 * by the loop). Called with no lock held that a put needs: the scheduler then takes the core
 * from the loop here, between its steps, rather than at the end of a slice, which may fall
 * while it holds s->lock or a part of the mark set, and a put waits until the loop runs
 * again (tens of milliseconds on a loaded machine). Nearly free when no thread waits for
 * the core. */
void store_pace(unsigned *n, unsigned every);

/* The write lock of s->lock for a caller's own operation (a put, a delete, a name or pin
 * change) and for one step of background work (GC's sweep and repack, compaction's
 * moves): S10 of store.c. Either is released with pthread_rwlock_unlock(). */
void store_wrlock(cs_store *s);
void store_wrlock_bg(cs_store *s);
/* Tests: the longest a background step defers to a waiting writer (S10), in ns. */
extern uint64_t store_bg_yield_ns;

struct io;
/* For tests: when set, cs_store_open() takes its I/O backend from this factory instead of
 * choosing one (the fault-injecting backend of the reliability tests). Set it before any
 * open; not for production use. */
extern int (*store_io_factory)(struct io **out);
/* Tests: nonzero makes every store opened afterwards create each log segment on demand,
 * never ahead of need (wal_config.no_spare). */
extern int store_wal_no_spare;

#endif
