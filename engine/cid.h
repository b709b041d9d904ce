/*
 * cid.h - CIDs, multihashes, varints and multibase text (internal).
 *
 * The public cs_cid_* functions are thin wrappers over these. The index keys blocks by
 * multihash only (hash code and digest), so a block put under two codecs is stored once.
 */
#ifndef CS_CID_H
#define CS_CID_H

#include <stddef.h>
#include <stdint.h>

#include "cidstore.h"
#include "cs_limits.h"

#define CID_VARINT_MAX 9 /* multiformats unsigned varints carry at most 63 bits */

/* Writes v as an unsigned varint at p (room for CID_VARINT_MAX bytes); returns its length.
 * v must be below 2^63 (checked by CS_ASSERT): callers validate caller-supplied values. */
int cid_varint_put(uint8_t *p, uint64_t v);

/* Reads a minimal unsigned varint from p[0..len). Returns the bytes consumed (1..9), or
 * CS_EINVAL for a truncated, over-long or non-minimal encoding. */
int cid_varint_get(const uint8_t *p, size_t len, uint64_t *v);

/* Digest length of a supported hash function, or 0 if unsupported. */
size_t cid_hash_len(uint64_t hash);

/* Hashes data with the multihash function `hash` into digest (cid_hash_len(hash) bytes).
 * sha2-256 runs on OpenSSL's EVP (CPU SHA extensions), blake2b-256 on libsodium.
 * Thread-safe. Errors: CS_EUNSUPPORTED, -ENOMEM (OpenSSL could not allocate its context). */
int cid_hash(uint64_t hash, const void *data, size_t len, uint8_t *digest);

/* Builds a CID from parts. version 0 requires codec dag-pb and sha2-256. Errors: CS_EINVAL,
 * CS_ELIMIT. */
int cid_make(int version, uint64_t codec, uint64_t hash, const uint8_t *digest, size_t dlen,
	     cs_cid *out);

/* The index key of a CID: 2-byte big-endian hash code, then the 32-byte digest.
 * Returns 0, CS_EINVAL (malformed cid) or CS_ENOTFOUND (a hash the store never holds). */
#define CID_KEY_LEN CS_KEY_MAX
int cid_key(const cs_cid *cid, uint8_t key[CID_KEY_LEN]);

/* cid_key() that also sets *codec (when not NULL) to the CID's codec, from one decode; the
 * codec is set for CS_ENOTFOUND too. */
int cid_key_codec(const cs_cid *cid, uint8_t key[CID_KEY_LEN], uint64_t *codec);

/* Inverse of cid_key for a CIDv1 with the given codec. */
int cid_from_key(const uint8_t key[CID_KEY_LEN], uint64_t codec, cs_cid *out);

/* Multibase helpers, exposed for tests and fuzzers. Each encoder returns the text length
 * written (NUL-terminated) or CS_EBUFSIZE; each decoder the byte count or CS_EINVAL /
 * CS_ELIMIT. The multibase prefix character is not included. */
int cid_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int cid_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap);
int cid_base58_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int cid_base58_decode(const char *in, size_t len, uint8_t *out, size_t cap);

#endif
