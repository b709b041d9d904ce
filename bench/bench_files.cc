/*
 * bench_files.cc - the Files figures (issue #3), through include/cidstore.h only.
 *
 *   files/add_1g_sync  cs_add_fd() of a 1 GiB file of random bytes, from the page cache
 *       (written and read once before the clock starts), into a fresh store under
 *       CS_DURABLE_SYNC with the default add options (v1 profile, 256 KiB chunks, raw leaves,
 *       sha2-256, one hashing thread per online CPU). The time covers the open(2) of the file
 *       and cs_add_fd(), which ends with cs_store_sync(), so every block is durable when the
 *       clock stops. Compared with min(limit/seq_write_8m_fdatasync,
 *       limit/sha256_256k/threads:2): an add writes every byte once and hashes it once.
 *       Three adds, each paired with a timed pass of the write limit (seq_write_pass), the
 *       pair's order alternating: `MB/s` and `write_limit_MB/s` are the medians of the
 *       three, and the summary takes the write limit from here (the disk is shared, and a
 *       limit measured once, before, moved by 2x against the add).
 *   files/cat_1g_warm  cs_cat() of that file, whole, in 8 MiB reads into one buffer (the
 *       limit's read size), its log in the page cache (the add just wrote it, and one untimed
 *       pass reads it through and checks it against the file). Five timed passes, each
 *       between a timed pass of limit/seq_read_8m_warm's read (seq_read_warm_pass) and one
 *       of the same file read by two threads, a half each (seq_read_warm_pass_2t), the two's
 *       order alternating, so that a cat and its limits see the same load: `MB/s`,
 *       `limit_MB/s` and `limit_2t_MB/s` are the medians of the five, `ratio` and `ratio_2t`
 *       the cat's over each. The log reads a long run on two cores when the second is free
 *       (R2 of wal/wal.c), so `ratio` sets it against one reader thread, the target,
 *       and `ratio_2t` against a reader that uses both cores as well. On this shared machine
 *       a limit measured on its own, seconds or minutes away, moved by 2x against the cat;
 *       the summary compares the cat with its interleaved limits.
 *
 * Invariants:
 *   F1. Timed regions hold only the add (open of the input and cs_add_fd) or the cat passes;
 *       the input file is made, and the store opened and closed, outside them (S1).
 *   F2. Every figure is checked for sense: the add's size and block count (leaves plus
 *       nodes of a 174-ary tree over 256 KiB chunks), the cat's bytes against the file in the
 *       untimed pass and its length in every timed one; a mismatch fails the benchmark (S3).
 *   F3. The store and the input lie under cfg().base (B1); release_file_benchmarks() removes
 *       them.
 */
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "bench.h"

namespace csb {
namespace {

constexpr size_t kChunk = 256 * KiB; /* the default chunk */
constexpr size_t kRead = 8 * MiB;    /* cat's read size, as limit/seq_read's */

struct FileBench {
	std::string input; /* the input file (F3) */
	uint64_t bytes = 0;
	std::string store; /* the store the last add left, for cat */
	cs_cid root{};
	bool added = false;
};
FileBench g_file;

void fail(benchmark::State &state, const char *what, int rc)
{
	state.SkipWithError((std::string(what) + ": " + cs_error_text(rc)).c_str());
}

/* Writes the input once (untimed, F1) and reads it back so that it is in the page cache. */
int make_input()
{
	if (!g_file.input.empty())
		return 0;
	uint64_t total = scaled(GiB, kChunk, 4 * kChunk);
	std::unique_ptr<uint8_t, decltype(&free)> buf(
		static_cast<uint8_t *>(aligned_alloc(4096, kRead)), &free);
	if (!buf)
		return -ENOMEM;
	std::string path = cfg().base + "/file_input.dat";
	int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int rc = 0;
	for (uint64_t off = 0; off < total && rc == 0; off += kRead) {
		size_t n = (size_t)std::min<uint64_t>(kRead, total - off);
		fill_random(buf.get(), n, 0xf11e0000 + off / kRead);
		if (pwrite(fd, buf.get(), n, (off_t)off) != (ssize_t)n)
			rc = -EIO;
	}
	for (uint64_t off = 0; off < total && rc == 0; off += kRead)
		if (pread(fd, buf.get(), kRead, (off_t)off) < 0)
			rc = -errno;
	close(fd);
	if (rc != 0) {
		unlink(path.c_str());
		return rc;
	}
	g_file.input = path;
	g_file.bytes = total;
	return 0;
}

/* Blocks of a v1 add of n bytes in 256 KiB chunks: leaves, then nodes level by level. */
uint64_t expected_blocks(uint64_t n)
{
	uint64_t level = std::max<uint64_t>(1, (n + kChunk - 1) / kChunk), blocks = level;
	while (level > 1) {
		level = (level + CS_ADD_LINKS_MAX - 1) / CS_ADD_LINKS_MAX;
		blocks += level;
	}
	return blocks;
}

void bm_add(benchmark::State &state)
{
	int rc = make_input();
	if (rc != 0)
		fail(state, "making the input", rc);
	uint64_t log_bytes = 0;
	std::vector<double> add_mbs, lim_mbs;

	for (auto _ : state) {
		bool limit_first = add_mbs.size() % 2 == 0; /* alternate the pair's order */
		double lim_s = 0;
		uint64_t lim_bytes = 0;
		if (limit_first && (rc = seq_write_pass(&lim_s, &lim_bytes)) != 0) {
			state.SkipWithError(("limit write: " + std::string(strerror(-rc))).c_str());
			break;
		}
		if (!g_file.store.empty())
			remove_tree(g_file.store);
		g_file.added = false;
		g_file.store = fresh_path("file_add");
		cs_options o;
		cs_options_init(&o);
		o.flags = CS_OPEN_CREATE;
		o.durability = CS_DURABLE_SYNC;
		cs_store *s = nullptr;
		if ((rc = cs_store_open(g_file.store.c_str(), &o, &s)) != 0) {
			fail(state, "cs_store_open", rc);
			break;
		}
		g_backend = "";
		cs_stat st;
		if (cs_store_stat(s, &st) == 0 && st.io_backend != nullptr)
			g_backend = st.io_backend;
		uint64_t size = 0;
		double t0 = now_s();
		int fd = open(g_file.input.c_str(), O_RDONLY | O_CLOEXEC);
		rc = fd < 0 ? -errno : cs_add_fd(s, nullptr, fd, &g_file.root, &size);
		double secs = now_s() - t0;
		if (fd >= 0)
			close(fd);
		if (rc != 0) {
			fail(state, "cs_add_fd", rc);
			cs_store_close(s);
			break;
		}
		cs_store_stat(s, &st);
		log_bytes = st.log_bytes;
		if ((rc = cs_store_close(s)) != 0) {
			fail(state, "cs_store_close", rc);
			break;
		}
		if (size != g_file.bytes || st.blocks != expected_blocks(g_file.bytes)) { /* F2 */
			state.SkipWithError("add: wrong size or block count");
			break;
		}
		g_file.added = true;
		if (!limit_first && (rc = seq_write_pass(&lim_s, &lim_bytes)) != 0) {
			state.SkipWithError(("limit write: " + std::string(strerror(-rc))).c_str());
			break;
		}
		state.SetIterationTime(secs);
		add_mbs.push_back((double)g_file.bytes / MB / secs);
		lim_mbs.push_back((double)lim_bytes / MB / lim_s);
	}
	if (!add_mbs.empty() && add_mbs.size() == lim_mbs.size()) {
		state.counters["MB/s"] = percentile(add_mbs, 50);
		state.counters["write_limit_MB/s"] = percentile(lim_mbs, 50);
	}
	state.counters["file_MB"] = (double)g_file.bytes / MB;
	state.counters["log_MB"] = (double)log_bytes / MB;
	unsigned threads = 0;
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	threads = n < 1 ? 1 : n > CS_ADD_THREADS_MAX ? CS_ADD_THREADS_MAX : (unsigned)n;
	state.counters["hash_threads"] = threads;
}

/* Reads the whole file with cs_cat in kRead pieces into buf; with check, compares each piece
 * with the input file. Returns 0, a store error, or CS_ECORRUPT for a mismatch. */
int cat_all(cs_store *s, uint8_t *buf, uint8_t *want, int fd)
{
	for (uint64_t off = 0; off < g_file.bytes; off += kRead) {
		size_t n = (size_t)std::min<uint64_t>(kRead, g_file.bytes - off), got = 0;
		int rc = cs_cat(s, &g_file.root, off, buf, n, &got, nullptr);
		if (rc != 0)
			return rc;
		if (got != n)
			return CS_ECORRUPT;
		if (want != nullptr && (pread(fd, want, n, (off_t)off) != (ssize_t)n ||
					memcmp(buf, want, n) != 0))
			return CS_ECORRUPT;
	}
	return 0;
}

void bm_cat(benchmark::State &state)
{
	std::unique_ptr<uint8_t, decltype(&free)> buf(
		static_cast<uint8_t *>(aligned_alloc(4096, kRead)), &free);
	std::unique_ptr<uint8_t, decltype(&free)> want(
		static_cast<uint8_t *>(aligned_alloc(4096, kRead)), &free);
	cs_store *s = nullptr;
	int rc = 0;

	if (!g_file.added) {
		state.SkipWithError("cat: no file (the add benchmark did not run or failed)");
	} else if (!buf || !want) {
		state.SkipWithError("cat: out of memory");
	} else {
		cs_options o;
		cs_options_init(&o);
		if ((rc = cs_store_open(g_file.store.c_str(), &o, &s)) != 0) {
			fail(state, "cs_store_open", rc);
		} else {
			int fd = open(g_file.input.c_str(), O_RDONLY | O_CLOEXEC);
			rc = fd < 0 ? -errno : cat_all(s, buf.get(), want.get(), fd); /* F2 */
			if (fd >= 0)
				close(fd);
			if (rc != 0)
				fail(state, "untimed cat pass", rc);
		}
	}
	std::vector<double> cat_mbs, lim_mbs, lim2_mbs;
	for (auto _ : state) {
		if (s == nullptr || rc != 0)
			break;
		double secs = 0, lim_s = 0, lim2_s = 0;
		uint64_t lim_bytes = 0, lim2_bytes = 0;
		/* The cat between its two limits, whose order alternates. */
		bool one_first = cat_mbs.size() % 2 == 0;
		rc = one_first ? seq_read_warm_pass(&lim_s, &lim_bytes)
		               : seq_read_warm_pass_2t(&lim2_s, &lim2_bytes);
		if (rc != 0) {
			state.SkipWithError(("limit read: " + std::string(strerror(-rc))).c_str());
			break;
		}
		double t0 = now_s();
		rc = cat_all(s, buf.get(), nullptr, -1);
		secs = now_s() - t0;
		if (rc != 0) {
			fail(state, "cs_cat", rc);
			break;
		}
		rc = one_first ? seq_read_warm_pass_2t(&lim2_s, &lim2_bytes)
		               : seq_read_warm_pass(&lim_s, &lim_bytes);
		if (rc != 0) {
			state.SkipWithError(("limit read: " + std::string(strerror(-rc))).c_str());
			break;
		}
		state.SetIterationTime(secs);
		cat_mbs.push_back((double)g_file.bytes / MB / secs);
		lim_mbs.push_back((double)lim_bytes / MB / lim_s);
		lim2_mbs.push_back((double)lim2_bytes / MB / lim2_s);
	}
	if (s != nullptr)
		cs_store_close(s);
	if (!cat_mbs.empty() && cat_mbs.size() == lim_mbs.size()) {
		double cat = percentile(cat_mbs, 50), lim = percentile(lim_mbs, 50),
		       lim2 = percentile(lim2_mbs, 50);
		state.counters["MB/s"] = cat;
		state.counters["limit_MB/s"] = lim;
		state.counters["ratio"] = cat / lim;
		state.counters["limit_2t_MB/s"] = lim2;
		state.counters["ratio_2t"] = cat / lim2;
	}
	state.counters["file_MB"] = (double)g_file.bytes / MB;
}

} // namespace

void register_file_add()
{
	benchmark::RegisterBenchmark(CSB_FILE_ADD, bm_add)
		->Iterations(3)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void register_file_cat()
{
	benchmark::RegisterBenchmark(CSB_FILE_CAT, bm_cat)
		->Iterations(5)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void release_file_benchmarks()
{
	if (!g_file.store.empty())
		remove_tree(g_file.store);
	if (!g_file.input.empty())
		unlink(g_file.input.c_str());
	g_file = FileBench();
}

} // namespace csb
