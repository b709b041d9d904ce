/*
 * test_unixfs.c - proves that files are stored as the same UnixFS DAGs Kubo's `ipfs add`
 * builds, and read back by range, correctly and defensively.
 *
 * What it shows:
 *  - dag-pb and UnixFS encoding: known blocks (the empty file in v0 and v1, "hello\n") give
 *    the CIDs Kubo prints; a node round-trips byte for byte; each malformed node or UnixFS
 *    message (out of order, duplicate, unknown field, truncated, non-minimal varint, a link
 *    without a CID, ...) is refused with CS_ECORRUPT and a message;
 *  - compatibility: for both profiles (v1: CIDv1 + raw leaves, v0: CIDv0 + dag-pb leaves) and
 *    the variants --raw-leaves / --no-raw-leaves, --hash blake2b-256 and --chunker size-N,
 *    the root of every boundary file (0, 1, chunk - 1, chunk, chunk + 1, 174 chunks, 174
 *    chunks + 1, a three-level tree) and of a random file above 50 MiB equals the root that
 *    npm's ipfs-unixfs-importer (tests/compat/import.mjs, configured as Kubo) computes for
 *    the same bytes. The test installs the npm packages itself; without node or npm it fails;
 *  - streaming: the root does not depend on how the bytes are split across writes, for both
 *    chunkers; CDC chunks stay within [min, max];
 *  - range reads: random [offset, offset + len) reads, across leaf boundaries and at the end
 *    of file, equal the source bytes, for raw-leaf and dag-pb-leaf files of one to three
 *    levels and for a bare raw block, read leaf by leaf and with runs of whole raw leaves
 *    (the same bytes, blocks touched and errors); a 4 KiB read inside one leaf of a 1 GiB
 *    file touches exactly height + 1 blocks;
 *  - runs on a real store: a file whose leaves were deduplicated from an earlier one (so its
 *    leaves are partly back to back in the log and partly not) reads back at any range; a
 *    damaged leaf in the middle of a run is CS_ECORRUPT naming it, a missing one CS_ENOTFOUND
 *    naming it, with the blocks touched before it counted;
 *  - content-defined chunking: after inserting 100 bytes at offset 1000 of a 64 MiB random
 *    file, more than 90% of the leaves are shared with the previous version (fixed-size
 *    chunking shares almost none);
 *  - bad input: a non-UnixFS dag-pb root, a UnixFS directory and a dag-cbor CID given to cat
 *    are CS_EINVAL; a missing leaf is CS_ENOTFOUND naming its CID; blocksizes that disagree
 *    with the children, with filesize or with the link count are CS_ECORRUPT; a DAG deeper
 *    than the reader's stack is CS_ELIMIT;
 *  - the public API on a real store: begin / write / finish in pieces and cs_add_fd give the
 *    in-memory builder's roots, cs_cat and cs_file_size read them back (a CIDv0 root too),
 *    bad options give their documented codes;
 *  - directories: the empty directory gives Kubo's CIDs in both profiles; links come out in
 *    name-byte order whatever the order of the adds, with their Tsizes, and the directory's
 *    Tsize is its bytes plus theirs; bad names (empty, ".", "..", '/', NUL, too long) and
 *    duplicates are refused; a directory whose names and CIDs reach 262144 bytes is CS_ELIMIT
 *    at the entry that reaches it, and one at 262143 is built; symlink nodes are byte-exact;
 *  - directory compatibility: trees with nested directories, unicode names, names that sort
 *    in tricky ways, an empty directory, empty files, files at the chunk boundaries (c - 1,
 *    c, c + 1, 174c, 174c + 1) two levels down, symlinks (one dangling) and a dotfile, and a
 *    directory right below the sharding threshold, added with cs_add_path, have the roots the
 *    importer computes for the same tree (import.mjs --dir), in both profiles and with
 *    --chunker size-1000, --no-raw-leaves and blake2b-256;
 *  - cs_add_path: entries are reported children first in name order with their paths, types
 *    and sizes, and progress reaches the scanned total; cs_dir_* builds the same root; a
 *    missing path, a directory without the recursive flag, a FIFO, names with a newline, a
 *    tab, a C1 control or bad UTF-8, and a tree deeper than CS_ADD_DEPTH_MAX are refused
 *    without writing a record; a callback's nonzero return stops the add;
 *  - checks (cs_file_check, ufs_read without a buffer): they read the nodes but only size the
 *    raw leaves, and find a missing leaf (named) or a short one before any byte is copied.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunker.h"
#include "cid.h"
#include "cidstore.h"
#include "dagpb.h"
#include "endian.h"
#include "test_util.h"
#include "unixfs.h"

#ifndef CS_TEST_BINDIR
#define CS_TEST_BINDIR "/tmp"
#endif
#ifndef CS_TEST_SRCDIR
#define CS_TEST_SRCDIR "."
#endif

#define KIB   1024u
#define MIB   (1024u * 1024u)
#define CHUNK 262144u

/* ---- Helpers ------------------------------------------------------------------------- */

static uint64_t rng_state = 1;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic across runs and platforms. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

/* Fills buf with len bytes determined by seed, eight at a time (xorshift64, little-endian
 * words), so the test can afford gigabytes. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * UINT64_C(0x9e3779b97f4a7c15) + UINT64_C(0x632be59bd9b4e019);
	uint8_t w[8];
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		put_le64(buf + i, x);
	}
	if (i < len) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		put_le64(w, x);
		memcpy(buf + i, w, len - i);
	}
}

static const char *cid_text(const cs_cid *c)
{
	static char buf[4][CS_CID_TEXT_MAX];
	static int next;
	char *b = buf[next++ & 3];

	assert_true(cs_cid_format(c, b, CS_CID_TEXT_MAX) > 0);
	return b;
}

/* Checks that the last error detail contains needle. Take the needle first: cid_text()
 * calls into the library, which clears the detail. */
static void assert_errmsg_has(const char *needle)
{
	if (strstr(cs_errmsg(), needle) == NULL)
		fail_msg("message \"%s\" does not name \"%s\"", cs_errmsg(), needle);
}

static void assert_cid_text(const cs_cid *c, const char *want)
{
	assert_string_equal(cid_text(c), want);
}

/* ---- An in-memory block map: the builder's sink and the reader's source -------------- */

struct ment {
	uint8_t key[CID_KEY_LEN];
	bool used;
	uint64_t codec;
	uint8_t *data; /* NULL when the map keeps keys only, or for virtual leaves */
	size_t len;
	int64_t virt; /* >= 0: a virtual leaf, regenerated by virt_leaf(virt) */
};

struct mem {
	struct ment *tab;
	size_t cap;
	size_t n;
	bool keep;        /* keep block bytes */
	bool virt;        /* raw leaves carry their index in their first 8 bytes */
	uint64_t drop_at; /* drop the drop_at-th block emitted (1-based); 0: none */
	uint64_t emitted;
	uint64_t raw_leaves;
	uint64_t gets;
	cs_cid dropped;
};

static uint64_t key_hash(const uint8_t *k)
{
	uint64_t h = UINT64_C(1469598103934665603);

	for (size_t i = 0; i < CID_KEY_LEN; i++)
		h = (h ^ k[i]) * UINT64_C(1099511628211);
	return h;
}

static struct ment *mem_find(struct mem *m, const uint8_t *key, bool insert)
{
	if (insert && (m->n + 1) * 2 > m->cap) {
		struct mem old = *m;
		m->cap = m->cap ? m->cap * 2 : 1024;
		m->tab = calloc(m->cap, sizeof(*m->tab));
		assert_non_null(m->tab);
		m->n = 0;
		for (size_t i = 0; i < old.cap; i++) {
			if (old.tab[i].used) {
				struct ment *e = mem_find(m, old.tab[i].key, true);
				*e = old.tab[i];
				m->n++;
			}
		}
		free(old.tab);
	}
	if (m->cap == 0)
		return NULL;
	for (size_t i = key_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		struct ment *e = &m->tab[i];
		if (!e->used)
			return insert ? e : NULL;
		if (memcmp(e->key, key, CID_KEY_LEN) == 0)
			return e;
	}
}

static void mem_free(struct mem *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->tab[i].data);
	free(m->tab);
	memset(m, 0, sizeof(*m));
}

/* A virtual leaf of the 1 GiB file: chunk i is its index, then seeded bytes. */
static void virt_leaf(uint64_t i, uint8_t *buf, size_t len)
{
	fill(buf, len, i + 1000);
	uint8_t w[8];
	put_le64(w, i);
	memcpy(buf, w, len < 8 ? len : 8);
}

static int mem_emit(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t hash,
                    cs_cid *out)
{
	struct mem *m = ctx;
	uint8_t key[CID_KEY_LEN];
	int rc;

	if ((rc = cs_cid_compute(data, len, codec, hash, out)) < 0)
		return rc;
	m->emitted++;
	if (codec == CS_CODEC_RAW)
		m->raw_leaves++;
	if (m->emitted == m->drop_at) {
		m->dropped = *out;
		return 0;
	}
	assert_int_equal(cid_key(out, key), 0);
	struct ment *e = mem_find(m, key, false);
	if (e != NULL)
		return 0;
	e = mem_find(m, key, true);
	memcpy(e->key, key, CID_KEY_LEN);
	e->used = true;
	e->codec = codec;
	e->len = len;
	e->virt = -1;
	m->n++;
	if (m->virt && codec == CS_CODEC_RAW && len >= 8) {
		e->virt = (int64_t)get_le64(data);
	} else if (m->keep) {
		e->data = malloc(len ? len : 1);
		assert_non_null(e->data);
		memcpy(e->data, data, len);
	}
	return 0;
}

static int mem_get(void *ctx, const cs_cid *cid, uint8_t *buf, size_t cap, size_t *len)
{
	struct mem *m = ctx;
	uint8_t key[CID_KEY_LEN];

	assert_int_equal(cid_key(cid, key), 0);
	struct ment *e = mem_find(m, key, false);
	if (e == NULL)
		return CS_ENOTFOUND;
	*len = e->len;
	if (buf == NULL)
		return 0;
	if (cap < e->len)
		return CS_EBUFSIZE;
	m->gets++;
	if (e->virt >= 0)
		virt_leaf((uint64_t)e->virt, buf, e->len);
	else if (e->len > 0)
		memcpy(buf, e->data, e->len);
	return 0;
}

/* ufs_get_run_fn over the map: each leaf through mem_get, as the contract describes. */
static int mem_get_run(void *ctx, const struct ufs_leaf *v, int n, int *done, size_t *len)
{
	int rc = 0;

	assert_true(n >= 1 && n <= UFS_RUN_MAX);
	for (*done = 0; *done < n; ++*done) {
		const struct ufs_leaf *l = &v[*done];
		if ((rc = mem_get(ctx, &l->cid, l->buf, l->len, len)) == 0 && *len != l->len)
			rc = CS_EBUFSIZE;
		if (rc != 0)
			break;
	}
	return rc;
}

/* Puts a hand-made block into the map and returns its CID. */
static cs_cid mem_put(struct mem *m, const uint8_t *data, size_t len, uint64_t codec)
{
	cs_cid c;
	assert_int_equal(mem_emit(m, data, len, codec, CS_HASH_SHA2_256, &c), 0);
	return c;
}

static struct ufs_params profile(int version)
{
	return (struct ufs_params){.cid_version = version,
	                           .raw_leaves = version == 1,
	                           .hash = CS_HASH_SHA2_256,
	                           .chunker = CS_CHUNK_FIXED,
	                           .chunk_size = CHUNK};
}

/* Builds data[0..len) with p into m, written in pieces of random sizes up to max_piece
 * (0: one write). Returns the root; *height (may be NULL) gets the tree height. */
static cs_cid build(const struct ufs_params *p, struct mem *m, const uint8_t *data, size_t len,
                    size_t max_piece, unsigned *height)
{
	struct ufs_builder *b;
	cs_cid root;
	uint64_t size;

	assert_int_equal(ufs_builder_new(p, mem_emit, m, &b), 0);
	size_t off = 0;
	while (off < len) {
		size_t n = max_piece == 0 ? len - off : 1 + (size_t)(rnd() % max_piece);
		if (n > len - off)
			n = len - off;
		assert_int_equal(ufs_builder_write(b, data + off, n), 0);
		off += n;
	}
	assert_int_equal(ufs_builder_finish(b, &root, &size), 0);
	assert_int_equal(size, len);
	if (height != NULL)
		*height = ufs_builder_height(b);
	ufs_builder_free(b);
	return root;
}

/* ---- dag-pb and UnixFS encoding ------------------------------------------------------ */

static void test_gear_table(void **state)
{
	uint64_t s = UINT64_C(0x676561722d636463);

	for (int i = 0; i < 256; i++) {
		s += UINT64_C(0x9e3779b97f4a7c15);
		uint64_t z = s;
		z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
		z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
		z ^= z >> 31;
		assert_int_equal(chunk_gear[i], z);
	}
}

static void test_known_blocks(void **state)
{
	struct mem m = {.keep = true};
	struct ufs_params v1 = profile(1), v0 = profile(0);
	const uint8_t hello[] = "hello\n";
	cs_cid c;

	/* The empty file: v0 is UnixFS File{filesize 0} with no Data field, 0a 04 08 02 18 00. */
	c = build(&v0, &m, NULL, 0, 0, NULL);
	assert_cid_text(&c, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
	uint8_t blk[64];
	size_t len;
	assert_int_equal(mem_get(&m, &c, blk, sizeof(blk), &len), 0);
	const uint8_t want[] = {0x0a, 0x04, 0x08, 0x02, 0x18, 0x00};
	assert_int_equal(len, sizeof(want));
	assert_memory_equal(blk, want, sizeof(want));
	c = build(&v1, &m, NULL, 0, 0, NULL);
	assert_cid_text(&c, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");

	c = build(&v0, &m, hello, 6, 0, NULL);
	assert_cid_text(&c, "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN");
	c = build(&v1, &m, hello, 6, 0, NULL);
	assert_cid_text(&c, "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am");
	struct ufs_params b2 = v1;
	b2.hash = CS_HASH_BLAKE2B_256;
	c = build(&b2, &m, NULL, 0, 0, NULL);
	assert_cid_text(&c, "bafk2bzaceahfouoae3suhmxivmxlayez3kq5dzo7i53y654h7kvultprf7r2q");
	mem_free(&m);
}

static void test_node_roundtrip(void **state)
{
	uint8_t buf[512], again[512];
	cs_cid a, b;
	size_t len, len2;

	assert_int_equal(cs_cid_compute("a", 1, CS_CODEC_RAW, CS_HASH_SHA2_256, &a), 0);
	assert_int_equal(cs_cid_compute("b", 1, CS_CODEC_DAG_PB, CS_HASH_BLAKE2B_256, &b), 0);
	struct pb_link links[3] = {
	    {.hash = a.bytes,
	     .hash_len = a.len,
	     .name = (const uint8_t *)"",
	     .has_name = true,
	     .tsize = 1,
	     .has_tsize = true},
	    {.hash = b.bytes, .hash_len = b.len},
	    {.hash = a.bytes,
	     .hash_len = a.len,
	     .name = (const uint8_t *)"x.txt",
	     .name_len = 5,
	     .has_name = true,
	     .tsize = UINT64_MAX,
	     .has_tsize = true},
	};
	const uint8_t data[] = {8, 2, 0x18, 7};
	assert_int_equal(pb_node_encode(buf, sizeof(buf), links, 3, data, 4, true, &len), 0);
	assert_int_equal(len, pb_node_encoded_len(links, 3, data, 4, true));
	assert_int_equal(pb_node_encode(buf, len - 1, links, 3, data, 4, true, &len2), CS_EBUFSIZE);

	struct pb_node n;
	assert_int_equal(pb_node_decode(buf, len, &n), 0);
	assert_int_equal(n.n_links, 3);
	assert_true(n.has_data);
	assert_int_equal(n.data_len, 4);
	assert_memory_equal(n.data, data, 4);
	struct pb_link got[3], l;
	struct pb_link_iter it;
	pb_links_begin(&n, &it);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pb_links_next(&it, &got[i]), 1);
	assert_int_equal(pb_links_next(&it, &l), 0);
	assert_int_equal(got[1].hash_len, b.len);
	assert_memory_equal(got[1].hash, b.bytes, b.len);
	assert_false(got[1].has_name);
	assert_false(got[1].has_tsize);
	assert_int_equal(got[2].tsize, UINT64_MAX);
	assert_int_equal(got[2].name_len, 5);
	assert_int_equal(
	    pb_node_encode(again, sizeof(again), got, 3, n.data, n.data_len, true, &len2), 0);
	assert_int_equal(len2, len);
	assert_memory_equal(again, buf, len);

	/* An empty node is valid dag-pb (no links, no Data). */
	assert_int_equal(pb_node_decode(buf, 0, &n), 0);
	assert_int_equal(n.n_links, 0);
	assert_false(n.has_data);

	/* The UnixFS File encoder, read back; packed blocksizes are read too. */
	uint64_t bs[3] = {262144, 1, 300};
	struct ufs_file f = {.data = (const uint8_t *)"xy",
	                     .data_len = 2,
	                     .filesize = 262447,
	                     .blocksizes = bs,
	                     .n_blocksizes = 3};
	assert_int_equal(ufs_file_encode(buf, sizeof(buf), &f, &len), 0);
	assert_int_equal(len, ufs_file_encoded_len(&f));
	struct ufs_data u;
	assert_int_equal(ufs_decode(buf, len, &u), 0);
	assert_int_equal(u.type, UFS_FILE);
	assert_int_equal(u.filesize, 262447);
	assert_int_equal(u.n_blocksizes, 3);
	assert_int_equal(u.blocksizes_sum, 262445);
	assert_int_equal(u.data_len, 2);
	struct ufs_bs_iter bi;
	uint64_t v;
	ufs_blocksizes_begin(&u, &bi);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ufs_blocksizes_next(&bi, &v), 1);
		assert_int_equal(v, bs[i]);
	}
	assert_int_equal(ufs_blocksizes_next(&bi, &v), 0);
	/* Type File, blocksizes 5 unpacked, then packed [6, 300], then unpacked 7. */
	const uint8_t mixed[] = {0x08, 0x02, 0x20, 0x05, 0x22, 0x03, 0x06, 0xac, 0x02, 0x20, 0x07};
	assert_int_equal(ufs_decode(mixed, sizeof(mixed), &u), 0);
	assert_int_equal(u.n_blocksizes, 4);
	assert_int_equal(u.blocksizes_sum, 318);
	const uint64_t want[] = {5, 6, 300, 7};
	ufs_blocksizes_begin(&u, &bi);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(ufs_blocksizes_next(&bi, &v), 1);
		assert_int_equal(v, want[i]);
	}
	assert_int_equal(ufs_blocksizes_next(&bi, &v), 0);
	/* mode and mtime as Kubo writes them with --preserve-mode/--preserve-mtime. */
	const uint8_t meta[] = {0x08, 0x02, 0x18, 0x00, 0x38, 0xa4, 0x03, 0x42,
	                        0x07, 0x08, 0x01, 0x15, 0x01, 0x00, 0x00, 0x00};
	assert_int_equal(ufs_decode(meta, sizeof(meta), &u), 0);
	assert_true(u.has_mode && u.mode == 0644);
	assert_true(u.has_mtime && u.mtime_secs == 1 && u.mtime_nsecs == 1);
}

struct bad {
	const char *what;
	uint8_t bytes[48];
	size_t len;
};

static void test_node_reject(void **state)
{
	/* A valid link body: Hash = the 36-byte CIDv1 of the empty raw block. */
	cs_cid e;
	uint8_t buf[128];
	assert_int_equal(cs_cid_compute("", 0, CS_CODEC_RAW, CS_HASH_SHA2_256, &e), 0);
	assert_int_equal(e.len, 36);
	struct pb_link l = {.hash = e.bytes, .hash_len = e.len};
	size_t len;
	assert_int_equal(
	    pb_node_encode(buf, sizeof(buf), &l, 1, (const uint8_t *)"d", 1, true, &len), 0);
	assert_int_equal(len, 2 + 38 + 3);
	struct pb_node n;
	assert_int_equal(pb_node_decode(buf, len, &n), 0);

	/* Every strict prefix is refused (a truncated link, length or varint). */
	for (size_t i = 1; i < len; i++) {
		if (i == 40) /* links only, no Data: a valid node */
			continue;
		assert_int_equal(pb_node_decode(buf, i, &n), CS_ECORRUPT);
		assert_true(cs_errmsg()[0] != '\0');
	}
	static const struct bad bads[] = {
	    {"Data before Links", {0x0a, 0x00, 0x12, 0x00}, 4},
	    {"Data twice", {0x0a, 0x00, 0x0a, 0x00}, 4},
	    {"unknown field 3", {0x1a, 0x00}, 2},
	    {"Links as a varint", {0x10, 0x00}, 2},
	    {"non-minimal key", {0x8a, 0x00, 0x00}, 3},
	    {"non-minimal length", {0x0a, 0x80, 0x00}, 3},
	    {"11-byte varint",
	     {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	     12},
	    {"10th byte > 1",
	     {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
	     11},
	    {"length past end", {0x0a, 0x05, 0x00}, 3},
	    {"link without Hash", {0x12, 0x02, 0x18, 0x01}, 4},
	    {"empty link", {0x12, 0x00}, 2},
	    {"link Hash not a CID", {0x12, 0x03, 0x0a, 0x01, 0x00}, 5},
	    {"link Name before Hash", {0x12, 0x04, 0x12, 0x00, 0x0a, 0x00}, 6},
	    {"link unknown field", {0x12, 0x02, 0x20, 0x00}, 4},
	};
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		int rc = pb_node_decode(bads[i].bytes, bads[i].len, &n);
		if (rc != CS_ECORRUPT)
			fail_msg("%s: decode gave %d", bads[i].what, rc);
		assert_true(cs_errmsg()[0] != '\0');
	}
	/* A link with Hash twice or Tsize before Name. */
	uint8_t twice[100];
	size_t t = 0;
	twice[t++] = 0x12;
	twice[t++] = (uint8_t)(2 * (2 + e.len));
	for (int k = 0; k < 2; k++) {
		twice[t++] = 0x0a;
		twice[t++] = e.len;
		memcpy(twice + t, e.bytes, e.len);
		t += e.len;
	}
	assert_int_equal(pb_node_decode(twice, t, &n), CS_ECORRUPT);
	assert_non_null(strstr(cs_errmsg(), "repeated"));
	t = 0;
	twice[t++] = 0x12;
	twice[t++] = (uint8_t)(2 + e.len + 4);
	twice[t++] = 0x0a;
	twice[t++] = e.len;
	memcpy(twice + t, e.bytes, e.len);
	t += e.len;
	memcpy(twice + t, "\x18\x01\x12\x00", 4);
	t += 4;
	assert_int_equal(pb_node_decode(twice, t, &n), CS_ECORRUPT);
	assert_non_null(strstr(cs_errmsg(), "out of order"));

	static const struct bad ubads[] = {
	    {"no Type", {0x18, 0x00}, 2},
	    {"Type 6", {0x08, 0x06}, 2},
	    {"Type twice", {0x08, 0x02, 0x08, 0x02}, 4},
	    {"filesize twice", {0x08, 0x02, 0x18, 0x01, 0x18, 0x01}, 6},
	    {"Data twice", {0x08, 0x02, 0x12, 0x00, 0x12, 0x00}, 6},
	    {"unknown field 9", {0x08, 0x02, 0x48, 0x00}, 4},
	    {"Type as bytes", {0x0a, 0x00}, 2},
	    {"mode above 32 bits", {0x08, 0x02, 0x38, 0x80, 0x80, 0x80, 0x80, 0x10}, 8},
	    {"mtime without Seconds", {0x08, 0x02, 0x42, 0x00}, 4},
	    {"mtime nanoseconds >= 1e9",
	     {0x08, 0x02, 0x42, 0x07, 0x08, 0x00, 0x15, 0x00, 0xca, 0x9a, 0x3b},
	     11},
	    {"mtime truncated fixed32", {0x08, 0x02, 0x42, 0x05, 0x08, 0x00, 0x15, 0x00, 0x00}, 9},
	    {"packed blocksizes truncated", {0x08, 0x02, 0x22, 0x01, 0x80}, 5},
	    {"blocksizes overflow",
	     {0x08, 0x02, 0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x20,
	      0x01},
	     15},
	    {"truncated", {0x08}, 1},
	};
	struct ufs_data u;
	for (size_t i = 0; i < sizeof(ubads) / sizeof(ubads[0]); i++) {
		int rc = ufs_decode(ubads[i].bytes, ubads[i].len, &u);
		if (rc != CS_ECORRUPT)
			fail_msg("%s: decode gave %d", ubads[i].what, rc);
		assert_true(cs_errmsg()[0] != '\0');
	}
}

/* ---- Builder shape and streaming ----------------------------------------------------- */

static void test_shape(void **state)
{
	/* With 10-byte chunks: leaves and height at each boundary of the balanced layout. */
	static const struct {
		size_t chunks;
		unsigned height;
	} cases[] = {{1, 0}, {2, 1}, {174, 1}, {175, 2}, {174 * 174, 2}, {174 * 174 + 1, 3}};
	struct ufs_params p = profile(1);
	p.chunk_size = 10;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].chunks * 10;
		uint8_t *data = malloc(len);
		struct mem m = {.keep = true};
		unsigned h;
		fill(data, len, i);
		cs_cid root = build(&p, &m, data, len, 0, &h);
		assert_int_equal(h, cases[i].height);
		assert_int_equal(m.raw_leaves, cases[i].chunks);
		/* The root's links: 175 chunks give {174 leaves, 1 leaf}. */
		if (cases[i].chunks == 175) {
			uint8_t blk[UFS_NODE_MAX];
			size_t bl;
			struct pb_node n;
			assert_int_equal(mem_get(&m, &root, blk, sizeof(blk), &bl), 0);
			assert_int_equal(pb_node_decode(blk, bl, &n), 0);
			assert_int_equal(n.n_links, 2);
			struct ufs_data u;
			assert_int_equal(ufs_decode(n.data, n.data_len, &u), 0);
			assert_int_equal(u.filesize, 1750);
			struct ufs_bs_iter bi;
			uint64_t v;
			ufs_blocksizes_begin(&u, &bi);
			assert_int_equal(ufs_blocksizes_next(&bi, &v), 1);
			assert_int_equal(v, 1740);
			assert_int_equal(ufs_blocksizes_next(&bi, &v), 1);
			assert_int_equal(v, 10);
		}
		mem_free(&m);
		free(data);
	}
}

static void test_streaming_equivalence(void **state)
{
	size_t len = 5 * MIB + 12345;
	uint8_t *data = malloc(len);
	fill(data, len, 77);
	for (int kind = 0; kind < 2; kind++) {
		for (int v = 0; v < 2; v++) {
			struct ufs_params p = profile(v);
			p.chunker = kind == 0 ? CS_CHUNK_FIXED : CS_CHUNK_CDC;
			p.chunk_size = kind == 0 ? 100000 : 65536;
			struct mem m = {0};
			cs_cid whole = build(&p, &m, data, len, 0, NULL);
			static const size_t pieces[] = {1, 7, 4096, 65537, 3 * MIB};
			for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
				/* 1-byte pieces only over a short prefix: it is slow by design. */
				size_t n = pieces[i] == 1 ? 300000 : len;
				cs_cid a = build(&p, &m, data, n, pieces[i], NULL);
				cs_cid b = n == len ? whole : build(&p, &m, data, n, 0, NULL);
				assert_string_equal(cid_text(&a), cid_text(&b));
			}
			mem_free(&m);
		}
	}
	/* CDC cuts fall in [min, max] except the last, and vary. */
	struct chunker ck;
	assert_int_equal(chunker_init(&ck, CS_CHUNK_CDC, 0), 0);
	assert_int_equal(ck.min, 64 * KIB);
	assert_int_equal(ck.max, 1 * MIB);
	size_t off = 0, cuts = 0, smin = SIZE_MAX, smax = 0;
	while (off < len) {
		size_t c = chunker_next(&ck, data + off, len - off, true);
		assert_true(c > 0 && c <= ck.max);
		if (off + c < len) {
			assert_true(c >= ck.min);
			smin = c < smin ? c : smin;
			smax = c > smax ? c : smax;
		}
		off += c;
		cuts++;
	}
	assert_true(cuts >= 5 && smin < smax);
	free(data);
}

/* ---- Compatibility with ipfs-unixfs-importer ----------------------------------------- */

static char compat_dir[4096];

static int run(const char *cmd)
{
	fprintf(stderr, "[compat] %s\n", cmd);
	int rc = system(cmd);
	return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* Copies tests/compat into the build directory and installs its npm packages there when the
 * lockfile changed since the last install. Fails the test when node or npm is missing. */
static void compat_setup(void)
{
	char cmd[16384];

	snprintf(compat_dir, sizeof(compat_dir), "%s/unixfs-compat", CS_TEST_BINDIR);
	if (run("node --version >&2") != 0)
		fail_msg("node is not installed: the compatibility test needs Node.js and npm");
	if (run("npm --version >&2") != 0)
		fail_msg("npm is not installed: the compatibility test needs Node.js and npm");
	snprintf(cmd, sizeof(cmd),
	         "mkdir -p '%s' && cp '%s/tests/compat/package.json' "
	         "'%s/tests/compat/package-lock.json' '%s/tests/compat/import.mjs' '%s/'",
	         compat_dir, CS_TEST_SRCDIR, CS_TEST_SRCDIR, CS_TEST_SRCDIR, compat_dir);
	assert_int_equal(run(cmd), 0);
	snprintf(cmd, sizeof(cmd),
	         "cd '%s' && { cmp -s package-lock.json .installed-lock && test -f "
	         "node_modules/ipfs-unixfs-importer/package.json || { npm ci --no-audit --no-fund "
	         ">&2 && cp package-lock.json .installed-lock; }; }",
	         compat_dir);
	if (run(cmd) != 0)
		fail_msg("npm ci in %s failed: the compatibility test needs the npm registry",
		         compat_dir);
}

struct compat_case {
	const char *name;
	const char *args; /* import.mjs options */
	int version;
	int raw_leaves; /* -1: the profile's */
	uint64_t hash;
	uint32_t chunk;
	size_t sizes[12];
	size_t n;
};

/* Boundary sizes for chunk size c: 0, 1, c - 1, c, c + 1, 174c, 174c + 1, and with
 * three_level the first size that needs a third level, 174^2 c + 1. */
static size_t boundaries(size_t c, bool three_level, size_t *out)
{
	size_t n = 0;
	out[n++] = 0;
	out[n++] = 1;
	out[n++] = c - 1;
	out[n++] = c;
	out[n++] = c + 1;
	out[n++] = 174 * c;
	out[n++] = 174 * c + 1;
	if (three_level) {
		out[n++] = 174 * 174 * c;
		out[n++] = 174 * 174 * c + 1;
	}
	return n;
}

static void run_case(struct compat_case *k, const char *tmp)
{
	char cmd[65536], path[4200], line[256];
	size_t off;
	struct ufs_params p = {.cid_version = k->version,
	                       .raw_leaves =
	                           k->raw_leaves < 0 ? k->version == 1 : k->raw_leaves == 1,
	                       .hash = k->hash,
	                       .chunker = CS_CHUNK_FIXED,
	                       .chunk_size = k->chunk};
	cs_cid roots[12];

	/* Write the files (one per size, named by it: the same bytes in every case), start the
	 * importer on them, and compute our roots while it runs. */
	off = (size_t)snprintf(cmd, sizeof(cmd), "cd '%s' && node import.mjs %s", compat_dir,
	                       k->args);
	for (size_t i = 0; i < k->n; i++) {
		size_t len = k->sizes[i];
		snprintf(path, sizeof(path), "%s/f%zu", tmp, len);
		if (access(path, F_OK) != 0) {
			uint8_t *data = malloc(len ? len : 1);
			assert_non_null(data);
			fill(data, len, len);
			FILE *f = fopen(path, "wb");
			assert_non_null(f);
			assert_int_equal(fwrite(data, 1, len, f), len);
			assert_int_equal(fclose(f), 0);
			free(data);
		}
		off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " '%s'", path);
		assert_true(off < sizeof(cmd));
	}
	fprintf(stderr, "[compat] %s\n", k->name);
	FILE *pp = popen(cmd, "r");
	assert_non_null(pp);
	for (size_t i = 0; i < k->n; i++) {
		size_t len = k->sizes[i];
		uint8_t *data = malloc(len ? len : 1);
		assert_non_null(data);
		fill(data, len, len);
		struct mem m = {0};
		roots[i] = build(&p, &m, data, len, len > 4 * MIB ? 3 * MIB : 0, NULL);
		mem_free(&m);
		free(data);
	}
	size_t i = 0;
	int bad = 0;
	while (fgets(line, sizeof(line), pp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		assert_true(i < k->n);
		const char *mine = cid_text(&roots[i]);
		int same = strcmp(mine, line) == 0;
		fprintf(stderr, "  %-4s size %10zu  %s %s\n", same ? "ok" : "DIFF", k->sizes[i],
		        mine, same ? "" : line);
		bad += !same;
		i++;
	}
	int st = pclose(pp);
	if (st != 0)
		fail_msg("%s: import.mjs exited with status %d", k->name, st);
	assert_int_equal(i, k->n);
	assert_int_equal(bad, 0);
}

static void test_compat(void **state)
{
	char tmp[4096];
#define CASE(nm, a, v, rl, h, c)                                                                   \
	{                                                                                          \
		.name = nm, .args = a, .version = v, .raw_leaves = rl, .hash = h, .chunk = c       \
	}
	struct compat_case cases[] = {
	    CASE("v1 profile (ipfs add --cid-version=1)", "--profile v1", 1, -1, CS_HASH_SHA2_256,
	         CHUNK),
	    CASE("v0 profile (ipfs add)", "--profile v0", 0, -1, CS_HASH_SHA2_256, CHUNK),
	    CASE("v1, three levels with --chunker size-256", "--profile v1 --chunker size-256", 1,
	         -1, CS_HASH_SHA2_256, 256),
	    CASE("v0, three levels with --chunker size-256", "--profile v0 --chunker size-256", 0,
	         -1, CS_HASH_SHA2_256, 256),
	    CASE("v1 --no-raw-leaves --chunker size-100",
	         "--profile v1 --no-raw-leaves --chunker size-100", 1, 0, CS_HASH_SHA2_256, 100),
	    CASE("v0 --raw-leaves --chunker size-100",
	         "--profile v0 --raw-leaves --chunker size-100", 0, 1, CS_HASH_SHA2_256, 100),
	    CASE("v1 --hash blake2b-256 --chunker size-100",
	         "--profile v1 --hash blake2b-256 --chunker size-100", 1, -1, CS_HASH_BLAKE2B_256,
	         100),
	    CASE("v1 --hash blake2b-256 --no-raw-leaves --chunker size-100",
	         "--profile v1 --hash blake2b-256 --no-raw-leaves --chunker size-100", 1, 0,
	         CS_HASH_BLAKE2B_256, 100),
	    CASE("v1 --chunker size-1048576 (the limit)", "--profile v1 --chunker size-1048576", 1,
	         -1, CS_HASH_SHA2_256, 1048576),
	};
#undef CASE

	compat_setup();
	tu_tmpdir(tmp, sizeof(tmp), "unixfs-compat");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct compat_case *k = &cases[i];
		if (k->chunk == CHUNK) {
			/* Two-level boundaries, then a random file above 50 MiB. */
			k->n = boundaries(CHUNK, false, k->sizes);
			k->sizes[k->n++] = 50 * MIB + 54321;
		} else if (k->chunk == 1048576) {
			k->sizes[0] = 1048575;
			k->sizes[1] = 1048576;
			k->sizes[2] = 3 * 1048576 + 5;
			k->n = 3;
		} else if (k->chunk == 256) {
			/* Both profiles up to the three-level boundary. */
			k->n = boundaries(k->chunk, true, k->sizes);
		} else {
			/* The variants: two-level boundaries and a three-level file (31458
			 * chunks). */
			k->n = boundaries(k->chunk, false, k->sizes);
			k->sizes[k->n++] = 3 * MIB + 7;
		}
		run_case(k, tmp);
	}
	tu_rmrf(tmp);
}

/* ---- Range reads --------------------------------------------------------------------- */

static void check_reads(struct mem *m, const cs_cid *root, const uint8_t *data, size_t len,
                        size_t chunk, int rounds)
{
	uint8_t *buf = malloc(len + 64);
	size_t got;
	uint64_t size, touched;

	assert_int_equal(ufs_file_size(mem_get, m, root, &size), 0);
	assert_int_equal(size, len);
	/* One reader kept across all the reads below (invariant 6 of unixfs.c). */
	struct ufs_reader *r;
	uint64_t at_open;
	assert_int_equal(ufs_reader_new(mem_get, mem_get_run, m, root, &r, &at_open), 0);
	assert_int_equal(at_open, 1);
	assert_int_equal(ufs_reader_size(r), len);
	/* The whole file, then random ranges, some straddling leaf boundaries or the end. */
	assert_int_equal(ufs_read(mem_get, m, root, 0, buf, len + 64, &got, &touched), 0);
	assert_int_equal(got, len);
	assert_memory_equal(buf, data, len);
	for (int i = 0; i < rounds; i++) {
		uint64_t off, n;
		switch (rnd() % 4) {
		case 0: /* around a leaf boundary */
			off = (rnd() % (len / chunk + 1)) * chunk;
			off = off > 10 ? off - rnd() % 10 : off;
			n = 1 + rnd() % (2 * chunk);
			break;
		case 1: /* to and past the end */
			off = len - rnd() % (chunk + 1);
			n = rnd() % (2 * chunk + 1);
			break;
		default:
			off = rnd() % (len + 1);
			n = rnd() % (3 * chunk);
		}
		if (off > len)
			off = len;
		memset(buf, 0xee, n < len + 64 ? n : len + 64);
		if (n > len + 64)
			n = len + 64;
		assert_int_equal(ufs_read(mem_get, m, root, off, buf, n, &got, &touched), 0);
		size_t want = off >= len ? 0 : (n < len - off ? n : len - off);
		assert_int_equal(got, want);
		assert_memory_equal(buf, data + off, want);
		/* Gathering whole raw leaves into runs reads the same bytes and blocks. */
		uint64_t touched_run;
		memset(buf, 0xee, n);
		assert_int_equal(
		    ufs_read_run(mem_get, mem_get_run, m, root, off, buf, n, &got, &touched_run),
		    0);
		assert_int_equal(got, want);
		assert_memory_equal(buf, data + off, want);
		assert_int_equal(touched_run, touched);
		/* The kept reader: the same bytes, and never more blocks than a fresh walk
		 * less its root (kept nodes are not read again). */
		uint64_t touched_kept;
		memset(buf, 0xee, n);
		assert_int_equal(ufs_reader_read(r, off, buf, n, &got, &touched_kept), 0);
		assert_int_equal(got, want);
		assert_memory_equal(buf, data + off, want);
		assert_true(touched_kept + (want > 0 ? 1 : 0) <= touched);
	}
	ufs_reader_free(r);
	/* Past the end: nothing, no error. */
	assert_int_equal(ufs_read(mem_get, m, root, len + 1, buf, 10, &got, NULL), 0);
	assert_int_equal(got, 0);
	free(buf);
}

static void test_range_reads(void **state)
{
	rng_state = 42;
	for (int v = 0; v < 2; v++) {
		/* Two levels with default chunks, three levels with 64-byte chunks, one leaf. */
		static const struct {
			size_t len;
			uint32_t chunk;
		} files[] = {{9 * MIB + 1234, CHUNK},
		             {174 * 174 * 64 + 5000, 64},
		             {1000, CHUNK},
		             {CHUNK, CHUNK}};
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			struct ufs_params p = profile(v);
			p.chunk_size = files[i].chunk;
			struct mem m = {.keep = true};
			uint8_t *data = malloc(files[i].len);
			fill(data, files[i].len, i + 10 * v);
			cs_cid root = build(&p, &m, data, files[i].len, 0, NULL);
			check_reads(&m, &root, data, files[i].len, files[i].chunk, 300);
			mem_free(&m);
			free(data);
		}
	}
	/* A bare raw block is a file too; so is a v1 file with dag-pb leaves. */
	struct mem m = {.keep = true};
	uint8_t data[5000];
	fill(data, sizeof(data), 5);
	cs_cid raw = mem_put(&m, data, sizeof(data), CS_CODEC_RAW);
	check_reads(&m, &raw, data, sizeof(data), 1000, 100);
	cs_cid empty = mem_put(&m, data, 0, CS_CODEC_RAW);
	size_t got = 1;
	uint64_t size = 1;
	assert_int_equal(ufs_read(mem_get, &m, &empty, 0, data, 10, &got, NULL), 0);
	assert_int_equal(got, 0);
	assert_int_equal(ufs_file_size(mem_get, &m, &empty, &size), 0);
	assert_int_equal(size, 0);
	struct ufs_params p = profile(1);
	p.raw_leaves = false;
	p.chunk_size = 333;
	cs_cid root = build(&p, &m, data, sizeof(data), 0, NULL);
	check_reads(&m, &root, data, sizeof(data), 333, 200);
	mem_free(&m);
}

static void test_touched_1gib(void **state)
{
	const uint64_t len = 1024ull * MIB;
	struct ufs_params p = profile(1);
	struct mem m = {.keep = true, .virt = true};
	struct ufs_builder *b;
	uint8_t *chunk = malloc(CHUNK), *buf = malloc(8 * KIB), *want = malloc(CHUNK);
	cs_cid root;
	uint64_t size, touched;
	size_t got;

	assert_int_equal(ufs_builder_new(&p, mem_emit, &m, &b), 0);
	for (uint64_t i = 0; i < len / CHUNK; i++) {
		virt_leaf(i, chunk, CHUNK);
		assert_int_equal(ufs_builder_write(b, chunk, CHUNK), 0);
	}
	assert_int_equal(ufs_builder_finish(b, &root, &size), 0);
	unsigned h = ufs_builder_height(b);
	ufs_builder_free(b);
	assert_int_equal(size, len);
	assert_int_equal(h, 2); /* 4096 leaves: 24 nodes under the root */
	fprintf(stderr, "[1 GiB] root %s, height %u\n", cid_text(&root), h);

	rng_state = 7;
	int crossing = 0;
	for (int i = 0; i < 200; i++) {
		uint64_t off = rnd() % (len - 4 * KIB);
		assert_int_equal(ufs_read(mem_get, &m, &root, off, buf, 4 * KIB, &got, &touched),
		                 0);
		assert_int_equal(got, 4 * KIB);
		uint64_t leaf = off / CHUNK, last = (off + 4 * KIB - 1) / CHUNK;
		if (leaf == last) {
			/* Inside one leaf: root, one node, the leaf. */
			assert_int_equal(touched, h + 1);
		} else {
			/* Across two leaves: one more leaf, and one more node when the leaves
			 * hang under different nodes. */
			crossing++;
			assert_int_equal(touched, h + 2 + (leaf / 174 != last / 174));
		}
		virt_leaf(leaf, want, CHUNK);
		size_t n = leaf == last ? 4 * KIB : CHUNK - off % CHUNK;
		assert_memory_equal(buf, want + off % CHUNK, n);
		if (leaf != last) {
			virt_leaf(last, want, CHUNK);
			assert_memory_equal(buf + n, want, 4 * KIB - n);
		}
	}
	/* A kept reader reads the root once, then per 4 KiB read inside one leaf the leaf
	 * alone, plus its level-1 node when the previous read was under another one. */
	struct ufs_reader *r;
	uint64_t at_open, prev = UINT64_MAX;
	assert_int_equal(ufs_reader_new(mem_get, NULL, &m, &root, &r, &at_open), 0);
	assert_int_equal(at_open, 1);
	for (int i = 0; i < 200; i++) {
		uint64_t off = rnd() % (len - 4 * KIB), leaf = off / CHUNK;
		if (leaf != (off + 4 * KIB - 1) / CHUNK)
			continue;
		if (i % 2 == 1 && prev != UINT64_MAX) {
			/* Often another leaf under the same node (the last node has fewer). */
			uint64_t l = prev * 174 + rnd() % 174;
			l = l < len / CHUNK ? l : len / CHUNK - 1;
			off = l * CHUNK + rnd() % (CHUNK - 4 * KIB);
			leaf = l;
		}
		assert_int_equal(ufs_reader_read(r, off, buf, 4 * KIB, &got, &touched), 0);
		assert_int_equal(got, 4 * KIB);
		assert_int_equal(touched, 1 + (leaf / 174 != prev));
		prev = leaf / 174;
		virt_leaf(leaf, want, CHUNK);
		assert_memory_equal(buf, want + off % CHUNK, 4 * KIB);
	}
	ufs_reader_free(r);

	/* A read across the boundary between the first two level-1 nodes. */
	uint64_t off = 174ull * CHUNK - 100;
	assert_int_equal(ufs_read(mem_get, &m, &root, off, buf, 4 * KIB, &got, &touched), 0);
	assert_int_equal(touched, 5);
	fprintf(stderr, "[1 GiB] 200 random 4 KiB reads, %d across leaves\n", crossing);
	mem_free(&m);
	free(chunk);
	free(buf);
	free(want);
}

/* ---- Content-defined chunking -------------------------------------------------------- */

/* Fraction of b's raw leaves (by count and by bytes) that a also holds. */
static void shared(struct mem *a, struct mem *b, double *by_count, double *by_bytes)
{
	uint64_t n = 0, s = 0, bytes = 0, sbytes = 0;

	for (size_t i = 0; i < b->cap; i++) {
		struct ment *e = &b->tab[i];
		if (!e->used || e->codec != CS_CODEC_RAW)
			continue;
		n++;
		bytes += e->len;
		if (mem_find(a, e->key, false) != NULL) {
			s++;
			sbytes += e->len;
		}
	}
	*by_count = (double)s / (double)n;
	*by_bytes = (double)sbytes / (double)bytes;
}

static void test_cdc_shared(void **state)
{
	const size_t len = 64 * MIB;
	uint8_t *v1 = malloc(len), *v2 = malloc(len + 100);
	double fc, fb, xc, xb;

	fill(v1, len, 64);
	memcpy(v2, v1, 1000);
	fill(v2 + 1000, 100, 65);
	memcpy(v2 + 1100, v1 + 1000, len - 1000);

	struct ufs_params p = profile(1);
	p.chunker = CS_CHUNK_CDC;
	p.chunk_size = 0; /* the default: 64 KiB / 256 KiB / 1 MiB */
	struct mem a = {0}, b = {0};
	build(&p, &a, v1, len, 0, NULL);
	build(&p, &b, v2, len + 100, 1 * MIB, NULL);
	shared(&a, &b, &fc, &fb);
	fprintf(stderr,
	        "[cdc] 64 MiB, 100 bytes inserted at 1000: %llu and %llu leaves (mean %.0f bytes); "
	        "shared %.4f of leaves, %.4f of bytes\n",
	        (unsigned long long)a.raw_leaves, (unsigned long long)b.raw_leaves,
	        (double)len / (double)a.raw_leaves, fc, fb);
	assert_true(fc > 0.9);
	assert_true(fb > 0.9);
	mem_free(&a);
	mem_free(&b);

	/* The control: fixed-size chunks all shift, so almost nothing is shared. */
	p.chunker = CS_CHUNK_FIXED;
	p.chunk_size = CHUNK;
	build(&p, &a, v1, len, 0, NULL);
	build(&p, &b, v2, len + 100, 0, NULL);
	shared(&a, &b, &xc, &xb);
	fprintf(stderr, "[cdc] fixed-size control: shared %.4f of leaves\n", xc);
	assert_true(xc < 0.1);
	mem_free(&a);
	mem_free(&b);
	free(v1);
	free(v2);
}

/* ---- Bad input ----------------------------------------------------------------------- */

/* Encodes a UnixFS File node over the given children and puts it. */
static cs_cid put_file_node(struct mem *m, const cs_cid *kids, size_t n, const uint64_t *bs,
                            size_t nbs, uint64_t filesize)
{
	struct pb_link links[8];
	uint8_t buf[2048];
	size_t len;

	for (size_t i = 0; i < n; i++)
		links[i] = (struct pb_link){.hash = kids[i].bytes,
		                            .hash_len = kids[i].len,
		                            .name = (const uint8_t *)"",
		                            .has_name = true,
		                            .tsize = 1,
		                            .has_tsize = true};
	struct ufs_file f = {.filesize = filesize, .blocksizes = bs, .n_blocksizes = nbs};
	assert_int_equal(pb_file_node_encode(buf, sizeof(buf), links, n, &f, &len), 0);
	return mem_put(m, buf, len, CS_CODEC_DAG_PB);
}

static void expect_read(struct mem *m, const cs_cid *root, int code, const char *needle_)
{
	char needle_copy[256], *needle = NULL;
	if (needle_ != NULL) { /* the caller's may sit in cid_text's rotating buffers */
		snprintf(needle_copy, sizeof(needle_copy), "%s", needle_);
		needle = needle_copy;
	}
	uint8_t buf[256];
	/* Leaf by leaf, then with runs of whole raw leaves: the same answer. */
	for (int run = 0; run < 2; run++) {
		size_t got = 99;
		int rc = ufs_read_run(mem_get, run ? mem_get_run : NULL, m, root, 0, buf,
		                      sizeof(buf), &got, NULL);

		if (rc != code)
			fail_msg("read gave %d (%s), wanted %d", rc, cs_errmsg(), code);
		assert_int_equal(got, 0);
		if (needle != NULL && strstr(cs_errmsg(), needle) == NULL)
			fail_msg("message \"%s\" does not name \"%s\"", cs_errmsg(), needle);
	}
}

static void test_bad_input(void **state)
{
	struct mem m = {.keep = true};
	uint8_t blk[128];
	size_t len;
	uint64_t size;

	/* Not files: a dag-pb node whose Data is not UnixFS, one without Data, a directory, a
	 * dag-cbor CID. */
	assert_int_equal(
	    pb_node_encode(blk, sizeof(blk), NULL, 0, (const uint8_t *)"hello", 5, true, &len), 0);
	cs_cid plain = mem_put(&m, blk, len, CS_CODEC_DAG_PB);
	expect_read(&m, &plain, CS_EINVAL, "not a UnixFS node");
	assert_int_equal(ufs_file_size(mem_get, &m, &plain, &size), CS_EINVAL);
	cs_cid nodata = mem_put(&m, blk, 0, CS_CODEC_DAG_PB);
	expect_read(&m, &nodata, CS_EINVAL, "without Data");
	const uint8_t dir[] = {0x0a, 0x02, 0x08, 0x01};
	cs_cid d = mem_put(&m, dir, sizeof(dir), CS_CODEC_DAG_PB);
	expect_read(&m, &d, CS_EINVAL, "directory");
	cs_cid cbor = mem_put(&m, (const uint8_t *)"\xa0", 1, CS_CODEC_DAG_CBOR);
	expect_read(&m, &cbor, CS_EINVAL, "codec");
	const uint8_t junk[] = {0x0a, 0x05, 0x01};
	cs_cid j = mem_put(&m, junk, sizeof(junk), CS_CODEC_DAG_PB);
	expect_read(&m, &j, CS_ECORRUPT, "not valid dag-pb");

	/* The same non-file node below a file root is damage, not a caller's mistake. */
	uint64_t five = 5;
	cs_cid over_plain = put_file_node(&m, &plain, 1, &five, 1, 5);
	expect_read(&m, &over_plain, CS_ECORRUPT, cid_text(&plain));

	/* Sizes that disagree: leaves of 10 and 20 bytes. */
	uint8_t bytes[30];
	fill(bytes, sizeof(bytes), 3);
	cs_cid leaves[2] = {mem_put(&m, bytes, 10, CS_CODEC_RAW),
	                    mem_put(&m, bytes + 10, 20, CS_CODEC_RAW)};
	uint64_t good[2] = {10, 20}, swapped[2] = {15, 15}, one[1] = {30};
	cs_cid ok = put_file_node(&m, leaves, 2, good, 2, 30);
	size_t got;
	uint8_t out[64];
	assert_int_equal(ufs_read(mem_get, &m, &ok, 0, out, sizeof(out), &got, NULL), 0);
	assert_int_equal(got, 30);
	assert_memory_equal(out, bytes, 30);
	cs_cid c = put_file_node(&m, leaves, 2, swapped, 2, 30);
	expect_read(&m, &c, CS_ECORRUPT, "blocksize");
	c = put_file_node(&m, leaves, 2, good, 2, 31);
	expect_read(&m, &c, CS_ECORRUPT, "filesize 31 disagrees");
	assert_int_equal(ufs_file_size(mem_get, &m, &c, &size), CS_ECORRUPT);
	c = put_file_node(&m, leaves, 2, one, 1, 30);
	expect_read(&m, &c, CS_ECORRUPT, "1 blocksizes for 2 links");
	/* A node whose own sizes agree, under a parent that claims another size for it. */
	uint64_t claim = 31;
	c = put_file_node(&m, &ok, 1, &claim, 1, 31);
	expect_read(&m, &c, CS_ECORRUPT, "parent's blocksize says 31");
	/* A link to a dag-cbor block inside a file. */
	uint64_t onebs = 1;
	c = put_file_node(&m, &cbor, 1, &onebs, 1, 1);
	expect_read(&m, &c, CS_ECORRUPT, "codec 0x71");
	/* Reads that end before the bad child still succeed: it is never touched. */
	cs_cid mixed[2] = {leaves[0], plain};
	uint64_t mbs[2] = {10, 5};
	c = put_file_node(&m, mixed, 2, mbs, 2, 15);
	assert_int_equal(ufs_read(mem_get, &m, &c, 0, out, 10, &got, NULL), 0);
	assert_int_equal(got, 10);
	expect_read(&m, &c, CS_ECORRUPT, cid_text(&plain));

	/* A chain deeper than the reader's stack. */
	cs_cid chain = leaves[0];
	uint64_t ten = 10;
	for (int i = 0; i < UFS_READ_DEPTH_MAX + 1; i++)
		chain = put_file_node(&m, &chain, 1, &ten, 1, 10);
	expect_read(&m, &chain, CS_ELIMIT, "deeper than 64");

	/* Zero-size children fanning out 8 ways over 40 levels would mean 8^40 fetches if the
	 * reader followed them; it reads only children that hold wanted bytes. */
	cs_cid z[8];
	uint64_t zeros[8] = {0};
	z[0] = put_file_node(&m, NULL, 0, NULL, 0, 0);
	for (int i = 0; i < 40; i++) {
		for (int k = 1; k < 8; k++)
			z[k] = z[0];
		z[0] = put_file_node(&m, z, 8, zeros, 8, 0);
	}
	cs_cid fan[8] = {leaves[0], z[0], z[0], z[0], z[0], z[0], z[0], leaves[1]};
	uint64_t fbs[8] = {10, 0, 0, 0, 0, 0, 0, 20};
	c = put_file_node(&m, fan, 8, fbs, 8, 30);
	uint64_t touched;
	assert_int_equal(ufs_read(mem_get, &m, &c, 0, out, sizeof(out), &got, &touched), 0);
	assert_int_equal(got, 30);
	assert_memory_equal(out, bytes, 30);
	assert_int_equal(touched, 3);
	mem_free(&m);

	/* A missing leaf: the sink drops one block, the reader names it. */
	for (int v = 0; v < 2; v++) {
		struct ufs_params p = profile(v);
		p.chunk_size = 1000;
		size_t n = 200000;
		uint8_t *data = malloc(n);
		fill(data, n, 9);
		struct mem dm = {.keep = true, .drop_at = 57};
		cs_cid root = build(&p, &dm, data, n, 0, NULL);
		uint8_t *buf = malloc(n);
		assert_int_equal(ufs_read(mem_get, &dm, &root, 0, buf, 56000, &got, NULL), 0);
		assert_int_equal(got, 56000);
		/* The sink saw the CIDv1; a v0 DAG links dag-pb leaves by their CIDv0. */
		char dropped[CS_CID_TEXT_MAX];
		cs_cid_info info;
		cs_cid v1 = dm.dropped;
		assert_int_equal(cs_cid_inspect(&v1, &info), 0);
		if (v == 0)
			assert_int_equal(cid_make(0, info.codec, info.hash, info.digest,
			                          info.digest_len, &dm.dropped),
			                 0);
		snprintf(dropped, sizeof(dropped), "%s", cid_text(&dm.dropped));
		assert_int_equal(ufs_read(mem_get, &dm, &root, 0, buf, n, &got, NULL),
		                 CS_ENOTFOUND);
		assert_errmsg_has(dropped);
		assert_non_null(strstr(cs_errmsg(), "missing"));
		assert_int_equal(ufs_read(mem_get, &dm, &root, 56500, buf, 10, &got, NULL),
		                 CS_ENOTFOUND);
		assert_int_equal(ufs_read(mem_get, &dm, &root, 57000, buf, 10, &got, NULL), 0);
		cs_cid gone;
		assert_int_equal(
		    cs_cid_compute("nothing", 7, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &gone), 0);
		assert_int_equal(ufs_read(mem_get, &dm, &gone, 0, buf, 10, &got, NULL),
		                 CS_ENOTFOUND);
		assert_non_null(strstr(cs_errmsg(), "root block"));
		mem_free(&dm);
		free(data);
		free(buf);
	}
}

/* ---- The public API on a real store -------------------------------------------------- */

static void test_store_api(void **state)
{
	char dir[4096], path[4200];
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE; /* cs_add_finish syncs before it returns the root */
	cs_store *s;
	cs_add *a;
	cs_add_options ao;
	cs_cid root, root2, want;
	uint64_t size, touched;
	size_t got;

	tu_tmpdir(dir, sizeof(dir), "unixfs-store");
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	size_t len = 3 * MIB + 4321;
	uint8_t *data = malloc(len), *buf = malloc(len);
	fill(data, len, 11);

	for (int v = 0; v < 2; v++) {
		cs_add_options_init(&ao);
		ao.cid_version = v;
		struct ufs_params p = profile(v);
		struct mem m = {0};
		want = build(&p, &m, data, len, 0, NULL);
		mem_free(&m);

		assert_int_equal(cs_add_begin(s, &ao, &a), 0);
		rng_state = 99;
		for (size_t off = 0; off < len;) {
			size_t n = 1 + rnd() % (700 * KIB);
			n = n > len - off ? len - off : n;
			assert_int_equal(cs_add_write(a, data + off, n), 0);
			off += n;
		}
		assert_int_equal(cs_add_finish(a, &root, &size), 0);
		assert_int_equal(size, len);
		assert_string_equal(cid_text(&root), cid_text(&want));
		cs_cid_info info;
		assert_int_equal(cs_cid_inspect(&root, &info), 0);
		assert_int_equal(info.version, v);

		assert_int_equal(cs_file_size(s, &root, &size), 0);
		assert_int_equal(size, len);
		assert_int_equal(cs_cat(s, &root, 0, buf, len, &got, &touched), 0);
		assert_int_equal(got, len);
		assert_memory_equal(buf, data, len);
		assert_int_equal(touched, 1 + (len + CHUNK - 1) / CHUNK);
		assert_int_equal(cs_cat(s, &root, CHUNK + 5, buf, 4096, &got, &touched), 0);
		assert_int_equal(got, 4096);
		assert_memory_equal(buf, data + CHUNK + 5, 4096);
		assert_int_equal(touched, 2);

		/* cs_add_fd from a file gives the same root. */
		snprintf(path, sizeof(path), "%s/input.bin", dir);
		int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, data, len), (ssize_t)len);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		assert_int_equal(cs_add_fd(s, &ao, fd, &root2, &size), 0);
		close(fd);
		unlink(path);
		assert_int_equal(size, len);
		assert_string_equal(cid_text(&root2), cid_text(&want));
	}

	/* The empty file and a single byte, both profiles, through the store. */
	cs_add_options_init(&ao);
	assert_int_equal(cs_add_begin(s, &ao, &a), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	assert_cid_text(&root, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
	assert_int_equal(cs_cat(s, &root, 0, buf, 10, &got, NULL), 0);
	assert_int_equal(got, 0);
	ao.cid_version = 0;
	assert_int_equal(cs_add_begin(s, &ao, &a), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	assert_cid_text(&root, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH");
	assert_int_equal(cs_file_size(s, &root, &size), 0);
	assert_int_equal(size, 0);

	/* Options and arguments. */
	cs_add_options_init(&ao);
	ao.cid_version = 2;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	cs_add_options_init(&ao);
	ao.cid_version = 0;
	ao.hash = CS_HASH_BLAKE2B_256;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	cs_add_options_init(&ao);
	ao.hash = 0x13; /* sha2-512 */
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EUNSUPPORTED);
	cs_add_options_init(&ao);
	ao.chunk_size = CS_ADD_CHUNK_MAX + 1;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_ELIMIT);
	ao.chunk_size = 0;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	ao.chunker = CS_CHUNK_CDC;
	ao.chunk_size = 100000;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	ao.chunk_size = 512 * KIB;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_ELIMIT);
	ao.chunker = 7;
	ao.chunk_size = CHUNK;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	cs_add_options_init(&ao);
	ao.raw_leaves = 2;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_EINVAL);
	assert_true(cs_errmsg()[0] != '\0');

	/* An aborted add leaves the store usable; CDC through the API; a bad fd. */
	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	assert_int_equal(cs_add_write(a, data, 1000), 0);
	cs_add_abort(a);
	cs_add_options_init(&ao);
	ao.chunker = CS_CHUNK_CDC;
	assert_int_equal(cs_add_begin(s, &ao, &a), 0);
	assert_int_equal(cs_add_write(a, data, len), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	assert_int_equal(cs_cat(s, &root, 1000, buf, len, &got, NULL), 0);
	assert_int_equal(got, len - 1000);
	assert_memory_equal(buf, data + 1000, len - 1000);
	assert_int_equal(cs_add_fd(s, NULL, -1, &root, &size), -EBADF);
	assert_int_equal(cs_cat(s, &root, 0, NULL, 5, &got, NULL), CS_EINVAL);

	/* A dag-pb block that is not a UnixFS file, given to cat. */
	uint8_t node[16];
	size_t nl;
	assert_int_equal(
	    pb_node_encode(node, sizeof(node), NULL, 0, (const uint8_t *)"hello", 5, true, &nl), 0);
	assert_int_equal(cs_block_put(s, node, nl, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &root), 0);
	assert_int_equal(cs_cat(s, &root, 0, buf, 10, &got, NULL), CS_EINVAL);
	assert_errmsg_has("not a UnixFS node");
	assert_int_equal(cs_file_size(s, &root, &size), CS_EINVAL);

	/* A missing root. */
	assert_int_equal(cs_cid_compute("absent", 6, CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &root), 0);
	char absent[CS_CID_TEXT_MAX];
	snprintf(absent, sizeof(absent), "%s", cid_text(&root));
	assert_int_equal(cs_cat(s, &root, 0, buf, 10, &got, NULL), CS_ENOTFOUND);
	assert_errmsg_has(absent);
	assert_int_equal(cs_file_size(s, &root, &size), CS_ENOTFOUND);

	/* Blocks survive a reopen. */
	assert_int_equal(cs_store_close(s), 0);
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	assert_int_equal(cs_cat(s, &want, 0, buf, len, &got, NULL), 0);
	assert_int_equal(got, len);
	assert_memory_equal(buf, data, len);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
	free(data);
	free(buf);
}

/* ---- Runs of leaves on a real store ------------------------------------------------------ */

/* Adds the len bytes at data as a file with the default options; returns its root. */
static cs_cid add_bytes(cs_store *s, const uint8_t *data, size_t len)
{
	cs_add *a;
	cs_cid root;
	uint64_t size;

	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	assert_int_equal(cs_add_write(a, data, len), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	assert_int_equal(size, len);
	return root;
}

/* Flips a byte 100 bytes past the first place a segment file of dir holds the 64 bytes at pat
 * (a leaf's first bytes, so the flip lands in its record's payload). */
static void damage_in_log(const char *dir, const uint8_t *pat)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4400];
	int found = 0;

	assert_non_null(d);
	while (!found && (de = readdir(d)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 4 || strcmp(de->d_name + nl - 4, ".seg") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		int fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		struct stat st;
		assert_int_equal(fstat(fd, &st), 0);
		uint8_t *all = malloc((size_t)st.st_size);
		assert_int_equal(pread(fd, all, (size_t)st.st_size, 0), st.st_size);
		uint8_t *at = memmem(all, (size_t)st.st_size, pat, 64);
		if (at != NULL) {
			uint8_t b = (uint8_t)(at[100] ^ 0x40);
			assert_int_equal(pwrite(fd, &b, 1, (at - all) + 100), 1);
			found = 1;
		}
		free(all);
		close(fd);
	}
	closedir(d);
	assert_true(found);
}

/* cs_cat gathers the whole raw leaves of a range into runs and reads each run's records that
 * lie back to back in the log with one call (store_get_many, wal_read_many). Shown here: a
 * file whose leaves were deduplicated from an earlier one, so that its runs break where an
 * old leaf meets a new one, reads back right at any range, touching one block per leaf; a
 * damaged leaf in the middle of a run is CS_ECORRUPT naming that leaf, with the leaves before
 * it counted as touched and the ranges around it still readable; a leaf missing in the
 * middle of a run is CS_ENOTFOUND naming it. */
static void test_cat_runs(void **state)
{
	enum { NA = 40, NB = 16 };
	/* B's leaves: A's by index (out of order, one twice), or new ones (-1). */
	static const int from_a[NB] = {3, -1, -1, 4, 5, 6, -1, 0, 0, -1, 39, 38, -1, -1, -1, 10};
	char dir[4096], name[2][CS_CID_TEXT_MAX];
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE; /* cs_add_finish syncs before it returns the root */
	cs_store *s;
	cs_cid leaf[NA];
	uint64_t touched;
	size_t got, alen = NA * CHUNK, blen = NB * CHUNK - 1000;
	uint8_t *a = malloc(alen), *b = malloc(NB * CHUNK), *buf = malloc(alen);

	tu_tmpdir(dir, sizeof(dir), "unixfs-runs");
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	fill(a, alen, 77);
	for (int i = 0; i < NA; i++)
		assert_int_equal(cs_cid_compute(a + (size_t)i * CHUNK, CHUNK, CS_CODEC_RAW,
		                                CS_HASH_SHA2_256, &leaf[i]),
		                 0);
	cs_cid ra = add_bytes(s, a, alen);
	for (int j = 0; j < NB; j++) {
		if (from_a[j] >= 0)
			memcpy(b + (size_t)j * CHUNK, a + (size_t)from_a[j] * CHUNK, CHUNK);
		else
			fill(b + (size_t)j * CHUNK, CHUNK, 1000 + (uint64_t)j);
	}
	cs_cid rb = add_bytes(s, b, blen);

	/* Whole files (more leaves than a run holds), then random ranges. */
	assert_int_equal(cs_cat(s, &ra, 0, buf, alen, &got, &touched), 0);
	assert_int_equal(got, alen);
	assert_memory_equal(buf, a, alen);
	assert_int_equal(touched, 1 + NA);
	assert_int_equal(cs_cat(s, &rb, 0, buf, blen, &got, &touched), 0);
	assert_int_equal(got, blen);
	assert_memory_equal(buf, b, blen);
	assert_int_equal(touched, 1 + NB);
	rng_state = 7;
	for (int i = 0; i < 200; i++) {
		size_t off = rnd() % (blen + 1), n = rnd() % (5 * CHUNK);
		size_t want = n < blen - off ? n : blen - off;
		assert_int_equal(cs_cat(s, &rb, off, buf, n, &got, NULL), 0);
		assert_int_equal(got, want);
		assert_memory_equal(buf, b + off, want);
	}

	/* A damaged leaf (A's 8th, which B does not share) in the middle of a run. */
	snprintf(name[0], sizeof(name[0]), "%s", cid_text(&leaf[8]));
	damage_in_log(dir, a + 8 * CHUNK);
	assert_int_equal(cs_cat(s, &ra, 0, buf, alen, &got, &touched), CS_ECORRUPT);
	assert_errmsg_has(name[0]);
	assert_errmsg_has("checksum");
	assert_int_equal(touched, 1 + 8);
	assert_int_equal(cs_cat(s, &ra, 6 * CHUNK + 7, buf, 4 * CHUNK, &got, NULL), CS_ECORRUPT);
	assert_errmsg_has(name[0]);
	assert_int_equal(cs_cat(s, &ra, 0, buf, 8 * CHUNK, &got, NULL), 0);
	assert_memory_equal(buf, a, 8 * CHUNK);
	assert_int_equal(cs_cat(s, &ra, 9 * CHUNK, buf, alen, &got, NULL), 0);
	assert_int_equal(got, alen - 9 * CHUNK);
	assert_memory_equal(buf, a + 9 * CHUNK, alen - 9 * CHUNK);
	assert_int_equal(cs_cat(s, &rb, 0, buf, blen, &got, NULL), 0);
	/* A kept reader (cs_file) meets the same damage, names the leaf, and reads on. */
	cs_file *fa;
	assert_int_equal(cs_file_open(s, &ra, &fa), 0);
	assert_int_equal(cs_file_length(fa), alen);
	assert_int_equal(cs_file_read(fa, 0, buf, 4 * CHUNK, &got, &touched), 0);
	assert_int_equal(touched, 4);
	assert_int_equal(cs_file_read(fa, 4 * CHUNK, buf, 8 * CHUNK, &got, &touched), CS_ECORRUPT);
	assert_errmsg_has(name[0]);
	assert_errmsg_has("checksum");
	assert_int_equal(touched, 4);
	assert_int_equal(cs_file_read(fa, 9 * CHUNK, buf, alen, &got, NULL), 0);
	assert_int_equal(got, alen - 9 * CHUNK);
	assert_memory_equal(buf, a + 9 * CHUNK, alen - 9 * CHUNK);

	/* A missing leaf (A's 20th) in the middle of a run. */
	snprintf(name[1], sizeof(name[1]), "%s", cid_text(&leaf[20]));
	assert_int_equal(cs_block_delete(s, &leaf[20]), 0);
	assert_int_equal(cs_cat(s, &ra, 16 * CHUNK, buf, 8 * CHUNK, &got, &touched), CS_ENOTFOUND);
	assert_errmsg_has(name[1]);
	assert_errmsg_has("missing");
	assert_int_equal(touched, 1 + 4);
	assert_int_equal(cs_file_check(s, &ra, 16 * CHUNK, 8 * CHUNK), CS_ENOTFOUND);
	assert_errmsg_has(name[1]);
	assert_int_equal(cs_cat(s, &ra, 21 * CHUNK, buf, 19 * CHUNK, &got, NULL), 0);
	assert_memory_equal(buf, a + 21 * CHUNK, 19 * CHUNK);
	assert_int_equal(cs_file_read(fa, 16 * CHUNK, buf, 8 * CHUNK, &got, NULL), CS_ENOTFOUND);
	assert_errmsg_has(name[1]);
	assert_errmsg_has("missing");
	assert_int_equal(cs_file_read(fa, 21 * CHUNK, buf, 19 * CHUNK, &got, NULL), 0);
	assert_memory_equal(buf, a + 21 * CHUNK, 19 * CHUNK);
	cs_file_close(fa);

	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
	free(a);
	free(b);
	free(buf);
}

/* ---- Directories and symlinks: nodes --------------------------------------------------- */

/* Builds a directory in m from n (name, cid, tsize) entries given in the order of idx. */
static cs_cid build_dir(int version, struct mem *m, const char *const *names, const cs_cid *cids,
                        const uint64_t *tsizes, const size_t *idx, size_t n, uint64_t *tsize)
{
	struct ufs_params p = profile(version);
	struct ufs_dir *d;
	cs_cid root;

	assert_int_equal(ufs_dir_new(&p, mem_emit, m, &d), 0);
	for (size_t i = 0; i < n; i++) {
		size_t k = idx[i];
		assert_int_equal(ufs_dir_add(d, (const uint8_t *)names[k], strlen(names[k]),
		                             &cids[k], tsizes[k]),
		                 0);
	}
	assert_int_equal(ufs_dir_finish(d, &root, tsize), 0);
	ufs_dir_free(d);
	return root;
}

/* Fetches block c from m (kept) and returns it, with *len. */
static const uint8_t *mem_block(struct mem *m, const cs_cid *c, size_t *len)
{
	uint8_t key[CID_KEY_LEN];

	assert_int_equal(cid_key(c, key), 0);
	struct ment *e = mem_find(m, key, false);
	assert_non_null(e);
	*len = e->len;
	return e->data;
}

static void test_dir_nodes(void **state)
{
	struct mem m = {.keep = true};
	struct ufs_params p1 = profile(1), p0 = profile(0);
	struct ufs_dir *d;
	cs_cid root, root2;
	uint64_t tsize;

	/* The empty directory, both profiles: the CIDs Kubo prints for `ipfs object new
	 * unixfs-dir` and an empty `ipfs add -r`. */
	for (int v = 0; v < 2; v++) {
		assert_int_equal(ufs_dir_new(v ? &p1 : &p0, mem_emit, &m, &d), 0);
		assert_int_equal(ufs_dir_estimate(d), 0);
		assert_int_equal(ufs_dir_finish(d, &root, &tsize), 0);
		ufs_dir_free(d);
		assert_cid_text(&root,
		                v ? "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
		                  : "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
		assert_int_equal(tsize, 4); /* 0a 02 08 01 */
	}

	/* Links come out in byte order of the names, a prefix first, whatever the order of
	 * the adds; each carries its Tsize; the directory's Tsize is its bytes plus theirs. */
	static const char *const names[] = {"b",   "a", "ab", "B",       "\xc3\xa9t\xc3\xa9",
	                                    "a b", "~", "-",  ".hidden", "\xf0\x9f\x8e\x89"};
	enum { N = sizeof(names) / sizeof(names[0]) };
	cs_cid cids[N];
	uint64_t tsizes[N], sum = 0;
	size_t fwd[N], rev[N];
	for (size_t i = 0; i < N; i++) {
		uint8_t b[8];
		fill(b, sizeof(b), i);
		cids[i] = mem_put(&m, b, 1 + i % 8, CS_CODEC_RAW);
		tsizes[i] = 1 + i % 8;
		sum += tsizes[i];
		fwd[i] = i;
		rev[i] = N - 1 - i;
	}
	root = build_dir(1, &m, names, cids, tsizes, fwd, N, &tsize);
	root2 = build_dir(1, &m, names, cids, tsizes, rev, N, NULL);
	assert_string_equal(cid_text(&root), cid_text(&root2));
	size_t len;
	const uint8_t *blk = mem_block(&m, &root, &len);
	assert_int_equal(tsize, len + sum);
	struct pb_node n;
	struct pb_link_iter it;
	struct pb_link l, prev = {0};
	struct ufs_data u;
	assert_int_equal(pb_node_decode(blk, len, &n), 0);
	assert_int_equal(n.n_links, N);
	assert_true(n.has_data && n.data_len == 2 && n.data[0] == 0x08 && n.data[1] == 0x01);
	assert_int_equal(ufs_decode(n.data, n.data_len, &u), 0);
	assert_int_equal(u.type, UFS_DIRECTORY);
	assert_false(u.has_filesize);
	pb_links_begin(&n, &it);
	for (size_t i = 0; pb_links_next(&it, &l); i++) {
		assert_true(l.has_name && l.has_tsize);
		if (i > 0) {
			size_t k = prev.name_len < l.name_len ? prev.name_len : l.name_len;
			int c = memcmp(prev.name, l.name, k);
			assert_true(c < 0 || (c == 0 && prev.name_len < l.name_len));
		}
		/* The link names the CID and Tsize given with its name. */
		size_t k = 0;
		while (strlen(names[k]) != l.name_len || memcmp(names[k], l.name, l.name_len) != 0)
			k++;
		assert_int_equal(l.hash_len, cids[k].len);
		assert_memory_equal(l.hash, cids[k].bytes, l.hash_len);
		assert_int_equal(l.tsize, tsizes[k]);
		prev = l;
	}
	/* The order itself: "a" before "a b" (a prefix first) before "ab" (' ' < 'b'), "B"
	 * before "a", multi-byte UTF-8 after ASCII. */
	pb_links_begin(&n, &it);
	const char *want[] = {"-",
	                      ".hidden",
	                      "B",
	                      "a",
	                      "a b",
	                      "ab",
	                      "b",
	                      "~",
	                      "\xc3\xa9t\xc3\xa9",
	                      "\xf0\x9f\x8e\x89"};
	for (size_t i = 0; pb_links_next(&it, &l); i++) {
		assert_int_equal(l.name_len, strlen(want[i]));
		assert_memory_equal(l.name, want[i], l.name_len);
	}
	/* The Tsize a link to this directory carries, computed from its block alone. */
	uint64_t t2;
	assert_int_equal(ufs_tsize_of(CS_CODEC_DAG_PB, blk, len, &t2), 0);
	assert_int_equal(t2, tsize);
	assert_int_equal(ufs_tsize_of(CS_CODEC_RAW, blk, 7, &t2), 0);
	assert_int_equal(t2, 7);
	assert_int_equal(ufs_tsize_of(CS_CODEC_DAG_CBOR, blk, len, &t2), CS_EINVAL);
	assert_int_equal(ufs_tsize_of(CS_CODEC_DAG_PB, (const uint8_t *)"\x0a\x05\x01", 3, &t2),
	                 CS_EINVAL);

	/* Names every directory refuses, each with its code; a failure is sticky. */
	static const struct {
		const char *name;
		size_t len;
		int code;
	} bad[] = {{"", 0, CS_EINVAL},    {".", 1, CS_EINVAL},    {"..", 2, CS_EINVAL},
	           {"a/b", 3, CS_EINVAL}, {"a\0b", 3, CS_EINVAL}, {"/", 1, CS_EINVAL}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(ufs_dir_new(&p1, mem_emit, &m, &d), 0);
		assert_int_equal(
		    ufs_dir_add(d, (const uint8_t *)bad[i].name, bad[i].len, &cids[0], 1),
		    bad[i].code);
		assert_true(cs_errmsg()[0] != '\0');
		assert_int_equal(ufs_dir_add(d, (const uint8_t *)"ok", 2, &cids[0], 1),
		                 bad[i].code);
		assert_int_equal(ufs_dir_finish(d, &root, NULL), bad[i].code);
		ufs_dir_free(d);
	}
	char longname[UFS_NAME_MAX + 2];
	memset(longname, 'x', sizeof(longname));
	assert_int_equal(ufs_dir_new(&p1, mem_emit, &m, &d), 0);
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)longname, UFS_NAME_MAX, &cids[0], 1), 0);
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)"..a", 3, &cids[0], 1), 0); /* fine */
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)longname, UFS_NAME_MAX + 1, &cids[0], 1),
	                 CS_ELIMIT);
	ufs_dir_free(d);
	/* Two entries with one name: refused at finish, quoted safely in the message. */
	assert_int_equal(ufs_dir_new(&p1, mem_emit, &m, &d), 0);
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)"tw\no", 4, &cids[0], 1), 0);
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)"x", 1, &cids[1], 1), 0);
	assert_int_equal(ufs_dir_add(d, (const uint8_t *)"tw\no", 4, &cids[1], 2), 0);
	assert_int_equal(ufs_dir_finish(d, &root, NULL), CS_EINVAL);
	assert_errmsg_has("tw\\x0ao");
	ufs_dir_free(d);

	/* The sharding threshold: with Kubo's estimate (name bytes + CID bytes, 36 per CIDv1)
	 * at exactly 262144 the node is flat; one entry more and the root is a HAMT shard. */
	char nm[256];
	for (int over = 0; over <= 1; over++) {
		assert_int_equal(ufs_dir_new(&p1, mem_emit, &m, &d), 0);
		uint64_t est = 0;
		size_t i = 0;
		while (est + 236 <= UFS_DIR_SHARD_BYTES - 37) {
			snprintf(nm, sizeof(nm), "%05zu%0195d", i++, 0);
			assert_int_equal(ufs_dir_add(d, (const uint8_t *)nm, 200, &cids[0], 1), 0);
			est += 236;
		}
		size_t last = UFS_DIR_SHARD_BYTES - est - 36; /* the name that ends at 262144 */
		assert_true(last >= 1 && last <= UFS_NAME_MAX);
		memset(nm, 'z', last);
		assert_int_equal(ufs_dir_add(d, (const uint8_t *)nm, last, &cids[0], 1), 0);
		assert_int_equal(ufs_dir_estimate(d), UFS_DIR_SHARD_BYTES);
		if (over)
			assert_int_equal(ufs_dir_add(d, (const uint8_t *)"y", 1, &cids[1], 1), 0);
		assert_int_equal(ufs_dir_finish(d, &root, &tsize), 0);
		ufs_dir_free(d);
		struct pb_node pn;
		struct ufs_data ud;
		blk = mem_block(&m, &root, &len);
		assert_int_equal(pb_node_decode(blk, len, &pn), 0);
		assert_int_equal(ufs_decode(pn.data, pn.data_len, &ud), 0);
		assert_int_equal(ud.type, over ? UFS_HAMT_SHARD : UFS_DIRECTORY);
		if (over) {
			/* 1112 entries in 256 slots: the bitmap (big-endian, bit i = slot i)
			 * has a bit per link, whose labels begin with their slots, ascending. */
			assert_true(ud.has_hashtype && ud.hashtype == 0x22);
			assert_true(ud.has_fanout && ud.fanout == 256);
			assert_true(ud.data_len >= 1 && ud.data_len <= 32);
			struct pb_link_iter li;
			struct pb_link sl;
			int prev_slot = -1, links = 0, bits = 0;
			for (size_t b = 0; b < ud.data_len; b++)
				bits += __builtin_popcount(ud.data[b]);
			pb_links_begin(&pn, &li);
			while (pb_links_next(&li, &sl)) {
				char hx[3] = {(char)sl.name[0], (char)sl.name[1], 0};
				int slot = (int)strtol(hx, NULL, 16);
				assert_true(sl.name_len >= 2 && slot > prev_slot);
				assert_true(strspn(hx, "0123456789ABCDEF") == 2);
				size_t byte = ud.data_len - 1 - (size_t)slot / 8;
				assert_true(ud.data[byte] & (1u << (slot % 8)));
				prev_slot = slot;
				links++;
			}
			assert_int_equal(links, bits);
			assert_true(links > 200);
		}
	}
	/* In a shard, two entries with one name are still refused. */
	assert_int_equal(ufs_dir_new(&p1, mem_emit, &m, &d), 0);
	for (size_t i = 0; i < 2000; i++) {
		snprintf(nm, sizeof(nm), "%0200zu", i % 1999);
		assert_int_equal(ufs_dir_add(d, (const uint8_t *)nm, 200, &cids[0], 1), 0);
	}
	assert_true(ufs_dir_estimate(d) > UFS_DIR_SHARD_BYTES);
	assert_int_equal(ufs_dir_finish(d, &root, NULL), CS_EINVAL);
	assert_errmsg_has("named");
	ufs_dir_free(d);

	/* Symlinks: UnixFS {Type = Symlink, Data = target} in a node without links. */
	static const uint8_t want_link[] = {0x0a, 0x08, 0x08, 0x04, 0x12, 0x04, '.', '.', '/', 'a'};
	assert_int_equal(ufs_symlink(&p1, mem_emit, &m, (const uint8_t *)"../a", 4, &root, &tsize),
	                 0);
	blk = mem_block(&m, &root, &len);
	assert_int_equal(len, sizeof(want_link));
	assert_memory_equal(blk, want_link, len);
	assert_int_equal(tsize, len);
	/* The importer's CID for it (tests/compat: a symlink "../a" in a v1 directory). */
	assert_cid_text(&root, "bafybeif2ezlv4jjwlifrjw2e5uqxcn5viyu4im3cg64rvtkbkdmbxkho5y");
	assert_int_equal(ufs_symlink(&p0, mem_emit, &m, (const uint8_t *)"../a", 4, &root, NULL),
	                 0);
	assert_cid_text(&root, "QmasJT5tCnfkFgkEQHGZoKD1eq6B2rkAPUfxThUMxVUQpu");
	uint8_t far[UFS_SYMLINK_MAX + 1];
	memset(far, 'a', sizeof(far));
	assert_int_equal(ufs_symlink(&p1, mem_emit, &m, far, UFS_SYMLINK_MAX, &root, NULL), 0);
	assert_int_equal(ufs_symlink(&p1, mem_emit, &m, far, UFS_SYMLINK_MAX + 1, &root, NULL),
	                 CS_ELIMIT);
	mem_free(&m);
}

/* A check (ufs_read without a buffer) reads the nodes but only sizes the raw leaves, and
 * finds what a read would find. */
static void test_check_reads(void **state)
{
	struct ufs_params p = profile(1);
	p.chunk_size = 1000;
	size_t n = 200000;
	uint8_t *data = malloc(n);
	fill(data, n, 21);
	struct mem m = {.keep = true};
	unsigned height;
	cs_cid root = build(&p, &m, data, n, 0, &height);
	size_t got;
	uint64_t touched;

	assert_int_equal(height, 2);
	m.gets = 0;
	assert_int_equal(ufs_read(mem_get, &m, &root, 0, NULL, n, &got, &touched), 0);
	assert_int_equal(got, n);
	assert_int_equal(m.gets, 1 + 2); /* the root and its two nodes; no leaf's bytes */
	assert_int_equal(touched, 1 + 2 + 200);
	m.gets = 0;
	assert_int_equal(ufs_read(mem_get, &m, &root, 5500, NULL, 10, &got, &touched), 0);
	assert_int_equal(got, 10);
	assert_int_equal(touched, 3);
	assert_int_equal(ufs_read(mem_get, &m, &root, n - 5, NULL, 100, &got, NULL), 0);
	assert_int_equal(got, 5);
	mem_free(&m);

	/* A dropped leaf is found by the check, named, and only when the range needs it. */
	struct mem dm = {.keep = true, .drop_at = 57};
	root = build(&p, &dm, data, n, 0, NULL);
	char dropped[CS_CID_TEXT_MAX];
	snprintf(dropped, sizeof(dropped), "%s", cid_text(&dm.dropped));
	assert_int_equal(ufs_read(mem_get, &dm, &root, 0, NULL, n, &got, NULL), CS_ENOTFOUND);
	assert_errmsg_has(dropped);
	assert_int_equal(ufs_read(mem_get, &dm, &root, 57000, NULL, n, &got, NULL), 0);
	mem_free(&dm);

	/* A raw leaf shorter than its parent's blocksize says. */
	struct mem bm = {.keep = true};
	cs_cid leaves[2] = {mem_put(&bm, data, 10, CS_CODEC_RAW),
	                    mem_put(&bm, data, 20, CS_CODEC_RAW)};
	uint64_t bs[2] = {10, 25};
	cs_cid c = put_file_node(&bm, leaves, 2, bs, 2, 35);
	assert_int_equal(ufs_read(mem_get, &bm, &c, 0, NULL, 35, &got, NULL), CS_ECORRUPT);
	assert_errmsg_has("blocksize says 25");
	assert_int_equal(ufs_read(mem_get, &bm, &c, 0, NULL, 10, &got, NULL), 0);
	mem_free(&bm);
	free(data);
}

/* ---- Directories from the file system ---------------------------------------------- */

static void mkdir_or_die(const char *path)
{
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		fail_msg("mkdir %s: %s", path, strerror(errno));
}

/* Writes len seeded bytes to dir/name. */
static void put_file(const char *dir, const char *name, size_t len, uint64_t seed)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	uint8_t *data = malloc(len ? len : 1);
	assert_non_null(data);
	fill(data, len, seed);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		fail_msg("create %s: %s", path, strerror(errno));
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	free(data);
}

/* The mixed tree under top: nested directories, unicode names and names that sort in
 * interesting ways, an empty directory, empty files, files at the chunk boundaries of chunk
 * size c (inside directories two levels down), a symlink, a dotfile. */
static void make_tree(const char *top, size_t c)
{
	char d[4096];
	mkdir_or_die(top);
	put_file(top, "a", 100, 1);
	put_file(top, "ab", 0, 2);
	put_file(top, "B", 1, 3);
	put_file(top, "a b", 7, 4);
	put_file(top, ".hidden", 33, 5);
	put_file(top, "\xc3\xa9t\xc3\xa9.txt", 1234, 6);
	snprintf(d, sizeof(d), "%s/empty", top);
	mkdir_or_die(d);
	snprintf(d, sizeof(d), "%s/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", top); /* 日本語 */
	mkdir_or_die(d);
	put_file(d, "\xf0\x9f\x8e\x89", 5, 7); /* 🎉 */
	put_file(d, "e\xcc\x81", 0, 8);        /* e + combining acute */
	snprintf(d, sizeof(d), "%s/sizes", top);
	mkdir_or_die(d);
	snprintf(d, sizeof(d), "%s/sizes/deeper", top);
	mkdir_or_die(d);
	size_t sizes[] = {0, 1, c - 1, c, c + 1, 3 * c + 17};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char nm[64];
		snprintf(nm, sizeof(nm), "f%zu", sizes[i]);
		put_file(d, nm, sizes[i], 100 + sizes[i]);
	}
	if (c <= 4096) { /* 174 chunks and one more: a two-level file */
		put_file(d, "f174c", 174 * c, 11);
		put_file(d, "f174c+1", 174 * c + 1, 12);
	}
	char link[4200];
	snprintf(link, sizeof(link), "%s/sizes/to-a", top);
	assert_int_equal(symlink("../a", link), 0);
	snprintf(link, sizeof(link), "%s/dangling", top);
	assert_int_equal(symlink("nowhere/at/all", link), 0);
}

/* A directory whose Kubo estimate is exactly 262144 bytes with CIDv1 children (36 bytes):
 * 1110 empty files with 200-byte names and one with a 148-byte name. The importer and newer
 * Kubo keep it flat (they shard above the threshold); older Kubo shards it. */
static void make_flat_limit(const char *top)
{
	char nm[256];
	mkdir_or_die(top);
	for (int i = 0; i < 1110; i++) {
		snprintf(nm, sizeof(nm), "%05d%0195d", i, 0);
		put_file(top, nm, 0, 0);
	}
	memset(nm, 'z', 148);
	nm[148] = '\0';
	put_file(top, nm, 0, 0);
}

/* A directory well above the threshold: 7000 empty files with short names, so every slot of
 * the root shard holds a child shard and some of those hold deeper ones, with a
 * subdirectory, a symlink and a file with content among them. */
static void make_sharded(const char *top)
{
	char nm[4400];
	mkdir_or_die(top);
	for (int i = 0; i < 7000; i++) {
		snprintf(nm, sizeof(nm), "f%05d", i);
		put_file(top, nm, 0, 0);
	}
	put_file(top, "data.bin", 300000, 9);
	snprintf(nm, sizeof(nm), "%s/sub", top);
	mkdir_or_die(nm);
	put_file(nm, "inner", 10, 10);
	snprintf(nm, sizeof(nm), "%s/link", top);
	if (symlink("sub/inner", nm) != 0)
		fail_msg("symlink %s: %s", nm, strerror(errno));
}

struct seen {
	char paths[64][256];
	int types[64];
	uint64_t sizes[64];
	size_t n;
	uint64_t last_done, last_total;
	int stop_at; /* return 7 from this entry (1-based); 0: never */
};

static int seen_entry(void *ctx, const cs_add_entry *e)
{
	struct seen *s = ctx;
	if (s->n < 64) {
		snprintf(s->paths[s->n], sizeof(s->paths[0]), "%s", e->path);
		s->types[s->n] = e->type;
		s->sizes[s->n] = e->size;
	}
	s->n++;
	return (int)s->n == s->stop_at ? 7 : 0;
}

static void seen_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct seen *s = ctx;
	assert_true(done > s->last_done);
	s->last_done = done;
	s->last_total = total;
}

static void dir_compat_case(cs_store *s, const char *args, const cs_add_options *ao,
                            const char *const *trees, size_t n)
{
	char cmd[16384], line[256];
	size_t off = (size_t)snprintf(cmd, sizeof(cmd), "cd '%s' && node import.mjs --dir %s",
	                              compat_dir, args);
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " '%s'", trees[i]);
	assert_true(off < sizeof(cmd));
	fprintf(stderr, "[compat] directories: %s\n", args);
	FILE *pp = popen(cmd, "r");
	assert_non_null(pp);
	size_t i = 0;
	int bad = 0;
	while (fgets(line, sizeof(line), pp) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		assert_true(i < n);
		cs_cid root;
		uint64_t size;
		int rc = cs_add_path(s, ao, trees[i], CS_ADD_RECURSIVE, NULL, &root, &size);
		if (rc != 0)
			fail_msg("cs_add_path %s: %d %s", trees[i], rc, cs_errmsg());
		const char *mine = cid_text(&root);
		int same = strcmp(mine, line) == 0;
		fprintf(stderr, "  %-4s %-60s %s %s\n", same ? "ok" : "DIFF",
		        strrchr(trees[i], '/'), mine, same ? "" : line);
		bad += !same;
		i++;
	}
	int st = pclose(pp);
	if (st != 0)
		fail_msg("import.mjs --dir %s exited with status %d", args, st);
	assert_int_equal(i, n);
	assert_int_equal(bad, 0);
}

static void test_dir_compat(void **state)
{
	char tmp[4096], t256[4200], t1k[4200], flat[4200], empty[4200], store[4200];
	char sharded[4200];
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE;
	cs_store *s;
	cs_add_options ao;

	compat_setup();
	tu_tmpdir(tmp, sizeof(tmp), "dir-compat");
	snprintf(t256, sizeof(t256), "%s/tree-256k", tmp);
	snprintf(t1k, sizeof(t1k), "%s/tree-1000", tmp);
	snprintf(flat, sizeof(flat), "%s/flat-limit", tmp);
	snprintf(empty, sizeof(empty), "%s/empty", tmp);
	snprintf(store, sizeof(store), "%s/store", tmp);
	snprintf(sharded, sizeof(sharded), "%s/sharded", tmp);
	make_tree(t256, CHUNK);
	make_tree(t1k, 1000);
	make_flat_limit(flat);
	make_sharded(sharded);
	mkdir_or_die(empty);
	assert_int_equal(cs_store_open(store, &o, &s), 0);

	const char *both[] = {t256, t1k, empty};
	cs_add_options_init(&ao);
	dir_compat_case(s, "--profile v1", &ao, both, 3);
	ao.cid_version = 0;
	dir_compat_case(s, "--profile v0", &ao, both, 3);
	const char *small[] = {t1k};
	cs_add_options_init(&ao);
	ao.chunk_size = 1000;
	dir_compat_case(s, "--profile v1 --chunker size-1000", &ao, small, 1);
	ao.cid_version = 0;
	dir_compat_case(s, "--profile v0 --chunker size-1000", &ao, small, 1);
	ao.cid_version = 1;
	ao.raw_leaves = 0;
	dir_compat_case(s, "--profile v1 --no-raw-leaves --chunker size-1000", &ao, small, 1);
	ao.raw_leaves = -1;
	ao.hash = CS_HASH_BLAKE2B_256;
	dir_compat_case(s, "--profile v1 --hash blake2b-256 --chunker size-1000", &ao, small, 1);
	/* At the sharding threshold the importer builds the same flat node... */
	const char *lim[] = {flat};
	cs_add_options_init(&ao);
	dir_compat_case(s, "--profile v1", &ao, lim, 1);
	/* ...and one entry more, the same HAMT shard. */
	put_file(flat, "y", 0, 0);
	dir_compat_case(s, "--profile v1", &ao, lim, 1);
	/* Shards of several levels, with a subdirectory, a symlink and content, in both
	 * profiles (CIDv0's 34-byte CIDs change the estimate and the links). */
	const char *big[] = {sharded};
	dir_compat_case(s, "--profile v1", &ao, big, 1);
	ao.cid_version = 0;
	dir_compat_case(s, "--profile v0", &ao, big, 1);
	ao.cid_version = 1;
	ao.hash = CS_HASH_BLAKE2B_256;
	dir_compat_case(s, "--profile v1 --hash blake2b-256", &ao, big, 1);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(tmp);
}

/* The public directory API and cs_add_path on a real store: entries, paths, progress, the
 * same roots both ways, and every refusal with nothing written. */
static void test_add_path(void **state)
{
	char tmp[4096], tree[4200], store[4200], path[8192];
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE;
	cs_store *s;
	cs_cid root, root2, fa, fb, sub;
	uint64_t size, tsize;
	cs_stat st0, st1;

	tu_tmpdir(tmp, sizeof(tmp), "add-path");
	snprintf(tree, sizeof(tree), "%s/top/", tmp); /* a trailing slash changes nothing */
	snprintf(store, sizeof(store), "%s/store", tmp);
	assert_int_equal(cs_store_open(store, &o, &s), 0);
	mkdir_or_die(tree);
	put_file(tree, "b", 300000, 1);
	put_file(tree, "a", 10, 2);
	snprintf(path, sizeof(path), "%s/sub", tree);
	mkdir_or_die(path);
	put_file(path, "c", 5, 3);

	/* Entries: children first, names in byte order, the root last, with paths under the
	 * root's base name; progress reaches the total the scan found. */
	struct seen sn = {0};
	cs_add_callbacks cb = {.entry = seen_entry, .progress = seen_progress, .ctx = &sn};
	assert_int_equal(cs_add_path(s, NULL, tree, CS_ADD_RECURSIVE, &cb, &root, &size), 0);
	assert_int_equal(size, 300015);
	assert_int_equal(sn.n, 5);
	static const char *const want[] = {"top/a", "top/b", "top/sub/c", "top/sub", "top"};
	static const int types[] = {CS_ENTRY_FILE, CS_ENTRY_FILE, CS_ENTRY_FILE, CS_ENTRY_DIR,
	                            CS_ENTRY_DIR};
	static const uint64_t sizes[] = {10, 300000, 5, 5, 300015};
	for (size_t i = 0; i < 5; i++) {
		assert_string_equal(sn.paths[i], want[i]);
		assert_int_equal(sn.types[i], types[i]);
		assert_int_equal(sn.sizes[i], sizes[i]);
	}
	assert_int_equal(sn.last_done, 300015);
	assert_int_equal(sn.last_total, 300015);

	/* The same directory through cs_dir_*, from files added one by one. */
	snprintf(path, sizeof(path), "%s/a", tree);
	assert_int_equal(cs_add_path(s, NULL, path, 0, NULL, &fa, &size), 0);
	assert_int_equal(size, 10);
	snprintf(path, sizeof(path), "%s/b", tree);
	assert_int_equal(cs_add_path(s, NULL, path, 0, NULL, &fb, &size), 0);
	snprintf(path, sizeof(path), "%s/sub/c", tree);
	assert_int_equal(cs_add_path(s, NULL, path, 0, NULL, &root2, NULL), 0);
	cs_dir *d;
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "c", &root2), 0);
	assert_int_equal(cs_dir_finish(d, &sub, &tsize), 0);
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "sub", &sub), 0);
	assert_int_equal(cs_dir_add(d, "b", &fb), 0);
	assert_int_equal(cs_dir_add(d, "a", &fa), 0);
	assert_int_equal(cs_dir_finish(d, &root2, &tsize), 0);
	assert_string_equal(cid_text(&root2), cid_text(&root));
	/* A directory is not a file; a file's size is what was added. */
	uint8_t buf[64];
	size_t got;
	assert_int_equal(cs_cat(s, &root, 0, buf, sizeof(buf), &got, NULL), CS_EINVAL);
	assert_errmsg_has("directory");
	assert_int_equal(cs_file_check(s, &root, 0, 10), CS_EINVAL);
	assert_int_equal(cs_file_check(s, &fb, 0, 300000), 0);

	/* cs_dir_* refusals: an absent entry, a bad name (then the directory is dead), two
	 * entries with one name, a dag-cbor entry. */
	cs_cid absent;
	assert_int_equal(cs_cid_compute("absent", 6, CS_CODEC_RAW, CS_HASH_SHA2_256, &absent), 0);
	char atext[CS_CID_TEXT_MAX];
	snprintf(atext, sizeof(atext), "%s", cid_text(&absent));
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "x", &absent), CS_ENOTFOUND);
	assert_errmsg_has(atext);
	assert_int_equal(cs_dir_add(d, "y", &fa), CS_ENOTFOUND); /* dead */
	cs_dir_abort(d);
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "a/b", &fa), CS_EINVAL);
	assert_int_equal(cs_dir_finish(d, &root2, NULL), CS_EINVAL);
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "same", &fa), 0);
	assert_int_equal(cs_dir_add(d, "same", &fb), 0);
	assert_int_equal(cs_dir_finish(d, &root2, NULL), CS_EINVAL);
	cs_cid cbor;
	assert_int_equal(cs_block_put(s, "\xa0", 1, CS_CODEC_DAG_CBOR, CS_HASH_SHA2_256, &cbor), 0);
	assert_int_equal(cs_dir_begin(s, NULL, &d), 0);
	assert_int_equal(cs_dir_add(d, "cbor", &cbor), CS_EINVAL);
	cs_dir_abort(d);
	cs_dir_abort(NULL);
	cs_add_options ao;
	cs_add_options_init(&ao);
	ao.cid_version = 3;
	assert_int_equal(cs_dir_begin(s, &ao, &d), CS_EINVAL);

	/* A callback's nonzero return stops the add and comes back. */
	struct seen stop = {.stop_at = 2};
	cb = (cs_add_callbacks){.entry = seen_entry, .ctx = &stop};
	assert_int_equal(cs_add_path(s, NULL, tree, CS_ADD_RECURSIVE, &cb, &root2, NULL), 7);
	assert_int_equal(stop.n, 2);

	/* Refusals that leave the store as it was: each checked by the sequence number. */
	assert_int_equal(cs_store_stat(s, &st0), 0);
	snprintf(path, sizeof(path), "%s/nope", tmp);
	assert_int_equal(cs_add_path(s, NULL, path, 0, NULL, &root2, NULL), -ENOENT);
	assert_errmsg_has(path);
	assert_int_equal(cs_add_path(s, NULL, tree, 0, NULL, &root2, NULL), CS_EINVAL);
	assert_errmsg_has("is a directory");
	assert_int_equal(cs_add_path(s, NULL, tree, 0x10, NULL, &root2, NULL), CS_EINVAL);
	/* A FIFO, at the top and deep in the tree (after files that would otherwise be
	 * added first). */
	snprintf(path, sizeof(path), "%s/sub/zz-fifo", tree);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(cs_add_path(s, NULL, path, 0, NULL, &root2, NULL), CS_EINVAL);
	assert_errmsg_has("FIFO");
	assert_int_equal(cs_add_path(s, NULL, tree, CS_ADD_RECURSIVE, NULL, &root2, NULL),
	                 CS_EINVAL);
	assert_errmsg_has("zz-fifo");
	unlink(path);
	/* Names with a newline, a tab, a C1 control, or bytes that are not UTF-8. */
	static const char *const badnames[] = {"new\nline",  "tab\there", "bad\xff",
	                                       "c1\xc2\x9b", "\xc0\xaf",  "\xed\xa0\x80"};
	static const char *const why[] = {"newline", "tab", "UTF-8", "U+009B", "UTF-8", "UTF-8"};
	for (size_t i = 0; i < sizeof(badnames) / sizeof(badnames[0]); i++) {
		snprintf(path, sizeof(path), "%s/sub", tree);
		put_file(path, badnames[i], 3, 1);
		assert_int_equal(cs_add_path(s, NULL, tree, CS_ADD_RECURSIVE, NULL, &root2, NULL),
		                 CS_EINVAL);
		assert_errmsg_has(why[i]);
		assert_null(strchr(cs_errmsg(), '\n'));
		snprintf(path, sizeof(path), "%s/sub/%s", tree, badnames[i]);
		assert_int_equal(unlink(path), 0);
	}
	assert_int_equal(cs_store_stat(s, &st1), 0);
	assert_int_equal(st1.next_seq, st0.next_seq);
	/* Too deep: CS_ADD_DEPTH_MAX directories nest (the top counts), one more does not. */
	snprintf(path, sizeof(path), "%s/deep", tmp);
	mkdir_or_die(path);
	size_t plen = strlen(path);
	for (int i = 1; i < CS_ADD_DEPTH_MAX; i++) {
		memcpy(path + plen, "/d", 3);
		plen += 2;
		mkdir_or_die(path);
	}
	snprintf(path, sizeof(path), "%s/deep", tmp);
	assert_int_equal(cs_add_path(s, NULL, path, CS_ADD_RECURSIVE, NULL, &root2, NULL), 0);
	assert_int_equal(cs_store_stat(s, &st0), 0); /* that one wrote */
	char deepest[8192];
	snprintf(deepest, sizeof(deepest), "%s", path);
	for (int i = 1; i < CS_ADD_DEPTH_MAX; i++)
		strcat(deepest, "/d");
	strcat(deepest, "/d");
	mkdir_or_die(deepest);
	assert_int_equal(cs_add_path(s, NULL, path, CS_ADD_RECURSIVE, NULL, &root2, NULL),
	                 CS_ELIMIT);
	assert_errmsg_has("128");
	rmdir(deepest);
	/* An unreadable file (root reads everything: the CLI test covers it as nobody). */
	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "%s/sub/c", tree);
		chmod(path, 0);
		assert_int_equal(cs_add_path(s, NULL, tree, CS_ADD_RECURSIVE, NULL, &root2, NULL),
		                 -EACCES);
		chmod(path, 0644);
	}
	assert_int_equal(cs_store_stat(s, &st1), 0);
	assert_int_equal(st1.next_seq, st0.next_seq);

	/* A file whose leaf is gone: cs_file_check names it, before any byte is copied. */
	cs_add *a;
	uint8_t *data = malloc(5000);
	fill(data, 5000, 77);
	cs_add_options_init(&ao);
	ao.chunk_size = 1000;
	assert_int_equal(cs_add_begin(s, &ao, &a), 0);
	assert_int_equal(cs_add_write(a, data, 5000), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	cs_cid leaf;
	assert_int_equal(cs_cid_compute(data + 3000, 1000, CS_CODEC_RAW, CS_HASH_SHA2_256, &leaf),
	                 0);
	assert_int_equal(cs_block_delete(s, &leaf), 0);
	char ltext[CS_CID_TEXT_MAX];
	snprintf(ltext, sizeof(ltext), "%s", cid_text(&leaf));
	assert_int_equal(cs_file_check(s, &root, 0, 5000), CS_ENOTFOUND);
	assert_errmsg_has(ltext);
	assert_int_equal(cs_file_check(s, &root, 0, 3000), 0);
	assert_int_equal(cs_file_check(s, &root, 4000, UINT64_MAX), 0);
	free(data);

	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(tmp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_gear_table),     cmocka_unit_test(test_known_blocks),
	    cmocka_unit_test(test_node_roundtrip), cmocka_unit_test(test_node_reject),
	    cmocka_unit_test(test_shape),          cmocka_unit_test(test_streaming_equivalence),
	    cmocka_unit_test(test_range_reads),    cmocka_unit_test(test_touched_1gib),
	    cmocka_unit_test(test_cdc_shared),     cmocka_unit_test(test_bad_input),
	    cmocka_unit_test(test_store_api),      cmocka_unit_test(test_cat_runs),
	    cmocka_unit_test(test_compat),         cmocka_unit_test(test_dir_nodes),
	    cmocka_unit_test(test_check_reads),    cmocka_unit_test(test_add_path),
	    cmocka_unit_test(test_dir_compat),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
