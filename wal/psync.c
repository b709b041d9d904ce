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
 */
#include <errno.h>
#include <stdlib.h>
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

static void psync_destroy(struct io *io)
{
	free(io);
}

static const struct io_ops psync_ops = {
    .name = "psync",
    .write = psync_write,
    .sync = psync_sync,
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
