/*
 * test_util.h - helpers shared by the store-level tests: temporary directories, seeded
 * block contents, running a command and copying a store.
 */
#ifndef CS_TEST_UTIL_H
#define CS_TEST_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cidstore.h"

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path into buf. */
static inline void tu_tmpdir(char *buf, size_t cap, const char *tag)
{
	const char *t = getenv("TMPDIR");
	snprintf(buf, cap, "%s/cs-%s-XXXXXX", t && t[0] ? t : "/tmp", tag);
	if (mkdtemp(buf) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

/* Removes a directory tree (one level of files, plus nested copies made by tu_copy_dir). */
static inline void tu_rmrf(const char *path)
{
	char cmd[4200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", path);
}

static inline void tu_copy_dir(const char *from, const char *to)
{
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
	if (system(cmd) != 0) {
		fprintf(stderr, "copy %s -> %s failed\n", from, to);
		abort();
	}
}

/* Fills buf with len bytes determined by seed (xorshift64). */
static inline void tu_fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
		}
		buf[i] = (uint8_t)(x >> (8 * (i & 7)));
	}
}

/* A block length in [1, max] determined by seed. */
static inline size_t tu_len(uint64_t seed, size_t max)
{
	return 1 + (size_t)((seed * 0x2545f4914f6cdd1dull) >> 33) % max;
}

/* Default options for tests: create, small segments so rotation happens, the smallest
 * batch. */
static inline cs_options tu_opts(void)
{
	cs_options o;
	cs_options_init(&o);
	o.flags = CS_OPEN_CREATE;
	o.segment_bytes = 16u << 20;
	o.batch_bytes = 6u << 20;
	return o;
}

/* Path of the highest-numbered segment file in dir, or -1 if none. */
static inline int tu_last_segment(const char *dir, char *path, size_t cap)
{
	DIR *d = opendir(dir);
	char best[256] = "";
	struct dirent *e;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n == 12 && strcmp(e->d_name + 8, ".seg") == 0 && strcmp(e->d_name, best) > 0)
			snprintf(best, sizeof(best), "%s", e->d_name);
	}
	closedir(d);
	if (best[0] == '\0')
		return -1;
	snprintf(path, cap, "%s/%s", dir, best);
	return 0;
}

#endif
