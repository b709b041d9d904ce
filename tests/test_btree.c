/*
 * test_btree.c - proves the in-memory B+tree (index/btree.c) against an obviously-correct model.
 *
 * The model is a sorted pool of distinct keys with a "present" flag and a value per key, so
 * the model's key order is the pool's index order. Seeded random sequences of puts, replaces,
 * deletes and lookups (over a million) run on both; at intervals idx_check() must pass, and a
 * full walk, idx_next() stepping and idx_next() from absent keys must match the model. Other
 * tests cover the empty and one-entry trees, ascending and descending insertion and deletion,
 * the memory used per entry, -ENOMEM leaving the tree unchanged, and idx_check() catching each
 * invariant a test hook breaks, and a bulk load (idx_load) from sorted entries, walked back in
 * pieces with idx_next_n(), refusing keys out of order, also in two parts on two threads
 * (idx_load_part). Shrinking: idx_trim() gives free
 * nodes' memory back (idx_bytes() falls by what it says, the resident set with it), and a
 * repack walk (idx_repack_step) after deleting half or 90%, checked after every step, with
 * puts, deletes and failing slab allocations between steps, brings memory to <= 64 bytes per
 * entry at 1M entries with the contents unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "btree.h"
#include "cidstore.h"

/* splitmix64: a small seeded generator, so every run sees the same sequence. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_bytes(uint8_t *p, size_t n)
{
	while (n > 0) {
		uint64_t r = rng();
		size_t k = n < 8 ? n : 8;

		memcpy(p, &r, k);
		p += k;
		n -= k;
	}
}

/* A key as the store makes them: a two-byte sha2-256 multihash prefix, then the digest. */
static void random_key(uint8_t key[IDX_KEY])
{
	key[0] = 0x12;
	key[1] = 0x20;
	rng_bytes(key + 2, IDX_KEY - 2);
}

/* Keys whose order is i's order: a big-endian counter at the end. */
static void seq_key(uint8_t key[IDX_KEY], uint64_t i)
{
	memset(key, 0, IDX_KEY);
	key[0] = 0x12;
	key[1] = 0x20;
	for (int b = 0; b < 8; b++)
		key[IDX_KEY - 1 - b] = (uint8_t)(i >> (8 * b));
}

static struct idx_val make_val(uint64_t r)
{
	struct idx_val v = {(uint32_t)r, (uint32_t)(r >> 32), (uint32_t)(r * 31),
			    (uint32_t)(r >> 7)};

	return v;
}

static int val_eq(const struct idx_val *a, const struct idx_val *b)
{
	return a->seg == b->seg && a->off == b->off && a->len == b->len && a->codec == b->codec;
}

static struct idx *new_tree(void)
{
	struct idx *t = NULL;

	assert_int_equal(idx_create(&t), 0);
	assert_non_null(t);
	return t;
}

static void assert_check(const struct idx *t)
{
	int rc = idx_check(t);

	if (rc)
		fail_msg("idx_check: %s", cs_errmsg());
}

/* ---- The model ---- */

struct model {
	size_t n;                 /* keys in the pool */
	uint8_t (*key)[IDX_KEY]; /* sorted, distinct */
	struct idx_val *val;
	uint8_t *present;
	size_t count;
};

static int key_cmp(const void *a, const void *b)
{
	return memcmp(a, b, IDX_KEY);
}

/* A pool of n distinct random keys. A quarter share a long prefix with another key (they
 * differ only in the last byte or two), so comparisons reach deep into the key. */
static void model_init(struct model *m, size_t n)
{
	size_t k = 0;

	m->key = malloc(n * IDX_KEY);
	assert_non_null(m->key);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && rng() % 4 == 0) {
			memcpy(m->key[i], m->key[rng() % i], IDX_KEY);
			m->key[i][IDX_KEY - 1] ^= (uint8_t)(1 + rng() % 255);
			if (rng() % 2)
				m->key[i][IDX_KEY - 2] ^= (uint8_t)rng();
		} else {
			random_key(m->key[i]);
		}
	}
	qsort(m->key, n, IDX_KEY, key_cmp);
	for (size_t i = 0; i < n; i++)
		if (k == 0 || memcmp(m->key[k - 1], m->key[i], IDX_KEY) != 0)
			memcpy(m->key[k++], m->key[i], IDX_KEY);
	m->n = k;
	m->val = calloc(k, sizeof(*m->val));
	m->present = calloc(k, 1);
	m->count = 0;
	assert_non_null(m->val);
	assert_non_null(m->present);
}

static void model_free(struct model *m)
{
	free(m->key);
	free(m->val);
	free(m->present);
}

/* The first present pool index at or after i, or m->n. */
static size_t model_from(const struct model *m, size_t i)
{
	while (i < m->n && !m->present[i])
		i++;
	return i;
}

struct walk_ctx {
	const struct model *m;
	size_t at; /* pool index of the next expected entry */
	size_t seen;
};

static int walk_cmp(void *ctx, const uint8_t *key, const struct idx_val *val)
{
	struct walk_ctx *w = ctx;
	size_t i = model_from(w->m, w->at);

	assert_true(i < w->m->n);
	assert_memory_equal(key, w->m->key[i], IDX_KEY);
	assert_true(val_eq(val, &w->m->val[i]));
	w->at = i + 1;
	w->seen++;
	return 0;
}

static int walk_stop(void *ctx, const uint8_t *key, const struct idx_val *val)
{
	size_t *left = ctx;

	return --*left == 0 ? 42 : 0;
}

/* The tree and the model agree on everything a reader can ask. */
static void compare(const struct idx *t, const struct model *m)
{
	struct walk_ctx w = {m, 0, 0};
	uint8_t key[IDX_KEY];
	struct idx_val v;
	size_t i, steps = 0;
	int rc;

	assert_check(t);
	assert_int_equal(idx_count(t), m->count);

	assert_int_equal(idx_walk(t, walk_cmp, &w), 0);
	assert_int_equal(w.seen, m->count);
	assert_int_equal(model_from(m, w.at), m->n);

	/* Stepping with idx_next(), feeding each key back as `after` in the same buffer. */
	i = model_from(m, 0);
	for (rc = idx_next(t, NULL, key, &v); rc == 0; rc = idx_next(t, key, key, &v)) {
		assert_true(i < m->n);
		assert_memory_equal(key, m->key[i], IDX_KEY);
		assert_true(val_eq(&v, &m->val[i]));
		i = model_from(m, i + 1);
		steps++;
	}
	assert_int_equal(rc, CS_ENOTFOUND);
	assert_int_equal(i, m->n);
	assert_int_equal(steps, m->count);

	/* idx_next() from any pool key, present or not, lands on the next present one. */
	for (int k = 0; k < 2000; k++) {
		size_t a = (size_t)(rng() % m->n);
		size_t want = model_from(m, a + 1);

		rc = idx_next(t, m->key[a], key, &v);
		if (want == m->n) {
			assert_int_equal(rc, CS_ENOTFOUND);
		} else {
			assert_int_equal(rc, 0);
			assert_memory_equal(key, m->key[want], IDX_KEY);
		}
	}

	/* idx_next_n() in pieces of every size from 1 to more than a leaf holds, from the start
	 * and from any pool key, gives the model's next entries in order. */
	for (int k = 0; k < 200; k++) {
		uint8_t keys[300][IDX_KEY];
		struct idx_val vals[300];
		int max = 1 + (int)(rng() % 300);
		size_t a = (size_t)(rng() % m->n);
		int n = idx_next_n(t, k == 0 ? NULL : m->key[a], keys, vals, max);

		i = model_from(m, k == 0 ? 0 : a + 1);
		for (int j = 0; j < n; j++) {
			assert_true(i < m->n);
			assert_memory_equal(keys[j], m->key[i], IDX_KEY);
			assert_true(val_eq(&vals[j], &m->val[i]));
			i = model_from(m, i + 1);
		}
		/* Fewer than max only at the end. */
		assert_true(n == max || i == m->n);
	}
}

/* ---- Tests ---- */

static void test_empty(void **state)
{
	struct idx *t = new_tree();
	uint8_t key[IDX_KEY], out[IDX_KEY];
	struct idx_val v;
	size_t n = 1;

	random_key(key);
	assert_int_equal(idx_count(t), 0);
	assert_int_equal(idx_height(t), 1);
	assert_true(idx_bytes(t) >= 4096);
	assert_int_equal(idx_get(t, key, &v), CS_ENOTFOUND);
	assert_int_equal(idx_del(t, key, &v), CS_ENOTFOUND);
	assert_int_equal(idx_del(t, key, NULL), CS_ENOTFOUND);
	assert_int_equal(idx_next(t, NULL, out, &v), CS_ENOTFOUND);
	assert_int_equal(idx_next(t, key, out, &v), CS_ENOTFOUND);
	assert_int_equal(idx_walk(t, walk_stop, &n), 0);
	assert_int_equal(n, 1);
	assert_check(t);
	idx_destroy(t);
	idx_destroy(NULL);
}

static void test_single(void **state)
{
	struct idx *t = new_tree();
	uint8_t key[IDX_KEY], lower[IDX_KEY], higher[IDX_KEY], out[IDX_KEY];
	struct idx_val a = {1, 2, 3, 4}, b = {5, 6, 7, 8}, v, old = {0};

	seq_key(key, 1000);
	seq_key(lower, 999);
	seq_key(higher, 1001);
	assert_int_equal(idx_put(t, key, &a, &old), 0);
	assert_int_equal(idx_count(t), 1);
	assert_int_equal(idx_get(t, key, &v), 0);
	assert_true(val_eq(&v, &a));
	assert_int_equal(idx_get(t, lower, &v), CS_ENOTFOUND);

	/* Replacing returns 1 and the old value and keeps the count. */
	assert_int_equal(idx_put(t, key, &b, &old), 1);
	assert_true(val_eq(&old, &a));
	assert_int_equal(idx_put(t, key, &b, NULL), 1);
	assert_int_equal(idx_count(t), 1);
	assert_int_equal(idx_get(t, key, &v), 0);
	assert_true(val_eq(&v, &b));

	/* idx_next() is strictly greater. */
	assert_int_equal(idx_next(t, NULL, out, &v), 0);
	assert_memory_equal(out, key, IDX_KEY);
	assert_int_equal(idx_next(t, lower, out, &v), 0);
	assert_memory_equal(out, key, IDX_KEY);
	assert_true(val_eq(&v, &b));
	assert_int_equal(idx_next(t, key, out, &v), CS_ENOTFOUND);
	assert_int_equal(idx_next(t, higher, out, &v), CS_ENOTFOUND);
	assert_check(t);

	assert_int_equal(idx_del(t, lower, &old), CS_ENOTFOUND);
	assert_int_equal(idx_del(t, key, &old), 0);
	assert_true(val_eq(&old, &b));
	assert_int_equal(idx_del(t, key, &old), CS_ENOTFOUND);
	assert_int_equal(idx_get(t, key, &v), CS_ENOTFOUND);
	assert_int_equal(idx_count(t), 0);
	assert_check(t);
	idx_destroy(t);
}

/* A walk stops at the first nonzero return and passes it on. */
static void test_walk_stops(void **state)
{
	struct idx *t = new_tree();
	uint8_t key[IDX_KEY];
	struct idx_val v = {0};
	size_t left = 500;

	for (uint64_t i = 0; i < 1000; i++) {
		seq_key(key, i);
		assert_int_equal(idx_put(t, key, &v, NULL), 0);
	}
	assert_int_equal(idx_walk(t, walk_stop, &left), 42);
	assert_int_equal(left, 0);
	idx_destroy(t);
}

/* Over a million random operations against the model; the tree grows and shrinks in phases so
 * that splits, redistribution, borrowing, merging and height changes all happen. */
static void test_random_model(void **state)
{
	struct model m;
	struct idx *t = new_tree();
	const size_t ops = 1200000;
	int max_height = 1;

	rng_state = 0xb7ee5eed;
	model_init(&m, 120000);
	for (size_t op = 1; op <= ops; op++) {
		/* Phases of 150,000 operations alternate between growing and shrinking. */
		int grow = (op / 150000) % 2 == 0;
		unsigned dice = (unsigned)(rng() % 100);
		size_t i = (size_t)(rng() % m.n);
		struct idx_val v, old;
		int rc;

		if (dice < 25) {
			rc = idx_get(t, m.key[i], &v);
			if (m.present[i]) {
				assert_int_equal(rc, 0);
				assert_true(val_eq(&v, &m.val[i]));
			} else {
				assert_int_equal(rc, CS_ENOTFOUND);
			}
		} else if (dice < (grow ? 80u : 45u)) {
			v = make_val(rng());
			rc = idx_put(t, m.key[i], &v, &old);
			if (m.present[i]) {
				assert_int_equal(rc, 1);
				assert_true(val_eq(&old, &m.val[i]));
			} else {
				assert_int_equal(rc, 0);
				m.present[i] = 1;
				m.count++;
			}
			m.val[i] = v;
		} else {
			rc = idx_del(t, m.key[i], &old);
			if (m.present[i]) {
				assert_int_equal(rc, 0);
				assert_true(val_eq(&old, &m.val[i]));
				m.present[i] = 0;
				m.count--;
			} else {
				assert_int_equal(rc, CS_ENOTFOUND);
			}
		}
		if (idx_height(t) > max_height)
			max_height = idx_height(t);
		if (op % 50000 == 0)
			compare(t, &m);
	}
	assert_true(max_height >= 3);
	assert_true(max_height <= CS_BTREE_HEIGHT_MAX);

	/* Delete everything in random order; the tree collapses back to one empty leaf. */
	for (size_t k = m.n; k > 1; k--) {
		size_t j = (size_t)(rng() % k);
		uint8_t tmp[IDX_KEY];
		uint8_t p;

		memcpy(tmp, m.key[j], IDX_KEY);
		memcpy(m.key[j], m.key[k - 1], IDX_KEY);
		memcpy(m.key[k - 1], tmp, IDX_KEY);
		p = m.present[j];
		m.present[j] = m.present[k - 1];
		m.present[k - 1] = p;
	}
	for (size_t i = 0; i < m.n; i++) {
		struct idx_val old;

		assert_int_equal(idx_del(t, m.key[i], &old), m.present[i] ? 0 : CS_ENOTFOUND);
		if (i % 20000 == 0)
			assert_check(t);
	}
	assert_int_equal(idx_count(t), 0);
	assert_int_equal(idx_height(t), 1);
	assert_check(t);
	print_message("random model: height peaked at %d\n", max_height);
	model_free(&m);
	idx_destroy(t);
}

/* Keys inserted in order (ascending or descending), looked up, then deleted in order. */
static void run_ordered(int descending, int delete_descending)
{
	struct idx *t = new_tree();
	const uint64_t n = 200000;
	uint8_t key[IDX_KEY], out[IDX_KEY];
	struct idx_val v;

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = descending ? n - 1 - k : k;

		seq_key(key, i);
		assert_int_equal(idx_put(t, key, &(struct idx_val){(uint32_t)i, 0, 0, 0}, NULL), 0);
		if (k % 25000 == 0)
			assert_check(t);
	}
	assert_check(t);
	assert_int_equal(idx_count(t), n);
	print_message("%s inserts: %.1f bytes/entry, height %d\n",
		      descending ? "descending" : "ascending", (double)idx_bytes(t) / (double)n,
		      idx_height(t));
	/* Ordered insertion fills leaves nearly to the brim: 4096 / 81 = 50.6 bytes. */
	assert_true(idx_bytes(t) / n < 56);

	for (uint64_t i = 0; i < n; i += 7) {
		seq_key(key, i);
		assert_int_equal(idx_get(t, key, &v), 0);
		assert_int_equal(v.seg, (uint32_t)i);
	}
	seq_key(key, n);
	assert_int_equal(idx_get(t, key, &v), CS_ENOTFOUND);
	assert_int_equal(idx_next(t, key, out, &v), CS_ENOTFOUND);
	seq_key(key, 12345);
	assert_int_equal(idx_next(t, key, out, &v), 0);
	assert_int_equal(v.seg, 12346);

	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = delete_descending ? n - 1 - k : k;

		seq_key(key, i);
		assert_int_equal(idx_del(t, key, &v), 0);
		assert_int_equal(v.seg, (uint32_t)i);
		if (k % 25000 == 0)
			assert_check(t);
	}
	assert_int_equal(idx_count(t), 0);
	assert_int_equal(idx_height(t), 1);
	assert_check(t);
	idx_destroy(t);
}

static void test_ascending(void **state)
{
	run_ordered(0, 0);
}

static void test_descending(void **state)
{
	run_ordered(1, 1);
}

static void test_ascending_delete_descending(void **state)
{
	run_ordered(0, 1);
}

/* Memory per entry for a million random keys and a million ascending ones. The store aims at
 * <= 64 bytes of index per block; the bound asserted here is only a sanity check. */
static void test_bytes_per_entry(void **state)
{
	const size_t n = 1000000;
	struct idx *t = new_tree();
	uint8_t key[IDX_KEY];
	struct idx_val v = {0};
	double random_bpe, seq_bpe;

	rng_state = 42;
	for (size_t i = 0; i < n; i++) {
		random_key(key);
		assert_true(idx_put(t, key, &v, NULL) >= 0);
	}
	assert_int_equal(idx_count(t), n); /* 2^256 keys: no collisions expected */
	assert_check(t);
	random_bpe = (double)idx_bytes(t) / (double)n;
	print_message("1M random keys: %.1f bytes/entry, height %d\n", random_bpe, idx_height(t));
	idx_destroy(t);

	t = new_tree();
	for (size_t i = 0; i < n; i++) {
		seq_key(key, i);
		assert_int_equal(idx_put(t, key, &v, NULL), 0);
	}
	assert_check(t);
	seq_bpe = (double)idx_bytes(t) / (double)n;
	print_message("1M ascending keys: %.1f bytes/entry, height %d\n", seq_bpe,
		      idx_height(t));
	idx_destroy(t);

	assert_true(random_bpe < 128);
	assert_true(seq_bpe < 128);
}

/* ---- Shrinking: trim and repack ---- */

/* idx_load's entries from a model, every key present: for the repack tests. */
struct load_model {
	struct model *m;
};

static int load_from_model(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
                           struct idx_val *vals)
{
	struct load_model *lm = ctx;

	for (unsigned k = 0; k < cnt; k++, i++) {
		memcpy(keys[k], lm->m->key[i], IDX_KEY);
		lm->m->val[i] = make_val(i * 0x9e37);
		vals[k] = lm->m->val[i];
	}
	return 0;
}

/* Fills t and m with every key of a fresh pool of n keys, in random order. */
static void fill_random(struct idx *t, struct model *m, size_t n)
{
	model_init(m, n);
	for (size_t k = 0; k < m->n; k++) {
		size_t j = (size_t)(rng() % m->n);
		struct idx_val v = make_val(rng());

		if (m->present[j])
			continue;
		assert_int_equal(idx_put(t, m->key[j], &v, NULL), 0);
		m->present[j] = 1;
		m->val[j] = v;
		m->count++;
	}
}

/* Deletes each present key with probability pct / 100. */
static void delete_random(struct idx *t, struct model *m, unsigned pct)
{
	for (size_t j = 0; j < m->n; j++) {
		if (!m->present[j] || rng() % 100 >= pct)
			continue;
		assert_int_equal(idx_del(t, m->key[j], NULL), 0);
		m->present[j] = 0;
		m->count--;
	}
}

/* Puts every absent key of the pool back, with the next slab allocation set to fail. */
static size_t refill_failing(struct idx *t, struct model *m, size_t bytes_untrimmed)
{
	size_t refused = 0;

	idx_test_fail_slab(t, 1);
	for (size_t j = 0; j < m->n; j++) {
		struct idx_val v = make_val(rng());
		int rc;

		if (m->present[j])
			continue;
		rc = idx_put(t, m->key[j], &v, NULL);
		if (rc == -ENOMEM) {
			/* Only once the released nodes are nearly all taken back (I8 reserves
			 * at most height + 1). */
			assert_true(idx_bytes(t) + (size_t)(idx_height(t) + 1) * 4096 >=
				    bytes_untrimmed);
			refused++;
			idx_test_fail_slab(t, 1);
			continue;
		}
		assert_int_equal(rc, 0);
		m->present[j] = 1;
		m->val[j] = v;
		m->count++;
	}
	idx_test_fail_slab(t, 0);
	return refused;
}

/* idx_trim() gives the free nodes' memory back: idx_bytes() falls by what it returns, the
 * tree is unchanged, and the released nodes serve later puts without a slab allocation. */
static void test_trim(void **state)
{
	struct model m;
	struct idx *t = new_tree();
	size_t full, before, given, refused;

	rng_state = 0x7219;
	fill_random(t, &m, 200000);
	full = idx_bytes(t);
	delete_random(t, &m, 90);
	before = idx_bytes(t);
	assert_int_equal(before, full); /* deletes alone give nothing back */
	given = idx_trim(t);
	print_message("trim after deleting 90%%: %.1f -> %.1f bytes/entry, %zu bytes given back\n",
		      (double)before / (double)m.count, (double)idx_bytes(t) / (double)m.count,
		      given);
	assert_true(given > before / 2);
	assert_int_equal(idx_bytes(t), before - given);
	compare(t, &m);
	assert_int_equal(idx_trim(t), 0); /* nothing left beyond the warm few */
	refused = refill_failing(t, &m, before);
	compare(t, &m);
	print_message("refill after trim: %zu puts refused\n", refused);
	model_free(&m);
	idx_destroy(t);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The longest step of the last repack_all(), in seconds. For information: a test asserts
 * memory, not time. */
static double repack_step_max;

/* Runs a whole repack walk; returns the steps it took. With check, idx_check() after each. */
static size_t repack_all(struct idx *t, int check)
{
	uint8_t cur[IDX_KEY], prev[IDX_KEY];
	size_t steps = 0;
	double t0 = now_s();
	int more;

	repack_step_max = 0;
	for (more = idx_repack_step(t, NULL, cur);; more = idx_repack_step(t, cur, cur)) {
		double t1 = now_s();

		if (t1 - t0 > repack_step_max)
			repack_step_max = t1 - t0;
		steps++;
		if (check)
			assert_check(t);
		if (!more)
			break;
		if (steps > 1) /* the cursor moves on, or stays once only memory is left */
			assert_true(memcmp(prev, cur, IDX_KEY) <= 0);
		memcpy(prev, cur, IDX_KEY);
		assert_true(steps < 1000000);
		t0 = now_s();
	}
	return steps;
}

/* Resident memory of this process, from /proc/self/statm. */
static size_t rss_bytes(void)
{
	unsigned long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return (size_t)res * 4096;
}

/* Deletes of half and of 90% of a tree, then a repack walk checked after every step: the
 * contents stay the model's, and memory per entry comes down to the target (64 bytes) from
 * where the deletes left it (near 117 for half, several hundred for 90%). A repeat walk
 * finds nothing to do. */
static void test_repack_after_deletes(void **state)
{
	static const unsigned pcts[] = {50, 90};

	for (size_t pi = 0; pi < 2; pi++) {
		struct model m;
		struct idx *t = new_tree();
		double before, after;
		size_t steps, bytes;

		rng_state = 0x4e9ac + pi;
		fill_random(t, &m, 200000);
		delete_random(t, &m, pcts[pi]);
		before = (double)idx_bytes(t) / (double)m.count;
		assert_true(idx_repack_wanted(t));
		steps = repack_all(t, 1);
		after = (double)idx_bytes(t) / (double)m.count;
		print_message("repack after deleting %u%% of 200k: %.1f -> %.1f bytes/entry, "
			      "%zu steps, height %d\n", pcts[pi], before, after, steps,
			      idx_height(t));
		assert_true(after <= 64);
		assert_false(idx_repack_wanted(t));
		compare(t, &m);
		/* A second walk finds little: only where the first merged a group into its
		 * neighbour are two evened-out pairs of leaves left side by side. */
		bytes = idx_bytes(t);
		repack_all(t, 1);
		assert_true(idx_bytes(t) <= bytes && bytes - idx_bytes(t) < bytes / 100);
		/* The packed tree takes changes like any other. */
		refill_failing(t, &m, 0);
		compare(t, &m);
		model_free(&m);
		idx_destroy(t);
	}
}

/* The target at scale: a million entries, grown by random puts or bulk-loaded (the huge-page
 * slab), half deleted, then repacked: at most 64 bytes per entry, and the process's resident
 * memory falls by what idx_bytes() says it gave back (outside AddressSanitizer, whose shadow
 * memory moves too). */
static void test_repack_1m(void **state)
{
	for (int loaded = 0; loaded < 2; loaded++) {
		struct model m;
		struct idx *t = new_tree();
		size_t before, after, rss0, rss1, steps;

		rng_state = 0x1a1a + (uint64_t)loaded;
		if (loaded) {
			model_init(&m, 1000000);
			struct load_model lm = {&m};
			assert_int_equal(idx_load(t, m.n, load_from_model, &lm), 0);
			memset(m.present, 1, m.n);
			m.count = m.n;
		} else {
			fill_random(t, &m, 1000000);
		}
		delete_random(t, &m, 50);
		before = idx_bytes(t);
		rss0 = rss_bytes();
		steps = repack_all(t, 0);
		rss1 = rss_bytes();
		after = idx_bytes(t);
		print_message("1M %s, half deleted: %.1f -> %.1f bytes/entry in %zu steps (the "
			      "longest %.0f us); RSS fell %.1f MB, idx_bytes %.1f MB\n",
			      loaded ? "loaded" : "put", (double)before / (double)m.count,
			      (double)after / (double)m.count, steps, repack_step_max * 1e6,
			      ((double)rss0 - (double)rss1) / 1e6,
			      ((double)before - (double)after) / 1e6);
		assert_true((double)after / (double)m.count <= 64);
#ifndef __SANITIZE_ADDRESS__
		assert_true(rss0 > rss1 && rss0 - rss1 >= (before - after) / 10 * 9);
#endif
		compare(t, &m);
		model_free(&m);
		idx_destroy(t);
	}
}

/* A walk whose steps let puts and deletes in between, as the store's lock drops do: the
 * cursor is a key, so the walk goes on over a changed tree, each step leaves it whole, and the
 * contents are the model's. Some slab allocations fail meanwhile (-ENOMEM, tree unchanged);
 * the repack itself allocates nothing, so it never fails. A quiet walk after packs it. */
static void test_repack_interleaved(void **state)
{
	struct model m;
	struct idx *t = new_tree();
	uint8_t cur[IDX_KEY];
	size_t steps = 0, refused = 0, changes = 0;
	int more;

	rng_state = 0x1e7e;
	fill_random(t, &m, 400000);
	delete_random(t, &m, 70);
	for (more = idx_repack_step(t, NULL, cur); more; more = idx_repack_step(t, cur, cur)) {
		/* At two steps, a burst of puts with every slab allocation failing, until one is
		 * refused: the released nodes run out first. Else a few changes of each kind. */
		int burst = steps == 5 || steps == 20;

		assert_check(t);
		steps++;
		idx_test_fail_slab(t, burst ? 1 : 0);
		for (size_t k = 0; burst ? k < m.n : k < 400; k++, changes++) {
			size_t j = burst ? k : (size_t)(rng() % m.n);
			struct idx_val v = make_val(rng());
			int rc;

			if (!burst && m.present[j] && rng() % 3 == 0) {
				assert_int_equal(idx_del(t, m.key[j], NULL), 0);
				m.present[j] = 0;
				m.count--;
				continue;
			}
			rc = idx_put(t, m.key[j], &v, NULL);
			if (rc == -ENOMEM) {
				refused++;
				break;
			}
			assert_int_equal(rc, m.present[j] ? 1 : 0);
			m.count += !m.present[j];
			m.present[j] = 1;
			m.val[j] = v;
		}
		/* And a step with a slab allocation set to fail: a repack asks for none. */
		idx_test_fail_slab(t, 1);
		assert_true(steps < 100000);
	}
	idx_test_fail_slab(t, 0);
	compare(t, &m);
	print_message("interleaved repack: %zu steps, %zu changes between them, %zu puts "
		      "refused\n", steps, changes, refused);
	assert_true(steps > 20);
	assert_int_equal(refused, 2);
	delete_random(t, &m, 60);
	idx_test_fail_slab(t, 1); /* a repack that wanted a slab would fail here */
	repack_all(t, 1);
	idx_test_fail_slab(t, 0);
	assert_true((double)idx_bytes(t) / (double)m.count <= 64);
	compare(t, &m);
	model_free(&m);
	idx_destroy(t);
}

/* Small trees: every size around one leaf, two leaves and one group, thinned by deletes, then
 * repacked; a two-leaf tree whose entries fit one leaf becomes a root leaf. */
static void test_repack_small(void **state)
{
	static const size_t sizes[] = {0, 1, 80, 81, 82, 120, 162, 163, 300, 81 * 97, 81 * 97 + 1,
				       81 * 98 * 2};

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		for (unsigned pct = 0; pct <= 90; pct += 30) {
			struct model m;
			struct idx *t = new_tree();

			rng_state = si * 1000 + pct;
			model_init(&m, sizes[si] > 0 ? sizes[si] : 1);
			for (size_t j = 0; j < m.n && sizes[si] > 0; j++) {
				struct idx_val v = make_val(rng());

				assert_int_equal(idx_put(t, m.key[j], &v, NULL), 0);
				m.present[j] = 1;
				m.val[j] = v;
				m.count++;
			}
			delete_random(t, &m, pct);
			repack_all(t, 1);
			compare(t, &m);
			if (m.count <= 81)
				assert_int_equal(idx_height(t), 1);
			model_free(&m);
			idx_destroy(t);
		}
	}
}

/* idx_load's entries for test_bulk_load: key i is seq_key(i * 2), its value names i. */
struct load_src {
	size_t bad_at;  /* entry whose key repeats the one before (SIZE_MAX: none) */
	size_t stop_at; /* entry whose callback fails (SIZE_MAX: none) */
};

static int load_entry(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
		      struct idx_val *vals)
{
	const struct load_src *src = ctx;

	assert_true(cnt >= 1 && cnt <= 81); /* a leaf's worth */
	for (unsigned k = 0; k < cnt; k++, i++) {
		if (i == src->stop_at)
			return -EIO;
		seq_key(keys[k], (i == src->bad_at ? i - 1 : i) * 2);
		vals[k] = (struct idx_val){(uint32_t)i, (uint32_t)(i >> 32), 7, 0x55};
	}
	return 0;
}

/* Walks t in pieces of 1000 (idx_next_n), each starting after the last key of the one before,
 * and finds the n entries load_entry() makes, in order. */
static void assert_walk_loaded(const struct idx *t, size_t n)
{
	uint8_t(*keys)[IDX_KEY] = malloc(1000 * IDX_KEY);
	struct idx_val vals[1000];
	uint8_t key[IDX_KEY], after[IDX_KEY];
	const uint8_t *from = NULL;
	size_t seen = 0;

	for (int got; (got = idx_next_n(t, from, keys, vals, 1000)) > 0;) {
		for (int k = 0; k < got; k++, seen++) {
			seq_key(key, seen * 2);
			assert_memory_equal(keys[k], key, IDX_KEY);
			assert_int_equal(vals[k].seg, (uint32_t)seen);
		}
		memcpy(after, keys[got - 1], IDX_KEY);
		from = after;
		if (got < 1000)
			break;
	}
	assert_int_equal(seen, n);
	free(keys);
}

/* A bulk load of n entries gives a tree that passes idx_check (fill, separators, leaves), holds
 * every entry, walks them in order in pieces (idx_next_n) and takes puts and deletes after.
 * Sizes around one leaf, one inner node's worth of leaves and a million. A key out of order
 * or a failing callback leaves an empty, usable tree. */
static void test_bulk_load(void **state)
{
	static const size_t sizes[] = {0, 1, 2, 80, 81, 82, 162, 163, 81 * 97, 81 * 97 + 1,
				       100000, 1000000};
	uint8_t(*keys)[IDX_KEY] = malloc(1000 * IDX_KEY);
	struct idx_val vals[1000];

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si];
		struct load_src src = {SIZE_MAX, SIZE_MAX};
		struct idx *t = new_tree();
		uint8_t key[IDX_KEY];
		struct idx_val v;

		assert_int_equal(idx_load(t, n, load_entry, &src), 0);
		assert_int_equal(idx_count(t), n);
		assert_check(t);
		for (size_t i = 0; i < n; i += 1 + n / 50) {
			seq_key(key, i * 2);
			assert_int_equal(idx_get(t, key, &v), 0);
			assert_int_equal(v.seg, (uint32_t)i);
			seq_key(key, i * 2 + 1);
			assert_int_equal(idx_get(t, key, &v), CS_ENOTFOUND);
		}
		assert_walk_loaded(t, n);
		/* The loaded tree takes changes like any other. */
		for (size_t i = 0; i < n && i < 5000; i++) {
			seq_key(key, i * 2 + 1);
			assert_int_equal(idx_put(t, key, &vals[0], NULL), 0);
			seq_key(key, i * 2);
			assert_int_equal(idx_del(t, key, NULL), 0);
		}
		assert_check(t);
		assert_int_equal(idx_load(t, 1, load_entry, &src), n > 0 ? CS_EINVAL : 0);
		idx_destroy(t);
	}

	/* Refusals leave the tree empty and usable. */
	for (int pass = 0; pass < 2; pass++) {
		struct load_src src = {pass == 0 ? 5000 : SIZE_MAX, pass == 1 ? 4321 : SIZE_MAX};
		struct idx *t = new_tree();
		uint8_t key[IDX_KEY];

		assert_int_equal(idx_load(t, 10000, load_entry, &src), pass == 0 ? CS_ECORRUPT : -EIO);
		assert_int_equal(idx_count(t), 0);
		assert_check(t);
		seq_key(key, 3);
		assert_int_equal(idx_put(t, key, &vals[0], NULL), 0);
		src = (struct load_src){SIZE_MAX, SIZE_MAX};
		assert_int_equal(idx_load(t, 1, load_entry, &src), CS_EINVAL);
		assert_int_equal(idx_del(t, key, NULL), 0);
		assert_check(t);
		idx_destroy(t);
	}
	free(keys);
}

/* One part of a load on its own thread (test_bulk_load_parts). */
struct part_arg {
	struct idx_load *ld;
	unsigned p;
	struct load_src *src;
	int rc;
};

static void *part_thread(void *arg)
{
	struct part_arg *a = arg;

	a->rc = idx_load_part(a->ld, a->p, load_entry, a->src);
	return NULL;
}

/* Loads n entries in two parts, part 1 on a second thread; returns idx_load_end()'s answer. */
static int load_in_parts(struct idx *t, size_t n, unsigned share0, struct load_src *src)
{
	struct idx_load *ld;
	pthread_t th;
	int rc = idx_load_begin(t, n, 2, share0, &ld);

	if (rc != 0 || ld == NULL)
		return rc;
	assert_int_equal(idx_load_part_first(ld, 0), 0);
	assert_true(idx_load_part_first(ld, 1) <= n);
	assert_int_equal(idx_load_part_first(ld, 2), n);
	struct part_arg a = {ld, 1, src, 0};
	assert_int_equal(pthread_create(&th, NULL, part_thread, &a), 0);
	rc = idx_load_part(ld, 0, load_entry, src);
	assert_int_equal(pthread_join(th, NULL), 0);
	return idx_load_end(ld, rc != 0 ? rc : a.rc);
}

/* A load in two parts on two threads builds the tree one part would, for sizes from one leaf
 * to a million and any split, and idx_load_end() refuses a key out of order at the seam
 * between the parts (which neither part can see) and a part's failure, leaving an empty,
 * usable tree whose memory accounting still holds (idx_check, idx_bytes). */
static void test_bulk_load_parts(void **state)
{
	static const size_t sizes[] = {1, 82, 81 * 600, 100000, 1000000};
	static const unsigned shares[] = {0, 40, 50, 100};
	uint8_t key[IDX_KEY];
	struct idx_val v;

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		for (size_t hi = 0; hi < sizeof(shares) / sizeof(shares[0]); hi++) {
			size_t n = sizes[si];
			struct load_src src = {SIZE_MAX, SIZE_MAX};
			struct idx *t = new_tree();

			assert_int_equal(load_in_parts(t, n, shares[hi], &src), 0);
			assert_int_equal(idx_count(t), n);
			assert_check(t);
			for (size_t i = 0; i < n; i += 1 + n / 100) {
				seq_key(key, i * 2);
				assert_int_equal(idx_get(t, key, &v), 0);
				assert_int_equal(v.seg, (uint32_t)i);
			}
			idx_destroy(t);
		}
	}
	/* The seam: entry first(1) repeats the key before it. Then a failing part 1, and a
	 * failing part 0, at a million entries so that the leaves have a slab of their own. */
	for (int pass = 0; pass < 3; pass++) {
		size_t n = 1000000, mid;
		struct idx *t = new_tree();
		struct idx_load *ld;

		assert_int_equal(idx_load_begin(t, n, 2, 40, &ld), 0);
		mid = idx_load_part_first(ld, 1);
		assert_int_equal(idx_load_end(ld, -EIO), -EIO); /* nothing filled: undone too */
		assert_int_equal(idx_count(t), 0);
		assert_check(t);
		struct load_src src = {pass == 0 ? mid : SIZE_MAX,
				       pass == 1 ? mid + 100 : pass == 2 ? 5 : SIZE_MAX};
		assert_int_equal(load_in_parts(t, n, 40, &src), pass == 0 ? CS_ECORRUPT : -EIO);
		assert_int_equal(idx_count(t), 0);
		assert_check(t);
		assert_true(idx_bytes(t) < (size_t)8 << 20); /* the slab's memory given back */
		seq_key(key, 3);
		assert_int_equal(idx_put(t, key, &v, NULL), 0);
		assert_check(t);
		idx_destroy(t);
	}
}

/* Leaf images of n entries, key i seq_key(i * 2) as test_bulk_load's, IDX_LEAF_CAP to a
 * leaf but the last two, evened out so that both hold IDX_LEAF_MIN or more (I4), in a fresh
 * private anonymous mapping; *nleaves set. */
static uint8_t *leaf_images(size_t n, size_t *nleaves)
{
	size_t nl = (n + IDX_LEAF_CAP - 1) / IDX_LEAF_CAP, len = nl ? nl * IDX_NODE_BYTES : 1;
	uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (nl == 0) { /* no leaves: no memory to give */
		munmap(map, len);
		*nleaves = 0;
		return NULL;
	}
	uint8_t(*keys)[IDX_KEY] = malloc(IDX_LEAF_CAP * IDX_KEY);
	struct idx_val vals[IDX_LEAF_CAP];
	struct load_src src = {SIZE_MAX, SIZE_MAX};

	assert_true(map != MAP_FAILED && keys != NULL);
	for (size_t j = 0, i = 0; j < nl; j++) {
		size_t cnt = n - i < IDX_LEAF_CAP ? n - i : IDX_LEAF_CAP;
		if (nl >= 2 && j == nl - 2) /* the last two share what is left */
			cnt = (n - i + 1) / 2;
		assert_int_equal(load_entry(&src, i, (unsigned)cnt, keys, vals), 0);
		idx_leaf_image(map + j * IDX_NODE_BYTES, (unsigned)cnt, keys, vals);
		i += cnt;
	}
	free(keys);
	*nleaves = nl;
	return map;
}

/* The caller's check for idx_adopt_part(): counts leaves and entries, and fails at leaf
 * stop (SIZE_MAX: never). */
struct adopt_src {
	size_t stop, leaves, entries;
	char msg[256]; /* the message of the part that failed (each thread has its own) */
};

static int adopt_check(void *ctx, size_t leaf, unsigned cnt, const uint8_t (*keys)[IDX_KEY],
		       const struct idx_val *vals)
{
	struct adopt_src *a = ctx;

	(void)keys;
	(void)vals;
	if (leaf == a->stop)
		return -EIO;
	__atomic_add_fetch(&a->leaves, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&a->entries, cnt, __ATOMIC_RELAXED);
	return 0;
}

struct adopt_arg {
	struct idx_load *ld;
	struct adopt_src *src;
	int rc;
};

static void *adopt_thread(void *arg)
{
	struct adopt_arg *a = arg;

	a->rc = idx_adopt_part(a->ld, 1, adopt_check, a->src);
	if (a->rc != 0)
		snprintf(a->src->msg, sizeof(a->src->msg), "%s", cs_errmsg());
	return NULL;
}

/* Adopts nleaves images at map, said to hold n entries, in two parts, part 1 on a second
 * thread. */
static int adopt_in_parts(struct idx *t, uint8_t *map, size_t nleaves, size_t n,
			  struct adopt_src *src)
{
	struct idx_load *ld;
	pthread_t th;
	int rc = idx_adopt_begin(t, map, nleaves, n, 2, 40, &ld);

	if (rc != 0 || ld == NULL)
		return rc;
	assert_int_equal(idx_load_part_leaf(ld, 0), 0);
	assert_true(idx_load_part_leaf(ld, 1) <= nleaves);
	assert_int_equal(idx_load_part_leaf(ld, 2), nleaves);
	struct adopt_arg a = {ld, src, 0};
	assert_int_equal(pthread_create(&th, NULL, adopt_thread, &a), 0);
	rc = idx_adopt_part(ld, 0, adopt_check, src);
	if (rc != 0)
		snprintf(src->msg, sizeof(src->msg), "%s", cs_errmsg());
	assert_int_equal(pthread_join(th, NULL), 0);
	return idx_load_end(ld, rc != 0 ? rc : a.rc);
}

/* A tree over adopted leaf images holds what they hold, walks it in order, and takes puts,
 * deletes and a repack after, its memory counted (idx_check's I7, idx_bytes); and every leaf
 * that breaks a rule (header, order within a leaf and across the parts' seam, fill) or that
 * the caller's check refuses fails the load with the memory unmapped and an empty, usable
 * tree. */
static void test_adopt(void **state)
{
	static const size_t sizes[] = {0, 1, 81, 82, 163, 81 * 600 + 7, 1000000};
	uint8_t key[IDX_KEY];
	uint8_t(*keys)[IDX_KEY] = malloc(1000 * IDX_KEY);
	struct idx_val v, vals[1000];

	for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
		size_t n = sizes[si], nl;
		uint8_t *map = leaf_images(n, &nl);
		struct adopt_src src = {SIZE_MAX, 0, 0, ""};
		struct idx *t = new_tree();

		assert_int_equal(adopt_in_parts(t, map, nl, n, &src), 0);
		assert_int_equal(src.leaves, nl);
		assert_int_equal(src.entries, n);
		assert_int_equal(idx_count(t), n);
		assert_check(t);
		assert_true(idx_bytes(t) >= nl * IDX_NODE_BYTES);
		assert_walk_loaded(t, n);
		/* Changes write the adopted leaves in place; deletes free some of them. */
		for (size_t i = 0; i < n; i += 2) {
			seq_key(key, i * 2 + 1);
			assert_int_equal(idx_put(t, key, &vals[0], NULL), 0);
			seq_key(key, i * 2);
			assert_int_equal(idx_del(t, key, NULL), 0);
		}
		assert_check(t);
		uint8_t cur[IDX_KEY];
		for (int more = 1, first = 1; more; first = 0)
			more = idx_repack_step(t, first ? NULL : cur, cur);
		idx_trim(t);
		assert_check(t);
		assert_int_equal(idx_count(t), n);
		for (size_t i = 0; i < n; i += 1 + n / 100) {
			seq_key(key, i * 2 + (i % 2 == 0));
			assert_int_equal(idx_get(t, key, &v), 0);
			seq_key(key, i * 2 + (i % 2 != 0));
			assert_int_equal(idx_get(t, key, &v), CS_ENOTFOUND);
		}
		idx_destroy(t);
	}

	/* Refusals, most at leaf 400 of 601: in part 1, which begins at 40% of the leaves. */
	for (int pass = 0; pass < 9; pass++) {
		size_t n = 81 * 600 + 7, nl;
		uint8_t *map = leaf_images(n, &nl), *leaf = map + 400 * IDX_NODE_BYTES;
		struct adopt_src src = {pass == 7 ? 400 : SIZE_MAX, 0, 0, ""};
		struct idx *t = new_tree();
		struct idx_load *ld;

		assert_int_equal(nl, 601);
		switch (pass) {
		case 0: leaf[2] = 2; break;                                /* the kind */
		case 1: leaf[9] = 1; break;                                /* a zero byte */
		case 2: leaf[0] = IDX_LEAF_CAP + 1; break;                 /* too many */
		case 3: leaf[0] = IDX_LEAF_MIN - 1; break;                 /* too few (I4) */
		case 6: leaf[IDX_NODE_BYTES - 1] = 1; break;               /* past the keys */
		case 4: memcpy(leaf + 16 + 16 * IDX_LEAF_CAP + 5 * IDX_KEY, /* order in a leaf */
			       leaf + 16 + 16 * IDX_LEAF_CAP + 4 * IDX_KEY, IDX_KEY);
			break;
		case 5: { /* the seam between the parts, which neither part sees */
			assert_int_equal(idx_adopt_begin(t, map, nl, n, 2, 40, &ld), 0);
			size_t j = idx_load_part_leaf(ld, 1);
			assert_int_equal(idx_load_end(ld, -EIO), -EIO); /* the memory goes */
			assert_check(t);
			map = leaf_images(n, &nl);
			leaf = map + j * IDX_NODE_BYTES;
			memcpy(leaf + 16 + 16 * IDX_LEAF_CAP, leaf - IDX_NODE_BYTES + 16 +
			       16 * IDX_LEAF_CAP + (IDX_LEAF_CAP - 1) * IDX_KEY, IDX_KEY);
			break;
		}
		}
		/* Pass 8: sound leaves, but one entry fewer than the caller said. */
		assert_int_equal(adopt_in_parts(t, map, nl, n + (pass == 8), &src),
				 pass == 7 ? -EIO : CS_ECORRUPT);
		if (pass == 8 && !strstr(cs_errmsg(), "not 48608"))
			fail_msg("pass 8: \"%s\"", cs_errmsg());
		if ((pass < 5 || pass == 6) && !strstr(src.msg, "leaf 400"))
			fail_msg("pass %d: \"%s\" does not name leaf 400", pass, src.msg);
		assert_int_equal(idx_count(t), 0);
		assert_check(t);
		assert_true(idx_bytes(t) < (size_t)1 << 20); /* the leaves' memory is gone */
		seq_key(key, 3);
		assert_int_equal(idx_put(t, key, &v, NULL), 0);
		assert_check(t);
		idx_destroy(t);
	}

	/* Before any leaf is looked at: a tree that is not empty refuses (CS_EINVAL), and one
	 * that cannot get the room for the slab fails (-ENOMEM); either way the leaves' memory is
	 * unmapped at once (mincore refuses an unmapped range) and the tree is as it was. */
	for (int pass = 0; pass < 2; pass++) {
		size_t nl;
		unsigned char vec[1];
		uint8_t *map = leaf_images(81 * 600 + 7, &nl);
		struct idx *t = new_tree();
		struct idx_load *ld;

		seq_key(key, 1);
		if (pass == 0)
			assert_int_equal(idx_put(t, key, &v, NULL), 0);
		else
			idx_test_fail_slab(t, 1);
		assert_int_equal(idx_adopt_begin(t, map, nl, 81 * 600 + 7, 2, 40, &ld),
				 pass == 0 ? CS_EINVAL : -ENOMEM);
		assert_int_equal(mincore(map, IDX_NODE_BYTES, vec), -1);
		assert_int_equal(idx_count(t), pass == 0 ? 1 : 0);
		assert_check(t);
		assert_int_equal(idx_put(t, key, &v, NULL), pass == 0 ? 1 : 0);
		assert_check(t);
		idx_destroy(t);
	}
	free(keys);
}

/* A put that needs a new slab and cannot get one returns -ENOMEM and changes nothing. */
static void test_enomem_leaves_tree_unchanged(void **state)
{
	struct model m;
	struct idx *t = new_tree();
	int failures = 0;
	size_t *order;

	rng_state = 7;
	model_init(&m, 80000);
	/* Insert the whole pool in a random order, failing the next slab allocation each time. */
	order = malloc(m.n * sizeof(*order));
	assert_non_null(order);
	for (size_t k = 0; k < m.n; k++)
		order[k] = k;
	for (size_t k = m.n; k > 1; k--) {
		size_t j = (size_t)(rng() % k), tmp = order[j];

		order[j] = order[k - 1];
		order[k - 1] = tmp;
	}
	for (size_t k = 0; k < m.n; k++) {
		size_t j = order[k];
		struct idx_val v = make_val(rng());
		size_t bytes = idx_bytes(t);
		int rc;

		idx_test_fail_slab(t, 1);
		rc = idx_put(t, m.key[j], &v, NULL);
		if (rc == -ENOMEM) {
			struct idx_val got;

			failures++;
			assert_int_equal(idx_bytes(t), bytes);
			assert_int_equal(idx_get(t, m.key[j], &got), CS_ENOTFOUND);
			if (failures <= 8)
				compare(t, &m);
			/* The countdown is spent: the same put now succeeds. */
			rc = idx_put(t, m.key[j], &v, NULL);
		}
		assert_int_equal(rc, 0);
		m.present[j] = 1;
		m.val[j] = v;
		m.count++;
	}
	idx_test_fail_slab(t, 0);
	compare(t, &m);
	print_message("%d puts refused with -ENOMEM among %zu\n", failures, m.n);
	assert_true(failures >= 10);
	free(order);
	model_free(&m);
	idx_destroy(t);
}

/* After idx_reserve() the next put cannot fail, not even when every slab allocation fails:
 * what a writer that appended to the log relies on. */
static void test_reserve_then_put(void **state)
{
	struct model m;
	struct idx *t = new_tree();
	int refused = 0;

	rng_state = 11;
	model_init(&m, 80000);
	for (size_t j = 0; j < m.n; j++) {
		struct idx_val v = make_val(rng());

		idx_test_fail_slab(t, 1);
		int rc = idx_reserve(t);
		if (rc == -ENOMEM) {
			refused++;
			rc = idx_reserve(t); /* the countdown is spent */
		}
		assert_int_equal(rc, 0);
		idx_test_fail_slab(t, 1); /* any slab the put wanted would fail */
		assert_int_equal(idx_put(t, m.key[j], &v, NULL), 0);
		m.present[j] = 1;
		m.val[j] = v;
		m.count++;
	}
	idx_test_fail_slab(t, 0);
	compare(t, &m);
	print_message("%d reservations refused with -ENOMEM among %zu\n", refused, m.n);
	assert_true(refused >= 5);
	model_free(&m);
	idx_destroy(t);
}

/* idx_check() notices each broken invariant and names it. */
static void test_check_detects_corruption(void **state)
{
	static const struct {
		int fault;
		const char *names;
	} cases[] = {
		{IDX_FAULT_ORDER, "I1"},
		{IDX_FAULT_SEPARATOR, "I2"},
		{IDX_FAULT_LEAF_PTR, "I5"},
		{IDX_FAULT_COUNT, "I6"},
	};
	uint8_t key[IDX_KEY];
	struct idx_val v = {0};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct idx *t = new_tree();

		rng_state = 99;
		for (int i = 0; i < 20000; i++) {
			random_key(key);
			assert_int_equal(idx_put(t, key, &v, NULL), 0);
		}
		assert_true(idx_height(t) >= 3);
		assert_check(t);
		assert_int_equal(idx_test_corrupt(t, cases[c].fault), 0);
		assert_int_equal(idx_check(t), CS_ECORRUPT);
		if (!strstr(cs_errmsg(), cases[c].names))
			fail_msg("fault %d: expected %s in \"%s\"", cases[c].fault, cases[c].names,
				 cs_errmsg());
		idx_destroy(t);
	}
	/* A one-leaf tree is too small for the faults that need several nodes. */
	{
		struct idx *t = new_tree();

		assert_int_equal(idx_test_corrupt(t, IDX_FAULT_SEPARATOR), CS_EINVAL);
		assert_int_equal(idx_test_corrupt(t, IDX_FAULT_ORDER), CS_EINVAL);
		idx_destroy(t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_single),
		cmocka_unit_test(test_walk_stops),
		cmocka_unit_test(test_random_model),
		cmocka_unit_test(test_ascending),
		cmocka_unit_test(test_descending),
		cmocka_unit_test(test_ascending_delete_descending),
		cmocka_unit_test(test_bytes_per_entry),
		cmocka_unit_test(test_bulk_load),
		cmocka_unit_test(test_bulk_load_parts),
		cmocka_unit_test(test_adopt),
		cmocka_unit_test(test_enomem_leaves_tree_unchanged),
		cmocka_unit_test(test_reserve_then_put),
		cmocka_unit_test(test_check_detects_corruption),
		cmocka_unit_test(test_trim),
		cmocka_unit_test(test_repack_after_deletes),
		cmocka_unit_test(test_repack_1m),
		cmocka_unit_test(test_repack_interleaved),
		cmocka_unit_test(test_repack_small),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
