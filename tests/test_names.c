/*
 * test_names.c - durable names: the table, the records, the public API, crashes.
 *
 * Proves:
 *  - the AVL name table agrees with a simple model (a flag per key) under 60k random sets
 *    and deletes, stays balanced and ordered, and walks in byte order from any point;
 *  - the name-set payload in docs/FORMAT.md decodes to its stated fields and encodes back to
 *    its bytes; payloads with inconsistent lengths or reserved bytes are refused;
 *  - cs_name_set/get/delete/list round trips, replacement, CIDv0 roots, stat's count;
 *  - names survive close and reopen (replay) in all three durability modes;
 *  - every invalid-name rule gives CS_EINVAL with a message naming the rule and the byte;
 *    an absent root gives CS_ENOTFOUND;
 *  - 100k names are set, listed in byte order, partly deleted, and replay to the same list;
 *  - threads racing on the same names leave a table that replay rebuilds exactly (log
 *    order equals table order);
 *  - kill -9 (20 rounds): every acknowledged set and delete is reflected after reopen;
 *  - a torn name record at the log's tail is dropped, the names before it kept;
 *  - a checksum-valid name record with a bad name, a bad CID or bad lengths makes open fail
 *    with CS_ECORRUPT naming segment and offset; a delete of an unset name replays as a
 *    no-op.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "endian.h"
#include "cs_limits.h"
#include "names.h"
#include "record.h"
#include "test_util.h"

static char dir[256];

static int setup(void **state)
{
	tu_tmpdir(dir, sizeof(dir), "names");
	return 0;
}

static int teardown(void **state)
{
	tu_rmrf(dir);
	return 0;
}

static cs_store *open_opts(const cs_options *o)
{
	cs_store *s = NULL;
	int rc = cs_store_open(dir, o, &s);
	if (rc != 0)
		fail_msg("open: %s: %s", cs_strerror(rc), cs_errmsg());
	return s;
}

static cs_store *open_ok(void)
{
	cs_options o = tu_opts();
	return open_opts(&o);
}

/* Puts a small raw block made from seed and returns its CID. */
static cs_cid put_root(cs_store *s, uint64_t seed)
{
	uint8_t buf[64];
	cs_cid cid;
	tu_fill(buf, sizeof(buf), seed);
	int rc = cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
	if (rc != 0)
		fail_msg("put: %s: %s", cs_strerror(rc), cs_errmsg());
	return cid;
}

static void set_ok(cs_store *s, const char *name, const cs_cid *root, uint64_t size)
{
	int rc = cs_name_set(s, name, root, size);
	if (rc != 0)
		fail_msg("set '%s': %s: %s", name, cs_strerror(rc), cs_errmsg());
}

static int cid_eq(const cs_cid *a, const cs_cid *b)
{
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

static void expect_name(cs_store *s, const char *name, const cs_cid *root, uint64_t size)
{
	cs_cid r;
	uint64_t n;
	int64_t t;
	int rc = cs_name_get(s, name, &r, &n, &t);
	if (rc != 0)
		fail_msg("get '%s': %s: %s", name, cs_strerror(rc), cs_errmsg());
	assert_true(cid_eq(&r, root));
	assert_int_equal(n, size);
	assert_true(t > 0);
}

static void expect_absent(cs_store *s, const char *name)
{
	assert_int_equal(cs_name_get(s, name, NULL, NULL, NULL), CS_ENOTFOUND);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A listing copied out of cs_name_list, for comparisons. */
struct listing {
	char (*names)[CS_NAME_MAX + 1];
	cs_name_info *info;
	size_t n, cap;
	int stop_at; /* stop the walk after this many (0: never) */
};

static int collect(void *ctx, const cs_name_info *n)
{
	struct listing *l = ctx;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->names = realloc(l->names, l->cap * sizeof(*l->names));
		l->info = realloc(l->info, l->cap * sizeof(*l->info));
		assert_non_null(l->names);
		assert_non_null(l->info);
	}
	size_t len = strlen(n->name);
	assert_true(len >= 1 && len <= CS_NAME_MAX);
	memcpy(l->names[l->n], n->name, len + 1);
	l->info[l->n] = *n;
	l->info[l->n].name = NULL;
	l->n++;
	if (l->stop_at != 0 && l->n == (size_t)l->stop_at)
		return 42;
	return 0;
}

static void list_all(cs_store *s, struct listing *l)
{
	l->n = 0;
	int rc = cs_name_list(s, collect, l);
	if (rc != 0)
		fail_msg("list: %s: %s", cs_strerror(rc), cs_errmsg());
	for (size_t i = 1; i < l->n; i++)
		if (strcmp(l->names[i - 1], l->names[i]) >= 0)
			fail_msg("list out of order at %zu: '%s' then '%s'", i, l->names[i - 1],
			         l->names[i]);
}

static void listing_free(struct listing *l)
{
	free(l->names);
	free(l->info);
	memset(l, 0, sizeof(*l));
}

static void expect_same_listing(const struct listing *a, const struct listing *b)
{
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_string_equal(a->names[i], b->names[i]);
		assert_true(cid_eq(&a->info[i].root, &b->info[i].root));
		assert_int_equal(a->info[i].size, b->info[i].size);
		assert_int_equal(a->info[i].time_ns, b->info[i].time_ns);
	}
}

/* ---- the table ------------------------------------------------------------------------ */

enum { TKEYS = 3000 };

static void tkey(char *buf, size_t cap, unsigned k)
{
	/* Varied lengths and shared prefixes, so byte order differs from numeric order and
	 * prefixes sort first: "k1", "k1/", "k10", ... */
	if (k % 3 == 0)
		snprintf(buf, cap, "k%u", k / 3);
	else if (k % 3 == 1)
		snprintf(buf, cap, "k%u/", k / 3);
	else
		snprintf(buf, cap, "k%u/\xc3\xa9t\xc3\xa9-%u", k / 3, k);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void table_random_ops(void **state)
{
	static char keys[TKEYS][32];
	static const char *sorted[TKEYS];
	static int64_t model[TKEYS]; /* -1: absent, else the size last set */
	static struct name_entry out[TKEYS];
	struct names *t;
	char why[96];
	uint64_t x = 99;

	assert_int_equal(names_create(&t), 0);
	for (unsigned k = 0; k < TKEYS; k++) {
		tkey(keys[k], sizeof(keys[k]), k);
		assert_int_equal(
		    name_check((const uint8_t *)keys[k], strlen(keys[k]), why, sizeof(why)), 0);
		model[k] = -1;
	}
	uint64_t count = 0;
	for (int op = 0; op < 60000; op++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned k = (unsigned)(x >> 20) % TKEYS;
		size_t len = strlen(keys[k]);
		/* Inserts outweigh deletes early, then deletes win: the tree grows and shrinks. */
		int del = (x % 100) < (op < 30000 ? 30u : 70u);
		if (del) {
			int rc = names_del(t, (const uint8_t *)keys[k], len);
			assert_int_equal(rc, model[k] >= 0 ? 0 : CS_ENOTFOUND);
			count -= model[k] >= 0;
			model[k] = -1;
		} else {
			struct name_val v = {.size = (uint64_t)op, .time_ns = op};
			int rc = names_set(t, (const uint8_t *)keys[k], len, &v);
			assert_int_equal(rc, model[k] >= 0 ? 1 : 0);
			count += model[k] < 0;
			model[k] = op;
		}
		assert_int_equal(names_count(t), count);
		if (op % 997 == 0)
			assert_int_equal(names_check_tree(t), 0);
	}
	assert_int_equal(names_check_tree(t), 0);

	/* Lookups agree with the model. */
	for (unsigned k = 0; k < TKEYS; k++) {
		struct name_val v;
		int rc = names_get(t, (const uint8_t *)keys[k], strlen(keys[k]), &v);
		assert_int_equal(rc, model[k] >= 0 ? 0 : CS_ENOTFOUND);
		if (rc == 0)
			assert_int_equal(v.size, (uint64_t)model[k]);
	}
	/* A whole walk in pieces of random size gives the present keys in byte order. */
	size_t n = 0;
	for (unsigned k = 0; k < TKEYS; k++)
		if (model[k] >= 0)
			sorted[n++] = keys[k];
	qsort(sorted, n, sizeof(sorted[0]), cmp_str);
	size_t got = 0;
	const uint8_t *after = NULL;
	size_t after_len = 0;
	char last[CS_NAME_MAX + 1];
	for (;;) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		int max = 1 + (int)(x % 300);
		int m = names_next(t, after, after_len, out, max);
		for (int i = 0; i < m; i++) {
			assert_true(got < n);
			assert_string_equal(out[i].name, sorted[got]);
			assert_int_equal(out[i].len, strlen(sorted[got]));
			got++;
		}
		if (m < max)
			break;
		memcpy(last, out[m - 1].name, out[m - 1].len + 1u);
		after = (const uint8_t *)last;
		after_len = out[m - 1].len;
	}
	assert_int_equal(got, n);
	/* Starting after an absent key (every key, present or not, plus a suffix) gives the
	 * first present key above it. */
	for (unsigned k = 0; k < TKEYS; k += 7) {
		char probe[40];
		size_t kl = strlen(keys[k]);
		memcpy(probe, keys[k], kl);
		memcpy(probe + kl, "~", 2);
		int m = names_next(t, (const uint8_t *)probe, strlen(probe), out, 1);
		const char *want = NULL;
		for (size_t i = 0; i < n && want == NULL; i++)
			if (strcmp(sorted[i], probe) > 0)
				want = sorted[i];
		if (want == NULL) {
			assert_int_equal(m, 0);
		} else {
			assert_int_equal(m, 1);
			assert_string_equal(out[0].name, want);
		}
	}
	/* Empty it: every delete keeps the tree sound. */
	for (unsigned k = 0; k < TKEYS; k++)
		if (model[k] >= 0)
			assert_int_equal(names_del(t, (const uint8_t *)keys[k], strlen(keys[k])),
			                 0);
	assert_int_equal(names_count(t), 0);
	assert_int_equal(names_bytes(t), 0);
	assert_int_equal(names_check_tree(t), 0);
	assert_int_equal(names_next(t, NULL, 0, out, 10), 0);
	names_destroy(t);
}

/* Sorted inserts and deletes are the AVL tree's worst case for rotations. */
static void table_sorted_inserts(void **state)
{
	struct names *t;
	char name[16];
	struct name_val v = {.size = 1};

	assert_int_equal(names_create(&t), 0);
	for (unsigned i = 0; i < 20000; i++) {
		snprintf(name, sizeof(name), "%08u", i);
		assert_int_equal(names_set(t, (const uint8_t *)name, 8, &v), 0);
	}
	assert_int_equal(names_check_tree(t), 0);
	for (unsigned i = 0; i < 20000; i += 2) {
		snprintf(name, sizeof(name), "%08u", i);
		assert_int_equal(names_del(t, (const uint8_t *)name, 8), 0);
	}
	assert_int_equal(names_check_tree(t), 0);
	assert_int_equal(names_count(t), 10000);
	names_destroy(t); /* frees the remaining nodes: LeakSanitizer checks */
}

/* Each rule of name_check, with its message. */
static void name_rules(void **state)
{
	static const struct {
		const char *name;
		size_t len;
		const char *why; /* NULL: valid */
	} cases[] = {
	    {"", 0, "name is empty"},
	    {"a", 1, NULL},
	    {"hello\nworld", 11, "name has a newline at byte 5"},
	    {"ab\0c", 4, "name has a NUL at byte 2"},
	    {"\tx", 2, "name has a tab at byte 0"},
	    {"x\r", 2, "name has a carriage return at byte 1"},
	    {"esc\x1b[0m", 7, "name has control character U+001B at byte 3"},
	    {"del\x7f", 4, "name has control character U+007F at byte 3"},
	    {"c1\xc2\x85", 4, "name has control character U+0085 at byte 2"},
	    {"abc\xff", 4, "name is not valid UTF-8 at byte 3"},
	    {"\x80", 1, "name is not valid UTF-8 at byte 0"},
	    {"ov\xc0\xaf", 4, "name is not valid UTF-8 at byte 2"},          /* overlong '/' */
	    {"ov\xe0\x80\xaf", 5, "name is not valid UTF-8 at byte 2"},      /* overlong */
	    {"ov\xf0\x80\x80\xaf", 6, "name is not valid UTF-8 at byte 2"},  /* overlong */
	    {"s\xed\xa0\x80", 4, "name is not valid UTF-8 at byte 1"},       /* surrogate */
	    {"big\xf4\x90\x80\x80", 7, "name is not valid UTF-8 at byte 3"}, /* > U+10FFFF */
	    {"cut\xe2\x82", 5, "name is not valid UTF-8 at byte 3"},         /* cut short */
	    {"bad\xe2\x28\xa1", 6, "name is not valid UTF-8 at byte 3"},     /* bad continuation */
	    {"caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.bin", 16, NULL},
	    {"emoji \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf", 15, NULL}, /* U+1F600, U+10FFFF */
	    {"\xc2\xa0nbsp and \xef\xbb\xbf bom", 18, NULL},       /* not Cc: allowed */
	    {"spaces and ~!@#$%^&*()", 22, NULL},
	};
	char why[96];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = name_check((const uint8_t *)cases[i].name, cases[i].len, why, sizeof(why));
		if (cases[i].why == NULL) {
			if (rc != 0)
				fail_msg("case %zu refused: %s", i, why);
		} else {
			assert_int_equal(rc, CS_EINVAL);
			assert_string_equal(why, cases[i].why);
		}
	}
	uint8_t long_name[CS_NAME_MAX + 45];
	memset(long_name, 'n', sizeof(long_name));
	assert_int_equal(name_check(long_name, CS_NAME_MAX, why, sizeof(why)), 0);
	assert_int_equal(name_check(long_name, CS_NAME_MAX + 1, why, sizeof(why)), CS_EINVAL);
	assert_string_equal(why, "name is 256 bytes, longer than 255");
	assert_int_equal(name_check(long_name, 300, why, sizeof(why)), CS_EINVAL);
	assert_string_equal(why, "name is 300 bytes, longer than 255");
}

/* ---- the records ----------------------------------------------------------------------- */

static void format_name_example(void **state)
{
	uint8_t p[256], again[256];
	struct rec_name_set ns;
	cs_cid want;

	size_t n = tu_format_example("name-example", p, sizeof(p));
	assert_int_equal(n, 70);
	assert_int_equal(rec_name_set_decode(p, (uint32_t)n, &ns), 0);
	assert_int_equal(ns.name_len, 14);
	assert_memory_equal(ns.name, "docs/hello.txt", 14);
	assert_int_equal(ns.size, 5);
	assert_int_equal(ns.time_ns, 1767225600000000000ll);
	assert_int_equal(
	    cs_cid_parse("bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq", &want), 0);
	assert_int_equal(ns.cid_len, want.len);
	assert_memory_equal(ns.cid, want.bytes, want.len);

	rec_name_set_meta(again, 14, want.len, 5, 1767225600000000000ll);
	memcpy(again + REC_NAME_SET_META, "docs/hello.txt", 14);
	memcpy(again + REC_NAME_SET_META + 14, want.bytes, want.len);
	assert_memory_equal(again, p, n);

	/* Every other length, a set reserved byte, zero or oversized lengths: refused. */
	for (uint32_t len = 0; len < n + 8; len++)
		if (len != n)
			assert_int_equal(rec_name_set_decode(p, len, &ns), CS_ECORRUPT);
	p[3] = 1;
	assert_int_equal(rec_name_set_decode(p, (uint32_t)n, &ns), CS_ECORRUPT);
	p[3] = 0;
	put_le16(p, 0);
	assert_int_equal(rec_name_set_decode(p, 20 + 36, &ns), CS_ECORRUPT);
	put_le16(p, 14);
	p[2] = 0;
	assert_int_equal(rec_name_set_decode(p, 20 + 14, &ns), CS_ECORRUPT);

	/* The delete payload. */
	struct rec_name_del nd;
	uint8_t d[4 + 14];
	rec_name_del_meta(d, 14);
	memcpy(d + 4, "docs/hello.txt", 14);
	assert_int_equal(get_le16(d), 14);
	assert_int_equal(get_le16(d + 2), 0);
	assert_int_equal(rec_name_del_decode(d, sizeof(d), &nd), 0);
	assert_int_equal(nd.name_len, 14);
	assert_ptr_equal(nd.name, d + 4);
	assert_int_equal(rec_name_del_decode(d, sizeof(d) - 1, &nd), CS_ECORRUPT);
	d[3] = 1;
	assert_int_equal(rec_name_del_decode(d, sizeof(d), &nd), CS_ECORRUPT);
}

/* ---- the API --------------------------------------------------------------------------- */

static void set_get_replace_delete_list(void **state)
{
	cs_store *s = open_ok();
	cs_cid a = put_root(s, 1), b = put_root(s, 2), r;
	uint64_t size;
	int64_t t, t0 = now_ns();
	struct listing l = {0};
	cs_stat st;

	set_ok(s, "weights/model.bin", &a, 1000);
	int64_t t1 = now_ns();
	assert_int_equal(cs_name_get(s, "weights/model.bin", &r, &size, &t), 0);
	assert_true(cid_eq(&r, &a));
	assert_int_equal(size, 1000);
	assert_true(t >= t0 && t <= t1);
	assert_int_equal(cs_name_get(s, "weights/model.bin", NULL, NULL, NULL), 0);
	expect_absent(s, "weights/model");
	expect_absent(s, "weights/model.bin2");
	assert_string_equal(cs_errmsg(), "name 'weights/model.bin2' is not set");

	/* Replace: a new root, size and time. */
	set_ok(s, "weights/model.bin", &b, 2000);
	assert_int_equal(cs_name_get(s, "weights/model.bin", &r, &size, &t1), 0);
	assert_true(cid_eq(&r, &b));
	assert_int_equal(size, 2000);
	assert_true(t1 >= t);

	set_ok(s, "a", &a, 1);
	set_ok(s, "weights/", &a, 2);
	set_ok(s, "Z", &a, 3);
	set_ok(s, "\xc3\xa9t\xc3\xa9", &b, 4);
	cs_store_stat(s, &st);
	assert_int_equal(st.names, 5);
	list_all(s, &l);
	assert_int_equal(l.n, 5);
	const char *order[] = {"Z", "a", "weights/", "weights/model.bin", "\xc3\xa9t\xc3\xa9"};
	for (int i = 0; i < 5; i++)
		assert_string_equal(l.names[i], order[i]);
	assert_int_equal(l.info[3].size, 2000);
	assert_true(cid_eq(&l.info[4].root, &b));

	/* A nonzero return stops the walk and is returned. */
	l.n = 0;
	l.stop_at = 2;
	assert_int_equal(cs_name_list(s, collect, &l), 42);
	assert_int_equal(l.n, 2);
	l.stop_at = 0;
	assert_int_equal(cs_name_list(s, NULL, NULL), CS_EINVAL);

	/* Delete: gone, blocks stay; a second delete is CS_ENOTFOUND. */
	assert_int_equal(cs_name_delete(s, "weights/model.bin"), 0);
	expect_absent(s, "weights/model.bin");
	assert_int_equal(cs_name_delete(s, "weights/model.bin"), CS_ENOTFOUND);
	assert_int_equal(cs_block_has(s, &b), 1);
	assert_int_equal(cs_name_delete(s, "never"), CS_ENOTFOUND);
	assert_non_null(strstr(cs_errmsg(), "'never' is not set"));
	cs_store_stat(s, &st);
	assert_int_equal(st.names, 4);

	/* A name may outlive its root block: names do not hold blocks. */
	assert_int_equal(cs_block_delete(s, &a), 0);
	expect_name(s, "a", &a, 1);
	assert_int_equal(cs_store_close(s), 0);
	s = open_ok();
	expect_name(s, "a", &a, 1);
	expect_absent(s, "weights/model.bin");
	list_all(s, &l);
	assert_int_equal(l.n, 4);
	assert_int_equal(cs_store_close(s), 0);
	listing_free(&l);
}

/* A CIDv0 root is kept as given (v0 bytes), and found present through its multihash. */
static void cidv0_root(void **state)
{
	cs_store *s = open_ok();
	static const uint8_t node[] = {0x0a, 0x02, 0x08, 0x01}; /* a dag-pb UnixFS directory */
	cs_cid v1, v0, r;
	cs_cid_info ci;
	uint8_t bytes[34];

	assert_int_equal(
	    cs_block_put(s, node, sizeof(node), CS_CODEC_DAG_PB, CS_HASH_SHA2_256, &v1), 0);
	assert_int_equal(cs_cid_inspect(&v1, &ci), 0);
	bytes[0] = 0x12;
	bytes[1] = 0x20;
	memcpy(bytes + 2, ci.digest, 32);
	assert_int_equal(cs_cid_from_bytes(bytes, sizeof(bytes), &v0), 0);
	set_ok(s, "old-style", &v0, 4);
	assert_int_equal(cs_store_close(s), 0);
	s = open_ok();
	assert_int_equal(cs_name_get(s, "old-style", &r, NULL, NULL), 0);
	assert_true(cid_eq(&r, &v0));
	assert_int_equal(r.len, 34);
	assert_int_equal(cs_store_close(s), 0);
}

static void persist_all_modes(void **state)
{
	static const cs_durability modes[] = {CS_DURABLE_SYNC, CS_DURABLE_INTERVAL,
	                                      CS_DURABLE_NONE};
	struct listing before = {0}, after = {0};
	char name[64];

	for (int m = 0; m < 3; m++) {
		cs_options o = tu_opts();
		o.durability = modes[m];
		cs_store *s = open_opts(&o);
		cs_cid root = put_root(s, 100 + (uint64_t)m);
		for (int i = 0; i < 40; i++) {
			snprintf(name, sizeof(name), "mode%d/file%02d", m, i);
			set_ok(s, name, &root, (uint64_t)(m * 1000 + i));
		}
		for (int i = 0; i < 40; i += 4) { /* replaced */
			snprintf(name, sizeof(name), "mode%d/file%02d", m, i);
			set_ok(s, name, &root, 7);
		}
		for (int i = 1; i < 40; i += 4) { /* deleted */
			snprintf(name, sizeof(name), "mode%d/file%02d", m, i);
			assert_int_equal(cs_name_delete(s, name), 0);
		}
		list_all(s, &before);
		assert_int_equal(cs_store_close(s), 0);

		s = open_opts(&o);
		list_all(s, &after);
		expect_same_listing(&before, &after);
		for (int i = 0; i < 40; i++) {
			snprintf(name, sizeof(name), "mode%d/file%02d", m, i);
			if (i % 4 == 1)
				expect_absent(s, name);
			else
				expect_name(s, name, &root,
				            i % 4 == 0 ? 7 : (uint64_t)(m * 1000 + i));
		}
		cs_stat st;
		cs_store_stat(s, &st);
		assert_int_equal(st.names, 30 * (m + 1));
		assert_int_equal(cs_store_close(s), 0);
	}
	listing_free(&before);
	listing_free(&after);
}

static void expect_einval(int rc, const char *msg)
{
	if (rc != CS_EINVAL)
		fail_msg("expected CS_EINVAL for '%s', got %s", msg, cs_strerror(rc));
	assert_string_equal(cs_errmsg(), msg);
}

static void invalid_names(void **state)
{
	cs_store *s = open_ok();
	cs_cid root = put_root(s, 5), bad;
	char big[301];

	memset(big, 'x', 300);
	big[300] = '\0';
	expect_einval(cs_name_set(s, "", &root, 1), "name is empty");
	expect_einval(cs_name_set(s, big, &root, 1), "name is 300 bytes, longer than 255");
	expect_einval(cs_name_set(s, "hello\nx", &root, 1), "name has a newline at byte 5");
	expect_einval(cs_name_set(s, "abc\xff", &root, 1), "name is not valid UTF-8 at byte 3");
	expect_einval(cs_name_set(s, "tab\there", &root, 1), "name has a tab at byte 3");
	expect_einval(cs_name_set(s, "\x1b", &root, 1),
	              "name has control character U+001B at byte 0");
	expect_einval(cs_name_set(s, "x\xc2\x9f", &root, 1),
	              "name has control character U+009F at byte 1");
	expect_einval(cs_name_set(s, "\xed\xbf\xbf", &root, 1),
	              "name is not valid UTF-8 at byte 0");
	expect_einval(cs_name_set(s, NULL, &root, 1), "no name given");
	expect_einval(cs_name_set(s, "ok", NULL, 1), "no root CID given");
	memset(&bad, 0, sizeof(bad));
	expect_einval(cs_name_set(s, "ok", &bad, 1), "the root is not a valid binary CID");
	bad.len = 200;
	expect_einval(cs_name_set(s, "ok", &bad, 1), "the root is not a valid binary CID");
	bad = root;
	bad.len--;
	expect_einval(cs_name_set(s, "ok", &bad, 1), "the root is not a valid binary CID");

	/* 255 bytes is the longest name; get and delete check names too. */
	big[CS_NAME_MAX] = '\0';
	set_ok(s, big, &root, 255);
	expect_name(s, big, &root, 255);
	big[CS_NAME_MAX] = 'x';
	expect_einval(cs_name_get(s, big, NULL, NULL, NULL), "name is 300 bytes, longer than 255");
	expect_einval(cs_name_delete(s, "a\nb"), "name has a newline at byte 1");
	expect_einval(cs_name_get(s, "", NULL, NULL, NULL), "name is empty");
	expect_einval(cs_name_get(s, NULL, NULL, NULL, NULL), "no name given");

	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.names, 1); /* nothing invalid got in */
	assert_int_equal(cs_store_close(s), 0);
}

static void root_absent(void **state)
{
	cs_store *s = open_ok();
	uint8_t data[] = "never stored";
	cs_cid absent, blake, sha1;
	char text[CS_CID_TEXT_MAX], want[200];

	assert_int_equal(
	    cs_cid_compute(data, sizeof(data), CS_CODEC_RAW, CS_HASH_SHA2_256, &absent), 0);
	assert_true(cs_cid_format(&absent, text, sizeof(text)) > 0);
	assert_int_equal(cs_name_set(s, "x", &absent, 1), CS_ENOTFOUND);
	snprintf(want, sizeof(want), "root %s is not in the store", text);
	assert_string_equal(cs_errmsg(), want);
	assert_int_equal(
	    cs_cid_compute(data, sizeof(data), CS_CODEC_RAW, CS_HASH_BLAKE2B_256, &blake), 0);
	assert_int_equal(cs_name_set(s, "x", &blake, 1), CS_ENOTFOUND);
	/* A well-formed CID of a hash the store never holds (sha1, 20 bytes) is absent. */
	uint8_t b[4 + 20] = {0x01, 0x55, 0x11, 0x14};
	memset(b + 4, 0xab, 20);
	assert_int_equal(cs_cid_from_bytes(b, sizeof(b), &sha1), 0);
	assert_int_equal(cs_name_set(s, "x", &sha1, 1), CS_ENOTFOUND);
	assert_non_null(strstr(cs_errmsg(), "is not in the store"));
	expect_absent(s, "x");
	/* Once the block is there, the set works. */
	cs_cid put;
	assert_int_equal(cs_block_put(s, data, sizeof(data), CS_CODEC_RAW, CS_HASH_SHA2_256, &put),
	                 0);
	set_ok(s, "x", &absent, 1);
	assert_int_equal(cs_store_close(s), 0);
}

enum { MANY = 100000 };

static void many_name(char *buf, size_t cap, unsigned i)
{
	static const char *const dirs[] = {"models", "data/shards", "cache", "\xe6\x97\xa5",
	                                   "a",      "models/v2",   "zz"};
	uint32_t h = i * 2654435761u;
	snprintf(buf, cap, "%s/%08x-%u", dirs[i % 7], h, i);
}

static void many_names(void **state)
{
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE; /* 100k fsyncs would dominate; replay is what's tested */
	cs_store *s = open_opts(&o);
	cs_cid roots[3] = {put_root(s, 7), put_root(s, 8), put_root(s, 9)};
	static unsigned perm[MANY];
	static char(*names)[40];
	static const char *sorted[MANY];
	struct listing l = {0}, again = {0};
	uint64_t x = 4242;

	names = malloc(sizeof(*names) * MANY);
	assert_non_null(names);
	for (unsigned i = 0; i < MANY; i++) {
		perm[i] = i;
		many_name(names[i], sizeof(names[i]), i);
	}
	for (unsigned i = MANY - 1; i > 0; i--) { /* seeded shuffle: random insertion order */
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned j = (unsigned)(x % (i + 1));
		unsigned t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (unsigned i = 0; i < MANY; i++)
		set_ok(s, names[perm[i]], &roots[perm[i] % 3], perm[i]);
	size_t n = 0;
	for (unsigned i = 0; i < MANY; i++)
		sorted[n++] = names[i];
	qsort(sorted, n, sizeof(sorted[0]), cmp_str);
	list_all(s, &l);
	assert_int_equal(l.n, MANY);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(l.names[i], sorted[i]);

	/* Delete every third, in shuffled order; the rest list in order. */
	for (unsigned i = 0; i < MANY; i++)
		if (perm[i] % 3 == 0)
			assert_int_equal(cs_name_delete(s, names[perm[i]]), 0);
	list_all(s, &l);
	assert_int_equal(l.n, MANY - (MANY + 2) / 3);
	for (size_t i = 0; i < l.n; i++) {
		const char *nm = l.names[i];
		unsigned idx = (unsigned)strtoul(strrchr(nm, '-') + 1, NULL, 10);
		assert_string_equal(nm, names[idx]);
		assert_true(idx % 3 != 0);
		assert_int_equal(l.info[i].size, idx);
		assert_true(cid_eq(&l.info[i].root, &roots[idx % 3]));
	}
	assert_int_equal(cs_store_close(s), 0);

	s = open_opts(&o);
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.names, l.n);
	list_all(s, &again);
	expect_same_listing(&l, &again);
	assert_int_equal(cs_store_close(s), 0);
	listing_free(&l);
	listing_free(&again);
	free(names);
}

/* Threads race sets and deletes on the same names. Whatever interleaving happened, the
 * table must equal what replaying the log gives (S5: table order is log order). Only the
 * last operations on a name decide what a reopen shows, so the race is run in epochs, each
 * on a fresh name that every thread sets (or deletes) at the same moment, after a barrier. */
enum { RACE_THREADS = 4, RACE_EPOCHS = 400 };

struct race {
	cs_store *s;
	pthread_barrier_t *barrier;
	cs_cid roots[RACE_THREADS];
	int id;
};

static void *race_worker(void *p)
{
	struct race *r = p;
	char name[32];

	for (int e = 0; e < RACE_EPOCHS; e++) {
		snprintf(name, sizeof(name), "race/%04d", e);
		pthread_barrier_wait(r->barrier);
		for (int j = 0; j < 2; j++) {
			int rc;
			if (j == 1 && (e + r->id) % 4 == 0) {
				rc = cs_name_delete(r->s, name);
				if (rc == CS_ENOTFOUND)
					rc = 0;
			} else {
				rc = cs_name_set(r->s, name, &r->roots[r->id],
				                 (uint64_t)r->id << 32 | (uint64_t)(e * 2 + j));
			}
			if (rc != 0)
				return (void *)1;
		}
		if (e % 50 == r->id) { /* readers meanwhile */
			struct listing l = {0};
			if (cs_name_list(r->s, collect, &l) != 0)
				return (void *)1;
			listing_free(&l);
		}
	}
	return NULL;
}

static void threads_race(void **state)
{
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE;
	cs_store *s = open_opts(&o);
	struct race r[RACE_THREADS];
	pthread_t th[RACE_THREADS];
	pthread_barrier_t barrier;
	struct listing before = {0}, after = {0};
	cs_cid roots[RACE_THREADS];

	pthread_barrier_init(&barrier, NULL, RACE_THREADS);
	for (int k = 0; k < RACE_THREADS; k++)
		roots[k] = put_root(s, 50 + (uint64_t)k);
	for (int i = 0; i < RACE_THREADS; i++) {
		r[i].s = s;
		r[i].barrier = &barrier;
		r[i].id = i;
		memcpy(r[i].roots, roots, sizeof(roots));
		pthread_create(&th[i], NULL, race_worker, &r[i]);
	}
	for (int i = 0; i < RACE_THREADS; i++) {
		void *ret;
		pthread_join(th[i], &ret);
		assert_null(ret);
	}
	pthread_barrier_destroy(&barrier);
	list_all(s, &before);
	assert_true(before.n > 0);
	for (size_t i = 0; i < before.n; i++) /* each value is one its thread set */
		assert_true(cid_eq(&before.info[i].root, &roots[before.info[i].size >> 32]));
	assert_int_equal(cs_store_close(s), 0);
	s = open_opts(&o);
	list_all(s, &after);
	expect_same_listing(&before, &after);
	assert_int_equal(cs_store_close(s), 0);
	listing_free(&before);
	listing_free(&after);
}

/* ---- kill -9 --------------------------------------------------------------------------- */

enum { KTHREADS = 2, KNAMES = 24, KROOTS = 4 };
enum { OP_SET = 1, OP_DEL = 2, MSG_INTENT = 0x10, MSG_ACK = 0x20, MSG_READY = 0x40 };

struct kmsg {
	uint32_t kind; /* MSG_INTENT or MSG_ACK, or'ed with OP_*; or MSG_READY */
	uint16_t thread, k;
	uint32_t root;
	uint32_t pad;
	uint64_t size;
};

static void kname(char *buf, size_t cap, unsigned t, unsigned k)
{
	snprintf(buf, cap, "kill/%u/%s%u", t, k % 2 ? "\xc3\xb1" : "", k);
}

static cs_cid kroot(unsigned i)
{
	uint8_t buf[64];
	cs_cid cid;
	tu_fill(buf, sizeof(buf), 900 + i);
	assert_int_equal(cs_cid_compute(buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid), 0);
	return cid;
}

struct kchild {
	cs_store *s;
	int fd;
	uint64_t round;
	cs_cid roots[KROOTS];
	unsigned id;
};

static void ksend(int fd, const struct kmsg *m)
{
	if (write(fd, m, sizeof(*m)) != sizeof(*m))
		_exit(3);
}

static void *kill_worker(void *p)
{
	struct kchild *c = p;
	uint64_t x = c->round * 7919 + c->id * 104729 + 1;
	char name[64];

	for (uint64_t i = 0;; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		struct kmsg m = {0};
		m.thread = (uint16_t)c->id;
		m.k = (uint16_t)(x % KNAMES);
		kname(name, sizeof(name), c->id, m.k);
		/* This thread is the only writer of its names, so get tells it the state. */
		int present = cs_name_get(c->s, name, NULL, NULL, NULL) == 0;
		if (present && (x >> 16) % 4 == 0) {
			m.kind = MSG_INTENT | OP_DEL;
			ksend(c->fd, &m);
			if (cs_name_delete(c->s, name) != 0)
				_exit(5);
			m.kind = MSG_ACK | OP_DEL;
			ksend(c->fd, &m);
			continue;
		}
		m.root = (uint32_t)((x >> 24) % KROOTS);
		m.size = c->round << 32 | i;
		m.kind = MSG_INTENT | OP_SET;
		ksend(c->fd, &m);
		if (cs_name_set(c->s, name, &c->roots[m.root], m.size) != 0)
			_exit(6);
		m.kind = MSG_ACK | OP_SET;
		ksend(c->fd, &m);
	}
	return NULL;
}

static void kill_child(int fd, uint64_t round)
{
	cs_options o = tu_opts(); /* sync mode */
	struct kchild c[KTHREADS];
	pthread_t th[KTHREADS];
	cs_store *s;

	if (cs_store_open(dir, &o, &s) != 0)
		_exit(2);
	struct kmsg ready = {.kind = MSG_READY};
	ksend(fd, &ready);
	for (unsigned i = 0; i < KTHREADS; i++) {
		c[i].s = s;
		c[i].fd = fd;
		c[i].round = round;
		c[i].id = i;
		for (unsigned r = 0; r < KROOTS; r++)
			c[i].roots[r] = kroot(r);
		pthread_create(&th[i], NULL, kill_worker, &c[i]);
	}
	for (unsigned i = 0; i < KTHREADS; i++)
		pthread_join(th[i], NULL);
	_exit(0);
}

/* The model: per name, its acknowledged state and, if an operation was in flight at the
 * kill, what that operation would have made it. */
struct kstate {
	int present;
	uint32_t root;
	uint64_t size;
};

struct kentry {
	struct kstate acked;
	int in_flight;
	struct kstate would;
};

static struct kentry kmodel[KTHREADS][KNAMES];

static void kapply(const struct kmsg *m)
{
	if (m->kind == MSG_READY)
		return;
	struct kentry *e = &kmodel[m->thread][m->k];
	struct kstate st = {(m->kind & OP_SET) != 0, m->root, m->size};
	if (m->kind & MSG_INTENT) {
		e->in_flight = 1;
		e->would = st;
	} else {
		e->in_flight = 0;
		e->acked = st;
	}
}

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs a child, reads its messages until run_for seconds after it opened the store, kills
 * it, drains what is left; returns the acks read. */
static uint64_t kill_round(uint64_t round, double run_for)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		kill_child(p[1], round);
	}
	close(p[1]);
	struct kmsg m;
	size_t have = 0;
	uint64_t acks = 0;
	/* The clock starts when the child has opened the store, so that slow opens (sanitizer
	 * builds) still leave it time to write; 30 s is the bound on that open. */
	double deadline = mono() + 30;
	int killed = 0;
	for (;;) {
		if (!killed && mono() >= deadline) {
			kill(pid, SIGKILL);
			killed = 1;
		}
		struct pollfd pf = {p[0], POLLIN, 0};
		int ms = killed ? 1000 : (int)((deadline - mono()) * 1000) + 1;
		if (poll(&pf, 1, ms) <= 0)
			continue;
		ssize_t n = read(p[0], (uint8_t *)&m + have, sizeof(m) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(m)) {
			if (m.kind == MSG_READY)
				deadline = mono() + run_for;
			kapply(&m);
			acks += (m.kind & MSG_ACK) != 0;
			have = 0;
		}
	}
	close(p[0]);
	int status;
	waitpid(pid, &status, 0);
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL))
		fail_msg("child ended otherwise than by SIGKILL (status 0x%x)", status);
	return acks;
}

static int kstate_eq(const struct kstate *a, const struct kstate *b)
{
	if (a->present != b->present)
		return 0;
	return !a->present || (a->root == b->root && a->size == b->size);
}

static void kill_check(uint64_t *ambiguous)
{
	cs_cid roots[KROOTS];
	struct listing l = {0};
	char name[64];
	uint64_t present = 0;

	for (unsigned r = 0; r < KROOTS; r++)
		roots[r] = kroot(r);
	cs_store *s = open_ok();
	for (unsigned t = 0; t < KTHREADS; t++) {
		for (unsigned k = 0; k < KNAMES; k++) {
			struct kentry *e = &kmodel[t][k];
			struct kstate is = {0};
			cs_cid root;
			kname(name, sizeof(name), t, k);
			int rc = cs_name_get(s, name, &root, &is.size, NULL);
			if (rc != 0 && rc != CS_ENOTFOUND)
				fail_msg("get %s: %s", name, cs_errmsg());
			is.present = rc == 0;
			if (is.present) {
				is.root = KROOTS;
				for (unsigned r = 0; r < KROOTS; r++)
					if (cid_eq(&root, &roots[r]))
						is.root = r;
				assert_true(is.root < KROOTS);
			}
			int ok = kstate_eq(&is, &e->acked) ||
			         (e->in_flight && kstate_eq(&is, &e->would));
			if (!ok)
				fail_msg("%s: acknowledged %s size %llx, after kill %s size %llx",
				         name, e->acked.present ? "set" : "absent",
				         (unsigned long long)e->acked.size,
				         is.present ? "set" : "absent",
				         (unsigned long long)is.size);
			if (e->in_flight) {
				(*ambiguous)++;
				e->in_flight = 0;
			}
			e->acked = is;
			present += (uint64_t)is.present;
		}
	}
	/* Nothing else appeared. */
	list_all(s, &l);
	assert_int_equal(l.n, present);
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.names, present);
	assert_int_equal(cs_store_close(s), 0);
	listing_free(&l);
}

static void kill_rounds(void **state)
{
	uint64_t acks = 0, ambiguous = 0, x = 777;
	const char *env = getenv("CS_KILL_ROUNDS");
	int rounds = env ? atoi(env) : 20;

	memset(kmodel, 0, sizeof(kmodel));
	cs_store *s = open_ok();
	for (unsigned r = 0; r < KROOTS; r++) {
		cs_cid c = put_root(s, 900 + r);
		cs_cid want = kroot(r);
		assert_true(cid_eq(&c, &want));
	}
	assert_int_equal(cs_store_close(s), 0);
	for (int r = 1; r <= rounds; r++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double run_for = 0.01 + (double)(x % 140) / 1000.0; /* 10..150 ms */
		acks += kill_round((uint64_t)r, run_for);
		kill_check(&ambiguous);
	}
	printf("names kill test: %d rounds, %llu acknowledged operations, %llu in flight at a "
	       "kill\n",
	       rounds, (unsigned long long)acks, (unsigned long long)ambiguous);
	assert_true(acks > 0);
}

/* ---- damage ---------------------------------------------------------------------------- */

static uint64_t log_end(cs_store *s)
{
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.segments, 1); /* so the log's bytes are the one segment's end */
	return st.log_bytes;
}

static void torn_name_record(void **state)
{
	cs_store *s = open_ok();
	cs_cid root = put_root(s, 11);
	char name[32], seg[512];

	for (int i = 0; i < 9; i++) {
		snprintf(name, sizeof(name), "torn/%d", i);
		set_ok(s, name, &root, (uint64_t)i);
	}
	uint64_t last_at = log_end(s);
	set_ok(s, "torn/9-the-last-one", &root, 9);
	uint64_t end = log_end(s);
	assert_true(end > last_at + CS_REC_HEADER + REC_NAME_SET_META);
	assert_int_equal(cs_store_close(s), 0);

	/* Cut the file inside the last record's payload. */
	assert_int_equal(tu_last_segment(dir, seg, sizeof(seg)), 0);
	assert_int_equal(truncate(seg, (off_t)(last_at + CS_REC_HEADER + 10)), 0);

	s = open_ok();
	cs_stat st;
	cs_store_stat(s, &st);
	assert_true(st.torn_tail_bytes > 0);
	expect_absent(s, "torn/9-the-last-one");
	for (int i = 0; i < 9; i++) {
		snprintf(name, sizeof(name), "torn/%d", i);
		expect_name(s, name, &root, (uint64_t)i);
	}
	assert_int_equal(st.names, 9);
	/* The log continues where the torn record was. */
	assert_int_equal(log_end(s), last_at);
	set_ok(s, "after", &root, 1);
	assert_int_equal(cs_store_close(s), 0);
	s = open_ok();
	expect_name(s, "after", &root, 1);
	expect_name(s, "torn/8", &root, 8);
	assert_int_equal(cs_store_close(s), 0);
}

/* Appends one checksum-valid record of the given type and payload at the end of the log of
 * the closed store in dir; returns its offset. */
static uint64_t append_raw(uint8_t type, const void *payload, size_t len)
{
	cs_store *s = open_ok();
	cs_stat st;
	cs_store_stat(s, &st);
	uint64_t at = log_end(s), seq = st.next_seq;
	assert_int_equal(cs_store_close(s), 0);

	char seg[512];
	uint8_t rec[CS_REC_HEADER + 512];
	struct rec_hdr h = {.type = type, .flags = 0, .seq = seq, .synced_seq = seq - 1};
	struct iovec iov = {(void *)payload, len};
	assert_true(rec_size((uint32_t)len) <= sizeof(rec));
	rec_encode(rec, &h, &iov, 1);
	assert_int_equal(tu_last_segment(dir, seg, sizeof(seg)), 0);
	int fd = open(seg, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, rec, rec_size((uint32_t)len), (off_t)at),
	                 (ssize_t)rec_size((uint32_t)len));
	close(fd);
	return at;
}

static void expect_open_fails(const char *what)
{
	cs_options o = tu_opts();
	cs_store *s = NULL;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != CS_ECORRUPT)
		fail_msg("open with %s: expected CS_ECORRUPT, got %s", what, cs_strerror(rc));
	if (strstr(cs_errmsg(), what) == NULL)
		fail_msg("message '%s' does not contain '%s'", cs_errmsg(), what);
	/* Salvage cannot skip it either: the checksum says the writer wrote it so. */
	o.flags |= CS_OPEN_SALVAGE;
	assert_int_equal(cs_store_open(dir, &o, &s), CS_ECORRUPT);
}

/* Builds a name-set payload with the given name bytes and CID bytes. */
static size_t name_payload(uint8_t *p, const char *name, size_t nlen, const uint8_t *cid,
                           size_t clen)
{
	rec_name_set_meta(p, (uint16_t)nlen, (uint8_t)clen, 3, 12345);
	memcpy(p + REC_NAME_SET_META, name, nlen);
	memcpy(p + REC_NAME_SET_META + nlen, cid, clen);
	return REC_NAME_SET_META + nlen + clen;
}

static void bad_name_records(void **state)
{
	cs_store *s = open_ok();
	cs_cid root = put_root(s, 12);
	set_ok(s, "good", &root, 1);
	assert_int_equal(cs_store_close(s), 0);
	char base[300], want[200];
	snprintf(base, sizeof(base), "%s.base", dir);
	tu_copy_dir(dir, base);

	uint8_t p[400];
	/* A delete of a name that is not set replays as nothing. */
	rec_name_del_meta(p, 5);
	memcpy(p + 4, "ghost", 5);
	append_raw(REC_NAME_DEL, p, 9);
	s = open_ok();
	expect_name(s, "good", &root, 1);
	expect_absent(s, "ghost");
	assert_int_equal(cs_store_close(s), 0);

	/* A newline in the name. */
	tu_copy_dir(base, dir);
	size_t n = name_payload(p, "bad\nname", 8, root.bytes, root.len);
	uint64_t at = append_raw(REC_NAME_SET, p, n);
	snprintf(want, sizeof(want), "segment 00000001 offset %llu: malformed name record",
	         (unsigned long long)at);
	expect_open_fails(want);
	expect_open_fails("name has a newline at byte 3");

	/* Invalid UTF-8 in a delete. */
	tu_copy_dir(base, dir);
	rec_name_del_meta(p, 3);
	memcpy(p + 4, "\xc0\xafx", 3);
	at = append_raw(REC_NAME_DEL, p, 7);
	snprintf(want, sizeof(want), "segment 00000001 offset %llu", (unsigned long long)at);
	expect_open_fails(want);
	expect_open_fails("name is not valid UTF-8 at byte 0");

	/* A root that is not a CID. */
	tu_copy_dir(base, dir);
	uint8_t junk[5] = {0x01, 0x55, 0x12, 0x20, 0x00};
	n = name_payload(p, "fine", 4, junk, sizeof(junk));
	at = append_raw(REC_NAME_SET, p, n);
	snprintf(want, sizeof(want), "segment 00000001 offset %llu", (unsigned long long)at);
	expect_open_fails(want);
	expect_open_fails("its root is not a valid CID");

	/* Lengths that disagree with the payload (the recovery scan refuses it). */
	tu_copy_dir(base, dir);
	n = name_payload(p, "fine", 4, root.bytes, root.len);
	put_le16(p, 5);
	at = append_raw(REC_NAME_SET, p, n);
	snprintf(want, sizeof(want), "segment 00000001 offset %llu", (unsigned long long)at);
	expect_open_fails(want);

	/* Control: the same record, well formed, replays. */
	tu_copy_dir(base, dir);
	n = name_payload(p, "fine", 4, root.bytes, root.len);
	append_raw(REC_NAME_SET, p, n);
	s = open_ok();
	expect_name(s, "fine", &root, 3);
	int64_t t;
	assert_int_equal(cs_name_get(s, "fine", NULL, NULL, &t), 0);
	assert_int_equal(t, 12345);
	assert_int_equal(cs_store_close(s), 0);
	tu_rmrf(base);
}

/* logical_bytes sums the names' sizes; live_bytes counts each block once. The same file added
 * twice under two names writes no new block, doubles logical_bytes and leaves live_bytes as
 * it was; a replace and a delete move logical_bytes by the sizes involved; a reopen, which
 * rebuilds the table by replay, gives the same figures. */
static void logical_bytes_dedup(void **state)
{
	const size_t len = 3u * 1024 * 1024 + 777;
	uint8_t *data = malloc(len);
	cs_stat st0, st1, st2;
	cs_cid r1, r2, other = {0};
	uint64_t size;
	cs_add *a;

	assert_non_null(data);
	tu_fill(data, len, 42);
	cs_store *s = open_ok();
	other = put_root(s, 9);
	assert_int_equal(cs_store_stat(s, &st0), 0);
	assert_int_equal(st0.logical_bytes, 0);

	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	assert_int_equal(cs_add_write(a, data, len), 0);
	assert_int_equal(cs_add_finish(a, &r1, &size), 0);
	assert_int_equal(size, len);
	set_ok(s, "first", &r1, size);
	assert_int_equal(cs_store_stat(s, &st1), 0);
	assert_true(st1.blocks > st0.blocks);
	assert_int_equal(st1.logical_bytes, len);
	assert_true(st1.live_bytes - st0.live_bytes > len); /* the leaves and a root node */

	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	assert_int_equal(cs_add_write(a, data, len), 0);
	assert_int_equal(cs_add_finish(a, &r2, &size), 0);
	assert_memory_equal(r1.bytes, r2.bytes, r1.len);
	set_ok(s, "second", &r2, size);
	assert_int_equal(cs_store_stat(s, &st2), 0);
	assert_int_equal(st2.blocks, st1.blocks);         /* no new block */
	assert_int_equal(st2.live_bytes, st1.live_bytes); /* physical unchanged */
	assert_int_equal(st2.logical_bytes, 2 * len);

	/* A replace moves it by the difference, a delete by the size, a re-set back. */
	set_ok(s, "second", &other, 64);
	assert_int_equal(cs_store_stat(s, &st2), 0);
	assert_int_equal(st2.logical_bytes, len + 64);
	assert_int_equal(cs_name_delete(s, "second"), 0);
	assert_int_equal(cs_store_stat(s, &st2), 0);
	assert_int_equal(st2.logical_bytes, len);
	set_ok(s, "second", &r2, len);
	assert_int_equal(cs_store_close(s), 0);

	s = open_ok();
	assert_int_equal(cs_store_stat(s, &st2), 0);
	assert_int_equal(st2.blocks, st1.blocks);
	assert_int_equal(st2.live_bytes, st1.live_bytes);
	assert_int_equal(st2.logical_bytes, 2 * len);
	assert_int_equal(st2.names, 2);
	assert_int_equal(cs_store_close(s), 0);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(table_random_ops),
	    cmocka_unit_test(table_sorted_inserts),
	    cmocka_unit_test(name_rules),
	    cmocka_unit_test(format_name_example),
	    cmocka_unit_test_setup_teardown(set_get_replace_delete_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(cidv0_root, setup, teardown),
	    cmocka_unit_test_setup_teardown(persist_all_modes, setup, teardown),
	    cmocka_unit_test_setup_teardown(invalid_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(root_absent, setup, teardown),
	    cmocka_unit_test_setup_teardown(many_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(threads_race, setup, teardown),
	    cmocka_unit_test_setup_teardown(torn_name_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(bad_name_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(kill_rounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(logical_bytes_dedup, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
