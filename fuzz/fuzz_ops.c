/*
 * fuzz_ops.c - libFuzzer target: operation sequences against a model, with reopens.
 *
 * The input is a program. Byte 0 picks the first open's options (bits 0-1 durability: sync,
 * interval, none; bit 2 the I/O backend: psync or io_uring). Every later operation is an
 * opcode byte and up to three argument bytes (missing bytes read as zero):
 *   put, get (whole, into a short buffer, or sizing with a NULL buffer), get_alloc, has,
 *   delete, sync, stat, reopen (close, then open with options from the argument), pin add
 *   (direct, or recursive for blocks whose CID is not dag-pb: their bytes are no dag-pb
 *   node), pin remove, pin test, gc, and, when the library has them, name set, get, delete
 *   and list.
 * A block is chosen by (slot 0..15, size class 0..9, hash sha2-256 or blake2b-256): its
 * bytes are a function of slot and class, its codec of the slot. Size classes run from the
 * empty block to CS_BLOCK_MAX and one past it (CS_ELIMIT); different slots of the empty
 * class are the same bytes, so dedup across codecs is exercised too.
 *
 * The model is a table of multihashes (hash code + digest: what the store keys on) with the
 * bytes and the codec of the put that created each block, and a table of names. What must
 * hold, checked on every operation:
 *  1. Each call returns exactly what the model predicts: 0, CS_ENOTFOUND, CS_EBUFSIZE (with
 *     the needed size), CS_ELIMIT or CS_EINVAL; a put returns the CID cs_cid_compute gives;
 *     a get returns the model's bytes.
 *  2. stat counts the model's blocks, bytes and pins; a delete of a pinned block is
 *     CS_EPINNED; a gc deletes exactly the present blocks that no name or pin holds.
 *  3. After every reopen, and at the end of every input, the store equals the model: the
 *     list of blocks is the model's set (with the codec of each block's first put), every
 *     block reads back byte-exact, verify passes, and the names and pins lists equal the
 *     model's.
 *  4. No crash, leak or fd left open; a refusal for a bad argument or a limit (CS_EINVAL,
 *     CS_ELIMIT, CS_EBUFSIZE) carries a message (CS_ENOTFOUND need not: the header lets a
 *     failure set no detail).
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * Names (cs_name_set and friends) are referenced weakly: when the library does not define
 * them yet, the name operations are skipped (and said so once on stderr), so this target
 * builds and runs before and after names land. CS_FUZZ_NO_NAMES=1 in the environment skips
 * them too, to go on fuzzing the rest while a names bug is being fixed.
 *
 * The store lives under $CS_FUZZ_TMPDIR, else /dev/shm (fsync is free there), else $TMPDIR
 * or /tmp; one directory per process, removed and recreated for every input.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_ops ../fuzz/corpus/ops
 * The regression test (tests/test_fuzz_regress.c) compiles this file without libFuzzer.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cidstore.h"
#include "cs_limits.h"

#pragma weak cs_name_set
#pragma weak cs_name_get
#pragma weak cs_name_delete
#pragma weak cs_name_list

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr,                                                            \
			        "fuzz_ops: check failed: %s (line %d, op %d), errmsg \"%s\"\n",    \
			        #cond, __LINE__, op_index, cs_errmsg());                           \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#define INPUT_MAX   4096
#define SLOTS       16
#define CLASSES     10
#define MODEL_MAX   (SLOTS * CLASSES * 2)
#define REOPENS_MAX 24
/* Bytes put per input, so that one input cannot run for long; enough for two segment
 * rotations (segments are 16 MiB). */
#define PUT_BYTES_MAX (40u << 20)

enum {
	OP_PUT,
	OP_GET,
	OP_GET_ALLOC,
	OP_HAS,
	OP_DELETE,
	OP_SYNC,
	OP_STAT,
	OP_REOPEN,
	OP_NAME_SET,
	OP_NAME_GET,
	OP_NAME_DELETE,
	OP_NAME_LIST,
	OP_PIN_ADD,
	OP_PIN_RM,
	OP_PIN_TEST,
	OP_GC,
	OP_COUNT
};

static const size_t class_len[CLASSES] = {
    0, 1, 7, 100, 4096, 4096 + 17, 65536, 1u << 20, CS_BLOCK_MAX, CS_BLOCK_MAX + 1,
};

/* Names: valid ones, and invalid ones with the reason cs_name_set must refuse them. */
#define NAME_LONG_OK                                                                               \
	"LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"                         \
	"LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"                         \
	"LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"                         \
	"LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL"
static const struct {
	const char *name;
	int valid;
} names[] = {
    {"a", 1},
    {"b", 1},
    {"models/llama-3-8b.safetensors", 1},
    {"caf\xc3\xa9 \xe2\x98\x95", 1}, /* UTF-8 */
    {NAME_LONG_OK, 1},               /* CS_NAME_MAX bytes */
    {NAME_LONG_OK "L", 0},           /* one too many */
    {"", 0},
    {"line\nbreak", 0},
    {"\xff\xfe", 0},  /* not UTF-8 */
    {"tab\there", 0}, /* a control character */
    {"A", 1},
    {"a/b/c", 1},
};
#define NNAMES ((int)(sizeof(names) / sizeof(names[0])))
_Static_assert(sizeof(NAME_LONG_OK) - 1 == CS_NAME_MAX, "the long name is at the limit");

struct block {
	uint8_t mh[2 + CS_DIGEST_MAX]; /* hash code (2 bytes) + digest: the store's key */
	int present;
	int slot, cls;
	uint64_t codec; /* of the put that created it while absent */
	int pin;        /* 0, CS_PIN_DIRECT or CS_PIN_RECURSIVE */
};

struct name {
	int set;
	cs_cid root;
	uint64_t size;
};

static char base_dir[480], store_dir[512];
static int op_index;
static struct block model[MODEL_MAX];
static int nmodel;
static struct name model_names[NNAMES];
static const uint8_t *buf; /* the bytes of the block at hand: an entry of block_bytes */
/* The bytes of each (slot, class), made on first use and kept for the process: generating
 * them anew for every operation (up to 4 MiB through instrumented code) was most of an
 * input's time. They live in one arena allocated up front, so that making one does not
 * allocate inside an input (libFuzzer reruns such an input to look for a leak). */
static uint8_t *arena;
static uint8_t *block_bytes[SLOTS][CLASSES];
static uint8_t block_made[SLOTS][CLASSES];
static uint8_t *getbuf; /* CS_BLOCK_MAX + 1 bytes */
static int names_linked;

/* ---- setup ---------------------------------------------------------------------------- */

static void remove_tree(void)
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
	remove_tree();
	rmdir(base_dir);
}

static void init_once(void)
{
	const char *t = getenv("CS_FUZZ_TMPDIR");

	if (t == NULL || t[0] == '\0')
		t = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (t == NULL || t[0] == '\0')
		t = "/tmp";
	snprintf(base_dir, sizeof(base_dir), "%s/cs-fuzz-ops-XXXXXX", t);
	CHECK(mkdtemp(base_dir) != NULL);
	snprintf(store_dir, sizeof(store_dir), "%s/s", base_dir);
	getbuf = malloc(CS_BLOCK_MAX + 1);
	CHECK(getbuf != NULL);
	size_t per_slot = 0;
	for (int c = 0; c < CLASSES; c++)
		per_slot += class_len[c];
	arena = malloc(SLOTS * per_slot); /* pages untouched until a block is made */
	CHECK(arena != NULL);
	for (int slot = 0; slot < SLOTS; slot++) {
		uint8_t *p = arena + (size_t)slot * per_slot;
		for (int c = 0; c < CLASSES; c++) {
			block_bytes[slot][c] = p;
			p += class_len[c];
		}
	}
	names_linked = cs_name_set != NULL && cs_name_get != NULL && cs_name_delete != NULL &&
	               cs_name_list != NULL && getenv("CS_FUZZ_NO_NAMES") == NULL;
	if (!names_linked)
		fprintf(stderr, "fuzz_ops: name operations skipped (%s)\n",
		        cs_name_set == NULL ? "the library has no names" : "CS_FUZZ_NO_NAMES");
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

/* ---- blocks --------------------------------------------------------------------------- */

static uint64_t slot_codec(int slot)
{
	static const uint64_t codecs[4] = {CS_CODEC_RAW, CS_CODEC_DAG_PB, CS_CODEC_DAG_CBOR,
	                                   0x0129 /* dag-json */};
	return codecs[slot & 3];
}

/* Points buf at the bytes of (slot, cls), made eight at a time (xorshift64) the first time;
 * returns the length. */
static size_t make_block(int slot, int cls)
{
	size_t len = class_len[cls];
	uint8_t *p = block_bytes[slot][cls];

	if (!block_made[slot][cls]) {
		uint64_t x = (uint64_t)(slot * CLASSES + cls + 1) * 0x9e3779b97f4a7c15ull;

		for (size_t i = 0; i < len; i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			size_t n = len - i < 8 ? len - i : 8;
			memcpy(p + i, &x, n);
		}
		block_made[slot][cls] = 1;
	}
	buf = p;
	return len;
}

/* The model entry for a multihash, created absent when new. */
static struct block *model_find(const cs_cid *cid, int slot, int cls)
{
	cs_cid_info info;
	uint8_t mh[2 + CS_DIGEST_MAX];

	CHECK(cs_cid_inspect(cid, &info) == 0 && info.digest_len == CS_DIGEST_MAX);
	mh[0] = (uint8_t)(info.hash >> 8);
	mh[1] = (uint8_t)info.hash;
	memcpy(mh + 2, info.digest, CS_DIGEST_MAX);
	for (int i = 0; i < nmodel; i++) {
		if (memcmp(model[i].mh, mh, sizeof(mh)) == 0)
			return &model[i];
	}
	CHECK(nmodel < MODEL_MAX);
	struct block *b = &model[nmodel++];
	memset(b, 0, sizeof(*b));
	memcpy(b->mh, mh, sizeof(mh));
	b->slot = slot;
	b->cls = cls;
	return b;
}

/* The CID a block choice names (computed, not stored) and its model entry. */
static struct block *choose(const uint8_t *arg, cs_cid *cid, size_t *len, uint64_t *codec)
{
	int slot = arg[0] % SLOTS;
	int cls = arg[1] % CLASSES;
	uint64_t hash = arg[0] & 0x80 ? CS_HASH_BLAKE2B_256 : CS_HASH_SHA2_256;

	if (cls == CLASSES - 1)
		cls = arg[1] & 0x80 ? CLASSES - 1 : CLASSES - 2; /* rarely past the limit */
	*len = make_block(slot, cls);
	*codec = slot_codec(slot);
	if (*len > CS_BLOCK_MAX)
		return NULL;
	CHECK(cs_cid_compute(buf, *len, *codec, hash, cid) == 0);
	return model_find(cid, slot, cls);
}

static size_t model_len(const struct block *b)
{
	return class_len[b->cls];
}

/* ---- the store ------------------------------------------------------------------------ */

static cs_store *open_store(uint8_t how)
{
	static const cs_durability dur[4] = {CS_DURABLE_SYNC, CS_DURABLE_INTERVAL, CS_DURABLE_NONE,
	                                     CS_DURABLE_NONE};
	cs_options o;
	cs_store *s;

	cs_options_init(&o);
	o.flags = CS_OPEN_CREATE;
	o.durability = dur[how & 3];
	o.interval_ms = 1;
	o.io = how & 4 ? CS_IO_URING : CS_IO_PSYNC;
	o.segment_bytes = CS_SEG_MIN;
	o.batch_bytes = 6u << 20;
	int rc = cs_store_open(store_dir, &o, &s);
	if (rc == -EPERM || rc == -ENOSYS) { /* io_uring refused here */
		o.io = CS_IO_PSYNC;
		rc = cs_store_open(store_dir, &o, &s);
	}
	CHECK(rc == 0);
	return s;
}

struct list_ctx {
	int seen[MODEL_MAX];
	int n;
};

static int list_block(void *ctx, const cs_cid *cid)
{
	struct list_ctx *lc = ctx;
	cs_cid_info info;

	CHECK(cs_cid_inspect(cid, &info) == 0);
	struct block *b = model_find(cid, -1, -1);
	CHECK(b->present && b->slot >= 0);
	CHECK(info.codec == b->codec);
	lc->seen[b - model]++;
	lc->n++;
	return 0;
}

struct names_ctx {
	int seen[NNAMES];
	int n;
};

static int list_name(void *ctx, const cs_name_info *ni)
{
	struct names_ctx *nc = ctx;
	int i;

	for (i = 0; i < NNAMES; i++) {
		if (strcmp(names[i].name, ni->name) == 0)
			break;
	}
	CHECK(i < NNAMES && model_names[i].set);
	CHECK(ni->root.len == model_names[i].root.len &&
	      memcmp(ni->root.bytes, model_names[i].root.bytes, ni->root.len) == 0);
	CHECK(ni->size == model_names[i].size);
	nc->seen[i]++;
	nc->n++;
	return 0;
}

static void check_stat(cs_store *s)
{
	cs_stat st;
	uint64_t blocks = 0, bytes = 0, pins = 0;

	CHECK(cs_store_stat(s, &st) == 0);
	for (int i = 0; i < nmodel; i++) {
		if (model[i].present) {
			blocks++;
			bytes += model_len(&model[i]);
		}
		pins += model[i].pin != 0;
	}
	CHECK(st.blocks == blocks && st.live_bytes == bytes && st.pins == pins);
}

static int list_pin(void *ctx, const cs_cid *cid, int kind)
{
	struct list_ctx *lc = ctx;
	struct block *b = model_find(cid, -1, -1);

	CHECK(b->pin == kind && b->slot >= 0);
	lc->seen[b - model]++;
	lc->n++;
	return 0;
}

static void check_pins(cs_store *s)
{
	struct list_ctx *lc = calloc(1, sizeof(*lc));
	int want = 0;

	CHECK(lc != NULL);
	CHECK(cs_pin_list(s, list_pin, lc) == 0);
	for (int i = 0; i < nmodel; i++) {
		CHECK(lc->seen[i] == (model[i].pin != 0));
		want += model[i].pin != 0;
	}
	CHECK(lc->n == want);
	free(lc);
}

static void check_names(cs_store *s)
{
	struct names_ctx nc;
	int want = 0;

	if (!names_linked)
		return;
	memset(&nc, 0, sizeof(nc));
	CHECK(cs_name_list(s, list_name, &nc) == 0);
	for (int i = 0; i < NNAMES; i++) {
		want += model_names[i].set;
		CHECK(nc.seen[i] == model_names[i].set);
	}
	CHECK(nc.n == want);
}

/* Check 3: the whole store equals the model. */
static void check_all(cs_store *s)
{
	struct list_ctx *lc = calloc(1, sizeof(*lc));
	uint64_t checked, failed;
	int want = 0;

	CHECK(lc != NULL);
	check_stat(s);
	CHECK(cs_block_list(s, list_block, lc) == 0);
	for (int i = 0; i < nmodel; i++) {
		const struct block *b = &model[i];
		CHECK(lc->seen[i] == b->present);
		if (!b->present)
			continue;
		want++;
		cs_cid cid;
		size_t len = make_block(b->slot, b->cls), got = 0;
		uint64_t hash = (uint64_t)b->mh[0] << 8 | b->mh[1];
		CHECK(cs_cid_compute(buf, len, b->codec, hash, &cid) == 0);
		CHECK(cs_block_get(s, &cid, getbuf, CS_BLOCK_MAX, &got) == 0);
		CHECK(got == len && memcmp(getbuf, buf, len) == 0);
	}
	CHECK(lc->n == want);
	CHECK(cs_store_verify(s, NULL, NULL, &checked, &failed) == 0);
	CHECK(checked == (uint64_t)want && failed == 0);
	check_names(s);
	check_pins(s);
	free(lc);
}

/* ---- operations ----------------------------------------------------------------------- */

static void op_put(cs_store *s, const uint8_t *arg, uint64_t *put_bytes)
{
	cs_cid want, got;
	size_t len;
	uint64_t codec;
	uint64_t hash = arg[0] & 0x80 ? CS_HASH_BLAKE2B_256 : CS_HASH_SHA2_256;
	struct block *b = choose(arg, &want, &len, &codec);

	if (*put_bytes + len > PUT_BYTES_MAX)
		return;
	*put_bytes += len;
	int rc = cs_block_put(s, buf, len, codec, hash, &got);
	if (b == NULL) {
		CHECK(rc == CS_ELIMIT && cs_errmsg()[0] != '\0');
		return;
	}
	CHECK(rc == 0);
	CHECK(got.len == want.len && memcmp(got.bytes, want.bytes, want.len) == 0);
	if (!b->present) {
		b->present = 1;
		b->codec = codec; /* a dedup keeps the codec of the put that wrote it */
	}
}

static void op_get(cs_store *s, const uint8_t *arg, int alloc)
{
	cs_cid cid;
	size_t len, got = 12345;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);
	int rc;

	if (b == NULL)
		return;
	if (alloc) {
		void *data = NULL;
		rc = cs_block_get_alloc(s, &cid, &data, &got);
		if (!b->present) {
			CHECK(rc == CS_ENOTFOUND && data == NULL);
			return;
		}
		CHECK(rc == 0 && got == len && (len == 0 || memcmp(data, buf, len) == 0));
		cs_free(data);
		return;
	}
	switch (arg[2] % 3) {
	case 0: /* a buffer large enough */
		rc = cs_block_get(s, &cid, getbuf, CS_BLOCK_MAX, &got);
		if (b->present)
			CHECK(rc == 0 && got == len && memcmp(getbuf, buf, len) == 0);
		break;
	case 1: /* one byte short: refused with the size needed */
		if (len == 0)
			return;
		rc = cs_block_get(s, &cid, getbuf, len - 1, &got);
		if (b->present)
			CHECK(rc == CS_EBUFSIZE && got == len && cs_errmsg()[0] != '\0');
		break;
	default: /* sizing call */
		rc = cs_block_get(s, &cid, NULL, 0, &got);
		if (b->present)
			CHECK(rc == 0 && got == len);
		break;
	}
	if (!b->present)
		CHECK(rc == CS_ENOTFOUND);
}

static void op_has(cs_store *s, const uint8_t *arg)
{
	cs_cid cid;
	size_t len;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);

	if (b != NULL)
		CHECK(cs_block_has(s, &cid) == b->present);
}

static void op_delete(cs_store *s, const uint8_t *arg)
{
	cs_cid cid;
	size_t len;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);

	if (b == NULL)
		return;
	int rc = cs_block_delete(s, &cid);
	if (b->present && b->pin) {
		CHECK(rc == CS_EPINNED && cs_errmsg()[0] != '\0');
	} else if (b->present) {
		CHECK(rc == 0);
		b->present = 0;
	} else {
		CHECK(rc == CS_ENOTFOUND);
	}
}

static void op_name_set(cs_store *s, const uint8_t *arg)
{
	int i = arg[2] % NNAMES;
	cs_cid cid;
	size_t len;
	uint64_t codec;
	uint64_t size = (uint64_t)arg[2] * 1000003u;
	struct block *b = choose(arg, &cid, &len, &codec);

	if (b == NULL)
		return;
	int rc = cs_name_set(s, names[i].name, &cid, size);
	if (!names[i].valid) {
		/* The header does not order the two checks. */
		CHECK((rc == CS_EINVAL && cs_errmsg()[0] != '\0') ||
		      (rc == CS_ENOTFOUND && !b->present));
	} else if (!b->present) {
		CHECK(rc == CS_ENOTFOUND);
	} else {
		CHECK(rc == 0);
		model_names[i] = (struct name){1, cid, size};
	}
}

static void op_name_get(cs_store *s, const uint8_t *arg)
{
	int i = arg[0] % NNAMES;
	cs_cid root;
	uint64_t size;
	int64_t t;

	int rc = cs_name_get(s, names[i].name, &root, &size, &t);
	if (!names[i].valid) {
		CHECK(rc == CS_EINVAL || rc == CS_ENOTFOUND);
	} else if (!model_names[i].set) {
		CHECK(rc == CS_ENOTFOUND);
	} else {
		CHECK(rc == 0);
		CHECK(root.len == model_names[i].root.len &&
		      memcmp(root.bytes, model_names[i].root.bytes, root.len) == 0);
		CHECK(size == model_names[i].size && t > 0);
	}
}

static void op_name_delete(cs_store *s, const uint8_t *arg)
{
	int i = arg[0] % NNAMES;

	int rc = cs_name_delete(s, names[i].name);
	if (!names[i].valid) {
		CHECK(rc == CS_EINVAL || rc == CS_ENOTFOUND);
	} else if (!model_names[i].set) {
		CHECK(rc == CS_ENOTFOUND);
	} else {
		CHECK(rc == 0);
		model_names[i].set = 0;
	}
}

static void op_pin_add(cs_store *s, const uint8_t *arg)
{
	cs_cid cid;
	size_t len;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);
	/* Recursive only where no link is followed: a dag-pb CID's random bytes decode as no
	 * node, which a recursive pin refuses (CS_ECORRUPT) as the header says. */
	int kind = arg[2] & 1 && codec != CS_CODEC_DAG_PB ? CS_PIN_RECURSIVE : CS_PIN_DIRECT;

	if (b == NULL)
		return;
	int rc = cs_pin_add(s, &cid, kind);
	if (!b->present) {
		CHECK(rc == CS_ENOTFOUND);
	} else if (b->pin == CS_PIN_RECURSIVE && kind == CS_PIN_DIRECT) {
		CHECK(rc == CS_EINVAL && cs_errmsg()[0] != '\0'); /* never made direct */
	} else {
		CHECK(rc == 0);
		b->pin = kind;
	}
}

static void op_pin_rm(cs_store *s, const uint8_t *arg)
{
	cs_cid cid;
	size_t len;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);

	if (b == NULL)
		return;
	int rc = cs_pin_rm(s, &cid);
	CHECK(rc == (b->pin ? 0 : CS_ENOTFOUND));
	b->pin = 0;
}

static void op_pin_test(cs_store *s, const uint8_t *arg)
{
	cs_cid cid;
	size_t len;
	uint64_t codec;
	struct block *b = choose(arg, &cid, &len, &codec);
	int kind = -1;

	if (b == NULL)
		return;
	int rc = cs_pin_test(s, &cid, &kind, NULL);
	CHECK(b->pin ? rc == 0 && kind == b->pin : rc == CS_ENOTFOUND);
}

/* The model's collection: every present block that no name or pin holds goes. */
static void op_gc(cs_store *s)
{
	cs_gc_stat st;
	uint64_t garbage = 0;

	int rc = cs_gc(s, &st);
	CHECK(rc == 0);
	for (int i = 0; i < nmodel; i++) {
		struct block *b = &model[i];
		int named = 0;
		for (int n = 0; n < NNAMES && names_linked; n++)
			named |= model_names[n].set && model_find(&model_names[n].root, -1, -1) == b;
		if (b->present && !b->pin && !named) {
			b->present = 0;
			garbage++;
		}
	}
	CHECK(st.swept_blocks == garbage);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t put_bytes = 0;
	int reopens = 0;

	if (size < 1 || size > INPUT_MAX)
		return -1;
	if (base_dir[0] == '\0')
		init_once();
	int fds = count_fds();
	nmodel = 0;
	memset(model_names, 0, sizeof(model_names));
	op_index = -1;

	cs_store *s = open_store(data[0]);
	check_all(s);
	size_t pos = 1;
	for (op_index = 0; pos < size; op_index++) {
		uint8_t arg[3] = {0, 0, 0};
		int op = data[pos++] % OP_COUNT;
		size_t n = size - pos < 3 ? size - pos : 3;

		memcpy(arg, data + pos, n);
		pos += n;
		switch (op) {
		case OP_PUT:
			op_put(s, arg, &put_bytes);
			break;
		case OP_GET:
			op_get(s, arg, 0);
			break;
		case OP_GET_ALLOC:
			op_get(s, arg, 1);
			break;
		case OP_HAS:
			op_has(s, arg);
			break;
		case OP_DELETE:
			op_delete(s, arg);
			break;
		case OP_SYNC:
			CHECK(cs_store_sync(s) == 0);
			break;
		case OP_STAT:
			check_stat(s);
			break;
		case OP_REOPEN:
			if (reopens++ >= REOPENS_MAX)
				break;
			CHECK(cs_store_close(s) == 0);
			s = open_store(arg[0]);
			check_all(s);
			break;
		case OP_NAME_SET:
			if (names_linked)
				op_name_set(s, arg);
			break;
		case OP_NAME_GET:
			if (names_linked)
				op_name_get(s, arg);
			break;
		case OP_NAME_DELETE:
			if (names_linked)
				op_name_delete(s, arg);
			break;
		case OP_NAME_LIST:
			check_names(s);
			break;
		case OP_PIN_ADD:
			op_pin_add(s, arg);
			break;
		case OP_PIN_RM:
			op_pin_rm(s, arg);
			break;
		case OP_PIN_TEST:
			op_pin_test(s, arg);
			break;
		case OP_GC:
			op_gc(s);
			break;
		}
	}

	/* Every input ends with a reopen that must find the model. */
	op_index = -1;
	CHECK(cs_store_close(s) == 0);
	s = open_store(data[0]);
	check_all(s);
	CHECK(cs_store_close(s) == 0);
	remove_tree();
	CHECK(count_fds() == fds);
	return 0;
}
