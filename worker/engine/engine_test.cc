#include "worker/engine/engine.h"

#include <cmath>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/random/rng.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/comm/fake/fake_communicator.h"
#include "worker/engine/zero_test_util.h"
#include "worker/model/llmc_format.h"

namespace dstrain::engine {
namespace {

using ::dstrain::testing::IsOk;
using ::dstrain::testing::StatusIs;
using ::testing::HasSubstr;

constexpr int kT = 8;

config::JobSpec Spec(int micro, int gas, double clip, const std::string& extra = "") {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": %d,
          "gradient_clipping": %g,
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
          "model": {"type": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 20,
                    "block_size": 8, "init_seed": 5 %s},
          "data": {"train": "x_*.bin", "seq_len": 8}, "job": {"train_steps": 3}})",
      micro, gas, clip, extra);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_THAT(spec, IsOk());
  return *spec;
}

std::vector<float> Params(Engine& e) {
  auto p = e.GatherParams();
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *std::move(p) : std::vector<float>();
}

std::unique_ptr<Engine> Make(const config::JobSpec& spec, testing::CpuDevice* alloc) {
  model::GptConfig mc{
      spec.model.n_layer,           spec.model.n_head,    spec.model.n_embd, spec.model.vocab_size,
      spec.model.padded_vocab_size, spec.model.block_size};
  auto e = Engine::Initialize(*model::Gpt::Create(mc, &alloc->ops), spec);
  EXPECT_THAT(e, IsOk());
  return std::move(*e);
}

std::vector<int32_t> Tokens(int n, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(r.Below(20));
  return t;
}

TEST(Engine, AccumulationOverMicroBatchesEqualsOneLargeBatch) {
  // Two micro-batches of 2 sequences with gas 2 must take the same step as one batch of 4:
  // DeepSpeed scales each micro-batch's loss by 1/gas, so the gradients are the same mean.
  testing::CpuDevice a1, a2;
  auto accum = Make(Spec(2, 2, 0.0), &a1);
  auto whole = Make(Spec(4, 1, 0.0), &a2);
  auto x = Tokens(4 * kT, 1), y = Tokens(4 * kT, 2);
  for (int m = 0; m < 2; ++m) {
    ASSERT_THAT(accum->Forward(x.data() + m * 2 * kT, y.data() + m * 2 * kT), IsOk());
    ASSERT_THAT(accum->Backward(), IsOk());
    auto s = accum->Step();
    ASSERT_THAT(s, IsOk());
    EXPECT_EQ(s->has_value(), m == 1) << "the optimizer steps only at the boundary";
  }
  ASSERT_THAT(whole->Forward(x.data(), y.data()), IsOk());
  ASSERT_THAT(whole->Backward(), IsOk());
  auto s = whole->Step();
  ASSERT_THAT(s, IsOk());
  ASSERT_TRUE(s->has_value());
  EXPECT_EQ(accum->global_steps(), 1);
  const int64_t n = accum->model().layout().total();
  const std::vector<float> accum_params = Params(*accum), whole_params = Params(*whole);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(accum_params[i], whole_params[i], 2e-6) << i;
  }
}

TEST(Engine, ClippingScalesTheUpdateAndReportsThePreClipNorm) {
  testing::CpuDevice a1, a2;
  auto clipped = Make(Spec(2, 1, 1e-3), &a1);
  auto free = Make(Spec(2, 1, 0.0), &a2);
  auto x = Tokens(2 * kT, 3), y = Tokens(2 * kT, 4);
  std::optional<StepStats> sc, sf;
  for (auto* e : {clipped.get(), free.get()}) {
    ASSERT_THAT(e->Forward(x.data(), y.data()), IsOk());
    ASSERT_THAT(e->Backward(), IsOk());
    auto s = e->Step();
    ASSERT_THAT(s, IsOk());
    (e == clipped.get() ? sc : sf) = **s;
  }
  EXPECT_DOUBLE_EQ(sc->grad_norm, sf->grad_norm);
  EXPECT_GT(sf->grad_norm, 1e-3);
  EXPECT_NEAR(sc->clip_coef, 1e-3 / (sf->grad_norm + 1e-6), 1e-12);
  EXPECT_EQ(sf->clip_coef, 1.0);
  // Adam's first update is m̂/√v̂ = sign(g) whatever the gradient's scale, so clipping shows
  // only from the second step on, when the moments mix two differently clipped gradients.
  for (auto* e : {clipped.get(), free.get()}) {
    ASSERT_THAT(e->Forward(x.data(), y.data()), IsOk());
    ASSERT_THAT(e->Backward(), IsOk());
    ASSERT_THAT(e->Step(), IsOk());
  }
  double diff = 0;
  const std::vector<float> clipped_params = Params(*clipped), free_params = Params(*free);
  for (int64_t i = 0; i < clipped->model().layout().total(); ++i) {
    diff = std::max(diff, double(std::fabs(clipped_params[i] - free_params[i])));
  }
  EXPECT_GT(diff, 1e-5);
}

TEST(Engine, LifecycleErrors) {
  testing::CpuDevice alloc;
  auto e = Make(Spec(2, 1, 0.0), &alloc);
  EXPECT_THAT(e->Backward(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("Forward")));
  auto x = Tokens(2 * kT, 5);
  ASSERT_THAT(e->Forward(x.data(), x.data()), IsOk());
  EXPECT_THAT(e->Step(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("between")));
}

TEST(Engine, MemoryIsAccountedByCategory) {
  testing::CpuDevice alloc;
  auto e = Make(Spec(2, 1, 0.0), &alloc);
  // Stage 0 keeps everything whole, in the padded space (the layout plus < 16 floats).
  const int64_t total = e->zero().partition().padded_total() * 4;
  EXPECT_LT(e->zero().partition().padded_total() - e->model().layout().total(), 16);
  tensor::MemoryStats s = alloc.Stats();
  EXPECT_EQ(s.current[int(tensor::MemoryCategory::kParams)], total);
  EXPECT_EQ(s.current[int(tensor::MemoryCategory::kGrads)], total);
  EXPECT_EQ(s.current[int(tensor::MemoryCategory::kOptimizerState)], 2 * total);
}

TEST(Engine, InitFromLoadsWeightsAndChecksTheShape) {
  testing::CpuDevice alloc;
  auto e = Make(Spec(2, 1, 0.0), &alloc);
  const std::string path = std::string(getenv("TEST_TMPDIR")) + "/init.bin";
  std::vector<float> w(e->model().layout().total(), 0.f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.001f * (i % 97);
  ASSERT_THAT(model::WriteLlmcModel(path, e->gpt().config(), e->model().layout(), w.data()),
              IsOk());
  testing::CpuDevice alloc2;
  auto loaded = Make(Spec(2, 1, 0.0, absl::StrFormat(R"(, "init_from": "%s")", path)), &alloc2);
  // Padding between parameters is not stored in the file and reads back as 0.
  const std::vector<float> loaded_params = Params(*loaded);
  for (const auto& p : loaded->model().layout().params()) {
    for (int64_t i = 0; i < p.numel; ++i) ASSERT_EQ(loaded_params[p.offset + i], w[p.offset + i]);
  }
  testing::CpuDevice alloc3;
  auto spec = Spec(2, 1, 0.0, absl::StrFormat(R"(, "init_from": "%s")", path));
  spec.model.n_embd = 32;
  spec.model.n_head = 4;
  model::GptConfig mc{2, 4, 32, 20, spec.model.padded_vocab_size, 8};
  EXPECT_THAT(Engine::Initialize(*model::Gpt::Create(mc, &alloc3.ops), spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("init_from")));
}

}  // namespace
}  // namespace dstrain::engine

namespace dstrain::engine {
namespace {

TEST(Engine, DataParallelRanksTakeTheSingleProcessStep) {
  // Two ranks with micro-batch 2 (ZeRO stage 0 over a FakeCommunicator, ranks as threads) take
  // the same steps as one process with micro-batch 4 on the same global batch: gradients are
  // averaged, so only the summation order differs. Adam divides by sqrt(v): on a weight whose
  // gradient is near zero that rounding difference can move the update by up to lr = 1e-2 per
  // step, so the bound is 1e-4 absolute (observed ~4e-6), while a missing or doubled rank
  // contribution changes the update direction by ~lr on most weights. Adam is blind to a global
  // gradient scale, so sum-versus-mean is checked through the reported gradient norm.
  auto x = Tokens(4 * kT, 11), y = Tokens(4 * kT, 12);
  testing::CpuDevice single_alloc;
  auto single = Make(Spec(4, 1, 1.0), &single_alloc);
  std::vector<double> single_norms;
  for (int s = 0; s < 3; ++s) {
    ASSERT_THAT(single->Forward(x.data(), y.data()), IsOk());
    ASSERT_THAT(single->Backward(), IsOk());
    auto st = single->Step();
    ASSERT_THAT(st, IsOk());
    single_norms.push_back((**st).grad_norm);
  }
  auto world = comm::FakeWorld::Create(2, "dp");
  std::vector<std::vector<float>> final_params(2);
  std::vector<double> losses(2);
  std::vector<std::vector<double>> norms(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto comm = comm::FakeCommunicator::Create(world, r);
      ASSERT_THAT(comm, IsOk());
      config::JobSpec spec = Spec(2, 1, 1.0);
      testing::CpuDevice alloc;
      model::GptConfig mc{2, 2, 16, 20, spec.model.padded_vocab_size, 8};
      auto e = Engine::Initialize(*model::Gpt::Create(mc, &alloc.ops), spec, comm->get());
      ASSERT_THAT(e, IsOk());
      for (int s = 0; s < 3; ++s) {
        ASSERT_THAT((*e)->Forward(x.data() + r * 2 * kT, y.data() + r * 2 * kT), IsOk());
        ASSERT_THAT((*e)->Backward(), IsOk());
        auto st = (*e)->Step();
        ASSERT_THAT(st, IsOk());
        losses[r] = (**st).loss;
        norms[r].push_back((**st).grad_norm);
      }
      final_params[r] = Params(**e);
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(final_params[0].size(), static_cast<size_t>(single->model().layout().total()));
  // Ranks agree bitwise (same averaged gradients); the reported loss is the mean over ranks.
  EXPECT_EQ(final_params[0], final_params[1]);
  EXPECT_EQ(losses[0], losses[1]);
  for (int s = 0; s < 3; ++s) EXPECT_NEAR(norms[0][s], single_norms[s], 1e-5 * single_norms[s]);
  const std::vector<float> single_params = Params(*single);
  for (size_t i = 0; i < final_params[0].size(); ++i) {
    ASSERT_NEAR(final_params[0][i], single_params[i], 1e-4) << i;
  }
}

}  // namespace
}  // namespace dstrain::engine
