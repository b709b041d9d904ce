/*
 * io.h - the write backend behind the log writer and the checkpoint writer (internal).
 *
 * Each backend object has one user at a time, so implementations need no locking: the log's
 * writer thread owns the WAL's write, sync and create, and checkpoints (one at a time, under
 * ckpt_mu) own a second object the store makes for them. remove and sync_dir, which keep no
 * state in any backend (both are plain syscalls), are also called by wal_drop_segment() on a
 * compacting thread. Two implementations: io_uring (io_uring.c: the write and an fdatasync
 * linked with IOSQE_IO_LINK in one submission) and psync (psync.c: pwrite + fdatasync). A test
 * build adds a fault-injecting one (tests/fault_io.h). Both resubmit short writes and retry
 * EINTR/EAGAIN up to CS_IO_RETRIES times; any other failure is returned as -errno and is
 * final for the caller.
 *
 * Every operation whose durability recovery depends on goes through this interface: the
 * log's record and header writes, data syncs, segment creation and removal, directory syncs,
 * and the checkpoint file's creation, writes, sync and rename, so that a fault-injecting
 * backend sees (and can fail, or forget at a simulated power cut) each of them. Reads do not:
 * wal_read(), recovery and the checkpoint loader read with pread(); nor do recovery's own
 * repairs at open (zeroing a torn tail), nor dir.c's CIDSTORE file.
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
	/* Optional (NULL: not offered): starts the writeback of bytes [off, off + len) of fd
	 * without waiting for it (sync_file_range(SYNC_FILE_RANGE_WRITE)), so that a later
	 * sync finds them written or under way. A hint: it makes nothing durable. */
	int (*writeback)(struct io *io, int fd, uint64_t off, uint64_t len);
	/* Creates file `name` (borrowed) in directory dirfd: it must not exist (O_CREAT |
	 * O_EXCL, mode 0600, opened O_RDWR | O_CLOEXEC). The file is preallocated to capacity
	 * bytes reading as zeros (fallocate, or a sparse ftruncate where the file system cannot
	 * preallocate; nothing for capacity 0). Sets *fd, owned by the caller, on success only.
	 * On failure the half-made file is removed (best effort). The name is durable only
	 * after sync_dir(). */
	int (*create)(struct io *io, int dirfd, const char *name, uint64_t capacity, int *fd);
	/* fsync(dirfd): makes the names created and removed in the directory durable. */
	int (*sync_dir)(struct io *io, int dirfd);
	/* unlinkat(dirfd, name): removes a file the log gave up on (a segment whose creation
	 * failed half-way, a checkpoint.tmp). Durable only after sync_dir(). */
	int (*remove)(struct io *io, int dirfd, const char *name);
	/* renameat(dirfd, from, dirfd, to) (both borrowed): atomically replaces `to`, if it
	 * exists, by the file `from` names. Until sync_dir() a power cut may undo it, leaving
	 * both names as they were. */
	int (*rename)(struct io *io, int dirfd, const char *from, const char *to);
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

/* The plain-syscall create, sync_dir, remove and rename that both backends use (psync.c),
 * with the contracts of the io_ops members of the same names. Errors: -errno. */
int io_plain_create(int dirfd, const char *name, uint64_t capacity, int *fd);
int io_plain_sync_dir(int dirfd);
int io_plain_remove(int dirfd, const char *name);
int io_plain_rename(int dirfd, const char *from, const char *to);
int io_plain_writeback(int fd, uint64_t off, uint64_t len);

/* Frees the blocks of a file whose removal (or replacement by a rename) is durable, through
 * fd, still open on it, and closes fd: the file is cut IO_RELEASE_STEP bytes at a time from
 * its end, each cut synced, so that each journal commit frees one step. Why: ext4 mounted
 * with `discard` (as this machine's root is) trims freed blocks within the commit that frees
 * them, and every fdatasync of the log waits for that commit: the unlink of a written
 * 256 MiB segment held the log's syncs for 48 ms; cut in 8 MiB steps, 2 ms. Only for a file
 * no name reaches any more, which no crash can bring back (its removal is durable): the cuts
 * change nothing a reader can see. Best effort: on an error it stops cutting and closes fd,
 * which frees the rest at once. A plain syscall in every backend, like the others here. */
#define IO_RELEASE_STEP (8u << 20)
void io_release(int fd);

#endif
