/*
 * test_fuzz_regress.c - every input a fuzzer ever failed on still passes, in every build.
 *
 * For each fuzz target fuzz/fuzz_<t>.c, runs its input function over every file in
 * fuzz/regress/<t>/ (one file per finding, named after it; committed once the bug is fixed)
 * and over its seed corpus fuzz/corpus/<t>/, so the plain and sanitizer builds of CI run the
 * fuzz targets' own checks without libFuzzer and without clang. A target's check that fails
 * aborts the program, which fails the test; the file being run is printed first, so the log
 * names the culprit.
 *
 * How the targets get in without libFuzzer: CMakeLists.txt generates, per target, a one-line
 * wrapper `#define LLVMFuzzerTestOneInput fuzz_one_<t>` + `#include "fuzz/fuzz_<t>.c"` and
 * compiles it into this program, one object per target (their static helpers never meet),
 * and writes fuzz_targets.h, a list of X(<t>) lines that builds the table below. A new
 * fuzz_<t>.c is picked up at the next configure; a target without inputs fails the test,
 * since a missing folder would otherwise let its findings go unrun.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define X(t) int fuzz_one_##t(const uint8_t *data, size_t size);
#include "fuzz_targets.h"
#undef X

struct target {
	const char *name;
	int (*one)(const uint8_t *data, size_t size);
};

#define X(t) {#t, fuzz_one_##t},
static const struct target targets[] = {
#include "fuzz_targets.h"
};
#undef X

enum { NTARGETS = sizeof(targets) / sizeof(targets[0]) };

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole file into a malloc'd buffer (at least one byte allocated). */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	uint8_t *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Runs t over every regular file of dir, in name order, except README*. Returns how many.
 * A missing folder counts as empty. */
static int run_dir(const struct target *t, const char *dir)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;

	if (d == NULL)
		return 0;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
			assert_non_null(names);
		}
		names[n] = strdup(e->d_name);
		assert_non_null(names[n]);
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), name_cmp);

	int ran = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		size_t len;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			fprintf(stderr, "fuzz_%s: %s\n", t->name, path);
			uint8_t *data = slurp(path, &len);
			t->one(data, len);
			free(data);
			ran++;
		}
		free(names[i]);
	}
	free(names);
	return ran;
}

static void test_target(void **state)
{
	const struct target *t = *state;
	char dir[4096];

	snprintf(dir, sizeof(dir), "%s/fuzz/regress/%s", CS_TEST_SRCDIR, t->name);
	int findings = run_dir(t, dir);
	snprintf(dir, sizeof(dir), "%s/fuzz/corpus/%s", CS_TEST_SRCDIR, t->name);
	int seeds = run_dir(t, dir);
	printf("fuzz_%s: %d regression inputs, %d seeds\n", t->name, findings, seeds);
	assert_true(findings + seeds > 0);
}

int main(void)
{
	struct CMUnitTest tests[NTARGETS];

	for (int i = 0; i < NTARGETS; i++) {
		tests[i] = (struct CMUnitTest){targets[i].name, test_target, NULL, NULL,
		                               (void *)&targets[i]};
	}
	return _cmocka_run_group_tests("fuzz_regress", tests, NTARGETS, NULL, NULL);
}
