/*
 * test_addpipe.c - proves that the add pipeline (engine/addpipe.c) hashes blocks on its
 * threads but puts them into the store strictly in submission order, and that adds through
 * it give the roots of the one-thread in-memory builder.
 *
 * What it shows:
 *  - order: 3000 blocks of mixed sizes (0 to 64 KiB, so threads finish out of order), some
 *    repeated, through 4 threads: the done callback sees block i as i-th with the CID
 *    cs_cid_compute gives, block i is in the store at that moment and the next unique block
 *    is not (so puts happen in order, one at a time), and every block reads back;
 *  - failure: a done callback failing at block 100 kills the pipeline (the same code from
 *    every later submit and flush), ap_free joins its threads with blocks in flight, and
 *    ap_reset makes it usable again; a log write failing under an add (fault-injecting
 *    backend) comes back from cs_add_write or cs_add_finish;
 *  - roots: cs_add_begin / write / finish with hash_threads 1, 2, 3, 7 and 16 gives the root
 *    and size the in-memory builder gives (no pipeline), in the v1 and v0 profiles, with
 *    dag-pb leaves, blake2b-256, CDC, 174-link boundaries and a three-level tree, written in
 *    random pieces; the stores of all thread counts hold the same blocks and bytes;
 *  - options: hash_threads above CS_ADD_THREADS_MAX is CS_ELIMIT for cs_add_begin and
 *    cs_add_path; 0 means the online CPUs, capped.
 *
 * It runs under TSan in CI (.ci/test, stage tsan): the pipeline's hand-overs are its point.
 * CS_TEST_SMALL=1 shrinks the files (TSan slows every copy).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addpipe.h"
#include "cs_limits.h"
#include "fault_io.h"
#include "store.h"
#include "test_util.h"
#include "unixfs.h"

static int small(void)
{
	const char *e = getenv("CS_TEST_SMALL");
	return e != NULL && strcmp(e, "1") == 0;
}

static int cid_eq(const cs_cid *a, const cs_cid *b)
{
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* ---- Order ------------------------------------------------------------------------------ */

#define NBLK   3000
#define BLKMAX (64u * 1024u)

struct order {
	cs_store *s;
	uint8_t *data[NBLK];
	size_t len[NBLK];
	cs_cid want[NBLK];
	int repeat_of[NBLK]; /* -1: unique */
	uint64_t next;       /* the block the done callback expects */
	uint64_t fail_at;    /* return -EIO at this block (0: never) */
	int calls_after_fail;
};

static int order_done(void *ctx, const cs_cid *cid, size_t len, uint64_t codec, uint64_t size)
{
	struct order *o = ctx;
	uint64_t i = size; /* the tests pass the block's index as its size */

	if (o->fail_at != 0 && o->next > o->fail_at)
		o->calls_after_fail++;
	assert_int_equal(i, o->next);
	assert_int_equal(len, o->len[i]);
	assert_int_equal(codec, CS_CODEC_RAW);
	assert_true(cid_eq(cid, &o->want[i]));
	assert_int_equal(cs_block_has(o->s, cid), 1); /* put before it is reported */
	for (uint64_t j = i + 1; j < NBLK; j++) {
		if (o->repeat_of[j] < 0) { /* the next unique block is not put yet */
			assert_int_equal(cs_block_has(o->s, &o->want[j]), 0);
			break;
		}
	}
	o->next++;
	if (o->fail_at != 0 && i == o->fail_at)
		return -EIO;
	return 0;
}

static void order_setup(struct order *o, cs_store *s)
{
	memset(o, 0, sizeof(*o));
	o->s = s;
	for (int i = 0; i < NBLK; i++) {
		o->repeat_of[i] = -1;
		if (i >= 10 && i % 7 == 0) {
			o->repeat_of[i] = i - 5;
			o->data[i] = o->data[i - 5];
			o->len[i] = o->len[i - 5];
		} else {
			/* Mostly small, every ninth large: threads finish out of order. */
			o->len[i] = i % 9 == 0 ? BLKMAX - (size_t)i : tu_len((uint64_t)i, 2000);
			if (i == 3)
				o->len[i] = 0;
			o->data[i] = malloc(o->len[i] ? o->len[i] : 1);
			assert_non_null(o->data[i]);
			tu_fill(o->data[i], o->len[i], (uint64_t)i + 77);
		}
		assert_int_equal(cs_cid_compute(o->data[i], o->len[i], CS_CODEC_RAW,
		                                CS_HASH_SHA2_256, &o->want[i]),
		                 0);
	}
}

static void order_free(struct order *o)
{
	for (int i = 0; i < NBLK; i++)
		if (o->repeat_of[i] < 0)
			free(o->data[i]);
}

static void test_order(void **state)
{
	char dir[4096];
	cs_options opts = tu_opts();
	opts.durability = CS_DURABLE_NONE;
	cs_store *s;
	struct addpipe *p;
	struct order *o = malloc(sizeof(*o));

	assert_non_null(o);
	tu_tmpdir(dir, sizeof(dir), "addpipe-order");
	assert_int_equal(cs_store_open(dir, &opts, &s), 0);
	order_setup(o, s);
	assert_int_equal(ap_new(s, CS_HASH_SHA2_256, 4, BLKMAX, order_done, o, &p), 0);
	assert_int_equal(ap_thread_count(p), 4);
	assert_int_equal(ap_submit(p, o->data[0], BLKMAX + 1, CS_CODEC_RAW, 0), CS_ELIMIT);
	for (int i = 0; i < NBLK; i++)
		assert_int_equal(ap_submit(p, o->data[i], o->len[i], CS_CODEC_RAW, (uint64_t)i), 0);
	assert_int_equal(ap_flush(p), 0);
	assert_int_equal(o->next, NBLK);
	ap_free(p);

	uint8_t *buf = malloc(BLKMAX);
	for (int i = 0; i < NBLK; i++) {
		size_t len;
		assert_int_equal(cs_block_get(s, &o->want[i], buf, BLKMAX, &len), 0);
		assert_int_equal(len, o->len[i]);
		assert_memory_equal(buf, o->data[i], len);
	}
	cs_stat st;
	assert_int_equal(cs_store_stat(s, &st), 0);
	int unique = 0;
	for (int i = 0; i < NBLK; i++)
		unique += o->repeat_of[i] < 0;
	assert_int_equal(st.blocks, unique);
	free(buf);
	order_free(o);
	free(o);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

/* ---- Failure ---------------------------------------------------------------------------- */

static void test_fail(void **state)
{
	char dir[4096];
	cs_options opts = tu_opts();
	opts.durability = CS_DURABLE_NONE;
	cs_store *s;
	struct addpipe *p;
	struct order *o = malloc(sizeof(*o));
	int rc = 0, i;

	assert_non_null(o);
	tu_tmpdir(dir, sizeof(dir), "addpipe-fail");
	assert_int_equal(cs_store_open(dir, &opts, &s), 0);
	order_setup(o, s);
	o->fail_at = 100;
	assert_int_equal(ap_new(s, CS_HASH_SHA2_256, 3, BLKMAX, order_done, o, &p), 0);
	for (i = 0; i < NBLK && rc == 0; i++)
		rc = ap_submit(p, o->data[i], o->len[i], CS_CODEC_RAW, (uint64_t)i);
	if (rc == 0)
		rc = ap_flush(p);
	assert_int_equal(rc, -EIO);
	assert_int_equal(o->next, 101); /* nothing reported after the failure */
	assert_true(i <= 100 + (int)(ADD_SLOTS_PER_THREAD * 3 + 2) + 1);
	assert_int_equal(ap_submit(p, o->data[0], o->len[0], CS_CODEC_RAW, 0), -EIO);
	assert_int_equal(ap_flush(p), -EIO);
	assert_int_equal(o->calls_after_fail, 0);

	/* Reset: the blocks in flight are dropped and the pipeline takes new ones. */
	ap_reset(p);
	o->fail_at = 0;
	o->next = 200;
	for (i = 200; i < 400; i++)
		assert_int_equal(ap_submit(p, o->data[i], o->len[i], CS_CODEC_RAW, (uint64_t)i), 0);
	assert_int_equal(ap_flush(p), 0);
	assert_int_equal(o->next, 400);

	/* Freed with blocks in flight: joins its threads, leaks nothing (ASan stage). */
	o->next = 400;
	for (i = 400; i < 450; i++)
		assert_int_equal(ap_submit(p, o->data[i], o->len[i], CS_CODEC_RAW, (uint64_t)i), 0);
	ap_free(p);
	order_free(o);
	free(o);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

/* A log write that fails under an add comes back from the add. */
static void test_store_failure(void **state)
{
	char dir[4096];
	cs_options opts = tu_opts();
	opts.durability = CS_DURABLE_NONE;
	cs_store *s;
	cs_add *a;
	cs_cid root;
	size_t len = 24u << 20, piece = 1u << 20;
	uint8_t *data = malloc(len);
	int rc = 0;

	assert_non_null(data);
	tu_fill(data, len, 5);
	tu_tmpdir(dir, sizeof(dir), "addpipe-io");
	fault_reset();
	store_io_factory = fault_factory;
	assert_int_equal(cs_store_open(dir, &opts, &s), 0);
	store_io_factory = NULL;
	fault_fail_nth(FAULT_WRITE, 1, -EIO);
	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	size_t off;
	for (off = 0; off < len && rc == 0; off += piece)
		rc = cs_add_write(a, data + off, piece);
	if (rc != 0) {
		assert_true(rc == -EIO || rc == CS_EPOISONED);
		assert_int_equal(cs_add_write(a, data, piece), rc); /* the add is dead */
		cs_add_abort(a);
	} else {
		rc = cs_add_finish(a, &root, NULL);
		assert_true(rc == -EIO || rc == CS_EPOISONED);
	}
	assert_int_equal(fault_injected(), 1);
	assert_int_not_equal(cs_store_close(s), 0);
	fault_reset();
	free(data);
	tu_rmrf(dir);
}

/* ---- Roots ------------------------------------------------------------------------------ */

static int cid_emit(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t hash,
                    cs_cid *out)
{
	(*(uint64_t *)ctx)++;
	return cs_cid_compute(data, len, codec, hash, out);
}

struct roots_case {
	const char *name;
	int version;
	int raw_leaves; /* -1: the profile's */
	uint64_t hash;
	int chunker;
	uint32_t chunk;
	size_t len, small_len;
};

static void test_roots(void **state)
{
	static const struct roots_case cases[] = {
	    {"v1 default", 1, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 262144, 5u << 20, 1u << 20},
	    {"v0 default", 0, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 262144, 5u << 20, 1u << 20},
	    {"v1 174 links + 1", 1, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 4096, 174 * 4096 + 1,
	     174 * 4096 + 1},
	    {"v1 three levels", 1, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 100, 174 * 174 * 100 + 1,
	     174 * 174 * 100 + 1},
	    {"v0 three levels", 0, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 100, 174 * 174 * 100 + 1,
	     174 * 174 * 100 + 1},
	    {"v1 dag-pb leaves", 1, 0, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 1000, 3u << 20, 1u << 20},
	    {"v1 blake2b-256", 1, -1, CS_HASH_BLAKE2B_256, CS_CHUNK_FIXED, 1000, 3u << 20,
	     1u << 20},
	    {"v1 CDC", 1, -1, CS_HASH_SHA2_256, CS_CHUNK_CDC, 65536, 12u << 20, 2u << 20},
	    {"v1 empty", 1, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 262144, 0, 0},
	    {"v0 one byte", 0, -1, CS_HASH_SHA2_256, CS_CHUNK_FIXED, 262144, 1, 1},
	};
	static const unsigned threads[] = {1, 2, 3, 7, 16};
	char dir[4096];
	cs_options opts = tu_opts();
	opts.durability = CS_DURABLE_NONE;

	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		const struct roots_case *c = &cases[k];
		size_t len = small() ? c->small_len : c->len;
		uint8_t *data = malloc(len ? len : 1);
		assert_non_null(data);
		tu_fill(data, len, k + 1);

		/* The reference: the builder with no pipeline, one write. */
		struct ufs_params p = {.cid_version = c->version,
		                       .raw_leaves =
		                           c->raw_leaves < 0 ? c->version == 1 : c->raw_leaves == 1,
		                       .hash = c->hash,
		                       .chunker = c->chunker,
		                       .chunk_size = c->chunk};
		struct ufs_builder *b;
		uint64_t emitted = 0, size;
		cs_cid want, root;
		assert_int_equal(ufs_builder_new(&p, cid_emit, &emitted, &b), 0);
		assert_int_equal(ufs_builder_write(b, data, len), 0);
		assert_int_equal(ufs_builder_finish(b, &want, &size), 0);
		ufs_builder_free(b);

		cs_stat first = {0};
		for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++) {
			cs_add_options ao;
			cs_add *a;
			cs_store *s;
			cs_add_options_init(&ao);
			ao.cid_version = c->version;
			ao.raw_leaves = c->raw_leaves;
			ao.hash = c->hash;
			ao.chunker = c->chunker;
			ao.chunk_size = c->chunk;
			ao.hash_threads = threads[t];
			tu_tmpdir(dir, sizeof(dir), "addpipe-roots");
			assert_int_equal(cs_store_open(dir, &opts, &s), 0);
			assert_int_equal(cs_add_begin(s, &ao, &a), 0);
			uint64_t x = k * 1000 + t + 1;
			for (size_t off = 0; off < len;) {
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				size_t n = 1 + (size_t)((x >> 33) % (700u * 1024u));
				n = n > len - off ? len - off : n;
				assert_int_equal(cs_add_write(a, data + off, n), 0);
				off += n;
			}
			assert_int_equal(cs_add_finish(a, &root, &size), 0);
			fprintf(stderr, "[roots] %-18s %u threads: %s\n", c->name, threads[t],
			        cid_eq(&root, &want) ? "same root" : "DIFFERENT ROOT");
			assert_true(cid_eq(&root, &want));
			assert_int_equal(size, len);
			cs_stat st;
			assert_int_equal(cs_store_stat(s, &st), 0);
			assert_true(st.blocks <= emitted); /* repeats dedup */
			if (t == 0) {
				first = st;
			} else {
				assert_int_equal(st.blocks, first.blocks);
				assert_int_equal(st.live_bytes, first.live_bytes);
				assert_int_equal(st.log_bytes, first.log_bytes);
			}
			assert_int_equal(cs_store_close(s), 0);
			tu_rmrf(dir);
		}
		free(data);
	}
}

/* ---- Options ---------------------------------------------------------------------------- */

static void test_options(void **state)
{
	char dir[4096];
	cs_options opts = tu_opts();
	cs_store *s;
	cs_add *a;
	cs_add_options ao;
	cs_cid root;
	unsigned n;

	assert_int_equal(ap_threads_of(0, &n), 0);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	assert_int_equal(n, cpus < 1 ? 1 : cpus > ADD_THREADS_MAX ? ADD_THREADS_MAX : cpus);
	assert_int_equal(ap_threads_of(5, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(ap_threads_of(CS_ADD_THREADS_MAX + 1, &n), CS_ELIMIT);

	tu_tmpdir(dir, sizeof(dir), "addpipe-opts");
	assert_int_equal(cs_store_open(dir, &opts, &s), 0);
	cs_add_options_init(&ao);
	assert_int_equal(ao.hash_threads, 0);
	ao.hash_threads = CS_ADD_THREADS_MAX + 1;
	assert_int_equal(cs_add_begin(s, &ao, &a), CS_ELIMIT);
	assert_non_null(strstr(cs_errmsg(), "hash_threads"));
	assert_int_equal(cs_add_path(s, &ao, dir, CS_ADD_RECURSIVE, NULL, &root, NULL), CS_ELIMIT);
	ao.hash_threads = CS_ADD_THREADS_MAX;
	assert_int_equal(cs_add_begin(s, &ao, &a), 0);
	assert_int_equal(cs_add_write(a, "hello\n", 6), 0);
	assert_int_equal(cs_add_finish(a, &root, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order),         cmocka_unit_test(test_fail),
	    cmocka_unit_test(test_store_failure), cmocka_unit_test(test_roots),
	    cmocka_unit_test(test_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
