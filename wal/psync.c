/*
 * psync.c - the plain write backend: pwrite() + fdatasync().
 *
 * Chosen when the kernel refuses io_uring (containers' default seccomp profile, old kernels),
 * or on request. Invariants:
 *   P1. write() returns 0 only when all len bytes reached the file (and, with sync, after
 *       fdatasync() returned 0).
 *   P2. Short writes are continued and EINTR/EAGAIN retried, at most CS_IO_RETRIES times in
 *       all per call; every other error is returned as -errno and never retried. A failed
 *       fdatasync() in particular is final: the kernel may already have dropped the pages.
 *   P3. create() leaves no file behind when it fails after the name was made, so the only
 *       half-made segment recovery can meet is one cut short by a crash.
 *
 * It also holds the plain-syscall create, directory sync, remove, rename and release that the
 * io_uring backend shares: all are rare (one per segment or checkpoint) and gain nothing from
 * the ring.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h> /* renameat */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "io.h"
#include "cs_limits.h"

struct psync_io {
	struct io io; /* first member: the backend is passed around as a struct io * */
};

static int psync_sync(struct io *io, int fd)
{
	for (int tries = 0;; tries++) {
		if (fdatasync(fd) == 0)
			return 0;
		/* Only an interrupted call is retried (P2): an EIO from fdatasync means the
		 * kernel may have discarded the dirty pages, and a second call would lie. */
		if ((errno != EINTR && errno != EAGAIN) || tries >= CS_IO_RETRIES)
			return -errno;
	}
}

int io_plain_writeback(int fd, uint64_t off, uint64_t len)
{
	for (int tries = 0;; tries++) {
		if (sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) == 0)
			return 0;
		if ((errno != EINTR && errno != EAGAIN) || tries >= CS_IO_RETRIES)
			return -errno;
	}
}

void io_release(int fd)
{
	struct stat st;

	if (fstat(fd, &st) == 0)
		/* Bounded: each pass cuts IO_RELEASE_STEP bytes or ends the loop. */
		for (off_t n = st.st_size; n > 0;) {
			n = n > (off_t)IO_RELEASE_STEP ? n - (off_t)IO_RELEASE_STEP : 0;
			if (ftruncate(fd, n) != 0 || fdatasync(fd) != 0)
				break;
		}
	close(fd);
}

static int psync_writeback(struct io *io, int fd, uint64_t off, uint64_t len)
{
	return io_plain_writeback(fd, off, len);
}

static int psync_write(struct io *io, int fd, const void *buf, size_t len, uint64_t off, int sync)
{
	const uint8_t *p = buf;
	size_t done = 0;
	int retries = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, p + done, len - done, (off_t)(off + done));
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (n > 0)
			done += (size_t)n;
		if (done < len && ++retries > CS_IO_RETRIES)
			return n < 0 ? -errno : -EIO; /* P2: a write that keeps coming up short */
	}
	return sync ? psync_sync(io, fd) : 0;
}

int io_plain_create(int dirfd, const char *name, uint64_t capacity, int *out)
{
	int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc = 0;

	if (fd < 0)
		return -errno;
	/* fallocate refuses a length of 0 (EINVAL): an empty file needs nothing. */
	if (capacity > 0 && fallocate(fd, 0, 0, (off_t)capacity) != 0) {
		/* Some file systems cannot preallocate; a sparse file of the right size still
		 * gives recovery its zero tail. */
		if (errno != EOPNOTSUPP || ftruncate(fd, (off_t)capacity) != 0)
			rc = -errno;
	}
	if (rc != 0) {
		/* P3. An undurable removal is harmless: recovery removes a last segment whose
		 * header is missing. */
		close(fd);
		unlinkat(dirfd, name, 0);
		return rc;
	}
	*out = fd;
	return 0;
}

int io_plain_sync_dir(int dirfd)
{
	for (int tries = 0;; tries++) {
		if (fsync(dirfd) == 0)
			return 0;
		if ((errno != EINTR && errno != EAGAIN) || tries >= CS_IO_RETRIES)
			return -errno; /* final, as a failed fdatasync is (P2) */
	}
}

int io_plain_remove(int dirfd, const char *name)
{
	return unlinkat(dirfd, name, 0) == 0 ? 0 : -errno;
}

int io_plain_rename(int dirfd, const char *from, const char *to)
{
	return renameat(dirfd, from, dirfd, to) == 0 ? 0 : -errno;
}

static int psync_create(struct io *io, int dirfd, const char *name, uint64_t capacity, int *fd)
{
	return io_plain_create(dirfd, name, capacity, fd);
}

static int psync_sync_dir(struct io *io, int dirfd)
{
	return io_plain_sync_dir(dirfd);
}

static int psync_remove(struct io *io, int dirfd, const char *name)
{
	return io_plain_remove(dirfd, name);
}

static int psync_rename(struct io *io, int dirfd, const char *from, const char *to)
{
	return io_plain_rename(dirfd, from, to);
}

static void psync_destroy(struct io *io)
{
	free(io);
}

static const struct io_ops psync_ops = {
    .name = "psync",
    .write = psync_write,
    .writeback = psync_writeback,
    .sync = psync_sync,
    .create = psync_create,
    .sync_dir = psync_sync_dir,
    .remove = psync_remove,
    .rename = psync_rename,
    .destroy = psync_destroy,
};

int io_psync_backend(struct io **out)
{
	struct psync_io *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return -ENOMEM;
	p->io.ops = &psync_ops;
	*out = &p->io;
	return 0;
}
