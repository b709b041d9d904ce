/*
 * record.h - the log's record and segment-header encodings (internal). docs/FORMAT.md is the
 * normative description; this header and record.c must agree with it byte for byte.
 *
 * Record: a 40-byte header, the payload, zero padding to CS_REC_ALIGN.
 *   0  u32 magic 0x52444943 ("CIDR")   4 u8 type    5 u8 flags   6 u8 version   7 u8 zero
 *   8  u32 payload length              12 u32 zero
 *   16 u64 seq                         24 u64 synced_seq
 *   32 u64 checksum = XXH3_64bits_withSeed(payload, len, XXH3_64bits(header[0..32)))
 *
 * synced_seq is the writer's durable horizon when the record was appended: the largest seq
 * known to be on stable storage then (0 for none), so always < seq. Recovery uses it to tell
 * a torn tail (no valid record after the damage has synced_seq >= the damaged seq) from
 * corruption.
 */
#ifndef CS_RECORD_H
#define CS_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cs_limits.h"

#define REC_MAGIC   0x52444943u
#define REC_VERSION 1

/* Record types. Numbers are never reused. */
enum rec_type {
	REC_BLOCK = 1,    /* a block: see the block payload below */
	REC_DELETE = 2,   /* a tombstone: the block payload's first 8 bytes (codec 0), digest */
	REC_NAME_SET = 3, /* a name set to a root: see the name-set payload below */
	REC_NAME_DEL = 4, /* a name removed: see the name-delete payload below */
	REC_PIN_ADD = 5,  /* a pin set on a root: see the pin payload below */
	REC_PIN_DEL = 6,  /* a pin removed: the pin payload with kind 0 */
	REC_CHECKPOINT = 7, /* reserved */
	REC_CARRY = 8,    /* a negative record re-appended by compaction: see the carry payload */
	REC_SEG_DROP = 9, /* segments deleted by compaction: see the drop payload below */
};

#define REC_F_CONT      0x01 /* more records of the same transaction follow this one */
#define REC_F_SKIPPABLE 0x02 /* a reader that does not know the type may skip the record */
#define REC_F_MID       0x04 /* this record continues the transaction of the one before it */
#define REC_F_KNOWN     (REC_F_CONT | REC_F_SKIPPABLE | REC_F_MID)

struct rec_hdr {
	uint8_t type;
	uint8_t flags;
	uint8_t version;
	uint32_t len; /* payload bytes, padding excluded */
	uint64_t seq;
	uint64_t synced_seq;
	uint64_t checksum;
};

/* Bytes a record with a payload of len bytes takes in the log, padding included. */
static inline uint32_t rec_size(uint32_t len)
{
	return (CS_REC_HEADER + len + CS_REC_ALIGN - 1) & ~(CS_REC_ALIGN - 1);
}

/* Encodes a record at dst (rec_size(total payload) bytes): the header with h->type, flags,
 * seq and synced_seq, the payload gathered from parts, zero padding; computes the checksum
 * (stored into h->checksum and the header). h->len and h->version are set from the parts. */
void rec_encode(uint8_t *dst, struct rec_hdr *h, const struct iovec *parts, int nparts);

/* Result of rec_decode_header(). */
#define REC_OK   0
#define REC_ZERO 1 /* the 40 header bytes are all zero: the end of the written log */
#define REC_BAD  2 /* anything else that is not a plausible header */

/* Decodes and sanity-checks a header (magic, version, reserved zeros, known flags, length
 * <= CS_REC_PAYLOAD_MAX). Does not check the checksum. */
int rec_decode_header(const uint8_t p[CS_REC_HEADER], struct rec_hdr *h);

/* Checks h's checksum against the header bytes and payload (in pieces, total h->len).
 * Returns 0 or CS_ECORRUPT (no message set). */
int rec_verify(const uint8_t hdr[CS_REC_HEADER], const struct rec_hdr *h,
               const struct iovec *payload, int nparts);

/* Block payload: u16 hash code, u8 digest length, u8 zero, u32 codec, digest, data. */
struct rec_block {
	uint16_t hash;
	uint8_t digest_len;
	uint32_t codec;
	const uint8_t *digest; /* borrowed from the payload */
	const uint8_t *data;   /* borrowed from the payload */
	uint32_t data_len;
};

/* Fills meta (CS_BLOCK_META bytes) for a block payload whose digest and data follow. */
void rec_block_meta(uint8_t meta[CS_BLOCK_META], uint16_t hash, uint8_t digest_len, uint32_t codec);

/* Parses a block payload. Errors: CS_ECORRUPT (lengths disagree). */
int rec_block_decode(const uint8_t *payload, uint32_t len, struct rec_block *out);

/* Reads the index key from a REC_BLOCK or REC_DELETE payload: both begin with the 8-byte
 * block meta and the digest. Errors: CS_ECORRUPT. */
int rec_key_decode(const uint8_t *payload, uint32_t len, uint8_t key[CS_KEY_MAX]);

/* Name-set payload (REC_NAME_SET), REC_NAME_SET_META bytes of fixed fields, then the name,
 * then the binary CID (v0 or v1, as the caller gave it):
 *   0 u16 name length (1..CS_NAME_MAX)   2 u8 CID length (1..CS_CID_MAX)   3 u8 zero
 *   4 u64 file size                      12 i64 time set, Unix nanoseconds (two's complement)
 *   20 name bytes (no NUL)               20 + name length: CID bytes
 * The payload is exactly 20 + name length + CID length bytes. */
#define REC_NAME_SET_META 20u

struct rec_name_set {
	uint16_t name_len;
	uint8_t cid_len;
	uint64_t size;
	int64_t time_ns;
	const uint8_t *name; /* borrowed from the payload; not NUL-terminated */
	const uint8_t *cid;  /* borrowed from the payload */
};

/* Fills meta (REC_NAME_SET_META bytes) for a name-set payload whose name and CID follow. */
void rec_name_set_meta(uint8_t meta[REC_NAME_SET_META], uint16_t name_len, uint8_t cid_len,
		       uint64_t size, int64_t time_ns);

/* Parses a name-set payload: checks the reserved byte, both lengths against their bounds
 * and the payload length against their sum. It does not judge the name's characters or
 * the CID's structure (the engine does). Errors: CS_ECORRUPT (no message set). */
int rec_name_set_decode(const uint8_t *payload, uint32_t len, struct rec_name_set *out);

/* Name-delete payload (REC_NAME_DEL): u16 name length (1..CS_NAME_MAX), u16 zero, the name.
 * Exactly 4 + name length bytes. */
#define REC_NAME_DEL_META 4u

struct rec_name_del {
	uint16_t name_len;
	const uint8_t *name; /* borrowed from the payload; not NUL-terminated */
};

/* Fills meta (REC_NAME_DEL_META bytes) for a name-delete payload whose name follows. */
void rec_name_del_meta(uint8_t meta[REC_NAME_DEL_META], uint16_t name_len);

/* Parses a name-delete payload, as rec_name_set_decode. Errors: CS_ECORRUPT (no message). */
int rec_name_del_decode(const uint8_t *payload, uint32_t len, struct rec_name_del *out);

/* Pin payload (REC_PIN_ADD, REC_PIN_DEL): u8 kind (REC_PIN_DIRECT or REC_PIN_RECURSIVE;
 * 0 in a REC_PIN_DEL), u8 CID length (1..CS_CID_MAX), u16 zero, the binary CID as the caller
 * gave it (v0 or v1). Exactly 4 + CID length bytes. */
#define REC_PIN_META      4u
#define REC_PIN_DIRECT    1u
#define REC_PIN_RECURSIVE 2u

struct rec_pin {
	uint8_t kind;
	uint8_t cid_len;
	const uint8_t *cid; /* borrowed from the payload */
};

void rec_pin_meta(uint8_t meta[REC_PIN_META], uint8_t kind, uint8_t cid_len);

/* Parses a pin payload of a record of type `type`: the kind must be one of the two for
 * REC_PIN_ADD and 0 for REC_PIN_DEL. Errors: CS_ECORRUPT (no message set). */
int rec_pin_decode(uint8_t type, const uint8_t *payload, uint32_t len, struct rec_pin *out);

/* Carry payload (REC_CARRY): a REC_DELETE, REC_NAME_DEL or REC_PIN_DEL that compaction moved
 * out of a segment it deletes, with the position it was first written at:
 *   0 u8 original type (2, 4 or 6)   1 u8 zero   2 u16 zero
 *   4 u32 original segment id         8 u32 original offset   12 u32 zero
 *   16 the original payload, unchanged
 * Replay applies it only to an entry whose own record lies before the original position. */
#define REC_CARRY_META 16u

struct rec_carry {
	uint8_t type;           /* REC_DELETE, REC_NAME_DEL or REC_PIN_DEL */
	uint32_t seg, off;      /* where the original record was written */
	const uint8_t *payload; /* borrowed: the original payload */
	uint32_t len;
};

void rec_carry_meta(uint8_t meta[REC_CARRY_META], uint8_t type, uint32_t seg, uint32_t off);

/* Parses a carry payload: the reserved bytes, the original type, and the original payload
 * by that type's rules (its lengths; the engine checks names and CIDs). Errors: CS_ECORRUPT
 * (no message set). */
int rec_carry_decode(const uint8_t *payload, uint32_t len, struct rec_carry *out);

/* Segment-drop payload (REC_SEG_DROP), exactly 24 bytes: the seqs [from, to) that lived in
 * the segments with ids first_id..last_id, which compaction deleted:
 *   0 u64 from seq (>= 1)   8 u64 to seq (> from, <= the record's own seq)
 *   16 u32 first segment id   20 u32 last segment id (>= first; for messages only) */
#define REC_SEG_DROP_LEN 24u

struct rec_seg_drop {
	uint64_t from_seq, to_seq;
	uint32_t first_id, last_id;
};

void rec_seg_drop_encode(uint8_t dst[REC_SEG_DROP_LEN], const struct rec_seg_drop *d);

/* Parses a drop payload of the record with seq `seq`. Errors: CS_ECORRUPT (no message). */
int rec_seg_drop_decode(const uint8_t *payload, uint32_t len, uint64_t seq,
                        struct rec_seg_drop *out);

/* Segment header: 64 bytes at offset 0 of every segment file.
 *   0 8 bytes magic "CIDSTSEG"   8 u32 format version   12 u32 header bytes (64)
 *   16 u64 store uid             24 u64 segment id      32 u64 first seq
 *   40 u64 capacity (bytes)      48 u32 window (bytes)  52 u32 zero
 *   56 u64 checksum = XXH3_64bits(header[0..56))
 * window bounds the log bytes written but not yet synced at any moment; recovery looks that
 * far past damage for records that prove it is not a torn tail. */
#define SEG_MAGIC          "CIDSTSEG"
#define SEG_FORMAT_VERSION 1

struct seg_hdr {
	uint32_t version;
	uint64_t store_uid;
	uint64_t id;
	uint64_t first_seq;
	uint64_t capacity;
	uint32_t window;
};

void seg_encode(uint8_t dst[CS_SEG_HEADER], const struct seg_hdr *h);

/* Errors: CS_ECORRUPT (magic, checksum, sizes), CS_EVERSION (newer format). Message set. */
int seg_decode(const uint8_t src[CS_SEG_HEADER], struct seg_hdr *h);

/* Segment file name for id: "%08x.seg" (lowercase hex). buf holds at least 16 bytes. */
void seg_name(char *buf, size_t cap, uint32_t id);
/* Parses a segment file name; returns 0 and sets *id, or -1 if name is not one. */
int seg_parse_name(const char *name, uint32_t *id);

#endif
