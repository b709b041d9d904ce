/*
 * test_cid.c - proves that engine/cid.c reads and writes CIDs as the multiformats specs do.
 *
 * What it shows:
 *  - the two hash functions give the published digests (FIPS 180-2 "abc" and "", BLAKE2b-256
 *    "abc"), also from several threads at once;
 *  - known CIDs computed by other implementations (the empty raw block, the empty UnixFS
 *    directory in v0 and v1, Qm... strings from the wild) parse, format back to the same
 *    text, and carry the digests an independent decoder (Python) found in them;
 *  - varints are minimal, at most 9 bytes, and every malformed text or binary CID gets the
 *    exact error code and a message naming the defect; every truncation of a valid CID fails;
 *  - the limits hold at their edges: a 64-byte CID works, 65 bytes is CS_ELIMIT, text at
 *    CS_CID_TEXT_MAX is CS_ELIMIT, a buffer one byte short is CS_EBUFSIZE;
 *  - index keys: 2-byte big-endian hash code + digest, equal for a v0 and its v1, and
 *    cid_from_key inverts cid_key;
 *  - seeded random round trips: parts -> cid_make -> format -> parse -> same bytes and parts,
 *    and base32 / base58 encode -> decode of random byte strings with leading zeros.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cid.h"
#include "cidstore.h"

/* ---- Helpers ------------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic across runs and platforms. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static void hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
	assert_int_equal(strlen(hex), 2 * n);
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

static void assert_digest(const uint8_t *got, size_t len, const char *hex)
{
	uint8_t want[64];

	hex_to_bytes(hex, want, len);
	assert_memory_equal(got, want, len);
}

/* Asserts that the last call failed with code and a message containing `part`. */
static void assert_fail(int rc, int code, const char *part)
{
	assert_int_equal(rc, code);
	assert_true(cs_errmsg()[0] != '\0');
	if (part != NULL && strstr(cs_errmsg(), part) == NULL)
		fail_msg("message \"%s\" does not contain \"%s\"", cs_errmsg(), part);
}

/* Parses text, formats it, checks the text comes back identical, and returns the cid. */
static cs_cid parse_format_same(const char *text)
{
	cs_cid c, c2;
	char buf[CS_CID_TEXT_MAX];

	assert_int_equal(cs_cid_parse(text, &c), 0);
	assert_string_equal(cs_errmsg(), "");
	int n = cs_cid_format(&c, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(text));
	assert_string_equal(buf, text);
	assert_int_equal(cs_cid_from_bytes(c.bytes, c.len, &c2), 0);
	assert_int_equal(c2.len, c.len);
	assert_memory_equal(c2.bytes, c.bytes, c.len);
	return c;
}

static const char *EMPTY_SHA256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
static const char *ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
static const char *ABC_BLAKE2B = "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319";
/* The empty raw block, sha2-256, CIDv1, as go-cid and js-multiformats write it. */
static const char *EMPTY_RAW_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

/* ---- Hashes -------------------------------------------------------------------------- */

static void test_hash_vectors(void **state)
{
	uint8_t d[32];

	assert_int_equal(cid_hash_len(CS_HASH_SHA2_256), 32);
	assert_int_equal(cid_hash_len(CS_HASH_BLAKE2B_256), 32);
	assert_int_equal(cid_hash_len(0x13), 0); /* sha2-512: not computed by the store */
	assert_int_equal(cid_hash_len(0), 0);

	assert_int_equal(cid_hash(CS_HASH_SHA2_256, "", 0, d), 0);
	assert_digest(d, 32, EMPTY_SHA256);
	assert_int_equal(cid_hash(CS_HASH_SHA2_256, NULL, 0, d), 0);
	assert_digest(d, 32, EMPTY_SHA256);
	assert_int_equal(cid_hash(CS_HASH_SHA2_256, "abc", 3, d), 0);
	assert_digest(d, 32, ABC_SHA256);
	assert_int_equal(cid_hash(CS_HASH_BLAKE2B_256, "abc", 3, d), 0);
	assert_digest(d, 32, ABC_BLAKE2B);
	/* FIPS 180-2 two-block message: crosses the 64-byte block boundary. */
	const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	assert_int_equal(cid_hash(CS_HASH_SHA2_256, m, strlen(m), d), 0);
	assert_digest(d, 32, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

	assert_fail(cid_hash(0x13, "abc", 3, d), CS_EUNSUPPORTED, "0x13");
}

struct hash_job {
	uint64_t hash;
	const char *want;
	int bad;
};

static void *hash_thread(void *arg)
{
	struct hash_job *j = arg;
	uint8_t d[32], want[32];

	hex_to_bytes(j->want, want, 32);
	for (int i = 0; i < 2000; i++) {
		if (cid_hash(j->hash, "abc", 3, d) != 0 || memcmp(d, want, 32) != 0)
			j->bad++;
	}
	return NULL;
}

/* Each thread keeps its own sha2-256 context; concurrent hashing must not mix them. */
static void test_hash_threads(void **state)
{
	struct hash_job jobs[4] = {
	    {CS_HASH_SHA2_256, ABC_SHA256, 0},
	    {CS_HASH_BLAKE2B_256, ABC_BLAKE2B, 0},
	    {CS_HASH_SHA2_256, ABC_SHA256, 0},
	    {CS_HASH_SHA2_256, ABC_SHA256, 0},
	};
	pthread_t t[4];

	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hash_thread, &jobs[i]), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(jobs[i].bad, 0);
	}
}

/* ---- Known CIDs ---------------------------------------------------------------------- */

static void test_empty_raw_block(void **state)
{
	cs_cid c, z, up;
	cs_cid_info info;
	char buf[CS_CID_TEXT_MAX];

	assert_int_equal(cs_cid_compute("", 0, CS_CODEC_RAW, CS_HASH_SHA2_256, &c), 0);
	assert_int_equal(cs_cid_format(&c, buf, sizeof(buf)), (int)strlen(EMPTY_RAW_CID));
	assert_string_equal(buf, EMPTY_RAW_CID);
	assert_int_equal(c.len, 36);
	assert_digest(c.bytes, 36,
	              "01551220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

	cs_cid p = parse_format_same(EMPTY_RAW_CID);
	assert_int_equal(p.len, c.len);
	assert_memory_equal(p.bytes, c.bytes, c.len);

	assert_int_equal(cs_cid_inspect(&c, &info), 0);
	assert_int_equal(info.version, 1);
	assert_int_equal(info.codec, CS_CODEC_RAW);
	assert_int_equal(info.hash, CS_HASH_SHA2_256);
	assert_int_equal(info.digest_len, 32);
	assert_ptr_equal(info.digest, c.bytes + 4);
	assert_digest(info.digest, 32, EMPTY_SHA256);

	/* The same CID in base58btc (computed independently) and in upper-case base32. */
	assert_int_equal(cs_cid_parse("zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW", &z), 0);
	assert_int_equal(z.len, c.len);
	assert_memory_equal(z.bytes, c.bytes, c.len);
	assert_int_equal(cs_cid_format(&z, buf, sizeof(buf)), (int)strlen(EMPTY_RAW_CID));
	assert_string_equal(buf, EMPTY_RAW_CID);
	char upper[CS_CID_TEXT_MAX];
	for (size_t i = 0; i <= strlen(EMPTY_RAW_CID); i++)
		upper[i] = (char)(EMPTY_RAW_CID[i] >= 'a' && EMPTY_RAW_CID[i] <= 'z'
		                      ? EMPTY_RAW_CID[i] - 32
		                      : EMPTY_RAW_CID[i]);
	assert_int_equal(cs_cid_parse(upper, &up), 0);
	assert_memory_equal(up.bytes, c.bytes, c.len);
}

static void test_other_computed(void **state)
{
	cs_cid c;
	char buf[CS_CID_TEXT_MAX];

	/* Expected texts from an independent encoder (Python hashlib + base64). */
	assert_int_equal(cs_cid_compute("abc", 3, CS_CODEC_RAW, CS_HASH_BLAKE2B_256, &c), 0);
	assert_true(cs_cid_format(&c, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "bafk2bzacec653aj4mnbds4rrohxt73uyk6nzjfsohoy4wpscojrmrqdi2urrs");
	parse_format_same(buf);

	assert_int_equal(cs_cid_compute("abc", 3, CS_CODEC_DAG_CBOR, CS_HASH_SHA2_256, &c), 0);
	assert_true(cs_cid_format(&c, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "bafyreif2pall7dybz7vecqka3zo24irdwabwdi4wc55jznaq75q7eaavvu");
}

static void test_cidv0(void **state)
{
	cs_cid_info info;

	cs_cid c = parse_format_same("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR");
	assert_int_equal(c.len, 34);
	assert_int_equal(c.bytes[0], 0x12);
	assert_int_equal(c.bytes[1], 0x20);
	assert_digest(c.bytes + 2, 32,
	              "c3c4733ec8affd06cf9e9ff50ffc6bcd2ec85a6170004bb709669c31de94391a");
	assert_int_equal(cs_cid_inspect(&c, &info), 0);
	assert_int_equal(info.version, 0);
	assert_int_equal(info.codec, CS_CODEC_DAG_PB);
	assert_int_equal(info.hash, CS_HASH_SHA2_256);
	assert_int_equal(info.digest_len, 32);
	assert_ptr_equal(info.digest, c.bytes + 2);

	/* QmdfTbBq... is the sha2-256 of zero bytes (an empty dag-pb node), not the empty
	 * directory: its digest is that of the empty raw block. */
	c = parse_format_same("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n");
	assert_int_equal(c.len, 34);
	assert_digest(c.bytes + 2, 32, EMPTY_SHA256);
	cs_cid v1 =
	    parse_format_same("bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
	assert_memory_equal(v1.bytes + 4, c.bytes + 2, 32);

	/* Binary: 34 bytes starting 0x12 0x20 are a CIDv0. */
	cs_cid b;
	assert_int_equal(cs_cid_from_bytes(c.bytes, 34, &b), 0);
	assert_int_equal(cs_cid_inspect(&b, &info), 0);
	assert_int_equal(info.version, 0);

	/* cid_make builds v0 only for dag-pb + sha2-256 + 32 bytes. */
	cs_cid m;
	assert_int_equal(cid_make(0, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, c.bytes + 2, 32, &m), 0);
	assert_int_equal(m.len, 34);
	assert_memory_equal(m.bytes, c.bytes, 34);
	assert_fail(cid_make(0, CS_CODEC_RAW, CS_HASH_SHA2_256, c.bytes + 2, 32, &m), CS_EINVAL,
	            "CIDv0");
	assert_fail(cid_make(0, CS_CODEC_DAG_PB, CS_HASH_BLAKE2B_256, c.bytes + 2, 32, &m),
	            CS_EINVAL, "CIDv0");
	assert_fail(cid_make(0, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, c.bytes + 2, 31, &m), CS_EINVAL,
	            "CIDv0");
}

/* The empty UnixFS directory (dag-pb bytes 0a 02 08 01) in both versions. The brief paired
 * bafybeicz... with QmdfTbBq...; decoding shows its v0 twin is QmUNLLsP... instead. */
static void test_v0_v1_pair(void **state)
{
	static const uint8_t empty_dir[] = {0x0a, 0x02, 0x08, 0x01};
	cs_cid_info i0, i1;
	uint8_t k0[CID_KEY_LEN], k1[CID_KEY_LEN];
	char buf[CS_CID_TEXT_MAX];

	cs_cid v0 = parse_format_same("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
	cs_cid v1 =
	    parse_format_same("bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");
	assert_int_equal(cs_cid_inspect(&v0, &i0), 0);
	assert_int_equal(cs_cid_inspect(&v1, &i1), 0);
	assert_int_equal(i0.version, 0);
	assert_int_equal(i1.version, 1);
	assert_int_equal(i1.codec, CS_CODEC_DAG_PB);
	assert_int_equal(i1.hash, CS_HASH_SHA2_256);
	assert_int_equal(i0.digest_len, 32);
	assert_int_equal(i1.digest_len, 32);
	assert_memory_equal(i0.digest, i1.digest, 32);
	assert_digest(i1.digest, 32,
	              "59948439065f29619ef41280cbb932be52c56d99c5966b65e0111239f098bbef");

	/* Hashing the directory's bytes gives the same CID. */
	cs_cid c;
	assert_int_equal(
	    cs_cid_compute(empty_dir, sizeof(empty_dir), CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &c), 0);
	assert_int_equal(cs_cid_format(&c, buf, sizeof(buf)), 59);
	assert_string_equal(buf, "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354");

	/* One block, one key, whichever version names it. */
	assert_int_equal(cid_key(&v0, k0), 0);
	assert_int_equal(cid_key(&v1, k1), 0);
	assert_memory_equal(k0, k1, CID_KEY_LEN);
}

/* A CIDv1 in base58btc must decode to the same bytes a base32 text does, and back. */
static void test_base58_v1(void **state)
{
	cs_cid c, z;
	char b58[CS_CID_TEXT_MAX];

	assert_int_equal(cs_cid_parse(EMPTY_RAW_CID, &c), 0);
	b58[0] = 'z';
	int n = cid_base58_encode(c.bytes, c.len, b58 + 1, sizeof(b58) - 1);
	assert_true(n > 0);
	assert_string_equal(b58, "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW");
	assert_int_equal(cs_cid_parse(b58, &z), 0);
	assert_int_equal(z.len, c.len);
	assert_memory_equal(z.bytes, c.bytes, c.len);
}

/* ---- Varints ------------------------------------------------------------------------- */

static void test_varint(void **state)
{
	static const struct {
		uint64_t v;
		int len;
	} cases[] = {
	    {0, 1},
	    {1, 1},
	    {127, 1},
	    {128, 2},
	    {0x3fff, 2},
	    {0x4000, 3},
	    {0xb220, 3},
	    {(UINT64_C(1) << 56) - 1, 8},
	    {UINT64_C(1) << 56, 9},
	    {(UINT64_C(1) << 63) - 1, 9},
	};
	uint8_t buf[CID_VARINT_MAX + 1];
	uint64_t v;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(buf, 0xee, sizeof(buf));
		assert_int_equal(cid_varint_put(buf, cases[i].v), cases[i].len);
		assert_int_equal(buf[cases[i].len], 0xee); /* wrote no further */
		assert_int_equal(cid_varint_get(buf, sizeof(buf), &v), cases[i].len);
		assert_int_equal(v, cases[i].v);
		/* One byte short is truncated. */
		assert_fail(cid_varint_get(buf, (size_t)cases[i].len - 1, &v), CS_EINVAL,
		            "truncated");
	}
	static const uint8_t b0xb220[] = {0xa0, 0xe4, 0x02};
	assert_int_equal(cid_varint_get(b0xb220, 3, &v), 3);
	assert_int_equal(v, 0xb220);

	static const uint8_t nonmin[] = {0x81, 0x00};
	assert_fail(cid_varint_get(nonmin, 2, &v), CS_EINVAL, "not minimal");
	static const uint8_t nonmin2[] = {0x80, 0x80, 0x00};
	assert_fail(cid_varint_get(nonmin2, 3, &v), CS_EINVAL, "not minimal");
	static const uint8_t trunc[] = {0x80};
	assert_fail(cid_varint_get(trunc, 1, &v), CS_EINVAL, "truncated");
	assert_fail(cid_varint_get(trunc, 0, &v), CS_EINVAL, "truncated");
	static const uint8_t ten[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	assert_fail(cid_varint_get(ten, 10, &v), CS_EINVAL, "longer than 9");
	static const uint8_t nine_cont[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
	assert_fail(cid_varint_get(nine_cont, 9, &v), CS_EINVAL, "longer than 9");
}

/* ---- Malformed input ----------------------------------------------------------------- */

static void test_bad_text(void **state)
{
	static const struct {
		const char *text;
		int code;
		const char *msg;
	} cases[] = {
	    {"", CS_EINVAL, "empty"},
	    {"b", CS_EINVAL, "nothing after the multibase prefix 'b'"},
	    {"z", CS_EINVAL, "nothing after the multibase prefix 'z'"},
	    /* '1' is not in the base32 alphabet; position counts from the prefix at 0. */
	    {"bafkrei1dwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", CS_EINVAL,
	     "invalid base32 character '1' at position 7"},
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyKu", CS_EINVAL,
	     "invalid base32 character 'K' at position 57"},
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku=", CS_EINVAL,
	     "invalid base32 character '='"},
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk\x01", CS_EINVAL,
	     "'\\x01' at position 58"},
	    /* Two characters more: a 37th byte after the 32-byte digest. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykuaa", CS_EINVAL,
	     "multihash digest length 32 does not match the 33 bytes that follow"},
	    /* Cut to 35 bytes: 31 digest bytes left. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvy", CS_EINVAL,
	     "multihash digest length 32 does not match the 31 bytes that follow"},
	    /* 57 characters: no byte string has that base32 length. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk", CS_EINVAL,
	     "57 base32 characters"},
	    /* Zero characters appended to a valid text: 59 and 62 characters (remainders 3
	     * and 6 of 8) would hide zero bits only, yet no encoder writes them. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykua", CS_EINVAL,
	     "59 base32 characters"},
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykuaaaa", CS_EINVAL,
	     "62 base32 characters"},
	    /* 55 characters end inside a byte: 3 unused bits, and 'v' sets them. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquv", CS_EINVAL,
	     "'v' at position 55 has non-zero unused bits"},
	    /* Last character 'v' instead of 'u' sets an unused bit. */
	    {"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykv", CS_EINVAL,
	     "non-zero unused bits"},
	    {"bafkq", CS_EINVAL, "truncated inside the multihash"}, /* 01 55 */
	    {"bae", CS_EINVAL, "truncated inside the codec"},       /* 01 */
	    {"fa", CS_EINVAL, "unsupported multibase prefix 'f'"},
	    {"f01551220", CS_EINVAL, "unsupported multibase prefix 'f'"},
	    {"mAXASIA", CS_EINVAL, "unsupported multibase prefix 'm'"},
	    {"\xff"
	     "abc",
	     CS_EINVAL, "unsupported multibase prefix '\\xff'"},
	    {"Q", CS_EINVAL, "unsupported multibase prefix 'Q'"},
	    {"QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMn", CS_EINVAL, "46 characters"},
	    {"QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnRR", CS_EINVAL, "46 characters"},
	    /* '0' and 'l' are not in the bitcoin alphabet. */
	    {"QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMn0", CS_EINVAL,
	     "invalid base58btc character '0' at position 45"},
	    {"zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDl", CS_EINVAL,
	     "invalid base58btc character 'l' at position 48"},
	    /* 46 characters starting "Qm" that decode to 34 bytes other than 0x12 0x20 .... */
	    {"Qmzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", CS_EINVAL, "CIDv0 text"},
	    /* 02 02 00 00 and 00 01 00 00: versions 2 and 0 of 01 01 00 00, which is valid
	     * (codec 1, identity hash, empty digest). */
	    {"baibaaaa", CS_EINVAL, "CID version 2 is not supported"},
	    {"baaaqaaa", CS_EINVAL, "CID version 0 must not be encoded explicitly"},
	};
	cs_cid c;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&c, 0x5a, sizeof(c));
		int rc = cs_cid_parse(cases[i].text, &c);
		if (rc != cases[i].code)
			fail_msg("case %zu \"%s\": got %d (%s), want %d", i, cases[i].text, rc,
			         cs_errmsg(), cases[i].code);
		assert_fail(rc, cases[i].code, cases[i].msg);
		assert_int_equal(c.len, 0x5a); /* *out untouched on failure */
	}
	assert_int_equal(cs_cid_parse("baeaqaaa", &c), 0); /* the valid neighbour: 01 01 00 00 */
	assert_int_equal(c.len, 4);
	assert_fail(cs_cid_parse(NULL, &c), CS_EINVAL, NULL);
	assert_fail(cs_cid_parse(EMPTY_RAW_CID, NULL), CS_EINVAL, NULL);

	/* Too long: text of CS_CID_TEXT_MAX characters, and text short enough that decodes to
	 * more than CS_CID_MAX bytes. */
	char big[CS_CID_TEXT_MAX + 8];
	memset(big, 'a', sizeof(big));
	big[0] = 'b';
	big[CS_CID_TEXT_MAX] = '\0';
	assert_fail(cs_cid_parse(big, &c), CS_ELIMIT, "longer than");
	big[CS_CID_TEXT_MAX - 2] = '\0'; /* 126 characters: within the text bound */
	assert_fail(cs_cid_parse(big, &c), CS_ELIMIT, "78 bytes");
	big[110] = '\0'; /* 109 base32 characters */
	assert_fail(cs_cid_parse(big, &c), CS_ELIMIT, "68 bytes");
	memset(big, 'z', 100);
	big[100] = '\0';
	assert_fail(cs_cid_parse(big, &c), CS_ELIMIT, NULL);
}

static void test_bad_binary(void **state)
{
	uint8_t good[36];
	uint8_t b[80];
	cs_cid c;

	hex_to_bytes("01551220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	             good, 36);
	assert_int_equal(cs_cid_from_bytes(good, 36, &c), 0);

	/* Every strict prefix of a valid CID is malformed, never accepted or crashed on. */
	for (size_t n = 0; n < 36; n++) {
		int rc = cs_cid_from_bytes(good, n, &c);
		assert_fail(rc, CS_EINVAL,
		            n == 0   ? "empty"
		            : n == 1 ? "truncated inside the codec"
		            : n < 4  ? "truncated inside the multihash"
		                     : "does not match");
	}
	/* Trailing byte. */
	memcpy(b, good, 36);
	b[36] = 0;
	assert_fail(cs_cid_from_bytes(b, 37, &c), CS_EINVAL,
	            "multihash digest length 32 does not match the 33 bytes that follow");
	/* Digest length 31 with 32 bytes following. */
	b[3] = 31;
	assert_fail(cs_cid_from_bytes(b, 36, &c), CS_EINVAL,
	            "multihash digest length 31 does not match the 32 bytes that follow");
	/* Non-minimal version varint 0x81 0x00. */
	static const uint8_t nonmin[] = {0x81, 0x00, 0x55, 0x00, 0x00};
	assert_fail(cs_cid_from_bytes(nonmin, sizeof(nonmin), &c), CS_EINVAL,
	            "version varint at byte 0 is not minimal");
	/* Non-minimal codec: 0xd5 0x00 for 0x55. */
	static const uint8_t nonmin_codec[] = {0x01, 0xd5, 0x00, 0x00, 0x00};
	assert_fail(cs_cid_from_bytes(nonmin_codec, sizeof(nonmin_codec), &c), CS_EINVAL,
	            "codec varint at byte 1 is not minimal");
	/* A 10-byte codec varint. */
	static const uint8_t ten[] = {0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	                              0xff, 0xff, 0xff, 0x01, 0x00, 0x00};
	assert_fail(cs_cid_from_bytes(ten, sizeof(ten), &c), CS_EINVAL,
	            "codec varint at byte 1 is longer than 9 bytes");
	static const uint8_t ten_hash[] = {0x01, 0x55, 0x80, 0x80, 0x80, 0x80, 0x80,
	                                   0x80, 0x80, 0x80, 0x80, 0x01, 0x00};
	assert_fail(cs_cid_from_bytes(ten_hash, sizeof(ten_hash), &c), CS_EINVAL,
	            "multihash code varint at byte 2 is longer than 9 bytes");
	static const uint8_t nonmin_len[] = {0x01, 0x55, 0x00, 0x80, 0x00};
	assert_fail(cs_cid_from_bytes(nonmin_len, sizeof(nonmin_len), &c), CS_EINVAL,
	            "multihash length varint at byte 3 is not minimal");
	/* Versions 2 and 0 (explicit), and a 300-byte-long claimed digest. */
	memcpy(b, good, 36);
	b[0] = 2;
	assert_fail(cs_cid_from_bytes(b, 36, &c), CS_EINVAL, "CID version 2 is not supported");
	b[0] = 0;
	assert_fail(cs_cid_from_bytes(b, 36, &c), CS_EINVAL, "version 0");
	static const uint8_t big_version[] = {0x80, 0x01, 0x55, 0x00, 0x00};
	assert_fail(cs_cid_from_bytes(big_version, sizeof(big_version), &c), CS_EINVAL,
	            "CID version 128 is not supported");
	static const uint8_t long_digest[] = {0x01, 0x55, 0x12, 0xac, 0x02, 0x00};
	assert_fail(cs_cid_from_bytes(long_digest, sizeof(long_digest), &c), CS_EINVAL,
	            "digest length 300 does not match the 1 bytes");
	/* 0x12 first but not 34 bytes, or 0x12 0x21: not a CIDv0. */
	b[0] = 0x12;
	b[1] = 0x20;
	assert_fail(cs_cid_from_bytes(b, 33, &c), CS_EINVAL, "not 33 bytes");
	assert_fail(cs_cid_from_bytes(b, 1, &c), CS_EINVAL, "not 1 bytes");
	b[1] = 0x21;
	assert_fail(cs_cid_from_bytes(b, 34, &c), CS_EINVAL, "must be 32, not 33");
	/* Longer than CS_CID_MAX. */
	memset(b, 0, sizeof(b));
	assert_fail(cs_cid_from_bytes(b, CS_CID_MAX + 1, &c), CS_ELIMIT, "65 bytes");
	assert_fail(cs_cid_from_bytes(b, 0, NULL), CS_EINVAL, NULL);
	assert_fail(cs_cid_from_bytes(NULL, 3, &c), CS_EINVAL, NULL);

	/* A hand-filled cs_cid is validated too. */
	cs_cid bad = {.len = 200};
	char buf[CS_CID_TEXT_MAX];
	cs_cid_info info;
	uint8_t key[CID_KEY_LEN];
	assert_fail(cs_cid_format(&bad, buf, sizeof(buf)), CS_EINVAL, "200");
	assert_fail(cs_cid_inspect(&bad, &info), CS_EINVAL, "200");
	assert_fail(cid_key(&bad, key), CS_EINVAL, "200");
	bad.len = 0;
	assert_fail(cs_cid_format(&bad, buf, sizeof(buf)), CS_EINVAL, "empty");
	assert_fail(cs_cid_format(NULL, buf, sizeof(buf)), CS_EINVAL, NULL);
	assert_fail(cs_cid_inspect(&c, NULL), CS_EINVAL, NULL);
}

/* ---- Limits and buffers -------------------------------------------------------------- */

static void test_limits(void **state)
{
	uint8_t digest[64];
	cs_cid c, p;
	char buf[CS_CID_TEXT_MAX];

	for (int i = 0; i < 64; i++)
		digest[i] = (uint8_t)(i * 7 + 1);
	/* 1 + 1 + 1 + 1 + 60 = 64 bytes: the largest CID. */
	assert_int_equal(cid_make(1, CS_CODEC_RAW, 0x00, digest, 60, &c), 0);
	assert_int_equal(c.len, CS_CID_MAX);
	int n = cs_cid_format(&c, buf, sizeof(buf));
	assert_int_equal(n, 1 + (CS_CID_MAX * 8 + 4) / 5);
	assert_int_equal(cs_cid_parse(buf, &p), 0);
	assert_memory_equal(p.bytes, c.bytes, c.len);
	assert_fail(cid_make(1, CS_CODEC_RAW, 0x00, digest, 61, &c), CS_ELIMIT, "61-byte");
	assert_fail(cid_make(1, UINT64_C(1) << 40, CS_HASH_BLAKE2B_256, digest, 54, &c), CS_ELIMIT,
	            NULL);
	assert_fail(cid_make(2, CS_CODEC_RAW, CS_HASH_SHA2_256, digest, 32, &c), CS_EINVAL,
	            "version 2");
	assert_fail(cid_make(1, UINT64_C(1) << 63, CS_HASH_SHA2_256, digest, 32, &c), CS_EINVAL,
	            "codec");
	assert_fail(cid_make(1, CS_CODEC_RAW, UINT64_MAX, digest, 32, &c), CS_EINVAL, "hash");
	assert_fail(cid_make(1, CS_CODEC_RAW, CS_HASH_SHA2_256, NULL, 32, &c), CS_EINVAL, "NULL");

	/* Format: a buffer exactly the text plus NUL fits; one byte less does not. */
	assert_int_equal(cs_cid_parse(EMPTY_RAW_CID, &c), 0);
	size_t tl = strlen(EMPTY_RAW_CID);
	memset(buf, 'X', sizeof(buf));
	assert_fail(cs_cid_format(&c, buf, tl), CS_EBUFSIZE, "needs 60 bytes");
	assert_int_equal(buf[0], 'X');
	assert_fail(cs_cid_format(&c, NULL, 0), CS_EBUFSIZE, NULL);
	assert_int_equal(cs_cid_format(&c, buf, tl + 1), (int)tl);
	assert_string_equal(buf, EMPTY_RAW_CID);

	/* The encoders' own bounds. */
	char small[9];
	static const uint8_t five[] = {0, 0, 1, 2, 255};
	assert_int_equal(cid_base32_encode(five, 5, small, 9), 8);
	assert_fail(cid_base32_encode(five, 5, small, 8), CS_EBUFSIZE, NULL);
	assert_int_equal(cid_base58_encode(five, 5, small, 6), 5);
	assert_string_equal(small, "11LiA");
	assert_fail(cid_base58_encode(five, 5, small, 5), CS_EBUFSIZE, NULL);
	assert_fail(cid_base58_encode(five, 5, small, 2), CS_EBUFSIZE, NULL);
	uint8_t out[4];
	assert_fail(cid_base58_decode("11LiA", 5, out, 4), CS_ELIMIT, NULL);
	assert_fail(cid_base58_decode("11111", 5, out, 4), CS_ELIMIT, NULL);
	assert_fail(cid_base32_decode("aaaacax7", 8, out, 4), CS_ELIMIT, NULL);
}

static void test_compute_errors(void **state)
{
	cs_cid c;
	cs_cid_info info;
	char buf[CS_CID_TEXT_MAX];

	assert_fail(cs_cid_compute("abc", 3, CS_CODEC_RAW, 0x13, &c), CS_EUNSUPPORTED, "0x13");
	assert_fail(cs_cid_compute("abc", 3, CS_CODEC_RAW, 0x00, &c), CS_EUNSUPPORTED, NULL);
	assert_fail(cs_cid_compute("abc", 3, UINT64_C(1) << 63, CS_HASH_SHA2_256, &c), CS_EINVAL,
	            "codec");
	assert_fail(cs_cid_compute(NULL, 3, CS_CODEC_RAW, CS_HASH_SHA2_256, &c), CS_EINVAL, NULL);
	assert_fail(cs_cid_compute("abc", 3, CS_CODEC_RAW, CS_HASH_SHA2_256, NULL), CS_EINVAL,
	            NULL);

	/* The largest codec, 2^63 - 1, takes a 9-byte varint and still round-trips. */
	uint64_t codec = (UINT64_C(1) << 63) - 1;
	assert_int_equal(cs_cid_compute("abc", 3, codec, CS_HASH_BLAKE2B_256, &c), 0);
	assert_string_equal(cs_errmsg(), "");
	assert_int_equal(c.len, 1 + 9 + 3 + 1 + 32);
	assert_true(cs_cid_format(&c, buf, sizeof(buf)) > 0);
	cs_cid p = parse_format_same(buf);
	assert_int_equal(cs_cid_inspect(&p, &info), 0);
	assert_int_equal(info.codec, codec);
	assert_int_equal(info.hash, CS_HASH_BLAKE2B_256);
	assert_digest(info.digest, 32, ABC_BLAKE2B);
}

/* Hash functions and codecs the store never computes are still valid CIDs. */
static void test_unknown_hash_is_valid(void **state)
{
	uint8_t digest[32], key[CID_KEY_LEN];
	cs_cid c;
	cs_cid_info info;
	char buf[CS_CID_TEXT_MAX];

	memset(digest, 0xab, sizeof(digest));
	/* dag-json (0x0129) over keccak-256 (0x1b). */
	assert_int_equal(cid_make(1, 0x0129, 0x1b, digest, 32, &c), 0);
	assert_true(cs_cid_format(&c, buf, sizeof(buf)) > 0);
	cs_cid p = parse_format_same(buf);
	assert_int_equal(cs_cid_inspect(&p, &info), 0);
	assert_int_equal(info.codec, 0x0129);
	assert_int_equal(info.hash, 0x1b);
	assert_fail(cid_key(&p, key), CS_ENOTFOUND, "0x1b");

	/* Identity hash with an empty digest: the smallest CID. */
	assert_int_equal(cid_make(1, CS_CODEC_RAW, 0x00, NULL, 0, &c), 0);
	assert_int_equal(c.len, 4);
	assert_true(cs_cid_format(&c, buf, sizeof(buf)) > 0);
	parse_format_same(buf);

	/* sha2-256 cut to 20 bytes: a valid multihash, but not one the store keys. */
	assert_int_equal(cid_make(1, CS_CODEC_RAW, CS_HASH_SHA2_256, digest, 20, &c), 0);
	assert_fail(cid_key(&c, key), CS_ENOTFOUND, "20-byte");
}

/* ---- Index keys ---------------------------------------------------------------------- */

static void test_keys(void **state)
{
	uint8_t key[CID_KEY_LEN], key2[CID_KEY_LEN];
	cs_cid c, r;

	assert_int_equal(cs_cid_compute("abc", 3, CS_CODEC_RAW, CS_HASH_SHA2_256, &c), 0);
	assert_int_equal(cid_key(&c, key), 0);
	assert_int_equal(key[0], 0x00);
	assert_int_equal(key[1], 0x12);
	assert_digest(key + 2, 32, ABC_SHA256);
	assert_int_equal(cid_from_key(key, CS_CODEC_RAW, &r), 0);
	assert_int_equal(r.len, c.len);
	assert_memory_equal(r.bytes, c.bytes, c.len);
	/* Another codec, same key: the index stores a block once. */
	assert_int_equal(cid_from_key(key, CS_CODEC_DAG_CBOR, &r), 0);
	assert_int_equal(cid_key(&r, key2), 0);
	assert_memory_equal(key, key2, CID_KEY_LEN);
	assert_int_equal(r.bytes[1], CS_CODEC_DAG_CBOR);

	assert_int_equal(cs_cid_compute("abc", 3, CS_CODEC_RAW, CS_HASH_BLAKE2B_256, &c), 0);
	assert_int_equal(cid_key(&c, key), 0);
	assert_int_equal(key[0], 0xb2);
	assert_int_equal(key[1], 0x20);
	assert_digest(key + 2, 32, ABC_BLAKE2B);
	assert_int_equal(cid_from_key(key, CS_CODEC_RAW, &r), 0);
	assert_memory_equal(r.bytes, c.bytes, c.len);

	/* A v0 keys as its sha2-256 digest. */
	cs_cid v0 = parse_format_same("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n");
	assert_int_equal(cid_key(&v0, key), 0);
	assert_int_equal(key[0], 0x00);
	assert_int_equal(key[1], 0x12);
	assert_digest(key + 2, 32, EMPTY_SHA256);

	/* A key naming a hash the store never keys. */
	key[0] = 0x00;
	key[1] = 0x13;
	assert_fail(cid_from_key(key, CS_CODEC_RAW, &r), CS_EINVAL, "0x0013");
	key[1] = 0x12;
	assert_fail(cid_from_key(key, UINT64_C(1) << 63, &r), CS_EINVAL, "codec");
}

/* ---- Randomized round trips ---------------------------------------------------------- */

static uint64_t rnd_varint_value(void)
{
	/* Spread over every varint length, 1..9 bytes. */
	int bits = (int)(rnd() % 64);
	return bits == 0 ? 0 : rnd() >> (64 - bits);
}

static void test_random_cids(void **state)
{
	static const uint64_t hashes[] = {
	    CS_HASH_SHA2_256, CS_HASH_BLAKE2B_256, 0x00, 0x13, 0x1b, 0xb260};
	uint8_t digest[CS_CID_MAX];
	char text[CS_CID_TEXT_MAX], z[CS_CID_TEXT_MAX];
	int made = 0;

	rng_state = 0x9e3779b97f4a7c15u;
	for (int it = 0; it < 20000; it++) {
		uint64_t codec = rnd_varint_value();
		uint64_t hash = (rnd() & 1) ? hashes[rnd() % 6] : rnd_varint_value();
		size_t dlen = rnd() % (CS_CID_MAX + 1);
		for (size_t i = 0; i < dlen; i++)
			digest[i] = (uint8_t)rnd();
		size_t want = 1;
		for (uint64_t v = codec; v >= 0x80; v >>= 7)
			want++;
		want++;
		for (uint64_t v = hash; v >= 0x80; v >>= 7)
			want++;
		want += 2 + dlen;
		if (dlen >= 0x80)
			want++;

		cs_cid c, p;
		cs_cid_info info;
		int rc = cid_make(1, codec, hash, digest, dlen, &c);
		if (want > CS_CID_MAX) {
			assert_int_equal(rc, CS_ELIMIT);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(c.len, want);
		made++;

		int n = cs_cid_format(&c, text, sizeof(text));
		assert_true(n > 0 && n < CS_CID_TEXT_MAX && text[0] == 'b');
		assert_int_equal(cs_cid_parse(text, &p), 0);
		assert_int_equal(p.len, c.len);
		assert_memory_equal(p.bytes, c.bytes, c.len);
		assert_int_equal(cs_cid_inspect(&p, &info), 0);
		assert_int_equal(info.version, 1);
		assert_int_equal(info.codec, codec);
		assert_int_equal(info.hash, hash);
		assert_int_equal(info.digest_len, dlen);
		if (dlen > 0)
			assert_memory_equal(info.digest, digest, dlen);

		/* The base58btc spelling decodes to the same bytes. */
		z[0] = 'z';
		assert_true(cid_base58_encode(c.bytes, c.len, z + 1, sizeof(z) - 1) > 0);
		assert_int_equal(cs_cid_parse(z, &p), 0);
		assert_memory_equal(p.bytes, c.bytes, c.len);

		/* Every strict prefix fails (a CID never holds a shorter CID). */
		size_t cut = rnd() % c.len;
		assert_int_equal(cs_cid_from_bytes(c.bytes, cut, &p), CS_EINVAL);
	}
	assert_true(made > 5000); /* the test did exercise the success path */

	/* Random v0s: any digest formats to a 46-character "Qm" text and back. */
	for (int it = 0; it < 2000; it++) {
		cs_cid c, p;
		for (int i = 0; i < 32; i++)
			digest[i] = (uint8_t)rnd();
		assert_int_equal(cid_make(0, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, digest, 32, &c), 0);
		assert_int_equal(cs_cid_format(&c, text, sizeof(text)), 46);
		assert_true(text[0] == 'Q' && text[1] == 'm');
		assert_int_equal(cs_cid_parse(text, &p), 0);
		assert_int_equal(p.len, 34);
		assert_memory_equal(p.bytes, c.bytes, 34);
	}
}

static void test_random_bases(void **state)
{
	uint8_t in[96], out[96];
	char text[200];

	/* RFC 4648 section 10 vectors, lower case without padding. */
	static const char *rfc[][2] = {{"", ""},
	                               {"f", "my"},
	                               {"fo", "mzxq"},
	                               {"foo", "mzxw6"},
	                               {"foob", "mzxw6yq"},
	                               {"fooba", "mzxw6ytb"},
	                               {"foobar", "mzxw6ytboi"}};
	for (size_t i = 0; i < 7; i++) {
		size_t l = strlen(rfc[i][0]);
		assert_int_equal(
		    cid_base32_encode((const uint8_t *)rfc[i][0], l, text, sizeof(text)),
		    (int)strlen(rfc[i][1]));
		assert_string_equal(text, rfc[i][1]);
		assert_int_equal(cid_base32_decode(rfc[i][1], strlen(rfc[i][1]), out, sizeof(out)),
		                 (int)l);
		assert_memory_equal(out, rfc[i][0], l);
	}
	/* The base58 example from the IETF draft (draft-msporny-base58). */
	assert_int_equal(cid_base58_encode((const uint8_t *)"Hello World!", 12, text, sizeof(text)),
	                 17);
	assert_string_equal(text, "2NEpo7TZRRrLZSi2U");
	assert_int_equal(cid_base58_decode("2NEpo7TZRRrLZSi2U", 17, out, sizeof(out)), 12);
	assert_memory_equal(out, "Hello World!", 12);

	rng_state = 12345;
	for (int it = 0; it < 5000; it++) {
		size_t len = rnd() % 81;
		size_t zeros = rnd() % 4 == 0 ? rnd() % (len + 1) : 0;
		for (size_t i = 0; i < len; i++)
			in[i] = i < zeros ? 0 : (uint8_t)rnd();

		int n = cid_base32_encode(in, len, text, sizeof(text));
		assert_int_equal(n, (int)((len * 8 + 4) / 5));
		assert_int_equal(cid_base32_decode(text, (size_t)n, out, sizeof(out)), (int)len);
		assert_memory_equal(out, in, len);

		n = cid_base58_encode(in, len, text, sizeof(text));
		assert_true(n >= 0);
		assert_int_equal(strlen(text), (size_t)n);
		size_t lead = 0;
		while (lead < len && in[lead] == 0)
			lead++;
		for (size_t i = 0; i < lead; i++)
			assert_int_equal(text[i], '1');
		if ((size_t)n > lead)
			assert_true(text[lead] != '1'); /* one '1' per zero byte, no more */
		assert_int_equal(cid_base58_decode(text, (size_t)n, out, sizeof(out)), (int)len);
		assert_memory_equal(out, in, len);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_vectors),
	    cmocka_unit_test(test_hash_threads),
	    cmocka_unit_test(test_empty_raw_block),
	    cmocka_unit_test(test_other_computed),
	    cmocka_unit_test(test_cidv0),
	    cmocka_unit_test(test_v0_v1_pair),
	    cmocka_unit_test(test_base58_v1),
	    cmocka_unit_test(test_varint),
	    cmocka_unit_test(test_bad_text),
	    cmocka_unit_test(test_bad_binary),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_compute_errors),
	    cmocka_unit_test(test_unknown_hash_is_valid),
	    cmocka_unit_test(test_keys),
	    cmocka_unit_test(test_random_cids),
	    cmocka_unit_test(test_random_bases),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
