/*
 * bench_gc.cc - the Lifecycle figures (issue #4), through include/cidstore.h only.
 *
 *   gc/collect_1m_half  a store of 1M blocks (scaled): half of them the 64-byte raw leaves of
 *       one named file (about 2900 dag-pb nodes above them), half 64-byte raw blocks that
 *       nothing roots. Each of three iterations puts the garbage again (untimed) and times one
 *       cs_gc(): its mark and sweep seconds, from its cs_gc_stat, and the call's wall time.
 *       Counters are the medians of the three. index_B_per_block is cs_stat's index_bytes
 *       over blocks with the garbage in (before) and after the collection, which repacks the
 *       index (cs_gc_stat's repack figures: repack_s, the median of the three, and
 *       repack_step_max_us, the longest hold of the index write lock by one repack step in
 *       any of them, wall time, and repack_step_cpu_max_us, the most CPU one step took).
 *   gc/ingest_during_gc  on that store: unique 4 KiB puts under CS_DURABLE_NONE from one
 *       thread for T seconds alone, then T seconds while a second thread runs cs_gc() back
 *       to back (each collection sweeps what the writer put before it began). ops/s of each
 *       phase and their ratio; the longest put (the writer's worst stall) and p99.9 of each.
 *   gc/stall_paced_4k  the writer stalls that GC itself causes: as gc/ingest_during_gc, but
 *       the writer is paced well below the disk's bandwidth, one put begun every kPaceGap
 *       (100 us: 10k puts/s, 41 MB/s, about a sixth of what this machine's unpaced writer
 *       does), so that the log's backpressure (a put that finds both batch buffers busy
 *       waits for a write and a sync) does not arise; T seconds alone, T beside cs_gc()
 *       back to back. The longest put, p99.9 and p99 of each phase, and the collections run.
 *       Both writer benchmarks also give each phase's steal time (steal_ms_*: how long the
 *       host kept this guest's CPUs from running, from /proc/stat), so that a stall can be
 *       told from one the host made, and for each phase's longest put how long of it the
 *       writer waited for a core (max_runq_us_*) and how often it slept (max_sleeps_*): a
 *       put kept out by a lock sleeps over and over, one behind the disk once or twice.
 *   gc/stall_paced_4k_sync  the same under CS_DURABLE_SYNC (the store reopened so for the two
 *       phases): each put waits for its fdatasync, so it runs back to back at one put per
 *       sync, and the collector's deletes share the writer's batches and syncs.
 *   gc/pin_1m  a store of 1M 64-byte blocks (scaled), every one pinned direct (untimed);
 *       then 10k more blocks are put, and each cs_pin_add() and cs_pin_rm() of them is timed
 *       (CS_DURABLE_NONE, so the figure is the pin table's cost, not an fdatasync's).
 *
 * Invariants:
 *   G1. Timed regions hold only the store calls measured (cs_gc, cs_block_put in the ingest
 *       phases, cs_pin_add / cs_pin_rm); the stores are built before the clock starts.
 *   G2. Every figure is checked for sense: each collection frees exactly the garbage put
 *       (and keeps every leaf of the file), the ingest store ends with the blocks it should,
 *       the pin store holds its pins; a mismatch fails the benchmark (S3 of bench_store.cc).
 *   G3. The stores lie under cfg().base (B1); release_gc_benchmarks() removes them.
 */
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

namespace csb {
namespace {

constexpr size_t kTiny = 64;       /* the collected and pinned blocks */
constexpr size_t kPut = 4 * KiB;   /* the ingest phases' blocks */
constexpr uint64_t kMillion = 1000000;
constexpr uint64_t kPaceGap = 100000; /* ns between paced puts' starts */

void fail(benchmark::State &state, const char *what, int rc)
{
	state.SkipWithError((std::string(what) + ": " + cs_error_text(rc)).c_str());
}

int open_mode(const std::string &dir, cs_durability d, cs_store **out)
{
	cs_options o;
	cs_options_init(&o);
	o.durability = d;
	o.flags |= CS_OPEN_CREATE;
	return cs_store_open(dir.c_str(), &o, out);
}

double median3(std::vector<double> v)
{
	return v.empty() ? 0 : percentile(v, 50);
}

/* The collected store: built once, kept open between the two GC benchmarks. */
struct GcStore {
	std::string dir;
	cs_store *s = nullptr;
	uint64_t live = 0;    /* blocks the name reaches: leaves and nodes */
	uint64_t garbage = 0; /* blocks put_garbage() puts */
};
GcStore g_gc;

uint64_t blocks_of(cs_store *s)
{
	cs_stat st;
	cs_store_stat(s, &st);
	return st.blocks;
}

/* Puts the unrooted half: 64-byte blocks whose seeds no leaf of the file shares. */
int put_garbage(cs_store *s)
{
	uint8_t b[kTiny];
	cs_cid cid;
	for (uint64_t i = 0; i < g_gc.garbage; i++) {
		fill_random(b, sizeof(b), 0x6a000000 + i);
		int rc = cs_block_put(s, b, sizeof(b), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		if (rc != 0)
			return rc;
	}
	return cs_store_sync(s);
}

/* The rooted half: one file of n/2 64-byte chunks, added and named "live". */
int build_gc_store()
{
	if (g_gc.s != nullptr)
		return 0;
	const uint64_t n = std::max<uint64_t>(scaled(kMillion, 2, 2000), 2000);
	const uint64_t leaves = n / 2;
	g_gc.garbage = n - leaves;
	g_gc.dir = fresh_path("gc");
	int rc = open_mode(g_gc.dir, CS_DURABLE_NONE, &g_gc.s);
	if (rc != 0)
		return rc;
	cs_add_options ao;
	cs_add_options_init(&ao);
	ao.chunk_size = kTiny;
	cs_add *a = nullptr;
	if ((rc = cs_add_begin(g_gc.s, &ao, &a)) != 0)
		return rc;
	std::vector<uint8_t> buf(1 * MiB);
	for (uint64_t done = 0; done < leaves * kTiny && rc == 0; done += buf.size()) {
		size_t len = (size_t)std::min<uint64_t>(buf.size(), leaves * kTiny - done);
		fill_random(buf.data(), len, 0x11fe0000 + done);
		rc = cs_add_write(a, buf.data(), len);
	}
	cs_cid root;
	uint64_t size;
	if (rc != 0) {
		cs_add_abort(a);
		return rc;
	}
	if ((rc = cs_add_finish(a, &root, &size)) != 0 ||
	    (rc = cs_name_set(g_gc.s, "live", &root, size)) != 0)
		return rc;
	g_gc.live = blocks_of(g_gc.s);
	return 0;
}

double index_per_block(cs_store *s)
{
	cs_stat st;
	cs_store_stat(s, &st);
	return st.blocks > 0 ? (double)st.index_bytes / (double)st.blocks : 0;
}

void bm_collect(benchmark::State &state)
{
	int rc = build_gc_store();
	if (rc != 0) {
		fail(state, "building the store", rc);
		return;
	}
	std::vector<double> gc_s, mark_s, sweep_s, repack_s;
	double before = 0, after = 0, step_max = 0, step_cpu = 0;
	for (auto _ : state) {
		state.PauseTiming();
		if ((rc = put_garbage(g_gc.s)) != 0) {
			fail(state, "putting the garbage", rc);
			break;
		}
		before = index_per_block(g_gc.s);
		state.ResumeTiming();
		cs_gc_stat st;
		double t0 = now_s();
		rc = cs_gc(g_gc.s, &st);
		double secs = now_s() - t0;
		if (rc != 0) {
			fail(state, "cs_gc", rc);
			break;
		}
		if (st.swept_blocks != g_gc.garbage || blocks_of(g_gc.s) != g_gc.live) { /* G2 */
			state.SkipWithError("cs_gc did not free exactly the garbage");
			break;
		}
		after = index_per_block(g_gc.s);
		state.SetIterationTime(secs);
		gc_s.push_back(secs);
		mark_s.push_back(st.mark_seconds);
		sweep_s.push_back(st.sweep_seconds);
		repack_s.push_back(st.repack_seconds);
		step_max = std::max(step_max, st.repack_step_max_seconds);
		step_cpu = std::max(step_cpu, st.repack_step_max_cpu_seconds);
	}
	state.counters["blocks"] = (double)(g_gc.live + g_gc.garbage);
	state.counters["garbage"] = (double)g_gc.garbage;
	state.counters["gc_s"] = median3(gc_s);
	state.counters["mark_s"] = median3(mark_s);
	state.counters["sweep_s"] = median3(sweep_s);
	state.counters["repack_s"] = median3(repack_s);
	state.counters["repack_step_max_us"] = step_max * 1e6;
	state.counters["repack_step_cpu_max_us"] = step_cpu * 1e6;
	state.counters["index_B_per_block"] = before;
	state.counters["index_B_per_block_after"] = after;
}

/* The longest put of a writer phase, and where its time went: how long the writer was
 * runnable but waiting for a core (the run-queue delay of /proc/thread-self/schedstat:
 * the scheduler's doing, or the host's), and how often it slept (voluntary context
 * switches: each a wait for a lock, a condition or the disk). */
struct WorstPut {
	double us = 0, runq_us = 0;
	long sleeps = 0;
};

/* This thread's run-queue delay so far, in ns, or 0 where schedstat is not to be had. */
uint64_t runq_ns(int fd)
{
	char buf[96];
	unsigned long long run, wait;
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return sscanf(buf, "%llu %llu", &run, &wait) == 2 ? wait : 0;
}

long sleeps_so_far()
{
	struct rusage u;
	return getrusage(RUSAGE_THREAD, &u) == 0 ? u.ru_nvcsw : 0;
}

/* One writer phase: unique 4 KiB puts for `secs` seconds, each timed into lat_us. With
 * gap_ns 0 each put starts when the last returned; otherwise gap_ns after the last one began,
 * or at once when the last took longer: a slow put is not made up for by a burst, which would
 * run into the log's backpressure and be counted as a stall of its own. Returns the puts
 * done or a negative error. */
std::atomic<uint64_t> g_put_seq{1};

int64_t write_for(cs_store *s, double secs, uint64_t gap_ns, std::vector<double> &lat_us,
                  WorstPut &worst)
{
	const int sched = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	std::vector<uint8_t> b(kPut);
	fill_random(b.data(), b.size(), 0x1e57);
	cs_cid cid;
	int64_t n = 0;
	const uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
	uint64_t next = now_ns();
	lat_us.clear();
	for (;;) {
		uint64_t t0 = now_ns();
		if (gap_ns > 0 && t0 < next) {
			struct timespec ts = {(time_t)(next / 1000000000ull),
			                      (long)(next % 1000000000ull)};
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
			t0 = now_ns();
		}
		if (t0 >= end)
			break;
		next = t0 + gap_ns;
		uint64_t v = g_put_seq++;
		memcpy(b.data(), &v, sizeof(v));
		const uint64_t q0 = runq_ns(sched);
		const long z0 = sleeps_so_far();
		const uint64_t p0 = now_ns(); /* the two reads above are not the put's time */
		int rc = cs_block_put(s, b.data(), b.size(), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		const double us = (double)(now_ns() - p0) / 1e3;
		lat_us.push_back(us);
		if (us > worst.us)
			worst = {us, (double)(runq_ns(sched) - q0) / 1e3, sleeps_so_far() - z0};
		if (rc != 0) {
			n = rc;
			break;
		}
		n++;
	}
	if (sched >= 0)
		close(sched);
	return n;
}

/* Runs one writer phase (write_for with these arguments) while a second thread runs cs_gc()
 * back to back on s; sets *gcs to the collections that completed. Returns the phase's puts,
 * or the error of the phase or of a collection. */
int64_t write_beside_gc(cs_store *s, double secs, uint64_t gap_ns, std::vector<double> &lat_us,
                        WorstPut &worst, uint64_t *gcs)
{
	std::atomic<bool> stop{false};
	std::atomic<int> gc_rc{0};
	std::atomic<uint64_t> runs{0};
	std::thread collector([&] {
		while (!stop.load()) {
			int r = cs_gc(s, nullptr);
			if (r != 0) {
				gc_rc = r;
				return;
			}
			runs++;
		}
	});
	int64_t n = write_for(s, secs, gap_ns, lat_us, worst);
	stop = true;
	collector.join();
	*gcs = runs.load();
	return n < 0 ? n : gc_rc != 0 ? gc_rc.load() : n;
}

/* One measurement of a writer alone and beside back-to-back collections, on the GC store
 * with the garbage put again: what the two ingest benchmarks share. */
struct WriterRun {
	double secs = 0;
	int64_t n_alone = 0, n_during = 0;
	uint64_t gcs = 0;
	std::vector<double> alone, during;
	WorstPut worst_alone, worst_during;
	double steal_alone = 0, steal_during = 0; /* seconds the host took the CPUs away */
};

/* The steal time of all CPUs so far, in seconds (/proc/stat: the time a virtual machine's
 * CPUs were runnable but the host ran something else), or 0 where it is not to be had. On a
 * shared guest a writer can stall for it with nothing of this process in its way. */
double steal_s()
{
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[8] = {0};
	int got = f != nullptr ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
	                                &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7])
	                       : 0;
	if (f != nullptr)
		fclose(f);
	long hz = sysconf(_SC_CLK_TCK);
	return got == 8 && hz > 0 ? (double)v[7] / (double)hz : 0;
}

/* Closes the GC store and opens it again in mode d; close writes a checkpoint, so the open
 * loads the tables from it. */
int reopen_gc_store(cs_durability d)
{
	int rc = cs_store_close(g_gc.s);
	g_gc.s = nullptr;
	return rc != 0 ? rc : open_mode(g_gc.dir, d, &g_gc.s);
}

/* Fills r, the writer's store in mode d (the store is built and the garbage put under
 * CS_DURABLE_NONE, and left so); on failure reports the error on state and returns false. */
bool run_writer(benchmark::State &state, uint64_t gap_ns, cs_durability d, WriterRun &r)
{
	int rc = put_garbage(g_gc.s);
	if (rc != 0) {
		fail(state, "putting the garbage", rc);
		return false;
	}
	if (d != CS_DURABLE_NONE && (rc = reopen_gc_store(d)) != 0) {
		fail(state, "opening the store again", rc);
		return false;
	}
	double st0 = steal_s();
	r.n_alone = write_for(g_gc.s, r.secs, gap_ns, r.alone, r.worst_alone);
	r.steal_alone = steal_s() - st0;
	if (r.n_alone < 0) {
		fail(state, "putting alone", (int)r.n_alone);
		return false;
	}
	st0 = steal_s();
	r.n_during = write_beside_gc(g_gc.s, r.secs, gap_ns, r.during, r.worst_during, &r.gcs);
	r.steal_during = steal_s() - st0;
	if (r.n_during < 0) {
		fail(state, "putting beside cs_gc", (int)r.n_during);
		return false;
	}
	/* G2: a final collection leaves exactly the named file. */
	if ((rc = cs_gc(g_gc.s, nullptr)) != 0 || blocks_of(g_gc.s) != g_gc.live) {
		state.SkipWithError("the collections lost or kept the wrong blocks");
		return false;
	}
	if (d != CS_DURABLE_NONE && (rc = reopen_gc_store(CS_DURABLE_NONE)) != 0) {
		fail(state, "opening the store again", rc);
		return false;
	}
	return true;
}

void writer_counters(benchmark::State &state, WriterRun &r)
{
	state.counters["ops/s_alone"] = (double)r.n_alone / r.secs;
	state.counters["ops/s_during_gc"] = (double)r.n_during / r.secs;
	state.counters["gc_runs"] = (double)r.gcs;
	state.counters["max_us_alone"] = percentile(r.alone, 100);
	state.counters["max_us_during_gc"] = percentile(r.during, 100);
	state.counters["p999_us_alone"] = percentile(r.alone, 99.9);
	state.counters["p999_us_during_gc"] = percentile(r.during, 99.9);
	state.counters["p99_us_alone"] = percentile(r.alone, 99);
	state.counters["p99_us_during_gc"] = percentile(r.during, 99);
	state.counters["steal_ms_alone"] = r.steal_alone * 1e3;
	state.counters["steal_ms_during_gc"] = r.steal_during * 1e3;
	state.counters["max_runq_us_alone"] = r.worst_alone.runq_us;
	state.counters["max_runq_us_during_gc"] = r.worst_during.runq_us;
	state.counters["max_sleeps_alone"] = (double)r.worst_alone.sleeps;
	state.counters["max_sleeps_during_gc"] = (double)r.worst_during.sleeps;
}

void bm_ingest_during_gc(benchmark::State &state)
{
	int rc = build_gc_store();
	if (rc != 0) {
		fail(state, "building the store", rc);
		return;
	}
	WriterRun r;
	r.secs = std::max(0.2, 3.0 * std::min(1.0, cfg().scale));
	for (auto _ : state)
		if (!run_writer(state, 0, CS_DURABLE_NONE, r))
			return;
	writer_counters(state, r);
}

void bm_stall_paced(benchmark::State &state, cs_durability d)
{
	int rc = build_gc_store();
	if (rc != 0) {
		fail(state, "building the store", rc);
		return;
	}
	WriterRun r;
	/* Longer than the unpaced phases: each phase should see several whole collections of
	 * the 1M blocks (about 1 s each), and a paced put is rarely slow. */
	r.secs = std::max(0.2, 5.0 * std::min(1.0, cfg().scale));
	for (auto _ : state)
		if (!run_writer(state, kPaceGap, d, r))
			return;
	writer_counters(state, r);
	state.counters["gap_us"] = (double)kPaceGap / 1e3;
}

void bm_pins(benchmark::State &state)
{
	const uint64_t n = scaled(kMillion, 1, 1000);
	const uint64_t probe = std::max<uint64_t>(100, std::min<uint64_t>(10000, n / 100));
	std::string dir = fresh_path("pins");
	cs_store *s = nullptr;
	int rc = open_mode(dir, CS_DURABLE_NONE, &s);
	std::vector<double> add_us, rm_us;
	std::vector<cs_cid> extra(probe);
	uint8_t b[kTiny];

	for (uint64_t i = 0; i < n && rc == 0; i++) {
		cs_cid cid;
		fill_random(b, sizeof(b), 0x9170000000ull + i);
		if ((rc = cs_block_put(s, b, sizeof(b), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid)) ==
		    0)
			rc = cs_pin_add(s, &cid, CS_PIN_DIRECT);
	}
	for (uint64_t i = 0; i < probe && rc == 0; i++) {
		fill_random(b, sizeof(b), 0x9180000000ull + i);
		rc = cs_block_put(s, b, sizeof(b), CS_CODEC_RAW, CS_HASH_SHA2_256, &extra[i]);
	}
	if (rc == 0)
		rc = cs_store_sync(s);
	for (auto _ : state) {
		if (rc != 0)
			break;
		for (uint64_t i = 0; i < probe && rc == 0; i++) {
			uint64_t t0 = now_ns();
			rc = cs_pin_add(s, &extra[i], CS_PIN_DIRECT);
			add_us.push_back((double)(now_ns() - t0) / 1e3);
		}
		for (uint64_t i = 0; i < probe && rc == 0; i++) {
			uint64_t t0 = now_ns();
			rc = cs_pin_rm(s, &extra[i]);
			rm_us.push_back((double)(now_ns() - t0) / 1e3);
		}
	}
	cs_stat st;
	if (rc == 0)
		cs_store_stat(s, &st);
	if (rc != 0)
		fail(state, "pins", rc);
	else if (st.pins != n) /* G2 */
		state.SkipWithError("the pin store does not hold its pins");
	if (s != nullptr)
		cs_store_close(s);
	remove_tree(dir);
	if (rc != 0)
		return;
	double add_sum = 0, rm_sum = 0;
	for (double v : add_us)
		add_sum += v;
	for (double v : rm_us)
		rm_sum += v;
	state.counters["pins"] = (double)n;
	state.counters["add_mean_us"] = add_us.empty() ? 0 : add_sum / (double)add_us.size();
	state.counters["rm_mean_us"] = rm_us.empty() ? 0 : rm_sum / (double)rm_us.size();
	state.counters["add_p99_us"] = percentile(add_us, 99);
	state.counters["rm_p99_us"] = percentile(rm_us, 99);
	state.counters["add_max_us"] = percentile(add_us, 100);
	state.counters["rm_max_us"] = percentile(rm_us, 100);
}

} // namespace

void register_gc()
{
	benchmark::RegisterBenchmark(CSB_GC, bm_collect)
		->Iterations(3)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(CSB_GC_INGEST, bm_ingest_during_gc)
		->Iterations(1)
		->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(CSB_GC_STALL, bm_stall_paced, CS_DURABLE_NONE)
		->Iterations(1)
		->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(CSB_GC_STALL_SYNC, bm_stall_paced, CS_DURABLE_SYNC)
		->Iterations(1)
		->Unit(benchmark::kMillisecond);
	benchmark::RegisterBenchmark(CSB_PINS, bm_pins)->Iterations(1)->Unit(
		benchmark::kMillisecond);
}

void release_gc_benchmarks()
{
	if (g_gc.s != nullptr)
		cs_store_close(g_gc.s);
	g_gc.s = nullptr;
	if (!g_gc.dir.empty())
		remove_tree(g_gc.dir);
}

} // namespace csb
