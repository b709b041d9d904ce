/*
 * ckpt.c - checkpoints: write the tables while writers keep running, load them at open.
 *
 * A checkpoint lets open skip the log it covers: it holds the block index, the pins, the
 * names and the last GC's figures (docs/FORMAT.md section 12), and names the log position
 * replay resumes at. Writing one:
 *
 *   start mark ──> copy the tables in pieces ──> end mark ──> sync the log ──> write, sync,
 *   (C1)           (read lock per piece)         (C1)         (C3)             rename, sync dir
 *
 * Invariants:
 *   C1. Marks are taken with ckpt_lock held exclusively. Every mutation holds it shared from
 *       before its append to after its table update, so at a mark every record appended so
 *       far is in the tables, and none that is in the tables is missing from the log.
 *   C2. The copy is fuzzy: for each key it holds the key's state after the log up to some
 *       point between the two marks, since writers change the tables between pieces. That
 *       is enough, because replay from the start mark re-applies every record after it, in
 *       log order, and every record type's effect does not depend on the state it is applied
 *       to beyond what it replaces: a put, name set or pin add replaces the key's value, a
 *       delete removes it or finds it absent. A key no record after the start touches has
 *       the value it had at the start, which the copy holds (C1). So the tables after
 *       replay are those a full replay builds (S1, S5 of store.c; P1..P3 of pin.c).
 *   C3. Every record before the end mark is durable before the file is renamed into place,
 *       and every copied entry points before the end mark (it was in the tables before the
 *       end mark was taken, and appended before that: S2). So the log a later open finds
 *       holds every record the checkpoint points at, unless the disk lost synced data; that
 *       replay detects (the record before the end mark must be where the file says, with
 *       its checksum; rec_replay) and then falls back to a full replay.
 *   C4. A checkpoint that cannot be used is never half used: any refusal drops the tables
 *       and replays the whole log, with a warning through opts.log.
 *   C5. The block index is not copied: its leaves are the BLOCKS leaves of the file mapping
 *       (K5 of checkpoint.c), which the tree adopts where they lie (idx_adopt_begin()) and
 *       owns from then on, so that an open of a million blocks touches no fresh memory but
 *       the inner nodes' (a copy made the kernel zero 53 MB of pages: most of the open). The
 *       pins, fewer, are decoded into fresh leaves. A large table loads in two parts at once
 *       (idx_adopt_part(), idx_load_part()), the second on a helper thread. The helper writes
 *       only its own leaves and its own load_ctx (sums and a live-bytes table of its own,
 *       never the store's), reads only the mapped file and the decoded struct ckpt, and is
 *       joined before anything it wrote is read; the main thread meanwhile hashes the whole
 *       section (K4 of checkpoint.c), so no entry is trusted before both the checksum and
 *       every entry's checks passed. Where no thread can be started the main thread loads
 *       both parts. While the tree holds the file's pages the file must not be cut: the
 *       replaced checkpoint is then left whole (C6) and freed when the store closes.
 *   C6. The checkpoint a new one replaces is freed only after the directory sync made the
 *       rename durable, a step at a time (io_release of wal/io.h, for the log's syncs): an
 *       fd opened on it before the rename keeps its blocks until then. Cut earlier, a power
 *       cut that undid the rename would bring back a short file under the name.
 *
 * Counters derived from the tables (live_bytes, pins_recursive, the live bytes per segment of
 * compact.c's C1, which is why a name entry keeps its record's position) are recomputed from
 * the loaded entries; replay then keeps them up to date as it does from an empty store. The
 * dropped ranges (compact.c's C4) are copied at the start mark: compaction adds one under
 * ckpt_lock, with the append of the record that states it, and replay from the start needs
 * those stated before it (FORMAT.md 12.3).
 *
 * The file is created, written, synced and renamed, and the directory synced, through the
 * store's checkpoint backend (s->ckpt_io, wal/io.h), never by plain syscalls: a test's
 * fault-injecting backend then sees, fails and cuts the power in each of those steps as it
 * does in the log's. Only the loader reads with plain syscalls (it maps the file), as recovery
 * does.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "btree.h"
#include "checkpoint.h"
#include "cid.h"
#include "err.h"
#include "io.h"
#include "names.h"
#include "store.h"

#define CKPT_STEP 4096 /* index entries copied per piece under the read lock */
#define NAME_STEP 256  /* names per piece */
#define CKPT_POLL_MS 100 /* how often the background thread looks at the log's size */

void (*ckpt_test_hook)(cs_store *s);
int ckpt_test_no_map;

static int fs_error(int e, const char *what)
{
	int code = e == ENOSPC || e == EDQUOT ? CS_EFULL : -e;
	return cs_fail(code, "checkpoint: %s: %s", what, strerror(e));
}

/* A backend call's -errno as fs_error() reports it. */
static int io_error(int rc, const char *what)
{
	return fs_error(-rc, what);
}

struct file_ctx {
	struct io *io; /* borrowed: s->ckpt_io */
	int fd;
};

/* The writer's ckpt_write_fn: the file's bytes go through the backend. */
static int write_file(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct file_ctx *f = ctx;
	return f->io->ops->write(f->io, f->fd, buf, len, off, 0);
}

/* ---- Writing ---------------------------------------------------------------------------- */

struct piece {
	uint8_t keys[CKPT_STEP][CS_KEY_MAX];
	struct idx_val vals[CKPT_STEP];
};

/* Copies table t (s->idx or s->pins) into the writer in pieces, holding the read lock only
 * while a piece is copied out (C2). */
static void put_table(cs_store *s, struct idx *t, struct piece *p, struct ckpt_writer *w)
{
	uint8_t last[CS_KEY_MAX];
	const uint8_t *after = NULL;
	unsigned pace = 0;
	int n;

	/* Bounded: each piece starts strictly after the last key of the one before. */
	do {
		store_pace(&pace, 1); /* a fresh time slice for the hold that follows */
		pthread_rwlock_rdlock(&s->lock);
		n = idx_next_n(t, after, p->keys, p->vals, CKPT_STEP);
		pthread_rwlock_unlock(&s->lock);
		for (int i = 0; i < n; i++)
			ckpt_put_entry(w, p->keys[i], &p->vals[i]);
		if (n > 0) {
			memcpy(last, p->keys[n - 1], CS_KEY_MAX);
			after = last;
		}
	} while (n == CKPT_STEP);
}

static int put_names(cs_store *s, struct ckpt_writer *w)
{
	struct name_entry *p = malloc(NAME_STEP * sizeof(*p));
	uint8_t last[CS_NAME_MAX];
	size_t last_len = 0;
	int n, first = 1;

	if (p == NULL)
		return cs_fail(-ENOMEM, "checkpoint: no memory to copy the names");
	do { /* bounded as put_table */
		pthread_rwlock_rdlock(&s->lock);
		n = names_next(s->names, first ? NULL : last, last_len, p, NAME_STEP);
		pthread_rwlock_unlock(&s->lock);
		for (int i = 0; i < n; i++) {
			struct ckpt_name cn = {(const uint8_t *)p[i].name, p[i].len,
			                       p[i].v.root.bytes, p[i].v.root.len, p[i].v.size,
			                       p[i].v.time_ns, p[i].v.seg, p[i].v.off};
			ckpt_put_name(w, &cn);
		}
		if (n > 0) {
			last_len = p[n - 1].len;
			memcpy(last, p[n - 1].name, last_len);
			first = 0;
		}
	} while (n == NAME_STEP);
	free(p);
	return 0;
}

/* Takes a mark (C1); for the start mark (segs not NULL) also copies the dropped ranges,
 * which compaction changes under ckpt_lock too. Errors: -ENOMEM. */
static int mark(cs_store *s, struct wal_mark *m, struct wal_seg_info *segs, uint32_t *nsegs,
                struct rec_drops *drops)
{
	int rc = 0;

	pthread_rwlock_wrlock(&s->ckpt_lock); /* C1 */
	wal_mark(s->wal, m, segs, segs != NULL ? CS_SEGMENTS_MAX : 0, nsegs);
	for (uint32_t i = 0; drops != NULL && rc == 0 && i < s->drops.n; i++)
		rc = rec_drops_add(drops, &s->drops.v[i]);
	pthread_rwlock_unlock(&s->ckpt_lock);
	return rc;
}

/* Writes the sections to the file f. */
static int write_sections(cs_store *s, struct file_ctx *f, const struct wal_seg_info *segs,
                          uint32_t nsegs, const struct rec_drops *drops, struct ckpt_hdr *h,
                          struct wal_mark *end)
{
	struct ckpt_writer w;
	struct piece *p = malloc(sizeof(*p));
	cs_gc_stat gc;
	int64_t gc_time;
	uint32_t unused;
	int rc;

	if (p == NULL || (rc = ckpt_write_begin(&w, write_file, f)) != 0) {
		free(p);
		return cs_fail(-ENOMEM, "checkpoint: no memory for the copy's buffers");
	}
	ckpt_section_begin(&w, CKPT_SEC_SEGMENTS);
	for (uint32_t i = 0; i < nsegs; i++) {
		struct ckpt_seg g = {segs[i].id, segs[i].end, segs[i].first_seq};
		ckpt_put_seg(&w, &g);
	}
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_BLOCKS);
	put_table(s, s->idx, p, &w);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_PINS);
	put_table(s, s->pins, p, &w);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_NAMES);
	rc = put_names(s, &w);
	ckpt_section_end(&w);
	pthread_mutex_lock(&s->life_mu);
	gc = s->last_gc;
	gc_time = s->last_gc_time_ns;
	pthread_mutex_unlock(&s->life_mu);
	ckpt_section_begin(&w, CKPT_SEC_STATS);
	ckpt_put_stats(&w, &gc, gc_time);
	ckpt_section_end(&w);
	ckpt_section_begin(&w, CKPT_SEC_DROPS);
	for (uint32_t i = 0; i < drops->n; i++)
		ckpt_put_drop(&w, &drops->v[i]);
	ckpt_section_end(&w);
	free(p);
	if (rc != 0) {
		ckpt_write_abort(&w);
		return rc;
	}
	(void)mark(s, end, NULL, &unused, NULL); /* C3: every copied entry lies before it */
	if (end->next_seq > 1 && end->last_seq != end->next_seq - 1) {
		ckpt_write_abort(&w);
		return cs_fail(CS_EBUSY, "checkpoint: the log's record %llu was lost to salvage; a "
		                         "checkpoint can be taken after the next write",
		               (unsigned long long)(end->next_seq - 1));
	}
	h->end_seg = end->tail.seg;
	h->end_off = end->tail.off;
	h->end_seq = end->next_seq;
	if (end->next_seq > 1) {
		h->last_seg = end->last.seg;
		h->last_off = end->last.off;
		h->last_sum = end->last_sum;
	}
	/* C3: the log up to the end mark is durable before the file can be found. */
	if ((rc = wal_sync(s->wal)) != 0) {
		ckpt_write_abort(&w);
		return rc;
	}
	return ckpt_write_finish(&w, h);
}

int ckpt_take(cs_store *s, enum ckpt_mode mode)
{
	struct wal_seg_info *segs = malloc(CS_SEGMENTS_MAX * sizeof(*segs));
	struct wal_mark start, end;
	struct rec_drops drops = {0};
	struct wal_stat ws;
	struct io *io = s->ckpt_io;
	struct file_ctx f = {io, -1};
	uint32_t nsegs;
	int rc = 0, dirfd = s->dir.dirfd, tmp_made = 0, old_fd = -1;

	if (segs == NULL)
		return cs_fail(-ENOMEM, "checkpoint: no memory for the segment list");
	pthread_mutex_lock(&s->ckpt_mu);
	wal_stat(s->wal, &ws);
	if (mode == CKPT_DUE && (s->opts.checkpoint_bytes == 0 ||
	                         ws.log_bytes < s->ckpt_log_bytes + s->opts.checkpoint_bytes))
		goto out;
	if ((rc = mark(s, &start, segs, &nsegs, &drops)) != 0) {
		rc = cs_fail(rc, "checkpoint: out of memory for the dropped ranges");
		goto out;
	}
	if (ckpt_test_hook != NULL)
		ckpt_test_hook(s);
	if (mode == CKPT_CHANGED && start.next_seq == atomic_load(&s->ckpt_seq))
		goto out; /* the checkpoint on disk covers the whole log */
	struct ckpt_hdr h = {
	    .store_uid = s->dir.uid,
	    .created_ns = store_realtime_ns(),
	    .start_seg = start.tail.seg,
	    .start_off = start.tail.off,
	    .start_seq = start.next_seq,
	    /* P6 of replay.c: a later torn tail in this segment is kept, as a full replay
	     * would keep it. */
	    .flags = start.tail.seg == s->rec.salvage_seg ? CKPT_F_SALVAGED : 0,
	};
	rc = io->ops->create(io, dirfd, CKPT_TMP_FILE, 0, &f.fd);
	if (rc == -EEXIST) {
		/* Left by a failed checkpoint whose removal failed too; never read. */
		rc = io->ops->remove(io, dirfd, CKPT_TMP_FILE);
		if (rc == 0)
			rc = io->ops->create(io, dirfd, CKPT_TMP_FILE, 0, &f.fd);
	}
	if (rc != 0) {
		f.fd = -1;
		rc = io_error(rc, "creating " CKPT_TMP_FILE);
		goto out;
	}
	tmp_made = 1;
	if ((rc = write_sections(s, &f, segs, nsegs, &drops, &h, &end)) != 0)
		goto out;
	if ((rc = io->ops->sync(io, f.fd)) != 0) {
		rc = io_error(rc, "fdatasync of " CKPT_TMP_FILE);
		goto out;
	}
	close(f.fd);
	f.fd = -1;
	/* C6: the checkpoint the rename replaces is freed through this fd once it is durably
	 * gone; -1 when there is none (or it cannot be opened: then the rename frees it). */
	old_fd = openat(dirfd, CKPT_FILE, O_RDWR | O_CLOEXEC);
	if ((rc = io->ops->rename(io, dirfd, CKPT_TMP_FILE, CKPT_FILE)) != 0) {
		rc = io_error(rc, "renaming " CKPT_TMP_FILE);
		goto out;
	}
	tmp_made = 0;
	/* On failure the new file may stay in place: it is whole and synced, and the log it
	 * points into was durable before the rename (C3), so an open may use it. */
	if ((rc = io->ops->sync_dir(io, dirfd)) != 0) {
		rc = io_error(rc, "fsync of the store directory");
		goto out;
	}
	/* C6; but a file whose pages the block index still uses is left whole until it closes
	 * (C5): cut, its pages would vanish under the tree. */
	if (old_fd >= 0 && !s->ckpt_in_use)
		io_release(old_fd);
	else if (old_fd >= 0)
		close(old_fd);
	s->ckpt_in_use = 0; /* the name is the new file's now */
	old_fd = -1;
	wal_stat(s->wal, &ws);
	s->ckpt_log_bytes = ws.log_bytes;
	atomic_store(&s->ckpt_seq, h.start_seq);
	atomic_store(&s->ckpt_time_ns, h.created_ns);
out:
	if (f.fd >= 0)
		close(f.fd);
	if (old_fd >= 0)
		close(old_fd); /* the replaced file may come back: its blocks stay as they are */
	if (tmp_made) {
		/* The last checkpoint stays as it was. Best effort, and not made durable: open
		 * removes a checkpoint.tmp it finds, unread. */
		(void)io->ops->remove(io, dirfd, CKPT_TMP_FILE);
	}
	pthread_mutex_unlock(&s->ckpt_mu);
	rec_drops_free(&drops);
	free(segs);
	return rc;
}

CS_API int cs_checkpoint(cs_store *s)
{
	cs_clear_error();
	return ckpt_take(s, CKPT_FORCE);
}

/* ---- The background thread ---------------------------------------------------------------- */

static void *ckpt_main(void *arg)
{
	cs_store *s = arg;
	struct timespec ts;

	pthread_mutex_lock(&s->ckpt_wait_mu);
	while (!s->ckpt_quit) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += CKPT_POLL_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->ckpt_cv, &s->ckpt_wait_mu, &ts);
		if (s->ckpt_quit)
			break;
		pthread_mutex_unlock(&s->ckpt_wait_mu);
		int rc = ckpt_take(s, CKPT_DUE);
		if (rc != 0) {
			/* Tried again after another checkpoint_bytes of log, not at every poll. */
			struct wal_stat ws;
			wal_stat(s->wal, &ws);
			pthread_mutex_lock(&s->ckpt_mu);
			s->ckpt_log_bytes = ws.log_bytes;
			pthread_mutex_unlock(&s->ckpt_mu);
			if (s->opts.log != NULL) {
				char msg[400];
				snprintf(msg, sizeof(msg), "background checkpoint failed: %s: %s",
				         cs_strerror(rc), cs_errmsg());
				s->opts.log(s->opts.log_ctx, CS_LOG_WARN, msg);
			}
		}
		pthread_mutex_lock(&s->ckpt_wait_mu);
	}
	pthread_mutex_unlock(&s->ckpt_wait_mu);
	return NULL;
}

int ckpt_start(cs_store *s)
{
	if (s->opts.checkpoint_bytes == 0)
		return 0;
	int rc = pthread_create(&s->ckpt_thread, NULL, ckpt_main, s);
	if (rc != 0)
		return cs_fail(-rc, "cannot start the checkpoint thread: %s", strerror(rc));
	s->ckpt_thread_on = 1;
	return 0;
}

void ckpt_stop(cs_store *s)
{
	if (!s->ckpt_thread_on)
		return;
	pthread_mutex_lock(&s->ckpt_wait_mu);
	s->ckpt_quit = 1;
	pthread_cond_signal(&s->ckpt_cv);
	pthread_mutex_unlock(&s->ckpt_wait_mu);
	pthread_join(s->ckpt_thread, NULL);
	s->ckpt_thread_on = 0;
}

/* ---- Loading ------------------------------------------------------------------------------ */

int ckpt_clean(cs_store *s)
{
	struct io *io = s->ckpt_io;
	int rc;

	/* A look first, a read like the loader's: no backend call when there is nothing to
	 * remove, which is every open but one after a crash. */
	if (faccessat(s->dir.dirfd, CKPT_TMP_FILE, F_OK, 0) != 0)
		return errno == ENOENT ? 0 : fs_error(errno, "looking for " CKPT_TMP_FILE);
	if ((rc = io->ops->remove(io, s->dir.dirfd, CKPT_TMP_FILE)) != 0)
		return rc == -ENOENT ? 0 : io_error(rc, "removing " CKPT_TMP_FILE);
	if ((rc = io->ops->sync_dir(io, s->dir.dirfd)) != 0)
		return io_error(rc, "fsync of the store directory");
	if (s->opts.log != NULL)
		s->opts.log(s->opts.log_ctx, CS_LOG_INFO,
		            "removed " CKPT_TMP_FILE ", left by a crash while a checkpoint was "
		            "written");
	return 0;
}

/* The checkpoint file, whole, in a private writable mapping: of the file (map_file), or
 * where the kernel cannot prefault a mapping, anonymous memory it was read into. Its BLOCKS
 * leaves may be given to the block index (C5): the tree then owns those pages, and
 * file_buf_free() unmaps only the rest. */
struct file_buf {
	uint8_t *p;
	size_t len;
	uint8_t *given; /* NULL, or the first of given_len bytes that the tree owns */
	size_t given_len;
};

static void unmap_range(uint8_t *from, uint8_t *to)
{
	if (to > from)
		munmap(from, (size_t)(to - from));
}

static void file_buf_free(struct file_buf *b)
{
	if (b->p == NULL)
		return;
	if (b->given == NULL) {
		munmap(b->p, b->len);
	} else { /* whole pages: the leaves start on one (K5 of checkpoint.c, blocks_begin) */
		unmap_range(b->p, b->given);
		unmap_range(b->given + b->given_len, b->p + b->len);
	}
	b->p = NULL;
}

/* Reads len bytes of fd into fresh memory (the fallback of map_file). */
static int read_whole(int fd, struct file_buf *b)
{
	uint8_t *p = mmap(NULL, b->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return cs_fail(-ENOMEM, "checkpoint: no memory for its %zu bytes", b->len);
	/* Bounded: each pass reads at least one byte, or counts a retry, or ends. */
	for (size_t got = 0, retries = 0; got < b->len;) {
		ssize_t n = pread(fd, p + got, b->len - got, (off_t)got);
		if (n > 0) {
			got += (size_t)n;
		} else if (n < 0 && errno == EINTR && ++retries < CS_IO_RETRIES) {
			continue;
		} else {
			int rc = n == 0 ? cs_fail(CS_ECORRUPT, "checkpoint: the file shrank while read")
			                : fs_error(errno, "read");
			munmap(p, b->len);
			return rc;
		}
	}
	b->p = p;
	return 0;
}

/* Makes the whole file readable and writable (privately) at b->p; the caller frees it with
 * file_buf_free.
 *
 * Mapped, not read: reading 50 MB (a million blocks) into fresh memory makes the kernel find,
 * fault in and zero 50 MB of pages and then copy the file into them, 50 to 110 ms on a host
 * that hands freed pages back to its hypervisor; a mapping uses the page cache's pages as
 * they are (7 to 12 ms), and the block index then keeps its leaves there (C5). The mapping is
 * private: a page the tree writes is copied first, and the file never changes.
 * MADV_POPULATE_READ reads every page in before the decoder looks at one, and reports a
 * failing disk as an error (EFAULT or EIO, where an access would have raised SIGBUS), so that
 * damage still falls back to a full replay. Kernels before 5.14 lack the advice (EINVAL):
 * there the file is read. Once loaded, the leaves stay mapped for the store's life: a page
 * the kernel reclaims is read again from the file, and a disk that fails that read raises
 * SIGBUS, as in any program that maps its data (LMDB). */
static int map_file(int dirfd, struct file_buf *b)
{
	struct stat st;
	int fd = openat(dirfd, CKPT_FILE, O_RDONLY | O_CLOEXEC);
	int rc = 0;

	*b = (struct file_buf){0};
	if (fd < 0)
		return errno == ENOENT ? CS_ENOTFOUND : fs_error(errno, "open");
	if (fstat(fd, &st) != 0) {
		rc = fs_error(errno, "stat");
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SIZE_MAX / 2) {
		rc = cs_fail(CS_ECORRUPT, "checkpoint: not a regular file of a sane size");
		goto out;
	}
	b->len = (size_t)st.st_size;
	if (b->len < CKPT_HEADER) { /* the decoder refuses it; nothing to map */
		rc = cs_fail(CS_ECORRUPT, "checkpoint: file of %zu bytes is shorter than its header",
		             b->len);
		goto out;
	}
	if (ckpt_test_no_map) {
		rc = read_whole(fd, b);
		goto out;
	}
	void *p = mmap(NULL, b->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED) {
		rc = fs_error(errno, "mmap");
		goto out;
	}
	if (madvise(p, b->len, MADV_POPULATE_READ) != 0) {
		int e = errno;
		munmap(p, b->len);
		if (e == EINVAL)
			rc = read_whole(fd, b);
		else
			rc = fs_error(e == EFAULT ? EIO : e, "reading it in");
		goto out;
	}
	b->p = p;
out:
	close(fd);
	return rc;
}

/* A table of at least this many entries loads in two parts, on two threads (C5): below it the
 * thread's start (tens of microseconds) would be a fair share of the load. */
#define CKPT_LOAD_SPLIT 65536u
/* The main thread's share of the leaves, in percent: besides its part it hashes the whole
 * table for the checksum (K4 of checkpoint.c). Pins are decoded into fresh leaves, about four
 * times what hashing them costs; blocks are only checked where they lie, which costs less
 * than hashing them, so the helper checks them all. */
#define CKPT_PINS_SHARE0 40u
#define CKPT_BLOCKS_SHARE0 0u

struct load_ctx {
	cs_store *s;
	const struct ckpt *c;
	int pins; /* loading the pin table */
	struct ckpt_cursor k; /* pins: the part's entries */
	struct ckpt_seg_memo memo; /* blocks: for ckpt_leaf_check() */
	/* The live bytes of the entries since the last change of segment, not yet added to
	 * the live-bytes table (C1 of compact.c): added once per run of one segment rather than
	 * once per entry, each add being a binary search of the table. */
	uint32_t live_seg;
	int64_t live_run;
	/* The table they go to: the store's (live NULL), or, for a helper thread, one of its own
	 * in the same form (id order, nlive slots), added to the store's once it joined: C5. */
	struct seg_live *live;
	uint32_t nlive;
	uint64_t live_bytes, pins_recursive; /* added to the store's once the load ends */
	/* A helper thread's part of the load, its result and (on failure) message. */
	struct idx_load *ld;
	int rc;
	char msg[256];
};

static void live_flush(struct load_ctx *l)
{
	if (l->live_run > 0 && l->live != NULL)
		seg_live_add(l->live, &l->nlive, l->live_seg, l->live_run);
	else if (l->live_run > 0)
		store_live_add(l->s, l->live_seg, l->live_run);
	l->live_run = 0;
}

/* Adds n entries of the table to l's figures and checks what the decoder cannot know: that
 * each key's hash is one the store writes. Returns the first entry that fails, or n. */
static unsigned account(struct load_ctx *l, unsigned n, const uint8_t (*keys)[CS_KEY_MAX],
                        const struct idx_val *vals)
{
	for (unsigned j = 0; j < n; j++) {
		const uint8_t *key = keys[j];
		const struct idx_val *v = &vals[j];
		int64_t bytes;
		if (cid_hash_len((uint64_t)key[0] << 8 | key[1]) != CS_DIGEST_MAX)
			return j;
		if (l->pins) {
			l->pins_recursive += (v->len & 0xff) == CS_PIN_RECURSIVE;
			bytes = pin_bytes(key, v);
		} else {
			l->live_bytes += v->len;
			bytes = store_block_bytes(v->len);
		}
		if (v->seg != l->live_seg) {
			live_flush(l);
			l->live_seg = v->seg;
		}
		l->live_run += bytes;
	}
	return n;
}

/* idx_load's fill callback for pins: decodes and checks entries i .. i + n - 1 straight into
 * a leaf (K2, K4 of checkpoint.c). idx_load checks that the keys increase. */
static int pins_run(void *ctx, size_t i, unsigned n, uint8_t (*keys)[CS_KEY_MAX],
                    struct idx_val *vals)
{
	struct load_ctx *l = ctx;
	int rc = ckpt_cursor_get(&l->k, i, n, keys, vals);

	if (rc != 0)
		return rc;
	unsigned bad = account(l, n, (const uint8_t (*)[CS_KEY_MAX])keys, vals);
	if (bad < n)
		return cs_fail(CS_ECORRUPT, "checkpoint: pin entry %zu has a hash the store never "
		                            "writes",
		               i + bad);
	return 0;
}

/* idx_adopt_part's check for blocks: leaf j of BLOCKS, its header, fill and key order
 * checked already (K2 of checkpoint.c). */
static int blocks_run(void *ctx, size_t j, unsigned n, const uint8_t (*keys)[CS_KEY_MAX],
                      const struct idx_val *vals)
{
	struct load_ctx *l = ctx;
	int rc = ckpt_leaf_check(l->c, j, n, vals, &l->memo);

	if (rc != 0)
		return rc;
	unsigned bad = account(l, n, keys, vals);
	if (bad < n)
		return cs_fail(CS_ECORRUPT, "checkpoint: blocks leaf %zu entry %u has a hash the "
		                            "store never writes",
		               j, bad);
	return 0;
}

/* Part p of the load l belongs to, on whichever thread. */
static int load_part(struct load_ctx *l, unsigned p)
{
	if (l->pins)
		return idx_load_part(l->ld, p, pins_run, l);
	return idx_adopt_part(l->ld, p, blocks_run, l);
}

/* A helper thread's part 1 of the load (C5). */
static void *load_helper(void *arg)
{
	struct load_ctx *l = arg;

	l->rc = load_part(l, 1);
	if (l->pins)
		l->rc = l->rc == 0 ? ckpt_cursor_end(&l->k) /* not the checksum's: checks nothing */
		                   : (ckpt_cursor_free(&l->k), l->rc);
	if (l->rc == 0)
		live_flush(l);
	else
		snprintf(l->msg, sizeof(l->msg), "%s", cs_errmsg()); /* the message is per thread */
	return NULL;
}

/* Plans the load of the pin table: its entries decoded into fresh leaves through a cursor per
 * part, the one from 0 checking the section's checksum (K4 of checkpoint.c). */
static int pins_begin(cs_store *s, const struct ckpt *c, unsigned parts, struct load_ctx l[2])
{
	size_t n = (size_t)c->sec[CKPT_SEC_PINS].count;
	int rc = idx_load_begin(s->pins, n, parts, CKPT_PINS_SHARE0, &l[0].ld);

	if (rc != 0)
		return rc;
	size_t mid = l[0].ld != NULL ? idx_load_part_first(l[0].ld, 1) : 0;
	if ((rc = ckpt_cursor_begin_at(&l[0].k, c, CKPT_SEC_PINS, 0, mid)) == 0 && parts == 2 &&
	    (rc = ckpt_cursor_begin_at(&l[1].k, c, CKPT_SEC_PINS, mid, n)) != 0)
		ckpt_cursor_free(&l[0].k);
	if (rc != 0)
		return idx_load_end(l[0].ld, rc);
	return 0;
}

/* Plans the load of the block index: the tree takes BLOCKS' leaves where they lie in the
 * mapping (file_buf), which gives them up (C5). */
static int blocks_begin(cs_store *s, const struct ckpt *c, unsigned parts, struct load_ctx l[2],
                        struct file_buf *fb)
{
	const struct ckpt_section *sec = &c->sec[CKPT_SEC_BLOCKS];
	long page = sysconf(_SC_PAGESIZE);

	if (sec->nleaves == 0)
		return 0;
	if (page != IDX_NODE_BYTES) /* the tree's pages must be whole leaves */
		return cs_fail(CS_EINVAL, "checkpoint: its leaves are used in place, which takes "
		                          "%u-byte pages, not %ld",
		               IDX_NODE_BYTES, page);
	fb->given = (uint8_t *)sec->leaves; /* the mapping is writable: file_buf */
	fb->given_len = sec->nleaves * IDX_NODE_BYTES;
	return idx_adopt_begin(s->idx, fb->given, sec->nleaves, (size_t)sec->count, parts,
	                       CKPT_BLOCKS_SHARE0, &l[0].ld);
}

/* Loads the BLOCKS (pins 0) or PINS table; its entries are trusted only once this returned 0,
 * the section's checksum checked after the last entry (K4 of checkpoint.c). A large table is
 * loaded in two parts, the second on a helper thread (C5). */
static int load_table(cs_store *s, const struct ckpt *c, int pins, struct file_buf *fb)
{
	int type = pins ? CKPT_SEC_PINS : CKPT_SEC_BLOCKS;
	unsigned parts = c->sec[type].count >= CKPT_LOAD_SPLIT ? 2 : 1;
	struct load_ctx l[2] = {{.s = s, .c = c, .pins = pins}, {.s = s, .c = c, .pins = pins}};
	pthread_t helper;
	int rc, helping = 0;

	rc = pins ? pins_begin(s, c, parts, l) : blocks_begin(s, c, parts, l, fb);
	if (rc != 0)
		return rc;
	if (l[0].ld == NULL) /* no entries, but a checksum to check all the same (K4) */
		return pins ? ckpt_cursor_end(&l[0].k) : ckpt_section_verify(c, type);
	if (parts == 2) {
		/* calloc leaves the table's untouched slots unbacked (as store_live_init's). */
		l[1].live = calloc(CS_SEGMENTS_MAX, sizeof(*l[1].live));
		l[1].ld = l[0].ld;
		if (l[1].live == NULL) {
			rc = -ENOMEM;
			if (pins)
				ckpt_cursor_free(&l[1].k);
		} else {
			helping = pthread_create(&helper, NULL, load_helper, &l[1]) == 0;
			if (!helping) /* no thread to be had: the main thread loads both parts */
				load_helper(&l[1]);
		}
	}
	if (rc == 0)
		rc = load_part(&l[0], 0);
	/* The checksum of the whole section, the helper's part too (K4): while it still runs. */
	if (pins)
		rc = rc == 0 ? ckpt_cursor_end(&l[0].k) : (ckpt_cursor_free(&l[0].k), rc);
	else if (rc == 0)
		rc = ckpt_section_verify(c, type);
	if (helping)
		pthread_join(helper, NULL); /* C5: its writes are visible from here on */
	if (rc == 0 && parts == 2 && l[1].rc != 0)
		rc = cs_fail(l[1].rc, "%s", l[1].msg);
	rc = idx_load_end(l[0].ld, rc);
	if (rc == 0) {
		live_flush(&l[0]);
		for (uint32_t i = 0; i < l[1].nlive; i++)
			store_live_add(s, l[1].live[i].id, (int64_t)l[1].live[i].bytes);
		s->live_bytes += l[0].live_bytes + l[1].live_bytes;
		s->pins_recursive += l[0].pins_recursive + l[1].pins_recursive;
	}
	free(l[1].live);
	return rc;
}

static int load_names(cs_store *s, const struct ckpt_section *sec)
{
	struct ckpt_name n;
	char why[96];
	size_t off = 0;

	/* Bounded: ckpt_decode() walked the same entries (K1). */
	for (uint64_t i = 0; i < sec->count; i++) {
		struct name_val v;
		off = ckpt_name_at(sec, off, &n);
		if (name_check(n.name, n.name_len, why, sizeof(why)) != 0)
			return cs_fail(CS_ECORRUPT, "checkpoint: name entry %llu: %s",
			               (unsigned long long)i, why);
		if (cs_cid_from_bytes(n.cid, n.cid_len, &v.root) != 0)
			return cs_fail(CS_ECORRUPT, "checkpoint: name entry %llu: bad root CID",
			               (unsigned long long)i);
		v.size = n.size;
		v.time_ns = n.time_ns;
		v.seg = n.seg;
		v.off = n.off;
		int rc = names_set(s->names, n.name, n.name_len, &v);
		if (rc == CS_ELIMIT)
			return cs_fail(CS_ECORRUPT, "checkpoint: more than %u names", CS_NAMES_MAX);
		if (rc < 0)
			return rc;
		store_live_add(s, v.seg, store_name_bytes(n.name_len, v.root.len));
	}
	return 0;
}

int ckpt_load(cs_store *s, struct rec_start *start, struct wal_seg_info **segs)
{
	struct rec_drops drops = {0};
	struct file_buf fb;
	struct ckpt c;
	int rc;

	*segs = NULL;
	if ((rc = map_file(s->dir.dirfd, &fb)) != 0)
		return rc;
	/* The tables' checksums are checked as they load (K4 of checkpoint.c); a mismatch fails
	 * the load after the fact, and the caller then drops the tables (C4). */
	if ((rc = ckpt_decode_lazy(fb.p, fb.len, &c)) != 0)
		goto out;
	if (c.h.store_uid != s->dir.uid) {
		rc = cs_fail(CS_ECORRUPT, "checkpoint: it belongs to another store (uid %016llx)",
		             (unsigned long long)c.h.store_uid);
		goto out;
	}
	if ((rc = load_table(s, &c, 0, &fb)) != 0 || (rc = load_table(s, &c, 1, &fb)) != 0 ||
	    (rc = load_names(s, &c.sec[CKPT_SEC_NAMES])) != 0)
		goto out;
	ckpt_stats(&c.sec[CKPT_SEC_STATS], &s->last_gc, &s->last_gc_time_ns);
	const struct ckpt_section *sg = &c.sec[CKPT_SEC_SEGMENTS];
	*segs = malloc((size_t)sg->count * sizeof(**segs));
	if (*segs == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < sg->count; i++) {
		struct ckpt_seg g;
		ckpt_seg_at(sg, i, &g);
		(*segs)[i] = (struct wal_seg_info){g.id, g.end, g.first_seq, 0};
	}
	const struct ckpt_section *sd = &c.sec[CKPT_SEC_DROPS];
	for (size_t i = 0; i < sd->count; i++) {
		struct rec_drop d;
		ckpt_drop_at(sd, i, &d);
		if ((rc = rec_drops_add(&drops, &d)) != 0)
			goto out;
	}
	*start = (struct rec_start){
	    .pos = {c.h.start_seg, c.h.start_off},
	    .seq = c.h.start_seq,
	    .end_seq = c.h.end_seq,
	    .last = {c.h.last_seg, c.h.last_off},
	    .last_sum = c.h.last_sum,
	    .salvaged = (c.h.flags & CKPT_F_SALVAGED) != 0,
	    .segs = *segs,
	    .nsegs = (uint32_t)sg->count,
	    .drops = drops,
	};
	atomic_store(&s->ckpt_seq, c.h.start_seq);
	atomic_store(&s->ckpt_time_ns, c.h.created_ns);
	s->ckpt_in_use = fb.given != NULL;
out:
	file_buf_free(&fb);
	if (rc != 0) {
		rec_drops_free(&drops);
		free(*segs);
		*segs = NULL;
	}
	return rc;
}
