/*
 * test_crash.c - power cuts and I/O errors lose nothing acknowledged and half-show nothing,
 * through the fault-injecting backend of tests/fault_io.h.
 *
 *  (a) Crash-state enumeration. Scripted workloads (puts of 1 byte to 4 MiB across batch and
 *      segment boundaries, duplicate puts, deletes, file adds, names; in the "life"
 *      profiles also pins, unpins and, with one writer, garbage collections, whose deletes
 *      the model orders as the sweep does, by multihash; one writer, or three at once;
 *      sync mode, and none mode acknowledged by cs_store_sync; in every profile two
 *      cs_checkpoint calls, a third and two thirds of the way through the first writer's
 *      script, besides the checkpoint the close writes) are first run whole to count their
 *      I/O operations N. Then for every k in 0..N the workload runs again with the power
 *      cut after its k-th operation, and each state the disk could be in (every unsynced
 *      write kept, dropped, torn at random 512-byte sectors, or a random mix of those;
 *      names not yet made durable by a directory sync kept, lost or emptied, and renames
 *      not yet made durable kept or undone; each random policy under several seeds,
 *      duplicate states skipped) is built in a copy of the store and reopened with the real
 *      backend. A checkpoint's file is created, written, synced and renamed through the
 *      backend, so cuts land inside it as they land inside the log. The reopened store must
 *      open; load the last checkpoint that was durable at the cut, or one begun later that
 *      the cut left in place (never fall back to a full replay past a durable one), and
 *      leave no checkpoint.tmp; for each writer equal its model after some prefix of its
 *      operations that contains every acknowledged one (so an acknowledged put is there
 *      byte for byte, an acknowledged delete is not, and an operation in flight happened
 *      whole or not at all, in order); hold no block, name or pin outside the model; read
 *      back every acknowledged file with cs_cat; and pass cs_store_verify. It prints the
 *      number of distinct states checked, and per profile how many opened from a
 *      checkpoint and how many cut inside one.
 *  (b) Error loops. For each operation (open of a new and of an existing store, put, a put
 *      that starts a segment, delete, sync, close, file add, name set and delete, pin add
 *      and remove, a garbage collection, a checkpoint), each kind of I/O call (write, sync,
 *      create, directory sync, rename; each with -EIO and -ENOSPC) and allocations (-ENOMEM;
 *      plain builds, which can replace malloc), the n-th call fails for n = 1, 2, ... until
 *      the operation succeeds. After each failure the caller got a negative code with a
 *      message (a bare -ENOMEM is counted, not failed), never success; reads still work;
 *      writes work or return CS_EPOISONED; and a reopen with the real backend has
 *      everything acknowledged and nothing else, and loads a checkpoint. A close whose own
 *      checkpoint failed warns and succeeds instead. A failed checkpoint returns
 *      CS_EPOISONED when the log's sync failed, else the failure's own code (CS_EFULL for
 *      ENOSPC) and leaves the handle usable; it leaves no checkpoint.tmp, and the directory
 *      as it is then (copied while the handle is open) opens from a checkpoint with every
 *      acknowledged block.
 *  (c) fsync failure: four puts waiting on one batch whose fdatasync fails all get
 *      CS_EPOISONED (the put before, in the batch that synced, succeeds); later writes and
 *      syncs get CS_EPOISONED, never success; reads work; a reopen has every acknowledged
 *      block and none of the failed ones (the fault dropped their pages, as a kernel may).
 *      The same with a failing cs_store_sync in none mode.
 *  (d) A full disk. Through the fault backend: a segment creation failing with ENOSPC or
 *      EDQUOT (the create, or its header write) gives the puts that needed the segment
 *      CS_EFULL naming the cause, leaves no file and no poison, puts that fit the old
 *      segment go on, a retry after the fault succeeds, EIO still poisons, and a reopen has
 *      exactly the acknowledged blocks. For real on a 40 MiB tmpfs: puts until CS_EFULL,
 *      the handle keeps reads and writes that fit, and takes puts again once space is
 *      freed; a reopen has exactly the acknowledged blocks.
 *
 * The states are built on a private tmpfs mounted for the test when it may mount (root),
 * otherwise under $TMPDIR; (d)'s tmpfs half needs the mount and is skipped, saying why,
 * when it cannot have it.
 * CS_CRASH_SEEDS sets the number of seeds per random policy, and CS_CRASH_PROFILE=P runs only
 * the profiles whose names begin with P (the total is then not checked).
 * Everything is seeded; only the batching of concurrent writers and of cs_add's unwaited
 * puts varies from run to run, and a failure names the cut, policy and seed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>

#include "cid.h"
#include "fault_io.h"
#include "store.h"
#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLOW_BUILD 1
#else
#define SLOW_BUILD 0
#endif

/* ---- Allocation failures ---------------------------------------------------------------- */

/* Failing the n-th allocation needs malloc itself: this program replaces it (glibc allows a
 * program to, "Replacing malloc" in its manual) with a countdown in front of glibc's own.
 * Only the arming thread's calls count, so the log's writer thread and the test's own
 * bookkeeping are left alone. Sanitizers bring their own malloc: there the loops skip
 * allocations. aligned_alloc and friends go to glibc uncounted; the library uses none. */
#define ALLOC_FAULTS (!SLOW_BUILD)

static _Thread_local struct {
	int armed;
	uint64_t calls, fail_at, injected;
} t_alloc;

#if ALLOC_FAULTS
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static int alloc_fails(void)
{
	if (!t_alloc.armed || ++t_alloc.calls != t_alloc.fail_at)
		return 0;
	t_alloc.injected++;
	errno = ENOMEM;
	return 1;
}

void *malloc(size_t n)
{
	return alloc_fails() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	return alloc_fails() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	return alloc_fails() ? NULL : __libc_realloc(p, n);
}

void free(void *p)
{
	__libc_free(p);
}
#endif

/* Arms (n > 0) or disarms (n = 0) the calling thread's countdown: its n-th allocation from
 * now fails. */
static void alloc_fail_nth(uint64_t n)
{
	t_alloc.armed = n > 0;
	t_alloc.calls = 0;
	t_alloc.fail_at = n;
	t_alloc.injected = 0;
}

/* ---- Directories --------------------------------------------------------------------- */

static char g_root[256];   /* where every store of the test lives */
static int g_mounted;      /* g_root is our tmpfs */
static uint8_t g_meta[64]; /* a CIDSTORE file, copied into each fresh store directory */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Removes a store directory (flat: files only) and its files. */
static void rm_store(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			assert_int_equal(unlinkat(dirfd(d), e->d_name, 0), 0);
	closedir(d);
	assert_int_equal(rmdir(path), 0);
}

static void write_file(const char *dir, const char *name, const void *p, size_t len)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, len), (ssize_t)len);
	close(fd);
}

/* A fresh store directory holding only the template's CIDSTORE: opening it does no I/O of
 * its own (dir.c creates the meta file with raw syscalls the backend would not see). */
static void fresh_store(const char *path)
{
	rm_store(path);
	assert_int_equal(mkdir(path, 0700), 0);
	write_file(path, "CIDSTORE", g_meta, sizeof(g_meta));
}

static void path_in(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", g_root, name);
}

static int setup(void **state)
{
	char tmpl[512];
	cs_store *s;

	tu_tmpdir(g_root, sizeof(g_root), "crash");
	if (mount("tmpfs", g_root, "tmpfs", 0, "size=1g,mode=0700") == 0) {
		g_mounted = 1;
	} else {
		print_message("note: cannot mount a tmpfs (%s): states are built under %s, "
		              "which is slower\n",
		              strerror(errno), g_root);
	}
	path_in(tmpl, sizeof(tmpl), "template");
	cs_options o = tu_opts();
	store_io_factory = NULL;
	assert_int_equal(cs_store_open(tmpl, &o, &s), 0);
	assert_int_equal(cs_store_close(s), 0);
	char meta[600];
	snprintf(meta, sizeof(meta), "%s/CIDSTORE", tmpl);
	int fd = open(meta, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, g_meta, sizeof(g_meta)), (ssize_t)sizeof(g_meta));
	close(fd);
	rm_store(tmpl);
	return 0;
}

static int teardown(void **state)
{
	store_io_factory = NULL;
	fault_reset();
	if (g_mounted)
		umount2(g_root, MNT_DETACH);
	tu_rmrf(g_root);
	return 0;
}

/* ---- Workload scripts and their model ------------------------------------------------- */

/* What an operation does to the model, one effect per log record it appends. */
enum { E_PUT, E_DEL, E_NSET, E_NDEL, E_PIN, E_UNPIN };

struct eff {
	uint8_t kind;
	int item;      /* block index (E_PUT, E_DEL, E_PIN, E_UNPIN) or name index */
	int root;      /* E_NSET: the block the name is set to; E_PIN: the pin's kind */
	uint64_t size; /* E_NSET */
};

struct blk {
	uint8_t *bytes; /* owned */
	uint32_t len;
	cs_cid cid;
	int known;     /* a file's root is learned from the first, uncut run */
	int deletable; /* a plain put's block (not part of a file) */
	int nkids;     /* a file's root: its leaves are the nkids blocks before it */
};

enum { OP_PUT, OP_DEL, OP_ADD, OP_NSET, OP_NDEL, OP_SYNC, OP_PIN, OP_UNPIN, OP_GC, OP_CKPT };

static const char *const op_name[] = {"put",  "delete", "add",   "name set", "name delete",
                                      "sync", "pin",    "unpin", "gc",       "checkpoint"};

struct op {
	uint8_t kind;
	int blk;         /* OP_PUT, OP_DEL, OP_PIN, OP_UNPIN: the block; OP_ADD: the root's */
	int pin_kind;    /* OP_PIN */
	int name;        /* OP_NSET, OP_NDEL */
	uint64_t size;   /* OP_NSET */
	uint8_t *fbytes; /* OP_ADD: the file (owned) */
	uint32_t flen, chunk;
	int dup;    /* OP_PUT of a present block: writes nothing */
	int e0, e1; /* its effects are effs[e0, e1) */
};

#define NAMES_PER 4

/* One writer's operations, over blocks and names no other writer touches. */
struct script {
	int tid;
	struct op *ops;
	int nops;
	struct eff *effs;
	int neffs;
	struct blk *blks;
	int nblks, capblks;
	char names[NAMES_PER][24];
};

struct profile {
	const char *name;
	cs_durability mode;
	int threads;
	int nops;  /* per writer */
	int big;   /* blocks of megabytes: batches and segments fill */
	int seeds; /* per random policy */
	uint64_t seed;
	int settle; /* one writer, none mode: let each operation's write happen before the
	             * next operation, so that batches hold one operation each */
	int life;   /* pins and unpins too, and garbage collections with one writer */
	int no_ckpt; /* no cs_checkpoint in the script: the close's is enough where each state
	              * costs a copy of megabytes of log */
};

static uint64_t rnd(uint64_t *x)
{
	return fault_rand(x);
}

static uint64_t rnd_in(uint64_t *x, uint64_t lo, uint64_t hi)
{
	return lo + rnd(x) % (hi - lo + 1);
}

static int new_blk(struct script *sc, const uint8_t *bytes, uint32_t len, int deletable)
{
	if (sc->nblks == sc->capblks) {
		sc->capblks = sc->capblks ? 2 * sc->capblks : 64;
		sc->blks = realloc(sc->blks, (size_t)sc->capblks * sizeof(*sc->blks));
		assert_non_null(sc->blks);
	}
	struct blk *b = &sc->blks[sc->nblks];
	memset(b, 0, sizeof(*b));
	b->deletable = deletable;
	if (bytes != NULL) {
		b->bytes = malloc(len ? len : 1);
		assert_non_null(b->bytes);
		memcpy(b->bytes, bytes, len);
		b->len = len;
		assert_int_equal(
		    cs_cid_compute(bytes, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &b->cid), 0);
		b->known = 1;
	}
	return sc->nblks++;
}

static void push_eff(struct script *sc, uint8_t kind, int item, int root, uint64_t size)
{
	sc->effs[sc->neffs++] = (struct eff){kind, item, root, size};
}

/* Checkpoints in writer 0's script (cs_checkpoint), besides the one its close writes. */
#define CKPTS_PER 2

/* The generator's model of one writer's store. */
struct gen {
	uint8_t *present; /* per block */
	uint8_t *pinned;  /* per block: 0, CS_PIN_DIRECT or CS_PIN_RECURSIVE */
	int nset[NAMES_PER];
	int nroot[NAMES_PER]; /* the block each set name points at */
};

enum pick { PICK_PLAIN, PICK_PINNABLE, PICK_PINNED };

/* A random block index of the generator's model that fits `what`, or -1: PICK_PLAIN a
 * present, unpinned plain block (one a delete, dup put or name may take); PICK_PINNABLE an
 * unpinned present plain block or file root; PICK_PINNED a pinned block. */
static int pick(const struct script *sc, const struct gen *g, enum pick what, uint64_t *x)
{
	int n = 0, k = 0;
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < sc->nblks; i++) {
			const struct blk *b = &sc->blks[i];
			int fits = what == PICK_PINNED
			               ? g->pinned[i] != 0
			               : g->present[i] && !g->pinned[i] &&
			                     (b->deletable || (what == PICK_PINNABLE && b->nkids));
			if (!fits)
				continue;
			if (pass == 0)
				n++;
			else if (k-- == 0)
				return i;
		}
		if (n == 0)
			return -1;
		k = (int)(rnd(x) % (uint64_t)n);
	}
	return -1;
}

/* OP_GC's effects: deletes of every present block that no name or pin reaches. Their order
 * is settled by sort_gc_effects() once the files' roots are known. */
static void gen_gc(struct script *sc, struct gen *g);

static uint32_t block_len(const struct profile *pf, uint64_t *x)
{
	uint64_t r = rnd(x) % 100;
	if (pf->big && r < 45)
		return (uint32_t)rnd_in(x, 1500u << 10, CS_BLOCK_MAX);
	if (r < 60)
		return (uint32_t)rnd_in(x, 1, 2000);
	if (r < 90)
		return (uint32_t)rnd_in(x, 2000, 8000);
	return (uint32_t)rnd_in(x, 8000, 40000);
}

static void gen_gc(struct script *sc, struct gen *g)
{
	uint8_t *keep = calloc((size_t)sc->nblks + 1, 1);

	assert_non_null(keep);
	for (int n = 0; n < NAMES_PER; n++)
		if (g->nset[n])
			keep[g->nroot[n]] = 1;
	for (int i = 0; i < sc->nblks; i++) {
		if (!g->pinned[i])
			continue;
		keep[i] = 1;
		for (int k = 1; g->pinned[i] == CS_PIN_RECURSIVE && k <= sc->blks[i].nkids; k++)
			keep[i - k] = 1;
	}
	for (int i = 0; i < sc->nblks; i++) {
		if (g->present[i] && !keep[i]) {
			g->present[i] = 0;
			push_eff(sc, E_DEL, i, 0, 0);
		}
	}
	free(keep);
}

/* Pins, unpins and collections for a `life` profile: returns 1 when it chose one for op. */
static int gen_life(struct script *sc, struct gen *g, const struct profile *pf, struct op *op,
                    uint64_t *x)
{
	uint64_t r = rnd(x) % 100;
	int b;

	if (r < 10 && (b = pick(sc, g, PICK_PINNABLE, x)) >= 0) {
		op->kind = OP_PIN;
		op->blk = b;
		/* A file is pinned recursively: a direct pin would let a collection take its
		 * leaves from under a root that stays. */
		op->pin_kind = sc->blks[b].nkids || rnd(x) % 2 ? CS_PIN_RECURSIVE : CS_PIN_DIRECT;
		g->pinned[b] = (uint8_t)op->pin_kind;
		push_eff(sc, E_PIN, b, op->pin_kind, 0);
		return 1;
	}
	if (r < 16 && (b = pick(sc, g, PICK_PINNED, x)) >= 0) {
		op->kind = OP_UNPIN;
		op->blk = b;
		g->pinned[b] = 0;
		push_eff(sc, E_UNPIN, b, 0, 0);
		return 1;
	}
	if (r < 22 && pf->threads == 1) { /* a collection takes every writer's garbage */
		op->kind = OP_GC;
		gen_gc(sc, g);
		op->dup = op->e0 == sc->neffs; /* nothing to delete: writes nothing */
		return 1;
	}
	return 0;
}

/* Writes a deterministic script for writer tid. Blocks differ between writers because their
 * contents come from seeds that include tid. */
static void gen_script(struct script *sc, int tid, const struct profile *pf)
{
	uint64_t x = pf->seed * 1000003u + (uint64_t)tid;
	size_t maxblks = (size_t)pf->nops * 16 + 16;
	struct gen g = {calloc(maxblks, 1), calloc(maxblks, 1), {0}, {0}};
	uint8_t *buf = malloc(CS_BLOCK_MAX);

	assert_true(g.present != NULL && g.pinned != NULL && buf != NULL);
	memset(sc, 0, sizeof(*sc));
	sc->tid = tid;
	sc->ops = calloc((size_t)pf->nops + CKPTS_PER, sizeof(*sc->ops));
	sc->effs = calloc(maxblks, sizeof(*sc->effs));
	assert_true(sc->ops != NULL && sc->effs != NULL);
	for (int i = 0; i < NAMES_PER; i++)
		snprintf(sc->names[i], sizeof(sc->names[i]), "w%d/file %d", tid, i);
	for (int i = 0; i < pf->nops; i++) {
		if (tid == 0 && !pf->no_ckpt && (i == pf->nops / 3 || i == 2 * pf->nops / 3)) {
			/* A checkpoint a third and two thirds of the way: the operations after
			 * it are replayed over it. Inserted without a random draw, so the rest
			 * of the script is what it would be without them. */
			struct op *ck = &sc->ops[sc->nops++];
			ck->kind = OP_CKPT;
			ck->e0 = ck->e1 = sc->neffs;
		}
		struct op *op = &sc->ops[sc->nops++];
		op->e0 = sc->neffs;
		if (pf->life && gen_life(sc, &g, pf, op, &x)) {
			op->e1 = sc->neffs;
			continue;
		}
		uint64_t r = rnd(&x) % 100;
		int b = pick(sc, &g, PICK_PLAIN, &x);
		if (pf->big && r >= 40)
			r = 99; /* mostly puts: the log must fill batches and a segment */
		int any_name = 0;
		for (int n = 0; n < NAMES_PER; n++)
			any_name |= g.nset[n];
		if (pf->mode == CS_DURABLE_NONE && i > 0 && r < 5) {
			op->kind = OP_SYNC;
		} else if (r < 24 && b >= 0) {
			op->kind = OP_DEL;
			op->blk = b;
			g.present[b] = 0;
			push_eff(sc, E_DEL, b, 0, 0);
		} else if (r < 32 && b >= 0) {
			op->kind = OP_PUT; /* of a present block: nothing is written */
			op->blk = b;
			op->dup = 1;
			push_eff(sc, E_PUT, b, 0, 0);
		} else if (!pf->big && r < 42) {
			op->kind = OP_ADD;
			op->chunk = (uint32_t)rnd_in(&x, 1024, 4096);
			op->flen =
			    op->chunk * (uint32_t)rnd_in(&x, 1, 8) + (uint32_t)rnd_in(&x, 1, 1000);
			op->fbytes = malloc(op->flen);
			assert_non_null(op->fbytes);
			tu_fill(op->fbytes, op->flen, rnd(&x));
			/* The leaves in order, then the root node: the order cs_add puts them. */
			int nkids = 0;
			for (uint32_t o = 0; o < op->flen; o += op->chunk, nkids++) {
				uint32_t n = op->flen - o < op->chunk ? op->flen - o : op->chunk;
				int leaf = new_blk(sc, op->fbytes + o, n, 0);
				g.present[leaf] = 1;
				push_eff(sc, E_PUT, leaf, 0, 0);
			}
			op->blk = new_blk(sc, NULL, 0, 0);
			sc->blks[op->blk].nkids = nkids;
			g.present[op->blk] = 1;
			push_eff(sc, E_PUT, op->blk, 0, 0);
		} else if (r < 52 && b >= 0) {
			op->kind = OP_NSET;
			op->name = (int)(rnd(&x) % NAMES_PER);
			op->blk = b;
			op->size = rnd(&x) % 100000;
			g.nset[op->name] = 1;
			g.nroot[op->name] = b;
			push_eff(sc, E_NSET, op->name, b, op->size);
		} else if (r < 58 && any_name) {
			int n;
			do
				n = (int)(rnd(&x) % NAMES_PER);
			while (!g.nset[n]);
			op->kind = OP_NDEL;
			op->name = n;
			g.nset[n] = 0;
			push_eff(sc, E_NDEL, n, 0, 0);
		} else {
			uint32_t len = block_len(pf, &x);
			tu_fill(buf, len, rnd(&x) ^ (uint64_t)tid << 56);
			op->kind = OP_PUT;
			op->blk = new_blk(sc, buf, len, 1);
			g.present[op->blk] = 1;
			push_eff(sc, E_PUT, op->blk, 0, 0);
		}
		op->e1 = sc->neffs;
	}
	free(buf);
	free(g.present);
	free(g.pinned);
}

/* A collection deletes in pieces in multihash order, each piece one transaction: with its
 * effects in that order, every state a cut can leave is a prefix of them. Needs every
 * block's CID, so it runs after the uncut run has learned the files' roots. */
static const struct script *g_sort_sc;

static int cmp_del_key(const void *a, const void *b)
{
	const struct eff *x = a, *y = b;
	uint8_t kx[CS_KEY_MAX], ky[CS_KEY_MAX];
	assert_int_equal(cid_key(&g_sort_sc->blks[x->item].cid, kx), 0);
	assert_int_equal(cid_key(&g_sort_sc->blks[y->item].cid, ky), 0);
	return memcmp(kx, ky, CS_KEY_MAX);
}

static void sort_gc_effects(struct script *sc)
{
	g_sort_sc = sc;
	for (int i = 0; i < sc->nops; i++) {
		const struct op *op = &sc->ops[i];
		if (op->kind == OP_GC && op->e1 > op->e0)
			qsort(&sc->effs[op->e0], (size_t)(op->e1 - op->e0), sizeof(*sc->effs),
			      cmp_del_key);
	}
}

static void free_script(struct script *sc)
{
	for (int i = 0; i < sc->nops; i++)
		free(sc->ops[i].fbytes);
	for (int i = 0; i < sc->nblks; i++)
		free(sc->blks[i].bytes);
	free(sc->ops);
	free(sc->effs);
	free(sc->blks);
}

static cs_options profile_opts(const struct profile *pf)
{
	cs_options o = tu_opts();
	o.durability = pf->mode;
	/* No background checkpoints: their timing would move the cut points from run to run.
	 * The scripts call cs_checkpoint instead, and every close writes one. */
	o.checkpoint_bytes = 0;
	return o;
}

/* ---- Running a workload --------------------------------------------------------------- */

/* What the checkpoints of a run leave: the one an open must use, and whether a later one may
 * have been renamed into place before the cut. */
struct ckpt_state {
	uint64_t seq; /* the start seq (cs_stat.checkpoint_seq) of the last durable one; 0: none */
	int maybe;    /* a later one was begun and did not return: it may be there instead */
	int n;        /* checkpoints begun, and the I/O operation counts around each */
	uint64_t ops0[CKPTS_PER + 1], ops1[CKPTS_PER + 1];
};

struct worker {
	struct script *sc;
	cs_store *s;
	cs_durability mode;
	int settle;    /* profile.settle */
	int learn;     /* the uncut run: learns the roots of files */
	int acked;     /* effs[0, acked) are acknowledged */
	int attempted; /* no effect at or past it was ever asked for */
	struct ckpt_state ck; /* writer 0's checkpoints */
	int bad;
	char msg[400];
};

static int cid_eq(const cs_cid *a, const cs_cid *b)
{
	return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

static int do_add(struct worker *w, const struct op *op)
{
	struct blk *root = &w->sc->blks[op->blk];
	cs_add_options ao;
	cs_add *a;
	cs_cid cid;
	uint64_t size;
	int rc;

	cs_add_options_init(&ao);
	ao.chunk_size = op->chunk;
	if ((rc = cs_add_begin(w->s, &ao, &a)) != 0)
		return rc;
	if ((rc = cs_add_write(a, op->fbytes, op->flen)) != 0) {
		cs_add_abort(a);
		return rc;
	}
	if ((rc = cs_add_finish(a, &cid, &size)) != 0)
		return rc;
	if (!root->known) {
		void *data;
		size_t len;
		if (!w->learn) {
			w->bad = 1;
			snprintf(w->msg, sizeof(w->msg), "a file's root was never learned");
			return 0;
		}
		if ((rc = cs_block_get_alloc(w->s, &cid, &data, &len)) != 0)
			return rc;
		root->bytes = data; /* cs_free is free */
		root->len = (uint32_t)len;
		root->cid = cid;
		root->known = 1;
	} else if (!cid_eq(&cid, &root->cid) || size != op->flen) {
		w->bad = 1;
		snprintf(w->msg, sizeof(w->msg), "add gave another root or size than before");
	}
	return 0;
}

static int do_op(struct worker *w, const struct op *op)
{
	struct script *sc = w->sc;
	const struct blk *b = &sc->blks[op->blk];
	cs_cid cid;
	int rc;

	switch (op->kind) {
	case OP_PUT:
		rc = cs_block_put(w->s, b->bytes, b->len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		if (rc == 0 && !cid_eq(&cid, &b->cid)) {
			w->bad = 1;
			snprintf(w->msg, sizeof(w->msg), "put returned another CID");
		}
		return rc;
	case OP_DEL:
		return cs_block_delete(w->s, &b->cid);
	case OP_ADD:
		return do_add(w, op);
	case OP_NSET:
		return cs_name_set(w->s, sc->names[op->name], &b->cid, op->size);
	case OP_NDEL:
		return cs_name_delete(w->s, sc->names[op->name]);
	case OP_PIN:
		return cs_pin_add(w->s, &b->cid, op->pin_kind);
	case OP_UNPIN:
		return cs_pin_rm(w->s, &b->cid);
	case OP_CKPT: {
		cs_stat st;
		struct ckpt_state *ck = &w->ck;
		ck->ops0[ck->n] = fault_ops();
		ck->maybe = 1;
		rc = cs_checkpoint(w->s);
		ck->ops1[ck->n++] = fault_ops();
		if (rc == 0) {
			/* Durable: the directory was synced after the rename. */
			cs_store_stat(w->s, &st);
			ck->seq = st.checkpoint_seq;
			ck->maybe = 0;
			if (ck->seq == 0) {
				w->bad = 1;
				snprintf(w->msg, sizeof(w->msg),
				         "a checkpoint left no seq in stat");
			}
		}
		return rc;
	}
	case OP_GC: {
		cs_gc_stat st;
		rc = cs_gc(w->s, &st);
		if (rc == 0 && st.swept_blocks != (uint64_t)(op->e1 - op->e0)) {
			w->bad = 1;
			snprintf(w->msg, sizeof(w->msg), "gc deleted %llu blocks, the model %d",
			         (unsigned long long)st.swept_blocks, op->e1 - op->e0);
		}
		return rc;
	}
	default:
		return cs_store_sync(w->s);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < w->sc->nops; i++) {
		const struct op *op = &w->sc->ops[i];
		uint64_t ops0 = fault_ops();
		w->attempted = op->e1;
		int rc = do_op(w, op);
		if (rc != 0) {
			if (!fault_is_off()) {
				w->bad = 1;
				snprintf(w->msg, sizeof(w->msg),
				         "writer %d op %d (%s) failed with the power on: %s: %s",
				         w->sc->tid, i, op_name[op->kind], cs_strerror(rc),
				         cs_errmsg());
			}
			return NULL;
		}
		/* What a success acknowledges (README, "Durability"): in sync mode the
		 * operation; in none mode everything before a sync or a checkpoint (which
		 * first makes the log durable: cs_checkpoint), and a file add syncs, as does a
		 * collection that deleted something. */
		if (w->mode == CS_DURABLE_SYNC || op->kind == OP_ADD ||
		    (op->kind == OP_GC && op->e1 > op->e0))
			w->acked = op->e1;
		else if (op->kind == OP_SYNC || op->kind == OP_CKPT)
			w->acked = op->e0;
		if (w->bad)
			return NULL;
		/* Bounded: an operation that writes nothing never moves the count. */
		if (w->settle && !op->dup)
			fault_wait_ops(ops0, 5);
	}
	return NULL;
}

#define MAX_THREADS 4

struct outcome {
	int acked[MAX_THREADS];
	int attempted[MAX_THREADS];
	struct ckpt_state ck; /* writer 0's checkpoints and the close's */
};

/*
 * Runs the scripts on a store in dir through the fault backend, the power going off after
 * `off_after` I/O operations, and closes the store. Returns the operations done.
 */
static uint64_t run_workload(const struct profile *pf, struct script *sc, const char *dir,
                             uint64_t off_after, int learn, struct outcome *out)
{
	cs_options o = profile_opts(pf);
	struct worker w[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	cs_store *s;

	memset(out, 0, sizeof(*out));
	fault_reset();
	fault_off_after(off_after);
	store_io_factory = fault_factory;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0) {
		store_io_factory = NULL;
		if (!fault_is_off())
			fail_msg("open with the power on failed: %s: %s", cs_strerror(rc),
			         cs_errmsg());
		return fault_ops();
	}
	for (int t = 0; t < pf->threads; t++) {
		w[t] = (struct worker){
		    .sc = &sc[t], .s = s, .mode = pf->mode, .settle = pf->settle, .learn = learn};
		assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
	}
	for (int t = 0; t < pf->threads; t++)
		pthread_join(th[t], NULL);
	/* The close writes a checkpoint starting at the log's tail, or none when the last one
	 * covers the log already; either way one of that seq. */
	cs_stat st;
	cs_store_stat(s, &st);
	struct ckpt_state *ck = &out->ck;
	*ck = w[0].ck;
	ck->ops0[ck->n] = fault_ops();
	rc = cs_store_close(s);
	ck->ops1[ck->n++] = fault_ops();
	/* A close succeeds when only its checkpoint failed (it warns): with the power on,
	 * nothing fails here. */
	if (rc == 0 && !fault_is_off()) {
		ck->seq = st.next_seq;
		ck->maybe = 0;
	} else {
		ck->maybe = 1;
	}
	store_io_factory = NULL;
	for (int t = 0; t < pf->threads; t++) {
		if (w[t].bad)
			fail_msg("%s", w[t].msg);
		/* A clean close syncs everything: all is acknowledged. It may be clean with
		 * the power off, when the power went off in a checkpoint after the log was
		 * synced: the close's own checkpoint then fails with a warning, and the log
		 * has nothing left to write. */
		out->acked[t] = rc == 0 ? w[t].attempted : w[t].acked;
		out->attempted[t] = w[t].attempted;
		if (rc == 0 && !fault_is_off() && w[t].attempted != sc[t].neffs)
			fail_msg("writer %d stopped early, yet the close succeeded", t);
	}
	if (rc != 0 && !fault_is_off())
		fail_msg("close with the power on failed: %s: %s", cs_strerror(rc), cs_errmsg());
	return fault_ops();
}

/* ---- Checking a reopened store against the model -------------------------------------- */

struct seen {
	uint8_t *blk; /* per block: present */
	uint8_t *pin; /* per block: the kind of its own pin, or 0 */
	uint8_t name[NAMES_PER];
	cs_cid root[NAMES_PER];
	uint64_t size[NAMES_PER];
};

static int count_name(void *ctx, const cs_name_info *n)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

/* Model state: per block present or not and its pin, per name the effect that set it (-1:
 * unset). */
struct mstate {
	uint8_t *blk;
	uint8_t *pin;
	int name[NAMES_PER];
};

static void mstate_init(struct mstate *m, const struct script *sc)
{
	m->blk = calloc((size_t)sc->nblks + 1, 1);
	m->pin = calloc((size_t)sc->nblks + 1, 1);
	assert_true(m->blk != NULL && m->pin != NULL);
	for (int n = 0; n < NAMES_PER; n++)
		m->name[n] = -1;
}

static void mstate_free(struct mstate *m)
{
	free(m->blk);
	free(m->pin);
}

static int blk_mismatch(const struct mstate *m, const struct seen *v, int b)
{
	return m->blk[b] != v->blk[b] || m->pin[b] != v->pin[b];
}

static int name_mismatch(const struct script *sc, const struct mstate *m, const struct seen *v,
                         int n)
{
	if ((m->name[n] >= 0) != v->name[n])
		return 1;
	if (m->name[n] < 0)
		return 0;
	const struct eff *e = &sc->effs[m->name[n]];
	return !cid_eq(&sc->blks[e->root].cid, &v->root[n]) || e->size != v->size[n];
}

/* Applies effect i to m, keeping *mism (the number of items where m and v differ). */
static void apply_eff(const struct script *sc, struct mstate *m, const struct seen *v, int i,
                      int *mism)
{
	const struct eff *e = &sc->effs[i];

	if (e->kind == E_PUT || e->kind == E_DEL || e->kind == E_PIN || e->kind == E_UNPIN) {
		*mism -= blk_mismatch(m, v, e->item);
		if (e->kind == E_PIN || e->kind == E_UNPIN)
			m->pin[e->item] = e->kind == E_PIN ? (uint8_t)e->root : 0;
		else
			m->blk[e->item] = e->kind == E_PUT;
		*mism += blk_mismatch(m, v, e->item);
	} else {
		*mism -= name_mismatch(sc, m, v, e->item);
		m->name[e->item] = e->kind == E_NSET ? i : -1;
		*mism += name_mismatch(sc, m, v, e->item);
	}
}

/* Describes the first difference between the model after `upto` effects and the store. */
static void first_diff(const struct script *sc, const struct seen *v, int upto, char *buf,
                       size_t cap)
{
	struct mstate m;
	int mism = 0;

	mstate_init(&m, sc);
	for (int i = 0; i < upto; i++)
		apply_eff(sc, &m, v, i, &mism);
	snprintf(buf, cap, "no difference");
	for (int b = 0; b < sc->nblks; b++) {
		if (blk_mismatch(&m, v, b)) {
			snprintf(buf, cap, "block %d (%u bytes): model %s, pin %d; store %s, pin %d",
			         b, sc->blks[b].len, m.blk[b] ? "present" : "absent", m.pin[b],
			         v->blk[b] ? "present" : "absent", v->pin[b]);
			break;
		}
	}
	for (int n = 0; n < NAMES_PER; n++)
		if (name_mismatch(sc, &m, v, n))
			snprintf(buf, cap, "name '%s': model %s, store %s", sc->names[n],
			         m.name[n] >= 0 ? "set" : "unset", v->name[n] ? "set" : "unset");
	mstate_free(&m);
}

/*
 * Finds a prefix p in [acked, attempted] of the writer's effects whose model state equals
 * what the store holds, or fails naming the first difference at p = acked. Returns p.
 */
static int match_prefix(const struct script *sc, const struct seen *v, int acked, int attempted,
                        const char *where)
{
	struct mstate m;
	int mism = 0, found = -1;

	mstate_init(&m, sc);
	for (int b = 0; b < sc->nblks; b++)
		mism += blk_mismatch(&m, v, b);
	for (int n = 0; n < NAMES_PER; n++)
		mism += name_mismatch(sc, &m, v, n);
	for (int i = 0; i < acked; i++)
		apply_eff(sc, &m, v, i, &mism);
	for (int p = acked;; p++) {
		if (mism == 0) {
			found = p;
			break;
		}
		if (p == attempted)
			break;
		apply_eff(sc, &m, v, p, &mism);
	}
	mstate_free(&m);
	if (found < 0) {
		char diff[200];
		first_diff(sc, v, acked, diff, sizeof(diff));
		fail_msg("%s: writer %d: the store matches no prefix of its operations between "
		         "the %d acknowledged and %d attempted effects; at %d: %s",
		         where, sc->tid, acked, attempted, acked, diff);
	}
	return found;
}

static uint8_t *g_buf; /* CS_BLOCK_MAX bytes */

/* Reopens dir with the real backend and checks it against the writers' models and what the
 * checkpoints left; sets *from_ckpt (may be NULL) when the open loaded a checkpoint. */
static void check_store(const char *dir, const struct profile *pf, struct script *sc,
                        const struct outcome *oc, const char *where, uint64_t *segments,
                        int *from_ckpt)
{
	cs_options o = profile_opts(pf);
	uint64_t blocks = 0, names = 0, pins = 0, listed = 0, checked, failed;
	cs_store *s;
	cs_stat st;

	store_io_factory = NULL;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0)
		fail_msg("%s: reopen failed: %s: %s", where, cs_strerror(rc), cs_errmsg());
	for (int t = 0; t < pf->threads; t++) {
		struct script *c = &sc[t];
		struct seen v = {calloc((size_t)c->nblks + 1, 1), calloc((size_t)c->nblks + 1, 1),
		                 {0}, {{0}}, {0}};
		size_t len;
		assert_true(v.blk != NULL && v.pin != NULL);
		for (int b = 0; b < c->nblks; b++) {
			const struct blk *k = &c->blks[b];
			assert_true(k->known);
			rc = cs_block_get(s, &k->cid, g_buf, CS_BLOCK_MAX, &len);
			if (rc == CS_ENOTFOUND)
				continue;
			if (rc != 0)
				fail_msg("%s: get of block %d: %s: %s", where, b, cs_strerror(rc),
				         cs_errmsg());
			if (len != k->len || memcmp(g_buf, k->bytes, len) != 0)
				fail_msg("%s: block %d reads back wrong bytes", where, b);
			v.blk[b] = 1;
			blocks++;
		}
		for (int b = 0; b < c->nblks; b++) {
			int kind;
			rc = cs_pin_test(s, &c->blks[b].cid, &kind, NULL);
			if (rc != 0 && rc != CS_ENOTFOUND)
				fail_msg("%s: pin test of block %d: %s: %s", where, b,
				         cs_strerror(rc), cs_errmsg());
			if (rc == 0 && kind != CS_PIN_DIRECT && kind != CS_PIN_RECURSIVE &&
			    kind != CS_PIN_INDIRECT)
				fail_msg("%s: block %d has a pin of kind %d", where, b, kind);
			if (rc == 0 && kind != CS_PIN_INDIRECT) {
				v.pin[b] = (uint8_t)kind;
				pins++;
			}
		}
		for (int n = 0; n < NAMES_PER; n++) {
			rc = cs_name_get(s, c->names[n], &v.root[n], &v.size[n], NULL);
			if (rc != 0 && rc != CS_ENOTFOUND)
				fail_msg("%s: name get: %s: %s", where, cs_strerror(rc),
				         cs_errmsg());
			v.name[n] = rc == 0;
			names += rc == 0;
		}
		int p = match_prefix(c, &v, oc->acked[t], oc->attempted[t], where);
		/* Every file whose add completed within the prefix, and that no collection
		 * took a block of, reads back whole. */
		for (int i = 0; i < c->nops; i++) {
			const struct op *op = &c->ops[i];
			size_t got;
			int whole = op->kind == OP_ADD && op->e1 <= p;
			for (int k = 0; whole && k <= c->blks[op->blk].nkids; k++)
				whole = v.blk[op->blk - k];
			if (!whole)
				continue;
			rc = cs_cat(s, &c->blks[op->blk].cid, 0, g_buf, op->flen, &got, NULL);
			if (rc != 0 || got != op->flen || memcmp(g_buf, op->fbytes, got) != 0)
				fail_msg("%s: file of op %d does not read back: %s", where, i,
				         cs_strerror(rc));
		}
		free(v.blk);
		free(v.pin);
	}
	cs_store_stat(s, &st);
	if (segments != NULL)
		*segments = st.segments;
	/* The open used the last durable checkpoint, or one begun later that the cut left in
	 * place; it never fell back to a full replay past a durable one. */
	const struct ckpt_state *ck = &oc->ck;
	if (ck->maybe ? st.checkpoint_seq < ck->seq : st.checkpoint_seq != ck->seq)
		fail_msg("%s: the open used the checkpoint of seq %llu, where the last durable "
		         "one has seq %llu%s (0: none)",
		         where, (unsigned long long)st.checkpoint_seq, (unsigned long long)ck->seq,
		         ck->maybe ? " or a later one was begun" : "");
	if (faccessat(s->dir.dirfd, "checkpoint.tmp", F_OK, 0) == 0)
		fail_msg("%s: the open left a checkpoint.tmp", where);
	if (from_ckpt != NULL)
		*from_ckpt = st.checkpoint_seq != 0;
	if (st.blocks != blocks)
		fail_msg("%s: the store holds %llu blocks, the model %llu: something half-appeared",
		         where, (unsigned long long)st.blocks, (unsigned long long)blocks);
	if (st.pins != pins)
		fail_msg("%s: the store holds %llu pins, the model %llu: something half-appeared",
		         where, (unsigned long long)st.pins, (unsigned long long)pins);
	assert_int_equal(cs_name_list(s, count_name, &listed), 0);
	if (listed != names)
		fail_msg("%s: the store lists %llu names, the model %llu", where,
		         (unsigned long long)listed, (unsigned long long)names);
	rc = cs_store_verify(s, NULL, NULL, &checked, &failed);
	if (rc != 0)
		fail_msg("%s: verify: %llu of %llu blocks failed", where,
		         (unsigned long long)failed, (unsigned long long)checked);
	rc = cs_store_close(s);
	if (rc != 0)
		fail_msg("%s: close after reopen: %s: %s", where, cs_strerror(rc), cs_errmsg());
}

/* ---- (a) Crash-state enumeration ------------------------------------------------------ */

static int seeds_scale(void)
{
	const char *e = getenv("CS_CRASH_SEEDS");
	int v = e != NULL ? atoi(e) : 0;
	return v > 0 ? v : 0;
}

#define MAX_DIGESTS 512

/* Runs one profile's enumeration; returns the distinct crash states it checked. */
static uint64_t enumerate(const struct profile *pf)
{
	struct script sc[MAX_THREADS];
	struct outcome oc;
	char wdir[512], idir[512], where[400];
	uint64_t digests[MAX_DIGESTS], states = 0, cuts = 0, from_ckpt = 0, in_ckpt = 0;
	int seeds = seeds_scale() ? seeds_scale() : pf->seeds;
	double t0 = now_s(), t_run = 0, t_build = 0, t_check = 0, t1;

	for (int t = 0; t < pf->threads; t++)
		gen_script(&sc[t], t, pf);
	path_in(wdir, sizeof(wdir), "w");
	path_in(idir, sizeof(idir), "img");

	/* The uncut run: counts the operations, learns the files' roots, and its clean
	 * result is the first state checked. */
	fresh_store(wdir);
	uint64_t n = run_workload(pf, sc, wdir, FAULT_OFF, 1, &oc);
	for (int t = 0; t < pf->threads; t++)
		sort_gc_effects(&sc[t]);
	snprintf(where, sizeof(where), "%s: uncut run", pf->name);
	uint64_t segments;
	check_store(wdir, pf, sc, &oc, where, &segments, NULL);
	const struct ckpt_state learned = oc.ck; /* where the checkpoints' I/O lies */
	if (pf->big && segments < 2)
		fail_msg("%s: the workload never started a second segment", pf->name);
	states++;

	/* An odd stride: a sync-mode write and its sync are two operations. Five still puts
	 * about three cuts into each checkpoint's sixteen. */
	for (uint64_t k = 0; k <= n; k += SLOW_BUILD ? 5 : 1) {
		int ndig = 0, inside = 0;
		for (int j = 0; j < learned.n; j++)
			inside |= learned.ops0[j] < k && k < learned.ops1[j];
		t1 = now_s();
		fresh_store(wdir);
		run_workload(pf, sc, wdir, k, 0, &oc);
		t_run += now_s() - t1;
		int wfd = open(wdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(wfd >= 0);
		for (int pol = 0; pol < FAULT_NPOLICIES; pol++) {
			int nseeds = pol == FAULT_KEEP || pol == FAULT_DROP ? 1 : seeds;
			for (int seed = 1; seed <= nseeds; seed++) {
				struct fault_cut plan, cut;
				int dup = 0;
				fault_power_cut(-1, (enum fault_policy)pol, (uint64_t)seed, 1,
				                &plan);
				for (int i = 0; i < ndig && !dup; i++)
					dup = digests[i] == plan.digest;
				if (dup)
					continue;
				if (ndig < MAX_DIGESTS)
					digests[ndig++] = plan.digest;
				t1 = now_s();
				fresh_store(idir);
				int ifd = open(idir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
				assert_true(ifd >= 0);
				fault_copy_files(wfd, ifd);
				fault_power_cut(ifd, (enum fault_policy)pol, (uint64_t)seed, 0,
				                &cut);
				close(ifd);
				assert_true(cut.digest == plan.digest);
				snprintf(
				    where, sizeof(where),
				    "%s: power cut after I/O op %llu of %llu, policy %s, seed %d "
				    "(%llu unsynced writes: %llu kept, %llu dropped, %llu torn; "
				    "%llu files removed, %llu emptied)",
				    pf->name, (unsigned long long)k, (unsigned long long)n,
				    fault_policy_name[pol], seed, (unsigned long long)cut.writes,
				    (unsigned long long)cut.kept, (unsigned long long)cut.dropped,
				    (unsigned long long)cut.torn,
				    (unsigned long long)cut.files_removed,
				    (unsigned long long)cut.files_emptied);
				double t2 = now_s();
				t_build += t2 - t1;
				int fc;
				check_store(idir, pf, sc, &oc, where, NULL, &fc);
				t_check += now_s() - t2;
				states++;
				from_ckpt += fc;
				in_ckpt += inside;
			}
		}
		close(wfd);
		cuts++;
	}
	rm_store(wdir);
	rm_store(idir);
	print_message("  %-10s %d writer(s), %4llu I/O ops, %4llu cut points, %6llu states, "
	              "%.1f s (runs %.1f, images %.1f, checks %.1f)\n",
	              pf->name, pf->threads, (unsigned long long)n, (unsigned long long)cuts,
	              (unsigned long long)states, now_s() - t0, t_run, t_build, t_check);
	char spans[120] = "";
	for (int j = 0; j < learned.n; j++)
		snprintf(spans + strlen(spans), sizeof(spans) - strlen(spans), "%s%llu..%llu",
		         j ? ", " : "", (unsigned long long)learned.ops0[j],
		         (unsigned long long)learned.ops1[j]);
	print_message("  %-10s %llu states opened from a checkpoint; %llu cut inside one of the "
	              "%d checkpoints (I/O ops %s, the last the close's)\n",
	              "", (unsigned long long)from_ckpt, (unsigned long long)in_ckpt, learned.n,
	              spans);
	if (pf->life) {
		int count[OP_CKPT + 1] = {0}, swept = 0;
		for (int t = 0; t < pf->threads; t++) {
			for (int i = 0; i < sc[t].nops; i++) {
				const struct op *op = &sc[t].ops[i];
				count[op->kind]++;
				swept += op->kind == OP_GC ? op->e1 - op->e0 : 0;
			}
		}
		print_message("  %-10s of the operations: %d pins, %d unpins, %d collections "
		              "deleting %d blocks\n",
		              "", count[OP_PIN], count[OP_UNPIN], count[OP_GC], swept);
	}
	for (int t = 0; t < pf->threads; t++)
		free_script(&sc[t]);
	return states;
}

static void test_crash_states(void **state)
{
	/* Seeds per random policy are sized so that one run checks well over 10,000 distinct
	 * states, in about the time it took before the checkpoints' I/O joined the scripts;
	 * the big profiles, where each state copies megabytes of log, leave the checkpoints to
	 * the close. A sanitizer build, where each reopen costs ten times as much (every
	 * thread start and large allocation is instrumented), runs the same workloads with
	 * fewer seeds, skips the repeats and cuts after every fifth operation: over a thousand
	 * states. */
	const struct profile profiles[] = {
	    {"sync", CS_DURABLE_SYNC, 1, 90, 0, SLOW_BUILD ? 2 : 8, 11, 0, 0, 0},
	    {"none", CS_DURABLE_NONE, 1, 100, 0, SLOW_BUILD ? 6 : 16, 12, 1, 0, 0},
	    {"none-batched", CS_DURABLE_NONE, 1, 100, 0, SLOW_BUILD ? 0 : 16, 18, 0, 0, 0},
	    {"sync-3w", CS_DURABLE_SYNC, 3, 30, 0, SLOW_BUILD ? 2 : 6, 13, 0, 0, 0},
	    {"none-3w", CS_DURABLE_NONE, 3, 40, 0, SLOW_BUILD ? 3 : 10, 14, 0, 0, 0},
	    {"big-sync", CS_DURABLE_SYNC, 1, 24, 1, 1, 15, 0, 0, 1},
	    {"big-none", CS_DURABLE_NONE, 1, 24, 1, 1, 16, 0, 0, 1},
	    {"life-sync", CS_DURABLE_SYNC, 1, 90, 0, SLOW_BUILD ? 2 : 6, 21, 0, 1, 0},
	    {"life-none", CS_DURABLE_NONE, 1, 100, 0, SLOW_BUILD ? 3 : 8, 22, 1, 1, 0},
	    {"life-3w", CS_DURABLE_SYNC, 3, 30, 0, SLOW_BUILD ? 1 : 4, 23, 0, 1, 0},
	};
	uint64_t total = 0;
	double t0 = now_s();

	g_buf = malloc(CS_BLOCK_MAX);
	assert_non_null(g_buf);
	const char *only = getenv("CS_CRASH_PROFILE");
	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++)
		if ((profiles[i].seeds > 0 || seeds_scale() > 0) &&
		    (only == NULL || strncmp(profiles[i].name, only, strlen(only)) == 0))
			total += enumerate(&profiles[i]);
	free(g_buf);
	g_buf = NULL;
	print_message("crash states checked: %llu (%.1f s)\n", (unsigned long long)total,
	              now_s() - t0);
	if (!SLOW_BUILD && seeds_scale() == 0 && only == NULL)
		assert_true(total >= 10000);
}

/* ---- (b) Error loops ------------------------------------------------------------------ */

enum eop {
	EO_OPEN_NEW,
	EO_OPEN_OLD,
	EO_PUT,
	EO_PUT_SEG,
	EO_DELETE,
	EO_SYNC,
	EO_CLOSE,
	EO_ADD,
	EO_NSET,
	EO_NDEL,
	EO_PIN,
	EO_UNPIN,
	EO_GC,
	EO_CHECKPOINT,
	EO_N
};

static const char *const eop_name[EO_N] = {
    "open (new store)", "open (existing)",   "put",      "put (new segment)", "delete",
    "sync (none mode)", "close (none mode)", "file add", "name set",          "name delete",
    "pin add",          "pin remove",        "gc",       "checkpoint (none)"};

/* The operations that begin with two unacknowledged puts (none mode), which they make
 * durable: a sync, a close, a checkpoint (which first syncs the log). */
static int el_syncs(int op)
{
	return op == EO_SYNC || op == EO_CLOSE || op == EO_CHECKPOINT;
}

/* The base stores hold EL_BASE blocks: base[0] named "base", base[2] pinned direct; base[1]
 * and base[3] are garbage, which EO_GC deletes (in one piece, so both or neither). */
static int el_garbage(int i)
{
	return i == 1 || i == 3;
}

/* A block the error loops know. */
struct kb {
	uint8_t *bytes; /* owned */
	uint32_t len;
	cs_cid cid;
};

#define EL_BASE   4 /* acknowledged before each operation */
#define EL_FILL   4 /* fill segment 1 of the "full" base */
#define EL_LEAVES 8

static struct {
	struct kb base[EL_BASE], fill[EL_FILL], opb[2], probe;
	uint8_t *file;
	uint32_t flen, chunk;
	struct kb leaves[EL_LEAVES];
	int nleaves;
	cs_cid froot;
	char based[512], fulld[512], dir[512];
} el;

static void kb_make(struct kb *k, uint32_t len, uint64_t seed)
{
	k->bytes = malloc(len);
	assert_non_null(k->bytes);
	k->len = len;
	tu_fill(k->bytes, len, seed);
	assert_int_equal(cs_cid_compute(k->bytes, len, CS_CODEC_RAW, CS_HASH_SHA2_256, &k->cid), 0);
}

static int kb_put(cs_store *s, const struct kb *k)
{
	cs_cid cid;
	return cs_block_put(s, k->bytes, k->len, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
}

/* 1 present (bytes checked), 0 absent; fails on anything else. */
static int kb_present(cs_store *s, const struct kb *k, const char *where)
{
	size_t len;
	int rc = cs_block_get(s, &k->cid, g_buf, CS_BLOCK_MAX, &len);
	if (rc == CS_ENOTFOUND)
		return 0;
	if (rc != 0)
		fail_msg("%s: get: %s: %s", where, cs_strerror(rc), cs_errmsg());
	if (len != k->len || memcmp(g_buf, k->bytes, len) != 0)
		fail_msg("%s: a block reads back wrong bytes", where);
	return 1;
}

static int el_add(cs_store *s, cs_cid *root)
{
	cs_add_options ao;
	cs_add *a;
	int rc;

	cs_add_options_init(&ao);
	ao.chunk_size = el.chunk;
	if ((rc = cs_add_begin(s, &ao, &a)) != 0)
		return rc;
	if ((rc = cs_add_write(a, el.file, el.flen)) != 0) {
		cs_add_abort(a);
		return rc;
	}
	return cs_add_finish(a, root, NULL);
}

/* The base stores, made once with the real backend: EL_BASE blocks and a name, and the same
 * with segment 1 so full that the next 1 MiB put starts segment 2. */
static void el_prepare(void)
{
	cs_options o = tu_opts();
	cs_store *s;

	for (int i = 0; i < EL_BASE; i++)
		kb_make(&el.base[i], 3000 + 100 * (uint32_t)i, 500 + (uint64_t)i);
	for (int i = 0; i < EL_FILL; i++)
		kb_make(&el.fill[i], i < 3 ? CS_BLOCK_MAX : 3500u << 10, 600 + (uint64_t)i);
	kb_make(&el.opb[0], 1u << 20, 700);
	kb_make(&el.opb[1], 5000, 701);
	kb_make(&el.probe, 4000, 702);
	el.chunk = 2048;
	el.flen = 5 * el.chunk + 777;
	el.file = malloc(el.flen);
	assert_non_null(el.file);
	tu_fill(el.file, el.flen, 703);
	for (uint32_t off = 0; off < el.flen; off += el.chunk) {
		struct kb *k = &el.leaves[el.nleaves++];
		k->len = el.flen - off < el.chunk ? el.flen - off : el.chunk;
		k->bytes = malloc(k->len);
		assert_non_null(k->bytes);
		memcpy(k->bytes, el.file + off, k->len);
		assert_int_equal(
		    cs_cid_compute(k->bytes, k->len, CS_CODEC_RAW, CS_HASH_SHA2_256, &k->cid), 0);
	}

	store_io_factory = NULL;
	path_in(el.based, sizeof(el.based), "el-base");
	path_in(el.fulld, sizeof(el.fulld), "el-full");
	path_in(el.dir, sizeof(el.dir), "el");
	/* The file's root, learned from a scratch store. */
	rm_store(el.dir);
	assert_int_equal(cs_store_open(el.dir, &o, &s), 0);
	assert_int_equal(el_add(s, &el.froot), 0);
	assert_int_equal(cs_store_close(s), 0);
	rm_store(el.dir);

	rm_store(el.based);
	assert_int_equal(cs_store_open(el.based, &o, &s), 0);
	for (int i = 0; i < EL_BASE; i++)
		assert_int_equal(kb_put(s, &el.base[i]), 0);
	assert_int_equal(cs_name_set(s, "base", &el.base[0].cid, 1), 0);
	assert_int_equal(cs_pin_add(s, &el.base[2].cid, CS_PIN_DIRECT), 0);
	assert_int_equal(cs_store_close(s), 0);
	fault_copy_store(el.based, el.fulld);
	assert_int_equal(cs_store_open(el.fulld, &o, &s), 0);
	for (int i = 0; i < EL_FILL; i++)
		assert_int_equal(kb_put(s, &el.fill[i]), 0);
	cs_stat st;
	cs_store_stat(s, &st);
	assert_int_equal(st.segments, 1);
	assert_true(st.log_bytes + (1u << 20) + 80 > o.segment_bytes);
	assert_int_equal(cs_store_close(s), 0);
}

static void el_free(void)
{
	for (int i = 0; i < EL_BASE; i++)
		free(el.base[i].bytes);
	for (int i = 0; i < EL_FILL; i++)
		free(el.fill[i].bytes);
	for (int i = 0; i < el.nleaves; i++)
		free(el.leaves[i].bytes);
	free(el.opb[0].bytes);
	free(el.opb[1].bytes);
	free(el.probe.bytes);
	free(el.file);
	rm_store(el.based);
	rm_store(el.fulld);
	rm_store(el.dir);
	memset(&el, 0, sizeof(el));
}

/* The error loops' kinds: the backend's, and allocations. */
#define EL_ALLOC  FAULT_NKINDS
#define EL_NKINDS (FAULT_NKINDS + 1)

static const char *el_kind_name(int kind)
{
	return kind == EL_ALLOC ? "allocation" : fault_kind_name[kind];
}

struct el_stats {
	uint64_t failures, poisoned, usable;
	uint64_t silent;            /* failures returned without a message */
	uint64_t absorbed;          /* allocation failures the operation got over */
	uint64_t close_ckpt;        /* failures of the checkpoint a close writes: a warning */
	char silent_ops[300];       /* which operations those were */
	int calls[EO_N][EL_NKINDS]; /* calls of each kind the operation makes */
	int codes[EO_N][6];         /* distinct codes it returned */
	int ncodes[EO_N];
};

static void note_code(struct el_stats *st, enum eop op, int rc)
{
	for (int i = 0; i < st->ncodes[op]; i++)
		if (st->codes[op][i] == rc)
			return;
	if (st->ncodes[op] < 6)
		st->codes[op][st->ncodes[op]++] = rc;
}

/* After cs_checkpoint on s failed with rc, a call under it failing with err: the code is the
 * documented one; no checkpoint.tmp is left; and the directory as it is now (copied while s
 * stays open, as a crash would leave it with every write kept) opens from a checkpoint, the
 * base store's or the new one, with every base block and pin, and the puts before the
 * checkpoint if s says they became durable (the log is synced once the tables are copied,
 * so a failure before that leaves them in memory). */
static void el_check_failed_checkpoint(cs_store *s, int err, int rc, const char *where)
{
	char copy[600], tmp[600];
	cs_options o = tu_opts();
	cs_stat st;
	cs_store *c;

	cs_store_stat(s, &st);
	int synced = st.durable_seq >= st.next_seq;

	/* A failed log sync poisons (and the checkpoint says so); the file's own failures do
	 * not, and ENOSPC in them is CS_EFULL (cs_checkpoint). */
	if (rc != CS_EPOISONED && rc != -ENOMEM && rc != (err == -ENOSPC ? CS_EFULL : err))
		fail_msg("%s: returned %s, not CS_EPOISONED or the error's documented code", where,
		         cs_strerror(rc));
	snprintf(tmp, sizeof(tmp), "%s/checkpoint.tmp", el.dir);
	if (access(tmp, F_OK) == 0)
		fail_msg("%s: the failed checkpoint left its checkpoint.tmp", where);
	snprintf(copy, sizeof(copy), "%s-copy", el.dir);
	fault_copy_store(el.dir, copy);
	o.durability = CS_DURABLE_NONE;
	int (*factory)(struct io **) = store_io_factory;
	store_io_factory = NULL;
	int orc = cs_store_open(copy, &o, &c);
	store_io_factory = factory;
	if (orc != 0)
		fail_msg("%s: open of the directory after the failure: %s: %s", where,
		         cs_strerror(orc), cs_errmsg());
	cs_store_stat(c, &st);
	if (st.checkpoint_seq == 0)
		fail_msg("%s: the directory after the failure opened by a full replay", where);
	for (int i = 0; i < EL_BASE; i++)
		if (!kb_present(c, &el.base[i], where))
			fail_msg("%s: base block %d lost after the failed checkpoint", where, i);
	for (int i = 0; i < 2 && synced; i++)
		if (!kb_present(c, &el.opb[i], where))
			fail_msg("%s: a put the checkpoint synced is lost", where);
	int pkind;
	if (cs_pin_test(c, &el.base[2].cid, &pkind, NULL) != 0 || pkind != CS_PIN_DIRECT)
		fail_msg("%s: the pin on base block 2 lost after the failed checkpoint", where);
	assert_int_equal(cs_store_close(c), 0);
	rm_store(copy);
}

/* Set when the store warned that the checkpoint its close writes failed. */
static int el_close_ckpt_failed;

static void el_log(void *ctx, int level, const char *msg)
{
	if (level == CS_LOG_WARN && strstr(msg, "checkpoint at close failed") != NULL)
		el_close_ckpt_failed = 1;
}

/*
 * One turn of an error loop: operation op with the n-th call of `kind` failing with err.
 * Returns 1 when the operation got through without meeting the failure.
 */
static int el_turn(enum eop op, int kind, int err, uint64_t n, struct el_stats *st)
{
	cs_options o = tu_opts();
	cs_store *s = NULL;
	char where[300];
	int rc, acked = 0, probe_acked = 0, poisoned = 0;

	snprintf(where, sizeof(where), "%s, %s call %llu failing with %s", eop_name[op],
	         el_kind_name(kind), (unsigned long long)n, cs_strerror(err));
	if (el_syncs(op))
		o.durability = CS_DURABLE_NONE;
	o.log = el_log;
	el_close_ckpt_failed = 0;
	rm_store(el.dir);
	if (op != EO_OPEN_NEW)
		fault_copy_store(op == EO_PUT_SEG ? el.fulld : el.based, el.dir);
	fault_reset();
	fault_g.drop_on_sync_fail = 1;
	fault_g.partial_writes = (int)(n & 1); /* a failed write lands half its bytes, or none */
	/* Allocation failures run on the real backend: the fault backend allocates too. */
	store_io_factory = kind == EL_ALLOC ? NULL : fault_factory;
	if (op != EO_OPEN_NEW && op != EO_OPEN_OLD) {
		rc = cs_store_open(el.dir, &o, &s);
		if (rc != 0)
			fail_msg("%s: open before the fault: %s", where, cs_errmsg());
		if (el_syncs(op)) {
			assert_int_equal(kb_put(s, &el.opb[0]), 0); /* not yet acknowledged */
			assert_int_equal(kb_put(s, &el.opb[1]), 0);
		}
	}
	uint64_t calls0 = 0;
	if (kind == EL_ALLOC) {
		alloc_fail_nth(n);
	} else {
		fault_fail_nth((enum fault_kind)kind, n, err);
		calls0 = fault_read(&fault_g.calls[kind]);
	}
	cs_cid root;
	switch (op) {
	case EO_OPEN_NEW:
	case EO_OPEN_OLD:
		rc = cs_store_open(el.dir, &o, &s);
		break;
	case EO_PUT:
	case EO_PUT_SEG:
		rc = kb_put(s, &el.opb[0]);
		break;
	case EO_DELETE:
		rc = cs_block_delete(s, &el.base[1].cid);
		break;
	case EO_SYNC:
		rc = cs_store_sync(s);
		break;
	case EO_CLOSE:
		rc = cs_store_close(s);
		s = NULL;
		break;
	case EO_ADD:
		rc = el_add(s, &root);
		if (rc == 0 && !cid_eq(&root, &el.froot))
			fail_msg("%s: the add gave another root", where);
		break;
	case EO_NSET:
		rc = cs_name_set(s, "new", &el.base[2].cid, 7);
		break;
	case EO_NDEL:
		rc = cs_name_delete(s, "base");
		break;
	case EO_PIN:
		rc = cs_pin_add(s, &el.base[3].cid, CS_PIN_RECURSIVE);
		break;
	case EO_UNPIN:
		rc = cs_pin_rm(s, &el.base[2].cid);
		break;
	case EO_CHECKPOINT:
		rc = cs_checkpoint(s);
		break;
	default:
		rc = cs_gc(s, NULL);
		break;
	}
	/* What follows must not meet the countdown. */
	int injected, calls;
	if (kind == EL_ALLOC) {
		injected = t_alloc.injected > 0;
		calls = (int)t_alloc.calls;
		alloc_fail_nth(0);
	} else {
		fault_fail_nth((enum fault_kind)kind, 0, 0);
		injected = fault_injected() > 0;
		calls = (int)(fault_read(&fault_g.calls[kind]) - calls0);
	}
	if (op == EO_CLOSE && injected && rc == 0 && el_close_ckpt_failed) {
		/* The checkpoint a close writes failed after the log was made durable: that
		 * costs the next open time only, so the close warns and succeeds. */
		st->close_ckpt++;
		acked = 1;
	} else if (!injected || (kind == EL_ALLOC && rc == 0)) {
		/* An allocation failure may be absorbed (the io_uring backend's, by falling
		 * back to psync): then the operation simply succeeded. */
		if (rc != 0)
			fail_msg("%s: failed with no fault injected: %s: %s", where,
			         cs_strerror(rc), cs_errmsg());
		if (!injected && calls > st->calls[op][kind])
			st->calls[op][kind] = calls;
		st->absorbed += injected;
		acked = 1;
	} else {
		/* The caller must hear of it, with a message, and never get success. A bare
		 * -ENOMEM is clear enough; those are counted and named in the summary. */
		if (rc >= 0)
			fail_msg("%s: returned %d although a call under it failed", where, rc);
		if (cs_errmsg()[0] == '\0' && !(kind == EL_ALLOC && rc == -ENOMEM))
			fail_msg("%s: returned %s with no message", where, cs_strerror(rc));
		if (cs_errmsg()[0] == '\0') {
			st->silent++;
			if (strstr(st->silent_ops, eop_name[op]) == NULL)
				snprintf(st->silent_ops + strlen(st->silent_ops),
				         sizeof(st->silent_ops) - strlen(st->silent_ops), "%s%s",
				         st->silent_ops[0] ? ", " : "", eop_name[op]);
		}
		note_code(st, op, rc);
		st->failures++;
		if (op == EO_CHECKPOINT)
			el_check_failed_checkpoint(s, err, rc, where);
	}
	if (s != NULL) {
		/* Reads keep working, whatever happened to writes. */
		for (int i = 0; i < EL_BASE && op != EO_OPEN_NEW; i++)
			if (!(op == EO_DELETE && i == 1) && !(op == EO_GC && el_garbage(i)) &&
			    !kb_present(s, &el.base[i], where))
				fail_msg("%s: base block %d unreadable on the handle", where, i);
		int op_rc = rc;
		rc = kb_put(s, &el.probe);
		if (rc != 0 && rc != CS_EPOISONED)
			fail_msg("%s: a later put returned %s, not 0 or CS_EPOISONED", where,
			         cs_strerror(rc));
		probe_acked = rc == 0;
		poisoned = rc == CS_EPOISONED;
		if (op == EO_CHECKPOINT && poisoned && op_rc != CS_EPOISONED)
			fail_msg("%s: a failure in the checkpoint's file poisoned the store",
			         where);
		if (poisoned && (rc = cs_store_sync(s)) != CS_EPOISONED)
			fail_msg("%s: sync on a poisoned handle returned %s", where,
			         cs_strerror(rc));
		rc = cs_store_close(s);
		if (poisoned && rc == 0)
			fail_msg("%s: close of a poisoned handle succeeded", where);
		if (!poisoned && rc != 0)
			fail_msg("%s: close failed: %s", where, cs_errmsg());
		if (injected) {
			st->poisoned += poisoned;
			st->usable += !poisoned;
		}
	}
	store_io_factory = NULL;

	/* Everything acknowledged is back after a reopen with the real backend. */
	rc = cs_store_open(el.dir, &o, &s);
	if (rc != 0)
		fail_msg("%s: reopen: %s: %s", where, cs_strerror(rc), cs_errmsg());
	uint64_t blocks = 0;
	int garbage_left = 0;
	for (int i = 0; i < EL_BASE; i++) {
		int p = op == EO_OPEN_NEW ? 0 : kb_present(s, &el.base[i], where);
		int may_go = (op == EO_DELETE && i == 1) || (op == EO_GC && el_garbage(i));
		if (op != EO_OPEN_NEW && !p && !may_go)
			fail_msg("%s: base block %d lost", where, i);
		if (may_go && acked && p)
			fail_msg("%s: an acknowledged %s undone", where, eop_name[op]);
		garbage_left += el_garbage(i) && p;
		blocks += (uint64_t)p;
	}
	if (op == EO_GC && garbage_left == 1)
		fail_msg("%s: half of a collection's one piece is in the log", where);
	int pkind;
	uint64_t pins = 0;
	rc = cs_pin_test(s, &el.base[2].cid, &pkind, NULL);
	if (op != EO_OPEN_NEW && op != EO_UNPIN && (rc != 0 || pkind != CS_PIN_DIRECT))
		fail_msg("%s: the pin on base block 2 lost", where);
	if (op == EO_UNPIN && acked && rc != CS_ENOTFOUND)
		fail_msg("%s: an acknowledged pin remove undone", where);
	pins += rc == 0;
	rc = cs_pin_test(s, &el.base[3].cid, &pkind, NULL);
	if (op == EO_PIN && acked && (rc != 0 || pkind != CS_PIN_RECURSIVE))
		fail_msg("%s: an acknowledged pin add lost", where);
	if (op != EO_PIN && rc != CS_ENOTFOUND)
		fail_msg("%s: a pin never added is present", where);
	pins += rc == 0;
	for (int i = 0; i < EL_FILL && op == EO_PUT_SEG; i++) {
		if (!kb_present(s, &el.fill[i], where))
			fail_msg("%s: filler block %d lost", where, i);
		blocks++;
	}
	for (int i = 0; i < 2; i++) {
		int p = kb_present(s, &el.opb[i], where);
		if (p && !(el_syncs(op) || ((op == EO_PUT || op == EO_PUT_SEG) && i == 0)))
			fail_msg("%s: a block never put is present", where);
		if (!p && acked && (el_syncs(op) || ((op == EO_PUT || op == EO_PUT_SEG) && i == 0)))
			fail_msg("%s: an acknowledged block is lost", where);
		blocks += (uint64_t)p;
	}
	int pp = kb_present(s, &el.probe, where);
	if (probe_acked && !pp)
		fail_msg("%s: the acknowledged put after the failure is lost", where);
	blocks += (uint64_t)pp;
	if (op == EO_ADD) {
		for (int i = 0; i < el.nleaves; i++)
			blocks += (uint64_t)kb_present(s, &el.leaves[i], where);
		int rp = cs_block_has(s, &el.froot);
		blocks += (uint64_t)(rp == 1);
		if (acked) {
			size_t got;
			rc = cs_cat(s, &el.froot, 0, g_buf, el.flen, &got, NULL);
			if (rc != 0 || got != el.flen || memcmp(g_buf, el.file, got) != 0)
				fail_msg("%s: the acknowledged file does not read back", where);
		}
	}
	cs_stat sst;
	cs_store_stat(s, &sst);
	/* Whatever failed, a checkpoint is there to use: the base store's, or a later one. A
	 * failed checkpoint write must leave nothing that sends the open to a full replay. */
	if (op != EO_OPEN_NEW && sst.checkpoint_seq == 0)
		fail_msg("%s: the reopen found no usable checkpoint", where);
	if (sst.blocks != blocks)
		fail_msg("%s: %llu blocks after reopen, %llu known", where,
		         (unsigned long long)sst.blocks, (unsigned long long)blocks);
	if (sst.pins != pins)
		fail_msg("%s: %llu pins after reopen, %llu known", where,
		         (unsigned long long)sst.pins, (unsigned long long)pins);
	cs_cid nroot;
	rc = cs_name_get(s, "base", &nroot, NULL, NULL);
	if (op != EO_OPEN_NEW && op != EO_NDEL && rc != 0)
		fail_msg("%s: name 'base' lost", where);
	if (op == EO_NDEL && acked && rc != CS_ENOTFOUND)
		fail_msg("%s: an acknowledged name delete undone", where);
	rc = cs_name_get(s, "new", &nroot, NULL, NULL);
	if (op == EO_NSET && acked && rc != 0)
		fail_msg("%s: an acknowledged name set lost", where);
	if (rc == 0 && (op != EO_NSET || !cid_eq(&nroot, &el.base[2].cid)))
		fail_msg("%s: a name never set is present", where);
	uint64_t checked, failed;
	if (cs_store_verify(s, NULL, NULL, &checked, &failed) != 0)
		fail_msg("%s: verify failed on %llu blocks", where, (unsigned long long)failed);
	assert_int_equal(cs_store_close(s), 0);
	return !injected;
}

static void test_error_loops(void **state)
{
	static const int errs[] = {-EIO, -ENOSPC};
	struct el_stats st;
	double t0 = now_s();

	memset(&st, 0, sizeof(st));
	g_buf = malloc(CS_BLOCK_MAX);
	assert_non_null(g_buf);
	/* Segments are created on demand here, inside the operation that needs them: a spare
	 * (W12 of wal.c) is made by the writer at a time of its own, which the countdowns
	 * could not attribute to one operation. Its failures are tests/test_wal.c's; power
	 * cuts inside it are (a)'s. */
	store_wal_no_spare = 1;
	el_prepare();
	for (int op = 0; op < EO_N; op++) {
		for (int kind = 0; kind < EL_NKINDS; kind++) {
			if (kind == EL_ALLOC && !ALLOC_FAULTS)
				continue;
			for (int e = 0; e < (kind == EL_ALLOC ? 1 : 2); e++) {
				int err = kind == EL_ALLOC ? -ENOMEM : errs[e];
				uint64_t limit = kind == EL_ALLOC ? 1000 : 64;
				/* Bounded: the operation makes finitely many calls. */
				for (uint64_t n = 1; !el_turn((enum eop)op, kind, err, n, &st); n++)
					if (n == limit)
						fail_msg("%s: still failing at %s call %llu",
						         eop_name[op], el_kind_name(kind),
						         (unsigned long long)n);
			}
		}
	}
	print_message("error loops: %llu injected failures returned errors (%llu left the handle "
	              "poisoned, %llu usable), %llu were got over, %llu failed the checkpoint "
	              "a close writes (a warning); each checked by a reopen; %.1f s\n",
	              (unsigned long long)st.failures, (unsigned long long)st.poisoned,
	              (unsigned long long)st.usable, (unsigned long long)st.absorbed,
	              (unsigned long long)st.close_ckpt, now_s() - t0);
	for (int op = 0; op < EO_N; op++) {
		char codes[200] = "";
		for (int i = 0; i < st.ncodes[op]; i++)
			snprintf(codes + strlen(codes), sizeof(codes) - strlen(codes), "%s%s",
			         i ? ", " : "", cs_strerror(st.codes[op][i]));
		print_message("  %-18s calls: write %d, sync %d, create %d, sync_dir %d, "
		              "rename %d, allocation %d; errors seen: %s\n",
		              eop_name[op], st.calls[op][FAULT_WRITE], st.calls[op][FAULT_SYNC],
		              st.calls[op][FAULT_CREATE], st.calls[op][FAULT_SYNC_DIR],
		              st.calls[op][FAULT_RENAME], st.calls[op][EL_ALLOC], codes);
	}
	if (st.silent > 0)
		print_message("  %llu failures (all -ENOMEM) came without a message, from: %s\n",
		              (unsigned long long)st.silent, st.silent_ops);
	el_free();
	store_wal_no_spare = 0;
	free(g_buf);
	g_buf = NULL;
}

/* ---- (c) fsync failure ------------------------------------------------------------------ */

struct putter {
	cs_store *s;
	const struct kb *k;
	int rc;
	char msg[300];
};

static void *putter_main(void *arg)
{
	struct putter *p = arg;
	p->rc = kb_put(p->s, p->k);
	snprintf(p->msg, sizeof(p->msg), "%s", p->rc ? cs_errmsg() : "");
	return NULL;
}

enum { FS_BASE = 3, FS_WAIT = 4 };

static void test_fsync_failure(void **state)
{
	struct kb base[FS_BASE], x[1 + FS_WAIT], y;
	struct putter pt[1 + FS_WAIT];
	pthread_t th[1 + FS_WAIT];
	cs_options o = tu_opts();
	char dir[512];
	cs_store *s;
	cs_stat st;
	int rc;

	g_buf = malloc(CS_BLOCK_MAX);
	assert_non_null(g_buf);
	for (int i = 0; i < FS_BASE; i++)
		kb_make(&base[i], 2000 + (uint32_t)i, 800 + (uint64_t)i);
	for (int i = 0; i <= FS_WAIT; i++)
		kb_make(&x[i], 3000 + (uint32_t)i, 810 + (uint64_t)i);
	kb_make(&y, 1234, 820);
	path_in(dir, sizeof(dir), "fsync");
	rm_store(dir);

	/* Sync mode: puts waiting on one batch whose fdatasync fails. */
	fault_reset();
	fault_g.drop_on_sync_fail = 1;
	store_io_factory = fault_factory;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < FS_BASE; i++)
		assert_int_equal(kb_put(s, &base[i]), 0);
	fault_set_gate(1);
	/* x[0]'s batch is taken by the writer and held at the gate; the others fill the next
	 * batch behind it. */
	pt[0] = (struct putter){s, &x[0], 0, ""};
	assert_int_equal(pthread_create(&th[0], NULL, putter_main, &pt[0]), 0);
	while (fault_gate_waiting() == 0)
		usleep(1000);
	cs_store_stat(s, &st);
	uint64_t seq0 = st.next_seq;
	for (int i = 1; i <= FS_WAIT; i++) {
		pt[i] = (struct putter){s, &x[i], 0, ""};
		assert_int_equal(pthread_create(&th[i], NULL, putter_main, &pt[i]), 0);
	}
	do {
		usleep(1000);
		cs_store_stat(s, &st);
	} while (st.next_seq < seq0 + FS_WAIT);
	uint64_t writes0 = fault_read(&fault_g.calls[FAULT_WRITE]);
	fault_fail_nth(FAULT_SYNC, 2, -EIO); /* x[0]'s sync succeeds, the next one fails */
	fault_set_gate(0);
	for (int i = 0; i <= FS_WAIT; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(fault_read(&fault_g.calls[FAULT_WRITE]) - writes0, 2); /* two batches */
	if (pt[0].rc != 0)
		fail_msg("the put whose batch synced failed: %s", pt[0].msg);
	for (int i = 1; i <= FS_WAIT; i++) {
		if (pt[i].rc != CS_EPOISONED || strstr(pt[i].msg, "sync") == NULL)
			fail_msg(
			    "waiter %d of the failed sync got %s (%s), not CS_EPOISONED naming "
			    "the sync",
			    i, cs_strerror(pt[i].rc), pt[i].msg);
	}
	print_message("fsync failure: %d waiters of one batch all got %s: \"%s\"\n", FS_WAIT,
	              cs_strerror(pt[1].rc), pt[1].msg);
	/* Writes are refused from now on, syncs never claim success; reads work. */
	assert_int_equal(kb_put(s, &y), CS_EPOISONED);
	assert_int_equal(cs_block_delete(s, &base[0].cid), CS_EPOISONED);
	assert_int_equal(cs_name_set(s, "n", &base[0].cid, 1), CS_EPOISONED);
	assert_int_equal(cs_store_sync(s), CS_EPOISONED);
	assert_int_equal(cs_store_sync(s), CS_EPOISONED);
	for (int i = 0; i < FS_BASE; i++)
		assert_int_equal(kb_present(s, &base[i], "poisoned handle"), 1);
	assert_int_equal(kb_present(s, &x[0], "poisoned handle"), 1);
	/* A put of a block whose own put failed must not be acknowledged either. */
	rc = kb_put(s, &x[1]);
	if (rc != CS_EPOISONED)
		fail_msg("put of a block whose put failed with the sync returned %s on the "
		         "poisoned handle: success for data that is not durable",
		         cs_strerror(rc));
	rc = cs_store_close(s);
	assert_true(rc != 0);
	store_io_factory = NULL;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < FS_BASE; i++)
		assert_int_equal(kb_present(s, &base[i], "reopen"), 1);
	assert_int_equal(kb_present(s, &x[0], "reopen"), 1);
	for (int i = 1; i <= FS_WAIT; i++)
		assert_int_equal(kb_present(s, &x[i], "reopen"), 0); /* their pages were dropped */
	cs_store_stat(s, &st);
	assert_int_equal(st.blocks, FS_BASE + 1);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(kb_put(s, &y), 0); /* the reopened store takes writes */
	assert_int_equal(cs_store_close(s), 0);
	rm_store(dir);

	/* None mode: a failed cs_store_sync, then never a successful one. */
	fault_reset();
	fault_g.drop_on_sync_fail = 1;
	store_io_factory = fault_factory;
	o.durability = CS_DURABLE_NONE;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	assert_int_equal(kb_put(s, &base[0]), 0);
	assert_int_equal(cs_store_sync(s), 0); /* base[0] acknowledged */
	assert_int_equal(kb_put(s, &base[1]), 0);
	assert_int_equal(kb_put(s, &base[2]), 0);
	fault_fail_nth(FAULT_SYNC, 1, -EIO);
	rc = cs_store_sync(s);
	if (rc != CS_EPOISONED)
		fail_msg("a sync whose fdatasync failed returned %s", cs_strerror(rc));
	assert_int_equal(cs_store_sync(s), CS_EPOISONED);
	assert_int_equal(kb_put(s, &y), CS_EPOISONED);
	assert_int_equal(kb_present(s, &base[0], "poisoned none"), 1);
	assert_true(cs_store_close(s) != 0);
	store_io_factory = NULL;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	assert_int_equal(kb_present(s, &base[0], "reopen none"), 1);
	assert_int_equal(kb_present(s, &base[1], "reopen none"), 0);
	assert_int_equal(kb_present(s, &base[2], "reopen none"), 0);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
	rm_store(dir);

	for (int i = 0; i < FS_BASE; i++)
		free(base[i].bytes);
	for (int i = 0; i <= FS_WAIT; i++)
		free(x[i].bytes);
	free(y.bytes);
	free(g_buf);
	g_buf = NULL;
}

/* ---- (d) A full disk: CS_EFULL, and the store goes on once space is freed -------------- */

/* Whether store directory dir holds segment file id. */
static int has_segment(const char *dir, uint32_t id)
{
	char path[600];
	snprintf(path, sizeof(path), "%s/%08x.seg", dir, id);
	return access(path, F_OK) == 0;
}

/* A put that needs a new segment, on an armed countdown: CS_EFULL naming the cause, no file
 * left, the handle not poisoned. */
static void expect_full(cs_store *s, const char *dir, const struct kb *k, int err,
                        const char *where)
{
	cs_stat st;
	int rc = kb_put(s, k);
	if (rc != CS_EFULL || strstr(cs_errmsg(), cs_strerror(err)) == NULL)
		fail_msg("%s: a put needing a new segment returned %s (\"%s\"), not CS_EFULL "
		         "naming %s",
		         where, cs_strerror(rc), cs_errmsg(), cs_strerror(err));
	/* A poisoned handle's sync returns CS_EPOISONED. */
	rc = cs_store_sync(s);
	cs_store_stat(s, &st);
	if (rc != 0 || st.segments != 1 || has_segment(dir, 2))
		fail_msg("%s: after CS_EFULL: sync %s, %u segments, file 2 %s", where,
		         cs_strerror(rc), st.segments,
		         has_segment(dir, 2) ? "left behind" : "absent");
}

/*
 * Through the fault backend: a segment creation that fails with ENOSPC or EDQUOT (in the
 * create, or in the header write) fails the puts that needed the segment with CS_EFULL and
 * poisons nothing; puts that fit the old segment go on; a retry once the fault is gone
 * succeeds; EIO still poisons; a reopen has exactly the acknowledged blocks.
 */
static void test_create_enospc(void **state)
{
	enum { NFILL = 4, NSMALL = 3, NBIG = 2 };
	struct kb fill[NFILL], small[NSMALL], big[NBIG];
	struct putter pt[NBIG];
	pthread_t th[NBIG];
	cs_options o = tu_opts();
	char dir[512];
	cs_store *s;
	cs_stat st;

	g_buf = malloc(CS_BLOCK_MAX);
	assert_non_null(g_buf);
	for (int i = 0; i < NFILL; i++)
		kb_make(&fill[i], i < 3 ? CS_BLOCK_MAX : 3500u << 10, 1100 + (uint64_t)i);
	for (int i = 0; i < NSMALL; i++)
		kb_make(&small[i], 4000 + (uint32_t)i, 1110 + (uint64_t)i);
	for (int i = 0; i < NBIG; i++)
		kb_make(&big[i], 1u << 20, 1120 + (uint64_t)i);
	path_in(dir, sizeof(dir), "efull");
	rm_store(dir);
	fault_reset();
	store_wal_no_spare = 1; /* the creation on demand is what fails here, as in (b) */
	store_io_factory = fault_factory;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < NFILL; i++)
		assert_int_equal(kb_put(s, &fill[i]), 0);
	cs_store_stat(s, &st);
	assert_int_equal(st.segments, 1);
	assert_true(st.log_bytes + (1u << 20) + 80 > o.segment_bytes); /* big needs segment 2 */

	fault_fail_nth(FAULT_CREATE, 1, -ENOSPC);
	expect_full(s, dir, &big[0], -ENOSPC, "create ENOSPC");
	/* The old segment still takes what fits; reads work. */
	assert_int_equal(kb_put(s, &small[0]), 0);
	for (int i = 0; i < NFILL; i++)
		assert_int_equal(kb_present(s, &fill[i], "after CS_EFULL"), 1);
	assert_int_equal(kb_present(s, &big[0], "after CS_EFULL"), 0);
	fault_fail_nth(FAULT_CREATE, 1, -EDQUOT);
	expect_full(s, dir, &big[0], -EDQUOT, "create EDQUOT");
	/* The header write is the first write after the old segment's sync. */
	fault_fail_nth(FAULT_WRITE, 1, -ENOSPC);
	expect_full(s, dir, &big[0], -ENOSPC, "header write ENOSPC");
	assert_int_equal(kb_put(s, &small[1]), 0);

	/* Two puts that both need the segment, the second arriving while the first one's
	 * creation is held at the header write, which fails: the second waits for that
	 * creation and fails with it, or (if it came late) asks again and meets the second
	 * failure armed here. Both get CS_EFULL; nothing is poisoned. */
	uint64_t inj0 = fault_injected();
	fault_fail_nth(FAULT_WRITE, 1, -ENOSPC);
	fault_fail_nth(FAULT_CREATE, 2, -ENOSPC);
	fault_set_gate(1);
	pt[0] = (struct putter){s, &big[0], 0, ""};
	assert_int_equal(pthread_create(&th[0], NULL, putter_main, &pt[0]), 0);
	while (fault_gate_waiting() == 0)
		usleep(1000);
	pt[1] = (struct putter){s, &big[1], 0, ""};
	assert_int_equal(pthread_create(&th[1], NULL, putter_main, &pt[1]), 0);
	usleep(100000);
	fault_set_gate(0);
	for (int i = 0; i < NBIG; i++) {
		pthread_join(th[i], NULL);
		if (pt[i].rc != CS_EFULL || strstr(pt[i].msg, cs_strerror(-ENOSPC)) == NULL)
			fail_msg("concurrent put %d needing the segment returned %s: %s", i,
			         cs_strerror(pt[i].rc), pt[i].msg);
	}
	int waited = fault_injected() - inj0 == 1; /* the second never made its own try */
	fault_fail_nth(FAULT_WRITE, 0, 0);
	fault_fail_nth(FAULT_CREATE, 0, 0);
	assert_int_equal(cs_store_sync(s), 0);

	/* The fault is gone: the next put that needs the segment creates it. */
	for (int i = 0; i < NBIG; i++)
		assert_int_equal(kb_put(s, &big[i]), 0);
	assert_int_equal(kb_put(s, &small[2]), 0);
	cs_store_stat(s, &st);
	assert_int_equal(cs_store_sync(s), 0); /* not poisoned */
	assert_int_equal(st.segments, 2);
	assert_int_equal(st.blocks, NFILL + NSMALL + NBIG);
	assert_int_equal(cs_store_close(s), 0);

	/* Other errors still poison. */
	store_io_factory = fault_factory;
	fault_reset();
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	struct kb more[8];
	int nmore = 0, rc = 0;
	fault_fail_nth(FAULT_CREATE, 1, -EIO);
	/* Fill segment 2 until a put needs segment 3. */
	while (rc == 0 && nmore < 8) {
		kb_make(&more[nmore], CS_BLOCK_MAX, 1130 + (uint64_t)nmore);
		rc = kb_put(s, &more[nmore++]);
	}
	if (rc != CS_EPOISONED)
		fail_msg("a put whose segment creation failed with EIO returned %s",
		         cs_strerror(rc));
	struct kb late;
	kb_make(&late, 5000, 1140);
	assert_int_equal(kb_put(s, &late), CS_EPOISONED);
	free(late.bytes);
	assert_true(cs_store_close(s) != 0);

	/* A reopen with the real backend has exactly the acknowledged blocks. */
	store_io_factory = NULL;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < NFILL; i++)
		assert_int_equal(kb_present(s, &fill[i], "reopen"), 1);
	for (int i = 0; i < NSMALL; i++)
		assert_int_equal(kb_present(s, &small[i], "reopen"), 1);
	for (int i = 0; i < NBIG; i++)
		assert_int_equal(kb_present(s, &big[i], "reopen"), 1);
	for (int i = 0; i < nmore - 1; i++)
		assert_int_equal(kb_present(s, &more[i], "reopen"), 1);
	assert_int_equal(kb_present(s, &more[nmore - 1], "reopen"), 0);
	cs_store_stat(s, &st);
	assert_int_equal(st.blocks, NFILL + NSMALL + NBIG + nmore - 1);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
	print_message("segment creation out of space: ENOSPC/EDQUOT in create and header write "
	              "gave CS_EFULL without poison (two concurrent puts both, the second %s); "
	              "retries succeeded; EIO poisoned; reopen exact\n",
	              waited ? "by waiting for the first's creation" : "by its own try");
	rm_store(dir);
	for (int i = 0; i < NFILL; i++)
		free(fill[i].bytes);
	for (int i = 0; i < NSMALL; i++)
		free(small[i].bytes);
	for (int i = 0; i < NBIG; i++)
		free(big[i].bytes);
	for (int i = 0; i < nmore; i++)
		free(more[i].bytes);
	store_wal_no_spare = 0;
	free(g_buf);
	g_buf = NULL;
}

/*
 * For real, on a 40 MiB tmpfs half full of ballast: puts until one fails, which must be
 * CS_EFULL naming ENOSPC with the handle still usable (reads, and puts that fit the open
 * segment); a retry while still full fails the same way; once the ballast is removed, puts
 * on the same handle succeed, and a reopen has exactly the acknowledged blocks.
 */
static void test_enospc(void **state)
{
	enum { MAXB = 64, BAL = 20 << 20 };
	struct kb b[MAXB], extra, extra2;
	cs_options o = tu_opts();
	char mnt[512], dir[600], bal[600];
	int nacked = 0, rc;
	cs_store *s;
	cs_stat st;

	path_in(mnt, sizeof(mnt), "enospc");
	assert_true(mkdir(mnt, 0700) == 0 || errno == EEXIST);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=40m,mode=0700") != 0) {
		print_message("SKIP: the real ENOSPC test needs to mount a 40 MiB tmpfs, which "
		              "failed at %s: %s (it needs root; CI runs as root)\n",
		              mnt, strerror(errno));
		rmdir(mnt);
		skip();
	}
	g_buf = malloc(CS_BLOCK_MAX);
	assert_non_null(g_buf);
	snprintf(dir, sizeof(dir), "%s/store", mnt);
	snprintf(bal, sizeof(bal), "%s/ballast", mnt);
	/* Ballast takes half the file system: one segment fits, the second does not. */
	int fd = open(bal, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	memset(g_buf, 0xa5, 1 << 20);
	for (int i = 0; i < BAL >> 20; i++)
		assert_int_equal(write(fd, g_buf, 1 << 20), 1 << 20);
	close(fd);

	store_io_factory = NULL;
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < MAXB; i++)
		kb_make(&b[i], 1u << 20, 900 + (uint64_t)i);
	kb_make(&extra, 4096, 999);
	kb_make(&extra2, 4097, 998);
	rc = 0;
	for (int i = 0; i < MAXB && rc == 0; i++) {
		rc = kb_put(s, &b[i]);
		nacked += rc == 0;
	}
	if (rc == 0)
		fail_msg("%d puts of 1 MiB fit in a 40 MiB file system holding 20 MiB", MAXB);
	char msg[300];
	snprintf(msg, sizeof(msg), "%s", cs_errmsg());
	print_message("ENOSPC: after %d acknowledged 1 MiB puts, the next returned %s: \"%s\"\n",
	              nacked, cs_strerror(rc), msg);
	if (rc != CS_EFULL || strstr(msg, cs_strerror(-ENOSPC)) == NULL)
		fail_msg("a put on a full disk returned %s (\"%s\"), not CS_EFULL naming ENOSPC",
		         cs_strerror(rc), msg);
	assert_int_equal(cs_store_sync(s), 0); /* not poisoned */
	/* Reads keep working; a put that fits the open segment is taken; one that needs a
	 * new segment tries again and is refused again while the disk is full. */
	for (int i = 0; i < nacked; i++)
		assert_int_equal(kb_present(s, &b[i], "full"), 1);
	assert_int_equal(kb_put(s, &extra), 0);
	assert_int_equal(kb_put(s, &b[nacked]), CS_EFULL);

	/* Space freed: the same handle takes puts again. */
	assert_int_equal(unlink(bal), 0);
	assert_int_equal(kb_put(s, &b[nacked]), 0);
	assert_int_equal(kb_put(s, &extra2), 0);
	nacked++;
	cs_store_stat(s, &st);
	assert_int_equal(cs_store_sync(s), 0);
	assert_int_equal(st.segments, 2);
	assert_int_equal(cs_store_close(s), 0);

	/* A reopen has exactly the acknowledged blocks. */
	assert_int_equal(cs_store_open(dir, &o, &s), 0);
	for (int i = 0; i < nacked; i++)
		assert_int_equal(kb_present(s, &b[i], "reopen"), 1);
	assert_int_equal(kb_present(s, &extra, "reopen"), 1);
	assert_int_equal(kb_present(s, &extra2, "reopen"), 1);
	cs_store_stat(s, &st);
	assert_int_equal(st.blocks, (uint64_t)nacked + 2);
	assert_int_equal(cs_store_verify(s, NULL, NULL, NULL, NULL), 0);
	assert_int_equal(cs_store_close(s), 0);
	print_message("ENOSPC: after freeing space the same handle took puts; reopen has exactly "
	              "the %d acknowledged blocks\n",
	              nacked + 2);

	rm_store(dir);
	umount2(mnt, MNT_DETACH);
	rmdir(mnt);
	for (int i = 0; i < MAXB; i++)
		free(b[i].bytes);
	free(extra.bytes);
	free(extra2.bytes);
	free(g_buf);
	g_buf = NULL;
}

/* ---- (e) A pinned name set: one transaction ----------------------------------------- */

#define PN_LEN   20000 /* the file: 20 leaves of 1 KiB under one node */
#define PN_CHUNK 1024

static uint8_t *pn_file;
static char pn_name[CS_NAME_MAX + 1];

/* Adds pn_file with the name pn_name and a recursive pin, as `cidstore add --pin` does. */
static int pn_add(cs_store *s, cs_cid *root)
{
	cs_add_options ao;
	cs_add *a;
	int rc;

	cs_add_options_init(&ao);
	ao.chunk_size = PN_CHUNK;
	ao.name = pn_name;
	ao.pin = 1;
	if ((rc = cs_add_begin(s, &ao, &a)) != 0)
		return rc;
	if ((rc = cs_add_write(a, pn_file, PN_LEN)) != 0) {
		cs_add_abort(a);
		return rc;
	}
	return cs_add_finish(a, root, NULL);
}

/* Reopens dir with the real backend: the name and the pin are both there, with the whole
 * file under them, or neither is. Returns 1 for both, 0 for neither. */
static int pn_check(const char *dir, const cs_cid *root, const char *where)
{
	cs_options o = tu_opts();
	cs_store *s;
	cs_stat st;
	cs_cid got;
	int kind = 0;
	size_t n;

	store_io_factory = NULL;
	int rc = cs_store_open(dir, &o, &s);
	if (rc != 0)
		fail_msg("%s: reopen failed: %s: %s", where, cs_strerror(rc), cs_errmsg());
	int named = cs_name_get(s, pn_name, &got, NULL, NULL) == 0;
	rc = cs_pin_test(s, root, &kind, NULL);
	if (rc != 0 && rc != CS_ENOTFOUND)
		fail_msg("%s: pin test: %s: %s", where, cs_strerror(rc), cs_errmsg());
	int pinned = rc == 0;
	if (named != pinned)
		fail_msg("%s: the name is %s but the pin %s", where, named ? "set" : "absent",
		         pinned ? "is there" : "is not");
	assert_int_equal(cs_store_stat(s, &st), 0);
	if (st.names != (uint64_t)named || st.pins != (uint64_t)pinned ||
	    st.pins_recursive != (uint64_t)pinned)
		fail_msg("%s: stat counts %llu names, %llu pins (%llu recursive)", where,
		         (unsigned long long)st.names, (unsigned long long)st.pins,
		         (unsigned long long)st.pins_recursive);
	if (named) {
		if (kind != CS_PIN_RECURSIVE || got.len != root->len ||
		    memcmp(got.bytes, root->bytes, root->len) != 0)
			fail_msg("%s: the name or pin is not the added root's", where);
		rc = cs_cat(s, root, 0, g_buf, PN_LEN, &n, NULL);
		if (rc != 0 || n != PN_LEN || memcmp(g_buf, pn_file, PN_LEN) != 0)
			fail_msg("%s: the named, pinned file does not read back: %s", where,
			         cs_strerror(rc));
	}
	if ((rc = cs_store_close(s)) != 0)
		fail_msg("%s: close after reopen: %s", where, cs_strerror(rc));
	return named;
}

/* Power cuts at every I/O operation of an add with a pinned name (sync mode), every policy:
 * after reopen the name and the pin are both there with their whole DAG, or neither is, and
 * both are there whenever the add had returned success. */
static void test_crash_add_pinned(void **state)
{
	char wdir[512], idir[512], where[300];
	cs_options o = tu_opts();
	cs_cid root = {0};
	uint64_t n = 0, states = 0, both = 0;

	g_buf = malloc(CS_BLOCK_MAX);
	pn_file = malloc(PN_LEN);
	assert_non_null(g_buf);
	assert_non_null(pn_file);
	tu_fill(pn_file, PN_LEN, 77);
	path_in(wdir, sizeof(wdir), "pn-w");
	path_in(idir, sizeof(idir), "pn-img");
	/* A long name and a short one, so that in some runs the sector boundary a torn write
	 * keeps falls between the name's record and the pin's. */
	for (int round = 0; round < 2; round++) {
		memset(pn_name, 0, sizeof(pn_name));
		memset(pn_name, 'n', round == 0 ? 3 : 250);
		/* The root, learned from a run with the real backend. */
		cs_store *s0;
		fresh_store(wdir);
		assert_int_equal(cs_store_open(wdir, &o, &s0), 0);
		assert_int_equal(pn_add(s0, &root), 0);
		assert_int_equal(cs_store_close(s0), 0);
		for (uint64_t k = 0;; k++) {
			cs_store *s;
			cs_cid r;
			fresh_store(wdir);
			fault_reset();
			fault_off_after(k);
			store_io_factory = fault_factory;
			int rc = cs_store_open(wdir, &o, &s), added = 0;
			if (rc == 0) {
				added = pn_add(s, &r) == 0;
				if (added && (r.len != root.len ||
				              memcmp(r.bytes, root.bytes, r.len) != 0))
					fail_msg("the add gave another root");
				(void)cs_store_close(s);
			}
			store_io_factory = NULL;
			int off = fault_is_off();
			if (!off && !added)
				fail_msg("add with the power on failed");
			int wfd = open(wdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			assert_true(wfd >= 0);
			for (int pol = 0; pol < FAULT_NPOLICIES; pol++) {
				int nseeds = pol == FAULT_KEEP || pol == FAULT_DROP ? 1 : 4;
				for (int seed = 1; seed <= nseeds; seed++) {
					fresh_store(idir);
					int ifd = open(idir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
					assert_true(ifd >= 0);
					fault_copy_files(wfd, ifd);
					fault_power_cut(ifd, (enum fault_policy)pol, (uint64_t)seed,
					                0, NULL);
					close(ifd);
					snprintf(where, sizeof(where),
					         "name of %zu bytes, cut after op %llu, policy %s, "
					         "seed %d",
					         strlen(pn_name), (unsigned long long)k,
					         fault_policy_name[pol], seed);
					int has = pn_check(idir, &root, where);
					if (added && !has)
						fail_msg("%s: the add returned success, yet its name "
						         "and pin are gone",
						         where);
					both += has;
					states++;
				}
			}
			close(wfd);
			if (!off) {
				n = k;
				break;
			}
		}
	}
	rm_store(wdir);
	rm_store(idir);
	print_message("add --pin: %llu I/O ops, %llu states, %llu with name and pin\n",
	              (unsigned long long)n, (unsigned long long)states,
	              (unsigned long long)both);
	assert_true(both > 0 && both < states);
	free(pn_file);
	free(g_buf);
	g_buf = NULL;
}

/* The transaction torn at every 8-byte step from the start of the name's record to the end
 * of the pin's (the bytes from there on zero, as a torn tail reads), and with any one byte
 * of the pin's record flipped: the reopened store has neither the name nor the pin; with
 * nothing torn, both. */
static void test_torn_pinned_name(void **state)
{
	char wdir[512], idir[512], seg[600], where[200];
	cs_options o = tu_opts();
	cs_store *s;
	cs_cid root;
	struct stat st;

	g_buf = malloc(CS_BLOCK_MAX);
	pn_file = malloc(PN_LEN);
	assert_non_null(g_buf);
	assert_non_null(pn_file);
	tu_fill(pn_file, PN_LEN, 78);
	memset(pn_name, 0, sizeof(pn_name));
	memset(pn_name, 't', 40);
	path_in(wdir, sizeof(wdir), "pt-w");
	path_in(idir, sizeof(idir), "pt-img");
	fresh_store(wdir);
	store_io_factory = NULL;
	assert_int_equal(cs_store_open(wdir, &o, &s), 0);
	assert_int_equal(pn_add(s, &root), 0);
	assert_int_equal(cs_store_close(s), 0);

	/* The name's record is the last-but-one of the log, the pin's the last. */
	assert_int_equal(tu_last_segment(wdir, seg, sizeof(seg)), 0);
	int fd = open(seg, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0 && fstat(fd, &st) == 0);
	size_t len = (size_t)st.st_size < (1u << 20) ? (size_t)st.st_size : (1u << 20);
	uint8_t *img = malloc(len);
	assert_non_null(img);
	fault_pread_all(fd, img, len, 0);
	close(fd);
	size_t name_off = 0;
	for (size_t off = 64; off + 40 <= len; off += 8)
		if (memcmp(img + off, "CIDR", 4) == 0 && img[off + 4] == 3)
			name_off = off;
	assert_true(name_off > 0);
	size_t name_sz = (40 + 20 + strlen(pn_name) + root.len + 7) & ~(size_t)7;
	size_t pin_off = name_off + name_sz, pin_sz = (40 + 4 + root.len + 7) & ~(size_t)7;
	assert_int_equal(img[pin_off + 4], 5);                /* REC_PIN_ADD */
	assert_int_equal(img[name_off + 5] & 0x5, 0x1);      /* CONT */
	assert_int_equal(img[pin_off + 5] & 0x5, 0x4);       /* MID */
	for (size_t i = pin_off + pin_sz; i < len; i++)
		assert_int_equal(img[i], 0);

	const char *segname = strrchr(seg, '/') + 1;
	for (size_t cut = name_off; cut <= pin_off + pin_sz; cut += 8) {
		char iseg[600];
		fault_copy_store(wdir, idir);
		snprintf(iseg, sizeof(iseg), "%s/%s", idir, segname);
		fd = open(iseg, O_WRONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		memset(g_buf, 0, name_sz + pin_sz);
		fault_pwrite_all(fd, g_buf, pin_off + pin_sz - cut, cut);
		close(fd);
		snprintf(where, sizeof(where), "log torn at offset %zu (name record at %zu, pin at %zu)",
		         cut, name_off, pin_off);
		assert_int_equal(pn_check(idir, &root, where), cut == pin_off + pin_sz);
	}
	for (size_t i = pin_off; i < pin_off + pin_sz; i++) {
		char iseg[600];
		uint8_t b = img[i] ^ 0x20;
		fault_copy_store(wdir, idir);
		snprintf(iseg, sizeof(iseg), "%s/%s", idir, segname);
		fd = open(iseg, O_WRONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		fault_pwrite_all(fd, &b, 1, i);
		close(fd);
		snprintf(where, sizeof(where), "byte %zu of the pin's record flipped", i - pin_off);
		assert_int_equal(pn_check(idir, &root, where), 0);
	}
	free(img);
	rm_store(wdir);
	rm_store(idir);
	free(pn_file);
	free(g_buf);
	g_buf = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_error_loops),
	    cmocka_unit_test(test_fsync_failure),
	    cmocka_unit_test(test_create_enospc),
	    cmocka_unit_test(test_enospc),
	    cmocka_unit_test(test_crash_states),
	    cmocka_unit_test(test_crash_add_pinned),
	    cmocka_unit_test(test_torn_pinned_name),
	};
	/* CS_CRASH_ONLY=<pattern> runs the matching tests only (cmocka's filter). */
	if (getenv("CS_CRASH_ONLY") != NULL)
		cmocka_set_test_filter(getenv("CS_CRASH_ONLY"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
