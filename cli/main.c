/*
 * main.c - the cidstore command-line tool. Uses only the public header.
 *
 * Every failure prints one line on stderr starting "cidstore:" and exits with a code from
 * the table in usage(): scripts can tell "absent" from "bad input" from "store locked".
 *
 * Invariants:
 *  1. add has cs_add_path / cs_add_finish set the name (and with --pin the pin, in the same
 *     commit) once the whole DAG is durable: a name never points at a partial DAG, and a
 *     crash never leaves a name without its pin.
 *  2. Bad input that can be seen before the store is touched (a missing or unreadable path,
 *     a directory without -r, a bad name, a bad option) is refused before the store opens.
 *  3. cat checks the structure of the wanted range (cs_file_check) before it writes a byte,
 *     so a missing block or sizes that disagree give an error and no partial output.
 *  4. Progress goes to stderr only, only when stderr is a terminal and once an add has run
 *     for more than a second; stdout carries only results.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cidstore.h"

enum exit_code {
	EXIT_OK = 0,
	EXIT_NOTFOUND = 1, /* absent block or name (has, get, rm, cat, name rm) */
	EXIT_USAGE = 2,    /* usage error or bad input: CID text, option, limit */
	EXIT_BUSY = 3,     /* the store is locked by another process */
	EXIT_CORRUPT = 4,  /* corruption found (open, get, verify) */
	EXIT_NOTSTORE = 5, /* not a store, or a newer format */
	EXIT_IO = 6,       /* I/O or system error, full disk, poisoned store */
	EXIT_PINNED = 7,   /* the block is held by a pin (block rm) */
};

static const char *const exit_table =
    "exit codes:\n"
    "  0  success\n"
    "  1  not found (has: absent; a block or name that is not in the store)\n"
    "  2  usage error or bad input (CID text, option, name, limit, not a file)\n"
    "  3  store locked by another process\n"
    "  4  corruption found\n"
    "  5  not a cidstore directory, or written by a newer version\n"
    "  6  I/O or system error (disk full, permission, failed sync)\n"
    "  7  the block is held by a pin (block rm)\n";

static int exit_for(int code)
{
	switch (code) {
	case 0:
		return EXIT_OK;
	case CS_ENOTFOUND:
		return EXIT_NOTFOUND;
	case CS_EINVAL:
	case CS_ELIMIT:
	case CS_EUNSUPPORTED:
	case CS_EBUFSIZE:
		return EXIT_USAGE;
	case CS_EBUSY:
		return EXIT_BUSY;
	case CS_EPINNED:
		return EXIT_PINNED;
	case CS_ECORRUPT:
		return EXIT_CORRUPT;
	case CS_ENOTSTORE:
	case CS_EVERSION:
		return EXIT_NOTSTORE;
	default:
		return EXIT_IO;
	}
}

/* Prints "cidstore: what: detail" and returns the exit code for code. */
static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int code, const char *fmt, ...)
{
	va_list ap;
	const char *detail = cs_errmsg();

	fputs("cidstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (detail[0] != '\0')
		fprintf(stderr, ": %s\n", detail);
	else
		fprintf(stderr, ": %s\n", cs_strerror(code));
	return exit_for(code);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("cidstore: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see --help)\n", stderr);
	return EXIT_USAGE;
}

static void log_stderr(void *ctx, int level, const char *msg)
{
	(void)ctx;
	fprintf(stderr, "cidstore: %s%s\n", level >= CS_LOG_WARN ? "warning: " : "", msg);
}

/* ---- global state ---------------------------------------------------------------- */

struct cli {
	const char *dir;
	cs_options opts;
	cs_store *store;
};

static int default_dir(char *buf, size_t cap)
{
	const char *env = getenv("CIDSTORE_DIR");
	if (env != NULL && env[0] != '\0')
		return snprintf(buf, cap, "%s", env) < (int)cap ? 0 : -1;
	env = getenv("XDG_DATA_HOME");
	if (env != NULL && env[0] != '\0')
		return snprintf(buf, cap, "%s/cidstore", env) < (int)cap ? 0 : -1;
	env = getenv("HOME");
	if (env == NULL || env[0] == '\0')
		return -1;
	/* Make $HOME/.local/share so the store directory itself can be created. */
	char parent[4096];
	snprintf(parent, sizeof(parent), "%s/.local", env);
	mkdir(parent, 0700);
	snprintf(parent, sizeof(parent), "%s/.local/share", env);
	mkdir(parent, 0700);
	return snprintf(buf, cap, "%s/.local/share/cidstore", env) < (int)cap ? 0 : -1;
}

static int open_store(struct cli *c)
{
	int rc = cs_store_open(c->dir, &c->opts, &c->store);
	if (rc != 0)
		return fail(rc, "cannot open store %s", c->dir);
	return 0;
}

static int close_store(struct cli *c, int status)
{
	if (c->store == NULL)
		return status;
	int rc = cs_store_close(c->store);
	c->store = NULL;
	if (rc != 0 && status == 0)
		return fail(rc, "closing the store failed");
	return status;
}

static int parse_cid(const char *text, cs_cid *cid)
{
	int rc = cs_cid_parse(text, cid);
	if (rc != 0)
		return fail(rc, "bad CID '%s'", text);
	return 0;
}

static int print_cid(const cs_cid *cid, FILE *out)
{
	char text[CS_CID_TEXT_MAX];
	int rc = cs_cid_format(cid, text, sizeof(text));
	if (rc < 0)
		return fail(rc, "cannot format CID");
	fprintf(out, "%s\n", text);
	return 0;
}

static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	return 0;
}

/* Handles --help and a wrong argument count for a command with fixed arguments. Returns -1
 * to go on, else the exit code. */
static int check_args(int argc, char **argv, int want, const char *text)
{
	if (wants_help(argc, argv)) {
		puts(text);
		return 0;
	}
	if (argc != want) {
		fprintf(stderr, "cidstore: %s takes %d argument%s\n%s\n", argv[0], want - 1,
		        want == 2 ? "" : "s", text);
		return EXIT_USAGE;
	}
	return -1;
}

/* Reads all of fd into a malloc'd buffer of at most limit+1 bytes (so an over-limit input is
 * seen as such without reading it all). */
static int read_input(int fd, size_t limit, uint8_t **out, size_t *len)
{
	size_t cap = 1 << 16, n = 0;
	uint8_t *buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	for (;;) {
		if (n == cap) {
			if (cap > limit) {
				break;
			}
			uint8_t *nb = realloc(buf, cap * 2);
			if (nb == NULL) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;
			free(buf);
			return err;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* ---- commands ------------------------------------------------------------------------ */

static int cmd_block_put(struct cli *c, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"codec", required_argument, 0, 'c'},
	    {"hash", required_argument, 0, 'H'},
	    {0, 0, 0, 0},
	};
	uint64_t codec = CS_CODEC_RAW, hash = CS_HASH_SHA2_256;
	int o;

	if (wants_help(argc, argv)) {
		puts("usage: cidstore block put [--codec raw|dag-pb] [--hash sha2-256|blake2b-256]"
		     " [FILE|-]\n  Stores FILE (or stdin) as one block (at most 4 MiB) and prints "
		     "its CIDv1.");
		return 0;
	}
	optind = 0; /* GNU getopt: full reset for a second parse */
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (o == 'c' && strcmp(optarg, "raw") == 0)
			codec = CS_CODEC_RAW;
		else if (o == 'c' && strcmp(optarg, "dag-pb") == 0)
			codec = CS_CODEC_DAG_PB;
		else if (o == 'H' && strcmp(optarg, "sha2-256") == 0)
			hash = CS_HASH_SHA2_256;
		else if (o == 'H' && strcmp(optarg, "blake2b-256") == 0)
			hash = CS_HASH_BLAKE2B_256;
		else if (o == 'c' || o == 'H')
			return usage_error("unknown %s '%s'", o == 'c' ? "codec" : "hash", optarg);
		else
			return usage_error("block put: unknown option");
	}
	if (argc - optind > 1)
		return usage_error("block put takes one FILE");
	const char *path = optind < argc ? argv[optind] : "-";
	int fd = 0;
	if (strcmp(path, "-") != 0) {
		struct stat st;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "cidstore: cannot open %s: %s\n", path, strerror(errno));
			return errno == ENOENT ? EXIT_USAGE : EXIT_IO;
		}
		if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
			close(fd);
			fprintf(stderr, "cidstore: %s is a directory\n", path);
			return EXIT_USAGE;
		}
	}
	uint8_t *data = NULL;
	size_t len = 0;
	int rc = read_input(fd, CS_BLOCK_MAX, &data, &len);
	if (fd != 0)
		close(fd);
	if (rc != 0)
		return fail(rc, "cannot read %s", path);
	int status = open_store(c);
	if (status == 0) {
		cs_cid cid;
		rc = cs_block_put(c->store, data, len, codec, hash, &cid);
		status = rc != 0 ? fail(rc, "cannot store %s", path) : print_cid(&cid, stdout);
	}
	free(data);
	return close_store(c, status);
}

static int cmd_block_get(struct cli *c, int argc, char **argv)
{
	cs_cid cid;
	void *data;
	size_t len;

	int st = check_args(argc, argv, 2,
	                    "usage: cidstore block get CID\n  Writes the block's bytes to stdout.");
	if (st >= 0)
		return st;
	int status = parse_cid(argv[1], &cid);
	if (status != 0 || (status = open_store(c)) != 0)
		return status;
	int rc = cs_block_get_alloc(c->store, &cid, &data, &len);
	if (rc != 0)
		return close_store(c, fail(rc, "cannot get %s", argv[1]));
	if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0)
		status = fail(-errno, "cannot write to stdout");
	cs_free(data);
	return close_store(c, status);
}

static int cmd_block_rm(struct cli *c, int argc, char **argv)
{
	cs_cid cid;

	int st = check_args(argc, argv, 2,
	                    "usage: cidstore block rm CID\n  Deletes the block (durably).");
	if (st >= 0)
		return st;
	int status = parse_cid(argv[1], &cid);
	if (status != 0 || (status = open_store(c)) != 0)
		return status;
	int rc = cs_block_delete(c->store, &cid);
	return close_store(c, rc != 0 ? fail(rc, "cannot remove %s", argv[1]) : 0);
}

static int print_one(void *ctx, const cs_cid *cid)
{
	(void)ctx;
	return print_cid(cid, stdout);
}

static int cmd_block_ls(struct cli *c, int argc, char **argv)
{
	int st =
	    check_args(argc, argv, 1,
	               "usage: cidstore block ls\n  Prints the CID of every block, one per line.");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_block_list(c->store, print_one, NULL);
	return close_store(c, rc > 0 ? rc : rc < 0 ? fail(rc, "listing failed") : 0);
}

static int cmd_block(struct cli *c, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		puts("usage: cidstore block put|get|rm|ls ...");
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (strcmp(argv[1], "put") == 0)
		return cmd_block_put(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "get") == 0)
		return cmd_block_get(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "rm") == 0)
		return cmd_block_rm(c, argc - 1, argv + 1);
	if (strcmp(argv[1], "ls") == 0)
		return cmd_block_ls(c, argc - 1, argv + 1);
	return usage_error("unknown block command '%s'", argv[1]);
}

static int cmd_has(struct cli *c, int argc, char **argv)
{
	cs_cid cid;

	int st =
	    check_args(argc, argv, 2,
	               "usage: cidstore has CID\n  Exits 0 if the block is present, 1 if absent.");
	if (st >= 0)
		return st;
	int status = parse_cid(argv[1], &cid);
	if (status != 0 || (status = open_store(c)) != 0)
		return status;
	int rc = cs_block_has(c->store, &cid);
	return close_store(c, rc < 0 ? fail(rc, "has %s", argv[1]) : rc ? 0 : EXIT_NOTFOUND);
}

static const char *durability_name(cs_durability d)
{
	return d == CS_DURABLE_SYNC ? "sync" : d == CS_DURABLE_INTERVAL ? "interval" : "none";
}

static json_t *stat_json(cs_store *s)
{
	cs_stat st;
	cs_store_stat(s, &st);
	json_t *j = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:s, s:s, "
	    "s:{s:I, s:I, s:I, s:I, s:I, s:f}}",
	    "blocks", (json_int_t)st.blocks, "names", (json_int_t)st.names, "live_bytes",
	    (json_int_t)st.live_bytes, "logical_bytes", (json_int_t)st.logical_bytes,
	    "physical_bytes", (json_int_t)st.live_bytes, "log_bytes", (json_int_t)st.log_bytes,
	    "disk_bytes", (json_int_t)st.disk_bytes, "segments", (json_int_t)st.segments,
	    "index_bytes", (json_int_t)st.index_bytes, "index_bytes_per_block",
	    st.blocks ? (double)st.index_bytes / (double)st.blocks : 0.0, "next_seq",
	    (json_int_t)st.next_seq, "durable_seq", (json_int_t)st.durable_seq, "io_backend",
	    st.io_backend, "durability", durability_name(st.durability), "last_open",
	    "replayed_records", (json_int_t)st.replayed_records, "torn_tail_bytes",
	    (json_int_t)st.torn_tail_bytes, "salvaged_records", (json_int_t)st.salvaged_records,
	    "salvaged_bytes", (json_int_t)st.salvaged_bytes, "stray_files",
	    (json_int_t)st.stray_files, "seconds", st.open_seconds);
	json_object_set_new(j, "pins", json_integer((json_int_t)st.pins));
	json_object_set_new(j, "pins_recursive", json_integer((json_int_t)st.pins_recursive));
	json_object_set_new(j, "garbage_bytes_estimate", json_integer((json_int_t)st.garbage_bytes));
	json_object_set_new(j, "quota",
	                    json_pack("{s:I, s:I, s:I, s:I}", "bytes", (json_int_t)st.quota_bytes,
	                              "used", (json_int_t)st.quota_used, "refused",
	                              (json_int_t)st.quota_refused, "gcs",
	                              (json_int_t)st.quota_gcs));
	json_object_set_new(
	    j, "last_gc",
	    json_pack("{s:I, s:I, s:I, s:f, s:I}", "freed_blocks", (json_int_t)st.last_gc.swept_blocks,
	              "freed_bytes", (json_int_t)st.last_gc.swept_bytes, "marked",
	              (json_int_t)st.last_gc.marked, "seconds", st.last_gc.seconds, "time_ns",
	              (json_int_t)st.last_gc_time_ns));
	json_object_set_new(j, "last_checkpoint",
	                    json_pack("{s:I, s:I}", "seq", (json_int_t)st.checkpoint_seq, "time_ns",
	                              (json_int_t)st.checkpoint_time_ns));
	return j;
}

static int cmd_stat(struct cli *c, int argc, char **argv)
{
	int st = check_args(argc, argv, 1,
	                    "usage: cidstore stat\n  Prints the store's figures as JSON.");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	json_t *j = stat_json(c->store);
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
	json_decref(j);
	return close_store(c, 0);
}

static void report_bad(void *ctx, const cs_cid *cid, int code)
{
	char text[CS_CID_TEXT_MAX];
	(void)ctx;
	if (cs_cid_format(cid, text, sizeof(text)) > 0)
		fprintf(stderr, "cidstore: verify: %s: %s\n", text, cs_strerror(code));
}

static int cmd_verify(struct cli *c, int argc, char **argv)
{
	uint64_t checked = 0, failed = 0;

	int st =
	    check_args(argc, argv, 1,
	               "usage: cidstore verify\n  Re-reads and re-hashes every block; lists each "
	               "mismatch on stderr; exits 4 if any.");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_store_verify(c->store, report_bad, NULL, &checked, &failed);
	printf("{\"checked\": %llu, \"failed\": %llu}\n", (unsigned long long)checked,
	       (unsigned long long)failed);
	return close_store(c, rc != 0 ? fail(rc, "verify") : 0);
}

/* The main job: ingest a generated dataset of chunks (a quarter of them repeats, as
 * re-uploaded shards are), then print a few CIDs and the store's figures. */
static int cmd_demo(struct cli *c, int argc, char **argv)
{
	uint64_t mib = 256, chunk = 256 << 10;

	if (wants_help(argc, argv)) {
		puts("usage: cidstore demo [MIB]\n  Ingests MIB MiB (default 256) of generated "
		     "256 KiB dataset chunks, a quarter of them repeats, syncs once, then prints "
		     "sample CIDs and stats.");
		return 0;
	}
	if (argc == 2 && (mib = strtoull(argv[1], NULL, 10)) == 0)
		return usage_error("demo: MIB must be a positive number");
	c->opts.durability = CS_DURABLE_NONE;
	int status = open_store(c);
	if (status != 0)
		return status;
	uint8_t *buf = malloc(chunk);
	uint64_t n = mib * (1 << 20) / chunk, x = 0x9e3779b97f4a7c15ull;
	struct timespec t0, t1;
	cs_cid cid;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t i = 0; i < n && status == 0; i++) {
		/* Every fourth chunk repeats an earlier one. */
		uint64_t seed = (i % 4 == 3) ? i - 3 : i;
		x = seed * 0x9e3779b97f4a7c15ull + 1;
		for (size_t k = 0; k < chunk; k += 8) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			memcpy(buf + k, &x, 8);
		}
		int rc = cs_block_put(c->store, buf, chunk, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		if (rc != 0)
			status = fail(rc, "put chunk %llu", (unsigned long long)i);
		else if (i < 3 || i == n - 1) {
			printf("chunk %-6llu ", (unsigned long long)i);
			print_cid(&cid, stdout);
		}
	}
	int rc = status == 0 ? cs_store_sync(c->store) : 0;
	if (rc != 0)
		status = fail(rc, "sync");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (status == 0) {
		printf("ingested %llu chunks (%llu MiB) in %.2f s: %.0f MB/s, durable\n",
		       (unsigned long long)n, (unsigned long long)mib, secs,
		       (double)(n * chunk) / secs / 1e6);
		json_t *j = stat_json(c->store);
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
		json_decref(j);
	}
	free(buf);
	return close_store(c, status);
}

/* ---- files: add, cat, ls, name ------------------------------------------------------- */

/* Parses a decimal uint64 with nothing around it. Returns 0 or -1. */
static int parse_u64(const char *text, uint64_t *out)
{
	char *end;

	if (text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Checks a name as cs_name_set will, so bad names are refused before anything is added
 * (invariant 2). Returns 0 or the exit code after printing why. */
static int check_name(const char *name)
{
	int rc = cs_name_check(name);
	return rc != 0 ? fail(rc, "bad name") : 0;
}

/* The default name of an added path: its last component ("dir/" gives "dir"; "." and ".."
 * the last component of the real path), as cs_add_path reports the root. */
static int default_name(const char *path, char *out, size_t cap)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t b = n;
	while (b > 0 && path[b - 1] != '/')
		b--;
	size_t bl = n - b;
	if (bl == 0 || (bl == 1 && path[b] == '.') ||
	    (bl == 2 && path[b] == '.' && path[b + 1] == '.')) {
		char *real = realpath(path, NULL);
		if (real == NULL)
			return -errno;
		int rc = strcmp(real, "/") == 0 ? -EINVAL : default_name(real, out, cap);
		free(real);
		return rc;
	}
	if (bl >= cap)
		return -ENAMETOOLONG;
	memcpy(out, path + b, bl);
	out[bl] = '\0';
	return 0;
}

static double now_seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Progress of an add on stderr (invariant 4). */
struct progress {
	int tty;      /* stderr is a terminal */
	double start; /* when the add began */
	double last;  /* when the line was last drawn */
	int shown;    /* a line is on the screen */
};

static void progress_draw(void *ctx, uint64_t done, uint64_t total)
{
	struct progress *pg = ctx;
	double now = now_seconds(), secs = now - pg->start;

	if (!pg->tty || secs <= 1.0 || now - pg->last < 0.25)
		return;
	pg->last = now;
	double rate = (double)done / secs;
	fprintf(stderr, "\r\033[Kcidstore: added %.1f MB", (double)done / 1e6);
	if (total >= done && total > 0) {
		double eta = rate > 0 ? (double)(total - done) / rate : 0;
		fprintf(stderr, " of %.1f MB (%.0f%%), %.1f MB/s, ETA %d:%02d", (double)total / 1e6,
		        100.0 * (double)done / (double)total, rate / 1e6, (int)eta / 60,
		        (int)eta % 60);
	} else {
		fprintf(stderr, ", %.1f MB/s", rate / 1e6);
	}
	fflush(stderr);
	pg->shown = 1;
}

static void progress_end(struct progress *pg)
{
	if (pg->shown)
		fputs("\r\033[K", stderr);
	pg->shown = 0;
}

struct add_print {
	int quiet;
	struct progress *pg;
};

/* Prints every entry below the added root as "CID<TAB>PATH"; the root's line is printed
 * after it is named. The root's path is its base name: no '/' after its first byte. */
static int print_entry(void *ctx, const cs_add_entry *e)
{
	struct add_print *ap = ctx;
	char text[CS_CID_TEXT_MAX];

	if (ap->quiet || strchr(e->path + 1, '/') == NULL)
		return 0;
	if (cs_cid_format(&e->cid, text, sizeof(text)) < 0)
		return 0;
	progress_end(ap->pg);
	printf("%s\t%s\n", text, e->path);
	return 0;
}

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct add_print *ap = ctx;

	progress_draw(ap->pg, done, total);
}

/* Adds stdin as one file with its own read loop, for progress. */
static int add_stdin(struct cli *c, const cs_add_options *ao, struct progress *pg, cs_cid *root,
                     uint64_t *size)
{
	struct stat st;
	uint64_t total = 0, done = 0;
	cs_add *a;
	int rc, read_failed = 0;

	if (fstat(0, &st) == 0 && S_ISREG(st.st_mode)) {
		off_t pos = lseek(0, 0, SEEK_CUR);
		total = pos >= 0 && st.st_size > pos ? (uint64_t)(st.st_size - pos) : 0;
	}
	if ((rc = cs_add_begin(c->store, ao, &a)) != 0)
		return fail(rc, "cannot add stdin");
	uint8_t *buf = malloc(1 << 20);
	if (buf == NULL) {
		cs_add_abort(a);
		return fail(-ENOMEM, "cannot add stdin");
	}
	for (;;) {
		ssize_t n = read(0, buf, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			read_failed = 1;
			break;
		}
		if (n == 0)
			break;
		if ((rc = cs_add_write(a, buf, (size_t)n)) != 0)
			break;
		done += (uint64_t)n;
		progress_draw(pg, done, total);
	}
	free(buf);
	if (rc != 0) {
		cs_add_abort(a);
		progress_end(pg);
		if (read_failed) {
			fprintf(stderr, "cidstore: cannot read stdin: %s\n", strerror(-rc));
			return EXIT_IO;
		}
		return fail(rc, "cannot add stdin");
	}
	if ((rc = cs_add_finish(a, root, size)) != 0) {
		progress_end(pg);
		return fail(rc, "cannot add stdin");
	}
	return 0;
}

static const char *const add_help =
    "usage: cidstore add [--name N] [--cid-version 0|1] [--chunker size-N|cdc|cdc-N]\n"
    "                    [--hash sha2-256|blake2b-256] [--raw-leaves|--no-raw-leaves]\n"
    "                    [-r] [--quiet] [--pin] PATH|-\n"
    "  Adds a file (or stdin, or with -r a directory and everything below it) as the UnixFS\n"
    "  DAG Kubo's `ipfs add` builds with the same options (default: --cid-version 1, raw\n"
    "  leaves, size-262144 chunks; --cid-version 0 is plain `ipfs add`; -r equals\n"
    "  `ipfs add -r --hidden`: dotfiles are added, symlinks stored as symlinks). Then names\n"
    "  the root N (default: the path's base name; stdin needs --name), replacing an earlier\n"
    "  setting. Prints \"CID<TAB>PATH\" for every file and directory below the root, then\n"
    "  \"CID<TAB>N\" for the root once it is durable and named; --quiet prints only the\n"
    "  root's CID. cdc is content-defined chunking (average N, default 262144: not a Kubo\n"
    "  chunker). Directories whose names and CIDs reach 262144 bytes, which Kubo would shard,\n"
    "  are refused. On a terminal, adds longer than a second show progress on stderr.\n"
    "  --pin also pins the root recursively, in the same commit as the name: after a\n"
    "  crash the root has both or neither.";

static int cmd_add(struct cli *c, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"name", required_argument, 0, 'n'},
	    {"pin", no_argument, 0, 'P'},
	    {"cid-version", required_argument, 0, 'V'},
	    {"chunker", required_argument, 0, 'C'},
	    {"hash", required_argument, 0, 'H'},
	    {"raw-leaves", no_argument, 0, 'L'},
	    {"no-raw-leaves", no_argument, 0, 'N'},
	    {"recursive", no_argument, 0, 'r'},
	    {"quiet", no_argument, 0, 'q'},
	    {0, 0, 0, 0},
	};
	cs_add_options ao;
	const char *name = NULL;
	int recursive = 0, quiet = 0, pin = 0, o;
	uint64_t v;

	if (wants_help(argc, argv)) {
		puts(add_help);
		return 0;
	}
	cs_add_options_init(&ao);
	optind = 0;
	while ((o = getopt_long(argc, argv, "rq", lo, NULL)) != -1) {
		switch (o) {
		case 'n':
			name = optarg;
			break;
		case 'P':
			pin = 1;
			break;
		case 'V':
			if (strcmp(optarg, "0") != 0 && strcmp(optarg, "1") != 0)
				return usage_error("--cid-version is 0 or 1, not '%s'", optarg);
			ao.cid_version = optarg[0] - '0';
			break;
		case 'C':
			if (strncmp(optarg, "size-", 5) == 0 && parse_u64(optarg + 5, &v) == 0 &&
			    v <= UINT32_MAX) {
				ao.chunker = CS_CHUNK_FIXED;
				ao.chunk_size = (uint32_t)v;
			} else if (strcmp(optarg, "cdc") == 0) {
				ao.chunker = CS_CHUNK_CDC;
			} else if (strncmp(optarg, "cdc-", 4) == 0 &&
			           parse_u64(optarg + 4, &v) == 0 && v <= UINT32_MAX) {
				ao.chunker = CS_CHUNK_CDC;
				ao.chunk_size = (uint32_t)v;
			} else {
				return usage_error("unknown chunker '%s' (size-N, cdc or cdc-N)",
				                   optarg);
			}
			break;
		case 'H':
			if (strcmp(optarg, "sha2-256") == 0)
				ao.hash = CS_HASH_SHA2_256;
			else if (strcmp(optarg, "blake2b-256") == 0)
				ao.hash = CS_HASH_BLAKE2B_256;
			else
				return usage_error("unknown hash '%s'", optarg);
			break;
		case 'L':
			ao.raw_leaves = 1;
			break;
		case 'N':
			ao.raw_leaves = 0;
			break;
		case 'r':
			recursive = 1;
			break;
		case 'q':
			quiet = 1;
			break;
		default:
			return usage_error("add: unknown option");
		}
	}
	if (argc - optind != 1)
		return usage_error("add takes one PATH (or - for stdin)");
	const char *path = argv[optind];
	int is_stdin = strcmp(path, "-") == 0;
	char defname[CS_NAME_MAX + 1];
	struct stat st;

	/* Invariant 2: everything that can be refused is refused before the store opens. */
	if (is_stdin && name == NULL)
		return usage_error("add - (stdin) needs --name");
	if (is_stdin && recursive)
		return usage_error("add -r needs a directory, not stdin");
	if (!is_stdin) {
		if (stat(path, &st) != 0) {
			fprintf(stderr, "cidstore: cannot add %s: %s\n", path, strerror(errno));
			return errno == ENOENT || errno == ENOTDIR ? EXIT_USAGE : EXIT_IO;
		}
		if (S_ISDIR(st.st_mode) && !recursive) {
			fprintf(stderr,
			        "cidstore: cannot add %s: it is a directory (add -r adds it "
			        "and everything below it)\n",
			        path);
			return EXIT_USAGE;
		}
		if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
			fprintf(stderr,
			        "cidstore: cannot add %s: not a regular file or directory\n", path);
			return EXIT_USAGE;
		}
		if (access(path, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) != 0) {
			fprintf(stderr, "cidstore: cannot add %s: %s\n", path, strerror(errno));
			return EXIT_IO;
		}
		if (name == NULL) {
			int rc = default_name(path, defname, sizeof(defname));
			if (rc != 0)
				return usage_error("cannot take a name from '%s' (%s): give --name",
				                   path, strerror(-rc));
			name = defname;
		}
	}
	int st_ = check_name(name);
	if (st_ != 0)
		return st_;

	/* Invariant 1: the add sets the name (and the pin) itself, once the DAG is durable. */
	ao.name = name;
	ao.pin = pin;
	int status = open_store(c);
	if (status != 0)
		return status;
	struct progress pg = {.tty = isatty(2), .start = now_seconds()};
	struct add_print ap = {.quiet = quiet, .pg = &pg};
	cs_add_callbacks cb = {.entry = print_entry, .progress = progress_cb, .ctx = &ap};
	cs_cid root;
	uint64_t size = 0;
	int rc;
	if (is_stdin) {
		status = add_stdin(c, &ao, &pg, &root, &size);
	} else {
		rc = cs_add_path(c->store, &ao, path, recursive ? CS_ADD_RECURSIVE : 0, &cb, &root,
		                 &size);
		if (rc != 0)
			status = fail(rc, "cannot add %s", path);
	}
	progress_end(&pg);
	if (status == 0) {
		char text[CS_CID_TEXT_MAX];
		if ((rc = cs_cid_format(&root, text, sizeof(text))) < 0)
			status = fail(rc, "cannot format CID");
		else if (quiet)
			printf("%s\n", text);
		else
			printf("%s\t%s\n", text, name);
	}
	if (fflush(stdout) != 0 && status == 0)
		status = fail(-errno, "cannot write to stdout");
	return close_store(c, status);
}

static int cmd_cat(struct cli *c, int argc, char **argv)
{
	static const struct option lo[] = {
	    {"offset", required_argument, 0, 'o'},
	    {"length", required_argument, 0, 'l'},
	    {0, 0, 0, 0},
	};
	uint64_t offset = 0, length = UINT64_MAX, size;
	int o, has_len = 0;
	cs_cid cid;

	if (wants_help(argc, argv)) {
		puts(
		    "usage: cidstore cat CID [--offset N] [--length N]\n"
		    "  Writes the bytes of the file whose root is CID (or N bytes of it from byte\n"
		    "  offset N) to stdout. The DAG under the range is checked before the first\n"
		    "  byte is written: a missing block, a node that is not a UnixFS file or "
		    "sizes\n"
		    "  that disagree give an error and no output.");
		return 0;
	}
	optind = 0;
	while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (o == 'o' && parse_u64(optarg, &offset) == 0)
			continue;
		if (o == 'l' && parse_u64(optarg, &length) == 0) {
			has_len = 1;
			continue;
		}
		if (o == 'o' || o == 'l')
			return usage_error("--%s takes a number of bytes, not '%s'",
			                   o == 'o' ? "offset" : "length", optarg);
		return usage_error("cat: unknown option");
	}
	if (argc - optind != 1)
		return usage_error("cat takes one CID");
	int status = parse_cid(argv[optind], &cid);
	if (status != 0 || (status = open_store(c)) != 0)
		return status;
	/* One reader for the whole range, so the root and the nodes above the leaves are read
	 * once, not once per piece. */
	cs_file *f = NULL;
	int rc = cs_file_open(c->store, &cid, &f);
	if (rc != 0)
		return close_store(c, fail(rc, "cannot cat %s", argv[optind]));
	size = cs_file_length(f);
	/* The range, clipped to the file: nothing at or past its end. */
	if (offset >= size)
		length = 0;
	else if (!has_len || length > size - offset)
		length = size - offset;
	uint64_t end = offset + length;
	/* Invariant 3: refuse a damaged range before the first byte goes out. */
	if (length > 0 && (rc = cs_file_check(c->store, &cid, offset, length)) != 0) {
		cs_file_close(f);
		return close_store(c, fail(rc, "cannot cat %s", argv[optind]));
	}
	/* 8 MiB pieces: a full run of 256 KiB leaves, read with one preadv (UFS_RUN_MAX). */
	size_t cap = 8u << 20;
	uint8_t *buf = malloc(cap);
	if (buf == NULL) {
		cs_file_close(f);
		return close_store(c, fail(-ENOMEM, "cannot cat %s", argv[optind]));
	}
	for (uint64_t at = offset; at < end && status == 0;) {
		size_t want = end - at < cap ? (size_t)(end - at) : cap, got;
		rc = cs_file_read(f, at, buf, want, &got, NULL);
		if (rc != 0)
			status = fail(rc, "cannot cat %s", argv[optind]);
		else if (got == 0)
			break;
		else if (fwrite(buf, 1, got, stdout) != got)
			status = fail(-errno, "cannot write to stdout");
		at += got;
	}
	cs_file_close(f);
	free(buf);
	if (fflush(stdout) != 0 && status == 0)
		status = fail(-errno, "cannot write to stdout");
	return close_store(c, status);
}

/* ls: one line (or JSON object) per name. */
struct ls_ctx {
	json_t *arr; /* --json: the array being built, else NULL */
	int err;
};

static int ls_one(void *ctx, const cs_name_info *n)
{
	struct ls_ctx *l = ctx;
	char text[CS_CID_TEXT_MAX];

	if (cs_cid_format(&n->root, text, sizeof(text)) < 0)
		snprintf(text, sizeof(text), "(unprintable)");
	if (l->arr == NULL) {
		printf("%s\t%llu\t%s\n", text, (unsigned long long)n->size, n->name);
		return 0;
	}
	char when[64];
	time_t secs = (time_t)(n->time_ns / 1000000000);
	struct tm tm;
	if (gmtime_r(&secs, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof(when), "unknown");
	json_t *name = json_string(n->name);
	json_t *o = name == NULL ? NULL
	                         : json_pack("{s:o, s:s, s:I, s:I, s:s}", "name", name, "cid", text,
	                                     "size", (json_int_t)n->size, "time_ns",
	                                     (json_int_t)n->time_ns, "time", when);
	if (o == NULL || json_array_append_new(l->arr, o) != 0) {
		l->err = 1;
		return 1;
	}
	return 0;
}

static int cmd_ls(struct cli *c, int argc, char **argv)
{
	struct ls_ctx l = {0};

	if (wants_help(argc, argv)) {
		puts("usage: cidstore ls [--json]\n"
		     "  Prints \"CID<TAB>SIZE<TAB>NAME\" for every name, in byte order of the "
		     "names;\n"
		     "  with --json an array of {name, cid, size, time_ns, time} objects.");
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "--json") == 0)
		l.arr = json_array();
	else if (argc != 1)
		return usage_error("ls takes only --json");
	int status = open_store(c);
	if (status != 0) {
		json_decref(l.arr);
		return status;
	}
	int rc = cs_name_list(c->store, ls_one, &l);
	if (l.err)
		status = fail(-ENOMEM, "cannot build the JSON listing");
	else if (rc < 0)
		status = fail(rc, "listing names failed");
	else if (l.arr != NULL) {
		json_dumpf(l.arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		putchar('\n');
	}
	json_decref(l.arr);
	if (fflush(stdout) != 0 && status == 0)
		status = fail(-errno, "cannot write to stdout");
	return close_store(c, status);
}

static int cmd_name(struct cli *c, int argc, char **argv)
{
	static const char *const help =
	    "usage: cidstore name rm NAME\n  Removes the name (durably); its blocks stay.";

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		puts(help);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (strcmp(argv[1], "rm") != 0)
		return usage_error("unknown name command '%s'", argv[1]);
	int st = check_args(argc - 1, argv + 1, 2, help);
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_name_delete(c->store, argv[2]);
	return close_store(c, rc != 0 ? fail(rc, "cannot remove name '%s'", argv[2]) : 0);
}

static const char *const pin_help =
    "usage: cidstore pin add [--direct] CID | pin rm CID | pin ls\n"
    "  add: pins CID recursively (it and every block below it), or with --direct the\n"
    "  block alone; a pinned block cannot be removed and survives gc. rm: removes the pin\n"
    "  (the blocks stay until gc). ls: prints \"CID<TAB>recursive|direct\" per pin.";

static int print_pin(void *ctx, const cs_cid *cid, int kind)
{
	char text[CS_CID_TEXT_MAX];
	(void)ctx;
	if (cs_cid_format(cid, text, sizeof(text)) < 0)
		return CS_EINVAL;
	printf("%s\t%s\n", text, kind == CS_PIN_DIRECT ? "direct" : "recursive");
	return 0;
}

static int cmd_pin(struct cli *c, int argc, char **argv)
{
	cs_cid cid;
	int rc, status;

	if (argc < 2 || wants_help(argc, argv)) {
		puts(pin_help);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	const char *sub = argv[1];
	if (strcmp(sub, "ls") == 0) {
		if (argc != 2)
			return usage_error("pin ls takes no arguments");
		if ((status = open_store(c)) != 0)
			return status;
		rc = cs_pin_list(c->store, print_pin, NULL);
		return close_store(c, rc != 0 ? fail(rc, "cannot list pins") : 0);
	}
	int direct = argc == 4 && strcmp(argv[2], "--direct") == 0;
	if (strcmp(sub, "add") == 0 ? argc != 3 + direct : strcmp(sub, "rm") != 0 || argc != 3)
		return strcmp(sub, "add") == 0 || strcmp(sub, "rm") == 0
		           ? usage_error("pin %s takes one CID", sub)
		           : usage_error("unknown pin command '%s'", sub);
	const char *text = argv[argc - 1];
	if ((status = parse_cid(text, &cid)) != 0 || (status = open_store(c)) != 0)
		return status;
	if (strcmp(sub, "add") == 0)
		rc = cs_pin_add(c->store, &cid, direct ? CS_PIN_DIRECT : CS_PIN_RECURSIVE);
	else
		rc = cs_pin_rm(c->store, &cid);
	return close_store(
	    c, rc != 0 ? fail(rc, "cannot %s %s", strcmp(sub, "add") == 0 ? "pin" : "unpin", text)
	               : 0);
}

static int cmd_gc(struct cli *c, int argc, char **argv)
{
	cs_gc_stat g;
	int st = check_args(argc, argv, 1,
	                    "usage: cidstore gc\n  Deletes every block no name or pin reaches, "
	                    "compacts the log to give the space back, and prints what it freed "
	                    "as JSON.");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_gc(c->store, &g);
	if (rc != 0)
		return close_store(c, fail(rc, "garbage collection failed"));
	json_t *j = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:I}", "roots",
	    (json_int_t)g.roots,
	    "marked", (json_int_t)g.marked, "freed_blocks", (json_int_t)g.swept_blocks,
	    "freed_bytes", (json_int_t)g.swept_bytes, "segments_compacted",
	    (json_int_t)g.segments_compacted, "bytes_copied", (json_int_t)g.bytes_copied,
	    "bytes_reclaimed", (json_int_t)g.bytes_reclaimed, "mark_seconds", g.mark_seconds,
	    "sweep_seconds", g.sweep_seconds, "compact_seconds", g.compact_seconds, "seconds",
	    g.seconds, "repack_seconds", g.repack_seconds, "index_bytes", (json_int_t)g.index_bytes);
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
	json_decref(j);
	return close_store(c, 0);
}

static int cmd_compact(struct cli *c, int argc, char **argv)
{
	cs_compact_stat k;
	int st = check_args(argc, argv, 1,
	                    "usage: cidstore compact\n  Rewrites the log segments that hold mostly "
	                    "deleted data and deletes their files; prints what it did as JSON.");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_compact(c->store, &k);
	if (rc != 0)
		return close_store(c, fail(rc, "compaction failed"));
	json_t *j = json_pack("{s:I, s:I, s:I, s:f}", "segments_compacted",
	                      (json_int_t)k.segments_compacted, "bytes_copied",
	                      (json_int_t)k.bytes_copied, "bytes_reclaimed",
	                      (json_int_t)k.bytes_reclaimed, "seconds", k.seconds);
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
	json_decref(j);
	return close_store(c, 0);
}

static int cmd_checkpoint(struct cli *c, int argc, char **argv)
{
	int st = check_args(argc, argv, 1,
	                    "usage: cidstore checkpoint\n  Writes a checkpoint of the index, pins "
	                    "and names, so that the next open replays\n  only the log after it, "
	                    "and prints its seq and time as JSON. (Every close writes\n  one too "
	                    "when the log grew.)");
	if (st >= 0)
		return st;
	int status = open_store(c);
	if (status != 0)
		return status;
	int rc = cs_checkpoint(c->store);
	if (rc != 0)
		return close_store(c, fail(rc, "checkpoint failed"));
	cs_stat s;
	cs_store_stat(c->store, &s);
	json_t *j = json_pack("{s:I, s:I}", "seq", (json_int_t)s.checkpoint_seq, "time_ns",
	                      (json_int_t)s.checkpoint_time_ns);
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	putchar('\n');
	json_decref(j);
	return close_store(c, 0);
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: cidstore [--dir DIR] [--durability sync|interval|none]\n"
	        "                [--quota BYTES [--quota-gc]] COMMAND ...\n"
	        "\n"
	        "commands:\n"
	        "  add [-r] [--name N] [--cid-version 0|1] [--chunker size-N|cdc] [--hash H]\n"
	        "      [--raw-leaves|--no-raw-leaves] [--quiet] [--pin] PATH|-\n"
	        "                       add a file or directory as `ipfs add` does; name it\n"
	        "  cat CID [--offset N] [--length N]\n"
	        "                       write a file's bytes to stdout\n"
	        "  ls [--json]          list the names: CID, size, name\n"
	        "  name rm NAME         remove a name (its blocks stay)\n"
	        "  pin add [--direct] CID | pin rm CID | pin ls\n"
	        "                       keep a DAG (or one block) through gc; list pins\n"
	        "  gc                   delete every block no name or pin reaches, then compact\n"
	        "  compact              give back the space of deleted data (JSON report)\n"
	        "  checkpoint           write a checkpoint now, so the next open is quick\n"
	        "  block put [--codec raw|dag-pb] [--hash sha2-256|blake2b-256] [FILE|-]\n"
	        "  block get CID        write a block's bytes to stdout\n"
	        "  block rm CID         delete a block\n"
	        "  block ls             list every block's CID\n"
	        "  has CID              exit 0 if present, 1 if absent\n"
	        "  stat                 print the store's figures as JSON\n"
	        "  verify               re-hash every block, report mismatches\n"
	        "  demo [MIB]           ingest a generated dataset and print CIDs and stats\n"
	        "\n"
	        "DIR defaults to $CIDSTORE_DIR, else $XDG_DATA_HOME/cidstore, else\n"
	        "~/.local/share/cidstore; it is created on first use. CIDSTORE_IO=uring|psync\n"
	        "chooses the I/O backend. --quota refuses (exit 6) a put of a new block that would\n"
	        "take the live block bytes (stat's physical_bytes) past BYTES; with --quota-gc such\n"
	        "a put first runs gc and tries once more. The quota holds for this command only.\n"
	        "COMMAND --help describes each command.\n\n%s",
	        exit_table);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"dir", required_argument, 0, 'd'},
	    {"durability", required_argument, 0, 'D'},
	    {"quota", required_argument, 0, 'Q'},
	    {"quota-gc", no_argument, 0, 'G'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
	};
	struct cli c = {0};
	char dirbuf[4096];
	int o;

	cs_options_init(&c.opts);
	c.opts.flags = CS_OPEN_CREATE;
	c.opts.log = log_stderr;
	/* Stop at the command: its own options are parsed by it. */
	while ((o = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
		switch (o) {
		case 'd':
			c.dir = optarg;
			break;
		case 'D':
			if (strcmp(optarg, "sync") == 0)
				c.opts.durability = CS_DURABLE_SYNC;
			else if (strcmp(optarg, "interval") == 0)
				c.opts.durability = CS_DURABLE_INTERVAL;
			else if (strcmp(optarg, "none") == 0)
				c.opts.durability = CS_DURABLE_NONE;
			else
				return usage_error("unknown durability '%s'", optarg);
			break;
		case 'Q':
			if (parse_u64(optarg, &c.opts.quota_bytes) != 0)
				return usage_error("--quota takes a number of bytes, not '%s'", optarg);
			break;
		case 'G':
			c.opts.quota_gc = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (c.opts.quota_gc && c.opts.quota_bytes == 0)
		return usage_error("--quota-gc needs --quota");
	if (optind >= argc) {
		fputs("cidstore: no command given\n", stderr);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (c.dir == NULL) {
		if (default_dir(dirbuf, sizeof(dirbuf)) != 0)
			return usage_error("no store directory: set --dir or CIDSTORE_DIR");
		c.dir = dirbuf;
	}
	const char *cmd = argv[optind];
	int cargc = argc - optind;
	char **cargv = argv + optind;
	if (strcmp(cmd, "add") == 0)
		return cmd_add(&c, cargc, cargv);
	if (strcmp(cmd, "cat") == 0)
		return cmd_cat(&c, cargc, cargv);
	if (strcmp(cmd, "ls") == 0)
		return cmd_ls(&c, cargc, cargv);
	if (strcmp(cmd, "name") == 0)
		return cmd_name(&c, cargc, cargv);
	if (strcmp(cmd, "block") == 0)
		return cmd_block(&c, cargc, cargv);
	if (strcmp(cmd, "pin") == 0)
		return cmd_pin(&c, cargc, cargv);
	if (strcmp(cmd, "compact") == 0)
		return cmd_compact(&c, cargc, cargv);
	if (strcmp(cmd, "gc") == 0)
		return cmd_gc(&c, cargc, cargv);
	if (strcmp(cmd, "checkpoint") == 0)
		return cmd_checkpoint(&c, cargc, cargv);
	if (strcmp(cmd, "has") == 0)
		return cmd_has(&c, cargc, cargv);
	if (strcmp(cmd, "stat") == 0)
		return cmd_stat(&c, cargc, cargv);
	if (strcmp(cmd, "verify") == 0)
		return cmd_verify(&c, cargc, cargv);
	if (strcmp(cmd, "demo") == 0)
		return cmd_demo(&c, cargc, cargv);
	return usage_error("unknown command '%s'", cmd);
}
