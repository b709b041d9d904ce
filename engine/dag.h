/*
 * dag.h - walking the DAG under a root through dag-pb links (internal).
 *
 * Pins (a recursive pin checks its whole DAG), GC (marking from names and pins) and the
 * cover map of recursive pins all walk DAGs. The walk keeps an explicit stack (no
 * recursion: the data decides the depth) and asks the caller, for every block it reaches,
 * whether it has been there already, so a caller's set decides what is seen once: a pin's
 * own visited set, or GC's mark set shared across roots.
 */
#ifndef CS_DAG_H
#define CS_DAG_H

#include <stdint.h>

#include "cidstore.h"
#include "cs_limits.h"

/* Called once per link target (and the root) the walk reaches, before it looks the block
 * up. Returns 1 to go on into the block (first visit), 0 to skip it (seen before), or a
 * negative code that stops the walk and is returned. cid and key are borrowed. */
typedef int (*dag_visit_fn)(void *ctx, const uint8_t key[CS_KEY_MAX], const cs_cid *cid);

#define DAG_MISSING_OK 0x1 /* skip absent blocks (GC) instead of failing (pins) */
#define DAG_LENIENT                                                                                \
	0x2 /* a dag-pb block whose verified bytes do not decode is a leaf                         \
	     * (GC: it stays, and so does nothing it cannot name) instead of                       \
	     * CS_ECORRUPT (pins) */

/* Walks the DAG under root: every block visit() admits is looked up; a dag-pb block is read
 * and its links pushed; a block of any other codec is a leaf (its bytes are not read). Sets
 * *present (may be NULL) to the number of admitted blocks found in the store. Errors:
 *  CS_ENOTFOUND  an admitted block is absent (without DAG_MISSING_OK); the message names
 *                its CID. A CID of a hash the store cannot hold counts as absent.
 *  CS_ECORRUPT   a dag-pb block does not decode (without DAG_LENIENT), or fails its
 *                record checksum; the message names it
 *  -ENOMEM, visit()'s negative return, and the read errors of cs_block_get. */
int dag_walk(cs_store *s, const cs_cid *root, unsigned flags, dag_visit_fn visit, void *ctx,
             uint64_t *present);

#endif
