/*
 * store.c - the store: open/close, put, get, has, delete, sync, stat, list, verify, names.
 *
 * The store ties the subsystems together: dir.c holds the directory lock, recovery/ replays
 * the log into the index and the name table at open, wal/ appends and syncs, index/ maps
 * multihash to place, names.c maps names to roots.
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
 */
#include <errno.h>
#include <pthread.h>
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


static void logf_(const cs_options *o, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(const cs_options *o, int level, const char *fmt, ...)
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
	if (!(o->compact_threshold >= 0 && o->compact_threshold <= 1))
		return cs_fail(CS_EINVAL, "compact_threshold %g is outside 0..1",
		               o->compact_threshold);
	if (o->flags & ~(unsigned)(CS_OPEN_CREATE | CS_OPEN_SALVAGE))
		return cs_fail(CS_EINVAL, "unknown open flags 0x%x", o->flags);
	return 0;
}

int (*store_io_factory)(struct io **out);

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
	logf_(o, CS_LOG_INFO, "io_uring unavailable (%s); using psync", strerror(-rc));
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
	s->live_bytes -= old.len;
	store_live_add(s, old.seg, -store_block_bytes(old.len));
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
	keyset_free(&s->marks);
	names_destroy(s->names);
	free(s->live);
	rec_drops_free(&s->drops);
	rec_drops_free(&s->rec.drops);
	dir_close(&s->dir);
	pthread_cond_destroy(&s->gc_cv);
	pthread_mutex_destroy(&s->mark_mu);
	pthread_mutex_destroy(&s->life_mu);
	pthread_mutex_destroy(&s->name_mu);
	pthread_rwlock_destroy(&s->lock);
	free(s);
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
	pthread_rwlock_init(&s->lock, NULL);
	pthread_mutex_init(&s->name_mu, NULL);
	pthread_mutex_init(&s->life_mu, NULL);
	pthread_mutex_init(&s->mark_mu, NULL);
	pthread_cond_init(&s->gc_cv, NULL);
	rc = dir_open(dir, (s->opts.flags & CS_OPEN_CREATE) != 0, &s->dir);
	if (rc != 0)
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
	if ((rc = rec_replay(&ro, &s->rec)) != 0)
		goto fail;
	CS_DASSERT(names_check_tree(s->names) == 0);
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
	};
	io = NULL; /* the WAL owns it from here, even on failure */
	rc = wal_open(&s->wal, &wc);
	free(s->rec.segs); /* the fds now belong to the WAL */
	s->rec.segs = NULL;
	s->rec.nsegs = 0;
	if (rc != 0)
		goto fail;
	s->open_seconds = now_seconds() - t0;
	if (s->rec.torn_bytes || s->rec.salvaged_records || s->rec.salvaged_bytes)
		logf_(&s->opts, CS_LOG_WARN,
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
	gc_stop(s); /* a cs_gc on another thread returns CS_ECLOSED first */
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

	rec_block_meta(meta, (uint16_t)hash, (uint8_t)dlen, (uint32_t)codec);
	struct iovec parts[3] = {
	    {meta, sizeof(meta)},
	    {(void *)digest, dlen},
	    {(void *)data, len},
	};
	struct wal_rec rec = {.type = REC_BLOCK, .parts = parts, .nparts = 3};
	struct wal_pos pos;
	uint64_t seq;
	if ((rc = wal_append(s->wal, &rec, 1, &pos, &seq)) != 0)
		return rc;
	v = (struct idx_val){pos.seg, pos.off, (uint32_t)len, (uint32_t)codec};
	struct idx_val old;
	pthread_rwlock_wrlock(&s->lock);
	rc = idx_put(s->idx, key, &v, &old); /* S2: appended first */
	if (rc == 0)
		s->live_bytes += len;
	block_live_put(s, rc, &old, &v); /* 1: a racing put of the same block came first */
	pthread_rwlock_unlock(&s->lock);
	if (rc < 0)
		return rc;
	return wait ? wal_wait(s->wal, seq) : 0;
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
	uint16_t hash = (uint16_t)(key[0] << 8 | key[1]);
	if (h.type != REC_BLOCK || meta[0] != (uint8_t)hash || meta[1] != (uint8_t)(hash >> 8) ||
	    memcmp(digest, key + 2, CS_DIGEST_MAX) != 0)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x offset %u: index points at a record "
		               "of another block",
		               v->seg, v->off);
	return 0;
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
	if ((rc = wal_append(s->wal, &rec, 1, NULL, &seq)) != 0)
		goto out;
	pthread_rwlock_wrlock(&s->lock);
	block_remove(s, key, NULL); /* present: a racing GC sweep holds life_mu too */
	pthread_rwlock_unlock(&s->lock);
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
	out->garbage_bytes = ws.log_bytes - ws.segments * CS_SEG_HEADER > out->live_bytes
	                         ? ws.log_bytes - ws.segments * CS_SEG_HEADER - out->live_bytes
	                         : 0;
	return 0;
}

/* Walks the index in pieces of LIST_STEP entries, holding the read lock only while it
 * copies a piece out, so writers are never blocked for the length of a walk. */
#define LIST_STEP 256

struct list_piece {
	uint8_t keys[LIST_STEP][CS_KEY_MAX];
	struct idx_val vals[LIST_STEP];
	int n;
};

static int next_piece(cs_store *s, const uint8_t *after, struct list_piece *p)
{
	p->n = 0;
	pthread_rwlock_rdlock(&s->lock);
	while (p->n < LIST_STEP && idx_next(s->idx, after, p->keys[p->n], &p->vals[p->n]) == 0) {
		after = p->keys[p->n];
		p->n++;
	}
	pthread_rwlock_unlock(&s->lock);
	return p->n;
}

/* Calls fn(ctx, key, val) for every live block, in key order. */
static int walk_blocks(cs_store *s,
                       int (*fn)(void *ctx, const uint8_t *key, const struct idx_val *v), void *ctx)
{
	struct list_piece *p = malloc(sizeof(*p));
	uint8_t last[CS_KEY_MAX];
	const uint8_t *after = NULL;
	int rc = 0;

	if (p == NULL)
		return -ENOMEM;
	while (rc == 0 && next_piece(s, after, p) > 0) {
		for (int i = 0; i < p->n && rc == 0; i++)
			rc = fn(ctx, p->keys[i], &p->vals[i]);
		memcpy(last, p->keys[p->n - 1], CS_KEY_MAX);
		after = last;
	}
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

int64_t store_realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

CS_API int cs_name_set(cs_store *s, const char *name, const cs_cid *root, uint64_t size)
{
	uint8_t meta[REC_NAME_SET_META], key[CS_KEY_MAX];
	struct name_node *node = NULL;
	struct idx_val iv;
	struct name_val v;
	size_t len;
	uint64_t seq = 0;
	int rc;

	cs_clear_error();
	if ((rc = check_name(name, &len)) != 0)
		return rc;
	if (root == NULL)
		return cs_fail(CS_EINVAL, "no root CID given");
	if (root->len > CS_CID_MAX || cs_cid_from_bytes(root->bytes, root->len, &v.root) != 0)
		return cs_fail(CS_EINVAL, "the root is not a valid binary CID");
	if ((rc = names_node_new((const uint8_t *)name, len, &node)) != 0) /* S6 */
		return rc;
	v.size = size;

	/* The root first, for the plainer message; then, with name_mu held on return, the whole
	 * DAG, shaded for a running GC (E2, E4). */
	if (cid_key(&v.root, key) != 0 || store_lookup(s, key, &iv) != 0) {
		char text[CS_CID_TEXT_MAX];
		if (cs_cid_format(&v.root, text, sizeof(text)) < 0)
			snprintf(text, sizeof(text), "(unprintable)");
		names_node_free(node);
		return cs_fail(CS_ENOTFOUND, "root %s is not in the store", text);
	}
	if ((rc = gc_shade_dag_locked(s, &v.root, &s->name_mu)) != 0) {
		names_node_free(node);
		return rc;
	}
	/* cs_block_has() semantics: a hash the store never holds is simply absent. Checked
	 * after the shade, so a sweep cannot take the root between check and append. */
	rc = cid_key(&v.root, key);
	if (rc == 0)
		rc = store_lookup(s, key, &iv);
	if (rc == CS_ENOTFOUND) {
		char text[CS_CID_TEXT_MAX];
		if (cs_cid_format(&v.root, text, sizeof(text)) < 0)
			snprintf(text, sizeof(text), "(unprintable)");
		rc = cs_fail(CS_ENOTFOUND, "root %s is not in the store", text);
	}
	/* Only name_mu holders change the table, so reading it here needs no rwlock. The time
	 * is taken under name_mu so that times grow in log order (unless the clock steps). */
	if (rc != 0) {
		/* the root is absent */
	} else if (names_count(s->names) >= CS_NAMES_MAX &&
	    names_get(s->names, (const uint8_t *)name, len, NULL) != 0) {
		rc = cs_fail(CS_ELIMIT, "the store holds %u names, the most it can", CS_NAMES_MAX);
	} else {
		v.time_ns = store_realtime_ns();
		rec_name_set_meta(meta, (uint16_t)len, v.root.len, size, v.time_ns);
		struct iovec parts[3] = {
		    {meta, sizeof(meta)},
		    {(void *)name, len},
		    {v.root.bytes, v.root.len},
		};
		struct wal_rec rec = {.type = REC_NAME_SET, .parts = parts, .nparts = 3};
		struct wal_pos pos;
		rc = wal_append(s->wal, &rec, 1, &pos, &seq);
		if (rc == 0) {
			v.seg = pos.seg;
			v.off = pos.off;
		}
	}
	if (rc == 0) {
		pthread_rwlock_wrlock(&s->lock);
		name_live_set(s, (const uint8_t *)name, len, &v);
		names_put(s->names, node, &v); /* S2, S5: appended first; cannot fail (S6) */
		pthread_rwlock_unlock(&s->lock);
		node = NULL;
	}
	pthread_mutex_unlock(&s->name_mu);
	names_node_free(node);
	if (rc != 0)
		return rc;
	return wal_wait(s->wal, seq);
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
	if (names_get(s->names, (const uint8_t *)name, len, NULL) != 0)
		rc = cs_fail(CS_ENOTFOUND, "name '%s' is not set", name);
	else
		rc = wal_append(s->wal, &rec, 1, NULL, &seq);
	if (rc == 0) {
		pthread_rwlock_wrlock(&s->lock);
		name_remove(s, (const uint8_t *)name, len, NULL); /* S2: appended first */
		pthread_rwlock_unlock(&s->lock);
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
