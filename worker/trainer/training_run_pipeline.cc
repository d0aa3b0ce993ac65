// TrainingRun's parts that only a pipelined job (job.pipeline_stages > 1) uses: evaluation
// through the pipeline, the per-stage metrics, and the whole model put together from the stages.
// training_run.h describes the phases.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"
#include "worker/model/gpt.h"
#include "worker/trainer/training_run.h"
#include "worker/zero/zero_state.h"

namespace dstrain::trainer {

absl::StatusOr<double> TrainingRun::EvaluatePipelined() {
  // Each stage's fp32 parameters, as the unsplit evaluation uses the model's (its data ranks
  // take part in the gather); data rank 0's pipeline alone evaluates.
  DT_ASSIGN_OR_RETURN(tensor::Tensor params, engine_->GatherParamsOnDevice(data_rank_ == 0));
  if (data_rank_ != 0) return -1.0;
  data::DataLoader& loader = *val_loader_;
  loader.Reset();
  const int n = EvalBatchCount();
  DT_ASSIGN_OR_RETURN(
      const double sum,
      executor_->EvalBatches(params.view(), n, [&](int, int32_t* inputs, int32_t* targets) {
        loader.NextBatch(x_.data(), y_.data());
        if (inputs != nullptr) {
          std::copy(x_.begin(), x_.end(), inputs);
        }
        if (targets != nullptr) {
          std::copy(y_.begin(), y_.end(), targets);
        }
      }));
  // The last stage's mean reaches every stage of the pipeline, the leader among them.
  float mean = stage_ == spec_.pipeline.stages - 1 && n > 0 ? static_cast<float>(sum / n) : 0.f;
  DT_RETURN_IF_ERROR(zero::AllReduceScalar(*pipe_, ops(), &null_scalar_, &mean,
                                           comm::ReduceOp::kSum,
                                           comm::CommOptions{options_.comm_timeout}));
  return mean;
}

absl::StatusOr<nlohmann::json> TrainingRun::StageMetrics(double seconds) {
  // Each stage fills its slot of one all-reduced vector; a byte count travels as two floats
  // (low 24 bits, the rest), each exact.
  constexpr int kFields = 10;
  const int S = spec_.pipeline.stages;
  std::vector<float> all(static_cast<size_t>(S) * kFields, 0.f);
  float* mine = all.data() + static_cast<size_t>(stage_) * kFields;
  auto put_bytes = [](float* at, int64_t bytes) {
    at[0] = static_cast<float>(bytes & 0xffffff);
    at[1] = static_cast<float>(bytes >> 24);
  };
  const pipe::ExecutorStats& now = executor_->stats();
  const tensor::MemoryStats mem = device_->allocator().Stats();
  mine[0] = static_cast<float>(seconds);
  mine[1] = static_cast<float>(now.compute_seconds - stage_stats_before_.compute_seconds);
  mine[2] = static_cast<float>(now.recv_wait_seconds - stage_stats_before_.recv_wait_seconds);
  mine[3] = static_cast<float>(now.schedule_seconds - stage_stats_before_.schedule_seconds);
  put_bytes(mine + 4, now.bytes_sent);
  put_bytes(mine + 6, mem.total_peak);
  put_bytes(mine + 8, mem.current[static_cast<int>(tensor::MemoryCategory::kActivations)]);
  stage_stats_before_ = now;
  DT_RETURN_IF_ERROR(zero::AllReduceHostFloats(
      *pipe_, ops(), &stage_metrics_buffer_, all.data(), static_cast<int64_t>(all.size()),
      comm::ReduceOp::kSum, comm::CommOptions{options_.comm_timeout}));
  auto get_bytes = [](const float* at) {
    return static_cast<int64_t>(at[0]) + (static_cast<int64_t>(at[1]) << 24);
  };
  nlohmann::json stages = nlohmann::json::array();
  for (int s = 0; s < S; ++s) {
    const float* v = all.data() + static_cast<size_t>(s) * kFields;
    stages.push_back({{"stage", s},
                      {"step_s", v[0]},
                      {"compute_s", v[1]},
                      {"bubble_s", v[2]},
                      {"schedule_s", v[3]},
                      {"bubble_fraction", v[3] > 0 ? 1.0 - double(v[1]) / v[3] : 0.0},
                      {"p2p_bytes_sent", get_bytes(v + 4)},
                      {"mem_peak_bytes", get_bytes(v + 6)},
                      {"activations_bytes", get_bytes(v + 8)}});
  }
  return stages;
}

absl::StatusOr<std::vector<float>> TrainingRun::GatherModel() {
  if (!pipelined()) return engine_->GatherParams(leader_);
  // Each stage's data rank 0 holds its stage's parameters (ZeRO 0-1 keep them whole); the other
  // data ranks take part in the gather of their stage only.
  DT_ASSIGN_OR_RETURN(tensor::Tensor mine, engine_->GatherParamsOnDevice(data_rank_ == 0));
  if (data_rank_ != 0) return std::vector<float>();
  const comm::CommOptions options{options_.comm_timeout};
  auto buffer = [this](const tensor::View& v) {
    return comm::CommBuffer{v.data(), v.numel(), v.dtype(), v.device(),
                            ops().NativeStream(device::Stream::kComm)};
  };
  ops().WaitFor(device::Stream::kComm, device::Stream::kCompute);
  if (stage_ != 0) {
    DT_ASSIGN_OR_RETURN(auto work, pipe_->Send(buffer(mine.view()), 0, /*tag=*/3, options));
    DT_RETURN_IF_ERROR(work->Wait());
    return std::vector<float>();
  }
  const model::GptConfig shape = engine_->gpt().config();
  DT_ASSIGN_OR_RETURN(const model::ParamLayout whole, model::ParamLayout::ForGpt(shape));
  std::vector<float> out(whole.total(), 0.f), host;
  for (int s = 0; s < spec_.pipeline.stages; ++s) {
    DT_ASSIGN_OR_RETURN(const model::ParamLayout layout,
                        model::ParamLayout::ForGpt(shape, partition_[s].blocks));
    host.resize(layout.total());
    if (s == 0) {
      ops().CopyToHost(host.data(), mine.view());
    } else {
      DT_ASSIGN_OR_RETURN(tensor::Tensor theirs,
                          tensor::Tensor::Empty(&device_->allocator(), DType::kF32,
                                                {layout.total()}, tensor::MemoryCategory::kOther));
      DT_ASSIGN_OR_RETURN(auto work, pipe_->Recv(buffer(theirs.view()), s, /*tag=*/3, options));
      DT_RETURN_IF_ERROR(work->Wait());
      ops().WaitFor(device::Stream::kCompute, device::Stream::kComm);
      ops().CopyToHost(host.data(), theirs.view());
    }
    DT_RETURN_IF_ERROR(ops().status());
    for (const model::ParamSpec& p : layout.params()) {
      if (p.name == "wte" && s != 0) continue;  // the tied copy: stage 0's is the same
      const model::ParamSpec* at = whole.Find(p.name);
      std::copy_n(host.begin() + p.offset, p.numel, out.begin() + at->offset);
    }
  }
  return out;
}

}  // namespace dstrain::trainer
