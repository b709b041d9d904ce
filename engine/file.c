/*
 * file.c - the public Files API: cs_add_* (streaming UnixFS ingest), cs_cat, cs_file_size,
 * cs_file_check, cs_dir_* (directory nodes) and cs_add_path (files and trees from disk).
 *
 * A thin layer over unixfs.c: the builders' leaves go to the add pipeline (addpipe.c), which
 * hashes them on the add's threads and puts them in file order; nodes go to store_put(); no
 * put waits for its sync (the blocks become durable together at the end). The reader's
 * requests go to cs_block_get(). A CIDv0 root is found too, since the store indexes a block
 * by its multihash and a v0 CID is that multihash.
 *
 * cs_add_path walks a tree in two passes over the same code: a scan that checks every name,
 * type, permission, depth and directory size and sums the file sizes without writing, then
 * the add. Each pass keeps an explicit stack of open directories (one fd each, opened with
 * openat() relative to the parent and O_NOFOLLOW, so a directory swapped for a symlink
 * between the passes is refused, never followed), each with its entries read in full and
 * sorted by name bytes. A directory's node is built when its last entry is done, and its
 * link goes into the parent's builder.
 *
 *   scan ──(tree ok)──> add ──(root built)──> sync ──> root returned
 *     └──(bad tree: nothing written)──> error    └──(failure: blocks stay, unnamed)──> error
 *
 * Invariants:
 *  1. A root is handed to the caller only after cs_store_sync() returned 0, so the root and
 *     every block under it are durable when the root is acknowledged, whatever the store's
 *     durability mode.
 *  2. cs_add_finish() and cs_add_abort() free the add on every path; cs_dir_finish() and
 *     cs_dir_abort() the directory.
 *  3. cs_add_fd() and cs_add_path() hold one read buffer of ADD_FD_BUF bytes besides the
 *     builder's and the pipeline's fixed ring, whatever the file sizes.
 *  4. The walker's stack holds at most UFS_DIR_DEPTH_MAX directories; every loop iteration
 *     consumes one entry or pops one directory, so a walk ends after one iteration per entry
 *     and directory. Names are never used as paths: entries are opened relative to their
 *     directory's fd by one name that holds no '/' and is neither "." nor "..".
 *  5. The scan pass writes nothing: a tree it refuses leaves the store as it was.
 *  6. An add with a name in its options checks the name before it writes, and sets it (with
 *     the pin, in one transaction: S8 of store.c) after the sync and before its hold on the
 *     blocks ends, so no collection can take the file between the add and its name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addpipe.h"
#include "cid.h"
#include "cidstore.h"
#include "err.h"
#include "names.h"
#include "store.h"
#include "unixfs.h"

#define ADD_FD_BUF (1u << 20) /* read size of cs_add_fd: four default chunks, no copies */

/* The name an add sets at its end (cs_add_options.name, .pin), copied at its start. */
struct add_name {
	char name[CS_NAME_MAX + 1]; /* empty: none */
	int pin;
};

struct cs_add {
	cs_store *s;
	struct ufs_builder *b;
	struct addpipe *pipe;   /* hashes b's leaves (owned) */
	struct store_hold hold; /* keeps what the add writes from a collection (gc.c, E1) */
	struct add_name name;
};

static int store_emit(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t hash,
                      cs_cid *cid_out)
{
	return store_put(ctx, data, len, codec, hash, 0, cid_out); /* durable at finish */
}

/* The builder's leaves through the pipeline, and back into the builder's tree in order. */
static int sink_submit(void *ctx, const uint8_t *data, size_t len, uint64_t codec, uint64_t size)
{
	return ap_submit(ctx, data, len, codec, size);
}

static int sink_flush(void *ctx)
{
	return ap_flush(ctx);
}

static const struct ufs_leaf_sink pipe_sink = {sink_submit, sink_flush};

static int pipe_done(void *ctx, const cs_cid *cid, size_t len, uint64_t codec, uint64_t size)
{
	return ufs_builder_link(ctx, cid, len, size);
}

/* Makes a builder for p whose leaves are hashed by a pipeline of `threads` threads. */
static int builder_new(cs_store *s, const struct ufs_params *p, unsigned threads,
                       struct ufs_builder **b, struct addpipe **pipe)
{
	int rc;

	*pipe = NULL;
	if ((rc = ufs_builder_new(p, store_emit, s, b)) < 0)
		return rc;
	if ((rc = ap_new(s, p->hash, threads, ufs_builder_leaf_max(*b), pipe_done, *b, pipe)) < 0 ||
	    (rc = ufs_builder_set_sink(*b, &pipe_sink, *pipe)) < 0) {
		ap_free(*pipe);
		ufs_builder_free(*b);
		*pipe = NULL;
		*b = NULL;
		return rc;
	}
	return 0;
}

static int store_get(void *ctx, const cs_cid *cid, uint8_t *buf, size_t cap, size_t *len)
{
	return cs_block_get(ctx, cid, buf, cap, len);
}

/* The reader's runs of whole raw leaves, read together where they lie together in the log. */
static int store_get_run(void *ctx, const struct ufs_leaf *v, int n, int *done, size_t *len)
{
	struct store_get g[UFS_RUN_MAX];

	_Static_assert(UFS_RUN_MAX <= STORE_GET_MAX, "a run fits one store_get_many()");
	for (int i = 0; i < n; i++)
		g[i] = (struct store_get){&v[i].cid, v[i].buf, v[i].len};
	return store_get_many(ctx, g, n, done, len);
}

CS_API void cs_add_options_init(cs_add_options *o)
{
	*o = (cs_add_options){.cid_version = 1,
	                      .raw_leaves = -1,
	                      .hash = CS_HASH_SHA2_256,
	                      .chunker = CS_CHUNK_FIXED,
	                      .chunk_size = CHUNK_SIZE_DEFAULT,
	                      .hash_threads = 0};
}

/* The hashing threads o asks for (o may be NULL). */
static int threads_of(const cs_add_options *o, unsigned *n)
{
	return ap_threads_of(o != NULL ? o->hash_threads : 0, n);
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

/* Checks and copies o's name and pin (o may be NULL), before anything is written. */
static int name_of(const cs_add_options *o, struct add_name *n)
{
	char why[128];

	*n = (struct add_name){.pin = o != NULL ? o->pin : 0};
	if (n->pin != 0 && n->pin != 1)
		return cs_fail(CS_EINVAL, "pin is %d: use 0 or 1", n->pin);
	if (o == NULL || o->name == NULL)
		return n->pin ? cs_fail(CS_EINVAL, "pin without a name: use cs_pin_add") : 0;
	size_t len = strlen(o->name);
	if (name_check((const uint8_t *)o->name, len, why, sizeof(why)) != 0)
		return cs_fail(CS_EINVAL, "%s", why);
	memcpy(n->name, o->name, len + 1);
	return 0;
}

/* Sets the add's name, if any, to root (invariant 6). */
static int set_name(cs_store *s, const struct add_name *n, const cs_cid *root, uint64_t size)
{
	return n->name[0] != '\0' ? store_name_set(s, n->name, root, size, n->pin) : 0;
}

CS_API int cs_add_begin(cs_store *s, const cs_add_options *o, cs_add **out)
{
	struct ufs_params p;
	unsigned threads;
	int rc;

	cs_clear_error();
	if (s == NULL || out == NULL)
		return cs_fail(CS_EINVAL, "store or out is NULL");
	struct add_name n;
	if ((rc = params_of(o, &p)) < 0 || (rc = threads_of(o, &threads)) < 0 ||
	    (rc = name_of(o, &n)) < 0)
		return rc;
	cs_add *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return cs_fail(-ENOMEM, "out of memory for an add");
	a->s = s;
	a->name = n;
	if ((rc = builder_new(s, &p, threads, &a->b, &a->pipe)) < 0) {
		free(a);
		return rc;
	}
	store_hold_begin(s, &a->hold);
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
		if (rc == 0)
			rc = set_name(a->s, &a->name, &r, n); /* invariant 6: held until freed */
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
	ap_free(a->pipe); /* joins its threads first: they read the ring, not the builder */
	ufs_builder_free(a->b);
	store_hold_end(a->s, &a->hold);
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
	return ufs_read_run(store_get, store_get_run, s, root, offset, buf, len, got,
	                    blocks_touched);
}

/* A cs_file is a UnixFS reader over the store's get functions; the type exists only for the
 * public header's sake. */
struct cs_file {
	struct ufs_reader *r; /* owned */
};

CS_API int cs_file_open(cs_store *s, const cs_cid *root, cs_file **out)
{
	cs_clear_error();
	if (s == NULL || root == NULL || out == NULL)
		return cs_fail(CS_EINVAL, "store, root or out is NULL");
	*out = NULL;
	cs_file *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return cs_fail(-ENOMEM, "out of memory for a file reader");
	int rc = ufs_reader_new(store_get, store_get_run, s, root, &f->r, NULL);
	if (rc < 0) {
		free(f);
		return rc;
	}
	*out = f;
	return 0;
}

CS_API int cs_file_read(cs_file *f, uint64_t offset, void *buf, size_t len, size_t *got,
                        uint64_t *blocks_touched)
{
	cs_clear_error();
	if (blocks_touched != NULL)
		*blocks_touched = 0;
	if (f == NULL || got == NULL || (buf == NULL && len > 0))
		return cs_fail(CS_EINVAL, "file, got or buf is NULL");
	return ufs_reader_read(f->r, offset, buf, len, got, blocks_touched);
}

CS_API uint64_t cs_file_length(const cs_file *f)
{
	return f == NULL ? 0 : ufs_reader_size(f->r);
}

CS_API void cs_file_close(cs_file *f)
{
	if (f == NULL)
		return;
	ufs_reader_free(f->r);
	free(f);
}

CS_API int cs_file_size(cs_store *s, const cs_cid *root, uint64_t *size)
{
	cs_clear_error();
	if (s == NULL || root == NULL || size == NULL)
		return cs_fail(CS_EINVAL, "store, root or size is NULL");
	return ufs_file_size(store_get, s, root, size);
}

CS_API int cs_file_check(cs_store *s, const cs_cid *root, uint64_t offset, uint64_t len)
{
	size_t got;

	cs_clear_error();
	if (s == NULL || root == NULL)
		return cs_fail(CS_EINVAL, "store or root is NULL");
	return ufs_read(store_get, s, root, offset, NULL, len > SIZE_MAX ? SIZE_MAX : (size_t)len,
	                &got, NULL);
}

/* ---- Directories --------------------------------------------------------------------- */

struct cs_dir {
	cs_store *s;
	struct ufs_dir *d;
	int err; /* sticky: a failed add kills the directory */
};

CS_API int cs_dir_begin(cs_store *s, const cs_add_options *o, cs_dir **out)
{
	struct ufs_params p;
	int rc;

	cs_clear_error();
	if (s == NULL || out == NULL)
		return cs_fail(CS_EINVAL, "store or out is NULL");
	if ((rc = params_of(o, &p)) < 0)
		return rc;
	if (o != NULL && (o->name != NULL || o->pin != 0))
		return cs_fail(CS_EINVAL, "a directory being built takes no name or pin: name its "
		                          "root with cs_name_set once it is finished");
	cs_dir *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return cs_fail(-ENOMEM, "out of memory for a directory");
	d->s = s;
	if ((rc = ufs_dir_new(&p, store_emit, s, &d->d)) < 0) {
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

static int dir_add_(cs_dir *d, const char *name, const cs_cid *cid)
{
	char text[CS_CID_TEXT_MAX];
	cs_cid_info info;
	uint64_t tsize;
	void *blk = NULL;
	size_t len = strlen(name);
	int rc;

	if ((rc = ufs_name_check((const uint8_t *)name, len)) < 0)
		return rc;
	if ((rc = cs_cid_inspect(cid, &info)) < 0)
		return rc;
	if (info.codec == CS_CODEC_RAW) {
		rc = cs_block_get(d->s, cid, NULL, 0, &len); /* its length is its Tsize */
		tsize = len;
	} else if (info.codec == CS_CODEC_DAG_PB) {
		if ((rc = cs_block_get_alloc(d->s, cid, &blk, &len)) == 0)
			rc = ufs_tsize_of(info.codec, blk, len, &tsize);
		free(blk);
	} else {
		rc = ufs_tsize_of(info.codec, NULL, 0, &tsize); /* words the refusal */
	}
	if (rc == CS_ENOTFOUND) {
		if (cs_cid_format(cid, text, sizeof(text)) < 0)
			snprintf(text, sizeof(text), "(unprintable CID)");
		return cs_fail(CS_ENOTFOUND, "entry block %s is not in the store", text);
	}
	if (rc < 0)
		return rc;
	return ufs_dir_add(d->d, (const uint8_t *)name, strlen(name), cid, tsize);
}

CS_API int cs_dir_add(cs_dir *d, const char *name, const cs_cid *cid)
{
	cs_clear_error();
	if (d == NULL || name == NULL || cid == NULL)
		return cs_fail(CS_EINVAL, "directory, name or cid is NULL");
	if (d->err < 0)
		return d->err;
	int rc = dir_add_(d, name, cid);
	if (rc < 0)
		d->err = rc;
	return rc;
}

CS_API int cs_dir_finish(cs_dir *d, cs_cid *root, uint64_t *tsize)
{
	cs_cid r;
	uint64_t t;
	int rc;

	cs_clear_error();
	if (d == NULL)
		return cs_fail(CS_EINVAL, "directory is NULL");
	if (root == NULL)
		rc = cs_fail(CS_EINVAL, "root is NULL");
	else if ((rc = d->err) == 0 && (rc = ufs_dir_finish(d->d, &r, &t)) == 0 &&
	         (rc = cs_store_sync(d->s)) == 0) { /* invariant 1 */
		*root = r;
		if (tsize != NULL)
			*tsize = t;
	}
	cs_dir_abort(d); /* invariant 2 */
	return rc;
}

CS_API void cs_dir_abort(cs_dir *d)
{
	if (d == NULL)
		return;
	ufs_dir_free(d->d);
	free(d);
}

/* ---- Adding from the file system ------------------------------------------------------ */

/* One directory on the walker's stack. */
struct wdir {
	int fd;             /* the open directory (owned) */
	char *names;        /* its entries' names, NUL-terminated, back to back (owned) */
	char **sorted;      /* n pointers into names, in byte order (owned) */
	size_t n, next;     /* entries, and the next one to visit */
	size_t disk_len;    /* length of w->disk naming this directory */
	size_t show_len;    /* length of w->show naming it */
	struct ufs_dir *ud; /* its node being built (add pass only; owned) */
	uint64_t bytes;     /* content bytes of the files below it so far */
};

struct walker {
	cs_store *s;
	struct ufs_params p;
	const cs_add_callbacks *cb;
	bool scan;       /* the first pass: check and count, write nothing (invariant 5) */
	char *disk;      /* path on disk of the entry at hand: the caller's path, then names */
	char *show;      /* path reported to the callback: the root's base name, then names */
	struct wdir *st; /* UFS_DIR_DEPTH_MAX frames */
	unsigned depth;
	struct ufs_builder *b; /* add pass: one builder for every file, reset in between */
	struct addpipe *pipe;  /* hashes b's leaves; one for the whole walk */
	uint8_t *buf;          /* ADD_FD_BUF bytes (invariant 3) */
	uint64_t done, total;  /* content bytes read, and expected (from the scan) */
};

static const char *type_name(mode_t m)
{
	return S_ISFIFO(m)   ? "FIFO"
	       : S_ISSOCK(m) ? "socket"
	       : S_ISCHR(m)  ? "character device"
	       : S_ISBLK(m)  ? "block device"
	                     : "special file";
}

/* Checks the name of an entry of the directory at w->disk: the rules of every directory,
 * then those of names (valid UTF-8 without control characters). */
static int walk_name_check(struct walker *w, const char *name)
{
	const uint8_t *p = (const uint8_t *)name;
	size_t len = strlen(name);
	char detail[512];
	int rc;

	if ((rc = ufs_name_check(p, len)) < 0) {
		snprintf(detail, sizeof(detail), "%s", cs_errmsg());
		return cs_fail(rc, "an entry of %s: %s", w->disk, detail);
	}
	char why[128];
	if (name_check(p, len, why, sizeof(why)) != 0)
		return cs_fail(CS_EINVAL, "an entry of %s: %s", w->disk, why);
	return 0;
}

/* Sets w->disk and w->show to those of directory f followed by "/name". */
static void walk_path(struct walker *w, const struct wdir *f, const char *name)
{
	size_t n = strlen(name) + 1;

	w->disk[f->disk_len] = '/';
	memcpy(w->disk + f->disk_len + 1, name, n);
	w->show[f->show_len] = '/';
	memcpy(w->show + f->show_len + 1, name, n);
}

static int name_order(const void *a, const void *b)
{
	/* strcmp compares as unsigned char and ends at the NUL: byte order, a prefix first,
	 * the order of the directory node's links. */
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads every entry of directory f (at w->disk) and sorts them. Fails on a bad name and on
 * more entries than a directory may hold, before anything is written. */
static int read_dir(struct walker *w, struct wdir *f)
{
	size_t cap = 0, len = 0, ocap = 0, *offs = NULL;
	int rc = 0, fd = dup(f->fd);
	DIR *dir;

	if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
		rc = cs_fail(-errno, "cannot read directory %s: %s", w->disk, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	rewinddir(dir); /* the duplicate shares its offset with f->fd: an earlier pass moved it */
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(dir);
		if (de == NULL) {
			if (errno != 0)
				rc = cs_fail(-errno, "cannot read directory %s: %s", w->disk,
				             strerror(errno));
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if ((rc = walk_name_check(w, de->d_name)) < 0)
			break;
		size_t nl = strlen(de->d_name);
		if (f->n == UFS_DIR_ENTRIES_MAX) {
			rc = cs_fail(CS_ELIMIT, "directory %s has more than %u entries", w->disk,
			             UFS_DIR_ENTRIES_MAX);
			break;
		}
		if (f->n == ocap) {
			ocap = ocap ? ocap * 2 : 64;
			size_t *no = realloc(offs, ocap * sizeof(*offs));
			if (no == NULL) {
				rc = cs_fail(-ENOMEM, "out of memory reading %s", w->disk);
				break;
			}
			offs = no;
		}
		if (len + nl + 1 > cap) {
			cap = cap ? cap * 2 : 4096;
			while (len + nl + 1 > cap)
				cap *= 2;
			char *nn = realloc(f->names, cap);
			if (nn == NULL) {
				rc = cs_fail(-ENOMEM, "out of memory reading %s", w->disk);
				break;
			}
			f->names = nn;
		}
		memcpy(f->names + len, de->d_name, nl + 1);
		offs[f->n++] = len;
		len += nl + 1;
	}
	closedir(dir);
	if (rc == 0 && f->n > 0) {
		if ((f->sorted = malloc(f->n * sizeof(*f->sorted))) == NULL) {
			rc = cs_fail(-ENOMEM, "out of memory reading %s", w->disk);
		} else {
			for (size_t i = 0; i < f->n; i++)
				f->sorted[i] = f->names + offs[i];
			qsort(f->sorted, f->n, sizeof(*f->sorted), name_order);
		}
	}
	free(offs);
	return rc;
}

/* Pushes the directory open on fd (owned from here on) whose paths are in w->disk/w->show. */
static int walk_push(struct walker *w, int fd)
{
	int rc;

	if (w->depth == UFS_DIR_DEPTH_MAX) {
		close(fd);
		return cs_fail(CS_ELIMIT, "%s lies deeper than %u directory levels", w->disk,
		               UFS_DIR_DEPTH_MAX);
	}
	struct wdir *f = &w->st[w->depth++]; /* invariant 4 */
	*f = (struct wdir){.fd = fd, .disk_len = strlen(w->disk), .show_len = strlen(w->show)};
	if ((rc = read_dir(w, f)) < 0)
		return rc;
	if (!w->scan && (rc = ufs_dir_new(&w->p, store_emit, w->s, &f->ud)) < 0)
		return rc;
	return 0;
}

static void walk_pop(struct walker *w)
{
	struct wdir *f = &w->st[--w->depth];

	close(f->fd);
	free(f->names);
	free(f->sorted);
	ufs_dir_free(f->ud);
}

static int report(struct walker *w, int type, const cs_cid *cid, uint64_t size)
{
	if (w->scan || w->cb == NULL || w->cb->entry == NULL)
		return 0;
	cs_add_entry e = {.path = w->show, .type = type, .cid = *cid, .size = size};
	return w->cb->entry(w->cb->ctx, &e);
}

/* Adds the regular file open on fd (w->disk names it) and sets its root, Tsize and size. */
static int add_file(struct walker *w, int fd, cs_cid *cid, uint64_t *tsize, uint64_t *size)
{
	int rc, retries = 0;

	ap_reset(w->pipe);
	ufs_builder_reset(w->b);
	for (;;) {
		ssize_t n = read(fd, w->buf, ADD_FD_BUF);
		if (n < 0) {
			if ((errno == EINTR || errno == EAGAIN) && ++retries <= 16)
				continue;
			return cs_fail(-errno, "cannot read %s: %s", w->disk, strerror(errno));
		}
		retries = 0;
		if (n == 0)
			break;
		if ((rc = ufs_builder_write(w->b, w->buf, (size_t)n)) < 0)
			return rc;
		w->done += (uint64_t)n;
		if (w->cb != NULL && w->cb->progress != NULL)
			w->cb->progress(w->cb->ctx, w->done, w->total);
	}
	if ((rc = ufs_builder_finish(w->b, cid, size)) < 0)
		return rc;
	*tsize = ufs_builder_tsize(w->b);
	return 0;
}

/* Handles entry `name` of directory f (paths already set): checks it in the scan, adds it to
 * f's node in the add pass; a directory is pushed instead. */
static int walk_entry(struct walker *w, struct wdir *f, const char *name)
{
	struct stat st;
	cs_cid cid;
	uint64_t tsize, size;
	int rc, fd;

	if (fstatat(f->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return cs_fail(-errno, "cannot stat %s: %s", w->disk, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		fd = openat(f->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return cs_fail(-errno, "cannot open directory %s: %s", w->disk,
			               strerror(errno));
		return walk_push(w, fd);
	}
	if (S_ISLNK(st.st_mode)) {
		uint8_t target[UFS_SYMLINK_MAX + 1];
		ssize_t n = readlinkat(f->fd, name, (char *)target, sizeof(target));
		if (n < 0)
			return cs_fail(-errno, "cannot read symlink %s: %s", w->disk,
			               strerror(errno));
		if ((size_t)n > UFS_SYMLINK_MAX)
			return cs_fail(CS_ELIMIT, "symlink %s: target longer than %u bytes",
			               w->disk, UFS_SYMLINK_MAX);
		if (w->scan)
			return 0;
		if ((rc = ufs_symlink(&w->p, store_emit, w->s, target, (size_t)n, &cid, &tsize)) <
		        0 ||
		    (rc = ufs_dir_add(f->ud, (const uint8_t *)name, strlen(name), &cid, tsize)) < 0)
			return rc;
		return report(w, CS_ENTRY_SYMLINK, &cid, (uint64_t)n);
	}
	if (!S_ISREG(st.st_mode))
		return cs_fail(CS_EINVAL,
		               "%s is a %s: only regular files, directories and symlinks can be "
		               "added",
		               w->disk, type_name(st.st_mode));
	if (w->scan) {
		if (faccessat(f->fd, name, R_OK, AT_EACCESS) < 0)
			return cs_fail(-errno, "cannot read %s: %s", w->disk, strerror(errno));
		w->total += (uint64_t)st.st_size;
		return 0;
	}
	/* O_NONBLOCK: should the file have become a FIFO since the stat, the open must not
	 * wait for a writer; fstat then refuses it. */
	fd = openat(f->fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return cs_fail(-errno, "cannot open %s: %s", w->disk, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return cs_fail(CS_EINVAL,
		               "%s changed into something other than a file while it "
		               "was added",
		               w->disk);
	}
	rc = add_file(w, fd, &cid, &tsize, &size);
	close(fd);
	if (rc < 0 ||
	    (rc = ufs_dir_add(f->ud, (const uint8_t *)name, strlen(name), &cid, tsize)) < 0)
		return rc;
	f->bytes += size;
	return report(w, CS_ENTRY_FILE, &cid, size);
}

/* One pass over the tree whose root directory is open on top_fd (borrowed). In the add pass,
 * sets *root and *size; the scan only checks and sums w->total. */
static int walk_tree(struct walker *w, int top_fd, cs_cid *root, uint64_t *size)
{
	int rc, fd = dup(top_fd);

	if (fd < 0)
		return cs_fail(-errno, "dup: %s", strerror(errno));
	if ((rc = walk_push(w, fd)) < 0)
		goto out;
	while (w->depth > 0) {
		struct wdir *f = &w->st[w->depth - 1];

		if (f->next < f->n) {
			const char *name = f->sorted[f->next++]; /* invariant 4: one entry */
			walk_path(w, f, name);
			if ((rc = walk_entry(w, f, name)) != 0)
				goto out;
			continue;
		}
		/* The directory is complete (invariant 4: one pop). Its paths name it again. */
		w->disk[f->disk_len] = '\0';
		w->show[f->show_len] = '\0';
		cs_cid cid = {0};
		uint64_t tsize = 0, bytes = f->bytes;
		if (!w->scan && ((rc = ufs_dir_finish(f->ud, &cid, &tsize)) < 0 ||
		                 (rc = report(w, CS_ENTRY_DIR, &cid, bytes)) != 0))
			goto out;
		walk_pop(w);
		if (w->depth == 0) {
			*root = cid;
			*size = bytes;
			break;
		}
		struct wdir *up = &w->st[w->depth - 1];
		const char *name = up->sorted[up->next - 1];
		up->bytes += bytes;
		if (!w->scan && (rc = ufs_dir_add(up->ud, (const uint8_t *)name, strlen(name), &cid,
		                                  tsize)) < 0)
			goto out;
	}
out:
	while (w->depth > 0)
		walk_pop(w);
	return rc;
}

/* Writes the base name of path into out (cap bytes): its last component, trailing slashes
 * dropped; for ".", ".." and the like, the last component of its real path. */
static int base_name(const char *path, char *out, size_t cap)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	size_t b = n;
	while (b > 0 && path[b - 1] != '/')
		b--;
	size_t bl = n - b;
	if (bl == 0 || (bl == 1 && path[b] == '.') ||
	    (bl == 2 && path[b] == '.' && path[b + 1] == '.')) {
		char *real = realpath(path, NULL);
		if (real == NULL)
			return cs_fail(-errno, "cannot resolve %s: %s", path, strerror(errno));
		int rc = base_name(strcmp(real, "/") == 0 ? "/" : real, out, cap);
		free(real);
		return rc;
	}
	if (bl >= cap)
		return cs_fail(CS_ELIMIT, "the base name of %s is longer than %zu bytes", path,
		               cap - 1);
	memcpy(out, path + b, bl);
	out[bl] = '\0';
	return 0;
}

CS_API int cs_add_path(cs_store *s, const cs_add_options *o, const char *path, unsigned flags,
                       const cs_add_callbacks *cb, cs_cid *root, uint64_t *size)
{
	struct walker w = {.s = s, .cb = cb};
	struct store_hold hold; /* gc.c, E1: what the add writes stays until it returns */
	struct add_name name;
	struct stat st;
	cs_cid r;
	uint64_t n = 0, tsize;
	unsigned threads;
	int rc, fd = -1, held = 0;

	cs_clear_error();
	if (s == NULL || path == NULL || root == NULL)
		return cs_fail(CS_EINVAL, "store, path or root is NULL");
	if (flags & ~(unsigned)CS_ADD_RECURSIVE)
		return cs_fail(CS_EINVAL, "unknown flags 0x%x", flags);
	if ((rc = params_of(o, &w.p)) < 0 || (rc = threads_of(o, &threads)) < 0 ||
	    (rc = name_of(o, &name)) < 0)
		return rc;
	/* Room for the caller's path (or the base name) and UFS_DIR_DEPTH_MAX names below. */
	size_t plen = strlen(path), room = (UFS_DIR_DEPTH_MAX + 1) * (UFS_NAME_MAX + 1) + 1;
	w.disk = malloc(plen + room);
	w.show = malloc(PATH_MAX + room);
	w.st = calloc(UFS_DIR_DEPTH_MAX, sizeof(*w.st));
	if (w.disk == NULL || w.show == NULL || w.st == NULL) {
		rc = cs_fail(-ENOMEM, "out of memory for an add");
		goto out;
	}
	memcpy(w.disk, path, plen + 1);
	while (plen > 1 && w.disk[plen - 1] == '/')
		w.disk[--plen] = '\0'; /* "dir/" + "/name" would double the slash */
	if ((rc = base_name(path, w.show, PATH_MAX)) < 0)
		goto out;
	/* O_NONBLOCK: a FIFO given as path must be refused, not waited on. */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = cs_fail(-errno, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode) && !(flags & CS_ADD_RECURSIVE)) {
		rc = cs_fail(CS_EINVAL, "%s is a directory, and a recursive add was not asked for",
		             path);
		goto out;
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		rc = cs_fail(CS_EINVAL,
		             "%s is a %s: only regular files and directories can be added", path,
		             type_name(st.st_mode));
		goto out;
	}
	w.buf = malloc(ADD_FD_BUF); /* invariant 3 */
	if (w.buf == NULL) {
		rc = cs_fail(-ENOMEM, "out of memory for a read buffer");
		goto out;
	}
	if ((rc = builder_new(s, &w.p, threads, &w.b, &w.pipe)) < 0)
		goto out;
	store_hold_begin(s, &hold);
	held = 1;
	if (S_ISREG(st.st_mode)) {
		w.total = (uint64_t)st.st_size;
		if ((rc = add_file(&w, fd, &r, &tsize, &n)) < 0 ||
		    (rc = report(&w, CS_ENTRY_FILE, &r, n)) != 0)
			goto out;
	} else {
		w.scan = true; /* invariant 5 */
		if ((rc = walk_tree(&w, fd, &r, &n)) < 0)
			goto out;
		w.scan = false;
		if ((rc = walk_tree(&w, fd, &r, &n)) != 0)
			goto out;
	}
	if ((rc = cs_store_sync(s)) < 0 || /* invariant 1 */
	    (rc = set_name(s, &name, &r, n)) < 0) /* invariant 6: before the hold ends */
		goto out;
	*root = r;
	if (size != NULL)
		*size = n;
out:
	if (held)
		store_hold_end(s, &hold);
	if (fd >= 0)
		close(fd);
	ap_free(w.pipe);
	ufs_builder_free(w.b);
	free(w.buf);
	free(w.st);
	free(w.disk);
	free(w.show);
	return rc;
}
