// `dstrain estimate` per pipeline stage: what each stage of a job's grid holds per rank (a job
// without pipeline is one stage holding the whole model), from the partition the trainer cuts
// (layer_partition.h), the schedule's micro-batches in flight (schedule.h) and the ZeRO estimate
// (zero/estimate.h), with the activations the job's checkpointing keeps and the ones it would
// keep without, so the two can be compared before a run and against the allocator during one.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/config/config.h"
#include "worker/device/ops.h"
#include "worker/pipe/layer_partition.h"
#include "worker/zero/estimate.h"

namespace dstrain::pipe {

struct StageEstimate {
  int stage = 0;
  StagePartition partition;  // the stage's blocks and parameters
  int buffers = 1;           // micro-batches in flight: 1F1B's min(S − s, M); 1 without pipeline
  // Per rank at the job's ZeRO stage, activations as the job holds them (its checkpointing).
  zero::MemoryEstimate memory;
  int64_t activations_plain = 0;  // the same activations without checkpointing
  // The job's pipeline.activation_checkpoint_interval, or, when it sets none, the interval that
  // keeps the least; and the activations at that interval.
  int checkpoint_interval = 0;
  int64_t activations_checkpointed = 0;
};

// The model plan a stage's trainer uses: `buffers` micro-batches in flight, the job's
// checkpointing (pipeline.activation_checkpoint_interval and the activation_checkpointing block).
model::ActivationPlan StagePlan(const config::JobSpec& spec, int buffers);

// Every stage of the job's grid, on `ops`'s device (a device-sized row, such as the attention
// scratch, is sized as it sizes it now). Errors: the partition's (kInvalidArgument naming the
// key).
absl::StatusOr<std::vector<StageEstimate>> EstimateStages(const config::JobSpec& spec,
                                                          const device::Sizing& ops);

// The table `dstrain estimate` prints, in MB, and the same as JSON (bytes).
std::string DescribeStages(const std::vector<StageEstimate>& stages, const config::JobSpec& spec);
nlohmann::json StagesToJson(const std::vector<StageEstimate>& stages, int n_layer);

}  // namespace dstrain::pipe
