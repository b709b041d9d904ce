/*
 * main.c - the cidstore command-line tool. Uses only the public header.
 *
 * Every failure prints one line on stderr starting "cidstore:" and exits with a code from
 * the table in usage(): scripts can tell "absent" from "bad input" from "store locked".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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
	EXIT_NOTFOUND = 1, /* absent block (has, get, rm) */
	EXIT_USAGE = 2,    /* usage error or bad input: CID text, option, limit */
	EXIT_BUSY = 3,     /* the store is locked by another process */
	EXIT_CORRUPT = 4,  /* corruption found (open, get, verify) */
	EXIT_NOTSTORE = 5, /* not a store, or a newer format */
	EXIT_IO = 6,       /* I/O or system error, full disk, poisoned store */
};

static const char *const exit_table =
    "exit codes:\n"
    "  0  success\n"
    "  1  not found (has: absent)\n"
    "  2  usage error or bad input (CID text, option, block over the limit)\n"
    "  3  store locked by another process\n"
    "  4  corruption found\n"
    "  5  not a cidstore directory, or written by a newer version\n"
    "  6  I/O or system error (disk full, permission, failed sync)\n";

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
	return json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:s, s:s, "
	    "s:{s:I, s:I, s:I, s:I, s:I, s:f}}",
	    "blocks", (json_int_t)st.blocks, "names", (json_int_t)st.names, "live_bytes", (json_int_t)st.live_bytes, "log_bytes",
	    (json_int_t)st.log_bytes, "disk_bytes", (json_int_t)st.disk_bytes, "segments",
	    (json_int_t)st.segments, "index_bytes", (json_int_t)st.index_bytes,
	    "index_bytes_per_block", st.blocks ? (double)st.index_bytes / (double)st.blocks : 0.0,
	    "next_seq", (json_int_t)st.next_seq, "durable_seq", (json_int_t)st.durable_seq,
	    "io_backend", st.io_backend, "durability", durability_name(st.durability), "last_open",
	    "replayed_records", (json_int_t)st.replayed_records, "torn_tail_bytes",
	    (json_int_t)st.torn_tail_bytes, "salvaged_records", (json_int_t)st.salvaged_records,
	    "salvaged_bytes", (json_int_t)st.salvaged_bytes, "stray_files",
	    (json_int_t)st.stray_files, "seconds", st.open_seconds);
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

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: cidstore [--dir DIR] [--durability sync|interval|none] COMMAND ...\n"
	        "\n"
	        "commands:\n"
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
	        "chooses the I/O backend. COMMAND --help describes each command.\n\n%s",
	        exit_table);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"dir", required_argument, 0, 'd'},
	    {"durability", required_argument, 0, 'D'},
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
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
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
	if (strcmp(cmd, "block") == 0)
		return cmd_block(&c, cargc, cargv);
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
