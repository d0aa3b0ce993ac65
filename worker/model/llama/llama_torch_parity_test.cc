// dstrain's engine trains the Llama module 20 AdamW steps (gradient accumulation 2, clipping);
// llama_torch_ref.py, an independent float64 PyTorch Llama built from Hugging Face's tensors
// (split out of dstrain's by HfTensors), replays the run from the same initial weights on the
// same batches with torch.optim.AdamW and clip_grad_norm_. Losses, gradient norms and final
// weights are compared (tolerances and why below; docs/llama.md). Python is Debian's
// /usr/bin/python3 with python3-torch, as tests/integration/torch_parity uses.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status/status_matchers.h"
#include "gtest/gtest.h"
#include "worker/api/module_model.h"
#include "worker/config/config.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/engine/engine.h"
#include "worker/model/llama/llama.h"

namespace dstrain::llama {
namespace {

using ::dstrain::testing::IsOk;

constexpr int kSteps = 20, kGas = 2, kB = 4, kT = 16;
constexpr double kClip = 1.5;  // the gradient norms run 1.1 .. 2.3: some steps clip, some not

LlamaConfig Config() {
  LlamaConfig c;
  c.n_layer = 2;
  c.n_embd = 64;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.intermediate_size = 176;
  c.vocab_size = 96;
  c.block_size = 32;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  return c;
}

// Tolerances. dstrain runs in fp32 (unit roundoff 6e-8), the replay in float64, so the
// differences are dstrain's rounding alone (observed on AVX-512: loss 1.4e-7, grad norm 5.1e-7,
// final weights max 2.3e-5, median 2.3e-8):
//   - loss 2e-6 relative: a mean over 64 tokens of O(1) terms, each the end of ~10 fp32 layers
//     of sums of up to 176 terms (the GPT parity test holds its loss to 1e-6);
//   - gradient norm 5e-6 relative: a norm of ~105K gradients, each a sum over the 64 tokens
//     carrying the forward's rounding;
//   - final weights max |Δ| 5e-5: Adam divides by sqrt(v), so a weight whose gradient is near
//     zero can turn fp32 noise into a step of up to lr = 3e-3 (the GPT test allows 2e-5 over its
//     24 steps), while a real bug moves weights by ~lr per step (k_proj and v_proj swapped in
//     HfTensors: max 9e-2, median 1e-2, the loss 1e-2 off). The median |Δ| is held to 1e-7.
constexpr double kLossRtol = 2e-6, kNormRtol = 5e-6, kWeightAtol = 5e-5, kWeightMedian = 1e-7;

std::string TmpDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return tmp != nullptr ? tmp : "/tmp";
}

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return path;
  return absl::StrCat(srcdir, "/", workspace, "/", path);
}

template <typename T>
void WriteBinary(const std::string& path, const std::vector<T>& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(T));
  ASSERT_TRUE(f.good()) << path;
}

config::JobSpec Spec() {
  const std::string json = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": %d,
          "gradient_clipping": %g,
          "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "betas": [0.9, 0.95],
                                                    "eps": 1e-8, "weight_decay": 0.1}},
          "zero_optimization": {"stage": 0},
          "model": {"type": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8, "vocab_size": 96,
                    "block_size": 32, "init_seed": 11},
          "data": {"train": "x_*.bin", "seq_len": %d},
          "job": {"train_steps": %d}})",
      kB, kGas, kClip, kT, kSteps);
  auto spec = config::ParseJobSpec(json, "/tmp");
  EXPECT_THAT(spec, IsOk()) << json;
  return spec.ok() ? *spec : config::JobSpec();
}

TEST(LlamaTorchParity, TwentyAdamWStepsMatchAFloat64PyTorchLlama) {
  const LlamaConfig cfg = Config();
  const std::string dir = TmpDir();
  tensor::CpuAllocator alloc;
  device::CpuOps ops(&alloc);
  auto llama = Llama::Create(cfg);
  ASSERT_THAT(llama, IsOk());
  auto model = api::ModuleModel::Create(*std::move(llama), &ops);
  ASSERT_THAT(model, IsOk());
  const model::ParamLayout layout = (*model)->layout();
  auto engine = engine::Engine::Initialize(*std::move(model), Spec());
  ASSERT_THAT(engine, IsOk());
  auto init = (*engine)->GatherParams();
  ASSERT_THAT(init, IsOk());
  ASSERT_EQ(static_cast<int64_t>(init->size()), layout.total());
  WriteBinary(dir + "/init.bin", *init);

  // Batches: token streams with a learnable rule (mostly the previous token + 7, sometimes a
  // random token), so the loss falls and the weights move.
  std::mt19937 rng(5);
  std::vector<int32_t> all;
  for (int m = 0; m < kSteps * kGas; ++m) {
    std::vector<int32_t> stream(kB * (kT + 1));
    for (int b = 0; b < kB; ++b) {
      int32_t t = static_cast<int32_t>(rng() % cfg.vocab_size);
      for (int i = 0; i <= kT; ++i) {
        stream[b * (kT + 1) + i] = t;
        t = rng() % 4 == 0 ? static_cast<int32_t>(rng() % cfg.vocab_size)
                           : (t + 7) % cfg.vocab_size;
      }
    }
    for (int b = 0; b < kB; ++b) {
      for (int i = 0; i < kT; ++i) all.push_back(stream[b * (kT + 1) + i]);
    }
    for (int b = 0; b < kB; ++b) {
      for (int i = 0; i < kT; ++i) all.push_back(stream[b * (kT + 1) + i + 1]);
    }
  }
  WriteBinary(dir + "/batches.bin", all);

  std::vector<double> losses, norms;
  int clipped = 0;
  for (int step = 0; step < kSteps; ++step) {
    for (int micro = 0; micro < kGas; ++micro) {
      const int32_t* mb = all.data() + int64_t{step * kGas + micro} * 2 * kB * kT;
      model::Batch batch;
      batch.Add("tokens", {DType::kI32, {kB, kT}, mb})
          .Add("targets", {DType::kI32, {kB, kT}, mb + kB * kT});
      ASSERT_THAT((*engine)->Forward(batch), IsOk());
      ASSERT_THAT((*engine)->Backward(), IsOk());
    }
    auto stats = (*engine)->Step();
    ASSERT_THAT(stats, IsOk());
    ASSERT_TRUE(stats->has_value());
    losses.push_back((*stats)->loss);
    norms.push_back((*stats)->grad_norm);
    clipped += (*stats)->clip_coef < 1.0;
  }
  auto final_weights = (*engine)->GatherParams();
  ASSERT_THAT(final_weights, IsOk());

  // run.json for the replay.
  std::vector<std::string> params, hf;
  for (const model::ParamSpec& p : layout.params()) {
    params.push_back(absl::StrCat(R"({"name": ")", p.name, R"(", "offset": )", p.offset,
                                  R"(, "shape": [)", absl::StrJoin(p.shape, ", "), "]}"));
  }
  for (const HfTensor& t : HfTensors(cfg)) {
    hf.push_back(absl::StrCat(R"({"hf_name": ")", t.hf_name, R"(", "param": ")", t.param,
                              R"(", "row_begin": )", t.row_begin, R"(, "row_end": )", t.row_end,
                              "}"));
  }
  std::ofstream(dir + "/run.json") << absl::StrFormat(
      R"({"config": {"n_layer": %d, "n_embd": %d, "n_head": %d, "n_kv_head": %d,
                     "rope_theta": %.17g, "norm_eps": %.17g},
          "optimizer": {"lr": 3e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1},
          "micro_batch": %d, "seq_len": %d, "gas": %d, "steps": %d, "clip": %.17g,
          "params": [%s], "hf_tensors": [%s]})",
      cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.rope_theta, cfg.norm_eps, kB, kT,
      kGas, kSteps, kClip, absl::StrJoin(params, ",\n"), absl::StrJoin(hf, ",\n"));

  const std::string cmd =
      absl::StrCat("/usr/bin/python3 ", Runfile("worker/model/llama/llama_torch_ref.py"), " ", dir,
                   " > ", dir, "/ref.log 2>&1");
  const int rc = std::system(cmd.c_str());
  std::ifstream log(dir + "/ref.log");
  std::stringstream log_text;
  log_text << log.rdbuf();
  ASSERT_EQ(rc, 0) << cmd << "\n" << log_text.str();

  std::ifstream steps(dir + "/ref_steps.txt");
  double worst_loss = 0, worst_norm = 0;
  for (int step = 0; step < kSteps; ++step) {
    double loss = 0, norm = 0;
    ASSERT_TRUE(steps >> loss >> norm) << "step " << step;
    const double dl = std::abs(losses[step] - loss) / loss;
    const double dn = std::abs(norms[step] - norm) / norm;
    EXPECT_LE(dl, kLossRtol) << "step " << step << ": " << losses[step] << " vs " << loss;
    EXPECT_LE(dn, kNormRtol) << "step " << step << ": " << norms[step] << " vs " << norm;
    worst_loss = std::max(worst_loss, dl);
    worst_norm = std::max(worst_norm, dn);
  }
  std::vector<double> ref(layout.total());
  std::ifstream fin(dir + "/ref_final.bin", std::ios::binary);
  fin.read(reinterpret_cast<char*>(ref.data()), ref.size() * sizeof(double));
  ASSERT_TRUE(fin.good());
  std::vector<double> diff(ref.size());
  double moved = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    diff[i] = std::abs((*final_weights)[i] - ref[i]);
    moved = std::max(moved, std::abs(ref[i] - (*init)[i]));
  }
  const double worst = *std::max_element(diff.begin(), diff.end());
  std::nth_element(diff.begin(), diff.begin() + diff.size() / 2, diff.end());
  const double median = diff[diff.size() / 2];
  std::printf("grad norms: %s\n", absl::StrJoin(norms, " ").c_str());
  std::printf(
      "losses %.6f -> %.6f, clipped %d of %d steps; worst relative error: loss %.2e, grad norm "
      "%.2e; final weights max |diff| %.2e, median %.2e (weights moved up to %.2e)\n",
      losses.front(), losses.back(), clipped, kSteps, worst_loss, worst_norm, worst, median, moved);
  EXPECT_LE(worst, kWeightAtol);
  EXPECT_LE(median, kWeightMedian);
  // The run must exercise what it compares: learning, and clipping on some steps but not all.
  EXPECT_LT(losses.back(), losses.front() - 0.5);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, kSteps);
  EXPECT_GT(moved, 1e-2);
}

}  // namespace
}  // namespace dstrain::llama
