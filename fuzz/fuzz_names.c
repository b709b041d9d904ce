/*
 * fuzz_names.c - libFuzzer target for the name rules, the name table and the name payloads.
 *
 * The same input is read three ways, and checked for what engine/names.h and wal/record.h
 * promise:
 *  1. As a name: name_check() accepts it exactly when an independent reference does (decode
 *     each sequence by its lead byte's bit pattern, then require the shortest re-encoding,
 *     no surrogate, nothing above U+10FFFF, no Cc control), and a refusal's message names
 *     the rule and the byte the reference names.
 *  2. As a program of table operations (two bytes each: opcode, key) on 40 keys with shared
 *     prefixes: the AVL table agrees with a flag-per-key model on every set, delete and get;
 *     it passes names_check_tree() at the end, and names_next() from a key chosen by the
 *     input walks the present keys in byte order.
 *  3. As a name-set and a name-delete payload: decoding never reads outside the input, and
 *     an accepted payload has exactly the length its fields say, with fixed fields that
 *     re-encode to the input's bytes.
 * A violated check aborts, which libFuzzer reports as a crash with the input saved.
 *
 * Build: cmake -DCS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
 *        -DCS_SANITIZE=address,undefined; run: ./fuzz_names ../fuzz/corpus/names
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidstore.h"
#include "names.h"
#include "record.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_names: check failed: %s (line %d)\n", #cond,         \
			        __LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* Table programs longer than this only cost time. */
#define OPS_MAX 4096

/* ---- 1. the name rules ----------------------------------------------------------------- */

/* The reference: the message name_check() must give for p[0..len), or "" if valid. */
static void reference(const uint8_t *p, size_t len, char *why, size_t cap)
{
	why[0] = '\0';
	if (len == 0) {
		snprintf(why, cap, "name is empty");
		return;
	}
	if (len > CS_NAME_MAX) {
		snprintf(why, cap, "name is %zu bytes, longer than %d", len, CS_NAME_MAX);
		return;
	}
	for (size_t i = 0; i < len;) {
		uint8_t b = p[i];
		size_t n = b < 0x80             ? 1
		           : (b & 0xe0) == 0xc0 ? 2
		           : (b & 0xf0) == 0xe0 ? 3
		           : (b & 0xf8) == 0xf0 ? 4
		                                : 0;
		uint32_t cp = n == 1 ? b : n == 2 ? b & 0x1fu : n == 3 ? b & 0x0fu : b & 0x07u;
		int ok = n != 0 && i + n <= len;
		for (size_t k = 1; ok && k < n; k++) {
			ok = (p[i + k] & 0xc0) == 0x80;
			cp = cp << 6 | (p[i + k] & 0x3fu);
		}
		size_t shortest = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
		if (!ok || shortest != n || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
			snprintf(why, cap, "name is not valid UTF-8 at byte %zu", i);
			return;
		}
		if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
			if (cp == 0)
				snprintf(why, cap, "name has a NUL at byte %zu", i);
			else if (cp == '\t')
				snprintf(why, cap, "name has a tab at byte %zu", i);
			else if (cp == '\n')
				snprintf(why, cap, "name has a newline at byte %zu", i);
			else if (cp == '\r')
				snprintf(why, cap, "name has a carriage return at byte %zu", i);
			else
				snprintf(why, cap, "name has control character U+%04X at byte %zu",
				         (unsigned)cp, i);
			return;
		}
		i += n;
	}
}

static void check_rules(const uint8_t *data, size_t size)
{
	char why[128], want[128];

	why[0] = '\0';
	int rc = name_check(data, size, why, sizeof(why));
	reference(data, size, want, sizeof(want));
	CHECK(rc == 0 || rc == CS_EINVAL);
	CHECK((rc == 0) == (want[0] == '\0'));
	if (rc != 0)
		CHECK(strcmp(why, want) == 0);
}

/* ---- 2. the table ---------------------------------------------------------------------- */

enum { NKEYS = 40 };

static void key_name(char *buf, size_t cap, unsigned k)
{
	static const char *const stems[] = {"a", "a/", "a/b", "ab", "b", "\xc3\xa9", "z", "Z"};
	snprintf(buf, cap, "%s%.*s", stems[k % 8], (int)(k / 8), "xxxxx");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check_table(const uint8_t *data, size_t size)
{
	static char keys[NKEYS][16];
	static struct name_entry out[NKEYS + 1];
	uint64_t model[NKEYS] = {0};
	int present[NKEYS];
	const char *sorted[NKEYS];
	struct names *t;
	uint64_t count = 0;

	for (unsigned k = 0; k < NKEYS; k++) {
		key_name(keys[k], sizeof(keys[k]), k);
		present[k] = 0;
	}
	if (names_create(&t) != 0)
		return;
	size_t nops = size / 2 < OPS_MAX ? size / 2 : OPS_MAX;
	for (size_t i = 0; i < nops; i++) {
		uint8_t op = data[2 * i] % 3;
		unsigned k = data[2 * i + 1] % NKEYS;
		const uint8_t *key = (const uint8_t *)keys[k];
		size_t len = strlen(keys[k]);
		struct name_val v = {.size = i, .time_ns = (int64_t)i};
		if (op == 0) {
			int rc = names_set(t, key, len, &v);
			if (rc == -ENOMEM) /* nothing changed */
				continue;
			CHECK(rc == (present[k] ? 1 : 0));
			count += !present[k];
			present[k] = 1;
			model[k] = i;
		} else if (op == 1) {
			CHECK(names_del(t, key, len) == (present[k] ? 0 : CS_ENOTFOUND));
			count -= present[k];
			present[k] = 0;
		} else {
			int rc = names_get(t, key, len, &v);
			CHECK(rc == (present[k] ? 0 : CS_ENOTFOUND));
			CHECK(!present[k] || v.size == model[k]);
		}
		CHECK(names_count(t) == count);
	}
	CHECK(names_check_tree(t) == 0);

	size_t n = 0;
	for (unsigned k = 0; k < NKEYS; k++)
		if (present[k])
			sorted[n++] = keys[k];
	qsort(sorted, n, sizeof(sorted[0]), cmp_str);
	CHECK(names_next(t, NULL, 0, out, NKEYS + 1) == (int)n);
	for (size_t i = 0; i < n; i++)
		CHECK(strcmp(out[i].name, sorted[i]) == 0 && out[i].len == strlen(sorted[i]));
	/* From after a key the input picks (present or not). */
	if (size > 0) {
		const char *after = keys[data[size - 1] % NKEYS];
		int m = names_next(t, (const uint8_t *)after, strlen(after), out, NKEYS + 1);
		size_t first = 0;
		while (first < n && strcmp(sorted[first], after) <= 0)
			first++;
		CHECK((size_t)m == n - first);
		for (int i = 0; i < m; i++)
			CHECK(strcmp(out[i].name, sorted[first + (size_t)i]) == 0);
	}
	names_destroy(t);
}

/* ---- 3. the payloads ------------------------------------------------------------------- */

static void check_payloads(const uint8_t *data, size_t size)
{
	struct rec_name_set ns;
	struct rec_name_del nd;
	uint8_t meta[REC_NAME_SET_META];

	/* An exact-size copy, so ASan sees any read past the payload. */
	uint8_t *p = malloc(size ? size : 1);
	if (p == NULL)
		return;
	memcpy(p, data, size);
	if (rec_name_set_decode(p, (uint32_t)size, &ns) == 0) {
		CHECK(size == REC_NAME_SET_META + (size_t)ns.name_len + ns.cid_len);
		CHECK(ns.name_len >= 1 && ns.name_len <= CS_NAME_MAX);
		CHECK(ns.cid_len >= 1 && ns.cid_len <= CS_CID_MAX);
		CHECK(ns.name == p + REC_NAME_SET_META && ns.cid == ns.name + ns.name_len);
		rec_name_set_meta(meta, ns.name_len, ns.cid_len, ns.size, ns.time_ns);
		CHECK(memcmp(meta, p, sizeof(meta)) == 0);
	}
	if (rec_name_del_decode(p, (uint32_t)size, &nd) == 0) {
		CHECK(size == REC_NAME_DEL_META + (size_t)nd.name_len);
		CHECK(nd.name_len >= 1 && nd.name_len <= CS_NAME_MAX);
		rec_name_del_meta(meta, nd.name_len);
		CHECK(memcmp(meta, p, REC_NAME_DEL_META) == 0);
	}
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_rules(data, size);
	check_table(data, size);
	check_payloads(data, size);
	return 0;
}
