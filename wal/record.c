/*
 * record.c - encoding and checking of log records and segment headers.
 *
 * docs/FORMAT.md is normative; record.h restates the byte layout. Invariants:
 *   R1. A record starts at a multiple of CS_REC_ALIGN and its padding bytes are zero.
 *   R2. The checksum covers header bytes [0, 32) and the whole payload, so a record that
 *       verifies was written whole by this format's writer.
 *   R3. A header that decodes has a payload length <= CS_REC_PAYLOAD_MAX, so no reader loop
 *       or allocation is ever sized by unchecked disk data.
 */
#include "record.h"

#include <stdio.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>
#ifdef CS_HAVE_XXH_DISPATCH
/* Routes XXH3_64bits, _withSeed and _update to the library's entry points that choose the
 * widest vector code the CPU has (CMakeLists.txt checks that the library exports them). */
#include <xxh_x86dispatch.h>
#endif

#include "endian.h"
#include "err.h"

static uint64_t payload_checksum(const uint8_t hdr[CS_REC_HEADER], const struct iovec *parts,
                                 int nparts)
{
	XXH3_state_t st;
	uint64_t seed = XXH3_64bits(hdr, 32);

	/* One part (every record the writer encodes): the one-shot call, which gives the
	 * streaming digest of the same bytes without the state's setup. */
	if (nparts == 1)
		return XXH3_64bits_withSeed(parts[0].iov_base, parts[0].iov_len, seed);
	XXH3_INITSTATE(&st);
	XXH3_64bits_reset_withSeed(&st, seed);
	for (int i = 0; i < nparts; i++)
		XXH3_64bits_update(&st, parts[i].iov_base, parts[i].iov_len);
	return XXH3_64bits_digest(&st);
}

void rec_encode(uint8_t *dst, struct rec_hdr *h, const struct iovec *parts, int nparts)
{
	uint8_t *p = dst + CS_REC_HEADER;
	size_t len = 0;

	for (int i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	CS_ASSERT(len <= CS_REC_PAYLOAD_MAX); /* before any byte is copied */
	len = 0;
	for (int i = 0; i < nparts; i++) {
		memcpy(p + len, parts[i].iov_base, parts[i].iov_len);
		len += parts[i].iov_len;
	}
	h->len = (uint32_t)len;
	h->version = REC_VERSION;
	CS_ASSERT((h->flags & ~REC_F_KNOWN) == 0);

	put_le32(dst + 0, REC_MAGIC);
	dst[4] = h->type;
	dst[5] = h->flags;
	dst[6] = h->version;
	dst[7] = 0;
	put_le32(dst + 8, h->len);
	put_le32(dst + 12, 0);
	put_le64(dst + 16, h->seq);
	put_le64(dst + 24, h->synced_seq);
	/* The payload now sits contiguous after the header: checksum it in one piece, while
	 * it is still in cache. */
	struct iovec whole = {p, len};
	h->checksum = payload_checksum(dst, &whole, 1);
	put_le64(dst + 32, h->checksum);
	memset(p + len, 0, rec_size(h->len) - CS_REC_HEADER - len); /* R1 */
}

int rec_decode_header(const uint8_t p[CS_REC_HEADER], struct rec_hdr *h)
{
	static const uint8_t zero[CS_REC_HEADER];

	if (memcmp(p, zero, CS_REC_HEADER) == 0)
		return REC_ZERO;
	if (get_le32(p) != REC_MAGIC)
		return REC_BAD;
	h->type = p[4];
	h->flags = p[5];
	h->version = p[6];
	h->len = get_le32(p + 8);
	h->seq = get_le64(p + 16);
	h->synced_seq = get_le64(p + 24);
	h->checksum = get_le64(p + 32);
	if (p[7] != 0 || get_le32(p + 12) != 0 || h->version != REC_VERSION || h->type == 0)
		return REC_BAD;
	if ((h->flags & ~REC_F_KNOWN) != 0 || h->len > CS_REC_PAYLOAD_MAX) /* R3 */
		return REC_BAD;
	if (h->seq == 0 || h->synced_seq >= h->seq)
		return REC_BAD;
	return REC_OK;
}

int rec_verify(const uint8_t hdr[CS_REC_HEADER], const struct rec_hdr *h,
               const struct iovec *payload, int nparts)
{
	return payload_checksum(hdr, payload, nparts) == h->checksum ? 0 : CS_ECORRUPT;
}

void rec_block_meta(uint8_t meta[CS_BLOCK_META], uint16_t hash, uint8_t digest_len, uint32_t codec)
{
	put_le16(meta, hash);
	meta[2] = digest_len;
	meta[3] = 0;
	put_le32(meta + 4, codec);
}

/* The key shared by block and delete payloads: u16 hash, u8 digest length, u8 zero at the
 * start, the digest at `digest_at`. */
static int key_prefix(const uint8_t *payload, uint32_t len, uint32_t digest_at,
                      uint8_t key[CS_KEY_MAX])
{
	if (len < digest_at || payload[3] != 0 || payload[2] != CS_DIGEST_MAX ||
	    len - digest_at < CS_DIGEST_MAX)
		return CS_ECORRUPT;
	uint16_t hash = get_le16(payload);
	key[0] = (uint8_t)(hash >> 8);
	key[1] = (uint8_t)hash;
	memcpy(key + 2, payload + digest_at, CS_DIGEST_MAX);
	return 0;
}

int rec_block_decode(const uint8_t *payload, uint32_t len, struct rec_block *out)
{
	uint8_t key[CS_KEY_MAX];

	if (key_prefix(payload, len, CS_BLOCK_META, key) != 0)
		return CS_ECORRUPT;
	out->hash = get_le16(payload);
	out->digest_len = payload[2];
	out->codec = get_le32(payload + 4);
	out->digest = payload + CS_BLOCK_META;
	out->data = out->digest + out->digest_len;
	out->data_len = len - CS_BLOCK_META - out->digest_len;
	if (out->data_len > CS_BLOCK_MAX)
		return CS_ECORRUPT;
	return 0;
}

int rec_key_decode(const uint8_t *payload, uint32_t len, uint8_t key[CS_KEY_MAX])
{
	return key_prefix(payload, len, CS_BLOCK_META, key);
}

_Static_assert(REC_NAME_SET_META + CS_NAME_MAX + CS_CID_MAX <= CS_REC_PAYLOAD_MAX,
               "a name record fits in a record");
_Static_assert(CS_NAME_MAX <= UINT16_MAX && CS_CID_MAX <= UINT8_MAX,
               "name and CID lengths fit their fields");

void rec_name_set_meta(uint8_t meta[REC_NAME_SET_META], uint16_t name_len, uint8_t cid_len,
                       uint64_t size, int64_t time_ns)
{
	put_le16(meta, name_len);
	meta[2] = cid_len;
	meta[3] = 0;
	put_le64(meta + 4, size);
	put_le64(meta + 12, (uint64_t)time_ns);
}

int rec_name_set_decode(const uint8_t *payload, uint32_t len, struct rec_name_set *out)
{
	if (len < REC_NAME_SET_META || payload[3] != 0)
		return CS_ECORRUPT;
	out->name_len = get_le16(payload);
	out->cid_len = payload[2];
	out->size = get_le64(payload + 4);
	out->time_ns = (int64_t)get_le64(payload + 12);
	if (out->name_len == 0 || out->name_len > CS_NAME_MAX || out->cid_len == 0 ||
	    out->cid_len > CS_CID_MAX ||
	    len != REC_NAME_SET_META + (uint32_t)out->name_len + out->cid_len)
		return CS_ECORRUPT;
	out->name = payload + REC_NAME_SET_META;
	out->cid = out->name + out->name_len;
	return 0;
}

void rec_name_del_meta(uint8_t meta[REC_NAME_DEL_META], uint16_t name_len)
{
	put_le16(meta, name_len);
	put_le16(meta + 2, 0);
}

int rec_name_del_decode(const uint8_t *payload, uint32_t len, struct rec_name_del *out)
{
	if (len < REC_NAME_DEL_META || get_le16(payload + 2) != 0)
		return CS_ECORRUPT;
	out->name_len = get_le16(payload);
	if (out->name_len == 0 || out->name_len > CS_NAME_MAX ||
	    len != REC_NAME_DEL_META + (uint32_t)out->name_len)
		return CS_ECORRUPT;
	out->name = payload + REC_NAME_DEL_META;
	return 0;
}

void rec_pin_meta(uint8_t meta[REC_PIN_META], uint8_t kind, uint8_t cid_len)
{
	meta[0] = kind;
	meta[1] = cid_len;
	put_le16(meta + 2, 0);
}

int rec_pin_decode(uint8_t type, const uint8_t *payload, uint32_t len, struct rec_pin *out)
{
	if (len < REC_PIN_META || get_le16(payload + 2) != 0)
		return CS_ECORRUPT;
	out->kind = payload[0];
	out->cid_len = payload[1];
	if (type == REC_PIN_ADD ? out->kind != REC_PIN_DIRECT && out->kind != REC_PIN_RECURSIVE
	                        : out->kind != 0)
		return CS_ECORRUPT;
	if (out->cid_len == 0 || out->cid_len > CS_CID_MAX || len != REC_PIN_META + out->cid_len)
		return CS_ECORRUPT;
	out->cid = payload + REC_PIN_META;
	return 0;
}

void rec_carry_meta(uint8_t meta[REC_CARRY_META], uint8_t type, uint32_t seg, uint32_t off)
{
	memset(meta, 0, REC_CARRY_META);
	meta[0] = type;
	put_le32(meta + 4, seg);
	put_le32(meta + 8, off);
}

int rec_carry_decode(const uint8_t *payload, uint32_t len, struct rec_carry *out)
{
	uint8_t key[CS_KEY_MAX];
	struct rec_name_del nd;
	struct rec_pin pin;

	if (len < REC_CARRY_META || payload[1] != 0 || get_le16(payload + 2) != 0 ||
	    get_le32(payload + 12) != 0)
		return CS_ECORRUPT;
	out->type = payload[0];
	out->seg = get_le32(payload + 4);
	out->off = get_le32(payload + 8);
	out->payload = payload + REC_CARRY_META;
	out->len = len - REC_CARRY_META;
	if (out->seg == 0 || out->off < CS_SEG_HEADER || out->off % CS_REC_ALIGN != 0)
		return CS_ECORRUPT;
	switch (out->type) {
	case REC_DELETE:
		return rec_key_decode(out->payload, out->len, key);
	case REC_NAME_DEL:
		return rec_name_del_decode(out->payload, out->len, &nd);
	case REC_PIN_DEL:
		return rec_pin_decode(REC_PIN_DEL, out->payload, out->len, &pin);
	default:
		return CS_ECORRUPT;
	}
}

void rec_seg_drop_encode(uint8_t dst[REC_SEG_DROP_LEN], const struct rec_seg_drop *d)
{
	put_le64(dst + 0, d->from_seq);
	put_le64(dst + 8, d->to_seq);
	put_le32(dst + 16, d->first_id);
	put_le32(dst + 20, d->last_id);
}

int rec_seg_drop_decode(const uint8_t *payload, uint32_t len, uint64_t seq,
                        struct rec_seg_drop *out)
{
	if (len != REC_SEG_DROP_LEN)
		return CS_ECORRUPT;
	out->from_seq = get_le64(payload + 0);
	out->to_seq = get_le64(payload + 8);
	out->first_id = get_le32(payload + 16);
	out->last_id = get_le32(payload + 20);
	if (out->from_seq == 0 || out->to_seq <= out->from_seq || out->to_seq > seq ||
	    out->first_id == 0 || out->last_id < out->first_id)
		return CS_ECORRUPT;
	return 0;
}

void seg_encode(uint8_t dst[CS_SEG_HEADER], const struct seg_hdr *h)
{
	memcpy(dst, SEG_MAGIC, 8);
	put_le32(dst + 8, h->version);
	put_le32(dst + 12, CS_SEG_HEADER);
	put_le64(dst + 16, h->store_uid);
	put_le64(dst + 24, h->id);
	put_le64(dst + 32, h->first_seq);
	put_le64(dst + 40, h->capacity);
	put_le32(dst + 48, h->window);
	put_le32(dst + 52, 0);
	put_le64(dst + 56, XXH3_64bits(dst, 56));
}

int seg_decode(const uint8_t src[CS_SEG_HEADER], struct seg_hdr *h)
{
	if (memcmp(src, SEG_MAGIC, 8) != 0)
		return cs_fail(CS_ECORRUPT, "bad segment magic");
	if (get_le64(src + 56) != XXH3_64bits(src, 56))
		return cs_fail(CS_ECORRUPT, "segment header checksum mismatch");
	h->version = get_le32(src + 8);
	if (h->version > SEG_FORMAT_VERSION)
		return cs_fail(CS_EVERSION, "segment format version %u is newer than %u",
		               h->version, SEG_FORMAT_VERSION);
	h->store_uid = get_le64(src + 16);
	h->id = get_le64(src + 24);
	h->first_seq = get_le64(src + 32);
	h->capacity = get_le64(src + 40);
	h->window = get_le32(src + 48);
	if (h->version == 0 || get_le32(src + 12) != CS_SEG_HEADER || get_le32(src + 52) != 0)
		return cs_fail(CS_ECORRUPT, "segment header fields out of range");
	if (h->capacity < CS_SEG_MIN || h->capacity > CS_SEG_MAX || h->id > UINT32_MAX ||
	    h->first_seq == 0 || h->window == 0 || h->window > 2 * CS_BATCH_MAX)
		return cs_fail(CS_ECORRUPT, "segment header fields out of range");
	return 0;
}

void seg_name(char *buf, size_t cap, uint32_t id)
{
	snprintf(buf, cap, "%08x.seg", id);
}

int seg_parse_name(const char *name, uint32_t *id)
{
	uint32_t v = 0;

	for (int i = 0; i < 8; i++) {
		char c = name[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v << 4 | (uint32_t)d;
	}
	if (strcmp(name + 8, ".seg") != 0)
		return -1;
	*id = v;
	return 0;
}
