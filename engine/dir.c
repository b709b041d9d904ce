/*
 * dir.c - the store directory: creation, locking and the meta file.
 *
 * Invariants:
 *   D1. A directory is a store iff it holds a valid CIDSTORE file. Nothing is written into a
 *       non-empty directory that lacks one (it is someone else's data: CS_ENOTSTORE).
 *   D2. CIDSTORE is created by write-to-temporary, fsync, rename, fsync of the directory, so
 *       a crash leaves either no store or a whole one.
 *   D3. Only the holder of the flock on LOCK touches the store's files. flock locks belong
 *       to the open file description, so a second handle in the same process is refused too,
 *       and a dead holder's lock vanishes with it.
 *   D4. When a store is created, the parent directory is synced too, after CIDSTORE's rename
 *       and before the open returns: the store directory's own entry, which mkdir (now or by
 *       an earlier, crashed open) made, is then durable, so no acknowledged write can live in
 *       a directory that a power cut takes away.
 */
#include "dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "endian.h"
#include "err.h"

#define META_TMP "CIDSTORE.tmp"

/* 1 if the directory holds entries other than ".", ".." and a LOCK file; 0 if not. */
static int dir_has_entries(int dirfd)
{
	int fd = dup(dirfd);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int err = -errno;
		close(fd);
		return err;
	}
	int found = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    strcmp(e->d_name, LOCK_NAME) != 0 && strcmp(e->d_name, META_TMP) != 0) {
			found = 1;
			break;
		}
	}
	closedir(d);
	return found;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static int meta_create(int dirfd, uint64_t *uid)
{
	uint8_t m[META_BYTES] = {0};
	struct timespec ts;

	if (sodium_init() < 0)
		return cs_fail(-EIO, "libsodium failed to initialise");
	randombytes_buf(uid, sizeof(*uid));
	clock_gettime(CLOCK_REALTIME, &ts);
	memcpy(m, META_NAME, 8);
	put_le32(m + 8, META_VERSION);
	put_le32(m + 12, META_BYTES);
	put_le64(m + 16, *uid);
	put_le64(m + 24, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
	put_le64(m + 56, XXH3_64bits(m, 56));

	int fd = openat(dirfd, META_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return cs_fail(-errno, "cannot create %s: %s", META_TMP, strerror(errno));
	int rc = write_all(fd, m, sizeof(m), 0);
	if (rc == 0 && fdatasync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && renameat(dirfd, META_TMP, dirfd, META_NAME) != 0)
		rc = -errno;
	if (rc == 0 && fsync(dirfd) != 0) /* D2 */
		rc = -errno;
	if (rc != 0)
		return cs_fail(rc, "cannot create the store's %s file: %s", META_NAME,
		               strerror(-rc));
	return 0;
}

static int meta_read(int dirfd, uint64_t *uid)
{
	uint8_t m[META_BYTES];
	int fd = openat(dirfd, META_NAME, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = pread(fd, m, sizeof(m), 0);
	int err = errno;
	close(fd);
	if (n < 0)
		return cs_fail(-err, "cannot read %s: %s", META_NAME, strerror(err));
	if (n != META_BYTES || memcmp(m, META_NAME, 8) != 0)
		return cs_fail(CS_ECORRUPT, "%s file is not a cidstore meta file", META_NAME);
	if (get_le64(m + 56) != XXH3_64bits(m, 56))
		return cs_fail(CS_ECORRUPT, "%s file checksum mismatch", META_NAME);
	uint32_t version = get_le32(m + 8);
	if (version > META_VERSION)
		return cs_fail(CS_EVERSION,
		               "store format version %u is newer than this "
		               "library's %u",
		               version, META_VERSION);
	if (version == 0 || get_le32(m + 12) != META_BYTES)
		return cs_fail(CS_ECORRUPT, "%s file fields out of range", META_NAME);
	*uid = get_le64(m + 16);
	return 0;
}

static int lock_take(int dirfd, const char *path, int *lockfd)
{
	int fd = openat(dirfd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = errno;
		return cs_fail(-err, "cannot open lock file in %s: %s%s", path, strerror(err),
		               err == EACCES || err == EROFS ? " (directory not writable)" : "");
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		char pid[32] = "";
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
		close(fd);
		if (err != EWOULDBLOCK)
			return cs_fail(-err, "cannot lock %s: %s", path, strerror(err));
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		return cs_fail(CS_EBUSY, "store %s is locked by pid %s", path,
		               pid[0] ? pid : "(unknown)");
	}
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	struct stat st;
	/* Overwritten in place, then cut to the new pid's length if a longer one was there:
	 * truncating to 0 freed the file's block at every open, and on a file system mounted
	 * with discard the open then slept in a synchronous discard of it (1-14 ms measured). */
	if (write_all(fd, buf, (size_t)len, 0) != 0 || fstat(fd, &st) != 0 ||
	    (st.st_size > len && ftruncate(fd, len) != 0)) {
		int err = errno;
		close(fd);
		return cs_fail(-err, "cannot write lock file in %s: %s", path, strerror(err));
	}
	*lockfd = fd;
	return 0;
}

/* D4: fsync of the directory that holds path's last component. */
static int sync_parent(const char *path)
{
	char parent[4096];
	size_t n = strlen(path);

	if (n >= sizeof(parent))
		return cs_fail(-ENAMETOOLONG, "store directory path of %zu bytes is too long", n);
	memcpy(parent, path, n + 1);
	while (n > 1 && parent[n - 1] == '/') /* "a/b/" names b too */
		parent[--n] = '\0';
	char *slash = strrchr(parent, '/');
	if (slash == NULL)
		strcpy(parent, ".");
	else if (slash == parent)
		parent[1] = '\0'; /* "/b": the root */
	else
		*slash = '\0';
	int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return cs_fail(-errno, "cannot open %s to sync the new store's entry: %s", parent,
		               strerror(errno));
	int rc = fsync(fd) != 0 ? -errno : 0;
	close(fd);
	if (rc != 0)
		return cs_fail(rc, "cannot sync %s, which holds the new store: %s", parent,
		               strerror(-rc));
	return 0;
}

int dir_open(const char *path, int create, struct dir_handle *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	out->dirfd = out->lockfd = -1;
	if (create && mkdir(path, 0700) != 0 && errno != EEXIST)
		return cs_fail(-errno, "cannot create store directory %s: %s", path,
		               strerror(errno));
	int dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		int err = errno;
		return cs_fail(-err, "cannot open store directory %s: %s%s", path, strerror(err),
		               err == ENOENT ? " (create it, or open with CS_OPEN_CREATE)" : "");
	}
	if (faccessat(dirfd, META_NAME, F_OK, 0) != 0) {
		rc = dir_has_entries(dirfd);
		if (rc > 0)
			rc = cs_fail(CS_ENOTSTORE,
			             "%s is not empty and holds no %s file: not a "
			             "cidstore",
			             path, META_NAME);
		else if (rc == 0 && !create)
			rc = cs_fail(-ENOENT,
			             "%s holds no store (open with CS_OPEN_CREATE to "
			             "make one)",
			             path);
		if (rc != 0)
			goto fail;
	}
	rc = lock_take(dirfd, path, &out->lockfd);
	if (rc != 0)
		goto fail;
	rc = meta_read(dirfd, &out->uid);
	if (rc == -ENOENT) { /* D1: checked empty above; we hold the lock now */
		rc = meta_create(dirfd, &out->uid);
		if (rc == 0)
			rc = sync_parent(path); /* D4 */
		out->created = 1;
	}
	if (rc != 0)
		goto fail;
	out->dirfd = dirfd;
	return 0;
fail:
	if (out->lockfd >= 0)
		close(out->lockfd);
	out->lockfd = -1;
	close(dirfd);
	return rc;
}

void dir_close(struct dir_handle *d)
{
	if (d->lockfd >= 0)
		close(d->lockfd); /* releases the flock */
	if (d->dirfd >= 0)
		close(d->dirfd);
	d->lockfd = d->dirfd = -1;
}
