/*
 * unixfs.c - UnixFS DAGs: the streaming balanced file builder, the range reader, directory
 * and symlink nodes.
 *
 * Builder. Bytes go through the chunker; each chunk becomes a leaf (a raw block, or a dag-pb
 * node holding UnixFS File{Data = chunk, filesize}). Level 0 collects leaf links, level k the
 * links of nodes over level k - 1. A level that reaches 174 links is emitted at once as a
 * UnixFS File node (no Data, filesize = sum of the children's sizes, one blocksize per
 * child) whose link goes up one level. That is ipfs-unixfs-importer's balanced layout
 * (dag-builder/file.js + layout/balanced.js: batch the leaves 174 at a time, reduce each batch
 * to a node, repeat on the nodes until one remains) and go-unixfs's balanced builder, done
 * as the bytes arrive rather than over the whole list. At finish the levels collapse bottom
 * up: a level with links is emitted as a node, even with a single link, unless it is the top
 * level and holds exactly one link, which is then the root. So one chunk gives its leaf as
 * the root, 174 chunks one node over 174 leaves, 175 chunks a root over {node of 174, node of
 * 1}, and every leaf sits at the same depth.
 *
 *   link fields, as both reference builders write them: Hash = the child's CID (CIDv0 for
 *   dag-pb children in the v0 profile, CIDv1 otherwise; raw leaves are always CIDv1),
 *   Name = "" (present, empty), Tsize = the child block's size plus its children's Tsizes.
 *
 * Reader. A file's bytes are, per node, its own UnixFS Data then its children's bytes in
 * link order, child i holding blocksizes[i] bytes; a raw block is all data. The reader keeps
 * one frame per dag-pb level on an explicit stack, skips children wholly outside the range
 * by their blocksizes without reading them, and descends only into those that overlap. With
 * no output buffer it checks instead of copying: the same walk, raw leaves only sized.
 *
 * Directories. A directory is one dag-pb node: Data = UnixFS {Type = Directory} (the bytes
 * 08 01), one link per entry {Hash = entry root, Name = entry name, Tsize = entry's
 * cumulative size}, sorted by name bytes (a shorter name before a longer one it prefixes).
 * That is go-merkledag's sort.Stable over link names and @ipld/dag-pb's prepare(); entries
 * may be added in any order. Its own Tsize is its bytes plus its links' Tsizes, as for file
 * nodes. Kubo and the importer estimate a directory's size as the sum over links of name
 * bytes plus CID bytes and shard it (HAMT) once the estimate passes 262144: `>` in the
 * importer and newer Kubo releases (older ones used `>=`, so they shard a directory whose
 * estimate is exactly 262144; this builder, like the importer, keeps that one flat).
 *
 * HAMT shards (UnixFS HAMTShard; boxo's hamt and the importer's dir-sharded.js with
 * hamt-sharding build the same). An entry's slot at level L is byte L of h1, the first 64-bit
 * half of murmur3-x64-128 (seed 0) of its name, taken big-endian: (h1 >> (56 - 8L)) & 0xff
 * (Go reads Sum64's big-endian bytes from the front; the importer reverses them and reads
 * from the back, which is the same). A
 * shard node holds, per occupied slot in slot order, either the one entry there (link Name =
 * the slot as two uppercase hex digits followed by the entry's name) or, when two or more
 * entries share it, a child shard of those at level L + 1 (Name = the two digits alone). Its
 * Data = UnixFS {Type = HAMTShard, Data = the bitmap of occupied slots (bit i = slot i) as a
 * big-endian number of the fewest bytes, hashType = 0x22 (murmur3-x64-64), fanout = 256}.
 * The shape depends only on the set of names, not on the order they came in. Tsizes as for
 * flat nodes. Two names whose h1 agree in all 64 bits would need the importer's rehash
 * (name plus a depth byte); that is refused (CS_ELIMIT), at odds of about n^2 / 2^65.
 * A symlink is one dag-pb node without links: UnixFS {Type = Symlink, Data = target}.
 *
 * Invariants:
 *  1. Every level holds fewer than UFS_LINKS_MAX links between calls (a full level is
 *     emitted before the call returns).
 *  2. The builder keeps at most one chunk of bytes (chunker max) whatever the input size.
 *     With a leaf sink, the sink holds the leaves in flight (a fixed ring, engine/addpipe.c);
 *     they are linked in the order they were submitted, so the tree is the same.
 *  3. Every node the reader descends into satisfies: n_blocksizes == n_links, data_len + sum
 *     (blocksizes) == filesize when present, and that sum equals the blocksize its parent
 *     gave it (or the length of the raw block). Hence the bytes it copies are exactly
 *     [offset, offset + got), each once.
 *  4. The reader's stack holds at most UFS_READ_DEPTH_MAX frames; every loop iteration
 *     consumes one link or pops one frame. It reads a child only if the child holds at least
 *     one byte of the range; children at one depth hold disjoint bytes, so a read of n bytes
 *     reads at most n blocks per level, whatever the DAG claims.
 *  5. A directory is written flat iff its estimate (sum of name + CID bytes) is at most
 *     UFS_DIR_SHARD_BYTES, so a flat node fits a block (static assert in unixfs.h); else as a
 *     HAMT, whose nodes hold at most UFS_HAMT_FANOUT links of at most UFS_NAME_MAX + 2 name
 *     bytes each, and sit at most UFS_HAMT_LEVELS deep (the builder's recursion bound).
 *  6. A reader handle (ufs_reader_new) keeps each stack frame's node between reads: a frame
 *     is reused, not fetched again, only for the same CID, and only once it was fetched and
 *     passed node_open, so a later read sees exactly the node a fresh walk would (a CID
 *     names its bytes). Leaves are never kept: each read gets them from the store afresh.
 */
#include "unixfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <murmurhash.h>

#include "cid.h"
#include "dagpb.h"
#include "err.h"

/* ---- Builder ------------------------------------------------------------------------- */

/* A link waiting in a level: the child's CID, its Tsize and its bytes of file content. */
struct ufs_entry {
	cs_cid cid;
	uint64_t tsize;
	uint64_t size;
};

struct ufs_level {
	unsigned n;
	struct ufs_entry e[UFS_LINKS_MAX];
};

struct ufs_builder {
	struct ufs_params p;
	ufs_emit_fn emit;
	void *ctx;
	struct chunker ck;
	uint8_t *buf; /* the chunk being gathered: ck.max bytes */
	size_t fill;
	uint8_t *enc; /* encoding of a dag-pb leaf or node */
	size_t enc_cap;
	const struct ufs_leaf_sink *sink; /* NULL: leaves are emitted at once */
	void *sink_ctx;
	uint8_t *lenc; /* with a sink and dag-pb leaves: a leaf's encoding, apart from enc, which
	                * a node linked during the leaf's submit may use */
	size_t lenc_cap;
	struct ufs_level lv[UFS_BUILD_LEVELS_MAX + 1]; /* lv[0]: leaves */
	uint64_t leaves;
	uint64_t size;
	unsigned height;
	uint64_t root_tsize; /* of the finished root */
	int err;             /* sticky failure */
	bool finished;
};

int ufs_params_check(const struct ufs_params *p)
{
	struct chunker ck;
	int rc;

	if (p->cid_version != 0 && p->cid_version != 1)
		return cs_fail(CS_EINVAL, "CID version %d: only 0 and 1 exist", p->cid_version);
	if (cid_hash_len(p->hash) == 0)
		return cs_fail(CS_EUNSUPPORTED, "hash function 0x%llx is not supported",
		               (unsigned long long)p->hash);
	if (p->cid_version == 0 && p->hash != CS_HASH_SHA2_256)
		return cs_fail(CS_EINVAL, "CIDv0 only supports sha2-256 (Kubo refuses "
		                          "--cid-version=0 with another --hash too)");
	if ((rc = chunker_init(&ck, p->chunker, p->chunk_size)) < 0)
		return rc;
	return 0;
}

int ufs_builder_new(const struct ufs_params *p, ufs_emit_fn emit, void *ctx,
                    struct ufs_builder **out)
{
	int rc;

	if ((rc = ufs_params_check(p)) < 0)
		return rc;
	struct ufs_builder *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return cs_fail(-ENOMEM, "out of memory for a UnixFS builder");
	b->p = *p;
	b->emit = emit;
	b->ctx = ctx;
	CS_ASSERT(chunker_init(&b->ck, p->chunker, p->chunk_size) == 0);
	/* A dag-pb leaf is its chunk plus at most 2 + 11 + 11 + 1 + 3 bytes of framing. */
	b->enc_cap = UFS_NODE_MAX;
	if (!p->raw_leaves && b->ck.max + 32 > b->enc_cap)
		b->enc_cap = b->ck.max + 32;
	b->buf = malloc(b->ck.max);
	b->enc = malloc(b->enc_cap);
	if (b->buf == NULL || b->enc == NULL) {
		ufs_builder_free(b);
		return cs_fail(-ENOMEM, "out of memory for a UnixFS builder's buffers");
	}
	*out = b;
	return 0;
}

void ufs_builder_free(struct ufs_builder *b)
{
	if (b == NULL)
		return;
	free(b->buf);
	free(b->enc);
	free(b->lenc);
	free(b);
}

int ufs_builder_set_sink(struct ufs_builder *b, const struct ufs_leaf_sink *sink, void *ctx)
{
	if (!b->p.raw_leaves && b->lenc == NULL) {
		b->lenc_cap = b->ck.max + 32; /* as enc_cap for dag-pb leaves */
		if ((b->lenc = malloc(b->lenc_cap)) == NULL)
			return cs_fail(-ENOMEM, "out of memory for a UnixFS builder's leaf buffer");
	}
	b->sink = sink;
	b->sink_ctx = ctx;
	return 0;
}

size_t ufs_builder_leaf_max(const struct ufs_builder *b)
{
	return b->p.raw_leaves ? b->ck.max : b->ck.max + 32;
}

uint64_t ufs_builder_leaves(const struct ufs_builder *b)
{
	return b->leaves;
}

unsigned ufs_builder_height(const struct ufs_builder *b)
{
	return b->height;
}

void ufs_builder_reset(struct ufs_builder *b)
{
	CS_ASSERT(chunker_init(&b->ck, b->p.chunker, b->p.chunk_size) == 0);
	b->fill = 0;
	for (unsigned L = 0; L <= UFS_BUILD_LEVELS_MAX; L++)
		b->lv[L].n = 0;
	b->leaves = 0;
	b->size = 0;
	b->height = 0;
	b->root_tsize = 0;
	b->err = 0;
	b->finished = false;
}

uint64_t ufs_builder_tsize(const struct ufs_builder *b)
{
	return b->root_tsize;
}

/* Emits a block with p's hash and sets *cid to the CID a link (or the root) names it by:
 * CIDv0 for dag-pb blocks in the v0 profile, as both reference builders link them. */
/* Turns the CIDv1 of a block into the CID a link (or the root) names it by: CIDv0 for dag-pb
 * blocks in the v0 profile, as both reference builders link them. */
static int link_cid(const struct ufs_params *p, uint64_t codec, cs_cid *cid)
{
	int rc;

	if (codec == CS_CODEC_DAG_PB && p->cid_version == 0) {
		cs_cid v1 = *cid; /* cid_make must not read the digest from its output */
		cs_cid_info info;

		if ((rc = cs_cid_inspect(&v1, &info)) < 0)
			return rc;
		CS_ASSERT(info.codec == codec && info.hash == CS_HASH_SHA2_256);
		if ((rc = cid_make(0, codec, info.hash, info.digest, info.digest_len, cid)) < 0)
			return rc;
	}
	return 0;
}

/* Emits a block with p's hash and sets *cid to the CID a link (or the root) names it by. */
static int emit_block(const struct ufs_params *p, ufs_emit_fn emit, void *ctx, const uint8_t *data,
                      size_t len, uint64_t codec, cs_cid *cid)
{
	int rc = emit(ctx, data, len, codec, p->hash, cid);

	if (rc < 0)
		return rc;
	return link_cid(p, codec, cid);
}

static int put_block(struct ufs_builder *b, const uint8_t *data, size_t len, uint64_t codec,
                     cs_cid *cid)
{
	return emit_block(&b->p, b->emit, b->ctx, data, len, codec, cid);
}

/* Emits level L as one node and clears it; sets *up to the node's entry. */
static int emit_node(struct ufs_builder *b, unsigned L, struct ufs_entry *up)
{
	struct ufs_level *lv = &b->lv[L];
	struct pb_link links[UFS_LINKS_MAX];
	uint64_t bs[UFS_LINKS_MAX];
	uint64_t tsum = 0, size = 0;
	size_t len;
	int rc;

	CS_ASSERT(lv->n >= 1 && lv->n <= UFS_LINKS_MAX);
	for (unsigned i = 0; i < lv->n; i++) {
		const struct ufs_entry *e = &lv->e[i];

		links[i] = (struct pb_link){.hash = e->cid.bytes,
		                            .hash_len = e->cid.len,
		                            .name = (const uint8_t *)"",
		                            .has_name = true,
		                            .tsize = e->tsize,
		                            .has_tsize = true};
		bs[i] = e->size;
		tsum += e->tsize;
		size += e->size;
	}
	struct ufs_file f = {.filesize = size, .blocksizes = bs, .n_blocksizes = lv->n};
	if ((rc = pb_file_node_encode(b->enc, b->enc_cap, links, lv->n, &f, &len)) < 0)
		return rc; /* cannot happen: UFS_NODE_MAX bounds every node */
	if ((rc = put_block(b, b->enc, len, CS_CODEC_DAG_PB, &up->cid)) < 0)
		return rc;
	up->tsize = len + tsum;
	up->size = size;
	lv->n = 0;
	return 0;
}

/* Appends e to level L, emitting every level that fills as a result (invariant 1). */
static int push_entry(struct ufs_builder *b, unsigned L, struct ufs_entry e)
{
	int rc;

	for (;;) {
		if (L > UFS_BUILD_LEVELS_MAX)
			return cs_fail(CS_ELIMIT, "UnixFS tree deeper than %d levels",
			               UFS_BUILD_LEVELS_MAX);
		struct ufs_level *lv = &b->lv[L];
		lv->e[lv->n++] = e;
		if (lv->n < UFS_LINKS_MAX)
			return 0;
		if ((rc = emit_node(b, L, &e)) < 0)
			return rc;
		L++;
	}
}

/* Hands a leaf to the sink; ufs_builder_link() puts it into the tree later. */
static int submit_leaf(struct ufs_builder *b, const uint8_t *chunk, size_t n)
{
	int rc;

	if (b->p.raw_leaves) {
		rc = b->sink->submit(b->sink_ctx, chunk, n, CS_CODEC_RAW, n);
	} else {
		struct ufs_file f = {.data = chunk, .data_len = n, .filesize = n};
		size_t len;

		if ((rc = pb_file_node_encode(b->lenc, b->lenc_cap, NULL, 0, &f, &len)) < 0)
			return rc;
		rc = b->sink->submit(b->sink_ctx, b->lenc, len, CS_CODEC_DAG_PB, n);
	}
	if (rc < 0)
		return rc;
	b->leaves++;
	b->size += n;
	return 0;
}

int ufs_builder_link(struct ufs_builder *b, const cs_cid *cid, size_t len, uint64_t size)
{
	cs_cid_info info;
	struct ufs_entry e = {.cid = *cid, .tsize = len, .size = size};
	int rc;

	if ((rc = cs_cid_inspect(cid, &info)) < 0 || (rc = link_cid(&b->p, info.codec, &e.cid)) < 0)
		return rc;
	return push_entry(b, 0, e);
}

static int add_leaf(struct ufs_builder *b, const uint8_t *chunk, size_t n)
{
	struct ufs_entry e = {.size = n};
	int rc;

	if (b->sink != NULL)
		return submit_leaf(b, chunk, n);
	if (b->p.raw_leaves) {
		if ((rc = put_block(b, chunk, n, CS_CODEC_RAW, &e.cid)) < 0)
			return rc;
		e.tsize = n;
	} else {
		struct ufs_file f = {.data = chunk, .data_len = n, .filesize = n};
		size_t len;

		if ((rc = pb_file_node_encode(b->enc, b->enc_cap, NULL, 0, &f, &len)) < 0)
			return rc;
		if ((rc = put_block(b, b->enc, len, CS_CODEC_DAG_PB, &e.cid)) < 0)
			return rc;
		e.tsize = len;
	}
	b->leaves++;
	b->size += n;
	return push_entry(b, 0, e);
}

/* Cuts and emits chunks from the gathered bytes while the chunker finds boundaries. */
static int drain(struct ufs_builder *b, bool final)
{
	int rc;

	while (b->fill > 0) {
		size_t cut = chunker_next(&b->ck, b->buf, b->fill, final);
		if (cut == 0)
			return 0;
		if ((rc = add_leaf(b, b->buf, cut)) < 0)
			return rc;
		memmove(b->buf, b->buf + cut, b->fill - cut);
		b->fill -= cut;
	}
	return 0;
}

static int write_(struct ufs_builder *b, const uint8_t *p, size_t len)
{
	int rc;

	while (len > 0) {
		if (b->fill == 0) {
			/* Nothing gathered: cut straight from the caller's bytes, copying only a
			 * tail shorter than a chunk. */
			size_t cut = chunker_next(&b->ck, p, len, false);
			if (cut > 0) {
				if ((rc = add_leaf(b, p, cut)) < 0)
					return rc;
				p += cut;
				len -= cut;
				continue;
			}
			CS_ASSERT(len < b->ck.max); /* the chunker cuts by max */
			memcpy(b->buf, p, len);
			b->fill = len;
			return 0;
		}
		size_t take = b->ck.max - b->fill;
		if (take > len)
			take = len;
		memcpy(b->buf + b->fill, p, take);
		b->fill += take;
		p += take;
		len -= take;
		if ((rc = drain(b, false)) < 0)
			return rc;
		CS_ASSERT(b->fill < b->ck.max); /* invariant 2 */
	}
	return 0;
}

int ufs_builder_write(struct ufs_builder *b, const void *data, size_t len)
{
	if (b->err < 0)
		return b->err;
	if (b->finished)
		return cs_fail(CS_EINVAL, "write after finish");
	if (len > 0 && data == NULL)
		return cs_fail(CS_EINVAL, "data is NULL");
	int rc = write_(b, data, len);
	if (rc < 0)
		b->err = rc;
	return rc;
}

static int finish_(struct ufs_builder *b, cs_cid *root)
{
	int rc;

	if ((rc = drain(b, true)) < 0)
		return rc;
	CS_ASSERT(b->fill == 0);
	if (b->leaves == 0 && (rc = add_leaf(b, b->buf, 0)) < 0)
		return rc; /* the empty file is one empty leaf */
	if (b->sink != NULL && (rc = b->sink->flush(b->sink_ctx)) < 0)
		return rc; /* every leaf linked before the levels collapse */
	for (unsigned L = 0; L <= UFS_BUILD_LEVELS_MAX; L++) {
		bool above = false;
		for (unsigned M = L + 1; M <= UFS_BUILD_LEVELS_MAX; M++)
			above = above || b->lv[M].n > 0;
		if (!above && b->lv[L].n == 1) {
			*root = b->lv[L].e[0].cid;
			b->root_tsize = b->lv[L].e[0].tsize;
			b->height = L;
			return 0;
		}
		if (b->lv[L].n > 0) {
			struct ufs_entry up;
			if ((rc = emit_node(b, L, &up)) < 0)
				return rc;
			if ((rc = push_entry(b, L + 1, up)) < 0)
				return rc;
		}
	}
	/* Level UFS_BUILD_LEVELS_MAX never fills: push_entry refuses to go past it. */
	return cs_fail(CS_ELIMIT, "UnixFS tree deeper than %d levels", UFS_BUILD_LEVELS_MAX);
}

int ufs_builder_finish(struct ufs_builder *b, cs_cid *root, uint64_t *size)
{
	if (b->err < 0)
		return b->err;
	if (b->finished)
		return cs_fail(CS_EINVAL, "finish called twice");
	b->finished = true;
	int rc = finish_(b, root);
	if (rc < 0) {
		b->err = rc;
		return rc;
	}
	if (size != NULL)
		*size = b->size;
	return 0;
}

/* ---- Reader -------------------------------------------------------------------------- */

/* One dag-pb node on the reader's stack. */
struct frame {
	cs_cid cid;
	uint8_t *blk; /* the node's bytes; grown as needed and reused at this depth */
	size_t cap;
	size_t len;
	struct pb_node node;
	struct ufs_data u;
	struct pb_link_iter li;
	struct ufs_bs_iter bi;
	uint64_t cursor; /* file offset where the next child's bytes start */
	bool cached;     /* blk holds node cid, fetched, decoded and checked (invariant 6) */
};

struct ufs_reader {
	ufs_get_fn get;
	ufs_get_run_fn get_run; /* NULL: every leaf through get */
	void *ctx;
	struct ufs_leaf run[UFS_RUN_MAX]; /* whole raw leaves gathered, not yet read */
	int nrun;
	const cs_cid *root; /* &root_cid */
	cs_cid root_cid;
	uint64_t size;      /* of the file, from the root */
	bool raw;           /* the root is a raw block: its bytes are in leaf */
	uint64_t touched;   /* blocks read by the call under way */
	uint8_t *leaf; /* scratch for leaves read only in part */
	size_t leaf_cap;
	struct frame fr[UFS_READ_DEPTH_MAX];
	unsigned depth;
};

static const char *cid_str(const cs_cid *c, char *buf, size_t cap)
{
	if (cs_cid_format(c, buf, cap) < 0)
		snprintf(buf, cap, "(unprintable CID)");
	return buf;
}

/* Re-raises the current error detail with the block's CID in front. */
static int fail_at(int code, const cs_cid *c, const char *what)
{
	char detail[512], text[CS_CID_TEXT_MAX];

	snprintf(detail, sizeof(detail), "%s", cs_errmsg());
	return cs_fail(code, "block %s %s: %s", cid_str(c, text, sizeof(text)), what, detail);
}

/* The error for block c of the file, which the store does not hold. */
static int missing(const struct ufs_reader *r, const cs_cid *c)
{
	char text[CS_CID_TEXT_MAX], rtext[CS_CID_TEXT_MAX];

	if (c->len == r->root->len && memcmp(c->bytes, r->root->bytes, c->len) == 0)
		return cs_fail(CS_ENOTFOUND, "root block %s is not in the store",
		               cid_str(c, text, sizeof(text)));
	return cs_fail(CS_ENOTFOUND, "block %s of the file %s is missing from the store",
	               cid_str(c, text, sizeof(text)), cid_str(r->root, rtext, sizeof(rtext)));
}

/* The error for raw block c, which holds len bytes where its parent's blocksize says n. */
static int wrong_size(const cs_cid *c, size_t len, uint64_t n)
{
	char text[CS_CID_TEXT_MAX];

	return cs_fail(CS_ECORRUPT,
	               "raw block %s holds %zu bytes but its parent's blocksize says %llu",
	               cid_str(c, text, sizeof(text)), len, (unsigned long long)n);
}

/* Reads block c into *buf (capacity *cap, grown as needed) and sets *len. */
static int fetch(struct ufs_reader *r, const cs_cid *c, uint8_t **buf, size_t *cap, size_t *len)
{
	int rc;

	if (*buf == NULL) {
		/* Most nodes are small; leaves come in one grow to their exact size. */
		*buf = malloc(16384);
		if (*buf == NULL)
			return cs_fail(-ENOMEM, "out of memory reading a UnixFS DAG");
		*cap = 16384;
	}
	rc = r->get(r->ctx, c, *buf, *cap, len);
	if (rc == CS_EBUFSIZE) {
		uint8_t *nb = realloc(*buf, *len);
		if (nb == NULL)
			return cs_fail(-ENOMEM, "out of memory for a block of %zu bytes", *len);
		*buf = nb;
		*cap = *len;
		rc = r->get(r->ctx, c, *buf, *cap, len);
	}
	if (rc == CS_ENOTFOUND)
		return missing(r, c);
	if (rc == CS_ECORRUPT)
		return fail_at(rc, c, "is damaged");
	if (rc < 0)
		return rc;
	r->touched++;
	return 0;
}

/* Decodes a fetched dag-pb node as a UnixFS file node and sets *content to its bytes of
 * file (invariant 3, first half). A defect in the root means the caller named something
 * that is not a file (CS_EINVAL); below the root it is damage (CS_ECORRUPT). */
static int node_open(struct frame *f, bool is_root, uint64_t *content)
{
	char text[CS_CID_TEXT_MAX];
	int notfile = is_root ? CS_EINVAL : CS_ECORRUPT;
	int rc;

	if ((rc = pb_node_decode(f->blk, f->len, &f->node)) < 0)
		return fail_at(CS_ECORRUPT, &f->cid, "is not valid dag-pb");
	if (!f->node.has_data)
		return cs_fail(notfile, "block %s is a dag-pb node without Data, not a UnixFS file",
		               cid_str(&f->cid, text, sizeof(text)));
	if ((rc = ufs_decode(f->node.data, f->node.data_len, &f->u)) < 0)
		return fail_at(notfile, &f->cid, "is not a UnixFS node");
	if (f->u.type != UFS_FILE && f->u.type != UFS_RAW)
		return cs_fail(notfile, "block %s is a UnixFS %s, not a file",
		               cid_str(&f->cid, text, sizeof(text)),
		               f->u.type == UFS_DIRECTORY    ? "directory"
		               : f->u.type == UFS_HAMT_SHARD ? "sharded directory"
		               : f->u.type == UFS_SYMLINK    ? "symlink"
		                                             : "metadata node");
	if (f->u.n_blocksizes != f->node.n_links)
		return cs_fail(CS_ECORRUPT, "block %s: %zu blocksizes for %zu links",
		               cid_str(&f->cid, text, sizeof(text)), f->u.n_blocksizes,
		               f->node.n_links);
	if (f->u.blocksizes_sum > UINT64_MAX - f->u.data_len)
		return cs_fail(CS_ECORRUPT, "block %s: file size overflows 64 bits",
		               cid_str(&f->cid, text, sizeof(text)));
	uint64_t total = f->u.data_len + f->u.blocksizes_sum;
	if (f->u.has_filesize && f->u.filesize != total)
		return cs_fail(CS_ECORRUPT,
		               "block %s: filesize %llu disagrees with its Data (%zu bytes) plus "
		               "blocksizes (%llu)",
		               cid_str(&f->cid, text, sizeof(text)),
		               (unsigned long long)f->u.filesize, f->u.data_len,
		               (unsigned long long)f->u.blocksizes_sum);
	pb_links_begin(&f->node, &f->li);
	ufs_blocksizes_begin(&f->u, &f->bi);
	*content = total;
	return 0;
}

/* Copies the part of src (file bytes [lo, lo + n)) inside [off, hi) into out (file byte off
 * is out[0]); returns the bytes copied. With out NULL (a check) only counts them. */
static size_t copy_overlap(uint8_t *out, uint64_t off, uint64_t hi, const uint8_t *src, uint64_t lo,
                           size_t n)
{
	uint64_t a = lo > off ? lo : off;
	uint64_t b = lo + n < hi ? lo + n : hi;

	if (a >= b)
		return 0;
	if (out != NULL)
		memcpy(out + (a - off), src + (a - lo), (size_t)(b - a));
	return (size_t)(b - a);
}

static int codec_of(const cs_cid *c, uint64_t *codec)
{
	cs_cid_info info;
	int rc = cs_cid_inspect(c, &info);

	if (rc < 0)
		return rc;
	*codec = info.codec;
	return 0;
}

/* Gets the leaves gathered in r->run, in order, and counts their bytes as copied. */
static int run_flush(struct ufs_reader *r, size_t *copied)
{
	size_t len = 0;
	int done = 0, rc;

	if (r->nrun == 0)
		return 0;
	rc = r->get_run(r->ctx, r->run, r->nrun, &done, &len);
	CS_ASSERT(done >= 0 && done <= r->nrun && (rc != 0 || done == r->nrun));
	r->touched += (uint64_t)done;
	for (int i = 0; i < done; i++)
		*copied += r->run[i].len;
	r->nrun = 0;
	if (rc == 0)
		return 0;
	const struct ufs_leaf *l = &r->run[done];
	if (rc == CS_ENOTFOUND)
		return missing(r, &l->cid);
	if (rc == CS_EBUFSIZE)
		return wrong_size(&l->cid, len, l->len);
	if (rc == CS_ECORRUPT)
		return fail_at(rc, &l->cid, "is damaged");
	return rc;
}

/* Reads a raw leaf holding file bytes [lo, lo + n) and copies its part of the range. */
static int read_raw_leaf(struct ufs_reader *r, const cs_cid *c, uint64_t lo, uint64_t n, uint64_t off,
                         uint64_t hi, uint8_t *out, size_t *copied)
{
	size_t len;
	int rc;

	if (out == NULL) {
		/* A check: the index knows the leaf's length; its bytes are not read. */
		rc = r->get(r->ctx, c, NULL, 0, &len);
		if (rc == CS_ENOTFOUND) /* fetch() words the message */
			return fetch(r, c, &r->leaf, &r->leaf_cap, &len);
		if (rc < 0)
			return rc;
		r->touched++;
	} else if (lo >= off && lo + n <= hi) {
		/* The whole leaf is wanted: read it straight into the caller's buffer. */
		rc = r->get(r->ctx, c, out + (lo - off), (size_t)n, &len);
		if (rc == CS_EBUFSIZE)
			return wrong_size(c, len, n);
		if (rc == 0)
			r->touched++;
		else if (rc == CS_ENOTFOUND)
			return missing(r, c);
		else if (rc == CS_ECORRUPT)
			return fail_at(rc, c, "is damaged");
		else
			return rc;
	} else {
		if ((rc = fetch(r, c, &r->leaf, &r->leaf_cap, &len)) < 0)
			return rc;
	}
	if (len != n)
		return wrong_size(c, len, n);
	if (out == NULL || (lo >= off && lo + n <= hi))
		*copied += copy_overlap(NULL, off, hi, NULL, lo, len);
	else
		*copied += copy_overlap(out, off, hi, r->leaf, lo, len);
	return 0;
}

/* Fetches and opens the dag-pb node c at stack depth d, whose bytes start at file offset
 * lo, and copies the overlap of its own Data. *content receives its size. */
static int push_node(struct ufs_reader *r, unsigned d, const cs_cid *c, bool is_root, uint64_t lo,
                     uint64_t off, uint64_t hi, uint8_t *out, size_t *copied, uint64_t *content)
{
	if (d >= UFS_READ_DEPTH_MAX)
		return cs_fail(CS_ELIMIT, "UnixFS DAG under %s is deeper than %d levels",
		               cid_str(r->root, (char[CS_CID_TEXT_MAX]){0}, CS_CID_TEXT_MAX),
		               UFS_READ_DEPTH_MAX);
	struct frame *f = &r->fr[d];
	int rc;

	if (f->cached && f->cid.len == c->len && memcmp(f->cid.bytes, c->bytes, c->len) == 0) {
		/* Invariant 6: the node passed node_open before; start its links again. */
		pb_links_begin(&f->node, &f->li);
		ufs_blocksizes_begin(&f->u, &f->bi);
		*content = f->u.data_len + f->u.blocksizes_sum;
	} else {
		f->cached = false;
		f->cid = *c;
		if ((rc = fetch(r, c, &f->blk, &f->cap, &f->len)) < 0)
			return rc;
		if ((rc = node_open(f, is_root, content)) < 0)
			return rc;
		f->cached = true;
	}
	if (copied != NULL) /* NULL for the root, whose Data ufs_read copies itself */
		*copied += copy_overlap(out, off, hi, f->u.data, lo, f->u.data_len);
	f->cursor = lo + f->u.data_len;
	r->depth = d + 1;
	return 0;
}

void ufs_reader_free(struct ufs_reader *r)
{
	if (r == NULL)
		return;
	for (unsigned i = 0; i < UFS_READ_DEPTH_MAX; i++)
		free(r->fr[i].blk);
	free(r->leaf);
	free(r);
}

/* Reads the root: a raw block is the whole file (its bytes stay in r->leaf); a dag-pb node
 * is pushed as frame 0. Sets *size and *raw. */
static int open_root(struct ufs_reader *r, const cs_cid *root, uint64_t *size, bool *raw)
{
	char text[CS_CID_TEXT_MAX];
	uint64_t codec;
	size_t len;
	int rc;

	if ((rc = codec_of(root, &codec)) < 0)
		return rc;
	if (codec == CS_CODEC_RAW) {
		if ((rc = fetch(r, root, &r->leaf, &r->leaf_cap, &len)) < 0)
			return rc;
		*size = len;
		*raw = true;
		return 0;
	}
	if (codec != CS_CODEC_DAG_PB)
		return cs_fail(CS_EINVAL, "%s has codec 0x%llx; a file is raw or dag-pb",
		               cid_str(root, text, sizeof(text)), (unsigned long long)codec);
	*raw = false;
	return push_node(r, 0, root, true, 0, 0, 0, NULL, NULL, size);
}

int ufs_reader_new(ufs_get_fn get, ufs_get_run_fn get_run, void *ctx, const cs_cid *root,
                   struct ufs_reader **out, uint64_t *touched)
{
	struct ufs_reader *r = calloc(1, sizeof(*r));
	int rc;

	*out = NULL;
	if (touched != NULL)
		*touched = 0;
	if (r == NULL)
		return cs_fail(-ENOMEM, "out of memory for a UnixFS reader");
	r->get = get;
	r->get_run = get_run;
	r->ctx = ctx;
	r->root_cid = *root;
	r->root = &r->root_cid;
	rc = open_root(r, r->root, &r->size, &r->raw);
	if (touched != NULL)
		*touched = r->touched;
	if (rc < 0) {
		ufs_reader_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

uint64_t ufs_reader_size(const struct ufs_reader *r)
{
	return r->size;
}

int ufs_reader_read(struct ufs_reader *r, uint64_t offset, uint8_t *buf, size_t len, size_t *got,
                    uint64_t *touched)
{
	uint64_t size = r->size;
	size_t copied = 0;
	int rc = 0;

	*got = 0;
	r->touched = 0;
	r->nrun = 0;
	if (offset >= size || len == 0)
		goto out;
	uint64_t hi = offset + (len < size - offset ? len : size - offset);
	if (r->raw) {
		copied = copy_overlap(buf, offset, hi, r->leaf, 0, (size_t)size);
		goto out;
	}
	/* The root's frame, kept since ufs_reader_new (invariant 6), from its first link. */
	struct frame *root = &r->fr[0];
	CS_ASSERT(root->cached);
	pb_links_begin(&root->node, &root->li);
	ufs_blocksizes_begin(&root->u, &root->bi);
	root->cursor = root->u.data_len;
	r->depth = 1;
	copied += copy_overlap(buf, offset, hi, root->u.data, 0, root->u.data_len);

	while (r->depth > 0) {
		struct frame *f = &r->fr[r->depth - 1];
		struct pb_link l;
		uint64_t bs, codec, content = 0;
		cs_cid c;

		if (!pb_links_next(&f->li, &l)) {
			r->depth--; /* invariant 4: a pop */
			continue;
		}
		CS_ASSERT(ufs_blocksizes_next(&f->bi, &bs) == 1); /* counts checked equal */
		uint64_t lo = f->cursor;
		f->cursor += bs; /* bounded by the node's checked total */
		/* A child wholly before the range, or holding no bytes, is not read: only
		 * children that give at least one wanted byte are, which bounds the blocks
		 * a read touches by its length times the depth, whatever a hostile DAG
		 * says (zero-size children could otherwise fan out without end). */
		if (bs == 0 || lo + bs <= offset)
			continue;
		if (lo >= hi)
			break; /* this and everything after lies past the range */
		CS_ASSERT(cs_cid_from_bytes(l.hash, l.hash_len, &c) == 0); /* decoder checked */
		rc = codec_of(&c, &codec);
		/* A raw leaf wanted whole joins the run; anything else is read only after the
		 * run, so blocks are read, and errors met, in file order (ufs_read_run). */
		bool whole = rc == 0 && codec == CS_CODEC_RAW && buf != NULL && lo >= offset &&
		             lo + bs <= hi;
		if (whole && r->get_run != NULL) {
			r->run[r->nrun++] = (struct ufs_leaf){c, buf + (lo - offset), (size_t)bs};
			if (r->nrun == UFS_RUN_MAX && (rc = run_flush(r, &copied)) < 0)
				goto out;
			continue;
		}
		int frc = run_flush(r, &copied);
		if (frc < 0 || rc < 0) {
			rc = frc < 0 ? frc : rc;
			goto out;
		}
		if (codec == CS_CODEC_RAW) {
			if ((rc = read_raw_leaf(r, &c, lo, bs, offset, hi, buf, &copied)) < 0)
				goto out;
		} else if (codec == CS_CODEC_DAG_PB) {
			if ((rc = push_node(r, r->depth, &c, false, lo, offset, hi, buf, &copied,
			                    &content)) < 0)
				goto out;
			if (content != bs) {
				char text[CS_CID_TEXT_MAX];
				rc = cs_fail(CS_ECORRUPT,
				             "block %s holds %llu bytes of file but its parent's "
				             "blocksize says %llu",
				             cid_str(&c, text, sizeof(text)),
				             (unsigned long long)content, (unsigned long long)bs);
				goto out;
			}
		} else {
			char text[CS_CID_TEXT_MAX];
			rc = cs_fail(CS_ECORRUPT,
			             "link to %s with codec 0x%llx inside a UnixFS file",
			             cid_str(&c, text, sizeof(text)), (unsigned long long)codec);
			goto out;
		}
	}
	if ((rc = run_flush(r, &copied)) < 0)
		goto out;
	/* Invariant 3: consistent sizes mean every wanted byte was copied exactly once. */
	CS_ASSERT(copied == hi - offset);
out:
	if (rc == 0)
		*got = copied;
	if (touched != NULL)
		*touched = r->touched;
	return rc;
}

int ufs_read(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t offset, uint8_t *buf,
             size_t len, size_t *got, uint64_t *touched)
{
	return ufs_read_run(get, NULL, ctx, root, offset, buf, len, got, touched);
}

int ufs_read_run(ufs_get_fn get, ufs_get_run_fn get_run, void *ctx, const cs_cid *root,
                 uint64_t offset, uint8_t *buf, size_t len, size_t *got, uint64_t *touched)
{
	struct ufs_reader *r;
	uint64_t at_open = 0, in_read = 0;
	int rc;

	*got = 0;
	if (touched != NULL)
		*touched = 0;
	if ((rc = ufs_reader_new(get, get_run, ctx, root, &r, &at_open)) < 0) {
		if (touched != NULL)
			*touched = at_open;
		return rc;
	}
	rc = ufs_reader_read(r, offset, buf, len, got, &in_read);
	if (touched != NULL)
		*touched = at_open + in_read;
	ufs_reader_free(r);
	return rc;
}

int ufs_file_size(ufs_get_fn get, void *ctx, const cs_cid *root, uint64_t *size)
{
	struct ufs_reader *r = calloc(1, sizeof(*r));
	bool raw;
	int rc;

	if (r == NULL)
		return cs_fail(-ENOMEM, "out of memory for a UnixFS reader");
	r->get = get;
	r->ctx = ctx;
	r->root = root;
	rc = open_root(r, root, size, &raw);
	ufs_reader_free(r);
	return rc;
}

/* ---- Directories and symlinks -------------------------------------------------------- */

/* Writes v as a protobuf varint at p; returns its length (at most PB_VARINT_MAX). */
static size_t pb_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Writes name (at most UFS_NAME_MAX bytes) into q (room for 4 * UFS_NAME_MAX + 1) with
 * every byte outside printable ASCII, and the backslash, as \xNN: a message stays one line
 * of text whatever the name holds. */
static const char *name_quote(char *q, const uint8_t *name, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len && i < UFS_NAME_MAX; i++) {
		if (name[i] >= 0x20 && name[i] < 0x7f && name[i] != '\\')
			q[n++] = (char)name[i];
		else
			n += (size_t)sprintf(q + n, "\\x%02x", name[i]);
	}
	q[n] = '\0';
	return q;
}

int ufs_name_check(const uint8_t *name, size_t len)
{
	if (len == 0)
		return cs_fail(CS_EINVAL, "empty entry name");
	if (len > UFS_NAME_MAX)
		return cs_fail(CS_ELIMIT, "entry name of %zu bytes: the limit is %u", len,
		               UFS_NAME_MAX);
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return cs_fail(CS_EINVAL, "entry name \"%.*s\" is reserved", (int)len,
		               (const char *)name);
	for (size_t i = 0; i < len; i++) {
		if (name[i] == '/')
			return cs_fail(CS_EINVAL, "entry name holds a '/' at byte %zu", i);
		if (name[i] == '\0')
			return cs_fail(CS_EINVAL, "entry name holds a NUL at byte %zu", i);
	}
	return 0;
}

/* One link of a directory being built. The name lives in the builder's names buffer. */
struct ufs_dent {
	size_t name_off;
	size_t name_len;
	cs_cid cid;
	uint64_t tsize;
};

struct ufs_dir {
	struct ufs_params p;
	ufs_emit_fn emit;
	void *ctx;
	struct ufs_dent *e; /* n entries of cap */
	size_t n, cap;
	uint8_t *names; /* every entry's name, back to back */
	size_t names_len, names_cap;
	uint64_t estimate;  /* invariant 5 */
	uint64_t tsize_sum; /* of the links */
	int err;            /* sticky failure */
	bool finished;
};

int ufs_dir_new(const struct ufs_params *p, ufs_emit_fn emit, void *ctx, struct ufs_dir **out)
{
	int rc;

	if ((rc = ufs_params_check(p)) < 0)
		return rc;
	struct ufs_dir *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return cs_fail(-ENOMEM, "out of memory for a directory builder");
	d->p = *p;
	d->emit = emit;
	d->ctx = ctx;
	*out = d;
	return 0;
}

void ufs_dir_free(struct ufs_dir *d)
{
	if (d == NULL)
		return;
	free(d->e);
	free(d->names);
	free(d);
}

uint64_t ufs_dir_estimate(const struct ufs_dir *d)
{
	return d->estimate;
}

/* Grows *buf (capacity *cap elements of size sz) to hold at least want elements. */
static int grow(void **buf, size_t *cap, size_t want, size_t sz)
{
	if (want <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < want)
		ncap *= 2;
	void *nb = realloc(*buf, ncap * sz);
	if (nb == NULL)
		return cs_fail(-ENOMEM, "out of memory for a directory of %zu entries", want);
	*buf = nb;
	*cap = ncap;
	return 0;
}

static int dir_add_(struct ufs_dir *d, const uint8_t *name, size_t len, const cs_cid *cid,
                    uint64_t tsize)
{
	int rc;

	if ((rc = ufs_name_check(name, len)) < 0)
		return rc;
	if (cid->len == 0 || cid->len > CS_CID_MAX)
		return cs_fail(CS_EINVAL, "entry CID of %u bytes", cid->len);
	if (d->n >= UFS_DIR_ENTRIES_MAX)
		return cs_fail(CS_ELIMIT, "directory of more than %u entries", UFS_DIR_ENTRIES_MAX);
	if (tsize > UINT64_MAX - d->tsize_sum)
		return cs_fail(CS_ECORRUPT, "directory's Tsizes overflow 64 bits");
	if ((rc = grow((void **)&d->e, &d->cap, d->n + 1, sizeof(*d->e))) < 0 ||
	    (rc = grow((void **)&d->names, &d->names_cap, d->names_len + len, 1)) < 0)
		return rc;
	memcpy(d->names + d->names_len, name, len);
	d->e[d->n++] = (struct ufs_dent){
	    .name_off = d->names_len, .name_len = len, .cid = *cid, .tsize = tsize};
	d->names_len += len;
	d->estimate += len + cid->len; /* Kubo's estimatedLinkSize: invariant 5 */
	d->tsize_sum += tsize;
	return 0;
}

int ufs_dir_add(struct ufs_dir *d, const uint8_t *name, size_t len, const cs_cid *cid,
                uint64_t tsize)
{
	if (d->err < 0)
		return d->err;
	if (d->finished)
		return cs_fail(CS_EINVAL, "add after finish");
	int rc = dir_add_(d, name, len, cid, tsize);
	if (rc < 0)
		d->err = rc;
	return rc;
}

/* go-merkledag's and @ipld/dag-pb's link order: bytewise, a prefix first. */
static int link_cmp(const void *a_, const void *b_)
{
	const struct pb_link *a = a_, *b = b_;
	size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
	int c = memcmp(a->name, b->name, n);

	if (c != 0)
		return c;
	return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

static int dir_flat(struct ufs_dir *d, cs_cid *root, uint64_t *tsize)
{
	static const uint8_t dir_data[] = {0x08, UFS_DIRECTORY}; /* UnixFS {Type = Directory} */
	struct pb_link *links = NULL;
	uint8_t *enc = NULL;
	size_t len;
	int rc = 0;

	if (d->n > 0 && (links = malloc(d->n * sizeof(*links))) == NULL)
		return cs_fail(-ENOMEM, "out of memory for %zu directory links", d->n);
	for (size_t i = 0; i < d->n; i++) {
		const struct ufs_dent *e = &d->e[i];
		links[i] = (struct pb_link){.hash = e->cid.bytes,
		                            .hash_len = e->cid.len,
		                            .name = d->names + e->name_off,
		                            .name_len = e->name_len,
		                            .has_name = true,
		                            .tsize = e->tsize,
		                            .has_tsize = true};
	}
	if (d->n > 1)
		qsort(links, d->n, sizeof(*links), link_cmp);
	for (size_t i = 1; i < d->n; i++) {
		if (link_cmp(&links[i - 1], &links[i]) == 0) {
			char q[4 * UFS_NAME_MAX + 1];
			rc = cs_fail(CS_EINVAL, "two entries of the directory are named \"%s\"",
			             name_quote(q, links[i].name, links[i].name_len));
			goto out;
		}
	}
	if (d->tsize_sum > UINT64_MAX - CS_BLOCK_MAX) {
		rc = cs_fail(CS_ECORRUPT, "directory's Tsizes overflow 64 bits");
		goto out;
	}
	size_t cap = pb_node_encoded_len(links, d->n, dir_data, sizeof(dir_data), true);
	CS_ASSERT(cap <= CS_BLOCK_MAX); /* invariant 5 */
	if ((enc = malloc(cap)) == NULL) {
		rc = cs_fail(-ENOMEM, "out of memory for a directory node of %zu bytes", cap);
		goto out;
	}
	CS_ASSERT(pb_node_encode(enc, cap, links, d->n, dir_data, sizeof(dir_data), true, &len) ==
	          0);
	CS_ASSERT(len == cap);
	if ((rc = emit_block(&d->p, d->emit, d->ctx, enc, len, CS_CODEC_DAG_PB, root)) < 0)
		goto out;
	if (tsize != NULL)
		*tsize = len + d->tsize_sum;
out:
	free(links);
	free(enc);
	return rc;
}

/* ---- HAMT shards (see the header comment) ---------------------------------------------- */

/* An entry placed in the shard: its h1, and its index in d->e. */
struct hamt_ent {
	uint64_t h1;
	size_t i;
};

static unsigned hamt_slot(uint64_t h1, unsigned level)
{
	return (unsigned)(h1 >> (56 - 8 * level)) & 0xff;
}

/* Orders entries by their slots at every level in turn, which is the order of h1, so that
 * the entries of any shard node lie back to back, in slot order. */
static int hamt_ent_cmp(const void *a_, const void *b_)
{
	uint64_t a = ((const struct hamt_ent *)a_)->h1, b = ((const struct hamt_ent *)b_)->h1;
	return a < b ? -1 : a > b;
}

/* Writes the shard node of ents[0..n) (n >= 2, all sharing their slots above level) and,
 * first, its child shards; sets *cid and *tsize. Recursion depth: invariant 5. */
static int hamt_node(struct ufs_dir *d, const struct hamt_ent *ents, size_t n, unsigned level,
                     cs_cid *cid, uint64_t *tsize)
{
	struct pb_link *links = malloc(UFS_HAMT_FANOUT * sizeof(*links));
	cs_cid *kids = malloc(UFS_HAMT_FANOUT * sizeof(*kids));
	uint8_t *labels = malloc(UFS_HAMT_FANOUT * (2 + UFS_NAME_MAX));
	uint8_t bitmap[UFS_HAMT_FANOUT / 8] = {0}; /* big-endian: slot i is bit i */
	uint8_t *enc = NULL;
	size_t nl = 0;
	uint64_t sum = 0;
	int rc = 0;

	if (links == NULL || kids == NULL || labels == NULL) {
		rc = cs_fail(-ENOMEM, "out of memory for a directory shard node");
		goto out;
	}
	for (size_t at = 0; at < n;) {
		unsigned slot = hamt_slot(ents[at].h1, level);
		size_t run = 1;
		while (at + run < n && hamt_slot(ents[at + run].h1, level) == slot)
			run++;
		uint8_t *label = labels + nl * (2 + UFS_NAME_MAX);
		static const char hex[] = "0123456789ABCDEF";
		label[0] = (uint8_t)hex[slot >> 4];
		label[1] = (uint8_t)hex[slot & 15];
		struct pb_link *l = &links[nl];
		*l = (struct pb_link){.name = label, .name_len = 2, .has_name = true, .has_tsize = true};
		if (run == 1) {
			const struct ufs_dent *e = &d->e[ents[at].i];
			memcpy(label + 2, d->names + e->name_off, e->name_len);
			l->name_len += e->name_len;
			l->hash = e->cid.bytes;
			l->hash_len = e->cid.len;
			l->tsize = e->tsize;
		} else if (level + 1 == UFS_HAMT_LEVELS) {
			char q[2][4 * UFS_NAME_MAX + 1];
			const struct ufs_dent *e0 = &d->e[ents[at].i], *e1 = &d->e[ents[at + 1].i];
			rc = cs_fail(CS_ELIMIT,
			             "directory entries \"%s\" and \"%s\" have the same 64-bit murmur3 "
			             "hash, which a HAMT shard cannot tell apart without rehashing "
			             "(not supported)",
			             name_quote(q[0], d->names + e0->name_off, e0->name_len),
			             name_quote(q[1], d->names + e1->name_off, e1->name_len));
			goto out;
		} else {
			if ((rc = hamt_node(d, ents + at, run, level + 1, &kids[nl], &l->tsize)) < 0)
				goto out;
			l->hash = kids[nl].bytes;
			l->hash_len = kids[nl].len;
		}
		if (l->tsize > UINT64_MAX - sum) {
			rc = cs_fail(CS_ECORRUPT, "directory's Tsizes overflow 64 bits");
			goto out;
		}
		sum += l->tsize;
		bitmap[sizeof(bitmap) - 1 - slot / 8] |= (uint8_t)(1u << (slot % 8));
		nl++;
		at += run;
	}
	/* UnixFS {Type = HAMTShard, Data = bitmap, hashType = 0x22, fanout = 256}. */
	uint8_t data[2 + 2 + sizeof(bitmap) + 2 + 3];
	size_t skip = 0, dl = 0;
	while (skip < sizeof(bitmap) - 1 && bitmap[skip] == 0)
		skip++;
	data[dl++] = 0x08;
	data[dl++] = UFS_HAMT_SHARD;
	data[dl++] = 0x12;
	data[dl++] = (uint8_t)(sizeof(bitmap) - skip);
	memcpy(data + dl, bitmap + skip, sizeof(bitmap) - skip);
	dl += sizeof(bitmap) - skip;
	data[dl++] = 0x28;
	data[dl++] = 0x22;
	data[dl++] = 0x30;
	dl += pb_varint_put(data + dl, UFS_HAMT_FANOUT);
	size_t cap = pb_node_encoded_len(links, nl, data, dl, true), len;
	CS_ASSERT(cap <= UFS_HAMT_NODE_MAX); /* invariant 5 */
	if (sum > UINT64_MAX - cap) {
		rc = cs_fail(CS_ECORRUPT, "directory's Tsizes overflow 64 bits");
		goto out;
	}
	if ((enc = malloc(cap)) == NULL) {
		rc = cs_fail(-ENOMEM, "out of memory for a directory shard node of %zu bytes", cap);
		goto out;
	}
	CS_ASSERT(pb_node_encode(enc, cap, links, nl, data, dl, true, &len) == 0 && len == cap);
	if ((rc = emit_block(&d->p, d->emit, d->ctx, enc, len, CS_CODEC_DAG_PB, cid)) < 0)
		goto out;
	*tsize = len + sum;
out:
	free(links);
	free(kids);
	free(labels);
	free(enc);
	return rc;
}

static int dir_hamt(struct ufs_dir *d, cs_cid *root, uint64_t *tsize)
{
	struct hamt_ent *ents = malloc(d->n * sizeof(*ents));
	uint64_t ts;
	int rc;

	if (ents == NULL)
		return cs_fail(-ENOMEM, "out of memory for a directory of %zu entries", d->n);
	for (size_t i = 0; i < d->n; i++) {
		uint64_t h[2];
		const struct ufs_dent *e = &d->e[i];
		lmmh_x64_128(d->names + e->name_off, (unsigned)e->name_len, 0, h);
		ents[i] = (struct hamt_ent){.h1 = h[0], .i = i};
	}
	qsort(ents, d->n, sizeof(*ents), hamt_ent_cmp);
	/* Equal names have equal hashes, so duplicates lie among entries of one h1. */
	for (size_t i = 1; i < d->n; i++) {
		const struct ufs_dent *a = &d->e[ents[i - 1].i], *b = &d->e[ents[i].i];
		if (ents[i - 1].h1 == ents[i].h1 && a->name_len == b->name_len &&
		    memcmp(d->names + a->name_off, d->names + b->name_off, a->name_len) == 0) {
			char q[4 * UFS_NAME_MAX + 1];
			rc = cs_fail(CS_EINVAL, "two entries of the directory are named \"%s\"",
			             name_quote(q, d->names + b->name_off, b->name_len));
			goto out;
		}
	}
	if ((rc = hamt_node(d, ents, d->n, 0, root, &ts)) == 0 && tsize != NULL)
		*tsize = ts;
out:
	free(ents);
	return rc;
}

static int dir_finish_(struct ufs_dir *d, cs_cid *root, uint64_t *tsize)
{
	return d->estimate > UFS_DIR_SHARD_BYTES ? dir_hamt(d, root, tsize)
	                                         : dir_flat(d, root, tsize);
}

int ufs_dir_finish(struct ufs_dir *d, cs_cid *root, uint64_t *tsize)
{
	if (d->err < 0)
		return d->err;
	if (d->finished)
		return cs_fail(CS_EINVAL, "finish called twice");
	d->finished = true;
	int rc = dir_finish_(d, root, tsize);
	if (rc < 0)
		d->err = rc;
	return rc;
}

int ufs_symlink(const struct ufs_params *p, ufs_emit_fn emit, void *ctx, const uint8_t *target,
                size_t len, cs_cid *cid, uint64_t *tsize)
{
	/* PBNode {Data (1 + 3 length bytes) = UnixFS {Type (2), Data (1 + 2 + target)}}. */
	uint8_t node[1 + 3 + 2 + 1 + 2 + UFS_SYMLINK_MAX];
	uint8_t u[2 + 1 + 2 + UFS_SYMLINK_MAX];
	size_t ul = 0, n = 0;
	int rc;

	if (len > UFS_SYMLINK_MAX)
		return cs_fail(CS_ELIMIT, "symlink target of %zu bytes: the limit is %u", len,
		               UFS_SYMLINK_MAX);
	/* UnixFS {Type = Symlink, Data = target}: Data only when non-empty, as ipfs-unixfs
	 * marshals it; go-unixfs writes the same bytes for every target a file system holds. */
	u[ul++] = 0x08;
	u[ul++] = UFS_SYMLINK;
	if (len > 0) {
		u[ul++] = 0x12;
		ul += pb_varint_put(u + ul, len);
		memcpy(u + ul, target, len);
		ul += len;
	}
	node[n++] = 0x0a;
	n += pb_varint_put(node + n, ul);
	memcpy(node + n, u, ul);
	n += ul;
	if ((rc = emit_block(p, emit, ctx, node, n, CS_CODEC_DAG_PB, cid)) < 0)
		return rc;
	if (tsize != NULL)
		*tsize = n;
	return 0;
}

int ufs_tsize_of(uint64_t codec, const uint8_t *blk, size_t len, uint64_t *tsize)
{
	struct pb_node n;
	struct pb_link_iter it;
	struct pb_link l;
	uint64_t sum = len;

	if (codec == CS_CODEC_RAW) {
		*tsize = len;
		return 0;
	}
	if (codec != CS_CODEC_DAG_PB)
		return cs_fail(CS_EINVAL, "codec 0x%llx: a directory entry is raw or dag-pb",
		               (unsigned long long)codec);
	if (pb_node_decode(blk, len, &n) < 0) {
		char detail[512];
		snprintf(detail, sizeof(detail), "%s", cs_errmsg());
		return cs_fail(CS_EINVAL, "entry block is not valid dag-pb: %s", detail);
	}
	pb_links_begin(&n, &it);
	while (pb_links_next(&it, &l)) {
		uint64_t t = l.has_tsize ? l.tsize : 0;
		if (t > UINT64_MAX - sum)
			return cs_fail(CS_ECORRUPT, "the entry's link Tsizes overflow 64 bits");
		sum += t;
	}
	*tsize = sum;
	return 0;
}
