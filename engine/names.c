/*
 * names.c - the in-memory name table: an AVL tree of owned names, walked in byte order.
 *
 * Why a tree and not a hash map: cs_name_list() walks names in byte order in pieces, each
 * piece starting after the last name of the one before, without holding the store's lock in
 * between; a balanced tree answers "the next names after X" in O(log n + piece) for any X,
 * including a name deleted since. Lookups are O(log n) memcmp's of at most 255 bytes.
 *
 * Invariants:
 *   N1. In-order, the names are strictly increasing in byte order (cmp() below): no name
 *       appears twice.
 *   N2. Every node's height is 1 + the larger of its children's heights (0 for none), and
 *       the heights of its two children differ by at most 1. Hence the height stays below
 *       1.4405 * log2(n + 2) and every walk fits its NAMES_HEIGHT_MAX stack.
 *   N3. count is the number of nodes, bytes the sum of their allocation sizes, sizes the
 *       sum of their values' file sizes (modulo 2^64: sizes come from callers, and
 *       wrapping arithmetic keeps every set and delete exact however large they are).
 *   N4. Every name in the table passed name_check(): no NUL inside, so name + NUL is a C
 *       string and byte order equals strcmp() order.
 *
 * Walks are iterative with explicit stacks of child-pointer slots, so a rebalance at one
 * level replaces the subtree in its parent's slot without any parent pointers.
 */
#include "names.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

struct name_node {
	struct name_node *child[2];
	uint8_t height; /* N2: at most NAMES_HEIGHT_MAX */
	uint16_t len;   /* bytes of name, NUL excluded */
	struct name_val v;
	uint8_t name[]; /* len bytes and a NUL; owned by the node */
};

struct names {
	struct name_node *root;
	uint64_t count; /* N3 */
	uint64_t bytes; /* N3 */
	uint64_t sizes; /* N3 */
};

_Static_assert(CS_NAME_MAX <= UINT16_MAX, "a name's length fits the node's field");
_Static_assert(NAMES_HEIGHT_MAX <= UINT8_MAX, "heights fit the node's field");

/* ---- Name rules ------------------------------------------------------------------------ */

/* Decodes the UTF-8 sequence at p (avail bytes, at least 1) into *cp. Returns its length
 * (1..4), or 0 when it is not valid UTF-8: a stray continuation byte, an overlong form, a
 * surrogate (U+D800..U+DFFF), a code point above U+10FFFF, or a sequence cut short. The
 * second-byte ranges are those of the Unicode standard's table 3-7. */
static size_t utf8_one(const uint8_t *p, size_t avail, uint32_t *cp)
{
	uint8_t b0 = p[0], lo = 0x80, hi = 0xbf;
	size_t n;
	uint32_t c;

	if (b0 < 0x80) {
		*cp = b0;
		return 1;
	}
	if (b0 < 0xc2) { /* a continuation byte, or 0xc0/0xc1: overlong */
		return 0;
	} else if (b0 < 0xe0) {
		n = 2;
		c = b0 & 0x1f;
	} else if (b0 < 0xf0) {
		n = 3;
		c = b0 & 0x0f;
		lo = b0 == 0xe0 ? 0xa0 : 0x80; /* overlong */
		hi = b0 == 0xed ? 0x9f : 0xbf; /* surrogates */
	} else if (b0 < 0xf5) {
		n = 4;
		c = b0 & 0x07;
		lo = b0 == 0xf0 ? 0x90 : 0x80; /* overlong */
		hi = b0 == 0xf4 ? 0x8f : 0xbf; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	c = c << 6 | (p[1] & 0x3fu);
	for (size_t i = 2; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (p[i] & 0x3fu);
	}
	*cp = c;
	return n;
}

int name_check(const uint8_t *name, size_t len, char *why, size_t cap)
{
	if (len == 0) {
		snprintf(why, cap, "name is empty");
		return CS_EINVAL;
	}
	if (len > CS_NAME_MAX) {
		snprintf(why, cap, "name is %zu bytes, longer than %d", len, CS_NAME_MAX);
		return CS_EINVAL;
	}
	/* Bounded: i grows by 1..4 each pass, up to len <= CS_NAME_MAX. */
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t n = utf8_one(name + i, len - i, &cp);
		if (n == 0) {
			snprintf(why, cap, "name is not valid UTF-8 at byte %zu", i);
			return CS_EINVAL;
		}
		/* Control characters (Unicode category Cc) would break the one-name-a-line
		 * listings and terminals that show names; NUL would cut the C string. */
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
			const char *what = cp == 0      ? "a NUL"
			                   : cp == '\t' ? "a tab"
			                   : cp == '\n' ? "a newline"
			                   : cp == '\r' ? "a carriage return"
			                                : NULL;
			if (what != NULL)
				snprintf(why, cap, "name has %s at byte %zu", what, i);
			else
				snprintf(why, cap, "name has control character U+%04X at byte %zu",
				         (unsigned)cp, i);
			return CS_EINVAL;
		}
		i += n;
	}
	return 0;
}

CS_API int cs_name_check(const char *name)
{
	char why[128];

	cs_clear_error();
	if (name == NULL)
		return cs_fail(CS_EINVAL, "no name given");
	int rc = name_check((const uint8_t *)name, strlen(name), why, sizeof(why));
	return rc != 0 ? cs_fail(rc, "%s", why) : 0;
}

/* ---- The tree -------------------------------------------------------------------------- */

/* Byte order of name (len bytes) against n's name: memcmp, then the shorter first. */
static int cmp(const uint8_t *name, size_t len, const struct name_node *n)
{
	size_t m = len < n->len ? len : n->len;
	int c = memcmp(name, n->name, m);
	if (c != 0)
		return c;
	return (len > n->len) - (len < n->len);
}

static int height(const struct name_node *n)
{
	return n != NULL ? n->height : 0;
}

static void fix_height(struct name_node *n)
{
	int l = height(n->child[0]), r = height(n->child[1]);
	n->height = (uint8_t)(1 + (l > r ? l : r));
}

/* Rotates the child on side !d up into n's place, n going down on side d. Returns the new
 * subtree root. */
static struct name_node *rotate(struct name_node *n, int d)
{
	struct name_node *c = n->child[!d];
	n->child[!d] = c->child[d];
	c->child[d] = n;
	fix_height(n);
	fix_height(c);
	return c;
}

/* Restores N2 at n, whose subtrees satisfy it and differ in height by at most 2. Returns
 * the subtree's new root. */
static struct name_node *rebalance(struct name_node *n)
{
	fix_height(n);
	int bal = height(n->child[0]) - height(n->child[1]);
	if (bal > 1) {
		struct name_node *l = n->child[0];
		if (height(l->child[0]) < height(l->child[1]))
			n->child[0] = rotate(l, 0);
		return rotate(n, 1);
	}
	if (bal < -1) {
		struct name_node *r = n->child[1];
		if (height(r->child[1]) < height(r->child[0]))
			n->child[1] = rotate(r, 1);
		return rotate(n, 0);
	}
	return n;
}

static size_t node_size(size_t len)
{
	return sizeof(struct name_node) + len + 1;
}

int names_create(struct names **out)
{
	*out = calloc(1, sizeof(**out));
	return *out != NULL ? 0 : -ENOMEM;
}

void names_destroy(struct names *t)
{
	if (t == NULL)
		return;
	/* Frees without a stack: rotate each left child up until the root has none, then
	 * free the root and go right (a tree flattening that visits every node once). */
	struct name_node *n = t->root;
	while (n != NULL) {
		struct name_node *l = n->child[0];
		if (l != NULL) {
			n->child[0] = l->child[1];
			l->child[1] = n;
			n = l;
		} else {
			struct name_node *r = n->child[1];
			free(n);
			n = r;
		}
	}
	free(t);
}

int names_node_new(const uint8_t *name, size_t len, struct name_node **out)
{
	CS_ASSERT(len >= 1 && len <= CS_NAME_MAX); /* N4: checked by the caller */
	struct name_node *n = malloc(node_size(len));
	if (n == NULL)
		return -ENOMEM;
	n->child[0] = n->child[1] = NULL;
	n->height = 1;
	n->len = (uint16_t)len;
	memcpy(n->name, name, len);
	n->name[len] = '\0';
	*out = n;
	return 0;
}

void names_node_free(struct name_node *n)
{
	free(n);
}

int names_put(struct names *t, struct name_node *node, const struct name_val *v)
{
	struct name_node **stack[NAMES_HEIGHT_MAX];
	struct name_node **link = &t->root;
	int top = 0;

	/* Bounded by the tree's height (N2). */
	while (*link != NULL) {
		int c = cmp(node->name, node->len, *link);
		if (c == 0) {
			t->sizes += v->size - (*link)->v.size; /* N3 */
			(*link)->v = *v;
			free(node);
			return 1;
		}
		CS_ASSERT(top < NAMES_HEIGHT_MAX); /* N2 */
		stack[top++] = link;
		link = &(*link)->child[c > 0];
	}
	node->child[0] = node->child[1] = NULL;
	node->height = 1;
	node->v = *v;
	*link = node;
	while (top > 0) {
		link = stack[--top];
		*link = rebalance(*link);
	}
	t->count++;
	t->bytes += node_size(node->len);
	t->sizes += v->size;
	return 0;
}

int names_set(struct names *t, const uint8_t *name, size_t len, const struct name_val *v)
{
	struct name_node *n;
	int rc;

	if (t->count >= CS_NAMES_MAX && names_get(t, name, len, NULL) != 0)
		return CS_ELIMIT;
	if ((rc = names_node_new(name, len, &n)) != 0)
		return rc;
	return names_put(t, n, v);
}

int names_del(struct names *t, const uint8_t *name, size_t len)
{
	struct name_node **stack[NAMES_HEIGHT_MAX];
	struct name_node **link = &t->root;
	int top = 0;

	while (*link != NULL) {
		int c = cmp(name, len, *link);
		if (c == 0)
			break;
		CS_ASSERT(top < NAMES_HEIGHT_MAX); /* N2 */
		stack[top++] = link;
		link = &(*link)->child[c > 0];
	}
	struct name_node *victim = *link;
	if (victim == NULL)
		return CS_ENOTFOUND;
	if (victim->child[0] == NULL || victim->child[1] == NULL) {
		*link = victim->child[victim->child[0] == NULL];
	} else {
		/* Two children: the in-order successor (leftmost of the right subtree) takes
		 * the victim's place. Its old slot's ancestors, up to the victim's slot, are
		 * rebalanced with the rest of the path. */
		int vi = top;
		CS_ASSERT(top < NAMES_HEIGHT_MAX);
		stack[top++] = link;
		struct name_node **sl = &victim->child[1];
		while ((*sl)->child[0] != NULL) {
			CS_ASSERT(top < NAMES_HEIGHT_MAX); /* N2 */
			stack[top++] = sl;
			sl = &(*sl)->child[0];
		}
		struct name_node *succ = *sl;
		*sl = succ->child[1];
		succ->child[0] = victim->child[0];
		succ->child[1] = victim->child[1];
		succ->height = victim->height;
		*link = succ;
		/* The slot below the victim's was the victim's own right-child field. */
		if (top > vi + 1)
			stack[vi + 1] = &succ->child[1];
	}
	while (top > 0) {
		link = stack[--top];
		*link = rebalance(*link);
	}
	t->count--;
	t->bytes -= node_size(victim->len);
	t->sizes -= victim->v.size;
	free(victim);
	return 0;
}

int names_repoint(struct names *t, const uint8_t *name, size_t len, uint32_t seg, uint32_t off)
{
	struct name_node *n = t->root;

	while (n != NULL) { /* bounded by the height (N2) */
		int c = cmp(name, len, n);
		if (c == 0) {
			n->v.seg = seg;
			n->v.off = off;
			return 0;
		}
		n = n->child[c > 0];
	}
	return CS_ENOTFOUND;
}

int names_get(const struct names *t, const uint8_t *name, size_t len, struct name_val *out)
{
	const struct name_node *n = t->root;

	while (n != NULL) {
		int c = cmp(name, len, n);
		if (c == 0) {
			if (out != NULL)
				*out = n->v;
			return 0;
		}
		n = n->child[c > 0];
	}
	return CS_ENOTFOUND;
}

int names_next(const struct names *t, const uint8_t *after, size_t after_len,
               struct name_entry *out, int max)
{
	const struct name_node *stack[NAMES_HEIGHT_MAX];
	const struct name_node *n = t->root;
	int top = 0, got = 0;

	/* The stack holds the ancestors greater than `after` on the search path: exactly the
	 * nodes an in-order walk resuming after `after` still has to visit, deepest on top. */
	while (n != NULL) {
		if (after == NULL || cmp(after, after_len, n) < 0) {
			CS_ASSERT(top < NAMES_HEIGHT_MAX); /* N2 */
			stack[top++] = n;
			n = n->child[0];
		} else {
			n = n->child[1];
		}
	}
	while (top > 0 && got < max) {
		n = stack[--top];
		struct name_entry *e = &out[got++];
		memcpy(e->name, n->name, (size_t)n->len + 1);
		e->len = n->len;
		e->v = n->v;
		for (const struct name_node *m = n->child[1]; m != NULL; m = m->child[0]) {
			CS_ASSERT(top < NAMES_HEIGHT_MAX); /* N2 */
			stack[top++] = m;
		}
	}
	return got;
}

uint64_t names_count(const struct names *t)
{
	return t->count;
}

uint64_t names_bytes(const struct names *t)
{
	return t->bytes;
}

uint64_t names_sizes(const struct names *t)
{
	return t->sizes;
}

/* Checks the subtree at n, whose names must lie strictly between lo and hi (NULL: no
 * bound), and sets *h to its height. The recursion depth is capped at NAMES_HEIGHT_MAX, so
 * a broken tree fails the check rather than the stack. */
static int check_node(const struct name_node *n, const struct name_node *lo,
                      const struct name_node *hi, int depth, int *h, uint64_t *count,
                      uint64_t *bytes, uint64_t *sizes)
{
	int hl, hr;

	if (n == NULL) {
		*h = 0;
		return 0;
	}
	if (depth >= NAMES_HEIGHT_MAX || n->len == 0 || n->len > CS_NAME_MAX ||
	    n->name[n->len] != '\0')
		return -1;
	if ((lo != NULL && cmp(n->name, n->len, lo) <= 0) ||
	    (hi != NULL && cmp(n->name, n->len, hi) >= 0)) /* N1 */
		return -1;
	if (check_node(n->child[0], lo, n, depth + 1, &hl, count, bytes, sizes) != 0 ||
	    check_node(n->child[1], n, hi, depth + 1, &hr, count, bytes, sizes) != 0)
		return -1;
	if (hl - hr > 1 || hr - hl > 1 || n->height != 1 + (hl > hr ? hl : hr)) /* N2 */
		return -1;
	*h = n->height;
	(*count)++;
	*bytes += node_size(n->len);
	*sizes += n->v.size;
	return 0;
}

int names_check_tree(const struct names *t)
{
	uint64_t count = 0, bytes = 0, sizes = 0;
	int h;

	if (check_node(t->root, NULL, NULL, 0, &h, &count, &bytes, &sizes) != 0)
		return -1;
	return count == t->count && bytes == t->bytes && sizes == t->sizes ? 0 : -1; /* N3 */
}
