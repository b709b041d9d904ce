/*
 * dagpb.h - the two protobuf messages of a UnixFS file: dag-pb's PBNode and UnixFS's Data
 * (internal).
 *
 *   message PBLink { optional bytes Hash = 1; optional string Name = 2;
 *                    optional uint64 Tsize = 3; }
 *   message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
 *   message Data   { required DataType Type = 1; optional bytes Data = 2;
 *                    optional uint64 filesize = 3; repeated uint64 blocksizes = 4;
 *                    optional uint64 hashType = 5; optional uint64 fanout = 6;
 *                    optional uint32 mode = 7; optional UnixTime mtime = 8; }
 *   message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }
 *
 * Encoders write the canonical forms that go-unixfs (Kubo) and ipfs-unixfs-importer write:
 * a PBNode's Links before its Data, a PBLink's fields in number order, UnixFS fields in
 * number order with blocksizes NOT packed (one tag per value), minimal varints.
 *
 * Decoders validate everything before returning success, touch nothing outside [buf,
 * buf + len), loop at most once per input byte and never recurse. On failure they return
 * CS_ECORRUPT with a message naming the byte offset and the defect; *out is then undefined.
 * The decoded structs borrow pointers into the decoded buffer.
 */
#ifndef CS_DAGPB_H
#define CS_DAGPB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cidstore.h"

#define PB_VARINT_MAX 10 /* bytes of a protobuf varint holding any uint64 */

/* UnixFS Data.Type values. */
#define UFS_RAW        0
#define UFS_DIRECTORY  1
#define UFS_FILE       2
#define UFS_METADATA   3
#define UFS_SYMLINK    4
#define UFS_HAMT_SHARD 5

/* ---- PBNode / PBLink ----------------------------------------------------------------- */

/* One link, as stored. Pointers borrow from the node's buffer (or, for the encoders, from
 * the caller). */
struct pb_link {
	const uint8_t *hash; /* the binary CID of the target */
	size_t hash_len;
	const uint8_t *name; /* UTF-8 as written; not NUL-terminated */
	size_t name_len;
	bool has_name;
	uint64_t tsize; /* cumulative size of the target's DAG, as the writer claimed */
	bool has_tsize;
};

/* A decoded node. The Links section is kept as bytes and walked with pb_links_next(): a
 * node with many links then needs no array. */
struct pb_node {
	const uint8_t *links; /* first byte of the first link's tag, or NULL */
	size_t links_len;     /* bytes of all link fields together */
	size_t n_links;
	const uint8_t *data; /* the Data field's bytes (borrowed) */
	size_t data_len;
	bool has_data;
};

/* Decodes and strictly validates a PBNode (dag-pb spec, "strict" decoding):
 *  - only fields 2 (Links) then 1 (Data), each length-delimited; every Link precedes Data,
 *    Data appears at most once and nothing follows it;
 *  - each PBLink holds Hash, then optionally Name, then optionally Tsize, each at most once
 *    and in that order; Hash is present and is a valid binary CID of at most CS_CID_MAX bytes;
 *  - varints are minimal, at most PB_VARINT_MAX bytes and fit 64 bits; lengths stay inside.
 * Errors: CS_ECORRUPT. */
int pb_node_decode(const uint8_t *buf, size_t len, struct pb_node *out);

/* Walks the links of a node that pb_node_decode() accepted. */
struct pb_link_iter {
	const uint8_t *p;
	const uint8_t *end;
};
void pb_links_begin(const struct pb_node *n, struct pb_link_iter *it);
/* Sets *out to the next link and returns 1, or returns 0 after the last. */
int pb_links_next(struct pb_link_iter *it, struct pb_link *out);

/* Bytes pb_node_encode() writes for these fields. */
size_t pb_node_encoded_len(const struct pb_link *links, size_t n, const uint8_t *data,
                           size_t data_len, bool has_data);

/* Writes the canonical PBNode (links in array order, then Data if has_data) into out
 * (capacity cap) and sets *len. Errors: CS_EBUFSIZE. */
int pb_node_encode(uint8_t *out, size_t cap, const struct pb_link *links, size_t n,
                   const uint8_t *data, size_t data_len, bool has_data, size_t *len);

/* ---- UnixFS Data --------------------------------------------------------------------- */

/* A decoded UnixFS Data message. blocksizes are walked with ufs_blocksizes_next(). */
struct ufs_data {
	uint64_t type;       /* UFS_* */
	const uint8_t *data; /* field 2 (borrowed) */
	size_t data_len;
	bool has_data;
	uint64_t filesize;
	bool has_filesize;
	size_t n_blocksizes;
	uint64_t blocksizes_sum; /* their sum; decoding fails if it overflows 64 bits */
	uint64_t hashtype;
	bool has_hashtype;
	uint64_t fanout;
	bool has_fanout;
	uint32_t mode;
	bool has_mode;
	int64_t mtime_secs;
	uint32_t mtime_nsecs;
	bool has_mtime;
	bool has_mtime_nsecs;
	const uint8_t *msg; /* the whole message, for the blocksizes iterator */
	size_t msg_len;
};

/* Decodes and validates a UnixFS Data message. Fields may come in any order (protobuf
 * allows it) but each singular field at most once; Type is required and one of UFS_*;
 * unknown fields and wrong wire types are refused; blocksizes may be unpacked (as Kubo and
 * the JS importer write them) or packed; mode fits 32 bits; mtime is a valid UnixTime.
 * Errors: CS_ECORRUPT. */
int ufs_decode(const uint8_t *buf, size_t len, struct ufs_data *out);

struct ufs_bs_iter {
	const uint8_t *p; /* next field of the message */
	const uint8_t *end;
	const uint8_t *packed; /* inside a packed run, its next value, else NULL */
	const uint8_t *packed_end;
};
void ufs_blocksizes_begin(const struct ufs_data *u, struct ufs_bs_iter *it);
/* Sets *v to the next blocksize and returns 1, or returns 0 after the last. Only for a
 * message ufs_decode() accepted. */
int ufs_blocksizes_next(struct ufs_bs_iter *it, uint64_t *v);

/* The UnixFS Data of a File node as the builder writes it: Type = File, Data only when
 * data_len > 0, filesize always, one blocksizes field per child. */
struct ufs_file {
	const uint8_t *data; /* borrowed */
	size_t data_len;
	uint64_t filesize;
	const uint64_t *blocksizes; /* borrowed, n_blocksizes entries */
	size_t n_blocksizes;
};

size_t ufs_file_encoded_len(const struct ufs_file *f);

/* Writes the UnixFS Data message of f into out (capacity cap), sets *len. Errors:
 * CS_EBUFSIZE. */
int ufs_file_encode(uint8_t *out, size_t cap, const struct ufs_file *f, size_t *len);

/* Writes a PBNode whose Data is the UnixFS message of f: the same bytes as pb_node_encode()
 * of the links with the output of ufs_file_encode() as Data, without the intermediate copy
 * (a dag-pb leaf carries its whole chunk). Errors: CS_EBUFSIZE. */
size_t pb_file_node_encoded_len(const struct pb_link *links, size_t n, const struct ufs_file *f);
int pb_file_node_encode(uint8_t *out, size_t cap, const struct pb_link *links, size_t n,
                        const struct ufs_file *f, size_t *len);

#endif
