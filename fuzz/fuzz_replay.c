/*
 * fuzz_replay.c - libFuzzer target for recovery: a store whose log is made of arbitrary bytes.
 *
 * Each input becomes a store directory (a valid CIDSTORE meta file and one or two segment
 * files built from the input), which is opened without and then, from scratch again, with
 * CS_OPEN_SALVAGE. The first input byte picks the layout:
 *   bits 0-1  0: one segment, valid header (first seq 1), the rest of the input its body;
 *             1: one segment, the rest of the input the whole file, header included;
 *             2: two segments (ids 1 and 2 + bits 5-6), valid headers, the body split at
 *                8 x (LE16 of bytes 1-2); the second header's first seq is 1 + byte 3;
 *             3: as 2, but the second file is raw bytes, header included.
 *   bits 2-3  the generated headers' window: 64 KiB, 4 KiB, 64 bytes or 16 MiB.
 *   bit 4     repair checksums: every 8-aligned record image whose header decodes and that
 *             fits in its file gets its checksum recomputed, as does a raw segment header,
 *             so mutations reach the rules behind the checksums (seqs, transactions, types,
 *             payload parsing) instead of dying at them.
 *   bit 7     I/O backend: psync or io_uring.
 *
 * What must hold (docs/FORMAT.md, "Reader actions"; recovery/replay.h):
 *  1. Open answers 0, CS_ECORRUPT or CS_EVERSION, never anything else, and every failure
 *     carries a message. No crash, no leak (LeakSanitizer), no fd left open.
 *  2. After a successful open the store is coherent: cs_block_list names exactly
 *     cs_stat.blocks blocks, each readable with has and get, their sizes summing to
 *     cs_stat.live_bytes, and cs_store_verify fails exactly the blocks whose bytes do not
 *     hash to their CID (a record may carry a valid checksum over a wrong digest; open does
 *     not rehash, verify does).
 *  3. A second open of the same directory, from the checkpoint the first close wrote, gives
 *     the same blocks; a third, with the checkpoint removed, the same answer with the same
 *     blocks and the same number of replayed records (a truncated torn tail stays
 *     truncated, salvage skips the same damage). A block put after that open is durable: a third open finds
 *     the earlier blocks and it. Checked without salvage always, and with salvage when the
 *     log needed it (otherwise both opens take the same path, check 4).
 *  4. Salvage only ever helps: a log that opens without salvage opens with it, to the same
 *     blocks and with nothing salvaged; one refused with CS_EVERSION is refused with it too;
 *     one refused with CS_ECORRUPT that opens with salvage reports something salvaged.
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * The store lives under $CS_FUZZ_TMPDIR, else /dev/shm (fsync is free there), else $TMPDIR
 * or /tmp, in one directory per process that is emptied after every input.
 *
 * Seeds (fuzz/corpus/replay/, named after what they hold) are real logs written by the
 * library, cut to their written end: puts in one batch, puts in sync mode (every record
 * testifies to the one before it) with deletes, dag-pb and blake2b blocks and an empty one,
 * and, through wal_append, a three-record transaction, a skippable and an unknown record
 * type. From these: layout 0 bodies, whole files (layout 1), splits at and inside a record
 * (layouts 2, 3), and damaged variants: a torn tail, a flipped byte before valid records
 * (corruption), and with repair, a wrong digest, an open transaction, a stray MID flag, a
 * short payload, a newer version, another store's uid, a wrong segment id.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_replay ../fuzz/corpus/replay
 * The regression test (tests/test_fuzz_regress.c) compiles this file without libFuzzer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "cidstore.h"
#include "endian.h"
#include "cs_limits.h"
#include "record.h"

/* Library bugs this target found, all fixed; their inputs are in fuzz/regress/replay/:
 *  - replay accepted a block record whose hash code the store never keys, after which
 *    cs_block_list failed (unkeyable-hash-*);
 *  - B1: a salvage open that skipped damage (resuming at a record the look-ahead found) and
 *    then truncated a torn tail zeroed the records whose synced seq made the damage
 *    corruption, so the next open judged the same damage a torn tail and dropped what the
 *    first had applied (b1-*). Now such a tail is left in place and the segment takes no
 *    more appends (recovery/replay.c, P6), and check 3 holds for every open. */

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr,                                                            \
			        "fuzz_replay: check failed: %s (line %d), errmsg \"%s\"\n", #cond, \
			        __LINE__, cs_errmsg());                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Seeds are below 64 KiB; much longer inputs only make each run slower. */
#define INPUT_MAX (256u << 10)
#define STORE_UID 0x0123456789abcdefull
#define SEG_CAP   CS_SEG_MIN

static char store_dir[512];

/* The replay buffer is sized from the window, so the common case (bits 00) is a small one:
 * every seed is far shorter, so it judges the same, and a run costs less. */
static const uint32_t windows[4] = {64u << 10, 4u << 10, 64, CS_SEG_MIN};

/* ---- the scratch directory ----------------------------------------------------------- */

/* Removes every file in the store directory (it is flat) and the directory itself. */
static void clear_store(void)
{
	DIR *d = opendir(store_dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			CHECK(unlinkat(dirfd(d), e->d_name, 0) == 0);
	}
	closedir(d);
	CHECK(rmdir(store_dir) == 0);
}

static void remove_base(void)
{
	char *slash;

	clear_store();
	slash = strrchr(store_dir, '/');
	*slash = '\0';
	rmdir(store_dir);
}

static void init_dirs(void)
{
	static char base[480];
	const char *t = getenv("CS_FUZZ_TMPDIR");

	if (t == NULL || t[0] == '\0')
		t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (t == NULL || t[0] == '\0')
		t = "/tmp";
	snprintf(base, sizeof(base), "%s/cs-fuzz-replay-XXXXXX", t);
	CHECK(mkdtemp(base) != NULL);
	snprintf(store_dir, sizeof(store_dir), "%s/s", base);
	atexit(remove_base);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d != NULL);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static void write_file(const char *name, const uint8_t *a, size_t alen, const uint8_t *b,
                       size_t blen)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%s", store_dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(alen == 0 || write(fd, a, alen) == (ssize_t)alen);
	CHECK(blen == 0 || write(fd, b, blen) == (ssize_t)blen);
	close(fd);
}

/* ---- building the store from the input ---------------------------------------------- */

struct layout {
	int kind;        /* bits 0-1 */
	uint32_t window; /* bits 2-3 */
	int repair;      /* bit 4 */
	uint32_t id2;    /* id of the second segment */
	size_t split;    /* body bytes in the first segment (kinds 2, 3) */
	uint64_t seq2;   /* first seq of the second segment (kind 2) */
	int uring;       /* bit 7 */
	const uint8_t *body;
	size_t len;
};

static void parse_layout(const uint8_t *data, size_t size, struct layout *l)
{
	uint8_t b0 = data[0];

	l->kind = b0 & 3;
	l->window = windows[(b0 >> 2) & 3];
	l->repair = (b0 >> 4) & 1;
	l->id2 = 2 + ((b0 >> 5) & 3);
	l->uring = (b0 >> 7) & 1;
	l->split = 0;
	l->seq2 = 1;
	l->body = data + 1;
	l->len = size - 1;
	if (l->kind >= 2) {
		uint8_t p[3] = {0, 0, 0};
		memcpy(p, l->body, l->len < 3 ? l->len : 3);
		l->body += l->len < 3 ? l->len : 3;
		l->len -= l->len < 3 ? l->len : 3;
		l->split = (size_t)get_le16(p) * 8;
		if (l->split > l->len)
			l->split = l->len;
		l->seq2 = 1 + (uint64_t)p[2];
	}
}

/* Recomputes the checksum of every record image in buf (a segment body starting at file
 * offset 64, so 8-aligned positions are 8-aligned in the file) that decodes and fits. */
static void repair_records(uint8_t *buf, size_t len)
{
	size_t off = 0;
	struct rec_hdr h;

	while (off + CS_REC_HEADER <= len) {
		if (rec_decode_header(buf + off, &h) == REC_OK && rec_size(h.len) <= len - off) {
			uint64_t seed = XXH3_64bits(buf + off, 32);
			put_le64(buf + off + 32,
			         XXH3_64bits_withSeed(buf + off + CS_REC_HEADER, h.len, seed));
			off += rec_size(h.len);
		} else {
			off += CS_REC_ALIGN;
		}
	}
}

static void make_header(uint8_t hdr[CS_SEG_HEADER], uint32_t id, uint64_t first_seq,
                        uint32_t window)
{
	struct seg_hdr h = {
	    .version = SEG_FORMAT_VERSION,
	    .store_uid = STORE_UID,
	    .id = id,
	    .first_seq = first_seq,
	    .capacity = SEG_CAP,
	    .window = window,
	};
	seg_encode(hdr, &h);
}

/* A raw segment file: with repair, its header checksum (when it has a whole header) and its
 * records are made consistent. */
static void write_raw_segment(const char *name, const uint8_t *p, size_t n, int repair)
{
	if (!repair || n < CS_SEG_HEADER) {
		write_file(name, p, n, NULL, 0);
		return;
	}
	uint8_t *copy = malloc(n);
	CHECK(copy != NULL);
	memcpy(copy, p, n);
	put_le64(copy + 56, XXH3_64bits(copy, 56));
	repair_records(copy + CS_SEG_HEADER, n - CS_SEG_HEADER);
	write_file(name, copy, n, NULL, 0);
	free(copy);
}

static void write_body_segment(const char *name, uint32_t id, uint64_t first_seq,
                               const struct layout *l, const uint8_t *p, size_t n)
{
	uint8_t hdr[CS_SEG_HEADER];
	uint8_t *copy = NULL;

	make_header(hdr, id, first_seq, l->window);
	if (l->repair && n > 0) {
		copy = malloc(n);
		CHECK(copy != NULL);
		memcpy(copy, p, n);
		repair_records(copy, n);
		p = copy;
	}
	write_file(name, hdr, sizeof(hdr), p, n);
	free(copy);
}

static void build_store(const struct layout *l)
{
	uint8_t meta[64] = {0};
	char name[32];

	CHECK(mkdir(store_dir, 0700) == 0);
	memcpy(meta, "CIDSTORE", 8);
	put_le32(meta + 8, 1);
	put_le32(meta + 12, 64);
	put_le64(meta + 16, STORE_UID);
	put_le64(meta + 24, 1700000000000000000ull);
	put_le64(meta + 56, XXH3_64bits(meta, 56));
	write_file("CIDSTORE", meta, sizeof(meta), NULL, 0);

	switch (l->kind) {
	case 0:
		write_body_segment("00000001.seg", 1, 1, l, l->body, l->len);
		break;
	case 1:
		write_raw_segment("00000001.seg", l->body, l->len, l->repair);
		break;
	default:
		write_body_segment("00000001.seg", 1, 1, l, l->body, l->split);
		snprintf(name, sizeof(name), "%08x.seg", l->id2);
		if (l->kind == 2)
			write_body_segment(name, l->id2, l->seq2, l, l->body + l->split,
			                   l->len - l->split);
		else
			write_raw_segment(name, l->body + l->split, l->len - l->split, l->repair);
		break;
	}
}

/* ---- what an open store must satisfy ------------------------------------------------- */

/* What an open found: its blocks (sorted CIDs) and counters. */
struct snap {
	cs_cid *cids; /* owned */
	size_t n, cap;
	cs_stat st;
};

static int cid_cmp(const void *a, const void *b)
{
	const cs_cid *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return memcmp(x->bytes, y->bytes, x->len);
}

static int collect(void *ctx, const cs_cid *cid)
{
	struct snap *sn = ctx;
	if (sn->n == sn->cap) {
		sn->cap = sn->cap ? 2 * sn->cap : 64;
		sn->cids = realloc(sn->cids, sn->cap * sizeof(*sn->cids));
		CHECK(sn->cids != NULL);
	}
	sn->cids[sn->n++] = *cid;
	return 0;
}

/* The store's warnings (torn tails, salvage) are printed when CS_FUZZ_VERBOSE is set, to
 * explain a finding; otherwise they are dropped. */
static void store_log(void *ctx, int level, const char *msg)
{
	if (getenv("CS_FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "fuzz_replay: store says: %s\n", msg);
}

static int open_store(const struct layout *l, int salvage, cs_store **s)
{
	cs_options o;

	cs_options_init(&o);
	o.flags = salvage ? CS_OPEN_SALVAGE : 0;
	o.durability = CS_DURABLE_NONE;
	o.io = l->uring ? CS_IO_URING : CS_IO_PSYNC;
	o.segment_bytes = SEG_CAP;
	o.batch_bytes = CS_BATCH_MIN;
	o.log = store_log;
	int rc = cs_store_open(store_dir, &o, s);
	if (getenv("CS_FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "fuzz_replay: open%s: %d %s\n", salvage ? " (salvage)" : "", rc,
		        cs_errmsg());
	if (l->uring && (rc == -EPERM || rc == -ENOSYS)) {
		/* io_uring refused by the kernel or seccomp: the psync backend instead. */
		o.io = CS_IO_PSYNC;
		rc = cs_store_open(store_dir, &o, s);
	}
	if (rc != 0) {
		CHECK(*s == NULL);
		CHECK(cs_errmsg()[0] != '\0');
	}
	return rc;
}

/* Check 2 on an open store; fills *sn. */
static void check_store(cs_store *s, struct snap *sn)
{
	uint64_t live = 0, bad = 0, checked = 0, failed = 0;

	memset(sn, 0, sizeof(*sn));
	CHECK(cs_store_stat(s, &sn->st) == 0);
	CHECK(cs_block_list(s, collect, sn) == 0);
	CHECK(sn->n == sn->st.blocks);
	if (sn->n > 0)
		qsort(sn->cids, sn->n, sizeof(*sn->cids), cid_cmp);
	for (size_t i = 0; i < sn->n; i++) {
		const cs_cid *c = &sn->cids[i];
		cs_cid_info info;
		cs_cid again;
		void *data;
		size_t len;

		CHECK(i == 0 || cid_cmp(&sn->cids[i - 1], c) < 0);
		CHECK(cs_block_has(s, c) == 1);
		CHECK(cs_block_get_alloc(s, c, &data, &len) == 0);
		live += len;
		CHECK(cs_cid_inspect(c, &info) == 0);
		if (cs_cid_compute(data, len, info.codec, info.hash, &again) != 0 ||
		    cid_cmp(&again, c) != 0)
			bad++;
		cs_free(data);
	}
	CHECK(live == sn->st.live_bytes);
	int rc = cs_store_verify(s, NULL, NULL, &checked, &failed);
	CHECK(rc == (bad ? CS_ECORRUPT : 0));
	CHECK(checked == sn->n && failed == bad);
}

static void snap_free(struct snap *sn)
{
	free(sn->cids);
	sn->cids = NULL;
}

static int snap_same_blocks(const struct snap *a, const struct snap *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++) {
		if (cid_cmp(&a->cids[i], &b->cids[i]) != 0)
			return 0;
	}
	return 1;
}

static int snap_has(const struct snap *sn, const cs_cid *c)
{
	return sn->n > 0 && bsearch(c, sn->cids, sn->n, sizeof(*sn->cids), cid_cmp) != NULL;
}

/* Opens the freshly built store (salvage or not) and runs checks 1 and 2, and with `again`
 * check 3; *first keeps what the first open found. Returns the first open's answer. */
static int run_opens(const struct layout *l, int salvage, int again, struct snap *first)
{
	static const char marker[] = "cidstore fuzz_replay marker block";
	cs_store *s;
	struct snap second, third;
	cs_cid m;

	memset(first, 0, sizeof(*first));
	build_store(l);
	int rc = open_store(l, salvage, &s);
	CHECK(rc == 0 || rc == CS_ECORRUPT || rc == CS_EVERSION);
	if (rc != 0) {
		clear_store();
		return rc;
	}
	check_store(s, first);
	CHECK(cs_store_close(s) == 0);
	if (!again) {
		clear_store();
		return 0;
	}

	/* Check 3: the same answer again, then a put that must survive a reopen. */
	CHECK(open_store(l, salvage, &s) == 0); /* from the checkpoint the close wrote */
	check_store(s, &second);
	CHECK(snap_same_blocks(first, &second));
	CHECK(cs_store_close(s) == 0);
	snap_free(&second);
	char ckpt[sizeof(store_dir) + 16];
	snprintf(ckpt, sizeof(ckpt), "%s/checkpoint", store_dir);
	CHECK(unlink(ckpt) == 0 || errno == ENOENT);
	CHECK(open_store(l, salvage, &s) == 0); /* the whole log again */
	check_store(s, &second);
	CHECK(snap_same_blocks(first, &second));
	CHECK(second.st.replayed_records == first->st.replayed_records);
	CHECK(cs_block_put(s, marker, sizeof(marker), CS_CODEC_RAW, CS_HASH_SHA2_256, &m) == 0);
	CHECK(cs_store_close(s) == 0);

	CHECK(open_store(l, salvage, &s) == 0);
	check_store(s, &third);
	CHECK(snap_has(&third, &m));
	CHECK(third.n == second.n + !snap_has(&second, &m));
	for (size_t i = 0; i < second.n; i++)
		CHECK(snap_has(&third, &second.cids[i]));
	CHECK(cs_store_close(s) == 0);

	snap_free(&second);
	snap_free(&third);
	clear_store();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct layout l;
	struct snap plain, salv;

	if (size < 1 || size > INPUT_MAX)
		return -1;
	if (store_dir[0] == '\0')
		init_dirs();
	int fds = count_fds();
	parse_layout(data, size, &l);

	/* Check 3 under salvage only where salvage changes something: a log that opens
	 * without it opens with it by the same path (check 4), and each open costs. */
	int rc1 = run_opens(&l, 0, 1, &plain);
	int rc2 = run_opens(&l, 1, rc1 != 0, &salv);

	/* Check 4. */
	if (rc1 == 0) {
		CHECK(rc2 == 0);
		CHECK(snap_same_blocks(&plain, &salv));
		CHECK(salv.st.salvaged_records == 0 && salv.st.salvaged_bytes == 0);
	} else if (rc1 == CS_EVERSION) {
		CHECK(rc2 == CS_EVERSION);
	} else if (rc2 == 0) {
		CHECK(salv.st.salvaged_records > 0 || salv.st.salvaged_bytes > 0);
	}
	snap_free(&plain);
	snap_free(&salv);
	CHECK(count_fds() == fds);
	return 0;
}
