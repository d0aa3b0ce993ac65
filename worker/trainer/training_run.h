// TrainingRun: one rank's run of a job, phase by phase (trainer.h has the overview). Each phase is
// a method; Train() calls them in order:
//
//   SetUpGroup   rendezvous and the data-parallel communicator (with pipeline stages: the whole
//                job's group split into the data × pipeline grid); the checkpoint catalog
//   BuildData    training (and, on rank 0, validation) loaders
//   BuildEngine  device, model, engine, metrics file, the initial model
//   Resume       the newest committed checkpoint, when the job has one
//   RunSteps     the step loop; per step: TrainStep, then the periodic actions (metrics line,
//                evaluation, checkpoint, progress, sample, drain)
//   Finish       the catalog's last records, the final sample and model, the result
//
// Rank 0 (the leader) logs, evaluates, samples and writes metrics and models; the other ranks
// take part in whatever is collective (ZeRO-3 gathers the parameters for each of those). A
// pipelined job (job.pipeline_stages > 1) runs each step through its stage's pipe::Executor; the
// leader is stage 0's data rank 0, and the models it writes are put together from every stage.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/config/config.h"
#include "worker/data/data_loader.h"
#include "worker/device/ops.h"
#include "worker/device/rank_device.h"
#include "worker/engine/checkpoint_io.h"
#include "worker/engine/engine.h"
#include "worker/model/param_layout.h"
#include "worker/pipe/executor.h"
#include "worker/pipe/layer_partition.h"
#include "worker/pipe/schedule.h"
#include "worker/pipe/stage_estimate.h"
#include "worker/tensor/allocator.h"
#include "worker/trainer/checkpoint_catalog.h"
#include "worker/trainer/metrics_writer.h"
#include "worker/trainer/rendezvous.h"
#include "worker/trainer/trainer.h"

namespace dstrain::trainer {

class TrainingRun {
 public:
  TrainingRun(const config::JobSpec& spec, const TrainOptions& options);
  ~TrainingRun();

  absl::Status SetUpGroup();
  absl::Status BuildData();
  absl::Status BuildEngine();
  absl::Status Resume();
  absl::Status RunSteps();
  absl::StatusOr<TrainResult> Finish();

 private:
  using Clock = std::chrono::steady_clock;

  // The device from job.device and the options (--device, --local-rank).
  device::RankDeviceOptions DeviceOptions() const;
  device::Ops& ops() { return device_->ops(); }
  // `dstrain estimate`'s figures for this rank, as the out-of-memory error quotes them.
  absl::StatusOr<std::string> Expectation() const;

  bool pipelined() const { return spec_.pipeline.stages > 1; }
  // Every rank of the job: the data-parallel group, or pipelined the whole grid (null: one rank).
  comm::Communicator* job_group() const {
    return world_group_ != nullptr ? world_group_.get() : dp_.get();
  }
  // The model of this rank's stage (the whole model without pipeline) and its activation plan.
  absl::StatusOr<std::unique_ptr<model::Model>> BuildModel();
  // The micro-batch in x_ and y_ as a model::Batch ("tokens", "targets": int32 (B, T)), for
  // models other than the GPT.
  model::Batch TokenBatch() const;
  // The whole model's fp32 parameters in its flat layout on the leader (empty elsewhere):
  // collective over the stage's data-parallel group and, pipelined, over the pipeline of data
  // rank 0, whose stages send theirs to stage 0.
  absl::StatusOr<std::vector<float>> GatherModel();
  // One optimizer step: the accumulation's micro-batches, then the engine's step.
  absl::StatusOr<engine::StepStats> TrainStep();
  // The periodic actions after step `step`; false when a drain ends the run here.
  absl::StatusOr<bool> AfterStep(int64_t step, const engine::StepStats& stats, double seconds);
  // The step's metrics line (memory, communication, timing), before evaluation adds to it.
  JsonLine MetricsLine(const engine::StepStats& stats, double seconds);
  // Pipelined: every stage's figures for this step (its time, its time in forward and backward
  // passes, waiting in receives and in the schedule, its point-to-point bytes so far, its memory
  // peak and activations), as a JSON array in stage order. Collective over the pipeline.
  absl::StatusOr<nlohmann::json> StageMetrics(double seconds);
  // Mean validation loss over job.eval_batches (rank 0's value; collective under ZeRO-3 and,
  // pipelined, over every stage).
  absl::StatusOr<double> Evaluate();
  // Pipelined: data rank 0's pipeline runs the forward passes stage by stage (pipe::Executor::
  // EvalBatches); every stage returns the mean, the other data ranks -1.
  absl::StatusOr<double> EvaluatePipelined();
  int EvalBatchCount() const;  // batches one evaluation reads
  // Saves checkpoint step_<step> on every rank; rank 0 adds its duration and size to `line`
  // (when given) and records it in the catalog. Returns its directory.
  absl::StatusOr<std::string> SaveCheckpoint(int64_t step, JsonLine* line);
  void PrintProgress(int64_t step, const engine::StepStats& stats, double seconds, double val_loss);
  // `tokens` sampled after a newline, printed with `title` (collective under ZeRO-3 and,
  // pipelined, over every rank).
  absl::Status PrintSample(uint64_t seed, const std::string& title);
  // Whether any rank was asked to drain (one all-reduce); if so a checkpoint at `step`.
  absl::StatusOr<bool> Drain(int64_t step, bool saved);

  const config::JobSpec& spec_;
  const TrainOptions& options_;
  const int rank_, world_;
  const bool leader_;
  std::FILE* log_;                 // options.log on rank 0, /dev/null elsewhere
  std::FILE* null_log_ = nullptr;  // owned
  int threads_ = 1;
  const int B_, T_;
  const int64_t gas_;

  ConnectedStore store_;
  std::unique_ptr<comm::Communicator> world_group_;  // pipelined: the whole job, split below
  std::unique_ptr<comm::Communicator> dp_;
  std::unique_ptr<comm::Communicator> pipe_, tied_;  // pipelined: this rank's pipeline and ends
  int stage_ = 0, data_rank_ = 0;
  std::vector<pipe::StagePartition> partition_;
  std::unique_ptr<pipe::Executor> executor_;
  std::unique_ptr<CheckpointCatalog> catalog_;
  int64_t train_tokens_ = 0;
  std::optional<data::DataLoader> train_loader_, val_loader_;
  std::unique_ptr<device::RankDevice> device_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<model::Gpt> whole_model_;  // pipelined: all the blocks, for sampling
  std::optional<MetricsWriter> metrics_;
  engine::CheckpointOptions checkpoints_;
  std::vector<int32_t> x_, y_;
  bool bpe_data_ = false;           // the shards' tokenizer.txt says BPE: samples print as ids
  bool saves_final_model_ = false;  // rank 0 writes --save-model: every rank gathers at the end

  int64_t first_step_ = 1;
  int64_t comm_bytes_before_ = 0;
  double comm_wait_before_ = 0;
  double recompute_before_ = 0;
  pipe::ExecutorStats stage_stats_before_;
  tensor::Tensor stage_metrics_buffer_;  // StageMetrics' all-reduce on a device without host access
  std::vector<double> tok_rates_;
  TrainResult result_;
  tensor::Tensor null_scalar_;  // the drain all-reduce on a device without host access
};

}  // namespace dstrain::trainer
