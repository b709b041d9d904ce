/*
 * file.c - the public Files API: cs_add_* (streaming UnixFS ingest), cs_cat, cs_file_size.
 *
 * A thin layer over unixfs.c: the builder's blocks go to store_put() without waiting for
 * each one's sync (they become durable together at the end), the reader's
 * requests to cs_block_get(). A CIDv0 root is found too, since the store indexes a block by
 * its multihash and a v0 CID is that multihash.
 *
 * Invariants:
 *  1. A root is handed to the caller only after cs_store_sync() returned 0, so the root and
 *     every block under it are durable when the root is acknowledged, whatever the store's
 *     durability mode.
 *  2. cs_add_finish() and cs_add_abort() free the add on every path.
 *  3. cs_add_fd() holds one read buffer of ADD_FD_BUF bytes besides the builder's, whatever
 *     the file size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cidstore.h"
#include "err.h"
#include "store.h"
#include "unixfs.h"

#define ADD_FD_BUF (1u << 20) /* read size of cs_add_fd: four default chunks, no copies */

struct cs_add {
	cs_store *s;
	struct ufs_builder *b;
};

static int store_emit(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t hash,
                      cs_cid *cid_out)
{
	return store_put(ctx, data, len, codec, hash, 0, cid_out); /* durable at finish */
}

static int store_get(void *ctx, const cs_cid *cid, uint8_t *buf, size_t cap, size_t *len)
{
	return cs_block_get(ctx, cid, buf, cap, len);
}

CS_API void cs_add_options_init(cs_add_options *o)
{
	*o = (cs_add_options){.cid_version = 1,
	                      .raw_leaves = -1,
	                      .hash = CS_HASH_SHA2_256,
	                      .chunker = CS_CHUNK_FIXED,
	                      .chunk_size = CHUNK_SIZE_DEFAULT};
}

/* Resolves the profile defaults of o into builder parameters. */
static int params_of(const cs_add_options *o, struct ufs_params *p)
{
	cs_add_options d;

	if (o == NULL) {
		cs_add_options_init(&d);
		o = &d;
	}
	if (o->raw_leaves < -1 || o->raw_leaves > 1)
		return cs_fail(CS_EINVAL, "raw_leaves is %d: use -1, 0 or 1", o->raw_leaves);
	if (o->chunk_size == 0)
		return cs_fail(CS_EINVAL, "chunk_size is 0");
	*p = (struct ufs_params){
	    .cid_version = o->cid_version,
	    .raw_leaves = o->raw_leaves == -1 ? o->cid_version == 1 : o->raw_leaves == 1,
	    .hash = o->hash,
	    .chunker = o->chunker,
	    .chunk_size = o->chunk_size,
	};
	return ufs_params_check(p);
}

CS_API int cs_add_begin(cs_store *s, const cs_add_options *o, cs_add **out)
{
	struct ufs_params p;
	int rc;

	cs_clear_error();
	if (s == NULL || out == NULL)
		return cs_fail(CS_EINVAL, "store or out is NULL");
	if ((rc = params_of(o, &p)) < 0)
		return rc;
	cs_add *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return cs_fail(-ENOMEM, "out of memory for an add");
	a->s = s;
	if ((rc = ufs_builder_new(&p, store_emit, s, &a->b)) < 0) {
		free(a);
		return rc;
	}
	*out = a;
	return 0;
}

CS_API int cs_add_write(cs_add *a, const void *data, size_t len)
{
	cs_clear_error();
	if (a == NULL)
		return cs_fail(CS_EINVAL, "add is NULL");
	return ufs_builder_write(a->b, data, len);
}

CS_API int cs_add_finish(cs_add *a, cs_cid *root, uint64_t *size)
{
	cs_cid r;
	uint64_t n;
	int rc;

	cs_clear_error();
	if (a == NULL)
		return cs_fail(CS_EINVAL, "add is NULL");
	if (root == NULL) {
		rc = cs_fail(CS_EINVAL, "root is NULL");
	} else {
		rc = ufs_builder_finish(a->b, &r, &n);
		if (rc == 0)
			rc = cs_store_sync(a->s); /* invariant 1 */
		if (rc == 0) {
			*root = r;
			if (size != NULL)
				*size = n;
		}
	}
	cs_add_abort(a); /* invariant 2 */
	return rc;
}

CS_API void cs_add_abort(cs_add *a)
{
	if (a == NULL)
		return;
	ufs_builder_free(a->b);
	free(a);
}

CS_API int cs_add_fd(cs_store *s, const cs_add_options *o, int fd, cs_cid *root, uint64_t *size)
{
	cs_add *a;
	int rc, retries = 0;

	cs_clear_error();
	if (root == NULL)
		return cs_fail(CS_EINVAL, "root is NULL");
	if ((rc = cs_add_begin(s, o, &a)) < 0)
		return rc;
	uint8_t *buf = malloc(ADD_FD_BUF); /* invariant 3 */
	if (buf == NULL) {
		cs_add_abort(a);
		return cs_fail(-ENOMEM, "out of memory for a read buffer");
	}
	for (;;) {
		ssize_t n = read(fd, buf, ADD_FD_BUF);
		if (n < 0) {
			/* EINTR and EAGAIN are retried a bounded number of times in a row. */
			if ((errno == EINTR || errno == EAGAIN) && ++retries <= 16)
				continue;
			rc = cs_fail(-errno, "read of fd %d failed: %s", fd, strerror(errno));
			break;
		}
		retries = 0;
		if (n == 0)
			break;
		if ((rc = cs_add_write(a, buf, (size_t)n)) < 0)
			break;
	}
	free(buf);
	if (rc < 0) {
		cs_add_abort(a);
		return rc;
	}
	return cs_add_finish(a, root, size);
}

CS_API int cs_cat(cs_store *s, const cs_cid *root, uint64_t offset, void *buf, size_t len,
                  size_t *got, uint64_t *blocks_touched)
{
	cs_clear_error();
	if (blocks_touched != NULL)
		*blocks_touched = 0;
	if (s == NULL || root == NULL || got == NULL || (buf == NULL && len > 0))
		return cs_fail(CS_EINVAL, "store, root, got or buf is NULL");
	return ufs_read(store_get, s, root, offset, buf, len, got, blocks_touched);
}

CS_API int cs_file_size(cs_store *s, const cs_cid *root, uint64_t *size)
{
	cs_clear_error();
	if (s == NULL || root == NULL || size == NULL)
		return cs_fail(CS_EINVAL, "store, root or size is NULL");
	return ufs_file_size(store_get, s, root, size);
}
