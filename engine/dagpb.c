/*
 * dagpb.c - encode and strictly decode dag-pb PBNodes and UnixFS Data messages.
 *
 * Both messages are protobuf (proto2). A field is a varint key (field number << 3 | wire
 * type) followed by a varint (wire type 0), a varint length and that many bytes (type 2), or
 * four bytes (type 5, fixed32). Only those three wire types occur in these messages.
 *
 * Invariants:
 *  1. Decoders read only inside [buf, buf + len): every length is checked against the bytes
 *     left before it is used, with no pointer arithmetic past the end.
 *  2. Every decoder loop consumes at least one byte per iteration, so no input makes it run
 *     longer than its length; nothing recurses (UnixTime, the one nested message below Data,
 *     is read inline).
 *  3. A node pb_node_decode() accepts re-encodes with pb_node_encode() to exactly its input
 *     bytes: strict order, no duplicates, minimal varints (fuzz/fuzz_dagpb.c checks this).
 *  4. Encoders write exactly the length their *_encoded_len() function reports, and refuse
 *     (CS_EBUFSIZE) before writing past cap.
 */
#include "dagpb.h"

#include <string.h>

#include "err.h"

/* Protobuf keys of the fields below: (number << 3) | wire type. */
#define KEY_NODE_DATA             0x0a /* PBNode.Data = 1, bytes */
#define KEY_NODE_LINKS            0x12 /* PBNode.Links = 2, message */
#define KEY_LINK_HASH             0x0a /* PBLink.Hash = 1, bytes */
#define KEY_LINK_NAME             0x12 /* PBLink.Name = 2, string */
#define KEY_LINK_TSIZE            0x18 /* PBLink.Tsize = 3, varint */
#define KEY_UFS_TYPE              0x08
#define KEY_UFS_DATA              0x12
#define KEY_UFS_FILESIZE          0x18
#define KEY_UFS_BLOCKSIZE         0x20
#define KEY_UFS_BLOCKSIZES_PACKED 0x22
#define KEY_UFS_HASHTYPE          0x28
#define KEY_UFS_FANOUT            0x30
#define KEY_UFS_MODE              0x38
#define KEY_UFS_MTIME             0x42
#define KEY_TIME_SECS             0x08
#define KEY_TIME_NSECS            0x15 /* fixed32 */

/* ---- Varints ------------------------------------------------------------------------- */

static size_t pb_varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static size_t pb_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Reads a minimal protobuf varint of at most 10 bytes whose value fits 64 bits from
 * p[*off .. len). Advances *off. Returns 0 or CS_ECORRUPT naming `what` and the offset. */
static int pb_varint_get(const uint8_t *p, size_t len, size_t *off, uint64_t *v, const char *msg,
                         const char *what)
{
	uint64_t x = 0;
	size_t start = *off;

	for (size_t i = 0; i < PB_VARINT_MAX; i++) {
		if (start + i >= len)
			return cs_fail(CS_ECORRUPT, "%s: %s at byte %zu: truncated varint", msg,
			               what, start);
		uint8_t b = p[start + i];
		/* The tenth byte holds bit 63 only; more would not fit a uint64. */
		if (i == PB_VARINT_MAX - 1 && b > 1)
			return cs_fail(CS_ECORRUPT, "%s: %s at byte %zu: varint overflows 64 bits",
			               msg, what, start);
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			if (b == 0 && i > 0)
				return cs_fail(CS_ECORRUPT,
				               "%s: %s at byte %zu: varint not minimally encoded",
				               msg, what, start);
			*off = start + i + 1;
			*v = x;
			return 0;
		}
	}
	return cs_fail(CS_ECORRUPT, "%s: %s at byte %zu: varint longer than %d bytes", msg, what,
	               start, PB_VARINT_MAX);
}

/* Reads a length prefix at *off and checks that many bytes remain; sets *n. */
static int pb_len_get(const uint8_t *p, size_t len, size_t *off, size_t *n, const char *msg,
                      const char *what)
{
	uint64_t v;
	size_t at = *off;
	int rc = pb_varint_get(p, len, off, &v, msg, what);

	if (rc < 0)
		return rc;
	if (v > len - *off)
		return cs_fail(CS_ECORRUPT,
		               "%s: %s at byte %zu: length %llu runs past the end (%zu bytes left)",
		               msg, what, at, (unsigned long long)v, len - *off);
	*n = (size_t)v;
	return 0;
}

/* ---- PBNode -------------------------------------------------------------------------- */

/* Decodes one PBLink body p[0..len). */
/* Decodes one PBLink; check_cid also checks that its Hash is a CID this store reads (off
 * once the node has been validated whole, as in pb_links_next()). */
static int link_decode(const uint8_t *p, size_t len, size_t base, bool check_cid,
                       struct pb_link *out)
{
	static const char msg[] = "dag-pb link";
	size_t off = 0;
	int last = 0; /* highest field number seen: fields must come in increasing order */
	int rc;

	memset(out, 0, sizeof(*out));
	while (off < len) {
		uint64_t key;
		size_t at = off, n;

		if ((rc = pb_varint_get(p, len, &off, &key, msg, "field key")) < 0)
			return rc;
		int field = key == KEY_LINK_HASH    ? 1
		            : key == KEY_LINK_NAME  ? 2
		            : key == KEY_LINK_TSIZE ? 3
		                                    : 0;
		if (field == 0)
			return cs_fail(CS_ECORRUPT,
			               "%s at byte %zu: unexpected field key 0x%llx (only Hash=1, "
			               "Name=2, Tsize=3 are allowed)",
			               msg, base + at, (unsigned long long)key);
		if (field <= last)
			return cs_fail(CS_ECORRUPT, "%s at byte %zu: field %d %s", msg, base + at,
			               field, field == last ? "repeated" : "out of order");
		last = field;
		switch (field) {
		case 1:
			if ((rc = pb_len_get(p, len, &off, &n, msg, "Hash")) < 0)
				return rc;
			out->hash = p + off;
			out->hash_len = n;
			off += n;
			break;
		case 2:
			if ((rc = pb_len_get(p, len, &off, &n, msg, "Name")) < 0)
				return rc;
			out->name = p + off;
			out->name_len = n;
			out->has_name = true;
			off += n;
			break;
		default:
			if ((rc = pb_varint_get(p, len, &off, &out->tsize, msg, "Tsize")) < 0)
				return rc;
			out->has_tsize = true;
			break;
		}
	}
	if (out->hash == NULL)
		return cs_fail(CS_ECORRUPT, "%s at byte %zu: no Hash", msg, base);
	cs_cid c;
	if (check_cid &&
	    (out->hash_len > CS_CID_MAX || cs_cid_from_bytes(out->hash, out->hash_len, &c) != 0))
		return cs_fail(
		    CS_ECORRUPT,
		    "%s at byte %zu: Hash of %zu bytes is not a binary CID this store reads", msg,
		    base, out->hash_len);
	return 0;
}

int pb_node_decode(const uint8_t *buf, size_t len, struct pb_node *out)
{
	static const char msg[] = "dag-pb node";
	size_t off = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	while (off < len) {
		uint64_t key;
		size_t at = off, n;

		if (out->has_data)
			return cs_fail(CS_ECORRUPT,
			               "%s at byte %zu: field after Data (Links must come first "
			               "and Data only once)",
			               msg, at);
		if ((rc = pb_varint_get(buf, len, &off, &key, msg, "field key")) < 0)
			return rc;
		if (key == KEY_NODE_LINKS) {
			struct pb_link l;

			if ((rc = pb_len_get(buf, len, &off, &n, msg, "link length")) < 0)
				return rc;
			if ((rc = link_decode(buf + off, n, off, true, &l)) < 0)
				return rc;
			if (out->links == NULL)
				out->links = buf + at;
			out->links_len = off + n - (size_t)(out->links - buf);
			out->n_links++;
			off += n;
		} else if (key == KEY_NODE_DATA) {
			if ((rc = pb_len_get(buf, len, &off, &n, msg, "Data")) < 0)
				return rc;
			out->data = buf + off;
			out->data_len = n;
			out->has_data = true;
			off += n;
		} else {
			return cs_fail(CS_ECORRUPT,
			               "%s at byte %zu: unexpected field key 0x%llx (only Links=2 "
			               "and Data=1 are allowed)",
			               msg, at, (unsigned long long)key);
		}
	}
	return 0;
}

void pb_links_begin(const struct pb_node *n, struct pb_link_iter *it)
{
	it->p = n->links;
	it->end = n->links == NULL ? NULL : n->links + n->links_len;
}

int pb_links_next(struct pb_link_iter *it, struct pb_link *out)
{
	size_t off = 0, n;
	uint64_t key;

	if (it->p == NULL || it->p >= it->end)
		return 0;
	size_t left = (size_t)(it->end - it->p);
	/* The node was validated whole, so these reads cannot fail (invariant 1 still holds:
	 * each is bounded by `left`). */
	CS_ASSERT(pb_varint_get(it->p, left, &off, &key, "", "") == 0 && key == KEY_NODE_LINKS);
	CS_ASSERT(pb_len_get(it->p, left, &off, &n, "", "") == 0);
	CS_ASSERT(link_decode(it->p + off, n, 0, false, out) == 0);
	it->p += off + n;
	return 1;
}

static size_t link_body_len(const struct pb_link *l)
{
	size_t n = 1 + pb_varint_len(l->hash_len) + l->hash_len;

	if (l->has_name)
		n += 1 + pb_varint_len(l->name_len) + l->name_len;
	if (l->has_tsize)
		n += 1 + pb_varint_len(l->tsize);
	return n;
}

static size_t links_len(const struct pb_link *links, size_t n)
{
	size_t total = 0;

	for (size_t i = 0; i < n; i++) {
		size_t b = link_body_len(&links[i]);
		total += 1 + pb_varint_len(b) + b;
	}
	return total;
}

static size_t links_put(uint8_t *out, const struct pb_link *links, size_t n)
{
	size_t off = 0;

	for (size_t i = 0; i < n; i++) {
		const struct pb_link *l = &links[i];

		out[off++] = KEY_NODE_LINKS;
		off += pb_varint_put(out + off, link_body_len(l));
		out[off++] = KEY_LINK_HASH;
		off += pb_varint_put(out + off, l->hash_len);
		memcpy(out + off, l->hash, l->hash_len);
		off += l->hash_len;
		if (l->has_name) {
			out[off++] = KEY_LINK_NAME;
			off += pb_varint_put(out + off, l->name_len);
			if (l->name_len > 0)
				memcpy(out + off, l->name, l->name_len);
			off += l->name_len;
		}
		if (l->has_tsize) {
			out[off++] = KEY_LINK_TSIZE;
			off += pb_varint_put(out + off, l->tsize);
		}
	}
	return off;
}

size_t pb_node_encoded_len(const struct pb_link *links, size_t n, const uint8_t *data,
                           size_t data_len, bool has_data)
{
	size_t total = links_len(links, n);

	if (has_data)
		total += 1 + pb_varint_len(data_len) + data_len;
	return total;
}

int pb_node_encode(uint8_t *out, size_t cap, const struct pb_link *links, size_t n,
                   const uint8_t *data, size_t data_len, bool has_data, size_t *len)
{
	size_t need = pb_node_encoded_len(links, n, data, data_len, has_data);

	if (need > cap)
		return cs_fail(CS_EBUFSIZE, "dag-pb node of %zu bytes does not fit %zu", need, cap);
	size_t off = links_put(out, links, n);
	if (has_data) {
		out[off++] = KEY_NODE_DATA;
		off += pb_varint_put(out + off, data_len);
		if (data_len > 0)
			memcpy(out + off, data, data_len);
		off += data_len;
	}
	CS_ASSERT(off == need); /* invariant 4 */
	*len = off;
	return 0;
}

/* ---- UnixFS Data --------------------------------------------------------------------- */

/* Reads a UnixTime message body p[0..len) into u (inline: invariant 2). */
static int time_decode(const uint8_t *p, size_t len, size_t base, struct ufs_data *u)
{
	static const char msg[] = "UnixFS mtime";
	size_t off = 0;
	bool has_secs = false;
	int rc;

	while (off < len) {
		uint64_t key, v;
		size_t at = off;

		if ((rc = pb_varint_get(p, len, &off, &key, msg, "field key")) < 0)
			return rc;
		if (key == KEY_TIME_SECS) {
			if (has_secs)
				return cs_fail(CS_ECORRUPT, "%s at byte %zu: Seconds repeated", msg,
				               base + at);
			if ((rc = pb_varint_get(p, len, &off, &v, msg, "Seconds")) < 0)
				return rc;
			u->mtime_secs = (int64_t)v; /* int64 is two's complement on the wire */
			has_secs = true;
		} else if (key == KEY_TIME_NSECS) {
			if (u->has_mtime_nsecs)
				return cs_fail(CS_ECORRUPT,
				               "%s at byte %zu: FractionalNanoseconds repeated",
				               msg, base + at);
			if (len - off < 4)
				return cs_fail(CS_ECORRUPT, "%s at byte %zu: truncated fixed32",
				               msg, base + at);
			u->mtime_nsecs = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 |
			                 (uint32_t)p[off + 2] << 16 | (uint32_t)p[off + 3] << 24;
			off += 4;
			if (u->mtime_nsecs > 999999999u)
				return cs_fail(
				    CS_ECORRUPT,
				    "%s at byte %zu: %u nanoseconds is not below one second", msg,
				    base + at, u->mtime_nsecs);
			u->has_mtime_nsecs = true;
		} else {
			return cs_fail(CS_ECORRUPT, "%s at byte %zu: unexpected field key 0x%llx",
			               msg, base + at, (unsigned long long)key);
		}
	}
	if (!has_secs)
		return cs_fail(CS_ECORRUPT, "%s at byte %zu: no Seconds", msg, base);
	return 0;
}

/* Counts (and sums) the varints of a packed blocksizes run p[0..len). */
static int packed_decode(const uint8_t *p, size_t len, size_t base, struct ufs_data *u)
{
	size_t off = 0;
	int rc;

	while (off < len) {
		uint64_t v;

		if ((rc = pb_varint_get(p, len, &off, &v, "UnixFS Data", "packed blocksize")) < 0)
			return rc;
		if (v > UINT64_MAX - u->blocksizes_sum)
			return cs_fail(CS_ECORRUPT,
			               "UnixFS Data at byte %zu: blocksizes overflow 64 bits",
			               base);
		u->blocksizes_sum += v;
		u->n_blocksizes++;
	}
	return 0;
}

int ufs_decode(const uint8_t *buf, size_t len, struct ufs_data *out)
{
	static const char msg[] = "UnixFS Data";
	size_t off = 0;
	bool has_type = false;
	int rc;

	memset(out, 0, sizeof(*out));
	out->msg = buf;
	out->msg_len = len;
	while (off < len) {
		uint64_t key, v;
		size_t at = off, n;
		bool dup = false;

		if ((rc = pb_varint_get(buf, len, &off, &key, msg, "field key")) < 0)
			return rc;
		switch (key) {
		case KEY_UFS_TYPE:
			dup = has_type;
			if (dup)
				break;
			if ((rc = pb_varint_get(buf, len, &off, &v, msg, "Type")) < 0)
				return rc;
			if (v > UFS_HAMT_SHARD)
				return cs_fail(CS_ECORRUPT, "%s at byte %zu: unknown Type %llu",
				               msg, at, (unsigned long long)v);
			out->type = v;
			has_type = true;
			break;
		case KEY_UFS_DATA:
			dup = out->has_data;
			if (dup)
				break;
			if ((rc = pb_len_get(buf, len, &off, &n, msg, "Data")) < 0)
				return rc;
			out->data = buf + off;
			out->data_len = n;
			out->has_data = true;
			off += n;
			break;
		case KEY_UFS_FILESIZE:
			dup = out->has_filesize;
			if (dup)
				break;
			if ((rc = pb_varint_get(buf, len, &off, &out->filesize, msg, "filesize")) <
			    0)
				return rc;
			out->has_filesize = true;
			break;
		case KEY_UFS_BLOCKSIZE:
			if ((rc = pb_varint_get(buf, len, &off, &v, msg, "blocksize")) < 0)
				return rc;
			if (v > UINT64_MAX - out->blocksizes_sum)
				return cs_fail(CS_ECORRUPT,
				               "%s at byte %zu: blocksizes overflow 64 bits", msg,
				               at);
			out->blocksizes_sum += v;
			out->n_blocksizes++;
			break;
		case KEY_UFS_BLOCKSIZES_PACKED:
			if ((rc = pb_len_get(buf, len, &off, &n, msg, "packed blocksizes")) < 0)
				return rc;
			if ((rc = packed_decode(buf + off, n, off, out)) < 0)
				return rc;
			off += n;
			break;
		case KEY_UFS_HASHTYPE:
			dup = out->has_hashtype;
			if (dup)
				break;
			if ((rc = pb_varint_get(buf, len, &off, &out->hashtype, msg, "hashType")) <
			    0)
				return rc;
			out->has_hashtype = true;
			break;
		case KEY_UFS_FANOUT:
			dup = out->has_fanout;
			if (dup)
				break;
			if ((rc = pb_varint_get(buf, len, &off, &out->fanout, msg, "fanout")) < 0)
				return rc;
			out->has_fanout = true;
			break;
		case KEY_UFS_MODE:
			dup = out->has_mode;
			if (dup)
				break;
			if ((rc = pb_varint_get(buf, len, &off, &v, msg, "mode")) < 0)
				return rc;
			if (v > UINT32_MAX)
				return cs_fail(CS_ECORRUPT,
				               "%s at byte %zu: mode 0x%llx exceeds 32 bits", msg,
				               at, (unsigned long long)v);
			out->mode = (uint32_t)v;
			out->has_mode = true;
			break;
		case KEY_UFS_MTIME:
			dup = out->has_mtime;
			if (dup)
				break;
			if ((rc = pb_len_get(buf, len, &off, &n, msg, "mtime")) < 0)
				return rc;
			if ((rc = time_decode(buf + off, n, off, out)) < 0)
				return rc;
			out->has_mtime = true;
			off += n;
			break;
		default:
			return cs_fail(CS_ECORRUPT, "%s at byte %zu: unexpected field key 0x%llx",
			               msg, at, (unsigned long long)key);
		}
		if (dup)
			return cs_fail(CS_ECORRUPT, "%s at byte %zu: field %llu repeated", msg, at,
			               (unsigned long long)(key >> 3));
	}
	if (!has_type)
		return cs_fail(CS_ECORRUPT, "%s: no Type (a required field)", msg);
	return 0;
}

void ufs_blocksizes_begin(const struct ufs_data *u, struct ufs_bs_iter *it)
{
	it->p = u->msg;
	it->end = u->msg + u->msg_len;
	it->packed = NULL;
	it->packed_end = NULL;
}

int ufs_blocksizes_next(struct ufs_bs_iter *it, uint64_t *v)
{
	for (;;) {
		size_t off = 0;

		if (it->packed != NULL) {
			if (it->packed < it->packed_end) {
				size_t left = (size_t)(it->packed_end - it->packed);
				CS_ASSERT(pb_varint_get(it->packed, left, &off, v, "", "") == 0);
				it->packed += off;
				return 1;
			}
			it->packed = NULL;
		}
		if (it->p >= it->end)
			return 0;
		/* Skip to the next blocksizes field; the message was validated (invariant 1). */
		size_t left = (size_t)(it->end - it->p), n;
		uint64_t key, skip;
		CS_ASSERT(pb_varint_get(it->p, left, &off, &key, "", "") == 0);
		switch (key & 7) {
		case 0:
			CS_ASSERT(pb_varint_get(it->p, left, &off, &skip, "", "") == 0);
			if (key == KEY_UFS_BLOCKSIZE) {
				*v = skip;
				it->p += off;
				return 1;
			}
			it->p += off;
			break;
		case 2:
			CS_ASSERT(pb_len_get(it->p, left, &off, &n, "", "") == 0);
			if (key == KEY_UFS_BLOCKSIZES_PACKED) {
				it->packed = it->p + off;
				it->packed_end = it->p + off + n;
			}
			it->p += off + n;
			break;
		default:
			CS_ASSERT(0); /* ufs_decode() admits no other wire type at the top level */
		}
	}
}

size_t ufs_file_encoded_len(const struct ufs_file *f)
{
	size_t n = 2; /* Type = File */

	if (f->data_len > 0)
		n += 1 + pb_varint_len(f->data_len) + f->data_len;
	n += 1 + pb_varint_len(f->filesize);
	for (size_t i = 0; i < f->n_blocksizes; i++)
		n += 1 + pb_varint_len(f->blocksizes[i]);
	return n;
}

/* Writes the message of f at out, which has room (checked by the callers). */
static size_t ufs_file_put(uint8_t *out, const struct ufs_file *f)
{
	size_t off = 0;

	out[off++] = KEY_UFS_TYPE;
	out[off++] = UFS_FILE;
	if (f->data_len > 0) {
		out[off++] = KEY_UFS_DATA;
		off += pb_varint_put(out + off, f->data_len);
		memcpy(out + off, f->data, f->data_len);
		off += f->data_len;
	}
	out[off++] = KEY_UFS_FILESIZE;
	off += pb_varint_put(out + off, f->filesize);
	for (size_t i = 0; i < f->n_blocksizes; i++) {
		out[off++] = KEY_UFS_BLOCKSIZE;
		off += pb_varint_put(out + off, f->blocksizes[i]);
	}
	return off;
}

int ufs_file_encode(uint8_t *out, size_t cap, const struct ufs_file *f, size_t *len)
{
	size_t need = ufs_file_encoded_len(f);

	if (need > cap)
		return cs_fail(CS_EBUFSIZE, "UnixFS Data of %zu bytes does not fit %zu", need, cap);
	size_t off = ufs_file_put(out, f);
	CS_ASSERT(off == need); /* invariant 4 */
	*len = off;
	return 0;
}

size_t pb_file_node_encoded_len(const struct pb_link *links, size_t n, const struct ufs_file *f)
{
	size_t d = ufs_file_encoded_len(f);

	return links_len(links, n) + 1 + pb_varint_len(d) + d;
}

int pb_file_node_encode(uint8_t *out, size_t cap, const struct pb_link *links, size_t n,
                        const struct ufs_file *f, size_t *len)
{
	size_t need = pb_file_node_encoded_len(links, n, f);

	if (need > cap)
		return cs_fail(CS_EBUFSIZE, "dag-pb node of %zu bytes does not fit %zu", need, cap);
	size_t off = links_put(out, links, n);
	size_t d = ufs_file_encoded_len(f);
	out[off++] = KEY_NODE_DATA;
	off += pb_varint_put(out + off, d);
	off += ufs_file_put(out + off, f);
	CS_ASSERT(off == need); /* invariant 4 */
	*len = off;
	return 0;
}
