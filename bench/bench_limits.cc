/*
 * bench_limits.cc - the machine's limits, measured in the same run and the same directory as
 * the stores, with the same I/O pattern the store uses (buffered I/O into files preallocated
 * with fallocate(2) mode 0, as wal/wal.c preallocates its segments).
 *
 *   limit/seq_write_8m_fdatasync  1 GiB in 8 MiB pwrite()s, fdatasync every 64 MiB and at
 *                                 the end: the ceiling for (a) ingest.
 *   limit/seq_read_8m_warm        that same file read back with 8 MiB pread()s after one
 *                                 untimed pass, so from the page cache, as (d) reopens a
 *                                 store whose log is in the page cache: the ceiling for (d).
 *   limit/seq_read_8m_cold        the same after dropping the caches (CS_BENCH_COLD=1 only).
 *   limit/pwrite4k_fdatasync      4 KiB pwrite() at the next offset of a preallocated file,
 *                                 then fdatasync(): latency and rate, the ceiling for (b)'s
 *                                 one-thread durable puts. Appending into preallocated
 *                                 (unwritten) extents is what the log does, and on ext4 it
 *                                 costs a journal commit per sync for the extent conversion.
 *   limit/pwrite4k_fdatasync_overwrite  the same at one fixed, already-written offset: no
 *                                 metadata to commit. Shown for comparison only.
 *   limit/sha256_256k             cid_hash() over a 256 KiB buffer on one core: the
 *                                 ceiling for one ingest thread, which hashes every block;
 *                                 with threads:2, on two threads at once (each its own
 *                                 buffer): the hashing ceiling of an add on 2 cores.
 *
 * Invariants:
 *   L1. Every timed region holds only the I/O or hashing being measured; file creation,
 *       preallocation and the warm-up pass are outside it.
 *   L2. Every file lies under cfg().base (B1) and is removed by release_limit_benchmarks().
 */
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

extern "C" {
/* cid.h pulls in common/cs_limits.h, which uses C11's _Static_assert; C++ spells it
 * static_assert. cid_hash() is the primitive the store hashes every block with. */
#define _Static_assert static_assert
#include "cid.h"
#undef _Static_assert
}

namespace csb {
namespace {

constexpr size_t kSeqUnit = 8 * MiB;    /* one pwrite()/pread() of the sequential tests */
constexpr size_t kSyncUnit = 4 * KiB;   /* one write of the fdatasync test */
constexpr uint64_t kSyncFile = 256 * MiB; /* room for the fdatasync test; it wraps */

/* The sequential file, shared by the write and read tests; empty until written. */
std::string g_seq_path;
uint64_t g_seq_bytes;
bool g_seq_written;

/* The fdatasync test's file, opened once and kept across the benchmark's trial runs so
 * that each trial does not pay for a new preallocation. */
int g_sync_fd = -1;
std::string g_sync_path;
uint64_t g_sync_off;

/* One 8 MiB buffer of incompressible bytes, shared by the sequential tests. */
uint8_t *seq_buffer()
{
	static uint8_t *buf;
	if (buf == nullptr) {
		buf = static_cast<uint8_t *>(aligned_alloc(4096, kSeqUnit));
		if (buf != nullptr)
			fill_random(buf, kSeqUnit, 0x5e9);
	}
	return buf;
}

int full_pwrite(int fd, const uint8_t *p, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t k = pwrite(fd, p, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		p += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

/* Reads bytes [from, to) of fd (or to its end) in 8 MiB preads into buf; returns 0 or -errno
 * and adds the bytes read to *bytes. */
int read_range(int fd, uint8_t *buf, uint64_t from, uint64_t to, uint64_t *bytes)
{
	for (uint64_t off = from; off < to;) {
		ssize_t k = pread(fd, buf, (size_t)std::min<uint64_t>(kSeqUnit, to - off), (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		off += (uint64_t)k;
		*bytes += (uint64_t)k;
	}
	return 0;
}

/* Reads the whole file in 8 MiB preads; returns 0 or -errno and the bytes read. */
int read_all(const std::string &path, uint64_t *bytes)
{
	int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	*bytes = 0;
	int rc = read_range(fd, seq_buffer(), 0, UINT64_MAX, bytes);
	close(fd);
	return rc;
}

/* Creates the sequential file, preallocates and syncs it (untimed, L1), then writes it in
 * 8 MiB pwrites with an fdatasync every sync_every bytes and at the end; *secs is the time
 * of the writes and syncs. */
int write_seq(double *secs)
{
	uint8_t *buf = seq_buffer();
	uint64_t total = g_seq_bytes;
	uint64_t sync_every = scaled(64 * MiB, MiB, kSeqUnit);
	int rc = 0;

	if (buf == nullptr)
		return -ENOMEM;
	int fd = open(g_seq_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (fallocate(fd, 0, 0, (off_t)total) != 0 || fdatasync(fd) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	double t0 = now_s();
	uint64_t off = 0, since = 0;
	while (off < total && rc == 0) {
		size_t n = (size_t)std::min<uint64_t>(kSeqUnit, total - off);
		rc = full_pwrite(fd, buf, n, off);
		off += n;
		since += n;
		if (rc == 0 && (since >= sync_every || off == total)) {
			if (fdatasync(fd) != 0)
				rc = -errno;
			since = 0;
		}
	}
	*secs = now_s() - t0;
	close(fd);
	g_seq_written = rc == 0;
	return rc;
}

/* The read tests need the file; when the write test was filtered out, write it untimed. */
int ensure_seq_file()
{
	double ignored;
	return g_seq_written ? 0 : write_seq(&ignored);
}

} // namespace

int seq_write_pass(double *secs, uint64_t *bytes)
{
	*bytes = g_seq_bytes;
	return write_seq(secs);
}

/* Makes the sequential file and reads it once, untimed (L1), on the first call. */
int warm_seq_file()
{
	static bool warmed;
	uint64_t bytes = 0;
	int rc = ensure_seq_file();
	if (rc == 0 && !warmed) {
		rc = read_all(g_seq_path, &bytes);
		warmed = rc == 0;
	}
	return rc;
}

int seq_read_warm_pass(double *secs, uint64_t *bytes)
{
	int rc = warm_seq_file();
	if (rc != 0)
		return rc;
	double t0 = now_s();
	rc = read_all(g_seq_path, bytes);
	*secs = now_s() - t0;
	return rc;
}

int seq_read_warm_pass_2t(double *secs, uint64_t *bytes)
{
	struct stat st;
	int rc = warm_seq_file();
	if (rc == 0 && stat(g_seq_path.c_str(), &st) != 0)
		rc = -errno;
	std::unique_ptr<uint8_t, decltype(&free)> buf(
		static_cast<uint8_t *>(aligned_alloc(4096, kSeqUnit)), &free);
	int fd = rc != 0 ? -1 : open(g_seq_path.c_str(), O_RDONLY | O_CLOEXEC);
	if (rc != 0 || !buf || fd < 0) {
		if (fd >= 0)
			close(fd);
		return rc != 0 ? rc : !buf ? -ENOMEM : -errno;
	}
	memset(buf.get(), 0, kSeqUnit); /* its pages faulted in before the clock starts (L1) */
	uint64_t half = (uint64_t)st.st_size / 2 / kSeqUnit * kSeqUnit, first = 0, second = 0;
	int rc2 = 0;
	double t0 = now_s();
	std::thread other([&] { rc2 = read_range(fd, buf.get(), half, UINT64_MAX, &second); });
	rc = read_range(fd, seq_buffer(), 0, half, &first);
	other.join();
	*secs = now_s() - t0;
	close(fd);
	*bytes = first + second;
	return rc != 0 ? rc : rc2;
}

namespace {

void bm_seq_write(benchmark::State &state)
{
	double total_s = 0;
	for (auto _ : state) {
		double secs = 0;
		int rc = write_seq(&secs);
		if (rc != 0) {
			state.SkipWithError(("sequential write: " + std::string(strerror(-rc)))
						    .c_str());
			break;
		}
		state.SetIterationTime(secs);
		total_s += secs;
	}
	if (total_s > 0)
		state.counters["MB/s"] = (double)g_seq_bytes * (double)state.iterations() / MB /
					 total_s;
	state.counters["file_MB"] = (double)g_seq_bytes / MB;
}

void bm_seq_read(benchmark::State &state, bool cold)
{
	int rc = ensure_seq_file();
	if (rc != 0) {
		state.SkipWithError(("writing the read file: " + std::string(strerror(-rc)))
					    .c_str());
	}
	double total_s = 0;
	uint64_t bytes = 0;
	for (auto _ : state) {
		if (cold)
			rc = drop_caches();
		else
			rc = read_all(g_seq_path, &bytes); /* warm pass, untimed (L1) */
		if (rc != 0) {
			state.SkipWithError(("preparing the read: " + std::string(strerror(-rc)))
						    .c_str());
			break;
		}
		double t0 = now_s();
		rc = read_all(g_seq_path, &bytes);
		double secs = now_s() - t0;
		if (rc != 0 || bytes != g_seq_bytes) {
			state.SkipWithError("sequential read failed or came up short");
			break;
		}
		state.SetIterationTime(secs);
		total_s += secs;
	}
	if (total_s > 0)
		state.counters["MB/s"] = (double)bytes * (double)state.iterations() / MB / total_s;
}

int open_sync_file()
{
	if (g_sync_fd >= 0)
		return 0;
	g_sync_path = cfg().base + "/limit_fdatasync.dat";
	int fd = open(g_sync_path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (fallocate(fd, 0, 0, (off_t)kSyncFile) != 0 || fdatasync(fd) != 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	g_sync_fd = fd;
	g_sync_off = 0;
	return 0;
}

/* overwrite: write at offset 0 each time (written blocks, no extent conversion) instead of
 * the next offset of the preallocated file. */
void bm_fdatasync(benchmark::State &state, bool overwrite)
{
	alignas(4096) static uint8_t buf[kSyncUnit];
	std::vector<double> lat_us;
	int rc = open_sync_file();

	if (rc != 0)
		state.SkipWithError(("fdatasync file: " + std::string(strerror(-rc))).c_str());
	fill_random(buf, sizeof(buf), 0xf5);
	lat_us.reserve((size_t)std::min<benchmark::IterationCount>(state.max_iterations,
								    1 << 24));
	if (overwrite && rc == 0)
		rc = full_pwrite(g_sync_fd, buf, kSyncUnit, 0); /* make block 0 written */
	for (auto _ : state) {
		uint64_t off = overwrite ? 0 : g_sync_off;
		uint64_t t0 = now_ns();
		rc = full_pwrite(g_sync_fd, buf, kSyncUnit, off);
		if (rc == 0 && fdatasync(g_sync_fd) != 0)
			rc = -errno;
		lat_us.push_back((double)(now_ns() - t0) / 1e3);
		if (rc != 0) {
			state.SkipWithError(("pwrite+fdatasync: " + std::string(strerror(-rc)))
						    .c_str());
			break;
		}
		if (!overwrite) {
			g_sync_off += kSyncUnit;
			if (g_sync_off + kSyncUnit > kSyncFile)
				g_sync_off = 0; /* wrapped: from here it overwrites */
		}
	}
	state.counters["syncs/s"] =
		benchmark::Counter((double)state.iterations(), benchmark::Counter::kIsRate);
	state.counters["p50_us"] = percentile(lat_us, 50);
	state.counters["p99_us"] = percentile(lat_us, 99);
}

void bm_sha256(benchmark::State &state)
{
	const size_t len = 256 * KiB;
	std::vector<uint8_t> data(len);
	uint8_t digest[CS_DIGEST_MAX];

	fill_random(data.data(), len, 0x54a);
	for (auto _ : state) {
		int rc = cid_hash(CS_HASH_SHA2_256, data.data(), len, digest);
		if (rc != 0) {
			state.SkipWithError(("cid_hash: " + cs_error_text(rc)).c_str());
			break;
		}
		benchmark::DoNotOptimize(digest);
		data[0] = digest[0]; /* a data dependency, so no call can be skipped */
	}
	state.counters["MB/s"] = benchmark::Counter((double)state.iterations() * len / MB,
						    benchmark::Counter::kIsRate);
}

} // namespace

static void set_seq_file()
{
	if (g_seq_path.empty()) {
		g_seq_path = cfg().base + "/limit_seq.dat";
		g_seq_bytes = scaled(GiB, MiB, 8 * MiB);
	}
}

void register_seq_write()
{
	set_seq_file();
	benchmark::RegisterBenchmark(CSB_SEQ_WRITE, bm_seq_write)
		->Iterations(1)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void register_seq_read(bool cold)
{
	set_seq_file();
	benchmark::RegisterBenchmark(cold ? CSB_SEQ_READ_COLD : CSB_SEQ_READ, bm_seq_read, cold)
		->Iterations(1)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void register_fdatasync()
{
	auto *b = benchmark::RegisterBenchmark(CSB_FSYNC, bm_fdatasync, false)
			  ->UseRealTime()
			  ->Unit(benchmark::kMicrosecond);
	auto *o = benchmark::RegisterBenchmark(CSB_FSYNC_OVERWRITE, bm_fdatasync, true)
			  ->UseRealTime()
			  ->Unit(benchmark::kMicrosecond);
	if (cfg().min_time > 0) {
		b->MinTime(cfg().min_time);
		o->MinTime(cfg().min_time / 2);
	}
}

void register_sha256()
{
	benchmark::RegisterBenchmark(CSB_SHA, bm_sha256)
		->Threads(1)
		->Threads(2)
		->UseRealTime()
		->Unit(benchmark::kMicrosecond);
}

void release_limit_benchmarks()
{
	if (g_sync_fd >= 0) {
		close(g_sync_fd);
		g_sync_fd = -1;
	}
	if (!g_sync_path.empty())
		unlink(g_sync_path.c_str());
	if (!g_seq_path.empty())
		unlink(g_seq_path.c_str());
	g_seq_written = false;
}

} // namespace csb
