/*
 * btree.c - the in-memory B+tree from multihash key to log location.
 *
 * Inner nodes hold separator keys and child pointers; leaves hold keys and values in two
 * separate arrays and no pointer at all: a walk goes from leaf to leaf through the path of
 * inner nodes above it, so that a leaf is the same bytes wherever it lies (a checkpoint's
 * leaves are used in place, from a mapping of the file: idx_adopt_begin()). Every node
 * is NODE_BYTES (4 KiB): 81 entries in a leaf, 96 separators in an inner node. Nodes come
 * from slabs of SLAB_NODES nodes mapped with mmap, so the memory idx_bytes() reports is the
 * memory the process really holds, and a put calls the allocator only when a slab runs out.
 * A bulk load takes all the nodes it needs as one slab instead, on huge pages (bigmap.h):
 * faulting in a million-entry tree 4 KiB at a time cost more than filling it.
 * Freed nodes go back to a free list. idx_trim() (and every idx_repack_step(), a bounded
 * number at a time) gives the memory of free nodes beyond a few back to the OS with
 * madvise(MADV_DONTNEED): the node stays in its slab, released (I7), and reads as zeros when
 * a later node_alloc() touches it again, which costs a page fault but no allocation that can
 * fail. The slabs themselves are unmapped only by idx_destroy(). idx_bytes() counts released
 * nodes out, so it stays the memory held (tests/test_btree.c checks it against the RSS).
 * A release inside a bulk load's huge pages splits the 2 MiB page into 4 KiB ones (once per
 * huge page: a few microseconds); the process's RSS drops at once, and the kernel frees the
 * physical pages when it splits the huge page itself (at once or under memory pressure). That
 * slab is first advised MADV_NOHUGEPAGE, or khugepaged would collapse the holes back into a
 * whole huge page (max_ptes_none defaults to 511) and take the memory again.
 *
 * Memory per entry is set by how full the leaves are: a full leaf costs 4096 / 81 = 50.6
 * bytes per entry, a half-full one twice that. Random keys split leaves at random places, so
 * a plain B+tree settles near 69% full (about 73 B/entry). Two B*-tree moves keep leaves
 * fuller (the store aims at <= 64 B/entry in all):
 *   - a full leaf first hands entries to a sibling that has room (the one with more room),
 *     splitting the difference evenly, so a split happens only when both neighbours are full;
 *   - then two full siblings become three leaves two-thirds full (a 2-to-3 split), except
 *     at the right end of the last child (or the left end of the first child), where an
 *     ordinary split is used: ascending keys then fill each leaf completely by handing
 *     entries leftwards, and descending keys rightwards.
 * Measured with 1M keys: random keys take 73.4 B/entry with plain splits, 59.0 with the
 * first move, 58.5 with both; ascending keys take 51.7. Inner nodes are about 1/60 of the
 * nodes and use plain 1-to-2 splits. Deletes restore the minimum fill by evening out with a
 * sibling that can spare entries, else by merging, so a tree that shrinks by deletes alone
 * may fall back to half-full leaves (and its freed nodes stay in the pool).
 *
 * Repacking gives that memory back (issue "Lifecycle": <= 64 B/entry after a collection),
 * in steps short enough to run under the store's index write lock between writers. A step
 * takes one group, the leaves under one node of the lowest inner level (at most INNER_CAP + 1
 * leaves), packs their entries in place into as few leaves as hold them (group_pack), frees
 * the emptied leaves, and evens out the last two when the last would fall under LEAF_MIN.
 * The group's node is then left with fewer keys, possibly under INNER_MIN or none at all, and
 * restore_fill(), the repair deletes use, mends it upwards by evening out with or merging
 * into a neighbour (a root left with one child goes). Each step then releases up to
 * STEP_RELEASE free nodes, more than it freed, so the nodes earlier deletes left pooled drain
 * too. Steps walk the groups in key order, and the cursor between them is a key (the largest
 * of the group just packed), never a pointer: between steps the caller drops its lock and
 * writers change the tree freely, and the next step looks the cursor up afresh (R1, R2).
 * Measured on 1M random keys with half deleted: 117 -> 52.9 B/entry, 130 steps of about
 * 0.2 ms of CPU each on average, the longest 0.6 to 1.1 ms on a loaded machine (mostly the
 * madvise calls, about 4 us a scattered node). Whether a walk pays is idx_repack_wanted():
 * more than 1.2 times the nodes the entries need; a tree grown by random puts sits at 1.16
 * and is left alone, since its next puts would only split the packed leaves again.
 *
 * Moves between siblings go through a scratch buffer in struct idx: gather the group's
 * entries (plus the new one), then deal them out evenly. One routine per node kind thus
 * serves splits, redistribution, borrowing and merging.
 *
 * Invariants (idx_check() tests each; asserts cite them):
 *   I1  Within a node, keys strictly increase in memcmp order.
 *   I2  An inner node with n keys has n + 1 non-NULL children, and every key k in the
 *       subtree of child i satisfies keys[i-1] <= k < keys[i] (a missing bound is open),
 *       within the bounds the node itself inherits from its ancestors. A separator need not
 *       be a key still present: deletes leave separators alone unless siblings regroup.
 *   I3  All leaves sit at depth height - 1, and 1 <= height <= CS_BTREE_HEIGHT_MAX.
 *   I4  Fill: a leaf other than the root holds LEAF_MIN..LEAF_CAP entries and an inner node
 *       other than the root INNER_MIN..INNER_CAP keys; a root leaf holds 0..LEAF_CAP entries
 *       and a root inner node 1..INNER_CAP keys.
 *   I5  A leaf's next is NULL: a leaf holds no pointer (see the top).
 *   I6  count equals the number of entries in all leaves.
 *   I7  Every node of every slab is in exactly one of: the tree; the free list (nfree nodes,
 *       each tagged NODE_FREE); the released stack (rel[0..nrel), memory given back).
 *       rel_cap >= the nodes of all slabs, so a release never allocates.
 *   I8  A put that must split first reserves height + 1 free nodes (one per level and a new
 *       root), so a failed slab allocation returns -ENOMEM before anything has changed.
 *       Released nodes count: taking one back cannot fail.
 * And for a repack walk (not checkable by idx_check(): they are about a walk over time):
 *   R1  A step that packs a group writes a cursor above its `from`, and the group it packs
 *       holds the smallest key above `from`; so a walk visits every group present throughout
 *       and ends, whatever writers do between steps (a walk of n groups takes n steps plus
 *       those that drain the free list).
 *   R2  A step changes the shape of the tree only: entries, values, key order and count are
 *       as before, and it allocates nothing, so it cannot fail.
 */
#include "btree.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>

#include "bigmap.h"
#include "err.h"

#if defined(__SANITIZE_ADDRESS__)
#define IDX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IDX_ASAN 1
#endif
#endif
#ifdef IDX_ASAN
#include <sanitizer/asan_interface.h>
/* Free nodes are poisoned past their header, so a stale pointer into a freed node trips
 * AddressSanitizer instead of reading whatever node the slot was recycled as. */
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define NODE_BYTES IDX_NODE_BYTES
#define NODE_HDR 16u
#define SLAB_NODES 64u
#define SLAB_BYTES ((size_t)SLAB_NODES * NODE_BYTES)
#define POOL_WARM (CS_BTREE_HEIGHT_MAX + 1) /* free nodes a trim keeps: one deepest split */
#define RELEASE_BATCH 64u                   /* nodes sorted per round of madvise calls */
/* Nodes one repack step releases at most: more than a step frees, so that a backlog deletes
 * left on the free list drains too, while a step's madvise calls (about 4 us a node where
 * free nodes lie scattered) stay a few hundred microseconds. */
#define STEP_RELEASE 96u
_Static_assert(CS_BIGMAP_ALIGN % NODE_BYTES == 0, "a big slab holds whole nodes");

#define LEAF_CAP ((NODE_BYTES - NODE_HDR) / (IDX_KEY + sizeof(struct idx_val)))
#define INNER_CAP ((NODE_BYTES - NODE_HDR - sizeof(void *)) / (IDX_KEY + sizeof(void *)))
#define LEAF_MIN (LEAF_CAP / 2)
#define INNER_MIN (INNER_CAP / 2)
/* A group's INNER_CAP + 1 leaves at LEAF_MIN or more pack into at least that many times
 * LEAF_MIN / LEAF_CAP, and the repair above frees at most one node a level. */
_Static_assert(STEP_RELEASE > (INNER_CAP + 1) - (INNER_CAP + 1) * LEAF_MIN / LEAF_CAP +
				  CS_BTREE_HEIGHT_MAX,
	       "a repack step releases more nodes than it frees");

enum { NODE_LEAF = 1, NODE_INNER = 2, NODE_FREE = 3 };

struct node {
	uint16_t n;   /* entries (leaf) or separator keys (inner) */
	uint8_t kind; /* NODE_LEAF, NODE_INNER or NODE_FREE */
	uint8_t pad[5];
	/* Free: the next free node. Leaf and inner node: NULL (I5). */
	struct node *next;
	/* The aligned arrays come first so that neither kind needs padding. */
	union {
		struct {
			struct idx_val vals[LEAF_CAP];
			uint8_t keys[LEAF_CAP][IDX_KEY];
		} leaf;
		struct {
			struct node *child[INNER_CAP + 1];
			uint8_t keys[INNER_CAP][IDX_KEY];
		} in;
	} u;
};

_Static_assert(offsetof(struct node, u) == NODE_HDR, "header size");
_Static_assert(sizeof(struct node) <= NODE_BYTES, "a node fits its slot");
_Static_assert(LEAF_CAP <= UINT16_MAX && INNER_CAP <= UINT16_MAX, "n is 16-bit");
/* A leaf is the image btree.h describes, and a checkpoint stores (FORMAT.md, 12.3). */
_Static_assert(LEAF_CAP == IDX_LEAF_CAP && LEAF_MIN == IDX_LEAF_MIN, "btree.h's leaf");
_Static_assert(offsetof(struct node, u.leaf.vals) == 16 && sizeof(struct idx_val) == 16 &&
		       offsetof(struct node, u.leaf.keys) == 16 + 16 * LEAF_CAP,
	       "a leaf image's layout");
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "leaf images are little-endian");
_Static_assert(LEAF_MIN >= 2 && INNER_MIN >= 2, "minimum fill is meaningful");
/* A split of a full node plus one entry leaves both halves at the minimum or above, and two
 * siblings that are both at the minimum or just under it fit in one node after a merge. */
_Static_assert((LEAF_CAP + 1) / 2 >= LEAF_MIN && 2 * LEAF_MIN - 1 <= LEAF_CAP, "leaf fill");
_Static_assert(INNER_CAP / 2 >= INNER_MIN && 2 * INNER_MIN <= INNER_CAP, "inner fill");
/* The 2-to-3 split: two full leaves and one entry give three leaves at the minimum or above. */
_Static_assert((2 * LEAF_CAP + 1) / 3 >= LEAF_MIN, "2-to-3 split fill");

/* The nodes a put or a delete passed through: node[d] is at depth d, and idx[d] is the child
 * of node[d] taken to reach node[d + 1]. */
struct path {
	struct node *node[CS_BTREE_HEIGHT_MAX];
	unsigned idx[CS_BTREE_HEIGHT_MAX];
};

struct idx {
	struct node *root; /* owned; never NULL */
	int height;        /* levels, 1 when the root is a leaf (I3) */
	size_t count;      /* entries (I6) */
	struct node *free; /* free list, linked through next (I7) */
	size_t nfree;
	/* Owned: nslabs mappings, array sized slabs_cap. */
	struct slab {
		void *p;
		size_t bytes;
		enum slab_kind {
			SLAB_PLAIN,   /* SLAB_BYTES of an anonymous mapping */
			SLAB_BIG,     /* cs_bigmap_alloc(bytes) */
			SLAB_ADOPTED, /* leaves given by idx_adopt_begin(): munmap(p, bytes) */
		} kind;
		bool thp_off; /* a big slab advised MADV_NOHUGEPAGE since its first release */
	} *slabs;
	size_t nslabs, slabs_cap;
	size_t nbig_thp; /* big slabs still advised huge pages */
	/* Owned: released free nodes (I7), array sized rel_cap. */
	struct node **rel;
	size_t nrel, rel_cap;
	size_t slab_bytes;       /* the sum of the slabs' bytes */
	unsigned fail_countdown; /* test hook: the countdown-th slab allocation fails */
	/* Where a group of siblings is gathered before being dealt out again; large enough for
	 * two nodes and one extra entry. */
	union {
		struct {
			struct idx_val vals[2 * LEAF_CAP + 1];
			uint8_t keys[2 * LEAF_CAP + 1][IDX_KEY];
		} leaf;
		struct {
			struct node *child[2 * INNER_CAP + 2];
			uint8_t keys[2 * INNER_CAP + 1][IDX_KEY];
		} in;
	} scratch;
};

/* The first 8 bytes of a key as a number that orders as memcmp orders them. */
static inline uint64_t key_head(const uint8_t *k)
{
	uint64_t v;

	memcpy(&v, k, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

/* memcmp order. Two keys almost always differ in their first 8 bytes (a 2-byte hash code,
 * then the digest), so those are compared as one word before memcmp sees the rest: a bulk
 * load of a million keys spent a tenth of its time in memcmp calls for 34 bytes. */
static inline int kcmp(const uint8_t *a, const uint8_t *b)
{
	_Static_assert(IDX_KEY > 8, "a key is longer than its head");
	uint64_t x = key_head(a), y = key_head(b);

	if (x != y)
		return x < y ? -1 : 1;
	return memcmp(a + 8, b + 8, IDX_KEY - 8);
}

/* The first index whose key is >= key (or n). */
static unsigned lower_bound(const uint8_t (*keys)[IDX_KEY], unsigned n, const uint8_t *key)
{
	unsigned lo = 0, hi = n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (kcmp(keys[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The first index whose key is > key (or n): the child of an inner node that covers key
 * (I2), or where a walk resumes after key. */
static unsigned upper_bound(const uint8_t (*keys)[IDX_KEY], unsigned n, const uint8_t *key)
{
	unsigned lo = 0, hi = n;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (kcmp(keys[mid], key) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The checks on one node that are cheap enough for the slow tier after every change (I1, I4);
 * idx_check() does the whole tree. */
static __attribute__((unused)) bool node_sane(const struct node *x, bool root)
{
	bool leaf = x->kind == NODE_LEAF;
	const uint8_t (*keys)[IDX_KEY] = leaf ? (const uint8_t (*)[IDX_KEY])x->u.leaf.keys
					      : (const uint8_t (*)[IDX_KEY])x->u.in.keys;
	unsigned min = root ? !leaf : leaf ? LEAF_MIN : INNER_MIN;

	if (x->n < min || x->n > (leaf ? LEAF_CAP : INNER_CAP))
		return false;
	for (unsigned i = 1; i < x->n; i++)
		if (kcmp(keys[i - 1], keys[i]) >= 0)
			return false;
	return true;
}

/* ---- The node pool ---- */

/* Makes room in t's slabs for one more of bytes, and on the released stack for all its nodes
 * (I7). */
static int slab_room(struct idx *t, size_t bytes)
{
	if (t->fail_countdown && --t->fail_countdown == 0)
		return -ENOMEM;
	if (t->nslabs == t->slabs_cap) {
		size_t cap = t->slabs_cap ? 2 * t->slabs_cap : 16;
		struct slab *s = realloc(t->slabs, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		t->slabs = s;
		t->slabs_cap = cap;
	}
	if (t->rel_cap < (t->slab_bytes + bytes) / NODE_BYTES) { /* I7: room to release all */
		size_t cap = (t->slab_bytes + bytes) / NODE_BYTES;
		struct node **r;

		if (cap < 2 * t->rel_cap)
			cap = 2 * t->rel_cap;
		r = realloc(t->rel, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		t->rel = r;
		t->rel_cap = cap;
	}
	return 0;
}

/* Counts the slab of bytes at p in t's slabs, slab_room() made beforehand. */
static void slab_count(struct idx *t, void *p, size_t bytes, enum slab_kind kind)
{
	t->slabs[t->nslabs++] = (struct slab){p, bytes, kind, kind != SLAB_BIG};
	t->nbig_thp += kind == SLAB_BIG;
	t->slab_bytes += bytes;
}

/* Maps a slab of bytes (SLAB_BYTES, or whole huge pages when big) and counts it in t's slabs,
 * with room on the released stack for all its nodes (I7). Its nodes are not on any list yet:
 * the caller puts them on one, or gives them to the tree, before the next change of t. */
static int slab_add(struct idx *t, size_t bytes, bool big, uint8_t **out)
{
	uint8_t *slab;
	int rc = slab_room(t, bytes);

	if (rc != 0)
		return rc;
	if (big) {
		slab = cs_bigmap_alloc(bytes);
		if (slab == NULL)
			return -ENOMEM;
	} else {
		slab = mmap(NULL, SLAB_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
		if (slab == MAP_FAILED)
			return -ENOMEM;
	}
	slab_count(t, slab, bytes, big ? SLAB_BIG : SLAB_PLAIN);
	*out = slab;
	return 0;
}

/* Adds a slab to the free list: for want nodes of at least a huge page, as many of them as
 * fill whole huge pages (the rest come from later calls); else a plain one of SLAB_NODES.
 * Either way at most SLAB_NODES - 1 nodes more than wanted stay unused. */
static int pool_grow(struct idx *t, size_t want)
{
	size_t bytes = want <= SIZE_MAX / 2 / NODE_BYTES ? want * NODE_BYTES : SIZE_MAX / 2;
	bool big = bytes >= CS_BIGMAP_ALIGN;
	uint8_t *slab;
	int rc;

	if (big)
		bytes &= ~(CS_BIGMAP_ALIGN - 1); /* so cs_bigmap_size(bytes) == bytes */
	else
		bytes = SLAB_BYTES;
	if ((rc = slab_add(t, bytes, big, &slab)) != 0)
		return rc;
	/* Push in reverse so that nodes are handed out in address order. */
	for (size_t i = bytes / NODE_BYTES; i-- > 0;) {
		struct node *n = (struct node *)(slab + i * NODE_BYTES);

		n->kind = NODE_FREE;
		n->next = t->free;
		t->free = n;
		POISON((uint8_t *)n + NODE_HDR, NODE_BYTES - NODE_HDR);
	}
	t->nfree += bytes / NODE_BYTES;
	return 0;
}

/* Makes sure need nodes can be taken without failing (I8): free or released ones. */
static int pool_reserve(struct idx *t, size_t need)
{
	while (t->nfree + t->nrel < need) {
		int rc = pool_grow(t, need - t->nfree - t->nrel);

		if (rc)
			return rc;
	}
	return 0;
}

/* Takes a node reserved beforehand: a free one while there are any (its memory is still
 * there), else a released one, whose first touch faults in a page: zeroed, or for an adopted
 * slab a copy of the file's. */
static struct node *node_alloc(struct idx *t, int kind)
{
	struct node *n = t->free;

	CS_ASSERT(t->nfree + t->nrel > 0); /* I8: the caller reserved it */
	if (n) {
		CS_ASSERT(t->nfree > 0 && n->kind == NODE_FREE); /* I7 */
		t->free = n->next;
		t->nfree--;
		UNPOISON((uint8_t *)n + NODE_HDR, NODE_BYTES - NODE_HDR);
	} else {
		n = t->rel[--t->nrel];
		UNPOISON(n, NODE_BYTES);
	}
	n->n = 0;
	n->kind = (uint8_t)kind;
	n->next = NULL;
	return n;
}

static void node_free(struct idx *t, struct node *n)
{
	CS_ASSERT(n->kind != NODE_FREE);
	n->kind = NODE_FREE;
	n->n = 0;
	n->next = t->free;
	t->free = n;
	t->nfree++;
	POISON((uint8_t *)n + NODE_HDR, NODE_BYTES - NODE_HDR);
}

static int node_addr_cmp(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (struct node *const *)a, y = (uintptr_t) * (struct node *const *)b;

	return x < y ? -1 : x > y;
}

/* Advises the big slab that holds node n, if any, against huge pages (see the top). */
static void slab_thp_off(struct idx *t, const struct node *n)
{
	for (size_t i = 0; t->nbig_thp > 0 && i < t->nslabs; i++) {
		struct slab *sl = &t->slabs[i];
		const uint8_t *p = (const uint8_t *)n;

		if (sl->kind != SLAB_BIG || sl->thp_off || p < (uint8_t *)sl->p ||
		    p >= (uint8_t *)sl->p + sl->bytes)
			continue;
		(void)madvise(sl->p, sl->bytes, MADV_NOHUGEPAGE); /* advice: may be refused */
		sl->thp_off = true;
		t->nbig_thp--;
		return;
	}
}

/*
 * Gives the memory of at most max free nodes beyond the first keep back to the OS, moving them
 * to the released stack (I7). Nodes go in rounds of RELEASE_BATCH, sorted by address so that
 * one madvise() covers each run of neighbours. A refused madvise() (it should not be) leaves
 * the rest on the free list. Returns the nodes released.
 */
static size_t pool_release(struct idx *t, size_t keep, size_t max)
{
	struct node *batch[RELEASE_BATCH];
	size_t done = 0;

	while (t->nfree > keep && done < max) {
		size_t k = 0;

		while (k < RELEASE_BATCH && t->nfree > keep && done + k < max) {
			struct node *n = t->free;

			CS_ASSERT(n->kind == NODE_FREE); /* I7 */
			t->free = n->next;
			t->nfree--;
			batch[k++] = n;
		}
		qsort(batch, k, sizeof(batch[0]), node_addr_cmp);
		for (size_t i = 0, j; i < k; i = j) {
			for (j = i + 1; j < k && (uint8_t *)batch[j] ==
						   (uint8_t *)batch[j - 1] + NODE_BYTES;)
				j++;
			slab_thp_off(t, batch[i]);
			if (madvise(batch[i], (j - i) * NODE_BYTES, MADV_DONTNEED) != 0) {
				for (size_t r = k; r-- > i;) { /* headers intact: back on the list */
					batch[r]->next = t->free;
					t->free = batch[r];
					t->nfree++;
				}
				return done;
			}
			for (size_t r = i; r < j; r++) {
				CS_ASSERT(t->nrel < t->rel_cap); /* I7 */
				t->rel[t->nrel++] = batch[r];
				POISON(batch[r], NODE_BYTES);
			}
			done += j - i;
		}
	}
	return done;
}

/* ---- Moving entries between siblings ---- */

/* Deals count items over m nodes as evenly as possible; the first count % m get one more. */
static unsigned share(unsigned count, unsigned m, unsigned j)
{
	return count / m + (j < count % m);
}

/*
 * Gathers the entries of the m_in consecutive leaves g[0..m_in-1], with (key, val) inserted
 * at position pos of g[ti] when key is not NULL, and deals them evenly over the m_out leaves
 * g[0..m_out-1]. Leaves g[m_in..m_out-1] are fresh; leaves g[m_out..m_in-1] are left empty
 * for the caller to free. The caller fixes the parent's
 * separators: the first key of each g[j], j >= 1.
 */
static void leaf_regroup(struct idx *t, struct node **g, unsigned m_in, unsigned m_out,
			 unsigned ti, unsigned pos, const uint8_t *key, const struct idx_val *val)
{
	uint8_t (*sk)[IDX_KEY] = t->scratch.leaf.keys;
	struct idx_val *sv = t->scratch.leaf.vals;
	unsigned total = 0, at = 0;

	for (unsigned j = 0; j < m_in; j++) {
		struct node *x = g[j];
		unsigned n = x->n;

		CS_ASSERT(x->kind == NODE_LEAF);
		if (key && j == ti) {
			memcpy(sk[total], x->u.leaf.keys[0], (size_t)pos * IDX_KEY);
			memcpy(&sv[total], &x->u.leaf.vals[0], pos * sizeof(*sv));
			total += pos;
			memcpy(sk[total], key, IDX_KEY);
			sv[total++] = *val;
			memcpy(sk[total], x->u.leaf.keys[pos], (size_t)(n - pos) * IDX_KEY);
			memcpy(&sv[total], &x->u.leaf.vals[pos], (n - pos) * sizeof(*sv));
			total += n - pos;
		} else {
			memcpy(sk[total], x->u.leaf.keys[0], (size_t)n * IDX_KEY);
			memcpy(&sv[total], &x->u.leaf.vals[0], n * sizeof(*sv));
			total += n;
		}
	}
	CS_ASSERT(total <= m_out * LEAF_CAP);
	for (unsigned j = 0; j < m_out; j++) {
		struct node *x = g[j];
		unsigned n = share(total, m_out, j);

		x->n = (uint16_t)n;
		memcpy(x->u.leaf.keys[0], sk[at], (size_t)n * IDX_KEY);
		memcpy(&x->u.leaf.vals[0], &sv[at], n * sizeof(*sv));
		at += n;
		CS_DASSERT(node_sane(x, false));
	}
	for (unsigned j = m_out; j < m_in; j++)
		g[j]->n = 0;
}

/*
 * The same for inner nodes. The group's keys are those of g[0], seps_in[0], g[1], ... (the
 * m_in - 1 separators from the parent that sit between the nodes), with (key, child)
 * inserted at key position pos of g[ti] (child at pos + 1) when key is not NULL. After
 * dealing them over m_out nodes, the m_out - 1 keys that now separate them are copied to
 * seps_out (which may not alias seps_in), for the caller to put in the parent.
 */
static void inner_regroup(struct idx *t, struct node **g, unsigned m_in, unsigned m_out,
			  const uint8_t (*seps_in)[IDX_KEY], unsigned ti, unsigned pos,
			  const uint8_t *key, struct node *child, uint8_t (*seps_out)[IDX_KEY])
{
	uint8_t (*sk)[IDX_KEY] = t->scratch.in.keys;
	struct node **sc = t->scratch.in.child;
	unsigned nk = 0, nc = 0, at = 0;

	for (unsigned j = 0; j < m_in; j++) {
		struct node *x = g[j];
		unsigned n = x->n;

		CS_ASSERT(x->kind == NODE_INNER);
		if (j > 0)
			memcpy(sk[nk++], seps_in[j - 1], IDX_KEY);
		if (key && j == ti) {
			memcpy(sk[nk], x->u.in.keys[0], (size_t)pos * IDX_KEY);
			nk += pos;
			memcpy(sk[nk++], key, IDX_KEY);
			memcpy(sk[nk], x->u.in.keys[pos], (size_t)(n - pos) * IDX_KEY);
			nk += n - pos;
			memcpy(&sc[nc], &x->u.in.child[0], (pos + 1) * sizeof(*sc));
			nc += pos + 1;
			sc[nc++] = child;
			memcpy(&sc[nc], &x->u.in.child[pos + 1], (n - pos) * sizeof(*sc));
			nc += n - pos;
		} else {
			memcpy(sk[nk], x->u.in.keys[0], (size_t)n * IDX_KEY);
			nk += n;
			memcpy(&sc[nc], &x->u.in.child[0], (n + 1) * sizeof(*sc));
			nc += n + 1;
		}
	}
	CS_ASSERT(nc == nk + 1);
	CS_ASSERT(nk - (m_out - 1) <= m_out * INNER_CAP);
	for (unsigned j = 0; j < m_out; j++) {
		struct node *x = g[j];
		unsigned n = share(nk - (m_out - 1), m_out, j);

		x->n = (uint16_t)n;
		memcpy(x->u.in.keys[0], sk[at], (size_t)n * IDX_KEY);
		memcpy(&x->u.in.child[0], &sc[at], (n + 1) * sizeof(*sc));
		at += n;
		if (j + 1 < m_out)
			memcpy(seps_out[j], sk[at++], IDX_KEY);
		CS_DASSERT(node_sane(x, false));
	}
	for (unsigned j = m_out; j < m_in; j++)
		g[j]->n = 0;
}

/* Puts (key, child) into inner node x, which has room, as key pos and child pos + 1. */
static void inner_insert_at(struct node *x, unsigned pos, const uint8_t *key, struct node *child)
{
	unsigned n = x->n;

	CS_ASSERT(n < INNER_CAP && pos <= n);
	memmove(x->u.in.keys[pos + 1], x->u.in.keys[pos], (size_t)(n - pos) * IDX_KEY);
	memmove(&x->u.in.child[pos + 2], &x->u.in.child[pos + 1], (n - pos) * sizeof(child));
	memcpy(x->u.in.keys[pos], key, IDX_KEY);
	x->u.in.child[pos + 1] = child;
	x->n = (uint16_t)(n + 1);
}

/* Removes key pos and child pos + 1 from inner node x. */
static void inner_remove_at(struct node *x, unsigned pos)
{
	unsigned n = x->n;

	CS_ASSERT(pos < n);
	memmove(x->u.in.keys[pos], x->u.in.keys[pos + 1], (size_t)(n - pos - 1) * IDX_KEY);
	memmove(&x->u.in.child[pos + 1], &x->u.in.child[pos + 2],
		(n - pos - 1) * sizeof(struct node *));
	x->n = (uint16_t)(n - 1);
}

/* Grows the tree by one level above the old root, which has just split into left/right. */
static void new_root(struct idx *t, struct node *left, const uint8_t *sep, struct node *right)
{
	struct node *r;

	CS_ASSERT(t->height < CS_BTREE_HEIGHT_MAX); /* I3 */
	r = node_alloc(t, NODE_INNER);
	r->n = 1;
	memcpy(r->u.in.keys[0], sep, IDX_KEY);
	r->u.in.child[0] = left;
	r->u.in.child[1] = right;
	t->root = r;
	t->height++;
}

/*
 * Inserts the separator key with its right-hand child as key pos of path->node[d], splitting
 * full inner nodes up the path. The nodes were reserved (I8).
 */
static void insert_up(struct idx *t, struct path *pa, int d, unsigned pos, const uint8_t *key,
		      struct node *child)
{
	uint8_t carry[2][IDX_KEY];
	int flip = 0;

	for (;;) {
		struct node *x = pa->node[d];
		struct node *g[2];

		if (x->n < INNER_CAP) {
			inner_insert_at(x, pos, key, child);
			return;
		}
		g[0] = x;
		g[1] = node_alloc(t, NODE_INNER);
		inner_regroup(t, g, 1, 2, NULL, 0, pos, key, child, &carry[flip]);
		if (d == 0) {
			new_root(t, x, carry[flip], g[1]);
			return;
		}
		key = carry[flip];
		flip ^= 1;
		child = g[1];
		d--;
		pos = pa->idx[d];
	}
}

/* ---- Lookups ---- */

/* Descends to the leaf that covers key (I2), or to the leftmost leaf when key is NULL,
 * filling pa when it is not NULL. */
static struct node *descend(const struct idx *t, const uint8_t *key, struct path *pa)
{
	struct node *x = t->root;

	for (int d = 0; d < t->height - 1; d++) {
		unsigned i = key ? upper_bound((const uint8_t (*)[IDX_KEY])x->u.in.keys, x->n, key)
				 : 0;

		if (pa) {
			pa->node[d] = x;
			pa->idx[d] = i;
		}
		x = x->u.in.child[i];
	}
	if (pa)
		pa->node[t->height - 1] = x;
	return x;
}

static unsigned leaf_find(const struct node *x, const uint8_t *key, bool *found)
{
	unsigned pos = lower_bound((const uint8_t (*)[IDX_KEY])x->u.leaf.keys, x->n, key);

	*found = pos < x->n && kcmp(x->u.leaf.keys[pos], key) == 0;
	return pos;
}

/* The leaf after the one pa leads to, in key order, with pa moved to it; NULL after the last.
 * Goes up to the deepest node on the path with a child right of the path's, then down that
 * child's leftmost path: bounded by the height both ways. */
static struct node *leaf_after(const struct idx *t, struct path *pa)
{
	int d = t->height - 2;

	while (d >= 0 && pa->idx[d] >= pa->node[d]->n)
		d--;
	if (d < 0)
		return NULL;
	struct node *x = pa->node[d]->u.in.child[++pa->idx[d]];
	for (d++; d < t->height - 1; d++) {
		pa->node[d] = x;
		pa->idx[d] = 0;
		x = x->u.in.child[0];
	}
	pa->node[t->height - 1] = x;
	return x;
}

/* ---- The API ---- */

int idx_create(struct idx **out)
{
	struct idx *t = calloc(1, sizeof(*t));
	int rc;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	rc = pool_reserve(t, 1);
	if (rc) {
		free(t->slabs);
		free(t->rel);
		free(t);
		return rc;
	}
	t->root = node_alloc(t, NODE_LEAF);
	t->height = 1;
	*out = t;
	return 0;
}

void idx_destroy(struct idx *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nslabs; i++) {
		struct slab *sl = &t->slabs[i];

		UNPOISON(sl->p, sl->bytes);
		if (sl->kind == SLAB_BIG)
			cs_bigmap_free(sl->p, sl->bytes);
		else
			munmap(sl->p, sl->bytes);
	}
	free(t->slabs);
	free(t->rel);
	free(t);
}

size_t idx_trim(struct idx *t)
{
	return pool_release(t, POOL_WARM, SIZE_MAX) * NODE_BYTES;
}

int idx_reserve(struct idx *t)
{
	return pool_reserve(t, (size_t)t->height + 1); /* I8: what put_full() may take */
}

int idx_get(const struct idx *t, const uint8_t key[IDX_KEY], struct idx_val *val)
{
	const struct node *x = descend(t, key, NULL);
	bool found;
	unsigned pos = leaf_find(x, key, &found);

	if (!found)
		return CS_ENOTFOUND;
	*val = x->u.leaf.vals[pos];
	return 0;
}

/* Inserts into leaf x, which is full, at position pos; x is at depth height - 1 of pa. */
static int put_full(struct idx *t, struct path *pa, unsigned pos, const uint8_t *key,
		    const struct idx_val *val)
{
	int d = t->height - 2; /* the parent's depth */
	struct node *x = pa->node[t->height - 1];
	struct node *p, *left, *right, *g[3];
	unsigned ci, c0, m_in, ti, room_l, room_r;
	int rc;

	if (d < 0) {
		rc = pool_reserve(t, 2); /* I8: a leaf and a root */
		if (rc)
			return rc;
		g[0] = x;
		g[1] = node_alloc(t, NODE_LEAF);
		leaf_regroup(t, g, 1, 2, 0, pos, key, val);
		new_root(t, g[0], g[1]->u.leaf.keys[0], g[1]);
		return 0;
	}
	p = pa->node[d];
	ci = pa->idx[d];
	left = ci > 0 ? p->u.in.child[ci - 1] : NULL;
	right = ci < p->n ? p->u.in.child[ci + 1] : NULL;

	/* A sibling with room takes half the difference: no new node, and of the parent only
	 * the separator between the two changes. */
	room_l = left ? LEAF_CAP - left->n : 0;
	room_r = right ? LEAF_CAP - right->n : 0;

	if (room_l || room_r) {
		if (room_l >= room_r) {
			g[0] = left, g[1] = x, c0 = ci - 1, ti = 1;
		} else {
			g[0] = x, g[1] = right, c0 = ci, ti = 0;
		}
		leaf_regroup(t, g, 2, 2, ti, pos, key, val);
		memcpy(p->u.in.keys[c0], g[1]->u.leaf.keys[0], IDX_KEY);
		return 0;
	}

	rc = pool_reserve(t, (size_t)t->height + 1); /* I8 */
	if (rc)
		return rc;
	if ((pos == LEAF_CAP && ci == p->n) || (pos == 0 && ci == 0)) {
		/* Appending past the last leaf of this parent or before the first: keys are
		 * likely arriving in order, so split in two and let later moves fill the older
		 * leaf up to the brim. */
		g[0] = x, c0 = ci, m_in = 1, ti = 0;
	} else if (left) {
		g[0] = left, g[1] = x, c0 = ci - 1, m_in = 2, ti = 1;
	} else {
		g[0] = x, g[1] = right, c0 = ci, m_in = 2, ti = 0;
	}
	g[m_in] = node_alloc(t, NODE_LEAF);
	leaf_regroup(t, g, m_in, m_in + 1, ti, pos, key, val);
	if (m_in == 2)
		memcpy(p->u.in.keys[c0], g[1]->u.leaf.keys[0], IDX_KEY);
	insert_up(t, pa, d, c0 + m_in - 1, g[m_in]->u.leaf.keys[0], g[m_in]);
	return 0;
}

int idx_put(struct idx *t, const uint8_t key[IDX_KEY], const struct idx_val *val,
	    struct idx_val *old)
{
	struct path pa;
	struct node *x = descend(t, key, &pa);
	bool found;
	unsigned pos = leaf_find(x, key, &found);
	unsigned n = x->n;
	int rc;

	if (found) {
		if (old)
			*old = x->u.leaf.vals[pos];
		x->u.leaf.vals[pos] = *val;
		return 1;
	}
	if (n < LEAF_CAP) {
		memmove(x->u.leaf.keys[pos + 1], x->u.leaf.keys[pos], (size_t)(n - pos) * IDX_KEY);
		memmove(&x->u.leaf.vals[pos + 1], &x->u.leaf.vals[pos], (n - pos) * sizeof(*val));
		memcpy(x->u.leaf.keys[pos], key, IDX_KEY);
		x->u.leaf.vals[pos] = *val;
		x->n = (uint16_t)(n + 1);
		CS_DASSERT(node_sane(x, t->height == 1));
	} else {
		rc = put_full(t, &pa, pos, key, val);
		if (rc)
			return rc;
	}
	t->count++;
	return 0;
}

/*
 * Restores the minimum fill (I4) from node x at depth d of pa upwards, after x lost entries
 * or keys: x evens out with a sibling when the two hold enough for two nodes at the minimum,
 * which ends the repair, or else merges with it, which takes a key from the parent and may
 * leave the parent short in turn. Prefers the left sibling. Then drops a root left with one
 * child. x may be any amount short: a delete leaves it one under the minimum, a repack
 * (idx_repack_step) as far down as no key at all. Allocates nothing.
 */
static void restore_fill(struct idx *t, struct path *pa, int d, struct node *x)
{
	while (d > 0) {
		bool leaf = d == t->height - 1;
		unsigned min = leaf ? LEAF_MIN : INNER_MIN;
		struct node *p = pa->node[d - 1];
		unsigned ci = pa->idx[d - 1];
		struct node *left = ci > 0 ? p->u.in.child[ci - 1] : NULL;
		struct node *right = ci < p->n ? p->u.in.child[ci + 1] : NULL;
		/* Two leaves even out when they hold 2 * min entries; two inner nodes when their
		 * keys and the separator between them leave 2 * min keys once one goes up. */
		unsigned need = 2 * min + (unsigned)!leaf;
		bool lspare = left && left->n + x->n + (unsigned)!leaf >= need;
		bool rspare = right && right->n + x->n + (unsigned)!leaf >= need;
		struct node *sib = lspare ? left : rspare ? right : left ? left : right;
		struct node *g[2];
		unsigned c0, m_out = lspare || rspare ? 2 : 1;
		uint8_t sep[1][IDX_KEY];

		if (x->n >= min)
			break;
		CS_ASSERT(sib); /* I4: a parent has at least two children */
		/* A merge fits: neither sibling could spare, so the two hold at most need - 1
		 * <= CAP (the fill asserts above). */
		if (sib == left)
			g[0] = left, g[1] = x, c0 = ci - 1;
		else
			g[0] = x, g[1] = right, c0 = ci;
		if (leaf) {
			leaf_regroup(t, g, 2, m_out, 0, 0, NULL, NULL);
			if (m_out == 2)
				memcpy(sep[0], g[1]->u.leaf.keys[0], IDX_KEY);
		} else {
			inner_regroup(t, g, 2, m_out, (const uint8_t (*)[IDX_KEY])&p->u.in.keys[c0],
				      0, 0, NULL, NULL, sep);
		}
		if (m_out == 2) {
			memcpy(p->u.in.keys[c0], sep[0], IDX_KEY);
			break;
		}
		node_free(t, g[1]);
		inner_remove_at(p, c0);
		x = p;
		d--;
	}
	if (t->height > 1 && t->root->n == 0) {
		struct node *r = t->root;

		t->root = r->u.in.child[0];
		node_free(t, r);
		t->height--;
	}
	CS_DASSERT(node_sane(t->root, true));
}

int idx_del(struct idx *t, const uint8_t key[IDX_KEY], struct idx_val *old)
{
	struct path pa;
	struct node *x = descend(t, key, &pa);
	bool found;
	unsigned pos = leaf_find(x, key, &found);
	int d = t->height - 1;

	if (!found)
		return CS_ENOTFOUND;
	if (old)
		*old = x->u.leaf.vals[pos];
	memmove(x->u.leaf.keys[pos], x->u.leaf.keys[pos + 1], (size_t)(x->n - pos - 1) * IDX_KEY);
	memmove(&x->u.leaf.vals[pos], &x->u.leaf.vals[pos + 1],
		(x->n - pos - 1) * sizeof(struct idx_val));
	x->n--;
	t->count--;

	restore_fill(t, &pa, d, x);
	return 0;
}

int idx_next(const struct idx *t, const uint8_t *after, uint8_t key[IDX_KEY],
	     struct idx_val *val)
{
	return idx_next_n(t, after, (uint8_t (*)[IDX_KEY])key, val, 1) == 1 ? 0 : CS_ENOTFOUND;
}

int idx_next_n(const struct idx *t, const uint8_t *after, uint8_t (*keys)[IDX_KEY],
	       struct idx_val *vals, int max)
{
	struct path pa;
	const struct node *x = descend(t, after, &pa);
	unsigned pos = after ? upper_bound((const uint8_t (*)[IDX_KEY])x->u.leaf.keys, x->n, after)
			     : 0;
	int n = 0;

	/* Bounded by max; the leaves after the first hold keys above after (I2). */
	while (x && n < max) {
		unsigned k = x->n - pos < (unsigned)(max - n) ? x->n - pos : (unsigned)(max - n);

		memcpy(keys[n], x->u.leaf.keys[pos], (size_t)k * IDX_KEY);
		memcpy(&vals[n], &x->u.leaf.vals[pos], (size_t)k * sizeof(*vals));
		n += (int)k;
		if (n < max)
			x = leaf_after(t, &pa);
		pos = 0;
	}
	return n;
}

/* ---- Repacking ---- */

/*
 * Descends towards key (the leftmost path when key is NULL) to depth height - 2, the parents
 * of leaves, filling pa down to it, and returns that node: a group. *hi is set to the upper
 * bound the group inherits (I2), the separator right of the path at the deepest level where
 * the path did not take the last child, or NULL for the rightmost group. Needs height >= 2.
 */
static struct node *group_find(const struct idx *t, const uint8_t *key, struct path *pa,
			       const uint8_t **hi)
{
	struct node *x = t->root;
	int d;

	CS_ASSERT(t->height >= 2);
	*hi = NULL;
	for (d = 0; d < t->height - 2; d++) {
		unsigned i = key ? upper_bound((const uint8_t (*)[IDX_KEY])x->u.in.keys, x->n, key)
				 : 0;

		pa->node[d] = x;
		pa->idx[d] = i;
		if (i < x->n)
			*hi = x->u.in.keys[i];
		x = x->u.in.child[i];
	}
	pa->node[d] = x;
	return x;
}

/*
 * Packs the leaves of group g full, in key order, and frees the leaves that leaves empty; when
 * the last would hold fewer than LEAF_MIN (I4), it evens out with the one before. Copies the
 * group's largest key to last. g may be left with any number of keys down to 0, for
 * restore_fill() to mend. Touches at most INNER_CAP + 1 leaves; allocates nothing.
 *
 * The move is in place. Entry e (counting from 0 across the group) goes to leaf e / LEAF_CAP,
 * slot e % LEAF_CAP. The leaves before the one holding e hold at most LEAF_CAP each, so that
 * leaf is at or after e's new leaf, and at or after its new slot when it is the same leaf:
 * every slot written held an entry already moved, and moves within one leaf go down
 * (memmove).
 */
static void group_pack(struct idx *t, struct node *g, uint8_t last[IDX_KEY])
{
	struct node **c = g->u.in.child;
	unsigned nc = g->n + 1u, total = 0, m, j = 0, o = 0;
	for (unsigned i = 0; i < nc; i++)
		total += c[i]->n;
	m = (total + LEAF_CAP - 1) / LEAF_CAP;
	CS_ASSERT(m >= 1 && m <= nc); /* I4: a group holds 2 * LEAF_MIN entries or more */
	if (m < nc) {
		for (unsigned i = 0; i < nc; i++) {
			struct node *src = c[i];
			unsigned n = src->n, pos = 0;

			while (pos < n) {
				struct node *dst = c[j];
				unsigned k = n - pos < LEAF_CAP - o ? n - pos : LEAF_CAP - o;

				CS_ASSERT(j < i || (j == i && o <= pos));
				if (dst != src || o != pos) {
					memmove(dst->u.leaf.keys[o], src->u.leaf.keys[pos],
						(size_t)k * IDX_KEY);
					memmove(&dst->u.leaf.vals[o], &src->u.leaf.vals[pos],
						k * sizeof(struct idx_val));
				}
				pos += k;
				o += k;
				if (o == LEAF_CAP) {
					dst->n = (uint16_t)LEAF_CAP;
					j++;
					o = 0;
				}
			}
		}
		if (o > 0)
			c[j++]->n = (uint16_t)o;
		CS_ASSERT(j == m);
		for (unsigned i = m; i < nc; i++)
			node_free(t, c[i]);
		/* The last two hold more than LEAF_CAP, so both end >= (LEAF_CAP + 1) / 2. */
		if (m >= 2 && c[m - 1]->n < LEAF_MIN)
			leaf_regroup(t, &c[m - 2], 2, 2, 0, 0, NULL, NULL);
		for (unsigned i = 1; i < m; i++)
			memcpy(g->u.in.keys[i - 1], c[i]->u.leaf.keys[0], IDX_KEY);
		g->n = (uint16_t)(m - 1);
	}
	memcpy(last, c[m - 1]->u.leaf.keys[c[m - 1]->n - 1], IDX_KEY);
}

/* A step's share of the release; returns whether free nodes beyond the warm few remain. */
static int release_step(struct idx *t)
{
	pool_release(t, POOL_WARM, STEP_RELEASE);
	return t->nfree > POOL_WARM;
}

int idx_repack_step(struct idx *t, const uint8_t *from, uint8_t next[IDX_KEY])
{
	uint8_t at[IDX_KEY], bound[IDX_KEY];
	struct path pa;
	const uint8_t *hi;
	struct node *g, *end;

	if (t->height < 2) { /* a root leaf is as packed as it can be */
		if (from)
			memmove(next, from, IDX_KEY); /* from may be next */
		else
			memset(next, 0, IDX_KEY); /* below every key: from the start, if it grows */
		return release_step(t);
	}
	if (from) {
		memcpy(at, from, IDX_KEY); /* from may be next */
		from = at;
	}
	g = group_find(t, from, &pa, &hi);
	end = g->u.in.child[g->n];
	if (from && kcmp(end->u.leaf.keys[end->n - 1], from) <= 0) {
		/* Nothing above the cursor here: the next group holds the next key, and every
		 * key of it is at or above hi > from (I2). */
		if (!hi) {
			memcpy(next, from, IDX_KEY); /* only memory left to give back */
			return release_step(t);
		}
		memcpy(bound, hi, IDX_KEY);
		g = group_find(t, bound, &pa, &hi);
	}
	/* Decided before the repair, which may merge g with a neighbour: the rightmost group
	 * ends the walk. */
	int more = hi != NULL;

	group_pack(t, g, next);
	restore_fill(t, &pa, t->height - 2, g);
	return release_step(t) || more;
}

bool idx_repack_wanted(const struct idx *t)
{
	/* The nodes holding memory, less the warm few a walk would keep anyway. */
	size_t warm = t->nfree < POOL_WARM ? t->nfree : POOL_WARM;
	size_t held = t->slab_bytes / NODE_BYTES - t->nrel - warm;

	/* A tree of a slab or less has too little to give back to be worth a walk. */
	return held > SLAB_NODES && 5 * held > 6 * (t->count / LEAF_CAP + 1);
}

/* ---- Bulk load ---- */

/* A bulk load in parts (btree.h). Its leaves lv[0..leaves) are known from the start: the
 * first nbig of them are the nodes of a slab of their own, in address order, which nothing
 * touches before the part that fills them; the rest, fewer than a huge page's worth, come
 * from the pool. A leaf's page is thus first touched, and zeroed by the kernel, by the thread
 * that fills it, while the entries it is about to hold are in that thread's cache, and never
 * twice (pool_grow writes every free node's header). Inner nodes come from the pool, reserved
 * at the start, and are made by idx_load_end(). */
struct idx_load {
	struct idx *t; /* borrowed */
	size_t n, leaves, inner;
	int height;
	unsigned parts;
	size_t part_leaf[IDX_LOAD_PARTS_MAX + 1]; /* part p fills leaves [part_leaf[p], [p + 1]) */
	uint8_t *big;                             /* the slab of lv[0..nbig), or NULL */
	size_t nbig;
	/* Adopted (idx_adopt_begin): big is the caller's leaves, t's last slab, nbig of them all;
	 * each part counts its entries in part_n, which must add up to n. */
	bool adopted;
	size_t part_n[IDX_LOAD_PARTS_MAX];
	struct node *lv[]; /* the leaves, then (in idx_load_end) the inner nodes */
};

/* The index of leaf j's first entry: share() of n entries over the leaves. */
static size_t leaf_first(const struct idx_load *ld, size_t j)
{
	size_t q = ld->n / ld->leaves, r = ld->n % ld->leaves;

	return j * q + (j < r ? j : r);
}

/* The inner nodes and the height of a tree over leaves leaves, counted before a bulk load
 * so that its reservation covers the whole build and the only failures after it are the
 * caller's. Errors: CS_ELIMIT. */
static int load_levels(size_t leaves, size_t *inner, int *height)
{
	*inner = 0;
	*height = 1;
	for (size_t c = leaves; c > 1; c = (c + INNER_CAP) / (INNER_CAP + 1)) {
		*inner += (c + INNER_CAP) / (INNER_CAP + 1);
		++*height;
	}
	if (*height > CS_BTREE_HEIGHT_MAX)
		return cs_fail(CS_ELIMIT, "btree: %zu leaves need more than %d levels", leaves,
			       CS_BTREE_HEIGHT_MAX);
	return 0;
}

/* Part 0 takes share0 percent of the leaves, the others equal shares of the rest; each
 * boundary inside a big slab lies on a huge page's edge (at most nbig), so that no two
 * threads fault in the same huge page. Adopted leaves lie in 4 KiB pages. */
static void plan_parts(struct idx_load *ld, unsigned share0)
{
	unsigned parts = ld->parts;
	size_t leaves = ld->leaves, head = parts == 1 ? leaves : leaves * share0 / 100;

	for (unsigned p = 0; p <= parts; p++) {
		size_t j = p == 0 ? 0 : head + (leaves - head) * (p - 1) / (parts - 1 ? parts - 1 : 1);

		if (p > 0 && p < parts && j < ld->nbig && !ld->adopted) /* the nearest edge */
			j = (j + CS_BIGMAP_ALIGN / NODE_BYTES / 2) & ~(CS_BIGMAP_ALIGN / NODE_BYTES - 1);
		ld->part_leaf[p] = j < leaves ? j : leaves;
	}
}

int idx_load_begin(struct idx *t, size_t n, unsigned parts, unsigned share0,
		   struct idx_load **out)
{
	size_t leaves, inner, nbig = 0;
	uint8_t *big = NULL;
	int height;
	int rc;

	*out = NULL;
	CS_ASSERT(parts >= 1 && parts <= IDX_LOAD_PARTS_MAX && (parts == 1 || share0 <= 100));
	if (t->count != 0 || t->height != 1)
		return cs_fail(CS_EINVAL, "btree: bulk load into a tree that is not empty");
	if (n == 0)
		return 0;
	leaves = (n + LEAF_CAP - 1) / LEAF_CAP;
	if ((rc = load_levels(leaves, &inner, &height)) != 0)
		return rc;
	struct idx_load *ld = malloc(sizeof(*ld) + (leaves + inner) * sizeof(ld->lv[0]));
	if (!ld)
		return -ENOMEM;
	/* Whole huge pages of leaves get their own slab; a smaller load takes the pool's. */
	if (leaves <= SIZE_MAX / 2 / NODE_BYTES)
		nbig = (leaves * NODE_BYTES & ~(CS_BIGMAP_ALIGN - 1)) / NODE_BYTES;
	if (nbig > 0 && (rc = slab_add(t, nbig * NODE_BYTES, true, &big)) != 0) {
		free(ld);
		return rc;
	}
	if ((rc = pool_reserve(t, leaves - nbig + inner)) != 0) {
		/* The slab stays t's, its nodes on the released stack: never touched, they hold
		 * no memory (I7). */
		for (size_t j = nbig; j-- > 0;) {
			t->rel[t->nrel++] = (struct node *)(big + j * NODE_BYTES);
			POISON(big + j * NODE_BYTES, NODE_BYTES);
		}
		free(ld);
		return rc;
	}
	*ld = (struct idx_load){t, n, leaves, inner, height, parts, {0}, big, nbig, false, {0}};
	for (size_t j = 0; j < nbig; j++)
		ld->lv[j] = (struct node *)(big + j * NODE_BYTES); /* untouched until its part */
	node_free(t, t->root); /* the empty root leaf; the reservation still holds */
	for (size_t j = nbig; j < leaves; j++)
		ld->lv[j] = node_alloc(t, NODE_LEAF);
	t->root = NULL; /* until idx_load_end() */
	plan_parts(ld, share0);
	*out = ld;
	return 0;
}

size_t idx_load_part_first(const struct idx_load *ld, unsigned p)
{
	CS_ASSERT(p <= ld->parts);
	return leaf_first(ld, ld->part_leaf[p]);
}

int idx_load_part(struct idx_load *ld, unsigned p,
		  int (*fill)(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
			      struct idx_val *vals),
		  void *ctx)
{
	const uint8_t *prev = NULL; /* the part's last key so far */

	CS_ASSERT(p < ld->parts);
	for (size_t j = ld->part_leaf[p]; j < ld->part_leaf[p + 1]; j++) {
		struct node *x = ld->lv[j];
		size_t i = leaf_first(ld, j);
		unsigned cnt = (unsigned)(leaf_first(ld, j + 1) - i);
		/* A leaf's entries in one call, straight into its arrays: a call per entry cost
		 * a tenth of a million-entry load. */
		int rc = fill(ctx, i, cnt, x->u.leaf.keys, x->u.leaf.vals);

		for (unsigned k = 0; rc == 0 && k < cnt; k++, i++) {
			if (prev && kcmp(prev, x->u.leaf.keys[k]) >= 0)
				rc = cs_fail(CS_ECORRUPT, "btree: bulk load entry %zu is not above "
					       "the one before it", i);
			prev = x->u.leaf.keys[k];
		}
		if (rc != 0)
			return rc;
		x->n = (uint16_t)cnt;
		x->kind = NODE_LEAF;
	}
	return 0;
}

/* Gives every leaf of a load that failed back to the pool and leaves t an empty tree. The
 * slab's leaves, filled or not, go to the released stack (I7), their memory given back. */
static void load_undo(struct idx_load *ld)
{
	struct idx *t = ld->t;

	if (ld->adopted) { /* none of its leaves is on a list yet: the slab goes whole (I7) */
		struct slab *sl = &t->slabs[--t->nslabs];
		CS_ASSERT(sl->kind == SLAB_ADOPTED && sl->p == ld->big);
		munmap(sl->p, sl->bytes);
		t->slab_bytes -= sl->bytes;
		ld->nbig = ld->leaves = 0;
	}
	for (size_t j = ld->nbig; j < ld->leaves; j++) {
		ld->lv[j]->kind = NODE_LEAF; /* as node_alloc() left it, whatever the fill wrote */
		node_free(t, ld->lv[j]);
	}
	if (ld->nbig > 0 && madvise(ld->big, ld->nbig * NODE_BYTES, MADV_DONTNEED) == 0) {
		for (size_t j = ld->nbig; j-- > 0;) {
			CS_ASSERT(t->nrel < t->rel_cap); /* I7 */
			t->rel[t->nrel++] = ld->lv[j];
			POISON(ld->lv[j], NODE_BYTES);
		}
	} else {
		for (size_t j = ld->nbig; j-- > 0;) {
			ld->lv[j]->kind = NODE_LEAF;
			node_free(t, ld->lv[j]);
		}
	}
	t->root = node_alloc(t, NODE_LEAF); /* the pool holds the nodes just freed */
	t->height = 1;
	t->count = 0;
}

int idx_load_end(struct idx_load *ld, int rc)
{
	if (ld == NULL)
		return rc;
	struct idx *t = ld->t;
	const uint8_t **mins = NULL;

	/* The parts checked the order inside each; here it is checked across them. */
	for (unsigned p = 1; rc == 0 && p < ld->parts; p++) {
		size_t j = ld->part_leaf[p];
		if (j == 0 || j == ld->leaves)
			continue;
		const struct node *a = ld->lv[j - 1], *b = ld->lv[j];
		if (kcmp(a->u.leaf.keys[a->n - 1], b->u.leaf.keys[0]) < 0)
			continue;
		rc = ld->adopted ? cs_fail(CS_ECORRUPT, "btree: leaf %zu does not begin above the "
						    "leaf before it", j)
				 : cs_fail(CS_ECORRUPT, "btree: bulk load entry %zu is not above the "
						    "one before it", leaf_first(ld, j));
	}
	size_t held = 0;
	for (unsigned p = 0; ld->adopted && p < ld->parts; p++)
		held += ld->part_n[p];
	if (rc == 0 && ld->adopted && held != ld->n)
		rc = cs_fail(CS_ECORRUPT, "btree: the leaves hold %zu entries, not %zu", held, ld->n);
	if (rc == 0 && (mins = malloc(ld->leaves * sizeof(*mins))) == NULL)
		rc = -ENOMEM;
	if (rc != 0) {
		load_undo(ld);
		free(ld);
		return rc;
	}
	/* mins[j]: the smallest key under the j-th node of the level being made, which the level
	 * above takes as separator. */
	for (size_t j = 0; j < ld->leaves; j++)
		mins[j] = ld->lv[j]->u.leaf.keys[0];
	/* Inner levels, each over the level below, until one node is left: the root. A node
	 * of m children gets more than (INNER_CAP + 1) / 2 of them, so at least INNER_MIN
	 * keys (I4), and a root at least 2 children, so at least 1 key. The leaves: share()
	 * dealt n entries over the fewest leaves, so every leaf but the root holds more than
	 * LEAF_CAP * (leaves - 1) / leaves >= LEAF_MIN entries (I4). */
	size_t first = 0, nlv = ld->leaves; /* lv[first..nlv) is the level below */
	for (size_t c = ld->leaves; c > 1;) {
		size_t m = (c + INNER_CAP) / (INNER_CAP + 1), below = first, ci = 0;

		first = nlv;
		for (size_t j = 0; j < m; j++) {
			struct node *x = node_alloc(t, NODE_INNER);
			unsigned cnt = (unsigned)(c / m + (j < c % m));

			for (unsigned k = 0; k < cnt; k++, ci++) {
				x->u.in.child[k] = ld->lv[below + ci];
				if (k > 0)
					memcpy(x->u.in.keys[k - 1], mins[ci], IDX_KEY);
			}
			x->n = (uint16_t)(cnt - 1);
			mins[j] = mins[ci - cnt]; /* j <= ci - cnt: never read again below */
			ld->lv[nlv++] = x;
		}
		c = m;
	}
	CS_ASSERT(nlv == ld->leaves + ld->inner);
	t->root = ld->lv[nlv - 1];
	t->height = ld->height;
	t->count = ld->n;
	free(mins);
	free(ld);
	CS_DASSERT(idx_check(t) == 0);
	return 0;
}

/* ---- Adopted leaves ---- */

void idx_leaf_image(uint8_t img[IDX_NODE_BYTES], unsigned n, const uint8_t (*keys)[IDX_KEY],
		    const struct idx_val *vals)
{
	struct node *x = (struct node *)img;

	CS_ASSERT(n >= 1 && n <= LEAF_CAP);
	memset(img, 0, NODE_BYTES);
	x->n = (uint16_t)n;
	x->kind = NODE_LEAF;
	memcpy(x->u.leaf.keys, keys, (size_t)n * IDX_KEY);
	memcpy(x->u.leaf.vals, vals, n * sizeof(*vals));
}

/* Are the n bytes at p zero? */
static bool all_zero(const uint8_t *p, size_t n)
{
	return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

int idx_leaf_view(const uint8_t img[IDX_NODE_BYTES], unsigned *n,
		  const uint8_t (**keys)[IDX_KEY], const struct idx_val **vals)
{
	const struct node *x = (const struct node *)img;
	const uint8_t *end = (const uint8_t *)&x->u.leaf.keys[LEAF_CAP];

	if (x->kind != NODE_LEAF || !all_zero(img + 3, NODE_HDR - 3) || x->n < 1 ||
	    x->n > LEAF_CAP)
		return cs_fail(CS_ECORRUPT, "btree: not a leaf's header (kind %u, %u entries)",
			       x->kind, x->n);
	/* The unused slots and the tail are zero, so that a leaf has one image (btree.h). */
	if (!all_zero((const uint8_t *)&x->u.leaf.vals[x->n],
		      (LEAF_CAP - x->n) * sizeof(struct idx_val)) ||
	    !all_zero(x->u.leaf.keys[x->n], (size_t)(LEAF_CAP - x->n) * IDX_KEY) ||
	    !all_zero(end, (size_t)(img + NODE_BYTES - end)))
		return cs_fail(CS_ECORRUPT, "btree: a leaf of %u entries with bytes past them",
			       x->n);
	*n = x->n;
	*keys = (const uint8_t (*)[IDX_KEY])x->u.leaf.keys;
	*vals = x->u.leaf.vals;
	return 0;
}

int idx_adopt_begin(struct idx *t, uint8_t *leaves, size_t nleaves, size_t n, unsigned parts,
		    unsigned share0, struct idx_load **out)
{
	size_t bytes = nleaves * NODE_BYTES, inner = 0;
	struct idx_load *ld = NULL;
	int height = 1, rc;

	*out = NULL;
	CS_ASSERT(parts >= 1 && parts <= IDX_LOAD_PARTS_MAX && (parts == 1 || share0 <= 100));
	CS_ASSERT((uintptr_t)leaves % NODE_BYTES == 0 && nleaves <= SIZE_MAX / 2 / NODE_BYTES);
	if (t->count != 0 || t->height != 1) {
		rc = cs_fail(CS_EINVAL, "btree: bulk load into a tree that is not empty");
		goto fail;
	}
	if (nleaves == 0)
		return 0;
	if ((rc = load_levels(nleaves, &inner, &height)) != 0)
		goto fail;
	if ((ld = malloc(sizeof(*ld) + (nleaves + inner) * sizeof(ld->lv[0]))) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	/* In this order: pool_reserve() may add slabs, taking the room slab_room() made. */
	if ((rc = pool_reserve(t, inner)) != 0 || (rc = slab_room(t, bytes)) != 0)
		goto fail;
	slab_count(t, leaves, bytes, SLAB_ADOPTED);
	*ld = (struct idx_load){t, n, nleaves, inner, height, parts, {0}, leaves, nleaves, true, {0}};
	for (size_t j = 0; j < nleaves; j++)
		ld->lv[j] = (struct node *)(leaves + j * NODE_BYTES);
	node_free(t, t->root); /* the empty root leaf; the reservation still holds */
	t->root = NULL;        /* until idx_load_end() */
	plan_parts(ld, share0);
	*out = ld;
	return 0;
fail:
	munmap(leaves, bytes); /* the memory was t's to free */
	free(ld);
	return rc;
}

size_t idx_load_part_leaf(const struct idx_load *ld, unsigned p)
{
	CS_ASSERT(p <= ld->parts);
	return ld->part_leaf[p];
}

int idx_adopt_part(struct idx_load *ld, unsigned p,
		   int (*check)(void *ctx, size_t leaf, unsigned cnt,
				const uint8_t (*keys)[IDX_KEY], const struct idx_val *vals),
		   void *ctx)
{
	const uint8_t *prev = NULL; /* the part's last key so far */

	CS_ASSERT(ld->adopted && p < ld->parts);
	for (size_t j = ld->part_leaf[p]; j < ld->part_leaf[p + 1]; j++) {
		const uint8_t (*keys)[IDX_KEY];
		const struct idx_val *vals;
		unsigned cnt;
		int rc = idx_leaf_view((const uint8_t *)ld->lv[j], &cnt, &keys, &vals);

		if (rc != 0)
			return cs_fail(rc, "%s, in leaf %zu", cs_errmsg(), j);
		if (ld->leaves > 1 && cnt < LEAF_MIN) /* I4 */
			return cs_fail(CS_ECORRUPT, "btree: leaf %zu holds %u entries, fewer than "
				       "%u", j, cnt, (unsigned)LEAF_MIN);
		for (unsigned k = 0; k < cnt; k++) {
			if (prev && kcmp(prev, keys[k]) >= 0)
				return cs_fail(CS_ECORRUPT, "btree: entry %u of leaf %zu is not "
					       "above the one before it", k, j);
			prev = keys[k];
		}
		if ((rc = check(ctx, j, cnt, keys, vals)) != 0)
			return rc;
		ld->part_n[p] += cnt;
	}
	return 0;
}

int idx_load(struct idx *t, size_t n,
	     int (*fill)(void *ctx, size_t i, unsigned cnt, uint8_t (*keys)[IDX_KEY],
			 struct idx_val *vals),
	     void *ctx)
{
	struct idx_load *ld;
	int rc = idx_load_begin(t, n, 1, 0, &ld);

	if (rc != 0 || ld == NULL)
		return rc;
	return idx_load_end(ld, idx_load_part(ld, 0, fill, ctx));
}

int idx_walk(const struct idx *t,
	     int (*fn)(void *ctx, const uint8_t *key, const struct idx_val *val), void *ctx)
{
	struct path pa;

	/* Bounded: leaf_after() visits each leaf once. */
	for (const struct node *x = descend(t, NULL, &pa); x; x = leaf_after(t, &pa)) {
		for (unsigned i = 0; i < x->n; i++) {
			int rc = fn(ctx, x->u.leaf.keys[i], &x->u.leaf.vals[i]);

			if (rc)
				return rc;
		}
	}
	return 0;
}

size_t idx_count(const struct idx *t)
{
	return t->count;
}

size_t idx_bytes(const struct idx *t)
{
	/* Released nodes hold no memory; every other node of a slab was touched (pool_grow
	 * writes each header), so it does. */
	return t->slab_bytes - t->nrel * NODE_BYTES + t->slabs_cap * sizeof(*t->slabs) +
	       t->rel_cap * sizeof(*t->rel) + sizeof(*t);
}

int idx_height(const struct idx *t)
{
	return t->height;
}

/* ---- The whole-tree check ---- */

struct check {
	const struct node *prev_leaf; /* the last leaf visited, in key order */
	size_t entries;
	size_t nodes;
};

static int check_node(const struct idx *t, const struct node *x, int depth, const uint8_t *lo,
		      const uint8_t *hi, struct check *c)
{
	bool root = depth == 0;
	bool leaf = depth == t->height - 1;
	const uint8_t (*keys)[IDX_KEY];
	unsigned n;

	if (!x)
		return cs_fail(CS_ECORRUPT, "btree I2: NULL child at depth %d", depth);
	n = x->n;
	c->nodes++;
	if (x->kind != (leaf ? NODE_LEAF : NODE_INNER))
		return cs_fail(CS_ECORRUPT, "btree I3: node of kind %u at depth %d of height %d",
			       x->kind, depth, t->height);
	if (leaf) {
		if (n > LEAF_CAP || (!root && n < LEAF_MIN))
			return cs_fail(CS_ECORRUPT, "btree I4: leaf at depth %d holds %u entries",
				       depth, n);
		keys = (const uint8_t (*)[IDX_KEY])x->u.leaf.keys;
	} else {
		if (n > INNER_CAP || n < (root ? 1 : INNER_MIN))
			return cs_fail(CS_ECORRUPT,
				       "btree I4: inner node at depth %d holds %u keys", depth, n);
		keys = (const uint8_t (*)[IDX_KEY])x->u.in.keys;
	}
	for (unsigned i = 0; i < n; i++) {
		if (i > 0 && kcmp(keys[i - 1], keys[i]) >= 0)
			return cs_fail(CS_ECORRUPT, "btree I1: keys %u and %u of a node at "
				       "depth %d out of order", i - 1, i, depth);
		if ((lo && kcmp(keys[i], lo) < 0) || (hi && kcmp(keys[i], hi) >= 0))
			return cs_fail(CS_ECORRUPT,
				       "btree I2: key %u of a node at depth %d outside the bounds "
				       "its parent sets", i, depth);
	}
	if (leaf) {
		if (x->next)
			return cs_fail(CS_ECORRUPT, "btree I5: a leaf at depth %d holds a pointer",
				       depth);
		if (c->prev_leaf) {
			const struct node *pl = c->prev_leaf;

			if (n > 0 && kcmp(pl->u.leaf.keys[pl->n - 1], keys[0]) >= 0)
				return cs_fail(CS_ECORRUPT, "btree I1: keys out of order across "
					       "neighbouring leaves");
		}
		c->prev_leaf = x;
		c->entries += n;
		return 0;
	}
	/* Depth is bounded by the height (I3), so this recursion is too. */
	for (unsigned i = 0; i <= n; i++) {
		int rc = check_node(t, x->u.in.child[i], depth + 1, i > 0 ? keys[i - 1] : lo,
				    i < n ? keys[i] : hi, c);

		if (rc)
			return rc;
	}
	return 0;
}

int idx_check(const struct idx *t)
{
	struct check c = {0};
	size_t nfree = 0;
	int rc;

	if (t->height < 1 || t->height > CS_BTREE_HEIGHT_MAX)
		return cs_fail(CS_ECORRUPT, "btree I3: height %d", t->height);
	rc = check_node(t, t->root, 0, NULL, NULL, &c);
	if (rc)
		return rc;
	if (c.entries != t->count)
		return cs_fail(CS_ECORRUPT, "btree I6: count %zu but the leaves hold %zu",
			       t->count, c.entries);
	for (const struct node *f = t->free; f; f = f->next) {
		if (f->kind != NODE_FREE || ++nfree > t->nfree)
			return cs_fail(CS_ECORRUPT, "btree I7: free list broken at node %zu",
				       nfree);
	}
	if (nfree != t->nfree || t->nrel > t->rel_cap || t->rel_cap < t->slab_bytes / NODE_BYTES ||
	    c.nodes + nfree + t->nrel != t->slab_bytes / NODE_BYTES)
		return cs_fail(CS_ECORRUPT, "btree I7: %zu nodes in the tree, %zu free (%zu "
			       "recorded) and %zu released of %zu", c.nodes, nfree, t->nfree,
			       t->nrel, t->slab_bytes / NODE_BYTES);
	return 0;
}

/* ---- Test hooks ---- */

void idx_test_fail_slab(struct idx *t, unsigned countdown)
{
	t->fail_countdown = countdown;
}

int idx_test_corrupt(struct idx *t, int fault)
{
	struct node *first = descend(t, NULL, NULL);
	struct node *r = t->root;
	uint8_t tmp[IDX_KEY];

	switch (fault) {
	case IDX_FAULT_ORDER:
		if (first->n < 2)
			return CS_EINVAL;
		memcpy(tmp, first->u.leaf.keys[0], IDX_KEY);
		memcpy(first->u.leaf.keys[0], first->u.leaf.keys[1], IDX_KEY);
		memcpy(first->u.leaf.keys[1], tmp, IDX_KEY);
		return 0;
	case IDX_FAULT_SEPARATOR: {
		struct node *x;

		if (t->height < 2)
			return CS_EINVAL;
		/* Raise the root's first separator past the smallest key of its second
		 * subtree, staying below the next separator so that only I2 breaks. */
		x = r->u.in.child[1];
		for (int d = 1; d < t->height - 1; d++)
			x = x->u.in.child[0];
		memcpy(r->u.in.keys[0], x->u.leaf.keys[1], IDX_KEY);
		return 0;
	}
	case IDX_FAULT_LEAF_PTR:
		first->next = r;
		return 0;
	case IDX_FAULT_COUNT:
		t->count++;
		return 0;
	}
	return CS_EINVAL;
}
