/*
 * test_store.c - the public API end to end: what a user relies on.
 *
 * Proves: put/get/has/delete round trips (raw and dag-pb, sha2-256 and blake2b-256, the
 * empty block with its well-known CID); a put of a present block writes nothing; blocks
 * survive close and reopen in every durability mode; stat, list and verify agree with what
 * was stored; many threads put and get at once; a cat reads a pinned file while another
 * thread puts, deletes, adds and collects; and every bad input named in the issue gets
 * its own code and a message: missing or unwritable directory, a second opener (another
 * process, and another handle in this one; the LOCK file names the holder alone), garbage
 * CID text, a block over the limit, a stray file, a non-store directory, an unknown
 * CIDSTORE_IO, a corrupt meta file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <sys/wait.h>

#include "test_util.h"

static char dir[256];

static int setup(void **state)
{
	tu_tmpdir(dir, sizeof(dir), "store");
	return 0;
}

static int teardown(void **state)
{
	tu_rmrf(dir);
	return 0;
}

static cs_store *open_ok(const cs_options *o)
{
	cs_store *s = NULL;
	int rc = cs_store_open(dir, o, &s);
	if (rc != 0)
		fail_msg("open: %s: %s", cs_strerror(rc), cs_errmsg());
	return s;
}

static void expect_block(cs_store *s, const cs_cid *cid, const uint8_t *want, size_t len)
{
	void *got;
	size_t n;
	int rc = cs_block_get_alloc(s, cid, &got, &n);
	if (rc != 0)
		fail_msg("get: %s: %s", cs_strerror(rc), cs_errmsg());
	assert_int_equal(n, len);
	assert_memory_equal(got, want, len);
	cs_free(got);
}

static void test_empty_block_cid(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	cs_cid cid;
	char text[CS_CID_TEXT_MAX];

	assert_int_equal(cs_block_put(s, "", 0, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid), 0);
	assert_true(cs_cid_format(&cid, text, sizeof(text)) > 0);
	assert_string_equal(text, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
	assert_int_equal(cs_block_has(s, &cid), 1);
	size_t len = 99;
	assert_int_equal(cs_block_get(s, &cid, NULL, 0, &len), 0);
	assert_int_equal(len, 0);
	expect_block(s, &cid, (const uint8_t *)"", 0);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_roundtrip_and_reopen(void **state)
{
	static const uint64_t hashes[] = {CS_HASH_SHA2_256, CS_HASH_BLAKE2B_256};
	static const uint64_t codecs[] = {CS_CODEC_RAW, CS_CODEC_DAG_PB};
	static const cs_durability modes[] = {CS_DURABLE_SYNC, CS_DURABLE_INTERVAL,
	                                      CS_DURABLE_NONE};
	enum { N = 200 };
	static uint8_t buf[300000];
	cs_cid cids[3][N];

	for (int m = 0; m < 3; m++) {
		cs_options o = tu_opts();
		o.durability = modes[m];
		cs_store *s = open_ok(&o);
		for (int i = 0; i < N; i++) {
			uint64_t seed = (uint64_t)m * 1000 + i;
			size_t len = tu_len(seed, sizeof(buf));
			tu_fill(buf, len, seed);
			int rc = cs_block_put(s, buf, len, codecs[i % 2], hashes[(i / 2) % 2],
			                      &cids[m][i]);
			assert_int_equal(rc, 0);
			expect_block(s, &cids[m][i], buf, len); /* readable at once */
		}
		assert_int_equal(cs_store_close(s), 0);
	}
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	cs_stat st;
	assert_int_equal(cs_store_stat(s, &st), 0);
	assert_int_equal(st.blocks, 3 * N);
	/* Each close wrote a checkpoint covering the whole log: nothing left to replay. */
	assert_int_equal(st.replayed_records, 0);
	assert_int_equal(st.checkpoint_seq, st.next_seq);
	assert_int_equal(st.torn_tail_bytes, 0);
	assert_int_equal(cs_store_close(s), 0);
	assert_int_equal(tu_drop_checkpoint(dir), 1);
	s = open_ok(&o);
	assert_int_equal(cs_store_stat(s, &st), 0);
	assert_int_equal(st.blocks, 3 * N);
	assert_int_equal(st.replayed_records, 3 * N);
	assert_int_equal(st.checkpoint_seq, 0);
	uint64_t live = 0;
	for (int m = 0; m < 3; m++) {
		for (int i = 0; i < N; i++) {
			uint64_t seed = (uint64_t)m * 1000 + i;
			size_t len = tu_len(seed, sizeof(buf));
			tu_fill(buf, len, seed);
			expect_block(s, &cids[m][i], buf, len);
			live += len;
		}
	}
	assert_int_equal(st.live_bytes, live);
	assert_true(st.segments >= 2); /* ~90 MB in 16 MiB segments */
	assert_true(st.io_backend != NULL);
	uint64_t checked, failed;
	assert_int_equal(cs_store_verify(s, NULL, NULL, &checked, &failed), 0);
	assert_int_equal(checked, 3 * N);
	assert_int_equal(failed, 0);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_dedup_and_delete(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	uint8_t buf[5000];
	cs_cid a, b;
	cs_stat st1, st2;

	tu_fill(buf, sizeof(buf), 7);
	assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &a), 0);
	cs_store_stat(s, &st1);
	assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &b), 0);
	cs_store_stat(s, &st2);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.bytes, b.bytes, a.len);
	assert_int_equal(st1.log_bytes, st2.log_bytes); /* nothing written again */
	assert_int_equal(st2.blocks, 1);

	assert_int_equal(cs_block_delete(s, &a), 0);
	assert_int_equal(cs_block_has(s, &a), 0);
	size_t len;
	assert_int_equal(cs_block_get(s, &a, NULL, 0, &len), CS_ENOTFOUND);
	assert_int_equal(cs_block_delete(s, &a), CS_ENOTFOUND);
	assert_int_equal(cs_store_close(s), 0);

	s = open_ok(&o); /* the tombstone is replayed */
	assert_int_equal(cs_block_has(s, &a), 0);
	assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &a), 0);
	assert_int_equal(cs_store_close(s), 0);
	s = open_ok(&o); /* put after delete wins */
	expect_block(s, &a, buf, sizeof(buf));
	assert_int_equal(cs_store_close(s), 0);
}

static void test_buffer_sizes(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	uint8_t buf[100], small[10];
	cs_cid cid;
	size_t len = 0;

	tu_fill(buf, sizeof(buf), 3);
	assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid),
	                 0);
	assert_int_equal(cs_block_get(s, &cid, small, sizeof(small), &len), CS_EBUFSIZE);
	assert_int_equal(len, sizeof(buf));
	uint8_t out[100];
	assert_int_equal(cs_block_get(s, &cid, out, sizeof(out), &len), 0);
	assert_memory_equal(out, buf, sizeof(buf));
	assert_int_equal(cs_store_close(s), 0);
}

static void test_limits_and_bad_args(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	cs_cid cid;
	uint8_t *big = calloc(1, CS_BLOCK_MAX + 1);

	assert_int_equal(
	    cs_block_put(s, big, CS_BLOCK_MAX + 1, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid),
	    CS_ELIMIT);
	assert_true(strstr(cs_errmsg(), "limit") != NULL);
	/* The largest block is accepted and read back. */
	tu_fill(big, CS_BLOCK_MAX, 11);
	assert_int_equal(cs_block_put(s, big, CS_BLOCK_MAX, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid),
	                 0);
	expect_block(s, &cid, big, CS_BLOCK_MAX);
	assert_int_equal(cs_block_put(s, big, 10, CS_CODEC_RAW, 0x13 /* sha2-512 */, &cid),
	                 CS_EUNSUPPORTED);
	assert_int_equal(
	    cs_cid_parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk!", &cid),
	    CS_EINVAL);
	assert_true(cs_errmsg()[0] != '\0');
	assert_int_equal(cs_cid_parse("not a cid", &cid), CS_EINVAL);
	assert_int_equal(cs_cid_parse("", &cid), CS_EINVAL);
	assert_int_equal(cs_store_close(s), 0);
	free(big);
}

static void test_missing_dir(void **state)
{
	char path[600];
	cs_store *s;

	snprintf(path, sizeof(path), "%s/nope", dir);
	cs_options o = tu_opts();
	o.flags = 0;
	assert_int_equal(cs_store_open(path, &o, &s), -ENOENT);
	assert_true(strstr(cs_errmsg(), "nope") != NULL);
	assert_int_equal(cs_store_open(dir, &o, &s), -ENOENT); /* empty dir, no create */
	snprintf(path, sizeof(path), "%s/a/b", dir); /* parent missing, even with create */
	o.flags = CS_OPEN_CREATE;
	assert_int_equal(cs_store_open(path, &o, &s), -ENOENT);
	/* A file where the directory should be. */
	snprintf(path, sizeof(path), "%s/file", dir);
	FILE *f = fopen(path, "w");
	fclose(f);
	assert_int_equal(cs_store_open(path, &o, &s), -ENOTDIR);
}

static void test_not_writable(void **state)
{
	/* Root ignores permission bits, so the check runs as "nobody" in a child. */
	char path[600];
	snprintf(path, sizeof(path), "%s/ro", dir);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(mkdir(path, 0755), 0);
	pid_t pid = fork();
	if (pid == 0) {
		if (geteuid() == 0 && setuid(65534) != 0)
			_exit(10);
		cs_options o = tu_opts();
		cs_store *s;
		int rc = cs_store_open(path, &o, &s);
		_exit(rc == -EACCES && strstr(cs_errmsg(), "not writable") ? 0 : 1);
	}
	int status;
	waitpid(pid, &status, 0);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_locked(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o), *s2;
	char want[64];

	/* A second handle in this process. */
	assert_int_equal(cs_store_open(dir, &o, &s2), CS_EBUSY);
	snprintf(want, sizeof(want), "pid %d", (int)getpid());
	assert_true(strstr(cs_errmsg(), want) != NULL);
	assert_int_equal(cs_store_close(s), 0);

	/* Another process holds it; when it dies, the lock goes with it. */
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	if (pid == 0) {
		cs_store *cs;
		if (cs_store_open(dir, &o, &cs) != 0)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_int_equal(cs_store_open(dir, &o, &s2), CS_EBUSY);
	snprintf(want, sizeof(want), "pid %d", (int)pid);
	assert_true(strstr(cs_errmsg(), want) != NULL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	s = open_ok(&o);
	assert_int_equal(cs_store_close(s), 0);
	close(p[0]);
	close(p[1]);

	/* The LOCK file is overwritten in place, not emptied first: a longer pid left by an
	 * earlier holder is cut to the new one, so the message names exactly the holder. */
	char path[600], got[64];
	snprintf(path, sizeof(path), "%s/LOCK", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("123456789012345678901234\n", f);
	fclose(f);
	s = open_ok(&o);
	f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(got, 1, sizeof(got) - 1, f);
	fclose(f);
	got[n] = '\0';
	snprintf(want, sizeof(want), "%d\n", (int)getpid());
	assert_string_equal(got, want);
	assert_int_equal(cs_store_open(dir, &o, &s2), CS_EBUSY);
	snprintf(want, sizeof(want), "locked by pid %d", (int)getpid());
	assert_true(strstr(cs_errmsg(), want) != NULL);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_stray_and_foreign(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	uint8_t buf[64];
	cs_cid cid;
	char path[600];

	tu_fill(buf, sizeof(buf), 1);
	assert_int_equal(cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid),
	                 0);
	assert_int_equal(cs_store_close(s), 0);
	snprintf(path, sizeof(path), "%s/notes.txt", dir);
	FILE *f = fopen(path, "w");
	fputs("hello", f);
	fclose(f);
	s = open_ok(&o); /* a stray file is counted and left alone */
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.stray_files, 1);
	expect_block(s, &cid, buf, sizeof(buf));
	assert_int_equal(cs_store_close(s), 0);
	assert_int_equal(access(path, F_OK), 0);

	/* A non-empty directory that is not a store is refused and left untouched. */
	char other[280];
	snprintf(other, sizeof(other), "%s/other", dir);
	mkdir(other, 0700);
	snprintf(path, sizeof(path), "%s/data.bin", other);
	f = fopen(path, "w");
	fclose(f);
	assert_int_equal(cs_store_open(other, &o, &s), CS_ENOTSTORE);
	snprintf(path, sizeof(path), "%s/LOCK", other);
	assert_int_equal(access(path, F_OK), -1);
}

static void test_bad_meta_and_env(void **state)
{
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	char path[600];
	assert_int_equal(cs_store_close(s), 0);

	setenv("CIDSTORE_IO", "bogus", 1);
	assert_int_equal(cs_store_open(dir, &o, &s), CS_EINVAL);
	assert_true(strstr(cs_errmsg(), "bogus") != NULL);
	unsetenv("CIDSTORE_IO");

	snprintf(path, sizeof(path), "%s/CIDSTORE", dir);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "X", 1, 20), 1);
	close(fd);
	assert_int_equal(cs_store_open(dir, &o, &s), CS_ECORRUPT);
	assert_true(strstr(cs_errmsg(), "CIDSTORE") != NULL);

	o.batch_bytes = 1; /* bad options */
	assert_int_equal(cs_store_open(dir, &o, &s), CS_EINVAL);
}

struct mt_arg {
	cs_store *s;
	int id;
};

static void *mt_worker(void *p)
{
	struct mt_arg *a = p;
	uint8_t buf[20000];
	cs_cid cid;
	for (int i = 0; i < 150; i++) {
		uint64_t seed = (uint64_t)a->id << 32 | (uint64_t)i;
		size_t len = tu_len(seed, sizeof(buf));
		tu_fill(buf, len, seed);
		if (cs_block_put(a->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			return (void *)1;
		void *got;
		size_t n;
		if (cs_block_get_alloc(a->s, &cid, &got, &n) != 0 || n != len ||
		    memcmp(got, buf, len) != 0)
			return (void *)2;
		cs_free(got);
		if (i % 5 == 0 && cs_block_delete(a->s, &cid) != 0)
			return (void *)3;
	}
	return NULL;
}

static int count_cb(void *ctx, const cs_cid *cid)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

static void test_threads(void **state)
{
	enum { T = 8 };
	cs_options o = tu_opts();
	cs_store *s = open_ok(&o);
	pthread_t th[T];
	struct mt_arg args[T];

	for (int i = 0; i < T; i++) {
		args[i] = (struct mt_arg){s, i};
		pthread_create(&th[i], NULL, mt_worker, &args[i]);
	}
	for (int i = 0; i < T; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	uint64_t listed = 0;
	assert_int_equal(cs_block_list(s, count_cb, &listed), 0);
	assert_int_equal(listed, T * 120);
	assert_int_equal(cs_store_close(s), 0);
	s = open_ok(&o);
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.blocks, T * 120);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
}

/* The churn beside a cat: puts and deletes, adds that share leaves of the file (unpinned, so
 * their new leaves are garbage) and collections. */
struct churn {
	cs_store *s;
	const uint8_t *file; /* the pinned file's bytes (borrowed) */
	atomic_int done;     /* set when the churn ends */
	uint64_t compacted;  /* segments its collections compacted */
};

#define CAT_CHUNK  (256u * 1024u) /* the default chunk: one leaf */
#define CAT_LEAVES 24

static const char *churn_run(struct churn *c)
{
	static uint8_t blk[64 * 1024]; /* this thread's only */
	cs_cid cid, root;
	uint64_t size;
	cs_add *a;

	for (int i = 0; i < 200; i++) {
		tu_fill(blk, sizeof(blk), 5000 + (uint64_t)i);
		if (cs_block_put(c->s, blk, sizeof(blk), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			return "put";
		if (i % 2 == 0 && cs_block_delete(c->s, &cid) != 0)
			return "delete";
		if (i % 20 == 0) {
			if (cs_add_begin(c->s, NULL, &a) != 0)
				return "add";
			if (cs_add_write(a, c->file + 2 * CAT_CHUNK, 4 * CAT_CHUNK) != 0 ||
			    cs_add_write(a, blk, sizeof(blk)) != 0) {
				cs_add_abort(a);
				return "add write";
			}
			if (cs_add_finish(a, &root, &size) != 0)
				return "add finish";
		}
		cs_gc_stat st;
		if (i % 50 == 49) {
			if (cs_gc(c->s, &st) != 0)
				return "gc";
			c->compacted += st.segments_compacted;
		}
	}
	return NULL;
}

static void *churn_main(void *p)
{
	struct churn *c = p;
	const char *failed = churn_run(c);

	atomic_store(&c->done, 1); /* on every path: the reader waits for it */
	return (void *)failed;
}

/* cs_cat reads runs of leaves (store_get_many) while another thread puts, deletes, adds and
 * collects, each collection compacting: the file lies in a segment that is mostly garbage, so
 * a compaction moves its leaves and deletes the segment under the reads (C5 of compact.c).
 * Every read gives the pinned file's bytes (and, under TSan, no race). */
static void test_cat_concurrent(void **state)
{
	cs_options o = tu_opts();
	o.durability = CS_DURABLE_NONE;
	cs_store *s = open_ok(&o);
	size_t len = CAT_LEAVES * CAT_CHUNK - 777, got;
	uint8_t *file = malloc(len), *buf = malloc(len);
	cs_add *a;
	cs_cid root;
	uint64_t size;

	tu_fill(file, len, 4242);
	/* 10 MiB of garbage in front of the file, in its segment. */
	for (int i = 0; i < 40; i++) {
		cs_cid g;
		tu_fill(buf, CAT_CHUNK, 777 + (uint64_t)i);
		assert_int_equal(cs_block_put(s, buf, CAT_CHUNK, CS_CODEC_RAW, CS_HASH_SHA2_256, &g), 0);
		assert_int_equal(cs_block_delete(s, &g), 0);
	}
	assert_int_equal(cs_add_begin(s, NULL, &a), 0);
	assert_int_equal(cs_add_write(a, file, len), 0);
	assert_int_equal(cs_add_finish(a, &root, &size), 0);
	assert_int_equal(cs_pin_add(s, &root, CS_PIN_RECURSIVE), 0);

	struct churn c = {s, file, 0, 0};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, churn_main, &c), 0);
	/* Reads until the churn ends, so that its collections run under them. */
	for (int i = 0; i < 40 || !atomic_load(&c.done); i++) {
		size_t off = i % 2 ? 0 : (size_t)i * 100003 % len, n = len - off;
		assert_int_equal(cs_cat(s, &root, off, buf, n, &got, NULL), 0);
		assert_int_equal(got, n);
		assert_memory_equal(buf, file + off, n);
	}
	void *r;
	pthread_join(th, &r);
	if (r != NULL)
		fail_msg("churn thread: %s failed: %s", (const char *)r, cs_errmsg());
	assert_true(c.compacted > 0);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
	free(file);
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_empty_block_cid, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roundtrip_and_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dedup_and_delete, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_buffer_sizes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits_and_bad_args, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_writable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_locked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stray_and_foreign, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_meta_and_env, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cat_concurrent, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
