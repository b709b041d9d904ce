/*
 * bench.h - what the benchmark files share: configuration, scratch directories, timing,
 * data generation and small file helpers (C++17, Google Benchmark).
 *
 * cs_bench measures the store through the public header only, and measures the machine's own
 * limits (sequential write and read bandwidth, fdatasync rate, SHA-256 speed) in the same
 * run and the same file system, so that every store figure can be printed as a ratio to the
 * limit it is bounded by. bench/README.md explains each figure.
 *
 * Invariants:
 *   B1. Every file and store the benchmarks create lies under cfg().base, a directory that
 *       this process created with mkdtemp() and removes, whole, before it exits.
 *   B2. Data sizes are the sizes times cfg().scale (CS_BENCH_SCALE); I/O unit sizes
 *       (4 KiB and 256 KiB blocks, 8 MiB pwrites) are never scaled, so a smoke run takes the
 *       same code paths as a full one, only fewer times.
 *   B3. A figure is reported, never asserted: the exit status is non-zero only when a
 *       benchmark could not run (a store call failed), not because a figure is low.
 */
#ifndef CS_BENCH_H
#define CS_BENCH_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "cidstore.h"

namespace csb {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

/* MB in every "MB/s" figure is 10^6 bytes, as dd and fio's "MB/s" are. */
constexpr double MB = 1e6;

struct Config {
	std::string base;     /* B1: our mkdtemp() directory */
	double scale = 1.0;   /* CS_BENCH_SCALE */
	bool cold = false;    /* CS_BENCH_COLD=1 and we may drop caches */
	double min_time = 0;  /* MinTime for the sync-bound benchmarks; 0 = the flag's */
};

/* The process-wide configuration, set once by main() before any benchmark runs. */
Config &cfg();

/* bytes * scale rounded down to a multiple of unit, and at least `floor` (B2). */
uint64_t scaled(uint64_t bytes, uint64_t unit, uint64_t floor);

/* A fresh path under the base directory, not yet existing: base/<tag>.<n>. */
std::string fresh_path(const char *tag);

/* Removes path and everything under it; missing is fine. */
void remove_tree(const std::string &path);

/* Monotonic clock in nanoseconds and seconds. */
uint64_t now_ns();
double now_s();

/* Fills buf with deterministic pseudo-random bytes drawn from seed (splitmix64). */
void fill_random(void *buf, size_t len, uint64_t seed);

/* The p-th percentile (0..100) of v, nearest-rank; v is sorted in place. 0 for empty v. */
double percentile(std::vector<double> &v, double p);

/* "cs_strerror: cs_errmsg" for a failed store call. */
std::string cs_error_text(int rc);

/* Syncs and asks the kernel to drop its clean caches (needs root). Returns 0 or -errno. */
int drop_caches();

/* The I/O backend the last store opened by a benchmark ran on ("io_uring", "psync"). */
extern std::string g_backend;

/* Registration, one function per figure. main() registers each store figure right after the
 * limit it is compared with, so that the two are measured as close in time as they can be
 * on a machine whose disk other work shares. */
void register_seq_write();
void register_seq_read(bool cold);
void register_fdatasync();
void register_sha256();
void register_ingest();
void register_durable_put();
void register_warm_get();
void register_open(bool cold);
void register_open_checkpoint();
void register_file_add();
void register_file_cat();
void register_gc();

/* One timed pass of limit/seq_read_8m_warm (the file written, and read once untimed, on the
 * first call): *secs and *bytes of the 8 MiB preads. For figures that measure their limit
 * interleaved with themselves. Returns 0 or -errno. */
int seq_read_warm_pass(double *secs, uint64_t *bytes);

/* The same file read by two threads at once, each its half with 8 MiB preads into its own
 * buffer: the ceiling of a reader that uses both cores. Returns 0 or -errno. */
int seq_read_warm_pass_2t(double *secs, uint64_t *bytes);

/* One timed pass of limit/seq_write_8m_fdatasync (the file created and preallocated
 * untimed): *secs of its writes and syncs, *bytes written. Returns 0 or -errno. */
int seq_write_pass(double *secs, uint64_t *bytes);

/* Releases what the benchmarks kept between runs (open stores, data pools, files). */
void release_limit_benchmarks();
void release_store_benchmarks();
void release_file_benchmarks();
void release_gc_benchmarks();

/* Names of the benchmarks, shared by registration and the summary. */
#define CSB_SEQ_WRITE "limit/seq_write_8m_fdatasync"
#define CSB_SEQ_READ "limit/seq_read_8m_warm"
#define CSB_SEQ_READ_COLD "limit/seq_read_8m_cold"
#define CSB_FSYNC "limit/pwrite4k_fdatasync"
#define CSB_FSYNC_OVERWRITE "limit/pwrite4k_fdatasync_overwrite"
#define CSB_SHA "limit/sha256_256k"
#define CSB_INGEST "a/ingest_256k_sha256_raw"
#define CSB_PUT "b/durable_put_4k"
#define CSB_GET4K "c/warm_get_4k"
#define CSB_GET256K "c/warm_get_256k"
#define CSB_OPEN "d/open_1g_replay_warm"
#define CSB_OPEN_COLD "d/open_1g_replay_cold"
#define CSB_OPEN_CKPT "e/open_1m_checkpoint"
#define CSB_FILE_ADD "files/add_1g_sync"
#define CSB_FILE_CAT "files/cat_1g_warm"
#define CSB_GC "gc/collect_1m_half"
#define CSB_GC_INGEST "gc/ingest_during_gc"
#define CSB_GC_STALL "gc/stall_paced_4k"
#define CSB_GC_STALL_SYNC "gc/stall_paced_4k_sync"
#define CSB_PINS "gc/pin_1m"

} // namespace csb

#endif
