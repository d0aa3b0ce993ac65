#include "worker/zero/param_swap.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/env/test_dir.h"
#include "worker/offload/fault_injection_queue.h"
#include "worker/offload/swap_engine.h"
#include "worker/offload/swap_file.h"
#include "worker/tensor/allocator.h"

namespace dstrain::zero {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A ParamSwap and, beside it, the bytes it should hold, kept in memory.
class ParamSwapTest : public ::testing::TestWithParam<int64_t> {  // the element's bytes
 protected:
  void Make(std::vector<int64_t> chunks, ParamSwap::Options options,
            std::shared_ptr<offload::FaultPlan> plan = nullptr) {
    swap_ = nullptr;
    dir_ = nullptr;
    root_ = env::FreshTestDir(env::PosixEnv::Default());
    offload::SwapEngine::Options o;
    o.block_size = 16 << 10;
    if (plan != nullptr) {
      o.make_queue = [plan](int depth) -> absl::StatusOr<std::unique_ptr<offload::IoQueue>> {
        return std::make_unique<offload::FaultInjectionQueue>(offload::NewSyncQueue(depth), plan);
      };
    }
    auto engine = offload::SwapEngine::Create(o);
    ASSERT_THAT(engine.status(), IsOk());
    engine_ = std::move(*engine);
    auto dir = offload::SwapDir::Prepare(root_, "job", 0, 0);
    ASSERT_THAT(dir.status(), IsOk());
    dir_ = std::move(*dir);
    int64_t total = 0;
    for (int64_t n : chunks) {
      starts_.push_back(total);
      total += n;
    }
    chunks_ = chunks;
    auto swap = ParamSwap::Create(chunks, elem(), options, engine_.get(), *dir_, &host_);
    ASSERT_THAT(swap.status(), IsOk());
    swap_ = std::move(*swap);
    model_.assign(total * elem(), 0);
  }
  int64_t elem() const { return GetParam(); }
  std::vector<char> Random(int64_t n) {
    std::vector<char> out(n * elem());
    for (char& c : out) c = static_cast<char>(rng_());
    return out;
  }
  void Write(int64_t at, int64_t n) {
    const std::vector<char> bytes = Random(n);
    ASSERT_THAT(swap_->WriteRange(at, n, bytes.data()), IsOk());
    std::memcpy(model_.data() + at * elem(), bytes.data(), bytes.size());
  }
  std::vector<char> Read(int64_t at, int64_t n) {
    std::vector<char> out(n * elem(), 0x5a);
    EXPECT_THAT(swap_->ReadRange(at, n, out.data()), IsOk());
    return out;
  }
  std::vector<char> Expected(int64_t at, int64_t n) const {
    return std::vector<char>(model_.begin() + at * elem(), model_.begin() + (at + n) * elem());
  }
  std::vector<char> Chunk(int unit) const { return Expected(starts_[unit], chunks_[unit]); }
  std::vector<char> Acquired(int unit) {
    auto got = swap_->Acquire(unit);
    EXPECT_THAT(got.status(), IsOk());
    if (!got.ok()) return {};
    std::vector<char> out(*got, *got + chunks_[unit] * elem());
    swap_->Release(unit);
    return out;
  }

  std::mt19937 rng_{7};
  tensor::CpuAllocator host_;
  std::string root_;
  std::unique_ptr<offload::SwapEngine> engine_;
  std::unique_ptr<offload::SwapDir> dir_;
  std::unique_ptr<ParamSwap> swap_;
  std::vector<int64_t> chunks_, starts_;
  std::vector<char> model_;
};

TEST_P(ParamSwapTest, RangesReadBackWhatWasWrittenAndLeaveTheRestAlone) {
  // Chunk lengths that are not whole blocks, so ranges start and end inside blocks; one larger
  // than the range scratch, so a range takes several transfers.
  Make({5000, 3, 700001, 4097, 1}, {});
  EXPECT_EQ(Read(0, swap_->owned_elements()), model_);  // a new file reads as zeros
  std::uniform_int_distribution<int64_t> pick(0, swap_->owned_elements() - 1);
  for (int i = 0; i < 60; ++i) {
    const int64_t a = pick(rng_), b = pick(rng_);
    Write(std::min(a, b), std::max(a, b) - std::min(a, b) + 1);
  }
  Write(0, swap_->owned_elements());
  Write(5000, 3);
  Write(5002, 1);
  EXPECT_EQ(Read(0, swap_->owned_elements()), model_);
  for (int i = 0; i < 20; ++i) {
    const int64_t a = pick(rng_), b = pick(rng_);
    const int64_t at = std::min(a, b), n = std::max(a, b) - at + 1;
    EXPECT_EQ(Read(at, n), Expected(at, n)) << "[" << at << ", " << at + n << ")";
  }
  EXPECT_EQ(swap_->file_bytes(), ParamSwap::FileBytes(chunks_, elem()));
  EXPECT_THAT(swap_->ReadRange(swap_->owned_elements() - 1, 2, model_.data()),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("outside")));
}

TEST_P(ParamSwapTest, GathersSeeTheLatestWriteThroughTheirBuffers) {
  ParamSwap::Options o;
  o.buffer_count = 2;
  Make({3000, 5000, 1, 2500}, o);
  Write(0, swap_->owned_elements());
  // Prefetches take buffers until none is free.
  EXPECT_TRUE(swap_->Prefetch(1));
  EXPECT_TRUE(swap_->Prefetch(3));
  EXPECT_TRUE(swap_->Prefetch(3));  // on its way already
  EXPECT_FALSE(swap_->Prefetch(0));
  EXPECT_EQ(Acquired(1), Chunk(1));
  // With both buffers taken (3 prefetched), acquiring 0 takes the free one; then 2 makes room
  // by dropping the newest prefetch not acquired.
  EXPECT_TRUE(swap_->Prefetch(0));
  EXPECT_EQ(Acquired(2), Chunk(2));
  for (int u = 0; u < 4; ++u) EXPECT_EQ(Acquired(u), Chunk(u)) << "unit " << u;
  // A write over a buffered chunk drops the buffer: the gather after it reads the new bytes.
  ASSERT_TRUE(swap_->Prefetch(3));
  Write(starts_[3] + 10, 100);
  EXPECT_EQ(Acquired(3), Chunk(3));
  // Every buffer acquired at once: the next unit must wait (an error, not a deadlock).
  auto a = swap_->Acquire(0);
  auto b = swap_->Acquire(1);
  ASSERT_THAT(a.status(), IsOk());
  ASSERT_THAT(b.status(), IsOk());
  EXPECT_THAT(swap_->Acquire(2).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("buffer_count")));
  swap_->Release(0);
  swap_->Release(1);
  EXPECT_GT(swap_->bytes_read(), 0);
  EXPECT_GT(swap_->bytes_written(), 0);
}

TEST_P(ParamSwapTest, BuffersAreAccountedAsTheEstimateSays) {
  ParamSwap::Options o;
  o.buffer_count = 3;
  Make({3000, 5000, 1, 2500}, o);
  EXPECT_EQ(host_.Stats().current[static_cast<int>(tensor::MemoryCategory::kParams)],
            ParamSwap::BufferBytes(chunks_, elem(), 3));
}

TEST_P(ParamSwapTest, RefusesABufferSmallerThanAChunk) {
  root_ = env::FreshTestDir(env::PosixEnv::Default());
  auto engine = offload::SwapEngine::Create({});
  ASSERT_THAT(engine.status(), IsOk());
  auto dir = offload::SwapDir::Prepare(root_, "job", 0, 0);
  ASSERT_THAT(dir.status(), IsOk());
  ParamSwap::Options o;
  o.buffer_size = 4000;
  EXPECT_THAT(ParamSwap::Create({3000, 5000}, elem(), o, engine->get(), **dir, &host_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("offload_param.buffer_size: 4000"), HasSubstr("5000"))));
  o = {};
  o.buffer_count = 0;
  EXPECT_THAT(ParamSwap::Create({3000}, elem(), o, engine->get(), **dir, &host_).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("buffer_count")));
}

TEST_P(ParamSwapTest, AnIoErrorNamesTheFileAndFailsOnlyThatTransfer) {
  auto plan = std::make_shared<offload::FaultPlan>();
  Make({3000, 5000}, {}, plan);
  Write(0, swap_->owned_elements());
  const int64_t second = offload::AlignUp(3000 * elem());  // unit 1's offset in the file
  plan->Add({offload::IoFault::Kind::kError, /*write=*/false, second, EIO, 1});
  EXPECT_THAT(swap_->Acquire(1).status(),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("params.swp")));
  // The failed read left nothing buffered: the next gather reads again, correctly.
  EXPECT_EQ(Acquired(1), Chunk(1));
  plan->Add({offload::IoFault::Kind::kError, /*write=*/true, 0, ENOSPC, 1});
  std::vector<char> bytes = Random(10);
  EXPECT_THAT(swap_->WriteRange(0, 10, bytes.data()),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("params.swp")));
  // A short read is finished by the engine: the bytes are whole.
  plan->Add({offload::IoFault::Kind::kShort, /*write=*/false, 0, 0, 3});
  EXPECT_EQ(Read(0, swap_->owned_elements()), model_);
}

// What the metrics read (swap_bytes, swap_wait_s): a range's transfers count as bytes moved and
// as time waited, and TakeWaitSeconds hands the waiting out once.
TEST_P(ParamSwapTest, RangesCountTheirBytesAndTheirWaits) {
  Make({5000, 3000}, {});
  swap_->TakeWaitSeconds();  // creation's
  const int64_t read0 = swap_->bytes_read(), written0 = swap_->bytes_written();
  Write(100, 6000);  // inside blocks at both ends: partial blocks are read before they are written
  EXPECT_GE(swap_->bytes_written() - written0, 6000 * elem());
  EXPECT_GT(swap_->bytes_read(), read0);
  EXPECT_GT(swap_->TakeWaitSeconds(), 0.0);
  EXPECT_EQ(swap_->TakeWaitSeconds(), 0.0);
  const int64_t read1 = swap_->bytes_read();
  EXPECT_EQ(Read(100, 6000), Expected(100, 6000));
  EXPECT_GE(swap_->bytes_read() - read1, 6000 * elem());
  EXPECT_GT(swap_->TakeWaitSeconds(), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ParamSwapTest, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int64_t>& i) {
                           return i.param == 2 ? std::string("bits16") : std::string("fp32");
                         });

}  // namespace
}  // namespace dstrain::zero
