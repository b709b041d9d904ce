/*
 * io.h - the write backend behind the log writer (internal).
 *
 * The writer thread is the only user of a backend, so implementations need no locking.
 * Two implementations: io_uring (io_uring.c: the write and an fdatasync linked with
 * IOSQE_IO_LINK in one submission) and psync (psync.c: pwrite + fdatasync). A test build
 * adds a fault-injecting one. Both resubmit short writes and retry EINTR/EAGAIN up to
 * CS_IO_RETRIES times; any other failure is returned as -errno and is final for the caller.
 */
#ifndef CS_IO_H
#define CS_IO_H

#include <stddef.h>
#include <stdint.h>

struct io;

struct io_ops {
	const char *name; /* "io_uring", "psync" */
	/* Writes all len bytes of buf at offset off of fd; when sync is nonzero, then
	 * fdatasync()s fd. Returns 0 only when every byte was written (and synced). */
	int (*write)(struct io *io, int fd, const void *buf, size_t len, uint64_t off, int sync);
	/* fdatasync(fd). */
	int (*sync)(struct io *io, int fd);
	void (*destroy)(struct io *io);
};

struct io {
	const struct io_ops *ops;
};

/* Creates an io_uring backend with a ring of `depth` entries. Errors: the kernel's -errno
 * from io_uring_queue_init (-EPERM under seccomp, -ENOSYS on old kernels), -ENOMEM. */
int io_uring_backend(struct io **out, unsigned depth);

/* Creates the pwrite + fdatasync backend. Errors: -ENOMEM. */
int io_psync_backend(struct io **out);

#endif
