// The key tables of a job file (internal to worker/config): every DeepSpeed config key with its
// code default (docs/job-file.md, docs/configuration.md), plus dstrain's `model`, `data` and
// `job` blocks, and the parameter tables of the optimizers and LR schedules dstrain runs.
//
// Thread-safety: the tables are built once on first use and immutable afterwards.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "worker/config/schema.h"

namespace dstrain::config::internal {

// The top level of a job file after `deepspeed_config` has been merged in.
const Block& JobFileSchema();

// optimizer.params for Adam / AdamW (DeepSpeed's FusedAdam defaults).
const Block& AdamParamsSchema();

// scheduler.params for a DeepSpeed LR schedule type; nullptr for an unknown type.
const Block* SchedulerParamsSchema(absl::string_view type);

// Our own top-level keys; everything else at the top level is a DeepSpeed key.
bool IsJobKey(absl::string_view key);  // model, data, job, notes, deepspeed_config

// DeepSpeed keys we keep parsing for compatibility but drop from the effective config once
// migrated (zero_optimization.cpu_offload, ...), relative to zero_optimization.
bool IsDeprecatedZeroKey(absl::string_view key);

}  // namespace dstrain::config::internal
