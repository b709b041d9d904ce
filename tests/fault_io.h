/*
 * fault_io.h - a fault-injecting I/O backend for the reliability tests (header-only, test
 * builds only; SQLite's src/test6.c is the model).
 *
 * It wraps the psync backend behind the interface of wal/io.h and keeps, for every file the
 * log writes, what a power cut could still take away:
 *   - every write not yet covered by a completed sync of its file, with the bytes it
 *     overwrote (pread before the write goes through, so the real file always shows the
 *     latest data and reads keep working);
 *   - every file created since the last directory sync (its name is not durable), and
 *     whether any sync of its data completed (if not, even its size is not durable);
 *   - every rename since the last directory sync, with the bytes of the file it replaced.
 * fault_power_cut() then turns a directory holding those files into one state the disk
 * could be in after the power failed: each undurable rename, latest first, is kept or undone
 * (the file goes back to its old name, the replaced file comes back); each unsynced write,
 * latest first, is kept, dropped (its old bytes restored) or torn (a random subset of its
 * 512-byte sectors restored); and each undurable file is removed, kept, or kept empty. The
 * decisions come from a seed, so a failing state can be rebuilt.
 *
 * Countdowns fail the n-th write, sync, create, directory sync or rename with a chosen
 * error, and
 * fault_off_after(k) switches the machine off after the k-th I/O operation: that one and
 * every later call fail with -EIO and touch nothing, as nothing reaches a disk without power.
 * A store whose backend went off is abandoned: the test closes it (the close fails, and frees
 * the memory), cuts the power on the files and reopens them with a real backend.
 *
 * Invariants:
 *   F1. An operation counts once in fault_ops() when the machine was on for it, injected
 *       failure or not; a write with sync is two operations, the write and then the sync, so
 *       a cut can fall between them.
 *   F2. A record of an unsynced write holds exactly the bytes the file held before the write
 *       (zeros past the end of the file), and records are kept in write order, so restoring
 *       them latest first gives back any earlier state of the bytes.
 *   F3. The state (records, files, counters) lives outside the backend object: it outlives
 *       the store handle that the cut abandons, and is cleared only by fault_reset().
 *   F4. A store makes two backend objects, the log's and its checkpoints'; both share the
 *       one state, and every call takes the state's mutex for its whole length, so the log's
 *       writer thread and a checkpoint's caller may use them at once.
 *   F5. A rename kept at a cut makes the renamed file's name durable (it is there, under its
 *       new name); one undone puts the file back under its old name, where the rules for a
 *       created file then apply, and restores the replaced file's bytes, or removes the new
 *       name when it replaced nothing. Removals are not undone: the stores remove only files
 *       (a checkpoint.tmp, a half-made segment) that open discards anyway.
 */
#ifndef CS_FAULT_IO_H
#define CS_FAULT_IO_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "io.h"

enum fault_kind {
	FAULT_WRITE,
	FAULT_SYNC,
	FAULT_CREATE,
	FAULT_SYNC_DIR,
	FAULT_RENAME,
	FAULT_NKINDS
};

static const char *const fault_kind_name[FAULT_NKINDS]
    __attribute__((unused)) = {"write", "sync", "create", "sync_dir", "rename"};

/* What a power cut does to each unsynced write (and undurable file). */
enum fault_policy {
	FAULT_KEEP, /* every write reached the disk, every created name and rename too */
	FAULT_DROP, /* none did; created files vanish, renames are undone */
	FAULT_TEAR, /* each write keeps a random subset of its sectors; names at random */
	FAULT_MIX,  /* each write at random kept, dropped or torn; names at random */
	FAULT_NPOLICIES
};

static const char *const fault_policy_name[FAULT_NPOLICIES]
    __attribute__((unused)) = {"keep", "drop", "tear", "mix"};

/* Header-only: a test uses what it needs of it. */
#define FAULT_FN static __attribute__((unused))

#define FAULT_SECTOR 512
#define FAULT_FILES  64
#define FAULT_OFF    UINT64_MAX /* fault_off_after(): never */

/* An unsynced write (F2). */
struct fault_rec {
	int file; /* index into fault_g.files */
	uint64_t off;
	size_t len;
	uint64_t old_size; /* the file's size before the write */
	uint8_t *old;      /* owned: len bytes the write overwrote */
};

/* A rename not yet made durable by a directory sync (F5). */
struct fault_ren {
	int file; /* index into fault_g.files: the renamed file */
	char from[64], to[64];
	int replaced; /* `to` existed before the rename */
	uint8_t *old; /* owned: the bytes of the replaced file (old_len of them) */
	size_t old_len;
};

/* A file the backend saw. */
struct fault_file {
	char name[64]; /* within the store directory */
	dev_t dev;
	ino_t ino;
	int created;      /* created through the backend, so its name may not be durable */
	int name_durable; /* a directory sync completed since */
	int data_synced;  /* a sync of its data completed since it was created */
	uint64_t written; /* one past the highest byte written through the backend */
};

/* What a cut did. digest names the resulting state: the bytes of every region an unsynced
 * write covered and the fate of every undurable file; equal digests, equal images. */
struct fault_cut {
	uint64_t writes, kept, dropped, torn, sectors_restored;
	uint64_t files_removed, files_emptied;
	uint64_t renames_kept, renames_undone;
	uint64_t digest;
};

static struct fault_state {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t ops;       /* operations done while on (F1) */
	uint64_t off_after; /* the machine goes off after this many operations */
	int off;
	uint64_t calls[FAULT_NKINDS];   /* calls of each kind while on */
	uint64_t fail_at[FAULT_NKINDS]; /* 0, or the call (1-based) that fails */
	int fail_err[FAULT_NKINDS];
	int fail_header; /* 0, or the error of the next write at offset 0 (a segment header) */
	uint64_t injected;      /* failures injected so far */
	int partial_writes;     /* an injected write failure first writes half the bytes */
	int drop_on_sync_fail;  /* an injected sync failure drops the file's unsynced writes,
	                         * as a kernel that discarded the dirty pages would */
	int real_sync;          /* also sync the real files (durability is simulated) */
	int real_prealloc;      /* preallocate created files for real, not as sparse files
	                         * (on tmpfs a real preallocation zeroes every page) */
	int gate;               /* writes wait while set */
	int gate_waiting;       /* writes waiting at the gate */
	struct fault_rec *recs; /* owned; nrecs used */
	size_t nrecs, caprecs;
	struct fault_ren *rens; /* owned; nrens used, in rename order */
	size_t nrens, caprens;
	struct fault_file files[FAULT_FILES];
	int nfiles;
} fault_g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

struct fault_io {
	struct io io; /* first member */
	struct io *real;
};

FAULT_FN void fault_die(const char *what)
{
	fprintf(stderr, "fault_io: %s: %s\n", what, strerror(errno));
	abort();
}

FAULT_FN void fault_free_recs(size_t from)
{
	for (size_t i = from; i < fault_g.nrecs; i++)
		free(fault_g.recs[i].old);
	fault_g.nrecs = from;
}

FAULT_FN void fault_free_rens(void)
{
	for (size_t i = 0; i < fault_g.nrens; i++)
		free(fault_g.rens[i].old);
	fault_g.nrens = 0;
}

/* Clears every record, file, counter and setting: the start of a new scenario. Call only
 * while no store uses the backend. */
FAULT_FN void fault_reset(void)
{
	pthread_mutex_lock(&fault_g.mu);
	fault_free_recs(0);
	free(fault_g.recs);
	fault_g.recs = NULL;
	fault_g.caprecs = 0;
	fault_free_rens();
	free(fault_g.rens);
	fault_g.rens = NULL;
	fault_g.caprens = 0;
	fault_g.nfiles = 0;
	fault_g.ops = 0;
	fault_g.off_after = FAULT_OFF;
	fault_g.off = 0;
	memset(fault_g.calls, 0, sizeof(fault_g.calls));
	memset(fault_g.fail_at, 0, sizeof(fault_g.fail_at));
	fault_g.injected = 0;
	fault_g.fail_header = 0;
	fault_g.partial_writes = 0;
	fault_g.drop_on_sync_fail = 0;
	fault_g.real_sync = 0;
	fault_g.real_prealloc = 0;
	fault_g.gate = 0;
	pthread_mutex_unlock(&fault_g.mu);
}

/* The n-th call of `kind` from now on (counting from the last reset: calls are cumulative)
 * fails with err (-EIO, -ENOSPC, ...). n = 0 disarms. */
FAULT_FN void fault_fail_nth(enum fault_kind kind, uint64_t n, int err)
{
	pthread_mutex_lock(&fault_g.mu);
	fault_g.fail_at[kind] = n == 0 ? 0 : fault_g.calls[kind] + n;
	fault_g.fail_err[kind] = err;
	pthread_mutex_unlock(&fault_g.mu);
}

/* The next write at offset 0 (the header of a segment being created, whenever that comes)
 * fails with err; 0 disarms. Counts as a write call as any other. */
FAULT_FN void fault_fail_header(int err)
{
	pthread_mutex_lock(&fault_g.mu);
	fault_g.fail_header = err;
	pthread_mutex_unlock(&fault_g.mu);
}

/* The machine goes off after k more operations in all (k = 0: at the next one). */
FAULT_FN void fault_off_after(uint64_t k)
{
	pthread_mutex_lock(&fault_g.mu);
	fault_g.off_after = k == FAULT_OFF ? FAULT_OFF : fault_g.ops + k;
	pthread_mutex_unlock(&fault_g.mu);
}

FAULT_FN void fault_set_gate(int closed)
{
	pthread_mutex_lock(&fault_g.mu);
	fault_g.gate = closed;
	pthread_cond_broadcast(&fault_g.cv);
	pthread_mutex_unlock(&fault_g.mu);
}

FAULT_FN int fault_gate_waiting(void)
{
	pthread_mutex_lock(&fault_g.mu);
	int n = fault_g.gate_waiting;
	pthread_mutex_unlock(&fault_g.mu);
	return n;
}

FAULT_FN uint64_t fault_read(const uint64_t *v)
{
	pthread_mutex_lock(&fault_g.mu);
	uint64_t x = *v;
	pthread_mutex_unlock(&fault_g.mu);
	return x;
}

FAULT_FN uint64_t fault_ops(void)
{
	return fault_read(&fault_g.ops);
}

/* Waits until more than ops0 operations were done, for at most ms milliseconds. */
FAULT_FN void fault_wait_ops(uint64_t ops0, int ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += (long)ms * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&fault_g.mu);
	while (fault_g.ops <= ops0 && !fault_g.off)
		if (pthread_cond_timedwait(&fault_g.cv, &fault_g.mu, &until) != 0)
			break;
	pthread_mutex_unlock(&fault_g.mu);
}

FAULT_FN uint64_t fault_injected(void)
{
	return fault_read(&fault_g.injected);
}

FAULT_FN int fault_is_off(void)
{
	pthread_mutex_lock(&fault_g.mu);
	int off = fault_g.off;
	pthread_mutex_unlock(&fault_g.mu);
	return off;
}

/* Counts one operation (F1), or says the machine is off. Called with mu held. */
FAULT_FN int fault_tick(void)
{
	if (fault_g.off)
		return -EIO;
	if (fault_g.ops >= fault_g.off_after) {
		fault_g.off = 1;
		return -EIO;
	}
	fault_g.ops++;
	pthread_cond_broadcast(&fault_g.cv); /* for fault_wait_ops() */
	return 0;
}

/* The injected error of this call of `kind`, or 0. Called with mu held, after fault_tick. */
FAULT_FN int fault_inject(enum fault_kind kind)
{
	if (++fault_g.calls[kind] != fault_g.fail_at[kind])
		return 0;
	fault_g.injected++;
	return fault_g.fail_err[kind];
}

FAULT_FN int fault_add_file(const char *name, const struct stat *st, int created)
{
	if (fault_g.nfiles == FAULT_FILES) {
		errno = EMFILE;
		fault_die("too many files");
	}
	struct fault_file *f = &fault_g.files[fault_g.nfiles];
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->created = created;
	f->name_durable = !created;
	f->data_synced = !created;
	return fault_g.nfiles++;
}

/* The file behind fd; one the backend did not create (a segment recovery found) is added
 * under the name /proc gives it. Called with mu held. */
FAULT_FN int fault_file_of(int fd)
{
	struct stat st;
	char link[64], path[PATH_MAX];

	if (fstat(fd, &st) != 0)
		fault_die("fstat");
	for (int i = 0; i < fault_g.nfiles; i++)
		if (fault_g.files[i].dev == st.st_dev && fault_g.files[i].ino == st.st_ino)
			return i;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		fault_die("readlink");
	path[n] = '\0';
	const char *base = strrchr(path, '/');
	return fault_add_file(base != NULL ? base + 1 : path, &st, 0);
}

FAULT_FN void fault_pwrite_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n <= 0)
			fault_die("pwrite");
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

/* Reads len bytes at off; bytes past the end of the file read as zeros. */
FAULT_FN void fault_pread_all(int fd, uint8_t *p, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0)
			fault_die("pread");
		if (n == 0) {
			memset(p, 0, len);
			return;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
}

/* Copies the files of store directory `from` (but LOCK) into `to`, made anew, holes kept:
 * a store image to reopen or cut again. Dies on any error. */
FAULT_FN void fault_copy_store(const char *from, const char *to)
{
	static uint8_t buf[1 << 20];
	char cmd[8400];
	DIR *d = opendir(from);
	struct dirent *e;

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", to);
	if (d == NULL || system(cmd) != 0 || mkdir(to, 0700) != 0)
		fault_die("copy_store: opendir, rm or mkdir");
	int tofd = open(to, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (tofd < 0)
		fault_die("copy_store: open");
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		if (e->d_name[0] == '.' || strcmp(e->d_name, "LOCK") == 0)
			continue;
		int src = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
		if (src < 0 || fstat(src, &st) != 0)
			fault_die("copy_store: open or fstat of a source file");
		int dst = openat(tofd, e->d_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (dst < 0 || ftruncate(dst, st.st_size) != 0)
			fault_die("copy_store: create");
		off_t pos = 0;
		/* Bounded by the file's size: each pass moves past one data extent. */
		while (pos < st.st_size) {
			off_t data = lseek(src, pos, SEEK_DATA);
			if (data < 0)
				break; /* ENXIO: only a hole is left */
			off_t hole = lseek(src, data, SEEK_HOLE);
			if (hole <= data)
				fault_die("copy_store: SEEK_HOLE");
			for (off_t o = data; o < hole;) {
				size_t want = (size_t)(hole - o) < sizeof(buf) ? (size_t)(hole - o)
				                                               : sizeof(buf);
				fault_pread_all(src, buf, want, (uint64_t)o);
				fault_pwrite_all(dst, buf, want, (uint64_t)o);
				o += (off_t)want;
			}
			pos = hole;
		}
		close(src);
		close(dst);
	}
	closedir(d);
	close(tofd);
}

/* Writes len bytes through to the file, recording what they overwrite (F2). Returns the
 * real backend's error. Called with mu held. */
FAULT_FN int fault_do_write(struct fault_io *f, int fd, const void *buf, size_t len, uint64_t off)
{
	struct stat st;
	int file = fault_file_of(fd);

	if (fstat(fd, &st) != 0)
		fault_die("fstat");
	uint8_t *old = malloc(len ? len : 1);
	if (old == NULL)
		fault_die("malloc");
	fault_pread_all(fd, old, len, off);
	int rc = f->real->ops->write(f->real, fd, buf, len, off, 0);
	if (rc != 0) {
		free(old);
		return rc;
	}
	if (fault_g.nrecs == fault_g.caprecs) {
		size_t cap = fault_g.caprecs ? 2 * fault_g.caprecs : 256;
		struct fault_rec *r = realloc(fault_g.recs, cap * sizeof(*r));
		if (r == NULL)
			fault_die("realloc");
		fault_g.recs = r;
		fault_g.caprecs = cap;
	}
	fault_g.recs[fault_g.nrecs++] =
	    (struct fault_rec){file, off, len, (uint64_t)st.st_size, old};
	if (off + len > fault_g.files[file].written)
		fault_g.files[file].written = off + len;
	return 0;
}

/* Restores the old bytes of every unsynced write of `file`, latest first, and forgets them.
 * Called with mu held. */
FAULT_FN void fault_drop_file(int fd, int file)
{
	for (size_t i = fault_g.nrecs; i-- > 0;) {
		struct fault_rec *r = &fault_g.recs[i];
		if (r->file == file)
			fault_pwrite_all(fd, r->old, r->len, r->off);
	}
	size_t keep = 0;
	for (size_t i = 0; i < fault_g.nrecs; i++) {
		if (fault_g.recs[i].file == file)
			free(fault_g.recs[i].old);
		else
			fault_g.recs[keep++] = fault_g.recs[i];
	}
	fault_g.nrecs = keep;
}

/* A sync of fd: one operation. Called with mu held. */
FAULT_FN int fault_do_sync(struct fault_io *f, int fd)
{
	int rc = fault_tick();
	if (rc != 0)
		return rc;
	int file = fault_file_of(fd);
	rc = fault_inject(FAULT_SYNC);
	if (rc != 0) {
		if (fault_g.drop_on_sync_fail)
			fault_drop_file(fd, file);
		return rc;
	}
	if (fault_g.real_sync && (rc = f->real->ops->sync(f->real, fd)) != 0)
		return rc;
	/* Durable now: the records of this file are no longer at risk. */
	size_t keep = 0;
	for (size_t i = 0; i < fault_g.nrecs; i++) {
		if (fault_g.recs[i].file == file)
			free(fault_g.recs[i].old);
		else
			fault_g.recs[keep++] = fault_g.recs[i];
	}
	fault_g.nrecs = keep;
	fault_g.files[file].data_synced = 1;
	return 0;
}

FAULT_FN int fault_io_write(struct io *io, int fd, const void *buf, size_t len, uint64_t off,
                            int sync)
{
	struct fault_io *f = (struct fault_io *)io;
	int rc;

	pthread_mutex_lock(&fault_g.mu);
	fault_g.gate_waiting++;
	while (fault_g.gate)
		pthread_cond_wait(&fault_g.cv, &fault_g.mu);
	fault_g.gate_waiting--;
	rc = fault_tick();
	if (rc == 0) {
		rc = fault_inject(FAULT_WRITE);
		if (rc == 0 && off == 0 && fault_g.fail_header != 0) {
			rc = fault_g.fail_header;
			fault_g.fail_header = 0;
			fault_g.injected++;
		}
		if (rc != 0) {
			/* A partial write is as real as none: some bytes landed. */
			if (fault_g.partial_writes && len / 2 > 0)
				(void)fault_do_write(f, fd, buf, len / 2, off);
		} else {
			rc = fault_do_write(f, fd, buf, len, off);
			if (rc == 0 && sync)
				rc = fault_do_sync(f, fd);
		}
	}
	pthread_mutex_unlock(&fault_g.mu);
	return rc;
}

FAULT_FN int fault_io_sync(struct io *io, int fd)
{
	pthread_mutex_lock(&fault_g.mu);
	int rc = fault_do_sync((struct fault_io *)io, fd);
	pthread_mutex_unlock(&fault_g.mu);
	return rc;
}

FAULT_FN int fault_io_create(struct io *io, int dirfd, const char *name, uint64_t capacity, int *fd)
{
	struct fault_io *f = (struct fault_io *)io;
	struct stat st;
	int rc;

	pthread_mutex_lock(&fault_g.mu);
	rc = fault_tick();
	if (rc == 0)
		rc = fault_inject(FAULT_CREATE);
	if (rc == 0 && fault_g.real_prealloc) {
		rc = f->real->ops->create(f->real, dirfd, name, capacity, fd);
	} else if (rc == 0) {
		/* A sparse file reads as the same zeros; only running out of space differs,
		 * and that is for the real backend on a small file system to show. */
		*fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (*fd < 0) {
			rc = -errno;
		} else if (ftruncate(*fd, (off_t)capacity) != 0) {
			rc = -errno;
			close(*fd);
			unlinkat(dirfd, name, 0);
		}
	}
	if (rc == 0) {
		if (fstat(*fd, &st) != 0)
			fault_die("fstat");
		/* An entry of the same name or inode is a file since removed: forget it. */
		for (int i = 0; i < fault_g.nfiles; i++) {
			struct fault_file *o = &fault_g.files[i];
			if (strcmp(o->name, name) == 0 ||
			    (o->dev == st.st_dev && o->ino == st.st_ino)) {
				o->name[0] = '\0';
				o->dev = 0;
				o->ino = 0;
			}
		}
		fault_add_file(name, &st, 1);
	}
	pthread_mutex_unlock(&fault_g.mu);
	return rc;
}

FAULT_FN int fault_io_sync_dir(struct io *io, int dirfd)
{
	struct fault_io *f = (struct fault_io *)io;
	int rc;

	pthread_mutex_lock(&fault_g.mu);
	rc = fault_tick();
	if (rc == 0)
		rc = fault_inject(FAULT_SYNC_DIR);
	if (rc == 0 && fault_g.real_sync)
		rc = f->real->ops->sync_dir(f->real, dirfd);
	if (rc == 0) {
		/* The store has one directory: every name created so far is durable, and
		 * every rename. */
		for (int i = 0; i < fault_g.nfiles; i++)
			fault_g.files[i].name_durable = 1;
		fault_free_rens();
	}
	pthread_mutex_unlock(&fault_g.mu);
	return rc;
}

/* Forgets the file of that name, if the backend knows one: it was removed or replaced.
 * Called with mu held. */
FAULT_FN void fault_forget(const char *name)
{
	for (int i = 0; i < fault_g.nfiles; i++) {
		struct fault_file *o = &fault_g.files[i];
		if (strcmp(o->name, name) == 0) {
			o->name[0] = '\0';
			o->dev = 0;
			o->ino = 0;
		}
	}
}

/* Not a countdown kind: a removal only follows a failure, or cleans up at open. Off, it does
 * not happen. Removals are durable at once (F5). */
FAULT_FN int fault_io_remove(struct io *io, int dirfd, const char *name)
{
	struct fault_io *f = (struct fault_io *)io;

	pthread_mutex_lock(&fault_g.mu);
	int rc = fault_tick();
	if (rc == 0)
		rc = f->real->ops->remove(f->real, dirfd, name);
	if (rc == 0)
		fault_forget(name);
	pthread_mutex_unlock(&fault_g.mu);
	return rc;
}

/* Reads the whole file `name` in dirfd into a new buffer (*len bytes); NULL if it does not
 * exist. */
FAULT_FN uint8_t *fault_slurp(int dirfd, const char *name, size_t *len)
{
	struct stat st;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);

	*len = 0;
	if (fd < 0 && errno == ENOENT)
		return NULL;
	if (fd < 0 || fstat(fd, &st) != 0)
		fault_die("open of a file a rename replaces");
	uint8_t *p = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (p == NULL)
		fault_die("malloc");
	fault_pread_all(fd, p, (size_t)st.st_size, 0);
	close(fd);
	*len = (size_t)st.st_size;
	return p;
}

FAULT_FN int fault_io_rename(struct io *io, int dirfd, const char *from, const char *to)
{
	struct fault_io *f = (struct fault_io *)io;
	struct stat st;
	size_t old_len;

	pthread_mutex_lock(&fault_g.mu);
	int rc = fault_tick();
	if (rc == 0)
		rc = fault_inject(FAULT_RENAME);
	if (rc != 0) {
		pthread_mutex_unlock(&fault_g.mu);
		return rc;
	}
	/* The file the rename replaces comes back if a cut undoes it (F5). */
	uint8_t *old = fault_slurp(dirfd, to, &old_len);
	int replaced = old != NULL;
	rc = f->real->ops->rename(f->real, dirfd, from, to);
	if (rc != 0) {
		free(old);
		pthread_mutex_unlock(&fault_g.mu);
		return rc;
	}
	if (fstatat(dirfd, to, &st, 0) != 0)
		fault_die("fstatat after rename");
	int file = -1;
	for (int i = 0; i < fault_g.nfiles && file < 0; i++)
		if (fault_g.files[i].dev == st.st_dev && fault_g.files[i].ino == st.st_ino)
			file = i;
	fault_forget(to);
	if (file < 0)
		file = fault_add_file(to, &st, 0); /* one the backend never wrote */
	snprintf(fault_g.files[file].name, sizeof(fault_g.files[file].name), "%s", to);
	if (fault_g.nrens == fault_g.caprens) {
		size_t cap = fault_g.caprens ? 2 * fault_g.caprens : 16;
		struct fault_ren *r = realloc(fault_g.rens, cap * sizeof(*r));
		if (r == NULL)
			fault_die("realloc");
		fault_g.rens = r;
		fault_g.caprens = cap;
	}
	struct fault_ren *r = &fault_g.rens[fault_g.nrens++];
	memset(r, 0, sizeof(*r));
	r->file = file;
	snprintf(r->from, sizeof(r->from), "%s", from);
	snprintf(r->to, sizeof(r->to), "%s", to);
	r->replaced = replaced;
	r->old = old;
	r->old_len = old_len;
	pthread_mutex_unlock(&fault_g.mu);
	return 0;
}

FAULT_FN void fault_io_destroy(struct io *io)
{
	struct fault_io *f = (struct fault_io *)io;

	f->real->ops->destroy(f->real);
	free(f);
}

static const struct io_ops fault_io_ops = {
    .name = "fault",
    .write = fault_io_write,
    .sync = fault_io_sync,
    .create = fault_io_create,
    .sync_dir = fault_io_sync_dir,
    .remove = fault_io_remove,
    .rename = fault_io_rename,
    .destroy = fault_io_destroy,
};

/* For store_io_factory: a fault backend over psync, using the current state (F3). */
FAULT_FN int fault_factory(struct io **out)
{
	struct fault_io *f = calloc(1, sizeof(*f));
	int rc;

	if (f == NULL)
		return -ENOMEM;
	rc = io_psync_backend(&f->real);
	if (rc != 0) {
		free(f);
		return rc;
	}
	f->io.ops = &fault_io_ops;
	*out = &f->io;
	return 0;
}

FAULT_FN uint64_t fault_rand(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull); /* splitmix64 */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Opens the file of record index `file` in dirfd under its name at the cut, names[file],
 * caching the fd in fds[]; -1 if gone. */
FAULT_FN int fault_open_in(int dirfd, int file, int *fds, char (*names)[64])
{
	if (fds[file] == -2) {
		const char *name = names[file];
		fds[file] = name[0] ? openat(dirfd, name, O_RDWR | O_CLOEXEC) : -1;
	}
	return fds[file];
}

/*
 * Cuts the power on the files in dirfd (the store's directory, or a copy of it), as
 * `policy` and `seed` decide, and fills *out (may be NULL). The records are not consumed:
 * the same cut, or another, can be applied to another copy. With dry set, nothing is
 * changed but the digest of the state the cut would give is computed all the same.
 * Call only while no store uses the backend.
 */
FAULT_FN void fault_power_cut(int dirfd, enum fault_policy policy, uint64_t seed, int dry,
                              struct fault_cut *out)
{
	struct fault_cut c = {0};
	int fds[FAULT_FILES];
	char names[FAULT_FILES][64];         /* each file's name after the cut */
	uint8_t ren_kept[FAULT_FILES] = {0}; /* a rename of the file was kept */
	uint64_t x = seed * 0x2545f4914f6cdd1dull + (uint64_t)policy;
	XXH3_state_t *h = XXH3_createState();

	if (h == NULL)
		fault_die("XXH3_createState");
	XXH3_64bits_reset(h);
	pthread_mutex_lock(&fault_g.mu);
	for (int i = 0; i < FAULT_FILES; i++)
		fds[i] = -2;
	for (int i = 0; i < fault_g.nfiles; i++)
		memcpy(names[i], fault_g.files[i].name, sizeof(names[i]));
	/* Renames first, latest first (F5), so that the writes below find each file under the
	 * name it has after the cut. */
	for (size_t i = fault_g.nrens; i-- > 0;) {
		const struct fault_ren *r = &fault_g.rens[i];
		int undo = policy == FAULT_KEEP   ? 0
		           : policy == FAULT_DROP ? 1
		                                  : (int)(fault_rand(&x) & 1);
		XXH3_64bits_update(h, &i, sizeof(i));
		XXH3_64bits_update(h, &undo, sizeof(undo));
		if (!undo) {
			c.renames_kept++;
			ren_kept[r->file] = 1;
			continue;
		}
		c.renames_undone++;
		snprintf(names[r->file], sizeof(names[r->file]), "%s", r->from);
		if (dry)
			continue;
		if (renameat(dirfd, r->to, dirfd, r->from) != 0 && errno != ENOENT)
			fault_die("renameat to undo a rename");
		if (r->replaced) {
			int fd =
			    openat(dirfd, r->to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
			if (fd < 0)
				fault_die("restore of a replaced file");
			fault_pwrite_all(fd, r->old, r->old_len, 0);
			close(fd);
		}
	}
	/* Latest first (F2): each restore gives back the bytes as they were before it. */
	for (size_t i = fault_g.nrecs; i-- > 0;) {
		const struct fault_rec *r = &fault_g.recs[i];
		enum fault_policy p = policy;
		if (p == FAULT_MIX)
			p = (enum fault_policy)(fault_rand(&x) % 3); /* keep, drop or tear */
		c.writes++;
		c.kept += p == FAULT_KEEP;
		c.dropped += p == FAULT_DROP;
		c.torn += p == FAULT_TEAR;
		XXH3_64bits_update(h, &i, sizeof(i));
		if (p == FAULT_KEEP)
			continue;
		int fd = dry ? -1 : fault_open_in(dirfd, r->file, fds, names);
		uint64_t end = r->off + r->len, run = r->off; /* run: start of pieces to restore */
		for (uint64_t o = r->off; o < end;) {
			uint64_t next = (o / FAULT_SECTOR + 1) * FAULT_SECTOR;
			if (next > end)
				next = end;
			int restore = p == FAULT_DROP || (fault_rand(&x) & 1);
			if (restore) {
				/* The restored pieces name the state: equal sets, equal bytes. */
				XXH3_64bits_update(h, &o, sizeof(o));
				c.sectors_restored++;
			}
			/* Adjacent restored pieces go back in one write. */
			if (!restore && fd >= 0 && run < o)
				fault_pwrite_all(fd, r->old + (run - r->off), o - run, run);
			if (!restore)
				run = next;
			o = next;
		}
		if (fd >= 0 && run < end)
			fault_pwrite_all(fd, r->old + (run - r->off), end - run, run);
		if (p == FAULT_DROP && fd >= 0 && r->old_size < end) {
			/* The write made the file longer: without it the file is as long as
			 * it was. */
			if (ftruncate(fd, (off_t)r->old_size) != 0)
				fault_die("ftruncate");
		}
	}
	/* Names not yet durable: a file may vanish, or survive without its size if no sync of
	 * its data completed. */
	for (int i = 0; i < fault_g.nfiles; i++) {
		const struct fault_file *f = &fault_g.files[i];
		if (!f->created || f->name_durable || names[i][0] == '\0')
			continue;
		int fate = policy == FAULT_KEEP   ? 1
		           : policy == FAULT_DROP ? 0
		                                  : (int)(fault_rand(&x) % 3);
		if (fate == 2 && f->data_synced)
			fate = 1;
		if (fate == 0 && ren_kept[i])
			fate = 1; /* F5: its new name is durable */
		XXH3_64bits_update(h, &i, sizeof(i));
		XXH3_64bits_update(h, &fate, sizeof(fate));
		if (fate == 0) {
			c.files_removed++;
			if (!dry && unlinkat(dirfd, names[i], 0) != 0 && errno != ENOENT)
				fault_die("unlinkat");
		} else if (fate == 2) {
			c.files_emptied++;
			int fd = dry ? -1 : fault_open_in(dirfd, i, fds, names);
			if (fd >= 0 && ftruncate(fd, 0) != 0)
				fault_die("ftruncate");
		}
	}
	pthread_mutex_unlock(&fault_g.mu);
	for (int i = 0; i < FAULT_FILES; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	c.digest = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	if (out != NULL)
		*out = c;
}

/*
 * Copies every file the backend wrote from directory `from` to directory `to` (both
 * borrowed fds), as it is now: the bytes up to the highest one written through the backend,
 * and the rest of the file's length as a hole. Cheap for a big preallocated segment of
 * which little was written. Files since removed are skipped. Call only while no store uses
 * the backend.
 */
FAULT_FN void fault_copy_files(int from, int to)
{
	static uint8_t buf[1 << 20];

	pthread_mutex_lock(&fault_g.mu);
	for (int i = 0; i < fault_g.nfiles; i++) {
		const struct fault_file *f = &fault_g.files[i];
		struct stat st;
		if (f->name[0] == '\0')
			continue;
		int src = openat(from, f->name, O_RDONLY | O_CLOEXEC);
		if (src < 0 && errno == ENOENT)
			continue;
		if (src < 0 || fstat(src, &st) != 0)
			fault_die("open for copy");
		int dst = openat(to, f->name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (dst < 0 || ftruncate(dst, st.st_size) != 0)
			fault_die("create copy");
		uint64_t n = (uint64_t)st.st_size;
		if (f->created && f->written < n)
			n = f->written; /* the rest was never written: zeros */
		for (uint64_t o = 0; o < n;) {
			size_t want = n - o < sizeof(buf) ? (size_t)(n - o) : sizeof(buf);
			fault_pread_all(src, buf, want, o);
			fault_pwrite_all(dst, buf, want, o);
			o += want;
		}
		close(src);
		close(dst);
	}
	pthread_mutex_unlock(&fault_g.mu);
}

#endif
