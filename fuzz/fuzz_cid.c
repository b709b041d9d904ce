/*
 * fuzz_cid.c - libFuzzer target for CID decoding and multibase text.
 *
 * Feeds the input, as bytes and as NUL-terminated text, to the two CID readers and checks
 * what a valid answer promises (engine/cid.c, invariants 1-3):
 *  1. cs_cid_from_bytes accepts the input only whole: the cid holds exactly those bytes.
 *  2. Any accepted CID formats, and the text parses back to the same bytes (parse -> format
 *     -> parse is the identity on bytes); a canonical 'b' or "Qm" input text comes back as
 *     itself, and a 'z' text is the base58btc of the bytes.
 *  3. inspect succeeds, and for a CIDv1 cid_make rebuilds the same bytes from its parts;
 *     a CID with an index key rebuilds from the key with the same codec.
 *  4. Every failure carries a message.
 *  5. base32 and base58 encoders and decoders invert each other on the raw input.
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_cid ../fuzz/corpus/cid
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cid.h"
#include "cidstore.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_cid: check failed: %s (line %d), errmsg \"%s\"\n",   \
			        #cond, __LINE__, cs_errmsg());                                     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The input is longer than any valid CID text well before this; longer inputs only cost
 * time in the O(n^2) base58 round trip. */
#define INPUT_MAX 512

static void check_failure(int rc)
{
	CHECK(rc < 0);
	CHECK(cs_errmsg()[0] != '\0');
}

/* Checks 2 and 3 for a cid that a reader accepted. */
static void check_valid(const cs_cid *c)
{
	char text[CS_CID_TEXT_MAX];
	cs_cid p, m;
	cs_cid_info info;
	uint8_t key[CID_KEY_LEN];

	CHECK(c->len >= 1 && c->len <= CS_CID_MAX);
	int n = cs_cid_format(c, text, sizeof(text));
	CHECK(n > 0 && (size_t)n == strlen(text));
	CHECK(cs_cid_parse(text, &p) == 0);
	CHECK(p.len == c->len && memcmp(p.bytes, c->bytes, c->len) == 0);

	/* A buffer one byte short is refused, and nothing is written into it. */
	char shortbuf[CS_CID_TEXT_MAX];
	memset(shortbuf, 'X', sizeof(shortbuf));
	CHECK(cs_cid_format(c, shortbuf, (size_t)n) == CS_EBUFSIZE);
	CHECK(shortbuf[0] == 'X');

	CHECK(cs_cid_inspect(c, &info) == 0);
	CHECK(info.digest >= c->bytes && info.digest + info.digest_len == c->bytes + c->len);
	if (info.version == 0) {
		CHECK(c->len == 34 && n == 46 && text[0] == 'Q' && text[1] == 'm');
	} else {
		CHECK(info.version == 1 && text[0] == 'b');
		CHECK(cid_make(1, info.codec, info.hash, info.digest, info.digest_len, &m) == 0);
		CHECK(m.len == c->len && memcmp(m.bytes, c->bytes, c->len) == 0);
	}

	int rc = cid_key(c, key);
	if (rc == 0) {
		CHECK(cid_from_key(key, info.codec, &m) == 0);
		uint8_t key2[CID_KEY_LEN];
		CHECK(cid_key(&m, key2) == 0 && memcmp(key, key2, CID_KEY_LEN) == 0);
	} else {
		CHECK(rc == CS_ENOTFOUND);
	}
}

static void check_bases(const uint8_t *data, size_t size)
{
	static char text[INPUT_MAX * 2 + 8];
	static uint8_t out[INPUT_MAX + 8];

	int n = cid_base32_encode(data, size, text, sizeof(text));
	CHECK(n >= 0);
	CHECK(cid_base32_decode(text, (size_t)n, out, sizeof(out)) == (int)size);
	CHECK(memcmp(out, data, size) == 0);

	n = cid_base58_encode(data, size, text, sizeof(text));
	CHECK(n >= 0);
	CHECK(cid_base58_decode(text, (size_t)n, out, sizeof(out)) == (int)size);
	CHECK(memcmp(out, data, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char text[INPUT_MAX + 1];
	cs_cid c;
	int rc;

	if (size > INPUT_MAX)
		return -1; /* keep such inputs out of the corpus */

	/* As a binary CID (check 1). */
	rc = cs_cid_from_bytes(data, size, &c);
	if (rc == 0) {
		CHECK(c.len == size && memcmp(c.bytes, data, size) == 0);
		check_valid(&c);
	} else {
		check_failure(rc);
		CHECK(rc == CS_EINVAL || rc == CS_ELIMIT);
		CHECK(rc != CS_ELIMIT || size > CS_CID_MAX);
	}

	/* As text, cut at the first NUL as a C caller would see it. */
	memcpy(text, data, size);
	text[size] = '\0';
	rc = cs_cid_parse(text, &c);
	if (rc == 0) {
		check_valid(&c);
		char again[CS_CID_TEXT_MAX];
		CHECK(cs_cid_format(&c, again, sizeof(again)) > 0);
		/* Canonical spellings come back unchanged (invariant 3); 'b' text that holds a
		 * CIDv0's bytes is formatted as "Qm...", so only compare like with like. */
		if ((text[0] == 'b' && again[0] == 'b') || (text[0] == 'Q' && text[1] == 'm'))
			CHECK(strcmp(text, again) == 0);
		if (text[0] == 'z') {
			CHECK(cid_base58_encode(c.bytes, c.len, again, sizeof(again)) > 0);
			CHECK(strcmp(text + 1, again) == 0);
		}
		if (text[0] == 'B') {
			for (size_t i = 1; text[i] != '\0' && again[0] == 'b'; i++) {
				char lo = text[i] >= 'A' && text[i] <= 'Z' ? (char)(text[i] + 32)
				                                           : text[i];
				CHECK(lo == again[i]);
			}
		}
	} else {
		check_failure(rc);
		CHECK(rc == CS_EINVAL || rc == CS_ELIMIT);
	}

	check_bases(data, size);
	return 0;
}
