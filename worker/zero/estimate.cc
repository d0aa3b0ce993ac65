#include "worker/zero/estimate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/zero/optimizer_swap.h"
#include "worker/zero/param_swap.h"
#include "worker/zero/partition.h"
#include "worker/zero/precision.h"

namespace dstrain::zero {

int64_t GptActivationBytes(const model::GptConfig& c, int B, int T, const device::Sizing& ops,
                           model::BlockRange range, const model::ActivationPlan& plan,
                           DType matmul) {
  const model::DeviceSizes device{ops.AttentionStateElements(B, T, c.n_embd, c.n_head),
                                  ops.AttentionScratchElements(B, T, c.n_embd, c.n_head),
                                  ops.bf16_matmul_inputs()};
  return model::ActivationBytes(c, B, T, range, device, plan, matmul);
}

MemoryEstimate EstimateMemory(const model::ParamLayout& layout, const model::GptConfig& model,
                              const config::ZeroConfig& zero, int stage, int world, int B, int T,
                              const device::Sizing& ops, const StatePrecision& precision,
                              model::BlockRange range, const model::ActivationPlan& plan) {
  return EstimateMemory(layout,
                        GptActivationBytes(model, B, T, ops, range, plan, precision.Matmul()), zero,
                        stage, world, ops, precision);
}

MemoryEstimate EstimateMemory(const model::ParamLayout& layout, int64_t activations,
                              const config::ZeroConfig& zero, int stage, int world,
                              const device::Sizing& ops, const StatePrecision& precision) {
  const bool mixed = precision.storage != DType::kF32;
  MemoryEstimate e;
  e.stage = stage;
  e.world = world;
  e.mixed = mixed;
  // The same cut ZeroState::Create makes.
  const Partition p = Partition::ForStage(layout, stage, world, 0, zero.reduce_bucket_size);
  const int64_t half = mixed ? 2 : 4;  // bytes of a stored parameter
  e.params = half * (stage == 3 ? p.owned_total() : p.padded_total());
  const DType grads = precision.GradsAt(stage);
  e.grads = DTypeSize(grads) * (stage >= 2 ? p.owned_total() : p.padded_total());
  e.optimizer_state = (mixed ? 12 : 8) * p.owned_total();  // (master weights,) m, v
  e.offload = zero.offload_optimizer.device;
  if (e.offload != config::OffloadDevice::kNone && stage >= 1) {  // stage 0 refuses offload
    // The update's sub-groups, cut as ZeroState cuts them (stage 3: one pass).
    std::vector<int64_t> windows;
    for (const UpdateWindowCut& w : CutUpdateWindows(p, stage == 3, zero.sub_group_size)) {
      windows.push_back(w.len);
    }
    const int n = static_cast<int>(windows.size());
    const int arrays = mixed ? 3 : 2;
    const int64_t buffer_count = zero.offload_optimizer.buffer_count;
    const int first = FirstOffloadedWindow(n, zero.offload_optimizer.ratio);
    if (ops.host_accessible()) {
      // A CPU rank: under "nvme" the swap's file, and its buffers in memory; "cpu" changes nothing.
      if (e.offload == config::OffloadDevice::kNvme) {
        e.nvme_bytes = OptimizerSwap::FileBytes(windows, arrays);
        e.optimizer_state = OptimizerSwap::BufferBytes(windows, arrays, buffer_count);
      }
    } else if (first == n && n > 0) {
      e.offload = config::OffloadDevice::kNone;  // ratio offloads no sub-group
    } else {
      // A GPU rank: the offloaded state (or the swap's buffers) and the staging are host memory;
      // the device keeps the state of the sub-groups a partial offload leaves there.
      const std::vector<int64_t> home(windows.begin() + first, windows.end());
      int64_t on_device = 0, in_home = 0, most = 0;
      for (int i = 0; i < n; ++i) (i < first ? on_device : in_home) += windows[i];
      for (int64_t len : home) most = std::max(most, len);
      e.optimizer_state = int64_t{4} * arrays * on_device;
      // Two sub-groups' staging of parameters; the gradients likewise at stage 1, while stages
      // 2-3 stream all of the home's gradients into one host buffer during backward.
      e.host_bytes = 2 * most * half + (stage >= 2 ? in_home : 2 * most) * DTypeSize(grads);
      if (e.offload == config::OffloadDevice::kNvme) {
        e.nvme_bytes = OptimizerSwap::FileBytes(home, arrays);
        e.host_bytes += OptimizerSwap::BufferBytes(home, arrays, buffer_count);
      } else {
        e.host_bytes += int64_t{4} * arrays * in_home;
      }
    }
  }
  if (zero.offload_param.device == config::OffloadDevice::kCpu && stage == 3 &&
      !ops.host_accessible()) {
    e.host_bytes += e.params;  // the parameter partition lives in host memory
    e.params = 0;
  }
  if (zero.offload_param.device == config::OffloadDevice::kNvme && stage == 3) {
    // The partition in its swap file; in memory only the swap's buffers (host memory: a CPU
    // rank's own, beside a GPU the offload's).
    std::vector<int64_t> chunks;
    for (const Unit& unit : p.units()) chunks.push_back(unit.chunk);
    e.nvme_bytes += ParamSwap::FileBytes(chunks, half);
    const int64_t buffers = ParamSwap::BufferBytes(chunks, half, zero.offload_param.buffer_count);
    e.params = ops.host_accessible() ? buffers : 0;
    if (!ops.host_accessible()) e.host_bytes += buffers;
    // A window updated on the rank's device (a CPU rank's, or a GPU's with some state there)
    // brings its parameters in a piece at a time (ZeroState::AdamWSwappedParams: host staging,
    // beside a GPU a device copy too); windows updated by the host beside a GPU go through its
    // staging slots instead.
    if (ops.host_accessible() || e.optimizer_state > 0) {
      int64_t most = 0;
      for (const UpdateWindowCut& w : CutUpdateWindows(p, true, zero.sub_group_size)) {
        most = std::max(most, w.len);
      }
      const int64_t piece = half * std::min(most, kParamUpdatePieceFloats);
      e.comm_buffers_peak += piece;
    }
  }
  e.activations = activations;

  // The largest unit besides the one holding the embedding, and likewise for modules (a middle
  // pipeline stage holds no embedding).
  const model::ParamSpec* wte = layout.Find("wte");
  const int emb_module = wte != nullptr ? wte->module : -1;
  const int emb = emb_module >= 0 ? p.unit_of_module(emb_module) : -1;
  int64_t largest_unit = 0, largest_module = 0;
  for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
    if (u != emb) largest_unit = std::max(largest_unit, p.padded_numel(u));
  }
  const auto& modules = layout.modules();
  auto module_floats = [&](int m) { return m >= 0 ? modules[m].numel : int64_t{0}; };
  auto unit_floats = [&](int u) { return u >= 0 ? p.padded_numel(u) : int64_t{0}; };
  for (int m = 0; m < static_cast<int>(modules.size()); ++m) {
    if (m != emb_module) largest_module = std::max(largest_module, module_floats(m));
  }
  // Modules in use at once: the head needs final and embedding, backward a block and the
  // embedding's gradients.
  const int64_t in_use_modules = module_floats(emb_module) + largest_module;
  if (stage >= 2) {
    // The unit holding the embedding stays filled through backward (the tied head adds to wte
    // first, the encoder last); besides it one unit fills while up to two reduce (overlap_comm)
    // or none does.
    // Buckets hold the gradients as they travel.
    e.comm_buffers_peak = DTypeSize(precision.communication) *
                          (unit_floats(emb) + (zero.overlap_comm ? 3 : 1) * largest_unit);
  }
  // Where the model's gradients go (stages 0-1: the gradients, 2-3: a bucket): a 16-bit one gets
  // an fp32 scratch per module in use.
  if ((stage >= 2 ? precision.communication : grads) != DType::kF32) {
    e.comm_buffers_peak += 4 * in_use_modules;
  }
  // Stages 0-1 reduce a copy of the gradients when they travel in another dtype.
  if (stage <= 1 && world > 1 && precision.communication != grads) {
    e.comm_buffers_peak += DTypeSize(precision.communication) * p.padded_total();
  }
  // Stages 1-2 gather a unit larger than allgather_bucket_size through a staging buffer.
  if ((stage == 1 || stage == 2) && world > 1 && zero.allgather_partitions) {
    const int64_t bucket = std::max<int64_t>(world, zero.allgather_bucket_size);
    int64_t largest = 0;
    for (int u = 0; u < static_cast<int>(p.units().size()); ++u) {
      largest = std::max(largest, p.padded_numel(u));
    }
    if (largest > bucket) e.comm_buffers_peak += half * world * (bucket / world);
  }
  // Where the host cannot address device memory, the gradient norm's and the loss's all-reduces
  // go through one device float each (zero::AllReduceScalar).
  if (!ops.host_accessible()) e.comm_buffers_peak += 2 * 4;
  if (stage == 3) {
    // Gathered units in use, plus whatever prefetching and reuse keep within
    // stage3_max_live_parameters.
    const int64_t in_use = unit_floats(emb) + largest_unit;
    e.gathered_params_peak =
        half * std::min(p.padded_total(), std::max(in_use, zero.max_live_parameters + in_use));
  }
  if (mixed) e.gathered_params_peak += 4 * in_use_modules;  // fp32 widenings for compute
  const double n = layout.num_parameters(), N = world;
  const double fp32[] = {16, 8 + 8 / N, 4 + 12 / N, 16 / N};
  const double half_precision[] = {16, 4 + 12 / N, 2 + 14 / N, 16 / N};
  e.paper_model_states = n * (mixed ? half_precision : fp32)[stage];
  return e;
}

std::string DescribeEstimates(const std::vector<MemoryEstimate>& estimates,
                              int64_t num_parameters) {
  auto mb = [](double bytes) { return absl::StrFormat("%10.2f", bytes / 1e6); };
  std::string out =
      absl::StrFormat("per-rank memory in MB, %d data-parallel rank(s), %.2fM parameters\n",
                      estimates.empty() ? 1 : estimates[0].world, num_parameters / 1e6);
  absl::StrAppend(&out, absl::StrFormat("%-28s", ""));
  for (const MemoryEstimate& e : estimates)
    absl::StrAppend(&out, absl::StrFormat("   stage %d", e.stage));
  absl::StrAppend(&out, "\n");
  auto row = [&](const char* name, auto get) {
    absl::StrAppend(&out, absl::StrFormat("%-28s", name));
    for (const MemoryEstimate& e : estimates) absl::StrAppend(&out, mb(get(e)));
    absl::StrAppend(&out, "\n");
  };
  row("params", [](const MemoryEstimate& e) { return double(e.params); });
  row("grads", [](const MemoryEstimate& e) { return double(e.grads); });
  row("optimizer_state", [](const MemoryEstimate& e) { return double(e.optimizer_state); });
  if (std::any_of(estimates.begin(), estimates.end(),
                  [](const MemoryEstimate& e) { return e.nvme_bytes > 0; })) {
    row("  (on NVMe, not in memory)", [](const MemoryEstimate& e) { return double(e.nvme_bytes); });
  }
  if (std::any_of(estimates.begin(), estimates.end(),
                  [](const MemoryEstimate& e) { return e.host_bytes > 0; })) {
    row("host memory (offload)", [](const MemoryEstimate& e) { return double(e.host_bytes); });
  }
  row("model states", [](const MemoryEstimate& e) { return double(e.model_states()); });
  row(estimates.empty() || !estimates[0].mixed ? "  ZeRO paper (fp32 Adam)"
                                               : "  ZeRO paper (mixed, K=12)",
      [](const MemoryEstimate& e) { return e.paper_model_states; });
  row("activations", [](const MemoryEstimate& e) { return double(e.activations); });
  row("comm_buffers (at most)",
      [](const MemoryEstimate& e) { return double(e.comm_buffers_peak); });
  row("gathered_params (at most)",
      [](const MemoryEstimate& e) { return double(e.gathered_params_peak); });
  row("total (at most)", [](const MemoryEstimate& e) {
    return double(e.model_states() + e.activations + e.comm_buffers_peak + e.gathered_params_peak);
  });
  return out;
}

}  // namespace dstrain::zero
