// The swap engine's sequential write and read bandwidth on one file, with the same knobs fio has,
// for offload_bench.sh to set beside `fio --direct=1 --ioengine=io_uring` on the same path:
//
//   swap_bandwidth --file /tmp/x/swap.dat --bytes 1073741824 --block-size 1048576
//                  --queue-depth 8 --threads 1
//
// One round: the file is made as the engine makes its swap files (SwapFile::Create: O_DIRECT,
// blocks allocated up front, as fio's default fallocate=native does), written whole as one
// transfer from an aligned buffer, then read back whole into it and checked. Prints one JSON line
// with both bandwidths in GB/s (10^9 bytes). Neither side syncs: fio does not either by default,
// and with O_DIRECT the bytes have left the page cache by the time a request completes. The file
// is removed at the end, so each round starts as fio's does, from a freshly allocated file.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/runtime/process_init.h"
#include "common/status/status_macros.h"
#include "worker/offload/aligned_buffer.h"
#include "worker/offload/swap_engine.h"
#include "worker/offload/swap_file.h"
#include "worker/tensor/allocator.h"

namespace dstrain {
namespace {

using offload::SwapEngine;

struct Result {
  double write_gb_s = 0, read_gb_s = 0;
  std::string backend;
};

// A word per 8 bytes that depends on its offset, so a block read from the wrong place shows.
uint64_t Pattern(int64_t offset) { return static_cast<uint64_t>(offset) * 0x9E3779B97F4A7C15ull; }

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

absl::StatusOr<Result> RunRound(const std::string& path, int64_t bytes,
                                const SwapEngine::Options& options) {
  DT_ASSIGN_OR_RETURN(std::unique_ptr<SwapEngine> engine, SwapEngine::Create(options));
  DT_ASSIGN_OR_RETURN(std::unique_ptr<offload::SwapFile> file,
                      offload::SwapFile::Create(path, bytes));
  tensor::CpuAllocator host;
  DT_ASSIGN_OR_RETURN(
      offload::AlignedBuffer buf,
      offload::AlignedBuffer::Allocate(&host, bytes, tensor::MemoryCategory::kOther));
  char* data = buf.data();
  for (int64_t i = 0; i < bytes; i += 8) {
    const uint64_t v = Pattern(i);
    std::memcpy(data + i, &v, 8);
  }
  Result r;
  r.backend = engine->backend();
  auto t0 = std::chrono::steady_clock::now();
  DT_RETURN_IF_ERROR(engine->Wait(engine->Write(file->ref(), 0, data, bytes)));
  r.write_gb_s = bytes / 1e9 / Since(t0);
  // Cleared, so the check below sees only what the read brought back.
  std::memset(data, 0, static_cast<size_t>(bytes));
  t0 = std::chrono::steady_clock::now();
  DT_RETURN_IF_ERROR(engine->Wait(engine->Read(file->ref(), 0, data, bytes)));
  r.read_gb_s = bytes / 1e9 / Since(t0);
  for (int64_t i = 0; i < bytes; i += 8) {
    uint64_t v;
    std::memcpy(&v, data + i, 8);
    if (v != Pattern(i)) {
      return absl::DataLossError(absl::StrCat(path, ": byte ", i, " read back differs"));
    }
  }
  return r;
}

int Run(int argc, char** argv) {
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                               {"file", "bytes", "block-size", "queue-depth", "threads"}, {});
  if (!args.ok() || !args->Has("file")) {
    absl::FPrintF(stderr,
                  "%s\nusage: swap_bandwidth --file PATH [--bytes N] [--block-size N] "
                  "[--queue-depth N] [--threads N]\n",
                  args.ok() ? "" : args.status().message());
    return 2;
  }
  auto bytes = args->GetInt64("bytes", int64_t{1} << 30);
  auto block = args->GetInt64("block-size", int64_t{1} << 20);
  auto depth = args->GetInt("queue-depth", 8);
  auto threads = args->GetInt("threads", 1);
  for (const absl::Status& s : {bytes.status(), block.status(), depth.status(), threads.status()}) {
    if (!s.ok()) {
      absl::FPrintF(stderr, "%s\n", s.message());
      return 2;
    }
  }
  if (*bytes <= 0 || *bytes % *block != 0) {
    absl::FPrintF(stderr, "--bytes must be a positive multiple of --block-size\n");
    return 2;
  }
  SwapEngine::Options options;
  options.block_size = *block;
  options.queue_depth = *depth;
  options.threads = *threads;
  absl::StatusOr<Result> r = RunRound(args->Get("file"), *bytes, options);
  if (!r.ok()) {
    absl::FPrintF(stderr, "%s\n", r.status().ToString());
    return 1;
  }
  absl::PrintF(
      "{\"bytes\": %d, \"block_size\": %d, \"queue_depth\": %d, \"threads\": %d, "
      "\"backend\": \"%s\", \"write_gb_s\": %.4f, \"read_gb_s\": %.4f}\n",
      *bytes, *block, *depth, *threads, r->backend, r->write_gb_s, r->read_gb_s);
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Run(argc, argv);
}
