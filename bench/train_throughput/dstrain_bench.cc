// Training throughput of dstrain's engine: forward + backward + AdamW on random tokens.
//
//   dstrain_bench --layers 4 --embd 256 --heads 4 --vocab 8192 --seq 256 --batch 8 --steps 10
//                 [--precision fp32|bf16|fp16]
//
// Prints one JSON line: {"tokens_per_s": median over the measured steps, ...}. The same model in
// PyTorch is timed by torch_bench.py; train_throughput.sh runs both and prints the ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/flags/flags.h"
#include "common/random/rng.h"
#include "common/runtime/process_init.h"
#include "worker/config/config.h"
#include "worker/device/cpu/cpu_ops.h"
#include "worker/engine/engine.h"
#include "worker/model/gpt.h"
#include "worker/trainer/trainer.h"

namespace dstrain {
namespace {

int Run(int argc, char** argv) {
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                               {"layers", "embd", "heads", "vocab", "padded-vocab", "seq", "batch",
                                "steps", "warmup", "threads", "max-seq", "precision"},
                               {});
  if (!args.ok()) {
    absl::FPrintF(stderr, "%s\n", args.status().message());
    return 2;
  }
  const int L = *args->GetInt("layers", 4), C = *args->GetInt("embd", 256);
  const int NH = *args->GetInt("heads", 4), V = *args->GetInt("vocab", 8192);
  const int T = *args->GetInt("seq", 256), B = *args->GetInt("batch", 8);
  const int Vp = *args->GetInt("padded-vocab", (V + 127) / 128 * 128);
  const int maxT = *args->GetInt("max-seq", T);
  const int steps = *args->GetInt("steps", 10), warmup = *args->GetInt("warmup", 2);
  const int threads = trainer::ConfigureThreads(*args->GetInt("threads", 0));
  const std::string precision = args->Has("precision") ? args->Get("precision") : "fp32";
  std::string precision_block;
  if (precision == "bf16") {
    precision_block = R"(, "bf16": {"enabled": true})";
  } else if (precision == "fp16") {
    precision_block = R"(, "fp16": {"enabled": true, "initial_scale_power": 12})";
  } else if (precision != "fp32") {
    absl::FPrintF(stderr, "--precision: expected fp32, bf16 or fp16, got %s\n", precision);
    return 2;
  }

  const std::string job = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
          "model": {"type": "gpt", "n_layer": %d, "n_head": %d, "n_embd": %d,
                    "vocab_size": %d, "padded_vocab_size": %d, "block_size": %d},
          "data": {"train": "unused.bin", "seq_len": %d},
          "job": {"train_steps": %d} %s})",
      B, L, NH, C, V, Vp, maxT, T, steps + warmup, precision_block);
  auto spec = config::ParseJobSpec(job, ".");
  if (!spec.ok()) {
    absl::FPrintF(stderr, "%s\n", spec.status().message());
    return 2;
  }
  tensor::CpuAllocator allocator;
  device::CpuOps ops(&allocator);
  model::GptConfig mc{L, NH, C, V, Vp, maxT};
  auto gpt = model::Gpt::Create(mc, &ops);
  if (!gpt.ok()) {
    absl::FPrintF(stderr, "%s\n", gpt.status().message());
    return 2;
  }
  auto engine = engine::Engine::Initialize(std::move(*gpt), *spec);
  if (!engine.ok()) {
    absl::FPrintF(stderr, "%s\n", engine.status().message());
    return 1;
  }
  // A fixed random batch, as the PyTorch benchmark uses.
  Rng rng(1);
  std::vector<int32_t> x(int64_t{B} * T), y(int64_t{B} * T);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<int32_t>(rng.Below(V));
    y[i] = static_cast<int32_t>(rng.Below(V));
  }
  std::vector<double> secs;
  for (int s = 0; s < warmup + steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    auto loss = (*engine)->Forward(x.data(), y.data());
    auto st = (*engine)->Backward();
    auto step = (*engine)->Step();
    const auto t1 = std::chrono::steady_clock::now();
    if (!loss.ok() || !st.ok() || !step.ok()) {
      absl::FPrintF(stderr, "step failed\n");
      return 1;
    }
    if (s >= warmup) secs.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  const double median = secs[secs.size() / 2];
  const double params = (*engine)->model().layout().num_parameters();
  absl::PrintF(
      "{\"impl\": \"dstrain\", \"tokens_per_s\": %.1f, \"step_s\": %.4f, \"min_step_s\": %.4f, "
      "\"params\": %.0f, \"threads\": %d, \"precision\": \"%s\", \"mem_peak_bytes\": %d}\n",
      B * T / median, median, secs.front(), params, threads, precision,
      allocator.Stats().total_peak);
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Run(argc, argv);
}
