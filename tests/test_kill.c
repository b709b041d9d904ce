/*
 * test_kill.c - kill -9 at random moments loses no acknowledged write.
 *
 * Each round forks a child that opens the store in sync mode and runs four threads of puts
 * and deletes. Before each operation a thread tells the parent over a pipe what it is about
 * to do (intent), and after the call returns success, that it is done (ack). The parent
 * kills the child with SIGKILL at a random moment, reopens the store and checks it against
 * its model of the acknowledged operations:
 *   - a block whose last acknowledged operation is a put (and no later intent) is present,
 *     byte-exact;
 *   - one whose last acknowledged operation is a delete (and no later intent) is absent;
 *   - an operation in flight may or may not have happened, but a present block is exact;
 *   - the store holds no block the model does not know (nothing half-appears), and verify
 *     re-hashes every block clean.
 * The store carries over from round to round, so replay runs over a growing log with
 * segment rotations. CS_KILL_ROUNDS overrides the number of rounds (default 100).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_util.h"

TU_TSAN_REPORT_AT_ONCE();

enum { THREADS = 4, MAX_BLOCK = 96 << 10 };
enum { OP_PUT = 1, OP_DEL = 2, MSG_INTENT = 0x10, MSG_ACK = 0x20 };

/* ---- the child ---------------------------------------------------------------------- */

struct child {
	cs_store *s;
	int fd;
	uint64_t round;
};

struct child_thread {
	struct child *c;
	int id;
};

static void *child_worker(void *p)
{
	struct child_thread *t = p;
	struct child *c = t->c;
	static _Thread_local uint8_t buf[MAX_BLOCK];
	uint64_t mine[4096];
	int nmine = 0;
	uint64_t x = c->round * 7919 + (uint64_t)t->id * 104729 + 1;

	for (uint64_t i = 0;; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		if (nmine > 0 && x % 6 == 0) {
			int k = (int)(x / 6 % (uint64_t)nmine);
			uint64_t seed = mine[k];
			mine[k] = mine[--nmine];
			size_t len = tu_len(seed, MAX_BLOCK);
			tu_fill(buf, len, seed);
			cs_cid cid;
			if (cs_cid_compute(buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
				_exit(4);
			tu_send(c->fd, MSG_INTENT | OP_DEL, 0, seed);
			if (cs_block_delete(c->s, &cid) != 0)
				_exit(5);
			tu_send(c->fd, MSG_ACK | OP_DEL, 0, seed);
			continue;
		}
		uint64_t seed = c->round << 40 | (uint64_t)t->id << 32 | i;
		size_t len = tu_len(seed, MAX_BLOCK);
		tu_fill(buf, len, seed);
		cs_cid cid;
		tu_send(c->fd, MSG_INTENT | OP_PUT, 0, seed);
		if (cs_block_put(c->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			_exit(6);
		tu_send(c->fd, MSG_ACK | OP_PUT, 0, seed);
		if (nmine < 4096)
			mine[nmine++] = seed;
	}
	return NULL;
}

struct round {
	const char *dir;
	uint64_t round;
	uint64_t acks;
};

static void run_child(void *ctx, int fd)
{
	struct round *rd = ctx;
	const char *dir = rd->dir;
	cs_options o = tu_opts();
	struct child c = {NULL, fd, rd->round};
	pthread_t th[THREADS];
	struct child_thread ts[THREADS];

	if (cs_store_open(dir, &o, &c.s) != 0) {
		fprintf(stderr, "child open: %s\n", cs_errmsg());
		_exit(2);
	}
	tu_send(fd, TU_MSG_OPEN, 0, 0);
	for (int i = 0; i < THREADS; i++) {
		ts[i] = (struct child_thread){&c, i};
		pthread_create(&th[i], NULL, child_worker, &ts[i]);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	_exit(0);
}

/* ---- the parent ------------------------------------------------------------------ */

static struct tu_model model;

static void on_msg(void *ctx, const struct tu_msg *m)
{
	struct round *rd = ctx;
	tu_model_note(&model, m->seed, (m->kind & MSG_ACK) != 0, (m->kind & OP_PUT) != 0);
	rd->acks += (m->kind & MSG_ACK) != 0;
}

/* Runs the child until the deadline (counted from its open when after_open is set, else
 * from the fork: rounds that kill only opens would check nothing but replay), kills it,
 * and returns the acknowledgements it sent. */
static uint64_t run_round(const char *dir, uint64_t round, double run_for, int after_open)
{
	struct round rd = {dir, round, 0};
	int status;
	if (tu_kill_round(run_child, on_msg, &rd, run_for, after_open, &status) != 0)
		fail_msg("child ended otherwise than by SIGKILL (status 0x%x)", status);
	return rd.acks;
}

/* Reopens the store and checks it against the model; settles in-flight entries to what
 * the store now holds. */
static void check_store(const char *dir, uint64_t *ambiguous)
{
	cs_options o = tu_opts();
	cs_store *s;
	static uint8_t want[MAX_BLOCK], got[MAX_BLOCK];
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0)
		fail_msg("reopen after kill: %s: %s", cs_strerror(rc), cs_errmsg());
	const char *bad = tu_model_check(&model, s, MAX_BLOCK, NULL, want, got, ambiguous);
	if (bad != NULL)
		fail_msg("%s", bad);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_kill_rounds(void **state)
{
	char dir[256];
	const char *env = getenv("CS_KILL_ROUNDS");
	int rounds = env ? atoi(env) : 100;
	uint64_t acks = 0, ambiguous = 0, x = 12345;

	tu_tmpdir(dir, sizeof(dir), "kill");
	tu_model_init(&model, 1 << 20);
	for (int r = 1; r <= rounds; r++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		/* 1..120 ms after the child's open, and in one round of eight counted from the
		 * fork instead, so that some kills land in open and replay. */
		double run_for = 0.001 + (double)(x % 120) / 1000.0;
		acks += run_round(dir, (uint64_t)r, run_for, r % 8 != 0);
		check_store(dir, &ambiguous);
	}
	printf("kill test: %d rounds, %llu acknowledged operations checked, %llu in flight "
	       "at a kill\n",
	       rounds, (unsigned long long)acks, (unsigned long long)ambiguous);
	assert_true(acks > 0);
	free(model.t);
	tu_rmrf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill_rounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
