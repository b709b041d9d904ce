/*
 * test_stress.c - mixed operations from many threads, killed with SIGKILL and restarted, for
 * as long as asked; nothing acknowledged is lost and nothing unacknowledged half-appears.
 *
 * Each cycle forks a child that opens the store (sync mode, small segments so they rotate)
 * and runs THREADS threads of mixed operations on blocks and names only that thread uses:
 * puts of random sizes (1 byte to 1 MiB, most small), gets and has of its own acknowledged
 * blocks (checked in the child: present, byte-exact; a wrong answer exits the child with a
 * status the parent reports), deletes, and name sets (to one of its blocks) and name deletes.
 * Before each mutation the thread tells the parent its intent, after success its ack. The
 * parent kills the child at a random moment (10..400 ms after its open, one cycle in eight
 * counted from the fork so that some kills land in open and replay), reopens the store and
 * checks it against its model of acknowledged operations (tests/test_util.h for blocks; the
 * names here): an acknowledged put is present and exact, an acknowledged delete absent, an
 * acknowledged name set reads back its root and an acknowledged name delete is absent, an
 * operation in flight happened whole or not at all, the store holds no other block or name,
 * and verify is clean. The store carries over from cycle to cycle.
 *
 * Parameters, from the environment or argv (--threads N --seconds T --cycles C):
 *   CS_STRESS_THREADS  threads in the child (default 4, at most 16)
 *   CS_STRESS_SECONDS  stop starting cycles after this long (default 30)
 *   CS_STRESS_CYCLES   stop after this many cycles (default 0: no limit but the time)
 * It prints "stress: N cycles, M acknowledged operations checked, ...", and fails when no
 * operation was acknowledged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "test_util.h"

enum { MAX_THREADS = 16, NAMES = 8, MAX_BLOCK = 1 << 20, MINE = 1024 };
enum { OP_PUT = 1, OP_DEL = 2, OP_NSET = 3, OP_NDEL = 4, MSG_INTENT = 0x10, MSG_ACK = 0x20 };
enum { MSG_READS = 0x80 }; /* arg: reads the child checked since its last report (each 8) */

TU_TSAN_REPORT_AT_ONCE();

static int g_threads = 4, g_cycles = 0;
static double g_seconds = 30;

/* ---- the child ---------------------------------------------------------------------- */

struct child {
	const char *dir;
	cs_store *s;
	int fd;
	uint64_t cycle;
	pthread_mutex_t mu; /* one writer on the pipe at a time: a message is one write */
};

struct worker {
	struct child *c;
	uint32_t id;
};

static void say(struct child *c, uint32_t kind, uint32_t arg, uint64_t seed)
{
	pthread_mutex_lock(&c->mu);
	tu_send(c->fd, kind, arg, seed);
	pthread_mutex_unlock(&c->mu);
}

/* Most blocks up to 16 KiB, one in eight up to MAX_BLOCK: a function of the seed alone, so
 * the parent rebuilds the bytes. */
static size_t block_len(uint64_t seed)
{
	size_t len = tu_len(seed, MAX_BLOCK);
	return (seed >> 3) % 8 == 0 ? len : 1 + len % (16 << 10);
}

static void name_of(char *buf, size_t cap, uint32_t idx)
{
	snprintf(buf, cap, "stress/t%u/n%u", idx / NAMES, idx % NAMES);
}

static int cid_of(uint64_t seed, uint8_t *buf, cs_cid *cid)
{
	size_t len = block_len(seed);
	tu_fill(buf, len, seed);
	return cs_cid_compute(buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, cid);
}

static void *worker_main(void *p)
{
	struct worker *wk = p;
	struct child *c = wk->c;
	static _Thread_local uint8_t buf[MAX_BLOCK], got[MAX_BLOCK];
	uint64_t mine[MINE];
	int nmine = 0, nset[NAMES] = {0};
	uint32_t reads = 0;
	uint64_t x = c->cycle * 7919 + (uint64_t)wk->id * 104729 + 1;
	cs_cid cid;
	char name[64];

	for (uint64_t i = 0;; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned r = (unsigned)(x % 100);
		int k = nmine > 0 ? (int)((x >> 8) % (uint64_t)nmine) : -1;
		if (reads >= 8) {
			say(c, MSG_READS, reads, 0);
			reads = 0;
		}
		if (k >= 0 && r < 25) {
			/* get or has of a block this thread put and did not delete */
			size_t len = block_len(mine[k]), n;
			if (cid_of(mine[k], buf, &cid) != 0)
				_exit(4);
			if (r < 15) {
				if (cs_block_get(c->s, &cid, got, sizeof(got), &n) != 0 || n != len ||
				    memcmp(buf, got, len) != 0)
					_exit(10);
			} else if (cs_block_has(c->s, &cid) != 1) {
				_exit(11);
			}
			reads++;
		} else if (k >= 0 && r < 40) {
			uint64_t seed = mine[k];
			mine[k] = mine[--nmine];
			if (cid_of(seed, buf, &cid) != 0)
				_exit(4);
			say(c, MSG_INTENT | OP_DEL, 0, seed);
			if (cs_block_delete(c->s, &cid) != 0)
				_exit(5);
			say(c, MSG_ACK | OP_DEL, 0, seed);
		} else if (k >= 0 && r < 50) {
			uint32_t n = (uint32_t)((x >> 20) % NAMES), idx = wk->id * NAMES + n;
			name_of(name, sizeof(name), idx);
			if (cid_of(mine[k], buf, &cid) != 0)
				_exit(4);
			say(c, MSG_INTENT | OP_NSET, idx, mine[k]);
			if (cs_name_set(c->s, name, &cid, block_len(mine[k])) != 0)
				_exit(12);
			say(c, MSG_ACK | OP_NSET, idx, mine[k]);
			nset[n] = 1;
		} else if (r < 55) {
			uint32_t n = (uint32_t)((x >> 20) % NAMES), idx = wk->id * NAMES + n;
			if (!nset[n])
				continue;
			name_of(name, sizeof(name), idx);
			say(c, MSG_INTENT | OP_NDEL, idx, 0);
			if (cs_name_delete(c->s, name) != 0)
				_exit(13);
			say(c, MSG_ACK | OP_NDEL, idx, 0);
			nset[n] = 0;
		} else {
			uint64_t seed = c->cycle << 40 | (uint64_t)wk->id << 32 | i;
			size_t len = block_len(seed);
			tu_fill(buf, len, seed);
			say(c, MSG_INTENT | OP_PUT, 0, seed);
			if (cs_block_put(c->s, buf, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
				_exit(6);
			say(c, MSG_ACK | OP_PUT, 0, seed);
			if (nmine < MINE)
				mine[nmine++] = seed;
		}
	}
	return NULL;
}

static void run_child(void *ctx, int fd)
{
	struct child *c = ctx;
	pthread_t th[MAX_THREADS];
	struct worker ws[MAX_THREADS];
	cs_options o = tu_opts();

	c->fd = fd;
	pthread_mutex_init(&c->mu, NULL);
	if (cs_store_open(c->dir, &o, &c->s) != 0) {
		fprintf(stderr, "stress child: open: %s\n", cs_errmsg());
		_exit(2);
	}
	tu_send(fd, TU_MSG_OPEN, 0, 0);
	for (int i = 0; i < g_threads; i++) {
		ws[i] = (struct worker){c, (uint32_t)i};
		pthread_create(&th[i], NULL, worker_main, &ws[i]);
	}
	for (int i = 0; i < g_threads; i++)
		pthread_join(th[i], NULL);
	_exit(0);
}

/* ---- the parent ------------------------------------------------------------------- */

static struct tu_model model;

/* A name's model: the root seed after the last acknowledged operation (0: not set), and
 * the value an operation in flight would give it. */
static struct {
	uint64_t root, pending;
	int in_flight;
} names[MAX_THREADS * NAMES];

static uint64_t g_acks, g_reads;

static void on_msg(void *ctx, const struct tu_msg *m)
{
	uint32_t op = m->kind & 0xf, ack = (m->kind & MSG_ACK) != 0;

	if (m->kind == MSG_READS) {
		g_reads += m->arg;
		return;
	}
	g_acks += ack;
	if (op == OP_PUT || op == OP_DEL) {
		tu_model_note(&model, m->seed, (int)ack, op == OP_PUT);
		return;
	}
	if (m->arg >= MAX_THREADS * NAMES)
		fail_msg("name index %u out of range", m->arg);
	if (!ack) {
		names[m->arg].in_flight = 1;
		names[m->arg].pending = op == OP_NSET ? m->seed : 0;
	} else {
		names[m->arg].in_flight = 0;
		names[m->arg].root = op == OP_NSET ? m->seed : 0;
	}
}

static void check_names(cs_store *s, uint64_t *ambiguous)
{
	static uint8_t buf[MAX_BLOCK];
	uint64_t set = 0;
	char name[64];

	for (uint32_t i = 0; i < MAX_THREADS * NAMES; i++) {
		cs_cid root, want;
		uint64_t size;
		name_of(name, sizeof(name), i);
		int rc = cs_name_get(s, name, &root, &size, NULL);
		if (rc != 0 && rc != CS_ENOTFOUND)
			fail_msg("name %s: %s", name, cs_strerror(rc));
		uint64_t is = 0; /* the seed it holds, 0 when absent */
		if (rc == 0) {
			/* One of the values the model allows: the acknowledged or the pending. */
			uint64_t cand[2] = {names[i].root, names[i].in_flight ? names[i].pending : 0};
			for (int c = 0; c < 2 && is == 0; c++) {
				if (cand[c] == 0)
					continue;
				assert_int_equal(cid_of(cand[c], buf, &want), 0);
				if (root.len == want.len && memcmp(root.bytes, want.bytes, root.len) == 0 &&
				    size == block_len(cand[c]))
					is = cand[c];
			}
			if (is == 0)
				fail_msg("name %s holds a root the model never gave it", name);
		}
		if (!names[i].in_flight && is != names[i].root)
			fail_msg("name %s: acknowledged %s but %s after kill", name,
			         names[i].root ? "set" : "delete", is ? "set" : "absent");
		if (names[i].in_flight) {
			if (is != names[i].root && is != names[i].pending)
				fail_msg("name %s: neither its old nor its new value", name);
			(*ambiguous)++;
			names[i].in_flight = 0;
			names[i].root = is;
		}
		set += is != 0;
	}
	cs_stat st;
	cs_store_stat(s, &st);
	if (st.names != set)
		fail_msg("store holds %llu names, the model %llu", (unsigned long long)st.names,
		         (unsigned long long)set);
}

static void check_store(const char *dir, uint64_t *ambiguous)
{
	static uint8_t want[MAX_BLOCK], got[MAX_BLOCK];
	cs_options o = tu_opts();
	cs_store *s;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0)
		fail_msg("reopen after kill: %s: %s", cs_strerror(rc), cs_errmsg());
	const char *bad = tu_model_check(&model, s, MAX_BLOCK, block_len, want, got, ambiguous);
	if (bad != NULL)
		fail_msg("%s", bad);
	check_names(s, ambiguous);
	assert_int_equal(cs_store_close(s), 0);
}

static void test_stress(void **state)
{
	char dir[256];
	uint64_t ambiguous = 0, x = 4242;
	int cycles = 0;
	double t0 = tu_now();

	tu_tmpdir(dir, sizeof(dir), "stress");
	tu_model_init(&model, 1 << 21);
	while (tu_now() - t0 < g_seconds && (g_cycles == 0 || cycles < g_cycles)) {
		struct child c = {.dir = dir, .cycle = (uint64_t)cycles + 1};
		int status;
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double run_for = 0.010 + (double)(x % 390) / 1000.0;
		cycles++;
		if (tu_kill_round(run_child, on_msg, &c, run_for, cycles % 8 != 0, &status) != 0)
			fail_msg("cycle %d: the child ended otherwise than by SIGKILL (status 0x%x; "
			         "exit 10/11: a get/has of its own block failed; 66: a sanitizer "
			         "report, above)",
			         cycles, status);
		check_store(dir, &ambiguous);
	}
	printf("stress: %d cycles, %llu acknowledged operations checked, %llu reads checked in "
	       "the child, %llu in flight at a kill; %d threads, %.0f s\n",
	       cycles, (unsigned long long)g_acks, (unsigned long long)g_reads,
	       (unsigned long long)ambiguous, g_threads, tu_now() - t0);
	assert_true(g_acks > 0);
	free(model.t);
	tu_rmrf(dir);
}

int main(int argc, char **argv)
{
	const char *e;
	if ((e = getenv("CS_STRESS_THREADS")) != NULL)
		g_threads = atoi(e);
	if ((e = getenv("CS_STRESS_SECONDS")) != NULL)
		g_seconds = atof(e);
	if ((e = getenv("CS_STRESS_CYCLES")) != NULL)
		g_cycles = atoi(e);
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--threads") == 0)
			g_threads = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--seconds") == 0)
			g_seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--cycles") == 0)
			g_cycles = atoi(argv[i + 1]);
		else
			break;
	}
	if (g_threads < 1 || g_threads > MAX_THREADS || g_seconds <= 0 || g_cycles < 0) {
		fprintf(stderr, "stress: threads must be 1..%d, seconds > 0, cycles >= 0\n",
		        MAX_THREADS);
		return 2;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stress),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
