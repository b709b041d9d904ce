/*
 * bench_store.cc - the store's figures (issue, part 9), through include/cidstore.h only.
 *
 *   (a) a/ingest_256k_sha256_raw   1 GiB of input in 256 KiB blocks, chunk i with i%4 == 3 a
 *       repeat of chunk i-3, sha2-256 and raw codec, CS_DURABLE_NONE with cs_store_sync()
 *       once per 64 MiB of input and once at the end. MB/s of input bytes, repeats included.
 *   (b) b/durable_put_4k           unique 4 KiB blocks under CS_DURABLE_SYNC from 1 and from
 *       8 threads sharing one store: ops/s (all threads together, wall clock).
 *   (c) c/warm_get_4k, c/warm_get_256k  cs_block_get() into a caller buffer of a CID drawn
 *       at random from 256 MiB of stored blocks, page cache warm: ops/s, p50 and p99.
 *   (d) d/open_1g_replay_warm      cs_store_open() of a closed store holding 1 GiB of 256 KiB
 *       blocks, so a full replay, with its log in the page cache: seconds and MB/s of log.
 *       d/open_1g_replay_cold is the same after dropping the caches (CS_BENCH_COLD=1).
 *       Each open removes the checkpoint first (untimed), so that it replays the whole log.
 *   (e) e/open_1m_checkpoint       cs_store_open() of a closed store of 1M 64-byte blocks from
 *       the checkpoint its close wrote, and (in the same iteration, right before) the same
 *       open with the checkpoint removed, a full replay: both times and their ratio.
 *
 * Invariants:
 *   S1. Timed regions hold only store calls: input data is generated before the clock
 *       starts, and store creation, filling and closing stay outside (manual timing) or
 *       before the benchmark loop.
 *   S2. Every block put by a benchmark that wants unique contents is unique in the whole
 *       process (a process-wide counter is written into it), so no put is a no-op.
 *   S3. Every figure is checked for sense after the run (block counts, lengths); a
 *       mismatch fails the benchmark with SkipWithError, which makes the exit status 1.
 */
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

namespace csb {
namespace {

constexpr size_t kBig = 256 * KiB;  /* (a), (d) and the large (c) block */
constexpr size_t kSmall = 4 * KiB;  /* (b) and the small (c) block */

std::atomic<uint64_t> g_unique{1}; /* S2 */

void note_backend(cs_store *s)
{
	cs_stat st;
	if (cs_store_stat(s, &st) == 0 && st.io_backend != nullptr)
		g_backend = st.io_backend;
}

int open_store(const std::string &dir, cs_durability d, bool create, cs_store **out)
{
	cs_options o;
	cs_options_init(&o);
	o.durability = d;
	if (create)
		o.flags |= CS_OPEN_CREATE;
	return cs_store_open(dir.c_str(), &o, out);
}

void fail(benchmark::State &state, const char *what, int rc)
{
	state.SkipWithError((std::string(what) + ": " + cs_error_text(rc)).c_str());
}

/* ---- (a) ingest ------------------------------------------------------------------------ */

/* The ingest input, made once (S1): unique chunks in one pool, and for each chunk i a pointer
 * to its contents, chunk i with i%4 == 3 pointing at chunk i-3's. */
struct IngestInput {
	std::unique_ptr<uint8_t, decltype(&free)> pool{nullptr, &free};
	std::vector<const uint8_t *> chunk;
	uint64_t unique = 0;
};
IngestInput g_ingest;

int make_ingest_input()
{
	if (!g_ingest.chunk.empty())
		return 0;
	uint64_t n = scaled(GiB, 4 * kBig, 4 * kBig) / kBig; /* a multiple of 4 */
	uint64_t unique = n - n / 4;
	g_ingest.pool.reset(static_cast<uint8_t *>(aligned_alloc(4096, unique * kBig)));
	if (!g_ingest.pool)
		return -ENOMEM;
	uint8_t *next = g_ingest.pool.get();
	g_ingest.chunk.resize(n);
	for (uint64_t i = 0; i < n; i++) {
		if (i % 4 == 3) {
			g_ingest.chunk[i] = g_ingest.chunk[i - 3];
			continue;
		}
		fill_random(next, kBig, 0xa000000 + i);
		g_ingest.chunk[i] = next;
		next += kBig;
	}
	g_ingest.unique = unique;
	return 0;
}

void bm_ingest(benchmark::State &state)
{
	int rc = make_ingest_input();
	if (rc != 0)
		fail(state, "making the input", rc);
	const uint64_t n = g_ingest.chunk.size();
	const uint64_t input = n * kBig;
	const uint64_t sync_every = scaled(64 * MiB, kBig, kBig);
	double total_s = 0;
	uint64_t log_bytes = 0;

	for (auto _ : state) {
		std::string dir = fresh_path("ingest");
		cs_store *s = nullptr;
		if ((rc = open_store(dir, CS_DURABLE_NONE, true, &s)) != 0) {
			fail(state, "cs_store_open", rc);
			break;
		}
		note_backend(s);
		cs_cid cid;
		uint64_t since = 0;
		double t0 = now_s();
		for (uint64_t i = 0; i < n && rc == 0; i++) {
			rc = cs_block_put(s, g_ingest.chunk[i], kBig, CS_CODEC_RAW,
					  CS_HASH_SHA2_256, &cid);
			since += kBig;
			if (rc == 0 && since >= sync_every) {
				rc = cs_store_sync(s);
				since = 0;
			}
		}
		if (rc == 0)
			rc = cs_store_sync(s); /* the final sync */
		double secs = now_s() - t0;
		if (rc != 0) {
			fail(state, "ingest", rc);
			cs_store_close(s);
			remove_tree(dir);
			break;
		}
		cs_stat st;
		cs_store_stat(s, &st);
		log_bytes = st.log_bytes;
		rc = cs_store_close(s);
		remove_tree(dir);
		if (rc != 0) {
			fail(state, "cs_store_close", rc);
			break;
		}
		if (st.blocks != g_ingest.unique) { /* S3 */
			state.SkipWithError("ingest: the store does not hold the unique chunks");
			break;
		}
		state.SetIterationTime(secs);
		total_s += secs;
	}
	if (total_s > 0)
		state.counters["MB/s"] = (double)input * (double)state.iterations() / MB / total_s;
	state.counters["input_MB"] = (double)input / MB;
	state.counters["log_MB"] = (double)log_bytes / MB;
}

/* ---- (b) durable puts ------------------------------------------------------------------ */

/* The store the threads of one run share: thread 0 opens it before the benchmark loop and
 * closes it after. The loop's start barrier (every thread waits at it) orders the open
 * before any other thread's first put. The stop barrier would order every put before the
 * close, but a thread that breaks out on an error skips it; so thread 0 also waits for
 * g_put_active, which counts the threads still in their loop, to reach zero, and a failing
 * thread raises g_put_abort so that the others stop too. */
std::atomic<cs_store *> g_put_store{nullptr};
std::atomic<int> g_put_active{0};
std::atomic<bool> g_put_abort{false};
std::string g_put_dir;

void bm_durable_put(benchmark::State &state)
{
	alignas(64) uint8_t buf[kSmall];
	std::vector<double> lat_us;
	const bool leader = state.thread_index() == 0;
	cs_cid cid;
	int rc = 0;

	fill_random(buf, sizeof(buf), 0xb000 + (uint64_t)state.thread_index());
	lat_us.reserve((size_t)std::min<benchmark::IterationCount>(state.max_iterations,
								    1 << 22));
	if (leader) {
		cs_store *s = nullptr;
		g_put_active.store(state.threads());
		g_put_abort.store(false);
		g_put_dir = fresh_path("put");
		if ((rc = open_store(g_put_dir, CS_DURABLE_SYNC, true, &s)) != 0)
			fail(state, "cs_store_open", rc);
		else
			note_backend(s);
		g_put_store.store(s);
	}
	for (auto _ : state) {
		cs_store *s = g_put_store.load(std::memory_order_acquire);
		if (s == nullptr) {
			state.SkipWithError("no store (thread 0 failed to open it)");
			break;
		}
		if (g_put_abort.load(std::memory_order_relaxed)) {
			state.SkipWithError("stopped: another thread failed");
			break;
		}
		uint64_t u = g_unique.fetch_add(1, std::memory_order_relaxed);
		memcpy(buf, &u, sizeof(u)); /* S2 */
		uint64_t t0 = now_ns();
		rc = cs_block_put(s, buf, sizeof(buf), CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
		lat_us.push_back((double)(now_ns() - t0) / 1e3);
		if (rc != 0) {
			g_put_abort.store(true);
			fail(state, "cs_block_put", rc);
			break;
		}
	}
	g_put_active.fetch_sub(1);
	if (leader) {
		while (g_put_active.load() != 0) /* no thread puts any more after this */
			std::this_thread::yield();
		cs_store *s = g_put_store.exchange(nullptr);
		if (s != nullptr) {
			cs_stat st;
			cs_store_stat(s, &st);
			rc = cs_store_close(s);
			if (rc != 0)
				fail(state, "cs_store_close", rc);
			else if (st.blocks != (uint64_t)state.iterations() * (uint64_t)state.threads())
				state.SkipWithError("durable put: block count differs from puts");
		}
		remove_tree(g_put_dir);
	}
	/* Summed over threads: all puts over the (per-thread average) wall time. */
	state.counters["ops/s"] =
		benchmark::Counter((double)state.iterations(), benchmark::Counter::kIsRate);
	/* Averaged over threads: the mean of each thread's median and p99. */
	state.counters["p50_us"] =
		benchmark::Counter(percentile(lat_us, 50), benchmark::Counter::kAvgThreads);
	state.counters["p99_us"] =
		benchmark::Counter(percentile(lat_us, 99), benchmark::Counter::kAvgThreads);
}

/* ---- (c) warm random gets -------------------------------------------------------------- */

/* A store filled once with 256 MiB (scaled) of unique blocks of one size, kept open for all
 * runs of its benchmark, and read once whole so that its log is in the page cache. */
struct GetStore {
	explicit GetStore(size_t b) : bsize(b)
	{
	}
	size_t bsize;
	std::string dir;
	cs_store *s = nullptr;
	std::vector<cs_cid> cids;
	int err = 0;
	const char *what = nullptr;
};
GetStore g_get[2] = {GetStore(kSmall), GetStore(kBig)};

int fill_get_store(GetStore &g)
{
	if (g.s != nullptr || g.err != 0)
		return g.err;
	uint64_t n = scaled(256 * MiB, g.bsize, 16 * g.bsize) / g.bsize;
	std::vector<uint8_t> buf(g.bsize);
	int rc;

	g.dir = fresh_path(g.bsize == kSmall ? "get4k" : "get256k");
	g.what = "cs_store_open";
	if ((rc = open_store(g.dir, CS_DURABLE_NONE, true, &g.s)) != 0)
		return g.err = rc;
	note_backend(g.s);
	g.cids.resize(n);
	g.what = "cs_block_put";
	for (uint64_t i = 0; i < n; i++) {
		fill_random(buf.data(), g.bsize, 0xc000000 + i);
		uint64_t u = g_unique.fetch_add(1, std::memory_order_relaxed);
		memcpy(buf.data(), &u, sizeof(u));
		if ((rc = cs_block_put(g.s, buf.data(), g.bsize, CS_CODEC_RAW, CS_HASH_SHA2_256,
				       &g.cids[i])) != 0)
			return g.err = rc;
	}
	g.what = "cs_store_sync";
	if ((rc = cs_store_sync(g.s)) != 0)
		return g.err = rc;
	g.what = "warm-up cs_block_get";
	for (uint64_t i = 0; i < n; i++) {
		size_t len = 0;
		if ((rc = cs_block_get(g.s, &g.cids[i], buf.data(), buf.size(), &len)) != 0)
			return g.err = rc;
	}
	return 0;
}

void bm_get(benchmark::State &state, int which)
{
	GetStore &g = g_get[which];
	int rc = fill_get_store(g);
	if (rc != 0)
		fail(state, g.what, rc);
	std::unique_ptr<uint8_t, decltype(&free)> buf(
		static_cast<uint8_t *>(aligned_alloc(4096, g.bsize)), &free);
	std::vector<double> lat_us;
	lat_us.reserve((size_t)std::min<benchmark::IterationCount>(state.max_iterations,
								    1 << 24));
	uint64_t x = 0x9e3779b97f4a7c15ull; /* xorshift64: a fixed sequence of picks */
	const uint64_t n = g.cids.size();

	for (auto _ : state) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		const cs_cid *cid = &g.cids[x % n];
		size_t len = 0;
		uint64_t t0 = now_ns();
		rc = cs_block_get(g.s, cid, buf.get(), g.bsize, &len);
		lat_us.push_back((double)(now_ns() - t0) / 1e3);
		if (rc != 0 || len != g.bsize) { /* S3 */
			fail(state, "cs_block_get", rc != 0 ? rc : CS_ECORRUPT);
			break;
		}
	}
	state.counters["ops/s"] =
		benchmark::Counter((double)state.iterations(), benchmark::Counter::kIsRate);
	state.counters["MB/s"] = benchmark::Counter(
		(double)state.iterations() * (double)g.bsize / MB, benchmark::Counter::kIsRate);
	state.counters["p50_us"] = percentile(lat_us, 50);
	state.counters["p99_us"] = percentile(lat_us, 99);
	state.counters["store_MB"] = (double)n * (double)g.bsize / MB;
}

/* ---- (d) open = full replay ------------------------------------------------------------ */

struct OpenStore {
	std::string dir;
	uint64_t blocks = 0;
	int err = 0;
	const char *what = nullptr;
};
OpenStore g_open;

/* Builds the closed store of 1 GiB (scaled) of unique 256 KiB blocks, once. */
int build_open_store()
{
	if (g_open.blocks != 0 || g_open.err != 0)
		return g_open.err;
	uint64_t n = scaled(GiB, kBig, 4 * kBig) / kBig;
	std::vector<uint8_t> buf(kBig);
	cs_store *s = nullptr;
	cs_cid cid;
	int rc;

	g_open.dir = fresh_path("open");
	g_open.what = "cs_store_open";
	if ((rc = open_store(g_open.dir, CS_DURABLE_NONE, true, &s)) != 0)
		return g_open.err = rc;
	g_open.what = "cs_block_put";
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		fill_random(buf.data(), kBig, 0xd000000 + i);
		uint64_t u = g_unique.fetch_add(1, std::memory_order_relaxed);
		memcpy(buf.data(), &u, sizeof(u));
		rc = cs_block_put(s, buf.data(), kBig, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
	}
	int crc = cs_store_close(s);
	if (rc == 0 && crc != 0) {
		g_open.what = "cs_store_close";
		rc = crc;
	}
	if (rc != 0)
		return g_open.err = rc;
	g_open.blocks = n;
	return 0;
}

/* Removes the store's checkpoint, so that the next open replays the whole log (untimed). */
void remove_checkpoint(const std::string &dir)
{
	unlink((dir + "/checkpoint").c_str());
}

void bm_open(benchmark::State &state, bool cold)
{
	int rc = build_open_store();
	if (rc != 0)
		fail(state, g_open.what, rc);
	std::vector<double> secs;
	cs_stat st;
	memset(&st, 0, sizeof(st));

	for (auto _ : state) {
		if (cold && (rc = drop_caches()) != 0) {
			fail(state, "dropping the caches", rc);
			break;
		}
		cs_store *s = nullptr;
		remove_checkpoint(g_open.dir); /* a full replay, as (d) measures */
		double t0 = now_s();
		rc = open_store(g_open.dir, CS_DURABLE_SYNC, false, &s);
		double t = now_s() - t0;
		if (rc != 0) {
			fail(state, "cs_store_open", rc);
			break;
		}
		cs_store_stat(s, &st);
		note_backend(s);
		rc = cs_store_close(s);
		if (rc != 0) {
			fail(state, "cs_store_close", rc);
			break;
		}
		if (st.blocks != g_open.blocks) { /* S3 */
			state.SkipWithError("open: the reopened store lost blocks");
			break;
		}
		state.SetIterationTime(t);
		secs.push_back(t);
	}
	double med = percentile(secs, 50);
	state.counters["open_s"] = med;
	state.counters["MB/s"] = med > 0 ? (double)st.log_bytes / MB / med : 0;
	state.counters["log_MB"] = (double)st.log_bytes / MB;
	state.counters["records"] = (double)st.replayed_records;
	state.counters["lib_open_s"] = st.open_seconds; /* the store's own clock, last open */
}

/* ---- (e) open from a checkpoint --------------------------------------------------------- */

constexpr size_t kTiny = 64; /* (e): many records, little data, so the index dominates */

OpenStore g_ckpt;

/* Builds the closed store of 1M (scaled) unique 64-byte blocks, once; its close writes the
 * checkpoint. */
int build_ckpt_store()
{
	if (g_ckpt.blocks != 0 || g_ckpt.err != 0)
		return g_ckpt.err;
	uint64_t n = std::max<uint64_t>(1000, (uint64_t)(1000000 * cfg().scale));
	uint8_t buf[kTiny];
	cs_store *s = nullptr;
	cs_cid cid;
	int rc;

	g_ckpt.dir = fresh_path("ckpt");
	g_ckpt.what = "cs_store_open";
	if ((rc = open_store(g_ckpt.dir, CS_DURABLE_NONE, true, &s)) != 0)
		return g_ckpt.err = rc;
	g_ckpt.what = "cs_block_put";
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		fill_random(buf, kTiny, 0xe000000 + i);
		uint64_t u = g_unique.fetch_add(1, std::memory_order_relaxed);
		memcpy(buf, &u, sizeof(u));
		rc = cs_block_put(s, buf, kTiny, CS_CODEC_RAW, CS_HASH_SHA2_256, &cid);
	}
	int crc = cs_store_close(s);
	if (rc == 0 && crc != 0) {
		g_ckpt.what = "cs_store_close";
		rc = crc;
	}
	if (rc != 0)
		return g_ckpt.err = rc;
	g_ckpt.blocks = n;
	return 0;
}

/* One timed open of the (e) store; checks what it found (S3). */
int timed_open(benchmark::State &state, bool from_ckpt, double *secs, cs_stat *st)
{
	cs_store *s = nullptr;
	if (!from_ckpt)
		remove_checkpoint(g_ckpt.dir);
	double t0 = now_s();
	int rc = open_store(g_ckpt.dir, CS_DURABLE_SYNC, false, &s);
	*secs = now_s() - t0;
	if (rc != 0) {
		fail(state, "cs_store_open", rc);
		return rc;
	}
	cs_store_stat(s, st);
	note_backend(s);
	/* Untimed; after the full replay it writes the checkpoint the next open uses. */
	rc = cs_store_close(s);
	if (rc != 0) {
		fail(state, "cs_store_close", rc);
		return rc;
	}
	bool ok = st->blocks == g_ckpt.blocks &&
	          (from_ckpt ? st->replayed_records == 0 && st->checkpoint_seq == st->next_seq
	                     : st->replayed_records == g_ckpt.blocks && st->checkpoint_seq == 0);
	if (!ok) {
		state.SkipWithError(from_ckpt ? "open: not from the checkpoint, or blocks lost"
		                              : "open: not a full replay, or blocks lost");
		return -1;
	}
	return 0;
}

void bm_open_ckpt(benchmark::State &state)
{
	int rc = build_ckpt_store();
	if (rc != 0)
		fail(state, g_ckpt.what, rc);
	std::vector<double> ck, full;
	cs_stat st;
	memset(&st, 0, sizeof(st));

	for (auto _ : state) {
		double t_full, t_ck;
		if (timed_open(state, false, &t_full, &st) != 0 ||
		    timed_open(state, true, &t_ck, &st) != 0)
			break;
		state.SetIterationTime(t_ck);
		ck.push_back(t_ck);
		full.push_back(t_full);
	}
	struct stat fst;
	double ck_mb = stat((g_ckpt.dir + "/checkpoint").c_str(), &fst) == 0
	                   ? (double)fst.st_size / MB
	                   : 0;
	double med_ck = percentile(ck, 50), med_full = percentile(full, 50);
	state.counters["ckpt_open_s"] = med_ck;
	state.counters["replay_open_s"] = med_full;
	state.counters["ratio"] = med_full > 0 ? med_ck / med_full : 0;
	state.counters["blocks"] = (double)g_ckpt.blocks;
	state.counters["ckpt_MB"] = ck_mb;
	state.counters["log_MB"] = (double)st.log_bytes / MB;
}

} // namespace

void register_open_checkpoint()
{
	benchmark::RegisterBenchmark(CSB_OPEN_CKPT, bm_open_ckpt)
		->Iterations(3)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void register_ingest()
{
	benchmark::RegisterBenchmark(CSB_INGEST, bm_ingest)
		->Iterations(1)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void register_durable_put()
{
	auto *b = benchmark::RegisterBenchmark(CSB_PUT, bm_durable_put)
			  ->Threads(1)
			  ->Threads(8)
			  ->UseRealTime()
			  ->Unit(benchmark::kMicrosecond);
	if (cfg().min_time > 0)
		b->MinTime(cfg().min_time);
}

void register_warm_get()
{
	benchmark::RegisterBenchmark(CSB_GET4K, bm_get, 0)->UseRealTime()->Unit(
		benchmark::kMicrosecond);
	benchmark::RegisterBenchmark(CSB_GET256K, bm_get, 1)->UseRealTime()->Unit(
		benchmark::kMicrosecond);
}

void register_open(bool cold)
{
	benchmark::RegisterBenchmark(cold ? CSB_OPEN_COLD : CSB_OPEN, bm_open, cold)
		->Iterations(3)
		->UseManualTime()
		->Unit(benchmark::kMillisecond);
}

void release_store_benchmarks()
{
	for (GetStore &g : g_get) {
		if (g.s != nullptr)
			cs_store_close(g.s);
		g.s = nullptr;
		if (!g.dir.empty())
			remove_tree(g.dir);
	}
	if (!g_open.dir.empty())
		remove_tree(g_open.dir);
	if (!g_ckpt.dir.empty())
		remove_tree(g_ckpt.dir);
	g_ingest.pool.reset();
	g_ingest.chunk.clear();
}

} // namespace csb
