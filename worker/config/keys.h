// The key tables of a job file (internal to worker/config): every DeepSpeed config key with its
// code default (docs/job-file.md, docs/configuration.md), plus dstrain's `model`, `data` and
// `job` blocks, and the parameter tables of the optimizers and LR schedules dstrain runs.
//
// Thread-safety: the tables are built once on first use and immutable afterwards.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "worker/config/schema.h"

namespace dstrain::config::internal {

// The top level of a job file after `deepspeed_config` has been merged in.
const Block& JobFileSchema();

// A DeepSpeed config alone, for dstrain::Initialize: JobFileSchema() without dstrain's model,
// data and job blocks (the user's module is the model, the program feeds the data and runs the
// loop).
const Block& DeepSpeedConfigSchema();

// The job block alone (the library's DeepSpeed config gets a synthetic one: config.cc).
const Block& JobBlockSchema();

// optimizer.params for Adam / AdamW (DeepSpeed's FusedAdam defaults).
const Block& AdamParamsSchema();

// DeepSpeed's LR schedule types dstrain runs (case-sensitive, as in DeepSpeed).
const std::vector<std::string>& SchedulerTypes();

// scheduler.params for one of SchedulerTypes(); nullptr for any other type.
const Block* SchedulerParamsSchema(absl::string_view type);

// Our own top-level keys; everything else at the top level is a DeepSpeed key.
bool IsJobKey(absl::string_view key);  // model, data, job, notes, deepspeed_config

// DeepSpeed keys we keep parsing for compatibility but drop from the effective config once
// migrated (zero_optimization.cpu_offload, ...), relative to zero_optimization.
bool IsDeprecatedZeroKey(absl::string_view key);

}  // namespace dstrain::config::internal
