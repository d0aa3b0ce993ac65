// The baseline for comm_bench: AllReduce, ReduceScatter and AllGather through Debian's libgloo
// driven directly (no dstrain communication code), on N local processes, f32, from MIN to MAX
// bytes (x4 steps). It measures what Gloo's own algorithms and TCP transport reach on this machine,
// so comm_bandwidth.sh can say how much dstrain's GlooCommunicator gives up on top of the same
// transport.
//
//   raw_gloo_bench --nproc 2 --min-bytes 1024 --max-bytes 268435456 [--allreduce-algo ring]
//                  [--allgather-algo ring]
//
// Everything that could bias the comparison follows comm_bench: ranks are fork()ed children of
// one parent, they meet through a rendezvous store (here Gloo's FileStore in a fresh temporary
// directory, as Gloo users do) and connect a full mesh of TCP pairs on 127.0.0.1; sizes, element
// counts (divisible by N), iteration counts, the discarded warm-up call, the refill of the big
// buffer before every call (outside the timed region, and as cheap: see Op) and the median are the
// same, and rank 0 prints one JSON line per (op, bytes) with "impl": "raw-gloo" and the algorithm.
//
// Algorithms, all Gloo's own:
//   - AllReduce (--allreduce-algo): ring (gloo::allreduce, the segmented and pipelined ring that
//     torch.distributed uses), bcube (gloo::allreduce with BCUBE), ring_chunked
//     (AllreduceRingChunked) or halving_doubling (AllreduceHalvingDoubling). ring is the default:
//     it is Gloo's default and torch's, and in three alternating runs of each on the 2-core dev
//     machine neither bcube nor halving_doubling was consistently faster from 16 MiB up (all
//     within the +-30% noise); ring_chunked stalls ~88 ms per call at 16 KiB (likely the
//     small-SO_SNDBUF effect described in RunRank, with its 4 KiB chunks).
//   - ReduceScatter: ReduceScatterHalvingDoubling, Gloo's only reduce-scatter. It works in place
//     (the input is overwritten and the rank's chunk ends up at its start), which is why the input
//     is refilled before every call, as comm_bench does anyway.
//   - AllGather (--allgather-algo): ring (gloo::allgather, each chunk sent in two halves so two
//     transfers are always in flight) or ring_old (AllgatherRing).
// gloo::allreduce and gloo::allgather take their buffers per call, so building the options is
// timed; the older algorithm classes register their buffers once in the constructor and are meant
// to be run repeatedly, so they are constructed outside the timed region (their best case).
//
// Each op's last timed call is checked on every rank against the expected result (rank-dependent
// data, exact in f32), so a misused or broken call cannot pass for a fast one. A wrong result is
// printed to stderr and the row says "verified": false; the run goes on. It happens: Gloo's
// ReduceScatterHalvingDoubling copies a non-zero rank's result chunk to the front of its buffer
// while its send of that front part may still be in flight (a bound-buffer send that does not fit
// the socket buffer is finished later by Gloo's device thread, and run() never waits for it), so
// its peer sometimes adds the result instead of the input (seen at 16 and 64 MiB on 2 ranks).
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/runtime/process_init.h"
#include "gloo/algorithm.h"
#include "gloo/allgather.h"
#include "gloo/allgather_ring.h"
#include "gloo/allreduce.h"
#include "gloo/allreduce_halving_doubling.h"
#include "gloo/allreduce_ring_chunked.h"
#include "gloo/math.h"
#include "gloo/reduce_scatter.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

namespace dstrain {
namespace {

struct Config {
  int nproc = 2;
  int64_t min_bytes = 1024;
  int64_t max_bytes = int64_t{1} << 28;
  std::string allreduce_algo = "ring";
  std::string allgather_algo = "ring";
};

double BusFactor(const std::string& op, int n) {
  return op == "allreduce" ? 2.0 * (n - 1) / n : double(n - 1) / n;
}

// Rank r's contribution to element i of a reduction: small integers, so every sum is exact in f32
// and its expected value does not depend on the order Gloo adds in.
float ReduceInput(int rank, int64_t i) { return float((rank + 1) * (i % 5 + 1)); }
float ReduceExpected(int n, int64_t i) { return float((i % 5 + 1) * n * (n + 1) / 2); }
// The reduction input before a call: ReduceInput when the call is checked, else rank + 1 (see Op).
void FillReduceInput(std::vector<float>& big, int rank, bool checked) {
  if (!checked) {
    std::fill(big.begin(), big.end(), float(rank + 1));
    return;
  }
  for (size_t i = 0; i < big.size(); ++i) big[i] = ReduceInput(rank, i);
}

// Element j of rank r's all-gather input; distinct per rank, so a chunk in the wrong place shows.
float GatherInput(int rank, int64_t j) { return float(rank * 8 + j % 5); }

// Returns "" when out[0..len) matches expected(i), else a description of the first mismatch.
std::string Check(const float* out, int64_t len, const std::function<float(int64_t)>& expected) {
  for (int64_t i = 0; i < len; ++i) {
    if (out[i] != expected(i)) {
      return absl::StrFormat("element %d is %g, expected %g", i, out[i], expected(i));
    }
  }
  return "";
}

// One op at one size: `run` performs the collective once; `prepare` (untimed) restores the
// inputs before each call, `checked` for the call whose result `verify` then checks.
//
// Only the checked call gets the index-dependent data, which is slow to write; the others get a
// constant per rank, written as fast as comm_bench's refill. Calls run back to back without a
// barrier, so a rank still refilling delays its peers inside their timed region: a slower refill
// than comm_bench's would count against Gloo (most with 4 ranks sharing 2 cores).
struct Op {
  std::function<void(bool checked)> prepare;
  std::function<void()> run;
  std::function<std::string()> verify;
  std::string algo;
};

Op MakeAllReduce(const Config& cfg, const std::shared_ptr<gloo::Context>& ctx,
                 std::vector<float>& big, std::unique_ptr<gloo::Algorithm>& keep) {
  const int n = ctx->size, rank = ctx->rank;
  const int64_t count = big.size();
  Op op;
  op.algo = cfg.allreduce_algo;
  op.prepare = [&big, rank](bool checked) { FillReduceInput(big, rank, checked); };
  if (cfg.allreduce_algo == "ring" || cfg.allreduce_algo == "bcube") {
    const auto algorithm = cfg.allreduce_algo == "ring" ? gloo::AllreduceOptions::Algorithm::RING
                                                        : gloo::AllreduceOptions::Algorithm::BCUBE;
    op.run = [ctx, &big, count, algorithm] {
      gloo::AllreduceOptions opts(ctx);
      opts.setAlgorithm(algorithm);
      opts.setOutput(big.data(), count);
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      gloo::allreduce(opts);
    };
  } else {
    const std::vector<float*> ptrs = {big.data()};
    if (cfg.allreduce_algo == "ring_chunked") {
      keep = std::make_unique<gloo::AllreduceRingChunked<float>>(ctx, ptrs, count);
    } else {
      keep = std::make_unique<gloo::AllreduceHalvingDoubling<float>>(ctx, ptrs, count);
    }
    op.run = [algo = keep.get()] { algo->run(); };
  }
  op.verify = [&big, n] {
    return Check(big.data(), big.size(), [n](int64_t i) { return ReduceExpected(n, i); });
  };
  return op;
}

Op MakeReduceScatter(const std::shared_ptr<gloo::Context>& ctx, std::vector<float>& big,
                     std::unique_ptr<gloo::Algorithm>& keep) {
  const int n = ctx->size, rank = ctx->rank;
  const int64_t chunk = big.size() / n;
  keep = std::make_unique<gloo::ReduceScatterHalvingDoubling<float>>(
      ctx, std::vector<float*>{big.data()}, static_cast<int>(big.size()),
      std::vector<int>(n, static_cast<int>(chunk)));
  Op op;
  op.algo = "halving_doubling";
  op.prepare = [&big, rank](bool checked) { FillReduceInput(big, rank, checked); };
  op.run = [algo = keep.get()] { algo->run(); };
  op.verify = [&big, n, rank, chunk] {
    return Check(big.data(), chunk,
                 [n, rank, chunk](int64_t j) { return ReduceExpected(n, rank * chunk + j); });
  };
  return op;
}

Op MakeAllGather(const Config& cfg, const std::shared_ptr<gloo::Context>& ctx,
                 std::vector<float>& small, std::vector<float>& big,
                 std::unique_ptr<gloo::Algorithm>& keep) {
  const int rank = ctx->rank;
  const int64_t chunk = small.size();
  for (int64_t j = 0; j < chunk; ++j) small[j] = GatherInput(rank, j);
  Op op;
  op.algo = cfg.allgather_algo;
  // Zeroing the output (as comm_bench refills it) means a call that writes nothing cannot pass.
  op.prepare = [&big](bool) { std::fill(big.begin(), big.end(), 0.f); };
  if (cfg.allgather_algo == "ring") {
    op.run = [ctx, &small, &big] {
      gloo::AllgatherOptions opts(ctx);
      opts.setInput(small.data(), small.size());
      opts.setOutput(big.data(), big.size());
      gloo::allgather(opts);
    };
  } else {
    keep = std::make_unique<gloo::AllgatherRing<float>>(
        ctx, std::vector<const float*>{small.data()}, big.data(), static_cast<int>(chunk));
    op.run = [algo = keep.get()] { algo->run(); };
  }
  op.verify = [&big, chunk] {
    return Check(big.data(), big.size(),
                 [chunk](int64_t i) { return GatherInput(i / chunk, i % chunk); });
  };
  return op;
}

int RunRank(int rank, const Config& cfg, const std::string& store_dir) {
  const int n = cfg.nproc;
  const std::vector<std::string> ops = {"allreduce", "reducescatter", "allgather"};
  // One context (its own TCP connections) per op. The older algorithm classes send through
  // Gloo's bound buffers, and for those Gloo sets SO_SNDBUF to the message size (which also turns
  // off the kernel's send buffer autotuning); sharing connections, the 1 KiB reduce-scatter left
  // a ~4 KiB send buffer behind and the new-style allreduce then stalled ~40 ms per call
  // (delayed ACKs) from 16 KiB up. dstrain's communicator never does this to its connections.
  std::vector<std::shared_ptr<gloo::rendezvous::Context>> contexts;
  std::unique_ptr<gloo::rendezvous::FileStore> file_store;
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    attr.ai_family = AF_INET;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    file_store = std::make_unique<gloo::rendezvous::FileStore>(store_dir);
    for (const std::string& name : ops) {
      gloo::rendezvous::PrefixStore store("raw-gloo/" + name, *file_store);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, n);
      ctx->setTimeout(std::chrono::seconds(120));
      ctx->connectFullMesh(store, device);
      contexts.push_back(std::move(ctx));
    }
  } catch (const std::exception& e) {
    absl::FPrintF(stderr, "rank %d: connecting: %s\n", rank, e.what());
    return 1;
  }
  // Every rank's verdict on every (op, size), so rank 0 can report whether all ranks got the
  // right result.
  gloo::rendezvous::PrefixStore verdicts("raw-gloo/verified", *file_store);
  for (int64_t bytes = cfg.min_bytes; bytes <= cfg.max_bytes; bytes *= 4) {
    const int64_t count = std::max<int64_t>(n, bytes / 4 / n * n);  // divisible by n
    std::vector<float> big(count, 1.f), small(count / n, 1.f);
    const int iters = bytes <= (1 << 20) ? 20 : bytes <= (16 << 20) ? 6 : 3;
    for (size_t k = 0; k < ops.size(); ++k) {
      const std::string& name = ops[k];
      const std::shared_ptr<gloo::rendezvous::Context>& ctx = contexts[k];
      std::vector<double> times;
      std::string wrong;  // what the check found wrong, if anything
      std::string algo;
      try {
        std::unique_ptr<gloo::Algorithm> keep;  // the old-style algorithm object, if any
        Op op = name == "allreduce"       ? MakeAllReduce(cfg, ctx, big, keep)
                : name == "reducescatter" ? MakeReduceScatter(ctx, big, keep)
                                          : MakeAllGather(cfg, ctx, small, big, keep);
        algo = op.algo;
        for (int i = 0; i < iters + 1; ++i) {
          op.prepare(/*checked=*/i == iters);
          auto t0 = std::chrono::steady_clock::now();
          op.run();
          auto t1 = std::chrono::steady_clock::now();
          if (i > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
        }
        wrong = op.verify();
      } catch (const std::exception& e) {
        // A Gloo error leaves the connections in an unknown state: nothing after it is trustworthy.
        absl::FPrintF(stderr, "rank %d: %s (%s) of %d bytes: %s\n", rank, name, algo, count * 4,
                      e.what());
        return 1;
      }
      // A wrong result is reported (stderr, and "verified": false in the row) rather than fatal:
      // the timing is still that of the call, and the next sizes are still worth measuring.
      if (!wrong.empty()) {
        absl::FPrintF(stderr, "rank %d: %s (%s) of %d bytes: WRONG RESULT: %s\n", rank, name, algo,
                      count * 4, wrong);
      }
      const std::string key = absl::StrFormat("%s/%d/", name, count);
      bool verified = wrong.empty();
      try {
        verdicts.set(key + std::to_string(rank), std::vector<char>{verified ? '1' : '0'});
        if (rank == 0) {
          for (int r = 1; r < n; ++r) {
            verified &= verdicts.get(key + std::to_string(r)) == std::vector<char>{'1'};
          }
        }
      } catch (const std::exception& e) {
        absl::FPrintF(stderr, "rank %d: store: %s\n", rank, e.what());
        return 1;
      }
      std::sort(times.begin(), times.end());
      const double t = times[times.size() / 2];
      const double total = double(count) * 4;
      if (rank == 0) {
        absl::PrintF(
            "{\"impl\": \"raw-gloo\", \"algo\": \"%s\", \"op\": \"%s\", \"ranks\": %d, "
            "\"bytes\": %d, \"time_us\": %.1f, \"busbw_gbs\": %.4f, \"verified\": %s}\n",
            algo, name, n, int64_t(total), t * 1e6, total / t * BusFactor(name, n) / 1e9,
            verified ? "true" : "false");
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  auto args =
      flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                       {"nproc", "min-bytes", "max-bytes", "allreduce-algo", "allgather-algo"}, {});
  if (!args.ok()) {
    absl::FPrintF(stderr, "%s\n", args.status().message());
    return 2;
  }
  Config cfg;
  const absl::StatusOr<int> nproc = args->GetInt("nproc", cfg.nproc);
  const absl::StatusOr<double> min_bytes = args->GetDouble("min-bytes", cfg.min_bytes);
  const absl::StatusOr<double> max_bytes = args->GetDouble("max-bytes", cfg.max_bytes);
  for (const absl::Status& s : {nproc.status(), min_bytes.status(), max_bytes.status()}) {
    if (!s.ok()) {
      absl::FPrintF(stderr, "%s\n", s.message());
      return 2;
    }
  }
  cfg.nproc = *nproc;
  cfg.min_bytes = *min_bytes;
  cfg.max_bytes = *max_bytes;
  cfg.allreduce_algo = args->Get("allreduce-algo", cfg.allreduce_algo);
  cfg.allgather_algo = args->Get("allgather-algo", cfg.allgather_algo);
  const std::vector<std::string> allreduce_algos = {"ring", "bcube", "ring_chunked",
                                                    "halving_doubling"};
  if (std::find(allreduce_algos.begin(), allreduce_algos.end(), cfg.allreduce_algo) ==
          allreduce_algos.end() ||
      (cfg.allgather_algo != "ring" && cfg.allgather_algo != "ring_old") || cfg.nproc < 2 ||
      cfg.min_bytes < 4 || cfg.max_bytes > (int64_t{1} << 30)) {
    absl::FPrintF(stderr,
                  "usage: raw_gloo_bench [--nproc N>=2] [--min-bytes B] [--max-bytes B<=1GiB] "
                  "[--allreduce-algo ring|bcube|ring_chunked|halving_doubling] "
                  "[--allgather-algo ring|ring_old]\n");
    return 2;
  }
  // A fresh directory per run: the FileStore would otherwise hand out a previous run's addresses.
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "raw_gloo_bench.XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string store_dir = dir_template;
  // Nothing here has started a thread, so the children cannot inherit a lock held at fork time.
  std::vector<pid_t> pids;
  for (int r = 0; r < cfg.nproc; ++r) {
    const pid_t pid = fork();
    if (pid == 0) _exit(RunRank(r, cfg, store_dir));
    pids.push_back(pid);
  }
  int rc = 0;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  std::error_code ignored;
  std::filesystem::remove_all(store_dir, ignored);
  return rc;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Main(argc, argv);
}
