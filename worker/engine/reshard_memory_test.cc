// Host memory of a resharded load: a checkpoint written by 4 ranks loads at 2, and what each
// loading rank allocates on top of its engine stays within a fixed buffer, however large the model
// state is (before, every rank held every shard whole plus the full weights and both Adam moments
// flat: about twice the whole model state per rank).
//
// Every operator new and delete of this binary is counted (a size header in front of each block),
// per thread (a rank is a thread here) and for the process. The figures are printed; reproduce
// with
//   bazel test --config=nocuda //worker/engine:reshard_memory_test --test_output=all
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/gpt.h"

namespace {

// The size sits in a 16-byte header, so blocks stay aligned as malloc's are.
struct alignas(16) BlockHeader {
  size_t size;
};
thread_local int64_t thread_current = 0, thread_peak = 0;
std::atomic<int64_t> process_current{0}, process_peak{0};

void* CountedNew(size_t n) {
  void* block = std::malloc(n + sizeof(BlockHeader));
  if (block == nullptr) throw std::bad_alloc();
  static_cast<BlockHeader*>(block)->size = n;
  thread_current += static_cast<int64_t>(n);
  thread_peak = std::max(thread_peak, thread_current);
  const int64_t now = process_current.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
  int64_t peak = process_peak.load();
  while (now > peak && !process_peak.compare_exchange_weak(peak, now)) {
  }
  return static_cast<BlockHeader*>(block) + 1;
}

void CountedDelete(void* p) {
  if (p == nullptr) return;
  BlockHeader* block = static_cast<BlockHeader*>(p) - 1;
  thread_current -= static_cast<int64_t>(block->size);
  process_current.fetch_sub(static_cast<int64_t>(block->size));
  std::free(block);
}

}  // namespace

void* operator new(size_t n) { return CountedNew(n); }
void* operator new[](size_t n) { return CountedNew(n); }
void operator delete(void* p) noexcept { CountedDelete(p); }
void operator delete[](void* p) noexcept { CountedDelete(p); }
void operator delete(void* p, size_t) noexcept { CountedDelete(p); }
void operator delete[](void* p, size_t) noexcept { CountedDelete(p); }

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using testing::RunOnRanks;

// A model whose state (fp32 weights and two Adam moments: 12 bytes a parameter, about 22 MiB)
// dwarfs the fixed buffers of the load: the small test job with a larger model put in.
config::JobSpec BigSpec(int world, int stage) {
  config::JobSpec spec =
      testing::SmallGptSpec(world, stage, 1, 0.0, R"(, "reduce_bucket_size": 65536)", 1);
  spec.model.n_layer = 4;
  spec.model.n_head = 4;
  spec.model.n_embd = 192;
  spec.model.vocab_size = spec.model.padded_vocab_size = 512;
  spec.model.block_size = 64;
  return spec;
}

// What a loading rank may allocate beyond its engine: the 1 MiB piece in which a verifying rank
// streams a shard through its checksum, bookkeeping (the partitions, the per-rank state, the
// counters, file handles) and, after a load to stage 1-2, the buffer the test communicator
// allocates for the parameter all-gather of one unit (at most the larger of reduce_bucket_size,
// 65536 floats here, and the largest module).
constexpr int64_t kBoundPerRank = int64_t{2} << 20;

class ReshardMemoryTest : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(ReshardMemoryTest, ExtraHostMemoryPerRankIsAFixedBuffer) {
  const auto [from_stage, to_stage] = GetParam();
  const std::string root =
      absl::StrCat(std::getenv("TEST_TMPDIR"), "/reshard_memory_", from_stage, to_stage);
  const config::JobSpec from = BigSpec(4, from_stage), to = BigSpec(2, to_stage);
  RunOnRanks(4, [&](int, comm::Communicator* comm) {
    testing::CpuDevice device;
    auto e =
        Engine::Initialize(*model::Gpt::Create(testing::ModelShape(from), &device.ops), from, comm);
    ASSERT_THAT(e, IsOk());
    const CheckpointOptions options{env::PosixEnv::Default(), root, 0, comm::CommOptions{}};
    ASSERT_THAT(SaveCheckpoint(**e, comm, options, "step0", "position"), IsOk());
  });

  int64_t state_bytes = 0;
  std::vector<int64_t> share(2), extra(2);
  int64_t process_extra = 0;
  RunOnRanks(2, [&](int r, comm::Communicator* comm) {
    testing::CpuDevice device;
    auto e =
        Engine::Initialize(*model::Gpt::Create(testing::ModelShape(to), &device.ops), to, comm);
    ASSERT_THAT(e, IsOk());
    if (r == 0) state_bytes = 12 * (*e)->model().layout().num_parameters();
    share[r] = 12 * (*e)->zero().partition().owned_total();
    const CheckpointOptions options{env::PosixEnv::Default(), root, 0, comm::CommOptions{}};
    const auto barrier = [comm] { ASSERT_THAT((*comm->Barrier({}))->Wait(), IsOk()); };
    barrier();
    int64_t process_base = 0;
    if (r == 0) {
      process_base = process_current.load();
      process_peak.store(process_base);
    }
    barrier();
    const int64_t base = thread_current;
    thread_peak = thread_current;
    ASSERT_THAT(LoadCheckpoint(**e, comm, options, "latest"), IsOk());
    extra[r] = thread_peak - base;
    barrier();
    if (r == 0) process_extra = process_peak.load() - process_base;
  });
  std::printf(
      "reshard 4 ranks stage %d -> 2 ranks stage %d: model state %.1f MiB (fp32 weights, m, v); "
      "share per rank %.1f / %.1f MiB; peak extra host memory rank 0 %.0f KiB, rank 1 %.0f KiB, "
      "process (both ranks) %.0f KiB\n",
      from_stage, to_stage, state_bytes / 1048576.0, share[0] / 1048576.0, share[1] / 1048576.0,
      extra[0] / 1024.0, extra[1] / 1024.0, process_extra / 1024.0);
  for (int r = 0; r < 2; ++r) {
    EXPECT_LE(extra[r], kBoundPerRank) << "rank " << r;
    EXPECT_LE(extra[r], share[r] / 4) << "rank " << r << ": the model is big enough to tell";
  }
  EXPECT_LE(process_extra, 2 * kBoundPerRank);
}

INSTANTIATE_TEST_SUITE_P(Stages, ReshardMemoryTest,
                         ::testing::Values(std::pair{2, 3}, std::pair{1, 2}, std::pair{3, 0}),
                         [](const auto& info) {
                           return absl::StrCat("s", info.param.first, "_to_s", info.param.second);
                         });

}  // namespace
}  // namespace dstrain::engine
