// Training throughput of dstrain's engine: forward + backward + AdamW on random tokens.
//
//   dstrain_bench --layers 4 --embd 256 --heads 4 --vocab 8192 --seq 256 --batch 8 --steps 10
//                 [--precision fp32|bf16|fp16] [--device cpu|cuda] [--peak-tflops F]
//                 [--model gpt|llama --kv-heads K --intermediate I]
//
// Prints one JSON line: {"tokens_per_s": median over the measured steps, ...}; on CUDA also the
// device's peak memory and, with --peak-tflops (the device's dense peak for the precision), the
// model FLOPs utilisation: (6·N + 12·L·T·C) FLOPs per token (forward and backward of the weights
// plus attention) times tokens/s over the peak. The same model in PyTorch is timed by
// torch_bench.py (CPU) and bench/gpu/torch_gpu_bench.py (GPU); the scripts beside them run both.
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
#if DSTRAIN_HAVE_CUDA
#include "worker/device/cuda/cuda_ops.h"
#endif
#include "worker/engine/engine.h"
#include "worker/model/gpt.h"
#include "worker/trainer/job_model.h"
#include "worker/trainer/trainer.h"

namespace dstrain {
namespace {

int Run(int argc, char** argv) {
  auto args = flags::ParseArgs(std::vector<std::string>(argv + 1, argv + argc),
                               {"layers", "embd", "heads", "vocab", "padded-vocab", "seq", "batch",
                                "steps", "warmup", "threads", "max-seq", "precision", "device",
                                "peak-tflops", "model", "kv-heads", "intermediate"},
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

  const std::string model_type = args->Has("model") ? args->Get("model") : "gpt";
  std::string model_block;
  if (model_type == "gpt") {
    model_block = absl::StrFormat(
        R"({"type": "gpt", "n_layer": %d, "n_head": %d, "n_embd": %d, "vocab_size": %d,
            "padded_vocab_size": %d, "block_size": %d})",
        L, NH, C, V, Vp, maxT);
  } else if (model_type == "llama") {
    model_block = absl::StrFormat(
        R"({"type": "llama", "n_layer": %d, "n_head": %d, "n_kv_head": %d, "n_embd": %d,
            "intermediate_size": %d, "vocab_size": %d, "block_size": %d})",
        L, NH, *args->GetInt("kv-heads", NH), C, *args->GetInt("intermediate", 4 * C), V, maxT);
  } else {
    absl::FPrintF(stderr, "--model: expected gpt or llama, got %s\n", model_type);
    return 2;
  }
  const std::string job = absl::StrFormat(
      R"({"train_micro_batch_size_per_gpu": %d, "gradient_accumulation_steps": 1,
          "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "weight_decay": 0.0}},
          "model": %s,
          "data": {"train": "unused.bin", "seq_len": %d},
          "job": {"train_steps": %d} %s})",
      B, model_block, T, steps + warmup, precision_block);
  auto spec = config::ParseJobSpec(job, ".");
  if (!spec.ok()) {
    absl::FPrintF(stderr, "%s\n", spec.status().message());
    return 2;
  }
  const std::string device_name = args->Has("device") ? args->Get("device") : "cpu";
  tensor::CpuAllocator cpu_allocator;
  std::unique_ptr<device::Ops> ops;
  if (device_name == "cpu") {
    ops = std::make_unique<device::CpuOps>(&cpu_allocator);
  } else if (device_name == "cuda") {
#if DSTRAIN_HAVE_CUDA
    auto cuda = device::CudaOps::Create({});
    if (!cuda.ok()) {
      absl::FPrintF(stderr, "%s\n", cuda.status().message());
      return 1;
    }
    ops = std::move(*cuda);
#else
    absl::FPrintF(stderr, "--device cuda: this build has no CUDA\n");
    return 2;
#endif
  } else {
    absl::FPrintF(stderr, "--device: expected cpu or cuda, got %s\n", device_name);
    return 2;
  }
  tensor::Allocator& allocator = *ops->allocator();
  auto model = trainer::BuildJobModel(*spec, ops.get());
  if (!model.ok()) {
    absl::FPrintF(stderr, "%s\n", model.status().message());
    return 2;
  }
  auto engine = engine::Engine::Initialize(std::move(*model), *spec);
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
    model::Batch batch;
    batch.Add("tokens", {DType::kI32, {B, T}, x.data()})
        .Add("targets", {DType::kI32, {B, T}, y.data()});
    auto loss =
        (*engine)->is_gpt() ? (*engine)->Forward(x.data(), y.data()) : (*engine)->Forward(batch);
    auto st = (*engine)->Backward();
    auto step = (*engine)->Step();
    const absl::Status synced = ops->Synchronize();  // the step's device work is done
    const auto t1 = std::chrono::steady_clock::now();
    if (!loss.ok() || !st.ok() || !step.ok() || !synced.ok()) {
      absl::FPrintF(stderr, "step failed\n");
      return 1;
    }
    if (s >= warmup) secs.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  const double median = secs[secs.size() / 2];
  const double params = (*engine)->model().layout().num_parameters();
  const double tokens_per_s = B * T / median;
  const double flops_per_token = 6.0 * params + 12.0 * L * T * C;
  const double peak = *args->GetDouble("peak-tflops", 0) * 1e12;
  absl::PrintF(
      "{\"impl\": \"dstrain\", \"device\": \"%s\", \"tokens_per_s\": %.1f, \"step_s\": %.4f, "
      "\"min_step_s\": %.4f, \"params\": %.0f, \"threads\": %d, \"precision\": \"%s\", "
      "\"mem_peak_bytes\": %d, \"mfu\": %.4f}\n",
      ops->Describe(), tokens_per_s, median, secs.front(), params, threads, precision,
      allocator.Stats().total_peak, peak > 0 ? tokens_per_s * flops_per_token / peak : 0.0);
  return 0;
}

}  // namespace
}  // namespace dstrain

int main(int argc, char** argv) {
  dstrain::InitProcess(argv);
  return dstrain::Run(argc, argv);
}
