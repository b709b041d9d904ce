/*
 * io_uring.c - the io_uring write backend: a write and its fdatasync in one submission.
 *
 * The write SQE carries IOSQE_IO_LINK and is followed by an IORING_FSYNC_DATASYNC fsync, so
 * the kernel starts the sync only after the write completed in full, and one io_uring_enter
 * does both. Only the log writer thread uses the ring (io.h), so there is no locking.
 * Invariants:
 *   U1. write() returns 0 only when every byte was written and, with sync, the linked fsync
 *       completed with 0.
 *   U2. Every submitted SQE is reaped before write() or sync() returns, whatever the outcome:
 *       the kernel must never still hold the caller's buffer once we return.
 *   U3. A short write cancels the linked fsync (-ECANCELED): the remainder and the fsync are
 *       resubmitted. Short writes, -EINTR and -EAGAIN are retried at most CS_IO_RETRIES times
 *       per call; any other negative result is returned as is and never retried (a failed
 *       fsync is final: the kernel may have dropped the pages).
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "err.h"
#include "io.h"
#include "cs_limits.h"

struct uring_io {
	struct io io; /* first member: the backend is passed around as a struct io * */
	struct io_uring ring;
};

enum { UD_WRITE = 1, UD_FSYNC = 2 };

/* Submits the nr SQEs prepared on the ring. Returns 0, or -errno with *submitted set to the
 * number the kernel took (which the caller must still reap, U2). SQEs the kernel did not
 * take stay in the submission queue; that happens only on an error that poisons the log,
 * after which the writer makes no more calls on this backend before destroying it. */
static int submit_all(struct io_uring *ring, unsigned nr, unsigned *submitted)
{
	int tries = 0;

	*submitted = 0;
	while (*submitted < nr) {
		int rc = io_uring_submit(ring);
		if (rc > 0) {
			*submitted += (unsigned)rc;
			continue;
		}
		if ((rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != 0) ||
		    ++tries > CS_IO_RETRIES)
			return rc < 0 ? rc : -EIO;
	}
	return 0;
}

/* Waits for one completion and consumes it, giving its user_data and result. */
static void reap_one(struct io_uring *ring, uint64_t *ud, int *res)
{
	struct io_uring_cqe *cqe;
	int rc;

	/* Waiting is retried without bound (U2): the SQE is in the kernel's hands and will
	 * complete; returning before it does would free a buffer the kernel still reads. */
	do
		rc = io_uring_wait_cqe(ring, &cqe);
	while (rc == -EINTR || rc == -EAGAIN);
	CS_ASSERT(rc == 0);
	*ud = io_uring_cqe_get_data64(cqe);
	*res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
}

static int retryable(int res)
{
	return res == -EINTR || res == -EAGAIN;
}

static int uring_sync(struct io *io, int fd)
{
	struct uring_io *u = (struct uring_io *)io;

	for (int tries = 0;; tries++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
		uint64_t ud;
		unsigned sub;
		int res, rc;

		CS_ASSERT(sqe != NULL); /* U2: the ring is empty between calls */
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data64(sqe, UD_FSYNC);
		rc = submit_all(&u->ring, 1, &sub);
		if (rc < 0)
			return rc; /* sub == 0: nothing to reap */
		reap_one(&u->ring, &ud, &res);
		if (res == 0)
			return 0;
		if (!retryable(res) || tries >= CS_IO_RETRIES)
			return res;
	}
}

static int uring_write(struct io *io, int fd, const void *buf, size_t len, uint64_t off, int sync)
{
	struct uring_io *u = (struct uring_io *)io;
	const uint8_t *p = buf;
	size_t done = 0;
	int retries = 0;

	CS_ASSERT(len <= UINT32_MAX);
	while (done < len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
		unsigned nr = 1, sub;
		int wres = 0, fres = 0, rc;

		CS_ASSERT(sqe != NULL);
		io_uring_prep_write(sqe, fd, p + done, (unsigned)(len - done), off + done);
		io_uring_sqe_set_data64(sqe, UD_WRITE);
		if (sync) {
			sqe->flags |= IOSQE_IO_LINK;
			sqe = io_uring_get_sqe(&u->ring);
			CS_ASSERT(sqe != NULL); /* the ring has room for two (io_uring_backend) */
			io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
			io_uring_sqe_set_data64(sqe, UD_FSYNC);
			nr = 2;
		}
		rc = submit_all(&u->ring, nr, &sub);
		for (unsigned i = 0; i < sub; i++) {
			uint64_t ud;
			int res;

			reap_one(&u->ring, &ud, &res);
			if (ud == UD_WRITE)
				wres = res;
			else
				fres = res;
		}
		if (rc < 0)
			return rc;
		if (wres < 0 && !retryable(wres))
			return wres;
		if (wres > 0)
			done += (size_t)wres;
		if (done == len) {
			/* The write is whole. A linked fsync cancelled or interrupted for any
			 * reason other than a short write is redone alone; a real failure is
			 * final (U3). */
			if (!sync || fres == 0)
				return 0;
			if (fres == -ECANCELED || retryable(fres))
				return uring_sync(io, fd);
			return fres;
		}
		/* Short or interrupted write: the linked fsync was cancelled; go again (U3). */
		if (++retries > CS_IO_RETRIES)
			return wres < 0 ? wres : -EIO;
	}
	return sync ? uring_sync(io, fd) : 0; /* len == 0 */
}

/* Segment creation, directory syncs, removals and renames are rare: plain syscalls (psync.c)
 * serve. */
static int uring_create(struct io *io, int dirfd, const char *name, uint64_t capacity, int *fd)
{
	return io_plain_create(dirfd, name, capacity, fd);
}

static int uring_sync_dir(struct io *io, int dirfd)
{
	return io_plain_sync_dir(dirfd);
}

static int uring_remove(struct io *io, int dirfd, const char *name)
{
	return io_plain_remove(dirfd, name);
}

static int uring_rename(struct io *io, int dirfd, const char *from, const char *to)
{
	return io_plain_rename(dirfd, from, to);
}

/* A plain syscall too: sync_file_range(SYNC_FILE_RANGE_WRITE) only queues the writeback. */
static int uring_writeback(struct io *io, int fd, uint64_t off, uint64_t len)
{
	return io_plain_writeback(fd, off, len);
}

static void uring_destroy(struct io *io)
{
	struct uring_io *u = (struct uring_io *)io;

	io_uring_queue_exit(&u->ring);
	free(u);
}

static const struct io_ops uring_ops = {
    .name = "io_uring",
    .write = uring_write,
    .sync = uring_sync,
    .writeback = uring_writeback,
    .create = uring_create,
    .sync_dir = uring_sync_dir,
    .remove = uring_remove,
    .rename = uring_rename,
    .destroy = uring_destroy,
};

int io_uring_backend(struct io **out, unsigned depth)
{
	struct uring_io *u = calloc(1, sizeof(*u));
	int rc;

	if (u == NULL)
		return -ENOMEM;
	/* A write and its linked fsync need two entries at once. */
	rc = io_uring_queue_init(depth < 2 ? 2 : depth, &u->ring, 0);
	if (rc < 0) {
		free(u);
		return rc; /* as is: the caller falls back to psync on -EPERM / -ENOSYS */
	}
	u->io.ops = &uring_ops;
	*out = &u->io;
	return 0;
}
