/*
 * checkpoint.h - the checkpoint file: encoding and decoding (internal).
 *
 * A checkpoint holds the tables open would rebuild from the log (the block index, the pins,
 * the names) and a few store figures, together with the log position replay resumes at
 * (docs/FORMAT.md, section 12). This module knows the bytes only: a streaming writer that
 * never holds more than one buffer of the file, and a pure decoder that checks a whole file
 * in memory and never reads outside it. What the tables mean, and when a checkpoint may be
 * taken, is engine/ckpt.c's business.
 */
#ifndef CS_CHECKPOINT_H
#define CS_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "btree.h"
#include "cidstore.h"
#include "cs_limits.h"
#include "replay.h"

#define CKPT_FILE       "checkpoint"
#define CKPT_TMP_FILE   "checkpoint.tmp"
#define CKPT_MAGIC      "CIDSTCKP"
#define CKPT_VERSION    5u  /* the format version that last changed the file */
#define CKPT_HEADER     96u /* bytes of the file header */
#define CKPT_SEC_HEADER 32u /* bytes of a section header */
#define CKPT_SECTIONS_MAX 64u
#define CKPT_ENTRY      (CS_KEY_MAX + 16u) /* a pin entry: key, seg, off, len, codec */
#define CKPT_SEG_ENTRY  16u
#define CKPT_NAME_META  28u
#define CKPT_DROP_ENTRY 24u
#define CKPT_STATS_LEN  96u

/* Section types; numbers are never reused. */
enum ckpt_sec {
	CKPT_SEC_SEGMENTS = 1,
	CKPT_SEC_BLOCKS = 2,
	CKPT_SEC_PINS = 3,
	CKPT_SEC_NAMES = 4,
	CKPT_SEC_STATS = 5,
	CKPT_SEC_DROPS = 6,
	CKPT_SEC_KNOWN = 6, /* the highest type this version knows */
};

#define CKPT_SEC_F_SKIPPABLE 0x1u /* a reader that does not know the type may ignore it */
#define CKPT_F_SALVAGED      0x1u /* salvage resumed in the start segment before start_off */

/* The file header's fields (section 12.2 of FORMAT.md). */
struct ckpt_hdr {
	uint64_t store_uid;
	int64_t created_ns;
	/* Replay resumes at start (seq start_seq): the tail when the checkpoint began. */
	uint32_t start_seg, start_off;
	uint64_t start_seq;
	/* The tail when the table copy ended; every entry points before it, and every record
	 * before it was durable before the file was renamed into place. */
	uint32_t end_seg, end_off;
	uint64_t end_seq;
	/* The record end_seq - 1 (zero when end_seq is 1): where it is, and its checksum. */
	uint32_t last_seg, last_off;
	uint64_t last_sum;
	uint32_t flags; /* CKPT_F_* */
	uint32_t nsections;
	uint64_t file_size; /* not stored: the last section ends at the end of the file */
};

/* A decoded section: its bytes are borrowed from the buffer given to ckpt_decode(). */
struct ckpt_section {
	uint16_t flags;
	uint64_t count;
	uint64_t len;
	const uint8_t *data; /* NULL when the section is absent */
	const uint8_t *hdr;  /* its CKPT_SEC_HEADER bytes */
	int unverified;      /* its checksum is left to the loader (ckpt_decode_lazy, K4) */
	/* BLOCKS only: its leaves (IDX_NODE_BYTES each, at a file offset that is a multiple of
	 * IDX_NODE_BYTES, so at a page of a mapping of the file) and how many. */
	const uint8_t *leaves;
	size_t nleaves;
};

struct ckpt {
	struct ckpt_hdr h;
	struct ckpt_section sec[CKPT_SEC_KNOWN + 1]; /* indexed by type; [0] unused */
	uint32_t skipped;                            /* unknown skippable sections met */
};

/* One segment of the log as the checkpoint lists it: every segment up to start_seg. */
struct ckpt_seg {
	uint32_t id;
	uint32_t end; /* past its last record (for start_seg: start_off) */
	uint64_t first_seq;
};

/* One name entry. name and cid are borrowed from the decoded buffer. */
struct ckpt_name {
	const uint8_t *name;
	uint16_t name_len;
	const uint8_t *cid;
	uint8_t cid_len;
	uint64_t size;
	int64_t time_ns;
	uint32_t seg, off; /* where its REC_NAME_SET lies */
};

/* Checks the whole file in buf (len bytes, borrowed, aligned as malloc aligns: BLOCKS'
 * leaves are read in place as the B+tree's nodes; out borrows from it): header, every
 * section's checksum and layout, names strictly increasing with their positions inside the
 * log, dropped ranges ordered and before the start; of BLOCKS and PINS only their sizes
 * (ckpt_leaf_get() and ckpt_entry_get() check the entries). Never reads outside buf, never
 * allocates.
 * Errors, each with a message naming what is wrong: CS_ECORRUPT (damage, or a file that
 * breaks a rule of the format), CS_EVERSION (a newer version, or a section type unknown to
 * this version without the skippable flag). */
int ckpt_decode(const uint8_t *buf, size_t len, struct ckpt *out);

/* ckpt_decode() but for the checksums of BLOCKS and PINS, which are left unverified for the
 * loader to check while the entries are loaded (K4): every other check is made. A store's
 * open loads through it; the entries are not to be trusted before ckpt_section_verify() of
 * BLOCKS and ckpt_cursor_end() of PINS returned 0. Errors: as ckpt_decode(). */
int ckpt_decode_lazy(const uint8_t *buf, size_t len, struct ckpt *out);

/* Recomputes every checksum of the checkpoint image buf[0..len) where its layout puts them:
 * each section's, for as many sections as the header counts and fit whole, then the
 * header's. For tools and tests that edit an image on purpose; garbage is tolerated. Returns
 * the sections sealed, or -1 when a section the header counts is missing or runs past len
 * (those before it are sealed, and the header too). */
int ckpt_reseal(uint8_t *buf, size_t len);

/* Checks the checksum of section type, which ckpt_decode_lazy() left unverified (a no-op
 * for one it checked). Errors: CS_ECORRUPT (mismatch). */
int ckpt_section_verify(const struct ckpt *c, int type);

/* The segment an entry's position was last checked against, for a walk over entries that
 * mostly point into few segments; {0, 0} to begin with. */
struct ckpt_seg_memo {
	uint32_t id, end; /* id 0: none yet (segment ids start at 1) */
};

/* Leaf j (< nleaves) of a decoded BLOCKS section: its bytes, a leaf image (btree.h). */
const uint8_t *ckpt_leaf_at(const struct ckpt *c, size_t j);

/* Checks the values of the n entries of BLOCKS leaf j that idx_leaf_view() found at vals:
 * each position inside the log c lists and before its end mark, each length at most
 * CS_BLOCK_MAX. That the leaf is well formed and its keys increase, within and across leaves,
 * is the B+tree's to check (idx_adopt_part() does). Errors: CS_ECORRUPT naming the leaf and
 * entry. */
int ckpt_leaf_check(const struct ckpt *c, size_t j, unsigned n, const struct idx_val *vals,
		    struct ckpt_seg_memo *m);

/* Leaf j of BLOCKS read with idx_leaf_view() and checked with ckpt_leaf_check(). Errors:
 * CS_ECORRUPT naming the leaf. */
int ckpt_leaf_get(const struct ckpt *c, size_t j, unsigned *n, const uint8_t (**keys)[CS_KEY_MAX],
		  const struct idx_val **vals);

/* Reads the entries of a decoded PINS section in runs, in order, checking each as
 * ckpt_entry_get() does, and the section's checksum when ckpt_decode_lazy() left it
 * unverified (K4). Since version 5 PINS is the only section of 50-byte entries: the type
 * arguments below must be CKPT_SEC_PINS. */
struct ckpt_cursor {
	const struct ckpt *c; /* borrowed */
	int type;             /* CKPT_SEC_BLOCKS or CKPT_SEC_PINS */
	size_t next;          /* the next entry to hand out */
	size_t end;           /* the entry after the cursor's range */
	void *xs;             /* owned XXH3 state; NULL when the checksum was checked already */
	struct ckpt_seg_memo memo;
};

/* A cursor over the whole section. Errors: -ENOMEM. */
int ckpt_cursor_begin(struct ckpt_cursor *k, const struct ckpt *c, int type);
/* A cursor over entries from .. to - 1 only (from <= to <= count), so that a section can be
 * loaded in ranges on different threads, each through its own cursor. The cursor whose range
 * starts at 0 checks the whole section's checksum at its ckpt_cursor_end(), reading the other
 * ranges' bytes itself, and no entry of any range is to be trusted before that returned 0
 * (K4); the others check none. Errors: -ENOMEM. */
int ckpt_cursor_begin_at(struct ckpt_cursor *k, const struct ckpt *c, int type, size_t from,
                         size_t to);
/* Entries i .. i + n - 1 into keys and vals (borrowed, n slots each); i must be the entry
 * after the last run's (the range's first for the first run), and i + n at most the range's
 * end. Errors: CS_ECORRUPT naming the entry. */
int ckpt_cursor_get(struct ckpt_cursor *k, size_t i, unsigned n, uint8_t (*keys)[CS_KEY_MAX],
		    struct idx_val *vals);
/* After the runs covered the cursor's range: checks the section's checksum, if left
 * unverified and the range starts at 0, and frees the cursor. Errors: CS_ECORRUPT (checksum
 * mismatch). */
int ckpt_cursor_end(struct ckpt_cursor *k);
/* Frees a cursor without the check (a load that failed before the end). */
void ckpt_cursor_free(struct ckpt_cursor *k);

/* Entry i of a decoded PINS section, without checks. */
void ckpt_entry_at(const struct ckpt_section *s, size_t i, uint8_t key[CS_KEY_MAX],
		   struct idx_val *v);

/* Entry i (< count) of c's PINS section, checked: its position lies inside the log c lists
 * and before its end mark, its kind and CID version are known. That keys strictly increase is
 * the caller's to check (idx_load() does). Errors: CS_ECORRUPT naming the entry. */
int ckpt_entry_get(const struct ckpt *c, int type, size_t i, uint8_t key[CS_KEY_MAX],
		   struct idx_val *v);

/* Segment i of a decoded SEGMENTS section. */
void ckpt_seg_at(const struct ckpt_section *s, size_t i, struct ckpt_seg *out);

/* The name entry at byte offset off of a decoded NAMES section (0 for the first); returns
 * the offset of the next. */
size_t ckpt_name_at(const struct ckpt_section *s, size_t off, struct ckpt_name *out);

/* Range i of a decoded DROPS section. */
void ckpt_drop_at(const struct ckpt_section *s, size_t i, struct rec_drop *out);

/* The decoded STATS section. */
void ckpt_stats(const struct ckpt_section *s, cs_gc_stat *gc, int64_t *gc_time_ns);

/* ---- Writing ------------------------------------------------------------------------- */

/* Writes all len bytes of buf at file offset off, for the writer below; returns 0 or -errno.
 * The caller does the I/O (through its backend, so that a fault-injecting one sees it); this
 * module knows only the bytes. */
typedef int (*ckpt_write_fn)(void *ctx, const void *buf, size_t len, uint64_t off);

/* Writes a checkpoint from offset 0 through one buffer and a ckpt_write_fn: sections one after
 * another, then the header. A write error is kept and returned by ckpt_write_finish(); the
 * calls in between need no checks, and write nothing more once one failed. ckpt_put_entry()
 * into BLOCKS gathers the entries into leaves (K5 of checkpoint.c). */
struct ckpt_writer {
	ckpt_write_fn write;
	void *ctx;          /* borrowed: write's first argument */
	uint8_t *buf;       /* owned; CKPT_WBUF bytes */
	size_t fill;
	uint64_t off;       /* file offset of buf[0] */
	void *xs;           /* owned XXH3 state of the open section */
	uint64_t sec_off;   /* file offset of the open section's header */
	uint16_t sec_type;
	uint64_t sec_count;
	uint32_t nsections;
	int err;            /* first error, 0 if none */
	struct ckpt_pending *pend; /* owned: BLOCKS entries not yet in a leaf written (K5) */
};

/* Errors: -ENOMEM. */
int ckpt_write_begin(struct ckpt_writer *w, ckpt_write_fn write, void *ctx);
void ckpt_section_begin(struct ckpt_writer *w, uint16_t type);
void ckpt_put_entry(struct ckpt_writer *w, const uint8_t key[CS_KEY_MAX], const struct idx_val *v);
void ckpt_put_seg(struct ckpt_writer *w, const struct ckpt_seg *seg);
void ckpt_put_name(struct ckpt_writer *w, const struct ckpt_name *n);
void ckpt_put_stats(struct ckpt_writer *w, const cs_gc_stat *gc, int64_t gc_time_ns);
void ckpt_put_drop(struct ckpt_writer *w, const struct rec_drop *d);
void ckpt_section_end(struct ckpt_writer *w);
/* Writes the header (h's nsections and file_size are filled in) and frees the writer's
 * memory, whatever happened. Does not sync. Errors: the first write error, with a message
 * (CS_EFULL for ENOSPC and EDQUOT, else the -errno). */
int ckpt_write_finish(struct ckpt_writer *w, struct ckpt_hdr *h);
/* Frees a writer without writing the header. */
void ckpt_write_abort(struct ckpt_writer *w);

#endif
