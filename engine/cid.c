/*
 * cid.c - CIDs, multihashes, varints, multibase text and the two hash functions.
 *
 * A CIDv1 is <varint 1><varint codec><varint hash code><varint digest length><digest>; a
 * CIDv0 is the bare sha2-256 multihash 0x12 0x20 <32 bytes>, written in base58btc ("Qm...").
 * Text for a CIDv1 is multibase: 'b' + RFC 4648 base32 lower case without padding is what we
 * write; 'B' (base32 upper) and 'z' (base58btc) are also read. Every byte string that arrives
 * here, from a caller, the disk or a fuzzer, goes through cid_decode() before it is trusted.
 *
 * Invariants:
 *  1. A cs_cid this file accepts or returns as valid has 1 <= len <= CS_CID_MAX and passes
 *     cid_decode(): it is exactly a 34-byte CIDv0, or a CIDv1 whose digest length equals the
 *     bytes left after the digest-length varint (no trailing bytes).
 *  2. Every varint is minimal and at most CID_VARINT_MAX bytes (63 bits), so each value has one
 *     encoding and each CID one binary form; byte equality is CID equality.
 *  3. Text is canonical on output (v1: 'b' + lower base32, v0: 46 base58btc characters), and
 *     the base32 reader refuses non-zero unused bits in the last character, so canonical text
 *     survives parse -> format unchanged. Base58 is a bijection once leading zero bytes are
 *     spelled as '1's.
 *  4. The store indexes only sha2-256 and blake2b-256 with their full 32-byte digests; other
 *     hash functions are valid CIDs but have no index key (cid_key gives CS_ENOTFOUND).
 *  5. No decoder writes past `cap` and no loop runs longer than its input or output bound;
 *     *out is written only on success.
 *
 * Hashing: sha2-256 runs on OpenSSL EVP with one EVP_MD_CTX per thread (created on the
 * thread's first hash, freed at thread exit) and an EVP_MD fetched once. That saves two of
 * the three allocations EVP_Digest() makes per call and hashes small blocks up to 3x faster;
 * OpenSSL 3.0 still allocates its provider context on each init, which no supported API
 * avoids. On large blocks every variant runs at the speed of the CPU's SHA extensions.
 */
#include "cid.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "err.h"

#define VARINT_LIMIT   (UINT64_C(1) << 63) /* first value that needs a tenth byte */
#define CIDV0_LEN      34                  /* 0x12 0x20 + 32-byte digest */
#define CIDV0_TEXT_LEN 46

/* The longest text any valid cs_cid formats to: 'b' + base32 of CS_CID_MAX bytes + NUL. */
#define B32_TEXT_LEN(n) (((n)*8 + 4) / 5)
_Static_assert(1 + B32_TEXT_LEN(CS_CID_MAX) + 1 <= CS_CID_TEXT_MAX, "v1 text fits");
_Static_assert(CIDV0_TEXT_LEN + 1 <= CS_CID_TEXT_MAX, "v0 text fits");
_Static_assert(CID_KEY_LEN == 2 + CS_DIGEST_MAX, "key is a 2-byte code and a digest");

static const char b32_lower[] = "abcdefghijklmnopqrstuvwxyz234567";
static const char b58_alpha[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/* The fields of a decoded CID; the digest is bytes[doff .. doff + dlen). */
struct cid_parts {
	int version;
	uint64_t codec;
	uint64_t hash;
	size_t doff;
	size_t dlen;
};

/* Renders c for an error message: printable ASCII as itself, anything else as \xNN, so a
 * message never carries a control byte or half a UTF-8 sequence. */
static const char *show_char(char c, char buf[8])
{
	unsigned char u = (unsigned char)c;

	if (u >= 0x20 && u < 0x7f)
		snprintf(buf, 8, "'%c'", c);
	else
		snprintf(buf, 8, "'\\x%02x'", u);
	return buf;
}

/* ---- Varints ------------------------------------------------------------------------- */

int cid_varint_put(uint8_t *p, uint64_t v)
{
	int n = 0;

	/* Callers check their values against VARINT_LIMIT and report CS_EINVAL; reaching here
	 * with a larger one would write a tenth byte past the documented room (invariant 2). */
	CS_ASSERT(v < VARINT_LIMIT);
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static int varint_len(uint64_t v)
{
	int n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Reads a varint; returns the bytes consumed, or 0 with *why naming the defect. */
static int varint_read(const uint8_t *p, size_t len, uint64_t *v, const char **why)
{
	uint64_t x = 0;

	for (size_t i = 0; i < CID_VARINT_MAX; i++) {
		if (i >= len) {
			*why = "truncated";
			return 0;
		}
		uint8_t b = p[i];
		/* The ninth byte carries bits 56..62; a continuation bit there asks for bit 63 and
		 * beyond, which multiformats forbids. */
		if (i == CID_VARINT_MAX - 1 && (b & 0x80)) {
			*why = "longer than 9 bytes";
			return 0;
		}
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			/* A final zero byte after others adds nothing: a shorter form exists. */
			if (b == 0 && i > 0) {
				*why = "not minimally encoded";
				return 0;
			}
			*v = x;
			return (int)i + 1;
		}
	}
	CS_ASSERT(0); /* the ninth byte either ends the varint or fails above */
	return 0;
}

int cid_varint_get(const uint8_t *p, size_t len, uint64_t *v)
{
	const char *why = NULL;
	int n = varint_read(p, len, v, &why);

	if (n == 0)
		return cs_fail(CS_EINVAL, "varint is %s", why);
	return n;
}

/* ---- Base32 (RFC 4648, no padding) --------------------------------------------------- */

static int b32_value(char c, bool upper)
{
	char lo = upper ? 'A' : 'a';

	if (c >= lo && c <= lo + 25)
		return c - lo;
	if (c >= '2' && c <= '7')
		return c - '2' + 26;
	return -1;
}

int cid_base32_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	if (len > (SIZE_MAX - 5) / 8 || B32_TEXT_LEN(len) + 1 > cap)
		return cs_fail(CS_EBUFSIZE, "base32 text of %zu bytes does not fit in %zu bytes",
		               len, cap);
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			out[o++] = b32_lower[(acc >> bits) & 31];
		}
	}
	if (bits > 0)
		out[o++] = b32_lower[(acc << (5 - bits)) & 31];
	out[o] = '\0';
	CS_DASSERT(o == B32_TEXT_LEN(len));
	return (int)o;
}

/*
 * Decodes base32 without padding. pos0 is the offset of in[0] within the text the caller
 * parses, so a message can point at the offending character of the whole CID text.
 */
static int b32_decode(const char *in, size_t len, uint8_t *out, size_t cap, bool upper, size_t pos0)
{
	char cb[8];

	for (size_t i = 0; i < len; i++) {
		if (b32_value(in[i], upper) < 0)
			return cs_fail(CS_EINVAL,
			               "CID text has invalid base32 character %s at position %zu",
			               show_char(in[i], cb), pos0 + i);
	}
	/* 8 characters carry 5 bytes; a remainder of 1, 3 or 6 characters cannot end a byte
	 * string, it is what a cut-off text looks like. */
	size_t rem = len % 8;
	if (rem == 1 || rem == 3 || rem == 6)
		return cs_fail(CS_EINVAL,
		               "CID text has %zu base32 characters, which no byte string "
		               "encodes to (is it cut off?)",
		               len);
	size_t n = len / 8 * 5 + rem * 5 / 8;
	if (n > cap)
		return cs_fail(CS_ELIMIT,
		               "CID text decodes to %zu bytes, more than the %zu allowed", n, cap);

	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 5) | (uint32_t)b32_value(in[i], upper);
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Invariant 3: the bits left over must be zero, else two texts would name one CID. */
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		return cs_fail(CS_EINVAL,
		               "CID text's last base32 character %s at position %zu has "
		               "non-zero unused bits",
		               show_char(in[len - 1], cb), pos0 + len - 1);
	CS_DASSERT(o == n);
	return (int)o;
}

int cid_base32_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	return b32_decode(in, len, out, cap, false, 0);
}

/* ---- Base58btc (bitcoin alphabet) ---------------------------------------------------- */

static int b58_value(char c)
{
	const char *p = c ? strchr(b58_alpha, c) : NULL;

	return p ? (int)(p - b58_alpha) : -1;
}

/*
 * Base58 is a big number in base 58, plus one '1' per leading zero byte. The digits are built
 * little-endian inside out itself, so the only bound is cap: the loop over input bytes runs
 * at most cap digits deep and the work is O(len * cap).
 */
int cid_base58_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	size_t zeros = 0;

	while (zeros < len && in[zeros] == 0)
		zeros++;
	if (zeros + 1 > cap)
		goto too_small;

	uint8_t *d = (uint8_t *)out + zeros; /* digits, least significant first */
	size_t m = 0;

	for (size_t i = zeros; i < len; i++) {
		uint32_t carry = in[i];
		for (size_t j = 0; j < m; j++) {
			carry += (uint32_t)d[j] << 8;
			d[j] = (uint8_t)(carry % 58);
			carry /= 58;
		}
		while (carry > 0) {
			if (zeros + m + 1 >= cap)
				goto too_small;
			d[m++] = (uint8_t)(carry % 58);
			carry /= 58;
		}
	}
	for (size_t j = 0; j < m / 2; j++) {
		uint8_t t = d[j];
		d[j] = d[m - 1 - j];
		d[m - 1 - j] = t;
	}
	for (size_t j = 0; j < m; j++)
		out[zeros + j] = b58_alpha[d[j]];
	memset(out, '1', zeros);
	out[zeros + m] = '\0';
	return (int)(zeros + m);

too_small:
	return cs_fail(CS_EBUFSIZE, "base58 text of %zu bytes does not fit in %zu bytes", len, cap);
}

static int b58_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t pos0)
{
	char cb[8];

	for (size_t i = 0; i < len; i++) {
		if (b58_value(in[i]) < 0)
			return cs_fail(
			    CS_EINVAL,
			    "CID text has invalid base58btc character %s at position %zu",
			    show_char(in[i], cb), pos0 + i);
	}
	size_t zeros = 0;
	while (zeros < len && in[zeros] == '1')
		zeros++;
	if (zeros > cap)
		goto too_long;

	/* The number's bytes, least significant first, built in out[0 .. n); moved behind the
	 * zero bytes at the end. */
	size_t n = 0;
	for (size_t i = zeros; i < len; i++) {
		uint32_t carry = (uint32_t)b58_value(in[i]);
		for (size_t j = 0; j < n; j++) {
			carry += (uint32_t)out[j] * 58;
			out[j] = (uint8_t)carry;
			carry >>= 8;
		}
		while (carry > 0) {
			if (zeros + n >= cap)
				goto too_long;
			out[n++] = (uint8_t)carry;
			carry >>= 8;
		}
	}
	for (size_t j = 0; j < n / 2; j++) {
		uint8_t t = out[j];
		out[j] = out[n - 1 - j];
		out[n - 1 - j] = t;
	}
	memmove(out + zeros, out, n);
	memset(out, 0, zeros);
	return (int)(zeros + n);

too_long:
	return cs_fail(CS_ELIMIT, "CID text decodes to more than the %zu bytes allowed", cap);
}

int cid_base58_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	return b58_decode(in, len, out, cap, 0);
}

/* ---- Binary CIDs --------------------------------------------------------------------- */

/* Reads one varint field of a CID at *off, naming the field in any message. `part` is what a
 * truncation is inside of ("the codec", "the multihash"), `name` the field itself. */
static int read_field(const uint8_t *b, size_t len, size_t *off, uint64_t *v, const char *part,
                      const char *name)
{
	const char *why = NULL;
	int n = varint_read(b + *off, len - *off, v, &why);

	if (n == 0) {
		if (strcmp(why, "truncated") == 0)
			return cs_fail(CS_EINVAL, "CID is truncated inside %s", part);
		return cs_fail(CS_EINVAL, "CID %s varint at byte %zu is %s", name, *off, why);
	}
	*off += (size_t)n;
	return 0;
}

/* Validates a binary CID (invariant 1) and splits it. The one place that decides whether
 * bytes are a CID. */
static int cid_decode(const uint8_t *b, size_t len, struct cid_parts *p)
{
	int rc;

	if (len == 0)
		return cs_fail(CS_EINVAL, "CID is empty");
	if (len > CS_CID_MAX)
		return cs_fail(CS_ELIMIT, "CID is %zu bytes, more than the %d-byte limit", len,
		               CS_CID_MAX);
	if (b[0] == CS_HASH_SHA2_256) {
		/* Version 18 does not exist, so a leading 0x12 can only be a CIDv0 multihash. */
		if (len != CIDV0_LEN)
			return cs_fail(CS_EINVAL,
			               "CID starting 0x12 must be a 34-byte CIDv0 "
			               "(sha2-256 multihash), not %zu bytes",
			               len);
		if (b[1] != 32)
			return cs_fail(CS_EINVAL,
			               "CIDv0 multihash digest length must be 32, not %u", b[1]);
		*p = (struct cid_parts){.version = 0,
		                        .codec = CS_CODEC_DAG_PB,
		                        .hash = CS_HASH_SHA2_256,
		                        .doff = 2,
		                        .dlen = 32};
		return 0;
	}

	size_t off = 0;
	uint64_t version, dlen;

	if ((rc = read_field(b, len, &off, &version, "the version", "version")) < 0)
		return rc;
	if (version == 0)
		return cs_fail(CS_EINVAL, "CID version 0 must not be encoded explicitly (a CIDv0 "
		                          "is a bare sha2-256 multihash)");
	if (version != 1)
		return cs_fail(CS_EINVAL, "CID version %llu is not supported",
		               (unsigned long long)version);
	if ((rc = read_field(b, len, &off, &p->codec, "the codec", "codec")) < 0)
		return rc;
	if ((rc = read_field(b, len, &off, &p->hash, "the multihash", "multihash code")) < 0)
		return rc;
	if ((rc = read_field(b, len, &off, &dlen, "the multihash", "multihash length")) < 0)
		return rc;
	if (dlen != len - off)
		return cs_fail(CS_EINVAL,
		               "multihash digest length %llu does not match the %zu "
		               "bytes that follow",
		               (unsigned long long)dlen, len - off);
	p->version = 1;
	p->doff = off;
	p->dlen = (size_t)dlen;
	return 0;
}

static int cid_decode_struct(const cs_cid *cid, struct cid_parts *p)
{
	if (cid == NULL)
		return cs_fail(CS_EINVAL, "CID is NULL");
	/* A cs_cid is a plain value a caller may have filled by hand; its len is untrusted. */
	if (cid->len > CS_CID_MAX)
		return cs_fail(CS_EINVAL, "cs_cid length %u exceeds CS_CID_MAX (%d)", cid->len,
		               CS_CID_MAX);
	return cid_decode(cid->bytes, cid->len, p);
}

int cid_make(int version, uint64_t codec, uint64_t hash, const uint8_t *digest, size_t dlen,
             cs_cid *out)
{
	if (dlen > 0 && digest == NULL)
		return cs_fail(CS_EINVAL, "digest is NULL");
	if (version == 0) {
		if (codec != CS_CODEC_DAG_PB || hash != CS_HASH_SHA2_256 || dlen != 32)
			return cs_fail(CS_EINVAL, "a CIDv0 must be dag-pb with a 32-byte sha2-256 "
			                          "digest");
		out->len = CIDV0_LEN;
		out->bytes[0] = CS_HASH_SHA2_256;
		out->bytes[1] = 32;
		memcpy(out->bytes + 2, digest, 32);
		return 0;
	}
	if (version != 1)
		return cs_fail(CS_EINVAL, "CID version %d is not supported", version);
	if (codec >= VARINT_LIMIT)
		return cs_fail(CS_EINVAL, "codec 0x%llx does not fit a 63-bit varint",
		               (unsigned long long)codec);
	if (hash >= VARINT_LIMIT)
		return cs_fail(CS_EINVAL, "hash code 0x%llx does not fit a 63-bit varint",
		               (unsigned long long)hash);
	if (dlen > CS_CID_MAX)
		goto too_long;
	size_t total = 1 + (size_t)varint_len(codec) + (size_t)varint_len(hash) +
	               (size_t)varint_len(dlen) + dlen;
	if (total > CS_CID_MAX)
		goto too_long;

	size_t off = 0;
	off += (size_t)cid_varint_put(out->bytes + off, 1);
	off += (size_t)cid_varint_put(out->bytes + off, codec);
	off += (size_t)cid_varint_put(out->bytes + off, hash);
	off += (size_t)cid_varint_put(out->bytes + off, dlen);
	if (dlen > 0)
		memcpy(out->bytes + off, digest, dlen);
	out->len = (uint8_t)total;
	CS_ASSERT(off + dlen == total);
#ifdef CS_SLOW_CHECKS
	struct cid_parts p;
	CS_DASSERT(cid_decode(out->bytes, out->len, &p) == 0 && p.codec == codec &&
	           p.hash == hash && p.dlen == dlen);
#endif
	return 0;

too_long:
	return cs_fail(CS_ELIMIT, "a CID with a %zu-byte digest is longer than %d bytes", dlen,
	               CS_CID_MAX);
}

/* ---- Hashing ------------------------------------------------------------------------- */

static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static const EVP_MD *sha256_md;      /* fetched once, lives as long as the process */
static pthread_key_t sha256_ctx_key; /* each thread's EVP_MD_CTX, freed at thread exit */

static void sha256_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void hash_init(void)
{
	/* sodium_init picks the fastest blake2b for this CPU; it only fails when it cannot
	 * work at all, and then hashing must not pretend to. */
	int rc = sodium_init();
	CS_ASSERT(rc >= 0);
	/* An explicitly fetched EVP_MD spares each init the provider lookup that EVP_sha256()
	 * implies; if fetching fails the implicit one still works. */
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	sha256_md = md != NULL ? md : EVP_sha256();
	rc = pthread_key_create(&sha256_ctx_key, sha256_ctx_free);
	CS_ASSERT(rc == 0);
}

size_t cid_hash_len(uint64_t hash)
{
	switch (hash) {
	case CS_HASH_SHA2_256:
	case CS_HASH_BLAKE2B_256:
		return 32;
	}
	return 0;
}

static int sha256(const void *data, size_t len, uint8_t *digest)
{
	EVP_MD_CTX *ctx = pthread_getspecific(sha256_ctx_key);
	unsigned int n = 0;

	if (ctx == NULL) {
		ctx = EVP_MD_CTX_new();
		if (ctx == NULL)
			return cs_fail(-ENOMEM, "cannot allocate a sha2-256 context");
		if (pthread_setspecific(sha256_ctx_key, ctx) != 0) {
			EVP_MD_CTX_free(ctx);
			return cs_fail(-ENOMEM, "cannot keep this thread's sha2-256 context");
		}
	}
	if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
	    EVP_DigestFinal_ex(ctx, digest, &n) != 1)
		return cs_fail(-ENOMEM, "OpenSSL failed to compute a sha2-256 digest");
	CS_ASSERT(n == 32);
	return 0;
}

int cid_hash(uint64_t hash, const void *data, size_t len, uint8_t *digest)
{
	pthread_once(&hash_once, hash_init);
	switch (hash) {
	case CS_HASH_SHA2_256:
		return sha256(data, len, digest);
	case CS_HASH_BLAKE2B_256:
		/* Unkeyed blake2b with a 32-byte output: multihash 0xb220 is exactly this. */
		crypto_generichash(digest, 32, data, len, NULL, 0);
		return 0;
	}
	return cs_fail(CS_EUNSUPPORTED,
	               "hash function 0x%llx is not supported (only sha2-256 "
	               "0x12 and blake2b-256 0xb220)",
	               (unsigned long long)hash);
}

/* ---- Index keys ---------------------------------------------------------------------- */

int cid_key_codec(const cs_cid *cid, uint8_t key[CID_KEY_LEN], uint64_t *codec)
{
	struct cid_parts p;
	int rc = cid_decode_struct(cid, &p);

	if (rc < 0)
		return rc;
	if (codec != NULL)
		*codec = p.codec;
	/* Invariant 4: only full-length digests of the two computed hashes have a key. */
	if (cid_hash_len(p.hash) == 0 || p.dlen != cid_hash_len(p.hash))
		return cs_fail(CS_ENOTFOUND,
		               "the store holds no blocks under hash function 0x%llx "
		               "with a %zu-byte digest",
		               (unsigned long long)p.hash, p.dlen);
	key[0] = (uint8_t)(p.hash >> 8);
	key[1] = (uint8_t)p.hash;
	memcpy(key + 2, cid->bytes + p.doff, CS_DIGEST_MAX);
	return 0;
}

int cid_key(const cs_cid *cid, uint8_t key[CID_KEY_LEN])
{
	return cid_key_codec(cid, key, NULL);
}

int cid_from_key(const uint8_t key[CID_KEY_LEN], uint64_t codec, cs_cid *out)
{
	uint64_t hash = (uint64_t)key[0] << 8 | key[1];

	if (cid_hash_len(hash) != CS_DIGEST_MAX)
		return cs_fail(CS_EINVAL,
		               "index key names hash function 0x%04llx, which the store "
		               "never keys",
		               (unsigned long long)hash);
	return cid_make(1, codec, hash, key + 2, CS_DIGEST_MAX, out);
}

/* ---- Public API ---------------------------------------------------------------------- */

CS_API int cs_cid_from_bytes(const void *bytes, size_t len, cs_cid *out)
{
	struct cid_parts p;
	int rc;

	cs_clear_error();
	if (out == NULL || (bytes == NULL && len > 0))
		return cs_fail(CS_EINVAL, "cs_cid_from_bytes: NULL argument");
	if ((rc = cid_decode(bytes, len, &p)) < 0)
		return rc;
	out->len = (uint8_t)len;
	memcpy(out->bytes, bytes, len);
	return 0;
}

CS_API int cs_cid_parse(const char *text, cs_cid *out)
{
	uint8_t buf[CS_CID_MAX];
	struct cid_parts p;
	char cb[8];
	int n, rc;

	cs_clear_error();
	if (text == NULL || out == NULL)
		return cs_fail(CS_EINVAL, "cs_cid_parse: NULL argument");
	size_t tlen = strnlen(text, CS_CID_TEXT_MAX);
	if (tlen == CS_CID_TEXT_MAX)
		return cs_fail(CS_ELIMIT, "CID text is longer than %d characters",
		               CS_CID_TEXT_MAX - 1);
	if (tlen == 0)
		return cs_fail(CS_EINVAL, "CID text is empty");

	if (text[0] == 'Q' && text[1] == 'm') {
		/* 'Q' is no multibase prefix: "Qm" is how every CIDv0 (0x12 0x20 ...) spells. */
		if (tlen != CIDV0_TEXT_LEN)
			return cs_fail(CS_EINVAL, "CIDv0 text must be %d characters, not %zu",
			               CIDV0_TEXT_LEN, tlen);
		n = b58_decode(text, tlen, buf, sizeof(buf), 0);
		if (n < 0)
			return n;
		if (n != CIDV0_LEN || buf[0] != CS_HASH_SHA2_256 || buf[1] != 32)
			return cs_fail(CS_EINVAL, "CIDv0 text does not decode to a sha2-256 "
			                          "multihash");
	} else {
		if (tlen == 1 && strchr("bBz", text[0]) != NULL)
			return cs_fail(CS_EINVAL,
			               "CID text has nothing after the multibase prefix "
			               "%s",
			               show_char(text[0], cb));
		switch (text[0]) {
		case 'b':
			n = b32_decode(text + 1, tlen - 1, buf, sizeof(buf), false, 1);
			break;
		case 'B':
			n = b32_decode(text + 1, tlen - 1, buf, sizeof(buf), true, 1);
			break;
		case 'z':
			n = b58_decode(text + 1, tlen - 1, buf, sizeof(buf), 1);
			break;
		default:
			return cs_fail(CS_EINVAL, "unsupported multibase prefix %s",
			               show_char(text[0], cb));
		}
		if (n < 0)
			return n;
	}
	/* Multibase text may carry either version's bytes (go-cid does the same); the binary
	 * rules decide. */
	if ((rc = cid_decode(buf, (size_t)n, &p)) < 0)
		return rc;
	out->len = (uint8_t)n;
	memcpy(out->bytes, buf, (size_t)n);
	return 0;
}

CS_API int cs_cid_format(const cs_cid *cid, char *buf, size_t cap)
{
	char text[CS_CID_TEXT_MAX];
	struct cid_parts p;
	int n, rc;

	cs_clear_error();
	if ((rc = cid_decode_struct(cid, &p)) < 0)
		return rc;
	if (p.version == 0) {
		n = cid_base58_encode(cid->bytes, cid->len, text, sizeof(text));
	} else {
		text[0] = 'b';
		n = cid_base32_encode(cid->bytes, cid->len, text + 1, sizeof(text) - 1);
		n = n < 0 ? n : n + 1;
	}
	CS_ASSERT(n > 0); /* the _Static_asserts above size text for any valid CID */
	if (buf == NULL || (size_t)n + 1 > cap)
		return cs_fail(CS_EBUFSIZE, "CID text needs %d bytes, the buffer has %zu", n + 1,
		               buf == NULL ? (size_t)0 : cap);
	memcpy(buf, text, (size_t)n + 1);
	return n;
}

CS_API int cs_cid_compute(const void *data, size_t len, uint64_t codec, uint64_t hash, cs_cid *out)
{
	uint8_t digest[CS_DIGEST_MAX];
	size_t dlen = cid_hash_len(hash);
	int rc;

	cs_clear_error();
	if (out == NULL || (data == NULL && len > 0))
		return cs_fail(CS_EINVAL, "cs_cid_compute: NULL argument");
	if (dlen == 0)
		return cs_fail(CS_EUNSUPPORTED,
		               "hash function 0x%llx is not supported (only "
		               "sha2-256 0x12 and blake2b-256 0xb220)",
		               (unsigned long long)hash);
	if (codec >= VARINT_LIMIT)
		return cs_fail(CS_EINVAL, "codec 0x%llx does not fit a 63-bit varint",
		               (unsigned long long)codec);
	if ((rc = cid_hash(hash, data, len, digest)) < 0)
		return rc;
	return cid_make(1, codec, hash, digest, dlen, out);
}

CS_API int cs_cid_inspect(const cs_cid *cid, cs_cid_info *out)
{
	struct cid_parts p;
	int rc;

	cs_clear_error();
	if (out == NULL)
		return cs_fail(CS_EINVAL, "cs_cid_inspect: NULL argument");
	if ((rc = cid_decode_struct(cid, &p)) < 0)
		return rc;
	*out = (cs_cid_info){.version = p.version,
	                     .codec = p.codec,
	                     .hash = p.hash,
	                     .digest = cid->bytes + p.doff,
	                     .digest_len = p.dlen};
	return 0;
}
