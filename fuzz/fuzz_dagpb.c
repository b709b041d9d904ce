/*
 * fuzz_dagpb.c - libFuzzer target for the dag-pb and UnixFS decoders and the range reader.
 *
 * Checks what engine/dagpb.c and engine/unixfs.c promise:
 *  1. pb_node_decode either fails with CS_ECORRUPT and a message, or accepts; an accepted
 *     node's links iterate to exactly n_links entries inside the input, and re-encoding them
 *     with its Data gives back the input byte for byte (dagpb.c, invariant 3).
 *  2. ufs_decode (on the node's Data and on the raw input) fails with CS_ECORRUPT and a
 *     message, or accepts; the blocksizes iterator then yields n_blocksizes values summing to
 *     blocksizes_sum.
 *  3. The reader on a hostile DAG terminates without a crash: every dag-pb CID resolves to
 *     the input itself (a DAG that links to itself at every level) and every raw CID to a
 *     block of zeros whose length the CID's digest picks. A success returns exactly the bytes
 *     the file size allows (at most those asked for); a failure carries a message.
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_dagpb ../fuzz/corpus/dagpb
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidstore.h"
#include "dagpb.h"
#include "unixfs.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_dagpb: check failed: %s (line %d), errmsg \"%s\"\n", \
			        #cond, __LINE__, cs_errmsg());                                     \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Larger inputs only cost time: the interesting structure fits in a few kilobytes. */
#define INPUT_MAX 8192
#define READ_MAX  512

struct src {
	const uint8_t *data;
	size_t len;
};

static uint8_t zeros[4096];

/* Every dag-pb CID is the input; every raw CID a run of zeros (check 3). */
static int fuzz_get(void *ctx, const cs_cid *cid, uint8_t *buf, size_t cap, size_t *len)
{
	const struct src *s = ctx;
	cs_cid_info info;
	const uint8_t *p;
	size_t n;

	if (cs_cid_inspect(cid, &info) != 0)
		return CS_ENOTFOUND;
	if (info.codec == CS_CODEC_DAG_PB) {
		p = s->data;
		n = s->len;
	} else if (info.codec == CS_CODEC_RAW) {
		p = zeros;
		n = info.digest_len > 0 ? (size_t)info.digest[0] * 13 : 0;
	} else {
		return CS_ENOTFOUND;
	}
	*len = n;
	if (buf == NULL)
		return 0;
	if (cap < n)
		return CS_EBUFSIZE;
	if (n > 0)
		memcpy(buf, p, n);
	return 0;
}

static void check_ufs(const uint8_t *data, size_t size)
{
	struct ufs_data u;
	int rc = ufs_decode(data, size, &u);

	if (rc != 0) {
		CHECK(rc == CS_ECORRUPT && cs_errmsg()[0] != '\0');
		return;
	}
	CHECK(u.type <= UFS_HAMT_SHARD);
	CHECK(!u.has_data || (u.data >= data && u.data + u.data_len <= data + size));
	struct ufs_bs_iter it;
	uint64_t v, sum = 0;
	size_t n = 0;
	ufs_blocksizes_begin(&u, &it);
	while (ufs_blocksizes_next(&it, &v) == 1) {
		sum += v;
		n++;
		CHECK(n <= size);
	}
	CHECK(n == u.n_blocksizes && sum == u.blocksizes_sum);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t again[INPUT_MAX];
	static struct pb_link links[INPUT_MAX / 2];
	struct pb_node node;
	int rc;

	if (size > INPUT_MAX)
		return -1; /* keep such inputs out of the corpus */

	/* Check 1. */
	rc = pb_node_decode(data, size, &node);
	if (rc != 0) {
		CHECK(rc == CS_ECORRUPT && cs_errmsg()[0] != '\0');
	} else {
		struct pb_link_iter it;
		size_t n = 0, len;
		pb_links_begin(&node, &it);
		while (pb_links_next(&it, &links[n]) == 1) {
			CHECK(links[n].hash >= data &&
			      links[n].hash + links[n].hash_len <= data + size);
			n++;
			CHECK(n <= node.n_links);
		}
		CHECK(n == node.n_links);
		CHECK(pb_node_encoded_len(links, n, node.data, node.data_len, node.has_data) ==
		      size);
		CHECK(pb_node_encode(again, sizeof(again), links, n, node.data, node.data_len,
		                     node.has_data, &len) == 0);
		CHECK(len == size && memcmp(again, data, size) == 0);
		if (node.has_data)
			check_ufs(node.data, node.data_len); /* check 2 */
	}
	check_ufs(data, size);

	/* Check 3: read the self-linked DAG rooted at the input. */
	struct src s = {data, size};
	cs_cid root;
	static uint8_t out[READ_MAX];
	size_t got;
	uint64_t touched, fsize;
	CHECK(cs_cid_compute(data, size, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &root) == 0);
	uint64_t off = size > 0 ? data[0] * 7u : 0;
	rc = ufs_read(fuzz_get, &s, &root, off, out, sizeof(out), &got, &touched);
	if (rc == 0) {
		CHECK(got <= sizeof(out));
		CHECK(ufs_file_size(fuzz_get, &s, &root, &fsize) == 0);
		CHECK(off >= fsize ? got == 0
		                   : got == (fsize - off < READ_MAX ? fsize - off : READ_MAX));
	} else {
		CHECK(rc < 0 && cs_errmsg()[0] != '\0');
		CHECK(got == 0);
	}
	return 0;
}
