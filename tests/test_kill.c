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

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "test_util.h"

enum { THREADS = 4, MAX_BLOCK = 96 << 10 };
enum { OP_PUT = 1, OP_DEL = 2, MSG_INTENT = 0x10, MSG_ACK = 0x20, MSG_OPEN = 0x40 };

struct msg {
	uint32_t kind; /* MSG_INTENT or MSG_ACK, or'ed with OP_* */
	uint32_t pad;
	uint64_t seed;
};

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

static void send_msg(int fd, uint32_t kind, uint64_t seed)
{
	struct msg m = {kind, 0, seed};
	if (write(fd, &m, sizeof(m)) != sizeof(m))
		_exit(3);
}

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
			send_msg(c->fd, MSG_INTENT | OP_DEL, seed);
			if (cs_block_delete(c->s, &cid) != 0)
				_exit(5);
			send_msg(c->fd, MSG_ACK | OP_DEL, seed);
			continue;
		}
		uint64_t seed = c->round << 40 | (uint64_t)t->id << 32 | i;
		size_t len = tu_len(seed, MAX_BLOCK);
		tu_fill(buf, len, seed);
		cs_cid cid;
		send_msg(c->fd, MSG_INTENT | OP_PUT, seed);
		if (cs_block_put(c->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			_exit(6);
		send_msg(c->fd, MSG_ACK | OP_PUT, seed);
		if (nmine < 4096)
			mine[nmine++] = seed;
	}
	return NULL;
}

static void run_child(const char *dir, int fd, uint64_t round)
{
	cs_options o = tu_opts();
	struct child c = {NULL, fd, round};
	pthread_t th[THREADS];
	struct child_thread ts[THREADS];

	if (cs_store_open(dir, &o, &c.s) != 0) {
		fprintf(stderr, "child open: %s\n", cs_errmsg());
		_exit(2);
	}
	send_msg(fd, MSG_OPEN, 0);
	for (int i = 0; i < THREADS; i++) {
		ts[i] = (struct child_thread){&c, i};
		pthread_create(&th[i], NULL, child_worker, &ts[i]);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	_exit(0);
}

/* ---- the parent's model ------------------------------------------------------------- */

enum state { ABSENT = 0, PRESENT = 1 };

struct entry {
	uint64_t seed;     /* 0: empty slot (seeds are never 0: round starts at 1) */
	uint8_t state;     /* after the last acknowledged operation */
	uint8_t in_flight; /* an intent after the last ack */
	uint8_t used;
};

static struct entry *table;
static size_t table_cap = 1 << 20;

static struct entry *find(uint64_t seed)
{
	size_t i = (size_t)(seed * 0x9e3779b97f4a7c15ull) & (table_cap - 1);
	while (table[i].used && table[i].seed != seed)
		i = (i + 1) & (table_cap - 1);
	if (!table[i].used) {
		table[i].used = 1;
		table[i].seed = seed;
	}
	return &table[i];
}

static void apply_msg(const struct msg *m)
{
	struct entry *e = find(m->seed);
	if (m->kind & MSG_INTENT) {
		e->in_flight = 1;
	} else {
		e->in_flight = 0;
		e->state = (m->kind & OP_PUT) ? PRESENT : ABSENT;
	}
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads messages until the deadline, kills the child, drains what is left. The deadline
 * counts from the child's open when after_open is set, else from the fork: on a loaded
 * machine an open (replay, fsyncs) can take longer than the whole run time, and rounds that
 * kill only opens would check nothing but replay. */
static uint64_t run_round(const char *dir, uint64_t round, double run_for, int after_open)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		run_child(dir, p[1], round);
	}
	close(p[1]);
	struct msg m;
	size_t have = 0;
	uint64_t acks = 0;
	/* Waiting for the open is bounded too: a child that cannot open within a minute is
	 * killed, and the check that follows reports the store's state. */
	double deadline = now() + (after_open ? 60.0 : run_for);
	int killed = 0;
	for (;;) {
		if (!killed && now() >= deadline) {
			kill(pid, SIGKILL);
			killed = 1;
		}
		struct pollfd pf = {p[0], POLLIN, 0};
		int ms = killed ? 1000 : (int)((deadline - now()) * 1000) + 1;
		if (poll(&pf, 1, ms) <= 0)
			continue;
		ssize_t n = read(p[0], (uint8_t *)&m + have, sizeof(m) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(m)) {
			if (m.kind == MSG_OPEN) {
				if (after_open && !killed)
					deadline = now() + run_for;
			} else {
				apply_msg(&m);
				acks += (m.kind & MSG_ACK) != 0;
			}
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
	uint64_t present = 0;
	for (size_t i = 0; i < table_cap; i++) {
		struct entry *e = &table[i];
		if (!e->used)
			continue;
		size_t len = tu_len(e->seed, MAX_BLOCK), n;
		tu_fill(want, len, e->seed);
		cs_cid cid;
		assert_int_equal(cs_cid_compute(want, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid),
		                 0);
		rc = cs_block_get(s, &cid, got, sizeof(got), &n);
		if (rc != 0 && rc != CS_ENOTFOUND)
			fail_msg("get seed %llx: %s: %s", (unsigned long long)e->seed,
			         cs_strerror(rc), cs_errmsg());
		int is = rc == 0;
		if (is && (n != len || memcmp(want, got, len) != 0))
			fail_msg("seed %llx: wrong bytes", (unsigned long long)e->seed);
		if (!e->in_flight && is != (e->state == PRESENT))
			fail_msg("seed %llx: acknowledged %s but %s after kill",
			         (unsigned long long)e->seed, e->state ? "put" : "delete",
			         is ? "present" : "absent");
		if (e->in_flight) {
			(*ambiguous)++;
			e->in_flight = 0;
			e->state = is ? PRESENT : ABSENT;
		}
		present += (uint64_t)is;
	}
	cs_stat st;
	cs_store_stat(s, &st);
	if (st.blocks != present)
		fail_msg("store holds %llu blocks, the model %llu: something half-appeared",
		         (unsigned long long)st.blocks, (unsigned long long)present);
	uint64_t checked, failed;
	rc = cs_store_verify(s, NULL, NULL, &checked, &failed);
	if (rc != 0)
		fail_msg("verify: %llu of %llu failed", (unsigned long long)failed,
		         (unsigned long long)checked);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_kill_rounds(void **state)
{
	char dir[256];
	const char *env = getenv("CS_KILL_ROUNDS");
	int rounds = env ? atoi(env) : 100;
	uint64_t acks = 0, ambiguous = 0, x = 12345;

	tu_tmpdir(dir, sizeof(dir), "kill");
	table = calloc(table_cap, sizeof(*table));
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
	free(table);
	tu_rmrf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill_rounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
