/*
 * dir.h - the store directory: creation, the LOCK file, the CIDSTORE meta file (internal).
 */
#ifndef CS_DIR_H
#define CS_DIR_H

#include <stdint.h>

#define META_NAME    "CIDSTORE"
#define META_VERSION 1
#define META_BYTES   64
#define LOCK_NAME    "LOCK"

struct dir_handle {
	int dirfd;  /* O_DIRECTORY fd of the store */
	int lockfd; /* the flock'd LOCK file, held while open */
	uint64_t uid;
	int created; /* this open created the store */
};

/* Opens (and with create, makes) the store directory `path`, takes the lock and reads or
 * writes the meta file. Errors: -ENOENT (no directory, no create), -ENOTDIR, -EACCES,
 * -EROFS and other -errno; CS_EBUSY (locked; message names the pid); CS_ENOTSTORE (a
 * non-empty directory without a meta file); CS_ECORRUPT (bad meta file); CS_EVERSION. */
int dir_open(const char *path, int create, struct dir_handle *out);

/* Releases the lock and closes both fds. */
void dir_close(struct dir_handle *d);

#endif
