/*
 * names.h - the in-memory name table: name -> root CID, file size, time set (internal).
 *
 * The table is what replaying the log's REC_NAME_SET and REC_NAME_DEL records leaves behind:
 * the store rebuilds it at open and changes it after each name record it appends. It is an
 * AVL tree keyed by the name's bytes in byte order (memcmp order, a prefix first), each node
 * one allocation owning its name. Nothing here is thread-safe: the store serializes writers
 * and guards readers with its lock.
 */
#ifndef CS_NAMES_H
#define CS_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "cidstore.h"

/* The most names a store holds; a cs_name_set() of a new name beyond it gets CS_ELIMIT.
 * At about 100 bytes of table per name plus the name, 2^24 names bound the table to a few
 * GiB; the log bounds it anyway, but replay should not be the place that finds out. */
#define CS_NAMES_MAX (1u << 24)

/* Height bound of an AVL tree of CS_NAMES_MAX nodes: below 1.4405 * log2(n + 2), i.e. 35
 * for 2^24; the explicit walk stacks are sized with room to spare. */
#define NAMES_HEIGHT_MAX 48

struct names;
struct name_node;

/* What a name is set to. */
struct name_val {
	cs_cid root;
	uint64_t size;
	int64_t time_ns;
	uint32_t seg, off; /* where its REC_NAME_SET lies in the log (compaction copies it) */
};

/* One entry copied out of the table by names_next(). */
struct name_entry {
	char name[CS_NAME_MAX + 1]; /* NUL-terminated */
	uint16_t len;
	struct name_val v;
};

/* Creates an empty table; *out is owned by the caller and freed with names_destroy().
 * Errors: -ENOMEM. */
int names_create(struct names **out);

/* Frees the table and every node in it. NULL is ignored. */
void names_destroy(struct names *t);

/* Checks that name (len bytes, borrowed) is a valid name: 1..CS_NAME_MAX bytes of UTF-8 in
 * shortest form, no surrogate, nothing above U+10FFFF, and no control character (U+0000 ..
 * U+001F, U+007F .. U+009F: NUL, tab, newline, escape, the C1 controls). Returns 0, or
 * CS_EINVAL with a sentence in why (cap bytes) saying which rule failed and at which byte
 * (counted from 0), e.g. "name has a newline at byte 5". Does not set cs_errmsg(). */
int name_check(const uint8_t *name, size_t len, char *why, size_t cap);

/* Allocates a node for name (len bytes, borrowed; must have passed name_check), owned by the
 * caller until names_put() takes it or names_node_free() frees it. Lets a writer allocate
 * before it appends to the log, so that the table update after the append cannot fail.
 * Errors: -ENOMEM. */
int names_node_new(const uint8_t *name, size_t len, struct name_node **out);

/* Frees a node names_put() did not take. NULL is ignored. */
void names_node_free(struct name_node *n);

/* Sets node's name to *v. When the name is absent, the table takes node and returns 0; when
 * present, the entry is updated in place, node is freed and 1 is returned. Never fails: the
 * caller checks CS_NAMES_MAX first. */
int names_put(struct names *t, struct name_node *node, const struct name_val *v);

/* names_node_new() and names_put() in one, for replay. Returns 0 (added) or 1 (replaced).
 * Errors: CS_ELIMIT (a new name while CS_NAMES_MAX are held; no message), -ENOMEM. */
int names_set(struct names *t, const uint8_t *name, size_t len, const struct name_val *v);

/* Moves name's record position to (seg, off), its value unchanged: compaction copied the
 * record. Never allocates. Returns 0 or CS_ENOTFOUND (no message). */
int names_repoint(struct names *t, const uint8_t *name, size_t len, uint32_t seg, uint32_t off);

/* Removes name. Returns 0 or CS_ENOTFOUND (no message). */
int names_del(struct names *t, const uint8_t *name, size_t len);

/* Looks name up and copies its value into *out (may be NULL). Returns 0 or CS_ENOTFOUND (no
 * message). */
int names_get(const struct names *t, const uint8_t *name, size_t len, struct name_val *out);

/* Copies up to max entries whose names sort strictly after `after` (after_len bytes;
 * NULL for the first), in byte order, into out (borrowed, max entries). Returns the number
 * copied: fewer than max only when the table has no more. */
int names_next(const struct names *t, const uint8_t *after, size_t after_len,
	       struct name_entry *out, int max);

/* Names in the table. */
uint64_t names_count(const struct names *t);

/* Bytes of memory the table's nodes take (allocator overhead excluded). */
uint64_t names_bytes(const struct names *t);

/* The sum of the sizes the names are set to (modulo 2^64), kept as they are set, replaced
 * and deleted, at replay too: cs_stat's logical_bytes. */
uint64_t names_sizes(const struct names *t);

/* Slow tier: checks order, AVL balance, heights and the count over the whole tree.
 * Returns 0 or -1. For tests and CS_SLOW_CHECKS builds. */
int names_check_tree(const struct names *t);

#endif
