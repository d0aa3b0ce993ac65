// ZeroState's stage-3 machinery driven directly through ParamAccess: what a module view holds,
// the recorded order and its invalidation, persistent modules, and stage3_max_live_parameters
// read back from the allocator. (Parity of the stages with each other is in
// worker/engine/zero_parity_test.cc.)
#include "worker/zero/zero_state.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/model/param_layout.h"
#include "worker/zero/stage3.h"

namespace dstrain::zero {
namespace {

using ::dstrain::testing::IsOk;
using model::Pass;

model::ParamLayout Layout() {
  // embedding, block.0, block.1, block.2, final; C = 24, nothing divides evenly.
  auto layout = model::ParamLayout::ForGpt({3, 2, 24, 37, 48, 19});
  EXPECT_TRUE(layout.ok());
  return *layout;
}

config::ZeroConfig Stage3Config() {
  config::ZeroConfig c;
  c.stage = 3;
  c.param_persistence_threshold = 0;  // nothing persistent unless a test says so
  return c;
}

class Stage3Test : public ::testing::Test {
 protected:
  void SetUp() override {
    flat_.resize(layout_.total());
    for (size_t i = 0; i < flat_.size(); ++i) flat_[i] = 0.5f + 0.001f * static_cast<float>(i);
  }

  std::unique_ptr<Stage3> Make(const config::ZeroConfig& c) {
    auto z = ZeroState::Create(layout_, c, nullptr, {}, &ops_);
    EXPECT_THAT(z, IsOk());
    std::vector<float> copy = flat_;
    EXPECT_THAT((*z)->SetParams(tensor::View::Flat(copy.data(), DType::kF32, copy.size())), IsOk());
    return std::unique_ptr<Stage3>(static_cast<Stage3*>(z->release()));
  }

  // One training micro-batch touching modules in `order` (forward then backward), checking that
  // every view holds the module's parameters.
  void MicroBatch(ZeroState& z, const std::vector<int>& order) {
    z.BeginMicroBatch();
    for (Pass pass : {Pass::kForward, Pass::kBackward}) {
      for (int m : order) {
        auto view = z.AcquireParams(m, pass);
        ASSERT_THAT(view, IsOk());
        const model::ModuleSpec& spec = layout_.modules()[m];
        ASSERT_EQ(view->views.size(), spec.params.size());
        for (size_t j = 0; j < spec.params.size(); ++j) {
          const model::ParamSpec& p = layout_.params()[spec.params[j]];
          ASSERT_EQ(view->views[j].numel(), p.numel);
          for (int64_t i = 0; i < p.numel; ++i) {
            ASSERT_EQ(view->views[j].as<float>()[i], flat_[p.offset + i])
                << p.name << "[" << i << "]";
          }
        }
        if (pass == Pass::kBackward) {
          auto grads = z.AcquireGrads(m);
          ASSERT_THAT(grads, IsOk());
          grads->views[0].as<float>()[0] += 1.f;
          ASSERT_THAT(z.ReleaseGrads(m), IsOk());
        }
        ASSERT_THAT(z.ReleaseParams(m, pass), IsOk());
      }
    }
    ASSERT_THAT(z.FinishBackward(), IsOk());
  }

  model::ParamLayout layout_ = Layout();
  std::vector<float> flat_;
  tensor::CpuAllocator alloc_;
  device::CpuOps ops_{&alloc_};
};

TEST_F(Stage3Test, ViewsHoldTheModuleAndTheTraceIsReRecordedWhenTheOrderChanges) {
  auto z = Make(Stage3Config());
  const std::vector<int> order = {0, 1, 2, 3, 4}, other = {0, 2, 1, 3, 4};
  MicroBatch(*z, order);
  EXPECT_TRUE(z->trace_complete());
  MicroBatch(*z, order);
  EXPECT_EQ(z->trace_invalidations(), 0);
  MicroBatch(*z, other);  // prefetched modules arrive out of order: views must still be right
  EXPECT_EQ(z->trace_invalidations(), 1);
  MicroBatch(*z, other);
  EXPECT_EQ(z->trace_invalidations(), 1) << "the new order was recorded";
  // Nothing stays gathered without persistence once the step ends.
  ASSERT_THAT(z->FinishStep(), IsOk());
  for (int u = 0; u < 5; ++u) EXPECT_FALSE(z->unit_gathered(u));
  EXPECT_EQ(alloc_.Stats().current[int(tensor::MemoryCategory::kGatheredParams)], 0);
}

TEST_F(Stage3Test, SmallModulesPersistLargeOnesAreReleased) {
  config::ZeroConfig c = Stage3Config();
  c.param_persistence_threshold = 24;  // final's LayerNorm (C floats each); blocks hold 3C·C
  c.max_reuse_distance = 0;
  auto z = Make(c);
  const int final_unit = 4;
  EXPECT_TRUE(z->unit_persistent(final_unit));
  for (int u = 0; u < 4; ++u) EXPECT_FALSE(z->unit_persistent(u));
  MicroBatch(*z, {0, 1, 2, 3, 4});
  EXPECT_TRUE(z->unit_gathered(final_unit));
  for (int u = 0; u < 4; ++u) EXPECT_FALSE(z->unit_gathered(u)) << u;
  ASSERT_THAT(z->FinishStep(), IsOk());
  EXPECT_FALSE(z->unit_gathered(final_unit)) << "stale after the update";
}

TEST_F(Stage3Test, MaxLiveParametersBoundsPrefetch) {
  auto peak_for = [&](int64_t max_live) {
    config::ZeroConfig c = Stage3Config();
    c.prefetch_bucket_size = 1 << 30;
    c.max_live_parameters = max_live;
    c.max_reuse_distance = 0;
    auto z = Make(c);
    MicroBatch(*z, {0, 1, 2, 3, 4});  // records the trace; no prefetch yet
    alloc_.ResetPeaks();
    MicroBatch(*z, {0, 1, 2, 3, 4});
    return alloc_.Stats().peak[int(tensor::MemoryCategory::kGatheredParams)];
  };
  int64_t largest = 0;
  {
    const Partition p = Partition::Build(layout_, 1, 0, 1);
    for (int u = 0; u < 5; ++u) largest = std::max(largest, p.padded_numel(u));
  }
  // Room for the largest module and one more block: prefetch must stop there.
  const int64_t limit = largest + layout_.modules()[1].numel + 64;
  EXPECT_LE(peak_for(limit), limit * 4);
  // Unbounded, prefetching pulls in the whole model ahead of use.
  EXPECT_GT(peak_for(int64_t{1} << 40), limit * 4);
}

TEST(ZeroStateTest, GradientsOfAnUnreleasedModuleAreAnError) {
  const model::ParamLayout layout = Layout();
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  config::ZeroConfig c;
  c.stage = 2;
  c.reduce_bucket_size = 1;  // one module per unit
  auto z = ZeroState::Create(layout, c, nullptr, {}, &ops);
  ASSERT_THAT(z, IsOk());
  (*z)->BeginMicroBatch();
  ASSERT_THAT((*z)->AcquireGrads(2), IsOk());
  EXPECT_FALSE((*z)->FinishBackward().ok());
}

// A ZeroConfig built by hand (the library, tests) gets the checks the job file's parser makes:
// parameter offload is a stage-3 feature, and its NVMe form needs a path.
TEST(ZeroStateTest, ParamOffloadOutsideWhatIsBuiltIsRefusedByName) {
  const model::ParamLayout layout = Layout();
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  config::ZeroConfig c;
  c.stage = 3;
  c.offload_param.device = config::OffloadDevice::kNvme;
  EXPECT_THAT(ZeroState::Create(layout, c, nullptr, {}, &ops).status(),
              ::dstrain::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                           ::testing::HasSubstr("offload_param.nvme_path")));
  c.stage = 2;
  EXPECT_THAT(ZeroState::Create(layout, c, nullptr, {}, &ops).status(),
              ::dstrain::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                           ::testing::HasSubstr("needs ZeRO stage 3")));
  c.offload_param.device = config::OffloadDevice::kCpu;
  EXPECT_THAT(ZeroState::Create(layout, c, nullptr, {}, &ops).status(),
              ::dstrain::testing::StatusIs(absl::StatusCode::kInvalidArgument,
                                           ::testing::HasSubstr("needs ZeRO stage 3")));
  c.stage = 3;  // on a CPU rank "cpu" is a note: the parameters are host memory already
  auto z = ZeroState::Create(layout, c, nullptr, {}, &ops);
  ASSERT_THAT(z, IsOk());
  EXPECT_FALSE((*z)->params_on_host());
}

// `micro_batches` backward passes over every module, last first, with `write(micro, module,
// grads)` writing each module's gradients, then the reduction: the gradients' squared norm.
absl::StatusOr<double> SquaredNormAfter(
    ZeroState& z, const model::ParamLayout& layout, int micro_batches,
    const std::function<void(int, int, model::ModuleGrads&)>& write) {
  const int modules = static_cast<int>(layout.modules().size());
  for (int micro = 0; micro < micro_batches; ++micro) {
    z.BeginMicroBatch();
    for (int m = modules - 1; m >= 0; --m) {
      absl::StatusOr<model::ModuleGrads> grads = z.AcquireGrads(m);
      if (!grads.ok()) return grads.status();
      write(micro, m, *grads);
      DT_RETURN_IF_ERROR(z.ReleaseGrads(m));
    }
    DT_RETURN_IF_ERROR(z.FinishBackward());
  }
  DT_RETURN_IF_ERROR(z.ReduceGradients());
  return z.GradSquaredNorm();
}

// data_types.grad_accum_dtype under bf16: eight micro-batches add 1 and then seven times 2^-8 to
// one gradient. In bf16 (8 significant bits) each 2^-8 is half an ulp of 1 and rounds away (ties
// to even); in fp32 the sum is exact. The norm, read in every stage, shows which one ran.
TEST(ZeroStateTest, GradAccumDtypeDecidesWhatMicroBatchesSumIn) {
  const model::ParamLayout layout = Layout();
  constexpr int kMicroBatches = 8;
  const double exact = 1.0 + 7.0 / 256;
  for (int stage = 0; stage <= 3; ++stage) {
    for (DType accumulate : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(::testing::Message()
                   << "stage " << stage << ", accumulating in " << DTypeName(accumulate));
      tensor::CpuAllocator alloc;
      device::CpuOps ops(&alloc);
      config::ZeroConfig c;
      c.stage = stage;
      c.reduce_bucket_size = 1;  // one module per unit: every bucket path runs
      GradientReduction reduction;
      reduction.dtype = DType::kBF16;  // DeepSpeed's communication_data_type under bf16
      reduction.accumulate = accumulate;
      auto z = ZeroState::Create(layout, c, nullptr, {}, &ops, DType::kBF16, reduction);
      ASSERT_THAT(z, IsOk());
      EXPECT_EQ((*z)->grads_dtype(), accumulate);
      auto squared = SquaredNormAfter(
          **z, layout, kMicroBatches, [](int micro, int m, model::ModuleGrads& grads) {
            if (grads.fresh) {  // a scratch whose matrix parts the model would overwrite
              for (const tensor::View& v : grads.views) {
                std::fill_n(v.as<float>(), v.numel(), 0.f);
              }
            }
            if (m == 1) grads.views[0].as<float>()[0] += micro == 0 ? 1.f : 1.f / 256;
          });
      ASSERT_THAT(squared, IsOk());
      EXPECT_DOUBLE_EQ(std::sqrt(*squared), accumulate == DType::kF32 ? exact : 1.0);
    }
  }
}

// Host memory that starts out NaN where the caller did not ask for zeros, so that a part of a
// buffer nobody wrote shows.
class PoisonedAllocator final : public tensor::Allocator {
 public:
  absl::StatusOr<void*> Allocate(size_t bytes, tensor::MemoryCategory category) override {
    absl::StatusOr<void*> p = inner_.Allocate(bytes, category);
    if (p.ok()) std::fill_n(static_cast<float*>(*p), bytes / 4, std::nanf(""));
    return p;
  }
  void Free(void* p, size_t bytes, tensor::MemoryCategory category) override {
    inner_.Free(p, bytes, category);
  }
  void Zero(void* p, size_t bytes) override { inner_.Zero(p, bytes); }
  Device device() const override { return Device::Cpu(); }

 private:
  tensor::CpuAllocator inner_;
};

// Stages 2-3 with f32 buckets hand every module's matrix gradients over unwritten (the model's
// products overwrite them; no pass zeroed them) and the rest zeroed, in every micro-batch, fresh
// only the first time: the step's gradients are exactly what the model wrote, with no NaN from
// the unwritten memory.
TEST(ZeroStateTest, FreshBucketsHandOverMatricesUnwrittenAndTheRestZeroed) {
  const model::ParamLayout layout = Layout();
  constexpr int kMicroBatches = 2;
  // Every float's gradient per micro-batch: the float nearest 1/(module + 1); summed over the
  // micro-batches exactly.
  double want = 0;
  for (const model::ParamSpec& p : layout.params()) {
    int module = 0;
    while (layout.modules()[module].offset + layout.modules()[module].numel <= p.offset) ++module;
    const double g = kMicroBatches * static_cast<double>(1.f / (module + 1));
    want += p.numel * g * g;
  }
  for (int stage : {2, 3}) {
    for (int64_t bucket : {int64_t{1}, int64_t{1} << 20}) {  // a module per unit; all in one
      SCOPED_TRACE(absl::StrCat("stage ", stage, ", reduce_bucket_size ", bucket));
      PoisonedAllocator alloc;
      device::CpuOps ops(&alloc);
      config::ZeroConfig c;
      c.stage = stage;
      c.reduce_bucket_size = bucket;
      c.param_persistence_threshold = 0;
      auto z = ZeroState::Create(layout, c, nullptr, {}, &ops);
      ASSERT_THAT(z, IsOk());
      auto squared =
          SquaredNormAfter(**z, layout, kMicroBatches, [&](int, int m, model::ModuleGrads& grads) {
            EXPECT_TRUE(grads.fresh) << "module " << m;
            // Asked again within the micro-batch, the module's gradients are no longer fresh.
            absl::StatusOr<model::ModuleGrads> again = (*z)->AcquireGrads(m);
            ASSERT_THAT(again, IsOk());
            EXPECT_FALSE(again->fresh) << "module " << m;
            const float g = 1.f / (m + 1);
            const std::vector<int>& params = layout.modules()[m].params;
            for (size_t i = 0; i < params.size(); ++i) {
              float* v = grads.views[i].as<float>();
              const int64_t n = grads.views[i].numel();
              if (layout.params()[params[i]].matrix) {
                // Unwritten: the allocator's NaN is still there (nothing zeroed it).
                EXPECT_TRUE(std::all_of(v, v + n, [](float x) { return std::isnan(x); }))
                    << "module " << m << " parameter " << i << " was written";
                std::fill_n(v, n, g);  // overwritten, as the products do
              } else {
                EXPECT_TRUE(std::all_of(v, v + n, [](float x) { return x == 0.f; }))
                    << "module " << m << " parameter " << i << " is not zeroed";
                for (int64_t k = 0; k < n; ++k) v[k] += g;
              }
            }
          });
      ASSERT_THAT(squared, IsOk());
      EXPECT_NEAR(*squared, want, 1e-12 * want);
    }
  }
}

TEST(ZeroStateTest, GradAccumDtypeDefaultsAsDeepSpeedDoes) {
  EXPECT_EQ(GradAccumulationDType(std::nullopt, DType::kBF16, 0), DType::kF32);
  for (int stage : {1, 2, 3}) {
    EXPECT_EQ(GradAccumulationDType(std::nullopt, DType::kBF16, stage), DType::kBF16);
  }
  for (int stage : {0, 1, 2, 3}) {
    EXPECT_EQ(GradAccumulationDType(std::nullopt, DType::kF16, stage), DType::kF16);
    EXPECT_EQ(GradAccumulationDType(std::nullopt, DType::kF32, stage), DType::kF32);
    EXPECT_EQ(GradAccumulationDType(DType::kF32, DType::kF16, stage), DType::kF32);
  }
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  GradientReduction reduction;
  reduction.accumulate = DType::kF16;
  EXPECT_FALSE(ZeroState::Create(Layout(), {}, nullptr, {}, &ops, DType::kBF16, reduction).ok());
}

}  // namespace
}  // namespace dstrain::zero
