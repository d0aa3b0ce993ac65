// ParseJobSpec's step for offload: zero_optimization.offload_optimizer (and the deprecated
// cpu_offload it replaces) and the aio block that drives the NVMe swap engine (docs/offload.md).
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/config/resolve.h"

namespace dstrain::config {

const char* OffloadDeviceName(OffloadDevice d) {
  switch (d) {
    case OffloadDevice::kNone:
      return "none";
    case OffloadDevice::kCpu:
      return "cpu";
    case OffloadDevice::kNvme:
      return "nvme";
  }
  return "?";
}

namespace internal {

using nlohmann::json;

absl::Status ResolveOffload(json* e, const std::string& base_dir, JobSpec* spec) {
  const json& aio = (*e)["aio"];
  if (aio["use_gds"].get<bool>()) {
    return Error("aio.use_gds",
                 "GPUDirect Storage is not supported: the NVMe swap engine reads into host memory");
  }
  AioConfig& a = spec->aio;
  a.block_size = aio["block_size"].get<int64_t>();
  a.queue_depth = aio["queue_depth"].get<int>();
  a.intra_op_parallelism = aio["intra_op_parallelism"].get<int>();
  a.single_submit = aio["single_submit"].get<bool>();
  a.overlap_events = aio["overlap_events"].get<bool>();
  if (a.block_size % 4096 != 0) {
    return Error("aio.block_size", a.block_size,
                 " is not a multiple of 4096 (direct I/O moves whole blocks)");
  }

  if (const json& p = (*e)["zero_optimization"]["offload_param"]; !p.is_null()) {
    OffloadParamConfig& param = spec->zero.offload_param;
    const std::string device = p["device"].get<std::string>();
    param.pin_memory = p["pin_memory"].get<bool>();
    param.buffer_count = p["buffer_count"].get<int64_t>();
    param.buffer_size = p["buffer_size"].get<int64_t>();
    param.device = device == "cpu"    ? OffloadDevice::kCpu
                   : device == "nvme" ? OffloadDevice::kNvme
                                      : OffloadDevice::kNone;
    if (param.device != OffloadDevice::kNone && spec->zero.stage != 3) {
      return Error("zero_optimization.offload_param.device",
                   "parameter offload needs ZeRO stage 3 (zero_optimization.stage is ",
                   spec->zero.stage, "), as in DeepSpeed");
    }
    if (param.device == OffloadDevice::kNvme) {
      const std::string path = p["nvme_path"].is_null() ? "" : p["nvme_path"].get<std::string>();
      if (path.empty()) {
        return Error("zero_optimization.offload_param.nvme_path",
                     "needed with offload_param.device \"nvme\" (a directory on the NVMe device "
                     "the parameters are swapped to)");
      }
      param.nvme_path = ResolvePath(base_dir, path);
      (*e)["zero_optimization"]["offload_param"]["nvme_path"] = param.nvme_path;
      if (param.buffer_count < 1) {
        return Error("zero_optimization.offload_param.buffer_count",
                     "must be at least 1 with device \"nvme\" (the chunks in host memory)");
      }
      if (param.buffer_size < 1) {
        return Error("zero_optimization.offload_param.buffer_size",
                     "must be at least 1 with device \"nvme\" (elements per buffer)");
      }
    }
  }
  json& o = (*e)["zero_optimization"]["offload_optimizer"];
  if (o.is_null()) return absl::OkStatus();
  OffloadOptimizerConfig& out = spec->zero.offload_optimizer;
  const std::string device = o["device"].get<std::string>();
  out.device = device == "cpu"    ? OffloadDevice::kCpu
               : device == "nvme" ? OffloadDevice::kNvme
                                  : OffloadDevice::kNone;
  out.pin_memory = o["pin_memory"].get<bool>();
  out.buffer_count = o["buffer_count"].get<int64_t>();
  out.pipeline_read = o["pipeline_read"].get<bool>();
  out.pipeline_write = o["pipeline_write"].get<bool>();
  out.fast_init = o["fast_init"].get<bool>();
  out.ratio = o["ratio"].get<double>();
  if (out.device == OffloadDevice::kNone) return absl::OkStatus();
  if (spec->zero.stage == 0) {
    return Error("zero_optimization.offload_optimizer.device",
                 "optimizer offload needs ZeRO stage 1, 2 or 3 (zero_optimization.stage is 0)");
  }
  if (out.device == OffloadDevice::kNvme) {
    const std::string path = o["nvme_path"].is_null() ? "" : o["nvme_path"].get<std::string>();
    if (path.empty()) {
      return Error("zero_optimization.offload_optimizer.nvme_path",
                   "needed with offload_optimizer.device \"nvme\" (a directory on the NVMe "
                   "device the optimizer state is swapped to)");
    }
    out.nvme_path = ResolvePath(base_dir, path);
    o["nvme_path"] = out.nvme_path;
    if (out.buffer_count < 1) {
      return Error("zero_optimization.offload_optimizer.buffer_count",
                   "must be at least 1 with device \"nvme\" (the swap buffers)");
    }
    if (out.ratio != 1.0) {
      return Error("zero_optimization.offload_optimizer.ratio", out.ratio,
                   ": partial offload (ratio < 1) applies to device \"cpu\"; device \"nvme\" "
                   "swaps all of the optimizer state");
    }
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace dstrain::config
