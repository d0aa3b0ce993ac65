// Bus bandwidth of dstrain's CPU communicators (--backend gloo, the default, or shm): AllReduce,
// ReduceScatter, AllGather on N local processes (fork + a TCP store served by the parent), f32,
// from MIN to MAX bytes (x4 steps). --ops allreduce limits the ops; --iters fixes the timed
// iterations per size. --memcpy prints instead the single-thread memcpy bandwidth of the same
// sizes ("impl": "memcpy", bytes / time), the yardstick of bench/comm_bandwidth/shm_bandwidth.sh.
// --host-buffers takes the buffers from Communicator::AllocateHostBuffer (on shm: memory every
// rank maps, so the collectives skip the staging copies; "impl" then ends in "-host").
//
//   comm_bench --nproc 2 --min-bytes 1024 --max-bytes 268435456 [--backend shm]
//
// Prints one JSON line per (op, bytes) from rank 0: the median time over the iterations and the
// bus bandwidth in nccl-tests' definition (AllReduce: S/t · 2(n-1)/n; ReduceScatter and AllGather:
// S/t · (n-1)/n with S the total array size). bench/comm_bandwidth/comm_bandwidth.sh prints it
// side by side with Gloo driven through torch.distributed.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/runtime/process_init.h"
#include "worker/comm/gloo/gloo_communicator.h"
#include "worker/comm/shm/shm_communicator.h"
#include "worker/store/tcp_store.h"

namespace dstrain {
namespace {

double BusFactor(const std::string& op, int n) {
  return op == "allreduce" ? 2.0 * (n - 1) / n : double(n - 1) / n;
}

struct BenchConfig {
  std::string backend = "gloo";
  std::string ops = "allreduce,reducescatter,allgather";
  int iters = 0;  // 0: by size
  // The buffers from Communicator::AllocateHostBuffer (shared with the peers on shm) instead of
  // the process's own memory.
  bool host_buffers = false;
};

// Single-thread memcpy of each size between two buffers, median of the iterations.
int RunMemcpy(int64_t min_bytes, int64_t max_bytes, const BenchConfig& cfg) {
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    std::vector<char> a(bytes, 1), b(bytes, 0);
    const int iters = cfg.iters > 0 ? cfg.iters : 10;
    std::vector<double> times;
    for (int i = 0; i < iters + 1; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), bytes);
      auto t1 = std::chrono::steady_clock::now();
      if (i > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double t = times[times.size() / 2];
    absl::PrintF(
        "{\"impl\": \"memcpy\", \"op\": \"memcpy\", \"ranks\": 1, \"bytes\": %d, "
        "\"time_us\": %.1f, \"busbw_gbs\": %.4f}\n",
        bytes, t * 1e6, double(bytes) / t / 1e9);
  }
  return 0;
}

int RunRank(int rank, int n, int port_fd, int64_t min_bytes, int64_t max_bytes,
            const BenchConfig& cfg) {
  int port = 0;
  if (read(port_fd, &port, sizeof(port)) != sizeof(port)) {
    absl::FPrintF(stderr, "rank %d: no store port from the parent\n", rank);
    return 1;
  }
  close(port_fd);
  auto store = store::TcpStoreClient::Connect("127.0.0.1", port, absl::Seconds(30));
  if (!store.ok()) {
    absl::FPrintF(stderr, "rank %d: %s\n", rank, store.status().message());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<comm::Communicator>> comm;
  if (cfg.backend == "shm") {
    auto c = comm::ShmCommunicator::Create(store->get(), rank, n, "bench", comm::ShmOptions());
    if (c.ok())
      comm = std::unique_ptr<comm::Communicator>(*std::move(c));
    else
      comm = c.status();
  } else {
    auto c = comm::GlooCommunicator::Create(store->get(), rank, n, "bench", comm::GlooOptions());
    if (c.ok())
      comm = std::unique_ptr<comm::Communicator>(*std::move(c));
    else
      comm = c.status();
  }
  if (!comm.ok()) {
    absl::FPrintF(stderr, "rank %d: %s\n", rank, comm.status().message());
    return 1;
  }
  comm::CommOptions opts;
  opts.timeout = absl::Seconds(120);
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    const int64_t count = std::max<int64_t>(n, bytes / 4 / n * n);  // divisible by n
    std::vector<float> own_big, own_small;
    std::unique_ptr<comm::HostBuffer> host_big, host_small;
    float* big_data;
    float* small_data;
    if (cfg.host_buffers) {
      auto b = (*comm)->AllocateHostBuffer(count * 4, opts);
      auto m = (*comm)->AllocateHostBuffer(count / n * 4, opts);
      if (!b.ok() || !m.ok()) {
        absl::FPrintF(stderr, "rank %d: %s\n", rank, (b.ok() ? m : b).status().message());
        return 1;
      }
      host_big = *std::move(b);
      host_small = *std::move(m);
      big_data = static_cast<float*>(host_big->data());
      small_data = static_cast<float*>(host_small->data());
      std::fill(small_data, small_data + count / n, 1.f);
    } else {
      own_big.assign(count, 1.f);
      own_small.assign(count / n, 1.f);
      big_data = own_big.data();
      small_data = own_small.data();
    }
    const int iters = cfg.iters > 0         ? cfg.iters
                      : bytes <= (1 << 20)  ? 20
                      : bytes <= (16 << 20) ? 6
                                            : 3;
    for (const std::string op : {"allreduce", "reducescatter", "allgather"}) {
      if (cfg.ops.find(op) == std::string::npos) continue;
      auto run = [&]() -> absl::Status {
        absl::StatusOr<std::unique_ptr<comm::Work>> w;
        if (op == "allreduce") {
          w = (*comm)->AllReduce(comm::CommBuffer{big_data, count}, comm::ReduceOp::kSum, opts);
        } else if (op == "reducescatter") {
          w = (*comm)->ReduceScatter(comm::CommBuffer{big_data, count},
                                     comm::CommBuffer{small_data, count / n}, comm::ReduceOp::kSum,
                                     opts);
        } else {
          w = (*comm)->AllGather(comm::CommBuffer{small_data, count / n},
                                 comm::CommBuffer{big_data, count}, opts);
        }
        if (!w.ok()) return w.status();
        return (*w)->Wait();
      };
      std::vector<double> times;
      for (int i = 0; i < iters + 1; ++i) {
        std::fill(big_data, big_data + count, 1.f);
        // Every rank starts the timed operation together: without it rank 0's time would also
        // hold however long its peers took to reach it (their fill, their scheduling).
        absl::StatusOr<std::unique_ptr<comm::Work>> barrier = (*comm)->Barrier(opts);
        absl::Status ready = barrier.ok() ? (*barrier)->Wait() : barrier.status();
        if (!ready.ok()) {
          absl::FPrintF(stderr, "rank %d: %s\n", rank, ready.message());
          return 1;
        }
        auto t0 = std::chrono::steady_clock::now();
        absl::Status s = run();
        auto t1 = std::chrono::steady_clock::now();
        if (!s.ok()) {
          absl::FPrintF(stderr, "rank %d: %s\n", rank, s.message());
          return 1;
        }
        if (i > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
      }
      std::sort(times.begin(), times.end());
      const double t = times[times.size() / 2];
      const double total = double(count) * 4;
      if (rank == 0) {
        absl::PrintF(
            "{\"impl\": \"dstrain-%s%s\", \"op\": \"%s\", \"ranks\": %d, \"bytes\": %d, "
            "\"time_us\": %.1f, \"busbw_gbs\": %.4f}\n",
            cfg.backend, cfg.host_buffers ? "-host" : "", op, n, int64_t(total), t * 1e6,
            total / t * BusFactor(op, n) / 1e9);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                               {"nproc", "min-bytes", "max-bytes", "backend", "ops", "iters"},
                               {"memcpy", "host-buffers"});
  if (!args.ok()) {
    absl::FPrintF(stderr, "%s\n", args.status().message());
    return 2;
  }
  const int n = *args->GetInt("nproc", 2);
  const int64_t lo = *args->GetDouble("min-bytes", 1024),
                hi = *args->GetDouble("max-bytes", 1 << 28);
  BenchConfig cfg;
  cfg.backend = args->Get("backend", cfg.backend);
  cfg.ops = args->Get("ops", cfg.ops);
  cfg.iters = *args->GetInt("iters", 0);
  cfg.host_buffers = args->Has("host-buffers");
  if (cfg.backend != "gloo" && cfg.backend != "shm") {
    absl::FPrintF(stderr, "--backend: gloo or shm, not '%s'\n", cfg.backend);
    return 2;
  }
  if (args->Has("memcpy")) return RunMemcpy(lo, hi, cfg);
  // Fork first, then start the store server and hand its port down a pipe: the server runs
  // threads, and a child forked while one of them held a lock inside absl (a SpinLock on
  // absl::Mutex's slow path) finds it held forever. A rank hung in TcpStoreClient::Connect that
  // way on the 2-core dev machine, and rank 0 gave up after 5 minutes.
  std::vector<pid_t> pids;
  std::vector<int> port_w;
  for (int r = 0; r < n; ++r) {
    int fds[2];
    if (pipe(fds) != 0) {
      std::perror("pipe");
      return 1;
    }
    const pid_t pid = fork();
    if (pid == 0) {
      close(fds[1]);
      for (int w : port_w) close(w);
      _exit(RunRank(r, n, fds[0], lo, hi, cfg));
    }
    close(fds[0]);
    pids.push_back(pid);
    port_w.push_back(fds[1]);
  }
  auto server = store::TcpStoreServer::Start("127.0.0.1", 0);
  if (!server.ok()) absl::FPrintF(stderr, "%s\n", server.status().message());
  const int port = server.ok() ? (*server)->port() : 0;
  for (int w : port_w) {
    // Without a server the ranks read end-of-file and exit with an error.
    if (server.ok() && write(w, &port, sizeof(port)) != sizeof(port)) std::perror("write");
    close(w);
  }
  int rc = 0;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
  }
  return rc;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Main(argc, argv);
}
