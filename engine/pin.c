/*
 * pin.c - pins: add, remove, list, test, replay, and the cover map that answers "is this
 * block held by a pin?" for cs_block_delete.
 *
 * The pin table is a B+tree (index/btree.c) keyed by multihash like the block index; each
 * value holds the pin record's log position (seg, off), the kind and CID version (len:
 * kind | version << 8) and the root's codec (codec), so the CID given is listed back.
 *
 * The cover map counts, for every block, the pins whose DAG holds it (a direct pin holds
 * its root only). It is built on first need, by walking every pin, and is then kept up to
 * date by pin add and remove: a store that never deletes a block never pays for it, and
 * open never walks a DAG.
 *
 * Invariants:
 *   P1. Pin mutations hold life_mu from their table check through the log append to the
 *       table update, so table order equals log order (as S5 of store.c for names), and no
 *       block delete or GC sweep step runs between a pin's DAG check and its append: a
 *       recursive pin, once added, has its whole DAG present. The table update after the
 *       append cannot fail: its nodes are reserved before (pin_add_prepare).
 *   P2. When cover_ok, cover[k] = the number of pins p such that k is in p's DAG (p's root
 *       for a direct pin), counting each pin once per block however many paths lead there.
 *       Any failure to keep P2 (out of memory, a read error while walking) drops the map
 *       (cover_ok = 0), and the next need rebuilds it: never a wrong answer.
 *   P3. pins_recursive counts the recursive entries of the table.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "btree.h"
#include "cid.h"
#include "dag.h"
#include "err.h"
#include "record.h"
#include "store.h"

static uint32_t pin_len(int kind, int version)
{
	return (uint32_t)kind | (uint32_t)version << 8;
}

static int pin_kind(const struct idx_val *v)
{
	return (int)(v->len & 0xff);
}

/* The CID a pin was added with. */
static int pin_cid(const uint8_t key[CS_KEY_MAX], const struct idx_val *v, cs_cid *out)
{
	if ((v->len >> 8) == 0)
		return cid_make(0, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, key + 2, CS_DIGEST_MAX, out);
	return cid_from_key(key, v->codec, out);
}

int64_t pin_bytes(const uint8_t key[CS_KEY_MAX], const struct idx_val *v)
{
	cs_cid cid;
	CS_ASSERT(pin_cid(key, v, &cid) == 0); /* the table holds valid pins only */
	return store_pin_bytes(cid.len);
}

static const char *cid_text(const cs_cid *cid, char buf[CS_CID_TEXT_MAX])
{
	if (cs_cid_format(cid, buf, CS_CID_TEXT_MAX) < 0)
		strcpy(buf, "(unprintable CID)");
	return buf;
}

/* The checks every pin function makes of a caller's CID; sets the key and the parts. */
static int check_root(const cs_cid *root, uint8_t key[CS_KEY_MAX], cs_cid_info *info)
{
	cs_cid copy;
	char text[CS_CID_TEXT_MAX];

	if (root == NULL)
		return cs_fail(CS_EINVAL, "no CID given");
	if (root->len > CS_CID_MAX || cs_cid_from_bytes(root->bytes, root->len, &copy) != 0 ||
	    cs_cid_inspect(&copy, info) != 0)
		return cs_fail(CS_EINVAL, "not a valid binary CID");
	int rc = cid_key(root, key);
	if (rc == CS_ENOTFOUND)
		return cs_fail(CS_ENOTFOUND,
		               "block %s is not in the store (its hash is one the "
		               "store never holds)",
		               cid_text(root, text));
	return rc;
}

/* ---- The walk's visited sets ------------------------------------------------------------ */

/* Walks the DAG of pin (key, kind) into c->seen. A direct pin holds its root only. */
static int pin_walk(cs_store *s, const cs_cid *root, int kind, unsigned flags, struct gc_walk *c)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;
	char text[CS_CID_TEXT_MAX];
	int rc;

	if (kind == CS_PIN_RECURSIVE)
		return gc_walk_shading(s, root, flags, c);
	rc = cid_key(root, key); /* CS_ENOTFOUND: a hash the store never holds */
	if (rc == 0) {
		if (keyset_add(&c->seen, key, 1) < 0)
			return cs_fail(-ENOMEM, "out of memory for a pin's visited set");
		if ((rc = gc_shade(s, key)) == 0)
			rc = store_lookup(s, key, &v);
	}
	if (rc == CS_ENOTFOUND && !(flags & DAG_MISSING_OK))
		return cs_fail(CS_ENOTFOUND, "block %s is not in the store", cid_text(root, text));
	return rc == CS_ENOTFOUND ? 0 : rc;
}

/* ---- The cover map (P2) ---------------------------------------------------------------- */

static void cover_drop(cs_store *s)
{
	store_wrlock(s);
	keyset_free(&s->cover);
	s->cover_ok = 0;
	pthread_rwlock_unlock(&s->lock);
}

/* Adds (delta 1) or removes (delta -1) one pin's blocks to the cover map; drops the map on
 * failure (P2) and returns -ENOMEM. Called with life_mu and the write lock held. */
static int cover_apply_locked(cs_store *s, struct keyset *blocks, int delta)
{
	int ok = 1;

	for (size_t i = 0; ok && i < blocks->cap; i++) {
		if (blocks->count[i] == 0)
			continue;
		const uint8_t *k = blocks->keys + i * CS_KEY_MAX;
		if (delta > 0)
			ok = keyset_add(&s->cover, k, 1) >= 0;
		else
			ok = keyset_dec(&s->cover, k) >= 0;
	}
	if (!ok) {
		keyset_free(&s->cover);
		s->cover_ok = 0;
	}
	return ok ? 0 : cs_fail(-ENOMEM, "out of memory for the pins' cover map");
}

/* cover_apply_locked() taking the write lock. Called with life_mu held. */
static int cover_apply(cs_store *s, struct keyset *blocks, int delta)
{
	store_wrlock(s);
	int rc = cover_apply_locked(s, blocks, delta);
	pthread_rwlock_unlock(&s->lock);
	return rc;
}

/* Builds the cover map from every pin. Called with life_mu held. */
static int cover_build(cs_store *s)
{
	struct store_piece *p;
	int rc = 0;

	if (s->cover_ok)
		return 0;
	if ((p = malloc(sizeof(*p))) == NULL)
		return cs_fail(-ENOMEM, "out of memory for the pins' cover map");
	store_piece_begin(p);
	while (rc == 0 && store_piece_next(s, s->pins, p) > 0) {
		for (int i = 0; i < p->n && rc == 0; i++) {
			struct gc_walk c = {s, KEYSET_INIT};
			cs_cid root;
			if ((rc = pin_cid(p->keys[i], &p->vals[i], &root)) == 0)
				rc = pin_walk(s, &root, pin_kind(&p->vals[i]),
				              DAG_MISSING_OK | DAG_LENIENT, &c);
			if (rc == 0)
				rc = cover_apply(s, &c.seen, 1);
			keyset_free(&c.seen);
		}
	}
	free(p);
	if (rc != 0) {
		cover_drop(s);
		return rc;
	}
	s->cover_ok = 1;
	return 0;
}

/* Finds a recursive pin whose DAG holds key, for a message. Called with life_mu held. */
static int find_holder(cs_store *s, const uint8_t target[CS_KEY_MAX], cs_cid *via)
{
	struct store_piece *p;
	int rc = CS_ENOTFOUND;

	if ((p = malloc(sizeof(*p))) == NULL)
		return cs_fail(-ENOMEM, "out of memory for a walk of the pins");
	store_piece_begin(p);
	while (rc == CS_ENOTFOUND && store_piece_next(s, s->pins, p) > 0) {
		for (int i = 0; i < p->n && rc == CS_ENOTFOUND; i++) {
			if (pin_kind(&p->vals[i]) != CS_PIN_RECURSIVE)
				continue;
			struct gc_walk c = {s, KEYSET_INIT};
			int r = pin_cid(p->keys[i], &p->vals[i], via);
			if (r == 0)
				r = pin_walk(s, via, CS_PIN_RECURSIVE, DAG_MISSING_OK | DAG_LENIENT,
				             &c);
			if (r != 0)
				rc = r;
			else if (keyset_get(&c.seen, target) > 0)
				rc = 0;
			keyset_free(&c.seen);
		}
	}
	free(p);
	return rc;
}

/* How key is held: CS_PIN_DIRECT / CS_PIN_RECURSIVE / CS_PIN_INDIRECT (with *via), or
 * CS_ENOTFOUND. Called with life_mu held. */
static int held_by(cs_store *s, const uint8_t key[CS_KEY_MAX], cs_cid *via)
{
	struct idx_val v;

	pthread_rwlock_rdlock(&s->lock);
	int rc = idx_get(s->pins, key, &v);
	pthread_rwlock_unlock(&s->lock);
	if (rc == 0) {
		if (via != NULL && (rc = pin_cid(key, &v, via)) != 0)
			return rc;
		return pin_kind(&v);
	}
	if ((rc = cover_build(s)) != 0)
		return rc;
	pthread_rwlock_rdlock(&s->lock);
	uint32_t n = keyset_get(&s->cover, key);
	pthread_rwlock_unlock(&s->lock);
	if (n == 0)
		return CS_ENOTFOUND;
	cs_cid holder;
	if ((rc = find_holder(s, key, &holder)) != 0)
		return rc == CS_ENOTFOUND ? cs_fail(CS_ECORRUPT, "the pins' cover map holds a "
		                                                 "block no pin reaches")
		                          : rc;
	if (via != NULL)
		*via = holder;
	return CS_PIN_INDIRECT;
}

int pin_check_held(cs_store *s, const uint8_t key[CS_KEY_MAX], const cs_cid *cid)
{
	char text[CS_CID_TEXT_MAX], vtext[CS_CID_TEXT_MAX];
	cs_cid via;

	int kind = held_by(s, key, &via);
	if (kind == CS_ENOTFOUND)
		return 0;
	if (kind < 0)
		return kind;
	if (kind == CS_PIN_INDIRECT)
		return cs_fail(CS_EPINNED, "block %s is held by the recursive pin on %s",
		               cid_text(cid, text), cid_text(&via, vtext));
	return cs_fail(CS_EPINNED, "block %s is pinned (%s)", cid_text(cid, text),
	               kind == CS_PIN_DIRECT ? "direct" : "recursive");
}

/* ---- Public functions ------------------------------------------------------------------ */

/* Appends a pin record; for REC_PIN_DEL kind is 0. */
static int append_pin(cs_store *s, uint8_t type, uint8_t kind, const cs_cid *root,
                      struct wal_pos *pos, uint64_t *seq)
{
	uint8_t meta[REC_PIN_META];
	rec_pin_meta(meta, kind, root->len);
	struct iovec parts[2] = {{meta, sizeof(meta)}, {(void *)root->bytes, root->len}};
	struct wal_rec rec = {.type = type, .parts = parts, .nparts = 2};
	return wal_append(s->wal, &rec, 1, pos, seq);
}

/* Everything appended so far durable, as the durability mode says (a no-op pin add). */
static int wait_appended(cs_store *s)
{
	struct wal_stat ws;
	wal_stat(s->wal, &ws);
	return ws.next_seq > 1 ? wal_wait(s->wal, ws.next_seq - 1) : 0;
}

int pin_add_prepare(cs_store *s, const cs_cid *root, int kind, struct pin_add *p)
{
	cs_cid_info info;
	int rc;

	*p = (struct pin_add){.kind = kind, .c = {s, KEYSET_INIT}};
	if (kind != CS_PIN_DIRECT && kind != CS_PIN_RECURSIVE)
		return cs_fail(CS_EINVAL, "pin kind %d is neither direct (%d) nor recursive (%d)",
		               kind, CS_PIN_DIRECT, CS_PIN_RECURSIVE);
	if ((rc = check_root(root, p->key, &info)) != 0)
		return rc;
	pthread_rwlock_rdlock(&s->lock);
	p->had = idx_get(s->pins, p->key, &p->old) == 0;
	uint64_t npins = idx_count(s->pins);
	pthread_rwlock_unlock(&s->lock);
	if (p->had && (pin_kind(&p->old) == kind || pin_kind(&p->old) == CS_PIN_RECURSIVE)) {
		if (pin_kind(&p->old) != kind) {
			char text[CS_CID_TEXT_MAX];
			return cs_fail(CS_EINVAL,
			               "%s is pinned recursively; remove that pin before pinning "
			               "it directly",
			               cid_text(root, text));
		}
		return 0; /* pinned so already: nothing to append */
	}
	if (!p->had && npins >= CS_PINS_MAX)
		return cs_fail(CS_ELIMIT, "the store holds %u pins, the most it can", CS_PINS_MAX);
	if ((rc = pin_walk(s, root, kind, 0, &p->c)) != 0)
		return rc;
	/* The table update after the append must not fail (P1): reserve its nodes now. Only
	 * life_mu holders change the pin table, so the reservation is still there then. */
	store_wrlock(s);
	rc = idx_reserve(s->pins);
	pthread_rwlock_unlock(&s->lock);
	if (rc != 0)
		return cs_fail(rc, "out of memory for the pin table");
	p->needed = 1;
	p->val = (struct idx_val){0, 0, pin_len(kind, info.version), (uint32_t)info.codec};
	rec_pin_meta(p->meta, (uint8_t)kind, root->len);
	p->parts[0] = (struct iovec){p->meta, sizeof(p->meta)};
	p->parts[1] = (struct iovec){(void *)root->bytes, root->len};
	p->rec = (struct wal_rec){.type = REC_PIN_ADD, .parts = p->parts, .nparts = 2};
	return 0;
}

void pin_add_apply(cs_store *s, struct pin_add *p, struct wal_pos pos)
{
	CS_ASSERT(p->needed);
	p->val.seg = pos.seg;
	p->val.off = pos.off;
	CS_ASSERT(idx_put(s->pins, p->key, &p->val, NULL) >= 0); /* reserved by prepare */
	s->pins_recursive += p->kind == CS_PIN_RECURSIVE;
	s->pins_recursive -= p->had && pin_kind(&p->old) == CS_PIN_RECURSIVE; /* P3 */
	if (p->had)
		store_live_add(s, p->old.seg, -pin_bytes(p->key, &p->old));
	store_live_add(s, p->val.seg, pin_bytes(p->key, &p->val));
	if (s->cover_ok) {
		/* An upgrade from direct: the root was counted once already. */
		if (p->had)
			(void)keyset_dec(&p->c.seen, p->key);
		(void)cover_apply_locked(s, &p->c.seen, 1); /* on failure the map is dropped (P2) */
	}
}

void pin_add_done(struct pin_add *p)
{
	keyset_free(&p->c.seen);
}

CS_API int cs_pin_add(cs_store *s, const cs_cid *root, int kind)
{
	struct pin_add p;
	struct wal_pos pos;
	uint64_t seq = 0;
	int rc;

	cs_clear_error();
	pthread_mutex_lock(&s->life_mu); /* P1 */
	rc = pin_add_prepare(s, root, kind, &p);
	if (rc == 0 && p.needed) {
		ckpt_enter(s);
		if ((rc = wal_append(s->wal, &p.rec, 1, &pos, &seq)) == 0) {
			store_wrlock(s);
			pin_add_apply(s, &p, pos); /* S2: appended first */
			pthread_rwlock_unlock(&s->lock);
		}
		ckpt_leave(s);
	}
	pthread_mutex_unlock(&s->life_mu);
	pin_add_done(&p);
	if (rc != 0)
		return rc;
	/* Pinned already: its record may still be on its way to disk. */
	return p.needed ? wal_wait(s->wal, seq) : wait_appended(s);
}

CS_API int cs_pin_rm(cs_store *s, const cs_cid *root)
{
	uint8_t key[CS_KEY_MAX];
	struct idx_val v;
	cs_cid_info info;
	uint64_t seq = 0;
	char text[CS_CID_TEXT_MAX];
	int rc;

	cs_clear_error();
	if ((rc = check_root(root, key, &info)) != 0)
		return rc == CS_ENOTFOUND
		           ? cs_fail(CS_ENOTFOUND, "%s is not pinned", cid_text(root, text))
		           : rc;
	pthread_mutex_lock(&s->life_mu); /* P1 */
	pthread_rwlock_rdlock(&s->lock);
	rc = idx_get(s->pins, key, &v);
	pthread_rwlock_unlock(&s->lock);
	if (rc != 0) {
		rc = cs_fail(CS_ENOTFOUND, "%s is not pinned", cid_text(root, text));
		goto out;
	}
	cs_cid pinned;
	if ((rc = pin_cid(key, &v, &pinned)) != 0)
		goto out;
	ckpt_enter(s);
	if ((rc = append_pin(s, REC_PIN_DEL, 0, &pinned, NULL, &seq)) != 0) {
		ckpt_leave(s);
		goto out;
	}
	store_wrlock(s);
	CS_ASSERT(idx_del(s->pins, key, NULL) == 0); /* present under life_mu */
	s->pins_recursive -= pin_kind(&v) == CS_PIN_RECURSIVE;
	store_live_add(s, v.seg, -pin_bytes(key, &v));
	pthread_rwlock_unlock(&s->lock);
	ckpt_leave(s);
	if (s->cover_ok) {
		struct gc_walk c = {s, KEYSET_INIT};
		if (pin_walk(s, &pinned, pin_kind(&v), DAG_MISSING_OK | DAG_LENIENT, &c) == 0)
			(void)cover_apply(s, &c.seen, -1); /* dropped on failure (P2) */
		else
			cover_drop(s); /* P2: rebuilt on next need */
		keyset_free(&c.seen);
	}
out:
	pthread_mutex_unlock(&s->life_mu);
	if (rc != 0)
		return rc;
	return wal_wait(s->wal, seq);
}

/* Pins are listed in pieces copied out under the read lock, as blocks are. */
CS_API int cs_pin_list(cs_store *s, int (*fn)(void *ctx, const cs_cid *cid, int kind), void *ctx)
{
	struct store_piece *p;
	int rc = 0;

	cs_clear_error();
	if (fn == NULL)
		return cs_fail(CS_EINVAL, "no callback given");
	if ((p = malloc(sizeof(*p))) == NULL)
		return cs_fail(-ENOMEM, "out of memory for a piece of the pins");
	store_piece_begin(p);
	while (rc == 0 && store_piece_next(s, s->pins, p) > 0) {
		for (int i = 0; i < p->n && rc == 0; i++) {
			cs_cid cid;
			if ((rc = pin_cid(p->keys[i], &p->vals[i], &cid)) == 0)
				rc = fn(ctx, &cid, pin_kind(&p->vals[i]));
		}
	}
	free(p);
	return rc;
}

CS_API int cs_pin_test(cs_store *s, const cs_cid *cid, int *kind, cs_cid *via)
{
	uint8_t key[CS_KEY_MAX];
	cs_cid_info info;
	char text[CS_CID_TEXT_MAX];
	int rc;

	cs_clear_error();
	if ((rc = check_root(cid, key, &info)) != 0)
		return rc == CS_ENOTFOUND
		           ? cs_fail(CS_ENOTFOUND, "%s is not pinned", cid_text(cid, text))
		           : rc;
	pthread_mutex_lock(&s->life_mu);
	rc = held_by(s, key, via);
	pthread_mutex_unlock(&s->life_mu);
	if (rc == CS_ENOTFOUND)
		return cs_fail(CS_ENOTFOUND, "%s is not held by any pin", cid_text(cid, text));
	if (rc < 0)
		return rc;
	if (kind != NULL)
		*kind = rc;
	if (via != NULL && rc != CS_PIN_INDIRECT)
		*via = *cid;
	return 0;
}

/* ---- Replay ---------------------------------------------------------------------------- */

int pin_apply(cs_store *s, const struct rec_view *r, const struct wal_pos *before)
{
	struct rec_pin p;
	uint8_t key[CS_KEY_MAX];
	struct idx_val old;
	cs_cid cid;
	cs_cid_info info;

	if (rec_pin_decode(r->h.type, r->payload, r->h.len, &p) != 0 ||
	    cs_cid_from_bytes(p.cid, p.cid_len, &cid) != 0 || cs_cid_inspect(&cid, &info) != 0 ||
	    cid_key(&cid, key) != 0)
		return cs_fail(CS_ECORRUPT,
		               "segment %08x offset %u: malformed pin record (seq %llu)",
		               r->pos.seg, r->pos.off, (unsigned long long)r->h.seq);
	if (r->h.type == REC_PIN_DEL) {
		/* An absent pin is no error: under salvage its add may be among the records lost.
		 * A carried delete removes only a pin older than its original (C3). */
		if (idx_get(s->pins, key, &old) != 0 ||
		    (before != NULL &&
		     wal_pos_cmp((struct wal_pos){old.seg, old.off}, *before) >= 0))
			return 0;
		CS_ASSERT(idx_del(s->pins, key, NULL) == 0);
		s->pins_recursive -= pin_kind(&old) == CS_PIN_RECURSIVE;
		store_live_add(s, old.seg, -pin_bytes(key, &old));
		return 0;
	}
	struct idx_val v = {r->pos.seg, r->pos.off, pin_len(p.kind, info.version),
	                    (uint32_t)info.codec};
	int rc = idx_put(s->pins, key, &v, &old);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		s->pins_recursive -= pin_kind(&old) == CS_PIN_RECURSIVE;
		store_live_add(s, old.seg, -pin_bytes(key, &old));
	}
	store_live_add(s, v.seg, pin_bytes(key, &v));
	s->pins_recursive += p.kind == CS_PIN_RECURSIVE;
	if (rc == 0 && idx_count(s->pins) > CS_PINS_MAX)
		return cs_fail(CS_ELIMIT, "segment %08x offset %u: the log sets more than %u pins",
		               r->pos.seg, r->pos.off, CS_PINS_MAX);
	return 0;
}
