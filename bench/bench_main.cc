/*
 * bench_main.cc - cs_bench's main: reads the environment, makes the scratch directory, runs
 * the benchmarks through Google Benchmark with a reporter that also keeps every figure, and
 * prints a summary table of each store figure against the machine limit that bounds it and
 * the issue's target (bench/README.md explains the figures).
 *
 * Environment:
 *   CS_BENCH_DIR    parent of the scratch directory (default /var/tmp, on the real disk)
 *   CS_BENCH_SCALE  factor on every data size (default 1.0; 0.01 is a smoke run)
 *   CS_BENCH_COLD   1: also run the cold-cache variants (needs root: drops the page cache)
 *   CIDSTORE_IO     uring | psync: the store's I/O backend (read by the library)
 *
 * Invariants:
 *   M1. The exit status is 0 whatever the figures are (B3); it is 1 when a benchmark failed
 *       to run, and 2 for bad configuration.
 *   M2. The scratch directory is removed on every exit path after it is made, except a kill
 *       by a signal, where its name is printed for removal by hand.
 *   M3. A figure in the summary is the one Google Benchmark reported: the median aggregate
 *       when --benchmark_repetitions gives one, else the (last) measured run.
 */
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>
#include <algorithm>

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

namespace csb {

std::string g_backend;

Config &cfg()
{
	static Config c;
	return c;
}

uint64_t scaled(uint64_t bytes, uint64_t unit, uint64_t floor)
{
	double v = (double)bytes * cfg().scale;
	uint64_t n = (uint64_t)v / unit * unit;
	return std::max(n, floor);
}

std::string fresh_path(const char *tag)
{
	static unsigned n;
	return cfg().base + "/" + tag + "." + std::to_string(n++);
}

static int remove_one(const char *path, const struct stat *, int, struct FTW *)
{
	remove(path);
	return 0; /* keep going: remove what can be removed */
}

void remove_tree(const std::string &path)
{
	nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t now_ns()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double now_s()
{
	return (double)now_ns() / 1e9;
}

void fill_random(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = static_cast<uint8_t *>(buf);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
	while (len > 0) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ull);
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		size_t k = std::min(len, sizeof(z));
		memcpy(p, &z, k);
		p += k;
		len -= k;
	}
}

double percentile(std::vector<double> &v, double p)
{
	if (v.empty())
		return 0;
	std::sort(v.begin(), v.end());
	size_t rank = (size_t)(p / 100.0 * (double)v.size() + 0.999999);
	rank = std::min(std::max<size_t>(rank, 1), v.size());
	return v[rank - 1];
}

std::string cs_error_text(int rc)
{
	std::string s = cs_strerror(rc);
	const char *m = cs_errmsg();
	if (m != nullptr && m[0] != '\0')
		s += std::string(": ") + m;
	return s;
}

int drop_caches()
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = write(fd, "3\n", 2) == 2 ? 0 : -errno;
	close(fd);
	return rc;
}

namespace {

/* ---- Collecting the figures (M3) ------------------------------------------------------- */

struct Figure {
	bool error = false;
	std::string message;
	bool median = false;
	benchmark::UserCounters counters;
};
std::map<std::string, Figure> g_figs; /* key: name + "@" + threads */
bool g_any_error;

std::string key_of(const std::string &name, int64_t threads)
{
	return name + "@" + std::to_string(threads);
}

class Collector : public benchmark::ConsoleReporter {
public:
	explicit Collector(OutputOptions o) : ConsoleReporter(o)
	{
	}
	void ReportRuns(const std::vector<Run> &runs) override
	{
		for (const Run &r : runs)
			keep(r);
		ConsoleReporter::ReportRuns(runs);
	}

private:
	static void keep(const Run &r)
	{
		Figure &f = g_figs[key_of(r.run_name.function_name, r.threads)];
		if (r.error_occurred) {
			f.error = true;
			f.message = r.error_message;
			g_any_error = true;
			return;
		}
		if (r.run_type == Run::RT_Aggregate) {
			if (r.aggregate_name != "median")
				return;
			f.median = true;
			f.counters = r.counters;
		} else if (!f.median) {
			f.counters = r.counters;
		}
	}
};

/* The counter `c` of benchmark `name` run with `threads` threads, or a negative value when
 * the benchmark did not run (filtered out) or failed. */
double fig(const char *name, const char *c, int threads = 1)
{
	auto it = g_figs.find(key_of(name, threads));
	if (it == g_figs.end() || it->second.error)
		return -1;
	auto ct = it->second.counters.find(c);
	return ct == it->second.counters.end() ? -1 : (double)ct->second;
}

/* ---- The summary table ----------------------------------------------------------------- */

std::string num(double v, const char *unit)
{
	char b[64];
	if (v < 0)
		return "n/a";
	if (v >= 100)
		snprintf(b, sizeof(b), "%.0f %s", v, unit);
	else if (v >= 10)
		snprintf(b, sizeof(b), "%.1f %s", v, unit);
	else
		snprintf(b, sizeof(b), "%.3g %s", v, unit);
	return b;
}

void row(const char *what, const std::string &value, const char *limit_name,
	 const std::string &limit, double ratio, double target)
{
	char r[32] = "", t[32] = "", verdict[64] = "";
	if (ratio >= 0)
		snprintf(r, sizeof(r), "%.2f", ratio);
	if (target > 0) {
		snprintf(t, sizeof(t), ">= %.2f", target);
		if (ratio < 0)
			snprintf(verdict, sizeof(verdict), "n/a");
		else if (ratio >= target)
			snprintf(verdict, sizeof(verdict), "PASS");
		else
			snprintf(verdict, sizeof(verdict), "BELOW by %.0f%%",
				 (1 - ratio / target) * 100);
	}
	printf("%-38s %-16s %-22s %-14s %-6s %-8s %s\n", what, value.c_str(), limit_name,
	       limit.c_str(), r, t, verdict);
}

double ratio(double a, double b)
{
	return a >= 0 && b > 0 ? a / b : -1;
}

/* A figure whose target is an upper bound (a time, a size): value v against at_most. */
void row_at_most(const char *what, double v, const char *unit, double at_most)
{
	char t[32], verdict[64];
	snprintf(t, sizeof(t), "<= %g %s", at_most, unit);
	if (v < 0)
		snprintf(verdict, sizeof(verdict), "n/a");
	else if (v <= at_most)
		snprintf(verdict, sizeof(verdict), "PASS");
	else
		snprintf(verdict, sizeof(verdict), "ABOVE by %.0f%%", (v / at_most - 1) * 100);
	printf("%-38s %-16s %-22s %-14s %-6s %-8s %s\n", what, num(v, unit).c_str(), "", "", "",
	       t, verdict);
}

void summary()
{
	const double wr = fig(CSB_SEQ_WRITE, "MB/s");
	const double rd = fig(CSB_SEQ_READ, "MB/s");
	const double rdc = fig(CSB_SEQ_READ_COLD, "MB/s");
	const double fs_rate = fig(CSB_FSYNC, "syncs/s");
	const double fs_p50 = fig(CSB_FSYNC, "p50_us");
	const double fo_rate = fig(CSB_FSYNC_OVERWRITE, "syncs/s");
	const double fo_p50 = fig(CSB_FSYNC_OVERWRITE, "p50_us");
	const double sha = fig(CSB_SHA, "MB/s");
	const double sha2 = fig(CSB_SHA, "MB/s", 2);
	const double fadd = fig(CSB_FILE_ADD, "MB/s");
	const double fcat = fig(CSB_FILE_CAT, "MB/s");
	/* The write limit interleaved with the adds (bench_files.cc), else the one measured
	 * on its own. */
	const double fadd_wr = fig(CSB_FILE_ADD, "write_limit_MB/s");
	const double add_wr = fadd_wr >= 0 ? fadd_wr : wr;
	const double add_lim = add_wr >= 0 && sha2 >= 0 ? std::min(add_wr, sha2) : -1;
	const double ing = fig(CSB_INGEST, "MB/s");
	const double p1 = fig(CSB_PUT, "ops/s", 1);
	const double p8 = fig(CSB_PUT, "ops/s", 8);
	const double op = fig(CSB_OPEN, "MB/s");
	const double op_s = fig(CSB_OPEN, "open_s");
	const double opc = fig(CSB_OPEN_COLD, "MB/s");
	const double opc_s = fig(CSB_OPEN_COLD, "open_s");
	const char *io = getenv("CIDSTORE_IO");

	printf("\n==== cs_bench summary (scale %g, backend %s%s%s, dir %s) ====\n", cfg().scale,
	       g_backend.empty() ? "?" : g_backend.c_str(), io ? ", CIDSTORE_IO=" : "",
	       io ? io : "", cfg().base.c_str());
	printf("MB = 10^6 bytes. Ratios are figure / limit; targets from the issue, part 9.\n");
	printf("Performance is reported, not asserted: BELOW never changes the exit status.\n\n");
	printf("Machine limits (same file system, same run):\n");
	printf("  %-58s %s\n", "sequential write, 8 MiB pwrite, fdatasync every 64 MiB:",
	       num(wr, "MB/s").c_str());
	printf("  %-58s %s\n", "sequential read, 8 MiB pread, page cache warm:",
	       num(rd, "MB/s").c_str());
	if (cfg().cold)
		printf("  %-58s %s\n", "sequential read, 8 MiB pread, page cache dropped:",
		       num(rdc, "MB/s").c_str());
	printf("  %-58s %s, p50 %s\n", "4 KiB append + fdatasync (preallocated file):",
	       num(fs_rate, "syncs/s").c_str(), num(fs_p50, "us").c_str());
	printf("  %-58s %s, p50 %s\n", "4 KiB overwrite + fdatasync (for comparison):",
	       num(fo_rate, "syncs/s").c_str(), num(fo_p50, "us").c_str());
	printf("  %-58s %s\n", "SHA-256 of 256 KiB buffers, cid_hash, one core:",
	       num(sha, "MB/s").c_str());
	printf("  %-58s %s\n", "SHA-256 of 256 KiB buffers, cid_hash, two threads:",
	       num(sha2, "MB/s").c_str());

	printf("\n%-38s %-16s %-22s %-14s %-6s %-8s %s\n", "figure", "value", "limit", "",
	       "ratio", "target", "verdict");
	row("(a) ingest 1 GiB 256K, 1/4 repeats", num(ing, "MB/s"), "seq write",
	    num(wr, "MB/s"), ratio(ing, wr), 0.5);
	row("(a) same, against hashing", num(ing, "MB/s"), "SHA-256 1 core", num(sha, "MB/s"),
	    ratio(ing, sha), 0);
	row("(b) durable 4 KiB put, 1 thread", num(p1, "ops/s"), "append+fdatasync",
	    num(fs_rate, "syncs/s"), ratio(p1, fs_rate), 0.8);
	row("(b) durable 4 KiB put, 8 threads", num(p8, "ops/s"), "1 thread", num(p1, "ops/s"),
	    ratio(p8, p1), 4.0);
	for (const char *g : {CSB_GET4K, CSB_GET256K}) {
		char what[64], val[96];
		snprintf(what, sizeof(what), "(c) warm get %s",
			 strcmp(g, CSB_GET4K) == 0 ? "4 KiB" : "256 KiB");
		snprintf(val, sizeof(val), "%s, p50 %s, p99 %s", num(fig(g, "ops/s"), "ops/s")
			 .c_str(), num(fig(g, "p50_us"), "us").c_str(),
			 num(fig(g, "p99_us"), "us").c_str());
		printf("%-38s %s\n", what, val);
	}
	row("(c) warm get 256 KiB, bandwidth", num(fig(CSB_GET256K, "MB/s"), "MB/s"),
	    "seq read warm", num(rd, "MB/s"), ratio(fig(CSB_GET256K, "MB/s"), rd), 0);
	row("(d) open 1 GiB (replay), cache warm", num(op, "MB/s"), "seq read warm",
	    num(rd, "MB/s"), ratio(op, rd), 0.5);
	printf("%-38s %s\n", "(d) open time, cache warm", num(op_s, "s").c_str());
	{
		const double ck = fig(CSB_OPEN_CKPT, "ckpt_open_s");
		const double full = fig(CSB_OPEN_CKPT, "replay_open_s");
		const double r = ratio(ck, full);
		char verdict[64];
		printf("%-38s %-16s %-22s %-14s %-6s %-8s %s\n", "(e) open 1M blocks from checkpoint",
		       num(ck * 1000, "ms").c_str(), "", "", "", "<= 100", ck < 0 ? "n/a"
		       : ck <= 0.1 ? "PASS" : (snprintf(verdict, sizeof(verdict), "ABOVE by %.0f%%",
		                                        (ck / 0.1 - 1) * 100), verdict));
		char rs[32] = "";
		if (r >= 0)
			snprintf(rs, sizeof(rs), "%.3f", r);
		printf("%-38s %-16s %-22s %-14s %-6s %-8s %s\n", "(e) same, against its full replay",
		       num(ck * 1000, "ms").c_str(), "full replay", num(full * 1000, "ms").c_str(), rs,
		       "<= 0.10", r < 0 ? "n/a" : r <= 0.1 ? "PASS" : "ABOVE");
	}
	row("(files) add 1 GiB, sync, cached input", num(fadd, "MB/s"),
	    fadd_wr >= 0 ? "min(wr interl., SHA 2)" : "min(wr, SHA 2 thr)",
	    num(add_lim, "MB/s"), ratio(fadd, add_lim), 0.6);
	row("(files) add, against 1-core SHA-256", num(fadd, "MB/s"), "SHA-256 1 core",
	    num(sha, "MB/s"), ratio(fadd, sha), 0);
	/* Against the limit read interleaved with the cat's passes (bench_files.cc); the
	 * separately measured limit only when that is missing. */
	const double fcat_lim = fig(CSB_FILE_CAT, "limit_MB/s");
	row("(files) cat 1 GiB, cache warm", num(fcat, "MB/s"),
	    fcat_lim >= 0 ? "seq read, interleaved" : "seq read warm",
	    num(fcat_lim >= 0 ? fcat_lim : rd, "MB/s"), ratio(fcat, fcat_lim >= 0 ? fcat_lim : rd),
	    0.7);
	row_at_most("(gc) GC 1M blocks, half garbage", fig(CSB_GC, "gc_s"), "s", 1.0);
	printf("%-38s mark %s, sweep %s\n", "(gc) of which", num(fig(CSB_GC, "mark_s"), "s").c_str(),
	       num(fig(CSB_GC, "sweep_s"), "s").c_str());
	row_at_most("(gc) index memory per block", fig(CSB_GC, "index_B_per_block"), "B", 64);
	row_at_most("(gc) same, after the collection", fig(CSB_GC, "index_B_per_block_after"), "B",
		    64);
	printf("%-38s repack %s, its longest step %s (CPU %s)\n", "(gc) of which",
	       num(fig(CSB_GC, "repack_s"), "s").c_str(),
	       num(fig(CSB_GC, "repack_step_max_us"), "us").c_str(),
	       num(fig(CSB_GC, "repack_step_cpu_max_us"), "us").c_str());
	const double ia = fig(CSB_GC_INGEST, "ops/s_alone");
	const double id = fig(CSB_GC_INGEST, "ops/s_during_gc");
	row("(gc) 4 KiB ingest during GC", num(id, "ops/s"), "ingest alone", num(ia, "ops/s"),
	    ratio(id, ia), 0.7);
	/* The stall target is about GC's pauses: the paced writer's figure, which leaves out
	 * the log's backpressure on a writer that outruns the disk (bench/README.md). */
	row_at_most("(gc) longest paced put during GC", fig(CSB_GC_STALL, "max_us_during_gc") / 1e3,
		    "ms", 10);
	printf("%-38s %s alone; p99.9 %s / %s, p99 %s / %s; %s\n", "(gc) paced put, GC / alone",
	       num(fig(CSB_GC_STALL, "max_us_alone") / 1e3, "ms").c_str(),
	       num(fig(CSB_GC_STALL, "p999_us_during_gc"), "us").c_str(),
	       num(fig(CSB_GC_STALL, "p999_us_alone"), "us").c_str(),
	       num(fig(CSB_GC_STALL, "p99_us_during_gc"), "us").c_str(),
	       num(fig(CSB_GC_STALL, "p99_us_alone"), "us").c_str(),
	       num(fig(CSB_GC_STALL, "gc_runs"), "GCs").c_str());
	/* Where the longest put's time went (bench_gc.cc): waiting for a core, or asleep. */
	auto worst = [](const char *what, const char *bench) {
		printf("%-38s waited for a core %s, slept %s (alone: %s, %s)\n", what,
		       num(fig(bench, "max_runq_us_during_gc"), "us").c_str(),
		       num(fig(bench, "max_sleeps_during_gc"), "times").c_str(),
		       num(fig(bench, "max_runq_us_alone"), "us").c_str(),
		       num(fig(bench, "max_sleeps_alone"), "times").c_str());
	};
	worst("(gc) the longest paced put", CSB_GC_STALL);
	printf("%-38s %s during GC, %s alone (p99.9 %s / %s)\n", "(gc) longest durable put",
	       num(fig(CSB_GC_STALL_SYNC, "max_us_during_gc") / 1e3, "ms").c_str(),
	       num(fig(CSB_GC_STALL_SYNC, "max_us_alone") / 1e3, "ms").c_str(),
	       num(fig(CSB_GC_STALL_SYNC, "p999_us_during_gc"), "us").c_str(),
	       num(fig(CSB_GC_STALL_SYNC, "p999_us_alone"), "us").c_str());
	worst("(gc) the longest durable put", CSB_GC_STALL_SYNC);
	printf("%-38s %s during GC, %s alone (p99.9 %s / %s)\n", "(gc) longest unpaced put",
	       num(fig(CSB_GC_INGEST, "max_us_during_gc") / 1e3, "ms").c_str(),
	       num(fig(CSB_GC_INGEST, "max_us_alone") / 1e3, "ms").c_str(),
	       num(fig(CSB_GC_INGEST, "p999_us_during_gc"), "us").c_str(),
	       num(fig(CSB_GC_INGEST, "p999_us_alone"), "us").c_str());
	row_at_most("(gc) pin add with 1M pins, mean", fig(CSB_PINS, "add_mean_us"), "us", 50);
	row_at_most("(gc) pin rm with 1M pins, mean", fig(CSB_PINS, "rm_mean_us"), "us", 50);
	printf("%-38s add p99 %s max %s, rm p99 %s max %s\n", "(gc) pin latency tail",
	       num(fig(CSB_PINS, "add_p99_us"), "us").c_str(),
	       num(fig(CSB_PINS, "add_max_us"), "us").c_str(),
	       num(fig(CSB_PINS, "rm_p99_us"), "us").c_str(),
	       num(fig(CSB_PINS, "rm_max_us"), "us").c_str());
	if (cfg().cold) {
		row("(d) open 1 GiB (replay), cache cold", num(opc, "MB/s"), "seq read cold",
		    num(rdc, "MB/s"), ratio(opc, rdc), 0);
		printf("%-38s %s\n", "(d) open time, cache cold", num(opc_s, "s").c_str());
	}
	for (const auto &f : g_figs)
		if (f.second.error)
			printf("FAILED %s: %s\n", f.first.c_str(), f.second.message.c_str());
	fflush(stdout);
}

/* ---- Setup ----------------------------------------------------------------------------- */

const char *fs_name(long type)
{
	switch ((unsigned long)type) {
	case 0xEF53:
		return "ext2/3/4";
	case 0x58465342:
		return "xfs";
	case 0x9123683E:
		return "btrfs";
	case 0x01021994:
		return "tmpfs";
	case 0x794c7630:
		return "overlayfs";
	case 0x2fc12fc1:
		return "zfs";
	default:
		return "other";
	}
}

/* The device the directory lives on, as df names it: the longest mount point that is a
 * prefix of its real path, from /proc/self/mounts. */
std::string device_of(const std::string &path)
{
	char real[4096];
	if (realpath(path.c_str(), real) == nullptr)
		return "?";
	FILE *f = fopen("/proc/self/mounts", "r");
	if (f == nullptr)
		return "?";
	char dev[512], mnt[512];
	std::string best_dev = "?";
	size_t best = 0;
	while (fscanf(f, "%511s %511s %*s %*s %*d %*d", dev, mnt) == 2) {
		size_t n = strlen(mnt);
		bool prefix = strncmp(real, mnt, n) == 0 &&
			      (real[n] == '/' || real[n] == '\0' || n == 1);
		if (prefix && n >= best) {
			best = n;
			best_dev = std::string(dev) + " on " + mnt;
		}
	}
	fclose(f);
	return best_dev;
}

void on_signal(int sig)
{
	/* Only async-signal-safe calls here (M2): name the directory, then leave. */
	static const char msg[] = "\ncs_bench: interrupted; remove the scratch directory: ";
	ssize_t ignored = write(2, msg, sizeof(msg) - 1);
	ignored = write(2, cfg().base.c_str(), cfg().base.size());
	ignored = write(2, "\n", 1);
	(void)ignored;
	_exit(128 + sig);
}

int setup(int argc, char **argv)
{
	const char *sc = getenv("CS_BENCH_SCALE");
	if (sc != nullptr && sc[0] != '\0') {
		char *end;
		errno = 0;
		double v = strtod(sc, &end);
		if (errno != 0 || *end != '\0' || !(v > 0) || v > 1000) {
			fprintf(stderr, "cs_bench: CS_BENCH_SCALE='%s' is not a number in "
				"(0, 1000]\n", sc);
			return 2;
		}
		cfg().scale = v;
	}
	const char *cold = getenv("CS_BENCH_COLD");
	if (cold != nullptr && strcmp(cold, "1") == 0) {
		if (geteuid() != 0)
			fprintf(stderr, "cs_bench: CS_BENCH_COLD=1 needs root to drop the page "
				"cache; running the warm figures only\n");
		else
			cfg().cold = true;
	}
	/* The sync-bound benchmarks need seconds, not the default half second, for a steady
	 * rate; but a MinTime() set here would override --benchmark_min_time, so we set it
	 * only when the command line does not. */
	bool min_time_given = false;
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--benchmark_min_time", 20) == 0)
			min_time_given = true;
	if (!min_time_given)
		cfg().min_time = std::max(0.05, 2.0 * std::min(1.0, cfg().scale));

	const char *parent = getenv("CS_BENCH_DIR");
	if (parent == nullptr || parent[0] == '\0')
		parent = "/var/tmp";
	std::string tmpl = std::string(parent) + "/cs_bench.XXXXXX";
	std::vector<char> t(tmpl.begin(), tmpl.end());
	t.push_back('\0');
	if (mkdtemp(t.data()) == nullptr) {
		fprintf(stderr, "cs_bench: cannot make a directory in %s: %s\n", parent,
			strerror(errno));
		return 2;
	}
	cfg().base = t.data();
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	struct statfs sf;
	struct stat here, tmp;
	std::string fs = "?";
	if (statfs(cfg().base.c_str(), &sf) == 0)
		fs = fs_name((long)sf.f_type);
	std::string same_tmp = "?";
	if (stat(cfg().base.c_str(), &here) == 0 && stat("/tmp", &tmp) == 0)
		same_tmp = here.st_dev == tmp.st_dev ? "yes" : "no";
	benchmark::AddCustomContext("cs_bench_dir", cfg().base);
	benchmark::AddCustomContext("cs_bench_fs", fs + ", " + device_of(cfg().base));
	benchmark::AddCustomContext("cs_bench_same_fs_as_tmp", same_tmp);
	benchmark::AddCustomContext("cs_bench_scale", std::to_string(cfg().scale));
	benchmark::AddCustomContext("cs_bench_cache", cfg().cold ? "warm and cold" : "warm");
	const char *io = getenv("CIDSTORE_IO");
	benchmark::AddCustomContext("CIDSTORE_IO", io != nullptr ? io : "(unset: auto)");
	return 0;
}

} // namespace
} // namespace csb

int main(int argc, char **argv)
{
	using namespace csb;

	int rc = setup(argc, argv);
	if (rc != 0)
		return rc;
	benchmark::Initialize(&argc, argv);
	if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
		remove_tree(cfg().base);
		return 2;
	}
	/* Each figure right after its limit (see bench.h). */
	register_seq_write();
	register_ingest();
	register_sha256();
	register_file_add(); /* after both of its limits: seq write and SHA-256 on 2 threads */
	register_fdatasync();
	register_durable_put();
	register_seq_read(false);
	register_open(false);
	register_file_cat(); /* after the warm read limit */
	register_open_checkpoint(); /* against its own full replay, in the same iterations */
	if (cfg().cold) {
		register_seq_read(true);
		register_open(true);
	}
	register_warm_get();
	register_gc();

	Collector reporter(isatty(STDOUT_FILENO) ? benchmark::ConsoleReporter::OO_ColorTabular
						 : benchmark::ConsoleReporter::OO_Tabular);
	benchmark::RunSpecifiedBenchmarks(&reporter);
	summary();

	release_store_benchmarks();
	release_file_benchmarks();
	release_gc_benchmarks();
	release_limit_benchmarks();
	remove_tree(cfg().base); /* M2 */
	benchmark::Shutdown();
	return g_any_error ? 1 : 0; /* M1 */
}
