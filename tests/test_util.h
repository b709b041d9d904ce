/*
 * test_util.h - helpers shared by the store-level tests: temporary directories, seeded
 * block contents, running a command and copying a store.
 */
#ifndef CS_TEST_UTIL_H
#define CS_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cidstore.h"

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path into buf. */
static inline void tu_tmpdir(char *buf, size_t cap, const char *tag)
{
	const char *t = getenv("TMPDIR");
	snprintf(buf, cap, "%s/cs-%s-XXXXXX", t && t[0] ? t : "/tmp", tag);
	if (mkdtemp(buf) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

/* Removes a directory tree (one level of files, plus nested copies made by tu_copy_dir). */
static inline void tu_rmrf(const char *path)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", path);
}

static inline void tu_copy_dir(const char *from, const char *to)
{
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
	if (system(cmd) != 0) {
		fprintf(stderr, "copy %s -> %s failed\n", from, to);
		abort();
	}
}

/* The bytes of the hex dump between docs/FORMAT.md's "<!-- TAG-begin -->" and
 * "<!-- TAG-end -->" markers, lines "OFFSET  HEX HEX ...  |ascii|" and, as hexdump -C
 * writes them, "*" for repeats of the line before up to the next line's offset, into out
 * (cap bytes); returns how many. Aborts, naming the line, on a missing file or marker, offsets that are
 * not contiguous, a malformed byte or more than cap bytes. */
static inline size_t tu_format_example(const char *tag, uint8_t *out, size_t cap)
{
	char path[512], line[256], begin[64], end_[64];
	size_t n = 0;
	int inside = 0, repeat = 0;

	snprintf(begin, sizeof(begin), "<!-- %s-begin -->", tag);
	snprintf(end_, sizeof(end_), "<!-- %s-end -->", tag);
	snprintf(path, sizeof(path), "%s/docs/FORMAT.md", CS_TEST_SRCDIR);
	FILE *fp = fopen(path, "r");
	if (fp == NULL) {
		perror(path);
		abort();
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strncmp(line, begin, strlen(begin)) == 0) {
			inside = 1;
			continue;
		}
		if (strncmp(line, end_, strlen(end_)) == 0)
			break;
		if (!inside || line[0] == '`')
			continue;
		if (line[0] == '*') { /* hexdump -C: the line before repeats up to the next */
			repeat = 1;
			continue;
		}
		char *p = line, *end;
		unsigned long at = strtoul(p, &end, 16);
		/* Bounded by at <= cap; each pass adds 16 bytes. */
		for (; repeat && n >= 16 && n % 16 == 0 && at > n && at <= cap; n += 16)
			memcpy(out + n, out + n - 16, 16);
		repeat = 0;
		int ok = end == p + 8 && at == n; /* offsets are contiguous */
		for (p = end; ok;) {
			while (*p == ' ')
				p++;
			if (*p == '|' || *p == '\n' || *p == '\0')
				break;
			unsigned v;
			int used;
			ok = sscanf(p, "%2x%n", &v, &used) == 1 && used == 2 && n < cap;
			if (ok)
				out[n++] = (uint8_t)v;
			p += 2;
		}
		if (!ok) {
			fprintf(stderr, "%s: bad line in %s: %s", path, tag, line);
			abort();
		}
	}
	fclose(fp);
	if (!inside) {
		fprintf(stderr, "%s: no %s marker\n", path, begin);
		abort();
	}
	return n;
}

/* Fills buf with len bytes determined by seed (xorshift64). */
static inline void tu_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		buf[i] = (uint8_t)(x >> (8 * (i & 7)));
	}
}

/* A block length in [1, max] determined by seed. */
static inline size_t tu_len(uint64_t seed, size_t max)
{
	return 1 + (size_t)((seed * 0x2545f4914f6cdd1dull) >> 33) % max;
}

/* Default options for tests: create, small segments so rotation happens, the smallest
 * batch. */
static inline cs_options tu_opts(void)
{
	cs_options o;
	cs_options_init(&o);
	o.flags = CS_OPEN_CREATE;
	o.segment_bytes = 16u << 20;
	o.batch_bytes = 6u << 20;
	return o;
}

/* Removes the store's checkpoint, so that the next open replays the whole log: for tests of
 * the log's own rules. Returns 1 if there was one, 0 if not. */
static inline int tu_drop_checkpoint(const char *dir)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/checkpoint", dir);
	if (unlink(path) == 0)
		return 1;
	if (errno != ENOENT) {
		perror("unlink checkpoint");
		abort();
	}
	return 0;
}

/* Path of the highest-numbered segment file in dir, or -1 if none. */
static inline int tu_last_segment(const char *dir, char *path, size_t cap)
{
	DIR *d = opendir(dir);
	char best[256] = "";
	struct dirent *e;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n == 12 && strcmp(e->d_name + 8, ".seg") == 0 && strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	if (best[0] == '\0')
		return -1;
	snprintf(path, cap, "%s/%s", dir, best);
	return 0;
}

/* ---- Kill rounds: a child works and reports, the parent kills it and checks a model ---- */

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

/* A message from the child to the parent over a pipe: an intent before an operation, an
 * ack after it returned success. kind is the test's own (TU_MSG_OPEN is reserved). */
struct tu_msg {
	uint32_t kind;
	uint32_t arg;  /* the test's own, e.g. a name's index */
	uint64_t seed; /* the block the operation is about */
};

#define TU_MSG_OPEN 0x40u /* the child opened the store: the round's clock starts */

static inline double tu_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sends one message; a child that cannot report exits (the parent sees a wrong status). */
static inline void tu_send(int fd, uint32_t kind, uint32_t arg, uint64_t seed)
{
	struct tu_msg m = {kind, arg, seed};
	if (write(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		_exit(3);
}

/*
 * For a test whose children are killed (tu_kill_round): under TSan, a race report in a child
 * was lost, since symbolizing its stacks takes longer than a round and the kill came first.
 * Unsymbolized, it is printed at once and the child exits with 66 (halt_on_error), which
 * fails the round. Read its frames (module+offset) with addr2line, or rerun with
 * TSAN_OPTIONS=symbolize=1 and a short run. Expands to nothing without TSan; use it once,
 * at file scope.
 */
#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TU_TSAN 1
#endif
#endif
#ifdef TU_TSAN
#define TU_TSAN_REPORT_AT_ONCE()                                                                   \
	const char *__tsan_default_options(void);                                                  \
	const char *__tsan_default_options(void)                                                   \
	{                                                                                          \
		return "symbolize=0";                                                              \
	}                                                                                          \
	_Static_assert(1, "")
#else
#define TU_TSAN_REPORT_AT_ONCE() _Static_assert(1, "")
#endif

/*
 * Forks a child that runs child(ctx, fd) (which must not return: it works until killed),
 * hands every message but TU_MSG_OPEN to on_msg(ctx, msg), and kills the child with SIGKILL
 * run_for seconds after its open message when after_open is set, else after the fork (on a
 * loaded machine an open can take longer than a whole round; waiting for the open is
 * bounded by a minute). Drains the pipe, reaps the child, and returns 0, or -1 with *status
 * set when the child ended otherwise than by SIGKILL.
 */
static inline int tu_kill_round(void (*child)(void *ctx, int fd), void (*on_msg)(void *ctx,
                                const struct tu_msg *m), void *ctx, double run_for,
                                int after_open, int *status)
{
	int p[2];
	if (pipe(p) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(p[0]);
		child(ctx, p[1]);
		_exit(9);
	}
	close(p[1]);
	struct tu_msg m;
	size_t have = 0;
	double deadline = tu_now() + (after_open ? 60.0 : run_for);
	int killed = 0;
	for (;;) {
		if (!killed && tu_now() >= deadline) {
			kill(pid, SIGKILL);
			killed = 1;
		}
		struct pollfd pf = {p[0], POLLIN, 0};
		int ms = killed ? 1000 : (int)((deadline - tu_now()) * 1000) + 1;
		if (poll(&pf, 1, ms) <= 0)
			continue;
		ssize_t n = read(p[0], (uint8_t *)&m + have, sizeof(m) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		if (have == sizeof(m)) {
			if (m.kind == TU_MSG_OPEN) {
				if (after_open && !killed)
					deadline = tu_now() + run_for;
			} else {
				on_msg(ctx, &m);
			}
			have = 0;
		}
	}
	close(p[0]);
	waitpid(pid, status, 0);
	return WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL ? 0 : -1;
}

/* The parent's model of blocks: for each seed, its state after the last acknowledged
 * operation and whether an operation on it was in flight at the kill. */
struct tu_entry {
	uint64_t seed;     /* never 0 */
	uint8_t present;   /* after the last acknowledged operation */
	uint8_t in_flight; /* an intent after the last ack */
	uint8_t used;
};

struct tu_model {
	struct tu_entry *t; /* owned; cap slots, a power of two */
	size_t cap;
};

static inline void tu_model_init(struct tu_model *m, size_t cap)
{
	m->cap = cap;
	m->t = calloc(cap, sizeof(*m->t));
	if (m->t == NULL)
		abort();
}

static inline struct tu_entry *tu_model_find(struct tu_model *m, uint64_t seed)
{
	size_t i = (size_t)(seed * 0x9e3779b97f4a7c15ull) & (m->cap - 1);
	/* Bounded: the table is never filled (callers size it for their rounds). */
	while (m->t[i].used && m->t[i].seed != seed)
		i = (i + 1) & (m->cap - 1);
	if (!m->t[i].used) {
		m->t[i].used = 1;
		m->t[i].seed = seed;
	}
	return &m->t[i];
}

/* Records an intent (ack = 0) or an acknowledgement of a put (present = 1) or delete. */
static inline void tu_model_note(struct tu_model *m, uint64_t seed, int ack, int present)
{
	struct tu_entry *e = tu_model_find(m, seed);
	if (!ack) {
		e->in_flight = 1;
	} else {
		e->in_flight = 0;
		e->present = (uint8_t)present;
	}
}

/*
 * Checks the open store s against the model: every block whose last acknowledged
 * operation was a put is present and byte-exact (its bytes are tu_fill(seed) of
 * len_of(seed) bytes, or of tu_len(seed, max_len) with len_of NULL), every acknowledged delete absent, a block in flight either way
 * but exact; settles in-flight entries to what the store holds, and checks that the store
 * holds no other block and verifies clean. buf and want hold max_len bytes. Returns a
 * message for the first mismatch (static storage), or NULL; adds to *ambiguous the entries
 * that were in flight.
 */
static inline const char *tu_model_check(struct tu_model *m, cs_store *s, size_t max_len,
                                         size_t (*len_of)(uint64_t seed), uint8_t *want,
                                         uint8_t *got, uint64_t *ambiguous)
{
	static char msg[300];
	uint64_t present = 0;
	for (size_t i = 0; i < m->cap; i++) {
		struct tu_entry *e = &m->t[i];
		if (!e->used)
			continue;
		size_t len = len_of != NULL ? len_of(e->seed) : tu_len(e->seed, max_len), n;
		tu_fill(want, len, e->seed);
		cs_cid cid;
		if (cs_cid_compute(want, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid) != 0)
			return "cs_cid_compute failed";
		int rc = cs_block_get(s, &cid, got, max_len, &n);
		if (rc != 0 && rc != CS_ENOTFOUND) {
			snprintf(msg, sizeof(msg), "get seed %llx: %s: %s",
			         (unsigned long long)e->seed, cs_strerror(rc), cs_errmsg());
			return msg;
		}
		int is = rc == 0;
		if (is && (n != len || memcmp(want, got, len) != 0)) {
			snprintf(msg, sizeof(msg), "seed %llx: wrong bytes", (unsigned long long)e->seed);
			return msg;
		}
		if (!e->in_flight && is != e->present) {
			snprintf(msg, sizeof(msg), "seed %llx: acknowledged %s but %s after kill",
			         (unsigned long long)e->seed, e->present ? "put" : "delete",
			         is ? "present" : "absent");
			return msg;
		}
		if (e->in_flight) {
			(*ambiguous)++;
			e->in_flight = 0;
			e->present = (uint8_t)is;
		}
		present += (uint64_t)is;
	}
	cs_stat st;
	cs_store_stat(s, &st);
	if (st.blocks != present) {
		snprintf(msg, sizeof(msg),
		         "store holds %llu blocks, the model %llu: something half-appeared",
		         (unsigned long long)st.blocks, (unsigned long long)present);
		return msg;
	}
	uint64_t checked, failed;
	if (cs_store_verify(s, NULL, NULL, &checked, &failed) != 0) {
		snprintf(msg, sizeof(msg), "verify: %llu of %llu failed", (unsigned long long)failed,
		         (unsigned long long)checked);
		return msg;
	}
	return NULL;
}

#endif
