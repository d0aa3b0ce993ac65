#include "worker/zero/optimizer_swap.h"

#include <cstdint>
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

// An OptimizerSwap and, beside it, the arrays it should hold, kept in memory.
class OptimizerSwapTest : public ::testing::Test {
 protected:
  void Make(std::vector<int64_t> windows, OptimizerSwap::Options options,
            std::shared_ptr<offload::FaultPlan> plan = nullptr) {
    swap_ = nullptr;  // the last one's file and directory go first
    dir_ = nullptr;
    root_ = env::FreshTestDir(env::PosixEnv::Default());
    offload::SwapEngine::Options o;
    o.block_size = 64 << 10;
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
    for (int64_t n : windows) total += n;
    auto swap = OptimizerSwap::Create(windows, options, engine_.get(), *dir_, &host_);
    ASSERT_THAT(swap.status(), IsOk());
    swap_ = std::move(*swap);
    model_.assign(options.arrays, std::vector<float>(total, 0.f));
  }
  std::vector<float> Read(int a, int64_t at, int64_t n) {
    std::vector<float> out(n, -1.f);
    EXPECT_THAT(swap_->ReadRange(a, at, n, out.data()), IsOk());
    return out;
  }
  void ExpectMatchesModel() {
    for (int a = 0; a < static_cast<int>(model_.size()); ++a) {
      EXPECT_EQ(Read(a, 0, model_[a].size()), model_[a]) << "array " << a;
    }
  }

  tensor::CpuAllocator host_;
  std::string root_;
  std::unique_ptr<offload::SwapEngine> engine_;
  std::unique_ptr<offload::SwapDir> dir_;
  std::unique_ptr<OptimizerSwap> swap_;
  std::vector<std::vector<float>> model_;
};

// Ranges that start and end inside blocks, span windows, and exceed one buffer read and write
// exactly their elements and leave their neighbours alone.
TEST_F(OptimizerSwapTest, RangesMoveExactlyTheirElements) {
  Make({5000, 1, 3000, 20000}, {.arrays = 3, .buffer_count = 2});
  std::mt19937 rng(7);
  const int64_t total = model_[0].size();
  for (int i = 0; i < 60; ++i) {
    const int a = static_cast<int>(rng() % 3);
    const int64_t at = rng() % total;
    const int64_t n = 1 + rng() % (total - at);
    std::vector<float> src(n);
    for (float& f : src) f = static_cast<float>(rng() % 100000) * 0.25f;
    ASSERT_THAT(swap_->WriteRange(a, at, n, src.data()), IsOk());
    std::copy(src.begin(), src.end(), model_[a].begin() + at);
    const int64_t rat = rng() % total, rn = 1 + rng() % (total - rat);
    EXPECT_EQ(Read(a, rat, rn),
              std::vector<float>(model_[a].begin() + rat, model_[a].begin() + rat + rn));
  }
  ExpectMatchesModel();
}

TEST_F(OptimizerSwapTest, RangeOutsideTheStateIsRefused) {
  Make({100, 200}, {.arrays = 2});
  std::vector<float> buf(10);
  EXPECT_THAT(
      swap_->ReadRange(0, 295, 10, buf.data()),
      StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("outside the swapped state")));
  EXPECT_THAT(
      swap_->WriteRange(2, 0, 1, buf.data()),
      StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("outside the swapped state")));
  EXPECT_THAT(
      swap_->ReadRange(-1, 0, 1, buf.data()),
      StatusIs(absl::StatusCode::kInternal, ::testing::HasSubstr("outside the swapped state")));
}

// Every pipelining setting visits each window once, in order, with its arrays as last written,
// and writes back what the function left.
TEST_F(OptimizerSwapTest, UpdateVisitsEveryWindowWithItsState) {
  for (bool read_ahead : {false, true}) {
    for (bool write_behind : {false, true}) {
      for (int64_t buffers : {1, 2, 4}) {
        SCOPED_TRACE(::testing::Message() << read_ahead << write_behind << buffers);
        Make({1000, 1024, 7, 4096, 33}, {.arrays = 3,
                                         .buffer_count = buffers,
                                         .pipeline_read = read_ahead,
                                         .pipeline_write = write_behind});
        for (int round = 1; round <= 3; ++round) {
          std::vector<int> visited;
          int64_t at = 0;
          ASSERT_THAT(swap_->Update([&](int w, float* const* arrays) {
            visited.push_back(w);
            const int64_t n = swap_->windows()[w];
            for (int a = 0; a < 3; ++a) {
              for (int64_t i = 0; i < n; ++i) {
                EXPECT_EQ(arrays[a][i], model_[a][at + i]) << "window " << w;
                arrays[a][i] = model_[a][at + i] = round * 1000.f + a * 100.f + w + i * 1e-3f;
              }
            }
            at += n;
            return absl::OkStatus();
          }),
                      IsOk());
          EXPECT_EQ(visited, (std::vector<int>{0, 1, 2, 3, 4}));
        }
        ExpectMatchesModel();
      }
    }
  }
}

// With pipeline_read an Update leaves the next one's first reads in flight; a write or a zeroing
// between the two must not let the next Update see the bytes read ahead of it.
TEST_F(OptimizerSwapTest, ChangesBetweenUpdatesAreNotHiddenByTheReadAhead) {
  for (int64_t buffers : {1, 2, 8}) {
    SCOPED_TRACE(buffers);
    Make({1000, 24, 3000},
         {.arrays = 2, .buffer_count = buffers, .pipeline_read = true, .pipeline_write = true});
    const int64_t total = model_[0].size();
    auto update_expecting_model = [&] {
      int64_t at = 0;
      ASSERT_THAT(swap_->Update([&](int w, float* const* arrays) {
        const int64_t n = swap_->windows()[w];
        for (int a = 0; a < 2; ++a) {
          for (int64_t i = 0; i < n; ++i) {
            EXPECT_EQ(arrays[a][i], model_[a][at + i]) << "window " << w << " array " << a;
            arrays[a][i] = model_[a][at + i] += 1.f;
          }
        }
        at += n;
        return absl::OkStatus();
      }),
                  IsOk());
    };
    update_expecting_model();
    std::vector<float> src(total);
    for (int64_t i = 0; i < total; ++i) src[i] = 0.5f * static_cast<float>(i);
    ASSERT_THAT(swap_->WriteRange(1, 0, total, src.data()), IsOk());
    model_[1] = src;
    update_expecting_model();
    ASSERT_THAT(swap_->Zero(), IsOk());
    for (auto& array : model_) std::fill(array.begin(), array.end(), 0.f);
    update_expecting_model();
    update_expecting_model();  // back to back: the read-ahead itself is used
    ExpectMatchesModel();
    update_expecting_model();  // the OptimizerSwap is destroyed with reads in flight
  }
}

// A read-ahead that fails fails the Update that would have used it, naming the file and the
// offset (the step fails and the job resumes from its checkpoint); nothing read ahead is left
// behind, so the Update after it reads afresh.
TEST_F(OptimizerSwapTest, AFailedReadAheadFailsTheNextUpdate) {
  auto plan = std::make_shared<offload::FaultPlan>();
  // Window 0 takes 2 x 4096 bytes of the file; window 1 starts at 8192.
  Make({1000, 3000}, {.arrays = 2, .buffer_count = 2, .pipeline_read = true}, plan);
  bool armed = false;
  auto add_one = [&](int w, float* const* arrays) {
    for (int a = 0; a < 2; ++a) {
      for (int64_t i = 0; i < swap_->windows()[w]; ++i) arrays[a][i] += 1.f;
    }
    if (w == 1 && !armed) {  // window 1 is read; its next read is the read-ahead
      plan->Add({.kind = offload::IoFault::Kind::kError, .min_offset = 8192, .times = 1});
      armed = true;
    }
    return absl::OkStatus();
  };
  ASSERT_THAT(swap_->Update(add_one), IsOk());
  EXPECT_THAT(
      swap_->Update(add_one),
      StatusIs(absl::StatusCode::kInternal, ::testing::AllOf(::testing::HasSubstr("optimizer.swp"),
                                                             ::testing::HasSubstr("8192"))));
  EXPECT_EQ(plan->injected(), 1);  // the read-ahead met the fault, not a read of this Update
  EXPECT_THAT(swap_->Update(add_one), IsOk());
  EXPECT_EQ(plan->injected(), 1);
}

}  // namespace
}  // namespace dstrain::zero
