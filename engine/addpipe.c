/*
 * addpipe.c - the add pipeline: read and chunk on the caller's thread, hash on a pool of
 * threads, put into the store in file order on the caller's thread again.
 *
 * Why: SHA-256 is the most expensive step of an add (about 1.5 GB/s per core with the SHA
 * extensions); with the hashing of each chunk inside store_put() an add ran at one core's
 * hash rate. The other steps (copying a chunk, appending it to the log buffer, linking it
 * into the tree) stay on the caller's thread, in order, so the log order, the index and the
 * DAG are those of a one-thread add, byte for byte.
 *
 * The ring holds nslots slots, each slot_cap bytes, allocated at ap_new(): no allocation per
 * block. Three counters, only ever growing, split it (slot of block i: i % nslots):
 *
 *     retired <= handed <= filled <= retired + nslots
 *     [retired, handed)   handed to a hashing thread: being hashed, or hashed and waiting
 *                         for every block before it to be put (flag `hashed`)
 *     [handed, filled)    filled by the caller, waiting for a hashing thread
 *     [filled, retired + nslots)  free
 *
 * Invariants:
 *   P1. Blocks are handed out in order (handed grows by one under mu) and put in order
 *       (retired grows by one, on the caller's thread, only once slot `retired` is hashed):
 *       the store sees submission order whatever order the threads finish in.
 *   P2. A slot's bytes are written only by the caller while it is free, and read by one
 *       hashing thread between handed++ and `hashed`, then by the caller to put it; each
 *       hand-over is under mu, which orders the accesses (clean under TSan).
 *   P3. Memory is fixed at ap_new(): nslots * slot_cap bytes of slots and the threads'
 *       stacks; nothing is allocated per block.
 *   P4. A failure (a hash, a put, the done callback) is sticky: every later submit and flush
 *       returns it. ap_free() joins every thread on every path, with blocks in flight or not.
 *
 *   caller:  submit ──copy──> [filled] ──signal──> thread: hash ──> [hashed]
 *               └──(head hashed, or ring full: wait)──> store_put_hashed ──> done ──> [free]
 */
#include "addpipe.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cid.h"
#include "cs_limits.h"
#include "err.h"
#include "store.h"

struct ap_slot {
	uint8_t *buf; /* slot_cap bytes inside the ring's one allocation */
	size_t len;
	uint64_t codec;
	uint64_t size; /* bytes of file the block holds, for the done callback */
	uint8_t digest[CS_DIGEST_MAX];
	int rc;        /* of cid_hash, with its message in msg */
	bool hashed;   /* guarded by mu (P2) */
	char msg[256]; /* the hashing thread's cs_errmsg() when rc < 0 */
};

struct addpipe {
	cs_store *s;
	uint64_t hash;
	ap_done_fn done;
	void *ctx;
	size_t slot_cap;
	unsigned nslots;
	struct ap_slot *slot; /* nslots (owned) */
	uint8_t *bytes;       /* nslots * slot_cap (owned, P3) */
	pthread_t th[ADD_THREADS_MAX];
	unsigned nthreads;

	pthread_mutex_t mu;   /* guards the counters below, stop and every slot's `hashed` */
	pthread_cond_t work;  /* hashing threads wait here for handed < filled or stop */
	pthread_cond_t ready; /* the caller waits here for slot `retired` to be hashed */
	uint64_t retired, handed, filled;
	bool stop;
	int err; /* sticky (P4); the caller's thread only */
};

int ap_threads_of(unsigned want, unsigned *out)
{
	if (want > ADD_THREADS_MAX)
		return cs_fail(CS_ELIMIT, "hash_threads is %u: the limit is %u", want,
		               ADD_THREADS_MAX);
	if (want == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		want = n < 1 ? 1 : n > ADD_THREADS_MAX ? ADD_THREADS_MAX : (unsigned)n;
	}
	*out = want;
	return 0;
}

static void *hash_thread(void *arg)
{
	struct addpipe *p = arg;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->stop && p->handed == p->filled)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->stop)
			break;
		uint64_t i = p->handed++; /* P1: in order */
		struct ap_slot *sl = &p->slot[i % p->nslots];
		pthread_mutex_unlock(&p->mu);
		sl->rc = cid_hash(p->hash, sl->buf, sl->len, sl->digest);
		if (sl->rc < 0) /* cs_errmsg() is per thread: carry it to the caller's */
			snprintf(sl->msg, sizeof(sl->msg), "%s", cs_errmsg());
		pthread_mutex_lock(&p->mu);
		sl->hashed = true; /* P2 */
		if (i == p->retired)
			pthread_cond_signal(&p->ready);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int ap_new(cs_store *s, uint64_t hash, unsigned threads, size_t slot_cap, ap_done_fn done,
           void *ctx, struct addpipe **out)
{
	int rc;

	if (threads == 0 || threads > ADD_THREADS_MAX)
		return cs_fail(CS_ELIMIT, "%u hashing threads: the limit is %u", threads,
		               ADD_THREADS_MAX);
	if (slot_cap == 0 || slot_cap > CS_BLOCK_MAX)
		return cs_fail(CS_EINVAL, "slots of %zu bytes", slot_cap);
	struct addpipe *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return cs_fail(-ENOMEM, "out of memory for an add pipeline");
	p->s = s;
	p->hash = hash;
	p->done = done;
	p->ctx = ctx;
	p->slot_cap = slot_cap;
	p->nslots = ADD_SLOTS_PER_THREAD * threads + 2; /* one filling, one being put */
	p->slot = calloc(p->nslots, sizeof(*p->slot));
	p->bytes = malloc((size_t)p->nslots * slot_cap);
	if (p->slot == NULL || p->bytes == NULL) {
		free(p->slot);
		free(p->bytes);
		free(p);
		return cs_fail(-ENOMEM, "out of memory for an add pipeline's %u slots of %zu bytes",
		               ADD_SLOTS_PER_THREAD * threads + 2, slot_cap);
	}
	for (unsigned i = 0; i < p->nslots; i++)
		p->slot[i].buf = p->bytes + (size_t)i * slot_cap;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->ready, NULL);
	for (; p->nthreads < threads; p->nthreads++) {
		if ((rc = pthread_create(&p->th[p->nthreads], NULL, hash_thread, p)) != 0) {
			ap_free(p); /* joins those started */
			return cs_fail(-rc, "cannot start a hashing thread: %s", strerror(rc));
		}
	}
	*out = p;
	return 0;
}

unsigned ap_thread_count(const struct addpipe *p)
{
	return p->nthreads;
}

/* Puts the block at the head of the ring, which is hashed, and frees its slot. */
static int put_head(struct addpipe *p)
{
	struct ap_slot *sl = &p->slot[p->retired % p->nslots];
	cs_cid cid;
	int rc = sl->rc;

	if (rc < 0)
		rc = cs_fail(rc, "%s", sl->msg);
	else if ((rc = store_put_hashed(p->s, sl->digest, sl->buf, sl->len, sl->codec, p->hash, 0,
	                                &cid)) == 0) /* durable at the add's end */
		rc = p->done(p->ctx, &cid, sl->len, sl->codec, sl->size);
	/* The slot is free either way: after a failure nothing more is put (P4). */
	pthread_mutex_lock(&p->mu);
	sl->hashed = false;
	p->retired++; /* P1 */
	pthread_mutex_unlock(&p->mu);
	if (rc < 0)
		p->err = rc;
	return rc;
}

/* Puts blocks from the head while they are hashed; with wait, until `until` are put. */
static int put_ready(struct addpipe *p, uint64_t until, bool wait)
{
	int rc;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		if (p->retired == p->filled || (!wait && !p->slot[p->retired % p->nslots].hashed) ||
		    (wait && p->retired >= until)) {
			pthread_mutex_unlock(&p->mu);
			return 0;
		}
		while (!p->slot[p->retired % p->nslots].hashed)
			pthread_cond_wait(&p->ready, &p->mu);
		pthread_mutex_unlock(&p->mu);
		if ((rc = put_head(p)) < 0)
			return rc;
	}
}

int ap_submit(struct addpipe *p, const uint8_t *data, size_t len, uint64_t codec, uint64_t size)
{
	int rc;

	if (p->err < 0)
		return p->err;
	if (len > p->slot_cap)
		return cs_fail(CS_ELIMIT, "block of %zu bytes for slots of %zu", len, p->slot_cap);
	/* Only this thread moves filled and retired, so reading them here needs no lock. */
	if (p->filled - p->retired == p->nslots &&
	    (rc = put_ready(p, p->filled - p->nslots + 1, true)) < 0)
		return rc;
	struct ap_slot *sl = &p->slot[p->filled % p->nslots]; /* free: P2 */
	memcpy(sl->buf, data, len);
	sl->len = len;
	sl->codec = codec;
	sl->size = size;
	pthread_mutex_lock(&p->mu);
	p->filled++;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);
	return put_ready(p, 0, false);
}

int ap_flush(struct addpipe *p)
{
	if (p->err < 0)
		return p->err;
	return put_ready(p, p->filled, true);
}

void ap_reset(struct addpipe *p)
{
	pthread_mutex_lock(&p->mu);
	p->filled = p->handed; /* no thread takes the blocks not yet handed out */
	while (p->retired < p->handed) {
		/* Wait for those being hashed: their threads still read the slots (P2). */
		while (!p->slot[p->retired % p->nslots].hashed)
			pthread_cond_wait(&p->ready, &p->mu);
		p->slot[p->retired % p->nslots].hashed = false;
		p->retired++;
	}
	pthread_mutex_unlock(&p->mu);
	p->err = 0;
}

void ap_free(struct addpipe *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nthreads; i++) /* P4 */
		pthread_join(p->th[i], NULL);
	pthread_cond_destroy(&p->ready);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->mu);
	free(p->slot);
	free(p->bytes);
	free(p);
}
