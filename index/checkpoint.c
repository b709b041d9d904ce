/*
 * checkpoint.c - the checkpoint file's bytes: a streaming writer and a pure decoder.
 *
 * docs/FORMAT.md section 12 is the normative layout. A file is a 96-byte header followed by
 * sections, each a 32-byte header and a payload; the header is written last, at offset 0,
 * once the sections' count and the file's size are known.
 *
 * Invariants:
 *   K1. ckpt_decode() reads only inside the buffer it is given: every length is compared
 *       with the bytes left before it is used, and counts are checked against lengths
 *       before any loop runs over them, so a loop's bound is the buffer's size.
 *   K2. A decoded checkpoint satisfies everything the loader relies on but the entries of
 *       BLOCKS and PINS: each known section appears exactly once, sections and names are
 *       well formed, names strictly increase, BLOCKS is whole leaves after its padding. Block
 *       and pin entries, a million and more, are checked as they are loaded, in one pass: a
 *       leaf's by idx_adopt_part() (header, fill, key order) and ckpt_leaf_check() (each
 *       position inside the log the checkpoint lists, before its end mark, and length), a
 *       pin's by ckpt_entry_get() (or a cursor, the same checks in runs) and idx_load().
 *   K3. The writer never holds more than CKPT_WBUF bytes of the file: sections stream out,
 *       and their headers (count, length, checksum) are written in place once each section
 *       ends. The section checksum therefore covers the payload first, then the header
 *       bytes [0, 24), which a streaming hash can do in that order.
 *   K4. ckpt_decode_lazy() leaves the checksums of BLOCKS and PINS to a cursor, which hashes
 *       each run of entries as it hands the run out, so a million entries are read once
 *       rather than twice. A cursor covers a range of the section and its runs must cover
 *       the range in order. The one whose range starts at entry 0 owns the checksum: its
 *       ckpt_cursor_end() hashes the entries after its range (those other cursors handed
 *       out, on other threads), then the header, and compares. No entry of any cursor is
 *       trusted before that returned 0. BLOCKS, whose leaves the loader uses where they lie
 *       rather than copying them, is hashed whole by ckpt_section_verify() instead, on one
 *       thread while others check the leaves.
 *   K5. BLOCKS is written as the B+tree's leaves (FORMAT.md 12.3), so that the loader can use
 *       them in place: zero padding up to a file offset that is a multiple of IDX_NODE_BYTES,
 *       then leaves of IDX_LEAF_CAP entries but the last two, which share what is left
 *       evenly, so that each holds IDX_LEAF_MIN or more (I4 of btree.c) unless there is only
 *       one. The writer learns the count only at the end (the copy is fuzzy, C2 of ckpt.c),
 *       so it holds back up to two leaves' worth of entries (struct ckpt_pending): a leaf is
 *       written only once more than IDX_LEAF_CAP entries follow it.
 */
#include "checkpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "endian.h"
#include "err.h"

#define CKPT_WBUF (1u << 20)

static const char *const sec_name[CKPT_SEC_KNOWN + 1] = {
    [CKPT_SEC_SEGMENTS] = "segments",
    [CKPT_SEC_BLOCKS] = "blocks",
    [CKPT_SEC_PINS] = "pins",
    [CKPT_SEC_NAMES] = "names",
    [CKPT_SEC_STATS] = "stats",
    [CKPT_SEC_DROPS] = "drops",
};

/* ---- Positions -------------------------------------------------------------------------- */

static int pos_cmp(uint32_t aseg, uint32_t aoff, uint32_t bseg, uint32_t boff)
{
	if (aseg != bseg)
		return aseg < bseg ? -1 : 1;
	return aoff < boff ? -1 : aoff > boff;
}

/* ---- Header ------------------------------------------------------------------------------ */

static void hdr_encode(uint8_t p[CKPT_HEADER], const struct ckpt_hdr *h)
{
	memset(p, 0, CKPT_HEADER);
	memcpy(p, CKPT_MAGIC, 8);
	put_le32(p + 8, CKPT_VERSION);
	put_le32(p + 12, CKPT_HEADER);
	put_le64(p + 16, h->store_uid);
	put_le64(p + 24, (uint64_t)h->created_ns);
	put_le32(p + 32, h->start_seg);
	put_le32(p + 36, h->start_off);
	put_le64(p + 40, h->start_seq);
	put_le32(p + 48, h->end_seg);
	put_le32(p + 52, h->end_off);
	put_le64(p + 56, h->end_seq);
	put_le32(p + 64, h->last_seg);
	put_le32(p + 68, h->last_off);
	put_le64(p + 72, h->last_sum);
	put_le32(p + 80, h->flags);
	put_le32(p + 84, h->nsections);
	/* 88..95: the checksum, over [0, 88) */
	put_le64(p + 88, XXH3_64bits(p, 88));
}

static int corrupt(const char *what)
{
	return cs_fail(CS_ECORRUPT, "checkpoint: %s", what);
}

static int decode_header(const uint8_t *p, size_t len, struct ckpt_hdr *h)
{
	if (len < CKPT_HEADER)
		return cs_fail(CS_ECORRUPT, "checkpoint: file of %zu bytes is shorter than its "
		                            "header",
		               len);
	if (memcmp(p, CKPT_MAGIC, 8) != 0)
		return corrupt("bad magic");
	if (get_le64(p + 88) != XXH3_64bits(p, 88))
		return corrupt("header checksum mismatch");
	uint32_t version = get_le32(p + 8);
	if (version > CKPT_VERSION)
		return cs_fail(CS_EVERSION, "checkpoint: format version %u is newer than %u",
		               version, CKPT_VERSION);
	if (version != CKPT_VERSION)
		return cs_fail(CS_ECORRUPT, "checkpoint: format version %u", version);
	if (get_le32(p + 12) != CKPT_HEADER)
		return corrupt("header size is not 96");
	h->store_uid = get_le64(p + 16);
	h->created_ns = (int64_t)get_le64(p + 24);
	h->start_seg = get_le32(p + 32);
	h->start_off = get_le32(p + 36);
	h->start_seq = get_le64(p + 40);
	h->end_seg = get_le32(p + 48);
	h->end_off = get_le32(p + 52);
	h->end_seq = get_le64(p + 56);
	h->last_seg = get_le32(p + 64);
	h->last_off = get_le32(p + 68);
	h->last_sum = get_le64(p + 72);
	h->flags = get_le32(p + 80);
	h->nsections = get_le32(p + 84);
	h->file_size = len;
	if (h->flags & ~CKPT_F_SALVAGED)
		return cs_fail(CS_ECORRUPT, "checkpoint: unknown flags 0x%x", h->flags);
	if (h->nsections > CKPT_SECTIONS_MAX)
		return cs_fail(CS_ECORRUPT, "checkpoint: %u sections, more than %u", h->nsections,
		               CKPT_SECTIONS_MAX);
	if (h->start_seq < 1 || h->end_seq < h->start_seq || h->start_seg < 1 ||
	    h->start_off < CS_SEG_HEADER || h->end_off < CS_SEG_HEADER ||
	    pos_cmp(h->start_seg, h->start_off, h->end_seg, h->end_off) > 0)
		return corrupt("its start and end marks are out of order");
	if (h->end_seq == 1 ? h->last_seg != 0 || h->last_off != 0 || h->last_sum != 0
	                    : h->last_seg < 1 || h->last_off < CS_SEG_HEADER ||
	                          h->last_off % CS_REC_ALIGN != 0 ||
	                          pos_cmp(h->last_seg, h->last_off, h->end_seg, h->end_off) >= 0)
		return corrupt("its last record is not before its end mark");
	return 0;
}

/* ---- Sections ----------------------------------------------------------------------------- */

static uint64_t section_sum(const uint8_t *hdr, const uint8_t *payload, uint64_t len)
{
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, payload, (size_t)len);
	XXH3_64bits_update(&st, hdr, 24);
	return XXH3_64bits_digest(&st);
}

int ckpt_reseal(uint8_t *p, size_t len)
{
	if (len < CKPT_HEADER)
		return -1;
	uint32_t nsec = get_le32(p + 84), i;
	size_t off = CKPT_HEADER;
	for (i = 0; i < nsec && len - off >= CKPT_SEC_HEADER; i++) {
		uint64_t slen = get_le64(p + off + 16);
		if (slen > len - off - CKPT_SEC_HEADER)
			break;
		put_le64(p + off + 24, section_sum(p + off, p + off + CKPT_SEC_HEADER, slen));
		off += CKPT_SEC_HEADER + (size_t)slen;
	}
	put_le64(p + 88, XXH3_64bits(p, 88));
	return i == nsec ? (int)i : -1;
}

/* Does the section hold exactly count entries of size bytes? */
static int fixed_size(const struct ckpt_section *s, size_t size)
{
	return s->len % size == 0 && s->count == s->len / size;
}

static int bad_section(int type, uint64_t i, const char *what)
{
	return cs_fail(CS_ECORRUPT, "checkpoint: %s section entry %llu: %s", sec_name[type],
	               (unsigned long long)i, what);
}

static int check_segments(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_SEGMENTS];
	struct ckpt_seg g, prev = {0, 0, 0};

	if (!fixed_size(s, CKPT_SEG_ENTRY) || s->count < 1 || s->count > CS_SEGMENTS_MAX)
		return corrupt("segments section of the wrong size");
	for (uint64_t i = 0; i < s->count; i++) {
		ckpt_seg_at(s, (size_t)i, &g);
		if (g.id <= prev.id || g.first_seq < prev.first_seq || g.first_seq < 1 ||
		    g.first_seq > c->h.start_seq || g.end < CS_SEG_HEADER ||
		    g.end % CS_REC_ALIGN != 0)
			return bad_section(CKPT_SEC_SEGMENTS, i, "out of order or out of range");
		prev = g;
	}
	if (prev.id != c->h.start_seg)
		return corrupt("the segments section does not end at the start segment");
	return 0;
}

/* The end of segment id by the SEGMENTS section, 0 if it is not listed, UINT32_MAX for a
 * segment after the listed ones (at or after the start segment: bounded by the end mark). */
static uint32_t seg_end(const struct ckpt *c, uint32_t id)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_SEGMENTS];
	size_t lo = 0, hi = (size_t)s->count;
	struct ckpt_seg g;

	if (id >= c->h.start_seg)
		return UINT32_MAX;
	while (lo < hi) { /* bounded: binary search */
		size_t mid = lo + (hi - lo) / 2;
		ckpt_seg_at(s, mid, &g);
		if (g.id == id)
			return g.end;
		if (g.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Can a record of the checkpoint's tables lie at (seg, off)? (12.3) m keeps the last
 * seg_end() answer. */
static int in_log_memo(const struct ckpt *c, uint32_t seg, uint32_t off,
                       struct ckpt_seg_memo *m)
{
	if (off < CS_SEG_HEADER || off % CS_REC_ALIGN != 0 ||
	    pos_cmp(seg, off, c->h.end_seg, c->h.end_off) >= 0)
		return 0;
	if (seg != m->id || m->id == 0)
		*m = (struct ckpt_seg_memo){seg, seg_end(c, seg)};
	return off < m->end;
}

static int in_log(const struct ckpt *c, uint32_t seg, uint32_t off)
{
	struct ckpt_seg_memo m = {0, 0};
	return in_log_memo(c, seg, off, &m);
}

static int check_pins(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_PINS];

	if (!fixed_size(s, CKPT_ENTRY))
		return corrupt("pins section of the wrong size");
	if (s->count > CS_PINS_MAX)
		return corrupt("more pins than a store holds");
	return 0;
}

/* Finds BLOCKS' leaves (K5): the padding zero, whole leaves after it, at least one entry a
 * leaf and at most IDX_LEAF_CAP. buf is the file's first byte. */
static int find_leaves(const uint8_t *buf, struct ckpt_section *s)
{
	size_t pad = (IDX_NODE_BYTES - (size_t)(s->data - buf) % IDX_NODE_BYTES) % IDX_NODE_BYTES;

	if (s->len < pad || (s->len - pad) % IDX_NODE_BYTES != 0)
		return corrupt("blocks section of the wrong size");
	for (size_t i = 0; i < pad; i++)
		if (s->data[i] != 0)
			return corrupt("blocks section padding is not zero");
	s->leaves = s->data + pad;
	s->nleaves = (size_t)(s->len - pad) / IDX_NODE_BYTES;
	if (s->count < s->nleaves || s->count > (uint64_t)s->nleaves * IDX_LEAF_CAP)
		return corrupt("the blocks section's count disagrees with its leaves");
	return 0;
}

const uint8_t *ckpt_leaf_at(const struct ckpt *c, size_t j)
{
	CS_ASSERT(j < c->sec[CKPT_SEC_BLOCKS].nleaves);
	return c->sec[CKPT_SEC_BLOCKS].leaves + j * IDX_NODE_BYTES;
}

int ckpt_leaf_check(const struct ckpt *c, size_t j, unsigned n, const struct idx_val *vals,
                    struct ckpt_seg_memo *m)
{
	for (unsigned k = 0; k < n; k++) {
		const struct idx_val *v = &vals[k];
		const char *why = !in_log_memo(c, v->seg, v->off, m) ? "position outside the log"
		                  : v->len > CS_BLOCK_MAX            ? "block longer than CS_BLOCK_MAX"
		                                                     : NULL;
		if (why != NULL)
			return cs_fail(CS_ECORRUPT, "checkpoint: blocks leaf %zu entry %u: %s", j, k,
			               why);
	}
	return 0;
}

int ckpt_leaf_get(const struct ckpt *c, size_t j, unsigned *n, const uint8_t (**keys)[CS_KEY_MAX],
                  const struct idx_val **vals)
{
	struct ckpt_seg_memo m = {0, 0};
	int rc = idx_leaf_view(ckpt_leaf_at(c, j), n, keys, vals);

	if (rc != 0)
		return cs_fail(rc, "checkpoint: %s, in blocks leaf %zu", cs_errmsg(), j);
	return ckpt_leaf_check(c, j, *n, *vals, &m);
}

int ckpt_section_verify(const struct ckpt *c, int type)
{
	const struct ckpt_section *s = &c->sec[type];

	if (s->unverified && section_sum(s->hdr, s->data, s->len) != get_le64(s->hdr + 24))
		return cs_fail(CS_ECORRUPT, "checkpoint: %s section checksum mismatch",
		               sec_name[type]);
	return 0;
}

/* Pin entry i into key and v, checked (K2); m as in_log_memo(). */
static int entry_get(const struct ckpt *c, size_t i, uint8_t key[CS_KEY_MAX], struct idx_val *v,
                     struct ckpt_seg_memo *m)
{
	ckpt_entry_at(&c->sec[CKPT_SEC_PINS], i, key, v);
	if (!in_log_memo(c, v->seg, v->off, m))
		return bad_section(CKPT_SEC_PINS, i, "position outside the log");
	if (((v->len & 0xff) != CS_PIN_DIRECT && (v->len & 0xff) != CS_PIN_RECURSIVE) ||
	    (v->len >> 8) > 1)
		return bad_section(CKPT_SEC_PINS, i, "unknown pin kind or CID version");
	return 0;
}

int ckpt_entry_get(const struct ckpt *c, int type, size_t i, uint8_t key[CS_KEY_MAX],
                   struct idx_val *v)
{
	struct ckpt_seg_memo m = {0, 0};

	CS_ASSERT(type == CKPT_SEC_PINS && i < c->sec[type].count);
	return entry_get(c, i, key, v, &m);
}

/* ---- Loading entries in runs ---------------------------------------------------------- */

int ckpt_cursor_begin_at(struct ckpt_cursor *k, const struct ckpt *c, int type, size_t from,
                         size_t to)
{
	CS_ASSERT(type == CKPT_SEC_PINS);
	CS_ASSERT(from <= to && to <= c->sec[type].count);
	*k = (struct ckpt_cursor){.c = c, .type = type, .next = from, .end = to};
	if (!c->sec[type].unverified || from != 0) /* K4: the cursor from 0 owns the checksum */
		return 0;
	XXH3_state_t *xs = XXH3_createState();
	if (xs == NULL)
		return cs_fail(-ENOMEM, "checkpoint: no memory for a checksum state");
	XXH3_64bits_reset(xs);
	k->xs = xs;
	return 0;
}

int ckpt_cursor_begin(struct ckpt_cursor *k, const struct ckpt *c, int type)
{
	return ckpt_cursor_begin_at(k, c, type, 0, (size_t)c->sec[type].count);
}

int ckpt_cursor_get(struct ckpt_cursor *k, size_t i, unsigned n, uint8_t (*keys)[CS_KEY_MAX],
                    struct idx_val *vals)
{
	const struct ckpt_section *s = &k->c->sec[k->type];
	int rc = 0;

	/* K4: the runs cover the range in order, so the checksum sees its bytes in order. */
	CS_ASSERT(i == k->next && n <= k->end - i);
	if (k->xs != NULL) /* while the run's bytes are about to be read anyway */
		XXH3_64bits_update(k->xs, s->data + i * CKPT_ENTRY, (size_t)n * CKPT_ENTRY);
	for (unsigned j = 0; rc == 0 && j < n; j++)
		rc = entry_get(k->c, i + j, keys[j], &vals[j], &k->memo);
	k->next = i + n;
	return rc;
}

int ckpt_cursor_end(struct ckpt_cursor *k)
{
	const struct ckpt_section *s = &k->c->sec[k->type];
	int rc = 0;

	CS_ASSERT(k->next == k->end); /* K4 */
	if (k->xs != NULL) {
		/* K4: the entries of the other cursors' ranges, then (K3) the header. */
		XXH3_64bits_update(k->xs, s->data + k->end * CKPT_ENTRY,
		                   (size_t)(s->count - k->end) * CKPT_ENTRY);
		XXH3_64bits_update(k->xs, s->hdr, 24);
		if (XXH3_64bits_digest(k->xs) != get_le64(s->hdr + 24))
			rc = cs_fail(CS_ECORRUPT, "checkpoint: %s section checksum mismatch",
			             sec_name[k->type]);
	}
	ckpt_cursor_free(k);
	return rc;
}

void ckpt_cursor_free(struct ckpt_cursor *k)
{
	XXH3_freeState(k->xs);
	k->xs = NULL;
}

/* Byte order of names, a prefix first (FORMAT.md 4.7). */
static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);
	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int check_names(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_NAMES];
	struct ckpt_name n, prev = {0};
	uint64_t i = 0;

	/* Bounded: every entry takes at least CKPT_NAME_META + 2 bytes (K1). */
	for (size_t off = 0; off < s->len; i++) {
		if (s->len - off < CKPT_NAME_META)
			return bad_section(CKPT_SEC_NAMES, i, "cut short");
		const uint8_t *p = s->data + off;
		uint16_t nlen = get_le16(p);
		uint8_t clen = p[2];
		if (nlen < 1 || nlen > CS_NAME_MAX || clen < 1 || clen > CS_CID_MAX || p[3] != 0)
			return bad_section(CKPT_SEC_NAMES, i, "bad lengths");
		if (s->len - off - CKPT_NAME_META < (size_t)nlen + clen)
			return bad_section(CKPT_SEC_NAMES, i, "cut short");
		off = ckpt_name_at(s, off, &n);
		if (i > 0 && name_cmp(prev.name, prev.name_len, n.name, n.name_len) >= 0)
			return bad_section(CKPT_SEC_NAMES, i, "name not above the one before");
		if (!in_log(c, n.seg, n.off))
			return bad_section(CKPT_SEC_NAMES, i, "position outside the log");
		prev = n;
	}
	if (i != s->count)
		return corrupt("the names section's count disagrees with its entries");
	return 0;
}

/* The dropped ranges as rec_drops keeps them: each nonempty, increasing and apart (neither
 * overlapping nor touching), all below the start seq, segment ids in order. */
static int check_drops(const struct ckpt *c)
{
	const struct ckpt_section *s = &c->sec[CKPT_SEC_DROPS];
	struct rec_drop d, prev = {0, 0, 0, 0};

	if (!fixed_size(s, CKPT_DROP_ENTRY) || s->count > CS_SEGMENTS_MAX)
		return corrupt("drops section of the wrong size");
	for (uint64_t i = 0; i < s->count; i++) {
		ckpt_drop_at(s, (size_t)i, &d);
		if (d.from_seq < 1 || d.to_seq <= d.from_seq || d.to_seq > c->h.start_seq ||
		    d.first_id < 1 || d.last_id < d.first_id || d.last_id >= c->h.start_seg ||
		    (i > 0 && (d.from_seq <= prev.to_seq || d.first_id <= prev.last_id)))
			return bad_section(CKPT_SEC_DROPS, i, "out of order or out of range");
		prev = d;
	}
	return 0;
}

/* ckpt_decode(), or with lazy set ckpt_decode_lazy(). */
static int decode(const uint8_t *buf, size_t len, int lazy, struct ckpt *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = decode_header(buf, len, &out->h)) != 0)
		return rc;
	size_t off = CKPT_HEADER;
	/* Bounded by nsections <= CKPT_SECTIONS_MAX; each step moves past its section. */
	for (uint32_t i = 0; i < out->h.nsections; i++) {
		if (len - off < CKPT_SEC_HEADER)
			return cs_fail(CS_ECORRUPT, "checkpoint: section %u cut short", i);
		const uint8_t *p = buf + off;
		uint16_t type = get_le16(p);
		struct ckpt_section s = {get_le16(p + 2), get_le64(p + 8), get_le64(p + 16),
		                         p + CKPT_SEC_HEADER, p,
		                         lazy && (type == CKPT_SEC_BLOCKS || type == CKPT_SEC_PINS),
		                         NULL, 0};
		if (get_le32(p + 4) != 0 || (s.flags & ~CKPT_SEC_F_SKIPPABLE) != 0 || type == 0)
			return cs_fail(CS_ECORRUPT, "checkpoint: section %u has a bad header", i);
		if (s.len > len - off - CKPT_SEC_HEADER)
			return cs_fail(CS_ECORRUPT, "checkpoint: section %u (type %u) runs past the end "
			                            "of the file",
			               i, type);
		if (!s.unverified && section_sum(p, s.data, s.len) != get_le64(p + 24))
			return cs_fail(CS_ECORRUPT, "checkpoint: section %u (type %u) checksum mismatch",
			               i, type);
		off += CKPT_SEC_HEADER + (size_t)s.len;
		if (type > CKPT_SEC_KNOWN) {
			if (!(s.flags & CKPT_SEC_F_SKIPPABLE))
				return cs_fail(CS_EVERSION,
				               "checkpoint: section type %u is unknown to this version",
				               type);
			out->skipped++;
			continue;
		}
		if (out->sec[type].data != NULL)
			return cs_fail(CS_ECORRUPT, "checkpoint: two %s sections", sec_name[type]);
		if (type == CKPT_SEC_BLOCKS && (rc = find_leaves(buf, &s)) != 0)
			return rc;
		out->sec[type] = s;
	}
	if (off != len)
		return cs_fail(CS_ECORRUPT, "checkpoint: %zu bytes after the last section",
		               len - off);
	for (int t = 1; t <= CKPT_SEC_KNOWN; t++)
		if (out->sec[t].data == NULL)
			return cs_fail(CS_ECORRUPT, "checkpoint: no %s section", sec_name[t]);
	const struct ckpt_section *st = &out->sec[CKPT_SEC_STATS];
	if (st->count != 1 || st->len != CKPT_STATS_LEN)
		return corrupt("stats section of the wrong size");
	if ((rc = check_segments(out)) != 0 || (rc = check_pins(out)) != 0 ||
	    (rc = check_names(out)) != 0 || (rc = check_drops(out)) != 0)
		return rc;
	return 0;
}

int ckpt_decode(const uint8_t *buf, size_t len, struct ckpt *out)
{
	return decode(buf, len, 0, out);
}

int ckpt_decode_lazy(const uint8_t *buf, size_t len, struct ckpt *out)
{
	return decode(buf, len, 1, out);
}

void ckpt_entry_at(const struct ckpt_section *s, size_t i, uint8_t key[CS_KEY_MAX],
                   struct idx_val *v)
{
	const uint8_t *p = s->data + i * CKPT_ENTRY;
	memcpy(key, p, CS_KEY_MAX);
	p += CS_KEY_MAX;
	*v = (struct idx_val){get_le32(p), get_le32(p + 4), get_le32(p + 8), get_le32(p + 12)};
}

void ckpt_seg_at(const struct ckpt_section *s, size_t i, struct ckpt_seg *out)
{
	const uint8_t *p = s->data + i * CKPT_SEG_ENTRY;
	*out = (struct ckpt_seg){get_le32(p), get_le32(p + 4), get_le64(p + 8)};
}

size_t ckpt_name_at(const struct ckpt_section *s, size_t off, struct ckpt_name *out)
{
	const uint8_t *p = s->data + off;
	out->name_len = get_le16(p);
	out->cid_len = p[2];
	out->size = get_le64(p + 4);
	out->time_ns = (int64_t)get_le64(p + 12);
	out->seg = get_le32(p + 20);
	out->off = get_le32(p + 24);
	out->name = p + CKPT_NAME_META;
	out->cid = out->name + out->name_len;
	return off + CKPT_NAME_META + out->name_len + out->cid_len;
}

void ckpt_drop_at(const struct ckpt_section *s, size_t i, struct rec_drop *out)
{
	const uint8_t *p = s->data + i * CKPT_DROP_ENTRY;
	*out = (struct rec_drop){get_le64(p), get_le64(p + 8), get_le32(p + 16), get_le32(p + 20)};
}

static double get_f64(const uint8_t *p)
{
	uint64_t u = get_le64(p);
	double d;
	memcpy(&d, &u, sizeof(d));
	return d;
}

static void put_f64(uint8_t *p, double d)
{
	uint64_t u;
	memcpy(&u, &d, sizeof(u));
	put_le64(p, u);
}

void ckpt_stats(const struct ckpt_section *s, cs_gc_stat *gc, int64_t *gc_time_ns)
{
	const uint8_t *p = s->data;
	gc->roots = get_le64(p);
	gc->marked = get_le64(p + 8);
	gc->swept_blocks = get_le64(p + 16);
	gc->swept_bytes = get_le64(p + 24);
	gc->mark_seconds = get_f64(p + 32);
	gc->sweep_seconds = get_f64(p + 40);
	gc->seconds = get_f64(p + 48);
	*gc_time_ns = (int64_t)get_le64(p + 56);
	gc->segments_compacted = get_le64(p + 64);
	gc->bytes_copied = get_le64(p + 72);
	gc->bytes_reclaimed = get_le64(p + 80);
	gc->compact_seconds = get_f64(p + 88);
}

/* ---- Writing ------------------------------------------------------------------------------ */

/* A full disk is CS_EFULL, as cs_checkpoint documents, in the file's writes as in the other
 * steps of a checkpoint (engine/ckpt.c). */
static int write_error(int e, uint64_t at)
{
	return cs_fail(e == ENOSPC || e == EDQUOT ? CS_EFULL : -e,
	               "checkpoint: write at offset %llu failed: %s", (unsigned long long)at,
	               strerror(e));
}

/* The write function finishes short writes and retries interrupted ones; after its first
 * failure nothing more is written, so the error stays the first failure's. */
static void wr_at(struct ckpt_writer *w, const uint8_t *p, size_t n, uint64_t at)
{
	int rc;

	if (n > 0 && w->err == 0 && (rc = w->write(w->ctx, p, n, at)) != 0)
		w->err = write_error(-rc, at);
}

static void flush(struct ckpt_writer *w)
{
	wr_at(w, w->buf, w->fill, w->off);
	w->off += w->fill;
	w->fill = 0;
}

/* Appends n bytes to the file; hashed into the open section's checksum when hash is set. */
static void put(struct ckpt_writer *w, const void *data, size_t n, int hash)
{
	const uint8_t *p = data;

	if (hash)
		XXH3_64bits_update(w->xs, p, n);
	while (n > 0) { /* bounded: each pass takes min(n, room) > 0 bytes */
		size_t k = CKPT_WBUF - w->fill < n ? CKPT_WBUF - w->fill : n;
		memcpy(w->buf + w->fill, p, k);
		w->fill += k;
		p += k;
		n -= k;
		if (w->fill == CKPT_WBUF)
			flush(w);
	}
}

/* BLOCKS entries held back from the leaves (K5). */
struct ckpt_pending {
	unsigned n;
	uint8_t keys[2 * IDX_LEAF_CAP][CS_KEY_MAX];
	struct idx_val vals[2 * IDX_LEAF_CAP];
	uint8_t leaf[IDX_NODE_BYTES];
};

/* Writes the first n pending entries as a leaf, and moves the rest to the front. */
static void put_leaf(struct ckpt_writer *w, unsigned n)
{
	struct ckpt_pending *q = w->pend;

	idx_leaf_image(q->leaf, n, (const uint8_t (*)[CS_KEY_MAX])q->keys, q->vals);
	put(w, q->leaf, IDX_NODE_BYTES, 1);
	q->n -= n;
	memmove(q->keys[0], q->keys[n], (size_t)q->n * CS_KEY_MAX);
	memmove(&q->vals[0], &q->vals[n], q->n * sizeof(q->vals[0]));
}

int ckpt_write_begin(struct ckpt_writer *w, ckpt_write_fn write, void *ctx)
{
	static const uint8_t zero[CKPT_HEADER];

	memset(w, 0, sizeof(*w));
	w->write = write;
	w->ctx = ctx;
	w->buf = malloc(CKPT_WBUF);
	w->xs = XXH3_createState();
	w->pend = malloc(sizeof(*w->pend));
	if (w->buf == NULL || w->xs == NULL || w->pend == NULL) {
		ckpt_write_abort(w);
		return -ENOMEM;
	}
	put(w, zero, CKPT_HEADER, 0); /* the header's place, written last */
	return 0;
}

void ckpt_section_begin(struct ckpt_writer *w, uint16_t type)
{
	static const uint8_t zero[IDX_NODE_BYTES];

	w->sec_off = w->off + w->fill;
	w->sec_type = type;
	w->sec_count = 0;
	XXH3_64bits_reset(w->xs);
	put(w, zero, CKPT_SEC_HEADER, 0); /* filled in by ckpt_section_end() */
	if (type == CKPT_SEC_BLOCKS) { /* K5: the leaves start on a page of the file */
		put(w, zero, (IDX_NODE_BYTES - (w->off + w->fill) % IDX_NODE_BYTES) % IDX_NODE_BYTES,
		    1);
		w->pend->n = 0;
	}
}

void ckpt_put_entry(struct ckpt_writer *w, const uint8_t key[CS_KEY_MAX], const struct idx_val *v)
{
	uint8_t p[CKPT_ENTRY];

	if (w->sec_type == CKPT_SEC_BLOCKS) { /* K5 */
		struct ckpt_pending *q = w->pend;
		if (q->n == 2 * IDX_LEAF_CAP)
			put_leaf(w, IDX_LEAF_CAP);
		memcpy(q->keys[q->n], key, CS_KEY_MAX);
		q->vals[q->n++] = *v;
		w->sec_count++;
		return;
	}
	memcpy(p, key, CS_KEY_MAX);
	put_le32(p + CS_KEY_MAX, v->seg);
	put_le32(p + CS_KEY_MAX + 4, v->off);
	put_le32(p + CS_KEY_MAX + 8, v->len);
	put_le32(p + CS_KEY_MAX + 12, v->codec);
	put(w, p, sizeof(p), 1);
	w->sec_count++;
}

void ckpt_put_seg(struct ckpt_writer *w, const struct ckpt_seg *seg)
{
	uint8_t p[CKPT_SEG_ENTRY];
	put_le32(p, seg->id);
	put_le32(p + 4, seg->end);
	put_le64(p + 8, seg->first_seq);
	put(w, p, sizeof(p), 1);
	w->sec_count++;
}

void ckpt_put_name(struct ckpt_writer *w, const struct ckpt_name *n)
{
	uint8_t p[CKPT_NAME_META];
	put_le16(p, n->name_len);
	p[2] = n->cid_len;
	p[3] = 0;
	put_le64(p + 4, n->size);
	put_le64(p + 12, (uint64_t)n->time_ns);
	put_le32(p + 20, n->seg);
	put_le32(p + 24, n->off);
	put(w, p, sizeof(p), 1);
	put(w, n->name, n->name_len, 1);
	put(w, n->cid, n->cid_len, 1);
	w->sec_count++;
}

void ckpt_put_stats(struct ckpt_writer *w, const cs_gc_stat *gc, int64_t gc_time_ns)
{
	uint8_t p[CKPT_STATS_LEN];
	put_le64(p, gc->roots);
	put_le64(p + 8, gc->marked);
	put_le64(p + 16, gc->swept_blocks);
	put_le64(p + 24, gc->swept_bytes);
	put_f64(p + 32, gc->mark_seconds);
	put_f64(p + 40, gc->sweep_seconds);
	put_f64(p + 48, gc->seconds);
	put_le64(p + 56, (uint64_t)gc_time_ns);
	put_le64(p + 64, gc->segments_compacted);
	put_le64(p + 72, gc->bytes_copied);
	put_le64(p + 80, gc->bytes_reclaimed);
	put_f64(p + 88, gc->compact_seconds);
	put(w, p, sizeof(p), 1);
	w->sec_count++;
}

void ckpt_put_drop(struct ckpt_writer *w, const struct rec_drop *d)
{
	uint8_t p[CKPT_DROP_ENTRY];
	put_le64(p, d->from_seq);
	put_le64(p + 8, d->to_seq);
	put_le32(p + 16, d->first_id);
	put_le32(p + 20, d->last_id);
	put(w, p, sizeof(p), 1);
	w->sec_count++;
}

void ckpt_section_end(struct ckpt_writer *w)
{
	uint8_t h[CKPT_SEC_HEADER];

	/* K5: after a leaf written, more than IDX_LEAF_CAP are pending, so both halves of
	 * two hold IDX_LEAF_MIN or more. */
	if (w->sec_type == CKPT_SEC_BLOCKS && w->pend->n > IDX_LEAF_CAP)
		put_leaf(w, (w->pend->n + 1) / 2);
	if (w->sec_type == CKPT_SEC_BLOCKS && w->pend->n > 0)
		put_leaf(w, w->pend->n);
	uint64_t len = w->off + w->fill - w->sec_off - CKPT_SEC_HEADER;

	memset(h, 0, sizeof(h));
	put_le16(h, w->sec_type);
	put_le64(h + 8, w->sec_count);
	put_le64(h + 16, len);
	XXH3_64bits_update(w->xs, h, 24); /* K3: payload first, then the header */
	put_le64(h + 24, XXH3_64bits_digest(w->xs));
	flush(w); /* the placeholder may still be buffered */
	wr_at(w, h, sizeof(h), w->sec_off);
	w->nsections++;
}

int ckpt_write_finish(struct ckpt_writer *w, struct ckpt_hdr *h)
{
	uint8_t p[CKPT_HEADER];

	flush(w);
	h->nsections = w->nsections;
	h->file_size = w->off;
	hdr_encode(p, h);
	wr_at(w, p, sizeof(p), 0);
	int rc = w->err;
	ckpt_write_abort(w);
	return rc;
}

void ckpt_write_abort(struct ckpt_writer *w)
{
	free(w->buf);
	XXH3_freeState(w->xs);
	free(w->pend);
	w->buf = NULL;
	w->xs = NULL;
	w->pend = NULL;
}
