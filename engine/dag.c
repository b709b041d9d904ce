/*
 * dag.c - the DAG walk behind pins and GC.
 *
 * Invariants:
 *   D1. Every block is looked up (and, if dag-pb, read) at most once per visit() admission,
 *       so a walk over a caller's set that admits each key once reads each node once, and
 *       ends: there are finitely many keys, and each pop either is refused by visit() or
 *       consumes one admission.
 *   D2. The stack holds CIDs still to visit; it grows on the heap as links are pushed, so a
 *       DAG of any shape is walked without recursion. Its size is bounded by the links of
 *       the nodes admitted so far.
 */
#include "dag.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "btree.h"
#include "cid.h"
#include "dagpb.h"
#include "err.h"
#include "store.h"

struct walk {
	cs_cid *stack; /* owned */
	size_t n, cap;
	uint8_t *buf; /* owned; the dag-pb node being decoded, grown on demand */
	size_t buf_cap;
};

static int push(struct walk *w, const uint8_t *cid, size_t len)
{
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 64;
		cs_cid *p = realloc(w->stack, cap * sizeof(*p));
		if (p == NULL)
			return cs_fail(-ENOMEM, "out of memory for a DAG walk's stack");
		w->stack = p;
		w->cap = cap;
	}
	w->stack[w->n].len = (uint8_t)len;
	memcpy(w->stack[w->n++].bytes, cid, len);
	return 0;
}

static int missing(const cs_cid *cid)
{
	char text[CS_CID_TEXT_MAX];
	if (cs_cid_format(cid, text, sizeof(text)) < 0)
		strcpy(text, "(unprintable CID)");
	return cs_fail(CS_ENOTFOUND, "block %s of the DAG is not in the store", text);
}

/* Reads the dag-pb block at v and pushes its links. */
static int expand(cs_store *s, struct walk *w, const uint8_t *key, const struct idx_val *v,
                  const cs_cid *cid, unsigned flags)
{
	struct pb_node node;
	struct pb_link_iter it;
	struct pb_link l;
	char text[CS_CID_TEXT_MAX];
	int rc;

	if (v->len > w->buf_cap) {
		uint8_t *p = realloc(w->buf, v->len);
		if (p == NULL)
			return cs_fail(-ENOMEM, "out of memory for a DAG walk's node buffer");
		w->buf = p;
		w->buf_cap = v->len;
	}
	if ((rc = store_read_block(s, key, v, w->buf)) != 0)
		return rc;
	if (pb_node_decode(w->buf, v->len, &node) != 0) {
		if (flags & DAG_LENIENT)
			return 0;
		if (cs_cid_format(cid, text, sizeof(text)) < 0)
			strcpy(text, "(unprintable CID)");
		return cs_fail(CS_ECORRUPT, "dag-pb block %s does not decode", text);
	}
	pb_links_begin(&node, &it);
	while (pb_links_next(&it, &l)) {
		/* pb_node_decode() checked every Hash is a valid CID of at most CS_CID_MAX. */
		if ((rc = push(w, l.hash, l.hash_len)) != 0)
			return rc;
	}
	return 0;
}

int dag_walk(cs_store *s, const cs_cid *root, unsigned flags, dag_visit_fn visit, void *ctx,
             uint64_t *present)
{
	struct walk w = {0};
	uint64_t found = 0;
	int rc = root->len <= CS_CID_MAX
	                 ? push(&w, root->bytes, root->len)
	                 : cs_fail(CS_EINVAL, "cs_cid length %u exceeds CS_CID_MAX", root->len);

	while (rc == 0 && w.n > 0) { /* D1 */
		cs_cid cid = w.stack[--w.n];
		uint8_t key[CS_KEY_MAX];
		struct idx_val v;
		uint64_t codec;

		rc = cid_key_codec(&cid, key, &codec);
		if (rc == CS_ENOTFOUND) { /* a hash the store never holds */
			rc = (flags & DAG_MISSING_OK) ? 0 : missing(&cid);
			continue;
		}
		if (rc != 0)
			break;
		rc = visit(ctx, key, &cid);
		if (rc <= 0)
			continue; /* 0: seen before; < 0 ends the loop */
		rc = 0;
		/* A leaf that may be missing and is not counted needs no lookup: the walk
		 * neither reads it nor reports it (the marker's case, a leaf per link). */
		if (codec != CS_CODEC_DAG_PB && (flags & DAG_MISSING_OK) && present == NULL)
			continue;
		if (store_lookup(s, key, &v) != 0) {
			rc = (flags & DAG_MISSING_OK) ? 0 : missing(&cid);
			continue;
		}
		found++;
		if (codec == CS_CODEC_DAG_PB)
			rc = expand(s, &w, key, &v, &cid, flags);
		if (rc == CS_ENOTFOUND) /* deleted (and its segment compacted) since the lookup */
			rc = (flags & DAG_MISSING_OK) ? 0 : missing(&cid);
	}
	free(w.stack);
	free(w.buf);
	if (present != NULL)
		*present = found;
	return rc;
}
